/*
 * Unit tests of the coroutine core (coroutine/coroutine.c and the
 * context-switch backends): lifecycle, nesting, home contexts, the wakeup
 * queue, the pools, threads, and the fatal misuses.
 *
 * Fatal misuses run in a forked child whose stderr is captured, so the
 * test can check both how the child died and what it said.
 *
 * Threading: tests run one at a time on the main thread; the thread tests
 * join every GThread they start.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fenv.h>
#include <glib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aio/aio.h"
#include "coroutine/coroutine-int.h"

/* ---- helpers -------------------------------------------------------------- */

/* A log of single-character events, for ordering checks. */
typedef struct Log {
    char buf[64];
    size_t len;
} Log;

static void log_add(Log *log, char c)
{
    assert_true(log->len + 1 < sizeof(log->buf));
    log->buf[log->len++] = c;
    log->buf[log->len] = '\0';
}

typedef struct ChildResult {
    int status;
    char out[16384];
} ChildResult;

/*
 * Runs fn() in a forked child with its stderr piped back into r->out. The
 * child exits 0 if fn() returns. cmocka's signal handlers are reset in the
 * child so that fatal signals kill it as they would a normal program.
 */
static void run_in_child(void (*fn)(void), ChildResult *r)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        close(fds[1]);
        signal(SIGSEGV, SIG_DFL);
        signal(SIGBUS, SIG_DFL);
        signal(SIGABRT, SIG_DFL);
        fn();
        _exit(0);
    }
    close(fds[1]);
    size_t len = 0;
    for (;;) {
        char scratch[512];
        char *dst = len + 1 < sizeof(r->out) ? r->out + len : scratch;
        size_t room = len + 1 < sizeof(r->out) ? sizeof(r->out) - 1 - len : sizeof(scratch);
        ssize_t n = read(fds[0], dst, room);
        if (n <= 0) {
            break;
        }
        if (dst != scratch) {
            len += (size_t)n;
        }
    }
    r->out[len] = '\0';
    close(fds[0]);
    assert_int_equal(waitpid(pid, &r->status, 0), pid);
}

static void assert_child_aborted_saying(const ChildResult *r, const char *msg)
{
    if (!WIFSIGNALED(r->status) || WTERMSIG(r->status) != SIGABRT || !strstr(r->out, msg)) {
        fail_msg("expected SIGABRT and \"%s\"; status 0x%x, stderr: %s", msg, r->status, r->out);
    }
}

static void co_yield_once(void *opaque)
{
    int *steps = opaque;
    (*steps)++;
    co_yield();
    (*steps)++;
}

static void co_noop(void *opaque)
{
    (void)opaque;
}

/* ---- lifecycle ------------------------------------------------------------ */

typedef struct Stepper {
    Coroutine *co;
    int step;
    bool saw_self;
    bool saw_in_coroutine;
} Stepper;

static void stepper_entry(void *opaque)
{
    Stepper *s = opaque;
    s->saw_self = co_self() == s->co;
    s->saw_in_coroutine = co_in_coroutine();
    s->step = 1;
    co_yield();
    s->step = 2;
    co_yield();
    s->step = 3;
}

static void test_coroutine_runs_only_when_entered(void **state)
{
    Stepper s = {0};
    s.co = co_create(stepper_entry, &s);

    assert_int_equal(s.step, 0);
    assert_false(co_entered(s.co));
    assert_null(co_get_ctx(s.co));
    co_enter(s.co);
    assert_int_equal(s.step, 1);
    co_enter(s.co);
    co_enter(s.co);
}

static void test_coroutine_resumes_after_yield_where_it_left_off(void **state)
{
    Stepper s = {0};
    s.co = co_create(stepper_entry, &s);

    co_enter(s.co);
    assert_int_equal(s.step, 1);
    assert_true(co_entered(s.co));
    co_enter(s.co);
    assert_int_equal(s.step, 2);
    assert_true(co_entered(s.co));
    co_enter(s.co);
    assert_int_equal(s.step, 3);
    assert_false(co_entered(s.co));
}

