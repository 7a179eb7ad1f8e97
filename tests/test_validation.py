"""Bad input raises TypeError (wrong kind or dtype) or ValueError (wrong value or shape) whose
message names the argument, before anything is written.

Every call receives the writeable user arrays of :func:`user_arrays` (``out`` doubles as
``grad_out``; ``param`` and ``velocity`` hold a sentinel), and they are checked unchanged after
the error. Each case spoils one argument of an otherwise valid call (see the last test).
"""

from __future__ import annotations

import types

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import fastsoftmax
from fastsoftmax import _validation as check

SENTINEL = -7.0


def user_arrays(backend) -> types.SimpleNamespace:
    """Fresh arrays a caller could pass (outputs hold the sentinel), and the backend name."""
    rng = np.random.default_rng(0)
    return types.SimpleNamespace(
        backend=backend,
        x=rng.standard_normal((5, 4)),
        labels=np.array([0, 1, 2, 3, 0]),
        soft=np.full((5, 4), 0.25),
        weights=np.ones(5),
        out=np.full((5, 4), SENTINEL),
        out32=np.full((5, 4), SENTINEL, np.float32),
        param=np.full((3, 2), SENTINEL),
        param32=np.full((3, 2), SENTINEL, np.float32),
        grad=np.ones((3, 2)),
        velocity=np.full((3, 2), SENTINEL),
    )


def snapshot(a: types.SimpleNamespace) -> dict:
    return {name: v.copy() for name, v in vars(a).items() if isinstance(v, np.ndarray)}


def assert_unchanged(a: types.SimpleNamespace, before: dict) -> None:
    for name, value in before.items():
        assert_array_equal(getattr(a, name), value, err_msg=f"{name} was written")


def frozen(array: np.ndarray) -> np.ndarray:
    array = array.copy()
    array.flags.writeable = False
    return array


def row_kernel(a, kernel, x=None, **options):
    """``kernel`` of ``a.x`` (or ``x``), writing into ``a.out`` unless it is logsumexp."""
    if kernel != "logsumexp":
        options.setdefault("out", a.out)
    x = a.x if x is None else x
    return getattr(fastsoftmax, kernel)(x, backend=a.backend, **options)


def ce(a, target, logits=None, **options):
    """softmax_cross_entropy of ``a.x`` (or ``logits``), writing the gradient into ``a.out``."""
    options.setdefault("grad_out", a.out)
    logits = a.x if logits is None else logits
    return fastsoftmax.softmax_cross_entropy(logits, target, backend=a.backend, **options)


def sgd(a, param=None, grad=None, **options):
    """sgd_update of ``a.param`` (or ``param``) by ``a.grad`` (or ``grad``)."""
    param = a.param if param is None else param
    grad = a.grad if grad is None else grad
    fastsoftmax.sgd_update(param, grad, backend=a.backend, **options)


RAISES = []


def case(name: str, error: type, match: str, call) -> None:
    RAISES.append(pytest.param(error, match, call, id=name))


BAD_N_THREADS = [(0, ValueError), (-1, ValueError), (1.5, TypeError), (True, TypeError)]

for k in ("softmax", "log_softmax", "logsumexp"):
    for bad, error in [
        (np.ones((2, 2), complex), TypeError),
        (np.array([[1, "a"]], dtype=object), TypeError),
        (np.ones((2, 2), bool), TypeError),
        (np.array([["1", "2"]]), TypeError),
        (np.ones((2, 2), np.float16), TypeError),
        (np.ones((2, 2), np.longdouble), TypeError),
        (np.float64(1.0), ValueError),  # 0-d
    ]:
        case(
            f"{k}-x-{bad.dtype}-{bad.ndim}d",
            error,
            r"\bx\b",
            lambda a, k=k, x=bad: row_kernel(a, k, x),
        )
    for axis, error in [
        (2, ValueError),
        (-3, ValueError),
        (1.0, TypeError),
        (None, TypeError),
        ("0", TypeError),
        (True, TypeError),
    ]:
        case(
            f"{k}-axis-{axis!r}",
            error,
            "axis",
            lambda a, k=k, axis=axis: row_kernel(a, k, axis=axis),
        )
    for n, error in BAD_N_THREADS:
        case(
            f"{k}-n_threads-{n!r}",
            error,
            "n_threads",
            lambda a, k=k, n=n: row_kernel(a, k, n_threads=n),
        )

