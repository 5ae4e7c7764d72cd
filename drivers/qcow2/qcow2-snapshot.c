/*
 * qcow2 internal snapshots: reading and checking the snapshot table at
 * open, and creating, listing, applying (reverting to) and deleting
 * snapshots (BlockDriver.snapshot_ops, see block/snapshot.h).
 *
 * Design notes.
 *  - A snapshot is a copy of the active L1 table plus one more reference
 *    to every L2 table and cluster it reaches.  The refcount of a data
 *    cluster counts the L1 tables that reach it (through any L2 table),
 *    which is what qemu-img check counts.  COPIED flags (refcount == 1)
 *    are recomputed in every L2 table a refcount pass visits, and in the
 *    L1 table it walks.
 *  - Every change is ordered so that a crash leaks clusters at worst:
 *    references are added and made stable before the structure that uses
 *    them (snapshot table, active L1) is written; a structure stops
 *    naming clusters on disk before their references are dropped.
 *  - The snapshot table is written to new clusters and switched to with
 *    one header write (nb_snapshots and snapshots_offset are adjacent);
 *    the old table is freed afterwards.
 *  - Applying a snapshot copies its L1 table over the active one: every
 *    L2 table it names is then shared with the snapshot, so the new active
 *    L1 has no COPIED flag.
 *  - Extra data we do not know is kept and written back unchanged.
 *  - A temporary load (qemu-img convert -l) only swaps the in-memory L1
 *    table of a read-only node; nothing on disk changes.
 *
 * Locking: open runs before any request; the operations run in the main
 * loop with the node drained, under s->lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "block/snapshot.h"
#include "drivers/qcow2/qcow2.h"

#define SN_HEADER_SIZE 40
#define SN_EXTRA_KNOWN 24 /* vm_state_size (64 bit), disk_size, icount */
#define SN_READ_CHUNK  (64 * 1024)

void qcow2_snapshots_free(BDRVQcow2State *s)
{
    for (uint32_t i = 0; s->snapshots && i < s->nb_snapshots; i++) {
        g_free(s->snapshots[i].id);
        g_free(s->snapshots[i].name);
        g_free(s->snapshots[i].extra_unknown);
    }
    g_free(s->snapshots);
    s->snapshots = NULL;
}

/* ---- reading the table ------------------------------------------------------------------ */

/* Reads the table front to back through a window of at least SN_READ_CHUNK bytes. */
typedef struct TableReader {
    BlockDriverState *bs;
    uint64_t base; /* table offset in the file */
    uint8_t *buf;  /* table bytes [start, start + len) */
    uint64_t start, len;
} TableReader;

/* Points *p at table bytes [pos, pos + n).  -errno. */
static int coroutine_fn reader_get(TableReader *r, uint64_t pos, uint64_t n, const uint8_t **p)
{
    if (pos < r->start || pos + n > r->start + r->len) {
        uint64_t want = MAX(n, SN_READ_CHUNK);
        g_free(r->buf);
        r->buf = g_malloc(want);
        int ret = bdrv_co_pread(r->bs->file, r->base + pos, want, r->buf, 0);
        if (ret < 0) {
            g_free(r->buf);
            r->buf = NULL;
            r->len = 0;
            return ret;
        }
        r->start = pos;
        r->len = want;
    }
    *p = r->buf + (pos - r->start);
    return 0;
}

