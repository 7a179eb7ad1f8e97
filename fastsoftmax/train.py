"""``fastsoftmax train``: fit a SoftmaxRegression on a data set and report accuracy and time."""

from __future__ import annotations

import argparse
import time

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data",
        default="digits",
        help="digits (bundled with scikit-learn, the default), fashion-mnist, or a .npz "
        "holding X_train, y_train, X_test, y_test",
    )
    parser.add_argument(
        "--path", help="folder of the Fashion-MNIST IDX files (default: $FASTSOFTMAX_DATA)"
    )
    parser.add_argument(
        "--solver", default=None, help="auto (the default: lbfgs on small data), sgd or lbfgs"
    )
    parser.add_argument("--epochs", type=int, default=None, help="max_epochs (default 10)")
    parser.add_argument("--backend", default=None, help="numpy, numba, cython or auto")
    parser.add_argument("--batch-size", type=int, default=None, help="default 256")
    parser.add_argument("--lr", type=float, default=None, help="learning_rate (default auto)")
    parser.add_argument("--threads", type=int, default=None, help="n_threads for the kernels")
    parser.add_argument("--seed", type=int, default=0, help="random_state (default 0)")
    parser.add_argument("--save", metavar="MODEL.npz", help="save the trained model here")


def load_data(data: str, path: str | None):
    from fastsoftmax import datasets

    if data == "digits":
        return datasets.load_digits()
    if data == "fashion-mnist":
        return datasets.load_fashion_mnist(path)
    if data.endswith(".npz"):
        with np.load(data, allow_pickle=False) as f:
            missing = {"X_train", "y_train", "X_test", "y_test"} - set(f.files)
            if missing:
                raise SystemExit(f"{data} lacks the arrays {sorted(missing)}")
            return f["X_train"], f["y_train"], f["X_test"], f["y_test"]
    raise SystemExit(f"--data must be digits, fashion-mnist or a .npz file, got {data!r}")


def run(args: argparse.Namespace) -> int:
    from fastsoftmax import warmup
    from fastsoftmax.classifier import SoftmaxRegression

    X_train, y_train, X_test, y_test = load_data(args.data, args.path)
    chosen = {
        "solver": args.solver,
        "max_epochs": args.epochs,
        "backend": args.backend,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "n_threads": args.threads,
    }
    params = {k: v for k, v in chosen.items() if v is not None}
    model = SoftmaxRegression(random_state=args.seed, verbose=1, **params)
    print(
        f"data {args.data}: train {X_train.shape}, test {X_test.shape}, "
        f"{len(np.unique(y_train))} classes"
    )
    compile_seconds = warmup([args.backend] if args.backend not in (None, "auto") else None)
    print("warm-up seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in compile_seconds.items()))
    start = time.perf_counter()
    model.fit(X_train, y_train)
    fit_seconds = time.perf_counter() - start
    print(
        f"test accuracy {model.score(X_test, y_test):.4f}, fit time {fit_seconds:.2f} s "
        f"({model.solver_}, {model.n_iter_} {'epochs' if model.solver_ == 'sgd' else 'iterations'})"
    )
    if args.save:
        model.save(args.save)
        print(f"saved to {args.save}")
    return 0
