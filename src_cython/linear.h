/* Fused softmax regression (linear layer + cross-entropy) for the Cython kernels: one thread's
 * share of the rows, dense or CSR, into that thread's own dW and db.
 *
 * Dense rows are register-blocked like a small GEMM: a block of FS_LINEAR_ROWS rows against
 * FS_LINEAR_CLASSES classes at a time, so that each vector loaded (of a row, of W or of dW)
 * serves several FMAs. Row by row the loops were bound by loads (one W load per FMA): an epoch
 * of Fashion-MNIST minibatches took 86-110 ms. The block functions take their row and class
 * counts as arguments but are always inlined with constants, so the compiler unrolls them into
 * registers; the few counts needed (1 or FS_LINEAR_ROWS rows, 1 to FS_LINEAR_CLASSES classes)
 * are instantiated by the callers. The rows are taken by index: a minibatch is never gathered
 * into a copy, so its rows miss every cache; the rows of a later block are prefetched a line at
 * a time inside the vector loops (see fs_linear_block).
 *
 * Tried and dropped (1 thread, float32 k = 10 d = 784): 64-byte aligned X, W and dW made no
 * measurable difference with rows in random order (the misses dominate); prefetching one block
 * ahead, or eight, was no better than two; prefetcht0 was slower than prefetcht1/t2.
 *
 * Precision: dot products and dW accumulate in the array's dtype (as BLAS does for float32); the
 * softmax sums and the loss in double, as in rowops.h.
 */
#ifndef FASTSOFTMAX_LINEAR_H
#define FASTSOFTMAX_LINEAR_H

#include <stdint.h>
#include <string.h>

#include "rowops.h"

#define FS_LINEAR_ROWS 4
/* Up to 4 x 5 accumulators (and 5 x 4 broadcast gradients in the updates) fit the 32 vector
 * registers of AVX-512; narrower targets have 16 (measured, k = 10 on AVX-512: see linear.h's
 * history). Overridable for measurements. */
#ifndef FS_LINEAR_CLASSES
#if defined(__AVX512F__)
#define FS_LINEAR_CLASSES 5
#else
#define FS_LINEAR_CLASSES 4
#endif
#endif
#ifndef FS_LINEAR_AHEAD
#define FS_LINEAR_AHEAD 2
#endif
/* The dot products' lane arrays: one AVX-512 vector (narrower targets use two or four). */
#define FS_LANE_BYTES 64

#if defined(__GNUC__) || defined(__clang__)
#define FS_ALWAYS_INLINE static inline __attribute__((always_inline))
/* A minibatch's rows are scattered over X, so a row's lines miss every cache: the next block's
 * rows are requested (into L2) while this block computes. */
#ifndef FS_PREFETCH_LOCALITY
#define FS_PREFETCH_LOCALITY 2
#endif
#define FS_PREFETCH(address) __builtin_prefetch((address), 0, FS_PREFETCH_LOCALITY)
#else
#define FS_ALWAYS_INLINE static inline
#define FS_PREFETCH(address)
#endif

static inline void fs_prefetch_row(const void *row, size_t bytes) {
    for (size_t offset = 0; offset < bytes; offset += 64) FS_PREFETCH((const char *)row + offset);
}

