/* Fuzz entry points: decoders under invariant checks. */
#include "fuzz_entry.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "meta.pb-c.h"
#include "raft_codec.h"
#include "rk_assert.h"
#include "rk_err.h"
#include "rk_frame.h"
#include "rk_buf.h"
#include "rk_proto.h"
#include "rk_rand.h"
#include "stor.h"
#include "stor_int.h"

/* ================================================================ frames */

/* What a decoder produced: frame count, a hash over the frames, the final
 * code and how many bytes were left partial. */
struct frame_sum {
    uint64_t frames;
    uint64_t hash;
    int rc;
    size_t pending;
};

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ULL;
    return h;
}

static void frame_run(const uint8_t *p, size_t n, size_t max, uint64_t seed,
                      struct frame_sum *out)
{
    struct rk_frame_dec d;
    rk_frame_dec_init(&d, max);
    struct rk_rand r;
    rk_rand_seed(&r, seed);
    memset(out, 0, sizeof(*out));
    out->hash = 0xcbf29ce484222325ULL;
    size_t pos = 0;
    do {
        /* seed 0: one slice; otherwise slices of 0..16 bytes. */
        size_t take = seed == 0 ? n - pos : (size_t)rk_rand_below(&r, 17);
        if (take > n - pos)
            take = n - pos;
        rk_frame_dec_feed(&d, p + pos, take);
        pos += take;
        int rc;
        const uint8_t *f;
        size_t len;
        while ((rc = rk_frame_dec_next(&d, &f, &len)) == 1) {
            RK_ASSERT(f != NULL && len <= d.max);
            out->hash = fnv(out->hash, (const uint8_t *)&len, sizeof len);
            out->hash = fnv(out->hash, f, len);
            out->frames++;
        }
        if (rc < 0) {
            RK_ASSERT(rc == RK_ETOOLARGE);
            out->rc = rc;
            break;
        }
    } while (pos < n);
    out->pending = out->rc ? 0 : rk_frame_dec_pending(&d);
    RK_ASSERT(out->rc || rk_frame_dec_partial(&d) == (out->pending > 0));
    rk_frame_dec_free(&d);
}

int rk_fuzz_frame_count(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    static const size_t maxes[] = {1, 7, 255, 4096, 0};
    size_t max = maxes[data[0] % (sizeof maxes / sizeof maxes[0])];
    uint64_t seed = (uint64_t)data[1] + 1;
    const uint8_t *p = data + 2;
    size_t n = size - 2;

    struct frame_sum whole, sliced;
    frame_run(p, n, max, 0, &whole);
    frame_run(p, n, max, seed, &sliced);
    /* The same frames, the same verdict, whatever the slicing. */
    RK_ASSERT(whole.frames == sliced.frames);
    RK_ASSERT(whole.hash == sliced.hash);
    RK_ASSERT(whole.rc == sliced.rc);
    RK_ASSERT(whole.pending == sliced.pending);
    return whole.rc == 0 && whole.pending == 0;
}

int rk_fuzz_frame(const uint8_t *data, size_t size)
{
    rk_fuzz_frame_count(data, size);
    return 0;
}

/* ========================================================== peer batches */

static bool msg_equal(const struct raft_msg *a, const struct raft_msg *b)
{
    if (a->type != b->type || a->shard != b->shard || a->from != b->from ||
        a->to != b->to || a->term != b->term || a->index != b->index ||
        a->log_term != b->log_term || a->commit != b->commit ||
        a->reject != b->reject || a->hint_index != b->hint_index ||
        a->hint_term != b->hint_term || a->context != b->context ||
        a->n_entries != b->n_entries || a->snap.index != b->snap.index ||
        a->snap.term != b->snap.term ||
        a->snap.conf.n_voters != b->snap.conf.n_voters ||
        a->snap.conf.n_learners != b->snap.conf.n_learners ||
        a->chunk_seq != b->chunk_seq || a->chunk_last != b->chunk_last ||
        a->chunk_len != b->chunk_len)
        return false;
    for (uint32_t k = 0; k < a->n_entries; k++) {
        const struct raft_entry *x = &a->entries[k], *y = &b->entries[k];
        if (x->term != y->term || x->index != y->index || x->type != y->type ||
            x->len != y->len || (x->len && memcmp(x->data, y->data, x->len)))
            return false;
    }
    for (uint32_t k = 0; k < a->snap.conf.n_voters; k++)
        if (a->snap.conf.voters[k] != b->snap.conf.voters[k])
            return false;
    for (uint32_t k = 0; k < a->snap.conf.n_learners; k++)
        if (a->snap.conf.learners[k] != b->snap.conf.learners[k])
            return false;
    return a->chunk_len == 0 ||
           memcmp(a->chunk_data, b->chunk_data, a->chunk_len) == 0;
}

