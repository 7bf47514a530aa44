/* The table of the kernels as compiled for the including translation unit's target.
 * Included once, after that unit's target is set (see kernels.h). */
#ifndef BN3D_KERNEL_TABLE_H
#define BN3D_KERNEL_TABLE_H

#include "gather.h"
#include "gradient_sums.h"
#include "kernels.h"
#include "maps.h"
#include "moments.h"

static const bn3d_kernel_table bn3d_this_target = {
    BN3D_STORE_BYTES,
    bn3d_moments_float,
    bn3d_moments_double,
    bn3d_gradient_sums_float,
    bn3d_gradient_sums_double,
    bn3d_gradient_rows_float,
    bn3d_gradient_rows_double,
    bn3d_affine_float,
    bn3d_affine_double,
    bn3d_affine_rows_float,
    bn3d_affine_rows_double,
    bn3d_grad_input_float,
    bn3d_grad_input_double,
    bn3d_grad_input_rows_float,
    bn3d_grad_input_rows_double,
    bn3d_moments_channels_last_float,
    bn3d_moments_channels_last_double,
    bn3d_gradient_sums_channels_last_float,
    bn3d_gradient_sums_channels_last_double,
    bn3d_gather_channels_float,
    bn3d_gather_channels_double,
    bn3d_affine_periodic_float,
    bn3d_affine_periodic_double,
    bn3d_grad_input_periodic_float,
    bn3d_grad_input_periodic_double,
    bn3d_affine_constants_float,
    bn3d_affine_constants_double,
    bn3d_grad_input_constants_float,
    bn3d_grad_input_constants_double,
};

#endif /* BN3D_KERNEL_TABLE_H */
