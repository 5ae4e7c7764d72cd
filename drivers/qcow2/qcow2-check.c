/*
 * qcow2 consistency check and refcount repair.
 *
 * The check recounts every reference the image makes (header, L1 and L2
 * tables of the active state and of every snapshot, data and compressed
 * clusters, the snapshot table, bitmaps, the refcount structure itself),
 * compares the counts with the stored refcounts and checks the COPIED
 * flags of the active tables.  Stored > counted is a leak, stored <
 * counted a corruption.
 *
 * Repair sets each mismatching refcount to the counted value where a
 * refcount block covers the cluster.  When a referenced cluster has no
 * block, the refcount structure is rebuilt instead: new blocks and a new
 * table go after the last referenced cluster, so they cannot land on
 * anything in use, and the header is switched to them in one write.
 *
 * Locking: runs under s->lock with the caches written back first, so the
 * file and memory agree.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "drivers/qcow2/qcow2.h"

typedef struct CheckState {
    BlockDriverState *bs;
    BdrvCheckResult *res;
    uint32_t *refs; /* counted references per cluster (saturating) */
    uint64_t nb;    /* clusters the file covers: the array's length */
    bool unfixable; /* a reference we could not count: no rebuild */
} CheckState;

/* Counts one reference to every cluster of host [@offset, @offset + @bytes). */
static void count_range(void *opaque, uint64_t offset, uint64_t bytes)
{
    CheckState *c = opaque;
    BDRVQcow2State *s = c->bs->opaque;
    if (bytes == 0) {
        return;
    }
    uint64_t first = offset >> s->cluster_bits;
    uint64_t last = (offset + bytes - 1) >> s->cluster_bits;
    for (uint64_t i = first; i <= last; i++) {
        if (i >= c->nb) {
            /* Points past the end of the file: nothing there to count. */
            c->res->corruptions++;
            c->unfixable = true;
            return;
        }
        if (c->refs[i] != UINT32_MAX) {
            c->refs[i]++;
        }
    }
}

/* Counts the references of the L2 table at @l2_off, which maps guest @first_guest on. */
static int coroutine_fn count_l2(CheckState *c, uint64_t l2_off, uint64_t first_guest)
{
    BlockDriverState *bs = c->bs;
    BDRVQcow2State *s = bs->opaque;
    void *table;
    int ret = qcow2_cache_get(bs, s->l2_cache, l2_off, &table);
    if (ret < 0) {
        c->res->check_errors++;
        return ret;
    }
    for (uint64_t i = 0; i < s->l2_entries; i++) {
        uint64_t e = qcow2_l2_entry(s, table, i), bm = qcow2_l2_bitmap(s, table, i);
        uint64_t gc = first_guest + (i << s->cluster_bits);
        if (qcow2_sc_type(s, e, bm, 0) == QCOW2_SC_INVALID) {
            c->res->corruptions++;
            c->unfixable = true;
            continue;
        }
        if (e & QCOW2_OFLAG_COMPRESSED) {
            uint64_t off, bytes;
            qcow2_compressed_range(s, e, &off, &bytes);
            count_range(c, off, bytes);
            c->res->compressed_clusters++;
        } else if (qcow2_entry_has_host(s, e)) {
            uint64_t host = e & L2E_OFFSET_MASK;
            if ((host & (s->cluster_size - 1)) || (s->has_data_file && host != gc)) {
                c->res->corruptions++;
                c->unfixable = true;
                continue;
            }
            if (!s->has_data_file) {
                count_range(c, host, s->cluster_size);
            }
        }
    }
    qcow2_cache_put(s->l2_cache, &table);
    return 0;
}