/* Parses entry @i at table position *pos; moves *pos past it. */
static int coroutine_fn read_entry(BlockDriverState *bs, TableReader *r, uint32_t i, uint64_t *pos,
                                   Qcow2Snapshot *sn, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    const uint8_t *h, *x;
    int ret = reader_get(r, *pos, SN_HEADER_SIZE, &h);
    if (ret < 0) {
        goto io_error;
    }
    uint16_t id_len = qcow2_ld16(h + 12), name_len = qcow2_ld16(h + 14);
    uint32_t extra = qcow2_ld32(h + 36);
    sn->l1_table_offset = qcow2_ld64(h);
    sn->l1_size = qcow2_ld32(h + 8);
    sn->date_sec = qcow2_ld32(h + 16);
    sn->date_nsec = qcow2_ld32(h + 20);
    sn->vm_clock_nsec = qcow2_ld64(h + 24);
    sn->vm_state_size = qcow2_ld32(h + 32);
    sn->disk_size = s->size;
    sn->icount = UINT64_MAX;

    if (extra > QCOW2_MAX_SNAPSHOT_EXTRA) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Too much extra metadata in snapshot table entry %u (%u bytes)", i, extra);
        return -EFBIG;
    }
    if (sn->l1_table_offset & (s->cluster_size - 1)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Snapshot %u: L1 table offset 0x%" PRIx64 " is not cluster aligned", i,
                    sn->l1_table_offset);
        return -EINVAL;
    }
    if ((uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES ||
        sn->l1_table_offset > INT64_MAX - (uint64_t)sn->l1_size * 8 ||
        (sn->l1_size && !sn->l1_table_offset)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Snapshot %u: invalid L1 table (%u entries at 0x%" PRIx64 ")", i, sn->l1_size,
                    sn->l1_table_offset);
        return -EFBIG;
    }
    uint64_t entry_len = qcow2_round_up(SN_HEADER_SIZE + (uint64_t)extra + id_len + name_len, 8);
    if (*pos + entry_len > QCOW2_MAX_SNAPSHOTS_BYTES) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "Snapshot table is too large");
        return -EFBIG;
    }
    ret = reader_get(r, *pos + SN_HEADER_SIZE, (uint64_t)extra + id_len + name_len, &x);
    if (ret < 0) {
        goto io_error;
    }
    if (extra >= 8) {
        sn->vm_state_size = qcow2_ld64(x);
    }
    if (extra >= 16) {
        sn->disk_size = qcow2_ld64(x + 8);
    }
    if (extra >= 24) {
        sn->icount = qcow2_ld64(x + 16);
    }
    if (extra > SN_EXTRA_KNOWN) {
        sn->extra_unknown_len = extra - SN_EXTRA_KNOWN;
        sn->extra_unknown = g_memdup2(x + SN_EXTRA_KNOWN, sn->extra_unknown_len);
    }
    sn->id = g_strndup((const char *)x + extra, id_len);
    sn->name = g_strndup((const char *)x + extra + id_len, name_len);
    if (sn->disk_size > (uint64_t)INT64_MAX - s->cluster_size ||
        (uint64_t)sn->l1_size < qcow2_l1_entries_for(s, sn->disk_size)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Snapshot %u: L1 table of %u entries cannot map its disk size %" PRIu64, i,
                    sn->l1_size, sn->disk_size);
        return -EINVAL;
    }
    *pos += entry_len;
    return 0;

io_error:
    g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                "Could not read the snapshot table: %s", g_strerror(-ret));
    return ret;
}

int coroutine_fn qcow2_snapshots_open(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    TableReader r = {.bs = bs, .base = s->snapshots_offset};
    uint64_t pos = 0;
    int ret = 0;

    s->snapshots_size = 0;
    if (s->nb_snapshots == 0) {
        return 0;
    }
    s->snapshots = g_new0(Qcow2Snapshot, s->nb_snapshots);
    for (uint32_t i = 0; i < s->nb_snapshots && ret == 0; i++) {
        ret = read_entry(bs, &r, i, &pos, &s->snapshots[i], errp);
    }
    g_free(r.buf);
    s->snapshots_size = pos;
    return ret;
}

/* ---- writing the table ------------------------------------------------------------------ */

/* Bytes entry @sn takes in the table. */
static uint64_t entry_size(const Qcow2Snapshot *sn)
{
    return qcow2_round_up(SN_HEADER_SIZE + SN_EXTRA_KNOWN + sn->extra_unknown_len + strlen(sn->id) +
                              strlen(sn->name),
                          8);
}

static void put_entry(uint8_t *p, const Qcow2Snapshot *sn)
{
    size_t id_len = strlen(sn->id), name_len = strlen(sn->name);
    uint32_t extra = SN_EXTRA_KNOWN + sn->extra_unknown_len;
    qcow2_st64(p, sn->l1_table_offset);
    qcow2_st32(p + 8, sn->l1_size);
    qcow2_st16(p + 12, (uint16_t)id_len);
    qcow2_st16(p + 14, (uint16_t)name_len);
    qcow2_st32(p + 16, sn->date_sec);
    qcow2_st32(p + 20, sn->date_nsec);
    qcow2_st64(p + 24, sn->vm_clock_nsec);
    qcow2_st32(p + 32, (uint32_t)MIN(sn->vm_state_size, UINT32_MAX));
    qcow2_st32(p + 36, extra);
    p += SN_HEADER_SIZE;
    qcow2_st64(p, sn->vm_state_size);
    qcow2_st64(p + 8, sn->disk_size);
    qcow2_st64(p + 16, sn->icount);
    if (sn->extra_unknown_len) {
        memcpy(p + SN_EXTRA_KNOWN, sn->extra_unknown, sn->extra_unknown_len);
    }
    memcpy(p + extra, sn->id, id_len);
    memcpy(p + extra + id_len, sn->name, name_len);
}

