/*
 * The qcow2 metadata caches' cleaning (the cache-clean-interval option):
 * tables nobody used since the previous pass are dropped, used, pinned
 * and dirty ones are kept, the timer does it by itself in the main loop
 * while IOThreads send requests, and the data read afterwards is what
 * qemu-io wrote.  Images are made by qemu-img / qemu-io at run time.
 */
#include "tests/unit/test-qcow2-util.h"

#include <inttypes.h>

/* 4 KiB clusters: one L2 table maps 2 MiB, so region i has L1 index i. */
#define REGION     (2 << 20)
#define N_REGIONS  8
#define IMG_SIZE   ((uint64_t)N_REGIONS * REGION)
#define DATA_BYTES 65536

/* Region i holds DATA_BYTES of byte 0x40 + i at its start, written by qemu-io. */
static char *make_image(Fixture *f)
{
    char *img = path_in(f, "c.qcow2");
    g_autoptr(GString) cmds = g_string_new("");
    for (int i = 0; i < N_REGIONS; i++) {
        g_string_append_printf(cmds, " -c 'write -P %d %d %d'", 0x40 + i, i * REGION, DATA_BYTES);
    }
    assert_int_equal(
        run(NULL, "qemu-img create -q -f qcow2 -o cluster_size=4k '%s' %" PRIu64, img, IMG_SIZE),
        0);
    assert_int_equal(run(NULL, "qemu-io -f qcow2 %s '%s'", cmds->str, img), 0);
    return img;
}

static BlockBackend *open_with(const char *img, const char *kv)
{
    GError *err = NULL;
    BlockBackend *blk = open_qcow2(img, BDRV_O_RDWR, kv, &err);
    if (!blk) {
        fail_msg("open %s with %s: %s", img, kv, err->message);
    }
    return blk;
}

static void assert_region_reads(BlockBackend *blk, int i)
{
    uint8_t buf[DATA_BYTES], want[DATA_BYTES];
    memset(want, 0x40 + i, sizeof(want));
    assert_int_equal(blk_pread(blk, (int64_t)i * REGION, sizeof(buf), buf, 0), 0);
    assert_memory_equal(buf, want, sizeof(buf));
}

static uint64_t l2_offset(BDRVQcow2State *s, int i)
{
    return s->l1_table[i] & L1E_OFFSET_MASK;
}

static void test_clean_drops_unused_and_keeps_used_tables(void **state)
{
    skip_without_qemu_img();
    g_autofree char *img = make_image(*state);
    BlockBackend *blk = open_with(img, "cache-clean-interval=0");
    BDRVQcow2State *s = qcow2_state(blk);
    assert_null(s->cache_clean_timer);

    for (int i = 0; i < N_REGIONS; i++) {
        assert_region_reads(blk, i);
    }
    assert_int_equal(qcow2_cache_nb_tables(s->l2_cache), N_REGIONS);
    /* Every table was used since the start: the first pass keeps them all. */
    assert_int_equal(qcow2_cache_clean_unused(s->l2_cache), 0);
    assert_region_reads(blk, 3);
    assert_int_equal(qcow2_cache_clean_unused(s->l2_cache), N_REGIONS - 1);
    assert_int_equal(qcow2_cache_nb_tables(s->l2_cache), 1);
    assert_true(qcow2_cache_has(s->l2_cache, l2_offset(s, 3)));
    assert_int_equal(qcow2_cache_nb_cleaned(s->l2_cache), N_REGIONS - 1);
    assert_true(qcow2_cache_sanity(s->l2_cache));

    /* An allocating write leaves a dirty refcount block: it must survive cleaning. */
    uint8_t buf[4096];
    memset(buf, 0x77, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 5 * REGION + DATA_BYTES, sizeof(buf), buf, 0), 0);
    int rb = qcow2_cache_nb_tables(s->refblock_cache);
    assert_true(rb > 0);
    qcow2_cache_clean_unused(s->refblock_cache);
    qcow2_cache_clean_unused(s->refblock_cache);
    if (qcow2_cache_nb_dirty(s->refblock_cache) > 0) {
        assert_int_equal(qcow2_cache_nb_tables(s->refblock_cache), rb);
    }
    assert_int_equal(blk_flush(blk), 0);
    assert_int_equal(qcow2_cache_nb_dirty(s->refblock_cache), 0);
    qcow2_cache_clean_unused(s->refblock_cache);
    assert_int_equal(qcow2_cache_nb_tables(s->refblock_cache), 0);
    assert_true(qcow2_cache_sanity(s->refblock_cache));

    /* The tables come back from the file as they were. */
    for (int i = 0; i < N_REGIONS; i++) {
        assert_region_reads(blk, i);
    }
    uint8_t back[4096];
    assert_int_equal(blk_pread(blk, 5 * REGION + DATA_BYTES, sizeof(back), back, 0), 0);
    assert_memory_equal(back, buf, sizeof(buf));
    blk_unref(blk);
    assert_qemu_img_check_clean(img);
    g_autofree char *out = NULL;
    assert_int_equal(
        run(&out, "qemu-io -f qcow2 -c 'read -P 0x77 %d 4096' '%s'", 5 * REGION + DATA_BYTES, img),
        0);
    assert_null(strstr(out, "fail"));
}

