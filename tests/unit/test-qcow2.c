/*
 * Tests of the qcow2 driver on images Strata creates, through BlockBackend:
 * creation options, random workloads checked against a model, writers in
 * two IOThreads, refusal of malicious headers, repair of dirty images,
 * resizing.  Debian's qemu-img is the oracle where installed: every image
 * must pass `qemu-img check` without errors or leaks and compare equal to
 * a raw file of what the guest wrote (those checks are skipped without it).
 */
#include "tests/unit/test-qcow2-util.h"

#include <linux/falloc.h>
#include <sys/stat.h>

/* ---- creation ------------------------------------------------------------------------------ */

static const char *const create_variants[] = {
    "cluster_size=512",
    "cluster_size=4k",
    "cluster_size=64k",
    "cluster_size=2M",
    "compat=0.10",
    "compat=0.10,cluster_size=4k",
    "refcount_bits=1",
    "refcount_bits=2,cluster_size=4k",
    "refcount_bits=4",
    "refcount_bits=8,cluster_size=1k",
    "refcount_bits=32",
    "refcount_bits=64,cluster_size=512",
    "lazy_refcounts=on",
    "extended_l2=on",
    "extended_l2=on,cluster_size=16k",
    "preallocation=metadata,cluster_size=4k",
    "compression_type=zstd",
    "backing_file=base.qcow2,backing_fmt=qcow2",
    "backing_file=base.qcow2,backing_fmt=qcow2,cluster_size=512",
    "backing_file=base.qcow2,backing_fmt=qcow2,compat=0.10,cluster_size=8k",
    "backing_file=base.qcow2,backing_fmt=qcow2,extended_l2=on,preallocation=metadata",
};

/* qemu-img info --output=json of @path with the fields that depend on the host removed. */
static char *info_json(const char *path)
{
    g_autofree char *out = NULL;
    assert_int_equal(run(&out, "qemu-img info --output=json '%s'", path), 0);
    GString *s = g_string_new(NULL);
    for (char **l = g_strsplit(out, "\n", -1), **p = l; *p; p++) {
        if (!strstr(*p, "actual-size") && !strstr(*p, "\"filename\"") &&
            !strstr(*p, "dirty-flag")) {
            g_string_append(s, *p);
            g_string_append_c(s, '\n');
        }
        if (!p[1]) {
            g_strfreev(l);
            break;
        }
    }
    return g_string_free(s, false);
}

static void test_created_images_are_clean_and_look_like_qemu_img_ones(void **state)
{
    Fixture *f = *state;
    skip_without_qemu_img();
    g_autofree char *base = path_in(f, "base.qcow2");
    assert_int_equal(run(NULL, "qemu-img create -q -f qcow2 '%s' 2M", base), 0);
    for (size_t i = 0; i < G_N_ELEMENTS(create_variants); i++) {
        g_autofree char *ours = path_in(f, "ours.qcow2");
        g_autofree char *theirs = path_in(f, "theirs.qcow2");
        GError *err = NULL;
        if (!strata_create(ours, 3 << 20, create_variants[i], &err)) {
            fail_msg("create %s: %s", create_variants[i], err->message);
        }
        assert_qemu_img_check_clean(ours);
        assert_int_equal(
            run(NULL, "qemu-img create -q -f qcow2 -o '%s' '%s' 3M", create_variants[i], theirs),
            0);
        g_autofree char *a = info_json(ours), *b = info_json(theirs);
        if (strcmp(a, b) != 0) {
            fail_msg("%s: qemu-img info differs\nours:\n%s\ntheirs:\n%s", create_variants[i], a, b);
        }
        /* Same layout: the files have the same length. */
        GStatBuf sa, sb;
        assert_int_equal(g_stat(ours, &sa), 0);
        assert_int_equal(g_stat(theirs, &sb), 0);
        if (sa.st_size != sb.st_size) {
            fail_msg("%s: file length %ld vs qemu-img's %ld", create_variants[i], (long)sa.st_size,
                     (long)sb.st_size);
        }
    }
}

static void test_bad_creation_options_are_refused(void **state)
{
    Fixture *f = *state;
    g_autofree char *p = path_in(f, "bad.qcow2");
    static const struct {
        const char *kv;
        const char *msg;
    } cases[] = {
        {"cluster_size=3000", "power of two"},
        {"cluster_size=4M", "power of two"},
        {"refcount_bits=3", "power of two"},
        {"compat=0.10,refcount_bits=8", "compatibility level"},
        {"compat=0.10,lazy_refcounts=on", "compatibility level"},
        {"extended_l2=on,cluster_size=4k", "16384"},
        {"compat=2.0", "compatibility level"},
        {"backing_fmt=raw", "without backing file"},
        {"preallocation=bogus", "preallocation"},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        GError *err = NULL;
        assert_false(strata_create(p, 1 << 20, cases[i].kv, &err));
        if (!strstr(err->message, cases[i].msg)) {
            fail_msg("%s: unexpected error '%s'", cases[i].kv, err->message);
        }
        g_clear_error(&err);
    }
}

/* ---- reads and writes ---------------------------------------------------------------------- */

static void workload_case(Fixture *f, const char *create_kv, uint64_t size, uint64_t unit,
                          int steps, guint32 seed)
{
    g_autofree char *img = path_in(f, "w.qcow2");
    g_autofree char *raw = path_in(f, "w.raw");
    GError *err = NULL;
    Workload w = {.rand = g_rand_new_with_seed(seed), .size = size, .unit = unit};

    w.model = g_malloc0(size);
    if (!strata_create(img, size, create_kv, &err)) {
        fail_msg("create %s: %s", create_kv, err->message);
    }
    BlockBackend *blk = open_rw(img);
    run_workload(&w, blk, steps);
    assert_true(qcow2_cache_sanity(qcow2_state(blk)->l2_cache));
    assert_true(qcow2_cache_sanity(qcow2_state(blk)->refblock_cache));
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(qcow2_cache_nb_dirty(qcow2_state(blk)->l2_cache), 0);
    assert_int_equal(qcow2_cache_nb_dirty(qcow2_state(blk)->refblock_cache), 0);
    blk_unref(blk);

    /* What a fresh open reads, and what qemu-img sees. */
    blk = open_rw(img);
    assert_reads_as(blk, w.model, size);
    blk_unref(blk);
    if (have_qemu_img) {
        write_file(raw, w.model, size);
        assert_qemu_img_check_clean(img);
        assert_qemu_img_compare_equal(img, "qcow2", raw, "raw");
    }
    g_free(w.model);
    g_rand_free(w.rand);
}

static void test_random_workload_matches_the_model_64k(void **state)
{
    workload_case(*state, "", 4 << 20, 65536, 250, 1);
}

static void test_random_workload_matches_the_model_small_clusters(void **state)
{
    workload_case(*state, "cluster_size=512,refcount_bits=1", 1 << 20, 512, 200, 2);
    workload_case(*state, "cluster_size=4k,refcount_bits=64", 2 << 20, 4096, 200, 3);
}

static void test_random_workload_matches_the_model_v2(void **state)
{
    workload_case(*state, "compat=0.10,cluster_size=4k", 2 << 20, 4096, 300, 4);
}

static void test_random_workload_matches_the_model_extended_l2(void **state)
{
    workload_case(*state, "extended_l2=on,cluster_size=32k", 4 << 20, 1024, 300, 5);
}

static void test_random_workload_matches_the_model_lazy_refcounts(void **state)
{
    workload_case(*state, "lazy_refcounts=on,cluster_size=8k", 2 << 20, 8192, 200, 6);
}

static void test_random_workload_matches_the_model_preallocated(void **state)
{
    workload_case(*state, "preallocation=metadata,cluster_size=16k", 2 << 20, 16384, 200, 7);
}

/* ---- concurrency --------------------------------------------------------------------------- */

#define CONC_SIZE    (4 << 20)   /* the interleaved area */
#define CONC_PRIV    (256 << 10) /* each writer's own clusters after it */
#define CONC_CHUNK   4096
#define CONC_WRITERS 8

typedef struct ConcJob {
    BlockBackend *blk;
    int id; /* 0..CONC_WRITERS-1 */
    guint32 seed;
    _Atomic int *done;
    int errors;
    uint8_t *priv; /* model of the writer's own area */
} ConcJob;