for k in ("softmax", "log_softmax"):
    for label, error, out in [
        ("wrong-shape", ValueError, lambda a: a.out[:, :3]),
        ("transposed", ValueError, lambda a: a.out.T),
        ("wrong-dtype", TypeError, lambda a: a.out32),
        ("read-only", ValueError, lambda a: frozen(a.out)),
        ("list", TypeError, lambda a: a.out.tolist()),
    ]:
        case(
            f"{k}-out-{label}",
            error,
            r"\bout\b",
            lambda a, k=k, out=out: row_kernel(a, k, out=out(a)),
        )
    case(
        f"{k}-out-float32-for-integer-x",
        TypeError,
        r"\bout\b",
        lambda a, k=k: row_kernel(a, k, np.ones((5, 4), int), out=a.out32),
    )

case("sce-logits-complex", TypeError, "logits", lambda a: ce(a, a.labels, logits=a.x + 0j))
case("sce-logits-float16", TypeError, "logits", lambda a: ce(a, a.labels, a.x.astype(np.float16)))
case("sce-logits-1d", ValueError, "logits", lambda a: ce(a, a.labels[:1], logits=a.x[0]))
case("sce-logits-3d", ValueError, "logits", lambda a: ce(a, a.labels, logits=a.x[None]))
case("sce-logits-no-classes", ValueError, "logits", lambda a: ce(a, a.labels, logits=a.x[:, :0]))
case("sce-labels-float", TypeError, "target", lambda a: ce(a, a.labels * 1.0))
case("sce-labels-bool", TypeError, "target", lambda a: ce(a, a.labels > 0))
case("sce-labels-out-of-range", ValueError, "target", lambda a: ce(a, np.array([0, 1, 2, 4, 0])))
case("sce-labels-negative", ValueError, "target", lambda a: ce(a, np.array([0, -1, 2, 3, 0])))
case(
    "sce-labels-negative-not-ignore-index",
    ValueError,
    "target",
    lambda a: ce(a, np.array([0, -1, 2, 3, 0]), ignore_index=-100),
)
case("sce-labels-2**40", ValueError, "target", lambda a: ce(a, np.array([0, 1, 2, 2**40, 0])))
case(
    "sce-labels-uint64-2**63",
    ValueError,
    "target",
    lambda a: ce(a, np.array([0, 1, 2, 2**63, 0], np.uint64)),
)
case("sce-labels-too-few", ValueError, "target", lambda a: ce(a, a.labels[:4]))
case("sce-labels-too-many", ValueError, "target", lambda a: ce(a, np.append(a.labels, 0)))
case("sce-target-3d", ValueError, "target", lambda a: ce(a, a.soft[None]))
case("sce-soft-target-negative", ValueError, "target", lambda a: ce(a, a.soft - 0.5))
case("sce-soft-target-nan", ValueError, "target", lambda a: ce(a, a.soft * np.nan))
case("sce-soft-target-wrong-shape", ValueError, "target", lambda a: ce(a, a.soft[:, :3]))
case("sce-soft-target-integer", TypeError, "target", lambda a: ce(a, a.soft.astype(int)))
case(
    "sce-soft-target-with-ignore-index",
    ValueError,
    "ignore_index",
    lambda a: ce(a, a.soft, ignore_index=0),
)
case(
    "sce-ignore-index-float", TypeError, "ignore_index", lambda a: ce(a, a.labels, ignore_index=1.0)
)
for label, weights, error in [
    ("too-short", lambda a: a.weights[:4], ValueError),
    ("too-long", lambda a: np.append(a.weights, 1), ValueError),
    ("negative", lambda a: a.weights - 2, ValueError),
    ("nan", lambda a: a.weights * np.nan, ValueError),
    ("inf", lambda a: a.weights * np.inf, ValueError),
    ("sum-overflows", lambda a: a.weights * np.finfo(np.float64).max, ValueError),
    ("complex", lambda a: a.weights + 0j, TypeError),
]:
    case(
        f"sce-sample-weight-{label}",
        error,
        "sample_weight",
        lambda a, w=weights: ce(a, a.labels, sample_weight=w(a)),
    )
for label, class_weight, error in [
    ("one-per-row", lambda a: a.weights, ValueError),  # 5 rows, 4 classes
    ("2-d", lambda a: np.ones((1, 4)), ValueError),
    ("negative", lambda a: np.array([1.0, -1.0, 1.0, 1.0]), ValueError),
    ("nan", lambda a: np.array([1.0, np.nan, 1.0, 1.0]), ValueError),
    ("complex", lambda a: np.ones(4) + 0j, TypeError),
    ("string", lambda a: "balanced", TypeError),
]:
    case(
        f"sce-class-weight-{label}",
        error,
        "class_weight",
        lambda a, c=class_weight: ce(a, a.labels, class_weight=c(a)),
    )
