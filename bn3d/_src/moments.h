/* Moments of a block: its count's mean and sum of squared deviations (m2).
 *
 * The corrected two-pass algorithm while the block sits in L1 cache: the mean by a
 * first pass, then sum(d) and sum(d * d) with d = x - mean; the mean is corrected by
 * sum(d) / n and m2 = sum(d * d) - sum(d)**2 / n (clamped at 0, NaN kept). An
 * infinite mean (an inf in the block) stays infinite, with m2 NaN, as PyTorch's
 * (the correction from x - inf would make it NaN).
 *
 * 32 lanes accumulate elements i with i % 32 == lane, row after row, in vectors of 8
 * doubles where the translation unit has AVX-512 (four registers) and of 4
 * otherwise (eight AVX2 registers, or pairs of SSE2 ones): the same operations lane
 * by lane, the lanes added in one fixed tree (bn3d_lanes_tree), so every instruction
 * set gives the same bits.
 */
#ifndef BN3D_MOMENTS_H
#define BN3D_MOMENTS_H

#include "simd.h"

#define BN3D_MOMENT_LANES 32
#if BN3D_STORE_BYTES == 64
typedef bn3d_f64x8 bn3d_moment_vector;
typedef bn3d_f32x8 bn3d_moment_vector_of_floats;
#else
typedef bn3d_f64x4 bn3d_moment_vector;
typedef bn3d_f32x4 bn3d_moment_vector_of_floats;
#endif
enum {
    BN3D_MOMENT_WIDTH = sizeof(bn3d_moment_vector) / sizeof(double),
    BN3D_MOMENT_VECTORS = BN3D_MOMENT_LANES / BN3D_MOMENT_WIDTH
};

/* The BN3D_MOMENT_WIDTH elements from element i of x (float or double), as doubles. */
BN3D_INLINE bn3d_moment_vector bn3d_moment_load(const void *x, ptrdiff_t i, int is_float) {
    if (is_float) {
        bn3d_moment_vector_of_floats narrow;
        memcpy(&narrow, (const float *)x + i, sizeof narrow);
        return __builtin_convertvector(narrow, bn3d_moment_vector);
    } else {
        bn3d_moment_vector v;
        memcpy(&v, (const double *)x + i, sizeof v);
        return v;
    }
}

BN3D_INLINE double bn3d_element(const void *x, ptrdiff_t i, int is_float) {
    return is_float ? (double)((const float *)x)[i] : ((const double *)x)[i];
}

/* The 32 lanes added in a fixed tree: lanes l, l + 8, l + 16 and l + 24 first, then
   the 8 results pairwise. */
BN3D_INLINE double bn3d_lanes_tree(const double *lanes) {
    double v[8];
    int l;
    for (l = 0; l < 8; l++)
        v[l] = (lanes[l] + lanes[l + 8]) + (lanes[l + 16] + lanes[l + 24]);
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]));
}

/* The moments of `rows` runs of `size` elements, run r starting at element r * stride
   of x; is_float says whether x holds floats or doubles (a constant once inlined). */
BN3D_INLINE void bn3d_block_moments(const void *x, ptrdiff_t stride, ptrdiff_t rows,
                                    ptrdiff_t size, int is_float, double *mean_out,
                                    double *m2_out) {
    bn3d_moment_vector s[BN3D_MOMENT_VECTORS], q[BN3D_MOMENT_VECTORS], d, c;
    double lanes[BN3D_MOMENT_LANES];
    ptrdiff_t r, i, row, full = size - size % BN3D_MOMENT_LANES;
    int k;
    double n = (double)rows * (double)size;
    double tail = 0, mean, centred, squares, e, m2;
    for (k = 0; k < BN3D_MOMENT_VECTORS; k++) s[k] = q[k] = (bn3d_moment_vector){0};
    for (r = 0; r < rows; r++) {
        row = r * stride;
        for (i = 0; i < full; i += BN3D_MOMENT_LANES)
            for (k = 0; k < BN3D_MOMENT_VECTORS; k++)
                s[k] += bn3d_moment_load(x, row + i + k * BN3D_MOMENT_WIDTH, is_float);
        for (i = full; i < size; i++) tail += bn3d_element(x, row + i, is_float);
    }
    memcpy(lanes, s, sizeof lanes);
    mean = (bn3d_lanes_tree(lanes) + tail) / n;
    c = mean - (bn3d_moment_vector){0};
    for (k = 0; k < BN3D_MOMENT_VECTORS; k++) s[k] = (bn3d_moment_vector){0};
    centred = squares = 0;
    for (r = 0; r < rows; r++) {
        row = r * stride;
        for (i = 0; i < full; i += BN3D_MOMENT_LANES)
            for (k = 0; k < BN3D_MOMENT_VECTORS; k++) {
                d = bn3d_moment_load(x, row + i + k * BN3D_MOMENT_WIDTH, is_float) - c;
                s[k] += d;
                q[k] += d * d;
            }
        for (i = full; i < size; i++) {
            e = bn3d_element(x, row + i, is_float) - mean;
            centred += e;
            squares += e * e;
        }
    }
    memcpy(lanes, s, sizeof lanes);
    centred += bn3d_lanes_tree(lanes);
    memcpy(lanes, q, sizeof lanes);
    squares += bn3d_lanes_tree(lanes);
    m2 = squares - centred * centred / n;
    *mean_out = isfinite(mean) ? mean + centred / n : mean;
    *m2_out = isfinite(mean) ? (m2 < 0 ? 0 : m2) : NAN;
}

static void bn3d_moments_float(const float *x, ptrdiff_t stride, ptrdiff_t rows,
                               ptrdiff_t size, double *mean, double *m2) {
    bn3d_block_moments(x, stride, rows, size, 1, mean, m2);
}

