/*
 * Assembly context-switch backend: builds the first frame of a new stack
 * so that co_switch_asm (switch-$(ARCH).S) "returns" into
 * co_switch_trampoline, which calls the entry. The switch itself is
 * inline in switch.h.
 *
 * Threading: co_switch_prepare() touches only the new, unused stack.
 */
#include <stdint.h>

#include "coroutine/switch.h"

#if !defined(__x86_64__)
#error "the asm coroutine backend exists for x86-64 only; use COROUTINE_BACKEND=ucontext"
#endif

/* ABI defaults: all FP exceptions masked, round to nearest, 64-bit x87 precision. */
#define CO_MXCSR_DEFAULT  0x1f80u
#define CO_X87_CW_DEFAULT 0x037fu

void co_switch_trampoline(void);

const char co_switch_backend_name[] = "asm-x86_64";

/*
 * Lays out, from the top of the stack down: 16 zero bytes (a null return
 * address ends debugger backtraces), the return address into the
 * trampoline, rbp rbx r12 r13 r14 r15, then the MXCSR/x87 slot. The
 * trampoline thus starts with a 16-byte aligned stack pointer.
 */
void co_switch_prepare(CoroutineSwitch *sw, CoroutineSwitchEntry *entry, void *arg)
{
    uintptr_t top = ((uintptr_t)sw->stack_lo + sw->stack_size) & ~(uintptr_t)15;
    uint64_t *p = (uint64_t *)top;

    *--p = 0;
    *--p = 0;
    *--p = (uint64_t)(uintptr_t)co_switch_trampoline;
    *--p = 0;                          /* rbp */
    *--p = 0;                          /* rbx */
    *--p = (uint64_t)(uintptr_t)entry; /* r12 */
    *--p = (uint64_t)(uintptr_t)arg;   /* r13 */
    *--p = 0;                          /* r14 */
    *--p = 0;                          /* r15 */
    *--p = CO_MXCSR_DEFAULT | ((uint64_t)CO_X87_CW_DEFAULT << 32);
    sw->sp = p;
}
