/*
 * Public API, I/O path: the synchronous, asynchronous and coroutine forms
 * of every request, all funnelled into one coroutine body (api_co_do) that
 * calls the BlockBackend.
 *
 * Where a request runs (the engine runs a request in the caller's
 * AioContext; these rules pick that context):
 *   - coroutine forms, and synchronous forms called in a coroutine: in the
 *     calling coroutine;
 *   - synchronous forms in a thread that runs an AioContext (main thread,
 *     IOThread callbacks): a new coroutine there, polling that context;
 *   - synchronous forms in other threads: the image's IOThread when bound
 *     (hand-off through a one-shot BH, the caller sleeps on a condition
 *     variable), else a private AioContext of the calling thread, created
 *     on its first request and released by a thread-specific destructor;
 *   - asynchronous forms: the image's home context (its IOThread's, or the
 *     main one).  The callback is called from a one-shot BH in that
 *     context, so it never runs inside a coroutine nor before the
 *     submitting call returns.
 * Every request counts in img->in_flight from submission until it has
 * returned (or its callback has), which is what close and rebinding wait for.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>

#include "api/api-int.h"
#include "block/block-int.h"

typedef enum ApiOp {
    API_READ,
    API_WRITE,
    API_WRITE_ZEROES,
    API_DISCARD,
    API_FLUSH,
    API_LENGTH,
} ApiOp;

typedef struct ApiReq {
    StrataImage *img;
    ApiOp op;
    int64_t offset, bytes;
    IOVector qiov;
    BdrvRequestFlags flags;
    int64_t ret;

    /* Synchronous hand-off to an IOThread: done is set under lock, then cond signalled. */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;

    /* Asynchronous requests (heap-allocated). */
    AioContext *home;
    StrataCompletionFunc *cb;
    void *opaque;
    struct iovec *iov_copy;
} ApiReq;

AioContext *api_image_home(StrataImage *img)
{
    StrataIOThread *t = atomic_load(&img->iothread);
    return t ? t->ctx : aio_main_context();
}

void api_image_dec_in_flight(StrataImage *img)
{
    atomic_fetch_sub(&img->in_flight, 1);
    aio_wait_kick();
}

/* ---- building requests ------------------------------------------------------------------ */

static BdrvRequestFlags api_req_flags(unsigned flags)
{
    return ((flags & STRATA_REQ_FUA) ? BDRV_REQ_FUA : 0) |
           ((flags & STRATA_REQ_MAY_UNMAP) ? BDRV_REQ_MAY_UNMAP : 0) |
           ((flags & STRATA_REQ_NO_FALLBACK) ? BDRV_REQ_NO_FALLBACK : 0);
}

/*
 * Fills the common fields; -EINVAL for a flag outside @allowed or a value
 * the engine's int64_t cannot hold (the engine checks the rest).
 */
static int api_req_init(ApiReq *r, StrataImage *img, ApiOp op, uint64_t offset, uint64_t bytes,
                        unsigned flags, unsigned allowed)
{
    if (!img || (flags & ~allowed) || offset > INT64_MAX || bytes > INT64_MAX) {
        return -EINVAL;
    }
    r->img = img;
    r->op = op;
    r->offset = (int64_t)offset;
    r->bytes = (int64_t)bytes;
    r->flags = api_req_flags(flags);
    return 0;
}

/* The data of a read or write from an iovec array; @copy for requests that outlive the call. */
static int api_req_set_iov(ApiReq *r, const struct iovec *iov, int iovcnt, bool copy)
{
    size_t size = 0;

    if (iovcnt < 0 || iovcnt > IOV_MAX || (iovcnt > 0 && !iov)) {
        return -EINVAL;
    }
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_len > BDRV_REQUEST_MAX_BYTES - size) {
            return -EINVAL;
        }
        size += iov[i].iov_len;
    }
    struct iovec *array = (struct iovec *)iov;
    if (copy && iovcnt > 0) {
        r->iov_copy = g_memdup2(iov, sizeof(*iov) * (size_t)iovcnt);
        array = r->iov_copy;
    }
    iov_init_external(&r->qiov, array, iovcnt);
    r->bytes = (int64_t)size;
    return 0;
}

static int api_req_set_buf(ApiReq *r, const void *buf, size_t bytes)
{
    if (bytes > BDRV_REQUEST_MAX_BYTES || (bytes > 0 && !buf)) {
        return -EINVAL;
    }
    iov_init_buf(&r->qiov, (void *)buf, bytes);
    r->bytes = (int64_t)bytes;
    return 0;
}

/* ---- the one request body ---------------------------------------------------------------- */