/* Makes every cache and the file stable. */
static int coroutine_fn flush_all(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = qcow2_cache_write(bs, s->l2_cache);
    if (ret == 0) {
        ret = qcow2_cache_write(bs, s->refblock_cache);
    }
    return ret < 0 ? ret : bdrv_co_flush(bs->file->bs);
}

/*
 * Replaces the snapshot table by @list (@n entries; the state takes it
 * over on success): written to new clusters, made stable with everything
 * before it, switched to by one header write; the old table is freed.
 */
static int coroutine_fn write_table(BlockDriverState *bs, Qcow2Snapshot *list, uint32_t n)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t size = 0;
    int64_t off = 0;
    int ret;

    for (uint32_t i = 0; i < n; i++) {
        size += entry_size(&list[i]);
    }
    if (size > QCOW2_MAX_SNAPSHOTS_BYTES || n > QCOW2_MAX_SNAPSHOTS) {
        return -EFBIG;
    }
    if (n) {
        off = qcow2_alloc_clusters(bs, qcow2_size_to_clusters(s, size));
        if (off < 0) {
            return off;
        }
        uint8_t *buf = g_malloc0(size);
        for (uint64_t i = 0, pos = 0; i < n; pos += entry_size(&list[i]), i++) {
            put_entry(buf + pos, &list[i]);
        }
        ret = qcow2_pre_write_check(bs, QCOW2_OL_SNAPSHOT_TABLE, off, size);
        if (ret == 0) {
            ret = bdrv_co_pwrite(bs->file, off, size, buf, 0);
        }
        g_free(buf);
        if (ret < 0) {
            qcow2_free_clusters(bs, off, size, false);
            return ret;
        }
    }
    ret = flush_all(bs);
    if (ret == 0) {
        uint8_t hdr[12];
        qcow2_st32(hdr, n);
        qcow2_st64(hdr + 4, off);
        ret = bdrv_co_pwrite(bs->file, QH_NB_SNAPSHOTS, sizeof(hdr), hdr, 0);
        if (ret == 0) {
            ret = bdrv_co_flush(bs->file->bs);
        }
        if (ret == 0) {
            memcpy(s->header_raw + QH_NB_SNAPSHOTS, hdr, sizeof(hdr));
        }
    }
    if (ret < 0) {
        if (n) {
            qcow2_free_clusters(bs, off, size, false);
        }
        return ret;
    }
    uint64_t old_off = s->snapshots_offset, old_size = s->snapshots_size;
    bool had = s->nb_snapshots > 0;
    qcow2_snapshots_free(s);
    s->snapshots = list;
    s->nb_snapshots = n;
    s->snapshots_offset = off;
    s->snapshots_size = size;
    qcow2_overlap_invalidate(s, QCOW2_OL_SNAPSHOT_TABLE | QCOW2_OL_INACTIVE_L1);
    /* The header no longer names the old table. */
    return had && old_size ? qcow2_free_clusters(bs, old_off, old_size, false) : 0;
}

/* ---- refcount passes ---------------------------------------------------------------------- */

/*
 * Adds @delta (+1, -1 or 0) to the refcount of every L2 table and cluster
 * that the L1 table @l1 (@l1_size entries, host order, in memory) reaches,
 * then sets the COPIED flags in those L2 tables and in @l1 to "refcount is
 * 1".  An L2 table whose refcount drops to 0 is freed and never written.
 * *l1_changed tells whether @l1 changed.  Under s->lock.
 */
