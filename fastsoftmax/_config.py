"""Which backend a call runs on: argument > ``use_backend`` > ``set_backend`` > env var > auto."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import os
from collections.abc import Iterator

import numpy as np

from fastsoftmax import backends

ENV_VAR = "FASTSOFTMAX_BACKEND"

_log = logging.getLogger("fastsoftmax")
_global_choice: str | None = None
_context_choice: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "fastsoftmax_backend", default=None
)


def _check_name(name, source: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"{source} must be a backend name (str), got {type(name).__name__}")
    if name != "auto":
        try:
            backends.load(name)
        except ValueError as exc:
            raise ValueError(f"{source}={name!r}: {exc}") from None
    return name


def set_backend(name: str) -> None:
    """Choose the backend for every later call in this process.

    ``"auto"`` restores the default: ``FASTSOFTMAX_BACKEND`` if set, else automatic choice.

    Parameters
    ----------
    name : str
        ``"auto"`` or one of :func:`fastsoftmax.available_backends`.

    Examples
    --------
    >>> import fastsoftmax
    >>> fastsoftmax.set_backend("numpy")
    >>> fastsoftmax.get_backend()
    'numpy'
    >>> fastsoftmax.set_backend("auto")
    """
    global _global_choice
    name = _check_name(name, "backend")
    _global_choice = None if name == "auto" else name  # back to FASTSOFTMAX_BACKEND or auto


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run the calls inside the ``with`` block on backend ``name`` (thread- and task-local).

    Examples
    --------
    >>> import numpy as np, fastsoftmax
    >>> with fastsoftmax.use_backend("numpy"):
    ...     fastsoftmax.softmax(np.zeros(2))
    array([0.5, 0.5])
    """
    token = _context_choice.set(_check_name(name, "backend"))
    try:
        yield
    finally:
        _context_choice.reset(token)


def get_backend() -> str:
    """The backend setting in force here: a name, or ``"auto"``."""
    for choice in (_context_choice.get(), _global_choice):
        if choice is not None:
            return choice
    env = os.environ.get(ENV_VAR, "").strip()
    return _check_name(env, ENV_VAR) if env else "auto"


def resolve_backend(backend: str | None = None) -> str:
    """The name of the backend a call with ``backend=backend`` runs on now.

    ``"auto"`` resolves to ``backends.auto_choice()``: the first of cython, numba, numpy built
    on this machine, passing over a build that lacks what makes it fast (Cython without
    OpenMP). Every call also logs the backend it ran on at DEBUG level on the
    ``"fastsoftmax"`` logger.

    Examples
    --------
    >>> import fastsoftmax
    >>> fastsoftmax.resolve_backend("numpy")
    'numpy'
    >>> fastsoftmax.resolve_backend() in fastsoftmax.available_backends()
    True
    """
    name = get_backend() if backend is None else _check_name(backend, "backend")
    return _auto_backend() if name == "auto" else name


@functools.cache
def _auto_backend() -> str:
    """``backends.auto_choice()``, fixed once found (cached)."""
    return backends.auto_choice()


def kernel_module(kernel: str, backend: str | None, work: int, n_threads: int | None):
    """The backend module to run ``kernel`` on and the thread count to give it.

    Small problems run on one thread: on two cores, starting a parallel region costs more
    than it saves below about 2**15 elements (measured with ``fastsoftmax bench``).
    """
    global _openmp_started
    name = resolve_backend(backend)
    module = backends.load(name)
    cap = module.max_threads()
    threads = cap if n_threads is None else min(n_threads, cap)
    if work < PARALLEL_MIN_WORK:
        threads = 1
    spec = backends.BACKENDS[name]
    if _forked_after_openmp:
        if not spec.serial_after_fork:
            usable = [b.name for b in backends.BACKENDS.values() if b.serial_after_fork]
            raise RuntimeError(
                f"backend {name!r} cannot run in a process forked after its parent ran a "
                "parallel fastsoftmax kernel: GNU OpenMP does not survive fork(). Start worker "
                "processes with the 'spawn' or 'forkserver' method, or use one of "
                f"{usable} (one thread in a forked child)"
            )
        threads = 1  # no parallel region: the child's OpenMP thread pool is unusable
    elif spec.pool_at_first_call or (threads > 1 and spec.threaded):
        _openmp_started = True
    if _log.isEnabledFor(logging.DEBUG):
        _log.debug("%s runs on backend %r with %d thread(s)", kernel, name, threads)
    return module, threads


PARALLEL_MIN_WORK = 1 << 15

# GNU OpenMP's thread pool does not survive fork(): a child forked after its parent ran a
# parallel region hangs in its own first one (Cython), or Numba's OpenMP layer terminates it.
# So a forked child of such a parent runs the backends that can on one thread (no parallel
# region, as PyTorch does) and refuses the others by name (``Backend.serial_after_fork``).
# Children of a parent that never ran a parallel kernel, and spawned processes, are unaffected.
_openmp_started = False
_forked_after_openmp = False


def _after_fork_in_child() -> None:
    global _forked_after_openmp
    _forked_after_openmp = _forked_after_openmp or _openmp_started


os.register_at_fork(after_in_child=_after_fork_in_child)


def ieee_arithmetic():
    """The context every raw kernel (and any computation of the kernels' results) runs in:
    NumPy's floating-point warnings off.

    An overflow to inf, or an inf - inf giving NaN, inside a kernel is the documented answer
    for such input (IEEE arithmetic, on every backend alike); only NumPy code (the reference
    kernels, the BLAS logits, the conversions of their results) would warn about it, from deep
    inside, about nothing the caller can act on.
    """
    return np.errstate(over="ignore", invalid="ignore", divide="ignore")
