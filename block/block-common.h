/*
 * Block layer: types and constants shared by every calling context.
 *
 * This header only names things (typedefs, flags, limits, permission bits,
 * block-status bits); it declares no functions that act on a node.  Which
 * functions may be called from where is answered by the header that
 * declares them:
 *   block-global-state.h  main loop only (open, close, graph changes, drain)
 *   block-io.h            any thread that runs an AioContext (requests)
 *   block-int.h           what drivers implement and may call
 */
#ifndef STRATA_BLOCK_COMMON_H
#define STRATA_BLOCK_COMMON_H

#include <glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "aio/aio.h"
#include "coroutine/coroutine.h"

typedef struct BlockDriver BlockDriver;
typedef struct BlockDriverState BlockDriverState;
typedef struct BdrvChild BdrvChild;
typedef struct BdrvChildClass BdrvChildClass;
typedef struct BlockBackend BlockBackend;
typedef struct IOVector IOVector;

/*
 * Documents (and where cheap, checks) the calling context of a function.
 * GLOBAL_STATE_CODE: main loop thread, outside or inside a coroutine.
 * IO_CODE: any thread running an AioContext; purely documentary.
 */
#ifndef GLOBAL_STATE_CODE
#define GLOBAL_STATE_CODE() g_assert(aio_in_main_thread())
#endif
#ifndef IO_CODE
#define IO_CODE()                                                                                  \
    do {                                                                                           \
    } while (0)
#endif

/* Largest single request, in bytes; keeps int64 arithmetic on offsets safe. */
#define BDRV_REQUEST_MAX_BYTES (1LL << 31)
#define BDRV_SECTOR_SIZE       512
/* Bytes read from an image's start to guess its format. */
#define BDRV_PROBE_BUF_SIZE 2048
#define BDRV_NODE_NAME_MAX  32

/* --- open flags (bs->open_flags) --- */
#define BDRV_O_RDWR         0x0002  /* open read-write */
#define BDRV_O_NOCACHE      0x0020  /* O_DIRECT ("cache.direct=on") */
#define BDRV_O_NO_FLUSH     0x0200  /* flushes are no-ops ("cache.no-flush=on") */
#define BDRV_O_NO_BACKING   0x0100  /* do not open the backing file */
#define BDRV_O_PROTOCOL     0x8000  /* @filename names a protocol node, no format layer */
#define BDRV_O_UNMAP        0x4000  /* discard requests may unmap ("discard=unmap") */
#define BDRV_O_FORCE_SHARE  0x10000 /* share every permission (read-only users only) */
#define BDRV_O_COPY_ON_READ 0x0400  /* copy data read from the backing chain into this node */
#define BDRV_O_NO_IO        0x20000 /* open metadata only; no guest I/O will follow */
#define BDRV_O_RESIZE       0x40000 /* the BlockBackend wants the resize permission */

/* --- request flags (BdrvRequestFlags) --- */
typedef enum BdrvRequestFlags {
    /* Write: data must be on stable storage when the request completes. */
    BDRV_REQ_FUA = 0x1,
    /* Write-zeroes: the range may be deallocated if it then reads as zeroes. */
    BDRV_REQ_MAY_UNMAP = 0x2,
    /* Write-zeroes: fail with -ENOTSUP instead of writing a zeroed buffer. */
    BDRV_REQ_NO_FALLBACK = 0x4,
    /* Internal: this write is a write-zeroes (qiov is NULL). */
    BDRV_REQ_ZERO_WRITE = 0x8,
    /* Write: the data written equals what is already there (copy-on-read). */
    BDRV_REQ_WRITE_UNCHANGED = 0x10,
    /* Read: copy what is read from the backing chain into this node. */
    BDRV_REQ_COPY_ON_READ = 0x20,
    /* Read: fail with -ENOTSUP rather than fetch data from a backing file. */
    BDRV_REQ_PREFETCH = 0x40,
    /* Write: store compressed (co_pwritev_compressed), unpadded, aligned as the driver needs. */
    BDRV_REQ_WRITE_COMPRESSED = 0x80,
    BDRV_REQ_MASK = 0xff,
} BdrvRequestFlags;

