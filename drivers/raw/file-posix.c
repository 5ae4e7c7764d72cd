/*
 * The `file` protocol driver: a node backed by a host file or block device.
 *
 * Design notes.
 *
 * I/O engines.  Reads and writes go to one of three engines chosen at open
 * ("aio" option): the thread pool (threads, the default), Linux AIO
 * (native, which needs O_DIRECT) or io_uring.  Each engine keeps one
 * instance per AioContext, so a request always completes in the context
 * that issued it and any number of threads may drive one node at once.
 * Engines may return short transfers; raw_co_rw() retries the remainder,
 * and a read that reaches end of file is completed with zeroes.
 *
 * Cache modes map to open flags the block core hands us: BDRV_O_NOCACHE
 * opens with O_DIRECT (cache=none, directsync), BDRV_O_NO_FLUSH makes
 * flushes no-ops (cache=unsafe).  Writethrough modes reach us as FUA
 * writes, which we complete with an fdatasync after the write.
 *
 * Flush errors are sticky: after a failed fdatasync the kernel may have
 * marked the dirty pages clean and dropped them, so a later fdatasync
 * that succeeds proves nothing.  Every later flush fails the same way.
 *
 * Image locking (file-lock.c) follows QEMU's byte layout.  check_perm
 * first locks the union of the old and the new permissions, then tests
 * for conflicts, so that nobody can slip in between the test and the
 * commit; set_perm drops what is no longer needed.
 *
 * Threading: open, close, create, reopen, limits and permissions run in
 * the main loop.  co_* callbacks run in any thread: they only read the
 * state set at open (fd, aio mode, alignment) and touch the atomics
 * below; a reopen swaps the descriptor only while the node is drained.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "aio/thread-pool.h"
#include "block/block-int.h"
#include "drivers/raw/file-lock.h"
#include "drivers/raw/file-posix-int.h"
#include "drivers/raw/file-threads.h"
#include "drivers/raw/io-uring.h"
#include "drivers/raw/linux-aio.h"
#include "drivers/raw/raw-drivers.h"

typedef enum RawAioMode {
    RAW_AIO_MODE_THREADS,
    RAW_AIO_MODE_NATIVE,
    RAW_AIO_MODE_IO_URING,
} RawAioMode;

static const char *const raw_aio_names[] = {"threads", "native", "io_uring", NULL};

typedef enum RawLocking {
    RAW_LOCKING_OFF,
    RAW_LOCKING_ON,
    RAW_LOCKING_AUTO,
} RawLocking;

static const char *const raw_locking_names[] = {"off", "on", "auto", NULL};

/* Indexed by PreallocMode. */
static const char *const raw_prealloc_names[] = {"off", "metadata", "falloc", "full", NULL};

typedef struct BDRVRawState {
    char *filename;
    int fd;
    int open_flags; /* O_* of fd */
    RawAioMode aio;
    bool use_lock;
    bool is_regular; /* a regular file (not a block or character device) */
    uint32_t request_alignment;
    uint32_t buf_align;

    /* Main loop only. */
    RawLockState locks;    /* bytes held on fd */
    uint64_t perm, shared; /* last committed permissions */
    int reopen_fd;         /* prepared by reopen_prepare, else -1 */

    /* Learnt while running, from any thread. */
    atomic_bool no_discard;    /* punching holes is unsupported */
    atomic_bool no_zero_range; /* FALLOC_FL_ZERO_RANGE is unsupported */
    atomic_int flush_error;    /* sticky -errno of a failed fdatasync */
} BDRVRawState;

typedef struct RawReopenState {
    int fd;
    int open_flags;
} RawReopenState;

/* ---- opening ------------------------------------------------------------ */

static int raw_oflags(int bdrv_flags)
{
    int oflags = O_CLOEXEC;
    oflags |= (bdrv_flags & BDRV_O_RDWR) ? O_RDWR : O_RDONLY;
    if (bdrv_flags & BDRV_O_NOCACHE) {
        oflags |= O_DIRECT;
    }
    return oflags;
}

