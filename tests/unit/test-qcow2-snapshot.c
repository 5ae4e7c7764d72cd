/*
 * Internal snapshots of the qcow2 driver through block/snapshot.h: create,
 * list, apply (revert) and delete, checked against qemu-img (check,
 * snapshot -l / -a, convert -l) both ways: snapshots Strata makes are
 * applied by qemu-img, snapshots qemu-img makes are applied and deleted
 * by Strata.  Also the snapshot table checks at open and that unknown
 * extra data survives a rewrite of the table.
 */
#include "block/snapshot.h"
#include "tests/unit/test-qcow2-util.h"

/* ---- helpers ----------------------------------------------------------------------------------
 */

static void snap_create(BlockBackend *blk, const char *name)
{
    GError *err = NULL;
    BdrvSnapshotInfo sn = {.name = (char *)name, .icount = 0};
    if (!bdrv_snapshot_create(blk_bs(blk), &sn, NULL, &err)) {
        fail_msg("snapshot create %s: %s", name, err->message);
    }
}

static void snap_goto(BlockBackend *blk, const char *name)
{
    GError *err = NULL;
    if (!bdrv_snapshot_goto(blk_bs(blk), name, &err)) {
        fail_msg("snapshot goto %s: %s", name, err->message);
    }
}

static void snap_delete(BlockBackend *blk, const char *name)
{
    GError *err = NULL;
    if (!bdrv_snapshot_delete(blk_bs(blk), name, &err)) {
        fail_msg("snapshot delete %s: %s", name, err->message);
    }
}

static void fill(uint8_t *model, uint64_t off, uint64_t len, uint8_t pat)
{
    memset(model + off, pat, len);
}

static void write_pat(BlockBackend *blk, uint8_t *model, uint64_t off, uint64_t len, uint8_t pat)
{
    fill(model, off, len, pat);
    assert_int_equal(blk_pwrite(blk, off, len, model + off, 0), 0);
}

/* qemu-img's view of snapshot @name (or the active disk when NULL) equals @model. */
static void assert_qemu_sees(Fixture *f, const char *img, const char *name, const uint8_t *model,
                             uint64_t size)
{
    g_autofree char *raw = path_in(f, "model.raw");
    g_autofree char *out = path_in(f, "out.raw");
    write_file(raw, model, size);
    if (name) {
        g_autofree char *msg = NULL;
        if (run(&msg, "qemu-img convert -l snapshot.name=%s -O raw '%s' '%s'", name, img, out)) {
            fail_msg("convert -l %s: %s", name, msg);
        }
        /* qemu-img writes the current disk size: compare the snapshot's part. */
        assert_int_equal(run(NULL, "cmp -n %" G_GUINT64_FORMAT " '%s' '%s'", size, raw, out), 0);
    } else {
        assert_qemu_img_compare_equal(img, "qcow2", raw, "raw");
    }
}

/* ---- tests ------------------------------------------------------------------------------------
 */

static void test_strata_snapshots_are_listed_and_applied_by_qemu_img(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "s.qcow2");
    uint64_t size = 4 << 20;
    GError *err = NULL;
    g_autofree uint8_t *a = g_malloc0(size), *b = NULL, *c = NULL;
    skip_without_qemu_img();

    assert_true(strata_create(img, size, "cluster_size=16k", &err));
    BlockBackend *blk = open_rw(img);
    write_pat(blk, a, 0, 1 << 20, 0x11);
    write_pat(blk, a, 3 << 20, 100000, 0x12);
    snap_create(blk, "s1");
    b = g_memdup2(a, size);
    write_pat(blk, b, 5000, 70000, 0x21); /* partial clusters: copied from the shared ones */
    write_pat(blk, b, 2 << 20, 1 << 20, 0x22);
    snap_create(blk, "s2");
    c = g_memdup2(b, size);
    Workload w = {.rand = g_rand_new_with_seed(9), .model = c, .size = size, .unit = 16384};
    run_workload(&w, blk, 80);
    g_rand_free(w.rand);

    BdrvSnapshotInfo *list;
    int n;
    assert_true(bdrv_snapshot_list(blk_bs(blk), &list, &n, &err));
    assert_int_equal(n, 2);
    assert_string_equal(list[0].id, "1");
    assert_string_equal(list[0].name, "s1");
    assert_string_equal(list[1].id, "2");
    assert_int_equal(list[1].disk_size, size);
    assert_true(list[1].date_sec > 0);
    bdrv_snapshot_list_free(list, n);
    blk_unref(blk);

    assert_qemu_img_check_clean(img);
    g_autofree char *out = NULL;
    assert_int_equal(run(&out, "qemu-img snapshot -l '%s'", img), 0);
    assert_non_null(strstr(out, "s1"));
    assert_non_null(strstr(out, "s2"));
    assert_qemu_sees(f, img, NULL, c, size);
    assert_qemu_sees(f, img, "s1", a, size);
    assert_qemu_sees(f, img, "s2", b, size);
    assert_int_equal(run(NULL, "qemu-img snapshot -a s1 '%s'", img), 0);
    assert_qemu_img_check_clean(img);
    assert_qemu_sees(f, img, NULL, a, size);
}

