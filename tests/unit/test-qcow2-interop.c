/*
 * Interoperability tests of the qcow2 driver with images made by Debian's
 * qemu-img and qemu-io: every cluster size, compat level, refcount width
 * and feature qemu-img offers; backing chains of mixed cluster sizes;
 * compressed clusters; internal snapshots; persistent bitmaps; external
 * data files.  Whatever Strata writes must keep `qemu-img check` clean and
 * read back the same in qemu.  Every test skips without qemu-img.
 */
#include "tests/unit/test-qcow2-util.h"

/* ---- images made by qemu-img and qemu-io ------------------------------------------------ */

static const QemuWrite qemu_writes[] = {
    {"write -P 0x11 0 64k", 0, 65536, 0x11},
    {"write -P 0x22 102400 5000", 102400, 5000, 0x22},
    {"write -P 0x33 1M 300k", 1 << 20, 300 << 10, 0x33},
    {"write -z 1100k 64k", 1100 << 10, 64 << 10, -1},
    {"write -P 0x44 2097152 1536", 2 << 20, 1536, 0x44},
    {"write -P 0x55 4193792 512", (4 << 20) - 512, 512, 0x55},
};

static const char *const qemu_variants[] = {
    "cluster_size=512,compat=0.10",
    "cluster_size=4k",
    "cluster_size=64k,compat=0.10",
    "cluster_size=2M",
    "refcount_bits=1,cluster_size=4k",
    "refcount_bits=2",
    "refcount_bits=4",
    "refcount_bits=8",
    "refcount_bits=32",
    "refcount_bits=64,cluster_size=1k",
    "lazy_refcounts=on",
    "extended_l2=on",
    "extended_l2=on,cluster_size=2M",
    "compression_type=zstd,cluster_size=16k",
};

static void test_images_made_by_qemu_read_and_write_correctly(void **state)
{
    Fixture *f = *state;
    uint64_t size = 4 << 20;
    skip_without_qemu_img();
    for (size_t i = 0; i < G_N_ELEMENTS(qemu_variants); i++) {
        g_autofree char *img = path_in(f, "q.qcow2");
        g_autofree char *raw = path_in(f, "q.raw");
        uint8_t *model = g_malloc0(size);
        assert_int_equal(
            run(NULL, "qemu-img create -q -f qcow2 -o '%s' '%s' 4M", qemu_variants[i], img), 0);
        qemu_io_apply(img, "qcow2", qemu_writes, G_N_ELEMENTS(qemu_writes), model);

        BlockBackend *blk = open_rw(img);
        assert_reads_as(blk, model, size);
        Workload w = {
            .rand = g_rand_new_with_seed(100 + i), .model = model, .size = size, .unit = 4096};
        run_workload(&w, blk, 60);
        g_rand_free(w.rand);
        blk_unref(blk);

        write_file(raw, model, size);
        assert_qemu_img_check_clean(img);
        assert_qemu_img_compare_equal(img, "qcow2", raw, "raw");
        g_free(model);
    }
}

/* ---- backing chains ------------------------------------------------------------------------ */

