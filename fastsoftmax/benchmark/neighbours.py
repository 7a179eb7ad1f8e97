"""The interleaved scenario: what a kernel costs the library calls around it.

A kernel runs between other libraries' calls: a BLAS GEMM, a PyTorch op. When its thread pool
keeps spinning after a parallel region (GNU OpenMP spins for a while before it sleeps), the
next call's own threads find the cores taken. This module times each such neighbour

* right after a kernel call ("after kernel"),
* after an idle gap that lets every pool fall asleep ("idle"),
* right after a single-threaded ``np.copyto`` of the kernel's input ("after copy": the same
  memory traffic, no thread pool),

and the kernel itself right after the neighbour (interleaved) and back to back ("alone").
Every sample is one call; each round takes the four in the same order, and the medians over the
rounds are reported. :func:`bench_interleaved` runs it (``fastsoftmax bench --interleaved``).
"""

from __future__ import annotations

import gc
import os
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from fastsoftmax._registry import touched
from fastsoftmax.benchmark import peers
from fastsoftmax.benchmark.implementations import KERNELS, make_runner, registry
from fastsoftmax.benchmark.inputs import case_inputs, dtype_name, ndim
from fastsoftmax.benchmark.machine import cpu_description, environment, environment_lines
from fastsoftmax.benchmark.report import format_seconds, shape_text
from fastsoftmax.benchmark.timer import measure

INTERLEAVED_SHAPES = ((4096, 1000), (64, 10))
"""A wide case that runs on every thread and a small one under the threading threshold."""

INTERLEAVED_IMPLEMENTATIONS = ("cython", "numba")
"""The threaded backends: the ones whose thread pool can be in a neighbour's way."""

IDLE_GAP_SECONDS = 0.05
"""Sleep before an "idle" sample: longer than GNU OpenMP's default spin (300000 ``pause``
iterations, milliseconds on Intel) and OpenBLAS's, so every pool is asleep."""

COLUMNS = (
    ("implementation", 14, "<"),
    ("threads", 7, ">"),
    ("neighbour", 13, "<"),
    ("after kernel", 12, ">"),
    ("idle", 10, ">"),
    ("after copy", 10, ">"),
    ("x idle", 6, ">"),
    ("x copy", 6, ">"),
    ("kernel inter.", 13, ">"),
    ("kernel alone", 12, ">"),
    ("x", 5, ">"),
)
"""The table's columns: the neighbour's median after the kernel, after an idle gap and after a
copy, the first over the other two; the kernel's median right after the neighbour, back to
back, and their ratio."""


@dataclass(frozen=True)
class Neighbour:
    """Another library's call: ``make()`` builds its no-argument runner (inputs made once)."""

    name: str
    description: str
    make: Callable[[], Callable[[], object]]


def _gemm(m: int, k: int, n: int) -> Callable[[], object]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = touched((m, n), np.float32)
    return partial(np.matmul, a, b, out=out)


def _torch_mm() -> Callable[[], object]:
    import torch

    a = torch.randn(256, 784)
    b = torch.randn(784, 10)
    out = torch.empty(256, 10)
    return partial(torch.mm, a, b, out=out)


def neighbours(names: Sequence[str] | None = None) -> dict[str, Neighbour]:
    """The neighbours available here: two BLAS GEMMs, and a PyTorch matmul when installed.

    Examples
    --------
    >>> from fastsoftmax.benchmark.neighbours import neighbours
    >>> sorted(neighbours(["gemm_small"]))
    ['gemm_small']
    """
    found = {
        "gemm_small": Neighbour(
            "gemm_small",
            "NumPy BLAS GEMM (256, 784) @ (784, 10) float32",
            partial(_gemm, 256, 784, 10),
        ),
        "gemm_large": Neighbour(
            "gemm_large", "NumPy BLAS GEMM 1024^3 float32", partial(_gemm, 1024, 1024, 1024)
        ),
    }
    if peers.is_installed("torch"):
        found["torch_mm"] = Neighbour(
            "torch_mm", "torch.mm (256, 784) @ (784, 10) float32", _torch_mm
        )
    if names is not None:
        unknown = set(names) - set(found)
        if unknown:
            raise ValueError(f"unknown neighbours {sorted(unknown)}: available {sorted(found)}")
        found = {name: found[name] for name in names}
    return found


def _once(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def interleave(kernel_run, neighbour_run, copy_run, rounds: int, gap: float) -> dict:
    """Medians over ``rounds`` of: the neighbour after an idle gap, after ``copy_run``, the
    kernel right after the neighbour, then the neighbour right after the kernel (seconds)."""
    samples: dict[str, list[float]] = {"idle": [], "copy": [], "kernel": [], "after": []}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(rounds):
            time.sleep(gap)
            samples["idle"].append(_once(neighbour_run))
            copy_run()
            samples["copy"].append(_once(neighbour_run))
            samples["kernel"].append(_once(kernel_run))
            samples["after"].append(_once(neighbour_run))
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: float(np.median(values)) for name, values in samples.items()}