/*
 * Random writes, write-zeroes and discards on the writer's own four
 * clusters: metadata changes from several threads at once, sharing L2
 * tables and refcount blocks.
 */
static void coroutine_fn conc_private_ops(ConcJob *j, GRand *r)
{
    int64_t base = CONC_SIZE + (int64_t)j->id * CONC_PRIV;
    uint8_t *buf = g_malloc(CONC_PRIV);
    for (int k = 0; k < 30; k++) {
        int64_t off = g_rand_int_range(r, 0, CONC_PRIV - 1);
        int64_t len = g_rand_int_range(r, 1, 100000); /* MIN() would draw twice */
        len = MIN(len, CONC_PRIV - off);
        int op = g_rand_int_range(r, 0, 4);
        int ret;
        if (op < 2) {
            memset(buf, g_rand_int(r), len);
            ret = blk_co_pwrite(j->blk, base + off, len, buf, 0);
            memcpy(j->priv + off, buf, len);
        } else if (op == 2) {
            ret = blk_co_pwrite_zeroes(j->blk, base + off, len,
                                       g_rand_boolean(r) ? BDRV_REQ_MAY_UNMAP : 0);
            memset(j->priv + off, 0, len);
        } else {
            /* Whole clusters only, so that the model knows what reads back. */
            off &= ~(int64_t)65535;
            len = 65536;
            ret = blk_co_pdiscard(j->blk, base + off, len);
            memset(j->priv + off, 0, len);
        }
        if (ret < 0) {
            j->errors++;
        }
    }
    g_free(buf);
}

/*
 * Writer @id owns every CONC_WRITERS-th 4 KiB chunk: neighbours in the same
 * cluster belong to others, so allocations of one cluster race.  It also
 * writes its own constant byte over a shared hot range.
 */
static void coroutine_fn conc_writer(void *opaque)
{
    ConcJob *j = opaque;
    GRand *r = g_rand_new_with_seed(j->seed);
    uint8_t buf[CONC_CHUNK];
    int nchunks = CONC_SIZE / CONC_CHUNK;

    for (int c = j->id; c < nchunks; c += CONC_WRITERS) {
        memset(buf, 0x10 + j->id, sizeof(buf));
        for (int i = 0; i < 8; i++) {
            buf[i] = (uint8_t)c;
        }
        if (blk_co_pwrite(j->blk, (int64_t)c * CONC_CHUNK, CONC_CHUNK, buf, 0) < 0) {
            j->errors++;
        }
        if (g_rand_int_range(r, 0, 8) == 0) {
            /* The hot range: everyone overwrites the same two clusters. */
            uint8_t hot[3000];
            memset(hot, 0xa0 + j->id, sizeof(hot));
            int64_t off = g_rand_int_range(r, 0, 131072 - 3000);
            if (blk_co_pwrite(j->blk, (1 << 20) + 7 + off, sizeof(hot), hot, 0) < 0) {
                j->errors++;
            }
        }
    }
    conc_private_ops(j, r);
    g_rand_free(r);
    atomic_fetch_add(j->done, 1);
    aio_wait_kick();
}

static void test_concurrent_writers_in_two_iothreads(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "c.qcow2");
    GError *err = NULL;
    _Atomic int done = 0;

    assert_true(strata_create(img, CONC_SIZE + CONC_WRITERS * CONC_PRIV, "cluster_size=64k", &err));
    BlockBackend *blk = open_rw(img);
    IOThread *t[2] = {iothread_create("q2-a", NULL, &err), iothread_create("q2-b", NULL, &err)};
    assert_non_null(t[0]);
    assert_non_null(t[1]);

    ConcJob jobs[CONC_WRITERS];
    for (int i = 0; i < CONC_WRITERS; i++) {
        jobs[i] = (ConcJob){
            .blk = blk, .id = i, .seed = 1000 + i, .done = &done, .priv = g_malloc0(CONC_PRIV)};
        aio_co_enter(iothread_get_aio_context(t[i % 2]), co_create(conc_writer, &jobs[i]));
    }
    AIO_WAIT_WHILE(atomic_load(&done) < CONC_WRITERS);
    iothread_destroy(t[0]);
    iothread_destroy(t[1]);
    for (int i = 0; i < CONC_WRITERS; i++) {
        assert_int_equal(jobs[i].errors, 0);
    }

    uint8_t *buf = g_malloc(CONC_SIZE);
    assert_int_equal(blk_pread(blk, 0, CONC_SIZE, buf, 0), 0);
    for (int c = 0; c < CONC_SIZE / CONC_CHUNK; c++) {
        uint8_t *p = buf + (size_t)c * CONC_CHUNK;
        int64_t start = (int64_t)c * CONC_CHUNK;
        for (int i = 0; i < CONC_CHUNK; i++) {
            int64_t off = start + i;
            bool hot = off >= (1 << 20) + 7 && off < (1 << 20) + 7 + 131072;
            uint8_t want = i < 8 ? (uint8_t)c : 0x10 + c % CONC_WRITERS;
            if (hot) {
                /* Someone's byte: the owner's, or any writer's hot pattern. */
                if (p[i] != want && (p[i] < 0xa0 || p[i] >= 0xa0 + CONC_WRITERS)) {
                    fail_msg("hot byte 0x%" G_GINT64_MODIFIER "x = 0x%02x", off, p[i]);
                }
            } else if (p[i] != want) {
                fail_msg("byte 0x%" G_GINT64_MODIFIER "x = 0x%02x, want 0x%02x", off, p[i], want);
            }
        }
    }
    g_free(buf);
    for (int i = 0; i < CONC_WRITERS; i++) {
        uint8_t *p = g_malloc(CONC_PRIV);
        assert_int_equal(blk_pread(blk, CONC_SIZE + (int64_t)i * CONC_PRIV, CONC_PRIV, p, 0), 0);
        assert_memory_equal(p, jobs[i].priv, CONC_PRIV);
        g_free(p);
        g_free(jobs[i].priv);
    }
    assert_true(qcow2_cache_sanity(qcow2_state(blk)->l2_cache));
    assert_null(qcow2_state(blk)->allocs);
    /* Neighbouring chunks share clusters: some writers must have waited for others. */
    assert_true(qcow2_state(blk)->nb_alloc_waits > 0);
    blk_unref(blk);
    if (have_qemu_img) {
        assert_qemu_img_check_clean(img);
    }
}

/* ---- malicious and damaged images ------------------------------------------------------------ */

static void patch(const char *path, uint64_t off, const void *data, size_t len)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, data, len, off), (ssize_t)len);
    close(fd);
}

static void patch32(const char *path, uint64_t off, uint32_t v)
{
    uint8_t be[4];
    qcow2_st32(be, v);
    patch(path, off, be, 4);
}

static void patch64(const char *path, uint64_t off, uint64_t v)
{
    uint8_t be[8];
    qcow2_st64(be, v);
    patch(path, off, be, 8);
}

static uint64_t peek64(const char *path, uint64_t off)
{
    uint8_t be[8];
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, be, 8, off), 8);
    close(fd);
    return qcow2_ld64(be);
}

typedef struct BadHeader {
    const char *what;
    uint64_t off;
    int width; /* 4 or 8 bytes */
    uint64_t value;
    const char *msg;
} BadHeader;

/*
 * Layout of the template (1 MiB, 64 KiB clusters, made by Strata): header
 * at 0 with the feature table extension at 112, refcount table at 64 KiB,
 * refcount block at 128 KiB, L1 table at 192 KiB.
 */
