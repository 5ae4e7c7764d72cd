/*
 * Tests of the `raw` format over the `file` protocol through the block
 * core: the offset/size window, resizing rules, engines selected with
 * file.aio, and image locking of a whole opened graph against the real
 * qemu-io (those tests skip, with a message, when it is not installed).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aio/aio-engine-slots.h"
#include "aio/aio.h"
#include "block/block-backend.h"
#include "block/block-int.h"
#include "drivers/raw/raw-drivers.h"

#define FILE_SIZE (1 << 20)

typedef struct Fixture {
    char *path;
    uint8_t *data; /* what the file holds */
} Fixture;

static int fixture_setup(void **state)
{
    Fixture *f = g_new0(Fixture, 1);
    int fd = g_file_open_tmp("strata-raw-XXXXXX", &f->path, NULL);
    assert_true(fd >= 0);
    f->data = g_malloc(FILE_SIZE);
    for (int i = 0; i < FILE_SIZE; i++) {
        f->data[i] = (uint8_t)(i * 13 + (i >> 9));
    }
    assert_int_equal(pwrite(fd, f->data, FILE_SIZE, 0), FILE_SIZE);
    close(fd);
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    Fixture *f = *state;
    aio_context_free_engines(aio_main_context());
    g_unlink(f->path);
    g_free(f->path);
    g_free(f->data);
    g_free(f);
    return 0;
}

static char *test_parent_desc(BdrvChild *c)
{
    return g_strdup("test 'raw-format'");
}

static const BdrvChildClass test_parent = {
    .parent_is_bds = false,
    .get_parent_desc = test_parent_desc,
};

/* An opened graph with a root edge holding @perm and sharing @shared. */
typedef struct Graph {
    BlockDriverState *bs;
    BdrvChild *root;
} Graph;

/* Opens "driver=raw,filename=PATH[,EXTRA]"; false (with @errp) when open or attach fails. */
static bool graph_open(Graph *g, const char *path, const char *extra, int flags, uint64_t perm,
                       uint64_t shared, GError **errp)
{
    GHashTable *opts = opts_new();
    opts_set(opts, "driver", "raw");
    if (extra) {
        assert_true(opts_parse_kv(opts, extra, NULL, NULL));
    }
    g->bs = bdrv_open(path, opts, flags, errp);
    if (!g->bs) {
        return false;
    }
    /* The root edge takes over our reference (and drops it on failure). */
    g->root = bdrv_root_attach_child(g->bs, "root", &test_parent, BDRV_CHILD_IMAGE, perm, shared,
                                     NULL, errp);
    if (!g->root) {
        g->bs = NULL;
        return false;
    }
    return true;
}

static void graph_close(Graph *g)
{
    bdrv_root_unref_child(g->root);
    g->root = NULL;
    g->bs = NULL;
}

#define READER_PERM BLK_PERM_CONSISTENT_READ
#define WRITER_PERM (BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE)
/* A guest device: it writes and lets nobody else write or resize. */
#define DEVICE_SHARED (BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE_UNCHANGED)

static void test_offset_and_size_make_a_window_on_the_file(void **state)
{
    Fixture *f = *state;
    Graph g;
    uint8_t buf[8192];

    assert_true(graph_open(&g, f->path, "offset=64k,size=128k", BDRV_O_RDWR, WRITER_PERM,
                           BLK_PERM_ALL, NULL));
    assert_int_equal(bdrv_getlength(g.bs), 128 << 10);

    assert_int_equal(bdrv_pread(g.root, 0, 4096, buf, 0), 0);
    assert_memory_equal(buf, f->data + (64 << 10), 4096);
    assert_int_equal(bdrv_pread(g.root, (128 << 10) - 4096, 4096, buf, 0), 0);
    assert_memory_equal(buf, f->data + (192 << 10) - 4096, 4096);

    memset(buf, 0xa5, sizeof(buf));
    assert_int_equal(bdrv_pwrite(g.root, 4096, 8192, buf, 0), 0);
    assert_int_equal(bdrv_flush(g.bs), 0);
    /* Outside the window nothing moves; reads past its end fail. */
    assert_true(bdrv_pread(g.root, 128 << 10, 512, buf, 0) < 0);
    graph_close(&g);

    int fd = open(f->path, O_RDONLY);
    uint8_t check[8192];
    assert_int_equal(pread(fd, check, 8192, (64 << 10) + 4096), 8192);
    for (int i = 0; i < 8192; i++) {
        assert_int_equal(check[i], 0xa5);
    }
    assert_int_equal(pread(fd, check, 4096, 0), 4096);
    assert_memory_equal(check, f->data, 4096);
    close(fd);
}

static void test_windows_outside_the_file_are_refused(void **state)
{
    Fixture *f = *state;
    Graph g;
    GError *err = NULL;

    assert_false(graph_open(&g, f->path, "offset=2M", 0, READER_PERM, BLK_PERM_ALL, &err));
    assert_non_null(strstr(err->message, "offset"));
    g_clear_error(&err);
    assert_false(
        graph_open(&g, f->path, "offset=512k,size=768k", 0, READER_PERM, BLK_PERM_ALL, &err));
    assert_non_null(strstr(err->message, "exceed"));
    g_clear_error(&err);
}

