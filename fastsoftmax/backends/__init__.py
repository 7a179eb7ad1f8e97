"""Backend registry: which backends exist, how each is loaded, and what it can do.

A backend is a module that implements every raw kernel of :data:`fastsoftmax._registry.KERNELS`
with the signature of :mod:`fastsoftmax.backends.numpy_reference` (the specification), plus
``max_threads()`` and ``describe()`` (facts for ``fastsoftmax info`` and the bench header), and
optionally ``shortfalls()`` (what its build lacks, see :func:`shortfalls`). The
front layer (:mod:`fastsoftmax._api`) validates and lays out every argument before a raw kernel
sees it:

* ``x``/``logits``/``grad_output``/``output``: 2-D, C-contiguous, float32 or float64, at least
  one row and one column;
* outputs are preallocated, C-contiguous, of the input's dtype (``loss_out`` is float64); an
  output may be one of the row inputs itself (in place) but overlaps no other input;
* ``labels`` int64 with ``-1`` marking an ignored row; ``weights`` float64, finite, >= 0;
* ``param``/``grad``/``velocity``: 1-D, C-contiguous, one dtype;
* ``n_threads`` an int >= 1, already capped at the backend's ``max_threads()``.

Adding a backend is one module and one :class:`Backend` entry in :data:`BACKENDS`; no other file
names it. Modules are imported on first use and cached, so ``import fastsoftmax`` never pays for
Numba.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class Backend:
    """What the rest of the package may know about one backend.

    Attributes
    ----------
    name : str
        The name users pass as ``backend=``.
    module : str
        The module implementing the raw kernels, imported on first use.
    how_to_get : str
        What to do when the module cannot be imported (shown in the error).
    auto_rank : int
        ``"auto"`` takes the available backend of lowest rank that has no shortfalls.
    threaded : bool
        Whether ``n_threads`` changes what it does.
    pool_at_first_call : bool
        Whether its first call starts a thread pool whatever ``n_threads`` is (such a pool does
        not survive ``fork()``).
    serial_after_fork : bool
        Whether it can still run, on one thread, in a process forked after a parallel call.
    """

    name: str
    module: str
    how_to_get: str
    auto_rank: int
    threaded: bool = True
    pool_at_first_call: bool = False
    serial_after_fork: bool = True


BACKENDS: dict[str, Backend] = {
    backend.name: backend
    for backend in (
        Backend(
            "numpy",
            "fastsoftmax.backends.numpy_reference",
            "it ships with fastsoftmax",
            auto_rank=2,
            threaded=False,
        ),
        # Numba's OpenMP layer terminates a process forked after it ran a parallel region.
        Backend(
            "numba",
            "fastsoftmax.backends.numba_kernels",
            'install Numba: pip install "numba>=0.60"',
            auto_rank=1,
            pool_at_first_call=True,
            serial_after_fork=False,
        ),
        # First in "auto": it beats the reference on every kernel and shape (`fastsoftmax info`)
        # and, unlike Numba, needs no compilation on first use; unless built without OpenMP
        # (see shortfalls), when it runs on one thread.
        Backend(
            "cython",
            "fastsoftmax.backends.cython_kernels",
            "the compiled extension is missing: reinstall from source with a C compiler "
            '(pip install -e . ), see "Installation" in the README',
            auto_rank=0,
        ),
    )
}

_loaded: dict[str, ModuleType] = {}
_failures: dict[str, str] = {}


def _import(name: str) -> ModuleType | None:
    """The backend's module, or None if it cannot be imported here (the reason is kept)."""
    if name not in _loaded and name not in _failures:
        try:
            _loaded[name] = importlib.import_module(BACKENDS[name].module)
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
            f"backend {name!r} is not available ({_failures[name]}); "
            f"{BACKENDS[name].how_to_get}. Available here: {available_backends()}"
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


def shortfalls(name: str) -> list[str]:
    """Why backend ``name``, as built here, runs well below its usual speed (empty if it does
    not, or if it is not available): each reason says what to do about it.

    Examples
    --------
    >>> from fastsoftmax import backends
    >>> backends.shortfalls("numpy")
    []
    """
    module = _import(name)
    return list(getattr(module, "shortfalls", list)()) if module is not None else []


def auto_order() -> list[str]:
    """Every backend name, in the order of their ``auto_rank``."""
    return sorted(BACKENDS, key=lambda name: BACKENDS[name].auto_rank)


def auto_choice() -> str:
    """The backend ``"auto"`` runs on: the first of :func:`auto_order` available here without
    shortfalls, else the first available. Backends after the choice are not imported."""
    first_available = None
    for name in auto_order():
        if is_available(name):
            if not shortfalls(name):
                return name
            first_available = first_available or name
    return first_available  # (numpy is always available and has none)
