/* Exact sums of doubles: the order in which values are added changes no bit.
 *
 * A sum is kept as a fixed-point integer, sum * 2**1074, in 32-bit digits held by
 * int64 limbs ("carry-save": a limb may exceed 32 bits between normalisations), which
 * covers every double, subnormals included, with room for 2**31 additions of the
 * largest. Adding a double adds its 53-bit significand, shifted to its exponent, into
 * at most three limbs; two sums merge limb by limb. Both are exact, hence associative
 * and commutative: a sum of the same values has the same bits whatever the order,
 * the threads or the split of the values among processes. It is rounded to a double
 * once, to nearest. Infinities and NaN are counted apart: NaN, or both infinities,
 * give NaN; one infinity gives that infinity.
 *
 * Only the limbs `low` to `high - 1` are in use (the others are taken as zero and
 * are not initialised), so clearing a sum costs nothing and a sum of values of
 * similar magnitude touches a few limbs.
 */
#ifndef BN3D_EXACT_SUM_H
#define BN3D_EXACT_SUM_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#define BN3D_EXACT_LIMBS 70
/* Normalise after this many additions, long before a limb could overflow. */
#define BN3D_EXACT_PENDING_LIMIT (1u << 30)

typedef struct bn3d_exact_sum {
    int64_t limb[BN3D_EXACT_LIMBS]; /* limb k: bits [32k, 32k + 32) of sum * 2**1074 */
    int32_t low, high;              /* the limbs in use: low .. high - 1 */
    uint32_t special;               /* 1: +inf added, 2: -inf added, 4: NaN added */
    uint32_t pending;               /* additions since the last normalisation */
} bn3d_exact_sum;

enum { BN3D_PLUS_INF = 1, BN3D_MINUS_INF = 2, BN3D_NAN = 4 };

static inline void bn3d_exact_clear(bn3d_exact_sum *s) {
    s->low = s->high = 0;
    s->special = s->pending = 0;
}

/* Make limbs first .. last - 1 usable (zero those not yet in use). */
static inline void bn3d_exact_reach(bn3d_exact_sum *s, int32_t first, int32_t last) {
    int32_t k;
    if (s->low == s->high) {
        for (k = first; k < last; k++) s->limb[k] = 0;
        s->low = first;
        s->high = last;
        return;
    }
    for (k = first; k < s->low; k++) s->limb[k] = 0;
    for (k = s->high; k < last; k++) s->limb[k] = 0;
    if (first < s->low) s->low = first;
    if (last > s->high) s->high = last;
}

/* Propagate the carries: every limb but the top one in [0, 2**32), the top one signed. */
static inline void bn3d_exact_normalise(bn3d_exact_sum *s) {
    int32_t k;
    int64_t carry;
    for (k = s->low; k < s->high; k++) {
        carry = s->limb[k] >> 32; /* arithmetic shift: floor division by 2**32 */
        if (carry != 0 && k + 1 < BN3D_EXACT_LIMBS) {
            if (k + 1 == s->high) bn3d_exact_reach(s, s->low, k + 2);
            s->limb[k] -= carry * ((int64_t)1 << 32);
            s->limb[k + 1] += carry;
        }
    }
    while (s->high > s->low && s->limb[s->high - 1] == 0) s->high--;
    while (s->low < s->high && s->limb[s->low] == 0) s->low++;
    if (s->low == s->high) s->low = s->high = 0;
    s->pending = 0;
}

static inline void bn3d_exact_count(bn3d_exact_sum *s, uint32_t additions) {
    s->pending += additions;
    if (s->pending >= BN3D_EXACT_PENDING_LIMIT) bn3d_exact_normalise(s);
}

static inline void bn3d_exact_add(bn3d_exact_sum *s, double value) {
    uint64_t bits, significand;
    int32_t exponent, position, k;
    unsigned __int128 shifted;
    int64_t parts[3];
    memcpy(&bits, &value, sizeof bits);
    exponent = (int32_t)((bits >> 52) & 0x7FF);
    significand = bits & ((UINT64_C(1) << 52) - 1);
    if (exponent == 0x7FF) {
        s->special |= significand ? BN3D_NAN : (bits >> 63) ? BN3D_MINUS_INF : BN3D_PLUS_INF;
        return;
    }
    if (exponent == 0) {
        if (significand == 0) return;
        position = 0; /* subnormal: significand * 2**-1074 */
    } else {
        significand |= UINT64_C(1) << 52;
        position = exponent - 1; /* significand * 2**(exponent - 1075) */
    }
    k = position >> 5;
    shifted = (unsigned __int128)significand << (position & 31);
    parts[0] = (int64_t)(uint32_t)shifted;
    parts[1] = (int64_t)(uint32_t)(shifted >> 32);
    parts[2] = (int64_t)(uint32_t)(shifted >> 64);
    bn3d_exact_reach(s, k, k + 3);
    if (bits >> 63) {
        s->limb[k] -= parts[0];
        s->limb[k + 1] -= parts[1];
        s->limb[k + 2] -= parts[2];
    } else {
        s->limb[k] += parts[0];
        s->limb[k + 1] += parts[1];
        s->limb[k + 2] += parts[2];
    }
    bn3d_exact_count(s, 1);
}

/* into += from. */
static inline void bn3d_exact_merge(bn3d_exact_sum *into, const bn3d_exact_sum *from) {
    int32_t k;
    into->special |= from->special;
    if (from->low == from->high) return;
    bn3d_exact_reach(into, from->low, from->high);
    for (k = from->low; k < from->high; k++) into->limb[k] += from->limb[k];
    bn3d_exact_count(into, from->pending + 1);
}

/* The sum rounded to the nearest double (ties to even; subnormal results may round
   twice). */
static inline double bn3d_exact_value(const bn3d_exact_sum *s) {
    bn3d_exact_sum t = *s; /* a whole copy: normalising it changes no limb of s */
    int32_t k, top;
    double sign = 1.0, rounded;
    unsigned __int128 digits = 0;
    int sticky = 0;
    if (s->special & BN3D_NAN || (s->special & BN3D_PLUS_INF && s->special & BN3D_MINUS_INF))
        return NAN;
    if (s->special) return s->special & BN3D_PLUS_INF ? INFINITY : -INFINITY;
    bn3d_exact_normalise(&t);
    if (t.low == t.high) return 0.0;
    if (t.limb[t.high - 1] < 0) { /* negative: take the magnitude */
        sign = -1.0;
        for (k = t.low; k < t.high; k++) t.limb[k] = -t.limb[k];
        bn3d_exact_normalise(&t);
    }
    top = t.high - 1;
    for (k = top; k >= top - 2; k--)
        digits = (digits << 32) | (unsigned __int128)(k >= t.low ? (uint64_t)t.limb[k] : 0);
    for (k = t.low; k < top - 2; k++) sticky |= t.limb[k] != 0;
    rounded = (double)(digits | (unsigned __int128)sticky); /* below the rounding bit */
    return sign * ldexp(rounded, 32 * (top - 2) - 1074);
}

#endif /* BN3D_EXACT_SUM_H */
