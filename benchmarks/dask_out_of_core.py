"""SoftmaxRegression(solver="lbfgs") out of core on Dask, and against scikit-learn in memory.

Two commands::

    # Out of core: Fashion-MNIST's training set repeated --copies times (25: 1.5 M rows,
    # 4.7 GB of float32) in an .npy file, read block by block by workers limited to
    # --memory-limit each (X is larger than one worker's and than all workers' memory, so it
    # is streamed from the file every evaluation, never persisted). Times the L-BFGS
    # iterations with 1 and 2 workers, samples the workers' peak RSS, checks the model
    # against the in-memory fit on the 60,000 original rows (the repeated data set has the
    # same objective), and with --dask-ml times dask-ml's (binary) LogisticRegression.
    python benchmarks/dask_out_of_core.py out-of-core --copies 25 --workers 1 2 \\
        --memory-limit 1.5GiB --max-iter 10 --dask-ml

    # In memory: LogisticRegression(solver="lbfgs", max_iter=1000) against
    # SoftmaxRegression(solver="lbfgs") with the same objective (l2 = 1 / n, i.e. C = 1).
    python benchmarks/dask_out_of_core.py sklearn --runs 3

Without Fashion-MNIST (found as ``benchmarks/shared_data.py`` says), ``out-of-core`` uses
Gaussian blobs of the same shape. dask-ml is not a dependency: install it (for example
``pip install --target /tmp/dml --no-deps dask-ml dask-glm multipledispatch sparse`` and
``PYTHONPATH=/tmp/dml``) to compare with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np

try:
    from .shared_data import fashion_mnist_folder  # imported as benchmarks.<module> (pytest, asv)
except ImportError:
    from shared_data import fashion_mnist_folder  # run as a script: benchmarks/ is sys.path[0]

FOOTWEAR = (5, 7, 9)  # sandal, sneaker, ankle boot: the binary task for dask-ml


# -- data --------------------------------------------------------------------------------------


def source_data():
    """(X_train, y_train, X_test, y_test): Fashion-MNIST, or blobs of its shape without it."""
    from fastsoftmax.datasets import load_fashion_mnist

    try:
        return load_fashion_mnist(fashion_mnist_folder()), "Fashion-MNIST"
    except (FileNotFoundError, OSError, ValueError):
        rng = np.random.default_rng(0)
        centers = rng.random((10, 784)).astype(np.float32)

        def blobs(n):
            y = rng.integers(0, 10, n)
            X = centers[y] + 0.3 * rng.standard_normal((n, 784), dtype=np.float32)
            return X, y

        return (*blobs(60000), *blobs(10000)), "Gaussian blobs (Fashion-MNIST not found)"


def write_repeated(folder: Path, X: np.ndarray, y: np.ndarray, copies: int):
    """``copies`` copies of (X, y) in ``folder/X.npy`` and ``folder/y.npy`` (kept if present)."""
    folder.mkdir(parents=True, exist_ok=True)
    x_path, y_path = folder / "X.npy", folder / "y.npy"
    shape = (copies * len(X), X.shape[1])
    if x_path.exists() and y_path.exists():
        old = np.load(x_path, mmap_mode="r")
        if old.shape == shape and old.dtype == X.dtype:
            return x_path, y_path, 0.0
    start = time.perf_counter()
    out = np.lib.format.open_memmap(x_path, mode="w+", dtype=X.dtype, shape=shape)
    for i in range(copies):
        out[i * len(X) : (i + 1) * len(X)] = X
    out.flush()
    del out
    np.save(y_path, np.tile(y.astype(np.int64), copies))
    return x_path, y_path, time.perf_counter() - start


def load_rows(path: str, start: int, stop: int) -> np.ndarray:
    """Rows [start, stop) of a C-ordered .npy file, read into the worker's memory.

    ``readinto`` a fresh array: one ``read`` call per block, where copying from a memory map
    takes a page fault per 4 KiB page (four times slower here)."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read_header = {1: np.lib.format.read_array_header_1_0}.get(
            major, np.lib.format.read_array_header_2_0
        )
        shape, _, dtype = read_header(f)
        row_bytes = dtype.itemsize * int(np.prod(shape[1:]))
        f.seek(f.tell() + start * row_bytes)
        out = np.empty((stop - start, *shape[1:]), dtype)
        f.readinto(memoryview(out).cast("B"))
    return out


