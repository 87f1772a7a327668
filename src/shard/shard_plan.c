/* The placement planner: a balanced target that keeps most replicas in place,
 * and the safe steps that reach it. */
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "rk_err.h"
#include "rk_log.h"
#include "shard.h"
#include "shard_int.h"

/*
 * The target is a flow problem: every shard needs r_eff replicas on
 * distinct active nodes, and node e holds exactly cap[e] of them, where the
 * caps are floor(T/N) or ceil(T/N) for T = shards * r_eff replicas on N
 * nodes (such caps are always feasible: Gale-Ryser with equal demands).
 * We keep the current voters up to each node's cap (the caps go to the
 * nodes that already hold most, so the fewest replicas move), fill the
 * holes greedily, and when a shard finds no free node that lacks it we
 * follow an augmenting path (a chain of replica shifts ending at a node
 * with room), preferring to shift replicas that are new anyway.
 *
 * Leaders are a semi-matching of shards to their voters; an assignment
 * with no path from a node to one holding two fewer leaders minimises the
 * sum of squared loads (Harvey et al., "Semi-matchings for bipartite
 * graphs", 2003), hence every load is within one of every other.
 */

/* Working state: node positions are indexes into `act` (active nodes). */
struct planner {
    const struct shard_map *m;
    uint32_t n_act;
    uint32_t *act; /* index in m->nodes of each active node */
    int32_t *pos;  /* m->nodes index -> active position, or -1 */
    uint32_t r_eff;
    uint32_t n_shards;
    int32_t *tgt;   /* tgt[s * SHARD_MAX_REPLICAS + j]: active position */
    uint8_t *kept;  /* same layout: 1 if the replica exists today */
    uint32_t *cnt;  /* replicas of shard s in tgt */
    uint32_t *load; /* replicas per active position */
    uint32_t *cap;
    int32_t *lead;   /* target leader of shard s (active position) */
    uint32_t *lload; /* leaders per active position */
    uint32_t *pair;  /* pair[a * n_act + b]: shards on both a and b */
};

/* The co-hosting matrix costs n_act^2 words; above this many active nodes
 * placement ignores it (and still balances). */
#define PAIR_MAX_NODES 512u

#define SLOT(s, j) ((size_t)(s)*SHARD_MAX_REPLICAS + (j))

static int32_t act_pos(const struct planner *p, shard_node_id id)
{
    const struct shard_node *n = shard_map_node(p->m, id);
    return n == NULL ? -1 : p->pos[n - p->m->nodes];
}

static bool hosts(const struct planner *p, uint32_t s, int32_t e)
{
    for (uint32_t j = 0; j < p->cnt[s]; j++)
        if (p->tgt[SLOT(s, j)] == e)
            return true;
    return false;
}

/* Adds `delta` to the co-hosting count of node e with every other replica
 * of shard s. */
static void pair_update(struct planner *p, uint32_t s, int32_t e, int delta)
{
    if (p->pair == NULL)
        return;
    for (uint32_t j = 0; j < p->cnt[s]; j++) {
        int32_t o = p->tgt[SLOT(s, j)];
        if (o == e)
            continue;
        p->pair[(size_t)e * p->n_act + o] += (uint32_t)delta;
        p->pair[(size_t)o * p->n_act + e] += (uint32_t)delta;
    }
}

/* How often node e already shares a shard with the replicas of s. */
static uint32_t pair_cost(const struct planner *p, uint32_t s, int32_t e)
{
    uint32_t c = 0;
    if (p->pair == NULL)
        return 0;
    for (uint32_t j = 0; j < p->cnt[s]; j++)
        c += p->pair[(size_t)e * p->n_act + p->tgt[SLOT(s, j)]];
    return c;
}

static void drop_slot(struct planner *p, uint32_t s, uint32_t j)
{
    pair_update(p, s, p->tgt[SLOT(s, j)], -1);
    p->load[p->tgt[SLOT(s, j)]]--;
    for (uint32_t k = j + 1; k < p->cnt[s]; k++) {
        p->tgt[SLOT(s, k - 1)] = p->tgt[SLOT(s, k)];
        p->kept[SLOT(s, k - 1)] = p->kept[SLOT(s, k)];
    }
    p->cnt[s]--;
}

