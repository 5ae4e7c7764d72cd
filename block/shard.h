/*
 * Per-thread shards of the counters that every request updates.
 *
 * A counter that all threads update moves its cache line from core to core
 * on every update: two IOThreads driving one node would spend their time
 * waiting for each other's in-flight and statistics counters.  Such
 * counters are therefore split into BDRV_SHARDS slots, each on its own
 * cache line, and a thread only updates the slot of its shard index.
 * Readers (drain, statistics) sum the slots: reading is rare, updating is
 * per request.
 *
 * Indexes: a thread that asks for the first time gets the lowest index no
 * live thread holds, and gives it back when it exits; it is then the only
 * writer of that slot, so a plain counter there is updated with a load and
 * a store instead of a locked read-modify-write (bdrv_shard_add), which on
 * our test machine costs about 14 ns each.  When all BDRV_SHARDS - 1 such
 * indexes are taken, further threads share the last slot and update it
 * with atomic additions: still correct, only slower.
 *
 * In-flight requests are counted with two monotonic counts per slot,
 * begun and ended, instead of one count going up and down.  A request may
 * end in another thread than it began in (a coroutine moved to another
 * context), so with up-and-down slots read one after the other, a reader
 * could read slot A before such a request begins there, then slot B after
 * it ended there: the -1 in B hides another request still in flight in B,
 * and the sum says 0.  Reading every `ended` first and every `begun` after
 * cannot go wrong that way: an end the reader counted happened after its
 * begin, so the later reads count that begin too.  The difference is thus
 * at least the number of requests in flight during the whole read, and
 * never counts one that ended before the read began.
 *
 * Ordering for drain: begin and end are sequentially consistent
 * read-modify-writes (even in an owned slot: they must be ordered before
 * the loads that follow them) and the reader uses sequentially consistent
 * loads, so a drain that raises a quiesce counter and then reads the
 * slots, and a request that begins and then reads the quiesce counter, see
 * each other as with a single counter (block-priv.h, BDRV_WAIT_IN_FLIGHT).
 */
#ifndef STRATA_BLOCK_SHARD_H
#define STRATA_BLOCK_SHARD_H

#include <glib.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

/* Slots per counter; the last one is shared by threads beyond the first BDRV_SHARDS - 1. */
#define BDRV_SHARDS 16
/*
 * Slots are aligned to this, so that no two threads write one line: two
 * 64-byte lines, since x86 cores prefetch a line's 128-byte buddy along
 * with it, and a neighbour written by another core would still bounce.
 */
#define BDRV_CACHE_LINE 128

/* In bdrv_shard_tls: the slot may have other writers. */
#define BDRV_SHARD_SHARED (1u << 31)

/* The calling thread's index plus one, ORed with BDRV_SHARD_SHARED; 0 until it first asks. */
extern __thread unsigned bdrv_shard_tls;
/* Assigns the calling thread its index and returns the new bdrv_shard_tls. */
unsigned bdrv_shard_assign(void);

/* The calling thread's slot index, in [0, BDRV_SHARDS).  Any thread. */
static inline unsigned bdrv_shard_index(void)
{
    unsigned v = bdrv_shard_tls;
    if (G_UNLIKELY(!v)) {
        v = bdrv_shard_assign();
    }
    return (v & ~BDRV_SHARD_SHARED) - 1;
}

/*
 * Adds @n to a counter in the calling thread's slot (one chosen with
 * bdrv_shard_index() in this thread, without yielding since).  No
 * ordering: for statistics and other sums that order nothing.
 */
static inline void bdrv_shard_add(_Atomic uint64_t *counter, uint64_t n)
{
    if (G_LIKELY(!(bdrv_shard_tls & BDRV_SHARD_SHARED))) {
        uint64_t v = atomic_load_explicit(counter, memory_order_relaxed);
        atomic_store_explicit(counter, v + n, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(counter, n, memory_order_relaxed);
    }
}

/* One slot of an in-flight counter; zero-initialised. */
typedef struct BdrvInFlight {
    _Atomic uint64_t begun;
    _Atomic uint64_t ended;
} BdrvInFlight;

static inline void bdrv_in_flight_begin(BdrvInFlight *slot)
{
    atomic_fetch_add(&slot->begun, 1);
}

static inline void bdrv_in_flight_end(BdrvInFlight *slot)
{
    atomic_fetch_add(&slot->ended, 1);
}

/*
 * Requests in flight in the BDRV_SHARDS slots that start at @first and lie
 * @stride bytes apart: at least those in flight during the whole call,
 * none that ended before it.  Any thread.
 */
uint64_t bdrv_in_flight_count(const BdrvInFlight *first, size_t stride);

/* Sum of a counter over the BDRV_SHARDS slots that start at @first, @stride bytes apart. */
uint64_t bdrv_shard_sum(const _Atomic uint64_t *first, size_t stride);

#endif /* STRATA_BLOCK_SHARD_H */
