/*
 * qcow2 persistent dirty bitmaps: the bitmaps extension and directory,
 * bitmap tables and data, and tracking writes in enabled bitmaps.
 *
 * Design notes.
 *  - The extension is trusted only when the bitmaps autoclear bit is set;
 *    otherwise (a program without bitmap support wrote the image) it is
 *    ignored, and replaced if a bitmap is added.
 *  - Tracking: before the first write (qcow2_bitmaps_before_write) every
 *    enabled ("auto") bitmap that is consistent is read into memory and
 *    all of them are marked "in use" on disk; from then on every guest
 *    write, write-zeroes, discard and snapshot revert sets the bits it
 *    covers (qcow2_bitmaps_track, lock-free).  A clean close, a reopen to
 *    read-only and every bitmap operation write the bits back and clear
 *    the flag (qcow2_bm_store_tracked).  After a crash the bitmaps stay
 *    "in use": inconsistent, as the spec wants.  An enabled bitmap that
 *    cannot be read is only marked in use.
 *  - Changes are copy-on-write: new data, tables and directory go to new
 *    clusters, become stable, and one header write switches to them; the
 *    old ones are freed afterwards, so a crash leaks clusters at worst.
 *    The one in-place write is setting "in use" flags in the directory.
 *
 * Locking: open runs before any request; everything else under s->lock,
 * except qcow2_bitmaps_track (any thread, atomic bit updates; the tracked
 * set changes only with no request in flight).
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "drivers/qcow2/qcow2-bitmap.h"

/* ---- directory ------------------------------------------------------------------------- */

static uint64_t entry_len(const BmEntry *e)
{
    return qcow2_round_up(BME_HEADER_SIZE + (uint64_t)e->extra_len + strlen(e->name), 8);
}

void qcow2_bm_dir_free(BmDir *dir)
{
    for (uint32_t i = 0; i < dir->n; i++) {
        g_free(dir->e[i].name);
        g_free(dir->e[i].extra);
    }
    g_free(dir->e);
    dir->e = NULL;
    dir->n = 0;
}

void qcow2_bm_dir_remove(BmDir *dir, uint32_t i)
{
    g_free(dir->e[i].name);
    g_free(dir->e[i].extra);
    memmove(&dir->e[i], &dir->e[i + 1], (dir->n - i - 1) * sizeof(BmEntry));
    dir->n--;
}

int qcow2_bm_find(const BmDir *dir, const char *name)
{
    for (uint32_t i = 0; i < dir->n; i++) {
        if (dir->e[i].name && !strcmp(dir->e[i].name, name)) {
            return (int)i;
        }
    }
    return -1;
}

/* Parses @size bytes of directory @raw holding @n entries. */
static int parse_dir(BDRVQcow2State *s, const uint8_t *raw, uint64_t size, uint32_t n, BmDir *dir,
                     GError **errp)
{
    uint64_t pos = 0;
    dir->e = g_new0(BmEntry, MAX(n, 1));
    dir->n = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (size - pos < BME_HEADER_SIZE) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Bitmap directory is shorter than its %u entries", n);
            return -EINVAL;
        }
        const uint8_t *p = raw + pos;
        BmEntry e = {
            .table_offset = qcow2_ld64(p),
            .table_size = qcow2_ld32(p + 8),
            .flags = qcow2_ld32(p + 12),
            .type = p[16],
            .gran_bits = p[17],
            .extra_len = qcow2_ld32(p + 20),
        };
        uint16_t name_len = qcow2_ld16(p + 18);
        uint64_t len = qcow2_round_up((uint64_t)BME_HEADER_SIZE + e.extra_len + name_len, 8);
        if (len > size - pos || (e.table_offset & (s->cluster_size - 1)) || !e.table_offset ||
            !e.table_size || (uint64_t)e.table_size * 8 > BME_MAX_TABLE_BYTES ||
            (e.flags & BME_RESERVED_FLAGS) || name_len == 0 || name_len > BME_MAX_NAME ||
            e.gran_bits > 63 ||
            /* A NUL would cut the name short: the entry could not be written back as it was. */
            memchr(p + BME_HEADER_SIZE + e.extra_len, 0, name_len)) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Bitmap directory entry %u is invalid", i);
            return -EINVAL;
        }
        e.extra = e.extra_len ? g_memdup2(p + BME_HEADER_SIZE, e.extra_len) : NULL;
        e.name = g_strndup((const char *)p + BME_HEADER_SIZE + e.extra_len, name_len);
        dir->e[dir->n++] = e;
        pos += len;
    }
    return 0;
}

