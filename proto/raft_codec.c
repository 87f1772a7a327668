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

/* Everything the protobuf form of one batch points at. */
struct enc {
    Ringkv__PeerBatch pb;
    Ringkv__RaftMessage *pms;
    Ringkv__RaftMessage **pm_ptrs;
    Ringkv__RaftEntry *pes;
    Ringkv__RaftEntry **pe_ptrs;
    Ringkv__RaftSnapshotMeta *snaps;
    Ringkv__RaftConfState *confs;
    uint64_t *conf_ids; /* voters then learners, RAFT_MAX_MEMBERS per msg */
    Ringkv__CoalescedHeartbeats hb[2];
    uint64_t *cols; /* 4 columns of n_hb[k] values for each hb[k] */
};

static void enc_free(struct enc *e)
{
    free(e->pms);
    free(e->pm_ptrs);
    free(e->pes);
    free(e->pe_ptrs);
    free(e->snaps);
    free(e->confs);
    free(e->conf_ids);
    free(e->cols);
}

static void *alloc_n(size_t n, size_t size, bool *oom)
{
    if (n == 0)
        return NULL;
    void *p = calloc(n, size);
    if (p == NULL)
        *oom = true;
    return p;
}

/* Fills pm from m; pe/pe_ptrs have room for m's entries; snap/conf/ids are
 * this message's slots. */
