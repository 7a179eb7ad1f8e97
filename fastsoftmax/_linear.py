"""Softmax regression's loss and gradients over rows of ``X``: the one place that reads ``X``.

Two methods compute the same sums:

- "fused": the backend's ``linear_cross_entropy`` kernel (``_csr`` for sparse ``X``). Per row
  it reads ``x`` once for its ``k`` logits, forms the softmax-cross-entropy gradient, and adds
  ``g x^T`` to ``dW`` while ``x`` is in cache; rows are taken by index (no gathered copy of a
  minibatch) and no logits array exists. Threads split the rows, each with its own partial
  ``dW``.
- "blas": the logits of a chunk of rows by BLAS into a reused (chunk, k) buffer, the fused
  softmax-cross-entropy kernel writing the gradient over them in place, then ``dW += G^T X``
  by BLAS (the Liger-Kernel / Cut-Cross-Entropy idea on a CPU: memory O(chunk * k)). BLAS is
  never called inside a parallel region.

:func:`choose_method` picks one by shape from the crossovers measured on the benchmark machine
(:data:`FUSED_MAX_WEIGHTS`, see the README's "Training at kernel speed").

The objective is defined here once: :func:`block_sums` gives the weighted sums over some rows,
:func:`mean_objective` turns sums into the weighted mean plus the ``l2`` term.
:func:`linear_softmax_cross_entropy`, the L-BFGS solver and the SGD loss curve all go through
these two.
"""

from __future__ import annotations

import contextlib
import functools
from typing import NamedTuple

import numpy as np

from fastsoftmax import _validation as check
from fastsoftmax._config import ieee_arithmetic, kernel_module, resolve_backend

# Rows per chunk of the "blas" method: a 1024 x 784 float32 chunk of X (3 MiB) and its logits
# stay near L2/L3.
DEFAULT_CHUNK_ROWS = 1024

METHODS = ("auto", "fused", "blas")

#: "auto" takes the fused kernel while ``W`` has at most this many entries (k * d), for dense
#: and CSR ``X``: dense, while ``W`` and ``dW`` stay in L2 (2**17 float32 entries is 512 KiB of
#: the 1 MiB here); CSR, whose rows gather from and scatter into scattered columns of ``W``,
#: while they stay in L1 (the Numba kernel lost beyond 2**11, the Cython one beyond 2**13).
#: Beyond, BLAS's (or SciPy's) blocking wins. Dense rows also need ``FUSED_MIN_FEATURES``
#: features (fewer: the fused kernel's per-row work does not pay) unless there are 2 classes.
#: Measured: README, "Training at kernel speed".
FUSED_MAX_WEIGHTS = {"dense": 1 << 17, "csr": 1 << 11}
FUSED_MIN_FEATURES = 256


def is_sparse(X) -> bool:
    return hasattr(X, "tocsr") and hasattr(X, "nnz")