static int raw_open_fd(const char *filename, int oflags, GError **errp)
{
    int fd = open(filename, oflags);
    if (fd < 0) {
        int err = errno;
        if (err == EINVAL && (oflags & O_DIRECT)) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "Could not open '%s': the filesystem does not support O_DIRECT "
                        "(cache.direct=on)",
                        filename);
        } else {
            g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(err), "Could not open '%s': %s",
                        filename, g_strerror(err));
        }
        return -1;
    }
    return fd;
}

bool raw_probe_alignment_by_reads(int fd, uint32_t *req, uint32_t *mem)
{
    static const uint32_t sizes[] = {512, 1024, 2048, 4096};
    struct stat st;
    uint8_t *buf = NULL;
    uint32_t found_req = 0, found_mem = 0;

    /* Holes and end of file are read without alignment checks. */
    if (fstat(fd, &st) < 0 || st.st_size < 4096 || (uint64_t)st.st_blocks * 512 < 4096) {
        return false;
    }
    if (posix_memalign((void **)&buf, 8192, 2 * 8192) != 0) {
        return false;
    }
    for (size_t i = 0; i < G_N_ELEMENTS(sizes) && !found_req; i++) {
        if (pread(fd, buf, sizes[i], 0) >= 0) {
            found_req = sizes[i];
        }
    }
    /* buf + n is aligned to n and not to 2n: the first that works is the bound. */
    for (size_t i = 0; i < G_N_ELEMENTS(sizes) && found_req && !found_mem; i++) {
        if (pread(fd, buf + sizes[i], found_req, 0) >= 0) {
            found_mem = sizes[i];
        }
    }
    free(buf);
    if (!found_req || !found_mem) {
        return false;
    }
    *req = found_req;
    *mem = found_mem;
    return true;
}

/*
 * O_DIRECT alignment: the device's logical block size for block devices,
 * what the kernel says (statx DIOALIGN, Linux 6.1+) for files, else what
 * reads reveal, else a safe 4 KiB.
 */
static void raw_probe_alignment(BDRVRawState *s)
{
    s->request_alignment = 1;
    s->buf_align = 1;
    if (!(s->open_flags & O_DIRECT)) {
        return;
    }

    struct stat st;
    int sector;
    if (fstat(s->fd, &st) == 0 && S_ISBLK(st.st_mode) && ioctl(s->fd, BLKSSZGET, &sector) == 0 &&
        sector > 0) {
        s->request_alignment = s->buf_align = sector;
        return;
    }
#ifdef STATX_DIOALIGN
    struct statx stx;
    if (statx(s->fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
        (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align) {
        s->request_alignment = stx.stx_dio_offset_align;
        s->buf_align = MAX(stx.stx_dio_mem_align, 1);
        return;
    }
#endif
    if (!raw_probe_alignment_by_reads(s->fd, &s->request_alignment, &s->buf_align)) {
        s->request_alignment = s->buf_align = 4096;
    }
}

/* Checks that the engine the user asked for can work here. */
static bool raw_check_aio(RawAioMode aio, int flags, GError **errp)
{
    switch (aio) {
    case RAW_AIO_MODE_THREADS:
        return true;
    case RAW_AIO_MODE_NATIVE:
        if (!(flags & BDRV_O_NOCACHE)) {
            /* Without O_DIRECT, io_submit() would do the I/O synchronously. */
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "aio=native was specified, but it requires cache.direct=on, which "
                        "was not specified.");
            return false;
        }
        return laio_probe(errp);
    case RAW_AIO_MODE_IO_URING:
        return luring_probe(errp);
    }
    return false;
}

static bool raw_open(BlockDriverState *bs, GHashTable *options, int flags, GError **errp)
{
    BDRVRawState *s = bs->opaque;
    int aio, locking;

    g_autofree char *filename = opts_take_str(options, "filename");
    if (!filename || !*filename) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "The 'file' driver needs a filename");
        return false;
    }
    if (!opts_take_enum(options, "aio", raw_aio_names, RAW_AIO_MODE_THREADS, &aio, errp) ||
        !opts_take_enum(options, "locking", raw_locking_names, RAW_LOCKING_AUTO, &locking, errp) ||
        !raw_check_aio(aio, flags, errp)) {
        return false;
    }

    s->open_flags = raw_oflags(flags);
    s->fd = raw_open_fd(filename, s->open_flags, errp);
    if (s->fd < 0) {
        return false;
    }
    struct stat st;
    if (fstat(s->fd, &st) < 0 || S_ISDIR(st.st_mode)) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_ISDIR, "'%s' is a directory", filename);
        goto fail;
    }
    s->is_regular = S_ISREG(st.st_mode);
    s->aio = aio;
    s->reopen_fd = -1;
    s->shared = BLK_PERM_ALL;

    if (locking != RAW_LOCKING_OFF) {
        s->use_lock = raw_lock_supported(s->fd);
        if (!s->use_lock && locking == RAW_LOCKING_ON) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSYS,
                        "locking=on, but '%s' does not support OFD locks", filename);
            goto fail;
        }
    }
    raw_probe_alignment(s);

    bs->supported_write_flags = BDRV_REQ_FUA;
    bs->supported_zero_flags = BDRV_REQ_MAY_UNMAP | BDRV_REQ_FUA | BDRV_REQ_NO_FALLBACK;
    /* A regular file grows with zeroes. */
    bs->supported_truncate_flags = s->is_regular ? BDRV_REQ_ZERO_WRITE : 0;
    s->filename = g_steal_pointer(&filename);
    return true;