case(
    "sce-class-weight-times-sample-weight-overflows",
    ValueError,
    "sample_weight \\* class_weight",
    lambda a: ce(a, a.labels, sample_weight=a.weights * 1e300, class_weight=np.full(4, 1e300)),
)
for value, error in [
    (-0.1, ValueError),
    (1.1, ValueError),
    (np.nan, ValueError),
    ("0.1", TypeError),
]:
    case(
        f"sce-label-smoothing-{value!r}",
        error,
        "label_smoothing",
        lambda a, s=value: ce(a, a.labels, label_smoothing=s),
    )
for value in ["avg", "MEAN", None]:
    case(
        f"sce-reduction-{value!r}",
        ValueError,
        "reduction",
        lambda a, r=value: ce(a, a.labels, reduction=r),
    )
for label, error, grad_out in [
    ("wrong-shape", ValueError, lambda a: a.out[:4]),
    ("transposed", ValueError, lambda a: a.out.T),
    ("wrong-dtype", TypeError, lambda a: a.out32),
    ("read-only", ValueError, lambda a: frozen(a.out)),
    ("list", TypeError, lambda a: a.out.tolist()),
]:
    case(
        f"sce-grad-out-{label}",
        error,
        "grad_out",
        lambda a, g=grad_out: ce(a, a.labels, grad_out=g(a)),
    )
for n, error in BAD_N_THREADS:
    case(f"sce-n_threads-{n!r}", error, "n_threads", lambda a, n=n: ce(a, a.labels, n_threads=n))

MOMENTUM = dict(lr=0.1, momentum=0.9)
swapped = ">f8" if np.little_endian else "<f8"
case("sgd-param-list", TypeError, "param", lambda a: sgd(a, a.param.tolist(), lr=0.1))
case("sgd-param-float16", TypeError, "param", lambda a: sgd(a, a.param.astype(np.float16), lr=0.1))
case("sgd-param-int", TypeError, "param", lambda a: sgd(a, a.param.astype(int), lr=0.1))
case(
    "sgd-param-byte-swapped", TypeError, "param", lambda a: sgd(a, a.param.astype(swapped), lr=0.1)
)
case("sgd-param-read-only", ValueError, "param", lambda a: sgd(a, frozen(a.param), lr=0.1))
case("sgd-grad-wrong-shape", ValueError, "grad", lambda a: sgd(a, grad=a.grad.T, lr=0.1))
case("sgd-grad-wrong-dtype", TypeError, "grad", lambda a: sgd(a, grad=a.grad.astype("f4"), lr=0.1))
case("sgd-grad-float64-param-float32", TypeError, "grad", lambda a: sgd(a, a.param32, lr=0.1))
for lr, error in [
    (0.0, ValueError),
    (-0.1, ValueError),
    (np.nan, ValueError),
    (np.inf, ValueError),
    ("0.1", TypeError),
    (None, TypeError),
]:
    case(f"sgd-lr-{lr!r}", error, "lr", lambda a, lr=lr: sgd(a, lr=lr))
for momentum in [1.0, 1.5, -0.1, np.nan]:
    case(
        f"sgd-momentum-{momentum!r}",
        ValueError,
        "momentum",
        lambda a, m=momentum: sgd(a, lr=0.1, momentum=m, velocity=a.velocity),
    )
case(
    "sgd-weight-decay-negative",
    ValueError,
    "weight_decay",
    lambda a: sgd(a, lr=0.1, weight_decay=-1),
)
case("sgd-velocity-missing", ValueError, "velocity", lambda a: sgd(a, **MOMENTUM))
for label, error, velocity in [
    ("wrong-shape", ValueError, lambda a: a.velocity[:2]),
    ("wrong-dtype", TypeError, lambda a: a.velocity.astype(np.float32)),
    ("read-only", ValueError, lambda a: frozen(a.velocity)),
    ("is-param", ValueError, lambda a: a.param),
    ("list", TypeError, lambda a: a.velocity.tolist()),
]:
    case(
        f"sgd-velocity-{label}",
        error,
        "velocity",
        lambda a, v=velocity: sgd(a, velocity=v(a), **MOMENTUM),
    )