/* --- block status bits (co_block_status return value) --- */
#define BDRV_BLOCK_DATA         0x01 /* the range holds data (reads come from somewhere) */
#define BDRV_BLOCK_ZERO         0x02 /* the range reads as zeroes */
#define BDRV_BLOCK_OFFSET_VALID 0x04 /* *map is the host offset in *file */
#define BDRV_BLOCK_RAW          0x08 /* driver only: ask *file at offset *map instead */
#define BDRV_BLOCK_ALLOCATED    0x10 /* this layer (not a backing file) decides the content */
#define BDRV_BLOCK_EOF          0x20 /* the range ends at the end of the node */
#define BDRV_BLOCK_RECURSE      0x40 /* driver only: ask *file whether DATA really is ZERO */

/* --- permissions (BdrvChild.perm / shared_perm) --- */
enum {
    BLK_PERM_CONSISTENT_READ = 0x01, /* reads see what was written (no one half-writes) */
    BLK_PERM_WRITE = 0x02,           /* may change the visible content */
    BLK_PERM_WRITE_UNCHANGED = 0x04, /* may write, never changing the visible content */
    BLK_PERM_RESIZE = 0x08,          /* may change the length */
    BLK_PERM_ALL = 0x0f,
};

/*
 * Roles of a child edge, combined as flags: what the parent uses the child
 * for decides the permissions it needs (see bdrv_default_perms()).
 */
typedef enum BdrvChildRole {
    BDRV_CHILD_DATA = 0x01,     /* guest data lives here */
    BDRV_CHILD_METADATA = 0x02, /* the format's metadata lives here */
    BDRV_CHILD_FILTERED = 0x04, /* a filter's child: same content as the parent */
    BDRV_CHILD_COW = 0x08,      /* a backing file: read where the parent has no data */
    BDRV_CHILD_PRIMARY = 0x10,  /* the child the parent was opened on ("file") */
} BdrvChildRole;

#define BDRV_CHILD_IMAGE (BDRV_CHILD_DATA | BDRV_CHILD_METADATA)

typedef enum PreallocMode {
    PREALLOC_MODE_OFF,
    PREALLOC_MODE_METADATA,
    PREALLOC_MODE_FALLOC,
    PREALLOC_MODE_FULL,
} PreallocMode;

/*
 * What a node can do in one request.  Every field is in bytes; 0 means
 * "no limit" for max_* and "no preference" for opt_* and *_alignment.
 * The request layer guarantees the driver never sees a request that
 * breaks request_alignment or max_transfer.
 */
typedef struct BlockLimits {
    uint32_t request_alignment;       /* offset and length granularity (power of two, >= 1) */
    uint32_t max_transfer;            /* largest read/write (multiple of request_alignment) */
    uint32_t opt_transfer;            /* preferred read/write size */
    uint32_t pdiscard_alignment;      /* discard granularity (smaller pieces are dropped) */
    int64_t max_pdiscard;             /* largest single discard */
    uint32_t pwrite_zeroes_alignment; /* write-zeroes granularity (pieces are written) */
    int64_t max_pwrite_zeroes;        /* largest single write-zeroes */
    size_t min_mem_alignment;         /* buffer address alignment the driver needs */
    size_t opt_mem_alignment;         /* buffer alignment that avoids bounce buffers */
} BlockLimits;

/* Returned by get_info: format details shown by "info" front ends. */
typedef struct BlockDriverInfo {
    int cluster_size; /* 0 when the format has no clusters */
    bool is_dirty;    /* image was not closed cleanly */
    int64_t vm_state_offset;
} BlockDriverInfo;

/* Result of a driver's measure callback (qemu-img measure's three numbers). */
typedef struct BlockMeasureInfo {
    uint64_t required;        /* host bytes for the data the source holds */
    uint64_t fully_allocated; /* host bytes when every cluster is allocated */
    bool has_bitmaps;         /* the source has persistent bitmaps to copy */
    uint64_t bitmaps;         /* host bytes for those bitmaps */
} BlockMeasureInfo;

/* Result of co_check (qemu-img check). */
typedef struct BdrvCheckResult {
    int corruptions;
    int leaks;
    int check_errors;
    int corruptions_fixed;
    int leaks_fixed;
    int64_t image_end_offset;
    int64_t allocated_clusters, total_clusters;
    int64_t fragmented_clusters, compressed_clusters;
} BdrvCheckResult;

typedef enum BdrvCheckMode {
    BDRV_FIX_NONE = 0,
    BDRV_FIX_LEAKS = 1,
    BDRV_FIX_ERRORS = 2,
} BdrvCheckMode;

#endif /* STRATA_BLOCK_COMMON_H */
