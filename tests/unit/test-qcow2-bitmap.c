/*
 * Persistent dirty bitmaps of the qcow2 driver through block/bitmaps.h:
 * enabled bitmaps track Strata's writes and are saved at close (not left
 * in use); add, remove, clear, enable, disable and merge give what
 * qemu-img bitmap and qemu-img info show, and qemu-img reads the bits
 * Strata writes (a qemu-img merge of them reads back the same); in-use
 * bitmaps can only be removed; qemu-img check stays clean throughout.
 */
#include "block/bitmaps.h"
#include "tests/unit/test-qcow2-util.h"

/* ---- helpers ----------------------------------------------------------------------------------
 */

static uint8_t *read_bits(BlockBackend *blk, const char *name, uint64_t *nbits, uint32_t *gran)
{
    GError *err = NULL;
    uint8_t *bits;
    if (!bdrv_bitmap_read(blk_bs(blk), name, &bits, nbits, gran, &err)) {
        fail_msg("read bitmap %s: %s", name, err->message);
    }
    return bits;
}

static bool bit(const uint8_t *bits, uint64_t i)
{
    return bits[i / 8] & (1u << (i % 8));
}

/* The indices of the set bits, as "0,1,16". */
static char *set_bits(const uint8_t *bits, uint64_t nbits)
{
    GString *s = g_string_new(NULL);
    for (uint64_t i = 0; i < nbits; i++) {
        if (bit(bits, i)) {
            g_string_append_printf(s, "%s%" G_GUINT64_FORMAT, s->len ? "," : "", i);
        }
    }
    return g_string_free(s, false);
}

static char *bitmap_bits(BlockBackend *blk, const char *name)
{
    uint64_t nbits;
    uint32_t gran;
    g_autofree uint8_t *bits = read_bits(blk, name, &nbits, &gran);
    return set_bits(bits, nbits);
}

static char *qemu_info(const char *img)
{
    char *out = NULL;
    assert_int_equal(run(&out, "qemu-img info --output=json '%s'", img), 0);
    return out;
}

static void ok(bool r, GError *err)
{
    if (!r) {
        fail_msg("%s", err ? err->message : "failed");
    }
}

/* ---- tests ------------------------------------------------------------------------------------
 */

static void test_enabled_bitmaps_track_writes_and_are_saved(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "t.qcow2");
    uint8_t buf[4096];
    skip_without_qemu_img();

    assert_int_equal(run(NULL, "qemu-img create -q -f qcow2 '%s' 4M", img), 0);
    assert_int_equal(run(NULL, "qemu-img bitmap --add -g 64k '%s' tracked", img), 0);
    assert_int_equal(run(NULL, "qemu-img bitmap --add --disable '%s' frozen", img), 0);
    qemu_io_apply(img, "qcow2", (QemuWrite[]){{"write -P 1 0 128k", 0, 131072, 1}}, 1,
                  (uint8_t[131072]){0});

    BlockBackend *blk = open_rw(img);
    g_autofree char *before = bitmap_bits(blk, "tracked");
    assert_string_equal(before, "0,1"); /* what qemu-io's write dirtied */
    memset(buf, 2, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 1 << 20, sizeof(buf), buf, 0), 0);
    assert_int_equal(blk_pwrite_zeroes(blk, (2 << 20) + 65536, 65536, 0), 0);
    assert_int_equal(blk_pdiscard(blk, 3 << 20, 65536), 0);
    /* Listed while tracked: not in use (the in-use flag on disk is ours). */
    BdrvBitmapInfo *list;
    int n;
    GError *err = NULL;
    ok(bdrv_bitmap_list(blk_bs(blk), &list, &n, &err), err);
    assert_int_equal(n, 2);
    assert_false(list[0].in_use);
    assert_true(list[0].enabled);
    assert_false(list[1].enabled);
    bdrv_bitmap_list_free(list, n);
    blk_unref(blk);

    g_autofree char *info = qemu_info(img);
    assert_null(strstr(info, "in-use"));
    assert_qemu_img_check_clean(img);
    blk = open_rw(img);
    g_autofree char *after = bitmap_bits(blk, "tracked");
    assert_string_equal(after, "0,1,16,33,48");
    g_autofree char *frozen = bitmap_bits(blk, "frozen");
    assert_string_equal(frozen, "");
    blk_unref(blk);

    /* qemu-img reads the bits Strata wrote: merged into the frozen bitmap, they are the same. */
    assert_int_equal(run(NULL, "qemu-img bitmap --merge tracked '%s' frozen", img), 0);
    blk = open_qcow2(img, 0, NULL, &err);
    g_autofree char *merged = bitmap_bits(blk, "frozen");
    assert_string_equal(merged, "0,1,16,33,48");
    blk_unref(blk);
    assert_qemu_img_check_clean(img);
}

