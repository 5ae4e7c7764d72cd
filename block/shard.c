/*
 * Per-thread shards of per-request counters: index assignment and sums
 * (see shard.h for the design and the reading order).
 *
 * Threading: owned_mask (which of the first BDRV_SHARDS - 1 indexes a live
 * thread holds) is guarded by owned_lock, taken once when a thread first
 * asks and once when it exits.  An index given back and handed out again
 * passes through the lock, so the next owner sees every update the last
 * one made to its slots.
 */
#include "block/shard.h"

#include <pthread.h>

G_STATIC_ASSERT(BDRV_SHARDS >= 2 && BDRV_SHARDS <= 32);

__thread unsigned bdrv_shard_tls;

static pthread_mutex_t owned_lock = PTHREAD_MUTEX_INITIALIZER;
static uint32_t owned_mask;
static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;

/* Thread exit: the index is free for the next thread. */
static void bdrv_shard_thread_exit(void *opaque)
{
    unsigned index = GPOINTER_TO_UINT(opaque) - 1;
    pthread_mutex_lock(&owned_lock);
    owned_mask &= ~(1u << index);
    pthread_mutex_unlock(&owned_lock);
    /* Should a later destructor do I/O, it gets an index again. */
    bdrv_shard_tls = 0;
}

static void bdrv_shard_exit_key_init(void)
{
    pthread_key_create(&exit_key, bdrv_shard_thread_exit);
}

unsigned bdrv_shard_assign(void)
{
    unsigned v = BDRV_SHARDS | BDRV_SHARD_SHARED; /* the last slot, shared */

    pthread_once(&exit_key_once, bdrv_shard_exit_key_init);
    pthread_mutex_lock(&owned_lock);
    for (unsigned i = 0; i < BDRV_SHARDS - 1; i++) {
        if (!(owned_mask & (1u << i))) {
            owned_mask |= 1u << i;
            v = i + 1;
            break;
        }
    }
    pthread_mutex_unlock(&owned_lock);
    if (!(v & BDRV_SHARD_SHARED)) {
        pthread_setspecific(exit_key, GUINT_TO_POINTER(v));
    }
    bdrv_shard_tls = v;
    return v;
}

static const void *slot_at(const void *first, size_t stride, unsigned i)
{
    return (const char *)first + (size_t)i * stride;
}

uint64_t bdrv_in_flight_count(const BdrvInFlight *first, size_t stride)
{
    uint64_t ended = 0, begun = 0;

    /* Every `ended` before any `begun`: see shard.h. */
    for (unsigned i = 0; i < BDRV_SHARDS; i++) {
        const BdrvInFlight *slot = slot_at(first, stride, i);
        ended += atomic_load(&slot->ended);
    }
    for (unsigned i = 0; i < BDRV_SHARDS; i++) {
        const BdrvInFlight *slot = slot_at(first, stride, i);
        begun += atomic_load(&slot->begun);
    }
    return begun - ended;
}

uint64_t bdrv_shard_sum(const _Atomic uint64_t *first, size_t stride)
{
    uint64_t sum = 0;
    for (unsigned i = 0; i < BDRV_SHARDS; i++) {
        const _Atomic uint64_t *slot = slot_at(first, stride, i);
        sum += atomic_load(slot);
    }
    return sum;
}
