"""What softmax, log_softmax and logsumexp return, stated row by row, for every backend and dtype.

Each rule is checked on the same rows presented in several memory layouts (C, Fortran, strided,
read-only, reduced over axis 0, the middle axis of a 3-D array), and ``out=`` is checked in every
layout, including ``x`` itself and a partial overlap with ``x``.
"""

from __future__ import annotations

import numpy as np
import pytest
from cases import UNARY_ROW_KERNELS, assert_close
from numpy.testing import assert_allclose, assert_array_equal

import fastsoftmax

NAN, INF = np.nan, np.inf
LOG3 = np.log(3.0)
NAN4 = [NAN] * 4

# (row, softmax, log_softmax, logsumexp)
ROW_RULES = {
    "finite": ([0, 0, LOG3, LOG3], [1 / 8, 1 / 8, 3 / 8, 3 / 8], np.log([1, 1, 3, 3]) - np.log(8),
               np.log(8)),
    "nan": ([1, NAN, 2, 3], NAN4, NAN4, NAN),
    "all-nan": (NAN4, NAN4, NAN4, NAN),
    "posinf": ([1, INF, 2, 3], NAN4, NAN4, INF),
    "two-posinf": ([INF, INF, 1, 1], NAN4, NAN4, INF),
    "posinf-and-neginf": ([INF, -INF, 1, 1], NAN4, NAN4, INF),
    "nan-then-posinf": ([NAN, INF, 1, 1], NAN4, NAN4, NAN),
    "posinf-then-nan": ([INF, NAN, 1, 1], NAN4, NAN4, NAN),
    "nan-among-neginf": ([-INF, NAN, -INF, -INF], NAN4, NAN4, NAN),
    "all-neginf": ([-INF] * 4, NAN4, NAN4, -INF),
    "some-neginf": ([-INF, 0, -INF, LOG3], [0, 0.25, 0, 0.75],
                    [-INF, np.log(0.25), -INF, np.log(0.75)], np.log(4)),
    "one-finite": ([-INF, -INF, -INF, 7], [0, 0, 0, 1], [-INF, -INF, -INF, 0], 7),
}  # fmt: skip
RULE_ROWS = np.array([rule[0] for rule in ROW_RULES.values()])


def presented(rows: np.ndarray, layout: str):
    """``rows`` (n, k) laid out as ``layout``: (array, axis, function mapping a result of the
    array's shape, or a keepdims reduction of it, back to (n, k) or (n, 1))."""
    same = lambda r: r  # noqa: E731
    if layout == "C":
        return np.ascontiguousarray(rows), -1, same
    if layout == "fortran":
        return np.asfortranarray(rows), -1, same
    if layout == "strided":
        big = np.full((2 * rows.shape[0], 3 * rows.shape[1]), 99.0, rows.dtype)
        big[::2, ::3] = rows
        return big[::2, ::3], -1, same
    if layout == "read-only":
        frozen = rows.copy()
        frozen.flags.writeable = False
        return frozen, -1, same
    if layout == "axis0":
        return rows.T, 0, lambda r: r.T
    if layout == "3d-middle-axis":
        return np.repeat(rows[:, :, None], 2, axis=2), -2, lambda r: r[:, :, 1]
    raise AssertionError(layout)


LAYOUTS = ["C", "fortran", "strided", "read-only", "axis0", "3d-middle-axis"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("kernel", ["softmax", "log_softmax", "logsumexp"])
def test_each_row_rule_holds_in_every_layout(kernel, layout, backend, dtype):
    x, axis, to_rows = presented(RULE_ROWS.astype(dtype), layout)
    before = x.copy()
    if kernel == "logsumexp":
        got = to_rows(fastsoftmax.logsumexp(x, axis=axis, keepdims=True, backend=backend))[:, 0]
    else:
        got = to_rows(getattr(fastsoftmax, kernel)(x, axis=axis, backend=backend))
    column = {"softmax": 1, "log_softmax": 2, "logsumexp": 3}[kernel]
    for i, (name, rule) in enumerate(ROW_RULES.items()):
        what = f"{kernel} of row {name} {rule[0]}, backend={backend}, layout={layout}"
        assert got[i].dtype == dtype, what
        assert_close(got[i], rule[column], dtype, what)
    assert_array_equal(x, before, err_msg="the input was modified")


@pytest.mark.parametrize("v", [0.0, 1.0, 1e10, 1e30, -1e10, -1e30])
def test_two_equal_values_give_half_and_minus_log_2(v, backend, dtype):
    x = np.array([v, v], dtype=dtype)
    what = f"v={v}, backend={backend}, dtype={np.dtype(dtype)}"
    assert_allclose(fastsoftmax.softmax(x, backend=backend), [0.5, 0.5], rtol=1e-6, err_msg=what)
    log_softmax = fastsoftmax.log_softmax(x, backend=backend)
    assert_allclose(log_softmax, [-np.log(2)] * 2, rtol=1e-6, err_msg=what)
    lse = fastsoftmax.logsumexp(x, backend=backend)
    assert_allclose(lse, np.float64(dtype(v)) + np.log(2), rtol=1e-6, err_msg=what)


def test_single_class_gives_probability_one(backend, dtype, rng):
    x = (10 * rng.standard_normal((7, 1))).astype(dtype)
    assert_array_equal(fastsoftmax.softmax(x, backend=backend), np.ones_like(x))
    assert_array_equal(fastsoftmax.log_softmax(x, backend=backend), np.zeros_like(x))
    assert_close(fastsoftmax.logsumexp(x, backend=backend), x[:, 0], dtype, "logsumexp")
    cube = x.reshape(7, 1, 1)
    assert_array_equal(fastsoftmax.softmax(cube, axis=1, backend=backend), np.ones_like(cube))


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((0, 5), -1), ((0, 5), 0), ((4, 0), -1), ((4, 0), 0), ((0,), 0), ((2, 0, 3), 1)],
)
def test_empty_input_gives_empty_output_and_logsumexp_neg_inf(shape, axis, backend, dtype):
    x = np.empty(shape, dtype)
    for kernel in ("softmax", "log_softmax"):
        got = getattr(fastsoftmax, kernel)(x, axis=axis, backend=backend)
        assert got.shape == shape and got.dtype == dtype, kernel
    lse = fastsoftmax.logsumexp(x, axis=axis, backend=backend)
    reduced = shape[: axis % len(shape)] + shape[axis % len(shape) + 1 :]
    assert np.shape(lse) == reduced and lse.dtype == dtype
    assert_array_equal(lse, np.full(reduced, -np.inf))  # an empty sum is 0: its log is -inf


