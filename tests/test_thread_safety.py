"""Concurrency: kernels and SoftmaxRegression.predict_proba called from many threads at once,
the thread count switched between calls, backend choice local to each thread and task, and
processes: several started at once, and children of a process that has run the kernels.

Arrays have more than 2**15 elements, so each call opens a parallel region (OpenMP for Cython,
Numba's threading layer for Numba) while other threads do the same. A call must give bitwise
the result it gives alone with the same ``n_threads``: each row is computed the same way
whichever thread runs it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import fastsoftmax
from fastsoftmax import SoftmaxRegression
from fastsoftmax._registry import KERNELS, make_inputs

ROOT = Path(fastsoftmax.__file__).resolve().parents[1]
N, K = 250, 160  # 40,000 elements: above the 2**15 at which the kernels start threads
THREAD_COUNTS = (None, 1, 2)
WORKERS = 6


def problem(seed: int, dtype=np.float64) -> dict:
    """Inputs of every registered kernel's family, drawn from ``seed``."""
    rng = np.random.default_rng(seed)
    families = sorted({spec.inputs for spec in KERNELS.values()})
    return {family: make_inputs(family, (N, K), dtype, rng) for family in families}


def run(kernel: str, data: dict, backend: str, n_threads) -> list[np.ndarray]:
    """``kernel`` on fresh copies of its inputs in ``data``: the list of its results."""
    spec = KERNELS[kernel]
    fresh = {name: array.copy() for name, array in data[spec.inputs].items()}
    return [np.asarray(r) for r in spec.call(fresh, backend=backend, n_threads=n_threads)]


def check_numba_layer(backend: str) -> None:
    """Numba's "workqueue" layer aborts the process on concurrent calls; fail clearly instead."""
    if backend == "numba":
        import numba

        run("softmax", problem(0), "numba", 2)  # starts the threading layer
        assert numba.threading_layer() != "workqueue", (
            "Numba runs on its workqueue threading layer, which aborts the process when two "
            "threads call parallel kernels at once: install tbb, or build with OpenMP"
        )


def test_kernels_called_from_many_threads_give_their_serial_results(backend):
    check_numba_layer(backend)
    tasks = [
        (kernel, seed, n_threads)
        for seed, (kernel, n_threads) in enumerate(itertools.product(KERNELS, THREAD_COUNTS))
    ]
    data = {seed: problem(seed, np.float32 if seed % 2 else np.float64) for _, seed, _ in tasks}
    expected = {task: run(task[0], data[task[1]], backend, task[2]) for task in tasks}
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {
            task: pool.submit(run, task[0], data[task[1]], backend, task[2]) for task in tasks
        }
        futures_again = {t: pool.submit(run, t[0], data[t[1]], backend, t[2]) for t in tasks[::-1]}
    for results in (futures, futures_again):
        for (kernel, seed, n_threads), future in results.items():
            what = f"{kernel}, backend={backend}, n_threads={n_threads}, concurrent with others"
            for got, want in zip(future.result(), expected[kernel, seed, n_threads], strict=True):
                assert_array_equal(got, want, err_msg=what, strict=True)


def test_every_backend_at_once_from_many_threads():
    """All the backends built here, in the threads of one pool at the same time."""
    names = fastsoftmax.available_backends()
    if "numba" in names:
        check_numba_layer("numba")
    tasks = [(b, k) for b in names for k in ("softmax", "cross_entropy_soft", "sgd_momentum")]
    data = problem(99)
    expected = {task: run(task[1], data, task[0], None) for task in tasks}
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {task: pool.submit(run, task[1], data, task[0], None) for task in tasks * 3}
    for (backend, kernel), future in futures.items():
        for got, want in zip(future.result(), expected[backend, kernel], strict=True):
            assert_array_equal(got, want, err_msg=f"{kernel}, backend={backend}", strict=True)


def test_switching_n_threads_between_calls(backend):
    data = problem(5)
    alone = {n: run("cross_entropy_soft", data, backend, n) for n in (1, 2)}
    for n_threads in (1, 2, None, 1, 10**6, 1, 2):
        got = run("cross_entropy_soft", data, backend, n_threads)
        want = alone[1 if n_threads == 1 else 2]  # None and 10**6 mean all (2) threads here
        for g, w in zip(got, want, strict=True):
            assert_array_equal(g, w, err_msg=f"n_threads={n_threads}, backend={backend}")
    # Rows are computed alike whichever thread runs them: 1 and 2 threads agree bitwise too.
    for g, w in zip(alone[1], alone[2], strict=True):
        assert_array_equal(g, w, err_msg=f"1 vs 2 threads, backend={backend}")


