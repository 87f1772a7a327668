/* Replica moves: local replicas follow the map, leaders drive membership. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "rk_log.h"
#include "srv.h"
#include "srv_rpc.h"

/*
 * The shard map is the desired placement; Raft membership follows it
 * (TiKV's PD and CockroachDB's replicate queue work alike):
 *
 *  - every node creates the replicas the map gives it (an empty group that
 *    the shard's leader fills by snapshot) and destroys a replica once the
 *    map no longer lists it AND its own log removed it from the group;
 *  - the leader of each shard moves the group's configuration toward the
 *    map one Raft change at a time, in the safe order: add the new node as
 *    a learner, promote it once caught up, and only when every voter the map
 *    wants is a voter, remove the old ones (a leader that must go transfers
 *    its leadership first); then it hands leadership to the map's preferred
 *    leader (leader balance);
 *  - the meta leader runs src/shard's planner and writes its steps into
 *    the map one shard at a time (all steps of that shard in one change),
 *    waiting for the shard to settle before the next one: the bounded rate.
 *
 * Every shard keeps a quorum throughout: a voter leaves only after its
 * replacement is a voter, and the planner never lowers a shard below the
 * replication factor.
 */

/* Work runs every this many ticks. */
#define EVERY_TICKS 2
/* A learner is caught up when its match index is this close to commit. */
#define CATCH_UP_SLACK 32
/* A shard the meta leader does not host is deemed settled after this. */
#define SETTLE_BLIND_MS 3000
/* And one it hosts, at the latest after this (then the plan goes on). */
#define SETTLE_MAX_MS 60000
/* Pause between two leadership transfers of one shard. */
#define TRANSFER_EVERY_MS 3000

struct srv_rebal {
    uint64_t *last_transfer_ms; /* per shard id */
    uint32_t cap;
    /* Meta leader: the shard whose move is settling (SHARD_ID_NONE). */
    uint32_t settling;
    uint64_t settle_since_ms;
    bool moved; /* a move happened since leaders were last balanced */
    /* A replica the map dropped whose log never saw its removal (a leader
     * stops replicating to a node the moment it appends the removal): the
     * node asks a voter whether the group's leader still counts it. */
    bool asking;
    uint64_t next_ask_ms;
    uint32_t ask_turn;
    uint32_t confirmed; /* shard whose leader confirmed the removal */
};

static struct srv_rebal *state(struct srv *s)
{
    if (s->rebal == NULL) {
        s->rebal = calloc(1, sizeof(*s->rebal));
        if (s->rebal != NULL) {
            s->rebal->settling = SHARD_ID_NONE;
            s->rebal->confirmed = SHARD_ID_NONE;
        }
    }
    return s->rebal;
}

void srv_rebalance_free(struct srv *s)
{
    if (s->rebal == NULL)
        return;
    free(s->rebal->last_transfer_ms);
    free(s->rebal);
    s->rebal = NULL;
}

uint32_t srv_rebalance_moves(const struct srv *s)
{
    return s->rebal != NULL && s->rebal->settling != SHARD_ID_NONE;
}

/* --------------------------------------------------------- membership */

static bool has(const uint64_t *ids, uint32_t n, uint64_t id)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

static bool in_map(const struct shard_info *si, uint64_t id)
{
    return si != NULL && (has(si->voters, si->n_voters, id) ||
                          has(si->learners, si->n_learners, id));
}

static bool in_conf(const struct raft_conf_state *c, uint64_t id)
{
    return has(c->voters, c->n_voters, id) ||
           has(c->learners, c->n_learners, id);
}

/* The leader's match index of a member (0 if unknown). */
static raft_index match_of(const struct raft_status *st, uint64_t id)
{
    for (uint32_t k = 0; k < st->n_match; k++)
        if (st->match_ids[k] == id)
            return st->match[k];
    return 0;
}

static bool caught_up(const struct raft_status *st, uint64_t id)
{
    return match_of(st, id) + CATCH_UP_SLACK >= st->commit;
}

