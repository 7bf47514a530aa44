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

    int bn3d_cpu_store_bytes()
    const bn3d_kernel_table *bn3d_kernels_for(int store_bytes)
    int bn3d_openmp_enabled()
    int bn3d_openmp_max_threads()
    const char *bn3d_compiler_version()

cdef extern from "simd.h" nogil:
    const int BN3D_STREAMING
    void bn3d_stream_fence()
