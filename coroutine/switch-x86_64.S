/*
 * x86-64 (System V) context switch for coroutines; see switch.h.
 *
 * A switched-out context is its stack pointer alone. The frame below it
 * holds, from low to high addresses: MXCSR (4 bytes) and the x87 control
 * word (2 bytes) in one 8-byte slot, then r15 r14 r13 r12 rbx rbp and the
 * return address. Everything else is caller-saved, so the C caller of
 * co_switch_asm has already spilled what it needs.
 *
 * MXCSR's control bits and the x87 control word are callee-saved in the
 * ABI, so they travel with each context. Loading MXCSR costs dozens of
 * nanoseconds when its value changes, and its low six bits are sticky
 * exception flags that differ between contexts all the time, so both
 * words are reloaded only when their control bits differ; the flags stay
 * with the thread.
 *
 * switch-asm.c builds the same frame on a new stack with the return
 * address pointing at co_switch_trampoline, r12 = entry and r13 = arg.
 *
 * No locking: the running thread owns both contexts for the switch.
 */

#define MXCSR_CONTROL_BITS 0xffc0

    .text

/* void co_switch_asm(void **save_sp, void *new_sp) */
    .globl  co_switch_asm
    .hidden co_switch_asm
    .type   co_switch_asm, @function
    .p2align 4
co_switch_asm:
    .cfi_startproc
    pushq   %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbp, 0
    pushq   %rbx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbx, 0
    pushq   %r12
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r12, 0
    pushq   %r13
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r13, 0
    pushq   %r14
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r14, 0
    pushq   %r15
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %r15, 0
    subq    $8, %rsp
    .cfi_adjust_cfa_offset 8
    .cfi_remember_state
    stmxcsr (%rsp)
    fnstcw  4(%rsp)
    movl    (%rsp), %eax
    xorl    (%rsi), %eax
    testl   $MXCSR_CONTROL_BITS, %eax
    jnz     .Lreload_fp
    movzwl  4(%rsp), %eax
    cmpw    4(%rsi), %ax
    jnz     .Lreload_fp
.Lswitch_stack:
    /* From here on the frame is the other context's, laid out identically,
     * so the unwind rules above stay true. */
    movq    %rsp, (%rdi)
    movq    %rsi, %rsp
    addq    $8, %rsp
    .cfi_adjust_cfa_offset -8
    popq    %r15
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r15
    popq    %r14
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r14
    popq    %r13
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r13
    popq    %r12
    .cfi_adjust_cfa_offset -8
    .cfi_restore %r12
    popq    %rbx
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbx
    popq    %rbp
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbp
    ret
.Lreload_fp:
    .cfi_restore_state
    ldmxcsr (%rsi)
    fldcw   4(%rsi)
    jmp     .Lswitch_stack
    .cfi_endproc
    .size   co_switch_asm, .-co_switch_asm

/*
 * First code run on a new stack, reached by the "ret" above. The stack
 * pointer is 16-byte aligned here, as the call below needs. The entry
 * never returns; ud2 turns a broken promise into SIGILL at once.
 */
    .globl  co_switch_trampoline
    .hidden co_switch_trampoline
    .type   co_switch_trampoline, @function
    .p2align 4
co_switch_trampoline:
    .cfi_startproc
    .cfi_undefined %rip
    movq    %r13, %rdi
    callq   *%r12
    ud2
    .cfi_endproc
    .size   co_switch_trampoline, .-co_switch_trampoline

    .section .note.GNU-stack,"",@progbits
