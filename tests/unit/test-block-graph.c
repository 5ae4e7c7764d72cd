/*
 * Tests of the node graph: opening nodes from options, node names,
 * references, child edges, permissions (conflicts are refused with a
 * message naming the user that refuses), filters put in and taken out,
 * reopen, probing and the sector-0 guard of probed raw images, backing
 * file name resolution.
 *
 * Runs in the main thread; the drivers below are test doubles registered
 * next to the built-in ones.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <glib.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "aio/aio.h"
#include "block/block-backend.h"
#include "block/block-int.h"

/* ---- test drivers -------------------------------------------------------- */

/* A protocol that can carry a backing child: enough to test COW permissions. */
static bool cow_open(BlockDriverState *bs, GHashTable *options, int flags, GError **errp)
{
    return true;
}

static int64_t coroutine_fn cow_getlength(BlockDriverState *bs)
{
    return 1 << 20;
}

static BlockDriver test_cow_driver = {
    .format_name = "test-cow",
    .is_protocol = true,
    .supports_backing = true,
    .open = cow_open,
    .co_getlength = cow_getlength,
};

/* A format whose images start with "TMAG": probing must pick it. */
static int magic_probe(const uint8_t *buf, int len, const char *filename)
{
    return len >= 4 && memcmp(buf, "TMAG", 4) == 0 ? 100 : 0;
}

static BlockDriver test_magic_driver = {
    .format_name = "test-magic",
    .probe = magic_probe,
    .open = cow_open,
    .co_getlength = cow_getlength,
};

/* A raw-like format that claims anything with the fallback score. */
static int fallback_probe(const uint8_t *buf, int len, const char *filename)
{
    return 1;
}

static int coroutine_fn fallback_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                        IOVector *qiov, BdrvRequestFlags flags)
{
    return bdrv_co_preadv(bs->file, offset, bytes, qiov, flags);
}

static int coroutine_fn fallback_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         IOVector *qiov, BdrvRequestFlags flags)
{
    return bdrv_co_pwritev(bs->file, offset, bytes, qiov, flags);
}

static int64_t coroutine_fn fallback_getlength(BlockDriverState *bs)
{
    return bdrv_co_getlength(bs->file->bs);
}

static BlockDriver test_fallback_driver = {
    .format_name = "test-fallback",
    .probe = fallback_probe,
    .file_child_role = BDRV_CHILD_DATA | BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY,
    .open = cow_open,
    .co_preadv = fallback_preadv,
    .co_pwritev = fallback_pwritev,
    .co_getlength = fallback_getlength,
};

/* ---- helpers ---------------------------------------------------------------- */

static BlockDriverState *open_kv(const char *kv, int flags, GError **errp)
{
    GHashTable *o = opts_new();
    g_assert(opts_parse_kv(o, kv, NULL, NULL));
    return bdrv_open(NULL, o, flags, errp);
}

static BlockDriverState *open_kv_ok(const char *kv, int flags)
{
    GError *err = NULL;
    BlockDriverState *bs = open_kv(kv, flags, &err);
    if (!bs) {
        fail_msg("opening '%s' failed: %s", kv, err->message);
    }
    return bs;
}

static char *open_kv_error(const char *kv, int flags)
{
    GError *err = NULL;
    BlockDriverState *bs = open_kv(kv, flags, &err);
    assert_null(bs);
    assert_non_null(err);
    char *msg = g_strdup(err->message);
    g_error_free(err);
    return msg;
}

static unsigned node_count(void)
{
    GList *l = bdrv_get_all_nodes();
    unsigned n = g_list_length(l);
    g_list_free(l);
    return n;
}

static int setup(void **state)
{
    *state = GUINT_TO_POINTER(node_count());
    return 0;
}

/* Every test must leave no node behind. */
static int teardown(void **state)
{
    assert_int_equal(node_count(), GPOINTER_TO_UINT(*state));
    return 0;
}

/* ---- opening and names ----------------------------------------------------------- */

static void test_null_co_opens_from_options(void **state)
{
    BlockDriverState *bs = open_kv_ok("driver=null-co,size=1M", 0);
    assert_string_equal(bdrv_get_format_name(bs), "null-co");
    assert_int_equal(bdrv_getlength(bs), 1 << 20);
    assert_true(bdrv_is_read_only(bs));
    assert_string_equal(bs->filename, "null-co://");
    assert_int_equal(bs->refcnt, 1);
    bdrv_unref(bs);
}

