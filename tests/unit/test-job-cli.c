/*
 * strata-img commit against qemu-img commit: the same chains, the same
 * arguments (success and every error path), the same exit codes and
 * messages (program names aside), the same images afterwards (layer by
 * layer: qemu-img map layout and qemu-img compare), clean qemu-img check;
 * and strata-img's --progress=json.  Skips when qemu-img or the
 * strata-img binary beside the tests is missing.
 */
#include "tests/unit/test-job-util.h"

/* ---- strata-img commit against qemu-img commit ----------------------------------------------- */

/* $(B)/strata-img, found from this test's own path ($(B)/tests/unit/test-commit). */
static char *strata_img_path(void)
{
    g_autofree char *self = g_file_read_link("/proc/self/exe", NULL);
    g_autofree char *dir = self ? g_path_get_dirname(self) : NULL;
    char *p = dir ? g_build_filename(dir, "..", "..", "strata-img", NULL) : NULL;
    if (!p || !g_file_test(p, G_FILE_TEST_IS_EXECUTABLE)) {
        g_free(p);
        return NULL;
    }
    return p;
}

/* Makes the same three-image chain in @sub (base <- mid <- top), with data in each layer. */
static void make_cli_chain(Fixture *f, const char *sub)
{
    assert_int_equal(
        run(NULL,
            "mkdir -p '%s/%s' && cd '%s/%s' && qemu-img create -q -f qcow2 base.qcow2 4M && "
            "qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 && "
            "qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 && "
            "qemu-io -c 'write -P 1 0 4M' base.qcow2 >/dev/null && "
            "qemu-io -c 'write -P 2 1M 1M' -c 'write -z 3M 64k' mid.qcow2 >/dev/null && "
            "qemu-io -c 'write -P 3 100k 700k' -c 'write -P 4 2500k 10k' top.qcow2 >/dev/null",
            f->dir, sub, f->dir, sub),
        0);
}

/* Runs "<prog> commit ARGS" in @sub: exit code; output in *@out, program name as "PROG". */
static int cli_commit(Fixture *f, const char *prog, const char *sub, const char *args, char **out)
{
    int code = run(out, "cd '%s/%s' && '%s' commit %s", f->dir, sub, prog, args);
    g_autofree char *base = g_path_get_basename(prog);
    gchar **parts = g_strsplit(*out, base, -1);
    g_free(*out);
    *out = g_strjoinv("PROG", parts);
    g_strfreev(parts);
    return code;
}

static void test_strata_img_commit_matches_qemu_img(void **state)
{
    Fixture *f = *state;
    skip_without_qemu_img();
    g_autofree char *strata = strata_img_path();
    if (!strata) {
        print_message("strata-img not built: skipped\n");
        skip();
    }
    static const char *const cases[] = {
        "top.qcow2",
        "-q top.qcow2",
        "-d top.qcow2",
        "-b base.qcow2 top.qcow2",
        "-p -r 100M top.qcow2",
        "-f qcow2 -t none top.qcow2",
        /* errors */
        "",
        "base.qcow2",
        "-b nope.qcow2 top.qcow2",
        "-r 12x top.qcow2",
        "-t bogus top.qcow2",
        "top.qcow2 mid.qcow2",
        "missing.qcow2",
    };
    make_cli_chain(f, "orig");
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *out_s = NULL, *out_q = NULL;
        assert_int_equal(run(NULL, "cd '%s' && cp -r orig s && cp -r orig q", f->dir), 0);
        int rs = cli_commit(f, strata, "s", cases[i], &out_s);
        int rq = cli_commit(f, "qemu-img", "q", cases[i], &out_q);
        if (rs != rq) {
            fail_msg("commit %s: exit %d, qemu-img %d\n%s", cases[i], rs, rq, out_s);
        }
        if (strstr(cases[i], "-p")) {
            /* Progress lines repeat as often as each loop polls; compare the ends. */
            assert_true(g_str_has_prefix(out_s, "    (0.00/100%)\r"));
            assert_true(g_str_has_suffix(out_s, "    (100.00/100%)\r\nImage committed.\n"));
        } else if (strcmp(out_s, out_q) != 0) {
            fail_msg("commit %s:\n--- strata-img\n%s--- qemu-img\n%s", cases[i], out_s, out_q);
        }
        /* Same images: compare each layer with its counterpart, and both must check clean. */
        for (int k = 0; k < 3 && rs == 0; k++) {
            static const char *const names[] = {"base.qcow2", "mid.qcow2", "top.qcow2"};
            g_autofree char *a = g_strdup_printf("%s/s/%s", f->dir, names[k]);
            g_autofree char *b = g_strdup_printf("%s/q/%s", f->dir, names[k]);
            assert_qemu_img_check_clean(a);
            g_autofree char *ma = NULL, *mb = NULL;
            assert_int_equal(run(&ma,
                                 "cd '%s/s' && qemu-img map --output=json %s | "
                                 "sed 's/\"offset\": [0-9]*/\"offset\": X/'",
                                 f->dir, names[k]),
                             0);
            assert_int_equal(run(&mb,
                                 "cd '%s/q' && qemu-img map --output=json %s | "
                                 "sed 's/\"offset\": [0-9]*/\"offset\": X/'",
                                 f->dir, names[k]),
                             0);
            assert_string_equal(ma, mb);
            assert_int_equal(run(NULL, "qemu-img compare -q '%s' '%s'", a, b), 0);
        }
        assert_int_equal(run(NULL, "rm -rf '%s/s' '%s/q'", f->dir, f->dir), 0);
    }

    /* --progress=json: one object per line, ending at 100. */
    g_autofree char *out = NULL;
    assert_int_equal(run(NULL, "cd '%s' && cp -r orig s", f->dir), 0);
    assert_int_equal(cli_commit(f, strata, "s", "--progress=json top.qcow2", &out), 0);
    assert_true(g_str_has_prefix(out, "{\"done\": 0, "));
    assert_non_null(strstr(out, "\"percent\": 100.00}\nImage committed.\n"));
}

int main(void)
{
    qcow2_test_init();
    const struct CMUnitTest tests[] = {
        QCOW2_TEST(test_strata_img_commit_matches_qemu_img),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
