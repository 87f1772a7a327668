/* The meta shard's state machine: the epoch-versioned shard map and registry. */
#ifndef SRV_META_H
#define SRV_META_H

/*
 * The meta shard (shard 0) is a Raft group like the others. Its state
 * machine holds ONE record, the shard map (src/shard's struct shard_map,
 * shard_map_encode'd), stored in shard 0's KV space under SRV_META_KEY.
 * Every change is a compare-and-swap on that record's revision (the Raft
 * index that last wrote it), proposed by the meta leader: read the applied
 * map, change it with the src/shard functions (each bumps the epoch), CAS
 * it in. A CAS that lost a race (another change committed first, or an
 * earlier leader's change was not applied here yet) fails and is retried
 * on the new map, so changes are serialized by the log like commands of a
 * dedicated state machine, and are persisted, snapshotted and restored with
 * the meta group for free.
 *
 * Bootstrap: every founding node builds the same epoch-1 map from the
 * initial cluster (same placement as the groups it created), and uses it
 * until the meta group commits one; the first meta leader CASes it in
 * (expect absent). Every node hosting shard 0 reloads the record after each
 * apply of shard 0 (srv_meta_applied) and installs a newer epoch: routing,
 * WRONG_SHARD epochs, get-shard-map answers and peers follow it.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shard.h"

struct srv;
struct srv_config;
struct srv_waiter;
struct raft_conf_state;

#define SRV_META_KEY     "\xff" "ringkv/shard-map"
#define SRV_META_KEY_LEN (sizeof(SRV_META_KEY) - 1)

struct srv_meta;

/* Voters of `shard` in the bootstrap placement of the initial cluster:
 * min(3, n) consecutive members (in id order) from shard % n. */
void srv_meta_bootstrap_conf(const struct srv_config *c, uint64_t shard,
                             struct raft_conf_state *conf);

/* Builds the bootstrap map and loads the committed one if this node hosts
 * the meta shard. 0, RK_ENOMEM, RK_EINVAL (bad initial cluster), RK_ECORRUPT
 * (the stored record does not decode) with s->errmsg set. */
int srv_meta_init(struct srv *s);
void srv_meta_free(struct srv *s);

/* Writes the map to <data-dir>/shard-map (what a node without a meta
 * replica restarts from). 0 or RK_EIO / RK_ENOMEM (logged). */
int srv_meta_save(const struct srv_config *c, const struct shard_map *m);
/* Reads it back into an empty m. RK_ENOTFOUND (absent), RK_EIO, RK_EPROTO
 * (not a map), RK_ENOMEM. */
int srv_meta_read_file(const struct srv_config *c, struct shard_map *m);
/* Registers this node with the cluster at cfg->join (MemberAdd through the
 * meta leader, following NOT_LEADER hints), fetches the map and saves it;
 * blocking, bounded (start-up only). Sets s->cluster_id. 0, or
 * RK_EUNAVAILABLE / RK_ETIMEDOUT / RK_EINVAL with s->errmsg set. */
int srv_meta_join(struct srv *s);

/* The meta leader's own change (rebalancer): CAS `next` in, one at a time.
 * RK_EBUSY (one in flight, or no record yet), RK_ENOTLEADER, ... */
int srv_meta_propose_own(struct srv *s, const struct shard_map *next);

/* Shard 0 applied entries (or installed a snapshot): reload the record. */
void srv_meta_applied(struct srv *s);
/* Once per tick: the meta leader's duties (store the bootstrap map, record
 * client addresses learned from peer handshakes). */
void srv_meta_tick(struct srv *s);

/* The map in use (never NULL) and its epoch. */
const struct shard_map *srv_meta_map(const struct srv *s);
uint64_t srv_meta_epoch(const struct srv *s);
/* True once the map in use was read from the meta group. */
bool srv_meta_committed(const struct srv *s);
/* True once the map came from the meta group (its record, a fetch, or the
 * saved copy), not only from the bootstrap flags: replicas follow it. */
bool srv_meta_trusted(const struct srv *s);
/* True when this node's map is known to be current: its meta replica
 * applied everything it knows committed, or (without one) a meta replica
 * answered a fetch lately. A restarted node's saved map may be old: shard
 * leaders must not drive membership back toward it. */
bool srv_meta_fresh(struct srv *s);
/* The data shard serving a key (SHARD_ID_NONE if the ring is empty). */
uint32_t srv_meta_route(const struct srv *s, const void *key, size_t len);
/* A node hosting `shard` (the preferred leader first), 0 if none. */
uint64_t srv_meta_shard_hint(const struct srv *s, uint64_t shard);

/*
 * Registry changes from a client (MemberAdd / MemberRemove with shard 0),
 * proposed as a CAS on the meta group; w->cb runs when it is applied (the
 * stor_result's status is RK_ECASMISMATCH if the map changed meanwhile:
 * answer UNAVAILABLE, the caller retries). *epoch gets the epoch the change
 * creates. Errors (w->cb not called): RK_ENOTLEADER (not the meta leader),
 * RK_EEXIST (id taken), RK_EINVAL (bad or unknown id, address, or state)
 * with a reason in errmsg (RK_ERRMSG_SIZE bytes), or srv_group_propose's.
 * node_remove of a node hosting replicas marks it DRAINING (the rebalancer
 * moves them away, then marks it REMOVED), else REMOVED at once; of a node
 * DRAINING already it returns SRV_META_ALREADY.
 * node_add returns SRV_META_ALREADY (nothing proposed) when the same node
 * (id and peer address) is registered already: a retried join.
 */
#define SRV_META_ALREADY 1 /* node_add: registered before (same peer) */
int srv_meta_node_add(struct srv *s, uint64_t id, const char *peer_addr,
                      const char *client_addr, struct srv_waiter *w,
                      uint64_t timeout_ms, uint64_t *epoch, char *errmsg);
int srv_meta_node_remove(struct srv *s, uint64_t id, struct srv_waiter *w,
                         uint64_t timeout_ms, uint64_t *epoch, char *errmsg);

/*
 * Shard split (srv_split.c drives it). Begin (finish false): `donor`
 * becomes SPLIT_DONOR and a new shard (same voters, *recipient gets its
 * id) SPLIT_RECIPIENT taking about half of its ring arcs, which the donor
 * keeps serving until its log's SPLIT entry. Refused while another split
 * is in flight, or the donor has learners (a move), RK_EBUSY; RK_EINVAL
 * (meta shard, unknown shard, arc too short) with errmsg. A donor already
 * splitting returns SRV_META_ALREADY with its recipient.
 * Finish (finish true, *recipient given): both become ACTIVE, the ring
 * points move for good; SRV_META_ALREADY if that split is not in flight
 * (done before). Otherwise like srv_meta_node_add.
 */
int srv_meta_split(struct srv *s, uint32_t donor, bool finish,
                   uint32_t *recipient, struct srv_waiter *w,
                   uint64_t timeout_ms, uint64_t *epoch, char *errmsg);
/* The meta leader's own split finish (no client waits): 0 or RK_EBUSY, .. */
int srv_meta_split_finish_own(struct srv *s, uint32_t donor,
                              uint32_t recipient);

#endif
