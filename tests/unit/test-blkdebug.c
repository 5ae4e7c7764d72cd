/*
 * Unit tests for the blkdebug filter and the debug event hook: rules from
 * files and options, what an armed rule fails (once, iotype, sector),
 * states, breakpoints stopping and resuming a request, events crossing
 * filters, and QEMU's messages for bad configurations.
 *
 * blkdebug runs over null-co here, and the tests fire events themselves
 * (as a format driver would) from a coroutine.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>

#include "aio/aio.h"
#include "block/block-backend.h"
#include "block/block-int.h"

/* ---- helpers ------------------------------------------------------------------------ */

static char *tmpdir;

/* Writes @text to a fresh configuration file and returns its path. */
static char *write_config(const char *text)
{
    static int n;
    char *path = g_strdup_printf("%s/rules%d.conf", tmpdir, n++);
    assert_true(g_file_set_contents(path, text, -1, NULL));
    return path;
}

/* blkdebug over a 1 MiB null-co node, with extra options "k=v,..." (may be NULL). */
static BlockBackend *open_blkdebug(const char *config, const char *kv, GError **errp)
{
    GHashTable *o = opts_new();
    opts_set(o, "driver", "blkdebug");
    opts_set(o, "image.driver", "null-co");
    opts_set(o, "image.size", "1M");
    opts_set(o, "image.read-zeroes", "on");
    if (config) {
        opts_set(o, "config", config);
    }
    if (kv) {
        assert_true(opts_parse_kv(o, kv, NULL, NULL));
    }
    return blk_new_open(NULL, o, BDRV_O_RDWR, errp);
}

static BlockBackend *must_open(const char *config, const char *kv)
{
    GError *err = NULL;
    BlockBackend *blk = open_blkdebug(config, kv, &err);
    if (!blk) {
        fail_msg("open: %s", err->message);
    }
    return blk;
}

typedef struct FireCo {
    BlockDriverState *bs;
    BlkdebugEvent ev;
} FireCo;

static void coroutine_fn fire_entry(void *opaque)
{
    FireCo *f = opaque;
    bdrv_debug_event_slow(f->bs, f->ev);
}

/* Fires @ev at @bs as a format driver above it would. */
static void fire(BlockDriverState *bs, BlkdebugEvent ev)
{
    FireCo f = {bs, ev};
    bdrv_run_co(fire_entry, &f);
}

static int do_read(BlockBackend *blk, int64_t off, int64_t len)
{
    uint8_t buf[4096];
    g_assert(len <= (int64_t)sizeof(buf));
    return blk_pread(blk, off, len, buf, 0);
}

static int do_write(BlockBackend *blk, int64_t off, int64_t len)
{
    uint8_t buf[4096] = {0};
    g_assert(len <= (int64_t)sizeof(buf));
    return blk_pwrite(blk, off, len, buf, 0);
}

/* ---- names ------------------------------------------------------------------------------ */

static void test_event_names_round_trip_in_both_spellings(void **state)
{
    for (int i = 0; i < BLKDBG__MAX; i++) {
        const char *name = bdrv_debug_event_name(i);
        assert_non_null(name);
        assert_int_equal(bdrv_debug_event_lookup(name), i);
    }
    assert_int_equal(bdrv_debug_event_lookup("l2_alloc.write"), BLKDBG_L2_ALLOC_WRITE);
    assert_int_equal(bdrv_debug_event_lookup("refblock_alloc.switch_table"),
                     BLKDBG_REFBLOCK_ALLOC_SWITCH_TABLE);
    assert_int_equal(bdrv_debug_event_lookup("l1_grow.activate_table"),
                     BLKDBG_L1_GROW_ACTIVATE_TABLE);
    assert_int_equal(bdrv_debug_event_lookup("nosuchevent"), -1);
    assert_int_equal(bdrv_debug_event_lookup("l2_alloc"), -1);
}

/* ---- injecting errors ------------------------------------------------------------------- */

