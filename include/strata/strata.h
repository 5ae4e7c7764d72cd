/*
 * libstrata public API, version 0.  This is the only header an embedder
 * includes; everything it declares starts with strata_ (or Strata, STRATA_)
 * and is exported from libstrata.so through include/strata/libstrata.map.
 * It needs no header beyond the C library's.
 *
 * The contract in one page (docs/design/public-api.md has the details):
 *
 * Threads.  The thread that calls strata_init() becomes Strata's *main
 * thread* and runs the main loop.  Control calls (open, close, IOThreads,
 * binding) are main-thread only.  I/O calls may come from any thread:
 *   - synchronous forms (strata_pread...) wait for the result;
 *   - asynchronous forms (strata_aio_...) return at once; the callback runs
 *     later in the image's *home thread*: its IOThread when the image is
 *     bound to one, else the main thread (from strata_main_loop_poll(), or
 *     from a synchronous request or control call made there, which runs the
 *     main loop while it waits);
 *   - coroutine forms (strata_co_...) only inside a Strata coroutine
 *     (see strata_coroutine_spawn()); they yield instead of blocking.
 *
 * Errors.  Every call that can fail returns a negative errno (-EINVAL,
 * -EIO, ...) or NULL.  Control calls also take a StrataError **errp last:
 * when it is not NULL, a failure stores there an error object with the
 * same errno and a human-readable message (free it with
 * strata_error_free()).  I/O calls return only the errno.
 *
 * Stability.  Types are opaque; flag bits not defined here are rejected
 * with -EINVAL, so an embedder can probe for newer flags.  Symbols are
 * versioned (STRATA_0); within soname libstrata.so.0 nothing is removed
 * or changes meaning.
 */
#ifndef STRATA_STRATA_H
#define STRATA_STRATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define STRATA_VERSION_MAJOR 0
#define STRATA_VERSION_MINOR 1
#define STRATA_VERSION_MICRO 0

/* The library's version as "MAJOR.MINOR.MICRO" (of the library linked, not of this header). */
const char *strata_version(void);

/* ---- errors ------------------------------------------------------------------------------ */

typedef struct StrataError StrataError;

/* The failure as a negative errno (-ENOENT, -EINVAL, -EACCES, -EAGAIN for a lock conflict...). */
int strata_error_code(const StrataError *err);
/* A message for humans, e.g. "Could not open 'x.img': No such file or directory". */
const char *strata_error_message(const StrataError *err);
/* Frees @err; NULL is allowed. */
void strata_error_free(StrataError *err);

/* ---- library and main loop -------------------------------------------------------------- */

/*
 * Initialises the library: makes the calling thread Strata's main thread,
 * creates its event loop and registers the drivers.  Idempotent from that
 * thread; from any other thread once initialised it fails with -EBUSY.
 * Call it before any other function except strata_version() and the
 * strata_error_*() accessors.  Returns 0 or -errno.
 */
int strata_init(StrataError **errp);

/*
 * Runs one iteration of the main loop: ready I/O completions, callbacks of
 * asynchronous requests on unbound images, coroutines and timers of the
 * main thread.  With @blocking it first waits until there is something to
 * do.  Returns 1 when something ran, 0 when nothing did, -EPERM when not
 * called from the main thread.
 */
int strata_main_loop_poll(bool blocking);

/*
 * A file descriptor for embedding the main loop in another event loop:
 * it becomes readable (POLLIN) when strata_main_loop_poll(false) has work
 * to do, timers included.  Watch it, and when it is readable call
 * strata_main_loop_poll(false).  Owned by Strata: never read, close or
 * change it.  Main thread only.  The first call sets this mode up for good;
 * from then on every other main-thread call makes the fd readable once on
 * return (a cheap spurious wake-up), so that the work it queued runs in
 * the next strata_main_loop_poll().  Returns the fd or -errno.
 */
int strata_main_loop_fd(void);

