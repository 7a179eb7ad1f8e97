"""Property-based tests: every public kernel on every backend, on inputs drawn by Hypothesis.

Inputs: any shape of 1 to 3 dimensions with sides 0 to 6 (so empty and single-element axes),
float32 and float64, any axis, C, Fortran, strided (a view into a NaN-filled buffer: reading
outside the view shows), reversed, read-only and byte-swapped layouts, values from tiny to the
largest finite float, with or without NaN and +-inf. Properties checked on each draw:

* every backend equals the NumPy reference evaluated in float64, within ``cases.TOLERANCE``;
* finite slices of softmax lie in [0, 1] and sum to 1; log_softmax <= 0; max <= logsumexp
  <= max + log(k);
* non-finite slices follow the README's rules exactly (checked slice by slice, independently of
  the reference);
* softmax, log_softmax and logsumexp move as they should when a constant is added;
* cross-entropy losses are >= 0, gradient rows sum to 0, ignored rows are exactly 0, rows of
  non-finite logits are NaN; sgd_update equals the reference step;
* no input is modified, and nothing outside an ``out=``/``grad_out=`` view is written.

The number of examples comes from the Hypothesis profile chosen in ``conftest.py`` ("ci" by
default, "thorough" for a long run).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("hypothesis")

from cases import TOLERANCE, UNARY_ROW_KERNELS, assert_agrees, describe
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.testing import assert_array_equal

import fastsoftmax

# Non-finite input is part of the contract; the NumPy reference lets NumPy warn about it
# ("invalid value encountered"), which says nothing about the results checked here.
pytestmark = pytest.mark.filterwarnings(
    "ignore::RuntimeWarning:fastsoftmax.backends.numpy_reference"
)

# The backend fixture only names a backend (an immutable string): sharing it between examples
# is exactly what the tests want, so Hypothesis's warning about function-scoped fixtures is moot.
fixture_ok = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])

ROW_KERNELS = UNARY_ROW_KERNELS
LAYOUTS = ("C", "F", "strided", "reversed", "read-only", "byte-swapped")
SPECIALS = (np.nan, np.inf, -np.inf)
GARBAGE = np.nan  # fills the buffer around a strided view: a kernel reading it gives NaN


# -- strategies ------------------------------------------------------------------------------


def finite_floats(dtype, bound: float) -> st.SearchStrategy[float]:
    """Finite floats of ``dtype`` in [-bound, bound] (Hypothesis favours 0, +-bound, integers,
    subnormals and other boundary values)."""
    width = 8 * np.dtype(dtype).itemsize
    bound = float(np.asarray(bound, dtype))  # Hypothesis wants a bound the width can hold
    return st.floats(-bound, bound, width=width, allow_nan=False, allow_infinity=False)


def magnitudes(dtype) -> st.SearchStrategy[float]:
    """The largest |value| of one array: moderate, huge, or the largest finite float."""
    return st.sampled_from([10.0, 1e4, 1e30, float(np.finfo(dtype).max)])


@st.composite
def values(draw, dtype, shape, *, bound=None, non_finite=None):
    """An array of ``shape`` and ``dtype``; a quarter of its entries non-finite when
    ``non_finite`` (drawn if None)."""
    bound = draw(magnitudes(dtype)) if bound is None else bound
    non_finite = draw(st.booleans()) if non_finite is None else non_finite
    elements = finite_floats(dtype, bound)
    if non_finite:
        elements = st.one_of(elements, elements, elements, st.sampled_from(SPECIALS))
    return draw(hnp.arrays(dtype, shape, elements=elements))


def lay_out(base: np.ndarray, layout: str) -> np.ndarray:
    """An array equal to ``base`` in memory layout ``layout`` (see :data:`LAYOUTS`)."""
    if layout == "C":
        x = np.array(base, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
    elif layout == "F":
        x = np.array(base, order="F")
    elif layout == "strided":  # every other element of a NaN-filled buffer, along every axis
        big = np.full([2 * n + 1 for n in base.shape], GARBAGE, base.dtype)
        x = big[(Ellipsis, *[slice(1, None, 2)] * base.ndim)]
        x[...] = base
    elif layout == "reversed":  # negative strides along every axis
        flip = (Ellipsis, *[slice(None, None, -1)] * base.ndim)
        x = base[flip].copy()[flip]
    elif layout == "read-only":
        x = base.copy()
        x.flags.writeable = False
    elif layout == "byte-swapped":
        x = base.astype(base.dtype.newbyteorder("S"))
    else:
        raise AssertionError(layout)
    assert_array_equal(x, base, err_msg=f"lay_out({layout}) changed the values")
    return x


@st.composite
def float_inputs(draw, *, bound=None, non_finite=None, layouts=LAYOUTS, max_dims=3):
    """(x, axis): any dtype, shape, axis and layout."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=max_dims, min_side=0, max_side=6))
    base = draw(values(dtype, shape, bound=bound, non_finite=non_finite))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    return lay_out(base, draw(st.sampled_from(layouts))), axis


