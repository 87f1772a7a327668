/* Multi-raft driver: one raft_node per hosted shard, group commit, waiters. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "rk_log.h"
#include "srv.h"
#include "srv_wire.h"

/* A group idle (quiescable) for this many ticks stops ticking. */
#define QUIESCE_AFTER_ELECTIONS 2
/* Raft sizing (per group). */
#define MAX_INFLIGHT_MSGS 256
#define MAX_MSG_BYTES (1u << 20)
#define MAX_UNCOMMITTED_BYTES (64u << 20)

/* ------------------------------------------------------------ waiters */

void srv_wlist_push(struct srv_wlist *l, struct srv_waiter *w)
{
    w->next = NULL;
    w->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
    l->n++;
}

void srv_wlist_remove(struct srv_wlist *l, struct srv_waiter *w)
{
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        l->head = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    else
        l->tail = w->prev;
    w->next = w->prev = NULL;
    RK_ASSERT(l->n > 0);
    l->n--;
}

static void fail_list(struct srv_wlist *l, int status)
{
    while (l->head != NULL) {
        struct srv_waiter *w = l->head;
        srv_wlist_remove(l, w);
        w->cb(w, status, NULL);
    }
}

/* ------------------------------------------------------------- tracing */

static void trace_emit(void *data, raft_id node, int level, const char *msg)
{
    struct srv_group *g = data;
    (void)node;
    if (level >= (int)rk_log_get_level())
        rk_log_write((enum rk_log_level)level, "raft", 0, "shard %" PRIu64
                     ": %s", g->shard, msg);
}

/* ----------------------------------------------------------- open/free */

struct srv_group *srv_group_get(struct srv *s, uint64_t shard)
{
    if (shard >= s->groups_cap)
        return NULL;
    return s->groups[shard];
}

int srv_group_open(struct srv *s, uint64_t shard, struct srv_group **out)
{
    struct stor_shard *ss = stor_shard_get(s->stor, shard);
    if (ss == NULL)
        return RK_EUNKNOWNSHARD;
    struct stor_shard_state st;
    int rv = stor_shard_load(ss, &st);
    if (rv != 0)
        return rv;
    struct srv_group *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return RK_ENOMEM;
    g->shard = shard;
    g->srv = s;
    g->ss = ss;
    g->applied = st.applied;
    g->next_read_ctx = 1;

    g->tracer.data = g;
    g->tracer.emit = trace_emit;

    struct raft_config rc;
    memset(&rc, 0, sizeof(rc));
    rc.id = s->cfg->id;
    rc.shard = shard;
    rc.election_ticks = s->election_ticks;
    rc.heartbeat_ticks = s->heartbeat_ticks;
    rc.pre_vote = true;
    rc.check_quorum = true;
    rc.max_inflight_msgs = MAX_INFLIGHT_MSGS;
    rc.max_msg_bytes = MAX_MSG_BYTES;
    rc.max_uncommitted_bytes = MAX_UNCOMMITTED_BYTES;
    rc.max_entry_bytes = s->cfg->max_frame_bytes;
    rc.max_committed_bytes = 8u << 20;
    rc.seed = s->cfg->id * 0x9e3779b97f4a7c15ull ^ shard ^ uv_hrtime();
    rc.log = &stor_log_ops;
    rc.log_ctx = ss;
    rc.hs = st.hs;
    rc.conf = st.conf;
    rc.applied = st.applied;
    rc.tracer = &g->tracer;
    rv = raft_node_new(&rc, &g->raft);
    if (rv != 0) {
        free(g);
        return rv;
    }
    g->term = st.hs.term;
    rv = srv_split_load(g);
    if (rv != 0) {
        raft_node_free(g->raft);
        free(g);
        return rv;
    }
    *out = g;
    return 0;
}

void srv_group_free(struct srv_group *g)
{
    if (g == NULL)
        return;
    /* Waiters were failed by srv_groups_fail_all before. */
    RK_ASSERT(g->proposals.n == 0 && g->reads.n == 0 &&
              g->read_queue.n == 0 && g->lease_queue.n == 0);
    raft_node_free(g->raft);
    free(g->moved);
    free(g);
}

bool srv_group_is_leader(const struct srv_group *g)
{
    return g->role == RAFT_LEADER;
}

void srv_group_wake(struct srv_group *g)
{
    /* Routine traffic (heartbeats) must not reset the idle count of a
     * group that still ticks; only a quiesced group starts counting anew. */
    if (g->quiesced) {
        g->quiesced = false;
        g->idle_ticks = 0;
        g->awake_ticks = 0;
    }
}

