/*
 * Interoperability tests of the qcow2 driver with images made by Debian's
 * qemu-img and qemu-io: every cluster size, compat level, refcount width
 * and feature qemu-img offers; backing chains of mixed cluster sizes;
 * compressed clusters; internal snapshots; persistent bitmaps; external
 * data files.  Whatever Strata writes must keep `qemu-img check` clean and
 * read back the same in qemu.  The matrix tests sample the creation options
 * so that every value of every axis appears once at least, in both
 * directions (docs/design/testing.md, "qcow2 interop matrix").  Every test
 * skips without qemu-img.
 */
#include "block/bitmaps.h"
#include "block/snapshot.h"
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

/* ---- the option matrix, in both directions -------------------------------------------------- */

/*
 * One combination of creation options.  The table samples the cross
 * product so that every value of every axis appears at least once: cluster
 * sizes 512 to 2M, compat 0.10 and 1.1, every refcount width, extended L2,
 * lazy refcounts, each preallocation mode and both compression types.
 */
typedef struct MatrixVariant {
    uint64_t cluster_size;
    bool v2;
    int refcount_bits;
    bool extended_l2;
    bool lazy;
    bool zstd;
    const char *prealloc;
} MatrixVariant;

static const MatrixVariant matrix[] = {
    {512, true, 16, false, false, false, "off"},
    {4096, false, 1, false, false, false, "metadata"},
    {65536, false, 2, false, true, true, "off"},
    {2 << 20, false, 4, true, false, false, "falloc"},
    {4096, true, 16, false, false, false, "full"},
    {32768, false, 32, true, true, true, "off"},
    {1024, false, 64, false, false, false, "off"},
    {65536, false, 8, true, false, false, "metadata"},
    {512, false, 64, false, true, false, "falloc"},
    {2 << 20, true, 16, false, false, false, "off"},
    {16384, false, 16, true, false, true, "full"},
    {2 << 20, false, 1, false, false, true, "metadata"},
    {512, false, 2, false, true, false, "metadata"},
};

/* Small images keep the matrix quick; 2 MiB clusters get two of them. */
static uint64_t matrix_size(const MatrixVariant *v)
{
    return MAX(2 << 20, 2 * v->cluster_size);
}

static char *matrix_opts(const MatrixVariant *v)
{
    return g_strdup_printf("cluster_size=%" G_GUINT64_FORMAT ",compat=%s,refcount_bits=%d,"
                           "extended_l2=%s,lazy_refcounts=%s,compression_type=%s,preallocation=%s",
                           v->cluster_size, v->v2 ? "0.10" : "1.1", v->refcount_bits,
                           v->extended_l2 ? "on" : "off", v->lazy ? "on" : "off",
                           v->zstd ? "zstd" : "zlib", v->prealloc);
}

/* Runs a command that must succeed; fails the test with its output otherwise. */
static void run_ok(const char *fmt, ...) G_GNUC_PRINTF(1, 2);
static void run_ok(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *cmd = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    g_autofree char *out = NULL;
    int code = run(&out, "%s", cmd);
    if (code != 0) {
        fail_msg("%s: exit %d\n%s", cmd, code, out);
    }
}

/* Offsets and lengths are drawn around this: partial clusters, and subclusters with extended L2. */
static uint64_t matrix_unit(uint64_t cluster_size)
{
    return CLAMP(cluster_size, 2048, 512 << 10);
}

/* A random range: any bytes, or whole units around cluster boundaries. */
static void random_range(GRand *r, uint64_t size, uint64_t unit, uint64_t *off, uint64_t *len)
{
    if (g_rand_boolean(r)) {
        *off = g_rand_int_range(r, 0, (gint32)size);
        *len = g_rand_int_range(r, 1, (gint32)MIN(size - *off, 3 * unit) + 1);
    } else {
        *off = g_rand_int_range(r, 0, (gint32)(size / unit)) * unit;
        /* Not inside MIN(), which would draw twice. */
        uint64_t units = g_rand_int_range(r, 1, 5);
        *len = MIN(units * unit, size - *off);
    }
}

/* One or two whole clusters for a compressed write. */
static void random_clusters(GRand *r, uint64_t size, uint64_t cs, uint64_t *off, uint64_t *len)
{
    uint64_t n = size / cs;
    uint64_t k = g_rand_int_range(r, 0, (gint32)n);
    *off = k * cs;
    *len = (k + 1 < n && g_rand_boolean(r)) ? 2 * cs : cs;
}