static const BadHeader bad_headers[] = {
    {"magic", QH_MAGIC, 4, 0x51464900, "not in qcow2 format"},
    {"version 4", QH_VERSION, 4, 4, "Unsupported qcow2 version 4"},
    {"cluster bits 8", QH_CLUSTER_BITS, 4, 8, "Unsupported cluster size"},
    {"cluster bits 22", QH_CLUSTER_BITS, 4, 22, "Unsupported cluster size"},
    {"huge L1", QH_L1_SIZE, 4, 0x01000000, "Active L1 table too large"},
    {"L1 too small", QH_L1_SIZE, 4, 0, "L1 table is too small"},
    {"misaligned L1", QH_L1_OFFSET, 8, 0x30200, "Invalid L1 table offset"},
    {"L1 past 2^63", QH_L1_OFFSET, 8, 0xffffffffffff0000ULL, "Invalid L1 table offset"},
    {"misaligned refcount table", QH_RT_OFFSET, 8, 0x10001, "reference count table offset"},
    {"no refcount table", QH_RT_CLUSTERS, 4, 0, "does not contain a reference count table"},
    {"huge refcount table", QH_RT_CLUSTERS, 4, 0x1000, "Reference count table too large"},
    {"refcount order 7", QH_REFCOUNT_ORDER, 4, 7, "may not exceed 64 bits"},
    {"short header", QH_HEADER_LENGTH, 4, 96, "header too short"},
    {"unaligned header length", QH_HEADER_LENGTH, 4, 108, "multiple of 8"},
    {"header past its cluster", QH_HEADER_LENGTH, 4, 0x20000, "exceeds the cluster size"},
    {"unknown incompatible bit", QH_INCOMPAT, 8, 1ULL << 40,
     "Unsupported qcow2 feature(s): Unknown incompatible feature: 10000000000"},
    {"compression bit without type", QH_INCOMPAT, 8, QCOW2_INCOMPAT_COMPRESSION,
     "Compression type bit set"},
    {"too many snapshots", QH_NB_SNAPSHOTS, 4, 70000, "Snapshot table too large"},
    {"huge disk", QH_SIZE, 8, 1ULL << 62, "Image is too big"},
    {"encryption", QH_CRYPT, 4, 1, "Encrypted images are not supported"},
    {"backing name offset past the cluster", QH_BACKING_OFFSET, 8, 0x20000,
     "Invalid backing file offset"},
    {"extension longer than the cluster", 116, 4, 0x10000, "Header extension 0x6803f857 too large"},
    {"misaligned refcount table entry", 0x10000, 8, 0x20100, "Invalid refcount table entry"},
};

static void test_malicious_headers_are_refused_with_a_clear_error(void **state)
{
    Fixture *f = *state;
    g_autofree char *tmpl = path_in(f, "template.qcow2");
    g_autofree char *img = path_in(f, "bad.qcow2");
    g_autofree char *data = NULL;
    gsize len;
    GError *err = NULL;

    assert_true(strata_create(tmpl, 1 << 20, "", &err));
    assert_true(g_file_get_contents(tmpl, &data, &len, NULL));
    for (size_t i = 0; i < G_N_ELEMENTS(bad_headers); i++) {
        const BadHeader *b = &bad_headers[i];
        assert_true(g_file_set_contents(img, data, len, NULL));
        if (b->width == 4) {
            patch32(img, b->off, (uint32_t)b->value);
        } else {
            patch64(img, b->off, b->value);
        }
        BlockBackend *blk = open_qcow2(img, BDRV_O_RDWR, NULL, &err);
        if (blk || !strstr(err->message, b->msg)) {
            fail_msg("%s: %s", b->what, blk ? "opened" : err->message);
        }
        g_clear_error(&err);
    }

    /* A long backing file name, and an unknown feature named by the image's own table. */
    assert_true(g_file_set_contents(img, data, len, NULL));
    patch64(img, QH_BACKING_OFFSET, 0x1000);
    patch32(img, QH_BACKING_SIZE, 2000);
    assert_null(open_qcow2(img, BDRV_O_RDWR, NULL, &err));
    assert_non_null(strstr(err->message, "Backing file name too long"));
    g_clear_error(&err);

    assert_true(g_file_set_contents(img, data, len, NULL));
    /* Entry 4 of the table (at 120 + 4 * 48) names incompatible bit 4; make it bit 9. */
    uint8_t entry[48] = {0, 9};
    memcpy(entry + 2, "teleportation", 13);
    patch(img, 120 + 4 * 48, entry, sizeof(entry));
    patch64(img, QH_INCOMPAT, 1ULL << 9);
    assert_null(open_qcow2(img, 0, NULL, &err));
    assert_string_equal(err->message, "Unsupported qcow2 feature(s): teleportation");
    g_clear_error(&err);

    /* The corrupt bit: read-only access only. */
    assert_true(g_file_set_contents(img, data, len, NULL));
    patch64(img, QH_INCOMPAT, QCOW2_INCOMPAT_CORRUPT);
    assert_null(open_qcow2(img, BDRV_O_RDWR, NULL, &err));
    assert_non_null(strstr(err->message, "corrupt"));
    g_clear_error(&err);
    BlockBackend *blk = open_qcow2(img, 0, NULL, &err);
    assert_non_null(blk);
    blk_unref(blk);
}

/* Host offset of the L2 table of guest offset 0 in a Strata image with 64 KiB clusters. */
static uint64_t first_l2_table(const char *img)
{
    return peek64(img, 0x30000) & L1E_OFFSET_MASK;
}

static void test_bad_entries_fail_requests_and_mark_the_image_corrupt(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "e.qcow2");
    GError *err = NULL;
    uint8_t buf[4096];

    assert_true(strata_create(img, 1 << 20, "", &err));
    BlockBackend *blk = open_rw(img);
    memset(buf, 0x5a, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);
    assert_int_equal(blk_pwrite(blk, 65536, sizeof(buf), buf, 0), 0);
    blk_unref(blk);

    uint64_t l2 = first_l2_table(img);
    uint64_t e0 = peek64(img, l2);
    assert_true(e0 & QCOW2_OFLAG_COPIED);
    /* A reserved bit in the first entry. */
    patch64(img, l2, e0 | 0x2);

    blk = open_qcow2(img, 0, NULL, &err);
    assert_non_null(blk);
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), -EIO);
    blk_unref(blk);

    blk = open_rw(img);
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), -EIO);
    /* Once corrupt, nothing is written any more, even where the metadata is fine. */
    assert_int_equal(blk_pwrite(blk, 65536, sizeof(buf), buf, 0), -EIO);
    blk_unref(blk);
    assert_true(peek64(img, QH_INCOMPAT) & QCOW2_INCOMPAT_CORRUPT);
    assert_null(open_qcow2(img, BDRV_O_RDWR, NULL, &err));
    g_clear_error(&err);

    /* An entry claiming the refcount table as guest data: writing there must not happen. */
    patch64(img, QH_INCOMPAT, 0);
    patch64(img, l2, 0x10000 | QCOW2_OFLAG_COPIED);
    uint64_t rt0 = peek64(img, 0x10000);
    blk = open_rw(img);
    assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), -EIO);
    blk_unref(blk);
    assert_int_equal(peek64(img, 0x10000), rt0);
}

static void test_dirty_image_is_repaired_when_opened_read_write(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "lazy.qcow2");
    g_autofree char *crash = path_in(f, "crashed.qcow2");
    uint64_t size = 2 << 20;
    uint8_t *model = g_malloc(size);
    GError *err = NULL;

    assert_true(strata_create(img, size, "lazy_refcounts=on,cluster_size=4k", &err));
    BlockBackend *blk = open_rw(img);
    for (uint64_t i = 0; i < size; i++) {
        model[i] = (uint8_t)(i / 4096 + 1);
    }
    assert_int_equal(blk_pwrite(blk, 0, size, model, 0), 0);
    assert_int_equal(blk_flush(blk), 0);

    /* "Crash": keep the file as it is now, dirty, and lose refcount updates too. */
    g_autofree char *data = NULL;
    gsize len;
    assert_true(g_file_get_contents(img, &data, &len, NULL));
    assert_true(g_file_set_contents(crash, data, len, NULL));
    assert_true(peek64(crash, QH_INCOMPAT) & QCOW2_INCOMPAT_DIRTY);
    uint8_t zero[2048] = {0};
    patch(crash, 0x2000 + 100, zero, sizeof(zero)); /* refcount block at cluster 2 */

    /* A clean close clears the dirty bit. */
    blk_unref(blk);
    assert_false(peek64(img, QH_INCOMPAT) & QCOW2_INCOMPAT_DIRTY);

    /* Read-only: served as it is. */
    blk = open_qcow2(crash, 0, NULL, &err);
    assert_non_null(blk);
    assert_reads_as(blk, model, size);
    blk_unref(blk);
    if (have_qemu_img) {
        assert_int_not_equal(run(NULL, "qemu-img check '%s'", crash), 0);
    }
    /* Read-write: refcounts rebuilt first, then business as usual. */
    blk = open_rw(crash);
    assert_false(qcow2_state(blk)->incompat & QCOW2_INCOMPAT_DIRTY);
    memset(model + 8192, 0x77, 100000);
    assert_int_equal(blk_pwrite(blk, 8192, 100000, model + 8192, 0), 0);
    assert_reads_as(blk, model, size);
    blk_unref(blk);
    assert_false(peek64(crash, QH_INCOMPAT) & QCOW2_INCOMPAT_DIRTY);
    if (have_qemu_img) {
        g_autofree char *raw = path_in(f, "crashed.raw");
        write_file(raw, model, size);
        assert_qemu_img_check_clean(crash);
        assert_qemu_img_compare_equal(crash, "qcow2", raw, "raw");
    }
    g_free(model);
}

