/* Snapshots: chunked export from a pinned read txn, staging, install. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rk_log.h"
#include "stor_int.h"

/*
 * Chunk format (integers big-endian):
 *   "RKS2" | crc32c(u32, of everything after it) | snap index (u64)
 *   | snap term (u64) | seq (u32) | flags (u8, bit 0 = last) | records
 * Records:
 *   INFO  0 | applied (u64) | term (u64) | conf      first record of chunk 0
 *   KV    1 | klen (u32) key | vlen (u32) value record (create, mod, bytes)
 *   SESS  2 | client (u64) | len (u32) session record
 *   END   3                                           last record of the last
 * A KV record carries the full user key (up to STOR_MAX_KEY), whatever its
 * LMDB encoding (stor_int.h). Chunks are cut as "RKS2"; "RKS1" chunks (the
 * same with a u16 klen, from builds that kept keys <= 480 bytes) are still
 * accepted, e.g. staged before an upgrade or sent by an older peer. Any
 * other magic is refused (RK_EPROTO), never misread.
 */

#define CHUNK_HDR         29
#define REC_INFO          0
#define REC_KV            1
#define REC_SESS          2
#define REC_END           3
#define EXPORT_REUSE_MS   10000 /* a new snapshot_meta reuses a younger one */
#define EXPORT_IDLE_MS    60000 /* dropped this long after its last chunk */
#define EXPORT_UNUSED_MS  5000  /* dropped if no chunk was asked for by then */
#define EXPORTS_PER_SHARD 2
#define EXPORTS_MAX       64

enum { PH_INFO = 0, PH_KV = 1, PH_SESS = 2, PH_END = 3, PH_DONE = 4 };

struct exp_pos {
    uint8_t phase;
    uint16_t klen; /* full LMDB key (with the shard prefix) */
    uint8_t key[STOR__KV_KEY_MAX];
};

