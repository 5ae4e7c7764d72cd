/*
 * AioContext lifetime, bottom halves, the notify protocol, coroutine
 * scheduling across contexts and AIO_WAIT_WHILE's kick.
 *
 * Threading: aio_bh_schedule(), aio_bh_cancel(), aio_notify(),
 * aio_co_schedule()/wake() and the parameter setters are lock-free and may
 * run in any thread.  Everything that walks or frees BHs (aio_bh_poll,
 * aio_bh_delete) runs in the context's home thread.
 *
 * Bottom halves: each BH has an atomic flags word.  Scheduling sets
 * PENDING|SCHEDULED in one fetch_or; whoever turns PENDING on pushes the BH
 * onto the context's list with a compare-and-swap, so a BH sits on the list
 * at most once and scheduling it twice before it runs runs it once.  The
 * home thread swaps the whole list out, reverses it to FIFO order and
 * clears PENDING|SCHEDULED on each BH just before deciding whether to run
 * it; a schedule that lands after that point pushes it again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "aio/aio-engine-slots.h"
#include "aio/aio-int.h"
#include "coroutine/coroutine-int.h"

enum {
    BH_PENDING = 1 << 0,   /* on ctx->bh_list or in a slice */
    BH_SCHEDULED = 1 << 1, /* the callback should run when the BH is popped */
    BH_DELETED = 1 << 2,   /* free when popped, without running */
    BH_ONESHOT = 1 << 3,   /* free after running */
};

struct AioBH {
    AioContext *ctx;
    AioBHFunc *cb;
    void *opaque;
    atomic_uint flags;
    AioBH *next; /* list link; only meaningful while BH_PENDING */
};

_Atomic unsigned aio_wait_waiters;

static void co_schedule_bh_cb(void *opaque);

/* ------------------------------------------------------------------ */
/* lifetime */

AioContext *aio_context_new(GError **errp)
{
    AioContext *ctx = g_new0(AioContext, 1);
    atomic_init(&ctx->refcount, 1);
    atomic_init(&ctx->timer_deadline, INT64_MAX);
    pthread_mutex_init(&ctx->timer_lock, NULL);
    pthread_mutex_init(&ctx->lock, NULL);

    int ret = aio_context_setup(ctx);
    if (ret < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                    "cannot create event loop: %s", g_strerror(-ret));
        pthread_mutex_destroy(&ctx->timer_lock);
        pthread_mutex_destroy(&ctx->lock);
        g_free(ctx);
        return NULL;
    }
    ctx->co_schedule_bh = aio_bh_new(ctx, co_schedule_bh_cb, ctx);
    return ctx;
}

void aio_context_ref(AioContext *ctx)
{
    atomic_fetch_add_explicit(&ctx->refcount, 1, memory_order_relaxed);
}

/*
 * The last reference goes: nothing may run the context any more.  The
 * pool's workers are joined first because their completions target us;
 * the I/O engines go next, while they can still unregister their handlers.
 */
static void aio_context_free(AioContext *ctx)
{
    ThreadPool *pool = atomic_load(&ctx->thread_pool);
    if (pool) {
        thread_pool_free(pool);
    }
    aio_context_free_engines(ctx);
    aio_gsource_detach(ctx);
    aio_bh_delete(ctx->co_schedule_bh);
    aio_bh_drop_all(ctx);
    aio_context_teardown(ctx);
    pthread_mutex_destroy(&ctx->timer_lock);
    pthread_mutex_destroy(&ctx->lock);
    if (aio_get_current() == ctx) {
        aio_set_current(NULL);
    }
    g_free(ctx);
}

void aio_context_unref(AioContext *ctx)
{
    if (atomic_fetch_sub_explicit(&ctx->refcount, 1, memory_order_acq_rel) == 1) {
        aio_context_free(ctx);
    }
}

/* ------------------------------------------------------------------ */
/* notify */

