/* Key -> shard routing: a minimal XXH3-64 consistent-hash ring. */
#ifndef SRV_RING_H
#define SRV_RING_H

/*
 * Kept behind this small interface on purpose: the sharding work (src/shard)
 * will replace it with the epoch-versioned map of DESIGN.md §4. Data shards
 * are numbered 1..n (shard 0 is the meta shard and owns no keys). Each shard
 * owns `vnodes` points: XXH3-64 of the 12-byte string (shard, vnode) in
 * big-endian with seed SRV_RING_SEED. A key belongs to the shard owning the
 * first point at or after XXH3-64(key) (wrapping), so every node that knows
 * the shard count and vnode count routes every key the same way.
 */

#include <stddef.h>
#include <stdint.h>

#define SRV_RING_SEED 0x72696e676b76ull /* "ringkv" */
#define SRV_RING_DEFAULT_VNODES 64

struct srv_ring_point {
    uint64_t hash;
    uint32_t shard;
};

struct srv_ring {
    uint32_t n_shards;
    uint32_t vnodes;
    uint32_t n_points;
    struct srv_ring_point *points; /* sorted by hash, then shard */
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
