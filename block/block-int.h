/*
 * Block layer, driver-facing: the BlockDriver callback table, the node and
 * edge structures, and the helpers a driver may call.
 *
 * Threading contract for drivers:
 *  - Control callbacks (probe, open, close, create, reopen_*, refresh_limits,
 *    child_perm, *_perm, get_info, drain_begin/end) run in the main loop.
 *    open and close run outside any request; close runs drained.
 *  - co_* callbacks run in a coroutine in the *caller's* AioContext, which
 *    may be any thread; several may run at once on one node, from several
 *    threads.  A driver protects its own metadata (a CoMutex in its state)
 *    and keeps per-thread resources (I/O engines) per AioContext, found with
 *    aio_get_current().  While a co_* callback runs, the graph reader lock
 *    is held: bs->file and bs->backing do not change under it.
 *  - I/O callbacks return >= 0 on success, -errno on failure; control
 *    callbacks return bool (or a pointer) and fill @errp.
 *
 * The request layer (block/io.c) has already checked bounds, aligned the
 * request to bl.request_alignment and split it to bl.max_transfer before a
 * co_preadv/co_pwritev callback sees it.
 */
#ifndef STRATA_BLOCK_INT_H
#define STRATA_BLOCK_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "block/block-common.h"
#include "block/block-global-state.h"
#include "block/block-io.h"
#include "block/debug-event.h"
#include "block/graph-lock.h"
#include "block/iov.h"
#include "block/options.h"
#include "block/shard.h"

/* State of one node being reopened (bdrv_reopen), handed to the driver. */
typedef struct BDRVReopenState {
    BlockDriverState *bs;
    int flags;           /* the new open flags */
    GHashTable *options; /* options that change; the driver takes what it knows */
    void *opaque;        /* the driver's own prepared state */
} BDRVReopenState;

struct BlockDriver {
    /* "raw", "qcow2", "file", "null-co"... unique in the registry. */
    const char *format_name;
    /* Size of the driver state that bs->opaque points to (zeroed). */
    size_t instance_size;

    /*
     * Protocol drivers open a filename or address themselves (file, null-co).
     * Other drivers are formats or filters: the core opens their "file"
     * child first (bs->file is set when open runs).
     */
    bool is_protocol;
    /* Prefix that selects this protocol in a filename ("file" for "file:x"). */
    const char *protocol_name;
    /* A filter: reads what its "file" child reads; may be dropped from chains. */
    bool is_filter;
    /* The format can have a backing file (bs->backing_file set by open). */
    bool supports_backing;
    /* The length may change behind our back (host devices): never cached. */
    bool has_variable_length;
    /*
     * Role of the "file" child the core opens for a format or filter; 0
     * means BDRV_CHILD_IMAGE | PRIMARY for formats and FILTERED | PRIMARY
     * for filters.  raw sets DATA | FILTERED | PRIMARY.
     */
    BdrvChildRole file_child_role;

    /*
     * Scores how likely @buf (the first @len bytes of the image, len may be
     * shorter than BDRV_PROBE_BUF_SIZE for small images) is this format:
     * 0 = not it, 100 = certainly (magic matched), 1 = fallback (raw).
     */
    int (*probe)(const uint8_t *buf, int len, const char *filename);

    /*
     * Protocols only: turns a filename into options ("file:/a" ->
     * filename=/a).  When NULL, the core strips "<protocol_name>:" and
     * stores the rest as "filename".
     */
    bool (*parse_filename)(const char *filename, GHashTable *options, GError **errp);

    /*
     * Opens @bs.  Takes (opts_take_*) every option it understands from
     * @options; the core rejects leftovers.  @flags are BDRV_O_*.  Sets
     * bs->supported_*_flags, and for formats bs->backing_file/_format.
     * On failure frees everything it allocated (close is not called).
     */
    bool (*open)(BlockDriverState *bs, GHashTable *options, int flags, GError **errp);
    /* Releases everything open made; the node is drained, children still attached. */
    void (*close)(BlockDriverState *bs);
    /*
     * Creates an image.  For protocols @filename names the object to make;
     * formats open their protocol with bdrv_open()/blk_new_open() and write
     * through it.  @options holds creation options ("size", ...), taken.
     */
    bool (*create)(const char *filename, GHashTable *options, GError **errp);

