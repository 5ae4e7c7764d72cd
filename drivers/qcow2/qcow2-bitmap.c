/*
 * qcow2 persistent dirty bitmaps, kept intact: the bitmap directory is
 * checked at open, its clusters are known to check, and before the first
 * write every bitmap with the "auto" flag is marked "in use" (the spec's
 * way to say that it no longer matches the disk), since this driver does
 * not track writes in bitmaps.  Nothing else in the bitmaps changes.
 *
 * The extension is only trusted when the bitmaps autoclear bit is set;
 * otherwise (a program without bitmap support wrote the image) it is kept
 * as it is and ignored.
 *
 * Locking: open runs before any request; qcow2_bitmaps_mark_in_use runs
 * under s->lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "drivers/qcow2/qcow2.h"

#define BME_HEADER_SIZE     24
#define BME_FLAG_IN_USE     (1u << 0)
#define BME_FLAG_AUTO       (1u << 1)
#define BME_RESERVED_FLAGS  0xfffffff8u
#define BME_MAX_NAME        1023
#define BME_MAX_TABLE_BYTES (64 * 1024 * 1024)
#define BME_TABLE_RESERVED  0xff000000000001feULL
#define BME_TABLE_OFFSET    0x00fffffffffffe00ULL

/* Reads the whole directory. */
static int coroutine_fn read_dir(BlockDriverState *bs, uint8_t **dir)
{
    BDRVQcow2State *s = bs->opaque;
    *dir = g_malloc(s->bitmap_dir_size);
    int ret = bdrv_co_pread(bs->file, s->bitmap_dir_offset, s->bitmap_dir_size, *dir, 0);
    if (ret < 0) {
        g_free(*dir);
        *dir = NULL;
    }
    return ret;
}

/* Visits the directory entries; @fn gets each entry's position in @dir.  -EINVAL on bad data. */
static int walk_dir(BDRVQcow2State *s, uint8_t *dir, GError **errp,
                    void (*fn)(void *opaque, uint8_t *dir, uint64_t pos), void *opaque)
{
    uint64_t pos = 0;
    for (uint32_t i = 0; i < s->nb_bitmaps; i++) {
        if (s->bitmap_dir_size - pos < BME_HEADER_SIZE) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Bitmap directory is shorter than its %u entries", s->nb_bitmaps);
            return -EINVAL;
        }
        uint8_t *e = dir + pos;
        uint64_t table = qcow2_ld64(e);
        uint32_t table_size = qcow2_ld32(e + 8), flags = qcow2_ld32(e + 12);
        uint16_t name_size = qcow2_ld16(e + 18);
        uint32_t extra = qcow2_ld32(e + 20);
        uint64_t len = qcow2_round_up((uint64_t)BME_HEADER_SIZE + extra + name_size, 8);

        if (len > s->bitmap_dir_size - pos || (table & (s->cluster_size - 1)) ||
            (uint64_t)table_size * 8 > BME_MAX_TABLE_BYTES || (flags & BME_RESERVED_FLAGS) ||
            e[16] != 1 || name_size == 0 || name_size > BME_MAX_NAME) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Bitmap directory entry %u is invalid", i);
            return -EINVAL;
        }
        if (fn) {
            fn(opaque, dir, pos);
        }
        pos += len;
    }
    return 0;
}