static void test_armed_rule_fails_every_later_request(void **state)
{
    g_autofree char *conf = write_config("[inject-error]\n"
                                         "event = \"l2_update\"\n"
                                         "errno = \"28\"\n");
    BlockBackend *blk = must_open(conf, NULL);
    BlockDriverState *bs = blk_bs(blk);

    assert_int_equal(do_read(blk, 0, 512), 0);
    assert_int_equal(do_write(blk, 0, 512), 0);
    fire(bs, BLKDBG_READ_AIO); /* no rule: changes nothing */
    assert_int_equal(do_read(blk, 0, 512), 0);

    fire(bs, BLKDBG_L2_UPDATE);
    assert_int_equal(do_read(blk, 0, 512), -ENOSPC);
    assert_int_equal(do_write(blk, 512, 512), -ENOSPC);
    assert_int_equal(blk_pwrite_zeroes(blk, 0, 512, 0), -ENOSPC);
    assert_int_equal(blk_flush(blk), -ENOSPC);
    assert_int_equal(do_read(blk, 4096, 512), -ENOSPC);
    blk_unref(blk);
}

static void test_once_rule_fails_one_request_then_is_gone(void **state)
{
    g_autofree char *conf = write_config("[inject-error]\n"
                                         "event = \"write_aio\"\n"
                                         "once = \"on\"\n"
                                         "immediately = \"on\"\n");
    BlockBackend *blk = must_open(conf, NULL);
    BlockDriverState *bs = blk_bs(blk);

    fire(bs, BLKDBG_WRITE_AIO);
    assert_int_equal(do_write(blk, 0, 512), -EIO);
    assert_int_equal(do_write(blk, 0, 512), 0);
    /* Removed, not just disarmed: the event no longer arms anything. */
    fire(bs, BLKDBG_WRITE_AIO);
    assert_int_equal(do_write(blk, 0, 512), 0);
    blk_unref(blk);
}

static void test_sector_and_iotype_select_the_requests_that_fail(void **state)
{
    g_autofree char *conf = write_config("[inject-error]\n"
                                         "event = \"read_aio\"\n"
                                         "sector = \"8\"\n"
                                         "iotype = \"read\"\n"
                                         "errno = \"5\"\n");
    BlockBackend *blk = must_open(conf, NULL);
    fire(blk_bs(blk), BLKDBG_READ_AIO);

    assert_int_equal(do_read(blk, 0, 4096), 0);       /* sectors 0-7 */
    assert_int_equal(do_read(blk, 3584, 1024), -EIO); /* sectors 7-8 */
    assert_int_equal(do_read(blk, 4096, 512), -EIO);  /* sector 8 */
    assert_int_equal(do_read(blk, 4608, 512), 0);     /* sector 9 */
    assert_int_equal(do_write(blk, 4096, 512), 0);    /* not a read */
    assert_int_equal(blk_flush(blk), 0);              /* flushes have no sector */
    blk_unref(blk);
}

static void test_set_state_gates_rules_by_state(void **state)
{
    g_autofree char *conf = write_config("[set-state]\n"
                                         "event = \"l1_update\"\n"
                                         "state = \"1\"\n"
                                         "new_state = \"2\"\n"
                                         "\n"
                                         "[inject-error]\n"
                                         "event = \"l2_load\"\n"
                                         "state = \"2\"\n");
    BlockBackend *blk = must_open(conf, NULL);
    BlockDriverState *bs = blk_bs(blk);

    fire(bs, BLKDBG_L2_LOAD); /* state 1: the rule does not apply */
    assert_int_equal(do_read(blk, 0, 512), 0);
    fire(bs, BLKDBG_L1_UPDATE);
    assert_int_equal(do_read(blk, 0, 512), 0);
    fire(bs, BLKDBG_L2_LOAD);
    assert_int_equal(do_read(blk, 0, 512), -EIO);
    blk_unref(blk);
}

static void test_a_new_event_with_rules_disarms_the_previous_ones(void **state)
{
    g_autofree char *conf = write_config("[inject-error]\n"
                                         "event = \"l2_load\"\n"
                                         "iotype = \"read\"\n"
                                         "[inject-error]\n"
                                         "event = \"l2_update\"\n"
                                         "iotype = \"write\"\n");
    BlockBackend *blk = must_open(conf, NULL);
    BlockDriverState *bs = blk_bs(blk);

    fire(bs, BLKDBG_L2_LOAD);
    assert_int_equal(do_read(blk, 0, 512), -EIO);
    assert_int_equal(do_write(blk, 0, 512), 0);
    fire(bs, BLKDBG_L2_UPDATE);
    assert_int_equal(do_read(blk, 0, 512), 0);
    assert_int_equal(do_write(blk, 0, 512), -EIO);
    blk_unref(blk);
}

