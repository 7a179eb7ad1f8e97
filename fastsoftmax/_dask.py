"""Dask input for SoftmaxRegression: data-parallel L-BFGS, blockwise SGD, lazy prediction.

Design. Imported by the classifier only when it sees a Dask collection (``import fastsoftmax``
never imports Dask). The data stay on the workers:

- ``fit`` brings ``X`` to one chunk of columns and ``y``/``sample_weight`` to the row chunks of
  ``X``, finds ``classes_`` with one ``da.unique`` reduction, and encodes the labels blockwise.
  When ``X`` fits in ``PERSIST_FRACTION`` of the workers' memory it is persisted once;
  otherwise every pass reads the blocks from their source again (out of core).
- L-BFGS: per evaluation, ``(W, b)`` enters the graph once (a few KiB to MiB), every block
  computes its :class:`~fastsoftmax._lbfgs.BlockSums` with the fused kernel on the worker that
  holds it, and a tree reduction (fan-in ``FAN_IN``) adds them; only ``(weight, loss, dW, db)``
  travel. The optimiser loop is the in-memory one (``SoftmaxRegression._fit_lbfgs``).
- SGD (like dask-ml's ``Incremental``): each pass calls ``partial_fit`` on every block in turn
  (shuffled block order with ``shuffle``), as a chain of tasks; the model travels to the
  worker holding the block.
- Prediction is ``map_blocks`` over the rows: lazy until computed.

Checks: shapes and dtypes up front; finiteness of ``X`` and of ``sample_weight`` on the
workers, during the first pass. A failure of the cluster (a worker lost more often than Dask's
retries allow) raises ``RuntimeError``; the model keeps the last finished iteration's weights.
"""

from __future__ import annotations

import logging
import math
import os

import numpy as np
from sklearn.utils.multiclass import check_classification_targets

from fastsoftmax import _api, _lbfgs

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
        raise TypeError(f"{name}: unsupported Dask collection {type(obj).__name__}")
    elif chunks is None:
        raise TypeError(
            f"{name} is a {type(obj).__name__} while other inputs are Dask collections: pass "
            f"{name} as a dask array too (dask.array.from_array({name}, chunks=...))"
        )
    else:
        array = da.from_array(np.asarray(obj), chunks=(chunks,) + (-1,) * (np.ndim(obj) - 1))
    if lengths and any(math.isnan(c) for c in array.chunks[0]):
        array = array.compute_chunk_sizes()
    return array


def _features(model, X, reset: bool, lengths: bool = True):
    """``X`` as a (n, d) dask array of the model's dtype in one chunk of columns."""
    names = None
    if hasattr(X, "columns") and hasattr(X, "to_dask_array"):
        columns = list(X.columns)
        if all(isinstance(c, str) for c in columns):
            names = np.asarray(columns, dtype=object)
    X = _as_dask_array(X, "X", lengths=lengths)
    if X.ndim != 2:
        raise ValueError(f"Expected 2D array, got a dask array of shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise ValueError(f"X must hold real numbers, got dtype {X.dtype}")
    if reset:
        model.n_features_in_ = X.shape[1]
        if names is not None:
            model.feature_names_in_ = names
        elif hasattr(model, "feature_names_in_"):
            del model.feature_names_in_
    else:
        if X.shape[1] != model.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but SoftmaxRegression is expecting "
                f"{model.n_features_in_} features as input"
            )
        fitted = getattr(model, "feature_names_in_", None)
        if names is not None and fitted is not None and not np.array_equal(names, fitted):
            raise ValueError("The feature names should match those that were passed during fit")
    dtype = np.dtype(model.dtype)
    if X.dtype != dtype:
        X = X.astype(dtype)
    if X.numblocks[1] > 1:
        X = X.rechunk({1: -1})
    return X


