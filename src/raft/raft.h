/* The Raft core: a pure, deterministic state machine (step/tick/ready/advance). */
#ifndef RAFT_H
#define RAFT_H

/*
 * The core never does I/O, never reads a clock and never uses a global random
 * source. The driver (server, simulator, tests) feeds it inputs and drains its
 * output in the style of etcd's RawNode:
 *
 *     raft_tick / raft_step / raft_propose / ...      (inputs)
 *     if (raft_has_ready(n)) {
 *         raft_ready(n, &rd);
 *         send rd.msgs                               (may leave now)
 *         persist rd.hs, rd.entries, rd.snap_*        (one sync if must_sync)
 *         send rd.msgs_after_sync                     (only after the sync)
 *         apply rd.committed, answer rd.reads
 *         raft_advance(n, &rd);
 *     }
 *
 * EVERYTHING REACHABLE FROM A struct raft_ready IS BORROWED FROM THE CORE AND
 * STAYS VALID ONLY UNTIL raft_advance() (or raft_node_close()). Copy what you
 * keep. Messages passed to raft_step() are borrowed for the duration of the
 * call only.
 *
 * Every input returns 0 or a negative RK_E* code from rk_err.h. Bad input
 * (unknown sender, stale term, index past the end, oversized entry, malformed
 * fields) is rejected with a code; the core asserts only its own invariants.
 *
 * Ready cycle rules (added by the core's owner):
 *  - At most one ready is outstanding: raft_has_ready() returns false between
 *    raft_ready() and raft_advance(), and calling raft_ready() twice without
 *    advance is a driver bug (asserted).
 *  - Inputs (tick, step, propose, ...) MAY be called between raft_ready() and
 *    raft_advance() (the driver gathers the next batch while the previous one
 *    syncs); their output goes to the next ready and never invalidates the
 *    outstanding one.
 *  - raft_advance(n, rd) must receive the very rd filled by raft_ready() and
 *    means: rd's entries/hs/snapshot are durable and rd.committed applied.
 *    It may produce new output (e.g. a candidate counting its own vote, a
 *    leader committing after its own sync): check raft_has_ready() again.
 *  - msgs_after_sync of a batch go out only after that batch's sync (which
 *    follows every earlier batch's sync). must_sync is also set when only
 *    msgs_after_sync is non-empty.
 *  - rd.committed holds only entries that are committed AND durable in the
 *    stable log (they are read back through raft_log_ops.entries).
 *
 * Return codes of raft_step(): 0 (handled, or ignored as the protocol says,
 * e.g. a vote request while a leader lease holds), RK_EINVAL (not addressed
 * to us, from 0/ourselves, wrong shard), RK_EPROTO (malformed: bad type,
 * entries inconsistent with n_entries/index/term, two leaders in one term,
 * overwriting a committed entry), RK_ESTALE (stale term; a stale leader gets
 * an answer carrying our term), RK_ENOTFOUND (a response from a non-member),
 * RK_ETOOLARGE (entry over max_entry_bytes), RK_EBUSY (snapshot chunk while
 * the previous one is not handed out), RK_ENOMEM.
 *
 * Bug switches (test-only, for the simulator's "can it fail?" test):
 * the library rk_raft_buggy is built from the same sources with
 * RAFT_BUG_COMMIT_OLD_TERM=1: the leader then commits entries of earlier
 * terms by counting replicas (the Figure 8 bug of the Raft paper, §5.4.2).
 * rk_raft_buggy_ack is built with RAFT_BUG_ACK_BEFORE_SYNC=1: followers
 * acknowledge appends in rd.msgs, before their sync, so a crash can lose a
 * committed entry. Never link these into anything but tests.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rk_err.h"

typedef uint64_t raft_id;    /* node id; 0 means "none" */
typedef uint64_t raft_term;
typedef uint64_t raft_index; /* log index; the first entry has index 1 */

