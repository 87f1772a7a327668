/* Linearizable reads with ReadIndex, batched into heartbeat rounds (thesis §6.4). */
#include <stdlib.h>

#include "raft_node_impl.h"
#include "raft_quorum.h"
#include "rk_log.h"

#define RAFT_MAX_PENDING_READS 65536u

static bool committed_in_term(const struct raft_node *n)
{
    return raft__log_term_or0(&n->log, n->log.commit) == n->term;
}

/* Puts queued requests of rounds <= `upto` (and, for a single voter, all)
 * into the output. */
static void release(struct raft_node *n, uint64_t upto)
{
    uint32_t k = 0, w = 0;
    for (; k < n->n_reads; k++) {
        struct raft_read_req *r = &n->reads[k];
        if (r->round != 0 && r->round <= upto) {
            if (raft__out_read(n, r->ctx, r->index) == 0)
                continue;
        }
        n->reads[w++] = *r;
    }
    n->n_reads = w;
}

static void start_round(struct raft_node *n)
{
    if (!n->read_round_open) {
        n->read_round_open = true;
        raft__bcast_heartbeat(n);
    }
}

int raft_read_index(struct raft_node *n, uint64_t ctx)
{
    if (n->role != RAFT_LEADER)
        return RK_ENOTLEADER;
    if (n->transferee)
        return RK_EBUSY;
    /* A single voter is its own quorum: the read is safe at once. */
    if (raft__n_voters(n) == 1 && raft__is_voter(&n->conf, n->id)) {
        if (committed_in_term(n))
            return raft__out_read(n, ctx, n->log.commit);
    }
    /* Bound the queue: reads pile up only while no quorum answers. */
    if (n->n_reads >= RAFT_MAX_PENDING_READS)
        return RK_EBUSY;
    if (n->n_reads == n->cap_reads) {
        uint32_t nc = n->cap_reads ? n->cap_reads * 2 : 16;
        struct raft_read_req *p = realloc(n->reads, nc * sizeof(*p));
        if (!p)
            return RK_ENOMEM;
        n->reads = p;
        n->cap_reads = nc;
    }
    struct raft_read_req *r = &n->reads[n->n_reads++];
    r->ctx = ctx;
    r->index = n->log.commit;
    r->round = 0;
    /* Thesis §6.4 step 1: the leader must have committed an entry of its
     * term, so that its commit index is at least everyone else's. */
    if (!committed_in_term(n))
        return 0;
    /* Step 2: confirm leadership with a heartbeat round; reads arriving
     * before the round's heartbeats leave join it (batching). */
    start_round(n);
    r->round = n->read_round;
    return 0;
}

/* Ticks a lease lasts after the send of the round that confirmed it: the
 * minimum election timeout, less one tick (a follower counts its timeout in
 * whole ticks from the receipt) and a drift margin of e/10 + 1 ticks. */
static uint64_t lease_ticks(const struct raft_node *n)
{
    uint64_t e = n->cfg.election_ticks;
    uint64_t margin = 2 + e / 10;
    return e > margin ? e - margin : 0;
}

/* Thesis §6.4.1: a quorum answered a heartbeat sent at tick S, and each of
 * them refuses votes for an election timeout after receiving it, so no
 * other leader can exist before S + election timeout. check-quorum's own
 * window (up to two timeouts for a cut-off leader) is NOT that bound. */
static bool lease_valid(const struct raft_node *n)
{
    uint64_t vals[RAFT_MAX_MEMBERS];
    uint32_t cnt = 0;
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++) {
        const struct raft_progress *p = &n->prs[i];
        if (p->id == 0 || !p->voter)
            continue;
        vals[cnt++] = p->id == n->id ? n->lease_clock + 1 : p->lease_ack;
    }
    if (cnt == 0)
        return false;
    uint64_t sent1 = raft__quorum_value(vals, cnt); /* send tick + 1 */
    return sent1 != 0 && n->lease_clock + 1 < sent1 + lease_ticks(n);
}

int raft_read_lease(struct raft_node *n, uint64_t ctx)
{
    if (n->role != RAFT_LEADER)
        return RK_ENOTLEADER;
    /* Thesis §6.4.1: the lease rests on check-quorum (a leader that lost
     * its quorum steps down within an election timeout) and on followers
     * refusing votes while they hear from it (§4.2.3), i.e. on clocks
     * that do not drift by more than that bound. */
    if (!n->cfg.check_quorum)
        return RK_EINVAL;
    if (n->transferee || n->lease_void)
        return RK_EBUSY;
    if (!committed_in_term(n) || !lease_valid(n))
        return RK_EBUSY;
    return raft__out_read(n, ctx, n->log.commit);
}

void raft__read_commit_advanced(struct raft_node *n)
{
    if (n->n_reads == 0 || !committed_in_term(n))
        return;
    bool any = false;
    for (uint32_t k = 0; k < n->n_reads; k++)
        if (n->reads[k].round == 0)
            any = true;
    if (!any)
        return;
    bool single = raft__n_voters(n) == 1 && raft__is_voter(&n->conf, n->id);
    if (!single)
        start_round(n);
    for (uint32_t k = 0; k < n->n_reads; k++) {
        struct raft_read_req *r = &n->reads[k];
        if (r->round == 0) {
            r->index = n->log.commit;
            r->round = n->read_round ? n->read_round : 1;
        }
    }
    if (single)
        release(n, UINT64_MAX);
}

void raft__read_ack(struct raft_node *n, struct raft_progress *pr,
                    uint64_t ctx)
{
    if (ctx == 0 || ctx > n->read_round || !pr->voter)
        return;
    if (ctx > pr->read_ack) {
        pr->read_ack = ctx;
        if (n->read_round - ctx < RAFT_LEASE_RING)
            pr->lease_ack = n->round_sent[ctx % RAFT_LEASE_RING];
    }
    if (n->n_reads == 0)
        return;
    uint64_t vals[RAFT_MAX_MEMBERS];
    uint32_t cnt = 0;
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++) {
        const struct raft_progress *p = &n->prs[i];
        if (p->id == 0 || !p->voter)
            continue;
        vals[cnt++] = p->id == n->id ? n->read_round : p->read_ack;
    }
    /* Step 3: a quorum answered a heartbeat sent after the read arrived. */
    release(n, raft__quorum_value(vals, cnt));
}

void raft__read_reset(struct raft_node *n)
{
    /* Reads pending on a deposed leader are dropped; clients retry. */
    n->n_reads = 0;
    n->read_round_open = false;
    n->lease_void = false;
}

void raft__read_close_round(struct raft_node *n)
{
    n->read_round_open = false;
}
