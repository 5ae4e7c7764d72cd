/*
 * Graph changes: attaching and detaching edges, moving parents from one
 * node to another (bdrv_replace_node), filters in and out, backing links.
 *
 * Main loop only, outside coroutines.  Every change follows one recipe:
 * drain the nodes whose parent lists change, take the graph writer lock,
 * switch pointers and recompute permissions (rolling back on conflict),
 * release the lock, end the drain.  Reference counts move after the drain
 * ends, because dropping the last reference closes a node, which drains.
 */
#include "block/block-priv.h"

/* ---- node parents ------------------------------------------------------ */

static char *child_of_bds_desc(BdrvChild *c)
{
    BlockDriverState *parent = c->opaque;
    return g_strdup_printf("node '%s'", parent->node_name);
}

static void child_of_bds_drained_begin(BdrvChild *c)
{
    bdrv_do_drained_begin_quiesce(c->opaque);
}

static void child_of_bds_drained_end(BdrvChild *c)
{
    bdrv_do_drained_end(c->opaque);
}

static bool child_of_bds_drained_poll(BdrvChild *c)
{
    return bdrv_drain_poll(c->opaque);
}

const BdrvChildClass bdrv_child_of_bds = {
    .parent_is_bds = true,
    .get_parent_desc = child_of_bds_desc,
    .drained_begin = child_of_bds_drained_begin,
    .drained_end = child_of_bds_drained_end,
    .drained_poll = child_of_bds_drained_poll,
};

void bdrv_child_free(BdrvChild *c)
{
    g_free(c->name);
    g_free(c);
}

/* ---- edge switching (writer lock held) ---------------------------------- */

/* Points @c at @new_bs (NULL unlinks), keeping parent lists and drain state right. */
static void bdrv_replace_child_noperm(BdrvChild *c, BlockDriverState *new_bs)
{
    BlockDriverState *old_bs = c->bs;

    g_assert(bdrv_graph_wrlock_held());
    bdrv_child_drain_before_switch(c, new_bs);
    if (old_bs) {
        old_bs->parents = g_list_remove(old_bs->parents, c);
    }
    c->bs = new_bs;
    if (new_bs) {
        new_bs->parents = g_list_append(new_bs->parents, c);
    }
    bdrv_child_drain_after_switch(c);
}

/* True when @needle is @bs or below it. */
static bool bdrv_in_subtree(BlockDriverState *bs, BlockDriverState *needle)
{
    if (bs == needle) {
        return true;
    }
    for (GList *l = bs->children; l; l = l->next) {
        if (bdrv_in_subtree(((BdrvChild *)l->data)->bs, needle)) {
            return true;
        }
    }
    return false;
}

static BdrvChild *bdrv_attach_child_common(BlockDriverState *child_bs, const char *name,
                                           const BdrvChildClass *klass, BdrvChildRole role,
                                           uint64_t perm, uint64_t shared, void *opaque,
                                           BlockDriverState *parent_bs, GError **errp)
{
    BdrvChild *c = g_new0(BdrvChild, 1);
    bool ok;

    c->name = g_strdup(name);
    c->klass = klass;
    c->role = role;
    c->opaque = opaque;
    c->perm = perm;
    c->shared_perm = shared;
    if (parent_bs) {
        if (bdrv_in_subtree(child_bs, parent_bs)) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Making '%s' a child of '%s' would create a cycle", child_bs->node_name,
                        parent_bs->node_name);
            bdrv_child_free(c);
            bdrv_unref(child_bs);
            return NULL;
        }
        bdrv_child_compute_perm(parent_bs, c, &c->perm, &c->shared_perm);
    }

    bdrv_drained_begin(child_bs);
    bdrv_graph_wrlock();
    bdrv_replace_child_noperm(c, child_bs);
    ok = bdrv_refresh_perms(child_bs, errp);
    if (ok && parent_bs) {
        parent_bs->children = g_list_append(parent_bs->children, c);
    } else if (!ok) {
        bdrv_replace_child_noperm(c, NULL);
    }
    bdrv_graph_wrunlock();
    bdrv_drained_end(child_bs);

    if (!ok) {
        bdrv_child_free(c);
        bdrv_unref(child_bs);
        return NULL;
    }
    return c;
}

BdrvChild *bdrv_root_attach_child(BlockDriverState *bs, const char *name,
                                  const BdrvChildClass *klass, BdrvChildRole role, uint64_t perm,
                                  uint64_t shared, void *opaque, GError **errp)
{
    GLOBAL_STATE_CODE();
    return bdrv_attach_child_common(bs, name, klass, role, perm, shared, opaque, NULL, errp);
}

BdrvChild *bdrv_attach_child(BlockDriverState *parent, BlockDriverState *child, const char *name,
                             BdrvChildRole role, GError **errp)
{
    GLOBAL_STATE_CODE();
    return bdrv_attach_child_common(child, name, &bdrv_child_of_bds, role, 0, BLK_PERM_ALL, parent,
                                    parent, errp);
}

/* Unlinks @c from its node and its parent; frees it.  The node keeps its references. */
static void bdrv_detach_child(BdrvChild *c)
{
    BlockDriverState *bs = c->bs;
    BlockDriverState *parent = c->klass->parent_is_bds ? c->opaque : NULL;

    bdrv_drained_begin(bs);
    bdrv_graph_wrlock();
    if (parent) {
        parent->children = g_list_remove(parent->children, c);
        if (parent->file == c) {
            parent->file = NULL;
        }
        if (parent->backing == c) {
            parent->backing = NULL;
        }
    }
    bdrv_replace_child_noperm(c, NULL);
    /* Fewer users only loosen constraints: this cannot fail on our side. */
    bdrv_refresh_perms(bs, NULL);
    bdrv_graph_wrunlock();
    bdrv_drained_end(bs);
    bdrv_child_free(c);
}

