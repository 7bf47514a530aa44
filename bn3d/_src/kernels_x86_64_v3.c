/* The kernels for x86-64-v3 (AVX2, 32-byte streaming stores), where GCC builds them. */
#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
#pragma GCC target("arch=x86-64-v3")
#include "kernel_table.h"
const bn3d_kernel_table *const bn3d_kernels_x86_64_v3 = &bn3d_this_target;
#else
const bn3d_kernel_table *const bn3d_kernels_x86_64_v3 = NULL;
#endif
