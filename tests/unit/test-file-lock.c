/*
 * Tests of the `file` driver's image locking: the exact bytes it locks,
 * conflicts between two descriptors of one process, and interoperation
 * with the real qemu-io (skipped, with a message, when qemu-io is not
 * installed).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <glib.h>
#include <glib/gstdio.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "block/block-common.h"
#include "drivers/raw/file-lock.h"

/* What a guest device on an image asks for: it writes and lets no one else write. */
#define WRITER_PERM     (BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE)
#define WRITER_UNSHARED (BLK_PERM_WRITE | BLK_PERM_RESIZE)
#define WRITER_SHARED   (BLK_PERM_ALL & ~WRITER_UNSHARED)

typedef struct Fixture {
    char *path;
    int fd; /* opened by the fixture; tests lock through it */
} Fixture;

static int fixture_setup(void **state)
{
    Fixture *f = g_new0(Fixture, 1);
    int fd = g_file_open_tmp("strata-lock-XXXXXX", &f->path, NULL);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, 1 << 20), 0);
    f->fd = fd;
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    Fixture *f = *state;
    close(f->fd);
    g_unlink(f->path);
    g_free(f->path);
    g_free(f);
    return 0;
}

/* True when some other open file description holds a lock on @byte. */
static bool byte_locked_by_others(const char *path, int byte)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct flock fl = {.l_whence = SEEK_SET, .l_start = byte, .l_len = 1, .l_type = F_WRLCK};
    assert_int_equal(fcntl(fd, F_OFD_GETLK, &fl), 0);
    close(fd);
    return fl.l_type != F_UNLCK;
}

static void test_locks_exactly_the_qemu_bytes_for_perm_and_unshared(void **state)
{
    Fixture *f = *state;
    RawLockState held = {0};

    assert_true(raw_lock_supported(f->fd));
    assert_true(raw_lock_apply(f->fd, &held, WRITER_PERM, WRITER_UNSHARED, false, NULL));
    assert_int_equal(held.perm, WRITER_PERM);
    assert_int_equal(held.unshared, WRITER_UNSHARED);

    const int locked[] = {100, 101, 201, 203};
    const int free_bytes[] = {0, 99, 102, 103, 104, 199, 200, 202, 204};
    for (size_t i = 0; i < G_N_ELEMENTS(locked); i++) {
        assert_true(byte_locked_by_others(f->path, locked[i]));
    }
    for (size_t i = 0; i < G_N_ELEMENTS(free_bytes); i++) {
        assert_false(byte_locked_by_others(f->path, free_bytes[i]));
    }

    /* Releasing what is no longer wanted leaves the rest. */
    assert_true(raw_lock_apply(f->fd, &held, BLK_PERM_CONSISTENT_READ, 0, true, NULL));
    assert_true(byte_locked_by_others(f->path, 100));
    assert_false(byte_locked_by_others(f->path, 101));
    assert_false(byte_locked_by_others(f->path, 201));
    raw_lock_release_all(f->fd, &held);
    assert_false(byte_locked_by_others(f->path, 100));
    assert_int_equal(held.perm | held.unshared, 0);
}

static void test_second_descriptor_cannot_write_while_first_refuses_to_share(void **state)
{
    Fixture *f = *state;
    RawLockState held = {0};
    GError *err = NULL;

    assert_true(raw_lock_apply(f->fd, &held, WRITER_PERM, WRITER_UNSHARED, false, NULL));
    int fd2 = open(f->path, O_RDWR);
    assert_true(fd2 >= 0);

    assert_false(raw_lock_check(fd2, WRITER_PERM, WRITER_SHARED, f->path, &err));
    assert_non_null(strstr(err->message, "Failed to get \"write\" lock"));
    assert_non_null(strstr(err->message, "Is another process using the image"));
    g_clear_error(&err);

    /* A reader that shares everything is welcome; one that refuses to share write is not. */
    assert_true(raw_lock_check(fd2, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL, f->path, NULL));
    assert_false(raw_lock_check(fd2, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL & ~BLK_PERM_WRITE,
                                f->path, &err));
    assert_non_null(strstr(err->message, "Failed to get shared \"write\" lock"));
    g_clear_error(&err);

    /* A descriptor never conflicts with its own locks. */
    assert_true(raw_lock_check(f->fd, WRITER_PERM, WRITER_SHARED, f->path, NULL));

    raw_lock_release_all(f->fd, &held);
    assert_true(raw_lock_check(fd2, WRITER_PERM, WRITER_SHARED, f->path, NULL));
    close(fd2);
}

/* ---- against qemu-io ---------------------------------------------------- */

static bool have_qemu_io(void)
{
    g_autofree char *path = g_find_program_in_path("qemu-io");
    if (!path) {
        print_message("skipped: qemu-io is not installed\n");
    }
    return path != NULL;
}

/* Runs "qemu-io [-r] -f FMT -c CMD PATH"; returns its wait status, and its stdout+stderr. */
static int run_qemu_io(char **output, const char *fmt, const char *path, const char *cmd,
                       bool read_only)
{
    const char *argv[8];
    int n = 0;
    argv[n++] = "qemu-io";
    if (read_only) {
        argv[n++] = "-r";
    }
    argv[n++] = "-f";
    argv[n++] = fmt;
    argv[n++] = "-c";
    argv[n++] = cmd;
    argv[n++] = path;
    argv[n] = NULL;

    g_autofree char *out = NULL, *err = NULL;
    int status = 0;
    assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, &out, &err,
                             &status, NULL));
    *output = g_strconcat(out, err, NULL);
    return status;
}

