/* SIMD helpers of bn3d's kernels: vector types, loads, streaming stores.
 *
 * Every kernel source is compiled once per instruction set (see kernels.h): the
 * translation unit's target decides the width of the streaming stores, 64 bytes
 * with AVX-512, 32 with AVX, else 16. Vectors are GCC/Clang vector extensions, so
 * the arithmetic on them is written as on scalars and is the same IEEE operation in
 * every lane, whatever registers carry it.
 */
#ifndef BN3D_SIMD_H
#define BN3D_SIMD_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE2__)
#include <immintrin.h>
#endif

#define BN3D_INLINE static inline __attribute__((always_inline))

/* The width in bytes of this translation unit's streaming stores and store vectors. */
#if defined(__AVX512F__)
#define BN3D_STORE_BYTES 64
#elif defined(__AVX__)
#define BN3D_STORE_BYTES 32
#else
#define BN3D_STORE_BYTES 16
#endif

/* Whether the CPU has non-temporal stores (x86-64); elsewhere they are plain stores. */
#if defined(__SSE2__)
#define BN3D_STREAMING 1
#else
#define BN3D_STREAMING 0
#endif

typedef float bn3d_f32x4 __attribute__((vector_size(16)));
typedef float bn3d_f32x8 __attribute__((vector_size(32)));
typedef double bn3d_f64x4 __attribute__((vector_size(32)));
typedef double bn3d_f64x8 __attribute__((vector_size(64)));
/* Vectors of one streaming store. */
typedef float bn3d_store_floats __attribute__((vector_size(BN3D_STORE_BYTES)));
typedef double bn3d_store_doubles __attribute__((vector_size(BN3D_STORE_BYTES)));

BN3D_INLINE bn3d_f32x8 bn3d_load_f32x8(const float *p) {
    bn3d_f32x8 v;
    memcpy(&v, p, sizeof v);
    return v;
}
BN3D_INLINE bn3d_f64x4 bn3d_load_f64x4(const double *p) {
    bn3d_f64x4 v;
    memcpy(&v, p, sizeof v);
    return v;
}
BN3D_INLINE bn3d_store_floats bn3d_load_store_floats(const float *p) {
    bn3d_store_floats v;
    memcpy(&v, p, sizeof v);
    return v;
}
BN3D_INLINE bn3d_store_doubles bn3d_load_store_doubles(const double *p) {
    bn3d_store_doubles v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Non-temporal ("streaming") stores write whole cache lines to memory without first
   reading them into the cache; p is aligned to BN3D_STORE_BYTES. */
BN3D_INLINE void bn3d_stream_floats(float *p, bn3d_store_floats v) {
#if BN3D_STORE_BYTES == 64
    _mm512_stream_ps(p, (__m512)v);
#elif BN3D_STORE_BYTES == 32
    _mm256_stream_ps(p, (__m256)v);
#elif BN3D_STREAMING
    _mm_stream_ps(p, (__m128)v);
#else
    memcpy(p, &v, sizeof v);
#endif
}
BN3D_INLINE void bn3d_stream_doubles(double *p, bn3d_store_doubles v) {
#if BN3D_STORE_BYTES == 64
    _mm512_stream_pd(p, (__m512d)v);
#elif BN3D_STORE_BYTES == 32
    _mm256_stream_pd(p, (__m256d)v);
#elif BN3D_STREAMING
    _mm_stream_pd(p, (__m128d)v);
#else
    memcpy(p, &v, sizeof v);
#endif
}

/* Orders this thread's streamed stores before whatever it does next. */
static inline void bn3d_stream_fence(void) {
#if BN3D_STREAMING
    _mm_sfence();
#endif
}

/* How many of the `size` elements of `item` bytes at p precede the first
   BN3D_STORE_BYTES boundary (all of them when p is not aligned to its element). */
BN3D_INLINE ptrdiff_t bn3d_unaligned_head(const void *p, ptrdiff_t size, size_t item) {
    uintptr_t address = (uintptr_t)p;
    ptrdiff_t head;
    if (address % item != 0) return size;
    head = (ptrdiff_t)((BN3D_STORE_BYTES - address % BN3D_STORE_BYTES) % BN3D_STORE_BYTES / item);
    return head < size ? head : size;
}

#endif /* BN3D_SIMD_H */
