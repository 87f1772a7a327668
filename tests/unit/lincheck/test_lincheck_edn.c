/* Tests of the EDN and JSON-lines history readers, including garbage input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "lincheck.h"
#include "rk_err.h"
#include "rk_rand.h"

static struct lc_history *edn_ok(const char *text)
{
    struct lc_history *h = NULL;
    char err[256] = "";
    int rc = lc_read_edn(text, strlen(text), &h, err, sizeof(err));

    if (rc != 0)
        fail_msg("unexpected EDN error %d: %s", rc, err);
    return h;
}

static void edn_bad(const char *text, const char *want_in_msg)
{
    struct lc_history *h = NULL;
    char err[256] = "";
    int rc = lc_read_edn(text, strlen(text), &h, err, sizeof(err));

    assert_int_equal(rc, RK_EPROTO);
    assert_null(h);
    if (want_in_msg != NULL && strstr(err, want_in_msg) == NULL)
        fail_msg("error '%s' does not mention '%s'", err, want_in_msg);
}

static void test_vector_of_maps(void **state)
{
    struct lc_history *h;
    const struct lc_op *op;

    (void)state;
    h = edn_ok("[{:process 7, :type :invoke, :f :cas, :value [2 3]}\n"
               " {:process 7, :type :fail, :f :cas, :value [2 3]}\n"
               " {:process 8, :type :invoke, :f :write, :value 2 :time 5}\n"
               " {:process 8, :type :ok, :f :write, :value 2, :index 42}\n"
               " {:process 9, :type :invoke, :f :read, :value nil}\n"
               " {:process 9, :type :info, :f :read, :value nil}]\n");
    assert_int_equal(lc_history_len(h), 6);
    op = lc_history_op(h, 0);
    assert_int_equal(op->process, 7);
    assert_int_equal(op->type, LC_INVOKE);
    assert_int_equal(op->fn, LC_CAS);
    assert_false(op->value.nil);
    assert_int_equal(op->value.v, 2);
    assert_int_equal(op->value2.v, 3);
    assert_int_equal(op->index, 0);
    op = lc_history_op(h, 2);
    assert_int_equal(op->time, 5);
    assert_int_equal(op->value.v, 2);
    op = lc_history_op(h, 3);
    assert_int_equal(op->type, LC_OK);
    assert_int_equal(op->index, 42);
    op = lc_history_op(h, 4);
    assert_true(op->value.nil);
    assert_int_equal(lc_history_op(h, 5)->type, LC_INFO);
    assert_null(lc_history_op(h, 6));
    lc_history_free(h);
}

static void test_list_and_lines(void **state)
{
    struct lc_history *h;

    (void)state;
    /* A list, keys in any order, comments between forms. */
    h = edn_ok("; header comment\n"
               "({:type :invoke, :f :read, :value nil, :process 1}\n"
               " ; a comment\n"
               " {:type :ok, :f :read, :value 3, :process 1})");
    assert_int_equal(lc_history_len(h), 2);
    assert_int_equal(lc_history_op(h, 1)->value.v, 3);
    lc_history_free(h);
    /* One map per line, no enclosing collection. */
    h = edn_ok("{:process 0 :type :invoke :f :write :value -5}\n"
               "{:process 0 :type :ok :f :write :value -5}\n");
    assert_int_equal(lc_history_len(h), 2);
    assert_int_equal(lc_history_op(h, 0)->value.v, -5);
    lc_history_free(h);
    /* Empty inputs are empty histories. */
    h = edn_ok("");
    assert_int_equal(lc_history_len(h), 0);
    lc_history_free(h);
    h = edn_ok("  ; nothing\n [ ] ");
    assert_int_equal(lc_history_len(h), 0);
    lc_history_free(h);
}

