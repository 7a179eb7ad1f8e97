"""Every rule about inputs, and its error message, lives here.

Checks raise ``TypeError`` for a wrong kind of object or dtype and ``ValueError`` for a wrong
value or shape; each message names the argument and says what was expected. Nothing here writes
to a user's array.
"""

from __future__ import annotations

import json
import math
import numbers
import operator
import sys

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def as_array(value, name: str) -> np.ndarray:
    """``np.asarray(value)``, refusing what it would read wrongly or explain badly.

    An array of another library that exports DLPack (``__dlpack__``: a PyTorch CPU tensor, a
    JAX or CuPy array) is read without a copy where it is in host memory (see
    :func:`_from_dlpack`). A masked array is refused (``asarray`` would drop its mask and use
    the masked values), and a ragged nested sequence raises a ``ValueError`` that names the
    argument.
    """
    masked = sys.modules.get("numpy.ma")  # no masked array exists before numpy.ma is imported
    if masked is not None and isinstance(value, masked.MaskedArray):
        raise TypeError(
            f"{name} is a masked array, whose mask would be ignored: pass {name}.filled(value) "
            "(for softmax, -inf gives the masked entries probability 0)"
        )
    if not isinstance(value, np.ndarray) and hasattr(value, "__dlpack__"):
        return _from_dlpack(value, name)
    try:
        return np.asarray(value)
    except ValueError as exc:  # e.g. [[1, 2], [3]]: NumPy's message does not say which argument
        raise ValueError(f"{name} must be an array of numbers: {exc}") from None


_DLPACK_CPU = 1  # DLPack's device type of host memory


def _from_dlpack(value, name: str) -> np.ndarray:
    """An array of another library (PyTorch, JAX, CuPy, ...) that exports DLPack, as a NumPy
    view of its memory (no copy); refused, by ``name``, when it lives on a device or cannot be
    exported (a PyTorch tensor that requires grad, a dtype NumPy lacks such as bfloat16)."""
    try:
        device = int(value.__dlpack_device__()[0])
        if device == _DLPACK_CPU:
            return np.from_dlpack(value)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        raise TypeError(
            f"{name} ({type(value).__name__}) cannot be read as a NumPy array through DLPack: {exc}"
        ) from None
    raise TypeError(
        f"{name} ({type(value).__name__}) is in device memory (DLPack device type {device}); "
        "fastsoftmax runs on the CPU: copy it to host memory first"
    )


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
    """Integer class labels as int64 with -1 marking rows equal to ``ignore_index`` (``target``
    itself when it is int64 and no row is ignored: read it, never write it).

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
    labels = target.astype(np.int64, copy=False)
    # One comparison finds every label outside [0, n_classes): negative ones wrap around.
    outside = labels.view(np.uint64) >= n_classes
    if ignore_index is None or not 0 <= ignore_index < n_classes:
        if not outside.any():  # no row to ignore
            return labels
    ignored = target == ignore_index if ignore_index is not None else np.zeros(n_rows, bool)
    invalid = outside & ~ignored
    if invalid.any():
        bad = target[invalid][0]
        raise ValueError(
            f"{name} holds class label {bad}, expected labels in [0, {n_classes})"
            + (f" or ignore_index={ignore_index}" if ignore_index is not None else "")
        )
    labels = np.where(ignored, -1, labels)
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
    weights = weight_array(sample_weight, "sample_weight", n_rows)
    summable_weights(weights, "sample_weight")
    return weights


def weight_array(weights, name: str, length: int) -> np.ndarray:
    """Finite weights >= 0 of shape (length,), as float64."""
    weights = as_array(weights, name)
    if weights.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real array, got dtype {weights.dtype}")
    if weights.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {weights.shape}")
    weights = weights.astype(np.float64)
    finite_weights(weights, name)
    return weights


def summable_weights(weights: np.ndarray, name: str) -> None:
    with np.errstate(over="ignore"):
        total = weights.sum()
    if not np.isfinite(total):  # every sum and mean over the rows would be inf or NaN
        raise ValueError(
            f"{name} sums beyond the float64 range: scale the weights down (a mean "
            "loss and its gradient do not change)"
        )


def ignore_index_value(ignore_index):
    if ignore_index is None:
        return None
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be None or an integer, got {ignore_index!r}")
    return int(ignore_index)


REDUCTIONS = ("mean", "sum", "none")
#: SoftmaxRegression's solvers (its parameter constraints and the CLI's choices).
SOLVERS = ("auto", "sgd", "lbfgs")


def one_of(value, choices: tuple[str, ...], name: str) -> str:
    """``value`` if it is one of the strings ``choices``."""
    if not (isinstance(value, str) and value in choices):
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def reduction_value(reduction) -> str:
    return one_of(reduction, REDUCTIONS, "reduction")


def boolean(value, name: str) -> bool:
    """``value`` as a bool: a Python or NumPy bool, nothing else (not 0, 1 or "yes")."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return bool(value)


