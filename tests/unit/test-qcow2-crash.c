/*
 * qcow2 crash consistency by replay.  A random guest workload runs on a
 * qcow2 image held by the recording "memimg" protocol (mem-image.h), which
 * logs every write and flush that reaches the file.  Then, for flush
 * points of that log (bounded by count), the test rebuilds what a disk
 * could hold after a power cut there: every write up to the flush, plus a
 * random subset of the writes issued after it (in random order, some torn
 * at 512-byte sector granularity: unflushed writes may reach the disk in
 * any order, and partly).  Each state must
 *  - pass the real `qemu-img check` with at most leaked clusters,
 *  - read back every byte the guest had written and flushed, except those
 *    the guest was rewriting when the power went,
 *  - be repaired by `qemu-img check -r all` to a clean image.
 *
 * STRATA_CRASH_STATES sets the number of states per image variant
 * (default 16); STRATA_CRASH_SEED the seed (default fixed, printed).
 */
#include "tests/unit/mem-image.h"
#include "tests/unit/test-qcow2-util.h"

#define DISK (2 * 1024 * 1024)

/* A guest operation, for the durability model. */
typedef struct GuestFlush {
    size_t log_pos;    /* log entries that existed when the guest flush returned */
    uint8_t *model;    /* guest content at that flush */
    uint8_t *inflight; /* bytes the guest changed between this flush and the next */
} GuestFlush;

typedef struct Run {
    GArray *flushes; /* GuestFlush; entry 0 is the start (log_pos 0, initial model) */
    uint8_t *initial_file;
    size_t initial_len;
    MemImage *mem;
} Run;

/* Runs @steps random guest operations on memimg:NAME, flushing now and then. */
static void guest_workload(Run *r, const char *name, GRand *rand, int steps, uint64_t unit)
{
    g_autofree char *fname = g_strdup_printf("memimg:%s", name);
    GError *err = NULL;
    GHashTable *o = opts_new();
    opts_set(o, "driver", "qcow2");
    BlockBackend *blk = blk_new_open(fname, o, BDRV_O_RDWR | BDRV_O_UNMAP, &err);
    if (!blk) {
        fail_msg("open: %s", err->message);
    }
    uint8_t *model = g_malloc0(DISK);
    GuestFlush start = {0, g_memdup2(model, DISK), g_malloc0(DISK)};
    g_array_append_val(r->flushes, start);

    r->mem->record = true;
    for (int i = 0; i < steps; i++) {
        GuestFlush *last = &g_array_index(r->flushes, GuestFlush, r->flushes->len - 1);
        int kind = g_rand_int_range(rand, 0, 10);
        uint64_t off, len;
        if (g_rand_boolean(rand)) {
            off = g_rand_int_range(rand, 0, DISK);
            len = g_rand_int_range(rand, 1, (gint32)MIN(DISK - off, 3 * unit) + 1);
        } else {
            off = g_rand_int_range(rand, 0, DISK / unit) * unit;
            len = MIN(g_rand_int_range(rand, 1, 4) * unit, DISK - off);
        }
        if (kind < 2 || i == steps - 1) {
            assert_int_equal(blk_flush(blk), 0);
            GuestFlush f = {r->mem->log->len, g_memdup2(model, DISK), g_malloc0(DISK)};
            g_array_append_val(r->flushes, f);
        } else if (kind < 8) {
            uint8_t *buf = g_malloc(len);
            uint8_t pat = (uint8_t)g_rand_int(rand);
            for (uint64_t j = 0; j < len; j++) {
                buf[j] = pat + (uint8_t)((off + j) >> 9);
            }
            assert_int_equal(blk_pwrite(blk, off, len, buf, 0), 0);
            memcpy(model + off, buf, len);
            memset(last->inflight + off, 1, len);
            g_free(buf);
        } else if (kind < 9) {
            assert_int_equal(blk_pwrite_zeroes(blk, off, len, BDRV_REQ_MAY_UNMAP), 0);
            memset(model + off, 0, len);
            memset(last->inflight + off, 1, len);
        } else {
            /* Discard: what the range reads afterwards is what the model takes. */
            assert_int_equal(blk_pdiscard(blk, off, len), 0);
            assert_int_equal(blk_pread(blk, off, len, model + off, 0), 0);
            memset(last->inflight + off, 1, len);
        }
    }
    r->mem->record = false;
    blk_unref(blk);
    g_free(model);
}

