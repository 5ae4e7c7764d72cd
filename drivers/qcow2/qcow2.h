/*
 * qcow2 driver, private header: on-disk constants, the node state, and the
 * functions the qcow2-*.c files share.
 *
 * Locking (see docs/design/qcow2.md):
 *  - Geometry fields (cluster_bits, l2_bits, refcount_order, ...) are set at
 *    open and only read afterwards: any thread, no lock.
 *  - Everything else in BDRVQcow2State (header fields that change, L1 and
 *    refcount tables, both caches, the allocation list, free_cluster_index)
 *    is protected by s->lock, a CoMutex.  Functions that need it say
 *    "_locked" or "Under s->lock" in their contract.  s->lock may be held
 *    across metadata I/O (table reads and writes) but never across guest
 *    data I/O or copy-on-write I/O.
 *  - A table pointer obtained from a cache is valid only until it is put
 *    back and only while s->lock is held.
 */
#ifndef STRATA_QCOW2_H
#define STRATA_QCOW2_H

#include <stdbool.h>
#include <stdint.h>

#include "block/block-int.h"
#include "coroutine/co-lock.h"

/* ---- on-disk format ---------------------------------------------------------- */

#define QCOW2_MAGIC 0x514649fbu /* "QFI\xfb" */

#define QCOW2_MIN_CLUSTER_BITS  9
#define QCOW2_MAX_CLUSTER_BITS  21
#define QCOW2_V2_HEADER_LENGTH  72
#define QCOW2_V3_HEADER_LENGTH  104 /* without compression_type */
#define QCOW2_NEW_HEADER_LENGTH 112 /* what we write for v3: compression_type + padding */

#define QCOW2_MAX_L1_BYTES        (32 * 1024 * 1024)
#define QCOW2_MAX_REFTABLE_BYTES  (8 * 1024 * 1024)
#define QCOW2_MAX_SNAPSHOTS       65536
#define QCOW2_MAX_SNAPSHOTS_BYTES (1024 * QCOW2_MAX_SNAPSHOTS)
#define QCOW2_MAX_SNAPSHOT_EXTRA  1024
#define QCOW2_MAX_BACKING_NAME    1023
#define QCOW2_MAX_EXT_STRING      1023
#define QCOW2_MAX_BITMAPS         65535
#define QCOW2_MAX_BITMAP_DIR      (64 * 1024 * 1024)

/* Header field offsets (all big endian). */
enum {
    QH_MAGIC = 0,
    QH_VERSION = 4,
    QH_BACKING_OFFSET = 8,
    QH_BACKING_SIZE = 16,
    QH_CLUSTER_BITS = 20,
    QH_SIZE = 24,
    QH_CRYPT = 32,
    QH_L1_SIZE = 36,
    QH_L1_OFFSET = 40,
    QH_RT_OFFSET = 48,
    QH_RT_CLUSTERS = 56,
    QH_NB_SNAPSHOTS = 60,
    QH_SNAPSHOTS_OFFSET = 64,
    QH_INCOMPAT = 72,
    QH_COMPAT = 80,
    QH_AUTOCLEAR = 88,
    QH_REFCOUNT_ORDER = 96,
    QH_HEADER_LENGTH = 100,
    QH_COMPRESSION_TYPE = 104,
};

#define QCOW2_INCOMPAT_DIRTY       (1ULL << 0)
#define QCOW2_INCOMPAT_CORRUPT     (1ULL << 1)
#define QCOW2_INCOMPAT_DATA_FILE   (1ULL << 2)
#define QCOW2_INCOMPAT_COMPRESSION (1ULL << 3)
#define QCOW2_INCOMPAT_EXTL2       (1ULL << 4)
#define QCOW2_INCOMPAT_KNOWN       0x1fULL

#define QCOW2_COMPAT_LAZY_REFCOUNTS (1ULL << 0)

#define QCOW2_AUTOCLEAR_BITMAPS       (1ULL << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (1ULL << 1)
#define QCOW2_AUTOCLEAR_KNOWN         0x3ULL

#define QCOW2_COMPRESSION_ZLIB 0
#define QCOW2_COMPRESSION_ZSTD 1

#define QCOW2_EXT_END            0x00000000u
#define QCOW2_EXT_BACKING_FORMAT 0xe2792acau
#define QCOW2_EXT_FEATURE_TABLE  0x6803f857u
#define QCOW2_EXT_BITMAPS        0x23852875u
#define QCOW2_EXT_CRYPTO         0x0537be77u
#define QCOW2_EXT_DATA_FILE      0x44415441u

#define QCOW2_FEATURE_ENTRY_SIZE 48
#define QCOW2_FEATURE_NAME_SIZE  46