/* Most members (voters + learners) one group may have. */
#define RAFT_MAX_MEMBERS 16

/* ---------------------------------------------------------------- entries */

enum raft_entry_type {
    RAFT_ENTRY_NORMAL = 0, /* application command */
    RAFT_ENTRY_CONF = 1,   /* data is an encoded struct raft_conf_change */
    RAFT_ENTRY_NOOP = 2,   /* a new leader's empty entry (thesis §6.4) */
};

struct raft_entry {
    raft_term term;
    raft_index index;
    uint8_t type;  /* enum raft_entry_type */
    uint32_t len;
    void *data;    /* len bytes */
};

/* ------------------------------------------------------------ membership */

enum raft_conf_change_type {
    RAFT_CC_ADD_VOTER = 0,
    RAFT_CC_ADD_LEARNER = 1,
    RAFT_CC_PROMOTE = 2, /* learner -> voter */
    RAFT_CC_REMOVE = 3,  /* voter or learner */
};

struct raft_conf_change {
    uint8_t type; /* enum raft_conf_change_type */
    raft_id node;
};

/* Encoded size of a conf change inside a RAFT_ENTRY_CONF entry. */
#define RAFT_CONF_CHANGE_SIZE 9
void raft_conf_change_encode(const struct raft_conf_change *cc,
                             uint8_t out[RAFT_CONF_CHANGE_SIZE]);
int raft_conf_change_decode(const void *buf, size_t len,
                            struct raft_conf_change *out);

struct raft_conf_state {
    uint32_t n_voters;
    uint32_t n_learners;
    raft_id voters[RAFT_MAX_MEMBERS];
    raft_id learners[RAFT_MAX_MEMBERS];
};

/* --------------------------------------------------------- durable state */

struct raft_hard_state {
    raft_term term;
    raft_id vote;
    raft_index commit;
};

struct raft_snapshot_meta {
    raft_index index; /* last index covered by the snapshot; 0 = none */
    raft_term term;   /* term of that entry */
    struct raft_conf_state conf;
};

/* ---------------------------------------------------------------- messages */

enum raft_msg_type {
    RAFT_MSG_PREVOTE = 0,
    RAFT_MSG_PREVOTE_RESP = 1,
    RAFT_MSG_VOTE = 2,
    RAFT_MSG_VOTE_RESP = 3,
    RAFT_MSG_APPEND = 4,
    RAFT_MSG_APPEND_RESP = 5,
    RAFT_MSG_HEARTBEAT = 6,
    RAFT_MSG_HEARTBEAT_RESP = 7,
    RAFT_MSG_SNAPSHOT = 8,      /* one chunk of a snapshot */
    RAFT_MSG_SNAPSHOT_RESP = 9, /* ack of a chunk (or reject) */
    RAFT_MSG_TIMEOUT_NOW = 10,  /* leader transfer: campaign at once */
    RAFT_MSG__COUNT
};

struct raft_msg {
    uint8_t type; /* enum raft_msg_type */
    uint64_t shard;
    raft_id from;
    raft_id to;
    raft_term term;

    /* APPEND: prev log index/term. VOTE/PREVOTE: candidate's last index/term.
     * APPEND_RESP: on success the last index now matching; on reject the
     * rejected prev index. */
    raft_index index;
    raft_term log_term;
    raft_index commit; /* APPEND/HEARTBEAT: leader's commit index */

    struct raft_entry *entries; /* APPEND */
    uint32_t n_entries;

    bool reject;
    /* Fast backtracking (thesis §5.3 optimisation, etcd's hint): on reject,
     * the follower's best guess of a matching index and the term there. */
    raft_index hint_index;
    raft_term hint_term;

    /* HEARTBEAT(_RESP): ReadIndex round (>= 1); a HEARTBEAT with context 0
     * is a commit notice, which is not answered. TIMEOUT_NOW: 0 */
    uint64_t context;