static int check_msg_cb(void *arg, const struct raft_msg *m)
{
    uint32_t *n = arg;
    (*n)++;
    RK_ASSERT(m->type < RAFT_MSG__COUNT);
    RK_ASSERT(m->from != 0 && m->to != 0);
    RK_ASSERT(m->n_entries == 0 ||
              (m->type == RAFT_MSG_APPEND && m->entries != NULL));
    RK_ASSERT(m->chunk_len == 0 ||
              (m->type == RAFT_MSG_SNAPSHOT && m->chunk_data != NULL));
    RK_ASSERT(m->snap.conf.n_voters + m->snap.conf.n_learners <=
              RAFT_MAX_MEMBERS);
    for (uint32_t k = 0; k < m->n_entries; k++) {
        RK_ASSERT(m->entries[k].index == m->index + 1 + k);
        RK_ASSERT(m->entries[k].type <= RAFT_ENTRY_NOOP);
        RK_ASSERT(m->entries[k].len == 0 || m->entries[k].data != NULL);
    }
    return 0;
}

/* Encodes a decoded batch again. */
static void reencode(const struct raft_codec_batch *b, struct rk_buf *out)
{
    const struct raft_msg **ptrs = malloc((b->n_msgs + 1) * sizeof(*ptrs));
    RK_ASSERT(ptrs != NULL);
    for (uint32_t i = 0; i < b->n_msgs; i++)
        ptrs[i] = &b->msgs[i];
    int rc =
        raft_codec_batch_append(b->from, b->to, ptrs, b->n_msgs, NULL, out);
    /* Anything the decoder accepts, the encoder accepts. */
    RK_ASSERT(rc == 0);
    free(ptrs);
}

static int fuzz_batch(const uint8_t *data, size_t size)
{
    uint32_t seen = 0;
    uint64_t from = 0, to = 0;
    int rc = raft_codec_batch_decode(data, size, NULL, &from, &to, check_msg_cb,
                                     &seen);
    RK_ASSERT(rc == 0 || rc == RK_EPROTO || rc == RK_ETOOLARGE);
    if (rc)
        return 0;
    RK_ASSERT(from != 0 && to != 0);

    struct raft_codec_batch b1, b2, b3;
    RK_ASSERT(raft_codec_batch_decode_all(data, size, NULL, &b1) == 0);
    RK_ASSERT(b1.n_msgs == seen && b1.from == from && b1.to == to);
    /* The fast path (inputs in the encoder's own form) and protobuf-c
     * decode the same messages. */
    struct raft_codec_limits pc;
    raft_codec_limits_default(&pc);
    pc.protobuf_c_only = true;
    struct raft_codec_batch bp;
    RK_ASSERT(raft_codec_batch_decode_all(data, size, &pc, &bp) == 0);
    RK_ASSERT(bp.n_msgs == b1.n_msgs && bp.from == b1.from && bp.to == b1.to);
    for (uint32_t i = 0; i < bp.n_msgs; i++)
        RK_ASSERT(msg_equal(&bp.msgs[i], &b1.msgs[i]));
    raft_codec_batch_free(&bp);
    /* One re-encoding normalises (heartbeats coalesced, defaults dropped);
     * from then on encode/decode is a fixed point. */
    struct rk_buf e2, e3;
    rk_buf_init(&e2);
    rk_buf_init(&e3);
    reencode(&b1, &e2);
    RK_ASSERT(raft_codec_batch_decode_all(e2.data, e2.len, NULL, &b2) == 0);
    RK_ASSERT(b2.n_msgs == b1.n_msgs);
    reencode(&b2, &e3);
    RK_ASSERT(e3.len == e2.len && memcmp(e3.data, e2.data, e2.len) == 0);
    RK_ASSERT(raft_codec_batch_decode_all(e3.data, e3.len, NULL, &b3) == 0);
    RK_ASSERT(b3.n_msgs == b2.n_msgs);
    for (uint32_t i = 0; i < b2.n_msgs; i++)
        RK_ASSERT(msg_equal(&b2.msgs[i], &b3.msgs[i]));
    raft_codec_batch_free(&b1);
    raft_codec_batch_free(&b2);
    raft_codec_batch_free(&b3);
    rk_buf_free(&e2);
    rk_buf_free(&e3);
    return 1;
}