/*
 * Applies @ops seeded random qemu-io commands to @img: pattern writes of
 * partial and whole clusters, write -z with and without -u, discards, and
 * compressed writes (each after a discard of its clusters, since qemu
 * compresses only into clusters without a host cluster).  What the image
 * then holds is asked of qemu-img convert, not modelled here.
 */
static void qemu_io_random(const char *img, GRand *r, uint64_t size, uint64_t cs, int ops)
{
    GString *cmd = g_string_new(NULL);
    g_autofree char *dir = g_path_get_dirname(img);
    uint64_t unit = matrix_unit(cs);
    g_string_append_printf(cmd, "cd '%s' && qemu-io -f qcow2", dir);
    for (int i = 0; i < ops; i++) {
        uint64_t off, len;
        int kind = g_rand_int_range(r, 0, 10);
        unsigned pat = g_rand_int_range(r, 1, 256);
        if (kind >= 8) {
            random_clusters(r, size, cs, &off, &len);
            g_string_append_printf(cmd,
                                   " -c 'discard %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT
                                   "' -c 'write -c -P %u %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT
                                   "'",
                                   off, len, pat, off, len);
            continue;
        }
        random_range(r, size, unit, &off, &len);
        const char *op = kind < 5    ? "write -P"
                         : kind == 5 ? "write -z"
                         : kind == 6 ? "write -z -u"
                                     : "discard";
        g_string_append_printf(cmd, " -c '%s", op);
        if (kind < 5) {
            g_string_append_printf(cmd, " %u", pat);
        }
        g_string_append_printf(cmd, " %" G_GUINT64_FORMAT " %" G_GUINT64_FORMAT "'", off, len);
    }
    g_string_append_printf(cmd, " '%s'", img);
    g_autofree char *out = NULL;
    int code = run(&out, "%s", cmd->str);
    /* qemu-io exits 0 even when a command fails: its messages say so. */
    if (code != 0 || strstr(out, "failed") || strstr(out, "error")) {
        fail_msg("%s\n%s", cmd->str, out);
    }
    g_string_free(cmd, true);
}

/* What qemu-img convert -O raw makes of @img (its whole backing chain included). */
static uint8_t *qemu_contents(const char *img, const char *snapshot, uint64_t size)
{
    g_autofree char *raw = g_strconcat(img, ".conv", NULL);
    g_autofree char *dir = g_path_get_dirname(img);
    g_autofree char *l = snapshot ? g_strdup_printf("-l '%s'", snapshot) : g_strdup("");
    g_autofree char *out = NULL;
    if (run(&out, "cd '%s' && qemu-img convert %s -O raw '%s' '%s'", dir, l, img, raw) != 0) {
        fail_msg("qemu-img convert %s: %s", img, out);
    }
    gchar *buf = NULL;
    gsize len = 0;
    assert_true(g_file_get_contents(raw, &buf, &len, NULL));
    assert_int_equal(len, size);
    g_unlink(raw);
    return (uint8_t *)buf;
}

/* Strata, opening @img read-only, reads exactly what qemu-img convert makes of it. */
static uint8_t *assert_strata_reads_as_qemu(const char *img, uint64_t size)
{
    uint8_t *expect = qemu_contents(img, NULL, size);
    GError *err = NULL;
    BlockBackend *blk = open_qcow2(img, 0, NULL, &err);
    if (!blk) {
        fail_msg("open %s: %s", img, err->message);
    }
    assert_int_equal(blk_getlength(blk), size);
    assert_reads_as(blk, expect, size);
    blk_unref(blk);
    return expect;
}

/*
 * Discards one or two whole clusters and writes them compressed, which
 * must then succeed (the clusters have no host cluster any more) and
 * really compress: compressed clusters have no plain host offset.
 */
static void compressed_step(Workload *w, BlockBackend *blk, uint64_t cs)
{
    uint64_t off, len;
    random_clusters(w->rand, w->size, cs, &off, &len);
    assert_int_equal(blk_pdiscard(blk, off, len), 0);
    uint8_t *buf = g_malloc(len);
    uint8_t pat = (uint8_t)g_rand_int(w->rand);
    memset(buf, pat, len);
    for (uint64_t i = 0; i < len; i += 512) {
        buf[i] = (uint8_t)(i >> 9) ^ pat;
    }
    assert_int_equal(blk_pwrite(blk, off, len, buf, BDRV_REQ_WRITE_COMPRESSED), 0);
    memcpy(w->model + off, buf, len);
    g_free(buf);
    int64_t pnum;
    int st = blk_block_status(blk, off, cs, &pnum, NULL, NULL);
    assert_true((st & BDRV_BLOCK_DATA) && !(st & BDRV_BLOCK_OFFSET_VALID));
}

