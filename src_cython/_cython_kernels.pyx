# cython: language_level=3, cdivision=True, embedsignature=True
# (boundscheck, wraparound and initializedcheck are set by setup.py: off, or on in the debug build)
"""Cython kernels: OpenMP ``prange`` over rows, vectorised row passes from ``rowops.h``.

Design
------
* Layout: the front layer (``fastsoftmax._api``) hands over 2-D C-contiguous rows (n >= 1,
  k >= 1) and 1-D contiguous SGD vectors; nothing here checks inputs. Inputs are ``const``
  memoryviews, so read-only and memory-mapped arrays work.
* Threads: rows are split statically over ``n_threads`` threads; each row is a few vectorised
  passes (max, exp-and-sum, scale) in ``rowops.h``, with its row in L1.
* Precision: sums accumulate in double, the rest in the array's dtype; never -ffast-math.
* The row logic mirrors ``numba_kernels.py`` function by function, so the two compile
  strategies can be compared line by line.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport NAN, isfinite, log
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset


cdef extern from "rowops.h" nogil:
    int fs_openmp_enabled()
    int fs_max_threads()
    int fs_x86_64_level()
    int FS_LIBMVEC
    const char *fs_build_flags
    double fs_row_max_f64(const double *x, Py_ssize_t k)
    float fs_row_max_f32(const float *x, Py_ssize_t k)
    double fs_exp_sum_store_f64(const double *x, double m, double *out, Py_ssize_t k)
    double fs_exp_sum_store_f32(const float *x, float m, float *out, Py_ssize_t k)
    double fs_exp_sum_f64(const double *x, double m, Py_ssize_t k)
    double fs_exp_sum_f32(const float *x, float m, Py_ssize_t k)
    double fs_shifted_sum_f64(const double *x, double m, Py_ssize_t k)
    double fs_shifted_sum_f32(const float *x, float m, Py_ssize_t k)
    void fs_target_sums_f64(const double *x, const double *t, double m, Py_ssize_t k,
                            double *mass, double *dot)
    void fs_target_sums_f32(const float *x, const float *t, float m, Py_ssize_t k,
                            double *mass, double *dot)
    void fs_scale_f64(double *out, double c, Py_ssize_t k)
    void fs_scale_f32(float *out, float c, Py_ssize_t k)
    void fs_shift_f64(const double *x, double m, double log_sum, double *out, Py_ssize_t k)
    void fs_shift_f32(const float *x, float m, float log_sum, float *out, Py_ssize_t k)
    void fs_grad_f64(double *g, double a, double b, const double *t, double c, Py_ssize_t k)
    void fs_grad_f32(float *g, float a, float b, const float *t, float c, Py_ssize_t k)
    void fs_exp_f64(const double *x, double *out, Py_ssize_t k)
    void fs_exp_f32(const float *x, float *out, Py_ssize_t k)
    int fs_any_nan_f64(const double *x, Py_ssize_t k)
    int fs_any_nan_f32(const float *x, Py_ssize_t k)
    void fs_block_max_f64(const double *x, double *m, Py_ssize_t rows, Py_ssize_t k)
    void fs_block_max_f32(const float *x, float *m, Py_ssize_t rows, Py_ssize_t k)
    void fs_block_normalise_f64(double *out, const double *s, Py_ssize_t rows, Py_ssize_t k)
    void fs_block_normalise_f32(float *out, const double *s, Py_ssize_t rows, Py_ssize_t k)
    void fs_block_exp_sum_f64(const double *x, const double *m, double *out, double *s,
                              Py_ssize_t rows, Py_ssize_t k)
    void fs_block_exp_sum_f32(const float *x, const float *m, float *out, double *s,
                              Py_ssize_t rows, Py_ssize_t k)

# Rows shorter than NARROW are processed BLOCK rows at a time with one flat vector exp
# (fs_block_exp_sum): per row, the vector exp would run one partial vector plus a scalar tail.
cdef enum:
    NARROW = 32
    BLOCK = 64


def build_info():
    """How this extension was compiled: compiler flags, OpenMP and libmvec (vector exp)."""
    return {
        "flags": fs_build_flags.decode(),
        "openmp": bool(fs_openmp_enabled()),
        "libmvec": bool(FS_LIBMVEC),
    }


def max_threads():
    return fs_max_threads()


def x86_64_level():
    """This CPU's x86-64 level: 4 (AVX-512), 3 (AVX2 + FMA), or 0 (baseline, non-x86)."""
    return fs_x86_64_level()


