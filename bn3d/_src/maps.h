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

/* The per-channel constants of the maps, in the data's precision. */
static void bn3d_affine_constants_float(double mean, double scale, double shift, float *k) {
    k[0] = (float)mean;
    k[1] = bn3d_low_float(mean, k[0]);
    k[2] = (float)scale;
    k[3] = (float)shift;
}

static void bn3d_affine_constants_double(double mean, double scale, double shift, double *k) {
    k[0] = mean;
    k[1] = bn3d_low_double(mean, mean);
    k[2] = scale;
    k[3] = shift;
}

/* grad_input = (g - grad_mean - (x - mean) * coefficient) * scale as the map's
   (mean_hi, offset, coefficient, scale): for float data the low part of the mean is
   folded into the offset, in double. */
static void bn3d_grad_input_constants_float(double mean, double grad_mean, double coefficient,
                                            double scale, float *k) {
    const float mean_hi = (float)mean;
    k[0] = mean_hi;
    k[1] = isfinite(mean_hi) ? (float)(grad_mean - (mean - (double)mean_hi) * coefficient)
                             : (float)grad_mean;
    k[2] = (float)coefficient;
    k[3] = (float)scale;
}

static void bn3d_grad_input_constants_double(double mean, double grad_mean, double coefficient,
                                             double scale, double *k) {
    k[0] = mean;
    k[1] = grad_mean;
    k[2] = coefficient;
    k[3] = scale;
}

BN3D_INLINE void bn3d_affine_row_float(const float *x, float *y, ptrdiff_t size,
                                       const float *k, int stream) {
    const float mean_hi = k[0], mean_lo = k[1], a = k[2], b = k[3];
    const ptrdiff_t lanes = BN3D_STORE_BYTES / sizeof(float);
    ptrdiff_t i = 0, head = stream ? bn3d_unaligned_head(y, size, sizeof(float)) : size;
    for (; i < head; i++) y[i] = BN3D_AFFINE(x[i], mean_hi, mean_lo, a, b);
    for (; i + lanes <= size; i += lanes)
        bn3d_stream_floats(y + i, BN3D_AFFINE(bn3d_load_store_floats(x + i), mean_hi, mean_lo,
                                              a, b));
    for (; i < size; i++) y[i] = BN3D_AFFINE(x[i], mean_hi, mean_lo, a, b);
}

BN3D_INLINE void bn3d_affine_row_double(const double *x, double *y, ptrdiff_t size,
                                        const double *k, int stream) {
    const double mean_hi = k[0], mean_lo = k[1], scale = k[2], shift = k[3];
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
    float k[4];
    ptrdiff_t r;
    bn3d_affine_constants_float(mean, scale, shift, k);
    for (r = 0; r < rows; r++)
        bn3d_affine_row_float(x + r * x_stride, y + r * y_stride, size, k, stream);
}

static void bn3d_affine_double(const double *x, ptrdiff_t x_stride, double *y,
                               ptrdiff_t y_stride, ptrdiff_t rows, ptrdiff_t size, double mean,
                               double scale, double shift, int stream) {
    double k[4];
    ptrdiff_t r;
    bn3d_affine_constants_double(mean, scale, shift, k);
    for (r = 0; r < rows; r++)
        bn3d_affine_row_double(x + r * x_stride, y + r * y_stride, size, k, stream);
}

/* The affine map of whole rows first..last-1 of (N, C, L) arrays taken in (n, c) order,
   with per-channel constants in double. */
static void bn3d_affine_rows_float(const float *x, ptrdiff_t xn, ptrdiff_t xc, float *y,
                                   ptrdiff_t yn, ptrdiff_t yc, ptrdiff_t channels,
                                   ptrdiff_t size, ptrdiff_t first, ptrdiff_t last,
                                   const double *mean, const double *scale,
                                   const double *shift, int stream) {
    float k[4];
    ptrdiff_t r, n, c;
    for (r = first; r < last; r++) {
        n = r / channels;
        c = r % channels;
        bn3d_affine_constants_float(mean[c], scale[c], shift[c], k);
        bn3d_affine_row_float(x + n * xn + c * xc, y + n * yn + c * yc, size, k, stream);
    }
}