def test_logsumexp_keepdims_and_scalar_result(backend, dtype, rng):
    cube = rng.standard_normal((3, 4, 5)).astype(dtype)
    kept = fastsoftmax.logsumexp(cube, axis=1, keepdims=True, backend=backend)
    assert kept.shape == (3, 1, 5) and kept.dtype == dtype
    assert_close(kept[:, 0], fastsoftmax.logsumexp(cube, axis=1, backend=backend), dtype, "")
    scalar = fastsoftmax.logsumexp(cube[0, 0], backend=backend)
    assert np.ndim(scalar) == 0 and isinstance(scalar, np.generic) and scalar.dtype == dtype


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2, -3])
def test_softmax_along_any_axis_of_3d_array(axis, backend, dtype, rng):
    x = (3 * rng.standard_normal((4, 5, 6))).astype(dtype)
    p = fastsoftmax.softmax(x, axis=axis, backend=backend)
    log_p = fastsoftmax.log_softmax(x, axis=axis, backend=backend)
    assert_close(p.sum(axis=axis), np.ones(np.delete(x.shape, axis)), dtype, "sum of softmax")
    assert_close(np.exp(log_p.astype(np.float64)), p, dtype, "exp(log_softmax) != softmax")
    lse = fastsoftmax.logsumexp(x, axis=axis, keepdims=True, backend=backend)
    assert_close(log_p, x - lse, dtype, "log_softmax != x - logsumexp")
    moved = fastsoftmax.softmax(np.moveaxis(x, axis, -1).copy(), backend=backend)
    assert_close(p, np.moveaxis(moved, -1, axis), dtype, "softmax along axis != moveaxis")


@pytest.mark.parametrize("int_dtype", [np.int8, np.int32, np.int64, np.uint8, np.uint64])
def test_integer_input_gives_float64(int_dtype, backend):
    x = np.array([[0, 1, 2], [3, 3, 3]], dtype=int_dtype)
    expected = fastsoftmax.softmax(x.astype(np.float64), backend=backend)
    for kernel in UNARY_ROW_KERNELS:
        assert getattr(fastsoftmax, kernel)(x, backend=backend).dtype == np.float64, kernel
    assert_array_equal(fastsoftmax.softmax(x, backend=backend), expected)
    assert fastsoftmax.softmax([[0, 1], [2, 3]], backend=backend).dtype == np.float64


def test_float32_stays_float32(backend):
    x = np.zeros((2, 3), np.float32)
    for kernel in UNARY_ROW_KERNELS:
        assert getattr(fastsoftmax, kernel)(x, backend=backend).dtype == np.float32, kernel


SENTINEL = -7.0
OUT_LAYOUTS = ["C", "fortran", "strided-view", "x-itself", "overlapping-x"]
X_SHAPES = [((7, 5), "C", -1), ((7, 5), "F", -1), ((7, 5), "C", 0), ((3, 4, 5), "C", 1),
            ((3, 4, 5), "F", -3), ((12,), "C", 0)]  # fmt: skip


def output_for(x: np.ndarray, layout: str):
    """(x to pass, out to pass, the bigger array holding out or None)."""
    if layout in ("C", "fortran"):
        return x, np.full(x.shape, SENTINEL, x.dtype, order=layout[0].upper()), None
    if layout == "strided-view":
        big = np.full([2 * n + 1 for n in x.shape], SENTINEL, x.dtype)
        return x, big[(slice(1, None, 2),) * x.ndim], big
    if layout == "x-itself":
        return x, x, None
    if layout == "overlapping-x":  # out is x shifted by one along the first axis
        big = np.empty((x.shape[0] + 1, *x.shape[1:]), x.dtype)
        big[:-1] = x
        return big[:-1], big[1:], None
    raise AssertionError(layout)


@pytest.mark.parametrize("out_layout", OUT_LAYOUTS)
@pytest.mark.parametrize(("shape", "order", "axis"), X_SHAPES)
@pytest.mark.parametrize("kernel", ["softmax", "log_softmax"])
def test_out_of_every_layout(kernel, shape, order, axis, out_layout, backend, dtype, rng):
    x = np.asarray(3 * rng.standard_normal(shape), dtype=dtype, order=order)
    x, out, big = output_for(x, out_layout)
    expected = getattr(fastsoftmax, kernel)(x.copy(), axis=axis, backend=backend)
    got = getattr(fastsoftmax, kernel)(x, axis=axis, out=out, backend=backend)
    what = f"{kernel}(shape={shape}, order={order}, axis={axis}) out={out_layout}, {backend}"
    assert got is out, f"{what}: did not return out"
    assert_close(out, expected, dtype, what)
    if big is not None:
        outside = np.ones(big.shape, bool)
        outside[(slice(1, None, 2),) * x.ndim] = False
        assert (big[outside] == SENTINEL).all(), f"{what}: wrote outside the out view"