static int coroutine_fn update_refcounts(BlockDriverState *bs, uint64_t *l1, uint32_t l1_size,
                                         int delta, bool *l1_changed)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = 0;

    *l1_changed = false;
    for (uint32_t i = 0; i < l1_size && ret == 0; i++) {
        uint64_t l2_off = l1[i] & L1E_OFFSET_MASK, rc = 0;
        if (!l2_off) {
            continue;
        }
        if ((l1[i] & L1E_RESERVED_MASK) || (l2_off & (s->cluster_size - 1))) {
            return qcow2_signal_corruption(bs, "Invalid L1 entry 0x%" PRIx64 " in a snapshot pass",
                                           l1[i]);
        }
        void *table = NULL;
        ret = qcow2_cache_get(bs, s->l2_cache, l2_off, &table);
        if (ret < 0) {
            return ret;
        }
        bool dirty = false;
        for (uint64_t j = 0; j < s->l2_entries && ret == 0; j++) {
            uint64_t e = qcow2_l2_entry(s, table, j);
            if (qcow2_sc_type(s, e, qcow2_l2_bitmap(s, table, j), 0) == QCOW2_SC_INVALID) {
                ret = qcow2_signal_corruption(bs, "Invalid L2 entry 0x%" PRIx64, e);
                break;
            }
            if (e & QCOW2_OFLAG_COMPRESSED) {
                if (delta) {
                    uint64_t coff, cbytes;
                    qcow2_compressed_range(s, e, &coff, &cbytes);
                    uint64_t start = qcow2_start_of_cluster(s, coff);
                    ret = qcow2_update_refcount(bs, start, coff + cbytes - start, delta);
                }
                continue;
            }
            if (!qcow2_entry_has_host(s, e) || s->has_data_file) {
                continue;
            }
            uint64_t host = e & L2E_OFFSET_MASK;
            if (delta) {
                ret = qcow2_update_refcount(bs, host, s->cluster_size, delta);
            }
            if (ret == 0) {
                ret = qcow2_get_refcount(bs, host >> s->cluster_bits, &rc);
            }
            uint64_t ne = (e & ~QCOW2_OFLAG_COPIED) | (rc == 1 ? QCOW2_OFLAG_COPIED : 0);
            if (ret == 0 && ne != e) {
                qcow2_set_l2_entry(s, table, j, ne);
                dirty = true;
            }
        }
        if (dirty) {
            qcow2_cache_mark_dirty(s->l2_cache, table);
        }
        qcow2_cache_put(s->l2_cache, &table);
        if (ret == 0 && delta) {
            ret = qcow2_update_refcount(bs, l2_off, s->cluster_size, delta);
        }
        if (ret == 0) {
            ret = qcow2_get_refcount(bs, l2_off >> s->cluster_bits, &rc);
        }
        uint64_t ne = (l1[i] & ~QCOW2_OFLAG_COPIED) | (rc == 1 ? QCOW2_OFLAG_COPIED : 0);
        if (ret == 0 && rc && ne != l1[i]) {
            l1[i] = ne;
            *l1_changed = true;
        }
    }
    return ret;
}

/* One refcount of @offset's cluster is at its maximum: -ERANGE.  -errno on I/O errors. */
static int coroutine_fn check_room(BlockDriverState *bs, uint64_t offset)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t rc;
    int ret = qcow2_get_refcount(bs, offset >> s->cluster_bits, &rc);
    return ret < 0 ? ret : rc >= s->refcount_max ? -ERANGE : 0;
}

/*
 * Fails with -ERANGE when one more reference to something @l1 reaches
 * would pass the refcount width, so that a snapshot is refused before
 * anything changes.  Under s->lock.
 */
static int coroutine_fn check_refcount_room(BlockDriverState *bs, const uint64_t *l1,
                                            uint32_t l1_size)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = 0;
    for (uint32_t i = 0; i < l1_size && ret == 0; i++) {
        uint64_t l2_off = l1[i] & L1E_OFFSET_MASK;
        void *table = NULL;
        if (!l2_off || (ret = check_room(bs, l2_off)) < 0) {
            continue;
        }
        ret = qcow2_cache_get(bs, s->l2_cache, l2_off, &table);
        for (uint64_t j = 0; ret == 0 && j < s->l2_entries; j++) {
            uint64_t e = qcow2_l2_entry(s, table, j), coff, cbytes;
            if (e & QCOW2_OFLAG_COMPRESSED) {
                qcow2_compressed_range(s, e, &coff, &cbytes);
                ret = check_room(bs, coff);
                if (ret == 0) {
                    ret = check_room(bs, coff + cbytes - 1);
                }
            } else if (qcow2_entry_has_host(s, e) && !s->has_data_file) {
                ret = check_room(bs, e & L2E_OFFSET_MASK);
            }
        }
        if (table) {
            qcow2_cache_put(s->l2_cache, &table);
        }
    }
    return ret;
}

