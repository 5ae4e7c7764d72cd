/*
 * qcow2 cluster mapping: the L1 table, L2 lookups through s->l2_cache,
 * the write preparation that decides between in-place writes and
 * allocations, linking allocations into L2 tables, zero clusters, discard,
 * L1 growth and metadata preallocation.
 *
 * Design notes.
 *  - A guest write is served in place when every (sub)cluster it touches
 *    is NORMAL in a cluster with refcount 1 (COPIED).  Otherwise it
 *    becomes a Qcow2Alloc: new host clusters (or, for a cluster of ours
 *    whose touched subclusters are zero or unallocated, the same cluster
 *    with keep_old) that receive old content + guest data + old content in
 *    one host write, after which the L2 entries are switched (link).
 *  - In-flight allocations are listed in s->allocs.  A request that would
 *    change clusters an allocation covers waits on its CoQueue; requests
 *    touching other clusters go on.  Allocations never overlap.
 *  - Crash-safety ordering, expressed with cache dependencies: an L2 table
 *    that points at new clusters is written only after their refcounts
 *    (L2 cache depends on the refcount cache) and their data (L2 cache
 *    depends on a flush); a refcount decrease is written only after the L2
 *    tables that dropped the cluster (refcount cache depends on the L2
 *    cache).  L1 entries are written through and flushed.  With lazy
 *    refcounts the refcount orderings are skipped: the image is marked
 *    dirty and refcounts are rebuilt after a crash.
 *
 * Locking: every function here runs under s->lock; qcow2_alloc_host_offset
 * and qcow2_wait_for_allocs may drop it while they wait.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "drivers/qcow2/qcow2.h"

/* ---- entry types and validation ---------------------------------------------------- */

Qcow2SubclusterType qcow2_sc_type(const BDRVQcow2State *s, uint64_t entry, uint64_t bitmap, int sc)
{
    if (entry & QCOW2_OFLAG_COMPRESSED) {
        if (s->has_data_file || bitmap || (entry & QCOW2_OFLAG_COPIED)) {
            return QCOW2_SC_INVALID;
        }
        return QCOW2_SC_COMPRESSED;
    }
    if (entry & L2E_STD_RESERVED_MASK) {
        return QCOW2_SC_INVALID;
    }
    bool host = qcow2_entry_has_host(s, entry);
    if (!host && (entry & QCOW2_OFLAG_COPIED)) {
        return QCOW2_SC_INVALID;
    }
    if (!s->extended_l2) {
        if (entry & QCOW2_OFLAG_ZERO) {
            if (s->version < 3) {
                return QCOW2_SC_INVALID;
            }
            return host ? QCOW2_SC_ZERO_ALLOC : QCOW2_SC_ZERO_PLAIN;
        }
        return host ? QCOW2_SC_NORMAL : QCOW2_SC_UNALLOC_PLAIN;
    }
    uint32_t alloc = (uint32_t)bitmap, zero = (uint32_t)(bitmap >> 32);
    if ((entry & QCOW2_OFLAG_ZERO) || (alloc & zero) || (!host && alloc)) {
        return QCOW2_SC_INVALID;
    }
    uint32_t bit = 1u << sc;
    if (host) {
        return (alloc & bit)  ? QCOW2_SC_NORMAL
               : (zero & bit) ? QCOW2_SC_ZERO_ALLOC
                              : QCOW2_SC_UNALLOC_ALLOC;
    }
    return (zero & bit) ? QCOW2_SC_ZERO_PLAIN : QCOW2_SC_UNALLOC_PLAIN;
}

/*
 * Before a write goes to (or through) the host cluster at @host of the image
 * file: it must start inside the file.  Writers never point a table entry
 * past the end of the file (data is written before the entry that names
 * it), so an entry that does is corrupt; following it would grow the file
 * by up to 2^56 bytes and put tables where nothing counts them.  The end of
 * the cluster may pass the end of the file (qemu-img check tolerates less
 * than a cluster).  Reads of such entries see zeroes, as in QEMU.
 */
static int coroutine_fn check_inside_file(BlockDriverState *bs, uint64_t host, const char *what,
                                          uint64_t guest)
{
    int64_t len = bdrv_co_getlength(bs->file->bs);
    if (len < 0) {
        return len;
    }
    if (host >= (uint64_t)len) {
        return qcow2_signal_corruption(bs,
                                       "%s at 0x%" PRIx64 " for guest offset 0x%" PRIx64
                                       " lies past the end of the image file (0x%" PRIx64 ")",
                                       what, host, guest, (uint64_t)len);
    }
    return 0;
}

/* Checks an L2 entry of guest cluster @guest_cluster before it is used. */
static int coroutine_fn check_l2_entry(BlockDriverState *bs, uint64_t guest_cluster, uint64_t entry,
                                       uint64_t bitmap)
{
    BDRVQcow2State *s = bs->opaque;
    if (qcow2_sc_type(s, entry, bitmap, 0) == QCOW2_SC_INVALID) {
        return qcow2_signal_corruption(
            bs, "Invalid L2 entry 0x%" PRIx64 " (bitmap 0x%" PRIx64 ") for guest offset 0x%" PRIx64,
            entry, bitmap, guest_cluster);
    }
    if (qcow2_entry_has_host(s, entry)) {
        uint64_t host = entry & L2E_OFFSET_MASK;
        if (host & (s->cluster_size - 1)) {
            return qcow2_signal_corruption(bs,
                                           "Cluster offset 0x%" PRIx64
                                           " for guest offset 0x%" PRIx64 " is not cluster aligned",
                                           host, guest_cluster);
        }
        if (s->has_data_file && host != guest_cluster) {
            return qcow2_signal_corruption(
                bs, "Data file offset 0x%" PRIx64 " differs from guest offset 0x%" PRIx64, host,
                guest_cluster);
        }
    }
    return 0;
}

/* ---- L1 table ----------------------------------------------------------------------- */

int coroutine_fn qcow2_l1_open(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t n = s->l1_size;
    if (n == 0) {
        return 0;
    }
    uint8_t *buf = g_malloc(n * 8);
    int ret = bdrv_co_pread(bs->file, s->l1_table_offset, n * 8, buf, 0);
    if (ret < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                    "Could not read the L1 table: %s", g_strerror(-ret));
        g_free(buf);
        return ret;
    }
    s->l1_table = g_new(uint64_t, n);
    for (uint64_t i = 0; i < n; i++) {
        s->l1_table[i] = qcow2_ld64(buf + i * 8);
    }
    g_free(buf);
    return 0;
}

