"""Dask input for SoftmaxRegression: the blockwise data term, class discovery, lazy prediction.

Design. Imported by the classifier only when it sees a Dask collection (``import fastsoftmax``
never imports Dask), and it knows nothing of the estimator: the solvers of ``fastsoftmax._sgd``
and ``fastsoftmax._lbfgs`` run over :class:`BlockData` as over in-memory rows. The data stay on
the workers:

- :func:`features` brings ``X`` to one chunk of columns and :func:`rows` brings ``y`` and
  ``sample_weight`` to the row chunks of ``X``; :func:`discover_classes` is one ``da.unique``
  reduction. :class:`BlockData` encodes the labels blockwise and, when ``X`` fits in
  ``PERSIST_FRACTION`` of the workers' memory, persists it once; otherwise every pass reads
  the blocks from their source again (out of core).
- ``sums(W, b)`` (L-BFGS): ``(W, b)`` enters the graph once (a few KiB to MiB), every block
  computes its :class:`~fastsoftmax._linear.BlockSums` with the fused kernel on the worker that
  holds it, and a tree reduction (fan-in ``FAN_IN``) adds them; only ``(weight, loss, dW, db)``
  travel.
- ``fold_blocks(step, carry, order)`` (SGD, like dask-ml's ``Incremental``): a chain of tasks,
  one per block in ``order``, each calling ``step`` on the worker holding the block with the
  block as in-memory rows; the solver state travels in ``carry``.
- :func:`map_rows` (prediction) is ``map_blocks`` over the rows: lazy until computed.

Checks: shapes and dtypes up front; finiteness of ``X`` and of ``sample_weight`` on the
workers, during the first pass. A failure of the cluster during L-BFGS (a worker lost more
often than Dask's retries allow) raises ``RuntimeError``.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable

import numpy as np
from sklearn.utils.multiclass import check_classification_targets

from fastsoftmax import _validation as check
from fastsoftmax._data import ArrayData
from fastsoftmax._linear import BlockSums, add_block_sums

try:
    import dask
    import dask.array as da
except ImportError as exc:  # the classifier reports it, with how to install Dask
    dask = da = None
    IMPORT_ERROR: ImportError | None = exc
else:
    IMPORT_ERROR = None

_log = logging.getLogger("fastsoftmax")

# Persist X when it takes at most this share of the workers' total memory limit (of the
# machine's memory with the local scheduler); otherwise stream it from its source every pass.
PERSIST_FRACTION = 0.5
# Partial sums added per reduction task.
FAN_IN = 8


# -- inputs ------------------------------------------------------------------------------------


def _client():
    """The active dask.distributed Client, or None (then Dask's local scheduler runs)."""
    try:
        from distributed import default_client
    except ImportError:
        return None
    try:
        return default_client()
    except ValueError:
        return None


def _as_dask_array(obj, name: str, chunks=None, lengths: bool = True):
    """A dask array from a dask array, dataframe or series, or from a NumPy-like ``obj`` split
    into ``chunks`` rows. With ``lengths``, unknown row-chunk sizes are computed (one pass)."""
    if isinstance(obj, da.Array):
        array = obj
    elif hasattr(obj, "to_dask_array"):  # dask DataFrame / Series
        array = obj.to_dask_array(lengths=True if lengths else None)
    elif hasattr(obj, "__dask_graph__"):
        check.unsupported_dask_collection(name, obj)
    elif chunks is None:
        check.dask_partner(name, obj)
    else:
        array = da.from_array(np.asarray(obj), chunks=(chunks,) + (-1,) * (np.ndim(obj) - 1))
    if lengths and any(math.isnan(c) for c in array.chunks[0]):
        array = array.compute_chunk_sizes()
    return array


def features(X, dtype, lengths: bool = True):
    """``X`` as a (n, d) dask array of ``dtype`` in one chunk of columns, and its column names
    (an object array, for a dask dataframe with string column names; else None)."""
    names = None
    if hasattr(X, "columns") and hasattr(X, "to_dask_array"):
        columns = list(X.columns)
        if all(isinstance(c, str) for c in columns):
            names = np.asarray(columns, dtype=object)
    X = _as_dask_array(X, "X", lengths=lengths)
    check.dask_features(X.shape, X.dtype)
    dtype = np.dtype(dtype)
    if X.dtype != dtype:
        X = X.astype(dtype)
    if X.numblocks[1] > 1:
        X = X.rechunk({1: -1})
    return X, names


def rows(obj, name: str, row_chunks: tuple, dtype=None):
    """``y`` or ``sample_weight`` as a 1-D dask array in the row chunks ``row_chunks``."""
    array = _as_dask_array(obj, name, row_chunks)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    check.dask_rows(name, array.shape, sum(row_chunks))
    if dtype is not None:
        check.real_dtype(name, array.dtype)
        array = array.astype(dtype)
    if array.chunks[0] != row_chunks:
        array = array.rechunk({0: row_chunks})
    return array


def discover_classes(y) -> np.ndarray:
    """The sorted distinct labels of dask ``y`` (one reduction)."""
    (classes,) = dask.compute(da.unique(y))
    classes = np.asarray(classes)
    check_classification_targets(classes)
    return classes


def _memory_budget(client) -> float:
    """Bytes that persisted data may take: the workers' memory limits, or this machine's."""
    system = _system_memory()
    if client is None:
        return system
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # distributed before n_workers=
        info = client.scheduler_info()
    limits = [w.get("memory_limit") or system for w in info["workers"].values()]
    return float(sum(limits))


def _system_memory() -> float:
    try:
        import psutil

        return float(psutil.virtual_memory().total)
    except ImportError:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def _maybe_persist(arrays, client):
    """Persist ``arrays`` when they fit in ``PERSIST_FRACTION`` of the memory; else keep them
    lazy (each pass recomputes the blocks from their source)."""
    nbytes = sum(a.nbytes for a in arrays if a is not None)
    budget = PERSIST_FRACTION * _memory_budget(client)
    persist = nbytes <= budget
    _log.info(
        "dask fit: %s %.3g GB of data (%s %.3g GB budget, %s)",
        "persisting" if persist else "streaming (not persisting)",
        nbytes / 1e9,
        "within" if persist else "over",
        budget / 1e9,
        "distributed client" if client is not None else "local scheduler",
    )
    if not persist:
        return arrays
    present = [a for a in arrays if a is not None]
    persisted = iter(dask.persist(*present))
    return [None if a is None else next(persisted) for a in arrays]


def _blocks(array) -> list:
    """The row blocks of a dask array as Delayed objects."""
    return list(array.to_delayed().ravel())


def _tree_sum(parts: list):
    while len(parts) > 1:
        parts = [
            dask.delayed(add_block_sums, pure=False)(*parts[i : i + FAN_IN])
            for i in range(0, len(parts), FAN_IN)
        ]
    return parts[0]


# -- the data term ------------------------------------------------------------------------------


def _encode_labels(y_block, classes, check_targets: bool):
    if len(y_block) == 0:
        return np.empty(0, np.int64)
    if check_targets:  # partial_fit: y need not come from the classes
        check_classification_targets(y_block)
    return check.labels_in_classes(y_block, classes).astype(np.int64, copy=False)


def _block_data(X, labels, weights, dtype, backend, n_threads, validate: bool) -> ArrayData:
    """One block as in-memory rows (on the worker that holds it)."""
    X = np.asarray(X)
    if X.dtype != dtype:
        X = X.astype(dtype)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if weights is not None:
        weights = np.ascontiguousarray(weights, dtype=np.float64)
    if validate:
        check.finite_block(X)
        check.finite_weights(weights)
    return ArrayData(X, labels, weights, backend, n_threads)


def _sums_on_block(X, labels, weights, W, b, backend, n_threads, validate):
    """One block's :class:`~fastsoftmax._linear.BlockSums` (runs on a worker)."""
    return _block_data(X, labels, weights, W.dtype, backend, n_threads, validate).sums(W, b)


def _step_on_block(step, carry, X, labels, weights, dtype, backend, n_threads):
    return step(carry, _block_data(X, labels, weights, dtype, backend, n_threads, True))


def _sum_of_squares(X_block):
    return np.array([float(np.vdot(X_block, X_block))])


class BlockData:
    """The rows of dask arrays as a data term (see ``fastsoftmax._data``).

    ``X`` comes from :func:`features`, ``y`` and ``weights`` (or None) from :func:`rows`;
    ``classes`` are sorted, and every label of ``y`` must be one of them (with
    ``check_targets``, ``y`` is also checked to hold class labels, block by block).
    """

    def __init__(self, X, y, weights, classes, backend, n_threads, *, check_targets=False):
        labels = y.map_blocks(_encode_labels, classes, check_targets, dtype=np.int64)
        X, labels, weights = _maybe_persist([X, labels, weights], _client())
        self.blocks = list(
            zip(
                _blocks(X),
                _blocks(labels),
                [None] * X.numblocks[0] if weights is None else _blocks(weights),
                strict=True,
            )
        )
        # The persisted collections hold the futures of their blocks: without a reference to
        # them the cluster would drop the blocks that the Delayed objects above point to.
        self.X, self.labels, self.weights = X, labels, weights
        self.n_rows, self.n_features = X.shape
        self.n_blocks = X.numblocks[0]
        self.dtype = X.dtype
        self.backend, self.n_threads = backend, n_threads
        self.evaluations = 0

    def sums(self, W: np.ndarray, b: np.ndarray) -> BlockSums:
        """One graph per call: ``W`` and ``b`` as two keys, one ``_sums_on_block`` task per
        block and a tree reduction, run on the active client (or locally). The first call
        also checks the blocks (finite ``X``, valid weights)."""
        W_key = dask.delayed(W, pure=True)
        b_key = dask.delayed(b, pure=True)
        validate = self.evaluations == 0
        parts = [
            dask.delayed(_sums_on_block, pure=False)(
                x, lab, w, W_key, b_key, self.backend, self.n_threads, validate
            )
            for x, lab, w in self.blocks
        ]
        try:
            (sums,) = dask.compute(_tree_sum(parts))
        except (ValueError, TypeError, FloatingPointError, MemoryError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise RuntimeError(
                f"the Dask computation failed in L-BFGS evaluation {self.evaluations + 1} "
                f"({type(exc).__name__}: {exc}); the model keeps the weights of the last "
                "finished iteration (n_iter_)"
            ) from exc
        self.evaluations += 1
        return sums

    def squared_norm_sum(self) -> float:
        per_block = self.X.map_blocks(
            _sum_of_squares, chunks=((1,) * self.n_blocks,), drop_axis=1, dtype=float
        )
        (squares,) = dask.compute(per_block.sum())
        return float(squares)

    def fold_blocks(self, step: Callable, carry, order):
        """``carry = step(carry, block)`` for the blocks in ``order``, each on its worker."""
        for i in order:
            carry = dask.delayed(_step_on_block, pure=False)(
                step, carry, *self.blocks[i], self.dtype, self.backend, self.n_threads
            )
        (carry,) = dask.compute(carry)
        return carry


# -- prediction --------------------------------------------------------------------------------


def _rows_block(X, dtype, fn, *args):
    X = np.asarray(X)
    if X.dtype != dtype:
        X = X.astype(dtype)
    check.finite_block(X)
    return fn(X, *args)


def map_rows(X, fn: Callable, *args, dtype, n_columns: int | None):
    """Lazy ``fn(X_block, *args)`` over the row blocks of ``X`` (from :func:`features`), each
    block a NumPy array of ``X``'s dtype: a 1-D result of ``dtype`` (``n_columns`` None) or
    (rows, ``n_columns``)."""
    meta = np.empty((0,) if n_columns is None else (0, 0), dtype)
    common = {"dtype": dtype, "meta": meta}
    if n_columns is None:
        return X.map_blocks(_rows_block, X.dtype, fn, *args, drop_axis=1, **common)
    chunks = (X.chunks[0], (n_columns,))
    return X.map_blocks(_rows_block, X.dtype, fn, *args, chunks=chunks, **common)


def _weighted_hits(predicted, y, weights=None):
    hits = (np.asarray(predicted) == np.asarray(y)).astype(float)
    if weights is None:
        return np.array([[hits.sum(), float(len(hits))]])
    weights = np.asarray(weights, dtype=float)
    return np.array([[np.dot(hits, weights), weights.sum()]])


def accuracy(predicted, y, sample_weight=None) -> float:
    """The (weighted) share of ``predicted`` labels (a lazy 1-D array) equal to ``y``, reduced
    on the workers."""
    row_chunks = predicted.chunks[0]
    y = rows(y, "y", row_chunks)
    weights = (
        None if sample_weight is None else rows(sample_weight, "sample_weight", row_chunks, float)
    )
    args = [predicted, y] + ([] if weights is None else [weights])
    parts = da.map_blocks(
        _weighted_hits,
        *args,
        new_axis=1,
        chunks=((1,) * predicted.numblocks[0], (2,)),
        dtype=float,
    )
    (totals,) = dask.compute(parts.sum(axis=0))
    return float(totals[0] / totals[1])
