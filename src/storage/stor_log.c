/* Raft logs: raft_log_ops reads, appends, truncation, compaction. */
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "stor_int.h"

/*
 * THE LOG'S SHAPE. LMDB holds each shard's entries in chunks (stor_int.h:
 * the format), written whole at checkpoints. Between checkpoints the
 * entries a shard's log gains live in its WRITER TAIL (sh->wt, writer-only)
 * and nowhere in LMDB: an append is a copy into memory, a truncation
 * inside the tail a cut of it. At the checkpoint, before the commit,
 * stor__log_flush writes each tail (what is left of it, without entries
 * compaction passed) as chunks of at most STOR__LOGC_BYTES: full overflow
 * pages, one descent per chunk instead of one per entry. Readers never
 * see the writer tails: they see LMDB as of the last checkpoint and the
 * published log tails of stor_overlay.c (the same entries, copied when
 * their batch is done), as before.
 *
 * Below the tail: a truncation deletes the chunks from the cut on and
 * rewrites the one that straddles it; compaction deletes the chunks whose
 * last entry it passed (the straddling one stays; base_index says where
 * the log starts); destroy and snapshot install delete them all.
 *
 * The WAL is the redo log as before: replay (and rerun_wal) run the
 * batches again. There each batch runs in a nested transaction and
 * writes its entries as chunks in it at its end (stor__log_spill): a
 * checkpoint must not run out of map writing tails while replaying (the
 * replay cannot rerun itself), and a nested batch that fills the map is
 * rolled back alone, as before. A new open transaction starts with empty
 * tails (open_begin); a nested batch that fails rolls the tails back with
 * its undo records (stor__log_undo).
 */

/* ------------------------------------------------------------ chunks */

int stor__logc_open(const void *v, size_t size, struct stor__logc *out)
{
    const uint8_t *p = v;
    if (size < STOR__LOGC_HDR || p[0] != STOR__LOGC_FORMAT)
        return RK_ECORRUPT;
    uint32_t count = stor__get32(p + 1);
    if (count == 0 || count > (size - STOR__LOGC_HDR) / STOR__LOGC_DESC)
        return RK_ECORRUPT;
    out->v = p;
    out->size = size;
    out->count = count;
    out->data = p + STOR__LOGC_HDR + (size_t)count * STOR__LOGC_DESC;
    out->data_len = size - STOR__LOGC_HDR - (size_t)count * STOR__LOGC_DESC;
    return 0;
}

int stor__logc_entry(const struct stor__logc *c, uint32_t j, raft_term *term,
                     uint8_t *type, const uint8_t **data, uint32_t *len)
{
    if (j >= c->count)
        return RK_ECORRUPT;
    const uint8_t *d = c->v + STOR__LOGC_HDR + (size_t)j * STOR__LOGC_DESC;
    uint32_t end = stor__get32(d + 8);
    uint32_t start = j ? stor__get32(d - STOR__LOGC_DESC + 8) : 0;
    if (start > end || end > c->data_len)
        return RK_ECORRUPT;
    if (term)
        *term = stor__get64(d);
    if (type)
        *type = d[12];
    if (data)
        *data = c->data + start;
    if (len)
        *len = end - start;
    return 0;
}

int stor__logc_check(const struct stor__logc *c)
{
    uint32_t len;
    size_t end = 0;
    for (uint32_t j = 0; j < c->count; j++) {
        if (stor__logc_entry(c, j, NULL, NULL, NULL, &len))
            return RK_ECORRUPT;
        end += len;
    }
    return end == c->data_len ? 0 : RK_ECORRUPT;
}

int stor__logc_find(MDB_cursor *cur, uint64_t shard, raft_index i,
                    raft_index *first, struct stor__logc *c)
{
    uint8_t kb[16];
    stor__key_log(kb, shard, i);
    MDB_val k = {.mv_size = 16, .mv_data = kb}, v;
    int mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (mrc == 0 && (k.mv_size != 16 || memcmp(k.mv_data, kb, 16) != 0))
        mrc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
    else if (mrc == MDB_NOTFOUND)
        mrc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    if (mrc == MDB_NOTFOUND)
        return RK_ENOTFOUND;
    if (mrc)
        return stor__from_mdb(mrc);
    if (k.mv_size != 16)
        return RK_ECORRUPT;
    if (stor__get64(k.mv_data) != shard)
        return RK_ENOTFOUND;
    *first = stor__get64((const uint8_t *)k.mv_data + 8);
    if (*first > i)
        return RK_ENOTFOUND;
    if (stor__logc_open(v.mv_data, v.mv_size, c))
        return RK_ECORRUPT;
    return i - *first < c->count ? 0 : RK_ENOTFOUND;
}