static void test_edn_syntax(void **state)
{
    struct lc_history *h;

    (void)state;
    /* Tags, discards, sets, strings with delimiters, characters, symbols,
     * floats, big ints, metadata: all skipped or tolerated where unused. */
    h = edn_ok(
        "[#jepsen.history.Op{:index 0, :time 12, :type :invoke, "
        ":process 0, :f :read, :value nil}\n"
        " #_ {:process 99 :type :ok}\n"
        " {:process 0, :type :ok, :f :read, :value 1, :error \"x ] } ) \\\" y\","
        "  :extra #{1 2 :a}, :when #inst \"2026-01-01T00:00:00Z\", "
        "  :c \\], :d \\newline, :s foo/bar, :r 1.5e3, :q 1/2, :big "
        "123456789012345678901234567890N, :m ^{:tag x} [1], :inf ##Inf,"
        "  :re #\"[a-z]+\", :ns #:foo{:a 1}, :bool true, :no false}]");
    assert_int_equal(lc_history_len(h), 2);
    assert_int_equal(lc_history_op(h, 0)->time, 12);
    assert_int_equal(lc_history_op(h, 1)->value.v, 1);
    lc_history_free(h);
}

static void test_nemesis_skipped(void **state)
{
    struct lc_history *h;

    (void)state;
    h = edn_ok("[{:process :nemesis, :type :info, :f :start, :value nil}\n"
               " {:process 1, :type :invoke, :f :write, :value 1}\n"
               " {:process :nemesis, :type :info, :f :start, "
               ":value [:isolated {\"n1\" #{\"n2\"}}]}\n"
               " {:process 1, :type :ok, :f :write, :value 1}]");
    assert_int_equal(lc_history_len(h), 2);
    lc_history_free(h);
}

static void test_independent_and_txn(void **state)
{
    struct lc_history *h;
    const struct lc_op *op;

    (void)state;
    h = edn_ok("[{:process 1, :type :invoke, :f :write, :value [5 3]}\n"
               " {:process 2, :type :invoke, :f :cas, :value [:k [1 2]]}\n"
               " {:process 3, :type :invoke, :f :read, :value [5 nil]}\n"
               " {:process 4, :type :invoke, :f :txn, "
               ":value [[:read :x nil] [:write :y 2]]}]");
    assert_int_equal(lc_history_len(h), 4);
    op = lc_history_op(h, 0);
    assert_string_equal(lc_history_key_name(h, op->key), "5");
    assert_int_equal(op->value.v, 3);
    op = lc_history_op(h, 1);
    assert_string_equal(lc_history_key_name(h, op->key), ":k");
    assert_int_equal(op->value.v, 1);
    assert_int_equal(op->value2.v, 2);
    assert_int_equal(lc_history_op(h, 2)->key, lc_history_op(h, 0)->key);
    assert_true(lc_history_op(h, 2)->value.nil);
    op = lc_history_op(h, 3);
    assert_int_equal(op->fn, LC_TXN);
    assert_int_equal(op->n_mops, 2);
    assert_int_equal(op->mops[0].fn, LC_READ);
    assert_string_equal(lc_history_key_name(h, op->mops[0].key), ":x");
    assert_true(op->mops[0].value.nil);
    assert_int_equal(op->mops[1].fn, LC_WRITE);
    assert_string_equal(lc_history_key_name(h, op->mops[1].key), ":y");
    assert_int_equal(op->mops[1].value.v, 2);
    lc_history_free(h);
}

