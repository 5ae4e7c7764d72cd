/*
 * Compressed writes of the qcow2 driver (co_pwritev_compressed): zlib and
 * zstd images that qemu-img checks clean and reads back as the source;
 * incompressible clusters written normally (with zlib, random clusters
 * without running deflate, while compressible ones still compress);
 * compressed writes into allocated clusters refused with -EIO as in QEMU;
 * normal writes over compressed clusters; many writers compressing in
 * parallel in IOThreads; and compressed descriptors that point outside the
 * file refused on read.
 */
#include "aio/thread-pool.h"
#include "tests/unit/test-qcow2-util.h"

/* ---- helpers ----------------------------------------------------------------------------------
 */

typedef struct CompCo {
    BlockBackend *blk;
    int64_t offset, bytes;
    const void *buf;
    int ret;
    _Atomic int *done; /* for writers in IOThreads */
} CompCo;

/* A compressed write through the request path, as strata-img convert -c does. */
static void coroutine_fn comp_entry(void *opaque)
{
    CompCo *c = opaque;
    c->ret = blk_co_pwrite(c->blk, c->offset, c->bytes, c->buf, BDRV_REQ_WRITE_COMPRESSED);
    if (c->done) {
        atomic_fetch_add(c->done, 1);
        aio_wait_kick();
    }
}

static int write_compressed(BlockBackend *blk, int64_t offset, int64_t bytes, const void *buf)
{
    CompCo c = {blk, offset, bytes, buf, -EINPROGRESS, NULL};
    bdrv_run_co(comp_entry, &c);
    return c.ret;
}

/*
 * Guest content: per cluster, compressible text-like bytes, random bytes
 * (incompressible) or zeroes, chosen by the cluster's index.
 */
static uint8_t *make_content(uint64_t size, uint64_t cluster, uint32_t seed)
{
    uint8_t *m = g_malloc0(size);
    GRand *r = g_rand_new_with_seed(seed);
    for (uint64_t c = 0; c * cluster < size; c++) {
        uint64_t off = c * cluster, n = MIN(cluster, size - off);
        switch (c % 5) {
        case 0:
        case 1:
        case 3:
            for (uint64_t i = 0; i < n; i++) {
                m[off + i] = (uint8_t)("strata qcow2 compressed "[(i + c) % 24] + (i / 1000) % 3);
            }
            break;
        case 2:
            for (uint64_t i = 0; i < n; i++) {
                m[off + i] = (uint8_t)g_rand_int(r);
            }
            break;
        default:
            break; /* zeroes: compressed too (they shrink) */
        }
    }
    g_rand_free(r);
    return m;
}

/* Writes all of @model compressed, cluster by cluster, then aligns the file's end. */
static void write_all_compressed(BlockBackend *blk, const uint8_t *model, uint64_t size,
                                 uint64_t cluster)
{
    for (uint64_t off = 0; off < size; off += cluster) {
        assert_int_equal(write_compressed(blk, off, MIN(cluster, size - off), model + off), 0);
    }
    assert_int_equal(write_compressed(blk, 0, 0, NULL), 0);
}

/* The number qemu-img check reports as "% compressed clusters". */
static double qemu_compressed_percent(const char *img)
{
    g_autofree char *out = NULL;
    assert_int_equal(run(&out, "qemu-img check '%s'", img), 0);
    char *p = strstr(out, "fragmented, ");
    assert_non_null(p);
    return g_ascii_strtod(p + strlen("fragmented, "), NULL);
}

/* ---- tests ------------------------------------------------------------------------------------
 */

static void test_compressed_images_pass_qemu_img_check_and_compare(void **state)
{
    Fixture *f = *state;
    static const struct {
        const char *opts;
        uint64_t cluster;
    } variants[] = {
        {"cluster_size=64k", 65536},
        {"compression_type=zstd", 65536},
        {"cluster_size=4k,compression_type=zstd", 4096},
        {"cluster_size=512,compat=0.10", 512},
        {"extended_l2=on,cluster_size=32k", 32768},
        {"cluster_size=2M,compression_type=zstd", 2 << 20},
    };
    skip_without_qemu_img();
    for (size_t i = 0; i < G_N_ELEMENTS(variants); i++) {
        uint64_t cs = variants[i].cluster;
        /* Not a whole number of clusters: the last cluster is short. */
        uint64_t size = cs >= (1 << 20) ? 5 * cs - 1536 : MAX(32 * cs, 256 << 10) - 1536;
        g_autofree char *img = path_in(f, "c.qcow2");
        g_autofree char *raw = path_in(f, "c.raw");
        GError *err = NULL;
        uint8_t *model = make_content(size, cs, 7 + i);

        assert_true(strata_create(img, size, variants[i].opts, &err));
        BlockBackend *blk = open_rw(img);
        write_all_compressed(blk, model, size, cs);
        assert_reads_as(blk, model, size);
        blk_unref(blk);

        assert_image_matches_model(img, raw, model, size);
        /* Three clusters in five compress (zeroes too), the random one does not. */
        double pct = qemu_compressed_percent(img);
        assert_true(pct > 50.0 && pct < 100.0);

        blk = open_rw(img);
        assert_reads_as(blk, model, size);
        blk_unref(blk);
        g_free(model);
    }
}