static int64_t coroutine_fn api_co_do(ApiReq *r)
{
    BlockBackend *blk = r->img->blk;

    switch (r->op) {
    case API_READ:
        return blk_co_preadv(blk, r->offset, r->bytes, &r->qiov, r->flags);
    case API_WRITE:
        return blk_co_pwritev(blk, r->offset, r->bytes, &r->qiov, r->flags);
    case API_WRITE_ZEROES:
        return blk_co_pwrite_zeroes(blk, r->offset, r->bytes, r->flags);
    case API_DISCARD:
        return blk_co_pdiscard(blk, r->offset, r->bytes);
    case API_FLUSH:
        return blk_co_flush(blk);
    case API_LENGTH:
        return blk_co_getlength(blk);
    }
    g_assert_not_reached();
}

/* ---- synchronous forms -------------------------------------------------------------------- */

static void coroutine_fn api_sync_entry(void *opaque)
{
    ApiReq *r = opaque;
    r->ret = api_co_do(r);
}

/* Runs in the IOThread; the waiter's stack frame holds @r until done is seen. */
static void coroutine_fn api_handoff_entry(void *opaque)
{
    ApiReq *r = opaque;
    int64_t ret = api_co_do(r);
    pthread_mutex_lock(&r->lock);
    r->ret = ret;
    r->done = true;
    pthread_cond_signal(&r->cond);
    pthread_mutex_unlock(&r->lock);
}

static void api_handoff_bh(void *opaque)
{
    co_enter(co_create(api_handoff_entry, opaque));
}

static int64_t api_run_in_iothread(ApiReq *r, AioContext *ctx)
{
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->cond, NULL);
    aio_bh_schedule_oneshot(ctx, api_handoff_bh, r);
    pthread_mutex_lock(&r->lock);
    while (!r->done) {
        pthread_cond_wait(&r->cond, &r->lock);
    }
    pthread_mutex_unlock(&r->lock);
    pthread_cond_destroy(&r->cond);
    pthread_mutex_destroy(&r->lock);
    return r->ret;
}

/* The calling thread's private context (threads that run none of their own). */
static pthread_once_t thread_ctx_once = PTHREAD_ONCE_INIT;
static pthread_key_t thread_ctx_key;
static __thread AioContext *thread_ctx;

static void api_thread_ctx_release(void *opaque)
{
    aio_context_unref(opaque);
}

static void api_thread_ctx_key_init(void)
{
    g_assert(pthread_key_create(&thread_ctx_key, api_thread_ctx_release) == 0);
}

static AioContext *api_thread_ctx(void)
{
    if (!thread_ctx) {
        pthread_once(&thread_ctx_once, api_thread_ctx_key_init);
        GError *err = NULL;
        thread_ctx = aio_context_new(&err);
        if (!thread_ctx) {
            g_error_free(err);
            return NULL;
        }
        pthread_setspecific(thread_ctx_key, thread_ctx);
    }
    return thread_ctx;
}

static int64_t api_run_sync(ApiReq *r)
{
    StrataImage *img = r->img;

    atomic_fetch_add(&img->in_flight, 1);
    if (co_in_coroutine()) {
        r->ret = api_co_do(r);
    } else if (aio_get_current()) {
        bool main = aio_in_main_thread();
        if (main) {
            api_main_enter();
        }
        bdrv_run_co(api_sync_entry, r);
        if (main) {
            api_main_leave();
        }
    } else {
        StrataIOThread *t = atomic_load(&img->iothread);
        AioContext *ctx;
        if (t) {
            api_run_in_iothread(r, t->ctx);
        } else if ((ctx = api_thread_ctx()) != NULL) {
            aio_set_current(ctx);
            bdrv_run_co(api_sync_entry, r);
            aio_set_current(NULL);
        } else {
            r->ret = -ENOMEM;
        }
    }
    api_image_dec_in_flight(img);
    return r->ret;
}

#define REQ_READ_FLAGS  0u
#define REQ_WRITE_FLAGS STRATA_REQ_FUA
#define REQ_ZERO_FLAGS  (STRATA_REQ_FUA | STRATA_REQ_MAY_UNMAP | STRATA_REQ_NO_FALLBACK)

int strata_pread(StrataImage *img, uint64_t offset, void *buf, size_t bytes, unsigned flags)
{
    ApiReq r = {0};
    int ret = api_req_init(&r, img, API_READ, offset, 0, flags, REQ_READ_FLAGS);
    if (ret == 0) {
        ret = api_req_set_buf(&r, buf, bytes);
    }
    return ret < 0 ? ret : (int)api_run_sync(&r);
}

int strata_pwrite(StrataImage *img, uint64_t offset, const void *buf, size_t bytes, unsigned flags)
{
    ApiReq r = {0};
    int ret = api_req_init(&r, img, API_WRITE, offset, 0, flags, REQ_WRITE_FLAGS);
    if (ret == 0) {
        ret = api_req_set_buf(&r, buf, bytes);
    }
    return ret < 0 ? ret : (int)api_run_sync(&r);
}

