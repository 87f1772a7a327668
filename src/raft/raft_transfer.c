/* Leadership transfer with TimeoutNow (thesis §3.10). */
#include "raft_node_impl.h"
#include "rk_log.h"

void raft__transfer_abort(struct raft_node *n)
{
    n->transferee = 0;
    n->transfer_elapsed = 0;
}

static void send_timeout_now(struct raft_node *n, raft_id to)
{
    raft__msg_new(n, RAFT_MSG_TIMEOUT_NOW, to, false);
    /* The transferee may win at once, whatever the followers' leases say:
     * no lease read may be served for the rest of this term, even after
     * the transfer times out. */
    n->lease_void = true;
    raft__trace(n, RK_LOG_INFO, "term %llu: TimeoutNow to %llu",
                (unsigned long long)n->term, (unsigned long long)to);
}

int raft_transfer_leader(struct raft_node *n, raft_id to)
{
    if (n->role != RAFT_LEADER)
        return RK_ENOTLEADER;
    if (to == n->id)
        return 0; /* already the leader */
    struct raft_progress *pr = raft__pr(n, to);
    if (!pr)
        return RK_ENOTFOUND;
    if (!pr->voter)
        return RK_ENOTVOTER;
    if (n->transferee == to)
        return 0;
    n->transferee = to;
    n->transfer_elapsed = 0;
    /* Step 1: bring the target up to date, then tell it to campaign. */
    if (pr->match == raft__log_last_index(&n->log))
        send_timeout_now(n, to);
    else
        raft__send_append(n, pr, true);
    return 0;
}

void raft__transfer_progress(struct raft_node *n, struct raft_progress *pr)
{
    if (n->transferee == pr->id &&
        pr->match == raft__log_last_index(&n->log))
        send_timeout_now(n, pr->id);
}

void raft__transfer_tick(struct raft_node *n)
{
    if (!n->transferee)
        return;
    /* Step 3: give up after an election timeout; accept proposals again. */
    if (++n->transfer_elapsed >= n->cfg.election_ticks) {
        raft__trace(n, RK_LOG_INFO, "transfer to %llu timed out",
                    (unsigned long long)n->transferee);
        raft__transfer_abort(n);
    }
}

int raft__handle_timeout_now(struct raft_node *n, const struct raft_msg *m)
{
    if (!raft__promotable(n))
        return RK_ENOTVOTER;
    /* Step 2: campaign at once, skipping pre-vote, bypassing stickiness. */
    raft__campaign(n, RAFT_CAMPAIGN_TRANSFER);
    return 0;
}