static void test_incompressible_cluster_is_written_normally(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "n.qcow2");
    uint64_t cs = 65536, size = 8 * cs;
    GError *err = NULL;
    uint8_t *model = make_content(size, cs, 3);

    assert_true(strata_create(img, size, "cluster_size=64k", &err));
    BlockBackend *blk = open_rw(img);
    write_all_compressed(blk, model, size, cs);
    int64_t pnum, map;
    BlockDriverState *file;
    /* Cluster 2 is random: a normal cluster with a host offset; cluster 1 is compressed. */
    int st = blk_block_status(blk, 2 * cs, cs, &pnum, &map, &file);
    assert_true((st & BDRV_BLOCK_DATA) && (st & BDRV_BLOCK_OFFSET_VALID));
    st = blk_block_status(blk, cs, cs, &pnum, &map, &file);
    assert_true((st & BDRV_BLOCK_DATA) && !(st & BDRV_BLOCK_OFFSET_VALID));
    assert_reads_as(blk, model, size);
    blk_unref(blk);
    g_free(model);
}

static void test_compressed_clusters_share_host_clusters(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "p.qcow2");
    uint64_t cs = 65536, size = 32 * cs;
    GError *err = NULL;
    uint8_t *model = g_malloc(size);
    memset(model, 'x', size);

    assert_true(strata_create(img, size, "cluster_size=64k", &err));
    BlockBackend *blk = open_rw(img);
    write_all_compressed(blk, model, size, cs);
    blk_unref(blk);
    struct stat st;
    assert_int_equal(stat(img, &st), 0);
    /* 32 highly compressible clusters pack into one host cluster next to the metadata. */
    assert_true(st.st_size <= 6 * (off_t)cs);
    if (have_qemu_img) {
        g_autofree char *raw = path_in(f, "p.raw");
        assert_image_matches_model(img, raw, model, size);
    }
    g_free(model);
}

static void test_normal_writes_over_compressed_clusters(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "o.qcow2");
    g_autofree char *raw = path_in(f, "o.raw");
    uint64_t cs = 16384, size = 64 * cs;
    GError *err = NULL;
    uint8_t *model = make_content(size, cs, 11);
    uint8_t *second = make_content(size, cs, 12);

    assert_true(strata_create(img, size, "cluster_size=16k,compression_type=zstd", &err));
    BlockBackend *blk = open_rw(img);
    write_all_compressed(blk, model, size, cs);
    /* Whole-cluster normal writes replace compressed clusters and free their streams. */
    for (uint64_t off = 0; off < size; off += 3 * cs) {
        memcpy(model + off, second + off, cs);
        assert_int_equal(blk_pwrite(blk, off, cs, model + off, 0), 0);
    }
    /* Partial normal writes into compressed clusters copy the rest of the cluster. */
    Workload w = {.rand = g_rand_new_with_seed(5), .model = model, .size = size, .unit = 5000};
    run_workload(&w, blk, 60);
    g_rand_free(w.rand);
    blk_unref(blk);
    if (have_qemu_img) {
        assert_image_matches_model(img, raw, model, size);
    }
    blk = open_rw(img);
    assert_reads_as(blk, model, size);
    blk_unref(blk);
    g_free(model);
    g_free(second);
}

/*
 * As in QEMU: a compressed write fails with -EIO where the cluster already
 * has a host cluster, and changes nothing; an incompressible one is an
 * ordinary write and succeeds; plain zero clusters and discarded clusters
 * take compressed data.
 */
