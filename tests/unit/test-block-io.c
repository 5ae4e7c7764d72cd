/*
 * Tests of the request path: bounds and overflow checks, alignment with
 * read-modify-write, serialisation of overlapping read-modify-write,
 * splitting by max_transfer, write-zeroes and its fallback, discard,
 * flush, truncate, statistics, and the synchronous, asynchronous and
 * coroutine forms of BlockBackend requests.
 *
 * "test-mem" is a protocol driver keeping its data in memory that logs
 * every call and counts calls that break its own limits (the request
 * layer must never send one).  Everything runs in the main thread.
 * Assertions stay outside coroutines.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <glib.h>
#include <string.h>

#include "aio/aio.h"
#include "block/block-backend.h"
#include "block/block-int.h"
#include "coroutine/co-lock.h"

/* ---- the test-mem driver ---------------------------------------------------- */

typedef struct MemCall {
    char op; /* r, w, z, d, f */
    int64_t offset, bytes;
} MemCall;

typedef struct MemState {
    uint8_t *data;
    int64_t size;
    int64_t align, max_transfer, delay_ns;
    bool zeroes;
} MemState;

static GArray *mem_calls;
static int mem_misaligned;

static void mem_log(BlockDriverState *bs, char op, int64_t offset, int64_t bytes)
{
    MemState *s = bs->opaque;
    MemCall c = {op, offset, bytes};
    g_array_append_val(mem_calls, c);
    if (op != 'f' && (offset % s->align || bytes % s->align ||
                      (s->max_transfer && (op == 'r' || op == 'w') && bytes > s->max_transfer))) {
        mem_misaligned++;
    }
}

static bool mem_open(BlockDriverState *bs, GHashTable *options, int flags, GError **errp)
{
    MemState *s = bs->opaque;
    uint64_t size;
    g_free(opts_take_str(options, "filename"));
    if (!opts_take_size(options, "size", 65536, &size, errp) ||
        !opts_take_int(options, "align", 1, &s->align, errp) ||
        !opts_take_int(options, "max-transfer", 0, &s->max_transfer, errp) ||
        !opts_take_int(options, "delay-ns", 0, &s->delay_ns, errp) ||
        !opts_take_bool(options, "zeroes", false, &s->zeroes, errp)) {
        return false;
    }
    s->size = size;
    s->data = g_malloc0(size);
    return true;
}

static void mem_close(BlockDriverState *bs)
{
    MemState *s = bs->opaque;
    g_free(s->data);
}

static void mem_refresh_limits(BlockDriverState *bs, GError **errp)
{
    MemState *s = bs->opaque;
    bs->bl.request_alignment = s->align;
    bs->bl.max_transfer = s->max_transfer;
}

static int coroutine_fn mem_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   IOVector *qiov, BdrvRequestFlags flags)
{
    MemState *s = bs->opaque;
    mem_log(bs, 'r', offset, bytes);
    if (s->delay_ns) {
        co_sleep_ns(s->delay_ns);
    }
    int64_t n = offset >= s->size ? 0 : MIN(bytes, s->size - offset);
    iov_from_buf(qiov, 0, s->data + offset, n);
    iov_memset(qiov, n, 0, bytes - n);
    return 0;
}

static int coroutine_fn mem_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                    IOVector *qiov, BdrvRequestFlags flags)
{
    MemState *s = bs->opaque;
    mem_log(bs, 'w', offset, bytes);
    if (offset + bytes > s->size) {
        return -ENOSPC;
    }
    /* Copy first, sleep after: a concurrent unserialised RMW would read stale data. */
    uint8_t *tmp = g_malloc(bytes);
    iov_to_buf(qiov, 0, tmp, bytes);
    if (s->delay_ns) {
        co_sleep_ns(s->delay_ns);
    }
    memcpy(s->data + offset, tmp, bytes);
    g_free(tmp);
    return 0;
}

static int coroutine_fn mem_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                          BdrvRequestFlags flags)
{
    MemState *s = bs->opaque;
    if (!s->zeroes) {
        return -ENOTSUP;
    }
    mem_log(bs, 'z', offset, bytes);
    memset(s->data + offset, 0, bytes);
    return 0;
}

static int coroutine_fn mem_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    mem_log(bs, 'd', offset, bytes);
    return 0;
}

static int coroutine_fn mem_flush(BlockDriverState *bs)
{
    mem_log(bs, 'f', 0, 0);
    return 0;
}

