/*
 * Drained sections: quiescing a node and everything that sends it requests.
 *
 * Quiescing flows upwards.  Raising a node's quiesce_counter from 0 tells
 * each parent edge once (BdrvChild.quiesced_parent remembers it): a node
 * parent quiesces itself in turn, a BlockBackend starts queueing new
 * requests.  Waiting then covers the node and everything above it, since
 * a request below a node is always part of a request counted in flight at
 * that node.  Children are not quiesced: requests from their other
 * parents do not concern this section (drain those nodes too if they do).
 *
 * Because the per-edge flag, not the walk, records who was told, the graph
 * may change inside a section: an edge that starts pointing at a quiesced
 * node quiesces its parent, an edge that leaves one releases it
 * (bdrv_child_drain_before/after_switch), and every begin is matched by
 * exactly one end.
 *
 * Main loop only: quiesce_counter is atomic because the request path
 * reads it in other threads, but it only changes here.  A coroutine that
 * asks for a drain yields while a bottom half in the main loop does it.
 */
#include "block/block-priv.h"

/* Read by every request completion, written only by waiters: a line of its own. */
_Atomic unsigned bdrv_drain_waiters __attribute__((aligned(BDRV_CACHE_LINE)));

int bdrv_drain_all_count;

static void bdrv_parent_drained_begin(BlockDriverState *bs)
{
    for (GList *l = bs->parents; l; l = l->next) {
        BdrvChild *c = l->data;
        if (!c->quiesced_parent) {
            c->quiesced_parent = true;
            if (c->klass->drained_begin) {
                c->klass->drained_begin(c);
            }
        }
    }
}

static void bdrv_parent_drained_end(BlockDriverState *bs)
{
    /* A parent's drained_end may end in a graph change: walk a copy. */
    GList *parents = g_list_copy(bs->parents);
    for (GList *l = parents; l; l = l->next) {
        BdrvChild *c = l->data;
        if (c->quiesced_parent) {
            c->quiesced_parent = false;
            if (c->klass->drained_end) {
                c->klass->drained_end(c);
            }
        }
    }
    g_list_free(parents);
}

void bdrv_do_drained_begin_quiesce(BlockDriverState *bs)
{
    GLOBAL_STATE_CODE();
    if (atomic_fetch_add(&bs->quiesce_counter, 1) == 0) {
        bdrv_parent_drained_begin(bs);
        if (bs->drv && bs->drv->drain_begin) {
            bs->drv->drain_begin(bs);
        }
    }
}

void bdrv_do_drained_end(BlockDriverState *bs)
{
    GLOBAL_STATE_CODE();
    int old = atomic_fetch_sub(&bs->quiesce_counter, 1);
    g_assert(old > 0);
    if (old == 1) {
        if (bs->drv && bs->drv->drain_end) {
            bs->drv->drain_end(bs);
        }
        bdrv_parent_drained_end(bs);
    }
}

bool bdrv_drain_poll(BlockDriverState *bs)
{
    if (bdrv_get_in_flight(bs) > 0) {
        return true;
    }
    for (GList *l = bs->parents; l; l = l->next) {
        BdrvChild *c = l->data;
        if (c->klass->drained_poll && c->klass->drained_poll(c)) {
            return true;
        }
    }
    return false;
}

void bdrv_child_drain_before_switch(BdrvChild *c, BlockDriverState *new_bs)
{
    if (new_bs && atomic_load(&new_bs->quiesce_counter) > 0 && !c->quiesced_parent) {
        c->quiesced_parent = true;
        if (c->klass->drained_begin) {
            c->klass->drained_begin(c);
        }
    }
}

void bdrv_child_drain_after_switch(BdrvChild *c)
{
    if (c->quiesced_parent && (!c->bs || atomic_load(&c->bs->quiesce_counter) == 0)) {
        c->quiesced_parent = false;
        if (c->klass->drained_end) {
            c->klass->drained_end(c);
        }
    }
}

/* ---- coroutine callers ------------------------------------------------------ */

typedef struct DrainCo {
    Coroutine *co;
    BlockDriverState *bs; /* NULL: drain all */
    bool begin;
} DrainCo;

static void drain_co_bh(void *opaque)
{
    DrainCo *d = opaque;
    if (d->bs) {
        (d->begin ? bdrv_drained_begin : bdrv_drained_end)(d->bs);
    } else {
        (d->begin ? bdrv_drain_all_begin : bdrv_drain_all_end)();
    }
    aio_co_wake(d->co);
}

/*
 * Nested event loops must not run in a coroutine: hand the work to the
 * main loop and sleep until it is done.  The caller must not itself be a
 * request in flight on the drained nodes, or the drain waits for it.
 */
static void coroutine_fn drain_from_coroutine(BlockDriverState *bs, bool begin)
{
    DrainCo d = {.co = co_self(), .bs = bs, .begin = begin};
    if (bs) {
        bdrv_ref(bs);
    }
    aio_bh_schedule_oneshot(aio_main_context(), drain_co_bh, &d);
    co_yield();
    if (bs) {
        bdrv_unref(bs);
    }
}

/* ---- public entry points ----------------------------------------------------- */

void bdrv_drained_begin(BlockDriverState *bs)
{
    if (co_in_coroutine()) {
        drain_from_coroutine(bs, true);
        return;
    }
    GLOBAL_STATE_CODE();
    bdrv_do_drained_begin_quiesce(bs);
    BDRV_WAIT_IN_FLIGHT(bdrv_drain_poll(bs));
}

void bdrv_drained_end(BlockDriverState *bs)
{
    if (co_in_coroutine()) {
        drain_from_coroutine(bs, false);
        return;
    }
    GLOBAL_STATE_CODE();
    bdrv_do_drained_end(bs);
}

bool bdrv_is_drained(BlockDriverState *bs)
{
    return atomic_load(&bs->quiesce_counter) > 0;
}

static bool bdrv_drain_all_poll(void)
{
    GList *nodes = bdrv_get_all_nodes();
    bool busy = false;
    for (GList *l = nodes; l && !busy; l = l->next) {
        busy = bdrv_drain_poll(l->data);
    }
    g_list_free(nodes);
    return busy;
}

void bdrv_drain_all_begin(void)
{
    if (co_in_coroutine()) {
        drain_from_coroutine(NULL, true);
        return;
    }
    GLOBAL_STATE_CODE();
    GList *nodes = bdrv_get_all_nodes();
    for (GList *l = nodes; l; l = l->next) {
        bdrv_do_drained_begin_quiesce(l->data);
    }
    g_list_free(nodes);
    /* Nodes created from now on start quiesced (bdrv_new reads the count). */
    bdrv_drain_all_count++;
    BDRV_WAIT_IN_FLIGHT(bdrv_drain_all_poll());
}

void bdrv_drain_all_end(void)
{
    if (co_in_coroutine()) {
        drain_from_coroutine(NULL, false);
        return;
    }
    GLOBAL_STATE_CODE();
    g_assert(bdrv_drain_all_count > 0);
    bdrv_drain_all_count--;
    /* Hold every node: ending a section may let a parent drop its last reference. */
    GList *nodes = bdrv_get_all_nodes();
    for (GList *l = nodes; l; l = l->next) {
        bdrv_ref(l->data);
    }
    for (GList *l = nodes; l; l = l->next) {
        bdrv_do_drained_end(l->data);
    }
    for (GList *l = nodes; l; l = l->next) {
        bdrv_unref(l->data);
    }
    g_list_free(nodes);
}

void bdrv_drain_all(void)
{
    bdrv_drain_all_begin();
    bdrv_drain_all_end();
}
