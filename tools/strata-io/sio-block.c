/*
 * The few things strata-io needs from the block layer beyond the
 * BlockBackend and global-state APIs: whether a driver is a protocol, the
 * cache mode parser and the driver's format details.  They live in the
 * driver-facing header (block-int.h) today; keeping them here means one
 * file to change when they get a public home.
 */
#include <errno.h>

#include "block/block-int.h"
#include "tools/strata-io/sio.h"

bool sio_driver_is_protocol(const char *driver)
{
    bdrv_init();
    BlockDriver *drv = bdrv_find_driver(driver);
    return drv && drv->is_protocol;
}

bool sio_parse_cache_mode(const char *mode, int *flags, bool *writethrough)
{
    return bdrv_parse_cache_mode(mode, flags, writethrough, NULL);
}

int sio_get_info(BlockDriverState *bs, int *cluster_size, int64_t *vm_state_offset)
{
    BlockDriverInfo bdi = {0};

    if (!bs->drv) {
        return -ENOMEDIUM;
    }
    if (bs->drv->get_info) {
        int ret = bs->drv->get_info(bs, &bdi);
        if (ret < 0) {
            return ret;
        }
    }
    *cluster_size = bdi.cluster_size;
    *vm_state_offset = bdi.vm_state_offset;
    return 0;
}

int sio_node_flags(BlockDriverState *bs)
{
    return bs->open_flags;
}
