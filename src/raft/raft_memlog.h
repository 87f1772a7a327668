/* In-memory stable storage for the Raft core (tests, simulator, benchmark). */
#ifndef RAFT_MEMLOG_H
#define RAFT_MEMLOG_H

/*
 * A raft_memlog holds what a real node keeps on disk: the log (after the
 * latest snapshot), the hard state, the bootstrap/last configuration, the
 * latest snapshot (metadata + opaque state-machine bytes) and a staging area
 * for a snapshot being received in chunks.
 *
 * Durability model: every mutation is "written" at once but only becomes
 * durable with raft_memlog_sync(). raft_memlog_crash() simulates a power
 * loss: entries and hard state written since the last sync are lost (the
 * log falls back to the synced prefix; an unsynced truncation loses the
 * overwritten entries too, which is safe: they were never acknowledged).
 * Snapshots (create and install) are durable at once.
 *
 * raft_memlog_ops implements struct raft_log_ops with a struct raft_memlog *
 * as ctx. No function here asserts on bad arguments: they return RK_E*.
 */

#include "raft.h"

struct raft_memlog;

extern const struct raft_log_ops raft_memlog_ops;

/* Returns NULL on allocation failure. */
struct raft_memlog *raft_memlog_new(void);
void raft_memlog_free(struct raft_memlog *ml);

/* Appends n entries (consecutive indexes). If ents[0].index <= last index,
 * the stored suffix from that index is truncated first. RK_EINVAL if the
 * entries are not consecutive or leave a gap; RK_ECOMPACTED if they start at
 * or below the snapshot index; RK_ENOMEM. */
int raft_memlog_append(struct raft_memlog *ml, const struct raft_entry *ents,
                       uint32_t n);

void raft_memlog_set_hard_state(struct raft_memlog *ml,
                                const struct raft_hard_state *hs);
void raft_memlog_hard_state(const struct raft_memlog *ml,
                            struct raft_hard_state *out);
/* The configuration a node boots with (see struct raft_config.conf). */
void raft_memlog_set_conf(struct raft_memlog *ml,
                          const struct raft_conf_state *conf);
void raft_memlog_conf(const struct raft_memlog *ml,
                      struct raft_conf_state *out);

/* The state machine took a snapshot at `index` (must be stored: between the
 * snapshot index and the last index) holding `data` and configuration
 * `conf`: store it and compact the log up to it (entries <= index go).
 * RK_ESTALE if index is not newer than the current snapshot, RK_EUNAVAIL_LOG
 * if index is past the end. */
int raft_memlog_snapshot_create(struct raft_memlog *ml, raft_index index,
                                const struct raft_conf_state *conf,
                                const void *data, size_t len);
/* Current snapshot: meta (index 0 if none) and bytes (borrowed). */
void raft_memlog_snapshot(const struct raft_memlog *ml,
                          struct raft_snapshot_meta *meta, const void **data,
                          size_t *len);

/* Size of the chunks raft_memlog_ops.snapshot_chunk cuts (default 64 KiB;
 * 0 is taken as 1). */
void raft_memlog_set_chunk_size(struct raft_memlog *ml, uint32_t size);

/* Stages one received chunk (rd.snap_chunk). seq 0 starts a new staging;
 * other chunks must follow in order for the same snapshot (RK_EINVAL). */
int raft_memlog_stage_chunk(struct raft_memlog *ml,
                            const struct raft_snap_chunk *chunk);
/* Installs the completely staged snapshot described by meta (rd.snap_meta)
 * atomically: the whole log is discarded and the snapshot replaces the
 * current one. RK_EINVAL if nothing complete is staged for that meta. */
int raft_memlog_install_staged(struct raft_memlog *ml,
                               const struct raft_snapshot_meta *meta);

/* Everything written so far becomes durable. */
void raft_memlog_sync(struct raft_memlog *ml);
/* Loses everything not yet synced (see above); the staging area too. */
void raft_memlog_crash(struct raft_memlog *ml);

/* Convenience for drivers: persist one ready batch in the documented order
 * (snapshot chunk, snapshot install, entries, hard state, conf) and, if
 * rd->must_sync, sync. Returns the first error. */
int raft_memlog_persist_ready(struct raft_memlog *ml,
                              const struct raft_ready *rd);

/* Introspection for tests. */
raft_index raft_memlog_last_index(const struct raft_memlog *ml);
raft_index raft_memlog_first_index(const struct raft_memlog *ml);
raft_index raft_memlog_synced_index(const struct raft_memlog *ml);

#endif