static void test_bitmap_operations_as_qemu_img_shows_them(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "o.qcow2");
    g_autofree char *other = path_in(f, "other.qcow2");
    GError *err = NULL;
    uint8_t buf[512] = {7};

    assert_true(strata_create(img, 8 << 20, "cluster_size=64k", &err));
    assert_true(strata_create(other, 8 << 20, "cluster_size=4k", &err));
    BlockBackend *blk = open_rw(img);
    BlockDriverState *bs = blk_bs(blk);
    ok(bdrv_bitmap_add(bs, "b1", 0, true, &err), err);
    ok(bdrv_bitmap_add(bs, "b2", 4096, false, &err), err);
    assert_false(bdrv_bitmap_add(bs, "b1", 0, true, &err)); /* exists */
    g_clear_error(&err);
    assert_false(bdrv_bitmap_add(bs, "b3", 1000, true, &err)); /* not a power of two */
    g_clear_error(&err);
    assert_int_equal(blk_pwrite(blk, 70000, sizeof(buf), buf, 0), 0);
    g_autofree char *b1 = bitmap_bits(blk, "b1");
    assert_string_equal(b1, "1");
    g_autofree char *b2 = bitmap_bits(blk, "b2");
    assert_string_equal(b2, "");
    blk_unref(blk);

    if (have_qemu_img) {
        g_autofree char *info = qemu_info(img);
        assert_non_null(strstr(info, "\"b1\""));
        assert_non_null(strstr(info, "\"granularity\": 65536"));
        assert_non_null(strstr(info, "\"granularity\": 4096"));
        assert_non_null(strstr(info, "\"auto\""));
        assert_qemu_img_check_clean(img);
    }

    /* Another image's bitmap, 4k granularity, merged into b1 (64k). */
    BlockBackend *ob = open_rw(other);
    ok(bdrv_bitmap_add(blk_bs(ob), "src", 4096, true, &err), err);
    assert_int_equal(blk_pwrite(ob, 5 << 20, 512, buf, 0), 0);
    assert_int_equal(blk_pwrite(ob, 4096 * 3, 512, buf, 0), 0);
    blk_unref(ob);
    ob = open_qcow2(other, 0, NULL, &err);
    blk = open_rw(img);
    bs = blk_bs(blk);
    ok(bdrv_bitmap_merge(bs, "b1", blk_bs(ob), "src", &err), err);
    g_autofree char *m = bitmap_bits(blk, "b1");
    assert_string_equal(m, "0,1,80");
    ok(bdrv_bitmap_merge(bs, "b2", bs, "b1", &err), err); /* 64k bits onto 4k bits */
    g_autofree char *m2 = bitmap_bits(blk, "b2");
    g_autofree char *want =
        g_strdup("0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,"
                 "24,25,26,27,28,29,30,31,1280,1281,1282,1283,1284,1285,1286,"
                 "1287,1288,1289,1290,1291,1292,1293,1294,1295");
    assert_string_equal(m2, want);
    ok(bdrv_bitmap_disable(bs, "b1", &err), err);
    ok(bdrv_bitmap_enable(bs, "b2", &err), err);
    ok(bdrv_bitmap_clear(bs, "b1", &err), err);
    g_autofree char *cleared = bitmap_bits(blk, "b1");
    assert_string_equal(cleared, "");
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), 0); /* b1 disabled: stays clear */
    blk_unref(blk);
    blk_unref(ob);

    blk = open_rw(img);
    g_autofree char *still = bitmap_bits(blk, "b1");
    assert_string_equal(still, "");
    ok(bdrv_bitmap_remove(blk_bs(blk), "b2", &err), err);
    assert_false(bdrv_bitmap_remove(blk_bs(blk), "b2", &err));
    g_clear_error(&err);
    ok(bdrv_bitmap_remove(blk_bs(blk), "b1", &err), err);
    assert_int_equal(qcow2_state(blk)->nb_bitmaps, 0);
    blk_unref(blk);
    if (have_qemu_img) {
        g_autofree char *info = qemu_info(img);
        assert_null(strstr(info, "bitmaps"));
        assert_qemu_img_check_clean(img);
    }
}

