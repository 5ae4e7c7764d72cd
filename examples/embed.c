/*
 * embed: what a program embedding libstrata looks like.  It includes only
 * <strata/strata.h> and links only libstrata.so.
 *
 * It creates a 4 MiB raw image in a fresh temporary directory, opens it
 * bound to an IOThread, writes and reads back a pattern synchronously and
 * then with asynchronous requests whose callbacks run in the IOThread,
 * finally moves the image back to the main loop and drives its
 * completions from a poll() loop through strata_main_loop_fd().  It
 * prints a short summary and exits 0 when every byte matched.
 *
 * Threads: main() is Strata's main thread; the asynchronous callbacks of
 * step 2 run in the IOThread and report to main() through a mutex and a
 * condition variable; those of step 3 run in main() itself.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <strata/strata.h>

#define IMAGE_SIZE (4u << 20)
#define CHUNK      (64u << 10)
#define NCHUNKS    (IMAGE_SIZE / CHUNK)

/* Completion bookkeeping shared with the callbacks. */
typedef struct Batch {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned pending;
    int first_error;
    pthread_t callback_thread;
} Batch;

static void batch_done(void *opaque, int ret)
{
    Batch *b = opaque;
    pthread_mutex_lock(&b->lock);
    if (ret < 0 && b->first_error == 0) {
        b->first_error = ret;
    }
    b->callback_thread = pthread_self();
    b->pending--;
    pthread_cond_signal(&b->cond);
    pthread_mutex_unlock(&b->lock);
}

static void batch_wait(Batch *b)
{
    pthread_mutex_lock(&b->lock);
    while (b->pending > 0) {
        pthread_cond_wait(&b->cond, &b->lock);
    }
    pthread_mutex_unlock(&b->lock);
}

static unsigned batch_pending(Batch *b)
{
    pthread_mutex_lock(&b->lock);
    unsigned n = b->pending;
    pthread_mutex_unlock(&b->lock);
    return n;
}

static uint8_t pattern(unsigned seed, size_t i)
{
    return (uint8_t)(seed + i * 13 + (i >> 12));
}

static void fill(uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        buf[i] = pattern(seed, i);
    }
}

static bool check(const uint8_t *buf, size_t len, unsigned seed)
{
    for (size_t i = 0; i < len; i++) {
        if (buf[i] != pattern(seed, i)) {
            fprintf(stderr, "embed: mismatch at byte %zu\n", i);
            return false;
        }
    }
    return true;
}

static int fail(const char *what, int ret)
{
    fprintf(stderr, "embed: %s: %s\n", what, strerror(-ret));
    return 1;
}

/* Step 1: synchronous I/O (the request runs in the IOThread; main() waits). */
static int sync_round_trip(StrataImage *img, uint8_t *buf, uint8_t *out)
{
    int ret;
    fill(buf, IMAGE_SIZE, 1);
    if ((ret = strata_pwrite(img, 0, buf, IMAGE_SIZE, 0)) < 0) {
        return fail("pwrite", ret);
    }
    if ((ret = strata_pread(img, 0, out, IMAGE_SIZE, 0)) < 0) {
        return fail("pread", ret);
    }
    return check(out, IMAGE_SIZE, 1) ? 0 : 1;
}

/* Step 2: NCHUNKS asynchronous writes, then reads; callbacks in the IOThread. */
static int async_round_trip(StrataImage *img, uint8_t *buf, uint8_t *out, pthread_t *cb_thread)
{
    Batch b = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, pthread_self()};
    int ret;

    fill(buf, IMAGE_SIZE, 2);
    memset(out, 0, IMAGE_SIZE);
    b.pending = NCHUNKS;
    for (unsigned i = 0; i < NCHUNKS; i++) {
        struct iovec v = {buf + i * CHUNK, CHUNK};
        if ((ret = strata_aio_pwritev(img, i * CHUNK, &v, 1, 0, batch_done, &b)) < 0) {
            return fail("aio_pwritev", ret);
        }
    }
    batch_wait(&b);
    b.pending = NCHUNKS;
    for (unsigned i = 0; i < NCHUNKS; i++) {
        struct iovec v = {out + i * CHUNK, CHUNK};
        if ((ret = strata_aio_preadv(img, i * CHUNK, &v, 1, 0, batch_done, &b)) < 0) {
            return fail("aio_preadv", ret);
        }
    }
    batch_wait(&b);
    if (b.first_error < 0) {
        return fail("asynchronous request", b.first_error);
    }
    *cb_thread = b.callback_thread;
    return check(out, IMAGE_SIZE, 2) ? 0 : 1;
}

