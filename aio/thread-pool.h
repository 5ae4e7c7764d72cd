/*
 * Thread pool: blocking work (preadv, fsync, fallocate...) done in worker
 * threads on behalf of one AioContext.  Each context owns one pool, made
 * on first use; completions run in that context's thread, so a coroutine
 * that submits work is resumed in its own context.
 */
#ifndef STRATA_THREAD_POOL_H
#define STRATA_THREAD_POOL_H

#include "aio/aio.h"

typedef struct ThreadPool ThreadPool;

/* Runs in a worker thread; the return value is handed to the completion. */
typedef int ThreadPoolFunc(void *opaque);
typedef void ThreadPoolCompletion(void *opaque, int ret);

/* The pool of @ctx, created on first call.  Any thread. */
ThreadPool *aio_get_thread_pool(AioContext *ctx);

/*
 * Runs func(arg) in a worker; the calling coroutine yields until it is
 * done and returns its result, resumed in its home context.
 */
int coroutine_fn thread_pool_co_submit(ThreadPool *pool, ThreadPoolFunc *func, void *arg);

/* Callback form: @cb runs in the pool's context's thread. */
void thread_pool_submit(ThreadPool *pool, ThreadPoolFunc *func, void *arg,
                        ThreadPoolCompletion *cb, void *opaque);

/*
 * Bounds the number of workers (min kept alive, max running).  Idle
 * workers above @min exit after @idle_timeout_ms.  Defaults: 0, 64, 10000.
 */
bool thread_pool_set_limits(ThreadPool *pool, int min_threads, int max_threads,
                            int idle_timeout_ms, GError **errp);
/* Number of worker threads alive now. */
int thread_pool_nr_threads(ThreadPool *pool);

/* Called by aio_context_unref when the context dies: joins all workers. */
void thread_pool_free(ThreadPool *pool);

#endif /* STRATA_THREAD_POOL_H */
