/* Snapshots: chunked InstallSnapshot on both sides (thesis §5.1-§5.3). */
#include <stdlib.h>
#include <string.h>

#include "raft_node_impl.h"
#include "rk_log.h"

/* Sends chunk pr->snap_seq of snapshot pr->pending_snap. */
static void send_chunk(struct raft_node *n, struct raft_progress *pr)
{
    const struct raft_log_ops *ops = n->cfg.log;
    struct raft_snapshot_meta meta;
    if (ops->snapshot_meta(n->cfg.log_ctx, &meta) != 0 || meta.index == 0)
        return;
    if (meta.index != pr->pending_snap) {
        /* A newer snapshot replaced the one being sent: start over. */
        raft__pr_become_snapshot(pr, meta.index);
    }
    void *data = NULL;
    uint32_t len = 0;
    bool last = false;
    int rc = ops->snapshot_chunk(n->cfg.log_ctx, meta.index, pr->snap_seq,
                                 &data, &len, &last);
    if (rc) {
        raft__trace(n, RK_LOG_WARN, "snapshot %llu chunk %u for %llu: %s",
                    (unsigned long long)meta.index, pr->snap_seq,
                    (unsigned long long)pr->id, rk_strerror(rc));
        if (rc == RK_ESTALE)
            pr->snap_seq = 0;
        return;
    }
    if (raft__out_free_later(n, data) != 0)
        return;
    struct raft_msg *m = raft__msg_new(n, RAFT_MSG_SNAPSHOT, pr->id, false);
    if (!m)
        return;
    m->snap = meta;
    m->index = meta.index;
    m->log_term = meta.term;
    m->chunk_seq = pr->snap_seq;
    m->chunk_last = last;
    m->chunk_len = len;
    m->chunk_data = data;
    pr->snap_idle = 0;
    pr->snap_last = last;
}

void raft__send_snapshot(struct raft_node *n, struct raft_progress *pr)
{
    if (!pr->recent_active)
        return; /* do not stream a snapshot to a node that is down */
    struct raft_snapshot_meta meta;
    if (n->cfg.log->snapshot_meta(n->cfg.log_ctx, &meta) != 0 ||
        meta.index == 0) {
        raft__trace(n, RK_LOG_WARN, "log compacted but no snapshot for %llu",
                    (unsigned long long)pr->id);
        return;
    }
    raft__pr_become_snapshot(pr, meta.index);
    raft__trace(n, RK_LOG_VERBOSE, "sending snapshot %llu/%llu to %llu",
                (unsigned long long)meta.index, (unsigned long long)meta.term,
                (unsigned long long)pr->id);
    send_chunk(n, pr);
}

void raft__snapshot_tick(struct raft_node *n)
{
    /* Resend the chunk in flight after an election timeout of silence. */
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++) {
        struct raft_progress *pr = &n->prs[i];
        if (pr->id == 0 || pr->state != RAFT_PR_SNAPSHOT)
            continue;
        pr->snap_idle += n->cfg.heartbeat_ticks;
        if (pr->snap_idle >= n->cfg.election_ticks)
            send_chunk(n, pr);
    }
}

static void respond(struct raft_node *n, const struct raft_msg *m,
                    bool reject, bool after_sync)
{
    struct raft_msg *r =
        raft__msg_new(n, RAFT_MSG_SNAPSHOT_RESP, m->from, after_sync);
    if (!r)
        return;
    r->index = m->snap.index;
    r->log_term = m->snap.term;
    r->chunk_seq = m->chunk_seq;
    r->reject = reject;
    r->hint_index = n->log.commit;
}

