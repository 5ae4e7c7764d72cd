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
 *  - Clusters sit in one hash table: cluster index -> how many L1 entries
 *    and how many refcount table entries name it (16 bits each, stuck at
 *    the maximum once they reach it: only a broken image gets there, and
 *    then the cluster stays protected).  It is updated where those entries
 *    change (qcow2_overlap_add / _remove).  In front of it, a bitmap with
 *    one bit per cluster that has a key: a query tests the range's bits a
 *    word at a time and looks up only the clusters whose bit is set.
 *    Clusters past BITS_CAP (a broken image) are found by looking up each
 *    cluster of the range or walking the table, whichever is shorter.
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
 * a query is O(log ranges + clusters queried / 64), plus one lookup per
 * table it hits.  Memory: one hash entry per L2 table and refcount block,
 * one bit per cluster up to the last of them.
 *
 * Locking: under s->lock, like the tables it mirrors.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

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
    GHashTable *tables; /* cluster index -> COUNT_L2 | COUNT_RB << 16 (see hash_add) */
    uint64_t *bits;     /* bit c: cluster c (< BITS_CAP) is a key of @tables */
    uint64_t nb_words;  /* of @bits: covers every key below BITS_CAP */
    uint64_t nb_far;    /* keys at BITS_CAP or above (only broken images have them) */
};

/* Clusters the bitmap covers at most (16 MiB of bits: 8 TiB of 64 KiB clusters). */
#define BITS_CAP (1ULL << 27)

#define COUNT_MAX        0xffffu
#define OL_TABLE_CLASSES (QCOW2_OL_ACTIVE_L2 | QCOW2_OL_REFCOUNT_BLOCK)

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

/* Bit shift of @cls's count in a hash value. */
static int count_shift(Qcow2MetaClass cls)
{
    return cls == QCOW2_OL_ACTIVE_L2 ? 0 : 16;
}

/* The classes a hash value holds. */
static unsigned value_classes(guint v)
{
    return ((v & COUNT_MAX) ? QCOW2_OL_ACTIVE_L2 : 0) | ((v >> 16) ? QCOW2_OL_REFCOUNT_BLOCK : 0);
}

/* Cluster @c became a key of o->tables (@present) or stopped being one. */
static void key_changed(Qcow2Overlap *o, uint64_t c, bool present)
{
    if (c >= BITS_CAP) {
        o->nb_far += present ? 1 : -1;
        return;
    }
    if (present && c / 64 >= o->nb_words) {
        uint64_t n = MAX(c / 64 + 1, MIN(o->nb_words * 2, BITS_CAP / 64));
        o->bits = g_renew(uint64_t, o->bits, n);
        memset(o->bits + o->nb_words, 0, (n - o->nb_words) * 8);
        o->nb_words = n;
    }
    if (present) {
        o->bits[c / 64] |= 1ULL << (c % 64);
    } else {
        o->bits[c / 64] &= ~(1ULL << (c % 64));
    }
}

static void hash_add(Qcow2Overlap *o, Qcow2MetaClass cls, uint64_t cluster)
{
    gpointer key = GSIZE_TO_POINTER(cluster);
    guint v = GPOINTER_TO_UINT(g_hash_table_lookup(o->tables, key));
    int sh = count_shift(cls);
    if (((v >> sh) & COUNT_MAX) < COUNT_MAX) {
        g_hash_table_insert(o->tables, key, GUINT_TO_POINTER(v + (1u << sh)));
        if (!v) {
            key_changed(o, cluster, true);
        }
    }
}

static void hash_remove(Qcow2Overlap *o, Qcow2MetaClass cls, uint64_t cluster)
{
    gpointer key = GSIZE_TO_POINTER(cluster);
    guint v = GPOINTER_TO_UINT(g_hash_table_lookup(o->tables, key));
    int sh = count_shift(cls);
    guint n = (v >> sh) & COUNT_MAX;
    if (n == 0 || n == COUNT_MAX) {
        return; /* not there, or stuck */
    }
    v -= 1u << sh;
    if (v) {
        g_hash_table_insert(o->tables, key, GUINT_TO_POINTER(v));
    } else {
        g_hash_table_remove(o->tables, key);
        key_changed(o, cluster, false);
    }
}