    /* SNAPSHOT: chunk `chunk_seq` of the snapshot described by `snap`.
     * SNAPSHOT_RESP: acks chunk_seq (reject = restart from 0; hint_index =
     * the follower's commit). APPEND with index 0 or sent while probing:
     * snap.conf carries the group's bootstrap configuration (index 0) for a
     * joining node (other snap fields 0); codecs must carry snap.conf on
     * APPEND whenever snap.conf.n_voters > 0. */
    struct raft_snapshot_meta snap;
    uint32_t chunk_seq;
    bool chunk_last;
    uint32_t chunk_len;
    void *chunk_data;
};

/* ------------------------------------------------------------------ storage */

/*
 * Read-only view of the stable (persisted) log, implemented by
 * src/storage (LMDB) and by raft_memlog (tests, simulator). Entries the core
 * handed out in a ready batch become visible here once the driver has
 * persisted them and called raft_advance().
 */
struct raft_log_ops {
    /* Index of the first entry available (snapshot index + 1). */
    raft_index (*first_index)(void *ctx);
    /* Index of the last entry stored (snapshot index if the log is empty). */
    raft_index (*last_index)(void *ctx);
    /* Term of entry i; for i == first_index-1 the snapshot's term.
     * RK_ECOMPACTED if i is below that, RK_EUNAVAIL_LOG if past the end. */
    int (*term)(void *ctx, raft_index i, raft_term *out);
    /* Entries [lo, hi), at most max_bytes of payload but always at least one
     * (the core passes SIZE_MAX for "no limit"). *out is ONE malloc'd block
     * (array then payloads) the caller free()s. RK_ECOMPACTED if lo is at or
     * below the snapshot index, RK_EUNAVAIL_LOG if hi - 1 is past the end. */
    int (*entries)(void *ctx, raft_index lo, raft_index hi, size_t max_bytes,
                   struct raft_entry **out, uint32_t *n_out);
    /* Metadata of the latest snapshot (index 0 if there is none). */
    int (*snapshot_meta)(void *ctx, struct raft_snapshot_meta *out);
    /* Chunk `seq` of the snapshot whose index is `snap_index`: a malloc'd
     * buffer the caller free()s, and whether it is the last chunk.
     * RK_ESTALE if that snapshot has been replaced by a newer one. */
    int (*snapshot_chunk)(void *ctx, raft_index snap_index, uint32_t seq,
                          void **data, uint32_t *len, bool *last);
};

/* ------------------------------------------------------------------ tracing */

/* The core logs only through this (may be NULL). */
struct raft_tracer {
    void *data;
    void (*emit)(void *data, raft_id node, int level, const char *msg);
};

/* ----------------------------------------------------------------- config */

/* Zero means a default: election_ticks 10, heartbeat_ticks 1 (must stay
 * below election_ticks, else RK_EINVAL), max_inflight_msgs 256, and no limit
 * for max_msg_bytes, max_uncommitted_bytes, max_entry_bytes and
 * max_committed_bytes. raft_node_new() returns RK_EINVAL for a bad config
 * (id 0, missing log ops, invalid bootstrap conf), RK_ECORRUPT if hs.commit
 * is past the stored log or the snapshot's conf is invalid, RK_ENOMEM. */
struct raft_config {
    raft_id id;
    uint64_t shard;           /* copied into every outgoing message */
    uint32_t election_ticks;  /* timeout is random in [e, 2e) */
    uint32_t heartbeat_ticks;
    bool pre_vote;
    bool check_quorum;
    uint32_t max_inflight_msgs;    /* append window per follower */
    size_t max_msg_bytes;          /* payload per append message */
    size_t max_uncommitted_bytes;  /* 0 = unlimited */
    size_t max_entry_bytes;        /* propose refuses larger: RK_ETOOLARGE */
    size_t max_committed_bytes;    /* per ready batch; 0 = unlimited */
    uint64_t seed;                 /* per-node PRNG seed */
    const struct raft_log_ops *log;
    void *log_ctx;
    /* Durable state found at start (zeroed for a brand-new node). */
    struct raft_hard_state hs;
    /* Bootstrap membership, used only when storage holds no snapshot. The
     * core derives the current configuration itself: the snapshot's (or
     * this) configuration plus every CONF entry of the stored log, so a
     * conf entry lost in a crash is never half-applied. A node joining an
     * existing group starts with an empty configuration and waits. */
    struct raft_conf_state conf;
    raft_index applied;            /* last index applied by the state machine */
    struct raft_tracer *tracer;
};

