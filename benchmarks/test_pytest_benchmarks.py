"""pytest-benchmark suite: the shared registry on the grid of :mod:`benchmarks.common`.

Grouped ``kernel|dtype|shape``; the implementation, threads, mode and bytes moved are in
``extra_info`` (GB/s too after a timed run). With ``--benchmark-disable`` (or without
pytest-benchmark installed) every case runs once as a plain test::

    python -m pytest benchmarks --benchmark-enable --benchmark-autosave
    python -m pytest benchmarks --benchmark-enable --benchmark-compare --benchmark-group-by=group
    python -m pytest benchmarks --benchmark-disable -q          # smoke: each case once
"""

from __future__ import annotations

import pytest

from . import common


@pytest.mark.parametrize("case", list(common.cases()), ids=common.case_id)
def test_kernel(benchmark, case):
    kernel, implementation, dtype, shape, threads, mode = case
    run = common.runner(*case)  # warmed up: compilation is never timed
    if run is None:
        pytest.skip(f"{implementation} cannot run {kernel} {dtype} {mode} here")
    moved = common.bytes_moved(kernel, shape, dtype)
    benchmark.group = f"{kernel}|{dtype}|{shape}"
    benchmark.extra_info.update(
        backend=implementation, threads=threads, mode=mode, bytes_moved=moved
    )
    benchmark(run)
    stats = getattr(benchmark, "stats", None)  # None when benchmarks are disabled
    if stats is not None and moved:
        benchmark.extra_info["gbps"] = moved / stats.stats.median / 1e9
