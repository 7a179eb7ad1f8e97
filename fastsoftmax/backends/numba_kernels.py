"""Numba kernels: ``@njit(parallel=True)`` row loops with an exp that LLVM can vectorise.

Design
------
* Layout: the front layer hands over 2-D C-contiguous rows (n >= 1, k >= 1) and 1-D
  contiguous SGD vectors; nothing here checks inputs.
* Rows are split over threads with ``prange``; each row is a few passes (max, exp-and-sum,
  scale) of plain loops that LLVM vectorises.
* ``math.exp`` stays scalar in Numba's PyPI wheels (no SVML), so :func:`vexp` computes exp as
  range reduction + Taylor polynomial + exponent bits (< 2 ulp; exp(-inf) = 0, NaN stays NaN,
  results below the smallest normal number flush to 0).
* Sums accumulate in float64; other arithmetic stays in the array's dtype.
* Fast-math flags never include ``nnan``/``ninf`` (NaN/inf semantics are part of the contract),
  and ``reassoc`` is confined to the reductions: it would turn ``(x - m) - log(s)`` into
  ``x - (m + log(s))`` and undo the range reduction inside ``vexp``.
* Functions compile on first call (``fastsoftmax.warmup()`` compiles ahead). No ``cache=True``:
  cached parallel functions have crashed when processes share the cache (numba issues 4807,
  10128).
* ``n_threads`` is applied inside the kernel and the caller's setting restored before return.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

EXACT = {"nsz", "arcp", "contract", "afn"}
REDUCE = EXACT | {"reassoc"}


def max_threads() -> int:
    return numba.config.NUMBA_NUM_THREADS


# -- scalar helpers -------------------------------------------------------------------------


@intrinsic
def _bits_to_float(typingctx, bits):
    """Reinterpret int64/int32 bits as float64/float32."""
    if bits == types.int64:
        result, llvm_type = types.float64, ir.DoubleType()
    elif bits == types.int32:
        result, llvm_type = types.float32, ir.FloatType()
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_type)

    return result(bits), codegen


@intrinsic
def _float_to_bits(typingctx, value):
    """Reinterpret float64/float32 as int64/int32 bits."""
    if value == types.float64:
        result, llvm_type = types.int64, ir.IntType(64)
    elif value == types.float32:
        result, llvm_type = types.int32, ir.IntType(32)
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_type)

    return result(value), codegen


def vexp(x):
    """exp(x) written as arithmetic so that a loop calling it vectorises."""
    raise NotImplementedError  # replaced by the overload below inside jitted code


def like(value, sample):
    """``value`` converted to the float type of ``sample``."""
    raise NotImplementedError


_F32 = np.float32

# exp(x) = 2**k * exp(r), k = round(x / ln 2), r = x - k ln 2 in two parts (Cody-Waite).
# Adding MAGIC (1.5 * 2**mantissa_bits) to k leaves k in the low bits of the float; shifting
# (bits + bias) left by the mantissa width builds 2**k without a float->int conversion.
_F64 = {
    "log2e": 1.4426950408889634,
    "ln2_hi": 6.93147180369123816490e-01,
    "ln2_lo": 1.90821492927058770002e-10,
    "magic": 6755399441055744.0,
    "k_min": -1022.0,
    "k_max": 1023.0,
    "x_min": -708.3964185322641,  # log of the smallest normal float64
}
_F64_TAYLOR = tuple(1.0 / math.factorial(i) for i in range(13, -1, -1))  # degree 13
_F32_TAYLOR = tuple(_F32(1.0 / math.factorial(i)) for i in range(7, -1, -1))  # degree 7


@overload(vexp, jit_options={"fastmath": EXACT})
def _vexp_impl(x):
    if x == types.float64:
        c13, c12, c11, c10, c9, c8, c7, c6, c5, c4, c3, c2, c1, c0 = _F64_TAYLOR
        log2e, ln2_hi, ln2_lo = _F64["log2e"], _F64["ln2_hi"], _F64["ln2_lo"]
        magic, k_min, k_max, x_min = _F64["magic"], _F64["k_min"], _F64["k_max"], _F64["x_min"]

        def exp64(x):
            k = np.floor(x * log2e + 0.5)
            k = k if k > k_min else k_min  # NaN lands on k_min; r keeps the NaN
            k = k if k < k_max else k_max
            r = (x - k * ln2_hi) - k * ln2_lo
            p = c13
            for c in (c12, c11, c10, c9, c8, c7, c6, c5, c4, c3, c2, c1, c0):
                p = p * r + c
            scale = _bits_to_float((_float_to_bits(k + magic) + np.int64(1023)) << np.int64(52))
            return 0.0 if x < x_min else p * scale

        return exp64
    if x == types.float32:
        c7, c6, c5, c4, c3, c2, c1, c0 = _F32_TAYLOR
        log2e, ln2_hi, ln2_lo = _F32(1.4426950408889634), _F32(0.693359375), _F32(-2.12194440e-4)
        magic, k_min, k_max = _F32(12582912.0), _F32(-126.0), _F32(127.0)
        x_min, half, zero = _F32(-87.33654), _F32(0.5), _F32(0.0)

        def exp32(x):
            k = np.floor(x * log2e + half)
            k = k if k > k_min else k_min
            k = k if k < k_max else k_max
            r = (x - k * ln2_hi) - k * ln2_lo
            p = c7
            for c in (c6, c5, c4, c3, c2, c1, c0):
                p = p * r + c
            # Numba widens int32 arithmetic to int64: truncate back before reinterpreting.
            scale = _bits_to_float(np.int32((_float_to_bits(k + magic) + 127) << 23))
            return zero if x < x_min else p * scale

        return exp32
    return None


@njit(fastmath=EXACT)
def exp(x, out):
    """out = vexp(x) elementwise: the kernels' exp on its own, for the accuracy tests."""
    for i in range(x.shape[0]):
        out[i] = vexp(x[i])