static void conf_change(struct srv_group *g, uint8_t type, uint64_t node)
{
    struct raft_conf_change cc = {.type = type, .node = node};
    raft_index index = 0;
    int rv = raft_propose_conf(g->raft, &cc, &index);
    srv_group_wake(g);
    if (rv == 0)
        rk_log(RK_LOG_INFO, "shard %" PRIu64 ": proposed %s of node %"
               PRIu64 " at index %" PRIu64, g->shard,
               type == RAFT_CC_ADD_LEARNER ? "add-learner"
               : type == RAFT_CC_PROMOTE   ? "promotion"
                                           : "removal",
               node, index);
    else if (rv != RK_EBUSY)
        rk_log(RK_LOG_DEBUG, "shard %" PRIu64 ": conf change not proposed: "
               "%s", g->shard, rk_strerror(rv));
}

static void transfer(struct srv *s, struct srv_group *g, uint64_t to,
                     uint64_t now)
{
    struct srv_rebal *rb = s->rebal;
    if (g->shard < rb->cap) {
        if (now < rb->last_transfer_ms[g->shard] + TRANSFER_EVERY_MS)
            return;
        rb->last_transfer_ms[g->shard] = now;
    }
    if (raft_transfer_leader(g->raft, to) == 0)
        rk_log(RK_LOG_INFO, "shard %" PRIu64 ": leadership to node %" PRIu64,
               g->shard, to);
    srv_group_wake(g);
}

/* One step of a led group toward the map's membership. */
static void drive_group(struct srv *s, struct srv_group *g,
                        const struct shard_info *si, uint64_t now)
{
    struct raft_status st;
    raft_status(g->raft, &st);
    const struct raft_conf_state *c = &st.conf;
    uint64_t self = s->cfg->id;
    /* 1. Members the map wants and the group lacks join as learners. */
    for (uint32_t i = 0; i < si->n_voters + si->n_learners; i++) {
        uint64_t n = i < si->n_voters ? si->voters[i]
                                      : si->learners[i - si->n_voters];
        if (!in_conf(c, n)) {
            conf_change(g, RAFT_CC_ADD_LEARNER, n);
            return;
        }
    }
    /* 2. Learners that should vote are promoted once caught up. */
    bool voters_in = true;
    for (uint32_t i = 0; i < si->n_voters; i++) {
        uint64_t n = si->voters[i];
        if (has(c->voters, c->n_voters, n))
            continue;
        voters_in = false;
        if (caught_up(&st, n)) {
            conf_change(g, RAFT_CC_PROMOTE, n);
            return;
        }
    }
    if (!voters_in)
        return;
    /* 3. Then members the map dropped leave; the leader hands over first. */
    for (uint32_t i = 0; i < c->n_voters + c->n_learners; i++) {
        uint64_t n = i < c->n_voters ? c->voters[i]
                                     : c->learners[i - c->n_voters];
        if (in_map(si, n))
            continue;
        if (n != self) {
            conf_change(g, RAFT_CC_REMOVE, n);
            return;
        }
        uint64_t best = 0;
        raft_index bm = 0;
        for (uint32_t k = 0; k < si->n_voters; k++) {
            raft_index m = match_of(&st, si->voters[k]);
            if (si->voters[k] != self && m >= bm &&
                srv_node_alive(s, si->voters[k])) {
                bm = m;
                best = si->voters[k];
            }
        }
        if (best != 0)
            transfer(s, g, best, now);
        return;
    }
    /* 4. Leader balance: the map's preferred leader leads. */
    uint64_t p = si->leader;
    if (p != 0 && p != self && has(c->voters, c->n_voters, p) &&
        srv_node_alive(s, p) && caught_up(&st, p) &&
        g->awake_ticks >= 2 * s->election_ticks)
        transfer(s, g, p, now);
}

/* ------------------------------------------------------ local replicas */

