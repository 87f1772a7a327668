/* rk_hist: bucket arithmetic, percentiles, merge, iteration. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "rk_hist.h"
#include "rk_rand.h"
#include "test_common.h"

static void test_buckets_tile_the_range(void **state)
{
    (void)state;
    assert_int_equal(rk_hist_bucket_lo(0), 0);
    for (uint32_t i = 0; i + 1 < RK_HIST_BUCKETS; i++) {
        uint64_t lo = rk_hist_bucket_lo(i), hi = rk_hist_bucket_hi(i);
        assert_true(lo <= hi);
        assert_true(hi + 1 == rk_hist_bucket_lo(i + 1));
        assert_int_equal(rk_hist_bucket(lo), i);
        assert_int_equal(rk_hist_bucket(hi), i);
        /* Width at most 1/64 of the bucket's smallest value. */
        if (lo >= RK_HIST_SUB)
            assert_true((hi - lo + 1) * RK_HIST_SUB <= lo);
    }
    assert_true(rk_hist_bucket_hi(RK_HIST_BUCKETS - 1) == UINT64_MAX);
    assert_int_equal(rk_hist_bucket(UINT64_MAX), RK_HIST_BUCKETS - 1);

    struct rk_rand r;
    rk_rand_seed(&r, 7);
    for (int i = 0; i < 100000; i++) {
        uint64_t v = rk_rand_next(&r) >> rk_rand_below(&r, 64);
        uint32_t b = rk_hist_bucket(v);
        assert_true(b < RK_HIST_BUCKETS);
        assert_true(rk_hist_bucket_lo(b) <= v && v <= rk_hist_bucket_hi(b));
    }
}

static void test_empty_histogram(void **state)
{
    (void)state;
    struct rk_hist *h = malloc(sizeof *h);
    rk_hist_init(h);
    struct rk_hist_summary s;
    rk_hist_summarize(h, &s);
    assert_int_equal(s.count, 0);
    assert_int_equal(s.min, 0);
    assert_int_equal(s.max, 0);
    assert_int_equal(s.p50, 0);
    assert_true(s.mean == 0.0);
    struct rk_hist_iter it = {0};
    assert_false(rk_hist_next(h, &it));
    free(h);
}

static void assert_close(uint64_t got, uint64_t want)
{
    /* Within one bucket width (1/64) above, never below. */
    assert_true(got >= want);
    assert_true((got - want) * RK_HIST_SUB <= want);
}

static void test_percentiles_of_uniform_values(void **state)
{
    (void)state;
    struct rk_hist *h = malloc(sizeof *h);
    rk_hist_init(h);
    for (uint64_t v = 1; v <= 100000; v++)
        rk_hist_record(h, v * 1000); /* 1 us .. 100 ms */
    struct rk_hist_summary s;
    rk_hist_summarize(h, &s);
    assert_int_equal(s.count, 100000);
    assert_int_equal(s.min, 1000);
    assert_int_equal(s.max, 100000000);
    assert_true(s.mean == 50000500.0);
    assert_close(s.p50, 50000000);
    assert_close(s.p90, 90000000);
    assert_close(s.p99, 99000000);
    assert_close(s.p999, 99900000);
    assert_int_equal(rk_hist_percentile(h, 100.0), 100000000);
    assert_int_equal(rk_hist_percentile(h, 0.0), 1000);
    free(h);
}

static void test_small_exact_values(void **state)
{
    (void)state;
    struct rk_hist *h = malloc(sizeof *h);
    rk_hist_init(h);
    /* Below 64 every value has its own bucket: percentiles are exact. */
    for (uint64_t v = 1; v <= 10; v++)
        rk_hist_record_n(h, v, 10);
    assert_int_equal(rk_hist_percentile(h, 50.0), 5);
    assert_int_equal(rk_hist_percentile(h, 50.1), 6);
    assert_int_equal(rk_hist_percentile(h, 99.0), 10);
    assert_int_equal(rk_hist_percentile(h, 1.0), 1);
    rk_hist_record_n(h, 3, 0); /* no-op */
    assert_int_equal(rk_hist_count(h), 100);
    free(h);
}

static void test_merge_equals_recording_all(void **state)
{
    (void)state;
    struct rk_hist *a = malloc(sizeof *a), *b = malloc(sizeof *b),
                   *all = malloc(sizeof *all);
    rk_hist_init(a);
    rk_hist_init(b);
    rk_hist_init(all);
    struct rk_rand r;
    rk_rand_seed(&r, 99);
    for (int i = 0; i < 20000; i++) {
        uint64_t v = rk_rand_below(&r, 1000000000);
        rk_hist_record((i & 1) ? a : b, v);
        rk_hist_record(all, v);
    }
    rk_hist_merge(a, b);
    assert_int_equal(a->count, all->count);
    assert_int_equal(a->sum, all->sum);
    assert_int_equal(a->min, all->min);
    assert_int_equal(a->max, all->max);
    assert_memory_equal(a->buckets, all->buckets, sizeof a->buckets);
    free(a);
    free(b);
    free(all);
}

static void test_iteration_and_count_le(void **state)
{
    (void)state;
    struct rk_hist *h = malloc(sizeof *h);
    rk_hist_init(h);
    rk_hist_record_n(h, 10, 3);
    rk_hist_record_n(h, 1000, 2);
    rk_hist_record(h, 1000000);
    struct rk_hist_iter it = {0};
    assert_true(rk_hist_next(h, &it));
    assert_int_equal(it.lo, 10);
    assert_int_equal(it.hi, 10);
    assert_int_equal(it.count, 3);
    assert_int_equal(it.cumulative, 3);
    assert_true(rk_hist_next(h, &it));
    assert_true(it.lo <= 1000 && 1000 <= it.hi);
    assert_int_equal(it.cumulative, 5);
    assert_true(rk_hist_next(h, &it));
    assert_int_equal(it.cumulative, 6);
    assert_false(rk_hist_next(h, &it));

    assert_int_equal(rk_hist_count_le(h, 9), 0);
    assert_int_equal(rk_hist_count_le(h, 10), 3);
    assert_int_equal(rk_hist_count_le(h, 999), 3);
    assert_int_equal(rk_hist_count_le(h, 2000), 5);
    assert_int_equal(rk_hist_count_le(h, UINT64_MAX), 6);
    free(h);
}

static void test_sum_saturates(void **state)
{
    (void)state;
    struct rk_hist *h = malloc(sizeof *h);
    rk_hist_init(h);
    rk_hist_record_n(h, UINT64_MAX, 3);
    assert_true(h->sum == UINT64_MAX);
    assert_true(rk_hist_max(h) == UINT64_MAX);
    assert_true(rk_hist_percentile(h, 50.0) == UINT64_MAX);
    free(h);
}

int test_common_hist_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_buckets_tile_the_range),
        cmocka_unit_test(test_empty_histogram),
        cmocka_unit_test(test_percentiles_of_uniform_values),
        cmocka_unit_test(test_small_exact_values),
        cmocka_unit_test(test_merge_equals_recording_all),
        cmocka_unit_test(test_iteration_and_count_le),
        cmocka_unit_test(test_sum_saturates),
    };
    return cmocka_run_group_tests_name("common_hist", tests, NULL, NULL);
}