int coroutine_fn qcow2_bm_load_dir(BlockDriverState *bs, BmDir *dir, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    *dir = (BmDir){g_new0(BmEntry, 1), 0};
    if (!s->nb_bitmaps) {
        return 0;
    }
    g_free(dir->e);
    uint8_t *raw = g_malloc(s->bitmap_dir_size);
    int ret = bdrv_co_pread(bs->file, s->bitmap_dir_offset, s->bitmap_dir_size, raw, 0);
    if (ret < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                    "Could not read the bitmap directory: %s", g_strerror(-ret));
        *dir = (BmDir){g_new0(BmEntry, 1), 0};
    } else {
        ret = parse_dir(s, raw, s->bitmap_dir_size, s->nb_bitmaps, dir, errp);
        if (ret < 0) {
            qcow2_bm_dir_free(dir);
        }
    }
    g_free(raw);
    return ret;
}

/* The directory as it goes to disk (*size bytes, caller frees). */
static uint8_t *build_dir(const BmDir *dir, uint64_t *size)
{
    uint64_t total = 0, pos = 0;
    for (uint32_t i = 0; i < dir->n; i++) {
        total += entry_len(&dir->e[i]);
    }
    uint8_t *raw = g_malloc0(MAX(total, 1));
    for (uint32_t i = 0; i < dir->n; i++) {
        const BmEntry *e = &dir->e[i];
        uint8_t *p = raw + pos;
        size_t name_len = strlen(e->name);
        qcow2_st64(p, e->table_offset);
        qcow2_st32(p + 8, e->table_size);
        qcow2_st32(p + 12, e->flags);
        p[16] = e->type;
        p[17] = e->gran_bits;
        qcow2_st16(p + 18, (uint16_t)name_len);
        qcow2_st32(p + 20, e->extra_len);
        if (e->extra_len) {
            memcpy(p + BME_HEADER_SIZE, e->extra, e->extra_len);
        }
        memcpy(p + BME_HEADER_SIZE + e->extra_len, e->name, name_len);
        pos += entry_len(e);
    }
    *size = total;
    return raw;
}

int coroutine_fn qcow2_bitmaps_open(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const uint8_t *x = s->bitmaps_ext;
    BmDir dir;

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
    int ret = qcow2_bm_load_dir(bs, &dir, errp);
    qcow2_bm_dir_free(&dir);
    return ret;
}

/* ---- bitmap data ----------------------------------------------------------------------- */

uint64_t qcow2_bm_nbits(BDRVQcow2State *s, int gran_bits)
{
    return (s->size + (1ULL << gran_bits) - 1) >> gran_bits;
}

uint64_t qcow2_bm_nbytes(BDRVQcow2State *s, int gran_bits)
{
    return (qcow2_bm_nbits(s, gran_bits) + 7) / 8;
}

/* Table entries the bitmap data of @gran_bits needs (at least one). */
static uint32_t table_entries(BDRVQcow2State *s, int gran_bits)
{
    return (uint32_t)MAX(qcow2_size_to_clusters(s, qcow2_bm_nbytes(s, gran_bits)), 1);
}

