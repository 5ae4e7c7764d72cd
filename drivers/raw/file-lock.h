/*
 * Image locking for the `file` driver, byte-compatible with QEMU, so that
 * Strata and qemu-img/qemu-io/QEMU refuse to write an image another one
 * of them is writing.
 *
 * The scheme (QEMU's block/file-posix.c, as of QEMU 6.2 to 9.x): shared
 * OFD read locks on single bytes of the image file.  For permission bit i
 * (consistent read 0, write 1, write unchanged 2, resize 3):
 *   byte 100 + i   locked: "this user holds permission i"
 *   byte 200 + i   locked: "this user does not let others have permission i"
 * A user may take permission i only if nobody locks byte 200 + i, and may
 * refuse to share it only if nobody locks byte 100 + i.  Locks are tested
 * with F_OFD_GETLK for a write lock, which ignores the tester's own locks.
 * OFD locks belong to the open file description, so two descriptors opened
 * separately conflict even inside one process.
 *
 * Threading: control path; the caller serialises calls on one descriptor.
 */
#ifndef STRATA_FILE_LOCK_H
#define STRATA_FILE_LOCK_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#define RAW_LOCK_PERM_BASE   100
#define RAW_LOCK_SHARED_BASE 200

/* Which bytes one descriptor holds, as masks of Strata BLK_PERM_* bits. */
typedef struct RawLockState {
    uint64_t perm;     /* bytes 100 + i */
    uint64_t unshared; /* bytes 200 + i */
} RawLockState;

/* True when the kernel and the filesystem of @fd support OFD locks. */
bool raw_lock_supported(int fd);

/*
 * Locks the bytes for @perm and @unshared that @held lacks; with @release
 * also unlocks held bytes that are not asked for.  @held is updated byte
 * by byte, so after a failure it still says exactly what is locked.
 */
bool raw_lock_apply(int fd, RawLockState *held, uint64_t perm, uint64_t unshared, bool release,
                    GError **errp);

/*
 * Fails when another user's locks forbid taking @perm while sharing only
 * @shared: 'Failed to get "write" lock' when someone refuses to share a
 * permission we want, 'Failed to get shared "write" lock' when someone
 * holds a permission we refuse to share.  @filename goes into the hint.
 */
bool raw_lock_check(int fd, uint64_t perm, uint64_t shared, const char *filename, GError **errp);

/* Drops every byte in @held (close does this too). */
void raw_lock_release_all(int fd, RawLockState *held);

#endif /* STRATA_FILE_LOCK_H */
