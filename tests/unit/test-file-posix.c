/*
 * Tests of the `file` protocol driver's callbacks, called directly on a
 * node built by hand (no request layer in between): options, engines,
 * cache modes, short reads, discard, write-zeroes, block status,
 * truncation, creation, locking through the permission callbacks, and
 * reopen.  Coroutines only record results; assertions run outside them.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aio/aio-engine-slots.h"
#include "aio/aio.h"
#include "block/block-int.h"
#include "drivers/raw/file-lock.h"
#include "drivers/raw/file-posix-int.h"
#include "drivers/raw/raw-drivers.h"

typedef struct Fixture {
    char *path;
} Fixture;

static int fixture_setup(void **state)
{
    Fixture *f = g_new0(Fixture, 1);
    int fd = g_file_open_tmp("strata-file-XXXXXX", &f->path, NULL);
    assert_true(fd >= 0);
    close(fd);
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    Fixture *f = *state;
    aio_context_free_engines(aio_main_context());
    g_unlink(f->path);
    g_free(f->path);
    g_free(f);
    return 0;
}

/* ---- a node without the block core around it ---------------------------- */

/* Opens a `file` node on @path with BDRV_O_* @flags and "k=v,..." @extra options. */
static BlockDriverState *node_open(const char *path, int flags, const char *extra, GError **errp)
{
    BlockDriverState *bs = g_new0(BlockDriverState, 1);
    bs->drv = &bdrv_file;
    bs->opaque = g_malloc0(bdrv_file.instance_size);
    bs->open_flags = flags;
    bs->filename = g_strdup(path);

    GHashTable *opts = opts_new();
    opts_set(opts, "filename", path);
    if (extra) {
        assert_true(opts_parse_kv(opts, extra, NULL, NULL));
    }
    bool ok = bdrv_file.open(bs, opts, flags, errp);
    if (ok) {
        assert_int_equal(g_hash_table_size(opts), 0); /* every option was understood */
        bdrv_file.refresh_limits(bs, NULL);
    }
    g_hash_table_unref(opts);
    if (!ok) {
        g_free(bs->opaque);
        g_free(bs->filename);
        g_free(bs);
        return NULL;
    }
    return bs;
}

static void node_close(BlockDriverState *bs)
{
    bdrv_file.close(bs);
    g_free(bs->opaque);
    g_free(bs->filename);
    g_free(bs);
}

typedef enum Op {
    OP_READ,
    OP_WRITE,
    OP_FLUSH,
    OP_ZEROES,
    OP_DISCARD,
    OP_STATUS,
    OP_TRUNCATE,
    OP_LENGTH,
    OP_ALLOCATED
} Op;

typedef struct Call {
    BlockDriverState *bs;
    Op op;
    int64_t offset, bytes;
    IOVector *qiov;
    BdrvRequestFlags flags;
    PreallocMode prealloc;
    int64_t pnum, map;
    GError *err;
    int ret;
    bool done;
} Call;

static void coroutine_fn call_co(void *opaque)
{
    Call *c = opaque;
    BlockDriverState *file;
    switch (c->op) {
    case OP_READ:
        c->ret = bdrv_file.co_preadv(c->bs, c->offset, c->bytes, c->qiov, c->flags);
        break;
    case OP_WRITE:
        c->ret = bdrv_file.co_pwritev(c->bs, c->offset, c->bytes, c->qiov, c->flags);
        break;
    case OP_FLUSH:
        c->ret = bdrv_file.co_flush_to_disk(c->bs);
        break;
    case OP_ZEROES:
        c->ret = bdrv_file.co_pwrite_zeroes(c->bs, c->offset, c->bytes, c->flags);
        break;
    case OP_DISCARD:
        c->ret = bdrv_file.co_pdiscard(c->bs, c->offset, c->bytes);
        break;
    case OP_STATUS:
        c->ret =
            bdrv_file.co_block_status(c->bs, true, c->offset, c->bytes, &c->pnum, &c->map, &file);
        break;
    case OP_TRUNCATE:
        c->ret = bdrv_file.co_truncate(c->bs, c->offset, true, c->prealloc, 0, &c->err);
        break;
    case OP_LENGTH:
        c->ret = (int)bdrv_file.co_getlength(c->bs);
        break;
    case OP_ALLOCATED:
        c->map = bdrv_file.co_get_allocated_file_size(c->bs);
        c->ret = c->map < 0 ? (int)c->map : 0;
        break;
    }
    c->done = true;
}

