/*
 * qcow2 metadata overlap checks: an index of where the metadata lives, so
 * that no write (metadata or guest data) and no allocation lands on it,
 * whatever a corrupt refcount block or table entry says.
 *
 * Design notes.
 *  - Metadata comes in classes (Qcow2MetaClass).  The header, the active
 *    L1 table, the refcount table, the snapshot table, the snapshots' L1
 *    tables and the bitmap directory are byte ranges (rounded up to whole
 *    clusters) that change only with rare operations; active L2 tables and
 *    refcount blocks are single clusters that come and go with
 *    allocations.
 *  - Ranges sit in an array sorted by start, beside the largest end of any
 *    range up to each position: a query is one binary search, then a short
 *    walk back (ranges overlap each other only in a broken image).
 *  - Clusters sit in two hash tables (cluster index -> number of L1 or
 *    refcount table entries that name it), updated where those entries
 *    change (qcow2_overlap_add / _remove); a query looks up each cluster
 *    of a short range, or walks the table for a long one.
 *  - Every part is built from memory (L1 table, refcount table, snapshot
 *    list, bitmap directory location) at the first query after it was
 *    invalidated: at open, and after the wholesale changes (L1 or refcount
 *    table moved, snapshot table rewritten, snapshot applied, bitmaps
 *    committed, refcounts rebuilt).  Reads of a clean image build it once.
 *  - Not tracked: L2 tables only snapshots reach (finding them means
 *    reading every snapshot L1), bitmap tables and data.  Their clusters
 *    are protected by refcounts alone, as in QEMU's default mode.
 *
 * Cost: building is O(L1 entries + refcount table entries + snapshots);
 * a query is O(log ranges + min(clusters queried, tables)).  Memory: one
 * hash entry per L2 table and refcount block.
 *
 * Locking: under s->lock, like the tables it mirrors.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "drivers/qcow2/qcow2.h"

typedef struct OverlapRange {
    uint64_t start, end; /* host bytes [start, end), whole clusters */
    unsigned cls;
} OverlapRange;

struct Qcow2Overlap {
    unsigned valid; /* classes whose part below is up to date */
    OverlapRange *ranges;
    uint64_t *max_end; /* max_end[i]: largest end of ranges[0..i] */
    size_t nb_ranges;
    GHashTable *l2; /* cluster index -> active L1 entries naming it */
    GHashTable *rb; /* cluster index -> refcount table entries naming it */
};

#define OL_RANGE_CLASSES                                                                           \
    (QCOW2_OL_HEADER | QCOW2_OL_ACTIVE_L1 | QCOW2_OL_REFCOUNT_TABLE | QCOW2_OL_SNAPSHOT_TABLE |    \
     QCOW2_OL_INACTIVE_L1 | QCOW2_OL_BITMAP_DIR)

const char *qcow2_overlap_name(unsigned cls)
{
    switch (cls & -cls) {
    case QCOW2_OL_HEADER:
        return "image header";
    case QCOW2_OL_ACTIVE_L1:
        return "active L1 table";
    case QCOW2_OL_ACTIVE_L2:
        return "active L2 table";
    case QCOW2_OL_REFCOUNT_TABLE:
        return "refcount table";
    case QCOW2_OL_REFCOUNT_BLOCK:
        return "refcount block";
    case QCOW2_OL_SNAPSHOT_TABLE:
        return "snapshot table";
    case QCOW2_OL_INACTIVE_L1:
        return "L1 table of a snapshot";
    case QCOW2_OL_BITMAP_DIR:
        return "bitmap directory";
    default:
        return "guest data";
    }
}