/* Drops every count of @cls. */
static void hash_clear_class(Qcow2Overlap *o, Qcow2MetaClass cls)
{
    guint mask = COUNT_MAX << count_shift(cls);
    GHashTableIter it;
    gpointer key, val;
    g_hash_table_iter_init(&it, o->tables);
    while (g_hash_table_iter_next(&it, &key, &val)) {
        guint v = GPOINTER_TO_UINT(val) & ~mask;
        if (v) {
            g_hash_table_iter_replace(&it, GUINT_TO_POINTER(v));
        } else {
            g_hash_table_iter_remove(&it);
            key_changed(o, GPOINTER_TO_SIZE(key), false);
        }
    }
}

/* Adds the clusters that the tables in memory name as @cls. */
static void hash_fill_class(BDRVQcow2State *s, Qcow2Overlap *o, Qcow2MetaClass cls)
{
    if (cls == QCOW2_OL_ACTIVE_L2) {
        for (uint32_t i = 0; i < s->l1_size; i++) {
            uint64_t off = s->l1_table[i] & L1E_OFFSET_MASK;
            if (off) {
                hash_add(o, cls, off >> s->cluster_bits);
            }
        }
    } else {
        for (uint64_t i = 0; i < s->refcount_table_size; i++) {
            uint64_t off = s->refcount_table[i] & RTE_OFFSET_MASK;
            if (off) {
                hash_add(o, cls, off >> s->cluster_bits);
            }
        }
    }
}

/* The index with every part up to date. */
static Qcow2Overlap *overlap_get(BDRVQcow2State *s)
{
    Qcow2Overlap *o = s->overlap;
    if (!o) {
        o = s->overlap = g_new0(Qcow2Overlap, 1);
        o->tables = g_hash_table_new(g_direct_hash, g_direct_equal);
    }
    if ((o->valid & OL_RANGE_CLASSES) != OL_RANGE_CLASSES) {
        build_ranges(s, o);
        o->valid |= OL_RANGE_CLASSES;
    }
    for (int k = 0; k < 2; k++) {
        Qcow2MetaClass cls = k ? QCOW2_OL_REFCOUNT_BLOCK : QCOW2_OL_ACTIVE_L2;
        if (!(o->valid & cls)) {
            hash_clear_class(o, cls);
            hash_fill_class(s, o, cls);
            o->valid |= cls;
        }
    }
    return o;
}

void qcow2_overlap_invalidate(BDRVQcow2State *s, unsigned classes)
{
    if (s->overlap) {
        s->overlap->valid &= ~classes;
    }
}

void qcow2_overlap_add(BDRVQcow2State *s, Qcow2MetaClass cls, uint64_t offset)
{
    /* While @cls is invalid, the next query rebuilds it from the tables anyway. */
    if (s->overlap && (s->overlap->valid & cls) && offset) {
        hash_add(s->overlap, cls, offset >> s->cluster_bits);
    }
}

void qcow2_overlap_remove(BDRVQcow2State *s, Qcow2MetaClass cls, uint64_t offset)
{
    if (s->overlap && (s->overlap->valid & cls) && offset) {
        hash_remove(s->overlap, cls, offset >> s->cluster_bits);
    }
}

/* The classes of @want that clusters [first, last] hold, from the hash alone. */
static unsigned hash_hits(GHashTable *h, unsigned want, uint64_t first, uint64_t last)
{
    unsigned found = 0;
    if (last - first < g_hash_table_size(h)) {
        for (uint64_t c = first; c <= last && found != want; c++) {
            guint v = GPOINTER_TO_UINT(g_hash_table_lookup(h, GSIZE_TO_POINTER(c)));
            found |= value_classes(v) & want;
        }
        return found;
    }
    GHashTableIter it;
    gpointer key, val;
    g_hash_table_iter_init(&it, h);
    while (found != want && g_hash_table_iter_next(&it, &key, &val)) {
        uint64_t c = GPOINTER_TO_SIZE(key);
        if (c >= first && c <= last) {
            found |= value_classes(GPOINTER_TO_UINT(val)) & want;
        }
    }
    return found;
}