static int run_call(Call *c)
{
    co_enter(co_create(call_co, c));
    while (!c->done) {
        aio_poll(aio_main_context(), true);
    }
    return c->ret;
}

static int node_rw(BlockDriverState *bs, Op op, int64_t offset, void *buf, size_t len,
                   BdrvRequestFlags flags)
{
    IOVector qiov;
    iov_init_buf(&qiov, buf, len);
    Call c = {.bs = bs, .op = op, .offset = offset, .bytes = len, .qiov = &qiov, .flags = flags};
    int ret = run_call(&c);
    iov_destroy(&qiov);
    return ret;
}

static int node_op(BlockDriverState *bs, Op op, int64_t offset, int64_t bytes,
                   BdrvRequestFlags flags)
{
    Call c = {.bs = bs, .op = op, .offset = offset, .bytes = bytes, .flags = flags};
    return run_call(&c);
}

/* Block status of the first extent at @offset: its flags, and its length in *pnum. */
static int node_status(BlockDriverState *bs, int64_t offset, int64_t bytes, int64_t *pnum)
{
    Call c = {.bs = bs, .op = OP_STATUS, .offset = offset, .bytes = bytes};
    int ret = run_call(&c);
    *pnum = c.pnum;
    assert_int_equal(c.map, offset);
    return ret;
}

static int node_truncate(BlockDriverState *bs, int64_t size, PreallocMode prealloc, GError **errp)
{
    Call c = {.bs = bs, .op = OP_TRUNCATE, .offset = size, .prealloc = prealloc};
    int ret = run_call(&c);
    if (c.err) {
        g_propagate_error(errp, c.err);
    }
    return ret;
}

static void fill(uint8_t *buf, size_t len, int seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = (uint8_t)(i * 7 + seed);
    }
}

static int64_t allocated_bytes(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return (int64_t)st.st_blocks * 512;
}

static int64_t file_size(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_size;
}

#define RW        (BDRV_O_RDWR)
#define RW_DIRECT (BDRV_O_RDWR | BDRV_O_NOCACHE)

/* ---- options and engines ------------------------------------------------ */

static void test_missing_filename_and_bad_options_are_refused(void **state)
{
    Fixture *f = *state;
    GError *err = NULL;

    assert_null(node_open(f->path, RW, "aio=bogus", &err));
    assert_non_null(strstr(err->message, "aio"));
    g_clear_error(&err);

    assert_null(node_open(f->path, RW, "locking=maybe", &err));
    assert_non_null(strstr(err->message, "locking"));
    g_clear_error(&err);

    assert_null(node_open(g_get_tmp_dir(), 0, NULL, &err));
    assert_non_null(strstr(err->message, "directory"));
    g_clear_error(&err);

    g_autofree char *missing = g_strconcat(f->path, ".missing", NULL);
    assert_null(node_open(missing, RW, NULL, &err));
    assert_non_null(strstr(err->message, "Could not open"));
    g_clear_error(&err);
}

static void test_native_aio_without_cache_direct_is_refused(void **state)
{
    Fixture *f = *state;
    GError *err = NULL;

    assert_null(node_open(f->path, RW, "aio=native", &err));
    assert_non_null(strstr(err->message, "cache.direct=on"));
    g_clear_error(&err);

    BlockDriverState *bs = node_open(f->path, RW_DIRECT, "aio=native", &err);
    assert_non_null(bs);
    node_close(bs);
}

typedef struct EngineCase {
    const char *options;
    int flags;
} EngineCase;

static const EngineCase engine_cases[] = {
    {"aio=threads", RW},  {"aio=threads", RW_DIRECT},  {"aio=native", RW_DIRECT},
    {"aio=io_uring", RW}, {"aio=io_uring", RW_DIRECT},
};

