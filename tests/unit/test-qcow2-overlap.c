/*
 * qcow2 metadata overlap checks (drivers/qcow2/qcow2-overlap.c) and the
 * end-of-file policy for table entries.  Regression tests for fuzzer and
 * corrupt-image findings:
 *  - a refcount block calling cluster 0 free made the allocator hand it out
 *    and a cache assertion abort the process;
 *  - a refcount block calling the active L2 table free let a write reuse it
 *    (qemu-img check: refcount=1 reference=2);
 *  - an L1 or L2 entry past the end of the file let writes through, growing
 *    the file to where the entry pointed.
 * Each must fail the request with -EIO, mark the image corrupt and leave
 * the metadata as it was.  The last test checks that the index follows
 * every table change of a long workload (no false alarm on a good image).
 */
#include "block/snapshot.h"
#include "tests/unit/test-qcow2-util.h"

static void patch(const char *path, uint64_t off, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, data, len, off), (ssize_t)len);
    close(fd);
}

static void patch64(const char *path, uint64_t off, uint64_t v)
{
    uint8_t be[8];
    qcow2_st64(be, v);
    patch(path, off, be, sizeof(be));
}

static void peek(const char *path, uint64_t off, void *buf, size_t len)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, len, off), (ssize_t)len);
    close(fd);
}

static uint64_t peek64(const char *path, uint64_t off)
{
    uint8_t be[8];
    peek(path, off, be, sizeof(be));
    return qcow2_ld64(be);
}

static uint64_t file_size(const char *path)
{
    GStatBuf st;
    assert_int_equal(g_stat(path, &st), 0);
    return st.st_size;
}

static void assert_marked_corrupt(const char *img)
{
    assert_true(peek64(img, QH_INCOMPAT) & QCOW2_INCOMPAT_CORRUPT);
}

/* ---- refcounts that call metadata free -------------------------------------------------- */

typedef struct MetaCluster {
    const char *what;
    uint64_t offset;
} MetaCluster;

static void test_refcounts_calling_metadata_free_fail_the_write_and_mark_corrupt(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "free.qcow2");
    GError *err = NULL;
    uint8_t buf[2048];

    /* 512-byte clusters, 16-bit refcounts: one refcount block counts 256 clusters. */
    assert_true(strata_create(img, 1 << 20, "cluster_size=512", &err));
    BlockBackend *blk = open_rw(img);
    memset(buf, 0x42, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);
    blk_unref(blk);
    g_autofree char *pristine = NULL;
    gsize len;
    assert_true(g_file_get_contents(img, &pristine, &len, NULL));

    uint64_t rt = peek64(img, QH_RT_OFFSET), l1 = peek64(img, QH_L1_OFFSET);
    uint64_t rb = peek64(img, rt) & RTE_OFFSET_MASK, l2 = peek64(img, l1) & L1E_OFFSET_MASK;
    const MetaCluster meta[] = {
        {"header", 0},    {"refcount table", rt}, {"refcount block", rb},
        {"L1 table", l1}, {"L2 table", l2},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(meta); i++) {
        uint64_t c = meta[i].offset >> 9;
        uint8_t zero[2] = {0}, before[512], after[512];
        print_message("refcount 0 for the %s at 0x%" G_GINT64_MODIFIER "x\n", meta[i].what,
                      meta[i].offset);
        write_file(img, pristine, len);
        assert_true(c < 256);
        patch(img, rb + 2 * c, zero, sizeof(zero));
        peek(img, meta[i].offset, before, sizeof(before));

        blk = open_rw(img);
        /* Guest offset 512 KiB has no cluster yet: the write allocates one (and an L2 table). */
        assert_int_equal(blk_pwrite(blk, 512 * 1024, sizeof(buf), buf, 0), -EIO);
        assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), -EIO); /* corrupt: nothing is written */
        blk_unref(blk);

        assert_marked_corrupt(img);
        peek(img, meta[i].offset, after, sizeof(after));
        if (meta[i].offset == 0) {
            /* Only the corrupt bit changed in the header. */
            qcow2_st64(after + QH_INCOMPAT, peek64(img, QH_INCOMPAT) & ~QCOW2_INCOMPAT_CORRUPT);
        }
        assert_memory_equal(before, after, sizeof(before));
        /* Guest data written before the damage still reads back. */
        blk = open_qcow2(img, 0, NULL, &err);
        assert_non_null(blk);
        uint8_t back[2048];
        assert_int_equal(blk_pread(blk, 0, sizeof(back), back, 0), 0);
        assert_memory_equal(back, buf, sizeof(back));
        blk_unref(blk);
    }
}