static void test_fixed_size_windows_cannot_be_resized_but_plain_raw_can(void **state)
{
    Fixture *f = *state;
    Graph g;
    GError *err = NULL;
    uint64_t perm = WRITER_PERM | BLK_PERM_RESIZE;

    assert_true(graph_open(&g, f->path, "size=512k", BDRV_O_RDWR, perm, BLK_PERM_ALL, NULL));
    assert_true(bdrv_truncate(g.root, 256 << 10, true, PREALLOC_MODE_OFF, 0, &err) < 0);
    assert_non_null(strstr(err->message, "fixed"));
    g_clear_error(&err);
    graph_close(&g);

    assert_true(graph_open(&g, f->path, "offset=4k", BDRV_O_RDWR, perm, BLK_PERM_ALL, NULL));
    assert_int_equal(bdrv_getlength(g.bs), FILE_SIZE - 4096);
    assert_int_equal(bdrv_truncate(g.root, 2 << 20, true, PREALLOC_MODE_OFF, 0, NULL), 0);
    assert_int_equal(bdrv_getlength(g.bs), 2 << 20);
    graph_close(&g);

    GStatBuf st;
    assert_int_equal(g_stat(f->path, &st), 0);
    assert_int_equal(st.st_size, (2 << 20) + 4096);
}

static void test_each_engine_serves_the_whole_graph(void **state)
{
    Fixture *f = *state;
    static const char *const cases[] = {
        "file.aio=threads",
        "file.aio=io_uring",
        "file.aio=native,file.cache.direct=on",
        "file.aio=io_uring,file.cache.direct=on",
    };
    uint8_t *buf = NULL;
    assert_int_equal(posix_memalign((void **)&buf, 4096, 65536), 0);

    for (size_t k = 0; k < G_N_ELEMENTS(cases); k++) {
        Graph g;
        GError *err = NULL;
        bool ok = graph_open(&g, f->path, cases[k], BDRV_O_RDWR, WRITER_PERM, BLK_PERM_ALL, &err);
        if (!ok) {
            print_message("%s: %s\n", cases[k], err->message);
        }
        assert_true(ok);
        assert_int_equal(bdrv_pread(g.root, 65536, 65536, buf, 0), 0);
        assert_memory_equal(buf, f->data + 65536, 65536);
        memset(buf, (int)k + 1, 65536);
        assert_int_equal(bdrv_pwrite(g.root, 0, 65536, buf, 0), 0);
        assert_int_equal(bdrv_pread(g.root, 0, 65536, buf, 0), 0);
        assert_int_equal(buf[0], k + 1);
        assert_int_equal(buf[65535], k + 1);
        assert_int_equal(bdrv_flush(g.bs), 0);
        graph_close(&g);
    }
    free(buf);
}

/* ---- image locking of a whole graph against qemu-io ----------------------- */

static bool have_qemu_io(void)
{
    g_autofree char *path = g_find_program_in_path("qemu-io");
    if (!path) {
        print_message("skipped: qemu-io is not installed\n");
    }
    return path != NULL;
}

/* Runs qemu-io -c CMD on @path; returns its exit status and its output. */
static int run_qemu_io(const char *fmt, const char *path, const char *cmd, char **output)
{
    const char *argv[] = {"qemu-io", "-f", fmt, "-c", cmd, path, NULL};
    g_autofree char *out = NULL, *err = NULL;
    int status = -1;
    assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err,
                             &status, NULL));
    *output = g_strconcat(out, err, NULL);
    return status;
}

static void test_qemu_io_cannot_write_an_image_strata_writes(void **state)
{
    Fixture *f = *state;
    Graph g;
    g_autofree char *out = NULL, *out2 = NULL;

    if (!have_qemu_io()) {
        skip();
    }
    assert_true(graph_open(&g, f->path, NULL, BDRV_O_RDWR, WRITER_PERM, DEVICE_SHARED, NULL));
    assert_int_not_equal(run_qemu_io("raw", f->path, "write 0 4k", &out), 0);
    assert_non_null(strstr(out, "Failed to get \"write\" lock"));
    graph_close(&g);

    assert_int_equal(run_qemu_io("raw", f->path, "write 0 4k", &out2), 0);
}

