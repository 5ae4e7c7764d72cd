/*
 * The built-in drivers, listed explicitly so that linking the static
 * library can never silently drop one (a constructor in an unreferenced
 * object file would never run).
 *
 * Drivers living outside block/ are referenced weakly unless the build
 * says their folder is part of the library (STRATA_HAVE_DRIVERS_RAW,
 * STRATA_HAVE_DRIVERS_QCOW2, STRATA_HAVE_DRIVERS_BLKDEBUG): a build of a
 * subset (LIB_DIRS="coroutine aio block") still links, while in a full
 * build a missing driver is a link error instead of a driver silently
 * missing at run time.
 *
 * bdrv_init() runs from the main thread before the first open; later
 * calls return at once.
 */
#include "block/block-int.h"

#ifdef STRATA_HAVE_DRIVERS_RAW
#define RAW_DRIVER
#else
#define RAW_DRIVER __attribute__((weak))
#endif
#ifdef STRATA_HAVE_DRIVERS_QCOW2
#define QCOW2_DRIVER
#else
#define QCOW2_DRIVER __attribute__((weak))
#endif
#ifdef STRATA_HAVE_DRIVERS_BLKDEBUG
#define BLKDEBUG_DRIVER
#else
#define BLKDEBUG_DRIVER __attribute__((weak))
#endif

extern BlockDriver bdrv_file RAW_DRIVER;
extern BlockDriver bdrv_raw RAW_DRIVER;
extern BlockDriver bdrv_qcow2 QCOW2_DRIVER;
extern BlockDriver bdrv_blkdebug BLKDEBUG_DRIVER;

void bdrv_init(void)
{
    static bool done;
    BlockDriver *const builtin[] = {
        &bdrv_null_co, &bdrv_passthrough, &bdrv_file, &bdrv_raw, &bdrv_qcow2, &bdrv_blkdebug,
    };

    GLOBAL_STATE_CODE();
    if (done) {
        return;
    }
    done = true;
    for (size_t i = 0; i < G_N_ELEMENTS(builtin); i++) {
        if (builtin[i]) {
            bdrv_register(builtin[i]);
        }
    }
}
