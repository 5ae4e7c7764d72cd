/*
 * Commit jobs on qcow2 chains made by qemu-img (ideas of QEMU's iotest
 * 040): intermediate commit relinks the overlay (graph and header) and
 * keeps what it shows; active commit follows writes from two IOThreads
 * and pivots on complete; cancel and errors leave the chain usable.
 * Results are checked with qemu-img compare and qemu-img check.
 */
#include "tests/unit/test-job-util.h"

#define SIZE (4 << 20)

/* active -> c2 -> c1 -> c0: commit c2 down to c0. */
static void test_intermediate_commit_relinks_overlay_and_keeps_content(void **state)
{
    Fixture *f = *state;
    Chain c;
    GError *err = NULL;
    Events ev = {0};
    skip_without_qemu_img();
    chain_make(f, &c, 4, SIZE, 1);

    BlockBackend *blk = open_rw(c.path[3]);
    BlockDriverState *active = blk_data_bs(blk);
    BlockDriverState *top = chain_node(active, 1), *base = chain_node(active, 3);
    assert_reads_as(blk, c.model, SIZE);

    BlockJobOptions o = {.id = "commit0", .cb = events_cb, .opaque = &ev};
    Job *job = commit_start(top, base, &o, &err);
    assert_non_null(job);
    job_ref(job);
    assert_int_equal(job_wait(job, false, &err), 0);
    assert_true(job_is_completed(job));
    assert_int_equal(job->status, JOB_STATUS_NULL);
    uint64_t cur, total;
    job_progress(job, &cur, &total);
    assert_true(total > 0);
    assert_int_equal(cur, total);
    job_unref(job);
    assert_null(job_find("commit0"));
    assert_int_equal(ev.completed, 1);
    assert_int_equal(ev.ret, 0);
    assert_string_equal(ev.statuses->str, "running waiting pending concluded null");

    /* The overlay now reads base directly and shows the same data. */
    assert_ptr_equal(chain_node(active, 1), base);
    assert_reads_as(blk, c.model, SIZE);
    blk_unref(blk);

    g_autofree char *backing = qemu_backing_of(c.path[3]);
    assert_string_equal(backing, "c0.qcow2");
    assert_image_is(f, c.path[3], c.model, SIZE);
    /* Base alone now shows what c2 showed. */
    assert_image_is(f, c.path[0], c.layer_model[2], SIZE);
    events_clear(&ev);
    chain_free(&c);
}

/* c3 -> c2 -> c1 -> c0, commit c3 (the image in use) into c1 while two IOThreads write. */
static void test_active_commit_includes_writes_from_two_iothreads(void **state)
{
    Fixture *f = *state;
    Chain c;
    GError *err = NULL;
    Events ev = {0};
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    skip_without_qemu_img();
    chain_make(f, &c, 4, SIZE, 2);

    BlockBackend *blk = open_rw(c.path[3]);
    BlockDriverState *base = chain_node(blk_bs(blk), 2);
    Writer *ws = writers_start(2, blk, c.model, &lock, SIZE, 10);
    writers_wait_progress(ws, 2, 10);

    BlockJobOptions o = {.cb = events_cb, .opaque = &ev, .buf_size = 1 << 20};
    Job *job = commit_active_start(blk_bs(blk), base, &o, &err);
    assert_non_null(job);
    job_ref(job);
    assert_int_equal(job_wait(job, true, &err), 0);
    assert_true(job_is_ready(job));
    assert_int_equal(ev.ready, 1);
    /* Writes keep coming while ready; some more, then complete (pivot inside a drain). */
    int before = atomic_load(&ws[0].writes);
    writers_wait_progress(ws, 2, before + 20);
    assert_true(job_complete(job, &err));
    assert_int_equal(job_wait(job, false, &err), 0);
    job_unref(job);
    assert_ptr_equal(blk_data_bs(blk), base);
    writers_stop(ws, 2);

    assert_reads_as(blk, c.model, SIZE);
    blk_unref(blk);
    /* c1 holds everything now, including the IOThreads' writes. */
    assert_image_is(f, c.path[1], c.model, SIZE);
    assert_qemu_img_check_clean(c.path[3]);
    events_clear(&ev);
    chain_free(&c);
}

