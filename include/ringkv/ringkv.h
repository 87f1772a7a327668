/*
 * libringkv: the client library of ringkv.
 *
 * A client (ringkv_t for the blocking API, ringkv_async_t for callbacks on a
 * libuv loop the application runs) knows a few endpoints, fetches the shard
 * map from any of them and then sends every request straight to the leader
 * of the key's shard. It follows NOT_LEADER hints and WRONG_SHARD answers
 * (refreshing the map), retries with exponential backoff and full jitter
 * until the call's deadline, keeps a circuit breaker per node (a node that
 * keeps failing is skipped for a cool-down, then probed with one request)
 * and makes writes exactly-once: every write carries the client's id and a
 * sequence number that stays the same across retries, so a write whose reply
 * was lost is applied once (the retry is answered from the server's session).
 *
 * Thread safety: a handle is NOT thread-safe; use one per thread (they are
 * cheap and independent) or serialize calls. ringkv_strerror,
 * ringkv_options_init and ringkv_version are safe from any thread. An async
 * handle must only be used on the thread that runs its loop.
 *
 * Memory: results that hold bytes (ringkv_value, ringkv_kvs, status and map
 * snapshots) are owned by the caller and freed with their _free function.
 */
#ifndef RINGKV_RINGKV_H
#define RINGKV_RINGKV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define RINGKV_VERSION_MAJOR 0
#define RINGKV_VERSION_MINOR 1

typedef enum {
    RINGKV_OK = 0,
    RINGKV_NOT_FOUND = 1,    /* get/del/cas: the key does not exist */
    RINGKV_CAS_MISMATCH = 2, /* cas: the expectation did not hold */
    RINGKV_TIMEOUT = 3,      /* the deadline passed; a write may or may not
                                have been applied */
    RINGKV_UNAVAILABLE = 4,  /* no node could serve (all down or refused) */
    RINGKV_INVALID = 5,      /* bad argument (empty key, bad option) */
    RINGKV_TOO_LARGE = 6,    /* key or value over the cluster's limit */
    RINGKV_INTERNAL = 7,     /* the server reported an internal error */
    RINGKV_NO_MEMORY = 8,
    RINGKV_CLOSED = 9,       /* the handle is closing; the call was dropped */
    RINGKV_REFUSED = 10,     /* the cluster refused an admin request */
    RINGKV_PROTOCOL = 11,    /* a node answered something unreadable */
} ringkv_status;

/* A static, human-readable description; never NULL. */
const char *ringkv_strerror(ringkv_status st);
/* The short name ("NOT_FOUND"). */
const char *ringkv_status_name(ringkv_status st);
const char *ringkv_version(void);

typedef struct {
    /* "host:port,host:port": client addresses of some nodes (required). */
    const char *endpoints;
    unsigned timeout_ms;          /* deadline of each call; default 5000 */
    unsigned attempt_timeout_ms;  /* one try on one node; default 1000 */
    unsigned backoff_base_ms;     /* first retry delay cap; default 10 */
    unsigned backoff_cap_ms;      /* largest retry delay; default 500 */
    unsigned max_retries;         /* 0 = retry until the deadline */
    unsigned breaker_failures;    /* consecutive failures that open; 5 */
    unsigned breaker_window_ms;   /* error-rate window; default 10000 */
    unsigned breaker_error_pct;   /* open above this error rate over the
                                     window (with >= 20 calls); default 50 */
    unsigned breaker_cooldown_ms; /* open -> half-open; default 1000 */
    uint64_t client_id;           /* first session id (one session per write
                                     in flight: client_id, +1, ...); 0 =
                                     random */
    uint64_t seed;                /* jitter seed; 0 = from the clock */
    size_t max_frame_bytes;       /* default 4 MiB + 4 KiB */
} ringkv_options;

/* Fills *o with the defaults (endpoints "127.0.0.1:7001,...:7002,...:7003"). */
void ringkv_options_init(ringkv_options *o);

typedef enum {
    RINGKV_LINEARIZABLE = 0, /* ReadIndex: sees every write acknowledged
                                before the read started (default) */
    RINGKV_LEASE = 1,        /* leader lease: linearizable while clocks
                                drift within the configured bound */
    RINGKV_STALE = 2,        /* any replica's local state: may be old */
} ringkv_consistency;

/* A value read from the store. data is NUL-terminated for convenience (the
 * terminator is not counted in len); values are binary-safe. */
typedef struct {
    void *data;
    size_t len;
    uint64_t revision;        /* Raft index of the write that set it */
    uint64_t create_revision; /* index of the write that created the key */
} ringkv_value;
void ringkv_value_free(ringkv_value *v);

typedef enum {
    RINGKV_EXPECT_VALUE = 0,    /* the key exists with this value */
    RINGKV_EXPECT_REVISION = 1, /* the key exists with this revision */
    RINGKV_EXPECT_ABSENT = 2,   /* the key does not exist */
} ringkv_expect_kind;

