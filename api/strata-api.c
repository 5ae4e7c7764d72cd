/*
 * Public API, control path: version, error objects, library init, IOThreads,
 * opening, closing and binding images.
 *
 * Threading: everything here except strata_version() and the error
 * accessors runs in the main thread (the thread that called strata_init()),
 * outside coroutines; each entry point checks it and fails with -EPERM
 * otherwise.  The IOThread registry is therefore a plain hash table.
 *
 * Errors cross the boundary as StrataError (negative errno + message),
 * converted from the engine's GError: G_FILE_ERROR codes map back to the
 * errno they came from, option errors to -EINVAL.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api-int.h"
#include "block/block-int.h"
#include "block/options.h"

#define STR_(x) #x
#define STR(x)  STR_(x)

const char *strata_version(void)
{
    return STR(STRATA_VERSION_MAJOR) "." STR(STRATA_VERSION_MINOR) "." STR(STRATA_VERSION_MICRO);
}

/* ---- errors ------------------------------------------------------------------------------ */

int strata_error_code(const StrataError *err)
{
    return err ? err->code : 0;
}

const char *strata_error_message(const StrataError *err)
{
    return err ? err->message : "";
}

void strata_error_free(StrataError *err)
{
    if (err) {
        free(err->message);
        free(err);
    }
}

/* Takes @message (malloc'ed).  The first error stored in *@errp wins, as with GError. */
static void api_error_store(StrataError **errp, int code, char *message)
{
    if (!errp || *errp) {
        free(message);
        return;
    }
    StrataError *err = malloc(sizeof(*err));
    g_assert(err);
    err->code = code;
    err->message = message;
    *errp = err;
}

void api_error_set(StrataError **errp, int code, const char *fmt, ...)
{
    va_list ap;
    char *msg = NULL;

    g_assert(code < 0);
    if (!errp) {
        return;
    }
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0) {
        msg = strdup(strerror(-code));
    }
    va_end(ap);
    api_error_store(errp, code, msg);
}

/* The errno that a G_FILE_ERROR code was made from (g_file_error_from_errno, reversed). */
static int api_file_error_errno(int code)
{
    static const int map[][2] = {
        {G_FILE_ERROR_EXIST, EEXIST}, {G_FILE_ERROR_ISDIR, EISDIR},
        {G_FILE_ERROR_ACCES, EACCES}, {G_FILE_ERROR_NAMETOOLONG, ENAMETOOLONG},
        {G_FILE_ERROR_NOENT, ENOENT}, {G_FILE_ERROR_NOTDIR, ENOTDIR},
        {G_FILE_ERROR_NXIO, ENXIO},   {G_FILE_ERROR_NODEV, ENODEV},
        {G_FILE_ERROR_ROFS, EROFS},   {G_FILE_ERROR_TXTBSY, ETXTBSY},
        {G_FILE_ERROR_FAULT, EFAULT}, {G_FILE_ERROR_LOOP, ELOOP},
        {G_FILE_ERROR_NOSPC, ENOSPC}, {G_FILE_ERROR_NOMEM, ENOMEM},
        {G_FILE_ERROR_MFILE, EMFILE}, {G_FILE_ERROR_NFILE, ENFILE},
        {G_FILE_ERROR_BADF, EBADF},   {G_FILE_ERROR_INVAL, EINVAL},
        {G_FILE_ERROR_PIPE, EPIPE},   {G_FILE_ERROR_AGAIN, EAGAIN},
        {G_FILE_ERROR_INTR, EINTR},   {G_FILE_ERROR_IO, EIO},
        {G_FILE_ERROR_PERM, EPERM},   {G_FILE_ERROR_NOSYS, ENOSYS},
    };
    for (size_t i = 0; i < G_N_ELEMENTS(map); i++) {
        if (map[i][0] == code) {
            return map[i][1];
        }
    }
    return EIO;
}

int api_error_propagate(StrataError **errp, GError *err)
{
    int code = -EIO;

    if (err && err->domain == G_FILE_ERROR) {
        code = -api_file_error_errno(err->code);
    } else if (err && err->domain == G_OPTION_ERROR) {
        code = -EINVAL;
    }
    api_error_store(errp, code, strdup(err ? err->message : "Unknown error"));
    if (err) {
        g_error_free(err);
    }
    return code;
}

/* ---- init and thread checks --------------------------------------------------------------- */

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic bool initialised;
/* id -> StrataIOThread *; main thread only. */
static GHashTable *iothreads;

bool api_initialised(void)
{
    return atomic_load(&initialised);
}

bool api_check_main_thread(const char *func, StrataError **errp)
{
    if (!api_initialised()) {
        api_error_set(errp, -EPERM, "%s: strata_init() has not been called", func);
        return false;
    }
    if (!aio_in_main_thread()) {
        api_error_set(errp, -EPERM, "%s: only the thread that called strata_init() may call this",
                      func);
        return false;
    }
    if (co_in_coroutine()) {
        api_error_set(errp, -EPERM, "%s: may not be called from a coroutine", func);
        return false;
    }
    return true;
}

int strata_init(StrataError **errp)
{
    GError *err = NULL;
    int ret = 0;

    pthread_mutex_lock(&init_lock);
    if (atomic_load(&initialised)) {
        if (!aio_in_main_thread()) {
            api_error_set(errp, -EBUSY, "strata_init: already initialised by another thread");
            ret = -EBUSY;
        }
    } else if (!aio_main_loop_init(&err)) {
        ret = api_error_propagate(errp, err);
    } else {
        bdrv_init();
        iothreads = g_hash_table_new(g_str_hash, g_str_equal);
        atomic_store(&initialised, true);
    }
    pthread_mutex_unlock(&init_lock);
    return ret;
}

/* ---- IOThreads ------------------------------------------------------------------------- */

