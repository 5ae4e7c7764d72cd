/*
 * qcow2 amend (BlockDriver.amend, behind strata-img amend): changes the
 * creation options of an open image in place.  Amendable: compat (0.10
 * <-> 1.1), lazy_refcounts, refcount_bits, size, data_file and
 * data_file_raw of an image that has an external data file; backing_file
 * and backing_fmt only to what they already are (qemu-img 7.2 sends the
 * user to rebase for a real change).
 *
 * The steps run in the order qemu-img 7.2 runs them, so that a failure
 * halfway leaves the image as qemu-img would: upgrade, refcount width,
 * header rewrite, backing check, lazy refcounts, resize, and the
 * downgrade last (earlier steps may remove what v2 cannot hold).
 *
 * Write ordering (crash safety): a new refcount structure is written and
 * flushed before the header points at it, and the old one is freed only
 * afterwards, so a crash leaves either the old or the new structure whole
 * (at worst leaked clusters).  A downgrade makes the image clean and
 * turns zero clusters into something v2 can read (data made stable
 * before the L2 tables that point at it) before the header says v2.
 *
 * Locking: main loop, node drained; every step but the resize runs in a
 * coroutine under s->lock (the resize goes through co_truncate, which
 * takes the lock itself).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "drivers/qcow2/qcow2.h"

/* What the options ask for; fields not given hold the image's current values. */
typedef struct AmendReq {
    int version;
    bool lazy;
    int refcount_bits;
    const char *backing_file, *backing_fmt; /* NULL: not given */
    const char *data_file;                  /* NULL: not given */
    bool data_file_raw;
    uint64_t size; /* 0: unchanged */
} AmendReq;

typedef struct AmendCo {
    BlockDriverState *bs;
    AmendReq *r;
    GError **errp;
    int ret;
} AmendCo;

static int amend_fail(GError **errp, int ret, const char *what)
{
    g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret), "%s: %s", what,
                g_strerror(-ret));
    return ret;
}

static bool amend_bool(const char *v)
{
    return v && !strcmp(v, "on");
}

/* Reads the options into @r, checking each in qemu-img's order. */
static bool amend_parse(BlockDriverState *bs, GHashTable *opts, AmendReq *r, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    GHashTableIter it;
    gpointer key, val;
    const char *v;

    *r = (AmendReq){
        .version = s->version,
        .lazy = s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS,
        .refcount_bits = s->refcount_bits,
        .data_file_raw = s->data_file_raw,
    };
    g_hash_table_iter_init(&it, opts);
    while (g_hash_table_iter_next(&it, &key, &val)) {
        static const char *const known[] = {"size",           "compat",       "backing_file",
                                            "backing_fmt",    "data_file",    "data_file_raw",
                                            "lazy_refcounts", "refcount_bits"};
        bool ok = g_str_has_prefix(key, "encrypt.");
        for (size_t i = 0; i < G_N_ELEMENTS(known); i++) {
            ok |= !strcmp(key, known[i]);
        }
        if (!ok) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "Invalid parameter '%s'",
                        (char *)key);
            return false;
        }
    }
    if ((v = g_hash_table_lookup(opts, "size"))) {
        r->size = g_ascii_strtoull(v, NULL, 10);
    }
    if ((v = g_hash_table_lookup(opts, "compat"))) {
        if (!strcmp(v, "0.10") || !strcmp(v, "v2")) {
            r->version = 2;
        } else if (!strcmp(v, "1.1") || !strcmp(v, "v3")) {
            r->version = 3;
        } else {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "Unknown compatibility level %s",
                        v);
            return false;
        }
    }
    r->backing_file = g_hash_table_lookup(opts, "backing_file");
    r->backing_fmt = g_hash_table_lookup(opts, "backing_fmt");
    if ((r->data_file = g_hash_table_lookup(opts, "data_file")) && !s->has_data_file) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "data-file can only be set for images that use an external data file");
        return false;
    }
    if ((v = g_hash_table_lookup(opts, "data_file_raw"))) {
        r->data_file_raw = amend_bool(v);
        if (r->data_file_raw && !s->data_file_raw) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "data-file-raw cannot be set on existing images");
            return false;
        }
    }
    if ((v = g_hash_table_lookup(opts, "lazy_refcounts"))) {
        r->lazy = amend_bool(v);
    }
    if ((v = g_hash_table_lookup(opts, "refcount_bits"))) {
        long long bits = g_ascii_strtoll(v, NULL, 10);
        if (bits <= 0 || bits > 64 || (bits & (bits - 1))) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Refcount width must be a power of two and may not exceed 64 bits");
            return false;
        }
        r->refcount_bits = (int)bits;
    }
    g_hash_table_iter_init(&it, opts);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        if (g_str_has_prefix(key, "encrypt.")) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Can't amend encryption options - encryption not present");
            return false;
        }
    }
    return true;
}