def openmp_runtimes() -> list[str]:
    """The OpenMP runtimes (``libgomp``, ``libomp``, ``libiomp``) mapped into this process.

    Two copies of one runtime (PyTorch bundles its own ``libgomp``) are two thread pools.
    """
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/" in line}
    except OSError:
        return []
    names = ("libgomp", "libomp", "libiomp")
    return sorted(p for p in paths if any(Path(p).name.startswith(n) for n in names))


@dataclass
class InterleavedReport:
    """What :func:`bench_interleaved` measured; ``print(report)`` shows it."""

    environment: dict
    settings: dict
    results: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def header(self) -> str:
        settings = self.settings
        lines = environment_lines(self.environment, None)
        lines.append(
            "OpenMP runtimes loaded: " + (", ".join(settings["openmp_runtimes"]) or "none")
        )
        lines.append(
            "neighbours: " + "; ".join(f"{n}: {d}" for n, d in settings["neighbours"].items())
        )
        note = (
            f"interleaved: {settings['rounds']} rounds of [idle {settings['gap_s'] * 1e3:g} ms, "
            "neighbour (idle), single-threaded np.copyto of the kernel's input, neighbour (after "
            "copy), kernel (inter.), neighbour (after kernel)], one call per sample, medians; "
            "x idle / x copy = after kernel over idle / after copy; kernel alone = back-to-back "
            "calls; x = inter. over alone"
        )
        return "\n".join([*lines, *textwrap.wrap(note, 100, subsequent_indent="  ")])

    def table(self) -> str:
        groups: dict[tuple, list[dict]] = {}
        for row in self.results:
            groups.setdefault((row["kernel"], row["dtype"], tuple(row["shape"])), []).append(row)
        return "\n\n".join(case_block(rows) for rows in groups.values())

    def __str__(self) -> str:
        parts = [self.header(), self.table()]
        if self.notes:
            parts.append("\n".join(self.notes))
        return "\n\n".join(parts)

    def to_dict(self) -> dict:
        return {
            "environment": self.environment,
            "settings": self.settings,
            "results": self.results,
            "notes": self.notes,
        }

    def save_json(self, path: str | os.PathLike) -> None:
        import json

        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n")


def _line(values: Sequence[str]) -> str:
    return "  " + " ".join(
        f"{value:{align}{width}}" for value, (_, width, align) in zip(values, COLUMNS, strict=True)
    )


def case_block(rows: list[dict]) -> str:
    """The table of one kernel x dtype x shape: a row per implementation x threads x
    neighbour."""
    first = rows[0]
    lines = [
        f"{first['kernel']} | {first['dtype']} | {shape_text(first['shape'])}   (interleaved)",
        _line([name for name, _, _ in COLUMNS]),
    ]
    for row in rows:
        lines.append(
            _line(
                [
                    row["implementation"],
                    str(row["n_threads"]),
                    row["neighbour"],
                    format_seconds(row["neighbour_after_kernel_s"]),
                    format_seconds(row["neighbour_idle_s"]),
                    format_seconds(row["neighbour_after_copy_s"]),
                    f"{row['ratio_vs_idle']:.2f}",
                    f"{row['ratio_vs_copy']:.2f}",
                    format_seconds(row["kernel_interleaved_s"]),
                    format_seconds(row["kernel_alone_s"]),
                    f"{row['kernel_ratio']:.2f}",
                ]
            )
        )
    return "\n".join(lines)


