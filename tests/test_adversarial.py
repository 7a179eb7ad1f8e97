"""Adversarial input for every public function and backend: each call either works as the README
documents (and gives the same result as the plain call it stands for) or raises TypeError or
ValueError naming the argument; either way no input is modified, and a call that raises writes
no output either.

The cases here are the ones ``test_validation.py`` (plain bad arguments), ``test_semantics.py``
and ``test_cross_entropy.py`` (layouts, overlaps, integer dtypes) do not already cover:
ragged and masked input, 0-d arrays where arrays are needed, every integer width at its limits,
byte-swapped outputs, outputs overlapping another argument, scalars beyond float64's range,
and the fused linear kernel's arguments.
"""

from __future__ import annotations

import re
import types

import numpy as np
import pytest
from cases import UNARY_ROW_KERNELS
from numpy.testing import assert_array_equal

import fastsoftmax

SENTINEL = -7.0
SWAPPED = {np.dtype(t): np.dtype(t).newbyteorder("S") for t in (np.float32, np.float64)}
ROW_KERNELS = UNARY_ROW_KERNELS


def user_arrays(backend: str) -> types.SimpleNamespace:
    """Fresh arrays a caller could pass; outputs hold a sentinel, so any write shows."""
    rng = np.random.default_rng(3)
    soft = rng.random((5, 4))
    return types.SimpleNamespace(
        backend=backend,
        x=rng.standard_normal((5, 4)),
        square=rng.standard_normal((4, 4)),
        labels=np.array([0, 1, 2, 3, 0]),
        soft=soft / soft.sum(axis=1, keepdims=True),
        weights=rng.random(5) + 0.5,
        out=np.full((5, 4), SENTINEL),
        param=rng.standard_normal((3, 2)),
        grad=rng.standard_normal((3, 2)),
        velocity=rng.standard_normal((3, 2)),
        buffer=rng.standard_normal(13),  # for arguments that overlap each other
        W=rng.standard_normal((4, 3)),
        b=rng.standard_normal(4),
        X=rng.standard_normal((5, 3)),
    )


def snapshot(a: types.SimpleNamespace) -> dict:
    return {name: v.copy() for name, v in vars(a).items() if isinstance(v, np.ndarray)}


def assert_unchanged(a: types.SimpleNamespace, before: dict, written=()) -> None:
    for name, value in before.items():
        if name not in written:
            assert_array_equal(getattr(a, name), value, err_msg=f"{name} was modified")


# -- the calls, on the arrays of a namespace -------------------------------------------------


def row(kernel, x, a, **options):
    return getattr(fastsoftmax, kernel)(x, backend=a.backend, **options)


def ce(logits, target, a, **options):
    return fastsoftmax.softmax_cross_entropy(logits, target, backend=a.backend, **options)


def sgd(param, grad, a, **options):
    """sgd_update, returning what it updated in place."""
    fastsoftmax.sgd_update(param, grad, backend=a.backend, **options)
    return param, options.get("velocity")


def linear(a, X=None, W=None, b=None, y=None, **options):
    return fastsoftmax.linear_softmax_cross_entropy(
        a.X if X is None else X,
        a.W if W is None else W,
        a.b if b is None else b,
        a.labels if y is None else y,
        backend=a.backend,
        **options,
    )


MOMENTUM = dict(lr=0.1, momentum=0.9, weight_decay=0.01)

# -- the cases -------------------------------------------------------------------------------

RAISES, WORKS = [], []


def raises(name, error, argument, call, marks=()):
    """``call(arrays)`` must raise ``error`` with ``argument`` named in its message."""
    RAISES.append(pytest.param(error, argument, call, id=name, marks=marks))


def works(name, call, expected, written=(), marks=(), exact=True):
    """``call(arrays)`` must return what ``expected(arrays)`` does on a fresh namespace, and
    modify nothing but the namespace arrays in ``written`` (its documented outputs).

    ``exact=False`` for a call whose output *is* its input: then Numba's LLVM loops take the
    alias-checked scalar version instead of the vectorised one, whose sums are associated
    differently, so the result may differ from the out-of-place one by rounding (measured:
    one ulp of the largest gradient entry, for k from 4 to 1000); compared to 8 ulps of the
    largest entry.
    """
    WORKS.append(pytest.param(call, expected, written, exact, id=name, marks=marks))


def zero_row(result, i):
    """(losses, grad) with row ``i`` zeroed."""
    losses, grad = (r.copy() for r in result)
    losses[i], grad[i] = 0, 0
    return losses, grad


def masked(values):
    return np.ma.masked_array(values, mask=np.zeros(np.shape(values), bool))


