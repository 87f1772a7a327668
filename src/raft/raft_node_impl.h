/* Internal definition of struct raft_node and the core's private functions. */
#ifndef RAFT_NODE_IMPL_H
#define RAFT_NODE_IMPL_H

#include <stdarg.h>

#include "raft.h"
#include "raft_log.h"
#include "raft_progress.h"
#include "rk_rand.h"

/* VOTE context marking a campaign started by TimeoutNow (thesis §3.10):
 * receivers do not apply leader stickiness to it. */
#define RAFT_CTX_TRANSFER 1
/* HEARTBEAT context of a commit notice: the leader's new commit index for a
 * follower known to hold everything, sent instead of an empty append and
 * not answered (a ReadIndex round's heartbeats carry its number, >= 1). */
#define RAFT_CTX_COMMIT_NOTICE 0

/* Heartbeat rounds whose send tick is remembered for the lease. */
#define RAFT_LEASE_RING 256

/* Upper bound accepted for any term or index in a message (2^62). */
#define RAFT_MAX_NUMBER (UINT64_C(1) << 62)

enum raft_campaign_kind {
    RAFT_CAMPAIGN_PRE = 0,
    RAFT_CAMPAIGN_ELECTION = 1,
    RAFT_CAMPAIGN_TRANSFER = 2,
};

/* Message entry arrays live in chunks that never move until advance. */
struct raft_ent_chunk {
    struct raft_ent_chunk *next;
    uint32_t used;
    uint32_t cap;
    struct raft_entry e[];
};

/* One batch of output being gathered (or handed out in a ready). */
struct raft_out {
    struct raft_msg *msgs;
    uint32_t n_msgs, cap_msgs;
    struct raft_msg *after;
    uint32_t n_after, cap_after;
    struct raft_ent_chunk *chunks; /* head = current */
    struct raft_blk **refs;
    uint32_t n_refs, cap_refs;
    void **frees;
    uint32_t n_frees, cap_frees;
    struct raft_read_state *reads;
    uint32_t n_reads, cap_reads;
    bool has_chunk;
    struct raft_snap_chunk chunk;
    bool install;
    struct raft_snapshot_meta install_meta;
};

struct raft_conf_rec {
    raft_index index;
    struct raft_conf_change cc;
};

struct raft_read_req {
    uint64_t ctx;
    raft_index index;
    uint64_t round; /* 0: waiting for the leader's first commit */
};

struct raft_node {
    struct raft_config cfg;
    raft_id id;
    raft_term term;
    raft_id vote;
    raft_id leader;
    uint8_t role;
    int (*step_fn)(struct raft_node *n, const struct raft_msg *m);

    struct raft_log log;
    struct rk_rand rand;
    uint32_t election_elapsed;
    uint32_t heartbeat_elapsed;
    uint32_t randomized_timeout;

    /* Progress of every member (id 0 = free slot); on followers only the
     * voter flags and votes are used. */
    struct raft_progress prs[RAFT_MAX_MEMBERS];

    /* Membership (thesis §4.1: a configuration is used once appended). */
    struct raft_conf_state conf;      /* as of the last log entry */
    struct raft_conf_state conf_base; /* as of conf_base_index */
    raft_index conf_base_index;
    struct raft_conf_rec *conf_log;   /* CONF entries after the base */
    uint32_t n_conf_log, cap_conf_log;
    raft_index pending_conf_index;    /* leader: last conf entry proposed */
    struct raft_conf_state conf_boot; /* bootstrap configuration (index 0) */
    bool conf_dirty;                  /* conf_boot learned: persist it */

    /* Elections. */
    /* Restarted with check-quorum: we may have answered a leader's lease
     * round just before the crash, so refuse votes as if that leader were
     * heard until an election timeout has passed (thesis §4.2.3, §6.4.1). */
    bool restart_quiet;
    bool self_vote_pending; /* candidate: own vote counts after its sync */

    /* Leader transfer (thesis §3.10). */
    raft_id transferee;
    uint32_t transfer_elapsed;

    size_t uncommitted_bytes;
    bool bcast_pending;

    /* ReadIndex (thesis §6.4). */
    struct raft_read_req *reads;
    uint32_t n_reads, cap_reads;
    uint64_t read_round;
    bool read_round_open;
    /* Thesis §3.10/§6.4.1: set once this leader sent TimeoutNow; the
     * transferee's election ignores leases, so ours is void for the rest
     * of the term (cleared when the term or role changes). */
    bool lease_void;
    /* Thesis §6.4.1: the lease runs from the SEND tick of the newest
     * heartbeat round a quorum acknowledged. Ticks are counted here (the
     * core reads no clock); round r was sent at round_sent[r % RING] - 1. */
    uint64_t lease_clock;
    uint64_t round_sent[RAFT_LEASE_RING];