const char *qcow2_bm_unusable(BDRVQcow2State *s, const BmEntry *e)
{
    if (e->flags & BME_FLAG_IN_USE) {
        return "is inconsistent (in use)";
    }
    if (e->type != BME_TYPE_DIRTY) {
        return "has an unknown type";
    }
    if (e->extra_len && !(e->flags & BME_FLAG_EXTRA_COMPAT)) {
        return "has extra data this program does not know";
    }
    if (e->gran_bits < BME_MIN_GRAN_BITS || e->gran_bits > BME_MAX_GRAN_BITS) {
        return "has an unsupported granularity";
    }
    if ((uint64_t)e->table_size * s->cluster_size < qcow2_bm_nbytes(s, e->gran_bits) ||
        (uint64_t)e->table_size * s->cluster_size > BME_MAX_PHYS_BYTES) {
        return "does not match the disk size";
    }
    return NULL;
}

/* Reads and checks the table of @e (host order, caller frees). */
static int coroutine_fn read_table(BlockDriverState *bs, const BmEntry *e, uint64_t **table)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t *raw = g_malloc((uint64_t)e->table_size * 8);
    int ret = bdrv_co_pread(bs->file, e->table_offset, (uint64_t)e->table_size * 8, raw, 0);
    *table = g_new(uint64_t, e->table_size);
    for (uint32_t i = 0; ret == 0 && i < e->table_size; i++) {
        uint64_t t = qcow2_ld64(raw + i * 8);
        uint64_t off = t & BME_TABLE_OFFSET;
        if ((t & BME_TABLE_RESERVED) || (off & (s->cluster_size - 1)) ||
            (off && (t & BME_TABLE_ALL_ONES))) {
            ret = -EINVAL;
        }
        (*table)[i] = t;
    }
    g_free(raw);
    if (ret < 0) {
        g_free(*table);
        *table = NULL;
    }
    return ret;
}

int coroutine_fn qcow2_bm_read_bits(BlockDriverState *bs, const BmEntry *e, uint8_t **bits)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t nbytes = qcow2_bm_nbytes(s, e->gran_bits), nbits = qcow2_bm_nbits(s, e->gran_bits);
    uint64_t *table;
    int ret = read_table(bs, e, &table);
    if (ret < 0) {
        return ret;
    }
    *bits = g_malloc0(MAX(nbytes, 1));
    for (uint64_t i = 0; ret == 0 && i * s->cluster_size < nbytes; i++) {
        uint64_t n = MIN(s->cluster_size, nbytes - i * s->cluster_size);
        uint64_t off = table[i] & BME_TABLE_OFFSET;
        if (off) {
            ret = bdrv_co_pread(bs->file, off, n, *bits + i * s->cluster_size, 0);
        } else if (table[i] & BME_TABLE_ALL_ONES) {
            memset(*bits + i * s->cluster_size, 0xff, n);
        }
    }
    g_free(table);
    if (ret < 0) {
        g_free(*bits);
        *bits = NULL;
        return ret;
    }
    if (nbits % 8) {
        (*bits)[nbytes - 1] &= (uint8_t)((1u << (nbits % 8)) - 1); /* unused tail bits are 0 */
    }
    return 0;
}

static bool all_zero(const uint8_t *p, uint64_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

int coroutine_fn qcow2_bm_write_bits(BlockDriverState *bs, BmEntry *e, const uint8_t *bits)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size, nbytes = qcow2_bm_nbytes(s, e->gran_bits);
    uint32_t n = table_entries(s, e->gran_bits);
    uint64_t *table = g_new0(uint64_t, n);
    uint8_t *buf = g_malloc0(MAX((uint64_t)n * 8, cs));
    int64_t toff = -1;
    int ret = 0;

    for (uint32_t i = 0; i < n && ret == 0; i++) {
        uint64_t at = (uint64_t)i * cs, len = at < nbytes ? MIN(cs, nbytes - at) : 0;
        if (all_zero(bits + at, len)) {
            continue;
        }
        int64_t off = qcow2_alloc_clusters(bs, 1);
        if (off < 0) {
            ret = off;
            break;
        }
        table[i] = off;
        memset(buf, 0, cs);
        memcpy(buf, bits + at, len);
        ret = bdrv_co_pwrite(bs->file, off, cs, buf, 0);
    }
    if (ret == 0) {
        toff = qcow2_alloc_clusters(bs, qcow2_size_to_clusters(s, (uint64_t)n * 8));
        ret = toff < 0 ? toff : 0;
    }
    if (ret == 0) {
        for (uint32_t i = 0; i < n; i++) {
            qcow2_st64(buf + i * 8, table[i]);
        }
        ret = bdrv_co_pwrite(bs->file, toff, (uint64_t)n * 8, buf, 0);
        if (ret < 0) {
            qcow2_free_clusters(bs, toff, (uint64_t)n * 8, false);
        }
    }
    if (ret < 0) {
        for (uint32_t i = 0; i < n; i++) {
            if (table[i]) {
                qcow2_free_clusters(bs, table[i], cs, false);
            }
        }
    } else {
        e->table_offset = toff;
        e->table_size = n;
    }
    g_free(table);
    g_free(buf);
    return ret;
}

