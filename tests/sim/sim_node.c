/* One simulated node: ready pipeline, disk, state machine, lifecycle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "sim.h"
#include "sim_disk.h"
#include "sim_internal.h"

/* -------------------------------------------------- the state machine */

/* Snapshot image: magic, index, kv, filler (so it spans several chunks). */

void sim__image_encode(const struct sim_node *n, uint8_t *out)
{
    uint64_t magic = 0x53494d534e415031ull;
    memcpy(out, &magic, 8);
    memcpy(out + 8, &n->applied, 8);
    memcpy(out + 16, n->kv, 8 * SIM_KEYS);
    for (int i = 0; i < SIM_SNAP_PAD; i++)
        out[16 + 8 * SIM_KEYS + i] = (uint8_t)(n->applied + (uint64_t)i);
}

int sim__image_decode(const void *buf, size_t len, raft_index *index,
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
            int victim = sim__slot_of(s, cc.node);
            if (victim >= 0)
                *retire_slot = victim;
        }
    }
    n->applied = e->index;
    n->applied_term = e->term;
    s->n_commits_seen++;
    sim_check_apply(s, n->id, e->index, e->term, sim_entry_hash(e),
                    sim_state_hash(n->kv));

    sim__clients_on_apply(s, i, e->index, have_cmd ? cmd.op : 0, cas_ok,
                          result);
}

/* ---------------------------------------------------------- ready batches */

static void finish_ready(struct sim *s, int i)
{
    struct sim_node *n = &s->nodes[i];
    struct raft_ready *rd = &n->rd;

    for (uint32_t k = 0; k < rd->n_msgs_after_sync && !s->o.early_acks; k++)
        sim__send_msg(s, i, &rd->msgs_after_sync[k]);

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
    sim__serve_reads(s, i);
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
        sim_violation(s,
                      "leader completeness: leader %llu of term %llu "
                      "writes at %llu over committed index %llu",
                      (unsigned long long)n->id,
                      (unsigned long long)s->lc_term[i],
                      (unsigned long long)first_own, (unsigned long long)need);
        return;
    }
    raft_index lo = sim_disk_first(n->log);
    for (raft_index k = lo; k <= need && k <= s->applied_max; k++) {
        if (s->applied[k].term == 0)
            continue;
        raft_term t;
        if (sim_disk_term(n->log, k, &t) != 0 || t != s->applied[k].term) {
            sim_violation(
                s,
                "leader completeness: leader %llu of term %llu "
                "lacks committed entry %llu (t%llu)",
                (unsigned long long)n->id, (unsigned long long)s->lc_term[i],
                (unsigned long long)k, (unsigned long long)s->applied[k].term);
            return;
        }
    }
}

void sim__note_synced(struct sim *s, int i)
{
    struct sim_node *n = &s->nodes[i];
    struct sim_durable d;
    sim_disk_load(n->log, &d);
    raft_index synced = sim_disk_synced(n->log);
    int slot = (int)(d.hs.term % SIM_HW_TERMS);
    if (n->hw_term[slot] != d.hs.term) {
        n->hw_term[slot] = d.hs.term;
        n->hw_index[slot] = 0;
    }
    if (synced > n->hw_index[slot])
        n->hw_index[slot] = synced;
}

/* Log matching on what node n makes durable: the first `count` entries of
 * rd, each checked with the term of the entry before it. */