/* Writes the 512-byte piece of the L1 table that holds entry @idx (no flush). */
static int coroutine_fn write_l1_piece(BlockDriverState *bs, uint64_t idx)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t first = idx & ~63ULL;
    uint64_t n = MIN(64, s->l1_size - first);
    uint8_t buf[512] = {0};

    for (uint64_t j = 0; j < n; j++) {
        qcow2_st64(buf + j * 8, s->l1_table[first + j]);
    }
    int ret =
        qcow2_pre_write_check(bs, QCOW2_OL_ACTIVE_L1, s->l1_table_offset + first * 8, sizeof(buf));
    if (ret < 0) {
        return ret;
    }
    return bdrv_co_pwrite(bs->file, s->l1_table_offset + first * 8, sizeof(buf), buf, 0);
}

int coroutine_fn qcow2_write_l1_entry(BlockDriverState *bs, uint64_t idx)
{
    bdrv_debug_event(bs->file, BLKDBG_L1_UPDATE);
    int ret = write_l1_piece(bs, idx);
    return ret < 0 ? ret : bdrv_co_flush(bs->file->bs);
}

int coroutine_fn qcow2_grow_l1_table(BlockDriverState *bs, uint64_t min_size)
{
    BDRVQcow2State *s = bs->opaque;
    if (min_size <= s->l1_size) {
        return 0;
    }
    if (min_size > QCOW2_MAX_L1_BYTES / 8) {
        return -EFBIG;
    }
    uint64_t bytes = qcow2_round_up(min_size * 8, s->cluster_size);
    bdrv_debug_event(bs->file, BLKDBG_L1_GROW_ALLOC_TABLE);
    int64_t new_off = qcow2_alloc_clusters(bs, bytes >> s->cluster_bits);
    if (new_off < 0) {
        return new_off;
    }
    uint8_t *buf = g_malloc0(bytes);
    uint8_t hdr[12];
    for (uint64_t i = 0; i < s->l1_size; i++) {
        qcow2_st64(buf + i * 8, s->l1_table[i]);
    }
    /* Table and its refcount stable before the header points to it. */
    int ret = qcow2_cache_flush(bs, s->refblock_cache);
    if (ret == 0) {
        ret = qcow2_pre_write_check(bs, QCOW2_OL_ACTIVE_L1, new_off, bytes);
    }
    if (ret == 0) {
        /* Only the table itself: the file does not grow past it (as with qemu-img). */
        bdrv_debug_event(bs->file, BLKDBG_L1_GROW_WRITE_TABLE);
        ret = bdrv_co_pwrite(bs->file, new_off, min_size * 8, buf, 0);
    }
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    g_free(buf);
    if (ret == 0) {
        qcow2_st32(hdr, (uint32_t)min_size);
        qcow2_st64(hdr + 4, new_off);
        bdrv_debug_event(bs->file, BLKDBG_L1_GROW_ACTIVATE_TABLE);
        ret = bdrv_co_pwrite(bs->file, QH_L1_SIZE, sizeof(hdr), hdr, 0);
        if (ret == 0) {
            ret = bdrv_co_flush(bs->file->bs);
        }
    }
    if (ret < 0) {
        qcow2_free_clusters(bs, new_off, bytes, false);
        return ret;
    }
    memcpy(s->header_raw + QH_L1_SIZE, hdr, sizeof(hdr));

    uint64_t old_off = s->l1_table_offset;
    uint64_t old_bytes = qcow2_round_up((uint64_t)s->l1_size * 8, s->cluster_size);
    uint64_t *t = g_new0(uint64_t, min_size);
    if (s->l1_size) {
        memcpy(t, s->l1_table, (size_t)s->l1_size * 8);
    }
    g_free(s->l1_table);
    s->l1_table = t;
    s->l1_size = (uint32_t)min_size;
    s->l1_table_offset = new_off;
    qcow2_overlap_invalidate(s, QCOW2_OL_ACTIVE_L1);
    if (old_off && old_bytes) {
        ret = qcow2_free_clusters(bs, old_off, old_bytes, false);
    }
    return ret;
}

int coroutine_fn qcow2_drop_l2_tables(BlockDriverState *bs, uint64_t first)
{
    BDRVQcow2State *s = bs->opaque;
    GArray *tables = g_array_new(false, false, sizeof(uint64_t));
    int ret = 0;

    for (uint64_t i = first; i < s->l1_size; i++) {
        uint64_t off = s->l1_table[i] & L1E_OFFSET_MASK;
        if (off) {
            s->l1_table[i] = 0;
            qcow2_overlap_remove(s, QCOW2_OL_ACTIVE_L2, off);
            g_array_append_val(tables, off);
        }
    }
    if (tables->len) {
        bdrv_debug_event(bs->file, BLKDBG_L1_SHRINK_WRITE_TABLE);
    }
    for (uint64_t i = first & ~63ULL; tables->len && i < s->l1_size && ret == 0; i += 64) {
        ret = write_l1_piece(bs, i);
    }
    if (ret == 0 && tables->len) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    /* Unreachable from L1 on disk now: their references can go. */
    if (ret == 0 && tables->len) {
        bdrv_debug_event(bs->file, BLKDBG_L1_SHRINK_FREE_L2_CLUSTERS);
    }
    for (guint i = 0; ret == 0 && i < tables->len; i++) {
        ret = qcow2_free_clusters(bs, g_array_index(tables, uint64_t, i), s->cluster_size, false);
    }
    g_array_free(tables, true);
    return ret;
}

/* ---- L2 tables ------------------------------------------------------------------------ */

/*
 * Offset of the L2 table for guest @offset from L1, checked (and, when the
 * caller is going to @write through it, inside the file); 0 when there is none.
 */
