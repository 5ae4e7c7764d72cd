/*
 * qcow2 metadata table cache: a fixed number of cluster-sized tables (L2
 * tables, or refcount blocks) kept in memory, least recently used first
 * out, with dirty tracking and write-back ordering.
 *
 * Ordering.  A cache may depend on another cache (its dirty tables reach
 * the file only after the other's dirty tables are stable, flushed) and on
 * a flush of the file (its dirty tables reach the file only after the data
 * written so far is stable).  qcow2 uses this for crash safety: an L2 table
 * that points at new clusters waits for their refcounts and their data; a
 * refcount block that frees clusters waits for the L2 tables that stopped
 * pointing at them.  Dependencies form no cycle: setting one that would
 * close a cycle flushes first.
 *
 * Locking: every function runs under the node's s->lock (the caller holds
 * it), which is kept across the cache's own I/O, so the cache itself needs
 * no lock.  A pinned table (between get and put) is never evicted.
 *
 * Cleaning (cache-clean-interval): a timer in the main loop starts a
 * coroutine that takes s->lock like any request, so it is safe against
 * requests from IOThreads; it counts as in flight, so drain and close wait
 * for it, and it skips its turn while the node is drained.  It drops the
 * clean tables nobody got since the previous pass and madvise()s their
 * memory away: an idle image gives its cache memory back.
 *
 * Invariants (checked by qcow2_cache_sanity):
 *  - index maps offset -> slot + 1 for exactly the slots with offset != 0;
 *  - nb_dirty counts the slots with dirty set; a dirty slot has an offset;
 *  - the LRU list links every slot once.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "aio/aio.h"
#include "drivers/qcow2/qcow2.h"

typedef struct Qcow2CacheEntry {
    uint64_t offset; /* 0: empty (offset 0 is the header, never a table) */
    int ref;         /* pins */
    bool dirty;
    bool used;      /* got since the last cleaning pass */
    int prev, next; /* LRU list, most recent at head; -1 ends it */
} Qcow2CacheEntry;

struct Qcow2Cache {
    int n;
    size_t table_size;
    uint8_t *tables;
    Qcow2CacheEntry *e;
    GHashTable *index;
    int head, tail;
    int nb_dirty;
    Qcow2Cache *depends;
    bool depends_on_flush;
    uint64_t nb_cleaned; /* tables dropped by cleaning passes */
};

static void *slot_table(Qcow2Cache *c, int i)
{
    return c->tables + (size_t)i * c->table_size;
}

static int table_slot(Qcow2Cache *c, void *table)
{
    ptrdiff_t d = (uint8_t *)table - c->tables;
    g_assert(d >= 0 && d % (ptrdiff_t)c->table_size == 0 && d / c->table_size < (size_t)c->n);
    return d / c->table_size;
}

static void lru_unlink(Qcow2Cache *c, int i)
{
    Qcow2CacheEntry *e = &c->e[i];
    if (e->prev >= 0) {
        c->e[e->prev].next = e->next;
    } else {
        c->head = e->next;
    }
    if (e->next >= 0) {
        c->e[e->next].prev = e->prev;
    } else {
        c->tail = e->prev;
    }
    e->prev = e->next = -1;
}

static void lru_push_head(Qcow2Cache *c, int i)
{
    Qcow2CacheEntry *e = &c->e[i];
    e->prev = -1;
    e->next = c->head;
    if (c->head >= 0) {
        c->e[c->head].prev = i;
    }
    c->head = i;
    if (c->tail < 0) {
        c->tail = i;
    }
}

static void lru_push_tail(Qcow2Cache *c, int i)
{
    Qcow2CacheEntry *e = &c->e[i];
    e->next = -1;
    e->prev = c->tail;
    if (c->tail >= 0) {
        c->e[c->tail].next = i;
    }
    c->tail = i;
    if (c->head < 0) {
        c->head = i;
    }
}

Qcow2Cache *qcow2_cache_create(BlockDriverState *bs, int n)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2Cache *c = g_new0(Qcow2Cache, 1);
    void *mem;

    g_assert(n > 0);
    c->n = n;
    c->table_size = s->cluster_size;
    if (posix_memalign(&mem, 4096, (size_t)n * c->table_size) != 0) {
        g_error("qcow2: out of memory for a %d-table cache", n);
    }
    c->tables = mem;
    c->e = g_new0(Qcow2CacheEntry, n);
    c->index = g_hash_table_new(g_direct_hash, g_direct_equal);
    c->head = c->tail = -1;
    for (int i = 0; i < n; i++) {
        c->e[i].prev = c->e[i].next = -1;
        lru_push_tail(c, i);
    }
    return c;
}

