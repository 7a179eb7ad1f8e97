"""Ahead-of-time warm-up: compile and exercise every registered kernel of the chosen backends."""

from __future__ import annotations

import time

import numpy as np

from fastsoftmax._registry import DTYPES, KERNELS, make_inputs
from fastsoftmax.backends import available_backends


def warmup(backends: list[str] | None = None) -> dict[str, float]:
    """Compile (Numba) and run every kernel once per dtype, so later calls start fast.

    Parameters
    ----------
    backends : list of str, optional
        Backends to warm up; default every available one.

    Returns
    -------
    dict
        Seconds spent per backend (for Numba, mostly compilation).

    Examples
    --------
    >>> import fastsoftmax
    >>> sorted(fastsoftmax.warmup(["numpy"]))
    ['numpy']
    """
    seconds = {}
    rng = np.random.default_rng(0)
    families = {kernel.inputs for kernel in KERNELS.values()}
    inputs = {
        (family, dtype): make_inputs(family, (2, 3), dtype, rng)
        for family in families
        for dtype in DTYPES
    }
    for name in available_backends() if backends is None else backends:
        start = time.perf_counter()
        for kernel in KERNELS.values():
            for dtype in DTYPES:
                kernel.call(inputs[kernel.inputs, dtype], kernel.modes[0], backend=name)
        seconds[name] = time.perf_counter() - start
    return seconds