static void test_qemu_img_snapshots_are_applied_and_deleted_by_strata(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "q.qcow2");
    uint64_t size = 4 << 20;
    g_autofree uint8_t *a = g_malloc0(size), *b = NULL, *c = NULL;
    skip_without_qemu_img();

    assert_int_equal(run(NULL, "qemu-img create -q -f qcow2 -o cluster_size=64k '%s' 4M", img), 0);
    static const QemuWrite wa[] = {{"write -P 0x31 0 2M", 0, 2 << 20, 0x31}};
    static const QemuWrite wb[] = {{"write -P 0x32 1M 2M", 1 << 20, 2 << 20, 0x32},
                                   {"write -c -P 0x33 3M 64k", 3 << 20, 65536, 0x33}};
    static const QemuWrite wc[] = {{"write -P 0x34 100k 3000", 100 << 10, 3000, 0x34}};
    qemu_io_apply(img, "qcow2", wa, G_N_ELEMENTS(wa), a);
    assert_int_equal(run(NULL, "qemu-img snapshot -c q1 '%s'", img), 0);
    b = g_memdup2(a, size);
    qemu_io_apply(img, "qcow2", wb, G_N_ELEMENTS(wb), b);
    assert_int_equal(run(NULL, "qemu-img snapshot -c q2 '%s'", img), 0);
    c = g_memdup2(b, size);
    qemu_io_apply(img, "qcow2", wc, G_N_ELEMENTS(wc), c);

    BlockBackend *blk = open_rw(img);
    assert_reads_as(blk, c, size);
    snap_goto(blk, "q1");
    assert_reads_as(blk, a, size);
    /* Everything is shared with q1 now: writes copy first and leave q1 intact. */
    write_pat(blk, a, 60000, 10000, 0x41);
    snap_goto(blk, "2"); /* by ID */
    assert_reads_as(blk, b, size);
    snap_delete(blk, "q2");
    write_pat(blk, b, 3 << 20, 1000, 0x42); /* into the compressed cluster q2 had */
    assert_reads_as(blk, b, size);
    blk_unref(blk);

    assert_qemu_img_check_clean(img);
    g_autofree char *out = NULL;
    assert_int_equal(run(&out, "qemu-img snapshot -l '%s'", img), 0);
    assert_non_null(strstr(out, "q1"));
    assert_null(strstr(out, "q2"));
    assert_qemu_sees(f, img, NULL, b, size);
    g_autofree uint8_t *a0 = g_malloc0(size);
    fill(a0, 0, 2 << 20, 0x31);
    assert_qemu_sees(f, img, "q1", a0, size);
}