static void test_every_engine_and_cache_mode_round_trips_multi_iovec_data(void **state)
{
    Fixture *f = *state;

    for (size_t k = 0; k < G_N_ELEMENTS(engine_cases); k++) {
        BlockDriverState *bs =
            node_open(f->path, engine_cases[k].flags, engine_cases[k].options, NULL);
        assert_non_null(bs);
        size_t align = MAX(bs->bl.opt_mem_alignment, 4096);
        uint8_t *a = NULL, *b = NULL, *r = NULL;
        assert_int_equal(posix_memalign((void **)&a, align, 8192), 0);
        assert_int_equal(posix_memalign((void **)&b, align, 4096), 0);
        assert_int_equal(posix_memalign((void **)&r, align, 12288), 0);
        fill(a, 8192, (int)k);
        fill(b, 4096, (int)k + 100);

        IOVector qiov;
        iov_init(&qiov, 2);
        iov_add(&qiov, a, 8192);
        iov_add(&qiov, b, 4096);
        Call w = {.bs = bs, .op = OP_WRITE, .offset = 65536, .bytes = 12288, .qiov = &qiov};
        assert_int_equal(run_call(&w), 0);
        iov_destroy(&qiov);

        assert_int_equal(node_rw(bs, OP_READ, 65536, r, 12288, 0), 0);
        assert_memory_equal(r, a, 8192);
        assert_memory_equal(r + 8192, b, 4096);
        assert_int_equal(node_op(bs, OP_FLUSH, 0, 0, 0), 0);

        free(a);
        free(b);
        free(r);
        node_close(bs);
    }
}

static void test_reads_past_end_of_file_are_completed_with_zeroes(void **state)
{
    Fixture *f = *state;
    uint8_t data[10000];
    fill(data, sizeof(data), 3);
    assert_true(g_file_set_contents(f->path, (char *)data, sizeof(data), NULL));

    for (size_t k = 0; k < G_N_ELEMENTS(engine_cases); k++) {
        BlockDriverState *bs =
            node_open(f->path, engine_cases[k].flags, engine_cases[k].options, NULL);
        assert_non_null(bs);
        uint8_t *r = NULL;
        assert_int_equal(posix_memalign((void **)&r, 4096, 8192), 0);
        memset(r, 0xee, 8192);
        /* 1808 bytes of data, then end of file (misaligned for O_DIRECT). */
        assert_int_equal(node_rw(bs, OP_READ, 8192, r, 8192, 0), 0);
        assert_memory_equal(r, data + 8192, 10000 - 8192);
        for (int i = 10000 - 8192; i < 8192; i++) {
            assert_int_equal(r[i], 0);
        }
        /* Entirely past the end. */
        memset(r, 0xee, 8192);
        assert_int_equal(node_rw(bs, OP_READ, 65536, r, 4096, 0), 0);
        assert_int_equal(r[0], 0);
        assert_int_equal(r[4095], 0);
        free(r);
        node_close(bs);
    }
}

static void test_cache_direct_probes_the_filesystem_alignment(void **state)
{
    Fixture *f = *state;
    uint8_t data[8192];
    fill(data, sizeof(data), 1);
    assert_true(g_file_set_contents(f->path, (char *)data, sizeof(data), NULL));

    BlockDriverState *bs = node_open(f->path, RW, NULL, NULL);
    assert_int_equal(bs->bl.request_alignment, 1);
    node_close(bs);

    bs = node_open(f->path, RW_DIRECT, NULL, NULL);
    uint32_t align = bs->bl.request_alignment;
    assert_true(align == 512 || align == 1024 || align == 2048 || align == 4096);
    assert_true(bs->bl.min_mem_alignment >= 1 && bs->bl.min_mem_alignment <= 4096);
    node_close(bs);

    /* The read-based probe agrees with what the driver found. */
    int fd = open(f->path, O_RDONLY | O_DIRECT);
    assert_true(fd >= 0);
    uint32_t req = 0, mem = 0;
    assert_true(raw_probe_alignment_by_reads(fd, &req, &mem));
    assert_int_equal(req, align);
    assert_true(mem >= 512 && mem <= 4096);
    close(fd);

    /* Too little written data to probe: it says so instead of guessing. */
    assert_int_equal(truncate(f->path, 0), 0);
    assert_int_equal(truncate(f->path, 1 << 20), 0); /* a hole */
    fd = open(f->path, O_RDONLY | O_DIRECT);
    assert_false(raw_probe_alignment_by_reads(fd, &req, &mem));
    close(fd);
}

