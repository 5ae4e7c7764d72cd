/*
 * Stream jobs on qcow2 chains made by qemu-img (ideas of QEMU's iotest
 * 030): the whole chain into the top, down to a base, into an intermediate
 * node, with two IOThreads writing the top meanwhile (copy-on-read must
 * not overwrite their data), and cancels at random points.  Results are
 * checked with qemu-img compare, qemu-img check and qemu-img info.
 */
#include "tests/unit/test-job-util.h"

#define SIZE (4 << 20)

static void test_stream_whole_chain_leaves_top_without_backing(void **state)
{
    Fixture *f = *state;
    Chain c;
    GError *err = NULL;
    Events ev = {0};
    skip_without_qemu_img();
    chain_make(f, &c, 3, SIZE, 11);

    BlockBackend *blk = open_rw(c.path[2]);
    BlockJobOptions o = {.id = "stream0", .cb = events_cb, .opaque = &ev};
    Job *job = stream_start(blk_bs(blk), NULL, &o, &err);
    assert_non_null(job);
    job_ref(job);
    assert_int_equal(job_wait(job, false, &err), 0);
    uint64_t cur, total;
    job_progress(job, &cur, &total);
    assert_int_equal(cur, total);
    assert_true(total > 0);
    job_unref(job);
    assert_int_equal(ev.ret, 0);
    assert_null(blk_bs(blk)->backing);
    assert_false(blk_bs(blk)->open_flags & BDRV_O_COPY_ON_READ);
    assert_reads_as(blk, c.model, SIZE);
    blk_unref(blk);

    g_autofree char *backing = qemu_backing_of(c.path[2]);
    assert_string_equal(backing, "");
    assert_image_is(f, c.path[2], c.model, SIZE);
    events_clear(&ev);
    chain_free(&c);
}

static void test_stream_down_to_base_rewrites_header(void **state)
{
    Fixture *f = *state;
    Chain c;
    GError *err = NULL;
    skip_without_qemu_img();
    chain_make(f, &c, 4, SIZE, 12);

    BlockBackend *blk = open_rw(c.path[3]);
    BlockDriverState *base = chain_node(blk_bs(blk), 2);
    Job *job = stream_start(blk_bs(blk), base, NULL, &err);
    assert_non_null(job);
    job_ref(job);
    assert_int_equal(job_wait(job, false, &err), 0);
    job_unref(job);
    assert_ptr_equal(chain_node(blk_bs(blk), 1), base);
    assert_reads_as(blk, c.model, SIZE);
    blk_unref(blk);

    g_autofree char *backing = qemu_backing_of(c.path[3]);
    assert_string_equal(backing, "c1.qcow2");
    assert_image_is(f, c.path[3], c.model, SIZE);
    /* The base keeps showing what it showed. */
    assert_image_is(f, c.path[1], c.layer_model[1], SIZE);
    chain_free(&c);
}

/* c2 -> c1 -> c0: stream c0 into c1 (a read-only backing node) while c2 is in use. */
static void test_stream_into_intermediate_node(void **state)
{
    Fixture *f = *state;
    Chain c;
    GError *err = NULL;
    skip_without_qemu_img();
    chain_make(f, &c, 3, SIZE, 13);

    BlockBackend *blk = open_rw(c.path[2]);
    BlockDriverState *mid = chain_node(blk_bs(blk), 1);
    assert_true(bdrv_is_read_only(mid));
    Job *job = stream_start(mid, NULL, NULL, &err);
    assert_non_null(job);
    job_ref(job);
    assert_int_equal(job_wait(job, false, &err), 0);
    job_unref(job);
    assert_true(bdrv_is_read_only(mid));
    assert_null(mid->backing);
    assert_reads_as(blk, c.model, SIZE);
    blk_unref(blk);

    g_autofree char *backing = qemu_backing_of(c.path[1]);
    assert_string_equal(backing, "");
    assert_image_is(f, c.path[1], c.layer_model[1], SIZE);
    assert_image_is(f, c.path[2], c.model, SIZE);
    chain_free(&c);
}

