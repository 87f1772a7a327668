/* Deterministic multi-node Raft cluster simulator (one seed, one run). */
#ifndef SIM_H
#define SIM_H

/*
 * The simulator runs N real Raft cores (src/raft) over in-memory logs
 * (raft_memlog) on a simulated clock. Every source of nondeterminism (network
 * delay, loss, duplication, reordering, disk latency, crashes, partitions,
 * membership changes, client operations) is drawn from ONE seeded PRNG, and
 * events run in (time, seq) order, so a seed reproduces a run exactly.
 *
 * After every event sim_check_safety() checks election safety, log matching,
 * leader completeness, state-machine safety and that no committed entry is
 * ever lost. The client history (a register per key) is checked for
 * linearizability at the end of a run (sim_check_history()).
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"
#include "rk_rand.h"

#define SIM_MAX_NODES 12 /* initial nodes (<= 7) plus nodes added later */
#define SIM_KEYS      4  /* registers of the state machine */
/* The clients' registers; the last key is the simulator's own (liveness
 * probes), outside the checked history. */
#define SIM_CLIENT_KEYS 3
#define SIM_PROBE_KEY   3
#define SIM_CLIENTS     4  /* concurrent simulated clients */
#define SIM_TRACE_RING  48 /* events kept for a failure report */
#define SIM_TRACE_LINE  160
#define SIM_HW_TERMS    4

/* ------------------------------------------------------------ event heap */

enum sim_ev_kind {
    SIM_EV_DELIVER = 0,    /* a message arrives at node */
    SIM_EV_TICK,           /* one logical tick of node */
    SIM_EV_DISK_DONE,      /* node's in-flight write batch is durable */
    SIM_EV_CRASH,          /* node loses everything not synced */
    SIM_EV_RESTART,        /* node comes back from its durable state */
    SIM_EV_HEAL,           /* restore every link */
    SIM_EV_CLIENT,         /* client `node` issues its next operation */
    SIM_EV_CLIENT_TIMEOUT, /* client gives up (outcome unknown) */
    SIM_EV_NEMESIS,        /* pick and schedule the next random fault */
    SIM_EV__COUNT
};

struct sim_event {
    uint64_t time; /* ms */
    uint64_t seq;  /* tie-break: scheduling order */
    uint8_t kind;  /* enum sim_ev_kind */
    int node;      /* target node slot (or client number) */
    uint64_t gen;  /* incarnation of the target when scheduled */
    uint64_t arg;
    struct raft_msg *msg; /* SIM_EV_DELIVER: owned deep copy */
};

struct sim_heap {
    struct sim_event *ev;
    size_t len;
    size_t cap;
};

void sim_heap_init(struct sim_heap *h);
void sim_heap_free(struct sim_heap *h);
/* 0 or RK_ENOMEM. */
int sim_heap_push(struct sim_heap *h, const struct sim_event *e);
/* False when empty. */
bool sim_heap_pop(struct sim_heap *h, struct sim_event *out);
const struct sim_event *sim_heap_peek(const struct sim_heap *h);

/* A deep copy of m in one malloc'd block (entries and chunk included). */
struct raft_msg *sim_msg_clone(const struct raft_msg *m);

/* --------------------------------------------------------------- knobs */

