/*
 * Tests of the `file` driver's I/O engines: the thread pool, Linux AIO and
 * io_uring.  Every test runs once per engine against a scratch file in the
 * temporary directory; assertions run outside coroutines (a failing cmocka
 * assertion must not unwind a coroutine stack), so coroutines only record
 * what they saw.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aio/aio-engine-slots.h"
#include "aio/aio.h"
#include "aio/iothread.h"
#include "drivers/raw/file-threads.h"
#include "drivers/raw/io-uring.h"
#include "drivers/raw/linux-aio.h"

typedef int coroutine_fn EngineSubmit(int fd, uint64_t offset, struct iovec *iov, int niov,
                                      RawAioType type);

typedef struct Engine {
    const char *name;
    EngineSubmit *submit;
    int slot; /* AioEngineSlot, or -1 for the thread pool */
    bool (*get_stats)(AioContext *ctx, RawAioStats *stats);
} Engine;

static const Engine engines[] = {
    {"threads", raw_thread_co_submit, -1, NULL},
    {"native", laio_co_submit, AIO_ENGINE_SLOT_LINUX_AIO, laio_get_stats},
    {"io_uring", luring_co_submit, AIO_ENGINE_SLOT_IO_URING, luring_get_stats},
};

/* One scratch file per test. */
typedef struct Fixture {
    const Engine *engine;
    char *path;
    int fd;
} Fixture;

static int fixture_setup(void **state)
{
    Fixture *f = g_new0(Fixture, 1);
    f->engine = *state;
    f->fd = g_file_open_tmp("strata-engines-XXXXXX", &f->path, NULL);
    assert_true(f->fd >= 0);
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    Fixture *f = *state;
    /* Each test starts with fresh engines in the main context. */
    aio_context_free_engines(aio_main_context());
    close(f->fd);
    g_unlink(f->path);
    g_free(f->path);
    *state = (void *)f->engine;
    g_free(f);
    return 0;
}

static uint8_t pattern_byte(uint64_t pos, int seed)
{
    return (uint8_t)((pos * 31 + seed * 7 + (pos >> 12)) & 0xff);
}

static void fill_pattern(uint8_t *buf, size_t len, uint64_t pos, int seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = pattern_byte(pos + i, seed);
    }
}

/* ---- running one request, or a crowd of them, in coroutines ---------- */

typedef struct IoCall {
    const Engine *engine;
    int fd;
    uint64_t offset;
    struct iovec *iov;
    int niov;
    RawAioType type;
    int ret;
    bool done;
} IoCall;

static void coroutine_fn io_call_co(void *opaque)
{
    IoCall *c = opaque;
    c->ret = c->engine->submit(c->fd, c->offset, c->iov, c->niov, c->type);
    c->done = true;
}

/* Issues one request from a coroutine in the main context and waits for it. */
static int do_io(const Engine *e, int fd, uint64_t offset, struct iovec *iov, int niov,
                 RawAioType type)
{
    IoCall c = {e, fd, offset, iov, niov, type, 0, false};
    co_enter(co_create(io_call_co, &c));
    while (!c.done) {
        aio_poll(aio_main_context(), true);
    }
    return c.ret;
}

static int do_rw1(const Engine *e, int fd, uint64_t offset, void *buf, size_t len, RawAioType type)
{
    struct iovec iov = {buf, len};
    return do_io(e, fd, offset, &iov, 1, type);
}

/*
 * A worker writes its own 4 KiB block, reads it back and compares: the
 * unit of the concurrency tests.
 */
typedef struct BlockWorker {
    const Engine *engine;
    int fd;
    uint64_t offset;
    int seed;
    int write_ret, read_ret;
    bool data_ok;
    void *engine_seen; /* the engine instance of the context it ran in */
    atomic_int *done;
} BlockWorker;

#define BLOCK 4096