/* Writes an L1 table of @n entries (host order) at @offset, flushed. */
static int coroutine_fn write_l1(BlockDriverState *bs, uint64_t offset, const uint64_t *l1,
                                 uint32_t n)
{
    BDRVQcow2State *s = bs->opaque;
    if (n == 0) {
        return 0;
    }
    int ret = qcow2_pre_write_check(
        bs, offset == s->l1_table_offset ? QCOW2_OL_ACTIVE_L1 : QCOW2_OL_INACTIVE_L1, offset,
        (uint64_t)n * 8);
    if (ret < 0) {
        return ret;
    }
    uint8_t *buf = g_malloc(n * 8);
    for (uint32_t i = 0; i < n; i++) {
        qcow2_st64(buf + i * 8, l1[i]);
    }
    ret = bdrv_co_pwrite(bs->file, offset, (uint64_t)n * 8, buf, 0);
    g_free(buf);
    return ret < 0 ? ret : bdrv_co_flush(bs->file->bs);
}

/* Reads the L1 table of snapshot @sn (host order; caller frees). */
static int coroutine_fn read_snapshot_l1(BlockDriverState *bs, const Qcow2Snapshot *sn,
                                         uint64_t **l1)
{
    uint8_t *buf = g_malloc(MAX(sn->l1_size, 1) * 8);
    int ret =
        sn->l1_size ? bdrv_co_pread(bs->file, sn->l1_table_offset, sn->l1_size * 8, buf, 0) : 0;
    *l1 = g_new0(uint64_t, MAX(sn->l1_size, 1));
    for (uint32_t i = 0; ret == 0 && i < sn->l1_size; i++) {
        (*l1)[i] = qcow2_ld64(buf + i * 8);
    }
    g_free(buf);
    return ret;
}

static int find_by_id(BDRVQcow2State *s, const char *id)
{
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        if (!strcmp(s->snapshots[i].id, id)) {
            return (int)i;
        }
    }
    return -1;
}

/* A deep copy of the table with room for one more entry. */
static Qcow2Snapshot *copy_table(BDRVQcow2State *s, uint32_t extra_room)
{
    Qcow2Snapshot *t = g_new0(Qcow2Snapshot, s->nb_snapshots + extra_room);
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        t[i] = s->snapshots[i];
        t[i].id = g_strdup(s->snapshots[i].id);
        t[i].name = g_strdup(s->snapshots[i].name);
        t[i].extra_unknown = g_memdup2(s->snapshots[i].extra_unknown, t[i].extra_unknown_len);
    }
    return t;
}

static void free_table(Qcow2Snapshot *t, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        g_free(t[i].id);
        g_free(t[i].name);
        g_free(t[i].extra_unknown);
    }
    g_free(t);
}

/* ---- operations ---------------------------------------------------------------------------- */

typedef struct SnapCo {
    BlockDriverState *bs;
    const BdrvSnapshotInfo *info;
    const char *id;
    GError **errp;
    int ret;
} SnapCo;

#define SNAP_FAIL(c, code, ...)                                                                    \
    do {                                                                                           \
        g_set_error((c)->errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, __VA_ARGS__);                     \
        (c)->ret = (code);                                                                         \
        return;                                                                                    \
    } while (0)

