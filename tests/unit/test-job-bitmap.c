/*
 * Dirty bitmaps for jobs: the hierarchical bitmap against a plain model
 * (random sets, resets, searches, merges), sets from several threads
 * racing a resetting thread (the summaries must never hide a set bit),
 * and node bitmaps fed by the request path (writes, write-zeroes and
 * discards mark them; disabled and released bitmaps do not).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <string.h>

#include "aio/aio.h"
#include "block/block-backend.h"
#include "block/dirty-bitmap.h"
#include "block/hbitmap.h"

/* ---- HBitmap against a model ----------------------------------------------------------------- */

static int64_t model_next_set(const bool *m, uint64_t n, uint64_t from)
{
    for (uint64_t i = from; i < n; i++) {
        if (m[i]) {
            return i;
        }
    }
    return -1;
}

static void check_against_model(HBitmap *hb, const bool *m, uint64_t n, GRand *rand)
{
    uint64_t count = 0;
    for (uint64_t i = 0; i < n; i++) {
        count += m[i];
    }
    assert_int_equal(hbitmap_count(hb), count);
    assert_true(hbitmap_sanity(hb));
    for (int k = 0; k < 50; k++) {
        uint64_t from = g_rand_int_range(rand, 0, (gint32)n + 2);
        assert_int_equal(hbitmap_next_set(hb, from), from >= n ? -1 : model_next_set(m, n, from));
        uint64_t span = g_rand_int_range(rand, 0, 5000); /* MIN() evaluates twice */
        uint64_t end = MIN(n, from + span);
        int64_t clear = -1;
        for (uint64_t i = from; i < end; i++) {
            if (!m[i]) {
                clear = i;
                break;
            }
        }
        assert_int_equal(hbitmap_next_clear(hb, from, end), clear);
        if (from < n) {
            assert_int_equal(hbitmap_get(hb, from), m[from]);
        }
    }
}

static void test_hbitmap_matches_a_plain_bitmap(void **state)
{
    static const uint64_t sizes[] = {1, 63, 64, 65, 4095, 4096, 4097, 300000, 1 << 20};
    GRand *rand = g_rand_new_with_seed(7);
    for (size_t s = 0; s < G_N_ELEMENTS(sizes); s++) {
        uint64_t n = sizes[s];
        HBitmap *hb = hbitmap_new(n);
        bool *m = g_new0(bool, n);
        assert_int_equal(hbitmap_next_set(hb, 0), -1);
        for (int op = 0; op < 300; op++) {
            uint64_t start = g_rand_int_range(rand, 0, (gint32)n);
            uint64_t len = g_rand_int_range(rand, 1, (gint32)MIN(n, 9000u) + 1);
            bool set = g_rand_int_range(rand, 0, 3) != 0;
            (set ? hbitmap_set : hbitmap_reset)(hb, start, len);
            for (uint64_t i = start; i < MIN(n, start + len); i++) {
                m[i] = set;
            }
            if (op % 30 == 0) {
                check_against_model(hb, m, n, rand);
            }
        }
        check_against_model(hb, m, n, rand);
        /* Areas: runs of set items, cut at the limit. */
        uint64_t first, count, pos = 0, seen = 0;
        while (hbitmap_next_set_area(hb, pos, n, 100, &first, &count)) {
            assert_true(count >= 1 && count <= 100);
            for (uint64_t i = first; i < first + count; i++) {
                assert_true(m[i]);
            }
            assert_true(first + count == n || count == 100 || !m[first + count]);
            seen += count;
            pos = first + count;
        }
        assert_int_equal(seen, hbitmap_count(hb));
        hbitmap_reset_all(hb);
        assert_int_equal(hbitmap_count(hb), 0);
        assert_int_equal(hbitmap_next_set(hb, 0), -1);
        assert_true(hbitmap_sanity(hb));
        hbitmap_free(hb);
        g_free(m);
    }
    g_rand_free(rand);
}

static void test_hbitmap_merge_is_a_union(void **state)
{
    uint64_t n = 100000;
    HBitmap *a = hbitmap_new(n), *b = hbitmap_new(n);
    hbitmap_set(a, 10, 100);
    hbitmap_set(b, 50, 100);
    hbitmap_set(b, 99000, 1000);
    hbitmap_merge(a, b);
    assert_int_equal(hbitmap_count(a), 140 + 1000);
    assert_int_equal(hbitmap_next_set(a, 0), 10);
    assert_int_equal(hbitmap_next_clear(a, 10, n), 150);
    assert_int_equal(hbitmap_next_set(a, 150), 99000);
    assert_true(hbitmap_sanity(a));
    hbitmap_free(a);
    hbitmap_free(b);
}