int strata_preadv(StrataImage *img, uint64_t offset, const struct iovec *iov, int iovcnt,
                  unsigned flags)
{
    ApiReq r = {0};
    int ret = api_req_init(&r, img, API_READ, offset, 0, flags, REQ_READ_FLAGS);
    if (ret == 0) {
        ret = api_req_set_iov(&r, iov, iovcnt, false);
    }
    return ret < 0 ? ret : (int)api_run_sync(&r);
}

int strata_pwritev(StrataImage *img, uint64_t offset, const struct iovec *iov, int iovcnt,
                   unsigned flags)
{
    ApiReq r = {0};
    int ret = api_req_init(&r, img, API_WRITE, offset, 0, flags, REQ_WRITE_FLAGS);
    if (ret == 0) {
        ret = api_req_set_iov(&r, iov, iovcnt, false);
    }
    return ret < 0 ? ret : (int)api_run_sync(&r);
}

int strata_write_zeroes(StrataImage *img, uint64_t offset, uint64_t bytes, unsigned flags)
{
    ApiReq r = {0};
    int ret = api_req_init(&r, img, API_WRITE_ZEROES, offset, bytes, flags, REQ_ZERO_FLAGS);
    return ret < 0 ? ret : (int)api_run_sync(&r);
}

int strata_discard(StrataImage *img, uint64_t offset, uint64_t bytes)
{
    ApiReq r = {0};
    int ret = api_req_init(&r, img, API_DISCARD, offset, bytes, 0, 0);
    return ret < 0 ? ret : (int)api_run_sync(&r);
}

int strata_flush(StrataImage *img)
{
    ApiReq r = {0};
    int ret = api_req_init(&r, img, API_FLUSH, 0, 0, 0, 0);
    return ret < 0 ? ret : (int)api_run_sync(&r);
}

int64_t strata_length(StrataImage *img)
{
    ApiReq r = {0};
    int ret = api_req_init(&r, img, API_LENGTH, 0, 0, 0, 0);
    return ret < 0 ? ret : api_run_sync(&r);
}

/* ---- asynchronous forms ------------------------------------------------------------------- */

static void api_aio_free(ApiReq *r)
{
    g_free(r->iov_copy);
    g_free(r);
}

static void api_aio_done_bh(void *opaque)
{
    ApiReq *r = opaque;
    StrataImage *img = r->img;

    r->cb(r->opaque, (int)r->ret);
    api_aio_free(r);
    api_image_dec_in_flight(img);
}

static void coroutine_fn api_aio_entry(void *opaque)
{
    ApiReq *r = opaque;
    r->ret = api_co_do(r);
    /* Requests complete in the context that entered them: @home. */
    aio_bh_schedule_oneshot(r->home, api_aio_done_bh, r);
}

static void api_aio_start_bh(void *opaque)
{
    co_enter(co_create(api_aio_entry, opaque));
}

/*
 * Starts @r (heap, validated) in the image's home context: at once when
 * that is the caller's context (the callback still waits for a BH), else
 * through a one-shot BH there.
 */
static int api_aio_submit(ApiReq *r, int ret, StrataCompletionFunc *cb, void *opaque)
{
    if (ret < 0 || !cb) {
        api_aio_free(r);
        return ret < 0 ? ret : -EINVAL;
    }
    r->cb = cb;
    r->opaque = opaque;
    r->home = api_image_home(r->img);
    atomic_fetch_add(&r->img->in_flight, 1);
    if (aio_get_current() == r->home) {
        bool main = aio_in_main_thread();
        if (main) {
            api_main_enter();
        }
        co_enter(co_create(api_aio_entry, r));
        if (main) {
            api_main_leave();
        }
    } else {
        aio_bh_schedule_oneshot(r->home, api_aio_start_bh, r);
    }
    return 0;
}

int strata_aio_preadv(StrataImage *img, uint64_t offset, const struct iovec *iov, int iovcnt,
                      unsigned flags, StrataCompletionFunc *cb, void *opaque)
{
    ApiReq *r = g_new0(ApiReq, 1);
    int ret = api_req_init(r, img, API_READ, offset, 0, flags, REQ_READ_FLAGS);
    if (ret == 0) {
        ret = api_req_set_iov(r, iov, iovcnt, true);
    }
    return api_aio_submit(r, ret, cb, opaque);
}