/* ---- IOThreads ------------------------------------------------------------------------- */

typedef struct StrataIOThread StrataIOThread;

/*
 * Starts a thread named "IO <id>" that runs its own event loop, with
 * adaptive busy-polling.  @id must be unique and not empty.  Main thread
 * only.  Returns NULL on failure (-EINVAL empty id, -EEXIST id in use).
 */
StrataIOThread *strata_iothread_new(const char *id, StrataError **errp);

/*
 * Stops and joins the thread and frees @iothread.  Fails with -EBUSY while
 * an image is bound to it (nothing changes then).  Coroutines it still
 * runs (strata_coroutine_spawn) must have finished.  Main thread only.
 * NULL is allowed (returns 0).
 */
int strata_iothread_free(StrataIOThread *iothread);

/* ---- images ------------------------------------------------------------------------------ */

typedef struct StrataImage StrataImage;

/* strata_open() flags. */
#define STRATA_OPEN_RDWR         (1u << 0) /* read-write; read-only without it */
#define STRATA_OPEN_NOCACHE      (1u << 1) /* bypass the host page cache (O_DIRECT) */
#define STRATA_OPEN_NO_FLUSH     (1u << 2) /* flushes do nothing ("cache=unsafe") */
#define STRATA_OPEN_WRITETHROUGH (1u << 3) /* every write reaches stable storage (FUA) */
#define STRATA_OPEN_FORCE_SHARE  (1u << 4) /* read-only: ignore other users' locks */
#define STRATA_OPEN_UNMAP        (1u << 5) /* discard frees space ("discard=unmap") */

/*
 * Opens an image.  @filename is a path, a protocol filename
 * ("null-co://"), "json:{...}" (the options as a JSON object), or NULL when
 * @options names everything.  @options is NULL or "key=value,key=value"
 * with dotted keys as in QEMU's --image-opts ("driver=raw,file.aio=native";
 * a comma in a value is written ",,").  The format is probed when no
 * "driver" is given.  One key is Strata's own: "iothread=ID" binds the
 * image to that IOThread at once.  @flags are STRATA_OPEN_*.
 *
 * Main thread only.  Returns NULL on failure, with -ENOENT, -EACCES,
 * -EAGAIN (another process holds a conflicting lock), -EINVAL (bad option
 * or flag), or what the driver reported.
 */
StrataImage *strata_open(const char *filename, const char *options, unsigned flags,
                         StrataError **errp);

/*
 * Waits for every request on @img (asynchronous ones: until their callback
 * has returned), flushes a read-write image, closes it and frees @img.
 * Returns 0, or the -errno of that final flush (the image is closed
 * anyway), or -EPERM when not called from the main thread (then nothing
 * happens).  No thread may submit a request on @img once this is called.
 */
int strata_close(StrataImage *img);

/*
 * Binds @img to @iothread (NULL: back to the main thread) after waiting for
 * its in-flight requests.  From then on its asynchronous requests run, and
 * their callbacks are called, in that thread; so do synchronous requests
 * from threads that run no Strata event loop.  Main thread only; no other
 * thread may submit requests on @img during the call.  Returns 0 or -errno.
 */
int strata_image_set_iothread(StrataImage *img, StrataIOThread *iothread, StrataError **errp);

/* ---- requests ------------------------------------------------------------------------- */

/* Request flags; each request accepts only those listed for it. */
#define STRATA_REQ_FUA         (1u << 0) /* writes: stable once completed */
#define STRATA_REQ_MAY_UNMAP   (1u << 1) /* write_zeroes: the range may be deallocated */
#define STRATA_REQ_NO_FALLBACK (1u << 2) /* write_zeroes: -ENOTSUP rather than write zeroes */