static void test_null_co_opens_from_its_filename(void **state)
{
    GError *err = NULL;
    BlockDriverState *bs = bdrv_open("null-co://", NULL, BDRV_O_PROTOCOL | BDRV_O_RDWR, &err);
    assert_non_null(bs);
    assert_string_equal(bdrv_get_format_name(bs), "null-co");
    assert_int_equal(bdrv_getlength(bs), 1 << 30);
    assert_false(bdrv_is_read_only(bs));
    bdrv_unref(bs);
}

static void test_json_filename_builds_a_filter_over_a_protocol(void **state)
{
    GError *err = NULL;
    BlockDriverState *bs = bdrv_open(
        "json:{\"driver\":\"passthrough\",\"node-name\":\"top\",\"file\":{\"driver\":\"null-co\","
        "\"node-name\":\"bottom\",\"size\":\"4096\"}}",
        NULL, 0, &err);
    assert_non_null(bs);
    assert_string_equal(bs->node_name, "top");
    assert_non_null(bs->file);
    assert_string_equal(bs->file->name, "file");
    assert_string_equal(bs->file->bs->node_name, "bottom");
    assert_ptr_equal(bdrv_find_node("bottom"), bs->file->bs);
    assert_int_equal(bdrv_getlength(bs), 4096);
    assert_int_equal(g_list_length(bs->file->bs->parents), 1);
    bdrv_unref(bs);
    assert_null(bdrv_find_node("bottom"));
}

static void test_nodes_without_a_name_get_a_generated_one(void **state)
{
    BlockDriverState *a = open_kv_ok("driver=null-co", 0);
    BlockDriverState *b = open_kv_ok("driver=null-co", 0);
    assert_true(g_str_has_prefix(a->node_name, "#block"));
    assert_true(g_str_has_prefix(b->node_name, "#block"));
    assert_string_not_equal(a->node_name, b->node_name);
    assert_ptr_equal(bdrv_find_node(a->node_name), a);
    bdrv_unref(a);
    bdrv_unref(b);
}

static void test_duplicate_and_invalid_node_names_are_refused(void **state)
{
    BlockDriverState *a = open_kv_ok("driver=null-co,node-name=disk0", 0);
    g_autofree char *dup = open_kv_error("driver=null-co,node-name=disk0", 0);
    assert_string_equal(dup, "Duplicate nodes with node-name='disk0'");
    g_autofree char *bad = open_kv_error("driver=null-co,node-name=0abc", 0);
    assert_non_null(strstr(bad, "Invalid node-name: '0abc'"));
    g_autofree char *bad2 = open_kv_error("driver=null-co,node-name=#block1", 0);
    assert_non_null(strstr(bad2, "Invalid node-name"));
    bdrv_unref(a);
}

static void test_unknown_options_and_drivers_are_refused(void **state)
{
    g_autofree char *opt = open_kv_error("driver=null-co,bogus=1", 0);
    assert_string_equal(opt, "Block protocol 'null-co' does not support the option 'bogus'");
    g_autofree char *drv = open_kv_error("driver=no-such-driver", 0);
    assert_string_equal(drv, "Unknown driver 'no-such-driver'");
    g_autofree char *val = open_kv_error("driver=null-co,size=lots", 0);
    assert_non_null(strstr(val, "'size'"));
    g_autofree char *fn = open_kv_error("driver=null-co,filename=null-co://x", 0);
    assert_non_null(strstr(fn, "null-co://"));
    GError *err = NULL;
    assert_null(bdrv_open("nosuch://x", NULL, BDRV_O_PROTOCOL, &err));
    assert_string_equal(err->message, "Unknown protocol 'nosuch'");
    g_error_free(err);
}

static void test_generic_options_set_the_open_flags(void **state)
{
    BlockDriverState *bs = open_kv_ok(
        "driver=null-co,read-only=off,cache.direct=on,cache.no-flush=on,discard=unmap", 0);
    assert_false(bdrv_is_read_only(bs));
    assert_true(bs->open_flags & BDRV_O_NOCACHE);
    assert_true(bs->open_flags & BDRV_O_NO_FLUSH);
    assert_true(bs->open_flags & BDRV_O_UNMAP);
    bdrv_unref(bs);

    g_autofree char *msg = open_kv_error("driver=null-co,read-only=off,force-share=on", 0);
    assert_non_null(strstr(msg, "force-share=on can only be used with read-only images"));
}

/* ---- references and edges ----------------------------------------------------- */

