/*
 * Context-switch backends for coroutines: one execution context (a stack
 * plus saved registers) per coroutine, and one per thread for the thread's
 * own stack (its "leader").
 *
 * Two backends implement co_switch(): hand-written assembly (switch-asm.c
 * plus switch-$(ARCH).S, COROUTINE_BACKEND_asm) and a portable one on top
 * of ucontext and _setjmp/_longjmp (switch-ucontext.c). switch-stack.c,
 * shared by both, maps stacks and holds the sanitizer state.
 *
 * Every switch is announced to the sanitizers: ASan learns the bounds of
 * the stack we jump to and keeps one fake stack per context; TSan gets one
 * fiber per context. The annotation helpers live here because the
 * backends must call them at backend-specific points (the ucontext one
 * must save its jmp_buf before TSan is told that the fiber changed).
 *
 * Threading: a CoroutineSwitch is used by one thread at a time, the one
 * running or entering its coroutine. Nothing here locks.
 */
#ifndef STRATA_COROUTINE_SWITCH_H
#define STRATA_COROUTINE_SWITCH_H

#include <setjmp.h>
#include <stdbool.h>
#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__)
#define CO_SWITCH_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CO_SWITCH_ASAN 1
#endif
#endif

#if defined(__SANITIZE_THREAD__)
#define CO_SWITCH_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CO_SWITCH_TSAN 1
#endif
#endif

#ifndef CO_SWITCH_ASAN
#define CO_SWITCH_ASAN 0
#endif
#ifndef CO_SWITCH_TSAN
#define CO_SWITCH_TSAN 0
#endif

/* True when a thread's leader context needs co_switch_init_thread() before use. */
#define CO_SWITCH_SANITIZED (CO_SWITCH_ASAN || CO_SWITCH_TSAN)

#if CO_SWITCH_ASAN
#include <sanitizer/common_interface_defs.h>
#endif
#if CO_SWITCH_TSAN
#include <sanitizer/tsan_interface.h>
#endif

#if !defined(COROUTINE_BACKEND_asm) && !defined(COROUTINE_BACKEND_ucontext)
#error "define COROUTINE_BACKEND_asm or COROUTINE_BACKEND_ucontext"
#endif

/*
 * The first function a new context runs, on its own stack, with the @arg
 * given to co_switch_init(). It must call co_switch_entered() first and
 * must never return (there is nothing to return to).
 */
typedef void CoroutineSwitchEntry(void *arg);

typedef struct CoroutineSwitch {
    void *map; /* guard page + stack, from mmap; NULL for a thread's own stack */
    size_t map_size;
    void *stack_lo;    /* lowest usable stack byte (just above the guard page) */
    size_t stack_size; /* usable bytes from stack_lo up */
#if defined(COROUTINE_BACKEND_asm)
    void *sp; /* saved stack pointer while switched out; the frame above it: switch-x86_64.S */
#else
    jmp_buf jb; /* saved registers while switched out (filled by _setjmp) */
    bool fresh; /* never run: the first switch must go through setcontext */
    CoroutineSwitchEntry *start_entry;
    void *start_arg;
#endif
    void *asan_fake_stack; /* ASan: this context's fake stack while switched out */
    void *tsan_fiber;      /* TSan: this context's fiber */
} CoroutineSwitch;

/*
 * Maps a stack of @stack_size bytes with a PROT_NONE guard page below it
 * and prepares @sw so that the first co_switch() to it runs entry(arg).
 * Returns false with errno set when the mapping fails.
 */
bool co_switch_init(CoroutineSwitch *sw, size_t stack_size, CoroutineSwitchEntry *entry, void *arg);

/* Unmaps the stack and drops the sanitizer state; @sw must not be running. */
void co_switch_free(CoroutineSwitch *sw);

/*
 * Describes the calling thread's own stack in @sw, so that coroutines can
 * switch back to it. Needed only when CO_SWITCH_SANITIZED (the backends
 * themselves only need the memory).
 */
void co_switch_init_thread(CoroutineSwitch *sw);

/* Backend internals, called by co_switch_init(). */
void co_switch_prepare(CoroutineSwitch *sw, CoroutineSwitchEntry *entry, void *arg);
extern const char co_switch_backend_name[];

/*
 * Sanitizer annotations. co_switch_san_start() runs just before the jump;
 * with @terminating, the context being left never runs again on its
 * current stack frames, so ASan destroys its fake stack.
 * co_switch_san_finish() runs just after landing back in @self.
 */
static inline void co_switch_san_start(CoroutineSwitch *from, CoroutineSwitch *to, bool terminating)
{
#if CO_SWITCH_ASAN
    if (terminating) {
        from->asan_fake_stack = NULL;
    }
    __sanitizer_start_switch_fiber(terminating ? NULL : &from->asan_fake_stack, to->stack_lo,
                                   to->stack_size);
#endif
#if CO_SWITCH_TSAN
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
    (void)from;
    (void)to;
    (void)terminating;
}

static inline void co_switch_san_finish(CoroutineSwitch *self)
{
#if CO_SWITCH_ASAN
    __sanitizer_finish_switch_fiber(self->asan_fake_stack, NULL, NULL);
#endif
    (void)self;
}

/* What a new context does first, before any instrumented code runs in it. */
static inline void co_switch_entered(CoroutineSwitch *self)
{
#if CO_SWITCH_ASAN
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    (void)self;
}

#if defined(COROUTINE_BACKEND_asm)
/*
 * switch-$(ARCH).S: pushes the callee-saved registers and the FP control
 * words on the current stack, stores the stack pointer in *@save_sp, loads
 * @new_sp and pops the same frame from there.
 */
void co_switch_asm(void **save_sp, void *new_sp);

/*
 * Saves the current context in @from and resumes @to; returns when some
 * context switches back to @from. Inline so that the fast path is one call.
 */
static inline __attribute__((always_inline)) void co_switch(CoroutineSwitch *from,
                                                            CoroutineSwitch *to, bool terminating)
{
    co_switch_san_start(from, to, terminating);
    co_switch_asm(&from->sp, to->sp);
    co_switch_san_finish(from);
}
#else
void co_switch(CoroutineSwitch *from, CoroutineSwitch *to, bool terminating);
#endif

#endif /* STRATA_COROUTINE_SWITCH_H */
