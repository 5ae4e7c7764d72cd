/*
 * Unit tests of the public API (include/strata/strata.h, api/): opening raw
 * files and null-co images, synchronous requests from the main thread and
 * from embedder threads, asynchronous requests with the thread their
 * callback runs in, IOThread binding, coroutine forms, the main-loop fd,
 * and the errors (negative errno plus a message) of the failure cases.
 *
 * Only strata_* calls drive the library; the internal IOThread query is
 * used once, to learn an IOThread's kernel TID for the callback checks.
 *
 * Threading: cmocka asserts only in the main thread (it longjmps); other
 * threads record what they saw and the main thread checks it afterwards.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "aio/iothread.h"
#include "strata/strata.h"

#define IMAGE_SIZE (4 << 20)

static pthread_t main_thread;

typedef struct Fixture {
    char *dir;
    char *path;    /* a raw file of IMAGE_SIZE bytes */
    char *options; /* "driver=raw" */
} Fixture;

static int fixture_setup(void **state)
{
    Fixture *f = g_new0(Fixture, 1);
    f->dir = g_build_filename(g_get_tmp_dir(), "strata-api-XXXXXX", NULL);
    assert_non_null(g_mkdtemp(f->dir));
    f->path = g_build_filename(f->dir, "disk.raw", NULL);
    int fd = open(f->path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, IMAGE_SIZE), 0);
    close(fd);
    f->options = g_strdup("driver=raw");
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    Fixture *f = *state;
    g_unlink(f->path);
    g_rmdir(f->dir);
    g_free(f->path);
    g_free(f->dir);
    g_free(f->options);
    g_free(f);
    return 0;
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(seed * 31 + i * 7 + (i >> 9));
    }
}

static bool is_pattern(const uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != (uint8_t)(seed * 31 + i * 7 + (i >> 9))) {
            return false;
        }
    }
    return true;
}

static bool is_zero(const uint8_t *buf, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i]) {
            return false;
        }
    }
    return true;
}

static StrataImage *open_rw(Fixture *f, const char *extra)
{
    StrataError *err = NULL;
    g_autofree char *opts =
        g_strdup_printf("%s%s%s", f->options, extra ? "," : "", extra ? extra : "");
    StrataImage *img = strata_open(f->path, opts, STRATA_OPEN_RDWR, &err);
    if (!img) {
        fail_msg("open: %s", strata_error_message(err));
    }
    return img;
}

/* The kernel TID of IOThread @id. */
static int iothread_tid(const char *id)
{
    IOThreadInfo info;
    iothread_query(iothread_find(id), &info);
    int tid = info.thread_id;
    iothread_info_clear(&info);
    return tid;
}

/* ---- init and versions ---------------------------------------------------------------- */

static void test_version_is_the_header_version(void **state)
{
    char want[32];
    snprintf(want, sizeof(want), "%d.%d.%d", STRATA_VERSION_MAJOR, STRATA_VERSION_MINOR,
             STRATA_VERSION_MICRO);
    assert_string_equal(strata_version(), want);
}

static void *init_from_thread(void *opaque)
{
    StrataError **errp = opaque;
    return (void *)(intptr_t)strata_init(errp);
}

static void test_init_is_idempotent_in_the_main_thread_and_refused_elsewhere(void **state)
{
    StrataError *err = NULL;
    pthread_t th;
    void *ret;

    assert_int_equal(strata_init(NULL), 0);
    assert_int_equal(strata_init(&err), 0);
    assert_null(err);

    pthread_create(&th, NULL, init_from_thread, &err);
    pthread_join(th, &ret);
    assert_int_equal((intptr_t)ret, -EBUSY);
    assert_int_equal(strata_error_code(err), -EBUSY);
    assert_non_null(strstr(strata_error_message(err), "another thread"));
    strata_error_free(err);
}

/* ---- synchronous requests ------------------------------------------------------------- */