static void test_co_self_names_the_running_coroutine_only_inside_it(void **state)
{
    Stepper s = {0};
    s.co = co_create(stepper_entry, &s);

    assert_null(co_self());
    assert_false(co_in_coroutine());
    co_enter(s.co);
    assert_true(s.saw_self);
    assert_true(s.saw_in_coroutine);
    assert_null(co_self());
    assert_false(co_in_coroutine());
    co_enter(s.co);
    co_enter(s.co);
}

/* ---- nesting and ordering ------------------------------------------------- */

typedef struct Nest {
    Coroutine *outer, *inner;
    Coroutine *self_in_inner, *self_in_outer_after;
    Log log;
} Nest;

static void nest_inner(void *opaque)
{
    Nest *n = opaque;
    n->self_in_inner = co_self();
    log_add(&n->log, 'i');
    co_yield();
    log_add(&n->log, 'j');
}

static void nest_outer(void *opaque)
{
    Nest *n = opaque;
    log_add(&n->log, 'o');
    co_enter(n->inner);
    n->self_in_outer_after = co_self();
    log_add(&n->log, 'p');
    co_yield();
    log_add(&n->log, 'q');
}

static void test_nested_coroutine_yields_back_to_the_coroutine_that_entered_it(void **state)
{
    Nest n = {0};
    n.outer = co_create(nest_outer, &n);
    n.inner = co_create(nest_inner, &n);

    co_enter(n.outer);
    assert_string_equal(n.log.buf, "oip");
    assert_ptr_equal(n.self_in_inner, n.inner);
    assert_ptr_equal(n.self_in_outer_after, n.outer);
    assert_null(co_self());

    /* The inner one was left yielded; whoever enters it next is its caller. */
    co_enter(n.inner);
    assert_string_equal(n.log.buf, "oipj");
    assert_null(co_self());
    co_enter(n.outer);
    assert_string_equal(n.log.buf, "oipjq");
    assert_false(co_entered(n.inner));
    assert_false(co_entered(n.outer));
}

typedef struct Interleave {
    Log *log;
    char name;
} Interleave;

static void interleave_entry(void *opaque)
{
    Interleave *it = opaque;
    for (int i = 0; i < 3; i++) {
        log_add(it->log, it->name);
        co_yield();
    }
}

static void test_interleaved_coroutines_run_in_the_order_they_are_entered(void **state)
{
    Log log = {0};
    Interleave a = {&log, 'a'}, b = {&log, 'b'};
    Coroutine *ca = co_create(interleave_entry, &a);
    Coroutine *cb = co_create(interleave_entry, &b);

    co_enter(ca);
    co_enter(cb);
    co_enter(cb);
    co_enter(ca);
    co_enter(ca);
    co_enter(cb);
    assert_string_equal(log.buf, "abbaab");
    co_enter(ca);
    co_enter(cb);
    assert_false(co_entered(ca));
    assert_false(co_entered(cb));
}

/* ---- home context ---------------------------------------------------------- */

typedef struct CtxProbe {
    AioContext *seen[2];
} CtxProbe;

static void ctx_probe_entry(void *opaque)
{
    CtxProbe *p = opaque;
    p->seen[0] = co_get_ctx(co_self());
    co_yield();
    p->seen[1] = co_get_ctx(co_self());
}

static void test_co_enter_makes_the_current_context_home_and_co_enter_in_moves_it(void **state)
{
    /* Never dereferenced: contexts are opaque to the coroutine core. */
    static char fake_a, fake_b;
    AioContext *a = (AioContext *)&fake_a, *b = (AioContext *)&fake_b;
    AioContext *saved = aio_get_current();
    CtxProbe p = {0};
    Coroutine *co = co_create(ctx_probe_entry, &p);

    aio_set_current(a);
    co_enter(co);
    assert_ptr_equal(p.seen[0], a);
    assert_ptr_equal(co_get_ctx(co), a);
    co_enter_in(b, co);
    assert_ptr_equal(p.seen[1], b);
    aio_set_current(saved);
}

