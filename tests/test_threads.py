"""Thread count changes nothing but speed: n_threads=1, 2 and far more than the machine has give
the same results on arrays large enough to run in parallel (> 2**15 elements)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from cases import assert_close

import fastsoftmax
from fastsoftmax import backends

N, K = 300, 200  # 60,000 elements: above the 2**15 at which the kernels start threads


def run(kernel: str, data: dict, n_threads: int, backend: str) -> list[np.ndarray]:
    """Results of ``kernel`` on fresh copies of ``data``, as a list of arrays."""
    x, labels, soft = data["x"].copy(), data["labels"], data["soft"]
    options = dict(n_threads=n_threads, backend=backend)
    if kernel in ("logsumexp", "softmax", "log_softmax"):
        return [getattr(fastsoftmax, kernel)(x, **options)]
    if kernel == "cross_entropy_labels":
        return list(fastsoftmax.softmax_cross_entropy(x, labels, reduction="none", **options))
    if kernel == "cross_entropy_soft":
        return list(fastsoftmax.softmax_cross_entropy(x, soft, label_smoothing=0.1, **options))
    velocity = np.zeros_like(x) if kernel == "sgd_momentum" else None
    momentum = 0.9 if kernel == "sgd_momentum" else 0.0
    fastsoftmax.sgd_update(
        x, soft, lr=0.1, momentum=momentum, velocity=velocity, weight_decay=0.01, **options
    )
    return [x] if velocity is None else [x, velocity]


@pytest.mark.parametrize("kernel", backends.RAW_KERNELS)
def test_thread_count_does_not_change_results(kernel, backend, dtype, caplog):
    rng = np.random.default_rng(7)
    data = dict(
        x=(3 * rng.standard_normal((N, K))).astype(dtype),
        labels=rng.integers(0, K, N),
        soft=rng.dirichlet(np.ones(K), N).astype(dtype),
    )
    one_thread = run(kernel, data, 1, backend)
    cap = backends.load(backend).max_threads()
    for n_threads in (2, 10**6):
        with caplog.at_level(logging.DEBUG, logger="fastsoftmax"):
            caplog.clear()
            got = run(kernel, data, n_threads, backend)
        assert f"with {min(n_threads, cap)} thread" in caplog.text, caplog.text
        for result, expected in zip(got, one_thread, strict=True):
            what = f"{kernel}, backend={backend}, n_threads={n_threads} vs 1"
            assert_close(result, expected, dtype, what)