static void test_raw_file_sync_writes_read_back(void **state)
{
    Fixture *f = *state;
    StrataImage *img = open_rw(f, NULL);
    g_autofree uint8_t *buf = g_malloc(256 * 1024);
    g_autofree uint8_t *out = g_malloc(256 * 1024);

    assert_int_equal(strata_length(img), IMAGE_SIZE);

    /* Unaligned offset and length, one buffer. */
    fill(buf, 100000, 1);
    assert_int_equal(strata_pwrite(img, 12345, buf, 100000, 0), 0);
    assert_int_equal(strata_pread(img, 12345, out, 100000, 0), 0);
    assert_true(is_pattern(out, 100000, 1));

    /* Three scattered buffers out, two gathered back in. */
    fill(buf, 3 * 4096, 2);
    struct iovec wv[3] = {{buf, 4096}, {buf + 4096, 4096}, {buf + 8192, 4096}};
    assert_int_equal(strata_pwritev(img, 1 << 20, wv, 3, STRATA_REQ_FUA), 0);
    struct iovec rv[2] = {{out, 5000}, {out + 5000, 3 * 4096 - 5000}};
    assert_int_equal(strata_preadv(img, 1 << 20, rv, 2, 0), 0);
    assert_true(is_pattern(out, 3 * 4096, 2));

    assert_int_equal(strata_write_zeroes(img, (1 << 20) + 4096, 4096, 0), 0);
    assert_int_equal(strata_pread(img, 1 << 20, out, 3 * 4096, 0), 0);
    assert_true(is_pattern(out, 4096, 2));
    assert_true(is_zero(out + 4096, 4096));
    assert_int_equal(memcmp(out + 8192, buf + 8192, 4096), 0);

    assert_int_equal(strata_discard(img, 0, 4096), 0);
    assert_int_equal(strata_flush(img), 0);
    assert_int_equal(strata_close(img), 0);

    /* What was written is in the file. */
    int fd = open(f->path, O_RDONLY);
    assert_int_equal(pread(fd, out, 100000, 12345), 100000);
    close(fd);
    assert_true(is_pattern(out, 100000, 1));
}

static void test_null_co_is_opened_from_options_alone(void **state)
{
    StrataError *err = NULL;
    uint8_t buf[4096];

    StrataImage *img =
        strata_open(NULL, "driver=null-co,size=1M,read-zeroes=on", STRATA_OPEN_RDWR, &err);
    assert_non_null(img);
    assert_int_equal(strata_length(img), 1 << 20);
    memset(buf, 0xaa, sizeof(buf));
    assert_int_equal(strata_pwrite(img, 0, buf, sizeof(buf), 0), 0);
    assert_int_equal(strata_pread(img, 4096, buf, sizeof(buf), 0), 0);
    assert_true(is_zero(buf, sizeof(buf)));
    assert_int_equal(strata_close(img), 0);

    /* The same as a json: filename. */
    img = strata_open("json:{\"driver\": \"null-co\", \"size\": 65536}", NULL, 0, &err);
    assert_non_null(img);
    assert_int_equal(strata_length(img), 65536);
    assert_int_equal(strata_close(img), 0);

    /* @options add to a json: filename and win over it. */
    img = strata_open("json:{\"driver\": \"null-co\", \"size\": 65536}", "size=8192", 0, &err);
    assert_non_null(img);
    assert_int_equal(strata_length(img), 8192);
    assert_int_equal(strata_close(img), 0);

    assert_null(strata_open("json:{\"driver\": ", NULL, 0, &err));
    assert_int_equal(strata_error_code(err), -EINVAL);
    strata_error_free(err);
}

typedef struct ThreadJob {
    StrataImage *img;
    unsigned seed;
    uint64_t base;
    int write_err, read_err;
    bool data_ok;
} ThreadJob;

