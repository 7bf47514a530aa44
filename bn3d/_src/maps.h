/* The elementwise maps: the normalisation and grad_input, row by row, in the data's
 * precision.
 *
 * affine:     y = ((x - mean_hi) - mean_lo) * scale + shift, where mean_hi + mean_lo
 *             is the double mean split in two values of the data's type, so that the
 *             centring is nearly exact even where |mean| >> std and a constant channel
 *             maps to exactly `shift`;
 * grad_input: out = ((g - offset) - (x - mean_hi) * coefficient) * scale, with the
 *             per-channel constants k = (mean_hi, offset, coefficient, scale).
 *
 * Where `stream`, a row's aligned middle is computed BN3D_STORE_BYTES at a time (each
 * lane the same IEEE operations as the scalar loop) and written with non-temporal
 * stores: streaming never changes a bit.
 */
#ifndef BN3D_MAPS_H
#define BN3D_MAPS_H

#include "simd.h"

/* The two maps' arithmetic, for scalars and vectors alike. */
#define BN3D_AFFINE(x, mean_hi, mean_lo, scale, shift) \
    ((((x) - (mean_hi)) - (mean_lo)) * (scale) + (shift))
#define BN3D_GRAD_INPUT(g, x, mean_hi, offset, coefficient, scale) \
    ((((g) - (offset)) - ((x) - (mean_hi)) * (coefficient)) * (scale))

/* The split of a double mean into mean_hi + mean_lo (mean_lo is 0 for an infinite mean). */
BN3D_INLINE float bn3d_low_float(double mean, float high) {
    return isfinite(high) ? (float)(mean - (double)high) : 0.0f;
}
BN3D_INLINE double bn3d_low_double(double mean, double high) {
    return isfinite(high) ? mean - high : 0.0;
}

BN3D_INLINE void bn3d_affine_row_float(const float *x, float *y, ptrdiff_t size, double mean,
                                       double scale, double shift, int stream) {
    const float mean_hi = (float)mean, mean_lo = bn3d_low_float(mean, mean_hi);
    const float a = (float)scale, b = (float)shift;
    const ptrdiff_t lanes = BN3D_STORE_BYTES / sizeof(float);
    ptrdiff_t i = 0, head = stream ? bn3d_unaligned_head(y, size, sizeof(float)) : size;
    for (; i < head; i++) y[i] = BN3D_AFFINE(x[i], mean_hi, mean_lo, a, b);
    for (; i + lanes <= size; i += lanes)
        bn3d_stream_floats(y + i, BN3D_AFFINE(bn3d_load_store_floats(x + i), mean_hi, mean_lo,
                                              a, b));
    for (; i < size; i++) y[i] = BN3D_AFFINE(x[i], mean_hi, mean_lo, a, b);
}

BN3D_INLINE void bn3d_affine_row_double(const double *x, double *y, ptrdiff_t size,
                                        double mean, double scale, double shift, int stream) {
    const double mean_hi = mean, mean_lo = bn3d_low_double(mean, mean_hi);
    const ptrdiff_t lanes = BN3D_STORE_BYTES / sizeof(double);
    ptrdiff_t i = 0, head = stream ? bn3d_unaligned_head(y, size, sizeof(double)) : size;
    for (; i < head; i++) y[i] = BN3D_AFFINE(x[i], mean_hi, mean_lo, scale, shift);
    for (; i + lanes <= size; i += lanes)
        bn3d_stream_doubles(y + i, BN3D_AFFINE(bn3d_load_store_doubles(x + i), mean_hi, mean_lo,
                                               scale, shift));
    for (; i < size; i++) y[i] = BN3D_AFFINE(x[i], mean_hi, mean_lo, scale, shift);
}

BN3D_INLINE void bn3d_grad_input_row_float(const float *g, const float *x, float *out,
                                           ptrdiff_t size, const float *k, int stream) {
    const float mean_hi = k[0], offset = k[1], coefficient = k[2], scale = k[3];
    const ptrdiff_t lanes = BN3D_STORE_BYTES / sizeof(float);
    ptrdiff_t i = 0, head = stream ? bn3d_unaligned_head(out, size, sizeof(float)) : size;
    for (; i < head; i++)
        out[i] = BN3D_GRAD_INPUT(g[i], x[i], mean_hi, offset, coefficient, scale);
    for (; i + lanes <= size; i += lanes)
        bn3d_stream_floats(out + i, BN3D_GRAD_INPUT(bn3d_load_store_floats(g + i),
                                                    bn3d_load_store_floats(x + i), mean_hi,
                                                    offset, coefficient, scale));
    for (; i < size; i++)
        out[i] = BN3D_GRAD_INPUT(g[i], x[i], mean_hi, offset, coefficient, scale);
}

BN3D_INLINE void bn3d_grad_input_row_double(const double *g, const double *x, double *out,
                                            ptrdiff_t size, const double *k, int stream) {
    const double mean_hi = k[0], offset = k[1], coefficient = k[2], scale = k[3];
    const ptrdiff_t lanes = BN3D_STORE_BYTES / sizeof(double);
    ptrdiff_t i = 0, head = stream ? bn3d_unaligned_head(out, size, sizeof(double)) : size;
    for (; i < head; i++)
        out[i] = BN3D_GRAD_INPUT(g[i], x[i], mean_hi, offset, coefficient, scale);
    for (; i + lanes <= size; i += lanes)
        bn3d_stream_doubles(out + i, BN3D_GRAD_INPUT(bn3d_load_store_doubles(g + i),
                                                     bn3d_load_store_doubles(x + i), mean_hi,
                                                     offset, coefficient, scale));
    for (; i < size; i++)
        out[i] = BN3D_GRAD_INPUT(g[i], x[i], mean_hi, offset, coefficient, scale);
}

