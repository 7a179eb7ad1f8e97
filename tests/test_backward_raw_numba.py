"""The Numba raw kernels softmax_backward and log_softmax_backward, called directly, against the
formulas worked out in float64 with NumPy:

* softmax_backward: grad_input = output * (grad_output - sum_j grad_output[j] * output[j]);
* log_softmax_backward: grad_input = grad_output - exp(output) * sum_j grad_output[j];

row by row, including in place (grad_input is grad_output, or is output) and on 1 and 2 threads.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_backend

from fastsoftmax import backends

KERNELS = ("softmax_backward", "log_softmax_backward")
# One row and one column; narrower and wider than a vector; the narrow-row limit (32) of the other
# kernels; wide rows.
SHAPES = [(1, 1), (5, 1), (130, 7), (65, 31), (64, 32), (33, 33), (9, 1000), (3, 20000)]
TOLERANCE = {np.float32: 1e-5, np.float64: 1e-12}  # relative to max(1, |reference|)


@pytest.fixture(scope="module")
def kernels():
    return backends.load(require_backend("numba"))


def reference(kernel: str, grad_output: np.ndarray, output: np.ndarray) -> np.ndarray:
    dy, y = grad_output.astype(np.float64), output.astype(np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf and 0 * inf make the NaN the kernel must too
        if kernel == "softmax_backward":
            return y * (dy - np.sum(dy * y, axis=1, keepdims=True))
        return dy - np.exp(y) * np.sum(dy, axis=1, keepdims=True)


def assert_matches(got: np.ndarray, expected: np.ndarray, dtype, what: str) -> None:
    """NaN where the reference has NaN, the same infinities, and the rest within TOLERANCE."""
    got = got.astype(np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(expected)), f"{what}: NaN in other places"
    infinite = np.isinf(expected)
    assert np.array_equal(got[infinite], expected[infinite]), f"{what}: infinities differ"
    finite = np.isfinite(expected)
    error = np.abs(got[finite] - expected[finite]) / np.maximum(1.0, np.abs(expected[finite]))
    worst = error.max(initial=0.0)
    assert np.all(error <= TOLERANCE[dtype]), f"{what}: relative error {worst:.3g}"


def problem(kernel: str, shape, dtype, rng, realistic: bool = True):
    """(grad_output, output): output is softmax(z) or log_softmax(z) of random z if ``realistic``,
    else standard normal like grad_output."""
    grad_output = rng.standard_normal(shape).astype(dtype)
    if not realistic:
        return grad_output, rng.standard_normal(shape).astype(dtype)
    z = 3 * rng.standard_normal(shape)
    log_p = z - z.max(axis=1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    output = np.exp(log_p) if kernel == "softmax_backward" else log_p
    return grad_output, output.astype(dtype)


def call(kernels, kernel, grad_output, output, n_threads, alias="none"):
    """grad_input after the kernel; grad_output and output are not modified (copies are)."""
    dy, y = grad_output.copy(), output.copy()
    grad_input = {"none": np.full_like(dy, np.nan), "grad_output": dy, "output": y}[alias]
    getattr(kernels, kernel)(dy, y, grad_input, n_threads)
    return grad_input


@pytest.mark.parametrize("alias", ["none", "grad_output", "output"])
@pytest.mark.parametrize("n_threads", [1, 2])
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{n}x{k}" for n, k in SHAPES])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_backward_matches_the_formula(kernels, kernel, dtype, shape, n_threads, alias):
    rng = np.random.default_rng([len(kernel), *shape, n_threads, len(alias)])
    for realistic in (True, False):
        grad_output, output = problem(kernel, shape, dtype, rng, realistic)
        got = call(kernels, kernel, grad_output, output, n_threads, alias)
        assert got.dtype == dtype
        what = f"{kernel} {shape} {np.dtype(dtype)} threads={n_threads} in place={alias}"
        assert_matches(got, reference(kernel, grad_output, output), dtype, what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_backward_propagates_nan_and_inf(kernels, kernel, dtype):
    rng = np.random.default_rng(7)
    grad_output, output = problem(kernel, (6, 40), dtype, rng)
    grad_output[0, 3] = np.nan
    grad_output[1, 5] = np.inf
    output[2, 7] = np.nan
    output[3, 0] = np.inf
    output[4, 1] = -np.inf  # a zero probability; log_softmax's exp(-inf) = 0
    expected = reference(kernel, grad_output, output)
    assert not np.isfinite(expected[:4]).all(axis=1).any(), "each of rows 0-3 has a non-finite"
    for n_threads in (1, 2):
        got = call(kernels, kernel, grad_output, output, n_threads)
        assert_matches(got, expected, dtype, f"{kernel} {np.dtype(dtype)} threads={n_threads}")


@pytest.mark.parametrize("kernel", KERNELS)
def test_backward_rows_agree_bitwise_across_threads_and_leave_the_thread_count(kernels, kernel):
    import numba

    before = numba.get_num_threads()
    grad_output, output = problem(kernel, (257, 50), np.float32, np.random.default_rng(3))
    one = call(kernels, kernel, grad_output, output, 1)
    assert numba.get_num_threads() == before
    two = call(kernels, kernel, grad_output, output, 2)
    assert numba.get_num_threads() == before
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_the_comparison_rejects_an_error_just_above_the_tolerance(dtype):
    expected = np.array([[0.5, -3.0, 200.0]])
    assert_matches(expected.astype(dtype), expected, dtype, "exact")
    for j, scale in ((0, 1.0), (2, 200.0)):  # absolute below 1, relative above
        wrong = expected.copy()
        wrong[0, j] += 3 * TOLERANCE[dtype] * scale
        with pytest.raises(AssertionError):
            assert_matches(wrong, expected, dtype, "wrong")
    with pytest.raises(AssertionError):
        assert_matches(np.array([[np.nan, -3.0, 200.0]]), expected, dtype, "NaN")