def sgd_arrays(param, grad, velocity, momentum: float, nesterov, dampening: float = 0.0) -> tuple:
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
    nesterov = boolean(nesterov, "nesterov")
    if nesterov and dampening > 0:
        raise ValueError(
            f"nesterov=True needs dampening=0 (as torch.optim.SGD), got dampening={dampening!r}"
        )
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


def positive_total_weight(total: float) -> None:
    """The one rule for every training path: the sample weights must not all be zero."""
    if not total > 0:
        raise ValueError("sample_weight sums to zero: at least one weight must be positive")


def training_sample_weight(sample_weight, n_rows: int) -> np.ndarray:
    """``sample_weight_array`` with a positive sum (float64, ones for None)."""
    weights = sample_weight_array(sample_weight, n_rows)
    positive_total_weight(float(weights.sum()))
    return weights


def positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# -- the fused linear kernel -------------------------------------------------------------------


def linear_weights(W, b) -> tuple[np.ndarray, np.ndarray]:
    """``W`` (k, d) float32/float64 and ``b`` (k,) of the same dtype."""
    W = as_array(W, "W")
    if W.ndim != 2 or W.dtype not in FLOAT_DTYPES:
        raise TypeError(f"W must be a 2-D float32 or float64 array (k, d), got {W.dtype} {W.shape}")
    b = as_array(b, "b")
    if b.shape != (W.shape[0],) or b.dtype != W.dtype:
        raise ValueError(
            f"b must have shape ({W.shape[0]},) and dtype {W.dtype}, got {b.dtype} {b.shape}"
        )
    return W, b


def linear_features(X, W: np.ndarray):
    """``X`` (n, d) dense or CSR, of ``W``'s dtype (no silent conversion)."""
    X = X.tocsr() if hasattr(X, "tocsr") and hasattr(X, "nnz") else as_array(X, "X")
    if X.ndim != 2 or X.shape[1] != W.shape[1]:
        raise ValueError(f"X must be 2-D with {W.shape[1]} columns (W is {W.shape}), got {X.shape}")
    if X.dtype != W.dtype:
        raise TypeError(f"X must have dtype {W.dtype} like W, got {X.dtype}")
    return X


def chunk_rows_value(chunk_rows, default: int) -> int:
    return default if chunk_rows is None else positive_int(chunk_rows, "chunk_rows")


# -- SoftmaxRegression ---------------------------------------------------------------------------


def solver_options(solver: str, early_stopping: bool) -> None:
    """The combinations of ``SoftmaxRegression``'s hyper-parameters that do not work together
    (each parameter alone is checked by its ``_parameter_constraints``)."""
    if solver == "lbfgs" and early_stopping:
        raise ValueError(
            "early_stopping=True needs solver='sgd': L-BFGS stops on the training gradient "
            "(tol, max_iter)"
        )


def no_early_stopping_on_dask(early_stopping: bool) -> None:
    if early_stopping:
        raise ValueError(
            "early_stopping=True is not supported with Dask input; hold out a validation set "
            "and use tol, or solver='lbfgs'"
        )


def training_classes(classes: np.ndarray) -> np.ndarray:
    """The classes found in ``y`` by ``fit``: at least two."""
    if len(classes) < 2:
        raise ValueError(
            f"y holds one class ({classes[0]!r}): at least 2 classes are needed to train"
        )
    return classes


def warm_start_classes(fitted: np.ndarray, classes: np.ndarray) -> None:
    if not np.array_equal(fitted, classes):
        raise ValueError("warm_start: y holds other classes than the fitted model")


def partial_fit_classes(classes, fitted: np.ndarray | None) -> np.ndarray:
    """The sorted classes of a ``partial_fit`` call; ``fitted`` is None on the first call."""
    if fitted is None:
        if classes is None:
            raise ValueError("classes must be given on the first call to partial_fit")
        classes = np.unique(np.asarray(classes))
        if len(classes) < 2:
            raise ValueError("classes must hold at least 2 labels")
        return classes
    if classes is not None and not np.array_equal(np.unique(classes), fitted):
        raise ValueError(f"classes differ from the first call's: {fitted!r}")
    return fitted