    /*
     * Reads @bytes at @offset into @qiov (qiov->size == bytes).  Aligned to
     * bl.request_alignment and at most bl.max_transfer.  Reads past the end
     * of a growable protocol return zeroes.
     */
    int coroutine_fn (*co_preadv)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                  IOVector *qiov, BdrvRequestFlags flags);
    /*
     * Writes @qiov at @offset.  @flags holds only bits of
     * bs->supported_write_flags (FUA is emulated with a flush otherwise).
     */
    int coroutine_fn (*co_pwritev)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   IOVector *qiov, BdrvRequestFlags flags);
    /* Optional: writes compressed data; aligned to the format's cluster size. */
    int coroutine_fn (*co_pwritev_compressed)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                              IOVector *qiov);
    /*
     * Optional: makes the range read as zeroes without a data buffer.
     * @flags holds only bits of bs->supported_zero_flags.  Returns -ENOTSUP
     * when it cannot (the core then writes zeroes unless NO_FALLBACK).
     */
    int coroutine_fn (*co_pwrite_zeroes)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                         BdrvRequestFlags flags);
    /* Optional: drops the range; a hint, -ENOTSUP is not an error for the caller. */
    int coroutine_fn (*co_pdiscard)(BlockDriverState *bs, int64_t offset, int64_t bytes);
    /*
     * Flushes: to_os makes our own caches reach the layer below (qcow2
     * metadata caches), to_disk makes the layer below durable (fdatasync).
     * The core flushes to_os, then the children, then to_disk.
     */
    int coroutine_fn (*co_flush_to_os)(BlockDriverState *bs);
    int coroutine_fn (*co_flush_to_disk)(BlockDriverState *bs);
    /*
     * Describes [@offset, @offset + @bytes): returns BDRV_BLOCK_* bits for
     * the first *pnum bytes (0 < *pnum <= bytes, at least one byte unless
     * at end of file) and, with OFFSET_VALID, *map and *file say where the
     * data lives.  @want_zero false lets the driver skip costly ZERO
     * detection.  Aligned to bl.request_alignment.  Optional: protocols
     * default to DATA|OFFSET_VALID at the same offset, filters to RAW on
     * their file child.
     */
    int coroutine_fn (*co_block_status)(BlockDriverState *bs, bool want_zero, int64_t offset,
                                        int64_t bytes, int64_t *pnum, int64_t *map,
                                        BlockDriverState **file);
    /*
     * Changes the length to @offset.  @exact false lets a protocol keep a
     * larger size it cannot shrink.  @flags: BDRV_REQ_ZERO_WRITE asks that
     * growth reads as zeroes even over an old backing file.  Runs in a
     * request; the core updates its cached length afterwards.
     */
    int coroutine_fn (*co_truncate)(BlockDriverState *bs, int64_t offset, bool exact,
                                    PreallocMode prealloc, BdrvRequestFlags flags, GError **errp);
    /* Length in bytes or -errno.  Required. */
    int64_t coroutine_fn (*co_getlength)(BlockDriverState *bs);
    /* Optional: bytes of host storage used (for "disk size"), or -errno. */
    int64_t coroutine_fn (*co_get_allocated_file_size)(BlockDriverState *bs);
    /* Optional: consistency check and repair (image "check"). */
    int coroutine_fn (*co_check)(BlockDriverState *bs, BdrvCheckResult *result, BdrvCheckMode fix);

    /* Optional: format details (cluster size, dirty).  Returns -errno. */
    int (*get_info)(BlockDriverState *bs, BlockDriverInfo *bdi);
    /* Optional: 1 when a freshly created image reads as zeroes, 0 when not. */
    int (*has_zero_init)(BlockDriverState *bs);
    /* Optional: empties the image (commit), returns -errno. */
    int (*make_empty)(BlockDriverState *bs);
    /* Optional: rewrites the backing file name in the image header. */
    int (*change_backing_file)(BlockDriverState *bs, const char *backing_file,
                               const char *backing_fmt);
    /*
     * Optional: what "info" shows under "Format specific information", as an
     * a{sv} dictionary keyed like qemu-img's JSON ("compat", "lazy-refcounts",
     * ...).  Returns a new (possibly floating) reference, or NULL.  Main loop.
     */
    GVariant *(*get_specific_info)(BlockDriverState *bs, GError **errp);
    /*
     * Optional: host bytes a new image of this format would need, given the
     * creation options @opts and either the source node @in_bs (its allocated
     * data counts) or, when @in_bs is NULL, a virtual @size.  Main loop.
     */
    bool (*measure)(GHashTable *opts, BlockDriverState *in_bs, int64_t size,
                    BlockMeasureInfo *info, GError **errp);
    /*
     * Optional: changes creation options of an open, writable image in place
     * (qemu-img amend).  Main loop, node drained.  @force allows changes that
     * lose information QEMU would refuse to drop without --force.
     */
    bool (*amend)(BlockDriverState *bs, GHashTable *opts, bool force, GError **errp);
    /*
     * Optional: the VM state area beyond the guest disk (qemu-io read/write
     * -b, savevm).  @offset is relative to the start of that area.
     */
    int coroutine_fn (*co_preadv_vmstate)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                          IOVector *qiov);
    int coroutine_fn (*co_pwritev_vmstate)(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                           IOVector *qiov);
    /* Optional: internal snapshots (block/snapshot.h).  Main loop, node drained. */
    const struct BdrvSnapshotOps *snapshot_ops;
    /* Optional: persistent dirty bitmaps (block/bitmaps.h).  Main loop, node drained. */
    const struct BdrvBitmapOps *bitmap_ops;

    /*
     * Fills bs->bl after open and after the children changed.  The core
     * has already merged the children's limits into bs->bl (largest
     * alignment, smallest max_transfer); the driver adjusts.  Optional.
     */
    void (*refresh_limits)(BlockDriverState *bs, GError **errp);

    /*
     * Reopen in three steps: prepare checks and stages the change (nothing
     * visible), then either commit makes it effective or abort drops it.
     * The node is drained throughout.  No prepare = reopen unsupported.
     */
    bool (*reopen_prepare)(BDRVReopenState *state, GError **errp);
    void (*reopen_commit)(BDRVReopenState *state);
    void (*reopen_abort)(BDRVReopenState *state);

    /*
     * Permissions this node needs (*nperm) and tolerates (*nshared) on
     * child @c, given what its own parents need (@perm) and share
     * (@shared).  NULL uses bdrv_default_perms().
     */
    void (*child_perm)(BlockDriverState *bs, BdrvChild *c, BdrvChildRole role, uint64_t perm,
                       uint64_t shared, uint64_t *nperm, uint64_t *nshared);
    /*
     * Protocols that lock images: check_perm says whether the node may take
     * @perm while sharing @shared (e.g. by testing host file locks);
     * set_perm commits it, abort_perm_update reverts a checked change.
     */
    bool (*check_perm)(BlockDriverState *bs, uint64_t perm, uint64_t shared, GError **errp);
    void (*set_perm)(BlockDriverState *bs, uint64_t perm, uint64_t shared);
    void (*abort_perm_update)(BlockDriverState *bs);

    /* Optional: the node becomes quiesced / active again (timers, caches). */
    void (*drain_begin)(BlockDriverState *bs);
    void (*drain_end)(BlockDriverState *bs);

    /*
     * Test drivers (blkdebug, block/debug-event.h).  debug_event: a driver
     * above reached the point @event in a request (IO_CODE, in a
     * coroutine; may yield to stop the request at a breakpoint).  The
     * breakpoint callbacks run in the main loop and return 0 or -errno
     * (debug_is_suspended: true when a request is stopped at @tag).
     */
    void coroutine_fn (*debug_event)(BlockDriverState *bs, BlkdebugEvent event);
    int (*debug_breakpoint)(BlockDriverState *bs, const char *event, const char *tag);
    int (*debug_remove_breakpoint)(BlockDriverState *bs, const char *tag);
    int (*debug_resume)(BlockDriverState *bs, const char *tag);
    bool (*debug_is_suspended)(BlockDriverState *bs, const char *tag);
};

