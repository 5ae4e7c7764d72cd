/*
 * Coroutine stacks and per-context sanitizer state, shared by both
 * context-switch backends.
 *
 * Layout of one mapping (the stack grows down, towards the guard page):
 *
 *     map                map + page                       map + map_size
 *     | guard (PROT_NONE) | stack_lo ... usable stack ... top |
 *
 * An overflow runs into the guard page and dies with SIGSEGV instead of
 * silently corrupting whatever lies below.
 *
 * Threading: every function acts on a context that no thread runs.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "coroutine/switch.h"

#if CO_SWITCH_ASAN
#include <sanitizer/asan_interface.h>
#endif

bool co_switch_init(CoroutineSwitch *sw, size_t stack_size, CoroutineSwitchEntry *entry, void *arg)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t map_size = stack_size + page;

    /* MAP_NORESERVE: a 1 MiB stack typically touches a few pages only. */
    void *map = mmap(NULL, map_size, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED) {
        return false;
    }
    if (mprotect(map, page, PROT_NONE) < 0) {
        int err = errno;
        munmap(map, map_size);
        errno = err;
        return false;
    }

    *sw = (CoroutineSwitch){
        .map = map,
        .map_size = map_size,
        .stack_lo = (char *)map + page,
        .stack_size = stack_size,
    };
    co_switch_prepare(sw, entry, arg);
#if CO_SWITCH_TSAN
    sw->tsan_fiber = __tsan_create_fiber(0);
#endif
    return true;
}

void co_switch_free(CoroutineSwitch *sw)
{
#if CO_SWITCH_TSAN
    if (sw->tsan_fiber) {
        __tsan_destroy_fiber(sw->tsan_fiber);
    }
#endif
    if (sw->map) {
#if CO_SWITCH_ASAN
        /*
         * Frames still live on this stack (the trampoline's) left poisoned
         * redzones in the shadow; whatever is mapped here next must not
         * inherit them.
         */
        __asan_unpoison_memory_region(sw->stack_lo, sw->stack_size);
#endif
        munmap(sw->map, sw->map_size);
    }
    *sw = (CoroutineSwitch){0};
}

void co_switch_init_thread(CoroutineSwitch *sw)
{
    *sw = (CoroutineSwitch){0};
#if CO_SWITCH_ASAN
    /*
     * ASan needs the bounds of the stack it switches back to. The main
     * thread's "size" is its rlimit, which is what ASan assumes as well.
     */
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void *lo;
        size_t size;
        if (pthread_attr_getstack(&attr, &lo, &size) == 0) {
            sw->stack_lo = lo;
            sw->stack_size = size;
        }
        pthread_attr_destroy(&attr);
    }
#endif
#if CO_SWITCH_TSAN
    sw->tsan_fiber = __tsan_get_current_fiber();
#endif
}