/* The seeded Strata workload: writes, write-zeroes, discards, and 1 in 8 compressed. */
static void matrix_workload(Workload *w, BlockBackend *blk, uint64_t cs, int steps)
{
    for (int i = 0; i < steps; i++) {
        if (g_rand_int_range(w->rand, 0, 8) == 0) {
            compressed_step(w, blk, cs);
        } else {
            workload_step(w, blk);
        }
        if (i % 50 == 49) {
            assert_reads_as(blk, w->model, w->size);
        }
    }
    assert_reads_as(blk, w->model, w->size);
}

/* Strata runs the workload on @img; then qemu-img check is clean and compare agrees with @model. */
static void strata_writes_and_qemu_agrees(Fixture *f, const char *img, uint8_t *model,
                                          uint64_t size, const uint8_t *below, uint64_t cs,
                                          guint32 seed, int steps)
{
    g_autofree char *raw = path_in(f, "model.raw");
    BlockBackend *blk = open_rw(img);
    assert_reads_as(blk, model, size);
    Workload w = {.rand = g_rand_new_with_seed(seed),
                  .model = model,
                  .size = size,
                  .unit = matrix_unit(cs),
                  .below = below};
    matrix_workload(&w, blk, cs, steps);
    assert_true(w.writes > 0 && w.zeroes > 0 && w.discards > 0);
    g_rand_free(w.rand);
    blk_unref(blk);
    write_file(raw, model, size);
    assert_qemu_img_check_clean(img);
    assert_qemu_img_compare_equal(img, "qcow2", raw, "raw");
}

static void test_matrix_images_made_by_qemu_read_and_write_in_strata(void **state)
{
    Fixture *f = *state;
    skip_without_qemu_img();
    for (size_t i = 0; i < G_N_ELEMENTS(matrix); i++) {
        const MatrixVariant *v = &matrix[i];
        uint64_t size = matrix_size(v);
        g_autofree char *opts = matrix_opts(v);
        g_autofree char *img = path_in(f, "m.qcow2");
        print_message("qemu-img create -o %s\n", opts);
        run_ok("qemu-img create -q -f qcow2 -o '%s' '%s' %" G_GUINT64_FORMAT, opts, img, size);
        GRand *r = g_rand_new_with_seed(1000 + i);
        qemu_io_random(img, r, size, v->cluster_size, 30);
        g_rand_free(r);

        uint8_t *model = assert_strata_reads_as_qemu(img, size);
        strata_writes_and_qemu_agrees(f, img, model, size, NULL, v->cluster_size, 2000 + i, 50);
        g_free(model);
    }
}

/* The value after "@key": in one line of qemu-img map's JSON. */
static const char *json_field(const char *line, const char *key)
{
    g_autofree char *k = g_strdup_printf("\"%s\": ", key);
    const char *p = strstr(line, k);
    assert_non_null(p);
    return p + strlen(k);
}

/*
 * `qemu-img map --output=json` reduced to what two valid layouts share:
 * runs of depth / present / data.  Host offsets (where each tool put its
 * refcount blocks) and "zero" (holes in the file, up to the filesystem)
 * are left out, and neighbours that then look the same are merged.
 */
static char *map_summary(const char *img)
{
    g_autofree char *out = NULL;
    assert_int_equal(run(&out, "qemu-img map --output=json '%s'", img), 0);
    GString *s = g_string_new(NULL);
    uint64_t start = 0, end = 0;
    g_autofree char *kind = NULL;
    g_auto(GStrv) lines = g_strsplit(out, "\n", -1);
    for (char **l = lines; *l; l++) {
        if (!strstr(*l, "\"start\"")) {
            continue;
        }
        uint64_t st = g_ascii_strtoull(json_field(*l, "start"), NULL, 10);
        uint64_t len = g_ascii_strtoull(json_field(*l, "length"), NULL, 10);
        g_autofree char *k =
            g_strdup_printf("depth %d present %c data %c", atoi(json_field(*l, "depth")),
                            *json_field(*l, "present"), *json_field(*l, "data"));
        if (kind && st == end && !strcmp(k, kind)) {
            end += len;
            continue;
        }
        if (kind) {
            g_string_append_printf(s, "%" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT " %s\n", start,
                                   end - start, kind);
        }
        g_free(kind);
        kind = g_steal_pointer(&k);
        start = st;
        end = st + len;
    }
    if (kind) {
        g_string_append_printf(s, "%" G_GUINT64_FORMAT "+%" G_GUINT64_FORMAT " %s\n", start,
                               end - start, kind);
    }
    return g_string_free(s, false);
}

