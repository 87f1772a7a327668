/* Unit tests of the hash ring: hash tags, lookups, wrap-around, uniformity,
 * arcs and ring diffs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "rk_err.h"
#include "rk_rand.h"
#include "shard.h"

/* The hashed part of a NUL-terminated key, as a string. */
static void tag_of(const char *key, char *out)
{
    size_t off;
    size_t n = shard_key_hashtag(key, strlen(key), &off);
    memcpy(out, key + off, n);
    out[n] = '\0';
}

static void test_hashtag_rules(void **state)
{
    (void)state;
    char t[64];
    tag_of("{user1}.a", t);
    assert_string_equal(t, "user1");
    tag_of("foo{bar}{zap}", t); /* only the first tag counts */
    assert_string_equal(t, "bar");
    tag_of("{{bar}}", t); /* from the first '{' to the first '}' */
    assert_string_equal(t, "{bar");
    tag_of("foo{}{bar}", t); /* the first tag is empty: whole key */
    assert_string_equal(t, "foo{}{bar}");
    tag_of("{}x", t);
    assert_string_equal(t, "{}x");
    tag_of("a{", t);
    assert_string_equal(t, "a{");
    tag_of("}{", t);
    assert_string_equal(t, "}{");
    tag_of("a}b{c", t);
    assert_string_equal(t, "a}b{c");
    tag_of("plain", t);
    assert_string_equal(t, "plain");
    tag_of("{x}", t);
    assert_string_equal(t, "x");
    size_t off = 99;
    assert_int_equal(shard_key_hashtag("", 0, &off), 0);
    assert_int_equal(off, 0);
    /* Binary keys: bytes after a NUL still count. */
    const char bin[] = {'a', 0, '{', 'z', '}', 0};
    assert_int_equal(shard_key_hashtag(bin, sizeof(bin), &off), 1);
    assert_int_equal(off, 3);
}

