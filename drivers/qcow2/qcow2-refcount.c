/*
 * qcow2 host cluster management: refcounts, the free-cluster search,
 * allocation and freeing, refcount block allocation and refcount table
 * growth.
 *
 * Design notes.
 *  - Refcount blocks are read and written through s->refblock_cache; the
 *    refcount table lives in memory (s->refcount_table, host order) and is
 *    written through on every change.
 *  - Allocation never uses a cluster until the refcount block that counts
 *    it exists: qcow2_alloc_clusters() first finds a free run, then creates
 *    missing blocks (which takes clusters and can change what is free, so
 *    it searches again), and only then raises the refcounts.
 *  - A new refcount block goes to the first free cluster.  If that cluster
 *    lies in the region the block will describe, the block counts itself;
 *    otherwise the cluster is counted by the block of its own region.
 *  - Ordering: a new block (and the refcount of its cluster) is stable on
 *    disk before the refcount table points to it; a new refcount table is
 *    stable before the header points to it.
 *  - Freeing many clusters (zeroing, discarding, emptying an image) goes
 *    through qcow2_free_l2_entries: host offsets sorted, each contiguous run
 *    one refcount pass and, for the clusters that became free, one discard
 *    passed to the file after all refcounts are updated.
 *
 * Locking: every function here runs under s->lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "drivers/qcow2/qcow2.h"

uint64_t qcow2_refblock_get(const BDRVQcow2State *s, const void *block, uint64_t i)
{
    const uint8_t *b = block;
    switch (s->refcount_order) {
    case 0:
    case 1:
    case 2: {
        int bits = 1 << s->refcount_order;
        int per_byte = 8 >> s->refcount_order;
        int shift = (int)(i % per_byte) * bits;
        return (b[i / per_byte] >> shift) & ((1u << bits) - 1);
    }
    case 3:
        return b[i];
    case 4:
        return qcow2_ld16(b + i * 2);
    case 5:
        return qcow2_ld32(b + i * 4);
    default:
        return qcow2_ld64(b + i * 8);
    }
}

void qcow2_refblock_set(const BDRVQcow2State *s, void *block, uint64_t i, uint64_t v)
{
    uint8_t *b = block;
    g_assert(v <= s->refcount_max);
    switch (s->refcount_order) {
    case 0:
    case 1:
    case 2: {
        int bits = 1 << s->refcount_order;
        int per_byte = 8 >> s->refcount_order;
        int shift = (int)(i % per_byte) * bits;
        uint8_t mask = (uint8_t)(((1u << bits) - 1) << shift);
        b[i / per_byte] = (uint8_t)((b[i / per_byte] & ~mask) | (v << shift));
        break;
    }
    case 3:
        b[i] = (uint8_t)v;
        break;
    case 4:
        qcow2_st16(b + i * 2, (uint16_t)v);
        break;
    case 5:
        qcow2_st32(b + i * 4, (uint32_t)v);
        break;
    default:
        qcow2_st64(b + i * 8, v);
        break;
    }
}

void qcow2_compressed_range(const BDRVQcow2State *s, uint64_t l2_entry, uint64_t *offset,
                            uint64_t *bytes)
{
    uint64_t off = l2_entry & s->coffset_mask;
    uint64_t sectors = ((l2_entry >> s->csize_shift) & s->csize_mask) + 1;
    *offset = off;
    *bytes = sectors * 512 - (off & 511);
}

int coroutine_fn qcow2_refcount_open(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t n = s->refcount_table_size;
    uint8_t *buf = g_malloc(n * 8);
    bdrv_debug_event(bs->file, BLKDBG_REFTABLE_LOAD);
    int ret = bdrv_co_pread(bs->file, s->refcount_table_offset, n * 8, buf, 0);

    if (ret < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                    "Could not read the refcount table: %s", g_strerror(-ret));
        g_free(buf);
        return ret;
    }
    s->refcount_table = g_new(uint64_t, n);
    for (uint64_t i = 0; i < n; i++) {
        uint64_t e = qcow2_ld64(buf + i * 8);
        if ((e & RTE_RESERVED_MASK) || (e & (s->cluster_size - 1))) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Invalid refcount table entry %" PRIu64 ": 0x%" PRIx64
                        " (reserved bits set or not cluster aligned)",
                        i, e);
            g_free(buf);
            return -EINVAL;
        }
        s->refcount_table[i] = e;
    }
    g_free(buf);
    return 0;
}

/* Offset of the refcount block for region @rt_index, or 0 when it has none. */
static uint64_t refblock_offset(BDRVQcow2State *s, uint64_t rt_index)
{
    return rt_index < s->refcount_table_size ? s->refcount_table[rt_index] & RTE_OFFSET_MASK : 0;
}