@overload(like)
def _like_impl(value, sample):
    if sample == types.float32:
        return lambda value, sample: np.float32(value)
    return lambda value, sample: np.float64(value)


@njit(fastmath=REDUCE)
def _row_max(row):
    """Largest non-NaN entry, or row[0] if that is NaN; NaN rows are caught later by sums."""
    m = row[0]
    for j in range(1, row.shape[0]):
        m = row[j] if row[j] > m else m
    return m


@njit(fastmath=REDUCE)
def _exp_sum(row, m, dst):
    """sum_j exp(row[j] - m) in float64, storing each term in ``dst`` (may be ``row``)."""
    s = 0.0
    for j in range(row.shape[0]):
        e = vexp(row[j] - m)
        dst[j] = e
        s += e
    return s


@njit(fastmath=REDUCE)
def _exp_sum_only(row, m):
    s = 0.0
    for j in range(row.shape[0]):
        s += vexp(row[j] - m)
    return s


@njit(fastmath=REDUCE)
def _shifted_sum(row, m):
    """sum_j (row[j] - m) in float64."""
    s = 0.0
    for j in range(row.shape[0]):
        s += row[j] - m
    return s


@njit
def _lse_of_nonfinite_max(row, m):
    for j in range(row.shape[0]):
        if np.isnan(row[j]):
            return np.nan
    return m


# -- raw kernels (contract: fastsoftmax.backends) ----------------------------------------------


@njit(parallel=True, fastmath=EXACT)
def logsumexp(x, out, n_threads):
    caller_threads = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    for i in prange(x.shape[0]):
        row = x[i]
        m = _row_max(row)
        if np.isfinite(m):
            out[i] = m + np.log(_exp_sum_only(row, m))
        else:
            out[i] = _lse_of_nonfinite_max(row, m)
    numba.set_num_threads(caller_threads)


@njit(parallel=True, fastmath=EXACT)
def softmax(x, out, n_threads):
    caller_threads = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    for i in prange(x.shape[0]):
        row, dst = x[i], out[i]
        m = _row_max(row)
        inv = like(1.0 / _exp_sum(row, m, dst), m)
        for j in range(dst.shape[0]):
            dst[j] *= inv
    numba.set_num_threads(caller_threads)