/* ---- version and lazy refcounts ------------------------------------------------------------ */

/* Writes the v3 header fields (all features off, zlib, 16-bit refcounts as v2 had). */
static int coroutine_fn amend_upgrade_co(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint32_t old_len = s->header_length;

    /* In a v2 header these bytes held extensions: the new fields must start from zero. */
    memset(s->header_raw + QCOW2_V2_HEADER_LENGTH, 0,
           QCOW2_NEW_HEADER_LENGTH - QCOW2_V2_HEADER_LENGTH);
    s->version = 3;
    s->header_length = QCOW2_NEW_HEADER_LENGTH;
    s->incompat = s->compat = s->autoclear = 0;
    s->compression_type = QCOW2_COMPRESSION_ZLIB;
    int ret = qcow2_update_header(bs);
    if (ret < 0) {
        s->version = 2;
        s->header_length = old_len;
        return amend_fail(errp, ret, "Failed to update the image header");
    }
    return 0;
}

/* Writes back both caches and clears the dirty bit: refcounts are exact on disk. */
static int coroutine_fn amend_mark_clean_co(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = qcow2_cache_flush(bs, s->l2_cache);
    if (ret == 0) {
        ret = qcow2_cache_flush(bs, s->refblock_cache);
    }
    if (ret == 0 && s->version >= 3 && (s->incompat & QCOW2_INCOMPAT_DIRTY)) {
        ret = qcow2_write_incompat(bs, s->incompat & ~QCOW2_INCOMPAT_DIRTY);
    }
    if (ret == 0) {
        s->dirty_marked = false;
        s->first_write_done = false;
    }
    return ret;
}

static int coroutine_fn amend_lazy_co(BlockDriverState *bs, const AmendReq *r, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    bool cur = s->compat & QCOW2_COMPAT_LAZY_REFCOUNTS;
    int ret;

    if (r->lazy == cur) {
        return 0;
    }
    if (r->lazy && r->version < 3) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Lazy refcounts only supported with compatibility level 1.1 and above (use "
                    "compat=1.1 or greater)");
        return -EINVAL;
    }
    if (!r->lazy && (ret = amend_mark_clean_co(bs)) < 0) {
        return amend_fail(errp, ret, "Failed to make the image clean");
    }
    s->compat ^= QCOW2_COMPAT_LAZY_REFCOUNTS;
    ret = qcow2_update_header(bs);
    if (ret < 0) {
        s->compat ^= QCOW2_COMPAT_LAZY_REFCOUNTS;
        return amend_fail(errp, ret, "Failed to update the image header");
    }
    s->lazy_refcounts = r->lazy;
    /* With lazy refcounts the next write must set the dirty bit again. */
    s->first_write_done = false;
    return 0;
}

/* ---- refcount width ---------------------------------------------------------------------- */