int coroutine_fn qcow2_get_refcount(BlockDriverState *bs, uint64_t cluster_index,
                                    uint64_t *refcount)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t off = refblock_offset(s, cluster_index >> s->rb_bits);
    void *block;

    *refcount = 0;
    if (!off) {
        return 0;
    }
    int ret = qcow2_cache_get(bs, s->refblock_cache, off, &block);
    if (ret < 0) {
        return ret;
    }
    *refcount = qcow2_refblock_get(s, block, cluster_index & (s->rb_entries - 1));
    qcow2_cache_put(s->refblock_cache, &block);
    return 0;
}

/* Largest cluster index an L2 entry or table pointer can name (56-bit offsets). */
static uint64_t max_cluster_index(BDRVQcow2State *s)
{
    return (1ULL << 56) >> s->cluster_bits;
}

/*
 * Finds the first run of @nb clusters with refcount 0 at or after
 * s->free_cluster_index (clusters no refcount block covers count as free)
 * and moves the hint to the first free cluster seen.  A run that overlaps
 * metadata means the refcounts lie: the image is corrupt (-EIO), and the
 * run is never handed out.
 */
static int coroutine_fn find_free_run(BlockDriverState *bs, uint64_t nb, uint64_t *start)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t i = s->free_cluster_index, run_start = i, run = 0;
    uint64_t block_rt = UINT64_MAX;
    bool hint_moved = false;
    void *block = NULL;
    int ret = 0;

    while (run < nb) {
        if (run_start + nb > max_cluster_index(s)) {
            ret = -EFBIG;
            break;
        }
        uint64_t rt_index = i >> s->rb_bits;
        uint64_t off = refblock_offset(s, rt_index);
        uint64_t rc = 0;
        if (!off) {
            /* No block: the whole region is free. */
            uint64_t left = s->rb_entries - (i & (s->rb_entries - 1));
            if (!hint_moved) {
                s->free_cluster_index = i;
                hint_moved = true;
            }
            run += left;
            i += left;
            continue;
        }
        if (block_rt != rt_index) {
            if (block) {
                qcow2_cache_put(s->refblock_cache, &block);
            }
            ret = qcow2_cache_get(bs, s->refblock_cache, off, &block);
            if (ret < 0) {
                break;
            }
            block_rt = rt_index;
        }
        rc = qcow2_refblock_get(s, block, i & (s->rb_entries - 1));
        if (rc == 0) {
            if (!hint_moved) {
                s->free_cluster_index = i;
                hint_moved = true;
            }
            run++;
        } else {
            run = 0;
            run_start = i + 1;
        }
        i++;
    }
    if (block) {
        qcow2_cache_put(s->refblock_cache, &block);
    }
    *start = run_start;
    if (ret == 0 && qcow2_overlap_find(s, 0, run_start << s->cluster_bits, nb << s->cluster_bits)) {
        /* Rare (a broken image): name the first such cluster. */
        for (uint64_t c = run_start; c < run_start + nb; c++) {
            unsigned hit = qcow2_overlap_find(s, 0, c << s->cluster_bits, s->cluster_size);
            if (hit) {
                return qcow2_signal_corruption(
                    bs, "Refcounts call host cluster 0x%" PRIx64 " free, but it holds the %s",
                    c << s->cluster_bits, qcow2_overlap_name(hit));
            }
        }
    }
    return ret;
}