/* 64 writes of 16 KiB at @base, each read back and compared. */
static void *sync_worker(void *opaque)
{
    ThreadJob *j = opaque;
    uint8_t *buf = malloc(16384), *out = malloc(16384);
    j->data_ok = true;
    for (int i = 0; i < 64; i++) {
        fill(buf, 16384, j->seed + i);
        int w = strata_pwrite(j->img, j->base + (uint64_t)i * 16384, buf, 16384, 0);
        int r = strata_pread(j->img, j->base + (uint64_t)i * 16384, out, 16384, 0);
        j->write_err = j->write_err ? j->write_err : w;
        j->read_err = j->read_err ? j->read_err : r;
        j->data_ok &= is_pattern(out, 16384, j->seed + i);
    }
    free(buf);
    free(out);
    return NULL;
}

/* Two embedder threads at once; the main thread does not run the main loop meanwhile. */
static void run_two_threads(StrataImage *img, unsigned seed)
{
    ThreadJob jobs[2] = {{img, seed, 0}, {img, seed + 100, 2 << 20}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        pthread_create(&th[i], NULL, sync_worker, &jobs[i]);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(jobs[i].write_err, 0);
        assert_int_equal(jobs[i].read_err, 0);
        assert_true(jobs[i].data_ok);
    }
}

static void test_two_embedder_threads_do_sync_io_at_once(void **state)
{
    Fixture *f = *state;
    StrataImage *img = open_rw(f, NULL);
    run_two_threads(img, 10);
    assert_int_equal(strata_close(img), 0);
}

static void test_two_embedder_threads_do_sync_io_through_a_bound_iothread(void **state)
{
    Fixture *f = *state;
    StrataIOThread *io = strata_iothread_new("api-sync", NULL);
    assert_non_null(io);
    StrataImage *img = open_rw(f, "iothread=api-sync");
    run_two_threads(img, 20);

    /* The main thread may use the bound image too. */
    uint8_t buf[512];
    assert_int_equal(strata_pread(img, 2 << 20, buf, sizeof(buf), 0), 0);
    assert_true(is_pattern(buf, sizeof(buf), 120));

    assert_int_equal(strata_close(img), 0);
    assert_int_equal(strata_iothread_free(io), 0);
}

/* ---- asynchronous requests ------------------------------------------------------------ */

/* Counts completions; callbacks record their thread and result. */
typedef struct Completions {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int pending;
    int errors;
    int last_error;
    int wrong_thread;
    int expected_tid; /* 0: the main thread */
    _Atomic bool submitting;
    int ran_during_submit;
} Completions;

static void completions_init(Completions *c, int expected_tid)
{
    memset(c, 0, sizeof(*c));
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->cond, NULL);
    c->expected_tid = expected_tid;
}

static void completions_add(Completions *c, int n)
{
    pthread_mutex_lock(&c->lock);
    c->pending += n;
    pthread_mutex_unlock(&c->lock);
}

static void completion_cb(void *opaque, int ret)
{
    Completions *c = opaque;
    bool right =
        c->expected_tid ? gettid() == c->expected_tid : pthread_equal(pthread_self(), main_thread);
    pthread_mutex_lock(&c->lock);
    c->wrong_thread += !right;
    c->ran_during_submit += atomic_load(&c->submitting);
    if (ret < 0) {
        c->errors++;
        c->last_error = ret;
    }
    c->pending--;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->lock);
}

static int completions_pending(Completions *c)
{
    pthread_mutex_lock(&c->lock);
    int n = c->pending;
    pthread_mutex_unlock(&c->lock);
    return n;
}

/* Waits for every callback: main-thread ones by running the main loop. */
static void completions_wait(Completions *c)
{
    if (!c->expected_tid) {
        while (completions_pending(c) > 0) {
            assert_true(strata_main_loop_poll(true) >= 0);
        }
        return;
    }
    pthread_mutex_lock(&c->lock);
    while (c->pending > 0) {
        pthread_cond_wait(&c->cond, &c->lock);
    }
    pthread_mutex_unlock(&c->lock);
}