int raft__handle_snapshot(struct raft_node *n, const struct raft_msg *m)
{
    const struct raft_snapshot_meta *s = &m->snap;
    if (s->index == 0 || s->term == 0 || s->term > m->term ||
        !raft__conf_valid(&s->conf) || s->conf.n_voters == 0)
        return RK_EPROTO;
    /* Raft paper Fig. 13 rule 6: if our log holds the snapshot's last
     * entry, keep the log (it may hold acknowledged entries past it) and
     * only learn that everything up to it is committed. */
    if (s->index > n->log.commit &&
        raft__log_match_term(&n->log, s->index, s->term))
        n->log.commit = s->index;
    /* Thesis §5.1: a snapshot we already cover is of no use (and must not
     * roll back committed state). */
    if (s->index <= n->log.commit) {
        n->staging = false;
        respond(n, m, true, false);
        return RK_ESTALE;
    }
    struct raft_out *o = &n->out[n->cur];
    /* A transfer is one leader's stream: chunk numbers of another leader
     * (or term) say nothing about what we staged. */
    bool same = n->staging && n->stage_meta.index == s->index &&
                n->stage_meta.term == s->term && n->stage_from == m->from &&
                n->stage_term == m->term;
    if (m->chunk_seq == 0 && !same) {
        if (o->has_chunk || o->install)
            return RK_EBUSY; /* the previous chunk is not handed out yet */
        n->staging = true;
        n->stage_meta = *s;
        n->stage_next = 0;
        n->stage_from = m->from;
        n->stage_term = m->term;
    }
    if (!same && m->chunk_seq != 0) {
        respond(n, m, true, false);
        return RK_EINVAL;
    }
    if (m->chunk_seq < n->stage_next) {
        /* A retransmission of a chunk already staged: ack it again once
         * staging is durable. */
        respond(n, m, false, true);
        return 0;
    }
    if (m->chunk_seq > n->stage_next) {
        n->staging = false;
        respond(n, m, true, false);
        return RK_EINVAL;
    }
    if (o->has_chunk)
        return RK_EBUSY;
    void *copy = malloc(m->chunk_len ? m->chunk_len : 1);
    if (!copy)
        return RK_ENOMEM;
    if (m->chunk_len)
        memcpy(copy, m->chunk_data, m->chunk_len);
    o->has_chunk = true;
    o->chunk.meta = *s;
    o->chunk.seq = m->chunk_seq;
    o->chunk.last = m->chunk_last;
    o->chunk.len = m->chunk_len;
    o->chunk.data = copy;
    n->stage_next++;
    if (m->chunk_last) {
        /* Complete: install in the same batch, atomically (thesis §5.3). */
        n->staging = false;
        o->install = true;
        o->install_meta = *s;
        raft__log_restore(&n->log, s);
        raft__acks_truncated(n, s->index + 1);
        raft__conf_restore(n, s);
        raft__trace(n, RK_LOG_INFO, "installing snapshot %llu/%llu",
                    (unsigned long long)s->index,
                    (unsigned long long)s->term);
    }
    respond(n, m, false, true);
    return 0;
}

int raft__handle_snapshot_resp(struct raft_node *n, const struct raft_msg *m)
{
    struct raft_progress *pr = raft__pr(n, m->from);
    if (pr->state != RAFT_PR_SNAPSHOT || m->index != pr->pending_snap)
        return 0; /* stale */
    if (m->reject) {
        if (m->hint_index >= pr->pending_snap) {
            /* The follower already has all of it. */
            if (pr->match < m->hint_index)
                pr->match = m->hint_index;
            raft__pr_become_probe(pr);
            raft__send_append(n, pr, true);
        } else {
            pr->snap_seq = 0;
            send_chunk(n, pr);
        }
        return 0;
    }
    if (m->chunk_seq != pr->snap_seq)
        return 0; /* duplicate ack */
    pr->snap_idle = 0;
    if (pr->snap_last) {
        /* Installed and durable on the follower. */
        if (pr->match < pr->pending_snap)
            pr->match = pr->pending_snap;
        raft__pr_become_probe(pr);
        raft__send_append(n, pr, true);
        return 0;
    }
    pr->snap_seq++;
    send_chunk(n, pr);
    return 0;
}
