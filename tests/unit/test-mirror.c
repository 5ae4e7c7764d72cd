/*
 * Mirror jobs on qcow2 chains made by qemu-img (ideas of QEMU's iotest
 * 041): sync full, top and none; background and write-blocking copy
 * modes; two IOThreads writing the source all along (the target must end
 * up with their writes); complete pivots, cancel after ready leaves a
 * consistent target; drained sections and random pauses in the middle.
 * Results are checked with qemu-img compare and qemu-img check.
 */
#include "tests/unit/test-job-util.h"

#define SIZE (4 << 20)

static void create_target(Fixture *f, const char *name, const char *backing)
{
    if (backing) {
        assert_int_equal(run(NULL,
                             "cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=64k -b %s "
                             "-F qcow2 %s",
                             f->dir, backing, name),
                         0);
    } else {
        assert_int_equal(
            run(NULL, "cd '%s' && qemu-img create -q -f qcow2 %s %d", f->dir, name, SIZE), 0);
    }
}

static BlockDriverState *open_target(Fixture *f, const char *name)
{
    g_autofree char *path = path_in(f, name);
    GError *err = NULL;
    GHashTable *opts = opts_new();
    opts_set(opts, "driver", "qcow2");
    BlockDriverState *bs = bdrv_open(path, opts, BDRV_O_RDWR, &err);
    if (!bs) {
        fail_msg("open %s: %s", path, err->message);
    }
    return bs;
}

/* Mirrors c2 -> c1 -> c0 to a fresh image while two IOThreads write; @mode; then completes. */
static void mirror_full_with_writers(Fixture *f, MirrorCopyMode mode, unsigned seed)
{
    Chain c;
    GError *err = NULL;
    Events ev = {0};
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    chain_make(f, &c, 3, SIZE, seed);
    create_target(f, "target.qcow2", NULL);

    BlockBackend *blk = open_rw(c.path[2]);
    BlockDriverState *target = open_target(f, "target.qcow2");
    Writer *ws = writers_start(2, blk, c.model, &lock, SIZE, seed * 10);
    writers_wait_progress(ws, 2, 5);

    BlockJobOptions o = {.id = "mirror0",
                         .cb = events_cb,
                         .opaque = &ev,
                         .sync = MIRROR_SYNC_FULL,
                         .copy_mode = mode,
                         .buf_size = 2 << 20};
    Job *job = mirror_start(blk_bs(blk), target, &o, &err);
    assert_non_null(job);
    job_ref(job);
    assert_int_equal(job_wait(job, true, &err), 0);
    assert_int_equal(ev.ready, 1);
    int more = atomic_load(&ws[1].writes) + 20;
    writers_wait_progress(ws, 2, more);
    assert_true(job_complete(job, &err));
    assert_int_equal(job_wait(job, false, &err), 0);
    assert_string_equal(job_type(job), "mirror");
    job_unref(job);
    /* The users of the source now use the target. */
    assert_ptr_equal(blk_data_bs(blk), target);
    writers_stop(ws, 2);
    assert_reads_as(blk, c.model, SIZE);
    blk_unref(blk);
    bdrv_unref(target);

    g_autofree char *tpath = path_in(f, "target.qcow2");
    assert_image_is(f, tpath, c.model, SIZE);
    events_clear(&ev);
    chain_free(&c);
}

static void test_mirror_full_background_follows_two_iothreads(void **state)
{
    skip_without_qemu_img();
    mirror_full_with_writers(*state, MIRROR_COPY_BACKGROUND, 31);
}

static void test_mirror_full_write_blocking_follows_two_iothreads(void **state)
{
    skip_without_qemu_img();
    mirror_full_with_writers(*state, MIRROR_COPY_WRITE_BLOCKING, 32);
}

