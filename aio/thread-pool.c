/*
 * Thread pool: worker threads run blocking functions for one AioContext.
 *
 * Threading: the request queue and the worker accounting are guarded by
 * pool->lock (a pthread mutex, which TSan understands); idle workers sleep
 * on work_cond.  A worker that finished a request pushes it on the
 * lock-free done list and schedules the pool's BH, so completions run in
 * the context's home thread, in the order the BH finds them.  Submitting
 * may happen from any thread.
 *
 * Wake-ups are the expensive part: a futex wake and a context switch cost
 * more than a page-cache read.  So a request wakes a worker only when no
 * idle worker is already on its way to the queue, and the signal is sent
 * after the lock is dropped.  A worker that takes a request and sees more
 * queued wakes the next one (thread_pool_need_worker_locked): a burst
 * wakes workers one after the other while requests remain, so short
 * requests are run by the workers already awake and long ones still spread
 * over as many workers as they need.  Busy workers take the next request
 * without sleeping.
 *
 * Workers are spawned on demand, up to max_threads, when a request finds
 * no idle worker at all.  An idle worker above min_threads exits after
 * idle_timeout_ms without work.  Exiting workers leave their handle on the
 * `exited` list; it is joined by the next spawn or by thread_pool_free(),
 * so no thread outlives the pool.
 */
#include <errno.h>
#include <pthread.h>
#include <time.h>

#include "aio/aio-int.h"
#include "coroutine/coroutine-int.h"

typedef struct ThreadPoolRequest ThreadPoolRequest;
struct ThreadPoolRequest {
    ThreadPoolFunc *func;
    void *arg;
    ThreadPoolCompletion *cb;
    void *opaque;
    int ret;
    bool on_heap;            /* else it lives in thread_pool_co_submit's frame */
    ThreadPoolRequest *next; /* queue link (under lock), then done-list link */
};

typedef struct ThreadPoolExited {
    pthread_t thread;
    struct ThreadPoolExited *next;
} ThreadPoolExited;

struct ThreadPool {
    AioContext *ctx;
    AioBH *completion_bh;
    /* Pushed by every worker on every completion: kept off the lock's line. */
    ThreadPoolRequest *_Atomic done __attribute__((aligned(64))); /* LIFO */

    pthread_mutex_t lock __attribute__((aligned(64)));
    pthread_cond_t work_cond; /* idle workers wait here */
    pthread_cond_t exit_cond; /* thread_pool_free waits for the last worker */
    ThreadPoolRequest *queue_head, *queue_tail;
    int nr_threads;   /* alive (counted from spawn to exit) */
    int idle_threads; /* alive and not running a function */
    int nr_waiting;   /* idle and blocked in work_cond (or about to be) */
    int nr_signalled; /* signals sent to work_cond that no returning waiter consumed yet */
    int min_threads, max_threads, idle_timeout_ms;
    bool stopping;
    ThreadPoolExited *exited;
};

/* Runs in the context's home thread: hands each finished request to its completion. */
static void thread_pool_completion_bh(void *opaque)
{
    ThreadPool *pool = opaque;
    ThreadPoolRequest *lifo = atomic_exchange(&pool->done, NULL);
    ThreadPoolRequest *fifo = NULL;

    while (lifo) {
        ThreadPoolRequest *next = lifo->next;
        lifo->next = fifo;
        fifo = lifo;
        lifo = next;
    }
    while (fifo) {
        ThreadPoolRequest *req = fifo;
        fifo = req->next;
        /* A coroutine's request is gone once its completion has woken it. */
        bool on_heap = req->on_heap;
        req->cb(req->opaque, req->ret);
        if (on_heap) {
            g_free(req);
        }
    }
}

static void thread_pool_complete(ThreadPool *pool, ThreadPoolRequest *req)
{
    ThreadPoolRequest *head = atomic_load_explicit(&pool->done, memory_order_relaxed);
    do {
        req->next = head;
    } while (!atomic_compare_exchange_weak_explicit(&pool->done, &head, req, memory_order_release,
                                                    memory_order_relaxed));
    aio_bh_schedule(pool->completion_bh);
}

static void *thread_pool_worker(void *opaque);

/* Joins workers that have exited; they are past their last use of the pool. */
static void thread_pool_reap_locked(ThreadPool *pool)
{
    while (pool->exited) {
        ThreadPoolExited *e = pool->exited;
        pool->exited = e->next;
        pthread_join(e->thread, NULL);
        g_free(e);
    }
}

