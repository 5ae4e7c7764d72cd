/*
 * "memimg": a protocol driver whose images live in memory, for tests and
 * the fuzzer.  An image is registered under a name (mem_image_new) and
 * opened as "memimg:NAME".  Optionally it records every write and flush
 * that reaches it, in order, so that a test can rebuild the bytes a crash
 * at any point could have left on a disk (tests/unit/test-qcow2-crash.c).
 *
 * Reads past the end return zeroes, writes past the end grow the image up
 * to MEM_IMAGE_MAX bytes (further: -ENOSPC, a full disk; a hostile image
 * must not make the fuzzer allocate gigabytes), discard is a no-op (a
 * hint), flush only records itself.
 *
 * Header-only (every function static): include it in one test file.
 * Single-threaded use only: there is no lock.
 */
#ifndef STRATA_TEST_MEM_IMAGE_H
#define STRATA_TEST_MEM_IMAGE_H

#include <errno.h>
#include <glib.h>
#include <string.h>

#include "block/block-int.h"

#define MEM_IMAGE_MAX (256ULL * 1024 * 1024)

/* One record of what reached the image: a write (data != NULL) or a flush. */
typedef struct MemLogEntry {
    uint64_t offset, bytes;
    uint8_t *data; /* NULL for a flush */
} MemLogEntry;

typedef struct MemImage {
    char *name;
    GByteArray *data;
    bool record;
    GArray *log; /* MemLogEntry */
} MemImage;

static GHashTable *mem_images; /* name -> MemImage */

static G_GNUC_UNUSED void mem_image_free(MemImage *m)
{
    for (guint i = 0; i < m->log->len; i++) {
        g_free(g_array_index(m->log, MemLogEntry, i).data);
    }
    g_array_free(m->log, true);
    g_byte_array_free(m->data, true);
    g_free(m->name);
    g_free(m);
}

/* Registers image @name holding a copy of @len bytes of @buf (replacing one of that name). */
static G_GNUC_UNUSED MemImage *mem_image_new(const char *name, const void *buf, size_t len)
{
    if (!mem_images) {
        mem_images =
            g_hash_table_new_full(g_str_hash, g_str_equal, NULL, (GDestroyNotify)mem_image_free);
    }
    MemImage *m = g_new0(MemImage, 1);
    m->name = g_strdup(name);
    m->data = g_byte_array_sized_new(len);
    g_byte_array_append(m->data, buf, len);
    m->log = g_array_new(false, false, sizeof(MemLogEntry));
    g_hash_table_replace(mem_images, m->name, m);
    return m;
}

static G_GNUC_UNUSED void mem_image_remove(const char *name)
{
    if (mem_images) {
        g_hash_table_remove(mem_images, name);
    }
}

static void mem_log(MemImage *m, uint64_t offset, uint64_t bytes, const uint8_t *data, bool flush)
{
    if (m->record) {
        MemLogEntry e = {offset, bytes, flush ? NULL : g_memdup2(data, bytes)};
        g_array_append_val(m->log, e);
    }
}

static bool mem_open(BlockDriverState *bs, GHashTable *options, int flags, GError **errp)
{
    g_autofree char *fname = opts_take_str(options, "filename");
    const char *name = fname && g_str_has_prefix(fname, "memimg:") ? fname + 7 : fname;
    MemImage *m = name && mem_images ? g_hash_table_lookup(mem_images, name) : NULL;
    if (!m) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOENT, "No memory image '%s'",
                    name ? name : "");
        return false;
    }
    *(MemImage **)bs->opaque = m;
    bs->supported_zero_flags = BDRV_REQ_MAY_UNMAP;
    return true;
}

static int coroutine_fn mem_preadv(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                   IOVector *qiov, BdrvRequestFlags flags)
{
    MemImage *m = *(MemImage **)bs->opaque;
    uint64_t have = (uint64_t)offset < m->data->len ? MIN(m->data->len - offset, bytes) : 0;
    if (have) {
        iov_from_buf(qiov, 0, m->data->data + offset, have);
    }
    iov_memset(qiov, have, 0, bytes - have);
    return 0;
}

