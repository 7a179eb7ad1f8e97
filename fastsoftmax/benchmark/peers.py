"""Optional peers for the benchmarks: SciPy, PyTorch (CPU) and JAX (CPU), imported lazily.

* A peer is never a dependency: :func:`implementations` lists only the peers installed here,
  found with ``importlib.util.find_spec`` (no import). A peer's module is imported when the
  first runner for it is built, so ``fastsoftmax bench`` without ``--compare-peers`` never
  pays for importing PyTorch.
* This module maps the public kernel names to each peer's functions; every entry is
  ``(make, modes)`` over the inputs of :func:`fastsoftmax.benchmark.case_inputs`, which
  :func:`fastsoftmax.benchmark.registry` wraps in an ``Implementation``. Arrays are shared with
  NumPy, never copied (``torch.from_numpy``), so every implementation reads the same memory.
* Threads: PyTorch's count is process-wide, so its runner factories set it
  (``torch.set_num_threads``) and :func:`preserved_threads` restores it afterwards. SciPy runs
  on one thread; JAX fixes its thread pool at start-up (XLA flags), so it is marked unthreaded.
* What a peer lacks is absent, not emulated: SciPy has no ``out=``, PyTorch's cross-entropy
  backward and ``optim.SGD.step`` allocate their own buffers, JAX computes float64 only with
  ``jax_enable_x64`` (otherwise it would silently compute in float32, so that case is skipped).
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from functools import partial

import numpy as np

from fastsoftmax._registry import SGD_STEP, touched

HOW_TO_GET = {
    "scipy": "pip install scipy",
    # Any other torch spec may download gigabytes; 2.13.0 is the CPU wheel this project uses.
    "torch": "pip install torch==2.13.0",
    "jax": 'pip install "jax[cpu]"',
}
"""How to install each peer, as printed when it is missing."""

THREADED = ("torch",)
"""Peers whose thread count ``n_threads`` sets."""

COMPARED = "torch"
"""The peer every row of the bench's tables is also compared with (the "vs torch" column)."""

Entry = tuple[Callable, tuple[str, ...]]
"""``(make, modes)``: ``make(data, mode, n_threads)`` builds a runner; ``modes`` it offers."""


def is_installed(name: str) -> bool:
    """Whether peer ``name`` can be imported here (checked without importing it).

    Examples
    --------
    >>> from fastsoftmax.benchmark import peers
    >>> peers.is_installed("scipy")
    True
    """
    return importlib.util.find_spec(name) is not None


def versions() -> dict[str, str]:
    """Each peer's installed version, or ``"not installed (<how to get it>)"``.

    Examples
    --------
    >>> from fastsoftmax.benchmark import peers
    >>> sorted(peers.versions())
    ['jax', 'scipy', 'torch']
    """
    import importlib.metadata  # 15 ms: only when a report is made, not with fastsoftmax

    found = {}
    for name, how in HOW_TO_GET.items():
        if not is_installed(name):
            found[name] = f"not installed ({how})"
            continue
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # importable but not pip-installed
            found[name] = getattr(sys.modules.get(name), "__version__", "unknown version")
    return found


@contextlib.contextmanager
def preserved_threads() -> Iterator[None]:
    """Restore PyTorch's process-wide thread count on exit (runner factories change it).

    Examples
    --------
    >>> from fastsoftmax.benchmark import peers
    >>> with peers.preserved_threads():
    ...     pass
    """
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        torch = sys.modules.get("torch")
        if torch is not None and before is not None:
            torch.set_num_threads(before)


def thread_facts() -> dict[str, int]:
    """``{"<peer>_threads": n}`` for the threaded peers already imported (none is imported).

    Examples
    --------
    >>> from fastsoftmax.benchmark import peers
    >>> set(peers.thread_facts()) <= {"torch_threads"}
    True
    """
    torch = sys.modules.get("torch")
    return {} if torch is None else {"torch_threads": torch.get_num_threads()}


def preimport() -> None:
    """Import PyTorch now, if installed: a process that forks afterwards (asv's fork server)
    then imports it once, not per benchmark (about a second each). Forking after the import is
    safe; after PyTorch has run a parallel region it is not (GNU OpenMP), so nothing runs."""
    if is_installed("torch"):
        import torch  # noqa: F401