/*
 * What a parent is, seen from its child edge: a node or a BlockBackend.
 * All callbacks run in the main loop.
 */
struct BdrvChildClass {
    bool parent_is_bds;
    /* "node 'x'" or "block device 'y'": for permission error messages. */
    char *(*get_parent_desc)(BdrvChild *c);
    /* The child was quiesced: stop sending new requests until drained_end. */
    void (*drained_begin)(BdrvChild *c);
    void (*drained_end)(BdrvChild *c);
    /* True while the parent still has requests in flight (drain waits). */
    bool (*drained_poll)(BdrvChild *c);
};

/*
 * An edge from a parent (node or BlockBackend) to a child node.
 * Invariants: c->bs is in the graph while the edge exists and changes only
 * under the graph writer lock; perm/shared_perm are the ones last checked
 * against the child's other parents.
 */
struct BdrvChild {
    BlockDriverState *bs;
    char *name; /* "file", "backing", "data-file", "root" */
    BdrvChildRole role;
    const BdrvChildClass *klass;
    void *opaque; /* the parent: BlockDriverState * or BlockBackend * */
    uint64_t perm;
    uint64_t shared_perm;
    /* Main loop only: klass->drained_begin was called and not yet ended. */
    bool quiesced_parent;
};

/* A request in the per-node tracked list (block/io.c). */
typedef struct BdrvTrackedRequest BdrvTrackedRequest;

