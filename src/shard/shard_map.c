/* The epoch-versioned shard map: creation, copies, validation, the node
 * registry, splits and placement steps. */
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "rk_err.h"
#include "shard.h"
#include "shard_int.h"

/* ---------------------------------------------------------------------- */
/* Life cycle                                                             */
/* ---------------------------------------------------------------------- */

void shard_map_init(struct shard_map *m)
{
    memset(m, 0, sizeof(*m));
    m->next_shard_id = 1;
}

void shard_map_free(struct shard_map *m)
{
    shard_ring_free(&m->ring);
    free(m->nodes);
    free(m->shards);
    free(m->moves);
    shard_map_init(m);
}

/* An address must be a non-empty, NUL-terminated string. */
static bool addr_ok(const char *a)
{
    return a[0] != '\0' && memchr(a, '\0', SHARD_ADDR_MAX) != NULL;
}

static int cmp_node(const void *a, const void *b)
{
    const struct shard_node *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

int shard_map_create(struct shard_map *m, uint64_t cluster_id,
                     const struct shard_node *nodes, uint32_t n_nodes,
                     uint32_t n_shards, uint32_t replication,
                     uint32_t points_per_shard)
{
    shard_map_init(m);
    if (n_nodes == 0 || n_nodes > SHARD_MAX_NODES || n_shards == 0 ||
        n_shards >= SHARD_MAX_SHARDS || replication == 0 ||
        replication > SHARD_MAX_REPLICATION || points_per_shard == 0)
        return RK_EINVAL;
    for (uint32_t i = 0; i < n_nodes; i++)
        if (nodes[i].id == 0 || nodes[i].state != SHARD_NODE_ACTIVE ||
            !addr_ok(nodes[i].client_addr) || !addr_ok(nodes[i].peer_addr))
            return RK_EINVAL;

    int rc = RK_ENOMEM;
    shard_id *ids = NULL;
    shard_node_id *voters = NULL, *leaders = NULL;
    m->cluster_id = cluster_id;
    m->replication = replication;
    m->points_per_shard = points_per_shard;
    m->next_shard_id = n_shards + 1;
    m->nodes = malloc(n_nodes * sizeof(*m->nodes));
    m->shards = calloc(n_shards + 1, sizeof(*m->shards));
    ids = malloc(n_shards * sizeof(*ids));
    if (m->nodes == NULL || m->shards == NULL || ids == NULL)
        goto err;
    memcpy(m->nodes, nodes, n_nodes * sizeof(*m->nodes));
    qsort(m->nodes, n_nodes, sizeof(*m->nodes), cmp_node);
    m->n_nodes = n_nodes;
    rc = RK_EINVAL;
    for (uint32_t i = 1; i < n_nodes; i++)
        if (m->nodes[i].id == m->nodes[i - 1].id)
            goto err;

    /* Shard 0 (meta, no ring points) and the data shards 1..n_shards. */
    m->n_shards = n_shards + 1;
    for (uint32_t i = 0; i <= n_shards; i++) {
        m->shards[i].id = i;
        m->shards[i].state = SHARD_STATE_ACTIVE;
        m->shards[i].split_peer = SHARD_ID_NONE;
        if (i > 0)
            ids[i - 1] = i;
    }
    rc = shard_ring_build(&m->ring, ids, n_shards, points_per_shard,
                          SHARD_RING_BALANCED);
    if (rc != 0)
        goto err;

    /* No shard has voters yet: the planner's target is the placement. */
    rc = RK_ENOMEM;
    voters = calloc(m->n_shards, SHARD_MAX_REPLICAS * sizeof(*voters));
    leaders = calloc(m->n_shards, sizeof(*leaders));
    if (voters == NULL || leaders == NULL)
        goto err;
    uint32_t r_eff;
    rc = shard__plan_target(m, voters, leaders, &r_eff);
    if (rc != 0)
        goto err;
    for (uint32_t s = 0; s < m->n_shards; s++) {
        struct shard_info *si = &m->shards[s];
        si->n_voters = r_eff;
        memcpy(si->voters, voters + s * SHARD_MAX_REPLICAS,
               r_eff * sizeof(*voters));
        si->leader = leaders[s];
    }
    m->epoch = 1;
    free(ids);
    free(voters);
    free(leaders);
    RK_ASSERT(shard_map_validate(m) == 0);
    return 0;

err:
    free(ids);
    free(voters);
    free(leaders);
    shard_map_free(m);
    return rc;
}

/* Duplicates n elements of `size` bytes; a NULL result with n > 0 is ENOMEM. */
static void *dup_array(const void *src, uint32_t n, size_t size)
{
    if (n == 0)
        return NULL;
    void *p = malloc(n * size);
    if (p != NULL)
        memcpy(p, src, n * size);
    return p;
}

int shard_map_copy(struct shard_map *dst, const struct shard_map *src)
{
    shard_map_init(dst);
    struct shard_map c = *src;
    c.ring.points = NULL;
    c.nodes = dup_array(src->nodes, src->n_nodes, sizeof(*src->nodes));
    c.shards = dup_array(src->shards, src->n_shards, sizeof(*src->shards));
    c.moves = dup_array(src->moves, src->n_moves, sizeof(*src->moves));
    int rc = shard_ring_copy(&c.ring, &src->ring);
    if (rc != 0 || (src->n_nodes > 0 && c.nodes == NULL) ||
        (src->n_shards > 0 && c.shards == NULL) ||
        (src->n_moves > 0 && c.moves == NULL)) {
        shard_map_free(&c);
        return RK_ENOMEM;
    }
    *dst = c;
    return 0;
}

static bool node_equal(const struct shard_node *a, const struct shard_node *b)
{
    return a->id == b->id && a->state == b->state &&
           strcmp(a->client_addr, b->client_addr) == 0 &&
           strcmp(a->peer_addr, b->peer_addr) == 0;
}

static bool shard_equal(const struct shard_info *a, const struct shard_info *b)
{
    return a->id == b->id && a->state == b->state &&
           a->split_peer == b->split_peer && a->leader == b->leader &&
           a->n_voters == b->n_voters && a->n_learners == b->n_learners &&
           memcmp(a->voters, b->voters, a->n_voters * sizeof(a->voters[0])) ==
               0 &&
           memcmp(a->learners, b->learners,
                  a->n_learners * sizeof(a->learners[0])) == 0;
}

bool shard_map_equal(const struct shard_map *a, const struct shard_map *b)
{
    if (a->cluster_id != b->cluster_id || a->epoch != b->epoch ||
        a->replication != b->replication ||
        a->points_per_shard != b->points_per_shard ||
        a->next_shard_id != b->next_shard_id || a->n_nodes != b->n_nodes ||
        a->n_shards != b->n_shards || a->n_moves != b->n_moves ||
        !shard_ring_equal(&a->ring, &b->ring))
        return false;
    for (uint32_t i = 0; i < a->n_nodes; i++)
        if (!node_equal(&a->nodes[i], &b->nodes[i]))
            return false;
    for (uint32_t i = 0; i < a->n_shards; i++)
        if (!shard_equal(&a->shards[i], &b->shards[i]))
            return false;
    for (uint32_t i = 0; i < a->n_moves; i++) {
        const struct shard_move *x = &a->moves[i], *y = &b->moves[i];
        if (x->first != y->first || x->last != y->last || x->from != y->from ||
            x->to != y->to)
            return false;
    }
    return true;
}

/* ---------------------------------------------------------------------- */
/* Lookups and validation                                                 */
/* ---------------------------------------------------------------------- */

const struct shard_node *shard_map_node(const struct shard_map *m,
                                        shard_node_id id)
{
    uint32_t lo = 0, hi = m->n_nodes;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (m->nodes[mid].id == id)
            return &m->nodes[mid];
        if (m->nodes[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

struct shard_info *shard__shard_mut(struct shard_map *m, shard_id id)
{
    uint32_t lo = 0, hi = m->n_shards;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (m->shards[mid].id == id)
            return &m->shards[mid];
        if (m->shards[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const struct shard_info *shard_map_shard(const struct shard_map *m, shard_id id)
{
    return shard__shard_mut((struct shard_map *)m, id);
}

static bool ids_ok(const struct shard_map *m, const shard_node_id *ids,
                   uint32_t n)
{
    if (n > SHARD_MAX_REPLICAS)
        return false;
    for (uint32_t i = 0; i < n; i++) {
        if (shard_map_node(m, ids[i]) == NULL ||
            shard__find_id(ids, i, ids[i]) >= 0)
            return false;
    }
    return true;
}

static bool shard_ok(const struct shard_map *m, const struct shard_info *s)
{
    if (!ids_ok(m, s->voters, s->n_voters) ||
        !ids_ok(m, s->learners, s->n_learners))
        return false;
    for (uint32_t i = 0; i < s->n_learners; i++)
        if (shard__find_id(s->voters, s->n_voters, s->learners[i]) >= 0)
            return false;
    if (s->leader != 0 && shard__find_id(s->voters, s->n_voters, s->leader) < 0)
        return false;
    if (s->id == SHARD_ID_NONE || s->id >= m->next_shard_id)
        return false;
    switch (s->state) {
    case SHARD_STATE_ACTIVE:
        return s->split_peer == SHARD_ID_NONE;
    case SHARD_STATE_SPLIT_DONOR:
    case SHARD_STATE_SPLIT_RECIPIENT: {
        if (s->id == SHARD_META_ID)
            return false;
        const struct shard_info *p = shard_map_shard(m, s->split_peer);
        uint8_t want = s->state == SHARD_STATE_SPLIT_DONOR
                           ? SHARD_STATE_SPLIT_RECIPIENT
                           : SHARD_STATE_SPLIT_DONOR;
        return p != NULL && p->state == want && p->split_peer == s->id;
    }
    default:
        return false;
    }
}

int shard_map_validate(const struct shard_map *m)
{
    if (m->n_nodes > SHARD_MAX_NODES || m->n_shards > SHARD_MAX_SHARDS ||
        m->ring.n_points > SHARD_MAX_POINTS ||
        m->n_moves > m->ring.n_points + 1 || m->next_shard_id == 0)
        return RK_EPROTO;
    if (m->n_shards > 0 &&
        (m->replication == 0 || m->replication > SHARD_MAX_REPLICATION ||
         m->shards[0].id != SHARD_META_ID))
        return RK_EPROTO;
    for (uint32_t i = 0; i < m->n_nodes; i++) {
        const struct shard_node *n = &m->nodes[i];
        if (n->id == 0 || (i > 0 && n->id <= m->nodes[i - 1].id) ||
            n->state < SHARD_NODE_ACTIVE || n->state > SHARD_NODE_REMOVED ||
            !addr_ok(n->client_addr) || !addr_ok(n->peer_addr))
            return RK_EPROTO;
    }
    for (uint32_t i = 0; i < m->n_shards; i++) {
        if ((i > 0 && m->shards[i].id <= m->shards[i - 1].id) ||
            !shard_ok(m, &m->shards[i]))
            return RK_EPROTO;
    }
    for (uint32_t i = 0; i < m->ring.n_points; i++) {
        const struct shard_point *p = &m->ring.points[i];
        if ((i > 0 && p->hash <= m->ring.points[i - 1].hash) ||
            p->shard == SHARD_META_ID || shard_map_shard(m, p->shard) == NULL)
            return RK_EPROTO;
    }
    for (uint32_t i = 0; i < m->n_moves; i++) {
        const struct shard_move *mv = &m->moves[i];
        const struct shard_info *from = shard_map_shard(m, mv->from);
        if (mv->first > mv->last ||
            (i > 0 && mv->first <= m->moves[i - 1].last) || from == NULL ||
            from->state != SHARD_STATE_SPLIT_DONOR ||
            from->split_peer != mv->to ||
            shard_ring_owner(&m->ring, mv->first) != mv->to ||
            shard_ring_owner(&m->ring, mv->last) != mv->to)
            return RK_EPROTO;
    }
    return 0;
}

uint32_t shard_map_node_shards(const struct shard_map *m, shard_node_id id,
                               shard_id *out, uint32_t cap)
{
    uint32_t n = 0;
    for (uint32_t s = 0; s < m->n_shards; s++) {
        const struct shard_info *si = &m->shards[s];
        if (shard__find_id(si->voters, si->n_voters, id) < 0 &&
            shard__find_id(si->learners, si->n_learners, id) < 0)
            continue;
        if (n < cap)
            out[n] = si->id;
        n++;
    }
    return n;
}

/* ---------------------------------------------------------------------- */
/* Routing                                                                */
/* ---------------------------------------------------------------------- */

shard_id shard_map_route_hash(const struct shard_map *m, uint64_t h)
{
    /* Arcs of a split in flight are still served by the donor. */
    uint32_t lo = 0, hi = m->n_moves;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (m->moves[mid].last < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < m->n_moves && m->moves[lo].first <= h)
        return m->moves[lo].from;
    return shard_ring_owner(&m->ring, h);
}

shard_id shard_map_route(const struct shard_map *m, const void *key, size_t len)
{
    return shard_map_route_hash(m, shard_key_hash(key, len));
}

/* ---------------------------------------------------------------------- */
/* Node registry                                                          */
/* ---------------------------------------------------------------------- */

int shard_map_node_add(struct shard_map *m, const struct shard_node *node)
{
    if (node->id == 0 || node->state != SHARD_NODE_ACTIVE ||
        !addr_ok(node->client_addr) || !addr_ok(node->peer_addr))
        return RK_EINVAL;
    if (shard_map_node(m, node->id) != NULL)
        return RK_EEXIST;
    if (m->n_nodes >= SHARD_MAX_NODES)
        return RK_ETOOLARGE;
    struct shard_node *n =
        realloc(m->nodes, (m->n_nodes + 1) * sizeof(*m->nodes));
    if (n == NULL)
        return RK_ENOMEM;
    m->nodes = n;
    uint32_t at = m->n_nodes;
    while (at > 0 && n[at - 1].id > node->id)
        at--;
    memmove(&n[at + 1], &n[at], (m->n_nodes - at) * sizeof(*n));
    n[at] = *node;
    m->n_nodes++;
    m->epoch++;
    return 0;
}

int shard_map_node_set_state(struct shard_map *m, shard_node_id id,
                             uint8_t state)
{
    struct shard_node *n = (struct shard_node *)shard_map_node(m, id);
    if (n == NULL)
        return RK_ENOTFOUND;
    if (state < SHARD_NODE_ACTIVE || state > SHARD_NODE_REMOVED ||
        (n->state == SHARD_NODE_REMOVED && state != SHARD_NODE_REMOVED))
        return RK_EINVAL;
    if (n->state == state)
        return 0;
    n->state = state;
    m->epoch++;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Splits                                                                 */
/* ---------------------------------------------------------------------- */

/* Length of the arc owned by point i (2^64 saturates for a lone point). */
static uint64_t arc_len(const struct shard_ring *r, uint32_t i)
{
    if (r->n_points == 1)
        return UINT64_MAX;
    uint64_t prev = r->points[i == 0 ? r->n_points - 1 : i - 1].hash;
    return r->points[i].hash - prev; /* modulo 2^64 handles the wrap */
}

struct split_cand {
    uint32_t idx;
    uint64_t len;
};

static int cmp_cand(const void *a, const void *b)
{
    const struct split_cand *x = a, *y = b;
    if (x->len != y->len)
        return x->len > y->len ? -1 : 1;
    return (x->idx > y->idx) - (x->idx < y->idx);
}

/*
 * Builds the ring after the split into *out: the donor's points are shared
 * between donor and recipient by longest-arc-first to the lighter side
 * (near-equal halves), or a lone donor point gets a recipient point in the
 * middle of its arc.
 */
static int split_ring(const struct shard_ring *r, shard_id donor,
                      shard_id recipient, struct shard_ring *out)
{
    uint32_t owned = 0, only = 0;
    for (uint32_t i = 0; i < r->n_points; i++)
        if (r->points[i].shard == donor) {
            owned++;
            only = i;
        }
    if (owned == 0)
        return RK_EINVAL;
    if (owned == 1) {
        uint64_t len = arc_len(r, only);
        if (len < 2)
            return RK_EINVAL;
        if (r->n_points >= SHARD_MAX_POINTS)
            return RK_ETOOLARGE;
        uint64_t prev = r->points[only == 0 ? r->n_points - 1 : only - 1].hash;
        if (r->n_points == 1)
            prev = r->points[0].hash;
        uint64_t mid = prev + len / 2; /* may wrap past 2^64: that is fine */
        out->points = malloc((r->n_points + 1) * sizeof(*out->points));
        if (out->points == NULL)
            return RK_ENOMEM;
        uint32_t k = 0;
        bool placed = false;
        for (uint32_t i = 0; i < r->n_points; i++) {
            if (!placed && mid < r->points[i].hash) {
                out->points[k++] = (struct shard_point){mid, recipient};
                placed = true;
            }
            out->points[k++] = r->points[i];
        }
        if (!placed)
            out->points[k++] = (struct shard_point){mid, recipient};
        out->n_points = k;
        return 0;
    }
    struct split_cand *c = malloc(owned * sizeof(*c));
    int rc = shard_ring_copy(out, r);
    if (c == NULL || rc != 0) {
        free(c);
        shard_ring_free(out);
        return RK_ENOMEM;
    }
    uint32_t k = 0;
    for (uint32_t i = 0; i < r->n_points; i++)
        if (r->points[i].shard == donor)
            c[k++] = (struct split_cand){i, arc_len(r, i)};
    qsort(c, owned, sizeof(*c), cmp_cand);
    /* Sums of up to 2^64 per side need 65 bits. */
    unsigned __int128 keep = 0, give = 0;
    for (uint32_t i = 0; i < owned; i++) {
        if (give < keep) {
            out->points[c[i].idx].shard = recipient;
            give += c[i].len;
        } else {
            keep += c[i].len;
        }
    }
    free(c);
    return 0;
}

static int cmp_move(const void *a, const void *b)
{
    const struct shard_move *x = a, *y = b;
    return (x->first > y->first) - (x->first < y->first);
}

int shard_map_split_begin(struct shard_map *m, shard_id donor,
                          shard_id *recipient, struct shard_move **moves,
                          uint32_t *n_moves)
{
    if (moves != NULL) {
        *moves = NULL;
        *n_moves = 0;
    }
    const struct shard_info *d = shard_map_shard(m, donor);
    if (d == NULL)
        return RK_EUNKNOWNSHARD;
    if (donor == SHARD_META_ID)
        return RK_EINVAL;
    if (d->state != SHARD_STATE_ACTIVE)
        return RK_EBUSY;
    if (m->n_shards >= SHARD_MAX_SHARDS || m->next_shard_id >= SHARD_ID_NONE)
        return RK_ETOOLARGE;
    shard_id rid = m->next_shard_id;

    struct shard_ring nr = {0, NULL};
    struct shard_move *mv = NULL, *all = NULL, *copy = NULL;
    uint32_t n_mv = 0;
    int rc = split_ring(&m->ring, donor, rid, &nr);
    if (rc != 0)
        return rc;
    rc = shard_ring_diff(&m->ring, &nr, &mv, &n_mv);
    if (rc != 0)
        goto err;
    rc = RK_ENOMEM;
    all = malloc((m->n_moves + n_mv) * sizeof(*all));
    struct shard_info *shards =
        realloc(m->shards, (m->n_shards + 1) * sizeof(*m->shards));
    if (shards != NULL)
        m->shards = shards; /* only grown; n_shards still says the old size */
    if (all == NULL || shards == NULL)
        goto err;
    if (moves != NULL) {
        copy = dup_array(mv, n_mv, sizeof(*mv));
        if (copy == NULL && n_mv > 0)
            goto err;
    }

    /* Nothing can fail from here on. */
    if (m->n_moves > 0)
        memcpy(all, m->moves, m->n_moves * sizeof(*all));
    memcpy(all + m->n_moves, mv, n_mv * sizeof(*all)); /* n_mv >= 1 */
    qsort(all, m->n_moves + n_mv, sizeof(*all), cmp_move);
    free(m->moves);
    m->moves = all;
    m->n_moves += n_mv;
    shard_ring_free(&m->ring);
    m->ring = nr;
    struct shard_info *ds = shard__shard_mut(m, donor);
    struct shard_info *rs = &m->shards[m->n_shards++]; /* largest id */
    *rs = *ds;
    rs->id = rid;
    rs->n_learners = 0;
    rs->state = SHARD_STATE_SPLIT_RECIPIENT;
    rs->split_peer = donor;
    ds->state = SHARD_STATE_SPLIT_DONOR;
    ds->split_peer = rid;
    m->next_shard_id++;
    m->epoch++;
    free(mv);
    *recipient = rid;
    if (moves != NULL) {
        *moves = copy;
        *n_moves = n_mv;
    }
    return 0;

err:
    shard_ring_free(&nr);
    free(mv);
    free(all);
    return rc;
}

/* Drops the moves of one donor, keeping the others in order. */
static void drop_moves(struct shard_map *m, shard_id donor)
{
    uint32_t k = 0;
    for (uint32_t i = 0; i < m->n_moves; i++)
        if (m->moves[i].from != donor)
            m->moves[k++] = m->moves[i];
    m->n_moves = k;
}

static int split_donor(struct shard_map *m, shard_id donor,
                       struct shard_info **ds, struct shard_info **rs)
{
    *ds = shard__shard_mut(m, donor);
    if (*ds == NULL)
        return RK_EUNKNOWNSHARD;
    if ((*ds)->state != SHARD_STATE_SPLIT_DONOR)
        return RK_EINVAL;
    *rs = shard__shard_mut(m, (*ds)->split_peer);
    RK_ASSERT(*rs != NULL); /* shard_map_validate() holds for m */
    return 0;
}

int shard_map_split_finish(struct shard_map *m, shard_id donor)
{
    struct shard_info *ds, *rs;
    int rc = split_donor(m, donor, &ds, &rs);
    if (rc != 0)
        return rc;
    drop_moves(m, donor);
    ds->state = rs->state = SHARD_STATE_ACTIVE;
    ds->split_peer = rs->split_peer = SHARD_ID_NONE;
    m->epoch++;
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Placement steps                                                        */
/* ---------------------------------------------------------------------- */

static uint32_t count_active(const struct shard_map *m)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < m->n_nodes; i++)
        n += m->nodes[i].state == SHARD_NODE_ACTIVE;
    return n;
}

static uint32_t live_voters(const struct shard_map *m,
                            const struct shard_info *s)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < s->n_voters; i++)
        n += shard__node_live(m, s->voters[i]);
    return n;
}

int shard_step_check(const struct shard_map *m, const struct shard_step *st)
{
    const struct shard_info *s = shard_map_shard(m, st->shard);
    if (s == NULL)
        return RK_EUNKNOWNSHARD;
    const struct shard_node *n = shard_map_node(m, st->node);
    if (n == NULL)
        return RK_ENOTFOUND;
    /* A conf change commits through the current voters: it needs a live
     * majority of them (Raft thesis §4.1, one server at a time). */
    uint32_t live = live_voters(m, s);
    if (2 * live <= s->n_voters)
        return RK_EUNAVAILABLE;
    bool voter = shard__find_id(s->voters, s->n_voters, n->id) >= 0;
    bool learner = shard__find_id(s->learners, s->n_learners, n->id) >= 0;

    switch (st->kind) {
    case SHARD_STEP_ADD_LEARNER:
        if (n->state != SHARD_NODE_ACTIVE)
            return RK_EINVAL;
        if (voter || learner)
            return RK_EEXIST;
        return s->n_learners < SHARD_MAX_REPLICAS ? 0 : RK_ETOOLARGE;
    case SHARD_STEP_PROMOTE:
        if (!learner || n->state != SHARD_NODE_ACTIVE)
            return RK_EINVAL;
        /* One more live voter keeps a live majority. */
        return s->n_voters < SHARD_MAX_REPLICAS ? 0 : RK_ETOOLARGE;
    case SHARD_STEP_REMOVE: {
        if (learner)
            return 0;
        if (!voter || n->id == s->leader)
            return RK_EINVAL;
        uint32_t want = m->replication;
        uint32_t active = count_active(m);
        if (active < want)
            want = active;
        if (s->n_voters - 1 < want || s->n_voters == 1)
            return RK_EINVAL;
        uint32_t live_after = live - (n->state != SHARD_NODE_REMOVED);
        return 2 * live_after > s->n_voters - 1 ? 0 : RK_EUNAVAILABLE;
    }
    case SHARD_STEP_TRANSFER_LEADER:
        if (!voter || n->state == SHARD_NODE_REMOVED)
            return RK_EINVAL;
        return 0;
    default:
        return RK_EINVAL;
    }
}

/* Removes ids[i], keeping the order of the others. */
static void remove_at(shard_node_id *ids, uint32_t *n, int i)
{
    RK_ASSERT(i >= 0 && (uint32_t)i < *n);
    memmove(&ids[i], &ids[i + 1], (*n - (uint32_t)i - 1) * sizeof(*ids));
    (*n)--;
}

int shard_map_apply_step(struct shard_map *m, const struct shard_step *st)
{
    int rc = shard_step_check(m, st);
    if (rc != 0)
        return rc;
    struct shard_info *s = shard__shard_mut(m, st->shard);
    int li = shard__find_id(s->learners, s->n_learners, st->node);
    switch (st->kind) {
    case SHARD_STEP_ADD_LEARNER:
        s->learners[s->n_learners++] = st->node;
        break;
    case SHARD_STEP_PROMOTE:
        remove_at(s->learners, &s->n_learners, li);
        s->voters[s->n_voters++] = st->node;
        break;
    case SHARD_STEP_REMOVE:
        if (li >= 0)
            remove_at(s->learners, &s->n_learners, li);
        else
            remove_at(s->voters, &s->n_voters,
                      shard__find_id(s->voters, s->n_voters, st->node));
        break;
    case SHARD_STEP_TRANSFER_LEADER:
        s->leader = st->node;
        break;
    default:
        RK_UNREACHABLE();
    }
    m->epoch++;
    return 0;
}

void shard_map_balance(const struct shard_map *m, struct shard_balance *out)
{
    memset(out, 0, sizeof(*out));
    uint32_t r_eff = m->replication;
    out->n_active = count_active(m);
    if (out->n_active < r_eff)
        r_eff = out->n_active;
    out->min_replicas = out->min_leaders = UINT32_MAX;
    for (uint32_t i = 0; i < m->n_nodes; i++) {
        const struct shard_node *n = &m->nodes[i];
        uint32_t reps = 0, leads = 0;
        for (uint32_t s = 0; s < m->n_shards; s++) {
            const struct shard_info *si = &m->shards[s];
            reps += shard__find_id(si->voters, si->n_voters, n->id) >= 0;
            leads += si->leader == n->id;
        }
        if (n->state != SHARD_NODE_ACTIVE) {
            out->misplaced += reps;
            continue;
        }
        if (reps < out->min_replicas)
            out->min_replicas = reps;
        if (reps > out->max_replicas)
            out->max_replicas = reps;
        if (leads < out->min_leaders)
            out->min_leaders = leads;
        if (leads > out->max_leaders)
            out->max_leaders = leads;
    }
    for (uint32_t s = 0; s < m->n_shards; s++) {
        uint32_t on_active = 0;
        const struct shard_info *si = &m->shards[s];
        for (uint32_t j = 0; j < si->n_voters; j++) {
            const struct shard_node *n = shard_map_node(m, si->voters[j]);
            on_active += n != NULL && n->state == SHARD_NODE_ACTIVE;
        }
        if (on_active < r_eff)
            out->misplaced += r_eff - on_active;
    }
    if (out->n_active == 0)
        out->min_replicas = out->min_leaders = 0;
}
