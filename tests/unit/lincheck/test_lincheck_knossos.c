/* Checks every history of the Knossos corpus against its folder's verdict. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lincheck.h"

/*
 * The layout is data/<model>/<good or bad>/NAME.edn (see the corpus
 * README): good means linearizable, bad means not. The model comes from
 * the folder: cas-register (initial 0), multi-register (x = y = 0), mutex
 * (initially free).
 */

static const char *dir_root = RK_KNOSSOS_DIR;

struct tally {
    int files;
    int good;
    int bad;
};

static void check_folder(const char *model_dir, enum lc_model model,
                         bool expect_valid, struct tally *t)
{
    char path[4096];
    DIR *d;
    struct dirent *de;

    snprintf(path, sizeof(path), "%s/%s/%s", dir_root, model_dir,
             expect_valid ? "good" : "bad");
    d = opendir(path);
    if (d == NULL)
        return;
    while ((de = readdir(d)) != NULL) {
        size_t n = strlen(de->d_name);
        struct lc_history *h = NULL;
        struct lc_options opt;
        struct lc_result res;
        char file[4096 + 256], err[512] = "";
        int rc;

        if (n < 4 || strcmp(de->d_name + n - 4, ".edn") != 0)
            continue;
        snprintf(file, sizeof(file), "%s/%s", path, de->d_name);
        rc = lc_read_file(file, LC_FORMAT_EDN, &h, err, sizeof(err));
        if (rc != 0)
            fail_msg("%s: read failed: %s", file, err);
        lc_options_init_knossos(&opt);
        opt.model = model;
        rc = lc_check(h, &opt, &res, err, sizeof(err));
        if (rc != 0)
            fail_msg("%s: check failed: %s", file, err);
        if (res.verdict != (expect_valid ? LC_VALID : LC_INVALID)) {
            lc_result_print(h, &res, stderr);
            fail_msg("%s: verdict %s, expected %s", file,
                     lc_verdict_name(res.verdict),
                     expect_valid ? "valid" : "invalid");
        }
        if (!expect_valid) {
            /* A violation always names the op that could not be placed,
             * inside a window that contains it. */
            size_t i;
            bool found = false;
            assert_true(res.n_window >= 1);
            for (i = 0; i < res.n_window; i++)
                found |= res.window[i] == res.stuck_op;
            assert_true(found);
            assert_true(res.n_states >= 1);
        }
        t->files++;
        if (expect_valid)
            t->good++;
        else
            t->bad++;
        lc_result_free(&res);
        lc_history_free(h);
    }
    closedir(d);
}

static void test_cas_register_corpus(void **state)
{
    struct tally t = {0};

    (void)state;
    check_folder("cas-register", LC_MODEL_CAS_REGISTER, true, &t);
    check_folder("cas-register", LC_MODEL_CAS_REGISTER, false, &t);
    /* The snapshot holds 113 good and 7 bad histories. */
    assert_int_equal(t.good, 113);
    assert_int_equal(t.bad, 7);
}

static void test_multi_register_corpus(void **state)
{
    struct tally t = {0};

    (void)state;
    check_folder("multi-register", LC_MODEL_MULTI_REGISTER, true, &t);
    check_folder("multi-register", LC_MODEL_MULTI_REGISTER, false, &t);
    assert_int_equal(t.files, 1);
}

static void test_mutex_corpus(void **state)
{
    struct tally t = {0};

    (void)state;
    check_folder("mutex", LC_MODEL_MUTEX, true, &t);
    check_folder("mutex", LC_MODEL_MUTEX, false, &t);
    assert_int_equal(t.bad, 1);
}

/* With the model left to LC_MODEL_AUTO every file gets the same verdict. */
static void test_auto_model_matches(void **state)
{
    static const char *files[][2] = {
        {"cas-register/bad/rethink-fail-minimal.edn", "invalid"},
        {"cas-register/good/cas-register-bug.edn", "valid"},
        {"multi-register/good/multi-register.edn", "valid"},
        {"mutex/bad/etcd.edn", "invalid"},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        char file[4096];
        struct lc_history *h = NULL;
        struct lc_result res;
        char err[512] = "";

        snprintf(file, sizeof(file), "%s/%s", dir_root, files[i][0]);
        assert_int_equal(lc_read_file(file, LC_FORMAT_AUTO, &h, err,
                                      sizeof(err)),
                         0);
        assert_int_equal(lc_check(h, NULL, &res, err, sizeof(err)), 0);
        assert_string_equal(lc_verdict_name(res.verdict), files[i][1]);
        lc_result_free(&res);
        lc_history_free(h);
    }
}

/* The minimal example: the read of 3 is the op that cannot be placed. */
static void test_minimal_report(void **state)
{
    char file[4096];
    struct lc_history *h = NULL;
    struct lc_result res;
    const struct lc_op *stuck;
    char err[512] = "";

    (void)state;
    snprintf(file, sizeof(file), "%s/cas-register/bad/rethink-fail-minimal.edn",
             dir_root);
    assert_int_equal(lc_read_file(file, LC_FORMAT_AUTO, &h, err, sizeof(err)),
                     0);
    assert_int_equal(lc_check(h, NULL, &res, err, sizeof(err)), 0);
    assert_int_equal(res.verdict, LC_INVALID);
    stuck = lc_history_op(h, res.stuck_op);
    assert_int_equal(stuck->fn, LC_READ);
    assert_int_equal(stuck->process, 1);
    /* Concurrent with it: the write of 4 (already in the prefix). */
    assert_int_equal(res.n_window, 2);
    assert_int_equal(res.n_states, 2);
    lc_result_free(&res);
    lc_history_free(h);
}

int main(int argc, char **argv)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cas_register_corpus),
        cmocka_unit_test(test_multi_register_corpus),
        cmocka_unit_test(test_mutex_corpus),
        cmocka_unit_test(test_auto_model_matches),
        cmocka_unit_test(test_minimal_report),
    };

    /* The corpus directory may be given on the command line. */
    if (argc > 1)
        dir_root = argv[1];
    return cmocka_run_group_tests(tests, NULL, NULL);
}