static void test_references_keep_a_node_until_the_last_unref(void **state)
{
    BlockDriverState *bs = open_kv_ok("driver=null-co,node-name=held", 0);
    bdrv_ref(bs);
    assert_int_equal(bs->refcnt, 2);
    bdrv_unref(bs);
    assert_ptr_equal(bdrv_find_node("held"), bs);
    bdrv_unref(bs);
    assert_null(bdrv_find_node("held"));
}

static void test_child_edge_holds_a_reference_on_the_child(void **state)
{
    BlockDriverState *base = open_kv_ok("driver=null-co,node-name=child0", 0);
    BlockDriverState *top = open_kv_ok("driver=passthrough,node-name=parent0,file=child0", 0);
    assert_int_equal(base->refcnt, 2);
    assert_ptr_equal(top->file->bs, base);
    assert_ptr_equal(((BdrvChild *)base->parents->data)->opaque, top);
    bdrv_unref(base);
    assert_ptr_equal(bdrv_find_node("child0"), base);
    bdrv_unref(top);
    assert_null(bdrv_find_node("child0"));
}

/* ---- permissions ------------------------------------------------------------------ */

static void test_two_writers_on_one_node_conflict(void **state)
{
    BlockDriverState *bs = open_kv_ok("driver=null-co,node-name=disk,read-only=off", 0);
    uint64_t rw = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE;
    uint64_t share = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED;
    GError *err = NULL;

    BlockBackend *a = blk_new(rw, share);
    blk_set_name(a, "first");
    assert_true(blk_insert_bs(a, bs, &err));
    BlockBackend *b = blk_new(rw, share);
    assert_false(blk_insert_bs(b, bs, &err));
    assert_string_equal(err->message, "Conflicts with use by block device 'first' as 'root', "
                                      "which does not allow 'write' on disk");
    g_clear_error(&err);
    assert_int_equal(g_list_length(bs->parents), 1);
    assert_int_equal(bs->refcnt, 2);

    /* A reader that shares writing is fine next to the writer. */
    BlockBackend *c = blk_new(BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL);
    assert_true(blk_insert_bs(c, bs, &err));
    blk_unref(c);

    blk_unref(b);
    blk_unref(a);
    bdrv_unref(bs);
}

static void test_backing_file_refuses_writers(void **state)
{
    BlockDriverState *base = open_kv_ok("driver=null-co,node-name=base,read-only=off", 0);
    BlockDriverState *overlay =
        open_kv_ok("driver=test-cow,node-name=overlay,backing=base,read-only=off", 0);
    GError *err = NULL;

    assert_non_null(overlay->backing);
    assert_ptr_equal(overlay->backing->bs, base);
    /* The overlay's user does not share writes: so the backing file cannot either. */
    BlockBackend *user =
        blk_new(BLK_PERM_CONSISTENT_READ, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED);
    assert_true(blk_insert_bs(user, overlay, &err));
    BlockBackend *blk = blk_new(BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, BLK_PERM_ALL);
    assert_false(blk_insert_bs(blk, base, &err));
    assert_string_equal(err->message, "Conflicts with use by node 'overlay' as 'backing', which "
                                      "does not allow 'write' on base");
    g_clear_error(&err);

    /* Reading the backing file alongside is allowed. */
    assert_true(blk_set_perm(blk, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL, &err));
    assert_true(blk_insert_bs(blk, base, &err));
    /* Asking for write afterwards is refused and changes nothing. */
    assert_false(blk_set_perm(blk, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, BLK_PERM_ALL, &err));
    g_clear_error(&err);
    uint64_t perm, shared;
    blk_get_perm(blk, &perm, &shared);
    assert_int_equal(perm, BLK_PERM_CONSISTENT_READ);

    blk_unref(blk);
    blk_unref(user);
    bdrv_unref(overlay);
    bdrv_unref(base);
}

static void test_read_only_node_refuses_a_writer(void **state)
{
    BlockDriverState *bs = open_kv_ok("driver=null-co,node-name=ro", 0);
    BlockBackend *blk = blk_new(BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, BLK_PERM_ALL);
    GError *err = NULL;
    assert_false(blk_insert_bs(blk, bs, &err));
    assert_string_equal(err->message, "Block node 'ro' is read-only");
    g_error_free(err);
    blk_unref(blk);
    bdrv_unref(bs);
}

static void test_blk_new_open_takes_write_only_when_asked(void **state)
{
    GHashTable *o = opts_new();
    opts_set(o, "driver", "null-co");
    opts_set(o, "node-name", "shared");
    GError *err = NULL;
    BlockBackend *w = blk_new_open(NULL, o, BDRV_O_RDWR, &err);
    assert_non_null(w);
    uint64_t perm, shared;
    blk_get_perm(w, &perm, &shared);
    assert_int_equal(perm, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE);
    assert_false(shared & BLK_PERM_WRITE);
    blk_unref(w);
    assert_null(bdrv_find_node("shared"));
}

