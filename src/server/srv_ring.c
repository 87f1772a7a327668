/* Key -> shard routing: builds and searches the XXH3-64 hash ring. */
#include "srv_ring.h"

#include <stdlib.h>

#include <xxhash.h>

#include "rk_assert.h"
#include "rk_err.h"

static int cmp_point(const void *a, const void *b)
{
    const struct srv_ring_point *x = a, *y = b;
    if (x->hash != y->hash)
        return x->hash < y->hash ? -1 : 1;
    return x->shard < y->shard ? -1 : x->shard > y->shard;
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

int srv_ring_init(struct srv_ring *r, uint32_t n_shards, uint32_t vnodes)
{
    r->points = NULL;
    r->n_points = 0;
    if (n_shards == 0 || vnodes == 0 ||
        (uint64_t)n_shards * vnodes > (1u << 24))
        return RK_EINVAL;
    uint32_t n = n_shards * vnodes;
    struct srv_ring_point *pts = calloc(n, sizeof(*pts));
    if (pts == NULL)
        return RK_ENOMEM;
    uint32_t k = 0;
    for (uint32_t s = 1; s <= n_shards; s++) {
        for (uint32_t v = 0; v < vnodes; v++) {
            uint8_t buf[12] = {0};
            put_be32(buf, s);
            put_be32(buf + 8, v);
            pts[k].hash = XXH3_64bits_withSeed(buf, sizeof(buf),
                                               SRV_RING_SEED);
            pts[k].shard = s;
            k++;
        }
    }
    qsort(pts, n, sizeof(*pts), cmp_point);
    r->n_shards = n_shards;
    r->vnodes = vnodes;
    r->n_points = n;
    r->points = pts;
    return 0;
}

void srv_ring_free(struct srv_ring *r)
{
    free(r->points);
    r->points = NULL;
    r->n_points = 0;
}

uint64_t srv_ring_hash(const void *key, size_t len)
{
    return XXH3_64bits(key, len);
}

uint32_t srv_ring_lookup(const struct srv_ring *r, const void *key,
                         size_t len)
{
    RK_ASSERT(r->n_points > 0);
    uint64_t h = srv_ring_hash(key, len);
    /* First point with hash >= h; wrap to the first point. */
    uint32_t lo = 0, hi = r->n_points;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (r->points[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == r->n_points)
        lo = 0;
    return r->points[lo].shard;
}