#define NREQ  16
#define CHUNK 65536

/* Writes NREQ chunks then reads them back, asynchronously; checks data and threads. */
static void async_round_trip(StrataImage *img, Completions *c, unsigned seed)
{
    g_autofree uint8_t *buf = g_malloc(NREQ * CHUNK);
    g_autofree uint8_t *out = g_malloc0(NREQ * CHUNK);

    for (int i = 0; i < NREQ; i++) {
        fill(buf + i * CHUNK, CHUNK, seed + i);
    }
    completions_add(c, NREQ);
    atomic_store(&c->submitting, true);
    for (int i = 0; i < NREQ; i++) {
        struct iovec v = {buf + i * CHUNK, CHUNK};
        assert_int_equal(strata_aio_pwritev(img, (uint64_t)i * CHUNK, &v, 1, 0, completion_cb, c),
                         0);
    }
    atomic_store(&c->submitting, false);
    completions_wait(c);

    completions_add(c, NREQ + 1);
    for (int i = 0; i < NREQ; i++) {
        /* Two halves, the array on the stack: it is copied at submission. */
        struct iovec v[2] = {{out + i * CHUNK, 1000}, {out + i * CHUNK + 1000, CHUNK - 1000}};
        assert_int_equal(strata_aio_preadv(img, (uint64_t)i * CHUNK, v, 2, 0, completion_cb, c), 0);
    }
    assert_int_equal(strata_aio_flush(img, completion_cb, c), 0);
    completions_wait(c);

    assert_int_equal(c->errors, 0);
    assert_int_equal(c->wrong_thread, 0);
    for (int i = 0; i < NREQ; i++) {
        assert_true(is_pattern(out + i * CHUNK, CHUNK, seed + i));
    }
}

static void test_async_callbacks_of_an_unbound_image_run_in_the_main_thread(void **state)
{
    Fixture *f = *state;
    Completions c;
    completions_init(&c, 0);
    StrataImage *img = open_rw(f, NULL);
    async_round_trip(img, &c, 30);
    assert_int_equal(c.ran_during_submit, 0);
    assert_int_equal(strata_close(img), 0);
}

static void test_async_callbacks_of_a_bound_image_run_in_its_iothread(void **state)
{
    Fixture *f = *state;
    StrataIOThread *io = strata_iothread_new("api-async", NULL);
    Completions c;
    completions_init(&c, iothread_tid("api-async"));
    StrataImage *img = open_rw(f, NULL);
    assert_int_equal(strata_image_set_iothread(img, io, NULL), 0);
    async_round_trip(img, &c, 40);

    /* Rebound to the main loop: callbacks come back to the main thread. */
    assert_int_equal(strata_image_set_iothread(img, NULL, NULL), 0);
    completions_init(&c, 0);
    async_round_trip(img, &c, 50);

    assert_int_equal(strata_close(img), 0);
    assert_int_equal(strata_iothread_free(io), 0);
}

typedef struct SubmitJob {
    StrataImage *img;
    Completions *c;
    uint8_t *buf;
    int ret;
} SubmitJob;

static void *submit_from_thread(void *opaque)
{
    SubmitJob *j = opaque;
    struct iovec v = {j->buf, CHUNK};
    j->ret = strata_aio_pwritev(j->img, 3 << 20, &v, 1, 0, completion_cb, j->c);
    return NULL;
}