static void test_edn_errors(void **state)
{
    char *deep;
    size_t i;

    (void)state;
    edn_bad("[{:process 1, :type :invoke, :f :read}", "end of input");
    edn_bad("[{:process 1, :type :invoke, :f :read)]", "mismatched");
    edn_bad("{:process 1 :type}", "odd");
    edn_bad("]", "unbalanced");
    edn_bad("[{:process 1, :type :done, :f :read}]", ":type");
    edn_bad("[{:process 1, :type :ok, :f :add, :value 1}]", ":f");
    edn_bad("[{:process 1, :type :ok, :f :write, :value \"x\"}]",
            "unsupported value");
    edn_bad("[{:process 1, :type :ok, :f :write, :value 1.5}]",
            "unsupported value");
    edn_bad("[{:process 1, :type :ok, :f :write, "
            ":value 99999999999999999999}]",
            "64-bit");
    edn_bad("[{:type :ok, :f :write, :value 1}]", ":process");
    edn_bad("[{:process 1, :type :ok, :f :cas, :value 3}]", "[old new]");
    edn_bad("[{:process 1, :type :ok, :f :txn, :value [[:append :x 1]]}]",
            "micro-op");
    edn_bad("[1 2 3]", "op map");
    edn_bad("[{:process 1 :type :ok :f :read :value \"abc]", "unterminated");
    edn_bad("{:process 1 :type :ok :f :read :value 1e}", NULL);
    edn_bad("[{:process 1, :type :ok, :f :read, :value 1}] #", "'#'");
    edn_bad("[{:process 1 :type :ok :f :read :value 1 :x #_}]", NULL);
    edn_bad("[{:process 1 :type :ok :f :read :value \\", "character");
    /* Nesting far too deep for recursion is refused, not a crash. */
    deep = malloc(100001);
    assert_non_null(deep);
    for (i = 0; i < 100000; i++)
        deep[i] = i < 50000 ? '[' : ']';
    deep[100000] = '\0';
    edn_bad(deep, "deep");
    lc_history_free(edn_ok("[{:process 1 :type :ok :f :read :value 1 "
                           ":x [[[[[[[[[[1]]]]]]]]]]}]"));
    free(deep);
}