typedef struct CheckCo {
    BlockDriverState *bs;
    BdrvCheckResult res;
    BdrvCheckMode fix;
    int ret;
} CheckCo;

static void coroutine_fn check_entry(void *opaque)
{
    CheckCo *c = opaque;
    bdrv_graph_co_rdlock();
    c->ret = c->bs->drv->co_check(c->bs, &c->res, c->fix);
    bdrv_graph_co_rdunlock();
}

static void test_check_finds_and_fixes_leaks_and_corruptions(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "chk.qcow2");
    GError *err = NULL;
    uint8_t buf[65536];

    assert_true(strata_create(img, 1 << 20, "", &err));
    BlockBackend *blk = open_rw(img);
    memset(buf, 1, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);
    blk_unref(blk);
    /*
     * 16-bit refcounts in the block at 128 KiB: the data cluster leaks to 2,
     * and cluster 9 (past the end of the file) gets a refcount.
     */
    uint64_t data = (peek64(img, first_l2_table(img)) & L2E_OFFSET_MASK) >> 16;
    uint8_t two[2] = {0, 2}, one[2] = {0, 1};
    patch(img, 0x20000 + data * 2, two, 2);
    patch(img, 0x20000 + 9 * 2, one, 2);
    if (have_qemu_img) {
        g_autofree char *out = NULL;
        /* qemu-img agrees on the data cluster (it does not look past the end of the file). */
        assert_int_equal(run(&out, "qemu-img check '%s'", img), 2);
        assert_non_null(strstr(out, "1 leaked clusters"));
        assert_non_null(strstr(out, "1 errors were found"));
    }

    blk = open_rw(img);
    CheckCo c = {.bs = blk_bs(blk)};
    bdrv_run_co(check_entry, &c);
    assert_int_equal(c.ret, 0);
    assert_int_equal(c.res.leaks, 2);
    /* The data cluster has refcount 2 but its L2 entry says COPIED: that is an error too. */
    assert_int_equal(c.res.corruptions, 1);
    c.fix = BDRV_FIX_LEAKS | BDRV_FIX_ERRORS;
    bdrv_run_co(check_entry, &c);
    assert_int_equal(c.ret, 0);
    assert_int_equal(c.res.leaks_fixed, 2);
    c.fix = 0;
    bdrv_run_co(check_entry, &c);
    assert_int_equal(c.res.leaks + c.res.corruptions, 0);
    assert_int_equal(c.res.allocated_clusters, 1);
    blk_unref(blk);
    if (have_qemu_img) {
        assert_qemu_img_check_clean(img);
    }
}

/* Regression (fuzzer): a repair of a 64-bit refcount 2^63 or more too high negated INT64_MIN. */
static void test_check_repairs_64_bit_refcounts_far_too_high(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "rc64.qcow2");
    GError *err = NULL;
    uint8_t buf[65536];

    assert_true(strata_create(img, 1 << 20, "refcount_bits=64", &err));
    BlockBackend *blk = open_rw(img);
    memset(buf, 1, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);
    blk_unref(blk);
    uint64_t rb = peek64(img, peek64(img, QH_RT_OFFSET)) & RTE_OFFSET_MASK;
    uint64_t l2 = first_l2_table(img);
    uint64_t data = peek64(img, l2) & L2E_OFFSET_MASK;
    patch64(img, rb + (data >> 16) * 8, (1ULL << 63) + 1); /* 2^63 too high */
    patch64(img, rb + (l2 >> 16) * 8, UINT64_MAX);         /* more than an int64_t delta */

    blk = open_rw(img);
    CheckCo c = {.bs = blk_bs(blk), .fix = BDRV_FIX_LEAKS | BDRV_FIX_ERRORS};
    bdrv_run_co(check_entry, &c);
    assert_int_equal(c.ret, 0);
    assert_int_equal(c.res.leaks_fixed, 2);
    c.fix = 0;
    bdrv_run_co(check_entry, &c);
    assert_int_equal(c.res.leaks + c.res.corruptions, 0);
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), 0);
    assert_int_equal(buf[0], 1);
    blk_unref(blk);
    if (have_qemu_img) {
        assert_qemu_img_check_clean(img);
    }
}

/* ---- header maintenance --------------------------------------------------------------------- */

static void test_unknown_autoclear_bits_are_cleared_before_the_first_write(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "ac.qcow2");
    GError *err = NULL;
    uint8_t buf[512] = {0};

    assert_true(strata_create(img, 1 << 20, "", &err));
    patch64(img, QH_AUTOCLEAR, (1ULL << 7) | (1ULL << 33));
    BlockBackend *blk = open_rw(img);
    assert_int_equal(blk_pread(blk, 0, sizeof(buf), buf, 0), 0);
    assert_int_equal(peek64(img, QH_AUTOCLEAR), (1ULL << 7) | (1ULL << 33));
    assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);
    assert_int_equal(peek64(img, QH_AUTOCLEAR), 0);
    blk_unref(blk);
    if (have_qemu_img) {
        assert_qemu_img_check_clean(img);
    }
}

/* ---- zeroes, discard, resize, block status --------------------------------------------------- */

static int64_t file_length(const char *path)
{
    GStatBuf st;
    assert_int_equal(g_stat(path, &st), 0);
    return st.st_size;
}