void qcow2_cache_destroy(Qcow2Cache *c)
{
    if (!c) {
        return;
    }
    g_hash_table_unref(c->index);
    g_free(c->e);
    free(c->tables);
    g_free(c);
}

bool qcow2_cache_sanity(Qcow2Cache *c)
{
    int dirty = 0, used = 0, seen = 0;
    for (int i = 0; i < c->n; i++) {
        Qcow2CacheEntry *e = &c->e[i];
        if (e->dirty) {
            dirty++;
            if (!e->offset) {
                return false;
            }
        }
        if (e->offset) {
            used++;
            gpointer v = g_hash_table_lookup(c->index, GSIZE_TO_POINTER(e->offset));
            if (GPOINTER_TO_INT(v) != i + 1) {
                return false;
            }
        }
        if (e->ref < 0) {
            return false;
        }
    }
    for (int i = c->head; i >= 0; i = c->e[i].next) {
        if (++seen > c->n) {
            return false;
        }
    }
    return dirty == c->nb_dirty && used == (int)g_hash_table_size(c->index) && seen == c->n;
}

int qcow2_cache_nb_dirty(Qcow2Cache *c)
{
    return c->nb_dirty;
}

/* Flushes the file(s) so that data written before this point is stable. */
static int coroutine_fn cache_flush_files(BlockDriverState *bs)
{
    BDRVQcow2State *s = bs->opaque;
    int ret = bdrv_co_flush(bs->file->bs);
    if (ret == 0 && s->data_file != bs->file) {
        ret = bdrv_co_flush(s->data_file->bs);
    }
    return ret;
}

/* Makes what @c's dirty tables depend on stable, and forgets the dependency. */
static int coroutine_fn cache_settle_dependencies(BlockDriverState *bs, Qcow2Cache *c)
{
    int ret;
    if (c->depends) {
        ret = qcow2_cache_flush(bs, c->depends);
        if (ret < 0) {
            return ret;
        }
        c->depends = NULL;
        /* That flush covered the image file; a data file may still need one. */
        if (c->depends_on_flush) {
            BDRVQcow2State *s = bs->opaque;
            ret = s->data_file != bs->file ? bdrv_co_flush(s->data_file->bs) : 0;
            if (ret < 0) {
                return ret;
            }
            c->depends_on_flush = false;
        }
    }
    if (c->depends_on_flush) {
        ret = cache_flush_files(bs);
        if (ret < 0) {
            return ret;
        }
        c->depends_on_flush = false;
    }
    return 0;
}

static int coroutine_fn cache_write_slot(BlockDriverState *bs, Qcow2Cache *c, int i)
{
    Qcow2CacheEntry *e = &c->e[i];
    if (!e->dirty) {
        return 0;
    }
    int ret = cache_settle_dependencies(bs, c);
    if (ret < 0) {
        return ret;
    }
    /* Settling may have yielded; the slot cannot change (we hold s->lock) but recheck. */
    if (!e->dirty) {
        return 0;
    }
    BDRVQcow2State *s = bs->opaque;
    /* A table read from where other metadata lives must never be written back over it. */
    ret = qcow2_pre_write_check(bs, c == s->l2_cache ? QCOW2_OL_ACTIVE_L2 : QCOW2_OL_REFCOUNT_BLOCK,
                                e->offset, c->table_size);
    if (ret < 0) {
        return ret;
    }
    bdrv_debug_event(bs->file, c == s->l2_cache ? BLKDBG_L2_UPDATE : BLKDBG_REFBLOCK_UPDATE_PART);
    ret = bdrv_co_pwrite(bs->file, e->offset, c->table_size, slot_table(c, i), 0);
    if (ret < 0) {
        return ret;
    }
    e->dirty = false;
    c->nb_dirty--;
    return 0;
}

