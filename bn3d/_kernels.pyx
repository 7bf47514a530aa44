# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, nonecheck=False
"""Numerical kernels of bn3d: batch statistics, normalisation and gradients.

This module is the only place in bn3d that does arithmetic on data. Its callers
(:mod:`bn3d.functional`) validate arguments; the kernels trust them.

Data layout
-----------
Every array is seen as ``(N, C, L)``: batch, channel and the flattened spatial
extent, with unit stride along ``L`` and any strides along ``N`` and ``C``.
The elements of one channel are cut into *blocks* of about ``BLOCK`` (2048)
elements: segments of at most ``BLOCK`` elements of one row ``(n, c, :)`` when
rows are long, or ``BLOCK // L`` whole consecutive rows when they are short.
The blocks of a channel are grouped, in order, into at most
``MAX_SUPERBLOCKS`` (64) *superblocks*. The gradient sums of short rows are
taken row by row in memory order instead: the batch is cut into at most 64
*batch groups* of consecutive n, each summed for every channel at once.

Passes over large arrays write their output with non-temporal stores, which
send whole cache lines to memory without first reading them into the cache:
a call streams when its arrays together are larger than the last-level cache
(``set_stream_threshold``), where cached stores would only evict its input.
The stores are the widest the CPU has (``store_width``): the elementwise passes
and the reduction of the statistics are built for AVX-512, AVX2 and baseline
x86-64, and the module picks one when it loads.

Numerics
--------
Statistics accumulate in double precision. Each block is reduced with the
corrected two-pass algorithm while it sits in L1 cache (its mean first, then
the centred sums ``sum(d**2) - sum(d)**2 / m`` with ``d = x - mean_block``), and
blocks are combined with the pairwise update of Chan, Golub and LeVeque: first
block by block within a superblock, then superblock by superblock, always in
index order. No sum ever subtracts two large uncentred quantities, so the
variance stays accurate when ``|mean|`` is far larger than the standard
deviation, and a constant channel has a mean equal to its value and a variance
of exactly zero.

The normalised output is ``y = ((x - mean_hi) - mean_lo) * scale + shift`` in
the data's precision, where ``mean_hi + mean_lo`` is the double mean split into
two values of the data type: the centring is nearly exact even for float32
data with a large mean, and a constant channel maps to exactly ``shift``.
Gradients of float64 data reduce in double like the statistics. For float32
data, the products ``g * (x - mean)`` and runs of 128 elements of a row are
summed in float and each run is added into double lanes: the error stays at
the level of float32 rounding of the data, and the channel sums are still
double. grad_input is computed in the data's precision from per-channel
constants in double. Streamed or not, an output holds the same bits.

Determinism
-----------
The blocks, the superblocks, the batch groups and the order in which they are
combined depend on the shape alone, never on the number of threads or on which
thread does what, so every result is bitwise identical whatever the team size.
The code is built without ``-ffast-math`` and with ``-ffp-contract=off``: NaN
and inf propagate (a NaN anywhere in a channel's batch makes that channel's
statistics NaN) and no fused multiply-add changes the rounding from one build
to another.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport NAN, isfinite, sqrt
from libc.stdlib cimport calloc, free, malloc

cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define BN3D_OPENMP 1
    static int bn3d_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define BN3D_OPENMP 0
    static int bn3d_max_threads(void) { return 1; }
    #endif
    #ifndef BN3D_BUILD_FLAGS
    #define BN3D_BUILD_FLAGS ""
    #endif
    #ifdef __VERSION__
    #define BN3D_COMPILER __VERSION__
    #else
    #define BN3D_COMPILER "unknown"
    #endif
    """
    const int BN3D_OPENMP
    const char *BN3D_BUILD_FLAGS
    const char *BN3D_COMPILER
    int bn3d_max_threads() noexcept nogil