/*
 * The protocol is a Dekker pair.  A producer publishes work (pushes a BH,
 * arms a timer, changes a condition), stores notified, then reads
 * notify_me.  The poller raises notify_me, then reads notified, the BH list
 * and the timer deadline (aio_compute_timeout) before it sleeps.  At least
 * one side must see the other's write: either the poller sees the work and
 * does not sleep, or the producer sees notify_me != 0 and writes the eventfd.
 *
 * Both sides access notify_me with an acq_rel read-modify-write (the
 * producer's adds 0) instead of a store-load fence pair; TSan does not model
 * fences, and two RMWs on one variable are totally ordered anyway.  If the
 * producer's RMW comes first, the poller's RMW reads from it and so sees
 * everything the producer wrote before; if the poller's comes first, the
 * producer reads notify_me != 0.  On x86 this costs the same locked
 * instruction a fence would.
 *
 * When notify_me is 0 the home thread is running or busy-polling and will
 * look at notified/bh_list before it sleeps, so no syscall is needed: that
 * is what makes waking a polling IOThread cost a few cache misses.
 */
void aio_notify(AioContext *ctx)
{
    atomic_store_explicit(&ctx->notified, true, memory_order_relaxed);
    if (atomic_fetch_add_explicit(&ctx->notify_me, 0, memory_order_acq_rel)) {
        event_notifier_set(&ctx->notifier);
    }
}

/* ------------------------------------------------------------------ */
/* bottom halves */

static AioBH *aio_bh_alloc(AioContext *ctx, AioBHFunc *cb, void *opaque, unsigned flags)
{
    AioBH *bh = g_new(AioBH, 1);
    bh->ctx = ctx;
    bh->cb = cb;
    bh->opaque = opaque;
    atomic_init(&bh->flags, flags);
    bh->next = NULL;
    return bh;
}

AioBH *aio_bh_new(AioContext *ctx, AioBHFunc *cb, void *opaque)
{
    return aio_bh_alloc(ctx, cb, opaque, 0);
}

/*
 * Sets @new_flags on @bh and, if that made it pending, pushes it.  The
 * notify is skipped in the home thread: it checks the list before sleeping.
 */
static void aio_bh_enqueue(AioBH *bh, unsigned new_flags)
{
    AioContext *ctx = bh->ctx;
    unsigned old = atomic_fetch_or(&bh->flags, new_flags | BH_PENDING);
    if (old & BH_PENDING) {
        return;
    }
    AioBH *head = atomic_load_explicit(&ctx->bh_list, memory_order_relaxed);
    do {
        bh->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&ctx->bh_list, &head, bh, memory_order_release,
                                                    memory_order_relaxed));
    if (aio_get_current() != ctx) {
        aio_notify(ctx);
    }
}

void aio_bh_schedule(AioBH *bh)
{
    aio_bh_enqueue(bh, BH_SCHEDULED);
}

void aio_bh_schedule_oneshot(AioContext *ctx, AioBHFunc *cb, void *opaque)
{
    aio_bh_enqueue(aio_bh_alloc(ctx, cb, opaque, BH_ONESHOT), BH_SCHEDULED);
}

void aio_bh_cancel(AioBH *bh)
{
    atomic_fetch_and(&bh->flags, ~(unsigned)BH_SCHEDULED);
}

void aio_bh_delete(AioBH *bh)
{
    if (!bh) {
        return;
    }
    unsigned old = atomic_fetch_or(&bh->flags, BH_DELETED);
    if (!(old & BH_PENDING)) {
        g_free(bh);
    }
    /* Otherwise aio_bh_poll() frees it when it pops it. */
}

/* Takes the shared list and reverses it, so BHs run in scheduling order. */
static AioBH *aio_bh_take_list(AioContext *ctx)
{
    AioBH *lifo = atomic_exchange_explicit(&ctx->bh_list, NULL, memory_order_acquire);
    AioBH *fifo = NULL;
    while (lifo) {
        AioBH *next = lifo->next;
        lifo->next = fifo;
        fifo = lifo;
        lifo = next;
    }
    return fifo;
}

/* Pops the oldest BH of the oldest non-empty slice, dropping empty slices. */
static AioBH *aio_bh_dequeue(AioContext *ctx)
{
    while (ctx->slice_head) {
        AioBHSlice *s = ctx->slice_head;
        AioBH *bh = s->head;
        if (bh) {
            s->head = bh->next;
            return bh;
        }
        ctx->slice_head = s->next;
        if (!ctx->slice_head) {
            ctx->slice_tail = NULL;
        }
    }
    return NULL;
}

