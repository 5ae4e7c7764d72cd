/*
 * The driver tables of drivers/raw/: the `file` protocol (file-posix.c) and
 * the `raw` format (raw-format.c).  block/driver-list.c registers them.
 */
#ifndef STRATA_RAW_DRIVERS_H
#define STRATA_RAW_DRIVERS_H

#include "block/block-int.h"

extern BlockDriver bdrv_file;
extern BlockDriver bdrv_raw;

#endif /* STRATA_RAW_DRIVERS_H */
