/*
 * qcow2 persistent bitmaps, the library operations (BlockDriver.bitmap_ops,
 * see block/bitmaps.h): list, add, remove, clear, enable, disable, read and
 * merge, as qemu-img bitmap offers them.
 *
 * Each operation first writes back the bitmaps that track writes (so the
 * image is the whole truth), then loads the directory, changes it in
 * memory, and commits it (qcow2_bm_commit: new clusters, one header write,
 * old clusters freed).  Bitmaps that are in use (inconsistent) can only be
 * removed, as in QEMU.
 *
 * Locking: main loop, node drained, under s->lock.
 */
#include <errno.h>
#include <string.h>

#include "block/bitmaps.h"
#include "drivers/qcow2/qcow2-bitmap.h"

typedef struct BmOp {
    BlockDriverState *bs;
    const char *name;
    uint32_t granularity;
    bool flag;
    const uint8_t *in_bits; /* merge */
    uint64_t in_nbits;
    uint8_t **out_bits; /* read */
    uint64_t *out_nbits;
    uint32_t *out_gran;
    BdrvBitmapInfo **list;
    int *count;
    GError **errp;
    int ret;
} BmOp;

#define OP_FAIL(op, code, ...)                                                                     \
    do {                                                                                           \
        g_set_error((op)->errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, __VA_ARGS__);                    \
        (op)->ret = (code);                                                                        \
        return;                                                                                    \
    } while (0)

/* Writes back the tracked bitmaps and loads the directory. */
static bool coroutine_fn op_begin(BmOp *op, BmDir *dir)
{
    op->ret = qcow2_bm_store_tracked(op->bs);
    if (op->ret == 0) {
        op->ret = qcow2_bm_load_dir(op->bs, dir, op->errp);
        if (op->ret < 0) {
            return false;
        }
    }
    if (op->ret < 0) {
        g_set_error(op->errp, G_FILE_ERROR, g_file_error_from_errno(-op->ret),
                    "Could not write back the bitmaps: %s", g_strerror(-op->ret));
        return false;
    }
    return true;
}

/* Finds bitmap @op->name; fails unless it exists (and, with @usable, can be used). */
static int find_usable(BmOp *op, BmDir *dir, bool usable)
{
    BDRVQcow2State *s = op->bs->opaque;
    int i = qcow2_bm_find(dir, op->name);
    if (i < 0) {
        g_set_error(op->errp, G_FILE_ERROR, G_FILE_ERROR_NOENT, "Dirty bitmap '%s' not found",
                    op->name);
        op->ret = -ENOENT;
        return -1;
    }
    const char *why = usable ? qcow2_bm_unusable(s, &dir->e[i]) : NULL;
    if (why) {
        g_set_error(op->errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "Bitmap '%s' %s", op->name, why);
        op->ret = -EINVAL;
        return -1;
    }
    return i;
}

static void op_commit(BmOp *op, const BmDir *dir, const BmDir *old)
{
    op->ret = qcow2_bm_commit(op->bs, dir, old);
    if (op->ret < 0) {
        g_set_error(op->errp, G_FILE_ERROR, g_file_error_from_errno(-op->ret),
                    "Could not write the bitmap directory: %s", g_strerror(-op->ret));
    }
}

static void coroutine_fn list_locked(BmOp *op, BmDir *dir)
{
    BDRVQcow2State *s = op->bs->opaque;
    if (qcow2_bm_load_dir(op->bs, dir, op->errp) < 0) {
        op->ret = -EIO;
        return;
    }
    *op->count = (int)dir->n;
    *op->list = g_new0(BdrvBitmapInfo, MAX(dir->n, 1));
    for (uint32_t i = 0; i < dir->n; i++) {
        BmEntry *e = &dir->e[i];
        bool tracked = false;
        /* Bitmaps we track are "in use" on disk only because we keep them in memory. */
        for (int k = 0; s->tracked && k < s->tracked->n; k++) {
            tracked |= !strcmp(s->tracked->bm[k].name, e->name);
        }
        (*op->list)[i] = (BdrvBitmapInfo){
            .name = g_strdup(e->name),
            .granularity = e->gran_bits < 32 ? 1u << e->gran_bits : 0,
            .enabled = e->flags & BME_FLAG_AUTO,
            .in_use = (e->flags & BME_FLAG_IN_USE) && !tracked,
        };
    }
}

