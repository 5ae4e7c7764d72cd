/*
 * qcow2 internal snapshots, read side: the snapshot table is parsed and
 * checked at open so that the clusters snapshots hold are known (they are
 * counted by check and kept intact by every write: a cluster or L2 table a
 * snapshot shares has refcount > 1 and is copied before it is changed).
 * Creating, applying and deleting snapshots is not implemented.
 *
 * Locking: runs at open, before any request; the table is read-only
 * afterwards.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "drivers/qcow2/qcow2.h"

#define SNAPSHOT_HEADER_SIZE 40

void qcow2_snapshots_free(BDRVQcow2State *s)
{
    for (uint32_t i = 0; s->snapshots && i < s->nb_snapshots; i++) {
        g_free(s->snapshots[i].id);
        g_free(s->snapshots[i].name);
    }
    g_free(s->snapshots);
    s->snapshots = NULL;
}

int coroutine_fn qcow2_snapshots_open(BlockDriverState *bs, GError **errp)
{
    BDRVQcow2State *s = bs->opaque;
    uint64_t off = s->snapshots_offset;
    uint8_t h[SNAPSHOT_HEADER_SIZE];
    int ret = 0;

    s->snapshots_size = 0;
    if (s->nb_snapshots == 0) {
        return 0;
    }
    s->snapshots = g_new0(Qcow2Snapshot, s->nb_snapshots);
    for (uint32_t i = 0; i < s->nb_snapshots; i++) {
        ret = bdrv_co_pread(bs->file, off, sizeof(h), h, 0);
        if (ret < 0) {
            g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                        "Could not read the snapshot table: %s", g_strerror(-ret));
            return ret;
        }
        Qcow2Snapshot *sn = &s->snapshots[i];
        uint16_t id_len = qcow2_ld16(h + 12), name_len = qcow2_ld16(h + 14);
        uint32_t extra = qcow2_ld32(h + 36);
        sn->l1_table_offset = qcow2_ld64(h);
        sn->l1_size = qcow2_ld32(h + 8);

        if (extra > QCOW2_MAX_SNAPSHOT_EXTRA) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Snapshot %u has too much extra data (%u bytes)", i, extra);
            return -EFBIG;
        }
        if (sn->l1_table_offset & (s->cluster_size - 1)) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Snapshot %u: L1 table offset 0x%" PRIx64 " is not cluster aligned", i,
                        sn->l1_table_offset);
            return -EINVAL;
        }
        if ((uint64_t)sn->l1_size * 8 > QCOW2_MAX_L1_BYTES ||
            sn->l1_table_offset > INT64_MAX - (uint64_t)sn->l1_size * 8) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Snapshot %u: L1 table of %u entries is too large", i, sn->l1_size);
            return -EFBIG;
        }
        uint64_t strings_at = off + sizeof(h) + extra;
        uint8_t *str = g_malloc((size_t)id_len + name_len + 1);
        ret = bdrv_co_pread(bs->file, strings_at, id_len + name_len, str, 0);
        if (ret < 0) {
            g_free(str);
            g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                        "Could not read the snapshot table: %s", g_strerror(-ret));
            return ret;
        }
        sn->id = g_strndup((char *)str, id_len);
        sn->name = g_strndup((char *)str + id_len, name_len);
        g_free(str);

        off = qcow2_round_up(strings_at + id_len + name_len, 8);
        if (off - s->snapshots_offset > QCOW2_MAX_SNAPSHOTS_BYTES) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "Snapshot table is too large");
            return -EFBIG;
        }
    }
    s->snapshots_size = off - s->snapshots_offset;
    return 0;
}