typedef struct {
    ringkv_expect_kind kind;
    const void *value; /* RINGKV_EXPECT_VALUE */
    size_t vlen;
    uint64_t revision; /* RINGKV_EXPECT_REVISION */
} ringkv_expect;

/* One key of a scan. */
typedef struct {
    void *key;
    size_t klen;
    ringkv_value value;
} ringkv_kv;

typedef struct {
    ringkv_kv *items;
    size_t n;
} ringkv_kvs;
void ringkv_kvs_free(ringkv_kvs *kvs);

/* Write results. */
typedef struct {
    uint64_t revision;      /* put/cas: the new revision; del: its index */
    uint64_t prev_revision; /* put/del: the revision it replaced (0: none) */
    bool duplicate;         /* answered from the session: an earlier try of
                               this call had already been applied */
    bool found;             /* del: the key existed */
} ringkv_write_result;

/* ======================================================== blocking API */

typedef struct ringkv ringkv_t;

/* Creates a client; it connects lazily. RINGKV_INVALID for a missing or
 * malformed endpoint list. */
ringkv_status ringkv_open(const ringkv_options *o, ringkv_t **out);
void ringkv_close(ringkv_t *c);

/* A read of `key` (out is filled on RINGKV_OK, left empty otherwise). */
ringkv_status ringkv_get(ringkv_t *c, const void *key, size_t klen,
                         ringkv_consistency cons, ringkv_value *out);
/* Stores a value. res may be NULL. */
ringkv_status ringkv_put(ringkv_t *c, const void *key, size_t klen,
                         const void *val, size_t vlen,
                         ringkv_write_result *res);
/* Deletes a key; RINGKV_NOT_FOUND when it did not exist. res may be NULL. */
ringkv_status ringkv_del(ringkv_t *c, const void *key, size_t klen,
                         ringkv_write_result *res);
/* Compare-and-set: writes new_value (or deletes the key when del is true)
 * if the expectation holds. On RINGKV_CAS_MISMATCH *cur (if not NULL)
 * holds the key's current value and revision (empty, revision 0, when the
 * key is absent). res may be NULL. */
ringkv_status ringkv_cas(ringkv_t *c, const void *key, size_t klen,
                         const ringkv_expect *e, const void *new_value,
                         size_t nvlen, bool del, ringkv_write_result *res,
                         ringkv_value *cur);
/* Keys starting with prefix, in key order across all shards, at most limit
 * (0 = 1000) of them, after start_after (NULL: from the first). Linearizable
 * per shard. keys_only leaves the values empty. */
ringkv_status ringkv_scan(ringkv_t *c, const void *prefix, size_t plen,
                          const void *start_after, size_t salen,
                          size_t limit, bool keys_only, ringkv_kvs *out);

/* ---------------------------------------------------------- admin */

typedef struct {
    uint64_t id;
    char client_addr[64];
    char peer_addr[64];
    int state; /* 0 active, 1 joining, 2 leaving, 3 removed */
} ringkv_node_info;

typedef struct {
    uint64_t id;
    uint64_t leader; /* as cached by this client (0: unknown) */
    uint64_t *replicas;
    size_t n_replicas;
    uint64_t *learners;
    size_t n_learners;
    size_t n_points;  /* ring points the shard owns */
    double ring_share; /* fraction of the key space */
    int split_phase;   /* 0 none, 1 preparing, 2 handoff, 3 done */
} ringkv_shard_info;

typedef struct {
    uint64_t cluster_id;
    uint64_t epoch;
    ringkv_node_info *nodes;
    size_t n_nodes;
    ringkv_shard_info *shards; /* shards[0] is the meta shard (id 0) */
    size_t n_shards;
} ringkv_shard_map;
void ringkv_shard_map_free(ringkv_shard_map *m);

/* The shard map as the cluster sees it now (fetched, not cached). */
ringkv_status ringkv_get_shard_map(ringkv_t *c, ringkv_shard_map *out);

typedef struct {
    uint64_t shard;
    int role; /* 0 follower, 1 pre-candidate, 2 candidate, 3 leader, 4 none */
    uint64_t leader, term, commit, applied;
} ringkv_shard_status;

typedef struct {
    uint64_t node_id;  /* 0 when unreachable */
    char addr[64];     /* the address asked */
    ringkv_status st;  /* RINGKV_OK or why it could not be asked */
    uint64_t cluster_id, uptime_ms;
    char version[32];
    ringkv_shard_status *shards;
    size_t n_shards;
} ringkv_node_status;

typedef struct {
    ringkv_node_status *nodes;
    size_t n_nodes;
} ringkv_cluster_status;
void ringkv_cluster_status_free(ringkv_cluster_status *s);

/* Asks every node of the map (or the endpoints, before a map is known) for
 * its status, in parallel; unreachable nodes are listed with their error. */
ringkv_status ringkv_get_cluster_status(ringkv_t *c, ringkv_cluster_status *out);

typedef struct {
    uint64_t epoch; /* shard-map epoch after the change */
    uint64_t shard;
    uint64_t index; /* Raft index of the change, when it went through a log */
    char message[128];
} ringkv_admin_result;