/* ---- wakeup queue ---------------------------------------------------------- */

typedef struct Waker {
    Log log;
    Coroutine *a, *b, *c, *d;
} Waker;

static void waker_d(void *opaque)
{
    Waker *w = opaque;
    log_add(&w->log, 'd');
}

static void waker_b(void *opaque)
{
    Waker *w = opaque;
    log_add(&w->log, 'b');
    co_wake_same_thread(w->d);
    log_add(&w->log, 'B');
}

static void waker_c(void *opaque)
{
    Waker *w = opaque;
    log_add(&w->log, 'c');
}

static void waker_a(void *opaque)
{
    Waker *w = opaque;
    log_add(&w->log, 'a');
    co_wake_same_thread(w->b);
    co_wake_same_thread(w->c);
    /* Nothing woken runs until this coroutine yields. */
    log_add(&w->log, 'A');
    co_yield();
    log_add(&w->log, 'z');
}

static void test_woken_coroutines_run_in_order_after_the_waker_yields(void **state)
{
    Waker w = {0};
    w.a = co_create(waker_a, &w);
    w.b = co_create(waker_b, &w);
    w.c = co_create(waker_c, &w);
    w.d = co_create(waker_d, &w);

    co_enter(w.a);
    /* b's own wakeup (d) runs when b finishes, before a's next one (c). */
    assert_string_equal(w.log.buf, "aAbBdc");
    co_enter(w.a);
    assert_string_equal(w.log.buf, "aAbBdcz");
}

static void wake_then_finish(void *opaque)
{
    Waker *w = opaque;
    log_add(&w->log, 'a');
    co_wake_same_thread(w->c);
}

static void test_woken_coroutines_run_after_the_waker_terminates(void **state)
{
    Waker w = {0};
    w.a = co_create(wake_then_finish, &w);
    w.c = co_create(waker_c, &w);

    co_enter(w.a);
    assert_string_equal(w.log.buf, "ac");
    assert_false(co_entered(w.c));
}

static void test_waking_outside_coroutines_enters_at_once(void **state)
{
    int steps = 0;
    Coroutine *co = co_create(co_yield_once, &steps);

    co_wake_same_thread(co);
    assert_int_equal(steps, 1);
    co_wake_same_thread(co);
    assert_int_equal(steps, 2);
    assert_false(co_entered(co));
}

/* ---- stacks and pools ------------------------------------------------------ */

static void big_stack_entry(void *opaque)
{
    volatile unsigned char buf[256 * 1024];
    unsigned *sum = opaque;

    for (size_t i = 0; i < sizeof(buf); i++) {
        buf[i] = (unsigned char)i;
    }
    co_yield();
    unsigned s = 0;
    for (size_t i = 0; i < sizeof(buf); i++) {
        s += buf[i];
    }
    *sum = s;
}

static void test_coroutine_can_use_256_kib_of_stack(void **state)
{
    unsigned sum = 0, expect = 0;
    for (size_t i = 0; i < 256 * 1024; i++) {
        expect += (unsigned char)i;
    }
    Coroutine *co = co_create(big_stack_entry, &sum);

    co_enter(co);
    co_enter(co);
    assert_int_equal(sum, expect);
}

static void test_pool_reuses_stacks_after_warm_up(void **state)
{
    for (int i = 0; i < 100; i++) {
        co_enter(co_create(co_noop, NULL));
    }
    uint64_t created = co_stacks_created();
    assert_true(co_pool_local_size() >= 1);
    for (int i = 0; i < 10000; i++) {
        co_enter(co_create(co_noop, NULL));
    }
    assert_int_equal(co_stacks_created(), created);
}

