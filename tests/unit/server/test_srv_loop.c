/* Unit tests of ringkvd's event loop: flush hook, ticks, signal shutdown. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#include <cmocka.h>

#include "srv_loop.h"

struct owner {
    struct srv_loop *l;
    uv_timer_t own_timer; /* a handle the owner closes on stop */
    int flushes;
    int ticks;
    int stops;
    int closed;
    int stop_after_ticks;
    bool use_signal;
};

static void on_own_close(uv_handle_t *h)
{
    struct owner *o = h->data;
    o->closed++;
}

static void on_own_timer(uv_timer_t *t)
{
    (void)t;
}

static void before_sleep(void *data)
{
    struct owner *o = data;
    o->flushes++;
}

static void on_tick(void *data)
{
    struct owner *o = data;
    o->ticks++;
    if (o->ticks == o->stop_after_ticks) {
        if (o->use_signal)
            uv_kill(getpid(), SIGTERM);
        else
            srv_loop_stop(o->l);
    }
}

static void on_stop(void *data)
{
    struct owner *o = data;
    o->stops++;
    uv_close((uv_handle_t *)&o->own_timer, on_own_close);
}

static void run_owner(bool use_signal)
{
    struct srv_loop l;
    struct owner o = {.l = &l, .stop_after_ticks = 3, .use_signal = use_signal};
    struct srv_loop_hooks hooks = {.data = &o,
                                   .before_sleep = before_sleep,
                                   .on_tick = on_tick,
                                   .on_stop = on_stop};
    assert_int_equal(srv_loop_init(&l, 5, &hooks), 0);
    uv_timer_init(&l.loop, &o.own_timer);
    o.own_timer.data = &o;
    uv_timer_start(&o.own_timer, on_own_timer, 1000, 1000);
    assert_int_equal(srv_loop_run(&l), 0);
    assert_int_equal(o.stops, 1);
    assert_int_equal(o.closed, 1);
    assert_int_equal(o.ticks, 3);
    assert_true(o.flushes >= 3);
    assert_int_equal(l.pending, 0);
    assert_int_equal(l.stop_signal, use_signal ? SIGTERM : 0);
}

static void test_stop_from_tick(void **state)
{
    run_owner(false);
}

static void test_stop_by_sigterm(void **state)
{
    run_owner(true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stop_from_tick),
        cmocka_unit_test(test_stop_by_sigterm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