static void bn3d_affine_rows_double(const double *x, ptrdiff_t xn, ptrdiff_t xc, double *y,
                                    ptrdiff_t yn, ptrdiff_t yc, ptrdiff_t channels,
                                    ptrdiff_t size, ptrdiff_t first, ptrdiff_t last,
                                    const double *mean, const double *scale,
                                    const double *shift, int stream) {
    double k[4];
    ptrdiff_t r, n, c;
    for (r = first; r < last; r++) {
        n = r / channels;
        c = r % channels;
        bn3d_affine_constants_double(mean[c], scale[c], shift[c], k);
        bn3d_affine_row_double(x + n * xn + c * xc, y + n * yn + c * yc, size, k, stream);
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


/* Channels last: the maps over `count` elements of a sample's contiguous
 * (positions, channels) slab, element i in channel i % channels. The constants are
 * given per channel, k[j] for channel j % channels for j < channels + 16 (repeated),
 * so that a vector of lanes starting at any channel reads them contiguously; each lane
 * takes the same IEEE operations as the scalar loop. */
#define BN3D_PERIODIC_LANES_FLOAT (BN3D_STORE_BYTES / (ptrdiff_t)sizeof(float))
#define BN3D_PERIODIC_LANES_DOUBLE (BN3D_STORE_BYTES / (ptrdiff_t)sizeof(double))

static void bn3d_affine_periodic_float(const float *x, float *y, ptrdiff_t count,
                                       ptrdiff_t channels, ptrdiff_t first_channel,
                                       const float *mean_hi, const float *mean_lo,
                                       const float *scale, const float *shift, int stream) {
    const ptrdiff_t lanes = BN3D_PERIODIC_LANES_FLOAT, step = lanes % channels;
    ptrdiff_t i = 0, c = first_channel;
    ptrdiff_t head = stream ? bn3d_unaligned_head(y, count, sizeof(float)) : 0;
    bn3d_store_floats v;
    for (; i < head; i++, c = c + 1 == channels ? 0 : c + 1)
        y[i] = BN3D_AFFINE(x[i], mean_hi[c], mean_lo[c], scale[c], shift[c]);
    for (; i + lanes <= count; i += lanes) {
        v = BN3D_AFFINE(bn3d_load_store_floats(x + i), bn3d_load_store_floats(mean_hi + c),
                        bn3d_load_store_floats(mean_lo + c), bn3d_load_store_floats(scale + c),
                        bn3d_load_store_floats(shift + c));
        if (stream)
            bn3d_stream_floats(y + i, v);
        else
            memcpy(y + i, &v, sizeof v);
        c += step;
        if (c >= channels) c -= channels;
    }
    for (; i < count; i++, c = c + 1 == channels ? 0 : c + 1)
        y[i] = BN3D_AFFINE(x[i], mean_hi[c], mean_lo[c], scale[c], shift[c]);
}

static void bn3d_affine_periodic_double(const double *x, double *y, ptrdiff_t count,
                                        ptrdiff_t channels, ptrdiff_t first_channel,
                                        const double *mean_hi, const double *mean_lo,
                                        const double *scale, const double *shift, int stream) {
    const ptrdiff_t lanes = BN3D_PERIODIC_LANES_DOUBLE, step = lanes % channels;
    ptrdiff_t i = 0, c = first_channel;
    ptrdiff_t head = stream ? bn3d_unaligned_head(y, count, sizeof(double)) : 0;
    bn3d_store_doubles v;
    for (; i < head; i++, c = c + 1 == channels ? 0 : c + 1)
        y[i] = BN3D_AFFINE(x[i], mean_hi[c], mean_lo[c], scale[c], shift[c]);
    for (; i + lanes <= count; i += lanes) {
        v = BN3D_AFFINE(bn3d_load_store_doubles(x + i), bn3d_load_store_doubles(mean_hi + c),
                        bn3d_load_store_doubles(mean_lo + c),
                        bn3d_load_store_doubles(scale + c), bn3d_load_store_doubles(shift + c));
        if (stream)
            bn3d_stream_doubles(y + i, v);
        else
            memcpy(y + i, &v, sizeof v);
        c += step;
        if (c >= channels) c -= channels;
    }
    for (; i < count; i++, c = c + 1 == channels ? 0 : c + 1)
        y[i] = BN3D_AFFINE(x[i], mean_hi[c], mean_lo[c], scale[c], shift[c]);
}

static void bn3d_grad_input_periodic_float(const float *g, const float *x, float *out,
                                           ptrdiff_t count, ptrdiff_t channels,
                                           ptrdiff_t first_channel, const float *mean_hi,
                                           const float *offset, const float *coefficient,
                                           const float *scale, int stream) {
    const ptrdiff_t lanes = BN3D_PERIODIC_LANES_FLOAT, step = lanes % channels;
    ptrdiff_t i = 0, c = first_channel;
    ptrdiff_t head = stream ? bn3d_unaligned_head(out, count, sizeof(float)) : 0;
    bn3d_store_floats v;
    for (; i < head; i++, c = c + 1 == channels ? 0 : c + 1)
        out[i] = BN3D_GRAD_INPUT(g[i], x[i], mean_hi[c], offset[c], coefficient[c], scale[c]);
    for (; i + lanes <= count; i += lanes) {
        v = BN3D_GRAD_INPUT(bn3d_load_store_floats(g + i), bn3d_load_store_floats(x + i),
                            bn3d_load_store_floats(mean_hi + c),
                            bn3d_load_store_floats(offset + c),
                            bn3d_load_store_floats(coefficient + c),
                            bn3d_load_store_floats(scale + c));
        if (stream)
            bn3d_stream_floats(out + i, v);
        else
            memcpy(out + i, &v, sizeof v);
        c += step;
        if (c >= channels) c -= channels;
    }
    for (; i < count; i++, c = c + 1 == channels ? 0 : c + 1)
        out[i] = BN3D_GRAD_INPUT(g[i], x[i], mean_hi[c], offset[c], coefficient[c], scale[c]);
}

static void bn3d_grad_input_periodic_double(const double *g, const double *x, double *out,
                                            ptrdiff_t count, ptrdiff_t channels,
                                            ptrdiff_t first_channel, const double *mean_hi,
                                            const double *offset, const double *coefficient,
                                            const double *scale, int stream) {
    const ptrdiff_t lanes = BN3D_PERIODIC_LANES_DOUBLE, step = lanes % channels;
    ptrdiff_t i = 0, c = first_channel;
    ptrdiff_t head = stream ? bn3d_unaligned_head(out, count, sizeof(double)) : 0;
    bn3d_store_doubles v;
    for (; i < head; i++, c = c + 1 == channels ? 0 : c + 1)
        out[i] = BN3D_GRAD_INPUT(g[i], x[i], mean_hi[c], offset[c], coefficient[c], scale[c]);
    for (; i + lanes <= count; i += lanes) {
        v = BN3D_GRAD_INPUT(bn3d_load_store_doubles(g + i), bn3d_load_store_doubles(x + i),
                            bn3d_load_store_doubles(mean_hi + c),
                            bn3d_load_store_doubles(offset + c),
                            bn3d_load_store_doubles(coefficient + c),
                            bn3d_load_store_doubles(scale + c));
        if (stream)
            bn3d_stream_doubles(out + i, v);
        else
            memcpy(out + i, &v, sizeof v);
        c += step;
        if (c >= channels) c -= channels;
    }
    for (; i < count; i++, c = c + 1 == channels ? 0 : c + 1)
        out[i] = BN3D_GRAD_INPUT(g[i], x[i], mean_hi[c], offset[c], coefficient[c], scale[c]);
}

#endif /* BN3D_MAPS_H */