static int coroutine_fn ensure_refblock(BlockDriverState *bs, uint64_t cluster_index);
static int coroutine_fn grow_refcount_table(BlockDriverState *bs, uint64_t min_entries);

/* A host byte range; freed ranges are collected to be discarded in one go. */
typedef struct HostRange {
    uint64_t start, len;
} HostRange;

/* Appends [@start, @start + @len) to @ranges, merging it with the last range when they touch. */
static void host_ranges_add(GArray *ranges, uint64_t start, uint64_t len)
{
    if (ranges->len) {
        HostRange *last = &g_array_index(ranges, HostRange, ranges->len - 1);
        if (last->start + last->len == start) {
            last->len += len;
            return;
        }
    }
    HostRange r = {start, len};
    g_array_append_val(ranges, r);
}

/* Passes the discards to the file.  A hint: failures change nothing for the image. */
static void coroutine_fn discard_host_ranges(BlockDriverState *bs, GArray *ranges)
{
    for (guint i = 0; i < ranges->len; i++) {
        HostRange *r = &g_array_index(ranges, HostRange, i);
        bdrv_co_pdiscard(bs->file, r->start, r->len);
    }
}

/*
 * Adds @delta to the refcount of every cluster of [@offset, @offset + @size).
 * Increments create missing refcount blocks.  Clusters that become free are
 * appended to @freed (when not NULL) for the caller to discard.
 */
static int coroutine_fn update_refcount(BlockDriverState *bs, uint64_t offset, uint64_t size,
                                        int64_t delta, GArray *freed)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t first = offset >> s->cluster_bits;
    uint64_t last = (offset + size - 1) >> s->cluster_bits;
    uint64_t block_rt = UINT64_MAX, block_off = 0;
    void *block = NULL;
    int ret = 0;

    if (size == 0) {
        return 0;
    }
    bdrv_debug_event(bs->file, BLKDBG_REFBLOCK_UPDATE);
    for (uint64_t ci = first; ci <= last; ci++) {
        uint64_t rt_index = ci >> s->rb_bits;
        if (rt_index != block_rt) {
            if (block) {
                qcow2_cache_put(s->refblock_cache, &block);
            }
            block_off = refblock_offset(s, rt_index);
            if (!block_off && delta > 0) {
                ret = ensure_refblock(bs, ci);
                if (ret < 0) {
                    break;
                }
                block_off = refblock_offset(s, rt_index);
            }
            if (!block_off) {
                ret = qcow2_signal_corruption(
                    bs, "Freeing cluster 0x%" PRIx64 " that has no refcount block",
                    ci << s->cluster_bits);
                break;
            }
            ret = qcow2_cache_get(bs, s->refblock_cache, block_off, &block);
            if (ret < 0) {
                break;
            }
            block_rt = rt_index;
        }
        uint64_t idx = ci & (s->rb_entries - 1);
        uint64_t rc = qcow2_refblock_get(s, block, idx);
        if (delta < 0 && rc < -(uint64_t)delta) { /* unsigned: delta may be INT64_MIN */
            ret = qcow2_signal_corruption(
                bs, "Refcount of cluster 0x%" PRIx64 " would drop below 0", ci << s->cluster_bits);
            break;
        }
        if (delta > 0 && rc > s->refcount_max - (uint64_t)delta) {
            ret = -ERANGE;
            break;
        }
        rc += delta;
        qcow2_refblock_set(s, block, idx, rc);
        qcow2_cache_mark_dirty(s->refblock_cache, block);
        if (rc == 0) {
            uint64_t coff = ci << s->cluster_bits;
            if (coff == block_off) {
                ret = qcow2_signal_corruption(bs, "Refcount block 0x%" PRIx64 " freed while in use",
                                              coff);
                break;
            }
            if (ci < s->free_cluster_index) {
                s->free_cluster_index = ci;
            }
            if (s->free_byte_offset && (s->free_byte_offset >> s->cluster_bits) == ci) {
                s->free_byte_offset = 0; /* never append compressed data to a reused cluster */
            }
            /* A freed cluster may have held a table: it must never be written back there. */
            qcow2_cache_discard(s->l2_cache, coff);
            qcow2_cache_discard(s->refblock_cache, coff);
            if (freed) {
                host_ranges_add(freed, coff, s->cluster_size);
            }
        }
    }
    if (block) {
        qcow2_cache_put(s->refblock_cache, &block);
    }
    return ret;
}

