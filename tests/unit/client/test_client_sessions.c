/* libringkv's exactly-once sessions: a write takes a free session of its
 * shard's list, so the servers keep about one session record per write in
 * flight per shard, not one per session per shard. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "rkc_int.h"

struct fx {
    uv_loop_t loop;
    struct ringkv_async a;
};

static int setup(void **state)
{
    struct fx *f = test_calloc(1, sizeof(*f));
    assert_int_equal(uv_loop_init(&f->loop), 0);
    ringkv_options o;
    ringkv_options_init(&o);
    o.endpoints = "127.0.0.1:1";
    o.client_id = 1000;
    assert_int_equal(rkc_async_init(&f->a, &f->loop, &o), RINGKV_OK);
    *state = f;
    return 0;
}

static void closed(void *arg)
{
    struct fx *f = arg;
    rkc_async_free_state(&f->a);
}

static int teardown(void **state)
{
    struct fx *f = *state;
    rkc_async_shutdown(&f->a, closed, f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    test_free(f);
    return 0;
}

static uint32_t take(struct fx *f, uint64_t shard)
{
    uint32_t s = UINT32_MAX;
    assert_int_equal(rkc__session_take(&f->a, shard, &s), 0);
    assert_true(s < f->a.n_sess);
    return s;
}

/* A session given back serves the next write to its own shard, never one
 * to another shard (that would add a session record there). */
static void sessions_stay_with_their_shard(void **state)
{
    struct fx *f = *state;
    uint32_t s3 = take(f, 3);
    rkc__session_give(&f->a, s3);
    uint32_t s5 = take(f, 5);
    assert_int_not_equal(s5, s3);
    assert_int_not_equal(f->a.sess[s5].id, f->a.sess[s3].id);
    assert_int_equal(take(f, 3), s3);
    rkc__session_give(&f->a, s5);
    assert_int_equal(take(f, 5), s5);
    assert_int_equal(f->a.n_sess, 2);
}

/* Writes in flight to one shard hold distinct sessions; once they are all
 * back, the same number of writes reuses them (no session is created for a
 * shard beyond its peak of writes in flight), whatever else ran between. */
static void peak_in_flight_bounds_sessions(void **state)
{
    struct fx *f = *state;
    enum { N = 100 };
    uint32_t held[N];
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < N; i++) {
            held[i] = take(f, 7);
            for (int j = 0; j < i; j++)
                assert_int_not_equal(held[i], held[j]);
        }
        /* Another shard's writes meanwhile. */
        uint32_t other = take(f, 8);
        for (int i = N - 1; i >= 0; i--)
            rkc__session_give(&f->a, held[i]);
        rkc__session_give(&f->a, other);
        assert_int_equal(f->a.n_sess, N + 1);
    }
    /* Ids are distinct across all of them. */
    for (uint32_t i = 0; i < f->a.n_sess; i++)
        for (uint32_t j = 0; j < i; j++)
            assert_int_not_equal(f->a.sess[i].id, f->a.sess[j].id);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(sessions_stay_with_their_shard,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(peak_in_flight_bounds_sessions,
                                        setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
