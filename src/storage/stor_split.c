/* Shard split in the state machine: the SPLIT command, the moved-arc record. */
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "rk_buf.h"
#include "stor_int.h"

/*
 * A split is applied like any command, on every replica of the donor at the
 * same log index S, in the batch's one transaction (TiKV's BatchSplit):
 *
 *  - the recipient shard is created with its log base at (S, term of S),
 *    applied index S, the donor's applied configuration, hard state
 *    {term of S, no vote, commit S}: every donor replica builds the same
 *    initial state, so the new group starts where the donor's log says,
 *    and revisions of the moved keys (<= S) stay below every revision the
 *    new shard will give (> S);
 *  - the keys of the donor whose ring hash lies in one of the arcs move
 *    (records copied as they are, revisions included), and the donor's
 *    client sessions are copied, so a write retried against the new shard
 *    is still answered from its session;
 *  - the donor records the arcs under STOR_SPLIT_KEY (part of its KV, so
 *    its snapshots carry it): later writes of keys in them fail with
 *    RK_EWRONGSHARD, deterministically on every replica.
 *
 * KV records are read and written through stor_kv.c's key encoding
 * helpers (short and long keys); sessions are copied as they are.
 */

#define REC_VERSION 1
#define REC_ITEM    20 /* u32 to, u64 first, u64 last */

int stor_split_parse(const void *buf, size_t len, struct stor_split_arc **out,
                     uint32_t *n)
{
    struct stor__rd r = {.p = buf, .left = len};
    uint8_t ver;
    uint32_t cnt;
    *out = NULL;
    *n = 0;
    if (!stor__rd_u8(&r, &ver) || ver != REC_VERSION ||
        !stor__rd_u32(&r, &cnt) || r.left != (size_t)cnt * REC_ITEM)
        return RK_ECORRUPT;
    if (cnt == 0)
        return 0;
    struct stor_split_arc *a = calloc(cnt, sizeof(*a));
    if (a == NULL)
        return RK_ENOMEM;
    for (uint32_t i = 0; i < cnt; i++) {
        stor__rd_u32(&r, &a[i].to);
        stor__rd_u64(&r, &a[i].first);
        stor__rd_u64(&r, &a[i].last);
    }
    *out = a;
    *n = cnt;
    return 0;
}

/* The record's value in txn (valid until the txn writes); *len 0 if
 * absent; *create its create revision. */
static int rec_get(struct stor *s, MDB_txn *txn, uint64_t shard,
                   const uint8_t **rec, size_t *len, uint64_t *create)
{
    struct stor__kvrec r;
    *rec = NULL;
    *len = 0;
    int rc =
        stor__kv_find(s, txn, shard, STOR_SPLIT_KEY, STOR_SPLIT_KEY_LEN, &r);
    if (rc == RK_ENOTFOUND)
        return 0;
    if (rc)
        return rc;
    *rec = r.val;
    *len = r.vlen;
    if (create != NULL)
        *create = r.create_rev;
    return 0;
}

int stor_split_out(struct stor *s, uint64_t shard, struct stor_split_arc **out,
                   uint32_t *n)
{
    MDB_txn *txn;
    *out = NULL;
    *n = 0;
    stor__checkpoint_wait(s); /* read from LMDB only */
    int rc = stor__read_begin(s, &txn);
    if (rc)
        return rc;
    const uint8_t *rec;
    size_t len;
    rc = rec_get(s, txn, shard, &rec, &len, NULL);
    if (rc == 0 && len > 0)
        rc = stor_split_parse(rec, len, out, n);
    stor__read_end(s, txn);
    return rc;
}

/* Whether hash h lies in one of the record's arcs (and to whom). */
static bool rec_has(const uint8_t *rec, size_t len, uint64_t h, uint32_t to)
{
    if (len < 5)
        return false;
    uint32_t cnt = stor__get32(rec + 1);
    const uint8_t *p = rec + 5;
    for (uint32_t i = 0; i < cnt && (size_t)(p - rec) + REC_ITEM <= len;
         i++, p += REC_ITEM) {
        if (to != 0) {
            if (stor__get32(p) == to)
                return true;
        } else if (h >= stor__get64(p + 4) && h <= stor__get64(p + 12)) {
            return true;
        }
    }
    return false;
}

