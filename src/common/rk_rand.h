/* xoshiro256** seeded PRNG: deterministic, per-owner state, no globals. */
#ifndef RK_RAND_H
#define RK_RAND_H

#include <stdint.h>

struct rk_rand {
    uint64_t s[4];
};

/* Seeds the generator from one 64-bit value (splitmix64 expansion). */
void rk_rand_seed(struct rk_rand *r, uint64_t seed);
/* Next 64 random bits. */
uint64_t rk_rand_next(struct rk_rand *r);
/* Uniform integer in [0, n); n must be > 0. */
uint64_t rk_rand_below(struct rk_rand *r, uint64_t n);
/* Uniform double in [0, 1). */
double rk_rand_double(struct rk_rand *r);

#endif
