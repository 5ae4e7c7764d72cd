/*
 * Permissions: what each parent of a node needs (perm) and tolerates
 * (shared_perm) on its edge, and the check that no parent needs something
 * another parent does not tolerate.
 *
 * Main loop only.  A refresh walks the subtree below the changed node in
 * topological order (every node after all of its parents in the subtree),
 * so each node's cumulative permissions are known before its children's
 * edges are derived from them.  It is all-or-nothing: on a conflict every
 * edge in the subtree gets its previous permissions back and the drivers
 * that had checked a new state are told to forget it.
 */
#include "block/block-priv.h"

#include <string.h>

static const char *const perm_names[] = {
    "consistent read",
    "write",
    "write unchanged",
    "resize",
};

char *bdrv_perm_names(uint64_t perm)
{
    GString *s = g_string_new(NULL);
    for (size_t i = 0; i < G_N_ELEMENTS(perm_names); i++) {
        if (perm & (1ULL << i)) {
            g_string_append_printf(s, "%s%s", s->len ? ", " : "", perm_names[i]);
        }
    }
    return g_string_free(s, false);
}

void bdrv_default_perms(BlockDriverState *bs, BdrvChild *c, BdrvChildRole role, uint64_t perm,
                        uint64_t shared, uint64_t *nperm, uint64_t *nshared)
{
    if (role & BDRV_CHILD_FILTERED) {
        /* Same content as the parent: pass the parents' needs straight down. */
        *nperm = perm;
        *nshared = shared;
    } else if (role & BDRV_CHILD_COW) {
        /*
         * A backing file is only read; others may write it unchanged, and
         * may write or resize it only if every user of the overlay agrees.
         */
        *nperm = perm & BLK_PERM_CONSISTENT_READ;
        *nshared = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED |
                   (shared & (BLK_PERM_WRITE | BLK_PERM_RESIZE));
    } else {
        *nperm = perm;
        *nshared = shared | BLK_PERM_WRITE_UNCHANGED;
        if (role & BDRV_CHILD_METADATA) {
            /*
             * A format reads its metadata whatever the guest does, may
             * update it (and grow the file) whenever it is writable, and
             * cannot have anyone else change it underneath.
             */
            *nperm |= BLK_PERM_CONSISTENT_READ;
            if (!bdrv_is_read_only(bs)) {
                *nperm |= BLK_PERM_WRITE | BLK_PERM_RESIZE;
            }
            *nshared &= ~(BLK_PERM_WRITE | BLK_PERM_RESIZE);
        }
    }
    if (bs->open_flags & BDRV_O_FORCE_SHARE) {
        *nshared = BLK_PERM_ALL;
    }
}

void bdrv_child_compute_perm(BlockDriverState *parent_bs, BdrvChild *c, uint64_t *nperm,
                             uint64_t *nshared)
{
    uint64_t perm = parent_bs->cumulative_perm;
    uint64_t shared = parent_bs->cumulative_shared;
    if (parent_bs->drv && parent_bs->drv->child_perm) {
        parent_bs->drv->child_perm(parent_bs, c, c->role, perm, shared, nperm, nshared);
    } else {
        bdrv_default_perms(parent_bs, c, c->role, perm, shared, nperm, nshared);
    }
}

/* ---- topological order ------------------------------------------------------- */

static void topo_visit(BlockDriverState *bs, GHashTable *seen, GList **order)
{
    if (g_hash_table_contains(seen, bs)) {
        return;
    }
    g_hash_table_add(seen, bs);
    for (GList *l = bs->children; l; l = l->next) {
        topo_visit(((BdrvChild *)l->data)->bs, seen, order);
    }
    /* Prepending after the children gives reverse post-order: parents first. */
    *order = g_list_prepend(*order, bs);
}

static GList *bdrv_topological_order(BlockDriverState *bs)
{
    GHashTable *seen = g_hash_table_new(NULL, NULL);
    GList *order = NULL;
    topo_visit(bs, seen, &order);
    g_hash_table_unref(seen);
    return order;
}

/* ---- checking one node -------------------------------------------------------- */

/*
 * Finds a parent edge whose needs another edge does not tolerate and says
 * so, naming the edge that refuses.  Later edges are checked first, so the
 * message blames the user that was there before the newcomer.
 */
