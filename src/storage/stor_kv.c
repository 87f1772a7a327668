/* The KV state machine: apply with exactly-once sessions, get, scan. */
#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "rk_assert.h"
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

bool stor__sess_size_ok(size_t len)
{
    return len == STOR__SESS_SIZE || len == STOR__SESS_SIZE_MAX;
}

/* Puts reply x in a free slot, else in place of the oldest kept one (always
 * when recording, only if x is newer when reading old records). */
static void sess_keep(struct sess *ss, const struct sess_reply *x,
                      bool only_newer)
{
    unsigned victim = 0;
    for (unsigned i = 0; i < STOR_SESSION_REPLIES; i++) {
        if (ss->r[i].seq == 0) {
            victim = i;
            break;
        }
        if (ss->r[i].seq < ss->r[victim].seq)
            victim = i;
    }
    if (!only_newer || ss->r[victim].seq < x->seq)
        ss->r[victim] = *x;
}

/* Reads a record of STOR__SESS_SIZE, or of the older eight-slot form
 * (STOR__SESS_SIZE_MAX: same header, more slots), keeping its newest
 * replies; the next store writes the current form. */
static int sess_decode(const void *buf, size_t len, struct sess *ss)
{
    const uint8_t *p = buf;
    if (!stor__sess_size_ok(len))
        return RK_ECORRUPT;
    memset(ss, 0, sizeof(*ss));
    ss->max_seq = stor__get64(p);
    ss->bitmap = stor__get64(p + 8);
    ss->last_index = stor__get64(p + 16);
    p += 24;
    for (size_t i = 0; i < (len - 24) / SLOT_SIZE; i++, p += SLOT_SIZE) {
        struct sess_reply x;
        x.seq = stor__get64(p);
        x.status = (int32_t)stor__get32(p + 8);
        x.revision = stor__get64(p + 12);
        x.prev_revision = stor__get64(p + 20);
        x.flags = p[28];
        if (x.seq != 0)
            sess_keep(ss, &x, true);
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

/* Opens a cursor of txn on dbi and puts it on key k (or where k goes, so
 * that a put of k through it finds the page without a new descent):
 * LMDB's code of the seek, MDB_NOTFOUND when k is absent. *cur is NULL
 * only when the open failed; else the caller closes it. */
static int cursor_seek(MDB_txn *txn, MDB_dbi dbi, MDB_val *k,
                       MDB_cursor **cur, MDB_val *v)
{
    int mrc = mdb_cursor_open(txn, dbi, cur);
    if (mrc) {
        *cur = NULL;
        return mrc;
    }
    return mdb_cursor_get(*cur, k, v, MDB_SET);
}

/* The writer's access to one session record: sess_seek leaves a cursor on
 * it (or where it goes), so that its store after the command finds it on
 * the cursor's page instead of descending the tree again. */
struct sess_at {
    MDB_cursor *cur; /* closed by the caller */
    uint8_t kb[16];
    MDB_val k;
};

/* sess_load through a new cursor left in sa->cur. */
static int sess_seek(struct stor *s, MDB_txn *txn, uint64_t shard,
                     uint64_t client, struct sess_at *sa, struct sess *ss,
                     bool *found)
{
    stor__put64(sa->kb, shard);
    stor__put64(sa->kb + 8, client);
    sa->k.mv_size = 16;
    sa->k.mv_data = sa->kb;
    memset(ss, 0, sizeof(*ss));
    *found = false;
    MDB_val v;
    int mrc = cursor_seek(txn, s->dbi_sess, &sa->k, &sa->cur, &v);
    if (mrc == MDB_NOTFOUND)
        return 0;
    if (mrc)
        return stor__from_mdb(mrc);
    *found = true;
    return sess_decode(v.mv_data, v.mv_size, ss);
}

static int sess_store_at(struct sess_at *sa, const struct sess *ss)
{
    MDB_val v = {.mv_size = STOR__SESS_SIZE, .mv_data = NULL};
    int rc = mdb_cursor_put(sa->cur, &sa->k, &v, MDB_RESERVE);
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
    struct sess_reply x = {.seq = res->seq,
                           .status = res->status,
                           .revision = res->revision,
                           .prev_revision = res->prev_revision,
                           .flags = res->flags};
    sess_keep(ss, &x, false);
}

/* ------------------------------------------------------ key encoding */

int stor__key_cmp(const void *a, size_t alen, const void *b, size_t blen)
{
    size_t m = alen < blen ? alen : blen;
    int c = m ? memcmp(a, b, m) : 0;
    if (c)
        return c;
    return alen < blen ? -1 : alen > blen;
}

static uint64_t key_hash(const void *key, size_t klen)
{
    uint64_t h = XXH3_64bits_withSeed(key, klen, STOR__KEY_HASH_SEED);
#ifdef STOR_TEST_HASH_BITS
    /* Test builds only (rk_storage_weakhash): force collisions. */
    h &= ((uint64_t)1 << STOR_TEST_HASH_BITS) - 1;
#endif
    return h;
}

size_t stor__kv_key_encode(uint8_t *out, uint64_t shard, const void *key,
                           size_t klen)
{
    RK_ASSERT(klen > 0 && klen <= STOR_MAX_KEY);
    stor__put64(out, shard);
    if (klen <= STOR__KEY_INLINE) {
        memcpy(out + 8, key, klen);
        return 8 + klen;
    }
    memcpy(out + 8, key, STOR__KEY_INLINE);
    stor__put64(out + 8 + STOR__KEY_INLINE, key_hash(key, klen));
    return STOR__KV_KEY_MAX;
}

/* Fills the parts of a value record; false if it is too short. */
static bool rec_parse(const uint8_t *rec, size_t rlen, struct stor__kvrec *out)
{
    if (rlen < STOR__VAL_HDR || rlen - STOR__VAL_HDR > UINT32_MAX)
        return false;
    out->rec = rec;
    out->rlen = rlen;
    out->create_rev = stor__get64(rec);
    out->mod_rev = stor__get64(rec + 8);
    out->val = rec + STOR__VAL_HDR;
    out->vlen = (uint32_t)(rlen - STOR__VAL_HDR);
    return true;
}

void stor__kvslot_begin(struct stor__kvslot *it, const MDB_val *k,
                        const MDB_val *v)
{
    it->k = k->mv_data;
    it->klen = k->mv_size;
    it->p = v->mv_data;
    it->left = v->mv_size;
    it->started = false;
}

int stor__kvslot_next(struct stor__kvslot *it, struct stor__kvrec *out)
{
    memset(out, 0, sizeof(*out));
    if (it->klen < 9 || (it->klen > 8 + STOR__KEY_INLINE &&
                         !stor__kv_key_is_long(it->klen)))
        return RK_ECORRUPT;
    if (!stor__kv_key_is_long(it->klen)) {
        if (it->started)
            return 0;
        it->started = true;
        out->key = it->k + 8;
        out->klen = (uint32_t)(it->klen - 8);
        return rec_parse(it->p, it->left, out) ? 1 : RK_ECORRUPT;
    }
    if (it->left == 0)
        return it->started ? 0 : RK_ECORRUPT; /* an empty slot */
    it->started = true;
    /* u32 klen | key | u32 rlen | record */
    if (it->left < 4)
        return RK_ECORRUPT;
    uint32_t klen = stor__get32(it->p);
    if (klen <= STOR__KEY_INLINE || klen > STOR_MAX_KEY ||
        it->left - 4 < (size_t)klen + 4)
        return RK_ECORRUPT;
    const uint8_t *key = it->p + 4;
    uint32_t rlen = stor__get32(key + klen);
    size_t used = 4 + (size_t)klen + 4 + rlen;
    if (it->left < used)
        return RK_ECORRUPT;
    if (memcmp(key, it->k + 8, STOR__KEY_INLINE) != 0 ||
        stor__get64(it->k + 8 + STOR__KEY_INLINE) != key_hash(key, klen))
        return RK_ECORRUPT;
    out->key = key;
    out->klen = klen;
    if (!rec_parse(key + klen + 4, rlen, out))
        return RK_ECORRUPT;
    it->p += used;
    it->left -= used;
    return 1;
}

int stor__kv_find(struct stor *s, MDB_txn *txn, uint64_t shard,
                  const void *key, size_t klen, struct stor__kvrec *out)
{
    uint8_t kb[STOR__KV_KEY_MAX];
    MDB_val k = {.mv_data = kb}, v;
    memset(out, 0, sizeof(*out));
    k.mv_size = stor__kv_key_encode(kb, shard, key, klen);
    int mrc = mdb_get(txn, s->dbi_kv, &k, &v);
    if (mrc)
        return stor__from_mdb(mrc);
    struct stor__kvslot it;
    stor__kvslot_begin(&it, &k, &v);
    int rc;
    while ((rc = stor__kvslot_next(&it, out)) == 1)
        if (stor__key_cmp(out->key, out->klen, key, klen) == 0)
            return 0;
    memset(out, 0, sizeof(*out));
    return rc == 0 ? RK_ENOTFOUND : rc;
}

/* Rewrites a long slot: its entries except `key`'s, then (if rec) the new
 * entry; deletes the slot when nothing is left. */
static int slot_rewrite(struct stor *s, MDB_txn *txn, MDB_val *k,
                        const void *key, size_t klen, const void *rec,
                        size_t rlen, bool *found)
{
    MDB_val v;
    uint8_t *others = NULL;
    size_t olen = 0;
    *found = false;
    int mrc = mdb_get(txn, s->dbi_kv, k, &v);
    if (mrc && mrc != MDB_NOTFOUND)
        return stor__from_mdb(mrc);
    if (mrc == 0) {
        /* Keep the other keys' entries (a 64-bit hash collision: rare). */
        struct stor__kvslot it;
        struct stor__kvrec r;
        int rc;
        stor__kvslot_begin(&it, k, &v);
        const uint8_t *at = it.p;
        while ((rc = stor__kvslot_next(&it, &r)) == 1) {
            size_t n = (size_t)(it.p - at);
            if (stor__key_cmp(r.key, r.klen, key, klen) == 0) {
                *found = true;
            } else {
                uint8_t *np = realloc(others, olen + n);
                if (!np) {
                    free(others);
                    return RK_ENOMEM;
                }
                others = np;
                memcpy(others + olen, at, n);
                olen += n;
            }
            at = it.p;
        }
        if (rc) {
            free(others);
            return rc;
        }
    }
    if (!rec && olen == 0) {
        free(others);
        return mrc == 0 ? stor__from_mdb(mdb_del(txn, s->dbi_kv, k, NULL))
                        : 0;
    }
    size_t elen = rec ? 8 + klen + rlen : 0;
    MDB_val nv = {.mv_size = olen + elen, .mv_data = NULL};
    mrc = mdb_put(txn, s->dbi_kv, k, &nv, MDB_RESERVE);
    if (mrc) {
        free(others);
        return stor__from_mdb(mrc);
    }
    uint8_t *p = nv.mv_data;
    if (olen)
        memcpy(p, others, olen);
    free(others);
    if (rec) {
        p += olen;
        stor__put32(p, (uint32_t)klen);
        memcpy(p + 4, key, klen);
        stor__put32(p + 4 + klen, (uint32_t)rlen);
        memcpy(p + 8 + klen, rec, rlen);
    }
    return 0;
}

/* A write or delete of `key` in the open transaction: if it is a shard's
 * split record, stor__split_moved's copies of them are stale. */
static void split_key_written(struct stor *s, const void *key, size_t klen)
{
    if (klen == STOR_SPLIT_KEY_LEN && memcmp(key, STOR_SPLIT_KEY, klen) == 0)
        s->sp_epoch++;
}

int stor__kv_write_rec(struct stor *s, MDB_txn *txn, uint64_t shard,
                       const void *key, size_t klen, const void *rec,
                       size_t rlen)
{
    uint8_t kb[STOR__KV_KEY_MAX];
    MDB_val k = {.mv_data = kb};
    if (rlen < STOR__VAL_HDR)
        return RK_EINVAL;
    split_key_written(s, key, klen);
    k.mv_size = stor__kv_key_encode(kb, shard, key, klen);
    int rc;
    if (stor__kv_key_is_long(k.mv_size)) {
        bool found;
        rc = slot_rewrite(s, txn, &k, key, klen, rec, rlen, &found);
    } else {
        MDB_val v = {.mv_size = rlen, .mv_data = (void *)rec};
        rc = stor__from_mdb(mdb_put(txn, s->dbi_kv, &k, &v, 0));
    }
    return rc ? rc : stor__pend_kv(s, shard, key, klen, rec, rlen);
}

/* Fills a KV record reserved in the open transaction at p and tells the
 * overlay (p is the txn's own copy, valid until its next write). */
static int fill_rec(struct stor *s, uint64_t shard, const void *key,
                    size_t klen, uint8_t *p, uint64_t create, uint64_t mod,
                    const void *val, size_t vlen)
{
    stor__put64(p, create);
    stor__put64(p + 8, mod);
    if (vlen)
        memcpy(p + STOR__VAL_HDR, val, vlen);
    return stor__pend_kv(s, shard, key, klen, p, STOR__VAL_HDR + vlen);
}

int stor__kv_write(struct stor *s, MDB_txn *txn, uint64_t shard,
                   const void *key, size_t klen, uint64_t create,
                   uint64_t mod, const void *val, size_t vlen)
{
    uint8_t kb[STOR__KV_KEY_MAX];
    MDB_val k = {.mv_data = kb};
    split_key_written(s, key, klen);
    k.mv_size = stor__kv_key_encode(kb, shard, key, klen);
    if (stor__kv_key_is_long(k.mv_size)) {
        /* Build the record once; slot_rewrite copies it into the slot. */
        uint8_t *rec = malloc(STOR__VAL_HDR + vlen);
        if (!rec)
            return RK_ENOMEM;
        stor__put64(rec, create);
        stor__put64(rec + 8, mod);
        if (vlen)
            memcpy(rec + STOR__VAL_HDR, val, vlen);
        bool found;
        int rc = slot_rewrite(s, txn, &k, key, klen, rec, STOR__VAL_HDR + vlen,
                              &found);
        if (rc == 0)
            rc = stor__pend_kv(s, shard, key, klen, rec, STOR__VAL_HDR + vlen);
        free(rec);
        return rc;
    }
    MDB_val v = {.mv_size = STOR__VAL_HDR + vlen, .mv_data = NULL};
    int mrc = mdb_put(txn, s->dbi_kv, &k, &v, MDB_RESERVE);
    if (mrc)
        return stor__from_mdb(mrc);
    return fill_rec(s, shard, key, klen, v.mv_data, create, mod, val, vlen);
}

int stor__kv_delete(struct stor *s, MDB_txn *txn, uint64_t shard,
                    const void *key, size_t klen)
{
    uint8_t kb[STOR__KV_KEY_MAX];
    MDB_val k = {.mv_data = kb};
    split_key_written(s, key, klen);
    k.mv_size = stor__kv_key_encode(kb, shard, key, klen);
    int rc;
    if (stor__kv_key_is_long(k.mv_size)) {
        bool found;
        rc = slot_rewrite(s, txn, &k, key, klen, NULL, 0, &found);
        if (rc == 0 && !found)
            rc = RK_ENOTFOUND;
    } else {
        rc = stor__from_mdb(mdb_del(txn, s->dbi_kv, &k, NULL));
    }
    return rc ? rc : stor__pend_kv(s, shard, key, klen, NULL, 0);
}

/* ------------------------------------------------------------ commands */

/* One command's access to its key: a short key is found with a cursor
 * that stays on it, so that its write or delete costs no second descent
 * of the tree (the write finds the key on the cursor's page); a long key
 * goes through the slot functions above. */
struct kv_at {
    MDB_cursor *cur; /* NULL for a long key */
    bool found;
    uint8_t kb[STOR__KV_KEY_MAX];
    MDB_val k;
};

/* Like stor__kv_find; kv_at_end releases *at whatever it returns. */
static int kv_at_find(struct stor *s, MDB_txn *txn, uint64_t shard,
                      const void *key, size_t klen, struct kv_at *at,
                      struct stor__kvrec *out)
{
    at->cur = NULL;
    at->found = false;
    at->k.mv_data = at->kb;
    at->k.mv_size = stor__kv_key_encode(at->kb, shard, key, klen);
    int rc;
    if (stor__kv_key_is_long(at->k.mv_size)) {
        rc = stor__kv_find(s, txn, shard, key, klen, out);
    } else {
        memset(out, 0, sizeof(*out));
        MDB_val v;
        int mrc = cursor_seek(txn, s->dbi_kv, &at->k, &at->cur, &v);
        if (!at->cur)
            return stor__from_mdb(mrc);
        if (mrc) {
            rc = stor__from_mdb(mrc);
        } else {
            /* What stor__kvslot_next reads of a short key's entry. */
            struct stor__kvslot it;
            stor__kvslot_begin(&it, &at->k, &v);
            rc = stor__kvslot_next(&it, out);
            rc = rc == 1 ? 0 : rc == 0 ? RK_ENOTFOUND : rc;
            if (rc)
                memset(out, 0, sizeof(*out));
        }
    }
    at->found = rc == 0;
    return rc;
}

static void kv_at_end(struct kv_at *at)
{
    if (at->cur)
        mdb_cursor_close(at->cur);
    at->cur = NULL;
}

/* stor__kv_write of the key kv_at_find looked up. */
static int kv_at_write(struct stor *s, MDB_txn *txn, struct kv_at *at,
                       uint64_t shard, const void *key, size_t klen,
                       uint64_t create, uint64_t mod, const void *val,
                       size_t vlen)
{
    if (!at->cur)
        return stor__kv_write(s, txn, shard, key, klen, create, mod, val,
                              vlen);
    split_key_written(s, key, klen);
    MDB_val v = {.mv_size = STOR__VAL_HDR + vlen, .mv_data = NULL};
    int mrc = mdb_cursor_put(at->cur, &at->k, &v, MDB_RESERVE);
    if (mrc)
        return stor__from_mdb(mrc);
    return fill_rec(s, shard, key, klen, v.mv_data, create, mod, val, vlen);
}

/* stor__kv_delete of the key kv_at_find found (the cursor is on it). */
static int kv_at_delete(struct stor *s, MDB_txn *txn, struct kv_at *at,
                        uint64_t shard, const void *key, size_t klen)
{
    if (!at->cur)
        return stor__kv_delete(s, txn, shard, key, klen);
    RK_ASSERT(at->found);
    split_key_written(s, key, klen);
    int mrc = mdb_cursor_del(at->cur, 0);
    if (mrc)
        return stor__from_mdb(mrc);
    return stor__pend_kv(s, shard, key, klen, NULL, 0);
}

static int kv_at_run(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                     const struct stor_cmd *c, struct stor_result *res,
                     struct kv_at *at)
{
    struct stor__kvrec old;
    at->cur = NULL;
    if (c->klen == 0) {
        /* The encoders refuse it; a log from elsewhere gets a status. */
        res->status = RK_EPROTO;
        return 0;
    }
    int rc = kv_at_find(s, txn, sh->id, c->key, c->klen, at, &old);
    if (rc && rc != RK_ENOTFOUND)
        return rc;
    bool exists = rc == 0;
    uint64_t ocreate = exists ? old.create_rev : 0;
    uint64_t omod = exists ? old.mod_rev : 0;

    switch (c->op) {
    case STOR_CMD_PUT:
        res->prev_revision = omod;
        res->revision = res->index;
        return kv_at_write(s, txn, at, sh->id, c->key, c->klen,
                           exists ? ocreate : res->index, res->index,
                           c->value, c->vlen);
    case STOR_CMD_DEL:
        if (!exists) {
            res->status = RK_ENOTFOUND;
            return 0;
        }
        res->revision = omod;
        return kv_at_delete(s, txn, at, sh->id, c->key, c->klen);
    case STOR_CMD_CAS: {
        bool match;
        if (c->cas_flags & STOR_CAS_REVISION) {
            match =
                c->expect_rev == 0 ? !exists : exists && omod == c->expect_rev;
        } else if (!exists) {
            res->status = RK_ENOTFOUND;
            return 0;
        } else {
            match = old.vlen == c->elen &&
                    (c->elen == 0 || memcmp(old.val, c->expect, c->elen) == 0);
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
            return kv_at_delete(s, txn, at, sh->id, c->key, c->klen);
        }
        res->prev_revision = omod;
        res->revision = res->index;
        return kv_at_write(s, txn, at, sh->id, c->key, c->klen,
                           exists ? ocreate : res->index, res->index,
                           c->value, c->vlen);
    }
    default:
        res->status = RK_EPROTO;
        return 0;
    }
}

static int exec_kv(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                   const struct stor_cmd *c, struct stor_result *res)
{
    struct kv_at at;
    int rc = kv_at_run(s, txn, sh, c, res, &at);
    kv_at_end(&at);
    return rc;
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
        if (!stor__sess_size_ok(v.mv_size)) {
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

/* The checks and the command itself (exec_cmd); sa->cur, when set, is on
 * the client's session record (or where it goes). */
static int exec_cmd_at(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                       const struct stor_cmd *c, struct stor_result *res,
                       struct sess_at *sa)
{
    struct sess ss;
    bool found = false;
    int rc;

    if (c->client_id) {
        rc = sess_seek(s, txn, sh->id, c->client_id, sa, &ss, &found);
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
        rc = sess_store_at(sa, &ss);
    }
    return rc;
}

static int exec_cmd(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                    const struct stor_cmd *c, struct stor_result *res)
{
    res->client_id = c->client_id;
    res->seq = c->seq;
    if (c->op == STOR_CMD_EXPIRE_SESSIONS)
        return expire_sessions(s, txn, sh->id, c->before_index);
    struct sess_at sa = {.cur = NULL};
    int rc = exec_cmd_at(s, txn, sh, c, res, &sa);
    if (sa.cur)
        mdb_cursor_close(sa.cur);
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
    memset(out, 0, sizeof(*out));
    if (klen == 0 || !key)
        return RK_EINVAL;
    if (klen > STOR_MAX_KEY)
        return RK_ETOOLARGE;
    MDB_txn *txn;
    struct stor__kvrec r;
    /* What the open transaction wrote first, then the checkpoint (in that
     * order: READER RACE in stor_overlay.c). */
    int rc = stor__overlay_get(s, shard, key, klen, out);
    if (rc != 0)
        return rc == 1 ? 0 : rc;
    rc = stor__read_begin(s, &txn);
    if (rc)
        return rc;
    rc = stor__kv_find(s, txn, shard, key, klen, &r);
    if (rc == 0) {
        out->len = r.vlen;
        out->data = malloc(r.vlen ? r.vlen : 1);
        if (!out->data) {
            rc = RK_ENOMEM;
        } else {
            memcpy(out->data, r.val, r.vlen);
            out->create_revision = r.create_rev;
            out->revision = r.mod_rev;
        }
    }
    stor__read_end(s, txn);
    if (rc) {
        free(out->data);
        memset(out, 0, sizeof(*out));
    }
    return rc;
}

/* A scan collects references into the read txn's map first, then copies. */
struct scan_refs {
    struct stor__kvrec *r;
    size_t n, cap;
    size_t bytes; /* keys + values of r[0..n) */
};

static int refs_push(struct scan_refs *rs, const struct stor__kvrec *r)
{
    if (rs->n == rs->cap) {
        size_t nc = rs->cap ? rs->cap * 2 : 64;
        struct stor__kvrec *np = realloc(rs->r, nc * sizeof(*np));
        if (!np)
            return RK_ENOMEM;
        rs->r = np;
        rs->cap = nc;
    }
    rs->r[rs->n++] = *r;
    rs->bytes += (size_t)r->klen + r->vlen;
    return 0;
}

/* Pushes an overlay record (its copy outlives the merge). */
static int ov_push(struct scan_refs *rs, const struct stor__ov_item *o)
{
    struct stor__kvrec r = {
        .key = o->key,
        .klen = o->klen,
        .rec = o->rec,
        .rlen = o->rlen,
        .create_rev = stor__get64(o->rec),
        .mod_rev = stor__get64(o->rec + 8),
        .val = o->rec + STOR__VAL_HDR,
        .vlen = o->rlen - STOR__VAL_HDR,
    };
    return refs_push(rs, &r);
}

static int rec_cmp(const void *a, const void *b)
{
    const struct stor__kvrec *x = a, *y = b;
    return stor__key_cmp(x->key, x->klen, y->key, y->klen);
}

/* Does r belong to the scan: key >= start and starts with prefix? */
static bool scan_wants(const struct stor__kvrec *r, const void *prefix,
                       size_t plen, const void *start, size_t slen)
{
    if (r->klen < plen || (plen && memcmp(r->key, prefix, plen) != 0))
        return false;
    return !start || stor__key_cmp(r->key, r->klen, start, slen) >= 0;
}

/* Pushes the wanted records of the kv entry at the cursor (k, v); for a
 * long slot, of the whole run of slots sharing its 480-byte prefix, sorted
 * by full key. Leaves the cursor on the next entry (*mrc its status). */
static int scan_entry(MDB_cursor *cur, MDB_val *k, MDB_val *v, int *mrc,
                      struct scan_refs *rs, const void *prefix, size_t plen,
                      const void *start, size_t slen)
{
    struct stor__kvslot it;
    struct stor__kvrec r;
    int rc;
    if (!stor__kv_key_is_long(k->mv_size)) {
        stor__kvslot_begin(&it, k, v);
        rc = stor__kvslot_next(&it, &r);
        if (rc < 0)
            return rc;
        if (scan_wants(&r, prefix, plen, start, slen) &&
            (rc = refs_push(rs, &r)))
            return rc;
        *mrc = mdb_cursor_get(cur, k, v, MDB_NEXT);
        return 0;
    }
    const uint8_t *run = k->mv_data; /* shard | 480-byte prefix */
    size_t from = rs->n;
    do {
        stor__kvslot_begin(&it, k, v);
        while ((rc = stor__kvslot_next(&it, &r)) == 1)
            if (scan_wants(&r, prefix, plen, start, slen) &&
                (rc = refs_push(rs, &r)))
                return rc;
        if (rc < 0)
            return rc;
        *mrc = mdb_cursor_get(cur, k, v, MDB_NEXT);
    } while (*mrc == 0 && stor__kv_key_is_long(k->mv_size) &&
             memcmp(k->mv_data, run, 8 + STOR__KEY_INLINE) == 0);
    if (rs->n - from > 1)
        qsort(rs->r + from, rs->n - from, sizeof(*rs->r), rec_cmp);
    return 0;
}

/* Merges the LMDB records rs->r[*done..rs->n) (in key order, after those
 * merged before) with the overlay copy from ov->items[*j] on into mv: an
 * overlay entry wins over LMDB for its key (a tombstone hides it), and an
 * overlay-only key takes its place in order. */
static int scan_merge(struct scan_refs *mv, const struct scan_refs *rs,
                      size_t *done, const struct stor__ov_scan *ov, size_t *j)
{
    int rc;
    for (; *done < rs->n; (*done)++) {
        const struct stor__kvrec *r = &rs->r[*done];
        int c = 1;
        for (; *j < ov->n; (*j)++) {
            const struct stor__ov_item *o = &ov->items[*j];
            c = stor__key_cmp(o->key, o->klen, r->key, r->klen);
            if (c > 0)
                break;
            if (!o->tomb && (rc = ov_push(mv, o)))
                return rc;
            if (c == 0) {
                (*j)++;
                break;
            }
        }
        if (c != 0 && (rc = refs_push(mv, r)))
            return rc;
    }
    return 0;
}

/* How many read transactions a scan takes before it asks for a checkpoint
 * (the overlay and LMDB disagreed: a checkpoint committed in between), and
 * in all. */
#define SCAN_TRIES_QUICK 3
#define SCAN_TRIES 8

int stor_kv_scan(struct stor *s, uint64_t shard, const void *prefix,
                 size_t plen, const void *start, size_t slen, uint32_t limit,
                 size_t max_bytes, struct stor_scan *out)
{
    memset(out, 0, sizeof(*out));
    if ((plen && !prefix) || (slen && !start))
        return RK_EINVAL;
    /* A start key may be one byte longer than a key: "after key K" is
     * K | 0x00. */
    if (plen > STOR_MAX_KEY || slen > STOR_MAX_KEY + 1)
        return RK_ETOOLARGE;
    if (max_bytes == 0)
        max_bytes = SCAN_DEFAULT_BYTES;
    /* The first wanted key is at or after max(prefix, start); LMDB's order
     * agrees with key order up to the 480-byte prefix, so seek there. */
    const uint8_t *lo = prefix;
    size_t lo_len = plen;
    if (start && stor__key_cmp(start, slen, prefix, plen) > 0) {
        lo = start;
        lo_len = slen;
    }
    uint8_t seek[8 + STOR__KEY_INLINE];
    size_t seek_part = lo_len < STOR__KEY_INLINE ? lo_len : STOR__KEY_INLINE;
    stor__put64(seek, shard);
    if (seek_part)
        memcpy(seek + 8, lo, seek_part);
    /* Every wanted entry's LMDB key starts with shard | prefix (its first
     * 480 bytes for a longer prefix). */
    size_t ppart = plen < STOR__KEY_INLINE ? plen : STOR__KEY_INLINE;
    uint8_t pk[8 + STOR__KEY_INLINE];
    stor__put64(pk, shard);
    if (ppart)
        memcpy(pk + 8, prefix, ppart);

    /* What the open transaction changed (a copy), then the checkpoint it
     * is on top of: the copy first (READER RACE in stor_overlay.c), and
     * the read transaction kept only if it sees that same checkpoint
     * (SCANS there). No checkpoint is waited for, unless the two keep
     * disagreeing. */
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    struct scan_refs rs = {0}, mv = {0};
    struct stor__ov_scan ov = {0};
    int rc = 0;
    for (int tries = 0;; tries++) {
        if (tries == SCAN_TRIES)
            return RK_EBUSY;
        if (tries >= SCAN_TRIES_QUICK)
            stor__checkpoint_wait(s);
        rc = stor__overlay_scan(s, shard, prefix, plen, start, slen, &ov);
        if (rc)
            return rc;
        rc = stor__read_begin(s, &txn);
        if (rc) {
            free(ov.items);
            return rc;
        }
        if (mdb_txn_id(txn) == ov.base)
            break;
        stor__read_end(s, txn);
        txn = NULL;
        free(ov.items);
    }
    size_t merged = 0, oj = 0;
    int mrc = mdb_cursor_open(txn, s->dbi_kv, &cur);
    if (mrc)
        goto done;
    k.mv_data = seek;
    k.mv_size = 8 + seek_part;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    /* Collect until one record more than fits is known (that sets more).
     * Tombstones may hide LMDB records: then it reads further, up to the
     * end of the range at most. */
    bool stopped = false;
    while (mrc == 0 && k.mv_size >= 8 + ppart &&
           memcmp(k.mv_data, pk, 8 + ppart) == 0) {
        if ((limit && mv.n > limit) || (mv.n > 1 && mv.bytes > max_bytes)) {
            stopped = true;
            break;
        }
        rc = scan_entry(cur, &k, &v, &mrc, &rs, prefix, plen, start, slen);
        if (rc == 0)
            rc = scan_merge(&mv, &rs, &merged, &ov, &oj);
        if (rc)
            goto done;
    }
    if (mrc && mrc != MDB_NOTFOUND)
        goto done;
    mrc = 0;
    /* The range is read to its end: the overlay's keys after the last
     * LMDB one follow. (Stopped early, mv already holds more than fits,
     * all before them.) */
    for (; !stopped && oj < ov.n; oj++)
        if (!ov.items[oj].tomb && (rc = ov_push(&mv, &ov.items[oj])))
            goto done;
    /* Cut at the limit and the byte budget (at least one record). */
    uint32_t n = 0;
    size_t bytes = 0;
    while (n < mv.n && (!limit || n < limit)) {
        size_t sz = (size_t)mv.r[n].klen + mv.r[n].vlen;
        if (n > 0 && bytes + sz > max_bytes)
            break;
        bytes += sz;
        n++;
    }
    out->more = n < mv.n;
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
    for (uint32_t i = 0; i < n; i++) {
        const struct stor__kvrec *r = &mv.r[i];
        struct stor_kv_item *it = &items[i];
        it->klen = r->klen;
        memcpy(d, r->key, r->klen);
        it->key = d;
        d += r->klen;
        it->vlen = r->vlen;
        if (r->vlen)
            memcpy(d, r->val, r->vlen);
        it->value = d;
        d += r->vlen;
        it->revision = r->mod_rev;
        it->create_revision = r->create_rev;
    }
    out->items = items;
    out->n = n;
done:
    free(rs.r);
    free(mv.r);
    free(ov.items);
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
    stor__checkpoint_wait(s); /* sessions are read from LMDB only */
    int rc = stor__read_begin(s, &txn);
    if (rc)
        return rc;
    rc = sess_load(s, txn, shard, client_id, &ss, &found);
    stor__read_end(s, txn);
    if (rc == 0)
        *seq = ss.max_seq;
    return rc;
}
