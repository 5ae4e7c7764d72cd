/*
 * IOThread: a thread that runs one AioContext (and, once asked for it, a
 * GMainContext) until stopped.  Created and destroyed from the main
 * thread; its parameters may be changed from any thread while it runs.
 */
#ifndef STRATA_IOTHREAD_H
#define STRATA_IOTHREAD_H

#include <glib.h>
#include <stdint.h>

#include "aio/aio.h"

typedef struct IOThread IOThread;

/*
 * Tunables; -1 means "keep the default".  Any other negative value is
 * rejected by iothread_create() with an error naming the parameter.
 */
typedef struct IOThreadParams {
    int64_t poll_max_ns;   /* default 32768 */
    int64_t poll_grow;     /* default 0 (= 2) */
    int64_t poll_shrink;   /* default 0 (= 2) */
    int64_t aio_max_batch; /* default 0 (engine default) */
} IOThreadParams;

#define IOTHREAD_PARAMS_DEFAULT                                                                    \
    ((IOThreadParams){.poll_max_ns = -1, .poll_grow = -1, .poll_shrink = -1, .aio_max_batch = -1})

typedef struct IOThreadInfo {
    char *id;
    int thread_id; /* kernel TID */
    int64_t poll_max_ns;
    int64_t poll_grow;
    int64_t poll_shrink;
    int64_t aio_max_batch;
} IOThreadInfo;

/*
 * Starts a thread named "IO <id>" running a new AioContext.  @params may be
 * NULL.  Fails (naming the parameter, G_FILE_ERROR_INVAL) when a value is
 * out of [0, INT64_MAX] and not -1, when @id is empty, or (G_FILE_ERROR_EXIST)
 * when @id is already used.
 */
IOThread *iothread_create(const char *id, const IOThreadParams *params, GError **errp);

/*
 * Sets one parameter by its QEMU name ("poll-max-ns", "poll-grow",
 * "poll-shrink", "aio-max-batch") while the thread runs.
 */
bool iothread_set_param(IOThread *iothread, const char *name, int64_t value, GError **errp);

AioContext *iothread_get_aio_context(IOThread *iothread);
/* Creates on first call the thread's GMainContext and makes it run a GMainLoop. */
GMainContext *iothread_get_g_main_context(IOThread *iothread);
const char *iothread_get_id(IOThread *iothread);
IOThread *iothread_find(const char *id);

/* Fills @info (free with iothread_info_clear). */
void iothread_query(IOThread *iothread, IOThreadInfo *info);
void iothread_info_clear(IOThreadInfo *info);
/* All IOThreads, in creation order: a list of IOThreadInfo* (free with iothread_info_list_free). */
GList *iothread_query_all(void);
void iothread_info_list_free(GList *list);

/*
 * Stops the thread after it has finished what is in flight (its pending
 * bottom halves and ready handlers), joins it and frees everything.
 */
void iothread_destroy(IOThread *iothread);

#endif /* STRATA_IOTHREAD_H */