def test_numba_kernels_leave_the_callers_thread_count_alone():
    """The Numba kernels set their thread count and restore the caller's on the way out."""
    if "numba" not in fastsoftmax.available_backends():
        pytest.skip("numba is not available")
    import numba

    data = problem(6)
    before = numba.get_num_threads()
    seen = []

    def call(n_threads):
        run("softmax", data, "numba", n_threads)
        seen.append(numba.get_num_threads())

    call(1)
    assert numba.get_num_threads() == before, "n_threads=1 leaked into the calling thread"
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(call, [1, 2, 1, None, 1, 2]))
    assert set(seen) == {before}, f"threads were left with counts {seen}, expected {before}"


@pytest.fixture(scope="module")
def fitted_models():
    """A model per available backend, trained on 30 classes (predictions have > 2**15 entries)."""
    rng = np.random.default_rng(0)
    centers = 3 * rng.standard_normal((30, 8))
    y = rng.integers(0, 30, 1500)
    X = (centers[y] + rng.standard_normal((1500, 8))).astype(np.float32)
    models = {
        b: SoftmaxRegression(random_state=0, max_epochs=2, backend=b).fit(X, y)
        for b in fastsoftmax.available_backends()
    }
    return models, X


def test_predict_proba_from_many_threads(backend, fitted_models):
    check_numba_layer(backend)
    models, X = fitted_models
    model = models[backend]
    chunks = [X[i::4] for i in range(4)] + [X, X[::-1]]
    methods = ("predict_proba", "predict_log_proba", "predict")
    expected = {(m, i): getattr(model, m)(c) for m in methods for i, c in enumerate(chunks)}
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = {
            (m, i): pool.submit(getattr(model, m), c)
            for _ in range(2)
            for m in methods
            for i, c in enumerate(chunks)
        }
    for (method, i), future in futures.items():
        assert_array_equal(future.result(), expected[method, i], err_msg=f"{method}, chunk {i}")
    assert_array_equal(model.predict_proba(X).sum(axis=1), expected["predict_proba", 4].sum(1))


def test_use_backend_is_local_to_each_thread_and_task():
    names = fastsoftmax.available_backends()
    choices = [names[i % len(names)] for i in range(6)]
    barrier = threading.Barrier(len(choices))

    def in_thread(name):
        with fastsoftmax.use_backend(name):
            barrier.wait()  # every thread is inside its own block at once
            return fastsoftmax.resolve_backend()

    with ThreadPoolExecutor(len(choices)) as pool:
        assert list(pool.map(in_thread, choices)) == choices

    async def in_task(name):
        with fastsoftmax.use_backend(name):
            await asyncio.sleep(0.01)  # the other tasks enter their blocks meanwhile
            return fastsoftmax.resolve_backend()

    async def all_tasks():
        return await asyncio.gather(*(in_task(name) for name in choices))

    assert asyncio.run(all_tasks()) == choices
    assert fastsoftmax.get_backend() == "auto" or "FASTSOFTMAX_BACKEND" in os.environ


# -- processes -------------------------------------------------------------------------------