bool aio_bh_poll(AioContext *ctx)
{
    AioBHSlice slice = {.head = aio_bh_take_list(ctx), .next = NULL};
    bool progress = false;

    if (!slice.head && !ctx->slice_head) {
        return false;
    }
    if (ctx->slice_tail) {
        ctx->slice_tail->next = &slice;
    } else {
        ctx->slice_head = &slice;
    }
    ctx->slice_tail = &slice;

    /*
     * Loop until every slice is empty, including our callers' when we are
     * nested: when we return, no slice points into a dead stack frame.
     */
    AioBH *bh;
    while ((bh = aio_bh_dequeue(ctx))) {
        /* bh->next was read by the dequeue; from here on it may be pushed again. */
        unsigned old = atomic_fetch_and(&bh->flags, ~(unsigned)(BH_PENDING | BH_SCHEDULED));
        if (old & BH_DELETED) {
            g_free(bh);
            continue;
        }
        if (old & BH_SCHEDULED) {
            progress = true;
            bh->cb(bh->opaque);
        }
        /* Only a oneshot may be touched after its callback: nobody else holds it. */
        if (old & BH_ONESHOT) {
            g_free(bh);
        }
    }
    return progress;
}

bool aio_bh_pending(AioContext *ctx)
{
    if (atomic_load_explicit(&ctx->bh_list, memory_order_relaxed)) {
        return true;
    }
    for (AioBHSlice *s = ctx->slice_head; s; s = s->next) {
        if (s->head) {
            return true;
        }
    }
    return false;
}

void aio_bh_drop_all(AioContext *ctx)
{
    AioBH *bh = aio_bh_take_list(ctx);
    while (bh) {
        AioBH *next = bh->next;
        unsigned old = atomic_fetch_and(&bh->flags, ~(unsigned)(BH_PENDING | BH_SCHEDULED));
        /* A live, non-oneshot BH still belongs to its creator, who must delete it. */
        if (old & (BH_DELETED | BH_ONESHOT)) {
            g_free(bh);
        }
        bh = next;
    }
}

/* ------------------------------------------------------------------ */
/* parameters */

static bool aio_check_range(const char *name, int64_t value, GError **errp)
{
    if (value < 0) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "%s must be in range [0, %" G_GINT64_FORMAT "]", name, (gint64)INT64_MAX);
        return false;
    }
    return true;
}

bool aio_context_set_poll_params(AioContext *ctx, int64_t max_ns, int64_t grow, int64_t shrink,
                                 GError **errp)
{
    if (!aio_check_range("poll-max-ns", max_ns, errp) ||
        !aio_check_range("poll-grow", grow, errp) ||
        !aio_check_range("poll-shrink", shrink, errp)) {
        return false;
    }
    atomic_store(&ctx->poll_grow, grow);
    atomic_store(&ctx->poll_shrink, shrink);
    atomic_store(&ctx->poll_max_ns, max_ns);
    /*
     * The home thread clamps its window to the new maximum on its next
     * iteration; wake it so a sleeping thread does not spin with the old
     * window first.
     */
    aio_notify(ctx);
    return true;
}

void aio_context_get_poll_params(AioContext *ctx, int64_t *max_ns, int64_t *grow, int64_t *shrink)
{
    if (max_ns) {
        *max_ns = atomic_load(&ctx->poll_max_ns);
    }
    if (grow) {
        *grow = atomic_load(&ctx->poll_grow);
    }
    if (shrink) {
        *shrink = atomic_load(&ctx->poll_shrink);
    }
}

int64_t aio_context_poll_ns(AioContext *ctx)
{
    return atomic_load_explicit(&ctx->poll_ns, memory_order_relaxed);
}

bool aio_context_set_aio_params(AioContext *ctx, int64_t max_batch, GError **errp)
{
    if (!aio_check_range("aio-max-batch", max_batch, errp)) {
        return false;
    }
    atomic_store(&ctx->aio_max_batch, max_batch);
    aio_notify(ctx);
    return true;
}

int64_t aio_context_get_max_batch(AioContext *ctx)
{
    return atomic_load(&ctx->aio_max_batch);
}

/* ------------------------------------------------------------------ */
/* coroutines across contexts */

/* Enters every coroutine scheduled on @ctx, in scheduling order. */
static void co_schedule_bh_cb(void *opaque)
{
    AioContext *ctx = opaque;
    Coroutine *lifo = atomic_exchange(&ctx->scheduled_coroutines, NULL);
    Coroutine *fifo = NULL;

    while (lifo) {
        Coroutine *next = atomic_load_explicit(&lifo->sched_next, memory_order_relaxed);
        atomic_store_explicit(&lifo->sched_next, fifo, memory_order_relaxed);
        fifo = lifo;
        lifo = next;
    }
    while (fifo) {
        Coroutine *co = fifo;
        /* Read the link first: once `scheduled` is clear, co may be pushed again. */
        fifo = atomic_load_explicit(&co->sched_next, memory_order_relaxed);
        atomic_store(&co->scheduled, NULL);
        co_enter_ctx(ctx, co);
    }
}