static int range_cmp(const void *a, const void *b)
{
    const OverlapRange *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

static void add_range(BDRVQcow2State *s, GArray *a, unsigned cls, uint64_t start, uint64_t bytes)
{
    if (bytes) {
        /* Offsets were checked at open: start and length stay below 2^63. */
        OverlapRange r = {qcow2_start_of_cluster(s, start),
                          qcow2_round_up(start + bytes, s->cluster_size), cls};
        g_array_append_val(a, r);
    }
}

static void build_ranges(BDRVQcow2State *s, Qcow2Overlap *o)
{
    GArray *a = g_array_new(false, false, sizeof(OverlapRange));

    add_range(s, a, QCOW2_OL_HEADER, 0, s->cluster_size);
    add_range(s, a, QCOW2_OL_ACTIVE_L1, s->l1_table_offset, (uint64_t)s->l1_size * 8);
    add_range(s, a, QCOW2_OL_REFCOUNT_TABLE, s->refcount_table_offset, s->refcount_table_size * 8);
    if (s->nb_snapshots) {
        add_range(s, a, QCOW2_OL_SNAPSHOT_TABLE, s->snapshots_offset, s->snapshots_size);
        for (uint32_t i = 0; s->snapshots && i < s->nb_snapshots; i++) {
            add_range(s, a, QCOW2_OL_INACTIVE_L1, s->snapshots[i].l1_table_offset,
                      (uint64_t)s->snapshots[i].l1_size * 8);
        }
    }
    if (s->nb_bitmaps) {
        add_range(s, a, QCOW2_OL_BITMAP_DIR, s->bitmap_dir_offset, s->bitmap_dir_size);
    }
    qsort(a->data, a->len, sizeof(OverlapRange), range_cmp);

    g_free(o->ranges);
    g_free(o->max_end);
    o->nb_ranges = a->len;
    o->ranges = (OverlapRange *)g_array_free(a, false);
    o->max_end = g_new(uint64_t, MAX(o->nb_ranges, 1));
    for (size_t i = 0; i < o->nb_ranges; i++) {
        o->max_end[i] = MAX(i ? o->max_end[i - 1] : 0, o->ranges[i].end);
    }
}

static void hash_add(GHashTable *h, uint64_t cluster)
{
    gpointer key = GSIZE_TO_POINTER(cluster);
    guint n = GPOINTER_TO_UINT(g_hash_table_lookup(h, key));
    g_hash_table_insert(h, key, GUINT_TO_POINTER(n + 1));
}

static void hash_remove(GHashTable *h, uint64_t cluster)
{
    gpointer key = GSIZE_TO_POINTER(cluster);
    guint n = GPOINTER_TO_UINT(g_hash_table_lookup(h, key));
    if (n > 1) {
        g_hash_table_insert(h, key, GUINT_TO_POINTER(n - 1));
    } else {
        g_hash_table_remove(h, key);
    }
}

static GHashTable *build_l2(BDRVQcow2State *s)
{
    GHashTable *h = g_hash_table_new(g_direct_hash, g_direct_equal);
    for (uint32_t i = 0; i < s->l1_size; i++) {
        uint64_t off = s->l1_table[i] & L1E_OFFSET_MASK;
        if (off) {
            hash_add(h, off >> s->cluster_bits);
        }
    }
    return h;
}

static GHashTable *build_rb(BDRVQcow2State *s)
{
    GHashTable *h = g_hash_table_new(g_direct_hash, g_direct_equal);
    for (uint64_t i = 0; i < s->refcount_table_size; i++) {
        uint64_t off = s->refcount_table[i] & RTE_OFFSET_MASK;
        if (off) {
            hash_add(h, off >> s->cluster_bits);
        }
    }
    return h;
}

/* The index with every part up to date. */
static Qcow2Overlap *overlap_get(BDRVQcow2State *s)
{
    Qcow2Overlap *o = s->overlap;
    if (!o) {
        o = s->overlap = g_new0(Qcow2Overlap, 1);
    }
    if ((o->valid & OL_RANGE_CLASSES) != OL_RANGE_CLASSES) {
        build_ranges(s, o);
        o->valid |= OL_RANGE_CLASSES;
    }
    if (!(o->valid & QCOW2_OL_ACTIVE_L2)) {
        if (o->l2) {
            g_hash_table_unref(o->l2);
        }
        o->l2 = build_l2(s);
        o->valid |= QCOW2_OL_ACTIVE_L2;
    }
    if (!(o->valid & QCOW2_OL_REFCOUNT_BLOCK)) {
        if (o->rb) {
            g_hash_table_unref(o->rb);
        }
        o->rb = build_rb(s);
        o->valid |= QCOW2_OL_REFCOUNT_BLOCK;
    }
    return o;
}

void qcow2_overlap_invalidate(BDRVQcow2State *s, unsigned classes)
{
    if (s->overlap) {
        s->overlap->valid &= ~classes;
    }
}

/* The hash of @cls when it is up to date (else the next query rebuilds it anyway). */
static GHashTable *valid_hash(BDRVQcow2State *s, Qcow2MetaClass cls)
{
    Qcow2Overlap *o = s->overlap;
    if (!o || !(o->valid & cls)) {
        return NULL;
    }
    return cls == QCOW2_OL_ACTIVE_L2 ? o->l2 : cls == QCOW2_OL_REFCOUNT_BLOCK ? o->rb : NULL;
}

void qcow2_overlap_add(BDRVQcow2State *s, Qcow2MetaClass cls, uint64_t offset)
{
    GHashTable *h = valid_hash(s, cls);
    if (h && offset) {
        hash_add(h, offset >> s->cluster_bits);
    }
}

void qcow2_overlap_remove(BDRVQcow2State *s, Qcow2MetaClass cls, uint64_t offset)
{
    GHashTable *h = valid_hash(s, cls);
    if (h && offset) {
        hash_remove(h, offset >> s->cluster_bits);
    }
}

/* True when a cluster of [first, last] is a key of @h. */
static bool hash_hits(GHashTable *h, uint64_t first, uint64_t last)
{
    guint n = g_hash_table_size(h);
    if (n == 0) {
        return false;
    }
    if (last - first < n) {
        for (uint64_t c = first; c <= last; c++) {
            if (g_hash_table_contains(h, GSIZE_TO_POINTER(c))) {
                return true;
            }
        }
        return false;
    }
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, h);
    while (g_hash_table_iter_next(&it, &key, NULL)) {
        uint64_t c = GPOINTER_TO_SIZE(key);
        if (c >= first && c <= last) {
            return true;
        }
    }
    return false;
}

