/*
 * qcow2 error-path sweep, after QEMU's iotest 026: for every event the
 * qcow2 driver fires, for EIO and ENOSPC, injected once or from then on,
 * a fixed workload runs on an image through blkdebug.  Afterwards:
 *  - the real `qemu-img check` finds at most leaked clusters (exit 0 or 3);
 *  - the image opens, and every byte the guest wrote and then flushed
 *    successfully, and did not touch again, reads back;
 *  - each event did fail some request in at least one of its cases (or
 *    the sweep would test nothing).
 *
 * The image has what makes every path run: 512-byte clusters (many L2
 * tables and refcount blocks, small caches so they are evicted and
 * reloaded), a raw backing file, compressed clusters and an internal
 * snapshot that shares every cluster written before it (copy-on-write of
 * L2 tables and data).  The events of refcount table growth get a long
 * write that makes the image outgrow its first refcount table.
 */
#include "tests/unit/test-qcow2-util.h"

#define DISK_SIZE (4 * 1024 * 1024)

typedef enum { OP_WRITE, OP_READ, OP_FLUSH, OP_ZERO, OP_DISCARD, OP_GROW } OpKind;

typedef struct Op {
    OpKind kind;
    uint64_t off, len;
} Op;

#define KiB 1024ULL
#define MiB (1024 * 1024ULL)

/*
 * The workload: unaligned writes into shared, compressed and backing-only
 * clusters, new L2 tables, zeroes and discards, writes spread over many
 * L2 tables (the small caches evict and reload), reads, flushes, and a
 * resize that grows L1.  Past DISK_SIZE nothing is modelled.
 */
static const Op workload[] = {
    {OP_WRITE, 100, 1000}, /* COW of snapshot-shared clusters and L2 table */
    {OP_READ, 0, 4 * KiB},
    {OP_WRITE, 256 * KiB + 300, 5000}, /* COW from the backing file */
    {OP_FLUSH, 0, 0},
    {OP_WRITE, 512 * KiB + 1000, 3000}, /* COW from compressed clusters */
    {OP_READ, 512 * KiB, 64 * KiB},
    {OP_WRITE, 2 * MiB, 64 * KiB}, /* new L2 tables */
    {OP_WRITE, 3 * MiB + 7, 100 * KiB},
    {OP_FLUSH, 0, 0},
    {OP_ZERO, 1 * MiB, 64 * KiB},
    {OP_DISCARD, 1 * MiB + 64 * KiB, 32 * KiB},
    {OP_WRITE, 1536 * KiB, 200 * KiB},
    {OP_READ, 3 * MiB, 200 * KiB},
    {OP_FLUSH, 0, 0},
    {OP_WRITE, 2304 * KiB + 5, 33 * KiB},
    {OP_WRITE, 2560 * KiB, 40 * KiB},
    {OP_WRITE, 2816 * KiB + 512, 40 * KiB},
    {OP_WRITE, 3584 * KiB, 40 * KiB},
    {OP_READ, 0, 300 * KiB},
    {OP_WRITE, 3840 * KiB + 1, 40 * KiB},
    {OP_WRITE, DISK_SIZE - 40 * KiB, 40 * KiB},
    {OP_FLUSH, 0, 0},
    {OP_GROW, 32 * MiB, 0},
    {OP_WRITE, 100, 3000},
    {OP_WRITE, 8 * MiB, 64 * KiB}, /* in the grown part */
    {OP_FLUSH, 0, 0},
};

/* Appended for the refcount table growth events: the first table covers 8 MiB of clusters. */
static const Op growth[] = {
    {OP_WRITE, 16 * MiB, 9 * MiB},
    {OP_FLUSH, 0, 0},
};

/* The events the sweep covers: what qcow2 fires in a write workload. */
static const char *const events[] = {
    "l1_update",
    "l1_grow_alloc_table",
    "l1_grow_write_table",
    "l1_grow_activate_table",
    "l2_load",
    "l2_update",
    "l2_alloc_cow_read",
    "l2_alloc_write",
    "read_aio",
    "read_backing_aio",
    "read_compressed",
    "write_aio",
    "cow_read",
    "cow_write",
    "reftable_load",
    "refblock_load",
    "refblock_update",
    "refblock_update_part",
    "refblock_alloc",
    "refblock_alloc_hookup",
    "refblock_alloc_write",
    "cluster_alloc",
    "cluster_free",
    "flush_to_os",
    "flush_to_disk",
    "reftable_grow",
    "refblock_alloc_write_blocks",
    "refblock_alloc_write_table",
    "refblock_alloc_switch_table",
    "none",
};

