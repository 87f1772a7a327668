/* Backoff and circuit breaker of libringkv, driven by a fake clock. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "rkc_policy.h"

#define MS 1000000ull

static const struct rkc_breaker_cfg CFG = {
    .failures = 3,
    .window_ns = 10000 * MS,
    .error_pct = 50,
    .min_calls = 20,
    .cooldown_ns = 1000 * MS,
};

/* Full jitter: every delay lies in [0, min(cap, base * 2^(n-1))], the
 * ceiling doubles per attempt up to the cap, and the draws spread over the
 * whole range (not stuck at one end). */
static void backoff_full_jitter_bounds(void **state)
{
    (void)state;
    struct rk_rand r;
    rk_rand_seed(&r, 42);
    assert_int_equal(rkc_backoff_ns(0, 10 * MS, 500 * MS, &r), 0);
    for (uint32_t att = 1; att <= 12; att++) {
        uint64_t ceil = 10 * MS << (att - 1);
        if (ceil > 500 * MS)
            ceil = 500 * MS;
        uint64_t lo = UINT64_MAX, hi = 0;
        for (int i = 0; i < 2000; i++) {
            uint64_t d = rkc_backoff_ns(att, 10 * MS, 500 * MS, &r);
            assert_true(d <= ceil);
            lo = d < lo ? d : lo;
            hi = d > hi ? d : hi;
        }
        assert_true(lo < ceil / 10);
        assert_true(hi > ceil - ceil / 10);
    }
}

static void backoff_huge_attempt_saturates(void **state)
{
    (void)state;
    struct rk_rand r;
    rk_rand_seed(&r, 7);
    for (int i = 0; i < 100; i++)
        assert_true(rkc_backoff_ns(4000000000u, 10 * MS, 2000 * MS, &r) <=
                    2000 * MS);
}

static void breaker_opens_after_consecutive_failures(void **state)
{
    (void)state;
    struct rkc_breaker b;
    rkc_breaker_init(&b);
    uint64_t now = 5 * MS;
    assert_true(rkc_breaker_peek(&b, &CFG, now));
    rkc_breaker_failure(&b, &CFG, now);
    rkc_breaker_failure(&b, &CFG, now);
    assert_int_equal(rkc_breaker_state_at(&b, &CFG, now), RKC_BREAKER_CLOSED);
    rkc_breaker_success(&b, &CFG, now); /* resets the streak */
    rkc_breaker_failure(&b, &CFG, now);
    rkc_breaker_failure(&b, &CFG, now);
    assert_int_equal(rkc_breaker_state_at(&b, &CFG, now), RKC_BREAKER_CLOSED);
    rkc_breaker_failure(&b, &CFG, now);
    assert_int_equal(rkc_breaker_state_at(&b, &CFG, now), RKC_BREAKER_OPEN);
    assert_false(rkc_breaker_peek(&b, &CFG, now + 999 * MS));
    assert_int_equal(b.opened, 1);
}

static void breaker_half_open_single_probe(void **state)
{
    (void)state;
    struct rkc_breaker b;
    rkc_breaker_init(&b);
    uint64_t now = 0;
    for (int i = 0; i < 3; i++)
        rkc_breaker_failure(&b, &CFG, now);
    now += 1000 * MS; /* cool-down over */
    assert_int_equal(rkc_breaker_state_at(&b, &CFG, now),
                     RKC_BREAKER_HALF_OPEN);
    assert_true(rkc_breaker_peek(&b, &CFG, now));
    rkc_breaker_take(&b, &CFG, now);
    /* Only one probe at a time. */
    assert_false(rkc_breaker_peek(&b, &CFG, now));
    /* The probe fails: open again, for a whole new cool-down. */
    rkc_breaker_failure(&b, &CFG, now);
    assert_int_equal(rkc_breaker_state_at(&b, &CFG, now + 999 * MS),
                     RKC_BREAKER_OPEN);
    assert_int_equal(b.opened, 2);
    now += 1000 * MS;
    assert_true(rkc_breaker_peek(&b, &CFG, now));
    rkc_breaker_take(&b, &CFG, now);
    rkc_breaker_success(&b, &CFG, now); /* the probe succeeds: closed */
    assert_int_equal(rkc_breaker_state_at(&b, &CFG, now), RKC_BREAKER_CLOSED);
    assert_int_equal(b.closed, 1);
    assert_true(rkc_breaker_peek(&b, &CFG, now));
}

/* An error rate over the window opens even without a long streak. */
static void breaker_opens_on_error_rate(void **state)
{
    (void)state;
    struct rkc_breaker b;
    rkc_breaker_init(&b);
    uint64_t now = 0;
    /* fail, ok, fail, ok... : never 3 in a row, but 50% + one. */
    for (int i = 0; i < 10; i++) {
        rkc_breaker_failure(&b, &CFG, now);
        rkc_breaker_success(&b, &CFG, now);
        now += 10 * MS;
    }
    assert_int_equal(rkc_breaker_state_at(&b, &CFG, now), RKC_BREAKER_CLOSED);
    rkc_breaker_failure(&b, &CFG, now); /* 11 of 21 */
    assert_int_equal(rkc_breaker_state_at(&b, &CFG, now), RKC_BREAKER_OPEN);
}

/* Old failures slide out of the window: a low steady rate never opens. */
static void breaker_window_forgets(void **state)
{
    (void)state;
    struct rkc_breaker b;
    rkc_breaker_init(&b);
    uint64_t now = 0;
    for (int round = 0; round < 50; round++) {
        rkc_breaker_failure(&b, &CFG, now);
        for (int i = 0; i < 3; i++)
            rkc_breaker_success(&b, &CFG, now);
        now += 3000 * MS;
        assert_int_equal(rkc_breaker_state_at(&b, &CFG, now),
                         RKC_BREAKER_CLOSED);
    }
    /* A burst after a quiet period: the old calls no longer count. */
    now += 60000 * MS;
    assert_int_equal(b.calls[0] + b.calls[1] > 0, 1);
    rkc_breaker_failure(&b, &CFG, now);
    assert_int_equal(b.calls[1], 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(backoff_full_jitter_bounds),
        cmocka_unit_test(backoff_huge_attempt_saturates),
        cmocka_unit_test(breaker_opens_after_consecutive_failures),
        cmocka_unit_test(breaker_half_open_single_probe),
        cmocka_unit_test(breaker_opens_on_error_rate),
        cmocka_unit_test(breaker_window_forgets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
