/*
 * Public API: driving the main loop from the embedder, directly
 * (strata_main_loop_poll) or from the embedder's own event loop through one
 * file descriptor (strata_main_loop_fd).
 *
 * Design of the fd mode.  An AioContext writes its eventfd for a wake-up
 * only while its home thread has announced that it may sleep (notify_me),
 * and never for work queued from the home thread itself (bottom halves,
 * timers), which its own aio_poll() would see anyway.  A plain "watch the
 * epoll fd" would therefore miss both.
 *   - Other threads: the context's GSource makes exactly that announcement
 *     in its prepare() and withdraws it in check().  The fd mode keeps a
 *     private GMainContext, owned by the main thread, with only the main
 *     context's GSource attached, and leaves it *prepared* between calls.
 *     Each outermost strata_main_loop_poll() ends with one glib cycle
 *     (check, dispatch if ready, prepare, query) and mirrors what glib wants
 *     polled into the embedder's epoll fd: the context's epoll fd, glib's
 *     own wake-up fd, and a timerfd armed with glib's timeout (the next
 *     timer, or 0 when work is already pending).
 *   - The main thread itself: every other public call made there
 *     (api_main_enter/leave) arms the timerfd to fire at once when it
 *     returns, so the embedder comes back to strata_main_loop_poll(), which
 *     runs what the call queued and re-arms properly.  One spurious wake-up
 *     per call, no callback run behind the caller's back.
 *
 * Threading: main thread only, no lock.  `depth` counts nested public calls
 * (callbacks may call the API) so that only the outermost one arms, and
 * glib is never re-entered from a callback it dispatches.
 */
#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "api/api-int.h"

#define FDMODE_MAX_FDS 8

typedef struct FdMode {
    GMainContext *gctx;
    int epfd;    /* handed to the embedder */
    int timerfd; /* in epfd; armed with glib's timeout */
    int max_priority;
    GPollFD fds[FDMODE_MAX_FDS];
    int nfds;
    int registered[FDMODE_MAX_FDS]; /* fds currently in epfd besides the timerfd */
    int nregistered;
} FdMode;

static FdMode *fdmode;
static int depth;

static bool fdmode_fd_wanted(int fd)
{
    for (int i = 0; i < fdmode->nfds; i++) {
        if (fdmode->fds[i].fd == fd) {
            return true;
        }
    }
    return false;
}

static bool fdmode_fd_registered(int fd)
{
    for (int i = 0; i < fdmode->nregistered; i++) {
        if (fdmode->registered[i] == fd) {
            return true;
        }
    }
    return false;
}

/* Makes epfd watch exactly the fds of the last query (they rarely change). */
static void fdmode_sync_fds(void)
{
    for (int i = 0; i < fdmode->nregistered;) {
        if (!fdmode_fd_wanted(fdmode->registered[i])) {
            epoll_ctl(fdmode->epfd, EPOLL_CTL_DEL, fdmode->registered[i], NULL);
            fdmode->registered[i] = fdmode->registered[--fdmode->nregistered];
        } else {
            i++;
        }
    }
    for (int i = 0; i < fdmode->nfds; i++) {
        GPollFD *p = &fdmode->fds[i];
        if (fdmode_fd_registered(p->fd)) {
            continue;
        }
        struct epoll_event ev = {
            .events =
                ((p->events & G_IO_IN) ? EPOLLIN : 0) | ((p->events & G_IO_OUT) ? EPOLLOUT : 0),
            .data.fd = p->fd,
        };
        g_assert(fdmode->nregistered < FDMODE_MAX_FDS);
        if (epoll_ctl(fdmode->epfd, EPOLL_CTL_ADD, p->fd, &ev) == 0) {
            fdmode->registered[fdmode->nregistered++] = p->fd;
        }
    }
}

static void fdmode_arm_timer(int timeout_ms)
{
    struct itimerspec its = {0};
    uint64_t ticks;

    /* Clears a past expiry (fails with EAGAIN when there was none). */
    ssize_t n = read(fdmode->timerfd, &ticks, sizeof(ticks));
    (void)n;
    if (timeout_ms == 0) {
        its.it_value.tv_nsec = 1; /* already due: readable at once */
    } else if (timeout_ms > 0) {
        its.it_value.tv_sec = timeout_ms / 1000;
        its.it_value.tv_nsec = (long)(timeout_ms % 1000) * 1000000L;
    }
    timerfd_settime(fdmode->timerfd, 0, &its, NULL);
}

/* Prepares the GMainContext (the GSource announces it may sleep) and mirrors it into epfd. */
static void fdmode_prepare(void)
{
    int timeout;

    g_main_context_prepare(fdmode->gctx, &fdmode->max_priority);
    fdmode->nfds = g_main_context_query(fdmode->gctx, fdmode->max_priority, &timeout, fdmode->fds,
                                        FDMODE_MAX_FDS);
    g_assert(fdmode->nfds <= FDMODE_MAX_FDS);
    fdmode_sync_fds();
    fdmode_arm_timer(timeout);
}

/* Closes the prepared cycle (check, dispatch if ready) and prepares the next one. */
static bool fdmode_cycle(void)
{
    g_poll(fdmode->fds, fdmode->nfds, 0);
    bool ready =
        g_main_context_check(fdmode->gctx, fdmode->max_priority, fdmode->fds, fdmode->nfds);
    if (ready) {
        g_main_context_dispatch(fdmode->gctx);
    }
    fdmode_prepare();
    return ready;
}

void api_main_enter(void)
{
    depth++;
}

void api_main_leave(void)
{
    g_assert(depth > 0);
    if (--depth == 0 && fdmode) {
        /* Work queued from the main thread wakes nobody: make the fd readable now. */
        fdmode_arm_timer(0);
    }
}

int strata_main_loop_poll(bool blocking)
{
    if (!api_initialised() || !aio_in_main_thread() || co_in_coroutine()) {
        return -EPERM;
    }
    depth++;
    bool progress = aio_poll(aio_main_context(), blocking);
    if (depth == 1 && fdmode) {
        progress |= fdmode_cycle();
    }
    depth--;
    return progress;
}

int strata_main_loop_fd(void)
{
    if (!api_initialised() || !aio_in_main_thread() || co_in_coroutine()) {
        return -EPERM;
    }
    if (fdmode) {
        return fdmode->epfd;
    }

    FdMode *m = g_new0(FdMode, 1);
    m->epfd = epoll_create1(EPOLL_CLOEXEC);
    m->timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (m->epfd < 0 || m->timerfd < 0) {
        int ret = -errno;
        if (m->epfd >= 0) {
            close(m->epfd);
        }
        if (m->timerfd >= 0) {
            close(m->timerfd);
        }
        g_free(m);
        return ret;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = m->timerfd};
    if (epoll_ctl(m->epfd, EPOLL_CTL_ADD, m->timerfd, &ev) < 0) {
        int ret = -errno;
        close(m->timerfd);
        close(m->epfd);
        g_free(m);
        return ret;
    }

    m->gctx = g_main_context_new();
    /* The owner may prepare/query/check/dispatch; we stay the owner for good. */
    g_main_context_acquire(m->gctx);
    GSource *source = aio_get_g_source(aio_main_context());
    g_source_attach(source, m->gctx);
    g_source_unref(source);

    fdmode = m;
    fdmode_prepare();
    return m->epfd;
}