struct sim_opts {
    uint64_t seed;
    int nodes;           /* initial voters: 1..7 */
    uint64_t max_events; /* events of the fault phase */
    bool verbose;        /* print every event */
    /* Network. */
    uint32_t delay_min_ms, delay_max_ms;
    double loss;    /* probability a message is dropped */
    double dup;     /* probability a message is delivered twice */
    double reorder; /* probability of an extra random delay */
    /* Disk. */
    uint32_t disk_min_ms, disk_max_ms;
    /* Faults (per nemesis step probabilities are fixed; these enable). */
    bool crashes, partitions, membership, transfers, snapshots;
    uint32_t nemesis_every_ms; /* mean gap between faults */
    uint32_t tick_ms;
    uint32_t snapshot_chunk;     /* bytes per snapshot chunk (memlog) */
    int profile;                 /* enum sim_profile; -1: drawn from the seed */
    bool pre_vote, check_quorum; /* core settings (default on) */
    bool lease_reads; /* some reads use raft_read_lease (default on) */
    /* Checker self-test: read-index reads are served by any replica from
     * its local state (not linearizable; the history check must object). */
    bool stale_reads;
    /* Checker self-test: the driver sends msgs_after_sync before the sync
     * (votes and acks not yet durable); the checks must object. */
    bool early_acks;
    /* Core configuration (0: drawn from the seed by sim_init). */
    size_t max_msg_bytes;
    uint32_t max_inflight;
};

void sim_opts_default(struct sim_opts *o, uint64_t seed, int nodes);

/* ------------------------------------------------------ client history */

enum sim_op_kind { SIM_OP_WRITE = 0, SIM_OP_READ = 1, SIM_OP_CAS = 2 };
enum sim_op_status {
    SIM_ST_PENDING = 0,
    SIM_ST_OK = 1,
    SIM_ST_FAIL = 2,
    SIM_ST_INFO = 3,
};

struct sim_op {
    uint64_t id; /* unique, also the command's id in the log */
    int process; /* Jepsen process: a new one after every info */
    int client;
    uint8_t kind; /* enum sim_op_kind */
    int key;
    int64_t arg1;   /* write: value; cas: expected */
    int64_t arg2;   /* cas: new value */
    int64_t result; /* read: value read */
    uint8_t status; /* enum sim_op_status */
    uint64_t invoke_ms, complete_ms;
    uint64_t invoke_pos, complete_pos; /* order of events in the history */
};

/* ---------------------------------------------------------------- nodes */

struct raft_memlog;

struct sim_node {
    raft_id id;             /* 0: slot unused */
    bool up;                /* core running */
    bool retired;           /* removed from the group and shut down */
    uint64_t gen;           /* incarnation; bumped on crash */
    struct raft_node *raft; /* NULL while down */
    struct raft_memlog *log;

    /* The write batch in flight to the simulated disk (one at a time). */
    bool busy;
    struct raft_ready rd;
    bool disk_fault; /* the next batch write fails (fsync error / torn) */
    /* Highest synced index seen while the durable term was hw_term[k] (the
     * last SIM_HW_TERMS terms): what append acks of those terms may cover. */
    raft_term hw_term[SIM_HW_TERMS];
    raft_index hw_index[SIM_HW_TERMS];

    /* State machine (the KV registers) and its applied index. */
    int64_t kv[SIM_KEYS];
    raft_index applied;
    raft_term applied_term;

    /* Pending ReadIndex results: ctx (op id) waiting for applied >= index. */
    struct {
        uint64_t ctx;
        raft_index index;
    } reads[16];
    uint32_t n_reads;

    /* Highest commit index this incarnation reported (monotone). */
    raft_index last_commit;
    raft_term last_term;
    uint8_t last_role;
};

/* A globally committed (applied) entry: what every node must agree on. */
struct sim_applied {
    raft_term term;
    uint64_t hash;       /* entry type + data */
    uint64_t state_hash; /* KV state right after applying it */
};

/* Entry identity for the log-matching registry. */
struct sim_lm {
    raft_index index;
    raft_term term;
    uint64_t hash;
    raft_term prev_term; /* term of index-1 in any log holding this entry;
                            UINT64_MAX when unknown yet */
};

struct sim_client {
    bool busy;
    uint64_t op;      /* index into s->ops of the pending op */
    int node;         /* slot it sent the op to */
    raft_index index; /* log index the write got (0 for read-index) */
    raft_term term;
    int process;
};