/*
 * Claims @co for scheduling under the name @who (aborting if another
 * scheduler owns it), pushes it on @ctx and kicks @ctx's scheduling BH.
 */
static void aio_co_schedule_by(AioContext *ctx, Coroutine *co, const char *who)
{
    const char *prev = NULL;
    if (!atomic_compare_exchange_strong(&co->scheduled, &prev, who)) {
        fprintf(stderr, "aio_co_schedule: coroutine already scheduled by %s\n", prev);
        abort();
    }
    Coroutine *head = atomic_load_explicit(&ctx->scheduled_coroutines, memory_order_relaxed);
    do {
        atomic_store_explicit(&co->sched_next, head, memory_order_relaxed);
    } while (!atomic_compare_exchange_weak_explicit(&ctx->scheduled_coroutines, &head, co,
                                                    memory_order_release, memory_order_relaxed));
    aio_bh_schedule(ctx->co_schedule_bh);
}

void aio_co_schedule(AioContext *ctx, Coroutine *co)
{
    aio_co_schedule_by(ctx, co, "aio_co_schedule");
}

void aio_co_wake(Coroutine *co)
{
    AioContext *ctx = co_get_ctx(co);
    if (!ctx) {
        fprintf(stderr, "aio_co_wake: coroutine was never entered\n");
        abort();
    }
    if (ctx == aio_get_current()) {
        co_wake_same_thread(co);
    } else {
        aio_co_schedule_by(ctx, co, "aio_co_wake");
    }
}

void aio_co_enter(AioContext *ctx, Coroutine *co)
{
    if (ctx != aio_get_current()) {
        aio_co_schedule_by(ctx, co, "aio_co_enter");
    } else if (co_in_coroutine()) {
        co_wake_same_thread(co);
    } else {
        co_enter_ctx(ctx, co);
    }
}

typedef struct CoRescheduleSelf {
    Coroutine *co;
    AioContext *new_ctx;
} CoRescheduleSelf;

static void co_reschedule_self_bh(void *opaque)
{
    CoRescheduleSelf *data = opaque;
    aio_co_schedule_by(data->new_ctx, data->co, "aio_co_reschedule_self");
}

/*
 * The coroutine cannot push itself onto @new_ctx directly: that thread
 * could enter it before it has yielded here.  A BH in the old context
 * runs only after the yield, and hands it over from there.
 */
void coroutine_fn aio_co_reschedule_self(AioContext *new_ctx)
{
    AioContext *old_ctx = aio_get_current();
    if (new_ctx == old_ctx) {
        return;
    }
    CoRescheduleSelf data = {.co = co_self(), .new_ctx = new_ctx};
    g_assert(data.co && old_ctx);
    aio_bh_schedule_oneshot(old_ctx, co_reschedule_self_bh, &data);
    co_yield ();
}

/* ------------------------------------------------------------------ */
/* AIO_WAIT_WHILE */

static void aio_wait_bh(void *opaque)
{
    /* Running at all is the point: aio_poll() returns and the waiter re-checks. */
}

void aio_wait_kick(void)
{
    /*
     * An RMW rather than a load: AIO_WAIT_WHILE raises the count with an
     * RMW before it evaluates its condition, so either it reads from ours
     * (and sees the condition we changed) or we read its increment.
     */
    if (atomic_fetch_add_explicit(&aio_wait_waiters, 0, memory_order_acq_rel)) {
        /*
         * One BH shared by all kickers: while it is pending, further kicks
         * are a single atomic OR, with no allocation and no notify.
         */
        static AioBH *_Atomic kick_bh;
        AioBH *bh = atomic_load(&kick_bh);
        if (!bh) {
            AioBH *fresh = aio_bh_new(aio_main_context(), aio_wait_bh, NULL);
            if (atomic_compare_exchange_strong(&kick_bh, &bh, fresh)) {
                bh = fresh;
            } else {
                g_free(fresh); /* never scheduled: nobody else has seen it */
            }
        }
        aio_bh_schedule(bh);
    }
}