int coroutine_fn qcow2_bitmaps_open(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const uint8_t *x = s->bitmaps_ext;
    uint8_t *dir;

    s->nb_bitmaps = 0;
    if (!s->has_bitmaps_ext || !(s->autoclear & QCOW2_AUTOCLEAR_BITMAPS)) {
        return 0;
    }
    uint32_t nb = qcow2_ld32(x);
    uint64_t dir_size = qcow2_ld64(x + 8), dir_offset = qcow2_ld64(x + 16);
    if (nb == 0 || nb > QCOW2_MAX_BITMAPS || qcow2_ld32(x + 4) != 0 ||
        (dir_offset & (s->cluster_size - 1)) || dir_size > QCOW2_MAX_BITMAP_DIR ||
        dir_size < (uint64_t)nb * BME_HEADER_SIZE || dir_offset > INT64_MAX - dir_size) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "Invalid bitmaps extension");
        return -EINVAL;
    }
    s->nb_bitmaps = nb;
    s->bitmap_dir_offset = dir_offset;
    s->bitmap_dir_size = dir_size;
    int ret = read_dir(bs, &dir);
    if (ret < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                    "Could not read the bitmap directory: %s", g_strerror(-ret));
        return ret;
    }
    ret = walk_dir(s, dir, errp, NULL, NULL);
    g_free(dir);
    return ret;
}

static void mark_entry(void *opaque, uint8_t *dir, uint64_t pos)
{
    bool *changed = opaque;
    uint32_t flags = qcow2_ld32(dir + pos + 12);
    if ((flags & BME_FLAG_AUTO) && !(flags & BME_FLAG_IN_USE)) {
        qcow2_st32(dir + pos + 12, flags | BME_FLAG_IN_USE);
        *changed = true;
    }
}

int coroutine_fn qcow2_bitmaps_mark_in_use(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    bool changed = false;
    uint8_t *dir;

    if (!s->nb_bitmaps) {
        return 0;
    }
    int ret = read_dir(bs, &dir);
    if (ret < 0) {
        return ret;
    }
    if (walk_dir(s, dir, NULL, mark_entry, &changed) < 0) {
        ret = -EIO;
    } else if (changed) {
        ret = bdrv_co_pwrite(bs->file, s->bitmap_dir_offset, s->bitmap_dir_size, dir, 0);
        if (ret == 0) {
            ret = bdrv_co_flush(bs->file->bs);
        }
    }
    g_free(dir);
    return ret;
}

typedef struct RangeWalk {
    GArray *tables; /* pairs (offset, entries) */
} RangeWalk;

static void collect_table(void *opaque, uint8_t *dir, uint64_t pos)
{
    RangeWalk *w = opaque;
    uint64_t t[2] = {qcow2_ld64(dir + pos), qcow2_ld32(dir + pos + 8)};
    g_array_append_vals(w->tables, t, 2);
}

int coroutine_fn qcow2_bitmaps_foreach_range(
    BlockDriverState *bs, void (*fn)(void *opaque, uint64_t offset, uint64_t bytes), void *opaque)
{
    BDRVQcow2State *s = bs->opaque;
    RangeWalk w = {g_array_new(false, false, sizeof(uint64_t))};
    uint8_t *dir;
    int ret;

    if (!s->nb_bitmaps) {
        g_array_free(w.tables, true);
        return 0;
    }
    ret = read_dir(bs, &dir);
    if (ret < 0) {
        g_array_free(w.tables, true);
        return ret;
    }
    fn(opaque, s->bitmap_dir_offset, s->bitmap_dir_size);
    ret = walk_dir(s, dir, NULL, collect_table, &w) < 0 ? -EIO : 0;
    g_free(dir);
    for (guint i = 0; ret == 0 && i < w.tables->len; i += 2) {
        uint64_t off = g_array_index(w.tables, uint64_t, i);
        uint64_t n = g_array_index(w.tables, uint64_t, i + 1);
        if (!off || !n) {
            continue;
        }
        fn(opaque, off, n * 8);
        uint8_t *t = g_malloc(n * 8);
        ret = bdrv_co_pread(bs->file, off, n * 8, t, 0);
        for (uint64_t j = 0; ret == 0 && j < n; j++) {
            uint64_t e = qcow2_ld64(t + j * 8);
            if (e & BME_TABLE_RESERVED) {
                ret = -EIO;
            } else if (e & BME_TABLE_OFFSET) {
                fn(opaque, e & BME_TABLE_OFFSET, s->cluster_size);
            }
        }
        g_free(t);
    }
    g_array_free(w.tables, true);
    return ret;
}