/* Stores @v as entry @i of a refcount block of width 2^@order bits. */
static void amend_rb_set(int order, uint8_t *b, uint64_t i, uint64_t v)
{
    if (order < 3) {
        int bits = 1 << order, per_byte = 8 >> order;
        int shift = (int)(i % per_byte) * bits;
        b[i / per_byte] |= (uint8_t)(v << shift);
    } else if (order == 3) {
        b[i] = (uint8_t)v;
    } else if (order == 4) {
        qcow2_st16(b + i * 2, (uint16_t)v);
    } else if (order == 5) {
        qcow2_st32(b + i * 4, (uint32_t)v);
    } else {
        qcow2_st64(b + i * 8, v);
    }
}

/* Every refcount of the image, from the (flushed) refcount structure: *rc[*n], caller frees. */
static int coroutine_fn amend_read_refcounts_co(BlockDriverState *bs, uint64_t **rc, uint64_t *n)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t used = 0;
    for (uint64_t i = 0; i < s->refcount_table_size; i++) {
        used = (s->refcount_table[i] & RTE_OFFSET_MASK) ? i + 1 : used;
    }
    uint64_t *a = g_try_new0(uint64_t, MAX(used * s->rb_entries, 1));
    if (!a) {
        return -ENOMEM;
    }
    *n = 0;
    for (uint64_t i = 0; i < used; i++) {
        uint64_t off = s->refcount_table[i] & RTE_OFFSET_MASK;
        void *block;
        if (!off) {
            continue;
        }
        int ret = qcow2_cache_get(bs, s->refblock_cache, off, &block);
        if (ret < 0) {
            g_free(a);
            return ret;
        }
        for (uint64_t j = 0; j < s->rb_entries; j++) {
            uint64_t v = qcow2_refblock_get(s, block, j);
            a[i * s->rb_entries + j] = v;
            *n = v ? i * s->rb_entries + j + 1 : *n;
        }
        qcow2_cache_put(s->refblock_cache, &block);
    }
    *rc = a;
    return 0;
}

/* The new structure: @nb_rb refcount blocks from cluster @start, then @nb_rt table clusters. */
typedef struct NewRefcounts {
    int order;
    uint64_t start, nb_rb, nb_rt;
    uint8_t *blocks;
    uint64_t *table; /* host order */
} NewRefcounts;

/* Lays out and fills the new structure for refcounts @rc[@n] (the new clusters count 1). */
static void amend_build_refcounts(BDRVQcow2State *s, const uint64_t *rc, uint64_t n,
                                  NewRefcounts *nr)
{
    uint64_t per_rb = 1ULL << (s->cluster_bits + 3 - nr->order);
    uint64_t per_rt = s->cluster_size / 8;

    nr->start = MAX(n, 1);
    nr->nb_rb = nr->nb_rt = 0;
    for (;;) {
        uint64_t total = nr->start + nr->nb_rb + nr->nb_rt;
        uint64_t rb = (total + per_rb - 1) / per_rb, rt = (rb + per_rt - 1) / per_rt;
        if (rb == nr->nb_rb && rt == nr->nb_rt) {
            break;
        }
        nr->nb_rb = rb;
        nr->nb_rt = rt;
    }
    uint64_t total = nr->start + nr->nb_rb + nr->nb_rt;
    nr->blocks = g_malloc0(nr->nb_rb << s->cluster_bits);
    nr->table = g_malloc0(nr->nb_rt << s->cluster_bits);
    for (uint64_t i = 0; i < total; i++) {
        amend_rb_set(nr->order, nr->blocks, i, i < n ? rc[i] : i >= nr->start);
    }
    for (uint64_t j = 0; j < nr->nb_rb; j++) {
        nr->table[j] = (nr->start + j) << s->cluster_bits;
    }
}

/* Writes @nr and flushes it: stable before anything points at it. */
static int coroutine_fn amend_write_refcounts_co(BlockDriverState *bs, NewRefcounts *nr)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t rt_bytes = nr->nb_rt << s->cluster_bits;
    g_autofree uint8_t *be = g_malloc(rt_bytes);

    for (uint64_t j = 0; j < rt_bytes / 8; j++) {
        qcow2_st64(be + j * 8, nr->table[j]);
    }
    int ret = bdrv_co_pwrite(bs->file, nr->start << s->cluster_bits, nr->nb_rb << s->cluster_bits,
                             nr->blocks, 0);
    if (ret == 0) {
        ret = bdrv_co_pwrite(bs->file, (nr->start + nr->nb_rb) << s->cluster_bits, rt_bytes, be, 0);
    }
    return ret == 0 ? bdrv_co_flush(bs->file->bs) : ret;
}