# -- helpers ---------------------------------------------------------------------------------


def reference(kernel: str, dtype, *args, **kwargs):
    """``kernel`` on the NumPy reference in float64, rounded to ``dtype``.

    Rounding costs at most half an ulp (6e-8 in float32), far inside TOLERANCE; it makes a
    value beyond float32's range +-inf, which is what a float32 result of it must be.
    """
    result = getattr(fastsoftmax, kernel)(*args, **kwargs, backend="numpy")
    if isinstance(result, tuple):
        return tuple(np.asarray(r).astype(dtype) for r in result)
    return np.asarray(result).astype(dtype)


def slices(x: np.ndarray, axis: int) -> np.ndarray:
    """The 1-D slices along ``axis`` as the rows of a (-1, k) float64 array."""
    moved = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    return moved.reshape(math.prod(moved.shape[:-1]), moved.shape[-1])


def assert_unchanged(array: np.ndarray, before: np.ndarray, what: str) -> None:
    assert_array_equal(array, before, err_msg=f"{what}: an input was modified")


def assert_agrees_at_scale(got, ref, scale, what: str, dtype) -> None:
    """:func:`cases.assert_agrees` with the error measured against ``max(1, |ref|, scale)``:
    for results that are differences of terms of magnitude ``scale`` (see the callers)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape}, expected {ref.shape}"
    assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=f"{what}: NaN positions differ")
    infinite = np.isinf(ref)
    assert_array_equal(np.isinf(got), infinite, err_msg=f"{what}: inf positions differ")
    assert_array_equal(got[infinite], ref[infinite], err_msg=f"{what}: sign of inf differs")
    finite = np.isfinite(ref)
    scale = np.broadcast_to(np.maximum(np.maximum(1.0, np.abs(ref)), scale), ref.shape)
    error = np.abs(got[finite] - ref[finite]) / scale[finite]
    tol = TOLERANCE[np.dtype(dtype)]
    assert error.size == 0 or error.max() <= tol, f"{what}: max error {error.max():.3g} > {tol:g}"


# -- softmax, log_softmax, logsumexp ---------------------------------------------------------


@fixture_ok
@given(data=float_inputs(), out_mode=st.sampled_from(["none", "C", "F", "strided", "x"]))
def test_row_kernels_match_the_reference(backend, data, out_mode):
    x, axis = data
    dtype = x.dtype.newbyteorder("=")
    x64 = x.astype(np.float64)
    original = x
    for kernel in ROW_KERNELS:
        x = original
        what = f"{kernel}(axis={axis}, {describe(x)}, out={out_mode}), backend={backend}"
        expected = reference(kernel, dtype, x64, axis=axis)
        before = x.copy()
        options, big = {}, None
        if kernel != "logsumexp" and out_mode in ("C", "F"):
            options["out"] = np.full(x.shape, -7.0, dtype, order=out_mode)
        elif kernel != "logsumexp" and out_mode == "strided":
            big = np.full([2 * n + 1 for n in x.shape], -7.0, dtype)
            options["out"] = big[(slice(1, None, 2),) * x.ndim]
        elif kernel != "logsumexp" and out_mode == "x" and x.flags.writeable and x.dtype.isnative:
            x = x.copy(order="K")  # a fresh copy in about the same layout, written in place
            options["out"] = x
        got = getattr(fastsoftmax, kernel)(x, axis=axis, backend=backend, **options)
        assert np.asarray(got).dtype == dtype, f"{what}: dtype {np.asarray(got).dtype}"
        assert_agrees(got, expected, what)
        if "out" in options:
            assert got is options["out"], f"{what}: did not return out"
        if options.get("out") is not x:
            assert_unchanged(x, before, what)
        if big is not None:
            outside = np.ones(big.shape, bool)
            outside[(slice(1, None, 2),) * x.ndim] = False
            assert (big[outside] == -7.0).all(), f"{what}: wrote outside the out view"


@fixture_ok
@given(data=float_inputs())
def test_softmax_slices_are_distributions_and_logsumexp_is_bounded(backend, data):
    x, axis = data
    tol = TOLERANCE[x.dtype.newbyteorder("=")]
    what = f"axis={axis}, {describe(x)}, backend={backend}"
    p = slices(fastsoftmax.softmax(x, axis=axis, backend=backend), axis)
    log_p = slices(fastsoftmax.log_softmax(x, axis=axis, backend=backend), axis)
    lse = np.asarray(fastsoftmax.logsumexp(x, axis=axis, keepdims=True, backend=backend))
    lse = slices(lse, axis)[:, 0]
    rows = slices(x, axis)
    if rows.shape[1] == 0:
        assert_array_equal(lse, -np.inf, err_msg=f"{what}: logsumexp of an empty slice")
        return
    m = rows.max(axis=1)  # NaN where a slice holds NaN
    finite = np.isfinite(m)  # the slices with a finite maximum and no NaN
    assert ((p[finite] >= 0) & (p[finite] <= 1)).all(), f"{what}: softmax outside [0, 1]"
    # Each probability is exp and one division away from exact, a few ulp relative; their
    # float64 sum is then within a few ulp of 1, which TOLERANCE bounds with a wide margin.
    sums = p[finite].sum(axis=1)
    assert (np.abs(sums - 1) <= tol).all(), f"{what}: softmax sums {sums} are not 1"
    # x - max <= 0 and log(sum) >= 0 (the max term is exp(0) = 1): no rounding can break these.
    assert (log_p[~np.isnan(log_p)] <= 0).all(), f"{what}: log_softmax > 0"
    no_nan = ~np.isnan(m)
    assert (lse[no_nan] >= m[no_nan]).all(), f"{what}: logsumexp < max: {lse} vs {m}"
    upper = m[finite] + math.log(rows.shape[1])
    slack = tol * np.maximum(1.0, np.abs(upper))  # the documented error of the result
    assert (lse[finite] <= upper + slack).all(), f"{what}: logsumexp > max + log(k)"


@fixture_ok
@given(data=float_inputs(non_finite=True))
def test_non_finite_slices_follow_the_documented_rules(backend, data):
    """README "Semantics", slice by slice: NaN > +inf > all -inf > finite with some -inf."""
    x, axis = data
    what = f"axis={axis}, {describe(x)}, backend={backend}"
    p = slices(fastsoftmax.softmax(x, axis=axis, backend=backend), axis)
    log_p = slices(fastsoftmax.log_softmax(x, axis=axis, backend=backend), axis)
    lse = np.asarray(fastsoftmax.logsumexp(x, axis=axis, keepdims=True, backend=backend))
    lse = slices(lse, axis)[:, 0]
    for i, row in enumerate(slices(x, axis)):
        where = f"{what}, slice {i} = {row}"
        if row.size == 0:
            assert lse[i] == -np.inf, f"{where}: logsumexp {lse[i]}, expected -inf"
            continue
        if np.isnan(row).any() or (row == np.inf).any() or (row == -np.inf).all():
            expected_lse = np.nan if np.isnan(row).any() else row.max()  # +inf or -inf
            assert np.isnan(p[i]).all() and np.isnan(log_p[i]).all(), f"{where}: not all NaN"
            assert_array_equal(lse[i], expected_lse, err_msg=f"{where}: logsumexp")
            continue
        neg_inf = row == -np.inf  # the rest is finite, and so is the maximum
        assert (p[i][neg_inf] == 0).all() and (log_p[i][neg_inf] == -np.inf).all(), where
        assert not np.isnan(p[i]).any() and not np.isnan(log_p[i]).any(), f"{where}: NaN"
        assert p[i][np.argmax(row)] > 0, f"{where}: the largest entry has probability 0"
        assert np.isfinite(lse[i]), f"{where}: logsumexp {lse[i]} is not finite"


@st.composite
def exactly_shiftable(draw):
    """(x, c, axis): x of multiples of 1/8 in [-64, 64] and an integer c with x + c exact."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6))
    eighths = draw(hnp.arrays(np.int64, shape, elements=st.integers(-512, 512)))
    # float32 holds every multiple of 1/8 below 2**21 exactly: |x + c| <= 64 + 2**20 is.
    limit = 2**20 if dtype is np.float32 else 2**40
    c = draw(st.integers(-limit, limit))
    layout = draw(st.sampled_from(["C", "F", "strided", "reversed"]))
    x = lay_out((eighths / 8).astype(dtype), layout)
    assert_array_equal((x + dtype(c)) - dtype(c), x, err_msg="x + c is not exact")
    return x, c, draw(st.integers(-len(shape), len(shape) - 1))