/* An interactive qemu-io that keeps @path open until its stdin closes. */
typedef struct QemuIo {
    GPid pid;
    int in;
} QemuIo;

static void qemu_io_start(QemuIo *q, const char *fmt, const char *path, int wait_for_byte)
{
    const char *argv[] = {"qemu-io", "-f", fmt, path, NULL};
    int devnull = open("/dev/null", O_WRONLY);
    assert_true(g_spawn_async_with_pipes_and_fds(
        NULL, argv, NULL, G_SPAWN_SEARCH_PATH | G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL, -1, devnull,
        devnull, NULL, NULL, 0, &q->pid, &q->in, NULL, NULL, NULL));
    close(devnull);
    /* qemu-io has the image open once its lock byte shows. */
    for (int i = 0; i < 500 && !byte_locked_by_others(path, wait_for_byte); i++) {
        g_usleep(10 * 1000);
    }
    assert_true(byte_locked_by_others(path, wait_for_byte));
}

static void qemu_io_stop(QemuIo *q)
{
    close(q->in); /* end of input: qemu-io quits */
    int status;
    assert_int_equal(waitpid(q->pid, &status, 0), q->pid);
    g_spawn_close_pid(q->pid);
}

static void test_qemu_io_cannot_write_while_strata_holds_the_image(void **state)
{
    Fixture *f = *state;
    RawLockState held = {0};
    g_autofree char *out = NULL, *out2 = NULL, *out3 = NULL;

    if (!have_qemu_io()) {
        skip();
    }
    assert_true(raw_lock_check(f->fd, WRITER_PERM, WRITER_SHARED, f->path, NULL));
    assert_true(raw_lock_apply(f->fd, &held, WRITER_PERM, WRITER_UNSHARED, false, NULL));

    assert_int_not_equal(run_qemu_io(&out, "raw", f->path, "write 0 4k", false), 0);
    assert_non_null(strstr(out, "Failed to get \"write\" lock"));
    /* A read-only qemu-io that shares writing still gets in. */
    assert_int_equal(run_qemu_io(&out2, "raw", f->path, "read 0 4k", true), 0);

    raw_lock_release_all(f->fd, &held);
    assert_int_equal(run_qemu_io(&out3, "raw", f->path, "write 0 4k", false), 0);
}

static void test_strata_cannot_write_while_qemu_io_holds_a_qcow2_image(void **state)
{
    Fixture *f = *state;
    GError *err = NULL;
    g_autofree char *qcow2 = g_strconcat(f->path, ".qcow2", NULL);

    if (!have_qemu_io()) {
        skip();
    }
    const char *argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", qcow2, "1M", NULL};
    int status;
    assert_true(g_spawn_sync(NULL, (char **)argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL, NULL, NULL,
                             &status, NULL));
    assert_int_equal(status, 0);

    /* qcow2 in qemu-io writes and refuses to share write and resize (bytes 201, 203). */
    QemuIo q;
    qemu_io_start(&q, "qcow2", qcow2, 201);
    int fd = open(qcow2, O_RDWR);
    assert_true(fd >= 0);
    assert_false(raw_lock_check(fd, WRITER_PERM, WRITER_SHARED, qcow2, &err));
    assert_non_null(strstr(err->message, "Failed to get \"write\" lock"));
    g_clear_error(&err);
    assert_true(raw_lock_check(fd, BLK_PERM_CONSISTENT_READ, BLK_PERM_ALL, qcow2, NULL));
    qemu_io_stop(&q);

    assert_true(raw_lock_check(fd, WRITER_PERM, WRITER_SHARED, qcow2, NULL));
    close(fd);
    g_unlink(qcow2);
}

static void test_strata_cannot_refuse_sharing_write_with_a_qemu_io_writer(void **state)
{
    Fixture *f = *state;
    GError *err = NULL;

    if (!have_qemu_io()) {
        skip();
    }
    /* A raw qemu-io writer takes bytes 100 and 101 and shares everything. */
    QemuIo q;
    qemu_io_start(&q, "raw", f->path, 101);
    assert_false(raw_lock_check(f->fd, WRITER_PERM, WRITER_SHARED, f->path, &err));
    assert_non_null(strstr(err->message, "Failed to get shared \"write\" lock"));
    g_clear_error(&err);
    /* Sharing write with it is fine. */
    assert_true(raw_lock_check(f->fd, WRITER_PERM, BLK_PERM_ALL, f->path, NULL));
    qemu_io_stop(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_locks_exactly_the_qemu_bytes_for_perm_and_unshared,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_second_descriptor_cannot_write_while_first_refuses_to_share, fixture_setup,
            fixture_teardown),
        cmocka_unit_test_setup_teardown(test_qemu_io_cannot_write_while_strata_holds_the_image,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_strata_cannot_write_while_qemu_io_holds_a_qcow2_image,
                                        fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(
            test_strata_cannot_refuse_sharing_write_with_a_qemu_io_writer, fixture_setup,
            fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
