/* The KV state machine: apply with exactly-once sessions, get, scan. */
#include <stdlib.h>
#include <string.h>

#include "stor_int.h"

#define SCAN_DEFAULT_BYTES ((size_t)4 << 20)
#define SLOT_SIZE          29

/* ------------------------------------------------------------ sessions */

struct sess_reply {
    uint64_t seq; /* 0 = empty slot */
    int32_t status;
    uint64_t revision;
    uint64_t prev_revision;
    uint8_t flags;
};

struct sess {
    uint64_t max_seq;
    uint64_t bitmap; /* bit d: seq max_seq - d was applied */
    uint64_t last_index;
    struct sess_reply r[STOR_SESSION_REPLIES];
};

static void sess_encode(const struct sess *ss, uint8_t *p)
{
    stor__put64(p, ss->max_seq);
    stor__put64(p + 8, ss->bitmap);
    stor__put64(p + 16, ss->last_index);
    p += 24;
    for (unsigned i = 0; i < STOR_SESSION_REPLIES; i++, p += SLOT_SIZE) {
        stor__put64(p, ss->r[i].seq);
        stor__put32(p + 8, (uint32_t)ss->r[i].status);
        stor__put64(p + 12, ss->r[i].revision);
        stor__put64(p + 20, ss->r[i].prev_revision);
        p[28] = ss->r[i].flags;
    }
}

static int sess_decode(const void *buf, size_t len, struct sess *ss)
{
    const uint8_t *p = buf;
    if (len != STOR__SESS_SIZE)
        return RK_ECORRUPT;
    ss->max_seq = stor__get64(p);
    ss->bitmap = stor__get64(p + 8);
    ss->last_index = stor__get64(p + 16);
    p += 24;
    for (unsigned i = 0; i < STOR_SESSION_REPLIES; i++, p += SLOT_SIZE) {
        ss->r[i].seq = stor__get64(p);
        ss->r[i].status = (int32_t)stor__get32(p + 8);
        ss->r[i].revision = stor__get64(p + 12);
        ss->r[i].prev_revision = stor__get64(p + 20);
        ss->r[i].flags = p[28];
    }
    return 0;
}

static int sess_load(struct stor *s, MDB_txn *txn, uint64_t shard,
                     uint64_t client, struct sess *ss, bool *found)
{
    uint8_t kb[16];
    stor__put64(kb, shard);
    stor__put64(kb + 8, client);
    MDB_val k = {.mv_size = 16, .mv_data = kb}, v;
    int rc = mdb_get(txn, s->dbi_sess, &k, &v);
    memset(ss, 0, sizeof(*ss));
    *found = false;
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return stor__from_mdb(rc);
    *found = true;
    return sess_decode(v.mv_data, v.mv_size, ss);
}

static int sess_store(struct stor *s, MDB_txn *txn, uint64_t shard,
                      uint64_t client, const struct sess *ss)
{
    uint8_t kb[16];
    stor__put64(kb, shard);
    stor__put64(kb + 8, client);
    MDB_val k = {.mv_size = 16, .mv_data = kb};
    MDB_val v = {.mv_size = STOR__SESS_SIZE, .mv_data = NULL};
    int rc = mdb_put(txn, s->dbi_sess, &k, &v, MDB_RESERVE);
    if (rc)
        return stor__from_mdb(rc);
    sess_encode(ss, v.mv_data);
    return 0;
}

/* Records that seq was applied with result res. */
static void sess_record(struct sess *ss, const struct stor_result *res)
{
    if (res->seq > ss->max_seq) {
        uint64_t d = res->seq - ss->max_seq;
        ss->bitmap = d >= 64 ? 0 : ss->bitmap << d;
        ss->bitmap |= 1;
        ss->max_seq = res->seq;
    } else {
        ss->bitmap |= (uint64_t)1 << (ss->max_seq - res->seq);
    }
    ss->last_index = res->index;
    unsigned victim = 0;
    for (unsigned i = 0; i < STOR_SESSION_REPLIES; i++) {
        if (ss->r[i].seq == 0) {
            victim = i;
            break;
        }
        if (ss->r[i].seq < ss->r[victim].seq)
            victim = i;
    }
    ss->r[victim].seq = res->seq;
    ss->r[victim].status = res->status;
    ss->r[victim].revision = res->revision;
    ss->r[victim].prev_revision = res->prev_revision;
    ss->r[victim].flags = res->flags;
}

