"""A drop-in for PyTorch's softmax losses: ``fastsoftmax.torch.cross_entropy`` and friends.

``cross_entropy``, ``softmax``, ``log_softmax`` and ``CrossEntropyLoss`` take the arguments of
their ``torch.nn.functional`` / ``torch.nn`` namesakes and give the same results (within
floating-point rounding). On CPU float32/float64 tensors they run fastsoftmax's kernels on the
tensors' own memory; the cross-entropy forward runs the fused kernel once, which computes the
loss *and* its gradient, and the backward only scales that saved gradient.

Zero copy: a CPU float32/float64 tensor reaches NumPy as ``tensor.detach().numpy()`` (same
memory) and every result comes back as ``torch.from_numpy`` (same memory). The logits are
copied only when their class dimension cannot be made the last, contiguous one by a view: a
non-contiguous ``(N, C)`` tensor, or an ``(N, C, d1, ...)`` tensor in the default
(channels-first) layout, where ``input.movedim(1, -1).reshape(-1, C)`` copies; a
channels-last one is not copied.

Small inputs go to PyTorch's own function too: with fewer than :data:`MIN_ELEMENTS` elements
and fewer than :data:`MIN_ROWS` rows (softmax rows: all elements but the class or ``dim``
dimension) its C++ path is faster than this module's Python autograd wrapper.

Everything else goes to PyTorch's own function (``F.cross_entropy``, ``torch.softmax``,
``torch.log_softmax``) with the same arguments, so it computes or raises exactly as PyTorch
does:

- tensors off the CPU (CUDA, meta, ...), of other dtypes (float16, bfloat16, integers),
  sparse, tensor subclasses (FakeTensor, DTensor, ...), or with the negative bit set;
- ``cross_entropy``: a target that needs a gradient, a class-weight tensor that needs a
  gradient or differs in dtype, device or shape (C,) from the input's, class-index targets
  other than int64 or uint8, probability targets of another dtype than the input's, the
  legacy ``size_average``/``reduce`` arguments, and every argument the kernel refuses
  (labels out of range, negative or non-finite class weights or probabilities, an unknown
  ``reduction``, ``label_smoothing`` outside [0, 1]: PyTorch then computes or raises its own
  error); with class weights and label smoothing, a ``"mean"`` whose total weight is zero;
- ``softmax``/``log_softmax``: ``dim=None``, a 0-d input, a ``dim`` out of range.

The autograd functions are once differentiable: a backward with ``create_graph=True`` (the
start of any second derivative) raises ``RuntimeError``. Under ``torch.compile`` they run eagerly
(``torch.compiler.disable``: a graph break before and after each call).

Examples
--------
>>> import torch, fastsoftmax.torch as fst
>>> logits = torch.zeros(2, 3, requires_grad=True)
>>> loss = fst.cross_entropy(logits, torch.tensor([0, 2]))
>>> loss.backward()
>>> round(loss.item(), 4), logits.grad[0]
(1.0986, tensor([-0.3333,  0.1667,  0.1667]))
"""

from __future__ import annotations

from functools import partial
from types import SimpleNamespace
from typing import Any

import numpy as np

try:
    import torch
except ImportError as exc:  # pragma: no cover - only without PyTorch
    raise ImportError(
        "fastsoftmax.torch needs PyTorch: pip install torch (in a clone of fastsoftmax: "
        "pip install -e '.[torch]', the pinned CPU wheel torch==2.13.0)"
    ) from exc
import torch.nn.functional as F
from torch import nn

from fastsoftmax import _api

__all__ = ["CrossEntropyLoss", "cross_entropy", "log_softmax", "softmax"]

#: Inputs with fewer elements than this and fewer rows than :data:`MIN_ROWS` go to PyTorch's
#: own function, which is faster there: the Python autograd wrapper and the NumPy front layer
#: cost about 100 us a forward + backward, and PyTorch's cost grows with the rows more than with
#: their length (``benchmarks/torch_dropin.py``, README). 0 sends every call it can to the kernels.
MIN_ELEMENTS = 1 << 18
#: See :data:`MIN_ELEMENTS`.
MIN_ROWS = 2048

_FLOATS = (torch.float32, torch.float64)
_LABEL_DTYPES = (torch.int64, torch.uint8)
_PLAIN_TENSORS = (torch.Tensor, nn.Parameter)
# What the kernels refuse (validation, before anything is written): handed to PyTorch.
_REFUSED = (ValueError, TypeError)