/* ------------------------------------------------------------- inputs */

int srv_group_propose(struct srv_group *g, const void *cmd, size_t len,
                      struct srv_waiter *w, uint64_t timeout_ms)
{
    struct srv *s = g->srv;
    if (s->failstop)
        return RK_EFAILSTOP;
    if (s->stopping)
        return RK_ESHUTDOWN;
    if (g->role != RAFT_LEADER)
        return RK_ENOTLEADER;
    raft_index index = 0;
    int rv = raft_propose(g->raft, cmd, len, &index);
    if (rv != 0)
        return rv;
    srv_group_wake(g);
    w->index = index;
    w->term = g->term;
    w->deadline_ms = srv_loop_now(&s->loop) + timeout_ms;
    srv_wlist_push(&g->proposals, w);
    return 0;
}

int srv_group_read(struct srv_group *g, struct srv_waiter *w,
                   uint64_t timeout_ms, bool lease)
{
    struct srv *s = g->srv;
    if (s->failstop)
        return RK_EFAILSTOP;
    if (s->stopping)
        return RK_ESHUTDOWN;
    if (g->role != RAFT_LEADER)
        return RK_ENOTLEADER;
    srv_group_wake(g);
    w->ctx = 0;
    w->read_index = 0;
    w->deadline_ms = srv_loop_now(&s->loop) + timeout_ms;
    srv_wlist_push(lease ? &g->lease_queue : &g->read_queue, w);
    return 0;
}

void srv_group_cancel(struct srv_group *g, struct srv_waiter *w)
{
    struct srv_wlist *lists[] = {&g->proposals, &g->read_queue, &g->reads,
                                 &g->lease_queue};
    for (size_t i = 0; i < 4; i++) {
        for (struct srv_waiter *x = lists[i]->head; x != NULL; x = x->next) {
            if (x == w) {
                srv_wlist_remove(lists[i], w);
                return;
            }
        }
    }
}

int srv_groups_step(struct srv *s, const struct raft_msg *m)
{
    struct srv_group *g = srv_group_get(s, m->shard);
    if (g == NULL)
        return RK_EUNKNOWNSHARD;
    srv_group_wake(g);
    return raft_step(g->raft, m);
}

/* ------------------------------------------------------------ outbox */

/* Messages gathered in one flush, grouped by destination at send time. */
struct outbox {
    const struct raft_msg **msgs;
    uint32_t n, cap;
};

static int outbox_add(struct outbox *o, const struct raft_msg *m)
{
    if (o->n == o->cap) {
        uint32_t cap = o->cap == 0 ? 64 : o->cap * 2;
        const struct raft_msg **p = realloc(o->msgs, cap * sizeof(*p));
        if (p == NULL)
            return RK_ENOMEM;
        o->msgs = p;
        o->cap = cap;
    }
    o->msgs[o->n++] = m;
    return 0;
}

static int cmp_dest(const void *a, const void *b)
{
    const struct raft_msg *x = *(const struct raft_msg *const *)a;
    const struct raft_msg *y = *(const struct raft_msg *const *)b;
    if (x->to != y->to)
        return x->to < y->to ? -1 : 1;
    /* Keep each group's order (stable by address within a ready). */
    return x < y ? -1 : x > y;
}

/* Sends msgs[0..n) (all to `to`) in as few frames as fit the frame limit:
 * the whole run if it fits, else each half (a single message too large for
 * any frame is dropped; Raft retries after the unreachable report). */
static int send_run(struct srv *s, raft_id to, const struct raft_msg **msgs,
                    uint32_t n, unsigned depth)
{
    struct rk_buf *buf = &s->wire_out;
    rk_buf_reset(buf);
    int rv = srv_wire_append(s->cfg->id, to, msgs, n,
                             s->cfg->max_frame_bytes, buf);
    if (rv == RK_ETOOLARGE && n > 1 && depth < 32) {
        uint32_t h = n / 2;
        int a = send_run(s, to, msgs, h, depth + 1);
        int b = send_run(s, to, msgs + h, n - h, depth + 1);
        return a != 0 ? a : b;
    }
    if (rv != 0) {
        rk_log(RK_LOG_WARN, "cannot encode %u messages to node %" PRIu64
               ": %s", n, to, rk_strerror(rv));
        return rv;
    }
    size_t len = buf->len;
    uv_buf_t part = uv_buf_init((char *)buf->data, (unsigned)len);
    rv = srv_peers_send(&s->peers, to, &part, 1);
    if (rv == 0) {
        s->metrics.peer_msgs_out += n;
        s->metrics.peer_frames_out++;
        s->metrics.peer_bytes_out += len + SRV_FRAME_HEADER;
    }
    /* Keep a small buffer for the next frame; give back one that grew for
     * a snapshot chunk or a burst. */
    if (buf->cap > ((size_t)1 << 20))
        rk_buf_free(buf);
    return rv;
}