static void test_many_live_coroutines_keep_the_local_pool_bounded_and_reusable(void **state)
{
    enum { N = 300 };
    static Coroutine *cos[N];
    int steps = 0;

    for (int i = 0; i < N; i++) {
        cos[i] = co_create(co_yield_once, &steps);
        co_enter(cos[i]);
    }
    for (int i = 0; i < N; i++) {
        co_enter(cos[i]);
    }
    assert_int_equal(steps, 2 * N);
    assert_true(co_pool_local_size() <= 64);

    /* The overflow went to the global pool, which refills this thread. */
    uint64_t created = co_stacks_created();
    for (int i = 0; i < N; i++) {
        cos[i] = co_create(co_yield_once, &steps);
        co_enter(cos[i]);
    }
    for (int i = 0; i < N; i++) {
        co_enter(cos[i]);
    }
    assert_int_equal(co_stacks_created(), created);
}

typedef struct FpProbe {
    int round_inside;
} FpProbe;

static void fp_entry(void *opaque)
{
    FpProbe *p = opaque;
    fesetround(FE_UPWARD);
    co_yield();
    p->round_inside = fegetround();
    fesetround(FE_TONEAREST);
}

static void test_floating_point_rounding_mode_belongs_to_each_coroutine(void **state)
{
    if (strcmp(co_backend_name(), "ucontext") == 0) {
        /* _setjmp does not save MXCSR or the x87 control word. */
        skip();
    }
    FpProbe p = {0};
    Coroutine *co = co_create(fp_entry, &p);

    assert_int_equal(fegetround(), FE_TONEAREST);
    co_enter(co);
    assert_int_equal(fegetround(), FE_TONEAREST);
    co_enter(co);
    assert_int_equal(p.round_inside, FE_UPWARD);
}

/* ---- threads --------------------------------------------------------------- */

typedef struct Traveller {
    Coroutine *co;
    GThread *thread[2];
    bool self_ok[2];
} Traveller;

static void traveller_entry(void *opaque)
{
    Traveller *t = opaque;
    t->thread[0] = g_thread_self();
    t->self_ok[0] = co_self() == t->co;
    co_yield();
    t->thread[1] = g_thread_self();
    t->self_ok[1] = co_self() == t->co;
}

static gpointer enter_in_thread(gpointer co)
{
    co_enter(co);
    return NULL;
}

static void test_coroutine_created_in_one_thread_runs_in_another(void **state)
{
    Traveller t = {0};
    t.co = co_create(traveller_entry, &t);

    GThread *th = g_thread_new("co-test", enter_in_thread, t.co);
    g_thread_join(th);
    assert_true(t.self_ok[0]);
    assert_true(co_entered(t.co));

    /* It yielded in the other thread and finishes in this one. */
    co_enter(t.co);
    assert_true(t.self_ok[1]);
    assert_ptr_equal(t.thread[1], g_thread_self());
    assert_ptr_not_equal(t.thread[0], t.thread[1]);
    assert_false(co_entered(t.co));
}

static gpointer fill_pool_and_exit(gpointer unused)
{
    enum { N = 16 };
    Coroutine *cos[N];
    int steps = 0;

    for (int i = 0; i < N; i++) {
        cos[i] = co_create(co_yield_once, &steps);
        co_enter(cos[i]);
    }
    for (int i = 0; i < N; i++) {
        co_enter(cos[i]);
    }
    g_assert_cmpuint(co_pool_local_size(), >=, N);
    return NULL;
}

static void test_free_coroutines_of_an_exited_thread_are_reused(void **state)
{
    enum { EXTRA = 16 };
    g_thread_join(g_thread_new("co-pool", fill_pool_and_exit, NULL));

    /* Drain this thread's own pool, then take EXTRA more: from the exited thread. */
    unsigned n = co_pool_local_size() + EXTRA;
    Coroutine **cos = g_new(Coroutine *, n);
    int steps = 0;
    uint64_t created = co_stacks_created();
    for (unsigned i = 0; i < n; i++) {
        cos[i] = co_create(co_yield_once, &steps);
        co_enter(cos[i]);
    }
    assert_int_equal(co_stacks_created(), created);
    for (unsigned i = 0; i < n; i++) {
        co_enter(cos[i]);
    }
    g_free(cos);
}