static int64_t coroutine_fn mem_getlength(BlockDriverState *bs)
{
    MemState *s = bs->opaque;
    return s->size;
}

static int coroutine_fn mem_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                     PreallocMode prealloc, BdrvRequestFlags flags, GError **errp)
{
    MemState *s = bs->opaque;
    s->data = g_realloc(s->data, offset);
    if (offset > s->size) {
        memset(s->data + s->size, 0, offset - s->size);
    }
    s->size = offset;
    return 0;
}

static BlockDriver test_mem_driver = {
    .format_name = "test-mem",
    .instance_size = sizeof(MemState),
    .is_protocol = true,
    .open = mem_open,
    .close = mem_close,
    .refresh_limits = mem_refresh_limits,
    .co_preadv = mem_preadv,
    .co_pwritev = mem_pwritev,
    .co_pwrite_zeroes = mem_pwrite_zeroes,
    .co_pdiscard = mem_pdiscard,
    .co_flush_to_disk = mem_flush,
    .co_getlength = mem_getlength,
    .co_truncate = mem_truncate,
};

/* ---- test-overlay: 4 KiB blocks, each either its own or read from the backing file ---- */

#define OV_BLOCK 4096
#define OV_SIZE  65536

typedef struct OverlayState {
    uint8_t data[OV_SIZE];
    bool allocated[OV_SIZE / OV_BLOCK];
    int writes;
} OverlayState;

static bool ov_open(BlockDriverState *bs, GHashTable *options, int flags, GError **errp)
{
    return true;
}

static void ov_refresh_limits(BlockDriverState *bs, GError **errp)
{
    bs->bl.request_alignment = OV_BLOCK;
}

