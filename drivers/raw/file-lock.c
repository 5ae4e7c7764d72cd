/*
 * QEMU-compatible image locking (see file-lock.h for the byte layout).
 *
 * The bit numbers are QEMU's, written out here rather than derived from
 * Strata's BLK_PERM_* values, so that a renumbering on our side can never
 * silently break compatibility with QEMU.
 *
 * Threading: no shared state; each call acts on the descriptor it is given.
 */
#include "drivers/raw/file-lock.h"

#include <errno.h>
#include <fcntl.h>

#include "block/block-common.h"

static const struct {
    uint64_t perm; /* Strata's bit */
    int bit;       /* QEMU's bit: the byte offset from either base */
    const char *name;
} raw_lock_perms[] = {
    {BLK_PERM_CONSISTENT_READ, 0, "consistent read"},
    {BLK_PERM_WRITE, 1, "write"},
    {BLK_PERM_WRITE_UNCHANGED, 2, "write unchanged"},
    {BLK_PERM_RESIZE, 3, "resize"},
};

/* Sets (F_RDLCK) or clears (F_UNLCK) our lock on one byte; returns -errno. */
static int raw_lock_byte(int fd, int offset, short type)
{
    struct flock fl = {.l_whence = SEEK_SET, .l_start = offset, .l_len = 1, .l_type = type};
    int ret;
    do {
        ret = fcntl(fd, F_OFD_SETLK, &fl);
    } while (ret < 0 && errno == EINTR);
    return ret < 0 ? -errno : 0;
}

/* 0 when no other open file description locks @offset, -EAGAIN when one does. */
static int raw_lock_test_byte(int fd, int offset)
{
    struct flock fl = {.l_whence = SEEK_SET, .l_start = offset, .l_len = 1, .l_type = F_WRLCK};
    if (fcntl(fd, F_OFD_GETLK, &fl) < 0) {
        return -errno;
    }
    return fl.l_type == F_UNLCK ? 0 : -EAGAIN;
}

bool raw_lock_supported(int fd)
{
    struct flock fl = {.l_whence = SEEK_SET, .l_start = 0, .l_len = 0, .l_type = F_WRLCK};
    return fcntl(fd, F_OFD_GETLK, &fl) == 0;
}

/* Brings one group of bytes (@base) from *@held to @want. */
static bool raw_lock_apply_group(int fd, int base, uint64_t *held, uint64_t want, bool release,
                                 GError **errp)
{
    for (size_t i = 0; i < G_N_ELEMENTS(raw_lock_perms); i++) {
        uint64_t p = raw_lock_perms[i].perm;
        int offset = base + raw_lock_perms[i].bit;
        if ((want & p) && !(*held & p)) {
            int ret = raw_lock_byte(fd, offset, F_RDLCK);
            if (ret < 0) {
                g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                            "Failed to lock byte %d: %s", offset, g_strerror(-ret));
                return false;
            }
            *held |= p;
        } else if (release && (*held & p) && !(want & p)) {
            int ret = raw_lock_byte(fd, offset, F_UNLCK);
            if (ret < 0) {
                g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                            "Failed to unlock byte %d: %s", offset, g_strerror(-ret));
                return false;
            }
            *held &= ~p;
        }
    }
    return true;
}

bool raw_lock_apply(int fd, RawLockState *held, uint64_t perm, uint64_t unshared, bool release,
                    GError **errp)
{
    return raw_lock_apply_group(fd, RAW_LOCK_PERM_BASE, &held->perm, perm, release, errp) &&
           raw_lock_apply_group(fd, RAW_LOCK_SHARED_BASE, &held->unshared, unshared, release, errp);
}

static void raw_lock_conflict(int ret, const char *what, const char *name, const char *filename,
                              GError **errp)
{
    if (ret == -EAGAIN) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_AGAIN,
                    "Failed to get %s\"%s\" lock\nIs another process using the image [%s]?", what,
                    name, filename);
    } else {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                    "Failed to get %s\"%s\" lock: %s", what, name, g_strerror(-ret));
    }
}

bool raw_lock_check(int fd, uint64_t perm, uint64_t shared, const char *filename, GError **errp)
{
    /* Does anyone refuse to share what we want? */
    for (size_t i = 0; i < G_N_ELEMENTS(raw_lock_perms); i++) {
        if (perm & raw_lock_perms[i].perm) {
            int ret = raw_lock_test_byte(fd, RAW_LOCK_SHARED_BASE + raw_lock_perms[i].bit);
            if (ret < 0) {
                raw_lock_conflict(ret, "", raw_lock_perms[i].name, filename, errp);
                return false;
            }
        }
    }
    /* Does anyone hold what we refuse to share? */
    for (size_t i = 0; i < G_N_ELEMENTS(raw_lock_perms); i++) {
        if (!(shared & raw_lock_perms[i].perm)) {
            int ret = raw_lock_test_byte(fd, RAW_LOCK_PERM_BASE + raw_lock_perms[i].bit);
            if (ret < 0) {
                raw_lock_conflict(ret, "shared ", raw_lock_perms[i].name, filename, errp);
                return false;
            }
        }
    }
    return true;
}

void raw_lock_release_all(int fd, RawLockState *held)
{
    raw_lock_apply(fd, held, 0, 0, true, NULL);
}
