/* The leader's view of one member's log: match/next and the flow state. */
#include "raft_progress.h"

const char *raft__pr_state_name(int state)
{
    switch (state) {
    case RAFT_PR_PROBE:
        return "probe";
    case RAFT_PR_REPLICATE:
        return "replicate";
    case RAFT_PR_SNAPSHOT:
        return "snapshot";
    default:
        return "?";
    }
}

bool raft__pr_paused(const struct raft_progress *pr)
{
    switch (pr->state) {
    case RAFT_PR_PROBE:
        return pr->probe_sent;
    case RAFT_PR_REPLICATE:
        return raft__inflight_full(&pr->ins);
    default:
        return true;
    }
}

void raft__pr_become_probe(struct raft_progress *pr)
{
    /* After a snapshot, the follower holds at least the snapshot. */
    if (pr->state == RAFT_PR_SNAPSHOT) {
        raft_index n = pr->pending_snap + 1;
        pr->next = pr->match + 1 > n ? pr->match + 1 : n;
    } else {
        pr->next = pr->match + 1;
    }
    pr->state = RAFT_PR_PROBE;
    pr->commit_sent = 0;
    pr->probe_sent = false;
    pr->pending_snap = 0;
    raft__inflight_reset(&pr->ins);
}

void raft__pr_become_replicate(struct raft_progress *pr)
{
    pr->state = RAFT_PR_REPLICATE;
    pr->commit_sent = 0;
    pr->next = pr->match + 1;
    pr->probe_sent = false;
    pr->pending_snap = 0;
    raft__inflight_reset(&pr->ins);
}

void raft__pr_become_snapshot(struct raft_progress *pr, raft_index snap)
{
    pr->state = RAFT_PR_SNAPSHOT;
    pr->commit_sent = 0;
    pr->pending_snap = snap;
    pr->snap_seq = 0;
    pr->snap_last = false;
    pr->snap_idle = 0;
    pr->probe_sent = false;
    raft__inflight_reset(&pr->ins);
}

bool raft__pr_maybe_update(struct raft_progress *pr, raft_index n)
{
    bool updated = false;
    if (pr->match < n) {
        pr->match = n;
        updated = true;
        pr->probe_sent = false;
    }
    if (pr->next < n + 1)
        pr->next = n + 1;
    return updated;
}

bool raft__pr_maybe_decr(struct raft_progress *pr, raft_index rejected,
                         raft_index hint)
{
    if (pr->state == RAFT_PR_REPLICATE) {
        /* A rejection at or below match is stale (reordered). */
        if (rejected <= pr->match)
            return false;
        pr->next = pr->match + 1;
        return true;
    }
    /* PROBE: only the rejection of the last probe counts. */
    if (pr->next == 0 || pr->next - 1 != rejected)
        return false;
    raft_index n = rejected < hint + 1 ? rejected : hint + 1;
    pr->next = n > pr->match + 1 ? n : pr->match + 1;
    pr->probe_sent = false;
    return true;
}

void raft__pr_sent(struct raft_progress *pr, raft_index last, uint32_t n)
{
    if (pr->state == RAFT_PR_REPLICATE) {
        if (n > 0) {
            pr->next = last + 1;
            raft__inflight_add(&pr->ins, last);
        }
    } else if (pr->state == RAFT_PR_PROBE) {
        pr->probe_sent = true;
    }
}
