/* The simulated cluster: nodes, network, disk, faults, client workload and the event loop. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "sim.h"
#include "sim_disk.h"

#define SIM_MAX_STEPS_PER_MS 100000u /* bound of sim_step_until per ms */
#define SIM_CLIENT_TIMEOUT_MS 1500
#define SIM_SNAP_PAD 96 /* filler so that snapshots span several chunks */

static const char *const ev_names[SIM_EV__COUNT] = {
    "deliver", "tick", "disk-done", "crash", "restart", "heal", "client",
    "client-timeout", "nemesis",
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
}

/* ------------------------------------------------------------ scheduling */

static void schedule(struct sim *s, uint64_t delay, uint8_t kind, int node,
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

static uint64_t rand_range(struct sim *s, uint64_t lo, uint64_t hi)
{
    if (hi <= lo)
        return lo;
    return lo + rk_rand_below(&s->rng, hi - lo + 1);
}

static bool chance(struct sim *s, double p)
{
    return p > 0 && rk_rand_double(&s->rng) < p;
}

static int slot_of(const struct sim *s, raft_id id)
{
    if (id == 0 || id > (raft_id)s->n_slots)
        return -1;
    return (int)(id - 1);
}

/* ----------------------------------------------------------- network */

static void trace_msg(struct sim *s, const char *what, const struct raft_msg *m)
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
            sim_violation(s, "append from %llu: entry %u has index %llu, "
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

static void send_msg(struct sim *s, int from, const struct raft_msg *m)
{
    s->n_msgs++;
    check_msg_entries(s, m);
    int to = slot_of(s, m->to);
    bool lost = !s->net_calm && chance(s, s->o.loss);
    if (to < 0 || to == from || lost) {
        s->n_dropped++;
        trace_msg(s, "drop", m);
        if (m->type == RAFT_MSG_SNAPSHOT && s->nodes[from].up)
            raft_report_snapshot(s->nodes[from].raft, m->to, RAFT_SNAP_FAILED);
        return;
    }
    int copies = (!s->net_calm && chance(s, s->o.dup)) ? 2 : 1;
    for (int c = 0; c < copies; c++) {
        uint64_t d = rand_range(s, s->o.delay_min_ms, s->o.delay_max_ms);
        if (!s->net_calm && chance(s, s->o.reorder))
            d += rand_range(s, 0, 6 * (uint64_t)s->o.delay_max_ms);
        struct raft_msg *copy = sim_msg_clone(m);
        RK_ASSERT(copy != NULL);
        schedule(s, d, SIM_EV_DELIVER, to, 0, copy);
    }
}

/* -------------------------------------------------- the state machine */

/* Snapshot image: magic, index, kv, filler (so it spans several chunks). */
#define SIM_IMAGE_SIZE (8 + 8 + 8 * SIM_KEYS + SIM_SNAP_PAD)

static void image_encode(const struct sim_node *n, uint8_t *out)
{
    uint64_t magic = 0x53494d534e415031ull;
    memcpy(out, &magic, 8);
    memcpy(out + 8, &n->applied, 8);
    memcpy(out + 16, n->kv, 8 * SIM_KEYS);
    for (int i = 0; i < SIM_SNAP_PAD; i++)
        out[16 + 8 * SIM_KEYS + i] = (uint8_t)(n->applied + (uint64_t)i);
}

static int image_decode(const void *buf, size_t len, raft_index *index,
                        int64_t kv[SIM_KEYS])
{
    uint64_t magic;
    if (len != SIM_IMAGE_SIZE)
        return RK_ECORRUPT;
    memcpy(&magic, buf, 8);
    if (magic != 0x53494d534e415031ull)
        return RK_ECORRUPT;
    memcpy(index, (const uint8_t *)buf + 8, 8);
    memcpy(kv, (const uint8_t *)buf + 16, 8 * SIM_KEYS);
    return 0;
}

/* ------------------------------------------------------------- clients */

static void client_done(struct sim *s, int c, uint8_t status, int64_t result)
{
    struct sim_client *cl = &s->clients[c];
    if (!cl->busy)
        return;
    sim_hist_complete(s, cl->op, status, result);
    const struct sim_op *op = &s->ops[cl->op];
    if (status == SIM_ST_OK)
        s->last_value[op->key] = op->kind == SIM_OP_READ  ? result
                                 : op->kind == SIM_OP_CAS ? op->arg2
                                                          : op->arg1;
    if (status == SIM_ST_INFO)
        cl->process = s->next_process++;
    cl->busy = false;
    if (s->workload)
        schedule(s, status == SIM_ST_OK ? rand_range(s, 1, 40)
                                        : rand_range(s, 30, 150),
                 SIM_EV_CLIENT, c, 0, NULL); /* back off after a failure */
}

/* Every client waiting on node slot i loses its answer (outcome unknown). */
static void clients_lost(struct sim *s, int i)
{
    for (int c = 0; c < SIM_CLIENTS; c++)
        if (s->clients[c].busy && s->clients[c].node == i)
            client_done(s, c, SIM_ST_INFO, 0);
}

static void serve_reads(struct sim *s, int i)
{
    struct sim_node *n = &s->nodes[i];
    uint32_t keep = 0;
    for (uint32_t r = 0; r < n->n_reads; r++) {
        if (n->applied < n->reads[r].index) {
            n->reads[keep++] = n->reads[r];
            continue;
        }
        for (int c = 0; c < SIM_CLIENTS; c++) {
            struct sim_client *cl = &s->clients[c];
            if (cl->busy && cl->node == i &&
                s->ops[cl->op].id == n->reads[r].ctx) {
                client_done(s, c, SIM_ST_OK, n->kv[s->ops[cl->op].key]);
            }
        }
    }
    n->n_reads = keep;
}

/* ------------------------------------------------------------- applying */

static void retire(struct sim *s, int i);

static void apply_entry(struct sim *s, int i, const struct raft_entry *e,
                        int *retire_slot)
{
    struct sim_node *n = &s->nodes[i];
    if (e->index <= n->applied)
        return; /* covered by an installed snapshot */
    if (e->index != n->applied + 1) {
        sim_violation(s, "node %llu applies %llu after %llu (gap)",
                      (unsigned long long)n->id, (unsigned long long)e->index,
                      (unsigned long long)n->applied);
        return;
    }
    struct sim_cmd cmd;
    bool have_cmd = false;
    bool cas_ok = false;
    int64_t result = 0;
    if (e->type == RAFT_ENTRY_NORMAL) {
        if (sim_cmd_decode(e->data, e->len, &cmd) != 0) {
            sim_violation(s, "node %llu applies a corrupt command at %llu",
                          (unsigned long long)n->id,
                          (unsigned long long)e->index);
            return;
        }
        have_cmd = true;
        switch (cmd.kind) {
        case SIM_OP_WRITE:
            n->kv[cmd.key] = cmd.a1;
            break;
        case SIM_OP_READ:
            result = n->kv[cmd.key];
            break;
        case SIM_OP_CAS:
            cas_ok = n->kv[cmd.key] == cmd.a1;
            if (cas_ok)
                n->kv[cmd.key] = cmd.a2;
            break;
        }
    } else if (e->type == RAFT_ENTRY_CONF) {
        struct raft_conf_change cc;
        if (raft_conf_change_decode(e->data, e->len, &cc) == 0 &&
            cc.type == RAFT_CC_REMOVE) {
            int victim = slot_of(s, cc.node);
            if (victim >= 0)
                *retire_slot = victim;
        }
    }
    n->applied = e->index;
    n->applied_term = e->term;
    s->n_commits_seen++;
    sim_check_apply(s, n->id, e->index, e->term, sim_entry_hash(e),
                    sim_state_hash(n->kv));

    /* Answer the client that proposed this index through this node. */
    for (int c = 0; c < SIM_CLIENTS; c++) {
        struct sim_client *cl = &s->clients[c];
        if (!cl->busy || cl->node != i || cl->index != e->index)
            continue;
        struct sim_op *op = &s->ops[cl->op];
        if (!have_cmd || cmd.op != op->id) {
            /* Another entry holds our index: ours can never commit. */
            client_done(s, c, SIM_ST_FAIL, 0);
            continue;
        }
        if (op->kind == SIM_OP_CAS)
            client_done(s, c, cas_ok ? SIM_ST_OK : SIM_ST_FAIL, 0);
        else
            client_done(s, c, SIM_ST_OK, result);
    }
}

/* ---------------------------------------------------------- ready batches */

static void handle_ready(struct sim *s, int i);

static void finish_ready(struct sim *s, int i)
{
    struct sim_node *n = &s->nodes[i];
    struct raft_ready *rd = &n->rd;

    for (uint32_t k = 0; k < rd->n_msgs_after_sync; k++)
        send_msg(s, i, &rd->msgs_after_sync[k]);

    int retire_slot = -1;
    for (uint32_t k = 0; k < rd->n_committed && !s->failed; k++)
        apply_entry(s, i, &rd->committed[k], &retire_slot);

    for (uint32_t k = 0; k < rd->n_reads; k++) {
        if (n->n_reads == sizeof(n->reads) / sizeof(n->reads[0]))
            break; /* the client will time out */
        n->reads[n->n_reads].ctx = rd->reads[k].ctx;
        n->reads[n->n_reads].index = rd->reads[k].index;
        n->n_reads++;
    }
    serve_reads(s, i);
    raft_advance(n->raft, rd);
    memset(rd, 0, sizeof(*rd));
    n->busy = false;
    if (retire_slot >= 0 && !s->nodes[retire_slot].retired)
        retire(s, retire_slot);
}

/* The leader-completeness obligation: the first entries a leader writes in
 * its term come after every entry committed before its election, and its
 * log holds exactly those committed entries. */
static void check_leader_log(struct sim *s, int i, raft_index first_own)
{
    struct sim_node *n = &s->nodes[i];
    raft_index need = s->lc_commit[i];
    if (first_own <= need) {
        sim_violation(s, "leader completeness: leader %llu of term %llu "
                         "writes at %llu over committed index %llu",
                      (unsigned long long)n->id,
                      (unsigned long long)s->lc_term[i],
                      (unsigned long long)first_own,
                      (unsigned long long)need);
        return;
    }
    raft_index lo = sim_disk_first(n->log);
    for (raft_index k = lo; k <= need && k <= s->applied_max; k++) {
        if (s->applied[k].term == 0)
            continue;
        raft_term t;
        if (sim_disk_term(n->log, k, &t) != 0 || t != s->applied[k].term) {
            sim_violation(s, "leader completeness: leader %llu of term %llu "
                             "lacks committed entry %llu (t%llu)",
                          (unsigned long long)n->id,
                          (unsigned long long)s->lc_term[i],
                          (unsigned long long)k,
                          (unsigned long long)s->applied[k].term);
            return;
        }
    }
}

static void on_disk_done(struct sim *s, int i)
{
    struct sim_node *n = &s->nodes[i];
    struct raft_ready *rd = &n->rd;
    /* Log matching on what this node makes durable. */
    for (uint32_t k = 0; k < rd->n_entries; k++) {
        const struct raft_entry *e = &rd->entries[k];
        raft_term prev = UINT64_MAX;
        if (k > 0)
            prev = rd->entries[k - 1].term;
        else if (e->index == 1)
            prev = 0;
        else if (sim_disk_term(n->log, e->index - 1, &prev) != 0)
            prev = UINT64_MAX;
        sim_check_entry(s, n->id, e->index, e->term, sim_entry_hash(e), prev);
    }

    int rc = sim_disk_persist(n->log, rd);
    if (rc != 0) {
        sim_violation(s, "node %llu: persisting a ready batch failed: %s",
                      (unsigned long long)n->id, rk_strerror(rc));
        return;
    }
    if (rd->snap_install) {
        raft_index idx;
        size_t image_len;
        const void *image = sim_disk_snapshot_image(n->log, &image_len);
        if (image == NULL ||
            image_decode(image, image_len, &idx, n->kv) != 0 ||
            idx != rd->snap_meta.index) {
            sim_violation(s, "node %llu installed snapshot %llu with a "
                             "corrupt or mismatched image",
                          (unsigned long long)n->id,
                          (unsigned long long)rd->snap_meta.index);
            return;
        }
        n->applied = idx;
        n->applied_term = rd->snap_meta.term;
        s->n_snap_installs++;
        if (idx <= s->applied_max && s->applied[idx].term != 0 &&
            (s->applied[idx].term != rd->snap_meta.term ||
             s->applied[idx].state_hash != sim_state_hash(n->kv)))
            sim_violation(s, "state-machine safety: node %llu installed a "
                             "snapshot at %llu that differs from the applied "
                             "state",
                          (unsigned long long)n->id, (unsigned long long)idx);
    }
    if (s->lc_term[i] != 0 && rd->n_entries > 0) {
        for (uint32_t k = 0; k < rd->n_entries; k++) {
            if (rd->entries[k].term == s->lc_term[i]) {
                check_leader_log(s, i, rd->entries[k].index);
                s->lc_term[i] = 0;
                break;
            }
        }
    }
    finish_ready(s, i);
}

/*
 * The write of the in-flight batch fails: either the fsync fails and nothing
 * of the batch is durable, or the write is torn and only a prefix of its
 * entries reached the disk (with the membership record but without the hard
 * state, as with a write-ahead log whose tail records were cut). Either way
 * the node fail-stops (DESIGN section 7) and restarts later from its disk.
 */
static void disk_fault(struct sim *s, int i)
{
    struct sim_node *n = &s->nodes[i];
    const struct raft_ready *rd = &n->rd;
    n->disk_fault = false;
    uint32_t keep = 0;
    if (rd->n_entries > 0 && !rd->snap_install && !rd->snap_chunk &&
        chance(s, 0.5)) {
        keep = (uint32_t)rk_rand_below(&s->rng, rd->n_entries + 1);
        if (keep > 0) {
            struct raft_ready part;
            memset(&part, 0, sizeof(part));
            part.entries = rd->entries;
            part.n_entries = keep;
            part.must_sync = true;
            /* The membership record is metadata written before the log
             * (a joiner's bootstrap conf arrives with its first append and
             * gives the entries their meaning); only the hard state and a
             * suffix of the entries are torn off. */
            part.conf = rd->conf;
            part.conf_changed = rd->conf_changed;
            for (uint32_t k = 0; k < keep; k++) {
                const struct raft_entry *e = &rd->entries[k];
                raft_term prev = UINT64_MAX;
                if (k > 0)
                    prev = rd->entries[k - 1].term;
                else if (e->index == 1)
                    prev = 0;
                else if (sim_disk_term(n->log, e->index - 1, &prev) != 0)
                    prev = UINT64_MAX;
                sim_check_entry(s, n->id, e->index, e->term,
                                sim_entry_hash(e), prev);
            }
            int rc = sim_disk_persist(n->log, &part);
            if (rc != 0)
                sim_violation(s, "node %llu: torn write of %u entries failed: %s",
                              (unsigned long long)n->id, keep, rk_strerror(rc));
        }
    }
    sim_trace(s, "disk fault n%llu: %s (%u of %u entries kept); fail-stop",
              (unsigned long long)n->id, keep ? "torn write" : "fsync failed",
              keep, rd->n_entries);
    s->n_disk_faults++;
    sim_crash(s, i);
    schedule(s, rand_range(s, 10, 800), SIM_EV_RESTART, i, 0, NULL);
}

static void handle_ready(struct sim *s, int i)
{
    struct sim_node *n = &s->nodes[i];
    for (int round = 0; round < 16 && !s->failed; round++) {
        if (!n->up || n->busy || !raft_has_ready(n->raft))
            return;
        struct raft_ready *rd = &n->rd;
        raft_ready(n->raft, rd);
        sim_trace(s, "ready n%llu hs(t%llu v%llu c%llu) ents=%u "
                         "msgs=%u+%u commit=%u reads=%u%s%s",
                      (unsigned long long)n->id,
                      (unsigned long long)rd->hs.term,
                      (unsigned long long)rd->hs.vote,
                      (unsigned long long)rd->hs.commit, rd->n_entries,
                      rd->n_msgs, rd->n_msgs_after_sync, rd->n_committed,
                      rd->n_reads, rd->snap_chunk ? " chunk" : "",
                      rd->snap_install ? " install" : "");
        for (uint32_t k = 0; k < rd->n_msgs; k++)
            send_msg(s, i, &rd->msgs[k]);
        n->busy = true;
        bool disk = rd->must_sync || rd->n_entries || rd->snap_chunk ||
                    rd->snap_install || rd->hs_changed || rd->conf_changed;
        if (disk) {
            schedule(s, rand_range(s, s->o.disk_min_ms, s->o.disk_max_ms),
                     SIM_EV_DISK_DONE, i, 0, NULL);
            return;
        }
        finish_ready(s, i);
    }
}

/* ------------------------------------------------------------- node life */

/* The core's own log lines, printed with -v only (never hashed). */
static void core_trace(void *data, raft_id node, int level, const char *msg)
{
    struct sim *s = data;
    (void)level;
    printf("    [%llu ms] core n%llu: %s\n", (unsigned long long)s->now,
           (unsigned long long)node, msg);
}

static int start_node(struct sim *s, int i, const struct raft_conf_state *boot)
{
    struct sim_node *n = &s->nodes[i];
    struct sim_durable d;
    sim_disk_load(n->log, &d);

    /* The state machine is volatile: rebuild it from the durable snapshot;
     * the core re-delivers the committed entries after it. */
    memset(n->kv, 0, sizeof(n->kv));
    n->applied = 0;
    n->applied_term = 0;
    size_t len;
    const void *img = sim_disk_snapshot_image(n->log, &len);
    if (img != NULL) {
        raft_index idx;
        if (image_decode(img, len, &idx, n->kv) != 0 || idx != d.snap.index)
            return RK_ECORRUPT;
        n->applied = idx;
        n->applied_term = d.snap.term;
    }

    struct raft_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.id = n->id;
    cfg.shard = 1;
    cfg.election_ticks = 10;
    cfg.heartbeat_ticks = 2;
    cfg.pre_vote = s->o.pre_vote;
    cfg.check_quorum = s->o.check_quorum;
    cfg.max_inflight_msgs = s->o.max_inflight;
    cfg.max_msg_bytes = s->o.max_msg_bytes;
    cfg.max_uncommitted_bytes = 0;
    cfg.max_entry_bytes = 1024;
    cfg.max_committed_bytes = 0;
    cfg.seed = rk_rand_next(&s->rng);
    cfg.log = sim_disk_ops();
    cfg.log_ctx = n->log;
    cfg.hs = d.hs;
    cfg.conf = d.conf;
    if (cfg.conf.n_voters == 0 && cfg.conf.n_learners == 0 && boot != NULL)
        cfg.conf = *boot;
    cfg.applied = n->applied;
    if (s->o.verbose) {
        s->tracer.data = s;
        s->tracer.emit = core_trace;
        cfg.tracer = &s->tracer;
    }
    int rc = raft_node_new(&cfg, &n->raft);
    if (rc != 0)
        return rc;
    n->up = true;
    n->busy = false;
    n->disk_fault = false;
    n->n_reads = 0;
    n->last_commit = 0;
    n->last_term = 0;
    n->last_role = RAFT_FOLLOWER;
    memset(&n->rd, 0, sizeof(n->rd));
    return 0;
}

void sim_crash(struct sim *s, int i)
{
    struct sim_node *n = &s->nodes[i];
    if (!n->up)
        return;
    sim_trace(s, "crash n%llu%s", (unsigned long long)n->id,
              n->busy ? " (unsynced batch lost)" : "");
    raft_node_free(n->raft);
    n->raft = NULL;
    n->up = false;
    n->busy = false;
    n->gen++;
    n->n_reads = 0;
    memset(&n->rd, 0, sizeof(n->rd));
    sim_disk_crash(n->log);
    s->lc_term[i] = 0;
    s->n_crashes++;
    clients_lost(s, i);
}

int sim_restart(struct sim *s, int i)
{
    struct sim_node *n = &s->nodes[i];
    if (n->up || n->retired || n->id == 0)
        return 0;
    int rc = start_node(s, i, NULL);
    struct sim_durable d;
    sim_disk_load(n->log, &d);
    char conf[128];
    int off = snprintf(conf, sizeof(conf), "voters");
    for (uint32_t v = 0; v < d.conf.n_voters && off > 0 && off < 100; v++)
        off += snprintf(conf + off, sizeof(conf) - (size_t)off, " %llu",
                        (unsigned long long)d.conf.voters[v]);
    if (off > 0 && off < 100 && d.conf.n_learners)
        snprintf(conf + off, sizeof(conf) - (size_t)off, " +%u learners",
                 d.conf.n_learners);
    sim_trace(s, "restart n%llu: %s (term %llu vote %llu commit %llu, log "
                 "%llu..%llu, snapshot %llu, disk conf: %s)",
              (unsigned long long)n->id, rc ? rk_strerror(rc) : "ok",
              (unsigned long long)d.hs.term, (unsigned long long)d.hs.vote,
              (unsigned long long)d.hs.commit,
              (unsigned long long)sim_disk_first(n->log),
              (unsigned long long)sim_disk_last(n->log),
              (unsigned long long)d.snap.index, conf);
    if (rc != 0)
        sim_violation(s, "node %llu cannot restart from its durable state: %s",
                      (unsigned long long)n->id, rk_strerror(rc));
    return rc;
}

static void retire(struct sim *s, int i)
{
    sim_trace(s, "retire n%llu (removed from the group)",
              (unsigned long long)s->nodes[i].id);
    sim_crash(s, i);
    s->nodes[i].retired = true;
}

int sim_add_slot(struct sim *s)
{
    if (s->n_slots >= SIM_MAX_NODES)
        return -1;
    int i = s->n_slots;
    struct sim_node *n = &s->nodes[i];
    memset(n, 0, sizeof(*n));
    n->id = (raft_id)i + 1;
    n->log = sim_disk_new(s->o.snapshot_chunk);
    RK_ASSERT(n->log != NULL);
    s->n_slots++;
    struct raft_conf_state empty;
    memset(&empty, 0, sizeof(empty));
    if (start_node(s, i, &empty) != 0) {
        sim_violation(s, "node %llu cannot start empty", (unsigned long long)n->id);
        return -1;
    }
    schedule(s, rand_range(s, 0, s->o.tick_ms), SIM_EV_TICK, i, 0, NULL);
    return i;
}

/* ---------------------------------------------------------- operations */

int sim_conf_change(struct sim *s, int leader, uint8_t type, raft_id node)
{
    struct sim_node *n = &s->nodes[leader];
    if (!n->up)
        return RK_ENOTLEADER;
    struct raft_conf_change cc = {.type = type, .node = node};
    raft_index idx = 0;
    int rc = raft_propose_conf(n->raft, &cc, &idx);
    static const char *const names[] = {"add-voter", "add-learner", "promote",
                                        "remove"};
    sim_trace(s, "conf %s n%llu at n%llu: %s (index %llu)",
              type < 4 ? names[type] : "?", (unsigned long long)node,
              (unsigned long long)n->id, rc ? rk_err_name(rc) : "ok",
              (unsigned long long)idx);
    if (rc == 0)
        s->n_conf++;
    handle_ready(s, leader);
    return rc;
}

int sim_take_snapshot(struct sim *s, int i)
{
    struct sim_node *n = &s->nodes[i];
    if (!n->up || n->applied == 0)
        return RK_EINVAL;
    struct sim_durable d;
    sim_disk_load(n->log, &d);
    if (n->applied <= d.snap.index)
        return 0;
    struct raft_snapshot_meta meta;
    memset(&meta, 0, sizeof(meta));
    meta.index = n->applied;
    meta.term = n->applied_term;
    struct raft_status st;
    raft_status(n->raft, &st);
    /* The conf as of the snapshot index: the core's conf is as of its last
     * entry, which equals it unless a conf entry follows; then skip. */
    for (raft_index k = n->applied + 1; k <= sim_disk_last(n->log); k++) {
        struct raft_entry *blk;
        if (sim_disk_entry(n->log, k, &blk) != 0)
            return 0;
        uint8_t type = blk->type;
        free(blk);
        if (type == RAFT_ENTRY_CONF)
            return 0;
    }
    if (st.last_index > sim_disk_last(n->log))
        return 0; /* unstable entries could hold a conf change */
    /* Work-around for raft_memlog (reported): compacting a log whose
     * entries all have empty payloads passes NULL to memmove (UBSan). */
    bool payload = false;
    for (raft_index k = sim_disk_first(n->log);
         k <= sim_disk_last(n->log) && !payload; k++) {
        struct raft_entry *blk;
        if (sim_disk_entry(n->log, k, &blk) != 0)
            return 0;
        payload = blk->len > 0;
        free(blk);
    }
    if (!payload)
        return 0;
    meta.conf = st.conf;
    uint8_t img[SIM_IMAGE_SIZE];
    image_encode(n, img);
    int rc = sim_disk_snapshot(n->log, &meta, img, sizeof(img));
    sim_trace(s, "snapshot n%llu at %llu: %s", (unsigned long long)n->id,
              (unsigned long long)meta.index, rc ? rk_err_name(rc) : "ok");
    if (rc != 0)
        return rc;
    raft_snapshot_taken(n->raft, meta.index);
    s->n_snapshots++;
    handle_ready(s, i);
    return 0;
}

static uint64_t propose_cmd(struct sim *s, int i, const struct sim_cmd *cmd,
                            raft_index *index)
{
    uint8_t buf[SIM_CMD_SIZE];
    sim_cmd_encode(cmd, buf);
    *index = 0;
    int rc = raft_propose(s->nodes[i].raft, buf, sizeof(buf), index);
    return (uint64_t)(-rc);
}

raft_index sim_propose_write(struct sim *s, int i, int key, int64_t value)
{
    if (!s->nodes[i].up)
        return 0;
    struct sim_cmd cmd = {.kind = SIM_OP_WRITE, .key = (uint8_t)key, .a1 = value};
    raft_index idx;
    if (propose_cmd(s, i, &cmd, &idx) != 0)
        return 0;
    sim_trace(s, "propose n%llu write k%d=%lld at %llu",
              (unsigned long long)s->nodes[i].id, key, (long long)value,
              (unsigned long long)idx);
    handle_ready(s, i);
    return idx;
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
static int pick_target(struct sim *s)
{
    int up[SIM_MAX_NODES], n_up = 0;
    for (int i = 0; i < s->n_slots; i++)
        if (s->nodes[i].up)
            up[n_up++] = i;
    if (n_up == 0)
        return (int)rk_rand_below(&s->rng, (uint64_t)s->n_slots);
    int asked = up[rk_rand_below(&s->rng, (uint64_t)n_up)];
    struct raft_status st;
    raft_status(s->nodes[asked].raft, &st);
    int l = slot_of(s, st.leader);
    if (l >= 0 && !chance(s, 0.1))
        return l;
    return asked;
}

static void on_client(struct sim *s, int c)
{
    struct sim_client *cl = &s->clients[c];
    if (cl->busy || !s->workload)
        return;
    uint64_t r = rk_rand_below(&s->rng, 100);
    int key = (int)rk_rand_below(&s->rng, SIM_CLIENT_KEYS);
    uint8_t kind;
    int64_t a1 = 0, a2 = 0;
    bool via_log = true;
    if (r < 40) {
        kind = SIM_OP_WRITE;
        a1 = s->next_value++;
    } else if (r < 70) {
        kind = SIM_OP_READ;
        via_log = chance(s, 0.5);
    } else {
        kind = SIM_OP_CAS;
        /* Mostly the latest value seen for the key, so that many succeed. */
        a1 = chance(s, 0.75) ? s->last_value[key]
                             : (int64_t)rk_rand_below(&s->rng, (uint64_t)s->next_value);
        a2 = s->next_value++;
    }
    int target = pick_target(s);
    if (kind == SIM_OP_READ && !via_log && s->o.stale_reads)
        target = (int)rk_rand_below(&s->rng, (uint64_t)s->n_slots);
    uint64_t op = sim_hist_invoke(s, c, kind, key, a1, a2);
    s->ops[op].process = cl->process;
    cl->busy = true;
    cl->op = op;
    cl->node = target;
    cl->index = 0;
    struct sim_node *n = &s->nodes[target];
    int rc;
    if (!n->up) {
        rc = RK_EUNAVAILABLE;
    } else if (via_log) {
        struct sim_cmd cmd = {.kind = kind, .key = (uint8_t)key,
                              .op = s->ops[op].id, .a1 = a1, .a2 = a2};
        uint8_t buf[SIM_CMD_SIZE];
        sim_cmd_encode(&cmd, buf);
        raft_index idx = 0;
        rc = raft_propose(n->raft, buf, sizeof(buf), &idx);
        cl->index = idx;
    } else if (s->o.stale_reads) {
        /* Deliberately wrong (checker self-test): any replica answers from
         * its local state at once, without ReadIndex. */
        sim_trace(s, "client %d op#%llu stale read k%d at n%llu: %lld", c,
                  (unsigned long long)s->ops[op].id, key,
                  (unsigned long long)n->id, (long long)n->kv[key]);
        client_done(s, c, SIM_ST_OK, n->kv[key]);
        return;
    } else {
        rc = raft_read_index(n->raft, s->ops[op].id);
    }
    sim_trace(s, "client %d op#%llu %s k%d %lld %lld at n%llu%s: %s (index %llu)",
              c, (unsigned long long)s->ops[op].id,
              kind == SIM_OP_WRITE ? "write" : kind == SIM_OP_READ ? "read" : "cas",
              key, (long long)a1, (long long)a2, (unsigned long long)n->id,
              via_log ? "" : " read-index", rc ? rk_err_name(rc) : "ok",
              (unsigned long long)cl->index);
    if (rc != 0) {
        client_done(s, c, SIM_ST_FAIL, 0);
        return;
    }
    schedule(s, SIM_CLIENT_TIMEOUT_MS, SIM_EV_CLIENT_TIMEOUT, c,
             s->ops[op].id, NULL);
    handle_ready(s, target);
}

/* ------------------------------------------------------------- nemesis */

static int find_leader(struct sim *s)
{
    int best = -1;
    raft_term best_term = 0;
    for (int i = 0; i < s->n_slots; i++) {
        if (!s->nodes[i].up)
            continue;
        struct raft_status st;
        raft_status(s->nodes[i].raft, &st);
        if (st.role == RAFT_LEADER && st.term >= best_term) {
            best = i;
            best_term = st.term;
        }
    }
    return best;
}

int sim_leader(struct sim *s)
{
    return find_leader(s);
}

int sim_campaign(struct sim *s, int i)
{
    if (i < 0 || i >= s->n_slots || !s->nodes[i].up)
        return RK_EINVAL;
    int rc = raft_campaign(s->nodes[i].raft);
    sim_trace(s, "campaign n%llu: %s", (unsigned long long)s->nodes[i].id,
              rc ? rk_err_name(rc) : "ok");
    handle_ready(s, i);
    return rc;
}

int sim_transfer(struct sim *s, int i, raft_id to)
{
    if (i < 0 || i >= s->n_slots || !s->nodes[i].up)
        return RK_EINVAL;
    int rc = raft_transfer_leader(s->nodes[i].raft, to);
    sim_trace(s, "transfer leader n%llu -> n%llu: %s",
              (unsigned long long)s->nodes[i].id, (unsigned long long)to,
              rc ? rk_err_name(rc) : "ok");
    s->n_transfers++;
    handle_ready(s, i);
    return rc;
}

static int count_down(const struct sim *s)
{
    int d = 0;
    for (int i = 0; i < s->n_slots; i++)
        if (!s->nodes[i].up && !s->nodes[i].retired)
            d++;
    return d;
}

static void nemesis_membership(struct sim *s, int l)
{
    struct raft_status st;
    raft_status(s->nodes[l].raft, &st);
    uint64_t r = rk_rand_below(&s->rng, 4);
    if (r == 0 && st.conf.n_learners > 0) {
        raft_id who = st.conf.learners[rk_rand_below(&s->rng, st.conf.n_learners)];
        sim_conf_change(s, l, RAFT_CC_PROMOTE, who);
    } else if (r == 1 && st.conf.n_voters > 3) {
        raft_id who = st.conf.voters[rk_rand_below(&s->rng, st.conf.n_voters)];
        sim_conf_change(s, l, RAFT_CC_REMOVE, who);
    } else if (r == 2 && st.conf.n_learners > 0) {
        raft_id who = st.conf.learners[rk_rand_below(&s->rng, st.conf.n_learners)];
        sim_conf_change(s, l, RAFT_CC_REMOVE, who);
    } else if (st.conf.n_voters + st.conf.n_learners < 8 &&
               s->n_slots < SIM_MAX_NODES) {
        /* A brand-new node id: the slot starts once the change is in. */
        raft_id id = (raft_id)s->n_slots + 1;
        uint8_t type = chance(s, 0.5) ? RAFT_CC_ADD_LEARNER : RAFT_CC_ADD_VOTER;
        if (sim_conf_change(s, l, type, id) == 0)
            sim_add_slot(s);
    }
}

/* Leader churn: crash or isolate the leader for a short while, again and
 * again, so that logs diverge and stale candidates win elections (the
 * ground of Figure 8). False when it did nothing. */
static bool nemesis_churn(struct sim *s, int l)
{
    if (l < 0)
        return false;
    uint64_t r = rk_rand_below(&s->rng, 100);
    int max_down = s->o.nodes > 3 ? (s->o.nodes - 1) / 2 : 1;
    if (r < 55 && s->o.crashes && count_down(s) < max_down) {
        schedule(s, 0, SIM_EV_CRASH, l, 0, NULL);
        schedule(s, rand_range(s, 5, 400), SIM_EV_RESTART, l, 0, NULL);
        return true;
    }
    if (r < 90 && s->o.partitions) {
        for (int y = 0; y < s->n_slots; y++)
            if (y != l)
                sim_cut(s, l, y, true);
        sim_trace(s, "partition isolate n%d (churn)", l + 1);
        s->n_partitions++;
        schedule(s, rand_range(s, 20, 400), SIM_EV_HEAL, -1, 0, NULL);
        return true;
    }
    return false;
}

/* Leader churn, commit-triggered: cut the leader off the moment its commit
 * index advanced, before the news (and its next entries) spread. */
static void nemesis_on_commit(struct sim *s, int l)
{
    if (s->net_calm || s->profile != SIM_PROFILE_CHURN || !s->o.partitions ||
        !chance(s, 0.3))
        return;
    for (int y = 0; y < s->n_slots; y++)
        if (y != l)
            sim_cut(s, l, y, true);
    sim_trace(s, "partition isolate n%d (on commit)", l + 1);
    s->n_partitions++;
    schedule(s, rand_range(s, 20, 600), SIM_EV_HEAL, -1, 0, NULL);
}

static void on_nemesis(struct sim *s)
{
    if (s->net_calm)
        return;
    int l = find_leader(s);
    if (s->profile == SIM_PROFILE_CHURN && chance(s, 0.85) &&
        nemesis_churn(s, l)) {
        schedule(s, rand_range(s, 10, 2 * (uint64_t)s->o.nemesis_every_ms),
                 SIM_EV_NEMESIS, -1, 0, NULL);
        return;
    }
    uint64_t r = rk_rand_below(&s->rng, 100);
    if (r < 20 && s->o.crashes) {
        int i = (int)rk_rand_below(&s->rng, (uint64_t)s->n_slots);
        if (chance(s, 0.4) && l >= 0)
            i = l;
        if (s->nodes[i].up && count_down(s) < 2) {
            schedule(s, 0, SIM_EV_CRASH, i, 0, NULL);
            schedule(s, rand_range(s, 20, 1500), SIM_EV_RESTART, i, 0, NULL);
        }
    } else if (r < 40 && s->o.partitions) {
        uint64_t kind = rk_rand_below(&s->rng, 3);
        int a = (int)rk_rand_below(&s->rng, (uint64_t)s->n_slots);
        if (kind == 0) {
            /* Random two-sided split. */
            uint64_t mask = rk_rand_next(&s->rng);
            for (int x = 0; x < s->n_slots; x++)
                for (int y = 0; y < s->n_slots; y++)
                    if (((mask >> x) & 1) != ((mask >> y) & 1))
                        s->cut[x][y] = true;
            sim_trace(s, "partition split mask=%llx",
                      (unsigned long long)(mask & ((1u << s->n_slots) - 1)));
        } else if (kind == 1) {
            /* Isolate the leader (or a random node). */
            int v = l >= 0 ? l : a;
            for (int y = 0; y < s->n_slots; y++)
                if (y != v)
                    sim_cut(s, v, y, true);
            sim_trace(s, "partition isolate n%d", v + 1);
        } else {
            int b = (int)rk_rand_below(&s->rng, (uint64_t)s->n_slots);
            if (a != b) {
                sim_cut(s, a, b, false);
                sim_trace(s, "partition one-way n%d -> n%d", a + 1, b + 1);
            }
        }
        s->n_partitions++;
        schedule(s, rand_range(s, 50, 2500), SIM_EV_HEAL, -1, 0, NULL);
    } else if (r < 52 && s->o.membership && l >= 0) {
        nemesis_membership(s, l);
    } else if (r < 62 && s->o.transfers && l >= 0) {
        struct raft_status st;
        raft_status(s->nodes[l].raft, &st);
        raft_id to = st.conf.voters[rk_rand_below(&s->rng, st.conf.n_voters)];
        sim_transfer(s, l, to);
    } else if (r < 66 && s->o.crashes) {
        /* The next write of a random node fails. */
        int i = (int)rk_rand_below(&s->rng, (uint64_t)s->n_slots);
        if (s->nodes[i].up && count_down(s) < 2)
            s->nodes[i].disk_fault = true;
    } else if (r < 80 && s->o.snapshots) {
        int i = (int)rk_rand_below(&s->rng, (uint64_t)s->n_slots);
        if (s->nodes[i].up)
            sim_take_snapshot(s, i);
    } else if (r < 90) {
        s->o.loss = chance(s, 0.5) ? 0.0 : 0.1 * rk_rand_double(&s->rng);
        s->o.dup = chance(s, 0.5) ? 0.0 : 0.05;
        s->o.reorder = chance(s, 0.5) ? 0.0 : 0.2 * rk_rand_double(&s->rng);
        s->o.delay_max_ms = (uint32_t)rand_range(s, 2, 40);
        s->o.disk_max_ms = (uint32_t)rand_range(s, 1, 30);
        sim_trace(s, "knobs loss=%.3f dup=%.2f reorder=%.3f delay<=%u disk<=%u",
                  s->o.loss, s->o.dup, s->o.reorder, s->o.delay_max_ms,
                  s->o.disk_max_ms);
    }
    schedule(s, rand_range(s, 1, 2 * (uint64_t)s->o.nemesis_every_ms),
             SIM_EV_NEMESIS, -1, 0, NULL);
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
    s->boot_snapshot = chance(s, 0.5);
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
            image_encode(n, img);
            n->applied = 0;
            int brc = sim_disk_bootstrap(n->log, &boot, img, sizeof(img));
            if (brc != 0)
                return brc;
        } else {
            sim_disk_set_conf(n->log, &boot);
        }
        s->n_slots++;
        int rc = start_node(s, i, &boot);
        if (rc != 0)
            return rc;
        schedule(s, rand_range(s, 0, o->tick_ms), SIM_EV_TICK, i, 0, NULL);
    }
    for (int c = 0; c < SIM_CLIENTS; c++) {
        s->clients[c].process = s->next_process++;
        schedule(s, rand_range(s, 50, 300), SIM_EV_CLIENT, c, 0, NULL);
    }
    schedule(s, rand_range(s, 100, 2 * (uint64_t)o->nemesis_every_ms),
             SIM_EV_NEMESIS, -1, 0, NULL);
    sim_trace(s, "seed %llu nodes %d max_msg_bytes %zu inflight %u profile %d "
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
                    sim_violation(s, "leader completeness: n%llu leads term "
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
            sim_violation(s, "committed entry %llu (t%llu) is on no node's disk",
                          (unsigned long long)k,
                          (unsigned long long)s->applied[k].term);
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
    struct sim_node *n = e.node >= 0 && e.node < SIM_MAX_NODES ? &s->nodes[e.node]
                                                            : NULL;
    switch (e.kind) {
    case SIM_EV_DELIVER: {
        int from = slot_of(s, e.msg->from);
        bool blocked = from >= 0 && s->cut[from][e.node];
        if (!n->up || blocked) {
            s->n_dropped++;
            trace_msg(s, blocked ? "cut" : "down", e.msg);
            if (blocked && from >= 0 && s->nodes[from].up) {
                if (e.msg->type == RAFT_MSG_SNAPSHOT)
                    raft_report_snapshot(s->nodes[from].raft, e.msg->to,
                                         RAFT_SNAP_FAILED);
                raft_report_unreachable(s->nodes[from].raft, e.msg->to);
                handle_ready(s, from);
            }
        } else {
            int rc = raft_step(n->raft, e.msg);
            trace_msg(s, rc ? "step-rejected" : "step", e.msg);
            handle_ready(s, e.node);
        }
        free(e.msg);
        break;
    }
    case SIM_EV_TICK:
        if (n->up) {
            raft_tick(n->raft);
            handle_ready(s, e.node);
        }
        if (!n->retired)
            schedule(s, s->o.tick_ms, SIM_EV_TICK, e.node, 0, NULL);
        break;
    case SIM_EV_DISK_DONE:
        if (n->up && n->busy && e.gen == n->gen) {
            if (n->disk_fault) {
                disk_fault(s, e.node);
                break;
            }
            sim_trace(s, "disk-done n%llu", (unsigned long long)n->id);
            on_disk_done(s, e.node);
            handle_ready(s, e.node);
        }
        break;
    case SIM_EV_CRASH:
        sim_crash(s, e.node);
        break;
    case SIM_EV_RESTART:
        sim_restart(s, e.node); /* a no-op when up or retired */
        if (n->up)
            handle_ready(s, e.node);
        break;
    case SIM_EV_HEAL:
        sim_trace(s, "heal");
        sim_heal(s);
        break;
    case SIM_EV_CLIENT:
        on_client(s, e.node);
        break;
    case SIM_EV_CLIENT_TIMEOUT: {
        struct sim_client *cl = &s->clients[e.node];
        if (cl->busy && s->ops[cl->op].id == e.arg) {
            sim_trace(s, "client %d op#%llu timed out", e.node,
                      (unsigned long long)e.arg);
            client_done(s, e.node, SIM_ST_INFO, 0);
        }
        break;
    }
    case SIM_EV_NEMESIS:
        on_nemesis(s);
        break;
    default:
        RK_UNREACHABLE();
    }
    if (e.kind != SIM_EV_TICK && e.kind != SIM_EV_DELIVER)
        sim_trace(s, "event %s", ev_names[e.kind]);
    s->commit_hook = -1;
    sim_check_safety(s);
    if (s->commit_hook >= 0)
        nemesis_on_commit(s, s->commit_hook);
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
    int l = find_leader(s);
    if (l < 0)
        return false;
    struct raft_status st;
    raft_status(s->nodes[l].raft, &st);
    uint32_t agree = 0;
    for (uint32_t v = 0; v < st.conf.n_voters; v++) {
        int i = slot_of(s, st.conf.voters[v]);
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
            handle_ready(s, i);
    uint64_t deadline = s->now + 30000;
    bool live = false;
    while (!s->failed && s->now < deadline && !live) {
        int l = sim_until_leader(s, deadline - s->now);
        if (l < 0)
            break;
        raft_index idx = sim_propose_write(s, l, SIM_PROBE_KEY, s->next_value++);
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
