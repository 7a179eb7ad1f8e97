"""Benchmarks of the kernels: one registry, one input cache, one timer.

Everything that times a kernel goes through this package: ``fastsoftmax bench`` and
:func:`bench`, the quick table of ``fastsoftmax info`` (:func:`compare`), and the asv and
pytest-benchmark suites in ``benchmarks/``. Its modules:

* :mod:`~fastsoftmax.benchmark.implementations`: :func:`registry`, ``{kernel: {implementation:
  Implementation}}``: the backends' kernels from :mod:`fastsoftmax._registry` plus the installed
  peers, and the runners built from them;
* :mod:`~fastsoftmax.benchmark.inputs`: the memoised inputs, their rotation copies and shapes;
* :mod:`~fastsoftmax.benchmark.timer`: the interleaved timer and the memory copy ceiling;
* :mod:`~fastsoftmax.benchmark.machine`: the CPU, backends, threads and versions
  (:func:`environment`);
* :mod:`~fastsoftmax.benchmark.peers`: SciPy, PyTorch and JAX, where installed;
* :mod:`~fastsoftmax.benchmark.report`: the report as tables, JSON and a plot;
* :mod:`~fastsoftmax.benchmark.neighbours`: the interleaved scenario, what a kernel costs the
  BLAS and PyTorch calls around it (:func:`bench_interleaved`).

No module is named after a function of this package (``registry``, ``environment``): importing
it would replace the function with the module.

This module runs them: :func:`bench` warms every implementation up on tiny inputs (Numba
compiles there; the time is reported apart), measures the ceiling, then times each kernel x
dtype x shape, all its implementations and modes interleaved.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from functools import partial

from fastsoftmax._registry import SGD_STEP
from fastsoftmax.benchmark import peers
from fastsoftmax.benchmark.implementations import (
    IMPLEMENTATION_ORDER,
    KERNELS,
    MODES,
    REFERENCE,
    Implementation,
    make_runner,
    registry,
)
from fastsoftmax.benchmark.inputs import (
    DEFAULT_SHAPES,
    DEFAULT_SIZES,
    DTYPES,
    EPOCH,
    QUICK_SHAPES,
    QUICK_SIZES,
    bytes_moved,
    case_inputs,
    clear_inputs,
    dtype_name,
    last_level_cache_bytes,
    ndim,
    parse_shapes,
    rotation_copies,
    shapes_for,
)
from fastsoftmax.benchmark.machine import (
    cpu_description,
    environment,
    environment_report,
)
from fastsoftmax.benchmark.neighbours import InterleavedReport, bench_interleaved
from fastsoftmax.benchmark.report import (
    SPEEDUP,
    SPEEDUP_PEER,
    Report,
    case_block,
    format_table,
    shape_text,
    speedup,
)
from fastsoftmax.benchmark.timer import (
    Runner,
    Timing,
    copy_bandwidth,
    measure,
    read_bandwidth,
)

__all__ = [
    "DEFAULT_SHAPES",
    "DEFAULT_SIZES",
    "DTYPES",
    "EPOCH",
    "IMPLEMENTATION_ORDER",
    "KERNELS",
    "MODES",
    "QUICK_CASES",
    "QUICK_SHAPES",
    "QUICK_SIZES",
    "REFERENCE",
    "SGD_STEP",
    "Implementation",
    "InterleavedReport",
    "Report",
    "Runner",
    "Timing",
    "bench",
    "bench_interleaved",
    "bytes_moved",
    "case_inputs",
    "clear_inputs",
    "compare",
    "copy_bandwidth",
    "cpu_description",
    "dtype_name",
    "environment",
    "environment_report",
    "format_table",
    "last_level_cache_bytes",
    "make_runner",
    "measure",
    "ndim",
    "parse_shapes",
    "registry",
    "rotation_copies",
    "shapes_for",
]


def _warm_up(table, cases, n_threads) -> tuple[list[dict], list[str]]:
    """First call of every implementation x kernel x dtype on a tiny input, timed.

    An implementation whose first call raises is dropped from ``table`` for that kernel, with a
    note saying why (a backend that does not implement a newly registered kernel yet).
    """
    first_calls, notes = [], []
    seen = set()
    for kernel, dtype, _ in cases:
        if kernel == EPOCH or (kernel, dtype) in seen:
            continue
        seen.add((kernel, dtype))
        tiny = (4,) if ndim(kernel) == 1 else (2, 3)
        data = case_inputs(kernel, tiny, dtype)[0]
        for name, entry in list(table[kernel].items()):
            try:
                run = entry(data, entry.modes[0], n_threads)
                if run is None:
                    continue
                start = time.perf_counter()
                run()
                seconds = time.perf_counter() - start
            except Exception as exc:  # reported in a note; the other implementations still run
                del table[kernel][name]
                notes.append(f"{kernel}: {name} not timed, its first call failed ({exc!r})")
                continue
            first_calls.append(
                {"implementation": name, "kernel": kernel, "dtype": dtype, "seconds": seconds}
            )
    return first_calls, notes


def bench(
    kernels: Sequence[str] | None = None,
    shapes: Sequence[tuple[int, ...]] | None = None,
    dtypes: Sequence[str] | None = None,
    *,
    implementations: Sequence[str] | None = None,
    compare_peers: bool = False,
    n_threads: int | None = None,
    rounds: int | None = None,
    min_time: float | None = None,
    quick: bool = False,
    ceiling_mib: int | None = None,
    json_path: str | os.PathLike | None = None,
    plot_path: str | os.PathLike | None = None,
    verbose: bool = True,
) -> Report:
    """Time every kernel x dtype x shape x implementation and print a table per case.

    Each case reports, per implementation and mode, the median time per call, the spread
    (interquartile range), GB/s (input read once + output written once), the share of the
    memory ceiling (a large ``np.copyto`` measured first) and the speed-up over the reference
    backend (:data:`REFERENCE`). Numba compilation happens in a warm-up on tiny inputs and is
    reported apart.

    Parameters
    ----------
    kernels : sequence of str, optional
        From :data:`KERNELS` and ``"classifier_epoch"``; default all (the epoch only when
        Fashion-MNIST is found, and not with ``quick``).
    shapes : sequence of tuple, optional
        2-D ``(rows, classes)`` shapes for the row kernels and 1-D sizes for the vector kernels
        (``sgd_update``, which takes the 2-D shapes when no size is given). Default
        :data:`DEFAULT_SHAPES` and :data:`DEFAULT_SIZES` (the ``QUICK_*`` ones with ``quick``).
    dtypes : sequence of str, optional
        Default :data:`DTYPES`, float32 and float64 (the first, float32, with ``quick``).
    implementations : sequence of str, optional
        Backends and peers to time; default all available (peers with ``compare_peers``).
    compare_peers : bool, default False
        Add SciPy, PyTorch and JAX where installed.
    n_threads : int, optional
        Threads for the fastsoftmax calls (``n_threads=``) and PyTorch
        (``torch.set_num_threads``, restored afterwards); default all.
    rounds : int, optional
        Samples per implementation; default 7 (3 with ``quick``).
    min_time : float, optional
        Seconds per sample at least; default 0.02 (0.005 with ``quick``).
    quick : bool, default False
        Small shapes, float32, fewer rounds: done in well under 30 s.
    ceiling_mib : int, optional
        Size of the copy that measures the ceiling; default 256 MiB (64 with ``quick``).
    json_path, plot_path : path, optional
        Also write the report as JSON, and a PNG of GB/s per implementation (matplotlib).
    verbose : bool, default True
        Print the header, then each case's table as soon as it is measured.

    Returns
    -------
    Report
        ``print(report)`` shows everything; ``report.results`` holds one dict per row.

    Examples
    --------
    >>> from fastsoftmax.benchmark import bench
    >>> report = bench(["softmax"], [(64, 10)], ["float64"], implementations=["numpy"],
    ...                rounds=1, min_time=0.001, ceiling_mib=4, verbose=False)
    >>> [(r["implementation"], r["mode"], r["speedup_vs_numpy"]) for r in report.results]
    [('numpy', 'alloc', 1.0), ('numpy', 'out', 1.0)]
    """
    rounds = rounds if rounds is not None else (3 if quick else 7)
    min_time = min_time if min_time is not None else (0.005 if quick else 0.02)
    ceiling_mib = ceiling_mib if ceiling_mib is not None else (64 if quick else 256)
    if dtypes is None:
        dtypes = DTYPES[:1] if quick else DTYPES
    dtypes = [dtype_name(dtype) for dtype in dtypes]
    notes = []
    if kernels is None:
        kernels = list(KERNELS)
        if not quick:
            from fastsoftmax.datasets import find_fashion_mnist

            if find_fashion_mnist() is not None:  # on disk only: the bench never downloads
                kernels.append(EPOCH)
            else:
                notes.append(
                    f"{EPOCH}: skipped, Fashion-MNIST not found (get it with "
                    "fastsoftmax.datasets.fetch_fashion_mnist(), or set FASTSOFTMAX_DATA)"
                )
    unknown = set(kernels) - {*KERNELS, EPOCH}
    if unknown:
        raise ValueError(f"unknown kernels {sorted(unknown)}: expected some of {[*KERNELS, EPOCH]}")
    # Naming a peer in `implementations` is asking to compare with it.
    compare_peers = compare_peers or bool(set(implementations or ()) & set(peers.HOW_TO_GET))
    table = registry(peers=compare_peers, implementations=implementations)
    if not any(table[k] for k in kernels):
        raise ValueError(
            f"no implementation to time: asked for {implementations}, available "
            f"{sorted({n for entries in registry(peers=True).values() for n in entries})}"
        )
    cases = [
        (kernel, dtype, shape)
        for kernel in kernels
        for dtype in dtypes
        for shape in ([None] if kernel == EPOCH else shapes_for(kernel, shapes, quick))
    ]
    say = partial(print, flush=True) if verbose else (lambda *args, **kwargs: None)

    with peers.preserved_threads():
        first_calls, failures = _warm_up(table, cases, n_threads)
        notes.extend(failures)
        usable = cpu_description()["usable_cpus"] or 1
        copy_threads = n_threads or usable
        one = copy_bandwidth(ceiling_mib, 1)
        many = copy_bandwidth(ceiling_mib, copy_threads) if copy_threads > 1 else one
        read_one = read_bandwidth(ceiling_mib, 1)
        read_many = read_bandwidth(ceiling_mib, copy_threads) if copy_threads > 1 else read_one
        ceiling = {
            "mib": ceiling_mib,
            "gbps": max(one, many),
            "gbps_1_thread": one,
            "gbps_n_threads": many,
            "threads": copy_threads,
            "read_gbps": max(read_one, read_many),
            "read_gbps_1_thread": read_one,
            "read_gbps_n_threads": read_many,
        }
        settings = {
            "kernels": list(kernels),
            "dtypes": dtypes,
            "implementations": sorted({n for k in kernels for n in table[k]}),
            "compare_peers": compare_peers,
            "n_threads": n_threads,
            "rounds": rounds,
            "min_time": min_time,
            "quick": quick,
        }
        report = Report(environment(), settings, ceiling, first_calls, notes=notes)
        say(report.header() + "\n\n" + report.first_call_text() + "\n")
        if failures:
            say("\n".join(failures) + "\n")
        for kernel, dtype, shape in cases:
            rows = _bench_case(table, kernel, dtype, shape, n_threads, rounds, min_time, ceiling)
            if isinstance(rows, str):
                notes.append(rows)
                say(rows + "\n")
                continue
            report.results.extend(rows)
            say(case_block(rows) + "\n")
    for note in notes:
        say(note)
    if json_path is not None:
        report.save_json(json_path)
        say(f"JSON written to {json_path}")
    if plot_path is not None:
        report.plot(plot_path)
        say(f"plot written to {plot_path}")
    return report


READ_ONLY_KERNELS = ("logsumexp",)
"""Kernels that write next to nothing: their "ceiling" is the read-only one."""


def _bench_case(table, kernel, dtype, shape, n_threads, rounds, min_time, ceiling):
    """The rows of one kernel x dtype x shape, or a note saying why it was skipped."""
    if kernel == EPOCH:
        try:
            shape = case_inputs(EPOCH, (), dtype)[0]["X"].shape
        except (FileNotFoundError, ImportError) as exc:
            return f"{EPOCH} {dtype}: skipped ({exc})"
        rounds = min(rounds, 3)  # an epoch takes seconds: three samples tell enough
    copies = rotation_copies(kernel, shape, dtype)
    runners = {}
    for name, entry in table[kernel].items():
        for mode in entry.modes:
            run = make_runner(kernel, name, shape, dtype, mode, n_threads, table=table)
            if run is not None:
                runners[(name, mode)] = run
    if not runners:
        return f"{kernel} {dtype} {shape_text(shape)}: no implementation can run it"
    timings = measure(
        {f"{name}/{mode}": run for (name, mode), run in runners.items()},
        rounds=rounds,
        min_time=min_time,
    )
    moved = bytes_moved(kernel, shape, dtype)
    ceiling_key = "read_gbps" if kernel in READ_ONLY_KERNELS else "gbps"
    rows = []
    for name, mode in runners:
        timing = timings[f"{name}/{mode}"]
        gbps = moved / timing.median / 1e9 if moved else None
        rows.append(
            {
                "kernel": kernel,
                "dtype": dtype,
                "shape": list(shape),
                "implementation": name,
                "mode": mode,
                "n_threads": n_threads,
                "median_s": timing.median,
                "spread_s": timing.spread,
                "min_s": min(timing.samples),
                "samples_s": timing.samples,
                "calls_per_sample": timing.calls_per_sample,
                "first_call_s": timing.first_call,
                "copies": copies,
                "bytes_moved": moved,
                "gbps": gbps,
                "ceiling_pct": 100 * gbps / ceiling[ceiling_key] if gbps else None,
            }
        )
    for row in rows:
        row[SPEEDUP] = speedup(rows, row)
        row[SPEEDUP_PEER] = speedup(rows, row, peers.COMPARED)
    return rows


# -- the quick comparison of ``fastsoftmax info`` ------------------------------------------------

QUICK_CASES = (
    ("softmax", (4096, 1000), "float32"),
    ("softmax", (1_000_000, 10), "float64"),
    ("softmax_cross_entropy", (4096, 1000), "float32"),
    ("softmax_cross_entropy", (1_000_000, 10), "float64"),
)
"""The cases ``fastsoftmax info`` times: the forward kernel and the training step's loss, on
wide rows and on narrow rows (softmax regression)."""


def compare(cases=QUICK_CASES, backends: list[str] | None = None, rounds: int = 7) -> list[dict]:
    """Median seconds per (kernel, shape, dtype, backend), preallocated outputs, interleaved.

    Examples
    --------
    >>> from fastsoftmax.benchmark import compare
    >>> [row["backend"] for row in compare([("softmax", (8, 3), "float64")], ["numpy"], 1)]
    ['numpy']
    """
    table = registry(implementations=backends)
    rows = []
    for kernel, shape, dtype in cases:
        names = list(table[kernel])
        runners = {
            name: make_runner(kernel, name, shape, dtype, "out", table=table) for name in names
        }
        timings = measure(runners, rounds=rounds)
        reference = timings[REFERENCE].median if REFERENCE in timings else None
        for name in names:
            median = timings[name].median
            rows.append(
                {
                    "kernel": kernel,
                    "shape": shape,
                    "dtype": dtype,
                    "backend": name,
                    "median_s": median,
                    "spread_s": timings[name].spread,
                    SPEEDUP: reference / median if reference else None,
                }
            )
    return rows
