/* Log replication: appends, acks, fast backtracking, heartbeats, commit (§3.5, §3.6). */
#include "raft_node_impl.h"
#include "raft_quorum.h"
#include "rk_log.h"

/* Test-only bug switch: acknowledge appends before they are durable. */
#ifdef RAFT_BUG_ACK_BEFORE_SYNC
#define ACK_AFTER_SYNC false
#else
#define ACK_AFTER_SYNC true
#endif

/* Thesis §3.8 (durability before answering): an append ack waiting in the
 * batch being gathered promises that the entries up to its index, as they
 * were when it was made, are durable after that batch's sync. Entries from
 * `from` on are replaced before that batch is written, so the old ones never
 * reach the disk: such an ack would claim entries that were never durable
 * (in the term of the leader it answers). Drop it; that leader is stale, and
 * the prefix below `from` is acked again by the next exchange. Acks in the
 * batch already handed out stay: their entries are written by that batch. */
void raft__acks_truncated(struct raft_node *n, raft_index from)
{
    struct raft_out *o = &n->out[n->cur];
    uint32_t w = 0;
    for (uint32_t k = 0; k < o->n_after; k++) {
        const struct raft_msg *m = &o->after[k];
        if (m->type == RAFT_MSG_APPEND_RESP && !m->reject && m->index >= from) {
            raft__trace(n, RK_LOG_DEBUG,
                        "term %llu: drop ack of %llu to %llu (term %llu): "
                        "entries from %llu replaced before written",
                        (unsigned long long)n->term,
                        (unsigned long long)m->index,
                        (unsigned long long)m->to,
                        (unsigned long long)m->term,
                        (unsigned long long)from);
            continue;
        }
        if (w != k)
            o->after[w] = *m;
        w++;
    }
    o->n_after = w;
}

int raft__append_to_log(struct raft_node *n, const struct raft_entry *ents,
                        uint32_t cnt)
{
    if (cnt == 0)
        return 0;
    raft_index last = raft__log_last_index(&n->log);
    raft_index truncated = ents[0].index <= last ? ents[0].index : 0;
    int rc = raft__log_append(&n->log, ents, cnt);
    if (rc)
        return rc;
    if (truncated)
        raft__acks_truncated(n, truncated);
    return raft__conf_on_append(n, ents, cnt, truncated);
}

/* One append to pr; false when nothing was sent. */
static bool send_one(struct raft_node *n, struct raft_progress *pr,
                     bool send_if_empty)
{
    if (raft__pr_paused(pr))
        return false;
    struct raft_log *l = &n->log;
    raft_index prev = pr->next - 1;
    raft_term prev_term;
    int rc = raft__log_term(l, prev, &prev_term);
    if (rc == RK_ECOMPACTED) {
        raft__send_snapshot(n, pr);
        return false;
    }
    if (rc)
        return false;
    raft_index last = raft__log_last_index(l);
    struct raft_entry *ents = NULL;
    uint32_t cnt = 0;
    if (pr->next <= last) {
        rc = raft__out_entries(n, pr->next, last + 1, n->cfg.max_msg_bytes,
                               &ents, &cnt);
        if (rc == RK_ECOMPACTED) {
            raft__send_snapshot(n, pr);
            return false;
        }
        if (rc) {
            raft__trace(n, RK_LOG_WARN, "cannot read entries for %llu: %s",
                        (unsigned long long)pr->id, rk_strerror(rc));
            return false;
        }
    }
    if (cnt == 0 && !send_if_empty)
        return false;
    struct raft_msg *m = raft__msg_new(n, RAFT_MSG_APPEND, pr->id, false);
    if (!m)
        return false;
    m->index = prev;
    m->log_term = prev_term;
    m->commit = l->commit;
    m->entries = ents;
    m->n_entries = cnt;
    /* What the follower commits on accepting it (raft__handle_append). */
    raft_index told = l->commit < prev + cnt ? l->commit : prev + cnt;
    if (told > pr->commit_sent)
        pr->commit_sent = told;
    /* The bootstrap configuration rides along while probing, so that a
     * joining node (or one that lost it) learns what its log builds on. */
    if (prev == 0 || pr->state == RAFT_PR_PROBE)
        m->snap.conf = n->conf_boot;
    raft__pr_sent(pr, cnt ? ents[cnt - 1].index : prev, cnt);
    return true;
}

