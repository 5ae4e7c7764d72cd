/*
 * Reopen: switching a node and the nodes below it that hold its data
 * (not its backing chain) between read-only and read-write.
 *
 * Main loop only, inside a drained section of the node.  Three phases:
 * every driver prepares (nothing visible changes), the new flags are
 * checked against the permissions every parent holds, then every driver
 * commits — or, if anything failed, every prepared driver aborts and the
 * old flags come back.
 */
#include "block/block-priv.h"

/* @bs and, depth first, its children other than backing files. */
static void reopen_collect(BlockDriverState *bs, GList **queue)
{
    if (g_list_find(*queue, bs)) {
        return;
    }
    *queue = g_list_append(*queue, bs);
    for (GList *l = bs->children; l; l = l->next) {
        BdrvChild *c = l->data;
        if (!(c->role & BDRV_CHILD_COW)) {
            reopen_collect(c->bs, queue);
        }
    }
}

static void reopen_abort_all(GList *states)
{
    for (GList *l = g_list_last(states); l; l = l->prev) {
        BDRVReopenState *st = l->data;
        if (st->bs->drv->reopen_abort) {
            st->bs->drv->reopen_abort(st);
        }
    }
}

static void reopen_state_free(gpointer p)
{
    BDRVReopenState *st = p;
    g_hash_table_unref(st->options);
    g_free(st);
}

/* Prepares every node of @queue; on failure aborts those prepared. */
static bool reopen_prepare_all(GList *queue, bool read_only, GList **states, GError **errp)
{
    for (GList *l = queue; l; l = l->next) {
        BlockDriverState *n = l->data;
        if (!n->drv || !n->drv->reopen_prepare) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS,
                        "Block format '%s' used by node '%s' does not support reopening files",
                        n->drv ? n->drv->format_name : "(none)", n->node_name);
            reopen_abort_all(*states);
            return false;
        }
        BDRVReopenState *st = g_new0(BDRVReopenState, 1);
        st->bs = n;
        st->flags = read_only ? (n->open_flags & ~BDRV_O_RDWR) : (n->open_flags | BDRV_O_RDWR);
        st->options = opts_new();
        if (!n->drv->reopen_prepare(st, errp)) {
            reopen_state_free(st);
            reopen_abort_all(*states);
            return false;
        }
        *states = g_list_append(*states, st);
    }
    return true;
}

bool bdrv_reopen_set_read_only(BlockDriverState *bs, bool read_only, GError **errp)
{
    GLOBAL_STATE_CODE();
    GList *queue = NULL, *states = NULL;
    bool ok;

    if (bdrv_is_read_only(bs) == read_only) {
        return true;
    }
    if (!read_only && (bs->open_flags & BDRV_O_FORCE_SHARE)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Node '%s' was opened with force-share=on and must stay read-only",
                    bs->node_name);
        return false;
    }

    bdrv_drained_begin(bs);
    reopen_collect(bs, &queue);
    ok = reopen_prepare_all(queue, read_only, &states, errp);
    if (ok) {
        GArray *old = g_array_new(false, false, sizeof(int));
        for (GList *l = states; l; l = l->next) {
            BDRVReopenState *st = l->data;
            g_array_append_val(old, st->bs->open_flags);
            st->bs->open_flags = st->flags;
        }
        ok = bdrv_refresh_perms(bs, errp);
        if (!ok) {
            int i = 0;
            for (GList *l = states; l; l = l->next, i++) {
                ((BDRVReopenState *)l->data)->bs->open_flags = g_array_index(old, int, i);
            }
            reopen_abort_all(states);
        } else {
            for (GList *l = states; l; l = l->next) {
                BDRVReopenState *st = l->data;
                if (st->bs->drv->reopen_commit) {
                    st->bs->drv->reopen_commit(st);
                }
            }
        }
        g_array_unref(old);
    }
    bdrv_drained_end(bs);

    g_list_free_full(states, reopen_state_free);
    g_list_free(queue);
    return ok;
}
