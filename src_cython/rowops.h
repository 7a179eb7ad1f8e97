/* Row passes for the Cython kernels, one loop each, written for the compiler to vectorise.
 *
 * Cython cannot emit `#pragma omp simd`, so the loops live here as static inline functions;
 * threads (prange) stay in Cython. Every function reads x[j] before writing out[j] at the same
 * index, so `out == x` (in place) is safe. Sums accumulate in double.
 *
 * exp: with GCC on glibc/x86-64 the declarations below expose libmvec's vector exp/expf
 * (glibc declares them only under -ffast-math, which we never use: it would turn on
 * flush-to-zero for the whole process). libmvec is accurate to about 4 ulp and keeps
 * exp(-inf) = 0 and exp(NaN) = NaN. Elsewhere the loops call the scalar exp.
 */
#ifndef FASTSOFTMAX_ROWOPS_H
#define FASTSOFTMAX_ROWOPS_H

#include <math.h>
#include <stddef.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__) && defined(__x86_64__)        \
    && defined(_OPENMP)
#pragma omp declare simd notinbranch
double exp(double);
#pragma omp declare simd notinbranch
float expf(float);
#define FS_LIBMVEC 1
#else
#define FS_LIBMVEC 0
#endif

#if defined(_OPENMP)
#define FS_PRAGMA(text) _Pragma(#text)
#define FS_SIMD FS_PRAGMA(omp simd)
#define FS_SIMD_SUM(v) FS_PRAGMA(omp simd reduction(+ : v))
#define FS_SIMD_MAX(v) FS_PRAGMA(omp simd reduction(max : v))
#else
#define FS_SIMD
#define FS_SIMD_SUM(v)
#define FS_SIMD_MAX(v)
#endif

/* The block passes' per-row arrays (maxima, sums) live in a scratch buffer that never overlaps
 * the rows: saying so lets the compiler keep them out of the rows' memory dependences. */
#ifdef _MSC_VER
#define FS_RESTRICT __restrict
#else
#define FS_RESTRICT restrict
#endif

#ifndef FS_BUILD_FLAGS
#define FS_BUILD_FLAGS "unknown"
#endif
static const char *fs_build_flags = FS_BUILD_FLAGS;

static inline int fs_openmp_enabled(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* Let this thread's idle OpenMP workers go now instead of spinning (GNU OpenMP spins for
   milliseconds after a parallel region, taking a core from the next library's threads):
   OpenMP 5.0's omp_pause_resource_all, in libgomp since GCC 9 and in LLVM's libomp. The next
   parallel region starts new workers. Returns 0 when done, -1 when not available. */
static inline int fs_release_threads(void) {
#if defined(_OPENMP) && (_OPENMP >= 201811 || (defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 9))
    return omp_pause_resource_all(omp_pause_soft);
#else
    return -1;
#endif
}

static inline int fs_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* The x86-64 micro-architecture level this CPU (and OS) supports: 4 (AVX-512), 3 (AVX2 + FMA),
 * or 0 (baseline, and every other architecture). Decides which build variant may be loaded. */
static inline int fs_x86_64_level(void) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
    __builtin_cpu_init();
    if (__builtin_cpu_supports("x86-64-v4")) return 4;
    if (__builtin_cpu_supports("x86-64-v3")) return 3;
#elif defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    int v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
             __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
    int v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx512vl");
    if (v4) return 4;
    if (v3) return 3;
#endif
    return 0;
}