@fixture_ok
@given(data=exactly_shiftable())
def test_adding_a_constant_changes_only_logsumexp(backend, data):
    x, c, axis = data
    dtype = x.dtype.type
    shifted = x + dtype(c)
    what = f"c={c}, axis={axis}, {describe(x)}, backend={backend}"
    for kernel in ("softmax", "log_softmax"):
        got = getattr(fastsoftmax, kernel)(shifted, axis=axis, backend=backend)
        expected = getattr(fastsoftmax, kernel)(x, axis=axis, backend=backend)
        assert_agrees(got, expected.astype(np.float64), f"{kernel}(x + c) vs {kernel}(x), {what}")
    got = fastsoftmax.logsumexp(shifted, axis=axis, backend=backend)
    expected = fastsoftmax.logsumexp(x, axis=axis, backend=backend).astype(np.float64) + c
    assert_agrees(got, expected, f"logsumexp(x + c) vs logsumexp(x) + c, {what}")


# -- softmax_cross_entropy -------------------------------------------------------------------

INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
# float32 logits spanning more than its range would overflow x - max in float32 while the exact
# loss (a target-weighted mean of such differences) stays finite: the magnitude is capped at a
# quarter of the range so that x - max can never overflow; the row kernels above take all.
CE_BOUND = {np.float32: 1e37, np.float64: 1e307}