static void test_zeroes_and_discards_free_clusters_for_reuse(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "z.qcow2");
    GError *err = NULL;
    uint64_t mib = 1 << 20;
    uint8_t *buf = g_malloc(mib);
    int64_t pnum;

    assert_true(strata_create(img, 8 * mib, "", &err));
    BlockBackend *blk = open_rw(img);
    /* Zeroing a whole empty disk allocates nothing. */
    assert_int_equal(blk_pwrite_zeroes(blk, 0, 8 * mib, 0), 0);
    memset(buf, 0xcc, mib);
    assert_int_equal(blk_pwrite(blk, 0, mib, buf, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    int64_t len1 = file_length(img);
    assert_true(len1 < 2 * (int64_t)mib);

    /* Zero with unmap: clusters freed, reads zeroes, status says so. */
    assert_int_equal(blk_pwrite_zeroes(blk, 0, mib / 2, BDRV_REQ_MAY_UNMAP), 0);
    assert_true(blk_block_status(blk, 0, mib, &pnum, NULL, NULL) & BDRV_BLOCK_ZERO);
    assert_int_equal(pnum, mib / 2);
    /* Zero without unmap: the clusters stay allocated (and read zeroes). */
    assert_int_equal(blk_pwrite_zeroes(blk, mib / 2, mib / 4, 0), 0);
    int st = blk_block_status(blk, mib / 2, mib, &pnum, NULL, NULL);
    assert_true((st & BDRV_BLOCK_ZERO) && (st & BDRV_BLOCK_OFFSET_VALID));
    assert_int_equal(pnum, mib / 4);
    /* Discard the rest; then 1 MiB of new data fits in what was freed. */
    assert_int_equal(blk_pdiscard(blk, mib / 2, mib / 2), 0);
    assert_int_equal(blk_pwrite(blk, 4 * mib, mib, buf, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    assert_true(file_length(img) <= len1 + 65536);

    uint8_t *back = g_malloc(mib);
    assert_int_equal(blk_pread(blk, 0, mib, back, 0), 0);
    for (uint64_t i = 0; i < mib; i++) {
        assert_int_equal(back[i], 0);
    }
    assert_int_equal(blk_pread(blk, 4 * mib, mib, back, 0), 0);
    assert_memory_equal(back, buf, mib);
    blk_unref(blk);
    if (have_qemu_img) {
        assert_qemu_img_check_clean(img);
    }
    g_free(buf);
    g_free(back);
}

/* Bytes the file takes on disk. */
static uint64_t disk_usage(const char *path)
{
    GStatBuf st;
    assert_int_equal(g_stat(path, &st), 0);
    return (uint64_t)st.st_blocks * 512;
}

/* `qemu-img map --output=json` of @img (run from its directory). */
static char *qemu_map(const char *img)
{
    char *out = NULL;
    g_autofree char *dir = g_path_get_dirname(img);
    assert_int_equal(run(&out, "cd '%s' && qemu-img map --output=json '%s'", dir, img), 0);
    return out;
}

/*
 * An overlay of 4 KiB clusters over 24 MiB (12 L2 tables) written by qemu-io:
 * a run crossing L2 tables (their clusters interleave with its data), a
 * discarded hole in it refilled by writes in reverse guest order, every
 * third cluster of 8 MiB, compressed clusters and zero clusters with and
 * without an allocation.  Emptying it (make_empty, as after a commit) and
 * discarding all of it must free every one of those clusters: qemu-img
 * check finds no leak; the emptied image reads as its backing file and maps
 * nothing of its own, and its file gives the space back; the discarded one
 * is exactly what qemu-io's discard makes of the same image (zero clusters
 * over the backing file).
 */
static void test_emptying_and_discarding_many_l2_tables_of_scattered_clusters(void **state)
{
    Fixture *f = *state;
    g_autofree char *base = path_in(f, "base.qcow2");
    g_autofree char *top = path_in(f, "top.qcow2");
    g_autofree char *disc = path_in(f, "disc.qcow2");
    g_autofree char *ref = path_in(f, "ref.qcow2");
    g_autofree char *cmds = path_in(f, "cmds");
    GString *c = g_string_new("write -P 1 0 5M\ndiscard 1M 256k\n");
    skip_without_qemu_img();

    for (int i = 63; i >= 0; i--) {
        g_string_append_printf(c, "write -P 2 %d 4k\n", (6 << 20) + i * 4096);
    }
    for (int off = 8 << 20; off < 16 << 20; off += 3 * 4096) {
        g_string_append_printf(c, "write -P 3 %d 4k\n", off);
    }
    g_string_append(c, "write -c -P 4 20M 64k\nwrite -z 22M 64k\n"
                       "write -P 5 23M 64k\nwrite -z 23M 32k\n");
    write_file(cmds, c->str, c->len);
    g_string_free(c, true);
    assert_int_equal(run(NULL,
                         "cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=4k base.qcow2 24M "
                         "&& qemu-io -c 'write -P 0x5a 0 24M' base.qcow2 >/dev/null && "
                         "qemu-img create -q -f qcow2 -o cluster_size=4k -b base.qcow2 -F qcow2 "
                         "top.qcow2 24M && qemu-io top.qcow2 <cmds >/dev/null && "
                         "cp top.qcow2 disc.qcow2 && cp top.qcow2 ref.qcow2",
                         f->dir),
                     0);
    assert_qemu_img_check_clean(top);
    uint64_t used = disk_usage(top);
    assert_true(used > (6 << 20));

    BlockBackend *blk = open_rw(top);
    BDRVQcow2State *s = qcow2_state(blk);
    assert_true(s->l2_entries * s->cluster_size == 2 << 20);
    assert_int_equal(blk_bs(blk)->drv->make_empty(blk_bs(blk)), 0);
    blk_unref(blk);
    assert_qemu_img_check_clean(top);
    assert_qemu_img_compare_equal(top, "qcow2", base, "qcow2");
    g_autofree char *map = qemu_map(top);
    assert_null(strstr(map, "\"depth\": 0"));
    /* Metadata only: header, L1, refcount structures, 12 L2 tables. */
    assert_true(disk_usage(top) < (256 << 10));

    blk = open_rw(disc);
    assert_int_equal(blk_pdiscard(blk, 0, 24 << 20), 0);
    blk_unref(blk);
    assert_int_equal(
        run(NULL, "cd '%s' && qemu-io -c 'discard 0 24M' ref.qcow2 >/dev/null", f->dir), 0);
    assert_qemu_img_check_clean(disc);
    assert_qemu_img_compare_equal(disc, "qcow2", ref, "qcow2");
    g_autofree char *map_disc = qemu_map(disc);
    g_autofree char *map_ref = qemu_map(ref);
    assert_string_equal(map_disc, map_ref);
    assert_int_equal(run(NULL, "cd '%s' && qemu-io -c 'read -P 0 0 24M' disc.qcow2", f->dir), 0);
}

static void test_resize_grows_and_shrinks(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "r.qcow2");
    GError *err = NULL;
    uint64_t mib = 1 << 20, size = 8 * mib, cut = mib + 3 * 512;
    uint8_t *model = g_malloc0(size);

    /* 4 KiB clusters: an L2 table maps 2 MiB, so shrinking drops whole tables. */
    assert_true(strata_create(img, 6 * mib, "cluster_size=4k", &err));
    BlockBackend *blk = open_rw(img);
    memset(model, 0x3c, 6 * mib);
    assert_int_equal(blk_pwrite(blk, 0, 6 * mib, model, 0), 0);

    assert_int_equal(blk_truncate(blk, size, true, PREALLOC_MODE_OFF, 0, &err), 0);
    assert_int_equal(blk_getlength(blk), size);
    assert_reads_as(blk, model, size);

    assert_int_equal(blk_truncate(blk, cut, true, PREALLOC_MODE_OFF, 0, &err), 0);
    assert_int_equal(blk_getlength(blk), cut);
    memset(model + cut, 0, size - cut);
    /* Growing again: nothing of the old data past the cut may come back. */
    assert_int_equal(blk_truncate(blk, size, true, PREALLOC_MODE_METADATA, 0, &err), 0);
    assert_reads_as(blk, model, size);
    assert_int_not_equal(blk_truncate(blk, size + 100, true, PREALLOC_MODE_OFF, 0, &err), 0);
    g_clear_error(&err);
    blk_unref(blk);
    if (have_qemu_img) {
        g_autofree char *raw = path_in(f, "r.raw");
        write_file(raw, model, size);
        assert_qemu_img_check_clean(img);
        assert_qemu_img_compare_equal(img, "qcow2", raw, "raw");
    }
    g_free(model);
}

/* ---- write ordering -----------------------------------------------------------------------------
 */

/*
 * "q2-log": a protocol driver on a host file that records every write and
 * flush, so that the order in which qcow2 metadata reaches the file can be
 * checked.  Plain synchronous syscalls; main thread only.
 */
typedef struct LogOp {
    char op; /* 'W' (write), 'F' (flush) or 'D' (discard) */
    uint64_t offset, bytes;
} LogOp;

static GArray *log_ops;

typedef struct LogState {
    int fd;
} LogState;

static void log_record(char op, uint64_t offset, uint64_t bytes)
{
    LogOp o = {op, offset, bytes};
    g_array_append_val(log_ops, o);
}

static bool log_open(BlockDriverState *bs, GHashTable *options, int flags, GError **errp)
{
    LogState *s = bs->opaque;
    g_autofree char *name = opts_take_str(options, "filename");
    s->fd = open(name, (flags & BDRV_O_RDWR) ? O_RDWR : O_RDONLY);
    if (s->fd < 0) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOENT, "cannot open %s", name);
        return false;
    }
    return true;
}

static void log_close(BlockDriverState *bs)
{
    close(((LogState *)bs->opaque)->fd);
}

static int coroutine_fn log_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   IOVector *qiov, BdrvRequestFlags flags)
{
    LogState *s = bs->opaque;
    g_autofree uint8_t *buf = g_malloc0(bytes);
    if (pread(s->fd, buf, bytes, offset) < 0) {
        return -errno;
    }
    iov_from_buf(qiov, 0, buf, bytes);
    return 0;
}

