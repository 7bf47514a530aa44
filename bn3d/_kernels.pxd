# The C kernels (bn3d/_src), as the scheduling in _kernels.pyx sees them: one table of
# functions per instruction set (kernels.h says what each function computes).

cdef extern from "kernels.h" nogil:
    ctypedef struct bn3d_kernel_table:
        int store_bytes
        void (*moments_float)(const float *x, Py_ssize_t stride, Py_ssize_t rows,
                              Py_ssize_t size, double *mean, double *m2) noexcept nogil
        void (*moments_double)(const double *x, Py_ssize_t stride, Py_ssize_t rows,
                               Py_ssize_t size, double *mean, double *m2) noexcept nogil
        void (*gradient_sums_float)(const float *g, const float *x, Py_ssize_t size, double mean,
                                    double *sum, double *dot) noexcept nogil
        void (*gradient_sums_double)(const double *g, const double *x, Py_ssize_t size,
                                     double mean, double *sum, double *dot) noexcept nogil
        void (*gradient_rows_float)(const float *g, Py_ssize_t gn, Py_ssize_t gc, const float *x,
                                    Py_ssize_t xn, Py_ssize_t xc, Py_ssize_t channels,
                                    Py_ssize_t size, Py_ssize_t first, Py_ssize_t last,
                                    const double *mean, double *sums, double *dots) noexcept nogil
        void (*gradient_rows_double)(const double *g, Py_ssize_t gn, Py_ssize_t gc,
                                     const double *x, Py_ssize_t xn, Py_ssize_t xc,
                                     Py_ssize_t channels, Py_ssize_t size, Py_ssize_t first,
                                     Py_ssize_t last, const double *mean, double *sums,
                                     double *dots) noexcept nogil
        void (*affine_float)(const float *x, Py_ssize_t x_stride, float *y, Py_ssize_t y_stride,
                             Py_ssize_t rows, Py_ssize_t size, double mean, double scale,
                             double shift, int stream) noexcept nogil
        void (*affine_double)(const double *x, Py_ssize_t x_stride, double *y,
                              Py_ssize_t y_stride, Py_ssize_t rows, Py_ssize_t size, double mean,
                              double scale, double shift, int stream) noexcept nogil
        void (*affine_rows_float)(const float *x, Py_ssize_t xn, Py_ssize_t xc, float *y,
                                  Py_ssize_t yn, Py_ssize_t yc, Py_ssize_t channels,
                                  Py_ssize_t size, Py_ssize_t first, Py_ssize_t last,
                                  const double *mean, const double *scale,
                                  const double *shift, int stream) noexcept nogil
        void (*affine_rows_double)(const double *x, Py_ssize_t xn, Py_ssize_t xc, double *y,
                                   Py_ssize_t yn, Py_ssize_t yc, Py_ssize_t channels,
                                   Py_ssize_t size, Py_ssize_t first, Py_ssize_t last,
                                   const double *mean, const double *scale,
                                   const double *shift, int stream) noexcept nogil
        void (*grad_input_float)(const float *g, Py_ssize_t g_stride, const float *x,
                                 Py_ssize_t x_stride, float *out, Py_ssize_t out_stride,
                                 Py_ssize_t rows, Py_ssize_t size, const float *k,
                                 int stream) noexcept nogil
        void (*grad_input_double)(const double *g, Py_ssize_t g_stride, const double *x,
                                  Py_ssize_t x_stride, double *out, Py_ssize_t out_stride,
                                  Py_ssize_t rows, Py_ssize_t size, const double *k,
                                  int stream) noexcept nogil
        void (*grad_input_rows_float)(const float *g, Py_ssize_t gn, Py_ssize_t gc,
                                      const float *x, Py_ssize_t xn, Py_ssize_t xc, float *out,
                                      Py_ssize_t on, Py_ssize_t oc, Py_ssize_t channels,
                                      Py_ssize_t size, Py_ssize_t first, Py_ssize_t last,
                                      const float *k, int stream) noexcept nogil
        void (*grad_input_rows_double)(const double *g, Py_ssize_t gn, Py_ssize_t gc,
                                       const double *x, Py_ssize_t xn, Py_ssize_t xc,
                                       double *out, Py_ssize_t on, Py_ssize_t oc,
                                       Py_ssize_t channels, Py_ssize_t size, Py_ssize_t first,
                                       Py_ssize_t last, const double *k, int stream) noexcept nogil

        void (*moments_channels_last_float)(const float *x, Py_ssize_t position_stride,
                                            Py_ssize_t row_stride, Py_ssize_t rows,
                                            Py_ssize_t size, Py_ssize_t channels,
                                            double *mean, double *m2) noexcept nogil
        void (*moments_channels_last_double)(const double *x, Py_ssize_t position_stride,
                                             Py_ssize_t row_stride, Py_ssize_t rows,
                                             Py_ssize_t size, Py_ssize_t channels,
                                             double *mean, double *m2) noexcept nogil
        void (*gradient_sums_channels_last_float)(const float *g, Py_ssize_t g_stride,
                                                  const float *x, Py_ssize_t x_stride,
                                                  Py_ssize_t size, Py_ssize_t channels,
                                                  const double *mean, double *sum,
                                                  double *dot) noexcept nogil
        void (*gradient_sums_channels_last_double)(const double *g, Py_ssize_t g_stride,
                                                   const double *x, Py_ssize_t x_stride,
                                                   Py_ssize_t size, Py_ssize_t channels,
                                                   const double *mean, double *sum,
                                                   double *dot) noexcept nogil
        void (*gather_channels_float)(const float *x, Py_ssize_t position_stride,
                                      Py_ssize_t row_stride, Py_ssize_t rows, Py_ssize_t size,
                                      Py_ssize_t channels, float *out) noexcept nogil
        void (*gather_channels_double)(const double *x, Py_ssize_t position_stride,
                                       Py_ssize_t row_stride, Py_ssize_t rows,
                                       Py_ssize_t size, Py_ssize_t channels,
                                       double *out) noexcept nogil
        void (*affine_periodic_float)(const float *x, float *y, Py_ssize_t count,
                                      Py_ssize_t channels, Py_ssize_t first_channel,
                                      const float *mean_hi, const float *mean_lo,
                                      const float *scale, const float *shift,
                                      int stream) noexcept nogil
        void (*affine_periodic_double)(const double *x, double *y, Py_ssize_t count,
                                       Py_ssize_t channels, Py_ssize_t first_channel,
                                       const double *mean_hi, const double *mean_lo,
                                       const double *scale, const double *shift,
                                       int stream) noexcept nogil
        void (*grad_input_periodic_float)(const float *g, const float *x, float *out,
                                          Py_ssize_t count, Py_ssize_t channels,
                                          Py_ssize_t first_channel, const float *mean_hi,
                                          const float *offset, const float *coefficient,
                                          const float *scale, int stream) noexcept nogil
        void (*grad_input_periodic_double)(const double *g, const double *x, double *out,
                                           Py_ssize_t count, Py_ssize_t channels,
                                           Py_ssize_t first_channel, const double *mean_hi,
                                           const double *offset, const double *coefficient,
                                           const double *scale, int stream) noexcept nogil
        void (*affine_constants_float)(double mean, double scale, double shift,
                                       float *k) noexcept nogil
        void (*affine_constants_double)(double mean, double scale, double shift,
                                        double *k) noexcept nogil
        void (*grad_input_constants_float)(double mean, double grad_mean, double coefficient,
                                           double scale, float *k) noexcept nogil
        void (*grad_input_constants_double)(double mean, double grad_mean,
                                            double coefficient, double scale,
                                            double *k) noexcept nogil

    int bn3d_cpu_store_bytes()
    const bn3d_kernel_table *bn3d_kernels_for(int store_bytes)
    int bn3d_openmp_enabled()
    int bn3d_openmp_max_threads()
    const char *bn3d_compiler_version()

