"""Timing helpers and the quick backend comparison printed by ``python -m fastsoftmax info``."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from fastsoftmax import _api
from fastsoftmax.backends import available_backends

QUICK_CASES = (
    ("softmax", (4096, 1000), "float32"),
    ("softmax", (1_000_000, 10), "float64"),
    ("softmax_cross_entropy", (4096, 1000), "float32"),
    ("softmax_cross_entropy", (1_000_000, 10), "float64"),
)


def kernel_call(kernel: str, shape: tuple, dtype: str, backend: str, seed: int = 0) -> Callable:
    """A no-argument callable running ``kernel`` on fresh random data into preallocated outputs.

    Outputs are preallocated (``out=``/``grad_out=``) so that the page faults of a fresh
    multi-megabyte array, which cost as much as the kernel itself, are not timed.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    out = np.empty_like(x)
    if kernel == "softmax_cross_entropy":
        labels = rng.integers(0, shape[1], shape[0])
        return lambda: _api.softmax_cross_entropy(x, labels, grad_out=out, backend=backend)
    function = getattr(_api, kernel)
    return lambda: function(x, out=out, backend=backend)


def compare(cases=QUICK_CASES, backends: list[str] | None = None, rounds: int = 7) -> list[dict]:
    """Median seconds per (kernel, shape, dtype, backend), backends interleaved in rounds.

    Each call is made once first so that compilation (Numba) is never timed; then every round
    times each backend once, so that a noisy phase of the machine hits all of them alike.
    """
    backends = available_backends() if backends is None else backends
    rows = []
    for kernel, shape, dtype in cases:
        calls = {name: kernel_call(kernel, shape, dtype, name) for name in backends}
        for call in calls.values():
            call()
        times: dict[str, list[float]] = {name: [] for name in backends}
        for _ in range(rounds):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        reference = float(np.median(times["numpy"])) if "numpy" in times else None
        for name in backends:
            median = float(np.median(times[name]))
            rows.append(
                {
                    "kernel": kernel,
                    "shape": shape,
                    "dtype": dtype,
                    "backend": name,
                    "median_s": median,
                    "spread_s": float(np.ptp(times[name])),
                    "speedup_vs_numpy": reference / median if reference else None,
                }
            )
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [
        f"{'kernel':<22} {'shape':<13} {'dtype':<8} {'backend':<7} "
        f"{'median':>10} {'spread':>10} {'vs numpy':>9}"
    ]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        speedup = f"{r['speedup_vs_numpy']:.1f}x" if r["speedup_vs_numpy"] else "-"
        lines.append(
            f"{r['kernel']:<22} {shape:<13} {r['dtype']:<8} {r['backend']:<7} "
            f"{r['median_s'] * 1e3:>8.2f}ms {r['spread_s'] * 1e3:>8.2f}ms {speedup:>9}"
        )
    return "\n".join(lines)