static int coroutine_fn log_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                    IOVector *qiov, BdrvRequestFlags flags)
{
    LogState *s = bs->opaque;
    g_autofree uint8_t *buf = g_malloc(bytes);
    iov_to_buf(qiov, 0, buf, bytes);
    log_record('W', offset, bytes);
    return pwrite(s->fd, buf, bytes, offset) == bytes ? 0 : -EIO;
}

static int coroutine_fn log_flush(BlockDriverState *bs)
{
    log_record('F', 0, 0);
    return fdatasync(((LogState *)bs->opaque)->fd) < 0 ? -errno : 0;
}

static int coroutine_fn log_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    log_record('D', offset, bytes);
    int ret = fallocate(((LogState *)bs->opaque)->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        offset, bytes);
    return ret < 0 ? -errno : 0;
}

static int64_t coroutine_fn log_getlength(BlockDriverState *bs)
{
    GStatBuf st;
    return fstat(((LogState *)bs->opaque)->fd, &st) < 0 ? -errno : st.st_size;
}

static int coroutine_fn log_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                     PreallocMode prealloc, BdrvRequestFlags flags, GError **errp)
{
    return ftruncate(((LogState *)bs->opaque)->fd, offset) < 0 ? -errno : 0;
}

static BlockDriver log_driver = {
    .format_name = "q2-log",
    .protocol_name = "q2-log",
    .is_protocol = true,
    .instance_size = sizeof(LogState),
    .open = log_open,
    .close = log_close,
    .co_preadv = log_preadv,
    .co_pwritev = log_pwritev,
    .co_flush_to_disk = log_flush,
    .co_pdiscard = log_pdiscard,
    .co_getlength = log_getlength,
    .co_truncate = log_truncate,
};

/* Index of the last write covering host @offset, or -1. */
static int last_write_at(uint64_t offset)
{
    for (int i = (int)log_ops->len - 1; i >= 0; i--) {
        LogOp *o = &g_array_index(log_ops, LogOp, i);
        if (o->op == 'W' && o->offset <= offset && offset < o->offset + o->bytes) {
            return i;
        }
    }
    return -1;
}

/* True when a flush lies strictly between log entries @a and @b. */
static bool flush_between(int a, int b)
{
    for (int i = a + 1; i < b; i++) {
        if (g_array_index(log_ops, LogOp, i).op == 'F') {
            return true;
        }
    }
    return false;
}

static void test_metadata_reaches_the_file_in_crash_safe_order(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "o.qcow2");
    GError *err = NULL;
    uint8_t buf[4096];

    /* 64 KiB clusters: header 0, refcount table 64k, refcount block 128k, L1 192k. */
    assert_true(strata_create(img, 4 << 20, "", &err));
    bdrv_register(&log_driver);
    log_ops = g_array_new(false, false, sizeof(LogOp));
    g_autofree char *kv = g_strdup_printf("file.driver=q2-log,file.filename=%s", img);
    BlockBackend *blk = open_qcow2(NULL, BDRV_O_RDWR | BDRV_O_UNMAP, kv, &err);
    if (!blk) {
        fail_msg("open: %s", err->message);
    }
    BDRVQcow2State *s = qcow2_state(blk);

    /* First write: new L2 table, new data cluster, new refcounts. */
    memset(buf, 0x42, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    uint64_t l2 = s->l1_table[0] & L1E_OFFSET_MASK;
    int w_l1 = last_write_at(0x30000), w_rb = last_write_at(0x20000);
    int w_l2 = last_write_at(l2);
    int w_data = last_write_at(peek64(img, l2) & L2E_OFFSET_MASK);
    assert_true(w_l1 >= 0 && w_rb >= 0 && w_l2 >= 0 && w_data >= 0);
    /* Refcounts, then the data, before the L2 entry that points at the data. */
    assert_true(w_rb < w_l2 && flush_between(w_rb, w_l2));
    assert_true(w_data < w_l2 && flush_between(w_data, w_l2));
    /* The L2 table itself is stable before the L1 entry names it. */
    int w_l2_first = -1;
    for (guint i = 0; i < log_ops->len; i++) {
        LogOp *o = &g_array_index(log_ops, LogOp, i);
        if (o->op == 'W' && o->offset == l2) {
            w_l2_first = i;
            break;
        }
    }
    assert_true(w_l2_first < w_l1 && flush_between(w_l2_first, w_l1));

    /* Second cluster, same L2 table. */
    g_array_set_size(log_ops, 0);
    assert_int_equal(blk_pwrite(blk, 65536, sizeof(buf), buf, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    w_rb = last_write_at(0x20000);
    w_l2 = last_write_at(l2);
    assert_true(w_rb >= 0 && w_l2 >= 0);
    assert_true(w_rb < w_l2 && flush_between(w_rb, w_l2));
    assert_true(flush_between(0, w_l2));
    assert_int_equal(last_write_at(0x30000), -1); /* L1 untouched */

    /* Into a zeroed cluster that stays allocated: no new refcount, the data still goes first. */
    assert_int_equal(blk_pwrite_zeroes(blk, 65536, 65536, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    g_array_set_size(log_ops, 0);
    assert_int_equal(blk_pwrite(blk, 65536 + 8192, sizeof(buf), buf, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    uint64_t host1 = peek64(img, l2 + 8) & L2E_OFFSET_MASK;
    w_data = last_write_at(host1 + 8192);
    w_l2 = last_write_at(l2);
    assert_true(w_data >= 0 && w_l2 >= 0);
    assert_true(w_data < w_l2 && flush_between(w_data, w_l2));
    assert_int_equal(last_write_at(0x20000), -1); /* no refcount changed */

    /* Discard: the L2 entry goes before the refcount drops. */
    g_array_set_size(log_ops, 0);
    assert_int_equal(blk_pdiscard(blk, 0, 65536), 0);
    assert_int_equal(blk_flush(blk), 0);
    w_rb = last_write_at(0x20000);
    w_l2 = last_write_at(l2);
    assert_true(w_rb >= 0 && w_l2 >= 0);
    assert_true(w_l2 < w_rb && flush_between(w_l2, w_rb));
    blk_unref(blk);
    g_array_unref(log_ops);
    if (have_qemu_img) {
        assert_qemu_img_check_clean(img);
    }
}

/* Index of the first discard covering host @offset, or -1. */
static int first_discard_at(uint64_t offset)
{
    for (guint i = 0; i < log_ops->len; i++) {
        LogOp *o = &g_array_index(log_ops, LogOp, i);
        if (o->op == 'D' && o->offset <= offset && offset < o->offset + o->bytes) {
            return i;
        }
    }
    return -1;
}

/*
 * Emptying an overlay after a commit: its clusters are discarded in the file
 * only after the L2 tables that named them are written and flushed, so a
 * crash in between shows the old data or the backing file, never zeroes.
 * The L2 tables also go before the refcounts drop.
 */
static void test_emptying_an_overlay_punches_data_only_after_its_l2_tables(void **state)
{
    Fixture *f = *state;
    g_autofree char *base = path_in(f, "base.qcow2");
    g_autofree char *top = path_in(f, "top.qcow2");
    GError *err = NULL;
    skip_without_qemu_img();

    assert_int_equal(run(NULL, "qemu-img create -q -f qcow2 '%s' 4M", base), 0);
    assert_int_equal(run(NULL,
                         "cd '%s' && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "
                         "top.qcow2 4M && qemu-io -c 'write -P 0x11 0 1M' top.qcow2",
                         f->dir),
                     0);
    bdrv_register(&log_driver);
    log_ops = g_array_new(false, false, sizeof(LogOp));
    g_autofree char *kv = g_strdup_printf("file.driver=q2-log,file.filename=%s", top);
    BlockBackend *blk = open_qcow2(NULL, BDRV_O_RDWR | BDRV_O_UNMAP, kv, &err);
    if (!blk) {
        fail_msg("open: %s", err->message);
    }
    BDRVQcow2State *s = qcow2_state(blk);
    uint64_t l2 = s->l1_table[0] & L1E_OFFSET_MASK;
    uint64_t data = peek64(top, l2) & L2E_OFFSET_MASK;
    assert_true(l2 && data);

    assert_int_equal(blk_bs(blk)->drv->make_empty(blk_bs(blk)), 0);
    int w_l2 = last_write_at(l2), w_rb = last_write_at(0x20000), d = first_discard_at(data);
    assert_true(w_l2 >= 0 && w_rb >= 0 && d >= 0);
    assert_true(w_l2 < d && flush_between(w_l2, d));
    assert_true(w_l2 < w_rb && flush_between(w_l2, w_rb));
    /* One discard for the 16 host-contiguous clusters. */
    assert_int_equal(g_array_index(log_ops, LogOp, d).bytes, 1 << 20);
    blk_unref(blk);
    g_array_unref(log_ops);
    assert_qemu_img_check_clean(top);
    assert_qemu_img_compare_equal(top, "qcow2", base, "qcow2");
}

/* ---- refcount structure growth, probing ---------------------------------------------------- */

static void test_refcount_table_grows_as_the_image_fills(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "g.qcow2");
    GError *err = NULL;
    uint64_t size = 3 << 20;
    uint8_t *model = g_malloc(size);

    /* 512-byte clusters, 64-bit refcounts: one block counts 64 clusters, the table 64 blocks. */
    assert_true(strata_create(img, size, "cluster_size=512,refcount_bits=64", &err));
    BlockBackend *blk = open_rw(img);
    uint64_t rt_before = qcow2_state(blk)->refcount_table_offset;
    for (uint64_t i = 0; i < size; i++) {
        model[i] = (uint8_t)(i >> 9) ^ (uint8_t)(i * 3);
    }
    for (uint64_t off = 0; off < size; off += 65536 + 512) {
        uint64_t n = MIN(65536 + 512, size - off);
        assert_int_equal(blk_pwrite(blk, off, n, model + off, 0), 0);
    }
    assert_int_not_equal(qcow2_state(blk)->refcount_table_offset, rt_before);
    assert_true(qcow2_state(blk)->refcount_table_size > 64);
    assert_reads_as(blk, model, size);
    blk_unref(blk);

    blk = open_rw(img);
    assert_reads_as(blk, model, size);
    blk_unref(blk);
    if (have_qemu_img) {
        g_autofree char *raw = path_in(f, "g.raw");
        write_file(raw, model, size);
        assert_qemu_img_check_clean(img);
        assert_qemu_img_compare_equal(img, "qcow2", raw, "raw");
    }
    g_free(model);
}

static void test_the_format_is_probed(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "p.qcow2");
    GError *err = NULL;
    assert_true(strata_create(img, 1 << 20, "compat=0.10", &err));
    BlockBackend *blk = blk_new_open(img, NULL, 0, &err);
    assert_non_null(blk);
    assert_string_equal(bdrv_get_format_name(blk_bs(blk)), "qcow2");
    BlockDriverInfo bdi = {0};
    assert_int_equal(blk_bs(blk)->drv->get_info(blk_bs(blk), &bdi), 0);
    assert_int_equal(bdi.cluster_size, 65536);
    assert_false(bdi.is_dirty);
    blk_unref(blk);
}

/* ---- reopen, backing file changes, preallocation over a backing file ------------------------ */

static void test_reopen_read_only_and_back_keeps_the_image_clean(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "ro.qcow2");
    GError *err = NULL;
    uint8_t buf[8192];

    assert_true(strata_create(img, 1 << 20, "lazy_refcounts=on", &err));
    BlockBackend *blk = open_rw(img);
    BlockDriverState *bs = blk_bs(blk);
    memset(buf, 0x81, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 5000, sizeof(buf), buf, 0), 0);
    assert_true(peek64(img, QH_INCOMPAT) & QCOW2_INCOMPAT_DIRTY);

    /* Going read-only writes everything back and leaves the image clean. */
    uint64_t perm, shared;
    blk_get_perm(blk, &perm, &shared);
    assert_true(blk_set_perm(blk, BLK_PERM_CONSISTENT_READ, shared, &err));
    if (!bdrv_reopen_set_read_only(bs, true, &err)) {
        fail_msg("reopen ro: %s", err->message);
    }
    assert_false(peek64(img, QH_INCOMPAT) & QCOW2_INCOMPAT_DIRTY);
    if (have_qemu_img) {
        g_autofree char *out = NULL;
        assert_int_equal(run(&out, "qemu-img check -U '%s'", img), 0);
    }
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), -EPERM);
    if (!bdrv_reopen_set_read_only(bs, false, &err)) {
        fail_msg("reopen rw: %s", err->message);
    }
    assert_true(blk_set_perm(blk, perm, shared, &err));
    assert_int_equal(blk_pwrite(blk, 100000, sizeof(buf), buf, 0), 0);
    assert_true(peek64(img, QH_INCOMPAT) & QCOW2_INCOMPAT_DIRTY);
    uint8_t back[sizeof(buf)];
    assert_int_equal(blk_pread(blk, 5000, sizeof(back), back, 0), 0);
    assert_memory_equal(back, buf, sizeof(buf));
    blk_unref(blk);
    assert_false(peek64(img, QH_INCOMPAT) & QCOW2_INCOMPAT_DIRTY);
    if (have_qemu_img) {
        assert_qemu_img_check_clean(img);
    }
}