#define FS_DEFINE_ROWOPS(T, SUFFIX, EXP)                                                         \
    /* Largest non-NaN entry (or x[0] if that is NaN): NaN rows are caught by the sums. */       \
    static inline T fs_row_max_##SUFFIX(const T *x, ptrdiff_t k) {                               \
        T m = x[0];                                                                              \
        FS_SIMD_MAX(m)                                                                           \
        for (ptrdiff_t j = 1; j < k; ++j) m = x[j] > m ? x[j] : m;                               \
        return m;                                                                                \
    }                                                                                            \
    /* sum_j exp(x[j] - m), storing the terms in out (which may be x). Two loops: the exp loop   \
     * alone vectorises fully; fused with a double sum it was 10-30 % slower (float32). */       \
    static inline double fs_exp_sum_store_##SUFFIX(const T *x, T m, T *out, ptrdiff_t k) {       \
        FS_SIMD                                                                                  \
        for (ptrdiff_t j = 0; j < k; ++j) out[j] = EXP(x[j] - m);                                \
        double s = 0.0;                                                                          \
        FS_SIMD_SUM(s)                                                                           \
        for (ptrdiff_t j = 0; j < k; ++j) s += out[j];                                           \
        return s;                                                                                \
    }                                                                                            \
    static inline double fs_exp_sum_##SUFFIX(const T *x, T m, ptrdiff_t k) {                     \
        double s = 0.0;                                                                          \
        FS_SIMD_SUM(s)                                                                           \
        for (ptrdiff_t j = 0; j < k; ++j) s += EXP(x[j] - m);                                    \
        return s;                                                                                \
    }                                                                                            \
    /* sum_j (x[j] - m) */                                                                       \
    static inline double fs_shifted_sum_##SUFFIX(const T *x, T m, ptrdiff_t k) {                 \
        double s = 0.0;                                                                          \
        FS_SIMD_SUM(s)                                                                           \
        for (ptrdiff_t j = 0; j < k; ++j) s += x[j] - m;                                         \
        return s;                                                                                \
    }                                                                                            \
    /* sum_j t[j] and sum_j t[j] (x[j] - m) over t[j] != 0 (0 log 0 = 0). */                     \
    static inline void fs_target_sums_##SUFFIX(const T *x, const T *t, T m, ptrdiff_t k,         \
                                               double *mass, double *dot) {                      \
        double sum_t = 0.0, sum_tx = 0.0;                                                        \
        FS_SIMD_SUM(sum_t)                                                                       \
        for (ptrdiff_t j = 0; j < k; ++j) sum_t += t[j];                                         \
        FS_SIMD_SUM(sum_tx)                                                                      \
        for (ptrdiff_t j = 0; j < k; ++j)                                                        \
            sum_tx += t[j] != 0 ? (double)t[j] * (double)(x[j] - m) : 0.0;                       \
        *mass = sum_t;                                                                           \
        *dot = sum_tx;                                                                           \
    }                                                                                            \
    static inline void fs_scale_##SUFFIX(T *out, T c, ptrdiff_t k) {                             \
        FS_SIMD                                                                                  \
        for (ptrdiff_t j = 0; j < k; ++j) out[j] *= c;                                           \
    }                                                                                            \
    /* out[j] = (x[j] - m) - log_sum, in that order: x - (m + log_sum) loses large inputs. */    \
    static inline void fs_shift_##SUFFIX(const T *x, T m, T log_sum, T *out, ptrdiff_t k) {      \
        FS_SIMD                                                                                  \
        for (ptrdiff_t j = 0; j < k; ++j) out[j] = (x[j] - m) - log_sum;                         \
    }                                                                                            \
    /* g[j] = g[j] * a - b - c * t[j]; t may be NULL (then c is ignored). */                     \
    static inline void fs_grad_##SUFFIX(T *g, T a, T b, const T *t, T c, ptrdiff_t k) {          \
        if (t == NULL) {                                                                         \
            FS_SIMD                                                                              \
            for (ptrdiff_t j = 0; j < k; ++j) g[j] = g[j] * a - b;                               \
        } else {                                                                                 \
            FS_SIMD                                                                              \
            for (ptrdiff_t j = 0; j < k; ++j) g[j] = g[j] * a - c * t[j] - b;                    \
        }                                                                                        \
    }                                                                                            \
    /* sum_j a[j] b[j], each product in double. */                                               \
    static inline double fs_dot_##SUFFIX(const T *a, const T *b, ptrdiff_t k) {                  \
        double s = 0.0;                                                                          \
        FS_SIMD_SUM(s)                                                                           \
        for (ptrdiff_t j = 0; j < k; ++j) s += (double)a[j] * (double)b[j];                      \
        return s;                                                                                \
    }                                                                                            \
    static inline double fs_sum_##SUFFIX(const T *x, ptrdiff_t k) {                              \
        double s = 0.0;                                                                          \
        FS_SIMD_SUM(s)                                                                           \
        for (ptrdiff_t j = 0; j < k; ++j) s += x[j];                                             \
        return s;                                                                                \
    }                                                                                            \
    /* Softmax backward: gi[j] = y[j] (g[j] - s), s = sum_j g[j] y[j]; gi may be g or y. */      \
    static inline void fs_softmax_backward_##SUFFIX(const T *g, const T *y, T s, T *gi,          \
                                                    ptrdiff_t k) {                               \
        FS_SIMD                                                                                  \
        for (ptrdiff_t j = 0; j < k; ++j) gi[j] = y[j] * (g[j] - s);                             \
    }                                                                                            \
    /* Log-softmax backward: gi[j] = g[j] - exp(y[j]) s, s = sum_j g[j]; gi may be g or y. */    \
    static inline void fs_log_softmax_backward_##SUFFIX(const T *g, const T *y, T s, T *gi,      \
                                                        ptrdiff_t k) {                           \
        FS_SIMD                                                                                  \
        for (ptrdiff_t j = 0; j < k; ++j) gi[j] = g[j] - EXP(y[j]) * s;                          \
    }                                                                                            \
    /* SGD on k parameters: p -= lr (g + wd p), g the gradient or, when neg (maximize), its      \
     * negation. The sign is a select, never a multiply, so that the contraction of wd p + g into\
     * an FMA is the one it always was (the default is bitwise unchanged). */                    \
    static inline void fs_sgd_##SUFFIX(T *p, const T *g, T lr, T wd, int neg, ptrdiff_t k) {     \
        FS_SIMD                                                                                  \
        for (ptrdiff_t j = 0; j < k; ++j) p[j] -= lr * ((neg ? -g[j] : g[j]) + wd * p[j]);       \
    }                                                                                            \
    /* SGD with momentum, torch.optim.SGD's rule: gj = +-g + wd p; v = gj on the first step, else\
     * v = mu v + keep gj (keep = 1 - dampening); p -= lr v, or lr (gj + mu v) (Nesterov). The   \
     * flags are loop invariants (unswitched); keep multiplies only when damped, so that without \
     * dampening mu v + gj contracts as before. Two loops so that neither carries nesterov. */   \
    static inline void fs_sgd_momentum_##SUFFIX(T *p, const T *g, T *v, T lr, T mu, T wd,        \
                                                int nesterov, int neg, T keep, int first,        \
                                                ptrdiff_t k) {                                   \
        const int damped = keep != 1;                                                            \
        if (nesterov) {                                                                          \
            FS_SIMD                                                                              \
            for (ptrdiff_t j = 0; j < k; ++j) {                                                  \
                T gj = (neg ? -g[j] : g[j]) + wd * p[j];                                         \
                T vj = first ? gj : mu * v[j] + (damped ? keep * gj : gj);                       \
                v[j] = vj;                                                                       \
                p[j] -= lr * (gj + mu * vj);                                                     \
            }                                                                                    \
        } else {                                                                                 \
            FS_SIMD                                                                              \
            for (ptrdiff_t j = 0; j < k; ++j) {                                                  \
                T vj = (neg ? -g[j] : g[j]) + wd * p[j];                                         \
                vj = first ? vj : mu * v[j] + (damped ? keep * vj : vj);                         \
                v[j] = vj;                                                                       \
                p[j] -= lr * vj;                                                                 \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    /* out[j] = exp(x[j]): the kernels' vector exp on its own, for the accuracy tests. */        \
    static inline void fs_exp_##SUFFIX(const T *x, T *out, ptrdiff_t k) {                        \
        FS_SIMD                                                                                  \
        for (ptrdiff_t j = 0; j < k; ++j) out[j] = EXP(x[j]);                                    \
    }                                                                                            \
    static inline int fs_any_nan_##SUFFIX(const T *x, ptrdiff_t k) {                             \
        for (ptrdiff_t j = 0; j < k; ++j)                                                        \
            if (isnan(x[j])) return 1;                                                           \
        return 0;                                                                                \
    }                                                                                            \
    /* Narrow rows: a short row leaves the vector exp mostly idle and pays a vector set-up and   \
     * tail per row, so a block of `rows` consecutive rows (contiguous, rows * k values) goes    \
     * in plain per-row loops (maxima, shift, sums) around ONE flat vector exp over the block.   \
     * (The per-row omp simd loops were measured slower here: the row maximum alone took 29 %    \
     * of a (1M, 10) softmax.) fs_block_max: m[r] = max of row r (NaN rows: see fs_row_max). */  \
    static inline void fs_block_max_##SUFFIX(const T *x, T *FS_RESTRICT m, ptrdiff_t rows,       \
                                             ptrdiff_t k) {                                      \
        for (ptrdiff_t r = 0; r < rows; ++r) {                                                   \
            const T *row = x + r * k;                                                            \
            T v = row[0];                                                                        \
            for (ptrdiff_t j = 1; j < k; ++j) v = row[j] > v ? row[j] : v;                       \
            m[r] = v;                                                                            \
        }                                                                                        \
    }                                                                                            \
    /* out = exp(x - m[row]), s[row] = sum of the row's terms; m[] from fs_block_max. */         \
    static inline void fs_block_exp_sum_##SUFFIX(const T *x, const T *FS_RESTRICT m, T *out,     \
                                                 double *FS_RESTRICT s,                          \
                                                 ptrdiff_t rows, ptrdiff_t k) {                  \
        for (ptrdiff_t r = 0; r < rows; ++r)                                                     \
            for (ptrdiff_t j = 0; j < k; ++j) out[r * k + j] = x[r * k + j] - m[r];              \
        FS_SIMD                                                                                  \
        for (ptrdiff_t i = 0; i < rows * k; ++i) out[i] = EXP(out[i]);                           \
        for (ptrdiff_t r = 0; r < rows; ++r) {                                                   \
            double sum = 0.0;                                                                    \
            for (ptrdiff_t j = 0; j < k; ++j) sum += out[r * k + j];                             \
            s[r] = sum;                                                                          \
        }                                                                                        \
    }                                                                                            \
    /* out[row] *= 1 / s[row] over the block. */                                                 \
    static inline void fs_block_normalise_##SUFFIX(T *out, const double *FS_RESTRICT s,          \
                                                   ptrdiff_t rows, ptrdiff_t k) {                \
        for (ptrdiff_t r = 0; r < rows; ++r) {                                                   \
            T c = (T)(1.0 / s[r]);                                                               \
            for (ptrdiff_t j = 0; j < k; ++j) out[r * k + j] *= c;                               \
        }                                                                                        \
    }

FS_DEFINE_ROWOPS(double, f64, exp)
FS_DEFINE_ROWOPS(float, f32, expf)

#endif