def _native(tensor: Any, dtypes: tuple = _FLOATS) -> bool:
    """Whether ``tensor`` is a plain strided CPU tensor of one of ``dtypes`` (NumPy can view it)."""
    return (
        type(tensor) in _PLAIN_TENSORS
        and tensor.device.type == "cpu"
        and tensor.layout == torch.strided
        and tensor.dtype in dtypes
        and not tensor.is_neg()
    )


def _large_enough(input: torch.Tensor, class_dim: int) -> bool:
    """Whether ``input`` is worth the kernels' fixed cost (:data:`MIN_ELEMENTS`,
    :data:`MIN_ROWS`)."""
    size = input.numel()
    return size >= MIN_ELEMENTS or size >= MIN_ROWS * input.shape[class_dim]


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    """``tensor``'s memory as a NumPy array (no copy)."""
    return tensor.detach().numpy()


def _tensor(array: np.ndarray | np.generic) -> torch.Tensor:
    """A NumPy result as a tensor on the same memory (a 0-d array for a NumPy scalar)."""
    return torch.from_numpy(np.asarray(array))


def _class_last_rows(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (N, C, d1, ...) as (N * d1 * ..., C) rows; a view unless the layout forbids."""
    if tensor.dim() == 2:
        return tensor
    return tensor.movedim(1, -1).reshape(-1, tensor.shape[1])


# -- cross-entropy ------------------------------------------------------------------------------


def _first_order_only(name: str) -> None:
    """Refuse a backward that builds a graph (``create_graph=True``): this backward scales a
    saved gradient, which autograd would see as a constant, so any second derivative through it
    would silently be zero (e.g. ``torch.autograd.functional.hessian``). A backward without a
    graph runs with gradients off, so its own operations record nothing."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"fastsoftmax.torch.{name} is once differentiable: no backward with "
            "create_graph=True, no second derivative; use torch.nn.functional."
            f"{name} for higher derivatives"
        )


class _Unsupported(Exception):
    """A case the kernels could run, but not with PyTorch's exact semantics: use PyTorch."""


def _fused_cross_entropy(
    logits: np.ndarray,
    target: np.ndarray,
    soft: bool,
    weight: np.ndarray | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
) -> tuple[np.generic | np.ndarray, np.ndarray]:
    """PyTorch's cross-entropy of ``logits`` (rows) as one call of the fused kernel, whose
    ``class_weight`` has PyTorch's semantics."""
    if not soft and weight is not None and label_smoothing and reduction == "mean":
        # (clip: an out-of-range label is refused by the kernel, then by PyTorch)
        if not np.take(weight, target[target != ignore_index], mode="clip").sum() > 0:
            # PyTorch's 0/0 in both terms leaves NaN in its gradient, where the kernel's mean
            # over no weight has a zero gradient: leave that pattern to PyTorch.
            raise _Unsupported
    return _api.softmax_cross_entropy(
        logits,
        target,
        class_weight=weight,
        label_smoothing=label_smoothing,
        ignore_index=None if soft else ignore_index,
        reduction=reduction,
    )


_NO_GRAD = SimpleNamespace(needs_input_grad=(False,) * 6)  # the ctx of a call without autograd


