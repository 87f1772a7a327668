/* Test harness: N Raft cores over raft_memlog with manual message delivery. */
#include "raft_harness.h"

#include <stdio.h>
#include <stdlib.h>

static void copy_msg(struct raft_msg *dst, const struct raft_msg *src)
{
    *dst = *src;
    dst->entries = NULL;
    dst->chunk_data = NULL;
    if (src->n_entries) {
        size_t bytes = 0;
        for (uint32_t k = 0; k < src->n_entries; k++)
            bytes += src->entries[k].len;
        struct raft_entry *e =
            malloc(src->n_entries * sizeof(*e) + bytes + 1);
        assert_non_null(e);
        char *p = (char *)(e + src->n_entries);
        for (uint32_t k = 0; k < src->n_entries; k++) {
            e[k] = src->entries[k];
            if (e[k].len) {
                memcpy(p, src->entries[k].data, e[k].len);
                e[k].data = p;
                p += e[k].len;
            }
        }
        dst->entries = e;
    }
    if (src->chunk_len) {
        dst->chunk_data = malloc(src->chunk_len);
        assert_non_null(dst->chunk_data);
        memcpy(dst->chunk_data, src->chunk_data, src->chunk_len);
    }
}

static void free_msg(struct raft_msg *m)
{
    free(m->entries);
    free(m->chunk_data);
    m->entries = NULL;
    m->chunk_data = NULL;
}

void h_enqueue(struct cluster *c, const struct raft_msg *m)
{
    /* Durability invariant: an append ack never names an index the sender
     * has not synced. */
    if (m->type == RAFT_MSG_APPEND_RESP && !m->reject && m->from >= 1 &&
        m->from <= c->n && c->logs[m->from] &&
        raft_memlog_synced_index(c->logs[m->from]) < m->index) {
        c->early_acks++;
        assert_true(c->allow_early_acks);
    }
    if (c->nq == c->capq) {
        c->capq = c->capq ? c->capq * 2 : 64;
        c->q = realloc(c->q, c->capq * sizeof(*c->q));
        assert_non_null(c->q);
    }
    copy_msg(&c->q[c->nq++].m, m);
    if (m->type < RAFT_MSG__COUNT)
        c->sent[m->type]++;
}

uint64_t h_entries_reads;

static int counted_entries(void *ctx, raft_index lo, raft_index hi,
                           size_t max_bytes, struct raft_entry **out,
                           uint32_t *n_out)
{
    h_entries_reads++;
    return raft_memlog_ops.entries(ctx, lo, hi, max_bytes, out, n_out);
}

static struct raft_log_ops counted_ops;

static void start_node(struct cluster *c, raft_id i)
{
    struct raft_config cfg = c->base;
    cfg.id = i;
    counted_ops = raft_memlog_ops;
    counted_ops.entries = counted_entries;
    cfg.log = &counted_ops;
    cfg.log_ctx = c->logs[i];
    raft_memlog_hard_state(c->logs[i], &cfg.hs);
    raft_memlog_conf(c->logs[i], &cfg.conf);
    struct raft_snapshot_meta sm;
    raft_memlog_snapshot(c->logs[i], &sm, NULL, NULL);
    cfg.applied = sm.index; /* the state machine restarts from the snapshot */
    assert_int_equal(raft_node_new(&cfg, &c->nodes[i]), 0);
    c->n_app[i] = 0;
    /* Entries up to the snapshot count as applied (not re-recorded). */
    c->app_next[i] = sm.index + 1;
}