def _rows(obj, name: str, X, dtype=None):
    """``y`` or ``sample_weight`` as a 1-D dask array chunked like the rows of ``X``."""
    array = _as_dask_array(obj, name, X.chunks[0])
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D (n_samples,), got shape {array.shape}")
    if array.shape[0] != X.shape[0]:
        raise ValueError(
            "Found input variables with inconsistent numbers of samples: "
            f"[{X.shape[0]}, {array.shape[0]}]"
        )
    if dtype is not None:
        if array.dtype.kind not in "biuf":
            raise TypeError(f"{name} must be a real array, got dtype {array.dtype}")
        array = array.astype(dtype)
    if array.chunks[0] != X.chunks[0]:
        array = array.rechunk({0: X.chunks[0]})
    return array


def _discover_classes(y) -> np.ndarray:
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
    """The row blocks of a dask array as Delayed objects (None for a missing array)."""
    return list(array.to_delayed().ravel())


# -- L-BFGS ------------------------------------------------------------------------------------


def _encode_labels(y_block, classes):
    labels = np.searchsorted(classes, y_block)
    return labels.astype(np.int64, copy=False)


def _sums_on_block(X, labels, weights, W, b, backend, n_threads, check):
    """One block's :class:`~fastsoftmax._lbfgs.BlockSums` (runs on a worker)."""
    X = np.asarray(X)
    if X.dtype != W.dtype:
        X = X.astype(W.dtype)
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    if weights is not None:
        weights = np.ascontiguousarray(weights, dtype=np.float64)
    if check:
        if not np.isfinite(X).all():
            raise ValueError("Input X contains NaN or infinity (in a dask block)")
        if weights is not None and not np.all(np.isfinite(weights) & (weights >= 0)):
            raise ValueError("sample_weight must be finite and >= 0")
    return _lbfgs.block_sums(X, labels, weights, W, b, backend, n_threads)


def _tree_sum(parts: list):
    while len(parts) > 1:
        parts = [
            dask.delayed(_lbfgs.add_block_sums, pure=False)(*parts[i : i + FAN_IN])
            for i in range(0, len(parts), FAN_IN)
        ]
    return parts[0]