static void test_write_blocking_writes_reach_the_target_before_completing(void **state)
{
    Fixture *f = *state;
    Chain c;
    GError *err = NULL;
    skip_without_qemu_img();
    chain_make(f, &c, 2, SIZE, 33);
    create_target(f, "target.qcow2", NULL);

    BlockBackend *blk = open_rw(c.path[1]);
    BlockDriverState *target = open_target(f, "target.qcow2");
    BlockJobOptions o = {.sync = MIRROR_SYNC_FULL, .copy_mode = MIRROR_COPY_WRITE_BLOCKING};
    Job *job = mirror_start(blk_bs(blk), target, &o, &err);
    assert_non_null(job);
    job_ref(job);
    assert_int_equal(job_wait(job, true, &err), 0);

    /* A reader of the target beside the job (which shares reads). */
    BlockBackend *peek = blk_new(BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL);
    assert_true(blk_insert_bs(peek, target, &err));
    uint8_t buf[70000], back[70000];
    memset(buf, 0x5a, sizeof(buf));
    /* Unaligned: the partial granules stay dirty for the background copy. */
    assert_int_equal(blk_pwrite(blk, 123456, sizeof(buf), buf, 0), 0);
    memcpy(c.model + 123456, buf, sizeof(buf));
    assert_int_equal(blk_pread(peek, 123456, sizeof(back), back, 0), 0);
    assert_memory_equal(buf, back, sizeof(buf));
    blk_unref(peek);

    /* Cancel after ready: no pivot, the target is a consistent copy. */
    assert_int_equal(job_cancel_sync(job, false), 0);
    job_unref(job);
    assert_ptr_equal(blk_data_bs(blk), chain_node(blk_bs(blk), 0));
    assert_ptr_not_equal(blk_data_bs(blk), target);
    assert_reads_as(blk, c.model, SIZE);
    blk_unref(blk);
    bdrv_unref(target);
    g_autofree char *tpath = path_in(f, "target.qcow2");
    assert_image_is(f, tpath, c.model, SIZE);
    assert_image_is(f, c.path[1], c.model, SIZE);
    chain_free(&c);
}

static void test_mirror_sync_top_shares_the_backing_file(void **state)
{
    Fixture *f = *state;
    Chain c;
    GError *err = NULL;
    skip_without_qemu_img();
    chain_make(f, &c, 3, SIZE, 34);
    create_target(f, "target.qcow2", "c1.qcow2");

    BlockBackend *blk = open_rw(c.path[2]);
    /* The target's own chain is opened without its backing file: the job attaches c1. */
    g_autofree char *tpath = path_in(f, "target.qcow2");
    GHashTable *opts = opts_new();
    opts_set(opts, "driver", "qcow2");
    opts_set(opts, "backing", "");
    BlockDriverState *target = bdrv_open(tpath, opts, BDRV_O_RDWR, &err);
    assert_non_null(target);
    BlockJobOptions o = {.sync = MIRROR_SYNC_TOP};
    Job *job = mirror_start(blk_bs(blk), target, &o, &err);
    assert_non_null(job);
    job_ref(job);
    assert_int_equal(job_complete_sync(job, &err), 0);
    job_unref(job);
    assert_ptr_equal(blk_data_bs(blk), target);
    assert_non_null(target->backing);
    assert_reads_as(blk, c.model, SIZE);
    blk_unref(blk);
    bdrv_unref(target);
    assert_image_is(f, tpath, c.model, SIZE);
    /* Only what c2 held was copied: the rest still comes from c1. */
    g_autofree char *out = NULL;
    assert_int_equal(run(&out, "qemu-img map --output=json '%s'", tpath), 0);
    assert_non_null(strstr(out, "\"depth\": 1"));
    chain_free(&c);
}