struct stor_export {
    struct stor_export *next;
    struct stor_shard *sh;
    MDB_txn *txn;
    struct raft_snapshot_meta meta;
    uint64_t created_ms;
    uint64_t used_ms;
    uint64_t chunk_ms;      /* last chunk request, 0 = none yet */
    struct exp_pos *starts; /* starts[k]: where chunk k begins */
    uint32_t n_starts;
    uint32_t n_chunks; /* total once the last chunk was cut; 0 unknown */
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------- export table */

static void export_free(struct stor *s, struct stor_export *e)
{
    if (e->txn)
        mdb_txn_abort(e->txn);
    free(e->starts);
    free(e);
    s->n_exports--;
}

/* Unlinks and frees exports matching pred; exp_mu held. */
static void exports_drop(struct stor *s,
                         bool (*pred)(struct stor_export *, void *), void *arg)
{
    struct stor_export **pp = &s->exports;
    while (*pp) {
        struct stor_export *e = *pp;
        if (pred(e, arg)) {
            *pp = e->next;
            export_free(s, e);
        } else {
            pp = &e->next;
        }
    }
}

static bool pred_all(struct stor_export *e, void *arg)
{
    (void)e;
    (void)arg;
    return true;
}

static bool pred_idle(struct stor_export *e, void *arg)
{
    uint64_t now = *(uint64_t *)arg;
    if (e->chunk_ms == 0)
        return now - e->created_ms > EXPORT_UNUSED_MS;
    return now - e->chunk_ms > EXPORT_IDLE_MS;
}

void stor__exports_kill_all(struct stor *s)
{
    pthread_mutex_lock(&s->exp_mu);
    if (s->n_exports)
        rk_log(RK_LOG_INFO,
               "storage %s: dropping %u snapshot exports to grow the map",
               s->path, s->n_exports);
    exports_drop(s, pred_all, NULL);
    pthread_mutex_unlock(&s->exp_mu);
}

void stor__exports_close(struct stor *s)
{
    pthread_mutex_lock(&s->exp_mu);
    exports_drop(s, pred_all, NULL);
    pthread_mutex_unlock(&s->exp_mu);
}

void stor_exports_expire(struct stor *s)
{
    uint64_t now = now_ms();
    pthread_rwlock_rdlock(&s->map_lock);
    pthread_mutex_lock(&s->exp_mu);
    exports_drop(s, pred_idle, &now);
    pthread_mutex_unlock(&s->exp_mu);
    pthread_rwlock_unlock(&s->map_lock);
}

/* Drops the oldest export of sh (or of all when sh is NULL). */
static void drop_oldest(struct stor *s, struct stor_shard *sh)
{
    struct stor_export **best = NULL;
    for (struct stor_export **pp = &s->exports; *pp; pp = &(*pp)->next)
        if ((!sh || (*pp)->sh == sh) &&
            (!best || (*pp)->created_ms < (*best)->created_ms))
            best = pp;
    if (best) {
        struct stor_export *e = *best;
        *best = e->next;
        export_free(s, e);
    }
}

int stor_snapshot_meta(struct stor_shard *sh, struct raft_snapshot_meta *out)
{
    struct stor *s = sh->s;
    uint64_t now = now_ms();
    int rc = 0;
    memset(out, 0, sizeof(*out));
    /* A new export reads the last checkpoint: make it current first (not
     * while holding map_lock, which the checkpoint's map growth takes). */
    pthread_mutex_lock(&s->exp_mu);
    bool have = false;
    for (struct stor_export *e = s->exports; e && !have; e = e->next)
        have = e->sh == sh;
    pthread_mutex_unlock(&s->exp_mu);
    if (!have)
        stor__checkpoint_wait(s);
    pthread_rwlock_rdlock(&s->map_lock);
    pthread_mutex_lock(&s->exp_mu);
    exports_drop(s, pred_idle, &now);
    /* Reuse a recent export, or one a transfer is still reading (the core
     * asks for the meta before every chunk and must see the same one), as
     * long as the log still continues after it. */
    pthread_mutex_lock(&s->mu);
    raft_index base = sh->base_index;
    pthread_mutex_unlock(&s->mu);
    struct stor_export *found = NULL;
    uint32_t mine = 0;
    for (struct stor_export *e = s->exports; e; e = e->next) {
        if (e->sh != sh)
            continue;
        mine++;
        bool live = now - e->created_ms < EXPORT_REUSE_MS ||
                    (e->chunk_ms && now - e->chunk_ms < EXPORT_REUSE_MS);
        if (live && e->meta.index >= base &&
            (!found || e->created_ms > found->created_ms))
            found = e;
    }
    if (found) {
        found->used_ms = now;
        *out = found->meta;
        goto out;
    }
    struct stor_export *e = calloc(1, sizeof(*e));
    if (!e) {
        rc = RK_ENOMEM;
        goto out;
    }
    int mrc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &e->txn);
    if (mrc) {
        free(e);
        rc = stor__from_mdb(mrc);
        goto out;
    }
    uint8_t kb[8];
    stor__key_shard(kb, sh->id);
    MDB_val k = {.mv_size = 8, .mv_data = kb}, v;
    struct stor__state st;
    mrc = mdb_get(e->txn, s->dbi_state, &k, &v);
    rc = mrc == MDB_NOTFOUND ? RK_EUNKNOWNSHARD
         : mrc               ? stor__from_mdb(mrc)
                             : stor__state_decode(v.mv_data, v.mv_size, &st);
    if (rc || st.applied == 0) {
        /* No state applied yet: there is nothing to export. */
        mdb_txn_abort(e->txn);
        free(e);
        goto out;
    }
    e->sh = sh;
    e->meta.index = st.applied;
    e->meta.term = st.applied_term;
    e->meta.conf = st.applied_conf;
    e->created_ms = e->used_ms = now;
    e->starts = calloc(1, sizeof(*e->starts));
    if (!e->starts) {
        mdb_txn_abort(e->txn);
        free(e);
        rc = RK_ENOMEM;
        goto out;
    }
    e->starts[0].phase = PH_INFO;
    e->n_starts = 1;
    if (mine >= EXPORTS_PER_SHARD)
        drop_oldest(s, sh);
    if (s->n_exports >= EXPORTS_MAX)
        drop_oldest(s, NULL);
    e->next = s->exports;
    s->exports = e;
    s->n_exports++;
    *out = e->meta;
out:
    pthread_mutex_unlock(&s->exp_mu);
    pthread_rwlock_unlock(&s->map_lock);
    return rc;
}

/* ----------------------------------------------------- cutting chunks */

struct obuf {
    uint8_t *p;
    size_t len, cap;
};

static int ob_reserve(struct obuf *b, size_t n)
{
    if (b->len + n <= b->cap)
        return 0;
    size_t nc = b->cap ? b->cap : 4096;
    while (nc < b->len + n)
        nc *= 2;
    uint8_t *np = realloc(b->p, nc);
    if (!np)
        return RK_ENOMEM;
    b->p = np;
    b->cap = nc;
    return 0;
}