class _CrossEntropy(torch.autograd.Function):
    """Forward: the fused kernel (loss and gradient). Backward: the saved gradient, scaled."""

    @staticmethod
    def forward(
        ctx: Any,
        input: torch.Tensor,
        target: torch.Tensor,
        weight: torch.Tensor | None,
        ignore_index: int,
        reduction: str,
        label_smoothing: float,
    ) -> torch.Tensor:
        soft = target.shape == input.shape
        rows = _class_last_rows(input)
        target_rows = _class_last_rows(target) if soft else target.reshape(-1)
        loss, grad = _fused_cross_entropy(
            _numpy(rows),
            _numpy(target_rows),
            soft,
            None if weight is None else _numpy(weight),
            ignore_index,
            reduction,
            label_smoothing,
        )
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(_tensor(grad))
            ctx.reduction = reduction
            ctx.moved_shape = (input.shape[0], *input.shape[2:], input.shape[1])
        loss = _tensor(loss)
        if reduction == "none":
            loss = loss.reshape(input.shape[:1] + input.shape[2:])
        return loss

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        _first_order_only("cross_entropy")
        (grad,) = ctx.saved_tensors
        if ctx.reduction == "none":
            grad = grad * grad_output.reshape(-1, 1)
        elif grad_output.item() != 1.0:  # loss.backward(): the saved gradient as it is
            grad = grad * grad_output
        if len(ctx.moved_shape) > 2:
            grad = grad.reshape(ctx.moved_shape).movedim(-1, 1)
        return grad, None, None, None, None, None


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Cross-entropy of ``softmax(input)`` against ``target``, as ``F.cross_entropy``.

    Same arguments, results and errors as PyTorch's. On CPU float32/float64 tensors one fused
    kernel computes the loss and its gradient in the forward pass; the gradient is saved (the
    inputs are not) and the backward scales it by the incoming gradient. Other cases go to
    ``F.cross_entropy`` (see the module docstring).

    Parameters
    ----------
    input : torch.Tensor, shape (C,), (N, C) or (N, C, d1, ...)
        Unnormalised logits.
    target : torch.Tensor
        Class indices (int64, shape (), (N,) or (N, d1, ...)), or class probabilities (the
        shape and dtype of ``input``; may be unnormalised, as in PyTorch).
    weight : torch.Tensor, shape (C,), optional
        Per-class weights. Class indices: row i counts ``weight[target_i]`` times, and
        ``"mean"`` divides by the summed weight of the non-ignored rows; with label smoothing
        the smoothing term weighs class j by ``weight[j]``. Probabilities: class j's term is
        scaled by ``weight[j]`` and ``"mean"`` divides by the number of rows.
    size_average, reduce : bool, optional
        Deprecated (as in PyTorch); given, the call goes to ``F.cross_entropy``.
    ignore_index : int, default -100
        Class-index rows with this target have zero loss and gradient and do not count in the
        mean; ignored for probability targets (as in PyTorch).
    reduction : {"mean", "sum", "none"}, default "mean"
    label_smoothing : float in [0, 1], default 0
        Mixes the target with the uniform distribution: ``(1 - s) t + s / C``.

    Returns
    -------
    torch.Tensor
        A scalar, or per-row losses of shape (), (N,) or (N, d1, ...) for ``"none"``.

    Examples
    --------
    >>> import torch, fastsoftmax.torch as fst
    >>> logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    >>> target = torch.tensor([0, 1])
    >>> loss = fst.cross_entropy(logits, target)
    >>> round(loss.item(), 4), round(torch.nn.functional.cross_entropy(logits, target).item(), 4)
    (0.6691, 0.6691)
    >>> loss.backward()
    >>> logits.grad
    tensor([[-0.1065,  0.0533,  0.0533],
            [ 0.1667, -0.3333,  0.1667]])
    """
    arguments = (input, target, weight, size_average, ignore_index, reduce, reduction)
    if not _cross_entropy_supported(input, target, weight, size_average, reduce):
        return F.cross_entropy(*arguments, label_smoothing)
    if input.dim() == 1:  # one row: (C,) with a target () or (C,)
        loss = cross_entropy(
            input.unsqueeze(0),
            target.unsqueeze(0),
            weight,
            ignore_index=ignore_index,
            reduction=reduction,
            label_smoothing=label_smoothing,
        )
        return loss.squeeze(0) if reduction == "none" else loss
    return _eager(_fused_or_pytorch)(arguments, label_smoothing)


def _eager(function: Any) -> Any:
    """``function``, or under ``torch.compile`` its ``torch.compiler.disable`` twin (run eagerly,
    a graph break before and after): the twin's wrapper costs several microseconds a call."""
    return _EAGER_TWINS[function] if torch.compiler.is_compiling() else function


def _fused_or_pytorch(arguments: tuple, label_smoothing: float) -> torch.Tensor:
    input, target, weight, _, ignore_index, _, reduction = arguments
    # Without a backward to come, the forward alone (autograd.Function.apply costs ~10 us).
    needs_grad = input.requires_grad and torch.is_grad_enabled()
    function = _CrossEntropy.apply if needs_grad else partial(_CrossEntropy.forward, _NO_GRAD)
    try:
        return function(input, target, weight, ignore_index, reduction, label_smoothing)
    except (_Unsupported, *_REFUSED):
        return F.cross_entropy(*arguments, label_smoothing)