static void test_deleting_every_snapshot_makes_clusters_ours_again(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "d.qcow2");
    uint64_t size = 2 << 20;
    GError *err = NULL;
    g_autofree uint8_t *m = g_malloc0(size);

    assert_true(strata_create(img, size, "cluster_size=4k,refcount_bits=2", &err));
    BlockBackend *blk = open_rw(img);
    write_pat(blk, m, 0, size, 0x51);
    snap_create(blk, "a");
    snap_create(blk, "b"); /* refcount_bits=2: refcounts reach 3, the most there is */
    BDRVQcow2State *s = qcow2_state(blk);
    assert_false(s->l1_table[0] & QCOW2_OFLAG_COPIED);
    GError *e2 = NULL;
    BdrvSnapshotInfo sn = {.name = "c"};
    assert_false(bdrv_snapshot_create(blk_bs(blk), &sn, NULL, &e2)); /* refused, nothing changed */
    g_clear_error(&e2);
    snap_delete(blk, "b");
    snap_delete(blk, "a");
    assert_int_equal(s->nb_snapshots, 0);
    assert_true(s->l1_table[0] & QCOW2_OFLAG_COPIED);
    int64_t before = bdrv_getlength(blk_bs(blk)->file->bs);
    write_pat(blk, m, 0, size, 0x52); /* in place: nothing is shared */
    assert_int_equal(bdrv_getlength(blk_bs(blk)->file->bs), before);
    blk_unref(blk);
    if (have_qemu_img) {
        assert_qemu_img_check_clean(img);
        assert_qemu_sees(f, img, NULL, m, size);
    }
}

static void test_applying_a_snapshot_restores_its_disk_size(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "r.qcow2");
    uint64_t small = 1 << 20, big = 3 << 20;
    GError *err = NULL;
    g_autofree uint8_t *m = g_malloc0(big);

    assert_true(strata_create(img, small, "cluster_size=64k", &err));
    BlockBackend *blk = open_rw(img);
    write_pat(blk, m, 0, small, 0x61);
    snap_create(blk, "small");
    assert_int_equal(blk_truncate(blk, big, true, PREALLOC_MODE_OFF, 0, &err), 0);
    write_pat(blk, m, small - 4096, 2 << 20, 0x62);
    snap_create(blk, "big");
    snap_goto(blk, "small");
    assert_int_equal(blk_getlength(blk), small);
    g_autofree uint8_t *s0 = g_malloc0(small);
    fill(s0, 0, small, 0x61);
    assert_reads_as(blk, s0, small);
    snap_goto(blk, "big");
    assert_int_equal(blk_getlength(blk), big);
    assert_reads_as(blk, m, big);
    blk_unref(blk);
    if (have_qemu_img) {
        assert_qemu_img_check_clean(img);
        assert_qemu_sees(f, img, "small", s0, small);
    }
}

static void test_snapshot_errors(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "e.qcow2");
    GError *err = NULL;

    assert_true(strata_create(img, 1 << 20, NULL, &err));
    BlockBackend *blk = open_rw(img);
    snap_create(blk, "x");
    BdrvSnapshotInfo dup = {.id = "1", .name = "y"};
    assert_false(bdrv_snapshot_create(blk_bs(blk), &dup, NULL, &err));
    g_clear_error(&err);
    assert_false(bdrv_snapshot_goto(blk_bs(blk), "nope", &err));
    g_clear_error(&err);
    assert_false(bdrv_snapshot_delete(blk_bs(blk), "nope", &err));
    g_clear_error(&err);
    blk_unref(blk);

    blk = open_qcow2(img, 0, NULL, &err);
    assert_non_null(blk);
    assert_false(bdrv_snapshot_delete(blk_bs(blk), "x", &err)); /* read-only */
    g_clear_error(&err);
    blk_unref(blk);

    g_autofree char *raw = path_in(f, "e.raw");
    write_file(raw, (uint8_t[512]){0}, 512);
    GHashTable *o = opts_new();
    opts_set(o, "driver", "raw");
    blk = blk_new_open(raw, o, BDRV_O_RDWR, &err);
    assert_non_null(blk);
    assert_false(bdrv_can_snapshot(blk_bs(blk)));
    BdrvSnapshotInfo sn = {.name = "z"};
    assert_false(bdrv_snapshot_create(blk_bs(blk), &sn, NULL, &err));
    g_clear_error(&err);
    blk_unref(blk);
}

/* Patches @len bytes at @off of the image. */
static void patch(const char *img, uint64_t off, const void *data, size_t len)
{
    int fd = open(img, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, data, len, off), (ssize_t)len);
    close(fd);
}