def exp(const floating[::1] x, floating[::1] out):
    """out = exp(x) with the kernels' vector exp (libmvec where available): for accuracy tests."""
    cdef Py_ssize_t n = x.shape[0]
    if out.shape[0] != n:
        raise ValueError("exp: x and out must have the same length")
    if n == 0:
        return
    with nogil:
        if floating is float:
            fs_exp_f32(&x[0], &out[0], n)
        else:
            fs_exp_f64(&x[0], &out[0], n)


# -- typed dispatch to the row passes (one place for the float/double split) -----------------

cdef inline floating row_max(const floating *x, Py_ssize_t k) noexcept nogil:
    if floating is double:
        return fs_row_max_f64(x, k)
    else:
        return fs_row_max_f32(x, k)


cdef inline double exp_sum(const floating *x, floating m, floating *out,
                           Py_ssize_t k) noexcept nogil:
    """sum_j exp(x[j] - m); stores the terms in ``out`` unless it is NULL."""
    if floating is double:
        if out == NULL:
            return fs_exp_sum_f64(x, m, k)
        return fs_exp_sum_store_f64(x, m, out, k)
    else:
        if out == NULL:
            return fs_exp_sum_f32(x, m, k)
        return fs_exp_sum_store_f32(x, m, out, k)


cdef inline double shifted_sum(const floating *x, floating m, Py_ssize_t k) noexcept nogil:
    if floating is double:
        return fs_shifted_sum_f64(x, m, k)
    else:
        return fs_shifted_sum_f32(x, m, k)


cdef inline void target_sums(const floating *x, const floating *t, floating m, Py_ssize_t k,
                             double *mass, double *dot) noexcept nogil:
    if floating is double:
        fs_target_sums_f64(x, t, m, k, mass, dot)
    else:
        fs_target_sums_f32(x, t, m, k, mass, dot)


cdef inline void scale(floating *out, floating c, Py_ssize_t k) noexcept nogil:
    if floating is double:
        fs_scale_f64(out, c, k)
    else:
        fs_scale_f32(out, c, k)


cdef inline void shift(const floating *x, floating m, floating log_sum, floating *out,
                       Py_ssize_t k) noexcept nogil:
    if floating is double:
        fs_shift_f64(x, m, log_sum, out, k)
    else:
        fs_shift_f32(x, m, log_sum, out, k)


cdef inline void grad_pass(floating *g, floating a, floating b, const floating *t,
                           floating c, Py_ssize_t k) noexcept nogil:
    if floating is double:
        fs_grad_f64(g, a, b, t, c, k)
    else:
        fs_grad_f32(g, a, b, t, c, k)


cdef inline void block_exp_sum(const floating *x, const floating *m, floating *out, double *s,
                               Py_ssize_t rows, Py_ssize_t k) noexcept nogil:
    if floating is double:
        fs_block_exp_sum_f64(x, m, out, s, rows, k)
    else:
        fs_block_exp_sum_f32(x, m, out, s, rows, k)


cdef inline void block_max(const floating *x, floating *maxima, Py_ssize_t rows,
                           Py_ssize_t k) noexcept nogil:
    if floating is double:
        fs_block_max_f64(x, maxima, rows, k)
    else:
        fs_block_max_f32(x, maxima, rows, k)