/*
 * Events a case may legitimately not reach: the new refcount table may
 * land where refcount blocks exist already, and then no block is written.
 */
static bool may_not_fire(const char *ev)
{
    return strcmp(ev, "refblock_alloc_write_blocks") == 0;
}

static bool needs_growth(const char *ev)
{
    return strcmp(ev, "reftable_grow") == 0 || g_str_has_prefix(ev, "refblock_alloc_write_") ||
           strcmp(ev, "refblock_alloc_switch_table") == 0;
}

/*
 * What the guest may read back, byte by byte.  cur: content now; durable:
 * content at the last successful flush.  A byte is "unknown" where a
 * failed request may or may not have changed it; "touched" when written
 * (or attempted) since the last successful flush.
 */
typedef struct Model {
    uint8_t *cur, *durable;
    uint8_t *cur_unknown, *durable_unknown, *touched;
} Model;

static void model_init(Model *m, const uint8_t *initial)
{
    m->cur = g_memdup2(initial, DISK_SIZE);
    m->durable = g_memdup2(initial, DISK_SIZE);
    m->cur_unknown = g_malloc0(DISK_SIZE);
    m->durable_unknown = g_malloc0(DISK_SIZE);
    m->touched = g_malloc0(DISK_SIZE);
}

static void model_free(Model *m)
{
    g_free(m->cur);
    g_free(m->durable);
    g_free(m->cur_unknown);
    g_free(m->durable_unknown);
    g_free(m->touched);
}

static void fill_pattern(uint8_t *buf, uint64_t off, uint64_t len, uint8_t seed)
{
    for (uint64_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(seed + (off + i) / 512 * 7 + (off + i) % 251);
    }
}

/*
 * The checks below compare 4 KiB chunks with memchr/memcmp first and fall
 * back to the byte loop only where a chunk holds unknown bytes or differs:
 * byte loops over the whole disk made the sweep ~100x slower under TSan.
 */
#define CHECK_CHUNK 4096

/* Checks the bytes a successful read returned against what is known. */
static void check_read(const Model *m, const uint8_t *buf, uint64_t off, uint64_t len,
                       const char *what)
{
    for (uint64_t i = 0; i < len && off + i < DISK_SIZE; i += CHECK_CHUNK) {
        uint64_t b0 = off + i;
        uint64_t n = MIN(MIN(CHECK_CHUNK, len - i), DISK_SIZE - b0);
        if (!memchr(m->cur_unknown + b0, 1, n) && memcmp(buf + i, m->cur + b0, n) == 0) {
            continue;
        }
        for (uint64_t k = 0; k < n; k++) {
            uint64_t b = b0 + k;
            if (!m->cur_unknown[b] && buf[i + k] != m->cur[b]) {
                fail_msg("%s: byte 0x%" G_GINT64_MODIFIER "x reads 0x%02x, expected 0x%02x", what,
                         b, buf[i + k], m->cur[b]);
            }
        }
    }
}

/* Runs @ops on @blk, updating @m; returns how many requests failed. */
static int run_ops(BlockBackend *blk, Model *m, const Op *ops, size_t n, uint8_t seed,
                   const char *what)
{
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        const Op *op = &ops[i];
        /* Bytes of the op inside the model (none past DISK_SIZE). */
        uint64_t in = op->off < DISK_SIZE ? MIN(op->len, DISK_SIZE - op->off) : 0;
        uint8_t *buf = NULL;
        int ret = 0;

        switch (op->kind) {
        case OP_WRITE:
            buf = g_malloc(op->len);
            fill_pattern(buf, op->off, op->len, seed + i);
            ret = blk_pwrite(blk, op->off, op->len, buf, 0);
            if (!in) {
                break;
            }
            if (ret == 0) {
                memcpy(m->cur + op->off, buf, in);
                memset(m->cur_unknown + op->off, 0, in);
            } else {
                memset(m->cur_unknown + op->off, 1, in);
            }
            memset(m->touched + op->off, 1, in);
            break;
        case OP_ZERO:
        case OP_DISCARD:
            ret = op->kind == OP_ZERO ? blk_pwrite_zeroes(blk, op->off, op->len, BDRV_REQ_MAY_UNMAP)
                                      : blk_pdiscard(blk, op->off, op->len);
            if (ret == 0 && op->kind == OP_ZERO) {
                memset(m->cur + op->off, 0, in);
                memset(m->cur_unknown + op->off, 0, in);
            } else {
                /* A discarded range reads as zeroes or its backing file: not modelled. */
                memset(m->cur_unknown + op->off, 1, in);
            }
            memset(m->touched + op->off, 1, in);
            break;
        case OP_READ:
            buf = g_malloc(op->len);
            ret = blk_pread(blk, op->off, op->len, buf, 0);
            if (ret == 0) {
                check_read(m, buf, op->off, op->len, what);
            }
            break;
        case OP_FLUSH:
            ret = blk_flush(blk);
            if (ret == 0) {
                memcpy(m->durable, m->cur, DISK_SIZE);
                memcpy(m->durable_unknown, m->cur_unknown, DISK_SIZE);
                memset(m->touched, 0, DISK_SIZE);
            }
            break;
        case OP_GROW:
            ret = blk_truncate(blk, op->off, false, PREALLOC_MODE_OFF, 0, NULL);
            break;
        }
        g_free(buf);
        failures += ret < 0;
    }
    return failures;
}