/* Step 3: the image is back on the main loop, driven from our own poll() loop. */
static int poll_loop_round_trip(StrataImage *img, uint8_t *out, unsigned *wakeups)
{
    Batch b = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, pthread_self()};
    int fd = strata_main_loop_fd();
    int ret;

    if (fd < 0) {
        return fail("main_loop_fd", fd);
    }
    memset(out, 0, IMAGE_SIZE);
    b.pending = NCHUNKS + 1;
    for (unsigned i = 0; i < NCHUNKS; i++) {
        struct iovec v = {out + i * CHUNK, CHUNK};
        if ((ret = strata_aio_preadv(img, i * CHUNK, &v, 1, 0, batch_done, &b)) < 0) {
            return fail("aio_preadv", ret);
        }
    }
    if ((ret = strata_aio_flush(img, batch_done, &b)) < 0) {
        return fail("aio_flush", ret);
    }
    while (batch_pending(&b) > 0) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10000) <= 0) {
            return fail("poll on the main loop fd", -ETIMEDOUT);
        }
        (*wakeups)++;
        strata_main_loop_poll(false);
    }
    if (b.first_error < 0) {
        return fail("asynchronous request", b.first_error);
    }
    if (!pthread_equal(b.callback_thread, pthread_self())) {
        fprintf(stderr, "embed: a main-loop callback ran in another thread\n");
        return 1;
    }
    return check(out, IMAGE_SIZE, 2) ? 0 : 1;
}

int main(void)
{
    StrataError *err = NULL;
    const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    char dir[4096], path[4096 + 16];
    pthread_t cb_thread = pthread_self();
    unsigned wakeups = 0;
    int rc = 1;

    if (strata_init(&err) < 0) {
        fprintf(stderr, "embed: %s\n", strata_error_message(err));
        strata_error_free(err);
        return 1;
    }
    snprintf(dir, sizeof(dir), "%s/strata-embed-XXXXXX", tmp);
    if (!mkdtemp(dir)) {
        perror("embed: mkdtemp");
        return 1;
    }
    snprintf(path, sizeof(path), "%s/disk.raw", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0 || ftruncate(fd, IMAGE_SIZE) < 0) {
        perror("embed: creating the image");
        goto out_dir;
    }
    close(fd);

    StrataIOThread *io = strata_iothread_new("embed-io", &err);
    if (!io) {
        fprintf(stderr, "embed: %s\n", strata_error_message(err));
        goto out_file;
    }
    StrataImage *img = strata_open(path, "driver=raw,iothread=embed-io", STRATA_OPEN_RDWR, &err);
    if (!img) {
        fprintf(stderr, "embed: %s\n", strata_error_message(err));
        goto out_iothread;
    }

    uint8_t *buf = malloc(IMAGE_SIZE), *out = malloc(IMAGE_SIZE);
    int64_t len = strata_length(img);
    if (!buf || !out || len != IMAGE_SIZE) {
        fprintf(stderr, "embed: setup failed (length %lld)\n", (long long)len);
    } else if (sync_round_trip(img, buf, out) == 0 &&
               async_round_trip(img, buf, out, &cb_thread) == 0) {
        if (pthread_equal(cb_thread, pthread_self())) {
            fprintf(stderr, "embed: IOThread callbacks ran in the main thread\n");
        } else if (strata_image_set_iothread(img, NULL, &err) < 0) {
            fprintf(stderr, "embed: %s\n", strata_error_message(err));
        } else if (poll_loop_round_trip(img, out, &wakeups) == 0) {
            rc = 0;
        }
    }
    free(buf);
    free(out);

    int ret = strata_close(img);
    if (ret < 0) {
        rc = fail("close", ret);
    }
    if (rc == 0) {
        printf("embed: libstrata %s: %u MiB raw image; sync %u MiB, async %u x %u KiB "
               "with callbacks in IOThread 'embed-io', %u reads driven by poll() "
               "(%u wake-ups): all data verified\n",
               strata_version(), IMAGE_SIZE >> 20, IMAGE_SIZE >> 20, 2 * NCHUNKS, CHUNK >> 10,
               NCHUNKS, wakeups);
    }
out_iothread:
    strata_iothread_free(io);
out_file:
    unlink(path);
out_dir:
    rmdir(dir);
    strata_error_free(err);
    return rc;
}
