/* Clock helpers over clock_gettime/nanosleep. */
#include "rk_time.h"

#include <errno.h>
#include <time.h>

#include "rk_assert.h"

static uint64_t read_clock(clockid_t id)
{
    struct timespec ts;
    /* clock_gettime on these clocks cannot fail on Linux. */
    RK_ASSERT(clock_gettime(id, &ts) == 0);
    return (uint64_t)ts.tv_sec * RK_NS_PER_SEC + (uint64_t)ts.tv_nsec;
}

uint64_t rk_time_mono_ns(void)
{
    return read_clock(CLOCK_MONOTONIC);
}

uint64_t rk_time_mono_ms(void)
{
    return rk_time_mono_ns() / RK_NS_PER_MS;
}

uint64_t rk_time_wall_ns(void)
{
    return read_clock(CLOCK_REALTIME);
}

uint64_t rk_time_wall_ms(void)
{
    return rk_time_wall_ns() / RK_NS_PER_MS;
}

uint64_t rk_time_since_ns(uint64_t start_ns)
{
    uint64_t now = rk_time_mono_ns();
    return now > start_ns ? now - start_ns : 0;
}

void rk_time_sleep_ms(uint64_t ms)
{
    struct timespec req = {
        .tv_sec = (time_t)(ms / 1000),
        .tv_nsec = (long)(ms % 1000) * 1000000L,
    };
    struct timespec rem;
    while (nanosleep(&req, &rem) != 0 && errno == EINTR)
        req = rem;
}
