/* Key -> shard routing for ringkvd: the shard module's consistent-hash ring. */
#ifndef SRV_RING_H
#define SRV_RING_H

/*
 * Routing now follows the meta shard's map (srv_meta_route); this ring is
 * the bootstrap layout that map starts from. Every node builds the same
 * ring from the shard count alone: data shards 1..n with `vnodes`
 * points each in src/shard's SHARD_RING_BALANCED layout (exactly equal
 * shares, deterministic), keys hashed with shard_key_hash (XXH3-64, Redis
 * hash tags honoured), so a node and a client holding the map's points
 * route every key the same way.
 */

#include <stddef.h>
#include <stdint.h>

#include "shard.h"

#define SRV_RING_SEED SHARD_RING_SEED
#define SRV_RING_DEFAULT_VNODES 64

struct srv_ring_point {
    uint64_t hash;
    uint32_t shard;
};

struct srv_ring {
    uint32_t n_shards;
    uint32_t vnodes;
    uint32_t n_points;
    struct srv_ring_point *points; /* sorted by hash (the map's points) */
    struct shard_ring ring;
};

/* Builds the ring of shards 1..n_shards. RK_EINVAL (n or vnodes is 0, or
 * too many points) or RK_ENOMEM. */
int srv_ring_init(struct srv_ring *r, uint32_t n_shards, uint32_t vnodes);
void srv_ring_free(struct srv_ring *r);

/* The 64-bit ring position of a key. */
uint64_t srv_ring_hash(const void *key, size_t len);
/* The shard owning a key (1..n_shards). */
uint32_t srv_ring_lookup(const struct srv_ring *r, const void *key,
                         size_t len);

#endif
