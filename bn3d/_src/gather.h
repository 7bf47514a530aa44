/* Channels last: a tile of a few channels gathered into one run per channel, so that
 * the channels-first kernels reduce it, with the same operations in the same order:
 * a block has the same moments and gradient sums whatever the memory layout.
 */
#ifndef BN3D_GATHER_H
#define BN3D_GATHER_H

#include "simd.h"

/* Channel c's elements x[r * row_stride + i * position_stride + c] of `rows` rows of
   `size` positions, into out[c * rows * size + r * size + i], for c < channels. */
static void bn3d_gather_channels_float(const float *x, ptrdiff_t position_stride,
                                       ptrdiff_t row_stride, ptrdiff_t rows, ptrdiff_t size,
                                       ptrdiff_t channels, float *out) {
    ptrdiff_t r, i, c, run = rows * size;
    for (c = 0; c < channels; c++)
        for (r = 0; r < rows; r++)
            for (i = 0; i < size; i++)
                out[c * run + r * size + i] = x[r * row_stride + i * position_stride + c];
}

static void bn3d_gather_channels_double(const double *x, ptrdiff_t position_stride,
                                        ptrdiff_t row_stride, ptrdiff_t rows, ptrdiff_t size,
                                        ptrdiff_t channels, double *out) {
    ptrdiff_t r, i, c, run = rows * size;
    for (c = 0; c < channels; c++)
        for (r = 0; r < rows; r++)
            for (i = 0; i < size; i++)
                out[c * run + r * size + i] = x[r * row_stride + i * position_stride + c];
}

#endif /* BN3D_GATHER_H */
