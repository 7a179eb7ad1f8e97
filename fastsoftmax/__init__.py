"""fastsoftmax: fast softmax-regression kernels in NumPy, Numba and Cython behind one API.

Examples
--------
>>> import numpy as np, fastsoftmax
>>> fastsoftmax.softmax(np.array([0.0, 0.0]))
array([0.5, 0.5])
"""

from fastsoftmax._api import (
    log_softmax,
    log_softmax_backward,
    logsumexp,
    sgd_update,
    softmax,
    softmax_backward,
    softmax_cross_entropy,
)
from fastsoftmax._config import get_backend, resolve_backend, set_backend, use_backend
from fastsoftmax._linear import linear_softmax_cross_entropy
from fastsoftmax._warmup import warmup
from fastsoftmax.backends import available_backends

__version__ = "0.1.0"


def __getattr__(name: str):
    # The classifier (scikit-learn) and the benchmark harness are imported on first use, so
    # that `import fastsoftmax` pays only for the kernels.
    if name == "SoftmaxRegression":
        from fastsoftmax.classifier import SoftmaxRegression

        return SoftmaxRegression
    if name == "bench":
        from fastsoftmax.benchmark import bench

        return bench
    raise AttributeError(f"module 'fastsoftmax' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names of __getattr__ are not globals until first used: list them too.
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "SoftmaxRegression",
    "available_backends",
    "bench",
    "get_backend",
    "linear_softmax_cross_entropy",
    "log_softmax",
    "log_softmax_backward",
    "logsumexp",
    "resolve_backend",
    "set_backend",
    "sgd_update",
    "softmax",
    "softmax_backward",
    "softmax_cross_entropy",
    "use_backend",
    "warmup",
]
