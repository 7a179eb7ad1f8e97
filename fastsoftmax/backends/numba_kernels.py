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


def describe() -> dict:
    """Facts for ``fastsoftmax info`` and the bench header (the threading layer in use is known
    only after a parallel kernel has run)."""
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = None
    return {
        "numba": numba.__version__,
        "threading_layer": layer,
        "threading_layer_setting": numba.config.THREADING_LAYER,
        "svml": bool(numba.config.USING_SVML),
    }


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


@njit(fastmath=EXACT)
def _row_max(row):
    """Largest non-NaN entry, or row[0] if that is NaN; NaN rows are caught later by sums.

    Eight running maxima: LLVM vectorises no floating-point max reduction without "nnan", and
    one running maximum is a chain of dependent compares (it took 4.3 ms of an 8.9 ms float32
    (4096, 1000) softmax on one thread; eight chains take 0.8 ms). Each chain keeps the
    one-chain rule (a NaN never wins a compare, a NaN row[0] is never replaced), so the result
    is the same.
    """
    k = row.shape[0]
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = row[0]
    j = 0
    while j + 8 <= k:
        m0 = row[j] if row[j] > m0 else m0
        m1 = row[j + 1] if row[j + 1] > m1 else m1
        m2 = row[j + 2] if row[j + 2] > m2 else m2
        m3 = row[j + 3] if row[j + 3] > m3 else m3
        m4 = row[j + 4] if row[j + 4] > m4 else m4
        m5 = row[j + 5] if row[j + 5] > m5 else m5
        m6 = row[j + 6] if row[j + 6] > m6 else m6
        m7 = row[j + 7] if row[j + 7] > m7 else m7
        j += 8
    for t in range(j, k):
        m0 = row[t] if row[t] > m0 else m0
    for m in (m1, m2, m3, m4, m5, m6, m7):
        m0 = m if m > m0 else m0
    return m0


def _exp_sum(row, m, dst):
    """sum_j exp(row[j] - m) in float64, storing each term in ``dst`` (may be ``row``)."""
    raise NotImplementedError  # replaced by the overload below inside jitted code


@overload(_exp_sum, jit_options={"fastmath": REDUCE})
def _exp_sum_impl(row, m, dst):
    if row.dtype == types.float32:
        # Two loops: the exp loop alone vectorises fully, while exp fused with a float64 sum
        # of float32 terms ran at half the speed (float32 (4096, 1000) softmax, one thread).
        def exp_then_sum(row, m, dst):
            for j in range(row.shape[0]):
                dst[j] = vexp(row[j] - m)
            s = 0.0
            for j in range(row.shape[0]):
                s += dst[j]
            return s

        return exp_then_sum

    def exp_and_sum(row, m, dst):  # float64: one loop is faster (no conversion in the sum)
        s = 0.0
        for j in range(row.shape[0]):
            e = vexp(row[j] - m)
            dst[j] = e
            s += e
        return s

    return exp_and_sum


@njit(fastmath=REDUCE)
def _exp_sum_only(row, m):
    """sum_j exp(row[j] - m) in float64, nothing stored."""
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


# Narrow rows (k < NARROW) go BLOCK rows at a time: each row's maximum is subtracted row by row,
# then ONE flat vexp loop covers the whole block. Row by row, a 10-wide row would leave most of
# a vector idle and pay a loop tail. Each thread takes one contiguous run of blocks with its own
# scratch buffers (allocated once per call, not per block). Same constants as the Cython backend.
NARROW = 32
BLOCK = 64