/* Points the state at the refcount structure of width 2^@order at @table_offset. */
static void amend_set_refcount_state(BDRVQcow2State *s, int order, uint64_t *table,
                                     uint64_t table_size, uint64_t table_offset)
{
    s->refcount_order = order;
    s->refcount_bits = 1 << order;
    s->refcount_max = s->refcount_bits == 64 ? UINT64_MAX : (1ULL << s->refcount_bits) - 1;
    s->rb_bits = s->cluster_bits + 3 - order;
    s->rb_entries = 1ULL << s->rb_bits;
    s->refcount_table = table;
    s->refcount_table_size = table_size;
    s->refcount_table_offset = table_offset;
    s->free_cluster_index = 0;
    qcow2_cache_clear(s->refblock_cache);
    qcow2_overlap_invalidate(s, QCOW2_OL_REFCOUNT_TABLE | QCOW2_OL_REFCOUNT_BLOCK);
}

/* Frees the old structure through the new one. */
static int coroutine_fn amend_free_old_co(BlockDriverState *bs, uint64_t *table, uint64_t size,
                                          uint64_t offset)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = 0;
    for (uint64_t i = 0; i < size && ret == 0; i++) {
        if (table[i] & RTE_OFFSET_MASK) {
            ret = qcow2_free_clusters(bs, table[i] & RTE_OFFSET_MASK, s->cluster_size, false);
        }
    }
    if (ret == 0) {
        ret = qcow2_free_clusters(bs, offset, qcow2_round_up(size * 8, s->cluster_size), false);
    }
    return ret == 0 ? qcow2_cache_flush(bs, s->refblock_cache) : ret;
}

static int coroutine_fn amend_refcount_order_co(BlockDriverState *bs, int bits, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    NewRefcounts nr = {.order = __builtin_ctz(bits)};
    uint64_t max = bits == 64 ? UINT64_MAX : (1ULL << bits) - 1;
    g_autofree uint64_t *rc = NULL;
    uint64_t n = 0;

    int ret = amend_mark_clean_co(bs);
    if (ret == 0) {
        ret = amend_read_refcounts_co(bs, &rc, &n);
    }
    if (ret < 0) {
        return amend_fail(errp, ret, "Failed to read the refcounts");
    }
    for (uint64_t i = 0; i < n; i++) {
        if (rc[i] > max) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Cannot decrease refcount entry width to %i bits: Cluster at offset "
                        "%#" PRIx64 " has a refcount of %" PRIu64,
                        bits, i << s->cluster_bits, rc[i]);
            return -EINVAL;
        }
    }
    amend_build_refcounts(s, rc, n, &nr);
    g_autofree uint8_t *blocks = nr.blocks;
    if ((nr.nb_rt << s->cluster_bits) > QCOW2_MAX_REFTABLE_BYTES) {
        g_free(nr.table);
        return amend_fail(errp, -EFBIG, "Failed to allocate the new refcount structure");
    }
    ret = qcow2_pre_write_check(bs, QCOW2_OL_REFCOUNT_BLOCK | QCOW2_OL_REFCOUNT_TABLE,
                                nr.start << s->cluster_bits,
                                (nr.nb_rb + nr.nb_rt) << s->cluster_bits);
    if (ret == 0) {
        ret = amend_write_refcounts_co(bs, &nr);
    }
    if (ret < 0) {
        g_free(nr.table);
        return amend_fail(errp, ret, "Failed to write the new refcount structure");
    }

    /* Switch: the header is the commit point; on failure the new clusters were never counted. */
    int old_order = s->refcount_order;
    uint64_t *old_table = s->refcount_table, old_size = s->refcount_table_size;
    uint64_t old_offset = s->refcount_table_offset;
    amend_set_refcount_state(s, nr.order, nr.table, (nr.nb_rt << s->cluster_bits) / 8,
                             (nr.start + nr.nb_rb) << s->cluster_bits);
    ret = qcow2_update_header(bs);
    if (ret < 0) {
        amend_set_refcount_state(s, old_order, old_table, old_size, old_offset);
        g_free(nr.table);
        return amend_fail(errp, ret, "Failed to update the image header");
    }
    ret = amend_free_old_co(bs, old_table, old_size, old_offset);
    g_free(old_table);
    if (ret < 0) {
        /* The image is consistent, only the old clusters leak. */
        return amend_fail(errp, ret, "Failed to free the old refcount structure");
    }
    return 0;
}

