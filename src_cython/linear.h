/* Fused softmax regression (linear layer + cross-entropy) for the Cython kernels: one thread's
 * share of the rows, dense or CSR, into that thread's own dW and db.
 *
 * Dense rows go FS_LINEAR_ROWS at a time so that each vector of W (or of dW) loaded serves that
 * many rows: row by row the loops were bound by loads (one W load per FMA) and ran an epoch of
 * Fashion-MNIST minibatches in 86-110 ms. The rows are taken by index (a minibatch is never
 * gathered into a copy). W and dW are k x d, small enough to stay in L1/L2 for the k and d this
 * is meant for; the rows of X stream through once each.
 *
 * Precision: dot products and dW accumulate in the array's dtype (as BLAS does for float32);
 * the softmax sums and the loss in double, as in rowops.h.
 */
#ifndef FASTSOFTMAX_LINEAR_H
#define FASTSOFTMAX_LINEAR_H

#include <stdint.h>
#include <string.h>

#include "rowops.h"

#define FS_LINEAR_ROWS 4

#if defined(_OPENMP)
#define FS_SIMD_SUM4(a, b, c, d) FS_PRAGMA(omp simd reduction(+ : a, b, c, d))
#else
#define FS_SIMD_SUM4(a, b, c, d)
#endif

