"""What can be timed here: ``{kernel: {implementation: Implementation}}``, and its runners.

* The kernels are the public functions of :data:`fastsoftmax._registry.BENCHED`, each timed
  through its one raw kernel's ``Kernel.call``, on every available backend of
  :data:`fastsoftmax.backends.BACKENDS`: a kernel or a backend is found here by being
  registered there. The classifier epoch (:data:`EPOCH`) is the one case that is not a kernel.
* The installed peers of :mod:`fastsoftmax.benchmark.peers` (SciPy, PyTorch, JAX) join with
  ``peers=True``; their modules are imported only when one of their runners is built.
* Implementations are listed in :data:`IMPLEMENTATION_ORDER`: the backends in registry order,
  then the peers. The first backend, the specification, is the :data:`REFERENCE` that speed-ups
  are measured against.
* Mode "alloc" lets the function allocate its output; "out" writes into the preallocated
  arrays of the inputs (``out=``, ``grad_out=``, or in place): the page faults of a fresh
  output can cost as much as the kernel.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from fastsoftmax import _registry, backends
from fastsoftmax.benchmark import peers as _peers
from fastsoftmax.benchmark.inputs import EPOCH, case_inputs, rotation_copies
from fastsoftmax.benchmark.timer import Runner

KERNELS: tuple[str, ...] = tuple(_registry.BENCHED)
"""The kernels every implementation is compared on (public names, in registry order)."""

MODES = _registry.MODES
""""alloc": the call allocates its output; "out": it writes into preallocated arrays."""

IMPLEMENTATION_ORDER: tuple[str, ...] = (*backends.BACKENDS, *_peers.HOW_TO_GET)
"""How reports order implementations: the backends in registry order, then the peers."""

REFERENCE: str = next(iter(backends.BACKENDS))
"""The implementation speed-ups are measured against: the first backend, the specification."""


@dataclass(frozen=True)
class Implementation:
    """How one library runs one kernel: ``make(data, mode, n_threads)`` builds a runner.

    Parameters
    ----------
    make : callable
        ``make(data, mode, n_threads)`` returns a no-argument callable running the kernel once
        on the arrays of ``data`` (one set from :func:`case_inputs`), or None if it cannot run
        that case. A backend's runner returns what ``Kernel.call`` returns: a tuple of arrays.
    modes : tuple of str
        The modes of :data:`MODES` it offers.
    threaded : bool
        Whether ``n_threads`` changes what it does.

    Examples
    --------
    >>> from fastsoftmax import benchmark
    >>> numpy_softmax = benchmark.registry()["softmax"]["numpy"]
    >>> data = benchmark.case_inputs("softmax", (2, 3), "float64")[0]
    >>> run = numpy_softmax(data, "out")
    >>> run()[0] is data["out"]
    True
    """

    make: Callable[[dict[str, np.ndarray], str, int | None], Runner | None]
    modes: tuple[str, ...] = MODES
    threaded: bool = True

    def __call__(self, data: dict, mode: str, n_threads: int | None = None) -> Runner | None:
        if mode not in self.modes:
            return None
        return self.make(data, mode, n_threads)


def _kernel_runner(kernel: _registry.Kernel, backend: str, data, mode, n_threads) -> Runner:
    return partial(kernel.call, data, mode, backend=backend, n_threads=n_threads)


def _epoch_runner(backend: str, data, mode, n_threads) -> Runner:
    from fastsoftmax.classifier import SoftmaxRegression

    model = SoftmaxRegression(
        solver="sgd",
        max_epochs=1,
        tol=None,
        random_state=0,
        dtype=data["X"].dtype.type,
        backend=backend,
        n_threads=n_threads,
    )
    return partial(model.fit, data["X"], data["y"])


def _backend_implementations(backend: str) -> dict[str, Implementation]:
    """Every benched kernel of fastsoftmax backend ``backend``, and the classifier epoch."""
    threaded = backends.BACKENDS[backend].threaded
    table = {
        public: Implementation(partial(_kernel_runner, kernel, backend), kernel.modes, threaded)
        for public, kernel in _registry.BENCHED.items()
    }
    table[EPOCH] = Implementation(partial(_epoch_runner, backend), ("alloc",), threaded)
    return table


def registry(
    peers: bool = False, implementations: Iterable[str] | None = None
) -> dict[str, dict[str, Implementation]]:
    """``{kernel: {implementation: Implementation}}`` for what is available here.

    Parameters
    ----------
    peers : bool, default False
        Add the installed peers (SciPy, PyTorch, JAX) next to the fastsoftmax backends.
    implementations : iterable of str, optional
        Keep only these implementations (backend or peer names).

    Examples
    --------
    >>> from fastsoftmax import benchmark
    >>> table = benchmark.registry(implementations=["numpy"])
    >>> sorted(table["softmax"]), table["softmax"]["numpy"].modes
    (['numpy'], ('alloc', 'out'))
    """
    table: dict[str, dict[str, Implementation]] = {kernel: {} for kernel in (*KERNELS, EPOCH)}
    for backend in backends.available_backends():
        for kernel, entry in _backend_implementations(backend).items():
            table[kernel][backend] = entry
    if peers:
        for kernel, entries in _peers.implementations().items():
            for name, (make, modes) in entries.items():
                table[kernel][name] = Implementation(make, modes, name in _peers.THREADED)
    if implementations is not None:
        keep = set(implementations)
        table = {
            kernel: {n: e for n, e in entries.items() if n in keep}
            for kernel, entries in table.items()
        }
    return {kernel: dict(sorted(entries.items(), key=_order)) for kernel, entries in table.items()}


def _order(item: tuple[str, object]) -> int:
    rank = {name: i for i, name in enumerate(IMPLEMENTATION_ORDER)}
    return rank.get(item[0], len(rank))


def kernel_rank(kernel: str) -> int:
    """Where ``kernel`` comes in reports: registry order, then the classifier epoch."""
    order = (*KERNELS, EPOCH)
    return order.index(kernel) if kernel in order else len(order)


def _rotating(runners: Sequence[Runner]) -> Runner:
    if len(runners) == 1:
        return runners[0]
    cycle = itertools.cycle(runners)
    return lambda: next(cycle)()


def make_runner(
    kernel: str,
    implementation: str,
    shape: tuple,
    dtype,
    mode: str,
    n_threads: int | None = None,
    *,
    table: Mapping[str, Mapping[str, Implementation]] | None = None,
    copies: int | None = None,
) -> Runner | None:
    """A no-argument callable running one case, rotating through :func:`rotation_copies` sets.

    None when the implementation is not available here or cannot run this case or mode.
    Building a PyTorch runner sets PyTorch's process-wide thread count to ``n_threads``.

    Examples
    --------
    >>> from fastsoftmax.benchmark import make_runner
    >>> run = make_runner("softmax", "numpy", (64, 10), "float32", "out")
    >>> run()[0].shape
    (64, 10)
    >>> make_runner("logsumexp", "numpy", (64, 10), "float32", "out") is None  # no out=
    True
    """
    table = registry(peers=True) if table is None else table
    entry = table.get(kernel, {}).get(implementation)
    if entry is None or mode not in entry.modes:
        return None
    copies = rotation_copies(kernel, shape, dtype) if copies is None else copies
    runners = [entry(data, mode, n_threads) for data in case_inputs(kernel, shape, dtype, copies)]
    if any(run is None for run in runners):
        return None
    return _rotating(runners)
