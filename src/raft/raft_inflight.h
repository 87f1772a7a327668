/* Bounded window of in-flight append messages to one follower. */
#ifndef RAFT_INFLIGHT_H
#define RAFT_INFLIGHT_H

#include <stdbool.h>
#include <stdint.h>

#include "raft.h"

/* A ring of the last index carried by each append message not yet
 * acknowledged (etcd's Inflights). Full means "stop sending". */
struct raft_inflight {
    raft_index *buf;
    uint32_t start;
    uint32_t count;
    uint32_t cap;
};

/* cap >= 1. Returns RK_ENOMEM. */
int raft__inflight_init(struct raft_inflight *in, uint32_t cap);
void raft__inflight_close(struct raft_inflight *in);
/* Records one more message whose last entry is `last` (must not be full). */
void raft__inflight_add(struct raft_inflight *in, raft_index last);
/* Frees every message whose last index is <= to. */
void raft__inflight_free_to(struct raft_inflight *in, raft_index to);
void raft__inflight_free_first(struct raft_inflight *in);
void raft__inflight_reset(struct raft_inflight *in);
bool raft__inflight_full(const struct raft_inflight *in);

#endif