/* The last guest flush whose log position is at most @pos. */
static GuestFlush *durable_at(Run *r, size_t pos)
{
    GuestFlush *best = &g_array_index(r->flushes, GuestFlush, 0);
    for (guint i = 0; i < r->flushes->len; i++) {
        GuestFlush *f = &g_array_index(r->flushes, GuestFlush, i);
        if (f->log_pos <= pos) {
            best = f;
        }
    }
    return best;
}

static void apply(GByteArray *img, uint64_t off, const uint8_t *data, uint64_t len)
{
    if (off + len > img->len) {
        uint64_t old = img->len;
        g_byte_array_set_size(img, off + len);
        memset(img->data + old, 0, off + len - old);
    }
    memcpy(img->data + off, data, len);
}

/*
 * Builds the file after a crash just after log entry @flush_idx (a flush):
 * everything before it, then a random subset of the writes up to the next
 * flush, shuffled, some torn.
 */
static GByteArray *crash_state(Run *r, guint flush_idx, GRand *rand)
{
    GArray *log = r->mem->log;
    GByteArray *img = g_byte_array_new();
    g_byte_array_append(img, r->initial_file, r->initial_len);
    for (guint i = 0; i <= flush_idx; i++) {
        MemLogEntry *e = &g_array_index(log, MemLogEntry, i);
        if (e->data) {
            apply(img, e->offset, e->data, e->bytes);
        }
    }
    GPtrArray *window = g_ptr_array_new();
    for (guint i = flush_idx + 1; i < log->len; i++) {
        MemLogEntry *e = &g_array_index(log, MemLogEntry, i);
        if (!e->data) {
            break;
        }
        g_ptr_array_add(window, e);
    }
    /* Issued before the cut: a prefix; reached the disk: a subset, any order. */
    guint issued = window->len ? g_rand_int_range(rand, 0, window->len + 1) : 0;
    for (guint i = issued; i > 1; i--) {
        guint j = g_rand_int_range(rand, 0, i);
        gpointer t = window->pdata[i - 1];
        window->pdata[i - 1] = window->pdata[j];
        window->pdata[j] = t;
    }
    for (guint i = 0; i < issued; i++) {
        MemLogEntry *e = window->pdata[i];
        int fate = g_rand_int_range(rand, 0, 4);
        if (fate == 0) {
            continue; /* lost */
        }
        if (fate == 1 && e->bytes > 512) {
            /* Torn: some of its sectors only. */
            for (uint64_t s = 0; s < e->bytes; s += 512) {
                if (g_rand_boolean(rand)) {
                    apply(img, e->offset + s, e->data + s, MIN(512, e->bytes - s));
                }
            }
            continue;
        }
        apply(img, e->offset, e->data, e->bytes);
    }
    g_ptr_array_free(window, true);
    return img;
}

static void check_state(Fixture *f, Run *r, GByteArray *img, guint flush_idx, const char *what)
{
    g_autofree char *path = path_in(f, "crash.qcow2");
    g_autofree char *out = NULL;
    GError *err = NULL;

    assert_true(g_file_set_contents(path, (const char *)img->data, img->len, NULL));
    int code = run(&out, "qemu-img check '%s'", path);
    if (code != 0 && code != 3) {
        fail_msg("%s: qemu-img check exit %d:\n%s", what, code, out);
    }

    GuestFlush *g = durable_at(r, flush_idx + 1);
    BlockBackend *blk = open_qcow2(path, 0, NULL, &err);
    if (!blk) {
        fail_msg("%s: open: %s", what, err->message);
    }
    uint8_t *buf = g_malloc(DISK);
    assert_int_equal(blk_pread(blk, 0, DISK, buf, 0), 0);
    for (uint64_t b = 0; b < DISK; b++) {
        if (!g->inflight[b] && buf[b] != g->model[b]) {
            fail_msg("%s: flushed byte 0x%" G_GINT64_MODIFIER "x reads 0x%02x, expected 0x%02x",
                     what, b, buf[b], g->model[b]);
        }
    }
    g_free(buf);
    blk_unref(blk);

    g_free(out);
    code = run(&out, "qemu-img check -r all '%s' && qemu-img check '%s'", path, path);
    if (code != 0) {
        fail_msg("%s: not repaired (exit %d):\n%s", what, code, out);
    }
}