static void thread_pool_spawn_locked(ThreadPool *pool)
{
    pthread_t thread;
    thread_pool_reap_locked(pool);
    if (pthread_create(&thread, NULL, thread_pool_worker, pool) != 0) {
        /* Existing workers will get to the request; only fail if there are none. */
        if (pool->nr_threads == 0) {
            g_error("thread pool: cannot start a worker thread");
        }
        return;
    }
    pool->nr_threads++;
    pool->idle_threads++; /* it will look at the queue before sleeping */
}

/*
 * Called with a request queued: makes sure some idle worker will look at
 * the queue.  A worker counts as on its way when it is idle and not
 * waiting, or waiting with a signal sent for it.  If there is one, nothing
 * is needed: when it takes a request and finds more queued, it calls this
 * in turn.  Otherwise a waiting worker is picked (returns true: the caller
 * signals work_cond after unlocking, so the woken worker does not block on
 * the lock the caller still holds), or a new one is started.  If every
 * worker is busy and the pool is full, the first to finish takes the
 * request.
 *
 * nr_signalled <= nr_waiting always holds: a waiter that returns (signalled,
 * timed out or spuriously) consumes one signal if any is outstanding, and
 * since it is awake and about to look at the queue, that is what the
 * signal was for.
 */
static bool thread_pool_need_worker_locked(ThreadPool *pool)
{
    int on_the_way = pool->idle_threads - pool->nr_waiting + pool->nr_signalled;
    if (on_the_way > 0) {
        return false;
    }
    if (pool->nr_waiting > pool->nr_signalled) {
        pool->nr_signalled++;
        return true;
    }
    if (pool->nr_threads < pool->max_threads) {
        thread_pool_spawn_locked(pool);
    }
    return false;
}

static void thread_pool_deadline(ThreadPool *pool, struct timespec *deadline)
{
    clock_gettime(CLOCK_MONOTONIC, deadline);
    deadline->tv_sec += pool->idle_timeout_ms / 1000;
    deadline->tv_nsec += (long)(pool->idle_timeout_ms % 1000) * 1000000;
    if (deadline->tv_nsec >= 1000000000) {
        deadline->tv_sec++;
        deadline->tv_nsec -= 1000000000;
    }
}

/*
 * Workers run requests while any are queued.  An idle worker waits on
 * work_cond; above min_threads it exits after idle_timeout_ms without work.
 */
