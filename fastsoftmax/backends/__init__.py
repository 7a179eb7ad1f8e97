"""Backend registry: names, lazy loading, and the raw-kernel contract every backend implements.

A backend is a module exposing :data:`RAW_KERNELS` with the signatures of
:mod:`fastsoftmax.backends.numpy_reference` (the specification). The front layer
(:mod:`fastsoftmax._api`) validates and lays out every argument before a raw kernel sees it:

* ``x``/``logits``: 2-D, C-contiguous, float32 or float64, at least one row and one column;
* outputs are preallocated, C-contiguous, of the input's dtype (``loss_out`` is float64);
  ``out``/``grad_out`` may be ``x``/``logits`` itself (in place) but overlap no other input;
* ``labels`` int64 with ``-1`` marking an ignored row; ``weights`` float64, finite, >= 0;
* ``param``/``grad``/``velocity``: 1-D, C-contiguous, one dtype;
* ``n_threads`` an int >= 1, already capped at the backend's ``max_threads()``.

Modules are imported on first use and cached, so ``import fastsoftmax`` never pays for Numba.
"""

from __future__ import annotations

import importlib
from types import ModuleType

RAW_KERNELS = (
    "logsumexp",
    "softmax",
    "log_softmax",
    "cross_entropy_labels",
    "cross_entropy_soft",
    "sgd",
    "sgd_momentum",
)

BACKENDS = {
    "numpy": "fastsoftmax.backends.numpy_reference",
    "numba": "fastsoftmax.backends.numba_kernels",
    "cython": "fastsoftmax.backends.cython_kernels",
}

_HOW_TO_GET = {
    "numpy": "it ships with fastsoftmax",
    "numba": 'install Numba: pip install "numba>=0.60"',
    "cython": (
        "the compiled extension is missing: reinstall from source with a C compiler "
        '(pip install -e . ), see "Installation" in the README'
    ),
}

_loaded: dict[str, ModuleType] = {}
_failures: dict[str, str] = {}


def _import(name: str) -> ModuleType | None:
    """The backend's module, or None if it cannot be imported here (the reason is kept)."""
    if name not in _loaded and name not in _failures:
        try:
            _loaded[name] = importlib.import_module(BACKENDS[name])
        except ImportError as exc:
            _failures[name] = f"{type(exc).__name__}: {exc}"
    return _loaded.get(name)


def load(name: str) -> ModuleType:
    """Return the module of backend ``name``, importing it on first use.

    Raises
    ------
    ValueError
        If ``name`` is unknown or the backend cannot be imported on this machine; the message
        lists the known backends and says how to get the missing one.
    """
    if name not in BACKENDS:
        raise ValueError(
            f"unknown backend {name!r}: expected 'auto' or one of {list(BACKENDS)} "
            f"(available here: {available_backends()})"
        )
    module = _import(name)
    if module is None:
        raise ValueError(
            f"backend {name!r} is not available ({_failures[name]}); {_HOW_TO_GET[name]}. "
            f"Available here: {available_backends()}"
        )
    return module


def is_available(name: str) -> bool:
    return name in BACKENDS and _import(name) is not None


def available_backends() -> list[str]:
    """Names of the backends that work on this machine, in registry order.

    Examples
    --------
    >>> import fastsoftmax
    >>> "numpy" in fastsoftmax.available_backends()
    True
    """
    return [name for name in BACKENDS if is_available(name)]