static void add_slot(struct planner *p, uint32_t s, int32_t e, bool kept)
{
    RK_ASSERT(p->cnt[s] < SHARD_MAX_REPLICAS && !hosts(p, s, e));
    p->tgt[SLOT(s, p->cnt[s])] = e;
    p->kept[SLOT(s, p->cnt[s])] = kept;
    p->cnt[s]++;
    p->load[e]++;
    pair_update(p, s, e, +1);
}

/* Moves the replica of shard s from node y to node z. */
static void move_slot(struct planner *p, uint32_t s, int32_t y, int32_t z)
{
    for (uint32_t j = 0; j < p->cnt[s]; j++) {
        if (p->tgt[SLOT(s, j)] == y) {
            pair_update(p, s, y, -1);
            p->tgt[SLOT(s, j)] = z;
            p->kept[SLOT(s, j)] = 0;
            pair_update(p, s, z, +1);
            p->load[y]--;
            p->load[z]++;
            return;
        }
    }
    RK_UNREACHABLE();
}

/* ---------------------------------------------------------------------- */
/* Replica target                                                         */
/* ---------------------------------------------------------------------- */

/* Keeps today's voters that sit on active nodes, at most r_eff per shard
 * (dropping those on the most loaded nodes first, the leader last). */
static void keep_current(struct planner *p)
{
    for (uint32_t s = 0; s < p->n_shards; s++) {
        const struct shard_info *si = &p->m->shards[s];
        for (uint32_t j = 0; j < si->n_voters; j++) {
            int32_t e = act_pos(p, si->voters[j]);
            if (e >= 0)
                add_slot(p, s, e, true);
        }
    }
    for (uint32_t s = 0; s < p->n_shards; s++) {
        int32_t leader = act_pos(p, p->m->shards[s].leader);
        while (p->cnt[s] > p->r_eff) {
            uint32_t worst = 0;
            for (uint32_t j = 1; j < p->cnt[s]; j++) {
                int32_t a = p->tgt[SLOT(s, j)], b = p->tgt[SLOT(s, worst)];
                if ((b == leader && a != leader) ||
                    (a != leader && p->load[a] > p->load[b]))
                    worst = j;
            }
            drop_slot(p, s, worst);
        }
    }
}

/* Caps: ceil(T/N) for the (T mod N) nodes holding most today, else floor. */
static void set_caps(struct planner *p)
{
    uint64_t total = (uint64_t)p->n_shards * p->r_eff;
    uint32_t base = (uint32_t)(total / p->n_act);
    uint32_t extra = (uint32_t)(total % p->n_act);
    for (uint32_t e = 0; e < p->n_act; e++)
        p->cap[e] = base;
    for (uint32_t k = 0; k < extra; k++) {
        int32_t best = -1;
        for (uint32_t e = 0; e < p->n_act; e++)
            if (p->cap[e] == base && (best < 0 || p->load[e] > p->load[best]))
                best = (int32_t)e;
        p->cap[best] = base + 1;
    }
}

struct trim_cand {
    uint32_t shard;
    uint32_t score;
};

static int cmp_trim(const void *a, const void *b)
{
    const struct trim_cand *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return (x->shard > y->shard) - (x->shard < y->shard);
}

/*
 * Drops replicas from nodes above their cap: followers before leaders,
 * then from the shards with the most replicas left, then the replicas that
 * share most shards with their fellows (which helps scattering). Each
 * shard appears once per node, so one sort per node gives the order.
 */