/* Reads text; any outcome but a crash or leak is fine, errors are EPROTO. */
static void read_any(const char *text, size_t len, bool jsonl)
{
    struct lc_history *h = NULL;
    char err[256];
    int rc = jsonl ? lc_read_jsonl(text, len, &h, err, sizeof(err))
                   : lc_read_edn(text, len, &h, err, sizeof(err));

    if (rc == 0) {
        struct lc_result res;
        assert_non_null(h);
        /* The checker must cope with whatever the reader accepted. */
        if (lc_check(h, NULL, &res, err, sizeof(err)) == 0)
            lc_result_free(&res);
        lc_history_free(h);
    } else {
        assert_int_equal(rc, RK_EPROTO);
        assert_null(h);
    }
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    long n;

    assert_non_null(f);
    assert_int_equal(fseek(f, 0, SEEK_END), 0);
    n = ftell(f);
    assert_true(n > 0);
    rewind(f);
    buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static void test_garbage_never_crashes(void **state)
{
    static const char alphabet[] = "[]{}()#_:;,\"\\ \n^'`~@-+.0123456789"
                                   "abcnilNMe/ifx";
    struct rk_rand r;
    char buf[512];
    char *real, *copy;
    size_t real_len, i, j, n;

    (void)state;
    rk_rand_seed(&r, 42);
    /* Random bytes, and random EDN-ish tokens. */
    for (i = 0; i < 3000; i++) {
        n = rk_rand_below(&r, sizeof(buf));
        for (j = 0; j < n; j++)
            buf[j] = (i % 2) ? (char)rk_rand_below(&r, 256)
                             : alphabet[rk_rand_below(&r,
                                                      sizeof(alphabet) - 1)];
        read_any(buf, n, false);
        read_any(buf, n, true);
    }
    /* Every prefix of a real history, and byte mutations of it. */
    real = slurp(RK_KNOSSOS_DIR "/cas-register/bad/bad-analysis.edn",
                 &real_len);
    copy = malloc(real_len);
    assert_non_null(copy);
    for (n = 0; n <= real_len; n++) {
        memcpy(copy, real, n);
        read_any(copy, n, false);
    }
    for (i = 0; i < 2000; i++) {
        memcpy(copy, real, real_len);
        for (j = 0; j < 1 + rk_rand_below(&r, 4); j++)
            copy[rk_rand_below(&r, real_len)] =
                (i % 2) ? (char)rk_rand_below(&r, 256)
                        : alphabet[rk_rand_below(&r, sizeof(alphabet) - 1)];
        read_any(copy, real_len, false);
    }
    free(copy);
    free(real);
}

static void test_jsonl(void **state)
{
    static const char text[] =
        "# a ringkv history\n"
        "{\"process\":1,\"type\":\"invoke\",\"f\":\"write\",\"key\":\"a\","
        "\"value\":3,\"time\":10}\n"
        "\n"
        "{\"process\":\"nemesis\",\"type\":\"info\",\"f\":\"kill\"}\n"
        "{\"process\":1,\"type\":\"ok\",\"f\":\"write\",\"key\":\"a\","
        "\"value\":3,\"time\":11,\"index\":7}\r\n"
        "{\"process\":2,\"type\":\"invoke\",\"f\":\"cas\",\"key\":9,"
        "\"value\":[null,4]}\n"
        "{\"process\":3,\"type\":\"invoke\",\"f\":\"read\",\"key\":\"a\","
        "\"value\":null}";
    struct lc_history *h = NULL;
    const struct lc_op *op;
    char err[256] = "";

    (void)state;
    assert_int_equal(lc_read_jsonl(text, strlen(text), &h, err, sizeof(err)),
                     0);
    assert_int_equal(lc_history_len(h), 4);
    op = lc_history_op(h, 0);
    assert_string_equal(lc_history_key_name(h, op->key), "a");
    assert_int_equal(op->time, 10);
    assert_int_equal(lc_history_op(h, 1)->index, 7);
    op = lc_history_op(h, 2);
    assert_int_equal(op->fn, LC_CAS);
    assert_true(op->value.nil);
    assert_int_equal(op->value2.v, 4);
    assert_string_equal(lc_history_key_name(h, op->key), "9");
    assert_int_equal(lc_history_op(h, 3)->key, lc_history_op(h, 0)->key);
    lc_history_free(h);
    assert_int_equal(lc_format_detect(NULL, strchr(text, '{'), 10),
                     LC_FORMAT_JSONL);
    assert_int_equal(lc_format_detect(NULL, " \n{ \"p", 5), LC_FORMAT_JSONL);
    assert_int_equal(lc_format_detect("h.edn", "{\"", 2), LC_FORMAT_EDN);
    assert_int_equal(lc_format_detect(NULL, "{:process", 9), LC_FORMAT_EDN);
    assert_int_equal(lc_format_detect("x.jsonl", "", 0), LC_FORMAT_JSONL);
}

static void jsonl_bad(const char *text, const char *want)
{
    struct lc_history *h = NULL;
    char err[256] = "";

    assert_int_equal(lc_read_jsonl(text, strlen(text), &h, err, sizeof(err)),
                     RK_EPROTO);
    assert_null(h);
    if (strstr(err, want) == NULL)
        fail_msg("error '%s' does not mention '%s'", err, want);
}

static void test_jsonl_errors(void **state)
{
    (void)state;
    jsonl_bad("{\"process\":1,", "line 1: bad JSON");
    jsonl_bad("\n[1,2]", "line 2: expected a JSON object");
    jsonl_bad("{\"type\":\"ok\"}", "process");
    jsonl_bad("{\"process\":1,\"type\":\"done\",\"f\":\"read\"}", "type");
    jsonl_bad("{\"process\":1,\"type\":\"ok\",\"f\":\"inc\"}", "\"f\"");
    jsonl_bad("{\"process\":1,\"type\":\"ok\",\"f\":\"read\",\"value\":\"x\"}",
              "integer or null");
    jsonl_bad("{\"process\":1,\"type\":\"ok\",\"f\":\"cas\",\"value\":[1]}",
              "[old, new]");
    jsonl_bad("{\"process\":1,\"type\":\"ok\",\"f\":\"read\",\"key\":[1]}",
              "key");
    jsonl_bad("{\"process\":1,\"type\":\"ok\",\"f\":\"txn\",\"value\":[]}",
              "txn");
}

/* Generated history → JSON lines → reader: the same events come back. */
static void test_jsonl_round_trip(void **state)
{
    struct lc_gen_opts o;
    struct lc_history *h = NULL, *back = NULL;
    char *buf = NULL, err[256] = "";
    size_t len = 0, i;
    FILE *f;

    (void)state;
    lc_gen_opts_init(&o);
    o.n_ops = 500;
    o.p_info = 0.1;
    assert_int_equal(lc_gen_register(&o, &h), 0);
    f = open_memstream(&buf, &len);
    assert_non_null(f);
    assert_int_equal(lc_history_write_jsonl(h, f), 0);
    fclose(f);
    assert_int_equal(lc_read_jsonl(buf, len, &back, err, sizeof(err)), 0);
    assert_int_equal(lc_history_len(back), lc_history_len(h));
    for (i = 0; i < lc_history_len(h); i++) {
        const struct lc_op *a = lc_history_op(h, i);
        const struct lc_op *b = lc_history_op(back, i);
        assert_int_equal(a->process, b->process);
        assert_int_equal(a->type, b->type);
        assert_int_equal(a->fn, b->fn);
        assert_int_equal(a->value.nil, b->value.nil);
        assert_int_equal(a->value.v, b->value.v);
        if (a->fn == LC_CAS) {
            assert_int_equal(a->value2.nil, b->value2.nil);
            assert_int_equal(a->value2.v, b->value2.v);
        }
        assert_int_equal(a->time, b->time);
        assert_int_equal(a->index, b->index);
        /* Keys are interned by their text. */
        {
            char name[32];
            snprintf(name, sizeof(name), "%lld", (long long)a->key);
            assert_string_equal(lc_history_key_name(back, b->key), name);
        }
    }
    free(buf);
    lc_history_free(h);
    lc_history_free(back);
}

static void test_history_api(void **state)
{
    struct lc_history *h = NULL;
    struct lc_op op;
    struct lc_mop mops[2] = {{LC_READ, 1, {0, true}},
                             {LC_WRITE, 2, {5, false}}};

    (void)state;
    assert_int_equal(lc_history_new(&h), 0);
    memset(&op, 0, sizeof(op));
    op.index = -1;
    op.type = (enum lc_type)9;
    assert_int_equal(lc_history_add(h, &op), RK_EINVAL);
    op.type = LC_INVOKE;
    op.fn = LC_TXN;
    assert_int_equal(lc_history_add(h, &op), RK_EINVAL); /* no mops */
    op.mops = mops;
    op.n_mops = 2;
    assert_int_equal(lc_history_add(h, &op), 0);
    mops[1].value.v = 6; /* the history holds its own copy */
    assert_int_equal(lc_history_op(h, 0)->mops[1].value.v, 5);
    assert_int_equal(lc_history_op(h, 0)->index, 0);
    assert_null(lc_history_key_name(h, 3));
    assert_int_equal(lc_history_set_key_name(h, 3, "three"), 0);
    assert_int_equal(lc_history_set_key_name(h, 3, "drei"), 0);
    assert_string_equal(lc_history_key_name(h, 3), "drei");
    lc_history_free(h);
    lc_history_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vector_of_maps),
        cmocka_unit_test(test_list_and_lines),
        cmocka_unit_test(test_edn_syntax),
        cmocka_unit_test(test_nemesis_skipped),
        cmocka_unit_test(test_independent_and_txn),
        cmocka_unit_test(test_edn_errors),
        cmocka_unit_test(test_garbage_never_crashes),
        cmocka_unit_test(test_jsonl),
        cmocka_unit_test(test_jsonl_errors),
        cmocka_unit_test(test_jsonl_round_trip),
        cmocka_unit_test(test_history_api),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