static void test_stream_while_two_iothreads_write_the_top(void **state)
{
    Fixture *f = *state;
    Chain c;
    GError *err = NULL;
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    skip_without_qemu_img();
    chain_make(f, &c, 3, SIZE, 14);

    BlockBackend *blk = open_rw(c.path[2]);
    Writer *ws = writers_start(2, blk, c.model, &lock, SIZE, 20);
    writers_wait_progress(ws, 2, 5);
    /* Small requests, a few at a time: many chances to meet a guest write. */
    BlockJobOptions o = {.buf_size = 256 << 10};
    Job *job = stream_start(blk_bs(blk), NULL, &o, &err);
    assert_non_null(job);
    job_ref(job);
    assert_int_equal(job_wait(job, false, &err), 0);
    job_unref(job);
    writers_stop(ws, 2);
    assert_null(blk_bs(blk)->backing);
    assert_reads_as(blk, c.model, SIZE);
    blk_unref(blk);
    assert_image_is(f, c.path[2], c.model, SIZE);
    chain_free(&c);
}

static void test_stream_cancelled_at_random_points_keeps_data(void **state)
{
    Fixture *f = *state;
    Chain c;
    GError *err = NULL;
    GRand *rand = g_rand_new_with_seed(15);
    skip_without_qemu_img();
    chain_make(f, &c, 3, SIZE, 15);

    for (int round = 0; round < 4; round++) {
        BlockBackend *blk = open_rw(c.path[2]);
        BlockJobOptions o = {.speed = 4 << 20, .buf_size = 128 << 10};
        Job *job = stream_start(blk_bs(blk), NULL, &o, &err);
        assert_non_null(job);
        job_ref(job);
        /* Pause and resume a few times, then cancel, each after a random delay. */
        int steps = g_rand_int_range(rand, 1, 4);
        for (int i = 0; i < steps && !job_is_completed(job); i++) {
            int64_t until = aio_clock_ns() + g_rand_int_range(rand, 1, 40) * 1000000LL;
            while (aio_clock_ns() < until && !job_is_completed(job)) {
                aio_poll(aio_main_context(), true);
            }
            if (!job_is_completed(job) && job_user_pause(job, NULL)) {
                aio_poll(aio_main_context(), false);
                /* The coroutine may have finished just before the pause. */
                assert_true(job_user_resume(job, NULL) || job_is_completed(job));
            }
        }
        int ret = job_cancel_sync(job, false);
        assert_true(ret == 0 || ret == -ECANCELED);
        job_unref(job);
        assert_false(blk_bs(blk)->open_flags & BDRV_O_COPY_ON_READ);
        assert_reads_as(blk, c.model, SIZE);
        blk_unref(blk);
        assert_image_is(f, c.path[2], c.model, SIZE);
    }
    g_rand_free(rand);
    chain_free(&c);
}

static void test_stream_refuses_a_base_outside_the_chain(void **state)
{
    Fixture *f = *state;
    Chain c;
    GError *err = NULL;
    skip_without_qemu_img();
    chain_make(f, &c, 2, 1 << 20, 16);
    BlockBackend *blk = open_rw(c.path[1]);
    assert_null(stream_start(blk_bs(blk), blk_bs(blk), NULL, &err));
    assert_non_null(strstr(err->message, "is not a backing image"));
    g_clear_error(&err);
    blk_unref(blk);
    chain_free(&c);
}

int main(void)
{
    qcow2_test_init();
    const struct CMUnitTest tests[] = {
        QCOW2_TEST(test_stream_whole_chain_leaves_top_without_backing),
        QCOW2_TEST(test_stream_down_to_base_rewrites_header),
        QCOW2_TEST(test_stream_into_intermediate_node),
        QCOW2_TEST(test_stream_while_two_iothreads_write_the_top),
        QCOW2_TEST(test_stream_cancelled_at_random_points_keeps_data),
        QCOW2_TEST(test_stream_refuses_a_base_outside_the_chain),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
