/* Versioned, checksummed, bounds-checked binary encoding of the shard map. */
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "rk_err.h"
#include "shard.h"

/*
 * Layout, version 1 (all integers big-endian):
 *
 *   "RKSM"  u16 version  u16 zero
 *   u64 cluster_id  u64 epoch  u32 replication  u32 points_per_shard
 *   u32 next_shard_id
 *   u32 n_nodes,  each: u64 id  u8 state  u16 len + client_addr
 *                                         u16 len + peer_addr
 *   u32 n_shards, each: u32 id  u8 state  u32 split_peer  u64 leader
 *                       u8 n_voters + u64 each  u8 n_learners + u64 each
 *   u32 n_points, each: u64 hash  u32 shard
 *   u32 n_moves,  each: u64 first  u64 last  u32 from  u32 to
 *   u64 XXH3-64 of every byte before it
 *
 * Decoding checks each count against the bytes left before allocating, so
 * a hostile length cannot make it allocate more than the input justifies.
 */

#define MAGIC        "RKSM"
#define HEADER_SIZE  8
#define TRAILER_SIZE 8
#define NODE_FIXED   13 /* id, state, two lengths */
#define SHARD_FIXED  19 /* id, state, peer, leader, two counts */
#define POINT_SIZE   12
#define MOVE_SIZE    24

/* ---------------------------------------------------------------------- */
/* Writer                                                                 */
/* ---------------------------------------------------------------------- */

struct wr {
    uint8_t *p;
};

static void w_u8(struct wr *w, uint8_t v)
{
    *w->p++ = v;
}

static void w_u16(struct wr *w, uint16_t v)
{
    w_u8(w, (uint8_t)(v >> 8));
    w_u8(w, (uint8_t)v);
}

static void w_u32(struct wr *w, uint32_t v)
{
    w_u16(w, (uint16_t)(v >> 16));
    w_u16(w, (uint16_t)v);
}

static void w_u64(struct wr *w, uint64_t v)
{
    w_u32(w, (uint32_t)(v >> 32));
    w_u32(w, (uint32_t)v);
}

static void w_str(struct wr *w, const char *s)
{
    size_t n = strlen(s);
    w_u16(w, (uint16_t)n);
    memcpy(w->p, s, n);
    w->p += n;
}

size_t shard_map_encoded_size(const struct shard_map *m)
{
    size_t n = HEADER_SIZE + 8 + 8 + 4 + 4 + 4 + 4 * 4 + TRAILER_SIZE;
    for (uint32_t i = 0; i < m->n_nodes; i++)
        n += NODE_FIXED + strnlen(m->nodes[i].client_addr, SHARD_ADDR_MAX) +
             strnlen(m->nodes[i].peer_addr, SHARD_ADDR_MAX);
    for (uint32_t i = 0; i < m->n_shards; i++)
        n += SHARD_FIXED +
             8 * (size_t)(m->shards[i].n_voters + m->shards[i].n_learners);
    n += (size_t)m->ring.n_points * POINT_SIZE;
    n += (size_t)m->n_moves * MOVE_SIZE;
    return n;
}

int shard_map_encode(const struct shard_map *m, void *buf, size_t cap,
                     size_t *len)
{
    if (shard_map_validate(m) != 0)
        return RK_EINVAL;
    size_t need = shard_map_encoded_size(m);
    if (cap < need)
        return RK_ETOOLARGE;
    struct wr w = {buf};
    memcpy(w.p, MAGIC, 4);
    w.p += 4;
    w_u16(&w, SHARD_CODEC_VERSION);
    w_u16(&w, 0);
    w_u64(&w, m->cluster_id);
    w_u64(&w, m->epoch);
    w_u32(&w, m->replication);
    w_u32(&w, m->points_per_shard);
    w_u32(&w, m->next_shard_id);
    w_u32(&w, m->n_nodes);
    for (uint32_t i = 0; i < m->n_nodes; i++) {
        const struct shard_node *n = &m->nodes[i];
        w_u64(&w, n->id);
        w_u8(&w, n->state);
        w_str(&w, n->client_addr);
        w_str(&w, n->peer_addr);
    }
    w_u32(&w, m->n_shards);
    for (uint32_t i = 0; i < m->n_shards; i++) {
        const struct shard_info *s = &m->shards[i];
        w_u32(&w, s->id);
        w_u8(&w, s->state);
        w_u32(&w, s->split_peer);
        w_u64(&w, s->leader);
        w_u8(&w, (uint8_t)s->n_voters);
        for (uint32_t j = 0; j < s->n_voters; j++)
            w_u64(&w, s->voters[j]);
        w_u8(&w, (uint8_t)s->n_learners);
        for (uint32_t j = 0; j < s->n_learners; j++)
            w_u64(&w, s->learners[j]);
    }
    w_u32(&w, m->ring.n_points);
    for (uint32_t i = 0; i < m->ring.n_points; i++) {
        w_u64(&w, m->ring.points[i].hash);
        w_u32(&w, m->ring.points[i].shard);
    }
    w_u32(&w, m->n_moves);
    for (uint32_t i = 0; i < m->n_moves; i++) {
        w_u64(&w, m->moves[i].first);
        w_u64(&w, m->moves[i].last);
        w_u32(&w, m->moves[i].from);
        w_u32(&w, m->moves[i].to);
    }
    size_t body = (size_t)(w.p - (uint8_t *)buf);
    w_u64(&w, XXH3_64bits(buf, body));
    *len = (size_t)(w.p - (uint8_t *)buf);
    return *len == need ? 0 : RK_EINVAL;
}