# The block loops in C. The reductions use GCC/clang vector extensions: lanes (32
# for the moments, 16 for the gradient sums of float64 data; those of float32 data
# are described at their kernel) accumulate elements i with i % lanes == lane, and
# the lanes are added in a fixed tree. The order of every
# operation is fixed by this source, not by the compiler or the instruction set (no
# reassociation, no fused multiply-add), so the results are bitwise identical on
# SSE2, AVX2 or AVX-512; on x86-64 a version for x86-64-v4 (AVX-512) or x86-64-v3
# (AVX2) is chosen at load time. The elementwise loops are plain loops, vectorised
# by the compiler in each version.
cdef extern from *:
    """
    #include <math.h>
    #include <string.h>
    #if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
    #define BN3D_CLONES \
        __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
    #else
    #define BN3D_CLONES
    #endif
    typedef double bn3d_v4d __attribute__((vector_size(32)));
    typedef float bn3d_v4f __attribute__((vector_size(16)));
    typedef float bn3d_v8f __attribute__((vector_size(32)));
    #define BN3D_INLINE static inline __attribute__((always_inline))

    BN3D_INLINE bn3d_v4d bn3d_load_double(const double *p) {
        bn3d_v4d v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    /* The 16 lanes of four accumulators, added in a fixed tree. */
    BN3D_INLINE double bn3d_lanes_sum(bn3d_v4d a, bn3d_v4d b, bn3d_v4d c, bn3d_v4d d) {
        bn3d_v4d v = (a + b) + (c + d);
        return (v[0] + v[1]) + (v[2] + v[3]);
    }

    /* Non-temporal ("streaming") stores write whole cache lines to memory
       without first reading them into the cache. A row map that streams computes
       its aligned middle in vectors of W bytes, each lane the same IEEE
       operations as the scalar loop, so streaming never changes a bit. W is the
       widest store the CPU has: a 64-byte store fills a cache line at once.
       Measured on a 2-core AMD EPYC (Zen 4), 2 threads, 16- against 64-byte
       stores: backward of (2,64,16,56,56) 2.95 against 2.74 ms, of
       (1,3,64,128,128) 1.51 against 1.32 ms. */
    #define BN3D_CAT(a, b) BN3D_CAT_(a, b)
    #define BN3D_CAT_(a, b) a##b
    /* The vector of W bytes of T, its unaligned load and its streaming store. */
    #define BN3D_VEC(T, W) BN3D_CAT(BN3D_CAT(bn3d_vec_, T), BN3D_CAT(_, W))
    #define BN3D_VLOAD(T, W) BN3D_CAT(BN3D_CAT(bn3d_vload_, T), BN3D_CAT(_, W))
    #define BN3D_STREAM(T, W) BN3D_CAT(BN3D_CAT(bn3d_stream_, T), BN3D_CAT(_, W))
    #define BN3D_VECTORS(T, W)                                                 \
        typedef T BN3D_VEC(T, W) __attribute__((vector_size(W)));              \
        BN3D_INLINE BN3D_VEC(T, W) BN3D_VLOAD(T, W)(const T *p) {              \
            BN3D_VEC(T, W) v;                                                  \
            memcpy(&v, p, sizeof v);                                           \
            return v;                                                          \
        }
    BN3D_VECTORS(float, 16)
    BN3D_VECTORS(float, 32)
    BN3D_VECTORS(float, 64)
    BN3D_VECTORS(double, 16)
    BN3D_VECTORS(double, 32)
    BN3D_VECTORS(double, 64)
    #if defined(__SSE2__)
    #include <immintrin.h>
    #define BN3D_STREAMING 1
    BN3D_INLINE void bn3d_stream_float_16(float *p, bn3d_vec_float_16 v) {
        _mm_stream_ps(p, (__m128)v);
    }
    BN3D_INLINE void bn3d_stream_double_16(double *p, bn3d_vec_double_16 v) {
        _mm_stream_pd(p, (__m128d)v);
    }
    /* Orders the streamed stores before whatever the thread does next. */
    BN3D_INLINE void bn3d_stream_fence(void) { _mm_sfence(); }
    #else
    #define BN3D_STREAMING 0
    BN3D_INLINE void bn3d_stream_float_16(float *p, bn3d_vec_float_16 v) {
        memcpy(p, &v, sizeof v);
    }
    BN3D_INLINE void bn3d_stream_double_16(double *p, bn3d_vec_double_16 v) {
        memcpy(p, &v, sizeof v);
    }
    BN3D_INLINE void bn3d_stream_fence(void) {}
    #endif
    /* How many of the `size` elements of type T at p precede the first
       `width`-byte boundary (all of them when p is not aligned to T). */
    BN3D_INLINE Py_ssize_t bn3d_head(const void *p, Py_ssize_t size, size_t item,
                                     size_t width) {
        uintptr_t address = (uintptr_t)p;
        Py_ssize_t head;
        if (address % item != 0) return size;
        head = (Py_ssize_t)((width - address % width) % width / item);
        return head < size ? head : size;
    }

    /* The elementwise maps and the moments exist in three versions on x86-64
       with GCC 12 or later: for x86-64-v4 (AVX-512, 64-byte stores), x86-64-v3
       (AVX2, 32-byte stores) and baseline x86-64 (16-byte stores), the best one
       chosen when the module loads; elsewhere in one version with 16-byte
       vectors. */
    #if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
    #define BN3D_TARGET_AVX512 __attribute__((target("arch=x86-64-v4")))
    #define BN3D_TARGET_AVX2 __attribute__((target("arch=x86-64-v3")))
    #define BN3D_WIDE_INLINE(TARGET) static inline __attribute__((always_inline, target(TARGET)))
    BN3D_WIDE_INLINE("avx") void bn3d_stream_float_32(float *p, bn3d_vec_float_32 v) {
        _mm256_stream_ps(p, (__m256)v);
    }
    BN3D_WIDE_INLINE("avx") void bn3d_stream_double_32(double *p, bn3d_vec_double_32 v) {
        _mm256_stream_pd(p, (__m256d)v);
    }
    BN3D_WIDE_INLINE("avx512f") void bn3d_stream_float_64(float *p, bn3d_vec_float_64 v) {
        _mm512_stream_ps(p, (__m512)v);
    }
    BN3D_WIDE_INLINE("avx512f") void bn3d_stream_double_64(double *p, bn3d_vec_double_64 v) {
        _mm512_stream_pd(p, (__m512d)v);
    }
    /* 64 on x86-64-v4, 32 on x86-64-v3, else 16: the widest store of this CPU,
       and the width whose version of the maps and the moments runs (the same
       unless set_store_width lowers it). */
    static int bn3d_cpu_store_width = 16, bn3d_store_width = 16;
    __attribute__((constructor)) static void bn3d_find_store_width(void) {
        __builtin_cpu_init();
        if (__builtin_cpu_supports("x86-64-v4")) bn3d_cpu_store_width = 64;
        else if (__builtin_cpu_supports("x86-64-v3")) bn3d_cpu_store_width = 32;
        bn3d_store_width = bn3d_cpu_store_width;
    }
    /* DEFINE(NAME_w, T, W, TARGET) for each width, and NAME PARAMS calling the
       version of this CPU with ARGS. */
    #define BN3D_BY_STORE_WIDTH(DEFINE, NAME, T, PARAMS, ARGS)                  \
        DEFINE(NAME##_64, T, 64, BN3D_TARGET_AVX512)                            \
        DEFINE(NAME##_32, T, 32, BN3D_TARGET_AVX2)                              \
        DEFINE(NAME##_16, T, 16, )                                             \
        static void NAME PARAMS {                                              \
            if (bn3d_store_width == 64) NAME##_64 ARGS;                        \
            else if (bn3d_store_width == 32) NAME##_32 ARGS;                   \
            else NAME##_16 ARGS;                                               \
        }
    #else
    static int bn3d_cpu_store_width = 16, bn3d_store_width = 16;
    #define BN3D_BY_STORE_WIDTH(DEFINE, NAME, T, PARAMS, ARGS) DEFINE(NAME, T, 16, )
    #endif

    /* out[i] = EXPR for i < size, EXPR and VEXPR written in terms of i; where
       `stream`, the W-byte-aligned middle is VEXPR (the same values, W bytes
       at a time) stored with non-temporal stores. */
    #define BN3D_MAP_ROW(T, W, out, size, stream, EXPR, VEXPR)                   \
        do {                                                                   \
            const Py_ssize_t lanes_ = (W) / (Py_ssize_t)sizeof(T);             \
            Py_ssize_t i = 0;                                                  \
            Py_ssize_t head_ = (stream) ? bn3d_head(out, size, sizeof(T), W) : (size); \
            for (; i < head_; i++) (out)[i] = (EXPR);                          \
            for (; i + lanes_ <= (size); i += lanes_)                          \
                BN3D_STREAM(T, W)((out) + i, (VEXPR));                         \
            for (; i < (size); i++) (out)[i] = (EXPR);                         \
        } while (0)

    /* The two elementwise maps over one row of `size` elements, in T:
       y = ((x - mean_hi) - mean_lo) * scale + shift, and
       out = ((g - offset) - (x - mean_hi) * coefficient) * scale (the caller
       folds the low part of the mean into offset). */
    #define BN3D_AFFINE_ROW(T, W, x_row, y_row, size, stream, mean_hi, mean_lo, \
                            scale, shift)                                      \
        do {                                                                   \
            const T *xr_ = (x_row);                                            \
            T *yr_ = (y_row);                                                  \
            BN3D_MAP_ROW(T, W, yr_, size, stream,                              \
                         ((xr_[i] - (mean_hi)) - (mean_lo)) * (scale) + (shift), \
                         ((BN3D_VLOAD(T, W)(xr_ + i) - (mean_hi)) - (mean_lo)) \
                         * (scale) + (shift));                                 \
        } while (0)
    #define BN3D_GRAD_INPUT_ROW(T, W, g_row, x_row, out_row, size, stream,      \
                                mean_hi, offset, coefficient, scale)           \
        do {                                                                   \
            const T *gr_ = (g_row), *xr_ = (x_row);                            \
            T *outr_ = (out_row);                                              \
            BN3D_MAP_ROW(T, W, outr_, size, stream,                            \
                         ((gr_[i] - (offset)) - (xr_[i] - (mean_hi)) * (coefficient)) \
                         * (scale),                                            \
                         ((BN3D_VLOAD(T, W)(gr_ + i) - (offset))               \
                          - (BN3D_VLOAD(T, W)(xr_ + i) - (mean_hi)) * (coefficient)) \
                         * (scale));                                           \
        } while (0)

    /* Rows first..last-1 of (N, C, L) arrays taken in (n, c) order: the
       statements run with n and c set to each row's batch and channel. */
    #define BN3D_FOR_ROWS(first, last, channels, ...)                          \
        do {                                                                   \
            Py_ssize_t r_, n = (first) / (channels), c = (first) % (channels); \
            for (r_ = (first); r_ < (last); r_++) {                            \
                __VA_ARGS__                                                    \
                if (++c == (channels)) {                                       \
                    c = 0;                                                     \
                    n++;                                                       \
                }                                                              \
            }                                                                  \
        } while (0)

    /* A block is `rows` runs of `size` elements, run r starting at p + r * stride. */
    #define BN3D_AFFINE_PARAMS(T)                                                \
        (const T *x, Py_ssize_t x_stride, T *y, Py_ssize_t y_stride,            \
         Py_ssize_t rows, Py_ssize_t size, T mean_hi, T mean_lo, T scale,       \
         T shift, int stream)
    #define BN3D_AFFINE_ARGS \
        (x, x_stride, y, y_stride, rows, size, mean_hi, mean_lo, scale, shift, stream)
    #define BN3D_AFFINE(NAME, T, W, TARGET)                                      \
    TARGET static void NAME BN3D_AFFINE_PARAMS(T) {                             \
        Py_ssize_t r;                                                          \
        for (r = 0; r < rows; r++)                                             \
            BN3D_AFFINE_ROW(T, W, x + r * x_stride, y + r * y_stride, size,    \
                            stream, mean_hi, mean_lo, scale, shift);           \
    }

    #define BN3D_GRAD_INPUT_PARAMS(T)                                            \
        (const T *g, Py_ssize_t g_stride, const T *x, Py_ssize_t x_stride,      \
         T *out, Py_ssize_t out_stride, Py_ssize_t rows, Py_ssize_t size,       \
         T mean_hi, T offset, T coefficient, T scale, int stream)
    #define BN3D_GRAD_INPUT_ARGS                                                 \
        (g, g_stride, x, x_stride, out, out_stride, rows, size, mean_hi, offset, \
         coefficient, scale, stream)
    #define BN3D_GRAD_INPUT(NAME, T, W, TARGET)                                  \
    TARGET static void NAME BN3D_GRAD_INPUT_PARAMS(T) {                         \
        Py_ssize_t r;                                                          \
        for (r = 0; r < rows; r++)                                             \
            BN3D_GRAD_INPUT_ROW(T, W, g + r * g_stride, x + r * x_stride,      \
                                out + r * out_stride, size, stream, mean_hi,   \
                                offset, coefficient, scale);                   \
    }

    /* The affine map of whole rows first..last-1 taken in (n, c) order, with
       per-channel constants in double: row by row the same arithmetic as
       BN3D_AFFINE. */
    #define BN3D_AFFINE_ROWS_PARAMS(T)                                           \
        (const T *x, Py_ssize_t xn, Py_ssize_t xc, T *y, Py_ssize_t yn,         \
         Py_ssize_t yc, Py_ssize_t channels, Py_ssize_t size, Py_ssize_t first, \
         Py_ssize_t last, const double *mean, const double *scale,              \
         const double *shift, int stream)
    #define BN3D_AFFINE_ROWS_ARGS                                                \
        (x, xn, xc, y, yn, yc, channels, size, first, last, mean, scale, shift, stream)
    #define BN3D_AFFINE_ROWS(NAME, T, W, TARGET)                                 \
    TARGET static void NAME BN3D_AFFINE_ROWS_PARAMS(T) {                        \
        BN3D_FOR_ROWS(first, last, channels,                                   \
            const T mean_hi = (T)mean[c];                                      \
            const T mean_lo = isfinite(mean_hi) ? (T)(mean[c] - (double)mean_hi) : 0; \
            const T a = (T)scale[c], b = (T)shift[c];                          \
            BN3D_AFFINE_ROW(T, W, x + n * xn + c * xc, y + n * yn + c * yc,    \
                            size, stream, mean_hi, mean_lo, a, b);             \
        );                                                                     \
    }

    /* grad_input of whole rows first..last-1 taken in (n, c) order, with the
       per-channel constants of BN3D_GRAD_INPUT in k[4 * c] (mean_hi, offset,
       coefficient, scale): row by row the same arithmetic. */
    #define BN3D_GRAD_INPUT_ROWS_PARAMS(T)                                       \
        (const T *g, Py_ssize_t gn, Py_ssize_t gc, const T *x, Py_ssize_t xn,   \
         Py_ssize_t xc, T *out, Py_ssize_t on, Py_ssize_t oc,                   \
         Py_ssize_t channels, Py_ssize_t size, Py_ssize_t first,                \
         Py_ssize_t last, const T *k, int stream)
    #define BN3D_GRAD_INPUT_ROWS_ARGS                                            \
        (g, gn, gc, x, xn, xc, out, on, oc, channels, size, first, last, k, stream)
    #define BN3D_GRAD_INPUT_ROWS(NAME, T, W, TARGET)                             \
    TARGET static void NAME BN3D_GRAD_INPUT_ROWS_PARAMS(T) {                    \
        BN3D_FOR_ROWS(first, last, channels,                                   \
            const T mean_hi = k[4 * c], offset = k[4 * c + 1];                 \
            const T coefficient = k[4 * c + 2], scale = k[4 * c + 3];          \
            BN3D_GRAD_INPUT_ROW(T, W, g + n * gn + c * gc, x + n * xn + c * xc, \
                                out + n * on + c * oc, size, stream, mean_hi,  \
                                offset, coefficient, scale);                   \
        );                                                                     \
    }

    #define BN3D_MAPS(KIND, NAME, T) \
        BN3D_BY_STORE_WIDTH(BN3D_##KIND, NAME, T, BN3D_##KIND##_PARAMS(T), BN3D_##KIND##_ARGS)
    BN3D_MAPS(AFFINE, bn3d_affine_float, float)
    BN3D_MAPS(AFFINE, bn3d_affine_double, double)
    BN3D_MAPS(AFFINE_ROWS, bn3d_affine_rows_float, float)
    BN3D_MAPS(AFFINE_ROWS, bn3d_affine_rows_double, double)
    BN3D_MAPS(GRAD_INPUT, bn3d_grad_input_float, float)
    BN3D_MAPS(GRAD_INPUT, bn3d_grad_input_double, double)
    BN3D_MAPS(GRAD_INPUT_ROWS, bn3d_grad_input_rows_float, float)
    BN3D_MAPS(GRAD_INPUT_ROWS, bn3d_grad_input_rows_double, double)

    /* Corrected two-pass moments of a block: the mean by a first pass, then
       sum(d) and sum(d*d) with d = x - mean; returns the mean corrected by
       sum(d)/n and m2 = sum(d*d) - sum(d)**2/n (clamped at 0, NaN kept).

       32 lanes accumulate elements i with i % 32 == lane, in vectors of W / 8
       doubles at W = 64 (four AVX-512 registers) and of 4 doubles otherwise
       (eight AVX2 registers, or pairs of SSE2 ones): the same operations lane
       by lane, and the lanes added in one fixed tree (bn3d_lanes_tree). */
    #define BN3D_MOMENT_LANES 32
    typedef double bn3d_v8d __attribute__((vector_size(64)));
    #define BN3D_DVEC_64 bn3d_v8d
    #define BN3D_DVEC_32 bn3d_v4d
    #define BN3D_DVEC_16 bn3d_v4d
    #define BN3D_DVEC(W) BN3D_CAT(BN3D_DVEC_, W)
    /* The W / 8 (at least 4) elements at p, as doubles. */
    #define BN3D_WIDEN(T, W) BN3D_CAT(BN3D_CAT(bn3d_widen_, T), BN3D_CAT(_, W))
    #define BN3D_WIDENERS(W, NARROW)                                           \
        BN3D_INLINE BN3D_DVEC(W) BN3D_WIDEN(float, W)(const float *p) {        \
            NARROW v;                                                          \
            memcpy(&v, p, sizeof v);                                           \
            return __builtin_convertvector(v, BN3D_DVEC(W));                   \
        }                                                                      \
        BN3D_INLINE BN3D_DVEC(W) BN3D_WIDEN(double, W)(const double *p) {      \
            BN3D_DVEC(W) v;                                                    \
            memcpy(&v, p, sizeof v);                                           \
            return v;                                                          \
        }
    BN3D_WIDENERS(64, bn3d_v8f)
    BN3D_WIDENERS(32, bn3d_v4f)
    BN3D_WIDENERS(16, bn3d_v4f)
    /* The 32 lanes added in a fixed tree: lanes l, l + 8, l + 16 and l + 24
       first, then the 8 results pairwise. */
    BN3D_INLINE double bn3d_lanes_tree(const double *lanes) {
        double v[8];
        int l;
        for (l = 0; l < 8; l++)
            v[l] = (lanes[l] + lanes[l + 8]) + (lanes[l + 16] + lanes[l + 24]);
        return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
    }
    #define BN3D_MOMENTS_PARAMS(T)                                               \
        (const T *x, Py_ssize_t stride, Py_ssize_t rows, Py_ssize_t size,       \
         double *mean_out, double *m2_out)
    #define BN3D_MOMENTS_ARGS (x, stride, rows, size, mean_out, m2_out)
    #define BN3D_MOMENTS(NAME, T, W, TARGET)                                     \
    TARGET static void NAME BN3D_MOMENTS_PARAMS(T) {                            \
        enum { WIDTH = sizeof(BN3D_DVEC(W)) / sizeof(double),                  \
               K = BN3D_MOMENT_LANES / WIDTH };                                \
        BN3D_DVEC(W) s[K], q[K], d, c;                                         \
        double lanes[BN3D_MOMENT_LANES];                                       \
        Py_ssize_t r, i, full = size - size % BN3D_MOMENT_LANES;               \
        int k;                                                                 \
        double n = (double)rows * (double)size;                                \
        double tail = 0, mean, centred, squares, e, m2;                        \
        const T *xr;                                                           \
        for (k = 0; k < K; k++) s[k] = q[k] = (BN3D_DVEC(W)){0};               \
        for (r = 0; r < rows; r++) {                                           \
            xr = x + r * stride;                                               \
            for (i = 0; i < full; i += BN3D_MOMENT_LANES)                      \
                for (k = 0; k < K; k++)                                        \
                    s[k] += BN3D_WIDEN(T, W)(xr + i + k * WIDTH);              \
            for (i = full; i < size; i++) tail += xr[i];                       \
        }                                                                      \
        memcpy(lanes, s, sizeof lanes);                                        \
        mean = (bn3d_lanes_tree(lanes) + tail) / n;                            \
        c = mean - (BN3D_DVEC(W)){0};                                          \
        for (k = 0; k < K; k++) s[k] = (BN3D_DVEC(W)){0};                      \
        centred = squares = 0;                                                 \
        for (r = 0; r < rows; r++) {                                           \
            xr = x + r * stride;                                               \
            for (i = 0; i < full; i += BN3D_MOMENT_LANES)                      \
                for (k = 0; k < K; k++) {                                      \
                    d = BN3D_WIDEN(T, W)(xr + i + k * WIDTH) - c;              \
                    s[k] += d;                                                 \
                    q[k] += d * d;                                             \
                }                                                              \
            for (i = full; i < size; i++) {                                    \
                e = xr[i] - mean;                                              \
                centred += e;                                                  \
                squares += e * e;                                              \
            }                                                                  \
        }                                                                      \
        memcpy(lanes, s, sizeof lanes);                                        \
        centred += bn3d_lanes_tree(lanes);                                     \
        memcpy(lanes, q, sizeof lanes);                                        \
        squares += bn3d_lanes_tree(lanes);                                     \
        m2 = squares - centred * centred / n;                                  \
        /* An infinite mean (an inf in the block) stays infinite, as torch's: */ \
        /* the correction from x - inf would make it NaN. */                    \
        *mean_out = isfinite(mean) ? mean + centred / n : mean;                \
        *m2_out = isfinite(mean) ? (m2 < 0 ? 0 : m2) : NAN;                    \
    }
    BN3D_BY_STORE_WIDTH(BN3D_MOMENTS, bn3d_moments_float, float,
                        BN3D_MOMENTS_PARAMS(float), BN3D_MOMENTS_ARGS)
    BN3D_BY_STORE_WIDTH(BN3D_MOMENTS, bn3d_moments_double, double,
                        BN3D_MOMENTS_PARAMS(double), BN3D_MOMENTS_ARGS)

    /* Gradient sums: sum(g) and sum(g * (x - mean)) of one run of `size`
       elements (a segment of a long row, or a whole short row).

       float64 data: in double, in the 16-lane order above. */
    BN3D_INLINE void bn3d_gradient_run_double(const double *g, const double *x,
                                              Py_ssize_t size, double mean,
                                              double *sum_out, double *dot_out) {
        bn3d_v4d s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
        bn3d_v4d p0 = {0}, p1 = {0}, p2 = {0}, p3 = {0};
        bn3d_v4d g0, g1, g2, g3, c = mean - (bn3d_v4d){0};
        Py_ssize_t i, full = size - size % 16;
        double sum = 0, dot = 0;
        for (i = 0; i < full; i += 16) {
            g0 = bn3d_load_double(g + i);
            g1 = bn3d_load_double(g + i + 4);
            g2 = bn3d_load_double(g + i + 8);
            g3 = bn3d_load_double(g + i + 12);
            s0 += g0;
            s1 += g1;
            s2 += g2;
            s3 += g3;
            p0 += g0 * (bn3d_load_double(x + i) - c);
            p1 += g1 * (bn3d_load_double(x + i + 4) - c);
            p2 += g2 * (bn3d_load_double(x + i + 8) - c);
            p3 += g3 * (bn3d_load_double(x + i + 12) - c);
        }
        for (i = full; i < size; i++) {
            sum += g[i];
            dot += g[i] * (x[i] - mean);
        }
        *sum_out = sum + bn3d_lanes_sum(s0, s1, s2, s3);
        *dot_out = dot + bn3d_lanes_sum(p0, p1, p2, p3);
    }

    /* float data: the products g * (x - mean_hi) and runs of 8 vector steps
       (128 elements) are summed in float, in two accumulators of 8 lanes that
       are added when the run ends and flushed into 8 double lanes (added in a
       fixed tree at the end); the low part of the mean enters as
       - mean_lo * sum(g), in double. */
    #define BN3D_RUN 128
    BN3D_INLINE bn3d_v8f bn3d_load8(const float *p) {
        bn3d_v8f v;
        memcpy(&v, p, sizeof v);
        return v;
    }
    /* Add the 8 float lanes of run into the double lanes low (0-3) and high (4-7). */
    BN3D_INLINE void bn3d_flush(bn3d_v8f run, bn3d_v4d *low, bn3d_v4d *high) {
        bn3d_v4f half;
        memcpy(&half, &run, sizeof half);
        *low += __builtin_convertvector(half, bn3d_v4d);
        memcpy(&half, (const char *)&run + sizeof half, sizeof half);
        *high += __builtin_convertvector(half, bn3d_v4d);
    }
    BN3D_INLINE void bn3d_gradient_run_float(const float *g, const float *x,
                                             Py_ssize_t size, double mean,
                                             double *sum_out, double *dot_out) {
        const float mean_hi = (float)mean;
        const double mean_lo = isfinite(mean_hi) ? mean - (double)mean_hi : 0.0;
        bn3d_v4d s_lo = {0}, s_hi = {0}, p_lo = {0}, p_hi = {0}, lanes;
        bn3d_v8f sum_a = {0}, sum_b = {0}, dot_a = {0}, dot_b = {0}, g_a, g_b;
        Py_ssize_t i, in_run = 0, full = size - size % 16;
        double sum = 0, dot = 0;
        for (i = 0; i < full; i += 16) {
            g_a = bn3d_load8(g + i);
            g_b = bn3d_load8(g + i + 8);
            sum_a += g_a;
            sum_b += g_b;
            dot_a += g_a * (bn3d_load8(x + i) - mean_hi);
            dot_b += g_b * (bn3d_load8(x + i + 8) - mean_hi);
            in_run += 16;
            if (in_run == BN3D_RUN) {
                bn3d_flush(sum_a + sum_b, &s_lo, &s_hi);
                bn3d_flush(dot_a + dot_b, &p_lo, &p_hi);
                sum_a = sum_b = dot_a = dot_b = (bn3d_v8f){0};
                in_run = 0;
            }
        }
        if (in_run > 0) {
            bn3d_flush(sum_a + sum_b, &s_lo, &s_hi);
            bn3d_flush(dot_a + dot_b, &p_lo, &p_hi);
        }
        for (i = full; i < size; i++) {
            sum += g[i];
            dot += (double)(g[i] * (x[i] - mean_hi));
        }
        lanes = s_lo + s_hi;
        sum += (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
        lanes = p_lo + p_hi;
        dot += (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
        *sum_out = sum;
        *dot_out = dot - mean_lo * sum;
    }

    /* The gradient sums of one segment. */
    #define BN3D_GRADIENT_SUMS(NAME, T)                                          \
    BN3D_CLONES static void NAME(const T *g, const T *x, Py_ssize_t size,       \
                                 double mean, double *sum, double *dot) {       \
        bn3d_gradient_run_##T(g, x, size, mean, sum, dot);                     \
    }

    /* Whole rows n = first..last-1 of every channel of (N, C, L) arrays, in
       memory order: the sums of row (n, c) are added to sums[c] and dots[c]
       (in n order for each channel). */
    #define BN3D_GRADIENT_ROWS(NAME, T)                                          \
    BN3D_CLONES static void NAME(const T *g, Py_ssize_t gn, Py_ssize_t gc,      \
                                 const T *x, Py_ssize_t xn, Py_ssize_t xc,      \
                                 Py_ssize_t channels, Py_ssize_t size,          \
                                 Py_ssize_t first, Py_ssize_t last,             \
                                 const double *mean, double *sums,              \
                                 double *dots) {                                \
        Py_ssize_t n, c;                                                       \
        double sum, dot;                                                       \
        for (n = first; n < last; n++)                                         \
            for (c = 0; c < channels; c++) {                                   \
                bn3d_gradient_run_##T(g + n * gn + c * gc, x + n * xn + c * xc, \
                                      size, mean[c], &sum, &dot);              \
                sums[c] += sum;                                                \
                dots[c] += dot;                                                \
            }                                                                  \
    }

    BN3D_GRADIENT_SUMS(bn3d_gradient_sums_float, float)
    BN3D_GRADIENT_SUMS(bn3d_gradient_sums_double, double)
    BN3D_GRADIENT_ROWS(bn3d_gradient_rows_float, float)
    BN3D_GRADIENT_ROWS(bn3d_gradient_rows_double, double)
    """
    const int BN3D_STREAMING
    int bn3d_cpu_store_width
    int bn3d_store_width
    void bn3d_stream_fence() noexcept nogil
    void bn3d_affine_float(const float *x, Py_ssize_t x_stride, float *y, Py_ssize_t y_stride,
                           Py_ssize_t rows, Py_ssize_t size, float mean_hi, float mean_lo,
                           float scale, float shift, int stream) noexcept nogil
    void bn3d_affine_double(const double *x, Py_ssize_t x_stride, double *y, Py_ssize_t y_stride,
                            Py_ssize_t rows, Py_ssize_t size, double mean_hi, double mean_lo,
                            double scale, double shift, int stream) noexcept nogil
    void bn3d_affine_rows_float(const float *x, Py_ssize_t xn, Py_ssize_t xc, float *y,
                                Py_ssize_t yn, Py_ssize_t yc, Py_ssize_t channels,
                                Py_ssize_t size, Py_ssize_t first, Py_ssize_t last,
                                const double *mean, const double *scale,
                                const double *shift, int stream) noexcept nogil
    void bn3d_affine_rows_double(const double *x, Py_ssize_t xn, Py_ssize_t xc, double *y,
                                 Py_ssize_t yn, Py_ssize_t yc, Py_ssize_t channels,
                                 Py_ssize_t size, Py_ssize_t first, Py_ssize_t last,
                                 const double *mean, const double *scale,
                                 const double *shift, int stream) noexcept nogil
    void bn3d_grad_input_float(const float *g, Py_ssize_t g_stride, const float *x,
                               Py_ssize_t x_stride, float *out, Py_ssize_t out_stride,
                               Py_ssize_t rows, Py_ssize_t size, float mean_hi, float offset,
                               float coefficient, float scale, int stream) noexcept nogil
    void bn3d_grad_input_double(const double *g, Py_ssize_t g_stride, const double *x,
                                Py_ssize_t x_stride, double *out, Py_ssize_t out_stride,
                                Py_ssize_t rows, Py_ssize_t size, double mean_hi,
                                double offset, double coefficient, double scale,
                                int stream) noexcept nogil
    void bn3d_moments_float(const float *x, Py_ssize_t stride, Py_ssize_t rows, Py_ssize_t size,
                            double *mean, double *m2) noexcept nogil
    void bn3d_moments_double(const double *x, Py_ssize_t stride, Py_ssize_t rows,
                             Py_ssize_t size, double *mean, double *m2) noexcept nogil
    void bn3d_gradient_sums_float(const float *g, const float *x, Py_ssize_t size,
                                  double mean, double *sum, double *dot) noexcept nogil
    void bn3d_gradient_sums_double(const double *g, const double *x, Py_ssize_t size,
                                   double mean, double *sum, double *dot) noexcept nogil
    void bn3d_gradient_rows_float(const float *g, Py_ssize_t gn, Py_ssize_t gc,
                                  const float *x, Py_ssize_t xn, Py_ssize_t xc,
                                  Py_ssize_t channels, Py_ssize_t size,
                                  Py_ssize_t first, Py_ssize_t last, const double *mean,
                                  double *sums, double *dots) noexcept nogil
    void bn3d_gradient_rows_double(const double *g, Py_ssize_t gn, Py_ssize_t gc,
                                   const double *x, Py_ssize_t xn, Py_ssize_t xc,
                                   Py_ssize_t channels, Py_ssize_t size,
                                   Py_ssize_t first, Py_ssize_t last, const double *mean,
                                   double *sums, double *dots) noexcept nogil
    void bn3d_grad_input_rows_float(const float *g, Py_ssize_t gn, Py_ssize_t gc,
                                    const float *x, Py_ssize_t xn, Py_ssize_t xc,
                                    float *out, Py_ssize_t on, Py_ssize_t oc,
                                    Py_ssize_t channels, Py_ssize_t size,
                                    Py_ssize_t first, Py_ssize_t last, const float *k,
                                    int stream) noexcept nogil
    void bn3d_grad_input_rows_double(const double *g, Py_ssize_t gn, Py_ssize_t gc,
                                     const double *x, Py_ssize_t xn, Py_ssize_t xc,
                                     double *out, Py_ssize_t on, Py_ssize_t oc,
                                     Py_ssize_t channels, Py_ssize_t size,
                                     Py_ssize_t first, Py_ssize_t last, const double *k,
                                     int stream) noexcept nogil

