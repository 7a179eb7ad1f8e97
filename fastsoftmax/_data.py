"""The training rows as the solvers see them: the data-term protocol and its in-memory provider.

Design. A solver never touches ``X`` itself; it asks a *data term* (:class:`DataTerm`) for
what it needs:

- ``sums(W, b)``: the weighted sums of the loss and of its gradients over all rows
  (:class:`~fastsoftmax._linear.BlockSums`), what L-BFGS needs per evaluation;
- ``squared_norm_sum()``: ``sum_i ||x_i||^2``, for the "auto" step size of SGD;
- ``fold_blocks(step, carry, order)``: ``carry = step(carry, block)`` over the term's
  ``n_blocks`` blocks of rows in ``order``, each block an in-memory :class:`ArrayData`, where
  the data live (a Dask worker); blockwise SGD trains one block per step there.

In-memory rows (:class:`ArrayData`, one block: itself) also give ``term(n_classes, rows)``: the
:class:`~fastsoftmax._linear.LinearTerm` that computes the gradients of any ``rows`` of them,
what an SGD epoch calls per minibatch (rows by index: no minibatch is copied).
``fastsoftmax._dask.BlockData`` provides the protocol over the blocks of Dask arrays. Both are
built from validated inputs: labels are int64 indices into ``classes_`` and weights float64,
or None when every weight is 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from fastsoftmax import _api
from fastsoftmax._config import ieee_arithmetic
from fastsoftmax._linear import BlockSums, LinearTerm, block_sums, is_sparse

# Rows per vdot when summing squared norms: no temporary the size of X.
_NORM_ROWS = 4096


class DataTerm(Protocol):
    """What the solvers (``fastsoftmax._sgd``, ``fastsoftmax._lbfgs``) ask of training rows."""

    n_rows: int
    n_features: int
    n_blocks: int

    def sums(self, W: np.ndarray, b: np.ndarray) -> BlockSums: ...

    def squared_norm_sum(self) -> float: ...

    def fold_blocks(self, step: Callable[[Any, ArrayData], Any], carry: Any, order) -> Any: ...


class ArrayData:
    """Training rows in memory: ``X`` dense or CSR, ``labels`` int64, ``weights`` float64.

    ``weights`` may be None (every row weighs 1); all-ones weights are turned into None.
    """

    n_blocks = 1

    def __init__(
        self,
        X,
        labels: np.ndarray,
        weights: np.ndarray | None = None,
        backend: str | None = None,
        n_threads: int | None = None,
    ):
        if weights is not None and bool(np.all(weights == 1)):
            weights = None
        self.X, self.weights = X, weights
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        self.backend, self.n_threads = backend, n_threads
        self.n_rows, self.n_features = X.shape
        self._terms = {}

    @property
    def mean_weight(self) -> float:
        return 1.0 if self.weights is None else float(self.weights.mean())

    @property
    def total_weight(self) -> float:
        return float(self.n_rows) if self.weights is None else float(self.weights.sum())

    def take(self, rows: np.ndarray) -> ArrayData:
        """The rows ``rows`` (an index array) as a new term."""
        weights = None if self.weights is None else self.weights[rows]
        return ArrayData(self.X[rows], self.labels[rows], weights, self.backend, self.n_threads)

    def term(self, n_classes: int, rows: int | None = None, method: str = "auto") -> LinearTerm:
        """The loss-and-gradient term of these rows for ``n_classes`` classes, taking at most
        ``rows`` rows a call (default all); made once and reused."""
        key = (n_classes, rows, method)
        if key not in self._terms:
            self._terms[key] = LinearTerm(
                self.X,
                self.labels,
                self.weights,
                n_classes,
                self.backend,
                self.n_threads,
                rows,
                method,
            )
        return self._terms[key]

    def sums(self, W: np.ndarray, b: np.ndarray) -> BlockSums:
        return block_sums(self.X, self.labels, self.weights, W, b, term=self.term(W.shape[0]))

    def squared_norm_sum(self) -> float:
        X = self.X
        if is_sparse(X):
            return float(X.multiply(X).sum())
        return sum(
            float(np.vdot(X[i : i + _NORM_ROWS], X[i : i + _NORM_ROWS]))
            for i in range(0, X.shape[0], _NORM_ROWS)
        )

    def fold_blocks(self, step: Callable[[Any, ArrayData], Any], carry: Any, order) -> Any:
        return step(carry, self)

    def accuracy(self, coef: np.ndarray, intercept: np.ndarray) -> float:
        """The share of rows whose most probable class is their label (unweighted)."""
        return float(np.mean(np.argmax(logits(self.X, coef, intercept), axis=1) == self.labels))


def logits(X, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    out = X @ coef.T
    out += intercept
    return np.asarray(out)


PREDICTIONS = ("labels", "proba", "log_proba", "decision")


def predict_rows(
    X,
    coef: np.ndarray,
    intercept: np.ndarray,
    classes: np.ndarray,
    kind: str,
    backend: str | None = None,
    n_threads: int | None = None,
) -> np.ndarray:
    """The prediction ``kind`` (one of ``PREDICTIONS``) of a fitted model for the rows ``X``.

    ``X`` is validated and of the model's dtype; in memory and on Dask blocks alike. Logits
    beyond the dtype's range are +-inf (NaN for inf - inf), and their probabilities follow
    :func:`fastsoftmax.softmax`, without a warning.
    """
    with ieee_arithmetic():
        out = logits(X, coef, intercept)
        if kind == "decision" and out.shape[1] == 2:
            return out[:, 1] - out[:, 0]
    if kind == "labels":
        return classes[np.argmax(out, axis=1)]
    if kind == "decision":
        return out
    if kind == "proba":
        return _api.softmax(out, out=out, backend=backend, n_threads=n_threads)
    return _api.log_softmax(out, out=out, backend=backend, n_threads=n_threads)