/* ---- concurrency ----------------------------------------------------------------------------- */

typedef struct Racer {
    HBitmap *hb;
    uint64_t n;
    unsigned seed;
    _Atomic bool *stop;
    bool *final; /* setters: the items they set last (never reset afterwards) */
} Racer;

static void *setter_thread(void *opaque)
{
    Racer *r = opaque;
    GRand *rand = g_rand_new_with_seed(r->seed);
    while (!atomic_load(r->stop)) {
        uint64_t start = g_rand_int_range(rand, 0, (gint32)r->n);
        hbitmap_set(r->hb, start, g_rand_int_range(rand, 1, 200));
    }
    g_rand_free(rand);
    return NULL;
}

static void *resetter_thread(void *opaque)
{
    Racer *r = opaque;
    GRand *rand = g_rand_new_with_seed(r->seed);
    while (!atomic_load(r->stop)) {
        uint64_t start = g_rand_int_range(rand, 0, (gint32)r->n);
        hbitmap_reset(r->hb, start, g_rand_int_range(rand, 1, 5000));
    }
    g_rand_free(rand);
    return NULL;
}

static void test_hbitmap_sets_racing_resets_keep_summaries_right(void **state)
{
    uint64_t n = 1 << 18;
    HBitmap *hb = hbitmap_new(n);
    _Atomic bool stop = false;
    pthread_t th[4];
    Racer r[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (Racer){.hb = hb, .n = n, .seed = 100 + i, .stop = &stop};
        pthread_create(&th[i], NULL, i < 3 ? setter_thread : resetter_thread, &r[i]);
    }
    g_usleep(300 * 1000);
    atomic_store(&stop, true);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
    }
    /* Quiet now: every non-empty word is reachable and the count is exact. */
    assert_true(hbitmap_sanity(hb));
    uint64_t seen = 0;
    for (int64_t i = hbitmap_next_set(hb, 0); i >= 0; i = hbitmap_next_set(hb, i + 1)) {
        seen++;
    }
    assert_int_equal(seen, hbitmap_count(hb));
    hbitmap_free(hb);
}

/* ---- node bitmaps fed by the request path ---------------------------------------------------- */

static BlockBackend *open_null(uint64_t size)
{
    GError *err = NULL;
    GHashTable *opts = opts_new();
    g_autofree char *sz = g_strdup_printf("%" G_GUINT64_FORMAT, size);
    opts_set(opts, "driver", "null-co");
    opts_set(opts, "size", sz);
    BlockBackend *blk = blk_new_open(NULL, opts, BDRV_O_RDWR | BDRV_O_UNMAP, &err);
    assert_non_null(blk);
    return blk;
}