cdef extern from "channel_sums.h" nogil:
    enum: BN3D_EXACT_LIMBS
    ctypedef struct bn3d_exact_sum:
        long long limb[BN3D_EXACT_LIMBS]
        int low
        int high
        unsigned int special
        unsigned int pending
    ctypedef struct bn3d_moment_sums:
        double count
        bn3d_exact_sum deviation
        bn3d_exact_sum scatter
    ctypedef struct bn3d_gradient_totals:
        double count
        bn3d_exact_sum sum
        bn3d_exact_sum dot
    void bn3d_exact_normalise(bn3d_exact_sum *s)
    void bn3d_exact_merge(bn3d_exact_sum *into, const bn3d_exact_sum *source)
    double bn3d_exact_value(const bn3d_exact_sum *s)
    double bn3d_pilot(double mean)
    void bn3d_moment_sums_clear(bn3d_moment_sums *s)
    void bn3d_moment_sums_add(bn3d_moment_sums *s, double pilot, double count, double mean,
                              double m2)
    void bn3d_moment_sums_merge(bn3d_moment_sums *into, const bn3d_moment_sums *source)
    void bn3d_moment_sums_finish(const bn3d_moment_sums *s, double pilot, double *mean,
                                 double *m2)
    void bn3d_gradient_totals_clear(bn3d_gradient_totals *s)
    void bn3d_gradient_totals_add(bn3d_gradient_totals *s, double count, double sum,
                                  double dot)
    void bn3d_gradient_totals_merge(bn3d_gradient_totals *into,
                                    const bn3d_gradient_totals *source)

cdef extern from "simd.h" nogil:
    const int BN3D_STREAMING
    void bn3d_stream_fence()
