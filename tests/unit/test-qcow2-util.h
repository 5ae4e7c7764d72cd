/*
 * Helpers shared by the qcow2 unit tests (test-qcow2.c, test-qcow2-interop.c):
 * a temporary directory per test, qemu-img / qemu-io as the oracle,
 * creating and opening images, and a random workload checked against a
 * model of what the guest wrote.  Header-only: every function is static.
 */
#ifndef STRATA_TEST_QCOW2_UTIL_H
#define STRATA_TEST_QCOW2_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "aio/aio-engine-slots.h"
#include "aio/aio.h"
#include "aio/iothread.h"
#include "block/block-backend.h"
#include "block/block-int.h"
#include "coroutine/co-lock.h"
#include "drivers/qcow2/qcow2.h"

/* ---- helpers ------------------------------------------------------------------------ */

typedef struct Fixture {
    char *dir;
} Fixture;

static bool have_qemu_img;

static G_GNUC_UNUSED int fixture_setup(void **state)
{
    Fixture *f = g_new0(Fixture, 1);
    f->dir = g_dir_make_tmp("strata-qcow2-XXXXXX", NULL);
    assert_non_null(f->dir);
    *state = f;
    return 0;
}

static G_GNUC_UNUSED int fixture_teardown(void **state)
{
    Fixture *f = *state;
    g_autofree char *cmd = g_strdup_printf("rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    aio_context_free_engines(aio_main_context());
    g_free(f->dir);
    g_free(f);
    return 0;
}

static G_GNUC_UNUSED char *path_in(Fixture *f, const char *name)
{
    return g_build_filename(f->dir, name, NULL);
}

/* Runs a shell command; returns its exit status, output in *out (may be NULL). */
static G_GNUC_UNUSED int run(char **out, const char *fmt, ...) G_GNUC_PRINTF(2, 3);
static int run(char **out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    g_autofree char *cmd = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    g_autofree char *o = NULL, *e = NULL;
    int status = -1;
    GError *err = NULL;
    if (!g_spawn_sync(NULL, argv, NULL, 0, NULL, NULL, &o, &e, &status, &err)) {
        fail_msg("cannot run '%s': %s", cmd, err->message);
    }
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (out) {
        *out = g_strconcat(o, e, NULL);
    }
    return code;
}

/* qemu-img check must find no errors and no leaks. */
static G_GNUC_UNUSED void assert_qemu_img_check_clean(const char *path)
{
    g_autofree char *out = NULL;
    g_autofree char *dir = g_path_get_dirname(path);
    int code = run(&out, "cd '%s' && qemu-img check '%s'", dir, path);
    if (code != 0 || !strstr(out, "No errors were found")) {
        fail_msg("qemu-img check %s: exit %d\n%s", path, code, out);
    }
}

static G_GNUC_UNUSED void assert_qemu_img_compare_equal(const char *a, const char *fmt_a,
                                                        const char *b, const char *fmt_b)
{
    g_autofree char *out = NULL;
    g_autofree char *dir = g_path_get_dirname(a);
    int code =
        run(&out, "cd '%s' && qemu-img compare -f %s -F %s '%s' '%s'", dir, fmt_a, fmt_b, a, b);
    if (code != 0) {
        fail_msg("qemu-img compare %s %s: exit %d\n%s", a, b, code, out);
    }
}

static G_GNUC_UNUSED void skip_without_qemu_img(void)
{
    if (!have_qemu_img) {
        print_message("qemu-img not installed: skipped\n");
        skip();
    }
}

/* Creates a qcow2 image with Strata; @kv are creation options ("cluster_size=4k,..."). */
static G_GNUC_UNUSED bool strata_create(const char *path, uint64_t size, const char *kv,
                                        GError **errp)
{
    GHashTable *opts = opts_new();
    g_autofree char *sz = g_strdup_printf("%" G_GUINT64_FORMAT, size);
    if (size) {
        opts_set(opts, "size", sz);
    }
    if (kv && *kv) {
        assert_true(opts_parse_kv(opts, kv, NULL, NULL));
    }
    return bdrv_create(bdrv_find_driver("qcow2"), path, opts, errp);
}

static G_GNUC_UNUSED BlockBackend *open_qcow2(const char *path, int flags, const char *kv,
                                              GError **errp)
{
    GHashTable *opts = opts_new();
    opts_set(opts, "driver", "qcow2");
    if (kv && *kv) {
        assert_true(opts_parse_kv(opts, kv, NULL, NULL));
    }
    return blk_new_open(path, opts, flags, errp);
}

static G_GNUC_UNUSED BlockBackend *open_rw(const char *path)
{
    GError *err = NULL;
    BlockBackend *blk = open_qcow2(path, BDRV_O_RDWR | BDRV_O_RESIZE | BDRV_O_UNMAP, NULL, &err);
    if (!blk) {
        fail_msg("open %s: %s", path, err->message);
    }
    return blk;
}

static G_GNUC_UNUSED void write_file(const char *path, const void *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, buf, len), (ssize_t)len);
    close(fd);
}

/* @img must check clean and read as @model (qemu-img compare against @raw, written from it). */
static G_GNUC_UNUSED void assert_image_matches_model(const char *img, const char *raw,
                                                     const uint8_t *model, uint64_t size)
{
    write_file(raw, model, size);
    assert_qemu_img_check_clean(img);
    assert_qemu_img_compare_equal(img, "qcow2", raw, "raw");
}