static void test_backing_file_name_can_be_changed(void **state)
{
    Fixture *f = *state;
    g_autofree char *a = path_in(f, "a.qcow2");
    g_autofree char *b = path_in(f, "b.qcow2");
    g_autofree char *top = path_in(f, "top.qcow2");
    GError *err = NULL;

    assert_true(strata_create(a, 1 << 20, "", &err));
    assert_true(strata_create(b, 1 << 20, "", &err));
    assert_true(strata_create(top, 1 << 20, "backing_file=a.qcow2,backing_fmt=qcow2", &err));
    BlockBackend *blk = open_rw(top);
    BlockDriverState *bs = blk_bs(blk);
    assert_string_equal(bs->backing_file, "a.qcow2");
    assert_int_equal(bs->drv->change_backing_file(bs, "b.qcow2", "qcow2"), 0);
    assert_string_equal(bs->backing_file, "b.qcow2");
    blk_unref(blk);

    blk = open_rw(top);
    assert_string_equal(blk_bs(blk)->backing_file, "b.qcow2");
    assert_string_equal(blk_bs(blk)->backing_format, "qcow2");
    /* Emptied, the overlay reads as its (new) backing file: zeroes here. */
    uint8_t buf[4096];
    memset(buf, 0x99, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 8192, sizeof(buf), buf, 0), 0);
    assert_int_equal(blk_bs(blk)->drv->make_empty(blk_bs(blk)), 0);
    int64_t pnum;
    assert_int_equal(
        bdrv_is_allocated_above(blk_bs(blk), blk_bs(blk)->backing->bs, false, 0, 1 << 20, &pnum),
        0);
    assert_int_equal(pnum, 1 << 20);
    assert_int_equal(blk_pread(blk, 8192, sizeof(buf), buf, 0), 0);
    assert_int_equal(buf[0], 0);
    blk_unref(blk);
    if (have_qemu_img) {
        g_autofree char *out = NULL;
        assert_int_equal(run(&out, "qemu-img info '%s'", top), 0);
        assert_non_null(strstr(out, "backing file: b.qcow2"));
        assert_qemu_img_check_clean(top);
    }
}

static void test_preallocated_extended_l2_overlay_shows_its_backing_file(void **state)
{
    Fixture *f = *state;
    g_autofree char *base = path_in(f, "base.qcow2");
    g_autofree char *top = path_in(f, "top.qcow2");
    GError *err = NULL;
    uint64_t size = 1 << 20;
    uint8_t *model = g_malloc(size);

    assert_true(strata_create(base, size, "cluster_size=4k", &err));
    BlockBackend *blk = open_rw(base);
    for (uint64_t i = 0; i < size; i++) {
        model[i] = (uint8_t)(i / 1000);
    }
    assert_int_equal(blk_pwrite(blk, 0, size, model, 0), 0);
    blk_unref(blk);

    assert_true(strata_create(top, size,
                              "backing_file=base.qcow2,backing_fmt=qcow2,extended_l2=on,"
                              "preallocation=metadata",
                              &err));
    blk = open_rw(top);
    assert_reads_as(blk, model, size);
    Workload w = {
        .rand = g_rand_new_with_seed(9), .model = model, .size = size, .unit = 2048, .below = NULL};
    g_autofree uint8_t *below = g_memdup2(model, size);
    w.below = below;
    run_workload(&w, blk, 80);
    g_rand_free(w.rand);
    blk_unref(blk);
    if (have_qemu_img) {
        g_autofree char *raw = path_in(f, "top.raw");
        write_file(raw, model, size);
        assert_qemu_img_check_clean(top);
        assert_qemu_img_compare_equal(top, "qcow2", raw, "raw");
    }
    g_free(model);
}

