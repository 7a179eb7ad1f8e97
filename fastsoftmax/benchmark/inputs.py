"""The inputs every benchmark times: one memoised cache over the registry's input families.

* A kernel's inputs are its input family (:data:`fastsoftmax._registry.INPUTS`) drawn for one
  shape and dtype; the seed depends only on the shape, dtype and copy number, so ``fastsoftmax
  bench``, the asv and the pytest-benchmark suites all time the same numbers.
* Sets are memoised per (family, shape, dtype) within a byte budget (the least recently used are
  dropped beyond it), in enough independent copies that rotating through them overflows the
  last-level cache (:func:`rotation_copies`): a cache-sized case would otherwise be timed from
  cache.
* The classifier epoch (:data:`EPOCH`, not a raw kernel) takes Fashion-MNIST instead.
* Shapes: row kernels take 2-D ``(rows, classes)`` shapes, vector kernels 1-D sizes
  (:func:`ndim`); :func:`parse_shapes` reads them from the command line.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from fastsoftmax import _registry
from fastsoftmax._registry import BENCHED, make_inputs

EPOCH = "classifier_epoch"
"""One epoch of ``SoftmaxRegression.fit`` on Fashion-MNIST (run when the data is found)."""

DTYPES: tuple[str, ...] = tuple(dtype.name for dtype in _registry.DTYPES)
"""The dtypes every kernel takes, by name."""

DEFAULT_SHAPES = ((4096, 1000), (65536, 128), (512, 32000), (1_000_000, 10), (64, 10))
DEFAULT_SIZES = ((7850,), (10_000_000,))  # softmax regression on MNIST; a large model
QUICK_SHAPES = ((2048, 128), (128, 4096), (64, 10))
QUICK_SIZES = ((7850,), (100_000,))

_CACHE_BUDGET = 2 << 30  # bytes of memoised inputs kept across cases
_MAX_COPIES = 64
_DATASET = "dataset"

_cache: OrderedDict[tuple, list[dict[str, np.ndarray]]] = OrderedDict()


def _family(kernel: str) -> str:
    if kernel == EPOCH:
        return _DATASET
    if kernel not in BENCHED:
        raise ValueError(f"unknown kernel {kernel!r}: expected one of {[*BENCHED, EPOCH]}")
    return BENCHED[kernel].inputs


def ndim(kernel: str) -> int:
    """How many dimensions the shapes of ``kernel`` (a public name) have: 1 or 2.

    Examples
    --------
    >>> from fastsoftmax.benchmark import ndim
    >>> ndim("softmax"), ndim("sgd_update")
    (2, 1)
    """
    if kernel == EPOCH:
        return 2
    _family(kernel)
    return BENCHED[kernel].ndim


def dtype_name(dtype) -> str:
    """The name of ``dtype``, one of :data:`DTYPES`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastsoftmax.benchmark import dtype_name
    >>> dtype_name(np.float32), dtype_name("float64")
    ('float32', 'float64')
    """
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in DTYPES:
        raise ValueError(f"the kernels take {' and '.join(DTYPES)}, got dtype {dtype!r}")
    return name


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """``"4096x1000,7850"`` -> ``[(4096, 1000), (7850,)]``.

    Examples
    --------
    >>> from fastsoftmax.benchmark import parse_shapes
    >>> parse_shapes("4096x1000, 1_000_000x10,7850")
    [(4096, 1000), (1000000, 10), (7850,)]
    """
    shapes = []
    for item in text.split(","):
        item = item.strip().lower()
        if not item:
            continue
        try:
            shape = tuple(int(part) for part in item.split("x"))
        except ValueError:
            raise ValueError(
                f"a shape is ROWSxCOLUMNS or a size, like 4096x1000 or 7850: {item!r}"
            ) from None
        if len(shape) > 2 or min(shape) < 1:
            raise ValueError(f"a shape has one or two positive sizes, got {item!r}")
        shapes.append(shape)
    return shapes


def shapes_for(kernel: str, shapes: Sequence[tuple] | None, quick: bool = False) -> list[tuple]:
    """The shapes ``kernel`` is timed on: the 2-D ones for row kernels; the 1-D sizes (or, if
    none is given, the 2-D shapes) for vector kernels. Defaults when ``shapes`` is None.

    Examples
    --------
    >>> from fastsoftmax.benchmark import shapes_for
    >>> shapes_for("sgd_update", [(8, 3), (40,)]), shapes_for("softmax", [(8, 3), (40,)])
    ([(40,)], [(8, 3)])
    """
    vector = ndim(kernel) == 1
    if shapes is None:
        if vector:
            return list(QUICK_SIZES if quick else DEFAULT_SIZES)
        return list(QUICK_SHAPES if quick else DEFAULT_SHAPES)
    matrices = [s for s in shapes if len(s) == 2]
    if vector:
        return [s for s in shapes if len(s) == 1] or matrices
    return matrices


def _make(family: str, shape: tuple, dtype: np.dtype, copy: int) -> dict[str, np.ndarray]:
    if family != _DATASET:
        rng = np.random.default_rng([copy, dtype.itemsize, *shape])
        return make_inputs(family, shape, dtype, rng)
    from fastsoftmax.datasets import load_fashion_mnist

    X, y, _, _ = load_fashion_mnist(dtype=dtype.type)
    return {"X": X, "y": y}


def case_inputs(kernel: str, shape: tuple, dtype, copies: int = 1) -> list[dict[str, np.ndarray]]:
    """``copies`` independent input sets for one case, memoised in this process.

    ``kernel`` is a public kernel name (its input family in :mod:`fastsoftmax._registry`) or
    :data:`EPOCH`, which gets Fashion-MNIST's ``X``, ``y`` (``shape`` ignored). The data depend
    only on the family, shape, dtype and copy number. The least recently used sets are dropped
    beyond 2 GiB.

    Examples
    --------
    >>> from fastsoftmax import benchmark
    >>> first, second = benchmark.case_inputs("softmax", (4, 3), "float32", copies=2)
    >>> first["x"].dtype, first["labels"].shape, bool((first["x"] == second["x"]).all())
    (dtype('float32'), (4,), False)
    """
    family = _family(kernel)
    dtype = np.dtype(dtype)
    shape = () if family == _DATASET else tuple(shape)  # the data set has its own shape
    key = (family, shape, dtype.str)
    sets = _cache.pop(key, [])
    while len(sets) < copies:
        sets.append(_make(family, shape, dtype, len(sets)))
    _cache[key] = sets  # most recently used last
    while len(_cache) > 1 and _cached_bytes() > _CACHE_BUDGET:
        _cache.popitem(last=False)
    return sets[:copies]


def _cached_bytes() -> int:
    return sum(a.nbytes for sets in _cache.values() for data in sets for a in data.values())


def clear_inputs() -> None:
    """Drop every memoised input (frees their memory once no runner holds them)."""
    _cache.clear()


def bytes_moved(kernel: str, shape: tuple, dtype) -> int | None:
    """Bytes one call must move at least (``Kernel.moves``): inputs read once, outputs written
    once. None for the classifier epoch, whose traffic is not one pass over anything.

    Examples
    --------
    >>> from fastsoftmax.benchmark import bytes_moved
    >>> bytes_moved("softmax", (1000, 10), "float32")  # read x, write p
    80000
    >>> bytes_moved("sgd_update", (1000,), "float64")  # read p, g, v; write p, v
    40000
    """
    if _family(kernel) == _DATASET:
        return None
    return BENCHED[kernel].moves(tuple(shape), np.dtype(dtype).itemsize)


@lru_cache(maxsize=1)
def last_level_cache_bytes() -> int:
    """Size of the largest CPU cache from ``/sys`` (32 MiB where it cannot be read)."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip()
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=32 << 20)