/*
 * One thread's slot of a node's per-request counters (block/shard.h): the
 * requests in flight, and the writes completed (their sum is the node's
 * write generation, which flush compares with flushed_gen).
 */
typedef struct BdrvNodeShard {
    BdrvInFlight in_flight;
    _Atomic uint64_t write_gen;
} __attribute__((aligned(BDRV_CACHE_LINE))) BdrvNodeShard;

/*
 * A node.  Field rules:
 *  - drv, opaque, node_name, filename, open_flags, bl, supported_*: written
 *    in the main loop at open/reopen/refresh (drained), read anywhere.
 *  - children, parents, file, backing, refcnt: main loop writes with the
 *    graph writer lock; requests read under the reader lock.
 *  - total_bytes, quiesce_counter, flushed_gen: atomics, any thread.
 *  - shards: per-thread slots of atomics (block/shard.h), any thread; read
 *    through bdrv_get_in_flight() and the flush path.
 *  - tracked_reqs: under reqs_lock.
 */
struct BlockDriverState {
    BlockDriver *drv;
    void *opaque;
    char node_name[BDRV_NODE_NAME_MAX];
    char *filename;       /* as opened ("a.img", "null-co://"); never NULL when open */
    char *backing_file;   /* recorded in the image header; set by the format's open */
    char *backing_format; /* driver of the backing file, when the header names it */
    int open_flags;       /* BDRV_O_* */
    bool probed;          /* format guessed by probing: guard sector 0 (see io.c) */
    GHashTable *options;  /* the options this node was opened with (copy) */

    int refcnt;
    GList *children; /* BdrvChild *, in attach order */
    GList *parents;  /* BdrvChild * whose bs is this node */
    BdrvChild *file; /* primary child of formats and filters */
    BdrvChild *backing;

    BlockLimits bl;
    unsigned supported_write_flags;    /* BDRV_REQ_FUA... the driver handles itself */
    unsigned supported_zero_flags;     /* BDRV_REQ_MAY_UNMAP, FUA, NO_FALLBACK */
    unsigned supported_truncate_flags; /* BDRV_REQ_ZERO_WRITE */

    /* Cumulative permissions of all parents (main loop). */
    uint64_t cumulative_perm;
    uint64_t cumulative_shared;

    _Atomic int64_t total_bytes;  /* cached length; -1 when unknown */
    _Atomic int quiesce_counter;  /* > 0: drained; parents hold new requests */
    _Atomic uint64_t flushed_gen; /* write generation covered by the last successful flush */
    /*
     * BDRV_SHARDS slots: requests inside the request layer on this node
     * and completed writes, counted by the thread that runs them.
     */
    BdrvNodeShard *shards;

    pthread_mutex_t reqs_lock; /* guards tracked_reqs, never held across a yield */
    BdrvTrackedRequest *tracked_reqs;
    _Atomic int serialising_in_flight; /* fast path: skip the list when 0 */
    /* jobs hook: this node's dirty bitmaps (block/dirty-bitmap.c), NULL when none */
    struct BdrvDirtyBitmap *_Atomic dirty_bitmaps;
};