ringkv_status ringkv_member_list(ringkv_t *c, ringkv_node_info **nodes,
                                 size_t *n);
ringkv_status ringkv_member_add(ringkv_t *c, uint64_t node_id,
                                const char *peer_addr,
                                const char *client_addr,
                                ringkv_admin_result *res);
ringkv_status ringkv_member_remove(ringkv_t *c, uint64_t node_id,
                                   ringkv_admin_result *res);
/* to_node 0: the most caught-up follower. */
ringkv_status ringkv_leader_transfer(ringkv_t *c, uint64_t shard,
                                     uint64_t to_node,
                                     ringkv_admin_result *res);
/* Starts splitting data shard `shard`: about half of its ring arcs go to a
 * new shard on the same nodes (res->shard is its id). Returns once the
 * meta shard recorded the split; the hand-off completes in the background
 * (watch ringkv_get_shard_map: split_phase back to 0). RINGKV_UNAVAILABLE
 * while another split runs or the shard moves replicas; a shard already
 * splitting answers OK with its new shard again. */
ringkv_status ringkv_shard_split(ringkv_t *c, uint64_t shard,
                                 ringkv_admin_result *res);

/* The message of the last error on this handle ("" if none): what a node
 * said, or which node failed how. Valid until the next call. */
const char *ringkv_last_error(ringkv_t *c);

/* ---------------------------------------------------------- statistics */

typedef enum {
    RINGKV_BREAKER_CLOSED = 0,
    RINGKV_BREAKER_OPEN = 1,
    RINGKV_BREAKER_HALF_OPEN = 2,
} ringkv_breaker_state;

typedef struct {
    uint64_t calls, ok, errors;   /* completed calls; errors = not OK,
                                     NOT_FOUND or CAS_MISMATCH */
    uint64_t attempts, retries;   /* requests sent; retries among them */
    uint64_t timeouts;            /* calls that hit their deadline */
    uint64_t not_leader, wrong_shard, map_refreshes;
    uint64_t breaker_opened, breaker_closed; /* transitions, all nodes */
    uint64_t lat_p50_us, lat_p90_us, lat_p99_us, lat_p999_us, lat_max_us;
} ringkv_stats;

/* Statistics since open (the latency percentiles cover completed calls). */
void ringkv_get_stats(ringkv_t *c, ringkv_stats *out);
/* The breaker state of the node with this id (CLOSED if unknown). */
ringkv_breaker_state ringkv_breaker(ringkv_t *c, uint64_t node_id);

/* =========================================================== async API */

/*
 * Callbacks on the application's libuv loop. Each call returns RINGKV_OK
 * when the request was queued (the callback then runs exactly once, never
 * from inside the call itself) or an error (the callback never runs).
 * Keys and values are copied; they need not outlive the call. Pointers
 * handed to callbacks are valid only during the callback.
 */
struct uv_loop_s;
typedef struct ringkv_async ringkv_async_t;

ringkv_status ringkv_async_open(struct uv_loop_s *loop,
                                const ringkv_options *o,
                                ringkv_async_t **out);
/* Fails every pending call with RINGKV_CLOSED (their callbacks run), closes
 * the connections and calls done(arg) once every libuv handle is closed;
 * keep running the loop until then. */
void ringkv_async_close(ringkv_async_t *a, void (*done)(void *arg),
                        void *arg);

typedef void (*ringkv_get_cb)(void *arg, ringkv_status st,
                              const ringkv_value *v);
typedef void (*ringkv_write_cb)(void *arg, ringkv_status st,
                                const ringkv_write_result *res,
                                const ringkv_value *cur /* cas mismatch */);

ringkv_status ringkv_async_get(ringkv_async_t *a, const void *key,
                               size_t klen, ringkv_consistency cons,
                               ringkv_get_cb cb, void *arg);
ringkv_status ringkv_async_put(ringkv_async_t *a, const void *key,
                               size_t klen, const void *val, size_t vlen,
                               ringkv_write_cb cb, void *arg);
ringkv_status ringkv_async_del(ringkv_async_t *a, const void *key,
                               size_t klen, ringkv_write_cb cb, void *arg);
ringkv_status ringkv_async_cas(ringkv_async_t *a, const void *key,
                               size_t klen, const ringkv_expect *e,
                               const void *new_value, size_t nvlen, bool del,
                               ringkv_write_cb cb, void *arg);

void ringkv_async_get_stats(ringkv_async_t *a, ringkv_stats *out);
ringkv_breaker_state ringkv_async_breaker(ringkv_async_t *a,
                                          uint64_t node_id);

/*
 * TEST ONLY. Drop the reply of the next n writes after they reach a node,
 * as if the connection had lost them, so that the client retries them (with
 * the same session sequence number). Also settable with the environment
 * variable RINGKV_TEST_DROP_REPLIES=n at open. Never use in production.
 */
void ringkv_test_drop_replies(ringkv_t *c, unsigned n);

#ifdef __cplusplus
}
#endif
#endif