/* Sends everything in the outbox: one frame per destination node. */
static void outbox_send(struct srv *s, struct outbox *o)
{
    if (o->n == 0)
        return;
    qsort(o->msgs, o->n, sizeof(*o->msgs), cmp_dest);
    uint32_t i = 0;
    while (i < o->n) {
        uint32_t j = i;
        raft_id to = o->msgs[i]->to;
        while (j < o->n && o->msgs[j]->to == to)
            j++;
        if (send_run(s, to, &o->msgs[i], j - i, 0) != 0) {
            /* Lost: tell every group that sent to it so leaders go back to
             * probing instead of waiting for acks of lost appends. */
            for (uint32_t k = i; k < j; k++) {
                struct srv_group *g = srv_group_get(s, o->msgs[k]->shard);
                if (g != NULL && g->role == RAFT_LEADER)
                    raft_report_unreachable(g->raft, to);
            }
        }
        i = j;
    }
    o->n = 0;
}

/* ---------------------------------------------------------------- reads */

static void serve_reads(struct srv_group *g)
{
    struct srv_waiter *w = g->reads.head;
    while (w != NULL) {
        struct srv_waiter *next = w->next;
        if (w->read_index != 0 && w->read_index <= g->applied) {
            srv_wlist_remove(&g->reads, w);
            w->cb(w, 0, NULL);
        }
        w = next;
    }
}

static void take_read_states(struct srv_group *g, const struct raft_ready *rd)
{
    for (uint32_t i = 0; i < rd->n_reads; i++) {
        const struct raft_read_state *r = &rd->reads[i];
        for (struct srv_waiter *w = g->reads.head; w != NULL; w = w->next) {
            if (w->ctx == r->ctx && w->read_index == 0)
                w->read_index = r->index == 0 ? 1 : r->index;
        }
    }
}

static void move_all(struct srv_wlist *from, struct srv_wlist *to,
                     uint64_t ctx)
{
    while (from->head != NULL) {
        struct srv_waiter *w = from->head;
        srv_wlist_remove(from, w);
        w->ctx = ctx;
        srv_wlist_push(to, w);
    }
}

/* Lease reads of this flush share one raft_read_lease context; without a
 * usable lease they join the ReadIndex round. */
static void start_lease_round(struct srv_group *g)
{
    if (g->lease_queue.n == 0)
        return;
    if (g->role == RAFT_LEADER &&
        g->awake_ticks >= g->srv->election_ticks) {
        uint64_t ctx = g->next_read_ctx++;
        if (raft_read_lease(g->raft, ctx) == 0) {
            g->srv->metrics.read_rounds_lease++;
            move_all(&g->lease_queue, &g->reads, ctx);
            return;
        }
    }
    move_all(&g->lease_queue, &g->read_queue, 0);
}

/* One ReadIndex round per group per flush carries every queued read. */
static void start_read_round(struct srv_group *g)
{
    start_lease_round(g);
    if (g->read_queue.n == 0)
        return;
    if (g->role != RAFT_LEADER) {
        fail_list(&g->read_queue, RK_ENOTLEADER);
        return;
    }
    uint64_t ctx = g->next_read_ctx++;
    int rv = raft_read_index(g->raft, ctx);
    if (rv != 0) {
        fail_list(&g->read_queue, rv == RK_EBUSY ? RK_EBUSY : rv);
        return;
    }
    g->srv->metrics.read_rounds_index++;
    move_all(&g->read_queue, &g->reads, ctx);
}

/* ---------------------------------------------------------------- roles */

static void on_soft_state(struct srv_group *g, const struct raft_ready *rd)
{
    uint8_t old_role = g->role;
    raft_id old_leader = g->leader;
    g->role = rd->soft.role;
    g->leader = rd->soft.leader;
    if (rd->hs.term != 0)
        g->term = rd->hs.term;
    if (g->role != old_role || g->leader != old_leader) {
        rk_log(g->shard == 0 || rk_log_get_level() <= RK_LOG_VERBOSE
                   ? RK_LOG_INFO
                   : RK_LOG_VERBOSE,
               "shard %" PRIu64 " term %" PRIu64 ": %s, leader %" PRIu64,
               g->shard, g->term, raft_role_name(g->role), g->leader);
    }
    if (old_role == RAFT_LEADER && g->role != RAFT_LEADER) {
        /* Reads dropped by the core with the leadership: fail them now.
         * Proposals stay: they may still commit under the new leader, and
         * an entry at their index with another term fails them. */
        fail_list(&g->read_queue, RK_ENOTLEADER);
        fail_list(&g->lease_queue, RK_ENOTLEADER);
        fail_list(&g->reads, RK_ENOTLEADER);
    }
}