bool raft__send_append(struct raft_node *n, struct raft_progress *pr,
                       bool send_if_empty)
{
    if (pr->id == n->id)
        return false;
    bool sent = send_one(n, pr, send_if_empty);
    /* Pipelining (thesis §10.2.1): keep the window full in REPLICATE. */
    while (sent && pr->state == RAFT_PR_REPLICATE &&
           pr->next <= raft__log_last_index(&n->log))
        sent = send_one(n, pr, false);
    return sent;
}

/* A follower in REPLICATE that holds everything the leader has: tells it a
 * commit index it has not been told, in a commit notice (a heartbeat with
 * context 0, not answered; an empty append would be). */
static bool commit_news(const struct raft_node *n,
                        const struct raft_progress *pr)
{
    raft_index last = raft__log_last_index(&n->log);
    if (pr->state != RAFT_PR_REPLICATE || pr->match != last)
        return false;
    raft_index c = n->log.commit < pr->match ? n->log.commit : pr->match;
    return c > pr->commit_sent;
}

static void maybe_commit_notice(struct raft_node *n, struct raft_progress *pr)
{
    if (commit_news(n, pr))
        raft__send_commit_notice(n, pr);
}

void raft__bcast_append(struct raft_node *n)
{
    n->bcast_pending = false;
    raft_index last = raft__log_last_index(&n->log);
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++) {
        struct raft_progress *pr = &n->prs[i];
        if (pr->id == 0 || pr->id == n->id)
            continue;
        /* A replicating follower that was sent everything needs no empty
         * append: once it holds it all, it hears the commit index from a
         * commit notice, now or at the ready after its ack arrives
         * (raft__handle_append_resp); a lost ack is found by the next
         * heartbeat round. */
        if (pr->state == RAFT_PR_REPLICATE && pr->next > last)
            maybe_commit_notice(n, pr);
        else
            raft__send_append(n, pr, true);
    }
}

void raft__send_heartbeat(struct raft_node *n, struct raft_progress *pr)
{
    struct raft_msg *m = raft__msg_new(n, RAFT_MSG_HEARTBEAT, pr->id, false);
    if (!m)
        return;
    /* Never tell a follower to commit past what it is known to hold. */
    m->commit = pr->match < n->log.commit ? pr->match : n->log.commit;
    m->context = n->read_round;
}

void raft__send_commit_notice(struct raft_node *n, struct raft_progress *pr)
{
    struct raft_msg *m = raft__msg_new(n, RAFT_MSG_HEARTBEAT, pr->id, false);
    if (!m)
        return;
    m->commit = pr->match < n->log.commit ? pr->match : n->log.commit;
    m->context = RAFT_CTX_COMMIT_NOTICE;
    pr->commit_sent = m->commit;
}

void raft__bcast_heartbeat(struct raft_node *n)
{
    /* Every broadcast is a new round, remembered with its send tick: a
     * quorum's answers to it start the lease (thesis §6.4.1) and confirm
     * the ReadIndex requests queued before it (§6.4). */
    n->read_round++;
    n->round_sent[n->read_round % RAFT_LEASE_RING] = n->lease_clock + 1;
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++) {
        struct raft_progress *pr = &n->prs[i];
        if (pr->id != 0 && pr->id != n->id)
            raft__send_heartbeat(n, pr);
    }
}

static void commit_to(struct raft_node *n, raft_index c)
{
    if (c > n->log.commit)
        n->log.commit = c;
}