static void check_durable(struct sim *s, struct sim_node *n,
                          const struct raft_ready *rd, uint32_t count)
{
    for (uint32_t k = 0; k < count; k++) {
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
}

void sim__on_disk_done(struct sim *s, int i)
{
    struct sim_node *n = &s->nodes[i];
    struct raft_ready *rd = &n->rd;
    check_durable(s, n, rd, rd->n_entries);

    int rc = sim_disk_persist(n->log, rd);
    sim__note_synced(s, i);
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
            sim__image_decode(image, image_len, &idx, n->kv) != 0 ||
            idx != rd->snap_meta.index) {
            sim_violation(s,
                          "node %llu installed snapshot %llu with a "
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
            sim_violation(s,
                          "state-machine safety: node %llu installed a "
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
 * entries reached the disk (with or without the membership record, never
 * with the hard state: a write-ahead log whose tail records were cut).
 * Either way the node fail-stops (DESIGN section 7) and restarts later from
 * its disk.
 */
void sim__disk_fault(struct sim *s, int i)
{
    struct sim_node *n = &s->nodes[i];
    const struct raft_ready *rd = &n->rd;
    n->disk_fault = false;
    uint32_t keep = 0;
    if (rd->n_entries > 0 && !rd->snap_install && !rd->snap_chunk &&
        sim__chance(s, 0.5)) {
        keep = (uint32_t)rk_rand_below(&s->rng, rd->n_entries + 1);
        if (keep > 0) {
            struct raft_ready part;
            memset(&part, 0, sizeof(part));
            part.entries = rd->entries;
            part.n_entries = keep;
            part.must_sync = true;
            /* memlog writes the membership record after the entries, so a
             * torn tail may lose it too (a joiner's bootstrap conf arrives
             * with its first append: sim seed 103191); or the storage wrote
             * it first. The seed picks. */
            if (sim__chance(s, 0.5)) {
                part.conf = rd->conf;
                part.conf_changed = rd->conf_changed;
            }
            check_durable(s, n, rd, keep);
            int rc = sim_disk_persist(n->log, &part);
            sim__note_synced(s, i);
            if (rc != 0)
                sim_violation(s,
                              "node %llu: torn write of %u entries failed: %s",
                              (unsigned long long)n->id, keep, rk_strerror(rc));
        }
    }
    sim_trace(s, "disk fault n%llu: %s (%u of %u entries kept); fail-stop",
              (unsigned long long)n->id, keep ? "torn write" : "fsync failed",
              keep, rd->n_entries);
    s->n_disk_faults++;
    sim_crash(s, i);
    sim__schedule(s, sim__rand_range(s, 10, 800), SIM_EV_RESTART, i, 0, NULL);
}

void sim__handle_ready(struct sim *s, int i)
{
    struct sim_node *n = &s->nodes[i];
    for (int round = 0; round < 16 && !s->failed; round++) {
        if (!n->up || n->busy || !raft_has_ready(n->raft))
            return;
        struct raft_ready *rd = &n->rd;
        raft_ready(n->raft, rd);
        sim_trace(s,
                  "ready n%llu hs(t%llu v%llu c%llu) ents=%u "
                  "msgs=%u+%u commit=%u reads=%u%s%s",
                  (unsigned long long)n->id, (unsigned long long)rd->hs.term,
                  (unsigned long long)rd->hs.vote,
                  (unsigned long long)rd->hs.commit, rd->n_entries, rd->n_msgs,
                  rd->n_msgs_after_sync, rd->n_committed, rd->n_reads,
                  rd->snap_chunk ? " chunk" : "",
                  rd->snap_install ? " install" : "");
        for (uint32_t k = 0; k < rd->n_msgs; k++)
            sim__send_msg(s, i, &rd->msgs[k]);
        if (s->o.early_acks) /* deliberately wrong, see sim_opts */
            for (uint32_t k = 0; k < rd->n_msgs_after_sync; k++)
                sim__send_msg(s, i, &rd->msgs_after_sync[k]);
        n->busy = true;
        bool disk = rd->must_sync || rd->n_entries || rd->snap_chunk ||
                    rd->snap_install || rd->hs_changed || rd->conf_changed;
        if (disk) {
            sim__schedule(
                s, sim__rand_range(s, s->o.disk_min_ms, s->o.disk_max_ms),
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

int sim__start_node(struct sim *s, int i, const struct raft_conf_state *boot)
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
        if (sim__image_decode(img, len, &idx, n->kv) != 0 ||
            idx != d.snap.index)
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
    sim__clients_lost(s, i);
}

int sim_restart(struct sim *s, int i)
{
    struct sim_node *n = &s->nodes[i];
    if (n->up || n->retired || n->id == 0)
        return 0;
    int rc = sim__start_node(s, i, NULL);
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
    sim_trace(s,
              "restart n%llu: %s (term %llu vote %llu commit %llu, log "
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
    if (sim__start_node(s, i, &empty) != 0) {
        sim_violation(s, "node %llu cannot start empty",
                      (unsigned long long)n->id);
        return -1;
    }
    sim__schedule(s, sim__rand_range(s, 0, s->o.tick_ms), SIM_EV_TICK, i, 0,
                  NULL);
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
    sim__handle_ready(s, leader);
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
    meta.conf = st.conf;
    uint8_t img[SIM_IMAGE_SIZE];
    sim__image_encode(n, img);
    int rc = sim_disk_snapshot(n->log, &meta, img, sizeof(img));
    sim_trace(s, "snapshot n%llu at %llu: %s", (unsigned long long)n->id,
              (unsigned long long)meta.index, rc ? rk_err_name(rc) : "ok");
    if (rc != 0)
        return rc;
    raft_snapshot_taken(n->raft, meta.index);
    s->n_snapshots++;
    sim__handle_ready(s, i);
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
    struct sim_cmd cmd = {
        .kind = SIM_OP_WRITE, .key = (uint8_t)key, .a1 = value};
    raft_index idx;
    if (propose_cmd(s, i, &cmd, &idx) != 0)
        return 0;
    sim_trace(s, "propose n%llu write k%d=%lld at %llu",
              (unsigned long long)s->nodes[i].id, key, (long long)value,
              (unsigned long long)idx);
    sim__handle_ready(s, i);
    return idx;
}

int sim_campaign(struct sim *s, int i)
{
    if (i < 0 || i >= s->n_slots || !s->nodes[i].up)
        return RK_EINVAL;
    int rc = raft_campaign(s->nodes[i].raft);
    sim_trace(s, "campaign n%llu: %s", (unsigned long long)s->nodes[i].id,
              rc ? rk_err_name(rc) : "ok");
    sim__handle_ready(s, i);
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
    sim__handle_ready(s, i);
    return rc;
}
