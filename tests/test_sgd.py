"""sgd_update against torch.optim.SGD: its formula worked out by hand, and torch as oracle."""

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


# -- dampening, maximize, first_step: torch.optim.SGD as the oracle ------------------------------

TORCH_STEPS = 4
#: Every combination torch accepts (nesterov needs momentum and no dampening).
TORCH_CASES = [
    (momentum, dampening, nesterov, maximize, weight_decay)
    for momentum in (0.0, 0.9)
    for dampening in (0.0, 0.5)
    for nesterov in (False, True)
    for maximize in (False, True)
    for weight_decay in (0.0, 1e-2)
    if not (nesterov and (momentum == 0 or dampening > 0))
]


def torch_tolerance(expected: np.ndarray, dtype) -> dict:
    """Both sides compute the same formula in the same dtype, each operation correctly rounded;
    they differ only where one fuses a multiply-add (an FMA) that the other rounds twice (or
    rounds ``-grad + wd p`` in another order), by about an ulp of an operand per operation,
    and the values are of order 1 (standard normal parameters and gradients, lr 0.1). Measured
    over these cases: at most 1 eps of the largest |value| on every backend. Bound: 8 eps,
    relative and absolute (scaled by the largest |value|: cancellation in ``p - lr * step``
    near 0 is absolute), i.e. 1.8e-15 in float64 and 9.5e-7 in float32."""
    tol = 8 * np.finfo(dtype).eps
    return dict(rtol=tol, atol=tol * max(1.0, float(np.max(np.abs(expected)))))


@pytest.mark.parametrize(
    ("momentum", "dampening", "nesterov", "maximize", "weight_decay"),
    TORCH_CASES,
    ids=[
        f"mu{m}-damp{d}-{'nesterov' if n else 'plain'}-{'max' if x else 'min'}-wd{w}"
        for m, d, n, x, w in TORCH_CASES
    ],
)
def test_steps_match_torch_sgd(
    momentum, dampening, nesterov, maximize, weight_decay, backend, dtype, rng
):
    torch = pytest.importorskip("torch")
    options = dict(
        lr=0.1,
        momentum=momentum,
        dampening=dampening,
        nesterov=nesterov,
        maximize=maximize,
        weight_decay=weight_decay,
    )
    start = rng.standard_normal(SHAPE).astype(dtype)
    grads = rng.standard_normal((TORCH_STEPS, *SHAPE)).astype(dtype)
    theirs = torch.nn.Parameter(torch.from_numpy(start.copy()))
    optimizer = torch.optim.SGD([theirs], **options, foreach=False)  # _single_tensor_sgd
    param = start.copy()
    velocity = np.zeros_like(param) if momentum else None
    for step, grad in enumerate(grads):
        theirs.grad = torch.from_numpy(grad.copy())
        optimizer.step()
        fastsoftmax.sgd_update(
            param, grad, **options, velocity=velocity, first_step=step == 0, backend=backend
        )
    what = f"{TORCH_STEPS} steps of {options}, backend={backend}, dtype={np.dtype(dtype)}"
    expected = theirs.detach().numpy()
    assert param.dtype == dtype
    assert_allclose(param, expected, **torch_tolerance(expected, dtype), err_msg=f"{what}: param")
    if momentum:
        buffer = optimizer.state[theirs]["momentum_buffer"].numpy()
        assert_allclose(velocity, buffer, **torch_tolerance(buffer, dtype), err_msg=what)


@pytest.mark.parametrize("nesterov", [False, True])
def test_first_step_overwrites_velocity_and_is_moot_without_dampening(
    nesterov, backend, dtype, rng
):
    """first_step=True ignores what velocity held; with dampening 0 it gives the same bits as a
    zero velocity without it."""
    start = rng.standard_normal(SHAPE).astype(dtype)
    grad = rng.standard_normal(SHAPE).astype(dtype)
    options = dict(lr=0.1, momentum=0.9, weight_decay=0.01, nesterov=nesterov, backend=backend)
    results = []
    for first_step, fill in ((False, 0.0), (True, np.nan), (True, 5.0)):
        param, velocity = start.copy(), np.full(SHAPE, fill, dtype)
        fastsoftmax.sgd_update(param, grad, velocity=velocity, first_step=first_step, **options)
        results.append((param, velocity))
    for param, velocity in results[1:]:
        assert_array_equal(param, results[0][0])
        assert_array_equal(velocity, results[0][1])


