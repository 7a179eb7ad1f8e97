"""Fashion-MNIST: SoftmaxRegression against plain NumPy, PyTorch and scikit-learn.

Run from the repository root (the data folder comes from --path, else where
fastsoftmax.datasets.find_fashion_mnist() looks, else ../shared/data/fashion-mnist; nothing is
downloaded):

    python benchmarks/fashion_mnist_recipes.py [--repeats 3] [--sklearn] [--torch]

Prints, per recipe, the median fit time over the repeats, the test accuracy, the epoch time of
each fastsoftmax backend and the peak memory (tracemalloc, NumPy allocations) of one fit. The
"classic" recipe is the textbook one: W ~ N(0, 0.01^2), b = 0, batch 256, step 0.1, 10 epochs,
no momentum, no weight decay.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

import fastsoftmax
from fastsoftmax import SoftmaxRegression

try:
    from .shared_data import load_fashion_mnist  # imported as benchmarks.<module> (pytest, asv)
except ImportError:
    from shared_data import load_fashion_mnist  # run as a script: benchmarks/ is sys.path[0]

CLASSIC = {
    "solver": "sgd",
    "l2": 0.0,
    "learning_rate": 0.1,
    "momentum": 0.0,
    "nesterov": False,
    "schedule": "constant",
    "tol": None,
    "max_epochs": 10,
    "batch_size": 256,
}


def numpy_classic(X, y, n_classes, epochs=10, batch=256, lr=0.1, seed=0):
    """The plain NumPy version of the classic recipe (what a tutorial writes)."""
    rng = np.random.default_rng(seed)
    W = rng.normal(0, 0.01, (X.shape[1], n_classes)).astype(X.dtype)
    b = np.zeros(n_classes, X.dtype)
    for _ in range(epochs):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch):
            rows = order[start : start + batch]
            Xb, yb = X[rows], y[rows]
            o = Xb @ W + b
            o -= o.max(axis=1, keepdims=True)
            p = np.exp(o)
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(rows)), yb] -= 1
            p /= len(rows)
            W -= lr * (Xb.T @ p)
            b -= lr * p.sum(axis=0)
    return lambda Xt: np.argmax(Xt @ W + b, axis=1)


def torch_classic(X, y, n_classes, epochs=10, batch=256, lr=0.1, seed=0):
    """The PyTorch version of the classic recipe: nn.Linear, F.cross_entropy, optim.SGD."""
    import torch

    torch.manual_seed(seed)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y.astype(np.int64))
    model = torch.nn.Linear(X.shape[1], n_classes)
    torch.nn.init.normal_(model.weight, 0, 0.01)
    torch.nn.init.zeros_(model.bias)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(Xt))
        for start in range(0, len(Xt), batch):
            rows = order[start : start + batch]
            loss = torch.nn.functional.cross_entropy(model(Xt[rows]), yt[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

    def predict(X_test):
        with torch.no_grad():
            return model(torch.from_numpy(X_test)).argmax(1).numpy()

    return predict


def interleaved(fits: dict, repeats: int) -> dict:
    """Median seconds and the last result of each fit, run in rounds (one of each per round)
    so that a noisy phase of the shared machine hits every recipe alike."""
    times = {name: [] for name in fits}
    results = {}
    for _ in range(repeats):
        for name, fit in fits.items():
            start = time.perf_counter()
            results[name] = fit()
            times[name].append(time.perf_counter() - start)
    return {name: (float(np.median(times[name])), results[name]) for name in fits}


def peak_memory_mib(fit) -> float:
    tracemalloc.start()
    fit()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--torch", action="store_true", help="include the PyTorch recipe")
    parser.add_argument("--sklearn", action="store_true", help="include LogisticRegression")
    args = parser.parse_args()

    X, y, X_test, y_test = load_fashion_mnist(args.path)
    fastsoftmax.warmup()
    print(f"Fashion-MNIST train {X.shape} {X.dtype}, test {X_test.shape}; median of {args.repeats}")
    fits = {"plain NumPy, classic recipe": lambda: numpy_classic(X, y, 10)}
    if args.torch:
        fits["PyTorch, classic recipe"] = lambda: torch_classic(X, y, 10)
    for recipe, params in (("classic recipe", CLASSIC), ("defaults", {})):
        for backend in fastsoftmax.available_backends():
            name = f"SoftmaxRegression {backend}, {recipe}"
            fits[name] = lambda params=params, backend=backend: SoftmaxRegression(
                random_state=0, backend=backend, **params
            ).fit(X, y)
    for name, (seconds, result) in interleaved(fits, args.repeats).items():
        if isinstance(result, SoftmaxRegression):
            accuracy = result.score(X_test, y_test)
            extra = f"{seconds / result.n_iter_ * 1e3:.0f} ms/epoch, {result.n_iter_} epochs"
        else:
            accuracy, extra = np.mean(result(X_test) == y_test), ""
        print(f"{name:<40} fit {seconds:6.2f} s  test accuracy {accuracy:.4f}  {extra}")
    peak = peak_memory_mib(lambda: SoftmaxRegression(random_state=0).fit(X, y))
    print(
        f"peak memory allocated by one default fit (tracemalloc): {peak:.1f} MiB "
        f"(the training set itself is {X.nbytes / 2**20:.0f} MiB)"
    )
    # With one feature the BLAS and kernel work per minibatch is negligible, so the time per
    # step is the fixed cost of a minibatch: Python, dispatch and the calls themselves.
    tiny = np.ascontiguousarray(X[:, 400:401])
    tiny_fits = {
        backend: lambda backend=backend: SoftmaxRegression(
            solver="sgd", random_state=0, backend=backend, tol=None, max_epochs=3
        ).fit(tiny, y)
        for backend in fastsoftmax.available_backends()
    }
    steps = 3 * -(-len(tiny) // 256)
    for backend, (seconds, _) in interleaved(tiny_fits, args.repeats).items():
        print(f"fixed cost per minibatch, {backend}: {seconds / steps * 1e6:.0f} us")
    if args.sklearn:
        from sklearn.linear_model import LogisticRegression

        start = time.perf_counter()
        model = LogisticRegression(max_iter=1000).fit(X, y)
        seconds = time.perf_counter() - start
        print(
            f"{'scikit-learn LogisticRegression':<40} fit {seconds:6.2f} s  "
            f"test accuracy {model.score(X_test, y_test):.4f}"
        )


if __name__ == "__main__":
    main()