/* ---- flushes ------------------------------------------------------------------ */

static void test_flush_errors_are_sticky_and_no_flush_skips_them(void **state)
{
    /* fdatasync on /dev/null fails (EINVAL): a stand-in for a failing disk. */
    BlockDriverState *bs = node_open("/dev/null", RW, "locking=off", NULL);
    assert_non_null(bs);
    int first = node_op(bs, OP_FLUSH, 0, 0, 0);
    assert_true(first < 0);
    assert_int_equal(node_op(bs, OP_FLUSH, 0, 0, 0), first);
    /* FUA writes report it as well. */
    uint8_t buf[512] = {0};
    assert_int_equal(node_rw(bs, OP_WRITE, 0, buf, sizeof(buf), BDRV_REQ_FUA), first);
    node_close(bs);

    bs = node_open("/dev/null", RW | BDRV_O_NO_FLUSH, "locking=off", NULL);
    assert_int_equal(node_op(bs, OP_FLUSH, 0, 0, 0), 0);
    node_close(bs);
}

/* ---- discard, write-zeroes, block status -------------------------------- */

static void test_discard_punches_a_hole_that_reads_as_zeroes(void **state)
{
    Fixture *f = *state;
    BlockDriverState *bs = node_open(f->path, RW, NULL, NULL);
    uint8_t *buf = g_malloc(1 << 20);
    fill(buf, 1 << 20, 5);
    assert_int_equal(node_rw(bs, OP_WRITE, 0, buf, 1 << 20, 0), 0);
    assert_int_equal(node_op(bs, OP_FLUSH, 0, 0, 0), 0);
    int64_t before = allocated_bytes(f->path);

    assert_int_equal(node_op(bs, OP_DISCARD, 256 << 10, 256 << 10, 0), 0);
    assert_true(allocated_bytes(f->path) <= before - (256 << 10));
    assert_int_equal(file_size(f->path), 1 << 20);

    assert_int_equal(node_rw(bs, OP_READ, 0, buf, 1 << 20, 0), 0);
    assert_int_equal(buf[(256 << 10) - 1], (uint8_t)(((256 << 10) - 1) * 7 + 5));
    for (int i = 256 << 10; i < 512 << 10; i++) {
        assert_int_equal(buf[i], 0);
    }
    int64_t pnum;
    assert_int_equal(node_status(bs, 0, 1 << 20, &pnum), BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID);
    assert_int_equal(pnum, 256 << 10);
    assert_int_equal(node_status(bs, 256 << 10, 768 << 10, &pnum),
                     BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID);
    assert_int_equal(pnum, 256 << 10);
    g_free(buf);
    node_close(bs);
}

