/*
 * Per-AioContext engine slots (see aio-engine-slots.h).
 *
 * A global table maps each context that has at least one engine to its
 * EngineSet.  Requests look their engine up on every submission, so each
 * thread caches the last (context, set) pair it saw; the cache is trusted
 * only while the global generation is unchanged, and every free bumps the
 * generation.  A context freed and another allocated at the same address
 * therefore never hits a stale cache entry.
 *
 * Locking: slots_lock guards the table and the lifetime of each EngineSet.
 * Engine pointers inside a set are atomic because a thread may read them
 * through its cache while the home thread installs a new engine.
 */
#include "aio/aio-engine-slots.h"

#include <pthread.h>
#include <stdatomic.h>

typedef struct EngineSet {
    _Atomic(void *) engine[AIO_ENGINE_SLOT_MAX];
    AioEngineFreeFunc *free_fn[AIO_ENGINE_SLOT_MAX];
} EngineSet;

/* A pthread mutex, not a GMutex: ThreadSanitizer sees only the former. */
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;
static GHashTable *slots_table; /* AioContext * -> EngineSet *, under slots_lock */
static atomic_uint slots_generation;

static __thread struct {
    AioContext *ctx;
    EngineSet *set;
    unsigned generation;
} slots_cache;

/* Looks @ctx up, optionally creating its set.  Caller holds slots_lock. */
static EngineSet *engine_set_lookup_locked(AioContext *ctx, bool create)
{
    if (!slots_table) {
        if (!create) {
            return NULL;
        }
        slots_table = g_hash_table_new(g_direct_hash, g_direct_equal);
    }
    EngineSet *set = g_hash_table_lookup(slots_table, ctx);
    if (!set && create) {
        set = g_new0(EngineSet, 1);
        g_hash_table_insert(slots_table, ctx, set);
    }
    return set;
}

void *aio_context_get_engine(AioContext *ctx, AioEngineSlot slot)
{
    g_assert(slot < AIO_ENGINE_SLOT_MAX);
    unsigned gen = atomic_load_explicit(&slots_generation, memory_order_acquire);
    if (slots_cache.ctx == ctx && slots_cache.generation == gen) {
        return atomic_load_explicit(&slots_cache.set->engine[slot], memory_order_acquire);
    }

    pthread_mutex_lock(&slots_lock);
    EngineSet *set = engine_set_lookup_locked(ctx, false);
    void *engine = NULL;
    if (set) {
        engine = atomic_load_explicit(&set->engine[slot], memory_order_acquire);
        slots_cache.ctx = ctx;
        slots_cache.set = set;
        slots_cache.generation = atomic_load_explicit(&slots_generation, memory_order_relaxed);
    }
    pthread_mutex_unlock(&slots_lock);
    return engine;
}

bool aio_context_set_engine(AioContext *ctx, AioEngineSlot slot, void *engine,
                            AioEngineFreeFunc *free_fn)
{
    g_assert(slot < AIO_ENGINE_SLOT_MAX && engine && free_fn);
    bool stored = false;

    pthread_mutex_lock(&slots_lock);
    EngineSet *set = engine_set_lookup_locked(ctx, true);
    if (!atomic_load_explicit(&set->engine[slot], memory_order_relaxed)) {
        set->free_fn[slot] = free_fn;
        atomic_store_explicit(&set->engine[slot], engine, memory_order_release);
        stored = true;
    }
    pthread_mutex_unlock(&slots_lock);
    return stored;
}

void aio_context_free_engines(AioContext *ctx)
{
    pthread_mutex_lock(&slots_lock);
    EngineSet *set = engine_set_lookup_locked(ctx, false);
    if (set) {
        g_hash_table_remove(slots_table, ctx);
        /* Invalidates every thread's cache before the set can be freed. */
        atomic_fetch_add_explicit(&slots_generation, 1, memory_order_acq_rel);
    }
    pthread_mutex_unlock(&slots_lock);

    if (!set) {
        return;
    }
    /* Outside the lock: an engine's teardown may unregister handlers. */
    for (int i = 0; i < AIO_ENGINE_SLOT_MAX; i++) {
        void *engine = atomic_load_explicit(&set->engine[i], memory_order_acquire);
        if (engine) {
            set->free_fn[i](engine);
        }
    }
    g_free(set);
}
