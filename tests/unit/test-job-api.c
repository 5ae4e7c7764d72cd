/*
 * The jobs section of the public API (strata.h): commit, stream and mirror
 * started with options strings, events, waits, verbs and their refusals,
 * the job list, and the main-thread rule.  Images come from qemu-img;
 * results are checked with qemu-img compare and qemu-img check.
 */
#include "tests/unit/test-job-util.h"

#include "strata/strata.h"

#define SIZE (4 << 20)

typedef struct ApiEvents {
    int status, ready, completed, errors;
    StrataJobStatus last;
} ApiEvents;

static void api_events(void *opaque, StrataJob *job, StrataJobEvent ev)
{
    ApiEvents *e = opaque;
    switch (ev) {
    case STRATA_JOB_EVENT_STATUS:
        e->status++;
        e->last = strata_job_status(job);
        break;
    case STRATA_JOB_EVENT_READY:
        e->ready++;
        break;
    case STRATA_JOB_EVENT_ERROR:
        e->errors++;
        break;
    case STRATA_JOB_EVENT_COMPLETED:
        e->completed++;
        break;
    case STRATA_JOB_EVENT_PENDING:
        break;
    }
}

static StrataImage *api_open(const char *path)
{
    StrataError *err = NULL;
    StrataImage *img = strata_open(path, "driver=qcow2", STRATA_OPEN_RDWR, &err);
    if (!img) {
        fail_msg("strata_open %s: %s", path, strata_error_message(err));
    }
    return img;
}

static void assert_api_reads_as(StrataImage *img, const uint8_t *model)
{
    uint8_t *buf = g_malloc(SIZE);
    assert_int_equal(strata_pread(img, 0, buf, SIZE, 0), 0);
    assert_memory_equal(buf, model, SIZE);
    g_free(buf);
}

static void test_api_stream_and_commit_with_events(void **state)
{
    Fixture *f = *state;
    Chain c;
    StrataError *err = NULL;
    ApiEvents ev = {0};
    skip_without_qemu_img();
    chain_make(f, &c, 4, SIZE, 51);

    StrataImage *img = api_open(c.path[3]);
    /* Stream c2 into c3 (base c1, named by its filename). */
    g_autofree char *opts = g_strdup_printf("id=s1,base=%s", c.path[1]);
    StrataJob *job = strata_job_start(img, "stream", opts, api_events, &ev, &err);
    assert_non_null(job);
    assert_string_equal(strata_job_id(job), "s1");
    assert_string_equal(strata_job_type(job), "stream");
    assert_int_equal(strata_job_wait(job, false, &err), 0);
    assert_int_equal(strata_job_status(job), STRATA_JOB_NULL);
    assert_int_equal(strata_job_error(job), 0);
    assert_null(strata_job_error_message(job));
    assert_int_equal(ev.completed, 1);
    assert_int_equal(ev.last, STRATA_JOB_NULL);
    assert_null(strata_job_find("s1"));
    uint64_t cur, total;
    strata_job_progress(job, &cur, &total);
    assert_int_equal(cur, total);
    strata_job_unref(job);
    assert_api_reads_as(img, c.model);

    /* Active commit of the image into c1 (now its backing file), by node name. */
    ev = (ApiEvents){0};
    job = strata_job_start(img, "commit", "id=c1,auto-dismiss=off", api_events, &ev, &err);
    assert_non_null(job);
    StrataJob *list[4];
    assert_int_equal(strata_job_list(list, 4), 1);
    assert_ptr_equal(list[0], job);
    strata_job_unref(list[0]);
    assert_int_equal(strata_job_wait(job, true, &err), 0);
    assert_int_equal(strata_job_status(job), STRATA_JOB_READY);
    assert_int_equal(ev.ready, 1);
    assert_int_equal(strata_job_complete(job, &err), 0);
    assert_int_equal(strata_job_wait(job, false, &err), 0);
    assert_int_equal(strata_job_status(job), STRATA_JOB_CONCLUDED);
    StrataJob *again = strata_job_find("c1");
    assert_ptr_equal(again, job);
    strata_job_unref(again);
    assert_int_equal(strata_job_dismiss(job, &err), 0);
    assert_int_equal(strata_job_status(job), STRATA_JOB_NULL);
    strata_job_unref(job);
    assert_api_reads_as(img, c.model);
    assert_int_equal(strata_close(img), 0);
    assert_image_is(f, c.path[0], c.model, SIZE);
    chain_free(&c);
}