static void test_three_deep_backing_chain_reads_and_copies_on_write(void **state)
{
    Fixture *f = *state;
    skip_without_qemu_img();
    g_autofree char *base = path_in(f, "base.qcow2");
    g_autofree char *mid = path_in(f, "mid.qcow2");
    g_autofree char *top = path_in(f, "top.qcow2");
    g_autofree char *raw = path_in(f, "top.raw");
    uint64_t size = 4 << 20;
    uint8_t *model = g_malloc0(size);

    /* Mixed cluster sizes, and a base shorter than the overlays. */
    assert_int_equal(run(NULL, "qemu-img create -q -f qcow2 -o cluster_size=4k '%s' 3M", base), 0);
    assert_int_equal(run(NULL,
                         "qemu-img create -q -f qcow2 -o cluster_size=64k -b base.qcow2 -F qcow2 "
                         "'%s' 4M",
                         mid),
                     0);
    assert_int_equal(run(NULL,
                         "qemu-img create -q -f qcow2 -o cluster_size=16k,compat=0.10 "
                         "-b mid.qcow2 -F qcow2 '%s' 4M",
                         top),
                     0);
    static const QemuWrite base_w[] = {
        {"write -P 0xb1 0 3M", 0, 3 << 20, 0xb1},
    };
    static const QemuWrite mid_w[] = {
        {"write -P 0x91 4096 8192", 4096, 8192, 0x91},
        {"write -P 0x92 1M 100k", 1 << 20, 100 << 10, 0x92},
        {"write -z 2M 64k", 2 << 20, 64 << 10, -1},
        {"write -P 0x93 3200k 10k", 3200 << 10, 10 << 10, 0x93},
    };
    static const QemuWrite top_w[] = {
        {"write -P 0x71 6000 3000", 6000, 3000, 0x71},
        {"write -P 0x72 1060k 16k", 1060 << 10, 16 << 10, 0x72},
    };
    qemu_io_apply(base, "qcow2", base_w, G_N_ELEMENTS(base_w), model);
    qemu_io_apply(mid, "qcow2", mid_w, G_N_ELEMENTS(mid_w), model);
    g_autofree uint8_t *below = g_memdup2(model, size);
    qemu_io_apply(top, "qcow2", top_w, G_N_ELEMENTS(top_w), model);
    g_autofree char *base_before = NULL, *mid_before = NULL;
    assert_int_equal(run(&base_before, "md5sum < '%s'", base), 0);
    assert_int_equal(run(&mid_before, "md5sum < '%s'", mid), 0);

    BlockBackend *blk = open_rw(top);
    assert_non_null(blk_bs(blk)->backing);
    assert_reads_as(blk, model, size);
    /* Partial-cluster writes everywhere: the rest of each cluster comes from below. */
    Workload w = {.rand = g_rand_new_with_seed(77),
                  .model = model,
                  .size = size,
                  .unit = 3000,
                  .below = below};
    run_workload(&w, blk, 100);
    /* Whole clusters too: discards that let the backing chain show through again. */
    w.unit = 16384;
    run_workload(&w, blk, 100);
    assert_true(w.discards > 0);
    g_rand_free(w.rand);
    blk_unref(blk);

    write_file(raw, model, size);
    assert_qemu_img_check_clean(top);
    assert_qemu_img_compare_equal(top, "qcow2", raw, "raw");
    g_autofree char *base_after = NULL, *mid_after = NULL;
    assert_int_equal(run(&base_after, "md5sum < '%s'", base), 0);
    assert_int_equal(run(&mid_after, "md5sum < '%s'", mid), 0);
    assert_string_equal(base_before, base_after);
    assert_string_equal(mid_before, mid_after);
    g_free(model);
}