static int trim_to_caps(struct planner *p)
{
    struct trim_cand *c = NULL;
    for (uint32_t e = 0; e < p->n_act; e++) {
        if (p->load[e] <= p->cap[e])
            continue;
        if (c == NULL && (c = malloc(p->n_shards * sizeof(*c))) == NULL)
            return RK_ENOMEM;
        uint32_t n = 0;
        for (uint32_t s = 0; s < p->n_shards; s++) {
            if (!hosts(p, s, (int32_t)e))
                continue;
            bool leader = act_pos(p, p->m->shards[s].leader) == (int32_t)e;
            uint32_t pair = pair_cost(p, s, (int32_t)e);
            c[n++] = (struct trim_cand){
                s, (leader ? 0 : 1u << 30) + (p->cnt[s] << 24) +
                       (pair < (1u << 24) ? pair : (1u << 24) - 1)};
        }
        qsort(c, n, sizeof(*c), cmp_trim);
        for (uint32_t k = 0; p->load[e] > p->cap[e]; k++) {
            RK_ASSERT(k < n);
            uint32_t s = c[k].shard;
            for (uint32_t j = 0; j < p->cnt[s]; j++)
                if (p->tgt[SLOT(s, j)] == (int32_t)e) {
                    drop_slot(p, s, j);
                    break;
                }
        }
    }
    free(c);
    return 0;
}

/*
 * A free node for one more replica of s: below cap and lacking s. Nodes
 * holding a learner of s come first (it has the data); then the node that
 * shares the fewest shards with the other replicas of s, so that replicas
 * scatter (when a node leaves, its shards then have room on every other
 * node, instead of only on the few that mirror it); then the most room.
 */
static int32_t pick_direct(const struct planner *p, uint32_t s)
{
    const struct shard_info *si = &p->m->shards[s];
    int32_t best = -1;
    bool best_learner = false;
    uint32_t best_pair = 0, best_room = 0;
    for (uint32_t e = 0; e < p->n_act; e++) {
        if (p->load[e] >= p->cap[e] || hosts(p, s, (int32_t)e))
            continue;
        shard_node_id id = p->m->nodes[p->act[e]].id;
        bool learner = shard__find_id(si->learners, si->n_learners, id) >= 0;
        uint32_t pair = pair_cost(p, s, (int32_t)e);
        uint32_t room = p->cap[e] - p->load[e];
        if (best >= 0 &&
            (best_learner != learner
                 ? best_learner
                 : (pair != best_pair ? pair > best_pair : room <= best_room)))
            continue;
        best = (int32_t)e;
        best_learner = learner;
        best_pair = pair;
        best_room = room;
    }
    return best;
}

/*
 * Augmenting path for shard s (Dijkstra with 0/1 costs over nodes): start
 * at any node lacking s; from node y, shifting one of its replicas t to a
 * node z lacking t costs 1 if that replica exists today, else 0; stop at a
 * node below its cap. Then apply the shifts back from the end and put s on
 * the start node. Returns false if no path exists.
 */
static bool augment(struct planner *p, uint32_t s)
{
    uint32_t n = p->n_act;
    uint32_t *dist = malloc(n * sizeof(*dist));
    int32_t *from = malloc(n * sizeof(*from));
    uint32_t *via = malloc(n * sizeof(*via)); /* shard shifted into e */
    uint8_t *done = calloc(n, 1);
    bool found = false;
    if (dist == NULL || from == NULL || via == NULL || done == NULL)
        goto out;
    for (uint32_t e = 0; e < n; e++) {
        dist[e] = hosts(p, s, (int32_t)e) ? UINT32_MAX : 0;
        from[e] = -1;
    }
    int32_t goal = -1;
    for (;;) {
        int32_t y = -1;
        for (uint32_t e = 0; e < n; e++)
            if (!done[e] && dist[e] != UINT32_MAX &&
                (y < 0 || dist[e] < dist[y]))
                y = (int32_t)e;
        if (y < 0)
            break;
        done[y] = 1;
        if (p->load[y] < p->cap[y]) {
            goal = y;
            break;
        }
        for (uint32_t t = 0; t < p->n_shards; t++) {
            for (uint32_t j = 0; j < p->cnt[t]; j++) {
                if (p->tgt[SLOT(t, j)] != y)
                    continue;
                uint32_t d = dist[y] + p->kept[SLOT(t, j)];
                for (uint32_t z = 0; z < n; z++) {
                    if (done[z] || d >= dist[z] || hosts(p, t, (int32_t)z))
                        continue;
                    dist[z] = d;
                    from[z] = y;
                    via[z] = t;
                }
            }
        }
    }
    if (goal < 0)
        goto out;
    /* Shift back along the path: via[z] moves from from[z] to z. */
    int32_t z = goal;
    while (from[z] >= 0) {
        int32_t y = from[z];
        move_slot(p, via[z], y, z);
        z = y;
    }
    add_slot(p, s, z, false);
    found = true;
out:
    free(dist);
    free(from);
    free(via);
    free(done);
    return found;
}

