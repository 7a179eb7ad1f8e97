/* Row passes for the Cython kernels, one loop each, written for the compiler to vectorise.
 *
 * Cython cannot emit `#pragma omp simd`, so the loops live here as static inline functions;
 * threads (prange) stay in Cython. Every function reads x[j] before writing out[j] at the same
 * index, so `out == x` (in place) is safe. Sums accumulate in double.
 *
 * exp: fs_vexp_f32/f64 below, branch-free arithmetic that vectorises in any omp simd loop on any
 * target (no libm call, whose vector versions exist only in glibc and only under -ffast-math,
 * which we never use: it turns on flush-to-zero for the whole process). Measured < 1 ulp over
 * the normal range (README, "Accuracy of exp"); results below the smallest normal flush to 0.
 */
#ifndef FASTSOFTMAX_ROWOPS_H
#define FASTSOFTMAX_ROWOPS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* exp(x) = 2^k exp(r), k = round(x / ln 2), r = x - k ln 2 in two steps (Cody-Waite: k ln2_hi
 * and x - k ln2_hi are exact). Adding MAGIC (1.5 * 2^mantissa bits) rounds x / ln 2 to an integer
 * in the low bits of z, with no float->int conversion; z << mantissa bits is then k in the
 * exponent field, and adding it to the bits of p = exp(r) in [0.7, 1.42] scales p exactly for
 * every x whose exp is normal (k = 128 / 1024 needs p < 1, which holds up to X_MAX).
 * exp(r) = 1 + r (1 + r q(r)), q minimax for the relative error on |r| <= 0.348 (Remez), the
 * last two steps fused multiply-adds: the final rounding, the rounding of r and r times the
 * error of the inner sum stay below 1 ulp (0.9 measured). Without FMA those roundings add up to
 * 1.1 ulp, so that build takes fdlibm's formula instead (r kept as exact hi - lo, one division).
 * Results below the smallest normal flush to 0, as Numba's vexp. */
#define FS_EXP_NAME "fastsoftmax vexp"

#if defined(__FMA__) || defined(__FP_FAST_FMA)
#define FS_HAS_FMA 1
#else
#define FS_HAS_FMA 0
#endif

static inline uint32_t fs_bits_f32(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}
static inline float fs_from_bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
static inline uint64_t fs_bits_f64(double x) {
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}
static inline double fs_from_bits_f64(uint64_t u) {
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
}

#define FS_EXP_F32_X_MIN (-0x1.5d589ep+6f) /* the least x with exp(x) >= FLT_MIN */
#define FS_EXP_F32_X_MAX 0x1.62e42ep+6f    /* the greatest x with exp(x) <= FLT_MAX */
#define FS_EXP_F64_X_MIN (-0x1.6232bdd7abcd2p+9)
#define FS_EXP_F64_X_MAX 0x1.62e42fefa39efp+9

/* Outside [X_MIN, X_MAX] the bits are garbage: 0 below, inf above, x if NaN. Integer masks, not
 * selects: GCC (-ftrapping-math) does not if-convert a select whose arm holds the arithmetic. */
static inline float fs_exp_fixup_f32(float x, float y) {
    uint32_t over = -(uint32_t)!(x <= FS_EXP_F32_X_MAX); /* also NaN */
    uint32_t nan = -(uint32_t)(x != x);
    uint32_t keep = -(uint32_t)(x >= FS_EXP_F32_X_MIN) & ~over;
    return fs_from_bits_f32((fs_bits_f32(y) & keep) |
                            (over & (0x7f800000u | (fs_bits_f32(x) & nan))));
}
/* The same from sign bits (a float64 compare's result widened to 64 bits does not vectorise on
 * SSE2): x - X_MIN < 0 below, X_MAX - x < 0 above (both exact in sign), and NaN when the bits
 * beyond the sign exceed inf's. */
static inline double fs_exp_fixup_f64(double x, double y) {
    const uint64_t inf = 0x7ff0000000000000u;
    uint64_t xb = fs_bits_f64(x);
    uint64_t nan = -((inf - (xb & ~(1ull << 63))) >> 63);
    uint64_t over = -(fs_bits_f64(FS_EXP_F64_X_MAX - x) >> 63) | nan;
    uint64_t keep = ((fs_bits_f64(x - FS_EXP_F64_X_MIN) >> 63) - 1) & ~over;
    return fs_from_bits_f64((fs_bits_f64(y) & keep) | (over & (inf | (xb & nan))));
}