typedef struct Sweep {
    char *tmpl;      /* the image every case starts from */
    char *tmpl_data; /* its bytes */
    gsize tmpl_len;
    uint8_t *initial; /* what it reads */
} Sweep;

/* Makes the template image with qemu-img and qemu-io; fills sw->initial. */
static void make_template(Fixture *f, Sweep *sw)
{
    g_autofree char *base = path_in(f, "base.raw");
    g_autofree char *out = NULL;
    sw->tmpl = path_in(f, "tmpl.qcow2");
    int code = run(&out,
                   "qemu-img create -q -f raw '%s' 4M && "
                   "qemu-io -f raw -c 'write -P 0x5a 0 4M' '%s' >/dev/null && "
                   "qemu-img create -q -f qcow2 -o cluster_size=512 -b '%s' -F raw '%s' && "
                   "qemu-io -f qcow2 -c 'write -P 0x11 0 256k' -c 'write -c -P 0x22 512k 64k' "
                   "-c 'write -P 0x33 1M 128k' '%s' >/dev/null && "
                   "qemu-img snapshot -c snap '%s'",
                   base, base, base, sw->tmpl, sw->tmpl, sw->tmpl);
    if (code != 0) {
        fail_msg("making the template: %s", out);
    }
    assert_true(g_file_get_contents(sw->tmpl, &sw->tmpl_data, &sw->tmpl_len, NULL));
    sw->initial = g_malloc(DISK_SIZE);
    memset(sw->initial, 0x5a, DISK_SIZE);
    memset(sw->initial, 0x11, 256 * KiB);
    memset(sw->initial + 512 * KiB, 0x22, 64 * KiB);
    memset(sw->initial + 1 * MiB, 0x33, 128 * KiB);
}

/* Opens @img as qcow2 on blkdebug with one inject-error rule. */
static BlockBackend *open_faulty(const char *img, const char *ev, int err, bool once, GError **errp)
{
    g_autofree char *name = g_strdup_printf("blkdebug::%s", img);
    g_autofree char *errno_s = g_strdup_printf("%d", err);
    GHashTable *o = opts_new();
    opts_set(o, "driver", "qcow2");
    opts_set(o, "l2-cache-size", "2k");
    opts_set(o, "refcount-cache-size", "2k");
    opts_set(o, "file.inject-error.0.event", ev);
    opts_set(o, "file.inject-error.0.errno", errno_s);
    opts_set(o, "file.inject-error.0.once", once ? "on" : "off");
    return blk_new_open(name, o, BDRV_O_RDWR | BDRV_O_RESIZE | BDRV_O_UNMAP, errp);
}

/* qemu-img check: 0 (clean) or 3 (leaks only) pass; corruption fails the test. */
static void assert_at_most_leaks(const char *img, const char *what)
{
    g_autofree char *out = NULL;
    int code = run(&out, "qemu-img check '%s'", img);
    if (code != 0 && code != 3) {
        fail_msg("%s: qemu-img check exit %d:\n%s", what, code, out);
    }
}

/* Every durable byte that nothing touched since reads back. */
static void assert_durable_data(const char *img, const Model *m, const char *what)
{
    GError *err = NULL;
    BlockBackend *blk = open_qcow2(img, 0, NULL, &err);
    if (!blk) {
        fail_msg("%s: reopening: %s", what, err->message);
    }
    uint8_t *buf = g_malloc(DISK_SIZE);
    assert_int_equal(blk_pread(blk, 0, DISK_SIZE, buf, 0), 0);
    for (uint64_t b0 = 0; b0 < DISK_SIZE; b0 += CHECK_CHUNK) {
        if (!memchr(m->touched + b0, 1, CHECK_CHUNK) &&
            !memchr(m->durable_unknown + b0, 1, CHECK_CHUNK) &&
            memcmp(buf + b0, m->durable + b0, CHECK_CHUNK) == 0) {
            continue;
        }
        for (uint64_t b = b0; b < b0 + CHECK_CHUNK; b++) {
            if (!m->touched[b] && !m->durable_unknown[b] && buf[b] != m->durable[b]) {
                fail_msg("%s: flushed byte 0x%" G_GINT64_MODIFIER "x reads 0x%02x, expected 0x%02x",
                         what, b, buf[b], m->durable[b]);
            }
        }
    }
    g_free(buf);
    blk_unref(blk);
}

