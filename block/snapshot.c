/*
 * Internal snapshots, the block-layer side: finds snapshots by ID or name
 * and routes each operation to the format driver's snapshot_ops inside a
 * drained section of the node.  The cached length is refreshed after a
 * revert, which may change the disk size.
 */
#include <string.h>

#include "block/block-int.h"
#include "block/block-priv.h"
#include "block/snapshot.h"

static const BdrvSnapshotOps *snapshot_ops(BlockDriverState *bs, GError **errp)
{
    if (bs->drv && bs->drv->snapshot_ops) {
        return bs->drv->snapshot_ops;
    }
    g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS,
                "Block format '%s' used by node '%s' does not support internal snapshots",
                bs->drv ? bs->drv->format_name : "(none)", bdrv_get_node_name(bs));
    return NULL;
}

bool bdrv_can_snapshot(BlockDriverState *bs)
{
    GLOBAL_STATE_CODE();
    return bs->drv && bs->drv->snapshot_ops;
}

void bdrv_snapshot_info_clear(BdrvSnapshotInfo *sn)
{
    g_free(sn->id);
    g_free(sn->name);
    sn->id = sn->name = NULL;
}

void bdrv_snapshot_list_free(BdrvSnapshotInfo *list, int count)
{
    for (int i = 0; i < count; i++) {
        bdrv_snapshot_info_clear(&list[i]);
    }
    g_free(list);
}

bool bdrv_snapshot_list(BlockDriverState *bs, BdrvSnapshotInfo **list, int *count, GError **errp)
{
    GLOBAL_STATE_CODE();
    const BdrvSnapshotOps *ops = snapshot_ops(bs, errp);
    *list = NULL;
    *count = 0;
    if (!ops) {
        return false;
    }
    bdrv_drained_begin(bs);
    bool ok = ops->list(bs, list, count, errp);
    bdrv_drained_end(bs);
    return ok;
}

bool bdrv_snapshot_find(BlockDriverState *bs, const char *id_or_name, BdrvSnapshotInfo *out,
                        GError **errp)
{
    BdrvSnapshotInfo *list;
    int n, found = -1;

    GLOBAL_STATE_CODE();
    if (!bdrv_snapshot_list(bs, &list, &n, errp)) {
        return false;
    }
    for (int i = 0; i < n && found < 0; i++) {
        if (!strcmp(list[i].id, id_or_name)) {
            found = i;
        }
    }
    for (int i = 0; i < n && found < 0; i++) {
        if (!strcmp(list[i].name, id_or_name)) {
            found = i;
        }
    }
    if (found < 0) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOENT, "Can't find snapshot '%s'", id_or_name);
    } else {
        *out = list[found];
        list[found].id = list[found].name = NULL;
    }
    bdrv_snapshot_list_free(list, n);
    return found >= 0;
}

/* The next free numeric ID: one more than the largest. */
static char *next_snapshot_id(BlockDriverState *bs, GError **errp)
{
    BdrvSnapshotInfo *list;
    int n;
    uint64_t max = 0;
    if (!bdrv_snapshot_list(bs, &list, &n, errp)) {
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        max = MAX(max, g_ascii_strtoull(list[i].id, NULL, 10));
    }
    bdrv_snapshot_list_free(list, n);
    return g_strdup_printf("%" G_GUINT64_FORMAT, max + 1);
}

bool bdrv_snapshot_create(BlockDriverState *bs, const BdrvSnapshotInfo *sn, char **new_id,
                          GError **errp)
{
    GLOBAL_STATE_CODE();
    const BdrvSnapshotOps *ops = snapshot_ops(bs, errp);
    if (!ops) {
        return false;
    }
    if (bdrv_is_read_only(bs)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_ROFS, "Image is read-only");
        return false;
    }
    BdrvSnapshotInfo info = *sn;
    g_autofree char *id = NULL;
    if (sn->id && *sn->id) {
        id = g_strdup(sn->id);
    } else if (!(id = next_snapshot_id(bs, errp))) {
        return false;
    }
    info.id = id;
    info.name = sn->name ? sn->name : "";
    if (!info.date_sec && !info.date_nsec) {
        int64_t now = g_get_real_time();
        info.date_sec = (uint32_t)(now / G_USEC_PER_SEC);
        info.date_nsec = (uint32_t)(now % G_USEC_PER_SEC) * 1000;
    }
    bdrv_drained_begin(bs);
    bool ok = ops->create(bs, &info, errp);
    bdrv_drained_end(bs);
    if (ok && new_id) {
        *new_id = g_steal_pointer(&id);
    }
    return ok;
}