/* ---- filters and replacing nodes ------------------------------------------------ */

static void test_filter_is_inserted_and_dropped_under_a_backend(void **state)
{
    BlockDriverState *bs = open_kv_ok("driver=null-co,node-name=n0,read-only=off", 0);
    BlockBackend *blk = blk_new(BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                                BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED);
    GError *err = NULL;
    assert_true(blk_insert_bs(blk, bs, &err));
    bdrv_unref(bs);

    GHashTable *o = opts_new();
    opts_set(o, "driver", "passthrough");
    opts_set(o, "node-name", "flt");
    BlockDriverState *f = bdrv_insert_node(bs, o, BDRV_O_RDWR, &err);
    if (!f) {
        fail_msg("%s", err->message);
    }
    assert_ptr_equal(blk_bs(blk), f);
    assert_ptr_equal(f->file->bs, bs);
    assert_int_equal(f->refcnt, 1);
    assert_int_equal(g_list_length(bs->parents), 1);
    /* The write permission travelled down through the filter. */
    assert_true(f->file->perm & BLK_PERM_WRITE);
    char buf[512] = {0};
    assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);

    assert_true(bdrv_drop_filter(f, &err));
    assert_ptr_equal(blk_bs(blk), bs);
    assert_null(bdrv_find_node("flt"));
    assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);
    blk_unref(blk);
}

static void test_a_cycle_is_refused(void **state)
{
    BlockDriverState *a = open_kv_ok("driver=test-cow,node-name=ca", 0);
    BlockDriverState *b = open_kv_ok("driver=test-cow,node-name=cb,backing=ca", 0);
    GError *err = NULL;
    assert_false(bdrv_set_backing_hd(a, b, &err));
    assert_non_null(strstr(err->message, "cycle"));
    g_error_free(err);
    bdrv_unref(b);
    bdrv_unref(a);
}

/* ---- reopen -------------------------------------------------------------------------- */

static void test_reopen_switches_read_only_and_checks_users(void **state)
{
    BlockDriverState *bs = open_kv_ok("driver=null-co,node-name=re", 0);
    GError *err = NULL;
    assert_true(bdrv_reopen_set_read_only(bs, false, &err));
    assert_false(bdrv_is_read_only(bs));

    BlockBackend *blk = blk_new(BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, BLK_PERM_ALL);
    assert_true(blk_insert_bs(blk, bs, &err));
    assert_false(bdrv_reopen_set_read_only(bs, true, &err));
    assert_string_equal(err->message, "Block node 're' is read-only");
    g_clear_error(&err);
    assert_false(bdrv_is_read_only(bs));

    assert_true(blk_set_perm(blk, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL, &err));
    assert_true(bdrv_reopen_set_read_only(bs, true, &err));
    assert_true(bdrv_is_read_only(bs));
    blk_unref(blk);
    bdrv_unref(bs);
}

static void test_reopen_of_a_driver_without_support_is_refused(void **state)
{
    BlockDriverState *bs = open_kv_ok("driver=test-cow,node-name=nore", 0);
    GError *err = NULL;
    assert_false(bdrv_reopen_set_read_only(bs, false, &err));
    assert_non_null(strstr(err->message, "does not support reopening"));
    g_error_free(err);
    assert_true(bdrv_is_read_only(bs));
    bdrv_unref(bs);
}

/* ---- probing ------------------------------------------------------------------------ */

/* Opens null-co with read-zeroes through a probed format; stderr goes to @errfile. */
static BlockDriverState *open_probed(int flags, char **stderr_text)
{
    char path[] = "/tmp/strata-probe-XXXXXX";
    int fd = mkstemp(path);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    GError *err = NULL;
    BlockDriverState *bs = open_kv("file.driver=null-co,file.read-zeroes=on", flags, &err);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    g_file_get_contents(path, stderr_text, NULL, NULL);
    close(fd);
    unlink(path);
    if (!bs) {
        fail_msg("probed open failed: %s", err->message);
    }
    return bs;
}

