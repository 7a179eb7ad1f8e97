"""Thread count changes nothing but speed: n_threads=1, 2 and far more than the machine has give
the same results, for every registered kernel, on arrays large enough to run in parallel
(> 2**15 elements)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from cases import assert_close

from fastsoftmax import backends
from fastsoftmax._registry import KERNELS, make_inputs

SHAPE = (300, 200)  # 60,000 elements: above the 2**15 at which the kernels start threads


def run(kernel: str, data: dict, n_threads: int, backend: str) -> list[np.ndarray]:
    """Results of ``kernel`` on fresh copies of ``data`` (some kernels update in place)."""
    fresh = {name: array.copy() for name, array in data.items()}
    return list(KERNELS[kernel].call(fresh, n_threads=n_threads, backend=backend))


@pytest.mark.parametrize("kernel", KERNELS)
def test_thread_count_does_not_change_results(kernel, backend, dtype, caplog):
    data = make_inputs(KERNELS[kernel].inputs, SHAPE, dtype, np.random.default_rng(7))
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


def test_fit_limits_blas_to_one_thread_while_fused_kernels_run_threaded(backend, monkeypatch):
    """BLAS threads times kernel threads never exceed the cores during a fit: while the fused
    kernel runs on several threads, threadpoolctl reports one BLAS thread (and the caller's
    setting again after the fit)."""
    from threadpoolctl import threadpool_info

    from fastsoftmax import SoftmaxRegression, _data, _linear

    def blas_threads():
        return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]

    before = blas_threads()
    if not before or max(before) < 2:
        pytest.skip("BLAS runs on one thread here already")
    seen = []

    class Recording(_linear.LinearTerm):
        def gradients(self, *args, **kwargs):
            seen.append((self.method, self.threads, max(blas_threads())))
            return super().gradients(*args, **kwargs)

    monkeypatch.setattr(_data, "LinearTerm", Recording)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1024, 64), dtype=np.float32)
    y = rng.integers(0, 10, 1024)
    SoftmaxRegression(solver="sgd", max_epochs=1, backend=backend, n_threads=2).fit(X, y)
    assert seen, "the fit never called its linear term"
    for method, kernel_threads, blas in seen:
        assert kernel_threads * blas <= max(2, kernel_threads), (method, kernel_threads, blas)
    assert blas_threads() == before