int stor__log_last(MDB_txn *txn, MDB_dbi dbi, uint64_t shard, raft_index *idx,
                   raft_term *term)
{
    uint8_t kbuf[16];
    MDB_cursor *cur;
    MDB_val k, v;

    *idx = 0;
    *term = 0;
    stor__key_log(kbuf, shard, UINT64_MAX);
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc)
        return stor__from_mdb(rc);
    k.mv_data = kbuf;
    k.mv_size = 16;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    if (rc == 0)
        rc = mdb_cursor_get(cur, &k, &v, MDB_PREV);
    else if (rc == MDB_NOTFOUND)
        rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    int err = 0;
    if (rc == 0 && k.mv_size == 16 && stor__get64(k.mv_data) == shard) {
        struct stor__logc c;
        raft_term t;
        raft_index first = stor__get64((const uint8_t *)k.mv_data + 8);
        if (stor__logc_open(v.mv_data, v.mv_size, &c) ||
            stor__logc_entry(&c, c.count - 1, &t, NULL, NULL, NULL) ||
            first + c.count - 1 < first) {
            err = RK_ECORRUPT;
        } else {
            *idx = first + c.count - 1;
            *term = t;
        }
    } else if (rc == 0 && k.mv_size != 16) {
        err = RK_ECORRUPT;
    } else if (rc != 0 && rc != MDB_NOTFOUND) {
        err = stor__from_mdb(rc);
    }
    mdb_cursor_close(cur);
    return err;
}

/* A chunk being built in memory (conversion, rewrite of a straddler). */
struct cbuild {
    struct rk_buf desc, data;
    uint32_t count;
};

static int cb_add(struct cbuild *b, raft_term term, uint8_t type,
                  const void *data, uint32_t len)
{
    uint8_t d[STOR__LOGC_DESC];
    if (b->data.len + len > UINT32_MAX)
        return RK_ETOOLARGE;
    stor__put64(d, term);
    stor__put32(d + 8, (uint32_t)(b->data.len + len));
    d[12] = type;
    int rc = rk_buf_append(&b->desc, d, sizeof d);
    if (!rc && len)
        rc = rk_buf_append(&b->data, data, len);
    if (!rc)
        b->count++;
    return rc;
}

/* Writes the chunk built in b as (shard, first) and empties b. */
static int cb_write(MDB_txn *txn, MDB_dbi dbi, uint64_t shard,
                    raft_index first, struct cbuild *b)
{
    uint8_t kb[16];
    stor__key_log(kb, shard, first);
    MDB_val k = {.mv_size = 16, .mv_data = kb};
    MDB_val v = {.mv_size = STOR__LOGC_HDR + b->desc.len + b->data.len};
    int mrc = mdb_put(txn, dbi, &k, &v, MDB_RESERVE);
    if (mrc)
        return stor__from_mdb(mrc);
    uint8_t *p = v.mv_data;
    p[0] = STOR__LOGC_FORMAT;
    stor__put32(p + 1, b->count);
    memcpy(p + STOR__LOGC_HDR, b->desc.data, b->desc.len);
    if (b->data.len)
        memcpy(p + STOR__LOGC_HDR + b->desc.len, b->data.data, b->data.len);
    rk_buf_reset(&b->desc);
    rk_buf_reset(&b->data);
    b->count = 0;
    return 0;
}