static void test_async_submitted_from_another_thread_completes_in_the_home_thread(void **state)
{
    Fixture *f = *state;
    g_autofree uint8_t *buf = g_malloc(CHUNK);
    g_autofree uint8_t *out = g_malloc(CHUNK);
    Completions c;
    pthread_t th;

    fill(buf, CHUNK, 60);
    completions_init(&c, 0);
    StrataImage *img = open_rw(f, NULL);
    SubmitJob j = {img, &c, buf, -1};
    completions_add(&c, 1);
    pthread_create(&th, NULL, submit_from_thread, &j);
    pthread_join(th, NULL);
    assert_int_equal(j.ret, 0);
    completions_wait(&c);
    assert_int_equal(c.wrong_thread, 0);
    assert_int_equal(c.errors, 0);
    assert_int_equal(strata_pread(img, 3 << 20, out, CHUNK, 0), 0);
    assert_true(is_pattern(out, CHUNK, 60));
    assert_int_equal(strata_close(img), 0);
}

static void test_close_waits_for_every_async_callback(void **state)
{
    Fixture *f = *state;
    StrataIOThread *io = strata_iothread_new("api-close", NULL);
    g_autofree uint8_t *buf = g_malloc0(64 * 4096);
    Completions c;

    completions_init(&c, iothread_tid("api-close"));
    StrataImage *img = open_rw(f, "iothread=api-close");
    completions_add(&c, 64);
    for (int i = 0; i < 64; i++) {
        struct iovec v = {buf + i * 4096, 4096};
        assert_int_equal(strata_aio_preadv(img, (uint64_t)i * CHUNK, &v, 1, 0, completion_cb, &c),
                         0);
    }
    assert_int_equal(strata_close(img), 0);
    assert_int_equal(completions_pending(&c), 0);
    assert_int_equal(c.errors, 0);
    assert_int_equal(strata_iothread_free(io), 0);
}

/* ---- coroutines ------------------------------------------------------------------------ */

typedef struct CoJob {
    StrataImage *img;
    int tid;
    bool in_co;
    int wret, rret, sync_ret, fret;
    bool data_ok;
    Completions *c;
} CoJob;

static void co_job(void *opaque)
{
    CoJob *j = opaque;
    uint8_t buf[8192], out[8192];

    j->tid = gettid();
    j->in_co = strata_in_coroutine();
    fill(buf, sizeof(buf), 70);
    struct iovec wv = {buf, sizeof(buf)};
    struct iovec rv = {out, sizeof(out)};
    j->wret = strata_co_pwritev(j->img, 5000, &wv, 1, 0);
    j->rret = strata_co_preadv(j->img, 5000, &rv, 1, 0);
    j->data_ok = is_pattern(out, sizeof(out), 70);
    /* The synchronous form inside a coroutine yields like the co form. */
    j->sync_ret = strata_pread(j->img, 5000, out, 100, 0);
    j->fret = strata_co_flush(j->img);
    completion_cb(j->c, 0);
}

static void test_coroutine_forms_run_in_a_spawned_coroutine(void **state)
{
    Fixture *f = *state;
    StrataIOThread *io = strata_iothread_new("api-co", NULL);
    StrataImage *img = open_rw(f, NULL);
    Completions c;

    /* In an IOThread. */
    completions_init(&c, iothread_tid("api-co"));
    CoJob j = {.img = img, .c = &c};
    completions_add(&c, 1);
    assert_int_equal(strata_coroutine_spawn(io, co_job, &j), 0);
    completions_wait(&c);
    assert_int_equal(j.tid, iothread_tid("api-co"));
    assert_true(j.in_co);
    assert_int_equal(j.wret, 0);
    assert_int_equal(j.rret, 0);
    assert_int_equal(j.sync_ret, 0);
    assert_int_equal(j.fret, 0);
    assert_true(j.data_ok);

    /* In the main loop. */
    completions_init(&c, 0);
    j = (CoJob){.img = img, .c = &c};
    completions_add(&c, 1);
    assert_int_equal(strata_coroutine_spawn(NULL, co_job, &j), 0);
    completions_wait(&c);
    assert_int_equal(j.tid, gettid());
    assert_int_equal(j.wret, 0);
    assert_int_equal(j.rret, 0);
    assert_true(j.data_ok);

    /* Outside a coroutine the co forms refuse. */
    assert_false(strata_in_coroutine());
    assert_int_equal(strata_co_flush(img), -EPERM);

    assert_int_equal(strata_close(img), 0);
    assert_int_equal(strata_iothread_free(io), 0);
}