/* Polls the main loop until @s made @runs cleaning passes; false after 30 s. */
static bool wait_for_runs(BDRVQcow2State *s, uint64_t runs)
{
    int64_t deadline = aio_clock_ns() + 30 * 1000000000LL;
    while (s->cache_clean_runs < runs && aio_clock_ns() < deadline) {
        aio_poll(aio_main_context(), true);
    }
    return s->cache_clean_runs >= runs;
}

static void test_timer_empties_idle_caches(void **state)
{
    skip_without_qemu_img();
    g_autofree char *img = make_image(*state);
    BlockBackend *blk = open_with(img, "cache-clean-interval=1");
    BDRVQcow2State *s = qcow2_state(blk);
    assert_non_null(s->cache_clean_timer);

    for (int i = 0; i < N_REGIONS; i++) {
        assert_region_reads(blk, i);
    }
    assert_int_equal(qcow2_cache_nb_tables(s->l2_cache), N_REGIONS);
    /* The first pass clears the marks, the second drops what stayed idle. */
    assert_true(wait_for_runs(s, 2));
    assert_int_equal(qcow2_cache_nb_tables(s->l2_cache), 0);
    assert_int_equal(qcow2_cache_nb_cleaned(s->l2_cache), N_REGIONS);
    for (int i = 0; i < N_REGIONS; i++) {
        assert_region_reads(blk, i);
    }
    blk_unref(blk);
}

typedef struct Reader {
    BlockBackend *blk;
    _Atomic bool stop;
    _Atomic int done;
    int errors;
} Reader;

/* Reads every region in turn until told to stop; the tiny cache keeps evicting. */
static void coroutine_fn reader_co(void *opaque)
{
    Reader *r = opaque;
    uint8_t buf[4096];
    for (int n = 0; !atomic_load(&r->stop); n++) {
        int i = (n * 3) % N_REGIONS;
        if (blk_co_pread(r->blk, (int64_t)i * REGION + (n % 16) * 4096, sizeof(buf), buf, 0) < 0 ||
            buf[0] != 0x40 + i || buf[4095] != 0x40 + i) {
            r->errors++;
        }
        if (n % 64 == 63) {
            co_sleep_ns(1000000); /* let the cleaner take s->lock now and then */
        }
    }
    atomic_fetch_add(&r->done, 1);
    aio_wait_kick();
}

