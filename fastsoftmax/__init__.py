"""fastsoftmax: fast softmax-regression kernels in NumPy, Numba and Cython behind one API.

Examples
--------
>>> import numpy as np, fastsoftmax
>>> fastsoftmax.softmax(np.array([0.0, 0.0]))
array([0.5, 0.5])
"""

from fastsoftmax._api import log_softmax, logsumexp, sgd_update, softmax, softmax_cross_entropy
from fastsoftmax._config import get_backend, resolve_backend, set_backend, use_backend
from fastsoftmax._warmup import warmup
from fastsoftmax.backends import available_backends

__version__ = "0.1.0"

__all__ = [
    "available_backends",
    "get_backend",
    "log_softmax",
    "logsumexp",
    "resolve_backend",
    "set_backend",
    "sgd_update",
    "softmax",
    "softmax_cross_entropy",
    "use_backend",
    "warmup",
]
