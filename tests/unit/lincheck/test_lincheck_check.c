/* Checker tests: hand-made, random (vs brute force) and generated histories. */
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

/* Checks an EDN history with Knossos (knossos = true) or ringkv options. */
static enum lc_verdict check_edn_opts(const char *text, enum lc_model model,
                                      bool knossos, struct lc_result *keep)
{
    struct lc_history *h = NULL;
    struct lc_options opt;
    struct lc_result res;
    char err[256] = "";
    int rc;

    rc = lc_read_edn(text, strlen(text), &h, err, sizeof(err));
    if (rc != 0)
        fail_msg("EDN error: %s", err);
    if (knossos)
        lc_options_init_knossos(&opt);
    else
        lc_options_init_ringkv(&opt);
    opt.model = model;
    rc = lc_check(h, &opt, &res, err, sizeof(err));
    if (rc != 0)
        fail_msg("check error: %s", err);
    lc_history_free(h);
    if (keep != NULL) {
        *keep = res;
    } else {
        lc_result_free(&res);
    }
    return res.verdict;
}

static enum lc_verdict check_edn(const char *text)
{
    return check_edn_opts(text, LC_MODEL_AUTO, true, NULL);
}

#define INV(p, f, v) "{:process " #p ", :type :invoke, :f :" #f ", :value " #v "}\n"
#define OK(p, f, v) "{:process " #p ", :type :ok, :f :" #f ", :value " #v "}\n"
#define INFO(p, f, v) "{:process " #p ", :type :info, :f :" #f ", :value " #v "}\n"
#define FAIL(p, f, v) "{:process " #p ", :type :fail, :f :" #f ", :value " #v "}\n"

static void test_sequential(void **state)
{
    (void)state;
    assert_int_equal(check_edn(INV(1, read, nil) OK(1, read, 0)
                               INV(1, write, 1) OK(1, write, 1)
                               INV(1, read, nil) OK(1, read, 1)
                               INV(1, cas, [1 2]) OK(1, cas, [1 2])
                               INV(1, read, nil) OK(1, read, 2)),
                     LC_VALID);
    assert_int_equal(check_edn(INV(1, write, 1) OK(1, write, 1)
                               INV(1, read, nil) OK(1, read, 2)),
                     LC_INVALID);
    /* A cas succeeds only from the expected value. */
    assert_int_equal(check_edn(INV(1, write, 1) OK(1, write, 1)
                               INV(1, cas, [0 2]) OK(1, cas, [0 2])),
                     LC_INVALID);
    /* The initial value is 0 under Knossos options. */
    assert_int_equal(check_edn(INV(1, read, nil) OK(1, read, 1)), LC_INVALID);
    assert_int_equal(check_edn(""), LC_VALID);
}

static void test_concurrent_windows(void **state)
{
    (void)state;
    /* A read concurrent with a write may see either value. */
    assert_int_equal(check_edn(INV(1, write, 1) INV(2, read, nil)
                               OK(2, read, 1) OK(1, write, 1)),
                     LC_VALID);
    assert_int_equal(check_edn(INV(1, write, 1) INV(2, read, nil)
                               OK(2, read, 0) OK(1, write, 1)),
                     LC_VALID);
    /* Two reads inside one write: 1 then 0 is impossible. */
    assert_int_equal(check_edn(INV(1, write, 1) INV(2, read, nil)
                               OK(2, read, 1) INV(2, read, nil)
                               OK(2, read, 0) OK(1, write, 1)),
                     LC_INVALID);
    /* A stale read after two completed writes. */
    assert_int_equal(check_edn(INV(1, write, 1) OK(1, write, 1)
                               INV(1, write, 2) OK(1, write, 2)
                               INV(2, read, nil) OK(2, read, 1)),
                     LC_INVALID);
    /* Concurrent writes may land in either order. */
    assert_int_equal(check_edn(INV(1, write, 1) INV(2, write, 2)
                               OK(1, write, 1) OK(2, write, 2)
                               INV(3, read, nil) OK(3, read, 1)),
                     LC_VALID);
    /* Concurrent cas ops: only one of two cas 0->x can win. */
    assert_int_equal(check_edn(INV(1, cas, [0 1]) INV(2, cas, [0 2])
                               OK(1, cas, [0 1]) OK(2, cas, [0 2])),
                     LC_INVALID);
    assert_int_equal(check_edn(INV(1, cas, [0 1]) INV(2, cas, [1 2])
                               OK(2, cas, [1 2]) OK(1, cas, [0 1])),
                     LC_VALID);
}

