"""sgd_update against torch.optim.SGD's formula (dampening 0), worked out here step by step."""

from __future__ import annotations

import numpy as np
import pytest
from cases import assert_close
from numpy.testing import assert_allclose, assert_array_equal

import fastsoftmax

SHAPE = (6, 5)
SENTINEL = -7.0


def sgd_by_hand(param, grads, *, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    """(param, velocity) after one step per gradient in ``grads``, in float64."""
    p = np.asarray(param, dtype=np.float64).copy()
    v = np.zeros_like(p)
    for grad in grads:
        g = grad + weight_decay * p
        if momentum == 0:
            step = g
        else:
            v = momentum * v + g
            step = g + momentum * v if nesterov else v
        p = p - lr * step
    return p, v


def laid_out(values: np.ndarray, layout: str):
    """(array holding ``values`` in ``layout``, the bigger array it is a view of, or None)."""
    if layout == "C":
        return np.ascontiguousarray(values), None
    if layout == "fortran":
        return np.asfortranarray(values), None
    big = np.full((2 * values.shape[0], 3 * values.shape[1]), SENTINEL, values.dtype)
    big[::2, ::3] = values
    return big[::2, ::3], big


def run_steps(param, grads, velocity, options, backend):
    for grad in grads:
        fastsoftmax.sgd_update(param, grad, velocity=velocity, **options, backend=backend)


OPTIONS = {
    "plain": dict(lr=0.1),
    "weight-decay": dict(lr=0.1, weight_decay=0.05),
    "momentum": dict(lr=0.1, momentum=0.9),
    "momentum-weight-decay": dict(lr=0.05, momentum=0.9, weight_decay=0.05),
    "nesterov": dict(lr=0.1, momentum=0.9, nesterov=True),
    "nesterov-weight-decay": dict(lr=0.05, momentum=0.5, weight_decay=0.1, nesterov=True),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_three_steps_match_the_formula(name, backend, dtype, rng):
    options = OPTIONS[name]
    param = rng.standard_normal(SHAPE).astype(dtype)
    grads = rng.standard_normal((3, *SHAPE)).astype(dtype)
    expected_param, expected_velocity = sgd_by_hand(param, grads, **options)
    velocity = np.zeros_like(param) if options.get("momentum") else None
    run_steps(param, grads, velocity, options, backend)
    what = f"sgd_update({name}), 3 steps, backend={backend}, dtype={np.dtype(dtype)}"
    assert param.dtype == dtype
    assert_close(param, expected_param, dtype, f"{what}: param")
    if velocity is not None:
        assert_close(velocity, expected_velocity, dtype, f"{what}: velocity")


LAYOUT_PAIRS = [(p, g) for p in ("C", "fortran", "strided") for g in ("C", "fortran", "strided")]


@pytest.mark.parametrize(("param_layout", "grad_layout"), LAYOUT_PAIRS)
def test_every_layout_of_param_and_grad(param_layout, grad_layout, backend, dtype, rng):
    """param and velocity in one layout, grad in another; views must not write outside."""
    options = OPTIONS["nesterov-weight-decay"]
    values = rng.standard_normal(SHAPE).astype(dtype)
    grads = rng.standard_normal((3, *SHAPE)).astype(dtype)
    expected_param, expected_velocity = sgd_by_hand(values, grads, **options)
    param, param_big = laid_out(values, param_layout)
    velocity, velocity_big = laid_out(np.zeros_like(values), param_layout)
    run_steps(param, [laid_out(g, grad_layout)[0] for g in grads], velocity, options, backend)
    what = f"param {param_layout}, grad {grad_layout}, backend={backend}"
    assert_close(param, expected_param, dtype, f"{what}: param")
    assert_close(velocity, expected_velocity, dtype, f"{what}: velocity")
    for big in (param_big, velocity_big):
        if big is not None:
            big[::2, ::3] = SENTINEL
            assert (big == SENTINEL).all(), f"{what}: wrote outside the view"


def test_two_momentum_steps_by_hand(backend):
    w, v = np.array([1.0, 2.0]), np.zeros(2)
    fastsoftmax.sgd_update(w, np.ones(2), lr=0.5, momentum=0.9, velocity=v, backend=backend)
    assert_allclose(w, [0.5, 1.5], rtol=1e-15)
    assert_allclose(v, [1.0, 1.0], rtol=1e-15)
    fastsoftmax.sgd_update(w, np.ones(2), lr=0.5, momentum=0.9, velocity=v, backend=backend)
    assert_allclose(v, [1.9, 1.9], rtol=1e-15)  # 0.9 * 1 + 1
    assert_allclose(w, [-0.45, 0.55], rtol=1e-14)  # 0.5 - 0.5 * 1.9


def test_velocity_untouched_without_momentum(backend, dtype, rng):
    param = rng.standard_normal(SHAPE).astype(dtype)
    grad = rng.standard_normal(SHAPE).astype(dtype)
    expected, _ = sgd_by_hand(param, [grad], lr=0.1, weight_decay=0.01)
    velocity = np.full(SHAPE, SENTINEL, dtype)
    fastsoftmax.sgd_update(
        param, grad, lr=0.1, weight_decay=0.01, velocity=velocity, backend=backend
    )
    assert_array_equal(velocity, SENTINEL)
    assert_close(param, expected, dtype, "plain step with an unused velocity")


def test_grad_may_be_param_itself(backend, dtype, rng):
    param = rng.standard_normal(SHAPE).astype(dtype)
    expected = param * (1 - 0.1 * (1 + 0.5))
    fastsoftmax.sgd_update(param, param, lr=0.1, weight_decay=0.5, backend=backend)
    assert_close(param, expected, dtype, "grad=param")


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_grad_overlapping_param(momentum, backend, dtype, rng):
    """grad is param shifted by one element: each element updated is the next grad read."""
    big = rng.standard_normal(31).astype(dtype)
    param, grad = big[1:], big[:-1]
    expected, _ = sgd_by_hand(param, [grad.copy()], lr=0.1, momentum=momentum)
    velocity = np.zeros_like(param) if momentum else None
    fastsoftmax.sgd_update(
        param, grad, lr=0.1, momentum=momentum, velocity=velocity, backend=backend
    )
    assert_close(param, expected, dtype, f"grad overlapping param, momentum={momentum}")


def test_grad_is_not_modified_and_empty_param_is_a_no_op(backend, dtype, rng):
    param = rng.standard_normal(SHAPE).astype(dtype)
    grad = rng.standard_normal(SHAPE).astype(dtype)
    grad_copy = grad.copy()
    fastsoftmax.sgd_update(param, grad, lr=0.1, backend=backend)
    assert_array_equal(grad, grad_copy)
    empty = np.empty((0, 3), dtype)
    fastsoftmax.sgd_update(
        empty, empty.copy(), lr=0.1, momentum=0.5, velocity=empty.copy(), backend=backend
    )
    assert empty.shape == (0, 3)