int stor__log_convert(MDB_txn *txn, MDB_dbi old, MDB_dbi logc, uint64_t *n)
{
    struct cbuild b = {0};
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t shard = 0;
    raft_index first = 0, next = 0;
    int rc = 0;
    *n = 0;
    int mrc = mdb_cursor_open(txn, old, &cur);
    if (mrc)
        return stor__from_mdb(mrc);
    mrc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    while (mrc == 0 && rc == 0) {
        if (k.mv_size != 16 || v.mv_size < 9 || v.mv_size - 9 > UINT32_MAX) {
            rc = RK_ECORRUPT;
            break;
        }
        uint64_t id = stor__get64(k.mv_data);
        raft_index i = stor__get64((const uint8_t *)k.mv_data + 8);
        uint32_t len = (uint32_t)(v.mv_size - 9);
        if (b.count > 0 &&
            (id != shard || i != next ||
             b.data.len + b.desc.len + len + STOR__LOGC_DESC >
                 STOR__LOGC_BYTES)) {
            /* The chunk is complete: write it (b holds copies), then find
             * this entry again (the cursor is not trusted across a write). */
            uint8_t kb[16];
            memcpy(kb, k.mv_data, 16);
            if ((rc = cb_write(txn, logc, shard, first, &b)) != 0)
                break;
            k.mv_data = kb;
            k.mv_size = 16;
            mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
            continue;
        }
        if (b.count == 0) {
            shard = id;
            first = i;
        }
        const uint8_t *p = v.mv_data;
        rc = cb_add(&b, stor__get64(p), p[8], p + 9, len);
        next = i + 1;
        (*n)++;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    if (rc == 0 && (mrc == 0 || mrc == MDB_NOTFOUND)) {
        mrc = 0;
        if (b.count > 0)
            rc = cb_write(txn, logc, shard, first, &b);
    }
    mdb_cursor_close(cur);
    rk_buf_free(&b.desc);
    rk_buf_free(&b.data);
    return rc ? rc : stor__from_mdb(mrc);
}

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
    MDB_cursor *cur;
    raft_index first;
    struct stor__logc c;
    rc = stor__read_begin(s, &txn);
    if (rc)
        return rc;
    int mrc = mdb_cursor_open(txn, s->dbi_logc, &cur);
    if (mrc) {
        stor__read_end(s, txn);
        return stor__from_mdb(mrc);
    }
    rc = stor__logc_find(cur, sh->id, i, &first, &c);
    if (rc == 0)
        rc = stor__logc_entry(&c, (uint32_t)(i - first), out, NULL, NULL,
                              NULL);
    mdb_cursor_close(cur);
    stor__read_end(s, txn);
    if (rc == RK_ENOTFOUND) {
        /* Compacted or truncated since classify(): ask again. */
        rc = classify(sh, i, out, &known);
        return rc ? rc : known ? 0 : RK_ECOMPACTED;
    }
    return rc;
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
    struct raft_entry *ents = NULL; /* data pointing into the map */
    uint32_t n = 0, cap = 0;
    size_t bytes = 0;
    rc = stor__read_begin(s, &txn);
    if (rc)
        return rc;
    int mrc = mdb_cursor_open(txn, s->dbi_logc, &cur);
    if (mrc) {
        rc = stor__from_mdb(mrc);
        goto done;
    }
    /* The chunk holding lo, then the ones after it: pointers into the map
     * (valid while the read transaction lasts), then one block. */
    raft_index first;
    struct stor__logc c;
    rc = stor__logc_find(cur, sh->id, lo, &first, &c);
    if (rc == RK_ENOTFOUND) {
        /* Compacted or truncated under us. */
        rc = lo <= stor_log_first_index(sh) - 1 ? RK_ECOMPACTED
                                                : RK_EUNAVAIL_LOG;
        goto done;
    }
    uint32_t j = (uint32_t)(lo - first);
    for (raft_index i = lo; rc == 0 && i < hi; i++, j++) {
        if (j == c.count) {
            MDB_val k, v;
            mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
            if (mrc == MDB_NOTFOUND || (mrc == 0 && k.mv_size == 16 &&
                                        stor__get64(k.mv_data) != sh->id)) {
                /* Truncated under us (this read txn is newer). */
                if (n == 0)
                    rc = RK_EUNAVAIL_LOG;
                break;
            }
            if (mrc) {
                rc = stor__from_mdb(mrc);
                break;
            }
            if (k.mv_size != 16 ||
                stor__get64((const uint8_t *)k.mv_data + 8) != i ||
                stor__logc_open(v.mv_data, v.mv_size, &c)) {
                rc = RK_ECORRUPT;
                break;
            }
            j = 0;
        }
        raft_term t;
        uint8_t type;
        const uint8_t *d;
        uint32_t len;
        if ((rc = stor__logc_entry(&c, j, &t, &type, &d, &len)) != 0)
            break;
        if (n > 0 && max_bytes && bytes + len > max_bytes)
            break;
        if (n == cap) {
            uint32_t nc = cap ? cap * 2 : 64;
            struct raft_entry *np = realloc(ents, nc * sizeof(*np));
            if (!np) {
                rc = RK_ENOMEM;
                break;
            }
            ents = np;
            cap = nc;
        }
        ents[n].index = i;
        ents[n].term = t;
        ents[n].type = type;
        ents[n].len = len;
        ents[n].data = (void *)d;
        bytes += len;
        n++;
    }
    if (rc == 0 && n > 0) {
        size_t arr = (size_t)n * sizeof(struct raft_entry);
        uint8_t *blk = malloc(arr + bytes + 1);
        if (!blk) {
            rc = RK_ENOMEM;
            goto done;
        }
        struct raft_entry *res = (struct raft_entry *)blk;
        uint8_t *data = blk + arr;
        for (uint32_t x = 0; x < n; x++) {
            res[x] = ents[x];
            res[x].data = data;
            if (ents[x].len)
                memcpy(data, ents[x].data, ents[x].len);
            data += ents[x].len;
        }
        *out = res;
        *n_out = n;
    }
done:
    free(ents);
    if (cur)
        mdb_cursor_close(cur);
    stor__read_end(s, txn);
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

/* An undo record of a nested batch (replay): sh's tail as it was, the
 * entries from `cut` on saved before them (appended to s->wt_undo after
 * the saved entries, so the records are walked back from the end). */
struct wt_undo {
    struct stor_shard *sh;
    raft_index from;
    uint32_t n, cut;
};

/* Recounts sh->wt_bytes (after a cut or an undo: rare). */
static void wt_count(struct stor_shard *sh)
{
    size_t b = 0;
    for (uint32_t j = 0; j < sh->wt_n; j++)
        b += sh->wt[j].len + STOR__LOGC_DESC;
    sh->wt_bytes = b;
}

void stor__log_undo_begin(struct stor *s)
{
    rk_buf_reset(&s->wt_undo);
}

/* Before sh's tail changes from entry `cut` on: saved, in a nested batch
 * only (a failed batch of the open transaction itself rebuilds it all). */
static int wt_save(struct stor *s, struct stor_shard *sh, uint32_t cut)
{
    if (!s->w_replaying)
        return 0;
    if (cut > sh->wt_n)
        cut = sh->wt_n;
    struct wt_undo u = {.sh = sh, .from = sh->wt_from, .n = sh->wt_n,
                        .cut = cut};
    size_t mark = s->wt_undo.len;
    int rc = rk_buf_append(&s->wt_undo, sh->wt + cut,
                           (size_t)(sh->wt_n - cut) * sizeof(*sh->wt));
    if (!rc)
        rc = rk_buf_append(&s->wt_undo, &u, sizeof(u));
    if (rc)
        rk_buf_truncate(&s->wt_undo, mark);
    return rc;
}

void stor__log_undo(struct stor *s)
{
    size_t end = s->wt_undo.len;
    while (end > 0) {
        struct wt_undo u;
        RK_ASSERT(end >= sizeof(u));
        memcpy(&u, s->wt_undo.data + end - sizeof(u), sizeof(u));
        size_t nb = (size_t)(u.n - u.cut) * sizeof(struct stor__tent);
        end -= sizeof(u);
        RK_ASSERT(end >= nb && u.sh->wt_cap >= u.n);
        memcpy(u.sh->wt + u.cut, s->wt_undo.data + end - nb, nb);
        end -= nb;
        u.sh->wt_from = u.from;
        u.sh->wt_n = u.n;
        wt_count(u.sh);
    }
    rk_buf_reset(&s->wt_undo);
}

void stor__log_wt_reset(struct stor *s)
{
    for (uint32_t i = 0; i < s->n_shards; i++) {
        s->shards[i]->wt_n = 0;
        s->shards[i]->wt_from = 0;
        s->shards[i]->wt_bytes = 0;
    }
    stor__chunks_reset(&s->wt_chunks, true);
    rk_buf_reset(&s->wt_undo);
}

void stor__log_free(struct stor *s)
{
    stor__log_wt_reset(s);
    stor__chunks_reset(&s->wt_chunks, false);
    rk_buf_free(&s->wt_undo);
    for (uint32_t i = 0; i < s->n_shards; i++) {
        free(s->shards[i]->wt);
        s->shards[i]->wt = NULL;
        s->shards[i]->wt_cap = 0;
    }
}

/* Deletes sh's chunks from index `from` on in txn; the chunk straddling it
 * is rewritten with its entries before it. */
static int chunks_cut(struct stor *s, MDB_txn *txn, uint64_t shard,
                      raft_index from)
{
    uint8_t fb[8];
    stor__put64(fb, from);
    int rc = stor__del_range(txn, s->dbi_logc, shard, fb, 8, 0, NULL);
    if (rc)
        return rc;
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, s->dbi_logc, &cur);
    if (mrc)
        return stor__from_mdb(mrc);
    raft_index first;
    struct stor__logc c;
    rc = stor__logc_find(cur, shard, from - 1, &first, &c);
    mdb_cursor_close(cur);
    if (rc == RK_ENOTFOUND)
        return 0; /* nothing straddles */
    if (rc)
        return rc;
    if (first + c.count <= from)
        return 0; /* it ends right before */
    /* Rare (a follower's conflicting suffix below the tail): the chunk
     * is copied out of the map, cut and written again. */
    uint32_t keep = (uint32_t)(from - first), end;
    if ((rc = stor__logc_entry(&c, keep - 1, NULL, NULL, NULL, NULL)) != 0)
        return rc;
    end = stor__get32(c.v + STOR__LOGC_HDR +
                      (size_t)(keep - 1) * STOR__LOGC_DESC + 8);
    size_t size = STOR__LOGC_HDR + (size_t)keep * STOR__LOGC_DESC + end;
    uint8_t *copy = malloc(size);
    if (!copy)
        return RK_ENOMEM;
    memcpy(copy, c.v, STOR__LOGC_HDR + (size_t)keep * STOR__LOGC_DESC);
    memcpy(copy + STOR__LOGC_HDR + (size_t)keep * STOR__LOGC_DESC, c.data, end);
    stor__put32(copy + 1, keep);
    uint8_t kb[16];
    stor__key_log(kb, shard, first);
    MDB_val k = {.mv_size = 16, .mv_data = kb};
    MDB_val v = {.mv_size = size, .mv_data = copy};
    mrc = mdb_put(txn, s->dbi_logc, &k, &v, 0);
    free(copy);
    return stor__from_mdb(mrc);
}