static int coroutine_fn ov_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                  IOVector *qiov, BdrvRequestFlags flags)
{
    OverlayState *s = bs->opaque;
    for (int64_t done = 0; done < bytes; done += OV_BLOCK) {
        int64_t off = offset + done;
        if (s->allocated[off / OV_BLOCK]) {
            iov_from_buf(qiov, done, s->data + off, OV_BLOCK);
            continue;
        }
        IOVector slice;
        iov_init_slice(&slice, qiov, done, OV_BLOCK);
        int ret = bdrv_co_preadv(bs->backing, off, OV_BLOCK, &slice, 0);
        iov_destroy(&slice);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

static int coroutine_fn ov_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   IOVector *qiov, BdrvRequestFlags flags)
{
    OverlayState *s = bs->opaque;
    iov_to_buf(qiov, 0, s->data + offset, bytes);
    for (int64_t off = offset; off < offset + bytes; off += OV_BLOCK) {
        s->allocated[off / OV_BLOCK] = true;
    }
    s->writes++;
    return 0;
}

static int coroutine_fn ov_block_status(BlockDriverState *bs, bool want_zero, int64_t offset,
                                        int64_t bytes, int64_t *pnum, int64_t *map,
                                        BlockDriverState **file)
{
    OverlayState *s = bs->opaque;
    bool first = s->allocated[offset / OV_BLOCK];
    int64_t n = OV_BLOCK;
    while (n < bytes && s->allocated[(offset + n) / OV_BLOCK] == first) {
        n += OV_BLOCK;
    }
    *pnum = MIN(n, bytes);
    *map = offset;
    *file = bs;
    return first ? BDRV_BLOCK_DATA | BDRV_BLOCK_OFFSET_VALID : 0;
}

static int64_t coroutine_fn ov_getlength(BlockDriverState *bs)
{
    return OV_SIZE;
}

static BlockDriver test_overlay_driver = {
    .format_name = "test-overlay",
    .instance_size = sizeof(OverlayState),
    .is_protocol = true,
    .supports_backing = true,
    .open = ov_open,
    .refresh_limits = ov_refresh_limits,
    .co_preadv = ov_preadv,
    .co_pwritev = ov_pwritev,
    .co_block_status = ov_block_status,
    .co_getlength = ov_getlength,
};

/* ---- helpers ------------------------------------------------------------------ */

static BlockBackend *open_mem(const char *extra, int flags)
{
    g_autofree char *kv =
        g_strdup_printf("driver=test-mem,node-name=mem%s%s", *extra ? "," : "", extra);
    GHashTable *o = opts_new();
    GError *err = NULL;
    g_assert(opts_parse_kv(o, kv, NULL, NULL));
    BlockBackend *blk = blk_new_open(NULL, o, flags, &err);
    if (!blk) {
        fail_msg("open failed: %s", err->message);
    }
    g_array_set_size(mem_calls, 0);
    mem_misaligned = 0;
    return blk;
}

static MemState *mem_state(BlockBackend *blk)
{
    return blk_bs(blk)->opaque;
}

static int count_calls(char op)
{
    int n = 0;
    for (guint i = 0; i < mem_calls->len; i++) {
        n += g_array_index(mem_calls, MemCall, i).op == op;
    }
    return n;
}

typedef struct AioResult {
    int ret;
    bool done;
} AioResult;

static void aio_done(void *opaque, int ret)
{
    AioResult *r = opaque;
    r->ret = ret;
    r->done = true;
}

static void wait_for(bool *flag)
{
    while (!*flag) {
        aio_poll(aio_main_context(), true);
    }
}

/* ---- bounds -------------------------------------------------------------------- */

static void test_out_of_range_requests_are_rejected(void **state)
{
    BlockBackend *blk = open_mem("size=65536", BDRV_O_RDWR);
    char buf[16];

    assert_int_equal(blk_pread(blk, 65535, 2, buf, 0), -EIO);
    assert_int_equal(blk_pread(blk, 65536, 1, buf, 0), -EIO);
    assert_int_equal(blk_pwrite(blk, 65530, 16, buf, 0), -EIO);
    assert_int_equal(blk_pread(blk, -1, 1, buf, 0), -EINVAL);
    assert_int_equal(blk_pread(blk, 0, -1, buf, 0), -EINVAL);
    assert_int_equal(blk_pread(blk, INT64_MAX, 1, buf, 0), -EINVAL);
    assert_int_equal(blk_pwrite_zeroes(blk, INT64_MAX - 10, 20, 0), -EINVAL);
    /* Zero-length requests at the very end are fine. */
    assert_int_equal(blk_pread(blk, 65536, 0, buf, 0), 0);

    /* Past the per-request cap, even where writing beyond EOF is allowed. */
    blk_set_allow_write_beyond_eof(blk, true);
    IOVector huge;
    iov_init_buf(&huge, buf, BDRV_REQUEST_MAX_BYTES + 512);
    assert_int_equal(blk_pwritev(blk, 0, BDRV_REQUEST_MAX_BYTES + 512, &huge, 0), -EINVAL);
    /* A vector that does not match the length is refused too. */
    IOVector small;
    iov_init_buf(&small, buf, 8);
    assert_int_equal(blk_preadv(blk, 0, 16, &small, 0), -EINVAL);
    assert_int_equal(mem_calls->len, 0);
    blk_unref(blk);
}

static void test_writes_to_a_read_only_node_fail_with_eperm(void **state)
{
    BlockBackend *blk = open_mem("size=65536", 0);
    char buf[512] = {0};
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), -EPERM);
    assert_int_equal(blk_pwrite_zeroes(blk, 0, 512, 0), -EPERM);
    assert_int_equal(blk_pdiscard(blk, 0, 512), -EPERM);
    assert_int_equal(blk_pread(blk, 0, 512, buf, 0), 0);
    blk_unref(blk);
}

/* ---- alignment ------------------------------------------------------------------- */

static void test_unaligned_write_is_read_modify_written(void **state)
{
    BlockBackend *blk = open_mem("size=65536,align=4096", BDRV_O_RDWR);
    uint8_t model[16384], back[16384], patch[10];

    memset(model, 0xaa, sizeof(model));
    assert_int_equal(blk_pwrite(blk, 0, sizeof(model), model, 0), 0);
    g_array_set_size(mem_calls, 0);

    memset(patch, 0x55, sizeof(patch));
    memcpy(model + 4090, patch, sizeof(patch));
    assert_int_equal(blk_pwrite(blk, 4090, sizeof(patch), patch, 0), 0);
    /* Two edge blocks read, then one aligned write covering both. */
    assert_int_equal(count_calls('r'), 2);
    assert_int_equal(count_calls('w'), 1);
    MemCall w = g_array_index(mem_calls, MemCall, 2);
    assert_int_equal(w.offset, 0);
    assert_int_equal(w.bytes, 8192);

    assert_int_equal(blk_pread(blk, 0, sizeof(back), back, 0), 0);
    assert_memory_equal(back, model, sizeof(model));

    /* Unaligned reads get exactly the bytes asked for. */
    uint8_t part[100];
    assert_int_equal(blk_pread(blk, 4050, sizeof(part), part, 0), 0);
    assert_memory_equal(part, model + 4050, sizeof(part));
    assert_int_equal(mem_misaligned, 0);
    blk_unref(blk);
}

