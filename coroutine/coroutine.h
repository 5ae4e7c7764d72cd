/*
 * Coroutines: the unit of execution of every request in Strata.
 *
 * A coroutine runs on its own mmap'ed stack (with a guard page) until it
 * yields or returns.  It is entered from a thread's normal stack or from
 * another coroutine; yielding returns control to whoever entered it.
 *
 * Every coroutine has a home AioContext: the context of the thread that
 * entered it (or the one it was moved to with aio_co_schedule()).
 * aio_co_wake() always resumes a coroutine in its home context, so a
 * coroutine never runs in two threads at once and code inside one needs
 * no lock against itself.
 *
 * Thread-safety: co_create/co_enter/co_yield act on the calling thread.
 * A coroutine may be woken from any thread only through aio_co_wake() or
 * aio_co_schedule() (aio/aio.h).
 */
#ifndef STRATA_COROUTINE_H
#define STRATA_COROUTINE_H

#include <stdbool.h>
#include <stdint.h>

/*
 * Marks a function that may only be called from coroutine context,
 * because it may yield.  Purely documentary for the compiler.
 */
#define coroutine_fn

typedef struct Coroutine Coroutine;
typedef struct AioContext AioContext;

typedef void coroutine_fn CoroutineEntry(void *opaque);

/*
 * Creates a coroutine that will run entry(opaque) when first entered.
 * Draws from a per-thread free pool, so this normally allocates nothing.
 * Never fails (aborts when no stack can be mapped at all).
 */
Coroutine *co_create(CoroutineEntry *entry, void *opaque);

/*
 * Enters @co in the current thread and returns when it yields or
 * terminates.  Its home context becomes the current thread's AioContext.
 * Entering a coroutine that is running, already entered (its caller chain
 * includes it), scheduled elsewhere or terminated aborts with a message.
 */
void co_enter(Coroutine *co);

/* Like co_enter, but runs @co with @ctx as its home context. */
void co_enter_in(AioContext *ctx, Coroutine *co);

/* Suspends the current coroutine and returns to the one that entered it. */
void coroutine_fn co_yield(void);

/* The running coroutine, or NULL outside coroutine context. */
Coroutine *co_self(void);

/* True when called from inside a coroutine. */
bool co_in_coroutine(void);

/* True when @co has been entered and has not terminated (it may be yielded). */
bool co_entered(Coroutine *co);

/* The coroutine's home AioContext (NULL before it was first entered). */
AioContext *co_get_ctx(Coroutine *co);

/*
 * Per-thread pool statistics, for tests and benchmarks: how many free
 * coroutines this thread holds, and how many coroutines were ever created
 * with a fresh stack (not taken from a pool) by any thread.
 */
unsigned co_pool_local_size(void);
uint64_t co_stacks_created(void);

/* Name of the context-switch backend compiled in ("asm-x86_64" or "ucontext"). */
const char *co_backend_name(void);

/* Stack size of every coroutine, including nothing of the guard page. */
#define COROUTINE_STACK_SIZE (1u << 20)

#endif /* STRATA_COROUTINE_H */
