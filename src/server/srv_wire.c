/* Peer frames: a thin layer over proto/raft_codec with ringkvd's limits. */
#include "srv_wire.h"

#include "raft_codec.h"
#include "rk_err.h"

static void limits(uint64_t max_bytes, struct raft_codec_limits *l)
{
    raft_codec_limits_default(l);
    l->max_batch_bytes = (size_t)max_bytes;
    /* One entry or chunk may fill a frame (a 1 MiB value plus its key and
     * command header is well under the 4 MiB default frame). */
    if (max_bytes < l->max_entry_bytes)
        l->max_entry_bytes = (uint32_t)max_bytes;
    if (max_bytes < l->max_chunk_bytes)
        l->max_chunk_bytes = (uint32_t)max_bytes;
}

int srv_wire_encode(uint64_t from, uint64_t to,
                    const struct raft_msg *const *msgs, uint32_t n,
                    uint64_t max_bytes, uint8_t **out, size_t *len)
{
    struct raft_codec_limits l;
    limits(max_bytes, &l);
    return raft_codec_batch_encode(from, to, msgs, n, &l, out, len);
}

int srv_wire_append(uint64_t from, uint64_t to,
                    const struct raft_msg *const *msgs, uint32_t n,
                    uint64_t max_bytes, struct rk_buf *out)
{
    struct raft_codec_limits l;
    limits(max_bytes, &l);
    return raft_codec_batch_append(from, to, msgs, n, &l, out);
}

int srv_wire_decode(const uint8_t *buf, size_t len, uint64_t from,
                    uint64_t self, uint64_t max_bytes,
                    int (*fn)(void *arg, const struct raft_msg *m), void *arg)
{
    struct raft_codec_limits l;
    limits(max_bytes, &l);
    /* Check the batch's addressing before any message is handed out: decode
     * all of it first (raft_codec validates everything up front). */
    struct raft_codec_batch b;
    int rv = raft_codec_batch_decode_all(buf, len, &l, &b);
    if (rv != 0)
        return rv;
    if (b.from != from || b.to != self) {
        raft_codec_batch_free(&b);
        return RK_EPROTO;
    }
    for (uint32_t i = 0; i < b.n_msgs && rv == 0; i++) {
        if (b.msgs[i].from != from || b.msgs[i].to != self)
            rv = RK_EPROTO;
        else
            rv = fn(arg, &b.msgs[i]);
    }
    raft_codec_batch_free(&b);
    return rv;
}
