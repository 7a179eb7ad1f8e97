"""The kernels, registered once.

Each raw kernel (the function every backend module implements on validated arrays) has one
:class:`Kernel` entry in :data:`KERNELS`: its raw signature, the public function that runs it,
the inputs it takes, the bytes a call must move, and how to reach it through the public API.
The backends' contract test, :func:`fastsoftmax.warmup`, the bench, the asv and pytest-benchmark
suites and the generated tests iterate over :data:`KERNELS`: a new kernel is found everywhere by
being registered here.

Inputs come in families (:data:`INPUTS`): deterministic arrays for a shape and dtype, with
preallocated outputs, shared by every entry point so that they all time and test the same
numbers.

Examples
--------
>>> import numpy as np
>>> from fastsoftmax._registry import KERNELS, make_inputs
>>> spec = KERNELS["softmax"]
>>> spec.public, spec.params
('softmax', ('x', 'out', 'n_threads'))
>>> data = make_inputs(spec.inputs, (2, 3), np.float64, np.random.default_rng(0))
>>> (p,) = spec.call(data, backend="numpy")
>>> np.allclose(p.sum(axis=1), 1)
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fastsoftmax import _api
from fastsoftmax._linear import linear_softmax_cross_entropy

#: The dtypes every kernel takes.
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

#: How the bench calls a kernel: letting it allocate its output, or into preallocated arrays.
MODES = ("alloc", "out")


def touched(shape: tuple, dtype) -> np.ndarray:
    """Zeros written now, so that a preallocated output never page-faults inside a timed call
    (``np.zeros`` hands out untouched pages)."""
    array = np.empty(shape, dtype)
    array.fill(0)
    return array


# -- input families ------------------------------------------------------------------------


def _rows(shape, dtype, rng):
    n_rows, n_classes = shape
    return {
        "x": rng.standard_normal(shape, dtype=dtype),
        "labels": rng.integers(0, n_classes, n_rows),
        "out": touched(shape, dtype),
    }


def _soft_rows(shape, dtype, rng):
    target = rng.random(shape)
    return {
        "x": rng.standard_normal(shape, dtype=dtype),
        "target": (target / target.sum(axis=1, keepdims=True)).astype(dtype),
        "out": touched(shape, dtype),
    }


def _backward_of(forward: Callable) -> Callable:
    """Inputs of a backward kernel: an upstream gradient and ``forward``'s output."""

    def make(shape, dtype, rng):
        return {
            "grad_output": rng.standard_normal(shape, dtype=dtype),
            "output": forward(rng.standard_normal(shape, dtype=dtype), backend="numpy"),
            "out": touched(shape, dtype),
        }

    return make


def _vectors(shape, dtype, rng):
    return {
        "param": rng.standard_normal(shape, dtype=dtype),
        "grad": rng.standard_normal(shape, dtype=dtype),
        "velocity": touched(shape, dtype),
    }


#: Classes of the linear kernels' inputs, whose shape is (rows, features): softmax regression's
#: typical k.
LINEAR_CLASSES = 10


def _linear(sparse: bool) -> Callable:
    """Inputs of the linear + softmax + cross-entropy kernels: rows ``X`` (n, d), dense or CSR
    (a third of the entries stored), weights ``W`` (k, d) and ``b``, labels and row weights."""

    def make(shape, dtype, rng):
        from scipy.sparse import csr_matrix

        n_rows, n_features = shape
        X = rng.standard_normal(shape, dtype=dtype)
        if sparse:
            X = csr_matrix(np.where(rng.random(shape) < 1 / 3, X, 0))
        return {
            "X": X,
            "W": 0.1 * rng.standard_normal((LINEAR_CLASSES, n_features), dtype=dtype),
            "b": rng.standard_normal(LINEAR_CLASSES, dtype=dtype),
            "labels": rng.integers(0, LINEAR_CLASSES, n_rows),
            "weights": rng.random(n_rows) + 0.5,
        }

    return make


