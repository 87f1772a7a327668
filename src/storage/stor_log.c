/* Raft logs: raft_log_ops reads, appends, truncation, compaction. */
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "stor_int.h"

#define LOG_HDR 9 /* term(8) type(1) */

/* ------------------------------------------------------------ reading */

raft_index stor_log_first_index(struct stor_shard *sh)
{
    pthread_mutex_lock(&sh->s->mu);
    raft_index v = sh->exists ? sh->first : 1;
    pthread_mutex_unlock(&sh->s->mu);
    return v;
}

raft_index stor_log_last_index(struct stor_shard *sh)
{
    pthread_mutex_lock(&sh->s->mu);
    raft_index v = sh->exists ? sh->last : 0;
    pthread_mutex_unlock(&sh->s->mu);
    return v;
}

raft_term stor_log_last_term(struct stor_shard *sh)
{
    pthread_mutex_lock(&sh->s->mu);
    raft_term v = sh->exists ? sh->last_term : 0;
    pthread_mutex_unlock(&sh->s->mu);
    return v;
}

/* Classifies an index against the published view: 0 if stored, else the
 * error; *term set when the cache or the tail knows it (base, last, or an
 * entry not checkpointed yet: stor_overlay.c). */
static int classify(struct stor_shard *sh, raft_index i, raft_term *term,
                    bool *known)
{
    int rc = 0;
    *known = false;
    pthread_mutex_lock(&sh->s->mu);
    if (!sh->exists) {
        rc = RK_EUNKNOWNSHARD;
    } else if (i < sh->base_index) {
        rc = RK_ECOMPACTED;
    } else if (i > sh->last) {
        rc = RK_EUNAVAIL_LOG;
    } else if (i == sh->base_index) {
        *term = sh->base_term;
        *known = true;
    } else if (i == sh->last) {
        *term = sh->last_term;
        *known = true;
    } else if (sh->tail_from && i >= sh->tail_from &&
               i < sh->tail_from + sh->tail_n) {
        *term = sh->tail[i - sh->tail_from].term;
        *known = true;
    }
    pthread_mutex_unlock(&sh->s->mu);
    return rc;
}

/* Entries [lo, hi) from the tail, when lo is in it (s->mu held): 1 with
 * *out filled, 0 if lo is not in the tail (*lmdb_hi: where LMDB stops
 * being current), or RK_ENOMEM. */
static int tail_entries(struct stor_shard *sh, raft_index lo, raft_index hi,
                        size_t max_bytes, struct raft_entry **out,
                        uint32_t *n_out, raft_index *lmdb_hi)
{
    *lmdb_hi = hi;
    if (!sh->tail_from)
        return 0;
    if (lo < sh->tail_from) {
        if (hi > sh->tail_from)
            *lmdb_hi = sh->tail_from;
        return 0;
    }
    raft_index end = sh->tail_from + sh->tail_n;
    if (lo >= end)
        return 0;
    if (hi > end)
        hi = end;
    size_t bytes = 0;
    uint32_t n = 0;
    for (raft_index i = lo; i < hi; i++) {
        size_t len = sh->tail[i - sh->tail_from].len;
        if (n > 0 && max_bytes && bytes + len > max_bytes)
            break;
        bytes += len;
        n++;
    }
    size_t arr = (size_t)n * sizeof(struct raft_entry);
    uint8_t *blk = malloc(arr + bytes + 1);
    if (!blk)
        return RK_ENOMEM;
    struct raft_entry *ents = (struct raft_entry *)blk;
    uint8_t *data = blk + arr;
    for (uint32_t j = 0; j < n; j++) {
        const struct stor__tent *t = &sh->tail[lo + j - sh->tail_from];
        ents[j].index = lo + j;
        ents[j].term = t->term;
        ents[j].type = t->type;
        ents[j].len = t->len;
        ents[j].data = data;
        memcpy(data, t->data, t->len);
        data += t->len;
    }
    *out = ents;
    *n_out = n;
    return 1;
}

int stor_log_term(struct stor_shard *sh, raft_index i, raft_term *out)
{
    bool known;
    int rc = classify(sh, i, out, &known);
    if (rc || known)
        return rc;
    struct stor *s = sh->s;
    MDB_txn *txn;
    uint8_t kb[16];
    stor__key_log(kb, sh->id, i);
    MDB_val k = {.mv_size = 16, .mv_data = kb}, v;
    rc = stor__read_begin(s, &txn);
    if (rc)
        return rc;
    int mrc = mdb_get(txn, s->dbi_log, &k, &v);
    if (mrc == 0) {
        if (v.mv_size < LOG_HDR)
            rc = RK_ECORRUPT;
        else
            *out = stor__get64(v.mv_data);
    }
    stor__read_end(s, txn);
    if (mrc == MDB_NOTFOUND) {
        /* Compacted or truncated since classify(): ask again. */
        rc = classify(sh, i, out, &known);
        return rc ? rc : known ? 0 : RK_ECOMPACTED;
    }
    return mrc ? stor__from_mdb(mrc) : rc;
}