cdef inline void block_normalise(floating *out, const double *sums, Py_ssize_t rows,
                                 Py_ssize_t k) noexcept nogil:
    if floating is double:
        fs_block_normalise_f64(out, sums, rows, k)
    else:
        fs_block_normalise_f32(out, sums, rows, k)


cdef inline void block_max_exp_sum(const floating *x, floating *maxima, floating *terms,
                                   double *sums, Py_ssize_t rows, Py_ssize_t k) noexcept nogil:
    """Row maxima of a block of ``rows`` rows, then its exp(x - max) terms and row sums."""
    block_max(x, maxima, rows, k)
    block_exp_sum(x, maxima, terms, sums, rows, k)


cdef inline Py_ssize_t n_blocks(Py_ssize_t n) noexcept nogil:
    return (n + BLOCK - 1) // BLOCK


cdef inline double lse_of_nonfinite_max(const floating *x, floating m,
                                        Py_ssize_t k) noexcept nogil:
    cdef bint has_nan
    if floating is double:
        has_nan = fs_any_nan_f64(x, k)
    else:
        has_nan = fs_any_nan_f32(x, k)
    return NAN if has_nan else m


# -- raw kernels (contract: fastsoftmax.backends) ---------------------------------------------

def logsumexp(const floating[:, ::1] x, floating[::1] out, int n_threads):
    cdef Py_ssize_t i, r, first, rows, blk, n = x.shape[0], k = x.shape[1]
    cdef floating m
    cdef floating *maxima
    cdef floating *terms
    cdef double *sums
    if k < NARROW:
        with nogil, parallel(num_threads=n_threads, use_threads_if=n_threads > 1):
            maxima = <floating *>malloc(BLOCK * sizeof(floating))
            terms = <floating *>malloc(BLOCK * k * sizeof(floating))
            sums = <double *>malloc(BLOCK * sizeof(double))
            for blk in prange(n_blocks(n), schedule="static"):
                first = blk * BLOCK
                rows = min(BLOCK, n - first)
                block_max_exp_sum(&x[first, 0], maxima, terms, sums, rows, k)
                for r in range(rows):
                    if isfinite(maxima[r]):
                        out[first + r] = <floating>(maxima[r] + log(sums[r]))
                    else:
                        out[first + r] = <floating>lse_of_nonfinite_max(
                            &x[first + r, 0], maxima[r], k
                        )
            free(maxima)
            free(terms)
            free(sums)
        return
    for i in prange(n, nogil=True, schedule="static", num_threads=n_threads,
                  use_threads_if=n_threads > 1):
        m = row_max(&x[i, 0], k)
        if isfinite(m):
            out[i] = <floating>(m + log(exp_sum(&x[i, 0], m, <floating *>NULL, k)))
        else:
            out[i] = <floating>lse_of_nonfinite_max(&x[i, 0], m, k)


def softmax(const floating[:, ::1] x, floating[:, ::1] out, int n_threads):
    cdef Py_ssize_t i, r, first, rows, blk, n = x.shape[0], k = x.shape[1]
    cdef floating m
    cdef floating *maxima
    cdef double *sums
    if k < NARROW:
        with nogil, parallel(num_threads=n_threads, use_threads_if=n_threads > 1):
            maxima = <floating *>malloc(BLOCK * sizeof(floating))
            sums = <double *>malloc(BLOCK * sizeof(double))
            for blk in prange(n_blocks(n), schedule="static"):
                first = blk * BLOCK
                rows = min(BLOCK, n - first)
                block_max_exp_sum(&x[first, 0], maxima, &out[first, 0], sums, rows, k)
                block_normalise(&out[first, 0], sums, rows, k)
            free(maxima)
            free(sums)
        return
    for i in prange(n, nogil=True, schedule="static", num_threads=n_threads,
                  use_threads_if=n_threads > 1):
        m = row_max(&x[i, 0], k)
        scale(&out[i, 0], <floating>(1.0 / exp_sum(&x[i, 0], m, &out[i, 0], k)), k)