int coroutine_fn qcow2_cache_write(BlockDriverState *bs, Qcow2Cache *c)
{
    int result = 0;
    if (c->nb_dirty == 0) {
        return 0;
    }
    for (int i = 0; i < c->n; i++) {
        int ret = cache_write_slot(bs, c, i);
        /* Keep going: write what can be written, report the first error. */
        if (ret < 0 && result == 0) {
            result = ret;
        }
    }
    return result;
}

int coroutine_fn qcow2_cache_flush(BlockDriverState *bs, Qcow2Cache *c)
{
    int ret = qcow2_cache_write(bs, c);
    if (ret == 0) {
        ret = bdrv_co_flush(bs->file->bs);
    }
    return ret;
}

int coroutine_fn qcow2_cache_set_dependency(BlockDriverState *bs, Qcow2Cache *c, Qcow2Cache *dep)
{
    int ret;
    if (c->depends == dep) {
        return 0;
    }
    /* Keep chains one link long: whatever @dep waits for is settled now. */
    if (dep->depends) {
        ret = qcow2_cache_flush(bs, dep);
        if (ret < 0) {
            return ret;
        }
    }
    if (c->depends) {
        ret = qcow2_cache_flush(bs, c);
        if (ret < 0) {
            return ret;
        }
    }
    c->depends = dep;
    return 0;
}

void qcow2_cache_depends_on_flush(Qcow2Cache *c)
{
    c->depends_on_flush = true;
}

static int cache_lookup(Qcow2Cache *c, uint64_t offset)
{
    return GPOINTER_TO_INT(g_hash_table_lookup(c->index, GSIZE_TO_POINTER(offset))) - 1;
}

/* Picks the least recently used unpinned slot and empties it (writing it back if dirty). */
static int coroutine_fn cache_evict(BlockDriverState *bs, Qcow2Cache *c)
{
    for (int i = c->tail; i >= 0; i = c->e[i].prev) {
        Qcow2CacheEntry *e = &c->e[i];
        if (e->ref) {
            continue;
        }
        int ret = cache_write_slot(bs, c, i);
        if (ret < 0) {
            return ret;
        }
        if (e->offset) {
            g_hash_table_remove(c->index, GSIZE_TO_POINTER(e->offset));
            e->offset = 0;
        }
        return i;
    }
    /* Every table pinned: the caches are sized so that this cannot happen. */
    g_error("qcow2: all %d cache tables are in use", c->n);
}

static int coroutine_fn cache_do_get(BlockDriverState *bs, Qcow2Cache *c, uint64_t offset,
                                     void **table, bool read)
{
    BDRVQcow2State *s = bs->opaque;
    if (!offset || (offset & (s->cluster_size - 1))) {
        /* Callers check what they take from the image; this is the last line of defence. */
        return qcow2_signal_corruption(bs, "Metadata table offset 0x%" PRIx64 " is invalid",
                                       offset);
    }

    int i = cache_lookup(c, offset);
    if (i < 0) {
        i = cache_evict(bs, c);
        if (i < 0) {
            return i;
        }
        if (read) {
            bdrv_debug_event(bs->file, c == s->l2_cache ? BLKDBG_L2_LOAD : BLKDBG_REFBLOCK_LOAD);
            int ret = bdrv_co_pread(bs->file, offset, c->table_size, slot_table(c, i), 0);
            if (ret < 0) {
                return ret;
            }
        }
        c->e[i].offset = offset;
        g_hash_table_insert(c->index, GSIZE_TO_POINTER(offset), GINT_TO_POINTER(i + 1));
    }
    c->e[i].ref++;
    c->e[i].used = true;
    lru_unlink(c, i);
    lru_push_head(c, i);
    *table = slot_table(c, i);
    return 0;
}

int coroutine_fn qcow2_cache_get(BlockDriverState *bs, Qcow2Cache *c, uint64_t offset, void **table)
{
    return cache_do_get(bs, c, offset, table, true);
}

int coroutine_fn qcow2_cache_get_empty(BlockDriverState *bs, Qcow2Cache *c, uint64_t offset,
                                       void **table)
{
    return cache_do_get(bs, c, offset, table, false);
}

void qcow2_cache_put(Qcow2Cache *c, void **table)
{
    int i = table_slot(c, *table);
    g_assert(c->e[i].ref > 0);
    c->e[i].ref--;
    *table = NULL;
}