# Output passes of calls whose arrays hold more than this many bytes in all use
# non-temporal stores (set from the last-level cache size by bn3d._cache).
cdef Py_ssize_t stream_above = 32 * 1024 * 1024

cdef enum:
    BLOCK = 2048
    MAX_SUPERBLOCKS = 64
    # A pass runs channel by channel, each channel on one thread, when there
    # are at least this many channels per thread (or they divide evenly).
    CHANNELS_PER_THREAD = 8

cdef enum Pass:
    FORWARD = 0     # reduce: moments of x; apply: y = (x - mean) * scale + shift
    BACKWARD = 1    # reduce: sums of g and g * (x - mean); apply: grad_input

cdef struct Geometry:
    Py_ssize_t batch            # N
    Py_ssize_t channels         # C
    Py_ssize_t length           # L, elements per (n, c) row
    Py_ssize_t rows_per_block   # short rows: whole rows per block (else 1)
    Py_ssize_t blocks_per_row   # long rows: segments per row (else 1)
    Py_ssize_t blocks           # blocks per channel
    Py_ssize_t superblocks      # superblocks per channel
    Py_ssize_t batch_groups     # short rows: ranges of n whose gradient sums are taken apart
    bint stream                 # output passes use non-temporal stores


cdef struct Block:
    # rows of size elements, from element start of row first_row of a channel
    Py_ssize_t first_row
    Py_ssize_t rows
    Py_ssize_t start
    Py_ssize_t size