static void test_mirror_sync_none_copies_only_new_writes(void **state)
{
    Fixture *f = *state;
    GError *err = NULL;
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    skip_without_qemu_img();
    create_target(f, "src.qcow2", NULL);
    create_target(f, "target.qcow2", NULL);
    g_autofree char *spath = path_in(f, "src.qcow2");
    uint8_t *model = g_malloc0(SIZE);

    BlockBackend *blk = open_rw(spath);
    BlockDriverState *target = open_target(f, "target.qcow2");
    BlockJobOptions o = {.sync = MIRROR_SYNC_NONE};
    Job *job = mirror_start(blk_bs(blk), target, &o, &err);
    assert_non_null(job);
    job_ref(job);
    assert_int_equal(job_wait(job, true, &err), 0);
    Writer *ws = writers_start(2, blk, model, &lock, SIZE, 35);
    writers_wait_progress(ws, 2, 30);
    writers_stop(ws, 2);
    assert_int_equal(job_complete_sync(job, &err), 0);
    job_unref(job);
    assert_reads_as(blk, model, SIZE);
    blk_unref(blk);
    bdrv_unref(target);
    g_autofree char *tpath = path_in(f, "target.qcow2");
    assert_image_is(f, tpath, model, SIZE);
    g_free(model);
}

static void test_drained_sections_and_random_pauses_during_mirror(void **state)
{
    Fixture *f = *state;
    Chain c;
    GError *err = NULL;
    Events ev = {0};
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    GRand *rand = g_rand_new_with_seed(36);
    skip_without_qemu_img();
    chain_make(f, &c, 2, SIZE, 36);
    create_target(f, "target.qcow2", NULL);

    BlockBackend *blk = open_rw(c.path[1]);
    BlockDriverState *source = blk_data_bs(blk);
    BlockDriverState *target = open_target(f, "target.qcow2");
    Writer *ws = writers_start(2, blk, c.model, &lock, SIZE, 360);
    /*
     * 4 MiB/s keeps the job copying for about a second, far longer than the loop below (at most
     * 12 x 20 ms plus the sections), so the user pauses land before READY even under sanitizers.
     */
    BlockJobOptions o = {.cb = events_cb, .opaque = &ev, .speed = 4 << 20, .buf_size = 512 << 10};
    Job *job = mirror_start(blk_bs(blk), target, &o, &err);
    assert_non_null(job);
    job_ref(job);
    for (int i = 0; i < 12; i++) {
        int64_t until = aio_clock_ns() + g_rand_int_range(rand, 1, 20) * 1000000LL;
        while (aio_clock_ns() < until) {
            aio_poll(aio_main_context(), true);
        }
        if (g_rand_boolean(rand)) {
            /* Nothing in flight below the section, and the job parks at a pause point. */
            bdrv_drained_begin(source);
            assert_int_equal(bdrv_get_in_flight(source), 0);
            assert_false(job->busy);
            assert_true(job->status == JOB_STATUS_PAUSED || job->status == JOB_STATUS_STANDBY ||
                        job->paused == false);
            bdrv_drained_end(source);
        } else if (job_user_pause(job, &err)) {
            AIO_WAIT_WHILE(!job->paused);
            assert_true(job->status == JOB_STATUS_PAUSED || job->status == JOB_STATUS_STANDBY);
            assert_true(job_user_resume(job, &err));
        }
    }
    assert_true(job_set_speed(job, 0, &err));
    assert_int_equal(job_wait(job, true, &err), 0);
    writers_stop(ws, 2);
    assert_int_equal(job_complete_sync(job, &err), 0);
    job_unref(job);
    assert_true(strstr(ev.statuses->str, "paused") != NULL);
    assert_ptr_equal(blk_data_bs(blk), target);
    assert_reads_as(blk, c.model, SIZE);
    blk_unref(blk);
    bdrv_unref(target);
    g_autofree char *tpath = path_in(f, "target.qcow2");
    assert_image_is(f, tpath, c.model, SIZE);
    g_rand_free(rand);
    events_clear(&ev);
    chain_free(&c);
}