/* ---------------------------------------------------------------- flush */

static int flush_add_group(struct srv_flush *f, struct srv_group *g)
{
    if (f->n_groups == f->cap_groups) {
        uint32_t cap = f->cap_groups == 0 ? 16 : f->cap_groups * 2;
        struct srv_group **p = realloc(f->groups, cap * sizeof(*p));
        if (p == NULL)
            return RK_ENOMEM;
        f->groups = p;
        f->cap_groups = cap;
    }
    f->groups[f->n_groups++] = g;
    return 0;
}

static void flush_free(struct srv_flush *f)
{
    if (f->batch != NULL)
        stor_batch_free(f->batch);
    free(f->visible);
    free(f->groups);
    free(f);
}

/* Log compaction (etcd's --snapshot-count): once a shard has applied more
 * than snapshot_count entries past its log start, the log up to
 * applied - catch_up goes; a follower behind that gets a snapshot of the
 * state machine (stor_log_ops exports it as it is). The catch-up margin
 * lets briefly lagging followers still catch up from the log. */
static int maybe_compact(struct srv_group *g, struct stor_batch *b)
{
    uint32_t count = g->srv->cfg->snapshot_count;
    raft_index catch_up = count / 4;
    raft_index first = stor_log_first_index(g->ss);
    if (g->applied < first || g->applied - first + 1 <= count + catch_up)
        return 0;
    raft_index upto = g->applied - catch_up;
    if (upto <= g->compacted)
        return 0;
    int rv = stor_batch_compact(b, g->shard, upto);
    if (rv == 0) {
        raft_snapshot_taken(g->raft, upto);
        g->compacted = upto;
    }
    return rv;
}

/* Client sessions (exactly-once windows) are dropped deterministically,
 * through the log: every snapshot_count applied entries the leader proposes
 * EXPIRE_SESSIONS for sessions whose last write is more than
 * 4 * snapshot_count entries old. This bounds the sessions table however
 * many client ids come and go; a client retrying a write older than that
 * is no longer deduplicated (the Raft thesis §6.3 trade-off). */
static void maybe_expire_sessions(struct srv_group *g)
{
    uint64_t count = g->srv->cfg->snapshot_count;
    if (g->role != RAFT_LEADER || g->shard == 0 || g->applied < 4 * count ||
        g->applied < g->next_expire)
        return;
    g->next_expire = g->applied + count;
    struct stor_cmd cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.op = STOR_CMD_EXPIRE_SESSIONS;
    cmd.before_index = g->applied - 4 * count;
    uint8_t buf[64];
    size_t len = 0;
    if (stor_cmd_size(&cmd) > sizeof(buf) ||
        stor_cmd_encode(&cmd, buf, sizeof(buf), &len) != 0)
        return;
    int rv = raft_propose(g->raft, buf, len, NULL);
    if (rv != 0)
        rk_log(RK_LOG_DEBUG, "shard %" PRIu64 ": session expiry not "
               "proposed: %s", g->shard, rk_strerror(rv));
}

static void on_batch_done(struct stor_batch *b, int status, void *arg)
{
    struct srv_flush *f = arg;
    struct srv *s = f->srv;
    (void)b;
    pthread_mutex_lock(&s->done_mu);
    f->status = status;
    f->done = true;
    pthread_mutex_unlock(&s->done_mu);
    uv_async_send(&s->done_async);
}

static void on_batch_applied(struct stor_batch *b, int status, void *arg)
{
    struct srv_flush *f = arg;
    struct srv *s = f->srv;
    (void)b;
    pthread_mutex_lock(&s->done_mu);
    f->applied = true;
    if (status == STOR_APPLIED_LAZY)
        f->lazy = true;
    pthread_mutex_unlock(&s->done_mu);
    uv_async_send(&s->done_async);
}

static void enter_failstop(struct srv *s, int status, const char *why)
{
    if (s->failstop)
        return;
    s->failstop = true;
    s->failstop_code = status;
    rk_log(RK_LOG_ERROR,
           "FAIL-STOP: %s (%s): this node acknowledges nothing from now on; "
           "fix the disk and restart it",
           why, rk_strerror(status));
    srv_groups_fail_all(s, RK_EFAILSTOP);
}