def bench_interleaved(
    kernels: Sequence[str] | None = None,
    shapes: Sequence[tuple[int, ...]] | None = None,
    dtypes: Sequence[str] | None = None,
    *,
    implementations: Sequence[str] | None = None,
    threads: Sequence[int] | None = None,
    neighbour_names: Sequence[str] | None = None,
    rounds: int | None = None,
    gap: float = IDLE_GAP_SECONDS,
    quick: bool = False,
    json_path: str | os.PathLike | None = None,
    verbose: bool = True,
) -> InterleavedReport:
    """Time each neighbour around each kernel x shape x implementation x thread count.

    Parameters
    ----------
    kernels : sequence of str, optional
        From :data:`KERNELS`; default all (``softmax`` with ``quick``).
    shapes : sequence of tuple, optional
        Default :data:`INTERLEAVED_SHAPES`; the vector kernels take their sizes (the rows x
        classes of a 2-D shape, flattened, when none is given).
    dtypes : sequence of str, optional
        Default float32.
    implementations : sequence of str, optional
        Default :data:`INTERLEAVED_IMPLEMENTATIONS` that are available.
    threads : sequence of int, optional
        ``n_threads`` of the kernel calls; default 1 and every usable CPU.
    neighbour_names : sequence of str, optional
        Some of :func:`neighbours`; default all available.
    rounds : int, optional
        Samples of each; default 15 (7 with ``quick``).
    gap : float
        Seconds of the idle gap (:data:`IDLE_GAP_SECONDS`).
    json_path : path, optional
        Also write the report as JSON.

    Examples
    --------
    >>> from fastsoftmax.benchmark import bench_interleaved
    >>> report = bench_interleaved(["softmax"], [(8, 3)], implementations=["numpy"],
    ...     threads=[1], neighbour_names=["gemm_small"], rounds=1, gap=0, verbose=False)
    >>> [(r["implementation"], r["neighbour"]) for r in report.results]
    [('numpy', 'gemm_small')]
    """
    rounds = rounds if rounds is not None else (7 if quick else 15)
    kernels = list(kernels) if kernels is not None else (["softmax"] if quick else list(KERNELS))
    unknown = set(kernels) - set(KERNELS)
    if unknown:
        raise ValueError(f"unknown kernels {sorted(unknown)}: expected some of {list(KERNELS)}")
    shapes = list(shapes) if shapes is not None else list(INTERLEAVED_SHAPES)
    dtypes = [dtype_name(d) for d in (dtypes or ["float32"])]
    table = registry(implementations=implementations or INTERLEAVED_IMPLEMENTATIONS)
    names = [n for n in (implementations or INTERLEAVED_IMPLEMENTATIONS) if n in table["softmax"]]
    if not names:
        raise ValueError(f"no implementation to time: asked for {implementations}")
    if threads is None:
        usable = cpu_description()["usable_cpus"] or 1
        threads = sorted({1, usable})
    chosen = neighbours(neighbour_names)
    runners = {name: n.make() for name, n in chosen.items()}
    say = partial(print, flush=True) if verbose else (lambda *args, **kwargs: None)
    results: list[dict] = []
    notes: list[str] = []
    with peers.preserved_threads():
        for run in runners.values():
            run()  # imports, first-call set-up: never timed
        for kernel in kernels:
            for dtype in dtypes:
                for shape in _shapes_of(kernel, shapes):
                    rows = _case(table, names, kernel, dtype, shape, threads, runners, rounds, gap)
                    if not rows:
                        notes.append(f"{kernel} {dtype} {shape_text(shape)}: nothing can run it")
                        continue
                    results.extend(rows)
                    say(case_block(rows) + "\n")
    settings = {
        "scenario": "interleaved",
        "kernels": kernels,
        "dtypes": dtypes,
        "implementations": names,
        "threads": list(threads),
        "rounds": rounds,
        "gap_s": gap,
        "quick": quick,
        "neighbours": {name: n.description for name, n in chosen.items()},
        "openmp_runtimes": openmp_runtimes(),
    }
    report = InterleavedReport(environment(), settings, results, notes)
    say(report.header())
    for note in notes:
        say(note)
    if json_path is not None:
        report.save_json(json_path)
        say(f"JSON written to {json_path}")
    return report


def _shapes_of(kernel: str, shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, ...]]:
    if ndim(kernel) == 1:
        sizes = [s for s in shapes if len(s) == 1]
        return sizes or [(int(np.prod(s)),) for s in shapes]
    return [s for s in shapes if len(s) == 2]


def _case(table, names, kernel, dtype, shape, threads, runners, rounds, gap) -> list[dict]:
    data = case_inputs(kernel, shape, dtype)[0]
    source = next(a for a in data.values() if a.dtype == np.dtype(dtype))
    scratch = touched(source.shape, source.dtype)
    copy = partial(np.copyto, scratch, source)
    rows = []
    for name in names:
        entry = table[kernel].get(name)
        if entry is None:
            continue
        mode = "out" if "out" in entry.modes else entry.modes[0]
        for n_threads in threads if entry.threaded else threads[:1]:
            run = make_runner(kernel, name, shape, dtype, mode, n_threads, table=table, copies=1)
            if run is None:
                continue
            alone = measure({"kernel": run}, rounds=max(3, rounds // 2), min_time=0.005)
            for neighbour, neighbour_run in runners.items():
                found = interleave(run, neighbour_run, copy, rounds, gap)
                rows.append(
                    {
                        "kernel": kernel,
                        "dtype": dtype,
                        "shape": list(shape),
                        "implementation": name,
                        "mode": mode,
                        "n_threads": n_threads,
                        "neighbour": neighbour,
                        "neighbour_after_kernel_s": found["after"],
                        "neighbour_idle_s": found["idle"],
                        "neighbour_after_copy_s": found["copy"],
                        "ratio_vs_idle": found["after"] / found["idle"],
                        "ratio_vs_copy": found["after"] / found["copy"],
                        "kernel_interleaved_s": found["kernel"],
                        "kernel_alone_s": alone["kernel"].median,
                        "kernel_ratio": found["kernel"] / alone["kernel"].median,
                    }
                )
    return rows