RAGGED = [[0.0, 1.0], [2.0]]

for k in ROW_KERNELS:
    raises(f"{k}-x-ragged-list", ValueError, "x", lambda a, k=k: row(k, RAGGED, a))
    raises(f"{k}-x-masked", TypeError, "x", lambda a, k=k: row(k, masked(a.x), a))
    raises(
        f"{k}-x-datetime",
        TypeError,
        "x",
        lambda a, k=k: row(k, np.array(["2020-01-01", "2021-01-01"], "datetime64[D]"), a),
    )
    works(f"{k}-x-list", lambda a, k=k: row(k, a.x.tolist(), a), lambda a, k=k: row(k, a.x, a))
    works(
        f"{k}-x-tuple-of-uint64-max",
        lambda a, k=k: row(k, ((2**64 - 1, 0), (3, 2**63)), a),
        lambda a, k=k: row(k, np.array([[2.0**64, 0], [3, 2.0**63]]), a),
    )
    works(
        f"{k}-axis-numpy-integer",
        lambda a, k=k: row(k, a.x, a, axis=np.int8(0)),
        lambda a, k=k: row(k, a.x, a, axis=0),
    )
    works(
        f"{k}-n_threads-2**100",
        lambda a, k=k: row(k, a.x, a, n_threads=2**100),
        lambda a, k=k: row(k, a.x, a),
    )
    works(
        f"{k}-n_threads-numpy-uint8",
        lambda a, k=k: row(k, a.x, a, n_threads=np.uint8(2)),
        lambda a, k=k: row(k, a.x, a),
    )

for k in ("softmax", "log_softmax"):
    raises(
        f"{k}-out-byte-swapped",
        TypeError,
        "out",
        lambda a, k=k: row(k, a.x, a, out=a.out.astype(SWAPPED[a.out.dtype])),
    )
    raises(
        f"{k}-out-is-a-byte-swapped-x",
        TypeError,
        "out",
        lambda a, k=k: row(k, (s := a.x.astype(SWAPPED[a.x.dtype])), a, out=s),
    )
    raises(
        f"{k}-out-is-an-integer-x",
        TypeError,
        "out",
        lambda a, k=k: row(k, (i := a.labels.reshape(5, 1)), a, out=i),
    )
    works(
        f"{k}-out-is-x-transposed",  # the same memory in the other order: x is read first
        lambda a, k=k: row(k, a.square, a, out=a.square.T),
        lambda a, k=k: row(k, a.square, a),
        written=("square",),
    )
    works(
        f"{k}-out-is-a-reversed-view-of-x",
        lambda a, k=k: row(k, a.x, a, out=a.x[::-1, ::-1]),
        lambda a, k=k: row(k, a.x, a),
        written=("x",),
    )

# softmax_cross_entropy
raises("sce-logits-ragged-list", ValueError, "logits", lambda a: ce(RAGGED, a.labels[:2], a))
raises("sce-logits-masked", TypeError, "logits", lambda a: ce(masked(a.x), a.labels, a))
raises("sce-logits-bool", TypeError, "logits", lambda a: ce(a.x > 0, a.labels, a))
raises("sce-logits-0d", ValueError, "logits", lambda a: ce(np.float64(1.0), a.labels, a))
raises("sce-target-0d", ValueError, "target", lambda a: ce(a.x, np.int64(1), a))
raises("sce-labels-nan", TypeError, "target", lambda a: ce(a.x, np.array([0, 1, np.nan, 3, 0]), a))
raises("sce-labels-object", TypeError, "target", lambda a: ce(a.x, a.labels.astype(object), a))
raises("sce-soft-target-bool", TypeError, "target", lambda a: ce(a.x, a.soft > 0.2, a))
raises(
    "sce-soft-target-inf",
    ValueError,
    "target",
    lambda a: ce(a.x, np.where(a.soft > 0.3, np.inf, a.soft), a),
)
raises(
    "sce-target-ragged-list",
    ValueError,
    "target",
    lambda a: ce(a.x[:2], [[0.5, 0.5, 0, 0], [1.0]], a),
)
for int_dtype in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
    info = np.iinfo(int_dtype)
    limits = [info.max] + ([info.min] if info.min < 0 else [])
    for limit in limits:
        raises(
            f"sce-labels-{np.dtype(int_dtype).name}-{'max' if limit == info.max else 'min'}",
            ValueError,
            "target",
            lambda a, t=int_dtype, v=limit: ce(a.x, np.array([0, 1, v, 3, 0], dtype=t), a),
        )
    works(
        f"sce-labels-{np.dtype(int_dtype).name}-ignore-index-at-the-limit",
        lambda a, t=int_dtype, v=limits[-1]: ce(
            a.x, np.array([0, 1, v, 3, 0], dtype=t), a, ignore_index=int(v)
        ),
        lambda a: ce(a.x, np.array([0, 1, -100, 3, 0]), a, ignore_index=-100),
    )
