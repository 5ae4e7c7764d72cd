/*
 * Portable context-switch backend: makecontext/setcontext start a new
 * stack once, and every later switch is a plain _setjmp/_longjmp pair,
 * which saves no signal mask and so makes no system call.
 *
 * Order inside co_switch() matters under TSan: the jmp_buf of the context
 * being left must be saved while TSan still believes that context runs,
 * so the annotation sits between _setjmp and the jump.
 *
 * Threading: co_start_uc is per thread and only read by setcontext at
 * once, so it needs no lock.
 */
#undef _FORTIFY_SOURCE /* __longjmp_chk would reject a jump to another stack */

#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

#include "coroutine/switch.h"

const char co_switch_backend_name[] = "ucontext";

/*
 * Not on the stack: co_ucontext_start() never returns, so an ASan-poisoned
 * local there would leave stale shadow behind on the stack it left.
 */
static __thread ucontext_t co_start_uc;

void co_switch_prepare(CoroutineSwitch *sw, CoroutineSwitchEntry *entry, void *arg)
{
    sw->fresh = true;
    sw->start_entry = entry;
    sw->start_arg = arg;
}

/* makecontext passes int arguments only, hence the pointer in two halves. */
static void co_ucontext_trampoline(unsigned int hi, unsigned int lo)
{
    CoroutineSwitch *sw = (CoroutineSwitch *)(uintptr_t)(((uint64_t)hi << 32) | lo);

    sw->start_entry(sw->start_arg);
    fprintf(stderr, "coroutine: switch entry returned\n");
    abort();
}

static void __attribute__((noinline, noreturn)) co_ucontext_start(CoroutineSwitch *to)
{
    uint64_t p = (uint64_t)(uintptr_t)to;

    if (getcontext(&co_start_uc) < 0) {
        perror("coroutine: getcontext");
        abort();
    }
    co_start_uc.uc_stack.ss_sp = to->stack_lo;
    co_start_uc.uc_stack.ss_size = to->stack_size;
    co_start_uc.uc_link = NULL;
    makecontext(&co_start_uc, (void (*)(void))co_ucontext_trampoline, 2, (unsigned int)(p >> 32),
                (unsigned int)p);
    setcontext(&co_start_uc);
    perror("coroutine: setcontext");
    abort();
}

void co_switch(CoroutineSwitch *from, CoroutineSwitch *to, bool terminating)
{
    if (_setjmp(from->jb) == 0) {
        co_switch_san_start(from, to, terminating);
        if (__builtin_expect(to->fresh, 0)) {
            to->fresh = false;
            co_ucontext_start(to);
        }
        _longjmp(to->jb, 1);
    }
    co_switch_san_finish(from);
}
