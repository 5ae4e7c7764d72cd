/*
 * bench-aio: costs of the event loop that matter for I/O latency.
 *
 *  - cross-thread wake latency: a coroutine in an IOThread yields; the main
 *    thread takes a timestamp and calls aio_co_wake(); the coroutine takes
 *    one when it runs again.  Median and p99 over many rounds, with adaptive
 *    polling at its IOThread default and with poll-max-ns=0 (always sleeps
 *    in epoll, so every wake costs an eventfd write and a thread wake-up).
 *  - idle IOThread CPU: an IOThread with nothing to do, over 1 s.
 *
 * Output: "name value" lines (aio.cross_thread_wake_ns_poll 1234), then the
 * target line.  Usage: bench-aio [rounds]   (default 20000)
 *
 * Threading: the main thread drives; the measured coroutine lives in the
 * IOThread; they share only atomics.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include "aio/iothread.h"

#define GAP_NS 20000 /* between rounds, so the IOThread reaches its poll or its sleep */

typedef struct WakeBench {
    Coroutine *co;
    int rounds;
    int64_t *lat;
    _Atomic int64_t t_wake;
    atomic_int yielded; /* rounds the coroutine has reached */
    atomic_bool done;
} WakeBench;

static void coroutine_fn wake_bench_entry(void *opaque)
{
    WakeBench *b = opaque;
    for (int i = 0; i < b->rounds; i++) {
        atomic_store(&b->yielded, i + 1);
        co_yield ();
        b->lat[i] = aio_clock_ns() - atomic_load(&b->t_wake);
    }
    atomic_store(&b->done, true);
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static void spin_ns(int64_t ns)
{
    int64_t end = aio_clock_ns() + ns;
    while (aio_clock_ns() < end) {
    }
}

/* Runs the wake benchmark in @io; stores median and p99 in ns. */
static void wake_bench(IOThread *io, int rounds, int64_t *median, int64_t *p99)
{
    WakeBench b = {.rounds = rounds, .lat = g_new(int64_t, rounds)};
    atomic_init(&b.t_wake, 0);
    atomic_init(&b.yielded, 0);
    atomic_init(&b.done, false);
    b.co = co_create(wake_bench_entry, &b);
    aio_co_enter(iothread_get_aio_context(io), b.co);

    for (int i = 1; i <= rounds; i++) {
        while (atomic_load(&b.yielded) < i) {
        }
        spin_ns(GAP_NS);
        atomic_store(&b.t_wake, aio_clock_ns());
        aio_co_wake(b.co);
    }
    while (!atomic_load(&b.done)) {
        g_usleep(100);
    }
    qsort(b.lat, rounds, sizeof(int64_t), cmp_i64);
    *median = b.lat[rounds / 2];
    *p99 = b.lat[(int)(rounds * 0.99)];
    g_free(b.lat);
}

typedef struct CpuRead {
    int64_t us;
    atomic_bool done;
} CpuRead;

static void cpu_read_bh(void *opaque)
{
    CpuRead *r = opaque;
    struct rusage ru;
    getrusage(RUSAGE_THREAD, &ru);
    r->us = (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec +
            ru.ru_stime.tv_usec;
    atomic_store(&r->done, true);
}

static int64_t iothread_cpu_us(IOThread *io)
{
    CpuRead r = {.us = 0};
    atomic_init(&r.done, false);
    aio_bh_schedule_oneshot(iothread_get_aio_context(io), cpu_read_bh, &r);
    while (!atomic_load(&r.done)) {
        g_usleep(100);
    }
    return r.us;
}

static void noop_bh(void *opaque)
{
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 20000;
    int64_t med_poll, p99_poll, med_nopoll, p99_nopoll;
    GError *err = NULL;

    if (rounds < 100 || !aio_main_loop_init(&err)) {
        fprintf(stderr, "usage: bench-aio [rounds >= 100]\n");
        return 1;
    }
    IOThread *io = iothread_create("bench", NULL, &err);
    if (!io) {
        fprintf(stderr, "bench-aio: %s\n", err->message);
        return 1;
    }
    wake_bench(io, rounds, &med_poll, &p99_poll);
    iothread_set_param(io, "poll-max-ns", 0, NULL);
    wake_bench(io, rounds, &med_nopoll, &p99_nopoll);

    /* Idle cost with the default window, after it had every chance to grow. */
    iothread_set_param(io, "poll-max-ns", 32768, NULL);
    wake_bench(io, rounds / 10, &(int64_t){0}, &(int64_t){0});
    for (int i = 0; i < 20; i++) {
        g_usleep(2000);
        aio_bh_schedule_oneshot(iothread_get_aio_context(io), noop_bh, NULL);
    }
    int64_t cpu0 = iothread_cpu_us(io);
    int64_t t0 = aio_clock_ns();
    g_usleep(1000000);
    int64_t cpu1 = iothread_cpu_us(io);
    double pct = 100.0 * (double)(cpu1 - cpu0) * 1000.0 / (double)(aio_clock_ns() - t0);

    printf("aio.cross_thread_wake_ns_poll %" PRId64 "\n", med_poll);
    printf("aio.cross_thread_wake_ns_poll_p99 %" PRId64 "\n", p99_poll);
    printf("aio.cross_thread_wake_ns_nopoll %" PRId64 "\n", med_nopoll);
    printf("aio.cross_thread_wake_ns_nopoll_p99 %" PRId64 "\n", p99_nopoll);
    printf("aio.idle_iothread_cpu_pct %.3f\n", pct);
    printf("target: <= 5000 ns\n");
    iothread_destroy(io);
    return 0;
}