/* Under s->lock. */
static void coroutine_fn create_locked(SnapCo *c)
{
    BlockDriverState *bs = c->bs;
    BDRVQcow2State *s = bs->opaque;
    const BdrvSnapshotInfo *info = c->info;
    bool changed;

    if (s->has_data_file) {
        SNAP_FAIL(c, -ENOTSUP, "Internal snapshots cannot be used with external data files");
    }
    if (find_by_id(s, info->id) >= 0) {
        SNAP_FAIL(c, -EEXIST, "A snapshot with ID '%s' already exists", info->id);
    }
    if (s->nb_snapshots >= QCOW2_MAX_SNAPSHOTS) {
        SNAP_FAIL(c, -EFBIG, "Too many snapshots (at most %d)", QCOW2_MAX_SNAPSHOTS);
    }
    if (strlen(info->id) > UINT16_MAX || strlen(info->name) > UINT16_MAX) {
        SNAP_FAIL(c, -EINVAL, "Snapshot ID or name too long");
    }
    c->ret = qcow2_before_write(bs);
    if (c->ret == 0) {
        c->ret = check_refcount_room(bs, s->l1_table, s->l1_size);
    }
    if (c->ret < 0) {
        g_set_error(c->errp, G_FILE_ERROR, g_file_error_from_errno(-c->ret),
                    "Could not create snapshot: %s",
                    c->ret == -ERANGE ? "a refcount would pass refcount_bits"
                                      : g_strerror(-c->ret));
        return;
    }
    uint64_t l1_bytes = (uint64_t)s->l1_size * 8;
    int64_t l1_copy = 0;
    if (l1_bytes) {
        l1_copy = qcow2_alloc_clusters(bs, qcow2_size_to_clusters(s, l1_bytes));
        if (l1_copy < 0) {
            c->ret = l1_copy;
            return;
        }
    }
    /* One more reference to everything the disk uses; COPIED flags drop. */
    c->ret = update_refcounts(bs, s->l1_table, s->l1_size, 1, &changed);
    if (c->ret == 0) {
        c->ret = flush_all(bs);
    }
    if (c->ret == 0 && changed) {
        c->ret = write_l1(bs, s->l1_table_offset, s->l1_table, s->l1_size);
    }
    if (c->ret == 0) {
        c->ret = write_l1(bs, l1_copy, s->l1_table, s->l1_size);
    }
    if (c->ret == 0) {
        Qcow2Snapshot *t = copy_table(s, 1);
        t[s->nb_snapshots] = (Qcow2Snapshot){
            .l1_table_offset = l1_copy,
            .l1_size = s->l1_size,
            .id = g_strdup(info->id),
            .name = g_strdup(info->name),
            .date_sec = info->date_sec,
            .date_nsec = info->date_nsec,
            .vm_clock_nsec = info->vm_clock_nsec,
            .vm_state_size = 0, /* no VM state: the disk only */
            .disk_size = s->size,
            .icount = info->icount,
        };
        uint32_t n = s->nb_snapshots + 1;
        c->ret = write_table(bs, t, n);
        if (c->ret < 0) {
            free_table(t, n);
        }
    }
    if (c->ret < 0) {
        /*
         * The references added (perhaps only some) stay: leaked clusters
         * are harmless, references dropped twice would not be.
         */
        if (l1_copy) {
            qcow2_free_clusters(bs, l1_copy, l1_bytes, false);
        }
        g_set_error(c->errp, G_FILE_ERROR, g_file_error_from_errno(-c->ret),
                    "Could not create snapshot: %s", g_strerror(-c->ret));
    }
}

/* Writes the disk size into the header.  Under s->lock. */
static int coroutine_fn write_disk_size(BlockDriverState *bs, uint64_t size)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t be[8];
    qcow2_st64(be, size);
    int ret = bdrv_co_pwrite(bs->file, QH_SIZE, 8, be, 0);
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret == 0) {
        s->size = size;
        memcpy(s->header_raw + QH_SIZE, be, 8);
    }
    return ret;
}