enum sim_profile {
    SIM_PROFILE_MIXED = 0, /* every kind of fault, calm pace */
    SIM_PROFILE_FAST,      /* every kind of fault, three times as often */
    SIM_PROFILE_CHURN,     /* mostly crash / isolate the current leader */
    SIM_PROFILE__COUNT
};

struct sim {
    struct sim_opts o;
    int profile;        /* enum sim_profile, drawn from the seed */
    bool boot_snapshot; /* initial logs start with a snapshot at index 1 */
    struct rk_rand rng;
    uint64_t now; /* ms */
    uint64_t seq;
    uint64_t events; /* events run so far */
    struct sim_heap heap;

    int n_slots; /* slots in use (initial + added) */
    struct sim_node nodes[SIM_MAX_NODES];
    bool cut[SIM_MAX_NODES][SIM_MAX_NODES]; /* cut[a][b]: a -> b dropped */
    bool net_calm;   /* after the fault phase: no loss, no new faults */
    int commit_hook; /* a leader whose commit just advanced, or -1 */

    /* Safety bookkeeping. */
    raft_id *term_leader; /* term -> leader id (0 none), grown on demand */
    size_t n_term_leader;
    struct sim_applied *applied; /* index -> committed entry (1-based) */
    size_t applied_cap;
    raft_index applied_max; /* highest index applied anywhere */
    raft_index commit_max;  /* highest commit index reported */
    struct sim_lm *lm;      /* open-addressing (index, term) registry */
    size_t lm_cap, lm_len;

    /* Leader-completeness obligations: per node, the term it leads and the
     * committed index it must contain (checked at its first own write). */
    raft_term lc_term[SIM_MAX_NODES];
    raft_index lc_commit[SIM_MAX_NODES];

    /* Client workload and history. */
    struct sim_client clients[SIM_CLIENTS];
    struct sim_op *ops;
    size_t n_ops, ops_cap;
    uint64_t hist_pos;
    int next_process;
    int64_t next_value;
    int64_t last_value[SIM_KEYS]; /* latest value a client saw per key */
    bool workload;

    /* Failure report. */
    bool failed;
    uint64_t fail_event;
    char fail_what[256];
    char trace[SIM_TRACE_RING][SIM_TRACE_LINE];
    uint64_t trace_n;
    uint64_t trace_hash; /* FNV-1a over every trace line */

    struct raft_tracer tracer; /* the core's log lines (verbose only) */

    /* Counters. */
    uint64_t n_msgs, n_dropped, n_crashes, n_partitions, n_conf, n_transfers,
        n_snapshots, n_snap_installs, n_commits_seen, lincheck_unknown,
        n_disk_faults;
};

/* ------------------------------------------------------------ lifecycle */

/* Builds a cluster of o->nodes voters; 0 or RK_ENOMEM / the core's code. */
int sim_init(struct sim *s, const struct sim_opts *o);
void sim_free(struct sim *s);

/* Runs one event; false when nothing is scheduled. */
bool sim_step(struct sim *s);
typedef bool (*sim_pred_cb)(struct sim *s, void *arg);
/* Steps until pred holds (true) or max_ms of simulated time pass / a
 * violation is found (false). Bounded in time and in count. */
bool sim_step_until(struct sim *s, sim_pred_cb pred, void *arg,
                    uint64_t max_ms);
/* Slot of the leader once one is elected and known by a quorum, or -1. */
int sim_until_leader(struct sim *s, uint64_t max_ms);
/* Waits until node slot `i` applied `index`; false on timeout. */
bool sim_until_applied(struct sim *s, int i, raft_index index, uint64_t max_ms);

/* The whole scenario of one seed: fault phase, heal, liveness, history. */
int sim_run(struct sim *s);

/* ------------------------------------------------------------- faults */

