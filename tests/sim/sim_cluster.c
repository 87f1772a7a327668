/* The simulated cluster: options, scheduling, the event loop, checks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "sim.h"
#include "sim_disk.h"
#include "sim_internal.h"

#define SIM_MAX_STEPS_PER_MS 100000u /* bound of sim_step_until per ms */

static const char *const ev_names[SIM_EV__COUNT] = {
    "deliver", "tick",   "disk-done",      "crash",   "restart",
    "heal",    "client", "client-timeout", "nemesis",
};

void sim_opts_default(struct sim_opts *o, uint64_t seed, int nodes)
{
    memset(o, 0, sizeof(*o));
    o->seed = seed;
    o->nodes = nodes;
    o->max_events = 20000;
    o->delay_min_ms = 1;
    o->delay_max_ms = 12;
    o->loss = 0.02;
    o->dup = 0.02;
    o->reorder = 0.05;
    o->disk_min_ms = 1;
    o->disk_max_ms = 8;
    o->crashes = true;
    o->partitions = true;
    o->membership = true;
    o->transfers = true;
    o->snapshots = true;
    o->nemesis_every_ms = 300;
    o->tick_ms = 10;
    o->snapshot_chunk = 40;
    o->profile = -1;
    o->pre_vote = true;
    o->check_quorum = true;
    o->lease_reads = true;
}

/* ------------------------------------------------------------ scheduling */

void sim__schedule(struct sim *s, uint64_t delay, uint8_t kind, int node,
                   uint64_t arg, struct raft_msg *msg)
{
    struct sim_event e = {
        .time = s->now + delay,
        .seq = s->seq++,
        .kind = kind,
        .node = node,
        .gen = node >= 0 && node < SIM_MAX_NODES && kind != SIM_EV_CLIENT &&
                       kind != SIM_EV_CLIENT_TIMEOUT
                   ? s->nodes[node].gen
                   : 0,
        .arg = arg,
        .msg = msg,
    };
    RK_ASSERT(sim_heap_push(&s->heap, &e) == 0);
}

uint64_t sim__rand_range(struct sim *s, uint64_t lo, uint64_t hi)
{
    if (hi <= lo)
        return lo;
    return lo + rk_rand_below(&s->rng, hi - lo + 1);
}

bool sim__chance(struct sim *s, double p)
{
    return p > 0 && rk_rand_double(&s->rng) < p;
}

int sim__slot_of(const struct sim *s, raft_id id)
{
    if (id == 0 || id > (raft_id)s->n_slots)
        return -1;
    return (int)(id - 1);
}

/* ------------------------------------------------------------ lifecycle */