void qcow2_cache_mark_dirty(Qcow2Cache *c, void *table)
{
    int i = table_slot(c, table);
    g_assert(c->e[i].offset && c->e[i].ref > 0);
    if (!c->e[i].dirty) {
        c->e[i].dirty = true;
        c->nb_dirty++;
    }
}

static void cache_drop_slot(Qcow2Cache *c, int i)
{
    Qcow2CacheEntry *e = &c->e[i];
    g_assert(e->ref == 0);
    if (e->dirty) {
        e->dirty = false;
        c->nb_dirty--;
    }
    if (e->offset) {
        g_hash_table_remove(c->index, GSIZE_TO_POINTER(e->offset));
        e->offset = 0;
    }
    /* Empty slots are the first to be reused. */
    lru_unlink(c, i);
    lru_push_tail(c, i);
}

void qcow2_cache_discard(Qcow2Cache *c, uint64_t offset)
{
    int i = cache_lookup(c, offset);
    if (i >= 0) {
        cache_drop_slot(c, i);
    }
}

void qcow2_cache_clear(Qcow2Cache *c)
{
    for (int i = 0; i < c->n; i++) {
        cache_drop_slot(c, i);
    }
    c->depends = NULL;
    c->depends_on_flush = false;
}

/* ---- cleaning (cache-clean-interval) ------------------------------------------------- */

/* Gives the whole pages of slot @i back to the system; they read as zeroes afterwards. */
static void cache_release_memory(Qcow2Cache *c, int i)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t start = (uintptr_t)slot_table(c, i);
    uintptr_t end = start + c->table_size;
    start = (start + page - 1) & ~(page - 1);
    end &= ~(page - 1);
    /* Tables smaller than a page share it with others and stay (as in QEMU). */
    if (end > start) {
        madvise((void *)start, end - start, MADV_DONTNEED);
    }
}

int qcow2_cache_clean_unused(Qcow2Cache *c)
{
    int dropped = 0;
    for (int i = 0; i < c->n; i++) {
        Qcow2CacheEntry *e = &c->e[i];
        /* Dirty tables would need I/O; they are written back by the next flush anyway. */
        if (e->offset && !e->used && !e->ref && !e->dirty) {
            cache_drop_slot(c, i);
            cache_release_memory(c, i);
            dropped++;
        }
        e->used = false;
    }
    c->nb_cleaned += dropped;
    return dropped;
}

int qcow2_cache_nb_tables(Qcow2Cache *c)
{
    return (int)g_hash_table_size(c->index);
}

uint64_t qcow2_cache_nb_cleaned(Qcow2Cache *c)
{
    return c->nb_cleaned;
}

bool qcow2_cache_has(Qcow2Cache *c, uint64_t offset)
{
    return cache_lookup(c, offset) >= 0;
}

static void coroutine_fn cache_clean_entry(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVQcow2State *s = bs->opaque;

    co_mutex_lock(&s->lock);
    qcow2_cache_clean_unused(s->l2_cache);
    qcow2_cache_clean_unused(s->refblock_cache);
    s->cache_clean_runs++;
    co_mutex_unlock(&s->lock);
    bdrv_dec_in_flight(bs);
}

static void cache_clean_timer_cb(void *opaque)
{
    BlockDriverState *bs = opaque;
    BDRVQcow2State *s = bs->opaque;

    /* A drained node starts nothing new; the tables wait for the next turn. */
    if (atomic_load(&bs->quiesce_counter) == 0) {
        bdrv_inc_in_flight(bs);
        co_enter(co_create(cache_clean_entry, bs));
    }
    aio_timer_mod(s->cache_clean_timer,
                  aio_clock_ns() + (int64_t)s->cache_clean_interval * 1000000000LL);
}

void qcow2_cache_clean_timer_set(BlockDriverState *bs, uint64_t seconds)
{
    BDRVQcow2State *s = bs->opaque;
    AioContext *ctx = aio_get_current();

    if (s->cache_clean_timer) {
        aio_timer_free(s->cache_clean_timer);
        s->cache_clean_timer = NULL;
    }
    s->cache_clean_interval = seconds;
    /* Without an event loop in this thread nothing could run the timer. */
    if (seconds == 0 || !ctx) {
        return;
    }
    s->cache_clean_timer = aio_timer_new(ctx, cache_clean_timer_cb, bs);
    aio_timer_mod(s->cache_clean_timer, aio_clock_ns() + (int64_t)seconds * 1000000000LL);
}