static void test_commit_cancelled_while_paused_leaves_chain_as_it_was(void **state)
{
    Fixture *f = *state;
    Chain c;
    GError *err = NULL;
    Events ev = {0};
    skip_without_qemu_img();
    chain_make(f, &c, 3, SIZE, 3);

    BlockBackend *blk = open_rw(c.path[2]);
    BlockDriverState *top = chain_node(blk_bs(blk), 1), *base = chain_node(blk_bs(blk), 2);
    /* 1 MiB/s: slow enough to be caught in the middle. */
    BlockJobOptions o = {.cb = events_cb, .opaque = &ev, .speed = 1 << 20};
    Job *job = commit_start(top, base, &o, &err);
    assert_non_null(job);
    job_ref(job);
    assert_true(job_user_pause(job, &err));
    assert_true(job_user_pause(job, &err)); /* nested */
    AIO_WAIT_WHILE(job->status != JOB_STATUS_PAUSED);
    assert_true(job_user_resume(job, &err));
    assert_int_equal(job->status, JOB_STATUS_PAUSED);
    assert_int_equal(job_cancel_sync(job, false), -ECANCELED);
    assert_int_equal(ev.completed, 1);
    assert_int_equal(ev.ret, -ECANCELED);
    assert_null(job_error_message(job));
    job_unref(job);

    /* Nothing changed in the graph; the overlay still reads the same. */
    assert_ptr_equal(chain_node(blk_bs(blk), 1), top);
    assert_ptr_equal(blk_bs(blk)->backing->bs, top);
    assert_reads_as(blk, c.model, SIZE);
    blk_unref(blk);
    g_autofree char *backing = qemu_backing_of(c.path[2]);
    assert_string_equal(backing, "c1.qcow2");
    assert_image_is(f, c.path[2], c.model, SIZE);
    assert_qemu_img_check_clean(c.path[0]);
    events_clear(&ev);
    chain_free(&c);
}

static void test_commit_refuses_bad_arguments(void **state)
{
    Fixture *f = *state;
    Chain c;
    GError *err = NULL;
    skip_without_qemu_img();
    chain_make(f, &c, 3, 1 << 20, 4);

    BlockBackend *blk = open_rw(c.path[2]);
    BlockDriverState *active = blk_bs(blk), *mid = chain_node(active, 1);
    BlockDriverState *base = chain_node(active, 2);
    /* The active layer has no overlay to relink. */
    assert_null(commit_start(active, base, NULL, &err));
    assert_non_null(strstr(err->message, "active layer"));
    g_clear_error(&err);
    /* Base above top. */
    assert_null(commit_start(base, mid, NULL, &err));
    assert_non_null(strstr(err->message, "not in the backing chain"));
    g_clear_error(&err);
    /* Duplicate job IDs. */
    BlockJobOptions o = {.id = "same", .flags = JOB_MANUAL_FINALIZE};
    Job *job = commit_start(mid, base, &o, &err);
    assert_non_null(job);
    assert_null(commit_active_start(active, base, &o, &err));
    assert_non_null(strstr(err->message, "already in use"));
    g_clear_error(&err);
    /* Manual finalize: the job waits in pending; finalize completes it. */
    job_ref(job);
    assert_int_equal(job_wait(job, false, &err), 0);
    assert_int_equal(job->status, JOB_STATUS_PENDING);
    assert_false(job_dismiss(job, &err));
    assert_string_equal(err->message,
                        "Job 'same' in state 'pending' cannot accept command verb 'dismiss'");
    g_clear_error(&err);
    assert_true(job_finalize(job, &err));
    assert_true(job_is_completed(job));
    job_unref(job);
    assert_ptr_equal(chain_node(active, 1), base);
    assert_reads_as(blk, c.model, 1 << 20);
    blk_unref(blk);
    chain_free(&c);
}

