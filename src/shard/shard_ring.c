/* The XXH3-64 consistent-hash ring: point generation, hash tags, lookups, arcs
 * and ring diffs. */
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "rk_assert.h"
#include "rk_err.h"
#include "shard.h"

/* ---------------------------------------------------------------------- */
/* Hashing                                                                */
/* ---------------------------------------------------------------------- */

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

uint64_t shard_point_hash(shard_id shard, uint32_t point, uint32_t attempt)
{
    uint8_t buf[12];
    put_be32(buf, shard);
    put_be32(buf + 4, attempt);
    put_be32(buf + 8, point);
    return XXH3_64bits_withSeed(buf, sizeof(buf), SHARD_RING_SEED);
}

size_t shard_key_hashtag(const void *key, size_t len, size_t *off)
{
    const uint8_t *k = key;
    *off = 0;
    if (len == 0)
        return 0;
    /* Redis Cluster keyHashSlot(): the FIRST '{', then the first '}'
     * after it; an empty tag ("{}") means the whole key is hashed. */
    const uint8_t *open = memchr(k, '{', len);
    if (open == NULL)
        return len;
    size_t s = (size_t)(open - k) + 1;
    const uint8_t *close = memchr(k + s, '}', len - s);
    if (close == NULL || close == k + s)
        return len;
    *off = s;
    return (size_t)(close - (k + s));
}

uint64_t shard_key_hash(const void *key, size_t len)
{
    size_t off;
    size_t n = shard_key_hashtag(key, len, &off);
    return XXH3_64bits((const uint8_t *)key + off, n);
}

/* ---------------------------------------------------------------------- */
/* Building                                                               */
/* ---------------------------------------------------------------------- */

struct gen_point {
    uint64_t hash;
    shard_id shard;
    uint32_t point;
    uint32_t attempt;
};

