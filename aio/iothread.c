/*
 * IOThread: a thread that runs one AioContext until destroyed.
 *
 * Lifecycle: iothread_create() starts the thread and waits until it has
 * bound its context and published its kernel TID.  The thread loops on
 * aio_poll(ctx, true); once iothread_get_g_main_context() was called it
 * runs a GMainLoop on that GMainContext instead, with the AioContext's
 * GSource attached, so glib sources and AioContext work share the thread.
 * iothread_destroy() schedules a stop BH (which runs after every BH already
 * scheduled), the thread drains with non-blocking aio_poll() until nothing
 * progresses, exits, and is joined.
 *
 * Threading: create, destroy and iothread_get_g_main_context() belong to
 * the main thread.  iothread_set_param(), the queries and iothread_find()
 * may be called from any thread; the registry has its own mutex, and the
 * parameters live in the AioContext as atomics.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "aio/aio-int.h"
#include "aio/iothread.h"

#define IOTHREAD_POLL_MAX_NS_DEFAULT 32768

struct IOThread {
    char *id;
    AioContext *ctx;
    pthread_t thread;
    atomic_bool running; /* cleared by the stop BH, in the thread itself */

    pthread_mutex_t start_lock; /* with start_cond: creator waits for the TID */
    pthread_cond_t start_cond;
    int tid; /* guarded by start_lock until published, then constant */

    pthread_mutex_t param_lock; /* serialises iothread_set_param's read-modify-write */
    pthread_mutex_t gmain_lock; /* guards creation of gctx/loop */
    GMainContext *gctx;         /* set once, then constant */
    GMainLoop *_Atomic loop;    /* non-NULL: the thread runs it */
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static GList *registry; /* IOThread*, creation order; guarded by registry_lock */

static void iothread_stop_bh(void *opaque)
{
    IOThread *iothread = opaque;
    atomic_store(&iothread->running, false);
    GMainLoop *loop = atomic_load(&iothread->loop);
    if (loop) {
        g_main_loop_quit(loop);
    }
}

/* The kernel limits thread names to 15 bytes: "IO " plus up to 12 of the id. */
static void iothread_set_name(const char *id)
{
    char name[16];
    snprintf(name, sizeof(name), "IO %s", id);
    pthread_setname_np(pthread_self(), name);
}

static void *iothread_run(void *opaque)
{
    IOThread *iothread = opaque;
    AioContext *ctx = iothread->ctx;

    aio_set_current(ctx);
    iothread_set_name(iothread->id);
    pthread_mutex_lock(&iothread->start_lock);
    iothread->tid = gettid();
    pthread_cond_signal(&iothread->start_cond);
    pthread_mutex_unlock(&iothread->start_lock);

    while (atomic_load(&iothread->running)) {
        GMainLoop *loop = atomic_load(&iothread->loop);
        if (loop) {
            /* The stop BH quits this loop from inside the GSource dispatch. */
            g_main_context_push_thread_default(iothread->gctx);
            g_main_loop_run(loop);
            g_main_context_pop_thread_default(iothread->gctx);
        } else {
            aio_poll(ctx, true);
        }
    }
    /* Finish what was already scheduled or ready when we were told to stop. */
    while (aio_poll(ctx, false)) {
    }
    aio_set_current(NULL);
    return NULL;
}

/* Resolves one parameter of @params (-1 = default) into @out, naming it on error. */
static bool iothread_param(const char *name, int64_t value, int64_t dflt, int64_t *out,
                           GError **errp)
{
    if (value == -1) {
        *out = dflt;
        return true;
    }
    if (value < 0) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "%s must be in range [0, %" G_GINT64_FORMAT "]", name, (gint64)INT64_MAX);
        return false;
    }
    *out = value;
    return true;
}

static bool iothread_apply_params(AioContext *ctx, const IOThreadParams *p, GError **errp)
{
    IOThreadParams d = p ? *p : IOTHREAD_PARAMS_DEFAULT;
    int64_t max_ns, grow, shrink, batch;
    return iothread_param("poll-max-ns", d.poll_max_ns, IOTHREAD_POLL_MAX_NS_DEFAULT, &max_ns,
                          errp) &&
           iothread_param("poll-grow", d.poll_grow, 0, &grow, errp) &&
           iothread_param("poll-shrink", d.poll_shrink, 0, &shrink, errp) &&
           iothread_param("aio-max-batch", d.aio_max_batch, 0, &batch, errp) &&
           aio_context_set_poll_params(ctx, max_ns, grow, shrink, errp) &&
           aio_context_set_aio_params(ctx, batch, errp);
}

static IOThread *iothread_find_locked(const char *id)
{
    for (GList *l = registry; l; l = l->next) {
        IOThread *iothread = l->data;
        if (strcmp(iothread->id, id) == 0) {
            return iothread;
        }
    }
    return NULL;
}

static void iothread_free(IOThread *iothread)
{
    if (iothread->ctx) {
        aio_context_unref(iothread->ctx);
    }
    if (iothread->loop) {
        g_main_loop_unref(iothread->loop);
    }
    if (iothread->gctx) {
        g_main_context_unref(iothread->gctx);
    }
    pthread_mutex_destroy(&iothread->start_lock);
    pthread_cond_destroy(&iothread->start_cond);
    pthread_mutex_destroy(&iothread->gmain_lock);
    pthread_mutex_destroy(&iothread->param_lock);
    g_free(iothread->id);
    g_free(iothread);
}