static void coroutine_fn block_worker_co(void *opaque)
{
    BlockWorker *w = opaque;
    uint8_t *out = g_malloc(BLOCK), *in = g_malloc0(BLOCK);

    fill_pattern(out, BLOCK, w->offset, w->seed);
    struct iovec wiov = {out, BLOCK}, riov = {in, BLOCK};
    w->write_ret = w->engine->submit(w->fd, w->offset, &wiov, 1, RAW_AIO_WRITE);
    w->read_ret = w->engine->submit(w->fd, w->offset, &riov, 1, RAW_AIO_READ);
    w->data_ok = memcmp(out, in, BLOCK) == 0;
    if (w->engine->slot >= 0) {
        w->engine_seen = aio_context_get_engine(aio_get_current(), w->engine->slot);
    }
    g_free(out);
    g_free(in);
    atomic_fetch_add(w->done, 1);
    aio_wait_kick();
}

static void assert_worker_ok(const BlockWorker *w)
{
    assert_int_equal(w->write_ret, BLOCK);
    assert_int_equal(w->read_ret, BLOCK);
    assert_true(w->data_ok);
}

/* Enters @n workers one after another in the current context, all in one loop iteration. */
static void start_workers(BlockWorker *w, int n)
{
    for (int i = 0; i < n; i++) {
        co_enter(co_create(block_worker_co, &w[i]));
    }
}

/* ---- the tests --------------------------------------------------------- */

static void test_multi_iovec_writes_read_back_at_several_offsets(void **state)
{
    Fixture *f = *state;
    const uint64_t offsets[] = {0, 4096, (1 << 20) + 512, 7 << 20};
    const size_t wlen[] = {512, 4096, 1536}; /* 6144 bytes in three pieces */
    uint8_t wbuf[3][4096], rbuf[6144], expect[6144];

    for (size_t k = 0; k < G_N_ELEMENTS(offsets); k++) {
        uint64_t pos = offsets[k];
        struct iovec wiov[3];
        for (int i = 0, done = 0; i < 3; done += wlen[i], i++) {
            fill_pattern(wbuf[i], wlen[i], pos + done, (int)k);
            wiov[i] = (struct iovec){wbuf[i], wlen[i]};
        }
        fill_pattern(expect, sizeof(expect), pos, (int)k);
        assert_int_equal(do_io(f->engine, f->fd, pos, wiov, 3, RAW_AIO_WRITE), 6144);

        /* Read back split differently from how it was written. */
        memset(rbuf, 0, sizeof(rbuf));
        struct iovec riov[2] = {{rbuf, 1000}, {rbuf + 1000, 5144}};
        assert_int_equal(do_io(f->engine, f->fd, pos, riov, 2, RAW_AIO_READ), 6144);
        assert_memory_equal(rbuf, expect, sizeof(rbuf));

        /* And the file really holds it. */
        memset(rbuf, 0, sizeof(rbuf));
        assert_int_equal(pread(f->fd, rbuf, sizeof(rbuf), pos), 6144);
        assert_memory_equal(rbuf, expect, sizeof(rbuf));
    }
}

#define CROWD 256

static void test_256_concurrent_requests_complete_in_one_context(void **state)
{
    Fixture *f = *state;
    BlockWorker *w = g_new0(BlockWorker, CROWD);
    atomic_int done = 0;

    for (int i = 0; i < CROWD; i++) {
        w[i] = (BlockWorker){.engine = f->engine,
                             .fd = f->fd,
                             .offset = (uint64_t)i * BLOCK,
                             .seed = i,
                             .done = &done};
    }
    start_workers(w, CROWD);
    while (atomic_load(&done) < CROWD) {
        aio_poll(aio_main_context(), true);
    }
    for (int i = 0; i < CROWD; i++) {
        assert_worker_ok(&w[i]);
    }

    RawAioStats st;
    if (f->engine->get_stats) {
        assert_true(f->engine->get_stats(aio_main_context(), &st));
        assert_int_equal(st.requests, 2 * CROWD);
        /* Batched: far fewer kernel entries than requests, and a deep queue. */
        assert_true(st.submit_calls * 8 <= st.requests);
        assert_true(st.max_in_flight >= 64);
    }
    g_free(w);
}