static void test_info_ops(void **state)
{
    (void)state;
    /* An indeterminate write may take effect later... */
    assert_int_equal(check_edn(INV(1, write, 3) INFO(1, write, 3)
                               INV(2, read, nil) OK(2, read, 0)
                               INV(2, read, nil) OK(2, read, 3)),
                     LC_VALID);
    /* ...or never... */
    assert_int_equal(check_edn(INV(1, write, 3) INFO(1, write, 3)
                               INV(2, read, nil) OK(2, read, 0)),
                     LC_VALID);
    /* ...but only once, and not before its invocation. */
    assert_int_equal(check_edn(INV(1, write, 3) INFO(1, write, 3)
                               INV(2, read, nil) OK(2, read, 3)
                               INV(2, read, nil) OK(2, read, 0)),
                     LC_INVALID);
    assert_int_equal(check_edn(INV(2, read, nil) OK(2, read, 3)
                               INV(1, write, 3) INFO(1, write, 3)),
                     LC_INVALID);
    /* An invocation that never completes is indeterminate too. */
    assert_int_equal(check_edn(INV(1, write, 3) INV(2, read, nil)
                               OK(2, read, 3)),
                     LC_VALID);
    /* An indeterminate cas that cannot apply is simply never applied. */
    assert_int_equal(check_edn(INV(1, cas, [7 8]) INFO(1, cas, [7 8])
                               INV(2, write, 1) OK(2, write, 1)
                               INV(2, read, nil) OK(2, read, 1)),
                     LC_VALID);
    /* Indeterminate reads constrain nothing, whatever their value. */
    assert_int_equal(check_edn(INV(1, read, 5) INFO(1, read, 5)
                               INV(2, read, nil) OK(2, read, 0)),
                     LC_VALID);
    /* A process re-invoking while an op is pending: the first one is
     * indeterminate (it may still take effect). */
    assert_int_equal(check_edn(INV(1, write, 4) INV(1, read, nil)
                               OK(1, read, 4)),
                     LC_VALID);
}

static void test_fail_ops(void **state)
{
    (void)state;
    /* A failed write never took effect. */
    assert_int_equal(check_edn(INV(1, write, 5) FAIL(1, write, 5)
                               INV(2, read, nil) OK(2, read, 5)),
                     LC_INVALID);
    assert_int_equal(check_edn(INV(1, write, 5) FAIL(1, write, 5)
                               INV(2, read, nil) OK(2, read, 0)),
                     LC_VALID);
    /* A failed cas does not constrain the state. */
    assert_int_equal(check_edn(INV(1, cas, [0 1]) FAIL(1, cas, [0 1])
                               INV(2, read, nil) OK(2, read, 0)),
                     LC_VALID);
}

static void test_nil_reads(void **state)
{
    static const char after_write[] =
        INV(1, write, 1) OK(1, write, 1) INV(2, read, nil) OK(2, read, nil);
    static const char absent[] = INV(2, read, nil) OK(2, read, nil)
        INV(1, cas, [nil 1]) OK(1, cas, [nil 1]) INV(2, read, nil)
            OK(2, read, 1);

    (void)state;
    /* Knossos: a nil read result is unknown and matches anything. */
    assert_int_equal(check_edn_opts(after_write, LC_MODEL_AUTO, true, NULL),
                     LC_VALID);
    /* ringkv: nil means absent. */
    assert_int_equal(check_edn_opts(after_write, LC_MODEL_AUTO, false, NULL),
                     LC_INVALID);
    assert_int_equal(check_edn_opts(absent, LC_MODEL_AUTO, false, NULL),
                     LC_VALID);
}

static void test_mutex(void **state)
{
    (void)state;
    assert_int_equal(check_edn(INV(1, acquire, nil) OK(1, acquire, nil)
                               INV(2, acquire, nil) OK(2, acquire, nil)),
                     LC_INVALID);
    assert_int_equal(check_edn(INV(1, acquire, nil) OK(1, acquire, nil)
                               INV(2, acquire, nil) INV(1, release, nil)
                               OK(1, release, nil) OK(2, acquire, nil)),
                     LC_VALID);
    assert_int_equal(check_edn(INV(1, release, nil) OK(1, release, nil)),
                     LC_INVALID);
    /* A crashed acquire may have taken the lock. */
    assert_int_equal(check_edn(INV(1, acquire, nil) INFO(1, acquire, nil)
                               INV(2, release, nil) OK(2, release, nil)),
                     LC_VALID);
}