void bdrv_root_unref_child(BdrvChild *child)
{
    GLOBAL_STATE_CODE();
    BlockDriverState *bs = child->bs;
    bdrv_detach_child(child);
    bdrv_unref(bs);
}

void bdrv_unref_child(BlockDriverState *parent, BdrvChild *child)
{
    GLOBAL_STATE_CODE();
    g_assert(child->opaque == parent && child->klass->parent_is_bds);
    bdrv_root_unref_child(child);
}

/* ---- moving parents --------------------------------------------------------- */

/* Moves every parent edge of @from to @to; returns the moved edges. */
static GList *bdrv_move_parents(BlockDriverState *from, BlockDriverState *to, GError **errp)
{
    GList *moved = NULL;
    for (GList *l = from->parents; l;) {
        BdrvChild *c = l->data;
        l = l->next;
        if (c->klass->parent_is_bds && c->opaque == to) {
            continue; /* a filter above @from keeps it as its child */
        }
        if (c->klass->parent_is_bds && bdrv_in_subtree(to, c->opaque)) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Cannot move node '%s' below '%s': it would create a cycle",
                        ((BlockDriverState *)c->opaque)->node_name, to->node_name);
            for (GList *m = moved; m; m = m->next) {
                bdrv_replace_child_noperm(m->data, from);
            }
            g_list_free(moved);
            return NULL;
        }
        bdrv_replace_child_noperm(c, to);
        moved = g_list_prepend(moved, c);
    }
    return moved;
}

bool bdrv_replace_node(BlockDriverState *from, BlockDriverState *to, GError **errp)
{
    GLOBAL_STATE_CODE();
    GError *err = NULL;
    GList *moved;
    bool ok;

    bdrv_ref(from);
    bdrv_ref(to);
    bdrv_drained_begin(from);
    bdrv_drained_begin(to);
    bdrv_graph_wrlock();

    moved = bdrv_move_parents(from, to, &err);
    /*
     * @from first: it lost parents, so its edges (a dropped filter's edge
     * to @to, say) relax before @to checks its new parents against them.
     */
    ok = !err && bdrv_refresh_perms(from, &err) && bdrv_refresh_perms(to, &err);
    if (!ok && moved) {
        for (GList *m = moved; m; m = m->next) {
            bdrv_replace_child_noperm(m->data, from);
        }
        bdrv_refresh_perms(from, NULL);
        bdrv_refresh_perms(to, NULL);
    }
    bdrv_graph_wrunlock();

    if (ok) {
        /* Parents see different limits now; they are still quiesced. */
        for (GList *m = moved; m; m = m->next) {
            BdrvChild *c = m->data;
            if (c->klass->parent_is_bds) {
                bdrv_refresh_limits(c->opaque, NULL);
            }
        }
    }
    bdrv_drained_end(to);
    bdrv_drained_end(from);

    if (ok) {
        for (GList *m = moved; m; m = m->next) {
            bdrv_ref(to);
            bdrv_unref(from);
        }
    } else {
        g_propagate_error(errp, err);
    }
    g_list_free(moved);
    bdrv_unref(to);
    bdrv_unref(from);
    return ok;
}

BlockDriverState *bdrv_insert_node(BlockDriverState *bs, GHashTable *options, int flags,
                                   GError **errp)
{
    GLOBAL_STATE_CODE();
    if (!bs->parents) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Node '%s' has no parent to insert a filter under", bs->node_name);
        g_hash_table_unref(options);
        return NULL;
    }
    opts_set(options, "file", bs->node_name);
    BlockDriverState *filter = bdrv_open(NULL, options, flags, errp);
    if (!filter) {
        return NULL;
    }
    if (!bdrv_replace_node(bs, filter, errp)) {
        bdrv_unref(filter);
        return NULL;
    }
    /* From now on the filter lives as long as its parents use it. */
    bdrv_unref(filter);
    return filter;
}

bool bdrv_drop_filter(BlockDriverState *filter, GError **errp)
{
    GLOBAL_STATE_CODE();
    if (!filter->drv || !filter->drv->is_filter || !filter->file) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "Node '%s' is not a filter",
                    filter->node_name);
        return false;
    }
    return bdrv_replace_node(filter, filter->file->bs, errp);
}

bool bdrv_set_backing_hd(BlockDriverState *bs, BlockDriverState *backing, GError **errp)
{
    GLOBAL_STATE_CODE();
    bool ok = true;

    if (backing && bdrv_in_subtree(backing, bs)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Making '%s' the backing file of '%s' would create a cycle", backing->node_name,
                    bs->node_name);
        return false;
    }
    bdrv_drained_begin(bs);
    if (bs->backing) {
        bdrv_unref_child(bs, bs->backing);
    }
    if (backing) {
        bdrv_ref(backing);
        bs->backing = bdrv_attach_child(bs, backing, "backing", BDRV_CHILD_COW, errp);
        ok = bs->backing != NULL;
    }
    bdrv_drained_end(bs);
    return ok;
}

/* ---- accessors -------------------------------------------------------------- */

BdrvChild *bdrv_filter_or_cow_child(BlockDriverState *bs)
{
    if (bs->drv && bs->drv->is_filter) {
        return bs->file;
    }
    return bs->backing;
}

BlockDriverState *bdrv_cow_bs(BlockDriverState *bs)
{
    return bs->backing ? bs->backing->bs : NULL;
}

BlockDriverState *bdrv_skip_filters(BlockDriverState *bs)
{
    while (bs && bs->drv && bs->drv->is_filter && bs->file) {
        bs = bs->file->bs;
    }
    return bs;
}