/* Cuts the chunk starting at `from`; fills *next with where the following
 * chunk starts (phase PH_DONE after the last). */
static int cut_chunk(struct stor *s, struct stor_export *e, uint32_t seq,
                     const struct exp_pos *from, struct obuf *b,
                     struct exp_pos *next, bool *last)
{
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    uint8_t pfx[8];
    int rc = 0, mrc = 0;
    uint8_t phase = from->phase;
    bool have_pos = from->klen > 0; /* resume inside a phase */

    stor__key_shard(pfx, e->sh->id);
    b->len = 0;
    rc = ob_reserve(b, CHUNK_HDR);
    if (rc)
        return rc;
    b->len = CHUNK_HDR;
    size_t budget = s->chunk_bytes;
    bool any = false;
    *last = false;

    while (phase != PH_DONE) {
        if (phase == PH_INFO) {
            uint8_t rec[1 + 16 + 8 + 32 * 8];
            rec[0] = REC_INFO;
            stor__put64(rec + 1, e->meta.index);
            stor__put64(rec + 9, e->meta.term);
            size_t n = 17 + stor__conf_encode(&e->meta.conf, rec + 17);
            if ((rc = ob_reserve(b, n)))
                goto out;
            memcpy(b->p + b->len, rec, n);
            b->len += n;
            any = true;
            phase = PH_KV;
            have_pos = false;
            continue;
        }
        if (phase == PH_END) {
            if (any && b->len + 1 > budget) {
                next->phase = PH_END;
                next->klen = 0;
                goto done;
            }
            if ((rc = ob_reserve(b, 1)))
                goto out;
            b->p[b->len++] = REC_END;
            *last = true;
            phase = PH_DONE;
            break;
        }
        MDB_dbi dbi = phase == PH_KV ? s->dbi_kv : s->dbi_sess;
        if (cur)
            mdb_cursor_close(cur);
        cur = NULL;
        mrc = mdb_cursor_open(e->txn, dbi, &cur);
        if (mrc)
            goto out;
        if (have_pos) {
            k.mv_data = (void *)from->key;
            k.mv_size = from->klen;
        } else {
            k.mv_data = pfx;
            k.mv_size = 8;
        }
        mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        while (mrc == 0) {
            if (k.mv_size < 8 || memcmp(k.mv_data, pfx, 8) != 0)
                break;
            size_t klen = k.mv_size - 8;
            size_t n;
            struct stor__kvslot it;
            struct stor__kvrec r;
            int src;
            if (phase == PH_KV) {
                /* One record per user key in the entry (a long slot may
                 * hold several); the entry goes whole into one chunk. */
                n = 0;
                stor__kvslot_begin(&it, &k, &v);
                while ((src = stor__kvslot_next(&it, &r)) == 1)
                    n += 1 + 4 + (size_t)r.klen + 4 + r.rlen;
                if (src < 0 || n == 0) {
                    rc = RK_ECORRUPT;
                    goto out;
                }
            } else {
                if (klen != 8 || !stor__sess_size_ok(v.mv_size)) {
                    rc = RK_ECORRUPT;
                    goto out;
                }
                n = 1 + 8 + 4 + v.mv_size;
            }
            if (any && b->len + n > budget) {
                next->phase = phase;
                next->klen = (uint16_t)k.mv_size;
                memcpy(next->key, k.mv_data, k.mv_size);
                goto done;
            }
            if ((rc = ob_reserve(b, n)))
                goto out;
            uint8_t *p = b->p + b->len;
            const uint8_t *kd = (const uint8_t *)k.mv_data + 8;
            if (phase == PH_KV) {
                stor__kvslot_begin(&it, &k, &v);
                while (stor__kvslot_next(&it, &r) == 1) {
                    *p++ = REC_KV;
                    stor__put32(p, r.klen);
                    memcpy(p + 4, r.key, r.klen);
                    p += 4 + r.klen;
                    stor__put32(p, (uint32_t)r.rlen);
                    memcpy(p + 4, r.rec, r.rlen);
                    p += 4 + r.rlen;
                }
            } else {
                *p++ = REC_SESS;
                memcpy(p, kd, 8);
                p += 8;
                stor__put32(p, (uint32_t)v.mv_size);
                memcpy(p + 4, v.mv_data, v.mv_size);
            }
            b->len += n;
            any = true;
            mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
        }
        if (mrc && mrc != MDB_NOTFOUND)
            goto out;
        mrc = 0;
        phase = phase == PH_KV ? PH_SESS : PH_END;
        have_pos = false;
    }
    next->phase = PH_DONE;
    next->klen = 0;
done:
    memcpy(b->p, "RKS2", 4);
    stor__put64(b->p + 8, e->meta.index);
    stor__put64(b->p + 16, e->meta.term);
    stor__put32(b->p + 24, seq);
    b->p[28] = *last ? 1 : 0;
    stor__put32(b->p + 4, stor__crc32c(0, b->p + 8, b->len - 8));
out:
    if (cur)
        mdb_cursor_close(cur);
    if (!rc && mrc)
        rc = stor__from_mdb(mrc);
    return rc;
}