static void test_strata_cannot_write_an_image_qemu_io_writes(void **state)
{
    Fixture *f = *state;
    GError *err = NULL;
    g_autofree char *qcow2 = g_strconcat(f->path, ".qcow2", NULL);

    if (!have_qemu_io()) {
        skip();
    }
    const char *create[] = {"qemu-img", "create", "-q", "-f", "qcow2", qcow2, "1M", NULL};
    int status = -1;
    assert_true(g_spawn_sync(NULL, (char **)create, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL,
                             NULL, &status, NULL));
    assert_int_equal(status, 0);

    /* qemu-io keeps the qcow2 image open for writing until its input ends. */
    const char *argv[] = {"qemu-io", "-f", "qcow2", qcow2, NULL};
    GPid pid;
    int in;
    int devnull = open("/dev/null", O_WRONLY);
    assert_true(g_spawn_async_with_pipes_and_fds(
        NULL, argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, -1, devnull,
        devnull, NULL, NULL, 0, &pid, &in, NULL, NULL, NULL));
    close(devnull);

    /* Retry while qemu-io starts: the open succeeds until it holds its locks. */
    Graph g;
    bool opened = true;
    for (int i = 0; i < 500 && opened; i++) {
        opened = graph_open(&g, qcow2, NULL, BDRV_O_RDWR, WRITER_PERM, BLK_PERM_ALL, &err);
        if (opened) {
            graph_close(&g);
            g_usleep(10 * 1000);
        }
    }
    assert_false(opened);
    assert_non_null(strstr(err->message, "Failed to get \"write\" lock"));
    g_clear_error(&err);
    /* A reader that wants the image stable is refused, unless it forces sharing (-U). */
    assert_false(graph_open(&g, qcow2, NULL, 0, READER_PERM, DEVICE_SHARED, &err));
    assert_non_null(strstr(err->message, "Failed to get shared \"write\" lock"));
    g_clear_error(&err);
    assert_true(graph_open(&g, qcow2, "force-share=on", 0, READER_PERM, DEVICE_SHARED, NULL));
    graph_close(&g);

    close(in);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    g_spawn_close_pid(pid);
    assert_true(graph_open(&g, qcow2, NULL, BDRV_O_RDWR, WRITER_PERM, BLK_PERM_ALL, NULL));
    graph_close(&g);
    g_unlink(qcow2);
}

static void test_reopen_read_write_then_writing_locks_qemu_io_out(void **state)
{
    Fixture *f = *state;
    Graph g;
    g_autofree char *out = NULL, *out2 = NULL;
    uint8_t buf[4096];

    assert_true(graph_open(&g, f->path, NULL, 0, READER_PERM, BLK_PERM_ALL, NULL));
    memset(buf, 0x77, sizeof(buf));
    assert_true(bdrv_pwrite(g.root, 0, sizeof(buf), buf, 0) < 0);

    assert_true(bdrv_reopen_set_read_only(g.bs, false, NULL));
    assert_true(bdrv_child_try_set_perm(g.root, WRITER_PERM, DEVICE_SHARED, NULL));
    assert_int_equal(bdrv_pwrite(g.root, 0, sizeof(buf), buf, 0), 0);
    if (have_qemu_io()) {
        assert_int_not_equal(run_qemu_io("raw", f->path, "write 0 4k", &out), 0);
        assert_non_null(strstr(out, "Failed to get \"write\" lock"));
    }

    /* And back: read-only again, nobody is kept out any more. */
    assert_true(bdrv_child_try_set_perm(g.root, READER_PERM, BLK_PERM_ALL, NULL));
    assert_true(bdrv_reopen_set_read_only(g.bs, true, NULL));
    assert_true(bdrv_pwrite(g.root, 0, sizeof(buf), buf, 0) < 0);
    if (have_qemu_io()) {
        assert_int_equal(run_qemu_io("raw", f->path, "write 0 4k", &out2), 0);
    }
    graph_close(&g);
}

/* What strata-io does: a BlockBackend opened for writing. */
static void test_a_block_backend_writer_locks_qemu_io_out_until_closed(void **state)
{
    Fixture *f = *state;
    GError *err = NULL;
    g_autofree char *out = NULL, *out2 = NULL;
    uint8_t buf[4096];

    if (!have_qemu_io()) {
        skip();
    }
    GHashTable *opts = opts_new();
    opts_set(opts, "driver", "raw");
    BlockBackend *blk = blk_new_open(f->path, opts, BDRV_O_RDWR, &err);
    assert_non_null(blk);
    memset(buf, 0x3c, sizeof(buf));
    assert_int_equal(blk_pwrite(blk, 0, sizeof(buf), buf, 0), 0);

    assert_int_not_equal(run_qemu_io("raw", f->path, "write 0 4k", &out), 0);
    assert_non_null(strstr(out, "Failed to get \"write\" lock"));
    assert_non_null(strstr(out, "Is another process using the image"));

    blk_unref(blk);
    assert_int_equal(run_qemu_io("raw", f->path, "write 0 4k", &out2), 0);
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)

int main(void)
{
    GError *err = NULL;
    if (!aio_main_loop_init(&err)) {
        fprintf(stderr, "aio_main_loop_init: %s\n", err->message);
        return 1;
    }
    bdrv_register(&bdrv_file);
    bdrv_register(&bdrv_raw);
    const struct CMUnitTest tests[] = {
        T(test_offset_and_size_make_a_window_on_the_file),
        T(test_windows_outside_the_file_are_refused),
        T(test_fixed_size_windows_cannot_be_resized_but_plain_raw_can),
        T(test_each_engine_serves_the_whole_graph),
        T(test_qemu_io_cannot_write_an_image_strata_writes),
        T(test_strata_cannot_write_an_image_qemu_io_writes),
        T(test_a_block_backend_writer_locks_qemu_io_out_until_closed),
        T(test_reopen_read_write_then_writing_locks_qemu_io_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