/* Under s->lock. */
static void coroutine_fn goto_locked(SnapCo *c)
{
    BlockDriverState *bs = c->bs;
    BDRVQcow2State *s = bs->opaque;
    int idx = find_by_id(s, c->id);
    uint64_t *sn_l1 = NULL, *old_l1 = NULL;
    bool changed;

    if (idx < 0) {
        SNAP_FAIL(c, -ENOENT, "Can't find snapshot '%s'", c->id);
    }
    Qcow2Snapshot sn = s->snapshots[idx];
    if (sn.disk_size != s->size && s->nb_bitmaps) {
        SNAP_FAIL(c, -ENOTSUP,
                  "Cannot apply a snapshot of another disk size to an image with "
                  "persistent bitmaps");
    }
    c->ret = qcow2_before_write(bs);
    if (c->ret == 0 && sn.l1_size > s->l1_size) {
        c->ret = qcow2_grow_l1_table(bs, sn.l1_size);
    }
    if (c->ret == 0) {
        c->ret = read_snapshot_l1(bs, &sn, &sn_l1);
    }
    /* The snapshot's tables and clusters gain the new active L1's reference first. */
    if (c->ret == 0) {
        c->ret = update_refcounts(bs, sn_l1, sn.l1_size, 1, &changed);
    }
    if (c->ret == 0) {
        c->ret = flush_all(bs);
    }
    if (c->ret == 0) {
        uint64_t *new_l1 = g_new0(uint64_t, s->l1_size);
        for (uint32_t i = 0; i < sn.l1_size; i++) {
            new_l1[i] = sn_l1[i] & ~QCOW2_OFLAG_COPIED; /* every table is shared with @sn */
        }
        c->ret = write_l1(bs, s->l1_table_offset, new_l1, s->l1_size);
        if (c->ret == 0) {
            old_l1 = s->l1_table;
            s->l1_table = new_l1;
            qcow2_overlap_invalidate(s, QCOW2_OL_ACTIVE_L2);
        } else {
            g_free(new_l1);
            update_refcounts(bs, sn_l1, sn.l1_size, -1, &changed);
        }
    }
    /* The old active state is unreachable on disk now: drop its references. */
    if (c->ret == 0) {
        c->ret = update_refcounts(bs, old_l1, s->l1_size, -1, &changed);
    }
    if (c->ret == 0 && sn.disk_size != s->size) {
        c->ret = write_disk_size(bs, sn.disk_size);
    }
    if (c->ret == 0) {
        c->ret = flush_all(bs);
    }
    if (c->ret == 0) {
        /* Every byte may have changed for a bitmap that tracks writes. */
        qcow2_bitmaps_track(bs, 0, s->size);
    }
    g_free(sn_l1);
    g_free(old_l1);
    if (c->ret < 0) {
        g_set_error(c->errp, G_FILE_ERROR, g_file_error_from_errno(-c->ret),
                    "Could not apply snapshot '%s': %s", c->id, g_strerror(-c->ret));
    }
}

/* Under s->lock. */
static void coroutine_fn delete_locked(SnapCo *c)
{
    BlockDriverState *bs = c->bs;
    BDRVQcow2State *s = bs->opaque;
    int idx = find_by_id(s, c->id);
    uint64_t *sn_l1 = NULL;
    bool changed;

    if (idx < 0) {
        SNAP_FAIL(c, -ENOENT, "Can't find snapshot '%s'", c->id);
    }
    Qcow2Snapshot sn = s->snapshots[idx];
    sn.id = sn.name = NULL;
    sn.extra_unknown = NULL;
    c->ret = qcow2_before_write(bs);
    if (c->ret == 0) {
        c->ret = read_snapshot_l1(bs, &sn, &sn_l1);
    }
    /* Out of the table first: its clusters are unreachable on disk before they are freed. */
    if (c->ret == 0) {
        uint32_t n = s->nb_snapshots;
        Qcow2Snapshot *t = copy_table(s, 0);
        g_free(t[idx].id);
        g_free(t[idx].name);
        g_free(t[idx].extra_unknown);
        memmove(&t[idx], &t[idx + 1], (n - idx - 1) * sizeof(*t));
        c->ret = write_table(bs, t, n - 1);
        if (c->ret < 0) {
            free_table(t, n - 1);
        }
    }
    if (c->ret == 0) {
        c->ret = update_refcounts(bs, sn_l1, sn.l1_size, -1, &changed);
    }
    if (c->ret == 0 && sn.l1_size) {
        c->ret = qcow2_free_clusters(bs, sn.l1_table_offset, (uint64_t)sn.l1_size * 8, false);
    }
    /* Clusters only the active disk uses now are COPIED again. */
    if (c->ret == 0) {
        c->ret = update_refcounts(bs, s->l1_table, s->l1_size, 0, &changed);
    }
    if (c->ret == 0) {
        c->ret = flush_all(bs);
    }
    if (c->ret == 0 && changed) {
        c->ret = write_l1(bs, s->l1_table_offset, s->l1_table, s->l1_size);
    }
    g_free(sn_l1);
    if (c->ret < 0) {
        g_set_error(c->errp, G_FILE_ERROR, g_file_error_from_errno(-c->ret),
                    "Could not delete snapshot '%s': %s", c->id, g_strerror(-c->ret));
    }
}