fail:
    close(s->fd);
    s->fd = -1;
    return false;
}

static void raw_close(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;
    /* Closing the descriptors drops their OFD locks. */
    if (s->reopen_fd >= 0) {
        close(s->reopen_fd);
        s->reopen_fd = -1;
    }
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    g_free(s->filename);
    s->filename = NULL;
}

static void raw_refresh_limits(BlockDriverState *bs, GError **errp)
{
    BDRVRawState *s = bs->opaque;
    size_t page = sysconf(_SC_PAGESIZE);

    bs->bl.request_alignment = s->request_alignment;
    bs->bl.min_mem_alignment = s->buf_align;
    bs->bl.opt_mem_alignment = MAX(s->buf_align, page);
    /* Engines return int byte counts. */
    bs->bl.max_transfer = RAW_AIO_MAX_BYTES;
}

/* ---- reads, writes, flushes --------------------------------------------- */

static int coroutine_fn raw_engine_co_submit(BDRVRawState *s, uint64_t offset, struct iovec *iov,
                                             int niov, RawAioType type)
{
    switch (s->aio) {
    case RAW_AIO_MODE_NATIVE:
        /* Linux AIO syncs are not asynchronous on every filesystem: use the pool. */
        if (type == RAW_AIO_FDATASYNC || type == RAW_AIO_FSYNC) {
            return raw_thread_co_submit(s->fd, offset, iov, niov, type);
        }
        return laio_co_submit(s->fd, offset, iov, niov, type);
    case RAW_AIO_MODE_IO_URING:
        return luring_co_submit(s->fd, offset, iov, niov, type);
    case RAW_AIO_MODE_THREADS:
        break;
    }
    return raw_thread_co_submit(s->fd, offset, iov, niov, type);
}

static int coroutine_fn raw_co_sync(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;

    int err = atomic_load(&s->flush_error);
    if (err) {
        return err;
    }
    int ret = raw_engine_co_submit(s, 0, NULL, 0, RAW_AIO_FDATASYNC);
    if (ret < 0) {
        int expected = 0;
        atomic_compare_exchange_strong(&s->flush_error, &expected, ret);
    }
    return ret;
}

/*
 * Transfers all of @qiov, retrying after short transfers.  A read that
 * meets end of file is completed with zeroes; so is one whose remainder
 * would be misaligned for O_DIRECT, which only end of file can cause.
 */