static void test_multi_register(void **state)
{
    struct lc_result res;

    (void)state;
    /* Transactions are atomic: a half-applied one is invalid. */
    assert_int_equal(
        check_edn(INV(1, txn, [[:write :x 1] [:write :y 1]])
                      OK(1, txn, [[:write :x 1] [:write :y 1]])
                          INV(2, txn, [[:read :x nil] [:read :y nil]])
                              OK(2, txn, [[:read :x 1] [:read :y 0]])),
        LC_INVALID);
    assert_int_equal(
        check_edn(INV(1, txn, [[:write :x 1] [:write :y 1]])
                      INV(2, txn, [[:read :x nil] [:read :y nil]])
                          OK(2, txn, [[:read :x 1] [:read :y 1]])
                              OK(1, txn, [[:write :x 1] [:write :y 1]])),
        LC_VALID);
    /* Disjoint key sets make separate partitions. */
    assert_int_equal(
        check_edn_opts(INV(1, txn, [[:write :x 1]]) OK(1, txn, [[:write :x 1]])
                           INV(2, txn, [[:write :y 2]])
                               OK(2, txn, [[:write :y 2]])
                                   INV(3, txn, [[:read :z 0]])
                                       OK(3, txn, [[:read :z 0]]),
                       LC_MODEL_MULTI_REGISTER, true, &res),
        LC_VALID);
    assert_int_equal(res.n_partitions, 3);
    lc_result_free(&res);
    /* Plain reads and writes on keys mix with txns. */
    assert_int_equal(
        check_edn_opts(INV(1, write, [:x 4]) OK(1, write, [:x 4])
                           INV(2, txn, [[:read :x nil] [:read :y nil]])
                               OK(2, txn, [[:read :x 4] [:read :y 0]]),
                       LC_MODEL_MULTI_REGISTER, true, NULL),
        LC_VALID);
}

static void test_independent_keys(void **state)
{
    struct lc_result res;
    struct lc_history *h = NULL;
    char err[256];
    static const char text[] =
        INV(1, write, [:a 1]) OK(1, write, [:a 1]) INV(2, write, [:b 1])
            OK(2, write, [:b 1]) INV(1, read, [:a nil]) OK(1, read, [:a 1])
                INV(2, read, [:b nil]) OK(2, read, [:b 2]);

    (void)state;
    assert_int_equal(lc_read_edn(text, strlen(text), &h, err, sizeof(err)), 0);
    assert_int_equal(lc_check(h, NULL, &res, err, sizeof(err)), 0);
    assert_int_equal(res.verdict, LC_INVALID);
    assert_int_equal(res.n_partitions, 2);
    assert_string_equal(lc_history_key_name(h, res.bad_key), ":b");
    assert_int_equal(res.n_states, 1);
    assert_int_equal(res.states[0].v, 1);
    lc_result_free(&res);
    lc_history_free(h);
}

static void test_bad_histories(void **state)
{
    static const char *texts[] = {
        /* cas in a plain register history */
        INV(1, cas, [0 1]) OK(1, cas, [0 1]),
        /* completion without invocation */
        OK(1, write, 1),
        /* completion of another function */
        INV(1, write, 1) OK(1, read, 1),
        /* a mutex op in a register history */
        INV(1, acquire, nil) OK(1, acquire, nil),
    };
    static const enum lc_model models[] = {LC_MODEL_REGISTER, LC_MODEL_AUTO,
                                           LC_MODEL_AUTO,
                                           LC_MODEL_CAS_REGISTER};
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct lc_history *h = NULL;
        struct lc_options opt;
        struct lc_result res;
        char err[256] = "";
        assert_int_equal(
            lc_read_edn(texts[i], strlen(texts[i]), &h, err, sizeof(err)), 0);
        lc_options_init_knossos(&opt);
        opt.model = models[i];
        assert_int_equal(lc_check(h, &opt, &res, err, sizeof(err)),
                         RK_EINVAL);
        assert_true(strlen(err) > 0);
        lc_history_free(h);
    }
}

/* ------------------------------------------- brute-force oracle (small n) */