static int fill(struct planner *p)
{
    /* Every pass places at least one replica while the flow is not full
     * (max-flow: an augmenting path exists from some short shard). */
    for (;;) {
        bool short_left = false, progress = false;
        for (uint32_t s = 0; s < p->n_shards; s++) {
            while (p->cnt[s] < p->r_eff) {
                int32_t e = pick_direct(p, s);
                if (e >= 0)
                    add_slot(p, s, e, false);
                else if (!augment(p, s))
                    break;
                progress = true;
            }
            short_left |= p->cnt[s] < p->r_eff;
        }
        if (!short_left)
            return 0;
        if (!progress) {
            rk_log(RK_LOG_ERROR, "shard plan: no placement found");
            return RK_EINVAL;
        }
    }
}

/* ---------------------------------------------------------------------- */
/* Leader target                                                          */
/* ---------------------------------------------------------------------- */

/* Scratch space of the leader balancing. */
struct lead_bfs {
    int32_t *prev; /* BFS parent node, -1 at the root, -2 unseen */
    uint32_t *via; /* shard whose leadership moves into the node */
    int32_t *queue;
    int32_t *head; /* first shard led by a node, -1 if none */
    int32_t *next; /* next shard led by the same node */
};

/* BFS from u over "shard led by x has a voter v": the nearest node with at
 * most load(u) - 2 leaders; shifts one leadership along each hop. */
static bool shift_leaders_from(struct planner *p, int32_t u, struct lead_bfs *b)
{
    uint32_t n = p->n_act;
    for (uint32_t e = 0; e < n; e++) {
        b->prev[e] = -2;
        b->head[e] = -1;
    }
    for (uint32_t s = p->n_shards; s-- > 0;) {
        b->next[s] = b->head[p->lead[s]];
        b->head[p->lead[s]] = (int32_t)s;
    }
    uint32_t qh = 0, qt = 0;
    b->queue[qt++] = u;
    b->prev[u] = -1;
    int32_t goal = -1;
    while (qh < qt && goal < 0) {
        int32_t x = b->queue[qh++];
        for (int32_t s = b->head[x]; s >= 0 && goal < 0; s = b->next[s]) {
            for (uint32_t j = 0; j < p->cnt[s]; j++) {
                int32_t v = p->tgt[SLOT(s, j)];
                if (b->prev[v] != -2)
                    continue;
                b->prev[v] = x;
                b->via[v] = (uint32_t)s;
                b->queue[qt++] = v;
                if (p->lload[v] + 2 <= p->lload[u]) {
                    goal = v;
                    break;
                }
            }
        }
    }
    if (goal < 0)
        return false;
    for (int32_t v = goal; b->prev[v] >= 0; v = b->prev[v])
        p->lead[b->via[v]] = v;
    p->lload[u]--;
    p->lload[goal]++;
    return true;
}

