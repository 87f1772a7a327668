/* Peer frames: the kind byte and the batch of Raft messages of many shards. */
#ifndef SRV_WIRE_H
#define SRV_WIRE_H

/*
 * Every frame after the peer handshake starts with one kind byte:
 *   SRV_WIRE_KEEPALIVE (0): nothing else; node-level liveness, sent every
 *       heartbeat interval so that idle (quiesced) groups notice a silent
 *       peer without per-group heartbeats.
 *   SRV_WIRE_RAFT (1): an encoded PeerBatch (proto/raft.proto) holding the
 *       messages of many shards for one destination node.
 */

#include <stddef.h>
#include <stdint.h>

#include "raft.h"

#define SRV_WIRE_KEEPALIVE 0
#define SRV_WIRE_RAFT 1

/* Encodes n messages (all to one node) as a frame body, kind byte first,
 * into a malloc'd buffer. RK_ETOOLARGE over max_bytes, RK_ENOMEM. */
int srv_wire_encode(const struct raft_msg *const *msgs, uint32_t n,
                    uint64_t max_bytes, uint8_t **out, size_t *len);

/* Decodes a SRV_WIRE_RAFT frame body (after the kind byte) from node
 * `from` and calls fn for each message (messages claiming another sender
 * are refused). Returns RK_EPROTO for garbage, else 0. */
int srv_wire_decode(const uint8_t *buf, size_t len, uint64_t from,
                    int (*fn)(void *arg, const struct raft_msg *m), void *arg);

#endif
