/*
 * Helpers shared by the block job tests (test-commit.c, test-stream.c,
 * test-mirror.c): backing chains made by qemu-img and qemu-io with a model
 * of what the top shows, an event recorder, and IOThreads that keep
 * writing a BlockBackend (each to its own stripes, so the model stays
 * exact) while a job runs.  Header-only: every function is static.
 */
#ifndef STRATA_TEST_JOB_UTIL_H
#define STRATA_TEST_JOB_UTIL_H

#include "tests/unit/test-qcow2-util.h"

#include <pthread.h>

#include "block/dirty-bitmap.h"
#include "jobs/block-jobs.h"

/* ---- chains ---------------------------------------------------------------------------------- */

#define CHAIN_MAX 5

/* layer[0] is the base; layer[n - 1] the top.  model: what the top reads. */
typedef struct Chain {
    char *path[CHAIN_MAX];
    int n;
    uint64_t size;
    uint8_t *model;
    uint8_t *layer_model[CHAIN_MAX]; /* what each layer reads (with its own backing) */
} Chain;

/*
 * Builds an @n-layer chain named c0.qcow2 (base) .. c<n-1>.qcow2 with
 * relative backing names, each layer holding some data, some zeroes over
 * data below and some partial clusters, chosen from @seed.
 */
static G_GNUC_UNUSED void chain_make(Fixture *f, Chain *c, int n, uint64_t size, unsigned seed)
{
    GRand *rand = g_rand_new_with_seed(seed);
    *c = (Chain){.n = n, .size = size, .model = g_malloc0(size)};
    for (int i = 0; i < n; i++) {
        g_autofree char *name = g_strdup_printf("c%d.qcow2", i);
        c->path[i] = path_in(f, name);
        if (i == 0) {
            assert_int_equal(
                run(NULL, "qemu-img create -q -f qcow2 -o cluster_size=64k '%s' %" G_GUINT64_FORMAT,
                    c->path[i], size),
                0);
        } else {
            assert_int_equal(run(NULL,
                                 "cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=64k "
                                 "-b c%d.qcow2 -F qcow2 '%s'",
                                 f->dir, i - 1, c->path[i]),
                             0);
        }
        QemuWrite w[12];
        char cmds[12][96];
        int nw = 0;
        for (int k = 0; k < 10; k++) {
            uint64_t len = g_rand_int_range(rand, 1, 6) * 37000;
            uint64_t off = g_rand_int_range(rand, 0, (gint32)((size - len) / 512)) * 512;
            int pat = 0x10 * (i + 1) + k;
            bool zero = k == 9 && i > 0;
            if (zero) {
                g_snprintf(cmds[nw], sizeof(cmds[nw]),
                           "write -z %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT, off, len);
            } else {
                g_snprintf(cmds[nw], sizeof(cmds[nw]),
                           "write -P 0x%x %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT, pat, off, len);
            }
            w[nw] = (QemuWrite){cmds[nw], off, len, zero ? -1 : pat};
            nw++;
        }
        qemu_io_apply(c->path[i], "qcow2", w, nw, c->model);
        c->layer_model[i] = g_memdup2(c->model, size);
    }
    g_rand_free(rand);
}

static G_GNUC_UNUSED void chain_free(Chain *c)
{
    for (int i = 0; i < c->n; i++) {
        g_free(c->path[i]);
        g_free(c->layer_model[i]);
    }
    g_free(c->model);
}

/* The image must read as @model (qemu-img compare against a raw copy) and check clean. */
static G_GNUC_UNUSED void assert_image_is(Fixture *f, const char *img, const uint8_t *model,
                                          uint64_t size)
{
    g_autofree char *raw = path_in(f, "expect.raw");
    assert_image_matches_model(img, raw, model, size);
    unlink(raw);
}

/* "backing file: NAME" as qemu-img info prints it, or "" when there is none (caller frees). */
static G_GNUC_UNUSED char *qemu_backing_of(const char *img)
{
    g_autofree char *out = NULL;
    assert_int_equal(run(&out, "qemu-img info -U '%s'", img), 0);
    const char *p = strstr(out, "backing file: ");
    if (!p) {
        return g_strdup("");
    }
    p += strlen("backing file: ");
    return g_strndup(p, strcspn(p, " \n"));
}

/* ---- events ---------------------------------------------------------------------------------- */

typedef struct Events {
    int ready, pending, completed, errors;
    GString *statuses; /* "running paused running ..." */
    int ret;           /* at completion */
} Events;

static G_GNUC_UNUSED void events_cb(Job *job, JobEvent ev, void *opaque)
{
    Events *e = opaque;
    switch (ev) {
    case JOB_EVENT_STATUS_CHANGE:
        if (!e->statuses) {
            e->statuses = g_string_new(NULL);
        }
        g_string_append_printf(e->statuses, "%s%s", e->statuses->len ? " " : "",
                               job_status_name(job->status));
        break;
    case JOB_EVENT_READY:
        e->ready++;
        break;
    case JOB_EVENT_PENDING:
        e->pending++;
        break;
    case JOB_EVENT_ERROR:
        e->errors++;
        break;
    case JOB_EVENT_COMPLETED:
        e->completed++;
        e->ret = job_ret(job);
        break;
    }
}

static G_GNUC_UNUSED void events_clear(Events *e)
{
    if (e->statuses) {
        g_string_free(e->statuses, true);
    }
    *e = (Events){0};
}

/* ---- IOThreads writing while a job runs ------------------------------------------------------ */

/*
 * Writer w of nwriters owns the 64 KiB stripes s with s % nwriters == w,
 * so writers never overlap and the model is exact whatever the order.
 */
typedef struct Writer {
    IOThread *iothread;
    BlockBackend *blk;
    uint8_t *model;
    pthread_mutex_t *model_lock;
    uint64_t size;
    int index, nwriters;
    unsigned seed;
    _Atomic bool stop;
    _Atomic bool done;
    _Atomic int writes;
    int ret;
} Writer;

#define WRITER_STRIPE (64 * 1024)

static void coroutine_fn writer_co(void *opaque)
{
    Writer *w = opaque;
    GRand *rand = g_rand_new_with_seed(w->seed);
    uint64_t stripes = w->size / WRITER_STRIPE;
    uint8_t *buf = g_malloc(WRITER_STRIPE);
    while (!atomic_load(&w->stop)) {
        uint64_t s =
            g_rand_int_range(rand, 0, (gint32)(stripes / w->nwriters)) * w->nwriters + w->index;
        uint64_t len = g_rand_int_range(rand, 1, WRITER_STRIPE / 512 + 1) * 512;
        uint64_t off = s * WRITER_STRIPE +
                       g_rand_int_range(rand, 0, (gint32)(WRITER_STRIPE - len) / 512 + 1) * 512;
        memset(buf, (int)g_rand_int_range(rand, 1, 256), len);
        int ret = blk_co_pwrite(w->blk, off, len, buf, 0);
        if (ret < 0) {
            w->ret = ret;
            break;
        }
        pthread_mutex_lock(w->model_lock);
        memcpy(w->model + off, buf, len);
        pthread_mutex_unlock(w->model_lock);
        atomic_fetch_add(&w->writes, 1);
        aio_wait_kick(); /* writers_wait_progress polls the main loop */
        if (atomic_load(&w->writes) % 8 == 0) {
            co_sleep_ns(200 * 1000); /* leave the job some room */
        }
    }
    g_free(buf);
    g_rand_free(rand);
    atomic_store(&w->done, true);
    aio_wait_kick();
}

static void writer_start_bh(void *opaque)
{
    Writer *w = opaque;
    co_enter(co_create(writer_co, w));
}

/* Starts @n writers, each in its own IOThread, on @blk, recording into @model. */
static G_GNUC_UNUSED Writer *writers_start(int n, BlockBackend *blk, uint8_t *model,
                                           pthread_mutex_t *lock, uint64_t size, unsigned seed)
{
    Writer *ws = g_new0(Writer, n);
    for (int i = 0; i < n; i++) {
        g_autofree char *id = g_strdup_printf("writer%d", i);
        ws[i] = (Writer){.blk = blk,
                         .model = model,
                         .model_lock = lock,
                         .size = size,
                         .index = i,
                         .nwriters = n,
                         .seed = seed + i};
        ws[i].iothread = iothread_create(id, NULL, NULL);
        assert_non_null(ws[i].iothread);
        aio_bh_schedule_oneshot(iothread_get_aio_context(ws[i].iothread), writer_start_bh, &ws[i]);
    }
    return ws;
}

/* Runs the main loop until every writer made at least @min writes. */
static G_GNUC_UNUSED void writers_wait_progress(Writer *ws, int n, int min)
{
    for (int i = 0; i < n; i++) {
        AIO_WAIT_WHILE(atomic_load(&ws[i].writes) < min && !atomic_load(&ws[i].done));
    }
}

static G_GNUC_UNUSED void writers_stop(Writer *ws, int n)
{
    for (int i = 0; i < n; i++) {
        atomic_store(&ws[i].stop, true);
    }
    for (int i = 0; i < n; i++) {
        AIO_WAIT_WHILE(!atomic_load(&ws[i].done));
        iothread_destroy(ws[i].iothread);
        assert_int_equal(ws[i].ret, 0);
    }
    g_free(ws);
}

/* ---- misc ------------------------------------------------------------------------------------ */

/* The node under @blk, filters skipped. */
static G_GNUC_UNUSED BlockDriverState *blk_data_bs(BlockBackend *blk)
{
    return bdrv_skip_filters(blk_bs(blk));
}

/* The node @depth backing links below @bs (0: @bs). */
static G_GNUC_UNUSED BlockDriverState *chain_node(BlockDriverState *bs, int depth)
{
    bs = bdrv_skip_filters(bs);
    for (int i = 0; i < depth && bs; i++) {
        bs = bdrv_skip_filters(bdrv_cow_bs(bs));
    }
    return bs;
}

#endif /* STRATA_TEST_JOB_UTIL_H */