/* ---- errors ------------------------------------------------------------------------------ */

static void test_opening_a_missing_file_fails_with_enoent_and_a_message(void **state)
{
    Fixture *f = *state;
    StrataError *err = NULL;
    g_autofree char *missing = g_build_filename(f->dir, "missing.raw", NULL);

    assert_null(strata_open(missing, NULL, 0, &err));
    assert_int_equal(strata_error_code(err), -ENOENT);
    assert_non_null(strstr(strata_error_message(err), missing));
    strata_error_free(err);
    err = NULL;

    /* Without an error pointer it fails all the same. */
    assert_null(strata_open(missing, NULL, 0, NULL));

    assert_null(strata_open(f->path, "driver=raw,no-such-option=1", 0, &err));
    assert_int_equal(strata_error_code(err), -EINVAL);
    assert_non_null(strstr(strata_error_message(err), "no-such-option"));
    strata_error_free(err);
    err = NULL;

    assert_null(strata_open(f->path, "driver=raw,iothread=nope", 0, &err));
    assert_int_equal(strata_error_code(err), -ENOENT);
    assert_non_null(strstr(strata_error_message(err), "nope"));
    strata_error_free(err);
    err = NULL;

    assert_null(strata_open(f->path, NULL, 1u << 30, &err));
    assert_int_equal(strata_error_code(err), -EINVAL);
    strata_error_free(err);
    err = NULL;

    /* A second writer of the same file is refused by the image lock; a sharing reader is not. */
    StrataImage *img = open_rw(f, NULL);
    assert_null(strata_open(f->path, f->options, STRATA_OPEN_RDWR, &err));
    assert_int_equal(strata_error_code(err), -EAGAIN);
    strata_error_free(err);
    StrataImage *reader = strata_open(f->path, f->options, STRATA_OPEN_FORCE_SHARE, NULL);
    assert_non_null(reader);
    assert_int_equal(strata_close(reader), 0);
    assert_int_equal(strata_close(img), 0);
}

static bool cb_called;

static void must_not_run(void *opaque, int ret)
{
    cb_called = true;
}

static void test_bad_requests_fail_with_einval_eio_or_eperm(void **state)
{
    Fixture *f = *state;
    StrataImage *img = open_rw(f, NULL);
    uint8_t buf[4096];
    struct iovec v = {buf, sizeof(buf)};

    /* Past the end: -EIO; malformed: -EINVAL. */
    assert_int_equal(strata_pread(img, IMAGE_SIZE - 100, buf, 4096, 0), -EIO);
    assert_int_equal(strata_pread(img, IMAGE_SIZE + 4096, buf, 4096, 0), -EIO);
    assert_int_equal(strata_pwrite(img, IMAGE_SIZE, buf, 1, 0), -EIO);
    assert_int_equal(strata_pread(img, UINT64_MAX - 10, buf, 4096, 0), -EINVAL);
    assert_int_equal(strata_pread(img, INT64_MAX - 10, buf, 4096, 0), -EINVAL);
    assert_int_equal(strata_pread(img, 0, buf, 4096, STRATA_REQ_FUA), -EINVAL);
    assert_int_equal(strata_pwrite(img, 0, buf, 4096, STRATA_REQ_MAY_UNMAP), -EINVAL);
    assert_int_equal(strata_preadv(img, 0, &v, -1, 0), -EINVAL);
    assert_int_equal(strata_pread(img, 0, buf, (size_t)3 << 30, 0), -EINVAL);

    /* Asynchronous: immediate errors are returned and the callback never runs. */
    cb_called = false;
    assert_int_equal(strata_aio_preadv(img, 0, &v, 1, 0x80, must_not_run, NULL), -EINVAL);
    assert_int_equal(strata_aio_preadv(img, 0, &v, 100000, 0, must_not_run, NULL), -EINVAL);
    assert_int_equal(strata_aio_preadv(img, 0, &v, 1, 0, NULL, NULL), -EINVAL);
    while (strata_main_loop_poll(false) > 0) {
    }
    assert_false(cb_called);

    /* Range errors of asynchronous requests come through the callback. */
    Completions c;
    completions_init(&c, 0);
    completions_add(&c, 1);
    assert_int_equal(strata_aio_preadv(img, IMAGE_SIZE, &v, 1, 0, completion_cb, &c), 0);
    completions_wait(&c);
    assert_int_equal(c.last_error, -EIO);
    assert_int_equal(strata_close(img), 0);

    /* Writes to a read-only image. */
    img = strata_open(f->path, f->options, 0, NULL);
    assert_non_null(img);
    assert_int_equal(strata_pwrite(img, 0, buf, 512, 0), -EPERM);
    assert_int_equal(strata_pread(img, 0, buf, 512, 0), 0);
    assert_int_equal(strata_close(img), 0);
}

