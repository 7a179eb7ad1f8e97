"""Every rule about inputs, and its error message, lives here.

Checks raise ``TypeError`` for a wrong kind of object or dtype and ``ValueError`` for a wrong
value or shape; each message names the argument and says what was expected. Nothing here writes
to a user's array.
"""

from __future__ import annotations

import math
import numbers
import operator
import sys

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_array(value, name: str) -> np.ndarray:
    """``np.asarray(value)``, refusing what it would read wrongly or explain badly.

    A masked array is refused (``asarray`` would drop its mask and use the masked values), and
    a ragged nested sequence raises a ``ValueError`` that names the argument.
    """
    masked = sys.modules.get("numpy.ma")  # no masked array exists before numpy.ma is imported
    if masked is not None and isinstance(value, masked.MaskedArray):
        raise TypeError(
            f"{name} is a masked array, whose mask would be ignored: pass {name}.filled(value) "
            "(for softmax, -inf gives the masked entries probability 0)"
        )
    try:
        return np.asarray(value)
    except ValueError as exc:  # e.g. [[1, 2], [3]]: NumPy's message does not say which argument
        raise ValueError(f"{name} must be an array of numbers: {exc}") from None


def float_array(x, name: str) -> np.ndarray:
    """``x`` as a float32/float64 array in native byte order.

    Integer input is converted to float64 (as ``np.exp`` does); float16, long double, bool,
    complex, string and object input is refused rather than silently cast.
    """
    arr = as_array(x, name)
    kind = arr.dtype.kind
    if kind in "iu":
        return arr.astype(np.float64)
    if kind != "f" or arr.dtype.itemsize not in (4, 8):
        raise TypeError(
            f"{name} must be a float32 or float64 array (integers are converted to float64), "
            f"got dtype {arr.dtype}"
        )
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


def paired_array(x, like: np.ndarray, name: str, like_name: str) -> np.ndarray:
    """``x`` as a float array of the shape and dtype of ``like`` (the argument ``like_name``)."""
    arr = float_array(x, name)
    if arr.shape != like.shape:
        raise ValueError(f"{name} must have the shape of {like_name} {like.shape}, got {arr.shape}")
    if arr.dtype != like.dtype:
        raise TypeError(
            f"{name} must have the dtype of {like_name} ({like.dtype}), got {arr.dtype}"
        )
    return arr


def axis_index(axis, ndim: int, name: str = "axis") -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(axis).__name__}")
    if ndim == 0:
        raise ValueError("x must have at least one dimension, got a 0-d array")
    axis = operator.index(axis)
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}={axis} is out of range for an array with {ndim} dimensions")
    return axis % ndim


def output_array(out, shape: tuple, dtype: np.dtype, name: str) -> np.ndarray:
    """Check a caller-supplied output: an ndarray of exactly ``shape`` and ``dtype``, writeable."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {out.shape}")
    if out.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {out.dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return out


def n_threads_value(n_threads) -> int | None:
    if n_threads is None:
        return None
    if isinstance(n_threads, bool) or not isinstance(n_threads, numbers.Integral):
        raise TypeError(f"n_threads must be None or an integer >= 1, got {n_threads!r}")
    if n_threads < 1:
        raise ValueError(f"n_threads must be None or an integer >= 1, got {n_threads}")
    return int(n_threads)


def real_number(
    value, name: str, *, low: float, high: float = math.inf, low_open=False, high_open=False
) -> float:
    """A finite real scalar in the interval from ``low`` to ``high`` (open ends as flagged)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    try:
        value = float(value)
    except OverflowError:  # an integer beyond float64's range, such as 10**400
        value = math.inf if value > 0 else -math.inf
    too_low = value <= low if low_open else value < low
    too_high = value >= high if high_open else value > high
    if not math.isfinite(value) or too_low or too_high:
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return value


def logits_array(logits) -> np.ndarray:
    arr = float_array(logits, "logits")
    if arr.ndim != 2:
        raise ValueError(
            f"logits must be 2-D (n_samples, n_classes), got {arr.ndim}-D shape {arr.shape}"
        )
    if arr.shape[1] == 0:
        raise ValueError(f"logits must have at least one class (column), got shape {arr.shape}")
    return arr