/* Stores @bytes of @buf at @offset, growing the image.  -ENOSPC past MEM_IMAGE_MAX. */
static int mem_store(MemImage *m, uint64_t offset, uint64_t bytes, const uint8_t *buf)
{
    if (offset > MEM_IMAGE_MAX || bytes > MEM_IMAGE_MAX - offset) {
        return -ENOSPC;
    }
    if (offset + bytes > m->data->len) {
        uint64_t old = m->data->len;
        g_byte_array_set_size(m->data, offset + bytes);
        memset(m->data->data + old, 0, offset + bytes - old);
    }
    memcpy(m->data->data + offset, buf, bytes);
    mem_log(m, offset, bytes, buf, false);
    return 0;
}

static int coroutine_fn mem_pwritev(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                    IOVector *qiov, BdrvRequestFlags flags)
{
    MemImage *m = *(MemImage **)bs->opaque;
    uint8_t *buf = g_malloc(bytes);
    iov_to_buf(qiov, 0, buf, bytes);
    int ret = mem_store(m, offset, bytes, buf);
    g_free(buf);
    return ret;
}

static int coroutine_fn mem_pwrite_zeroes(BlockDriverState *bs, int64_t offset, int64_t bytes,
                                          BdrvRequestFlags flags)
{
    MemImage *m = *(MemImage **)bs->opaque;
    if ((uint64_t)offset > MEM_IMAGE_MAX || (uint64_t)bytes > MEM_IMAGE_MAX - (uint64_t)offset) {
        return -ENOSPC;
    }
    uint8_t *buf = g_malloc0(bytes);
    int ret = mem_store(m, offset, bytes, buf);
    g_free(buf);
    return ret;
}

static int coroutine_fn mem_pdiscard(BlockDriverState *bs, int64_t offset, int64_t bytes)
{
    return 0;
}

static int coroutine_fn mem_flush(BlockDriverState *bs)
{
    MemImage *m = *(MemImage **)bs->opaque;
    mem_log(m, 0, 0, NULL, true);
    return 0;
}

static int64_t coroutine_fn mem_getlength(BlockDriverState *bs)
{
    MemImage *m = *(MemImage **)bs->opaque;
    return m->data->len;
}

static int coroutine_fn mem_truncate(BlockDriverState *bs, int64_t offset, bool exact,
                                     PreallocMode prealloc, BdrvRequestFlags flags, GError **errp)
{
    MemImage *m = *(MemImage **)bs->opaque;
    if ((uint64_t)offset > MEM_IMAGE_MAX) {
        g_set_error(errp, G_FILE_ERROR, G_FILE_ERROR_NOSPC, "Memory image too large");
        return -ENOSPC;
    }
    if ((uint64_t)offset > m->data->len) {
        uint8_t *zero = g_malloc0(offset - m->data->len);
        mem_store(m, m->data->len, offset - m->data->len, zero);
        g_free(zero);
    } else if (exact) {
        g_byte_array_set_size(m->data, offset);
    }
    return 0;
}

static G_GNUC_UNUSED BlockDriver mem_image_driver = {
    .format_name = "memimg",
    .protocol_name = "memimg",
    .instance_size = sizeof(MemImage *),
    .is_protocol = true,
    .open = mem_open,
    .co_preadv = mem_preadv,
    .co_pwritev = mem_pwritev,
    .co_pwrite_zeroes = mem_pwrite_zeroes,
    .co_pdiscard = mem_pdiscard,
    .co_flush_to_disk = mem_flush,
    .co_getlength = mem_getlength,
    .co_truncate = mem_truncate,
};

#endif /* STRATA_TEST_MEM_IMAGE_H */