static int check_entries(const struct raft_node *n, const struct raft_msg *m)
{
    if (m->n_entries == 0)
        return 0;
    if (m->index > UINT64_MAX - m->n_entries)
        return RK_EPROTO;
    raft_term prev = m->log_term;
    for (uint32_t k = 0; k < m->n_entries; k++) {
        const struct raft_entry *e = &m->entries[k];
        if (e->index != m->index + 1 + k || e->term < prev ||
            e->term > m->term || e->type > RAFT_ENTRY_NOOP ||
            (e->len > 0 && !e->data))
            return RK_EPROTO;
        if (n->cfg.max_entry_bytes && e->len > n->cfg.max_entry_bytes)
            return RK_ETOOLARGE;
        prev = e->term;
    }
    return 0;
}

int raft__handle_append(struct raft_node *n, const struct raft_msg *m)
{
    int rc = check_entries(n, m);
    if (rc)
        return rc;
    struct raft_log *l = &n->log;
    if (m->log_term > m->term)
        return RK_EPROTO;
    if (m->index < l->commit) {
        /* Everything up to commit already matches: say so. */
        struct raft_msg *r =
            raft__msg_new(n, RAFT_MSG_APPEND_RESP, m->from, true);
        if (r)
            r->index = l->commit;
        return 0;
    }
    if (raft__log_match_term(l, m->index, m->log_term)) {
        if (m->snap.conf.n_voters > 0)
            raft__conf_adopt_boot(n, &m->snap.conf);
        /* Thesis §3.5: consistency check passed; drop conflicting suffix
         * and append what is new. */
        raft_index lastnew = m->index + m->n_entries;
        raft_index ci = raft__log_find_conflict(l, m->entries, m->n_entries);
        if (ci != 0) {
            if (ci <= l->commit)
                return RK_EPROTO; /* would overwrite a committed entry */
            uint32_t off = (uint32_t)(ci - m->index - 1);
            rc = raft__append_to_log(n, m->entries + off, m->n_entries - off);
            if (rc)
                return rc;
        }
        commit_to(n, m->commit < lastnew ? m->commit : lastnew);
        /* The ack promises durability: it leaves after the sync. */
        struct raft_msg *r =
            raft__msg_new(n, RAFT_MSG_APPEND_RESP, m->from, ACK_AFTER_SYNC);
        if (r)
            r->index = lastnew;
        return 0;
    }
    /* Rejection with a hint (thesis §5.3, etcd): the largest index <= the
     * probe whose term is <= the leader's prev term. */
    raft_index last = raft__log_last_index(l);
    raft_index hint = m->index < last ? m->index : last;
    hint = raft__log_find_conflict_by_term(l, hint, m->log_term);
    struct raft_msg *r = raft__msg_new(n, RAFT_MSG_APPEND_RESP, m->from, false);
    if (r) {
        r->index = m->index;
        r->reject = true;
        r->hint_index = hint;
        r->hint_term = raft__log_term_or0(l, hint);
    }
    return 0;
}