static int cmp_gen(const void *a, const void *b)
{
    const struct gen_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    if (x->shard != y->shard)
        return x->shard < y->shard ? -1 : 1;
    return (x->point > y->point) - (x->point < y->point);
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

int shard_ring_build(struct shard_ring *r, const shard_id *shards,
                     uint32_t n_shards, uint32_t points_per_shard,
                     uint8_t layout)
{
    r->n_points = 0;
    r->points = NULL;
    if (n_shards == 0 || points_per_shard == 0 ||
        (layout != SHARD_RING_BALANCED && layout != SHARD_RING_HASHED) ||
        (uint64_t)n_shards * points_per_shard > SHARD_MAX_POINTS)
        return RK_EINVAL;

    /* Shard ids must be distinct data-shard ids. */
    shard_id *ids = malloc(n_shards * sizeof(*ids));
    if (ids == NULL)
        return RK_ENOMEM;
    memcpy(ids, shards, n_shards * sizeof(*ids));
    qsort(ids, n_shards, sizeof(*ids), cmp_u32);
    int rc = 0;
    for (uint32_t i = 0; i < n_shards; i++) {
        if (ids[i] == SHARD_META_ID || ids[i] == SHARD_ID_NONE ||
            (i > 0 && ids[i] == ids[i - 1]))
            rc = RK_EINVAL;
    }
    if (rc != 0) {
        free(ids);
        return rc;
    }

    uint32_t n = n_shards * points_per_shard;
    struct gen_point *g = malloc(n * sizeof(*g));
    struct shard_point *pts = malloc(n * sizeof(*pts));
    if (g == NULL || pts == NULL) {
        free(ids);
        free(g);
        free(pts);
        return RK_ENOMEM;
    }
    uint32_t k = 0;
    for (uint32_t i = 0; i < n_shards; i++) {
        for (uint32_t p = 0; p < points_per_shard; p++) {
            g[k] = (struct gen_point){shard_point_hash(ids[i], p, 0), ids[i], p,
                                      0};
            k++;
        }
    }
    free(ids);
    if (layout == SHARD_RING_BALANCED) {
        /* Equal slots, handed out in the order of the pairs' hashes. */
        qsort(g, n, sizeof(*g), cmp_gen);
        for (uint32_t i = 0; i < n; i++) {
            unsigned __int128 end = ((unsigned __int128)(i + 1) << 64) / n;
            pts[i] = (struct shard_point){(uint64_t)(end - 1), g[i].shard};
        }
        free(g);
        r->n_points = n;
        r->points = pts;
        return 0;
    }

    /*
     * Resolve collisions deterministically: within a run of equal hashes
     * the point that sorts first keeps its place and the others retry
     * with the next attempt number. A 64-bit collision is already rare;
     * 64 rounds in a row would mean a broken hash function.
     */
    bool clean = false;
    for (int round = 0; round < 64 && !clean; round++) {
        qsort(g, n, sizeof(*g), cmp_gen);
        clean = true;
        for (uint32_t i = 1; i < n; i++) {
            if (g[i].hash == g[i - 1].hash && (g[i].shard != g[i - 1].shard ||
                                               g[i].point != g[i - 1].point)) {
                g[i].attempt++;
                g[i].hash =
                    shard_point_hash(g[i].shard, g[i].point, g[i].attempt);
                clean = false;
            }
        }
    }
    RK_ASSERT(clean);
    for (uint32_t i = 0; i < n; i++)
        pts[i] = (struct shard_point){g[i].hash, g[i].shard};
    free(g);
    r->n_points = n;
    r->points = pts;
    return 0;
}

int shard_ring_copy(struct shard_ring *dst, const struct shard_ring *src)
{
    dst->n_points = 0;
    dst->points = NULL;
    if (src->n_points == 0)
        return 0;
    dst->points = malloc(src->n_points * sizeof(*dst->points));
    if (dst->points == NULL)
        return RK_ENOMEM;
    memcpy(dst->points, src->points, src->n_points * sizeof(*dst->points));
    dst->n_points = src->n_points;
    return 0;
}

void shard_ring_free(struct shard_ring *r)
{
    free(r->points);
    r->points = NULL;
    r->n_points = 0;
}

bool shard_ring_equal(const struct shard_ring *a, const struct shard_ring *b)
{
    if (a->n_points != b->n_points)
        return false;
    for (uint32_t i = 0; i < a->n_points; i++)
        if (a->points[i].hash != b->points[i].hash ||
            a->points[i].shard != b->points[i].shard)
            return false;
    return true;
}

/* ---------------------------------------------------------------------- */
/* Lookups                                                                */
/* ---------------------------------------------------------------------- */

uint32_t shard_ring_find(const struct shard_ring *r, uint64_t h)
{
    RK_ASSERT(r->n_points > 0);
    /* Lower bound: the first point with hash >= h, wrapping to 0. */
    uint32_t lo = 0, hi = r->n_points;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->points[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == r->n_points ? 0 : lo;
}

shard_id shard_ring_owner(const struct shard_ring *r, uint64_t h)
{
    if (r->n_points == 0)
        return SHARD_ID_NONE;
    return r->points[shard_ring_find(r, h)].shard;
}

shard_id shard_ring_lookup(const struct shard_ring *r, const void *key,
                           size_t len)
{
    return shard_ring_owner(r, shard_key_hash(key, len));
}

/* ---------------------------------------------------------------------- */
/* Arcs                                                                   */
/* ---------------------------------------------------------------------- */

/* Appends [first, last] to a growing array, merging with the previous arc
 * when they touch. The caller sized the array for the worst case. */
static void push_arc(struct shard_arc *a, uint32_t *n, uint64_t first,
                     uint64_t last)
{
    if (*n > 0 && a[*n - 1].last != UINT64_MAX && a[*n - 1].last + 1 == first) {
        a[*n - 1].last = last;
        return;
    }
    a[(*n)++] = (struct shard_arc){first, last};
}

int shard_ring_arcs(const struct shard_ring *r, shard_id shard,
                    struct shard_arc **out, uint32_t *n)
{
    *out = NULL;
    *n = 0;
    uint32_t owned = 0;
    for (uint32_t i = 0; i < r->n_points; i++)
        owned += r->points[i].shard == shard;
    if (owned == 0)
        return 0;
    /* At most one arc per point, plus one for the wrap-around piece. */
    struct shard_arc *a = malloc((owned + 1) * sizeof(*a));
    if (a == NULL)
        return RK_ENOMEM;
    uint32_t k = 0;
    const struct shard_point *p = r->points;
    uint32_t last = r->n_points - 1;
    /* In increasing order: [0, p0], then (p[i-1], p[i]], then the part of
     * point 0's arc after the last point. */
    if (p[0].shard == shard)
        push_arc(a, &k, 0, p[0].hash);
    for (uint32_t i = 1; i < r->n_points; i++)
        if (p[i].shard == shard)
            push_arc(a, &k, p[i - 1].hash + 1, p[i].hash);
    if (p[0].shard == shard && p[last].hash != UINT64_MAX)
        push_arc(a, &k, p[last].hash + 1, UINT64_MAX);
    *out = a;
    *n = k;
    return 0;
}

double shard_ring_share(const struct shard_ring *r, shard_id shard)
{
    struct shard_arc *a;
    uint32_t n;
    if (shard_ring_arcs(r, shard, &a, &n) != 0)
        return 0.0;
    double sum = 0.0;
    for (uint32_t i = 0; i < n; i++)
        sum += (double)(a[i].last - a[i].first) + 1.0;
    free(a);
    return sum / 18446744073709551616.0; /* 2^64 */
}

/* Appends a move, merging with the previous one when it continues it. */
static void push_move(struct shard_move *mv, uint32_t *n, uint64_t first,
                      uint64_t last, shard_id from, shard_id to)
{
    if (from == to)
        return;
    if (*n > 0) {
        struct shard_move *prev = &mv[*n - 1];
        if (prev->from == from && prev->to == to && prev->last != UINT64_MAX &&
            prev->last + 1 == first) {
            prev->last = last;
            return;
        }
    }
    mv[(*n)++] = (struct shard_move){first, last, from, to};
}

int shard_ring_diff(const struct shard_ring *a, const struct shard_ring *b,
                    struct shard_move **out, uint32_t *n)
{
    *out = NULL;
    *n = 0;
    if (a->n_points == 0 || b->n_points == 0)
        return RK_EINVAL;
    /* The union of both rings' boundaries, merged in order (both sorted).
     * Between two consecutive boundaries each ring has a single owner. */
    uint32_t cap = a->n_points + b->n_points;
    uint64_t *u = malloc(cap * sizeof(*u));
    struct shard_move *mv = malloc((cap + 1) * sizeof(*mv));
    if (u == NULL || mv == NULL) {
        free(u);
        free(mv);
        return RK_ENOMEM;
    }
    uint32_t i = 0, j = 0, k = 0;
    while (i < a->n_points || j < b->n_points) {
        uint64_t h;
        if (j == b->n_points ||
            (i < a->n_points && a->points[i].hash <= b->points[j].hash))
            h = a->points[i].hash;
        else
            h = b->points[j].hash;
        if (i < a->n_points && a->points[i].hash == h)
            i++;
        if (j < b->n_points && b->points[j].hash == h)
            j++;
        u[k++] = h;
    }
    uint32_t m = 0;
    /* [0, u0] and the tail after the last boundary both belong to the
     * owners of u0 (the first points of both rings). */
    push_move(mv, &m, 0, u[0], shard_ring_owner(a, u[0]),
              shard_ring_owner(b, u[0]));
    for (uint32_t x = 1; x < k; x++)
        push_move(mv, &m, u[x - 1] + 1, u[x], shard_ring_owner(a, u[x]),
                  shard_ring_owner(b, u[x]));
    if (u[k - 1] != UINT64_MAX)
        push_move(mv, &m, u[k - 1] + 1, UINT64_MAX, shard_ring_owner(a, u[0]),
                  shard_ring_owner(b, u[0]));
    free(u);
    if (m == 0) {
        free(mv);
        return 0;
    }
    *out = mv;
    *n = m;
    return 0;
}