static void test_write_zeroes_unmaps_zeroes_in_place_and_extends_past_eof(void **state)
{
    Fixture *f = *state;
    BlockDriverState *bs = node_open(f->path, RW, NULL, NULL);
    uint8_t *buf = g_malloc(1 << 20);
    fill(buf, 1 << 20, 9);
    assert_int_equal(node_rw(bs, OP_WRITE, 0, buf, 1 << 20, 0), 0);
    assert_int_equal(node_op(bs, OP_FLUSH, 0, 0, 0), 0);
    int64_t before = allocated_bytes(f->path);

    /* MAY_UNMAP inside the file: a hole. */
    assert_int_equal(node_op(bs, OP_ZEROES, 0, 128 << 10, BDRV_REQ_MAY_UNMAP), 0);
    assert_true(allocated_bytes(f->path) <= before - (128 << 10));
    /* Without it: zeroes, storage kept. */
    int64_t mid = allocated_bytes(f->path);
    assert_int_equal(node_op(bs, OP_ZEROES, 512 << 10, 128 << 10, BDRV_REQ_FUA), 0);
    assert_true(allocated_bytes(f->path) >= mid);

    assert_int_equal(node_rw(bs, OP_READ, 0, buf, 1 << 20, 0), 0);
    for (int i = 0; i < 128 << 10; i++) {
        assert_int_equal(buf[i], 0);
    }
    for (int i = 512 << 10; i < 640 << 10; i++) {
        assert_int_equal(buf[i], 0);
    }
    assert_int_equal(buf[640 << 10], (uint8_t)((640 << 10) * 7 + 9));

    /* Past end of file: the file grows and the new range reads as zeroes. */
    assert_int_equal(node_op(bs, OP_ZEROES, 2 << 20, 64 << 10, BDRV_REQ_MAY_UNMAP), 0);
    assert_int_equal(file_size(f->path), (2 << 20) + (64 << 10));
    memset(buf, 0xee, 64 << 10);
    assert_int_equal(node_rw(bs, OP_READ, 2 << 20, buf, 64 << 10, 0), 0);
    assert_int_equal(buf[0], 0);
    assert_int_equal(buf[(64 << 10) - 1], 0);
    g_free(buf);
    node_close(bs);
}

static void test_block_status_follows_data_and_holes_of_a_sparse_file(void **state)
{
    Fixture *f = *state;
    int fd = open(f->path, O_RDWR);
    uint8_t buf[65536];
    fill(buf, sizeof(buf), 2);
    assert_int_equal(pwrite(fd, buf, 65536, 0), 65536);
    assert_int_equal(pwrite(fd, buf, 4096, 1 << 20), 4096);
    assert_int_equal(ftruncate(fd, 2 << 20), 0);
    close(fd);

    BlockDriverState *bs = node_open(f->path, 0, NULL, NULL);
    int64_t pnum;
    const int data = BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID;
    const int zero = BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID;
    assert_int_equal(node_status(bs, 0, 2 << 20, &pnum), data);
    assert_int_equal(pnum, 65536);
    assert_int_equal(node_status(bs, 65536, (2 << 20) - 65536, &pnum), zero);
    assert_int_equal(pnum, (1 << 20) - 65536);
    assert_int_equal(node_status(bs, 1 << 20, 1 << 20, &pnum), data);
    assert_int_equal(pnum, 4096);
    /* The trailing hole runs to the end of the request. */
    assert_int_equal(node_status(bs, (1 << 20) + 4096, (1 << 20) - 4096, &pnum), zero);
    assert_int_equal(pnum, (1 << 20) - 4096);
    /* A request shorter than the extent is answered for the request only. */
    assert_int_equal(node_status(bs, 0, 4096, &pnum), data);
    assert_int_equal(pnum, 4096);
    node_close(bs);
}

/* ---- length, truncation, creation --------------------------------------- */

static void test_truncate_grows_with_each_preallocation_mode_and_shrinks(void **state)
{
    Fixture *f = *state;
    BlockDriverState *bs = node_open(f->path, RW, NULL, NULL);
    GError *err = NULL;

    assert_int_equal(node_truncate(bs, 4 << 20, PREALLOC_MODE_OFF, NULL), 0);
    assert_int_equal(file_size(f->path), 4 << 20);
    assert_true(allocated_bytes(f->path) < (1 << 20));

    assert_int_equal(node_truncate(bs, 8 << 20, PREALLOC_MODE_FALLOC, NULL), 0);
    assert_int_equal(file_size(f->path), 8 << 20);
    assert_true(allocated_bytes(f->path) >= (4 << 20));

    assert_int_equal(node_truncate(bs, 10 << 20, PREALLOC_MODE_FULL, NULL), 0);
    assert_int_equal(file_size(f->path), 10 << 20);
    assert_true(allocated_bytes(f->path) >= (6 << 20));

    assert_true(node_truncate(bs, 1 << 20, PREALLOC_MODE_FALLOC, &err) < 0);
    assert_non_null(strstr(err->message, "cannot shrink"));
    g_clear_error(&err);
    assert_true(node_truncate(bs, 20 << 20, PREALLOC_MODE_METADATA, &err) < 0);
    assert_non_null(strstr(err->message, "metadata"));
    g_clear_error(&err);
    assert_int_equal(file_size(f->path), 10 << 20);

    assert_int_equal(node_truncate(bs, 1 << 20, PREALLOC_MODE_OFF, NULL), 0);
    assert_int_equal(file_size(f->path), 1 << 20);

    assert_int_equal(node_op(bs, OP_LENGTH, 0, 0, 0), 1 << 20);
    Call c = {.bs = bs, .op = OP_ALLOCATED};
    assert_int_equal(run_call(&c), 0);
    assert_int_equal(c.map, allocated_bytes(f->path));
    node_close(bs);
}