void h_init_ex(struct cluster *c, uint32_t n, uint32_t voters,
               const struct raft_config *base)
{
    assert_true(n <= H_MAXN);
    memset(c, 0, sizeof(*c));
    c->n = n;
    if (base) {
        c->base = *base;
    } else {
        c->base.election_ticks = 10;
        c->base.heartbeat_ticks = 1;
        c->base.max_inflight_msgs = 64;
        c->base.max_msg_bytes = 1 << 20;
        c->base.seed = 42;
    }
    if (voters == 0)
        voters = n;
    struct raft_conf_state conf;
    memset(&conf, 0, sizeof(conf));
    for (uint32_t i = 1; i <= voters; i++)
        conf.voters[conf.n_voters++] = i;
    for (raft_id i = 1; i <= n; i++) {
        c->logs[i] = raft_memlog_new();
        assert_non_null(c->logs[i]);
        if (i <= voters)
            raft_memlog_set_conf(c->logs[i], &conf);
        c->app[i] = calloc(H_MAX_APPLIED + 1, sizeof(struct h_applied));
        assert_non_null(c->app[i]);
        start_node(c, i);
    }
}

void h_init(struct cluster *c, uint32_t n)
{
    h_init_ex(c, n, 0, NULL);
}

void h_free(struct cluster *c)
{
    for (raft_id i = 1; i <= c->n; i++) {
        raft_node_free(c->nodes[i]);
        raft_memlog_free(c->logs[i]);
        free(c->app[i]);
    }
    for (uint32_t k = 0; k < c->nq; k++)
        free_msg(&c->q[k].m);
    free(c->q);
    memset(c, 0, sizeof(*c));
}

static void record_applied(struct cluster *c, raft_id i,
                           const struct raft_entry *e)
{
    if (c->n_app[i] >= H_MAX_APPLIED)
        return;
    struct h_applied *a = &c->app[i][c->n_app[i]++];
    a->index = e->index;
    a->term = e->term;
    a->type = e->type;
    a->len = e->len;
    size_t l = e->len < sizeof(a->data) - 1 ? e->len : sizeof(a->data) - 1;
    memset(a->data, 0, sizeof(a->data));
    if (l)
        memcpy(a->data, e->data, l);
}

void h_complete(struct cluster *c, raft_id i, const struct raft_ready *rd)
{
    if (rd->snap_chunk)
        c->n_chunks_staged[i]++;
    if (rd->snap_install)
        c->n_installs[i]++;
    assert_int_equal(raft_memlog_persist_ready(c->logs[i], rd), 0);
    for (uint32_t k = 0; k < rd->n_msgs_after_sync; k++)
        h_enqueue(c, &rd->msgs_after_sync[k]);
    if (rd->snap_install)
        c->app_next[i] = rd->snap_meta.index + 1;
    if (rd->n_committed) {
        /* Applied in order, no gaps. */
        if (c->app_next[i])
            assert_int_equal(rd->committed[0].index, c->app_next[i]);
        c->app_next[i] = rd->committed[rd->n_committed - 1].index + 1;
    }
    for (uint32_t k = 0; k < rd->n_committed; k++)
        record_applied(c, i, &rd->committed[k]);
    for (uint32_t k = 0; k < rd->n_reads && c->n_reads[i] < 64; k++)
        c->reads[i][c->n_reads[i]++] = rd->reads[k];
    raft_advance(c->nodes[i], rd);
}

void h_ready(struct cluster *c, raft_id i)
{
    if (c->down[i] || c->hold_sync[i])
        return;
    for (int guard = 0; guard < 100 && raft_has_ready(c->nodes[i]); guard++) {
        struct raft_ready rd;
        raft_ready(c->nodes[i], &rd);
        for (uint32_t k = 0; k < rd.n_msgs; k++)
            h_enqueue(c, &rd.msgs[k]);
        h_complete(c, i, &rd);
    }
}

void h_ready_all(struct cluster *c)
{
    for (raft_id i = 1; i <= c->n; i++)
        h_ready(c, i);
}

void h_drop(struct cluster *c, uint32_t k)
{
    assert_true(k < c->nq);
    free_msg(&c->q[k].m);
    memmove(&c->q[k], &c->q[k + 1], (c->nq - k - 1) * sizeof(*c->q));
    c->nq--;
}