static void test_strata_overlay_on_strata_base(void **state)
{
    Fixture *f = *state;
    g_autofree char *base = path_in(f, "b.qcow2");
    g_autofree char *top = path_in(f, "t.qcow2");
    uint64_t size = 1 << 20;
    uint8_t *model = g_malloc0(size);
    GError *err = NULL;

    assert_true(strata_create(base, size, "cluster_size=4k", &err));
    BlockBackend *blk = open_rw(base);
    for (uint64_t i = 0; i < size; i++) {
        model[i] = (uint8_t)(i * 31 + 5);
    }
    assert_int_equal(blk_pwrite(blk, 0, size, model, 0), 0);
    blk_unref(blk);

    assert_true(
        strata_create(top, 0, "backing_file=b.qcow2,backing_fmt=qcow2,cluster_size=64k", &err));
    blk = open_rw(top);
    assert_int_equal(blk_getlength(blk), size);
    assert_reads_as(blk, model, size);
    uint8_t buf[100];
    memset(buf, 0xee, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 70000, sizeof(buf), buf, 0), 0);
    memcpy(model + 70000, buf, sizeof(buf));
    assert_reads_as(blk, model, size);

    /* Block status: the overlay holds one cluster, the rest comes from below. */
    int64_t pnum;
    assert_int_equal(bdrv_is_allocated_above(blk_bs(blk), NULL, false, 65536, 65536, &pnum), 1);
    assert_int_equal(pnum, 65536);
    assert_int_equal(blk_block_status(blk, 0, 65536, &pnum, NULL, NULL) & BDRV_BLOCK_DATA,
                     BDRV_BLOCK_DATA);
    blk_unref(blk);
    if (have_qemu_img) {
        g_autofree char *raw = path_in(f, "t.raw");
        write_file(raw, model, size);
        assert_qemu_img_check_clean(top);
        assert_qemu_img_compare_equal(top, "qcow2", raw, "raw");
        g_autofree char *out = NULL;
        assert_int_equal(run(&out, "qemu-img info '%s'", top), 0);
        assert_non_null(strstr(out, "backing file: b.qcow2"));
        assert_non_null(strstr(out, "backing file format: qcow2"));
    }
    g_free(model);
}

/* ---- compressed clusters ----------------------------------------------------------------- */

/* A raw file of @size bytes with compressible, position-dependent content. */
static uint8_t *make_raw(const char *path, uint64_t size)
{
    uint8_t *model = g_malloc(size);
    for (uint64_t i = 0; i < size; i++) {
        model[i] = (uint8_t)((i / 777) * 13 + (i % 5 == 0 ? i / 4096 : 0));
    }
    memset(model + size / 2, 0, 100000); /* some clusters all zero */
    write_file(path, model, size);
    return model;
}

static void test_compressed_clusters_read_and_rewrite(void **state)
{
    Fixture *f = *state;
    static const char *const variants[] = {
        "cluster_size=64k",
        "compression_type=zstd,cluster_size=4k",
        "compat=0.10,cluster_size=2M",
        "extended_l2=on,compression_type=zstd",
    };
    uint64_t size = 4 << 20;
    skip_without_qemu_img();
    g_autofree char *src = path_in(f, "src.raw");
    g_autofree char *img = path_in(f, "c.qcow2");
    g_autofree char *raw = path_in(f, "c.raw");

    g_autofree uint8_t *source = make_raw(src, size);
    for (size_t i = 0; i < G_N_ELEMENTS(variants); i++) {
        uint8_t *model = g_memdup2(source, size);
        assert_int_equal(run(NULL, "qemu-img convert -c -f raw -O qcow2 -o '%s' '%s' '%s'",
                             variants[i], src, img),
                         0);
        BlockBackend *blk = open_rw(img);
        assert_reads_as(blk, model, size);
        int64_t pnum;
        int st = blk_block_status(blk, 0, size, &pnum, NULL, NULL);
        assert_true((st & BDRV_BLOCK_DATA) && !(st & BDRV_BLOCK_OFFSET_VALID));
        /* Partial writes copy the rest of the compressed cluster; discards free them. */
        Workload w = {
            .rand = g_rand_new_with_seed(300 + i), .model = model, .size = size, .unit = 5000};
        run_workload(&w, blk, 80);
        g_rand_free(w.rand);
        blk_unref(blk);
        write_file(raw, model, size);
        assert_qemu_img_check_clean(img);
        assert_qemu_img_compare_equal(img, "qcow2", raw, "raw");
        g_free(model);
    }
}

/* ---- internal snapshots ---------------------------------------------------------------------- */