/*
 * Under s->lock.  Switches the in-memory active L1 table to the
 * snapshot's, as qemu's temporary load does: the node is read-only, so
 * the active table on disk is never written from this copy.  The virtual
 * size is kept (qemu-img convert -l copies the current size): guest
 * offsets past the snapshot's L1 table read as unallocated.
 */
static void coroutine_fn load_tmp_locked(SnapCo *c)
{
    BlockDriverState *bs = c->bs;
    BDRVQcow2State *s = bs->opaque;
    int idx = find_by_id(s, c->id);
    uint64_t *sn_l1 = NULL;

    if (!bdrv_is_read_only(bs)) {
        SNAP_FAIL(c, -EINVAL, "Device is not readonly");
    }
    if (idx < 0) {
        SNAP_FAIL(c, -ENOENT, "Can't find snapshot");
    }
    Qcow2Snapshot sn = s->snapshots[idx];
    c->ret = read_snapshot_l1(bs, &sn, &sn_l1);
    if (c->ret < 0) {
        g_free(sn_l1);
        SNAP_FAIL(c, c->ret, "Failed to read l1 table for snapshot");
    }
    g_free(s->l1_table);
    s->l1_table = sn_l1;
    s->l1_size = sn.l1_size;
    s->l1_table_offset = sn.l1_table_offset;
    /* The index of active metadata follows the tables reads now go through. */
    qcow2_overlap_invalidate(s, QCOW2_OL_ACTIVE_L1 | QCOW2_OL_ACTIVE_L2);
}

typedef void coroutine_fn SnapFn(SnapCo *c);

typedef struct SnapRun {
    SnapCo *c;
    SnapFn *fn;
} SnapRun;

static void coroutine_fn snap_entry(void *opaque)
{
    SnapRun *r = opaque;
    BDRVQcow2State *s = r->c->bs->opaque;
    GRAPH_RDLOCK_GUARD();
    co_mutex_lock(&s->lock);
    r->fn(r->c);
    co_mutex_unlock(&s->lock);
}

static bool snap_run(SnapFn *fn, BlockDriverState *bs, const BdrvSnapshotInfo *info, const char *id,
                     GError **errp)
{
    SnapCo c = {bs, info, id, errp, 0};
    SnapRun r = {&c, fn};
    bdrv_run_co(snap_entry, &r);
    return c.ret == 0;
}

static bool qcow2_snapshot_create(BlockDriverState *bs, const BdrvSnapshotInfo *sn, GError **errp)
{
    return snap_run(create_locked, bs, sn, NULL, errp);
}

static bool qcow2_snapshot_goto(BlockDriverState *bs, const char *id, GError **errp)
{
    return snap_run(goto_locked, bs, NULL, id, errp);
}

static bool qcow2_snapshot_delete(BlockDriverState *bs, const char *id, GError **errp)
{
    return snap_run(delete_locked, bs, NULL, id, errp);
}

static bool qcow2_snapshot_load_tmp(BlockDriverState *bs, const char *id, GError **errp)
{
    return snap_run(load_tmp_locked, bs, NULL, id, errp);
}

static bool qcow2_snapshot_list(BlockDriverState *bs, BdrvSnapshotInfo **list, int *count,
                                GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    /* Drained: no request changes the table (only the operations above do). */
    *count = (int)s->nb_snapshots;
    *list = g_new0(BdrvSnapshotInfo, MAX(s->nb_snapshots, 1));
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        const Qcow2Snapshot *sn = &s->snapshots[i];
        (*list)[i] = (BdrvSnapshotInfo){
            .id = g_strdup(sn->id),
            .name = g_strdup(sn->name),
            .vm_state_size = sn->vm_state_size,
            .date_sec = sn->date_sec,
            .date_nsec = sn->date_nsec,
            .vm_clock_nsec = sn->vm_clock_nsec,
            .icount = sn->icount,
            .disk_size = sn->disk_size,
        };
    }
    return true;
}

const BdrvSnapshotOps qcow2_snapshot_ops = {
    .create = qcow2_snapshot_create,
    .list = qcow2_snapshot_list,
    .go_to = qcow2_snapshot_goto,
    .delete = qcow2_snapshot_delete,
    .load_tmp = qcow2_snapshot_load_tmp,
};