static void test_matrix_images_made_by_strata_pass_qemu_img_check_and_compare(void **state)
{
    Fixture *f = *state;
    skip_without_qemu_img();
    for (size_t i = 0; i < G_N_ELEMENTS(matrix); i++) {
        const MatrixVariant *v = &matrix[i];
        uint64_t size = matrix_size(v);
        /*
         * Strata's create offers preallocation off and metadata only; the
         * other test writes into falloc and full images qemu-img made.
         */
        if (strcmp(v->prealloc, "off") != 0 && strcmp(v->prealloc, "metadata") != 0) {
            continue;
        }
        g_autofree char *opts = matrix_opts(v);
        g_autofree char *img = path_in(f, "s.qcow2");
        g_autofree char *ref = path_in(f, "ref.qcow2");
        print_message("strata create -o %s\n", opts);
        GError *err = NULL;
        if (!strata_create(img, size, opts, &err)) {
            fail_msg("create %s: %s", opts, err->message);
        }

        /* The header says what was asked, as qemu-img reads it. */
        g_autofree char *info = NULL;
        assert_int_equal(run(&info, "qemu-img info --output=json '%s'", img), 0);
        g_autofree char *want_cs =
            g_strdup_printf("\"cluster-size\": %" G_GUINT64_FORMAT ",", v->cluster_size);
        g_autofree char *want_rb = g_strdup_printf("\"refcount-bits\": %d", v->refcount_bits);
        assert_non_null(strstr(info, want_cs));
        assert_non_null(strstr(info, want_rb));
        assert_non_null(strstr(info, v->v2 ? "\"compat\": \"0.10\"" : "\"compat\": \"1.1\""));
        assert_non_null(strstr(info, v->zstd ? "\"compression-type\": \"zstd\""
                                             : "\"compression-type\": \"zlib\""));
        if (!v->v2) {
            assert_non_null(
                strstr(info, v->lazy ? "\"lazy-refcounts\": true" : "\"lazy-refcounts\": false"));
            assert_non_null(
                strstr(info, v->extended_l2 ? "\"extended-l2\": true" : "\"extended-l2\": false"));
        }
        /* And maps like the image qemu-img creates with the same options (preallocation). */
        run_ok("qemu-img create -q -f qcow2 -o '%s' '%s' %" G_GUINT64_FORMAT, opts, ref, size);
        g_autofree char *map = map_summary(img);
        g_autofree char *ref_map = map_summary(ref);
        assert_string_equal(map, ref_map);
        assert_qemu_img_check_clean(img);

        uint8_t *model = g_malloc0(size);
        strata_writes_and_qemu_agrees(f, img, model, size, NULL, v->cluster_size, 3000 + i, 60);
        g_free(model);
    }
}

/* ---- deep chains, layers written in turn by qemu-io and Strata ------------------------------- */

typedef struct ChainLayer {
    bool by_strata; /* created and written by Strata, else by qemu-img and qemu-io */
    const char *opts;
    uint64_t cluster_size; /* as in @opts */
    uint64_t size;
} ChainLayer;

/*
 * Builds the chain @layers (bottom first, each backed by the one before),
 * writing each layer with a seeded workload of its own maker.  After each
 * layer, Strata reads what qemu-img convert makes of the chain so far,
 * Strata's model of a layer it wrote agrees with qemu, and qemu-img check
 * is clean; at the end the lower layers are as their own writer left them.
 */