/* Drops the references of @e's table and data.  Errors reading the table leak them. */
static void coroutine_fn free_bitmap_clusters(BlockDriverState *bs, const BmEntry *e)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t *table;
    if (!e->table_offset || read_table(bs, e, &table) < 0) {
        return;
    }
    for (uint32_t i = 0; i < e->table_size; i++) {
        if (table[i] & BME_TABLE_OFFSET) {
            qcow2_free_clusters(bs, table[i] & BME_TABLE_OFFSET, s->cluster_size, false);
        }
    }
    qcow2_free_clusters(bs, e->table_offset, (uint64_t)e->table_size * 8, false);
    g_free(table);
}

/* Writes every dirty table of both caches and flushes the file. */
static int coroutine_fn flush_all(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = qcow2_cache_write(bs, s->l2_cache);
    if (ret == 0) {
        ret = qcow2_cache_write(bs, s->refblock_cache);
    }
    return ret < 0 ? ret : bdrv_co_flush(bs->file->bs);
}

int coroutine_fn qcow2_bm_commit(BlockDriverState *bs, const BmDir *dir, const BmDir *old)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t size;
    int64_t off = 0;
    int ret = 0;

    if (dir->n > QCOW2_MAX_BITMAPS) {
        return -EFBIG;
    }
    g_autofree uint8_t *raw = build_dir(dir, &size);
    if (size > QCOW2_MAX_BITMAP_DIR) {
        return -EFBIG;
    }
    if (dir->n) {
        off = qcow2_alloc_clusters(bs, qcow2_size_to_clusters(s, size));
        if (off < 0) {
            return off;
        }
        ret = qcow2_pre_write_check(bs, QCOW2_OL_BITMAP_DIR, off, size);
        if (ret == 0) {
            ret = bdrv_co_pwrite(bs->file, off, size, raw, 0);
        }
    }
    if (ret == 0) {
        ret = flush_all(bs);
    }
    /* Switch the header; keep the old state to restore on failure. */
    uint32_t old_nb = s->nb_bitmaps;
    uint64_t old_off = s->bitmap_dir_offset, old_size = s->bitmap_dir_size;
    uint64_t old_autoclear = s->autoclear;
    bool old_has = s->has_bitmaps_ext;
    uint8_t old_ext[sizeof(s->bitmaps_ext)];
    memcpy(old_ext, s->bitmaps_ext, sizeof(old_ext));
    if (ret == 0) {
        s->nb_bitmaps = dir->n;
        s->bitmap_dir_offset = dir->n ? off : 0;
        s->bitmap_dir_size = dir->n ? size : 0;
        s->has_bitmaps_ext = dir->n > 0;
        memset(s->bitmaps_ext, 0, sizeof(s->bitmaps_ext));
        qcow2_st32(s->bitmaps_ext, dir->n);
        qcow2_st64(s->bitmaps_ext + 8, s->bitmap_dir_size);
        qcow2_st64(s->bitmaps_ext + 16, s->bitmap_dir_offset);
        if (dir->n) {
            s->autoclear |= QCOW2_AUTOCLEAR_BITMAPS;
        } else {
            s->autoclear &= ~QCOW2_AUTOCLEAR_BITMAPS;
        }
        ret = qcow2_update_header(bs);
        qcow2_overlap_invalidate(s, QCOW2_OL_BITMAP_DIR);
        if (ret < 0) {
            s->nb_bitmaps = old_nb;
            s->bitmap_dir_offset = old_off;
            s->bitmap_dir_size = old_size;
            s->has_bitmaps_ext = old_has;
            s->autoclear = old_autoclear;
            memcpy(s->bitmaps_ext, old_ext, sizeof(old_ext));
        }
    }
    if (ret < 0) {
        if (dir->n) {
            qcow2_free_clusters(bs, off, size, false);
        }
        return ret;
    }
    /* Nothing on disk names the old directory and the replaced bitmaps now. */
    if (old_nb && old_size) {
        ret = qcow2_free_clusters(bs, old_off, old_size, false);
    }
    for (uint32_t i = 0; old && i < old->n; i++) {
        free_bitmap_clusters(bs, &old->e[i]);
    }
    return ret;
}