class BlockwiseDataTerm:
    """``(W, b) -> BlockSums`` over dask blocks: the Dask data term of the L-BFGS objective.

    Each call builds one graph: ``W`` and ``b`` as two keys, one ``_sums_on_block`` task per
    block, and a tree reduction; ``dask.compute`` runs it on the active client (or locally).
    The first call also checks the blocks (finite ``X``, valid weights).
    """

    def __init__(self, X, labels, weights, backend, n_threads):
        self.blocks = list(
            zip(
                _blocks(X),
                _blocks(labels),
                [None] * X.numblocks[0] if weights is None else _blocks(weights),
                strict=True,
            )
        )
        self.backend, self.n_threads = backend, n_threads
        self.evaluations = 0

    def __call__(self, W: np.ndarray, b: np.ndarray) -> _lbfgs.BlockSums:
        W_key = dask.delayed(W, pure=True)
        b_key = dask.delayed(b, pure=True)
        check = self.evaluations == 0
        parts = [
            dask.delayed(_sums_on_block, pure=False)(
                x, lab, w, W_key, b_key, self.backend, self.n_threads, check
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


def _prepare(model, X, y, sample_weight):
    X = _features(model, X, reset=True)
    y = _rows(y, "y", X)
    weights = None if sample_weight is None else _rows(sample_weight, "sample_weight", X, float)
    return X, y, weights


def fit(model, X, y, sample_weight=None):
    """``SoftmaxRegression.fit`` on Dask collections (the classifier checked the params)."""
    X, y, weights = _prepare(model, X, y, sample_weight)
    classes = _discover_classes(y)
    keep_weights = model._set_classes(classes)
    client = _client()
    if model.solver == "sgd":
        return _fit_sgd(model, X, y, weights, client, keep_weights)
    labels = y.map_blocks(_encode_labels, classes, dtype=np.int64)
    X, labels, weights = _maybe_persist([X, labels, weights], client)
    data_term = BlockwiseDataTerm(X, labels, weights, model.backend, model.n_threads)
    model._fit_lbfgs(data_term, X.shape[1], keep_weights)
    return model


# -- SGD ---------------------------------------------------------------------------------------


def _partial_fit_block(state, X, y, weights):
    """One ``partial_fit`` on one block (runs on the worker holding the block); ``state`` is
    the model and the (loss, rows) of the blocks trained on so far in this pass."""
    model, losses = state
    if len(y) == 0 or (weights is not None and not np.sum(weights) > 0):
        return state
    model.partial_fit(X, y, sample_weight=weights)
    return model, [*losses, (model.loss_curve_[-1], float(len(y)))]


def _sum_of_squares(X_block):
    return np.array([float(np.vdot(X_block, X_block))])


def _resolve_learning_rate(model, X) -> None:
    if model.learning_rate != "auto":
        model.learning_rate_ = float(model.learning_rate)
        return
    from fastsoftmax.classifier import AUTO_STEP

    per_block = X.map_blocks(
        _sum_of_squares, chunks=((1,) * X.numblocks[0],), drop_axis=1, dtype=float
    )
    (squares,) = dask.compute(per_block.sum())
    model.learning_rate_ = AUTO_STEP / (1.0 + float(squares) / X.shape[0])


def _sgd_passes(model, X, y, weights, client, passes: int, order_rng, stop_early: bool):
    """``passes`` passes of blockwise ``partial_fit``; returns the model trained on the
    workers (a new object with the distributed scheduler)."""
    X, y, weights = _maybe_persist([X, y, weights], client)
    blocks = list(
        zip(
            _blocks(X),
            _blocks(y),
            [None] * X.numblocks[0] if weights is None else _blocks(weights),
            strict=True,
        )
    )
    best_loss, stall = math.inf, 0
    for _ in range(passes):
        order = order_rng.permutation(len(blocks)) if model.shuffle else range(len(blocks))
        state = (model, [])
        for i in order:
            state = dask.delayed(_partial_fit_block, pure=False, nout=2)(state, *blocks[i])
        curve, n_iter = list(model.loss_curve_), model.n_iter_
        (trained, losses) = dask.compute(state)[0]
        if not losses:
            raise ValueError("no block holds a row with a positive sample_weight")
        # partial_fit appended one loss per block: keep one entry per pass, the row-weighted
        # mean of the blocks' losses.
        block_loss, block_rows = np.asarray(losses).T
        pass_loss = float(np.dot(block_loss, block_rows) / block_rows.sum())
        trained.loss_curve_ = [*curve, pass_loss]
        trained.n_iter_ = n_iter + 1
        if trained is not model:
            model.__dict__.update(trained.__dict__)
        if stop_early and model.tol is not None:
            improved = pass_loss < best_loss - model.tol
            best_loss = min(best_loss, pass_loss)
            stall = 0 if improved else stall + 1
            if stall >= model.n_iter_no_change:
                break
    return model


def _start_sgd(model, X):
    from fastsoftmax.classifier import _seed

    rng = np.random.default_rng(_seed(model.random_state))
    model._init_weights(len(model.classes_), X.shape[1], rng)
    model._partial_rng = rng
    model.loss_curve_, model.validation_scores_, model.n_iter_ = [], [], 0
    _resolve_learning_rate(model, X)


def _fit_sgd(model, X, y, weights, client, keep_weights):
    if model.early_stopping:
        raise ValueError(
            "early_stopping=True is not supported with Dask input; hold out a validation set "
            "and use tol, or solver='lbfgs'"
        )
    names = getattr(model, "feature_names_in_", None)
    if names is not None:  # the blocks reach partial_fit as NumPy arrays
        del model.feature_names_in_
    if keep_weights:
        model.loss_curve_, model.n_iter_ = [], 0
        if not math.isfinite(model.learning_rate_):
            _resolve_learning_rate(model, X)
    else:
        _start_sgd(model, X)
    order_rng = model._partial_rng.spawn(1)[0]
    _sgd_passes(model, X, y, weights, client, model.max_epochs, order_rng, stop_early=True)
    if names is not None:
        model.feature_names_in_ = names
    return model


def partial_fit(model, X, y, classes=None, sample_weight=None):
    """One pass of blockwise ``partial_fit`` over dask ``X``, ``y``."""
    first_call = not hasattr(model, "coef_")
    if first_call and classes is None:
        raise ValueError("classes must be given on the first call to partial_fit")
    X = _features(model, X, reset=first_call)
    y = _rows(y, "y", X)
    weights = None if sample_weight is None else _rows(sample_weight, "sample_weight", X, float)
    names = getattr(model, "feature_names_in_", None)
    if names is not None:
        del model.feature_names_in_
    if first_call:
        model.classes_ = np.unique(np.asarray(classes))
        if len(model.classes_) < 2:
            raise ValueError("classes must hold at least 2 labels")
        _start_sgd(model, X)
    elif not math.isfinite(model.learning_rate_):
        _resolve_learning_rate(model, X)
    order_rng = np.random.default_rng(0)  # unused: one pass in block order
    shuffle, model.shuffle = model.shuffle, False
    try:
        _sgd_passes(model, X, y, weights, _client(), 1, order_rng, stop_early=False)
    finally:
        model.shuffle = shuffle
        if names is not None:
            model.feature_names_in_ = names
    return model


# -- prediction --------------------------------------------------------------------------------


def _predict_block(X, coef, intercept, classes, kind, backend, n_threads):
    X = np.asarray(X)
    if X.dtype != coef.dtype:
        X = X.astype(coef.dtype)
    if not np.isfinite(X).all():
        raise ValueError("Input X contains NaN or infinity (in a dask block)")
    logits = X @ coef.T
    logits += intercept
    if kind == "labels":
        return classes[np.argmax(logits, axis=1)]
    if kind == "decision":
        return logits[:, 1] - logits[:, 0] if logits.shape[1] == 2 else logits
    if kind == "proba":
        return _api.softmax(logits, out=logits, backend=backend, n_threads=n_threads)
    return _api.log_softmax(logits, out=logits, backend=backend, n_threads=n_threads)


def predict(model, X, kind: str):
    """Lazy blockwise prediction: ``kind`` in labels, proba, log_proba, decision."""
    X = _features(model, X, reset=False, lengths=False)
    n_classes = len(model.classes_)
    one_column = kind == "labels" or (kind == "decision" and n_classes == 2)
    dtype = model.classes_.dtype if kind == "labels" else model.coef_.dtype
    common = {
        "dtype": dtype,
        "meta": np.empty((0,) if one_column else (0, 0), dtype),
    }
    args = (model.coef_, model.intercept_, model.classes_, kind, model.backend, model.n_threads)
    if one_column:
        return X.map_blocks(_predict_block, *args, drop_axis=1, **common)
    return X.map_blocks(_predict_block, *args, chunks=(X.chunks[0], (n_classes,)), **common)


def _weighted_hits(predicted, y, weights=None):
    hits = (np.asarray(predicted) == np.asarray(y)).astype(float)
    if weights is None:
        return np.array([[hits.sum(), float(len(hits))]])
    weights = np.asarray(weights, dtype=float)
    return np.array([[np.dot(hits, weights), weights.sum()]])


def score(model, X, y, sample_weight=None) -> float:
    """Accuracy of the blockwise predictions, reduced on the workers."""
    X = _features(model, X, reset=False)  # known row chunks, to align y with
    predicted = predict(model, X, "labels")
    y = _rows(y, "y", predicted[:, None])
    weights = (
        None
        if sample_weight is None
        else _rows(sample_weight, "sample_weight", predicted[:, None], float)
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
