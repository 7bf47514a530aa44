/* The bounded pool of output blocks (output_pool.h). */
#include "output_pool.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HEADER 64                 /* bytes before the data: keeps it 64-byte aligned */
#define MAX_KEPT 64               /* blocks the pool keeps at most */
#define PAGE ((size_t)4096)

typedef struct {
    size_t capacity; /* bytes of data the block holds */
} header;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static void *kept[MAX_KEPT];      /* the blocks (their headers), most recently kept last */
static size_t kept_count = 0, kept_bytes = 0;
static size_t pool_limit = (size_t)256 << 20;
static size_t reused = 0, fresh = 0;

static size_t capacity_of(void *block) { return ((header *)block)->capacity; }

static void *data_of(void *block) { return (char *)block + HEADER; }

static void *block_of(void *data) { return (char *)data - HEADER; }

/* A new block of at least `size` bytes of data. */
static void *new_block(size_t size) {
    void *block = NULL;
    size_t capacity = size < BN3D_POOL_SMALLEST ? size : (size + PAGE - 1) / PAGE * PAGE;
    if (capacity > SIZE_MAX - HEADER || posix_memalign(&block, HEADER, capacity + HEADER) != 0)
        return NULL;
    ((header *)block)->capacity = capacity;
    return block;
}

/* Take the smallest kept block that holds `size` bytes without wasting half of it. */
static void *take_kept(size_t size) {
    size_t i, best = MAX_KEPT;
    void *block;
    for (i = 0; i < kept_count; i++) {
        size_t capacity = capacity_of(kept[i]);
        if (capacity >= size && capacity / 2 <= size &&
            (best == MAX_KEPT || capacity < capacity_of(kept[best])))
            best = i;
    }
    if (best == MAX_KEPT) return NULL;
    block = kept[best];
    memmove(kept + best, kept + best + 1, (kept_count - best - 1) * sizeof *kept);
    kept_count--;
    kept_bytes -= capacity_of(block);
    return block;
}

/* Free the oldest kept blocks until the pool holds at most `bytes` in at most `blocks`
   blocks (the lock held). */
static void trim_to(size_t bytes, size_t blocks) {
    while (kept_count > 0 && (kept_bytes > bytes || kept_count > blocks)) {
        void *oldest = kept[0];
        kept_bytes -= capacity_of(oldest);
        memmove(kept, kept + 1, (kept_count - 1) * sizeof *kept);
        kept_count--;
        free(oldest);
    }
}

void *bn3d_pool_malloc(void *context, size_t size) {
    void *block = NULL;
    (void)context;
    if (size >= BN3D_POOL_SMALLEST) {
        pthread_mutex_lock(&lock);
        block = take_kept(size);
        if (block != NULL)
            reused++;
        else
            fresh++;
        pthread_mutex_unlock(&lock);
    }
    if (block == NULL) block = new_block(size == 0 ? 1 : size);
    return block == NULL ? NULL : data_of(block);
}

void *bn3d_pool_calloc(void *context, size_t count, size_t size) {
    void *data;
    if (size != 0 && count > SIZE_MAX / size) return NULL;
    data = bn3d_pool_malloc(context, count * size);
    if (data != NULL) memset(data, 0, count * size);
    return data;
}

void *bn3d_pool_realloc(void *context, void *pointer, size_t size) {
    void *data;
    size_t capacity;
    if (pointer == NULL) return bn3d_pool_malloc(context, size);
    capacity = capacity_of(block_of(pointer));
    if (size <= capacity && (capacity < BN3D_POOL_SMALLEST || capacity / 2 <= size))
        return pointer;
    data = bn3d_pool_malloc(context, size);
    if (data == NULL) return NULL;
    memcpy(data, pointer, size < capacity ? size : capacity);
    bn3d_pool_free(context, pointer, capacity);
    return data;
}

void bn3d_pool_free(void *context, void *pointer, size_t size) {
    void *block;
    size_t capacity;
    (void)context;
    (void)size; /* the header knows the capacity */
    if (pointer == NULL) return;
    block = block_of(pointer);
    capacity = capacity_of(block);
    if (capacity >= BN3D_POOL_SMALLEST) {
        pthread_mutex_lock(&lock);
        if (capacity <= pool_limit) {
            trim_to(pool_limit - capacity, MAX_KEPT - 1); /* room for it, oldest out first */
            kept[kept_count++] = block;
            kept_bytes += capacity;
            block = NULL;
        }
        pthread_mutex_unlock(&lock);
    }
    free(block);
}

void bn3d_pool_set_limit(size_t limit) {
    pthread_mutex_lock(&lock);
    pool_limit = limit;
    trim_to(limit, MAX_KEPT);
    pthread_mutex_unlock(&lock);
}

bn3d_pool_stats bn3d_pool_get_stats(void) {
    bn3d_pool_stats stats;
    pthread_mutex_lock(&lock);
    stats.limit = pool_limit;
    stats.kept_bytes = kept_bytes;
    stats.kept_blocks = kept_count;
    stats.reused = reused;
    stats.fresh = fresh;
    pthread_mutex_unlock(&lock);
    return stats;
}
