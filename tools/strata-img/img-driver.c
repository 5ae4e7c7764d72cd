/*
 * strata-img: driver queries that the library does not offer (yet) as one
 * call.  Each function here is the adapter a front end needs; once the
 * block layer grows the matching entry point (see docs/strata-img.md,
 * "Library interfaces"), the body becomes a one-line call and nothing
 * else in the tool changes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "block/block-global-state.h"
#include "tools/strata-img/img.h"

bool img_bdrv_create(BlockDriver *drv, const char *filename, GHashTable *options, GError **errp)
{
    return bdrv_create(drv, filename, options, errp);
}

int img_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    memset(bdi, 0, sizeof(*bdi));
    if (!bs->drv) {
        return -ENOMEDIUM;
    }
    if (bs->drv->get_info) {
        return bs->drv->get_info(bs, bdi);
    }
    /*
     * What qemu-img shows: raw passes the question to its file, and the
     * file protocol answers "no clusters, clean".  Other drivers without
     * get_info have no answer (no "dirty-flag" key).
     */
    if (strcmp(bs->drv->format_name, "raw") == 0 && bs->file) {
        return img_get_info(bs->file->bs, bdi);
    }
    if (strcmp(bs->drv->format_name, "file") == 0) {
        return 0;
    }
    return -ENOTSUP;
}