static void test_unaligned_write_inside_one_block_keeps_the_rest(void **state)
{
    BlockBackend *blk = open_mem("size=65536,align=4096", BDRV_O_RDWR);
    uint8_t model[4096], back[4096];
    for (int i = 0; i < 4096; i++) {
        model[i] = i * 7;
    }
    assert_int_equal(blk_pwrite(blk, 8192, 4096, model, 0), 0);
    g_array_set_size(mem_calls, 0);
    memset(model + 100, 0xee, 3);
    assert_int_equal(blk_pwrite(blk, 8192 + 100, 3, model + 100, 0), 0);
    assert_int_equal(count_calls('r'), 1);
    assert_int_equal(count_calls('w'), 1);
    assert_int_equal(blk_pread(blk, 8192, 4096, back, 0), 0);
    assert_memory_equal(back, model, 4096);
    assert_int_equal(mem_misaligned, 0);
    blk_unref(blk);
}

static void test_overlapping_unaligned_writes_are_serialised(void **state)
{
    /* Each write sleeps between copying its data and storing it. */
    BlockBackend *blk = open_mem("size=65536,align=4096,delay-ns=2000000", BDRV_O_RDWR);
    uint8_t a = 0x11, b = 0x22, back[4096];
    IOVector va, vb;
    AioResult ra = {0}, rb = {0};

    iov_init_buf(&va, &a, 1);
    iov_init_buf(&vb, &b, 1);
    blk_aio_pwritev(blk, 10, &va, 0, aio_done, &ra);
    blk_aio_pwritev(blk, 20, &vb, 0, aio_done, &rb);
    wait_for(&ra.done);
    wait_for(&rb.done);
    assert_int_equal(ra.ret, 0);
    assert_int_equal(rb.ret, 0);

    assert_int_equal(blk_pread(blk, 0, 4096, back, 0), 0);
    assert_int_equal(back[10], 0x11);
    assert_int_equal(back[20], 0x22);
    /* The second read-modify-write started after the first had written. */
    MemCall c[4];
    for (int i = 0; i < 4; i++) {
        c[i] = g_array_index(mem_calls, MemCall, i);
    }
    assert_int_equal(c[0].op, 'r');
    assert_int_equal(c[1].op, 'w');
    assert_int_equal(c[2].op, 'r');
    assert_int_equal(c[3].op, 'w');
    blk_unref(blk);
}

static void test_requests_are_split_by_max_transfer(void **state)
{
    BlockBackend *blk = open_mem("size=131072,align=512,max-transfer=8192", BDRV_O_RDWR);
    g_autofree uint8_t *buf = g_malloc(40960);
    for (int i = 0; i < 40960; i++) {
        buf[i] = i % 251;
    }
    assert_int_equal(blk_pwrite(blk, 4096, 40960, buf, 0), 0);
    assert_int_equal(count_calls('w'), 5);

    g_array_set_size(mem_calls, 0);
    g_autofree uint8_t *back = g_malloc(20000);
    assert_int_equal(blk_pread(blk, 4096, 20000, back, 0), 0);
    /* 20000 bytes pad to 20480: 8192 + 8192 + 4096. */
    assert_int_equal(count_calls('r'), 3);
    assert_memory_equal(back, buf, 20000);
    assert_int_equal(mem_misaligned, 0);
    blk_unref(blk);
}

/* ---- write-zeroes, discard, flush, truncate ------------------------------------------ */