static void test_internal_snapshots_stay_intact_while_writing(void **state)
{
    Fixture *f = *state;
    uint64_t size = 4 << 20;
    skip_without_qemu_img();
    g_autofree char *img = path_in(f, "s.qcow2");
    g_autofree char *raw = path_in(f, "s.raw");
    g_autofree char *snap1 = path_in(f, "s1.raw");
    g_autofree char *snap_now = path_in(f, "s1-now.raw");
    uint8_t *model = g_malloc0(size);

    assert_int_equal(run(NULL, "qemu-img create -q -f qcow2 -o cluster_size=16k '%s' 4M", img), 0);
    static const QemuWrite before[] = {
        {"write -P 0x61 0 1M", 0, 1 << 20, 0x61},
        {"write -P 0x62 3M 64k", 3 << 20, 64 << 10, 0x62},
    };
    qemu_io_apply(img, "qcow2", before, G_N_ELEMENTS(before), model);
    assert_int_equal(run(NULL, "qemu-img snapshot -c s1 '%s'", img), 0);
    write_file(snap1, model, size);

    /* Every cluster and L2 table is shared with s1 now: each write must copy first. */
    BlockBackend *blk = open_rw(img);
    assert_int_equal(qcow2_state(blk)->nb_snapshots, 1);
    assert_reads_as(blk, model, size);
    Workload w = {.rand = g_rand_new_with_seed(500), .model = model, .size = size, .unit = 16384};
    run_workload(&w, blk, 120);
    g_rand_free(w.rand);
    /* Shrinking would drop clusters the snapshot needs for its own size: refused. */
    GError *err = NULL;
    assert_true(blk_truncate(blk, 1 << 20, true, PREALLOC_MODE_OFF, 0, &err) < 0);
    g_clear_error(&err);
    blk_unref(blk);

    write_file(raw, model, size);
    assert_qemu_img_check_clean(img);
    assert_qemu_img_compare_equal(img, "qcow2", raw, "raw");
    assert_int_equal(
        run(NULL, "qemu-img convert -l snapshot.name=s1 -O raw '%s' '%s'", img, snap_now), 0);
    assert_int_equal(run(NULL, "cmp '%s' '%s'", snap1, snap_now), 0);
    g_free(model);
}

/* ---- dirty bitmaps ------------------------------------------------------------------------------
 */

static void test_persistent_bitmaps_are_kept_and_saved(void **state)
{
    Fixture *f = *state;
    skip_without_qemu_img();
    g_autofree char *img = path_in(f, "bm.qcow2");
    g_autofree char *out = NULL;
    uint8_t buf[4096];

    assert_int_equal(run(NULL, "qemu-img create -q -f qcow2 '%s' 4M", img), 0);
    assert_int_equal(run(NULL, "qemu-img bitmap --add '%s' tracked", img), 0);
    assert_int_equal(run(NULL, "qemu-img bitmap --add --disable '%s' frozen", img), 0);
    qemu_io_apply(img, "qcow2", (QemuWrite[]){{"write -P 1 0 128k", 0, 131072, 1}}, 1,
                  (uint8_t[131072]){0});

    BlockBackend *blk = open_rw(img);
    assert_int_equal(qcow2_state(blk)->nb_bitmaps, 2);
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), 0);
    memset(buf, 2, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 1 << 20, sizeof(buf), buf, 0), 0);
    blk_unref(blk);

    assert_qemu_img_check_clean(img);
    assert_int_equal(run(&out, "qemu-img info --output=json '%s'", img), 0);
    /*
     * The enabled bitmap tracked the write and was saved at close, so it is
     * not in use; the disabled one is as it was (test-qcow2-bitmap.c checks
     * the bits).
     */
    assert_non_null(strstr(out, "\"tracked\""));
    assert_non_null(strstr(out, "\"frozen\""));
    assert_null(strstr(out, "in-use"));
}

/* ---- external data files -----------------------------------------------------------------------
 */