static bool opens(const char *img)
{
    GError *err = NULL;
    BlockBackend *blk = open_qcow2(img, 0, NULL, &err);
    if (blk) {
        blk_unref(blk);
    }
    g_clear_error(&err);
    return blk != NULL;
}

static void test_snapshot_table_is_checked_at_open(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "t.qcow2");
    GError *err = NULL;
    uint8_t be[8];

    assert_true(strata_create(img, 1 << 20, "cluster_size=4k", &err));
    BlockBackend *blk = open_rw(img);
    snap_create(blk, "one");
    uint64_t table = qcow2_state(blk)->snapshots_offset;
    blk_unref(blk);
    assert_true(opens(img));

    /* Too many snapshots. */
    qcow2_st32(be, 65537);
    patch(img, QH_NB_SNAPSHOTS, be, 4);
    assert_false(opens(img));
    qcow2_st32(be, 1);
    patch(img, QH_NB_SNAPSHOTS, be, 4);
    /* Too much extra data. */
    qcow2_st32(be, 1025);
    patch(img, table + 36, be, 4);
    assert_false(opens(img));
    qcow2_st32(be, 24);
    patch(img, table + 36, be, 4);
    assert_true(opens(img));
    /* L1 table not aligned; then too small for the snapshot's disk size. */
    qcow2_st64(be, 4096 + 512);
    uint8_t l1off[8];
    int fd = open(img, O_RDONLY);
    assert_int_equal(pread(fd, l1off, 8, table), 8);
    close(fd);
    patch(img, table, be, 8);
    assert_false(opens(img));
    patch(img, table, l1off, 8);
    qcow2_st32(be, 0);
    patch(img, table + 8, be, 4);
    assert_false(opens(img));
}

static void test_unknown_extra_data_survives_a_table_rewrite(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "x.qcow2");
    GError *err = NULL;

    /* Build an entry with 8 bytes of extra data nobody knows, by hand. */
    assert_true(strata_create(img, 1 << 20, "cluster_size=4k", &err));
    BlockBackend *blk = open_rw(img);
    snap_create(blk, "a");
    BDRVQcow2State *s = qcow2_state(blk);
    uint64_t table = s->snapshots_offset;
    blk_unref(blk);
    uint8_t e[40 + 32 + 8] = {0};
    int fd = open(img, O_RDWR);
    assert_int_equal(pread(fd, e, 40 + 24 + 2, table), 40 + 24 + 2); /* id "1", name "a" */
    memmove(e + 40 + 32, e + 40 + 24, 2);
    memcpy(e + 40 + 24, "UNKNOWN!", 8);
    qcow2_st32(e + 36, 32);
    assert_int_equal(pwrite(fd, e, sizeof(e), table), (ssize_t)sizeof(e));
    close(fd);

    blk = open_rw(img);
    snap_create(blk, "b"); /* rewrites the table */
    blk_unref(blk);
    g_autofree char *contents = NULL;
    gsize len;
    assert_true(g_file_get_contents(img, &contents, &len, NULL));
    assert_non_null(memmem(contents, len, "UNKNOWN!", 8));
    if (have_qemu_img) {
        assert_qemu_img_check_clean(img);
        g_autofree char *out = NULL;
        assert_int_equal(run(&out, "qemu-img snapshot -l '%s'", img), 0);
        assert_non_null(strstr(out, " a "));
        assert_non_null(strstr(out, " b "));
    }
}

int main(void)
{
    qcow2_test_init();
    const struct CMUnitTest tests[] = {
        QCOW2_TEST(test_strata_snapshots_are_listed_and_applied_by_qemu_img),
        QCOW2_TEST(test_qemu_img_snapshots_are_applied_and_deleted_by_strata),
        QCOW2_TEST(test_deleting_every_snapshot_makes_clusters_ours_again),
        QCOW2_TEST(test_applying_a_snapshot_restores_its_disk_size),
        QCOW2_TEST(test_snapshot_errors),
        QCOW2_TEST(test_snapshot_table_is_checked_at_open),
        QCOW2_TEST(test_unknown_extra_data_survives_a_table_rewrite),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