static void test_write_zeroes_falls_back_to_writing_zeroes(void **state)
{
    BlockBackend *blk = open_mem("size=65536,align=512", BDRV_O_RDWR);
    MemState *s = mem_state(blk);
    memset(s->data, 0xaa, s->size);

    assert_int_equal(blk_pwrite_zeroes(blk, 0, 8192, BDRV_REQ_NO_FALLBACK), -ENOTSUP);
    assert_int_equal(s->data[0], 0xaa);
    assert_int_equal(count_calls('w'), 0);

    assert_int_equal(blk_pwrite_zeroes(blk, 0, 8192, 0), 0);
    assert_int_equal(count_calls('w'), 1);
    for (int i = 0; i < 8192; i++) {
        assert_int_equal(s->data[i], 0);
    }
    assert_int_equal(s->data[8192], 0xaa);

    /* Unaligned: the edges are read-modify-written, nothing else changes. */
    assert_int_equal(blk_pwrite_zeroes(blk, 10000, 100, 0), 0);
    assert_int_equal(s->data[9999], 0xaa);
    assert_int_equal(s->data[10000], 0);
    assert_int_equal(s->data[10099], 0);
    assert_int_equal(s->data[10100], 0xaa);
    assert_int_equal(mem_misaligned, 0);
    blk_unref(blk);
}

static void test_write_zeroes_uses_the_driver_when_it_can(void **state)
{
    BlockBackend *blk = open_mem("size=65536,align=4096,zeroes=on", BDRV_O_RDWR);
    MemState *s = mem_state(blk);
    memset(s->data, 0xaa, s->size);

    /* [1000, 20000): edge blocks by read-modify-write, the middle by the driver. */
    assert_int_equal(blk_pwrite_zeroes(blk, 1000, 19000, 0), 0);
    assert_int_equal(count_calls('z'), 1);
    assert_int_equal(count_calls('w'), 2);
    assert_int_equal(s->data[999], 0xaa);
    for (int i = 1000; i < 20000; i++) {
        assert_int_equal(s->data[i], 0);
    }
    assert_int_equal(s->data[20000], 0xaa);
    assert_int_equal(mem_misaligned, 0);
    blk_unref(blk);
}

static void test_discard_drops_only_whole_granules(void **state)
{
    GError *err = NULL;
    BlockBackend *off = open_mem("size=65536,align=4096", BDRV_O_RDWR);
    assert_int_equal(blk_pdiscard(off, 0, 65536), 0);
    assert_int_equal(count_calls('d'), 0); /* discard=ignore by default */
    blk_unref(off);

    BlockBackend *blk = open_mem("size=65536,align=4096,discard=unmap", BDRV_O_RDWR);
    assert_int_equal(blk_pdiscard(blk, 100, 10000), 0);
    assert_int_equal(count_calls('d'), 1);
    MemCall d = g_array_index(mem_calls, MemCall, 0);
    assert_int_equal(d.offset, 4096);
    assert_int_equal(d.bytes, 4096);
    assert_int_equal(blk_pdiscard(blk, 100, 200), 0);
    assert_int_equal(count_calls('d'), 1);
    assert_null(err);
    blk_unref(blk);
}

static void test_flush_reaches_the_driver_only_after_writes(void **state)
{
    BlockBackend *blk = open_mem("size=65536", BDRV_O_RDWR);
    char buf[512] = {0};
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(count_calls('f'), 0);
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), 0);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(count_calls('f'), 1);
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(count_calls('f'), 1);

    /* Without a write cache every write is made durable (FUA emulated by a flush). */
    blk_set_enable_write_cache(blk, false);
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), 0);
    assert_int_equal(count_calls('f'), 2);
    blk_unref(blk);
}

static void test_truncate_needs_the_resize_permission(void **state)
{
    GError *err = NULL;
    BlockBackend *blk = open_mem("size=65536", BDRV_O_RDWR);
    assert_int_equal(blk_truncate(blk, 131072, true, PREALLOC_MODE_OFF, 0, &err), -EPERM);
    assert_non_null(strstr(err->message, "'resize'"));
    g_clear_error(&err);
    blk_unref(blk);

    blk = open_mem("size=65536", BDRV_O_RDWR | BDRV_O_RESIZE);
    assert_int_equal(blk_truncate(blk, 131072, true, PREALLOC_MODE_OFF, 0, &err), 0);
    assert_int_equal(blk_getlength(blk), 131072);
    char buf[16] = "x";
    assert_int_equal(blk_pwrite(blk, 131000, 16, buf, 0), 0);
    assert_int_equal(blk_truncate(blk, -1, true, PREALLOC_MODE_OFF, 0, &err), -EINVAL);
    g_clear_error(&err);
    blk_unref(blk);
}

/* ---- forms of the API ---------------------------------------------------------------- */

typedef struct CoRead {
    BlockBackend *blk;
    uint8_t *buf;
    int ret;
    bool done;
} CoRead;