/* Hands the open flush to the storage thread once every flush before it
 * completed or was released (a lazy one, see struct srv_flush). Until then
 * it stays open and gathers the readies of later loop iterations: while one
 * batch syncs, the next one grows (one sync for all of them) instead of
 * queueing a sync per loop iteration behind it. */
void srv_groups_submit(struct srv *s)
{
    struct srv_flush *f = s->flush_head;
    while (f != NULL && f->submitted) {
        if (!f->released) {
            pthread_mutex_lock(&s->done_mu);
            bool done = f->done;
            pthread_mutex_unlock(&s->done_mu);
            if (!done)
                return;
        }
        f = f->next;
    }
    if (f == NULL)
        return;
    f->submitted = true;
    f->started_us = uv_hrtime() / 1000;
    if (stor_batch_empty(f->batch)) {
        stor_batch_free(f->batch);
        f->batch = NULL;
        pthread_mutex_lock(&s->done_mu);
        f->done = true;
        pthread_mutex_unlock(&s->done_mu);
    } else {
        stor_batch_on_applied(f->batch, on_batch_applied, f);
        int rv = stor_batch_submit(s->stor, f->batch, on_batch_done, f);
        if (rv == 0)
            return;
        pthread_mutex_lock(&s->done_mu);
        f->done = true;
        f->status = rv;
        pthread_mutex_unlock(&s->done_mu);
    }
    uv_async_send(&s->done_async);
}

void srv_groups_flush(struct srv *s)
{
    /* Nothing new is gathered once shutdown began (on_stop waits for the
     * batches already submitted). */
    if (s->failstop || s->stopping || s->n_groups == 0) {
        srv_groups_submit(s);
        return;
    }
    struct outbox out = {0};
    /* The open flush (not submitted yet) takes more groups. */
    struct srv_flush *f = s->flush_tail;
    if (f != NULL && f->submitted)
        f = NULL;
    bool listed = f != NULL;
    int rv = 0;

    for (uint64_t id = 0; id < s->groups_cap; id++) {
        struct srv_group *g = s->groups[id];
        if (g == NULL)
            continue;
        if (!g->busy)
            start_read_round(g);
        if (g->busy || !raft_has_ready(g->raft))
            continue;
        if (f == NULL) {
            f = calloc(1, sizeof(*f));
            if (f == NULL || stor_batch_new(&f->batch) != 0) {
                rv = RK_ENOMEM;
                break;
            }
            f->srv = s;
        }
        if ((rv = flush_add_group(f, g)) != 0)
            break;
        raft_ready(g->raft, &g->rd);
        g->busy = true;
        const struct raft_ready *rd = &g->rd;
        if (rd->soft_changed || rd->hs_changed)
            on_soft_state(g, rd);
        take_read_states(g, rd);
        for (uint32_t i = 0; i < rd->n_msgs && rv == 0; i++)
            rv = outbox_add(&out, &rd->msgs[i]);
        if (rv == 0)
            rv = stor_batch_add_ready(f->batch, g->shard, rd);
        g->n_res = 0;
        if (rv == 0 && rd->n_committed > 0) {
            rv = stor_batch_apply(f->batch, g->shard, rd->committed,
                                  rd->n_committed, &g->res_first);
            g->n_res = rd->n_committed;
            /* Before the batch can be visible: fence split arcs. */
            if (rv == 0 &&
                srv_split_gather(g, rd->committed, rd->n_committed))
                f->no_release = true;
            if (g->shard == SHARD_META_ID)
                f->no_release = true;
        }
        if (rd->snap_install)
            f->no_release = true;
        if (rv == 0)
            rv = maybe_compact(g, f->batch);
        if (rv != 0)
            break;
        s->metrics.storage_batch_entries += rd->n_entries;
    }
    if (rv != 0) {
        /* Out of memory while gathering: nothing can be made durable. */
        free(out.msgs);
        if (f != NULL && !listed) {
            for (uint32_t i = 0; i < f->n_groups; i++)
                f->groups[i]->busy = false;
            flush_free(f);
        }
        /* A listed flush completes (as failed) through srv_groups_submit;
         * srv_groups_on_done then releases its groups. */
        enter_failstop(s, rv, "cannot gather a storage batch");
        srv_groups_submit(s);
        return;
    }
    /* Followers get their appends while the leader syncs (§3 of DESIGN). */
    outbox_send(s, &out);
    free(out.msgs);
    if (f != NULL && !listed) {
        if (s->flush_tail != NULL)
            s->flush_tail->next = f;
        else
            s->flush_head = f;
        s->flush_tail = f;
        s->flushes_in_flight++;
    }
    srv_groups_submit(s);
}