int stor_snapshot_chunk(struct stor_shard *sh, raft_index snap_index,
                        uint32_t seq, void **data, uint32_t *len, bool *last)
{
    struct stor *s = sh->s;
    struct obuf b = {0};
    int rc = 0;
    *data = NULL;
    *len = 0;
    *last = false;
    pthread_rwlock_rdlock(&s->map_lock);
    pthread_mutex_lock(&s->exp_mu);
    struct stor_export *e = s->exports;
    while (e && !(e->sh == sh && e->meta.index == snap_index))
        e = e->next;
    if (!e) {
        rc = RK_ESTALE;
        goto out;
    }
    e->used_ms = e->chunk_ms = now_ms();
    if (e->n_chunks && seq >= e->n_chunks) {
        rc = RK_EINVAL;
        goto out;
    }
    /* Cut forward until chunk seq's start is known (chunks are a pure
     * function of the pinned data, so recutting gives the same bytes). */
    while (e->n_starts <= seq) {
        struct exp_pos nx;
        bool l;
        uint32_t k = e->n_starts - 1;
        rc = cut_chunk(s, e, k, &e->starts[k], &b, &nx, &l);
        if (rc)
            goto out;
        if (l) {
            e->n_chunks = k + 1;
            rc = RK_EINVAL; /* seq is past the last chunk */
            goto out;
        }
        struct exp_pos *np =
            realloc(e->starts, (e->n_starts + 1) * sizeof(*np));
        if (!np) {
            rc = RK_ENOMEM;
            goto out;
        }
        e->starts = np;
        e->starts[e->n_starts++] = nx;
    }
    struct exp_pos nx;
    rc = cut_chunk(s, e, seq, &e->starts[seq], &b, &nx, last);
    if (rc)
        goto out;
    if (*last) {
        e->n_chunks = seq + 1;
    } else if (e->n_starts == seq + 1) {
        struct exp_pos *np =
            realloc(e->starts, (e->n_starts + 1) * sizeof(*np));
        if (!np) {
            rc = RK_ENOMEM;
            goto out;
        }
        e->starts = np;
        e->starts[e->n_starts++] = nx;
    }
    *data = b.p;
    *len = (uint32_t)b.len;
    b.p = NULL;
out:
    pthread_mutex_unlock(&s->exp_mu);
    pthread_rwlock_unlock(&s->map_lock);
    free(b.p);
    if (rc == RK_ECORRUPT)
        rk_log(RK_LOG_ERROR,
               "storage %s: shard %llu: corrupt record while "
               "exporting a snapshot",
               s->path, (unsigned long long)sh->id);
    return rc;
}

/* ---------------------------------------------------- staging (writer) */

/* The chunk format version of a frame: 2 ("RKS2"), 1 ("RKS1", u16 key
 * lengths) or 0 (not a chunk). */
static int frame_version(const uint8_t *p, size_t len)
{
    if (len < CHUNK_HDR + 1)
        return 0;
    if (memcmp(p, "RKS2", 4) == 0)
        return 2;
    if (memcmp(p, "RKS1", 4) == 0)
        return 1;
    return 0;
}

/* Checks a chunk's frame; 0 or RK_EPROTO. */
static int check_frame(const void *data, size_t len, raft_index index,
                       raft_term term, uint32_t seq, bool last)
{
    const uint8_t *p = data;
    if (frame_version(p, len) == 0)
        return RK_EPROTO;
    if (stor__get32(p + 4) != stor__crc32c(0, p + 8, len - 8))
        return RK_EPROTO;
    if (stor__get64(p + 8) != index || stor__get64(p + 16) != term ||
        stor__get32(p + 24) != seq || p[28] != (last ? 1 : 0))
        return RK_EPROTO;
    return 0;
}