for label, weights, error in [
    ("bool", lambda a: a.weights > 1, TypeError),
    ("column", lambda a: a.weights[:, None], ValueError),
    ("0d", lambda a: np.float64(1.0), ValueError),
    ("ragged-list", lambda a: [1.0, [1.0, 2.0], 1.0, 1.0, 1.0], ValueError),
    ("masked", lambda a: masked(a.weights), TypeError),
    ("datetime", lambda a: np.arange(5).astype("datetime64[s]"), TypeError),
]:
    raises(
        f"sce-sample-weight-{label}",
        error,
        "sample_weight",
        lambda a, w=weights: ce(a.x, a.labels, a, sample_weight=w(a)),
    )
for label, value, error in [
    ("inf", np.inf, ValueError),
    ("True", True, TypeError),
    ("10**400", 10**400, ValueError),
]:
    raises(
        f"sce-label-smoothing-{label}",
        error,
        "label_smoothing",
        lambda a, s=value: ce(a.x, a.labels, a, label_smoothing=s),
    )
raises(
    "sce-grad-out-byte-swapped",
    TypeError,
    "grad_out",
    lambda a: ce(a.x, a.labels, a, grad_out=a.out.astype(SWAPPED[a.out.dtype])),
)
raises(
    "sce-grad-out-is-integer-logits",
    TypeError,
    "grad_out",
    lambda a: ce((i := np.arange(20).reshape(5, 4)), a.labels, a, grad_out=i),
)
works(
    "sce-lists-everywhere",
    lambda a: ce(a.x.tolist(), a.labels.tolist(), a, sample_weight=a.weights.tolist()),
    lambda a: ce(a.x, a.labels, a, sample_weight=a.weights),
)
works(
    "sce-soft-target-list",
    lambda a: ce(a.x, a.soft.tolist(), a, reduction="none"),
    lambda a: ce(a.x, a.soft, a, reduction="none"),
)
works(
    "sce-integer-logits",
    lambda a: ce(np.arange(20).reshape(5, 4), a.labels, a),
    lambda a: ce(np.arange(20.0).reshape(5, 4), a.labels, a),
)
works(
    "sce-soft-target-float16",  # converted to the logits' dtype, as documented
    lambda a: ce(a.x, a.soft.astype(np.float16), a),
    lambda a: ce(a.x, a.soft.astype(np.float16).astype(np.float64), a),
)
works(
    "sce-soft-target-zero-row",  # t = 0: loss 0 and gradient 0 (w (p sum t - t))
    lambda a: ce(a.x, np.where(np.arange(5)[:, None] == 2, 0.0, a.soft), a, reduction="none"),
    lambda a: zero_row(ce(a.x, a.soft, a, reduction="none"), 2),
)
works(
    "sce-weights-int-float16-list",
    lambda a: ce(a.x, a.labels, a, sample_weight=np.array([1, 2, 3, 0, 1], np.float16)),
    lambda a: ce(a.x, a.labels, a, sample_weight=[1.0, 2.0, 3.0, 0.0, 1.0]),
)
works(
    "sce-ignore-index-10**400",
    lambda a: ce(a.x, a.labels, a, ignore_index=10**400),
    lambda a: ce(a.x, a.labels, a),
)
works(
    "sce-ignore-index-minus-1-with-uint8-labels",
    lambda a: ce(a.x, a.labels.astype(np.uint8), a, ignore_index=-1),
    lambda a: ce(a.x, a.labels, a),
)
works(
    "sce-label-smoothing-numpy-float32-and-reduction-numpy-str",
    lambda a: ce(a.x, a.labels, a, label_smoothing=np.float32(0.25), reduction=np.str_("sum")),
    lambda a: ce(a.x, a.labels, a, label_smoothing=0.25, reduction="sum"),
)
works(
    "sce-n_threads-2**100",
    lambda a: ce(a.x, a.soft, a, n_threads=2**100),
    lambda a: ce(a.x, a.soft, a),
)
works(
    "sce-grad-out-is-logits-and-target",  # one array as all three: the target is read first
    lambda a: ce(a.soft, a.soft, a, grad_out=a.soft, label_smoothing=0.1),
    lambda a: ce(a.soft, a.soft.copy(), a, label_smoothing=0.1),
    written=("soft",),
    exact=False,
)
works(
    "sce-grad-out-overlaps-the-soft-target",  # grad rows 0-3 are target rows 1-4
    lambda a: ce(a.x[:4], (o := a.soft.copy())[1:], a, grad_out=o[:4]),
    lambda a: ce(a.x[:4], a.soft[1:], a),
)
works(
    "sce-grad-out-overlaps-sample-weight",  # the weights are column 1 of grad_out
    lambda a: ce(a.x, a.labels, a, grad_out=(g := np.ones((5, 4))), sample_weight=g[:, 1]),
    lambda a: ce(a.x, a.labels, a, sample_weight=np.ones(5)),
)
works(
    "sce-grad-out-is-logits-transposed",
    lambda a: ce(a.square, a.labels[:4], a, grad_out=a.square.T),
    lambda a: ce(a.square, a.labels[:4], a),
    written=("square",),
)
works(
    "sce-all-rows-ignored-sum",
    lambda a: ce(a.x, np.full(5, -1), a, ignore_index=-1, reduction="sum"),
    lambda a: (np.float64(0.0), np.zeros((5, 4))),
)

