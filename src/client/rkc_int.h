/* libringkv internals: the async engine the blocking API is built on. */
#ifndef RKC_INT_H
#define RKC_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "ringkv/ringkv.h"
#include "rk_buf.h"
#include "rk_frame.h"
#include "rk_hist.h"
#include "rk_list.h"
#include "rk_proto.h"
#include "rk_rand.h"
#include "rkc_policy.h"
#include "shard.h"

#define RKC_ADDR_MAX 64

struct rkc_conn;

/* A node: a seed endpoint (id 0 until the map names it) or a map member. */
struct rkc_node {
    uint64_t id;
    char addr[RKC_ADDR_MAX];
    struct rkc_conn *conn;
    struct rkc_breaker br;
    bool in_map;
};

enum rkc_kind {
    RKC_GET,
    RKC_PUT,
    RKC_DEL,
    RKC_CAS,
    RKC_SCAN,
    RKC_STATUS,
    RKC_MAP,
    RKC_MEMBER_LIST,
    RKC_MEMBER_ADD,
    RKC_MEMBER_REMOVE,
    RKC_TRANSFER,
    RKC_SPLIT,
};

enum rkc_op_state {
    RKC_OP_NEW,
    RKC_OP_WAIT_MAP,   /* needs a shard map first */
    RKC_OP_WAIT_RETRY, /* backing off until retry_at */
    RKC_OP_INFLIGHT,   /* sent on a connection, waiting for the reply */
};

struct rkc_op;
/* Completion: resp is the node's answer (NULL on a local error). */
typedef void (*rkc_done_fn)(struct rkc_op *op, ringkv_status st,
                            const Ringkv__Response *resp);

struct rkc_op {
    struct ringkv_async *a;
    uint8_t kind;
    uint8_t state;
    uint8_t cons;
    uint8_t expect_kind;
    bool del;          /* cas: delete on match */
    bool keys_only;    /* scan */
    bool fixed;        /* only `node` may serve it (status of one node) */
    bool no_retry;
    bool internal;     /* the engine's own (map fetch): not in stats */
    uint32_t slot;
    uint32_t hops;     /* NOT_LEADER redirects followed in a row */
    uint32_t attempt;  /* tries sent so far */
    uint64_t rid;      /* request id of the try in flight (0: none) */
    uint64_t seq;      /* session sequence number (writes) */
    uint32_t sess;     /* writes: index of the session held */
    bool sess_tried;   /* writes: a session was taken (or none could be) */
    uint64_t shard;    /* scan/admin target shard */
    uint64_t arg_node; /* admin: node id */
    uint64_t expect_rev;
    uint32_t limit;
    struct rkc_node *node; /* the try in flight / the fixed target */
    uint64_t t_start, deadline, attempt_deadline, retry_at;
    uint8_t *key, *val, *expect_val, *start_after;
    size_t klen, vlen, evlen, salen;
    char addr1[RKC_ADDR_MAX], addr2[RKC_ADDR_MAX]; /* admin addresses */
    struct rk_list link;      /* a->ops */
    struct rk_list conn_link; /* conn->ops while in flight */
    rkc_done_fn done;
    void *cb;  /* the user's callback */
    void *arg;
    char errmsg[160];
};

struct rkc_conn {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    struct ringkv_async *a;
    struct rkc_node *node; /* NULL once detached (closing) */
    bool up, writing, closing;
    struct rk_frame_dec dec;
    struct rk_buf out;  /* frames waiting for the next write */
    struct rk_buf wbuf; /* frames being written */
    struct rk_list ops;   /* ops in flight on this connection */
    char rbuf[64 << 10];
};

struct rkc_session {
    uint64_t id;
    uint64_t seq;  /* the last seq used */
    uint32_t pool; /* the free list it returns to (shard % RKC_SESS_POOLS) */
};

/* Free sessions are kept per shard (shards beyond the count share a list):
 * the server keeps one session record per (shard, client id), so a write
 * takes a session that already wrote to its shard. With one shared list,
 * C concurrent writers over S shards left C x S session records on the
 * servers (16,384 for 256 writers on 64 shards, each written once per put
 * into a random LMDB leaf); per shard it is about the peak of writes in
 * flight to that shard, summed over the shards. */