int srv_groups_grow(struct srv *s, uint32_t shard)
{
    if (shard < s->groups_cap)
        return 0;
    uint32_t cap = shard + 1;
    struct srv_group **p = realloc(s->groups, cap * sizeof(*p));
    if (p == NULL)
        return RK_ENOMEM;
    memset(p + s->groups_cap, 0, (cap - s->groups_cap) * sizeof(*p));
    s->groups = p;
    s->groups_cap = cap;
    return 0;
}

/* Creates (empty, to be filled by the leader) or destroys a replica. The
 * loop waits for the batches in flight first: this is rare. */
static void change_replica(struct srv *s, uint32_t shard, bool create)
{
    struct srv_group *g = srv_group_get(s, shard);
    srv_wait_flushes(s);
    if (s->failstop || (g != NULL && g->busy))
        return;
    struct stor_batch *b;
    if (stor_batch_new(&b) != 0)
        return;
    int rv;
    if (create) {
        struct raft_conf_state empty;
        memset(&empty, 0, sizeof(empty));
        rv = srv_groups_grow(s, shard);
        if (rv == 0)
            rv = stor_batch_create_shard(b, shard, &empty);
    } else {
        srv_group_fail_waiters(g, RK_ENOTLEADER);
        rv = stor_batch_destroy_shard(b, shard);
    }
    if (rv == 0)
        rv = stor_batch_commit(s->stor, b);
    stor_batch_free(b);
    if (rv == 0 && create) {
        rv = srv_group_open(s, shard, &g);
        if (rv == 0) {
            s->groups[shard] = g;
            s->n_groups++;
        }
    } else if (rv == 0) {
        s->groups[shard] = NULL;
        s->n_groups--;
        srv_group_free(g);
        /* Without a meta replica the node restarts from the saved map. */
        if (shard == SHARD_META_ID)
            srv_meta_save(s->cfg, srv_meta_map(s));
    }
    if (rv != 0)
        rk_log(RK_LOG_ERROR, "shard %u: cannot %s the local replica: %s",
               shard, create ? "create" : "drop", rk_strerror(rv));
    else
        rk_log(RK_LOG_INFO, "shard %u: local replica %s", shard,
               create ? "created (waiting for the leader's snapshot)"
                      : "dropped (moved to other nodes)");
}

struct ask {
    struct srv *srv;
    uint32_t shard;
};

static void on_asked(void *arg, int status, const Ringkv__Response *resp)
{
    struct ask *a = arg;
    struct srv *s = a->srv;
    s->rebal->asking = false;
    if (status == 0 && resp->status == RINGKV__STATUS__OK &&
        resp->node_status != NULL) {
        const Ringkv__StatusResult *st = resp->node_status;
        for (size_t i = 0; i < st->n_shards; i++) {
            const Ringkv__ShardStatus *x = st->shards[i];
            if (x->shard != a->shard ||
                x->role != RINGKV__SHARD_STATUS__ROLE__LEADER)
                continue;
            if (!has(x->replicas, (uint32_t)x->n_replicas, s->cfg->id) &&
                !has(x->learners, (uint32_t)x->n_learners, s->cfg->id))
                s->rebal->confirmed = a->shard;
        }
    }
    free(a);
}

/* Asks a node the map lists for `shard` whether its leader removed us. */
static void ask_removed(struct srv *s, const struct shard_map *m,
                        uint32_t shard, uint64_t now)
{
    struct srv_rebal *rb = s->rebal;
    const struct shard_info *si = shard_map_shard(m, shard);
    if (rb->asking || now < rb->next_ask_ms || si == NULL ||
        si->n_voters == 0)
        return;
    rb->next_ask_ms = now + 1000;
    const struct shard_node *nd =
        shard_map_node(m, si->voters[rb->ask_turn++ % si->n_voters]);
    struct ask *a = malloc(sizeof(*a));
    if (nd == NULL || a == NULL) {
        free(a);
        return;
    }
    a->srv = s;
    a->shard = shard;
    Ringkv__Request rq = RINGKV__REQUEST__INIT;
    Ringkv__StatusRequest sr = RINGKV__STATUS_REQUEST__INIT;
    rq.op_case = RINGKV__REQUEST__OP_STATUS;
    rq.status = &sr;
    if (srv_rpc_call(&s->loop.loop, nd->client_addr, &rq, 2000,
                     s->cfg->max_frame_bytes, on_asked, a) == 0)
        rb->asking = true;
    else
        free(a);
}