int stor__log_drop(struct stor *s, MDB_txn *txn, struct stor_shard *sh)
{
    if (sh->wt_n) {
        int rc = wt_save(s, sh, 0);
        if (rc)
            return rc;
        sh->wt_n = 0;
    }
    return stor__del_range(txn, s->dbi_logc, sh->id, NULL, 0, 0, NULL);
}

static uint32_t chunk_end(const struct stor_shard *sh, uint32_t j,
                          size_t *bytes);
static int chunk_write(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                       uint32_t j, uint32_t k, size_t bytes);

int stor__log_append(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                     const uint8_t *recs, uint32_t n)
{
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
    const uint8_t *p = recs;
    for (uint32_t j = 0; j < n; j++) {
        const struct stor__bent *e = (const struct stor__bent *)p;
        if (e->index != first + j)
            return RK_EINVAL;
        p += stor__bent_size(e->len);
    }
    if (first <= sh->w_last) {
        /* Conflicting suffix (thesis §3.5): drop it before appending. */
        if (sh->wt_n > 0 && first >= sh->wt_from) {
            if ((rc = wt_save(s, sh, (uint32_t)(first - sh->wt_from))) != 0)
                return rc;
            sh->wt_n = (uint32_t)(first - sh->wt_from);
            wt_count(sh);
        } else {
            if ((rc = wt_save(s, sh, 0)) != 0)
                return rc;
            sh->wt_n = 0;
            sh->wt_bytes = 0;
            if ((rc = chunks_cut(s, txn, sh->id, first)) != 0)
                return rc;
        }
        sh->w_last = first - 1;
    } else if ((rc = wt_save(s, sh, sh->wt_n)) != 0) {
        return rc;
    }
    if (sh->wt_n == 0)
        sh->wt_from = first;
    if (sh->wt_n + (uint64_t)n > sh->wt_cap) {
        uint64_t nc = sh->wt_cap ? sh->wt_cap : 64;
        while (nc < sh->wt_n + (uint64_t)n)
            nc *= 2;
        if (nc > UINT32_MAX)
            return RK_ENOMEM;
        struct stor__tent *nt = realloc(sh->wt, nc * sizeof(*nt));
        if (!nt)
            return RK_ENOMEM;
        sh->wt = nt;
        sh->wt_cap = (uint32_t)nc;
    }
    p = recs;
    for (uint32_t j = 0; j < n; j++) {
        const struct stor__bent *e = (const struct stor__bent *)p;
        struct stor__tent *t = &sh->wt[sh->wt_n];
        t->data = stor__chunk_alloc(&s->wt_chunks, e->len ? e->len : 1);
        if (!t->data)
            return RK_ENOMEM;
        if (e->len)
            memcpy(t->data, p + sizeof(*e), e->len);
        t->term = e->term;
        t->type = e->type;
        t->len = e->len;
        sh->wt_n++;
        sh->wt_bytes += e->len + STOR__LOGC_DESC;
        p += stor__bent_size(e->len);
    }
    sh->w_last = first + n - 1;
    sh->w_last_term = sh->wt[sh->wt_n - 1].term;
    /* A full chunk goes into the transaction now, while its entries are
     * in the cache, rather than all of them in the checkpoint's stall. */
    while (sh->wt_bytes >= STOR__LOGC_BYTES && sh->wt_from > sh->w.base_index) {
        size_t bytes;
        uint32_t k = chunk_end(sh, 0, &bytes);
        if ((rc = wt_save(s, sh, 0)) != 0)
            return rc;
        int mrc = chunk_write(s, txn, sh, 0, k, bytes);
        if (mrc)
            return stor__from_mdb(mrc);
        memmove(sh->wt, sh->wt + k, (size_t)(sh->wt_n - k) * sizeof(*sh->wt));
        sh->wt_n -= k;
        sh->wt_from += k;
        sh->wt_bytes -= bytes;
    }
    return stor__pend_log(s, sh, first, recs, n);
}