#: Input family name -> ``make(shape, dtype, rng)`` returning the named arrays.
INPUTS: dict[str, Callable[[tuple, np.dtype, np.random.Generator], dict[str, np.ndarray]]] = {
    "rows": _rows,
    "soft_rows": _soft_rows,
    "softmax_backward": _backward_of(_api.softmax),
    "log_softmax_backward": _backward_of(_api.log_softmax),
    "vectors": _vectors,
    "linear": _linear(sparse=False),
    "linear_csr": _linear(sparse=True),
}


def make_inputs(family: str, shape: tuple, dtype, rng: np.random.Generator) -> dict:
    """The arrays of input family ``family`` for ``shape`` and ``dtype``, drawn from ``rng``."""
    return INPUTS[family](tuple(shape), np.dtype(dtype), rng)


# -- the kernels ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    """One raw kernel and everything the package knows about it.

    Attributes
    ----------
    name : str
        The raw kernel: a function of this name in every backend module.
    params : tuple of str
        Its parameters, as in :mod:`fastsoftmax.backends.numpy_reference`.
    public : str
        The public function (in :mod:`fastsoftmax`) that runs it.
    inputs : str
        Its input family, a key of :data:`INPUTS`.
    call : callable
        ``call(data, mode="alloc", **options)`` runs ``public`` on ``data`` (one set of its
        input family) so that it reaches this raw kernel, writing into ``data``'s preallocated
        outputs when ``mode == "out"``; returns the results as a tuple of arrays. ``options``
        are ``backend`` and ``n_threads``.
    moves : callable
        ``moves(shape, itemsize)``: the bytes one call must move at least, its inputs read once
        and its outputs written once.
    modes : tuple of str
        The modes of :data:`MODES` it offers.
    bench : bool
        Whether the bench times it as ``public`` (one raw kernel per public function).
    vjp_of : str, optional
        For a backward kernel, the public function whose vector-Jacobian product it is.
    ndim : int
        The rank of the shapes its inputs are made for: 2 (rows, classes) for the row kernels,
        1 (a length) for the elementwise ones.
    """

    name: str
    params: tuple[str, ...]
    public: str
    inputs: str
    call: Callable[..., tuple]
    moves: Callable[[tuple, int], int]
    modes: tuple[str, ...] = MODES
    bench: bool = True
    vjp_of: str | None = None
    ndim: int = 2


def _size(shape: tuple, itemsize: int) -> int:
    return math.prod(shape) * itemsize


def _call_row_kernel(public: str, *names: str) -> Callable[..., tuple]:
    def call(data, mode="alloc", **options):
        out = data["out"] if mode == "out" else None
        args = [data[name] for name in names]
        return (getattr(_api, public)(*args, out=out, **options),)

    return call


def _call_logsumexp(data, mode="alloc", **options):
    return (_api.logsumexp(data["x"], **options),)


def _call_cross_entropy(target: str, **settings) -> Callable[..., tuple]:
    def call(data, mode="alloc", **options):
        grad_out = data["out"] if mode == "out" else None
        return _api.softmax_cross_entropy(
            data["x"], data[target], grad_out=grad_out, **settings, **options
        )

    return call


def _call_linear(data, mode="alloc", **options):
    X, W, b, labels = data["X"], data["W"], data["b"], data["labels"]
    weights = data["weights"]
    return linear_softmax_cross_entropy(
        X, W, b, labels, sample_weight=weights, method="fused", **options
    )


#: The step ``sgd_momentum`` is called with (peers time the same step).
SGD_STEP = {"lr": 1e-3, "momentum": 0.9}


def _call_sgd(momentum: float) -> Callable[..., tuple]:
    def call(data, mode="out", **options):
        param = data["param"]
        velocity = data["velocity"] if momentum else None
        _api.sgd_update(
            param,
            data["grad"],
            lr=SGD_STEP["lr"],
            momentum=momentum,
            velocity=velocity,
            **options,
        )
        return (param,) if velocity is None else (param, velocity)

    return call


def _backward_kernel(forward: str) -> Kernel:
    """The vector-Jacobian product of row kernel ``forward``, public as ``{forward}_backward``."""
    name = f"{forward}_backward"
    return Kernel(
        name,
        ("grad_output", "output", "grad_input", "n_threads"),
        name,
        name,  # its input family: the upstream gradient and forward's output
        _call_row_kernel(name, "grad_output", "output"),
        lambda shape, size: 3 * _size(shape, size),
        vjp_of=forward,
    )


_THREADS = ("n_threads",)
_ROW = ("x", "out", *_THREADS)
_CROSS_ENTROPY = ("weights", "scale", "label_smoothing", "loss_out", "grad_out", "n_threads")

#: Every raw kernel, by name, in the order reports list them.
KERNELS: dict[str, Kernel] = {
    kernel.name: kernel
    for kernel in (
        Kernel(
            "logsumexp",
            _ROW,
            "logsumexp",
            "rows",
            _call_logsumexp,
            lambda shape, size: _size(shape, size) + shape[0] * size,
            modes=("alloc",),
        ),
        Kernel(
            "softmax",
            _ROW,
            "softmax",
            "rows",
            _call_row_kernel("softmax", "x"),
            lambda shape, size: 2 * _size(shape, size),
        ),
        Kernel(
            "log_softmax",
            _ROW,
            "log_softmax",
            "rows",
            _call_row_kernel("log_softmax", "x"),
            lambda shape, size: 2 * _size(shape, size),
        ),
        Kernel(
            "cross_entropy_labels",
            ("logits", "labels", *_CROSS_ENTROPY),
            "softmax_cross_entropy",
            "rows",
            _call_cross_entropy("labels"),
            lambda shape, size: 2 * _size(shape, size) + shape[0] * 8,  # int64 labels
        ),
        Kernel(
            "cross_entropy_soft",
            ("logits", "target", *_CROSS_ENTROPY),
            "softmax_cross_entropy",
            "soft_rows",
            _call_cross_entropy("target", label_smoothing=0.1),
            lambda shape, size: 3 * _size(shape, size),
            bench=False,
        ),
        _backward_kernel("softmax"),
        _backward_kernel("log_softmax"),
        *(
            Kernel(
                f"linear_cross_entropy{suffix}",
                (*matrix, "rows", "W", "b", "labels", "weights", "scale", "dW", "db", *_THREADS),
                "linear_softmax_cross_entropy",
                f"linear{suffix}",
                _call_linear,
                # X read once, W read and dW written, the labels and weights of each row
                lambda shape, size: (
                    _size(shape, size) + 2 * LINEAR_CLASSES * shape[1] * size + 16 * shape[0]
                ),
                modes=("alloc",),
                bench=False,
            )
            for suffix, matrix in (("", ("X",)), ("_csr", ("X_data", "X_indices", "X_indptr")))
        ),
        Kernel(
            "sgd",
            ("param", "grad", "lr", "weight_decay", "sign", "n_threads"),
            "sgd_update",
            "vectors",
            _call_sgd(momentum=0.0),
            lambda shape, size: 3 * _size(shape, size),
            modes=("out",),
            bench=False,
            ndim=1,
        ),
        Kernel(
            "sgd_momentum",
            (
                *("param", "grad", "velocity", "lr", "momentum", "weight_decay", "nesterov"),
                *("sign", "dampening", "first_step", *_THREADS),
            ),
            "sgd_update",
            "vectors",
            _call_sgd(momentum=SGD_STEP["momentum"]),
            lambda shape, size: 5 * _size(shape, size),
            modes=("out",),
            ndim=1,
        ),
    )
}

#: The public functions the bench times, each through one raw kernel.
BENCHED: dict[str, Kernel] = {k.public: k for k in KERNELS.values() if k.bench}