@st.composite
def cross_entropy_problems(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    n, k = draw(st.integers(0, 6)), draw(st.integers(1, 6))
    bound = draw(st.sampled_from([10.0, 1e4, CE_BOUND[dtype]]))
    logits = draw(values(dtype, (n, k), bound=bound))
    # Smoothing 0, 1, or at least 1e-6: below that s / k underflows to 0 in float32 (or even
    # float64) in some computations and not in others, which is rounding, not behaviour.
    options = dict(
        label_smoothing=draw(st.sampled_from([0.0, 1.0]) | st.floats(1e-6, 1)),
        reduction=draw(st.sampled_from(["mean", "sum", "none"])),
    )
    if draw(st.booleans()):  # integer labels, perhaps with some rows ignored
        labels = draw(hnp.arrays(np.int64, n, elements=st.integers(0, k - 1)))
        ignore_index = draw(st.sampled_from([None, -100, 0, k - 1]))
        if ignore_index == -100:
            labels[draw(hnp.arrays(bool, n))] = -100
        int_dtype = np.int64 if ignore_index == -100 else draw(st.sampled_from(INT_DTYPES))
        target = labels.astype(int_dtype)
        options["ignore_index"] = ignore_index
    else:  # probabilities >= 0, not necessarily summing to 1, some exactly 0
        entries = st.sampled_from([0.0, 1.0]) | st.floats(0, 10)
        target = draw(
            hnp.arrays(draw(st.sampled_from([np.float32, np.float64])), (n, k), elements=entries)
        )
    if draw(st.booleans()):
        # Zero or at least 1e-3: weights near the subnormal range would make the gradient lose
        # all its relative precision, and the gradient-sum bound below is relative.
        weight = st.just(0.0) | st.floats(1e-3, 100)
        options["sample_weight"] = draw(hnp.arrays(np.float64, n, elements=weight))
    layout = draw(st.sampled_from(["C", "F", "strided", "reversed", "read-only"]))
    grad_mode = draw(st.sampled_from(["none", "C", "F", "strided", "logits"]))
    return lay_out(logits, layout), target, options, grad_mode


def bad_rows(logits: np.ndarray) -> np.ndarray:
    """Rows the README says give a NaN loss and gradient: NaN, +inf, or only -inf."""
    with np.errstate(invalid="ignore"):
        return np.isnan(logits).any(1) | (logits == np.inf).any(1) | (logits == -np.inf).all(1)


def smoothed_mass(target, options, dtype, n: int, k: int) -> np.ndarray:
    """T_i = sum_j t_ij of each row's target after label smoothing (1 for labels)."""
    s = options["label_smoothing"]
    if target.ndim == 1:
        return np.ones(n)
    return (1 - s) * target.astype(dtype).astype(np.float64).sum(axis=1) + s


@fixture_ok
@given(problem=cross_entropy_problems())
def test_cross_entropy_matches_the_reference_and_its_invariants(backend, problem):
    logits, target, options, grad_mode = problem
    dtype = logits.dtype
    n, k = logits.shape
    soft = target.ndim == 2
    what = (
        f"softmax_cross_entropy({describe(logits)}, target {target.dtype}"
        f"{' soft' if soft else ''}, {options}, grad_out={grad_mode}), backend={backend}"
    )
    nan_rows = bad_rows(logits)
    ref_target = target.astype(dtype).astype(np.float64) if soft else target  # as documented
    ref_loss, ref_grad = reference(
        "softmax_cross_entropy", dtype, logits.astype(np.float64), ref_target, **options
    )
    inputs = {"logits": logits, "target": target, "sample_weight": options.get("sample_weight")}
    before = {name: a.copy() for name, a in inputs.items() if a is not None}
    big = None
    if grad_mode in ("C", "F"):
        options["grad_out"] = np.full((n, k), -7.0, dtype, order=grad_mode)
    elif grad_mode == "strided":
        big = np.full((2 * n + 1, 2 * k + 1), -7.0, dtype)
        options["grad_out"] = big[1::2, 1::2]
    elif grad_mode == "logits" and logits.flags.writeable:
        logits = options["grad_out"] = logits.copy()
        del before["logits"]
    loss, grad = fastsoftmax.softmax_cross_entropy(logits, target, **options, backend=backend)

    assert np.asarray(loss).dtype == dtype and grad.dtype == dtype, f"{what}: dtype"
    assert grad.shape == (n, k), f"{what}: grad shape {grad.shape}"
    if "grad_out" in options:
        assert grad is options["grad_out"], f"{what}: did not return grad_out"
    for name, copy in before.items():
        assert_unchanged(inputs[name], copy, f"{what}: {name}")
    assert_agrees(loss, ref_loss, f"{what}: loss")
    # Gradient row i is c_i (p T_i - t): c_i its weight times the reduction's scale, T_i its
    # target mass. Its two terms each have mass c_i T_i, which can be far above 1 (weights up
    # to 100, soft targets up to 10 per entry); float32 rounds them relative to that mass, so
    # a difference that cancels to about 0 is exact only to TOLERANCE * c_i T_i, not to
    # TOLERANCE * max(1, |reference|).
    ignore_index = options.get("ignore_index")
    ignored = target == ignore_index if ignore_index is not None else np.zeros(n, bool)
    weights = options.get("sample_weight")
    weights = np.ones(n) if weights is None else weights
    total = weights[~ignored].sum()
    scale = (1 / total if total > 0 else 0.0) if options["reduction"] == "mean" else 1.0
    mass = scale * weights * smoothed_mass(target, options, dtype, n, k)  # c_i T_i
    assert_agrees_at_scale(grad, ref_grad, mass[:, None], f"{what}: grad", dtype)

    losses = np.asarray(loss, np.float64)
    assert (losses[~np.isnan(losses)] >= 0).all(), f"{what}: negative loss {losses}"
    assert (grad[ignored] == 0).all(), f"{what}: ignored rows have a gradient"
    assert np.isnan(grad[nan_rows & ~ignored]).all(), f"{what}: non-finite rows give no NaN"
    if options["reduction"] == "none":
        assert (losses[ignored] == 0).all(), f"{what}: ignored rows have a loss"
        assert np.isnan(losses[nan_rows & ~ignored]).all(), f"{what}: no NaN loss"
    # Rows sum to 0: each term's error is at most TOLERANCE c_i T_i (above), so the float64 sum
    # is within 2 TOLERANCE c_i T_i of 0; twice that is the bound. Where c_i T_i is subnormal
    # (tiny target entries), rounding is absolute: a few of the smallest steps per entry.
    check = ~ignored & ~nan_rows
    bound = 4 * TOLERANCE[dtype] * mass + 4 * k * np.finfo(dtype).smallest_subnormal
    sums = grad.astype(np.float64).sum(axis=1)
    assert (np.abs(sums[check]) <= bound[check]).all(), (
        f"{what}: gradient rows sum to {sums[check]}, bound {bound[check]}"
    )
    if big is not None:
        big[1::2, 1::2] = -7.0
        assert (big == -7.0).all(), f"{what}: wrote outside the grad_out view"


def test_non_finite_row_with_an_all_zero_soft_target_gives_nan(backend):
    """README: "A row whose logits hold NaN or +inf (or only -inf) gives a NaN loss and
    gradient", also when its soft target is all 0 (where 0 log 0 = 0 would otherwise make the
    loss 0). Found by the property test above (the NumPy reference gave 0)."""
    logits = np.array([[np.nan, 1.0], [np.inf, 1.0], [-np.inf, -np.inf], [0.0, 1.0]])
    target = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    losses, grad = fastsoftmax.softmax_cross_entropy(
        logits, target, reduction="none", backend=backend
    )
    assert_array_equal(losses, [np.nan, np.nan, np.nan, 0.0], err_msg=f"backend={backend}")
    assert np.isnan(grad[:3]).all() and (grad[3] == 0).all(), f"backend={backend}: {grad}"


@pytest.mark.parametrize("kind", ["labels", "soft"])
def test_full_label_smoothing_on_a_neg_inf_logit_gives_inf_loss(kind, backend):
    """With label_smoothing=1 the target is uniform, so a class of probability 0 (logit -inf)
    costs +inf, whatever the unsmoothed target said. Found by the property test above (Numba
    and Cython computed 0 * -inf = NaN)."""
    logits = np.array([[-np.inf, 0.0], [-np.inf, 0.0]])
    target = np.array([0, 1]) if kind == "labels" else np.array([[1.0, 1.0], [0.0, 1.0]])
    losses, grad = fastsoftmax.softmax_cross_entropy(
        logits, target, label_smoothing=1.0, reduction="none", backend=backend
    )
    assert_array_equal(losses, [np.inf, np.inf], err_msg=f"{kind}, backend={backend}")
    assert_array_equal(grad, [[-0.5, 0.5], [-0.5, 0.5]], err_msg=f"{kind}, backend={backend}")


# -- sgd_update ------------------------------------------------------------------------------


@st.composite
def sgd_problems(draw):
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5))
    # |values| <= 1e15 and lr <= 10: no intermediate can overflow float32 (3.4e38), so float32
    # and the float64 reference differ by rounding only.
    new = lambda: draw(values(dtype, shape, bound=1e15))  # noqa: E731
    # Zero or well clear of it: a momentum that float32 rounds to 0 still takes the momentum path
    # (velocity is written), which a float64 reference cannot reproduce.
    momentum = draw(st.sampled_from([0.0, 0.9]) | st.floats(1e-3, 0.999))
    options = dict(
        lr=draw(st.sampled_from([1.0, 0.1]) | st.floats(1e-6, 10)),
        momentum=momentum,
        weight_decay=draw(st.sampled_from([0.0]) | st.floats(1e-6, 1)),
        nesterov=momentum > 0 and draw(st.booleans()),
    )
    layouts = st.sampled_from(["C", "F", "strided", "reversed"])
    param = lay_out(new(), draw(layouts))
    grad_is_param = draw(st.booleans()) and draw(st.booleans())  # a quarter of the draws
    grad = param if grad_is_param else lay_out(new(), draw(layouts | st.just("read-only")))
    velocity = None
    if momentum > 0 or draw(st.booleans()):  # without momentum it must be left untouched
        velocity = lay_out(new(), draw(layouts))
    return param, grad, velocity, options