/* Takes a batch from the global pool for one coroutine and exits without releasing any. */
static gpointer take_one_and_exit(gpointer steps)
{
    Coroutine *co = co_create(co_yield_once, steps);
    co_enter(co);
    return co;
}

/*
 * Creates coroutines, leaving each suspended, until one needs a new stack;
 * stores in *@out how many the pools served, then finishes them all and
 * exits, which hands every one of them back to the global pool.
 */
static gpointer count_pooled_and_exit(gpointer out)
{
    GPtrArray *cos = g_ptr_array_new();
    int steps = 0;
    unsigned served = 0;

    for (;;) {
        uint64_t created = co_stacks_created();
        Coroutine *co = co_create(co_yield_once, &steps);
        co_enter(co);
        g_ptr_array_add(cos, co);
        if (co_stacks_created() != created) {
            break;
        }
        served++;
    }
    for (guint i = 0; i < cos->len; i++) {
        co_enter(g_ptr_array_index(cos, i));
    }
    g_ptr_array_free(cos, true);
    *(unsigned *)out = served;
    return NULL;
}

/*
 * Regression: a thread whose coroutines all ended in other threads never
 * released one, so the rest of the batch it took from the global pool
 * stayed in its dead thread-local pool, lost.
 */
static void test_a_thread_that_only_takes_coroutines_returns_the_rest_at_exit(void **state)
{
    unsigned before = 0, after = 0;
    int steps = 0;

    g_thread_join(g_thread_new("co-pool", fill_pool_and_exit, NULL));
    g_thread_join(g_thread_new("co-pool", fill_pool_and_exit, NULL));
    g_thread_join(g_thread_new("co-count", count_pooled_and_exit, &before));
    assert_true(before >= 32);

    Coroutine *co = g_thread_join(g_thread_new("co-take", take_one_and_exit, &steps));
    assert_int_equal(steps, 1);
    co_enter(co); /* it ends here, in this thread's pool, not in the one that took it */
    assert_int_equal(steps, 2);

    /* The global pool lacks only that one (or one more, if it was full). */
    g_thread_join(g_thread_new("co-count", count_pooled_and_exit, &after));
    assert_true(after + 1 >= before);
}

typedef struct Churn {
    int done;
} Churn;

static void churn_entry(void *opaque)
{
    Churn *c = opaque;
    co_yield();
    c->done++;
}

static gpointer churn_thread(gpointer opaque)
{
    enum { ROUNDS = 200, BATCH = 40 };
    Churn *c = opaque;
    Coroutine *cos[BATCH];

    /* Batches above the local pool's size push coroutines through the global pool. */
    for (int r = 0; r < ROUNDS; r++) {
        int n = 1 + (r * 7) % BATCH;
        for (int i = 0; i < n; i++) {
            cos[i] = co_create(churn_entry, c);
            co_enter(cos[i]);
        }
        for (int i = 0; i < n; i++) {
            co_enter(cos[i]);
        }
    }
    return NULL;
}

