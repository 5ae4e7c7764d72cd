/*
 * Per-AioContext engine slots: where an I/O engine (linux-aio, io_uring)
 * keeps the one instance it runs for each AioContext.
 *
 * An engine is created lazily by the first request issued in a context and
 * lives until the context goes away.  The AioContext structure itself knows
 * nothing about engines; this side table maps a context to its slots.
 *
 * Threading: lookups may come from any thread and are lock-free on the
 * fast path (a per-thread one-entry cache); installing and freeing take a
 * short global mutex.  An engine is only *used* from its context's home
 * thread, so the slot table never needs to guard the engine's own state.
 */
#ifndef STRATA_AIO_ENGINE_SLOTS_H
#define STRATA_AIO_ENGINE_SLOTS_H

#include <stdbool.h>

#include "aio/aio.h"

typedef enum AioEngineSlot {
    AIO_ENGINE_SLOT_LINUX_AIO,
    AIO_ENGINE_SLOT_IO_URING,
    AIO_ENGINE_SLOT_MAX,
} AioEngineSlot;

/* Releases an engine; runs with no request in flight. */
typedef void AioEngineFreeFunc(void *engine);

/* The engine stored in @slot of @ctx, or NULL.  Any thread. */
void *aio_context_get_engine(AioContext *ctx, AioEngineSlot slot);

/*
 * Stores @engine in the empty @slot of @ctx, to be released with @free_fn
 * by aio_context_free_engines().  Returns false and stores nothing when the
 * slot is already taken.  Call from the home thread of @ctx.
 */
bool aio_context_set_engine(AioContext *ctx, AioEngineSlot slot, void *engine,
                            AioEngineFreeFunc *free_fn);

/*
 * Releases every engine of @ctx and forgets @ctx.  Call it from the home
 * thread of @ctx, or once no thread runs @ctx any more (aio_context_unref
 * does, before it tears the context down), with no request in flight.
 * Harmless when @ctx has no engine.
 */
void aio_context_free_engines(AioContext *ctx);

#endif /* STRATA_AIO_ENGINE_SLOTS_H */
