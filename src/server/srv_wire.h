/* Peer frames: PeerBatch (proto/raft.proto) of many shards' Raft messages. */
#ifndef SRV_WIRE_H
#define SRV_WIRE_H

/*
 * After the peer handshake (a PeerHello each way, see srv_peer.h) every
 * frame is one PeerBatch, encoded by proto/raft_codec: all the messages one
 * node sends another in one flush, for any number of shards, with plain
 * heartbeats coalesced into columns (DESIGN.md §3). An empty batch is the
 * node-level keepalive, sent every heartbeat interval so that idle
 * (quiesced) groups notice a silent peer without per-group heartbeats.
 */

#include <stddef.h>
#include <stdint.h>

#include "raft.h"
#include "rk_buf.h"

/* Encodes n messages (n may be 0: a keepalive) from `from` to `to` as one
 * frame payload in a malloc'd buffer. RK_ETOOLARGE over max_bytes (the
 * caller splits the batch), RK_EINVAL, RK_ENOMEM. */
int srv_wire_encode(uint64_t from, uint64_t to,
                    const struct raft_msg *const *msgs, uint32_t n,
                    uint64_t max_bytes, uint8_t **out, size_t *len);
/* The same appended to out (the flush reuses one buffer for every frame);
 * out is unchanged on failure. */
int srv_wire_append(uint64_t from, uint64_t to,
                    const struct raft_msg *const *msgs, uint32_t n,
                    uint64_t max_bytes, struct rk_buf *out);

/* Decodes a frame received from node `from` by node `self` and calls fn for
 * each message. A batch claiming another sender or receiver is refused.
 * RK_EPROTO / RK_ETOOLARGE for garbage (nothing is handed out then), else 0
 * or fn's nonzero return. */
int srv_wire_decode(const uint8_t *buf, size_t len, uint64_t from,
                    uint64_t self, uint64_t max_bytes,
                    int (*fn)(void *arg, const struct raft_msg *m), void *arg);

#endif