/* ---- downgrade ----------------------------------------------------------------------------- */

/*
 * Rewrites the zero clusters of one L2 table (referenced @l2_refs times)
 * for v2, which has no zero flag: unallocated without a backing file,
 * else a zeroed data cluster.
 */
static int coroutine_fn amend_expand_l2_co(BlockDriverState *bs, uint64_t l2_offset,
                                           uint64_t l2_refs)
{
    BDRVQcow2State *s = bs->opaque;
    void *l2;
    int ret = qcow2_cache_get(bs, s->l2_cache, l2_offset, &l2);
    if (ret < 0) {
        return ret;
    }
    for (uint64_t i = 0; i < s->l2_entries && ret == 0; i++) {
        uint64_t e = qcow2_l2_entry(s, l2, i);
        Qcow2SubclusterType t = qcow2_sc_type(s, e, 0, 0);
        uint64_t host = e & L2E_OFFSET_MASK;

        if (t == QCOW2_SC_ZERO_PLAIN && !bs->backing_file) {
            e = 0;
        } else if (t == QCOW2_SC_ZERO_PLAIN) {
            int64_t off = qcow2_alloc_clusters(bs, 1);
            ret = off < 0 ? (int)off : 0;
            if (ret == 0 && l2_refs > 1) {
                ret = qcow2_update_refcount(bs, off, s->cluster_size, (int64_t)l2_refs - 1);
            }
            host = (uint64_t)off;
            e = host | (l2_refs == 1 ? QCOW2_OFLAG_COPIED : 0);
        } else if (t == QCOW2_SC_ZERO_ALLOC) {
            e &= ~QCOW2_OFLAG_ZERO;
        } else {
            continue;
        }
        if (ret == 0 && t != QCOW2_SC_ZERO_PLAIN) {
            ret = qcow2_pre_write_check(bs, QCOW2_OL_DATA, host, s->cluster_size);
        }
        if (ret == 0 && host) {
            ret = bdrv_co_pwrite_zeroes(s->data_file, host, s->cluster_size, 0);
        }
        if (ret == 0) {
            /* The table may reach the file only after the zeroes and the refcount are stable. */
            ret = qcow2_cache_set_dependency(bs, s->l2_cache, s->refblock_cache);
            qcow2_cache_depends_on_flush(s->l2_cache);
        }
        if (ret == 0) {
            qcow2_set_l2_entry(s, l2, i, e);
            qcow2_cache_mark_dirty(s->l2_cache, l2);
        }
    }
    qcow2_cache_put(s->l2_cache, &l2);
    return ret;
}

/* Expands the zero clusters of an L1 table of @l1_size entries (host order). */
static int coroutine_fn amend_expand_l1_co(BlockDriverState *bs, const uint64_t *l1,
                                           uint32_t l1_size)
{
    for (uint32_t i = 0; i < l1_size; i++) {
        uint64_t off = l1[i] & L1E_OFFSET_MASK, refs;
        if (!off) {
            continue;
        }
        int ret =
            qcow2_get_refcount(bs, off >> ((BDRVQcow2State *)bs->opaque)->cluster_bits, &refs);
        if (ret == 0) {
            ret = amend_expand_l2_co(bs, off, MAX(refs, 1));
        }
        if (ret < 0) {
            return ret;
        }
    }
    return 0;
}

