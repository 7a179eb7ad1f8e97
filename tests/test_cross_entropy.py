"""softmax_cross_entropy: PyTorch's definitions, checked against a formula written out here and
against finite differences, for every backend.

The expected values come from :func:`expected_cross_entropy` below (SciPy's log_softmax, then
``-sum t log p``), never from the package's own reference, so the reference is tested too.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.special
from cases import assert_close
from numpy.testing import assert_allclose, assert_array_equal

import fastsoftmax

N, K = 9, 5


def expected_cross_entropy(
    logits,
    target,
    sample_weight=None,
    class_weight=None,
    label_smoothing=0.0,
    ignore_index=None,
    reduction="mean",
):
    """(loss, grad) as PyTorch defines them (``F.cross_entropy``'s ``weight`` is
    ``class_weight``), with per-row weights as fastsoftmax defines them, in float64.

    Row loss ``-w_i sum_j c_j t_j log p_j`` with t the smoothed target; labels: the
    mean divides by ``sum_i w_i c[y_i]`` over kept rows, probabilities by ``sum_i w_i``."""
    x = np.asarray(logits, dtype=np.float64)
    n, k = x.shape
    log_p = scipy.special.log_softmax(x, axis=1)
    c = np.ones(k) if class_weight is None else np.asarray(class_weight, dtype=np.float64)
    kept = np.ones(n, bool)
    if target.ndim == 1:
        if ignore_index is not None:
            kept = target != ignore_index
        t = np.zeros((n, k))
        t[np.flatnonzero(kept), target[kept]] = 1.0
        divisor_weight = t @ c  # c[y_i]
    else:
        t = np.asarray(target, dtype=np.float64)
        divisor_weight = np.ones(n)
    t = c * ((1 - label_smoothing) * t + label_smoothing / k)
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    w = np.where(kept, w, 0.0)
    row_loss = -w * np.sum(t * log_p, axis=1)
    row_grad = w[:, None] * (np.exp(log_p) * t.sum(axis=1, keepdims=True) - t)
    if reduction == "none":
        return row_loss, row_grad
    if reduction == "sum":
        return row_loss.sum(), row_grad
    total_weight = np.sum(w * divisor_weight)
    if total_weight == 0:
        return np.nan, np.zeros_like(row_grad)
    return row_loss.sum() / total_weight, row_grad / total_weight


def make_problem(rng, kind: str, dtype=np.float64, n=N, k=K):
    """Random logits and a target: integer labels (with -100 and 2 in some rows, for the
    ignore_index cases) or probability rows (with zero entries)."""
    logits = (2 * rng.standard_normal((n, k))).astype(dtype)
    if kind == "labels":
        target = rng.integers(0, k, n)
        target[1::4] = -100
        target[2::5] = 2
        return logits, target
    target = rng.dirichlet(np.ones(k), n)
    target[target < 0.1] = 0.0
    target /= target.sum(axis=1, keepdims=True)
    return logits, target.astype(dtype)


def make_weights(rng, n=N):
    weights = rng.random(n) * 2
    weights[3] = 0.0
    return weights


CLASS_WEIGHT = np.array([0.5, 2.0, 0.0, 1.0, 3.0])  # class 2 (a label in several rows) weighs 0

# weights: None, per row ("sample"), per class ("class"), or both
GRID = [
    (kind, ignore_index, smoothing, weights, reduction)
    for kind, ignore_index, smoothing, weights, reduction in itertools.product(
        ["labels", "soft"],
        [None, -100, 2],
        [0.0, 0.1, 1.0],
        [None, "sample", "class", "both"],
        ["mean", "sum", "none"],
    )
    if kind == "labels" or ignore_index is None  # ignore_index applies to labels only
]


def problem_options(rng, kind, ignore_index, smoothing, weights, reduction, dtype=np.float64):
    logits, target = make_problem(rng, kind, dtype)
    if kind == "labels" and ignore_index != -100:
        target[target < 0] = 0
    options = dict(
        sample_weight=make_weights(rng) if weights in ("sample", "both") else None,
        class_weight=CLASS_WEIGHT if weights in ("class", "both") else None,
        label_smoothing=smoothing,
        ignore_index=ignore_index,
        reduction=reduction,
    )
    return logits, target, options


@pytest.mark.parametrize(
    ("kind", "ignore_index", "smoothing", "weights", "reduction"),
    GRID,
    ids=[f"{kind}-ignore{ignore}-smooth{s}-{w}-{r}" for kind, ignore, s, w, r in GRID],
)
def test_matches_pytorch_definition(
    kind, ignore_index, smoothing, weights, reduction, backend, dtype, rng
):
    logits, target, options = problem_options(
        rng, kind, ignore_index, smoothing, weights, reduction, dtype
    )
    loss, grad = fastsoftmax.softmax_cross_entropy(logits, target, **options, backend=backend)
    expected_loss, expected_grad = expected_cross_entropy(logits, target, **options)
    what = (
        f"softmax_cross_entropy({kind}, ignore_index={ignore_index}, label_smoothing="
        f"{smoothing}, weights={weights}, reduction={reduction}), backend={backend}, "
        f"dtype={dtype.__name__}"
    )
    assert np.asarray(loss).dtype == dtype and grad.dtype == dtype, f"{what}: dtype"
    assert np.shape(loss) == np.shape(expected_loss), f"{what}: loss shape"
    assert_close(loss, expected_loss, dtype, f"{what}: loss")
    assert_close(grad, expected_grad, dtype, f"{what}: grad")


TORCH_GRID = [case for case in GRID if case[3] in (None, "class")]  # PyTorch has no row weights


@pytest.mark.parametrize(
    ("kind", "ignore_index", "smoothing", "weights", "reduction"),
    TORCH_GRID,
    ids=[f"{kind}-ignore{ignore}-smooth{s}-{w}-{r}" for kind, ignore, s, w, r in TORCH_GRID],
)
def test_definition_is_pytorchs(kind, ignore_index, smoothing, weights, reduction, rng):
    """The formula above against ``F.cross_entropy`` itself, where PyTorch is installed."""
    torch = pytest.importorskip("torch")
    logits, target, options = problem_options(
        rng, kind, ignore_index, smoothing, weights, reduction
    )
    expected_loss, expected_grad = expected_cross_entropy(logits, target, **options)
    x = torch.tensor(logits, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(
        x,
        torch.tensor(target),
        weight=None if weights is None else torch.tensor(CLASS_WEIGHT),
        ignore_index=-100 if ignore_index is None else ignore_index,
        reduction=reduction,
        label_smoothing=smoothing,
    )
    loss.sum().backward()
    assert_allclose(loss.detach().numpy(), expected_loss, rtol=1e-12, atol=1e-14)
    assert_allclose(x.grad.numpy(), expected_grad, rtol=1e-12, atol=1e-14)


FD_OPTIONS = [
    dict(),
    dict(sample_weight=True),
    dict(label_smoothing=0.2),
    dict(sample_weight=True, label_smoothing=0.2),
    dict(sample_weight=True, class_weight=True, label_smoothing=0.2),
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize(
    "options", FD_OPTIONS, ids=["plain", "weighted", "smoothed", "both", "class-weighted"]
)
@pytest.mark.parametrize("kind", ["labels", "soft"])
def test_gradient_matches_central_differences(kind, options, reduction, backend, rng):
    """Perturb one logit at a time: loss row i moves by grad[i, j] * 2h, other rows not at all
    (for "none"), or the reduced loss moves by grad[i, j] * 2h ("mean", "sum")."""
    logits, target = make_problem(rng, kind, n=6, k=4)
    if kind == "labels":
        target[target < 0] = 1
    options = dict(options, reduction=reduction)
    if options.get("sample_weight"):
        options["sample_weight"] = make_weights(rng, n=6)
    if options.get("class_weight"):
        options["class_weight"] = CLASS_WEIGHT[:4]

    def loss(x):
        return fastsoftmax.softmax_cross_entropy(x, target, **options, backend=backend)[0]

    grad = fastsoftmax.softmax_cross_entropy(logits, target, **options, backend=backend)[1]
    h = 1e-6
    for i, j in np.ndindex(logits.shape):
        step = np.zeros_like(logits)
        step[i, j] = h
        slope = (loss(logits + step) - loss(logits - step)) / (2 * h)
        expected = grad[i, j]
        if reduction == "none":  # d loss / d logits[i, j] is grad[i, j] in row i, 0 elsewhere
            expected = np.where(np.arange(len(logits)) == i, grad[i, j], 0.0)
        assert_allclose(
            slope,
            expected,
            rtol=1e-6,
            atol=1e-8,
            err_msg=f"d loss / d logits[{i}, {j}], {kind}, {options}, backend={backend}",
        )


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_gradient_rows_of_labels_sum_to_zero(smoothing, weighted, backend, dtype, rng):
    logits, labels = make_problem(rng, "labels", dtype)
    labels[labels < 0] = 0
    weights = make_weights(rng) if weighted else None
    _, grad = fastsoftmax.softmax_cross_entropy(
        logits, labels, sample_weight=weights, label_smoothing=smoothing, backend=backend
    )
    assert_close(grad.sum(axis=1), np.zeros(N), dtype, "gradient rows do not sum to zero")


def test_ignored_rows_have_zero_loss_and_gradient(backend, dtype, rng):
    logits, labels = make_problem(rng, "labels", dtype)
    ignored = labels == -100
    losses, grad = fastsoftmax.softmax_cross_entropy(
        logits, labels, ignore_index=-100, label_smoothing=0.2, reduction="none", backend=backend
    )
    assert_array_equal(losses[ignored], 0)
    assert_array_equal(grad[ignored], 0)
    assert (losses[~ignored] > 0).all() and (np.abs(grad[~ignored]).sum(axis=1) > 0).all()


@pytest.mark.parametrize("how", ["all-rows-ignored", "all-weights-zero", "no-rows"])
def test_mean_over_zero_total_weight_is_nan_with_zero_gradient(how, backend, dtype, rng):
    logits, labels = make_problem(rng, "labels", dtype)
    labels[labels < 0] = 0
    options = {}
    if how == "all-rows-ignored":
        labels[:] = -100
        options["ignore_index"] = -100
    elif how == "all-weights-zero":
        options["sample_weight"] = np.zeros(N)
    else:
        logits, labels = logits[:0], labels[:0]
    loss, grad = fastsoftmax.softmax_cross_entropy(logits, labels, **options, backend=backend)
    assert np.isnan(loss) and loss.dtype == dtype
    assert_array_equal(grad, np.zeros_like(logits))
    total, _ = fastsoftmax.softmax_cross_entropy(
        logits, labels, **options, reduction="sum", backend=backend
    )
    assert total == 0


INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


def test_every_integer_label_dtype_gives_identical_results(backend, dtype, rng):
    logits, labels = make_problem(rng, "labels", dtype)
    labels[labels < 0] = 3
    expected_loss, expected_grad = fastsoftmax.softmax_cross_entropy(
        logits, labels.astype(np.int64), ignore_index=3, backend=backend
    )
    for int_dtype in INT_DTYPES:
        loss, grad = fastsoftmax.softmax_cross_entropy(
            logits, labels.astype(int_dtype), ignore_index=3, backend=backend
        )
        assert_array_equal(loss, expected_loss, err_msg=f"labels of dtype {int_dtype.__name__}")
        assert_array_equal(grad, expected_grad, err_msg=f"labels of dtype {int_dtype.__name__}")


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("kind", ["labels", "soft"])
def test_grad_out_is_logits_in_place(kind, order, backend, dtype, rng):
    logits, target = make_problem(rng, kind, dtype)
    if kind == "labels":
        target[target < 0] = 0
    logits = np.asarray(logits, order=order)
    options = dict(label_smoothing=0.1, sample_weight=make_weights(rng), backend=backend)
    expected_loss, expected_grad = fastsoftmax.softmax_cross_entropy(logits, target, **options)
    loss, grad = fastsoftmax.softmax_cross_entropy(logits, target, grad_out=logits, **options)
    assert grad is logits
    assert_close(loss, expected_loss, dtype, f"in-place loss, order={order}")
    assert_close(logits, expected_grad, dtype, f"in-place gradient, order={order}")


@pytest.mark.parametrize("layout", ["C", "fortran", "strided-view"])
def test_grad_out_of_every_layout(layout, backend, dtype, rng):
    logits, labels = make_problem(rng, "labels", dtype)
    labels[labels < 0] = 0
    big = np.full((2 * N, 3 * K), -7.0, dtype)
    grad_out = {
        "C": np.full((N, K), -7.0, dtype),
        "fortran": np.full((N, K), -7.0, dtype, order="F"),
        "strided-view": big[::2, ::3],
    }[layout]
    expected = fastsoftmax.softmax_cross_entropy(logits, labels, backend=backend)[1]
    grad = fastsoftmax.softmax_cross_entropy(logits, labels, grad_out=grad_out, backend=backend)[1]
    assert grad is grad_out
    assert_close(grad_out, expected, dtype, f"grad_out layout {layout}")
    big[::2, ::3] = -7.0
    assert (big == -7.0).all(), "wrote outside the grad_out view"


@pytest.mark.parametrize("kind", ["labels", "soft"])
def test_grad_out_overlapping_logits(kind, backend, dtype, rng):
    """grad_out is logits shifted by one row: each row written is the next one to be read."""
    logits, target = make_problem(rng, kind, dtype)
    if kind == "labels":
        target[target < 0] = 0
    big = np.empty((N + 1, K), dtype)
    big[:-1] = logits
    expected_loss, expected_grad = fastsoftmax.softmax_cross_entropy(
        logits, target, backend=backend
    )
    loss, grad = fastsoftmax.softmax_cross_entropy(
        big[:-1], target, grad_out=big[1:], backend=backend
    )
    assert np.shares_memory(grad, big)
    assert_close(loss, expected_loss, dtype, "loss with grad_out overlapping logits")
    assert_close(big[1:], expected_grad, dtype, "grad with grad_out overlapping logits")


def test_grad_out_may_be_the_soft_target(backend, dtype, rng):
    """The gradient may overwrite the target buffer: the result must not change."""
    logits, target = make_problem(rng, "soft", dtype)
    options = dict(label_smoothing=0.1, backend=backend)
    expected_loss, expected_grad = fastsoftmax.softmax_cross_entropy(logits, target, **options)
    loss, grad = fastsoftmax.softmax_cross_entropy(logits, target, grad_out=target, **options)
    assert grad is target
    assert_close(loss, expected_loss, dtype, "loss with grad_out=target")
    assert_close(grad, expected_grad, dtype, f"gradient with grad_out=target, backend={backend}")


@pytest.mark.parametrize("layout", ["fortran", "strided", "read-only"])
def test_logits_layout_does_not_change_the_result(layout, backend, dtype, rng):
    logits, target = make_problem(rng, "soft", dtype)
    expected = fastsoftmax.softmax_cross_entropy(logits, target, backend=backend)
    if layout == "fortran":
        logits = np.asfortranarray(logits)
    elif layout == "strided":
        big = np.zeros((N, 2 * K), dtype)
        big[:, ::2] = logits
        logits = big[:, ::2]
    else:
        logits.flags.writeable = False
    got = fastsoftmax.softmax_cross_entropy(logits, target, backend=backend)
    assert_close(got[0], expected[0], dtype, f"loss, logits {layout}")
    assert_close(got[1], expected[1], dtype, f"grad, logits {layout}")


@pytest.mark.parametrize("kind", ["labels", "soft"])
def test_inputs_are_not_modified(kind, backend, dtype, rng):
    logits, target = make_problem(rng, kind, dtype)
    weights = make_weights(rng)
    copies = [logits.copy(), target.copy(), weights.copy()]
    fastsoftmax.softmax_cross_entropy(
        logits,
        target,
        sample_weight=weights,
        label_smoothing=0.1,
        ignore_index=-100 if kind == "labels" else None,
        backend=backend,
    )
    for array, copy in zip([logits, target, weights], copies, strict=True):
        assert_array_equal(array, copy)