static void coroutine_fn add_locked(BmOp *op, BmDir *dir)
{
    BDRVQcow2State *s = op->bs->opaque;
    size_t len = strlen(op->name);
    int gran_bits = __builtin_ctz(op->granularity);

    if (s->version < 3) {
        OP_FAIL(op, -ENOTSUP, "Cannot store dirty bitmaps in qcow2 v2 files");
    }
    if (len == 0 || len > BME_MAX_NAME) {
        OP_FAIL(op, -EINVAL, "Bitmap names must be 1 to %d bytes long", BME_MAX_NAME);
    }
    if (gran_bits < BME_MIN_GRAN_BITS || gran_bits > BME_MAX_GRAN_BITS) {
        OP_FAIL(op, -EINVAL, "Granularity must be between 512 bytes and 2 GiB");
    }
    if (!op_begin(op, dir)) {
        return;
    }
    if (qcow2_bm_find(dir, op->name) >= 0) {
        OP_FAIL(op, -EEXIST, "Bitmap already exists: %s", op->name);
    }
    if (dir->n >= QCOW2_MAX_BITMAPS) {
        OP_FAIL(op, -EFBIG, "Too many bitmaps (at most %d)", QCOW2_MAX_BITMAPS);
    }
    if (qcow2_size_to_clusters(s, qcow2_bm_nbytes(s, gran_bits)) * s->cluster_size >
        BME_MAX_PHYS_BYTES) {
        OP_FAIL(op, -EFBIG, "Granularity too small for the disk size");
    }
    dir->e = g_renew(BmEntry, dir->e, dir->n + 1);
    BmEntry *e = &dir->e[dir->n++];
    *e = (BmEntry){
        .flags = op->flag ? BME_FLAG_AUTO : 0,
        .type = BME_TYPE_DIRTY,
        .gran_bits = (uint8_t)gran_bits,
        .name = g_strdup(op->name),
    };
    uint8_t *zero = g_malloc0(MAX(qcow2_bm_nbytes(s, gran_bits), 1));
    op->ret = qcow2_bm_write_bits(op->bs, e, zero);
    g_free(zero);
    if (op->ret == 0) {
        op_commit(op, dir, NULL);
    } else {
        g_set_error(op->errp, G_FILE_ERROR, g_file_error_from_errno(-op->ret),
                    "Could not write the bitmap: %s", g_strerror(-op->ret));
    }
}

static void coroutine_fn remove_locked(BmOp *op, BmDir *dir)
{
    if (!op_begin(op, dir)) {
        return;
    }
    int i = find_usable(op, dir, false);
    if (i < 0) {
        return;
    }
    BmDir old = {
        &(BmEntry){.table_offset = dir->e[i].table_offset, .table_size = dir->e[i].table_size}, 1};
    qcow2_bm_dir_remove(dir, i);
    op_commit(op, dir, &old);
}

/* Replaces the bits of bitmap @i by @bits and commits. */
static void coroutine_fn replace_bits(BmOp *op, BmDir *dir, int i, const uint8_t *bits)
{
    BmDir old = {
        &(BmEntry){.table_offset = dir->e[i].table_offset, .table_size = dir->e[i].table_size}, 1};
    op->ret = qcow2_bm_write_bits(op->bs, &dir->e[i], bits);
    if (op->ret < 0) {
        g_set_error(op->errp, G_FILE_ERROR, g_file_error_from_errno(-op->ret),
                    "Could not write the bitmap: %s", g_strerror(-op->ret));
        return;
    }
    op_commit(op, dir, &old);
}

static void coroutine_fn clear_locked(BmOp *op, BmDir *dir)
{
    BDRVQcow2State *s = op->bs->opaque;
    if (!op_begin(op, dir)) {
        return;
    }
    int i = find_usable(op, dir, true);
    if (i < 0) {
        return;
    }
    uint8_t *zero = g_malloc0(MAX(qcow2_bm_nbytes(s, dir->e[i].gran_bits), 1));
    replace_bits(op, dir, i, zero);
    g_free(zero);
}

static void coroutine_fn set_enabled_locked(BmOp *op, BmDir *dir)
{
    if (!op_begin(op, dir)) {
        return;
    }
    int i = find_usable(op, dir, true);
    if (i < 0) {
        return;
    }
    uint32_t flags = op->flag ? dir->e[i].flags | BME_FLAG_AUTO : dir->e[i].flags & ~BME_FLAG_AUTO;
    if (flags != dir->e[i].flags) {
        dir->e[i].flags = flags;
        op_commit(op, dir, NULL);
    }
}

static void coroutine_fn read_locked(BmOp *op, BmDir *dir)
{
    BDRVQcow2State *s = op->bs->opaque;
    if (!op_begin(op, dir)) {
        return;
    }
    int i = find_usable(op, dir, true);
    if (i < 0) {
        return;
    }
    op->ret = qcow2_bm_read_bits(op->bs, &dir->e[i], op->out_bits);
    if (op->ret < 0) {
        g_set_error(op->errp, G_FILE_ERROR, g_file_error_from_errno(-op->ret),
                    "Could not read bitmap '%s': %s", op->name, g_strerror(-op->ret));
        return;
    }
    *op->out_nbits = qcow2_bm_nbits(s, dir->e[i].gran_bits);
    *op->out_gran = 1u << dir->e[i].gran_bits;
}