int h_deliver(struct cluster *c, uint32_t k)
{
    assert_true(k < c->nq);
    struct raft_msg m = c->q[k].m;
    memmove(&c->q[k], &c->q[k + 1], (c->nq - k - 1) * sizeof(*c->q));
    c->nq--;
    int rc = 0;
    if (m.to >= 1 && m.to <= c->n && !c->down[m.to] && !c->cut[m.from][m.to])
        rc = raft_step(c->nodes[m.to], &m);
    free_msg(&m);
    return rc;
}

uint32_t h_deliver_to(struct cluster *c, raft_id to)
{
    uint32_t cnt = 0;
    for (uint32_t k = 0; k < c->nq;) {
        if (c->q[k].m.to == to) {
            h_deliver(c, k);
            cnt++;
        } else {
            k++;
        }
    }
    h_ready(c, to);
    return cnt;
}

void h_stabilize(struct cluster *c)
{
    for (int round = 0; round < 10000; round++) {
        h_ready_all(c);
        if (c->nq == 0)
            return;
        if (round == 9999)
            break;
        while (c->nq > 0)
            h_deliver(c, 0);
    }
    /* Show what keeps bouncing. */
    for (uint32_t k = 0; k < c->nq && k < 20; k++) {
        const struct raft_msg *m = &c->q[k].m;
        fprintf(stderr,
                "  %s %llu->%llu term %llu index %llu log_term %llu "
                "commit %llu reject %d hint %llu/%llu n %u\n",
                raft_msg_type_name(m->type), (unsigned long long)m->from,
                (unsigned long long)m->to, (unsigned long long)m->term,
                (unsigned long long)m->index, (unsigned long long)m->log_term,
                (unsigned long long)m->commit, m->reject,
                (unsigned long long)m->hint_index,
                (unsigned long long)m->hint_term, m->n_entries);
    }
    for (raft_id i = 1; i <= c->n; i++) {
        if (c->down[i])
            continue;
        struct raft_status st;
        raft_status(c->nodes[i], &st);
        fprintf(stderr, "  node %llu %s term %llu first %llu last %llu "
                "commit %llu applied %llu\n", (unsigned long long)i,
                raft_role_name(st.role), (unsigned long long)st.term,
                (unsigned long long)st.first_index,
                (unsigned long long)st.last_index,
                (unsigned long long)st.commit,
                (unsigned long long)st.applied);
        for (uint32_t k = 0; k < st.n_match; k++)
            fprintf(stderr, "    match %llu = %llu\n",
                    (unsigned long long)st.match_ids[k],
                    (unsigned long long)st.match[k]);
    }
    fail_msg("cluster did not stabilize");
}

void h_tick(struct cluster *c, raft_id i, uint32_t k)
{
    for (uint32_t t = 0; t < k; t++) {
        if (!c->down[i])
            raft_tick(c->nodes[i]);
    }
    h_ready(c, i);
}

void h_tick_all(struct cluster *c, uint32_t k)
{
    for (uint32_t t = 0; t < k; t++)
        for (raft_id i = 1; i <= c->n; i++)
            if (!c->down[i])
                raft_tick(c->nodes[i]);
    h_ready_all(c);
}

int h_find(const struct cluster *c, raft_id from, raft_id to, int type)
{
    for (uint32_t k = 0; k < c->nq; k++) {
        const struct raft_msg *m = &c->q[k].m;
        if ((from == 0 || m->from == from) && (to == 0 || m->to == to) &&
            (type < 0 || m->type == type))
            return (int)k;
    }
    return -1;
}

uint32_t h_count(const struct cluster *c, raft_id from, raft_id to, int type)
{
    uint32_t cnt = 0;
    for (uint32_t k = 0; k < c->nq; k++) {
        const struct raft_msg *m = &c->q[k].m;
        if ((from == 0 || m->from == from) && (to == 0 || m->to == to) &&
            (type < 0 || m->type == type))
            cnt++;
    }
    return cnt;
}

void h_drop_all(struct cluster *c)
{
    while (c->nq > 0)
        h_drop(c, c->nq - 1);
}

void h_isolate(struct cluster *c, raft_id i)
{
    for (raft_id j = 1; j <= c->n; j++) {
        c->cut[i][j] = true;
        c->cut[j][i] = true;
    }
}

