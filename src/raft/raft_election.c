/* Leader election: campaigns, pre-vote, vote requests and tallies (§3.4, §9.6). */
#include "raft_node_impl.h"
#include "raft_quorum.h"
#include "rk_log.h"

bool raft__in_lease(const struct raft_node *n)
{
    return n->cfg.check_quorum && (n->leader != 0 || n->restart_quiet) &&
           n->election_elapsed < n->cfg.election_ticks;
}

static enum raft_vote_result tally(struct raft_node *n)
{
    uint32_t granted = 0, rejected = 0, voters = 0;
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++) {
        const struct raft_progress *pr = &n->prs[i];
        if (pr->id == 0 || !pr->voter)
            continue; /* learners never count (thesis §4.2.1) */
        voters++;
        if (pr->vote == RAFT_VM_GRANTED)
            granted++;
        else if (pr->vote == RAFT_VM_REJECTED)
            rejected++;
    }
    return raft__quorum_vote(granted, rejected, voters);
}

static void on_tally(struct raft_node *n)
{
    switch (tally(n)) {
    case RAFT_VOTE_WON:
        if (n->role == RAFT_PRE_CANDIDATE)
            raft__campaign(n, RAFT_CAMPAIGN_ELECTION);
        else
            raft__become_leader(n);
        break;
    case RAFT_VOTE_LOST:
        raft__become_follower(n, n->term, 0);
        break;
    default:
        break;
    }
}

void raft__campaign(struct raft_node *n, int kind)
{
    if (!raft__promotable(n) || n->role == RAFT_LEADER)
        return;
    raft_term vote_term;
    uint8_t type;
    if (kind == RAFT_CAMPAIGN_PRE) {
        raft__become_pre_candidate(n);
        vote_term = n->term + 1;
        type = RAFT_MSG_PREVOTE;
    } else {
        raft__become_candidate(n);
        vote_term = n->term;
        type = RAFT_MSG_VOTE;
    }
    struct raft_progress *self = raft__pr(n, n->id);
    if (kind == RAFT_CAMPAIGN_PRE) {
        /* A pre-vote persists nothing: our own counts at once (if we are
         * a voter of the configuration at all). */
        if (self)
            self->vote = RAFT_VM_GRANTED;
        if (tally(n) == RAFT_VOTE_WON) {
            raft__campaign(n, RAFT_CAMPAIGN_ELECTION);
            return;
        }
    } else {
        n->self_vote_pending = true;
    }
    raft_index last = raft__log_last_index(&n->log);
    raft_term last_term = raft__log_last_term(&n->log);
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++) {
        const struct raft_progress *pr = &n->prs[i];
        if (pr->id == 0 || !pr->voter || pr->id == n->id)
            continue;
        struct raft_msg *m = raft__msg_new(n, type, pr->id, false);
        if (!m)
            continue;
        m->term = vote_term;
        m->index = last;
        m->log_term = last_term;
        if (kind == RAFT_CAMPAIGN_TRANSFER)
            m->context = RAFT_CTX_TRANSFER;
    }
    raft__trace(n, RK_LOG_VERBOSE, "term %llu: campaign (%s) at %llu/%llu",
                (unsigned long long)vote_term,
                kind == RAFT_CAMPAIGN_PRE ? "pre-vote" : "vote",
                (unsigned long long)last, (unsigned long long)last_term);
}

void raft__self_vote_synced(struct raft_node *n)
{
    struct raft_progress *self = raft__pr(n, n->id);
    n->self_vote_pending = false;
    if (!self)
        return;
    self->vote = RAFT_VM_GRANTED;
    on_tally(n);
}

int raft__handle_vote(struct raft_node *n, const struct raft_msg *m)
{
    bool pre = m->type == RAFT_MSG_PREVOTE;
    /* Thesis §3.4: one vote per term, first come first served; a pre-vote
     * for a future term can be granted whatever our vote. */
    bool can_vote = n->vote == m->from || (n->vote == 0 && n->leader == 0) ||
                    (pre && m->term > n->term);
    /* Thesis §3.6.1: only for a log at least as up to date as ours. */
    if (can_vote && raft__log_up_to_date(&n->log, m->index, m->log_term)) {
        struct raft_msg *r = raft__msg_new(
            n, pre ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP, m->from,
            !pre /* a vote is durable state: answer after the sync */);
        if (!pre) {
            n->election_elapsed = 0;
            n->vote = m->from;
        }
        if (r)
            r->term = m->term;
        return 0;
    }
    struct raft_msg *r = raft__msg_new(
        n, pre ? RAFT_MSG_PREVOTE_RESP : RAFT_MSG_VOTE_RESP, m->from, false);
    if (r)
        r->reject = true;
    return 0;
}

int raft__handle_vote_resp(struct raft_node *n, const struct raft_msg *m)
{
    if (n->role == RAFT_PRE_CANDIDATE) {
        if (m->type != RAFT_MSG_PREVOTE_RESP)
            return 0;
        if (!m->reject && m->term != n->term + 1)
            return RK_ESTALE;
    } else if (n->role == RAFT_CANDIDATE) {
        if (m->type != RAFT_MSG_VOTE_RESP || m->term != n->term)
            return m->type == RAFT_MSG_VOTE_RESP ? RK_ESTALE : 0;
    } else {
        return 0;
    }
    struct raft_progress *pr = raft__pr(n, m->from);
    if (!pr)
        return RK_ENOTFOUND;
    if (!pr->voter)
        return 0;
    if (pr->vote == RAFT_VM_NONE)
        pr->vote = m->reject ? RAFT_VM_REJECTED : RAFT_VM_GRANTED;
    on_tally(n);
    return 0;
}