/* ------------------------------------------------------------------ output */

enum raft_role {
    RAFT_FOLLOWER = 0,
    RAFT_PRE_CANDIDATE = 1,
    RAFT_CANDIDATE = 2,
    RAFT_LEADER = 3,
};

struct raft_soft_state {
    raft_id leader;
    uint8_t role; /* enum raft_role */
};

/* A ReadIndex request that became safe: serve it once applied >= index. */
struct raft_read_state {
    uint64_t ctx;
    raft_index index;
};

/* A snapshot chunk a follower received and the driver must stage durably. */
struct raft_snap_chunk {
    struct raft_snapshot_meta meta;
    uint32_t seq;
    bool last;
    uint32_t len;
    const void *data;
};

struct raft_ready {
    struct raft_hard_state hs;
    bool hs_changed;
    bool must_sync; /* hs or entries or snapshot changed: one sync needed */

    /* Append these; if the first index is <= the stored last index, first
     * truncate the stored log from that index (conflicting suffix). */
    const struct raft_entry *entries;
    uint32_t n_entries;

    /* A received snapshot chunk to stage (NULL if none). */
    const struct raft_snap_chunk *snap_chunk;
    /* Install the fully staged snapshot: replace the state machine and
     * discard the log up to snap_meta.index, in one atomic step. */
    bool snap_install;
    struct raft_snapshot_meta snap_meta;

    const struct raft_msg *msgs;            /* may be sent at once */
    uint32_t n_msgs;
    const struct raft_msg *msgs_after_sync; /* only after the sync */
    uint32_t n_msgs_after_sync;

    const struct raft_entry *committed;     /* apply in order */
    uint32_t n_committed;

    const struct raft_read_state *reads;
    uint32_t n_reads;

    struct raft_soft_state soft;
    bool soft_changed;
    /* The group's bootstrap configuration (the one at index 0), to persist
     * and hand back as raft_config.conf at restart. It changes only when a
     * node created with an empty configuration (to join a group) learns it
     * from the leader's first append (conf_changed); conf_changed is also
     * set in the first ready after raft_node_new() when it is non-empty, so
     * persisting rd.conf whenever conf_changed is enough. The configuration in
     * force is derived from the log; read it with raft_status/raft_conf_at. */
    struct raft_conf_state conf;
    bool conf_changed;
};

struct raft_status {
    raft_id id;
    uint8_t role;
    raft_id leader;
    raft_term term;
    raft_index commit;
    raft_index applied;
    raft_index last_index;
    raft_index first_index;
    struct raft_conf_state conf;
    /* Leader only: per member the match index (0 if unknown). */
    raft_index match[RAFT_MAX_MEMBERS * 2];
    raft_id match_ids[RAFT_MAX_MEMBERS * 2];
    uint32_t n_match;
};

enum raft_snapshot_status { RAFT_SNAP_FINISHED = 0, RAFT_SNAP_FAILED = 1 };

/* ------------------------------------------------------------------- API */

struct raft_node; /* defined in raft_node_impl.h; opaque to drivers */

int raft_node_new(const struct raft_config *cfg, struct raft_node **out);
void raft_node_free(struct raft_node *n);