static void follow_map(struct srv *s, const struct shard_map *m,
                       uint64_t now)
{
    uint64_t self = s->cfg->id;
    for (uint32_t i = 0; i < m->n_shards; i++) {
        const struct shard_info *si = &m->shards[i];
        struct srv_group *g = srv_group_get(s, si->id);
        if (g == NULL && in_map(si, self)) {
            if (!srv_split_may_create(s, si))
                continue;
            change_replica(s, si->id, true);
            return; /* one per tick */
        }
        if (g != NULL && g->role == RAFT_LEADER)
            drive_group(s, g, si, now);
    }
    for (uint64_t id = 0; id < s->groups_cap; id++) {
        struct srv_group *g = s->groups[id];
        if (g == NULL || in_map(shard_map_shard(m, (shard_id)id), self))
            continue;
        struct raft_status st;
        raft_status(g->raft, &st);
        /* Only once the group removed it (its own log says so, or the
         * leader does): until then it may be needed for the quorum, and a
         * voter must never lose its log while it can still vote. */
        if (st.role == RAFT_LEADER)
            continue;
        if (!in_conf(&st.conf, self) || s->rebal->confirmed == id) {
            s->rebal->confirmed = SHARD_ID_NONE;
            change_replica(s, (uint32_t)id, false);
            return;
        }
        ask_removed(s, m, (uint32_t)id, now);
    }
}

/* --------------------------------------------------------- the planner */

/* True when the shard last moved looks done (or waited long enough). */
static bool settled(struct srv *s, const struct shard_map *m, uint64_t now)
{
    struct srv_rebal *rb = s->rebal;
    if (rb->settling == SHARD_ID_NONE)
        return true;
    const struct shard_info *si = shard_map_shard(m, rb->settling);
    struct srv_group *g = srv_group_get(s, rb->settling);
    bool done;
    if (si == NULL) {
        done = true;
    } else if (g != NULL) {
        struct raft_status st;
        raft_status(g->raft, &st);
        done = st.conf.n_voters == si->n_voters &&
               st.conf.n_learners == si->n_learners;
        for (uint32_t i = 0; done && i < si->n_voters; i++)
            done = has(st.conf.voters, st.conf.n_voters, si->voters[i]);
        done = done || now >= rb->settle_since_ms + SETTLE_MAX_MS;
    } else {
        done = now >= rb->settle_since_ms + SETTLE_BLIND_MS;
    }
    if (done)
        rb->settling = SHARD_ID_NONE;
    return done;
}

/* Applies the plan's steps for one shard (kind filter: moves or leader
 * transfers) to a copy of the map and proposes it. */