static int coroutine_fn l2_offset_for(BlockDriverState *bs, uint64_t offset, bool write,
                                      uint64_t *l2_off, bool *copied)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l1_index = offset >> (s->cluster_bits + s->l2_bits);
    *l2_off = 0;
    *copied = false;
    if (l1_index >= s->l1_size) {
        return 0;
    }
    uint64_t l1e = s->l1_table[l1_index];
    uint64_t off = l1e & L1E_OFFSET_MASK;
    if ((l1e & L1E_RESERVED_MASK) || (off & (s->cluster_size - 1))) {
        return qcow2_signal_corruption(bs, "Invalid L1 entry %" PRIu64 ": 0x%" PRIx64, l1_index,
                                       l1e);
    }
    unsigned hit = off ? qcow2_overlap_find(s, QCOW2_OL_ACTIVE_L2, off, s->cluster_size) : 0;
    if (hit) {
        return qcow2_signal_corruption(bs, "L2 table at 0x%" PRIx64 " overlaps the %s", off,
                                       qcow2_overlap_name(hit));
    }
    if (off && write) {
        int ret = check_inside_file(bs, off, "L2 table", offset & ~(qcow2_l2_span(s) - 1));
        if (ret < 0) {
            return ret;
        }
    }
    *l2_off = off;
    *copied = off && (l1e & QCOW2_OFLAG_COPIED);
    return 0;
}

/*
 * Pins the L2 table that maps guest @offset (to @write through it), or sets
 * *table = NULL when there is none.
 */
static int coroutine_fn l2_load(BlockDriverState *bs, uint64_t offset, bool write, void **table)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l2_off;
    bool copied;
    *table = NULL;
    int ret = l2_offset_for(bs, offset, write, &l2_off, &copied);
    if (ret < 0 || !l2_off) {
        return ret;
    }
    return qcow2_cache_get(bs, s->l2_cache, l2_off, table);
}

/*
 * Gives L1 entry @l1_index a new L2 table of ours: empty, or a copy of
 * the shared table at @old_off.  The table and its refcount are stable
 * before the L1 entry points to it; the old table loses one reference.
 */
static int coroutine_fn alloc_l2(BlockDriverState *bs, uint64_t l1_index, uint64_t old_off,
                                 void **table)
{
    BDRVQcow2State *s = bs->opaque;
    void *old = NULL;
    int64_t new_off = qcow2_alloc_clusters(bs, 1);
    int ret;

    if (new_off < 0) {
        return new_off;
    }
    if (old_off) {
        bdrv_debug_event(bs->file, BLKDBG_L2_ALLOC_COW_READ);
        ret = qcow2_cache_get(bs, s->l2_cache, old_off, &old);
        if (ret < 0) {
            goto fail_free;
        }
    }
    ret = qcow2_cache_get_empty(bs, s->l2_cache, new_off, table);
    if (ret < 0) {
        if (old) {
            qcow2_cache_put(s->l2_cache, &old);
        }
        goto fail_free;
    }
    if (old) {
        memcpy(*table, old, s->cluster_size);
        qcow2_cache_put(s->l2_cache, &old);
    } else {
        memset(*table, 0, s->cluster_size);
    }
    qcow2_cache_mark_dirty(s->l2_cache, *table);

    ret = qcow2_cache_set_dependency(bs, s->l2_cache, s->refblock_cache);
    if (ret == 0) {
        bdrv_debug_event(bs->file, BLKDBG_L2_ALLOC_WRITE);
        ret = qcow2_cache_flush(bs, s->l2_cache);
    }
    if (ret == 0) {
        uint64_t saved = s->l1_table[l1_index];
        s->l1_table[l1_index] = (uint64_t)new_off | QCOW2_OFLAG_COPIED;
        ret = qcow2_write_l1_entry(bs, l1_index);
        if (ret < 0) {
            s->l1_table[l1_index] = saved;
        } else {
            qcow2_overlap_remove(s, QCOW2_OL_ACTIVE_L2, saved & L1E_OFFSET_MASK);
            qcow2_overlap_add(s, QCOW2_OL_ACTIVE_L2, new_off);
        }
    }
    if (ret < 0) {
        qcow2_cache_put(s->l2_cache, table);
        qcow2_cache_discard(s->l2_cache, new_off);
        goto fail_free;
    }
    if (old_off) {
        /* The L1 entry on disk no longer names the old table. */
        ret = qcow2_free_clusters(bs, old_off, s->cluster_size, false);
        if (ret < 0) {
            qcow2_cache_put(s->l2_cache, table);
            return ret;
        }
    }
    return 0;

fail_free:
    qcow2_free_clusters(bs, new_off, s->cluster_size, false);
    return ret;
}

/* Pins a writable L2 table (ours, refcount 1) for guest @offset, creating it if needed. */
static int coroutine_fn get_l2_for_write(BlockDriverState *bs, uint64_t offset, void **table,
                                         uint64_t *l2_index)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t l1_index = offset >> (s->cluster_bits + s->l2_bits);
    uint64_t l2_off;
    bool copied;
    int ret;

    *l2_index = (offset >> s->cluster_bits) & (s->l2_entries - 1);
    if (l1_index >= s->l1_size) {
        ret = qcow2_grow_l1_table(bs, l1_index + 1);
        if (ret < 0) {
            return ret;
        }
    }
    ret = l2_offset_for(bs, offset, true, &l2_off, &copied);
    if (ret < 0) {
        return ret;
    }
    if (copied) {
        return qcow2_cache_get(bs, s->l2_cache, l2_off, table);
    }
    return alloc_l2(bs, l1_index, l2_off, table);
}

/* ---- reads ----------------------------------------------------------------------------- */