/* The affine map of `rows` runs of `size` elements, run r at element r * stride. */
static void bn3d_affine_float(const float *x, ptrdiff_t x_stride, float *y, ptrdiff_t y_stride,
                              ptrdiff_t rows, ptrdiff_t size, double mean, double scale,
                              double shift, int stream) {
    ptrdiff_t r;
    for (r = 0; r < rows; r++)
        bn3d_affine_row_float(x + r * x_stride, y + r * y_stride, size, mean, scale, shift,
                              stream);
}

static void bn3d_affine_double(const double *x, ptrdiff_t x_stride, double *y,
                               ptrdiff_t y_stride, ptrdiff_t rows, ptrdiff_t size, double mean,
                               double scale, double shift, int stream) {
    ptrdiff_t r;
    for (r = 0; r < rows; r++)
        bn3d_affine_row_double(x + r * x_stride, y + r * y_stride, size, mean, scale, shift,
                               stream);
}

/* The affine map of whole rows first..last-1 of (N, C, L) arrays taken in (n, c) order,
   with per-channel constants in double. */
static void bn3d_affine_rows_float(const float *x, ptrdiff_t xn, ptrdiff_t xc, float *y,
                                   ptrdiff_t yn, ptrdiff_t yc, ptrdiff_t channels,
                                   ptrdiff_t size, ptrdiff_t first, ptrdiff_t last,
                                   const double *mean, const double *scale,
                                   const double *shift, int stream) {
    ptrdiff_t r, n, c;
    for (r = first; r < last; r++) {
        n = r / channels;
        c = r % channels;
        bn3d_affine_row_float(x + n * xn + c * xc, y + n * yn + c * yc, size, mean[c], scale[c],
                              shift[c], stream);
    }
}

static void bn3d_affine_rows_double(const double *x, ptrdiff_t xn, ptrdiff_t xc, double *y,
                                    ptrdiff_t yn, ptrdiff_t yc, ptrdiff_t channels,
                                    ptrdiff_t size, ptrdiff_t first, ptrdiff_t last,
                                    const double *mean, const double *scale,
                                    const double *shift, int stream) {
    ptrdiff_t r, n, c;
    for (r = first; r < last; r++) {
        n = r / channels;
        c = r % channels;
        bn3d_affine_row_double(x + n * xn + c * xc, y + n * yn + c * yc, size, mean[c],
                               scale[c], shift[c], stream);
    }
}

/* grad_input of `rows` runs of `size` elements, with one channel's constants k[0:4]. */
static void bn3d_grad_input_float(const float *g, ptrdiff_t g_stride, const float *x,
                                  ptrdiff_t x_stride, float *out, ptrdiff_t out_stride,
                                  ptrdiff_t rows, ptrdiff_t size, const float *k, int stream) {
    ptrdiff_t r;
    for (r = 0; r < rows; r++)
        bn3d_grad_input_row_float(g + r * g_stride, x + r * x_stride, out + r * out_stride,
                                  size, k, stream);
}

static void bn3d_grad_input_double(const double *g, ptrdiff_t g_stride, const double *x,
                                   ptrdiff_t x_stride, double *out, ptrdiff_t out_stride,
                                   ptrdiff_t rows, ptrdiff_t size, const double *k,
                                   int stream) {
    ptrdiff_t r;
    for (r = 0; r < rows; r++)
        bn3d_grad_input_row_double(g + r * g_stride, x + r * x_stride, out + r * out_stride,
                                   size, k, stream);
}

/* grad_input of whole rows first..last-1 taken in (n, c) order, channel c's constants
   at k[4 * c]. */
static void bn3d_grad_input_rows_float(const float *g, ptrdiff_t gn, ptrdiff_t gc,
                                       const float *x, ptrdiff_t xn, ptrdiff_t xc, float *out,
                                       ptrdiff_t on, ptrdiff_t oc, ptrdiff_t channels,
                                       ptrdiff_t size, ptrdiff_t first, ptrdiff_t last,
                                       const float *k, int stream) {
    ptrdiff_t r, n, c;
    for (r = first; r < last; r++) {
        n = r / channels;
        c = r % channels;
        bn3d_grad_input_row_float(g + n * gn + c * gc, x + n * xn + c * xc, out + n * on + c * oc,
                                  size, k + 4 * c, stream);
    }
}

static void bn3d_grad_input_rows_double(const double *g, ptrdiff_t gn, ptrdiff_t gc,
                                        const double *x, ptrdiff_t xn, ptrdiff_t xc,
                                        double *out, ptrdiff_t on, ptrdiff_t oc,
                                        ptrdiff_t channels, ptrdiff_t size, ptrdiff_t first,
                                        ptrdiff_t last, const double *k, int stream) {
    ptrdiff_t r, n, c;
    for (r = first; r < last; r++) {
        n = r / channels;
        c = r % channels;
        bn3d_grad_input_row_double(g + n * gn + c * gc, x + n * xn + c * xc,
                                   out + n * on + c * oc, size, k + 4 * c, stream);
    }
}

#endif /* BN3D_MAPS_H */