/* ---- tracking writes -------------------------------------------------------------------- */

void qcow2_bm_set_range(uint8_t *bits, uint64_t nbits, int gran_bits, uint64_t offset,
                        uint64_t bytes)
{
    if (bytes == 0 || (offset >> gran_bits) >= nbits) {
        return;
    }
    uint64_t first = offset >> gran_bits;
    uint64_t last = MIN((offset + bytes - 1) >> gran_bits, nbits - 1);
    for (uint64_t b = first; b <= last;) {
        if (b % 8 == 0 && last - b >= 7) {
            __atomic_fetch_or(&bits[b / 8], 0xff, __ATOMIC_RELAXED);
            b += 8;
        } else {
            __atomic_fetch_or(&bits[b / 8], (uint8_t)(1u << (b % 8)), __ATOMIC_RELAXED);
            b++;
        }
    }
}

void qcow2_bitmaps_track(BlockDriverState *bs, uint64_t offset, uint64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    struct Qcow2TrackedBitmaps *t = __atomic_load_n(&s->tracked, __ATOMIC_ACQUIRE);
    for (int i = 0; t && i < t->n; i++) {
        TrackedBitmap *b = &t->bm[i];
        qcow2_bm_set_range(b->bits, b->nbits, b->gran_bits, offset, bytes);
    }
}

static void tracked_free(struct Qcow2TrackedBitmaps *t)
{
    for (int i = 0; t && i < t->n; i++) {
        g_free(t->bm[i].name);
        g_free(t->bm[i].bits);
    }
    if (t) {
        g_free(t->bm);
        g_free(t);
    }
}

void qcow2_bitmaps_free(BDRVQcow2State *s)
{
    tracked_free(s->tracked);
    s->tracked = NULL;
}

