"""Minibatch SGD with momentum for softmax regression: the training loop and its state.

Design. The state of a run (:class:`SGDState`: weights, velocity, random stream, step size,
epoch count, curves) is separate from the hyper-parameters (:class:`SGDOptions`) and from the
data (a data term of ``fastsoftmax._data``), so the same loop serves ``fit``, ``partial_fit``
and Dask, where the state travels to the worker holding each block. Each minibatch is three
calls into compiled code: the data's :class:`~fastsoftmax._linear.LinearTerm` (the fused
linear + softmax + cross-entropy kernel on the minibatch's rows, taken by index, or its BLAS
composition for many classes) and the SGD-with-momentum kernel on ``W`` and on ``b``; the
inputs were validated once, so Python costs a few microseconds per minibatch. Weights are
committed to ``coef``/``intercept`` after each kept epoch: an interruption, a divergence or
an epoch that raised the loss leaves the last kept epoch's model, and the velocity that goes
with it.

>>> import numpy as np
>>> from fastsoftmax._data import ArrayData
>>> rng = np.random.default_rng(0)
>>> X = rng.standard_normal((200, 4)).astype(np.float32)
>>> data = ArrayData(X, (X[:, 0] > 0).astype(np.int64))
>>> state = initial_state(2, 4, np.float32, seeded_rng(0))
>>> state.learning_rate = auto_learning_rate("auto", data)
>>> train(state, SGDOptions(), data, epochs=5)
>>> state.n_iter, data.accuracy(state.coef, state.intercept) > 0.9
(5, True)
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import dataclass, field, fields

import numpy as np

from fastsoftmax import _validation as check
from fastsoftmax._config import kernel_module
from fastsoftmax._data import ArrayData, DataTerm
from fastsoftmax._linear import l2_penalty

# learning_rate="auto" takes AUTO_STEP / (1 + mean squared row norm): the curvature of the loss
# grows with ||x||^2, so this keeps the step matched to the data's scale. 24 gives the best
# test accuracy of {8, 16, 24, 40} on Fashion-MNIST and digits (step 0.147 and 1.5 there).
AUTO_STEP = 24.0

# An epoch whose mean loss exceeds the last kept epoch's by more than this factor is undone
# and the step halved. Epoch means are taken on moving weights and are noisy on small data:
# with the defaults on digits (6 minibatches an epoch), converging runs had epochs 0.1-6 %
# above the one before; on Fashion-MNIST none rose.
RISE_ALLOWED = 1.1


@dataclass(frozen=True)
class SGDOptions:
    """The hyper-parameters the loop reads (those of ``SoftmaxRegression`` of the same name)."""

    schedule: str = "cosine"
    power_t: float = 0.5
    momentum: float = 0.9
    nesterov: bool = True
    l2: float = 0.0
    batch_size: int = 256
    shuffle: bool = True
    tol: float | None = 1e-4
    n_iter_no_change: int = 3
    verbose: int = 0
    backend: str | None = None
    n_threads: int | None = None


@dataclass
class SGDState:
    """What a run changes: the model (``coef`` (k, d), ``intercept`` (k,)), the momentum
    ``velocity`` (of ``coef`` and of ``intercept``), the random stream of the shuffles, the
    initial step size, and the epochs run with their mean loss (and validation accuracy)."""

    coef: np.ndarray
    intercept: np.ndarray
    velocity: tuple[np.ndarray, np.ndarray]
    rng: np.random.Generator
    learning_rate: float = math.nan
    n_iter: int = 0
    loss_curve: list = field(default_factory=list)
    validation_scores: list = field(default_factory=list)


def seeded_rng(random_state) -> np.random.Generator:
    """The random stream of a run: an int or None seeds it; a ``RandomState`` gives a seed."""
    if isinstance(random_state, np.random.RandomState):
        random_state = random_state.randint(2**31)
    return np.random.default_rng(random_state)


def zero_velocity(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros_like(coef, order="C"), np.zeros_like(intercept)


def initial_state(n_classes: int, n_features: int, dtype, rng: np.random.Generator) -> SGDState:
    """Small random weights (0.01 standard normal), zero intercepts and velocity; ``rng``
    draws the weights, then goes on into the shuffles."""
    dtype = np.dtype(dtype)
    coef = (0.01 * rng.standard_normal((n_classes, n_features))).astype(dtype)
    intercept = np.zeros(n_classes, dtype)
    return SGDState(coef, intercept, zero_velocity(coef, intercept), rng)


def auto_learning_rate(learning_rate: float | str, data: DataTerm) -> float:
    """``learning_rate``, or for "auto" ``AUTO_STEP / (1 + mean squared row norm)``."""
    if learning_rate != "auto":
        return float(learning_rate)
    return AUTO_STEP / (1.0 + data.squared_norm_sum() / data.n_rows)


def step_size(options: SGDOptions, lr: float, step: int, total: int, per_epoch: int) -> float:
    if options.schedule == "constant":
        return lr
    if options.schedule == "invscaling":
        return lr / (1 + step / per_epoch) ** options.power_t
    return 0.5 * lr * (1 + math.cos(math.pi * step / total))


class StallRule:
    """Stop after ``patience`` checks in a row that did not lower the best value by more than
    ``tol`` (the training loss, or minus the validation accuracy)."""

    def __init__(self, tol: float, patience: int):
        self.tol, self.patience = tol, patience
        self.best, self.stalled = math.inf, 0

    def update(self, value: float) -> bool:
        """Record ``value``; True when it is the best so far."""
        best = value < self.best
        self.stalled = 0 if value < self.best - self.tol else self.stalled + 1
        self.best = min(self.best, value)
        return best

    @property
    def stop(self) -> bool:
        return self.stalled >= self.patience


def split_validation(data: ArrayData, fraction: float, rng) -> tuple[ArrayData, ArrayData]:
    """Hold out ``fraction`` of the rows (stratified when every class has two rows)."""
    from sklearn.model_selection import train_test_split

    stratify = data.labels if np.min(np.bincount(data.labels)) >= 2 else None
    train_rows, held_out = train_test_split(
        np.arange(data.n_rows),
        test_size=fraction,
        random_state=int(rng.integers(2**31)),
        stratify=stratify,
    )
    return data.take(train_rows), data.take(held_out)


def fit(
    state: SGDState,
    options: SGDOptions,
    data: ArrayData,
    *,
    epochs: int,
    learning_rate: float | str,
    validation_fraction: float | None = None,
) -> None:
    """A fresh run on in-memory rows: hold out a validation split if ``validation_fraction``
    (early stopping), resolve the step size on the training rows, train ``epochs`` epochs."""
    validation = None
    if validation_fraction is not None:
        data, validation = split_validation(data, validation_fraction, state.rng)
    state.learning_rate = auto_learning_rate(learning_rate, data)
    train(state, options, data, epochs, validation)


def train(
    state: SGDState,
    options: SGDOptions,
    data: ArrayData,
    epochs: int,
    validation: ArrayData | None = None,
    constant_lr: bool = False,
) -> None:
    """Up to ``epochs`` epochs of minibatch SGD from ``state``, which it updates.

    Step-size back-off: an epoch whose mean loss runs away (not finite, or above 100 log k),
    or from the second epoch on rises 10 % above the last kept epoch's, is undone (weights back to
    where it started, momentum to zero) and the step size is halved for the epochs after it.
    A run-away epoch warns; so does a fit that keeps no epoch, and one that ends with its
    training objective above where it started. With
    ``validation``, its accuracy is recorded per epoch, drives the stall rule, and the best
    epoch's weights are kept. ``constant_lr`` ignores the schedule and the back-off
    (``partial_fit``: a decaying schedule needs a known horizon): a non-finite epoch raises
    FloatingPointError, the model left as it was.
    """
    n_rows = data.n_rows
    n_classes = len(state.intercept)
    batch = min(options.batch_size, n_rows)
    term = data.term(n_classes, batch)
    W, b = state.coef.copy(), state.intercept.copy()
    vW, vb = state.velocity
    steppers = (
        _sgd_stepper(options, W, term.dW, vW, options.l2),
        _sgd_stepper(options, b, term.db, vb, 0.0),
    )
    kept_velocity = (vW.copy(), vb.copy())
    steps_per_epoch = -(-n_rows // batch)
    stall = StallRule(options.tol, options.n_iter_no_change) if options.tol is not None else None
    best_params = None
    progress = _Progress(options.verbose)
    # The first epoch has no kept loss to rise above: only a run-away loss undoes it.
    kept_loss, kept_epochs, halvings = math.inf, 0, 0
    start = (state.coef.copy(), state.intercept.copy())
    with term.blas_limits():
        try:
            for epoch in range(epochs):
                start_time = time.perf_counter()
                order = state.rng.permutation(n_rows) if options.shuffle else np.arange(n_rows)
                lr = state.learning_rate * 0.5**halvings
                first_step = epoch * steps_per_epoch
                steps = range(first_step, first_step + steps_per_epoch)
                rates = [
                    lr
                    if constant_lr
                    else step_size(options, lr, t, epochs * steps_per_epoch, steps_per_epoch)
                    for t in steps
                ]
                mean_loss = _epoch(
                    term, order, batch, data.mean_weight, W, b, steppers, rates, progress
                )
                mean_loss += l2_penalty(options.l2, W)
                # Guessing uniformly costs log(k): a mean loss 100 times that, or a non-finite
                # one, means the steps are too large and the weights are running away.
                finite = mean_loss <= 100 * math.log(n_classes) and bool(np.all(np.isfinite(W)))
                if not finite and constant_lr:
                    raise FloatingPointError(
                        f"training diverged in epoch {state.n_iter + 1} (loss {mean_loss}); the "
                        f"model keeps the weights it had. Lower learning_rate (now "
                        f"{state.learning_rate:g}) or scale the features."
                    )
                state.n_iter += 1
                state.loss_curve.append(mean_loss)
                message = f"epoch {state.n_iter}: loss {mean_loss:.4f}"
                if finite and (constant_lr or mean_loss <= kept_loss * RISE_ALLOWED):
                    state.coef[...], state.intercept[...] = W, b
                    kept_velocity = (vW.copy(), vb.copy())
                    kept_loss, kept_epochs = mean_loss, kept_epochs + 1
                else:
                    halvings += 1
                    W[...], b[...] = state.coef, state.intercept
                    vW[...], vb[...] = 0, 0  # momentum restarts: it was taking the run away
                    why = "running away" if not finite else f"above {kept_loss:.4g}"
                    undone = (
                        f"epoch {state.n_iter} undone (loss {mean_loss:.4g}, {why}); "
                        f"step size halved to {lr / 2:.4g}"
                    )
                    message += f" ({undone})"
                    if not finite:
                        warnings.warn(f"training diverged: {undone}", RuntimeWarning, stacklevel=4)
                if options.verbose:
                    accuracy = data.accuracy(state.coef, state.intercept)
                    message += f", train accuracy {accuracy:.4f}"
                if validation is not None:
                    state.validation_scores.append(validation.accuracy(state.coef, state.intercept))
                    message += f", validation accuracy {state.validation_scores[-1]:.4f}"
                progress.epoch(message + f", {time.perf_counter() - start_time:.2f} s")
                if stall is None:
                    continue
                if validation is None:
                    stall.update(kept_loss)  # an undone epoch did not improve
                elif stall.update(-state.validation_scores[-1]):
                    best_params = (state.coef.copy(), state.intercept.copy())
                if stall.stop:
                    break
        finally:
            # Momentum that matches the kept weights, for later partial_fit/warm_start calls.
            vW[...], vb[...] = kept_velocity
            progress.close()
        if best_params is not None:
            state.coef[...], state.intercept[...] = best_params
        if kept_epochs and not constant_lr:
            _warn_if_worse(term, data, start, (state.coef, state.intercept), options.l2, state)
    if epochs and not kept_epochs:
        warnings.warn(
            f"SGD kept none of its {state.n_iter} epochs: each raised the training loss, so the "
            f"model keeps its starting weights. Lower learning_rate (now "
            f"{state.learning_rate:g}), scale the features, or use solver='lbfgs'.",
            RuntimeWarning,
            stacklevel=3,
        )


# Rows on which a fit's end is compared with its start (all of them in smaller data sets).
CHECK_ROWS = 4096


def _warn_if_worse(term, data: ArrayData, start: tuple, end: tuple, l2: float, state) -> None:
    """Warn when the objective at the ``end`` weights is above that at the ``start`` ones, both
    taken on the same ``CHECK_ROWS`` evenly spaced rows (a paired comparison: the sampling
    noise of a 4096-row mean is far below a difference worth reporting, and it costs less than
    a tenth of a Fashion-MNIST epoch). Epoch losses, measured on moving weights, cannot tell."""
    rows = np.unique(np.linspace(0, data.n_rows - 1, min(CHECK_ROWS, data.n_rows)).astype(np.int64))
    total_weight = float(np.sum(term.weights[rows]))
    if not total_weight > 0:
        return
    before, after = (
        term.gradients(rows, W, b, 1.0) / total_weight + l2_penalty(l2, W) for W, b in (start, end)
    )
    if after > before:
        warnings.warn(
            f"SGD ended with a training loss of {after:.4g}, above the {before:.4g} it started "
            f"from (on {len(rows)} rows). Lower learning_rate (now {state.learning_rate:g}), "
            "scale the features, or use solver='lbfgs'.",
            RuntimeWarning,
            stacklevel=4,
        )


def _epoch(term, order, batch, mean_weight, W, b, steppers, rates, progress) -> float:
    """One pass over the rows ``order`` in minibatches of ``batch`` rows, stepping ``W`` and
    ``b`` at step size ``rates[i]`` after minibatch ``i``; returns the mean minibatch loss."""
    step_W, step_b = steppers
    total = 0.0
    for i, start in enumerate(range(0, len(order), batch)):
        rows = order[start : start + batch]
        scale = 1.0 / (len(rows) * mean_weight)
        loss = term.gradients(rows, W, b, scale) * scale
        total += loss
        step_W(rates[i])
        step_b(rates[i])
        progress.batch(i, len(rates))
    return total / len(rates)


def _sgd_stepper(options: SGDOptions, param, grad, velocity, weight_decay: float):
    """``step(lr)``: one SGD update of ``param`` by ``grad`` (momentum in ``velocity``), with the
    kernel, its thread count and flat views bound once: called twice per minibatch, a step's
    Python cost is a few hundred nanoseconds."""
    module, threads = kernel_module("sgd_update", options.backend, param.size, options.n_threads)
    flat = param.reshape(-1), grad.reshape(-1)
    if options.momentum == 0:
        kernel = module.sgd
        return lambda lr: kernel(*flat, lr, weight_decay, 1.0, threads)  # sign 1: minimise
    kernel, v = module.sgd_momentum, velocity.reshape(-1)
    momentum, nesterov = float(options.momentum), bool(options.nesterov)
    # sign 1 (minimise), dampening 0, first_step False: the classifier's velocity starts at 0.
    return lambda lr: kernel(
        *flat, v, lr, momentum, weight_decay, nesterov, 1.0, 0.0, False, threads
    )


# -- training by blocks (Dask) ----------------------------------------------------------------


def train_passes(
    state: SGDState,
    options: SGDOptions,
    data: DataTerm,
    passes: int,
    order_rng: np.random.Generator | None,
    stop_early: bool,
) -> None:
    """``passes`` passes over the blocks of ``data``, each block trained by one constant-step
    epoch (as ``partial_fit`` on it) where it lives; ``order_rng`` shuffles the block order
    (None: in order). Records one loss per pass, the row-weighted mean of the blocks' losses.
    """
    stall = StallRule(options.tol, options.n_iter_no_change)
    for _ in range(passes):
        n_blocks = data.n_blocks
        order = range(n_blocks) if order_rng is None else order_rng.permutation(n_blocks)
        curve, n_iter = list(state.loss_curve), state.n_iter
        step = functools.partial(_train_block, options)
        trained, losses = data.fold_blocks(step, (state, []), order)
        if trained is not state:  # trained in other processes: a copy came back
            for name in (f.name for f in fields(state)):
                setattr(state, name, getattr(trained, name))
        if not losses:  # every block was empty or weighed 0
            check.positive_total_weight(0.0)
        block_loss, block_rows = np.asarray(losses).T
        pass_loss = float(np.dot(block_loss, block_rows) / block_rows.sum())
        state.loss_curve = [*curve, pass_loss]
        state.n_iter = n_iter + 1
        if stop_early and options.tol is not None:
            stall.update(pass_loss)
            if stall.stop:
                break


def _train_block(options: SGDOptions, carry: tuple, block: ArrayData) -> tuple:
    """``(state, losses), block -> (state, losses)``: one constant-step epoch on a block (runs
    where the block is); ``losses`` collects each trained block's (loss, rows)."""
    state, losses = carry
    if block.n_rows == 0 or not block.total_weight > 0:
        return carry
    train(state, options, block, 1, constant_lr=True)
    return state, [*losses, (state.loss_curve[-1], float(block.n_rows))]


class _Progress:
    """One line per epoch; a tqdm bar over the minibatches when tqdm is installed."""

    def __init__(self, verbose):
        self.verbose = verbose
        self.bar = None
        if verbose:
            try:
                from tqdm.auto import tqdm

                self.tqdm = tqdm
            except ImportError:
                self.tqdm = None

    def batch(self, step: int, steps: int) -> None:
        if not self.verbose or self.tqdm is None:
            return
        if step == 0:
            self.bar = self.tqdm(total=steps, leave=False, unit="batch")
        self.bar.update(1)

    def epoch(self, message: str) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        if self.verbose:
            print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