static int coroutine_fn raw_co_rw(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                  IOVector *qiov, RawAioType type)
{
    BDRVRawState *s = bs->opaque;
    int64_t done = 0;

    while (done < bytes) {
        IOVector part;
        iov_init_slice(&part, qiov, done, bytes - done);
        int niov = MIN(part.niov, IOV_MAX);
        size_t len = iovec_size(part.iov, niov);
        int ret = raw_engine_co_submit(s, offset + done, part.iov, niov, type);
        iov_destroy(&part);

        if (ret < 0) {
            return ret;
        }
        if (ret == 0 && type == RAW_AIO_WRITE) {
            return -EIO; /* the kernel made no progress and gave no reason */
        }
        done += ret;
        if (type == RAW_AIO_READ && (size_t)ret < len &&
            (ret == 0 || (offset + done) % s->request_alignment != 0)) {
            iov_memset(qiov, done, 0, bytes - done);
            return 0;
        }
    }
    return 0;
}

/*
 * O_DIRECT wants every segment's address aligned to buf_align and its
 * length to whole blocks.  The core aligns offsets and sizes, but a
 * caller's buffer (or the core's head and tail padding around it) may
 * still be misaligned in memory: such vectors go through a bounce buffer.
 */
static bool raw_iov_needs_bounce(BDRVRawState *s, const IOVector *qiov)
{
    if (!(s->open_flags & O_DIRECT)) {
        return false;
    }
    for (int i = 0; i < qiov->niov; i++) {
        if ((uintptr_t)qiov->iov[i].iov_base % s->buf_align ||
            qiov->iov[i].iov_len % s->request_alignment) {
            return true;
        }
    }
    return false;
}

/* raw_co_rw through an aligned copy of @qiov. */
static int coroutine_fn raw_co_rw_bounced(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                          IOVector *qiov, RawAioType type)
{
    void *buf = bdrv_blockalign(bs, bytes);
    IOVector bounce;
    int ret;

    if (type == RAW_AIO_WRITE) {
        iov_to_buf(qiov, 0, buf, bytes);
    }
    iov_init_buf(&bounce, buf, bytes);
    ret = raw_co_rw(bs, offset, bytes, &bounce, type);
    if (ret == 0 && type == RAW_AIO_READ) {
        iov_from_buf(qiov, 0, buf, bytes);
    }
    iov_destroy(&bounce);
    free(buf);
    return ret;
}

static int coroutine_fn raw_co_rw_any(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov, RawAioType type)
{
    if (raw_iov_needs_bounce(bs->opaque, qiov)) {
        return raw_co_rw_bounced(bs, offset, bytes, qiov, type);
    }
    return raw_co_rw(bs, offset, bytes, qiov, type);
}

static int coroutine_fn raw_co_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                      IOVector *qiov, BdrvRequestFlags flags)
{
    return raw_co_rw_any(bs, offset, bytes, qiov, RAW_AIO_READ);
}

static int coroutine_fn raw_co_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                       IOVector *qiov, BdrvRequestFlags flags)
{
    int ret = raw_co_rw_any(bs, offset, bytes, qiov, RAW_AIO_WRITE);
    if (ret == 0 && (flags & BDRV_REQ_FUA)) {
        ret = raw_co_sync(bs);
    }
    return ret;
}

static int coroutine_fn raw_co_flush_to_disk(BlockDriverState *bs)
{
    if (bs->open_flags & BDRV_O_NO_FLUSH) {
        return 0; /* cache=unsafe */
    }
    return raw_co_sync(bs);
}

/* ---- discard and write-zeroes ------------------------------------------ */

static bool raw_is_unsupported(int ret)
{
    return ret == -EOPNOTSUPP || ret == -ENOSYS;
}

static int coroutine_fn raw_co_punch_hole(BDRVRawState *s, int64_t offset, int64_t bytes)
{
    if (atomic_load(&s->no_discard)) {
        return -ENOTSUP;
    }
    int ret =
        raw_thread_co_fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, bytes);
    if (raw_is_unsupported(ret)) {
        atomic_store(&s->no_discard, true);
        return -ENOTSUP;
    }
    return ret;
}

static int coroutine_fn raw_co_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return raw_co_punch_hole(bs->opaque, offset, bytes);
}