static void build_chain(Fixture *f, const ChainLayer *layers, size_t n, guint32 seed)
{
    g_autofree uint8_t *below = NULL;
    uint64_t below_size = 0;
    char *sums[8] = {0};
    assert_true(n <= G_N_ELEMENTS(sums));
    for (size_t i = 0; i < n; i++) {
        const ChainLayer *l = &layers[i];
        g_autofree char *name = g_strdup_printf("l%zu.qcow2", i);
        g_autofree char *img = path_in(f, name);
        g_autofree char *back = i ? g_strdup_printf("l%zu.qcow2", i - 1) : NULL;
        uint64_t cs = l->cluster_size;
        print_message("layer %zu: %s %s\n", i, l->by_strata ? "strata" : "qemu", l->opts);
        if (l->by_strata) {
            g_autofree char *kv =
                back ? g_strdup_printf("%s,backing_file=%s,backing_fmt=qcow2", l->opts, back)
                     : g_strdup(l->opts);
            GError *err = NULL;
            if (!strata_create(img, l->size, kv, &err)) {
                fail_msg("create %s: %s", kv, err->message);
            }
            /* The overlay shows the chain below, zeroes past its end. */
            uint8_t *model = g_malloc0(l->size);
            if (below) {
                memcpy(model, below, MIN(below_size, l->size));
            }
            uint8_t *shows = g_memdup2(model, l->size);
            strata_writes_and_qemu_agrees(f, img, model, l->size, i ? shows : NULL, cs, seed + i,
                                          60);
            g_free(shows);
            g_free(below);
            below = model;
        } else {
            g_autofree char *b = back ? g_strdup_printf("-b '%s' -F qcow2", back) : g_strdup("");
            run_ok("cd '%s' && qemu-img create -q -f qcow2 -o '%s' %s '%s' %" G_GUINT64_FORMAT,
                   f->dir, l->opts, b, name, l->size);
            GRand *r = g_rand_new_with_seed(seed + i);
            qemu_io_random(img, r, l->size, cs, 30);
            g_rand_free(r);
            assert_qemu_img_check_clean(img);
            g_free(below);
            below = NULL;
        }
        below_size = l->size;
        /* Either way, Strata reads the chain as qemu does. */
        uint8_t *seen = assert_strata_reads_as_qemu(img, l->size);
        if (below) {
            assert_memory_equal(seen, below, l->size);
        }
        g_free(below);
        below = seen;
        assert_int_equal(run(&sums[i], "md5sum < '%s'", img), 0);
    }
    for (size_t i = 0; i < n; i++) {
        g_autofree char *img = g_strdup_printf("%s/l%zu.qcow2", f->dir, i);
        g_autofree char *now = NULL;
        assert_int_equal(run(&now, "md5sum < '%s'", img), 0);
        assert_string_equal(now, sums[i]);
        g_free(sums[i]);
    }
}

static void test_mixed_chains_written_by_qemu_and_strata_in_turn(void **state)
{
    Fixture *f = *state;
    skip_without_qemu_img();
    /* Four layers, four cluster sizes, a base shorter than the rest; Strata writes the top. */
    static const ChainLayer four[] = {
        {false, "compat=0.10,cluster_size=64k", 65536, 3 << 20},
        {true, "cluster_size=512,refcount_bits=8", 512, 4 << 20},
        {false, "cluster_size=2M,extended_l2=on,compression_type=zstd", 2 << 20, 4 << 20},
        {true, "cluster_size=16k,extended_l2=on,lazy_refcounts=on", 16384, 4 << 20},
    };
    build_chain(f, four, G_N_ELEMENTS(four), 4000);
    /* Three layers with a v2 top: its discards let the backing file show through again. */
    static const ChainLayer three[] = {
        {true, "cluster_size=2M,compression_type=zstd", 2 << 20, 2 << 20},
        {false, "cluster_size=4k,refcount_bits=1", 4096, 3 << 20},
        {true, "compat=0.10,cluster_size=1k", 1024, 3 << 20},
    };
    build_chain(f, three, G_N_ELEMENTS(three), 5000);
}

/* ---- internal snapshots and persistent bitmaps, written by Strata -----------------------------
 */