static void test_writes_through_a_node_mark_its_bitmaps(void **state)
{
    GError *err = NULL;
    BlockBackend *blk = open_null(16 << 20);
    BlockDriverState *bs = blk_bs(blk);
    BdrvDirtyBitmap *bm = bdrv_create_dirty_bitmap(bs, 65536, "b1", &err);
    BdrvDirtyBitmap *fine = bdrv_create_dirty_bitmap(bs, 4096, NULL, &err);
    assert_non_null(bm);
    assert_non_null(fine);
    assert_null(bdrv_create_dirty_bitmap(bs, 65536, "b1", &err));
    g_clear_error(&err);
    assert_null(bdrv_create_dirty_bitmap(bs, 1000, NULL, &err));
    g_clear_error(&err);
    assert_ptr_equal(bdrv_find_dirty_bitmap(bs, "b1"), bm);
    assert_ptr_equal(bdrv_dirty_bitmap_node(bm), bs);

    uint8_t buf[5000] = {0};
    assert_int_equal(blk_pwrite(blk, 70000, sizeof(buf), buf, 0), 0);
    /* 70000..74999 lies in granule 1 of 64 KiB, granules 17 and 18 of 4 KiB. */
    assert_int_equal(bdrv_get_dirty_count(bm), 65536);
    assert_int_equal(bdrv_get_dirty_count(fine), 2 * 4096);
    assert_true(bdrv_dirty_bitmap_get(bm, 65536));
    assert_false(bdrv_dirty_bitmap_get(bm, 0));
    assert_int_equal(bdrv_dirty_bitmap_next_dirty(fine, 0, INT64_MAX), 69632);
    assert_int_equal(bdrv_dirty_bitmap_next_zero(fine, 69632, INT64_MAX), 77824);

    assert_int_equal(blk_pwrite_zeroes(blk, 1 << 20, 200000, 0), 0);
    assert_int_equal(blk_pdiscard(blk, 8 << 20, 1 << 20), 0);
    int64_t off, bytes;
    assert_true(bdrv_dirty_bitmap_next_dirty_area(bm, 65537, INT64_MAX, 1 << 30, &off, &bytes));
    assert_int_equal(off, 65537);
    assert_int_equal(bytes, 65535);
    assert_true(bdrv_dirty_bitmap_next_dirty_area(bm, 131072, INT64_MAX, 1 << 30, &off, &bytes));
    assert_int_equal(off, 1 << 20);
    assert_int_equal(bytes, 4 * 65536);
    assert_true(bdrv_dirty_bitmap_next_dirty_area(bm, off + bytes, INT64_MAX, 65536, &off, &bytes));
    assert_int_equal(off, 8 << 20);
    assert_int_equal(bytes, 65536); /* cut at the limit */

    /* Disabled: writes leave it alone; the other one still follows them. */
    bdrv_dirty_bitmap_set_enabled(bm, false);
    assert_int_equal(blk_pwrite(blk, 12 << 20, 512, buf, 0), 0);
    assert_false(bdrv_dirty_bitmap_get(bm, 12 << 20));
    assert_true(bdrv_dirty_bitmap_get(fine, 12 << 20));
    bdrv_dirty_bitmap_set_enabled(bm, true);

    /* Merge across granularities: each fine granule marks the coarse one it is in. */
    BdrvDirtyBitmap *coarse = bdrv_dirty_bitmap_new(16 << 20, 1 << 20, &err);
    assert_true(bdrv_merge_dirty_bitmap(coarse, fine, &err));
    assert_true(bdrv_dirty_bitmap_get(coarse, 0));
    assert_true(bdrv_dirty_bitmap_get(coarse, 12 << 20));
    assert_int_equal(bdrv_get_dirty_count(coarse), 4 << 20);
    BdrvDirtyBitmap *other = bdrv_dirty_bitmap_new(1 << 20, 65536, &err);
    assert_false(bdrv_merge_dirty_bitmap(other, fine, &err));
    g_clear_error(&err);

    bdrv_reset_dirty_bitmap(bm, 0, 16 << 20);
    assert_int_equal(bdrv_get_dirty_count(bm), 0);
    bdrv_release_dirty_bitmap(fine);
    bdrv_release_dirty_bitmap(bm);
    assert_null(bs->dirty_bitmaps);
    assert_int_equal(blk_pwrite(blk, 0, 512, buf, 0), 0);
    bdrv_release_dirty_bitmap(coarse);
    bdrv_release_dirty_bitmap(other);
    blk_unref(blk);
}

static void test_dirty_count_of_a_short_last_granule(void **state)
{
    GError *err = NULL;
    BdrvDirtyBitmap *bm = bdrv_dirty_bitmap_new(100000, 65536, &err);
    bdrv_set_dirty_bitmap(bm, 99999, 1);
    assert_int_equal(bdrv_get_dirty_count(bm), 100000 - 65536);
    bdrv_set_dirty_bitmap(bm, 0, 1);
    assert_int_equal(bdrv_get_dirty_count(bm), 100000);
    assert_int_equal(bdrv_dirty_bitmap_next_zero(bm, 0, INT64_MAX), -1);
    bdrv_release_dirty_bitmap(bm);
}

int main(void)
{
    g_assert(aio_main_loop_init(NULL));
    bdrv_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hbitmap_matches_a_plain_bitmap),
        cmocka_unit_test(test_hbitmap_merge_is_a_union),
        cmocka_unit_test(test_hbitmap_sets_racing_resets_keep_summaries_right),
        cmocka_unit_test(test_writes_through_a_node_mark_its_bitmaps),
        cmocka_unit_test(test_dirty_count_of_a_short_last_granule),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