/*
 * A format driver reached the point named @ev in a request that does I/O
 * through @child (NULL allowed): tells a blkdebug node at or below it
 * (block/debug-event.h).  Costs two loads when the child's driver neither
 * handles events nor is a filter.  May yield.  IO_CODE, in a coroutine.
 */
static inline void coroutine_fn bdrv_debug_event(BdrvChild *child, BlkdebugEvent ev)
{
    if (child && (child->bs->drv->debug_event || child->bs->drv->is_filter)) {
        bdrv_debug_event_slow(child->bs, ev);
    }
}

/* --- registry --- */

/* Adds @drv (static storage) to the registry; later names shadow nothing. */
void bdrv_register(BlockDriver *drv);
BlockDriver *bdrv_find_driver(const char *format_name);
/* The protocol driver for "proto:..." filenames, or "file" for plain paths. */
BlockDriver *bdrv_find_protocol(const char *filename, GError **errp);
/* Registers the built-in drivers; idempotent, called by every open. */
void bdrv_init(void);

/* Built-in driver tables (block/driver-list.c registers them). */
extern BlockDriver bdrv_null_co;
extern BlockDriver bdrv_passthrough;

/* --- helpers for drivers --- */

static inline bool bdrv_is_read_only(BlockDriverState *bs)
{
    return !(bs->open_flags & BDRV_O_RDWR);
}

/*
 * Opens @filename/@options as a child of @parent called @name with @role
 * (drivers use it for "data-file").  Options "NAME.*" of @parent_options
 * are taken.  Returns NULL (and no error) when nothing is given and
 * @allow_none.
 */
BdrvChild *bdrv_open_child(const char *filename, GHashTable *parent_options, const char *name,
                           BlockDriverState *parent, BdrvChildRole role, bool allow_none,
                           GError **errp);
/* Detaches @child from @parent and drops the reference it held. */
void bdrv_unref_child(BlockDriverState *parent, BdrvChild *child);

/* The permissions QEMU-style drivers want for a child of @role. */
void bdrv_default_perms(BlockDriverState *bs, BdrvChild *c, BdrvChildRole role, uint64_t perm,
                        uint64_t shared, uint64_t *nperm, uint64_t *nshared);
/* A filter's co_block_status: everything is RAW on its file child. */
int coroutine_fn bdrv_co_block_status_from_file(BlockDriverState *bs, bool want_zero,
                                                int64_t offset, int64_t bytes, int64_t *pnum,
                                                int64_t *map, BlockDriverState **file);

/* A buffer aligned to @bs's opt_mem_alignment (at least 8); release it with free(). */
void *bdrv_blockalign(BlockDriverState *bs, size_t size);
/* Same, zero-filled. */
void *bdrv_blockalign0(BlockDriverState *bs, size_t size);

/*
 * Drivers with work outside requests (timers, background flushes) count
 * it as in flight so that drain waits for it.
 */
void bdrv_inc_in_flight(BlockDriverState *bs);
void bdrv_dec_in_flight(BlockDriverState *bs);
/* Requests in flight on @bs now (racy unless drained; drain and tests). */
uint64_t bdrv_get_in_flight(BlockDriverState *bs);

/*
 * jobs hook: a write, write-zeroes or discard of [offset, offset + bytes)
 * on @bs is done (successful or not): marks the node's dirty bitmaps
 * (block/dirty-bitmap.c).  One relaxed load when the node has none.
 */
void bdrv_dirty_bitmaps_mark_slow(BlockDriverState *bs, int64_t offset, int64_t bytes);
static inline void bdrv_dirty_bitmaps_mark(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    if (G_UNLIKELY(atomic_load_explicit(&bs->dirty_bitmaps, memory_order_relaxed))) {
        bdrv_dirty_bitmaps_mark_slow(bs, offset, bytes);
    }
}

/*
 * Translates a cache mode name ("none", "writeback", "writethrough",
 * "directsync", "unsafe") into BDRV_O_NOCACHE/BDRV_O_NO_FLUSH bits in
 * *flags and whether the user wants write-through (FUA on every write).
 */
bool bdrv_parse_cache_mode(const char *mode, int *flags, bool *writethrough, GError **errp);

#endif /* STRATA_BLOCK_INT_H */