static bool bdrv_check_parents(BlockDriverState *bs, GError **errp)
{
    for (GList *a = g_list_last(bs->parents); a; a = a->prev) {
        BdrvChild *ca = a->data;
        for (GList *b = bs->parents; b; b = b->next) {
            BdrvChild *cb = b->data;
            uint64_t denied = ca->perm & ~cb->shared_perm;
            if (cb == ca || !denied) {
                continue;
            }
            g_autofree char *desc = cb->klass->get_parent_desc ? cb->klass->get_parent_desc(cb)
                                                               : g_strdup("another user");
            g_autofree char *names = bdrv_perm_names(denied);
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_PERM,
                        "Conflicts with use by %s as '%s', which does not allow '%s' on %s", desc,
                        cb->name, names, bs->node_name);
            return false;
        }
    }
    return true;
}

static bool bdrv_check_node_perm(BlockDriverState *bs, uint64_t perm, uint64_t shared,
                                 GError **errp)
{
    uint64_t writes = BLK_PERM_WRITE | BLK_PERM_WRITE_UNCHANGED | BLK_PERM_RESIZE;
    if ((perm & writes) && bdrv_is_read_only(bs)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_ROFS, "Block node '%s' is read-only",
                    bs->node_name);
        return false;
    }
    if (!bdrv_check_parents(bs, errp)) {
        return false;
    }
    if (bs->drv && bs->drv->check_perm) {
        return bs->drv->check_perm(bs, perm, shared, errp);
    }
    return true;
}

/* ---- refresh -------------------------------------------------------------------- */

typedef struct SavedPerm {
    BdrvChild *c;
    uint64_t perm, shared;
} SavedPerm;

typedef struct SavedNode {
    BlockDriverState *bs;
    uint64_t perm, shared;
} SavedNode;

static void bdrv_perm_rollback(GArray *saved_edges, GArray *saved_nodes)
{
    for (int i = saved_edges->len - 1; i >= 0; i--) {
        SavedPerm *sp = &g_array_index(saved_edges, SavedPerm, i);
        sp->c->perm = sp->perm;
        sp->c->shared_perm = sp->shared;
    }
    for (int i = saved_nodes->len - 1; i >= 0; i--) {
        SavedNode *sn = &g_array_index(saved_nodes, SavedNode, i);
        sn->bs->cumulative_perm = sn->perm;
        sn->bs->cumulative_shared = sn->shared;
        if (sn->bs->drv && sn->bs->drv->abort_perm_update) {
            sn->bs->drv->abort_perm_update(sn->bs);
        }
    }
}

bool bdrv_refresh_perms(BlockDriverState *bs, GError **errp)
{
    GLOBAL_STATE_CODE();
    GList *order = bdrv_topological_order(bs);
    GArray *saved_edges = g_array_new(false, false, sizeof(SavedPerm));
    GArray *saved_nodes = g_array_new(false, false, sizeof(SavedNode));
    bool ok = true;

    for (GList *l = order; l; l = l->next) {
        BlockDriverState *n = l->data;
        uint64_t perm = 0, shared = BLK_PERM_ALL;
        for (GList *p = n->parents; p; p = p->next) {
            BdrvChild *c = p->data;
            perm |= c->perm;
            shared &= c->shared_perm;
        }
        ok = bdrv_check_node_perm(n, perm, shared, errp);
        if (!ok) {
            break;
        }
        SavedNode sn = {n, n->cumulative_perm, n->cumulative_shared};
        g_array_append_val(saved_nodes, sn);
        n->cumulative_perm = perm;
        n->cumulative_shared = shared;
        for (GList *k = n->children; k; k = k->next) {
            BdrvChild *c = k->data;
            SavedPerm sp = {c, c->perm, c->shared_perm};
            g_array_append_val(saved_edges, sp);
            bdrv_child_compute_perm(n, c, &c->perm, &c->shared_perm);
        }
    }

    if (ok) {
        for (GList *l = order; l; l = l->next) {
            BlockDriverState *n = l->data;
            if (n->drv && n->drv->set_perm) {
                n->drv->set_perm(n, n->cumulative_perm, n->cumulative_shared);
            }
        }
    } else {
        bdrv_perm_rollback(saved_edges, saved_nodes);
    }
    g_array_unref(saved_edges);
    g_array_unref(saved_nodes);
    g_list_free(order);
    return ok;
}

bool bdrv_child_try_set_perm(BdrvChild *c, uint64_t perm, uint64_t shared, GError **errp)
{
    GLOBAL_STATE_CODE();
    uint64_t old_perm = c->perm, old_shared = c->shared_perm;
    c->perm = perm;
    c->shared_perm = shared;
    if (!bdrv_refresh_perms(c->bs, errp)) {
        c->perm = old_perm;
        c->shared_perm = old_shared;
        return false;
    }
    return true;
}