static void test_options_give_the_same_rules_as_a_config_file(void **state)
{
    BlockBackend *blk = must_open(NULL, "inject-error.0.event=l2_update,inject-error.0.errno=28,"
                                        "inject-error.0.once=on,"
                                        "inject-error.1.event=refblock_load,"
                                        "set-state.event=cluster_free,set-state.new_state=3");
    BlockDriverState *bs = blk_bs(blk);

    fire(bs, BLKDBG_L2_UPDATE);
    assert_int_equal(do_write(blk, 0, 512), -ENOSPC);
    assert_int_equal(do_write(blk, 0, 512), 0);
    fire(bs, BLKDBG_REFBLOCK_LOAD);
    assert_int_equal(do_read(blk, 0, 512), -EIO);
    blk_unref(blk);
}

static void test_the_none_event_fires_at_open(void **state)
{
    GError *err = NULL;
    g_autofree char *conf = write_config("[inject-error]\n"
                                         "event = \"none\"\n"
                                         "errno = \"28\"\n"
                                         "once = \"on\"\n");
    BlockBackend *blk = open_blkdebug(conf, NULL, &err);
    assert_non_null(blk);
    assert_int_equal(do_read(blk, 0, 512), -ENOSPC);
    assert_int_equal(do_read(blk, 0, 512), 0);
    blk_unref(blk);
}

static void test_blkdebug_filename_names_config_and_image(void **state)
{
    g_autofree char *img = g_strdup_printf("%s/img.raw", tmpdir);
    g_autofree char *conf = write_config("[inject-error]\n"
                                         "event = \"none\"\n"
                                         "iotype = \"write\"\n");
    g_autofree char *name = g_strdup_printf("blkdebug:%s:%s", conf, img);
    g_autofree char *noconf = g_strdup_printf("blkdebug::%s", img);
    GError *err = NULL;

    assert_true(g_file_set_contents(img, "", 0, NULL));
    assert_int_equal(truncate(img, 65536), 0);
    GHashTable *o = opts_new();
    opts_set(o, "driver", "raw");
    BlockBackend *blk = blk_new_open(name, o, BDRV_O_RDWR, &err);
    assert_non_null(blk);
    assert_string_equal(bdrv_get_format_name(blk_bs(blk)->file->bs), "blkdebug");
    assert_int_equal(do_read(blk, 0, 512), 0);
    assert_int_equal(do_write(blk, 0, 512), -EIO);
    blk_unref(blk);

    o = opts_new();
    opts_set(o, "driver", "raw");
    blk = blk_new_open(noconf, o, BDRV_O_RDWR, &err);
    assert_non_null(blk);
    assert_int_equal(do_write(blk, 0, 512), 0);
    blk_unref(blk);

    blk = blk_new_open("blkdebug:onlyone", NULL, BDRV_O_RDWR, &err);
    assert_null(blk);
    assert_string_equal(err->message, "blkdebug requires both config file and image path");
    g_clear_error(&err);
}