int stor__stage_chunk(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                      const struct raft_snap_chunk *c, int *op_rc)
{
    struct stor__state *w = &sh->w;
    *op_rc = 0;
    if (c->meta.index == 0) {
        *op_rc = RK_EINVAL;
        return 0;
    }
    if (check_frame(c->data, c->len, c->meta.index, c->meta.term, c->seq,
                    c->last)) {
        *op_rc = RK_EPROTO;
        return 0;
    }
    bool same = w->stage_next > 0 && w->stage_meta.index == c->meta.index &&
                w->stage_meta.term == c->meta.term;
    if (c->seq > 0) {
        if (same && c->seq < w->stage_next)
            return 0; /* a retransmission of a staged chunk */
        if (!same || c->seq != w->stage_next || w->stage_complete) {
            *op_rc = RK_EINVAL;
            return 0;
        }
    } else {
        /* Chunk 0 always restarts: another sender may cut differently. */
        int rc = stor__del_range(txn, s->dbi_stage, sh->id, NULL, 0, 0, NULL);
        if (rc)
            return rc;
        w->stage_meta = c->meta;
        w->stage_next = 0;
        w->stage_complete = false;
    }
    uint8_t kb[12];
    stor__put64(kb, sh->id);
    stor__put32(kb + 8, c->seq);
    MDB_val k = {.mv_size = 12, .mv_data = kb};
    MDB_val v = {.mv_size = c->len, .mv_data = (void *)c->data};
    int mrc = mdb_put(txn, s->dbi_stage, &k, &v, 0);
    if (mrc)
        return stor__from_mdb(mrc);
    w->stage_next = c->seq + 1;
    w->stage_complete = c->last;
    sh->w_dirty = true;
    return 0;
}

/* Walks the records of one chunk; with `write`, stores them. Returns
 * RK_EPROTO for a malformed chunk or a transaction error. */
static int walk_chunk(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                      const uint8_t *p, size_t len, uint32_t seq, bool is_last,
                      const struct raft_snapshot_meta *meta, bool write,
                      bool *saw_end)
{
    struct stor__rd r = {.p = p + CHUNK_HDR, .left = len - CHUNK_HDR};
    int version = frame_version(p, len);
    uint8_t kb[8];
    stor__put64(kb, sh->id);
    bool first = true;
    while (r.left > 0) {
        uint8_t type;
        if (*saw_end || !stor__rd_u8(&r, &type))
            return RK_EPROTO;
        if ((type == REC_INFO) != (seq == 0 && first))
            return RK_EPROTO;
        first = false;
        switch (type) {
        case REC_INFO: {
            uint64_t idx, term;
            struct raft_conf_state conf;
            if (!stor__rd_u64(&r, &idx) || !stor__rd_u64(&r, &term) ||
                !stor__conf_decode(&r, &conf) || idx != meta->index ||
                term != meta->term)
                return RK_EPROTO;
            break;
        }
        case REC_KV: {
            uint32_t klen = 0, vlen;
            uint16_t klen16 = 0;
            const void *key, *val;
            bool ok = version == 1 ? stor__rd_u16(&r, &klen16)
                                   : stor__rd_u32(&r, &klen);
            if (version == 1)
                klen = klen16;
            if (!ok || klen == 0 || klen > STOR_MAX_KEY ||
                !stor__rd_bytes(&r, klen, &key) || !stor__rd_u32(&r, &vlen) ||
                vlen < STOR__VAL_HDR || vlen - STOR__VAL_HDR > STOR_MAX_VALUE ||
                !stor__rd_bytes(&r, vlen, &val))
                return RK_EPROTO;
            if (write) {
                int rc = stor__kv_write_rec(s, txn, sh->id, key, klen, val,
                                            vlen);
                if (rc)
                    return rc;
            }
            break;
        }
        case REC_SESS: {
            const void *client, *val;
            uint32_t vlen;
            if (!stor__rd_bytes(&r, 8, &client) || !stor__rd_u32(&r, &vlen) ||
                !stor__sess_size_ok(vlen) ||
                !stor__rd_bytes(&r, vlen, &val))
                return RK_EPROTO;
            if (write) {
                uint8_t sk[16];
                memcpy(sk, kb, 8);
                memcpy(sk + 8, client, 8);
                MDB_val k = {.mv_size = 16, .mv_data = sk};
                MDB_val v = {.mv_size = vlen, .mv_data = (void *)val};
                int mrc = mdb_put(txn, s->dbi_sess, &k, &v, 0);
                if (mrc)
                    return stor__from_mdb(mrc);
            }
            break;
        }
        case REC_END:
            if (!is_last)
                return RK_EPROTO;
            *saw_end = true;
            break;
        default:
            return RK_EPROTO;
        }
    }
    return 0;
}