@njit
def _block_run(n_rows, n_runs, run):
    """Rows [start, stop) of ``run`` when ``n_rows`` rows, in blocks of BLOCK, are split evenly."""
    n_blocks = (n_rows + BLOCK - 1) // BLOCK
    start = run * n_blocks // n_runs * BLOCK
    return start, min((run + 1) * n_blocks // n_runs * BLOCK, n_rows)


@njit(fastmath=EXACT)
def _block_maxima(x, maxima):
    """maxima[r] = max of row r, as _row_max, with one running maximum: for rows this short
    the eight chains of _row_max cost more than they save ((1M, 10) softmax: 1.5x slower)."""
    for r in range(x.shape[0]):
        row = x[r]
        m = row[0]
        for j in range(1, row.shape[0]):
            m = row[j] if row[j] > m else m
        maxima[r] = m


@njit(fastmath=EXACT)
def _block_shift(x, maxima, shifted):
    """shifted[r] = x[r] - maxima[r] for each row r of the block ``x``."""
    for r in range(x.shape[0]):
        for j in range(x.shape[1]):
            shifted[r, j] = x[r, j] - maxima[r]


@njit(fastmath=EXACT)
def _flat_vexp(block):
    """block = exp(block) in place: one loop over the C-contiguous block, vectorised."""
    flat = block.reshape(block.size)
    for i in range(flat.shape[0]):
        flat[i] = vexp(flat[i])


@njit(fastmath=REDUCE)
def _row_sum(row):
    s = 0.0
    for j in range(row.shape[0]):
        s += row[j]
    return s


# -- raw kernels (contract: fastsoftmax.backends) ----------------------------------------------


@njit(parallel=True, fastmath=EXACT)
def logsumexp(x, out, n_threads):
    caller_threads = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    n, k = x.shape
    if k < NARROW:
        for run in prange(n_threads):
            maxima, terms = np.empty(BLOCK, x.dtype), np.empty((BLOCK, k), x.dtype)
            start, stop = _block_run(n, n_threads, run)
            for first in range(start, stop, BLOCK):
                rows = min(BLOCK, stop - first)
                block = terms[:rows]
                _block_maxima(x[first : first + rows], maxima)
                _block_shift(x[first : first + rows], maxima, block)
                _flat_vexp(block)
                for r in range(rows):
                    m = maxima[r]
                    if np.isfinite(m):
                        out[first + r] = m + np.log(_row_sum(block[r]))
                    else:
                        out[first + r] = _lse_of_nonfinite_max(x[first + r], m)
    else:
        for run in prange(n_threads):
            terms = np.empty(k, x.dtype)  # _exp_sum's terms, one row per thread
            for i in range(run * n // n_threads, (run + 1) * n // n_threads):
                row = x[i]
                m = _row_max(row)
                if np.isfinite(m):
                    out[i] = m + np.log(_exp_sum(row, m, terms))
                else:
                    out[i] = _lse_of_nonfinite_max(row, m)
    numba.set_num_threads(caller_threads)


@njit(parallel=True, fastmath=EXACT)
def softmax(x, out, n_threads):
    caller_threads = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    n, k = x.shape
    if k < NARROW:
        for run in prange(n_threads):
            maxima = np.empty(BLOCK, x.dtype)
            start, stop = _block_run(n, n_threads, run)
            for first in range(start, stop, BLOCK):
                block = out[first : min(first + BLOCK, stop)]
                _block_maxima(x[first : first + block.shape[0]], maxima)
                _block_shift(x[first : first + block.shape[0]], maxima, block)
                _flat_vexp(block)
                for r in range(block.shape[0]):
                    inv = like(1.0 / _row_sum(block[r]), maxima[r])
                    for j in range(k):
                        block[r, j] *= inv
    else:
        for i in prange(n):
            row, dst = x[i], out[i]
            m = _row_max(row)
            inv = like(1.0 / _exp_sum(row, m, dst), m)
            for j in range(k):
                dst[j] *= inv
    numba.set_num_threads(caller_threads)


@njit(parallel=True, fastmath=EXACT)
def log_softmax(x, out, n_threads):
    caller_threads = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    n, k = x.shape
    if k < NARROW:
        for run in prange(n_threads):
            maxima, terms = np.empty(BLOCK, x.dtype), np.empty((BLOCK, k), x.dtype)
            start, stop = _block_run(n, n_threads, run)
            for first in range(start, stop, BLOCK):
                block = out[first : min(first + BLOCK, stop)]
                rows = block.shape[0]
                _block_maxima(x[first : first + rows], maxima)
                _block_shift(x[first : first + rows], maxima, block)  # block = x - m
                exps = terms[:rows]
                exps[:] = block
                _flat_vexp(exps)
                for r in range(rows):
                    log_sum = like(np.log(_row_sum(exps[r])), maxima[r])
                    for j in range(k):
                        block[r, j] -= log_sum
    else:
        for i in prange(n):
            row, dst = x[i], out[i]
            m = _row_max(row)
            log_sum = like(np.log(_exp_sum_only(row, m)), m)
            for j in range(k):
                dst[j] = (row[j] - m) - log_sum
    numba.set_num_threads(caller_threads)


@njit(fastmath=EXACT)
def _label_shifts(row, label, m, label_smoothing):
    """(row[label] - m, sum_j (row[j] - m)) in float64: what the loss needs from the row, read
    before the gradient overwrites it (``grad_out`` may be ``logits``)."""
    true_shift = np.float64(row[label]) - m
    smooth_shift = _shifted_sum(row, m) if label_smoothing != 0 else 0.0
    return true_shift, smooth_shift


@njit(fastmath=EXACT)
def _label_finish(grad, label, c, label_smoothing, s, true_shift, smooth_shift, m):
    """Turn exp(row - m) in ``grad`` (summing to ``s``) into ``c * (softmax(row) - target)``;
    return the unweighted loss of the row against ``label`` smoothed by ``label_smoothing``."""
    eps = label_smoothing / grad.shape[0]
    inv, off = like(c / s, m), like(c * eps, m)
    for j in range(grad.shape[0]):
        grad[j] = grad[j] * inv - off
    grad[label] -= like(c * (1.0 - label_smoothing), m)
    # label_smoothing == 1 drops the label: its -inf shift must not give 0 * -inf = NaN.
    label_term = (1.0 - label_smoothing) * true_shift if label_smoothing != 1 else 0.0
    return np.log(s) - label_term - eps * smooth_shift


@njit(parallel=True, fastmath=EXACT)
def cross_entropy_labels(
    logits, labels, weights, scale, label_smoothing, loss_out, grad_out, n_threads
):
    caller_threads = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    n, k = logits.shape
    if k < NARROW:
        for run in prange(n_threads):
            maxima = np.empty(BLOCK, logits.dtype)
            true_shifts, smooth_shifts = np.zeros(BLOCK), np.zeros(BLOCK)
            start, stop = _block_run(n, n_threads, run)
            for first in range(start, stop, BLOCK):
                block = grad_out[first : min(first + BLOCK, stop)]
                rows = block.shape[0]
                _block_maxima(logits[first : first + rows], maxima)
                for r in range(rows):
                    if labels[first + r] >= 0:
                        true_shifts[r], smooth_shifts[r] = _label_shifts(
                            logits[first + r], labels[first + r], maxima[r], label_smoothing
                        )
                _block_shift(logits[first : first + rows], maxima, block)
                _flat_vexp(block)
                for r in range(rows):
                    i = first + r
                    if labels[i] < 0:
                        block[r, :] = 0
                        loss_out[i] = 0.0
                    else:
                        loss = _label_finish(
                            block[r],
                            labels[i],
                            scale * weights[i],
                            label_smoothing,
                            _row_sum(block[r]),
                            true_shifts[r],
                            smooth_shifts[r],
                            maxima[r],
                        )
                        loss_out[i] = weights[i] * loss
    else:
        for i in prange(n):
            if labels[i] < 0:
                grad_out[i, :] = 0
                loss_out[i] = 0.0
            else:
                row, grad = logits[i], grad_out[i]
                m = _row_max(row)
                true_shift, smooth_shift = _label_shifts(row, labels[i], m, label_smoothing)
                s = _exp_sum(row, m, grad)
                loss = _label_finish(
                    grad,
                    labels[i],
                    scale * weights[i],
                    label_smoothing,
                    s,
                    true_shift,
                    smooth_shift,
                    m,
                )
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
        target_term = keep * dot if keep != 0 else 0.0  # as in _label_finish
        loss = mass * np.log(s) - target_term - eps * smooth_shift
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
