/* libringkv API contracts that need no cluster: argument checks, status
 * texts, options, and a call against endpoints nobody listens on failing
 * with UNAVAILABLE/TIMEOUT within its deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "ringkv/ringkv.h"

static void statuses_have_text(void **state)
{
    (void)state;
    for (int s = RINGKV_OK; s <= RINGKV_PROTOCOL; s++) {
        assert_non_null(ringkv_strerror((ringkv_status)s));
        assert_string_not_equal(ringkv_status_name((ringkv_status)s),
                                "UNKNOWN");
    }
    assert_string_equal(ringkv_status_name((ringkv_status)999), "UNKNOWN");
    assert_string_equal(ringkv_status_name(RINGKV_NOT_FOUND), "NOT_FOUND");
}

static void bad_endpoints_refused(void **state)
{
    (void)state;
    ringkv_options o;
    ringkv_options_init(&o);
    ringkv_t *c = (ringkv_t *)1;
    o.endpoints = "";
    assert_int_equal(ringkv_open(&o, &c), RINGKV_INVALID);
    o.endpoints = "no-port";
    assert_int_equal(ringkv_open(&o, &c), RINGKV_INVALID);
    o.endpoints = "127.0.0.1:99999";
    assert_int_equal(ringkv_open(&o, &c), RINGKV_INVALID);
    assert_null(c);
}

static void bad_arguments_refused(void **state)
{
    (void)state;
    ringkv_options o;
    ringkv_options_init(&o);
    o.endpoints = "127.0.0.1:1";
    ringkv_t *c;
    assert_int_equal(ringkv_open(&o, &c), RINGKV_OK);
    ringkv_value v;
    assert_int_equal(ringkv_get(c, "", 0, RINGKV_LINEARIZABLE, &v),
                     RINGKV_INVALID);
    assert_int_equal(ringkv_put(c, NULL, 3, "x", 1, NULL), RINGKV_INVALID);
    assert_int_equal(ringkv_get(c, "k", 1, (ringkv_consistency)9, &v),
                     RINGKV_INVALID);
    ringkv_expect e = {.kind = (ringkv_expect_kind)7};
    assert_int_equal(ringkv_cas(c, "k", 1, &e, "v", 1, false, NULL, NULL),
                     RINGKV_INVALID);
    ringkv_close(c);
}

/* Nobody listens: the call retries with backoff and gives up at its
 * deadline with TIMEOUT; the breaker of the endpoint is then open. */
static void dead_endpoints_time_out(void **state)
{
    (void)state;
    ringkv_options o;
    ringkv_options_init(&o);
    o.endpoints = "127.0.0.1:1,127.0.0.1:2";
    o.timeout_ms = 300;
    o.attempt_timeout_ms = 100;
    o.breaker_failures = 2;
    ringkv_t *c;
    assert_int_equal(ringkv_open(&o, &c), RINGKV_OK);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ringkv_status st = ringkv_put(c, "k", 1, "v", 1, NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(st, RINGKV_TIMEOUT);
    assert_true(strlen(ringkv_last_error(c)) > 0);
    double el = (double)(t1.tv_sec - t0.tv_sec) +
                (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(el < 10.0); /* bounded, not a speed claim */
    ringkv_stats s;
    ringkv_get_stats(c, &s);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.timeouts, 1);
    assert_true(s.breaker_opened >= 1);
    ringkv_close(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(statuses_have_text),
        cmocka_unit_test(bad_endpoints_refused),
        cmocka_unit_test(bad_arguments_refused),
        cmocka_unit_test(dead_endpoints_time_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