int sim_init(struct sim *s, const struct sim_opts *o)
{
    memset(s, 0, sizeof(*s));
    s->o = *o;
    if (o->nodes < 1 || o->nodes > 7)
        return RK_EINVAL;
    rk_rand_seed(&s->rng, o->seed);
    sim_heap_init(&s->heap);
    /* Small messages and windows split replication into many steps, which
     * is where ordering bugs hide; the seed picks the shape. */
    static const size_t msg_bytes[] = {1, 2 * SIM_CMD_SIZE, 8 * SIM_CMD_SIZE};
    static const uint32_t inflight[] = {1, 2, 8};
    if (s->o.max_msg_bytes == 0)
        s->o.max_msg_bytes = msg_bytes[rk_rand_below(&s->rng, 3)];
    if (s->o.max_inflight == 0)
        s->o.max_inflight = inflight[rk_rand_below(&s->rng, 3)];
    /* The fault profile: mixed faults at a calm or fast pace, or leader
     * churn (crash / isolate the leader every few election timeouts). */
    s->boot_snapshot = sim__chance(s, 0.5);
    s->profile = (int)rk_rand_below(&s->rng, SIM_PROFILE__COUNT);
    if (o->profile >= 0 && o->profile < SIM_PROFILE__COUNT)
        s->profile = o->profile;
    if (s->profile == SIM_PROFILE_FAST)
        s->o.nemesis_every_ms = s->o.nemesis_every_ms / 3 + 1;
    else if (s->profile == SIM_PROFILE_CHURN)
        s->o.nemesis_every_ms = s->o.nemesis_every_ms / 2 + 1;
    s->next_value = 1;
    s->workload = true;
    struct raft_conf_state boot;
    memset(&boot, 0, sizeof(boot));
    for (int i = 0; i < o->nodes; i++)
        boot.voters[boot.n_voters++] = (raft_id)i + 1;
    for (int i = 0; i < o->nodes; i++) {
        struct sim_node *n = &s->nodes[i];
        n->id = (raft_id)i + 1;
        n->log = sim_disk_new(o->snapshot_chunk);
        if (n->log == NULL)
            return RK_ENOMEM;
        /* Either the TiKV way (a snapshot at index 1 holds the bootstrap
         * configuration and the empty state) or the plain way (only the
         * bootstrap configuration; joiners learn it with their first
         * append): the seed picks, both must be safe. */
        if (s->boot_snapshot) {
            uint8_t img[SIM_IMAGE_SIZE];
            n->applied = 1;
            sim__image_encode(n, img);
            n->applied = 0;
            int brc = sim_disk_bootstrap(n->log, &boot, img, sizeof(img));
            if (brc != 0)
                return brc;
        } else {
            sim_disk_set_conf(n->log, &boot);
        }
        s->n_slots++;
        int rc = sim__start_node(s, i, &boot);
        if (rc != 0)
            return rc;
        sim__schedule(s, sim__rand_range(s, 0, o->tick_ms), SIM_EV_TICK, i, 0,
                      NULL);
    }
    for (int c = 0; c < SIM_CLIENTS; c++) {
        s->clients[c].process = s->next_process++;
        sim__schedule(s, sim__rand_range(s, 50, 300), SIM_EV_CLIENT, c, 0,
                      NULL);
    }
    sim__schedule(s, sim__rand_range(s, 100, 2 * (uint64_t)o->nemesis_every_ms),
                  SIM_EV_NEMESIS, -1, 0, NULL);
    sim_trace(s,
              "seed %llu nodes %d max_msg_bytes %zu inflight %u profile %d "
              "boot_snapshot %d",
              (unsigned long long)o->seed, o->nodes, s->o.max_msg_bytes,
              s->o.max_inflight, s->profile, (int)s->boot_snapshot);
    return 0;
}

void sim_free(struct sim *s)
{
    for (int i = 0; i < s->n_slots; i++) {
        if (s->nodes[i].raft)
            raft_node_free(s->nodes[i].raft);
        if (s->nodes[i].log)
            sim_disk_free(s->nodes[i].log);
    }
    sim_heap_free(&s->heap);
    sim_check_free(s);
    memset(s, 0, sizeof(*s));
}

/* ------------------------------------------------------------ checking */

bool sim_check_safety(struct sim *s)
{
    for (int i = 0; i < s->n_slots && !s->failed; i++) {
        struct sim_node *n = &s->nodes[i];
        if (!n->up)
            continue;
        struct raft_status st;
        raft_status(n->raft, &st);
        if (st.term < n->last_term)
            sim_violation(s, "node %llu term went back from %llu to %llu",
                          (unsigned long long)n->id,
                          (unsigned long long)n->last_term,
                          (unsigned long long)st.term);
        if (st.commit < n->last_commit)
            sim_violation(s, "node %llu commit went back from %llu to %llu",
                          (unsigned long long)n->id,
                          (unsigned long long)n->last_commit,
                          (unsigned long long)st.commit);
        if (st.role == RAFT_LEADER) {
            sim_check_leader(s, n->id, st.term);
            if (n->last_role != RAFT_LEADER || n->last_term != st.term) {
                /* Just elected: its log must reach every committed index. */
                if (st.last_index < s->commit_max)
                    sim_violation(s,
                                  "leader completeness: n%llu leads term "
                                  "%llu with last index %llu < committed %llu",
                                  (unsigned long long)n->id,
                                  (unsigned long long)st.term,
                                  (unsigned long long)st.last_index,
                                  (unsigned long long)s->commit_max);
                s->lc_term[i] = st.term;
                s->lc_commit[i] = s->commit_max;
                sim_trace(s, "n%llu became leader of term %llu (last %llu)",
                          (unsigned long long)n->id,
                          (unsigned long long)st.term,
                          (unsigned long long)st.last_index);
            }
        }
        if (st.role == RAFT_LEADER && n->last_role == RAFT_LEADER &&
            n->last_term == st.term && st.commit > n->last_commit)
            s->commit_hook = i; /* the nemesis may strike right now */
        if (st.commit > s->commit_max)
            s->commit_max = st.commit;
        n->last_commit = st.commit;
        n->last_term = st.term;
        n->last_role = st.role;
    }
    /* No committed entry lost: the newest applied entry stays durable on
     * at least one node (log or snapshot). */
    if (!s->failed && s->applied_max > 0) {
        raft_index k = s->applied_max;
        bool held = false;
        for (int i = 0; i < s->n_slots && !held; i++) {
            struct sim_node *n = &s->nodes[i];
            if (n->id == 0 || n->retired)
                continue;
            raft_term t;
            struct sim_durable d;
            sim_disk_load(n->log, &d);
            if (d.snap.index >= k ||
                (sim_disk_term(n->log, k, &t) == 0 && t == s->applied[k].term))
                held = true;
        }
        if (!held)
            sim_violation(
                s, "committed entry %llu (t%llu) is on no node's disk",
                (unsigned long long)k, (unsigned long long)s->applied[k].term);
    }
    return !s->failed;
}

