/* Peer wire codec: struct raft_msg batches <-> PeerBatch, and PeerHello. */
#include "raft_codec.h"

#include <stdlib.h>
#include <string.h>

#include "raft.pb-c.h"
#include "rk_assert.h"
#include "rk_err.h"
#include "rk_proto.h"

/* raft.proto's enums use raft.h's numbers, so conversions are casts. */
#define SAME(a, b) ((int)(a) == (int)(b))
_Static_assert(
    SAME(RINGKV__RAFT_MESSAGE__TYPE__PREVOTE, RAFT_MSG_PREVOTE) &&
        SAME(RINGKV__RAFT_MESSAGE__TYPE__PREVOTE_RESP, RAFT_MSG_PREVOTE_RESP) &&
        SAME(RINGKV__RAFT_MESSAGE__TYPE__VOTE, RAFT_MSG_VOTE) &&
        SAME(RINGKV__RAFT_MESSAGE__TYPE__VOTE_RESP, RAFT_MSG_VOTE_RESP) &&
        SAME(RINGKV__RAFT_MESSAGE__TYPE__APPEND, RAFT_MSG_APPEND) &&
        SAME(RINGKV__RAFT_MESSAGE__TYPE__APPEND_RESP, RAFT_MSG_APPEND_RESP) &&
        SAME(RINGKV__RAFT_MESSAGE__TYPE__HEARTBEAT, RAFT_MSG_HEARTBEAT) &&
        SAME(RINGKV__RAFT_MESSAGE__TYPE__HEARTBEAT_RESP,
             RAFT_MSG_HEARTBEAT_RESP) &&
        SAME(RINGKV__RAFT_MESSAGE__TYPE__SNAPSHOT, RAFT_MSG_SNAPSHOT) &&
        SAME(RINGKV__RAFT_MESSAGE__TYPE__SNAPSHOT_RESP,
             RAFT_MSG_SNAPSHOT_RESP) &&
        SAME(RINGKV__RAFT_MESSAGE__TYPE__TIMEOUT_NOW, RAFT_MSG_TIMEOUT_NOW) &&
        RAFT_MSG__COUNT == 11,
    "raft.proto RaftMessage.Type must match enum raft_msg_type");
_Static_assert(SAME(RINGKV__RAFT_ENTRY__TYPE__NORMAL, RAFT_ENTRY_NORMAL) &&
                   SAME(RINGKV__RAFT_ENTRY__TYPE__CONF, RAFT_ENTRY_CONF) &&
                   SAME(RINGKV__RAFT_ENTRY__TYPE__NOOP, RAFT_ENTRY_NOOP),
               "raft.proto RaftEntry.Type must match enum raft_entry_type");
#undef SAME

void raft_codec_limits_default(struct raft_codec_limits *l)
{
    l->max_msgs = RAFT_CODEC_MAX_MSGS;
    l->max_entries = RAFT_CODEC_MAX_ENTRIES;
    l->max_entry_bytes = RAFT_CODEC_MAX_ENTRY_BYTES;
    l->max_chunk_bytes = RAFT_CODEC_MAX_CHUNK_BYTES;
    l->max_batch_bytes = RAFT_CODEC_MAX_BATCH_BYTES;
    l->max_decode_mem = 0;
    l->protobuf_c_only = false;
}

static const struct raft_codec_limits *
limits_or_default(const struct raft_codec_limits *lim,
                  struct raft_codec_limits *tmp)
{
    if (lim)
        return lim;
    raft_codec_limits_default(tmp);
    return tmp;
}

static bool snap_is_zero(const struct raft_snapshot_meta *s)
{
    return s->index == 0 && s->term == 0 && s->conf.n_voters == 0 &&
           s->conf.n_learners == 0;
}

/* A heartbeat (response) that the coalesced form carries without loss. */
static bool coalescible(const struct raft_msg *m, uint64_t from, uint64_t to)
{
    return (m->type == RAFT_MSG_HEARTBEAT ||
            m->type == RAFT_MSG_HEARTBEAT_RESP) &&
           m->from == from && m->to == to && m->index == 0 &&
           m->log_term == 0 && m->n_entries == 0 && !m->reject &&
           m->hint_index == 0 && m->hint_term == 0 && snap_is_zero(&m->snap) &&
           m->chunk_seq == 0 && !m->chunk_last && m->chunk_len == 0;
}

/* ============================================================== encoding */

/* Checks a message the local core produced against raft.h's rules. */
static int check_out_msg(const struct raft_msg *m,
                         const struct raft_codec_limits *lim)
{
    if (m == NULL || m->type >= RAFT_MSG__COUNT || m->from == 0 || m->to == 0)
        return RK_EINVAL;
    if (m->n_entries > 0) {
        if (m->type != RAFT_MSG_APPEND || m->entries == NULL)
            return RK_EINVAL;
        if (m->n_entries > lim->max_entries)
            return RK_ETOOLARGE;
        if (m->index > UINT64_MAX - m->n_entries)
            return RK_EINVAL;
        for (uint32_t k = 0; k < m->n_entries; k++) {
            const struct raft_entry *e = &m->entries[k];
            if (e->type > RAFT_ENTRY_NOOP || (e->len > 0 && e->data == NULL) ||
                e->index != m->index + 1 + k)
                return RK_EINVAL;
            if (e->len > lim->max_entry_bytes)
                return RK_ETOOLARGE;
        }
    }
    if (m->chunk_len > 0) {
        if (m->type != RAFT_MSG_SNAPSHOT || m->chunk_data == NULL)
            return RK_EINVAL;
        if (m->chunk_len > lim->max_chunk_bytes)
            return RK_ETOOLARGE;
    }
    const struct raft_conf_state *c = &m->snap.conf;
    if (c->n_voters > RAFT_MAX_MEMBERS || c->n_learners > RAFT_MAX_MEMBERS ||
        c->n_voters + c->n_learners > RAFT_MAX_MEMBERS)
        return RK_EINVAL;
    return 0;
}