static void test_threads_create_and_finish_coroutines_concurrently(void **state)
{
    enum { THREADS = 4 };
    GThread *th[THREADS];
    Churn churn[THREADS] = {0};
    int expect = 0;

    for (int r = 0; r < 200; r++) {
        expect += 1 + (r * 7) % 40;
    }
    for (int i = 0; i < THREADS; i++) {
        th[i] = g_thread_new("co-churn", churn_thread, &churn[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        g_thread_join(th[i]);
        assert_int_equal(churn[i].done, expect);
    }
}

/* ---- fatal misuse ---------------------------------------------------------- */

static int __attribute__((noinline)) recurse_deeply(unsigned depth)
{
    volatile char frame[512];

    frame[0] = (char)depth;
    frame[sizeof(frame) - 1] = (char)depth;
    if (depth == 0) {
        return frame[0];
    }
    return recurse_deeply(depth - 1) + frame[sizeof(frame) - 1];
}

static void overflow_entry(void *opaque)
{
    *(volatile int *)opaque = recurse_deeply(1u << 30);
}

static char *guard_lo, *guard_hi;

/* One-shot (SA_RESETHAND): returning re-runs the faulting access, which then kills. */
static void on_overflow_segv(int sig, siginfo_t *si, void *uc)
{
    char *addr = si->si_addr;
    const char *msg = addr >= guard_lo && addr < guard_hi ? "fault in guard page\n"
                                                          : "fault outside the guard page\n";
    ssize_t ignored = write(STDERR_FILENO, msg, strlen(msg));
    (void)ignored;
}

static void child_overflows_stack(void)
{
    static char altstack[64 * 1024];
    int result;
    Coroutine *co = co_create(overflow_entry, &result);

    guard_lo = co->sw.map;
    guard_hi = co->sw.stack_lo;
    stack_t ss = {.ss_sp = altstack, .ss_size = sizeof(altstack)};
    sigaltstack(&ss, NULL);
    struct sigaction sa = {.sa_sigaction = on_overflow_segv,
                           .sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND};
    sigaction(SIGSEGV, &sa, NULL);
    co_enter(co);
}

static void test_stack_overflow_hits_the_guard_page(void **state)
{
    ChildResult r;
    run_in_child(child_overflows_stack, &r);

    bool segv = WIFSIGNALED(r.status) && WTERMSIG(r.status) == SIGSEGV &&
                strstr(r.out, "fault in guard page") != NULL;
    /* A sanitizer may keep SIGSEGV for itself: it reports the overflow and exits. */
    bool reported = WIFEXITED(r.status) && WEXITSTATUS(r.status) != 0 &&
                    strstr(r.out, "stack-overflow") != NULL;
    if (!segv && !reported) {
        fail_msg("child was not stopped by the guard page: status 0x%x, stderr: %s", r.status,
                 r.out);
    }
}

static void reenter_self(void *opaque)
{
    co_enter(co_self());
}

static void child_reenters_running_coroutine(void)
{
    co_enter(co_create(reenter_self, NULL));
}

static void test_reentering_a_running_coroutine_aborts(void **state)
{
    ChildResult r;
    run_in_child(child_reenters_running_coroutine, &r);
    assert_child_aborted_saying(&r, "co_enter: coroutine re-entered recursively");
}

static void enter_caller(void *opaque)
{
    co_enter(opaque);
}

static void enter_inner_that_enters_outer(void *opaque)
{
    Coroutine *inner = co_create(enter_caller, co_self());
    co_enter(inner);
}

static void child_enters_its_caller(void)
{
    co_enter(co_create(enter_inner_that_enters_outer, NULL));
}

static void test_entering_a_coroutine_in_the_caller_chain_aborts(void **state)
{
    ChildResult r;
    run_in_child(child_enters_its_caller, &r);
    assert_child_aborted_saying(&r, "co_enter: coroutine re-entered recursively");
}

static void child_enters_terminated_coroutine(void)
{
    Coroutine *co = co_create(co_noop, NULL);
    co_enter(co);
    co_enter(co);
}

static void test_entering_a_terminated_coroutine_aborts(void **state)
{
    ChildResult r;
    run_in_child(child_enters_terminated_coroutine, &r);
    assert_child_aborted_saying(&r, "co_enter: coroutine entered after it terminated");
}

static void child_enters_scheduled_coroutine(void)
{
    int steps = 0;
    Coroutine *co = co_create(co_yield_once, &steps);
    co_enter(co);
    atomic_store(&co->scheduled, "test_scheduler");
    co_enter(co);
}

static void test_entering_a_scheduled_coroutine_directly_aborts(void **state)
{
    ChildResult r;
    run_in_child(child_enters_scheduled_coroutine, &r);
    assert_child_aborted_saying(&r,
                                "co_enter: coroutine scheduled by test_scheduler entered directly");
}

static void finish_holding_lock(void *opaque)
{
    co_inc_locks(co_self());
}

static void child_terminates_holding_lock(void)
{
    co_enter(co_create(finish_holding_lock, NULL));
}

static void test_terminating_while_holding_a_lock_aborts(void **state)
{
    ChildResult r;
    run_in_child(child_terminates_holding_lock, &r);
    assert_child_aborted_saying(&r, "terminated while holding 1 lock(s)");
}

static void wake_twice(void *opaque)
{
    int steps = 0;
    Coroutine *other = co_create(co_yield_once, &steps);
    co_wake_same_thread(other);
    co_wake_same_thread(other);
}

static void child_wakes_twice(void)
{
    co_enter(co_create(wake_twice, NULL));
}

static void test_waking_a_coroutine_twice_before_it_runs_aborts(void **state)
{
    ChildResult r;
    run_in_child(child_wakes_twice, &r);
    assert_child_aborted_saying(&r, "woken twice");
}

static void child_yields_outside(void)
{
    co_yield();
}

static void test_yielding_outside_a_coroutine_aborts(void **state)
{
    ChildResult r;
    run_in_child(child_yields_outside, &r);
    assert_child_aborted_saying(&r, "co_yield: called outside coroutine context");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_coroutine_runs_only_when_entered),
        cmocka_unit_test(test_coroutine_resumes_after_yield_where_it_left_off),
        cmocka_unit_test(test_co_self_names_the_running_coroutine_only_inside_it),
        cmocka_unit_test(test_nested_coroutine_yields_back_to_the_coroutine_that_entered_it),
        cmocka_unit_test(test_interleaved_coroutines_run_in_the_order_they_are_entered),
        cmocka_unit_test(test_co_enter_makes_the_current_context_home_and_co_enter_in_moves_it),
        cmocka_unit_test(test_woken_coroutines_run_in_order_after_the_waker_yields),
        cmocka_unit_test(test_woken_coroutines_run_after_the_waker_terminates),
        cmocka_unit_test(test_waking_outside_coroutines_enters_at_once),
        cmocka_unit_test(test_coroutine_can_use_256_kib_of_stack),
        cmocka_unit_test(test_pool_reuses_stacks_after_warm_up),
        cmocka_unit_test(test_many_live_coroutines_keep_the_local_pool_bounded_and_reusable),
        cmocka_unit_test(test_floating_point_rounding_mode_belongs_to_each_coroutine),
        cmocka_unit_test(test_coroutine_created_in_one_thread_runs_in_another),
        cmocka_unit_test(test_free_coroutines_of_an_exited_thread_are_reused),
        cmocka_unit_test(test_a_thread_that_only_takes_coroutines_returns_the_rest_at_exit),
        cmocka_unit_test(test_threads_create_and_finish_coroutines_concurrently),
        cmocka_unit_test(test_stack_overflow_hits_the_guard_page),
        cmocka_unit_test(test_reentering_a_running_coroutine_aborts),
        cmocka_unit_test(test_entering_a_coroutine_in_the_caller_chain_aborts),
        cmocka_unit_test(test_entering_a_terminated_coroutine_aborts),
        cmocka_unit_test(test_entering_a_scheduled_coroutine_directly_aborts),
        cmocka_unit_test(test_terminating_while_holding_a_lock_aborts),
        cmocka_unit_test(test_waking_a_coroutine_twice_before_it_runs_aborts),
        cmocka_unit_test(test_yielding_outside_a_coroutine_aborts),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
