/* ringkvd's event loop: flush hook, tick timer, signals, counted shutdown. */
#include "srv_loop.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rk_assert.h"
#include "rk_err.h"
#include "rk_log.h"

static void on_loop_close(uv_handle_t *h)
{
    struct srv_loop *l = h->data;
    RK_ASSERT(l->pending > 0);
    l->pending--;
}

static void on_flush(uv_prepare_t *h)
{
    struct srv_loop *l = h->data;
    l->iterations++;
    if (l->hooks.before_sleep != NULL)
        l->hooks.before_sleep(l->hooks.data);
}

static void on_tick(uv_timer_t *h)
{
    struct srv_loop *l = h->data;
    l->ticks++;
    if (l->hooks.on_tick != NULL && !l->stopping)
        l->hooks.on_tick(l->hooks.data);
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct srv_loop *l = h->data;
    if (l->stopping) {
        rk_log(RK_LOG_WARN, "second %s during shutdown: exiting now",
               signum == SIGINT ? "SIGINT" : "SIGTERM");
        _exit(1);
    }
    rk_log(RK_LOG_INFO, "received %s, shutting down",
           signum == SIGINT ? "SIGINT" : "SIGTERM");
    l->stop_signal = signum;
    srv_loop_stop(l);
}

int srv_loop_init(struct srv_loop *l, uint32_t tick_ms,
                  const struct srv_loop_hooks *hooks)
{
    memset(l, 0, sizeof(*l));
    l->tick_ms = tick_ms == 0 ? 1 : tick_ms;
    if (hooks != NULL)
        l->hooks = *hooks;
    /* A peer that hangs up must cost an EPIPE, not the process. */
    signal(SIGPIPE, SIG_IGN);

    int rc = uv_loop_init(&l->loop);
    if (rc != 0) {
        rk_log(RK_LOG_ERROR, "uv_loop_init: %s", uv_strerror(rc));
        return RK_EIO;
    }
    l->loop.data = l;
    uv_prepare_init(&l->loop, &l->flush);
    uv_timer_init(&l->loop, &l->tick);
    uv_signal_init(&l->loop, &l->sigterm);
    uv_signal_init(&l->loop, &l->sigint);
    l->flush.data = l->tick.data = l->sigterm.data = l->sigint.data = l;
    l->pending = 4;

    if ((rc = uv_prepare_start(&l->flush, on_flush)) != 0 ||
        (rc = uv_timer_start(&l->tick, on_tick, l->tick_ms, l->tick_ms)) !=
            0 ||
        (rc = uv_signal_start(&l->sigterm, on_signal, SIGTERM)) != 0 ||
        (rc = uv_signal_start(&l->sigint, on_signal, SIGINT)) != 0) {
        rk_log(RK_LOG_ERROR, "event loop set-up: %s", uv_strerror(rc));
        srv_loop_stop(l);
        uv_run(&l->loop, UV_RUN_DEFAULT);
        uv_loop_close(&l->loop);
        return RK_EIO;
    }
    return 0;
}

void srv_loop_stop(struct srv_loop *l)
{
    if (l->stopping)
        return;
    l->stopping = true;
    if (l->hooks.on_stop != NULL)
        l->hooks.on_stop(l->hooks.data);
    /* The flush hook stays until the very end so that the owner's last
     * batches still flush while its handles close; it is closed when the
     * loop has nothing else left (see srv_loop_run). */
    uv_close((uv_handle_t *)&l->tick, on_loop_close);
    uv_close((uv_handle_t *)&l->sigterm, on_loop_close);
    uv_close((uv_handle_t *)&l->sigint, on_loop_close);
}

static void log_open_handle(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        rk_log(RK_LOG_ERROR, "handle left open at exit: %s",
               uv_handle_type_name(uv_handle_get_type(h)));
}

int srv_loop_run(struct srv_loop *l)
{
    /* A prepare handle keeps the loop alive; run until stopping and until
     * only the flush handle is left, then close it. */
    uv_unref((uv_handle_t *)&l->flush);
    for (;;) {
        uv_run(&l->loop, UV_RUN_DEFAULT);
        if (l->stopping)
            break;
        /* uv_run returned without a stop: nothing is active (all the owner's
         * handles are gone and the timer was closed). Treat it as a stop. */
        srv_loop_stop(l);
    }
    uv_close((uv_handle_t *)&l->flush, on_loop_close);
    uv_run(&l->loop, UV_RUN_DEFAULT);
    int rv = 0;
    if (uv_loop_close(&l->loop) != 0) {
        uv_walk(&l->loop, log_open_handle, NULL);
        rv = RK_EIO;
    }
    RK_ASSERT(rv != 0 || l->pending == 0);
    return rv;
}

uint64_t srv_loop_now(const struct srv_loop *l)
{
    return uv_now((uv_loop_t *)&l->loop);
}