def implementations() -> dict[str, dict[str, Entry]]:
    """``{kernel: {peer: (make, modes)}}`` for the peers installed here (public kernel names).

    Examples
    --------
    >>> from fastsoftmax.benchmark import peers
    >>> "scipy" in peers.implementations()["softmax"]  # SciPy is installed with fastsoftmax
    True
    """
    table: dict[str, dict[str, Entry]] = {}

    def add(kernel: str, peer: str, make, modes: tuple[str, ...]) -> None:
        table.setdefault(kernel, {})[peer] = (make, modes)

    if is_installed("scipy"):
        for kernel in ("logsumexp", "softmax", "log_softmax"):
            add(kernel, "scipy", partial(_scipy_rowwise, kernel), ("alloc",))
    if is_installed("torch"):
        add("logsumexp", "torch", partial(_torch_rowwise, "logsumexp"), ("alloc", "out"))
        for kernel in ("softmax", "log_softmax"):
            add(kernel, "torch", partial(_torch_rowwise, kernel), ("alloc", "out"))
        add("softmax_cross_entropy", "torch", _torch_cross_entropy, ("alloc",))
        add("sgd_update", "torch", _torch_sgd, ("out",))
    if is_installed("jax"):
        for kernel in ("logsumexp", "softmax", "log_softmax"):
            add(kernel, "jax", partial(_jax_rowwise, kernel), ("alloc",))
    return table


# -- SciPy ---------------------------------------------------------------------------------------


def _scipy_rowwise(kernel: str, data: dict, mode: str, n_threads: int | None):
    from scipy import special

    return partial(getattr(special, kernel), data["x"], axis=-1)


# -- PyTorch -------------------------------------------------------------------------------------


def _torch(n_threads: int | None):
    import torch

    if n_threads is not None:
        torch.set_num_threads(n_threads)
    return torch


def _torch_rowwise(kernel: str, data: dict, mode: str, n_threads: int | None):
    torch = _torch(n_threads)
    function = getattr(torch, kernel)
    x = torch.from_numpy(data["x"])
    if mode == "out":
        # The inputs have no (rows,) output: logsumexp's is made here, once per input set.
        reduced = kernel == "logsumexp"
        out = touched(data["x"].shape[:1], data["x"].dtype) if reduced else data["out"]
        return partial(function, x, -1, out=torch.from_numpy(out))
    return partial(function, x, -1)


def _torch_cross_entropy(data: dict, mode: str, n_threads: int | None):
    """Forward and backward: mean cross-entropy and its gradient w.r.t. the logits."""
    torch = _torch(n_threads)
    logits = torch.from_numpy(data["x"]).requires_grad_()
    labels = torch.from_numpy(data["labels"])

    def forward_backward():
        loss = torch.nn.functional.cross_entropy(logits, labels)
        # autograd.grad returns a fresh gradient; loss.backward() would accumulate into
        # logits.grad, an extra pass over the logits that no other implementation makes.
        return torch.autograd.grad(loss, logits)[0]

    return forward_backward


def _torch_sgd(data: dict, mode: str, n_threads: int | None):
    """``torch.optim.SGD.step`` with the step of :data:`SGD_STEP`."""
    torch = _torch(n_threads)
    param = torch.from_numpy(data["param"]).requires_grad_()
    param.grad = torch.from_numpy(data["grad"])
    # SGD keeps its own momentum buffer (created on the first step, which is never timed).
    return torch.optim.SGD([param], **SGD_STEP).step


# -- JAX (not installed on the development machines: kept minimal) ------------------------------


def _jax_rowwise(kernel: str, data: dict, mode: str, n_threads: int | None):
    import jax
    import jax.scipy.special

    x = data["x"]
    if x.dtype == np.float64 and not jax.config.jax_enable_x64:
        return None
    functions = {
        "logsumexp": jax.scipy.special.logsumexp,
        "softmax": jax.nn.softmax,
        "log_softmax": jax.nn.log_softmax,
    }
    compiled = jax.jit(partial(functions[kernel], axis=-1))
    on_device = jax.device_put(x)
    # JAX dispatches asynchronously: wait for the result, or only the dispatch is timed.
    return lambda: compiled(on_device).block_until_ready()