def log_softmax(const floating[:, ::1] x, floating[:, ::1] out, int n_threads):
    cdef Py_ssize_t i, r, first, rows, blk, n = x.shape[0], k = x.shape[1]
    cdef floating m
    cdef floating *maxima
    cdef floating *terms
    cdef double *sums
    if k < NARROW:
        with nogil, parallel(num_threads=n_threads, use_threads_if=n_threads > 1):
            maxima = <floating *>malloc(BLOCK * sizeof(floating))
            terms = <floating *>malloc(BLOCK * k * sizeof(floating))
            sums = <double *>malloc(BLOCK * sizeof(double))
            for blk in prange(n_blocks(n), schedule="static"):
                first = blk * BLOCK
                rows = min(BLOCK, n - first)
                block_max_exp_sum(&x[first, 0], maxima, terms, sums, rows, k)
                for r in range(rows):
                    shift(&x[first + r, 0], maxima[r], <floating>log(sums[r]),
                          &out[first + r, 0], k)
            free(maxima)
            free(terms)
            free(sums)
        return
    for i in prange(n, nogil=True, schedule="static", num_threads=n_threads,
                  use_threads_if=n_threads > 1):
        m = row_max(&x[i, 0], k)
        shift(&x[i, 0], m, <floating>log(exp_sum(&x[i, 0], m, <floating *>NULL, k)),
              &out[i, 0], k)


def cross_entropy_labels(
    const floating[:, ::1] logits, const int64_t[::1] labels, const double[::1] weights,
    double scale, double label_smoothing, double[::1] loss_out, floating[:, ::1] grad_out,
    int n_threads,
):
    cdef Py_ssize_t i, r, first, rows, blk, n = logits.shape[0], k = logits.shape[1]
    cdef int64_t label
    cdef floating m
    cdef double true_shift, smooth_shift, s
    cdef floating *maxima
    cdef double *sums
    cdef double *true_shifts
    cdef double *smooth_shifts
    if k < NARROW:
        with nogil, parallel(num_threads=n_threads, use_threads_if=n_threads > 1):
            maxima = <floating *>malloc(BLOCK * sizeof(floating))
            sums = <double *>malloc(BLOCK * sizeof(double))
            true_shifts = <double *>malloc(BLOCK * sizeof(double))
            smooth_shifts = <double *>malloc(BLOCK * sizeof(double))
            for blk in prange(n_blocks(n), schedule="static"):
                first = blk * BLOCK
                rows = min(BLOCK, n - first)
                # Read what the loss needs before the gradient overwrites the rows (in place).
                block_max(&logits[first, 0], maxima, rows, k)
                for r in range(rows):
                    label = labels[first + r]
                    true_shifts[r] = 0.0
                    if label >= 0:
                        true_shifts[r] = <double>logits[first + r, label] - maxima[r]
                    smooth_shifts[r] = 0.0
                    if label_smoothing != 0:
                        smooth_shifts[r] = shifted_sum(&logits[first + r, 0], maxima[r], k)
                block_exp_sum(&logits[first, 0], maxima, &grad_out[first, 0], sums, rows, k)
                for r in range(rows):
                    label_row_finish(&grad_out[first + r, 0], labels[first + r],
                                     weights[first + r], scale, label_smoothing, sums[r],
                                     true_shifts[r], smooth_shifts[r], &loss_out[first + r], k)
            free(maxima)
            free(sums)
            free(true_shifts)
            free(smooth_shifts)
        return
    for i in prange(n, nogil=True, schedule="static", num_threads=n_threads,
                  use_threads_if=n_threads > 1):
        label = labels[i]
        m = row_max(&logits[i, 0], k)
        true_shift = 0.0
        if label >= 0:
            true_shift = <double>logits[i, label] - m
        smooth_shift = 0.0
        if label_smoothing != 0:
            smooth_shift = shifted_sum(&logits[i, 0], m, k)
        s = exp_sum(&logits[i, 0], m, &grad_out[i, 0], k)
        label_row_finish(&grad_out[i, 0], label, weights[i], scale, label_smoothing, s,
                         true_shift, smooth_shift, &loss_out[i], k)