@functools.cache
def _blas_pools():
    """threadpoolctl's view of the loaded BLAS libraries, made once: making it scans the
    process's libraries (0.8 ms), limiting through it takes 20 us."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


def choose_method(
    method: str, n_classes: int, n_features: int, sparse: bool, backend: str | None
) -> str:
    """``method``, or for "auto" the faster of "fused" and "blas" for this shape.

    The NumPy backend's fused kernel is the BLAS composition itself (the specification), so
    "auto" takes "blas" there.
    """
    if method != "auto":
        return method
    if resolve_backend(backend) == "numpy":
        return "blas"
    small_weights = n_classes * n_features <= FUSED_MAX_WEIGHTS["csr" if sparse else "dense"]
    wide_enough = sparse or n_features >= FUSED_MIN_FEATURES or n_classes <= 2
    return "fused" if small_weights and wide_enough else "blas"


class LinearTerm:
    """Loss and gradients of softmax regression on rows of ``X`` taken by index, for a solver.

    Built once per fit from validated arrays: ``X`` (n, d) dense or CSR, of the model's dtype;
    ``labels`` int64 in [0, k); ``weights`` float64 or None (every row weighs 1). ``rows`` is
    the most rows one :meth:`gradients` call takes. The gradients are written to ``self.dW``
    (k, d) and ``self.db`` (k,), in the model's dtype.

    >>> X = np.eye(3, dtype=np.float32)
    >>> term = LinearTerm(X, np.array([0, 1, 2]), None, 3, backend="numpy")
    >>> W, b = np.zeros((3, 3), np.float32), np.zeros(3, np.float32)
    >>> round(term.gradients(np.arange(3), W, b, scale=1 / 3), 4)  # 3 log 3
    3.2958
    """

    def __init__(
        self,
        X,
        labels: np.ndarray,
        weights: np.ndarray | None,
        n_classes: int,
        backend: str | None = None,
        n_threads: int | None = None,
        rows: int | None = None,
        method: str = "auto",
    ):
        n_rows, n_features = X.shape
        rows = n_rows if rows is None else rows
        sparse = is_sparse(X)
        self.method = choose_method(method, n_classes, n_features, sparse, backend)
        kernel = "linear_cross_entropy" if self.method == "fused" else "cross_entropy_labels"
        work = rows * n_classes * (n_features if self.method == "fused" else 1)
        if self.method == "blas":
            # BLAS has the cores here (its GEMMs are the work); a kernel team besides its
            # spinning threads would oversubscribe them.
            n_threads = 1
        self.module, self.threads = kernel_module(kernel, backend, work, n_threads)
        self.labels = labels
        self.weights = np.ones(n_rows) if weights is None else weights
        self.dW = np.zeros((n_classes, n_features), X.dtype)
        self.db = np.zeros(n_classes, X.dtype)
        if self.method == "fused":
            # The kernel's CSR form: int32 column indices (any d that fits memory), int64
            # offsets (any number of non-zeros).
            self.X = (
                (X.data, X.indices.astype(np.int32, copy=False), X.indptr.astype(np.int64))
                if sparse
                else (np.ascontiguousarray(X),)  # rows in order: one copy per fit, if any
            )
            self.kernel = getattr(self.module, kernel + ("_csr" if sparse else ""))
        else:
            self.X = X
            chunk = min(rows, DEFAULT_CHUNK_ROWS) if rows else 0
            self.logits = np.empty((max(chunk, 1), n_classes), X.dtype)
            self.row_loss = np.empty(max(chunk, 1))  # the kernels' row losses are float64

    def blas_limits(self):
        """The BLAS thread limit to train under (a context manager): one thread while the
        fused kernel runs on several, so that BLAS threads times kernel threads never exceed
        the cores (BLAS then does only side work such as scoring, and an OpenBLAS team left
        spinning after it slowed the next kernel call); the caller's setting otherwise."""
        if self.method == "fused" and self.threads > 1:
            return _blas_pools().limit(limits=1)
        return contextlib.nullcontext()

    def gradients(self, rows: np.ndarray, W: np.ndarray, b: np.ndarray, scale: float) -> float:
        """Write the gradients of the rows ``rows`` (int64 indices, any order) to ``dW`` and
        ``db``, each row's weighted gradient multiplied by ``scale``; return their weighted
        loss sum ``sum_i w_i CE_i``."""
        with ieee_arithmetic():
            if self.method == "fused":
                return self.kernel(
                    *self.X,
                    rows,
                    W,
                    b,
                    self.labels,
                    self.weights,
                    scale,
                    self.dW,
                    self.db,
                    self.threads,
                )
            # A sorted gather reads X in address order; the sums do not depend on row order.
            rows = np.sort(rows)
            return self._blas_chunk(self.X[rows], rows, W, b, scale)

    def sums(
        self, W: np.ndarray, b: np.ndarray, chunk_rows: int = DEFAULT_CHUNK_ROWS
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """The loss and gradient sums over all rows, unscaled: ``(loss, dW, db)`` in float64.

        Chunks of ``chunk_rows`` contiguous rows are summed in the model's dtype and added in
        float64: a float32 sum over 60000 rows in one run would carry a rounding error near
        1e-4 relative, which is where L-BFGS (``tol``) and the Dask partial sums need better.
        """
        n_rows = len(self.labels)
        dW, db = np.zeros(self.dW.shape), np.zeros(self.db.shape)
        loss = 0.0
        with self.blas_limits(), ieee_arithmetic():
            for start in range(0, n_rows, chunk_rows):
                if self.method == "fused":
                    rows = np.arange(start, min(start + chunk_rows, n_rows))
                    loss += self.gradients(rows, W, b, 1.0)
                else:
                    rows = slice(start, start + chunk_rows)
                    loss += self._blas_chunk(self.X[rows], rows, W, b, 1.0)
                dW += self.dW
                db += self.db
        return loss, dW, db

    def _blas_chunk(self, X_rows, rows, W, b, scale: float) -> float:
        if len(self.logits) < X_rows.shape[0]:
            self.logits = np.empty((X_rows.shape[0], len(b)), W.dtype)
            self.row_loss = np.empty(X_rows.shape[0])
        m = X_rows.shape[0]
        logits, row_loss = self.logits[:m], self.row_loss[:m]
        if is_sparse(X_rows):
            logits[...] = X_rows @ W.T
        else:
            np.matmul(X_rows, W.T, out=logits)
        logits += b
        self.module.cross_entropy_labels(
            logits,
            self.labels[rows],
            self.weights[rows],
            scale,
            0.0,
            row_loss,
            logits,
            self.threads,
        )
        # G^T X: BLAS takes the transposes as flags, without copies.
        self.dW[...] = logits.T @ X_rows if not is_sparse(X_rows) else (X_rows.T @ logits).T
        np.sum(logits, axis=0, out=self.db)
        return float(row_loss.sum())


def linear_softmax_cross_entropy(
    X,
    W: np.ndarray,
    b: np.ndarray,
    y,
    *,
    sample_weight=None,
    l2: float = 0.0,
    chunk_rows: int | None = None,
    method: str = "auto",
    backend: str | None = None,
    n_threads: int | None = None,
) -> tuple[np.floating, np.ndarray, np.ndarray]:
    """Mean cross-entropy of softmax regression and its gradients, without materialising logits.

    ``loss = sum_i w_i CE(softmax(W x_i + b), y_i) / sum_i w_i + l2 / 2 * ||W||^2``.

    Logits beyond the dtype's range are +-inf (NaN for inf - inf), and the loss and gradients
    then follow :func:`fastsoftmax.softmax_cross_entropy`: inf or NaN, without a warning.

    Parameters
    ----------
    X : array (n, d) or scipy.sparse CSR matrix
        Same float dtype as ``W`` (no silent conversion).
    W : array (k, d), float32 or float64
    b : array (k,), same dtype as ``W``
    y : integer array (n,), labels in [0, k)
    sample_weight : array (n,), optional
        Finite weights >= 0 with a positive sum.
    l2 : float >= 0, default 0
    chunk_rows : int, optional
        Rows per chunk of the "blas" method (default 1024): memory for logits is
        ``chunk_rows * k``.
    method : {"auto", "fused", "blas"}, default "auto"
        "fused": one pass of the backend's fused kernel over the rows (no logits array);
        "blas": logits and ``dW`` by BLAS, chunk by chunk; "auto": the faster for the shape
        (README, "Training at kernel speed"). Both give the same sums up to rounding.
    backend, n_threads
        As for :func:`fastsoftmax.softmax`.

    Returns
    -------
    loss : numpy scalar (dtype of ``W``)
    dW : array (k, d)
    db : array (k,)

    Examples
    --------
    >>> import numpy as np, fastsoftmax
    >>> X = np.eye(2); W = np.zeros((2, 2)); b = np.zeros(2)
    >>> loss, dW, db = fastsoftmax.linear_softmax_cross_entropy(X, W, b, np.array([0, 1]))
    >>> float(loss), db
    (0.6931471805599453, array([0., 0.]))
    """
    W, b = check.linear_weights(W, b)
    X = check.linear_features(X, W)
    n_rows = X.shape[0]
    labels = check.labels_array(check.as_array(y, "y"), n_rows, W.shape[0], None, "y", "X")
    weights = check.training_sample_weight(sample_weight, n_rows)
    l2 = check.real_number(l2, "l2", low=0)
    chunk = check.chunk_rows_value(chunk_rows, DEFAULT_CHUNK_ROWS)
    method = check.one_of(method, METHODS, "method")
    n_threads = check.n_threads_value(n_threads)
    if sample_weight is None:
        weights = None
    sums = block_sums(X, labels, weights, W, b, backend, n_threads, chunk, method)
    loss, dW, db = mean_objective(sums, W, l2)
    return W.dtype.type(loss), dW.astype(W.dtype), db.astype(W.dtype)


class BlockSums(NamedTuple):
    """Weighted sums over some rows: ``sum w_i``, ``sum w_i CE_i``, and their gradients."""

    weight: float
    loss: float
    dW: np.ndarray  # (k, d) float64
    db: np.ndarray  # (k,) float64


def block_sums(
    X,
    labels: np.ndarray,
    weights: np.ndarray | None,
    W: np.ndarray,
    b: np.ndarray,
    backend: str | None = None,
    n_threads: int | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    method: str = "auto",
    term: LinearTerm | None = None,
) -> BlockSums:
    """Weighted sums of the loss and gradients over the rows of ``X`` (dense or CSR).

    ``labels`` are int64 in [0, k); ``weights`` float64 or None (all 1); ``X``, ``W`` and ``b``
    share one float dtype. Nothing is checked here: the callers validated the inputs. The loss
    is summed in float64 and the gradients returned in float64, so adding partial sums (of
    Dask blocks) loses nothing. ``term``: a :class:`LinearTerm` of these rows to reuse (a
    solver evaluating the sums many times).
    """
    n_rows = X.shape[0]
    n_classes, n_features = W.shape
    if n_rows == 0:
        return BlockSums(0.0, 0.0, np.zeros((n_classes, n_features)), np.zeros(n_classes))
    if term is None:
        term = LinearTerm(X, labels, weights, n_classes, backend, n_threads, chunk_rows, method)
    loss, dW, db = term.sums(np.ascontiguousarray(W), b, chunk_rows)
    weight = float(n_rows) if weights is None else float(weights.sum())
    return BlockSums(weight, loss, dW, db)


def add_block_sums(*parts: BlockSums) -> BlockSums:
    """Elementwise sum of partial sums (the reduction step)."""
    return BlockSums(
        sum(p.weight for p in parts),
        sum(p.loss for p in parts),
        np.sum([p.dW for p in parts], axis=0),
        np.sum([p.db for p in parts], axis=0),
    )


def l2_penalty(l2: float, W: np.ndarray) -> float:
    """``l2 / 2 * ||W||^2``, summed in float64."""
    W64 = W.astype(np.float64)
    return 0.5 * l2 * float(np.vdot(W64, W64))


def mean_objective(
    sums: BlockSums, W: np.ndarray, l2: float
) -> tuple[float, np.ndarray, np.ndarray]:
    """``sum_i w_i CE_i / sum_i w_i + l2 / 2 * ||W||^2`` and its gradients, in float64."""
    check.positive_total_weight(sums.weight)
    W64 = W.astype(np.float64)
    loss = sums.loss / sums.weight + l2_penalty(l2, W64)
    return loss, sums.dW / sums.weight + l2 * W64, sums.db / sums.weight
