"""No NumPy warning leaks out of the library on extreme inputs.

Every public function runs here on float32 and float64 arrays holding the extremes of the
dtype (the largest finite values, the smallest subnormal, +-inf, NaN) on every backend, with
warnings turned into errors. An inf or NaN in a result is the documented answer for such input
(see each function's docstring), not a reason to warn: a ``RuntimeWarning: overflow
encountered in exp`` from deep inside the library tells the user nothing about their data.

A warning that does say something true about the user's data is not a leak; the tests that
expect one say which and why.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import fastsoftmax
from fastsoftmax import SoftmaxRegression

pytestmark = pytest.mark.filterwarnings("error")

NAN, INF = np.nan, np.inf


def extremes(dtype) -> dict[str, float]:
    info = np.finfo(dtype)
    return {"huge": float(info.max), "tiny": float(info.smallest_subnormal), "inf": INF}


def extreme_rows(dtype) -> np.ndarray:
    """Rows of 3 logits mixing the extremes of ``dtype`` (a tiny array: all the cases at once)."""
    e = extremes(dtype)
    big, tiny = e["huge"], e["tiny"]
    rows = [
        [big, big, -big],  # the difference of two finite logits overflows
        [big, -big, 0.0],
        [-big, -big, -big],
        [big, big, big],
        [tiny, -tiny, 0.0],
        [INF, 0.0, 1.0],
        [INF, INF, 0.0],
        [INF, -INF, 0.0],
        [-INF, -INF, -INF],
        [-INF, 0.0, big],
        [NAN, 0.0, 1.0],
        [NAN, INF, -INF],
        [0.0, 1.0, 2.0],  # an ordinary row among the others
    ]
    return np.array(rows, dtype=dtype)


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def rows(request) -> np.ndarray:
    return extreme_rows(request.param)


@pytest.mark.parametrize("kernel", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_row_kernels(kernel, axis, rows, backend):
    getattr(fastsoftmax, kernel)(rows, axis=axis, backend=backend)


@pytest.mark.parametrize("kernel", ["softmax_backward", "log_softmax_backward"])
@pytest.mark.parametrize("output_of", ["kernel", "extremes"])
def test_backward_kernels(kernel, output_of, rows, backend):
    """``output`` the forward kernel's output for the extreme rows (NaN rows included), or the
    extremes themselves; ``grad_output`` the extremes, so products and sums overflow."""
    if output_of == "kernel":
        forward = kernel.removesuffix("_backward")
        output = getattr(fastsoftmax, forward)(rows, backend=backend)
    else:
        output = rows[::-1].copy()
    getattr(fastsoftmax, kernel)(rows, output, backend=backend)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_with_labels(reduction, label_smoothing, rows, backend):
    labels = np.arange(len(rows)) % rows.shape[1]
    fastsoftmax.softmax_cross_entropy(
        rows, labels, reduction=reduction, label_smoothing=label_smoothing, backend=backend
    )


def test_the_non_finite_results_are_the_documented_ones(rows, backend):
    """As the docstrings say: softmax of a finite row is a distribution, and the loss of a
    row of NaN/+inf or only -inf logits is NaN, of a target logit ~1e38 below the row's
    maximum inf."""
    finite = np.isfinite(rows).all(axis=1)
    p = fastsoftmax.softmax(rows, backend=backend)
    np.testing.assert_allclose(p[finite].sum(axis=1), 1, rtol=1e-6)
    assert np.isnan(p[~finite & ~np.isneginf(rows).any(axis=1)]).all()
    labels = np.arange(len(rows)) % rows.shape[1]
    loss, grad = fastsoftmax.softmax_cross_entropy(rows, labels, reduction="none", backend=backend)
    nan_rows = np.isnan(rows).any(axis=1) | np.isposinf(rows).any(axis=1)
    nan_rows |= np.isneginf(rows).all(axis=1)
    assert np.isnan(loss[nan_rows]).all() and np.isnan(grad[nan_rows]).all()
    far_below = np.isin(np.arange(len(rows)), [1, 9])  # labels 1 of [big, -big, 0], 0 of
    assert rows[9, 0] == -INF  # [-inf, 0, big]: true losses of 2 * big and inf
    assert np.isposinf(loss[far_below]).all()
    assert np.isfinite(loss[~nan_rows & ~far_below]).all()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_with_huge_weights(reduction, rows, backend):
    """Weights whose products with the losses overflow: those losses are inf."""
    weights = np.full(len(rows), 1e300)
    labels = np.arange(len(rows)) % rows.shape[1]
    fastsoftmax.softmax_cross_entropy(
        rows, labels, sample_weight=weights, reduction=reduction, backend=backend
    )


def test_weights_whose_sum_overflows_are_refused(rows):
    """Every sum and mean over the rows would be inf or NaN: an error says so."""
    weights = np.full(len(rows), np.finfo(np.float64).max)
    labels = np.arange(len(rows)) % rows.shape[1]
    with pytest.raises(ValueError, match="sample_weight sums beyond the float64 range"):
        fastsoftmax.softmax_cross_entropy(rows, labels, sample_weight=weights)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_cross_entropy_with_soft_targets(reduction, label_smoothing, rows, backend):
    e = extremes(rows.dtype)
    target = np.tile(np.array([[e["huge"], 0.0, e["tiny"]]], rows.dtype), (len(rows), 1))
    target[1::2] = 1 / 3  # every other row a proper distribution
    fastsoftmax.softmax_cross_entropy(
        rows, target, reduction=reduction, label_smoothing=label_smoothing, backend=backend
    )


@pytest.mark.parametrize("method", ["fused", "blas"])
@pytest.mark.parametrize("extreme", ["X", "W", "b"])
def test_linear_cross_entropy(method, extreme, rows, backend):
    """The extreme rows as features ``X`` (n, 3), or as the weights ``W``, or in ``b``."""
    dtype = rows.dtype
    X, W, b = np.ones_like(rows), np.ones((4, 3), dtype), np.zeros(4, dtype)
    if extreme == "X":
        X = rows
    elif extreme == "W":
        W = rows[:4]
    else:
        b = rows[:4, 0].copy()
    labels = np.arange(len(X)) % len(W)
    fastsoftmax.linear_softmax_cross_entropy(
        X, W, b, labels, l2=0.5, method=method, backend=backend
    )


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_sgd_update(momentum, rows, backend):
    param = rows.ravel().copy()
    grad = rows[::-1].ravel().copy()
    velocity = rows.ravel().copy() if momentum else None
    e = extremes(rows.dtype)
    fastsoftmax.sgd_update(
        param,
        grad,
        lr=e["huge"],
        momentum=momentum,
        velocity=velocity,
        weight_decay=e["huge"],
        nesterov=bool(momentum),
        backend=backend,
    )


def tiny_data(dtype):
    """12 rows of 3 well separated classes: SGD and L-BFGS both fit them without a warning."""
    y = np.arange(12) % 3
    X = np.eye(3, dtype=dtype)[y] * 4 + np.linspace(-0.5, 0.5, 12, dtype=dtype)[:, None]
    return X, y


@pytest.mark.parametrize("solver", ["lbfgs", "sgd"])
def test_estimator_predicts_on_extreme_rows(solver, rows, backend):
    """A model fitted on ordinary data, asked about finite extreme rows (the estimator
    refuses inf and NaN features)."""
    X, y = tiny_data(rows.dtype)
    model = SoftmaxRegression(
        solver=solver, dtype=rows.dtype, backend=backend, random_state=0, learning_rate=0.1
    )
    model.fit(X, y)
    finite = rows[np.isfinite(rows).all(axis=1)]
    model.decision_function(finite)
    model.predict_proba(finite)
    model.predict_log_proba(finite)
    model.predict(finite)
    model.partial_fit(X, y)


def test_binary_decision_function_on_extreme_rows(rows, backend):
    X, y = tiny_data(rows.dtype)
    model = SoftmaxRegression(solver="lbfgs", dtype=rows.dtype, backend=backend)
    model.fit(X[y < 2], y[y < 2])
    model.decision_function(rows[np.isfinite(rows).all(axis=1)])


def test_lbfgs_fit_on_extreme_rows_says_only_that_it_did_not_converge(rows, backend):
    """Features near the dtype's limits make the starting loss inf: L-BFGS cannot start.

    Its ConvergenceWarning is true about the data; no NumPy warning comes with it."""
    finite = rows[np.isfinite(rows).all(axis=1)]
    y = np.arange(len(finite)) % 3
    model = SoftmaxRegression(solver="lbfgs", dtype=rows.dtype, backend=backend)
    with pytest.warns(ConvergenceWarning) as record:
        model.fit(finite, y)
    assert {type(w.message) for w in record} == {ConvergenceWarning}
    model.predict_proba(finite)


def test_sgd_fit_on_extreme_rows_warns_that_it_diverged(rows, backend):
    """The same for SGD: its warnings say that training ran away, which is true of such
    features; they are the only warnings."""
    finite = rows[np.isfinite(rows).all(axis=1)]
    y = np.arange(len(finite)) % 3
    model = SoftmaxRegression(solver="sgd", dtype=rows.dtype, backend=backend, random_state=0)
    with pytest.warns(RuntimeWarning) as record:
        model.fit(finite, y)
    messages = [str(w.message) for w in record]
    expected = ("training diverged: epoch", "SGD kept none of its", "SGD ended with")
    assert all(m.startswith(expected) for m in messages), messages
