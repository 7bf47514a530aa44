/* Gradient sums: sum(g) and sum(g * (x - mean)) of one run of elements of a channel
 * (a segment of a long row, or a whole short row), and of whole short rows.
 *
 * float64 data: in double, 16 lanes (elements i % 16 == lane) in four vectors of 4,
 * the lanes added in a fixed tree.
 * float32 data: the products g * (x - mean_hi) and runs of 8 vector steps (128
 * elements) are summed in float, in two accumulators of 8 lanes that are added when
 * the run ends and flushed into 8 double lanes (added in a fixed tree at the end);
 * the low part of the mean enters as - mean_lo * sum(g), in double. The error stays
 * at the level of the float rounding of the data, the channel sums are still double.
 */
#ifndef BN3D_GRADIENT_SUMS_H
#define BN3D_GRADIENT_SUMS_H

#include "simd.h"

/* The 16 lanes of four accumulators, added in a fixed tree. */
BN3D_INLINE double bn3d_sixteen_lanes(bn3d_f64x4 a, bn3d_f64x4 b, bn3d_f64x4 c, bn3d_f64x4 d) {
    bn3d_f64x4 v = (a + b) + (c + d);
    return (v[0] + v[1]) + (v[2] + v[3]);
}

BN3D_INLINE void bn3d_gradient_run_double(const double *g, const double *x, ptrdiff_t size,
                                          double mean, double *sum_out, double *dot_out) {
    bn3d_f64x4 s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
    bn3d_f64x4 p0 = {0}, p1 = {0}, p2 = {0}, p3 = {0};
    bn3d_f64x4 g0, g1, g2, g3, c = mean - (bn3d_f64x4){0};
    ptrdiff_t i, full = size - size % 16;
    double sum = 0, dot = 0;
    for (i = 0; i < full; i += 16) {
        g0 = bn3d_load_f64x4(g + i);
        g1 = bn3d_load_f64x4(g + i + 4);
        g2 = bn3d_load_f64x4(g + i + 8);
        g3 = bn3d_load_f64x4(g + i + 12);
        s0 += g0;
        s1 += g1;
        s2 += g2;
        s3 += g3;
        p0 += g0 * (bn3d_load_f64x4(x + i) - c);
        p1 += g1 * (bn3d_load_f64x4(x + i + 4) - c);
        p2 += g2 * (bn3d_load_f64x4(x + i + 8) - c);
        p3 += g3 * (bn3d_load_f64x4(x + i + 12) - c);
    }
    for (i = full; i < size; i++) {
        sum += g[i];
        dot += g[i] * (x[i] - mean);
    }
    *sum_out = sum + bn3d_sixteen_lanes(s0, s1, s2, s3);
    *dot_out = dot + bn3d_sixteen_lanes(p0, p1, p2, p3);
}

#define BN3D_FLOAT_RUN 128

/* Add the 8 float lanes of run into the double lanes low (0-3) and high (4-7). */
BN3D_INLINE void bn3d_flush_run(bn3d_f32x8 run, bn3d_f64x4 *low, bn3d_f64x4 *high) {
    bn3d_f32x4 half;
    memcpy(&half, &run, sizeof half);
    *low += __builtin_convertvector(half, bn3d_f64x4);
    memcpy(&half, (const char *)&run + sizeof half, sizeof half);
    *high += __builtin_convertvector(half, bn3d_f64x4);
}