unsigned qcow2_overlap_find(BDRVQcow2State *s, unsigned ignore, uint64_t offset, uint64_t bytes)
{
    if (bytes == 0) {
        return 0;
    }
    Qcow2Overlap *o = overlap_get(s);
    uint64_t end = offset + bytes < offset ? UINT64_MAX : offset + bytes;
    unsigned found = 0;

    /* Last range that starts before @end; walk back while one may still reach @offset. */
    size_t lo = 0, hi = o->nb_ranges;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (o->ranges[mid].start < end) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    for (size_t i = lo; i-- > 0 && o->max_end[i] > offset;) {
        if (o->ranges[i].end > offset && !(o->ranges[i].cls & ignore)) {
            found |= o->ranges[i].cls;
        }
    }

    uint64_t first = offset >> s->cluster_bits, last = (end - 1) >> s->cluster_bits;
    if (!(ignore & QCOW2_OL_ACTIVE_L2) && hash_hits(o->l2, first, last)) {
        found |= QCOW2_OL_ACTIVE_L2;
    }
    if (!(ignore & QCOW2_OL_REFCOUNT_BLOCK) && hash_hits(o->rb, first, last)) {
        found |= QCOW2_OL_REFCOUNT_BLOCK;
    }
    return found & -found; /* the lowest class: one name for the message */
}

int coroutine_fn qcow2_pre_write_check(BlockDriverState *bs, unsigned what, uint64_t offset,
                                       uint64_t bytes)
{
    BDRVQcow2State *s = bs->opaque;
    unsigned hit = qcow2_overlap_find(s, what, offset, bytes);
    if (!hit) {
        return 0;
    }
    const char *name = qcow2_overlap_name(what);
    return qcow2_signal_corruption(
        bs, "%c%s write at 0x%" PRIx64 " (%" PRIu64 " bytes) would overwrite the %s",
        g_ascii_toupper(name[0]), name + 1, offset, bytes, qcow2_overlap_name(hit));
}

bool qcow2_overlap_sanity(BDRVQcow2State *s)
{
    Qcow2Overlap *o = s->overlap;
    if (!o) {
        return true;
    }
    if ((o->valid & OL_RANGE_CLASSES) == OL_RANGE_CLASSES) {
        Qcow2Overlap fresh = {0};
        build_ranges(s, &fresh);
        bool same = fresh.nb_ranges == o->nb_ranges;
        for (size_t i = 0; same && i < o->nb_ranges; i++) {
            same = fresh.ranges[i].start == o->ranges[i].start &&
                   fresh.ranges[i].end == o->ranges[i].end && fresh.max_end[i] == o->max_end[i];
        }
        g_free(fresh.ranges);
        g_free(fresh.max_end);
        if (!same) {
            return false;
        }
    }
    for (int k = 0; k < 2; k++) {
        unsigned cls = k ? QCOW2_OL_REFCOUNT_BLOCK : QCOW2_OL_ACTIVE_L2;
        GHashTable *h = k ? o->rb : o->l2;
        if (!(o->valid & cls)) {
            continue;
        }
        GHashTable *fresh = k ? build_rb(s) : build_l2(s);
        bool same = g_hash_table_size(fresh) == g_hash_table_size(h);
        GHashTableIter it;
        gpointer key, val;
        g_hash_table_iter_init(&it, fresh);
        while (same && g_hash_table_iter_next(&it, &key, &val)) {
            same = g_hash_table_lookup(h, key) == val;
        }
        g_hash_table_unref(fresh);
        if (!same) {
            return false;
        }
    }
    return true;
}

void qcow2_overlap_free(BDRVQcow2State *s)
{
    Qcow2Overlap *o = s->overlap;
    if (!o) {
        return;
    }
    if (o->l2) {
        g_hash_table_unref(o->l2);
    }
    if (o->rb) {
        g_hash_table_unref(o->rb);
    }
    g_free(o->ranges);
    g_free(o->max_end);
    g_free(o);
    s->overlap = NULL;
}