@njit(parallel=True, fastmath=EXACT)
def log_softmax(x, out, n_threads):
    caller_threads = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    for i in prange(x.shape[0]):
        row, dst = x[i], out[i]
        m = _row_max(row)
        log_sum = like(np.log(_exp_sum_only(row, m)), m)
        for j in range(dst.shape[0]):
            dst[j] = (row[j] - m) - log_sum
    numba.set_num_threads(caller_threads)


@njit(fastmath=EXACT)
def _label_row(row, label, c, label_smoothing, grad):
    """Write ``c * (softmax(row) - target)`` into ``grad`` (may be ``row``); return the
    unweighted loss of the row against ``label`` smoothed by ``label_smoothing``."""
    eps = label_smoothing / row.shape[0]
    m = _row_max(row)
    # Read what the loss needs before the gradient overwrites the row (grad may be row).
    true_shift = np.float64(row[label]) - m
    smooth_shift = _shifted_sum(row, m) if label_smoothing != 0 else 0.0
    s = _exp_sum(row, m, grad)
    inv, off = like(c / s, m), like(c * eps, m)
    for j in range(grad.shape[0]):
        grad[j] = grad[j] * inv - off
    grad[label] -= like(c * (1.0 - label_smoothing), m)
    return np.log(s) - (1.0 - label_smoothing) * true_shift - eps * smooth_shift


@njit(parallel=True, fastmath=EXACT)
def cross_entropy_labels(
    logits, labels, weights, scale, label_smoothing, loss_out, grad_out, n_threads
):
    caller_threads = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    for i in prange(logits.shape[0]):
        if labels[i] < 0:
            grad_out[i, :] = 0
            loss_out[i] = 0.0
        else:
            c = scale * weights[i]
            loss = _label_row(logits[i], labels[i], c, label_smoothing, grad_out[i])
            loss_out[i] = weights[i] * loss
    numba.set_num_threads(caller_threads)


@njit(fastmath=REDUCE)
def _target_sums(row, target, m):
    """(sum_j t_j, sum_j t_j (row[j] - m) over t_j != 0) in float64."""
    mass = 0.0
    dot = 0.0
    for j in range(row.shape[0]):
        t = np.float64(target[j])
        mass += t
        dot += t * (row[j] - m) if t != 0 else 0.0
    return mass, dot


@njit(parallel=True, fastmath=EXACT)
def cross_entropy_soft(
    logits, target, weights, scale, label_smoothing, loss_out, grad_out, n_threads
):
    caller_threads = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    n_classes = logits.shape[1]
    eps = label_smoothing / n_classes
    keep = 1.0 - label_smoothing
    for i in prange(logits.shape[0]):
        row, t, grad = logits[i], target[i], grad_out[i]
        m = _row_max(row)
        mass, dot = _target_sums(row, t, m)
        smooth_shift = _shifted_sum(row, m) if label_smoothing != 0 else 0.0
        s = _exp_sum(row, m, grad)
        mass = keep * mass + label_smoothing
        c = scale * weights[i]
        inv, off = like(c * mass / s, m), like(c * eps, m)
        c_keep = like(c * keep, m)
        for j in range(n_classes):
            grad[j] = grad[j] * inv - c_keep * t[j] - off
        loss = mass * np.log(s) - keep * dot - eps * smooth_shift
        loss_out[i] = weights[i] * loss
    numba.set_num_threads(caller_threads)


@njit(parallel=True, fastmath=EXACT)
def sgd(param, grad, lr, weight_decay, n_threads):
    caller_threads = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    lr_, wd = like(lr, param[0]), like(weight_decay, param[0])
    for i in prange(param.shape[0]):
        param[i] -= lr_ * (grad[i] + wd * param[i])
    numba.set_num_threads(caller_threads)


@njit(parallel=True, fastmath=EXACT)
def sgd_momentum(param, grad, velocity, lr, momentum, weight_decay, nesterov, n_threads):
    caller_threads = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    lr_, mu, wd = like(lr, param[0]), like(momentum, param[0]), like(weight_decay, param[0])
    for i in prange(param.shape[0]):
        g = grad[i] + wd * param[i]
        v = mu * velocity[i] + g
        velocity[i] = v
        param[i] -= lr_ * (g + mu * v if nesterov else v)
    numba.set_num_threads(caller_threads)