static void test_timer_is_safe_with_iothread_requests(void **state)
{
    skip_without_qemu_img();
    g_autofree char *img = make_image(*state);
    BlockBackend *blk = open_with(img, "cache-clean-interval=1,l2-cache-size=16k");
    BDRVQcow2State *s = qcow2_state(blk);
    GError *err = NULL;
    IOThread *t[2] = {iothread_create("cc-a", NULL, &err), iothread_create("cc-b", NULL, &err)};
    assert_non_null(t[0]);
    assert_non_null(t[1]);

    Reader r = {.blk = blk};
    for (int i = 0; i < 2; i++) {
        aio_co_enter(iothread_get_aio_context(t[i]), co_create(reader_co, &r));
    }
    bool ran = wait_for_runs(s, 3);
    atomic_store(&r.stop, true);
    AIO_WAIT_WHILE(atomic_load(&r.done) < 2);
    iothread_destroy(t[0]);
    iothread_destroy(t[1]);
    assert_true(ran);
    assert_int_equal(r.errors, 0);
    assert_true(qcow2_cache_sanity(s->l2_cache));
    for (int i = 0; i < N_REGIONS; i++) {
        assert_region_reads(blk, i);
    }
    blk_unref(blk);
}

static void test_interval_values(void **state)
{
    skip_without_qemu_img();
    g_autofree char *img = make_image(*state);
    static const char *const bad[] = {"-1", "4294967296", "abc", "1.5"};
    for (size_t i = 0; i < G_N_ELEMENTS(bad); i++) {
        g_autofree char *kv = g_strdup_printf("cache-clean-interval=%s", bad[i]);
        GError *err = NULL;
        assert_null(open_qcow2(img, BDRV_O_RDWR, kv, &err));
        assert_non_null(err);
        /* Out of range is worded as QEMU words it. */
        if (i < 2) {
            assert_string_equal(err->message, "Cache clean interval too big");
        }
        g_error_free(err);
    }
    /* QEMU's default: ten minutes. */
    BlockBackend *blk = open_with(img, NULL);
    BDRVQcow2State *s = qcow2_state(blk);
    assert_int_equal(s->cache_clean_interval, 600);
    assert_non_null(s->cache_clean_timer);
    blk_unref(blk);
    blk = open_with(img, "cache-clean-interval=4294967295");
    assert_int_equal(qcow2_state(blk)->cache_clean_interval, 4294967295u);
    blk_unref(blk);
}

static void test_reopen_changes_interval(void **state)
{
    skip_without_qemu_img();
    g_autofree char *img = make_image(*state);
    GError *err = NULL;
    BlockBackend *blk = open_qcow2(img, 0, "cache-clean-interval=5", &err);
    assert_non_null(blk);
    BlockDriverState *bs = blk_bs(blk);
    BDRVQcow2State *s = qcow2_state(blk);

    /* A plain read-write reopen keeps the interval. */
    assert_true(bdrv_reopen_set_read_only(bs, false, &err));
    assert_int_equal(s->cache_clean_interval, 5);
    assert_non_null(s->cache_clean_timer);

    /* The driver takes the option from a reopen's options, and applies it on commit. */
    BDRVReopenState st = {.bs = bs, .flags = bs->open_flags, .options = opts_new()};
    opts_set(st.options, "cache-clean-interval", "0");
    assert_true(bs->drv->reopen_prepare(&st, &err));
    assert_int_equal(s->cache_clean_interval, 5);
    bs->drv->reopen_commit(&st);
    assert_int_equal(s->cache_clean_interval, 0);
    assert_null(s->cache_clean_timer);

    opts_set(st.options, "cache-clean-interval", "-3");
    assert_false(bs->drv->reopen_prepare(&st, &err));
    assert_string_equal(err->message, "Cache clean interval too big");
    g_clear_error(&err);

    opts_set(st.options, "cache-clean-interval", "7");
    assert_true(bs->drv->reopen_prepare(&st, &err));
    bs->drv->reopen_abort(&st);
    assert_int_equal(s->cache_clean_interval, 0);
    g_hash_table_unref(st.options);
    assert_region_reads(blk, 2);
    blk_unref(blk);
}

int main(void)
{
    qcow2_test_init();
    const struct CMUnitTest tests[] = {
        QCOW2_TEST(test_clean_drops_unused_and_keeps_used_tables),
        QCOW2_TEST(test_timer_empties_idle_caches),
        QCOW2_TEST(test_timer_is_safe_with_iothread_requests),
        QCOW2_TEST(test_interval_values),
        QCOW2_TEST(test_reopen_changes_interval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