int stor_log_entries(struct stor_shard *sh, raft_index lo, raft_index hi,
                     size_t max_bytes, struct raft_entry **out, uint32_t *n_out)
{
    struct stor *s = sh->s;
    *out = NULL;
    *n_out = 0;
    if (lo >= hi)
        return RK_EINVAL;
    pthread_mutex_lock(&s->mu);
    int rc = !sh->exists            ? RK_EUNKNOWNSHARD
             : lo <= sh->base_index ? RK_ECOMPACTED
             : hi - 1 > sh->last    ? RK_EUNAVAIL_LOG
                                    : 0;
    /* Entries not checkpointed yet come from the tail; LMDB has the ones
     * before it (the tail first: READER RACE in stor_overlay.c). */
    if (rc == 0)
        rc = tail_entries(sh, lo, hi, max_bytes, out, n_out, &hi);
    pthread_mutex_unlock(&s->mu);
    if (rc)
        return rc < 0 ? rc : 0;

    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    uint8_t kb[16];
    MDB_val k, v;
    rc = stor__read_begin(s, &txn);
    if (rc)
        return rc;
    int mrc = mdb_cursor_open(txn, s->dbi_log, &cur);
    if (mrc)
        goto done;
    /* Pass 1: how many entries fit, and their bytes. */
    size_t bytes = 0;
    uint32_t n = 0;
    stor__key_log(kb, sh->id, lo);
    k.mv_data = kb;
    k.mv_size = 16;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    for (raft_index i = lo; mrc == 0 && i < hi; i++) {
        if (k.mv_size != 16 || stor__get64(k.mv_data) != sh->id ||
            stor__get64((const uint8_t *)k.mv_data + 8) != i ||
            v.mv_size < LOG_HDR || v.mv_size - LOG_HDR > UINT32_MAX) {
            rc = RK_ECORRUPT;
            goto done;
        }
        size_t len = v.mv_size - LOG_HDR;
        if (n > 0 && max_bytes && bytes + len > max_bytes)
            break;
        bytes += len;
        n++;
        if (i + 1 < hi)
            mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (mrc == MDB_NOTFOUND || (mrc == 0 && n == 0)) {
        /* Compacted or truncated under us. */
        rc = lo <= stor_log_first_index(sh) - 1 ? RK_ECOMPACTED
                                                : RK_EUNAVAIL_LOG;
        goto done;
    }
    if (mrc)
        goto done;
    /* Pass 2: one block, the array then the payloads. */
    size_t arr = (size_t)n * sizeof(struct raft_entry);
    uint8_t *blk = malloc(arr + bytes + 1);
    if (!blk) {
        rc = RK_ENOMEM;
        goto done;
    }
    struct raft_entry *ents = (struct raft_entry *)blk;
    uint8_t *data = blk + arr;
    k.mv_data = kb;
    k.mv_size = 16;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
    for (uint32_t j = 0; j < n && mrc == 0; j++) {
        const uint8_t *p = v.mv_data;
        ents[j].index = lo + j;
        ents[j].term = stor__get64(p);
        ents[j].type = p[8];
        ents[j].len = (uint32_t)(v.mv_size - LOG_HDR);
        ents[j].data = data;
        memcpy(data, p + LOG_HDR, ents[j].len);
        data += ents[j].len;
        if (j + 1 < n)
            mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (mrc) {
        free(blk);
        goto done;
    }
    *out = ents;
    *n_out = n;
done:
    if (cur)
        mdb_cursor_close(cur);
    stor__read_end(s, txn);
    if (!rc && mrc)
        rc = stor__from_mdb(mrc);
    return rc;
}

static raft_index ops_first(void *ctx)
{
    return stor_log_first_index(ctx);
}

static raft_index ops_last(void *ctx)
{
    return stor_log_last_index(ctx);
}

static int ops_term(void *ctx, raft_index i, raft_term *out)
{
    return stor_log_term(ctx, i, out);
}

static int ops_entries(void *ctx, raft_index lo, raft_index hi,
                       size_t max_bytes, struct raft_entry **out,
                       uint32_t *n_out)
{
    return stor_log_entries(ctx, lo, hi, max_bytes, out, n_out);
}

static int ops_snapshot_meta(void *ctx, struct raft_snapshot_meta *out)
{
    return stor_snapshot_meta(ctx, out);
}

static int ops_snapshot_chunk(void *ctx, raft_index snap_index, uint32_t seq,
                              void **data, uint32_t *len, bool *last)
{
    return stor_snapshot_chunk(ctx, snap_index, seq, data, len, last);
}

const struct raft_log_ops stor_log_ops = {
    .first_index = ops_first,
    .last_index = ops_last,
    .term = ops_term,
    .entries = ops_entries,
    .snapshot_meta = ops_snapshot_meta,
    .snapshot_chunk = ops_snapshot_chunk,
};

/* ------------------------------------------------------------ writing */

void stor__log_forget(struct stor *s, uint64_t shard)
{
    if (s->llast_gen == s->gen && !s->llast_empty && s->llast_shard == shard)
        s->llast_gen = 0;
}

/* Does the log key (id, idx) come after (shard, last)? */
static bool log_key_after(uint64_t id, raft_index idx, uint64_t shard,
                          raft_index last)
{
    return id > shard || (id == shard && idx > last);
}

/* The last key of dbi_log in txn: *empty, or (*shard, *idx); *odd for a
 * key that is not shard | index (a damaged log: *append then says what
 * LMDB's order says for the key (id, first), nothing is cached). */
static int log_last_key(MDB_cursor *cur, uint64_t id, raft_index first,
                        bool *empty, uint64_t *shard, raft_index *idx,
                        bool *odd, bool *append)
{
    MDB_val k, v;
    int mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    *empty = mrc == MDB_NOTFOUND;
    *odd = false;
    *shard = 0;
    *idx = 0;
    *append = true;
    if (mrc == MDB_NOTFOUND)
        return 0;
    if (mrc)
        return stor__from_mdb(mrc);
    if (k.mv_size != 16) {
        uint8_t kb[16];
        stor__key_log(kb, id, first);
        size_t m = k.mv_size < 16 ? k.mv_size : 16;
        int c = memcmp(k.mv_data, kb, m);
        *odd = true;
        *append = !(c > 0 || (c == 0 && k.mv_size >= 16));
        return 0;
    }
    *shard = stor__get64(k.mv_data);
    *idx = stor__get64((const uint8_t *)k.mv_data + 8);
    *append = log_key_after(id, first, *shard, *idx);
    return 0;
}

/* Whether an append to shard `id` from `first` may use MDB_APPEND: its
 * first key lies past the last key of the whole database (it is the
 * highest shard with entries). With the open transaction the last key is
 * known (s->llast_*) without a descent; else (a nested transaction of the
 * replay, or not known yet) it is read. */
static int log_can_append(struct stor *s, MDB_txn *txn, MDB_cursor *cur,
                          uint64_t id, raft_index first, bool *append)
{
    bool open = txn == s->open_txn;
    bool empty, odd;
    uint64_t lshard;
    raft_index lidx;
    int rc;
    if (open && s->llast_gen == s->gen) {
#ifndef NDEBUG
        /* Debug builds check the cache against LMDB at every use. */
        rc = log_last_key(cur, id, first, &empty, &lshard, &lidx, &odd,
                          append);
        RK_ASSERT(rc != 0 || (!odd && empty == s->llast_empty &&
                              (empty || (lshard == s->llast_shard &&
                                         lidx == s->llast_idx))));
#endif
        *append = s->llast_empty ||
                  log_key_after(id, first, s->llast_shard, s->llast_idx);
        return 0;
    }
    rc = log_last_key(cur, id, first, &empty, &lshard, &lidx, &odd, append);
    if (rc == 0 && open && !odd) {
        s->llast_gen = s->gen;
        s->llast_empty = empty;
        s->llast_shard = lshard;
        s->llast_idx = lidx;
    }
    return rc;
}

/* After entries up to (id, last) were written in txn: the open
 * transaction's last key follows. */
static void log_wrote(struct stor *s, MDB_txn *txn, uint64_t id,
                      raft_index last)
{
    if (txn != s->open_txn || s->llast_gen != s->gen)
        return;
    if (s->llast_empty ||
        log_key_after(id, last, s->llast_shard, s->llast_idx)) {
        s->llast_empty = false;
        s->llast_shard = id;
        s->llast_idx = last;
    }
}

int stor__log_append(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                     const uint8_t *recs, uint32_t n)
{
    uint8_t kb[16];
    MDB_val k, v;
    int rc;

    /* Entries at or below the applied index are committed and identical to
     * the stored ones (Log Matching): skip them rather than rewrite them. */
    while (n > 0 && ((const struct stor__bent *)recs)->index <= sh->w.applied) {
        const struct stor__bent *e = (const struct stor__bent *)recs;
        recs += stor__bent_size(e->len);
        n--;
    }
    if (n == 0)
        return 0;
    raft_index first = ((const struct stor__bent *)recs)->index;
    if (first <= sh->w.base_index)
        return RK_ECOMPACTED;
    if (first > sh->w_last + 1)
        return RK_EINVAL;
    if (first <= sh->w_last) {
        /* Conflicting suffix (thesis §3.5): drop it before appending. */
        uint8_t from[8];
        stor__put64(from, first);
        stor__log_forget(s, sh->id);
        rc = stor__del_range(txn, s->dbi_log, sh->id, from, 8, 0, NULL);
        if (rc)
            return rc;
        sh->w_last = first - 1;
    }
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, s->dbi_log, &cur);
    if (mrc)
        return stor__from_mdb(mrc);
    /* MDB_APPEND (sequential fill of pages) is allowed only past the last
     * key of the whole database, i.e. for the highest shard with entries. */
    bool append;
    if ((rc = log_can_append(s, txn, cur, sh->id, first, &append)) != 0) {
        mdb_cursor_close(cur);
        return rc;
    }
    unsigned flags = append ? MDB_APPEND : 0;
    const uint8_t *p = recs;
    raft_term last_term = 0;
    for (uint32_t j = 0; j < n; j++) {
        const struct stor__bent *e = (const struct stor__bent *)p;
        if (e->index != first + j) {
            mdb_cursor_close(cur);
            s->llast_gen = 0; /* some may be written: unknown now */
            return RK_EINVAL;
        }
        stor__key_log(kb, sh->id, e->index);
        k.mv_data = kb;
        k.mv_size = 16;
        v.mv_data = NULL;
        v.mv_size = LOG_HDR + (size_t)e->len;
        mrc = mdb_cursor_put(cur, &k, &v, flags | MDB_RESERVE);
        if (mrc) {
            mdb_cursor_close(cur);
            s->llast_gen = 0;
            return stor__from_mdb(mrc);
        }
        uint8_t *d = v.mv_data;
        stor__put64(d, e->term);
        d[8] = e->type;
        if (e->len)
            memcpy(d + LOG_HDR, p + sizeof(*e), e->len);
        last_term = e->term;
        p += stor__bent_size(e->len);
    }
    mdb_cursor_close(cur);
    log_wrote(s, txn, sh->id, first + n - 1);
    sh->w_last = first + n - 1;
    sh->w_last_term = last_term;
    return stor__pend_log(s, sh, first, recs, n);
}

int stor__log_compact_step(struct stor *s, MDB_txn *txn, struct stor_shard *sh)
{
    raft_index target = sh->w.compact_target;
    if (target > sh->w.applied)
        target = sh->w.applied;
    /* Not past what the last checkpoint applied: a snapshot export
     * describes the checkpointed state, and the log must go on after it. */
    if (target > sh->ck_applied) {
        target = sh->ck_applied;
        s->compact_held = true; /* a small txn checkpoints sooner */
    }
    if (target > sh->w_last)
        target = sh->w_last;
    if (target <= sh->w.base_index) {
        sh->compact_pending = sh->w.compact_target > sh->w.base_index;
        return 0;
    }
    raft_index nb = target;
    if (nb - sh->w.base_index > STOR_COMPACT_STEP)
        nb = sh->w.base_index + STOR_COMPACT_STEP;
    raft_term nt;
    if (nb == sh->w_last) {
        nt = sh->w_last_term;
    } else {
        uint8_t kb[16];
        stor__key_log(kb, sh->id, nb);
        MDB_val k = {.mv_size = 16, .mv_data = kb}, v;
        int mrc = mdb_get(txn, s->dbi_log, &k, &v);
        if (mrc)
            return mrc == MDB_NOTFOUND ? RK_ECORRUPT : stor__from_mdb(mrc);
        if (v.mv_size < LOG_HDR)
            return RK_ECORRUPT;
        nt = stor__get64(v.mv_data);
    }
    uint8_t from[8];
    uint64_t deleted;
    stor__put64(from, sh->w.base_index + 1);
    stor__log_forget(s, sh->id);
    int rc = stor__del_range(txn, s->dbi_log, sh->id, from, 8,
                             nb - sh->w.base_index, &deleted);
    if (rc)
        return rc;
    sh->w.base_index = nb;
    sh->w.base_term = nt;
    sh->w_dirty = true;
    sh->compact_pending = sh->w.compact_target > nb;
    return 0;
}
