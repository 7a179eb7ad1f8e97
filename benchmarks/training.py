"""Training at kernel speed: the fused-vs-BLAS crossovers, L-BFGS, sparse text and small data.

Run from the repository root; each part prints a Markdown table:

    python benchmarks/training.py crossover [--threads 2] [--repeats 3]
    python benchmarks/training.py lbfgs [--path FASHION_MNIST_DIR]   # about 2 minutes
    python benchmarks/training.py sparse
    python benchmarks/training.py small [--seeds 10]

``crossover`` times the two methods of ``fastsoftmax._linear.LinearTerm`` on random data for
k in {2, 10, 32, 100, 1000} classes and d in {64, 784, 4096} features, dense and CSR (d / 20
non-zeros a row): a minibatch epoch (batches of 256 rows taken by index) and a full pass (the
L-BFGS data term). It prints blas time / fused time: above 1 the fused kernel wins. The
``FUSED_MAX_WEIGHTS`` and ``FUSED_MIN_FEATURES`` rule of ``fastsoftmax._linear`` come from
this table.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import scipy.sparse as sp

from fastsoftmax import backends
from fastsoftmax._data import ArrayData
from fastsoftmax._linear import LinearTerm, linear_softmax_cross_entropy

try:
    from .shared_data import load_fashion_mnist  # imported as benchmarks.<module> (pytest, asv)
except ImportError:
    from shared_data import load_fashion_mnist  # run as a script: benchmarks/ is sys.path[0]

CLASSES = (2, 10, 32, 100, 1000)
FEATURES = (64, 784, 4096)
BATCH = 256
WORK = 2e9  # rows * d * k per configuration: about a second of work


def median_seconds(run, repeats: int) -> float:
    run()  # compile (Numba) and touch the buffers outside the timing
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def random_problem(n, d, k, sparse, rng):
    if sparse:
        X = sp.random(n, d, density=1 / 20, format="csr", dtype=np.float32, random_state=rng)
    else:
        X = rng.random((n, d), dtype=np.float32)
    W = (0.01 * rng.standard_normal((k, d))).astype(np.float32)
    return X, rng.integers(0, k, n), W, np.zeros(k, np.float32)


def crossover(args) -> None:
    rng = np.random.default_rng(0)
    names = [b for b in ("cython", "numba") if backends.is_available(b)]
    print(f"blas time / fused time, float32, {args.threads} threads (> 1: fused wins)\n")
    for sparse in (False, True):
        for backend in names:
            print(f"### {'CSR (d/20 non-zeros a row)' if sparse else 'dense'}, {backend}\n")
            print("| k \\ d | " + " | ".join(f"{d} epoch | {d} pass" for d in FEATURES) + " |")
            print("|---" * (1 + 2 * len(FEATURES)) + "|")
            for k in CLASSES:
                cells = []
                for d in FEATURES:
                    n = int(np.clip(WORK / (d * k), 2 * BATCH, 16384))
                    X, labels, W, b = random_problem(n, d, k, sparse, rng)
                    order = rng.permutation(n)
                    seconds = {}
                    for method in ("fused", "blas"):
                        term = LinearTerm(X, labels, None, k, backend, args.threads, BATCH, method)
                        full = LinearTerm(X, labels, None, k, backend, args.threads, None, method)

                        def epoch(term=term, W=W, b=b, order=order):
                            for start in range(0, len(order), BATCH):
                                term.gradients(order[start : start + BATCH], W, b, 1 / BATCH)

                        seconds[method] = (
                            median_seconds(epoch, args.repeats),
                            median_seconds(lambda f=full, W=W, b=b: f.sums(W, b), args.repeats),
                        )
                    ratios = [seconds["blas"][i] / seconds["fused"][i] for i in (0, 1)]
                    cells += [f"{r:.2f}" for r in ratios]
                print(f"| {k} | " + " | ".join(cells) + " |")
            print()


def lbfgs(args) -> None:
    from sklearn.linear_model import LogisticRegression

    from fastsoftmax import SoftmaxRegression

    X, y, X_test, y_test = load_fashion_mnist(args.path)
    n, d = X.shape
    data = ArrayData(X, y)
    W, b = np.zeros((10, d), np.float32), np.zeros(10, np.float32)
    print(f"Fashion-MNIST {X.shape} float32, {args.threads} threads\n")
    print("| data term (loss + gradient over all rows) | median ms |\n|---|---|")
    for backend in backends.available_backends():
        for method in ("fused", "blas"):
            term = LinearTerm(X, data.labels, None, 10, backend, args.threads, None, method)
            ms = median_seconds(lambda term=term: term.sums(W, b), args.repeats) * 1e3
            print(
                f"| {backend} {method}{' (the old path)' if method == 'blas' else ''} | {ms:.1f} |"
            )
    print(
        "\n| full fit, l2 = 1/n (C = 1), tol 1e-4 | seconds | iterations | objective | test acc |"
    )
    print("|---|---|---|---|---|")
    X64 = X.astype(np.float64)

    def objective(coef, intercept):
        loss, _, _ = linear_softmax_cross_entropy(
            X64, coef.astype(np.float64), intercept.astype(np.float64), y, l2=1 / n
        )
        return float(loss)

    fits = {
        f"SoftmaxRegression(lbfgs, {dtype.__name__}, tol {tol:g})": lambda dtype=dtype, tol=tol: (
            SoftmaxRegression(
                solver="lbfgs",
                l2=1 / n,
                tol=tol,
                max_iter=2000,
                dtype=dtype,
                n_threads=args.threads,
            ).fit(X, y)
        )
        for dtype in (np.float32, np.float64)
        for tol in (1e-4, 1e-5)
    }
    fits["scikit-learn LogisticRegression(lbfgs, tol 1e-4)"] = lambda: LogisticRegression(
        C=1.0, tol=1e-4, max_iter=1000
    ).fit(X, y)
    results = {}
    for name, fit in fits.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            start = time.perf_counter()
            model = fit()
            seconds = time.perf_counter() - start
        iterations = int(np.max(model.n_iter_))
        results[name] = (seconds, objective(model.coef_, model.intercept_), model, iterations)
        print(
            f"| {name} | {seconds:.1f} | {iterations} | {results[name][1]:.7f} | "
            f"{model.score(X_test, y_test):.4f} |"
        )
    sk_seconds, sk_objective, _, _ = results["scikit-learn LogisticRegression(lbfgs, tol 1e-4)"]
    print()
    for name, (seconds, value, model, iterations) in results.items():
        print(
            f"{name}: {sk_seconds / seconds:.1f}x scikit-learn's time, objective "
            f"{(value - sk_objective) / sk_objective:+.2e} relative to scikit-learn's"
        )
        # When the iterations (of equal cost) first came within 1e-5 of scikit-learn's end.
        reached = np.flatnonzero(
            np.asarray(getattr(model, "loss_curve_", [])) <= sk_objective * (1 + 1e-5)
        )
        if len(reached):
            at = seconds * (reached[0] + 1) / iterations
            print(
                f"  within 1e-5 of scikit-learn's objective after iteration {reached[0] + 1}: "
                f"about {at:.1f} s, {sk_seconds / at:.1f}x scikit-learn's time"
            )


def text_like(n_rows=10_000, n_columns=50_000, per_row=150, n_classes=20, seed=0):
    """A TF-IDF-like CSR matrix: each class draws its words from its own Zipf ranking of the
    vocabulary mixed with a shared one (function words), counts -> log(1 + tf) * idf, rows
    scaled to unit norm; labels are the classes."""
    rng = np.random.default_rng(seed)
    zipf = 1.0 / np.arange(1, n_columns + 1)
    zipf /= zipf.sum()
    rankings = [rng.permutation(n_columns) for _ in range(n_classes + 1)]
    y = rng.integers(0, n_classes, n_rows)
    rows, columns = [], []
    for i, label in enumerate(y):
        shared = rng.random(per_row) < 0.95
        ranks = rng.choice(n_columns, per_row, p=zipf)
        words = np.where(shared, rankings[-1][ranks], rankings[label][ranks])
        rows.append(np.full(per_row, i))
        columns.append(words)
    counts = sp.csr_matrix(
        (np.ones(n_rows * per_row), (np.concatenate(rows), np.concatenate(columns))),
        shape=(n_rows, n_columns),
    )
    counts.sum_duplicates()
    document_frequency = np.bincount(counts.indices, minlength=n_columns)
    idf = np.log((1 + n_rows) / (1 + document_frequency)) + 1
    tfidf = counts.copy()
    tfidf.data = np.log1p(tfidf.data) * idf[tfidf.indices]
    norms = np.sqrt(np.asarray(tfidf.multiply(tfidf).sum(axis=1)).ravel())
    tfidf = sp.diags(1 / np.maximum(norms, 1e-12)) @ tfidf
    return tfidf.tocsr().astype(np.float32), y


def sparse(args) -> None:
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.model_selection import train_test_split

    from fastsoftmax import SoftmaxRegression

    X, y = text_like()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.2, random_state=0)
    print(
        f"text-like CSR {X.shape}, {X.nnz / X.shape[0]:.0f} non-zeros a row, "
        f"{len(np.unique(y))} classes; train {X_train.shape[0]}, test {X_test.shape[0]}\n"
    )
    fits = {
        "SoftmaxRegression()": lambda: SoftmaxRegression(random_state=0),
        'SoftmaxRegression(solver="sgd")': lambda: SoftmaxRegression(solver="sgd", random_state=0),
        'SGDClassifier(loss="log_loss")': lambda: SGDClassifier(loss="log_loss", random_state=0),
        "LogisticRegression()": lambda: LogisticRegression(max_iter=1000),
    }
    print("| model | fit seconds (median) | test accuracy |\n|---|---|---|")
    for name, make in fits.items():
        times = []
        for _ in range(args.repeats):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                start = time.perf_counter()
                model = make().fit(X_train, y_train)
                times.append(time.perf_counter() - start)
        solver = f" ({model.solver_})" if hasattr(model, "solver_") else ""
        print(f"| {name}{solver} | {np.median(times):.2f} | {model.score(X_test, y_test):.4f} |")


def small(args) -> None:
    from sklearn import datasets
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    from fastsoftmax import SoftmaxRegression

    print(f"5-fold CV accuracy, folds shuffled by seeds 0-{args.seeds - 1}, unscaled features\n")
    print("| data set | LogisticRegression(max_iter=1000) | SoftmaxRegression() | worst gap |")
    print("|---|---|---|---|")
    for name in ("iris", "wine", "breast_cancer", "digits"):
        X, y = getattr(datasets, f"load_{name}")(return_X_y=True)
        scores = {"lr": [], "fs": []}
        for seed in range(args.seeds):
            folds = StratifiedKFold(5, shuffle=True, random_state=seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for key, model in (
                    ("lr", LogisticRegression(max_iter=1000)),
                    ("fs", SoftmaxRegression(random_state=seed)),
                ):
                    scores[key].append(cross_val_score(model, X, y, cv=folds).mean())
        gap = np.min(np.subtract(scores["fs"], scores["lr"]))
        print(
            f"| {name} | {np.mean(scores['lr']):.4f} | {np.mean(scores['fs']):.4f} | {gap:+.4f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("crossover", "lbfgs", "sparse", "small"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument(
        "--path",
        default=None,
        help="Fashion-MNIST folder (lbfgs); default: $FASTSOFTMAX_DATA, data home, ../shared/data",
    )
    args = parser.parse_args()
    {"crossover": crossover, "lbfgs": lbfgs, "sparse": sparse, "small": small}[args.part](args)


if __name__ == "__main__":
    main()
