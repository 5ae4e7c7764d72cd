/*
 * The Linux side of AioContext: event notifiers (eventfd), fd handlers in
 * an epoll set, and aio_poll() with adaptive busy-polling.
 *
 * Threading: everything here except event_notifier_set() runs in the
 * context's home thread.  Handlers removed while aio_poll() dispatches are
 * only marked deleted (and dropped from the epoll set at once); they are
 * freed when the outermost aio_poll() finishes, because an epoll batch
 * already fetched may still point at them.
 *
 * Timeouts: epoll_pwait2() takes a timespec, so a timer 30 us away sleeps
 * 30 us instead of being rounded to 0 (a busy loop) or up to 1 ms.  On a
 * kernel without it (ENOSYS, before 5.11) we fall back to epoll_wait() and
 * round up to the next millisecond: a timer may fire up to 1 ms late but
 * never early and never spins.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "aio/aio-int.h"

#define AIO_MAX_EVENTS 128

/* ------------------------------------------------------------------ */
/* event notifiers */

int event_notifier_init(EventNotifier *e, bool active)
{
    int fd = eventfd(active ? 1 : 0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd < 0) {
        e->fd = -1;
        return -errno;
    }
    e->fd = fd;
    return 0;
}

void event_notifier_cleanup(EventNotifier *e)
{
    if (e->fd >= 0) {
        close(e->fd);
        e->fd = -1;
    }
}

int event_notifier_set(EventNotifier *e)
{
    uint64_t one = 1;
    ssize_t r;
    do {
        r = write(e->fd, &one, sizeof(one));
    } while (r < 0 && errno == EINTR);
    /* EAGAIN means the counter is saturated: it is readable anyway. */
    if (r < 0 && errno != EAGAIN) {
        return -errno;
    }
    return 0;
}

bool event_notifier_test_and_clear(EventNotifier *e)
{
    uint64_t value = 0;
    ssize_t r;
    do {
        r = read(e->fd, &value, sizeof(value));
    } while (r < 0 && errno == EINTR);
    return r == sizeof(value) && value > 0;
}

/* ------------------------------------------------------------------ */
/* handlers */

static AioHandler *aio_find_handler(AioContext *ctx, int fd)
{
    for (AioHandler *h = ctx->handlers; h; h = h->next) {
        if (h->fd == fd && !h->deleted) {
            return h;
        }
    }
    return NULL;
}

/* Brings the epoll registration of @h in line with its callbacks. */
static void aio_handler_update_epoll(AioContext *ctx, AioHandler *h)
{
    uint32_t events = 0;
    if (h->io_read || h->en_read) {
        events |= EPOLLIN;
    }
    if (h->io_write) {
        events |= EPOLLOUT;
    }
    if (events == h->events) {
        return;
    }
    struct epoll_event ev = {.events = events, .data.ptr = h};
    int op = !h->events ? EPOLL_CTL_ADD : !events ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (epoll_ctl(ctx->epollfd, op, h->fd, &ev) < 0) {
        g_error("aio: epoll_ctl(%d) on fd %d failed: %s", op, h->fd, g_strerror(errno));
    }
    h->events = events;
}

static void aio_handler_remove(AioContext *ctx, AioHandler *h)
{
    h->io_read = h->io_write = h->io_poll_ready = NULL;
    h->en_read = h->en_poll_ready = NULL;
    aio_handler_update_epoll(ctx, h);
    if (h->io_poll) {
        ctx->nr_poll_handlers--;
        h->io_poll = NULL;
    }
    if (ctx->walking_handlers) {
        h->deleted = true;
        ctx->deleted_handlers++;
        return;
    }
    for (AioHandler **p = &ctx->handlers; *p; p = &(*p)->next) {
        if (*p == h) {
            *p = h->next;
            break;
        }
    }
    g_free(h);
}

/* Frees the handlers removed during dispatch, once nobody walks the list. */
static void aio_reap_handlers(AioContext *ctx)
{
    AioHandler **p = &ctx->handlers;
    while (*p) {
        AioHandler *h = *p;
        if (h->deleted) {
            *p = h->next;
            g_free(h);
        } else {
            p = &h->next;
        }
    }
    ctx->deleted_handlers = 0;
}