static int place_leaders(struct planner *p)
{
    uint32_t n = p->n_act;
    for (uint32_t s = 0; s < p->n_shards; s++) {
        int32_t l = act_pos(p, p->m->shards[s].leader);
        p->lead[s] = (l >= 0 && hosts(p, s, l)) ? l : -1;
        if (p->lead[s] >= 0)
            p->lload[l]++;
    }
    for (uint32_t s = 0; s < p->n_shards; s++) {
        if (p->lead[s] >= 0)
            continue;
        int32_t best = p->tgt[SLOT(s, 0)];
        for (uint32_t j = 1; j < p->cnt[s]; j++)
            if (p->lload[p->tgt[SLOT(s, j)]] < p->lload[best])
                best = p->tgt[SLOT(s, j)];
        p->lead[s] = best;
        p->lload[best]++;
    }
    struct lead_bfs b = {
        malloc(n * sizeof(*b.prev)),
        malloc(n * sizeof(*b.via)),
        malloc(n * sizeof(*b.queue)),
        malloc(n * sizeof(*b.head)),
        malloc((p->n_shards ? p->n_shards : 1) * sizeof(*b.next)),
    };
    int rc = RK_ENOMEM;
    if (b.prev == NULL || b.via == NULL || b.queue == NULL || b.head == NULL ||
        b.next == NULL)
        goto out;
    /*
     * Only a node with at least min + 2 leaders can shed one. Each shift
     * lowers the sum of squared loads, so this ends; it stops when no such
     * node has a path, which (see the top of the file) means max - min
     * <= 1.
     */
    for (;;) {
        uint32_t min = UINT32_MAX, max = 0;
        for (uint32_t e = 0; e < n; e++) {
            if (p->lload[e] < min)
                min = p->lload[e];
            if (p->lload[e] > max)
                max = p->lload[e];
        }
        /* The most loaded nodes shed first: a node that sheds more than
         * its share would only be refilled later, one more transfer. */
        bool shifted = false;
        for (uint32_t l = max; l >= min + 2 && !shifted; l--)
            for (uint32_t e = 0; e < n && !shifted; e++)
                if (p->lload[e] == l)
                    shifted = shift_leaders_from(p, (int32_t)e, &b);
        if (!shifted)
            break;
    }
    rc = 0;
out:
    free(b.prev);
    free(b.via);
    free(b.queue);
    free(b.head);
    free(b.next);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Target entry point                                                     */
/* ---------------------------------------------------------------------- */

static void planner_free(struct planner *p)
{
    free(p->act);
    free(p->pos);
    free(p->tgt);
    free(p->kept);
    free(p->cnt);
    free(p->load);
    free(p->cap);
    free(p->lead);
    free(p->lload);
    free(p->pair);
}

int shard__plan_target(const struct shard_map *m, shard_node_id *voters,
                       shard_node_id *leaders, uint32_t *r_eff)
{
    struct planner p = {.m = m, .n_shards = m->n_shards};
    uint32_t nn = m->n_nodes ? m->n_nodes : 1;
    uint32_t ns = m->n_shards ? m->n_shards : 1;
    p.act = malloc(nn * sizeof(*p.act));
    p.pos = malloc(nn * sizeof(*p.pos));
    p.tgt = malloc(ns * SHARD_MAX_REPLICAS * sizeof(*p.tgt));
    p.kept = malloc(ns * SHARD_MAX_REPLICAS * sizeof(*p.kept));
    p.cnt = calloc(ns, sizeof(*p.cnt));
    p.load = calloc(nn, sizeof(*p.load));
    p.cap = calloc(nn, sizeof(*p.cap));
    p.lead = malloc(ns * sizeof(*p.lead));
    p.lload = calloc(nn, sizeof(*p.lload));
    int rc = RK_ENOMEM;
    if (!p.act || !p.pos || !p.tgt || !p.kept || !p.cnt || !p.load || !p.cap ||
        !p.lead || !p.lload)
        goto out;
    for (uint32_t i = 0; i < m->n_nodes; i++) {
        p.pos[i] = -1;
        if (m->nodes[i].state == SHARD_NODE_ACTIVE) {
            p.pos[i] = (int32_t)p.n_act;
            p.act[p.n_act++] = i;
        }
    }
    rc = RK_EUNAVAILABLE;
    if (p.n_act == 0)
        goto out;
    p.r_eff = m->replication < p.n_act ? m->replication : p.n_act;
    rc = RK_ENOMEM;
    if (p.n_act <= PAIR_MAX_NODES &&
        (p.pair = calloc((size_t)p.n_act * p.n_act, sizeof(*p.pair))) == NULL)
        goto out;

    keep_current(&p);
    set_caps(&p);
    rc = trim_to_caps(&p);
    if (rc == 0)
        rc = fill(&p);
    if (rc != 0)
        goto out;
    rc = place_leaders(&p);
    if (rc != 0)
        goto out;
    for (uint32_t s = 0; s < m->n_shards; s++) {
        for (uint32_t j = 0; j < p.r_eff; j++)
            voters[SLOT(s, j)] = m->nodes[p.act[p.tgt[SLOT(s, j)]]].id;
        leaders[s] = m->nodes[p.act[p.lead[s]]].id;
    }
    *r_eff = p.r_eff;
out:
    planner_free(&p);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Steps                                                                  */
/* ---------------------------------------------------------------------- */

const char *shard_step_kind_name(uint8_t kind)
{
    switch (kind) {
    case SHARD_STEP_ADD_LEARNER:
        return "ADD_LEARNER";
    case SHARD_STEP_PROMOTE:
        return "PROMOTE";
    case SHARD_STEP_REMOVE:
        return "REMOVE";
    case SHARD_STEP_TRANSFER_LEADER:
        return "TRANSFER_LEADER";
    default:
        return "UNKNOWN";
    }
}

static int push_step(struct shard_plan *p, uint8_t kind, shard_id shard,
                     shard_node_id node)
{
    if (p->n_steps == p->cap) {
        uint32_t cap = p->cap ? p->cap * 2 : 64;
        struct shard_step *s = realloc(p->steps, cap * sizeof(*s));
        if (s == NULL)
            return RK_ENOMEM;
        p->steps = s;
        p->cap = cap;
    }
    p->steps[p->n_steps++] = (struct shard_step){kind, shard, node};
    if (kind == SHARD_STEP_TRANSFER_LEADER)
        p->n_transfers++;
    return 0;
}

/* Removal order: nodes already gone first, then draining, then active. */
static int removal_rank(const struct shard_map *m, shard_node_id id)
{
    const struct shard_node *n = shard_map_node(m, id);
    if (n == NULL || n->state == SHARD_NODE_REMOVED)
        return 0;
    return n->state == SHARD_NODE_DRAINING ? 1 : 2;
}

/*
 * The steps of one shard from (voters, leader) to (want, want_leader):
 * stale learners out; surplus voters out while more than r_eff remain
 * (nodes already gone first, so the live majority only grows); new voters
 * a short shard lacks; then for each other new voter: add learner,
 * promote, and remove one old voter. New voters come want_leader first. Before
 * its node leaves, the leader moves to want_leader, or to another voter that
 * stays if want_leader is not a voter yet; and to want_leader at the end.
 */
static int plan_shard(const struct shard_map *m, const struct shard_info *si,
                      const shard_node_id *want, uint32_t r_eff,
                      shard_node_id want_leader, struct shard_plan *p)
{
    shard_node_id adds[SHARD_MAX_REPLICAS], rems[SHARD_MAX_REPLICAS];
    uint32_t n_adds = 0, n_rems = 0;
    bool kept_any = false;
    int rc = 0;
    if (shard__find_id(want, r_eff, want_leader) >= 0 &&
        shard__find_id(si->voters, si->n_voters, want_leader) < 0)
        adds[n_adds++] = want_leader;
    for (uint32_t j = 0; j < r_eff; j++) {
        if (shard__find_id(si->voters, si->n_voters, want[j]) >= 0)
            kept_any = true;
        else if (want[j] != want_leader)
            adds[n_adds++] = want[j];
    }
    for (int rank = 0; rank <= 2; rank++)
        for (uint32_t j = 0; j < si->n_voters; j++)
            if (removal_rank(m, si->voters[j]) == rank &&
                shard__find_id(want, r_eff, si->voters[j]) < 0)
                rems[n_rems++] = si->voters[j];
    /*
     * With no voter staying, the leadership needs a caretaker until a
     * newcomer is promoted: the last live voter to leave (not the leader),
     * which then leaves last; or, if there is none, the leader itself
     * (live, since the shard has a live majority).
     */
    int li = shard__find_id(rems, n_rems, si->leader);
    if (!kept_any && li >= 0) {
        int c = li;
        for (uint32_t j = 0; j < n_rems; j++)
            if (rems[j] != si->leader && removal_rank(m, rems[j]) > 0)
                c = (int)j;
        shard_node_id keep = rems[c];
        memmove(&rems[c], &rems[c + 1],
                (n_rems - (uint32_t)c - 1) * sizeof(*rems));
        rems[n_rems - 1] = keep;
    }

    for (uint32_t j = 0; j < si->n_learners && rc == 0; j++)
        if (shard__find_id(want, r_eff, si->learners[j]) < 0)
            rc = push_step(p, SHARD_STEP_REMOVE, si->id, si->learners[j]);

    /* Surplus removals first, then the adds that grow a short shard to
     * r_eff, then one add and one removal at a time: the voter count
     * never drops below min(now, r_eff) nor exceeds max(now, r_eff + 1). */
    shard_node_id leader = si->leader;
    uint32_t surplus = n_rems > n_adds ? n_rems - n_adds : 0;
    uint32_t deficit = n_adds > n_rems ? n_adds - n_rems : 0;
    uint32_t promoted = 0, r = 0;
    for (uint32_t i = 0; i < surplus + n_adds && rc == 0; i++) {
        if (i >= surplus) {
            shard_node_id a = adds[promoted];
            if (shard__find_id(si->learners, si->n_learners, a) < 0)
                rc = push_step(p, SHARD_STEP_ADD_LEARNER, si->id, a);
            if (rc == 0)
                rc = push_step(p, SHARD_STEP_PROMOTE, si->id, a);
            promoted++;
            p->n_moves++;
            if (promoted <= deficit)
                continue;
        }
        if (rc != 0 || r == n_rems)
            continue;
        shard_node_id old = rems[r++];
        if (old == leader) {
            /* A voter that stays (want_leader if it is one already), or
             * else the caretaker, which leaves last. */
            shard_node_id to = 0;
            for (uint32_t j = 0; j < r_eff && to != want_leader; j++)
                if (shard__find_id(si->voters, si->n_voters, want[j]) >= 0 ||
                    shard__find_id(adds, promoted, want[j]) >= 0)
                    to = want[j];
            if (to == 0)
                to = rems[n_rems - 1];
            RK_ASSERT(to != old);
            rc = push_step(p, SHARD_STEP_TRANSFER_LEADER, si->id, to);
            leader = to;
        }
        if (rc == 0)
            rc = push_step(p, SHARD_STEP_REMOVE, si->id, old);
    }
    if (rc == 0 && leader != want_leader)
        rc = push_step(p, SHARD_STEP_TRANSFER_LEADER, si->id, want_leader);
    return rc;
}

int shard_plan_compute(const struct shard_map *m, struct shard_plan *p)
{
    memset(p, 0, sizeof(*p));
    uint32_t ns = m->n_shards ? m->n_shards : 1;
    shard_node_id *voters = calloc(ns, SHARD_MAX_REPLICAS * sizeof(*voters));
    shard_node_id *leaders = calloc(ns, sizeof(*leaders));
    uint32_t r_eff = 0;
    int rc = RK_ENOMEM;
    if (voters == NULL || leaders == NULL)
        goto out;
    rc = shard__plan_target(m, voters, leaders, &r_eff);
    for (uint32_t s = 0; s < m->n_shards && rc == 0; s++) {
        const struct shard_info *si = &m->shards[s];
        uint32_t live = 0;
        for (uint32_t j = 0; j < si->n_voters; j++)
            live += shard__node_live(m, si->voters[j]);
        if (2 * live <= si->n_voters) {
            p->n_stuck++;
            continue;
        }
        rc = plan_shard(m, si, voters + SLOT(s, 0), r_eff, leaders[s], p);
    }
out:
    free(voters);
    free(leaders);
    if (rc != 0)
        shard_plan_free(p);
    return rc;
}

void shard_plan_free(struct shard_plan *p)
{
    free(p->steps);
    memset(p, 0, sizeof(*p));
}

int shard_plan_simulate(struct shard_map *m, const struct shard_plan *p,
                        shard_step_cb cb, void *arg, uint32_t *done)
{
    int rc = 0;
    uint32_t i;
    for (i = 0; i < p->n_steps; i++) {
        rc = shard_map_apply_step(m, &p->steps[i]);
        if (rc != 0)
            break;
        if (cb != NULL && (rc = cb(m, &p->steps[i], i, arg)) != 0) {
            i++;
            break;
        }
    }
    if (done != NULL)
        *done = i;
    return rc;
}