static void test_external_data_files(void **state)
{
    Fixture *f = *state;
    uint64_t size = 2 << 20;
    skip_without_qemu_img();
    for (int rawflag = 0; rawflag < 2; rawflag++) {
        g_autofree char *img = path_in(f, "d.qcow2");
        g_autofree char *data = path_in(f, "d.data");
        g_autofree char *raw = path_in(f, "d.raw");
        uint8_t *model = g_malloc0(size);
        assert_int_equal(run(NULL,
                             "cd '%s' && qemu-img create -q -f qcow2 -o "
                             "data_file=d.data,data_file_raw=%s d.qcow2 2M",
                             f->dir, rawflag ? "on" : "off"),
                         0);
        static const QemuWrite ws[] = {
            {"write -P 0xd1 64k 100k", 64 << 10, 100 << 10, 0xd1},
            {"write -P 0xd2 1M 4k", 1 << 20, 4096, 0xd2},
        };
        qemu_io_apply(img, "qcow2", ws, G_N_ELEMENTS(ws), model);

        BlockBackend *blk = open_rw(img);
        assert_true(qcow2_state(blk)->has_data_file);
        assert_reads_as(blk, model, size);
        Workload w = {.rand = g_rand_new_with_seed(700 + rawflag),
                      .model = model,
                      .size = size,
                      .unit = 65536};
        run_workload(&w, blk, 80);
        g_rand_free(w.rand);
        blk_unref(blk);

        write_file(raw, model, size);
        assert_qemu_img_check_clean(img);
        assert_qemu_img_compare_equal(img, "qcow2", raw, "raw");
        if (rawflag) {
            /* A raw data file is the disk by itself. */
            assert_int_equal(run(NULL, "cmp '%s' '%s'", data, raw), 0);
        }
        g_free(model);
    }
}

/* ---- crashed qemu -----------------------------------------------------------------------------
 */

static void test_image_left_dirty_by_a_crashed_qemu_is_repaired(void **state)
{
    Fixture *f = *state;
    uint64_t size = 2 << 20;
    skip_without_qemu_img();
    g_autofree char *img = path_in(f, "crash.qcow2");
    g_autofree char *raw = path_in(f, "crash.raw");
    g_autofree char *out = NULL;
    uint8_t *model = g_malloc0(size);

    assert_int_equal(
        run(NULL, "qemu-img create -q -f qcow2 -o lazy_refcounts=on,cluster_size=4k '%s' 2M", img),
        0);
    /* qemu-io's "abort" ends the process mid-flight: lazy refcounts leave the image dirty. */
    run(NULL,
        "qemu-io -c 'write -P 0xab 0 300k' -c 'write -P 0xcd 1M 64k' -c flush -c abort "
        "'%s' >/dev/null 2>&1",
        img);
    memset(model, 0xab, 300 << 10);
    memset(model + (1 << 20), 0xcd, 64 << 10);
    assert_int_equal(run(&out, "qemu-img info '%s'", img), 0);
    assert_non_null(strstr(out, "cleanly shut down: no"));
    assert_int_not_equal(run(NULL, "qemu-img check '%s'", img), 0);

    BlockBackend *blk = open_rw(img);
    assert_reads_as(blk, model, size);
    memset(model + 4096, 0xef, 10000);
    assert_int_equal(blk_pwrite(blk, 4096, 10000, model + 4096, 0), 0);
    blk_unref(blk);
    write_file(raw, model, size);
    assert_qemu_img_check_clean(img);
    assert_qemu_img_compare_equal(img, "qcow2", raw, "raw");
    g_free(model);
}

/* ---- main -------------------------------------------------------------------------------------
 */

int main(void)
{
    qcow2_test_init();
    const struct CMUnitTest tests[] = {
        QCOW2_TEST(test_images_made_by_qemu_read_and_write_correctly),
        QCOW2_TEST(test_three_deep_backing_chain_reads_and_copies_on_write),
        QCOW2_TEST(test_strata_overlay_on_strata_base),
        QCOW2_TEST(test_compressed_clusters_read_and_rewrite),
        QCOW2_TEST(test_internal_snapshots_stay_intact_while_writing),
        QCOW2_TEST(test_persistent_bitmaps_are_kept_and_saved),
        QCOW2_TEST(test_external_data_files),
        QCOW2_TEST(test_image_left_dirty_by_a_crashed_qemu_is_repaired),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