/* Base shorter than top: commit grows it first (QEMU 040's "base smaller" cases). */
static void test_commit_into_a_smaller_base_grows_it(void **state)
{
    Fixture *f = *state;
    GError *err = NULL;
    skip_without_qemu_img();
    uint64_t size = 4 << 20;
    uint8_t *model = g_malloc0(size);
    g_autofree char *base = path_in(f, "base.qcow2"), *mid = path_in(f, "mid.qcow2");
    g_autofree char *top = path_in(f, "top.qcow2");
    assert_int_equal(run(NULL, "qemu-img create -q -f qcow2 '%s' 1M", base), 0);
    assert_int_equal(run(NULL,
                         "cd '%s' && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "
                         "mid.qcow2 4M && qemu-img create -q -f qcow2 -b mid.qcow2 -F "
                         "qcow2 top.qcow2",
                         f->dir),
                     0);
    static const QemuWrite bw[] = {{"write -P 0xa1 0 1M", 0, 1 << 20, 0xa1}};
    static const QemuWrite mw[] = {{"write -P 0xa2 3M 100k", 3 << 20, 100 << 10, 0xa2},
                                   {"write -z 512k 64k", 512 << 10, 64 << 10, -1}};
    qemu_io_apply(base, "qcow2", bw, 1, model);
    qemu_io_apply(mid, "qcow2", mw, 2, model);

    BlockBackend *blk = open_rw(top);
    Job *job = commit_start(chain_node(blk_bs(blk), 1), chain_node(blk_bs(blk), 2), NULL, &err);
    assert_non_null(job);
    job_ref(job);
    assert_int_equal(job_wait(job, false, &err), 0);
    job_unref(job);
    assert_reads_as(blk, model, size);
    blk_unref(blk);
    assert_image_is(f, base, model, size);
    assert_image_is(f, top, model, size);
    g_free(model);
}

/* Active commit stopped at random points (bounded): a soft or forced cancel, or a complete. */
static void test_active_commit_stopped_at_random_points(void **state)
{
    Fixture *f = *state;
    Chain c;
    GError *err = NULL;
    GRand *rand = g_rand_new_with_seed(6);
    skip_without_qemu_img();
    chain_make(f, &c, 3, SIZE, 6);

    for (int round = 0; round < 4; round++) {
        BlockBackend *blk = open_rw(c.path[2]);
        BlockDriverState *top = blk_data_bs(blk), *base = chain_node(top, 1);
        BlockJobOptions o = {.speed = 8 << 20, .buf_size = 256 << 10};
        Job *job = commit_active_start(blk_bs(blk), base, &o, &err);
        assert_non_null(job);
        job_ref(job);
        for (int i = g_rand_int_range(rand, 1, 4); i > 0 && !job_is_completed(job); i--) {
            int64_t until = aio_clock_ns() + g_rand_int_range(rand, 1, 30) * 1000000LL;
            while (aio_clock_ns() < until) {
                aio_poll(aio_main_context(), true);
            }
            bdrv_drained_begin(top);
            assert_false(job->busy);
            bdrv_drained_end(top);
        }
        int how = g_rand_int_range(rand, 0, 3);
        if (how == 2) {
            assert_true(job_set_speed(job, 0, &err));
            assert_int_equal(job_complete_sync(job, &err), 0);
            assert_ptr_equal(blk_data_bs(blk), base);
        } else {
            int ret = job_cancel_sync(job, how == 1);
            assert_true(ret == 0 || ret == -ECANCELED);
            assert_ptr_equal(blk_data_bs(blk), top);
        }
        job_unref(job);
        assert_reads_as(blk, c.model, SIZE);
        blk_unref(blk);
        assert_image_is(f, c.path[2], c.model, SIZE);
        assert_qemu_img_check_clean(c.path[1]);
    }
    g_rand_free(rand);
    chain_free(&c);
}

/* ---- the copy engine's background flushes --------------------------------------------------- */

/*
 * "bc-count": a protocol node of COUNT_SIZE bytes that drops what is
 * written, counts it, remembers how much was written when the first flush
 * came, and fails flushes with -EIO when count_fail_flush is set.
 */