/*
 * Makes the range read as zeroes without writing data: a punched hole
 * when unmapping is allowed and the range lies inside the file, else
 * FALLOC_FL_ZERO_RANGE (which also extends the file when needed, and
 * never shrinks it, unlike ftruncate).  -ENOTSUP lets the block layer
 * write zeroes instead.
 */
static int coroutine_fn raw_co_zero_range(BDRVRawState *s, int64_t offset, int64_t bytes,
                                          BdrvRequestFlags flags)
{
    struct stat st;
    if (fstat(s->fd, &st) < 0) {
        return -errno;
    }
    bool inside = !s->is_regular || offset + bytes <= st.st_size;

    if ((flags & BDRV_REQ_MAY_UNMAP) && inside) {
        int ret = raw_co_punch_hole(s, offset, bytes);
        if (ret != -ENOTSUP) {
            return ret;
        }
    }
    if (!atomic_load(&s->no_zero_range)) {
        int ret = raw_thread_co_fallocate(s->fd, FALLOC_FL_ZERO_RANGE, offset, bytes);
        if (!raw_is_unsupported(ret) && ret != -EINVAL) {
            return ret;
        }
        atomic_store(&s->no_zero_range, true);
    }
    if (s->is_regular && offset >= st.st_size) {
        /* Past end of file, freshly allocated blocks read as zeroes. */
        int ret = raw_thread_co_fallocate(s->fd, 0, offset, bytes);
        if (!raw_is_unsupported(ret)) {
            return ret;
        }
    }
    return -ENOTSUP;
}

static int coroutine_fn raw_co_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                             BdrvRequestFlags flags)
{
    int ret = raw_co_zero_range(bs->opaque, offset, bytes, flags);
    if (ret == 0 && (flags & BDRV_REQ_FUA)) {
        ret = raw_co_sync(bs);
    }
    return ret;
}

/* ---- block status -------------------------------------------------------- */

/*
 * Finds the extent containing @offset with SEEK_DATA/SEEK_HOLE.  Returns
 * BDRV_BLOCK_DATA or BDRV_BLOCK_ZERO for [offset, *end), or -errno
 * (-ENXIO: @offset is at or past end of file, or in a trailing hole).
 */
static int raw_find_extent(int fd, int64_t offset, int64_t *end)
{
    off_t data = lseek(fd, offset, SEEK_DATA);
    if (data < 0) {
        return -errno;
    }
    if (data > offset) {
        *end = data;
        return BDRV_BLOCK_ZERO;
    }
    off_t hole = lseek(fd, offset, SEEK_HOLE);
    if (hole < 0) {
        return -errno;
    }
    /* hole == offset means the file changed between the two calls: call it data. */
    *end = hole > offset ? hole : offset + 1;
    return BDRV_BLOCK_DATA;
}

static int coroutine_fn raw_co_block_status(BlockDriverState *bs, bool want_zero, int64_t offset,
                                            int64_t bytes, int64_t *pnum, int64_t *map,
                                            BlockDriverState **file)
{
    BDRVRawState *s = bs->opaque;
    int64_t align = s->request_alignment;
    int64_t end = offset + bytes;
    int ret = BDRV_BLOCK_DATA;

    *map = offset;
    *file = bs;
    if (want_zero && s->is_regular) {
        ret = raw_find_extent(s->fd, offset, &end);
        if (ret == -ENXIO) {
            ret = BDRV_BLOCK_ZERO; /* a trailing hole up to end of file */
            end = offset + bytes;
        } else if (ret < 0) {
            ret = BDRV_BLOCK_DATA; /* no SEEK_DATA here: everything is data */
            end = offset + bytes;
        }
    }
    *pnum = MIN(end, offset + bytes) - offset;

    /* Keep answers aligned: a short hole counts as data, data extends to the boundary. */
    if (*pnum % align) {
        if (ret == BDRV_BLOCK_ZERO && *pnum > align) {
            *pnum -= *pnum % align;
        } else {
            ret = BDRV_BLOCK_DATA;
            *pnum = MIN((*pnum + align - 1) / align * align, bytes);
        }
    }
    return ret | BDRV_BLOCK_OFFSET_VALID;
}