/* One pass over the staged chunks (validate, or write). */
static int install_pass(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                        const struct raft_snapshot_meta *meta, bool write)
{
    struct stor__state *w = &sh->w;
    uint8_t *copy = NULL;
    size_t cap = 0;
    bool saw_end = false;
    int rc = 0;
    for (uint32_t seq = 0; seq < w->stage_next && rc == 0; seq++) {
        uint8_t kb[12];
        stor__put64(kb, sh->id);
        stor__put32(kb + 8, seq);
        MDB_val k = {.mv_size = 12, .mv_data = kb}, v;
        int mrc = mdb_get(txn, s->dbi_stage, &k, &v);
        if (mrc) {
            rc = mrc == MDB_NOTFOUND ? RK_EPROTO : stor__from_mdb(mrc);
            break;
        }
        bool is_last = seq + 1 == w->stage_next;
        if (check_frame(v.mv_data, v.mv_size, meta->index, meta->term, seq,
                        is_last)) {
            rc = RK_EPROTO;
            break;
        }
        /* Writes invalidate pointers into the map: work on a copy. */
        if (v.mv_size > cap) {
            uint8_t *np = realloc(copy, v.mv_size);
            if (!np) {
                rc = RK_ENOMEM;
                break;
            }
            copy = np;
            cap = v.mv_size;
        }
        memcpy(copy, v.mv_data, v.mv_size);
        rc = walk_chunk(s, txn, sh, copy, v.mv_size, seq, is_last, meta, write,
                        &saw_end);
    }
    free(copy);
    if (rc == 0 && !saw_end)
        rc = RK_EPROTO;
    return rc;
}

int stor__install(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                  const struct raft_snapshot_meta *meta, int *op_rc)
{
    struct stor__state *w = &sh->w;
    int rc;
    *op_rc = 0;
    if (!w->stage_complete || w->stage_meta.index != meta->index ||
        w->stage_meta.term != meta->term || meta->index == 0) {
        *op_rc = RK_EINVAL;
        return 0;
    }
    rc = install_pass(s, txn, sh, meta, false);
    if (rc == RK_EPROTO) {
        rk_log(RK_LOG_WARN,
               "storage %s: shard %llu: staged snapshot %llu is malformed; "
               "dropped",
               s->path, (unsigned long long)sh->id,
               (unsigned long long)meta->index);
        *op_rc = RK_EPROTO;
        w->stage_next = 0;
        w->stage_complete = false;
        sh->w_dirty = true;
        return stor__del_range(txn, s->dbi_stage, sh->id, NULL, 0, 0, NULL);
    }
    if (rc)
        return rc;
    /* Replace the state machine and reset the log, all in this txn. */
    s->sp_epoch++; /* the split record goes with the kv */
    if ((rc = stor__del_range(txn, s->dbi_kv, sh->id, NULL, 0, 0, NULL)) ||
        (rc = stor__del_range(txn, s->dbi_sess, sh->id, NULL, 0, 0, NULL)) ||
        (rc = stor__log_drop(s, txn, sh)))
        return rc;
    rc = install_pass(s, txn, sh, meta, true);
    if (rc)
        return rc == RK_EPROTO ? RK_ECORRUPT : rc; /* it validated above */
    rc = stor__del_range(txn, s->dbi_stage, sh->id, NULL, 0, 0, NULL);
    if (rc)
        return rc;
    w->applied = meta->index;
    w->applied_term = meta->term;
    w->applied_conf = meta->conf;
    w->conf = meta->conf;
    w->base_index = meta->index;
    w->base_term = meta->term;
    w->snap = *meta;
    w->compact_target = 0;
    if (w->hs.commit < meta->index)
        w->hs.commit = meta->index;
    w->stage_next = 0;
    w->stage_complete = false;
    sh->w_last = meta->index;
    sh->w_last_term = meta->term;
    sh->w_dirty = true;
    sh->compact_pending = false;
    return 0;
}
