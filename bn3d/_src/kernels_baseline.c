/* The kernels for any CPU (on x86-64: SSE2, 16-byte streaming stores). */
#include "kernel_table.h"

const bn3d_kernel_table *const bn3d_kernels_baseline = &bn3d_this_target;
