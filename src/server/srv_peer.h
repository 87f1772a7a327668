/* Peer transport: one outbound TCP connection per peer node, with handshake. */
#ifndef SRV_PEER_H
#define SRV_PEER_H

/*
 * Topology (canonical/raft and etcd do the same): a node SENDS to peer P only
 * on the one connection it dialled to P, and RECEIVES from P only on the
 * connection P dialled to it. So there is one connection per peer node in
 * each direction, and no dial race to arbitrate.
 *
 * Handshake: the first frame on a connection is a PeerHello
 * (proto/raft.proto, via raft_codec): version, cluster id, sender id, the
 * receiver id the sender believes it reached, and the sender's client
 * address. The dialled node checks cluster id and receiver id and answers
 * with an ack (a PeerHello with ack set) carrying its own; either side
 * closes on a mismatch with a logged reason. A connection is UP once the
 * ack arrived; until then, and while it is down, sends are dropped (Raft
 * retransmits) and the owner is told the peer is unreachable.
 *
 * After the handshake every frame is opaque to this layer: the driver sends
 * one encoded PeerBatch per peer per flush, carrying the messages of many
 * shards and the coalesced heartbeats.
 *
 * Reconnect: exponential backoff from 50 ms to 5 s with +-25% jitter, reset
 * after a successful handshake.
 */

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "rk_err.h"
#include "rk_rand.h"
#include "srv_config.h"
#include "srv_conn.h"

#define SRV_PEER_BACKOFF_MIN_MS 50
#define SRV_PEER_BACKOFF_MAX_MS 5000
/* Queued but unsent bytes to one peer beyond which sends are dropped. */
#define SRV_PEER_MAX_QUEUE (64u << 20)
#define SRV_PEER_HELLO 1
#define SRV_PEER_ACK 2

struct srv_peers;

enum srv_peer_state {
    SRV_PEER_DOWN = 0,    /* waiting for the retry timer */
    SRV_PEER_CONNECTING,  /* uv_tcp_connect in flight */
    SRV_PEER_HANDSHAKING, /* hello sent, waiting for the ack */
    SRV_PEER_UP,
};

struct srv_peer_conn; /* a connection of either direction */

struct srv_peer {
    uint64_t id;
    struct srv_peers *set;
    struct sockaddr_storage addr;
    char addr_text[SRV_HOST_MAX + 16];
    char client_addr[256]; /* announced by the peer in its hello/ack */
    enum srv_peer_state state;
    struct srv_peer_conn *out; /* the outbound connection, if any */
    bool connect_pending;
    uv_timer_t retry;
    uint32_t backoff_ms;
    uint64_t connects, drops;
    bool removed;
};

/* Delivers one post-handshake frame received from node `from`. Returning
 * nonzero closes that inbound connection (malformed batch). */
typedef int (*srv_peer_recv_cb)(void *data, uint64_t from, const uint8_t *buf,
                                size_t len);
/* A peer went UP or DOWN (the driver reports unreachable on DOWN). */
typedef void (*srv_peer_state_cb)(void *data, uint64_t peer, bool up);

struct srv_peers {
    uv_loop_t *loop;
    uint64_t cluster_id;
    uint64_t self;
    char client_addr[256];
    uint64_t max_frame;
    srv_peer_recv_cb on_recv;
    srv_peer_state_cb on_state;
    void *data;
    struct rk_rand rand;

    uv_tcp_t listener;
    bool listening;
    /* Outgoing connections leave from the peer listener's IP (port 0), so
     * that every node's Raft traffic carries its own source address: nodes
     * on distinct loopback addresses can then be partitioned by address
     * (jepsen/). Unset when listening on a wildcard address. */
    struct sockaddr_storage local;
    bool bind_local;
    struct srv_peer *peers[SRV_MAX_NODES];
    uint32_t n_peers;
    struct srv_peer_conn *inbound; /* list of accepted connections */
    unsigned open_handles;         /* for the counted shutdown */
    bool closing;
    void (*closed_cb)(struct srv_peers *);

    uint64_t bytes_in, bytes_out, frames_in, frames_out;
    char errmsg[RK_ERRMSG_SIZE];
};

/* Binds the peer listener. Returns 0 or RK_EIO with errmsg. */
int srv_peers_init(struct srv_peers *ps, uv_loop_t *loop, uint64_t cluster_id,
                   uint64_t self, const char *client_addr,
                   const struct srv_addr *listen, uint64_t max_frame,
                   srv_peer_recv_cb on_recv, srv_peer_state_cb on_state,
                   void *data);
/* The port the listener bound (for listen port 0). */
int srv_peers_port(const struct srv_peers *ps);

/* Adds a peer and starts dialling it. RK_EEXIST, RK_ENOMEM, RK_EINVAL. */
int srv_peers_add(struct srv_peers *ps, uint64_t id,
                  const struct sockaddr_storage *addr);
struct srv_peer *srv_peers_get(struct srv_peers *ps, uint64_t id);

/* Queues one frame to `to`. RK_EUNAVAILABLE if it is not UP or its queue is
 * full (the frame is dropped), RK_ENOTFOUND for an unknown peer. */
int srv_peers_send(struct srv_peers *ps, uint64_t to, const uv_buf_t *parts,
                   unsigned n_parts);
bool srv_peers_is_up(struct srv_peers *ps, uint64_t id);

/* Closes everything; closed_cb runs once all handles are gone. */
void srv_peers_close(struct srv_peers *ps, void (*closed_cb)(struct srv_peers *));

/* Encodes a hello (kind SRV_PEER_HELLO or SRV_PEER_ACK) into out; returns
 * its length, 0 if it does not fit. Decoding refuses garbage, a version
 * other than ours and an address with control bytes or longer than cap - 1
 * (RK_EPROTO). Exposed for tests. */
size_t srv_peer_hello_encode(uint8_t *out, size_t cap, uint8_t kind,
                             uint64_t cluster_id, uint64_t from, uint64_t to,
                             const char *client_addr);
int srv_peer_hello_decode(const uint8_t *buf, size_t len, uint8_t *kind,
                          uint64_t *cluster_id, uint64_t *from, uint64_t *to,
                          char *client_addr, size_t cap);

#endif
