/* Retry backoff and the circuit breaker (see rkc_policy.h). */
#include "rkc_policy.h"

uint64_t rkc_backoff_ns(uint32_t attempt, uint64_t base_ns, uint64_t cap_ns,
                        struct rk_rand *rng)
{
    if (attempt == 0)
        return 0;
    uint64_t ceil = base_ns;
    for (uint32_t i = 1; i < attempt && ceil < cap_ns; i++)
        ceil = ceil > UINT64_MAX / 2 ? UINT64_MAX : ceil * 2;
    if (ceil > cap_ns)
        ceil = cap_ns;
    return ceil == 0 ? 0 : rk_rand_below(rng, ceil + 1);
}

void rkc_breaker_init(struct rkc_breaker *b)
{
    *b = (struct rkc_breaker){0};
}

/* Slides the two half-windows forward to `now`. */
static void roll(struct rkc_breaker *b, const struct rkc_breaker_cfg *cfg,
                 uint64_t now)
{
    uint64_t half = cfg->window_ns / 2 ? cfg->window_ns / 2 : 1;
    if (now < b->win_start + half)
        return;
    if (now < b->win_start + 2 * half) {
        b->calls[1] = b->calls[0];
        b->fails[1] = b->fails[0];
        b->win_start += half;
    } else {
        b->calls[1] = b->fails[1] = 0;
        b->win_start = now;
    }
    b->calls[0] = b->fails[0] = 0;
}

static void set_open(struct rkc_breaker *b, uint64_t now)
{
    if (b->state != RKC_BREAKER_OPEN)
        b->opened++;
    b->state = RKC_BREAKER_OPEN;
    b->opened_at = now;
    b->probe_out = false;
}

static void set_closed(struct rkc_breaker *b, uint64_t now)
{
    if (b->state != RKC_BREAKER_CLOSED)
        b->closed++;
    b->state = RKC_BREAKER_CLOSED;
    b->probe_out = false;
    b->consecutive = 0;
    b->calls[0] = b->calls[1] = b->fails[0] = b->fails[1] = 0;
    b->win_start = now;
}

enum rkc_breaker_state rkc_breaker_state_at(const struct rkc_breaker *b,
                                            const struct rkc_breaker_cfg *cfg,
                                            uint64_t now)
{
    if (b->state == RKC_BREAKER_OPEN && now >= b->opened_at + cfg->cooldown_ns)
        return RKC_BREAKER_HALF_OPEN;
    return (enum rkc_breaker_state)b->state;
}

bool rkc_breaker_peek(const struct rkc_breaker *b,
                      const struct rkc_breaker_cfg *cfg, uint64_t now)
{
    switch (rkc_breaker_state_at(b, cfg, now)) {
    case RKC_BREAKER_CLOSED:
        return true;
    case RKC_BREAKER_HALF_OPEN:
        return !b->probe_out;
    default:
        return false;
    }
}

void rkc_breaker_take(struct rkc_breaker *b, const struct rkc_breaker_cfg *cfg,
                      uint64_t now)
{
    if (rkc_breaker_state_at(b, cfg, now) == RKC_BREAKER_HALF_OPEN) {
        b->state = RKC_BREAKER_HALF_OPEN;
        b->probe_out = true;
    }
}

void rkc_breaker_success(struct rkc_breaker *b,
                         const struct rkc_breaker_cfg *cfg, uint64_t now)
{
    if (b->state != RKC_BREAKER_CLOSED) {
        /* An answer from the node, probe or straggler: it is back. */
        set_closed(b, now);
        return;
    }
    roll(b, cfg, now);
    b->consecutive = 0;
    b->calls[0]++;
}

void rkc_breaker_failure(struct rkc_breaker *b,
                         const struct rkc_breaker_cfg *cfg, uint64_t now)
{
    if (b->state == RKC_BREAKER_HALF_OPEN) {
        set_open(b, now);
        return;
    }
    if (b->state == RKC_BREAKER_OPEN)
        return; /* stragglers sent before it opened */
    roll(b, cfg, now);
    b->consecutive++;
    b->calls[0]++;
    b->fails[0]++;
    uint32_t calls = b->calls[0] + b->calls[1];
    uint32_t fails = b->fails[0] + b->fails[1];
    if ((cfg->failures > 0 && b->consecutive >= cfg->failures) ||
        (cfg->error_pct > 0 && calls >= cfg->min_calls &&
         (uint64_t)fails * 100 > (uint64_t)cfg->error_pct * calls))
        set_open(b, now);
}