def lazy_npy(path: Path, chunk_rows: int):
    """A dask array reading the .npy file block by block (nothing is read until computed)."""
    import dask
    import dask.array as da

    meta = np.load(path, mmap_mode="r")
    n = meta.shape[0]
    blocks = []
    for start in range(0, n, chunk_rows):
        stop = min(start + chunk_rows, n)
        task = dask.delayed(load_rows, pure=True)(str(path), start, stop)
        blocks.append(da.from_delayed(task, (stop - start, *meta.shape[1:]), meta.dtype))
    return da.concatenate(blocks)


# -- measurement -------------------------------------------------------------------------------


class WorkerMonitor:
    """Samples the resident memory of the worker processes every ``interval`` s in a thread,
    and measures the CPU time they used (on a shared machine, wall time alone hides how much
    CPU the workers actually got)."""

    def __init__(self, pids, interval=0.1):
        import psutil

        self.processes = [psutil.Process(pid) for pid in pids]
        self.peak = {p.pid: 0 for p in self.processes}
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.cpu_seconds = 0.0

    def cpu(self) -> float:
        total = 0.0
        for process in self.processes:
            times = process.cpu_times()
            total += times.user + times.system
        return total

    def run(self):
        while not self.stop.is_set():
            for process in self.processes:
                try:
                    self.peak[process.pid] = max(self.peak[process.pid], process.memory_info().rss)
                except Exception:  # a worker restarting
                    pass
            self.stop.wait(self.interval)

    def __enter__(self):
        self.cpu_start = self.cpu()
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
        self.cpu_seconds = self.cpu() - self.cpu_start

    def summary(self, wall: float) -> str:
        return (
            f"peak worker RSS {', '.join(gib(v) for v in self.peak.values())}; workers used "
            f"{self.cpu_seconds:.0f} CPU s in {wall:.0f} s ({self.cpu_seconds / wall:.2f} cores)"
        )


def timed_evaluations():
    """Record the wall time of every Dask L-BFGS evaluation (wraps the data term)."""
    from fastsoftmax import _dask

    times = []
    original = _dask.BlockData.sums

    def timed(self, W, b):
        start = time.perf_counter()
        result = original(self, W, b)
        times.append(time.perf_counter() - start)
        return result

    _dask.BlockData.sums = timed
    return times


def gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.2f} GiB"


# -- out of core -------------------------------------------------------------------------------


