/* ringkvd internals: the node object, hosted Raft groups and their waiters. */
#ifndef SRV_H
#define SRV_H

/*
 * One struct srv per process. Everything is owned by the loop thread except
 * the storage thread's completion hand-off (srv->done_mu).
 *
 * The cycle of one group (etcd's RawNode with asynchronous storage writes):
 *
 *   flush hook (every loop iteration, srv_group_flush):
 *     batched ReadIndex for queued reads          raft_read_index
 *     raft_ready(g) -> send rd.msgs now           (leader appends in
 *                                                  parallel with its sync)
 *                   -> rd's log/hs/conf/snapshot   into THE batch
 *                   -> rd.committed                stor_batch_apply (same txn)
 *     one stor_batch_submit for all groups
 *   storage thread: one write txn, one sync -> uv_async_send
 *   completion (on_flush_done, in submission order):
 *     send rd.msgs_after_sync, answer proposals from the apply results,
 *     raft_advance, serve reads whose index is applied
 *
 * A group has at most one ready outstanding (g->busy); the other groups keep
 * gathering the next batch while one syncs.
 */

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "raft.h"
#include "rk_buf.h"
#include "srv_config.h"
#include "srv_loop.h"
#include "srv_meta.h"
#include "srv_metrics.h"
#include "srv_peer.h"
#include "srv_ring.h"
#include "stor.h"

struct srv;
struct srv_group;
struct srv_rebal;
struct srv_splits;

/* A client request waiting on Raft: a proposal to be applied, or a read to
 * become safe. The owner (srv_client.c) embeds it. */
struct srv_waiter;
/* status: 0 = done (res is the apply result for a proposal, NULL for a
 * read: the read may now be served from local state), or RK_E* (e.g.
 * RK_ENOTLEADER, RK_ETIMEDOUT, RK_EFAILSTOP). */
typedef void (*srv_waiter_cb)(struct srv_waiter *w, int status,
                              const struct stor_result *res);

struct srv_waiter {
    struct srv_waiter *next;
    struct srv_waiter *prev;
    srv_waiter_cb cb;
    uint64_t deadline_ms;
    /* proposals */
    raft_index index;
    raft_term term;
    /* reads */
    uint64_t ctx;
    raft_index read_index;
};

/* An intrusive doubly-linked list of waiters. */
struct srv_wlist {
    struct srv_waiter *head, *tail;
    uint32_t n;
};

struct srv_group {
    uint64_t shard;
    struct srv *srv;
    struct raft_node *raft;
    struct stor_shard *ss;
    struct raft_tracer tracer;

    bool busy;            /* rd is in a batch not yet completed */
    struct raft_ready rd; /* valid while busy */
    uint32_t res_first;   /* its apply results in the batch */
    uint32_t n_res;

    raft_index applied;   /* applied index, as durable in storage */
    raft_index compacted; /* last compaction target handed to storage */
    raft_index next_expire; /* applied index of the next session expiry */
    raft_term term;       /* last seen term */
    raft_id leader;
    uint8_t role;

    bool quiesced;
    uint32_t idle_ticks;

    struct srv_wlist proposals;  /* waiting for their index to apply */
    struct srv_wlist read_queue; /* waiting for the next ReadIndex round */
    struct srv_wlist lease_queue; /* lease reads waiting for the flush */
    uint32_t awake_ticks;         /* ticks since it last left quiescence */
    struct srv_wlist reads;      /* in a round (ctx) or waiting to apply */
    uint64_t next_read_ctx;

    struct srv_group *flush_next; /* in the flush being gathered */

    /* Splits (srv_split.c): the arcs of ring hashes this shard gave away,
     * from its applied record plus every SPLIT entry handed to storage (a
     * fence: requests in them are refused from the moment the split may
     * be visible in storage, before the group learns it was applied). */
    struct stor_split_arc *moved;
    uint32_t n_moved;
    uint64_t split_next_ms; /* donor leader: next SPLIT proposal */
    uint64_t size_next_ms;  /* leader: next size check (auto split) */
    bool auto_off;          /* a split would not divide its data: stop */
};

