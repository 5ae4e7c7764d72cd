/*
 * Timers on CLOCK_MONOTONIC, in nanoseconds, one sorted list per context.
 *
 * Threading: the list and each timer's expiry are guarded by the context's
 * timer_lock, so aio_timer_mod()/del() work from any thread.  Callbacks run
 * in the home thread without the lock held.  ctx->timer_deadline mirrors
 * the first expiry so that the busy-poll loop and the timeout computation
 * read it without taking the lock; it is only written under the lock.
 *
 * Arming a timer that becomes the first one from another thread calls
 * aio_notify(), so a sleeping aio_poll() recomputes its timeout.
 */
#include <time.h>

#include "aio/aio-int.h"

struct AioTimer {
    AioContext *ctx;
    AioTimerFunc *cb;
    void *opaque;
    int64_t expire_ns; /* -1 when not armed; guarded by ctx->timer_lock */
    AioTimer *next;    /* guarded by ctx->timer_lock */
};

int64_t aio_clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

AioTimer *aio_timer_new(AioContext *ctx, AioTimerFunc *cb, void *opaque)
{
    AioTimer *t = g_new0(AioTimer, 1);
    t->ctx = ctx;
    t->cb = cb;
    t->opaque = opaque;
    t->expire_ns = -1;
    return t;
}

static void aio_timer_publish_deadline_locked(AioContext *ctx)
{
    atomic_store(&ctx->timer_deadline, ctx->timers ? ctx->timers->expire_ns : INT64_MAX);
}

/* Unlinks @t if armed; returns true if it was the first timer. */
static bool aio_timer_unlink_locked(AioTimer *t)
{
    AioContext *ctx = t->ctx;
    if (t->expire_ns < 0) {
        return false;
    }
    bool was_first = ctx->timers == t;
    for (AioTimer **p = &ctx->timers; *p; p = &(*p)->next) {
        if (*p == t) {
            *p = t->next;
            break;
        }
    }
    t->next = NULL;
    t->expire_ns = -1;
    return was_first;
}

void aio_timer_mod(AioTimer *t, int64_t expire_ns)
{
    AioContext *ctx = t->ctx;
    AioTimer **p;

    if (expire_ns < 0) {
        expire_ns = 0;
    }
    pthread_mutex_lock(&ctx->timer_lock);
    aio_timer_unlink_locked(t);
    for (p = &ctx->timers; *p && (*p)->expire_ns <= expire_ns; p = &(*p)->next) {
    }
    t->expire_ns = expire_ns;
    t->next = *p;
    *p = t;
    bool first = ctx->timers == t;
    if (first) {
        aio_timer_publish_deadline_locked(ctx);
    }
    pthread_mutex_unlock(&ctx->timer_lock);

    /* The home thread computes its timeout before sleeping; others must wake it. */
    if (first && aio_get_current() != ctx) {
        aio_notify(ctx);
    }
}

void aio_timer_del(AioTimer *t)
{
    AioContext *ctx = t->ctx;
    pthread_mutex_lock(&ctx->timer_lock);
    if (aio_timer_unlink_locked(t)) {
        aio_timer_publish_deadline_locked(ctx);
    }
    pthread_mutex_unlock(&ctx->timer_lock);
    /* No notify: a sleeper woken early by a stale deadline just sleeps again. */
}

bool aio_timer_pending(AioTimer *t)
{
    pthread_mutex_lock(&t->ctx->timer_lock);
    bool pending = t->expire_ns >= 0;
    pthread_mutex_unlock(&t->ctx->timer_lock);
    return pending;
}

void aio_timer_free(AioTimer *t)
{
    if (t) {
        aio_timer_del(t);
        g_free(t);
    }
}

int64_t aio_timers_timeout_ns(AioContext *ctx)
{
    int64_t deadline = atomic_load(&ctx->timer_deadline);
    if (deadline == INT64_MAX) {
        return -1;
    }
    int64_t delta = deadline - aio_clock_ns();
    return delta > 0 ? delta : 0;
}

bool aio_timers_run(AioContext *ctx)
{
    if (atomic_load_explicit(&ctx->timer_deadline, memory_order_relaxed) == INT64_MAX) {
        return false;
    }
    /*
     * One reading of the clock bounds the loop: a callback that re-arms
     * its timer for "now + x" runs again in a later iteration, not here.
     */
    int64_t now = aio_clock_ns();
    bool progress = false;

    pthread_mutex_lock(&ctx->timer_lock);
    while (ctx->timers && ctx->timers->expire_ns <= now) {
        AioTimer *t = ctx->timers;
        aio_timer_unlink_locked(t);
        aio_timer_publish_deadline_locked(ctx);
        AioTimerFunc *cb = t->cb;
        void *opaque = t->opaque;
        pthread_mutex_unlock(&ctx->timer_lock);
        cb(opaque); /* may re-arm or free t */
        progress = true;
        pthread_mutex_lock(&ctx->timer_lock);
    }
    pthread_mutex_unlock(&ctx->timer_lock);
    return progress;
}