/*
 * An independent, naive oracle: it tries every order of the ops that
 * respects real time (an op whose completion precedes another's invocation
 * comes first), with indeterminate ops optional, over the WHOLE history (no
 * partitioning), with its own model code. Random small histories over two
 * keys are checked by both and must agree.
 */

#define BR_KEYS 2

struct bop {
    size_t inv, ret; /* ret = SIZE_MAX: indeterminate */
    struct lc_op op; /* the values the op is judged by */
    struct lc_mop mops[2];
};

struct bcfg {
    enum lc_model model;
    bool nil_any;
    struct lc_val init;
};

static bool bval_eq(struct lc_val x, struct lc_val y)
{
    return x.nil || y.nil ? x.nil == y.nil : x.v == y.v;
}

static bool bread(const struct bcfg *c, struct lc_val cur, struct lc_val got,
                  bool indeterminate)
{
    return (got.nil && (c->nil_any || indeterminate)) || bval_eq(cur, got);
}

static bool bstep(const struct bcfg *c, struct lc_val *s, const struct bop *b)
{
    const struct lc_op *o = &b->op;
    struct lc_val *cell = &s[o->key];
    uint32_t i;

    switch (o->fn) {
    case LC_ACQUIRE:
        if (cell->v != 0)
            return false;
        cell->v = 1;
        return true;
    case LC_RELEASE:
        if (cell->v != 1)
            return false;
        cell->v = 0;
        return true;
    case LC_READ:
        return bread(c, *cell, o->value, false);
    case LC_WRITE:
        *cell = o->value;
        return true;
    case LC_CAS:
        if (!bval_eq(*cell, o->value))
            return false;
        *cell = o->value2;
        return true;
    case LC_TXN:
        for (i = 0; i < o->n_mops; i++) {
            struct lc_val *t = &s[b->mops[i].key];
            if (b->mops[i].fn == LC_WRITE)
                *t = b->mops[i].value;
            else if (!bread(c, *t, b->mops[i].value, b->ret == SIZE_MAX))
                return false;
        }
        return true;
    }
    return false;
}

static bool brute(const struct bcfg *c, const struct bop *ops, size_t n,
                  unsigned placed, const struct lc_val *s)
{
    size_t i, j;
    bool done = true;

    for (i = 0; i < n; i++) {
        if (!(placed & (1u << i)) && ops[i].ret != SIZE_MAX)
            done = false;
    }
    if (done)
        return true;
    for (i = 0; i < n; i++) {
        struct lc_val next[BR_KEYS];
        bool can = !(placed & (1u << i));
        for (j = 0; can && j < n; j++) {
            if (!(placed & (1u << j)) && ops[j].ret != SIZE_MAX &&
                ops[j].ret < ops[i].inv)
                can = false;
        }
        if (!can)
            continue;
        memcpy(next, s, sizeof(next));
        if (bstep(c, next, &ops[i]) &&
            brute(c, ops, n, placed | (1u << i), next))
            return true;
    }
    return false;
}

static struct lc_val rand_val(struct rk_rand *r, bool allow_nil)
{
    if (allow_nil && rk_rand_below(r, 5) == 0)
        return LC_NIL;
    return LC_INT(rk_rand_below(r, 3));
}