#define FS_DEFINE_LINEAR(T, SUFFIX)                                                              \
    /* Each of the `rows` rows of o (k logits; the rows index[0..rows)) becomes its gradient     \
     * scale w (softmax(o) - e_label); returns their weighted loss sum w (logsumexp(o) -        \
     * o[label]). One vector exp over the block's rows * k logits: row by row, a 10-wide row    \
     * left the vector loop idle and its exps ran one by one (170 ns a row, 40 % of a d = 64    \
     * call). Non-finite logits need no branch: a NaN or +inf maximum, or a row of -inf, makes   \
     * every o - max NaN or the sum NaN, so the row's loss and gradient are NaN as in the        \
     * reference (also at w = 0: 0 * NaN). */                                                    \
    static inline double fs_linear_softmax_##SUFFIX(T *o, int rows, ptrdiff_t k,                 \
                                                    const int64_t *index, const int64_t *labels, \
                                                    const double *weights, double scale) {       \
        T m[FS_LINEAR_ROWS];                                                                     \
        double sums[FS_LINEAR_ROWS], label_shift[FS_LINEAR_ROWS], loss = 0.0;                    \
        fs_block_max_##SUFFIX(o, m, rows, k);                                                    \
        for (int r = 0; r < rows; ++r) { /* before o is overwritten */                           \
            int64_t label = labels[index[r]];                                                    \
            label_shift[r] = label < 0 ? 0.0 : (double)o[r * k + label] - m[r];                  \
        }                                                                                        \
        fs_block_exp_sum_##SUFFIX(o, m, o, sums, rows, k);                                       \
        for (int r = 0; r < rows; ++r) {                                                         \
            T *row = o + r * k;                                                                  \
            int64_t label = labels[index[r]];                                                    \
            if (label < 0) {                                                                     \
                memset(row, 0, k * sizeof(T));                                                   \
                continue;                                                                        \
            }                                                                                    \
            double w = weights[index[r]], c = scale * w;                                         \
            fs_scale_##SUFFIX(row, (T)(c / sums[r]), k);                                         \
            row[label] -= (T)c;                                                                  \
            loss += w * (log(sums[r]) - label_shift[r]);                                         \
        }                                                                                        \
        return loss;                                                                             \
    }                                                                                            \
    /* s[c FS_LINEAR_ROWS + r] = x[r] . W[c] for `rows` rows and `classes` rows of W (stride    \
     * d). Lane l of a[c][r] sums the columns j = l mod L; the lanes are then added in a fixed  \
     * tree, as a vector reduction would. (`omp simd reduction` over that many sums made GCC    \
     * spill them to the stack on every iteration.) */                                          \
    FS_ALWAYS_INLINE void fs_linear_dots_##SUFFIX(const T *const *x, int rows, const T *W,       \
                                                  int classes, ptrdiff_t d, T *FS_RESTRICT s,    \
                                                  const char *pf) {                              \
        enum { L = FS_LANE_BYTES / sizeof(T) };                                                  \
        T a[FS_LINEAR_CLASSES][FS_LINEAR_ROWS][L];                                               \
        for (int c = 0; c < classes; ++c)                                                        \
            for (int r = 0; r < rows; ++r)                                                       \
                for (int l = 0; l < L; ++l) a[c][r][l] = 0;                                      \
        ptrdiff_t j = 0;                                                                         \
        for (; j + L <= d; j += L) {                                                             \
            FS_PREFETCH(pf + j * sizeof(T));                                                     \
            FS_SIMD                                                                              \
            for (int l = 0; l < L; ++l)                                                          \
                for (int c = 0; c < classes; ++c)                                                \
                    for (int r = 0; r < rows; ++r) a[c][r][l] += x[r][j + l] * W[c * d + j + l]; \
        }                                                                                        \
        FS_PREFETCH(pf + d * sizeof(T) - 1); /* the row's last line, if it starts unaligned */   \
        for (int l = 0; j + l < d; ++l)                                                          \
            for (int c = 0; c < classes; ++c)                                                    \
                for (int r = 0; r < rows; ++r) a[c][r][l] += x[r][j + l] * W[c * d + j + l];     \
        for (int h = L / 2; h >= 1; h /= 2)                                                      \
            for (int c = 0; c < classes; ++c)                                                    \
                for (int r = 0; r < rows; ++r)                                                   \
                    for (int l = 0; l < h; ++l) a[c][r][l] += a[c][r][l + h];                    \
        for (int c = 0; c < classes; ++c)                                                        \
            for (int r = 0; r < rows; ++r) s[c * FS_LINEAR_ROWS + r] = a[c][r][0];               \
    }                                                                                            \
    /* dW[c] += sum_r g[r k + c] x[r], db[c] += sum_r g[r k + c] for `rows` rows and          \
     * `classes` classes (dW, db and g start at the first class); prefetches the row at pf (one   \
     * line per vector step, as fs_linear_dots). */                                              \
    FS_ALWAYS_INLINE void fs_linear_updates_##SUFFIX(const T *const *x, int rows,                \
                                                     const T *FS_RESTRICT g, ptrdiff_t k,        \
                                                     int classes, ptrdiff_t d,                   \
                                                     T *FS_RESTRICT dW, T *FS_RESTRICT db,       \
                                                     const char *pf) {                           \
        enum { L = FS_LANE_BYTES / sizeof(T) };                                                  \
        T h[FS_LINEAR_CLASSES][FS_LINEAR_ROWS];                                                  \
        for (int c = 0; c < classes; ++c)                                                        \
            for (int r = 0; r < rows; ++r) {                                                     \
                h[c][r] = g[r * k + c];                                                          \
                db[c] += h[c][r];                                                                \
            }                                                                                    \
        ptrdiff_t j = 0;                                                                         \
        for (; j + L <= d; j += L) {                                                             \
            FS_PREFETCH(pf + j * sizeof(T));                                                     \
            FS_SIMD                                                                              \
            for (int l = 0; l < L; ++l)                                                          \
                for (int c = 0; c < classes; ++c) {                                              \
                    T v = dW[c * d + j + l];                                                     \
                    for (int r = 0; r < rows; ++r) v += h[c][r] * x[r][j + l];                   \
                    dW[c * d + j + l] = v;                                                       \
                }                                                                                \
        }                                                                                        \
        FS_PREFETCH(pf + d * sizeof(T) - 1);                                                     \
        for (; j < d; ++j)                                                                       \
            for (int c = 0; c < classes; ++c) {                                                  \
                T v = dW[c * d + j];                                                             \
                for (int r = 0; r < rows; ++r) v += h[c][r] * x[r][j];                           \
                dW[c * d + j] = v;                                                               \
            }                                                                                    \
    }                                                                                            \
    /* A block of `rows` rows x[] (a constant: 1 or FS_LINEAR_ROWS): logits into o (rows x k),  \
     * softmax and loss (returned), then the gradient sums. The classes are split into the      \
     * fewest groups of at most FS_LINEAR_CLASSES, of near-equal sizes (k = 10: 5 + 5, not      \
     * 4 + 4 + 2), each size a constant. Each pass over a group (dots, then updates) also       \
     * prefetches one of the rows pf[] of a later block, so that their reads are spread over    \
     * the arithmetic (a burst of a block's ~200 lines stalled on the miss queue); rows left     \
     * over when there are fewer passes than rows are prefetched at once. */                     \
    FS_ALWAYS_INLINE double fs_linear_block_##SUFFIX(                                            \
        const T *const *x, int rows, const int64_t *index, const T *W, const T *b, ptrdiff_t k,  \
        ptrdiff_t d, const int64_t *labels, const double *weights, double scale,                 \
        T *FS_RESTRICT dW, T *FS_RESTRICT db, T *FS_RESTRICT o, const char *const *pf) {         \
        T s[FS_LINEAR_CLASSES * FS_LINEAR_ROWS];                                                 \
        double loss = 0.0;                                                                       \
        ptrdiff_t groups = (k + FS_LINEAR_CLASSES - 1) / FS_LINEAR_CLASSES;                      \
        for (ptrdiff_t q = 2 * groups; q < FS_LINEAR_ROWS; ++q)                                  \
            fs_prefetch_row(pf[q], d * sizeof(T));                                               \
        for (ptrdiff_t q = 0; q < groups; ++q) {                                                 \
            ptrdiff_t c = k * q / groups;                                                        \
            int classes = (int)(k * (q + 1) / groups - c);                                       \
            const char *p = q < FS_LINEAR_ROWS ? pf[q] : (const char *)x[0];                     \
            const T *w = W + c * d;                                                              \
            switch (classes) {                                                                   \
            case 1: fs_linear_dots_##SUFFIX(x, rows, w, 1, d, s, p); break;                      \
            case 2: fs_linear_dots_##SUFFIX(x, rows, w, 2, d, s, p); break;                      \
            case 3: fs_linear_dots_##SUFFIX(x, rows, w, 3, d, s, p); break;                      \
            case 4: fs_linear_dots_##SUFFIX(x, rows, w, 4, d, s, p); break;                      \
            default: fs_linear_dots_##SUFFIX(x, rows, w, FS_LINEAR_CLASSES, d, s, p);            \
            }                                                                                    \
            for (int j = 0; j < classes; ++j)                                                    \
                for (int r = 0; r < rows; ++r)                                                   \
                    o[r * k + c + j] = s[j * FS_LINEAR_ROWS + r] + b[c + j];                     \
        }                                                                                        \
        loss += fs_linear_softmax_##SUFFIX(o, rows, k, index, labels, weights, scale);           \
        for (ptrdiff_t q = 0; q < groups; ++q) {                                                 \
            ptrdiff_t c = k * q / groups;                                                        \
            int classes = (int)(k * (q + 1) / groups - c);                                       \
            const char *p = groups + q < FS_LINEAR_ROWS ? pf[groups + q] : (const char *)x[0];   \
            T *dw = dW + c * d;                                                                  \
            switch (classes) {                                                                   \
            case 1: fs_linear_updates_##SUFFIX(x, rows, o + c, k, 1, d, dw, db + c, p); break;   \
            case 2: fs_linear_updates_##SUFFIX(x, rows, o + c, k, 2, d, dw, db + c, p); break;   \
            case 3: fs_linear_updates_##SUFFIX(x, rows, o + c, k, 3, d, dw, db + c, p); break;   \
            case 4: fs_linear_updates_##SUFFIX(x, rows, o + c, k, 4, d, dw, db + c, p); break;   \
            default:                                                                             \
                fs_linear_updates_##SUFFIX(x, rows, o + c, k, FS_LINEAR_CLASSES, d, dw, db + c,  \
                                           p);                                                   \
            }                                                                                    \
        }                                                                                        \
        return loss;                                                                             \
    }                                                                                            \
    /* Rows index[0..m) of the dense X (rows of d values): overwrites dW (k x d) and db (k)      \
     * with their gradient sums and returns their weighted loss sum; o: FS_LINEAR_ROWS * k      \
     * values of scratch. Block i prefetches the rows of block i + FS_LINEAR_AHEAD (the first   \
     * blocks' rows at the start); past the end, it "prefetches" its own first row. */           \
    static double fs_linear_##SUFFIX(const T *X, ptrdiff_t d, const int64_t *index, ptrdiff_t m, \
                                     const T *W, const T *b, ptrdiff_t k, const int64_t *labels, \
                                     const double *weights, double scale, T *FS_RESTRICT dW,     \
                                     T *FS_RESTRICT db, T *FS_RESTRICT o) {                      \
        enum { AHEAD = FS_LINEAR_AHEAD * FS_LINEAR_ROWS };                                       \
        const T *x[FS_LINEAR_ROWS];                                                              \
        const char *pf[FS_LINEAR_ROWS];                                                          \
        double loss = 0.0;                                                                       \
        ptrdiff_t i = 0;                                                                         \
        memset(dW, 0, k * d * sizeof(T));                                                        \
        memset(db, 0, k * sizeof(T));                                                            \
        for (ptrdiff_t r = FS_LINEAR_ROWS; r < m && r < AHEAD; ++r)                              \
            fs_prefetch_row(X + index[r] * d, d * sizeof(T));                                    \
        for (; i + FS_LINEAR_ROWS <= m; i += FS_LINEAR_ROWS) {                                   \
            for (int r = 0; r < FS_LINEAR_ROWS; ++r) {                                           \
                x[r] = X + index[i + r] * d;                                                     \
                pf[r] = (const char *)(i + AHEAD + r < m ? X + index[i + AHEAD + r] * d : x[0]); \
            }                                                                                    \
            loss += fs_linear_block_##SUFFIX(x, FS_LINEAR_ROWS, index + i, W, b, k, d, labels,   \
                                             weights, scale, dW, db, o, pf);                     \
        }                                                                                        \
        for (int r = 0; r < FS_LINEAR_ROWS; ++r) pf[r] = (const char *)X;                        \
        for (; i < m; ++i) {                                                                     \
            x[0] = X + index[i] * d;                                                             \
            loss += fs_linear_block_##SUFFIX(x, 1, index + i, W, b, k, d, labels, weights,       \
                                             scale, dW, db, o, pf);                              \
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
            loss += fs_linear_softmax_##SUFFIX(o, 1, k, index + i, labels, weights, scale);      \
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