/*
 * Common rules.  Offsets and lengths are in bytes, any alignment; one
 * request moves at most 2 GiB.  Success is 0 (there are no short
 * transfers).  Errors: -EINVAL for a malformed request (offset + length
 * overflows, too long, iovcnt out of [0, IOV_MAX], unknown flag), -EIO for
 * a request past the end of the image, -EPERM to write a read-only image,
 * -ENOTSUP, or the error of the underlying storage.  Buffers need no
 * alignment (Strata bounces what the storage cannot take directly).
 *
 * Synchronous forms run:
 *   - inside a Strata coroutine: like the strata_co_ form;
 *   - in a thread that runs a Strata event loop (the main thread, or an
 *     IOThread inside a callback): right there, running that loop while
 *     they wait, so other callbacks of that thread may run meanwhile;
 *   - in any other thread: in the image's IOThread when it is bound to one
 *     (the caller sleeps on a condition variable), else in the calling
 *     thread itself, on a private event loop Strata keeps for the thread
 *     (released when the thread exits).
 * Several threads may run requests on one image at once.
 */
int strata_pread(StrataImage *img, uint64_t offset, void *buf, size_t bytes, unsigned flags);
int strata_pwrite(StrataImage *img, uint64_t offset, const void *buf, size_t bytes, unsigned flags);
int strata_preadv(StrataImage *img, uint64_t offset, const struct iovec *iov, int iovcnt,
                  unsigned flags);
int strata_pwritev(StrataImage *img, uint64_t offset, const struct iovec *iov, int iovcnt,
                   unsigned flags);
/* Makes the range read as zeroes.  Flags: FUA, MAY_UNMAP, NO_FALLBACK. */
int strata_write_zeroes(StrataImage *img, uint64_t offset, uint64_t bytes, unsigned flags);
/* A hint that the range is unused; does nothing unless opened with STRATA_OPEN_UNMAP. */
int strata_discard(StrataImage *img, uint64_t offset, uint64_t bytes);
/* Makes every completed write durable. */
int strata_flush(StrataImage *img);
/* The image's length in bytes, or -errno. */
int64_t strata_length(StrataImage *img);

/*
 * Asynchronous forms.  They check their arguments, start the request and
 * return 0; then @cb(@opaque, ret) is called exactly once, with ret as the
 * synchronous form would return it, in the image's home thread (its
 * IOThread, or the main thread), outside any coroutine, and never before
 * the submitting call has returned.  Immediate errors are returned and @cb
 * is then never called: -EINVAL for an unknown flag, iovcnt out of range,
 * more than 2 GiB of buffers or a NULL @cb.  Every other error (range
 * errors included) comes through @cb.  Any thread may submit.  The data buffers must stay valid
 * until @cb runs; the @iov array itself is copied.  A callback may submit
 * new requests; it must not block for long: it holds up its thread.
 */
typedef void StrataCompletionFunc(void *opaque, int ret);

int strata_aio_preadv(StrataImage *img, uint64_t offset, const struct iovec *iov, int iovcnt,
                      unsigned flags, StrataCompletionFunc *cb, void *opaque);
int strata_aio_pwritev(StrataImage *img, uint64_t offset, const struct iovec *iov, int iovcnt,
                       unsigned flags, StrataCompletionFunc *cb, void *opaque);
int strata_aio_write_zeroes(StrataImage *img, uint64_t offset, uint64_t bytes, unsigned flags,
                            StrataCompletionFunc *cb, void *opaque);
int strata_aio_discard(StrataImage *img, uint64_t offset, uint64_t bytes, StrataCompletionFunc *cb,
                       void *opaque);
int strata_aio_flush(StrataImage *img, StrataCompletionFunc *cb, void *opaque);

/* ---- coroutines ------------------------------------------------------------------------ */

/*
 * For embedders that write their I/O as straight-line code: a coroutine
 * runs on its own stack in one Strata thread and, instead of blocking,
 * yields in strata_co_* calls while the thread's event loop runs others.
 */
typedef void StrataCoroutineFunc(void *opaque);

