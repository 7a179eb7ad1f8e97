"""Every backend against the NumPy reference evaluated in float64, on every edge case."""

from __future__ import annotations

import numpy as np
import pytest
from cases import UNARY_ROW_KERNELS, assert_agrees, describe, edge_cases

import fastsoftmax

CASES = list(edge_cases())
ROW_KERNELS = UNARY_ROW_KERNELS


def reference(kernel: str, *args, **kwargs):
    """``kernel`` of the public API run on the NumPy reference backend."""
    return getattr(fastsoftmax, kernel)(*args, **kwargs, backend="numpy")


@pytest.mark.parametrize("kernel", ROW_KERNELS)
@pytest.mark.parametrize(("case", "x", "axis"), CASES, ids=[c[0] for c in CASES])
def test_row_kernel_matches_float64_reference(kernel, case, x, axis, backend):
    before = x.copy()
    got = getattr(fastsoftmax, kernel)(x, axis=axis, backend=backend)
    what = f"{kernel}(case={case}, axis={axis}, {describe(x)}), backend={backend}"
    assert np.asarray(got).dtype == x.dtype.newbyteorder("="), f"{what}: dtype {got.dtype}"
    assert_agrees(got, reference(kernel, x.astype(np.float64), axis=axis), what)
    np.testing.assert_array_equal(x, before, err_msg=f"{what}: the input was modified")


def cross_entropy_problem(rng, dtype, soft: bool):
    n, k = 60, 7
    logits = (3 * rng.standard_normal((n, k))).astype(dtype)
    if soft:
        target = rng.dirichlet(np.ones(k), n).astype(dtype)
        target[:, 0] = 0  # zero entries: 0 log 0 = 0
    else:
        target = rng.integers(0, k, n)
        target[::5] = -100
    return logits, target, rng.random(n) + 0.5


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("soft", [False, True], ids=["labels", "soft"])
def test_cross_entropy_matches_float64_reference(soft, reduction, backend, dtype, rng):
    logits, target, weights = cross_entropy_problem(rng, dtype, soft)
    options = dict(sample_weight=weights, label_smoothing=0.1, reduction=reduction)
    if not soft:
        options["ignore_index"] = -100
    loss, grad = fastsoftmax.softmax_cross_entropy(logits, target, **options, backend=backend)
    f64_target = target.astype(np.float64) if soft else target
    ref_loss, ref_grad = reference(
        "softmax_cross_entropy", logits.astype(np.float64), f64_target, **options
    )
    what = f"softmax_cross_entropy({'soft' if soft else 'labels'}, reduction={reduction}, "
    what += f"{describe(logits)}), backend={backend}"
    assert np.asarray(loss).dtype == dtype and grad.dtype == dtype, f"{what}: dtype"
    assert_agrees(loss, ref_loss, f"{what}: loss")
    assert_agrees(grad, ref_grad, f"{what}: grad")


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(weight_decay=0.01),
        dict(momentum=0.9, weight_decay=0.01),
        dict(momentum=0.9, nesterov=True),
    ],
    ids=["plain", "weight-decay", "momentum", "nesterov"],
)
def test_sgd_update_matches_float64_reference(options, backend, dtype, rng):
    param, grad = rng.standard_normal((2, 40, 7))
    velocity = rng.standard_normal((40, 7)) if options.get("momentum") else None
    ref_param, ref_velocity = param.copy(), None if velocity is None else velocity.copy()
    fastsoftmax.sgd_update(
        ref_param, grad, lr=0.1, velocity=ref_velocity, **options, backend="numpy"
    )
    param, grad = param.astype(dtype), grad.astype(dtype)
    velocity = None if velocity is None else velocity.astype(dtype)
    fastsoftmax.sgd_update(param, grad, lr=0.1, velocity=velocity, **options, backend=backend)
    what = f"sgd_update({options}, {describe(param)}), backend={backend}"
    assert_agrees(param, ref_param, f"{what}: param")
    if velocity is not None:
        assert_agrees(velocity, ref_velocity, f"{what}: velocity")