static void test_strata_writes_an_image_with_snapshots_and_bitmaps(void **state)
{
    Fixture *f = *state;
    uint64_t size = 2 << 20, cs = 8192, gran = 65536;
    skip_without_qemu_img();
    g_autofree char *img = path_in(f, "sb.qcow2");
    g_autofree char *copy = path_in(f, "sb-copy.qcow2");
    g_autofree char *bm_copy = path_in(f, "sb-bitmaps.qcow2");
    GError *err = NULL;

    /* qemu-img and qemu-io make it: s1, then two bitmaps, more writes, s2, more writes. */
    run_ok("qemu-img create -q -f qcow2 -o cluster_size=8k '%s' 2M", img);
    GRand *r = g_rand_new_with_seed(6000);
    qemu_io_random(img, r, size, cs, 30);
    g_autofree uint8_t *s1 = qemu_contents(img, NULL, size);
    run_ok("qemu-img snapshot -c s1 '%s'", img);
    run_ok("qemu-img bitmap --add -g 64k '%s' on", img);
    run_ok("qemu-img bitmap --add --disable -g 64k '%s' off", img);
    qemu_io_random(img, r, size, cs, 30);
    g_autofree uint8_t *s2 = qemu_contents(img, NULL, size);
    run_ok("qemu-img snapshot -c s2 '%s'", img);
    qemu_io_random(img, r, size, cs, 30);
    g_rand_free(r);
    g_autofree uint8_t *model = assert_strata_reads_as_qemu(img, size);

    /* Strata applies qemu's snapshots (on a copy) and reads what qemu-img convert -l reads. */
    run_ok("cp '%s' '%s'", img, copy);
    BlockBackend *blk = open_rw(copy);
    const char *names[] = {"s1", "s2"};
    const uint8_t *want[] = {s1, s2};
    for (int i = 0; i < 2; i++) {
        if (!bdrv_snapshot_goto(blk_bs(blk), names[i], &err)) {
            fail_msg("apply %s: %s", names[i], err->message);
        }
        assert_reads_as(blk, want[i], size);
    }
    blk_unref(blk);

    /* Every cluster is shared with a snapshot: Strata's writes copy first. */
    strata_writes_and_qemu_agrees(f, img, model, size, NULL, cs, 6100, 80);

    /* The snapshots read as before. */
    for (int i = 0; i < 2; i++) {
        g_autofree uint8_t *now = qemu_contents(img, names[i], size);
        assert_memory_equal(now, want[i], size);
    }
    g_autofree char *info = NULL;
    assert_int_equal(run(&info, "qemu-img info --output=json '%s'", img), 0);
    assert_non_null(strstr(info, "\"name\": \"s1\""));
    assert_non_null(strstr(info, "\"name\": \"s2\""));
    assert_non_null(strstr(info, "\"name\": \"on\""));
    assert_non_null(strstr(info, "\"name\": \"off\""));
    assert_null(strstr(info, "in-use"));

    /*
     * The enabled bitmap has every granule that changed since it was added
     * (by qemu-io or by Strata); the disabled one stayed empty.
     */
    blk = open_qcow2(img, 0, NULL, &err);
    assert_non_null(blk);
    uint64_t nbits;
    uint32_t g;
    g_autofree uint8_t *on = NULL, *off = NULL;
    assert_true(bdrv_bitmap_read(blk_bs(blk), "on", &on, &nbits, &g, &err));
    assert_int_equal(g, gran);
    assert_int_equal(nbits, size / gran);
    assert_true(bdrv_bitmap_read(blk_bs(blk), "off", &off, &nbits, &g, &err));
    blk_unref(blk);
    uint64_t changed = 0;
    for (uint64_t i = 0; i < nbits; i++) {
        if (memcmp(s1 + i * gran, model + i * gran, gran) != 0) {
            changed++;
            assert_true(on[i / 8] & (1u << (i % 8)));
        }
        assert_false(off[i / 8] & (1u << (i % 8)));
    }
    assert_true(changed > 0);
    /* qemu loads the bitmaps' data: it copies them to a new image. */
    run_ok("qemu-img convert --bitmaps -O qcow2 '%s' '%s'", img, bm_copy);
    g_autofree char *copy_info = NULL;
    assert_int_equal(run(&copy_info, "qemu-img info '%s'", bm_copy), 0);
    assert_non_null(strstr(copy_info, "name: on"));
    assert_non_null(strstr(copy_info, "name: off"));
    assert_qemu_img_check_clean(bm_copy);
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
        QCOW2_TEST(test_matrix_images_made_by_qemu_read_and_write_in_strata),
        QCOW2_TEST(test_matrix_images_made_by_strata_pass_qemu_img_check_and_compare),
        QCOW2_TEST(test_mixed_chains_written_by_qemu_and_strata_in_turn),
        QCOW2_TEST(test_strata_writes_an_image_with_snapshots_and_bitmaps),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
