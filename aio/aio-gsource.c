/*
 * A GSource that lets a GMainContext drive an AioContext: glib polls the
 * context's epoll fd (which becomes readable when any handler's fd or the
 * notifier is), and dispatching runs one non-blocking aio_poll().
 *
 * Threading: the thread iterating the GMainContext becomes the context's
 * home thread.  prepare() sets bit 0 of notify_me so that cross-thread
 * producers write the eventfd while glib may sleep; check() (or prepare()
 * itself when work is already there) clears it.  No busy-polling happens
 * in this mode.
 *
 * Ownership: the context holds the source's first reference; the source
 * does not hold the context.  When the context dies it destroys the source
 * and clears its pointer, so a GMainContext never dispatches a dead context.
 */
#include <limits.h>

#include "aio/aio-int.h"

typedef struct AioSource {
    GSource source;
    AioContext *_Atomic ctx; /* NULL once the context is gone */
    gpointer fd_tag;
} AioSource;

static gboolean aio_source_prepare(GSource *source, gint *timeout)
{
    AioContext *ctx = atomic_load(&((AioSource *)source)->ctx);
    if (!ctx) {
        *timeout = -1;
        return FALSE;
    }
    /* acq_rel: pairs with the read-modify-write in aio_notify() */
    atomic_fetch_or_explicit(&ctx->notify_me, 1, memory_order_acq_rel);

    int64_t ns = aio_compute_timeout(ctx);
    if (ns == 0) {
        atomic_fetch_and_explicit(&ctx->notify_me, ~1u, memory_order_release);
        *timeout = 0;
        return TRUE;
    }
    /* glib sleeps in whole ms: round up so timers never fire early or spin. */
    int64_t ms = ns < 0 ? -1 : (ns + 999999) / 1000000;
    *timeout = ms > INT_MAX ? INT_MAX : (gint)ms;
    return FALSE;
}

static gboolean aio_source_check(GSource *source)
{
    AioSource *s = (AioSource *)source;
    AioContext *ctx = atomic_load(&s->ctx);
    if (!ctx) {
        return FALSE;
    }
    atomic_fetch_and_explicit(&ctx->notify_me, ~1u, memory_order_release);
    return (g_source_query_unix_fd(source, s->fd_tag) & (G_IO_IN | G_IO_HUP | G_IO_ERR)) ||
           aio_compute_timeout(ctx) == 0;
}

static gboolean aio_source_dispatch(GSource *source, GSourceFunc callback, gpointer user_data)
{
    AioContext *ctx = atomic_load(&((AioSource *)source)->ctx);
    if (ctx) {
        aio_poll(ctx, false);
    }
    return G_SOURCE_CONTINUE;
}

static GSourceFuncs aio_source_funcs = {
    .prepare = aio_source_prepare,
    .check = aio_source_check,
    .dispatch = aio_source_dispatch,
};

GSource *aio_get_g_source(AioContext *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    if (!ctx->gsource) {
        GSource *source = g_source_new(&aio_source_funcs, sizeof(AioSource));
        AioSource *s = (AioSource *)source;
        atomic_init(&s->ctx, ctx);
        s->fd_tag = g_source_add_unix_fd(source, ctx->epollfd, G_IO_IN | G_IO_HUP | G_IO_ERR);
        g_source_set_name(source, "AioContext");
        ctx->gsource = source;
    }
    GSource *ret = g_source_ref(ctx->gsource);
    pthread_mutex_unlock(&ctx->lock);
    return ret;
}

void aio_gsource_detach(AioContext *ctx)
{
    pthread_mutex_lock(&ctx->lock);
    GSource *source = ctx->gsource;
    ctx->gsource = NULL;
    pthread_mutex_unlock(&ctx->lock);
    if (source) {
        atomic_store(&((AioSource *)source)->ctx, NULL);
        g_source_destroy(source);
        g_source_unref(source);
    }
}