/* Finds or creates the handler of @fd and sets its callbacks. */
static AioHandler *aio_handler_set(AioContext *ctx, int fd, AioPollFn *io_poll, void *opaque)
{
    AioHandler *h = aio_find_handler(ctx, fd);
    if (!h) {
        h = g_new0(AioHandler, 1);
        h->fd = fd;
        h->next = ctx->handlers;
        ctx->handlers = h;
    }
    if (!h->io_poll && io_poll) {
        ctx->nr_poll_handlers++;
    } else if (h->io_poll && !io_poll) {
        ctx->nr_poll_handlers--;
    }
    h->io_poll = io_poll;
    h->opaque = opaque;
    h->poll_ready = false;
    return h;
}

void aio_set_fd_handler(AioContext *ctx, int fd, IOHandler *io_read, IOHandler *io_write,
                        AioPollFn *io_poll, IOHandler *io_poll_ready, void *opaque)
{
    if (!io_read && !io_write && !io_poll && !io_poll_ready) {
        AioHandler *h = aio_find_handler(ctx, fd);
        if (h) {
            aio_handler_remove(ctx, h);
        }
        return;
    }
    AioHandler *h = aio_handler_set(ctx, fd, io_poll, opaque);
    h->io_read = io_read;
    h->io_write = io_write;
    h->io_poll_ready = io_poll_ready;
    h->notifier = NULL;
    h->en_read = h->en_poll_ready = NULL;
    aio_handler_update_epoll(ctx, h);
}

void aio_set_event_notifier(AioContext *ctx, EventNotifier *e, EventNotifierHandler *handler,
                            AioPollFn *io_poll, EventNotifierHandler *io_poll_ready)
{
    if (!handler && !io_poll && !io_poll_ready) {
        AioHandler *h = aio_find_handler(ctx, e->fd);
        if (h) {
            aio_handler_remove(ctx, h);
        }
        return;
    }
    AioHandler *h = aio_handler_set(ctx, e->fd, io_poll, e);
    h->io_read = h->io_write = h->io_poll_ready = NULL;
    h->notifier = e;
    h->en_read = handler;
    h->en_poll_ready = io_poll_ready;
    aio_handler_update_epoll(ctx, h);
}

/* ------------------------------------------------------------------ */
/* context setup */

static void aio_context_notifier_cb(EventNotifier *e)
{
    event_notifier_test_and_clear(e);
}

int aio_context_setup(AioContext *ctx)
{
    ctx->epollfd = epoll_create1(EPOLL_CLOEXEC);
    if (ctx->epollfd < 0) {
        return -errno;
    }
    int ret = event_notifier_init(&ctx->notifier, false);
    if (ret < 0) {
        close(ctx->epollfd);
        return ret;
    }
    aio_set_event_notifier(ctx, &ctx->notifier, aio_context_notifier_cb, NULL, NULL);
    aio_find_handler(ctx, ctx->notifier.fd)->internal = true;
    return 0;
}

void aio_context_teardown(AioContext *ctx)
{
    g_assert(!ctx->walking_handlers);
    while (ctx->handlers) {
        AioHandler *h = ctx->handlers;
        ctx->handlers = h->next;
        g_free(h);
    }
    close(ctx->epollfd);
    event_notifier_cleanup(&ctx->notifier);
}

/* ------------------------------------------------------------------ */
/* polling */

static inline void aio_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield" ::: "memory");
#endif
}

int64_t aio_compute_timeout(AioContext *ctx)
{
    if (atomic_load_explicit(&ctx->notified, memory_order_relaxed) || aio_bh_pending(ctx)) {
        return 0;
    }
    return aio_timers_timeout_ns(ctx);
}

/* Calls every io_poll callback once; true if one saw work. No syscalls. */
static bool aio_run_poll_handlers_once(AioContext *ctx)
{
    bool ready = false;
    for (AioHandler *h = ctx->handlers; h; h = h->next) {
        if (h->io_poll && !h->deleted && h->io_poll(h->opaque)) {
            h->poll_ready = true;
            ready = true;
        }
    }
    return ready;
}