int stor__split_moved(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                      const void *key, uint32_t klen, bool *moved)
{
    const uint8_t *rec;
    size_t len;
    *moved = false;
    /* Per applied entry: the open transaction's record is kept (a copy)
     * until a write of a split record, or a new transaction. */
    bool open = txn == s->open_txn;
    if (open && sh->sp_gen == s->gen && sh->sp_epoch == s->sp_epoch) {
        rec = sh->sp_rec;
        len = sh->sp_len;
#ifndef NDEBUG
        /* Debug builds check the copy against LMDB at every use. */
        const uint8_t *r2;
        size_t l2;
        int rc2 = rec_get(s, txn, sh->id, &r2, &l2, NULL);
        RK_ASSERT(rc2 != 0 ||
                  (l2 == len && (len == 0 || memcmp(r2, rec, len) == 0)));
#endif
    } else {
        int rc = rec_get(s, txn, sh->id, &rec, &len, NULL);
        if (rc)
            return rc;
        if (open) {
            uint8_t *cp = NULL;
            if (len > 0 && (cp = malloc(len)) != NULL)
                memcpy(cp, rec, len);
            if (len == 0 || cp != NULL) {
                free(sh->sp_rec);
                sh->sp_rec = cp;
                sh->sp_len = len;
                sh->sp_gen = s->gen;
                sh->sp_epoch = s->sp_epoch;
            }
        }
    }
    if (len == 0 || s->key_hash == NULL)
        return 0;
    *moved = rec_has(rec, len, s->key_hash(key, klen), 0);
    return 0;
}

static bool in_arcs(const struct stor_cmd *c, uint64_t h)
{
    for (uint32_t i = 0; i < c->n_arcs; i++) {
        uint64_t first, last;
        stor_cmd_arc(c, i, &first, &last);
        if (h >= first && h <= last)
            return true;
    }
    return false;
}

static bool reserved(const uint8_t *key, size_t klen)
{
    return klen >= STOR_RESERVED_PREFIX_LEN &&
           memcmp(key, STOR_RESERVED_PREFIX, STOR_RESERVED_PREFIX_LEN) == 0;
}

/*
 * Moves the donor's KV records whose key hashes into the command's arcs:
 * written under `to` (when `to` is not 0) and deleted from `from`. Each
 * LMDB entry (a short key's record, or a long keys' slot) is copied before
 * it is walked, and the cursor seeks again after every write.
 */
static int move_kv(struct stor *s, MDB_txn *txn, uint64_t from, uint64_t to,
                   const struct stor_cmd *c)
{
    MDB_cursor *cur;
    /* Copies of the entry (LMDB's pointers die with the next write). */
    struct rk_buf kb = {0}, vb = {0};
    int rc = 0;
    int mrc = mdb_cursor_open(txn, s->dbi_kv, &cur);
    if (mrc)
        return stor__from_mdb(mrc);
    uint8_t pfx[8];
    stor__put64(pfx, from);
    MDB_val k = {.mv_size = 8, .mv_data = pfx}, v;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && mrc == 0 && k.mv_size >= 8 &&
           memcmp(k.mv_data, pfx, 8) == 0) {
        rk_buf_reset(&kb);
        rk_buf_reset(&vb);
        if ((rc = rk_buf_append(&kb, k.mv_data, k.mv_size)) ||
            (rc = rk_buf_append(&vb, v.mv_data, v.mv_size)))
            break;
        size_t ksz = kb.len;
        MDB_val ck = {.mv_size = ksz, .mv_data = kb.data};
        MDB_val cv = {.mv_size = vb.len, .mv_data = vb.data};
        struct stor__kvslot it;
        struct stor__kvrec r;
        bool wrote = false;
        stor__kvslot_begin(&it, &ck, &cv);
        while ((rc = stor__kvslot_next(&it, &r)) == 1) {
            if (reserved(r.key, r.klen) ||
                !in_arcs(c, s->key_hash(r.key, r.klen)))
                continue;
            /* r points into the copies: stable across the writes. */
            if (to != 0 && (rc = stor__kv_write_rec(s, txn, to, r.key, r.klen,
                                                    r.rec, r.rlen)))
                break;
            if ((rc = stor__kv_delete(s, txn, from, r.key, r.klen)))
                break;
            wrote = true;
        }
        if (rc < 0)
            break;
        rc = 0;
        if (!wrote) {
            mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            continue;
        }
        /* The first entry after the one just handled (it may remain, with
         * the records that stay). */
        k = ck;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (mrc == 0 && k.mv_size == ksz && memcmp(k.mv_data, kb.data, ksz) == 0)
            mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    rk_buf_free(&kb);
    rk_buf_free(&vb);
    if (rc == 0 && mrc != 0 && mrc != MDB_NOTFOUND)
        rc = stor__from_mdb(mrc);
    return rc;
}