cdef struct Partial:
    # FORWARD: (count, mean, m2); BACKWARD: (count, sum of g, sum of g * (x - mean)).
    double count
    double first
    double second


cdef struct ChannelParameters:
    # Inputs, per channel.
    const double *weight
    const double *bias
    const double *mean          # BACKWARD: the mean that normalised
    const double *invstd        # BACKWARD: the 1 / std that normalised
    double eps
    # Outputs, per channel.
    double *out_mean            # FORWARD
    double *out_invstd          # FORWARD
    double *out_var_unbiased    # FORWARD
    double *out_grad_weight     # BACKWARD
    double *out_grad_bias       # BACKWARD


cdef struct ChannelConstants:
    double mean
    double scale
    double shift
    double grad_mean            # BACKWARD: mean of g
    double grad_coefficient     # BACKWARD: invstd**2 * mean of g * (x - mean)


# --------------------------------------------------------------------------
# Threads and build information


def openmp_enabled():
    """Return whether the kernels were compiled with OpenMP."""
    return bool(BN3D_OPENMP)


def openmp_max_threads():
    """Return ``omp_get_max_threads()`` (1 without OpenMP)."""
    return bn3d_max_threads()


def streaming_supported():
    """Return whether the kernels can write with non-temporal stores (x86-64)."""
    return bool(BN3D_STREAMING)