/* Writes refcount table entry @rt_index (and flushes): the table on disk follows memory. */
static int coroutine_fn write_refcount_table_entry(BlockDriverState *bs, uint64_t rt_index)
{
    BDRVQcow2State *s = bs->opaque;
    uint8_t be[8];
    qcow2_st64(be, s->refcount_table[rt_index]);
    int ret = qcow2_pre_write_check(bs, QCOW2_OL_REFCOUNT_TABLE,
                                    s->refcount_table_offset + rt_index * 8, 8);
    if (ret == 0) {
        ret = bdrv_co_pwrite(bs->file, s->refcount_table_offset + rt_index * 8, 8, be, 0);
    }
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    return ret;
}

/* Makes sure a refcount block covers cluster @cluster_index. */
static int coroutine_fn ensure_refblock(BlockDriverState *bs, uint64_t cluster_index)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t rt_index = cluster_index >> s->rb_bits;
    uint64_t block_off;
    void *block;
    int ret;

    if (refblock_offset(s, rt_index)) {
        return 0;
    }
    bdrv_debug_event(bs->file, BLKDBG_REFBLOCK_ALLOC);
    if (rt_index >= s->refcount_table_size) {
        ret = grow_refcount_table(bs, rt_index + 1);
        if (ret < 0 || refblock_offset(s, rt_index)) {
            return ret;
        }
    }
    for (;;) {
        uint64_t c;
        ret = find_free_run(bs, 1, &c);
        if (ret < 0) {
            return ret;
        }
        uint64_t c_rt = c >> s->rb_bits;
        if (c_rt == rt_index || refblock_offset(s, c_rt)) {
            if (c_rt != rt_index) {
                ret = update_refcount(bs, c << s->cluster_bits, s->cluster_size, 1, NULL);
                if (ret < 0) {
                    return ret;
                }
            }
            block_off = c << s->cluster_bits;
            ret = qcow2_cache_get_empty(bs, s->refblock_cache, block_off, &block);
            if (ret < 0) {
                return ret;
            }
            memset(block, 0, s->cluster_size);
            if (c_rt == rt_index) {
                /* The block describes its own cluster. */
                qcow2_refblock_set(s, block, c & (s->rb_entries - 1), 1);
            }
            qcow2_cache_mark_dirty(s->refblock_cache, block);
            qcow2_cache_put(s->refblock_cache, &block);
            break;
        }
        /* The first free cluster lies in another region without a block: give it one. */
        ret = ensure_refblock(bs, c);
        if (ret < 0) {
            return ret;
        }
    }

    bdrv_debug_event(bs->file, BLKDBG_REFBLOCK_ALLOC_WRITE);
    ret = qcow2_cache_flush(bs, s->refblock_cache);
    if (ret < 0) {
        return ret;
    }
    s->refcount_table[rt_index] = block_off;
    bdrv_debug_event(bs->file, BLKDBG_REFBLOCK_ALLOC_HOOKUP);
    ret = write_refcount_table_entry(bs, rt_index);
    if (ret < 0) {
        s->refcount_table[rt_index] = 0;
        qcow2_cache_discard(s->refblock_cache, block_off);
    } else {
        qcow2_overlap_add(s, QCOW2_OL_REFCOUNT_BLOCK, block_off);
    }
    return ret;
}

/* Region indices in [first, last] (cluster indices) that have no refcount block in @rt. */
static uint64_t count_missing_blocks(BDRVQcow2State *s, const uint64_t *rt, uint64_t rt_size,
                                     uint64_t first, uint64_t last)
{
    uint64_t n = 0;
    for (uint64_t r = first >> s->rb_bits; r <= last >> s->rb_bits; r++) {
        if (r >= rt_size || !rt[r]) {
            n++;
        }
    }
    return n;
}