#define RKC_SESS_POOLS 256u
struct rkc_sess_pool {
    uint32_t *free; /* indexes into ringkv_async.sess */
    uint32_t n, cap;
    uint32_t owned; /* sessions whose list this is (cap >= owned) */
};

struct rkc_shard {
    uint64_t id;
    uint64_t leader;  /* node id, 0 unknown */
    uint32_t rr;      /* rotation among replicas */
    uint64_t *replicas;
    uint32_t n_replicas;
    uint64_t *learners;
    uint32_t n_learners;
    uint32_t split_phase;
};

struct ringkv_async {
    uv_loop_t *loop;
    uv_timer_t sweeper;
    uv_prepare_t flusher;
    ringkv_options o;
    char *endpoints; /* copy of o.endpoints */
    struct rkc_breaker_cfg bcfg;
    struct rk_rand rng;
    uint64_t client_id; /* the first session's id; the others follow it */
    /* Sessions for exactly-once writes. A write holds one from submit to
     * completion, so each session has at most one write outstanding and
     * its seqs reach the server in order, however many writes the handle
     * has in flight (the server's per-session window stays small). */
    struct rkc_session *sess;
    uint32_t n_sess, cap_sess;
    struct rkc_sess_pool sess_pool[RKC_SESS_POOLS];
    uint64_t rid_gen;
    bool closing;
    unsigned open_handles;
    void (*close_done)(void *);
    void *close_arg;
    unsigned drop_replies; /* TEST ONLY */
    uint64_t next_probe;   /* when the sweeper next probes open nodes */

    /* nodes */
    struct rkc_node **nodes;
    uint32_t n_nodes;
    uint32_t rr; /* rotation for untargeted requests */

    /* shard map */
    bool have_map;
    bool map_fetching;
    uint64_t map_epoch, cluster_id;
    struct shard_ring ring;
    struct rkc_shard *shards;
    uint32_t n_shards;

    /* ops */
    struct rk_list ops;
    struct rkc_op **slots;
    uint32_t n_slots, cap_slots;
    uint32_t *free_slots;
    uint32_t n_free;
    uint32_t n_ops;

    /* statistics */
    ringkv_stats st;
    struct rk_hist lat;
    char last_error[200];
};

/* Engine (rkc_async.c). */
uint64_t rkc_now(void);
struct rkc_op *rkc_op_new(struct ringkv_async *a, uint8_t kind,
                          const void *key, size_t klen, const void *val,
                          size_t vlen, const void *ev, size_t evlen);
void rkc_op_submit(struct rkc_op *op);
/* Releases an op that was never submitted. */
void rkc_op_free(struct rkc_op *op);
void rkc_async_free_state(struct ringkv_async *a);
/* Sessions (exactly-once writes): a free one of the shard's list, or a new
 * one (-1 only when out of memory); and giving it back to its list. */
int rkc__session_take(struct ringkv_async *a, uint64_t shard, uint32_t *out);
void rkc__session_give(struct ringkv_async *a, uint32_t sess);
struct rkc_node *rkc_node_by_id(struct ringkv_async *a, uint64_t id);
struct rkc_shard *rkc_shard_by_id(struct ringkv_async *a, uint64_t id);
ringkv_status rkc_status_from_wire(int status);
ringkv_status rkc_check_key(const void *key, size_t klen);
ringkv_status rkc_async_init(struct ringkv_async *a, uv_loop_t *loop,
                             const ringkv_options *o);
/* Fails every op with RINGKV_CLOSED, closes every handle, then done(arg);
 * *a itself is not freed. */
void rkc_async_shutdown(struct ringkv_async *a, void (*done)(void *),
                        void *arg);
void rkc_stats(struct ringkv_async *a, ringkv_stats *out);
void rkc_value_set(ringkv_value *v, const void *data, size_t len,
                   uint64_t rev, uint64_t crev);

#endif
