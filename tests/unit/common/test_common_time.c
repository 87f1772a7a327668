/* rk_time: monotonic clock moves forward, sleep lasts at least its time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "rk_time.h"
#include "test_common.h"

static void test_monotonic_never_goes_back(void **state)
{
    (void)state;
    uint64_t prev = rk_time_mono_ns();
    for (int i = 0; i < 10000; i++) {
        uint64_t now = rk_time_mono_ns();
        assert_true(now >= prev);
        prev = now;
    }
    assert_true(rk_time_mono_ms() <= rk_time_mono_ns() / RK_NS_PER_MS + 1);
}

static void test_sleep_lasts_at_least(void **state)
{
    (void)state;
    uint64_t t0 = rk_time_mono_ns();
    rk_time_sleep_ms(5);
    assert_true(rk_time_since_ns(t0) >= 5 * RK_NS_PER_MS);
    assert_int_equal(rk_time_since_ns(UINT64_MAX), 0);
}

static void test_wall_clock_is_after_2020(void **state)
{
    (void)state;
    /* 2020-01-01T00:00:00Z in ms. */
    assert_true(rk_time_wall_ms() > 1577836800000ULL);
    assert_true(rk_time_wall_ns() / RK_NS_PER_MS >= 1577836800000ULL);
}

int test_common_time_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_monotonic_never_goes_back),
        cmocka_unit_test(test_sleep_lasts_at_least),
        cmocka_unit_test(test_wall_clock_is_after_2020),
    };
    return cmocka_run_group_tests_name("common_time", tests, NULL, NULL);
}
