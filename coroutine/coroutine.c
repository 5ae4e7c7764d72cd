/*
 * Coroutine lifecycle: creation from a per-thread pool, entering and
 * yielding, the wakeup queue, termination.
 *
 * State machine (CoroutineState):
 *
 *   co_create        co_enter            co_enter(other)
 *   ---------> READY -------> RUNNING <------------------> ENTERED
 *                     ^          |    other yields/returns
 *            co_enter |          | co_yield
 *                     +- YIELDED +
 *                                | entry returns
 *                                v
 *                           TERMINATED --> back to a free pool
 *
 * Threading: each thread has its own current coroutine, its own leader
 * context (its normal stack) and its own free pool, all thread-local, so
 * the fast paths take no lock. Only the global overflow pool, which
 * receives the pools of exiting threads and the excess of full ones, is
 * behind a mutex.
 *
 * A coroutine may resume on another thread than the one it yielded on
 * (aio_co_schedule). The compiler may keep a thread-local's address in a
 * register across a call, so no function here reads a thread-local after
 * a switch that can come back on another thread: co_yield() and
 * co_terminate() touch none after their switch. co_enter_ctx() may:
 * whoever it entered always comes back to it on the same thread.
 */
#include <errno.h>
#include <glib.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aio/aio.h"
#include "coroutine/coroutine-int.h"

#define likely(x)   __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

/*
 * initial-exec: a thread-local is then one %fs-relative load, instead of a
 * call to __tls_get_addr in position-independent code.
 */
#define CO_TLS __thread __attribute__((tls_model("initial-exec")))

/* A thread keeps at most this many free coroutines; the rest overflow. */
#define CO_POOL_LOCAL_MAX 64
/* Coroutines moved at once between a thread's pool and the global one. */
#define CO_POOL_BATCH 32
/* Beyond this many, freed coroutines are unmapped rather than kept. */
#define CO_POOL_GLOBAL_MAX 512

static CO_TLS Coroutine *co_current;
static CO_TLS CoroutineSwitch co_leader_sw;
#if CO_SWITCH_SANITIZED
static CO_TLS bool co_leader_ready;
#endif
static CO_TLS Coroutine *co_pool_head;
static CO_TLS unsigned co_pool_size;
static CO_TLS bool co_pool_registered;

static pthread_mutex_t co_global_lock = PTHREAD_MUTEX_INITIALIZER;
static Coroutine *co_global_head; /* protected by co_global_lock */
static unsigned co_global_size;   /* protected by co_global_lock */
static _Atomic uint64_t co_stacks_total;

static pthread_once_t co_pool_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t co_pool_key;