/* Anything for aio_poll to do, as seen without a syscall (besides the clock). */
static bool aio_poll_sees_work(AioContext *ctx, int64_t now)
{
    if (ctx->nr_poll_handlers && aio_run_poll_handlers_once(ctx)) {
        return true;
    }
    return atomic_load_explicit(&ctx->notified, memory_order_relaxed) ||
           atomic_load_explicit(&ctx->bh_list, memory_order_relaxed) ||
           atomic_load_explicit(&ctx->timer_deadline, memory_order_relaxed) <= now;
}

/*
 * Busy-polls for up to @window_ns (less if a timer is due sooner, given by
 * @timeout_ns, -1 for none).  Returns true when work showed up.
 */
static bool aio_poll_spin(AioContext *ctx, int64_t window_ns, int64_t timeout_ns)
{
    int64_t now = aio_clock_ns();
    if (timeout_ns >= 0 && timeout_ns < window_ns) {
        window_ns = timeout_ns;
    }
    int64_t end = now + window_ns;
    do {
        if (aio_poll_sees_work(ctx, now)) {
            return true;
        }
        aio_cpu_relax();
        now = aio_clock_ns();
    } while (now < end);
    return false;
}

/*
 * Adapts the poll window after the thread waited @block_ns for work.  If
 * the spin caught it, keep the window.  If the wait exceeded poll_max_ns,
 * spinning would not have helped: shrink.  Otherwise a larger window would
 * have caught it: grow, starting at AIO_POLL_NS_MIN.
 */
static void aio_poll_adjust(AioContext *ctx, int64_t block_ns)
{
    int64_t max = atomic_load_explicit(&ctx->poll_max_ns, memory_order_relaxed);
    int64_t ns = atomic_load_explicit(&ctx->poll_ns, memory_order_relaxed);

    if (ns > max) {
        ns = max;
    }
    if (max == 0 || block_ns <= ns) {
        /* nothing to learn */
    } else if (block_ns > max) {
        int64_t shrink = atomic_load_explicit(&ctx->poll_shrink, memory_order_relaxed);
        ns /= shrink ? shrink : 2;
        if (ns < AIO_POLL_NS_MIN) {
            ns = 0;
        }
    } else if (ns < max) {
        int64_t grow = atomic_load_explicit(&ctx->poll_grow, memory_order_relaxed);
        if (ns == 0) {
            ns = AIO_POLL_NS_MIN;
        } else if (__builtin_mul_overflow(ns, grow ? grow : 2, &ns)) {
            ns = max;
        }
        if (ns > max) {
            ns = max;
        }
    }
    if (ns != atomic_load_explicit(&ctx->poll_ns, memory_order_relaxed)) {
        atomic_store_explicit(&ctx->poll_ns, ns, memory_order_relaxed);
    }
}

static int aio_epoll_wait(AioContext *ctx, struct epoll_event *ev, int64_t timeout_ns)
{
    static atomic_bool no_pwait2;
    int r;

    if (timeout_ns == 0) {
        r = epoll_wait(ctx->epollfd, ev, AIO_MAX_EVENTS, 0);
    } else if (!atomic_load_explicit(&no_pwait2, memory_order_relaxed)) {
        struct timespec ts, *tsp = NULL;
        if (timeout_ns > 0) {
            ts.tv_sec = timeout_ns / 1000000000;
            ts.tv_nsec = timeout_ns % 1000000000;
            tsp = &ts;
        }
        r = epoll_pwait2(ctx->epollfd, ev, AIO_MAX_EVENTS, tsp, NULL);
        if (r < 0 && errno == ENOSYS) {
            atomic_store_explicit(&no_pwait2, true, memory_order_relaxed);
            return aio_epoll_wait(ctx, ev, timeout_ns);
        }
    } else {
        int64_t ms = timeout_ns < 0 ? -1 : (timeout_ns + 999999) / 1000000;
        r = epoll_wait(ctx->epollfd, ev, AIO_MAX_EVENTS, ms > INT_MAX ? INT_MAX : (int)ms);
    }
    if (r < 0 && errno != EINTR) {
        g_error("aio: epoll wait failed: %s", g_strerror(errno));
    }
    return r < 0 ? 0 : r;
}