static void test_compressed_write_into_allocated_cluster_fails(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "a.qcow2");
    g_autofree char *raw = path_in(f, "a.raw");
    uint64_t cs = 65536, size = 8 * cs;
    GError *err = NULL;
    uint8_t *model = g_malloc0(size);
    uint8_t text[65536], noise[65536];
    GRand *r = g_rand_new_with_seed(9);
    for (size_t i = 0; i < sizeof(text); i++) {
        text[i] = (uint8_t)("allocated clusters stay "[i % 24]);
        noise[i] = (uint8_t)g_rand_int(r);
    }
    g_rand_free(r);

    for (int v = 0; v < 2; v++) {
        assert_true(strata_create(img, size, v ? "extended_l2=on,cluster_size=64k" : "", &err));
        BlockBackend *blk = open_rw(img);
        memset(model, 0, size);
        /* 0: normal data, 1: compressed, 2: zeroes that keep their cluster. */
        memset(model, 0x11, cs);
        assert_int_equal(blk_pwrite(blk, 0, cs, model, 0), 0);
        memcpy(model + cs, text, cs);
        assert_int_equal(write_compressed(blk, cs, cs, text), 0);
        assert_int_equal(blk_pwrite(blk, 2 * cs, cs, noise, 0), 0);
        assert_int_equal(blk_pwrite_zeroes(blk, 2 * cs, cs, 0), 0);
        for (int c = 0; c < 3; c++) {
            assert_int_equal(write_compressed(blk, c * cs, cs, text), -EIO);
        }
        /* Random data is written plainly, over whatever is there. */
        memcpy(model, noise, cs);
        assert_int_equal(write_compressed(blk, 0, cs, noise), 0);
        /* 3: plain zero flag, 4: discarded, 5: never written. */
        assert_int_equal(blk_pwrite_zeroes(blk, 3 * cs, cs, BDRV_REQ_MAY_UNMAP), 0);
        assert_int_equal(blk_pwrite(blk, 4 * cs, cs, noise, 0), 0);
        assert_int_equal(blk_pdiscard(blk, 4 * cs, cs), 0);
        for (int c = 3; c < 6; c++) {
            memcpy(model + c * cs, text, cs);
            assert_int_equal(write_compressed(blk, c * cs, cs, text), 0);
        }
        assert_int_equal(write_compressed(blk, 0, 0, NULL), 0);
        assert_reads_as(blk, model, size);
        blk_unref(blk);
        if (have_qemu_img) {
            assert_image_matches_model(img, raw, model, size);
        }
    }
    g_free(model);
}

/*
 * zlib: a cluster the estimate calls incompressible is written plainly
 * without deflate, but anything deflate shrinks for real still compresses.
 */
static void test_zlib_estimate_keeps_compressible_clusters(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "z.qcow2");
    g_autofree char *raw = path_in(f, "z.raw");
    enum { KINDS = 7 };
    uint64_t cs = 65536, size = KINDS * cs;
    GError *err = NULL;
    uint8_t *model = g_malloc(size);
    GRand *r = g_rand_new_with_seed(17);

    for (uint64_t i = 0; i < cs; i++) {
        uint8_t rnd = (uint8_t)g_rand_int(r);
        model[i] = rnd;                                             /* 0: random */
        model[cs + i] = (uint8_t)("words and more words "[i % 21]); /* 1: text */
        model[2 * cs + i] = i >= 30000 && i < 32048 ? 0 : rnd;      /* 2: 2 KiB of zeroes */
        model[3 * cs + i] = model[i % 1500];                        /* 3: repeated pattern */
        model[4 * cs + i] = rnd & 0x7f;                             /* 4: 7-bit bytes */
        model[5 * cs + i] = (uint8_t)(i / 4 * 7 >> ((i % 4) * 8));  /* 5: counters */
        model[6 * cs + i] = (uint8_t)g_rand_int(r);                 /* 6: random */
    }
    g_rand_free(r);
    static const bool compressed[KINDS] = {false, true, true, true, true, true, false};

    assert_true(strata_create(img, size, "cluster_size=64k", &err));
    BlockBackend *blk = open_rw(img);
    write_all_compressed(blk, model, size, cs);
    for (int c = 0; c < KINDS; c++) {
        int64_t pnum, map;
        BlockDriverState *file;
        int st = blk_block_status(blk, c * cs, cs, &pnum, &map, &file);
        assert_true(st & BDRV_BLOCK_DATA);
        /* Compressed clusters have no host offset; plain ones do. */
        assert_int_equal(!(st & BDRV_BLOCK_OFFSET_VALID), compressed[c]);
    }
    assert_reads_as(blk, model, size);
    blk_unref(blk);
    struct stat sb;
    assert_int_equal(stat(img, &sb), 0);
    /*
     * Four clusters of metadata, two plain, and the five others (deflated
     * to about 2.2 clusters, packed back to back) in at most four.
     */
    assert_true(sb.st_size <= (off_t)(10 * cs));
    if (have_qemu_img) {
        assert_image_matches_model(img, raw, model, size);
    }
    g_free(model);
}