/* ------------------------------------------------------------ commands */

static void kv_key(uint8_t *kb, uint64_t shard, const void *key, uint32_t klen)
{
    stor__put64(kb, shard);
    memcpy(kb + 8, key, klen);
}

static int kv_put(struct stor *s, MDB_txn *txn, MDB_val *k, uint64_t create,
                  uint64_t mod, const void *val, uint32_t vlen)
{
    MDB_val v = {.mv_size = STOR__VAL_HDR + (size_t)vlen, .mv_data = NULL};
    int rc = mdb_put(txn, s->dbi_kv, k, &v, MDB_RESERVE);
    if (rc)
        return stor__from_mdb(rc);
    uint8_t *p = v.mv_data;
    stor__put64(p, create);
    stor__put64(p + 8, mod);
    if (vlen)
        memcpy(p + STOR__VAL_HDR, val, vlen);
    return 0;
}

static int exec_kv(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                   const struct stor_cmd *c, struct stor_result *res)
{
    uint8_t kb[8 + STOR_MAX_KEY];
    MDB_val k = {.mv_size = 8 + (size_t)c->klen, .mv_data = kb}, old;
    kv_key(kb, sh->id, c->key, c->klen);
    int mrc = mdb_get(txn, s->dbi_kv, &k, &old);
    if (mrc && mrc != MDB_NOTFOUND)
        return stor__from_mdb(mrc);
    bool exists = mrc == 0;
    if (exists && old.mv_size < STOR__VAL_HDR)
        return RK_ECORRUPT;
    uint64_t ocreate = exists ? stor__get64(old.mv_data) : 0;
    uint64_t omod = exists ? stor__get64((uint8_t *)old.mv_data + 8) : 0;

    switch (c->op) {
    case STOR_CMD_PUT:
        res->prev_revision = omod;
        res->revision = res->index;
        return kv_put(s, txn, &k, exists ? ocreate : res->index, res->index,
                      c->value, c->vlen);
    case STOR_CMD_DEL:
        if (!exists) {
            res->status = RK_ENOTFOUND;
            return 0;
        }
        res->revision = omod;
        mrc = mdb_del(txn, s->dbi_kv, &k, NULL);
        return stor__from_mdb(mrc);
    case STOR_CMD_CAS: {
        bool match;
        if (c->cas_flags & STOR_CAS_REVISION) {
            match =
                c->expect_rev == 0 ? !exists : exists && omod == c->expect_rev;
        } else if (!exists) {
            res->status = RK_ENOTFOUND;
            return 0;
        } else {
            match =
                old.mv_size - STOR__VAL_HDR == c->elen &&
                (c->elen == 0 || memcmp((uint8_t *)old.mv_data + STOR__VAL_HDR,
                                        c->expect, c->elen) == 0);
        }
        if (!match) {
            res->status = RK_ECASMISMATCH;
            res->revision = omod;
            return 0;
        }
        if (c->cas_flags & STOR_CAS_DELETE) {
            res->revision = omod;
            if (!exists)
                return 0; /* "must be absent" matched: nothing to delete */
            return stor__from_mdb(mdb_del(txn, s->dbi_kv, &k, NULL));
        }
        res->prev_revision = omod;
        res->revision = res->index;
        return kv_put(s, txn, &k, exists ? ocreate : res->index, res->index,
                      c->value, c->vlen);
    }
    default:
        res->status = RK_EPROTO;
        return 0;
    }
}