BN3D_INLINE void bn3d_gradient_run_float(const float *g, const float *x, ptrdiff_t size,
                                         double mean, double *sum_out, double *dot_out) {
    const float mean_hi = (float)mean;
    const double mean_lo = isfinite(mean_hi) ? mean - (double)mean_hi : 0.0;
    bn3d_f64x4 s_lo = {0}, s_hi = {0}, p_lo = {0}, p_hi = {0}, lanes;
    bn3d_f32x8 sum_a = {0}, sum_b = {0}, dot_a = {0}, dot_b = {0}, g_a, g_b;
    ptrdiff_t i, in_run = 0, full = size - size % 16;
    double sum = 0, dot = 0;
    for (i = 0; i < full; i += 16) {
        g_a = bn3d_load_f32x8(g + i);
        g_b = bn3d_load_f32x8(g + i + 8);
        sum_a += g_a;
        sum_b += g_b;
        dot_a += g_a * (bn3d_load_f32x8(x + i) - mean_hi);
        dot_b += g_b * (bn3d_load_f32x8(x + i + 8) - mean_hi);
        in_run += 16;
        if (in_run == BN3D_FLOAT_RUN) {
            bn3d_flush_run(sum_a + sum_b, &s_lo, &s_hi);
            bn3d_flush_run(dot_a + dot_b, &p_lo, &p_hi);
            sum_a = sum_b = dot_a = dot_b = (bn3d_f32x8){0};
            in_run = 0;
        }
    }
    if (in_run > 0) {
        bn3d_flush_run(sum_a + sum_b, &s_lo, &s_hi);
        bn3d_flush_run(dot_a + dot_b, &p_lo, &p_hi);
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

/* The gradient sums of one run of `size` elements of g and x, which hold floats or
   doubles (is_float, a constant once inlined), from element offsets g_at and x_at. */
BN3D_INLINE void bn3d_gradient_run(const void *g, ptrdiff_t g_at, const void *x, ptrdiff_t x_at,
                                   ptrdiff_t size, double mean, int is_float, double *sum,
                                   double *dot) {
    if (is_float)
        bn3d_gradient_run_float((const float *)g + g_at, (const float *)x + x_at, size, mean,
                                sum, dot);
    else
        bn3d_gradient_run_double((const double *)g + g_at, (const double *)x + x_at, size, mean,
                                 sum, dot);
}

/* Whole rows n = first..last-1 of every channel of (N, C, L) arrays (strides gn, gc and
   xn, xc between rows), in memory order: the sums of row (n, c) are added to sums[c]
   and dots[c] (in n order for each channel). */
BN3D_INLINE void bn3d_gradient_rows(const void *g, ptrdiff_t gn, ptrdiff_t gc, const void *x,
                                    ptrdiff_t xn, ptrdiff_t xc, ptrdiff_t channels,
                                    ptrdiff_t size, ptrdiff_t first, ptrdiff_t last,
                                    const double *mean, int is_float, double *sums,
                                    double *dots) {
    ptrdiff_t n, c;
    double sum, dot;
    for (n = first; n < last; n++)
        for (c = 0; c < channels; c++) {
            bn3d_gradient_run(g, n * gn + c * gc, x, n * xn + c * xc, size, mean[c], is_float,
                              &sum, &dot);
            sums[c] += sum;
            dots[c] += dot;
        }
}

static void bn3d_gradient_sums_float(const float *g, const float *x, ptrdiff_t size,
                                     double mean, double *sum, double *dot) {
    bn3d_gradient_run_float(g, x, size, mean, sum, dot);
}

static void bn3d_gradient_sums_double(const double *g, const double *x, ptrdiff_t size,
                                      double mean, double *sum, double *dot) {
    bn3d_gradient_run_double(g, x, size, mean, sum, dot);
}

static void bn3d_gradient_rows_float(const float *g, ptrdiff_t gn, ptrdiff_t gc,
                                     const float *x, ptrdiff_t xn, ptrdiff_t xc,
                                     ptrdiff_t channels, ptrdiff_t size, ptrdiff_t first,
                                     ptrdiff_t last, const double *mean, double *sums,
                                     double *dots) {
    bn3d_gradient_rows(g, gn, gc, x, xn, xc, channels, size, first, last, mean, 1, sums, dots);
}

static void bn3d_gradient_rows_double(const double *g, ptrdiff_t gn, ptrdiff_t gc,
                                      const double *x, ptrdiff_t xn, ptrdiff_t xc,
                                      ptrdiff_t channels, ptrdiff_t size, ptrdiff_t first,
                                      ptrdiff_t last, const double *mean, double *sums,
                                      double *dots) {
    bn3d_gradient_rows(g, gn, gc, x, xn, xc, channels, size, first, last, mean, 0, sums, dots);
}

/* Channels last: the gradient sums of one run of `size` positions for up to
 * BN3D_GROUP_CHANNELS consecutive channels, element i of channel c at
 * g[i * g_stride + c] and x[i * x_stride + c]. Each channel's sums take exactly the
 * operations of bn3d_gradient_run_float / _double on its own elements (the same lanes,
 * runs and flushes, in the same order), vectorised across channels, so they do not
 * depend on the layout. */
#define BN3D_GROUP_CHANNELS_GRADIENT 16

/* bn3d_flush_run for each channel: the 16 float lanes of a run (lanes j and j + 8
   added: bn3d_gradient_run_float's two accumulators) into double lanes 0-3 and 4-7,
   then the run's lanes cleared. */
BN3D_INLINE void bn3d_flush_runs_channels_last(
        float run_sum[16][BN3D_GROUP_CHANNELS_GRADIENT],
        float run_dot[16][BN3D_GROUP_CHANNELS_GRADIENT],
        double low_sum[4][BN3D_GROUP_CHANNELS_GRADIENT],
        double high_sum[4][BN3D_GROUP_CHANNELS_GRADIENT],
        double low_dot[4][BN3D_GROUP_CHANNELS_GRADIENT],
        double high_dot[4][BN3D_GROUP_CHANNELS_GRADIENT], ptrdiff_t channels) {
    ptrdiff_t c;
    int j;
    for (c = 0; c < channels; c++)
        for (j = 0; j < 4; j++) {
            low_sum[j][c] += (double)(run_sum[j][c] + run_sum[j + 8][c]);
            high_sum[j][c] += (double)(run_sum[j + 4][c] + run_sum[j + 12][c]);
            low_dot[j][c] += (double)(run_dot[j][c] + run_dot[j + 8][c]);
            high_dot[j][c] += (double)(run_dot[j + 4][c] + run_dot[j + 12][c]);
        }
    memset(run_sum, 0, sizeof(float[16][BN3D_GROUP_CHANNELS_GRADIENT]));
    memset(run_dot, 0, sizeof(float[16][BN3D_GROUP_CHANNELS_GRADIENT]));
}

static void bn3d_gradient_sums_channels_last_double(const double *g, ptrdiff_t g_stride,
                                                    const double *x, ptrdiff_t x_stride,
                                                    ptrdiff_t size, ptrdiff_t channels,
                                                    const double *mean, double *sum_out,
                                                    double *dot_out) {
    double s[16][BN3D_GROUP_CHANNELS_GRADIENT], p[16][BN3D_GROUP_CHANNELS_GRADIENT];
    double sum[BN3D_GROUP_CHANNELS_GRADIENT], dot[BN3D_GROUP_CHANNELS_GRADIENT];
    ptrdiff_t i, c, full = size - size % 16;
    double gi, v[4];
    int j;
    memset(s, 0, sizeof s);
    memset(p, 0, sizeof p);
    for (c = 0; c < channels; c++) sum[c] = dot[c] = 0;
    for (i = 0; i < full; i++)
        for (c = 0; c < channels; c++) {
            gi = g[i * g_stride + c];
            s[i % 16][c] += gi;
            p[i % 16][c] += gi * (x[i * x_stride + c] - mean[c]);
        }
    for (i = full; i < size; i++)
        for (c = 0; c < channels; c++) {
            gi = g[i * g_stride + c];
            sum[c] += gi;
            dot[c] += gi * (x[i * x_stride + c] - mean[c]);
        }
    for (c = 0; c < channels; c++) {
        /* bn3d_sixteen_lanes: four vectors of lanes 0-3, 4-7, 8-11, 12-15 */
        for (j = 0; j < 4; j++) v[j] = (s[j][c] + s[4 + j][c]) + (s[8 + j][c] + s[12 + j][c]);
        sum_out[c] = sum[c] + ((v[0] + v[1]) + (v[2] + v[3]));
        for (j = 0; j < 4; j++) v[j] = (p[j][c] + p[4 + j][c]) + (p[8 + j][c] + p[12 + j][c]);
        dot_out[c] = dot[c] + ((v[0] + v[1]) + (v[2] + v[3]));
    }
}

BN3D_INLINE void bn3d_gradient_sums_channels_last_float_body(
        const float *g, ptrdiff_t g_stride, const float *x, ptrdiff_t x_stride, ptrdiff_t size,
        ptrdiff_t channels, const double *mean, double *sum_out, double *dot_out) {
    enum { G = BN3D_GROUP_CHANNELS_GRADIENT };
    float mean_hi[G], run_sum[16][G], run_dot[16][G], gi, flushed;
    double mean_lo[G], low_sum[4][G], high_sum[4][G], low_dot[4][G], high_dot[4][G];
    double sum[G], dot[G], lane[4];
    ptrdiff_t i, c, base, in_run = 0, full = size - size % 16;
    int j;
    memset(run_sum, 0, sizeof run_sum);
    memset(run_dot, 0, sizeof run_dot);
    memset(low_sum, 0, sizeof low_sum);
    memset(high_sum, 0, sizeof high_sum);
    memset(low_dot, 0, sizeof low_dot);
    memset(high_dot, 0, sizeof high_dot);
    for (c = 0; c < channels; c++) {
        mean_hi[c] = (float)mean[c];
        mean_lo[c] = isfinite(mean_hi[c]) ? mean[c] - (double)mean_hi[c] : 0.0;
        sum[c] = dot[c] = 0;
    }
    for (base = 0; base < full; base += 16) {
        for (j = 0; j < 16; j++) {
            i = base + j;
            for (c = 0; c < channels; c++) {
                gi = g[i * g_stride + c];
                run_sum[j][c] += gi;
                run_dot[j][c] += gi * (x[i * x_stride + c] - mean_hi[c]);
            }
        }
        in_run += 16;
        if (in_run == BN3D_FLOAT_RUN) {
            bn3d_flush_runs_channels_last(run_sum, run_dot, low_sum, high_sum, low_dot,
                                          high_dot, channels);
            in_run = 0;
        }
    }
    if (in_run > 0)
        bn3d_flush_runs_channels_last(run_sum, run_dot, low_sum, high_sum, low_dot, high_dot,
                                      channels);
    for (i = full; i < size; i++)
        for (c = 0; c < channels; c++) {
            gi = g[i * g_stride + c];
            sum[c] += gi;
            flushed = gi * (x[i * x_stride + c] - mean_hi[c]);
            dot[c] += (double)flushed;
        }
    for (c = 0; c < channels; c++) {
        for (j = 0; j < 4; j++) lane[j] = low_sum[j][c] + high_sum[j][c];
        sum[c] += (lane[0] + lane[1]) + (lane[2] + lane[3]);
        for (j = 0; j < 4; j++) lane[j] = low_dot[j][c] + high_dot[j][c];
        dot[c] += (lane[0] + lane[1]) + (lane[2] + lane[3]);
        sum_out[c] = sum[c];
        dot_out[c] = dot[c] - mean_lo[c] * sum[c];
    }
}

/* Full groups take the body with the width a compile-time constant (vector additions
   across the channels); the sums are the same. */
static void bn3d_gradient_sums_channels_last_float(const float *g, ptrdiff_t g_stride,
                                                   const float *x, ptrdiff_t x_stride,
                                                   ptrdiff_t size, ptrdiff_t channels,
                                                   const double *mean, double *sum_out,
                                                   double *dot_out) {
    if (channels == BN3D_GROUP_CHANNELS_GRADIENT)
        bn3d_gradient_sums_channels_last_float_body(g, g_stride, x, x_stride, size,
                                                    BN3D_GROUP_CHANNELS_GRADIENT, mean,
                                                    sum_out, dot_out);
    else
        bn3d_gradient_sums_channels_last_float_body(g, g_stride, x, x_stride, size, channels,
                                                    mean, sum_out, dot_out);
}

#endif /* BN3D_GRADIENT_SUMS_H */