static void test_in_use_bitmaps_can_only_be_removed(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "u.qcow2");
    GError *err = NULL;
    skip_without_qemu_img();

    assert_int_equal(run(NULL, "qemu-img create -q -f qcow2 '%s' 4M", img), 0);
    assert_int_equal(run(NULL, "qemu-img bitmap --add '%s' crashed", img), 0);
    /* qemu-io ends without saving: the enabled bitmap stays in use. */
    run(NULL, "qemu-io -c 'write 0 64k' -c abort '%s' >/dev/null 2>&1", img);
    g_autofree char *info = qemu_info(img);
    assert_non_null(strstr(info, "in-use"));

    BlockBackend *blk = open_rw(img);
    BlockDriverState *bs = blk_bs(blk);
    assert_false(bdrv_bitmap_clear(bs, "crashed", &err));
    g_clear_error(&err);
    assert_false(bdrv_bitmap_enable(bs, "crashed", &err));
    g_clear_error(&err);
    uint8_t *bits;
    uint64_t nbits;
    uint32_t gran;
    assert_false(bdrv_bitmap_read(bs, "crashed", &bits, &nbits, &gran, &err));
    g_clear_error(&err);
    ok(bdrv_bitmap_remove(bs, "crashed", &err), err);
    blk_unref(blk);
    assert_qemu_img_check_clean(img);
}

static void test_bitmaps_need_v3_and_pin_the_size(void **state)
{
    Fixture *f = *state;
    g_autofree char *v2 = path_in(f, "v2.qcow2");
    g_autofree char *v3 = path_in(f, "v3.qcow2");
    GError *err = NULL;

    assert_true(strata_create(v2, 1 << 20, "compat=0.10", &err));
    BlockBackend *blk = open_rw(v2);
    assert_false(bdrv_bitmap_add(blk_bs(blk), "x", 0, true, &err));
    g_clear_error(&err);
    blk_unref(blk);

    assert_true(strata_create(v3, 1 << 20, NULL, &err));
    blk = open_rw(v3);
    ok(bdrv_bitmap_add(blk_bs(blk), "x", 0, true, &err), err);
    assert_true(blk_truncate(blk, 2 << 20, true, PREALLOC_MODE_OFF, 0, &err) < 0);
    g_clear_error(&err);
    blk_unref(blk);
}

int main(void)
{
    qcow2_test_init();
    const struct CMUnitTest tests[] = {
        QCOW2_TEST(test_enabled_bitmaps_track_writes_and_are_saved),
        QCOW2_TEST(test_bitmap_operations_as_qemu_img_shows_them),
        QCOW2_TEST(test_in_use_bitmaps_can_only_be_removed),
        QCOW2_TEST(test_bitmaps_need_v3_and_pin_the_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