static void coroutine_fn co_read_entry(void *opaque)
{
    CoRead *r = opaque;
    r->ret = blk_co_pread(r->blk, 0, 4096, r->buf, 0);
    /* The synchronous form, called from a coroutine, just runs inline. */
    if (r->ret == 0) {
        r->ret = blk_pread(r->blk, 0, 4096, r->buf, 0);
    }
    r->done = true;
}

static void test_sync_async_and_coroutine_forms_agree(void **state)
{
    BlockBackend *blk = open_mem("size=65536,delay-ns=100000", BDRV_O_RDWR);
    uint8_t data[4096], back[4096];
    for (int i = 0; i < 4096; i++) {
        data[i] = i ^ 0x5a;
    }
    assert_int_equal(blk_pwrite(blk, 0, 4096, data, 0), 0);

    AioResult r = {0};
    IOVector v;
    memset(back, 0, sizeof(back));
    iov_init_buf(&v, back, sizeof(back));
    blk_aio_preadv(blk, 0, &v, 0, aio_done, &r);
    assert_false(r.done); /* callbacks never run before the call returns */
    wait_for(&r.done);
    assert_int_equal(r.ret, 0);
    assert_memory_equal(back, data, 4096);

    CoRead cr = {.blk = blk, .buf = back};
    memset(back, 0, sizeof(back));
    co_enter(co_create(co_read_entry, &cr));
    wait_for(&cr.done);
    assert_int_equal(cr.ret, 0);
    assert_memory_equal(back, data, 4096);
    blk_unref(blk);
}

static void test_async_callback_waits_even_for_instant_completion(void **state)
{
    BlockBackend *blk = open_mem("size=65536", BDRV_O_RDWR);
    AioResult r = {0}, f = {0};
    blk_aio_pwrite_zeroes(blk, 0, 4096, 0, aio_done, &r);
    blk_aio_flush(blk, aio_done, &f);
    assert_false(r.done);
    assert_false(f.done);
    blk_drain(blk); /* also waits for the callbacks */
    assert_true(r.done && f.done);
    assert_int_equal(r.ret, 0);
    blk_unref(blk);
}

static void test_stats_count_operations_and_bytes(void **state)
{
    BlockBackend *blk = open_mem("size=65536", BDRV_O_RDWR);
    char buf[4096] = {0};
    BlockAcctStats st;
    assert_int_equal(blk_pwrite(blk, 0, 4096, buf, 0), 0);
    assert_int_equal(blk_pread(blk, 0, 1000, buf, 0), 0);
    assert_int_equal(blk_pread(blk, 0, 24, buf, 0), 0);
    assert_int_equal(blk_pread(blk, 70000, 24, buf, 0), -EIO);
    assert_int_equal(blk_flush(blk), 0);
    blk_get_stats(blk, &st);
    assert_int_equal(st.wr_ops, 1);
    assert_int_equal(st.wr_bytes, 4096);
    assert_int_equal(st.rd_ops, 3);
    assert_int_equal(st.rd_bytes, 1048);
    assert_int_equal(st.failed_rd_ops, 1);
    assert_int_equal(st.flush_ops, 1);
    blk_unref(blk);
}

static void test_block_status_describes_null_co(void **state)
{
    GHashTable *o = opts_new();
    opts_set(o, "driver", "null-co");
    opts_set(o, "size", "1M");
    opts_set(o, "read-zeroes", "on");
    GError *err = NULL;
    BlockBackend *blk = blk_new_open(NULL, o, 0, &err);
    int64_t pnum, map;
    BlockDriverState *file;
    int ret = blk_block_status(blk, 4096, 8192, &pnum, &map, &file);
    assert_int_equal(ret, BDRV_BLOCK_ZERO | BDRV_BLOCK_OFFSET_VALID | BDRV_BLOCK_ALLOCATED);
    assert_int_equal(pnum, 8192);
    assert_int_equal(map, 4096);
    assert_ptr_equal(file, blk_bs(blk));
    ret = blk_block_status(blk, (1 << 20) - 512, 8192, &pnum, NULL, NULL);
    assert_true(ret & BDRV_BLOCK_EOF);
    assert_int_equal(pnum, 512);
    blk_unref(blk);
}