/* Zero clusters of the active disk and of every snapshot, then everything made stable. */
static int coroutine_fn amend_expand_zero_co(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = amend_expand_l1_co(bs, s->l1_table, s->l1_size);
    for (uint32_t k = 0; k < s->nb_snapshots && ret == 0; k++) {
        Qcow2Snapshot *sn = &s->snapshots[k];
        g_autofree uint8_t *raw = g_malloc((size_t)sn->l1_size * 8 + 1);
        g_autofree uint64_t *l1 = g_new(uint64_t, sn->l1_size + 1);
        ret = bdrv_co_pread(bs->file, sn->l1_table_offset, (int64_t)sn->l1_size * 8, raw, 0);
        for (uint32_t i = 0; i < sn->l1_size && ret == 0; i++) {
            l1[i] = qcow2_ld64(raw + i * 8);
        }
        if (ret == 0) {
            ret = amend_expand_l1_co(bs, l1, sn->l1_size);
        }
    }
    /* Refcounts first: no L2 entry may name a cluster whose refcount is not on disk yet. */
    if (ret == 0) {
        ret = qcow2_cache_flush(bs, s->refblock_cache);
    }
    return ret == 0 ? qcow2_cache_flush(bs, s->l2_cache) : ret;
}

/* 1 when the active disk has compressed clusters, 0 when not, or -errno. */
static int coroutine_fn amend_has_compressed_co(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    for (uint64_t off = 0; off < s->size;) {
        uint64_t bytes = s->size - off, host;
        int t = qcow2_get_host_offset(bs, off, &bytes, &host);
        if (t < 0 || t == QCOW2_SC_COMPRESSED) {
            return t < 0 ? t : 1;
        }
        off += bytes;
    }
    return 0;
}

#define AMEND_REFUSE(errp, ...)                                                                    \
    do {                                                                                           \
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS, __VA_ARGS__);                          \
        return -ENOTSUP;                                                                           \
    } while (0)

static int coroutine_fn amend_downgrade_co(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int ret;

    if (s->refcount_order != 4) {
        AMEND_REFUSE(errp, "compat=0.10 requires refcount_bits=16");
    }
    if (s->has_data_file) {
        AMEND_REFUSE(errp, "Cannot downgrade an image with a data file");
    }
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        /* v2 readers would not know that these optional fields matter. */
        if (s->snapshots[i].vm_state_size > UINT32_MAX || s->snapshots[i].disk_size != s->size) {
            AMEND_REFUSE(errp, "Internal snapshots prevent downgrade of image");
        }
    }
    if ((s->incompat & QCOW2_INCOMPAT_DIRTY) && (ret = amend_mark_clean_co(bs)) < 0) {
        return amend_fail(errp, ret, "Failed to make the image clean");
    }
    uint64_t left = s->incompat & ~(QCOW2_INCOMPAT_COMPRESSION | QCOW2_INCOMPAT_DIRTY);
    if (left) {
        AMEND_REFUSE(errp, "Cannot downgrade an image with incompatible features 0x%" PRIx64 " set",
                     left);
    }
    /* Compatible and autoclear features are simply dropped (lazy refcounts are settled). */
    s->compat = 0;
    s->autoclear = 0;
    ret = amend_expand_zero_co(bs);
    if (ret < 0) {
        return amend_fail(errp, ret, "Failed to turn zero into data clusters");
    }
    if (s->incompat & QCOW2_INCOMPAT_COMPRESSION) {
        ret = amend_has_compressed_co(bs);
        if (ret < 0) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "Failed to check block status");
            return -EINVAL;
        }
        if (ret) {
            AMEND_REFUSE(errp, "Cannot downgrade an image with zstd compression type and "
                               "existing compressed clusters");
        }
        s->incompat &= ~QCOW2_INCOMPAT_COMPRESSION;
        s->compression_type = QCOW2_COMPRESSION_ZLIB;
    }
    uint32_t old_len = s->header_length;
    s->version = 2;
    s->header_length = QCOW2_V2_HEADER_LENGTH;
    ret = qcow2_update_header(bs);
    if (ret < 0) {
        s->version = 3;
        s->header_length = old_len;
        return amend_fail(errp, ret, "Failed to update the image header");
    }
    s->lazy_refcounts = false;
    return 0;
}

