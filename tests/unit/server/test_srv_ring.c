/* Unit tests of the minimal consistent-hash ring used by ringkvd. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "rk_err.h"
#include "srv_ring.h"

static void test_invalid(void **state)
{
    struct srv_ring r;
    assert_int_equal(srv_ring_init(&r, 0, 8), RK_EINVAL);
    assert_int_equal(srv_ring_init(&r, 8, 0), RK_EINVAL);
    assert_int_equal(srv_ring_init(&r, 1u << 20, 1u << 10), RK_EINVAL);
}

static void test_sorted_and_in_range(void **state)
{
    struct srv_ring r;
    assert_int_equal(srv_ring_init(&r, 8, 64), 0);
    assert_int_equal(r.n_points, 8 * 64);
    for (uint32_t i = 1; i < r.n_points; i++)
        assert_true(r.points[i - 1].hash <= r.points[i].hash);
    for (int i = 0; i < 1000; i++) {
        char k[32];
        int n = snprintf(k, sizeof(k), "key-%d", i);
        uint32_t s = srv_ring_lookup(&r, k, (size_t)n);
        assert_true(s >= 1 && s <= 8);
    }
    srv_ring_free(&r);
}

/* Keys spread over all shards, none with a grossly unfair share. */
static void test_balance(void **state)
{
    struct srv_ring r;
    assert_int_equal(srv_ring_init(&r, 8, SRV_RING_DEFAULT_VNODES), 0);
    unsigned counts[9] = {0};
    const int n_keys = 80000;
    for (int i = 0; i < n_keys; i++) {
        char k[32];
        int n = snprintf(k, sizeof(k), "user:%d", i);
        counts[srv_ring_lookup(&r, k, (size_t)n)]++;
    }
    assert_int_equal(counts[0], 0);
    for (int s = 1; s <= 8; s++) {
        assert_true(counts[s] > n_keys / 8 / 2);
        assert_true(counts[s] < n_keys / 8 * 2);
    }
    srv_ring_free(&r);
}

/* Same inputs, same routing: the property every node relies on. Also,
 * adding a shard moves only about 1/(n+1) of the keys. */
static void test_deterministic_and_consistent(void **state)
{
    struct srv_ring a, b, c;
    assert_int_equal(srv_ring_init(&a, 8, 64), 0);
    assert_int_equal(srv_ring_init(&b, 8, 64), 0);
    assert_int_equal(srv_ring_init(&c, 9, 64), 0);
    int moved = 0;
    const int n_keys = 20000;
    for (int i = 0; i < n_keys; i++) {
        char k[32];
        int n = snprintf(k, sizeof(k), "k%d", i);
        uint32_t sa = srv_ring_lookup(&a, k, (size_t)n);
        assert_int_equal(sa, srv_ring_lookup(&b, k, (size_t)n));
        uint32_t sc = srv_ring_lookup(&c, k, (size_t)n);
        if (sc != sa) {
            assert_int_equal(sc, 9); /* keys only move to the new shard */
            moved++;
        }
    }
    assert_true(moved > n_keys / 9 / 2 && moved < n_keys / 9 * 2);
    /* The empty key is routable too (the server rejects it earlier). */
    uint32_t s = srv_ring_lookup(&a, "", 0);
    assert_true(s >= 1 && s <= 8);
    srv_ring_free(&a);
    srv_ring_free(&b);
    srv_ring_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_sorted_and_in_range),
        cmocka_unit_test(test_balance),
        cmocka_unit_test(test_deterministic_and_consistent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