/* ------------------------------------------------------------ the loop */

bool sim_step(struct sim *s)
{
    struct sim_event e;
    if (!sim_heap_pop(&s->heap, &e))
        return false;
    RK_ASSERT(e.time >= s->now);
    s->now = e.time;
    s->events++;
    struct sim_node *n =
        e.node >= 0 && e.node < SIM_MAX_NODES ? &s->nodes[e.node] : NULL;
    switch (e.kind) {
    case SIM_EV_DELIVER: {
        int from = sim__slot_of(s, e.msg->from);
        bool blocked = from >= 0 && s->cut[from][e.node];
        if (!n->up || blocked) {
            s->n_dropped++;
            sim__trace_msg(s, blocked ? "cut" : "down", e.msg);
            if (blocked && from >= 0 && s->nodes[from].up) {
                if (e.msg->type == RAFT_MSG_SNAPSHOT)
                    raft_report_snapshot(s->nodes[from].raft, e.msg->to,
                                         RAFT_SNAP_FAILED);
                raft_report_unreachable(s->nodes[from].raft, e.msg->to);
                sim__handle_ready(s, from);
            }
        } else {
            int rc = raft_step(n->raft, e.msg);
            sim__trace_msg(s, rc ? "step-rejected" : "step", e.msg);
            sim__handle_ready(s, e.node);
        }
        free(e.msg);
        break;
    }
    case SIM_EV_TICK:
        if (n->up) {
            raft_tick(n->raft);
            sim__handle_ready(s, e.node);
        }
        if (!n->retired)
            sim__schedule(s, s->o.tick_ms, SIM_EV_TICK, e.node, 0, NULL);
        break;
    case SIM_EV_DISK_DONE:
        if (n->up && n->busy && e.gen == n->gen) {
            if (n->disk_fault) {
                sim__disk_fault(s, e.node);
                break;
            }
            sim_trace(s, "disk-done n%llu", (unsigned long long)n->id);
            sim__on_disk_done(s, e.node);
            sim__handle_ready(s, e.node);
        }
        break;
    case SIM_EV_CRASH:
        sim_crash(s, e.node);
        break;
    case SIM_EV_RESTART:
        sim_restart(s, e.node); /* a no-op when up or retired */
        if (n->up)
            sim__handle_ready(s, e.node);
        break;
    case SIM_EV_HEAL:
        sim_trace(s, "heal");
        sim_heal(s);
        break;
    case SIM_EV_CLIENT:
        sim__on_client(s, e.node);
        break;
    case SIM_EV_CLIENT_TIMEOUT: {
        struct sim_client *cl = &s->clients[e.node];
        if (cl->busy && s->ops[cl->op].id == e.arg) {
            sim_trace(s, "client %d op#%llu timed out", e.node,
                      (unsigned long long)e.arg);
            sim__client_done(s, e.node, SIM_ST_INFO, 0);
        }
        break;
    }
    case SIM_EV_NEMESIS:
        sim__on_nemesis(s);
        break;
    default:
        RK_UNREACHABLE();
    }
    if (e.kind != SIM_EV_TICK && e.kind != SIM_EV_DELIVER)
        sim_trace(s, "event %s", ev_names[e.kind]);
    s->commit_hook = -1;
    sim_check_safety(s);
    if (s->commit_hook >= 0)
        sim__nemesis_on_commit(s, s->commit_hook);
    return true;
}

