/* The simulated network: link cuts, delay, loss, duplication, reorder. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "sim.h"
#include "sim_disk.h"
#include "sim_internal.h"

/* ----------------------------------------------------------- network */

void sim__trace_msg(struct sim *s, const char *what, const struct raft_msg *m)
{
    sim_trace(s, "%s %s %llu->%llu t%llu i%llu lt%llu c%llu n%u%s", what,
              raft_msg_type_name(m->type), (unsigned long long)m->from,
              (unsigned long long)m->to, (unsigned long long)m->term,
              (unsigned long long)m->index, (unsigned long long)m->log_term,
              (unsigned long long)m->commit, m->n_entries,
              m->reject ? " reject" : "");
}

static void check_msg_entries(struct sim *s, const struct raft_msg *m)
{
    if (m->type != RAFT_MSG_APPEND)
        return;
    raft_term prev = m->log_term;
    for (uint32_t i = 0; i < m->n_entries; i++) {
        const struct raft_entry *e = &m->entries[i];
        if (e->index != m->index + 1 + i) {
            sim_violation(s,
                          "append from %llu: entry %u has index %llu, "
                          "expected %llu",
                          (unsigned long long)m->from, i,
                          (unsigned long long)e->index,
                          (unsigned long long)(m->index + 1 + i));
            return;
        }
        sim_check_entry(s, m->from, e->index, e->term, sim_entry_hash(e),
                        e->index == 1 ? 0 : prev);
        prev = e->term;
    }
}

/* Votes and append acks leave only once the state they promise is durable
 * (DESIGN section 2; thesis section 3.8): otherwise a crash could make the
 * node vote twice in a term or forget entries a leader counted. */
static void check_durable_before_ack(struct sim *s, int from,
                                     const struct raft_msg *m)
{
    struct sim_node *n = &s->nodes[from];
    if (m->reject)
        return;
    if (m->type == RAFT_MSG_VOTE_RESP) {
        struct sim_durable d;
        sim_disk_load(n->log, &d);
        /* A later durable term covers it too: the node can never vote in
         * m->term again. */
        if (d.hs.term < m->term || (d.hs.term == m->term && d.hs.vote != m->to))
            sim_violation(s,
                          "vote before durable: n%llu grants n%llu term "
                          "%llu but its disk holds term %llu vote %llu",
                          (unsigned long long)n->id, (unsigned long long)m->to,
                          (unsigned long long)m->term,
                          (unsigned long long)d.hs.term,
                          (unsigned long long)d.hs.vote);
    } else if (m->type == RAFT_MSG_APPEND_RESP) {
        struct sim_durable d;
        sim_disk_load(n->log, &d);
        raft_index synced = sim_disk_synced(n->log);
        /* The acked prefix may have been truncated since by a newer
         * leader: the ack is still true if that prefix was durable while
         * the node was in the ack's term (a delayed message is no worse). */
        bool was_durable = false;
        for (int k = 0; k < SIM_HW_TERMS; k++)
            if (n->hw_term[k] == m->term && n->hw_index[k] >= m->index)
                was_durable = true;
        if (m->index > synced && m->index > d.snap.index && !was_durable)
            sim_violation(
                s,
                "ack before durable: n%llu acks index %llu to "
                "n%llu but only %llu is synced",
                (unsigned long long)n->id, (unsigned long long)m->index,
                (unsigned long long)m->to, (unsigned long long)synced);
    }
}

void sim__send_msg(struct sim *s, int from, const struct raft_msg *m)
{
    s->n_msgs++;
    check_msg_entries(s, m);
    check_durable_before_ack(s, from, m);
    int to = sim__slot_of(s, m->to);
    bool lost = !s->net_calm && sim__chance(s, s->o.loss);
    if (to < 0 || to == from || lost) {
        s->n_dropped++;
        sim__trace_msg(s, "drop", m);
        if (m->type == RAFT_MSG_SNAPSHOT && s->nodes[from].up)
            raft_report_snapshot(s->nodes[from].raft, m->to, RAFT_SNAP_FAILED);
        return;
    }
    int copies = (!s->net_calm && sim__chance(s, s->o.dup)) ? 2 : 1;
    for (int c = 0; c < copies; c++) {
        uint64_t d = sim__rand_range(s, s->o.delay_min_ms, s->o.delay_max_ms);
        if (!s->net_calm && sim__chance(s, s->o.reorder))
            d += sim__rand_range(s, 0, 6 * (uint64_t)s->o.delay_max_ms);
        struct raft_msg *copy = sim_msg_clone(m);
        RK_ASSERT(copy != NULL);
        sim__schedule(s, d, SIM_EV_DELIVER, to, 0, copy);
    }
}

void sim_cut(struct sim *s, int a, int b, bool both_ways)
{
    s->cut[a][b] = true;
    if (both_ways)
        s->cut[b][a] = true;
}

void sim_heal(struct sim *s)
{
    memset(s->cut, 0, sizeof(s->cut));
}

/* A slot the client believes leads: some up node's idea of the leader. */