static void test_aio_max_batch_bounds_requests_per_submission(void **state)
{
    Fixture *f = *state;
    AioContext *ctx = aio_main_context();
    BlockWorker w[64];
    atomic_int done = 0;

    assert_true(aio_context_set_aio_params(ctx, 4, NULL));
    for (int i = 0; i < 64; i++) {
        w[i] = (BlockWorker){.engine = f->engine,
                             .fd = f->fd,
                             .offset = (uint64_t)i * BLOCK,
                             .seed = i,
                             .done = &done};
    }
    /* All 64 writes are queued before the loop runs: one submission per 4. */
    start_workers(w, 64);
    RawAioStats st;
    assert_true(f->engine->get_stats(ctx, &st));
    assert_int_equal(st.requests, 64);
    assert_int_equal(st.submit_calls, 16);

    while (atomic_load(&done) < 64) {
        aio_poll(ctx, true);
    }
    assert_true(aio_context_set_aio_params(ctx, 0, NULL));
    for (int i = 0; i < 64; i++) {
        assert_worker_ok(&w[i]);
    }
}

/* Starts a group of workers from a bottom half in an IOThread. */
typedef struct ThreadGroup {
    BlockWorker w[32];
} ThreadGroup;

static void start_group_bh(void *opaque)
{
    ThreadGroup *g = opaque;
    start_workers(g->w, G_N_ELEMENTS(g->w));
}

static void test_two_iothreads_share_one_fd_with_an_engine_each(void **state)
{
    Fixture *f = *state;
    IOThread *threads[2];
    ThreadGroup *groups = g_new0(ThreadGroup, 2);
    atomic_int done = 0;

    for (int t = 0; t < 2; t++) {
        char id[32];
        g_snprintf(id, sizeof(id), "engines-%d", t);
        threads[t] = iothread_create(id, NULL, NULL);
        assert_non_null(threads[t]);
        for (int i = 0; i < 32; i++) {
            groups[t].w[i] = (BlockWorker){.engine = f->engine,
                                           .fd = f->fd,
                                           .offset = ((uint64_t)t << 20) + (uint64_t)i * BLOCK,
                                           .seed = t * 100 + i,
                                           .done = &done};
        }
    }
    for (int t = 0; t < 2; t++) {
        aio_bh_schedule_oneshot(iothread_get_aio_context(threads[t]), start_group_bh, &groups[t]);
    }
    AIO_WAIT_WHILE(atomic_load(&done) < 64);

    for (int t = 0; t < 2; t++) {
        for (int i = 0; i < 32; i++) {
            assert_worker_ok(&groups[t].w[i]);
            if (f->engine->slot >= 0) {
                assert_non_null(groups[t].w[i].engine_seen);
                assert_ptr_equal(groups[t].w[i].engine_seen, groups[t].w[0].engine_seen);
            }
        }
    }
    if (f->engine->slot >= 0) {
        assert_ptr_not_equal(groups[0].w[0].engine_seen, groups[1].w[0].engine_seen);
    }

    /* Destroying a thread frees its context and with it the engine (ASan checks). */
    for (int t = 0; t < 2; t++) {
        iothread_destroy(threads[t]);
    }
    g_free(groups);
}