def rotation_copies(kernel: str, shape: tuple, dtype) -> int:
    """Input sets to rotate through so that together they span four times the last-level cache.

    Four times, not just over it: caches do not evict in exact LRU order, so a cyclic walk over
    little more than the cache still hits it (an in-place SGD on 41 MB of sets ran above the
    copy ceiling with a 32 MiB L3). At most 64 sets: tiny cases stay in cache, as they would
    in use, and are timed for their per-call overhead. A set occupies the bytes a call moves,
    or its arrays' bytes when fewer (a call updating its inputs in place reads and writes the
    same lines): counting them builds, and memoises, the first set.

    Examples
    --------
    >>> import math
    >>> from fastsoftmax.benchmark import bytes_moved, last_level_cache_bytes, rotation_copies
    >>> rotation_copies("softmax", (64, 10), "float32")  # 5 KB per call: the cap
    64
    >>> moved = bytes_moved("softmax", (1024, 1000), "float64")
    >>> rotation_copies("softmax", (1024, 1000), "float64") == min(
    ...     64, math.ceil(4 * last_level_cache_bytes() / moved))
    True
    """
    moved = bytes_moved(kernel, shape, dtype)
    if moved is None:
        return 1
    one_set = sum(a.nbytes for a in case_inputs(kernel, shape, dtype)[0].values())
    footprint = min(moved, one_set)
    wanted = math.ceil(4 * last_level_cache_bytes() / max(footprint, 1))
    return max(1, min(_MAX_COPIES, wanted))