typedef struct ForeignCall {
    StrataImage *img;
    StrataError *err;
    int open_code, close_ret, iothread_code, poll_ret, fd_ret;
} ForeignCall;

static void *control_from_thread(void *opaque)
{
    ForeignCall *fc = opaque;
    StrataError *err = NULL;
    StrataImage *img = strata_open(NULL, "driver=null-co", 0, &fc->err);
    fc->open_code = img ? 0 : strata_error_code(fc->err);
    fc->close_ret = strata_close(fc->img);
    fc->iothread_code = strata_iothread_new("x", &err) ? 0 : strata_error_code(err);
    strata_error_free(err);
    fc->poll_ret = strata_main_loop_poll(false);
    fc->fd_ret = strata_main_loop_fd();
    return NULL;
}

static void test_control_calls_from_other_threads_fail_with_eperm(void **state)
{
    Fixture *f = *state;
    ForeignCall fc = {.img = open_rw(f, NULL)};
    pthread_t th;

    pthread_create(&th, NULL, control_from_thread, &fc);
    pthread_join(th, NULL);
    assert_int_equal(fc.open_code, -EPERM);
    assert_non_null(strstr(strata_error_message(fc.err), "strata_open"));
    strata_error_free(fc.err);
    assert_int_equal(fc.close_ret, -EPERM);
    assert_int_equal(fc.iothread_code, -EPERM);
    assert_int_equal(fc.poll_ret, -EPERM);
    assert_int_equal(fc.fd_ret, -EPERM);

    /* The image is still open and usable. */
    assert_int_equal(strata_length(fc.img), IMAGE_SIZE);
    assert_int_equal(strata_close(fc.img), 0);
}

static void test_iothreads_in_use_are_not_freed(void **state)
{
    Fixture *f = *state;
    StrataError *err = NULL;
    StrataIOThread *io = strata_iothread_new("api-busy", NULL);

    assert_null(strata_iothread_new("api-busy", &err));
    assert_int_equal(strata_error_code(err), -EEXIST);
    strata_error_free(err);
    err = NULL;
    assert_null(strata_iothread_new("", &err));
    assert_int_equal(strata_error_code(err), -EINVAL);
    strata_error_free(err);

    StrataImage *img = open_rw(f, "iothread=api-busy");
    assert_int_equal(strata_iothread_free(io), -EBUSY);
    assert_int_equal(strata_length(img), IMAGE_SIZE);
    assert_int_equal(strata_close(img), 0);
    assert_int_equal(strata_iothread_free(io), 0);
    assert_int_equal(strata_iothread_free(NULL), 0);
}

/* ---- the main-loop fd (last: the mode stays on for the process) ------------------------- */