static void test_o_direct_with_aligned_buffers_round_trips(void **state)
{
    Fixture *f = *state;
    int fd = open(f->path, O_RDWR | O_DIRECT);
    if (fd < 0 && errno == EINVAL) {
        print_message("skipped: the filesystem of %s refuses O_DIRECT\n", f->path);
        skip();
    }
    assert_true(fd >= 0);

    uint8_t *buf = NULL, *rbuf = NULL;
    assert_int_equal(posix_memalign((void **)&buf, 4096, 3 * 4096), 0);
    assert_int_equal(posix_memalign((void **)&rbuf, 4096, 3 * 4096 + 4096), 0);
    fill_pattern(buf, 3 * 4096, 8192, 3);

    struct iovec wiov[3] = {{buf, 4096}, {buf + 4096, 4096}, {buf + 8192, 4096}};
    assert_int_equal(do_io(f->engine, fd, 8192, wiov, 3, RAW_AIO_WRITE), 3 * 4096);
    struct iovec riov[2] = {{rbuf, 8192}, {rbuf + 8192, 4096}};
    assert_int_equal(do_io(f->engine, fd, 8192, riov, 2, RAW_AIO_READ), 3 * 4096);
    assert_memory_equal(rbuf, buf, 3 * 4096);

    /*
     * A misaligned offset into written data is the kernel's to refuse, and
     * the error comes back intact.  (Holes may be read at any offset: the
     * filesystem zero-fills them without checking alignment.)
     */
    assert_int_equal(do_rw1(f->engine, fd, 8192 + 100, rbuf, 4096, RAW_AIO_READ), -EINVAL);
    /*
     * A misaligned buffer: recent kernels accept what the device can DMA
     * (possibly down to byte granularity), older ones refuse.  Either way
     * the engine must report it faithfully.
     */
    memset(rbuf, 0, 4096 + 1);
    int ret = do_rw1(f->engine, fd, 8192, rbuf + 1, 4096, RAW_AIO_READ);
    if (ret != -EINVAL) {
        assert_int_equal(ret, 4096);
        assert_memory_equal(rbuf + 1, buf, 4096);
    }

    free(buf);
    free(rbuf);
    close(fd);
}

static void test_reads_past_end_of_file_come_back_short(void **state)
{
    Fixture *f = *state;
    uint8_t data[10000], buf[8192];

    fill_pattern(data, sizeof(data), 0, 9);
    assert_int_equal(pwrite(f->fd, data, sizeof(data), 0), (ssize_t)sizeof(data));

    memset(buf, 0xee, sizeof(buf));
    struct iovec iov[2] = {{buf, 4096}, {buf + 4096, 4096}};
    assert_int_equal(do_io(f->engine, f->fd, 8192, iov, 2, RAW_AIO_READ), 10000 - 8192);
    assert_memory_equal(buf, data + 8192, 10000 - 8192);
    assert_int_equal(buf[10000 - 8192], 0xee); /* the engine does not zero-fill */

    assert_int_equal(do_rw1(f->engine, f->fd, 20000, buf, 4096, RAW_AIO_READ), 0);
}

static void test_bad_descriptors_fail_with_ebadf(void **state)
{
    Fixture *f = *state;
    uint8_t buf[4096] = {0};

    assert_int_equal(do_rw1(f->engine, f->fd, 0, buf, 4096, RAW_AIO_WRITE), 4096);
    assert_int_equal(do_rw1(f->engine, -1, 0, buf, 4096, RAW_AIO_READ), -EBADF);
    assert_int_equal(do_rw1(f->engine, -1, 0, buf, 4096, RAW_AIO_WRITE), -EBADF);
    assert_int_equal(do_io(f->engine, -1, 0, NULL, 0, RAW_AIO_FDATASYNC), -EBADF);

    /* Writing through a read-only descriptor. */
    int rofd = open(f->path, O_RDONLY);
    assert_true(rofd >= 0);
    assert_int_equal(do_rw1(f->engine, rofd, 0, buf, 4096, RAW_AIO_WRITE), -EBADF);
    assert_int_equal(do_rw1(f->engine, rofd, 0, buf, 4096, RAW_AIO_READ), 4096);
    close(rofd);

    /* A failure does not poison the engine for the requests after it. */
    assert_int_equal(do_rw1(f->engine, f->fd, 0, buf, 4096, RAW_AIO_READ), 4096);
}

