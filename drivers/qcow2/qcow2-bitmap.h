/*
 * qcow2 persistent bitmaps, private to qcow2-bitmap.c (directory, bitmap
 * data, tracking) and qcow2-bitmap-ops.c (the library operations).
 * Everything here runs under s->lock unless it says otherwise.
 */
#ifndef STRATA_QCOW2_BITMAP_H
#define STRATA_QCOW2_BITMAP_H

#include "drivers/qcow2/qcow2.h"

#define BME_HEADER_SIZE       24
#define BME_FLAG_IN_USE       (1u << 0)
#define BME_FLAG_AUTO         (1u << 1)
#define BME_FLAG_EXTRA_COMPAT (1u << 2)
#define BME_RESERVED_FLAGS    0xfffffff8u
#define BME_TYPE_DIRTY        1
#define BME_MAX_NAME          1023
#define BME_MIN_GRAN_BITS     9
#define BME_MAX_GRAN_BITS     31
#define BME_MAX_TABLE_BYTES   (64 * 1024 * 1024)
#define BME_MAX_PHYS_BYTES    (512ULL * 1024 * 1024) /* bitmap data, as QEMU limits it */
#define BME_TABLE_RESERVED    0xff000000000001feULL
#define BME_TABLE_OFFSET      0x00fffffffffffe00ULL
#define BME_TABLE_ALL_ONES    1ULL

/* One bitmap directory entry, parsed. */
typedef struct BmEntry {
    uint64_t table_offset;
    uint32_t table_size; /* entries */
    uint32_t flags;
    uint8_t type;
    uint8_t gran_bits;
    char *name;
    uint32_t extra_len;
    uint8_t *extra;
} BmEntry;

/* A bitmap that tracks writes, in memory (bits set atomically by any thread). */
typedef struct TrackedBitmap {
    char *name;
    int gran_bits;
    uint64_t nbits;
    uint8_t *bits;
} TrackedBitmap;

/* The bitmaps tracked while the image is written (s->tracked). */
struct Qcow2TrackedBitmaps {
    int n;
    TrackedBitmap *bm;
};

/* The directory in memory. */
typedef struct BmDir {
    BmEntry *e;
    uint32_t n;
} BmDir;

/* Loads and checks the directory the header names (empty without bitmaps). */
int coroutine_fn qcow2_bm_load_dir(BlockDriverState *bs, BmDir *dir, GError **errp);
void qcow2_bm_dir_free(BmDir *dir);
/* Index of the bitmap called @name, or -1. */
int qcow2_bm_find(const BmDir *dir, const char *name);
/* Removes entry @i (its strings freed). */
void qcow2_bm_dir_remove(BmDir *dir, uint32_t i);

/* Bits and bytes a bitmap of granularity 2^@gran_bits needs for the disk. */
uint64_t qcow2_bm_nbits(BDRVQcow2State *s, int gran_bits);
uint64_t qcow2_bm_nbytes(BDRVQcow2State *s, int gran_bits);
/*
 * Why entry @e cannot be read or changed (in use, unknown type or extra
 * data, sizes that do not fit the disk), or NULL when it can.
 */
const char *qcow2_bm_unusable(BDRVQcow2State *s, const BmEntry *e);
/* Reads the bits of @e (qcow2_bm_nbytes bytes, caller frees).  -errno. */
int coroutine_fn qcow2_bm_read_bits(BlockDriverState *bs, const BmEntry *e, uint8_t **bits);
/*
 * Writes @bits (qcow2_bm_nbytes bytes for @e's granularity) to new
 * clusters and a new bitmap table, and points @e at them; all-zero
 * clusters get no cluster.  The old table is not freed here.  -errno.
 */
int coroutine_fn qcow2_bm_write_bits(BlockDriverState *bs, BmEntry *e, const uint8_t *bits);
/*
 * Makes @dir the image's bitmap directory: written to new clusters, made
 * stable with everything before it, switched to by a header write.  Then
 * the old directory and the tables and data of @old (bitmaps replaced or
 * removed, may be NULL) are freed.  Takes over neither.  -errno.
 */
int coroutine_fn qcow2_bm_commit(BlockDriverState *bs, const BmDir *dir, const BmDir *old);
/* Sets bits for disk bytes [@offset, @offset + @bytes) in a bitmap of 2^@gran_bits. */
void qcow2_bm_set_range(uint8_t *bits, uint64_t nbits, int gran_bits, uint64_t offset,
                        uint64_t bytes);
/*
 * Writes the bitmaps that track writes back to the image (clearing their
 * in-use flags) and stops tracking; the next write starts it again.
 * -errno (the bitmaps then stay in use).
 */
int coroutine_fn qcow2_bm_store_tracked(BlockDriverState *bs);

#endif /* STRATA_QCOW2_BITMAP_H */