/* Waits for the fd with poll(), then runs the loop, until @c has no pending callback. */
static int drive_with_fd(int fd, Completions *c, int timeout_ms)
{
    int wakeups = 0;
    while (completions_pending(c) > 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int n = poll(&p, 1, timeout_ms);
        if (n <= 0) {
            return -1; /* the fd missed a wake-up */
        }
        wakeups++;
        assert_true(strata_main_loop_poll(false) >= 0);
    }
    return wakeups;
}

static void test_main_loop_fd_wakes_for_completions_and_timers(void **state)
{
    Fixture *f = *state;
    int fd = strata_main_loop_fd();
    g_autofree uint8_t *buf = g_malloc(CHUNK);
    struct iovec v = {buf, CHUNK};
    Completions c;
    pthread_t th;

    assert_true(fd >= 0);
    assert_int_equal(strata_main_loop_fd(), fd);

    /* File I/O completes in the thread pool, which wakes the main loop from another thread. */
    completions_init(&c, 0);
    StrataImage *img = open_rw(f, NULL);
    completions_add(&c, 1);
    assert_int_equal(strata_aio_preadv(img, 0, &v, 1, 0, completion_cb, &c), 0);
    assert_true(drive_with_fd(fd, &c, 5000) > 0);

    /* A request submitted from another thread. */
    SubmitJob j = {img, &c, buf, -1};
    completions_add(&c, 1);
    pthread_create(&th, NULL, submit_from_thread, &j);
    pthread_join(th, NULL);
    assert_int_equal(j.ret, 0);
    assert_true(drive_with_fd(fd, &c, 5000) > 0);
    assert_int_equal(strata_close(img), 0);

    /* null-co's latency is a timer of the main loop: the fd must fire for it. */
    img = strata_open(NULL, "driver=null-co,latency-ns=20000000", 0, NULL);
    assert_non_null(img);
    completions_add(&c, 1);
    assert_int_equal(strata_aio_preadv(img, 0, &v, 1, 0, completion_cb, &c), 0);
    assert_true(drive_with_fd(fd, &c, 5000) > 0);

    /* A synchronous call in between leaves the fd armed as well. */
    assert_int_equal(strata_pread(img, 0, buf, 512, 0), 0);
    completions_add(&c, 1);
    assert_int_equal(strata_aio_flush(img, completion_cb, &c), 0);
    assert_true(drive_with_fd(fd, &c, 5000) > 0);
    assert_int_equal(c.errors, 0);
    assert_int_equal(c.wrong_thread, 0);
    assert_int_equal(strata_close(img), 0);

    /* Idle: not readable. */
    while (strata_main_loop_poll(false) > 0) {
    }
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 50), 0);
}

int main(void)
{
    main_thread = pthread_self();
    assert_int_equal(strata_init(NULL), 0);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version_is_the_header_version),
        cmocka_unit_test(test_init_is_idempotent_in_the_main_thread_and_refused_elsewhere),
        cmocka_unit_test_setup_teardown(test_raw_file_sync_writes_read_back, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test(test_null_co_is_opened_from_options_alone),
        cmocka_unit_test_setup_teardown(test_two_embedder_threads_do_sync_io_at_once, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_two_embedder_threads_do_sync_io_through_a_bound_iothread, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_async_callbacks_of_an_unbound_image_run_in_the_main_thread, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(test_async_callbacks_of_a_bound_image_run_in_its_iothread,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_async_submitted_from_another_thread_completes_in_the_home_thread, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(test_close_waits_for_every_async_callback, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_coroutine_forms_run_in_a_spawned_coroutine,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_opening_a_missing_file_fails_with_enoent_and_a_message,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests_fail_with_einval_eio_or_eperm,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_control_calls_from_other_threads_fail_with_eperm,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_iothreads_in_use_are_not_freed, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_main_loop_fd_wakes_for_completions_and_timers,
                                        fixture_setup, fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