static void test_every_error_path_leaves_a_consistent_image(void **state)
{
    Fixture *f = *state;
    Sweep sw = {0};
    int unfired = 0;

    skip_without_qemu_img();
    make_template(f, &sw);
    g_autofree char *img = path_in(f, "t.qcow2");
    int64_t t0 = g_get_monotonic_time();

    for (size_t e = 0; e < G_N_ELEMENTS(events); e++) {
        const char *ev = events[e];
        int failed_cases = 0;
        int64_t te = g_get_monotonic_time();
        for (int c = 0; c < 4; c++) {
            int err = c & 1 ? ENOSPC : EIO;
            bool once = c & 2;
            g_autofree char *what =
                g_strdup_printf("%s errno=%d once=%s", ev, err, once ? "on" : "off");
            Model m;
            GError *gerr = NULL;

            assert_true(g_file_set_contents(img, sw.tmpl_data, sw.tmpl_len, NULL));
            model_init(&m, sw.initial);
            BlockBackend *blk = open_faulty(img, ev, err, once, &gerr);
            int failures = 0;
            if (!blk) {
                failures = 1; /* the error hit the open (reftable_load, none) */
                g_clear_error(&gerr);
            } else {
                failures += run_ops(blk, &m, workload, G_N_ELEMENTS(workload), (uint8_t)c, what);
                if (needs_growth(ev)) {
                    failures += run_ops(blk, &m, growth, G_N_ELEMENTS(growth), 0x40, what);
                }
                blk_unref(blk);
            }
            failed_cases += failures > 0;
            assert_at_most_leaks(img, what);
            assert_durable_data(img, &m, what);
            model_free(&m);
        }
        if (g_getenv("STRATA_SWEEP_VERBOSE")) {
            print_message("%-28s %d failing cases, %.2f s\n", ev, failed_cases,
                          (g_get_monotonic_time() - te) / 1e6);
        }
        if (!failed_cases && !may_not_fire(ev)) {
            print_message("event %s failed no request in any case\n", ev);
            unfired++;
        }
    }
    print_message("%zu events x 4 cases in %.1f s\n", G_N_ELEMENTS(events),
                  (g_get_monotonic_time() - t0) / 1e6);
    assert_int_equal(unfired, 0);
    g_free(sw.tmpl);
    g_free(sw.tmpl_data);
    g_free(sw.initial);
}

/* Without any fault the workload must pass its own checks (the sweep's baseline). */
static void test_the_workload_passes_without_faults(void **state)
{
    Fixture *f = *state;
    Sweep sw = {0};
    Model m;

    skip_without_qemu_img();
    make_template(f, &sw);
    g_autofree char *img = path_in(f, "t.qcow2");
    g_autofree char *out = NULL;
    assert_int_equal(run(&out, "cp '%s' '%s'", sw.tmpl, img), 0);
    model_init(&m, sw.initial);
    BlockBackend *blk = open_rw(img);
    assert_int_equal(run_ops(blk, &m, workload, G_N_ELEMENTS(workload), 0, "no fault"), 0);
    assert_int_equal(run_ops(blk, &m, growth, G_N_ELEMENTS(growth), 0x40, "no fault"), 0);
    blk_unref(blk);
    assert_qemu_img_check_clean(img);
    assert_durable_data(img, &m, "no fault");
    model_free(&m);
    g_free(sw.tmpl);
    g_free(sw.tmpl_data);
    g_free(sw.initial);
}

int main(void)
{
    /* Images on tmpfs: the sweep flushes thousands of times, and fdatasync is not the point. */
    if (!g_getenv("TMPDIR") && g_file_test("/dev/shm", G_FILE_TEST_IS_DIR)) {
        g_setenv("TMPDIR", "/dev/shm", true);
    }
    qcow2_test_init();
    if (!bdrv_find_driver("blkdebug")) {
        fprintf(stderr, "blkdebug is not in this build (LIB_DIRS lacks drivers/blkdebug)\n");
        return 1;
    }
    const struct CMUnitTest tests[] = {
        QCOW2_TEST(test_the_workload_passes_without_faults),
        QCOW2_TEST(test_every_error_path_leaves_a_consistent_image),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