/* Counts the L2 tables of an L1 table (@l1, @l1_size entries) and everything under them. */
static int coroutine_fn count_l1(CheckState *c, const uint64_t *l1, uint64_t l1_size)
{
    BDRVQcow2State *s = c->bs->opaque;
    for (uint64_t i = 0; i < l1_size; i++) {
        uint64_t off = l1[i] & L1E_OFFSET_MASK;
        if ((l1[i] & L1E_RESERVED_MASK) || (off & (s->cluster_size - 1))) {
            c->res->corruptions++;
            c->unfixable = true;
            continue;
        }
        if (!off) {
            continue;
        }
        count_range(c, off, s->cluster_size);
        if ((off >> s->cluster_bits) >= c->nb) {
            continue;
        }
        int ret = count_l2(c, off, i * qcow2_l2_span(s));
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

static int coroutine_fn count_snapshots(CheckState *c)
{
    BlockDriverState *bs = c->bs;
    BDRVQcow2State *s = bs->opaque;
    if (!s->nb_snapshots) {
        return 0;
    }
    count_range(c, s->snapshots_offset, s->snapshots_size);
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        Qcow2Snapshot *sn = &s->snapshots[i];
        uint64_t n = sn->l1_size;
        if (!n) {
            continue;
        }
        count_range(c, sn->l1_table_offset, n * 8);
        uint8_t *buf = g_malloc(n * 8);
        uint64_t *l1 = g_new(uint64_t, n);
        int ret = bdrv_co_pread(bs->file, sn->l1_table_offset, n * 8, buf, 0);
        for (uint64_t j = 0; j < n; j++) {
            l1[j] = qcow2_ld64(buf + j * 8);
        }
        if (ret == 0) {
            ret = count_l1(c, l1, n);
        } else {
            c->res->check_errors++;
        }
        g_free(buf);
        g_free(l1);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Counts everything but the refcount structure itself. */
static int coroutine_fn count_all_but_refcounts(CheckState *c)
{
    BlockDriverState *bs = c->bs;
    BDRVQcow2State *s = bs->opaque;

    count_range(c, 0, s->cluster_size);
    count_range(c, s->l1_table_offset, (uint64_t)s->l1_size * 8);
    int ret = count_l1(c, s->l1_table, s->l1_size);
    if (ret == 0) {
        ret = count_snapshots(c);
    }
    if (ret == 0) {
        ret = qcow2_bitmaps_foreach_range(bs, count_range, c);
        if (ret < 0) {
            c->res->check_errors++;
        }
    }
    return ret;
}

static void count_refcount_structure(CheckState *c)
{
    BDRVQcow2State *s = c->bs->opaque;
    count_range(c, s->refcount_table_offset, s->refcount_table_size * 8);
    for (uint64_t i = 0; i < s->refcount_table_size; i++) {
        count_range(c, s->refcount_table[i] & RTE_OFFSET_MASK,
                    s->refcount_table[i] ? s->cluster_size : 0);
    }
}

/*
 * Writes a new refcount structure holding @refs (which must not count the
 * old structure) after the last referenced cluster and after the old
 * structure (which stays in use until the switch), and switches to it.
 */
static int coroutine_fn rebuild_refcounts(CheckState *c)
{
    BlockDriverState *bs = c->bs;
    BDRVQcow2State *s = bs->opaque;
    uint64_t end = 1, blocks = 0, tclusters = 1;

    for (uint64_t i = 0; i < c->nb; i++) {
        if (c->refs[i]) {
            end = i + 1;
        }
        if ((uint64_t)c->refs[i] > s->refcount_max) {
            return -ERANGE;
        }
    }
    /* The old structure, where it lies inside the file (its clusters become free). */
    end = MAX(end, MIN(c->nb, qcow2_size_to_clusters(s, s->refcount_table_offset +
                                                            s->refcount_table_size * 8)));
    for (uint64_t i = 0; i < s->refcount_table_size; i++) {
        uint64_t b = (s->refcount_table[i] & RTE_OFFSET_MASK) >> s->cluster_bits;
        if (b && b < c->nb) {
            end = MAX(end, b + 1);
        }
    }
    /* Blocks and table must cover themselves: iterate to a fixed point. */
    for (;;) {
        uint64_t total = end + blocks + tclusters;
        uint64_t nb = (total + s->rb_entries - 1) >> s->rb_bits;
        uint64_t nt = qcow2_round_up(nb * 8, s->cluster_size) >> s->cluster_bits;
        if (nb == blocks && nt == tclusters) {
            break;
        }
        blocks = MAX(blocks, nb);
        tclusters = MAX(tclusters, nt);
    }
    uint64_t total = end + blocks + tclusters;
    uint64_t rt_entries = tclusters * s->cluster_size / 8;
    if (rt_entries * 8 > QCOW2_MAX_REFTABLE_BYTES) {
        return -EFBIG;
    }
    uint8_t *bbuf = g_malloc0(blocks << s->cluster_bits);
    uint8_t *tbuf = g_malloc0(tclusters << s->cluster_bits);
    uint64_t *rt = g_new0(uint64_t, rt_entries);
    for (uint64_t i = 0; i < total; i++) {
        uint64_t v = i < c->nb ? c->refs[i] : 0;
        if (i >= end) {
            v = 1; /* the new blocks and table */
        }
        qcow2_refblock_set(s, bbuf + ((i >> s->rb_bits) << s->cluster_bits),
                           i & (s->rb_entries - 1), v);
    }
    for (uint64_t j = 0; j < blocks; j++) {
        rt[j] = (end + j) << s->cluster_bits;
        qcow2_st64(tbuf + j * 8, rt[j]);
    }
    uint64_t rt_off = (end + blocks) << s->cluster_bits;
    int ret = qcow2_pre_write_check(bs, QCOW2_OL_REFCOUNT_BLOCK, end << s->cluster_bits,
                                    (blocks + tclusters) << s->cluster_bits);
    if (ret == 0) {
        ret = bdrv_co_pwrite(bs->file, end << s->cluster_bits, blocks << s->cluster_bits, bbuf, 0);
    }
    if (ret == 0) {
        ret = bdrv_co_pwrite(bs->file, rt_off, tclusters << s->cluster_bits, tbuf, 0);
    }
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    if (ret == 0) {
        uint8_t hdr[12];
        qcow2_st64(hdr, rt_off);
        qcow2_st32(hdr + 8, (uint32_t)tclusters);
        ret = bdrv_co_pwrite(bs->file, QH_RT_OFFSET, sizeof(hdr), hdr, 0);
        if (ret == 0) {
            ret = bdrv_co_flush(bs->file->bs);
        }
        if (ret == 0) {
            memcpy(s->header_raw + QH_RT_OFFSET, hdr, sizeof(hdr));
        }
    }
    g_free(bbuf);
    g_free(tbuf);
    if (ret < 0) {
        g_free(rt);
        return ret;
    }
    qcow2_cache_clear(s->refblock_cache);
    g_free(s->refcount_table);
    s->refcount_table = rt;
    s->refcount_table_size = rt_entries;
    s->refcount_table_offset = rt_off;
    s->free_cluster_index = 0;
    qcow2_overlap_invalidate(s, QCOW2_OL_REFCOUNT_TABLE | QCOW2_OL_REFCOUNT_BLOCK);
    return 0;
}

/* Compares stored refcounts with @c->refs; fixes what @fix allows in place. */
static int coroutine_fn compare_refcounts(CheckState *c, BdrvCheckMode fix, bool *need_rebuild)
{
    BlockDriverState *bs = c->bs;
    BDRVQcow2State *s = bs->opaque;
    uint64_t covered = s->refcount_table_size << s->rb_bits;
    uint64_t limit = MAX(c->nb, MIN(covered, c->nb + s->rb_entries));

    *need_rebuild = false;
    for (uint64_t i = 0; i < limit; i++) {
        uint64_t stored, counted = i < c->nb ? c->refs[i] : 0;
        int ret = qcow2_get_refcount(bs, i, &stored);
        if (ret < 0) {
            c->res->check_errors++;
            return ret;
        }
        if (stored == counted) {
            continue;
        }
        bool leak = stored > counted;
        bool may_fix = leak ? (fix & BDRV_FIX_LEAKS) : (fix & BDRV_FIX_ERRORS);
        if (may_fix && !qcow2_refblock_offset(s, i)) {
            *need_rebuild = true;
        } else if (may_fix && counted <= s->refcount_max) {
            /* A 64-bit refcount can be off by more than an int64_t delta holds: steps. */
            uint64_t diff = leak ? stored - counted : counted - stored;
            for (ret = 0; diff && ret == 0;) {
                uint64_t step = MIN(diff, (uint64_t)INT64_MAX);
                ret = qcow2_update_refcount(bs, i << s->cluster_bits, s->cluster_size,
                                            leak ? -(int64_t)step : (int64_t)step);
                diff -= step;
            }
            if (ret == 0) {
                (*(leak ? &c->res->leaks_fixed : &c->res->corruptions_fixed))++;
                continue;
            }
        }
        (*(leak ? &c->res->leaks : &c->res->corruptions))++;
    }
    return 0;
}

/* Checks (and with BDRV_FIX_ERRORS sets) the COPIED flags of the active tables. */
static int coroutine_fn check_copied_flags(CheckState *c, BdrvCheckMode fix)
{
    BlockDriverState *bs = c->bs;
    BDRVQcow2State *s = bs->opaque;
    for (uint64_t i = 0; i < s->l1_size; i++) {
        uint64_t l2 = s->l1_table[i] & L1E_OFFSET_MASK, rc;
        if (!l2 || (s->l1_table[i] & L1E_RESERVED_MASK) || (l2 & (s->cluster_size - 1)) ||
            (l2 >> s->cluster_bits) >= c->nb) {
            continue;
        }
        int ret = qcow2_get_refcount(bs, l2 >> s->cluster_bits, &rc);
        if (ret < 0) {
            return ret;
        }
        if ((rc == 1) != !!(s->l1_table[i] & QCOW2_OFLAG_COPIED)) {
            if (fix & BDRV_FIX_ERRORS) {
                s->l1_table[i] = l2 | (rc == 1 ? QCOW2_OFLAG_COPIED : 0);
                ret = qcow2_write_l1_entry(bs, i);
                if (ret < 0) {
                    return ret;
                }
                c->res->corruptions_fixed++;
            } else {
                c->res->corruptions++;
            }
        }
        void *table;
        ret = qcow2_cache_get(bs, s->l2_cache, l2, &table);
        if (ret < 0) {
            return ret;
        }
        for (uint64_t j = 0; j < s->l2_entries; j++) {
            uint64_t e = qcow2_l2_entry(s, table, j);
            if (!qcow2_entry_has_host(s, e) || s->has_data_file ||
                qcow2_sc_type(s, e, qcow2_l2_bitmap(s, table, j), 0) == QCOW2_SC_INVALID ||
                ((e & L2E_OFFSET_MASK) >> s->cluster_bits) >= c->nb) {
                continue;
            }
            ret = qcow2_get_refcount(bs, (e & L2E_OFFSET_MASK) >> s->cluster_bits, &rc);
            if (ret < 0) {
                break;
            }
            if ((rc == 1) != !!(e & QCOW2_OFLAG_COPIED)) {
                if ((fix & BDRV_FIX_ERRORS) && (s->l1_table[i] & QCOW2_OFLAG_COPIED)) {
                    qcow2_set_l2_entry(s, table, j,
                                       (e & ~QCOW2_OFLAG_COPIED) |
                                           (rc == 1 ? QCOW2_OFLAG_COPIED : 0));
                    qcow2_cache_mark_dirty(s->l2_cache, table);
                    c->res->corruptions_fixed++;
                } else {
                    c->res->corruptions++;
                }
            }
        }
        qcow2_cache_put(s->l2_cache, &table);
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Fills the statistics of the active state. */
static void fill_stats(CheckState *c)
{
    BDRVQcow2State *s = c->bs->opaque;
    uint64_t last = 0;
    for (uint64_t i = 0; i < c->nb; i++) {
        if (c->refs[i]) {
            last = i + 1;
        }
    }
    c->res->image_end_offset = (int64_t)(last << s->cluster_bits);
    c->res->total_clusters = (int64_t)qcow2_size_to_clusters(s, s->size);
}

/* Data clusters the active L1 maps (for the statistics). */
static int coroutine_fn count_allocated(CheckState *c)
{
    BlockDriverState *bs = c->bs;
    BDRVQcow2State *s = bs->opaque;
    for (uint64_t g = 0; g < s->size;) {
        uint64_t n = s->size - g, host;
        int type = qcow2_get_host_offset(bs, g, &n, &host);
        if (type < 0) {
            return type;
        }
        if (type == QCOW2_SC_NORMAL || type == QCOW2_SC_COMPRESSED || type == QCOW2_SC_ZERO_ALLOC) {
            c->res->allocated_clusters +=
                (qcow2_round_up(g + n, s->cluster_size) - qcow2_start_of_cluster(s, g)) >>
                s->cluster_bits;
        }
        g += n;
    }
    return 0;
}

int coroutine_fn qcow2_check_refcounts(BlockDriverState *bs, BdrvCheckResult *res,
                                       BdrvCheckMode fix)
{
    BDRVQcow2State *s = bs->opaque;
    CheckState c = {.bs = bs, .res = res};
    bool rebuild;
    int ret;

    memset(res, 0, sizeof(*res));
    ret = qcow2_cache_write(bs, s->l2_cache);
    if (ret == 0) {
        ret = qcow2_cache_write(bs, s->refblock_cache);
    }
    int64_t len = ret < 0 ? ret : bdrv_co_getlength(bs->file->bs);
    if (len < 0) {
        res->check_errors++;
        return (int)len;
    }
    c.nb = qcow2_size_to_clusters(s, len);
    c.refs = g_new0(uint32_t, c.nb + 1);

    ret = count_all_but_refcounts(&c);
    if (ret < 0) {
        goto out;
    }
    uint32_t *base = g_memdup2(c.refs, c.nb * sizeof(uint32_t));
    count_refcount_structure(&c);
    ret = compare_refcounts(&c, fix, &rebuild);
    if (ret == 0 && rebuild && !c.unfixable) {
        /* Missing refcount blocks: start over from a structure built from the counts. */
        memcpy(c.refs, base, c.nb * sizeof(uint32_t));
        ret = rebuild_refcounts(&c);
        if (ret == 0) {
            uint64_t fixed = res->corruptions_fixed, leaks_fixed = res->leaks_fixed;
            res->corruptions = res->leaks = 0;
            g_free(c.refs);
            len = bdrv_co_getlength(bs->file->bs);
            c.nb = qcow2_size_to_clusters(s, MAX(len, 0));
            c.refs = g_new0(uint32_t, c.nb + 1);
            ret = count_all_but_refcounts(&c);
            if (ret == 0) {
                count_refcount_structure(&c);
                ret = compare_refcounts(&c, 0, &rebuild);
            }
            res->corruptions_fixed = fixed + 1;
            res->leaks_fixed = leaks_fixed;
        }
    } else if (rebuild) {
        res->corruptions++;
    }
    g_free(base);
    if (ret == 0) {
        ret = check_copied_flags(&c, fix);
    }
    if (ret == 0) {
        ret = count_allocated(&c);
    }
    fill_stats(&c);
out:
    g_free(c.refs);
    return ret;
}