/* The encoder writes the PeerBatch's wire bytes itself, in one sizing pass
 * and one writing pass, instead of building protobuf-c structs (a calloc per
 * array) and packing them: the peer batch is encoded once per destination
 * in every loop iteration, which at many shards is once per Raft round. The
 * bytes are the ones protobuf-c packs for the same message (fields in
 * number order, proto3 zero scalars left out, repeated uint64 packed, a
 * present submessage written even when empty); the tests unpack, re-pack
 * with protobuf-c and compare. */

#define WT_VARINT 0u
#define WT_LEN 2u

static size_t vsize(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_v(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Field numbers below 16 take a one-byte tag, 16 and 17 two bytes. */
static size_t tsize(unsigned f)
{
    return f < 16 ? 1 : 2;
}

/* A proto3 varint scalar (uint64, uint32, bool, enum): absent when zero. */
static size_t sz_u64(unsigned f, uint64_t v)
{
    return v ? tsize(f) + vsize(v) : 0;
}

static uint8_t *put_u64(uint8_t *p, unsigned f, uint64_t v)
{
    if (!v)
        return p;
    p = put_v(p, (uint64_t)f << 3 | WT_VARINT);
    return put_v(p, v);
}

/* A length-delimited field (submessage, bytes, packed array) of len bytes. */
static size_t sz_len(unsigned f, size_t len)
{
    return tsize(f) + vsize(len) + len;
}

static uint8_t *put_len(uint8_t *p, unsigned f, size_t len)
{
    p = put_v(p, (uint64_t)f << 3 | WT_LEN);
    return put_v(p, len);
}

static size_t ids_size(const uint64_t *v, uint32_t n)
{
    size_t s = 0;
    for (uint32_t i = 0; i < n; i++)
        s += vsize(v[i]);
    return s;
}

/* A packed repeated uint64: absent when empty. */
static uint8_t *put_ids(uint8_t *p, unsigned f, const uint64_t *v, uint32_t n)
{
    if (n == 0)
        return p;
    p = put_len(p, f, ids_size(v, n));
    for (uint32_t i = 0; i < n; i++)
        p = put_v(p, v[i]);
    return p;
}

static size_t entry_size(const struct raft_entry *e)
{
    return sz_u64(1, e->term) + sz_u64(2, e->index) + sz_u64(3, e->type) +
           (e->len ? sz_len(4, e->len) : 0);
}

static size_t conf_size(const struct raft_conf_state *c)
{
    return (c->n_voters ? sz_len(1, ids_size(c->voters, c->n_voters)) : 0) +
           (c->n_learners ? sz_len(2, ids_size(c->learners, c->n_learners))
                          : 0);
}

static size_t snap_size(const struct raft_snapshot_meta *s)
{
    return sz_u64(1, s->index) + sz_u64(2, s->term) +
           sz_len(3, conf_size(&s->conf));
}

/* RaftMessage of m (from/to left out when they are the batch's). */
static size_t msg_size(const struct raft_msg *m, uint64_t from, uint64_t to)
{
    size_t s = sz_u64(1, m->type) + sz_u64(2, m->shard) +
               sz_u64(3, m->from == from ? 0 : m->from) +
               sz_u64(4, m->to == to ? 0 : m->to) + sz_u64(5, m->term) +
               sz_u64(6, m->index) + sz_u64(7, m->log_term) +
               sz_u64(8, m->commit);
    for (uint32_t k = 0; k < m->n_entries; k++)
        s += sz_len(9, entry_size(&m->entries[k]));
    s += sz_u64(10, m->reject) + sz_u64(11, m->hint_index) +
         sz_u64(12, m->hint_term) + sz_u64(13, m->context);
    if (!snap_is_zero(&m->snap))
        s += sz_len(14, snap_size(&m->snap));
    s += sz_u64(15, m->chunk_seq) + sz_u64(16, m->chunk_last);
    if (m->chunk_len)
        s += sz_len(17, m->chunk_len);
    return s;
}

static uint8_t *put_msg(uint8_t *p, const struct raft_msg *m, uint64_t from,
                        uint64_t to)
{
    p = put_u64(p, 1, m->type);
    p = put_u64(p, 2, m->shard);
    p = put_u64(p, 3, m->from == from ? 0 : m->from);
    p = put_u64(p, 4, m->to == to ? 0 : m->to);
    p = put_u64(p, 5, m->term);
    p = put_u64(p, 6, m->index);
    p = put_u64(p, 7, m->log_term);
    p = put_u64(p, 8, m->commit);
    for (uint32_t k = 0; k < m->n_entries; k++) {
        const struct raft_entry *e = &m->entries[k];
        p = put_len(p, 9, entry_size(e));
        p = put_u64(p, 1, e->term);
        p = put_u64(p, 2, e->index);
        p = put_u64(p, 3, e->type);
        if (e->len) {
            p = put_len(p, 4, e->len);
            memcpy(p, e->data, e->len);
            p += e->len;
        }
    }
    p = put_u64(p, 10, m->reject);
    p = put_u64(p, 11, m->hint_index);
    p = put_u64(p, 12, m->hint_term);
    p = put_u64(p, 13, m->context);
    if (!snap_is_zero(&m->snap)) {
        const struct raft_conf_state *c = &m->snap.conf;
        p = put_len(p, 14, snap_size(&m->snap));
        p = put_u64(p, 1, m->snap.index);
        p = put_u64(p, 2, m->snap.term);
        p = put_len(p, 3, conf_size(c));
        p = put_ids(p, 1, c->voters, c->n_voters);
        p = put_ids(p, 2, c->learners, c->n_learners);
    }
    p = put_u64(p, 15, m->chunk_seq);
    p = put_u64(p, 16, m->chunk_last);
    if (m->chunk_len) {
        p = put_len(p, 17, m->chunk_len);
        memcpy(p, m->chunk_data, m->chunk_len);
        p += m->chunk_len;
    }
    return p;
}

/* One CoalescedHeartbeats record: the coalescible messages of one type, as
 * columns (an all-zero commits or contexts column is left out). */
struct hb_cols {
    uint8_t type;
    uint32_t n;
    size_t col[4]; /* packed payload bytes: shards, terms, commits, ctxs */
    bool any_commit, any_ctx;
};

static uint64_t hb_value(const struct raft_msg *m, int c)
{
    return c == 0 ? m->shard : c == 1 ? m->term : c == 2 ? m->commit
                                                         : m->context;
}

static bool hb_col_present(const struct hb_cols *h, int c)
{
    return c < 2 || (c == 2 ? h->any_commit : h->any_ctx);
}

static size_t hb_size(const struct hb_cols *h)
{
    size_t s = 0;
    for (int c = 0; c < 4; c++)
        if (hb_col_present(h, c))
            s += sz_len((unsigned)c + 1, h->col[c]);
    return s;
}

static uint8_t *put_hb(uint8_t *p, unsigned f, const struct hb_cols *h,
                       const struct raft_msg *const *msgs, uint32_t n,
                       uint64_t from, uint64_t to)
{
    if (h->n == 0)
        return p;
    p = put_len(p, f, hb_size(h));
    for (int c = 0; c < 4; c++) {
        if (!hb_col_present(h, c))
            continue;
        p = put_len(p, (unsigned)c + 1, h->col[c]);
        for (uint32_t i = 0; i < n; i++)
            if (msgs[i]->type == h->type && coalescible(msgs[i], from, to))
                p = put_v(p, hb_value(msgs[i], c));
    }
    return p;
}

int raft_codec_batch_append(uint64_t from, uint64_t to,
                            const struct raft_msg *const *msgs, uint32_t n,
                            const struct raft_codec_limits *lim_in,
                            struct rk_buf *out)
{
    struct raft_codec_limits tmp;
    const struct raft_codec_limits *lim = limits_or_default(lim_in, &tmp);
    if (from == 0 || to == 0 || (n > 0 && msgs == NULL))
        return RK_EINVAL;
    if (n > lim->max_msgs)
        return RK_ETOOLARGE;

    /* Pass 1: check, and size everything. */
    struct hb_cols hb[2];
    memset(hb, 0, sizeof(hb));
    hb[0].type = RAFT_MSG_HEARTBEAT;
    hb[1].type = RAFT_MSG_HEARTBEAT_RESP;
    size_t size = sz_u64(1, from) + sz_u64(2, to);
    for (uint32_t i = 0; i < n; i++) {
        const struct raft_msg *m = msgs[i];
        int rc = check_out_msg(m, lim);
        if (rc)
            return rc;
        if (!coalescible(m, from, to)) {
            size += sz_len(3, msg_size(m, from, to));
            continue;
        }
        struct hb_cols *h = &hb[m->type == RAFT_MSG_HEARTBEAT_RESP];
        h->n++;
        for (int c = 0; c < 4; c++)
            h->col[c] += vsize(hb_value(m, c));
        h->any_commit |= m->commit != 0;
        h->any_ctx |= m->context != 0;
    }
    for (int k = 0; k < 2; k++)
        if (hb[k].n)
            size += sz_len(4 + (unsigned)k, hb_size(&hb[k]));
    if (size > lim->max_batch_bytes)
        return RK_ETOOLARGE;

    /* Pass 2: write. */
    uint8_t *p0;
    int rc = rk_buf_tail(out, size, &p0, NULL);
    if (rc)
        return rc;
    uint8_t *p = put_u64(p0, 1, from);
    p = put_u64(p, 2, to);
    for (uint32_t i = 0; i < n; i++) {
        const struct raft_msg *m = msgs[i];
        if (coalescible(m, from, to))
            continue;
        p = put_len(p, 3, msg_size(m, from, to));
        p = put_msg(p, m, from, to);
    }
    p = put_hb(p, 4, &hb[0], msgs, n, from, to);
    p = put_hb(p, 5, &hb[1], msgs, n, from, to);
    RK_ASSERT((size_t)(p - p0) == size);
    rk_buf_commit(out, size);
    return 0;
}

int raft_codec_batch_encode(uint64_t from, uint64_t to,
                            const struct raft_msg *const *msgs, uint32_t n,
                            const struct raft_codec_limits *lim, uint8_t **out,
                            size_t *len)
{
    struct rk_buf b;
    rk_buf_init(&b);
    int rc = raft_codec_batch_append(from, to, msgs, n, lim, &b);
    if (rc == 0 && b.len == 0)
        rc = rk_buf_reserve(&b, 1); /* an empty batch still gets a buffer */
    if (rc) {
        rk_buf_free(&b);
        return rc;
    }
    *out = rk_buf_detach(&b, len);
    return 0;
}

/* ============================================================== decoding */

struct dec {
    Ringkv__PeerBatch *pb;
    uint32_t n_full, n_hb[2];
    uint32_t total; /* messages in all */
    size_t n_ents;  /* entries in all */
    struct raft_entry *ents;
};

static void dec_free(struct dec *d)
{
    rk_proto_free(d->pb ? &d->pb->base : NULL);
    free(d->ents);
    memset(d, 0, sizeof(*d));
}

static int check_in_msg(const Ringkv__RaftMessage *pm,
                        const struct raft_codec_limits *lim)
{
    if ((unsigned)pm->type >= RAFT_MSG__COUNT)
        return RK_EPROTO;
    if (pm->n_entries > 0) {
        if (pm->type != RINGKV__RAFT_MESSAGE__TYPE__APPEND ||
            pm->n_entries > lim->max_entries ||
            pm->index > UINT64_MAX - pm->n_entries)
            return RK_EPROTO;
        for (size_t k = 0; k < pm->n_entries; k++) {
            const Ringkv__RaftEntry *e = pm->entries[k];
            if (e == NULL || (unsigned)e->type > RAFT_ENTRY_NOOP ||
                e->data.len > lim->max_entry_bytes ||
                e->index != pm->index + 1 + k)
                return RK_EPROTO;
        }
    }
    if (pm->chunk_data.len > 0 &&
        (pm->type != RINGKV__RAFT_MESSAGE__TYPE__SNAPSHOT ||
         pm->chunk_data.len > lim->max_chunk_bytes))
        return RK_EPROTO;
    if (pm->snap && pm->snap->conf) {
        const Ringkv__RaftConfState *c = pm->snap->conf;
        if (c->n_voters > RAFT_MAX_MEMBERS ||
            c->n_learners > RAFT_MAX_MEMBERS ||
            c->n_voters + c->n_learners > RAFT_MAX_MEMBERS)
            return RK_EPROTO;
    }
    return 0;
}

static int check_hb(const Ringkv__CoalescedHeartbeats *h, uint32_t *n)
{
    *n = 0;
    if (h == NULL)
        return 0;
    if (h->n_terms != h->n_shards ||
        (h->n_commits != 0 && h->n_commits != h->n_shards) ||
        (h->n_contexts != 0 && h->n_contexts != h->n_shards) ||
        h->n_shards > UINT32_MAX)
        return RK_EPROTO;
    *n = (uint32_t)h->n_shards;
    return 0;
}

/* ---------------------------------------------------- wire pre-scan */

/*
 * Before unpacking, a cheap walk over the wire form counts the messages
 * (PeerBatch field 3) and their entries (RaftMessage field 9). Counts over
 * the limits are refused before anything is allocated, and the counts size
 * the memory budget of the unpack exactly for what a well-formed batch
 * needs, so a batch our encoder produced always fits while garbage (e.g.
 * thousands of repeated singular fields or unknown fields) runs out of
 * budget.
 */
struct wire {
    const uint8_t *p;
    size_t len;
    size_t pos;
};

static bool wire_varint(struct wire *w, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned i = 0; i < 10; i++) {
        if (w->pos == w->len)
            return false;
        uint8_t b = w->p[w->pos++];
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

/* Reads one field: its number, and for length-delimited ones the payload
 * (else *sub = NULL). False for malformed or unsupported (group) wire. */
static bool wire_field(struct wire *w, uint64_t *num, struct wire *sub)
{
    uint64_t tag, v;
    if (!wire_varint(w, &tag))
        return false;
    *num = tag >> 3;
    sub->p = NULL;
    switch (tag & 7) {
    case 0:
        return wire_varint(w, &v);
    case 1:
        if (w->len - w->pos < 8)
            return false;
        w->pos += 8;
        return true;
    case 2:
        if (!wire_varint(w, &v) || v > w->len - w->pos)
            return false;
        sub->p = w->p + w->pos;
        sub->len = (size_t)v;
        sub->pos = 0;
        w->pos += (size_t)v;
        return true;
    case 5:
        if (w->len - w->pos < 4)
            return false;
        w->pos += 4;
        return true;
    default:
        return false;
    }
}

static int scan_batch(const uint8_t *buf, size_t len,
                      const struct raft_codec_limits *lim, uint64_t *n_msgs,
                      uint64_t *n_ents)
{
    struct wire w = {.p = buf, .len = len, .pos = 0};
    *n_msgs = *n_ents = 0;
    while (w.pos < w.len) {
        uint64_t num;
        struct wire sub;
        if (!wire_field(&w, &num, &sub))
            return RK_EPROTO;
        if (num != 3 || sub.p == NULL)
            continue;
        if (++*n_msgs > lim->max_msgs)
            return RK_EPROTO;
        uint64_t ents = 0;
        while (sub.pos < sub.len) {
            struct wire e;
            if (!wire_field(&sub, &num, &e))
                return RK_EPROTO;
            if (num == 9 && e.p != NULL && ++ents > lim->max_entries)
                return RK_EPROTO;
        }
        *n_ents += ents;
    }
    return 0;
}

/* Unpacked bytes per message (with one snapshot meta and conf state) and
 * per entry, array slots included. */
#define MSG_MEM                                                                \
    (sizeof(Ringkv__RaftMessage) + sizeof(void *) +                            \
     sizeof(Ringkv__RaftSnapshotMeta) + sizeof(Ringkv__RaftConfState))
#define ENTRY_MEM (sizeof(Ringkv__RaftEntry) + sizeof(void *))
/* Per input byte: copies of bytes fields, packed columns (8 bytes per
 * 1-byte varint); plus a constant for the batch and its columns. */
#define BYTE_MEM  8
#define FIXED_MEM ((size_t)64 << 10)

static size_t add_sat(size_t a, size_t b)
{
    return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

static size_t mul_sat(size_t a, uint64_t b)
{
    return b != 0 && a > SIZE_MAX / b ? SIZE_MAX : a * (size_t)b;
}

static size_t batch_budget(size_t len, uint64_t n_msgs, uint64_t n_ents)
{
    /* Saturating: absurd limits give a huge budget, never a wrapped one. */
    size_t b = add_sat(FIXED_MEM, mul_sat(BYTE_MEM, len));
    b = add_sat(b, mul_sat(MSG_MEM, n_msgs));
    return add_sat(b, mul_sat(ENTRY_MEM, n_ents));
}

static int dec_open(const uint8_t *buf, size_t len,
                    const struct raft_codec_limits *lim, struct dec *d)
{
    memset(d, 0, sizeof(*d));
    if (len > lim->max_batch_bytes)
        return RK_ETOOLARGE;
    uint64_t wire_msgs, wire_ents;
    int rc = scan_batch(buf, len, lim, &wire_msgs, &wire_ents);
    if (rc)
        return rc;
    size_t budget = lim->max_decode_mem
                        ? lim->max_decode_mem
                        : batch_budget(len, wire_msgs, wire_ents);
    ProtobufCMessage *m;
    rc = rk_proto_unpack(&ringkv__peer_batch__descriptor, buf, len, budget, &m);
    if (rc)
        return rc;
    d->pb = (Ringkv__PeerBatch *)m;
    rc = RK_EPROTO;
    if (d->pb->from == 0 || d->pb->to == 0 || d->pb->n_msgs > lim->max_msgs)
        goto err;
    if (check_hb(d->pb->heartbeats, &d->n_hb[0]) ||
        check_hb(d->pb->heartbeat_resps, &d->n_hb[1]))
        goto err;
    d->n_full = (uint32_t)d->pb->n_msgs;
    uint64_t total = (uint64_t)d->n_full + d->n_hb[0] + d->n_hb[1];
    if (total > lim->max_msgs)
        goto err;
    d->total = (uint32_t)total;
    for (uint32_t i = 0; i < d->n_full; i++) {
        rc = check_in_msg(d->pb->msgs[i], lim);
        if (rc)
            goto err;
        d->n_ents += d->pb->msgs[i]->n_entries;
    }
    if (d->n_ents > 0) {
        /* Bounded: every entry was unpacked within the memory budget. */
        d->ents = calloc(d->n_ents, sizeof(*d->ents));
        if (d->ents == NULL) {
            rc = RK_ENOMEM;
            goto err;
        }
    }
    return 0;
err:
    dec_free(d);
    return rc;
}

/* Message i of the batch (in delivery order); its entries go to ents. */
static void dec_msg(const struct dec *d, uint32_t i, struct raft_msg *m,
                    struct raft_entry *ents)
{
    const Ringkv__PeerBatch *pb = d->pb;
    memset(m, 0, sizeof(*m));
    if (i >= d->n_full) {
        i -= d->n_full;
        int k = i >= d->n_hb[0];
        if (k)
            i -= d->n_hb[0];
        const Ringkv__CoalescedHeartbeats *h =
            k ? pb->heartbeat_resps : pb->heartbeats;
        m->type = k ? RAFT_MSG_HEARTBEAT_RESP : RAFT_MSG_HEARTBEAT;
        m->from = pb->from;
        m->to = pb->to;
        m->shard = h->shards[i];
        m->term = h->terms[i];
        m->commit = h->n_commits ? h->commits[i] : 0;
        m->context = h->n_contexts ? h->contexts[i] : 0;
        return;
    }
    const Ringkv__RaftMessage *pm = pb->msgs[i];
    m->type = (uint8_t)pm->type;
    m->shard = pm->shard;
    m->from = pm->from ? pm->from : pb->from;
    m->to = pm->to ? pm->to : pb->to;
    m->term = pm->term;
    m->index = pm->index;
    m->log_term = pm->log_term;
    m->commit = pm->commit;
    m->reject = pm->reject;
    m->hint_index = pm->hint_index;
    m->hint_term = pm->hint_term;
    m->context = pm->context;
    m->chunk_seq = pm->chunk_seq;
    m->chunk_last = pm->chunk_last;
    m->chunk_len = (uint32_t)pm->chunk_data.len;
    m->chunk_data = pm->chunk_data.len ? pm->chunk_data.data : NULL;
    for (size_t k = 0; k < pm->n_entries; k++) {
        const Ringkv__RaftEntry *pe = pm->entries[k];
        ents[k].term = pe->term;
        ents[k].index = pe->index;
        ents[k].type = (uint8_t)pe->type;
        ents[k].len = (uint32_t)pe->data.len;
        ents[k].data = pe->data.len ? pe->data.data : NULL;
    }
    m->n_entries = (uint32_t)pm->n_entries;
    m->entries = pm->n_entries ? ents : NULL;
    if (pm->snap) {
        m->snap.index = pm->snap->index;
        m->snap.term = pm->snap->term;
        const Ringkv__RaftConfState *c = pm->snap->conf;
        if (c) {
            m->snap.conf.n_voters = (uint32_t)c->n_voters;
            m->snap.conf.n_learners = (uint32_t)c->n_learners;
            if (c->n_voters)
                memcpy(m->snap.conf.voters, c->voters,
                       c->n_voters * sizeof(uint64_t));
            if (c->n_learners)
                memcpy(m->snap.conf.learners, c->learners,
                       c->n_learners * sizeof(uint64_t));
        }
    }
}

/* ------------------------------------------ fast path: our own batches */

/*
 * Nearly every batch a node receives is one raft_codec_batch_append wrote:
 * fields in number order, each at most once (messages and entries repeated
 * in a row), scalars as varints, repeated numbers packed and non-empty, no
 * unknown fields. The fast path reads exactly that form in one pass straight
 * into raft_msg and raft_entry arrays, entry and chunk bytes pointing into
 * buf (no protobuf-c tree, no copies, one malloc), with dec_open's checks.
 * On anything else (another encoder's field order, unknown or repeated
 * fields, a value out of range, a failed check) it gives up and the
 * protobuf-c path above decides, so what is accepted, what it decodes to
 * and which error is returned stay those of protobuf-c.
 */
struct fast {
    const struct raft_codec_limits *lim;
    struct raft_msg *msgs;   /* NULL: counting pass */
    struct raft_entry *ents; /* NULL: counting pass */
    uint64_t from, to;
    uint32_t n_full, n_hb[2];
    size_t n_ents;
};

/* A varint of at most 64 bits in its shortest form, the only one our
 * encoder writes (protobuf-c reads overlong ones differently: a length or
 * tag over 5 bytes is an error there, a value is not). */
static bool fv(struct wire *w, uint64_t *v)
{
    uint64_t x = 0;
    for (unsigned i = 0; i < 10; i++) {
        if (w->pos == w->len)
            return false;
        uint8_t b = w->p[w->pos++];
        if ((i == 9 && b > 1) || (i > 0 && b == 0))
            return false;
        x |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = x;
            return true;
        }
    }
    return false;
}

/* The next field, which must come after field `last` (or repeat it when
 * `rep`), with the wire type its number has in the schema (varint below
 * `first_len`, length-delimited from there up to `max`): its varint value,
 * or its payload. */
static bool ff(struct wire *w, uint64_t *num, unsigned last, unsigned rep,
               const uint32_t len_mask, unsigned max, uint64_t *v,
               struct wire *sub)
{
    uint64_t tag;
    if (!fv(w, &tag))
        return false;
    *num = tag >> 3;
    if (*num == 0 || *num > max || *num < last ||
        (*num == last && *num != rep))
        return false;
    bool is_len = (len_mask >> *num) & 1;
    if ((tag & 7) != (is_len ? 2u : 0u))
        return false;
    if (!fv(w, v))
        return false;
    if (!is_len)
        return true;
    if (*v > w->len - w->pos)
        return false;
    sub->p = w->p + w->pos;
    sub->len = (size_t)*v;
    sub->pos = 0;
    w->pos += (size_t)*v;
    return true;
}

/* A packed uint64 column: its values go to out (when not NULL, at most
 * max); *n counts them. Empty columns are not ours. */
static bool fast_packed(struct wire *w, uint64_t *out, uint32_t max,
                        uint32_t *n)
{
    *n = 0;
    if (w->len == 0)
        return false;
    while (w->pos < w->len) {
        uint64_t v;
        if (*n == max || !fv(w, &v))
            return false;
        if (out)
            out[*n] = v;
        (*n)++;
    }
    return true;
}

static bool fast_conf(struct wire *w, struct raft_conf_state *c)
{
    uint64_t num, v;
    unsigned last = 0;
    struct wire sub;
    while (w->pos < w->len) {
        if (!ff(w, &num, last, 0, 0x6, 2, &v, &sub))
            return false;
        last = (unsigned)num;
        bool ok = num == 1 ? fast_packed(&sub, c->voters, RAFT_MAX_MEMBERS,
                                         &c->n_voters)
                           : fast_packed(&sub, c->learners, RAFT_MAX_MEMBERS,
                                         &c->n_learners);
        if (!ok)
            return false;
    }
    return c->n_voters + c->n_learners <= RAFT_MAX_MEMBERS;
}

static bool fast_snap(struct wire *w, struct raft_snapshot_meta *s)
{
    uint64_t num, v;
    unsigned last = 0;
    struct wire sub;
    while (w->pos < w->len) {
        if (!ff(w, &num, last, 0, 0x8, 3, &v, &sub))
            return false;
        last = (unsigned)num;
        if (num == 1)
            s->index = v;
        else if (num == 2)
            s->term = v;
        else if (!fast_conf(&sub, &s->conf))
            return false;
    }
    return true;
}

static bool fast_entry(struct wire *w, const struct raft_codec_limits *lim,
                       struct raft_entry *e)
{
    uint64_t num, v;
    unsigned last = 0;
    struct wire sub;
    memset(e, 0, sizeof(*e));
    while (w->pos < w->len) {
        if (!ff(w, &num, last, 0, 0x10, 4, &v, &sub))
            return false;
        last = (unsigned)num;
        switch (num) {
        case 1: e->term = v; break;
        case 2: e->index = v; break;
        case 3:
            if (v > RAFT_ENTRY_NOOP)
                return false;
            e->type = (uint8_t)v;
            break;
        default:
            if (sub.len > lim->max_entry_bytes)
                return false;
            e->len = (uint32_t)sub.len;
            e->data = sub.len ? (void *)sub.p : NULL;
            break;
        }
    }
    return true;
}

/* RaftMessage fields 9 (entries), 14 (snap) and 17 (chunk) are
 * length-delimited, 1 to 16 otherwise varints. */
#define MSG_LEN_FIELDS ((1u << 9) | (1u << 14) | (1u << 17))

static bool fast_msg(struct fast *f, struct wire *w, struct raft_msg *m,
                     struct raft_entry *ents)
{
    const struct raft_codec_limits *lim = f->lim;
    uint64_t num, v;
    unsigned last = 0;
    struct wire sub;
    struct raft_entry scratch;
    memset(m, 0, sizeof(*m));
    while (w->pos < w->len) {
        if (!ff(w, &num, last, 9, MSG_LEN_FIELDS, 17, &v, &sub))
            return false;
        last = (unsigned)num;
        switch (num) {
        case 1:
            if (v >= RAFT_MSG__COUNT)
                return false;
            m->type = (uint8_t)v;
            break;
        case 2: m->shard = v; break;
        case 3: m->from = v; break;
        case 4: m->to = v; break;
        case 5: m->term = v; break;
        case 6: m->index = v; break;
        case 7: m->log_term = v; break;
        case 8: m->commit = v; break;
        case 9: {
            /* (dec_open: index + n_entries must not wrap.) */
            if (m->type != RAFT_MSG_APPEND ||
                m->n_entries == lim->max_entries ||
                m->index > UINT64_MAX - 1 - m->n_entries)
                return false;
            struct raft_entry *e = ents ? &ents[m->n_entries] : &scratch;
            if (!fast_entry(&sub, lim, e) ||
                e->index != m->index + 1 + m->n_entries)
                return false;
            m->n_entries++;
            break;
        }
        case 10:
            if (v > 1)
                return false;
            m->reject = v != 0;
            break;
        case 11: m->hint_index = v; break;
        case 12: m->hint_term = v; break;
        case 13: m->context = v; break;
        case 14:
            if (!fast_snap(&sub, &m->snap))
                return false;
            break;
        case 15:
            if (v > UINT32_MAX)
                return false;
            m->chunk_seq = (uint32_t)v;
            break;
        case 16:
            if (v > 1)
                return false;
            m->chunk_last = v != 0;
            break;
        default:
            if (sub.len > 0 && (m->type != RAFT_MSG_SNAPSHOT ||
                                sub.len > lim->max_chunk_bytes))
                return false;
            m->chunk_len = (uint32_t)sub.len;
            m->chunk_data = sub.len ? (void *)sub.p : NULL;
            break;
        }
    }
    m->entries = m->n_entries && ents ? ents : NULL;
    return true;
}

/* CoalescedHeartbeats k: in the filling pass its columns go to the
 * messages from msgs[base] on. */
static bool fast_hb(struct fast *f, struct wire *w, int k)
{
    uint64_t num, v;
    unsigned last = 0;
    struct wire sub;
    uint32_t n[5] = {0, 0, 0, 0, 0};
    struct raft_msg *hb = NULL;
    if (f->msgs)
        hb = f->msgs + f->n_full + (k ? f->n_hb[0] : 0);
    uint32_t cap = f->msgs ? f->n_hb[k] : UINT32_MAX;
    while (w->pos < w->len) {
        if (!ff(w, &num, last, 0, 0x1e, 4, &v, &sub))
            return false;
        last = (unsigned)num;
        /* Columns after the first must have its length (checked below);
         * a longer one ends the filling pass here. */
        uint32_t max = num == 1 ? cap : n[1];
        if (max > f->lim->max_msgs)
            max = f->lim->max_msgs;
        uint32_t j = 0;
        while (sub.pos < sub.len) {
            if (j == max || !fv(&sub, &v))
                return false;
            if (hb) {
                struct raft_msg *m = &hb[j];
                if (num == 1)
                    m->shard = v;
                else if (num == 2)
                    m->term = v;
                else if (num == 3)
                    m->commit = v;
                else
                    m->context = v;
            }
            j++;
        }
        if (j == 0)
            return false;
        n[num] = j;
    }
    if (n[2] != n[1] || (n[3] && n[3] != n[1]) || (n[4] && n[4] != n[1]))
        return false;
    if (!f->msgs)
        f->n_hb[k] = n[1];
    for (uint32_t j = 0; hb && j < n[1]; j++) {
        hb[j].type = k ? RAFT_MSG_HEARTBEAT_RESP : RAFT_MSG_HEARTBEAT;
        hb[j].from = f->from;
        hb[j].to = f->to;
    }
    return true;
}

/* One pass over the batch: counting (f->msgs NULL) or filling. */
static bool fast_pass(struct fast *f, const uint8_t *buf, size_t len)
{
    struct wire w = {.p = buf, .len = len, .pos = 0};
    uint64_t num, v;
    unsigned last = 0;
    struct wire sub;
    uint32_t i = 0;
    size_t e = 0;
    while (w.pos < w.len) {
        if (!ff(&w, &num, last, 3, 0x38, 5, &v, &sub))
            return false;
        last = (unsigned)num;
        if (num == 1) {
            f->from = v;
        } else if (num == 2) {
            f->to = v;
        } else if (num == 3) {
            struct raft_msg scratch;
            struct raft_msg *m = f->msgs ? &f->msgs[i] : &scratch;
            if (i == f->lim->max_msgs ||
                !fast_msg(f, &sub, m, f->ents ? f->ents + e : NULL))
                return false;
            if (m->from == 0)
                m->from = f->from;
            if (m->to == 0)
                m->to = f->to;
            e += m->n_entries;
            i++;
        } else if (!fast_hb(f, &sub, (int)num - 4)) {
            return false;
        }
    }
    if (!f->msgs) {
        f->n_full = i;
        f->n_ents = e;
    }
    return f->from != 0 && f->to != 0 &&
           (uint64_t)f->n_full + f->n_hb[0] + f->n_hb[1] <= f->lim->max_msgs;
}

/* The decoded batch in one block (messages, then entries), or NULL when
 * the protobuf-c path must decide. */
static struct raft_msg *fast_decode(const uint8_t *buf, size_t len,
                                    const struct raft_codec_limits *lim,
                                    struct fast *f)
{
    memset(f, 0, sizeof(*f));
    f->lim = lim;
    /* A memory budget is protobuf-c's (the fast path needs far less). */
    if (len > lim->max_batch_bytes || lim->max_decode_mem != 0 ||
        lim->protobuf_c_only || !fast_pass(f, buf, len))
        return NULL;
    uint32_t total = f->n_full + f->n_hb[0] + f->n_hb[1];
    size_t bytes = (size_t)total * sizeof(struct raft_msg) +
                   f->n_ents * sizeof(struct raft_entry);
    uint8_t *blk = calloc(1, bytes ? bytes : 1);
    if (blk == NULL)
        return NULL;
    struct fast fill = *f;
    fill.msgs = (struct raft_msg *)blk;
    fill.ents = (struct raft_entry *)(blk + (size_t)total *
                                                sizeof(struct raft_msg));
    /* The same walk over the same bytes: it cannot fail now. */
    bool ok = fast_pass(&fill, buf, len);
    RK_ASSERT(ok);
    return fill.msgs;
}

int raft_codec_batch_decode(const uint8_t *buf, size_t len,
                            const struct raft_codec_limits *lim_in,
                            uint64_t *from, uint64_t *to, raft_codec_msg_cb cb,
                            void *arg)
{
    struct raft_codec_limits tmp;
    const struct raft_codec_limits *lim = limits_or_default(lim_in, &tmp);
    struct fast f;
    struct raft_msg *msgs = fast_decode(buf, len, lim, &f);
    if (msgs != NULL) {
        if (from)
            *from = f.from;
        if (to)
            *to = f.to;
        int rc = 0;
        uint32_t total = f.n_full + f.n_hb[0] + f.n_hb[1];
        for (uint32_t i = 0; i < total && rc == 0; i++)
            rc = cb(arg, &msgs[i]);
        free(msgs);
        return rc;
    }
    struct dec d;
    int rc = dec_open(buf, len, lim, &d);
    if (rc)
        return rc;
    if (from)
        *from = d.pb->from;
    if (to)
        *to = d.pb->to;
    struct raft_entry *ents = d.ents;
    for (uint32_t i = 0; i < d.total && rc == 0; i++) {
        struct raft_msg m;
        dec_msg(&d, i, &m, ents);
        if (m.n_entries)
            ents += m.n_entries;
        rc = cb(arg, &m);
    }
    dec_free(&d);
    return rc;
}

int raft_codec_batch_decode_all(const uint8_t *buf, size_t len,
                                const struct raft_codec_limits *lim_in,
                                struct raft_codec_batch *out)
{
    struct raft_codec_limits tmp;
    const struct raft_codec_limits *lim = limits_or_default(lim_in, &tmp);
    memset(out, 0, sizeof(*out));
    struct fast f;
    struct raft_msg *msgs = fast_decode(buf, len, lim, &f);
    if (msgs != NULL) {
        out->from = f.from;
        out->to = f.to;
        out->msgs = msgs;
        out->n_msgs = f.n_full + f.n_hb[0] + f.n_hb[1];
        return 0;
    }
    struct dec *d = malloc(sizeof(*d));
    if (d == NULL)
        return RK_ENOMEM;
    int rc = dec_open(buf, len, lim, d);
    if (rc) {
        free(d);
        return rc;
    }
    if (d->total > 0) {
        out->msgs = calloc(d->total, sizeof(*out->msgs));
        if (out->msgs == NULL) {
            dec_free(d);
            free(d);
            return RK_ENOMEM;
        }
    }
    struct raft_entry *ents = d->ents;
    for (uint32_t i = 0; i < d->total; i++) {
        dec_msg(d, i, &out->msgs[i], ents);
        if (out->msgs[i].n_entries)
            ents += out->msgs[i].n_entries;
    }
    out->from = d->pb->from;
    out->to = d->pb->to;
    out->n_msgs = d->total;
    out->priv = d;
    return 0;
}

void raft_codec_batch_free(struct raft_codec_batch *b)
{
    if (b->priv) {
        dec_free(b->priv);
        free(b->priv);
    }
    free(b->msgs);
    memset(b, 0, sizeof(*b));
}

/* ============================================================= handshake */

int raft_codec_hello_append(const struct raft_codec_hello *h,
                            struct rk_buf *out)
{
    if (h->node_id == 0 || h->version == 0 ||
        strnlen(h->peer_addr, sizeof h->peer_addr) > RAFT_CODEC_ADDR_MAX ||
        strnlen(h->client_addr, sizeof h->client_addr) > RAFT_CODEC_ADDR_MAX)
        return RK_EINVAL;
    Ringkv__PeerHello ph;
    ringkv__peer_hello__init(&ph);
    ph.version = h->version;
    ph.cluster_id = h->cluster_id;
    ph.node_id = h->node_id;
    ph.to_node_id = h->to_node_id;
    ph.ack = h->ack;
    ph.peer_addr = (char *)h->peer_addr;
    ph.client_addr = (char *)h->client_addr;
    size_t size = ringkv__peer_hello__get_packed_size(&ph);
    uint8_t *p;
    int rc = rk_buf_tail(out, size, &p, NULL);
    if (rc)
        return rc;
    size_t w = ringkv__peer_hello__pack(&ph, p);
    RK_ASSERT(w == size);
    rk_buf_commit(out, w);
    return 0;
}

static int copy_addr(char *dst, const char *src)
{
    size_t n = strlen(src);
    if (n > RAFT_CODEC_ADDR_MAX)
        return RK_EPROTO;
    memcpy(dst, src, n + 1);
    return 0;
}

int raft_codec_hello_decode(const uint8_t *buf, size_t len,
                            struct raft_codec_hello *out)
{
    memset(out, 0, sizeof(*out));
    if (len > RAFT_CODEC_HELLO_MAX_BYTES)
        return RK_ETOOLARGE;
    ProtobufCMessage *m;
    int rc = rk_proto_unpack(&ringkv__peer_hello__descriptor, buf, len, 0, &m);
    if (rc)
        return rc;
    const Ringkv__PeerHello *ph = (const Ringkv__PeerHello *)m;
    rc = RK_EPROTO;
    if (ph->version == 0 || ph->node_id == 0)
        goto out;
    out->version = ph->version;
    out->cluster_id = ph->cluster_id;
    out->node_id = ph->node_id;
    out->to_node_id = ph->to_node_id;
    out->ack = ph->ack;
    if (copy_addr(out->peer_addr, ph->peer_addr) ||
        copy_addr(out->client_addr, ph->client_addr))
        goto out;
    rc = 0;
out:
    if (rc)
        memset(out, 0, sizeof(*out));
    rk_proto_free(m);
    return rc;
}