/* Asserts that @blk reads exactly @model over its whole length. */
static G_GNUC_UNUSED void assert_reads_as(BlockBackend *blk, const uint8_t *model, uint64_t size)
{
    uint8_t *buf = g_malloc(size);
    assert_int_equal(blk_pread(blk, 0, size, buf, 0), 0);
    bool differ = memcmp(buf, model, size) != 0;
    for (uint64_t i = 0; differ && i < size; i++) {
        if (buf[i] != model[i]) {
            fail_msg("byte 0x%" G_GINT64_MODIFIER "x: read 0x%02x, expected 0x%02x", i, buf[i],
                     model[i]);
        }
    }
    g_free(buf);
}

/* The qcow2 state of the node under @blk (white-box checks). */
static G_GNUC_UNUSED BDRVQcow2State *qcow2_state(BlockBackend *blk)
{
    BlockDriverState *bs = blk_bs(blk);
    assert_string_equal(bs->drv->format_name, "qcow2");
    return bs->opaque;
}

/* ---- a random workload with a model ---------------------------------------------------- */

typedef struct Workload {
    GRand *rand;
    uint8_t *model;
    uint64_t size;
    uint64_t unit;        /* granularity the offsets and lengths are drawn around */
    const uint8_t *below; /* what the backing chain shows, or NULL */
    int zeroes, discards, writes;
} Workload;

/* Applies one random operation to @blk and to the model. */
static G_GNUC_UNUSED void workload_step(Workload *w, BlockBackend *blk)
{
    uint64_t off, len;
    int kind = g_rand_int_range(w->rand, 0, 10);
    if (g_rand_boolean(w->rand)) {
        /* Unaligned: any byte offset and length. */
        off = g_rand_int_range(w->rand, 0, (gint32)w->size);
        len = g_rand_int_range(w->rand, 1, (gint32)MIN(w->size - off, 3 * w->unit) + 1);
    } else {
        /* Around cluster boundaries, up to several clusters. */
        uint64_t n = w->size / w->unit;
        off = g_rand_int_range(w->rand, 0, (gint32)n) * w->unit;
        len = g_rand_int_range(w->rand, 1, 5) * w->unit;
        len = MIN(len, w->size - off);
    }
    if (kind < 6) {
        uint8_t *buf = g_malloc(len);
        uint8_t pat = (uint8_t)g_rand_int(w->rand);
        /* A different byte every 512: misplaced sectors show. */
        memset(buf, pat, len);
        for (uint64_t i = 0; i < len; i += 512) {
            buf[i] = (uint8_t)(i >> 9) ^ pat;
        }
        assert_int_equal(blk_pwrite(blk, off, len, buf, 0), 0);
        memcpy(w->model + off, buf, len);
        g_free(buf);
        w->writes++;
    } else if (kind < 8) {
        BdrvRequestFlags fl = g_rand_boolean(w->rand) ? BDRV_REQ_MAY_UNMAP : 0;
        assert_int_equal(blk_pwrite_zeroes(blk, off, len, fl), 0);
        memset(w->model + off, 0, len);
        w->zeroes++;
    } else {
        /* Discard: whole clusters drop; what they read afterwards is re-read into the model. */
        assert_int_equal(blk_pdiscard(blk, off, len), 0);
        uint8_t *buf = g_malloc(len);
        assert_int_equal(blk_pread(blk, off, len, buf, 0), 0);
        bool differ = memcmp(buf, w->model + off, len) != 0;
        for (uint64_t i = 0; differ && i < len; i++) {
            /* A discarded byte reads as it was, as zero, or as the backing chain shows it. */
            assert_true(buf[i] == w->model[off + i] || buf[i] == 0 ||
                        (w->below && buf[i] == w->below[off + i]));
        }
        memcpy(w->model + off, buf, len);
        g_free(buf);
        w->discards++;
    }
}

/* Runs @steps random operations, checking reads now and then. */
static G_GNUC_UNUSED void run_workload(Workload *w, BlockBackend *blk, int steps)
{
    for (int i = 0; i < steps; i++) {
        workload_step(w, blk);
        if (i % 50 == 49) {
            assert_reads_as(blk, w->model, w->size);
        }
    }
    assert_reads_as(blk, w->model, w->size);
}

/* A qemu-io write (pattern or zeroes) applied to the model too. */
typedef struct QemuWrite {
    const char *cmd; /* "write -P 0x11 0 64k" */
    uint64_t off, len;
    int pattern; /* -1: zeroes */
} QemuWrite;

static G_GNUC_UNUSED void qemu_io_apply(const char *img, const char *fmt, const QemuWrite *ws,
                                        size_t n, uint8_t *model)
{
    GString *cmd = g_string_new(NULL);
    g_autofree char *dir = g_path_get_dirname(img);
    /* From the image's directory: qemu looks for relative data file names there. */
    g_string_append_printf(cmd, "cd '%s' && qemu-io -f %s", dir, fmt);
    for (size_t i = 0; i < n; i++) {
        g_string_append_printf(cmd, " -c '%s'", ws[i].cmd);
        memset(model + ws[i].off, ws[i].pattern < 0 ? 0 : ws[i].pattern, ws[i].len);
    }
    g_string_append_printf(cmd, " '%s' >/dev/null", img);
    g_autofree char *out = NULL;
    if (run(&out, "%s", cmd->str) != 0) {
        fail_msg("%s\n%s", cmd->str, out);
    }
    g_string_free(cmd, true);
}

/* Initialises what every qcow2 test binary needs; call first in main(). */
static G_GNUC_UNUSED void qcow2_test_init(void)
{
    g_assert(aio_main_loop_init(NULL));
    bdrv_init();
    have_qemu_img = system("qemu-img --version >/dev/null 2>&1") == 0 &&
                    system("qemu-io --version >/dev/null 2>&1") == 0;
}

#define QCOW2_TEST(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)

#endif /* STRATA_TEST_QCOW2_UTIL_H */
