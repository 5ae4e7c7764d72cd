/*
 * IOVector and struct iovec helpers.  No shared state: every function acts
 * on vectors owned by its caller.
 */
#include "block/iov.h"

#include <glib.h>
#include <stdint.h>
#include <string.h>

void iov_init(IOVector *v, int alloc_hint)
{
    if (alloc_hint < 1) {
        alloc_hint = 1;
    }
    v->iov = g_new(struct iovec, alloc_hint);
    v->niov = 0;
    v->nalloc = alloc_hint;
    v->size = 0;
}

void iov_init_buf(IOVector *v, void *buf, size_t len)
{
    v->local.iov_base = buf;
    v->local.iov_len = len;
    v->iov = &v->local;
    v->niov = 1;
    v->nalloc = -1;
    v->size = len;
}

void iov_init_external(IOVector *v, struct iovec *iov, int niov)
{
    v->iov = iov;
    v->niov = niov;
    v->nalloc = -1;
    v->size = iovec_size(iov, niov);
}

/* Index of the element holding byte @offset; *skip is the offset inside it. */
static int iov_find(const IOVector *v, size_t offset, size_t *skip)
{
    int i = 0;
    while (i < v->niov && offset >= v->iov[i].iov_len) {
        offset -= v->iov[i].iov_len;
        i++;
    }
    *skip = offset;
    return i;
}

void iov_init_slice(IOVector *v, const IOVector *src, size_t offset, size_t len)
{
    g_assert(offset + len <= src->size);
    if (len == 0) {
        iov_init_buf(v, NULL, 0);
        v->niov = 0;
        return;
    }
    size_t head;
    int first = iov_find(src, offset, &head);
    size_t tail_skip;
    int last = iov_find(src, offset + len - 1, &tail_skip);

    if (first == last) {
        iov_init_buf(v, (char *)src->iov[first].iov_base + head, len);
        return;
    }
    if (head == 0 && tail_skip + 1 == src->iov[last].iov_len) {
        iov_init_external(v, &src->iov[first], last - first + 1);
        return;
    }
    iov_init(v, last - first + 1);
    iov_concat(v, src, offset, len);
}

void iov_add(IOVector *v, void *base, size_t len)
{
    g_assert(v->nalloc >= 0);
    if (len == 0) {
        return;
    }
    if (v->niov == v->nalloc) {
        v->nalloc = 2 * v->nalloc + 1;
        v->iov = g_renew(struct iovec, v->iov, v->nalloc);
    }
    v->iov[v->niov].iov_base = base;
    v->iov[v->niov].iov_len = len;
    v->niov++;
    v->size += len;
}

void iov_concat(IOVector *v, const IOVector *src, size_t offset, size_t len)
{
    size_t skip;
    int i = iov_find(src, offset, &skip);
    for (; i < src->niov && len > 0; i++) {
        size_t n = MIN(src->iov[i].iov_len - skip, len);
        iov_add(v, (char *)src->iov[i].iov_base + skip, n);
        len -= n;
        skip = 0;
    }
    g_assert(len == 0);
}

void iov_reset(IOVector *v)
{
    g_assert(v->nalloc >= 0);
    v->niov = 0;
    v->size = 0;
}

void iov_destroy(IOVector *v)
{
    if (v->nalloc >= 0) {
        g_free(v->iov);
    }
    memset(v, 0, sizeof(*v));
}

size_t iov_to_buf(const IOVector *v, size_t offset, void *buf, size_t len)
{
    return iovec_to_buf(v->iov, v->niov, offset, buf, len);
}

size_t iov_from_buf(const IOVector *v, size_t offset, const void *buf, size_t len)
{
    return iovec_from_buf(v->iov, v->niov, offset, buf, len);
}

size_t iov_memset(const IOVector *v, size_t offset, int c, size_t len)
{
    return iovec_memset(v->iov, v->niov, offset, c, len);
}

static bool buf_is_zero(const char *p, size_t len)
{
    /* Compare against the first byte shifted by one: one memcmp, no table. */
    return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

bool iov_is_zero(const IOVector *v, size_t offset, size_t len)
{
    size_t skip;
    int i = iov_find(v, offset, &skip);
    for (; i < v->niov && len > 0; i++) {
        size_t n = MIN(v->iov[i].iov_len - skip, len);
        if (!buf_is_zero((const char *)v->iov[i].iov_base + skip, n)) {
            return false;
        }
        len -= n;
        skip = 0;
    }
    return true;
}

bool iov_is_aligned(const IOVector *v, size_t align)
{
    for (int i = 0; i < v->niov; i++) {
        if ((uintptr_t)v->iov[i].iov_base % align || v->iov[i].iov_len % align) {
            return false;
        }
    }
    return true;
}

/*
 * Walks the bytes [offset, offset + len) of an iovec array, calling @fn on
 * each contiguous piece with the piece's position in the flat range.
 */
typedef void IovecPieceFn(void *base, size_t n, size_t done, void *opaque);

static size_t iovec_walk(const struct iovec *iov, int niov, size_t offset, size_t len,
                         IovecPieceFn *fn, void *opaque)
{
    size_t done = 0;
    for (int i = 0; i < niov && done < len; i++) {
        if (offset >= iov[i].iov_len) {
            offset -= iov[i].iov_len;
            continue;
        }
        size_t n = MIN(iov[i].iov_len - offset, len - done);
        fn((char *)iov[i].iov_base + offset, n, done, opaque);
        done += n;
        offset = 0;
    }
    return done;
}

static void piece_to_buf(void *base, size_t n, size_t done, void *opaque)
{
    memcpy((char *)opaque + done, base, n);
}

static void piece_from_buf(void *base, size_t n, size_t done, void *opaque)
{
    memcpy(base, (const char *)opaque + done, n);
}

static void piece_memset(void *base, size_t n, size_t done, void *opaque)
{
    memset(base, *(int *)opaque, n);
}

size_t iovec_to_buf(const struct iovec *iov, int niov, size_t offset, void *buf, size_t len)
{
    return iovec_walk(iov, niov, offset, len, piece_to_buf, buf);
}

size_t iovec_from_buf(const struct iovec *iov, int niov, size_t offset, const void *buf, size_t len)
{
    return iovec_walk(iov, niov, offset, len, piece_from_buf, (void *)buf);
}

size_t iovec_memset(const struct iovec *iov, int niov, size_t offset, int c, size_t len)
{
    return iovec_walk(iov, niov, offset, len, piece_memset, &c);
}

size_t iovec_size(const struct iovec *iov, int niov)
{
    size_t size = 0;
    for (int i = 0; i < niov; i++) {
        size += iov[i].iov_len;
    }
    return size;
}
