/*
 * Private to the `file` driver: helpers that file-posix.c uses and the
 * unit tests exercise directly.  Control path; no shared state.
 */
#ifndef STRATA_FILE_POSIX_INT_H
#define STRATA_FILE_POSIX_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "block/block-common.h"

/*
 * Finds the O_DIRECT request alignment (@req) and buffer alignment (@mem)
 * of @fd, which must be open with O_DIRECT, by trying reads of 512, 1k, 2k
 * and 4k bytes at offset 0: the kernel refuses misaligned ones with
 * EINVAL.  Needs at least 4 KiB of written data at the start of the file
 * (holes are zero-filled without any alignment check); returns false,
 * leaving the outputs alone, when that is missing or nothing worked.
 */
bool raw_probe_alignment_by_reads(int fd, uint32_t *req, uint32_t *mem);

/*
 * Grows the file behind @fd from @old_size to @new_size with @mode
 * (OFF: sparse, FALLOC: allocated with fallocate, FULL: zeroes written).
 * Blocking; returns 0 or -errno (-ENOTSUP for METADATA, or for FALLOC
 * when the filesystem lacks fallocate).
 */
int raw_grow_file(int fd, int64_t old_size, int64_t new_size, PreallocMode mode);

#endif /* STRATA_FILE_POSIX_INT_H */