def out_of_core(args) -> None:
    from distributed import Client, LocalCluster
    from sklearn.exceptions import ConvergenceWarning

    from fastsoftmax import SoftmaxRegression

    warnings.simplefilter("ignore", ConvergenceWarning)
    (X_train, y_train, X_test, y_test), name = source_data()
    x_path, y_path, write_time = write_repeated(Path(args.data_dir), X_train, y_train, args.copies)
    X_file = np.load(x_path, mmap_mode="r")
    n_rows = X_file.shape[0]
    print(
        f"data: {name} x {args.copies} = {n_rows} rows x {X_file.shape[1]} float32 = "
        f"{gib(X_file.nbytes)} in {x_path} (written in {write_time:.0f} s; 0 = reused)"
    )
    print(
        f"blocks of {args.chunk_rows} rows ({gib(args.chunk_rows * X_file.shape[1] * 4)}); "
        f"workers: 1 thread, memory limit {args.memory_limit}; L-BFGS max_iter "
        f"{args.max_iter}, l2 {args.l2:g}"
    )
    print(f"load average before: {os.getloadavg()[0]:.2f} (2 cores are shared)")
    params = {"solver": "lbfgs", "l2": args.l2, "max_iter": args.max_iter, "tol": None}
    reference = SoftmaxRegression(**params).fit(X_train, y_train)
    results = {}
    for n_workers in args.workers:
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            memory_limit=args.memory_limit,
            dashboard_address=":0",
        )
        with cluster, Client(cluster) as client:
            X = lazy_npy(x_path, args.chunk_rows)
            y = lazy_npy(y_path, args.chunk_rows)
            pids = list(client.run(os.getpid).values())
            times = timed_evaluations()
            start = time.perf_counter()
            with WorkerMonitor(pids) as monitor:
                model = SoftmaxRegression(**params).fit(X, y)
            total = time.perf_counter() - start
            accuracy = model.score(X_test, y_test)
            results[n_workers] = per_iteration = total / model.n_iter_
            print(
                f"\n{n_workers} worker(s): fit {total:.1f} s for {model.n_iter_} iterations, "
                f"{len(times)} evaluations; per evaluation median {statistics.median(times):.2f} s "
                f"(min {min(times):.2f}, max {max(times):.2f}); per iteration "
                f"{per_iteration:.2f} s including the classes_ pass; "
                f"{n_rows * X_file.shape[1] * 4 / statistics.median(times) / 2**30:.2f} GiB/s"
            )
            print(f"  {monitor.summary(total)} (memory limit {args.memory_limit} each)")
            print(
                f"  test accuracy {accuracy:.4f}; max |coef - in-memory coef| "
                f"{np.abs(model.coef_ - reference.coef_).max():.2e} (same objective, "
                f"same iterations: {reference.n_iter_})"
            )
            if args.dask_ml and n_workers == max(args.workers):
                dask_ml_comparison(args, X, y, client, pids)
    if 1 in results and 2 in results:
        print(f"\nscaling 1 -> 2 workers: {results[1] / results[2]:.2f}x per iteration")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def dask_ml_comparison(args, X, y, client, pids) -> None:
    """dask-ml's LogisticRegression(solver="lbfgs") is binary: time it and ours on footwear vs
    the rest, same data, same cluster, same number of iterations."""
    try:
        from dask_ml.linear_model import LogisticRegression
    except ImportError as exc:
        print(f"\ndask-ml: not installed ({exc})")
        return
    from fastsoftmax import SoftmaxRegression

    binary = y.map_blocks(np.isin, np.array(FOOTWEAR), dtype=bool).astype(np.int64)
    runs = {
        "SoftmaxRegression(lbfgs), 2 classes": lambda: SoftmaxRegression(
            solver="lbfgs", l2=args.l2, max_iter=args.max_iter, tol=None
        ).fit(X, binary),
        "dask-ml LogisticRegression(lbfgs)": lambda: LogisticRegression(
            solver="lbfgs", max_iter=args.max_iter, tol=1e-12
        ).fit(X, binary),
    }
    print("\nbinary task (footwear vs rest), same cluster:")
    for label, fit in runs.items():
        start = time.perf_counter()
        with WorkerMonitor(pids) as monitor:
            try:
                model = fit()
            except Exception as exc:  # report, do not hide
                print(f"  {label}: failed: {type(exc).__name__}: {exc}")
                continue
        total = time.perf_counter() - start
        n_iter = getattr(model, "n_iter_", None)
        note = "" if n_iter is not None else " (no n_iter_: max_iter assumed)"
        n_iter = args.max_iter if n_iter is None else int(np.max(n_iter))
        print(
            f"  {label}: {total:.1f} s, {n_iter} iterations{note}, "
            f"{total / n_iter:.2f} s/iteration; {monitor.summary(total)}"
        )


# -- scikit-learn in memory --------------------------------------------------------------------