static void test_create_sizes_the_file_and_refuses_an_image_in_use(void **state)
{
    Fixture *f = *state;
    GError *err = NULL;
    uint8_t junk[4096];

    memset(junk, 0x55, sizeof(junk));
    assert_true(g_file_set_contents(f->path, (char *)junk, sizeof(junk), NULL));

    GHashTable *opts = opts_new();
    opts_set(opts, "size", "3M");
    opts_set(opts, "preallocation", "falloc");
    assert_true(bdrv_file.create(f->path, opts, NULL));
    assert_int_equal(g_hash_table_size(opts), 0);
    g_hash_table_unref(opts);
    assert_int_equal(file_size(f->path), 3 << 20);
    assert_true(allocated_bytes(f->path) >= (3 << 20));

    /* The old content is gone: creation starts from an empty file. */
    int fd = open(f->path, O_RDONLY);
    uint8_t b = 1;
    assert_int_equal(pread(fd, &b, 1, 0), 1);
    assert_int_equal(b, 0);

    /* Someone writing the image without sharing it: creation must not clobber it. */
    RawLockState held = {0};
    assert_true(raw_lock_apply(fd, &held, BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                               BLK_PERM_WRITE | BLK_PERM_RESIZE, false, NULL));
    opts = opts_new();
    opts_set(opts, "size", "1M");
    assert_false(bdrv_file.create(f->path, opts, &err));
    assert_non_null(strstr(err->message, "Failed to get"));
    g_clear_error(&err);
    g_hash_table_unref(opts);
    assert_int_equal(file_size(f->path), 3 << 20);
    close(fd);
}

/* ---- locking through the permission callbacks, and reopen ---------------- */

static bool locked_by_others(const char *path, int byte)
{
    int fd = open(path, O_RDONLY);
    struct flock fl = {.l_whence = SEEK_SET, .l_start = byte, .l_len = 1, .l_type = F_WRLCK};
    assert_int_equal(fcntl(fd, F_OFD_GETLK, &fl), 0);
    close(fd);
    return fl.l_type != F_UNLCK;
}

#define WRITER_PERM   (BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE)
#define WRITER_SHARED (BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED)

static void test_two_nodes_cannot_both_write_an_image_unshared(void **state)
{
    Fixture *f = *state;
    GError *err = NULL;
    BlockDriverState *a = node_open(f->path, RW, NULL, NULL);
    BlockDriverState *b = node_open(f->path, RW, NULL, NULL);

    assert_true(bdrv_file.check_perm(a, WRITER_PERM, WRITER_SHARED, NULL));
    bdrv_file.set_perm(a, WRITER_PERM, WRITER_SHARED);
    assert_true(locked_by_others(f->path, 101));
    assert_true(locked_by_others(f->path, 201));

    assert_false(bdrv_file.check_perm(b, WRITER_PERM, WRITER_SHARED, &err));
    assert_non_null(strstr(err->message, "Failed to get \"write\" lock"));
    g_clear_error(&err);
    bdrv_file.abort_perm_update(b);
    /* b's failed attempt left nothing behind: a read-only sharer still fits. */
    assert_true(bdrv_file.check_perm(b, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL, NULL));
    bdrv_file.set_perm(b, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL);

    /* a steps down to reading; b can now write. */
    bdrv_file.set_perm(a, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL);
    assert_false(locked_by_others(f->path, 201));
    assert_true(bdrv_file.check_perm(b, WRITER_PERM, WRITER_SHARED, NULL));
    bdrv_file.set_perm(b, WRITER_PERM, WRITER_SHARED);

    node_close(a);
    node_close(b);
    assert_false(locked_by_others(f->path, 100));
}