cdef inline void label_row_finish(
    floating *grad, int64_t label, double weight, double scale, double label_smoothing,
    double s, double true_shift, double smooth_shift, double *loss, Py_ssize_t k,
) noexcept nogil:
    """Turn exp(x - m) in ``grad`` into the row's gradient and write its loss (0 if ignored)."""
    cdef double eps = label_smoothing / k
    cdef double c = scale * weight
    if label < 0:
        memset(grad, 0, k * sizeof(floating))
        loss[0] = 0.0
        return
    grad_pass(grad, <floating>(c / s), <floating>(c * eps), <floating *>NULL, 0, k)
    grad[label] -= <floating>(c * (1.0 - label_smoothing))
    # label_smoothing == 1 drops the label: its -inf shift must not give 0 * -inf = NaN.
    cdef double label_term = (1.0 - label_smoothing) * true_shift if label_smoothing != 1 else 0.0
    loss[0] = weight * (log(s) - label_term - eps * smooth_shift)


def cross_entropy_soft(
    const floating[:, ::1] logits, const floating[:, ::1] target, const double[::1] weights,
    double scale, double label_smoothing, double[::1] loss_out, floating[:, ::1] grad_out,
    int n_threads,
):
    cdef Py_ssize_t i, n = logits.shape[0], k = logits.shape[1]
    cdef floating m
    cdef double mass, dot, smooth_shift, s, c, target_term
    cdef double eps = label_smoothing / k
    cdef double keep = 1.0 - label_smoothing
    for i in prange(n, nogil=True, schedule="static", num_threads=n_threads,
                  use_threads_if=n_threads > 1):
        mass = 0.0  # assigned in the loop body so that prange makes it thread-private
        dot = 0.0
        m = row_max(&logits[i, 0], k)
        target_sums(&logits[i, 0], &target[i, 0], m, k, &mass, &dot)
        smooth_shift = 0.0
        if label_smoothing != 0:
            smooth_shift = shifted_sum(&logits[i, 0], m, k)
        s = exp_sum(&logits[i, 0], m, &grad_out[i, 0], k)
        mass = keep * mass + label_smoothing
        c = scale * weights[i]
        grad_pass(&grad_out[i, 0], <floating>(c * mass / s), <floating>(c * eps),
                  &target[i, 0], <floating>(c * keep), k)
        target_term = keep * dot if keep != 0 else 0.0  # as in label_row_finish
        loss_out[i] = weights[i] * (mass * log(s) - target_term - eps * smooth_shift)


def sgd(floating[::1] param, const floating[::1] grad, double lr, double weight_decay,
        int n_threads):
    cdef Py_ssize_t i
    cdef floating lr_ = <floating>lr, wd = <floating>weight_decay
    for i in prange(param.shape[0], nogil=True, schedule="static", num_threads=n_threads,
                  use_threads_if=n_threads > 1):
        param[i] -= lr_ * (grad[i] + wd * param[i])


def sgd_momentum(floating[::1] param, const floating[::1] grad, floating[::1] velocity,
                 double lr, double momentum, double weight_decay, bint nesterov,
                 int n_threads):
    cdef Py_ssize_t i
    cdef floating lr_ = <floating>lr, mu = <floating>momentum, wd = <floating>weight_decay
    cdef floating g, v
    for i in prange(param.shape[0], nogil=True, schedule="static", num_threads=n_threads,
                  use_threads_if=n_threads > 1):
        g = grad[i] + wd * param[i]
        v = mu * velocity[i] + g
        velocity[i] = v
        if nesterov:
            param[i] -= lr_ * (g + mu * v)
        else:
            param[i] -= lr_ * v