def against_sklearn(args) -> None:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_info, threadpool_limits

    from fastsoftmax import SoftmaxRegression, _lbfgs, _linear
    from fastsoftmax.datasets import load_fashion_mnist

    warnings.simplefilter("ignore", ConvergenceWarning)
    X_train, y_train, X_test, y_test = load_fashion_mnist(fashion_mnist_folder())
    n = len(X_train)
    labels = y_train.astype(np.int64)
    X64 = X_train.astype(np.float64)

    def objective(model):  # the shared objective, in float64, at the model's weights
        def data_term(W, b):
            return _linear.block_sums(X64, labels, None, W, b)

        f = _lbfgs.Objective(data_term, 10, 784, np.float64, 1 / n)
        return f(f.flatten(model.coef_.astype(float), model.intercept_.astype(float)))[0]

    fits = {
        "sklearn LogisticRegression(lbfgs, max_iter=1000)": lambda: LogisticRegression(
            solver="lbfgs", max_iter=args.max_iter
        ),
        "SoftmaxRegression(lbfgs, l2=1/n, float32)": lambda: SoftmaxRegression(
            solver="lbfgs", l2=1 / n, max_iter=args.max_iter
        ),
        "SoftmaxRegression(lbfgs, l2=1/n, float64)": lambda: SoftmaxRegression(
            solver="lbfgs", l2=1 / n, max_iter=args.max_iter, dtype=np.float64
        ),
    }
    blas = [f"{i['internal_api']} {i['num_threads']} threads" for i in threadpool_info()]
    limit = args.blas_threads
    print(
        f"Fashion-MNIST 60000 x 784 float32; BLAS: {', '.join(blas)}"
        f"{'' if limit is None else f', limited to {limit}'}; tol 1e-4 for all; "
        f"{args.runs} interleaved runs; load average {os.getloadavg()[0]:.2f}"
    )
    times = {name: [] for name in fits}
    last = {}
    for _ in range(args.runs):
        for name, make in fits.items():
            with threadpool_limits(limit):
                start = time.perf_counter()
                model = make().fit(X_train, y_train)
                times[name].append(time.perf_counter() - start)
            last[name] = model
    for name, model in last.items():
        n_iter = int(np.max(model.n_iter_))
        print(
            f"{name}: median {statistics.median(times[name]):.1f} s "
            f"(runs {', '.join(f'{t:.1f}' for t in times[name])}), {n_iter} iterations, "
            f"test accuracy {model.score(X_test, y_test):.4f}, "
            f"objective {objective(model):.6f}"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    ooc = commands.add_parser("out-of-core", help="Dask L-BFGS on data larger than a worker")
    ooc.add_argument("--copies", type=int, default=25, help="copies of the training set (25)")
    ooc.add_argument("--chunk-rows", type=int, default=32768, help="rows per block (32768)")
    ooc.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="(1 2)")
    ooc.add_argument("--memory-limit", default="1.5GiB", help="per worker (1.5GiB)")
    ooc.add_argument("--max-iter", type=int, default=10, help="L-BFGS iterations (10)")
    ooc.add_argument("--l2", type=float, default=1 / 60000, help="(1/60000: C=1 on 60,000)")
    ooc.add_argument("--data-dir", default="/tmp/fastsoftmax-out-of-core")
    ooc.add_argument("--dask-ml", action="store_true", help="also time dask-ml (binary task)")
    sk = commands.add_parser("sklearn", help="in-memory L-BFGS against scikit-learn")
    sk.add_argument("--runs", type=int, default=3)
    sk.add_argument("--max-iter", type=int, default=1000)
    sk.add_argument("--blas-threads", type=int, default=None, help="threadpoolctl limit")
    args = parser.parse_args(argv)
    if args.command == "out-of-core":
        out_of_core(args)
    else:
        against_sklearn(args)


if __name__ == "__main__":
    sys.exit(main())
