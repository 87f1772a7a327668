/* Bounded window of in-flight append messages to one follower. */
#include "raft_inflight.h"

#include <stdlib.h>

#include "rk_assert.h"

int raft__inflight_init(struct raft_inflight *in, uint32_t cap)
{
    RK_ASSERT(cap >= 1);
    in->buf = malloc(sizeof(*in->buf) * cap);
    if (!in->buf)
        return RK_ENOMEM;
    in->start = 0;
    in->count = 0;
    in->cap = cap;
    return 0;
}

void raft__inflight_close(struct raft_inflight *in)
{
    free(in->buf);
    in->buf = NULL;
    in->count = 0;
}

void raft__inflight_add(struct raft_inflight *in, raft_index last)
{
    RK_ASSERT(in->count < in->cap);
    uint32_t pos = (in->start + in->count) % in->cap;
    in->buf[pos] = last;
    in->count++;
}

void raft__inflight_free_to(struct raft_inflight *in, raft_index to)
{
    while (in->count > 0 && in->buf[in->start] <= to) {
        in->start = (in->start + 1) % in->cap;
        in->count--;
    }
    if (in->count == 0)
        in->start = 0;
}

void raft__inflight_free_first(struct raft_inflight *in)
{
    if (in->count > 0)
        raft__inflight_free_to(in, in->buf[in->start]);
}

void raft__inflight_reset(struct raft_inflight *in)
{
    in->start = 0;
    in->count = 0;
}

bool raft__inflight_full(const struct raft_inflight *in)
{
    return in->count >= in->cap;
}
