/*
 * co_sleep_ns: a coroutine sleeps on a one-off timer of its home context
 * and is woken there by the timer callback.
 */
#include <glib.h>

#include "aio/aio.h"
#include "coroutine/co-lock.h"

static void co_sleep_timer_cb(void *opaque)
{
    aio_co_wake(opaque);
}

void coroutine_fn co_sleep_ns(int64_t ns)
{
    Coroutine *self = co_self();
    AioContext *ctx = co_get_ctx(self);

    g_assert(self && ctx);
    AioTimer *t = aio_timer_new(ctx, co_sleep_timer_cb, self);
    aio_timer_mod(t, aio_clock_ns() + MAX(ns, 0));
    co_yield();
    aio_timer_free(t);
}