#if FS_HAS_FMA
static inline float fs_vexp_f32(float x) {
    const float magic = 12582912.0f;
    float z = x * 1.44269502f + magic;
    float k = z - magic;
    float r = fmaf(k, -0.693359375f, x); /* 9 significant bits */
    r = fmaf(k, 2.12194440e-4f, r);
    /* degree 7: 2e-10 */
    float q = 0.000199078378f;
    q = q * r + 0.00139488198f;
    q = q * r + 0.00833328534f;
    q = q * r + 0.0416662358f;
    q = q * r + 0.166666672f;
    q = q * r + 0.5f;
    float p = fmaf(fmaf(q, r, 1.0f), r, 1.0f);
    float y = fs_from_bits_f32(fs_bits_f32(p) + (fs_bits_f32(z) << 23));
    return fs_exp_fixup_f32(x, y);
}

static inline double fs_vexp_f64(double x) {
    const double magic = 6755399441055744.0;
    double z = x * 1.4426950408889634 + magic;
    double k = z - magic;
    double r = fma(k, -6.93147180369123816490e-01, x); /* 21 significant bits */
    r = fma(k, -1.90821492927058770002e-10, r);
    /* degree 12: 2e-19 */
    double q = 2.082494297777896e-09;
    q = q * r + 2.5105148920219264e-08;
    q = q * r + 2.755754377225699e-07;
    q = q * r + 2.7557255646070907e-06;
    q = q * r + 2.4801587041125118e-05;
    q = q * r + 0.0001984126987454341;
    q = q * r + 0.001388888888900588;
    q = q * r + 0.008333333333326247;
    q = q * r + 0.041666666666666484;
    q = q * r + 0.1666666666666667;
    q = q * r + 0.5;
    double p = fma(fma(q, r, 1.0), r, 1.0);
    double y = fs_from_bits_f64(fs_bits_f64(p) + (fs_bits_f64(z) << 52));
    return fs_exp_fixup_f64(x, y);
}
#else
/* FreeBSD's e_expf.c: the same formula as fdlibm's below, a degree-2 P (2^-27.7). */
static inline float fs_vexp_f32(float x) {
    const float magic = 12582912.0f;
    float z = x * 1.44269502f + magic;
    float k = z - magic;
    float hi = x - k * 6.9314575195e-01f;
    float lo = k * 1.4286067653e-06f;
    float r = hi - lo;
    float t = r * r;
    float c = r - t * (1.6666625440e-1f + t * -2.7667332906e-3f);
    float p = 1.0f - ((lo - (r * c) / (2.0f - c)) - hi);
    float y = fs_from_bits_f32(fs_bits_f32(p) + (fs_bits_f32(z) << 23));
    return fs_exp_fixup_f32(x, y);
}

/* fdlibm's e_exp.c: exp(r) = 1 + r + r c / (2 - c), c = r - r^2 P(r^2), with r = hi - lo. */
static inline double fs_vexp_f64(double x) {
    const double magic = 6755399441055744.0;
    double z = x * 1.4426950408889634 + magic;
    double k = z - magic;
    double hi = x - k * 6.93147180369123816490e-01;
    double lo = k * 1.90821492927058770002e-10;
    double r = hi - lo;
    double t = r * r;
    double c = r - t * (1.66666666666666019037e-01 +
                        t * (-2.77777777770155933842e-03 +
                             t * (6.61375632143793436117e-05 +
                                  t * (-1.65339022054652515390e-06 +
                                       t * 4.13813679705723846039e-08))));
    double p = 1.0 - ((lo - (r * c) / (2.0 - c)) - hi);
    double y = fs_from_bits_f64(fs_bits_f64(p) + (fs_bits_f64(z) << 52));
    return fs_exp_fixup_f64(x, y);
}
#endif