void h_heal(struct cluster *c)
{
    memset(c->cut, 0, sizeof(c->cut));
}

void h_crash(struct cluster *c, raft_id i)
{
    raft_node_free(c->nodes[i]);
    c->nodes[i] = NULL;
    raft_memlog_crash(c->logs[i]);
    c->down[i] = true;
    /* Messages to a crashed node are lost. */
    for (uint32_t k = 0; k < c->nq;) {
        if (c->q[k].m.to == i)
            h_drop(c, k);
        else
            k++;
    }
}

void h_restart(struct cluster *c, raft_id i)
{
    c->down[i] = false;
    start_node(c, i);
}

void h_snapshot(struct cluster *c, raft_id i, size_t len)
{
    struct raft_status st;
    raft_status(c->nodes[i], &st);
    struct raft_conf_state conf;
    assert_int_equal(raft_conf_at(c->nodes[i], st.applied, &conf), 0);
    char *buf = malloc(len + 1);
    assert_non_null(buf);
    for (size_t k = 0; k < len; k++)
        buf[k] = (char)('a' + (k % 26));
    assert_int_equal(
        raft_memlog_snapshot_create(c->logs[i], st.applied, &conf, buf, len),
        0);
    free(buf);
    raft_snapshot_taken(c->nodes[i], st.applied);
}

raft_id h_leader(const struct cluster *c)
{
    raft_id lead = 0;
    raft_term best = 0;
    for (raft_id i = 1; i <= c->n; i++) {
        if (c->down[i])
            continue;
        struct raft_status st;
        raft_status(c->nodes[i], &st);
        if (st.role == RAFT_LEADER && st.term >= best) {
            if (st.term == best && lead)
                return 0;
            best = st.term;
            lead = i;
        }
    }
    return lead;
}

int h_propose(struct cluster *c, raft_id i, const char *s, raft_index *idx)
{
    return raft_propose(c->nodes[i], s, strlen(s), idx);
}

void h_status(const struct cluster *c, raft_id i, struct raft_status *st)
{
    raft_status(c->nodes[i], st);
}

raft_term h_term(const struct cluster *c, raft_id i)
{
    struct raft_status st;
    raft_status(c->nodes[i], &st);
    return st.term;
}

int h_role(const struct cluster *c, raft_id i)
{
    struct raft_status st;
    raft_status(c->nodes[i], &st);
    return st.role;
}

raft_index h_commit(const struct cluster *c, raft_id i)
{
    struct raft_status st;
    raft_status(c->nodes[i], &st);
    return st.commit;
}

raft_index h_last(const struct cluster *c, raft_id i)
{
    struct raft_status st;
    raft_status(c->nodes[i], &st);
    return st.last_index;
}

void h_check_applied(const struct cluster *c)
{
    for (raft_id i = 1; i <= c->n; i++) {
        for (raft_id j = i + 1; j <= c->n; j++) {
            for (uint32_t a = 0; a < c->n_app[i]; a++) {
                const struct h_applied *x = &c->app[i][a];
                for (uint32_t b = 0; b < c->n_app[j]; b++) {
                    const struct h_applied *y = &c->app[j][b];
                    if (x->index != y->index)
                        continue;
                    assert_int_equal(x->term, y->term);
                    assert_int_equal(x->len, y->len);
                    assert_memory_equal(x->data, y->data, sizeof(x->data));
                }
            }
        }
    }
}

struct raft_msg h_msg(raft_id from, raft_id to, int type, raft_term term)
{
    struct raft_msg m;
    memset(&m, 0, sizeof(m));
    m.from = from;
    m.to = to;
    m.type = (uint8_t)type;
    m.term = term;
    return m;
}

raft_term h_log_term(struct cluster *c, raft_id i, raft_index idx)
{
    raft_term t = 0;
    if (raft_memlog_ops.term(c->logs[i], idx, &t) != 0)
        return 0;
    return t;
}