/* Copies every client session of `from` to `to` (same records). */
static int copy_sessions(struct stor *s, MDB_txn *txn, uint64_t from,
                         uint64_t to)
{
    MDB_cursor *cur;
    uint8_t kb[16], vb[STOR__SESS_SIZE_MAX];
    int mrc = mdb_cursor_open(txn, s->dbi_sess, &cur);
    if (mrc)
        return stor__from_mdb(mrc);
    stor__put64(kb, from);
    MDB_val k = {.mv_size = 8, .mv_data = kb}, v;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (mrc == 0 && k.mv_size == 16 && stor__get64(k.mv_data) == from) {
        if (!stor__sess_size_ok(v.mv_size)) {
            mrc = MDB_CORRUPTED;
            break;
        }
        memcpy(kb, k.mv_data, 16);
        memcpy(vb, v.mv_data, v.mv_size);
        stor__put64(kb, to);
        MDB_val nk = {.mv_size = 16, .mv_data = kb};
        MDB_val nv = {.mv_size = v.mv_size, .mv_data = vb};
        if ((mrc = mdb_put(txn, s->dbi_sess, &nk, &nv, 0)))
            break;
        /* Seek past the copied client in the donor's range. */
        stor__put64(kb, from);
        k.mv_size = 16;
        k.mv_data = kb;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
        if (mrc == 0 && k.mv_size == 16 && memcmp(k.mv_data, kb, 16) == 0)
            mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    return mrc == 0 || mrc == MDB_NOTFOUND ? 0 : stor__from_mdb(mrc);
}

/* Appends the command's arcs to the donor's record (create rev: the first
 * split; mod rev: this one). */
static int rec_append(struct stor *s, MDB_txn *txn, uint64_t shard,
                      raft_index index, const struct stor_cmd *c)
{
    const uint8_t *old;
    size_t olen;
    uint64_t create = index;
    int rc = rec_get(s, txn, shard, &old, &olen, &create);
    if (rc)
        return rc;
    uint32_t cnt = olen >= 5 ? stor__get32(old + 1) : 0;
    size_t len = 5 + (size_t)(cnt + c->n_arcs) * REC_ITEM;
    uint8_t *buf = malloc(len);
    if (buf == NULL)
        return RK_ENOMEM;
    if (olen >= 5)
        memcpy(buf, old, 5 + (size_t)cnt * REC_ITEM);
    else
        create = index;
    buf[0] = REC_VERSION;
    stor__put32(buf + 1, cnt + c->n_arcs);
    uint8_t *p = buf + 5 + (size_t)cnt * REC_ITEM;
    for (uint32_t i = 0; i < c->n_arcs; i++, p += REC_ITEM) {
        uint64_t first, last;
        stor_cmd_arc(c, i, &first, &last);
        stor__put32(p, c->split_to);
        stor__put64(p + 4, first);
        stor__put64(p + 12, last);
    }
    rc = stor__kv_write(s, txn, shard, STOR_SPLIT_KEY, STOR_SPLIT_KEY_LEN,
                        create, index, buf, len);
    free(buf);
    return rc;
}

int stor__split_apply(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                      raft_term term, raft_index index,
                      const struct stor_cmd *c, struct stor_result *res)
{
    const uint8_t *rec;
    size_t len;
    res->flags |= STOR_RES_NOCMD;
    /* Keys move between shards: LMDB is made current right after. */
    s->w_force_ckpt = true;
    if (s->key_hash == NULL || c->split_to == sh->id || sh->id == 0 ||
        s->w_batch == NULL) {
        res->status = RK_EINVAL;
        return 0;
    }
    int rc = rec_get(s, txn, sh->id, &rec, &len, NULL);
    if (rc)
        return rc;
    if (rec_has(rec, len, 0, c->split_to))
        return 0; /* applied before (a leader proposed it again) */
    struct stor_shard *rsh;
    if ((rc = stor__shard_add(s, c->split_to, &rsh)))
        return rc;
    rc = stor__touch(s, txn, s->w_batch, rsh);
    bool fill = rc == RK_EUNKNOWNSHARD;
    if (rc && !fill)
        return rc;
    if (fill) {
        memset(&rsh->w, 0, sizeof(rsh->w));
        rsh->w.hs.term = term;
        rsh->w.hs.commit = index;
        rsh->w.conf = sh->w.applied_conf;
        rsh->w.applied_conf = sh->w.applied_conf;
        rsh->w.base_index = index;
        rsh->w.base_term = term;
        rsh->w.applied = index;
        rsh->w.applied_term = term;
        rsh->w_exists = true;
        rsh->w_dirty = true;
        rsh->w_deleted = false;
        rsh->w_last = index;
        rsh->w_last_term = term;
        rsh->compact_pending = false;
    }
    /* Keys: copied when this node builds the recipient, deleted always. */
    rc = move_kv(s, txn, sh->id, fill ? c->split_to : 0, c);
    if (rc == 0 && fill)
        rc = copy_sessions(s, txn, sh->id, c->split_to);
    if (rc == 0)
        rc = rec_append(s, txn, sh->id, index, c);
    return rc;
}