def test_damped_first_step_sets_velocity_to_the_gradient(backend, dtype, rng):
    start = rng.standard_normal(SHAPE).astype(dtype)
    grad = rng.standard_normal(SHAPE).astype(dtype)
    param, velocity = start.copy(), np.full(SHAPE, np.inf, dtype)
    fastsoftmax.sgd_update(
        param,
        grad,
        lr=0.5,
        momentum=0.9,
        dampening=0.5,
        velocity=velocity,
        first_step=True,
        backend=backend,
    )
    assert_array_equal(velocity, grad)
    assert_close(param, start - dtype(0.5) * grad, dtype, "damped first step")
    fastsoftmax.sgd_update(
        param, grad, lr=0.5, momentum=0.9, dampening=0.5, velocity=velocity, backend=backend
    )
    assert_close(velocity, 1.4 * grad.astype(np.float64), dtype, "damped second step: velocity")


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_maximize_is_the_step_with_the_negated_gradient(momentum, backend, dtype, rng):
    start = rng.standard_normal(SHAPE).astype(dtype)
    grad = rng.standard_normal(SHAPE).astype(dtype)
    options = dict(lr=0.1, momentum=momentum, weight_decay=0.01, dampening=0.25, backend=backend)
    results = []
    for maximize, g in ((True, grad), (False, -grad)):
        param = start.copy()
        velocity = np.ones_like(param) if momentum else None
        fastsoftmax.sgd_update(param, g, velocity=velocity, maximize=maximize, **options)
        results.append((param, velocity))
    assert_array_equal(results[0][0], results[1][0])
    if momentum:
        assert_array_equal(results[0][1], results[1][1])


def test_velocity_untouched_without_momentum_whatever_the_new_options(backend):
    param, grad = np.ones(4), np.full(4, 0.5)
    velocity = np.full(4, SENTINEL)
    fastsoftmax.sgd_update(
        param,
        grad,
        lr=0.1,
        momentum=0.0,
        dampening=0.5,
        first_step=True,
        velocity=velocity,
        backend=backend,
    )
    assert_array_equal(velocity, SENTINEL)
    assert_allclose(param, 0.95, rtol=1e-15)


BAD_NEW_OPTIONS = [
    (dict(dampening=-0.1), ValueError, r"dampening must be a finite number in \[0, 1\]"),
    (dict(dampening=1.5), ValueError, r"dampening must be a finite number in \[0, 1\]"),
    (dict(dampening=float("nan")), ValueError, "dampening must be a finite number"),
    (dict(dampening=float("inf")), ValueError, "dampening must be a finite number"),
    (dict(dampening="0.5"), TypeError, "dampening must be a real number, got str"),
    (dict(dampening=True), TypeError, "dampening must be a real number, got bool"),
    (dict(maximize=1), TypeError, "maximize must be a bool, got int"),
    (dict(maximize="yes"), TypeError, "maximize must be a bool, got str"),
    (dict(maximize=None), TypeError, "maximize must be a bool, got NoneType"),
    (dict(first_step=0), TypeError, "first_step must be a bool, got int"),
    (dict(first_step=np.array([True])), TypeError, "first_step must be a bool, got ndarray"),
    (dict(nesterov=True, dampening=0.5), ValueError, r"nesterov=True needs dampening=0.*0\.5"),
    (dict(nesterov=True, dampening=1), ValueError, r"nesterov=True needs dampening=0"),
]


@pytest.mark.parametrize(("options", "error", "message"), BAD_NEW_OPTIONS)
def test_new_options_are_validated_before_anything_is_written(options, error, message, backend):
    param, velocity = np.ones(3), np.zeros(3)
    with pytest.raises(error, match=message):
        fastsoftmax.sgd_update(
            param,
            np.ones(3),
            lr=0.1,
            momentum=0.9,
            velocity=velocity,
            backend=backend,
            **options,
        )
    assert_array_equal(param, 1.0)
    assert_array_equal(velocity, 0.0)


def test_new_options_accept_numpy_scalars_and_the_interval_ends(backend):
    param, velocity = np.ones(3), np.zeros(3)
    fastsoftmax.sgd_update(
        param,
        np.ones(3),
        lr=0.5,
        momentum=0.5,
        velocity=velocity,
        dampening=np.float32(1.0),
        maximize=np.bool_(True),
        first_step=np.bool_(False),
        backend=backend,
    )
    assert_array_equal(velocity, 0.0)  # 0.5 * 0 + (1 - 1) * (-1)
    assert_array_equal(param, 1.0)
