"""The grid both suites share, and the runners they time.

Implementations, inputs and runners come from :mod:`fastsoftmax.benchmark`: the registry of
backends and installed peers, and the input cache that also feeds ``fastsoftmax bench``. The
kernels are those of :data:`fastsoftmax._registry.BENCHED`, so a newly registered kernel is
timed here without a change. The shapes are smaller than the bench's defaults so that a full
asv run stays near ten minutes on two cores; the vector kernels (``sgd_update``) take each
shape as a weight matrix (640, 1M and 8.2M parameters).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from fastsoftmax import benchmark as fb
from fastsoftmax.benchmark import peers

KERNELS = fb.KERNELS  # the public names of fastsoftmax._registry.BENCHED
IMPLEMENTATIONS = fb.IMPLEMENTATION_ORDER
DTYPES = ("float32", "float64")
# Per-call overhead; narrow rows as in softmax regression; vocabulary-wide rows.
SHAPES = ("64x10", "65536x16", "256x32000")
THREADS = (1, 2)
MODES = fb.MODES

TABLE = fb.registry(peers=True)

Case = tuple[str, str, str, str, int, str]
"""(kernel, implementation, dtype, shape, threads, mode)"""


def shape_of(text: str) -> tuple[int, ...]:
    return fb.parse_shapes(text)[0]


def mode_for(kernel: str, implementation: str, preference: tuple[str, ...]) -> str | None:
    """The first mode of ``preference`` that the implementation offers, if any."""
    entry = TABLE[kernel].get(implementation)
    offered = entry.modes if entry is not None else ()
    return next((mode for mode in preference if mode in offered), None)


def runs(kernel: str, implementation: str, threads: int, mode: str) -> bool:
    """Whether this combination is worth timing here (without building any input)."""
    entry = TABLE[kernel].get(implementation)
    if entry is None or mode not in entry.modes:
        return False
    # An implementation that ignores n_threads would time the same thing twice.
    return threads == 1 or entry.threaded


def runner(kernel: str, implementation: str, dtype: str, shape: str, threads: int, mode: str):
    """A no-argument callable for the case, warmed up (Numba compiled), or None."""
    if not runs(kernel, implementation, threads, mode):
        return None
    run = fb.make_runner(kernel, implementation, shape_of(shape), dtype, mode, threads, table=TABLE)
    if run is not None:
        run()  # compile (Numba) and initialise here, never inside a timing
    return run


def cases() -> Iterator[Case]:
    """Every combination of the grid that :func:`runs`."""
    for kernel, implementation, dtype, shape, threads, mode in itertools.product(
        KERNELS, IMPLEMENTATIONS, DTYPES, SHAPES, THREADS, MODES
    ):
        if runs(kernel, implementation, threads, mode):
            yield kernel, implementation, dtype, shape, threads, mode


def preimport_peers() -> None:
    """Import the peers that are slow to import now, so that asv's fork server imports them
    once, not per benchmark. Nothing runs here: after PyTorch or Numba has run a parallel
    region, forking is not safe (GNU OpenMP)."""
    peers.preimport()


def case_id(case: Case) -> str:
    kernel, implementation, dtype, shape, threads, mode = case
    return f"{kernel}-{implementation}-{dtype}-{shape}-t{threads}-{mode}"


def bytes_moved(kernel: str, shape: str, dtype: str) -> int | None:
    return fb.bytes_moved(kernel, shape_of(shape), dtype)


def gbps(run, kernel: str, shape: str, dtype: str) -> float:
    """GB/s of ``run`` (input read once + output written once), by the bench's own timer."""
    timing = fb.measure({"run": run}, rounds=3, min_time=0.01)["run"]
    return bytes_moved(kernel, shape, dtype) / timing.median / 1e9