/*
 * "q2-zlog": the q2-log driver that can also zero a range cheaply (logged
 * as 'Z'), as the file driver does with FALLOC_FL_ZERO_RANGE.
 */
static bool zlog_open(BlockDriverState *bs, GHashTable *options, int flags, GError **errp)
{
    bs->supported_zero_flags = BDRV_REQ_NO_FALLBACK;
    return log_open(bs, options, flags, errp);
}

static int coroutine_fn zlog_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                           BdrvRequestFlags flags)
{
    LogState *s = bs->opaque;
    log_record('Z', offset, bytes);
    if (fallocate(s->fd, FALLOC_FL_ZERO_RANGE, offset, bytes) == 0) {
        return 0;
    }
    g_autofree uint8_t *zeroes = g_malloc0(bytes);
    return pwrite(s->fd, zeroes, bytes, offset) == bytes ? 0 : -EIO;
}

static BlockDriver zlog_driver = {
    .format_name = "q2-zlog",
    .protocol_name = "q2-zlog",
    .is_protocol = true,
    .instance_size = sizeof(LogState),
    .open = zlog_open,
    .close = log_close,
    .co_preadv = log_preadv,
    .co_pwritev = log_pwritev,
    .co_pwrite_zeroes = zlog_pwrite_zeroes,
    .co_flush_to_disk = log_flush,
    .co_pdiscard = log_pdiscard,
    .co_getlength = log_getlength,
    .co_truncate = log_truncate,
};

/* Index of the first log entry of kind @op that covers host @offset, or -1. */
static int first_op_at(char op, uint64_t offset)
{
    for (guint i = 0; i < log_ops->len; i++) {
        LogOp *o = &g_array_index(log_ops, LogOp, i);
        if (o->op == op && o->offset <= offset && offset < o->offset + o->bytes) {
            return (int)i;
        }
    }
    return -1;
}

/*
 * Guards the zero copy-on-write shortcut (qcow2-io.c, write_zeroed_alloc):
 * a small write into a fresh cluster of an image without a backing file
 * has the file zero the cluster and writes only the guest data, both
 * before the L2 entry (with a flush in between); a write whose
 * copy-on-write is small still goes out as one write of the cluster.
 */
static void test_a_small_write_into_a_fresh_cluster_has_the_file_zero_the_rest(void **state)
{
    Fixture *f = *state;
    g_autofree char *img = path_in(f, "z.qcow2");
    GError *err = NULL;
    uint64_t cs = 65536;
    uint8_t *buf = g_malloc(cs), *got = g_malloc(2 * cs), *want = g_malloc0(2 * cs);

    assert_true(strata_create(img, 4 << 20, "", &err));
    bdrv_register(&zlog_driver);
    log_ops = g_array_new(false, false, sizeof(LogOp));
    g_autofree char *kv = g_strdup_printf("file.driver=q2-zlog,file.filename=%s", img);
    BlockBackend *blk = open_qcow2(NULL, BDRV_O_RDWR, kv, &err);
    if (!blk) {
        fail_msg("open: %s", err->message);
    }
    BDRVQcow2State *s = qcow2_state(blk);

    /* 4 KiB in the middle of cluster 0: 60 KiB of zeroes to keep. */
    memset(buf, 0x5a, cs);
    assert_int_equal(blk_pwrite(blk, 8192, 4096, buf, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    uint64_t l2 = s->l1_table[0] & L1E_OFFSET_MASK;
    uint64_t h = peek64(img, l2) & L2E_OFFSET_MASK;
    assert_int_not_equal(h, 0);
    int z = first_op_at('Z', h), w = first_op_at('W', h + 8192), w_l2 = last_write_at(l2);
    assert_true(z >= 0 && w > z && w_l2 > w && flush_between(w, w_l2));
    LogOp *zo = &g_array_index(log_ops, LogOp, z), *wo = &g_array_index(log_ops, LogOp, w);
    assert_true(zo->offset == h && zo->bytes == cs);
    assert_true(wo->offset == h + 8192 && wo->bytes == 4096);
    assert_int_equal(first_op_at('W', h), -1); /* no zeroes written by hand */

    /* 60 KiB into cluster 1: only 4 KiB to keep, written with the data in one go. */
    g_array_set_size(log_ops, 0);
    assert_int_equal(blk_pwrite(blk, cs + 4096, cs - 4096, buf, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    uint64_t h1 = peek64(img, l2 + 8) & L2E_OFFSET_MASK;
    w = first_op_at('W', h1);
    assert_true(w >= 0 && g_array_index(log_ops, LogOp, w).bytes == cs);
    assert_int_equal(first_op_at('Z', h1), -1);

    memset(want + 8192, 0x5a, 4096);
    memset(want + cs + 4096, 0x5a, cs - 4096);
    assert_int_equal(blk_pread(blk, 0, 2 * cs, got, 0), 0);
    assert_memory_equal(got, want, 2 * cs);
    blk_unref(blk);
    g_array_unref(log_ops);
    log_ops = NULL;
    if (have_qemu_img) {
        assert_qemu_img_check_clean(img);
    }
    g_free(buf);
    g_free(got);
    g_free(want);
}

/* ---- main -------------------------------------------------------------------------------------
 */

int main(void)
{
    qcow2_test_init();
    const struct CMUnitTest tests[] = {
        QCOW2_TEST(test_created_images_are_clean_and_look_like_qemu_img_ones),
        QCOW2_TEST(test_bad_creation_options_are_refused),
        QCOW2_TEST(test_random_workload_matches_the_model_64k),
        QCOW2_TEST(test_random_workload_matches_the_model_small_clusters),
        QCOW2_TEST(test_random_workload_matches_the_model_v2),
        QCOW2_TEST(test_random_workload_matches_the_model_extended_l2),
        QCOW2_TEST(test_random_workload_matches_the_model_lazy_refcounts),
        QCOW2_TEST(test_random_workload_matches_the_model_preallocated),
        QCOW2_TEST(test_concurrent_writers_in_two_iothreads),
        QCOW2_TEST(test_malicious_headers_are_refused_with_a_clear_error),
        QCOW2_TEST(test_bad_entries_fail_requests_and_mark_the_image_corrupt),
        QCOW2_TEST(test_dirty_image_is_repaired_when_opened_read_write),
        QCOW2_TEST(test_check_finds_and_fixes_leaks_and_corruptions),
        QCOW2_TEST(test_check_repairs_64_bit_refcounts_far_too_high),
        QCOW2_TEST(test_unknown_autoclear_bits_are_cleared_before_the_first_write),
        QCOW2_TEST(test_zeroes_and_discards_free_clusters_for_reuse),
        QCOW2_TEST(test_resize_grows_and_shrinks),
        QCOW2_TEST(test_metadata_reaches_the_file_in_crash_safe_order),
        QCOW2_TEST(test_emptying_an_overlay_punches_data_only_after_its_l2_tables),
        QCOW2_TEST(test_emptying_and_discarding_many_l2_tables_of_scattered_clusters),
        QCOW2_TEST(test_refcount_table_grows_as_the_image_fills),
        QCOW2_TEST(test_the_format_is_probed),
        QCOW2_TEST(test_reopen_read_only_and_back_keeps_the_image_clean),
        QCOW2_TEST(test_backing_file_name_can_be_changed),
        QCOW2_TEST(test_preallocated_extended_l2_overlay_shows_its_backing_file),
        QCOW2_TEST(test_a_small_write_into_a_fresh_cluster_has_the_file_zero_the_rest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
