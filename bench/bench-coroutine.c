/*
 * Benchmark of the coroutine core against the two usual ways of switching
 * stacks in C: glibc's swapcontext (a signal-mask system call per switch)
 * and sigsetjmp/siglongjmp between two stacks (what QEMU's ucontext
 * backend does after the first entry).
 *
 * Each figure is the median of RUNS runs of N iterations, in nanoseconds
 * per iteration; a "round trip" is a switch there and a switch back.
 * Prints "name value" lines, then the ratios with their targets.
 *
 * Single-threaded.
 */
#undef _FORTIFY_SOURCE /* longjmp_chk refuses jumps to another stack */

#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>

#include "bench/bench-util.h"
#include "coroutine/coroutine.h"

enum { RUNS = 7, BASELINE_STACK = 64 * 1024 };

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/* ---- (a) co_enter + co_yield round trip ---------------------------------- */

static volatile bool yielder_stop;

static void yielder(void *opaque)
{
    while (!yielder_stop) {
        co_yield();
    }
}

static double run_enter_yield(long n)
{
    yielder_stop = false;
    Coroutine *co = co_create(yielder, NULL);
    co_enter(co);

    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        co_enter(co);
    }
    double t1 = now_ns();

    yielder_stop = true;
    co_enter(co);
    return (t1 - t0) / n;
}

/* ---- (b) co_create + co_enter + termination, from the pool --------------- */

static void noop(void *opaque)
{
}

static double run_create_enter_terminate(long n)
{
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        co_enter(co_create(noop, NULL));
    }
    return (now_ns() - t0) / n;
}

/* ---- (c) swapcontext round trip ------------------------------------------ */

static ucontext_t uc_main, uc_other;

static void uc_other_loop(void)
{
    for (;;) {
        swapcontext(&uc_other, &uc_main);
    }
}

static double run_swapcontext(long n)
{
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        swapcontext(&uc_main, &uc_other);
    }
    return (now_ns() - t0) / n;
}

/* ---- (d) sigsetjmp/siglongjmp round trip --------------------------------- */

/*
 * Structured as QEMU's ucontext backend uses it: a switch function that
 * saves with sigsetjmp(env, 0) and jumps with siglongjmp, called from an
 * enter function and a yield function, the coroutine body calling yield in
 * a loop. That is the same call structure as co_enter/co_yield, so the
 * ratio compares switching mechanisms. The first entry goes through
 * swapcontext, as in QEMU.
 */
typedef struct SjContext {
    sigjmp_buf env;
} SjContext;

static SjContext sj_leader, sj_co;
static ucontext_t sj_uc_main, sj_uc_co;

static void __attribute__((noinline)) sj_switch(SjContext *from, SjContext *to)
{
    if (!sigsetjmp(from->env, 0)) {
        siglongjmp(to->env, 1);
    }
}

static void __attribute__((noinline)) sj_enter(void)
{
    sj_switch(&sj_leader, &sj_co);
}

static void __attribute__((noinline)) sj_yield(void)
{
    sj_switch(&sj_co, &sj_leader);
}

static void sj_body(void)
{
    for (;;) {
        sj_yield();
    }
}

static void sj_start(void)
{
    if (!sigsetjmp(sj_leader.env, 0)) {
        swapcontext(&sj_uc_main, &sj_uc_co);
    }
}

static double run_sigsetjmp(long n)
{
    double t0 = now_ns();
    for (long i = 0; i < n; i++) {
        sj_enter();
    }
    return (now_ns() - t0) / n;
}

/*
 * The same pair of calls inlined into two loops, with no function around
 * them: a lower bound that no enter/yield API can reach, printed for
 * reference only.
 */
static sigjmp_buf sjl_main, sjl_other;
static ucontext_t sjl_uc_main, sjl_uc_other;

static void sjl_other_loop(void)
{
    for (;;) {
        if (!sigsetjmp(sjl_other, 0)) {
            siglongjmp(sjl_main, 1);
        }
    }
}

