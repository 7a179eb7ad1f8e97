"""The backward kernels of the registry (every ``Kernel`` with ``vjp_of``), on every backend:
agreement with the float64 reference on every edge case, the gradient they claim against finite
differences of their forward function, in-place and overlapping outputs, and bad input refused
by name with nothing written.

A backward kernel registered in ``fastsoftmax._registry`` is tested here with no other change.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import assert_agrees, describe, edge_cases
from numpy.testing import assert_array_equal

import fastsoftmax
from fastsoftmax._registry import KERNELS

BACKWARD = [spec.public for spec in KERNELS.values() if spec.vjp_of]
CASES = list(edge_cases())


def forward_of(kernel: str):
    return getattr(fastsoftmax, KERNELS[kernel].vjp_of)


def reference(kernel: str, grad_output, output, axis=-1):
    """``kernel`` of the NumPy reference, evaluated in float64."""
    return getattr(fastsoftmax, kernel)(
        np.asarray(grad_output, np.float64),
        np.asarray(output, np.float64),
        axis=axis,
        backend="numpy",
    )


def test_every_backward_kernel_is_public_beside_its_forward_function():
    assert BACKWARD, "no backward kernel registered"
    for spec in KERNELS.values():
        if spec.vjp_of:
            assert {spec.public, spec.vjp_of} <= set(fastsoftmax.__all__), spec


@pytest.mark.parametrize("kernel", BACKWARD)
@pytest.mark.parametrize(("case", "x", "axis"), CASES, ids=[c[0] for c in CASES])
def test_backward_matches_float64_reference(kernel, case, x, axis, backend):
    """The edge case is the upstream gradient; the output is the forward function of it, so
    that non-finite gradients meet non-finite outputs in the same rows."""
    native = x.astype(x.dtype.newbyteorder("="))
    output = forward_of(kernel)(native, axis=axis, backend="numpy")
    before = x.copy()
    got = getattr(fastsoftmax, kernel)(x, output, axis=axis, backend=backend)
    what = f"{kernel}(case={case}, axis={axis}, {describe(x)}), backend={backend}"
    assert got.dtype == native.dtype and got.shape == x.shape, f"{what}: {got.dtype} {got.shape}"
    assert_agrees(got, reference(kernel, x, output, axis), what)
    assert_array_equal(x, before, err_msg=f"{what}: grad_output was modified")


@pytest.mark.parametrize("kernel", BACKWARD)
@pytest.mark.parametrize(("shape", "axis"), [((3, 5), -1), ((4, 3, 2), 1), ((6,), 0)])
def test_backward_is_the_gradient_of_its_forward_function(kernel, shape, axis, backend):
    """Central differences of ``sum(g * forward(x))``, one entry of ``x`` at a time.

    With step h = 1e-6 in float64 the truncation error is O(h**2) ~ 1e-12 and the rounding error
    about eps * |sum| / h ~ 1e-9 (sums of order 10), so 1e-7 separates a right gradient from a
    wrong one (a missing term is of order 0.1) with a wide margin.
    """
    rng = np.random.default_rng(11)
    x, g = rng.standard_normal(shape), rng.standard_normal(shape)
    forward = forward_of(kernel)

    def objective(z):
        return float(np.sum(g * forward(z, axis=axis, backend="numpy")))

    h = 1e-6
    numeric = np.empty_like(x)
    for index in np.ndindex(shape):
        step = np.zeros_like(x)
        step[index] = h
        numeric[index] = (objective(x + step) - objective(x - step)) / (2 * h)
    output = forward(x, axis=axis, backend=backend)
    got = getattr(fastsoftmax, kernel)(g, output, axis=axis, backend=backend)
    np.testing.assert_allclose(got, numeric, rtol=0, atol=1e-7, err_msg=f"{kernel}, {backend}")


def problem(kernel: str, dtype, shape=(6, 40)):
    rng = np.random.default_rng(5)
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    return g, forward_of(kernel)(x, backend="numpy")


@pytest.mark.parametrize("kernel", BACKWARD)
@pytest.mark.parametrize("into", ["grad_output", "output"])
def test_backward_in_place_gives_the_plain_result(kernel, into, backend, dtype):
    g, y = problem(kernel, dtype)
    expected = getattr(fastsoftmax, kernel)(g, y, backend=backend)
    arrays = {"grad_output": g.copy(), "output": y.copy()}
    got = getattr(fastsoftmax, kernel)(
        arrays["grad_output"], arrays["output"], out=arrays[into], backend=backend
    )
    assert got is arrays[into]
    assert_agrees(got, reference(kernel, g, y), f"{kernel} into {into}, {backend}")
    np.testing.assert_array_equal(got, expected, err_msg=f"{kernel} into {into}, {backend}")


@pytest.mark.parametrize("kernel", BACKWARD)
def test_backward_into_overlapping_or_odd_outputs(kernel, backend, dtype):
    g, y = problem(kernel, dtype, shape=(5, 4))
    expected = getattr(fastsoftmax, kernel)(g, y, backend="numpy")
    buffer = np.zeros(21, dtype)
    buffer[:20] = g.ravel()
    shifted = buffer[1:].reshape(5, 4)  # overlaps grad_output, shifted by one element
    outputs = {
        "overlapping": (buffer[:20].reshape(5, 4), shifted),
        "fortran": (g, np.asfortranarray(np.zeros_like(g))),
        "strided": (g, np.zeros((5, 8), dtype)[:, ::2]),
    }
    for name, (grad_output, out) in outputs.items():
        got = getattr(fastsoftmax, kernel)(grad_output, y, out=out, backend=backend)
        assert got is out
        assert_agrees(got, expected, f"{kernel} into a {name} output, {backend}")


def bad_calls(kernel: str):
    """(name, error, argument, keyword arguments) of calls that must be refused."""
    g, y = problem(kernel, np.float64, shape=(5, 4))
    read_only = np.zeros_like(g)
    read_only.flags.writeable = False
    return (
        [
            ("output-shape", ValueError, "output", dict(output=y[:, :3])),
            ("output-dtype", TypeError, "output", dict(output=y.astype(np.float32))),
            ("grad-complex", TypeError, "grad_output", dict(grad_output=g.astype(complex))),
            ("grad-ragged", ValueError, "grad_output", dict(grad_output=[[0.0, 1.0], [2.0]])),
            ("grad-masked", TypeError, "grad_output", dict(grad_output=np.ma.masked_less(g, 0))),
            ("out-shape", ValueError, "out", dict(out=np.zeros((4, 5)))),
            ("out-dtype", TypeError, "out", dict(out=np.zeros((5, 4), np.float32))),
            ("out-read-only", ValueError, "out", dict(out=read_only)),
            ("out-list", TypeError, "out", dict(out=[[0.0] * 4] * 5)),
            ("axis", ValueError, "axis", dict(axis=2)),
            ("axis-float", TypeError, "axis", dict(axis=1.0)),
            ("n-threads", ValueError, "n_threads", dict(n_threads=0)),
        ],
        g,
        y,
    )


BAD = [
    pytest.param(kernel, index, id=f"{kernel}-{case[0]}")
    for kernel in BACKWARD
    for index, case in enumerate(bad_calls(kernel)[0])
]


@pytest.mark.parametrize(("kernel", "index"), BAD)
def test_backward_refuses_bad_input_by_name_and_writes_nothing(kernel, index, backend):
    cases, g, y = bad_calls(kernel)
    _, error, argument, changes = cases[index]
    arguments = {"grad_output": g, "output": y, "out": np.full_like(g, -7.0), **changes}
    before = {k: np.copy(v) for k, v in arguments.items() if isinstance(v, np.ndarray)}
    with pytest.raises(error, match=argument):
        getattr(fastsoftmax, kernel)(**arguments, backend=backend)
    for name, value in before.items():
        assert_array_equal(arguments[name], value, err_msg=f"{name} was written")


@pytest.mark.parametrize("kernel", BACKWARD)
def test_backward_of_empty_and_integer_input(kernel, backend):
    empty = np.zeros((0, 3))
    assert getattr(fastsoftmax, kernel)(empty, empty, backend=backend).shape == (0, 3)
    g = np.array([[1, 0, 2]])  # integers are converted to float64, as for the forward kernels
    y = forward_of(kernel)(np.zeros((1, 3)), backend="numpy")
    got = getattr(fastsoftmax, kernel)(g, y, backend=backend)
    assert got.dtype == np.float64
    assert_agrees(got, reference(kernel, g, y), f"{kernel}, integer grad_output, {backend}")