bool bdrv_snapshot_goto(BlockDriverState *bs, const char *id_or_name, GError **errp)
{
    BdrvSnapshotInfo sn;
    GLOBAL_STATE_CODE();
    const BdrvSnapshotOps *ops = snapshot_ops(bs, errp);
    if (!ops || !bdrv_snapshot_find(bs, id_or_name, &sn, errp)) {
        return false;
    }
    if (bdrv_is_read_only(bs)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_ROFS, "Image is read-only");
        bdrv_snapshot_info_clear(&sn);
        return false;
    }
    bdrv_drained_begin(bs);
    bool ok = ops->go_to(bs, sn.id, errp);
    bdrv_drained_end(bs);
    bdrv_refresh_total_bytes(bs); /* the snapshot may have another disk size */
    bdrv_snapshot_info_clear(&sn);
    return ok;
}

bool bdrv_snapshot_delete(BlockDriverState *bs, const char *id_or_name, GError **errp)
{
    BdrvSnapshotInfo sn;
    GLOBAL_STATE_CODE();
    const BdrvSnapshotOps *ops = snapshot_ops(bs, errp);
    if (!ops || !bdrv_snapshot_find(bs, id_or_name, &sn, errp)) {
        return false;
    }
    if (bdrv_is_read_only(bs)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_ROFS, "Image is read-only");
        bdrv_snapshot_info_clear(&sn);
        return false;
    }
    bdrv_drained_begin(bs);
    bool ok = ops->delete (bs, sn.id, errp);
    bdrv_drained_end(bs);
    bdrv_snapshot_info_clear(&sn);
    return ok;
}

bool bdrv_snapshot_load_tmp(BlockDriverState *bs, const char *snapshot_id, const char *name,
                            GError **errp)
{
    BdrvSnapshotInfo *list;
    int n, found = -1;

    GLOBAL_STATE_CODE();
    /* qemu's order of checks, so that qemu-img's messages come out the same. */
    if (!snapshot_id && !name) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "snapshot_id and name are both NULL");
        return false;
    }
    if (!bdrv_is_read_only(bs)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "Device is not readonly");
        return false;
    }
    if (!bs->drv || !bs->drv->snapshot_ops || !bs->drv->snapshot_ops->load_tmp) {
        /* qemu-img's devices have no name: it prints '' too. */
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS,
                    "Block format '%s' used by device '' does not support temporarily loading "
                    "internal snapshots",
                    bs->drv ? bs->drv->format_name : "(none)");
        return false;
    }
    if (!bdrv_snapshot_list(bs, &list, &n, errp)) {
        return false;
    }
    for (int i = 0; i < n && found < 0; i++) {
        if ((!snapshot_id || !strcmp(list[i].id, snapshot_id)) &&
            (!name || !strcmp(list[i].name, name))) {
            found = i;
        }
    }
    bool ok = false;
    if (found < 0) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOENT, "Can't find snapshot");
    } else {
        bdrv_drained_begin(bs);
        ok = bs->drv->snapshot_ops->load_tmp(bs, list[found].id, errp);
        bdrv_drained_end(bs);
    }
    bdrv_snapshot_list_free(list, n);
    return ok;
}

bool bdrv_snapshot_load_tmp_by_id_or_name(BlockDriverState *bs, const char *id_or_name,
                                          GError **errp)
{
    GError *err = NULL;

    GLOBAL_STATE_CODE();
    if (bdrv_snapshot_load_tmp(bs, id_or_name, NULL, &err)) {
        return true;
    }
    if (!g_error_matches(err, G_FILE_ERROR, G_FILE_ERROR_NOENT)) {
        g_propagate_error(errp, err);
        return false;
    }
    g_error_free(err);
    return bdrv_snapshot_load_tmp(bs, NULL, id_or_name, errp);
}