    /* Follower: the snapshot being received in chunks. */
    bool staging;
    struct raft_snapshot_meta stage_meta;
    uint32_t stage_next;
    raft_id stage_from;  /* the leader streaming it */
    raft_term stage_term;

    raft_index snap_taken;

    /* Output double buffer: out[cur] gathers, the other one is handed out. */
    struct raft_out out[2];
    int cur;
    bool ready_out;
    struct raft_hard_state prev_hs;
    struct raft_soft_state prev_soft;

    char errmsg[RK_ERRMSG_SIZE];
};

/* raft_node.c */
void raft__trace(struct raft_node *n, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
struct raft_msg *raft__msg_new(struct raft_node *n, uint8_t type, raft_id to,
                               bool after_sync);
int raft__out_entries(struct raft_node *n, raft_index lo, raft_index hi,
                      size_t max_bytes, struct raft_entry **ents,
                      uint32_t *cnt);
int raft__out_free_later(struct raft_node *n, void *p);
int raft__out_read(struct raft_node *n, uint64_t ctx, raft_index index);
struct raft_progress *raft__pr(struct raft_node *n, raft_id id);
void raft__become_follower(struct raft_node *n, raft_term term,
                           raft_id leader);
void raft__become_pre_candidate(struct raft_node *n);
void raft__become_candidate(struct raft_node *n);
void raft__become_leader(struct raft_node *n);
void raft__reset_randomized_timeout(struct raft_node *n);
bool raft__promotable(const struct raft_node *n);

/* raft_election.c */
void raft__campaign(struct raft_node *n, int kind);
int raft__handle_vote(struct raft_node *n, const struct raft_msg *m);
int raft__handle_vote_resp(struct raft_node *n, const struct raft_msg *m);
void raft__self_vote_synced(struct raft_node *n);
bool raft__in_lease(const struct raft_node *n);

/* raft_replication.c */
void raft__acks_truncated(struct raft_node *n, raft_index from);
int raft__append_to_log(struct raft_node *n, const struct raft_entry *ents,
                        uint32_t cnt);
bool raft__send_append(struct raft_node *n, struct raft_progress *pr,
                       bool send_if_empty);
void raft__bcast_append(struct raft_node *n);
void raft__send_heartbeat(struct raft_node *n, struct raft_progress *pr);
void raft__send_commit_notice(struct raft_node *n, struct raft_progress *pr);
void raft__bcast_heartbeat(struct raft_node *n);
int raft__handle_append(struct raft_node *n, const struct raft_msg *m);
int raft__handle_append_resp(struct raft_node *n, const struct raft_msg *m);
int raft__handle_heartbeat(struct raft_node *n, const struct raft_msg *m);
int raft__handle_heartbeat_resp(struct raft_node *n,
                                const struct raft_msg *m);
bool raft__maybe_commit(struct raft_node *n);
void raft__self_persisted(struct raft_node *n);

/* raft_read.c */
void raft__read_commit_advanced(struct raft_node *n);
void raft__read_ack(struct raft_node *n, struct raft_progress *pr,
                    uint64_t ctx);
void raft__read_reset(struct raft_node *n);
void raft__read_close_round(struct raft_node *n);

/* raft_membership.c */
int raft__conf_init(struct raft_node *n);
void raft__conf_close(struct raft_node *n);
int raft__conf_on_append(struct raft_node *n, const struct raft_entry *ents,
                         uint32_t cnt, raft_index truncated_from);
void raft__conf_fold(struct raft_node *n, raft_index applied);
void raft__conf_restore(struct raft_node *n,
                        const struct raft_snapshot_meta *m);
bool raft__is_voter(const struct raft_conf_state *c, raft_id id);
bool raft__is_learner(const struct raft_conf_state *c, raft_id id);
void raft__conf_sync_progress(struct raft_node *n);
void raft__conf_check_removed_leader(struct raft_node *n);
bool raft__conf_valid(const struct raft_conf_state *c);
void raft__conf_adopt_boot(struct raft_node *n,
                           const struct raft_conf_state *boot);
uint32_t raft__n_voters(const struct raft_node *n);

/* raft_snapshot.c */
void raft__send_snapshot(struct raft_node *n, struct raft_progress *pr);
int raft__handle_snapshot(struct raft_node *n, const struct raft_msg *m);
int raft__handle_snapshot_resp(struct raft_node *n, const struct raft_msg *m);
void raft__snapshot_tick(struct raft_node *n);

/* raft_transfer.c */
void raft__transfer_abort(struct raft_node *n);
int raft__handle_timeout_now(struct raft_node *n, const struct raft_msg *m);
void raft__transfer_progress(struct raft_node *n, struct raft_progress *pr);
void raft__transfer_tick(struct raft_node *n);

#endif