int coroutine_fn qcow2_bitmaps_before_write(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    struct Qcow2TrackedBitmaps *t;
    bool changed = false;
    BmDir dir;

    if (!s->nb_bitmaps || s->tracked) {
        return 0;
    }
    int ret = qcow2_bm_load_dir(bs, &dir, NULL);
    if (ret < 0) {
        return ret;
    }
    t = g_new0(struct Qcow2TrackedBitmaps, 1);
    t->bm = g_new0(TrackedBitmap, dir.n);
    for (uint32_t i = 0; i < dir.n; i++) {
        BmEntry *e = &dir.e[i];
        if (!(e->flags & BME_FLAG_AUTO) || (e->flags & BME_FLAG_IN_USE) ||
            (e->extra_len && !(e->flags & BME_FLAG_EXTRA_COMPAT))) {
            continue; /* disabled, already inconsistent, or not ours to touch */
        }
        uint8_t *bits = NULL;
        if (!qcow2_bm_unusable(s, e) && qcow2_bm_read_bits(bs, e, &bits) == 0) {
            t->bm[t->n++] = (TrackedBitmap){g_strdup(e->name), e->gran_bits,
                                            qcow2_bm_nbits(s, e->gran_bits), bits};
        }
        /* In use from now on: tracked in memory, or no longer matching the disk. */
        e->flags |= BME_FLAG_IN_USE;
        changed = true;
    }
    if (changed) {
        uint64_t size;
        g_autofree uint8_t *raw = build_dir(&dir, &size);
        /* The same entries, only flags changed: no larger than the directory parsed. */
        ret = size > s->bitmap_dir_size
                  ? qcow2_signal_corruption(bs, "Bitmap directory does not hold its entries")
                  : qcow2_pre_write_check(bs, QCOW2_OL_BITMAP_DIR, s->bitmap_dir_offset, size);
        if (ret == 0) {
            ret = bdrv_co_pwrite(bs->file, s->bitmap_dir_offset, size, raw, 0);
        }
        if (ret == 0) {
            ret = bdrv_co_flush(bs->file->bs);
        }
    }
    qcow2_bm_dir_free(&dir);
    if (ret < 0) {
        tracked_free(t);
        return ret;
    }
    __atomic_store_n(&s->tracked, t, __ATOMIC_RELEASE);
    return 0;
}

int coroutine_fn qcow2_bm_store_tracked(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    struct Qcow2TrackedBitmaps *t = s->tracked;
    BmDir dir, old = {NULL, 0};

    if (!t) {
        return 0;
    }
    __atomic_store_n(&s->tracked, NULL, __ATOMIC_RELEASE);
    s->first_write_done = false; /* the next write starts tracking again */
    if (t->n == 0) {
        tracked_free(t);
        return 0;
    }
    int ret = qcow2_bm_load_dir(bs, &dir, NULL);
    if (ret < 0) {
        tracked_free(t);
        return ret;
    }
    old.e = g_new0(BmEntry, t->n);
    for (int i = 0; i < t->n && ret == 0; i++) {
        int k = qcow2_bm_find(&dir, t->bm[i].name);
        if (k < 0) {
            continue;
        }
        old.e[old.n++] =
            (BmEntry){.table_offset = dir.e[k].table_offset, .table_size = dir.e[k].table_size};
        ret = qcow2_bm_write_bits(bs, &dir.e[k], t->bm[i].bits);
        dir.e[k].flags &= ~BME_FLAG_IN_USE;
    }
    if (ret == 0) {
        ret = qcow2_bm_commit(bs, &dir, &old);
    }
    g_free(old.e);
    qcow2_bm_dir_free(&dir);
    tracked_free(t);
    return ret;
}

int coroutine_fn qcow2_bitmaps_store(BlockDriverState *bs)
{
    return qcow2_bm_store_tracked(bs);
}

/* ---- for check ---------------------------------------------------------------------------- */

int coroutine_fn qcow2_bitmaps_foreach_range(
    BlockDriverState *bs, void (*fn)(void *opaque, uint64_t offset, uint64_t bytes), void *opaque)
{
    BDRVQcow2State *s = bs->opaque;
    BmDir dir;

    if (!s->nb_bitmaps) {
        return 0;
    }
    int ret = qcow2_bm_load_dir(bs, &dir, NULL);
    if (ret < 0) {
        return ret;
    }
    fn(opaque, s->bitmap_dir_offset, s->bitmap_dir_size);
    for (uint32_t i = 0; i < dir.n && ret == 0; i++) {
        uint64_t *table;
        BmEntry *e = &dir.e[i];
        fn(opaque, e->table_offset, (uint64_t)e->table_size * 8);
        ret = read_table(bs, e, &table);
        for (uint32_t j = 0; ret == 0 && j < e->table_size; j++) {
            if (table[j] & BME_TABLE_OFFSET) {
                fn(opaque, table[j] & BME_TABLE_OFFSET, s->cluster_size);
            }
        }
        if (ret == 0) {
            g_free(table);
        }
    }
    qcow2_bm_dir_free(&dir);
    return ret < 0 ? -EIO : 0;
}