/*
 * Where a new refcount table of at least @min_entries entries goes: the
 * first free run of *span clusters that holds the table (*tclusters) and
 * the *need blocks for the regions of the run that have none, blocks first.
 */
static int coroutine_fn plan_refcount_table(BlockDriverState *bs, uint64_t min_entries,
                                            uint64_t *new_size, uint64_t *start, uint64_t *span,
                                            uint64_t *need, uint64_t *tclusters)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t per_cluster = s->cluster_size / 8;
    uint64_t size = MAX(min_entries, s->refcount_table_size + s->refcount_table_size / 2);

    for (;;) {
        size = MIN(qcow2_round_up(size, per_cluster), QCOW2_MAX_REFTABLE_BYTES / 8);
        if (size < min_entries) {
            return -EFBIG;
        }
        *tclusters = size / per_cluster;
        /* Blocks take room too: grow the run until it holds the blocks it needs. */
        for (uint64_t k = 0;; k = *need) {
            *span = *tclusters + k;
            int ret = find_free_run(bs, *span, start);
            if (ret < 0) {
                return ret;
            }
            *need = count_missing_blocks(s, s->refcount_table, s->refcount_table_size, *start,
                                         *start + *span - 1);
            if (*need <= k) {
                break;
            }
        }
        /* The new table must cover the run it lies in. */
        uint64_t last_rt = (*start + *span - 1) >> s->rb_bits;
        if (last_rt < size) {
            *new_size = size;
            return 0;
        }
        size = last_rt + 1;
    }
}

/*
 * Replaces the refcount table by one of at least @min_entries entries,
 * laid out by plan_refcount_table: new blocks are built in memory with the
 * refcounts of the run, the table after them.  Both are written and
 * flushed before one header write switches to the new table.
 */
static int coroutine_fn grow_refcount_table(BlockDriverState *bs, uint64_t min_entries)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t new_size, start, span, need, tclusters;
    bdrv_debug_event(bs->file, BLKDBG_REFTABLE_GROW);
    int ret = plan_refcount_table(bs, min_entries, &new_size, &start, &span, &need, &tclusters);
    if (ret < 0) {
        return ret;
    }

    uint64_t *new_rt = g_new0(uint64_t, new_size);
    uint8_t *blocks = need ? g_malloc0(need * s->cluster_size) : NULL;
    uint8_t *table_be = g_malloc0(new_size * 8);
    uint64_t end = start + need + tclusters;
    uint64_t j = 0;

    memcpy(new_rt, s->refcount_table, s->refcount_table_size * 8);
    for (uint64_t r = start >> s->rb_bits; r <= (start + span - 1) >> s->rb_bits; r++) {
        if (!new_rt[r]) {
            new_rt[r] = (start + j++) << s->cluster_bits;
        }
    }
    g_assert(j == need);
    for (uint64_t c = start; c < end; c++) {
        uint64_t r = c >> s->rb_bits;
        uint64_t boff = new_rt[r];
        if (boff >= start << s->cluster_bits && boff < (start + need) << s->cluster_bits) {
            uint8_t *b = blocks + (boff - (start << s->cluster_bits));
            qcow2_refblock_set(s, b, c & (s->rb_entries - 1), 1);
        } else {
            ret = update_refcount(bs, c << s->cluster_bits, s->cluster_size, 1, NULL);
            if (ret < 0) {
                goto out;
            }
        }
    }
    for (uint64_t i = 0; i < new_size; i++) {
        qcow2_st64(table_be + i * 8, new_rt[i]);
    }
    if (need) {
        bdrv_debug_event(bs->file, BLKDBG_REFBLOCK_ALLOC_WRITE_BLOCKS);
        ret = qcow2_pre_write_check(bs, QCOW2_OL_REFCOUNT_BLOCK, start << s->cluster_bits,
                                    need * s->cluster_size);
        if (ret == 0) {
            ret = bdrv_co_pwrite(bs->file, start << s->cluster_bits, need * s->cluster_size, blocks,
                                 0);
        }
        if (ret < 0) {
            goto out;
        }
    }
    bdrv_debug_event(bs->file, BLKDBG_REFBLOCK_ALLOC_WRITE_TABLE);
    ret = qcow2_pre_write_check(bs, QCOW2_OL_REFCOUNT_TABLE, (start + need) << s->cluster_bits,
                                new_size * 8);
    if (ret < 0) {
        goto out;
    }
    ret = bdrv_co_pwrite(bs->file, (start + need) << s->cluster_bits, new_size * 8, table_be, 0);
    if (ret < 0) {
        goto out;
    }
    ret = qcow2_cache_flush(bs, s->refblock_cache);
    if (ret < 0) {
        goto out;
    }

    uint8_t hdr[12];
    qcow2_st64(hdr, (start + need) << s->cluster_bits);
    qcow2_st32(hdr + 8, (uint32_t)tclusters);
    bdrv_debug_event(bs->file, BLKDBG_REFBLOCK_ALLOC_SWITCH_TABLE);
    ret = bdrv_co_pwrite(bs->file, QH_RT_OFFSET, sizeof(hdr), hdr, 0);
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret < 0) {
        goto out;
    }
    memcpy(s->header_raw + QH_RT_OFFSET, hdr, sizeof(hdr));

    uint64_t old_offset = s->refcount_table_offset;
    uint64_t old_bytes = qcow2_round_up(s->refcount_table_size * 8, s->cluster_size);
    g_free(s->refcount_table);
    s->refcount_table = g_steal_pointer(&new_rt);
    s->refcount_table_size = new_size;
    s->refcount_table_offset = (start + need) << s->cluster_bits;
    qcow2_overlap_invalidate(s, QCOW2_OL_REFCOUNT_TABLE | QCOW2_OL_REFCOUNT_BLOCK);
    /* The old table is unreferenced on disk now. */
    ret = qcow2_free_clusters(bs, old_offset, old_bytes, false);