#define COUNT_SIZE (192 << 20) /* null-co size "192M" below */
static int64_t count_written, count_at_first_flush;
static int count_flushes;
static bool count_fail_flush;

static bool count_open(BlockDriverState *bs, GHashTable *options, int flags, GError **errp)
{
    g_free(opts_take_str(options, "filename"));
    return true;
}

static int coroutine_fn count_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov, BdrvRequestFlags flags)
{
    count_written += bytes;
    return 0;
}

static int coroutine_fn count_flush(BlockDriverState *bs)
{
    if (count_flushes++ == 0) {
        count_at_first_flush = count_written;
    }
    return count_fail_flush ? -EIO : 0;
}

static int64_t coroutine_fn count_getlength(BlockDriverState *bs)
{
    return COUNT_SIZE;
}

static BlockDriver count_driver = {
    .format_name = "bc-count",
    .protocol_name = "bc-count",
    .is_protocol = true,
    .open = count_open,
    .co_pwritev = count_pwritev,
    .co_flush_to_disk = count_flush,
    .co_getlength = count_getlength,
};

/* Mirrors COUNT_SIZE of null-co data (the copy engine commit uses) into bc-count; returns the job's
 * result. */
static int copy_into_counter(bool fail_flush)
{
    GError *err = NULL;
    bdrv_register(&count_driver);
    count_written = count_at_first_flush = 0;
    count_flushes = 0;
    count_fail_flush = fail_flush;
    GHashTable *o = opts_new();
    opts_set(o, "driver", "null-co");
    opts_set(o, "size", "192M");
    BlockBackend *blk = blk_new_open(NULL, o, BDRV_O_RDWR, &err);
    if (!blk) {
        fail_msg("null-co: %s", err->message);
    }
    o = opts_new();
    opts_set(o, "driver", "bc-count");
    BlockDriverState *target = bdrv_open("count", o, BDRV_O_RDWR, &err);
    if (!target) {
        fail_msg("bc-count: %s", err->message);
    }

    BlockJobOptions jo = {.sync = MIRROR_SYNC_FULL};
    Job *job = mirror_start(blk_bs(blk), target, &jo, &err);
    assert_non_null(job);
    job_ref(job);
    int ret = job_wait(job, true, &err);
    if (ret == 0) {
        assert_true(job_is_ready(job));
        ret = job_complete_sync(job, &err);
    }
    g_clear_error(&err);
    job_unref(job);
    bdrv_unref(target);
    blk_unref(blk);
    return ret;
}

/*
 * A long copy flushes its target every 64 MiB in the background, so that
 * the page cache writes the data out while the copy goes on instead of in
 * the job's final flush (a third of a commit's time).
 */
static void test_a_long_copy_flushes_its_target_as_it_goes(void **state)
{
    assert_int_equal(copy_into_counter(false), 0);
    assert_true(count_written >= COUNT_SIZE);
    assert_true(count_flushes >= 2);
    /* The first flush came well before the end of the copy. */
    assert_true(count_at_first_flush >= 64 << 20);
    assert_true(count_at_first_flush < COUNT_SIZE - (32 << 20));
}

/* A failed background flush fails the job: the kernel reports lost write-back only once. */
static void test_a_failed_background_flush_fails_the_job(void **state)
{
    assert_int_equal(copy_into_counter(true), -EIO);
    assert_true(count_at_first_flush < COUNT_SIZE);
}

int main(void)
{
    qcow2_test_init();
    const struct CMUnitTest tests[] = {
        QCOW2_TEST(test_intermediate_commit_relinks_overlay_and_keeps_content),
        QCOW2_TEST(test_active_commit_includes_writes_from_two_iothreads),
        QCOW2_TEST(test_commit_cancelled_while_paused_leaves_chain_as_it_was),
        QCOW2_TEST(test_commit_refuses_bad_arguments),
        QCOW2_TEST(test_commit_into_a_smaller_base_grows_it),
        QCOW2_TEST(test_active_commit_stopped_at_random_points),
        QCOW2_TEST(test_a_long_copy_flushes_its_target_as_it_goes),
        QCOW2_TEST(test_a_failed_background_flush_fails_the_job),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