def store_width():
    """Return the width in bytes of the vector stores of streamed outputs: 64
    with AVX-512, 32 with AVX2, else 16. The statistics are reduced by the
    version of their kernel built for the same instruction set."""
    return bn3d_store_width


def set_store_width(int nbytes):
    """Stream with stores of ``nbytes`` bytes (16, 32 or 64, at most what the CPU
    has), and reduce the statistics with the kernel built for that width: every
    version of the maps and of the statistics gives the same bits, and tests
    compare them."""
    global bn3d_store_width
    if nbytes not in (16, 32, 64) or nbytes > bn3d_cpu_store_width:
        raise ValueError(f"the store width must be 16, 32 or 64 and at most "
                         f"{bn3d_cpu_store_width} on this machine, got {nbytes}")
    bn3d_store_width = nbytes


def set_stream_threshold(Py_ssize_t nbytes):
    """Stream the outputs of calls whose arrays hold more than ``nbytes`` bytes."""
    global stream_above
    if nbytes < 0:
        raise ValueError(f"the threshold must be non-negative, got {nbytes}")
    stream_above = nbytes


def stream_threshold():
    """Return the size in bytes above which calls stream their outputs."""
    return stream_above


def build_flags():
    """Return the compiler flags the kernels were built with."""
    return BN3D_BUILD_FLAGS.decode()


def compiler_version():
    """Return the version string of the compiler that built the kernels."""
    return BN3D_COMPILER.decode()


# --------------------------------------------------------------------------
# Geometry