/* A random history of 2..8 ops by 3 processes; the oracle's view in bops. */
static void random_history(struct rk_rand *r, const struct bcfg *c,
                           struct lc_history *h, struct bop *bops,
                           size_t *n_bops)
{
    struct lc_op pend[3];
    struct lc_mop pmops[3][2];
    bool busy[3] = {false, false, false};
    bool keep[16];
    int64_t pid[3] = {0, 1, 2};
    size_t bidx[3] = {0, 0, 0};
    size_t ev = 0, started = 0, max_ops = 2 + rk_rand_below(r, 7), guard, i,
           k = 0;
    bool nil_vals = !c->nil_any;

    *n_bops = 0;
    for (guard = 0; guard < 100 && (started < max_ops || busy[0] || busy[1] ||
                                    busy[2]);
         guard++) {
        unsigned p = (unsigned)rk_rand_below(r, 3);
        struct lc_op op;
        if (!busy[p]) {
            if (started >= max_ops)
                continue;
            memset(&op, 0, sizeof(op));
            op.process = pid[p];
            op.type = LC_INVOKE;
            op.index = -1;
            op.key = (int64_t)rk_rand_below(r, BR_KEYS);
            if (c->model == LC_MODEL_MUTEX) {
                op.key = 0;
                op.fn = rk_rand_below(r, 2) ? LC_ACQUIRE : LC_RELEASE;
            } else if (c->model == LC_MODEL_MULTI_REGISTER) {
                op.fn = LC_TXN;
                op.n_mops = 1 + (uint32_t)rk_rand_below(r, 2);
                for (i = 0; i < op.n_mops; i++) {
                    pmops[p][i].fn = rk_rand_below(r, 2) ? LC_READ : LC_WRITE;
                    pmops[p][i].key = (int64_t)rk_rand_below(r, BR_KEYS);
                    pmops[p][i].value = pmops[p][i].fn == LC_READ
                                            ? LC_NIL
                                            : rand_val(r, nil_vals);
                }
                op.mops = pmops[p];
            } else {
                op.fn = (enum lc_fn)rk_rand_below(
                    r, c->model == LC_MODEL_CAS_REGISTER ? 3 : 2);
                op.value = op.fn == LC_READ ? LC_NIL : rand_val(r, nil_vals);
                if (op.fn == LC_CAS)
                    op.value2 = rand_val(r, nil_vals);
            }
            assert_int_equal(lc_history_add(h, &op), 0);
            pend[p] = op;
            busy[p] = true;
            bidx[p] = *n_bops;
            bops[*n_bops].inv = ev++;
            bops[*n_bops].ret = SIZE_MAX;
            bops[*n_bops].op = op;
            memcpy(bops[*n_bops].mops, pmops[p], sizeof(pmops[p]));
            keep[*n_bops] = true;
            (*n_bops)++;
            started++;
        } else {
            double x = rk_rand_double(r);
            struct bop *b = &bops[bidx[p]];
            op = pend[p];
            if (x < 0.12 && started >= max_ops) {
                /* Leave it pending until the end. */
                busy[p] = false;
                pid[p] += 3;
                continue;
            }
            op.type = x < 0.7 ? LC_OK : x < 0.85 ? LC_INFO : LC_FAIL;
            if (op.type == LC_OK) {
                /* Results: reads return random values. */
                if (op.fn == LC_READ)
                    op.value = rand_val(r, true);
                if (op.fn == LC_TXN) {
                    for (i = 0; i < op.n_mops; i++) {
                        if (pmops[p][i].fn == LC_READ)
                            pmops[p][i].value = rand_val(r, true);
                    }
                    op.mops = pmops[p];
                    memcpy(b->mops, pmops[p], sizeof(pmops[p]));
                }
                b->ret = ev;
                b->op = op;
            }
            if (op.type == LC_FAIL ||
                (op.type == LC_INFO && op.fn == LC_READ))
                keep[bidx[p]] = false;
            assert_int_equal(lc_history_add(h, &op), 0);
            if (op.type == LC_INFO)
                pid[p] += 3;
            ev++;
            busy[p] = false;
        }
    }
    /* Drop failed ops, and reads that never completed, from the oracle. */
    for (i = 0; i < *n_bops; i++) {
        if (!keep[i] || (bops[i].op.fn == LC_READ && bops[i].ret == SIZE_MAX))
            continue;
        bops[k++] = bops[i];
    }
    *n_bops = k;
}

static void run_random(const struct bcfg *c, uint64_t seed, size_t iters)
{
    struct rk_rand r;
    size_t iter, n_valid = 0, n_invalid = 0;

    rk_rand_seed(&r, seed);
    for (iter = 0; iter < iters; iter++) {
        struct lc_history *h = NULL;
        struct bop bops[16];
        struct lc_val init[BR_KEYS];
        size_t n_bops, i;
        struct lc_options opt;
        struct lc_result res;
        char err[256] = "";
        bool want;

        assert_int_equal(lc_history_new(&h), 0);
        random_history(&r, c, h, bops, &n_bops);
        for (i = 0; i < BR_KEYS; i++)
            init[i] = c->model == LC_MODEL_MUTEX ? LC_INT(0) : c->init;
        want = brute(c, bops, n_bops, 0, init);
        lc_options_init_knossos(&opt);
        opt.model = c->model;
        opt.nil_read_matches_any = c->nil_any;
        opt.initial = c->init;
        assert_int_equal(lc_check(h, &opt, &res, err, sizeof(err)), 0);
        if (res.verdict != (want ? LC_VALID : LC_INVALID)) {
            for (i = 0; i < lc_history_len(h); i++) {
                lc_op_print(h, lc_history_op(h, i), stderr);
                fputc('\n', stderr);
            }
            fail_msg("model %s seed %llu iteration %zu: checker says %s, "
                     "brute force %s",
                     lc_model_name(c->model), (unsigned long long)seed, iter,
                     lc_verdict_name(res.verdict),
                     want ? "valid" : "invalid");
        }
        if (want)
            n_valid++;
        else
            n_invalid++;
        lc_result_free(&res);
        lc_history_free(h);
    }
    /* The random mix must exercise both outcomes substantially. */
    if (n_valid < iters / 10 || n_invalid < iters / 10)
        fail_msg("model %s: unbalanced mix, %zu valid, %zu invalid",
                 lc_model_name(c->model), n_valid, n_invalid);
}