static void crash_case(Fixture *f, const char *create_opts, uint64_t unit)
{
    skip_without_qemu_img();
    const char *env = g_getenv("STRATA_CRASH_STATES");
    int states = env ? atoi(env) : 16;
    env = g_getenv("STRATA_CRASH_SEED");
    guint32 seed = env ? (guint32)strtoul(env, NULL, 0) : 0x5eed;
    GRand *rand = g_rand_new_with_seed(seed);
    g_autofree char *path = path_in(f, "base.qcow2");
    g_autofree char *out = NULL;
    Run r = {g_array_new(false, false, sizeof(GuestFlush))};

    if (run(&out, "qemu-img create -q -f qcow2 -o %s '%s' %d", create_opts, path, DISK) != 0) {
        fail_msg("qemu-img create: %s", out);
    }
    gchar *data;
    assert_true(g_file_get_contents(path, &data, &r.initial_len, NULL));
    r.initial_file = (uint8_t *)data;
    r.mem = mem_image_new("crash", r.initial_file, r.initial_len);

    guest_workload(&r, "crash", rand, 80, unit);

    GArray *flush_at = g_array_new(false, false, sizeof(guint));
    for (guint i = 0; i < r.mem->log->len; i++) {
        if (!g_array_index(r.mem->log, MemLogEntry, i).data) {
            g_array_append_val(flush_at, i);
        }
    }
    print_message("%s: %u log entries, %u flushes, %u guest flushes, %d states, seed 0x%x\n",
                  create_opts, r.mem->log->len, flush_at->len, r.flushes->len - 1, states, seed);
    assert_true(flush_at->len > 0);
    for (int s = 0; s < states; s++) {
        /* Spread over the whole log, then random. */
        guint k = s < (int)flush_at->len && states >= (int)flush_at->len
                      ? (guint)s
                      : (guint)((uint64_t)s * flush_at->len / states);
        guint idx = g_array_index(flush_at, guint, MIN(k, flush_at->len - 1));
        g_autofree char *what =
            g_strdup_printf("%s, state %d (crash after log entry %u)", create_opts, s, idx);
        GByteArray *img = crash_state(&r, idx, rand);
        check_state(f, &r, img, idx, what);
        g_byte_array_free(img, true);
    }

    for (guint i = 0; i < r.flushes->len; i++) {
        GuestFlush *g = &g_array_index(r.flushes, GuestFlush, i);
        g_free(g->model);
        g_free(g->inflight);
    }
    g_array_free(r.flushes, true);
    g_array_free(flush_at, true);
    mem_image_remove("crash");
    g_free(r.initial_file);
    g_rand_free(rand);
}

static void test_crash_states_of_a_4k_cluster_image_are_consistent(void **state)
{
    crash_case(*state, "cluster_size=4k", 4096);
}

static void test_crash_states_of_a_512_byte_cluster_image_are_consistent(void **state)
{
    crash_case(*state, "cluster_size=512", 512);
}

static void test_crash_states_of_an_extended_l2_image_are_consistent(void **state)
{
    crash_case(*state, "cluster_size=64k,extended_l2=on", 2048);
}

static void test_crash_states_of_a_v2_image_are_consistent(void **state)
{
    crash_case(*state, "compat=0.10,cluster_size=1k", 1024);
}

int main(void)
{
    if (!g_getenv("TMPDIR") && g_file_test("/dev/shm", G_FILE_TEST_IS_DIR)) {
        g_setenv("TMPDIR", "/dev/shm", true);
    }
    qcow2_test_init();
    bdrv_register(&mem_image_driver);
    const struct CMUnitTest tests[] = {
        QCOW2_TEST(test_crash_states_of_a_4k_cluster_image_are_consistent),
        QCOW2_TEST(test_crash_states_of_a_512_byte_cluster_image_are_consistent),
        QCOW2_TEST(test_crash_states_of_an_extended_l2_image_are_consistent),
        QCOW2_TEST(test_crash_states_of_a_v2_image_are_consistent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