static int expire_sessions(struct stor *s, MDB_txn *txn, uint64_t shard,
                           raft_index before)
{
    uint8_t kb[8];
    MDB_cursor *cur;
    MDB_val k = {.mv_size = 8, .mv_data = kb}, v;
    stor__put64(kb, shard);
    int rc = mdb_cursor_open(txn, s->dbi_sess, &cur);
    if (rc)
        return stor__from_mdb(rc);
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size == 16 && stor__get64(k.mv_data) == shard) {
        if (v.mv_size != STOR__SESS_SIZE) {
            rc = MDB_CORRUPTED;
            break;
        }
        if (stor__get64((uint8_t *)v.mv_data + 16) < before) {
            rc = mdb_cursor_del(cur, 0);
            if (rc)
                break;
        }
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : stor__from_mdb(rc);
}

static int exec_cmd(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                    const struct stor_cmd *c, struct stor_result *res)
{
    struct sess ss;
    bool found = false;
    int rc;

    res->client_id = c->client_id;
    res->seq = c->seq;
    if (c->op == STOR_CMD_EXPIRE_SESSIONS)
        return expire_sessions(s, txn, sh->id, c->before_index);

    if (c->client_id) {
        rc = sess_load(s, txn, sh->id, c->client_id, &ss, &found);
        if (rc)
            return rc;
        if (found && c->seq <= ss.max_seq) {
            uint64_t d = ss.max_seq - c->seq;
            if (d >= STOR_SESSION_WINDOW) {
                res->status = RK_ESTALE;
                return 0;
            }
            if (ss.bitmap & ((uint64_t)1 << d)) {
                /* Applied before: answer the cached reply, never reapply. */
                res->flags |= STOR_RES_DUPLICATE;
                res->status = RK_ESTALE;
                for (unsigned i = 0; i < STOR_SESSION_REPLIES; i++) {
                    if (ss.r[i].seq == c->seq) {
                        res->status = ss.r[i].status;
                        res->revision = ss.r[i].revision;
                        res->prev_revision = ss.r[i].prev_revision;
                        res->flags |= ss.r[i].flags;
                        break;
                    }
                }
                return 0;
            }
        }
    }
    /* A key whose arc this shard gave away in a split: not applied here
     * (the new shard serves it; the client retries there). */
    bool moved = false;
    if ((rc = stor__split_moved(s, txn, sh, c->key, c->klen, &moved)))
        return rc;
    if (moved) {
        res->status = RK_EWRONGSHARD;
        return 0;
    }
    rc = exec_kv(s, txn, sh, c, res);
    if (rc)
        return rc;
    if (c->client_id) {
        sess_record(&ss, res);
        rc = sess_store(s, txn, sh->id, c->client_id, &ss);
    }
    return rc;
}

/* Folds a membership change into a configuration (thesis §4.1). */
static bool conf_has(const raft_id *ids, uint32_t n, raft_id id, uint32_t *at)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == id) {
            *at = i;
            return true;
        }
    return false;
}

static void conf_drop(raft_id *ids, uint32_t *n, uint32_t at)
{
    memmove(&ids[at], &ids[at + 1], (*n - at - 1) * sizeof(*ids));
    (*n)--;
}

static void conf_fold(struct raft_conf_state *c,
                      const struct raft_conf_change *cc)
{
    uint32_t at = 0;
    bool voter = conf_has(c->voters, c->n_voters, cc->node, &at);
    uint32_t lat = 0;
    bool learner = conf_has(c->learners, c->n_learners, cc->node, &lat);
    switch (cc->type) {
    case RAFT_CC_ADD_VOTER:
    case RAFT_CC_PROMOTE:
        if (learner)
            conf_drop(c->learners, &c->n_learners, lat);
        if (!voter && c->n_voters < RAFT_MAX_MEMBERS &&
            (cc->type == RAFT_CC_ADD_VOTER || learner))
            c->voters[c->n_voters++] = cc->node;
        break;
    case RAFT_CC_ADD_LEARNER:
        if (!voter && !learner && c->n_learners < RAFT_MAX_MEMBERS)
            c->learners[c->n_learners++] = cc->node;
        break;
    case RAFT_CC_REMOVE:
        if (voter)
            conf_drop(c->voters, &c->n_voters, at);
        if (learner)
            conf_drop(c->learners, &c->n_learners, lat);
        break;
    default:
        break;
    }
}