static void *thread_pool_worker(void *opaque)
{
    ThreadPool *pool = opaque;
    struct timespec deadline;
    bool have_deadline = false;

    pthread_setname_np(pthread_self(), "pool-worker");
    pthread_mutex_lock(&pool->lock);
    while (!pool->stopping) {
        ThreadPoolRequest *req = pool->queue_head;
        if (req) {
            pool->queue_head = req->next;
            if (!pool->queue_head) {
                pool->queue_tail = NULL;
            }
            pool->idle_threads--;
            bool wake = pool->queue_head && thread_pool_need_worker_locked(pool);
            pthread_mutex_unlock(&pool->lock);
            if (wake) {
                pthread_cond_signal(&pool->work_cond);
            }

            req->ret = req->func(req->arg);
            thread_pool_complete(pool, req);

            pthread_mutex_lock(&pool->lock);
            pool->idle_threads++;
            have_deadline = false;
            continue;
        }

        bool timed_out = false;
        pool->nr_waiting++;
        if (pool->nr_threads <= pool->min_threads) {
            pthread_cond_wait(&pool->work_cond, &pool->lock);
        } else {
            if (!have_deadline) {
                thread_pool_deadline(pool, &deadline);
                have_deadline = true;
            }
            timed_out =
                pthread_cond_timedwait(&pool->work_cond, &pool->lock, &deadline) == ETIMEDOUT;
        }
        pool->nr_waiting--;
        if (pool->nr_signalled > 0) {
            pool->nr_signalled--;
        }
        if (timed_out && !pool->queue_head && pool->nr_threads > pool->min_threads) {
            break;
        }
    }
    pool->idle_threads--;
    pool->nr_threads--;
    ThreadPoolExited *e = g_new(ThreadPoolExited, 1);
    e->thread = pthread_self();
    e->next = pool->exited;
    pool->exited = e;
    pthread_cond_broadcast(&pool->exit_cond);
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

ThreadPool *aio_get_thread_pool(AioContext *ctx)
{
    ThreadPool *pool = atomic_load(&ctx->thread_pool);
    if (pool) {
        return pool;
    }
    pool = g_aligned_alloc0(1, sizeof(ThreadPool), _Alignof(ThreadPool));
    pool->ctx = ctx;
    pool->completion_bh = aio_bh_new(ctx, thread_pool_completion_bh, pool);
    pthread_mutex_init(&pool->lock, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&pool->work_cond, &attr);
    pthread_condattr_destroy(&attr);
    pthread_cond_init(&pool->exit_cond, NULL);
    pool->min_threads = 0;
    pool->max_threads = 64;
    pool->idle_timeout_ms = 10000;

    ThreadPool *expected = NULL;
    if (!atomic_compare_exchange_strong(&ctx->thread_pool, &expected, pool)) {
        /* Another thread won the race and no worker of ours exists yet. */
        thread_pool_free(pool);
        return expected;
    }
    return pool;
}

static void thread_pool_enqueue(ThreadPool *pool, ThreadPoolRequest *req)
{
    pthread_mutex_lock(&pool->lock);
    if (pool->queue_tail) {
        pool->queue_tail->next = req;
    } else {
        pool->queue_head = req;
    }
    pool->queue_tail = req;
    bool wake = thread_pool_need_worker_locked(pool);
    pthread_mutex_unlock(&pool->lock);
    if (wake) {
        pthread_cond_signal(&pool->work_cond);
    }
}

void thread_pool_submit(ThreadPool *pool, ThreadPoolFunc *func, void *arg, ThreadPoolCompletion *cb,
                        void *opaque)
{
    ThreadPoolRequest *req = g_new(ThreadPoolRequest, 1);
    *req =
        (ThreadPoolRequest){.func = func, .arg = arg, .cb = cb, .opaque = opaque, .on_heap = true};
    thread_pool_enqueue(pool, req);
}

typedef struct ThreadPoolCoWait {
    ThreadPoolRequest req;
    Coroutine *co;
    int ret;
} ThreadPoolCoWait;

static void thread_pool_co_done(void *opaque, int ret)
{
    ThreadPoolCoWait *w = opaque;
    w->ret = ret;
    aio_co_wake(w->co);
}

/* The request lives in this frame: the coroutine cannot go away before its completion. */
int coroutine_fn thread_pool_co_submit(ThreadPool *pool, ThreadPoolFunc *func, void *arg)
{
    ThreadPoolCoWait w = {.co = co_self(), .ret = -EINPROGRESS};
    g_assert(w.co);
    w.req = (ThreadPoolRequest){.func = func, .arg = arg, .cb = thread_pool_co_done, .opaque = &w};
    thread_pool_enqueue(pool, &w.req);
    co_yield();
    return w.ret;
}

bool thread_pool_set_limits(ThreadPool *pool, int min_threads, int max_threads, int idle_timeout_ms,
                            GError **errp)
{
    if (max_threads < 1) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "max-threads must be at least 1");
        return false;
    }
    if (min_threads < 0 || min_threads > max_threads) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "min-threads must be in range [0, max-threads (%d)]", max_threads);
        return false;
    }
    if (idle_timeout_ms < 0) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "idle-timeout-ms must not be negative");
        return false;
    }
    pthread_mutex_lock(&pool->lock);
    pool->min_threads = min_threads;
    pool->max_threads = max_threads;
    pool->idle_timeout_ms = idle_timeout_ms;
    /* Let idle workers re-evaluate whether they are now surplus. */
    pthread_cond_broadcast(&pool->work_cond);
    pthread_mutex_unlock(&pool->lock);
    return true;
}

int thread_pool_nr_threads(ThreadPool *pool)
{
    pthread_mutex_lock(&pool->lock);
    int n = pool->nr_threads;
    pthread_mutex_unlock(&pool->lock);
    return n;
}

void thread_pool_free(ThreadPool *pool)
{
    pthread_mutex_lock(&pool->lock);
    pool->stopping = true;
    pthread_cond_broadcast(&pool->work_cond);
    while (pool->nr_threads > 0) {
        pthread_cond_wait(&pool->exit_cond, &pool->lock);
    }
    thread_pool_reap_locked(pool);
    pthread_mutex_unlock(&pool->lock);

    /* The context is going away: requests never run or never completed are dropped. */
    while (pool->queue_head) {
        ThreadPoolRequest *req = pool->queue_head;
        pool->queue_head = req->next;
        if (req->on_heap) {
            g_free(req);
        }
    }
    ThreadPoolRequest *req = atomic_exchange(&pool->done, NULL);
    while (req) {
        ThreadPoolRequest *next = req->next;
        if (req->on_heap) {
            g_free(req);
        }
        req = next;
    }
    aio_bh_delete(pool->completion_bh);
    pthread_mutex_destroy(&pool->lock);
    pthread_cond_destroy(&pool->work_cond);
    pthread_cond_destroy(&pool->exit_cond);
    g_aligned_free(pool);
}