/* ---- length and truncation ---------------------------------------------- */

static int64_t raw_fd_length(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0) {
        return -errno;
    }
    if (S_ISBLK(st.st_mode)) {
        uint64_t size;
        if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
            return -errno;
        }
        return size;
    }
    if (S_ISREG(st.st_mode)) {
        return st.st_size;
    }
    off_t size = lseek(fd, 0, SEEK_END);
    return size < 0 ? -errno : size;
}

static int64_t coroutine_fn raw_co_getlength(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;
    return raw_fd_length(s->fd);
}

static int64_t coroutine_fn raw_co_get_allocated_file_size(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;
    struct stat st;
    if (fstat(s->fd, &st) < 0) {
        return -errno;
    }
    return (int64_t)st.st_blocks * 512;
}

/* Writes zeroes over [@from, @to) through a buffered descriptor. */
static int raw_write_zeroes_sync(int fd, int64_t from, int64_t to)
{
    /* O_DIRECT would need aligned writes: go through the page cache instead. */
    g_autofree char *self = g_strdup_printf("/proc/self/fd/%d", fd);
    int wfd = open(self, O_WRONLY | O_CLOEXEC);
    if (wfd < 0) {
        return -errno;
    }
    const size_t chunk = 1 << 20;
    g_autofree char *zeroes = g_malloc0(chunk);
    int ret = 0;
    while (from < to && ret == 0) {
        ssize_t n = pwrite(wfd, zeroes, MIN((int64_t)chunk, to - from), from);
        if (n < 0 && errno != EINTR) {
            ret = -errno;
        } else if (n > 0) {
            from += n;
        }
    }
    if (ret == 0 && fdatasync(wfd) < 0) {
        ret = -errno;
    }
    close(wfd);
    return ret;
}

int raw_grow_file(int fd, int64_t old_size, int64_t new_size, PreallocMode mode)
{
    int ret = 0;
    g_assert(new_size >= old_size);

    switch (mode) {
    case PREALLOC_MODE_OFF:
        ret = ftruncate(fd, new_size) < 0 ? -errno : 0;
        break;
    case PREALLOC_MODE_FALLOC:
        if (new_size > old_size) {
            do {
                ret = fallocate(fd, 0, old_size, new_size - old_size) < 0 ? -errno : 0;
            } while (ret == -EINTR);
            if (ret == -EOPNOTSUPP) {
                ret = -ENOTSUP;
            }
        }
        break;
    case PREALLOC_MODE_FULL:
        ret = raw_write_zeroes_sync(fd, old_size, new_size);
        break;
    default:
        return -ENOTSUP;
    }
    if (ret < 0 && ftruncate(fd, old_size) < 0) {
        /* Best effort: the file keeps whatever part was added. */
    }
    return ret;
}

typedef struct RawGrow {
    int fd;
    int64_t old_size, new_size;
    PreallocMode mode;
} RawGrow;

static int raw_grow_file_work(void *opaque)
{
    RawGrow *g = opaque;
    return raw_grow_file(g->fd, g->old_size, g->new_size, g->mode);
}

static int coroutine_fn raw_co_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                        PreallocMode prealloc, BdrvRequestFlags flags,
                                        GError **errp)
{
    BDRVRawState *s = bs->opaque;
    int64_t size = raw_fd_length(s->fd);
    if (size < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-size),
                    "Could not get the length of '%s': %s", s->filename, g_strerror(-size));
        return size;
    }

    if (!s->is_regular) {
        /* Devices keep their size; a smaller one is fine unless asked for exactly. */
        if (offset > size || (exact && offset != size) || prealloc != PREALLOC_MODE_OFF) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_PERM,
                        "Cannot resize '%s' to %" PRId64 " bytes: it is a device of %" PRId64
                        " bytes",
                        s->filename, offset, size);
            return -ENOTSUP;
        }
        return 0;
    }
    if (prealloc != PREALLOC_MODE_OFF && offset < size) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Preallocation mode '%s' cannot shrink a file", raw_prealloc_names[prealloc]);
        return -ENOTSUP;
    }
    if (prealloc == PREALLOC_MODE_METADATA) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                    "Preallocation mode 'metadata' is not supported by the 'file' driver");
        return -ENOTSUP;
    }

    int ret;
    if (offset <= size) {
        ret = raw_thread_co_ftruncate(s->fd, offset);
    } else {
        RawGrow g = {s->fd, size, offset, prealloc};
        ret = thread_pool_co_submit(aio_get_thread_pool(aio_get_current()), raw_grow_file_work, &g);
    }
    if (ret < 0) {
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                    "Could not resize '%s' to %" PRId64 " bytes (preallocation=%s): %s",
                    s->filename, offset, raw_prealloc_names[prealloc], g_strerror(-ret));
    }
    return ret;
}

