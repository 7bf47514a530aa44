/* bn3d's numerical kernels, as a table of functions for one instruction set.
 *
 * The kernels (moments.h, gradient_sums.h, maps.h, gather.h) are written once and compiled once
 * per instruction set: kernels_x86_64_v4.c (AVX-512), kernels_x86_64_v3.c (AVX2) and
 * kernels_baseline.c each include kernel_table.h under their own target and export the
 * table of their versions; dispatch.c chooses a table when the module loads. All
 * versions give the same bits: the order of every operation is fixed by the source
 * (no reassociation, no fused multiply-add: -ffp-contract=off), whatever registers
 * carry it.
 */
#ifndef BN3D_KERNELS_H
#define BN3D_KERNELS_H

#include <stddef.h>

typedef struct bn3d_kernel_table {
    int store_bytes; /* the width of the streaming stores of these versions */
    void (*moments_float)(const float *x, ptrdiff_t stride, ptrdiff_t rows, ptrdiff_t size,
                          double *mean, double *m2);
    void (*moments_double)(const double *x, ptrdiff_t stride, ptrdiff_t rows, ptrdiff_t size,
                           double *mean, double *m2);
    void (*gradient_sums_float)(const float *g, const float *x, ptrdiff_t size, double mean,
                                double *sum, double *dot);
    void (*gradient_sums_double)(const double *g, const double *x, ptrdiff_t size,
                                 double mean, double *sum, double *dot);
    void (*gradient_rows_float)(const float *g, ptrdiff_t gn, ptrdiff_t gc, const float *x,
                                ptrdiff_t xn, ptrdiff_t xc, ptrdiff_t channels, ptrdiff_t size,
                                ptrdiff_t first, ptrdiff_t last, const double *mean,
                                double *sums, double *dots);
    void (*gradient_rows_double)(const double *g, ptrdiff_t gn, ptrdiff_t gc, const double *x,
                                 ptrdiff_t xn, ptrdiff_t xc, ptrdiff_t channels, ptrdiff_t size,
                                 ptrdiff_t first, ptrdiff_t last, const double *mean,
                                 double *sums, double *dots);
    void (*affine_float)(const float *x, ptrdiff_t x_stride, float *y, ptrdiff_t y_stride,
                         ptrdiff_t rows, ptrdiff_t size, double mean, double scale,
                         double shift, int stream);
    void (*affine_double)(const double *x, ptrdiff_t x_stride, double *y, ptrdiff_t y_stride,
                          ptrdiff_t rows, ptrdiff_t size, double mean, double scale,
                          double shift, int stream);
    void (*affine_rows_float)(const float *x, ptrdiff_t xn, ptrdiff_t xc, float *y, ptrdiff_t yn,
                              ptrdiff_t yc, ptrdiff_t channels, ptrdiff_t size, ptrdiff_t first,
                              ptrdiff_t last, const double *mean, const double *scale,
                              const double *shift, int stream);
    void (*affine_rows_double)(const double *x, ptrdiff_t xn, ptrdiff_t xc, double *y,
                               ptrdiff_t yn, ptrdiff_t yc, ptrdiff_t channels, ptrdiff_t size,
                               ptrdiff_t first, ptrdiff_t last, const double *mean,
                               const double *scale, const double *shift, int stream);
    void (*grad_input_float)(const float *g, ptrdiff_t g_stride, const float *x,
                             ptrdiff_t x_stride, float *out, ptrdiff_t out_stride,
                             ptrdiff_t rows, ptrdiff_t size, const float *k, int stream);
    void (*grad_input_double)(const double *g, ptrdiff_t g_stride, const double *x,
                              ptrdiff_t x_stride, double *out, ptrdiff_t out_stride,
                              ptrdiff_t rows, ptrdiff_t size, const double *k, int stream);
    void (*grad_input_rows_float)(const float *g, ptrdiff_t gn, ptrdiff_t gc, const float *x,
                                  ptrdiff_t xn, ptrdiff_t xc, float *out, ptrdiff_t on,
                                  ptrdiff_t oc, ptrdiff_t channels, ptrdiff_t size,
                                  ptrdiff_t first, ptrdiff_t last, const float *k, int stream);
    void (*grad_input_rows_double)(const double *g, ptrdiff_t gn, ptrdiff_t gc,
                                   const double *x, ptrdiff_t xn, ptrdiff_t xc, double *out,
                                   ptrdiff_t on, ptrdiff_t oc, ptrdiff_t channels,
                                   ptrdiff_t size, ptrdiff_t first, ptrdiff_t last,
                                   const double *k, int stream);
    /* channels last (moments.h, gradient_sums.h, gather.h, maps.h) */
    void (*moments_channels_last_float)(const float *x, ptrdiff_t position_stride,
                                        ptrdiff_t row_stride, ptrdiff_t rows, ptrdiff_t size,
                                        ptrdiff_t channels, double *mean, double *m2);
    void (*moments_channels_last_double)(const double *x, ptrdiff_t position_stride,
                                         ptrdiff_t row_stride, ptrdiff_t rows, ptrdiff_t size,
                                         ptrdiff_t channels, double *mean, double *m2);
    void (*gradient_sums_channels_last_float)(const float *g, ptrdiff_t g_stride,
                                              const float *x, ptrdiff_t x_stride,
                                              ptrdiff_t size, ptrdiff_t channels,
                                              const double *mean, double *sum, double *dot);
    void (*gradient_sums_channels_last_double)(const double *g, ptrdiff_t g_stride,
                                               const double *x, ptrdiff_t x_stride,
                                               ptrdiff_t size, ptrdiff_t channels,
                                               const double *mean, double *sum, double *dot);
    void (*gather_channels_float)(const float *x, ptrdiff_t position_stride,
                                  ptrdiff_t row_stride, ptrdiff_t rows, ptrdiff_t size,
                                  ptrdiff_t channels, float *out);
    void (*gather_channels_double)(const double *x, ptrdiff_t position_stride,
                                   ptrdiff_t row_stride, ptrdiff_t rows, ptrdiff_t size,
                                   ptrdiff_t channels, double *out);
    void (*affine_periodic_float)(const float *x, float *y, ptrdiff_t count, ptrdiff_t channels,
                                  ptrdiff_t first_channel, const float *mean_hi,
                                  const float *mean_lo, const float *scale, const float *shift,
                                  int stream);
    void (*affine_periodic_double)(const double *x, double *y, ptrdiff_t count,
                                   ptrdiff_t channels, ptrdiff_t first_channel,
                                   const double *mean_hi, const double *mean_lo,
                                   const double *scale, const double *shift, int stream);
    void (*grad_input_periodic_float)(const float *g, const float *x, float *out,
                                      ptrdiff_t count, ptrdiff_t channels,
                                      ptrdiff_t first_channel, const float *mean_hi,
                                      const float *offset, const float *coefficient,
                                      const float *scale, int stream);
    void (*grad_input_periodic_double)(const double *g, const double *x, double *out,
                                       ptrdiff_t count, ptrdiff_t channels,
                                       ptrdiff_t first_channel, const double *mean_hi,
                                       const double *offset, const double *coefficient,
                                       const double *scale, int stream);
    /* the maps' per-channel constants in the data's precision (maps.h) */
    void (*affine_constants_float)(double mean, double scale, double shift, float *k);
    void (*affine_constants_double)(double mean, double scale, double shift, double *k);
    void (*grad_input_constants_float)(double mean, double grad_mean, double coefficient,
                                       double scale, float *k);
    void (*grad_input_constants_double)(double mean, double grad_mean, double coefficient,
                                        double scale, double *k);
} bn3d_kernel_table;

/* The tables of each instruction set (NULL where this build has none) and the choice. */
extern const bn3d_kernel_table *const bn3d_kernels_baseline;
extern const bn3d_kernel_table *const bn3d_kernels_x86_64_v3;
extern const bn3d_kernel_table *const bn3d_kernels_x86_64_v4;
/* The widest streaming store (64, 32 or 16 bytes) whose kernels this CPU can run. */
int bn3d_cpu_store_bytes(void);
/* The kernels with streaming stores of `store_bytes` (at most bn3d_cpu_store_bytes()). */
const bn3d_kernel_table *bn3d_kernels_for(int store_bytes);
/* Whether the kernels were compiled with OpenMP, and omp_get_max_threads() (or 1). */
int bn3d_openmp_enabled(void);
int bn3d_openmp_max_threads(void);
/* The compiler's version string. */
const char *bn3d_compiler_version(void);

#endif /* BN3D_KERNELS_H */