def sgd_error_scale(p0, grad, v0, lr, momentum, weight_decay, p1, v1, nesterov):
    """Per element, the magnitude a few float32 roundings are relative to: the largest operand
    or intermediate of the step, not the result (p0 - lr * step can cancel to about 0)."""
    with np.errstate(invalid="ignore"):  # 0 * inf: such elements are compared as NaN or inf
        g = np.abs(grad) + weight_decay * np.abs(p0)
        vel = np.maximum(g, momentum * np.abs(v0)) if v0 is not None else g
        step = np.maximum(vel, np.abs(v1) * (1 + momentum)) if v1 is not None else vel
        param = np.maximum.reduce([np.ones_like(p0), np.abs(p0), np.abs(p1), lr * step])
    return param, np.maximum(1.0, vel)


@fixture_ok
@given(problem=sgd_problems())
def test_sgd_update_matches_the_reference(backend, problem):
    param, grad, velocity, options = problem
    dtype = param.dtype
    grad_is_param = grad is param
    what = (
        f"sgd_update({describe(param)}, grad {'is param' if grad_is_param else describe(grad)}"
        f", velocity {None if velocity is None else describe(velocity)}, {options}), "
        f"backend={backend}"
    )
    p0, g0 = param.astype(np.float64), grad.astype(np.float64)
    v0 = None if velocity is None else velocity.astype(np.float64)
    ref_p, ref_v = p0.copy(), None if v0 is None else v0.copy()
    uses_velocity = options["momentum"] > 0
    # "Arithmetic is in param's dtype": the reference takes the scalars rounded to it too (a
    # weight decay of 1e-50 is 0 in float32, and then 0 * inf is NaN in both).
    rounded = {
        name: float(dtype.type(options[name])) for name in ("lr", "momentum", "weight_decay")
    }
    fastsoftmax.sgd_update(
        ref_p,
        g0.copy(),
        **{**options, **rounded},
        velocity=ref_v if uses_velocity else None,
        backend="numpy",
    )
    grad_before = grad.copy()
    fastsoftmax.sgd_update(param, grad, **options, velocity=velocity, backend=backend)

    assert param.dtype == dtype
    if not grad_is_param:
        assert_unchanged(grad, grad_before, f"{what}: grad")
    if velocity is not None and not uses_velocity:
        assert_array_equal(velocity, v0, err_msg=f"{what}: velocity written without momentum")
    scale_p, scale_v = sgd_error_scale(
        p0, g0, v0 if uses_velocity else None, options["lr"], options["momentum"],
        options["weight_decay"], ref_p, ref_v if uses_velocity else None, options["nesterov"],
    )  # fmt: skip
    assert_agrees_at_scale(param, ref_p, scale_p, f"{what}: param", dtype)
    if uses_velocity:
        assert_agrees_at_scale(velocity, ref_v, scale_v, f"{what}: velocity", dtype)