static void test_misaligned_compressed_writes_are_refused(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "m.qcow2");
    GError *err = NULL;
    uint8_t buf[65536] = {0};

    assert_true(strata_create(img, 1 << 20, "cluster_size=64k", &err));
    BlockBackend *blk = open_rw(img);
    assert_int_equal(write_compressed(blk, 512, 65536, buf), -EINVAL);
    assert_int_equal(write_compressed(blk, 0, 4096, buf), -EINVAL);
    assert_int_equal(write_compressed(blk, 65536, 65536, buf), 0);
    blk_unref(blk);
}

#define PAR_WRITERS  8
#define PAR_CLUSTERS 16

static void test_parallel_writers_compress_in_worker_threads(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "w.qcow2");
    g_autofree char *raw = path_in(f, "w.raw");
    uint64_t cs = 65536, size = PAR_WRITERS * PAR_CLUSTERS * cs;
    GError *err = NULL;
    uint8_t *model = make_content(size, cs, 21);
    _Atomic int done = 0;

    assert_true(strata_create(img, size, "cluster_size=64k", &err));
    BlockBackend *blk = open_rw(img);
    IOThread *t[2] = {iothread_create("cz-a", NULL, &err), iothread_create("cz-b", NULL, &err)};
    assert_non_null(t[0]);
    assert_non_null(t[1]);
    /* Writers interleave their clusters; each request is several clusters (one batch). */
    CompCo jobs[PAR_WRITERS * 2];
    int n = 0;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < PAR_WRITERS; i++) {
            uint64_t off = ((uint64_t)i * PAR_CLUSTERS + round * 8) * cs;
            jobs[n] = (CompCo){blk, off, 8 * cs, model + off, -EINPROGRESS, &done};
            aio_co_enter(iothread_get_aio_context(t[n % 2]), co_create(comp_entry, &jobs[n]));
            n++;
        }
    }
    AIO_WAIT_WHILE(atomic_load(&done) < n);
    int threads = thread_pool_nr_threads(aio_get_thread_pool(iothread_get_aio_context(t[0])));
    iothread_destroy(t[0]);
    iothread_destroy(t[1]);
    for (int i = 0; i < n; i++) {
        assert_int_equal(jobs[i].ret, 0);
    }
    /* A batch of eight clusters went to the pool at once: more than one worker ran. */
    assert_true(threads > 1);
    assert_reads_as(blk, model, size);
    blk_unref(blk);
    if (have_qemu_img) {
        assert_image_matches_model(img, raw, model, size);
    }
    g_free(model);
}

static void test_descriptor_outside_the_file_is_corruption(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "d.qcow2");
    uint64_t cs = 65536;
    GError *err = NULL;
    uint8_t buf[65536];
    memset(buf, 'a', sizeof(buf));

    assert_true(strata_create(img, 1 << 20, "cluster_size=64k", &err));
    BlockBackend *blk = open_rw(img);
    assert_int_equal(write_compressed(blk, 0, cs, buf), 0);
    BDRVQcow2State *s = qcow2_state(blk);
    uint64_t l2 = s->l1_table[0] & L1E_OFFSET_MASK;
    blk_unref(blk);

    /* Point the compressed descriptor 1 TiB into the file. */
    int fd = open(img, O_RDWR);
    assert_true(fd >= 0);
    uint8_t e[8];
    assert_int_equal(pread(fd, e, 8, l2), 8);
    uint64_t entry = qcow2_ld64(e) | (1ULL << 40);
    qcow2_st64(e, entry);
    assert_int_equal(pwrite(fd, e, 8, l2), 8);
    close(fd);

    blk = open_rw(img);
    assert_int_equal(blk_pread(blk, 0, 4096, buf, 0), -EIO);
    assert_true(qcow2_state(blk)->incompat & QCOW2_INCOMPAT_CORRUPT);
    blk_unref(blk);
}

int main(void)
{
    qcow2_test_init();
    const struct CMUnitTest tests[] = {
        QCOW2_TEST(test_compressed_images_pass_qemu_img_check_and_compare),
        QCOW2_TEST(test_incompressible_cluster_is_written_normally),
        QCOW2_TEST(test_compressed_clusters_share_host_clusters),
        QCOW2_TEST(test_normal_writes_over_compressed_clusters),
        QCOW2_TEST(test_compressed_write_into_allocated_cluster_fails),
        QCOW2_TEST(test_zlib_estimate_keeps_compressible_clusters),
        QCOW2_TEST(test_misaligned_compressed_writes_are_refused),
        QCOW2_TEST(test_parallel_writers_compress_in_worker_threads),
        QCOW2_TEST(test_descriptor_outside_the_file_is_corruption),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
