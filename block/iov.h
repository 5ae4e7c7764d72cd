/*
 * IOVector: a scatter/gather list of buffers that a request reads into or
 * writes from, plus helpers on plain struct iovec arrays.
 *
 * An IOVector is owned by one request at a time and never shared between
 * threads while in use; it has no lock.  It either owns its iovec array
 * (iov_init, iov_add, iov_concat) or borrows one (iov_init_external,
 * iov_init_buf, iov_init_slice); iov_destroy frees only what it owns and
 * never the data buffers.
 */
#ifndef STRATA_BLOCK_IOV_H
#define STRATA_BLOCK_IOV_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/uio.h>

typedef struct IOVector {
    struct iovec *iov;
    int niov;
    int nalloc;         /* -1: iov is borrowed (or is local[]); never grown or freed */
    size_t size;        /* sum of iov[i].iov_len */
    struct iovec local; /* storage for single-buffer vectors (iov_init_buf) */
} IOVector;

/* An empty, growable vector with room for @alloc_hint elements. */
void iov_init(IOVector *v, int alloc_hint);
/* Wraps one buffer without allocating. */
void iov_init_buf(IOVector *v, void *buf, size_t len);
/* Borrows @niov elements of @iov (not copied; must outlive @v). */
void iov_init_external(IOVector *v, struct iovec *iov, int niov);
/*
 * Makes @v describe bytes [@offset, @offset + @len) of @src.  Borrows
 * src's array when the slice starts and ends on element boundaries (or
 * lies in one element, which is stored in v->local), else allocates.
 * Requires offset + len <= src->size.
 */
void iov_init_slice(IOVector *v, const IOVector *src, size_t offset, size_t len);
/* Appends one buffer; @v must be growable (iov_init). Zero-length is ignored. */
void iov_add(IOVector *v, void *base, size_t len);
/* Appends bytes [@offset, @offset + @len) of @src to @v (growable). */
void iov_concat(IOVector *v, const IOVector *src, size_t offset, size_t len);
/* Empties a growable vector, keeping its array. */
void iov_reset(IOVector *v);
/* Frees the array if owned; @v must be initialised again before reuse. */
void iov_destroy(IOVector *v);

/*
 * Copies between the vector's bytes starting at @offset and a flat buffer.
 * Both return the number of bytes copied, which is less than @len only
 * when the vector ends first.
 */
size_t iov_to_buf(const IOVector *v, size_t offset, void *buf, size_t len);
size_t iov_from_buf(const IOVector *v, size_t offset, const void *buf, size_t len);
/* Fills @len bytes from @offset with @c; returns bytes filled. */
size_t iov_memset(const IOVector *v, size_t offset, int c, size_t len);
/* True when bytes [@offset, @offset + @len) are all zero. */
bool iov_is_zero(const IOVector *v, size_t offset, size_t len);
/* True when every base address and length is a multiple of @align. */
bool iov_is_aligned(const IOVector *v, size_t align);

/* The same on raw arrays, for drivers that build their own. */
size_t iovec_to_buf(const struct iovec *iov, int niov, size_t offset, void *buf, size_t len);
size_t iovec_from_buf(const struct iovec *iov, int niov, size_t offset, const void *buf,
                      size_t len);
size_t iovec_memset(const struct iovec *iov, int niov, size_t offset, int c, size_t len);
size_t iovec_size(const struct iovec *iov, int niov);

#endif /* STRATA_BLOCK_IOV_H */
