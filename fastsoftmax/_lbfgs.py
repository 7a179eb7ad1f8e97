"""Full-batch L-BFGS for softmax regression: one optimiser loop for in-memory and Dask data.

Design. The data enter only through a data term's ``sums(W, b)`` (``fastsoftmax._data``): the
weighted sums of the cross-entropy and of its gradients over all rows, from
:func:`~fastsoftmax._linear.block_sums` over the whole of ``X`` in memory, or over every Dask
block and added by a tree reduction (``fastsoftmax._dask``). Everything else lives here, once:
flattening ``theta = [W.ravel(), b]`` (float64, as SciPy wants), the mean and the ``l2`` term
(:func:`~fastsoftmax._linear.mean_objective`), the L-BFGS-B call, its stopping rules, and
following the iterations on the caller's state, so that an interruption or a failure of the
data term keeps the last finished iteration's weights.

>>> import numpy as np
>>> from fastsoftmax._data import ArrayData
>>> X = np.array([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
>>> data = ArrayData(X, np.array([0, 1, 1, 0]))
>>> state = Weights(np.zeros((2, 2)), np.zeros(2))
>>> result = train(state, data, l2=0.1, max_iter=100, tol=1e-8)
>>> result.converged, state.n_iter == len(state.loss_curve) > 0
(True, True)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np

from fastsoftmax._data import DataTerm
from fastsoftmax._linear import BlockSums, mean_objective

# scikit-learn's LogisticRegression(solver="lbfgs") uses the same options (gtol=tol, this ftol,
# 50 line-search steps), so a given ``tol`` stops both at a comparable point.
FTOL = 64 * np.finfo(float).eps
MAX_LINE_SEARCH = 50


class State(Protocol):
    """What :func:`train` updates: any object with these attributes (``SGDState`` too)."""

    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int
    loss_curve: list


@dataclass
class Weights:
    """A bare :class:`State`."""

    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int = 0
    loss_curve: list = field(default_factory=list)


class LbfgsResult(NamedTuple):
    coef: np.ndarray
    intercept: np.ndarray
    n_iter: int
    loss_curve: list
    converged: bool
    message: str


class Objective:
    """``theta -> (loss, gradient)`` of ``sum_i w_i CE_i / sum_i w_i + l2 / 2 * ||W||^2``.

    ``theta = [W.ravel(), b]`` in float64; ``data_term(W, b)`` gets ``W`` and ``b`` rounded to
    ``dtype`` (the model's precision) and returns their :class:`BlockSums`.
    """

    def __init__(
        self,
        data_term: Callable[[np.ndarray, np.ndarray], BlockSums],
        n_classes: int,
        n_features: int,
        dtype,
        l2: float,
    ):
        self.data_term = data_term
        self.shape = (n_classes, n_features)
        self.dtype = np.dtype(dtype)
        self.l2 = float(l2)

    def flatten(self, W: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.concatenate([np.ravel(W), b]).astype(np.float64)

    def unflatten(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n_coef = self.shape[0] * self.shape[1]
        W = theta[:n_coef].reshape(self.shape).astype(self.dtype)
        return W, theta[n_coef:].astype(self.dtype)

    def __call__(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = self.unflatten(theta)
        loss, grad_W, grad_b = mean_objective(self.data_term(W, b), W, self.l2)
        return loss, self.flatten(grad_W, grad_b)


def minimize(
    data_term: Callable[[np.ndarray, np.ndarray], BlockSums],
    coef: np.ndarray,
    intercept: np.ndarray,
    *,
    l2: float,
    max_iter: int,
    tol: float | None,
    on_iteration: Callable[[int, np.ndarray, np.ndarray, float], None] | None = None,
) -> LbfgsResult:
    """Minimise the :class:`Objective` by SciPy's L-BFGS-B from (coef, intercept).

    ``max_iter`` bounds the L-BFGS iterations (each evaluates ``data_term`` once or, during a
    line search, a few times); it stops when the largest gradient entry is at most ``tol``
    (None: only at ``max_iter`` or when no step decreases the loss) or the loss decreases by
    less than ``FTOL`` relatively. ``on_iteration(iteration, W, b, loss)`` is called after each
    iteration.
    """
    from scipy.optimize import minimize as scipy_minimize
    from threadpoolctl import ThreadpoolController

    # L-BFGS-B's own BLAS calls work on vectors of k * (d + 1) entries: threads gain nothing
    # there, and an OpenBLAS team that has just worked spins on the cores while the data term
    # runs (each evaluation took about 90 ms instead of 43 ms; 30 iterations on Fashion-MNIST
    # 3.2 s instead of 1.4 s). So the optimiser runs with one BLAS thread and the data term
    # with the caller's settings.
    blas = ThreadpoolController().select(user_api="blas")
    callers_threads = blas.info()

    def data_term_on_callers_threads(W, b):
        with blas.limit(limits=callers_threads):
            return data_term(W, b)

    objective = Objective(data_term_on_callers_threads, *coef.shape, coef.dtype, l2)
    loss_curve = []

    def callback(intermediate_result):
        loss_curve.append(float(intermediate_result.fun))
        if on_iteration is not None:
            W, b = objective.unflatten(intermediate_result.x)
            on_iteration(len(loss_curve), W, b, loss_curve[-1])

    with blas.limit(limits=1):
        result = scipy_minimize(
            objective,
            objective.flatten(coef, intercept),
            jac=True,
            method="L-BFGS-B",
            callback=callback,
            options={
                "maxiter": max_iter,
                "gtol": 0.0 if tol is None else tol,
                "ftol": FTOL,
                "maxls": MAX_LINE_SEARCH,
            },
        )
    W, b = objective.unflatten(result.x)
    message = result.message if isinstance(result.message, str) else str(result.message)
    return LbfgsResult(W, b, int(result.nit), loss_curve, bool(result.success), message)


def train(
    state: State,
    data: DataTerm,
    *,
    l2: float,
    max_iter: int,
    tol: float | None,
    verbose: int = 0,
) -> LbfgsResult:
    """L-BFGS from ``state``'s weights, following the iterations on ``state`` (its ``coef`` and
    ``intercept`` are written in place, ``n_iter`` and ``loss_curve`` after each iteration).
    The result tells whether it converged (the caller warns, in its own words).
    """
    start_time = time.perf_counter()
    state.n_iter = 0

    def on_iteration(iteration, W, b, loss):
        state.coef[...], state.intercept[...] = W, b
        state.n_iter = iteration
        state.loss_curve.append(loss)
        # verbose=1: every 10th iteration (a digits fit takes ~80); 2 and above: every one.
        if verbose >= 2 or (verbose and iteration % 10 == 0):
            elapsed = time.perf_counter() - start_time
            print(f"iteration {iteration}: loss {loss:.6f}, {elapsed:.2f} s", flush=True)

    result = minimize(
        data.sums,
        state.coef,
        state.intercept,
        l2=l2,
        max_iter=max_iter,
        tol=tol,
        on_iteration=on_iteration,
    )
    state.coef[...], state.intercept[...] = result.coef, result.intercept
    state.n_iter = result.n_iter
    return result