static void test_random_vs_brute_force(void **state)
{
    static const struct bcfg cfgs[] = {
        {LC_MODEL_CAS_REGISTER, true, {0, false}},  /* Knossos */
        {LC_MODEL_CAS_REGISTER, false, {0, true}},  /* ringkv */
        {LC_MODEL_REGISTER, true, {0, false}},
        {LC_MODEL_REGISTER, false, {0, true}},
        {LC_MODEL_MUTEX, true, {0, false}},
        {LC_MODEL_MULTI_REGISTER, true, {0, false}},
        {LC_MODEL_MULTI_REGISTER, false, {0, true}},
    };
    size_t i;

    (void)state;
    for (i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++)
        run_random(&cfgs[i], 100 + i, 2500);
}

/* ------------------------------------------------ generated, budgets */

static void check_generated(const struct lc_gen_opts *o, enum lc_verdict want)
{
    struct lc_history *h = NULL;
    struct lc_options opt;
    struct lc_result res;
    char err[256] = "";

    assert_int_equal(lc_gen_register(o, &h), 0);
    assert_int_equal(lc_history_len(h), 2 * (size_t)o->n_ops);
    lc_options_init_ringkv(&opt);
    assert_int_equal(lc_check(h, &opt, &res, err, sizeof(err)), 0);
    if (res.verdict != want) {
        lc_result_print(h, &res, stderr);
        fail_msg("generated history (seed %llu): %s, expected %s",
                 (unsigned long long)o->seed, lc_verdict_name(res.verdict),
                 lc_verdict_name(want));
    }
    assert_int_equal(res.n_partitions, o->n_keys);
    lc_result_free(&res);
    lc_history_free(h);
}

/* The generated history is linearizable, and not once corrupted. */
static void check_generated_both(struct lc_gen_opts *o)
{
    o->corrupt = false;
    check_generated(o, LC_VALID);
    o->corrupt = true;
    check_generated(o, LC_INVALID);
}

static void test_generated_10k(void **state)
{
    struct lc_gen_opts o;
    uint64_t seed;

    (void)state;
    lc_gen_opts_init(&o); /* 10,000 ops over 50 keys */
    for (seed = 1; seed <= 3; seed++) {
        o.seed = seed;
        check_generated_both(&o);
    }
    /* Heavier concurrency per key, more crashes. */
    o.seed = 11;
    o.n_keys = 5;
    o.n_procs = 40;
    o.n_ops = 4000;
    o.p_info = 0.05;
    check_generated_both(&o);
    /* One long register: memo records span many bitset words, and crashed
     * ops fill the second segment. */
    o.seed = 12;
    o.n_keys = 1;
    o.n_procs = 8;
    o.n_ops = 6000;
    o.p_info = 0.1;
    check_generated_both(&o);
}

/* n concurrent writes, then a read of a value nobody wrote: the search must
 * try exponentially many orders before giving up. */
static struct lc_history *hard_history(int n)
{
    struct lc_history *h = NULL;
    struct lc_op op;
    int i;

    assert_int_equal(lc_history_new(&h), 0);
    memset(&op, 0, sizeof(op));
    op.index = -1;
    for (i = 0; i < n; i++) {
        op.process = i;
        op.type = LC_INVOKE;
        op.fn = LC_WRITE;
        op.value = LC_INT(i + 1);
        assert_int_equal(lc_history_add(h, &op), 0);
    }
    op.process = n;
    op.fn = LC_READ;
    op.value = LC_NIL;
    assert_int_equal(lc_history_add(h, &op), 0);
    op.type = LC_OK;
    op.value = LC_INT(-1);
    assert_int_equal(lc_history_add(h, &op), 0);
    for (i = 0; i < n; i++) {
        op.process = i;
        op.type = LC_OK;
        op.fn = LC_WRITE;
        op.value = LC_INT(i + 1);
        assert_int_equal(lc_history_add(h, &op), 0);
    }
    return h;
}