static void test_force_cancel_before_ready_changes_nothing(void **state)
{
    Fixture *f = *state;
    Chain c;
    GError *err = NULL;
    skip_without_qemu_img();
    chain_make(f, &c, 2, SIZE, 37);
    create_target(f, "target.qcow2", NULL);
    BlockBackend *blk = open_rw(c.path[1]);
    BlockDriverState *target = open_target(f, "target.qcow2");
    BlockJobOptions o = {.id = "m1", .speed = 1 << 20};
    Job *job = mirror_start(blk_bs(blk), target, &o, &err);
    assert_non_null(job);
    job_ref(job);
    assert_false(job_complete(job, &err));
    assert_string_equal(err->message,
                        "Job 'm1' in state 'running' cannot accept command verb 'complete'");
    g_clear_error(&err);
    assert_int_equal(job_cancel_sync(job, true), -ECANCELED);
    job_unref(job);
    assert_ptr_not_equal(blk_data_bs(blk), target);
    assert_null(blk_bs(blk)->drv->is_filter ? blk_bs(blk) : NULL);
    assert_reads_as(blk, c.model, SIZE);
    blk_unref(blk);
    bdrv_unref(target);
    assert_image_is(f, c.path[1], c.model, SIZE);
    chain_free(&c);
}

static void test_mirror_refuses_bad_arguments(void **state)
{
    Fixture *f = *state;
    Chain c;
    GError *err = NULL;
    skip_without_qemu_img();
    chain_make(f, &c, 2, 1 << 20, 38);
    BlockBackend *blk = open_rw(c.path[1]);
    BlockDriverState *below = chain_node(blk_bs(blk), 1);
    assert_null(mirror_start(blk_bs(blk), below, NULL, &err));
    assert_non_null(strstr(err->message, "backing chain"));
    g_clear_error(&err);
    create_target(f, "small.qcow2", NULL); /* SIZE, not 1 MiB */
    BlockDriverState *target = open_target(f, "small.qcow2");
    assert_null(mirror_start(blk_bs(blk), target, NULL, &err));
    assert_string_equal(err->message, "Source and target image have different sizes");
    g_clear_error(&err);
    bdrv_unref(target);
    blk_unref(blk);
    chain_free(&c);
}

static void test_resizing_the_source_fails_the_mirror_cleanly(void **state)
{
    Fixture *f = *state;
    Chain c;
    GError *err = NULL;
    skip_without_qemu_img();
    chain_make(f, &c, 2, SIZE, 39);
    create_target(f, "target.qcow2", NULL);
    BlockBackend *blk = open_rw(c.path[1]);
    BlockDriverState *target = open_target(f, "target.qcow2");
    BlockJobOptions o = {.speed = 1 << 20};
    Job *job = mirror_start(blk_bs(blk), target, &o, &err);
    assert_non_null(job);
    job_ref(job);
    assert_int_equal(blk_truncate(blk, 2 * SIZE, false, PREALLOC_MODE_OFF, 0, &err), 0);
    assert_int_equal(job_wait(job, false, &err), -EINVAL);
    assert_string_equal(err->message, "The source was resized while the job ran");
    g_clear_error(&err);
    job_unref(job);
    assert_ptr_not_equal(blk_data_bs(blk), target);
    assert_false(blk_bs(blk)->drv->is_filter);
    assert_int_equal(blk_getlength(blk), 2 * SIZE);
    blk_unref(blk);
    bdrv_unref(target);
    chain_free(&c);
}

int main(void)
{
    qcow2_test_init();
    const struct CMUnitTest tests[] = {
        QCOW2_TEST(test_mirror_full_background_follows_two_iothreads),
        QCOW2_TEST(test_mirror_full_write_blocking_follows_two_iothreads),
        QCOW2_TEST(test_write_blocking_writes_reach_the_target_before_completing),
        QCOW2_TEST(test_mirror_sync_top_shares_the_backing_file),
        QCOW2_TEST(test_mirror_sync_none_copies_only_new_writes),
        QCOW2_TEST(test_drained_sections_and_random_pauses_during_mirror),
        QCOW2_TEST(test_force_cancel_before_ready_changes_nothing),
        QCOW2_TEST(test_mirror_refuses_bad_arguments),
        QCOW2_TEST(test_resizing_the_source_fails_the_mirror_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