static void test_probing_guesses_the_fallback_format_with_a_warning(void **state)
{
    g_autofree char *text = NULL;
    BlockDriverState *bs = open_probed(BDRV_O_RDWR, &text);
    /* The first driver with the fallback score wins: raw when it is linked in. */
    assert_int_equal(bs->drv->probe((const uint8_t *)"", 0, NULL), 1);
    assert_true(bs->probed);
    assert_non_null(strstr(text, "WARNING: Image format was not specified for 'null-co://' and "
                                 "probing guessed raw."));
    assert_non_null(strstr(text, "write operations on block 0 will be restricted"));
    assert_int_equal(bs->bl.request_alignment, 512);
    bdrv_unref(bs);

    g_autofree char *quiet = NULL;
    bs = open_probed(0, &quiet);
    assert_string_equal(quiet, "");
    bdrv_unref(bs);
}

static void test_probed_image_refuses_a_header_in_sector_0(void **state)
{
    g_autofree char *text = NULL;
    BlockDriverState *bs = open_probed(BDRV_O_RDWR, &text);
    BlockBackend *blk = blk_new(BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE, BLK_PERM_ALL);
    GError *err = NULL;
    assert_true(blk_insert_bs(blk, bs, &err));
    bdrv_unref(bs);

    char magic[8] = "TMAG";
    assert_int_equal(blk_pwrite(blk, 0, 4, magic, 0), -EPERM);
    /* The guard is about what probing would see, not about sector 0 as such. */
    assert_int_equal(blk_pwrite(blk, 100, 4, magic, 0), 0);
    char zeroes[8] = {0};
    assert_int_equal(blk_pwrite(blk, 0, 8, zeroes, 0), 0);
    /* Beyond sector 0 anything goes. */
    assert_int_equal(blk_pwrite(blk, 512, 4, magic, 0), 0);
    blk_unref(blk);
}

/* ---- backing file names ----------------------------------------------------------------- */

static void test_backing_names_resolve_against_the_overlay_directory(void **state)
{
    BlockDriverState *bs = open_kv_ok("driver=test-cow,node-name=names", 0);
    GError *err = NULL;
    g_free(bs->filename);
    bs->filename = g_strdup("/images/dir/overlay.qcow2");

    bs->backing_file = g_strdup("base.qcow2");
    g_autofree char *rel = bdrv_get_full_backing_filename(bs, &err);
    assert_string_equal(rel, "/images/dir/base.qcow2");

    g_free(bs->backing_file);
    bs->backing_file = g_strdup("/abs/base.qcow2");
    g_autofree char *abs = bdrv_get_full_backing_filename(bs, &err);
    assert_string_equal(abs, "/abs/base.qcow2");

    g_free(bs->backing_file);
    bs->backing_file = g_strdup("json:{\"driver\":\"null-co\"}");
    assert_null(bdrv_get_full_backing_filename(bs, &err));
    assert_non_null(strstr(err->message, "not a plain local path"));
    g_clear_error(&err);

    g_free(bs->backing_file);
    bs->backing_file = g_strdup("nbd:localhost:10809");
    assert_null(bdrv_get_full_backing_filename(bs, &err));
    assert_non_null(strstr(err->message, "not a plain local path"));
    g_clear_error(&err);

    g_free(bs->backing_file);
    bs->backing_file = g_strdup("./sub:dir/base.img");
    g_autofree char *colon = bdrv_get_full_backing_filename(bs, &err);
    assert_string_equal(colon, "/images/dir/./sub:dir/base.img");
    bdrv_unref(bs);
}

int main(void)
{
    g_assert(aio_main_loop_init(NULL));
    bdrv_init();
    bdrv_register(&test_cow_driver);
    bdrv_register(&test_magic_driver);
    bdrv_register(&test_fallback_driver);

    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_null_co_opens_from_options),
        T(test_null_co_opens_from_its_filename),
        T(test_json_filename_builds_a_filter_over_a_protocol),
        T(test_nodes_without_a_name_get_a_generated_one),
        T(test_duplicate_and_invalid_node_names_are_refused),
        T(test_unknown_options_and_drivers_are_refused),
        T(test_generic_options_set_the_open_flags),
        T(test_references_keep_a_node_until_the_last_unref),
        T(test_child_edge_holds_a_reference_on_the_child),
        T(test_two_writers_on_one_node_conflict),
        T(test_backing_file_refuses_writers),
        T(test_read_only_node_refuses_a_writer),
        T(test_blk_new_open_takes_write_only_when_asked),
        T(test_filter_is_inserted_and_dropped_under_a_backend),
        T(test_a_cycle_is_refused),
        T(test_reopen_switches_read_only_and_checks_users),
        T(test_reopen_of_a_driver_without_support_is_refused),
        T(test_probing_guesses_the_fallback_format_with_a_warning),
        T(test_probed_image_refuses_a_header_in_sector_0),
        T(test_backing_names_resolve_against_the_overlay_directory),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