static void sjl_start(void)
{
    if (!sigsetjmp(sjl_main, 0)) {
        swapcontext(&sjl_uc_main, &sjl_uc_other);
    }
}

static double __attribute__((noinline)) run_sigsetjmp_loop(long n)
{
    volatile long i;
    double t0 = now_ns();
    for (i = 0; i < n; i++) {
        if (!sigsetjmp(sjl_main, 0)) {
            siglongjmp(sjl_other, 1);
        }
    }
    return (now_ns() - t0) / n;
}

static void make_baseline_context(ucontext_t *uc, void (*fn)(void))
{
    if (getcontext(uc) < 0) {
        perror("getcontext");
        exit(1);
    }
    uc->uc_stack.ss_sp = malloc(BASELINE_STACK);
    uc->uc_stack.ss_size = BASELINE_STACK;
    uc->uc_link = NULL;
    makecontext(uc, fn, 0);
}

/* ---- driver ---------------------------------------------------------------- */

enum { ENTER_YIELD, CREATE, SWAPCONTEXT, SIGSETJMP, SIGSETJMP_LOOP, NR_FIGURES };

static const struct {
    double (*run)(long n);
    long n;
} figures[NR_FIGURES] = {
    [ENTER_YIELD] = {run_enter_yield, 2000000},
    [CREATE] = {run_create_enter_terminate, 1000000},
    [SWAPCONTEXT] = {run_swapcontext, 200000},
    [SIGSETJMP] = {run_sigsetjmp, 2000000},
    [SIGSETJMP_LOOP] = {run_sigsetjmp_loop, 2000000},
};

/* Median over runs of a[r] / b[r]: each ratio compares runs made back to back. */
static double median_ratio(const double *a, const double *b)
{
    double v[RUNS];
    for (int r = 0; r < RUNS; r++) {
        v[r] = a[r] / b[r];
    }
    return bench_median(v, RUNS);
}

int main(void)
{
    static double ns[NR_FIGURES][RUNS], med[NR_FIGURES];

    make_baseline_context(&uc_other, uc_other_loop);
    make_baseline_context(&sj_uc_co, sj_body);
    make_baseline_context(&sjl_uc_other, sjl_other_loop);
    sj_start();
    sjl_start();

    /* Round-robin, so that a noisy neighbour hurts every figure alike. */
    for (int f = 0; f < NR_FIGURES; f++) {
        figures[f].run(figures[f].n / 10); /* warm-up: pool, caches, predictors */
    }
    for (int r = 0; r < RUNS; r++) {
        for (int f = 0; f < NR_FIGURES; f++) {
            ns[f][r] = figures[f].run(figures[f].n);
        }
    }
    for (int f = 0; f < NR_FIGURES; f++) {
        double tmp[RUNS];
        memcpy(tmp, ns[f], sizeof(tmp));
        med[f] = bench_median(tmp, RUNS);
    }

    printf("coroutine.backend %s\n", co_backend_name());
    printf("coroutine.enter_yield_ns %.1f\n", med[ENTER_YIELD]);
    printf("coroutine.create_enter_terminate_ns %.1f   (target <= 60)\n", med[CREATE]);
    printf("baseline.swapcontext_round_trip_ns %.1f\n", med[SWAPCONTEXT]);
    printf("baseline.sigsetjmp_round_trip_ns %.1f\n", med[SIGSETJMP]);
    printf("baseline.sigsetjmp_inlined_loop_round_trip_ns %.1f\n", med[SIGSETJMP_LOOP]);
    printf("ratio.enter_yield_vs_sigsetjmp %.2f   (target <= 0.5)\n",
           median_ratio(ns[ENTER_YIELD], ns[SIGSETJMP]));
    printf("ratio.enter_yield_vs_swapcontext %.3f   (target <= 0.05)\n",
           median_ratio(ns[ENTER_YIELD], ns[SWAPCONTEXT]));
    printf("ratio.enter_yield_vs_sigsetjmp_inlined_loop %.2f\n",
           median_ratio(ns[ENTER_YIELD], ns[SIGSETJMP_LOOP]));
    return 0;
}
