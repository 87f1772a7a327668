/*
 * The client's resilience policies as pure functions of an explicit clock:
 * retry backoff (exponential with full jitter) and the per-node circuit
 * breaker. No I/O and no clock reads, so the unit tests drive them with a
 * fake clock.
 */
#ifndef RKC_POLICY_H
#define RKC_POLICY_H

#include <stdbool.h>
#include <stdint.h>

#include "rk_rand.h"

/* The delay before retry number `attempt` (1 = the first retry), in ns:
 * uniform in [0, min(cap, base * 2^(attempt-1))] ("full jitter"). */
uint64_t rkc_backoff_ns(uint32_t attempt, uint64_t base_ns, uint64_t cap_ns,
                        struct rk_rand *rng);

enum rkc_breaker_state {
    RKC_BREAKER_CLOSED = 0,
    RKC_BREAKER_OPEN = 1,
    RKC_BREAKER_HALF_OPEN = 2,
};

struct rkc_breaker_cfg {
    uint32_t failures;     /* consecutive failures that open */
    uint64_t window_ns;    /* error-rate window */
    uint32_t error_pct;    /* open above this rate over the window... */
    uint32_t min_calls;    /* ...once the window saw this many calls */
    uint64_t cooldown_ns;  /* open -> half-open */
};

/*
 * Closed: every call allowed; counts consecutive failures and, over a
 * sliding window (two half-windows), calls and failures. Open: nothing
 * allowed until the cool-down has passed; then half-open. Half-open: one
 * probe at a time; its success closes, its failure opens again.
 */
struct rkc_breaker {
    uint8_t state;
    bool probe_out;        /* half-open: the probe is in flight */
    uint32_t consecutive;  /* failures in a row */
    uint64_t opened_at;
    uint64_t win_start;    /* start of the current half-window */
    uint32_t calls[2], fails[2]; /* [0] current half-window, [1] previous */
    uint64_t opened, closed;     /* transitions, for statistics */
};

void rkc_breaker_init(struct rkc_breaker *b);
/* Whether a call may go to the node now (no state change). */
bool rkc_breaker_peek(const struct rkc_breaker *b,
                      const struct rkc_breaker_cfg *cfg, uint64_t now);
/* Takes the permission peek() granted: in half-open this is the probe. */
void rkc_breaker_take(struct rkc_breaker *b, const struct rkc_breaker_cfg *cfg,
                      uint64_t now);
void rkc_breaker_success(struct rkc_breaker *b,
                         const struct rkc_breaker_cfg *cfg, uint64_t now);
void rkc_breaker_failure(struct rkc_breaker *b,
                         const struct rkc_breaker_cfg *cfg, uint64_t now);
/* The state as an observer sees it at `now` (open turns half-open once the
 * cool-down has passed). */
enum rkc_breaker_state rkc_breaker_state_at(const struct rkc_breaker *b,
                                            const struct rkc_breaker_cfg *cfg,
                                            uint64_t now);

#endif