static void test_locking_off_takes_no_lock(void **state)
{
    Fixture *f = *state;
    BlockDriverState *a = node_open(f->path, RW, "locking=off", NULL);
    assert_true(bdrv_file.check_perm(a, WRITER_PERM, WRITER_SHARED, NULL));
    bdrv_file.set_perm(a, WRITER_PERM, WRITER_SHARED);
    assert_false(locked_by_others(f->path, 101));
    assert_false(locked_by_others(f->path, 201));
    node_close(a);
}

static void test_reopen_read_write_keeps_the_locks_on_the_new_descriptor(void **state)
{
    Fixture *f = *state;
    BlockDriverState *bs = node_open(f->path, 0, NULL, NULL);
    uint8_t buf[512] = {1};

    assert_true(bdrv_file.check_perm(bs, BLK_PERM_CONSISTENT_READ, WRITER_SHARED, NULL));
    bdrv_file.set_perm(bs, BLK_PERM_CONSISTENT_READ, WRITER_SHARED);
    assert_int_equal(node_rw(bs, OP_WRITE, 0, buf, sizeof(buf), 0), -EBADF);

    /* An aborted reopen changes nothing. */
    BDRVReopenState rs = {.bs = bs, .flags = RW};
    assert_true(bdrv_file.reopen_prepare(&rs, NULL));
    bdrv_file.reopen_abort(&rs);
    assert_int_equal(node_rw(bs, OP_WRITE, 0, buf, sizeof(buf), 0), -EBADF);

    rs = (BDRVReopenState){.bs = bs, .flags = RW};
    assert_true(bdrv_file.reopen_prepare(&rs, NULL));
    /* Permissions change between prepare and commit, as the core does it. */
    assert_true(bdrv_file.check_perm(bs, WRITER_PERM, WRITER_SHARED, NULL));
    bdrv_file.set_perm(bs, WRITER_PERM, WRITER_SHARED);
    bdrv_file.reopen_commit(&rs);
    bs->open_flags = RW;

    assert_int_equal(node_rw(bs, OP_WRITE, 0, buf, sizeof(buf), 0), 0);
    assert_true(locked_by_others(f->path, 100));
    assert_true(locked_by_others(f->path, 101));
    assert_true(locked_by_others(f->path, 201));
    node_close(bs);
    assert_false(locked_by_others(f->path, 101));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)

int main(void)
{
    GError *err = NULL;
    if (!aio_main_loop_init(&err)) {
        fprintf(stderr, "aio_main_loop_init: %s\n", err->message);
        return 1;
    }
    const struct CMUnitTest tests[] = {
        T(test_missing_filename_and_bad_options_are_refused),
        T(test_native_aio_without_cache_direct_is_refused),
        T(test_every_engine_and_cache_mode_round_trips_multi_iovec_data),
        T(test_reads_past_end_of_file_are_completed_with_zeroes),
        T(test_cache_direct_probes_the_filesystem_alignment),
        T(test_flush_errors_are_sticky_and_no_flush_skips_them),
        T(test_discard_punches_a_hole_that_reads_as_zeroes),
        T(test_write_zeroes_unmaps_zeroes_in_place_and_extends_past_eof),
        T(test_block_status_follows_data_and_holes_of_a_sparse_file),
        T(test_truncate_grows_with_each_preallocation_mode_and_shrinks),
        T(test_create_sizes_the_file_and_refuses_an_image_in_use),
        T(test_two_nodes_cannot_both_write_an_image_unshared),
        T(test_locking_off_takes_no_lock),
        T(test_reopen_read_write_keeps_the_locks_on_the_new_descriptor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
