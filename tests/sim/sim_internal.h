/* Module-private pieces shared by the simulator's own files. */
#ifndef SIM_INTERNAL_H
#define SIM_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "sim.h"

#define SIM_CLIENT_TIMEOUT_MS 1500
#define SIM_SNAP_PAD          96 /* filler so that snapshots span several chunks */
/* Snapshot image: magic, applied index, registers, filler. */
#define SIM_IMAGE_SIZE (8 + 8 + 8 * SIM_KEYS + SIM_SNAP_PAD)

/* sim_cluster.c: scheduling and the seeded PRNG. */
void sim__schedule(struct sim *s, uint64_t delay, uint8_t kind, int node,
                   uint64_t arg, struct raft_msg *msg);
uint64_t sim__rand_range(struct sim *s, uint64_t lo, uint64_t hi);
bool sim__chance(struct sim *s, double p);
/* Slot of node id, or -1. */
int sim__slot_of(const struct sim *s, raft_id id);

/* sim_net.c */
void sim__trace_msg(struct sim *s, const char *what, const struct raft_msg *m);
void sim__send_msg(struct sim *s, int from, const struct raft_msg *m);

/* sim_node.c */
void sim__image_encode(const struct sim_node *n, uint8_t *out);
int sim__image_decode(const void *buf, size_t len, raft_index *index,
                      int64_t kv[SIM_KEYS]);
int sim__start_node(struct sim *s, int i, const struct raft_conf_state *boot);
void sim__handle_ready(struct sim *s, int i);
void sim__on_disk_done(struct sim *s, int i);
void sim__disk_fault(struct sim *s, int i);
/* Records node i's synced index under its durable term (after a write). */
void sim__note_synced(struct sim *s, int i);

/* sim_workload.c */
void sim__on_client(struct sim *s, int c);
void sim__client_done(struct sim *s, int c, uint8_t status, int64_t result);
void sim__clients_lost(struct sim *s, int i);
void sim__serve_reads(struct sim *s, int i);
void sim__clients_on_apply(struct sim *s, int i, raft_index index,
                           uint64_t op_id, bool cas_ok, int64_t result);

/* sim_nemesis.c */
int sim__find_leader(struct sim *s);
int sim__count_down(const struct sim *s);
void sim__on_nemesis(struct sim *s);
void sim__nemesis_on_commit(struct sim *s, int l);

#endif