# sgd_update
raises("sgd-grad-ragged-list", ValueError, "grad", lambda a: sgd(a.param, RAGGED, a, lr=0.1))
raises("sgd-grad-masked", TypeError, "grad", lambda a: sgd(a.param, masked(a.grad), a, lr=0.1))
raises("sgd-grad-0d", ValueError, "grad", lambda a: sgd(a.param, np.float64(1.0), a, lr=0.1))
raises(
    "sgd-grad-int", TypeError, "grad", lambda a: sgd(a.param, np.arange(6).reshape(3, 2), a, lr=0.1)
)
raises(
    "sgd-grad-list-for-float32-param",
    TypeError,
    "grad",
    lambda a: sgd(a.param.astype(np.float32), a.grad.tolist(), a, lr=0.1),
)
raises(
    "sgd-velocity-overlaps-param",
    ValueError,
    "velocity",
    lambda a: sgd(a.buffer[:6], a.grad.ravel(), a, velocity=a.buffer[3:9], **MOMENTUM),
)
raises(
    "sgd-velocity-byte-swapped",
    TypeError,
    "velocity",
    lambda a: sgd(
        a.param, a.grad, a, velocity=a.velocity.astype(SWAPPED[a.velocity.dtype]), **MOMENTUM
    ),
)
for name, argument, value, error in [
    ("lr-10**400", "lr", dict(lr=10**400), ValueError),
    ("lr-minus-10**400", "lr", dict(lr=-(10**400)), ValueError),
    ("lr-complex", "lr", dict(lr=0.1j), TypeError),
    ("momentum-10**400", "momentum", dict(lr=0.1, momentum=10**400), ValueError),
    ("weight-decay-nan", "weight_decay", dict(lr=0.1, weight_decay=np.nan), ValueError),
    ("weight-decay-inf", "weight_decay", dict(lr=0.1, weight_decay=np.inf), ValueError),
    ("weight-decay-10**400", "weight_decay", dict(lr=0.1, weight_decay=10**400), ValueError),
]:
    raises(
        f"sgd-{name}",
        error,
        argument,
        lambda a, v=value: sgd(a.param, a.grad, a, velocity=a.velocity, **v),
    )
works(
    "sgd-param-0d",
    lambda a: sgd(np.array(2.0), np.array(1.0), a, lr=0.5, weight_decay=0.5),
    lambda a: (np.array(2.0 - 0.5 * (1.0 + 0.5 * 2.0)), None),
)
works(
    "sgd-grad-list",
    lambda a: sgd(a.param, a.grad.tolist(), a, **MOMENTUM, velocity=a.velocity),
    lambda a: sgd(a.param, a.grad, a, **MOMENTUM, velocity=a.velocity),
    written=("param", "velocity"),
)
works(
    "sgd-grad-is-velocity",  # the input that is the output: read before written
    lambda a: sgd(a.param, a.velocity, a, **MOMENTUM, velocity=a.velocity),
    lambda a: sgd(a.param, a.velocity.copy(), a, **MOMENTUM, velocity=a.velocity),
    written=("param", "velocity"),
)
works(
    "sgd-grad-overlaps-velocity",  # velocity is grad shifted by one element
    lambda a: sgd(a.param.ravel(), a.buffer[:6], a, **MOMENTUM, velocity=a.buffer[1:7]),
    lambda a: sgd(a.param.ravel(), a.buffer[:6].copy(), a, **MOMENTUM, velocity=a.buffer[1:7]),
    written=("param", "buffer"),
)
works(
    "sgd-velocity-of-the-wrong-shape-without-momentum",  # ignored, as documented
    lambda a: sgd(a.param, a.grad, a, lr=0.1, velocity=a.velocity[:1]),
    lambda a: (sgd(a.param, a.grad, a, lr=0.1)[0], a.velocity[:1]),
    written=("param",),
)
works(
    "sgd-numpy-scalars",
    lambda a: sgd(
        a.param, a.grad, a, lr=np.float32(0.5), momentum=np.float64(0.5), velocity=a.velocity,
        weight_decay=np.int64(0), nesterov=np.bool_(True), n_threads=np.int32(2**31 - 1),
    ),
    lambda a: sgd(
        a.param, a.grad, a, lr=float(np.float32(0.5)), momentum=0.5, velocity=a.velocity,
        nesterov=True,
    ),
    written=("param", "velocity"),
)  # fmt: skip