/* ---- entries past the end of the file --------------------------------------------------- */

static void test_entries_past_the_end_of_the_file_refuse_writes_but_read_as_zeroes(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "eof.qcow2");
    GError *err = NULL;
    uint8_t buf[4096], zero[4096] = {0};

    for (int level = 1; level <= 2; level++) {
        assert_true(strata_create(img, 1 << 20, "", &err));
        BlockBackend *blk = open_rw(img);
        memset(buf, 0x5a, sizeof(buf));
        assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);
        blk_unref(blk);
        uint64_t l1 = peek64(img, QH_L1_OFFSET);
        uint64_t entry = (1ULL << 32) | QCOW2_OFLAG_COPIED;
        /* Level 1: the L1 entry names an L2 table at 4 GiB; level 2: the L2 entry a data cluster.
         */
        patch64(img, level == 1 ? l1 : peek64(img, l1) & L1E_OFFSET_MASK, entry);
        uint64_t size = file_size(img);

        blk = open_rw(img);
        assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), 0);
        assert_memory_equal(buf, zero, sizeof(buf));
        assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), -EIO);
        blk_unref(blk);
        assert_int_equal(file_size(img), size);
        assert_marked_corrupt(img);
        g_unlink(img);
    }
}

/* ---- the cache's write-back check ---------------------------------------------------------- */

typedef struct CacheCo {
    BlockDriverState *bs;
    bool refblock_cache;
    uint64_t offset;
    int ret;
} CacheCo;

/* Loads the table at @offset through one of the caches, dirties it and writes it back. */
static void coroutine_fn cache_entry(void *opaque)
{
    CacheCo *c = opaque;
    BDRVQcow2State *s = c->bs->opaque;
    Qcow2Cache *cache = c->refblock_cache ? s->refblock_cache : s->l2_cache;
    void *table;
    GRAPH_RDLOCK_GUARD();
    co_mutex_lock(&s->lock);
    c->ret = qcow2_cache_get(c->bs, cache, c->offset, &table);
    if (c->ret == 0) {
        memset(table, 0xee, s->cluster_size);
        qcow2_cache_mark_dirty(cache, table);
        qcow2_cache_put(cache, &table);
        c->ret = qcow2_cache_write(c->bs, cache);
    }
    co_mutex_unlock(&s->lock);
}

static void test_a_cached_table_is_never_written_back_over_other_metadata(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "cache.qcow2");
    GError *err = NULL;
    uint8_t buf[4096];

    for (int k = 0; k < 3; k++) {
        assert_true(strata_create(img, 1 << 20, "", &err));
        BlockBackend *blk = open_rw(img);
        memset(buf, 0x33, sizeof(buf));
        assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);
        BDRVQcow2State *s = qcow2_state(blk);
        uint64_t l2 = s->l1_table[0] & L1E_OFFSET_MASK;
        /* An "L2 table" where the refcount table is, a "refcount block" on the L1 or L2 table. */
        CacheCo c = {blk_bs(blk), k > 0,
                     k == 0   ? s->refcount_table_offset
                     : k == 1 ? s->l1_table_offset
                              : l2,
                     0};
        uint8_t before[512], after[512];
        assert_int_equal(blk_flush(blk), 0);
        peek(img, c.offset, before, sizeof(before));
        bdrv_run_co(cache_entry, &c);
        assert_int_equal(c.ret, -EIO);
        assert_true(s->corrupt_signalled);
        qcow2_cache_clear(c.refblock_cache ? s->refblock_cache : s->l2_cache);
        blk_unref(blk);
        peek(img, c.offset, after, sizeof(after));
        assert_memory_equal(before, after, sizeof(before));
        assert_marked_corrupt(img);
        g_unlink(img);
    }
}

/* ---- no false alarm: the index follows the tables -------------------------------------------- */