static void plan_step(struct srv *s, const struct shard_map *m,
                      uint64_t now)
{
    struct srv_rebal *rb = s->rebal;
    struct shard_plan plan;
    memset(&plan, 0, sizeof(plan));
    if (shard_plan_compute(m, &plan) != 0)
        return;
    uint32_t shard = SHARD_ID_NONE;
    for (uint32_t i = 0; i < plan.n_steps && shard == SHARD_ID_NONE; i++)
        if (plan.steps[i].kind != SHARD_STEP_TRANSFER_LEADER)
            shard = plan.steps[i].shard;
    bool leaders = shard == SHARD_ID_NONE && rb->moved && plan.n_steps > 0;
    struct shard_map next;
    uint32_t applied = 0;
    if ((shard != SHARD_ID_NONE || leaders) &&
        shard_map_copy(&next, m) == 0) {
        for (uint32_t i = 0; i < plan.n_steps; i++) {
            const struct shard_step *st = &plan.steps[i];
            if (!leaders && st->shard != shard)
                continue;
            int rv = shard_map_apply_step(&next, st);
            if (rv != 0) {
                rk_log(RK_LOG_DEBUG, "plan: %s of node %" PRIu64 " on shard "
                       "%u stops here: %s", shard_step_kind_name(st->kind),
                       st->node, st->shard, rk_strerror(rv));
                break;
            }
            applied++;
        }
        /* The steps of one shard become one map change: one epoch. */
        next.epoch = m->epoch + 1;
        if (applied > 0 && srv_meta_propose_own(s, &next) == 0) {
            rk_log(RK_LOG_INFO, "rebalance: epoch %" PRIu64 ": %s (%u "
                   "steps)", next.epoch, leaders ? "leaders balanced"
                                                 : "replica move", applied);
            if (leaders) {
                rb->moved = false;
            } else {
                rb->moved = true;
                rb->settling = shard;
                rb->settle_since_ms = now;
            }
        }
        shard_map_free(&next);
    }
    shard_plan_free(&plan);
}

/* Drained nodes that host nothing any more are REMOVED. */
static bool retire_drained(struct srv *s, const struct shard_map *m)
{
    for (uint32_t i = 0; i < m->n_nodes; i++) {
        const struct shard_node *nd = &m->nodes[i];
        if (nd->state != SHARD_NODE_DRAINING ||
            shard_map_node_shards(m, nd->id, NULL, 0) > 0)
            continue;
        struct shard_map next;
        if (shard_map_copy(&next, m) != 0)
            return true;
        if (shard_map_node_set_state(&next, nd->id, SHARD_NODE_REMOVED) ==
                0 &&
            srv_meta_propose_own(s, &next) == 0)
            rk_log(RK_LOG_INFO, "rebalance: node %" PRIu64 " drained, now "
                   "REMOVED (epoch %" PRIu64 ")", nd->id, next.epoch);
        shard_map_free(&next);
        return true;
    }
    return false;
}

void srv_rebalance_tick(struct srv *s)
{
    if (s->stopping || s->failstop || s->meta == NULL ||
        s->loop.ticks % EVERY_TICKS != 0)
        return;
    struct srv_rebal *rb = state(s);
    if (rb == NULL)
        return;
    const struct shard_map *m = srv_meta_map(s);
    if (rb->cap < m->next_shard_id) {
        uint64_t *p = realloc(rb->last_transfer_ms,
                              m->next_shard_id * sizeof(*p));
        if (p == NULL)
            return;
        memset(p + rb->cap, 0, (m->next_shard_id - rb->cap) * sizeof(*p));
        rb->last_transfer_ms = p;
        rb->cap = m->next_shard_id;
    }
    uint64_t now = srv_loop_now(&s->loop);
    /* Only maps from the meta group move replicas (not a bootstrap map a
     * node built before the meta group stored or sent one). */
    if (!srv_meta_trusted(s))
        return;
    if (srv_meta_fresh(s))
        follow_map(s, m, now);
    struct srv_group *mg = srv_group_get(s, SHARD_META_ID);
    if (mg == NULL || !srv_group_is_leader(mg) || !srv_meta_committed(s))
        return;
    m = srv_meta_map(s); /* follow_map may have waited for flushes */
    if (!settled(s, m, now) || retire_drained(s, m))
        return;
    /* Replicas of a splitting shard stay put: the new shard is created on
     * the donor's nodes, by the donor's log. */
    if (m->n_moves > 0)
        return;
    /* No new move while an active node is down or not started yet (a
     * move onto it could not finish); draining nodes may be down. */
    for (uint32_t i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].state == SHARD_NODE_ACTIVE &&
            !srv_node_alive(s, m->nodes[i].id))
            return;
    plan_step(s, m, now);
}
