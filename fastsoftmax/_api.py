"""The public kernels: validate once, lay out, allocate, pick a backend, call its raw kernel.

Every rule about inputs is in :mod:`fastsoftmax._validation`; every backend implements only the
raw kernels on the arrays prepared here (contract in :mod:`fastsoftmax.backends`). All
validation happens before anything is written to a caller's array.
"""

from __future__ import annotations

import numpy as np

from fastsoftmax import _validation as check
from fastsoftmax._config import ieee_arithmetic, kernel_module


def _same_view(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.shape == b.shape
        and a.strides == b.strides
    )


def _detached(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``source``, copied if writing ``target`` could change it before it is read.

    An input that *is* the output (same memory, shape and strides) is left alone: every kernel
    reads an element before writing it, so exact in-place operation is safe.
    """
    if np.may_share_memory(source, target) and not _same_view(source, target):
        return source.copy()
    return source


def _independent(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``source``, copied if it shares any memory with ``target``, even as the same view: for
    inputs that a kernel reads after writing the output at the same index (the soft target)."""
    return source.copy() if np.may_share_memory(source, target) else source


def _axis_last(a: np.ndarray, axis: int) -> np.ndarray:
    """``a`` with ``axis`` moved last (a view; ``a`` itself when it already is)."""
    return a if axis == a.ndim - 1 else np.moveaxis(a, axis, -1)


class _RowsOutput:
    """An output laid out as (rows, k) C-contiguous rows, written back to ``out`` if needed.

    With ``out=None`` the buffer is allocated with ``axis`` last and the result is its
    ``moveaxis`` view (no copy). A caller's ``out`` is written directly when its rows are
    C-contiguous, otherwise through a temporary copied in at the end.
    """

    def __init__(self, out, shape: tuple, dtype: np.dtype, axis: int, name: str):
        moved_shape = shape[:axis] + shape[axis + 1 :] + (shape[axis],)
        if out is None:
            buffer = np.empty(moved_shape, dtype)
            self.result = buffer if axis == len(shape) - 1 else np.moveaxis(buffer, -1, axis)
            self._write_back = None
        else:
            self.result = check.output_array(out, shape, dtype, name)
            buffer = _axis_last(out, axis)
            self._write_back = None if buffer.flags.c_contiguous else buffer
            if self._write_back is not None:
                buffer = np.empty(moved_shape, dtype)
        self.rows = buffer.reshape(-1, shape[axis]) if buffer.size else buffer

    def finish(self) -> np.ndarray:
        if self._write_back is not None:
            self._write_back[...] = self.rows.reshape(self._write_back.shape)
        return self.result


def _rows(x: np.ndarray, axis: int) -> np.ndarray:
    """``x`` with ``axis`` last, as a C-contiguous (rows, k) array (a view when possible)."""
    moved = _axis_last(x, axis)
    return np.ascontiguousarray(moved).reshape(-1, moved.shape[-1])


def _rowwise(kernel: str, inputs: tuple, axis, out, backend, n_threads) -> np.ndarray:
    """Run row kernel ``kernel`` along ``axis`` on validated ``inputs`` of one shape and dtype."""
    first = inputs[0]
    axis = check.axis_index(axis, first.ndim)
    n_threads = check.n_threads_value(n_threads)
    module, threads = kernel_module(kernel, backend, first.size, n_threads)
    output = _RowsOutput(out, first.shape, first.dtype, axis, "out")
    if first.size:
        rows = [_detached(_rows(array, axis), output.rows) for array in inputs]
        with ieee_arithmetic():
            getattr(module, kernel)(*rows, output.rows, threads)
    return output.finish()


def logsumexp(
    x,
    axis: int = -1,
    *,
    keepdims: bool = False,
    backend: str | None = None,
    n_threads: int | None = None,
) -> np.ndarray:
    """Log of the sum of exponentials along ``axis``, computed stably.

    ``logsumexp(x) = m + log(sum(exp(x - m)))`` with ``m = max(x)``. A slice holding NaN gives
    NaN; otherwise one holding +inf gives +inf, an all -inf slice gives -inf and an empty one
    gives -inf.

    Parameters
    ----------
    x : array_like
        float32 or float64 (integers are converted to float64).
    axis : int, default -1
        The axis to reduce.
    keepdims : bool, default False
        Keep the reduced axis with length 1.
    backend : str, optional
        ``"numpy"``, ``"numba"``, ``"cython"`` or ``"auto"``; default: the current setting.
    n_threads : int, optional
        At most this many threads; default all available.

    Returns
    -------
    numpy.ndarray or numpy scalar
        Same dtype as ``x``, the reduced shape (a scalar when ``x`` is 1-D).

    Examples
    --------
    >>> import numpy as np, fastsoftmax
    >>> fastsoftmax.logsumexp(np.array([[0.0, 0.0], [1000.0, 1000.0]])) - np.log(2)
    array([   0., 1000.])
    >>> fastsoftmax.logsumexp([1000.0, 1000.0])
    np.float64(1000.6931471805599)
    """
    x = check.float_array(x, "x")
    axis = check.axis_index(axis, x.ndim)
    n_threads = check.n_threads_value(n_threads)
    module, threads = kernel_module("logsumexp", backend, x.size, n_threads)
    reduced_shape = x.shape[:axis] + x.shape[axis + 1 :]
    result = np.full(reduced_shape, -np.inf, dtype=x.dtype)
    if x.size:
        with ieee_arithmetic():
            module.logsumexp(_rows(x, axis), result.reshape(-1), threads)
    if keepdims:
        return np.expand_dims(result, axis)
    return result[()] if result.ndim == 0 else result  # a full reduction gives a scalar


def softmax(
    x,
    axis: int = -1,
    *,
    out: np.ndarray | None = None,
    backend: str | None = None,
    n_threads: int | None = None,
) -> np.ndarray:
    """Softmax along ``axis``: ``exp(x - max) / sum(exp(x - max))``.

    A slice holding NaN or +inf, or only -inf, gives all NaN; -inf entries of an otherwise
    finite slice give 0; a single element gives 1.

    Parameters
    ----------
    x : array_like
        float32 or float64 (integers are converted to float64).
    axis : int, default -1
        The axis along which the probabilities sum to one.
    out : numpy.ndarray, optional
        Writeable array of ``x``'s shape and dtype to write into; may be ``x`` itself.
    backend, n_threads
        As for :func:`logsumexp`.

    Returns
    -------
    numpy.ndarray
        ``out`` if given, else a new array of ``x``'s shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastsoftmax
    >>> fastsoftmax.softmax(np.log(np.array([1.0, 3.0])))
    array([0.25, 0.75])
    """
    return _rowwise("softmax", (check.float_array(x, "x"),), axis, out, backend, n_threads)


def log_softmax(
    x,
    axis: int = -1,
    *,
    out: np.ndarray | None = None,
    backend: str | None = None,
    n_threads: int | None = None,
) -> np.ndarray:
    """Log of the softmax along ``axis``: ``(x - max) - log(sum(exp(x - max)))``, in that order.

    Non-finite slices follow :func:`softmax`: NaN where softmax is NaN, -inf where it is 0.

    Parameters
    ----------
    x, axis, out, backend, n_threads
        As for :func:`softmax`.

    Returns
    -------
    numpy.ndarray
        ``out`` if given, else a new array of ``x``'s shape and dtype.

    Examples
    --------
    >>> import numpy as np, fastsoftmax
    >>> fastsoftmax.log_softmax(np.array([1e30, 1e30]))
    array([-0.69314718, -0.69314718])
    """
    return _rowwise("log_softmax", (check.float_array(x, "x"),), axis, out, backend, n_threads)


def _backward_inputs(grad_output, output) -> tuple[np.ndarray, np.ndarray]:
    grad_output = check.float_array(grad_output, "grad_output")
    return grad_output, check.paired_array(output, grad_output, "output", "grad_output")


def softmax_backward(
    grad_output,
    output,
    axis: int = -1,
    *,
    out: np.ndarray | None = None,
    backend: str | None = None,
    n_threads: int | None = None,
) -> np.ndarray:
    """Gradient through :func:`softmax`: ``output * (grad_output - sum(grad_output * output))``.

    The vector-Jacobian product of ``y = softmax(x, axis)``: given ``y`` and the gradient ``g``
    of a loss with respect to ``y``, the gradient with respect to ``x``, summed along ``axis``
    in float64. Non-finite values propagate through the formula (IEEE arithmetic), and a
    product or sum beyond the dtype's range gives +-inf (then inf - inf gives NaN), without a
    warning, on every backend.

    Parameters
    ----------
    grad_output : array_like
        Gradient with respect to the softmax output; float32 or float64.
    output : array_like
        The softmax output ``y``, of ``grad_output``'s shape and dtype.
    axis : int, default -1
        The axis the softmax was taken along.
    out : numpy.ndarray, optional
        Writeable array of ``grad_output``'s shape and dtype; may be ``grad_output`` or
        ``output`` itself.
    backend, n_threads
        As for :func:`logsumexp`.

    Returns
    -------
    numpy.ndarray
        The gradient with respect to the softmax input; ``out`` if given.

    Examples
    --------
    >>> import numpy as np, fastsoftmax
    >>> y = fastsoftmax.softmax(np.array([0.0, 0.0]))
    >>> fastsoftmax.softmax_backward(np.array([1.0, 0.0]), y)
    array([ 0.25, -0.25])
    """
    inputs = _backward_inputs(grad_output, output)
    return _rowwise("softmax_backward", inputs, axis, out, backend, n_threads)


def log_softmax_backward(
    grad_output,
    output,
    axis: int = -1,
    *,
    out: np.ndarray | None = None,
    backend: str | None = None,
    n_threads: int | None = None,
) -> np.ndarray:
    """Gradient through :func:`log_softmax`: ``grad_output - exp(output) * sum(grad_output)``.

    The vector-Jacobian product of ``y = log_softmax(x, axis)``: given ``y`` and the gradient
    ``g`` of a loss with respect to ``y``, the gradient with respect to ``x``, with the sum along
    ``axis`` in float64. Non-finite values propagate through the formula, and overflow gives
    +-inf or NaN, as for :func:`softmax_backward`.

    Parameters
    ----------
    grad_output, output, axis, out, backend, n_threads
        As for :func:`softmax_backward`, with ``output`` the log_softmax output.

    Returns
    -------
    numpy.ndarray
        The gradient with respect to the log_softmax input; ``out`` if given.

    Examples
    --------
    >>> import numpy as np, fastsoftmax
    >>> y = fastsoftmax.log_softmax(np.array([0.0, 0.0]))
    >>> fastsoftmax.log_softmax_backward(np.array([1.0, 0.0]), y)
    array([ 0.5, -0.5])
    """
    inputs = _backward_inputs(grad_output, output)
    return _rowwise("log_softmax_backward", inputs, axis, out, backend, n_threads)


def softmax_cross_entropy(
    logits,
    target,
    *,
    sample_weight=None,
    class_weight=None,
    label_smoothing: float = 0.0,
    ignore_index: int | None = None,
    reduction: str = "mean",
    grad_out: np.ndarray | None = None,
    backend: str | None = None,
    n_threads: int | None = None,
) -> tuple[np.floating | np.ndarray, np.ndarray]:
    """Cross-entropy of ``softmax(logits)`` against ``target`` and its gradient, in one pass.

    Row i with target distribution t (the one-hot label, or a probability row) mixed with the
    uniform distribution, ``t = (1 - s) t + s / k``, has loss ``-w_i sum_j t_j log p_j`` and
    gradient ``w_i (p sum_j t_j - t)`` with respect to its logits; zero target entries contribute
    nothing (0 log 0 = 0). Rows whose label equals ``ignore_index`` have zero loss and gradient.

    A row of logits holding NaN or +inf, or only -inf, has NaN loss and gradient (its softmax
    is NaN, see :func:`softmax`); a loss beyond the dtype's range (a target class whose logit
    lies about the dtype's largest value below the row's maximum) is inf. Either makes the
    "mean" and "sum" totals NaN or inf. No warning is issued for them.

    Parameters
    ----------
    logits : array_like, shape (n, k)
        float32 or float64, k >= 1.
    target : array_like, shape (n,) or (n, k)
        Integer class labels in ``[0, k)`` (any integer dtype), or probabilities >= 0 (converted
        to the dtype of ``logits``).
    sample_weight : array_like, shape (n,), optional
        Per-row weights w_i: finite, >= 0, with a sum finite in float64; default all 1.
    class_weight : array_like, shape (k,), optional
        Per-class weights c_j, finite and >= 0 (PyTorch's ``weight``), default all 1. With
        labels, row i's weight becomes ``w_i c[y_i]``, and ``"mean"`` divides by the sum of
        these over the non-ignored rows; with label smoothing the row loss is
        ``-w_i ((1 - s) c[y_i] log p_y + s / k sum_j c_j log p_j)`` (PyTorch's formula: the
        smoothing term weighs each class by its own weight), with the same divisor. With
        probabilities, class j's term is scaled by ``c_j`` and ``"mean"`` divides by the sum
        of the ``w_i``, as in PyTorch. (Labels with smoothing and probabilities build a
        weighted target of ``logits``'s shape first.)
    label_smoothing : float in [0, 1], default 0
    ignore_index : int, optional
        Label marking rows to skip (integer labels only).
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` divides the weighted sum by the total weight of the non-ignored rows (NaN
        when that is zero, as in PyTorch; the gradient is then zero); ``"none"`` returns
        per-row losses.
    grad_out : numpy.ndarray, optional
        Writeable array of ``logits``'s shape and dtype for the gradient; may be ``logits``
        itself to overwrite the logits with their gradient. Otherwise no input is modified.
    backend, n_threads
        As for :func:`logsumexp`.

    Returns
    -------
    loss : numpy scalar or numpy.ndarray of shape (n,)
        In the dtype of ``logits`` (accumulated in float64).
    grad : numpy.ndarray, shape (n, k)
        Gradient of the returned loss (of each row's loss for ``"none"``).

    Examples
    --------
    >>> import numpy as np, fastsoftmax
    >>> loss, grad = fastsoftmax.softmax_cross_entropy(np.zeros((1, 2)), np.array([0]))
    >>> float(loss), grad
    (0.6931471805599453, array([[-0.5,  0.5]]))
    """
    logits = check.logits_array(logits)
    n_rows, n_classes = logits.shape
    label_smoothing = check.real_number(label_smoothing, "label_smoothing", low=0, high=1)
    ignore_index = check.ignore_index_value(ignore_index)
    reduction = check.reduction_value(reduction)
    n_threads = check.n_threads_value(n_threads)
    target = check.as_array(target, "target")
    soft_target = None
    if target.ndim == 1:
        labels = check.labels_array(target, n_rows, n_classes, ignore_index)
        kept = None if labels is target else labels >= 0  # None: every row (no copy made)
    elif target.ndim == 2:
        if ignore_index is not None:
            raise ValueError("ignore_index applies to integer labels, not to a 2-D target")
        soft_target = check.soft_target_array(target, logits.shape, logits.dtype)
        kept = None  # every row
    else:
        raise ValueError(
            f"target must be labels of shape ({n_rows},) or probabilities of shape "
            f"{logits.shape}, got shape {target.shape}"
        )
    weights = check.sample_weight_array(sample_weight, n_rows)
    kept_weights = weights if kept is None else weights[kept]  # "mean" divides by their sum
    total_weight = float(kept_weights.size if sample_weight is None else kept_weights.sum())
    if class_weight is not None:
        class_weight = check.weight_array(class_weight, "class_weight", n_classes)
        if target.ndim == 1:
            kept = labels >= 0
            with np.errstate(over="ignore"):  # an overflow is refused just below
                label_weights = weights * np.where(kept, class_weight[np.maximum(labels, 0)], 0)
            check.summable_weights(label_weights, "sample_weight * class_weight[target]")
            total_weight = float(np.sum(label_weights))
            if label_smoothing:  # the class weights go into the target, w_i stays the row's
                soft_target = _class_weighted_smoothing(labels, class_weight, label_smoothing)
                weights = np.where(kept, weights, 0.0)
            else:
                weights = label_weights
        else:
            mixed = (1 - label_smoothing) * soft_target + label_smoothing / n_classes
            soft_target = mixed * class_weight
        if soft_target is not None:
            soft_target = soft_target.astype(logits.dtype, copy=False)
            label_smoothing = 0.0
    module, threads = kernel_module("softmax_cross_entropy", backend, logits.size, n_threads)
    grad = _RowsOutput(grad_out, logits.shape, logits.dtype, 1, "grad_out")

    scale = 1.0
    if reduction == "mean":
        scale = 1.0 / total_weight if total_weight > 0 else 0.0
    with ieee_arithmetic():  # a loss beyond the dtype's range is inf, as documented
        row_loss = np.zeros(n_rows)
        if n_rows:
            rows = _detached(np.ascontiguousarray(logits), grad.rows)
            if soft_target is None:
                module.cross_entropy_labels(
                    rows, labels, weights, scale, label_smoothing, row_loss, grad.rows, threads
                )
            else:
                module.cross_entropy_soft(
                    rows,
                    _independent(soft_target, grad.rows),
                    weights,
                    scale,
                    label_smoothing,
                    row_loss,
                    grad.rows,
                    threads,
                )
        dtype = logits.dtype.type
        if reduction == "none":
            return row_loss.astype(logits.dtype), grad.finish()
        total = float(row_loss.sum())
        if reduction == "mean":
            total = total / total_weight if total_weight > 0 else float("nan")
        return dtype(total), grad.finish()


def _class_weighted_smoothing(
    labels: np.ndarray, class_weight: np.ndarray, label_smoothing: float
) -> np.ndarray:
    """The target whose plain cross-entropy is the class-weighted, smoothed one of ``labels``:
    ``(1 - s) c[y] onehot(y) + s / k c`` per row (ignored rows get a weight of 0)."""
    n_rows, n_classes = labels.shape[0], class_weight.shape[0]
    target = np.empty((n_rows, n_classes))
    target[...] = label_smoothing / n_classes * class_weight
    kept = np.flatnonzero(labels >= 0)
    target[kept, labels[kept]] += (1 - label_smoothing) * class_weight[labels[kept]]
    return target


def sgd_update(
    param: np.ndarray,
    grad,
    *,
    lr: float,
    momentum: float = 0.0,
    velocity: np.ndarray | None = None,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
    maximize: bool = False,
    first_step: bool = False,
    backend: str | None = None,
    n_threads: int | None = None,
) -> None:
    """One SGD step on ``param`` in place, as one step of ``torch.optim.SGD``.

    ``g = grad + weight_decay * param`` (``-grad`` if ``maximize``); with momentum the buffer
    ``velocity`` becomes ``v = momentum * v + (1 - dampening) * g`` (in place; ``v = g`` if
    ``first_step``) and ``step = g + momentum * v`` if ``nesterov`` else ``v``; without momentum
    ``step = g``. Then ``param -= lr * step``. Arithmetic is in ``param``'s dtype: a value
    beyond its range becomes +-inf (and inf - inf NaN) in ``param`` and ``velocity``, as IEEE
    arithmetic says, without a warning. No temporary array is made (beyond a copy of an input
    that overlaps ``param`` or ``velocity``, or of a non-contiguous one).

    torch creates its momentum buffer on the first step as ``g`` itself (no dampening); pass
    ``first_step=True`` on the first call to match it exactly. With ``dampening=0`` a zero
    ``velocity`` gives the same result either way, so ``first_step`` is needed only with
    ``dampening > 0`` (or to restart from a ``velocity`` holding anything).

    Parameters
    ----------
    param : numpy.ndarray
        float32 or float64, writeable, any shape and layout; updated in place.
    grad : array_like
        Same shape and dtype as ``param``.
    lr : float > 0
    momentum : float in [0, 1), default 0
    velocity : numpy.ndarray, optional
        Momentum buffer, same shape and dtype as ``param``, updated in place; required when
        ``momentum > 0`` (start from zeros), left untouched when ``momentum == 0``.
    weight_decay : float >= 0, default 0
    nesterov : bool, default False
        Needs ``momentum > 0`` and ``dampening == 0``.
    dampening : float in [0, 1], default 0
        Scales the gradient added to the momentum buffer by ``1 - dampening`` (not on the
        first step). Ignored when ``momentum == 0``.
    maximize : bool, default False
        Step up the gradient (``grad`` negated) instead of down.
    first_step : bool, default False
        torch's first step: ``velocity`` is overwritten with ``g``, whatever it held. Ignored
        when ``momentum == 0``.
    backend, n_threads
        As for :func:`logsumexp`.

    Examples
    --------
    >>> import numpy as np, fastsoftmax
    >>> w = np.array([1.0, 2.0]); v = np.zeros_like(w)
    >>> fastsoftmax.sgd_update(w, np.array([1.0, 1.0]), lr=0.5, momentum=0.9, velocity=v)
    >>> w, v
    (array([0.5, 1.5]), array([1., 1.]))

    With dampening, as ``torch.optim.SGD(..., momentum=0.9, dampening=0.5)``: the first step
    sets the buffer to the gradient, later ones add half of it.

    >>> w = np.array([1.0, 2.0]); v = np.full_like(w, np.nan)  # any content: overwritten
    >>> g = np.array([1.0, -1.0])
    >>> fastsoftmax.sgd_update(w, g, lr=0.5, momentum=0.9, velocity=v, dampening=0.5,
    ...                        first_step=True)
    >>> fastsoftmax.sgd_update(w, g, lr=0.5, momentum=0.9, velocity=v, dampening=0.5)
    >>> w, v
    (array([-0.2,  3.2]), array([ 1.4, -1.4]))
    """
    lr = check.real_number(lr, "lr", low=0, low_open=True)
    momentum = check.real_number(momentum, "momentum", low=0, high=1, high_open=True)
    weight_decay = check.real_number(weight_decay, "weight_decay", low=0)
    dampening = check.real_number(dampening, "dampening", low=0, high=1)
    sign = -1.0 if check.boolean(maximize, "maximize") else 1.0
    first_step = check.boolean(first_step, "first_step")
    grad, velocity = check.sgd_arrays(param, grad, velocity, momentum, nesterov, dampening)
    n_threads = check.n_threads_value(n_threads)
    module, threads = kernel_module("sgd_update", backend, param.size, n_threads)
    if param.size == 0:
        return
    # Flatten in param's own memory order so that flat index i is the same element everywhere.
    order = "F" if param.flags.f_contiguous and not param.flags.c_contiguous else "C"
    flat_param = param.ravel(order)
    written = [(flat_param, param)]
    if velocity is None:
        flat_grad = _detached(grad.ravel(order), flat_param)
        with ieee_arithmetic():
            module.sgd(flat_param, flat_grad, lr, weight_decay, sign, threads)
    else:
        flat_velocity = velocity.ravel(order)
        written.append((flat_velocity, velocity))
        flat_grad = _detached(_detached(grad.ravel(order), flat_param), flat_velocity)
        with ieee_arithmetic():
            module.sgd_momentum(
                flat_param,
                flat_grad,
                flat_velocity,
                lr,
                momentum,
                weight_decay,
                bool(nesterov),
                sign,
                dampening,
                first_step,
                threads,
            )
    for flat, array in written:
        if not np.may_share_memory(flat, array):  # ravel had to copy: write the result back
            array[...] = flat.reshape(array.shape, order=order)