case(
    "sgd-nesterov-without-momentum",
    ValueError,
    "nesterov",
    lambda a: sgd(a, lr=0.1, nesterov=True, velocity=a.velocity),
)
case(
    "sgd-nesterov-not-bool",
    TypeError,
    "nesterov",
    lambda a: sgd(a, nesterov="yes", velocity=a.velocity, **MOMENTUM),
)
for n, error in BAD_N_THREADS:
    case(f"sgd-n_threads-{n!r}", error, "n_threads", lambda a, n=n: sgd(a, lr=0.1, n_threads=n))


@pytest.mark.parametrize(("error", "match", "call"), RAISES)
def test_bad_input_raises_before_writing(error, match, call, backend):
    arrays = user_arrays(backend)
    before = snapshot(arrays)
    with pytest.raises(error, match=match):
        call(arrays)
    assert_unchanged(arrays, before)


VALID_CALLS = {
    "logsumexp": lambda a: row_kernel(a, "logsumexp"),
    "softmax": lambda a: row_kernel(a, "softmax"),
    "log_softmax": lambda a: row_kernel(a, "log_softmax"),
    "softmax_cross_entropy": lambda a: ce(a, a.labels),
    "sgd_update": lambda a: sgd(a, velocity=a.velocity, **MOMENTUM),
}


@pytest.mark.parametrize("kernel", list(VALID_CALLS))
def test_the_calls_spoiled_above_are_valid(kernel, backend):
    VALID_CALLS[kernel](user_arrays(backend))


@pytest.mark.parametrize("name", ["nope", "NUMPY", "", "auto "])
@pytest.mark.parametrize("kernel", list(VALID_CALLS))
def test_unknown_backend_name_raises_listing_the_backends(kernel, name):
    arrays = user_arrays(name)
    before = snapshot(arrays)
    with pytest.raises(ValueError, match="backend") as info:
        VALID_CALLS[kernel](arrays)
    for backend in ("numpy", "numba", "cython"):
        assert repr(backend) in str(info.value), f"{backend!r} is not listed in: {info.value}"
    assert_unchanged(arrays, before)


@pytest.mark.parametrize("kernel", list(VALID_CALLS))
def test_backend_name_must_be_a_string(kernel):
    with pytest.raises(TypeError, match="backend"):
        VALID_CALLS[kernel](user_arrays(1))


# -- arrays of other libraries (DLPack) --------------------------------------------------------


class _DeviceArray:
    """Stands for an array in GPU memory: it exports DLPack from device type 2 (CUDA)."""

    def __dlpack_device__(self):
        return (2, 0)

    def __dlpack__(self, **kwargs):
        raise AssertionError("a device array must be refused before it is exported")


def test_a_cpu_tensor_is_read_through_dlpack_without_a_copy():
    torch = pytest.importorskip("torch")
    tensor = torch.randn(3, 4)
    array = check.as_array(tensor, "x")
    assert array.ctypes.data == tensor.data_ptr() and array.dtype == np.float32
    assert_allclose(fastsoftmax.softmax(tensor), fastsoftmax.softmax(tensor.numpy()))
    loss, _ = fastsoftmax.softmax_cross_entropy(tensor, torch.tensor([0, 1, 3]))
    assert loss == fastsoftmax.softmax_cross_entropy(tensor.numpy(), [0, 1, 3])[0]


@pytest.mark.parametrize("case", ["requires_grad", "bfloat16", "meta"])
def test_a_tensor_dlpack_cannot_export_is_refused_by_argument_name(case):
    torch = pytest.importorskip("torch")
    tensor = {
        "requires_grad": lambda: torch.zeros(2, 3, requires_grad=True),
        "bfloat16": lambda: torch.zeros(2, 3, dtype=torch.bfloat16),
        "meta": lambda: torch.zeros(2, 3, device="meta"),
    }[case]()
    with pytest.raises(TypeError, match=r"^x \(Tensor\) cannot be read as a NumPy array"):
        fastsoftmax.softmax(tensor)
    with pytest.raises(TypeError, match=r"^target \(Tensor\) cannot be read"):
        fastsoftmax.softmax_cross_entropy(np.zeros((2, 3)), tensor)


def test_a_device_array_is_refused_by_argument_name():
    with pytest.raises(TypeError, match=r"^x \(_DeviceArray\) is in device memory .*type 2"):
        fastsoftmax.softmax(_DeviceArray())
    with pytest.raises(TypeError, match=r"^grad \(_DeviceArray\) is in device memory"):
        fastsoftmax.sgd_update(np.zeros(3), _DeviceArray(), lr=0.1)
