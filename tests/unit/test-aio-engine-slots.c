/*
 * Tests of the per-AioContext engine slots.  The table only uses a context
 * as a key, so these tests need no running event loop: fake context
 * addresses stand in for real ones.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <glib.h>

#include "aio/aio-engine-slots.h"

static char fake_ctx_storage[4];
#define FAKE_CTX(i) ((AioContext *)&fake_ctx_storage[(i)])

static int freed_count;
static void *last_freed;

static void count_free(void *engine)
{
    freed_count++;
    last_freed = engine;
}

static int teardown(void **state)
{
    for (int i = 0; i < 4; i++) {
        aio_context_free_engines(FAKE_CTX(i));
    }
    freed_count = 0;
    last_freed = NULL;
    return 0;
}

static void test_unknown_context_has_no_engine(void **state)
{
    assert_null(aio_context_get_engine(FAKE_CTX(0), AIO_ENGINE_SLOT_LINUX_AIO));
    assert_null(aio_context_get_engine(FAKE_CTX(0), AIO_ENGINE_SLOT_IO_URING));
}

static void test_stored_engine_is_found_in_its_slot_only(void **state)
{
    int engine;
    assert_true(aio_context_set_engine(FAKE_CTX(0), AIO_ENGINE_SLOT_IO_URING, &engine, count_free));
    assert_ptr_equal(aio_context_get_engine(FAKE_CTX(0), AIO_ENGINE_SLOT_IO_URING), &engine);
    assert_null(aio_context_get_engine(FAKE_CTX(0), AIO_ENGINE_SLOT_LINUX_AIO));
    assert_null(aio_context_get_engine(FAKE_CTX(1), AIO_ENGINE_SLOT_IO_URING));
}

static void test_occupied_slot_refuses_a_second_engine(void **state)
{
    int first, second;
    assert_true(aio_context_set_engine(FAKE_CTX(0), AIO_ENGINE_SLOT_LINUX_AIO, &first, count_free));
    assert_false(
        aio_context_set_engine(FAKE_CTX(0), AIO_ENGINE_SLOT_LINUX_AIO, &second, count_free));
    assert_ptr_equal(aio_context_get_engine(FAKE_CTX(0), AIO_ENGINE_SLOT_LINUX_AIO), &first);
}

static void test_free_releases_every_engine_of_the_context_once(void **state)
{
    int a, b, other;
    aio_context_set_engine(FAKE_CTX(0), AIO_ENGINE_SLOT_LINUX_AIO, &a, count_free);
    aio_context_set_engine(FAKE_CTX(0), AIO_ENGINE_SLOT_IO_URING, &b, count_free);
    aio_context_set_engine(FAKE_CTX(1), AIO_ENGINE_SLOT_IO_URING, &other, count_free);

    aio_context_free_engines(FAKE_CTX(0));
    assert_int_equal(freed_count, 2);
    assert_null(aio_context_get_engine(FAKE_CTX(0), AIO_ENGINE_SLOT_LINUX_AIO));
    assert_ptr_equal(aio_context_get_engine(FAKE_CTX(1), AIO_ENGINE_SLOT_IO_URING), &other);

    aio_context_free_engines(FAKE_CTX(0)); /* nothing left: no call */
    assert_int_equal(freed_count, 2);
}

/* Guards against the per-thread cache returning a freed engine. */
static void test_lookup_after_free_and_reinstall_sees_the_new_engine(void **state)
{
    int old_engine, new_engine;
    aio_context_set_engine(FAKE_CTX(2), AIO_ENGINE_SLOT_IO_URING, &old_engine, count_free);
    assert_ptr_equal(aio_context_get_engine(FAKE_CTX(2), AIO_ENGINE_SLOT_IO_URING), &old_engine);

    aio_context_free_engines(FAKE_CTX(2));
    assert_ptr_equal(last_freed, &old_engine);
    assert_null(aio_context_get_engine(FAKE_CTX(2), AIO_ENGINE_SLOT_IO_URING));

    aio_context_set_engine(FAKE_CTX(2), AIO_ENGINE_SLOT_IO_URING, &new_engine, count_free);
    assert_ptr_equal(aio_context_get_engine(FAKE_CTX(2), AIO_ENGINE_SLOT_IO_URING), &new_engine);
}

typedef struct Lookup {
    AioContext *ctx;
    void *seen[200];
} Lookup;

static gpointer lookup_thread(gpointer opaque)
{
    Lookup *l = opaque;
    for (int i = 0; i < 200; i++) {
        l->seen[i] = aio_context_get_engine(l->ctx, AIO_ENGINE_SLOT_LINUX_AIO);
        g_thread_yield();
    }
    return NULL;
}

static void test_other_threads_see_an_engine_installed_while_they_look(void **state)
{
    int engine;
    Lookup lookups[2] = {{.ctx = FAKE_CTX(3)}, {.ctx = FAKE_CTX(3)}};
    GThread *threads[2];

    for (int i = 0; i < 2; i++) {
        threads[i] = g_thread_new("slot-lookup", lookup_thread, &lookups[i]);
    }
    aio_context_set_engine(FAKE_CTX(3), AIO_ENGINE_SLOT_LINUX_AIO, &engine, count_free);
    for (int i = 0; i < 2; i++) {
        g_thread_join(threads[i]);
    }
    /* Each thread sees NULL, then the engine, and never anything else. */
    for (int i = 0; i < 2; i++) {
        bool found = false;
        for (int j = 0; j < 200; j++) {
            if (lookups[i].seen[j]) {
                assert_ptr_equal(lookups[i].seen[j], &engine);
                found = true;
            } else {
                assert_false(found);
            }
        }
    }
    assert_ptr_equal(aio_context_get_engine(FAKE_CTX(3), AIO_ENGINE_SLOT_LINUX_AIO), &engine);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_unknown_context_has_no_engine, teardown),
        cmocka_unit_test_teardown(test_stored_engine_is_found_in_its_slot_only, teardown),
        cmocka_unit_test_teardown(test_occupied_slot_refuses_a_second_engine, teardown),
        cmocka_unit_test_teardown(test_free_releases_every_engine_of_the_context_once, teardown),
        cmocka_unit_test_teardown(test_lookup_after_free_and_reinstall_sees_the_new_engine,
                                  teardown),
        cmocka_unit_test_teardown(test_other_threads_see_an_engine_installed_while_they_look,
                                  teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
