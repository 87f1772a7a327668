/* Clock helpers: monotonic and wall time in ns/ms (never used by src/raft). */
#ifndef RK_TIME_H
#define RK_TIME_H

/*
 * The Raft core (src/raft) must never read a clock: it is driven by ticks
 * so that the simulator can replay it deterministically. Everything else
 * (server loop, client deadlines, benchmarks, histories) uses these.
 */

#include <stdint.h>

#define RK_NS_PER_US  1000ULL
#define RK_NS_PER_MS  1000000ULL
#define RK_NS_PER_SEC 1000000000ULL

/* CLOCK_MONOTONIC: for durations and deadlines; unrelated to wall time. */
uint64_t rk_time_mono_ns(void);
uint64_t rk_time_mono_ms(void);
/* CLOCK_REALTIME since the Unix epoch: for logs and histories only; it can
 * jump. */
uint64_t rk_time_wall_ns(void);
uint64_t rk_time_wall_ms(void);
/* Nanoseconds since `start_ns` (a rk_time_mono_ns value), 0 if in future. */
uint64_t rk_time_since_ns(uint64_t start_ns);
/* Sleeps for at least ms milliseconds (restarts after signals). */
void rk_time_sleep_ms(uint64_t ms);

#endif
