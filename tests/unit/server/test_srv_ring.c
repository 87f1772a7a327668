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
    srv_ring_free(&r); /* harmless on an empty ring */
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

/* Keys spread over all shards in nearly equal shares (balanced layout). */
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
        assert_true(counts[s] > n_keys / 8 * 9 / 10);
        assert_true(counts[s] < n_keys / 8 * 11 / 10);
    }
    /* Every shard owns exactly `vnodes` points. */
    unsigned pts[9] = {0};
    for (uint32_t i = 0; i < r.n_points; i++)
        pts[r.points[i].shard]++;
    for (int s = 1; s <= 8; s++)
        assert_int_equal(pts[s], SRV_RING_DEFAULT_VNODES);
    srv_ring_free(&r);
}

/* Same inputs, same routing (the property every node relies on); a client
 * that owns only the points (the shard map) finds the same shard; hash tags
 * keep related keys together. */
static void test_deterministic_and_map_agrees(void **state)
{
    struct srv_ring a, b;
    assert_int_equal(srv_ring_init(&a, 8, 64), 0);
    assert_int_equal(srv_ring_init(&b, 8, 64), 0);
    for (int i = 0; i < 20000; i++) {
        char k[32];
        int n = snprintf(k, sizeof(k), "k%d", i);
        uint32_t sa = srv_ring_lookup(&a, k, (size_t)n);
        assert_int_equal(sa, srv_ring_lookup(&b, k, (size_t)n));
        /* First point at or after the key's hash, wrapping. */
        uint64_t h = srv_ring_hash(k, (size_t)n);
        uint32_t j = 0;
        while (j < a.n_points && a.points[j].hash < h)
            j++;
        if (j == a.n_points)
            j = 0;
        assert_int_equal(sa, a.points[j].shard);
    }
    uint32_t s1 = srv_ring_lookup(&a, "{user42}:name", 13);
    uint32_t s2 = srv_ring_lookup(&a, "{user42}:mail", 13);
    assert_int_equal(s1, s2);
    assert_int_equal(srv_ring_hash("{user42}:x", 10),
                     srv_ring_hash("user42", 6));
    uint32_t s = srv_ring_lookup(&a, "", 0);
    assert_true(s >= 1 && s <= 8);
    srv_ring_free(&a);
    srv_ring_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invalid),
        cmocka_unit_test(test_sorted_and_in_range),
        cmocka_unit_test(test_balance),
        cmocka_unit_test(test_deterministic_and_map_agrees),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
