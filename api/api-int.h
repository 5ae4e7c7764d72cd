/*
 * Private to api/: the structures behind the public handles and the helpers
 * the public API's files share.
 *
 * Threading: StrataIOThread and StrataImage are created, bound and freed in
 * the main thread only; requests read them from any thread (the fields
 * that requests read are atomics, or never change after open).
 */
#ifndef STRATA_API_INT_H
#define STRATA_API_INT_H

#include <glib.h>
#include <stdatomic.h>

#include "aio/aio.h"
#include "aio/iothread.h"
#include "block/block-backend.h"
#include "strata/strata.h"

struct StrataError {
    int code; /* negative errno */
    char *message;
};

struct StrataIOThread {
    IOThread *iothread;
    AioContext *ctx;
    /* Images bound to this thread; written in the main thread only. */
    int bound_images;
};

struct StrataImage {
    BlockBackend *blk;
    /* NULL: the image's home is the main thread.  Written in the main thread only. */
    StrataIOThread *_Atomic iothread;
    /*
     * Requests of any form between submission and return (asynchronous
     * ones: until their callback has returned).  Close and rebinding wait
     * for it to drop to 0: whoever decrements it calls aio_wait_kick().
     */
    _Atomic int in_flight;
};

/* --- errors (strata-api.c) --- */

/* Stores in *@errp (when not NULL) an error @code (negative errno) with a printf message. */
void api_error_set(StrataError **errp, int code, const char *fmt, ...) G_GNUC_PRINTF(3, 4);
/*
 * Moves @err (freed) into *@errp, with the errno it stands for; returns
 * that errno (negative).  @err may be NULL: -EIO with a generic message.
 */
int api_error_propagate(StrataError **errp, GError *err);

/*
 * True when strata_init() ran and the caller is the main thread, outside
 * any coroutine; else stores -EPERM naming @func in *@errp and returns false.
 */
bool api_check_main_thread(const char *func, StrataError **errp);
/* True once strata_init() has succeeded.  Any thread. */
bool api_initialised(void);

/* --- main loop (strata-main-loop.c) --- */

/*
 * Brackets every public call that runs in the main thread and may queue
 * work for the main loop (or run it).  Leaving the outermost bracket, once
 * strata_main_loop_fd() is in use, makes that fd readable at once, because
 * work queued by the main thread itself wakes nobody: the embedder then
 * calls strata_main_loop_poll(), which runs it and re-arms the fd.
 */
void api_main_enter(void);
void api_main_leave(void);

/* --- requests (strata-io.c) --- */

/* The context an image's asynchronous requests run in: its IOThread's, or the main one. */
AioContext *api_image_home(StrataImage *img);
/* Drops one request from img->in_flight and kicks whoever waits for it. */
void api_image_dec_in_flight(StrataImage *img);

#endif /* STRATA_API_INT_H */
