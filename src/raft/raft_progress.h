/* The leader's view of one member's log: match/next and the flow state. */
#ifndef RAFT_PROGRESS_H
#define RAFT_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

#include "raft.h"
#include "raft_inflight.h"

enum raft_pr_state {
    RAFT_PR_PROBE = 0,     /* one append at a time until a match is found */
    RAFT_PR_REPLICATE = 1, /* pipelined appends within the inflight window */
    RAFT_PR_SNAPSHOT = 2,  /* sending a snapshot; appends paused */
};

enum raft_vote_mark { RAFT_VM_NONE = 0, RAFT_VM_GRANTED = 1, RAFT_VM_REJECTED = 2 };

struct raft_progress {
    raft_id id;
    bool voter;
    raft_index match;
    raft_index next;
    uint8_t state;        /* enum raft_pr_state */
    bool probe_sent;      /* PROBE: an append is outstanding */
    bool recent_active;   /* heard from within the last election timeout */
    raft_index pending_snap; /* SNAPSHOT: index of the snapshot being sent */
    uint32_t snap_seq;    /* SNAPSHOT: chunk in flight */
    uint32_t snap_idle;   /* SNAPSHOT: ticks since the last chunk ack */
    bool snap_last;       /* SNAPSHOT: the chunk in flight is the last */
    uint64_t read_ack;    /* highest ReadIndex round acknowledged */
    uint64_t lease_ack;   /* send tick + 1 of that round (0 = none) */
    uint8_t vote;         /* enum raft_vote_mark, candidates only */
    /* REPLICATE: the commit index the follower was last told in an append
     * or commit notice (0 after any change of state: tell it again). */
    raft_index commit_sent;
    struct raft_inflight ins;
};

const char *raft__pr_state_name(int state);
bool raft__pr_paused(const struct raft_progress *pr);
void raft__pr_become_probe(struct raft_progress *pr);
void raft__pr_become_replicate(struct raft_progress *pr);
void raft__pr_become_snapshot(struct raft_progress *pr, raft_index snap);
/* An ack says the follower matches up to n; false if it is stale. */
bool raft__pr_maybe_update(struct raft_progress *pr, raft_index n);
/* A rejection of the append at `rejected`; hint is the next index to try
 * minus one. False if the rejection is stale. */
bool raft__pr_maybe_decr(struct raft_progress *pr, raft_index rejected,
                         raft_index hint);
/* Bookkeeping after an append carrying entries up to `last` (n entries). */
void raft__pr_sent(struct raft_progress *pr, raft_index last, uint32_t n);

#endif