/* Matches apply results to waiting proposals, in one pass over the waiters
 * (the committed entries are consecutive, so a waiter's entry is found by
 * its index). */
static void answer_proposals(struct srv_group *g, struct stor_batch *b)
{
    const struct raft_ready *rd = &g->rd;
    if (g->n_res == 0)
        return;
    const struct raft_entry *ents = rd->committed;
    raft_index first = ents[0].index;
    raft_index last = ents[g->n_res - 1].index;
    raft_term last_term = ents[g->n_res - 1].term;
    RK_ASSERT(last - first + 1 == g->n_res);
    struct srv_waiter *w = g->proposals.head;
    while (w != NULL) {
        struct srv_waiter *next = w->next;
        if (w->index >= first && w->index <= last) {
            uint32_t k = (uint32_t)(w->index - first);
            const struct stor_result *r =
                b != NULL ? stor_batch_result(b, g->res_first + k) : NULL;
            srv_wlist_remove(&g->proposals, w);
            if (w->term != ents[k].term || r == NULL)
                /* Another leader's entry took the slot: the command was
                 * not applied; the client retries (same seq). */
                w->cb(w, RK_ENOTLEADER, NULL);
            else
                w->cb(w, 0, r);
        } else if (w->index < first && w->term < last_term) {
            /* Its slot was overwritten earlier (it never committed): a
             * later entry of a newer term committed after it. */
            srv_wlist_remove(&g->proposals, w);
            w->cb(w, RK_ENOTLEADER, NULL);
        }
        w = next;
    }
}

/* What readers may see once a flush is done: its groups' applied index
 * (proposals were answered before; reads wait for this). */
static void make_visible(struct srv *s, struct srv_group *g, raft_index applied,
                         bool meta)
{
    if (applied > g->applied)
        g->applied = applied;
    if (meta && g->shard == SHARD_META_ID)
        srv_meta_applied(s);
    serve_reads(g);
    maybe_expire_sessions(g);
}

/* Handles a flush's readies: the messages that waited for its sync go out,
 * proposals are answered, raft_advance. If release (a lazy flush, applied
 * but not yet committed, see struct srv_flush), the applied index each group
 * reaches is kept in f->visible for the done; else it is visible now. */