static void test_requests_on_an_empty_backend_fail_with_enomedium(void **state)
{
    BlockBackend *blk = blk_new(BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL);
    char buf[8];
    assert_int_equal(blk_pread(blk, 0, 8, buf, 0), -ENOMEDIUM);
    assert_int_equal(blk_flush(blk), -ENOMEDIUM);
    assert_int_equal(blk_getlength(blk), -ENOMEDIUM);
    blk_unref(blk);
}

static void test_copy_on_read_stores_backing_data_in_the_overlay(void **state)
{
    GError *err = NULL;
    GHashTable *o = opts_new();
    g_assert(opts_parse_kv(o, "driver=test-mem,node-name=cor-base,size=65536", NULL, NULL));
    BlockDriverState *base = bdrv_open(NULL, o, 0, &err);
    assert_non_null(base);
    MemState *ms = base->opaque;
    for (int i = 0; i < OV_SIZE; i++) {
        ms->data[i] = i % 253;
    }

    o = opts_new();
    g_assert(opts_parse_kv(o, "driver=test-overlay,backing=cor-base,copy-on-read=on", NULL, NULL));
    BlockBackend *blk = blk_new_open(NULL, o, BDRV_O_RDWR, &err);
    if (!blk) {
        fail_msg("%s", err->message);
    }
    bdrv_unref(base);
    OverlayState *os = blk_bs(blk)->opaque;
    g_array_set_size(mem_calls, 0);

    uint8_t back[8192];
    assert_int_equal(blk_pread(blk, 4096 + 100, 5000, back, 0), 0);
    assert_memory_equal(back, ms->data + 4096 + 100, 5000);
    assert_true(os->allocated[1] && os->allocated[2]);
    assert_false(os->allocated[0] || os->allocated[3]);
    assert_int_equal(count_calls('r'), 2);

    /* Now the overlay serves the range itself. */
    assert_int_equal(blk_pread(blk, 4096, 8192, back, 0), 0);
    assert_memory_equal(back, ms->data + 4096, 8192);
    assert_int_equal(count_calls('r'), 2);

    int64_t pnum;
    /* Block 0: only in the base.  Blocks 1-2: copied up. */
    assert_int_equal(bdrv_is_allocated_above(blk_bs(blk), NULL, false, 0, OV_SIZE, &pnum), 1);
    assert_int_equal(pnum, 4096);
    assert_int_equal(bdrv_is_allocated_above(blk_bs(blk), base, false, 0, OV_SIZE, &pnum), 0);
    assert_int_equal(pnum, 4096);
    assert_int_equal(bdrv_is_allocated_above(blk_bs(blk), base, false, 4096, OV_SIZE - 4096, &pnum),
                     1);
    assert_int_equal(pnum, 8192);
    blk_unref(blk);
}

int main(void)
{
    g_assert(aio_main_loop_init(NULL));
    bdrv_init();
    bdrv_register(&test_mem_driver);
    bdrv_register(&test_overlay_driver);
    mem_calls = g_array_new(false, false, sizeof(MemCall));

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_out_of_range_requests_are_rejected),
        cmocka_unit_test(test_writes_to_a_read_only_node_fail_with_eperm),
        cmocka_unit_test(test_unaligned_write_is_read_modify_written),
        cmocka_unit_test(test_unaligned_write_inside_one_block_keeps_the_rest),
        cmocka_unit_test(test_overlapping_unaligned_writes_are_serialised),
        cmocka_unit_test(test_requests_are_split_by_max_transfer),
        cmocka_unit_test(test_write_zeroes_falls_back_to_writing_zeroes),
        cmocka_unit_test(test_write_zeroes_uses_the_driver_when_it_can),
        cmocka_unit_test(test_discard_drops_only_whole_granules),
        cmocka_unit_test(test_flush_reaches_the_driver_only_after_writes),
        cmocka_unit_test(test_truncate_needs_the_resize_permission),
        cmocka_unit_test(test_sync_async_and_coroutine_forms_agree),
        cmocka_unit_test(test_async_callback_waits_even_for_instant_completion),
        cmocka_unit_test(test_stats_count_operations_and_bytes),
        cmocka_unit_test(test_block_status_describes_null_co),
        cmocka_unit_test(test_requests_on_an_empty_backend_fail_with_enomedium),
        cmocka_unit_test(test_copy_on_read_stores_backing_data_in_the_overlay),
    };
    int ret = cmocka_run_group_tests(tests, NULL, NULL);
    g_array_unref(mem_calls);
    return ret;
}
