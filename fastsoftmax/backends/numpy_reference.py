"""NumPy reference kernels: the specification every other backend must reproduce.

Design
------
* Inputs are validated by ``fastsoftmax._api``: 2-D C-contiguous float32/float64 arrays with at
  least one row and one column, outputs preallocated with the same dtype, labels already mapped to
  int64 with ``-1`` for an ignored row, weights float64.
* This module is written to be read, not to be fast: each function is the textbook formula.
  Never optimise it; ``n_threads`` is accepted for the shared contract and ignored.
* A row whose maximum is not finite (NaN, +inf, or all -inf) is not shifted, so NaN and inf
  propagate as the maths says; logsumexp then returns that maximum (NaN, +inf or -inf).
"""

from __future__ import annotations

import numpy as np


def max_threads() -> int:
    return 1


def describe() -> dict:
    """Facts for ``fastsoftmax info`` and the bench header."""
    return {"numpy": np.__version__}


def _row_max(x):
    return np.max(x, axis=1, keepdims=True)


def logsumexp(x, out, n_threads):
    m = _row_max(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        lse = m + np.log(np.sum(np.exp(x - m), axis=1, keepdims=True))
    out[:] = np.where(np.isfinite(m), lse, m)[:, 0]


def softmax(x, out, n_threads):
    with np.errstate(invalid="ignore"):
        e = np.exp(x - _row_max(x))
        out[:] = e / np.sum(e, axis=1, keepdims=True)


def log_softmax(x, out, n_threads):
    with np.errstate(invalid="ignore", divide="ignore"):
        shifted = x - _row_max(x)
        out[:] = shifted - np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))


def cross_entropy_labels(
    logits, labels, weights, scale, label_smoothing, loss_out, grad_out, n_threads
):
    one_hot = np.zeros_like(logits)
    kept = labels >= 0
    one_hot[np.flatnonzero(kept), labels[kept]] = 1
    _cross_entropy(logits, one_hot, kept, weights, scale, label_smoothing, loss_out, grad_out)


def cross_entropy_soft(
    logits, target, weights, scale, label_smoothing, loss_out, grad_out, n_threads
):
    kept = np.ones(len(logits), dtype=bool)
    _cross_entropy(logits, target, kept, weights, scale, label_smoothing, loss_out, grad_out)


def _cross_entropy(logits, target, kept, weights, scale, label_smoothing, loss_out, grad_out):
    """loss_i = -w_i sum_j t_ij log p_ij, grad_i = scale w_i (p_i sum_j t_ij - t_i).

    The target is mixed with the uniform distribution first; a zero target entry contributes
    nothing to the loss (0 log 0 = 0) unless its log p is NaN (a row of NaN/+inf or only -inf
    logits, whose loss is NaN); ignored rows (``kept`` False) get zero loss and gradient.
    """
    n_classes = logits.shape[1]
    t = (1 - label_smoothing) * target + label_smoothing / n_classes
    log_p = np.empty_like(logits)
    log_softmax(logits, log_p, 1)
    with np.errstate(invalid="ignore"):
        row_loss = -np.sum(np.where((t != 0) | np.isnan(log_p), t * log_p, 0), axis=1)
        row_grad = np.exp(log_p) * np.sum(t, axis=1, keepdims=True) - t
    loss_out[:] = np.where(kept, weights * row_loss, 0)
    grad_out[:] = np.where(kept[:, None], (scale * weights)[:, None] * row_grad, 0)


def sgd(param, grad, lr, weight_decay, sign, n_threads):
    """``param -= lr * (sign * grad + weight_decay * param)``, sign -1.0 to maximize, else 1.0."""
    dtype = param.dtype.type
    g = (-grad if sign < 0 else grad) + dtype(weight_decay) * param
    param -= dtype(lr) * g


def sgd_momentum(
    param,
    grad,
    velocity,
    lr,
    momentum,
    weight_decay,
    nesterov,
    sign,
    dampening,
    first_step,
    n_threads,
):
    """torch.optim.SGD's step with the momentum buffer in ``velocity``.

    ``g = sign * grad + weight_decay * param``; ``velocity = g`` if ``first_step`` (whatever it
    held) else ``momentum * velocity + (1 - dampening) * g``; ``param -= lr * step`` with
    ``step = g + momentum * velocity`` (Nesterov) or ``velocity``.
    """
    dtype = param.dtype.type
    g = (-grad if sign < 0 else grad) + dtype(weight_decay) * param
    if first_step:
        velocity[...] = g
    else:
        velocity *= dtype(momentum)
        velocity += g if dampening == 0 else dtype(1.0 - dampening) * g
    step = g + dtype(momentum) * velocity if nesterov else velocity
    param -= dtype(lr) * step


def softmax_backward(grad_output, output, grad_input, n_threads):
    """Vector-Jacobian product of softmax: ``y * (g - sum(g * y))`` with ``y = softmax(x)``."""
    with np.errstate(invalid="ignore", over="ignore"):
        dot = np.sum(grad_output * output, axis=1, keepdims=True, dtype=np.float64)
        grad_input[:] = output * (grad_output - dot.astype(output.dtype))


def log_softmax_backward(grad_output, output, grad_input, n_threads):
    """Vector-Jacobian product of log_softmax: ``g - exp(y) * sum(g)``, ``y = log_softmax(x)``."""
    with np.errstate(invalid="ignore", over="ignore"):
        total = np.sum(grad_output, axis=1, keepdims=True, dtype=np.float64)
        grad_input[:] = grad_output - np.exp(output) * total.astype(output.dtype)


def linear_cross_entropy(X, rows, W, b, labels, weights, scale, dW, db, n_threads):
    """Softmax regression on the rows ``rows`` of ``X``: the weighted loss sum, and gradients.

    ``o_i = W x_i + b``; returns ``sum_i w_i CE(o_i, y_i)`` (float) and writes
    ``dW = sum_i g_i x_i^T``, ``db = sum_i g_i`` with ``g_i = scale w_i (softmax(o_i) - e_y)``;
    a row labelled ``-1`` is ignored.
    """
    X_rows = X[rows]
    return _linear_cross_entropy(X_rows, X_rows @ W.T, rows, W, b, labels, weights, scale, dW, db)


def linear_cross_entropy_csr(
    X_data, X_indices, X_indptr, rows, W, b, labels, weights, scale, dW, db, n_threads
):
    """:func:`linear_cross_entropy` for ``X`` in CSR form (``data``, ``indices``, ``indptr``)."""
    from scipy.sparse import csr_matrix

    shape = (len(X_indptr) - 1, W.shape[1])
    X_rows = csr_matrix((X_data, X_indices, X_indptr), shape=shape)[rows]
    logits = np.asarray(X_rows @ W.T)
    return _linear_cross_entropy(X_rows, logits, rows, W, b, labels, weights, scale, dW, db)


def _linear_cross_entropy(X_rows, logits, rows, W, b, labels, weights, scale, dW, db):
    logits += b
    row_loss = np.empty(len(rows), dtype=W.dtype)
    cross_entropy_labels(logits, labels[rows], weights[rows], scale, 0.0, row_loss, logits, 1)
    dW[:] = (X_rows.T @ logits).T
    db[:] = logits.sum(axis=0)
    return float(row_loss.sum(dtype=np.float64))
