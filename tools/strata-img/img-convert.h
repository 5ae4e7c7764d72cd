/*
 * strata-img convert, private header: what the command line part
 * (img-convert.c: options, opening the sources, creating and opening the
 * target) hands to the copy engine (img-convert-copy.c).
 */
#ifndef STRATA_IMG_CONVERT_H
#define STRATA_IMG_CONVERT_H

#include <stdbool.h>
#include <stdint.h>

#include "block/block-backend.h"
#include "tools/strata-img/img-progress.h"

#define IMG_CONVERT_MAX_WORKERS 16
/* Largest -S: 16 MiB, as qemu-img. */
#define IMG_CONVERT_MAX_SPARSE (16 * 1024 * 1024)
/* Bytes each worker copies per step (its buffer). */
#define IMG_CONVERT_CHUNK (2 * 1024 * 1024)

/* One input image; the target is the inputs laid end to end. */
typedef struct ImgConvertSource {
    BlockBackend *blk;
    const char *name;
    int64_t start; /* offset of its first byte in the target */
    int64_t size;
} ImgConvertSource;

typedef struct ImgConvert {
    ImgConvertSource *src;
    int nsrc;
    int64_t total_size; /* sum of the source sizes */
    BlockBackend *target;

    /* The target has a backing file (-B): what the source's backing holds is not copied. */
    bool target_has_backing;
    /* Ranges left unwritten read as zeroes (fresh image, or --target-is-zero). */
    bool target_zeroed;
    bool compressed;       /* -c: data clusters through the driver's compressed write */
    bool copy_range;       /* -C: copy_file_range where both ends are local files */
    bool out_of_order;     /* -W */
    bool salvage;          /* --salvage: unreadable sectors become zeroes, with a warning */
    bool quiet;            /* -q */
    int64_t min_sparse;    /* -S: zero detection granularity in bytes, 0 = none */
    int64_t target_align;  /* chunk edges and zero runs are kept on this (cluster) size */
    int64_t cluster_size;  /* target cluster size (-c writes whole clusters) */
    int num_workers;       /* -m */
    uint64_t rate_limit;   /* -r, bytes per second, 0 = unlimited */
    ImgProgress *progress; /* started before the sources were opened, as qemu-img does */
} ImgConvert;

/*
 * Copies the sources into the target with s->num_workers coroutines in
 * the main loop, reporting to s->progress (which it does not finish).
 * Prints qemu-img's message for the first error.  Returns 0 or -errno.
 */
int img_convert_copy(ImgConvert *s);

/* ---- between the engine files: copy offload (img-convert-host.c) ---------------------------- */

typedef struct ImgConvertHost ImgConvertHost;

/* Our own descriptors on the files behind the images, opened on first use. */
ImgConvertHost *img_convert_host_new(void);
void img_convert_host_free(ImgConvertHost *h);

/*
 * Where the first *pnum bytes of [@soff, @soff + @bytes) of @src live in a
 * host file: *fd (ours) and *pos.  -ENOTSUP unless block status says they
 * are data at a known place in a node of the file protocol.
 */
int coroutine_fn img_convert_co_map_source(ImgConvertHost *h, ImgConvert *s, ImgConvertSource *src,
                                           int64_t soff, int64_t bytes, int64_t *pnum, int *fd,
                                           int64_t *pos);
/* The same for target offsets (any status, as long as the place is known). */
int coroutine_fn img_convert_co_map_target(ImgConvertHost *h, ImgConvert *s, int64_t offset,
                                           int64_t bytes, int64_t *pnum, int *fd, int64_t *pos);

typedef struct ImgConvertCopyRange {
    int src_fd, dst_fd;
    int64_t src_pos, dst_pos, bytes;
} ImgConvertCopyRange;

/* A ThreadPoolFunc: copy_file_range of a whole ImgConvertCopyRange; 0 or -errno. */
int img_convert_copy_file_range(void *opaque);

#endif /* STRATA_IMG_CONVERT_H */