static void test_hashtag_same_shard(void **state)
{
    (void)state;
    assert_int_equal(shard_key_hash("{user1}.a", 9),
                     shard_key_hash("{user1}.b", 9));
    assert_int_equal(shard_key_hash("{user1}.a", 9), XXH3_64bits("user1", 5));
    assert_true(shard_key_hash("{}x", 3) == XXH3_64bits("{}x", 3));
    assert_true(shard_key_hash("a{", 2) == XXH3_64bits("a{", 2));
    assert_true(shard_key_hash("}{", 2) == XXH3_64bits("}{", 2));
    assert_true(shard_key_hash("{}x", 3) != shard_key_hash("{}y", 3));

    shard_id ids[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    struct shard_ring r;
    assert_int_equal(shard_ring_build(&r, ids, 8, 64, SHARD_RING_BALANCED), 0);
    shard_id first = shard_ring_lookup(&r, "{user1}.a", 9);
    for (int i = 0; i < 1000; i++) {
        char k[64];
        int n = snprintf(k, sizeof(k), "{user1}.field%d", i);
        assert_int_equal(shard_ring_lookup(&r, k, (size_t)n), first);
    }
    shard_ring_free(&r);
}

/* Attempt 0 is srv_ring.h's layout: BE32 shard, 4 zero bytes, BE32 point. */
static void test_point_hash_layout(void **state)
{
    (void)state;
    uint8_t buf[12] = {0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 42};
    assert_true(shard_point_hash(7, 42, 0) ==
                XXH3_64bits_withSeed(buf, 12, SHARD_RING_SEED));
    buf[7] = 1;
    assert_true(shard_point_hash(7, 42, 1) ==
                XXH3_64bits_withSeed(buf, 12, SHARD_RING_SEED));
}

static void test_lookup_and_wrap(void **state)
{
    (void)state;
    struct shard_point pts[3] = {{100, 1}, {200, 2}, {300, 3}};
    struct shard_ring r = {3, pts};
    assert_int_equal(shard_ring_owner(&r, 0), 1);
    assert_int_equal(shard_ring_owner(&r, 100), 1);
    assert_int_equal(shard_ring_owner(&r, 101), 2);
    assert_int_equal(shard_ring_owner(&r, 200), 2);
    assert_int_equal(shard_ring_owner(&r, 299), 3);
    assert_int_equal(shard_ring_owner(&r, 300), 3);
    assert_int_equal(shard_ring_owner(&r, 301), 1); /* wraps */
    assert_int_equal(shard_ring_owner(&r, UINT64_MAX), 1);
    struct shard_ring empty = {0, NULL};
    assert_int_equal(shard_ring_owner(&empty, 5), SHARD_ID_NONE);
    assert_int_equal(shard_ring_lookup(&empty, "k", 1), SHARD_ID_NONE);

    /* A point at the very top of the ring. */
    struct shard_point top[2] = {{10, 4}, {UINT64_MAX, 5}};
    struct shard_ring t = {2, top};
    assert_int_equal(shard_ring_owner(&t, UINT64_MAX), 5);
    assert_int_equal(shard_ring_owner(&t, 11), 5);
    assert_int_equal(shard_ring_owner(&t, 10), 4);
}

static void test_lookup_matches_scan(void **state)
{
    (void)state;
    shard_id ids[5] = {9, 3, 17, 4, 100};
    struct shard_ring r;
    assert_int_equal(shard_ring_build(&r, ids, 5, 37, SHARD_RING_HASHED), 0);
    struct rk_rand rnd;
    rk_rand_seed(&rnd, 1);
    for (int i = 0; i < 20000; i++) {
        uint64_t h = rk_rand_next(&rnd);
        if (i % 10 == 0) /* exact hits on points too */
            h = r.points[rk_rand_below(&rnd, r.n_points)].hash;
        shard_id want = r.points[0].shard;
        for (uint32_t k = 0; k < r.n_points; k++)
            if (r.points[k].hash >= h) {
                want = r.points[k].shard;
                break;
            }
        assert_int_equal(shard_ring_owner(&r, h), want);
    }
    shard_ring_free(&r);
}

static void check_deterministic(uint8_t layout)
{
    shard_id a[4] = {1, 2, 3, 4}, b[4] = {4, 2, 1, 3};
    struct shard_ring x, y;
    assert_int_equal(shard_ring_build(&x, a, 4, 50, layout), 0);
    assert_int_equal(shard_ring_build(&y, b, 4, 50, layout), 0);
    assert_true(shard_ring_equal(&x, &y));
    assert_int_equal(x.n_points, 200);
    uint32_t per[5] = {0};
    for (uint32_t i = 0; i < x.n_points; i++) {
        if (i > 0)
            assert_true(x.points[i - 1].hash < x.points[i].hash);
        per[x.points[i].shard]++;
    }
    for (int s = 1; s <= 4; s++)
        assert_int_equal(per[s], 50);
    if (layout == SHARD_RING_HASHED) {
        /* Each point sits where its formula says (no collision here). */
        for (uint32_t i = 0; i < x.n_points; i++) {
            bool found = false;
            for (uint32_t p = 0; p < 50 && !found; p++)
                found = shard_point_hash(x.points[i].shard, p, 0) ==
                        x.points[i].hash;
            assert_true(found);
        }
    } else {
        /* Equal slots: exact shares, the last point at the very top. */
        assert_true(x.points[x.n_points - 1].hash == UINT64_MAX);
        for (shard_id s = 1; s <= 4; s++) {
            double share = shard_ring_share(&x, s);
            assert_true(share > 0.25 - 1e-9 && share < 0.25 + 1e-9);
        }
        /* The shards interleave: no shard holds a long run of slots. */
        uint32_t run = 1, longest = 1;
        for (uint32_t i = 1; i < x.n_points; i++) {
            run = x.points[i].shard == x.points[i - 1].shard ? run + 1 : 1;
            if (run > longest)
                longest = run;
        }
        assert_true(longest <= 8);
    }
    struct shard_ring c;
    assert_int_equal(shard_ring_copy(&c, &x), 0);
    assert_true(shard_ring_equal(&c, &x));
    c.points[3].shard = 99;
    assert_false(shard_ring_equal(&c, &x));
    shard_ring_free(&c);
    shard_ring_free(&x);
    shard_ring_free(&y);
}

static void test_build_deterministic(void **state)
{
    (void)state;
    check_deterministic(SHARD_RING_BALANCED);
    check_deterministic(SHARD_RING_HASHED);
}

static void test_build_rejects(void **state)
{
    (void)state;
    struct shard_ring r;
    shard_id ok[2] = {1, 2}, dup[3] = {1, 2, 1}, meta[2] = {0, 1};
    shard_id none[1] = {SHARD_ID_NONE};
    assert_int_equal(shard_ring_build(&r, ok, 0, 8, 0), RK_EINVAL);
    assert_int_equal(shard_ring_build(&r, ok, 2, 0, 0), RK_EINVAL);
    assert_int_equal(shard_ring_build(&r, dup, 3, 8, 0), RK_EINVAL);
    assert_int_equal(shard_ring_build(&r, meta, 2, 8, 0), RK_EINVAL);
    assert_int_equal(shard_ring_build(&r, none, 1, 8, 0), RK_EINVAL);
    assert_int_equal(shard_ring_build(&r, ok, 2, SHARD_MAX_POINTS, 0),
                     RK_EINVAL);
    assert_int_equal(shard_ring_build(&r, ok, 2, 8, 7), RK_EINVAL);
    assert_null(r.points);
}

/*
 * 100k keys over S=8 shards with 64 points each. The balanced layout keeps
 * every shard within 25% of the mean (in fact within a few percent: only
 * the keys' own hash noise is left); random points (the hashed layout) are
 * printed for comparison and only held to a loose bound.
 */
static void check_uniform(uint8_t layout, double slack)
{
    enum { S = 8, V = 64, KEYS = 100000 };
    shard_id ids[S];
    for (int i = 0; i < S; i++)
        ids[i] = (shard_id)(i + 1);
    struct shard_ring r;
    assert_int_equal(shard_ring_build(&r, ids, S, V, layout), 0);
    uint32_t count[S + 1] = {0};
    for (int i = 0; i < KEYS; i++) {
        char k[32];
        int n = snprintf(k, sizeof(k), "user:%d", i);
        shard_id s = shard_ring_lookup(&r, k, (size_t)n);
        assert_true(s >= 1 && s <= S);
        count[s]++;
    }
    double mean = (double)KEYS / S, chi2 = 0, share = 0;
    for (int s = 1; s <= S; s++) {
        double d = count[s] - mean;
        chi2 += d * d / mean;
        assert_true(count[s] >= (1 - slack) * mean &&
                    count[s] <= (1 + slack) * mean);
        share += shard_ring_share(&r, (shard_id)s);
    }
    assert_true(share > 0.999999 && share < 1.000001);
    /* Balanced shares leave only multinomial noise: chi-square with 7
     * degrees of freedom stays under 24.32 (p = 0.001). */
    if (layout == SHARD_RING_BALANCED)
        assert_true(chi2 < 24.32);
    printf("ring %s S=%d V=%d keys=%d: chi2=%.1f (df=%d) counts=",
           layout == SHARD_RING_BALANCED ? "balanced" : "hashed", S, V, KEYS,
           chi2, S - 1);
    for (int s = 1; s <= S; s++)
        printf("%u%s", count[s], s < S ? "," : "\n");
    shard_ring_free(&r);
}

static void test_distribution_uniform(void **state)
{
    (void)state;
    check_uniform(SHARD_RING_BALANCED, 0.25);
    check_uniform(SHARD_RING_BALANCED, 0.05);
    check_uniform(SHARD_RING_HASHED, 0.50);
}

/* The arcs of all shards tile the ring exactly and agree with lookups. */
static void test_arcs_tile_ring(void **state)
{
    (void)state;
    shard_id ids[6] = {1, 2, 3, 4, 5, 6};
    struct shard_ring r;
    assert_int_equal(shard_ring_build(&r, ids, 6, 20, SHARD_RING_HASHED), 0);
    struct shard_arc *all = NULL;
    uint32_t n_all = 0;
    struct rk_rand rnd;
    rk_rand_seed(&rnd, 7);
    for (int s = 1; s <= 6; s++) {
        struct shard_arc *a;
        uint32_t n;
        assert_int_equal(shard_ring_arcs(&r, (shard_id)s, &a, &n), 0);
        assert_true(n >= 1 && n <= 21);
        for (uint32_t i = 0; i < n; i++) {
            assert_true(a[i].first <= a[i].last);
            if (i > 0) /* sorted and merged: a gap between arcs */
                assert_true(a[i - 1].last + 1 < a[i].first);
            assert_int_equal(shard_ring_owner(&r, a[i].first), s);
            assert_int_equal(shard_ring_owner(&r, a[i].last), s);
            uint64_t mid = a[i].first + (a[i].last - a[i].first) / 2;
            assert_int_equal(shard_ring_owner(&r, mid), s);
        }
        all = realloc(all, (n_all + n) * sizeof(*all));
        memcpy(all + n_all, a, n * sizeof(*a));
        n_all += n;
        free(a);
    }
    /* Sort all arcs by first: they must chain from 0 to 2^64 - 1. */
    for (uint32_t i = 1; i < n_all; i++)
        for (uint32_t j = i; j > 0 && all[j - 1].first > all[j].first; j--) {
            struct shard_arc t = all[j];
            all[j] = all[j - 1];
            all[j - 1] = t;
        }
    assert_true(all[0].first == 0);
    for (uint32_t i = 1; i < n_all; i++)
        assert_true(all[i - 1].last + 1 == all[i].first);
    assert_true(all[n_all - 1].last == UINT64_MAX);
    free(all);

    struct shard_arc *none;
    uint32_t n_none;
    assert_int_equal(shard_ring_arcs(&r, 77, &none, &n_none), 0);
    assert_int_equal(n_none, 0);
    assert_null(none);
    shard_ring_free(&r);

    /* A lone point owns the whole ring as one arc. */
    struct shard_point one = {12345, 3};
    struct shard_ring lone = {1, &one};
    struct shard_arc *a;
    uint32_t n;
    assert_int_equal(shard_ring_arcs(&lone, 3, &a, &n), 0);
    assert_int_equal(n, 1);
    assert_true(a[0].first == 0 && a[0].last == UINT64_MAX);
    free(a);
    assert_true(shard_ring_share(&lone, 3) == 1.0);
}

static void check_diff(const struct shard_ring *a, const struct shard_ring *b,
                       uint64_t seed)
{
    struct shard_move *mv;
    uint32_t n;
    assert_int_equal(shard_ring_diff(a, b, &mv, &n), 0);
    for (uint32_t i = 0; i < n; i++) {
        assert_true(mv[i].first <= mv[i].last);
        assert_true(mv[i].from != mv[i].to);
        if (i > 0)
            assert_true(mv[i - 1].last < mv[i].first);
        assert_int_equal(shard_ring_owner(a, mv[i].first), mv[i].from);
        assert_int_equal(shard_ring_owner(b, mv[i].last), mv[i].to);
    }
    struct rk_rand rnd;
    rk_rand_seed(&rnd, seed);
    for (int k = 0; k < 20000; k++) {
        uint64_t h = rk_rand_next(&rnd);
        if (k % 4 == 0 && n > 0) { /* probe arc edges */
            struct shard_move *m = &mv[rk_rand_below(&rnd, n)];
            h = k % 8 ? m->first : m->last;
            if (k % 3 == 0)
                h = k % 8 ? m->first - 1 : m->last + 1;
        }
        const struct shard_move *hit = NULL;
        for (uint32_t i = 0; i < n; i++)
            if (mv[i].first <= h && h <= mv[i].last)
                hit = &mv[i];
        shard_id oa = shard_ring_owner(a, h), ob = shard_ring_owner(b, h);
        if (oa == ob) {
            assert_null(hit);
        } else {
            assert_non_null(hit);
            assert_int_equal(hit->from, oa);
            assert_int_equal(hit->to, ob);
        }
    }
    free(mv);
}

static void test_diff(void **state)
{
    (void)state;
    shard_id four[4] = {1, 2, 3, 4}, five[5] = {1, 2, 3, 4, 5};
    struct shard_ring a, b;
    assert_int_equal(shard_ring_build(&a, four, 4, 16, SHARD_RING_HASHED), 0);
    assert_int_equal(shard_ring_build(&b, five, 5, 16, SHARD_RING_HASHED), 0);
    struct shard_move *mv;
    uint32_t n;
    assert_int_equal(shard_ring_diff(&a, &a, &mv, &n), 0);
    assert_int_equal(n, 0);
    assert_null(mv);
    check_diff(&a, &b, 11);
    check_diff(&b, &a, 12);
    /* Adding shard 5 only moves keys to 5. */
    assert_int_equal(shard_ring_diff(&a, &b, &mv, &n), 0);
    assert_true(n > 0);
    for (uint32_t i = 0; i < n; i++)
        assert_int_equal(mv[i].to, 5);
    free(mv);
    struct shard_ring empty = {0, NULL};
    assert_int_equal(shard_ring_diff(&a, &empty, &mv, &n), RK_EINVAL);

    /* Rings with a point at 0 and at the top: the wrap piece. */
    struct shard_point p1[2] = {{0, 1}, {1000, 2}};
    struct shard_point p2[2] = {{500, 2}, {UINT64_MAX, 1}};
    struct shard_ring x = {2, p1}, y = {2, p2};
    check_diff(&x, &y, 13);
    check_diff(&y, &x, 14);
    shard_ring_free(&a);
    shard_ring_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hashtag_rules),
        cmocka_unit_test(test_hashtag_same_shard),
        cmocka_unit_test(test_point_hash_layout),
        cmocka_unit_test(test_lookup_and_wrap),
        cmocka_unit_test(test_lookup_matches_scan),
        cmocka_unit_test(test_build_deterministic),
        cmocka_unit_test(test_build_rejects),
        cmocka_unit_test(test_distribution_uniform),
        cmocka_unit_test(test_arcs_tile_ring),
        cmocka_unit_test(test_diff),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