static void test_bad_configurations_are_refused_with_qemus_messages(void **state)
{
    static const struct {
        const char *config; /* NULL: use kv only */
        const char *kv;
        const char *message;
    } cases[] = {
        {"[inject-error]\nerrno = \"5\"\n", NULL, "Missing event name for rule"},
        {"garbage\n", NULL, "no group defined"},
        {"[foo]\nx = \"1\"\n", NULL, "There is no option group 'foo'"},
        {"[inject-error]\nevent = \"read_aio\"\nfoo = \"1\"\n", NULL, "Invalid parameter 'foo'"},
        {"[inject-error]\nevent = \"read_aio\"\nonce = \"maybe\"\n", NULL,
         "Parameter 'once' expects 'on' or 'off'"},
        {"[inject-error]\nevent = \"read_aio\"\nerrno = \"abc\"\n", NULL,
         "Parameter 'errno' expects a number"},
        {"[inject-error]\nevent = \"nosuch\"\n", NULL, "invalid parameter value: nosuch"},
        /* Unquoted values read as empty, as in QEMU. */
        {"[inject-error]\nevent = read_aio\n", NULL, "invalid parameter value: "},
        {"[inject-error]\nevent=\"read_aio\"\n", NULL, "Invalid parameter 'event=\"read_aio\"'"},
        {"[inject-error]\nevent = \"read_aio\"\niotype = \"fly\"\n", NULL,
         "invalid parameter value: fly"},
        {"[set-state]\nevent = \"read_aio\"\nerrno = \"5\"\n", NULL, "Invalid parameter 'errno'"},
        {"   \n", NULL, "parse error"},
        {NULL, "inject-error.0.errno=5", "Missing event name for rule"},
        {NULL, "inject-error.0.event=read_aio,inject-error.0.bogus=1", "Invalid parameter 'bogus'"},
        {NULL, "align=3", "Cannot meet constraints with align 3"},
        {NULL, "bogus=1", "Block protocol 'blkdebug' does not support the option 'bogus'"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *conf = cases[i].config ? write_config(cases[i].config) : NULL;
        GError *err = NULL;
        BlockBackend *blk = open_blkdebug(conf, cases[i].kv, &err);
        if (blk || !err || strcmp(err->message, cases[i].message) != 0) {
            fail_msg("case %zu: expected '%s', got '%s'", i, cases[i].message,
                     err ? err->message : "success");
        }
        g_clear_error(&err);
    }

    GError *err = NULL;
    BlockBackend *blk = open_blkdebug("/nonexistent/blkdebug.conf", NULL, &err);
    assert_null(blk);
    assert_string_equal(err->message,
                        "Could not read blkdebug config file: No such file or directory");
    g_clear_error(&err);
}

/* ---- breakpoints ---------------------------------------------------------------------- */

typedef struct BreakCo {
    BlockBackend *blk;
    BlkdebugEvent ev;
    bool done;
    int ret;
} BreakCo;

/* A "format" request: the event, then the I/O it announces. */
static void coroutine_fn break_entry(void *opaque)
{
    BreakCo *b = opaque;
    uint8_t buf[512] = {0};
    bdrv_debug_event_slow(blk_bs(b->blk), b->ev);
    b->ret = blk_co_pwrite(b->blk, 0, sizeof(buf), buf, 0);
    b->done = true;
}

static void test_breakpoint_stops_a_request_until_resumed(void **state)
{
    BlockBackend *blk = must_open(NULL, NULL);
    BlockDriverState *bs = blk_bs(blk);
    BreakCo b = {blk, BLKDBG_WRITE_AIO, false, -1};

    assert_int_equal(bdrv_debug_is_suspended(bs, "A"), 0);
    assert_int_equal(bdrv_debug_breakpoint(bs, "nosuchevent", "A"), -ENOENT);
    assert_int_equal(bdrv_debug_breakpoint(bs, "write_aio", "A"), 0);
    co_enter(co_create(break_entry, &b));
    assert_false(b.done);
    assert_int_equal(bdrv_debug_is_suspended(bs, "A"), 1);
    assert_int_equal(bdrv_debug_is_suspended(bs, "B"), 0);
    assert_int_equal(bdrv_debug_resume(bs, "B"), -ENOENT);

    assert_int_equal(bdrv_debug_resume(bs, "A"), 0);
    while (!b.done) {
        aio_poll(aio_main_context(), true);
    }
    assert_int_equal(b.ret, 0);
    assert_int_equal(bdrv_debug_is_suspended(bs, "A"), 0);

    /* A breakpoint stops one request: the next one runs through. */
    b.done = false;
    co_enter(co_create(break_entry, &b));
    while (!b.done) {
        aio_poll(aio_main_context(), true);
    }
    blk_unref(blk);
}

static void test_remove_break_drops_breakpoints_and_resumes_requests(void **state)
{
    BlockBackend *blk = must_open(NULL, NULL);
    BlockDriverState *bs = blk_bs(blk);
    /* Two events: the rules of one event all fire on the first request that reaches it. */
    BreakCo b1 = {blk, BLKDBG_WRITE_AIO, false, -1}, b2 = {blk, BLKDBG_COW_WRITE, false, -1};

    assert_int_equal(bdrv_debug_remove_breakpoint(bs, "T"), -ENOENT);
    assert_int_equal(bdrv_debug_breakpoint(bs, "write_aio", "T"), 0);
    assert_int_equal(bdrv_debug_breakpoint(bs, "cow_write", "T"), 0);
    co_enter(co_create(break_entry, &b1));
    co_enter(co_create(break_entry, &b2));
    assert_int_equal(bdrv_debug_is_suspended(bs, "T"), 1);
    assert_false(b1.done || b2.done);

    assert_int_equal(bdrv_debug_remove_breakpoint(bs, "T"), 0);
    while (!b1.done || !b2.done) {
        aio_poll(aio_main_context(), true);
    }
    assert_int_equal(b1.ret, 0);
    assert_int_equal(b2.ret, 0);
    blk_unref(blk);
}

/* ---- the hook --------------------------------------------------------------------------- */

static void test_events_cross_filters_and_stop_at_protocols(void **state)
{
    GError *err = NULL;
    /* raw -> passthrough -> blkdebug -> null-co */
    GHashTable *o = opts_new();
    opts_set(o, "driver", "raw");
    opts_set(o, "file.driver", "passthrough");
    opts_set(o, "file.file.driver", "blkdebug");
    opts_set(o, "file.file.image.driver", "null-co");
    opts_set(o, "file.file.inject-error.0.event", "cow_read");
    BlockBackend *blk = blk_new_open(NULL, o, BDRV_O_RDWR, &err);
    if (!blk) {
        fail_msg("open: %s", err->message);
    }
    BlockDriverState *raw = blk_bs(blk);

    /* As raw would fire it on its file child: found through the filter. */
    fire(raw->file->bs, BLKDBG_COW_READ);
    assert_int_equal(do_read(blk, 0, 512), -EIO);
    /* The breakpoint walk follows file children too. */
    assert_int_equal(bdrv_debug_breakpoint(raw, "cow_read", "x"), 0);
    assert_int_equal(bdrv_debug_remove_breakpoint(raw, "x"), 0);
    blk_unref(blk);

    /* Without blkdebug nothing listens, and the breakpoint commands say so. */
    o = opts_new();
    opts_set(o, "driver", "null-co");
    blk = blk_new_open(NULL, o, BDRV_O_RDWR, &err);
    assert_non_null(blk);
    fire(blk_bs(blk), BLKDBG_COW_READ);
    assert_int_equal(do_read(blk, 0, 512), 0);
    assert_int_equal(bdrv_debug_breakpoint(blk_bs(blk), "cow_read", "x"), -ENOTSUP);
    assert_int_equal(bdrv_debug_is_suspended(blk_bs(blk), "x"), -ENOTSUP);
    assert_int_equal(bdrv_debug_resume(blk_bs(blk), "x"), -ENOTSUP);
    assert_int_equal(bdrv_debug_remove_breakpoint(blk_bs(blk), "x"), -ENOTSUP);
    blk_unref(blk);
}

static int setup(void **state)
{
    tmpdir = g_dir_make_tmp("strata-blkdebug-XXXXXX", NULL);
    return tmpdir ? 0 : -1;
}

static int teardown(void **state)
{
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", tmpdir);
    g_free(tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    g_assert(aio_main_loop_init(NULL));
    bdrv_init();
    if (!bdrv_find_driver("blkdebug")) {
        fprintf(stderr, "blkdebug is not in this build (LIB_DIRS lacks drivers/blkdebug)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_event_names_round_trip_in_both_spellings),
        cmocka_unit_test(test_armed_rule_fails_every_later_request),
        cmocka_unit_test(test_once_rule_fails_one_request_then_is_gone),
        cmocka_unit_test(test_sector_and_iotype_select_the_requests_that_fail),
        cmocka_unit_test(test_set_state_gates_rules_by_state),
        cmocka_unit_test(test_a_new_event_with_rules_disarms_the_previous_ones),
        cmocka_unit_test(test_options_give_the_same_rules_as_a_config_file),
        cmocka_unit_test(test_the_none_event_fires_at_open),
        cmocka_unit_test(test_blkdebug_filename_names_config_and_image),
        cmocka_unit_test(test_bad_configurations_are_refused_with_qemus_messages),
        cmocka_unit_test(test_breakpoint_stops_a_request_until_resumed),
        cmocka_unit_test(test_remove_break_drops_breakpoints_and_resumes_requests),
        cmocka_unit_test(test_events_cross_filters_and_stop_at_protocols),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