# Run in a fresh interpreter: the parent starts two children by "spawn" (at once, as a pool
# of workers would), runs both compiled backends on 2 threads itself meanwhile (starting their
# OpenMP thread pools), then forks a child per backend, and reports what became of each.
PROCESS_SCRIPT = textwrap.dedent(
    """
    import json, multiprocessing as mp, sys, time
    import numpy as np
    import fastsoftmax

    def run(x, backend):
        try:
            return fastsoftmax.softmax(x, backend=backend)
        except RuntimeError as exc:
            return str(exc)

    def child(backends, queue):
        x = np.random.default_rng(1).standard_normal((250, 160))
        want = fastsoftmax.softmax(x, backend="numpy")
        got = {b: run(x, b) for b in backends}
        queue.put({b: g if isinstance(g, str) else bool(np.allclose(g, want, rtol=1e-12))
                   for b, g in got.items()})

    if __name__ == "__main__":
        timeout, grace = float(sys.argv[1]), float(sys.argv[2])
        x = np.random.default_rng(0).standard_normal((250, 160))
        compiled = [b for b in ("numba", "cython") if b in fastsoftmax.available_backends()]
        started = {}

        def start(name, method, backends):
            queue = mp.get_context(method).Queue()
            process = mp.get_context(method).Process(target=child, args=(backends, queue))
            process.start()
            started[name] = (process, queue)

        for i in range(2):  # they import and compile while this process does the same
            start(f"spawn-{i}", "spawn", compiled)
        for backend in compiled:
            fastsoftmax.softmax(x, backend=backend, n_threads=2)
        for backend in ["numpy", *compiled]:
            start(f"fork-{backend}", "fork", [backend])
        deadline = time.monotonic() + timeout
        outcome = {}
        for name, (process, queue) in started.items():  # the spawned ones first
            if name.startswith("fork") and deadline - time.monotonic() > grace:
                deadline = time.monotonic() + grace  # forked ones have had long enough
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()
                outcome[name] = "hung"
            elif process.exitcode != 0:
                outcome[name] = f"died (exit code {process.exitcode})"
            else:
                results = queue.get(timeout=10)
                refused = [r for r in results.values() if isinstance(r, str)]
                outcome[name] = (
                    f"refused: {refused[0]}" if refused
                    else "ok" if all(results.values()) else f"wrong result {results}"
                )
        print(json.dumps(outcome))
    """
)


@pytest.fixture(scope="module")
def process_outcomes(tmp_path_factory):
    """What became of each child (see PROCESS_SCRIPT), and the Numba cache directory."""
    tmp = tmp_path_factory.mktemp("processes")
    script = tmp / "children.py"
    script.write_text(PROCESS_SCRIPT)
    cache = tmp / "numba-cache"
    env = {key: v for key, v in os.environ.items() if key != "FASTSOFTMAX_BACKEND"}
    env.update(PYTHONPATH=str(ROOT), NUMBA_CACHE_DIR=str(cache))
    # A spawned child imports and compiles for a few seconds (120 s bounds it on a loaded
    # machine); a forked one needs milliseconds, and has had at least 5 s more once the
    # spawned ones are done: past that it has hung.
    result = subprocess.run(
        [sys.executable, str(script), "120", "5"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), cache


def test_several_processes_start_the_backends_at_once(process_outcomes):
    """Two spawned processes import fastsoftmax, compile the Numba kernels and run both
    compiled backends at the same time, while their parent does the same: three at once."""
    outcomes, _ = process_outcomes
    assert {k: v for k, v in outcomes.items() if k.startswith("spawn")} == {
        f"spawn-{i}": "ok" for i in range(2)
    }


def test_processes_started_at_once_share_one_numba_cache_entry(process_outcomes):
    """The three processes compiled softmax for float64 at the same time into one cache
    directory: one entry results (tests/test_numba_cache.py covers the cache itself)."""
    _, cache = process_outcomes
    if "numba" not in fastsoftmax.available_backends():
        pytest.skip("Numba is not installed")
    written = sorted(path.name for path in cache.rglob("*.nb*"))
    assert len(written) == 2, f"expected one index and one data file: {written}"
    assert all(".softmax_float64-" in name for name in written), written


def test_a_forked_child_runs_the_numpy_backend(process_outcomes):
    outcomes, _ = process_outcomes
    assert outcomes["fork-numpy"] == "ok"


def test_a_forked_child_runs_the_cython_backend_on_one_thread(process_outcomes):
    """GNU OpenMP's thread pool does not survive fork(): unprotected, this child hung in its
    first parallel region. It runs without one (kernel_module caps it at one thread)."""
    outcomes, _ = process_outcomes
    if "fork-cython" not in outcomes:
        pytest.skip("the cython backend is not built")
    assert outcomes["fork-cython"] == "ok"


def test_a_forked_child_refuses_the_numba_backend_by_name(process_outcomes):
    """Numba's OpenMP layer terminates a forked child ('Terminating: fork() called from a
    process already using GNU OpenMP'): the call raises a RuntimeError saying what to do."""
    outcomes, _ = process_outcomes
    if "fork-numba" not in outcomes:
        pytest.skip("the numba backend is not available")
    outcome = outcomes["fork-numba"]
    assert outcome.startswith("refused: backend 'numba' cannot run in a process forked"), outcome
    assert "'spawn'" in outcome, outcome