#define FS_DEFINE_LINEAR(T, SUFFIX)                                                              \
    /* o (a row's k logits) becomes its gradient scale w (softmax(o) - e_label); returns its    \
     * weighted loss w (logsumexp(o) - o[label]). Non-finite logits need no branch: a NaN or    \
     * +inf maximum, or a row of -inf, makes every o - max NaN or the sum NaN, so the row's      \
     * loss and gradient are NaN as in the reference (also at w = 0: 0 * NaN). */               \
    static inline double fs_linear_row_##SUFFIX(T *o, ptrdiff_t k, int64_t label, double w,      \
                                                double scale) {                                  \
        if (label < 0) {                                                                         \
            memset(o, 0, k * sizeof(T));                                                         \
            return 0.0;                                                                          \
        }                                                                                        \
        T m = fs_row_max_##SUFFIX(o, k);                                                         \
        double label_shift = (double)o[label] - m; /* before o is overwritten */                 \
        double s = fs_exp_sum_store_##SUFFIX(o, m, o, k);                                        \
        double c = scale * w;                                                                    \
        fs_scale_##SUFFIX(o, (T)(c / s), k);                                                     \
        o[label] -= (T)c;                                                                        \
        return w * (log(s) - label_shift);                                                       \
    }                                                                                            \
    /* The softmax step over `rows` consecutive logit rows o (rows x k) of rows `index`. */     \
    static inline double fs_linear_rows_grad_##SUFFIX(T *o, ptrdiff_t rows, ptrdiff_t k,        \
                                                      const int64_t *index,                      \
                                                      const int64_t *labels,                     \
                                                      const double *weights, double scale) {     \
        double loss = 0.0;                                                                       \
        for (ptrdiff_t r = 0; r < rows; ++r)                                                     \
            loss += fs_linear_row_##SUFFIX(o + r * k, k, labels[index[r]], weights[index[r]],    \
                                           scale);                                               \
        return loss;                                                                             \
    }                                                                                            \
    /* Logits of FS_LINEAR_ROWS rows x0..x3: o[r k + c] = W[c] . x_r + b[c]. */                 \
    static inline void fs_linear_logits4_##SUFFIX(                                               \
        const T *FS_RESTRICT x0, const T *FS_RESTRICT x1, const T *FS_RESTRICT x2,               \
        const T *FS_RESTRICT x3, const T *FS_RESTRICT W, const T *FS_RESTRICT b, ptrdiff_t k,    \
        ptrdiff_t d, T *FS_RESTRICT o) {                                                         \
        for (ptrdiff_t c = 0; c < k; ++c) {                                                      \
            const T *w = W + c * d;                                                              \
            T s0 = 0, s1 = 0, s2 = 0, s3 = 0;                                                    \
            FS_SIMD_SUM4(s0, s1, s2, s3)                                                         \
            for (ptrdiff_t j = 0; j < d; ++j) {                                                  \
                s0 += x0[j] * w[j];                                                              \
                s1 += x1[j] * w[j];                                                              \
                s2 += x2[j] * w[j];                                                              \
                s3 += x3[j] * w[j];                                                              \
            }                                                                                    \
            o[c] = s0 + b[c];                                                                    \
            o[k + c] = s1 + b[c];                                                                \
            o[2 * k + c] = s2 + b[c];                                                            \
            o[3 * k + c] = s3 + b[c];                                                            \
        }                                                                                        \
    }                                                                                            \
    /* dW[c] += sum_r g[r k + c] x_r, db[c] += sum_r g[r k + c] for the rows x0..x3. */         \
    static inline void fs_linear_update4_##SUFFIX(                                               \
        const T *FS_RESTRICT x0, const T *FS_RESTRICT x1, const T *FS_RESTRICT x2,               \
        const T *FS_RESTRICT x3, const T *FS_RESTRICT g, ptrdiff_t k, ptrdiff_t d,               \
        T *FS_RESTRICT dW, T *FS_RESTRICT db) {                                                  \
        for (ptrdiff_t c = 0; c < k; ++c) {                                                      \
            T g0 = g[c], g1 = g[k + c], g2 = g[2 * k + c], g3 = g[3 * k + c];                    \
            T *dw = dW + c * d;                                                                  \
            FS_SIMD                                                                              \
            for (ptrdiff_t j = 0; j < d; ++j)                                                    \
                dw[j] += g0 * x0[j] + g1 * x1[j] + g2 * x2[j] + g3 * x3[j];                      \
            db[c] += g0 + g1 + g2 + g3;                                                          \
        }                                                                                        \
    }                                                                                            \
    /* One row: the same two passes. */                                                          \
    static inline void fs_linear_logits1_##SUFFIX(const T *FS_RESTRICT x,                        \
                                                  const T *FS_RESTRICT W,                        \
                                                  const T *FS_RESTRICT b, ptrdiff_t k,           \
                                                  ptrdiff_t d, T *FS_RESTRICT o) {               \
        for (ptrdiff_t c = 0; c < k; ++c) {                                                      \
            const T *w = W + c * d;                                                              \
            T s = 0;                                                                             \
            FS_SIMD_SUM(s)                                                                       \
            for (ptrdiff_t j = 0; j < d; ++j) s += x[j] * w[j];                                  \
            o[c] = s + b[c];                                                                     \
        }                                                                                        \
    }                                                                                            \
    static inline void fs_linear_update1_##SUFFIX(const T *FS_RESTRICT x,                        \
                                                  const T *FS_RESTRICT g, ptrdiff_t k,           \
                                                  ptrdiff_t d, T *FS_RESTRICT dW,                \
                                                  T *FS_RESTRICT db) {                           \
        for (ptrdiff_t c = 0; c < k; ++c) {                                                      \
            T gc = g[c];                                                                         \
            T *dw = dW + c * d;                                                                  \
            FS_SIMD                                                                              \
            for (ptrdiff_t j = 0; j < d; ++j) dw[j] += gc * x[j];                                \
            db[c] += gc;                                                                         \
        }                                                                                        \
    }                                                                                            \
    /* Rows index[0..m) of the dense X (rows of d values): overwrites dW (k x d) and db (k)      \
     * with their gradient sums and returns their weighted loss sum; o: FS_LINEAR_ROWS * k      \
     * values of scratch. */                                                                     \
    static double fs_linear_##SUFFIX(const T *X, ptrdiff_t d, const int64_t *index, ptrdiff_t m, \
                                     const T *W, const T *b, ptrdiff_t k, const int64_t *labels, \
                                     const double *weights, double scale, T *FS_RESTRICT dW,     \
                                     T *FS_RESTRICT db, T *FS_RESTRICT o) {                      \
        double loss = 0.0;                                                                       \
        ptrdiff_t i = 0;                                                                         \
        memset(dW, 0, k * d * sizeof(T));                                                        \
        memset(db, 0, k * sizeof(T));                                                            \
        for (; i + FS_LINEAR_ROWS <= m; i += FS_LINEAR_ROWS) {                                   \
            const T *x0 = X + index[i] * d, *x1 = X + index[i + 1] * d;                          \
            const T *x2 = X + index[i + 2] * d, *x3 = X + index[i + 3] * d;                      \
            fs_linear_logits4_##SUFFIX(x0, x1, x2, x3, W, b, k, d, o);                           \
            loss += fs_linear_rows_grad_##SUFFIX(o, FS_LINEAR_ROWS, k, index + i, labels,        \
                                                 weights, scale);                                \
            fs_linear_update4_##SUFFIX(x0, x1, x2, x3, o, k, d, dW, db);                         \
        }                                                                                        \
        for (; i < m; ++i) {                                                                     \
            const T *x = X + index[i] * d;                                                       \
            fs_linear_logits1_##SUFFIX(x, W, b, k, d, o);                                        \
            loss += fs_linear_rows_grad_##SUFFIX(o, 1, k, index + i, labels, weights, scale);    \
            fs_linear_update1_##SUFFIX(x, o, k, d, dW, db);                                      \
        }                                                                                        \
        return loss;                                                                             \
    }                                                                                            \
    /* fs_linear for X in CSR form. A row's logits gather W at its columns; its gradient        \
     * scatters into dW there, in a plain loop: repeated columns would make a vector scatter     \
     * lose updates. */                                                                          \
    static double fs_linear_csr_##SUFFIX(const T *data, const int32_t *indices,                  \
                                         const int64_t *indptr, ptrdiff_t d,                     \
                                         const int64_t *index, ptrdiff_t m, const T *W,          \
                                         const T *b, ptrdiff_t k, const int64_t *labels,         \
                                         const double *weights, double scale,                    \
                                         T *FS_RESTRICT dW, T *FS_RESTRICT db,                   \
                                         T *FS_RESTRICT o) {                                     \
        double loss = 0.0;                                                                       \
        memset(dW, 0, k * d * sizeof(T));                                                        \
        memset(db, 0, k * sizeof(T));                                                            \
        for (ptrdiff_t i = 0; i < m; ++i) {                                                      \
            const T *v = data + indptr[index[i]];                                                \
            const int32_t *col = indices + indptr[index[i]];                                     \
            ptrdiff_t nnz = indptr[index[i] + 1] - indptr[index[i]];                             \
            for (ptrdiff_t c = 0; c < k; ++c) {                                                  \
                const T *w = W + c * d;                                                          \
                T s = 0;                                                                         \
                FS_SIMD_SUM(s)                                                                   \
                for (ptrdiff_t p = 0; p < nnz; ++p) s += v[p] * w[col[p]];                       \
                o[c] = s + b[c];                                                                 \
            }                                                                                    \
            loss += fs_linear_rows_grad_##SUFFIX(o, 1, k, index + i, labels, weights, scale);    \
            for (ptrdiff_t c = 0; c < k; ++c) {                                                  \
                T gc = o[c];                                                                     \
                T *dw = dW + c * d;                                                              \
                for (ptrdiff_t p = 0; p < nnz; ++p) dw[col[p]] += gc * v[p];                     \
                db[c] += gc;                                                                     \
            }                                                                                    \
        }                                                                                        \
        return loss;                                                                             \
    }                                                                                            \
    /* out[j] += x[j]: one thread's partial sums into the result. */                             \
    static inline void fs_add_##SUFFIX(T *FS_RESTRICT out, const T *FS_RESTRICT x,               \
                                       ptrdiff_t n) {                                            \
        FS_SIMD                                                                                  \
        for (ptrdiff_t j = 0; j < n; ++j) out[j] += x[j];                                        \
    }

FS_DEFINE_LINEAR(double, f64)
FS_DEFINE_LINEAR(float, f32)

#endif