/*
 * Runs @fn(@opaque) in a new coroutine in @iothread (NULL: in the main
 * thread, from its main loop).  Returns 0 at once; -EPERM before
 * strata_init().  Any thread.  The function must return before its thread
 * is stopped (strata_iothread_free).
 */
int strata_coroutine_spawn(StrataIOThread *iothread, StrataCoroutineFunc *fn, void *opaque);
/* True when the caller runs in a Strata coroutine. */
bool strata_in_coroutine(void);

/*
 * Coroutine forms: the request runs in the calling coroutine, in the
 * thread it lives in (whatever the image's binding), and yields until it
 * completes.  Same results as the synchronous forms; -EPERM when not
 * called from a Strata coroutine.
 */
int strata_co_preadv(StrataImage *img, uint64_t offset, const struct iovec *iov, int iovcnt,
                     unsigned flags);
int strata_co_pwritev(StrataImage *img, uint64_t offset, const struct iovec *iov, int iovcnt,
                      unsigned flags);
int strata_co_write_zeroes(StrataImage *img, uint64_t offset, uint64_t bytes, unsigned flags);
int strata_co_discard(StrataImage *img, uint64_t offset, uint64_t bytes);
int strata_co_flush(StrataImage *img);

/* ---- block jobs (STRATA_0.2) ----------------------------------------------------------- */

/*
 * Long-running operations on an image's backing chain, in the background:
 *   commit  copies the layers from a top down to a base into the base, then
 *           drops them from the chain; with the image itself as top (the
 *           default) it is an *active* commit, which becomes ready and must
 *           be completed (strata_job_complete) to switch the image to base;
 *   stream  copies the backing chain (down to an optional base) into the
 *           image, then drops those backing files;
 *   mirror  copies the image to another one and keeps it in sync; ready once
 *           in sync; completing switches the image to the copy, cancelling
 *           after ready leaves the copy consistent and switches nothing.
 * The image stays usable throughout: requests from any thread go on.
 *
 * Threads: every strata_job_* call is main-thread only, outside coroutines
 * (-EPERM otherwise).  Jobs run in the main loop: the embedder must run it
 * (strata_main_loop_poll, strata_main_loop_fd, or strata_job_wait).  Event
 * callbacks are called there, from the main loop.
 *
 * Lifecycle (docs/design/jobs.md): created -> running (<-> paused) ->
 * [ready (<-> standby)] -> waiting -> pending -> concluded -> null; a
 * failure or cancel goes through aborting.  Unless "auto-finalize=off"
 * the job finalizes itself (pending is passed at once); unless
 * "auto-dismiss=off" it disappears (null) once concluded.  Verbs given in a
 * state that does not accept them fail with -EPERM and a message naming
 * the state and the verb.
 */
typedef struct StrataJob StrataJob;

typedef enum StrataJobStatus {
    STRATA_JOB_CREATED = 0,
    STRATA_JOB_RUNNING = 1,
    STRATA_JOB_PAUSED = 2,
    STRATA_JOB_READY = 3,
    STRATA_JOB_STANDBY = 4,
    STRATA_JOB_WAITING = 5,
    STRATA_JOB_PENDING = 6,
    STRATA_JOB_ABORTING = 7,
    STRATA_JOB_CONCLUDED = 8,
    STRATA_JOB_NULL = 9,
} StrataJobStatus;

typedef enum StrataJobEvent {
    STRATA_JOB_EVENT_STATUS = 0,    /* the status changed (strata_job_status) */
    STRATA_JOB_EVENT_READY = 1,     /* ready: may be completed */
    STRATA_JOB_EVENT_PENDING = 2,   /* waits for strata_job_finalize (auto-finalize=off) */
    STRATA_JOB_EVENT_ERROR = 3,     /* an I/O error met the error policy */
    STRATA_JOB_EVENT_COMPLETED = 4, /* concluded; strata_job_error() tells how */
} StrataJobEvent;