int stor__apply_entry(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                      raft_term term, raft_index index, uint8_t type,
                      const void *data, uint32_t len, struct stor_result *res)
{
    memset(res, 0, sizeof(*res));
    res->shard = sh->id;
    res->index = index;
    if (index <= sh->w.applied) {
        res->flags = STOR_RES_SKIPPED;
        return 0;
    }
    if (index != sh->w.applied + 1)
        return RK_EINVAL;
    int rc = 0;
    switch (type) {
    case RAFT_ENTRY_NOOP:
        res->flags = STOR_RES_NOCMD;
        break;
    case RAFT_ENTRY_CONF:
        res->flags = STOR_RES_NOCMD;
        if (s->conf_decode) {
            struct raft_conf_change cc;
            if (s->conf_decode(data, len, &cc) == 0)
                conf_fold(&sh->w.applied_conf, &cc);
            else
                res->status = RK_EPROTO;
        }
        break;
    case RAFT_ENTRY_NORMAL:
        if (len == 0) {
            res->flags = STOR_RES_NOCMD;
        } else {
            struct stor_cmd c;
            res->status = stor_cmd_decode(data, len, &c);
            if (res->status == 0 && c.op == STOR_CMD_SPLIT)
                rc = stor__split_apply(s, txn, sh, term, index, &c, res);
            else if (res->status == 0)
                rc = exec_cmd(s, txn, sh, &c, res);
        }
        break;
    default:
        res->status = RK_EPROTO;
        break;
    }
    if (rc)
        return rc;
    sh->w.applied = index;
    sh->w.applied_term = term;
    sh->w_dirty = true;
    return 0;
}

/* --------------------------------------------------------------- reads */

int stor_kv_get(struct stor *s, uint64_t shard, const void *key, size_t klen,
                struct stor_value *out)
{
    uint8_t kb[8 + STOR_MAX_KEY];
    memset(out, 0, sizeof(*out));
    if (klen == 0 || !key)
        return RK_EINVAL;
    if (klen > STOR_MAX_KEY)
        return RK_ETOOLARGE;
    kv_key(kb, shard, key, (uint32_t)klen);
    MDB_val k = {.mv_size = 8 + klen, .mv_data = kb}, v;
    MDB_txn *txn;
    int rc = stor__read_begin(s, &txn);
    if (rc)
        return rc;
    int mrc = mdb_get(txn, s->dbi_kv, &k, &v);
    if (mrc == 0) {
        if (v.mv_size < STOR__VAL_HDR ||
            v.mv_size - STOR__VAL_HDR > UINT32_MAX) {
            rc = RK_ECORRUPT;
        } else {
            out->len = (uint32_t)(v.mv_size - STOR__VAL_HDR);
            out->data = malloc(out->len ? out->len : 1);
            if (!out->data) {
                rc = RK_ENOMEM;
            } else {
                memcpy(out->data, (uint8_t *)v.mv_data + STOR__VAL_HDR,
                       out->len);
                out->create_revision = stor__get64(v.mv_data);
                out->revision = stor__get64((uint8_t *)v.mv_data + 8);
            }
        }
    } else {
        rc = stor__from_mdb(mrc);
    }
    stor__read_end(s, txn);
    if (rc) {
        free(out->data);
        memset(out, 0, sizeof(*out));
    }
    return rc;
}

