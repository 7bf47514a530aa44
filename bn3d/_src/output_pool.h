/* A bounded pool of large blocks for bn3d's outputs, as a numpy memory handler
 * (NEP 49).
 *
 * A fresh 128 MiB array costs a page fault per 4 KiB page the first time it is
 * written, about as long as computing it. bn3d allocates its outputs (and its
 * temporaries) through this handler, installed only around its own allocations: when
 * such an array is freed, wherever and whenever, numpy calls the handler's free, which
 * keeps the block (its pages already mapped) for a later output instead of returning
 * it to the system, as long as the pool holds at most `limit` bytes. Every array still
 * has its own memory for its whole life: a block is only reused once freed.
 *
 * Each block starts with a 64-byte header (its capacity), so the array's data is
 * 64-byte aligned. Blocks under BN3D_POOL_SMALLEST bytes are not kept. All functions
 * are thread-safe.
 */
#ifndef BN3D_OUTPUT_POOL_H
#define BN3D_OUTPUT_POOL_H

#include <stddef.h>

/* Blocks smaller than this are freed at once. */
#define BN3D_POOL_SMALLEST ((size_t)1 << 20)

typedef struct bn3d_pool_stats {
    size_t limit;         /* the most bytes the pool keeps */
    size_t kept_bytes;    /* bytes of the blocks it keeps now */
    size_t kept_blocks;
    size_t reused;        /* allocations served from the pool */
    size_t fresh;         /* pooled-size allocations that needed a new block */
} bn3d_pool_stats;

void *bn3d_pool_malloc(void *context, size_t size);
void *bn3d_pool_calloc(void *context, size_t count, size_t size);
void *bn3d_pool_realloc(void *context, void *pointer, size_t size);
void bn3d_pool_free(void *context, void *pointer, size_t size);

/* Set the limit (0: keep nothing), freeing the blocks kept beyond it. */
void bn3d_pool_set_limit(size_t limit);
bn3d_pool_stats bn3d_pool_get_stats(void);

#endif /* BN3D_OUTPUT_POOL_H */