static void fill_pm(Ringkv__RaftMessage *pm, const struct raft_msg *m,
                    uint64_t from, uint64_t to, Ringkv__RaftEntry *pe,
                    Ringkv__RaftEntry **pe_ptrs, Ringkv__RaftSnapshotMeta *snap,
                    Ringkv__RaftConfState *conf, uint64_t *ids)
{
    ringkv__raft_message__init(pm);
    pm->type = (Ringkv__RaftMessage__Type)m->type;
    pm->shard = m->shard;
    pm->from = m->from == from ? 0 : m->from;
    pm->to = m->to == to ? 0 : m->to;
    pm->term = m->term;
    pm->index = m->index;
    pm->log_term = m->log_term;
    pm->commit = m->commit;
    pm->reject = m->reject;
    pm->hint_index = m->hint_index;
    pm->hint_term = m->hint_term;
    pm->context = m->context;
    pm->chunk_seq = m->chunk_seq;
    pm->chunk_last = m->chunk_last;
    pm->chunk_data.len = m->chunk_len;
    pm->chunk_data.data = m->chunk_len ? m->chunk_data : NULL;
    for (uint32_t k = 0; k < m->n_entries; k++) {
        const struct raft_entry *e = &m->entries[k];
        ringkv__raft_entry__init(&pe[k]);
        pe[k].term = e->term;
        pe[k].index = e->index;
        pe[k].type = (Ringkv__RaftEntry__Type)e->type;
        pe[k].data.len = e->len;
        pe[k].data.data = e->len ? e->data : NULL;
        pe_ptrs[k] = &pe[k];
    }
    pm->n_entries = m->n_entries;
    pm->entries = m->n_entries ? pe_ptrs : NULL;
    if (!snap_is_zero(&m->snap)) {
        const struct raft_conf_state *c = &m->snap.conf;
        ringkv__raft_snapshot_meta__init(snap);
        ringkv__raft_conf_state__init(conf);
        snap->index = m->snap.index;
        snap->term = m->snap.term;
        memcpy(ids, c->voters, c->n_voters * sizeof(uint64_t));
        memcpy(ids + c->n_voters, c->learners,
               c->n_learners * sizeof(uint64_t));
        conf->n_voters = c->n_voters;
        conf->voters = c->n_voters ? ids : NULL;
        conf->n_learners = c->n_learners;
        conf->learners = c->n_learners ? ids + c->n_voters : NULL;
        snap->conf = conf;
        pm->snap = snap;
    }
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

    /* Pass 1: check, and count what to allocate. */
    uint32_t n_full = 0, n_hb[2] = {0, 0};
    size_t n_ents = 0;
    for (uint32_t i = 0; i < n; i++) {
        int rc = check_out_msg(msgs[i], lim);
        if (rc)
            return rc;
        if (coalescible(msgs[i], from, to))
            n_hb[msgs[i]->type == RAFT_MSG_HEARTBEAT_RESP]++;
        else {
            n_full++;
            n_ents += msgs[i]->n_entries;
        }
    }

    /* Pass 2: build the protobuf form (pointing at the messages' data). */
    struct enc e;
    memset(&e, 0, sizeof(e));
    bool oom = false;
    e.pms = alloc_n(n_full, sizeof(*e.pms), &oom);
    e.pm_ptrs = alloc_n(n_full, sizeof(*e.pm_ptrs), &oom);
    e.pes = alloc_n(n_ents, sizeof(*e.pes), &oom);
    e.pe_ptrs = alloc_n(n_ents, sizeof(*e.pe_ptrs), &oom);
    e.snaps = alloc_n(n_full, sizeof(*e.snaps), &oom);
    e.confs = alloc_n(n_full, sizeof(*e.confs), &oom);
    e.conf_ids =
        alloc_n((size_t)n_full * RAFT_MAX_MEMBERS, sizeof(uint64_t), &oom);
    e.cols = alloc_n(4 * ((size_t)n_hb[0] + n_hb[1]), sizeof(uint64_t), &oom);
    int rc = RK_ENOMEM;
    if (oom)
        goto out;

    ringkv__peer_batch__init(&e.pb);
    e.pb.from = from;
    e.pb.to = to;
    e.pb.n_msgs = n_full;
    e.pb.msgs = e.pm_ptrs;
    uint64_t *col = e.cols;
    uint64_t *shards[2], *terms[2], *commits[2], *ctxs[2];
    bool any_commit[2] = {false, false}, any_ctx[2] = {false, false};
    for (int k = 0; k < 2; k++) {
        ringkv__coalesced_heartbeats__init(&e.hb[k]);
        shards[k] = terms[k] = commits[k] = ctxs[k] = NULL;
        if (n_hb[k] == 0)
            continue; /* (col may be NULL: no arithmetic on it) */
        shards[k] = col;
        terms[k] = col + n_hb[k];
        commits[k] = col + 2 * (size_t)n_hb[k];
        ctxs[k] = col + 3 * (size_t)n_hb[k];
        col += 4 * (size_t)n_hb[k];
    }
    uint32_t fi = 0, hi[2] = {0, 0};
    size_t ei = 0;
    for (uint32_t i = 0; i < n; i++) {
        const struct raft_msg *m = msgs[i];
        if (coalescible(m, from, to)) {
            int k = m->type == RAFT_MSG_HEARTBEAT_RESP;
            uint32_t j = hi[k]++;
            shards[k][j] = m->shard;
            terms[k][j] = m->term;
            commits[k][j] = m->commit;
            ctxs[k][j] = m->context;
            any_commit[k] |= m->commit != 0;
            any_ctx[k] |= m->context != 0;
            continue;
        }
        /* (No arithmetic on the NULL arrays of an entry-less batch.) */
        fill_pm(&e.pms[fi], m, from, to, m->n_entries ? e.pes + ei : NULL,
                m->n_entries ? e.pe_ptrs + ei : NULL, &e.snaps[fi],
                &e.confs[fi], e.conf_ids + (size_t)fi * RAFT_MAX_MEMBERS);
        e.pm_ptrs[fi] = &e.pms[fi];
        ei += m->n_entries;
        fi++;
    }
    for (int k = 0; k < 2; k++) {
        if (n_hb[k] == 0)
            continue;
        Ringkv__CoalescedHeartbeats *h = &e.hb[k];
        h->n_shards = h->n_terms = n_hb[k];
        h->shards = shards[k];
        h->terms = terms[k];
        /* All-zero columns are left out (the decoder reads them as zero). */
        h->n_commits = any_commit[k] ? n_hb[k] : 0;
        h->commits = any_commit[k] ? commits[k] : NULL;
        h->n_contexts = any_ctx[k] ? n_hb[k] : 0;
        h->contexts = any_ctx[k] ? ctxs[k] : NULL;
        if (k == 0)
            e.pb.heartbeats = h;
        else
            e.pb.heartbeat_resps = h;
    }

    size_t size = ringkv__peer_batch__get_packed_size(&e.pb);
    rc = RK_ETOOLARGE;
    if (size > lim->max_batch_bytes)
        goto out;
    uint8_t *p;
    rc = rk_buf_tail(out, size, &p, NULL);
    if (rc)
        goto out;
    size_t w = ringkv__peer_batch__pack(&e.pb, p);
    RK_ASSERT(w == size);
    rk_buf_commit(out, w);
    rc = 0;
out:
    enc_free(&e);
    return rc;
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

int raft_codec_batch_decode(const uint8_t *buf, size_t len,
                            const struct raft_codec_limits *lim_in,
                            uint64_t *from, uint64_t *to, raft_codec_msg_cb cb,
                            void *arg)
{
    struct raft_codec_limits tmp;
    const struct raft_codec_limits *lim = limits_or_default(lim_in, &tmp);
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
