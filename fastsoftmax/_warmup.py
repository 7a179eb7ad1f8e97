"""Ahead-of-time warm-up: compile and exercise every kernel of the chosen backends."""

from __future__ import annotations

import time

import numpy as np

from fastsoftmax import _api
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
    for name in available_backends() if backends is None else backends:
        start = time.perf_counter()
        for dtype in (np.float32, np.float64):
            x = np.ones((2, 3), dtype)
            _api.logsumexp(x, backend=name)
            _api.softmax(x, backend=name)
            _api.log_softmax(x, backend=name)
            _api.softmax_cross_entropy(x, np.array([0, 2]), backend=name)
            _api.softmax_cross_entropy(x, np.full_like(x, 1 / 3), backend=name)
            param = np.ones(4, dtype)
            _api.sgd_update(param, param.copy(), lr=0.1, backend=name)
            _api.sgd_update(
                param,
                param.copy(),
                lr=0.1,
                momentum=0.9,
                velocity=np.zeros_like(param),
                backend=name,
            )
        seconds[name] = time.perf_counter() - start
    return seconds
