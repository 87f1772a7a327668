/* Peer wire codec: struct raft_msg batches <-> PeerBatch, and PeerHello. */
#ifndef RAFT_CODEC_H
#define RAFT_CODEC_H

/*
 * A PeerBatch (proto/raft.proto) carries every message one node sends to
 * one other node in one frame, for any number of shards. Encoding moves
 * plain heartbeats and heartbeat responses (only shard, term, commit and
 * context set, from/to equal to the batch's) into the coalesced column form
 * and omits from/to when they equal the batch's; decoding undoes both, so a
 * round trip gives back the same messages. Order: the non-coalesced
 * messages in their order, then heartbeats, then heartbeat responses (Raft
 * tolerates reordering; within each class the order is kept).
 *
 * Decoding is all-or-nothing. A walk over the wire bytes first counts the
 * messages and entries (too many: RK_EPROTO, before any allocation); the
 * batch is then unpacked under a memory budget sized from those counts and
 * the length (what a well-formed batch of that shape needs: 8 bytes per
 * input byte + 64 KiB + a fixed cost per message and per entry; at most
 * ~60 MiB for a 4 MiB batch of the default limits), and every field is
 * checked against the limits and the ranges of raft.h before the first
 * message is handed out. Violations give RK_EPROTO (RK_ETOOLARGE when the
 * bytes exceed the batch limit or the budget), never a crash or an
 * unbounded allocation.
 * Checked: message and entry types, from/to non-zero, entries only on
 * APPEND and with consecutive indexes after the message's index, entry and
 * chunk sizes, counts of messages and entries, conf-state sizes
 * (RAFT_MAX_MEMBERS), chunk data only on SNAPSHOT, coalesced columns of
 * equal length. Semantic checks (terms, commit rules) stay in the core.
 *
 * Batches in the exact form the encoder writes (fields in order, packed,
 * no unknown or repeated fields) take a fast path that reads the wire
 * bytes directly, with the same checks, into one block; entry and chunk
 * bytes then point into buf. Anything else is decoded by protobuf-c as
 * described above, with the same results and errors.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"
#include "rk_buf.h"

#define RAFT_CODEC_MAX_MSGS        (1u << 16)
#define RAFT_CODEC_MAX_ENTRIES     (1u << 16)
#define RAFT_CODEC_MAX_ENTRY_BYTES ((uint32_t)4 << 20)
#define RAFT_CODEC_MAX_CHUNK_BYTES ((uint32_t)4 << 20)
#define RAFT_CODEC_MAX_BATCH_BYTES ((size_t)4 << 20)

struct raft_codec_limits {
    uint32_t max_msgs;        /* messages per batch, heartbeats included */
    uint32_t max_entries;     /* entries per APPEND */
    uint32_t max_entry_bytes; /* payload of one entry */
    uint32_t max_chunk_bytes; /* payload of one snapshot chunk */
    size_t max_batch_bytes;   /* encoded batch (the frame payload) */
    size_t max_decode_mem;    /* 0: sized from the counts (see below) */
    /* Tests: decode with protobuf-c even what the fast path reads (see
     * below); a memory budget (max_decode_mem) does the same. */
    bool protobuf_c_only;
};

/* Fills in the RAFT_CODEC_MAX_* defaults. A NULL limits pointer given to
 * the functions below means these defaults. */
void raft_codec_limits_default(struct raft_codec_limits *l);

/* Encodes n messages sent by node `from` to node `to` as one PeerBatch and
 * appends it to out (which may already hold a frame header). Messages are
 * only read. RK_EINVAL for a message that breaks raft.h's rules (type out of
 * range, entries or chunk pointer missing, from/to 0), RK_ETOOLARGE when
 * the batch (or one field) is over the limits (out is then unchanged),
 * RK_ENOMEM. n = 0 encodes an empty batch (a keepalive). */
int raft_codec_batch_append(uint64_t from, uint64_t to,
                            const struct raft_msg *const *msgs, uint32_t n,
                            const struct raft_codec_limits *lim,
                            struct rk_buf *out);

/* The same into a malloc'd buffer the caller free()s. */
int raft_codec_batch_encode(uint64_t from, uint64_t to,
                            const struct raft_msg *const *msgs, uint32_t n,
                            const struct raft_codec_limits *lim, uint8_t **out,
                            size_t *len);

/* Called for each decoded message (borrowed for the call); a nonzero
 * return stops decoding and is returned by raft_codec_batch_decode. */
typedef int (*raft_codec_msg_cb)(void *arg, const struct raft_msg *m);

/* Checks the whole batch, stores its from/to (either may be NULL), then
 * hands each message to cb. 0, RK_EPROTO, RK_ETOOLARGE, RK_ENOMEM, or cb's
 * return. */
int raft_codec_batch_decode(const uint8_t *buf, size_t len,
                            const struct raft_codec_limits *lim, uint64_t *from,
                            uint64_t *to, raft_codec_msg_cb cb, void *arg);

/* A decoded batch that owns its messages until raft_codec_batch_free.
 * Entry and chunk data point into buf or into memory the batch owns: buf
 * must stay unchanged until raft_codec_batch_free. */
struct raft_codec_batch {
    uint64_t from;
    uint64_t to;
    struct raft_msg *msgs;
    uint32_t n_msgs;
    void *priv;
};

int raft_codec_batch_decode_all(const uint8_t *buf, size_t len,
                                const struct raft_codec_limits *lim,
                                struct raft_codec_batch *out);
void raft_codec_batch_free(struct raft_codec_batch *b);

/* ------------------------------------------------------------- handshake */

#define RAFT_CODEC_PEER_VERSION 1
#define RAFT_CODEC_ADDR_MAX     255 /* longest address, bytes */
/* A hello is small; anything bigger is garbage. */
#define RAFT_CODEC_HELLO_MAX_BYTES 1024

struct raft_codec_hello {
    uint32_t version;
    uint64_t cluster_id;
    uint64_t node_id;    /* the sender */
    uint64_t to_node_id; /* whom the sender believes it reached */
    bool ack;
    char peer_addr[RAFT_CODEC_ADDR_MAX + 1];
    char client_addr[RAFT_CODEC_ADDR_MAX + 1];
};

/* RK_EINVAL for node_id 0 or version 0; appends to out. */
int raft_codec_hello_append(const struct raft_codec_hello *h,
                            struct rk_buf *out);
/* RK_EPROTO for garbage, version 0, node_id 0, an address that is too long;
 * RK_ETOOLARGE over RAFT_CODEC_HELLO_MAX_BYTES. The
 * caller checks cluster id, receiver id and version. */
int raft_codec_hello_decode(const uint8_t *buf, size_t len,
                            struct raft_codec_hello *out);

#endif