#if defined(_OPENMP)
#define FS_PRAGMA(text) _Pragma(#text)
#define FS_SIMD FS_PRAGMA(omp simd)
#define FS_SIMD_SUM(v) FS_PRAGMA(omp simd reduction(+ : v))
#define FS_SIMD_MAX(v) FS_PRAGMA(omp simd reduction(max : v))
#define FS_SIMD_SUM_MAX(v, m) FS_PRAGMA(omp simd reduction(+ : v) reduction(max : m))
#else
#define FS_SIMD
#define FS_SIMD_SUM(v)
#define FS_SIMD_MAX(v)
#define FS_SIMD_SUM_MAX(v, m)
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

/* Rows per block of the narrow-row path (the Cython kernels' BLOCK), and the stride of its
 * transposed scratch. */
#define FS_BLOCK 64
/* Rows shorter than this take the transposed block path (fs_tblock_*), measured per dtype and
 * target, one thread, (1M, k): float32 gains 1.2-2x up to k = 15 with AVX-512, up to k = 11
 * with AVX2 (even at 12, slower from 14); float64 (half the lanes) 1.07-1.7x up to k = 7,
 * and is 1.4x slower at k = 8 and 10. */
#if defined(__AVX512F__)
#define FS_TRANSPOSED_F32 16
#else
#define FS_TRANSPOSED_F32 12
#endif
#define FS_TRANSPOSED_F64 8

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
    /* The same two, and the maximum of the next row, next (as fs_row_max), into *next_max: a  \
     * wide row's exp loop is compute-bound and the next row's maximum streams it from memory,  \
     * so together they overlap (10-15 % on (512, 32000) float32, one thread). next may be NULL \
     * (the last row), then *next_max is left alone. Same sums, bit for bit. */                  \
    static inline double fs_exp_sum_store_next_##SUFFIX(const T *x, T m, T *out, ptrdiff_t k,    \
                                                        const T *next, T *next_max) {            \
        if (next == NULL) return fs_exp_sum_store_##SUFFIX(x, m, out, k);                        \
        T m2 = next[0];                                                                          \
        FS_SIMD_MAX(m2)                                                                          \
        for (ptrdiff_t j = 0; j < k; ++j) {                                                      \
            out[j] = EXP(x[j] - m);                                                              \
            m2 = next[j] > m2 ? next[j] : m2;                                                    \
        }                                                                                        \
        *next_max = m2;                                                                          \
        double s = 0.0;                                                                          \
        FS_SIMD_SUM(s)                                                                           \
        for (ptrdiff_t j = 0; j < k; ++j) s += out[j];                                           \
        return s;                                                                                \
    }                                                                                            \
    static inline double fs_exp_sum_next_##SUFFIX(const T *x, T m, ptrdiff_t k, const T *next,   \
                                                  T *next_max) {                                 \
        if (next == NULL) return fs_exp_sum_##SUFFIX(x, m, k);                                   \
        /* m2 in double, as s: GCC 12 vectorises no omp simd loop reducing two types. */        \
        double s = 0.0, m2 = next[0];                                                            \
        FS_SIMD_SUM_MAX(s, m2)                                                                   \
        for (ptrdiff_t j = 0; j < k; ++j) {                                                      \
            s += EXP(x[j] - m);                                                                  \
            m2 = next[j] > m2 ? next[j] : m2;                                                    \
        }                                                                                        \
        *next_max = (T)m2;                                                                       \
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
    /* The transposed block path (softmax, log_softmax, logsumexp): the block is copied into     \
     * t[j * FS_BLOCK + r] (column j of row r) so that every pass runs over r, the rows as the   \
     * vector lanes: on (1M, 10) float32 the per-row loops above cost more than the exp itself,  \
     * and a per-row loop of 10 neither vectorises nor pipelines. Same operations per element in \
     * the same order as the row functions (max, x - m, exp, sum over j in double), so the same  \
     * results bit for bit. t must hold k * FS_BLOCK values; rows <= FS_BLOCK. Reading the      \
     * whole block into t first is what keeps out == x (in place) safe. The strided loads and    \
     * stores of the transposition cost per value what the row loops cost per row, so this only \
     * pays for short rows (FS_TRANSPOSED_*; float32 with AVX-512, k = 31: 1.7x slower). */      \
    static inline void fs_tblock_load_##SUFFIX(const T *x, T *FS_RESTRICT t, T *FS_RESTRICT m,  \
                                               ptrdiff_t rows, ptrdiff_t k) {                    \
        FS_SIMD                                                                                  \
        for (ptrdiff_t r = 0; r < rows; ++r) t[r] = m[r] = x[r * k];                             \
        for (ptrdiff_t j = 1; j < k; ++j) {                                                      \
            FS_SIMD                                                                              \
            for (ptrdiff_t r = 0; r < rows; ++r) {                                               \
                T v = x[r * k + j];                                                              \
                t[j * FS_BLOCK + r] = v;                                                         \
                m[r] = v > m[r] ? v : m[r];                                                      \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    /* s[r] = sum_j exp(t - m[r]); with store, the terms replace t. */                           \
    static inline void fs_tblock_exp_sum_##SUFFIX(T *FS_RESTRICT t, const T *FS_RESTRICT m,     \
                                                  double *FS_RESTRICT s, int store,              \
                                                  ptrdiff_t rows, ptrdiff_t k) {                 \
        FS_SIMD                                                                                  \
        for (ptrdiff_t r = 0; r < rows; ++r) s[r] = 0.0;                                         \
        for (ptrdiff_t j = 0; j < k; ++j) {                                                      \
            if (store) {                                                                         \
                FS_SIMD                                                                          \
                for (ptrdiff_t r = 0; r < rows; ++r) {                                           \
                    T e = EXP(t[j * FS_BLOCK + r] - m[r]);                                       \
                    t[j * FS_BLOCK + r] = e;                                                     \
                    s[r] += e;                                                                   \
                }                                                                                \
            } else {                                                                             \
                FS_SIMD                                                                          \
                for (ptrdiff_t r = 0; r < rows; ++r) s[r] += EXP(t[j * FS_BLOCK + r] - m[r]);    \
            }                                                                                    \
        }                                                                                        \
    }                                                                                            \
    /* out[r, j] = t[j, r] * (1 / s[r]); c: rows values of scratch. */                           \
    static inline void fs_tblock_store_scaled_##SUFFIX(const T *FS_RESTRICT t,                   \
                                                       const double *FS_RESTRICT s,              \
                                                       T *FS_RESTRICT c, T *out,                 \
                                                       ptrdiff_t rows, ptrdiff_t k) {            \
        FS_SIMD                                                                                  \
        for (ptrdiff_t r = 0; r < rows; ++r) c[r] = (T)(1.0 / s[r]);                             \
        for (ptrdiff_t j = 0; j < k; ++j) {                                                      \
            FS_SIMD                                                                              \
            for (ptrdiff_t r = 0; r < rows; ++r) out[r * k + j] = t[j * FS_BLOCK + r] * c[r];    \
        }                                                                                        \
    }                                                                                            \
    /* out[r, j] = (t[j, r] - m[r]) - l[r], l[r] = log(s[r]) (as fs_shift). */                   \
    static inline void fs_tblock_store_shifted_##SUFFIX(const T *FS_RESTRICT t,                  \
                                                        const T *FS_RESTRICT m,                  \
                                                        const double *FS_RESTRICT s,             \
                                                        T *FS_RESTRICT l, T *out,                \
                                                        ptrdiff_t rows, ptrdiff_t k) {           \
        for (ptrdiff_t r = 0; r < rows; ++r) l[r] = (T)log(s[r]);                                \
        for (ptrdiff_t j = 0; j < k; ++j) {                                                      \
            FS_SIMD                                                                              \
            for (ptrdiff_t r = 0; r < rows; ++r)                                                 \
                out[r * k + j] = (t[j * FS_BLOCK + r] - m[r]) - l[r];                            \
        }                                                                                        \
    }                                                                                         \
    /* out[row] *= 1 / s[row] over the block. */                                                 \
    static inline void fs_block_normalise_##SUFFIX(T *out, const double *FS_RESTRICT s,          \
                                                   ptrdiff_t rows, ptrdiff_t k) {                \
        for (ptrdiff_t r = 0; r < rows; ++r) {                                                   \
            T c = (T)(1.0 / s[r]);                                                               \
            for (ptrdiff_t j = 0; j < k; ++j) out[r * k + j] *= c;                               \
        }                                                                                        \
    }

FS_DEFINE_ROWOPS(double, f64, fs_vexp_f64)
FS_DEFINE_ROWOPS(float, f32, fs_vexp_f32)

#endif