static void assert_index_sane(BlockBackend *blk)
{
    BDRVQcow2State *s = qcow2_state(blk);
    /* No request in flight: the state is quiet. */
    assert_false(s->corrupt_signalled);
    assert_true(qcow2_overlap_sanity(s));
}

static void snapshot_op(BlockBackend *blk, int op, const char *name)
{
    GError *err = NULL;
    BdrvSnapshotInfo sn = {.name = (char *)name, .id = (char *)name};
    bool ok = op == 0   ? bdrv_snapshot_create(blk_bs(blk), &sn, NULL, &err)
              : op == 1 ? bdrv_snapshot_goto(blk_bs(blk), name, &err)
                        : bdrv_snapshot_delete(blk_bs(blk), name, &err);
    if (!ok) {
        fail_msg("snapshot %d %s: %s", op, name, err->message);
    }
}

static void test_the_index_follows_every_table_change(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "follow.qcow2");
    GError *err = NULL;
    const uint64_t size = 12 << 20;

    /* 512-byte clusters: many L2 tables and refcount blocks; the refcount table grows too. */
    assert_true(strata_create(img, 1 << 20, "cluster_size=512", &err));
    BlockBackend *blk = open_rw(img);
    assert_int_equal(blk_truncate(blk, size, false, PREALLOC_MODE_OFF, 0, &err), 0);
    uint64_t rt_offset = qcow2_state(blk)->refcount_table_offset;
    Workload w = {
        .rand = g_rand_new_with_seed(7), .model = g_malloc0(size), .size = size, .unit = 512};

    /* Fill 10 MiB: more than the first refcount table covers (64 blocks of 128 KiB). */
    uint8_t *chunk = g_malloc(1 << 20);
    for (uint64_t off = 0; off < 10 << 20; off += 1 << 20) {
        memset(chunk, (int)(off >> 20) + 1, 1 << 20);
        assert_int_equal(blk_pwrite(blk, off, 1 << 20, chunk, 0), 0);
        memcpy(w.model + off, chunk, 1 << 20);
        assert_index_sane(blk);
    }
    g_free(chunk);
    assert_true(qcow2_state(blk)->refcount_table_offset != rt_offset);

    run_workload(&w, blk, 150);
    assert_index_sane(blk);
    snapshot_op(blk, 0, "a");
    assert_index_sane(blk);
    run_workload(&w, blk, 150); /* copies shared L2 tables: L1 entries move */
    assert_index_sane(blk);
    snapshot_op(blk, 0, "b");
    snapshot_op(blk, 1, "a"); /* the active L1 is replaced */
    assert_index_sane(blk);
    snapshot_op(blk, 2, "a");
    snapshot_op(blk, 2, "b");
    assert_index_sane(blk);

    /* Grow (L1 moves), then shrink (L2 tables dropped). */
    assert_int_equal(blk_truncate(blk, 64 << 20, false, PREALLOC_MODE_OFF, 0, &err), 0);
    uint8_t b[4096];
    memset(b, 0x77, sizeof(b));
    assert_int_equal(blk_pwrite(blk, 60 << 20, sizeof(b), b, 0), 0);
    assert_index_sane(blk);
    assert_int_equal(blk_truncate(blk, 8 << 20, false, PREALLOC_MODE_OFF, 0, &err), 0);
    assert_index_sane(blk);
    assert_int_equal(blk_truncate(blk, 16 << 20, false, PREALLOC_MODE_METADATA, 0, &err), 0);
    assert_int_equal(blk_pwrite(blk, 12 << 20, sizeof(b), b, 0), 0);
    assert_index_sane(blk);
    blk_unref(blk);
    g_rand_free(w.rand);
    g_free(w.model);
    if (have_qemu_img) {
        assert_qemu_img_check_clean(img);
    }
}

int main(void)
{
    qcow2_test_init();
    const struct CMUnitTest tests[] = {
        QCOW2_TEST(test_refcounts_calling_metadata_free_fail_the_write_and_mark_corrupt),
        QCOW2_TEST(test_entries_past_the_end_of_the_file_refuse_writes_but_read_as_zeroes),
        QCOW2_TEST(test_a_cached_table_is_never_written_back_over_other_metadata),
        QCOW2_TEST(test_the_index_follows_every_table_change),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