static bool aio_dispatch_fd(AioHandler *h, uint32_t revents)
{
    bool progress = false;
    if (h->deleted) {
        return false;
    }
    if ((revents & (EPOLLIN | EPOLLHUP | EPOLLERR)) && (h->io_read || h->en_read)) {
        if (h->en_read) {
            h->en_read(h->notifier);
        } else {
            h->io_read(h->opaque);
        }
        progress = !h->internal;
    }
    /* The read callback may have removed the handler. */
    /* HUP goes to the writer too: a level-triggered HUP nobody handles would spin. */
    if (!h->deleted && (revents & (EPOLLOUT | EPOLLERR | EPOLLHUP)) && h->io_write) {
        h->io_write(h->opaque);
        progress = true;
    }
    return progress;
}

static bool aio_dispatch_poll_ready(AioContext *ctx)
{
    bool progress = false;
    for (AioHandler *h = ctx->handlers; h; h = h->next) {
        if (!h->poll_ready) {
            continue;
        }
        h->poll_ready = false;
        if (h->deleted) {
            continue;
        }
        if (h->en_poll_ready) {
            h->en_poll_ready(h->notifier);
            progress = true;
        } else if (h->io_poll_ready) {
            h->io_poll_ready(h->opaque);
            progress = true;
        }
    }
    return progress;
}

/*
 * Waits (if @blocking) and returns how many epoll events are in @ev.
 * Busy-polls first for the current window, with notify_me still 0 so that
 * producers need no syscall; only then raises notify_me and sleeps.
 */
static int aio_poll_wait(AioContext *ctx, bool blocking, struct epoll_event *ev)
{
    bool ready = ctx->nr_poll_handlers && aio_run_poll_handlers_once(ctx);
    int64_t timeout = (blocking && !ready) ? aio_compute_timeout(ctx) : 0;
    if (timeout == 0) {
        return aio_epoll_wait(ctx, ev, 0);
    }

    int64_t start = aio_clock_ns();
    int64_t max = atomic_load_explicit(&ctx->poll_max_ns, memory_order_relaxed);
    int64_t window = atomic_load_explicit(&ctx->poll_ns, memory_order_relaxed);
    if (window > max) {
        window = max;
    }
    int n;
    if (window > 0 && aio_poll_spin(ctx, window, timeout)) {
        n = aio_epoll_wait(ctx, ev, 0);
    } else {
        /* acq_rel: pairs with the read-modify-write in aio_notify() */
        atomic_fetch_add_explicit(&ctx->notify_me, 2, memory_order_acq_rel);
        n = aio_epoll_wait(ctx, ev, aio_compute_timeout(ctx));
        atomic_fetch_sub_explicit(&ctx->notify_me, 2, memory_order_release);
    }
    aio_poll_adjust(ctx, aio_clock_ns() - start);
    return n;
}

bool aio_poll(AioContext *ctx, bool blocking)
{
    struct epoll_event ev[AIO_MAX_EVENTS];
    AioContext *prev = aio_get_current();
    bool progress = false;

    g_assert(!co_in_coroutine());
    if (prev != ctx) {
        aio_set_current(ctx);
    }
    ctx->walking_handlers++;

    int n = aio_poll_wait(ctx, blocking, ev);

    /* Accept the notification before looking for work, so none is lost. */
    if (atomic_load_explicit(&ctx->notified, memory_order_relaxed)) {
        atomic_exchange(&ctx->notified, false);
    }
    for (int i = 0; i < n; i++) {
        progress |= aio_dispatch_fd(ev[i].data.ptr, ev[i].events);
    }
    if (ctx->nr_poll_handlers) {
        progress |= aio_dispatch_poll_ready(ctx);
    }
    progress |= aio_bh_poll(ctx);
    progress |= aio_timers_run(ctx);

    if (--ctx->walking_handlers == 0 && ctx->deleted_handlers) {
        aio_reap_handlers(ctx);
    }
    if (prev != ctx) {
        aio_set_current(prev);
    }
    return progress;
}