int coroutine_fn qcow2_get_host_offset(BlockDriverState *bs, uint64_t offset, uint64_t *bytes,
                                       uint64_t *host)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t span = qcow2_l2_span(s);
    uint64_t end = offset + MIN(*bytes, span - (offset & (span - 1)));
    uint64_t gc = qcow2_start_of_cluster(s, offset);
    uint64_t idx = (offset >> s->cluster_bits) & (s->l2_entries - 1);
    uint64_t pos = offset;
    int type = -1;
    void *table;

    *host = 0;
    int ret = l2_load(bs, offset, false, &table);
    if (ret < 0) {
        return ret;
    }
    if (!table) {
        *bytes = end - offset;
        return QCOW2_SC_UNALLOC_PLAIN;
    }
    while (pos < end) {
        uint64_t entry = qcow2_l2_entry(s, table, idx);
        uint64_t bitmap = qcow2_l2_bitmap(s, table, idx);
        uint64_t hc = entry & L2E_OFFSET_MASK;
        uint64_t cend = MIN(end, gc + s->cluster_size);

        ret = check_l2_entry(bs, gc, entry, bitmap);
        if (ret < 0) {
            qcow2_cache_put(s->l2_cache, &table);
            return ret;
        }
        if (type == QCOW2_SC_COMPRESSED) {
            break; /* a compressed run is one cluster */
        }
        while (pos < cend) {
            int sc = (int)((pos - gc) >> s->subcluster_bits);
            int t = qcow2_sc_type(s, entry, bitmap, sc);
            bool mapped = t == QCOW2_SC_NORMAL || t == QCOW2_SC_ZERO_ALLOC;
            if (type < 0) {
                type = t;
                *host = t == QCOW2_SC_COMPRESSED ? entry : mapped ? hc + (pos - gc) : 0;
            } else if (t != type || (mapped && hc + (pos - gc) != *host + (pos - offset))) {
                goto done;
            }
            pos = t == QCOW2_SC_COMPRESSED
                      ? cend
                      : MIN(cend, gc + ((uint64_t)(sc + 1) << s->subcluster_bits));
        }
        gc += s->cluster_size;
        idx++;
    }
done:
    qcow2_cache_put(s->l2_cache, &table);
    *bytes = pos - offset;
    return type;
}

/* ---- allocating writes --------------------------------------------------------------- */

typedef enum WriteKind {
    WRITE_IN_PLACE, /* every touched subcluster is NORMAL in a cluster of ours */
    WRITE_KEEP_OLD, /* a cluster of ours, some touched subclusters not NORMAL */
    WRITE_NEW,      /* needs a new host cluster */
} WriteKind;

/* How bytes [a, b) of a cluster with this (checked) L2 entry are written. */
static WriteKind write_kind(BDRVQcow2State *s, uint64_t entry, uint64_t bitmap, uint64_t a,
                            uint64_t b)
{
    if (!qcow2_entry_has_host(s, entry) || !(entry & QCOW2_OFLAG_COPIED)) {
        return WRITE_NEW;
    }
    for (int sc = a >> s->subcluster_bits; sc <= (int)((b - 1) >> s->subcluster_bits); sc++) {
        if (qcow2_sc_type(s, entry, bitmap, sc) != QCOW2_SC_NORMAL) {
            return WRITE_KEEP_OLD;
        }
    }
    return WRITE_IN_PLACE;
}

/* Subclusters overlapping bytes [a, b) of a cluster, as an allocation bitmap. */
static uint32_t sc_mask(BDRVQcow2State *s, uint64_t a, uint64_t b)
{
    int lo = a >> s->subcluster_bits, hi = (b - 1) >> s->subcluster_bits;
    uint64_t bits = ((2ULL << hi) - 1) & ~((1ULL << lo) - 1);
    return (uint32_t)bits;
}

/* A new cluster replacing this entry must copy all of the old one (not just subclusters). */
static bool needs_full_cow(BDRVQcow2State *s, uint64_t entry)
{
    return !s->extended_l2 || (entry & QCOW2_OFLAG_COMPRESSED) || qcow2_entry_has_host(s, entry);
}

bool qcow2_allocs_sanity(BDRVQcow2State *s)
{
    for (Qcow2Alloc *a = s->allocs; a; a = a->next) {
        uint64_t a_end = a->guest_offset + ((uint64_t)a->nb_clusters << s->cluster_bits);
        for (Qcow2Alloc *b = a->next; b; b = b->next) {
            uint64_t b_end = b->guest_offset + ((uint64_t)b->nb_clusters << s->cluster_bits);
            if (a->guest_offset < b_end && b->guest_offset < a_end) {
                return false;
            }
        }
        if (a->next && a->next->prev != a) {
            return false;
        }
    }
    return true;
}

static void alloc_list_insert(BDRVQcow2State *s, Qcow2Alloc *a)
{
    co_queue_init(&a->waiters);
    a->prev = NULL;
    a->next = s->allocs;
    if (a->next) {
        a->next->prev = a;
    }
    s->allocs = a;
    /* The list was sane before: only @a can overlap another (O(n), not the full O(n^2)). */
    uint64_t a_end = a->guest_offset + ((uint64_t)a->nb_clusters << s->cluster_bits);
    for (Qcow2Alloc *b = a->next; b; b = b->next) {
        g_assert(a_end <= b->guest_offset ||
                 b->guest_offset + ((uint64_t)b->nb_clusters << s->cluster_bits) <=
                     a->guest_offset);
    }
}

static void alloc_list_remove(BDRVQcow2State *s, Qcow2Alloc *a)
{
    if (a->prev) {
        a->prev->next = a->next;
    } else {
        s->allocs = a->next;
    }
    if (a->next) {
        a->next->prev = a->prev;
    }
    co_queue_restart_all(&a->waiters);
}

void coroutine_fn qcow2_wait_for_allocs(BlockDriverState *bs, uint64_t offset, uint64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
restart:
    for (Qcow2Alloc *o = s->allocs; o; o = o->next) {
        uint64_t o_end = o->guest_offset + ((uint64_t)o->nb_clusters << s->cluster_bits);
        if (o->guest_offset < offset + bytes && offset < o_end) {
            s->nb_alloc_waits++;
            co_queue_wait(&o->waiters, &s->lock);
            goto restart;
        }
    }
}

/* Fills @a for the keep_old case: cluster @gc of ours, bytes [a0, b0) written. */
static void prepare_keep_old(BDRVQcow2State *s, Qcow2Alloc *a, uint64_t gc, uint64_t entry,
                             uint64_t bitmap, uint64_t a0, uint64_t b0)
{
    int lo = a0 >> s->subcluster_bits, hi = (b0 - 1) >> s->subcluster_bits;
    uint64_t u0 = (uint64_t)lo << s->subcluster_bits;
    uint64_t u1 = (uint64_t)(hi + 1) << s->subcluster_bits;

    *a = (Qcow2Alloc){
        .guest_offset = gc,
        .host_offset = entry & L2E_OFFSET_MASK,
        .nb_clusters = 1,
        .keep_old = true,
        .old_first = entry,
        .old_first_bitmap = bitmap,
        .old_last = entry,
        .old_last_bitmap = bitmap,
    };
    /*
     * Only subclusters that are not NORMAL get old content copied: NORMAL
     * ones may be written in place by others at the same time.
     */
    if (qcow2_sc_type(s, entry, bitmap, lo) == QCOW2_SC_NORMAL) {
        u0 = a0;
    }
    if (qcow2_sc_type(s, entry, bitmap, hi) == QCOW2_SC_NORMAL) {
        u1 = b0;
    }
    a->cow_start = (Qcow2CowRegion){u0, a0 - u0};
    a->cow_end = (Qcow2CowRegion){b0, u1 - b0};
    a->first_mask = a->last_mask = sc_mask(s, a0, b0);
}