/* ---- the steps ----------------------------------------------------------------------------- */

/* Everything before the resize. */
static int coroutine_fn amend_first_co(BlockDriverState *bs, const AmendReq *r, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = 0;

    if (r->version > s->version && (ret = amend_upgrade_co(bs, errp)) < 0) {
        return ret;
    }
    if (r->refcount_bits != s->refcount_bits) {
        if (r->version < 3 && r->refcount_bits != 16) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Refcount widths other than 16 bits require compatibility level 1.1 or "
                        "above (use compat=1.1 or greater)");
            return -EINVAL;
        }
        if ((ret = amend_refcount_order_co(bs, r->refcount_bits, errp)) < 0) {
            return ret;
        }
    }
    if (r->data_file_raw != s->data_file_raw) {
        s->data_file_raw = r->data_file_raw;
        s->autoclear ^= QCOW2_AUTOCLEAR_DATA_FILE_RAW;
    }
    if (r->data_file) {
        g_free(s->data_file_name);
        s->data_file_name = *r->data_file ? g_strdup(r->data_file) : NULL;
    }
    if ((ret = qcow2_update_header(bs)) < 0) {
        return amend_fail(errp, ret, "Failed to update the image header");
    }
    if ((r->backing_file || r->backing_fmt) && (g_strcmp0(r->backing_file, bs->backing_file) ||
                                                g_strcmp0(r->backing_fmt, s->backing_format))) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "Cannot amend the backing file");
        return -EINVAL;
    }
    return amend_lazy_co(bs, r, errp);
}

static void coroutine_fn amend_first_entry(void *opaque)
{
    AmendCo *c = opaque;
    BDRVQcow2State *s = c->bs->opaque;
    GRAPH_RDLOCK_GUARD();
    co_mutex_lock(&s->lock);
    c->ret = amend_first_co(c->bs, c->r, c->errp);
    co_mutex_unlock(&s->lock);
}

static void coroutine_fn amend_resize_entry(void *opaque)
{
    AmendCo *c = opaque;
    GRAPH_RDLOCK_GUARD();
    c->ret =
        c->bs->drv->co_truncate(c->bs, (int64_t)c->r->size, true, PREALLOC_MODE_OFF, 0, c->errp);
    /* The cached length must be read again, as after any truncate. */
    atomic_store(&c->bs->total_bytes, -1);
    bdrv_co_getlength(c->bs);
}

static void coroutine_fn amend_downgrade_entry(void *opaque)
{
    AmendCo *c = opaque;
    BDRVQcow2State *s = c->bs->opaque;
    GRAPH_RDLOCK_GUARD();
    co_mutex_lock(&s->lock);
    c->ret = amend_downgrade_co(c->bs, c->errp);
    co_mutex_unlock(&s->lock);
}

bool qcow2_amend(BlockDriverState *bs, GHashTable *opts, bool force, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    AmendReq r;
    AmendCo c = {bs, &r, errp, 0};

    GLOBAL_STATE_CODE();
    (void)force; /* only encryption keyslot changes need it, and there is no encryption */
    if (bdrv_is_read_only(bs)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_ROFS, "Image is read-only");
        return false;
    }
    if (!amend_parse(bs, opts, &r, errp)) {
        return false;
    }
    bdrv_run_co(amend_first_entry, &c);
    if (c.ret == 0 && r.size) {
        bdrv_run_co(amend_resize_entry, &c);
    }
    if (c.ret == 0 && r.version < s->version) {
        bdrv_run_co(amend_downgrade_entry, &c);
    }
    if (c.ret < 0 && errp && !*errp) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-c.ret), "%s", g_strerror(-c.ret));
    }
    return c.ret == 0;
}