void sim_crash(struct sim *s, int i);
int sim_restart(struct sim *s, int i);
/* Cuts a -> b (and b -> a when both_ways). */
void sim_cut(struct sim *s, int a, int b, bool both_ways);
void sim_heal(struct sim *s);
/* Proposes a membership change at the current leader (slot), 0 or RK_E*. */
int sim_conf_change(struct sim *s, int leader, uint8_t type, raft_id node);
/* Adds a fresh node slot that is not yet a member; its slot or -1. */
int sim_add_slot(struct sim *s);
/* The node takes a snapshot of its state machine and compacts its log. */
int sim_take_snapshot(struct sim *s, int i);
/* Node slot i starts an election now; 0 or the core's code. */
int sim_campaign(struct sim *s, int i);
/* Leader slot i hands leadership to node `to`; 0 or the core's code. */
int sim_transfer(struct sim *s, int i, raft_id to);
/* The up node that leads the highest term, or -1. */
int sim_leader(struct sim *s);
/* Proposes a client write of key := value at slot i; its index or 0. */
raft_index sim_propose_write(struct sim *s, int i, int key, int64_t value);

/* How a client operation reaches the state machine. */
enum sim_path {
    SIM_PATH_LOG = 0,        /* proposed as a log entry (writes, cas) */
    SIM_PATH_READ_INDEX = 1, /* raft_read_index, then local state */
    SIM_PATH_LEASE = 2,      /* raft_read_lease, then local state */
};

/* Client c (idle) sends one operation to node slot `target` and records it
 * in the history; returns its position in s->ops. The answer arrives as
 * the simulation runs (s->ops[op].status leaves SIM_ST_PENDING). */
uint64_t sim_client_op(struct sim *s, int c, int target, uint8_t kind, int key,
                       int64_t a1, int64_t a2, int path);

/* ------------------------------------------------------------ checking */

/* Records a violation (first one wins) and keeps the trace. */
void sim_violation(struct sim *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Runs every per-event invariant; false once a violation is recorded. */
bool sim_check_safety(struct sim *s);
/* Election safety: node `id` is leader of `term`. */
void sim_check_leader(struct sim *s, raft_id id, raft_term term);
/* State-machine safety: node `id` applied an entry; state_hash after it. */
void sim_check_apply(struct sim *s, raft_id id, raft_index index,
                     raft_term term, uint64_t hash, uint64_t state_hash);
/* Log matching: an entry seen in a log or a message, with the term of its
 * predecessor (UINT64_MAX if unknown). */
void sim_check_entry(struct sim *s, raft_id id, raft_index index,
                     raft_term term, uint64_t hash, raft_term prev_term);
/* Frees the checker's bookkeeping (sim_free does it too). */
void sim_check_free(struct sim *s);
/* Linearizability of the client history (per key); false on violation. */
bool sim_check_history(struct sim *s);

uint64_t sim_hash_bytes(uint64_t h, const void *p, size_t n);
uint64_t sim_entry_hash(const struct raft_entry *e);
uint64_t sim_state_hash(const int64_t kv[SIM_KEYS]);

/* Appends a line to the trace (and prints it when verbose). */
void sim_trace(struct sim *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prints the last trace lines to f. */
void sim_print_trace(const struct sim *s, void *f, int max_lines);

/* ------------------------------------------------------------- history */

/* Records an invocation; returns the op's position in s->ops. */
uint64_t sim_hist_invoke(struct sim *s, int client, uint8_t kind, int key,
                         int64_t a1, int64_t a2);
void sim_hist_complete(struct sim *s, uint64_t op, uint8_t status,
                       int64_t result);

/* ------------------------------------------------- client commands (log) */

#define SIM_CMD_SIZE 34
struct sim_cmd {
    uint8_t kind; /* enum sim_op_kind (reads-through-log are SIM_OP_READ) */
    uint8_t key;
    uint64_t op; /* op id (0 for internal writes) */
    int64_t a1, a2;
};
void sim_cmd_encode(const struct sim_cmd *c, uint8_t out[SIM_CMD_SIZE]);
int sim_cmd_decode(const void *buf, size_t len, struct sim_cmd *out);

#endif