static void complete_flush(struct srv *s, struct srv_flush *f, bool release)
{
    struct outbox out = {0};
    struct raft_msg *local = NULL;
    uint32_t n_local = 0;

    if (f->released) {
        /* Done after a release: only the visibility is left. */
        if (f->status != 0) {
            enter_failstop(s, f->status, stor_errmsg(s->stor));
            return;
        }
        s->metrics.storage_batches++;
        srv_hist_observe(&s->metrics.sync_latency,
                         uv_hrtime() / 1000 - f->started_us);
        for (uint32_t i = 0; i < f->n_groups; i++)
            make_visible(s, f->groups[i], f->visible[i].applied,
                         f->visible[i].meta);
        return;
    }
    if (f->status != 0) {
        for (uint32_t i = 0; i < f->n_groups; i++)
            f->groups[i]->busy = false;
        enter_failstop(s, f->status, stor_errmsg(s->stor));
        return;
    }
    if (release) {
        f->visible = calloc(f->n_groups ? f->n_groups : 1,
                            sizeof(*f->visible));
        if (f->visible == NULL)
            return; /* not released: completes when done */
    } else if (f->batch != NULL) {
        s->metrics.storage_batches++;
        srv_hist_observe(&s->metrics.sync_latency,
                         uv_hrtime() / 1000 - f->started_us);
    }
    struct raft_msg *rejects = NULL;
    uint32_t n_rejects = 0;
    for (uint32_t i = 0; i < f->n_groups; i++) {
        struct srv_group *g = f->groups[i];
        const struct raft_ready *rd = &g->rd;
        int st = f->batch != NULL && (rd->snap_chunk != NULL ||
                                      rd->snap_install)
                     ? stor_batch_shard_status(f->batch, g->shard)
                     : 0;
        if (st != 0 && rd->snap_install) {
            /* The core believes the snapshot is in place: going on would
             * let the state machine and the log disagree. */
            free(rejects);
            free(out.msgs);
            free(local);
            for (uint32_t k = 0; k < f->n_groups; k++)
                f->groups[k]->busy = false;
            enter_failstop(s, st, "installing a received snapshot failed");
            return;
        }
        for (uint32_t k = 0; k < rd->n_msgs_after_sync; k++) {
            const struct raft_msg *m = &rd->msgs_after_sync[k];
            if (st != 0 && m->type == RAFT_MSG_SNAPSHOT_RESP) {
                /* The chunk was not staged (bad order or bytes): answer
                 * with a reject so the leader starts over from chunk 0. */
                struct raft_msg *p = realloc(rejects, (n_rejects + 1) *
                                                          sizeof(*rejects));
                if (p == NULL)
                    continue;
                rejects = p;
                rejects[n_rejects] = *m;
                rejects[n_rejects].reject = true;
                rk_log(RK_LOG_WARN, "shard %" PRIu64 ": snapshot chunk %u "
                       "from node %" PRIu64 " not staged (%s): rejecting it",
                       g->shard, m->chunk_seq, m->to, rk_strerror(st));
                n_rejects++;
                continue;
            }
            if (m->to == s->cfg->id) {
                struct raft_msg *p = realloc(local, (n_local + 1) *
                                                        sizeof(*local));
                if (p == NULL)
                    continue; /* a lost local ack is retried by Raft */
                local = p;
                local[n_local] = *m;
                local[n_local].entries = NULL;
                local[n_local].n_entries = 0;
                local[n_local].chunk_data = NULL;
                local[n_local].chunk_len = 0;
                n_local++;
            } else if (outbox_add(&out, m) != 0) {
                break;
            }
        }
    }
    for (uint32_t k = 0; k < n_rejects; k++)
        outbox_add(&out, &rejects[k]);
    outbox_send(s, &out);
    free(out.msgs);
    free(rejects);
    for (uint32_t i = 0; i < f->n_groups; i++) {
        struct srv_group *g = f->groups[i];
        const struct raft_ready *rd = &g->rd;
        raft_index applied = g->applied;
        if (rd->n_committed > 0)
            applied = rd->committed[rd->n_committed - 1].index;
        if (rd->snap_install && rd->snap_meta.index > applied)
            applied = rd->snap_meta.index;
        bool meta = rd->n_committed > 0 || rd->snap_install;
        if (!release && meta) {
            /* Committed now (a flush with these is never released): the
             * node's map and the groups a split created are in place
             * before anyone is answered. `member remove 4` answered
             * before the map reload was invisible to the next `member add
             * 4` (e2e_leave). */
            if (g->shard == SHARD_META_ID) {
                srv_meta_applied(s);
                meta = false; /* reloaded: make_visible need not */
            }
            srv_split_completed(g);
        }
        if (!f->answered || g->shard == SHARD_META_ID)
            answer_proposals(g, f->batch);
        raft_advance(g->raft, rd);
        g->busy = false;
        if (release) {
            f->visible[i].applied = applied;
            f->visible[i].meta = meta;
        }
        else
            make_visible(s, g, applied, meta);
    }
    if (release) {
        f->answered = true;
        f->released = true;
    }
    for (uint32_t i = 0; i < n_local; i++) {
        struct srv_group *g = srv_group_get(s, local[i].shard);
        if (g != NULL)
            raft_step(g->raft, &local[i]);
    }
    free(local);
}

/* Answers the proposals of a flush whose apply results are final while its
 * commit still syncs (stor_batch_on_applied): the entries are committed,
 * so only the client's wait for the apply's own sync is saved. The group
 * completes (acks, raft_advance, reads) only when the batch is durable. */
static void answer_early(struct srv *s, struct srv_flush *f)
{
    if (f->answered || s->failstop || f->batch == NULL)
        return;
    f->answered = true;
    for (uint32_t i = 0; i < f->n_groups; i++) {
        /* The meta shard's answers wait for the done: the node's map is
         * reloaded from the committed state only then (srv_meta_applied),
         * and a command answered before that would be invisible to the
         * next one (`member remove 4` then `member add 4` saw node 4 still
         * active: e2e_leave). */
        if (f->groups[i]->shard != SHARD_META_ID)
            answer_proposals(f->groups[i], f->batch);
    }
}