/* The classes of @want that the table clusters [first, last] hold. */
static unsigned clusters_hit(Qcow2Overlap *o, unsigned want, uint64_t first, uint64_t last)
{
    uint64_t covered = o->nb_words * 64; /* no key in [covered, BITS_CAP) */
    unsigned found = 0;
    if (!want || g_hash_table_size(o->tables) == 0) {
        return 0;
    }
    for (uint64_t c = first; c <= last && c < covered && found != want;) {
        uint64_t w = o->bits[c / 64] >> (c % 64);
        uint64_t n = MIN(64 - c % 64, last - c + 1); /* bits of this word in the range */
        if (n < 64) {
            w &= (1ULL << n) - 1;
        }
        while (w && found != want) {
            int b = __builtin_ctzll(w);
            guint v = GPOINTER_TO_UINT(g_hash_table_lookup(o->tables, GSIZE_TO_POINTER(c + b)));
            found |= value_classes(v) & want;
            w &= w - 1;
        }
        c += n;
    }
    if (o->nb_far && last >= BITS_CAP && found != want) {
        found |= hash_hits(o->tables, want, MAX(first, BITS_CAP), last);
    }
    return found;
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

    found |= clusters_hit(o, OL_TABLE_CLASSES & ~ignore, offset >> s->cluster_bits,
                          (end - 1) >> s->cluster_bits);
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
    Qcow2Overlap scratch = {.tables = g_hash_table_new(g_direct_hash, g_direct_equal)};
    GHashTable *fresh = scratch.tables;
    unsigned cmp = o->valid & OL_TABLE_CLASSES;
    guint mask = ((cmp & QCOW2_OL_ACTIVE_L2) ? COUNT_MAX : 0) |
                 ((cmp & QCOW2_OL_REFCOUNT_BLOCK) ? COUNT_MAX << 16 : 0);
    for (int k = 0; k < 2; k++) {
        Qcow2MetaClass cls = k ? QCOW2_OL_REFCOUNT_BLOCK : QCOW2_OL_ACTIVE_L2;
        if (cmp & cls) {
            hash_fill_class(s, &scratch, cls);
        }
    }
    /* Every cluster of either table, compared on the counts of the valid classes. */
    bool same = true;
    for (int k = 0; k < 2 && same; k++) {
        GHashTable *a = k ? o->tables : fresh, *b = k ? fresh : o->tables;
        GHashTableIter it;
        gpointer key, val;
        g_hash_table_iter_init(&it, a);
        while (same && g_hash_table_iter_next(&it, &key, &val)) {
            same = (GPOINTER_TO_UINT(val) & mask) ==
                   (GPOINTER_TO_UINT(g_hash_table_lookup(b, key)) & mask);
        }
    }
    /* The bitmap: exactly the keys below BITS_CAP, the rest counted. */
    uint64_t far = 0;
    GHashTableIter it;
    gpointer key;
    g_hash_table_iter_init(&it, o->tables);
    while (same && g_hash_table_iter_next(&it, &key, NULL)) {
        uint64_t c = GPOINTER_TO_SIZE(key);
        far += c >= BITS_CAP;
        same = c >= BITS_CAP || (c / 64 < o->nb_words && (o->bits[c / 64] >> (c % 64)) & 1);
    }
    uint64_t set = 0;
    for (uint64_t i = 0; same && i < o->nb_words; i++) {
        set += __builtin_popcountll(o->bits[i]);
    }
    same = same && far == o->nb_far && set + far == g_hash_table_size(o->tables);
    g_hash_table_unref(fresh);
    g_free(scratch.bits);
    return same;
}

void qcow2_overlap_free(BDRVQcow2State *s)
{
    Qcow2Overlap *o = s->overlap;
    if (!o) {
        return;
    }
    g_hash_table_unref(o->tables);
    g_free(o->bits);
    g_free(o->ranges);
    g_free(o->max_end);
    g_free(o);
    s->overlap = NULL;
}