int raft__handle_append_resp(struct raft_node *n, const struct raft_msg *m)
{
    struct raft_progress *pr = raft__pr(n, m->from);
    struct raft_log *l = &n->log;
    if (m->reject) {
        raft_index probe = m->hint_index;
        if (m->hint_term > 0)
            probe = raft__log_find_conflict_by_term(l, m->hint_index,
                                                    m->hint_term);
        if (raft__pr_maybe_decr(pr, m->index, probe)) {
            if (pr->state == RAFT_PR_REPLICATE)
                raft__pr_become_probe(pr);
            raft__send_append(n, pr, true);
        }
        return 0;
    }
    if (m->index > raft__log_last_index(l))
        return RK_EPROTO;
    if (raft__pr_maybe_update(pr, m->index)) {
        switch (pr->state) {
        case RAFT_PR_PROBE:
            raft__pr_become_replicate(pr);
            break;
        case RAFT_PR_SNAPSHOT:
            if (pr->match + 1 >= raft__log_first_index(l)) {
                raft__pr_become_probe(pr);
                raft__pr_become_replicate(pr);
            }
            break;
        default:
            raft__inflight_free_to(&pr->ins, m->index);
            break;
        }
        if (raft__maybe_commit(n))
            n->bcast_pending = true;
        if (n->role != RAFT_LEADER)
            return 0;
        if (n->transferee == pr->id)
            raft__transfer_progress(n, pr);
        /* A commit index it was not told waits for the ready's broadcast
         * (raft__bcast_append): proposals arriving meanwhile carry it in
         * their append instead of a notice of its own. */
        if (!raft__send_append(n, pr, false) && commit_news(n, pr))
            n->bcast_pending = true;
    } else if (pr->state == RAFT_PR_PROBE && m->index >= pr->match &&
               pr->next == m->index + 1) {
        /* An empty probe matched at our match index. */
        raft__pr_become_replicate(pr);
        raft__send_append(n, pr, false);
    } else if (pr->state == RAFT_PR_REPLICATE) {
        raft__inflight_free_to(&pr->ins, m->index);
    }
    return 0;
}

int raft__handle_heartbeat(struct raft_node *n, const struct raft_msg *m)
{
    raft_index last = raft__log_last_index(&n->log);
    commit_to(n, m->commit < last ? m->commit : last);
    /* A commit notice asks for no answer: the leader learns nothing from
     * one (heartbeats of a round always carry a context >= 1). */
    if (m->context == RAFT_CTX_COMMIT_NOTICE)
        return 0;
    struct raft_msg *r =
        raft__msg_new(n, RAFT_MSG_HEARTBEAT_RESP, m->from, false);
    if (r)
        r->context = m->context;
    return 0;
}

int raft__handle_heartbeat_resp(struct raft_node *n,
                                const struct raft_msg *m)
{
    struct raft_progress *pr = raft__pr(n, m->from);
    /* An answer to a commit notice (from a node that answers them all)
     * tells nothing but that it is alive. */
    if (m->context == RAFT_CTX_COMMIT_NOTICE)
        return 0;
    if (pr->state == RAFT_PR_PROBE)
        pr->probe_sent = false;
    /* A full window may hide a lost message: free one slot. */
    if (pr->state == RAFT_PR_REPLICATE && raft__inflight_full(&pr->ins))
        raft__inflight_free_first(&pr->ins);
    if (pr->match < raft__log_last_index(&n->log))
        raft__send_append(n, pr, true);
    raft__read_ack(n, pr, m->context);
    return 0;
}

bool raft__maybe_commit(struct raft_node *n)
{
    uint64_t vals[RAFT_MAX_MEMBERS];
    uint32_t cnt = 0;
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++) {
        const struct raft_progress *pr = &n->prs[i];
        if (pr->id != 0 && pr->voter)
            vals[cnt++] = pr->match;
    }
    if (cnt == 0)
        return false;
    raft_index mci = raft__quorum_value(vals, cnt);
    if (mci <= n->log.commit)
        return false;
#ifndef RAFT_BUG_COMMIT_OLD_TERM
    /* Thesis §3.6.2 (Figure 3.7): only entries of the current term are
     * committed by counting replicas; earlier ones follow implicitly. */
    if (raft__log_term_or0(&n->log, mci) != n->term)
        return false;
#endif
    n->log.commit = mci;
    raft__read_commit_advanced(n);
    raft__conf_check_removed_leader(n);
    return true;
}

void raft__self_persisted(struct raft_node *n)
{
    struct raft_progress *self = raft__pr(n, n->id);
    if (!self || self->match >= n->log.persisted)
        return;
    self->match = n->log.persisted;
    self->next = self->match + 1;
    if (raft__maybe_commit(n))
        n->bcast_pending = true;
}
