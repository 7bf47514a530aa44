/* Lower bounds on the time of a BatchNorm3d backward on this machine, for
   benchmarks/floor.py.

   Each function reads x and g and writes out the way a float32 backward
   must, but with none of bn3d's numerical care (single-precision sums in any
   order, no NaN rules): what is left is the memory traffic and the least
   arithmetic. Arrays are contiguous (N, C, L); where `stream`, out is
   written with the widest non-temporal stores the CPU has, as bn3d writes
   outputs when the arrays are larger than the last-level cache.

   - floor_one_sweep: x and g read once, out written once, row by row in
     memory order. No backward can move less; none can run in one sweep either,
     since grad_input needs each channel's sums before its first element.
   The two-pass floors map with out = (g - mean(g)) - x * mean(g * x), per
   channel.

   - floor_by_channel: the two passes of a backward channel by channel, each
     channel on one thread: its sums, then its map, which re-reads the channel
     from cache where it fits (PyTorch's order, and bn3d's with many channels).
   - floor_two_sweeps: the sums of every row in memory order, then the map in
     memory order, the team sharing all rows (bn3d's order for short rows and
     few channels).
*/
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__SSE__)
#include <immintrin.h>
#endif
/* The widest vector of floats and its non-temporal store. */
#if defined(__AVX512F__)
#define VLANES 16
#define VEC __m512
#define VSET1 _mm512_set1_ps
#define VLOAD _mm512_loadu_ps
#define VSUB _mm512_sub_ps
#define VMUL _mm512_mul_ps
#define VSTREAM _mm512_stream_ps
#elif defined(__AVX__)
#define VLANES 8
#define VEC __m256
#define VSET1 _mm256_set1_ps
#define VLOAD _mm256_loadu_ps
#define VSUB _mm256_sub_ps
#define VMUL _mm256_mul_ps
#define VSTREAM _mm256_stream_ps
#elif defined(__SSE__)
#define VLANES 4
#define VEC __m128
#define VSET1 _mm_set1_ps
#define VLOAD _mm_loadu_ps
#define VSUB _mm_sub_ps
#define VMUL _mm_mul_ps
#define VSTREAM _mm_stream_ps
#endif

typedef ptrdiff_t idx;
enum { LANES = 16 };
typedef float lanes __attribute__((vector_size(LANES * sizeof(float))));

static lanes load(const float *p)
{
    lanes v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* Adds sum(g) and sum(g * x) over a row to sums[0] and sums[1]: two vectors of
   LANES accumulators for each (the loop is then bound by the loads, not by the
   latency of the additions), added at the end. */
static void sum_row(const float *restrict x, const float *restrict g, idx size, float *sums)
{
    lanes s0 = {0}, s1 = {0}, d0 = {0}, d1 = {0};
    float s, d;
    idx i = 0, j;
    for (; i + 2 * LANES <= size; i += 2 * LANES) {
        const lanes g0 = load(g + i), g1 = load(g + i + LANES);
        s0 += g0;
        s1 += g1;
        d0 += g0 * load(x + i);
        d1 += g1 * load(x + i + LANES);
    }
    if (i + LANES <= size) {
        const lanes g0 = load(g + i);
        s0 += g0;
        d0 += g0 * load(x + i);
        i += LANES;
    }
    s0 += s1;
    d0 += d1;
    s = d = 0;
    for (j = 0; j < LANES; j++) {
        s += s0[j];
        d += d0[j];
    }
    for (; i < size; i++) {
        s += g[i];
        d += g[i] * x[i];
    }
    sums[0] += s;
    sums[1] += d;
}

/* out = (g - a) - x * b over a row; where `stream`, with the widest
   non-temporal stores of the CPU on the aligned middle. */
static void map_row(const float *restrict x, const float *restrict g, float *restrict out,
                    idx size, float a, float b, int stream)
{
    idx i = 0;
#if defined(VLANES)
    if (stream) {
        const VEC va = VSET1(a), vb = VSET1(b);
        for (; i < size && (uintptr_t)(out + i) % (VLANES * sizeof(float)) != 0; i++)
            out[i] = (g[i] - a) - x[i] * b;
        for (; i + VLANES <= size; i += VLANES)
            VSTREAM(out + i, VSUB(VSUB(VLOAD(g + i), va), VMUL(VLOAD(x + i), vb)));
    }
#endif
    for (; i < size; i++)
        out[i] = (g[i] - a) - x[i] * b;
}

static void fence(void)
{
#if defined(__SSE__)
    _mm_sfence();
#endif
}

void floor_one_sweep(const float *x, const float *g, float *out, idx n, idx c, idx l,
                     int threads, int stream)
{
    idx r;
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (r = 0; r < n * c; r++)
            map_row(x + r * l, g + r * l, out + r * l, l, 0.5f, 0.25f, stream);
        fence();
    }
}

void floor_by_channel(const float *x, const float *g, float *out, idx n, idx c, idx l,
                      int threads, int stream)
{
    idx k;
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (k = 0; k < c; k++) {
            float sums[2] = {0, 0};
            idx b;
            for (b = 0; b < n; b++)
                sum_row(x + (b * c + k) * l, g + (b * c + k) * l, l, sums);
            for (b = 0; b < n; b++)
                map_row(x + (b * c + k) * l, g + (b * c + k) * l, out + (b * c + k) * l, l,
                        sums[0] / (float)(n * l), sums[1] / (float)(n * l), stream);
        }
        fence();
    }
}

/* scratch: 2 * n * c floats for the rows' sums, 2 * c for the channels'. */
void floor_two_sweeps(const float *x, const float *g, float *out, idx n, idx c, idx l,
                      int threads, int stream, float *scratch)
{
    float *channel = scratch + 2 * n * c;
    idx r, k;
#pragma omp parallel for schedule(static) num_threads(threads)
    for (r = 0; r < n * c; r++) {
        scratch[2 * r] = scratch[2 * r + 1] = 0;
        sum_row(x + r * l, g + r * l, l, scratch + 2 * r);
    }
    for (k = 0; k < 2 * c; k++)
        channel[k] = 0;
    for (r = 0; r < n * c; r++) {
        channel[2 * (r % c)] += scratch[2 * r];
        channel[2 * (r % c) + 1] += scratch[2 * r + 1];
    }
#pragma omp parallel num_threads(threads)
    {
#pragma omp for schedule(static)
        for (r = 0; r < n * c; r++)
            map_row(x + r * l, g + r * l, out + r * l, l, channel[2 * (r % c)] / (float)(n * l),
                    channel[2 * (r % c) + 1] / (float)(n * l), stream);
        fence();
    }
}
