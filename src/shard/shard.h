/* Sharding: the XXH3-64 hash ring, the epoch-versioned shard map, the placement
 * planner and the map codec. */
#ifndef SHARD_H
#define SHARD_H

/*
 * This module is pure: no I/O, no clock, no threads, no allocation it does
 * not hand back. The server keeps one struct shard_map in the meta shard's
 * state machine (shard 0), changes it only through the functions below (each
 * change bumps `epoch`), and stores it with shard_map_encode(). Clients keep a
 * copy and route with shard_map_route().
 *
 * Identifiers: a shard is a uint32_t (shard 0 is the meta shard and owns no
 * ring points; data shards are 1, 2, ...; ids are never reused), a node is a
 * uint64_t (the Raft id; 0 means "none").
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef uint32_t shard_id;
typedef uint64_t shard_node_id;

#define SHARD_META_ID         0u         /* the meta shard (holds this map) */
#define SHARD_ID_NONE         UINT32_MAX /* "no shard" (e.g. an empty ring) */
#define SHARD_RING_SEED       0x72696e676b76ull /* "ringkv", as srv_ring.h */
#define SHARD_MAX_REPLICAS    8u   /* voters (or learners) of one shard */
#define SHARD_MAX_REPLICATION 7u   /* R; one more voter during a move */
#define SHARD_ADDR_MAX        128u /* "host:port" plus the NUL */
#define SHARD_MAX_NODES       4096u
#define SHARD_MAX_SHARDS      65536u
#define SHARD_MAX_POINTS      (1u << 22)

/* ====================================================================== */
/* Ring                                                                   */
/* ====================================================================== */

/*
 * A point at `hash` owns the arc (previous point's hash, hash]; the first
 * point also owns everything after the last point (wrap-around). A key
 * belongs to the shard of the first point whose hash is >= the key's hash.
 */
struct shard_point {
    uint64_t hash;
    shard_id shard;
};

/* Points sorted by hash, hashes strictly increasing (so lookups are exact). */
struct shard_ring {
    uint32_t n_points;
    struct shard_point *points;
};

/* The hashes first..last, both inclusive (first <= last; never wraps). */
struct shard_arc {
    uint64_t first;
    uint64_t last;
};

/* An arc whose keys go from shard `from` to shard `to`. */
struct shard_move {
    uint64_t first;
    uint64_t last;
    shard_id from;
    shard_id to;
};

/*
 * The hash of virtual point number `point` of `shard`: XXH3-64 with seed
 * SHARD_RING_SEED of the 12 bytes BE32(shard) BE32(attempt) BE32(point).
 * With attempt 0 this is exactly srv_ring.h's point position.
 */
uint64_t shard_point_hash(shard_id shard, uint32_t point, uint32_t attempt);

/*
 * How shard_ring_build() places the points; both are deterministic.
 *
 * SHARD_RING_BALANCED (what shard_map_create uses): the ring is cut into
 * P = shards * points equal slots and slot k (ending at
 * floor((k + 1) * 2^64 / P) - 1) goes to the k-th (shard, point) pair in
 * the order of shard_point_hash(shard, point, 0), ties broken by shard then
 * point. Every shard owns exactly `points` equal arcs, scattered around the
 * ring, so shares are exact. Random virtual points are off by about
 * 1/sqrt(points) (±12% at 64 points, up to ±30% in practice): the map
 * stores its points anyway, so like Cassandra's token allocation and Redis
 * Cluster's equal slots we choose balanced positions instead.
 *
 * SHARD_RING_HASHED: each point sits at shard_point_hash(shard, point, 0)
 * (srv_ring.h's ring). A collision is resolved deterministically: within a
 * run of equal hashes the pair that sorts first (lower shard, then lower
 * point) keeps it and the others retry with attempt + 1.
 */
enum shard_ring_layout {
    SHARD_RING_BALANCED = 0,
    SHARD_RING_HASHED = 1,
};

/*
 * Redis Cluster hash tags: if the key holds a '{' and, after the first '{',
 * a '}' with at least one byte between them, only the bytes between that
 * first '{' and the first '}' after it are hashed; otherwise the whole key.
 * Returns the length of the hashed part and stores its offset in *off.
 */
size_t shard_key_hashtag(const void *key, size_t len, size_t *off);
/* The ring position of a key: XXH3-64 (unseeded) of its hash tag part. */
uint64_t shard_key_hash(const void *key, size_t len);