IOThread *iothread_create(const char *id, const IOThreadParams *params, GError **errp)
{
    if (!id || !*id) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "id must not be empty");
        return NULL;
    }
    IOThread *iothread = g_new0(IOThread, 1);
    iothread->id = g_strdup(id);
    iothread->tid = -1;
    atomic_init(&iothread->running, true);
    pthread_mutex_init(&iothread->start_lock, NULL);
    pthread_cond_init(&iothread->start_cond, NULL);
    pthread_mutex_init(&iothread->gmain_lock, NULL);
    pthread_mutex_init(&iothread->param_lock, NULL);

    iothread->ctx = aio_context_new(errp);
    if (!iothread->ctx || !iothread_apply_params(iothread->ctx, params, errp)) {
        iothread_free(iothread);
        return NULL;
    }

    /* Hold the registry lock across the start so two creators cannot share an id. */
    pthread_mutex_lock(&registry_lock);
    if (iothread_find_locked(id)) {
        pthread_mutex_unlock(&registry_lock);
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_EXIST, "IOThread id '%s' is already in use",
                    id);
        iothread_free(iothread);
        return NULL;
    }
    int ret = pthread_create(&iothread->thread, NULL, iothread_run, iothread);
    if (ret != 0) {
        pthread_mutex_unlock(&registry_lock);
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(ret),
                    "cannot start IOThread '%s': %s", id, g_strerror(ret));
        iothread_free(iothread);
        return NULL;
    }
    registry = g_list_append(registry, iothread);
    pthread_mutex_unlock(&registry_lock);

    pthread_mutex_lock(&iothread->start_lock);
    while (iothread->tid < 0) {
        pthread_cond_wait(&iothread->start_cond, &iothread->start_lock);
    }
    pthread_mutex_unlock(&iothread->start_lock);
    return iothread;
}

bool iothread_set_param(IOThread *iothread, const char *name, int64_t value, GError **errp)
{
    AioContext *ctx = iothread->ctx;
    int64_t max_ns, grow, shrink;

    if (value < 0) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "%s must be in range [0, %" G_GINT64_FORMAT "]", name, (gint64)INT64_MAX);
        return false;
    }
    if (strcmp(name, "aio-max-batch") == 0) {
        return aio_context_set_aio_params(ctx, value, errp);
    }
    bool ok = true;
    pthread_mutex_lock(&iothread->param_lock);
    aio_context_get_poll_params(ctx, &max_ns, &grow, &shrink);
    if (strcmp(name, "poll-max-ns") == 0) {
        max_ns = value;
    } else if (strcmp(name, "poll-grow") == 0) {
        grow = value;
    } else if (strcmp(name, "poll-shrink") == 0) {
        shrink = value;
    } else {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "IOThread has no parameter '%s'", name);
        ok = false;
    }
    ok = ok && aio_context_set_poll_params(ctx, max_ns, grow, shrink, errp);
    pthread_mutex_unlock(&iothread->param_lock);
    return ok;
}

AioContext *iothread_get_aio_context(IOThread *iothread)
{
    return iothread->ctx;
}

GMainContext *iothread_get_g_main_context(IOThread *iothread)
{
    pthread_mutex_lock(&iothread->gmain_lock);
    if (!iothread->gctx) {
        GMainContext *gctx = g_main_context_new();
        GSource *source = aio_get_g_source(iothread->ctx);
        g_source_attach(source, gctx);
        g_source_unref(source);
        iothread->gctx = gctx;
        /* Publishing the loop switches the thread over; wake it out of aio_poll. */
        atomic_store(&iothread->loop, g_main_loop_new(gctx, FALSE));
        aio_notify(iothread->ctx);
    }
    pthread_mutex_unlock(&iothread->gmain_lock);
    return iothread->gctx;
}

const char *iothread_get_id(IOThread *iothread)
{
    return iothread->id;
}

IOThread *iothread_find(const char *id)
{
    pthread_mutex_lock(&registry_lock);
    IOThread *iothread = iothread_find_locked(id);
    pthread_mutex_unlock(&registry_lock);
    return iothread;
}

void iothread_query(IOThread *iothread, IOThreadInfo *info)
{
    info->id = g_strdup(iothread->id);
    info->thread_id = iothread->tid;
    aio_context_get_poll_params(iothread->ctx, &info->poll_max_ns, &info->poll_grow,
                                &info->poll_shrink);
    info->aio_max_batch = aio_context_get_max_batch(iothread->ctx);
}

void iothread_info_clear(IOThreadInfo *info)
{
    g_free(info->id);
    info->id = NULL;
}

static void iothread_info_free(gpointer p)
{
    iothread_info_clear(p);
    g_free(p);
}

GList *iothread_query_all(void)
{
    GList *out = NULL;
    pthread_mutex_lock(&registry_lock);
    for (GList *l = registry; l; l = l->next) {
        IOThreadInfo *info = g_new0(IOThreadInfo, 1);
        iothread_query(l->data, info);
        out = g_list_prepend(out, info);
    }
    pthread_mutex_unlock(&registry_lock);
    return g_list_reverse(out);
}

void iothread_info_list_free(GList *list)
{
    g_list_free_full(list, iothread_info_free);
}

void iothread_destroy(IOThread *iothread)
{
    if (!iothread) {
        return;
    }
    pthread_mutex_lock(&registry_lock);
    registry = g_list_remove(registry, iothread);
    pthread_mutex_unlock(&registry_lock);

    aio_bh_schedule_oneshot(iothread->ctx, iothread_stop_bh, iothread);
    pthread_join(iothread->thread, NULL);
    iothread_free(iothread);
}