static void test_budgets_give_unknown(void **state)
{
    struct lc_history *h = hard_history(26);
    struct lc_options opt;
    struct lc_result res;
    char err[256] = "";

    (void)state;
    lc_options_init_knossos(&opt);
    opt.memory_limit = 64 * 1024;
    assert_int_equal(lc_check(h, &opt, &res, err, sizeof(err)), 0);
    assert_int_equal(res.verdict, LC_UNKNOWN);
    assert_non_null(strstr(res.reason, "memory"));
    lc_result_free(&res);

    lc_options_init_knossos(&opt);
    opt.time_limit_s = 0.02;
    assert_int_equal(lc_check(h, &opt, &res, err, sizeof(err)), 0);
    assert_int_equal(res.verdict, LC_UNKNOWN);
    assert_non_null(strstr(res.reason, "time"));
    lc_result_free(&res);
    lc_history_free(h);

    /* Small enough to finish: the same shape is found invalid. */
    h = hard_history(8);
    assert_int_equal(lc_check(h, NULL, &res, err, sizeof(err)), 0);
    assert_int_equal(res.verdict, LC_INVALID);
    assert_int_equal(res.n_window, 9);
    lc_result_free(&res);
    lc_history_free(h);
}

static void test_reports(void **state)
{
    struct lc_result res;
    struct lc_history *h = NULL;
    char err[256], *buf = NULL;
    size_t len = 0;
    FILE *f;
    static const char text[] = INV(1, write, 1) OK(1, write, 1)
        INV(1, write, 2) INV(2, read, nil) OK(2, read, 3) OK(1, write, 2);

    (void)state;
    assert_int_equal(lc_read_edn(text, strlen(text), &h, err, sizeof(err)), 0);
    assert_int_equal(lc_check(h, NULL, &res, err, sizeof(err)), 0);
    assert_int_equal(res.verdict, LC_INVALID);
    /* The search got furthest with both writes placed (state 2), then
     * also tried state 1: the read of 3 fits neither. */
    assert_int_equal(res.n_prefix, 2);
    assert_int_equal(lc_history_op(h, res.stuck_op)->process, 2);
    assert_int_equal(res.n_window, 2);
    assert_int_equal(res.n_states, 2);
    assert_int_equal(res.states[0].v, 2);
    assert_int_equal(res.states[1].v, 1);
    f = open_memstream(&buf, &len);
    assert_non_null(f);
    lc_result_print(h, &res, f);
    lc_result_print_json(h, &res, f);
    fclose(f);
    assert_non_null(strstr(buf, "could not be placed"));
    assert_non_null(strstr(buf, ":value 3"));
    assert_non_null(strstr(buf, "\"verdict\":\"invalid\""));
    assert_non_null(strstr(buf, "\"stuck_index\":3"));
    free(buf);
    lc_result_free(&res);
    lc_history_free(h);
}

static void test_names(void **state)
{
    enum lc_model m;

    (void)state;
    assert_int_equal(lc_model_parse("mutex", &m), 0);
    assert_int_equal(m, LC_MODEL_MUTEX);
    assert_int_equal(lc_model_parse("multi-register", &m), 0);
    assert_int_equal(m, LC_MODEL_MULTI_REGISTER);
    assert_int_equal(lc_model_parse("queue", &m), RK_EINVAL);
    assert_string_equal(lc_model_name(LC_MODEL_CAS_REGISTER), "cas-register");
    assert_string_equal(lc_verdict_name(LC_UNKNOWN), "unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequential),
        cmocka_unit_test(test_concurrent_windows),
        cmocka_unit_test(test_info_ops),
        cmocka_unit_test(test_fail_ops),
        cmocka_unit_test(test_nil_reads),
        cmocka_unit_test(test_mutex),
        cmocka_unit_test(test_multi_register),
        cmocka_unit_test(test_independent_keys),
        cmocka_unit_test(test_bad_histories),
        cmocka_unit_test(test_random_vs_brute_force),
        cmocka_unit_test(test_generated_10k),
        cmocka_unit_test(test_budgets_give_unknown),
        cmocka_unit_test(test_reports),
        cmocka_unit_test(test_names),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