static int fuzz_hello(const uint8_t *data, size_t size)
{
    struct raft_codec_hello h, g;
    int rc = raft_codec_hello_decode(data, size, &h);
    RK_ASSERT(rc == 0 || rc == RK_EPROTO || rc == RK_ETOOLARGE);
    if (rc)
        return 0;
    RK_ASSERT(h.version != 0 && h.node_id != 0);
    RK_ASSERT(strlen(h.peer_addr) <= RAFT_CODEC_ADDR_MAX);
    struct rk_buf b;
    rk_buf_init(&b);
    RK_ASSERT(raft_codec_hello_append(&h, &b) == 0);
    RK_ASSERT(raft_codec_hello_decode(b.data, b.len, &g) == 0);
    RK_ASSERT(memcmp(&h, &g, sizeof h) == 0);
    rk_buf_free(&b);
    return 1;
}

int rk_fuzz_peer_count(const uint8_t *data, size_t size)
{
    return fuzz_batch(data, size) + fuzz_hello(data, size);
}

int rk_fuzz_peer(const uint8_t *data, size_t size)
{
    rk_fuzz_peer_count(data, size);
    return 0;
}

/* ======================================================= client messages */

/* Unpacks as desc; on success packs, unpacks and packs again, and checks
 * the two packings agree (packing is canonical). */
static ProtobufCMessage *unpack_repack(const ProtobufCMessageDescriptor *desc,
                                       const uint8_t *data, size_t size)
{
    ProtobufCMessage *m;
    int rc = rk_proto_unpack(desc, data, size, 0, &m);
    RK_ASSERT(rc == 0 || rc == RK_EPROTO || rc == RK_ETOOLARGE);
    if (rc)
        return NULL;
    uint8_t *p1, *p2;
    size_t n1, n2;
    RK_ASSERT(rk_proto_pack(m, 0, &p1, &n1) == 0);
    /* The canonical packing can be shorter than the input (overlong
     * varints, repeated singular fields), so the default budget of the
     * shorter form is not the question here: give it the cap. */
    ProtobufCMessage *m2;
    RK_ASSERT(rk_proto_unpack(desc, p1, n1, RK_PROTO_MEM_CAP, &m2) == 0);
    RK_ASSERT(rk_proto_pack(m2, 0, &p2, &n2) == 0);
    RK_ASSERT(n1 == n2 && memcmp(p1, p2, n1) == 0);
    rk_proto_free(m2);
    free(p1);
    free(p2);
    return m;
}

int rk_fuzz_client_count(const uint8_t *data, size_t size)
{
    int accepted = 0;
    ProtobufCMessage *m =
        unpack_repack(&ringkv__request__descriptor, data, size);
    if (m) {
        char err[RK_ERRMSG_SIZE];
        int rc = rk_proto_request_check((const Ringkv__Request *)m, err);
        RK_ASSERT(rc == 0 || rc == RK_EINVAL);
        accepted += rc == 0;
        rk_proto_free(m);
    }
    m = unpack_repack(&ringkv__response__descriptor, data, size);
    if (m) {
        const Ringkv__Response *rs = (const Ringkv__Response *)m;
        (void)rk_status_name(rs->status);
        (void)rk_status_to_err(rs->status);
        accepted++;
        rk_proto_free(m);
    }
    m = unpack_repack(&ringkv__shard_map__descriptor, data, size);
    accepted += m != NULL;
    rk_proto_free(m);
    return accepted;
}

int rk_fuzz_client(const uint8_t *data, size_t size)
{
    rk_fuzz_client_count(data, size);
    return 0;
}