int stor_kv_scan(struct stor *s, uint64_t shard, const void *prefix,
                 size_t plen, const void *start, size_t slen, uint32_t limit,
                 size_t max_bytes, struct stor_scan *out)
{
    uint8_t pk[8 + STOR_MAX_KEY];
    uint8_t sk[8 + STOR_MAX_KEY];
    memset(out, 0, sizeof(*out));
    if ((plen && !prefix) || (slen && !start))
        return RK_EINVAL;
    if (plen > STOR_MAX_KEY || slen > STOR_MAX_KEY)
        return RK_ETOOLARGE;
    if (max_bytes == 0)
        max_bytes = SCAN_DEFAULT_BYTES;
    stor__put64(pk, shard);
    if (plen)
        memcpy(pk + 8, prefix, plen);
    /* Seek to max(prefix, start). */
    const uint8_t *seek = pk;
    size_t seek_len = 8 + plen;
    if (start) {
        stor__put64(sk, shard);
        if (slen)
            memcpy(sk + 8, start, slen);
        size_t m = slen < plen ? slen : plen;
        int c = memcmp(start, prefix ? prefix : "", m);
        if (c > 0 || (c == 0 && slen > plen)) {
            seek = sk;
            seek_len = 8 + slen;
        }
    }
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc = stor__read_begin(s, &txn);
    if (rc)
        return rc;
    int mrc = mdb_cursor_open(txn, s->dbi_kv, &cur);
    if (mrc)
        goto done;
    /* Pass 1: count items and bytes. */
    uint32_t n = 0;
    size_t bytes = 0;
    bool more = false;
    k.mv_data = (void *)seek;
    k.mv_size = seek_len;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (mrc == 0) {
        if (k.mv_size < 8 + plen || memcmp(k.mv_data, pk, 8 + plen) != 0)
            break;
        if (v.mv_size < STOR__VAL_HDR) {
            rc = RK_ECORRUPT;
            goto done;
        }
        size_t sz = k.mv_size - 8 + v.mv_size - STOR__VAL_HDR;
        if ((limit && n >= limit) || (n > 0 && bytes + sz > max_bytes)) {
            more = true;
            break;
        }
        n++;
        bytes += sz;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (mrc && mrc != MDB_NOTFOUND)
        goto done;
    mrc = 0;
    out->more = more;
    if (n == 0)
        goto done;
    size_t arr = (size_t)n * sizeof(struct stor_kv_item);
    uint8_t *blk = malloc(arr + bytes + 1);
    if (!blk) {
        rc = RK_ENOMEM;
        goto done;
    }
    struct stor_kv_item *items = (struct stor_kv_item *)blk;
    uint8_t *d = blk + arr;
    k.mv_data = (void *)seek;
    k.mv_size = seek_len;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    for (uint32_t i = 0; i < n && mrc == 0; i++) {
        struct stor_kv_item *it = &items[i];
        it->klen = (uint32_t)(k.mv_size - 8);
        memcpy(d, (uint8_t *)k.mv_data + 8, it->klen);
        it->key = d;
        d += it->klen;
        it->create_revision = stor__get64(v.mv_data);
        it->revision = stor__get64((uint8_t *)v.mv_data + 8);
        it->vlen = (uint32_t)(v.mv_size - STOR__VAL_HDR);
        memcpy(d, (uint8_t *)v.mv_data + STOR__VAL_HDR, it->vlen);
        it->value = d;
        d += it->vlen;
        if (i + 1 < n)
            mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (mrc) {
        free(blk);
        goto done;
    }
    out->items = items;
    out->n = n;
done:
    if (cur)
        mdb_cursor_close(cur);
    stor__read_end(s, txn);
    if (!rc && mrc)
        rc = stor__from_mdb(mrc);
    if (rc)
        memset(out, 0, sizeof(*out));
    return rc;
}

int stor_session_last_seq(struct stor *s, uint64_t shard, uint64_t client_id,
                          uint64_t *seq)
{
    MDB_txn *txn;
    struct sess ss;
    bool found;
    *seq = 0;
    int rc = stor__read_begin(s, &txn);
    if (rc)
        return rc;
    rc = sess_load(s, txn, shard, client_id, &ss, &found);
    stor__read_end(s, txn);
    if (rc == 0)
        *seq = ss.max_seq;
    return rc;
}