/*
 * Builds the ring of `n_shards` shards with `points_per_shard` virtual points
 * each, laid out as `layout` says. RK_EINVAL: no shards, no points, a shard
 * id repeated or equal to SHARD_META_ID or SHARD_ID_NONE, more than
 * SHARD_MAX_POINTS points, or an unknown layout. RK_ENOMEM. On error *r is
 * empty.
 */
int shard_ring_build(struct shard_ring *r, const shard_id *shards,
                     uint32_t n_shards, uint32_t points_per_shard,
                     uint8_t layout);
/* RK_ENOMEM. dst must not hold points (it is overwritten). */
int shard_ring_copy(struct shard_ring *dst, const struct shard_ring *src);
void shard_ring_free(struct shard_ring *r);
bool shard_ring_equal(const struct shard_ring *a, const struct shard_ring *b);

/* Index of the point owning hash h; the ring must not be empty. O(log P). */
uint32_t shard_ring_find(const struct shard_ring *r, uint64_t h);
/* Owner of hash h, or SHARD_ID_NONE for an empty ring. */
shard_id shard_ring_owner(const struct shard_ring *r, uint64_t h);
/* Owner of a key (hash tags honoured), or SHARD_ID_NONE for an empty ring. */
shard_id shard_ring_lookup(const struct shard_ring *r, const void *key,
                           size_t len);

/*
 * The arcs `shard` owns, merged where adjacent and sorted by first, in a
 * malloc'd array (*out is NULL when n is 0). RK_ENOMEM.
 */
int shard_ring_arcs(const struct shard_ring *r, shard_id shard,
                    struct shard_arc **out, uint32_t *n);
/* The sum of the lengths of those arcs, as a fraction of the ring. */
double shard_ring_share(const struct shard_ring *r, shard_id shard);

/*
 * The arcs whose owner differs between rings a and b (both non-empty),
 * merged where adjacent with the same (from, to), sorted by first, in a
 * malloc'd array. RK_EINVAL (an empty ring), RK_ENOMEM.
 */
int shard_ring_diff(const struct shard_ring *a, const struct shard_ring *b,
                    struct shard_move **out, uint32_t *n);

/* ====================================================================== */
/* Shard map                                                              */
/* ====================================================================== */

enum shard_node_state {
    SHARD_NODE_ACTIVE = 1,   /* hosts replicas, receives new ones */
    SHARD_NODE_DRAINING = 2, /* alive, but its replicas move away */
    SHARD_NODE_REMOVED = 3,  /* gone for good (terminal); not alive */
};

struct shard_node {
    shard_node_id id;
    uint8_t state; /* enum shard_node_state */
    char client_addr[SHARD_ADDR_MAX];
    char peer_addr[SHARD_ADDR_MAX];
};

enum shard_state {
    SHARD_STATE_ACTIVE = 0,
    SHARD_STATE_SPLIT_DONOR = 1,     /* gives the arcs in map->moves */
    SHARD_STATE_SPLIT_RECIPIENT = 2, /* receives them */
};

struct shard_info {
    shard_id id;
    uint8_t state;        /* enum shard_state */
    shard_id split_peer;  /* the other side of a split, else SHARD_ID_NONE */
    shard_node_id leader; /* preferred leader (a voter), 0 if none */
    uint32_t n_voters;
    shard_node_id voters[SHARD_MAX_REPLICAS];
    uint32_t n_learners;
    shard_node_id learners[SHARD_MAX_REPLICAS];
};

struct shard_map {
    uint64_t cluster_id;
    uint64_t epoch;            /* bumped by every change */
    uint32_t replication;      /* R: voters per shard wanted */
    uint32_t points_per_shard; /* V used at creation (informational) */
    shard_id next_shard_id;    /* the id the next split gives out */
    struct shard_ring ring;
    uint32_t n_nodes;
    struct shard_node *nodes; /* sorted by id */
    uint32_t n_shards;
    struct shard_info *shards; /* sorted by id; shards[0] is the meta shard */
    uint32_t n_moves;
    struct shard_move *moves; /* arcs of splits in flight, sorted by first */
};

/* An empty map (no nodes, no shards, epoch 0); shard_map_free() is a no-op. */
void shard_map_init(struct shard_map *m);
void shard_map_free(struct shard_map *m);

/*
 * A fresh map at epoch 1: the given nodes (all must be ACTIVE, ids distinct
 * and non-zero), the meta shard 0 plus data shards 1..n_shards with
 * points_per_shard ring points each, and min(R, n_nodes) voters per shard
 * placed by the planner (balanced replicas and leaders). m must be empty or
 * freed. RK_EINVAL (bad counts, ids, states or addresses), RK_ENOMEM.
 */