/* Called in the main thread, from the main loop; may call strata_job_* on the job. */
typedef void StrataJobEventFunc(void *opaque, StrataJob *job, StrataJobEvent event);

/*
 * Starts a job of @type ("commit", "stream", "mirror") on @img.  @options is
 * NULL or "key=value,..." (as for strata_open):
 *   id=ID                  unique name (default: generated)
 *   speed=N                rate limit in bytes/s (0 = none, the default)
 *   auto-finalize=on|off, auto-dismiss=on|off   (default on)
 *   on-error=report|ignore|stop|enospc          (commit, stream; default report)
 *   on-source-error=, on-target-error=          (mirror; default report)
 *   commit:  top=NODE (default: the image: active commit), base=NODE (default:
 *            the bottom of the chain), backing-file=NAME (written into the
 *            header of the image above top)
 *   stream:  base=NODE (default: none, the whole chain), backing-file=NAME
 *   mirror:  target=FILENAME (an existing image of the same size), target-format=FMT,
 *            sync=full|top|none (default full), granularity=BYTES,
 *            buf-size=BYTES, copy-mode=background|write-blocking
 * NODE is a node name or the filename of an image in @img's backing chain.
 * @cb (may be NULL) hears every event of the job.  Returns the job, with a
 * reference for the caller (strata_job_unref), or NULL: -EINVAL bad
 * option, -ENOENT unknown node, -EEXIST duplicate id, -EPERM permission
 * conflict or wrong thread, or what opening the mirror target reported.
 */
StrataJob *strata_job_start(StrataImage *img, const char *type, const char *options,
                            StrataJobEventFunc *cb, void *opaque, StrataError **errp);

/* Drops the caller's reference; the job itself goes on. */
void strata_job_unref(StrataJob *job);
/* The live job called @id (a new reference), or NULL. */
StrataJob *strata_job_find(const char *id);
/*
 * Every job started through this API that is not dismissed yet: stores up
 * to @max of them (each a new reference) into @jobs and returns how many
 * there are.  Main thread only (0 elsewhere).
 */
size_t strata_job_list(StrataJob **jobs, size_t max);

const char *strata_job_id(const StrataJob *job);
const char *strata_job_type(const StrataJob *job);
StrataJobStatus strata_job_status(const StrataJob *job);
/* "created", "running", ... as QEMU names them. */
const char *strata_job_status_name(StrataJobStatus status);
/* Bytes done and the current estimate of the total (it may grow while mirroring). */
void strata_job_progress(const StrataJob *job, uint64_t *current, uint64_t *total);
/* 0, or the negative errno the job ended with (-ECANCELED when cancelled). */
int strata_job_error(const StrataJob *job);
/* A message for a failed job, or NULL. */
const char *strata_job_error_message(const StrataJob *job);

/* Verbs: 0 or -errno (-EPERM: not accepted in the current state). */
int strata_job_pause(StrataJob *job, StrataError **errp);  /* nested: each needs a resume */
int strata_job_resume(StrataJob *job, StrataError **errp);
/* @force: a ready mirror aborts instead of stopping in sync. */
int strata_job_cancel(StrataJob *job, bool force, StrataError **errp);
int strata_job_complete(StrataJob *job, StrataError **errp);
int strata_job_finalize(StrataJob *job, StrataError **errp);
int strata_job_dismiss(StrataJob *job, StrataError **errp);
int strata_job_set_speed(StrataJob *job, uint64_t speed, StrataError **errp);
/*
 * Runs the main loop until the job has concluded (or is pending with
 * auto-finalize=off, or, with @until_ready, is ready).  Returns 0, or the
 * job's error with its message in @errp.
 */
int strata_job_wait(StrataJob *job, bool until_ready, StrataError **errp);

#ifdef __cplusplus
}
#endif

#endif /* STRATA_STRATA_H */