StrataIOThread *strata_iothread_new(const char *id, StrataError **errp)
{
    GError *err = NULL;

    if (!api_check_main_thread("strata_iothread_new", errp)) {
        return NULL;
    }
    if (!id) {
        api_error_set(errp, -EINVAL, "strata_iothread_new: the id must not be NULL");
        return NULL;
    }
    api_main_enter();
    IOThread *iothread = iothread_create(id, NULL, &err);
    api_main_leave();
    if (!iothread) {
        api_error_propagate(errp, err);
        return NULL;
    }
    StrataIOThread *t = g_new0(StrataIOThread, 1);
    t->iothread = iothread;
    t->ctx = iothread_get_aio_context(iothread);
    g_hash_table_insert(iothreads, (char *)iothread_get_id(iothread), t);
    return t;
}

int strata_iothread_free(StrataIOThread *t)
{
    if (!t) {
        return 0;
    }
    if (!api_check_main_thread("strata_iothread_free", NULL)) {
        return -EPERM;
    }
    if (t->bound_images > 0) {
        return -EBUSY;
    }
    g_hash_table_remove(iothreads, iothread_get_id(t->iothread));
    api_main_enter();
    iothread_destroy(t->iothread);
    api_main_leave();
    g_free(t);
    return 0;
}

/* ---- images ------------------------------------------------------------------------------ */

#define STRATA_OPEN_ALL                                                                            \
    (STRATA_OPEN_RDWR | STRATA_OPEN_NOCACHE | STRATA_OPEN_NO_FLUSH | STRATA_OPEN_WRITETHROUGH |    \
     STRATA_OPEN_FORCE_SHARE | STRATA_OPEN_UNMAP)

static int api_open_flags(unsigned flags)
{
    return ((flags & STRATA_OPEN_RDWR) ? BDRV_O_RDWR : 0) |
           ((flags & STRATA_OPEN_NOCACHE) ? BDRV_O_NOCACHE : 0) |
           ((flags & STRATA_OPEN_NO_FLUSH) ? BDRV_O_NO_FLUSH : 0) |
           ((flags & STRATA_OPEN_FORCE_SHARE) ? BDRV_O_FORCE_SHARE : 0) |
           ((flags & STRATA_OPEN_UNMAP) ? BDRV_O_UNMAP : 0);
}

static void api_bind(StrataImage *img, StrataIOThread *t)
{
    StrataIOThread *old = atomic_load(&img->iothread);
    if (old) {
        old->bound_images--;
    }
    if (t) {
        t->bound_images++;
    }
    atomic_store(&img->iothread, t);
}

StrataImage *strata_open(const char *filename, const char *options, unsigned flags,
                         StrataError **errp)
{
    GError *err = NULL;
    StrataIOThread *t = NULL;

    if (!api_check_main_thread("strata_open", errp)) {
        return NULL;
    }
    if (flags & ~STRATA_OPEN_ALL) {
        api_error_set(errp, -EINVAL, "strata_open: unknown flags 0x%x", flags & ~STRATA_OPEN_ALL);
        return NULL;
    }

    GHashTable *opts = opts_new();
    if (options && !opts_parse_kv(opts, options, NULL, &err)) {
        g_hash_table_unref(opts);
        api_error_propagate(errp, err);
        return NULL;
    }
    /* Parsed here rather than by the block layer so that "iothread" may be given there too. */
    if (filename && g_str_has_prefix(filename, "json:")) {
        GHashTable *json = opts_from_filename(filename, &err);
        if (!json) {
            g_hash_table_unref(opts);
            api_error_propagate(errp, err);
            return NULL;
        }
        opts_merge(opts, json, false);
        g_hash_table_unref(json);
        filename = NULL;
    }
    g_autofree char *iothread_id = opts_take_str(opts, "iothread");
    if (iothread_id) {
        t = g_hash_table_lookup(iothreads, iothread_id);
        if (!t) {
            g_hash_table_unref(opts);
            api_error_set(errp, -ENOENT, "IOThread '%s' not found", iothread_id);
            return NULL;
        }
    }
    if (!filename && g_hash_table_size(opts) == 0) {
        g_hash_table_unref(opts);
        api_error_set(errp, -EINVAL, "strata_open: neither a filename nor options given");
        return NULL;
    }

    api_main_enter();
    BlockBackend *blk = blk_new_open(filename, opts, api_open_flags(flags), &err);
    api_main_leave();
    if (!blk) {
        api_error_propagate(errp, err);
        return NULL;
    }
    blk_set_enable_write_cache(blk, !(flags & STRATA_OPEN_WRITETHROUGH));

    StrataImage *img = g_new0(StrataImage, 1);
    img->blk = blk;
    api_bind(img, t);
    return img;
}

int strata_close(StrataImage *img)
{
    uint64_t perm, shared;
    int ret = 0;

    if (!img) {
        return 0;
    }
    if (!api_check_main_thread("strata_close", NULL)) {
        return -EPERM;
    }
    api_main_enter();
    AIO_WAIT_WHILE(atomic_load(&img->in_flight) > 0);
    blk_get_perm(img->blk, &perm, &shared);
    if (perm & BLK_PERM_WRITE) {
        ret = blk_flush(img->blk);
    }
    blk_unref(img->blk);
    api_main_leave();
    api_bind(img, NULL);
    g_free(img);
    return ret;
}

int strata_image_set_iothread(StrataImage *img, StrataIOThread *t, StrataError **errp)
{
    if (!api_check_main_thread("strata_image_set_iothread", errp)) {
        return -EPERM;
    }
    api_main_enter();
    AIO_WAIT_WHILE(atomic_load(&img->in_flight) > 0);
    api_bind(img, t);
    api_main_leave();
    return 0;
}