static int raw_has_zero_init(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;
    return s->is_regular;
}

/* ---- creation -------------------------------------------------------------- */

static bool raw_create(const char *filename, GHashTable *options, GError **errp)
{
    uint64_t size;
    int prealloc;

    g_free(opts_take_str(options, "filename"));
    if (!opts_take_size(options, "size", 0, &size, errp) ||
        !opts_take_enum(options, "preallocation", raw_prealloc_names, PREALLOC_MODE_OFF, &prealloc,
                        errp)) {
        return false;
    }
    if (size > INT64_MAX) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL, "Image size is too large");
        return false;
    }

    int fd = open(filename, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        int err = errno;
        g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(err), "Could not create '%s': %s",
                    filename, g_strerror(err));
        return false;
    }

    /* Refuse to clobber an image that someone is using (QEMU does the same). */
    RawLockState locks = {0};
    uint64_t perm = BLK_PERM_WRITE | BLK_PERM_RESIZE;
    bool ok = !raw_lock_supported(fd) ||
              (raw_lock_apply(fd, &locks, perm, BLK_PERM_RESIZE, false, errp) &&
               raw_lock_check(fd, perm, BLK_PERM_ALL & ~BLK_PERM_RESIZE, filename, errp));

    struct stat st;
    if (ok && fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) {
        int ret = ftruncate(fd, 0) < 0 ? -errno : 0;
        if (ret == 0) {
            ret = raw_grow_file(fd, 0, size, prealloc);
        }
        if (ret < 0) {
            g_set_error(errp, G_FILE_ERROR, g_file_error_from_errno(-ret),
                        "Could not resize '%s' to %" PRIu64 " bytes (preallocation=%s): %s",
                        filename, size, raw_prealloc_names[prealloc], g_strerror(-ret));
            ok = false;
        }
    } else if (ok) {
        int64_t len = raw_fd_length(fd);
        if (len >= 0 && (uint64_t)len < size) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSPC,
                        "'%s' holds only %" PRId64 " bytes, %" PRIu64 " were asked for", filename,
                        len, size);
            ok = false;
        }
    }
    close(fd); /* releases the locks */
    return ok;
}

/* ---- permissions and image locking ------------------------------------- */

/* Brings the lock bytes of the node's descriptor to @perm and @unshared. */
static bool raw_lock_fd(BDRVRawState *s, uint64_t perm, uint64_t unshared, bool release,
                        GError **errp)
{
    return raw_lock_apply(s->fd, &s->locks, perm, unshared, release, errp);
}

static bool raw_check_perm(BlockDriverState *bs, uint64_t perm, uint64_t shared, GError **errp)
{
    BDRVRawState *s = bs->opaque;
    if (!s->use_lock) {
        return true;
    }
    uint64_t unshared_union = (~s->shared | ~shared) & BLK_PERM_ALL;
    if (raw_lock_fd(s, s->perm | perm, unshared_union, false, errp) &&
        raw_lock_check(s->fd, perm, shared, s->filename, errp)) {
        return true;
    }
    raw_lock_fd(s, s->perm, ~s->shared & BLK_PERM_ALL, true, NULL);
    return false;
}

static void raw_set_perm(BlockDriverState *bs, uint64_t perm, uint64_t shared)
{
    BDRVRawState *s = bs->opaque;
    s->perm = perm;
    s->shared = shared;
    if (s->use_lock) {
        /* After check_perm took the union this only unlocks, which cannot fail in practice. */
        raw_lock_fd(s, perm, ~shared & BLK_PERM_ALL, true, NULL);
    }
}