out:
    g_free(new_rt);
    g_free(blocks);
    g_free(table_be);
    return ret;
}

int64_t coroutine_fn qcow2_alloc_clusters(BlockDriverState *bs, uint64_t nb)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t start;
    int ret;

    g_assert(nb > 0);
    bdrv_debug_event(bs->file, BLKDBG_CLUSTER_ALLOC);
    for (;;) {
        ret = find_free_run(bs, nb, &start);
        if (ret < 0) {
            return ret;
        }
        uint64_t missing = UINT64_MAX;
        for (uint64_t r = start >> s->rb_bits; r <= (start + nb - 1) >> s->rb_bits; r++) {
            if (!refblock_offset(s, r)) {
                missing = r;
                break;
            }
        }
        if (missing == UINT64_MAX) {
            break;
        }
        /* Creating the block takes a cluster: what is free may have changed. */
        ret = ensure_refblock(bs, missing << s->rb_bits);
        if (ret < 0) {
            return ret;
        }
    }
    ret = update_refcount(bs, start << s->cluster_bits, nb << s->cluster_bits, 1, NULL);
    if (ret < 0) {
        return ret;
    }
    return (int64_t)(start << s->cluster_bits);
}

int64_t coroutine_fn qcow2_alloc_bytes(BlockDriverState *bs, uint64_t size)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t off = s->free_byte_offset, rc = 0;
    int ret;

    g_assert(size > 0 && size < s->cluster_size);
    if (off) {
        ret = qcow2_get_refcount(bs, off >> s->cluster_bits, &rc);
        if (ret < 0) {
            return ret;
        }
        if (rc == 0 || rc == s->refcount_max) {
            off = 0;
        }
    }
    uint64_t room = off ? s->cluster_size - qcow2_offset_into_cluster(s, off) : 0;
    if (off && room >= size) {
        ret = update_refcount(bs, off, size, 1, NULL);
    } else {
        int64_t fresh = qcow2_alloc_clusters(bs, 1); /* counts the new cluster */
        if (fresh < 0) {
            return fresh;
        }
        if (off && (uint64_t)fresh == qcow2_round_up(off, s->cluster_size)) {
            /* Contiguous: the bytes run on from the old cluster into the new one. */
            ret = update_refcount(bs, off, 1, 1, NULL);
        } else {
            off = fresh;
            ret = 0;
        }
        if (ret < 0) {
            qcow2_free_clusters(bs, fresh, s->cluster_size, false);
            return ret;
        }
    }
    if (ret < 0) {
        return ret;
    }
    s->free_byte_offset = qcow2_offset_into_cluster(s, off + size) ? off + size : 0;
    return (int64_t)off;
}

