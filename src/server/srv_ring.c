/* Key -> shard routing for ringkvd: builds the balanced ring, looks keys up. */
#include "srv_ring.h"

#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "rk_err.h"

int srv_ring_init(struct srv_ring *r, uint32_t n_shards, uint32_t vnodes)
{
    memset(r, 0, sizeof(*r));
    if (n_shards == 0 || vnodes == 0 ||
        (uint64_t)n_shards * vnodes > SHARD_MAX_POINTS)
        return RK_EINVAL;
    shard_id *ids = malloc(n_shards * sizeof(*ids));
    if (ids == NULL)
        return RK_ENOMEM;
    for (uint32_t i = 0; i < n_shards; i++)
        ids[i] = i + 1;
    int rv = shard_ring_build(&r->ring, ids, n_shards, vnodes,
                              SHARD_RING_BALANCED);
    free(ids);
    if (rv != 0)
        return rv;
    r->points = calloc(r->ring.n_points, sizeof(*r->points));
    if (r->points == NULL) {
        shard_ring_free(&r->ring);
        return RK_ENOMEM;
    }
    for (uint32_t i = 0; i < r->ring.n_points; i++) {
        r->points[i].hash = r->ring.points[i].hash;
        r->points[i].shard = r->ring.points[i].shard;
    }
    r->n_points = r->ring.n_points;
    r->n_shards = n_shards;
    r->vnodes = vnodes;
    return 0;
}

void srv_ring_free(struct srv_ring *r)
{
    free(r->points);
    r->points = NULL;
    r->n_points = 0;
    shard_ring_free(&r->ring);
}

uint64_t srv_ring_hash(const void *key, size_t len)
{
    return shard_key_hash(key, len);
}

uint32_t srv_ring_lookup(const struct srv_ring *r, const void *key,
                         size_t len)
{
    RK_ASSERT(r->n_points > 0);
    return shard_ring_lookup(&r->ring, key, len);
}
