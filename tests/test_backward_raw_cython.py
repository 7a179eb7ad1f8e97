"""The Cython raw kernels softmax_backward and log_softmax_backward against their formulas
computed in float64 NumPy, on random rows: narrow, wide, one column; one and two threads; and in
place (grad_input is grad_output, or is output)."""

from __future__ import annotations

import numpy as np
import pytest

cython_kernels = pytest.importorskip("fastsoftmax.backends.cython_kernels")

SHAPES = [(1, 1), (7, 1), (5, 3), (130, 10), (65, 31), (64, 32), (9, 33), (3, 1000), (2, 4099)]
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}


def softmax_backward_reference(grad_output, output):
    g, y = grad_output.astype(np.float64), output.astype(np.float64)
    return y * (g - (g * y).sum(axis=1, keepdims=True))


def log_softmax_backward_reference(grad_output, output):
    g, y = grad_output.astype(np.float64), output.astype(np.float64)
    return g - np.exp(y) * g.sum(axis=1, keepdims=True)


KERNELS = {
    "softmax_backward": softmax_backward_reference,
    "log_softmax_backward": log_softmax_backward_reference,
}


def inputs(kernel, shape, dtype, seed):
    """Random grad_output and an output of the forward kernel (softmax or log-softmax)."""
    rng = np.random.default_rng([seed, *shape])
    x = 3 * rng.standard_normal(shape)
    log_y = x - x.max(axis=1, keepdims=True)
    log_y -= np.log(np.exp(log_y).sum(axis=1, keepdims=True))
    output = np.exp(log_y) if kernel == "softmax_backward" else log_y
    grad_output = rng.standard_normal(shape)
    return grad_output.astype(dtype), output.astype(dtype)


def assert_close(got, expected, dtype, what):
    error = np.abs(got.astype(np.float64) - expected) / np.maximum(1.0, np.abs(expected))
    assert error.max() <= TOLERANCE[dtype], f"{what}: max error {error.max():.3g}"


@pytest.mark.parametrize("where", ["new", "grad_output", "output"])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{n}x{k}" for n, k in SHAPES])
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_backward_matches_its_formula(kernel, shape, dtype, n_threads, where):
    grad_output, output = inputs(kernel, shape, dtype, seed=0)
    # the reference is computed from copies, before an in-place call overwrites its inputs
    expected = KERNELS[kernel](grad_output.copy(), output.copy())
    grad_input = {"new": np.empty_like(output), "grad_output": grad_output, "output": output}[where]
    getattr(cython_kernels, kernel)(grad_output, output, grad_input, n_threads)
    assert_close(grad_input, expected, dtype, f"{kernel} {shape} {where} threads={n_threads}")


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_backward_checks_fail_on_a_wrong_result(kernel):
    """The comparison above can fail: a result off by one float32 rounding step is caught."""
    grad_output, output = inputs(kernel, (4, 40), np.float32, seed=1)
    expected = KERNELS[kernel](grad_output, output)
    wrong = (expected * (1 + 1e-4)).astype(np.float32)
    with pytest.raises(AssertionError):
        assert_close(wrong, expected, np.float32, kernel)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kernel", list(KERNELS))
def test_backward_propagates_nan_and_inf(kernel, dtype):
    grad_output, output = inputs(kernel, (3, 40), dtype, seed=2)
    grad_output[0, 5] = np.nan
    grad_output[1, 7] = np.inf
    grad_input = np.empty_like(output)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = KERNELS[kernel](grad_output, output)
    getattr(cython_kernels, kernel)(grad_output, output, grad_input, 1)
    np.testing.assert_array_equal(np.isnan(grad_input), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(grad_input), np.isinf(expected))
    finite = np.isfinite(expected)
    assert_close(grad_input[finite], expected[finite], dtype, f"{kernel}: finite entries")


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_backward_rows_are_split_over_threads_without_gaps(kernel):
    """More rows than one thread's share, of float64: every row is written, by either thread."""
    grad_output, output = inputs(kernel, (1001, 50), np.float64, seed=3)
    grad_input = np.full_like(output, np.nan)
    getattr(cython_kernels, kernel)(grad_output, output, grad_input, 2)
    assert_close(grad_input, KERNELS[kernel](grad_output, output), np.float64, kernel)