/* ---------------------------------------------------------------------- */
/* Reader                                                                 */
/* ---------------------------------------------------------------------- */

/* A cursor that turns every overrun into a sticky error. */
struct rd {
    const uint8_t *p;
    size_t left;
    bool bad;
};

static bool r_need(struct rd *r, size_t n)
{
    if (r->bad || r->left < n) {
        r->bad = true;
        return false;
    }
    return true;
}

static uint64_t r_uint(struct rd *r, int bytes)
{
    if (!r_need(r, (size_t)bytes))
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = (v << 8) | r->p[i];
    r->p += bytes;
    r->left -= (size_t)bytes;
    return v;
}

static void r_str(struct rd *r, char *dst)
{
    size_t n = (size_t)r_uint(r, 2);
    if (n >= SHARD_ADDR_MAX || !r_need(r, n)) {
        r->bad = true;
        dst[0] = '\0';
        return;
    }
    memcpy(dst, r->p, n);
    dst[n] = '\0';
    if (memchr(dst, '\0', n) != NULL)
        r->bad = true; /* an embedded NUL would not round-trip */
    r->p += n;
    r->left -= n;
}

/* A count of items each at least `unit` bytes long, checked against the
 * bytes left and a hard limit. */
static uint32_t r_count(struct rd *r, size_t unit, uint32_t limit)
{
    uint32_t n = (uint32_t)r_uint(r, 4);
    if (r->bad || n > limit || (size_t)n > r->left / unit) {
        r->bad = true;
        return 0;
    }
    return n;
}

static void r_ids(struct rd *r, shard_node_id *ids, uint32_t *n)
{
    *n = (uint32_t)r_uint(r, 1);
    if (*n > SHARD_MAX_REPLICAS) {
        r->bad = true;
        *n = 0;
        return;
    }
    for (uint32_t j = 0; j < *n; j++)
        ids[j] = r_uint(r, 8);
}

int shard_map_decode(struct shard_map *m, const void *buf, size_t len)
{
    shard_map_init(m);
    const uint8_t *b = buf;
    if (len < HEADER_SIZE + TRAILER_SIZE || memcmp(b, MAGIC, 4) != 0)
        return RK_EPROTO;
    uint16_t version = (uint16_t)(b[4] << 8 | b[5]);
    if (version != SHARD_CODEC_VERSION)
        return version == 0 ? RK_EPROTO : RK_EVERSION;
    size_t body = len - TRAILER_SIZE;
    struct rd t = {b + body, TRAILER_SIZE, false};
    if (r_uint(&t, 8) != XXH3_64bits(b, body))
        return RK_EPROTO;

    struct rd r = {b + 4 + 2, body - 6, false};
    int rc = RK_EPROTO;
    if (r_uint(&r, 2) != 0)
        goto err;
    m->cluster_id = r_uint(&r, 8);
    m->epoch = r_uint(&r, 8);
    m->replication = (uint32_t)r_uint(&r, 4);
    m->points_per_shard = (uint32_t)r_uint(&r, 4);
    m->next_shard_id = (uint32_t)r_uint(&r, 4);

    uint32_t n = r_count(&r, NODE_FIXED, SHARD_MAX_NODES);
    if (n > 0 && (m->nodes = calloc(n, sizeof(*m->nodes))) == NULL)
        goto err_nomem;
    m->n_nodes = n;
    for (uint32_t i = 0; i < n && !r.bad; i++) {
        struct shard_node *nd = &m->nodes[i];
        nd->id = r_uint(&r, 8);
        nd->state = (uint8_t)r_uint(&r, 1);
        r_str(&r, nd->client_addr);
        r_str(&r, nd->peer_addr);
    }

    n = r_count(&r, SHARD_FIXED, SHARD_MAX_SHARDS);
    if (n > 0 && (m->shards = calloc(n, sizeof(*m->shards))) == NULL)
        goto err_nomem;
    m->n_shards = n;
    for (uint32_t i = 0; i < n && !r.bad; i++) {
        struct shard_info *s = &m->shards[i];
        s->id = (uint32_t)r_uint(&r, 4);
        s->state = (uint8_t)r_uint(&r, 1);
        s->split_peer = (uint32_t)r_uint(&r, 4);
        s->leader = r_uint(&r, 8);
        r_ids(&r, s->voters, &s->n_voters);
        r_ids(&r, s->learners, &s->n_learners);
    }

    n = r_count(&r, POINT_SIZE, SHARD_MAX_POINTS);
    if (n > 0 && (m->ring.points = calloc(n, sizeof(*m->ring.points))) == NULL)
        goto err_nomem;
    m->ring.n_points = n;
    for (uint32_t i = 0; i < n && !r.bad; i++) {
        m->ring.points[i].hash = r_uint(&r, 8);
        m->ring.points[i].shard = (uint32_t)r_uint(&r, 4);
    }

    n = r_count(&r, MOVE_SIZE, SHARD_MAX_POINTS + 1);
    if (n > 0 && (m->moves = calloc(n, sizeof(*m->moves))) == NULL)
        goto err_nomem;
    m->n_moves = n;
    for (uint32_t i = 0; i < n && !r.bad; i++) {
        m->moves[i].first = r_uint(&r, 8);
        m->moves[i].last = r_uint(&r, 8);
        m->moves[i].from = (uint32_t)r_uint(&r, 4);
        m->moves[i].to = (uint32_t)r_uint(&r, 4);
    }

    if (r.bad || r.left != 0 || shard_map_validate(m) != 0)
        goto err;
    return 0;

err_nomem:
    rc = RK_ENOMEM;
err:
    shard_map_free(m);
    return rc;
}