void srv_groups_on_done(struct srv *s)
{
    for (;;) {
        struct srv_flush *f = s->flush_head;
        if (f == NULL)
            break;
        pthread_mutex_lock(&s->done_mu);
        bool done = f->done;
        pthread_mutex_unlock(&s->done_mu);
        if (!done)
            break;
        s->flush_head = f->next;
        if (s->flush_head == NULL)
            s->flush_tail = NULL;
        s->flushes_in_flight--;
        if (!s->failstop)
            complete_flush(s, f, false);
        else if (!f->released)
            for (uint32_t i = 0; i < f->n_groups; i++)
                f->groups[i]->busy = false;
        flush_free(f);
    }
    /* Flushes still running, in order: answer from final apply results,
     * and release the lazy ones (their commit waits for the next batch). */
    for (struct srv_flush *f = s->flush_head; f != NULL; f = f->next) {
        if (!f->submitted || s->failstop)
            break;
        pthread_mutex_lock(&s->done_mu);
        bool applied = f->applied, lazy = f->lazy;
        pthread_mutex_unlock(&s->done_mu);
        if (applied)
            answer_early(s, f);
        if (lazy && !f->released && !f->no_release)
            complete_flush(s, f, true);
        if (!f->released)
            break;
    }
    /* No submit here: the flush hook runs next in this loop iteration and
     * first lets the groups just completed or released add their next
     * readies to the open flush, then submits it. */
}

/* ----------------------------------------------------------------- ticks */

static void expire_list(struct srv_wlist *l, uint64_t now)
{
    struct srv_waiter *w = l->head;
    while (w != NULL) {
        struct srv_waiter *next = w->next;
        if (w->deadline_ms <= now) {
            srv_wlist_remove(l, w);
            w->cb(w, RK_ETIMEDOUT, NULL);
        }
        w = next;
    }
}

static bool group_idle(struct srv_group *g)
{
    if (g->proposals.n || g->reads.n || g->read_queue.n || g->lease_queue.n)
        return false;
    struct raft_status st;
    raft_status(g->raft, &st);
    if (st.leader == 0 || st.commit != g->applied)
        return false;
    /* A follower whose leader's node is down or silent keeps ticking so
     * that its election timer fires; quiescing it would leave the group
     * without a leader for good. */
    if (st.role == RAFT_FOLLOWER)
        return srv_node_alive(g->srv, st.leader);
    if (st.role != RAFT_LEADER || st.commit != st.last_index)
        return false;
    for (uint32_t k = 0; k < st.n_match; k++) {
        if (st.match[k] != st.last_index)
            return false;
    }
    return true;
}

void srv_groups_tick(struct srv *s)
{
    if (s->failstop)
        return;
    uint64_t now = srv_loop_now(&s->loop);
    uint32_t quiesce_after = s->election_ticks * QUIESCE_AFTER_ELECTIONS;
    for (uint64_t id = 0; id < s->groups_cap; id++) {
        struct srv_group *g = s->groups[id];
        if (g == NULL)
            continue;
        expire_list(&g->proposals, now);
        expire_list(&g->reads, now);
        expire_list(&g->read_queue, now);
        expire_list(&g->lease_queue, now);
        if (g->quiesced)
            continue;
        if (g->awake_ticks < UINT32_MAX)
            g->awake_ticks++;
        /* Idleness is judged on durable facts (leader known, everything
         * committed is applied, followers caught up, no waiters), not on
         * output that is merely waiting for this iteration's flush (a
         * heartbeat answer), which would reset the count forever. */
        if (group_idle(g)) {
            if (++g->idle_ticks >= quiesce_after && !g->busy &&
                raft_quiescable(g->raft)) {
                g->quiesced = true;
                rk_log(RK_LOG_DEBUG, "shard %" PRIu64 ": quiesced", id);
                continue;
            }
        } else {
            g->idle_ticks = 0;
        }
        raft_tick(g->raft);
    }
}

void srv_groups_peer_down(struct srv *s, uint64_t peer)
{
    for (uint64_t id = 0; id < s->groups_cap; id++) {
        struct srv_group *g = s->groups[id];
        if (g == NULL)
            continue;
        /* A follower whose leader vanished must tick again to elect; a
         * leader must probe the peer again. */
        if (g->leader == peer || g->role == RAFT_LEADER)
            srv_group_wake(g);
        if (g->role == RAFT_LEADER) {
            raft_report_unreachable(g->raft, peer);
            /* A snapshot in flight to it is lost (no-op otherwise). */
            raft_report_snapshot(g->raft, peer, RAFT_SNAP_FAILED);
        }
    }
}

void srv_group_fail_waiters(struct srv_group *g, int status)
{
    fail_list(&g->proposals, status);
    fail_list(&g->read_queue, status);
    fail_list(&g->lease_queue, status);
    fail_list(&g->reads, status);
}

void srv_groups_fail_all(struct srv *s, int status)
{
    for (uint64_t id = 0; id < s->groups_cap; id++) {
        struct srv_group *g = s->groups[id];
        if (g != NULL)
            srv_group_fail_waiters(g, status);
    }
}
