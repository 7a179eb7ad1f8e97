"""Ahead-of-time warm-up: compile (or load from Numba's cache) the kernels of chosen backends."""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np

from fastsoftmax._registry import DTYPES, KERNELS, make_inputs
from fastsoftmax.backends import available_backends


def warmup(
    backends: Iterable[str] | None = None,
    kernels: Iterable[str] | None = None,
    dtypes: Iterable[np.dtype | type | str] | None = None,
) -> dict[str, float]:
    """Run each kernel once per dtype, so that later calls start fast.

    Numba compiles a kernel for a dtype on its first call, or loads it from its on-disk cache
    (a fraction of a second) if an earlier process compiled it: ``warmup`` pays that ahead, for
    instance before timing. The other backends need no warm-up; their seconds are near zero.

    Parameters
    ----------
    backends : iterable of str, optional
        Backends to warm up; default every available one.
    kernels : iterable of str, optional
        Raw kernels to warm up, by their names in ``fastsoftmax._registry.KERNELS``
        (``"softmax"``, ``"cross_entropy_labels"``, ``"linear_cross_entropy"``, ...); default all.
    dtypes : iterable of dtype, optional
        Default float32 and float64.

    Returns
    -------
    dict
        Seconds spent per backend (for Numba: compiling, or loading its cache).

    Raises
    ------
    ValueError
        For an unknown or unavailable backend, or an unknown kernel or dtype.

    Examples
    --------
    >>> import fastsoftmax
    >>> sorted(fastsoftmax.warmup(["numpy"]))
    ['numpy']
    >>> list(fastsoftmax.warmup(["numpy"], kernels=["softmax"], dtypes=["float32"]))
    ['numpy']
    """
    chosen = list(KERNELS) if kernels is None else list(kernels)
    unknown = sorted(set(chosen) - set(KERNELS))
    if unknown:
        raise ValueError(f"kernels: unknown {unknown}; expected some of {list(KERNELS)}")
    chosen_dtypes = list(DTYPES) if dtypes is None else [np.dtype(d) for d in dtypes]
    if not set(chosen_dtypes) <= set(DTYPES):
        raise ValueError(f"dtypes: expected float32 and/or float64, got {chosen_dtypes}")
    rng = np.random.default_rng(0)
    inputs = {
        (family, dtype): make_inputs(family, (2, 3), dtype, rng)
        for family in {KERNELS[name].inputs for name in chosen}
        for dtype in chosen_dtypes
    }
    seconds = {}
    for backend in available_backends() if backends is None else backends:
        start = time.perf_counter()
        for name in chosen:
            kernel = KERNELS[name]
            for dtype in chosen_dtypes:
                kernel.call(inputs[kernel.inputs, dtype], kernel.modes[0], backend=backend)
        seconds[backend] = time.perf_counter() - start
    return seconds