/*
 * The clusters one host write can serve, as the L2 table describes them:
 * guest [offset, end) starting in cluster gc.
 */
typedef struct WritePiece {
    uint64_t gc, a0, end; /* first guest cluster, write offset in it, end of the piece */
    uint64_t n;           /* clusters */
    WriteKind kind;
    uint64_t e0, bm0;         /* L2 entry and bitmap of the first cluster */
    uint64_t e_last, bm_last; /* ... and of the last */
} WritePiece;

/*
 * Waits while an in-flight allocation covers cluster @gc (returns true:
 * the caller looks again), else pulls *end back to where the next
 * allocation starts.
 */
static bool coroutine_fn wait_for_overlap(BlockDriverState *bs, uint64_t gc, uint64_t *end)
{
    BDRVQcow2State *s = bs->opaque;
    for (Qcow2Alloc *o = s->allocs; o; o = o->next) {
        uint64_t o_end = o->guest_offset + ((uint64_t)o->nb_clusters << s->cluster_bits);
        if (o_end <= gc || o->guest_offset >= *end) {
            continue;
        }
        if (o->guest_offset <= gc) {
            s->nb_alloc_waits++;
            co_queue_wait(&o->waiters, &s->lock);
            return true;
        }
        *end = o->guest_offset;
    }
    return false;
}

/* Reads the entries from guest @offset on and finds the longest piece of one kind. */
static int coroutine_fn scan_write_piece(BlockDriverState *bs, uint64_t offset, uint64_t end,
                                         WritePiece *p)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t idx = (offset >> s->cluster_bits) & (s->l2_entries - 1);
    void *table;
    int ret = l2_load(bs, offset, true, &table);
    if (ret < 0) {
        return ret;
    }
    p->gc = qcow2_start_of_cluster(s, offset);
    p->a0 = offset - p->gc;
    p->e0 = table ? qcow2_l2_entry(s, table, idx) : 0;
    p->bm0 = table ? qcow2_l2_bitmap(s, table, idx) : 0;
    p->e_last = p->e0;
    p->bm_last = p->bm0;
    p->n = 1;
    ret = check_l2_entry(bs, p->gc, p->e0, p->bm0);
    p->kind = write_kind(s, p->e0, p->bm0, p->a0, MIN(end - p->gc, cs));
    /* Follow with clusters of the same kind (in place: host-contiguous too). */
    while (ret == 0 && p->kind != WRITE_KEEP_OLD && p->gc + p->n * cs < end) {
        uint64_t g = p->gc + p->n * cs;
        uint64_t e = table ? qcow2_l2_entry(s, table, idx + p->n) : 0;
        uint64_t bm = table ? qcow2_l2_bitmap(s, table, idx + p->n) : 0;
        ret = check_l2_entry(bs, g, e, bm);
        if (ret < 0 || write_kind(s, e, bm, 0, MIN(end - g, cs)) != p->kind ||
            (p->kind == WRITE_IN_PLACE &&
             (e & L2E_OFFSET_MASK) != (p->e0 & L2E_OFFSET_MASK) + p->n * cs)) {
            break;
        }
        p->e_last = e;
        p->bm_last = bm;
        p->n++;
    }
    if (table) {
        qcow2_cache_put(s->l2_cache, &table);
    }
    p->end = MIN(end, p->gc + p->n * cs);
    if (ret == 0 && p->kind != WRITE_NEW && !s->has_data_file) {
        /* Host-contiguous clusters: the last one starts furthest out. */
        uint64_t last = p->kind == WRITE_IN_PLACE ? p->n - 1 : 0;
        ret = check_inside_file(bs, (p->e0 & L2E_OFFSET_MASK) + last * cs, "Data cluster",
                                p->gc + last * cs);
    }
    return ret;
}

/* Fills @a for new clusters: old content is copied at the two ends only. */
static int coroutine_fn prepare_new(BlockDriverState *bs, const WritePiece *p, Qcow2Alloc *a)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t cs = s->cluster_size;
    uint64_t last = p->n - 1;
    uint64_t bl = p->end - (p->gc + last * cs);
    uint64_t u0 = needs_full_cow(s, p->e0) ? 0 : p->a0 & ~(s->subcluster_size - 1);
    uint64_t u1 = needs_full_cow(s, p->e_last) ? cs : qcow2_round_up(bl, s->subcluster_size);

    *a = (Qcow2Alloc){
        .guest_offset = p->gc,
        .nb_clusters = (int)p->n,
        .old_first = p->e0,
        .old_first_bitmap = p->bm0,
        .old_last = p->e_last,
        .old_last_bitmap = p->bm_last,
        .cow_start = {u0, p->a0 - u0},
        .cow_end = {last * cs + bl, u1 - bl},
    };
    if (last == 0) {
        a->first_mask = a->last_mask = sc_mask(s, u0, u1);
    } else {
        a->first_mask = sc_mask(s, u0, cs);
        a->last_mask = sc_mask(s, 0, u1);
    }
    if (s->has_data_file) {
        a->host_offset = p->gc; /* data clusters sit at their guest offset */
        return 0;
    }
    int64_t h = qcow2_alloc_clusters(bs, p->n);
    if (h < 0) {
        return h;
    }
    a->host_offset = h;
    /* The allocator checked the run too; this guards the data write itself. */
    int ret = qcow2_pre_write_check(bs, QCOW2_OL_DATA, h, p->n * cs);
    if (ret < 0) {
        qcow2_free_clusters(bs, h, p->n * cs, false);
    }
    return ret;
}

