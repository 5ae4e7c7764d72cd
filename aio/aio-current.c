/*
 * Which AioContext the calling thread runs, and which thread is the main
 * thread.  A thread-local pointer; the main context is set once by
 * aio_main_loop_init() and never changes afterwards.
 */
#include "aio/aio.h"

static __thread AioContext *current_ctx;
static AioContext *main_ctx;
static GThread *main_thread;

AioContext *aio_get_current(void)
{
    return current_ctx;
}

void aio_set_current(AioContext *ctx)
{
    current_ctx = ctx;
}

bool aio_main_loop_init(GError **errp)
{
    if (main_ctx) {
        g_assert(main_thread == g_thread_self());
        return true;
    }
    AioContext *ctx = aio_context_new(errp);
    if (!ctx) {
        return false;
    }
    main_thread = g_thread_self();
    main_ctx = ctx;
    aio_set_current(ctx);
    return true;
}

AioContext *aio_main_context(void)
{
    g_assert(main_ctx);
    return main_ctx;
}

bool aio_in_main_thread(void)
{
    return main_thread && main_thread == g_thread_self();
}