int shard_map_create(struct shard_map *m, uint64_t cluster_id,
                     const struct shard_node *nodes, uint32_t n_nodes,
                     uint32_t n_shards, uint32_t replication,
                     uint32_t points_per_shard);

/* Deep copy into an empty or freed dst. RK_ENOMEM (dst left empty). */
int shard_map_copy(struct shard_map *dst, const struct shard_map *src);
/* Field by field equality (the order of voters and learners matters). */
bool shard_map_equal(const struct shard_map *a, const struct shard_map *b);
/*
 * Checks every structural invariant (sorted unique ids, known nodes, no
 * node twice in a shard, leader is a voter, ring strictly sorted and naming
 * data shards only, split records consistent). RK_EPROTO on violation.
 */
int shard_map_validate(const struct shard_map *m);

/* Lookups by id (binary search); NULL if unknown. */
const struct shard_node *shard_map_node(const struct shard_map *m,
                                        shard_node_id id);
const struct shard_info *shard_map_shard(const struct shard_map *m,
                                         shard_id id);

/*
 * The shards node `id` hosts (as voter or learner), in id order: the Raft
 * groups that node must run. Writes up to `cap` ids to out (which may be
 * NULL when cap is 0) and returns how many there are in all.
 */
uint32_t shard_map_node_shards(const struct shard_map *m, shard_node_id id,
                               shard_id *out, uint32_t cap);

/*
 * The shard that serves hash h / a key now: the ring owner, except inside
 * the arcs of a split in flight, which the donor serves until
 * shard_map_split_finish(). SHARD_ID_NONE if the ring is empty.
 */
shard_id shard_map_route_hash(const struct shard_map *m, uint64_t h);
shard_id shard_map_route(const struct shard_map *m, const void *key,
                         size_t len);

/* Adds an ACTIVE node. RK_EEXIST (id known, even if removed), RK_EINVAL
 * (id 0, state not ACTIVE, address not NUL-terminated or empty),
 * RK_ETOOLARGE (SHARD_MAX_NODES), RK_ENOMEM. */
int shard_map_node_add(struct shard_map *m, const struct shard_node *node);
/*
 * Moves a node to DRAINING or REMOVED (or back from DRAINING to ACTIVE).
 * The replicas it hosts stay until a plan moves them. RK_ENOTFOUND,
 * RK_EINVAL (bad state, or leaving REMOVED, which is terminal).
 */
int shard_map_node_set_state(struct shard_map *m, shard_node_id id,
                             uint8_t state);

/*
 * Starts splitting `donor`: a new shard (id next_shard_id, same voters and
 * preferred leader as the donor) takes about half of the donor's keyspace.
 * With two or more points the donor's points are split in two sets of about
 * equal arc length; a donor with a single point gets a new point in the
 * middle of its arc, owned by the recipient. The ring is changed at once and
 * the moving arcs are recorded in m->moves (the donor keeps serving them,
 * see shard_map_route_hash). *recipient gets the new id; if `moves` is not
 * NULL, a malloc'd copy of the moving arcs goes there.
 * RK_EUNKNOWNSHARD, RK_EINVAL (the meta shard, or an arc too short to
 * split), RK_EBUSY (donor already splitting), RK_ETOOLARGE (limits),
 * RK_ENOMEM (map unchanged on every error).
 */
int shard_map_split_begin(struct shard_map *m, shard_id donor,
                          shard_id *recipient, struct shard_move **moves,
                          uint32_t *n_moves);
/* The handoff is done: both shards become ACTIVE, the moves are dropped.
 * RK_EUNKNOWNSHARD, RK_EINVAL (donor is not splitting as a donor).
 * There is no abort: once the intent is in the map, any donor replica may
 * already have applied its SPLIT entry (keys moved into the recipient), and
 * the meta leader cannot know that none has; handing the arcs back would
 * route them to a donor that no longer holds their keys. A split that
 * cannot go on waits for its donor's quorum, like every write to it. */
int shard_map_split_finish(struct shard_map *m, shard_id donor);

/* ====================================================================== */
/* Placement planner                                                      */
/* ====================================================================== */

enum shard_step_kind {
    SHARD_STEP_ADD_LEARNER = 1,     /* node joins as a learner */
    SHARD_STEP_PROMOTE = 2,         /* learner becomes a voter */
    SHARD_STEP_REMOVE = 3,          /* voter or learner leaves */
    SHARD_STEP_TRANSFER_LEADER = 4, /* preferred leader becomes node */
};

struct shard_step {
    uint8_t kind; /* enum shard_step_kind */
    shard_id shard;
    shard_node_id node;
};

