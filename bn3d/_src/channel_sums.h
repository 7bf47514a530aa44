/* A channel's statistics and gradient sums, accumulated block by block in exact sums,
 * so that they do not depend on the order of the blocks: not on the threads, the
 * memory layout, nor the split of the batch among processes.
 *
 * Moments. Each block brings its count n_b, mean m_b and sum of squared deviations
 * M_b (moments.h). With a pilot K, the mean of the channel's first block, and
 * a_b = m_b - K, two exact sums are kept: D = sum(n_b * a_b) and
 * S = sum(M_b + (n_b * a_b) * a_b). Then the channel's mean is K + D / n and its sum
 * of squared deviations is S - D * (D / n). The pilot keeps both terms of that
 * difference small: (K - mean)**2 <= m2 / n_0 for a first block of n_0 values, so the
 * rounding of S and D costs at most about n / n_0 times the rounding of a double,
 * relative to m2 (for 2048-value blocks, 1e-11 for a billion values).
 *
 * Gradient sums: the exact sums of each block's sum(g) and sum(g * (x - mean)).
 */
#ifndef BN3D_CHANNEL_SUMS_H
#define BN3D_CHANNEL_SUMS_H

#include "exact_sum.h"

typedef struct bn3d_moment_sums {
    double count;
    bn3d_exact_sum deviation; /* D = sum(n_b * (m_b - K)) */
    bn3d_exact_sum scatter;   /* S = sum(M_b + n_b * (m_b - K)**2) */
} bn3d_moment_sums;

typedef struct bn3d_gradient_totals {
    double count;
    bn3d_exact_sum sum; /* of g */
    bn3d_exact_sum dot; /* of g * (x - mean) */
} bn3d_gradient_totals;

/* The pilot of a channel whose first block has mean `mean`: any finite value is a
   valid pilot, the first block's mean a good one. */
static inline double bn3d_pilot(double mean) {
    return isfinite(mean) ? mean : 0.0;
}

static inline void bn3d_moment_sums_clear(bn3d_moment_sums *s) {
    s->count = 0;
    bn3d_exact_clear(&s->deviation);
    bn3d_exact_clear(&s->scatter);
}

static inline void bn3d_moment_sums_add(bn3d_moment_sums *s, double pilot, double count,
                                        double mean, double m2) {
    double weighted = count * (mean - pilot);
    s->count += count;
    bn3d_exact_add(&s->deviation, weighted);
    bn3d_exact_add(&s->scatter, m2);
    bn3d_exact_add(&s->scatter, weighted * (mean - pilot));
}

static inline void bn3d_moment_sums_merge(bn3d_moment_sums *into, const bn3d_moment_sums *from) {
    into->count += from->count;
    bn3d_exact_merge(&into->deviation, &from->deviation);
    bn3d_exact_merge(&into->scatter, &from->scatter);
}

/* The channel's mean and sum of squared deviations (clamped at 0, NaN kept); NaN for
   both when it has no values. */
static inline void bn3d_moment_sums_finish(const bn3d_moment_sums *s, double pilot,
                                           double *mean, double *m2) {
    double deviation, scatter, spread;
    if (s->count == 0) {
        *mean = *m2 = NAN;
        return;
    }
    deviation = bn3d_exact_value(&s->deviation);
    scatter = bn3d_exact_value(&s->scatter);
    spread = scatter - deviation * (deviation / s->count);
    *mean = pilot + deviation / s->count;
    *m2 = spread < 0 ? 0 : spread;
}

static inline void bn3d_gradient_totals_clear(bn3d_gradient_totals *s) {
    s->count = 0;
    bn3d_exact_clear(&s->sum);
    bn3d_exact_clear(&s->dot);
}

static inline void bn3d_gradient_totals_add(bn3d_gradient_totals *s, double count, double sum,
                                            double dot) {
    s->count += count;
    bn3d_exact_add(&s->sum, sum);
    bn3d_exact_add(&s->dot, dot);
}

static inline void bn3d_gradient_totals_merge(bn3d_gradient_totals *into,
                                              const bn3d_gradient_totals *from) {
    into->count += from->count;
    bn3d_exact_merge(&into->sum, &from->sum);
    bn3d_exact_merge(&into->dot, &from->dot);
}

#endif /* BN3D_CHANNEL_SUMS_H */