int coroutine_fn qcow2_alloc_host_offset(BlockDriverState *bs, uint64_t offset, uint64_t *bytes,
                                         uint64_t *host, Qcow2Alloc *a)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t span = qcow2_l2_span(s);
    WritePiece p;
    uint64_t end;
    int ret = qcow2_before_write(bs);
    if (ret < 0) {
        return ret;
    }
    do {
        end = MIN(offset + *bytes, (offset & ~(span - 1)) + span);
    } while (wait_for_overlap(bs, qcow2_start_of_cluster(s, offset), &end));

    ret = scan_write_piece(bs, offset, end, &p);
    if (ret < 0) {
        return ret;
    }
    *bytes = p.end - offset;
    switch (p.kind) {
    case WRITE_IN_PLACE:
        *host = (p.e0 & L2E_OFFSET_MASK) + p.a0;
        return s->has_data_file ? 0 : qcow2_pre_write_check(bs, QCOW2_OL_DATA, *host, *bytes);
    case WRITE_KEEP_OLD:
        prepare_keep_old(s, a, p.gc, p.e0, p.bm0, p.a0, p.end - p.gc);
        ret = s->has_data_file
                  ? 0
                  : qcow2_pre_write_check(bs, QCOW2_OL_DATA, a->host_offset, s->cluster_size);
        if (ret < 0) {
            return ret;
        }
        break;
    case WRITE_NEW:
        ret = prepare_new(bs, &p, a);
        if (ret < 0) {
            return ret;
        }
        break;
    }
    *host = a->host_offset + p.a0;
    alloc_list_insert(s, a);
    return 1;
}

void coroutine_fn qcow2_alloc_abort(BlockDriverState *bs, Qcow2Alloc *a)
{
    BDRVQcow2State *s = bs->opaque;
    if (!a->keep_old && !s->has_data_file) {
        /* Never linked: nothing on disk points at these clusters. */
        qcow2_free_clusters(bs, a->host_offset, (uint64_t)a->nb_clusters << s->cluster_bits, false);
    }
    alloc_list_remove(s, a);
}

/* The new L2 entry and bitmap for cluster @i of @a, replacing (@old, @old_bm). */
static void linked_entry(BDRVQcow2State *s, Qcow2Alloc *a, int i, uint64_t old, uint64_t old_bm,
                         uint64_t *entry, uint64_t *bitmap)
{
    *entry = (a->host_offset + ((uint64_t)i << s->cluster_bits)) | QCOW2_OFLAG_COPIED;
    *bitmap = 0;
    if (!s->extended_l2) {
        return;
    }
    uint32_t mask = i == 0 ? a->first_mask : i == a->nb_clusters - 1 ? a->last_mask : UINT32_MAX;
    uint64_t alloc = mask;
    if (a->keep_old || !qcow2_entry_has_host(s, old)) {
        /* Subclusters outside the write keep their state (a fresh cluster has none allocated). */
        alloc |= a->keep_old ? (old_bm & QCOW2_EXTL2_ALL_ALLOC) : 0;
    } else {
        alloc = QCOW2_EXTL2_ALL_ALLOC; /* full copy of the old cluster */
    }
    uint64_t zero = (old_bm >> 32) & ~alloc & 0xffffffffULL;
    if (old & QCOW2_OFLAG_COMPRESSED) {
        zero = 0;
        alloc = QCOW2_EXTL2_ALL_ALLOC;
    }
    *bitmap = alloc | (zero << 32);
}

int coroutine_fn qcow2_alloc_link(BlockDriverState *bs, Qcow2Alloc *a)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t *to_free = g_new(uint64_t, a->nb_clusters);
    int nfree = 0;
    uint64_t idx;
    void *table;

    int ret = get_l2_for_write(bs, a->guest_offset, &table, &idx);
    if (ret < 0) {
        qcow2_alloc_abort(bs, a);
        g_free(to_free);
        return ret;
    }
    /* New refcounts first, and the data written before the entries that point at it. */
    if (!s->lazy_refcounts && !a->keep_old && !s->has_data_file) {
        ret = qcow2_cache_set_dependency(bs, s->l2_cache, s->refblock_cache);
        if (ret < 0) {
            qcow2_cache_put(s->l2_cache, &table);
            qcow2_alloc_abort(bs, a);
            g_free(to_free);
            return ret;
        }
    }
    qcow2_cache_depends_on_flush(s->l2_cache);

    for (int i = 0; i < a->nb_clusters; i++) {
        uint64_t old = qcow2_l2_entry(s, table, idx + i);
        uint64_t old_bm = qcow2_l2_bitmap(s, table, idx + i);
        uint64_t entry, bitmap;
        linked_entry(s, a, i, old, old_bm, &entry, &bitmap);
        qcow2_set_l2_entry(s, table, idx + i, entry);
        qcow2_set_l2_bitmap(s, table, idx + i, bitmap);
        if (!a->keep_old && (old & QCOW2_OFLAG_COMPRESSED || qcow2_entry_has_host(s, old)) &&
            (old & L2E_OFFSET_MASK) != (entry & L2E_OFFSET_MASK)) {
            to_free[nfree++] = old;
        }
    }
    qcow2_cache_mark_dirty(s->l2_cache, table);
    qcow2_cache_put(s->l2_cache, &table);

    if (nfree && !s->lazy_refcounts) {
        ret = qcow2_cache_set_dependency(bs, s->refblock_cache, s->l2_cache);
    }
    if (nfree && ret == 0) {
        ret = qcow2_free_l2_entries(bs, to_free, nfree, false, false);
    }
    g_free(to_free);
    alloc_list_remove(s, a);
    return ret;
}

/* ---- compressed clusters ---------------------------------------------------------------- */

int coroutine_fn qcow2_alloc_compressed(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                        Qcow2Alloc *a)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t end;
    int ret = qcow2_before_write(bs);
    if (ret < 0) {
        return ret;
    }
    g_assert(qcow2_offset_into_cluster(s, offset) == 0);
    do {
        end = offset + s->cluster_size;
    } while (wait_for_overlap(bs, offset, &end));

    int64_t host = qcow2_alloc_bytes(bs, bytes);
    if (host < 0) {
        return host;
    }
    ret = (uint64_t)host + bytes - 1 > s->coffset_mask
              ? -EFBIG
              : qcow2_pre_write_check(bs, QCOW2_OL_DATA, host, bytes);
    if (ret < 0) {
        qcow2_free_clusters(bs, host, bytes, false);
        return ret;
    }
    *a = (Qcow2Alloc){
        .guest_offset = offset,
        .host_offset = host,
        .nb_clusters = 1,
        .compressed_bytes = bytes,
    };
    alloc_list_insert(s, a);
    return 0;
}