struct shard_plan {
    uint32_t n_steps;
    uint32_t cap;
    struct shard_step *steps;
    uint32_t n_moves;     /* replicas placed on a new node */
    uint32_t n_transfers; /* TRANSFER_LEADER steps */
    uint32_t n_stuck;     /* shards left alone: no live quorum now */
};

/* Name of a step kind ("ADD_LEARNER"), never NULL. */
const char *shard_step_kind_name(uint8_t kind);

/*
 * Whether a step may be applied to m now: the shard exists; ADD_LEARNER to
 * an ACTIVE node not in the shard; PROMOTE of a learner on an ACTIVE node;
 * REMOVE of a member, and of a voter only when it is not the preferred
 * leader and at least min(R, active nodes) voters remain (a move never
 * drops below the replication factor); TRANSFER_LEADER to a voter whose
 * node is not REMOVED. Every step needs a live quorum (a majority of the
 * voters on nodes not REMOVED) before and after. 0, RK_EUNKNOWNSHARD,
 * RK_ENOTFOUND (unknown node), RK_EEXIST (ADD_LEARNER of a member),
 * RK_EINVAL (not allowed in this state), RK_EUNAVAILABLE (quorum),
 * RK_ETOOLARGE (SHARD_MAX_REPLICAS).
 */
int shard_step_check(const struct shard_map *m, const struct shard_step *st);
/* shard_step_check(), then the change, epoch + 1. */
int shard_map_apply_step(struct shard_map *m, const struct shard_step *st);

/*
 * The steps that take m to a balanced placement over its ACTIVE nodes:
 * every shard gets min(R, active) voters on distinct active nodes, replicas
 * per active node and preferred leaders per active node each differ by at
 * most one, as few replicas as possible change node, and every prefix of
 * the plan passes shard_step_check() (per shard: add learner, promote,
 * then remove; the leader moves before its node leaves). The meta shard
 * is placed like any other. Shards without a live quorum are skipped and
 * counted in n_stuck. Overwrites *p (free an earlier plan first); on error
 * *p is empty. RK_EUNAVAILABLE (no active node), RK_ENOMEM.
 *
 * Cost: one pass over the shards for each node above its cap and for each
 * leader shift, O(nodes^2) for the co-hosting counts, and, rarely, an
 * augmenting path of O(nodes * shards * R); about 2 ms for 2001 shards on
 * 41 nodes (-O2).
 */
int shard_plan_compute(const struct shard_map *m, struct shard_plan *p);
void shard_plan_free(struct shard_plan *p);

/* Called after each applied step; a non-zero return stops the simulation. */
typedef int (*shard_step_cb)(const struct shard_map *m,
                             const struct shard_step *st, uint32_t i,
                             void *arg);
/*
 * Applies the plan's steps to m one by one, calling cb (if not NULL) after
 * each. Returns 0, the first step error, or cb's non-zero result; *done (if
 * not NULL) gets the number of steps applied.
 */
int shard_plan_simulate(struct shard_map *m, const struct shard_plan *p,
                        shard_step_cb cb, void *arg, uint32_t *done);

/* Load figures over the ACTIVE nodes, for balance checks and metrics. */
struct shard_balance {
    uint32_t n_active;
    uint32_t min_replicas, max_replicas; /* voters per active node */
    uint32_t min_leaders, max_leaders;   /* preferred leaders per node */
    uint32_t misplaced; /* voters on non-active nodes + missing voters */
};
void shard_map_balance(const struct shard_map *m, struct shard_balance *out);

/* ====================================================================== */
/* Codec                                                                  */
/* ====================================================================== */

#define SHARD_CODEC_VERSION 1u

/*
 * Compact binary form: "RKSM", BE16 version, BE16 0, the fields in
 * big-endian, and an XXH3-64 checksum of all of it. Encode writes
 * shard_map_encoded_size(m) bytes into buf. RK_EINVAL (map fails
 * shard_map_validate), RK_ETOOLARGE (cap too small).
 */
size_t shard_map_encoded_size(const struct shard_map *m);
int shard_map_encode(const struct shard_map *m, void *buf, size_t cap,
                     size_t *len);
/*
 * Decodes into an empty or freed m, checking every length against the
 * buffer, the checksum and shard_map_validate(). RK_EPROTO (garbage,
 * truncated, trailing bytes, bad checksum, invalid map), RK_EVERSION
 * (well-formed header of an unknown version), RK_ENOMEM. m is empty on
 * error.
 */
int shard_map_decode(struct shard_map *m, const void *buf, size_t len);

#endif
