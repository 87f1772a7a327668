/* Peer batch codec: raft_msg arrays <-> bytes, bounds-checked on decode. */
#include "srv_wire.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "rk_err.h"

/*
 * Interim encoding, used until proto/raft_codec.h (PeerBatch in protobuf)
 * lands; this file is the only place that changes then. All integers are
 * big-endian:
 *
 *   batch := u8 version(1) | u32 n | msg * n
 *   msg   := u8 type | u8 flags | u64 shard from to term
 *            [FL_LOG]   u64 index log_term commit
 *            [FL_HINT]  u64 hint_index hint_term
 *            [FL_CTX]   u64 context
 *            [FL_ENTS]  u32 n | (u64 term index | u8 type | u32 len | bytes)*n
 *            [FL_SNAP]  u64 index term | u32 nv nl | u64 id*(nv+nl)
 *                       | u32 chunk_seq | u32 len | bytes
 *   flags := FL_* presence bits, FL_REJECT, FL_LAST (chunk_last)
 *
 * Heartbeats of many shards to one node therefore cost 34 bytes each in one
 * frame (the coalescing of DESIGN.md §3).
 */

#define WIRE_VERSION 1
#define FL_LOG 0x01
#define FL_HINT 0x02
#define FL_CTX 0x04
#define FL_ENTS 0x08
#define FL_SNAP 0x10
#define FL_REJECT 0x20
#define FL_LAST 0x40

struct wbuf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
};

static void w_reserve(struct wbuf *w, size_t n)
{
    if (w->oom || w->len + n <= w->cap)
        return;
    size_t cap = w->cap == 0 ? 256 : w->cap;
    while (cap < w->len + n)
        cap *= 2;
    uint8_t *p = realloc(w->p, cap);
    if (p == NULL) {
        w->oom = true;
        return;
    }
    w->p = p;
    w->cap = cap;
}

static void w_u8(struct wbuf *w, uint8_t v)
{
    w_reserve(w, 1);
    if (!w->oom)
        w->p[w->len++] = v;
}

static void w_u32(struct wbuf *w, uint32_t v)
{
    w_reserve(w, 4);
    if (w->oom)
        return;
    for (int i = 3; i >= 0; i--)
        w->p[w->len++] = (uint8_t)(v >> (8 * i));
}

static void w_u64(struct wbuf *w, uint64_t v)
{
    w_reserve(w, 8);
    if (w->oom)
        return;
    for (int i = 7; i >= 0; i--)
        w->p[w->len++] = (uint8_t)(v >> (8 * i));
}

static void w_bytes(struct wbuf *w, const void *b, size_t n)
{
    w_reserve(w, n);
    if (w->oom || n == 0)
        return;
    memcpy(w->p + w->len, b, n);
    w->len += n;
}

int srv_wire_encode(const struct raft_msg *const *msgs, uint32_t n,
                    uint64_t max_bytes, uint8_t **out, size_t *len)
{
    struct wbuf w = {0};
    w_u8(&w, SRV_WIRE_RAFT);
    w_u8(&w, WIRE_VERSION);
    w_u32(&w, n);
    for (uint32_t i = 0; i < n; i++) {
        const struct raft_msg *m = msgs[i];
        uint8_t fl = 0;
        bool snap = m->type == RAFT_MSG_SNAPSHOT ||
                    m->type == RAFT_MSG_SNAPSHOT_RESP;
        if (m->index || m->log_term || m->commit)
            fl |= FL_LOG;
        if (m->hint_index || m->hint_term)
            fl |= FL_HINT;
        if (m->context)
            fl |= FL_CTX;
        if (m->n_entries > 0)
            fl |= FL_ENTS;
        if (snap)
            fl |= FL_SNAP;
        if (m->reject)
            fl |= FL_REJECT;
        if (m->chunk_last)
            fl |= FL_LAST;
        w_u8(&w, m->type);
        w_u8(&w, fl);
        w_u64(&w, m->shard);
        w_u64(&w, m->from);
        w_u64(&w, m->to);
        w_u64(&w, m->term);
        if (fl & FL_LOG) {
            w_u64(&w, m->index);
            w_u64(&w, m->log_term);
            w_u64(&w, m->commit);
        }
        if (fl & FL_HINT) {
            w_u64(&w, m->hint_index);
            w_u64(&w, m->hint_term);
        }
        if (fl & FL_CTX)
            w_u64(&w, m->context);
        if (fl & FL_ENTS) {
            w_u32(&w, m->n_entries);
            for (uint32_t k = 0; k < m->n_entries; k++) {
                const struct raft_entry *e = &m->entries[k];
                w_u64(&w, e->term);
                w_u64(&w, e->index);
                w_u8(&w, e->type);
                w_u32(&w, e->len);
                w_bytes(&w, e->data, e->len);
            }
        }
        if (fl & FL_SNAP) {
            const struct raft_snapshot_meta *s = &m->snap;
            w_u64(&w, s->index);
            w_u64(&w, s->term);
            w_u32(&w, s->conf.n_voters);
            w_u32(&w, s->conf.n_learners);
            for (uint32_t k = 0; k < s->conf.n_voters; k++)
                w_u64(&w, s->conf.voters[k]);
            for (uint32_t k = 0; k < s->conf.n_learners; k++)
                w_u64(&w, s->conf.learners[k]);
            w_u32(&w, m->chunk_seq);
            w_u32(&w, m->chunk_len);
            w_bytes(&w, m->chunk_data, m->chunk_len);
        }
        if (w.len > max_bytes) {
            free(w.p);
            return RK_ETOOLARGE;
        }
    }
    if (w.oom) {
        free(w.p);
        return RK_ENOMEM;
    }
    *out = w.p;
    *len = w.len;
    return 0;
}

