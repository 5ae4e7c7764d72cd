/*
 * Private to block/: what the core's files (block.c, graph.c,
 * permissions.c, drain.c, io.c, reopen.c) share and nobody else calls.
 * Calling context is stated per function, as in the public headers.
 */
#ifndef STRATA_BLOCK_PRIV_H
#define STRATA_BLOCK_PRIV_H

#include "block/block-int.h"

/* --- block.c --- */

/* A fresh node with one reference, in the node list; main loop. */
BlockDriverState *bdrv_new(void);
/*
 * Opens a node of @drv, consuming @options: applies the generic options,
 * attaches @file (taking over the caller's reference) when given, runs the
 * driver, opens the backing chain and rejects leftover options.
 */
BlockDriverState *bdrv_open_driver(BlockDriver *drv, const char *filename, BlockDriverState *file,
                                   GHashTable *options, int flags, bool probed, GError **errp);
/*
 * True when @buf (sector 0 about to be written) would probe as a format
 * other than the fallback one: writing it to a probed raw image would turn
 * the image into something else at the next open.  Any thread.
 */
bool bdrv_probe_matches_other_format(const uint8_t *buf, int len);

/* --- graph.c --- */

/* The edge class of node parents (formats and filters above a node). */
extern const BdrvChildClass bdrv_child_of_bds;
/* Edges are linked here under the writer lock; main loop. */
void bdrv_child_free(BdrvChild *c);

/* --- permissions.c --- */

/* The permissions @parent_bs wants on its child edge @c, from its own cumulative ones. */
void bdrv_child_compute_perm(BlockDriverState *parent_bs, BdrvChild *c, uint64_t *nperm,
                             uint64_t *nshared);

/* --- drain.c --- */

/* Number of open bdrv_drain_all sections: new nodes start that quiesced. */
extern int bdrv_drain_all_count;
/* Raises the quiesce counter (telling parents on 0 -> 1) without waiting. */
void bdrv_do_drained_begin_quiesce(BlockDriverState *bs);
/* Lowers it (releasing parents on 1 -> 0); the counterpart of both begins. */
void bdrv_do_drained_end(BlockDriverState *bs);
/* True while @bs or a parent above it has a request in flight. */
bool bdrv_drain_poll(BlockDriverState *bs);
/*
 * Moves the quiesced state of edge @c when its child changes from @old_bs
 * to @new_bs: a parent newly below a quiesced node is quiesced too, one
 * no longer below any is released.  Called around the pointer switch.
 */
void bdrv_child_drain_before_switch(BdrvChild *c, BlockDriverState *new_bs);
void bdrv_child_drain_after_switch(BdrvChild *c);

/* --- io.c --- */

/* Re-reads the length from the driver into the cache; main loop. */
int64_t bdrv_refresh_total_bytes(BlockDriverState *bs);

/*
 * Waiting for in-flight counters to drop (drain, blk_drain).  Completions
 * kick the main loop only while somebody waits this way: a kick per
 * request would cost the main loop a wake-up per request whenever
 * requests run in IOThreads and the main loop sleeps in AIO_WAIT_WHILE
 * for something else.  The counters are per-thread slots (shard.h), so a
 * completion cannot tell whether the total reached zero: it kicks after
 * every end while a waiter exists, which only costs anything during a
 * drain.  Ordering: all sequentially consistent; the waiter increments
 * bdrv_drain_waiters then reads the counters, the completer updates its
 * counter then reads bdrv_drain_waiters, so either the waiter sees the
 * end or the completer sees the waiter and kicks.  The completer's side
 * is a plain load: bdrv_drain_waiters stays in every core's cache instead
 * of bouncing between them on each request.
 */
extern _Atomic unsigned bdrv_drain_waiters;

#define BDRV_WAIT_IN_FLIGHT(cond)                                                                  \
    do {                                                                                           \
        atomic_fetch_add(&bdrv_drain_waiters, 1);                                                  \
        AIO_WAIT_WHILE(cond);                                                                      \
        atomic_fetch_sub(&bdrv_drain_waiters, 1);                                                  \
    } while (0)

/* Called after a request's end was counted in an in-flight counter. */
static inline void bdrv_kick_drain_waiters(void)
{
    if (G_UNLIKELY(atomic_load(&bdrv_drain_waiters))) {
        aio_wait_kick();
    }
}

#endif /* STRATA_BLOCK_PRIV_H */