cdef Geometry make_geometry(Py_ssize_t batch, Py_ssize_t channels, Py_ssize_t length,
                            Py_ssize_t bytes_per_element) noexcept nogil:
    """The blocks of an (N, C, L) call whose arrays hold ``bytes_per_element``
    bytes per element of ``x`` in all (0 when it writes no output)."""
    cdef Geometry geometry
    geometry.batch = batch
    geometry.channels = channels
    geometry.length = length
    geometry.rows_per_block = max(1, BLOCK // length) if length > 0 else 1
    geometry.blocks_per_row = 1
    if geometry.rows_per_block == 1:
        geometry.blocks_per_row = (length + BLOCK - 1) // BLOCK
    geometry.blocks = 0
    if length > 0:
        geometry.blocks = ((batch + geometry.rows_per_block - 1) // geometry.rows_per_block
                           * geometry.blocks_per_row)
    geometry.superblocks = min(geometry.blocks, <Py_ssize_t>MAX_SUPERBLOCKS)
    geometry.batch_groups = min(batch, <Py_ssize_t>MAX_SUPERBLOCKS)
    geometry.stream = (BN3D_STREAMING and bytes_per_element > 0
                       and batch * channels * length > stream_above // bytes_per_element)
    return geometry


cdef inline Block locate_block(const Geometry *geometry, Py_ssize_t index) noexcept nogil:
    """Block ``index`` of a channel: whole short rows, or a segment of a long row."""
    cdef Block block
    block.first_row = (index // geometry.blocks_per_row) * geometry.rows_per_block
    block.rows = min(geometry.rows_per_block, geometry.batch - block.first_row)
    block.start = (index % geometry.blocks_per_row) * BLOCK
    block.size = min(<Py_ssize_t>BLOCK, geometry.length - block.start)
    return block


cdef inline Py_ssize_t row_chunks(const Geometry *geometry) noexcept nogil:
    """Chunks of ``rows_per_block`` short rows, the rows counted in (n, c) order."""
    return ((geometry.batch * geometry.channels + geometry.rows_per_block - 1)
            // geometry.rows_per_block)


cdef inline Py_ssize_t chunk_end(const Geometry *geometry, Py_ssize_t first) noexcept nogil:
    """One past the last row of the chunk that starts at row ``first``."""
    return min(first + geometry.rows_per_block, geometry.batch * geometry.channels)


cdef inline Py_ssize_t offset(const Block *block, Py_ssize_t batch_stride) noexcept nogil:
    """Offset of a block's first element from its channel's first element."""
    return block.first_row * batch_stride + block.start


# --------------------------------------------------------------------------
# Block reductions


cdef inline Partial zero_partial() noexcept nogil:
    cdef Partial zero
    zero.count = 0
    zero.first = 0
    zero.second = 0
    return zero


cdef inline Partial merge_moments(Partial a, Partial b) noexcept nogil:
    """Chan et al.'s pairwise update of (count, mean, m2)."""
    cdef Partial merged
    cdef double delta
    if a.count == 0:
        return b
    if b.count == 0:
        return a
    merged.count = a.count + b.count
    if not (isfinite(a.first) and isfinite(b.first)):
        # inf + finite = inf, inf - inf = NaN, as a plain sum of the data gives.
        merged.first = a.first + b.first
        merged.second = NAN
        return merged
    delta = b.first - a.first
    merged.first = a.first + delta * (b.count / merged.count)
    merged.second = a.second + b.second + delta * delta * (a.count * b.count / merged.count)
    return merged


cdef inline Partial merge_sums(Partial a, Partial b) noexcept nogil:
    cdef Partial merged
    merged.count = a.count + b.count
    merged.first = a.first + b.first
    merged.second = a.second + b.second
    return merged


cdef inline Partial block_moments(const Block *block, const floating *x,
                                  Py_ssize_t x_batch_stride) noexcept nogil:
    """(count, mean, m2) of one block of a channel starting at ``x``."""
    cdef Partial result
    cdef const floating *start = x + offset(block, x_batch_stride)
    result.count = block.rows * block.size
    if floating is float:
        bn3d_moments_float(start, x_batch_stride, block.rows, block.size,
                           &result.first, &result.second)
    else:
        bn3d_moments_double(start, x_batch_stride, block.rows, block.size,
                            &result.first, &result.second)
    return result


cdef inline Partial block_gradient_sums(const Block *block,
                                        const floating *g, Py_ssize_t g_batch_stride,
                                        const floating *x, Py_ssize_t x_batch_stride,
                                        double mean) noexcept nogil:
    """(count, sum(g), sum(g * (x - mean))) of one block of a channel: a segment
    of a long row (short rows are reduced by ``reduce_gradient_rows``)."""
    cdef Partial result
    cdef const floating *g_start = g + offset(block, g_batch_stride)
    cdef const floating *x_start = x + offset(block, x_batch_stride)
    result.count = block.size
    if floating is float:
        bn3d_gradient_sums_float(g_start, x_start, block.size, mean,
                                 &result.first, &result.second)
    else:
        bn3d_gradient_sums_double(g_start, x_start, block.size, mean,
                                  &result.first, &result.second)
    return result


cdef Partial reduce_superblock(Pass kind, const Geometry *geometry, Py_ssize_t superblock,
                               const floating *x, Py_ssize_t x_batch_stride,
                               const floating *g, Py_ssize_t g_batch_stride,
                               double mean) noexcept nogil:
    """Reduce the blocks of one superblock of one channel, in block order."""
    cdef Py_ssize_t first = superblock * geometry.blocks // geometry.superblocks
    cdef Py_ssize_t last = (superblock + 1) * geometry.blocks // geometry.superblocks
    cdef Py_ssize_t index
    cdef Block block
    cdef Partial total = zero_partial()
    for index in range(first, last):
        block = locate_block(geometry, index)
        if kind == FORWARD:
            total = merge_moments(total, block_moments(&block, x, x_batch_stride))
        else:
            total = merge_sums(total, block_gradient_sums(&block, g, g_batch_stride,
                                                          x, x_batch_stride, mean))
    return total


cdef Partial merge_superblocks(Pass kind, const Partial *partials, Py_ssize_t count) noexcept nogil:
    cdef Partial total = partials[0]
    cdef Py_ssize_t i
    for i in range(1, count):
        if kind == FORWARD:
            total = merge_moments(total, partials[i])
        else:
            total = merge_sums(total, partials[i])
    return total


# --------------------------------------------------------------------------
# Per-channel constants


cdef ChannelConstants finish_channel(Pass kind, Partial total, const ChannelParameters *p,
                                     Py_ssize_t c) noexcept nogil:
    """Store a channel's statistics or parameter gradients; return its constants."""
    cdef ChannelConstants k
    cdef double invstd
    k.grad_mean = 0
    k.grad_coefficient = 0
    k.shift = 0
    if kind == FORWARD:
        if total.count == 0:
            total.first = NAN
            total.second = NAN
        invstd = 1.0 / sqrt(total.second / total.count + p.eps)
        p.out_mean[c] = total.first
        p.out_invstd[c] = invstd
        p.out_var_unbiased[c] = total.second / (total.count - 1)
        k.mean = total.first
        k.scale = p.weight[c] * invstd
        k.shift = p.bias[c]
    else:
        invstd = p.invstd[c]
        p.out_grad_bias[c] = total.first
        # A sum over no elements is 0, even where invstd is NaN (an empty batch).
        p.out_grad_weight[c] = total.second * invstd if total.count > 0 else 0.0
        k.mean = p.mean[c]
        k.scale = p.weight[c] * invstd
        k.grad_mean = total.first / total.count
        k.grad_coefficient = invstd * invstd * (total.second / total.count)
    return k


# --------------------------------------------------------------------------
# Elementwise passes


cdef inline void affine_block(const Block *block,
                              const floating *x, Py_ssize_t x_batch_stride,
                              floating *y, Py_ssize_t y_batch_stride,
                              double mean, double scale, double shift,
                              bint stream) noexcept nogil:
    """y = (x - mean) * scale + shift in the data's precision.

    The mean is split as ``mean_hi + mean_lo`` with ``mean_hi`` in the data's
    precision, so ``x - mean_hi`` is accurate even where ``|mean| >> std``.
    """
    cdef floating mean_hi = <floating>mean
    cdef floating mean_lo = <floating>(mean - <double>mean_hi) if isfinite(mean_hi) else 0
    cdef const floating *x_start = x + offset(block, x_batch_stride)
    cdef floating *y_start = y + offset(block, y_batch_stride)
    if floating is float:
        bn3d_affine_float(x_start, x_batch_stride, y_start, y_batch_stride, block.rows,
                          block.size, mean_hi, mean_lo, <float>scale, <float>shift, stream)
    else:
        bn3d_affine_double(x_start, x_batch_stride, y_start, y_batch_stride, block.rows,
                           block.size, mean_hi, mean_lo, scale, shift, stream)


cdef inline void grad_input_constants(const ChannelConstants *k, floating *c) noexcept nogil:
    """The constants of ``bn3d_grad_input``: ``mean_hi``, ``offset``, ``coefficient``
    and ``scale`` in the data's precision, into ``c[0:4]``.

    For float data, the low part of the mean is folded into ``offset`` (in double).
    """
    cdef floating mean_hi = <floating>k.mean
    c[0] = mean_hi
    if floating is float and isfinite(mean_hi):
        c[1] = <float>(k.grad_mean - (k.mean - <double>mean_hi) * k.grad_coefficient)
    else:
        c[1] = k.grad_mean
    c[2] = <floating>k.grad_coefficient
    c[3] = <floating>k.scale


cdef inline void grad_input_block(const Block *block,
                                  const floating *g, Py_ssize_t g_batch_stride,
                                  const floating *x, Py_ssize_t x_batch_stride,
                                  floating *out, Py_ssize_t out_batch_stride,
                                  const ChannelConstants *k, bint stream) noexcept nogil:
    """grad_input = (g - mean(g) - (x - mean) * invstd**2 * mean(g * (x - mean))) * w * invstd.

    In the data's precision, the mean split in two as in ``affine_block``, its
    low part folded into ``mean(g)`` (in double).
    """
    cdef floating c[4]
    cdef const floating *g_start = g + offset(block, g_batch_stride)
    cdef const floating *x_start = x + offset(block, x_batch_stride)
    cdef floating *out_start = out + offset(block, out_batch_stride)
    grad_input_constants(k, c)
    if floating is float:
        bn3d_grad_input_float(g_start, g_batch_stride, x_start, x_batch_stride,
                              out_start, out_batch_stride, block.rows, block.size,
                              c[0], c[1], c[2], c[3], stream)
    else:
        bn3d_grad_input_double(g_start, g_batch_stride, x_start, x_batch_stride,
                               out_start, out_batch_stride, block.rows, block.size,
                               c[0], c[1], c[2], c[3], stream)


cdef void apply_block(Pass kind, const Geometry *geometry, Py_ssize_t index,
                      const floating *x, Py_ssize_t x_batch_stride,
                      const floating *g, Py_ssize_t g_batch_stride,
                      floating *out, Py_ssize_t out_batch_stride,
                      const ChannelConstants *k) noexcept nogil:
    cdef Block block = locate_block(geometry, index)
    if kind == FORWARD:
        affine_block(&block, x, x_batch_stride, out, out_batch_stride, k.mean, k.scale, k.shift,
                     geometry.stream)
    else:
        grad_input_block(&block, g, g_batch_stride, x, x_batch_stride, out, out_batch_stride, k,
                         geometry.stream)


# --------------------------------------------------------------------------
# Drivers


cdef void run_channel(Pass kind, const Geometry *geometry, Py_ssize_t c,
                      const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                      const floating *g, Py_ssize_t gn, Py_ssize_t gc,
                      floating *out, Py_ssize_t on, Py_ssize_t oc,
                      const ChannelParameters *p, Partial *partials) noexcept nogil:
    """Reduce then apply one channel on the calling thread."""
    cdef Py_ssize_t s, block
    cdef double mean = 0.0 if kind == FORWARD else p.mean[c]
    cdef ChannelConstants k
    for s in range(geometry.superblocks):
        partials[s] = reduce_superblock(kind, geometry, s, x + c * xc, xn, g + c * gc, gn, mean)
    k = finish_channel(kind, merge_superblocks(kind, partials, geometry.superblocks), p, c)
    for block in range(geometry.blocks):
        apply_block(kind, geometry, block, x + c * xc, xn, g + c * gc, gn, out + c * oc, on, &k)


cdef void finish_empty(Pass kind, Py_ssize_t channels, const ChannelParameters *p) noexcept nogil:
    """Statistics (NaN) or parameter gradients (zero) of channels without elements."""
    cdef Py_ssize_t c
    for c in range(channels):
        finish_channel(kind, zero_partial(), p, c)


cdef int reduce_and_apply(Pass kind, const Geometry *geometry,
                          const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                          const floating *g, Py_ssize_t gn, Py_ssize_t gc,
                          floating *out, Py_ssize_t on, Py_ssize_t oc,
                          const ChannelParameters *p, int threads) noexcept nogil:
    """Per channel: reduce to statistics, then apply them elementwise.

    With many channels, each thread takes whole channels, so the apply pass
    re-reads a channel that the reduce pass has just brought into cache. With
    few channels, the team shares each channel: superblocks in the reduce pass,
    blocks in the apply pass. Both orders compute every superblock and combine
    them in the same way, so they give identical bits. The backward of short
    rows reads them in memory order instead (``backward_rows``). One thread
    never enters an OpenMP region (see ``serial``). Returns -1 when out of memory.
    """
    cdef Py_ssize_t channels = geometry.channels
    cdef Py_ssize_t superblocks = geometry.superblocks
    cdef Py_ssize_t c, s, block
    cdef double mean
    cdef ChannelConstants k
    cdef Partial *partials
    cdef bint by_channel = channels % threads == 0 or channels >= CHANNELS_PER_THREAD * threads
    if kind == BACKWARD and geometry.rows_per_block > 1:
        return backward_rows(geometry, x, xn, xc, g, gn, gc, out, on, oc, p, threads)
    if serial(threads):
        partials = <Partial *>malloc(superblocks * sizeof(Partial))
        if partials == NULL:
            return -1
        for c in range(channels):
            run_channel(kind, geometry, c, x, xn, xc, g, gn, gc, out, on, oc, p, partials)
        end_streaming(geometry)
        free(partials)
        return 0
    if by_channel:
        partials = <Partial *>malloc(channels * superblocks * sizeof(Partial))
        if partials == NULL:
            return -1
        with parallel(num_threads=threads):
            for c in prange(channels, schedule="static"):
                run_channel(kind, geometry, c, x, xn, xc, g, gn, gc, out, on, oc, p,
                            partials + c * superblocks)
            end_streaming(geometry)
        free(partials)
        return 0
    partials = <Partial *>malloc(superblocks * sizeof(Partial))
    if partials == NULL:
        return -1
    for c in range(channels):
        mean = 0.0 if kind == FORWARD else p.mean[c]
        for s in prange(superblocks, schedule="static", num_threads=threads):
            partials[s] = reduce_superblock(kind, geometry, s, x + c * xc, xn, g + c * gc, gn, mean)
        k = finish_channel(kind, merge_superblocks(kind, partials, superblocks), p, c)
        with parallel(num_threads=threads):
            for block in prange(geometry.blocks, schedule="static"):
                apply_block(kind, geometry, block, x + c * xc, xn, g + c * gc, gn,
                            out + c * oc, on, &k)
            end_streaming(geometry)
    free(partials)
    return 0


cdef inline void end_streaming(const Geometry *geometry) noexcept nogil:
    """Make this thread's non-temporal stores, if any, visible before it goes on."""
    if geometry.stream:
        bn3d_stream_fence()


cdef inline bint serial(int threads) noexcept nogil:
    """Whether to run on the calling thread without entering an OpenMP region.

    Plain loops cost nothing to start, and they keep small, serial calls from
    waking (or paying for) the OpenMP team.
    """
    return threads <= 1


cdef inline void reduce_item(Pass kind, const Geometry *geometry, Py_ssize_t item,
                             const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                             const floating *g, Py_ssize_t gn, Py_ssize_t gc,
                             const ChannelParameters *p, Partial *partials) noexcept nogil:
    """Reduce superblock ``item % superblocks`` of channel ``item // superblocks``."""
    cdef Py_ssize_t c = item // geometry.superblocks
    cdef Py_ssize_t s = item % geometry.superblocks
    partials[item] = reduce_superblock(kind, geometry, s, x + c * xc, xn, g + c * gc, gn,
                                       0.0 if kind == FORWARD else p.mean[c])


cdef inline void gradient_rows(const Geometry *geometry, Py_ssize_t group,
                               const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                               const floating *g, Py_ssize_t gn, Py_ssize_t gc,
                               const double *mean, double *sums) noexcept nogil:
    """Add the gradient sums of the rows of batch group ``group`` into ``sums``
    (``sum(g)`` of each channel, then ``sum(g * (x - mean))``)."""
    cdef Py_ssize_t first = group * geometry.batch // geometry.batch_groups
    cdef Py_ssize_t last = (group + 1) * geometry.batch // geometry.batch_groups
    if floating is float:
        bn3d_gradient_rows_float(g, gn, gc, x, xn, xc, geometry.channels, geometry.length,
                                 first, last, mean, sums, sums + geometry.channels)
    else:
        bn3d_gradient_rows_double(g, gn, gc, x, xn, xc, geometry.channels, geometry.length,
                                  first, last, mean, sums, sums + geometry.channels)


cdef int reduce_gradient_rows(const Geometry *geometry,
                              const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                              const floating *g, Py_ssize_t gn, Py_ssize_t gc,
                              const ChannelParameters *p, ChannelConstants *constants,
                              int threads) noexcept nogil:
    """The gradient sums of short rows, read in memory order.

    Each of the ``batch_groups`` ranges of consecutive n is summed for every
    channel at once, row by row in n order; the ranges are then added in
    order, so the result depends on the shape alone. Stores the parameter
    gradients and, unless ``constants`` is NULL, each channel's constants.
    Returns -1 when out of memory.
    """
    cdef Py_ssize_t channels = geometry.channels, groups = geometry.batch_groups
    cdef Py_ssize_t j, c
    cdef Partial total
    cdef ChannelConstants k
    cdef double *sums = <double *>calloc(2 * groups * channels, sizeof(double))
    if sums == NULL:
        return -1
    if serial(threads):
        for j in range(groups):
            gradient_rows(geometry, j, x, xn, xc, g, gn, gc, p.mean, sums + 2 * j * channels)
    else:
        for j in prange(groups, schedule="static", num_threads=threads):
            gradient_rows(geometry, j, x, xn, xc, g, gn, gc, p.mean, sums + 2 * j * channels)
    total.count = geometry.batch * geometry.length
    for c in range(channels):
        total.first = sums[c]
        total.second = sums[channels + c]
        for j in range(1, groups):
            total.first = total.first + sums[2 * j * channels + c]
            total.second = total.second + sums[(2 * j + 1) * channels + c]
        k = finish_channel(BACKWARD, total, p, c)
        if constants != NULL:
            constants[c] = k
    free(sums)
    return 0


cdef inline void grad_input_rows(const Geometry *geometry, Py_ssize_t item,
                                 const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                                 const floating *g, Py_ssize_t gn, Py_ssize_t gc,
                                 floating *out, Py_ssize_t on, Py_ssize_t oc,
                                 const floating *k) noexcept nogil:
    """grad_input of ``rows_per_block`` whole rows from row ``item * rows_per_block``,
    rows counted in (n, c) order."""
    cdef Py_ssize_t first = item * geometry.rows_per_block
    cdef Py_ssize_t last = chunk_end(geometry, first)
    if floating is float:
        bn3d_grad_input_rows_float(g, gn, gc, x, xn, xc, out, on, oc, geometry.channels,
                                   geometry.length, first, last, k, geometry.stream)
    else:
        bn3d_grad_input_rows_double(g, gn, gc, x, xn, xc, out, on, oc, geometry.channels,
                                    geometry.length, first, last, k, geometry.stream)


cdef int backward_rows(const Geometry *geometry,
                       const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                       const floating *g, Py_ssize_t gn, Py_ssize_t gc,
                       floating *out, Py_ssize_t on, Py_ssize_t oc,
                       const ChannelParameters *p, int threads) noexcept nogil:
    """The batch-statistics backward of short rows, both passes in memory order.

    Returns -1 when out of memory.
    """
    cdef Py_ssize_t channels = geometry.channels, c, item
    cdef Py_ssize_t items = row_chunks(geometry)
    cdef ChannelConstants *constants = <ChannelConstants *>malloc(
        channels * sizeof(ChannelConstants))
    cdef floating *k = <floating *>malloc(4 * channels * sizeof(floating))
    cdef int status = -1
    if constants != NULL and k != NULL:
        status = reduce_gradient_rows(geometry, x, xn, xc, g, gn, gc, p, constants, threads)
    if status == 0:
        for c in range(channels):
            grad_input_constants(&constants[c], k + 4 * c)
        if serial(threads):
            for item in range(items):
                grad_input_rows(geometry, item, x, xn, xc, g, gn, gc, out, on, oc, k)
            end_streaming(geometry)
        else:
            with parallel(num_threads=threads):
                for item in prange(items, schedule="static"):
                    grad_input_rows(geometry, item, x, xn, xc, g, gn, gc, out, on, oc, k)
                end_streaming(geometry)
    free(k)
    free(constants)
    return status


cdef int reduce_only(Pass kind, const Geometry *geometry,
                     const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                     const floating *g, Py_ssize_t gn, Py_ssize_t gc,
                     const ChannelParameters *p, int threads) noexcept nogil:
    """The reduction of every channel, all superblocks shared by the team.

    Computes the same superblocks, combined in the same order, as
    ``reduce_and_apply``. Returns -1 when out of memory.
    """
    cdef Py_ssize_t channels = geometry.channels, superblocks = geometry.superblocks
    cdef Py_ssize_t item, c
    cdef Partial *partials
    if kind == BACKWARD and geometry.rows_per_block > 1:
        return reduce_gradient_rows(geometry, x, xn, xc, g, gn, gc, p, NULL, threads)
    partials = <Partial *>malloc(channels * superblocks * sizeof(Partial))
    if partials == NULL:
        return -1
    if serial(threads):
        for item in range(channels * superblocks):
            reduce_item(kind, geometry, item, x, xn, xc, g, gn, gc, p, partials)
    else:
        for item in prange(channels * superblocks, schedule="static", num_threads=threads):
            reduce_item(kind, geometry, item, x, xn, xc, g, gn, gc, p, partials)
    for c in range(channels):
        finish_channel(kind, merge_superblocks(kind, partials + c * superblocks, superblocks), p, c)
    free(partials)
    return 0


cdef inline void affine_item(const Geometry *geometry, Py_ssize_t item,
                             const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                             floating *out, Py_ssize_t on, Py_ssize_t oc,
                             const double *mean, const double *scale,
                             const double *shift) noexcept nogil:
    """The affine map of block ``item % blocks`` of channel ``item // blocks``."""
    cdef Py_ssize_t c = item // geometry.blocks
    cdef Block block = locate_block(geometry, item % geometry.blocks)
    affine_block(&block, x + c * xc, xn, out + c * oc, on, mean[c], scale[c], shift[c],
                 geometry.stream)


cdef inline void affine_rows(const Geometry *geometry, Py_ssize_t item,
                             const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                             floating *out, Py_ssize_t on, Py_ssize_t oc,
                             const double *mean, const double *scale,
                             const double *shift) noexcept nogil:
    """The affine map of ``rows_per_block`` whole rows from row ``item * rows_per_block``,
    rows counted in (n, c) order."""
    cdef Py_ssize_t first = item * geometry.rows_per_block
    cdef Py_ssize_t last = chunk_end(geometry, first)
    if floating is float:
        bn3d_affine_rows_float(x, xn, xc, out, on, oc, geometry.channels, geometry.length,
                               first, last, mean, scale, shift, geometry.stream)
    else:
        bn3d_affine_rows_double(x, xn, xc, out, on, oc, geometry.channels, geometry.length,
                                first, last, mean, scale, shift, geometry.stream)


cdef void affine_channels(const Geometry *geometry,
                          const floating *x, Py_ssize_t xn, Py_ssize_t xc,
                          floating *out, Py_ssize_t on, Py_ssize_t oc,
                          const double *mean, const double *scale, const double *shift,
                          int threads) noexcept nogil:
    """out = (x - mean) * scale + shift per channel, all blocks shared by the team.

    Short rows are taken in (n, c) order, memory order for a contiguous array,
    so that each thread reads one stream rather than one short stream per row.
    """
    cdef bint short_rows = geometry.rows_per_block > 1
    cdef Py_ssize_t item, items
    if short_rows:
        items = row_chunks(geometry)
    else:
        items = geometry.channels * geometry.blocks
    if serial(threads):
        for item in range(items):
            if short_rows:
                affine_rows(geometry, item, x, xn, xc, out, on, oc, mean, scale, shift)
            else:
                affine_item(geometry, item, x, xn, xc, out, on, oc, mean, scale, shift)
        end_streaming(geometry)
    else:
        with parallel(num_threads=threads):
            for item in prange(items, schedule="static"):
                if short_rows:
                    affine_rows(geometry, item, x, xn, xc, out, on, oc, mean, scale, shift)
                else:
                    affine_item(geometry, item, x, xn, xc, out, on, oc, mean, scale, shift)
            end_streaming(geometry)


# --------------------------------------------------------------------------
# Python entry points. Arrays are (N, C, L) with unit stride along L (checked
# by the caller); per-channel arrays are contiguous float64 of length C.


cdef inline Py_ssize_t batch_stride(const floating[:, :, :] a) noexcept nogil:
    return a.strides[0] // <Py_ssize_t>sizeof(floating)


cdef inline Py_ssize_t channel_stride(const floating[:, :, :] a) noexcept nogil:
    return a.strides[1] // <Py_ssize_t>sizeof(floating)


def train_forward(const floating[:, :, :] x, floating[:, :, :] y,
                  const double[::1] weight, const double[::1] bias, double eps,
                  double[::1] mean, double[::1] invstd, double[::1] var_unbiased,
                  int threads):
    """Normalise ``x`` into ``y`` with its batch statistics.

    Stores the batch mean, ``1 / sqrt(biased variance + eps)`` and the unbiased
    variance of each channel (NaN for an empty channel; the unbiased variance
    of a single value is NaN).
    """
    cdef Geometry geometry = make_geometry(x.shape[0], x.shape[1], x.shape[2],
                                           2 * <Py_ssize_t>sizeof(floating))
    cdef ChannelParameters p
    cdef int status
    if geometry.channels == 0:
        return
    p.weight = &weight[0]
    p.bias = &bias[0]
    p.eps = eps
    p.out_mean = &mean[0]
    p.out_invstd = &invstd[0]
    p.out_var_unbiased = &var_unbiased[0]
    if geometry.blocks == 0:
        finish_empty(FORWARD, geometry.channels, &p)
        return
    with nogil:
        status = reduce_and_apply(FORWARD, &geometry,
                                  &x[0, 0, 0], batch_stride(x), channel_stride(x),
                                  &x[0, 0, 0], 0, 0,
                                  &y[0, 0, 0], batch_stride(y), channel_stride(y),
                                  &p, threads)
    if status != 0:
        raise MemoryError()


def batch_stats(const floating[:, :, :] x, double eps,
                double[::1] mean, double[::1] invstd, double[::1] var_unbiased, int threads):
    """Batch statistics of ``x`` alone, bitwise equal to those of ``train_forward``."""
    cdef Geometry geometry = make_geometry(x.shape[0], x.shape[1], x.shape[2],
                                           0)
    cdef ChannelParameters p
    cdef int status
    cdef double *ones
    cdef Py_ssize_t c
    if geometry.channels == 0:
        return
    # finish_channel also derives the normalising constants, which need a weight.
    ones = <double *>malloc(geometry.channels * sizeof(double))
    if ones == NULL:
        raise MemoryError()
    for c in range(geometry.channels):
        ones[c] = 1.0
    p.weight = ones
    p.bias = ones
    p.eps = eps
    p.out_mean = &mean[0]
    p.out_invstd = &invstd[0]
    p.out_var_unbiased = &var_unbiased[0]
    status = 0
    if geometry.blocks == 0:
        finish_empty(FORWARD, geometry.channels, &p)
    else:
        with nogil:
            status = reduce_only(FORWARD, &geometry,
                                 &x[0, 0, 0], batch_stride(x), channel_stride(x),
                                 &x[0, 0, 0], 0, 0, &p, threads)
    free(ones)
    if status != 0:
        raise MemoryError()


def eval_forward(const floating[:, :, :] x, floating[:, :, :] y,
                 const double[::1] mean, const double[::1] var,
                 const double[::1] weight, const double[::1] bias, double eps,
                 double[::1] invstd, int threads):
    """Normalise ``x`` into ``y`` with given statistics ``mean`` and ``var``.

    Stores ``1 / sqrt(var + eps)`` of each channel in ``invstd``.
    """
    cdef Geometry geometry = make_geometry(x.shape[0], x.shape[1], x.shape[2],
                                           2 * <Py_ssize_t>sizeof(floating))
    cdef Py_ssize_t c, channels = geometry.channels
    cdef double *scale
    if channels == 0:
        return
    scale = <double *>malloc(channels * sizeof(double))
    if scale == NULL:
        raise MemoryError()
    for c in range(channels):
        invstd[c] = 1.0 / sqrt(var[c] + eps)
        scale[c] = weight[c] * invstd[c]
    if geometry.blocks > 0:
        with nogil:
            affine_channels(&geometry, &x[0, 0, 0], batch_stride(x), channel_stride(x),
                            &y[0, 0, 0], batch_stride(y), channel_stride(y),
                            &mean[0], scale, &bias[0], threads)
    free(scale)


def inverse_std(const double[::1] var, double eps, double[::1] invstd):
    """``invstd = 1 / sqrt(var + eps)``, elementwise."""
    cdef Py_ssize_t c
    for c in range(var.shape[0]):
        invstd[c] = 1.0 / sqrt(var[c] + eps)


def update_running_stats(double[::1] running_mean, double[::1] running_var,
                         const double[::1] mean, const double[::1] var_unbiased,
                         double momentum):
    """``running = (1 - momentum) * running + momentum * batch``, in place."""
    cdef Py_ssize_t c
    for c in range(running_mean.shape[0]):
        running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean[c]
        running_var[c] = (1.0 - momentum) * running_var[c] + momentum * var_unbiased[c]


def train_backward(const floating[:, :, :] grad_output, const floating[:, :, :] x,
                   floating[:, :, :] grad_input,
                   const double[::1] mean, const double[::1] invstd, const double[::1] weight,
                   double[::1] grad_weight, double[::1] grad_bias, int threads):
    """Gradients of a batch-statistics forward (mean and invstd from the batch).

    ``grad_input = w * invstd / n * (n * g - sum(g) - xhat * sum(g * xhat))``,
    ``grad_weight = sum(g * xhat)``, ``grad_bias = sum(g)``.
    """
    cdef Geometry geometry = make_geometry(x.shape[0], x.shape[1], x.shape[2],
                                           3 * <Py_ssize_t>sizeof(floating))
    cdef ChannelParameters p
    cdef int status
    if geometry.channels == 0:
        return
    p.weight = &weight[0]
    p.mean = &mean[0]
    p.invstd = &invstd[0]
    p.out_grad_weight = &grad_weight[0]
    p.out_grad_bias = &grad_bias[0]
    if geometry.blocks == 0:
        finish_empty(BACKWARD, geometry.channels, &p)
        return
    with nogil:
        status = reduce_and_apply(BACKWARD, &geometry,
                                  &x[0, 0, 0], batch_stride(x), channel_stride(x),
                                  &grad_output[0, 0, 0], batch_stride(grad_output),
                                  channel_stride(grad_output),
                                  &grad_input[0, 0, 0], batch_stride(grad_input),
                                  channel_stride(grad_input),
                                  &p, threads)
    if status != 0:
        raise MemoryError()


def eval_backward(const floating[:, :, :] grad_output, const floating[:, :, :] x,
                  floating[:, :, :] grad_input,
                  const double[::1] mean, const double[::1] invstd, const double[::1] weight,
                  double[::1] grad_weight, double[::1] grad_bias, int threads):
    """Gradients of a forward with fixed statistics ``mean`` and ``invstd``.

    ``grad_input = g * w * invstd``, ``grad_weight = sum(g * xhat)``,
    ``grad_bias = sum(g)``.
    """
    cdef Geometry geometry = make_geometry(x.shape[0], x.shape[1], x.shape[2],
                                           3 * <Py_ssize_t>sizeof(floating))
    cdef Py_ssize_t c, channels = geometry.channels
    cdef double *constants
    cdef ChannelParameters p
    cdef int status
    if channels == 0:
        return
    # The parameter gradients are the reduction of a batch-statistics backward
    # around the fixed mean; only grad_input differs.
    constants = <double *>malloc(3 * channels * sizeof(double))
    if constants == NULL:
        raise MemoryError()
    for c in range(channels):
        constants[c] = 0.0                                  # centre
        constants[channels + c] = weight[c] * invstd[c]     # scale
        constants[2 * channels + c] = 0.0                   # shift
    p.mean = &mean[0]
    p.invstd = &invstd[0]
    p.weight = &weight[0]
    p.out_grad_weight = &grad_weight[0]
    p.out_grad_bias = &grad_bias[0]
    if geometry.blocks == 0:
        finish_empty(BACKWARD, channels, &p)
        free(constants)
        return
    with nogil:
        status = reduce_only(BACKWARD, &geometry,
                             &x[0, 0, 0], batch_stride(x), channel_stride(x),
                             &grad_output[0, 0, 0], batch_stride(grad_output),
                             channel_stride(grad_output), &p, threads)
        affine_channels(&geometry, &grad_output[0, 0, 0], batch_stride(grad_output),
                        channel_stride(grad_output),
                        &grad_input[0, 0, 0], batch_stride(grad_input),
                        channel_stride(grad_input),
                        constants, constants + channels, constants + 2 * channels, threads)
    free(constants)
    if status != 0:
        raise MemoryError()