/* A gathered batch: the groups whose ready it carries. */
struct srv_flush {
    struct srv_flush *next;
    struct srv *srv;
    struct stor_batch *batch; /* NULL when nothing had to be written */
    struct srv_group **groups;
    uint32_t n_groups;
    uint32_t cap_groups;
    bool submitted; /* handed to the storage thread (else still open) */
    bool applied;   /* apply results ready (before the sync, see stor.h) */
    bool lazy;      /* ...and nothing in it needs durability */
    bool answered;  /* proposals answered from them */
    /* A lazy flush is released once applied: its readies are handled (acks
     * sent, raft_advance) and its groups may join later flushes; only what
     * readers see (g->applied) waits for the done. */
    bool released;
    /* Never released: it applies to the meta shard, installs a snapshot or
     * applies a split, whose effects (the node's map, a new group opened
     * from storage) must be visible in storage (its done cb) before anyone
     * is answered or the group advances. */
    bool no_release;
    struct srv_visible {
        raft_index applied;
        bool meta; /* the meta shard applied something */
    } *visible; /* released: per group, what readers see once done */
    bool done;
    int status;
    uint64_t started_us; /* submission time */
};

struct srv {
    struct srv_config *cfg;
    struct srv_loop loop;
    struct stor *stor;
    struct srv_peers peers;
    bool peers_started;
    struct srv_http http;
    bool http_started;
    struct srv_metrics metrics;
    struct srv_ring ring;
    uint64_t cluster_id;
    uint32_t n_data_shards;
    struct srv_meta *meta; /* the shard map (srv_meta.c) */
    struct srv_rebal *rebal; /* srv_rebalance.c's state */
    struct srv_splits *splits; /* srv_split.c's state */

    struct srv_group **groups; /* indexed by shard id, NULL if not hosted */
    uint32_t groups_cap;
    uint32_t n_groups;
    uint32_t election_ticks, heartbeat_ticks;

    /* Flushes submitted (or empty and waiting their turn), oldest first. */
    struct srv_flush *flush_head, *flush_tail;
    uint32_t flushes_in_flight;
    pthread_mutex_t done_mu;
    uv_async_t done_async;
    struct rk_buf wire_out; /* the peer frame being encoded (send_run) */
    bool done_async_open;

    /* Peer liveness: last time (ms) anything arrived from each node. */
    uint64_t peer_last_heard[SRV_MAX_NODES + 1];
    uint64_t peer_ids[SRV_MAX_NODES + 1];

    bool failstop;
    int failstop_code;
    bool stopping;

    struct srv_clients *clients;
    char errmsg[RK_ERRMSG_SIZE];
};

/* ------------------------------------------------------------- srv_node.c */

/* Opens (or bootstraps) the data dir, creates the groups, binds listeners.
 * Returns 0 or an RK_E* code with srv->errmsg saying what is wrong. */
int srv_init(struct srv *s, struct srv_config *cfg);
/* Runs the loop until SIGTERM/SIGINT; then closes everything. */
int srv_run(struct srv *s);
/* Frees what srv_init built (after srv_run returned, or after a failed
 * srv_init). */
void srv_fini(struct srv *s);

/* Completes every submitted flush (blocking the loop meanwhile): after it
 * no batch is in flight, so stor_batch_commit may run. */
void srv_wait_flushes(struct srv *s);

/* ------------------------------------------------------- srv_rebalance.c */

/* Once per tick: create and drop local replicas as the map says, drive the
 * Raft membership of the groups this node leads toward the map, and on the
 * meta leader, advance the placement plan one shard at a time. */
void srv_rebalance_tick(struct srv *s);
/* Moves in flight as seen by this node (0 or 1 on the meta leader). */
uint32_t srv_rebalance_moves(const struct srv *s);
void srv_rebalance_free(struct srv *s);

/* A node hosting `shard` (from the bootstrap placement) to send a client
 * to when this node does not host it; 0 if none is known. */
uint64_t srv_shard_hint(struct srv *s, uint64_t shard);
/* True if node `id` is this node, or its peer connection is up and it was
 * heard from within an election timeout. */