void coroutine_fn qcow2_abort_compressed(BlockDriverState *bs, Qcow2Alloc *a)
{
    BDRVQcow2State *s = bs->opaque;
    qcow2_free_clusters(bs, a->host_offset, a->compressed_bytes, false);
    alloc_list_remove(s, a);
}

int coroutine_fn qcow2_link_compressed(BlockDriverState *bs, Qcow2Alloc *a)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t first_sector = a->host_offset >> 9;
    uint64_t last_sector = (a->host_offset + a->compressed_bytes - 1) >> 9;
    uint64_t entry =
        a->host_offset | QCOW2_OFLAG_COMPRESSED | ((last_sector - first_sector) << s->csize_shift);
    uint64_t idx, old;
    void *table;

    int ret = get_l2_for_write(bs, a->guest_offset, &table, &idx);
    if (ret == 0 && !s->lazy_refcounts) {
        /* The references to the compressed bytes are stable before the entry. */
        ret = qcow2_cache_set_dependency(bs, s->l2_cache, s->refblock_cache);
        if (ret < 0) {
            qcow2_cache_put(s->l2_cache, &table);
        }
    }
    if (ret < 0) {
        qcow2_abort_compressed(bs, a);
        return ret;
    }
    qcow2_cache_depends_on_flush(s->l2_cache);
    old = qcow2_l2_entry(s, table, idx);
    ret = check_l2_entry(bs, a->guest_offset, old, qcow2_l2_bitmap(s, table, idx));
    if (ret == 0) {
        qcow2_set_l2_entry(s, table, idx, entry);
        qcow2_set_l2_bitmap(s, table, idx, 0); /* compressed clusters have no subclusters */
        qcow2_cache_mark_dirty(s->l2_cache, table);
    }
    qcow2_cache_put(s->l2_cache, &table);
    if (ret < 0) {
        qcow2_abort_compressed(bs, a);
        return ret;
    }
    if ((old & QCOW2_OFLAG_COMPRESSED) || qcow2_entry_has_host(s, old)) {
        /* Overwritten: the old cluster loses its reference once the new entry is stable. */
        if (!s->lazy_refcounts) {
            ret = qcow2_cache_set_dependency(bs, s->refblock_cache, s->l2_cache);
        }
        if (ret == 0) {
            ret = qcow2_free_any_cluster(bs, old, false);
        }
    }
    alloc_list_remove(s, a);
    return ret;
}

/* ---- zeroing, discarding, preallocating ------------------------------------------------- */

/* The change one operation makes to one cluster's L2 entry. */
typedef struct ClusterEdit {
    uint64_t entry, bitmap; /* in: current; out: new */
    bool free_old;          /* out: drop what the old entry pointed to */
} ClusterEdit;

typedef int (*ClusterEditFn)(BlockDriverState *bs, ClusterEdit *ed, uint64_t a, uint64_t b,
                             bool flag);

/*
 * Applies @fn to every cluster of guest [@offset, @offset + @bytes), one L2
 * table at a time, then frees what the old entries pointed to (after the
 * tables that dropped them, unless refcounts are lazy), host-contiguous
 * clusters as one run.  An L2 table is created only where @fn changes an
 * entry of a cluster that has none.  With @discard, freed clusters are
 * discarded in the file; @keep_data says the old entries must not read
 * as zeroes after a crash (the range falls back to a backing file), so the
 * L2 tables are written before the discard.
 */
static int coroutine_fn edit_clusters(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                      ClusterEditFn fn, bool flag, bool discard, bool keep_data)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t span = qcow2_l2_span(s);
    uint64_t end = offset + bytes;
    GArray *frees = g_array_new(false, false, sizeof(uint64_t));
    int ret = 0;

    while (offset < end && ret == 0) {
        uint64_t chunk_end = MIN(end, (offset & ~(span - 1)) + span);
        uint64_t gc = qcow2_start_of_cluster(s, offset);
        uint64_t l2_off, idx;
        bool copied;
        void *table;

        ret = l2_offset_for(bs, offset, true, &l2_off, &copied);
        if (ret < 0) {
            break;
        }
        if (!l2_off) {
            /* No table: every entry is 0 and reacts to @fn like the first one. */
            ClusterEdit ed = {0, 0, false};
            ret = fn(bs, &ed, offset - gc, MIN(chunk_end - gc, s->cluster_size), flag);
            if (ret < 0 || (ed.entry == 0 && ed.bitmap == 0)) {
                offset = chunk_end;
                continue;
            }
        }
        ret = get_l2_for_write(bs, offset, &table, &idx);
        if (ret < 0) {
            break;
        }
        bool dirty = false;
        for (; gc < chunk_end; gc += s->cluster_size, idx++) {
            uint64_t a = MAX(offset, gc) - gc, b = MIN(chunk_end - gc, s->cluster_size);
            ClusterEdit ed = {qcow2_l2_entry(s, table, idx), qcow2_l2_bitmap(s, table, idx), false};
            uint64_t old = ed.entry, old_bm = ed.bitmap;
            ret = check_l2_entry(bs, gc, old, old_bm);
            if (ret == 0) {
                ret = fn(bs, &ed, a, b, flag);
            }
            if (ret < 0) {
                break;
            }
            if (ed.entry != old || ed.bitmap != old_bm) {
                qcow2_set_l2_entry(s, table, idx, ed.entry);
                qcow2_set_l2_bitmap(s, table, idx, ed.bitmap);
                dirty = true;
            }
            if (ed.free_old) {
                g_array_append_val(frees, old);
            }
        }
        if (dirty) {
            qcow2_cache_mark_dirty(s->l2_cache, table);
        }
        qcow2_cache_put(s->l2_cache, &table);
        offset = chunk_end;
    }

    int ret2 = 0;
    if (frees->len && !s->lazy_refcounts) {
        ret2 = qcow2_cache_set_dependency(bs, s->refblock_cache, s->l2_cache);
    }
    if (frees->len && ret2 == 0) {
        ret2 = qcow2_free_l2_entries(bs, (uint64_t *)frees->data, frees->len, discard,
                                     discard && keep_data);
    }
    g_array_free(frees, true);
    return ret < 0 ? ret : ret2;
}

