/* Private helpers shared by the files of src/shard (not part of the API). */
#ifndef SHARD_INT_H
#define SHARD_INT_H

#include <stdint.h>

#include "shard.h"

/* A node hosts live replicas unless it was removed. */
static inline bool shard__node_live(const struct shard_map *m, shard_node_id id)
{
    const struct shard_node *n = shard_map_node(m, id);
    return n != NULL && n->state != SHARD_NODE_REMOVED;
}

/* Index of id in a small array, or -1. */
static inline int shard__find_id(const shard_node_id *ids, uint32_t n,
                                 shard_node_id id)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == id)
            return (int)i;
    return -1;
}

/* Mutable lookup of a shard record (binary search); NULL if unknown. */
struct shard_info *shard__shard_mut(struct shard_map *m, shard_id id);

/*
 * Computes the balanced target placement of m over its ACTIVE nodes:
 * voters[s * SHARD_MAX_REPLICAS + j] for j < *r_eff, and leaders[s], for
 * the shard m->shards[s]. Current voters are kept where the balance
 * allows. RK_EUNAVAILABLE (no active node), RK_ENOMEM.
 */
int shard__plan_target(const struct shard_map *m, shard_node_id *voters,
                       shard_node_id *leaders, uint32_t *r_eff);

#endif