bool srv_node_alive(struct srv *s, uint64_t id);
/* Client address of a node ("host:port"), "" if unknown. */
const char *srv_node_client_addr(struct srv *s, uint64_t id);

/* Makes room in s->groups for `shard`. RK_ENOMEM. */
int srv_groups_grow(struct srv *s, uint32_t shard);

/* ---------------------------------------------------------- srv_split.c */

/* The donor's leader proposes the SPLIT entry the map asks for and, once
 * applied here, asks the meta leader to switch the map; with
 * --split-threshold-bytes, leaders ask for splits of big shards. */
void srv_split_tick(struct srv *s);
void srv_split_free(struct srv *s);
/* Group open: the arcs the shard gave away (its applied record). */
int srv_split_load(struct srv_group *g);
/* Committed entries handed to storage: SPLIT entries extend the fence.
 * True when there was one. */
bool srv_split_gather(struct srv_group *g, const struct raft_entry *ents,
                      uint32_t n);
/* After a completed batch that applied a SPLIT or installed a snapshot:
 * reload the record, start the recipient groups storage now holds. */
void srv_split_completed(struct srv_group *g);
/* True if the key's arc was given away by g's shard (answer WRONG_SHARD). */
bool srv_split_moved(const struct srv_group *g, const void *key, size_t len);
/* Whether this node may create an empty replica of the map's shard si now
 * (a split recipient is created by its donor's SPLIT entry, not empty; a
 * recipient storage already holds is opened here). */
bool srv_split_may_create(struct srv *s, const struct shard_info *si);
/* False when this node hosts the donor and its log has not committed the
 * SPLIT entry into `to` yet (finishing then could strand the arcs); true
 * otherwise (committed here, or not known here). */
bool srv_split_committed_here(struct srv *s, uint32_t donor, uint32_t to);
/* Split phase of a shard for `ringkv shards` (SplitState.Phase). */
uint8_t srv_split_phase(struct srv *s, const struct shard_info *si);

/* ------------------------------------------------------------ srv_group.c */

int srv_group_open(struct srv *s, uint64_t shard, struct srv_group **out);
void srv_group_free(struct srv_group *g);
struct srv_group *srv_group_get(struct srv *s, uint64_t shard);

/* The flush hook and its completion (called by srv_node.c). */
void srv_groups_flush(struct srv *s);
void srv_groups_on_done(struct srv *s);
/* Submits the oldest flush if it is still open (see srv_group.c). */
void srv_groups_submit(struct srv *s);
void srv_groups_tick(struct srv *s);
/* Handles one decoded peer message (any shard). */
int srv_groups_step(struct srv *s, const struct raft_msg *m);
/* A peer went down: probe it again later and wake idle groups. */
void srv_groups_peer_down(struct srv *s, uint64_t peer);
/* Fails every waiter (shutdown or fail-stop); of one group. */
void srv_groups_fail_all(struct srv *s, int status);
void srv_group_fail_waiters(struct srv_group *g, int status);

/* Proposes a command on g; w->cb runs once it is applied or failed.
 * Returns RK_ENOTLEADER, RK_EBUSY, RK_ETOOLARGE, RK_EFAILSTOP, ... (then
 * w->cb is not called). */
int srv_group_propose(struct srv_group *g, const void *cmd, size_t len,
                      struct srv_waiter *w, uint64_t timeout_ms);
/* Queues a read; w->cb runs when local state may serve it. Linearizable
 * reads take a batched ReadIndex round; lease reads (lease = true) are
 * answered from the leader's lease (raft_read_lease) when the group has
 * been ticking for an election timeout, else they fall back to ReadIndex
 * (a quiesced leader's lease clock did not run). */
int srv_group_read(struct srv_group *g, struct srv_waiter *w,
                   uint64_t timeout_ms, bool lease);
/* Removes a waiter that has not completed (its connection closed). */
void srv_group_cancel(struct srv_group *g, struct srv_waiter *w);
bool srv_group_is_leader(const struct srv_group *g);
void srv_group_wake(struct srv_group *g);

void srv_wlist_push(struct srv_wlist *l, struct srv_waiter *w);
void srv_wlist_remove(struct srv_wlist *l, struct srv_waiter *w);

#endif