bool sim_step_until(struct sim *s, sim_pred_cb pred, void *arg, uint64_t max_ms)
{
    uint64_t deadline = s->now + max_ms;
    uint64_t budget = (max_ms + 1) * SIM_MAX_STEPS_PER_MS;
    while (!s->failed && budget-- > 0) {
        if (pred(s, arg))
            return true;
        const struct sim_event *next = sim_heap_peek(&s->heap);
        if (next == NULL || next->time > deadline)
            return pred(s, arg);
        sim_step(s);
    }
    return false;
}

static bool leader_known(struct sim *s, void *arg)
{
    int *out = arg;
    int l = sim__find_leader(s);
    if (l < 0)
        return false;
    struct raft_status st;
    raft_status(s->nodes[l].raft, &st);
    uint32_t agree = 0;
    for (uint32_t v = 0; v < st.conf.n_voters; v++) {
        int i = sim__slot_of(s, st.conf.voters[v]);
        if (i < 0 || !s->nodes[i].up)
            continue;
        struct raft_status o;
        raft_status(s->nodes[i].raft, &o);
        if (o.leader == s->nodes[l].id && o.term == st.term)
            agree++;
    }
    if (agree < st.conf.n_voters / 2 + 1)
        return false;
    *out = l;
    return true;
}

int sim_until_leader(struct sim *s, uint64_t max_ms)
{
    int l = -1;
    if (!sim_step_until(s, leader_known, &l, max_ms))
        return -1;
    return l;
}

struct applied_arg {
    int i;
    raft_index index;
};

static bool node_applied(struct sim *s, void *arg)
{
    struct applied_arg *a = arg;
    return s->nodes[a->i].applied >= a->index;
}

bool sim_until_applied(struct sim *s, int i, raft_index index, uint64_t max_ms)
{
    struct applied_arg a = {.i = i, .index = index};
    return sim_step_until(s, node_applied, &a, max_ms);
}

static bool never(struct sim *s, void *arg)
{
    (void)s;
    (void)arg;
    return false;
}

static bool clients_idle(struct sim *s, void *arg)
{
    (void)arg;
    for (int c = 0; c < SIM_CLIENTS; c++)
        if (s->clients[c].busy)
            return false;
    return true;
}

int sim_run(struct sim *s)
{
    while (!s->failed && s->events < s->o.max_events && sim_step(s)) {
    }
    if (s->failed)
        return 1;

    /* Heal everything, then the cluster must make progress. */
    sim_trace(s, "calm: heal, restart, no loss");
    s->net_calm = true;
    sim_heal(s);
    for (int i = 0; i < s->n_slots; i++)
        if (!s->nodes[i].up && !s->nodes[i].retired && s->nodes[i].id)
            sim_restart(s, i);
    for (int i = 0; i < s->n_slots; i++)
        if (s->nodes[i].up)
            sim__handle_ready(s, i);
    uint64_t deadline = s->now + 30000;
    bool live = false;
    while (!s->failed && s->now < deadline && !live) {
        int l = sim_until_leader(s, deadline - s->now);
        if (l < 0)
            break;
        raft_index idx =
            sim_propose_write(s, l, SIM_PROBE_KEY, s->next_value++);
        if (idx == 0) {
            /* Busy (say a transfer is running): let 50 ms pass. */
            sim_step_until(s, never, NULL, 50);
            continue;
        }
        live = sim_until_applied(s, l, idx, 3000);
    }
    if (!s->failed && !live)
        sim_violation(s, "liveness: no leader committed a proposal within "
                         "30 s of simulated time after healing");
    s->workload = false;
    sim_step_until(s, clients_idle, NULL, 2 * SIM_CLIENT_TIMEOUT_MS);
    if (!s->failed)
        sim_check_history(s);
    return s->failed ? 1 : 0;
}