static void bn3d_moments_double(const double *x, ptrdiff_t stride, ptrdiff_t rows,
                                ptrdiff_t size, double *mean, double *m2) {
    bn3d_block_moments(x, stride, rows, size, 0, mean, m2);
}

/* Channels last: the moments of up to BN3D_GROUP_CHANNELS consecutive channels at once,
 * for data whose channels are adjacent in memory (NDHWC). Channel c's elements are
 * x[r * row_stride + i * position_stride + c]; each channel's block is reduced with
 * exactly the operations of bn3d_block_moments on its own elements (the same lanes,
 * in the same order), vectorised across channels instead of along the row, so a
 * block has the same moments whatever the layout. */
#define BN3D_GROUP_CHANNELS 16

BN3D_INLINE void bn3d_block_moments_channels_last(const void *x, ptrdiff_t position_stride,
                                                  ptrdiff_t row_stride, ptrdiff_t rows,
                                                  ptrdiff_t size, ptrdiff_t channels,
                                                  int is_float, double *mean_out,
                                                  double *m2_out) {
    double s[BN3D_MOMENT_LANES][BN3D_GROUP_CHANNELS];
    double q[BN3D_MOMENT_LANES][BN3D_GROUP_CHANNELS];
    double tail[BN3D_GROUP_CHANNELS], mean[BN3D_GROUP_CHANNELS];
    double centred[BN3D_GROUP_CHANNELS], squares[BN3D_GROUP_CHANNELS];
    double lanes[BN3D_MOMENT_LANES];
    ptrdiff_t r, i, c, at, base, full = size - size % BN3D_MOMENT_LANES;
    int l;
    double n = (double)rows * (double)size, e, m2;
    memset(s, 0, sizeof s);
    memset(q, 0, sizeof q);
    for (c = 0; c < channels; c++) tail[c] = centred[c] = squares[c] = 0;
    for (r = 0; r < rows; r++) {
        for (base = 0; base < full; base += BN3D_MOMENT_LANES)
            for (l = 0; l < BN3D_MOMENT_LANES; l++) {
                at = r * row_stride + (base + l) * position_stride;
                for (c = 0; c < channels; c++) s[l][c] += bn3d_element(x, at + c, is_float);
            }
        for (i = full; i < size; i++) {
            at = r * row_stride + i * position_stride;
            for (c = 0; c < channels; c++) tail[c] += bn3d_element(x, at + c, is_float);
        }
    }
    for (c = 0; c < channels; c++) {
        for (l = 0; l < BN3D_MOMENT_LANES; l++) lanes[l] = s[l][c];
        mean[c] = (bn3d_lanes_tree(lanes) + tail[c]) / n;
    }
    memset(s, 0, sizeof s);
    for (r = 0; r < rows; r++) {
        for (base = 0; base < full; base += BN3D_MOMENT_LANES)
            for (l = 0; l < BN3D_MOMENT_LANES; l++) {
                at = r * row_stride + (base + l) * position_stride;
                for (c = 0; c < channels; c++) {
                    double d = bn3d_element(x, at + c, is_float) - mean[c];
                    s[l][c] += d;
                    q[l][c] += d * d;
                }
            }
        for (i = full; i < size; i++) {
            at = r * row_stride + i * position_stride;
            for (c = 0; c < channels; c++) {
                e = bn3d_element(x, at + c, is_float) - mean[c];
                centred[c] += e;
                squares[c] += e * e;
            }
        }
    }
    for (c = 0; c < channels; c++) {
        for (l = 0; l < BN3D_MOMENT_LANES; l++) lanes[l] = s[l][c];
        centred[c] += bn3d_lanes_tree(lanes);
        for (l = 0; l < BN3D_MOMENT_LANES; l++) lanes[l] = q[l][c];
        squares[c] += bn3d_lanes_tree(lanes);
        m2 = squares[c] - centred[c] * centred[c] / n;
        mean_out[c] = isfinite(mean[c]) ? mean[c] + centred[c] / n : mean[c];
        m2_out[c] = isfinite(mean[c]) ? (m2 < 0 ? 0 : m2) : NAN;
    }
}

/* Full groups (the only width the float and double kernels are called with; narrower
   groups are gathered) take the body with the width a compile-time constant, so that
   each accumulator row is one run of vector additions; the sums are the same. */
static void bn3d_moments_channels_last_float(const float *x, ptrdiff_t position_stride,
                                             ptrdiff_t row_stride, ptrdiff_t rows,
                                             ptrdiff_t size, ptrdiff_t channels, double *mean,
                                             double *m2) {
    if (channels == BN3D_GROUP_CHANNELS)
        bn3d_block_moments_channels_last(x, position_stride, row_stride, rows, size,
                                         BN3D_GROUP_CHANNELS, 1, mean, m2);
    else
        bn3d_block_moments_channels_last(x, position_stride, row_stride, rows, size,
                                         channels, 1, mean, m2);
}

static void bn3d_moments_channels_last_double(const double *x, ptrdiff_t position_stride,
                                              ptrdiff_t row_stride, ptrdiff_t rows,
                                              ptrdiff_t size, ptrdiff_t channels,
                                              double *mean, double *m2) {
    if (channels == BN3D_GROUP_CHANNELS)
        bn3d_block_moments_channels_last(x, position_stride, row_stride, rows, size,
                                         BN3D_GROUP_CHANNELS, 0, mean, m2);
    else
        bn3d_block_moments_channels_last(x, position_stride, row_stride, rows, size,
                                         channels, 0, mean, m2);
}

#endif /* BN3D_MOMENTS_H */
