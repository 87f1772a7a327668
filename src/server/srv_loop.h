/* ringkvd's event loop: one libuv loop, a before-sleep flush hook, ticks, signals. */
#ifndef SRV_LOOP_H
#define SRV_LOOP_H

/*
 * One thread owns the loop and everything attached to it (Redis habit). Each
 * iteration ends in the flush hook (a uv_prepare_t, Redis `beforeSleep`):
 * the multi-raft driver gathers the ready batches of every group there and
 * hands ONE write batch to the storage thread. A repeating uv_timer_t drives
 * the Raft logical clock.
 *
 * Shutdown: SIGTERM or SIGINT (or srv_loop_stop()) calls hooks.on_stop once;
 * the owner closes its handles; the loop closes its own with counted closes
 * (uv_close -> on_close -> --pending) and srv_loop_run() returns once every
 * handle is gone. A second signal while stopping exits at once (status 1),
 * like most servers, for an operator whose node hangs on shutdown.
 */

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

struct srv_loop_hooks {
    void *data;
    void (*before_sleep)(void *data); /* flush point, every iteration */
    void (*on_tick)(void *data);      /* every tick_ms */
    void (*on_stop)(void *data);      /* shutdown begins: close your handles */
};

struct srv_loop {
    uv_loop_t loop;
    uv_prepare_t flush;
    uv_timer_t tick;
    uv_signal_t sigterm;
    uv_signal_t sigint;
    unsigned pending;  /* the loop's own handles still open */
    bool stopping;
    int stop_signal;   /* the signal that stopped us, 0 if none */
    uint32_t tick_ms;
    uint64_t ticks;
    uint64_t iterations;
    struct srv_loop_hooks hooks;
};

/* Sets the loop up (SIGPIPE is ignored process-wide). Returns 0 or RK_EIO. */
int srv_loop_init(struct srv_loop *l, uint32_t tick_ms,
                  const struct srv_loop_hooks *hooks);

/* Runs until shutdown completes. Returns 0, or RK_EIO if handles were left
 * open (they are logged). */
int srv_loop_run(struct srv_loop *l);

/* Begins shutdown (idempotent; safe from any loop callback). */
void srv_loop_stop(struct srv_loop *l);

/* Monotonic milliseconds of the loop's current iteration. */
uint64_t srv_loop_now(const struct srv_loop *l);

#endif