/* The entries from wt[j] on that make one chunk: up to k (returned),
 * *bytes of data and descriptors, at most STOR__LOGC_BYTES (one entry at
 * least). */
static uint32_t chunk_end(const struct stor_shard *sh, uint32_t j,
                          size_t *bytes)
{
    uint32_t k = j;
    size_t b = 0;
    while (k < sh->wt_n &&
           (k == j ||
            b + sh->wt[k].len + STOR__LOGC_DESC <= STOR__LOGC_BYTES)) {
        b += sh->wt[k].len + STOR__LOGC_DESC;
        k++;
    }
    *bytes = b;
    return k;
}

/* Writes wt[j, k) (bytes: chunk_end's) as one chunk; LMDB's code. */
static int chunk_write(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                       uint32_t j, uint32_t k, size_t bytes)
{
    uint8_t kb[16];
    stor__key_log(kb, sh->id, sh->wt_from + j);
    MDB_val key = {.mv_size = 16, .mv_data = kb};
    MDB_val v = {.mv_size = STOR__LOGC_HDR + bytes};
    int mrc = mdb_put(txn, s->dbi_logc, &key, &v, MDB_RESERVE);
    if (mrc)
        return mrc;
    uint8_t *d = v.mv_data;
    uint8_t *dd = d + STOR__LOGC_HDR + (size_t)(k - j) * STOR__LOGC_DESC;
    uint32_t end = 0;
    d[0] = STOR__LOGC_FORMAT;
    stor__put32(d + 1, k - j);
    d += STOR__LOGC_HDR;
    for (uint32_t x = j; x < k; x++) {
        const struct stor__tent *t = &sh->wt[x];
        if (t->len)
            memcpy(dd + end, t->data, t->len);
        end += t->len;
        stor__put64(d, t->term);
        stor__put32(d + 8, end);
        d[12] = t->type;
        d += STOR__LOGC_DESC;
    }
    return 0;
}