/* ================================================================= store */

/* A WAL record (stor__batch_decode), a state machine command
 * (stor_cmd_decode) and a log chunk (stor__logc_*): all come from disk or
 * the log, never trusted. What decodes must encode to bytes that decode to
 * the same encoding; a chunk is refused (RK_ECORRUPT), never read past. */

static int store_batch(const uint8_t *data, size_t size)
{
    struct stor_batch *b = NULL, *b2 = NULL;
    struct rk_buf o, o2;
    rk_buf_init(&o);
    rk_buf_init(&o2);
    if (stor_batch_new(&b) || stor_batch_new(&b2))
        abort();
    int rc = stor__batch_decode(data, size, b);
    RK_ASSERT(rc == 0 || rc == RK_EPROTO || rc == RK_EINVAL ||
              rc == RK_ETOOLARGE);
    if (rc == 0) {
        RK_ASSERT(stor__batch_encode(b, &o) == 0);
        RK_ASSERT(stor__batch_decode(o.data, o.len, b2) == 0);
        RK_ASSERT(stor__batch_encode(b2, &o2) == 0);
        RK_ASSERT(o.len == o2.len && memcmp(o.data, o2.data, o.len) == 0);
    }
    rk_buf_free(&o);
    rk_buf_free(&o2);
    stor_batch_free(b);
    stor_batch_free(b2);
    return rc == 0;
}

static int store_cmd(const uint8_t *data, size_t size)
{
    struct stor_cmd c;
    int rc = stor_cmd_decode(data, size, &c);
    RK_ASSERT(rc == 0 || rc == RK_EPROTO || rc == RK_ETOOLARGE);
    if (rc != 0)
        return 0;
    uint64_t *arcs = NULL;
    if (c.op == STOR_CMD_SPLIT) {
        arcs = malloc(((size_t)c.n_arcs + 1) * 2 * sizeof(*arcs));
        if (arcs == NULL)
            abort();
        for (uint32_t i = 0; i < c.n_arcs; i++)
            stor_cmd_arc(&c, i, &arcs[2 * i], &arcs[2 * i + 1]);
        c.arcs = arcs;
    }
    /* The decoder's promise: what it accepts is exactly one encoding. */
    size_t n = stor_cmd_size(&c), len = 0;
    uint8_t *buf = malloc(n + 1);
    if (buf == NULL)
        abort();
    RK_ASSERT(stor_cmd_encode(&c, buf, n, &len) == 0);
    RK_ASSERT(len == size && memcmp(buf, data, size) == 0);
    free(buf);
    free(arcs);
    return 1;
}

static int store_logc(const uint8_t *data, size_t size)
{
    struct stor__logc c;
    if (stor__logc_open(data, size, &c) != 0)
        return 0;
    RK_ASSERT(c.count >= 1 && c.data >= data && c.data + c.data_len ==
                                                    data + size);
    /* Every entry reads in bounds or is refused alone; a chunk that
     * checks reads all of its data, in order. */
    size_t sum = 0;
    bool all = true;
    for (uint32_t j = 0; j < c.count; j++) {
        raft_term t;
        uint8_t type;
        const uint8_t *d;
        uint32_t len;
        int rc = stor__logc_entry(&c, j, &t, &type, &d, &len);
        RK_ASSERT(rc == 0 || rc == RK_ECORRUPT);
        if (rc) {
            all = false;
            continue;
        }
        RK_ASSERT(d >= c.data && d + len <= c.data + c.data_len);
        sum += len;
    }
    RK_ASSERT(stor__logc_entry(&c, c.count, NULL, NULL, NULL, NULL) ==
              RK_ECORRUPT);
    int ck = stor__logc_check(&c);
    RK_ASSERT(ck == 0 || ck == RK_ECORRUPT);
    RK_ASSERT(ck != 0 || (all && sum == c.data_len));
    return ck == 0;
}

int rk_fuzz_store_count(const uint8_t *data, size_t size)
{
    return store_batch(data, size) + store_cmd(data, size) +
           store_logc(data, size);
}

int rk_fuzz_store(const uint8_t *data, size_t size)
{
    rk_fuzz_store_count(data, size);
    return 0;
}