static void __attribute__((noreturn, cold, format(printf, 1, 2))) co_die(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

/* The calling thread's own stack, as a context to switch back to. */
static inline CoroutineSwitch *co_leader(void)
{
#if CO_SWITCH_SANITIZED
    if (unlikely(!co_leader_ready)) {
        co_switch_init_thread(&co_leader_sw);
        co_leader_ready = true;
    }
#endif
    return &co_leader_sw;
}

/* ---- pools ---------------------------------------------------------------- */

static void co_free(Coroutine *co)
{
    co_switch_free(&co->sw);
    g_free(co);
}

/*
 * Hands a chain of @n free coroutines to the global pool; whatever does not
 * fit under CO_POOL_GLOBAL_MAX is unmapped.
 */
static void co_global_put(Coroutine *chain, unsigned n)
{
    Coroutine *excess = NULL;

    pthread_mutex_lock(&co_global_lock);
    unsigned room = CO_POOL_GLOBAL_MAX - co_global_size;
    if (n > room) {
        n = room;
    }
    if (n > 0) {
        Coroutine *tail = chain;
        for (unsigned i = 1; i < n; i++) {
            tail = tail->pool_next;
        }
        excess = tail->pool_next;
        tail->pool_next = co_global_head;
        co_global_head = chain;
        co_global_size += n;
    } else {
        excess = chain;
    }
    pthread_mutex_unlock(&co_global_lock);

    while (excess) {
        Coroutine *next = excess->pool_next;
        co_free(excess);
        excess = next;
    }
}

/* Moves up to CO_POOL_BATCH coroutines from the global pool to the empty local one. */
static void co_global_take(void)
{
    pthread_mutex_lock(&co_global_lock);
    Coroutine *chain = co_global_head;
    if (chain) {
        unsigned n = 1;
        Coroutine *tail = chain;
        while (n < CO_POOL_BATCH && tail->pool_next) {
            tail = tail->pool_next;
            n++;
        }
        co_global_head = tail->pool_next;
        co_global_size -= n;
        tail->pool_next = NULL;
        co_pool_head = chain;
        co_pool_size = n;
    }
    pthread_mutex_unlock(&co_global_lock);
}

/* Thread-exit destructor: the dying thread's free coroutines go global. */
static void co_pool_thread_exit(void *unused)
{
    Coroutine *chain = co_pool_head;
    unsigned n = co_pool_size;

    co_pool_head = NULL;
    co_pool_size = 0;
    /* A later destructor that releases a coroutine registers us again. */
    co_pool_registered = false;
    if (chain) {
        co_global_put(chain, n);
    }
}

static void co_pool_key_create(void)
{
    if (pthread_key_create(&co_pool_key, co_pool_thread_exit) != 0) {
        co_die("coroutine: pthread_key_create failed");
    }
}

static void co_pool_register(void)
{
    pthread_once(&co_pool_key_once, co_pool_key_create);
    pthread_setspecific(co_pool_key, &co_pool_registered);
    co_pool_registered = true;
}

static void __attribute__((noinline)) co_release_slow(void)
{
    if (!co_pool_registered) {
        co_pool_register();
    }
    if (co_pool_size <= CO_POOL_LOCAL_MAX) {
        return;
    }
    /* Keep the most recently used half (warm in cache), spill the rest. */
    Coroutine *keep_tail = co_pool_head;
    for (unsigned i = 1; i < CO_POOL_LOCAL_MAX - CO_POOL_BATCH; i++) {
        keep_tail = keep_tail->pool_next;
    }
    Coroutine *spill = keep_tail->pool_next;
    unsigned n = co_pool_size - (CO_POOL_LOCAL_MAX - CO_POOL_BATCH);
    keep_tail->pool_next = NULL;
    co_pool_size -= n;
    co_global_put(spill, n);
}

/* @co has terminated; its wakeup queue is empty. */
static inline void co_release(Coroutine *co)
{
    co->pool_next = co_pool_head;
    co_pool_head = co;
    if (unlikely(++co_pool_size > CO_POOL_LOCAL_MAX || !co_pool_registered)) {
        co_release_slow();
    }
}

/* ---- entering, yielding, terminating ------------------------------------- */

static void co_trampoline(void *arg);

static Coroutine *__attribute__((noinline)) co_create_slow(void)
{
    co_global_take();
    Coroutine *co = co_pool_head;
    if (co) {
        /*
         * The rest of the batch must go back at thread exit even if this
         * thread never releases a coroutine (its coroutines may all end
         * in other threads).
         */
        if (!co_pool_registered) {
            co_pool_register();
        }
        co_pool_head = co->pool_next;
        co_pool_size--;
        return co;
    }

    co = g_new0(Coroutine, 1);
    if (!co_switch_init(&co->sw, COROUTINE_STACK_SIZE, co_trampoline, co)) {
        co_die("co_create: cannot map a coroutine stack: %s", strerror(errno));
    }
    co->wakeup_tail = &co->wakeup_head;
    atomic_fetch_add_explicit(&co_stacks_total, 1, memory_order_relaxed);
    return co;
}

Coroutine *co_create(CoroutineEntry *entry, void *opaque)
{
    Coroutine *co = co_pool_head;

    if (likely(co)) {
        co_pool_head = co->pool_next;
        co_pool_size--;
    } else {
        co = co_create_slow();
    }
    co->pool_next = NULL;
    co->entry = entry;
    co->opaque = opaque;
    co->caller = NULL;
    co->ctx = NULL;
    co->state = CO_STATE_READY;
    co->queue_next = NULL;
    return co;
}

/*
 * Leaves a terminated coroutine for good (until the pool hands it out
 * again, when the switch returns here, possibly on another thread).
 * noinline so that the thread-locals it reads are looked up afresh on each
 * termination.
 */
static void __attribute__((noinline)) co_terminate(Coroutine *co)
{
    if (unlikely(co->locks_held != 0)) {
        co_die("co: coroutine terminated while holding %u lock(s)", co->locks_held);
    }
    Coroutine *caller = co->caller;
    co->caller = NULL;
    co->state = CO_STATE_TERMINATED;
    co_current = caller;
    if (caller) {
        caller->state = CO_STATE_RUNNING;
    }
    co_switch(&co->sw, caller ? &caller->sw : &co_leader_sw, true);
}

/* Runs on the coroutine's own stack, once per stack: pooled reuse loops. */
static void co_trampoline(void *arg)
{
    Coroutine *co = arg;

    co_switch_entered(&co->sw);
    for (;;) {
        co->entry(co->opaque);
        co_terminate(co);
    }
}

static void __attribute__((noinline, noreturn, cold)) co_enter_fail(Coroutine *co)
{
    switch (co->state) {
    case CO_STATE_RUNNING:
    case CO_STATE_ENTERED:
        co_die("co_enter: coroutine re-entered recursively");
    case CO_STATE_TERMINATED:
        co_die("co_enter: coroutine entered after it terminated");
    default:
        break;
    }
    const char *by = atomic_load(&co->scheduled);
    co_die("co_enter: coroutine scheduled by %s entered directly", by ? by : "(unknown)");
}

static void co_run_wakeups(Coroutine *co);

/* READY and YIELDED, as a bit set of CoroutineState values. */
#define CO_ENTERABLE_STATES ((1u << CO_STATE_READY) | (1u << CO_STATE_YIELDED))

/* Shared by co_enter_ctx and co_enter, so that co_enter is one call deep. */
static inline __attribute__((always_inline)) void co_do_enter(AioContext *ctx, Coroutine *co)
{
    Coroutine *self = co_current;

    if (unlikely(!((1u << co->state) & CO_ENTERABLE_STATES) ||
                 atomic_load_explicit(&co->scheduled, memory_order_relaxed) != NULL)) {
        co_enter_fail(co);
    }

    CoroutineSwitch *from = self ? &self->sw : co_leader();
    co->caller = self;
    co->ctx = ctx;
    co->state = CO_STATE_RUNNING;
    if (self) {
        self->state = CO_STATE_ENTERED;
    }
    co_current = co;

    co_switch(from, &co->sw, false);

    /*
     * @co yielded or terminated, and already made us current again (fewer
     * values live across the switch keeps this path short).
     */
    if (unlikely(co->wakeup_head != NULL)) {
        co_run_wakeups(co);
    } else if (co->state == CO_STATE_TERMINATED) {
        co_release(co);
    }
}

void co_enter_ctx(AioContext *ctx, Coroutine *co)
{
    co_do_enter(ctx, co);
}

/*
 * Enters, in order, the coroutines @co woke while it ran. They are
 * detached first: @co may be re-entered (or reused, if it terminated) by
 * one of them and collect a new queue of its own.
 */
static void __attribute__((noinline)) co_run_wakeups(Coroutine *co)
{
    Coroutine *w = co->wakeup_head;

    co->wakeup_head = NULL;
    co->wakeup_tail = &co->wakeup_head;
    if (co->state == CO_STATE_TERMINATED) {
        co_release(co);
    }
    while (w) {
        Coroutine *next = w->wakeup_next;
        w->wakeup_next = NULL;
        w->wakeup_queued = false;
        co_enter_ctx(w->ctx ? w->ctx : aio_get_current(), w);
        w = next;
    }
}

void co_enter(Coroutine *co)
{
    co_do_enter(aio_get_current(), co);
}

void co_enter_in(AioContext *ctx, Coroutine *co)
{
    co_do_enter(ctx, co);
}

void coroutine_fn co_yield(void)
{
    Coroutine *self = co_current;

    if (unlikely(!self)) {
        co_die("co_yield: called outside coroutine context");
    }
    Coroutine *caller = self->caller;
    self->caller = NULL;
    self->state = CO_STATE_YIELDED;
    co_current = caller;
    if (caller) {
        caller->state = CO_STATE_RUNNING;
    }
    co_switch(&self->sw, caller ? &caller->sw : &co_leader_sw, false);
}

void co_wake_same_thread(Coroutine *co)
{
    Coroutine *self = co_current;

    if (!self) {
        co_enter_ctx(co->ctx ? co->ctx : aio_get_current(), co);
        return;
    }
    if (unlikely(co->wakeup_queued)) {
        co_die("co_wake_same_thread: coroutine woken twice before it ran");
    }
    co->wakeup_queued = true;
    co->wakeup_next = NULL;
    *self->wakeup_tail = co;
    self->wakeup_tail = &co->wakeup_next;
}

/* ---- queries -------------------------------------------------------------- */

Coroutine *co_self(void)
{
    return co_current;
}

bool co_in_coroutine(void)
{
    return co_current != NULL;
}

bool co_entered(Coroutine *co)
{
    return co->state == CO_STATE_RUNNING || co->state == CO_STATE_ENTERED ||
           co->state == CO_STATE_YIELDED;
}

AioContext *co_get_ctx(Coroutine *co)
{
    return co->ctx;
}

unsigned co_pool_local_size(void)
{
    return co_pool_size;
}

uint64_t co_stacks_created(void)
{
    return atomic_load_explicit(&co_stacks_total, memory_order_relaxed);
}

const char *co_backend_name(void)
{
    return co_switch_backend_name;
}
