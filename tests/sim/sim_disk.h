/* The simulator's view of one node's durable storage (raft_memlog). */
#ifndef SIM_DISK_H
#define SIM_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"

struct raft_memlog;

/* Everything a restarted node finds on its disk. */
struct sim_durable {
    struct raft_hard_state hs;
    struct raft_conf_state conf;
    struct raft_snapshot_meta snap;
};

/* A new empty log; NULL on allocation failure. */
struct raft_memlog *sim_disk_new(uint32_t snapshot_chunk);
void sim_disk_free(struct raft_memlog *d);
/*
 * Bootstraps an initial member the way TiKV does: the log starts with a
 * snapshot at index 1 (term 1) holding the bootstrap configuration and the
 * empty state-machine `image`. A node that joins later therefore always
 * learns the whole configuration from a snapshot, never by replaying CONF
 * entries onto an empty configuration. 0 or RK_E*.
 */
/* Durably records the bootstrap configuration alone (empty log). */
void sim_disk_set_conf(struct raft_memlog *d,
                       const struct raft_conf_state *conf);
int sim_disk_bootstrap(struct raft_memlog *d,
                       const struct raft_conf_state *conf, const void *image,
                       size_t len);
const struct raft_log_ops *sim_disk_ops(void);

/* Writes one ready batch (snapshot chunk, snapshot install, entries after
 * truncating a conflicting suffix, hard state, conf) and syncs it when the
 * core asks for a sync (rd->must_sync); what is not synced a crash loses. */
int sim_disk_persist(struct raft_memlog *d, const struct raft_ready *rd);
/* Loses everything not yet synced. */
void sim_disk_crash(struct raft_memlog *d);
void sim_disk_load(struct raft_memlog *d, struct sim_durable *out);
/* Stores a state-machine snapshot at meta->index and compacts the log. */
int sim_disk_snapshot(struct raft_memlog *d,
                      const struct raft_snapshot_meta *meta, const void *image,
                      size_t len);
/* The latest snapshot image (borrowed) or NULL. */
const void *sim_disk_snapshot_image(struct raft_memlog *d, size_t *len);

raft_index sim_disk_first(struct raft_memlog *d);
raft_index sim_disk_last(struct raft_memlog *d);
/* Last index of the synced (durable) log prefix. */
raft_index sim_disk_synced(struct raft_memlog *d);
/* 0 and *t, or RK_ECOMPACTED / RK_EUNAVAIL_LOG. */
int sim_disk_term(struct raft_memlog *d, raft_index i, raft_term *t);
/* Entry i (malloc'd block via *blk, free it) or an error. */
int sim_disk_entry(struct raft_memlog *d, raft_index i,
                   struct raft_entry **blk);

#endif