def _cross_entropy_supported(input, target, weight, size_average, reduce) -> bool:
    if size_average is not None or reduce is not None:
        return False
    if not (_native(input) and input.dim() >= 1 and isinstance(target, torch.Tensor)):
        return False
    if not _large_enough(input, 1 if input.dim() > 1 else 0):
        return False
    if target.shape == input.shape:  # probabilities, PyTorch's test
        if not _native(target, (input.dtype,)) or target.requires_grad:
            return False
    elif not _native(target, _LABEL_DTYPES):
        return False
    elif input.dim() == 1:
        if target.dim() != 0:
            return False
    elif target.shape != input.shape[:1] + input.shape[2:]:
        return False
    if weight is None:
        return True
    return (
        _native(weight, (input.dtype,))
        and not weight.requires_grad
        and weight.shape == (input.shape[1 if input.dim() > 1 else 0],)
    )


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` computed by :func:`cross_entropy`.

    The constructor is PyTorch's own (``weight``, ``size_average``, ``ignore_index``,
    ``reduce``, ``reduction``, ``label_smoothing``): the class weight is a buffer, the legacy
    arguments set ``reduction``, and an instance is an ``nn.CrossEntropyLoss``.

    Examples
    --------
    >>> import torch, fastsoftmax.torch as fst
    >>> criterion = fst.CrossEntropyLoss(label_smoothing=0.1)
    >>> criterion(torch.zeros(4, 3), torch.tensor([0, 1, 2, 0]))
    tensor(1.0986)
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(
            input,
            target,
            weight=self.weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


# -- softmax, log_softmax ------------------------------------------------------------------------


def _row_function(name: str) -> type[torch.autograd.Function]:
    """The autograd function of row kernel ``name`` (``"softmax"`` or ``"log_softmax"``): the
    public function of that name forward, and ``{name}_backward`` on the saved output."""

    class RowFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, input: torch.Tensor, dim: int) -> torch.Tensor:
            output = _tensor(getattr(_api, name)(_numpy(input), dim))
            ctx.save_for_backward(output)
            ctx.dim = dim
            return output

        @staticmethod
        def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor, None]:
            _first_order_only(name)
            (output,) = ctx.saved_tensors
            backward = getattr(_api, f"{name}_backward")
            return _tensor(backward(_numpy(grad_output), _numpy(output), ctx.dim)), None

    RowFunction.__name__ = RowFunction.__qualname__ = f"_{name}"
    return RowFunction


_Softmax = _row_function("softmax")
_LogSoftmax = _row_function("log_softmax")


def _rowwise(
    function: type[torch.autograd.Function],
    fallback: Any,
    input: torch.Tensor,
    dim: int | None,
    dtype: torch.dtype | None,
) -> torch.Tensor:
    if dtype is not None:
        input = input.to(dtype)
    if dim is None or not _native(input) or input.dim() == 0:
        return fallback(input, dim)
    if not (isinstance(dim, int) and -input.dim() <= dim < input.dim()):
        return fallback(input, dim)  # PyTorch's own error, or a named dimension
    if not _large_enough(input, dim):
        return fallback(input, dim)
    return _eager(_apply_or_pytorch)(function, fallback, input, dim)


def _apply_or_pytorch(
    function: type[torch.autograd.Function], fallback: Any, input: torch.Tensor, dim: int
) -> torch.Tensor:
    try:
        return function.apply(input, dim)
    except _REFUSED:  # e.g. dim out of range: PyTorch's own error
        return fallback(input, dim)


_EAGER_TWINS = {f: torch.compiler.disable(f) for f in (_fused_or_pytorch, _apply_or_pytorch)}


def softmax(input: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Softmax along ``dim``: ``torch.softmax`` (and ``F.softmax`` with a ``dim``).

    Parameters
    ----------
    input : torch.Tensor
    dim : int
        The dimension along which the probabilities sum to one.
    dtype : torch.dtype, optional
        Cast ``input`` to it first (as PyTorch does).

    Returns
    -------
    torch.Tensor
        The shape and dtype of ``input`` (``dtype`` if given).

    Examples
    --------
    >>> import torch, fastsoftmax.torch as fst
    >>> fst.softmax(torch.log(torch.tensor([1.0, 3.0])), dim=0)
    tensor([0.2500, 0.7500])
    """
    return _rowwise(_Softmax, torch.softmax, input, dim, dtype)


def log_softmax(input: torch.Tensor, dim: int, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Log of the softmax along ``dim``: ``torch.log_softmax`` (and ``F.log_softmax``).

    Parameters
    ----------
    input, dim, dtype
        As for :func:`softmax`.

    Returns
    -------
    torch.Tensor

    Examples
    --------
    >>> import torch, fastsoftmax.torch as fst
    >>> fst.log_softmax(torch.zeros(2), dim=0)
    tensor([-0.6931, -0.6931])
    """
    return _rowwise(_LogSoftmax, torch.log_softmax, input, dim, dtype)