static void coroutine_fn merge_locked(BmOp *op, BmDir *dir)
{
    BDRVQcow2State *s = op->bs->opaque;
    uint8_t *bits;
    if (!op_begin(op, dir)) {
        return;
    }
    int i = find_usable(op, dir, true);
    if (i < 0) {
        return;
    }
    op->ret = qcow2_bm_read_bits(op->bs, &dir->e[i], &bits);
    if (op->ret < 0) {
        g_set_error(op->errp, G_FILE_ERROR, g_file_error_from_errno(-op->ret),
                    "Could not read bitmap '%s': %s", op->name, g_strerror(-op->ret));
        return;
    }
    int gb = dir->e[i].gran_bits;
    uint64_t nbits = qcow2_bm_nbits(s, gb);
    /* Each set source bit dirties the destination bits its bytes overlap. */
    for (uint64_t b = 0; b < op->in_nbits; b++) {
        if (op->in_bits[b / 8] & (1u << (b % 8))) {
            qcow2_bm_set_range(bits, nbits, gb, b * op->granularity, op->granularity);
        }
    }
    replace_bits(op, dir, i, bits);
    g_free(bits);
}

typedef void coroutine_fn BmOpFn(BmOp *op, BmDir *dir);

typedef struct BmRun {
    BmOp *op;
    BmOpFn *fn;
} BmRun;

static void coroutine_fn bm_entry(void *opaque)
{
    BmRun *r = opaque;
    BDRVQcow2State *s = r->op->bs->opaque;
    BmDir dir = {NULL, 0};
    GRAPH_RDLOCK_GUARD();
    co_mutex_lock(&s->lock);
    r->fn(r->op, &dir);
    co_mutex_unlock(&s->lock);
    qcow2_bm_dir_free(&dir);
}

static bool bm_run(BmOpFn *fn, BmOp *op)
{
    BmRun r = {op, fn};
    bdrv_run_co(bm_entry, &r);
    return op->ret == 0;
}

static bool qcow2_bitmap_list(BlockDriverState *bs, BdrvBitmapInfo **list, int *count,
                              GError **errp)
{
    return bm_run(list_locked, &(BmOp){.bs = bs, .list = list, .count = count, .errp = errp});
}

static bool qcow2_bitmap_add(BlockDriverState *bs, const char *name, uint32_t granularity,
                             bool enabled, GError **errp)
{
    return bm_run(
        add_locked,
        &(BmOp){.bs = bs, .name = name, .granularity = granularity, .flag = enabled, .errp = errp});
}

static bool qcow2_bitmap_remove(BlockDriverState *bs, const char *name, GError **errp)
{
    return bm_run(remove_locked, &(BmOp){.bs = bs, .name = name, .errp = errp});
}

static bool qcow2_bitmap_clear(BlockDriverState *bs, const char *name, GError **errp)
{
    return bm_run(clear_locked, &(BmOp){.bs = bs, .name = name, .errp = errp});
}

static bool qcow2_bitmap_set_enabled(BlockDriverState *bs, const char *name, bool enabled,
                                     GError **errp)
{
    return bm_run(set_enabled_locked,
                  &(BmOp){.bs = bs, .name = name, .flag = enabled, .errp = errp});
}

static bool qcow2_bitmap_read(BlockDriverState *bs, const char *name, uint8_t **bits,
                              uint64_t *nbits, uint32_t *granularity, GError **errp)
{
    return bm_run(read_locked, &(BmOp){.bs = bs,
                                       .name = name,
                                       .out_bits = bits,
                                       .out_nbits = nbits,
                                       .out_gran = granularity,
                                       .errp = errp});
}

static bool qcow2_bitmap_merge(BlockDriverState *bs, const char *name, const uint8_t *bits,
                               uint64_t nbits, uint32_t granularity, GError **errp)
{
    return bm_run(merge_locked, &(BmOp){.bs = bs,
                                        .name = name,
                                        .in_bits = bits,
                                        .in_nbits = nbits,
                                        .granularity = granularity,
                                        .errp = errp});
}

static bool qcow2_bitmap_supported(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    return s->version >= 3; /* the bitmaps extension needs v3 */
}

const BdrvBitmapOps qcow2_bitmap_ops = {
    .list = qcow2_bitmap_list,
    .add = qcow2_bitmap_add,
    .remove = qcow2_bitmap_remove,
    .clear = qcow2_bitmap_clear,
    .set_enabled = qcow2_bitmap_set_enabled,
    .read = qcow2_bitmap_read,
    .merge = qcow2_bitmap_merge,
    .supported = qcow2_bitmap_supported,
};
