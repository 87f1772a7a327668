/* Fuzz entry point of rk_shard: decoder, encoder and planner on arbitrary maps.
 */
#include "shard_fuzz.h"

#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "rk_assert.h"
#include "rk_err.h"
#include "shard.h"

static bool quorum(const struct shard_map *m, const struct shard_info *s)
{
    uint32_t live = 0;
    for (uint32_t j = 0; j < s->n_voters; j++) {
        const struct shard_node *n = shard_map_node(m, s->voters[j]);
        live += n != NULL && n->state != SHARD_NODE_REMOVED;
    }
    return 2 * live > s->n_voters;
}

static int after_step(const struct shard_map *m, const struct shard_step *st,
                      uint32_t i, void *arg)
{
    (void)i;
    (void)arg;
    RK_ASSERT(shard_map_validate(m) == 0);
    RK_ASSERT(quorum(m, shard_map_shard(m, st->shard)));
    return 0;
}

int shard_fuzz_map(const uint8_t *data, size_t len)
{
    /* Bound the work per input: the planner is not what a fuzzer should
     * spend its time on for huge maps. */
    if (len > (1u << 20))
        return 0;
    uint8_t *buf = malloc(len + 8);
    RK_ASSERT(buf != NULL);
    if (len > 0)
        memcpy(buf, data, len);
    uint64_t h = XXH3_64bits(buf, len);
    for (int i = 0; i < 8; i++)
        buf[len + (size_t)i] = (uint8_t)(h >> (56 - 8 * i));

    struct shard_map m;
    int rc = shard_map_decode(&m, buf, len + 8);
    RK_ASSERT(rc == 0 || rc == RK_EPROTO || rc == RK_EVERSION ||
              rc == RK_ENOMEM);
    if (rc != 0) {
        RK_ASSERT(m.nodes == NULL && m.shards == NULL && m.moves == NULL);
        free(buf);
        return 0;
    }

    /* Canonical form: encoding gives back the same bytes. */
    size_t size = shard_map_encoded_size(&m), out_len = 0;
    RK_ASSERT(size == len + 8);
    uint8_t *out = malloc(size);
    RK_ASSERT(out != NULL);
    RK_ASSERT(shard_map_encode(&m, out, size, &out_len) == 0);
    RK_ASSERT(out_len == size && memcmp(out, buf, size) == 0);
    free(out);
    free(buf);

    /* Lookups never fail on a valid map. */
    for (uint32_t i = 0; i < m.ring.n_points; i += 1 + m.ring.n_points / 8) {
        shard_id s = shard_map_route_hash(&m, m.ring.points[i].hash);
        RK_ASSERT(shard_map_shard(&m, s) != NULL);
    }

    /* The planner on whatever valid map this is. */
    if (m.n_shards <= 512 && m.n_nodes <= 64) {
        struct shard_plan p;
        rc = shard_plan_compute(&m, &p);
        RK_ASSERT(rc == 0 || rc == RK_EUNAVAILABLE);
        if (rc == 0) {
            uint32_t done = 0;
            rc = shard_plan_simulate(&m, &p, after_step, NULL, &done);
            RK_ASSERT(rc == 0 && done == p.n_steps);
            if (p.n_stuck == 0) {
                struct shard_balance b;
                shard_map_balance(&m, &b);
                RK_ASSERT(b.misplaced == 0);
                RK_ASSERT(b.max_replicas - b.min_replicas <= 1);
                RK_ASSERT(b.max_leaders - b.min_leaders <= 1);
            }
            shard_plan_free(&p);
        }
    }
    shard_map_free(&m);
    return 1;
}