int coroutine_fn qcow2_update_refcount(BlockDriverState *bs, uint64_t offset, uint64_t size,
                                       int64_t delta)
{
    return update_refcount(bs, offset, size, delta, NULL);
}

uint64_t qcow2_refblock_offset(BDRVQcow2State *s, uint64_t cluster_index)
{
    return refblock_offset(s, cluster_index >> s->rb_bits);
}

int coroutine_fn qcow2_free_clusters(BlockDriverState *bs, uint64_t offset, uint64_t size,
                                     bool discard)
{
    bdrv_debug_event(bs->file, BLKDBG_CLUSTER_FREE);
    if (!discard) {
        return update_refcount(bs, offset, size, -1, NULL);
    }
    GArray *freed = g_array_new(false, false, sizeof(HostRange));
    int ret = update_refcount(bs, offset, size, -1, freed);
    discard_host_ranges(bs, freed);
    g_array_free(freed, true);
    return ret;
}

int coroutine_fn qcow2_free_any_cluster(BlockDriverState *bs, uint64_t l2_entry, bool discard)
{
    BDRVQcow2State *s = bs->opaque;
    if (l2_entry & QCOW2_OFLAG_COMPRESSED) {
        uint64_t off, bytes;
        qcow2_compressed_range(s, l2_entry, &off, &bytes);
        uint64_t start = qcow2_start_of_cluster(s, off);
        /* Each cluster the compressed bytes touch holds one reference for them. */
        return qcow2_free_clusters(bs, start, off + bytes - start, false);
    }
    if (!qcow2_entry_has_host(s, l2_entry) || s->has_data_file) {
        return 0; /* external data clusters are not refcounted */
    }
    return qcow2_free_clusters(bs, l2_entry & L2E_OFFSET_MASK, s->cluster_size, discard);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * Host-contiguous runs cost one refcount pass and one discard each instead
 * of one per cluster: emptying an image after a commit frees thousands of
 * clusters that were mostly allocated one after another.
 */
int coroutine_fn qcow2_free_l2_entries(BlockDriverState *bs, uint64_t *entries, size_t n,
                                       bool discard, bool tables_first)
{
    BDRVQcow2State *s = bs->opaque;
    GArray *freed = discard ? g_array_new(false, false, sizeof(HostRange)) : NULL;
    size_t nhost = 0;
    int ret = 0;

    for (size_t i = 0; i < n && ret == 0; i++) {
        uint64_t e = entries[i];
        if (e & QCOW2_OFLAG_COMPRESSED) {
            ret = qcow2_free_any_cluster(bs, e, false); /* shares clusters: never discarded */
        } else if (qcow2_entry_has_host(s, e) && !s->has_data_file) {
            entries[nhost++] = e & L2E_OFFSET_MASK;
        }
    }
    qsort(entries, nhost, sizeof(*entries), cmp_u64);
    for (size_t i = 0, j; i < nhost && ret == 0; i = j) {
        for (j = i + 1; j < nhost && entries[j] == entries[j - 1] + s->cluster_size; j++) {
        }
        bdrv_debug_event(bs->file, BLKDBG_CLUSTER_FREE);
        ret = update_refcount(bs, entries[i], (uint64_t)(j - i) << s->cluster_bits, -1, freed);
    }
    if (freed && freed->len && tables_first) {
        /* Until the L2 tables are on disk, their old entries may still be read after a crash. */
        int ret2 = qcow2_cache_flush(bs, s->l2_cache);
        if (ret2 < 0) {
            g_array_set_size(freed, 0);
            ret = ret < 0 ? ret : ret2;
        }
    }
    if (freed) {
        discard_host_ranges(bs, freed);
        g_array_free(freed, true);
    }
    return ret;
}
