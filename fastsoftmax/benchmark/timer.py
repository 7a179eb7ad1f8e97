"""The timer every benchmark shares, and the memory-bandwidth ceiling it is compared with.

* :func:`measure` calls every runner once first (untimed: Numba compiles there, and the bench
  reports that time apart), calibrates the calls per sample so that each sample lasts at least
  ``min_time``, then interleaves the runners in rounds so that a noisy phase of the machine
  hits all of them alike; :class:`Timing` gives the median and the interquartile range.
* :func:`copy_bandwidth` is the ceiling: a large ``np.copyto`` (read + write) measured on the
  same machine in the same run, the rate a one-pass kernel can approach; :func:`read_bandwidth`
  the read-only one (a large ``np.max``), for kernels that write next to nothing.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial

import numpy as np

from fastsoftmax._registry import touched

Runner = Callable[[], object]
"""A no-argument callable running one case once."""

_MAX_CALLS_PER_SAMPLE = 1_000_000
_SETTLE_SECONDS = 0.002


@dataclass
class Timing:
    """Seconds per call, one sample per round, each the mean of ``calls_per_sample`` calls."""

    samples: list[float]
    calls_per_sample: int
    first_call: float

    @property
    def median(self) -> float:
        return float(np.median(self.samples))

    @property
    def spread(self) -> float:
        """Interquartile range of the samples, in seconds."""
        q1, q3 = np.percentile(self.samples, [25, 75])
        return float(q3 - q1)


def calls_per_sample(run: Runner, min_time: float) -> int:
    """Calls that together last about ``min_time``: an estimate, then a timed trial.

    Examples
    --------
    >>> from fastsoftmax.benchmark.timer import calls_per_sample
    >>> calls_per_sample(lambda: None, 0.001) > 1
    True
    """
    # The fastest of a few single calls: one slow call (a page fault, a thread pool waking up)
    # would otherwise leave every sample a handful of calls long.
    fastest, spent = math.inf, 0.0
    for _ in range(5):
        start = time.perf_counter()
        run()
        once = time.perf_counter() - start
        fastest, spent = min(fastest, once), spent + once
        if spent >= min_time:
            break
    if fastest >= min_time:
        return 1
    trial = min(_MAX_CALLS_PER_SAMPLE, math.ceil(min_time / max(fastest, 1e-7)))
    start = time.perf_counter()
    for _ in range(trial):
        run()
    per_call = max((time.perf_counter() - start) / trial, 1e-9)
    return max(1, min(_MAX_CALLS_PER_SAMPLE, math.ceil(min_time / per_call)))


def measure(
    runners: Mapping[str, Runner], *, rounds: int = 7, min_time: float = 0.02
) -> dict[str, Timing]:
    """Time each runner: warm-up call, calibration, then ``rounds`` interleaved samples.

    Parameters
    ----------
    runners : mapping of name to no-argument callable
    rounds : int, default 7
        Samples per runner. Each round times every runner once, starting from a different one
        each round, so no runner always follows the same neighbour.
    min_time : float, default 0.02
        Seconds one sample lasts at least (enough calls are averaged), so that timer
        resolution and per-sample jitter stay small.

    Returns
    -------
    dict of name to Timing
        ``first_call`` is the warm-up call (compilation included), never part of a sample.

    Examples
    --------
    >>> from fastsoftmax.benchmark import measure
    >>> timing = measure({"sum": lambda: sum(range(100))}, rounds=3, min_time=0.001)["sum"]
    >>> len(timing.samples), timing.median > 0
    (3, True)
    """
    names = list(runners)
    first_call = {}
    for name in names:
        start = time.perf_counter()
        runners[name]()
        first_call[name] = time.perf_counter() - start
    calls = {name: calls_per_sample(runners[name], min_time) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection in the middle of one sample would be charged to one runner
    try:
        for round_index in range(max(1, rounds)):
            shift = round_index % len(names) if names else 0
            for name in names[shift:] + names[:shift]:
                run, count = runners[name], calls[name]
                if len(names) > 1:
                    # Let the previous library's OpenMP/BLAS workers stop spinning: they would
                    # take cores from this sample.
                    time.sleep(_SETTLE_SECONDS)
                start = time.perf_counter()
                for _ in range(count):
                    run()
                samples[name].append((time.perf_counter() - start) / count)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: Timing(samples[name], calls[name], first_call[name]) for name in names}


def copy_bandwidth(mib: int = 256, n_threads: int = 1, rounds: int = 5) -> float:
    """GB/s of ``np.copyto`` between two preallocated float32 arrays of ``mib`` MiB.

    Bytes read plus bytes written, per second: the ceiling a one-pass kernel can approach.
    With ``n_threads > 1`` the copy is split into that many chunks copied concurrently (NumPy
    releases the GIL while it copies).

    Examples
    --------
    >>> from fastsoftmax.benchmark import copy_bandwidth
    >>> copy_bandwidth(mib=4, rounds=2) > 0
    True
    """
    n = mib * 2**20 // 4
    source = np.ones(n, np.float32)
    target = touched((n,), np.float32)
    return _bandwidth(np.copyto, (target, source), 2 * source.nbytes, n_threads, rounds)


def read_bandwidth(mib: int = 256, n_threads: int = 1, rounds: int = 5) -> float:
    """GB/s of ``np.max`` over a float32 array of ``mib`` MiB: the read-only ceiling.

    Bytes read per second, for kernels that write next to nothing (logsumexp). NumPy's max is
    vectorised and never the bottleneck on a memory-sized array (of the reductions tried, max,
    sum, ``count_nonzero`` of the bytes and ``any``, it was the fastest, at 22 GB/s on one
    thread against 17.5 GB/s for the copy).

    Examples
    --------
    >>> from fastsoftmax.benchmark.timer import read_bandwidth
    >>> read_bandwidth(mib=4, rounds=2) > 0
    True
    """
    source = np.ones(mib * 2**20 // 4, np.float32)
    return _bandwidth(np.max, (source,), source.nbytes, n_threads, rounds)


def _bandwidth(function, arrays: tuple, moved: int, n_threads: int, rounds: int) -> float:
    """GB/s of ``function(*arrays)`` moving ``moved`` bytes; with ``n_threads > 1`` the arrays
    are split into that many chunks run concurrently (NumPy releases the GIL)."""
    pool = None
    if n_threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(n_threads)
        chunks = list(zip(*(np.array_split(a, n_threads) for a in arrays), strict=True))

        def run():
            list(pool.map(lambda chunk: function(*chunk), chunks))

    else:
        run = partial(function, *arrays)
    try:
        timing = measure({"run": run}, rounds=rounds, min_time=0.0)["run"]
    finally:
        if pool is not None:
            pool.shutdown()
    return moved / timing.median / 1e9