/* L1, L2 and refcount table entries. */
#define QCOW2_OFLAG_COPIED     (1ULL << 63)
#define QCOW2_OFLAG_COMPRESSED (1ULL << 62)
#define QCOW2_OFLAG_ZERO       (1ULL << 0)
#define L1E_OFFSET_MASK        0x00fffffffffffe00ULL
#define L1E_RESERVED_MASK      0x7f000000000001ffULL
#define L2E_OFFSET_MASK        0x00fffffffffffe00ULL
#define L2E_STD_RESERVED_MASK  0x3f000000000001feULL
#define RTE_OFFSET_MASK        0xfffffffffffffe00ULL
#define RTE_RESERVED_MASK      0x1ffULL

/* Extended L2: 32 subclusters; the bitmap's low half allocates, the high half zeroes. */
#define QCOW2_SUBCLUSTERS_EXTL2 32
#define QCOW2_EXTL2_ALL_ALLOC   0x00000000ffffffffULL
#define QCOW2_EXTL2_ALL_ZERO    0xffffffff00000000ULL

/* Big-endian accessors for on-disk structures. */
static inline uint16_t qcow2_ld16(const void *p)
{
    const uint8_t *b = p;
    return (uint16_t)(b[0] << 8 | b[1]);
}

static inline uint32_t qcow2_ld32(const void *p)
{
    const uint8_t *b = p;
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

static inline uint64_t qcow2_ld64(const void *p)
{
    const uint8_t *b = p;
    return (uint64_t)qcow2_ld32(b) << 32 | qcow2_ld32(b + 4);
}

static inline void qcow2_st16(void *p, uint16_t v)
{
    uint8_t *b = p;
    b[0] = v >> 8;
    b[1] = v;
}

static inline void qcow2_st32(void *p, uint32_t v)
{
    uint8_t *b = p;
    b[0] = v >> 24;
    b[1] = v >> 16;
    b[2] = v >> 8;
    b[3] = v;
}

static inline void qcow2_st64(void *p, uint64_t v)
{
    qcow2_st32(p, v >> 32);
    qcow2_st32((uint8_t *)p + 4, (uint32_t)v);
}

/* ---- in-memory structures ------------------------------------------------------- */

/*
 * What one subcluster (a whole cluster without extended L2) holds, derived
 * from its L2 entry and bitmap.
 */
typedef enum Qcow2SubclusterType {
    QCOW2_SC_NORMAL,        /* data at the host offset */
    QCOW2_SC_COMPRESSED,    /* compressed cluster (no subclusters) */
    QCOW2_SC_ZERO_PLAIN,    /* reads as zeroes, no host cluster */
    QCOW2_SC_ZERO_ALLOC,    /* reads as zeroes, host cluster kept */
    QCOW2_SC_UNALLOC_PLAIN, /* not here: backing file or zeroes, no host cluster */
    QCOW2_SC_UNALLOC_ALLOC, /* not here, in a cluster that has a host (extended L2 only) */
    QCOW2_SC_INVALID,       /* the entry breaks the format */
} Qcow2SubclusterType;

typedef struct Qcow2Cache Qcow2Cache;
typedef struct Qcow2Overlap Qcow2Overlap;

/*
 * Classes of metadata for overlap checks (qcow2-overlap.c).  A write of
 * one class may overlap its own class only; guest data overlaps none.
 */
typedef enum Qcow2MetaClass {
    QCOW2_OL_HEADER = 1u << 0,
    QCOW2_OL_ACTIVE_L1 = 1u << 1,
    QCOW2_OL_ACTIVE_L2 = 1u << 2,
    QCOW2_OL_REFCOUNT_TABLE = 1u << 3,
    QCOW2_OL_REFCOUNT_BLOCK = 1u << 4,
    QCOW2_OL_SNAPSHOT_TABLE = 1u << 5,
    QCOW2_OL_INACTIVE_L1 = 1u << 6,
    QCOW2_OL_BITMAP_DIR = 1u << 7,
} Qcow2MetaClass;
#define QCOW2_OL_DATA 0u /* what a guest data write is */

/*
 * A snapshot table entry.  Extra data past the fields we know is kept
 * (@extra_unknown) and written back as it was.
 */
typedef struct Qcow2Snapshot {
    uint64_t l1_table_offset;
    uint32_t l1_size;
    char *id;
    char *name;
    uint32_t date_sec, date_nsec;
    uint64_t vm_clock_nsec;
    uint64_t vm_state_size;
    uint64_t disk_size; /* virtual disk size when the snapshot was taken */
    uint64_t icount;    /* instruction count, UINT64_MAX when not recorded */
    uint32_t extra_unknown_len;
    uint8_t *extra_unknown;
} Qcow2Snapshot;

/* A header extension we do not interpret, kept to be written back as it was. */
typedef struct Qcow2UnknownExt {
    uint32_t type;
    uint32_t len;
    uint8_t *data;
} Qcow2UnknownExt;

/* One entry of the feature name table. */
typedef struct Qcow2Feature {
    uint8_t type; /* 0 incompatible, 1 compatible, 2 autoclear */
    uint8_t bit;
    char name[QCOW2_FEATURE_NAME_SIZE + 1];
} Qcow2Feature;

/* A byte range inside an allocation, relative to its first guest cluster. */
typedef struct Qcow2CowRegion {
    uint64_t offset;
    uint64_t bytes;
} Qcow2CowRegion;

/*
 * An allocating write in flight: guest clusters [guest_offset,
 * guest_offset + nb_clusters * cluster_size) get host clusters starting at
 * host_offset once the data is written.  Until then the L2 entries are
 * unchanged, and any other request that would change the same clusters
 * waits on @waiters.  Lives on the writer's stack; listed in s->allocs
 * under s->lock from qcow2_alloc_host_offset() to link or abort.
 */
typedef struct Qcow2Alloc {
    uint64_t guest_offset;
    uint64_t host_offset;
    int nb_clusters;
    bool keep_old;            /* one cluster, already ours: only subclusters change */
    Qcow2CowRegion cow_start; /* old content written before the guest data */
    Qcow2CowRegion cow_end;   /* old content written after it */
    /* Old L2 entries (and extended L2 bitmaps) of the first and last cluster. */
    uint64_t old_first, old_first_bitmap;
    uint64_t old_last, old_last_bitmap;
    /* Subclusters that become allocated in the first and last cluster. */
    uint32_t first_mask, last_mask;
    /* A compressed cluster of this many bytes at host_offset (0: not compressed). */
    uint64_t compressed_bytes;
    CoQueue waiters;
    struct Qcow2Alloc *prev, *next;
} Qcow2Alloc;

/*
 * The state of one qcow2 node.  Invariants, under s->lock: every refcount
 * table entry and L1 offset is cluster aligned with no reserved bits (the
 * table entries are checked at open, L1 entries before each use); the
 * allocations in s->allocs cover disjoint guest clusters
 * (qcow2_allocs_sanity); no cluster named by a table is ever in the
 * caches after its refcount dropped to 0.
 */
typedef struct BDRVQcow2State {
    /* Geometry: fixed at open. */
    int version;
    int cluster_bits;
    uint64_t cluster_size;
    int l2_bits; /* log2 of entries per L2 table */
    uint64_t l2_entries;
    bool extended_l2;
    int l2_entry_words; /* 1, or 2 with extended L2 */
    int subcluster_bits;
    uint64_t subcluster_size;
    int refcount_order;
    int refcount_bits;
    uint64_t refcount_max;
    int rb_bits; /* log2 of entries per refcount block */
    uint64_t rb_entries;
    int csize_shift; /* compressed descriptor: where the sector count starts */
    uint64_t csize_mask;
    uint64_t coffset_mask;
    uint32_t header_length;
    uint8_t compression_type;
    bool has_data_file;   /* guest data lives in an external data file */
    bool data_file_raw;   /* the data file is a valid raw image by itself */
    BdrvChild *data_file; /* == bs->file unless an external data file is used */

    /* Below: under s->lock. */
    CoMutex lock;
    uint64_t size; /* virtual disk size */
    uint64_t incompat, compat, autoclear;
    uint8_t *header_raw; /* header bytes as read (unknown fields are kept) */

    uint64_t *l1_table; /* host byte order */
    uint32_t l1_size;
    uint64_t l1_table_offset;

    uint64_t *refcount_table;     /* host byte order */
    uint64_t refcount_table_size; /* entries */
    uint64_t refcount_table_offset;
    uint64_t free_cluster_index; /* no free cluster below this one */

    Qcow2Cache *l2_cache;
    Qcow2Cache *refblock_cache;

    uint32_t nb_snapshots;
    uint64_t snapshots_offset;
    uint64_t snapshots_size; /* bytes of the snapshot table */
    Qcow2Snapshot *snapshots;

    char *backing_format; /* from the header extension */
    char *data_file_name; /* from the header extension */
    Qcow2Feature *features;
    int nb_features;
    Qcow2UnknownExt *unknown_exts;
    int nb_unknown_exts;
    bool has_bitmaps_ext;
    uint8_t bitmaps_ext[24];
    uint32_t nb_bitmaps;
    uint64_t bitmap_dir_offset, bitmap_dir_size;

    uint64_t free_byte_offset; /* compressed writes: next free byte of a used cluster, or 0 */
    struct Qcow2TrackedBitmaps *tracked; /* bitmaps whose bits writes set (qcow2-bitmap.c) */

    Qcow2Overlap *overlap; /* where the metadata lives (qcow2-overlap.c) */

    Qcow2Alloc *allocs;      /* in-flight allocating writes */
    uint64_t nb_alloc_waits; /* statistics: requests that waited for an allocation */

    /* cache-clean-interval (qcow2-cache.c): main loop only, the counter under s->lock. */
    uint64_t cache_clean_interval; /* seconds, 0 = off */
    struct AioTimer *cache_clean_timer;
    uint64_t cache_clean_runs; /* statistics: cleaning passes done */

    bool lazy_refcounts;    /* refcount ordering relaxed; image marked dirty while open */
    bool dirty_marked;      /* we set the dirty bit and must clear it on a clean close */
    bool first_write_done;  /* autoclear bits cleared, bitmaps marked in use, dirty set */
    bool corrupt_signalled; /* refuse further writes */
} BDRVQcow2State;

/* ---- geometry helpers ------------------------------------------------------------- */

static inline uint64_t qcow2_round_up(uint64_t x, uint64_t align)
{
    return (x + align - 1) / align * align;
}

static inline uint64_t qcow2_offset_into_cluster(const BDRVQcow2State *s, uint64_t off)
{
    return off & (s->cluster_size - 1);
}

static inline uint64_t qcow2_start_of_cluster(const BDRVQcow2State *s, uint64_t off)
{
    return off & ~(s->cluster_size - 1);
}

static inline uint64_t qcow2_size_to_clusters(const BDRVQcow2State *s, uint64_t size)
{
    return (size + s->cluster_size - 1) >> s->cluster_bits;
}

/* Guest bytes one L2 table maps. */
static inline uint64_t qcow2_l2_span(const BDRVQcow2State *s)
{
    return s->l2_entries << s->cluster_bits;
}

/* L1 entries needed for a disk of @size bytes. */
static inline uint64_t qcow2_l1_entries_for(const BDRVQcow2State *s, uint64_t size)
{
    int shift = s->cluster_bits + s->l2_bits;
    return (size + (1ULL << shift) - 1) >> shift;
}

static inline uint64_t qcow2_l2_entry(const BDRVQcow2State *s, const void *table, uint64_t i)
{
    return qcow2_ld64((const uint8_t *)table + i * 8 * s->l2_entry_words);
}

static inline uint64_t qcow2_l2_bitmap(const BDRVQcow2State *s, const void *table, uint64_t i)
{
    return s->extended_l2 ? qcow2_ld64((const uint8_t *)table + i * 16 + 8) : 0;
}

static inline void qcow2_set_l2_entry(const BDRVQcow2State *s, void *table, uint64_t i,
                                      uint64_t entry)
{
    qcow2_st64((uint8_t *)table + i * 8 * s->l2_entry_words, entry);
}

static inline void qcow2_set_l2_bitmap(const BDRVQcow2State *s, void *table, uint64_t i,
                                       uint64_t bitmap)
{
    if (s->extended_l2) {
        qcow2_st64((uint8_t *)table + i * 16 + 8, bitmap);
    }
}

/*
 * True when an L2 entry names a host cluster.  Offset 0 is a valid host
 * offset only in an external data file, where COPIED marks it allocated.
 */
static inline bool qcow2_entry_has_host(const BDRVQcow2State *s, uint64_t entry)
{
    if (entry & QCOW2_OFLAG_COMPRESSED) {
        return false;
    }
    return (entry & L2E_OFFSET_MASK) || (s->has_data_file && (entry & QCOW2_OFLAG_COPIED));
}

/* ---- qcow2.c: header and state --------------------------------------------------- */

/*
 * The feature name table we write (the features this driver knows, plus
 * @extra entries for features it does not): @len bytes, caller frees.
 */
uint8_t *qcow2_feature_table(const Qcow2Feature *extra, int n_extra, uint32_t *len);
/* Appends one header extension at *pos of @buf; false when it would pass @cap. */
bool qcow2_put_ext(uint8_t *buf, size_t cap, size_t *pos, uint32_t type, const void *data,
                   uint32_t len);
/* Rewrites the whole header cluster from the state.  Under s->lock.  -errno. */
int coroutine_fn qcow2_update_header(BlockDriverState *bs);
/* Writes the incompatible feature bits (and flushes).  Under s->lock.  -errno. */
int coroutine_fn qcow2_write_incompat(BlockDriverState *bs, uint64_t incompat);
/*
 * Work owed before the first change to the image: clear unknown autoclear
 * bits, mark auto bitmaps in use, set the dirty bit with lazy refcounts.
 * Cheap once done.  Under s->lock.  -errno (-EIO once the image is corrupt).
 */
int coroutine_fn qcow2_before_write(BlockDriverState *bs);
/*
 * Reports metadata that breaks the format: prints one line and, for a
 * writable image, sets the corrupt bit so that nobody writes to it again.
 * Returns -EIO for the caller to pass on.  Under s->lock.
 */
int coroutine_fn qcow2_signal_corruption(BlockDriverState *bs, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);

/* ---- qcow2-cache.c ------------------------------------------------------------------- */

/* A cache of @n tables of s->cluster_size bytes each, read from and written to bs->file. */
Qcow2Cache *qcow2_cache_create(BlockDriverState *bs, int n);
/* Frees the cache; its dirty tables are lost (flush first). */
void qcow2_cache_destroy(Qcow2Cache *c);
/*
 * Returns in *table the table at host @offset, reading it on a miss (and
 * writing back the least recently used table if needed).  The table stays
 * pinned until qcow2_cache_put().  -errno.
 */
int coroutine_fn qcow2_cache_get(BlockDriverState *bs, Qcow2Cache *c, uint64_t offset,
                                 void **table);
/* Same, for a table that is about to be filled completely: nothing is read. */
int coroutine_fn qcow2_cache_get_empty(BlockDriverState *bs, Qcow2Cache *c, uint64_t offset,
                                       void **table);
/* Unpins a table obtained with qcow2_cache_get*(); *table becomes NULL. */
void qcow2_cache_put(Qcow2Cache *c, void **table);
/* The pinned @table was modified and must be written back some time. */
void qcow2_cache_mark_dirty(Qcow2Cache *c, void *table);
/*
 * Writes every dirty table of @c to the file, after what it depends on is
 * stable (see qcow2_cache_set_dependency).  Does not flush the file.
 */
int coroutine_fn qcow2_cache_write(BlockDriverState *bs, Qcow2Cache *c);
/* qcow2_cache_write, then flush bs->file: @c's tables are stable. */
int coroutine_fn qcow2_cache_flush(BlockDriverState *bs, Qcow2Cache *c);
/*
 * From now on, no dirty table of @c reaches the file before every table
 * of @dep dirty now is stable.  May flush (to keep dependencies acyclic).
 */
int coroutine_fn qcow2_cache_set_dependency(BlockDriverState *bs, Qcow2Cache *c, Qcow2Cache *dep);
/* No dirty table of @c reaches the file before the data written so far is stable. */
void qcow2_cache_depends_on_flush(Qcow2Cache *c);
/* Forgets the table at @offset (its cluster was freed); it must not be pinned. */
void qcow2_cache_discard(Qcow2Cache *c, uint64_t offset);
/* Forgets every table, dirty or not; none may be pinned. */
void qcow2_cache_clear(Qcow2Cache *c);
/* Number of dirty tables (for tests and assertions). */
int qcow2_cache_nb_dirty(Qcow2Cache *c);
/* Checks the cache's invariants; for assert(). */
bool qcow2_cache_sanity(Qcow2Cache *c);
/*
 * Drops the clean, unpinned tables not got since the previous call and
 * gives their memory back to the system; returns how many.  Under s->lock.
 */
int qcow2_cache_clean_unused(Qcow2Cache *c);
/* Tables held now, and tables dropped by qcow2_cache_clean_unused so far (tests). */
int qcow2_cache_nb_tables(Qcow2Cache *c);
uint64_t qcow2_cache_nb_cleaned(Qcow2Cache *c);
/* True when the table at @offset is in the cache (tests). */
bool qcow2_cache_has(Qcow2Cache *c, uint64_t offset);
/*
 * cache-clean-interval: every @seconds (0 = never) a timer in the calling
 * thread's AioContext (open and reopen run in the main loop) cleans both
 * caches.  Replaces any earlier timer.  Main loop only, no request may be
 * running in the main loop's thread at the time (open, reopen, close).
 */
void qcow2_cache_clean_timer_set(BlockDriverState *bs, uint64_t seconds);

/* ---- qcow2-overlap.c ---------------------------------------------------------------- */

/*
 * The metadata index is built from the in-memory tables at its first use.
 * Whoever moves a table or replaces many entries at once invalidates the
 * classes concerned; single L1 and refcount table entries are followed with
 * add and remove.  All under s->lock.
 */
void qcow2_overlap_invalidate(BDRVQcow2State *s, unsigned classes);
/* An L1 entry (QCOW2_OL_ACTIVE_L2) or refcount table entry (QCOW2_OL_REFCOUNT_BLOCK) now names
 * the cluster at @offset / no longer does. */
void qcow2_overlap_add(BDRVQcow2State *s, Qcow2MetaClass cls, uint64_t offset);
void qcow2_overlap_remove(BDRVQcow2State *s, Qcow2MetaClass cls, uint64_t offset);
/*
 * The lowest class of metadata outside @ignore that host bytes [@offset,
 * @offset + @bytes) overlap, or 0.  Under s->lock.
 */
unsigned qcow2_overlap_find(BDRVQcow2State *s, unsigned ignore, uint64_t offset, uint64_t bytes);
/* What class @cls (its lowest bit; 0 is guest data) is called in messages. */
const char *qcow2_overlap_name(unsigned cls);
/*
 * Before writing @what (a class, or QCOW2_OL_DATA) at host [@offset,
 * @offset + @bytes): 0 when it overlaps no other metadata, else the image
 * is corrupt (qcow2_signal_corruption) and -EIO.  Under s->lock.
 */
int coroutine_fn qcow2_pre_write_check(BlockDriverState *bs, unsigned what, uint64_t offset,
                                       uint64_t bytes);
/* True when the index agrees with the tables it mirrors; for assert() and tests. */
bool qcow2_overlap_sanity(BDRVQcow2State *s);
void qcow2_overlap_free(BDRVQcow2State *s);

/* ---- qcow2-refcount.c -------------------------------------------------------------- */

/* Reads and checks the refcount table (at open). */
int coroutine_fn qcow2_refcount_open(BlockDriverState *bs, GError **errp);
/* Refcount of host cluster @cluster_index.  Under s->lock.  -errno. */
int coroutine_fn qcow2_get_refcount(BlockDriverState *bs, uint64_t cluster_index,
                                    uint64_t *refcount);
/*
 * Allocates @nb contiguous host clusters (refcount 1 each) and returns the
 * byte offset of the first, or -errno.  Under s->lock.
 */
int64_t coroutine_fn qcow2_alloc_clusters(BlockDriverState *bs, uint64_t nb);
/*
 * Allocates @size bytes (0 < size < cluster size) for compressed data:
 * after the previous compressed data in its cluster when they fit there
 * (or run on into the next cluster when that one is free and contiguous),
 * else in a fresh cluster.  Every cluster the bytes touch gains one
 * reference.  Returns the byte offset or -errno.  Under s->lock.
 */
int64_t coroutine_fn qcow2_alloc_bytes(BlockDriverState *bs, uint64_t size);

/*
 * Whether unallocated clusters may read as something other than zeroes: the
 * header names a backing file, or a backing node was attached by reference
 * (a temporary overlay, a job's target) without one being named.
 */
static inline bool qcow2_has_backing(BlockDriverState *bs)
{
    return bs->backing != NULL || bs->backing_file != NULL;
}
/*
 * Drops one reference to each cluster of [@offset, @offset + @size).  The
 * caller made sure nothing on disk points there any more (or ordered the
 * refcount cache after the table that pointed there).  With @discard,
 * clusters that become free are discarded in the file.  Under s->lock.
 */
int coroutine_fn qcow2_free_clusters(BlockDriverState *bs, uint64_t offset, uint64_t size,
                                     bool discard);
/* Frees what an L2 entry points to (normal, zero-allocated or compressed). */
int coroutine_fn qcow2_free_any_cluster(BlockDriverState *bs, uint64_t l2_entry, bool discard);
/*
 * Frees what each of the @n L2 entries points to (any order; the array is
 * reused as scratch), host-contiguous clusters as one run.  With @discard,
 * clusters that become free are discarded in the file, after the L2 cache
 * is written and flushed when @tables_first.  Ordering as for
 * qcow2_free_clusters.  Under s->lock.
 */
int coroutine_fn qcow2_free_l2_entries(BlockDriverState *bs, uint64_t *entries, size_t n,
                                       bool discard, bool tables_first);
/* Host byte range a compressed descriptor covers. */
void qcow2_compressed_range(const BDRVQcow2State *s, uint64_t l2_entry, uint64_t *offset,
                            uint64_t *bytes);
/*
 * Adds @delta to the refcount of each cluster of [@offset, @offset + @size);
 * increments create missing refcount blocks.  Under s->lock.
 */
int coroutine_fn qcow2_update_refcount(BlockDriverState *bs, uint64_t offset, uint64_t size,
                                       int64_t delta);
/* Offset of the refcount block counting cluster @cluster_index, 0 when none. */
uint64_t qcow2_refblock_offset(BDRVQcow2State *s, uint64_t cluster_index);
/* Reads / writes one refcount entry of a refcount block in memory. */
uint64_t qcow2_refblock_get(const BDRVQcow2State *s, const void *block, uint64_t i);
void qcow2_refblock_set(const BDRVQcow2State *s, void *block, uint64_t i, uint64_t v);

/* ---- qcow2-cluster.c ------------------------------------------------------------------ */

/* Reads and checks the active L1 table (at open). */
int coroutine_fn qcow2_l1_open(BlockDriverState *bs, GError **errp);
/*
 * Type of subcluster @sc of an L2 entry, or QCOW2_SC_INVALID when reserved
 * bits are set or the entry contradicts the image's features.
 */
Qcow2SubclusterType qcow2_sc_type(const BDRVQcow2State *s, uint64_t entry, uint64_t bitmap, int sc);
/*
 * Maps guest [@offset, @offset + *bytes): returns the type of the first
 * byte and shrinks *bytes to the run of the same type that is contiguous
 * on the host (never across an L2 table).  *host is the host offset of
 * @offset for NORMAL and ZERO_ALLOC, the L2 entry for COMPRESSED, else 0.
 * Under s->lock.  Returns the type or -errno.
 */
int coroutine_fn qcow2_get_host_offset(BlockDriverState *bs, uint64_t offset, uint64_t *bytes,
                                       uint64_t *host);
/*
 * Prepares a write of guest [@offset, @offset + *bytes).  Shrinks *bytes to
 * the first piece that one host write can serve and sets *host to where
 * its first byte goes.  Returns 0 when the piece is written in place, 1
 * when it needs @alloc (filled here and listed in s->allocs: the caller
 * writes cow_start + data + cow_end, then calls qcow2_alloc_link or
 * qcow2_alloc_abort).  May yield, dropping s->lock, while an allocation
 * of the same clusters runs.  Under s->lock.  -errno.
 */
int coroutine_fn qcow2_alloc_host_offset(BlockDriverState *bs, uint64_t offset, uint64_t *bytes,
                                         uint64_t *host, Qcow2Alloc *alloc);
/* Points the L2 entries at the data @alloc wrote and ends it.  Under s->lock. */
int coroutine_fn qcow2_alloc_link(BlockDriverState *bs, Qcow2Alloc *alloc);
/* Ends a failed @alloc, freeing its clusters.  Under s->lock. */
void coroutine_fn qcow2_alloc_abort(BlockDriverState *bs, Qcow2Alloc *alloc);
/*
 * Prepares a compressed write of @bytes (< cluster size) of compressed data
 * for the guest cluster at @offset: waits for allocations of that cluster,
 * allocates the bytes (qcow2_alloc_bytes) and lists @alloc in s->allocs.
 * The caller writes the data at alloc->host_offset, then calls
 * qcow2_link_compressed or qcow2_abort_compressed.  Under s->lock.  -errno.
 */
int coroutine_fn qcow2_alloc_compressed(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                        Qcow2Alloc *alloc);
/*
 * Points the L2 entry at the compressed data and ends @alloc; whatever the
 * entry pointed to before loses its reference.  Under s->lock.  -errno.
 */
int coroutine_fn qcow2_link_compressed(BlockDriverState *bs, Qcow2Alloc *alloc);
/* Ends a failed compressed @alloc, freeing its bytes.  Under s->lock. */
void coroutine_fn qcow2_abort_compressed(BlockDriverState *bs, Qcow2Alloc *alloc);
/* True when the in-flight allocations cover disjoint clusters; for assert().  Under s->lock. */
bool qcow2_allocs_sanity(BDRVQcow2State *s);
/* Yields (dropping s->lock) until no in-flight allocation overlaps the range. */
void coroutine_fn qcow2_wait_for_allocs(BlockDriverState *bs, uint64_t offset, uint64_t bytes);
/*
 * Makes whole (sub)clusters of the range read as zeroes through the L2
 * entries.  @unmap frees their host clusters.  -ENOTSUP where the format
 * cannot (v2, compressed or shared clusters in a partial cluster).
 * Under s->lock.
 */
int coroutine_fn qcow2_zero_clusters(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                     bool unmap);
/* Drops whole clusters of the range (a guest discard).  Under s->lock. */
int coroutine_fn qcow2_discard_clusters(BlockDriverState *bs, uint64_t offset, uint64_t bytes,
                                        bool full);
/* Writes L1 entry @idx from memory to the image (and flushes).  Under s->lock. */
int coroutine_fn qcow2_write_l1_entry(BlockDriverState *bs, uint64_t idx);
/*
 * Detaches and frees the L2 tables of L1 entries @first and up (their
 * entries must already be empty: truncate).  Under s->lock.
 */
int coroutine_fn qcow2_drop_l2_tables(BlockDriverState *bs, uint64_t first);
/* Makes the L1 table hold at least @min_size entries.  Under s->lock. */
int coroutine_fn qcow2_grow_l1_table(BlockDriverState *bs, uint64_t min_size);
/*
 * Allocates host clusters for every unallocated cluster of guest
 * [@offset, @end) (metadata preallocation).  Under s->lock.
 */
int coroutine_fn qcow2_preallocate(BlockDriverState *bs, uint64_t offset, uint64_t end);

/* ---- qcow2-io.c -------------------------------------------------------------------------- */

int coroutine_fn qcow2_co_preadv_impl(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov);
int coroutine_fn qcow2_co_pwritev_impl(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       IOVector *qiov);

/* ---- qcow2-vmstate.c: the VM state area past the disk; @offset is relative to it ---------- */

int coroutine_fn qcow2_co_preadv_vmstate(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         IOVector *qiov);
int coroutine_fn qcow2_co_pwritev_vmstate(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                          IOVector *qiov);

/* ---- qcow2-compress.c, qcow2-compress-io.c ------------------------------------------------- */

/*
 * Inflates @src into exactly @dest_size bytes of @dest with the image's
 * compression type.  Returns 0, or -EIO when the data is not valid.
 */
int qcow2_decompress(int type, void *dest, size_t dest_size, const void *src, size_t src_size);
/*
 * Compresses @src into at most @dest_size bytes of @dest.  Returns the
 * compressed length, -ENOSPC when it does not fit, -EIO on failure.  Any thread.
 */
ssize_t qcow2_compress(int type, void *dest, size_t dest_size, const void *src, size_t src_size);
/*
 * Writes whole clusters compressed (the last one of the disk may be
 * short); clusters that do not shrink are written normally.  @bytes 0
 * aligns the file's end to a sector.  -EINVAL for a request that is not
 * cluster aligned, -ENOTSUP with an external data file.
 */
int coroutine_fn qcow2_co_pwritev_compressed_impl(BlockDriverState *bs, int64_t offset,
                                                  int64_t bytes, IOVector *qiov);

/* ---- qcow2-snapshot.c -------------------------------------------------------------------- */

/* Reads and checks the snapshot table (at open). */
int coroutine_fn qcow2_snapshots_open(BlockDriverState *bs, GError **errp);
void qcow2_snapshots_free(BDRVQcow2State *s);
extern const struct BdrvSnapshotOps qcow2_snapshot_ops;

/* ---- qcow2-bitmap.c ------------------------------------------------------------------------ */

/* Checks the bitmap directory (at open, when the extension is present). */
int coroutine_fn qcow2_bitmaps_open(BlockDriverState *bs, GError **errp);
/*
 * Before the first write: loads the enabled bitmaps to track writes in
 * memory and marks every enabled bitmap in use on disk.  Cheap when
 * already done.  Under s->lock.  -errno.
 */
int coroutine_fn qcow2_bitmaps_before_write(BlockDriverState *bs);
/* Sets the bits of guest [@offset, @offset + @bytes) in the tracked bitmaps.  Any thread. */
void qcow2_bitmaps_track(BlockDriverState *bs, uint64_t offset, uint64_t bytes);
/* Writes the tracked bitmaps back, no longer in use (close, reopen read-only).  Under s->lock. */
int coroutine_fn qcow2_bitmaps_store(BlockDriverState *bs);
/* Frees the tracked bitmaps (after a failed store, at close). */
void qcow2_bitmaps_free(BDRVQcow2State *s);
extern const struct BdrvBitmapOps qcow2_bitmap_ops;
/* Calls @fn for every host range the bitmaps use (directory, tables, data). */
int coroutine_fn qcow2_bitmaps_foreach_range(
    BlockDriverState *bs, void (*fn)(void *opaque, uint64_t offset, uint64_t bytes), void *opaque);

/* ---- qcow2-check.c ----------------------------------------------------------------------------
 */

/*
 * Recounts every reference in the image and compares with the refcounts.
 * With BDRV_FIX_LEAKS / BDRV_FIX_ERRORS, rewrites the refcounts to match
 * (rebuilding the refcount structure when blocks are missing).  Under
 * s->lock.  -errno when the check itself could not run.
 */
int coroutine_fn qcow2_check_refcounts(BlockDriverState *bs, BdrvCheckResult *res,
                                       BdrvCheckMode fix);

/* ---- qcow2-create.c ---------------------------------------------------------------------------
 */

bool qcow2_create(const char *filename, GHashTable *options, GError **errp);
/* BlockDriver.amend (qcow2-amend.c): qemu-img amend's option changes.  Main loop, drained. */
bool qcow2_amend(BlockDriverState *bs, GHashTable *opts, bool force, GError **errp);

/* ---- qcow2-info.c: BlockDriver.get_specific_info and .measure ---------------------------- */

GVariant *qcow2_get_specific_info(BlockDriverState *bs, GError **errp);
bool qcow2_measure(GHashTable *opts, BlockDriverState *in_bs, int64_t size, BlockMeasureInfo *info,
                   GError **errp);

extern BlockDriver bdrv_qcow2;

#endif /* STRATA_QCOW2_H */