def labels_in_classes(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """The index in ``classes`` (sorted) of each label of ``y``; every label must be there."""
    labels = np.searchsorted(classes, y)
    unseen = (labels >= len(classes)) | (classes[np.minimum(labels, len(classes) - 1)] != y)
    if np.any(unseen):
        raise ValueError(
            f"y holds labels not in classes: {np.unique(np.asarray(y)[unseen])[:10]!r}"
        )
    return labels


def feature_count(n_features: int, expected: int) -> None:
    if n_features != expected:
        raise ValueError(
            f"X has {n_features} features, but SoftmaxRegression is expecting "
            f"{expected} features as input"
        )


def feature_names(names, fitted) -> None:
    if names is not None and fitted is not None and not np.array_equal(names, fitted):
        raise ValueError("The feature names should match those that were passed during fit")


# -- Dask collections (shapes and dtypes known before any block is computed) --------------------


def dask_features(shape: tuple, dtype: np.dtype) -> None:
    if len(shape) != 2:
        raise ValueError(f"Expected 2D array, got a dask array of shape {shape}")
    if dtype.kind not in "biuf":
        raise ValueError(f"X must hold real numbers, got dtype {dtype}")


def dask_rows(name: str, shape: tuple, n_rows: int) -> None:
    """``y`` or ``sample_weight`` (already squeezed): 1-D with a row of ``X`` each."""
    if len(shape) != 1:
        raise ValueError(f"{name} must be 1-D (n_samples,), got shape {shape}")
    if shape[0] != n_rows:
        raise ValueError(
            f"Found input variables with inconsistent numbers of samples: [{n_rows}, {shape[0]}]"
        )


def real_dtype(name: str, dtype: np.dtype) -> None:
    if dtype.kind not in "biuf":
        raise TypeError(f"{name} must be a real array, got dtype {dtype}")


def dask_partner(name: str, obj) -> None:
    """An input that is not a Dask collection while the others are."""
    raise TypeError(
        f"{name} is a {type(obj).__name__} while other inputs are Dask collections: pass "
        f"{name} as a dask array too (dask.array.from_array({name}, chunks=...))"
    )


def finite_block(X: np.ndarray) -> None:
    """A block of a dask ``X``, checked on the worker that holds it."""
    if not np.isfinite(X).all():
        raise ValueError("Input X contains NaN or infinity (in a dask block)")


def finite_weights(weights: np.ndarray | None, name: str = "sample_weight") -> None:
    if weights is not None and not np.all(np.isfinite(weights) & (weights >= 0)):
        raise ValueError(f"{name} must be finite and >= 0")


def unsupported_dask_collection(name: str, obj) -> None:
    raise TypeError(f"{name}: unsupported Dask collection {type(obj).__name__}")


# -- model files ---------------------------------------------------------------------------------


def savable_classes(classes: np.ndarray) -> None:
    if classes.dtype == object:
        raise TypeError("save() stores numeric or string classes only; use pickle instead")


# How an .npz (zip) archive and an .npy file begin.
NPZ_MAGIC = b"PK\x03\x04"
NPZ_EMPTY_MAGIC = b"PK\x05\x06"  # a zip archive of no file
NPY_MAGIC = b"\x93NUMPY"[: len(NPZ_MAGIC)]


def model_archive(head: bytes) -> None:
    """The first bytes of a model file: those of the .npz archive ``save`` writes."""
    if head.startswith((NPZ_MAGIC, NPZ_EMPTY_MAGIC)):
        return
    if not head:
        raise ValueError("the file is empty, not an .npz archive")
    if head == NPY_MAGIC:
        raise ValueError("it holds one array (.npy), not the .npz archive save() writes")
    raise ValueError("it is not an .npz archive")


def model_arrays(arrays: dict, keys: tuple) -> None:
    """An .npz archive that is a model file: with its format version, or, without one, with
    all the arrays ``save`` writes (``keys``, the version first)."""
    if keys[0] in arrays or all(key in arrays for key in keys[1:]):
        return  # a model file, of this format version or of another one
    missing = ", ".join(key for key in keys if key not in arrays)
    found = ", ".join(sorted(arrays)) or "no array"
    raise ValueError(f"it lacks the arrays save() writes: {missing}; it holds {found}")


def model_file_format(path, version, supported: int) -> None:
    if version != supported:
        raise ValueError(
            f"{path}: model file format {version!r} is not supported by this "
            f"fastsoftmax (it reads format {supported})"
        )


def saved_model(arrays: dict, keys: tuple, known_params: dict) -> dict:
    """The hyper-parameters of the arrays of a model file, once the arrays are known to be
    complete and to make a model (ValueError otherwise; the caller names the file)."""
    missing = [key for key in keys if key not in arrays]
    if missing:
        raise ValueError(f"no {', '.join(missing)} in it")
    try:
        params = json.loads(str(arrays["params"]))
    except json.JSONDecodeError as exc:
        raise ValueError(f"params is not JSON ({exc})") from exc
    if not isinstance(params, dict):
        raise ValueError(f"params is not a JSON object: {params!r}")
    unknown = sorted(set(params) - set(known_params))
    if unknown:
        raise ValueError(
            f"hyper-parameters {unknown} are unknown to this fastsoftmax (a newer one "
            "may have written the file)"
        )
    if "dtype" in params:
        params["dtype"] = np.dtype(params["dtype"]).type
    coef, intercept, classes = arrays["coef"], arrays["intercept"], arrays["classes"]
    # predict needs coef (k, d), intercept (k,) and classes (k,), k >= 2.
    if not (
        coef.ndim == 2
        and len(coef) >= 2
        and intercept.shape == classes.shape == (len(coef),)
        and coef.dtype.kind == intercept.dtype.kind == "f"
    ):
        raise ValueError(
            f"coef {coef.dtype}{list(coef.shape)}, intercept "
            f"{intercept.dtype}{list(intercept.shape)} and classes {list(classes.shape)} "
            "do not make a model: coef must be float (k, d), intercept float (k,) and "
            "classes (k,), k >= 2"
        )
    return params
