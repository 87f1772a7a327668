/* Client API of ringkvd: framed, pipelined requests answered from Raft groups. */
#ifndef SRV_CLIENT_H
#define SRV_CLIENT_H

/*
 * The transport (srv_client.c) and the request semantics work on the
 * decoded forms below; srv_proto.c maps them to and from proto/ringkv.proto's
 * Request and Response (protobuf-c generated code, bounded unpacking), so
 * the wire schema is in one place.
 *
 * Semantics (DESIGN.md §5-7):
 *  - Requests pipeline: many may be outstanding on one connection; each
 *    response carries its request_id; responses leave in completion order.
 *  - Writes (put, delete, cas) are proposed on the key's shard and answered
 *    only after they are committed AND applied. (client_id, seq) makes them
 *    exactly-once: a retried write gets the original reply.
 *  - Reads are linearizable by default (batched ReadIndex); `lease` serves
 *    on the leader from local state while it holds a check-quorum lease;
 *    `stale` serves from any replica's local state.
 *  - A node that is not the shard's leader answers NOT_LEADER with the
 *    leader's client address when it knows it.
 *  - Limits: empty key INVALID_ARGUMENT; key over --max-key-bytes or value
 *    over --max-value-bytes TOO_LARGE; a frame over --max-frame-bytes closes
 *    the connection; an undecodable frame gets INVALID_ARGUMENT and the
 *    connection is closed (the stream can no longer be trusted).
 */

#include <stdbool.h>
#include <stdint.h>

#include "srv_metrics.h"
#include "srv_ring.h"

struct srv;
struct srv_clients;

enum srv_consistency {
    SRV_READ_LINEARIZABLE = 0,
    SRV_READ_LEASE = 1,
    SRV_READ_STALE = 2,
};

/* Operations beyond the KV ones (all counted as SRV_OP_OTHER). */
enum srv_admin {
    SRV_ADMIN_NONE = 0,
    SRV_ADMIN_MEMBER_LIST,
    SRV_ADMIN_TRANSFER_LEADER,
    SRV_ADMIN_UNSUPPORTED, /* unknown admin operation */
    SRV_ADMIN_MEMBER_ADD,
    SRV_ADMIN_MEMBER_REMOVE,
    SRV_ADMIN_SPLIT,        /* shard = donor; to_node = recipient (finish) */
};

struct srv_request {
    uint64_t request_id;
    uint64_t client_id;
    uint64_t seq;
    uint64_t shard_epoch;
    uint32_t timeout_ms;   /* 0 = the server's default */
    enum srv_op op;
    uint8_t admin;         /* enum srv_admin when op == SRV_OP_OTHER */
    uint8_t consistency;   /* enum srv_consistency */
    const uint8_t *key;    /* get/put/delete/cas key; scan prefix */
    uint32_t klen;
    const uint8_t *value;  /* put value; cas new value */
    uint32_t vlen;
    /* cas */
    bool cas_by_revision;  /* compare the revision, else the value */
    uint64_t expect_rev;   /* 0 = the key must be absent */
    const uint8_t *expect;
    uint32_t elen;
    bool cas_delete;       /* on match delete instead of writing value */
    /* scan */
    uint64_t shard;        /* data shard to scan (1..n); admin: the shard */
    const uint8_t *start;  /* first key to return (inclusive), may be NULL */
    uint32_t slen;
    uint32_t limit;
    bool keys_only;
    /* transfer leader: the target; member add/remove: the node */
    uint64_t to_node;
    bool split_finish;     /* admin split: internal finish request */
    /* member add */
    const char *peer_addr;
    const char *client_addr;
};

struct srv_kv {
    const uint8_t *key;
    uint32_t klen;
    const uint8_t *value;
    uint32_t vlen;
    uint64_t revision;
    uint64_t create_revision;
};

struct srv_shard_info {
    uint64_t shard;
    uint64_t leader;
    uint64_t term;
    uint64_t commit;
    uint64_t applied;
    uint8_t role; /* enum raft_role; 4 = not hosted */
    uint32_t n_replicas;
    uint64_t replicas[16];
    uint32_t n_learners;
    uint64_t learners[16];
    uint8_t split_phase; /* SplitState.Phase: 0 none, 1 preparing */
    uint64_t split_peer; /* the other side of the split */
};

struct srv_node_info {
    uint64_t id;
    const char *client_addr;
    const char *peer_addr;
    uint8_t state; /* enum shard_node_state, 0 = unknown (ACTIVE) */
};

struct srv_response {
    uint64_t request_id;
    enum srv_op op;            /* selects the result message */
    uint8_t admin;             /* enum srv_admin for SRV_OP_OTHER */
    int status;                /* 0 or RK_E*; mapped to the wire Status */
    const char *message;       /* optional detail for errors */
    uint64_t epoch;
    uint64_t leader_id;
    const char *leader_hint;   /* leader's client address, "" if unknown */
    /* get / put / delete / cas */
    bool found;
    const uint8_t *value;
    uint32_t vlen;
    uint64_t revision;
    uint64_t create_revision;
    uint64_t prev_revision;
    bool duplicate;
    /* scan */
    const struct srv_kv *items;
    uint32_t n_items;
    bool more;
    bool keys_only;
    /* status / shard map / members */
    uint64_t node_id;
    uint64_t cluster_id;
    uint64_t uptime_ms;
    uint32_t n_data_shards;
    uint32_t ring_vnodes;
    uint64_t ring_seed;
    const struct srv_ring_point *points;
    uint32_t n_points;
    const struct srv_shard_info *shards;
    uint32_t n_shards;
    const struct srv_node_info *nodes;
    uint32_t n_nodes;
    const uint8_t *map_blob; /* shard_map_encode'd map, NULL if none */
    size_t map_len;
    /* admin */
    uint64_t admin_shard;
    uint64_t admin_index;
};

/* ------------------------------------------------------------ srv_proto.c */

/* Decodes one Request frame; pointers in *out point into *owner, which
 * srv_proto_request_free() releases (also after an error). RK_EPROTO or
 * RK_ETOOLARGE for bytes that are not a Request; RK_EINVAL for a Request
 * that fails the structural checks (no operation, empty key, ...), with
 * out->request_id set and a reason in errmsg (RK_ERRMSG_SIZE bytes). */
int srv_proto_request_decode(const uint8_t *buf, size_t len,
                             struct srv_request *out, void **owner,
                             char *errmsg);
void srv_proto_request_free(void *owner);
/* The wire Status value (proto enum number) of an RK_E* code. */
int srv_proto_wire_status(int err);
/* Encodes a Response into a malloc'd buffer. RK_ENOMEM. */
int srv_proto_response_encode(const struct srv_response *r, uint8_t **out,
                              size_t *len);

/* ----------------------------------------------------------- srv_client.c */

int srv_clients_start(struct srv *s, struct srv_clients **out);
/* Stops listening and closes every connection (requests in flight are
 * dropped; their waiters were failed before). */
void srv_clients_close(struct srv_clients *c);
void srv_clients_free(struct srv_clients *c);


#endif
