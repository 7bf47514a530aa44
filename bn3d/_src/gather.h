/* Channels last: a tile of a few channels gathered into one run per channel, so that
 * the channels-first kernels reduce it, with the same operations in the same order:
 * a block has the same moments and gradient sums whatever the memory layout.
 */
#ifndef BN3D_GATHER_H
#define BN3D_GATHER_H

#include "simd.h"

/* Channel c's elements x[r * row_stride + i * position_stride + c] of `rows` rows of
   `size` positions, into out[c * rows * size + r * size + i], for c < channels.

   Read in memory order (position by position). When the tile's channels are all the
   tensor has (position_stride == channels: C = 1 to 8, common for 3D images), the
   count is a compile-time constant, and the compiler turns the loop into vector
   loads and shuffles; otherwise a plain loop. The copy is exact either way. */
#define BN3D_GATHER_FIXED(T, NAME, K)                                                      \
    static inline void NAME(const T *x, ptrdiff_t row_stride, ptrdiff_t rows,              \
                            ptrdiff_t size, T *out) {                                      \
        ptrdiff_t r, i, run = rows * size;                                                 \
        int c;                                                                             \
        for (r = 0; r < rows; r++) {                                                       \
            const T *row = x + r * row_stride;                                             \
            T *to = out + r * size;                                                        \
            for (i = 0; i < size; i++)                                                     \
                for (c = 0; c < K; c++) to[c * run + i] = row[i * K + c];                  \
        }                                                                                  \
    }

#define BN3D_GATHER(T, SUFFIX)                                                             \
    BN3D_GATHER_FIXED(T, bn3d_gather_1_##SUFFIX, 1)                                        \
    BN3D_GATHER_FIXED(T, bn3d_gather_2_##SUFFIX, 2)                                        \
    BN3D_GATHER_FIXED(T, bn3d_gather_3_##SUFFIX, 3)                                        \
    BN3D_GATHER_FIXED(T, bn3d_gather_4_##SUFFIX, 4)                                        \
    BN3D_GATHER_FIXED(T, bn3d_gather_5_##SUFFIX, 5)                                        \
    BN3D_GATHER_FIXED(T, bn3d_gather_6_##SUFFIX, 6)                                        \
    BN3D_GATHER_FIXED(T, bn3d_gather_7_##SUFFIX, 7)                                        \
    BN3D_GATHER_FIXED(T, bn3d_gather_8_##SUFFIX, 8)                                        \
    static void bn3d_gather_channels_##SUFFIX(const T *x, ptrdiff_t position_stride,       \
                                             ptrdiff_t row_stride, ptrdiff_t rows,         \
                                             ptrdiff_t size, ptrdiff_t channels, T *out) { \
        ptrdiff_t r, i, c, run = rows * size;                                              \
        if (position_stride == channels) {                                                 \
            switch (channels) {                                                            \
            case 1: bn3d_gather_1_##SUFFIX(x, row_stride, rows, size, out); return;        \
            case 2: bn3d_gather_2_##SUFFIX(x, row_stride, rows, size, out); return;        \
            case 3: bn3d_gather_3_##SUFFIX(x, row_stride, rows, size, out); return;        \
            case 4: bn3d_gather_4_##SUFFIX(x, row_stride, rows, size, out); return;        \
            case 5: bn3d_gather_5_##SUFFIX(x, row_stride, rows, size, out); return;        \
            case 6: bn3d_gather_6_##SUFFIX(x, row_stride, rows, size, out); return;        \
            case 7: bn3d_gather_7_##SUFFIX(x, row_stride, rows, size, out); return;        \
            case 8: bn3d_gather_8_##SUFFIX(x, row_stride, rows, size, out); return;        \
            default: break;                                                                \
            }                                                                              \
        }                                                                                  \
        for (r = 0; r < rows; r++)                                                         \
            for (i = 0; i < size; i++)                                                     \
                for (c = 0; c < channels; c++)                                             \
                    out[c * run + r * size + i] =                                          \
                        x[r * row_stride + i * position_stride + c];                       \
    }

BN3D_GATHER(float, float)
BN3D_GATHER(double, double)

#endif /* BN3D_GATHER_H */
