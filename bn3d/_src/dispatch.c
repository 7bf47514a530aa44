/* Which kernels run: the widest version this CPU has, chosen when the module loads;
 * and what the build was (OpenMP, compiler). */
#include "kernels.h"

#ifdef _OPENMP
#include <omp.h>
#endif

int bn3d_cpu_store_bytes(void) {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11
    __builtin_cpu_init();
    if (bn3d_kernels_x86_64_v4 != NULL && __builtin_cpu_supports("x86-64-v4")) return 64;
    if (bn3d_kernels_x86_64_v3 != NULL && __builtin_cpu_supports("x86-64-v3")) return 32;
#endif
    return bn3d_kernels_baseline->store_bytes;
}

const bn3d_kernel_table *bn3d_kernels_for(int store_bytes) {
    if (store_bytes == 64 && bn3d_kernels_x86_64_v4 != NULL) return bn3d_kernels_x86_64_v4;
    if (store_bytes == 32 && bn3d_kernels_x86_64_v3 != NULL) return bn3d_kernels_x86_64_v3;
    return bn3d_kernels_baseline;
}

int bn3d_openmp_enabled(void) {
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

int bn3d_openmp_max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

const char *bn3d_compiler_version(void) {
#ifdef __VERSION__
    return __VERSION__;
#else
    return "unknown";
#endif
}