static int zero_edit(BlockDriverState *bs, ClusterEdit *ed, uint64_t a, uint64_t b, bool unmap)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t e = ed->entry;
    bool ours = qcow2_entry_has_host(s, e) && (e & QCOW2_OFLAG_COPIED);
    bool owns = qcow2_entry_has_host(s, e) || (e & QCOW2_OFLAG_COMPRESSED);

    if (e == 0 && ed->bitmap == 0 && !qcow2_has_backing(bs)) {
        return 0; /* unallocated without a backing file already reads as zeroes */
    }
    if (!s->extended_l2 || (a == 0 && b == s->cluster_size)) {
        bool keep = !unmap && ours;
        ed->free_old = !keep && owns;
        if (s->extended_l2) {
            ed->entry = keep ? e : 0;
            ed->bitmap = QCOW2_EXTL2_ALL_ZERO;
        } else {
            ed->entry = keep ? ((e & L2E_OFFSET_MASK) | QCOW2_OFLAG_COPIED | QCOW2_OFLAG_ZERO)
                             : QCOW2_OFLAG_ZERO;
        }
        return 0;
    }
    if (owns && !ours) {
        return -ENOTSUP; /* part of a shared or compressed cluster: write real zeroes */
    }
    uint64_t mask = sc_mask(s, a, b);
    ed->bitmap = (ed->bitmap & ~mask) | (mask << 32);
    return 0;
}

int coroutine_fn qcow2_zero_clusters(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                     bool unmap)
{
    BDRVQcow2State *s = bs->opaque;
    if (s->version < 3 || s->data_file_raw) {
        return -ENOTSUP;
    }
    int ret = qcow2_before_write(bs);
    if (ret < 0) {
        return ret;
    }
    qcow2_wait_for_allocs(bs, offset, bytes);
    /* A cluster discarded before its entry reaches the disk reads as zeroes: as asked. */
    return edit_clusters(bs, offset, bytes, zero_edit, unmap, unmap, false);
}

static int discard_edit(BlockDriverState *bs, ClusterEdit *ed, uint64_t a, uint64_t b, bool full)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t e = ed->entry;
    /* A guest discard should read back as zeroes, not as the backing file, where we can. */
    bool zero = !full && s->version >= 3 && qcow2_has_backing(bs);

    ed->free_old = qcow2_entry_has_host(s, e) || (e & QCOW2_OFLAG_COMPRESSED);
    if (s->extended_l2) {
        ed->entry = 0;
        ed->bitmap = zero ? QCOW2_EXTL2_ALL_ZERO : 0;
    } else {
        ed->entry = zero ? QCOW2_OFLAG_ZERO : 0;
    }
    return 0;
}

int coroutine_fn qcow2_discard_clusters(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                        bool full)
{
    BDRVQcow2State *s = bs->opaque;
    if (s->data_file_raw) {
        return -ENOTSUP;
    }
    int ret = qcow2_before_write(bs);
    if (ret < 0) {
        return ret;
    }
    qcow2_wait_for_allocs(bs, offset, bytes);
    /*
     * A guest discard may read back as anything, but a full one (emptying the
     * image after a commit) must show the old data or the backing file.
     */
    return edit_clusters(bs, offset, bytes, discard_edit, full, true, full && qcow2_has_backing(bs));
}

int coroutine_fn qcow2_preallocate(BlockDriverState *bs, uint64_t offset, uint64_t end)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t span = qcow2_l2_span(s);
    int64_t file_len = bdrv_co_getlength(s->data_file->bs);
    int ret = qcow2_before_write(bs);

    if (file_len < 0) {
        return file_len;
    }
    offset = qcow2_start_of_cluster(s, offset);
    while (offset < end && ret == 0) {
        uint64_t chunk_end = MIN(end, (offset & ~(span - 1)) + span);
        uint64_t idx;
        void *table;
        ret = get_l2_for_write(bs, offset, &table, &idx);
        if (ret < 0) {
            break;
        }
        while (offset < chunk_end && ret == 0) {
            uint64_t n = 0;
            while (offset + n * s->cluster_size < chunk_end &&
                   qcow2_l2_entry(s, table, idx + n) == 0 &&
                   qcow2_l2_bitmap(s, table, idx + n) == 0) {
                n++;
            }
            if (n == 0) {
                offset += s->cluster_size;
                idx++;
                continue;
            }
            int64_t host = offset;
            uint64_t run_end;
            if (!s->has_data_file) {
                host = qcow2_alloc_clusters(bs, n);
                if (host < 0) {
                    ret = host;
                    break;
                }
                ret = s->lazy_refcounts
                          ? 0
                          : qcow2_cache_set_dependency(bs, s->l2_cache, s->refblock_cache);
                if (ret == 0) {
                    ret = qcow2_pre_write_check(bs, QCOW2_OL_DATA, host, n << s->cluster_bits);
                }
            }
            run_end = (uint64_t)host + (n << s->cluster_bits);
            if (ret == 0 && host < file_len) {
                /* Reused clusters still hold old data: the guest must see zeroes. */
                ret = bdrv_co_pwrite_zeroes(s->data_file, host,
                                            MIN(run_end, (uint64_t)file_len) - host, 0);
                qcow2_cache_depends_on_flush(s->l2_cache);
            }
            if (ret == 0 && run_end > (uint64_t)file_len) {
                /*
                 * The clusters lie inside the file before an entry names them (and
                 * read as zeroes): no entry ever points past the end of the file.
                 */
                ret = bdrv_co_truncate(s->data_file, run_end, false, PREALLOC_MODE_OFF, 0, NULL);
                file_len = run_end;
                qcow2_cache_depends_on_flush(s->l2_cache);
            }
            if (ret < 0) {
                if (!s->has_data_file) {
                    qcow2_free_clusters(bs, host, n << s->cluster_bits, false);
                }
                break;
            }
            for (uint64_t i = 0; i < n; i++) {
                qcow2_set_l2_entry(s, table, idx + i,
                                   (host + (i << s->cluster_bits)) | QCOW2_OFLAG_COPIED);
                /* Subclusters stay unallocated: the backing file still shows through. */
                qcow2_set_l2_bitmap(s, table, idx + i, 0);
            }
            qcow2_cache_mark_dirty(s->l2_cache, table);
            offset += n << s->cluster_bits;
            idx += n;
        }
        qcow2_cache_put(s->l2_cache, &table);
    }
    return ret;
}