/* --------------------------------------------------------------- decode */

struct rbuf {
    const uint8_t *p;
    size_t len, pos;
    bool bad;
};

static bool r_need(struct rbuf *r, size_t n)
{
    if (r->bad || r->len - r->pos < n) {
        r->bad = true;
        return false;
    }
    return true;
}

static uint8_t r_u8(struct rbuf *r)
{
    return r_need(r, 1) ? r->p[r->pos++] : 0;
}

static uint32_t r_u32(struct rbuf *r)
{
    if (!r_need(r, 4))
        return 0;
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = v << 8 | r->p[r->pos++];
    return v;
}

static uint64_t r_u64(struct rbuf *r)
{
    if (!r_need(r, 8))
        return 0;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | r->p[r->pos++];
    return v;
}

static const uint8_t *r_bytes(struct rbuf *r, size_t n)
{
    if (!r_need(r, n))
        return NULL;
    const uint8_t *b = r->p + r->pos;
    r->pos += n;
    return b;
}

/* Smallest encoded entry: term, index, type, len. */
#define ENTRY_MIN 21

int srv_wire_decode(const uint8_t *buf, size_t len, uint64_t from,
                    int (*fn)(void *arg, const struct raft_msg *m), void *arg)
{
    struct rbuf r = {.p = buf, .len = len};
    if (r_u8(&r) != WIRE_VERSION)
        return RK_EPROTO;
    uint32_t n = r_u32(&r);
    if (r.bad || n > len)
        return RK_EPROTO;
    struct raft_entry *ents = NULL;
    uint32_t ents_cap = 0;
    int rv = 0;
    for (uint32_t i = 0; i < n && rv == 0; i++) {
        struct raft_msg m;
        memset(&m, 0, sizeof(m));
        m.type = r_u8(&r);
        uint8_t fl = r_u8(&r);
        m.shard = r_u64(&r);
        m.from = r_u64(&r);
        m.to = r_u64(&r);
        m.term = r_u64(&r);
        m.reject = (fl & FL_REJECT) != 0;
        m.chunk_last = (fl & FL_LAST) != 0;
        if (fl & FL_LOG) {
            m.index = r_u64(&r);
            m.log_term = r_u64(&r);
            m.commit = r_u64(&r);
        }
        if (fl & FL_HINT) {
            m.hint_index = r_u64(&r);
            m.hint_term = r_u64(&r);
        }
        if (fl & FL_CTX)
            m.context = r_u64(&r);
        if (fl & FL_ENTS) {
            uint32_t ne = r_u32(&r);
            /* Bound the array by what the remaining bytes can hold. */
            if (r.bad || ne == 0 || ne > (r.len - r.pos) / ENTRY_MIN) {
                rv = RK_EPROTO;
                break;
            }
            if (ne > ents_cap) {
                struct raft_entry *p = realloc(ents, ne * sizeof(*p));
                if (p == NULL) {
                    rv = RK_ENOMEM;
                    break;
                }
                ents = p;
                ents_cap = ne;
            }
            for (uint32_t k = 0; k < ne; k++) {
                ents[k].term = r_u64(&r);
                ents[k].index = r_u64(&r);
                ents[k].type = r_u8(&r);
                ents[k].len = r_u32(&r);
                ents[k].data = (void *)r_bytes(&r, ents[k].len);
            }
            m.entries = ents;
            m.n_entries = ne;
        }
        if (fl & FL_SNAP) {
            m.snap.index = r_u64(&r);
            m.snap.term = r_u64(&r);
            uint32_t nv = r_u32(&r), nl = r_u32(&r);
            if (nv > RAFT_MAX_MEMBERS || nl > RAFT_MAX_MEMBERS) {
                rv = RK_EPROTO;
                break;
            }
            m.snap.conf.n_voters = nv;
            m.snap.conf.n_learners = nl;
            for (uint32_t k = 0; k < nv; k++)
                m.snap.conf.voters[k] = r_u64(&r);
            for (uint32_t k = 0; k < nl; k++)
                m.snap.conf.learners[k] = r_u64(&r);
            m.chunk_seq = r_u32(&r);
            m.chunk_len = r_u32(&r);
            m.chunk_data = (void *)r_bytes(&r, m.chunk_len);
        }
        if (r.bad || m.type >= RAFT_MSG__COUNT || m.from != from) {
            rv = RK_EPROTO;
            break;
        }
        rv = fn(arg, &m);
    }
    if (rv == 0 && r.pos != r.len)
        rv = RK_EPROTO;
    free(ents);
    return rv;
}
