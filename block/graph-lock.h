/*
 * Graph lock: keeps the node graph (children, parents, BdrvChild.bs) stable
 * under running requests without a global mutex.
 *
 * Readers are requests: a coroutine in any thread takes the reader side
 * for the whole request.  Taking it touches only a counter of the calling
 * thread (no shared cache line) unless a writer is waiting.
 *
 * The writer is the main loop changing the graph: it takes the writer side
 * inside a drained section, outside any coroutine, and must not poll
 * (aio_poll, AIO_WAIT_WHILE) or call driver I/O while it holds it.
 * Readers that run in the main thread never wait (the writer cannot be
 * active while they run), so main-loop code may read the graph without it.
 */
#ifndef STRATA_GRAPH_LOCK_H
#define STRATA_GRAPH_LOCK_H

#include <stdbool.h>

#include "coroutine/coroutine.h"

/* Markers for functions that need the caller to hold the lock (documentary). */
#define GRAPH_RDLOCK
#define GRAPH_WRLOCK

/*
 * Takes the reader side; waits (yielding) while a writer holds or wants
 * the lock.  May be called from any coroutine, and nests.
 */
void coroutine_fn bdrv_graph_co_rdlock(void);
/* Releases one reader hold; may be called from another thread than the lock. */
void coroutine_fn bdrv_graph_co_rdunlock(void);

/* Main-loop code outside coroutines reads the graph freely: these only assert. */
void bdrv_graph_rdlock_main_loop(void);
void bdrv_graph_rdunlock_main_loop(void);

/*
 * Takes the writer side: stops new readers, then waits (polling the main
 * loop) until none is left.  Main loop, outside coroutines, drained.
 * Does not nest.
 */
void bdrv_graph_wrlock(void);
void bdrv_graph_wrunlock(void);
/* True while the main loop holds the writer side (for assertions). */
bool bdrv_graph_wrlock_held(void);

/* Number of reader holds in all threads (tests and assertions; racy by nature). */
long bdrv_graph_reader_count(void);

static inline void bdrv_graph_co_rdunlock_cleanup_(int *unused)
{
    (void)unused;
    bdrv_graph_co_rdunlock();
}

/* Holds the reader side until the enclosing scope ends. */
#define GRAPH_RDLOCK_GUARD()                                                                       \
    bdrv_graph_co_rdlock();                                                                        \
    int graph_rdlock_guard_ __attribute__((cleanup(bdrv_graph_co_rdunlock_cleanup_), unused)) = 0

#endif /* STRATA_GRAPH_LOCK_H */
