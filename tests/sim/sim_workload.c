/* The simulated clients: operations via the log, ReadIndex or lease. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "sim.h"
#include "sim_disk.h"
#include "sim_internal.h"

/* ------------------------------------------------------------- clients */

void sim__client_done(struct sim *s, int c, uint8_t status, int64_t result)
{
    struct sim_client *cl = &s->clients[c];
    if (!cl->busy)
        return;
    sim_hist_complete(s, cl->op, status, result);
    const struct sim_op *op = &s->ops[cl->op];
    static const char *const names[] = {"pending", "ok", "fail", "info"};
    sim_trace(s, "client %d op#%llu (process %d) -> %s %lld", c,
              (unsigned long long)op->id, op->process, names[status],
              (long long)result);
    if (status == SIM_ST_OK)
        s->last_value[op->key] = op->kind == SIM_OP_READ  ? result
                                 : op->kind == SIM_OP_CAS ? op->arg2
                                                          : op->arg1;
    if (status == SIM_ST_INFO)
        cl->process = s->next_process++;
    cl->busy = false;
    if (s->workload)
        sim__schedule(s,
                      status == SIM_ST_OK ? sim__rand_range(s, 1, 40)
                                          : sim__rand_range(s, 30, 150),
                      SIM_EV_CLIENT, c, 0, NULL); /* back off after a failure */
}

/* Every client waiting on node slot i loses its answer (outcome unknown). */
void sim__clients_lost(struct sim *s, int i)
{
    for (int c = 0; c < SIM_CLIENTS; c++)
        if (s->clients[c].busy && s->clients[c].node == i)
            sim__client_done(s, c, SIM_ST_INFO, 0);
}

void sim__serve_reads(struct sim *s, int i)
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
                sim__client_done(s, c, SIM_ST_OK, n->kv[s->ops[cl->op].key]);
            }
        }
    }
    n->n_reads = keep;
}

/* Node slot i applied the entry at `index`, whose command carries op id
 * `op` (0 for none): answer the client that proposed that index there. */
void sim__clients_on_apply(struct sim *s, int i, raft_index index,
                           uint64_t op_id, bool cas_ok, int64_t result)
{
    for (int c = 0; c < SIM_CLIENTS; c++) {
        struct sim_client *cl = &s->clients[c];
        if (!cl->busy || cl->node != i || cl->index != index)
            continue;
        const struct sim_op *op = &s->ops[cl->op];
        if (op_id == 0 || op_id != op->id) {
            /* Another entry holds our index: ours can never commit. */
            sim__client_done(s, c, SIM_ST_FAIL, 0);
            continue;
        }
        if (op->kind == SIM_OP_CAS)
            sim__client_done(s, c, cas_ok ? SIM_ST_OK : SIM_ST_FAIL, 0);
        else
            sim__client_done(s, c, SIM_ST_OK, result);
    }
}

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
    int l = sim__slot_of(s, st.leader);
    if (l >= 0 && !sim__chance(s, 0.1))
        return l;
    return asked;
}

void sim__on_client(struct sim *s, int c)
{
    struct sim_client *cl = &s->clients[c];
    if (cl->busy || !s->workload)
        return;
    uint64_t r = rk_rand_below(&s->rng, 100);
    int key = (int)rk_rand_below(&s->rng, SIM_CLIENT_KEYS);
    uint8_t kind;
    int64_t a1 = 0, a2 = 0;
    bool via_log = true, lease = false;
    if (r < 40) {
        kind = SIM_OP_WRITE;
        a1 = s->next_value++;
    } else if (r < 70) {
        kind = SIM_OP_READ;
        via_log = sim__chance(s, 0.5);
        lease = !via_log && s->o.lease_reads && s->o.check_quorum &&
                sim__chance(s, 0.3);
    } else {
        kind = SIM_OP_CAS;
        /* Mostly the latest value seen for the key, so that many succeed. */
        a1 = sim__chance(s, 0.75)
                 ? s->last_value[key]
                 : (int64_t)rk_rand_below(&s->rng, (uint64_t)s->next_value);
        a2 = s->next_value++;
    }
    int target = pick_target(s);
    if (kind == SIM_OP_READ && !via_log && s->o.stale_reads)
        target = (int)rk_rand_below(&s->rng, (uint64_t)s->n_slots);
    sim_client_op(s, c, target, kind, key, a1, a2,
                  via_log ? SIM_PATH_LOG
                  : lease ? SIM_PATH_LEASE
                          : SIM_PATH_READ_INDEX);
}

uint64_t sim_client_op(struct sim *s, int c, int target, uint8_t kind, int key,
                       int64_t a1, int64_t a2, int path)
{
    struct sim_client *cl = &s->clients[c];
    bool via_log = path == SIM_PATH_LOG || kind != SIM_OP_READ;
    bool lease = path == SIM_PATH_LEASE;
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
        struct sim_cmd cmd = {.kind = kind,
                              .key = (uint8_t)key,
                              .op = s->ops[op].id,
                              .a1 = a1,
                              .a2 = a2};
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
        sim__client_done(s, c, SIM_ST_OK, n->kv[key]);
        return op;
    } else if (lease) {
        rc = raft_read_lease(n->raft, s->ops[op].id);
    } else {
        rc = raft_read_index(n->raft, s->ops[op].id);
    }
    sim_trace(s,
              "client %d op#%llu %s k%d %lld %lld at n%llu%s: %s (index %llu)",
              c, (unsigned long long)s->ops[op].id,
              kind == SIM_OP_WRITE  ? "write"
              : kind == SIM_OP_READ ? "read"
                                    : "cas",
              key, (long long)a1, (long long)a2, (unsigned long long)n->id,
              via_log ? ""
              : lease ? " read-lease"
                      : " read-index",
              rc ? rk_err_name(rc) : "ok", (unsigned long long)cl->index);
    if (rc != 0) {
        sim__client_done(s, c, SIM_ST_FAIL, 0);
        return op;
    }
    sim__schedule(s, SIM_CLIENT_TIMEOUT_MS, SIM_EV_CLIENT_TIMEOUT, c,
                  s->ops[op].id, NULL);
    sim__handle_ready(s, target);
    return op;
}