/* Writes sh's writer tail as chunks (entries compaction passed left out). */
static int wt_flush(struct stor *s, MDB_txn *txn, struct stor_shard *sh)
{
    uint32_t j = 0;
    if (sh->wt_from <= sh->w.base_index)
        j = sh->w.base_index - sh->wt_from + 1 < sh->wt_n
                ? (uint32_t)(sh->w.base_index - sh->wt_from + 1)
                : sh->wt_n;
    while (j < sh->wt_n) {
        size_t bytes;
        uint32_t k = chunk_end(sh, j, &bytes);
        int mrc = chunk_write(s, txn, sh, j, k, bytes);
        if (mrc)
            return mrc;
        j = k;
    }
    return 0;
}

int stor__log_spill(struct stor *s, MDB_txn *txn, struct stor_shard *sh)
{
    if (sh->wt_n == 0)
        return 0;
    int rc = wt_save(s, sh, 0);
    if (rc)
        return rc;
    int mrc = wt_flush(s, txn, sh);
    if (mrc)
        return stor__from_mdb(mrc);
    sh->wt_n = 0;
    sh->wt_from = 0;
    sh->wt_bytes = 0;
    return 0;
}

int stor__log_flush(struct stor *s, MDB_txn *txn)
{
    for (uint32_t i = 0; i < s->n_shards; i++) {
        struct stor_shard *sh = s->shards[i];
        if (sh->wt_n == 0)
            continue;
        RK_ASSERT(sh->w_gen == s->gen && sh->w_exists);
        int mrc = wt_flush(s, txn, sh);
        if (mrc)
            return mrc;
    }
    return 0;
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
    MDB_cursor *cur;
    int mrc = mdb_cursor_open(txn, s->dbi_logc, &cur);
    if (mrc)
        return stor__from_mdb(mrc);
    int rc = 0;
    if (nb == sh->w_last) {
        nt = sh->w_last_term;
    } else if (sh->wt_n > 0 && nb >= sh->wt_from) {
        nt = sh->wt[nb - sh->wt_from].term;
    } else {
        raft_index first;
        struct stor__logc c;
        rc = stor__logc_find(cur, sh->id, nb, &first, &c);
        if (rc == 0)
            rc = stor__logc_entry(&c, (uint32_t)(nb - first), &nt, NULL,
                                  NULL, NULL);
        if (rc) {
            mdb_cursor_close(cur);
            return rc == RK_ENOTFOUND ? RK_ECORRUPT : rc;
        }
    }
    /* The chunks whose last entry is <= nb go (one record each); the one
     * straddling nb stays (the entries before base_index+1 in it are
     * never read). */
    uint8_t kb[16];
    stor__key_log(kb, sh->id, 0);
    MDB_val k = {.mv_size = 16, .mv_data = kb}, v;
    mrc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (mrc == 0) {
        struct stor__logc c;
        if (k.mv_size != 16 || stor__get64(k.mv_data) != sh->id)
            break;
        raft_index first = stor__get64((const uint8_t *)k.mv_data + 8);
        if (stor__logc_open(v.mv_data, v.mv_size, &c)) {
            rc = RK_ECORRUPT;
            break;
        }
        if (first + c.count - 1 > nb)
            break;
        if ((mrc = mdb_cursor_del(cur, 0)) != 0)
            break;
        mrc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc)
        return rc;
    if (mrc && mrc != MDB_NOTFOUND)
        return stor__from_mdb(mrc);
    sh->w.base_index = nb;
    sh->w.base_term = nt;
    sh->w_dirty = true;
    sh->compact_pending = sh->w.compact_target > nb;
    return 0;
}