static void raw_abort_perm_update(BlockDriverState *bs)
{
    BDRVRawState *s = bs->opaque;
    if (s->use_lock) {
        raw_lock_fd(s, s->perm, ~s->shared & BLK_PERM_ALL, true, NULL);
    }
}

/* ---- reopen ----------------------------------------------------------- */

/*
 * Opens the descriptor the new flags need; requests keep using the old one
 * until commit.  The lock bytes move over only at commit: our two
 * descriptors are separate open file descriptions, so locks on both would
 * look like another user to a permission check made in between.
 */
static bool raw_reopen_prepare(BDRVReopenState *state, GError **errp)
{
    BDRVRawState *s = state->bs->opaque;
    RawReopenState *rs = g_new0(RawReopenState, 1);

    rs->open_flags = raw_oflags(state->flags);
    rs->fd = -1;
    if (rs->open_flags != s->open_flags) {
        if (s->aio == RAW_AIO_MODE_NATIVE && !(rs->open_flags & O_DIRECT)) {
            g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_INVAL,
                        "aio=native needs cache.direct=on; it cannot be turned off by a reopen");
            g_free(rs);
            return false;
        }
        rs->fd = raw_open_fd(s->filename, rs->open_flags, errp);
        if (rs->fd < 0) {
            g_free(rs); /* a failed prepare gets no abort */
            return false;
        }
        s->reopen_fd = rs->fd;
    }
    state->opaque = rs;
    return true;
}

static void raw_reopen_commit(BDRVReopenState *state)
{
    BDRVRawState *s = state->bs->opaque;
    RawReopenState *rs = state->opaque;

    if (rs->fd >= 0) {
        /*
         * Everyone else only holds shared locks, so taking ours on the new
         * descriptor cannot conflict; only a kernel error (ENOLCK) can stop
         * it, and then the image is less protected but still correct.
         */
        RawLockState locks = {0};
        GError *err = NULL;
        if (s->use_lock &&
            !raw_lock_apply(rs->fd, &locks, s->locks.perm, s->locks.unshared, false, &err)) {
            g_warning("%s: %s", s->filename, err->message);
            g_error_free(err);
        }
        close(s->fd);
        s->fd = rs->fd;
        s->locks = locks;
        s->open_flags = rs->open_flags;
        s->reopen_fd = -1;
        raw_probe_alignment(s);
    }
    g_free(rs);
    state->opaque = NULL;
}

static void raw_reopen_abort(BDRVReopenState *state)
{
    BDRVRawState *s = state->bs->opaque;
    RawReopenState *rs = state->opaque;

    if (rs && rs->fd >= 0) {
        close(rs->fd);
        s->reopen_fd = -1;
    }
    g_free(rs);
    state->opaque = NULL;
}

BlockDriver bdrv_file = {
    .format_name = "file",
    .protocol_name = "file",
    .instance_size = sizeof(BDRVRawState),
    .is_protocol = true,

    .open = raw_open,
    .close = raw_close,
    .create = raw_create,
    .refresh_limits = raw_refresh_limits,
    .has_zero_init = raw_has_zero_init,

    .co_preadv = raw_co_preadv,
    .co_pwritev = raw_co_pwritev,
    .co_pwrite_zeroes = raw_co_pwrite_zeroes,
    .co_pdiscard = raw_co_pdiscard,
    .co_flush_to_disk = raw_co_flush_to_disk,
    .co_block_status = raw_co_block_status,
    .co_truncate = raw_co_truncate,
    .co_getlength = raw_co_getlength,
    .co_get_allocated_file_size = raw_co_get_allocated_file_size,

    .reopen_prepare = raw_reopen_prepare,
    .reopen_commit = raw_reopen_commit,
    .reopen_abort = raw_reopen_abort,

    .check_perm = raw_check_perm,
    .set_perm = raw_set_perm,
    .abort_perm_update = raw_abort_perm_update,
};