void raft_tick(struct raft_node *n);
int raft_step(struct raft_node *n, const struct raft_msg *m);
/* Leader only (RK_ENOTLEADER otherwise); RK_ETOOLARGE over max_entry_bytes;
 * RK_EBUSY over max_uncommitted_bytes or during a transfer. Sets *index
 * (may be NULL) to the index the entry will have. */
int raft_propose(struct raft_node *n, const void *data, size_t len,
                 raft_index *index);
/* Single-server change (thesis §4.1), in force on every node as soon as it
 * is appended. RK_ENOTLEADER; RK_EBUSY while an earlier change is not yet
 * committed or during a transfer; RK_EEXIST (adding a member again,
 * promoting a voter), RK_ENOTFOUND (removing/promoting a non-member),
 * RK_EINVAL (bad type, node 0, removing the last voter), RK_ETOOLARGE
 * (more than RAFT_MAX_MEMBERS). A leader that removes itself keeps leading
 * until the change commits, then steps down. */
int raft_propose_conf(struct raft_node *n, const struct raft_conf_change *cc,
                      raft_index *index);
/* Linearizable read (thesis §6.4): the result arrives in rd.reads. Leader
 * only (RK_ENOTLEADER: the driver forwards to the leader or retries);
 * RK_EBUSY during a transfer. Reads pending when leadership is lost are
 * dropped silently (the driver times them out). */
int raft_read_index(struct raft_node *n, uint64_t ctx);
/* Lease-based read (thesis §6.4.1, opt-in): answered at once in rd.reads
 * with the commit index, without a heartbeat round. Safe only if clocks
 * drift less than an election timeout. Leader only (RK_ENOTLEADER);
 * RK_EINVAL unless check_quorum is on; RK_EBUSY during a transfer, for the
 * rest of the term once this leader has sent TimeoutNow (the transferee's
 * election ignores leases), or before the leader's first entry of its term
 * is committed, or when the lease has run out (use raft_read_index then).
 * The lease ends election_ticks - (2 + election_ticks / 10) ticks after the
 * send of the newest heartbeat round a quorum answered (heartbeats go every
 * heartbeat_ticks, so a leader in touch with a quorum keeps it). */
int raft_read_lease(struct raft_node *n, uint64_t ctx);
/* Thesis §3.10: catch `to` up, then send it TimeoutNow; proposals get
 * RK_EBUSY until it wins or an election timeout passes. RK_ENOTLEADER,
 * RK_ENOTFOUND (not a member), RK_ENOTVOTER (a learner); 0 if `to` is us. */
int raft_transfer_leader(struct raft_node *n, raft_id to);
/* Start an election now (tests, bootstrap of a single node); uses pre-vote
 * when configured. RK_ENOTVOTER if this node may not campaign. */
int raft_campaign(struct raft_node *n);
void raft_report_unreachable(struct raft_node *n, raft_id id);
void raft_report_snapshot(struct raft_node *n, raft_id id, int status);
/* The state machine took a snapshot at `index`; the core may let the driver
 * compact the log below it (the driver owns compaction of stable storage). */
void raft_snapshot_taken(struct raft_node *n, raft_index index);

bool raft_has_ready(const struct raft_node *n);
void raft_ready(struct raft_node *n, struct raft_ready *rd);
void raft_advance(struct raft_node *n, const struct raft_ready *rd);

void raft_status(const struct raft_node *n, struct raft_status *out);
/* The configuration in force at log index `index` (for the metadata of a
 * snapshot taken at the applied index). RK_ECOMPACTED if index is below the
 * last applied configuration change, RK_EUNAVAIL_LOG if past the log. */
int raft_conf_at(const struct raft_node *n, raft_index index,
                 struct raft_conf_state *out);
/* True when the group is idle and may stop ticking (all followers caught
 * up, nothing pending); the driver wakes it on any input. */
bool raft_quiescable(const struct raft_node *n);

const char *raft_role_name(int role);
const char *raft_msg_type_name(int type);

#endif
