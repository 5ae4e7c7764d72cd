/*
 * BlockBackend: everything (global state and I/O).  Prefer including the
 * header of the calling context you are in.
 */
#ifndef STRATA_BLOCK_BACKEND_H
#define STRATA_BLOCK_BACKEND_H

#include "block/block-backend-global-state.h"
#include "block/block-backend-io.h"

#endif /* STRATA_BLOCK_BACKEND_H */