static void test_fdatasync_and_fsync_succeed(void **state)
{
    Fixture *f = *state;
    uint8_t buf[512];

    memset(buf, 0x42, sizeof(buf));
    assert_int_equal(do_rw1(f->engine, f->fd, 0, buf, sizeof(buf), RAW_AIO_WRITE), 512);
    assert_int_equal(do_io(f->engine, f->fd, 0, NULL, 0, RAW_AIO_FDATASYNC), 0);
    assert_int_equal(do_io(f->engine, f->fd, 0, NULL, 0, RAW_AIO_FSYNC), 0);
}

static void test_kernel_engines_probe_successfully_here(void **state)
{
    GError *err = NULL;
    bool ok = laio_probe(&err);
    if (!ok) {
        print_message("laio_probe: %s\n", err->message);
    }
    g_clear_error(&err);
    assert_true(ok);
    ok = luring_probe(&err);
    if (!ok) {
        print_message("luring_probe: %s\n", err->message);
    }
    g_clear_error(&err);
    assert_true(ok);
}

typedef struct BlockingCalls {
    int fd, falloc_ret, trunc_ret, bad_ret;
    bool done;
} BlockingCalls;

static void coroutine_fn blocking_calls_co(void *opaque)
{
    BlockingCalls *c = opaque;
    c->trunc_ret = raw_thread_co_ftruncate(c->fd, 65536);
    c->falloc_ret = raw_thread_co_fallocate(c->fd, 0, 65536, 65536);
    c->bad_ret = raw_thread_co_ftruncate(-1, 0);
    c->done = true;
}

static void test_thread_pool_fallocate_and_ftruncate_report_errno(void **state)
{
    Fixture *f = *state;
    BlockingCalls c = {.fd = f->fd};

    co_enter(co_create(blocking_calls_co, &c));
    while (!c.done) {
        aio_poll(aio_main_context(), true);
    }
    assert_int_equal(c.trunc_ret, 0);
    assert_int_equal(c.falloc_ret, 0);
    assert_int_equal(c.bad_ret, -EBADF);
    struct stat st;
    assert_int_equal(fstat(f->fd, &st), 0);
    assert_int_equal(st.st_size, 131072);
}

/* Every test of the first group runs once per engine, named "<engine>: <test>". */
#define PER_ENGINE(fn)                                                                             \
    {"threads: " #fn, fn, fixture_setup, fixture_teardown, (void *)&engines[0]},                   \
        {"native: " #fn, fn, fixture_setup, fixture_teardown, (void *)&engines[1]},                \
    {                                                                                              \
        "io_uring: " #fn, fn, fixture_setup, fixture_teardown, (void *)&engines[2]                 \
    }

/* The thread pool does not batch: batching tests run for the kernel engines only. */
#define PER_KERNEL_ENGINE(fn)                                                                      \
    {"native: " #fn, fn, fixture_setup, fixture_teardown, (void *)&engines[1]},                    \
    {                                                                                              \
        "io_uring: " #fn, fn, fixture_setup, fixture_teardown, (void *)&engines[2]                 \
    }

int main(void)
{
    GError *err = NULL;
    if (!aio_main_loop_init(&err)) {
        fprintf(stderr, "aio_main_loop_init: %s\n", err->message);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        PER_ENGINE(test_multi_iovec_writes_read_back_at_several_offsets),
        PER_ENGINE(test_256_concurrent_requests_complete_in_one_context),
        PER_KERNEL_ENGINE(test_aio_max_batch_bounds_requests_per_submission),
        PER_ENGINE(test_two_iothreads_share_one_fd_with_an_engine_each),
        PER_ENGINE(test_o_direct_with_aligned_buffers_round_trips),
        PER_ENGINE(test_reads_past_end_of_file_come_back_short),
        PER_ENGINE(test_bad_descriptors_fail_with_ebadf),
        PER_ENGINE(test_fdatasync_and_fsync_succeed),
        cmocka_unit_test(test_kernel_engines_probe_successfully_here),
        {"test_thread_pool_fallocate_and_ftruncate_report_errno",
         test_thread_pool_fallocate_and_ftruncate_report_errno, fixture_setup, fixture_teardown,
         (void *)&engines[0]},
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