static void test_api_mirror_cancelled_after_ready(void **state)
{
    Fixture *f = *state;
    Chain c;
    StrataError *err = NULL;
    skip_without_qemu_img();
    chain_make(f, &c, 2, SIZE, 52);
    g_autofree char *target = path_in(f, "copy.qcow2");
    assert_int_equal(run(NULL, "qemu-img create -q -f qcow2 '%s' %d", target, SIZE), 0);

    StrataImage *img = api_open(c.path[1]);
    g_autofree char *opts =
        g_strdup_printf("target=%s,target-format=qcow2,sync=full,copy-mode=write-blocking,"
                        "granularity=65536,buf-size=1M,speed=100M",
                        target);
    StrataJob *job = strata_job_start(img, "mirror", opts, NULL, NULL, &err);
    assert_non_null(job);
    assert_int_equal(strata_job_wait(job, true, &err), 0);
    assert_int_equal(strata_job_set_speed(job, 0, &err), 0);
    uint8_t buf[4096];
    memset(buf, 0x77, sizeof(buf));
    assert_int_equal(strata_pwrite(img, 8192, buf, sizeof(buf), 0), 0);
    memcpy(c.model + 8192, buf, sizeof(buf));
    assert_int_equal(strata_job_cancel(job, false, &err), 0);
    assert_int_equal(strata_job_wait(job, false, &err), 0);
    strata_job_unref(job);
    assert_api_reads_as(img, c.model);
    assert_int_equal(strata_close(img), 0);
    assert_image_is(f, target, c.model, SIZE);
    chain_free(&c);
}

static void *other_thread(void *opaque)
{
    StrataError *err = NULL;
    StrataJob *job = strata_job_start(opaque, "stream", NULL, NULL, NULL, &err);
    assert_null(job);
    assert_int_equal(strata_error_code(err), -EPERM);
    strata_error_free(err);
    return NULL;
}

static void test_api_refusals(void **state)
{
    Fixture *f = *state;
    Chain c;
    StrataError *err = NULL;
    skip_without_qemu_img();
    chain_make(f, &c, 2, SIZE, 53);
    StrataImage *img = api_open(c.path[1]);

    assert_null(strata_job_start(img, "backup", NULL, NULL, NULL, &err));
    assert_int_equal(strata_error_code(err), -EINVAL);
    strata_error_free(err);
    err = NULL;
    assert_null(strata_job_start(img, "stream", "colour=blue", NULL, NULL, &err));
    assert_int_equal(strata_error_code(err), -EINVAL);
    assert_string_equal(strata_error_message(err),
                        "Job type 'stream' does not support the option 'colour'");
    strata_error_free(err);
    err = NULL;
    assert_null(strata_job_start(img, "commit", "base=nowhere.qcow2", NULL, NULL, &err));
    assert_int_equal(strata_error_code(err), -ENOENT);
    strata_error_free(err);
    err = NULL;
    assert_null(strata_job_start(img, "mirror", "sync=sideways,target=x", NULL, NULL, &err));
    assert_int_equal(strata_error_code(err), -EINVAL);
    strata_error_free(err);
    err = NULL;

    /* A slow stream: verbs in the wrong state, duplicate ids. */
    StrataJob *job = strata_job_start(img, "stream", "id=slow,speed=64k", NULL, NULL, &err);
    assert_non_null(job);
    assert_null(strata_job_start(img, "stream", "id=slow", NULL, NULL, &err));
    assert_int_equal(strata_error_code(err), -EEXIST);
    strata_error_free(err);
    err = NULL;
    assert_int_equal(strata_job_complete(job, &err), -EPERM);
    assert_string_equal(strata_error_message(err),
                        "Job 'slow' in state 'running' cannot accept command verb 'complete'");
    strata_error_free(err);
    err = NULL;
    assert_int_equal(strata_job_resume(job, &err), -EPERM);
    strata_error_free(err);
    err = NULL;
    assert_int_equal(strata_job_pause(job, &err), 0);
    pthread_t th;
    pthread_create(&th, NULL, other_thread, img);
    pthread_join(th, NULL);
    assert_int_equal(strata_job_resume(job, &err), 0);
    assert_int_equal(strata_job_cancel(job, false, &err), 0);
    assert_int_equal(strata_job_wait(job, false, &err), -ECANCELED);
    strata_error_free(err);
    err = NULL;
    assert_int_equal(strata_job_error(job), -ECANCELED);
    assert_string_equal(strata_job_status_name(strata_job_status(job)), "null");
    strata_job_unref(job);
    assert_api_reads_as(img, c.model);
    assert_int_equal(strata_close(img), 0);
    chain_free(&c);
}

int main(void)
{
    qcow2_test_init();
    assert_int_equal(strata_init(NULL), 0);
    const struct CMUnitTest tests[] = {
        QCOW2_TEST(test_api_stream_and_commit_with_events),
        QCOW2_TEST(test_api_mirror_cancelled_after_ready),
        QCOW2_TEST(test_api_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