int strata_aio_pwritev(StrataImage *img, uint64_t offset, const struct iovec *iov, int iovcnt,
                       unsigned flags, StrataCompletionFunc *cb, void *opaque)
{
    ApiReq *r = g_new0(ApiReq, 1);
    int ret = api_req_init(r, img, API_WRITE, offset, 0, flags, REQ_WRITE_FLAGS);
    if (ret == 0) {
        ret = api_req_set_iov(r, iov, iovcnt, true);
    }
    return api_aio_submit(r, ret, cb, opaque);
}

int strata_aio_write_zeroes(StrataImage *img, uint64_t offset, uint64_t bytes, unsigned flags,
                            StrataCompletionFunc *cb, void *opaque)
{
    ApiReq *r = g_new0(ApiReq, 1);
    int ret = api_req_init(r, img, API_WRITE_ZEROES, offset, bytes, flags, REQ_ZERO_FLAGS);
    return api_aio_submit(r, ret, cb, opaque);
}

int strata_aio_discard(StrataImage *img, uint64_t offset, uint64_t bytes, StrataCompletionFunc *cb,
                       void *opaque)
{
    ApiReq *r = g_new0(ApiReq, 1);
    int ret = api_req_init(r, img, API_DISCARD, offset, bytes, 0, 0);
    return api_aio_submit(r, ret, cb, opaque);
}

int strata_aio_flush(StrataImage *img, StrataCompletionFunc *cb, void *opaque)
{
    ApiReq *r = g_new0(ApiReq, 1);
    int ret = api_req_init(r, img, API_FLUSH, 0, 0, 0, 0);
    return api_aio_submit(r, ret, cb, opaque);
}

/* ---- coroutines -------------------------------------------------------------------------- */

typedef struct ApiSpawn {
    StrataCoroutineFunc *fn;
    void *opaque;
} ApiSpawn;

static void coroutine_fn api_spawn_entry(void *opaque)
{
    ApiSpawn s = *(ApiSpawn *)opaque;
    g_free(opaque);
    s.fn(s.opaque);
}

static void api_spawn_bh(void *opaque)
{
    co_enter(co_create(api_spawn_entry, opaque));
}

int strata_coroutine_spawn(StrataIOThread *t, StrataCoroutineFunc *fn, void *opaque)
{
    if (!api_initialised()) {
        return -EPERM;
    }
    if (!fn) {
        return -EINVAL;
    }
    ApiSpawn *s = g_new(ApiSpawn, 1);
    *s = (ApiSpawn){fn, opaque};
    aio_bh_schedule_oneshot(t ? t->ctx : aio_main_context(), api_spawn_bh, s);
    return 0;
}

bool strata_in_coroutine(void)
{
    return co_in_coroutine();
}

static int coroutine_fn api_co_run(ApiReq *r)
{
    if (!co_in_coroutine()) {
        return -EPERM;
    }
    atomic_fetch_add(&r->img->in_flight, 1);
    int ret = (int)api_co_do(r);
    api_image_dec_in_flight(r->img);
    return ret;
}

int coroutine_fn strata_co_preadv(StrataImage *img, uint64_t offset, const struct iovec *iov,
                                  int iovcnt, unsigned flags)
{
    ApiReq r = {0};
    int ret = api_req_init(&r, img, API_READ, offset, 0, flags, REQ_READ_FLAGS);
    if (ret == 0) {
        ret = api_req_set_iov(&r, iov, iovcnt, false);
    }
    return ret < 0 ? ret : api_co_run(&r);
}

int coroutine_fn strata_co_pwritev(StrataImage *img, uint64_t offset, const struct iovec *iov,
                                   int iovcnt, unsigned flags)
{
    ApiReq r = {0};
    int ret = api_req_init(&r, img, API_WRITE, offset, 0, flags, REQ_WRITE_FLAGS);
    if (ret == 0) {
        ret = api_req_set_iov(&r, iov, iovcnt, false);
    }
    return ret < 0 ? ret : api_co_run(&r);
}

int coroutine_fn strata_co_write_zeroes(StrataImage *img, uint64_t offset, uint64_t bytes,
                                        unsigned flags)
{
    ApiReq r = {0};
    int ret = api_req_init(&r, img, API_WRITE_ZEROES, offset, bytes, flags, REQ_ZERO_FLAGS);
    return ret < 0 ? ret : api_co_run(&r);
}

int coroutine_fn strata_co_discard(StrataImage *img, uint64_t offset, uint64_t bytes)
{
    ApiReq r = {0};
    int ret = api_req_init(&r, img, API_DISCARD, offset, bytes, 0, 0);
    return ret < 0 ? ret : api_co_run(&r);
}

int coroutine_fn strata_co_flush(StrataImage *img)
{
    ApiReq r = {0};
    int ret = api_req_init(&r, img, API_FLUSH, 0, 0, 0, 0);
    return ret < 0 ? ret : api_co_run(&r);
}