# linear_softmax_cross_entropy
raises(
    "linear-X-ragged",
    ValueError,
    "X",
    lambda a: linear(a, X=[[1.0, 2.0, 3.0], [1.0]], y=a.labels[:2]),
)
raises("linear-W-float16", TypeError, "W", lambda a: linear(a, W=a.W.astype(np.float16)))
raises("linear-b-wrong-shape", ValueError, r"\bb\b", lambda a: linear(a, b=a.b[:3]))
raises("linear-X-wrong-dtype", TypeError, "X", lambda a: linear(a, X=a.X.astype(np.float32)))
raises("linear-l2-nan", ValueError, "l2", lambda a: linear(a, l2=np.nan))
raises(
    "linear-sample-weight-all-zero",
    ValueError,
    "sample_weight",
    lambda a: linear(a, sample_weight=np.zeros(5)),
)
raises("linear-y-out-of-range", ValueError, r"\by\b", lambda a: linear(a, y=a.labels + 1))
raises("linear-y-wrong-length", ValueError, r"\by\b", lambda a: linear(a, y=a.labels[:4]))
raises("linear-y-float", TypeError, r"\by\b", lambda a: linear(a, y=a.labels * 1.0))
works(
    "linear-chunk-rows-numpy-integer",
    lambda a: linear(a, chunk_rows=np.int64(2)),
    lambda a: linear(a, chunk_rows=2),
)
works(
    "linear-lists",
    lambda a: linear(a, X=a.X.tolist(), y=a.labels.tolist(), sample_weight=a.weights.tolist()),
    lambda a: linear(a, sample_weight=a.weights),
)


@pytest.mark.parametrize(("error", "argument", "call"), RAISES)
def test_bad_input_raises_naming_the_argument_and_writes_nothing(error, argument, call, backend):
    arrays = user_arrays(backend)
    before = snapshot(arrays)
    with pytest.raises((TypeError, ValueError)) as info:
        call(arrays)
    assert info.type is error, f"raised {info.type.__name__}({info.value}), expected {error}"
    pattern = argument if argument.startswith("\\") else rf"\b{argument}\b"
    assert re.search(pattern, str(info.value)), f"{argument!r} is not named in: {info.value}"
    assert_unchanged(arrays, before)


def assert_same(got, expected, where: str, exact: bool = True) -> None:
    if isinstance(expected, tuple):
        assert isinstance(got, tuple) and len(got) == len(expected), f"{where}: got {got!r}"
        for i, (g, e) in enumerate(zip(got, expected, strict=True)):
            assert_same(g, e, f"{where}[{i}]", exact)
    elif expected is None:
        assert got is None, f"{where}: got {got!r}"
    else:
        got = np.asarray(got)
        assert got.dtype == np.asarray(expected).dtype, f"{where}: dtype {got.dtype}"
        if exact:
            assert_array_equal(got, expected, err_msg=where, strict=True)
        else:
            assert got.shape == np.shape(expected), f"{where}: shape {got.shape}"
            atol = 8 * np.finfo(got.dtype).eps * np.max(np.abs(expected), initial=0)
            np.testing.assert_allclose(got, expected, rtol=0, atol=atol, err_msg=where)


@pytest.mark.parametrize(("call", "expected", "written", "exact"), WORKS)
def test_odd_but_valid_input_gives_the_plain_result(call, expected, written, exact, backend):
    want = expected(user_arrays(backend))
    arrays = user_arrays(backend)
    before = snapshot(arrays)
    got = call(arrays)
    assert_same(got, want, f"backend={backend}", exact)
    assert_unchanged(arrays, before, written)