def labels_array(
    target: np.ndarray,
    n_rows: int,
    n_classes: int,
    ignore_index,
    name: str = "target",
    rows_of: str = "logits",
) -> np.ndarray:
    """Integer class labels as int64 with -1 marking rows equal to ``ignore_index``.

    ``name`` is the labels' argument and ``rows_of`` the argument whose rows they label, for
    the messages.
    """
    if target.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must be integer class labels of shape (n_samples,) or a float probability "
            f"matrix of shape (n_samples, n_classes); got a 1-D array of dtype {target.dtype}"
        )
    if target.shape != (n_rows,):
        raise ValueError(
            f"{name} must have shape ({n_rows},) to match {rows_of}, got {target.shape}"
        )
    ignored = target == ignore_index if ignore_index is not None else np.zeros(n_rows, bool)
    invalid = ~ignored & ((target < 0) | (target >= n_classes))
    if invalid.any():
        bad = target[invalid][0]
        raise ValueError(
            f"{name} holds class label {bad}, expected labels in [0, {n_classes})"
            + (f" or ignore_index={ignore_index}" if ignore_index is not None else "")
        )
    labels = target.astype(np.int64)
    labels[ignored] = -1
    return labels


def soft_target_array(target: np.ndarray, shape: tuple, dtype: np.dtype) -> np.ndarray:
    if target.dtype.kind != "f":
        raise TypeError(
            f"a 2-D target must be a float probability matrix, got dtype {target.dtype}"
        )
    if target.shape != shape:
        raise ValueError(f"target must have shape {shape} to match logits, got {target.shape}")
    target = np.ascontiguousarray(target, dtype=dtype)
    if not np.all(np.isfinite(target) & (target >= 0)):
        raise ValueError("target probabilities must be finite and >= 0")
    return target


def sample_weight_array(sample_weight, n_rows: int) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n_rows)
    weights = as_array(sample_weight, "sample_weight")
    if weights.dtype.kind not in "iuf":
        raise TypeError(f"sample_weight must be a real array, got dtype {weights.dtype}")
    if weights.shape != (n_rows,):
        raise ValueError(f"sample_weight must have shape ({n_rows},), got {weights.shape}")
    weights = weights.astype(np.float64)
    if not np.all(np.isfinite(weights) & (weights >= 0)):
        raise ValueError("sample_weight must be finite and >= 0")
    return weights


def ignore_index_value(ignore_index):
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be None or an integer, got {ignore_index!r}")
    return int(ignore_index)


REDUCTIONS = ("mean", "sum", "none")


def reduction_value(reduction) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def sgd_arrays(param, grad, velocity, momentum: float, nesterov) -> tuple:
    if not isinstance(param, np.ndarray):
        raise TypeError(
            f"param must be a numpy.ndarray (it is updated in place), got {type(param).__name__}"
        )
    if param.dtype not in FLOAT_DTYPES or not param.dtype.isnative:
        raise TypeError(f"param must have dtype float32 or float64, got {param.dtype}")
    if not param.flags.writeable:
        raise ValueError("param is read-only")
    grad = as_array(grad, "grad")
    if grad.dtype != param.dtype:
        raise TypeError(f"grad must have dtype {param.dtype} like param, got {grad.dtype}")
    if grad.shape != param.shape:
        raise ValueError(f"grad must have shape {param.shape} like param, got {grad.shape}")
    if not isinstance(nesterov, (bool, np.bool_)):
        raise TypeError(f"nesterov must be a bool, got {type(nesterov).__name__}")
    if nesterov and momentum == 0:
        raise ValueError("nesterov=True needs momentum > 0")
    if momentum == 0:
        return grad, None
    if velocity is None:
        raise ValueError("velocity is required when momentum > 0: pass np.zeros_like(param)")
    velocity = output_array(velocity, param.shape, param.dtype, "velocity")
    if np.may_share_memory(velocity, param):
        raise ValueError("velocity must not share memory with param")
    return grad, velocity
