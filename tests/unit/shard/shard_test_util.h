/* Helpers shared by the rk_shard unit tests: node lists and map invariants. */
#ifndef SHARD_TEST_UTIL_H
#define SHARD_TEST_UTIL_H

#include <stdio.h>
#include <string.h>

#include "shard.h"

/* Index of id in a small array, or -1. */
static inline int shard__find_id_test(const shard_node_id *ids, uint32_t n,
                                      shard_node_id id)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == id)
            return (int)i;
    return -1;
}

/* Node `id` with addresses 127.0.0.1:(7000 + id) and :(8000 + id). */
static inline struct shard_node test_node(shard_node_id id)
{
    struct shard_node n;
    memset(&n, 0, sizeof(n));
    n.id = id;
    n.state = SHARD_NODE_ACTIVE;
    snprintf(n.client_addr, sizeof(n.client_addr), "127.0.0.1:%u",
             (unsigned)(7000 + id));
    snprintf(n.peer_addr, sizeof(n.peer_addr), "127.0.0.1:%u",
             (unsigned)(8000 + id));
    return n;
}

/* Nodes first_id, first_id + 1, ... into out[0..n). */
static inline void test_nodes(struct shard_node *out, uint32_t n,
                              shard_node_id first_id)
{
    for (uint32_t i = 0; i < n; i++)
        out[i] = test_node(first_id + i);
}

/* Makes a small map: n nodes (ids 1..n), s data shards, R, V points. */
static inline int test_map(struct shard_map *m, uint32_t n, uint32_t s,
                           uint32_t r, uint32_t v)
{
    struct shard_node nodes[64];
    test_nodes(nodes, n, 1);
    return shard_map_create(m, 0xC1u, nodes, n, s, r, v);
}

#endif
