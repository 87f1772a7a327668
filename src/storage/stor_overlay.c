/* What readers see of the open transaction: KV overlay and log tails. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "rk_assert.h"
#include "rk_buf.h"
#include "stor_int.h"

/*
 * Batches run in ONE LMDB write transaction that stays open between
 * checkpoints (stor_thread.c); readers use read transactions, which see
 * the last checkpoint only. What the open transaction changed reaches them
 * through two in-memory copies, made when a batch is done (WAL-durable if
 * it needs durability) and dropped when a checkpoint commit made LMDB hold
 * the same:
 *
 *   the OVERLAY, (shard, user key) -> value record or tombstone, consulted
 *   by stor_kv_get before LMDB (s->ov_lock);
 *
 *   the log TAIL of each shard: the entries from tail_from on (the lowest
 *   index appended or truncated since the checkpoint), consulted by
 *   stor_log_term / stor_log_entries for those indexes (s->mu).
 *
 * READER RACE. A reader looks at the overlay (or tail) first and begins
 * its read transaction only after; the writer drops them only after the
 * checkpoint's commit. So a reader that misses the overlay because it was
 * just dropped begins its read transaction after that commit and sees the
 * data there.
 *
 * SCANS need more than one key to agree: a copy of the overlay and a read
 * transaction taken a moment later could straddle a checkpoint whose
 * commit holds batches done after the copy, and show some of a batch's
 * writes but not others. So the overlay remembers the LMDB transaction id
 * of the checkpoint it was cleared after (ov_base, set at the clear, under
 * the lock), a scan copies it with the entries, and keeps its read
 * transaction only if that one sees exactly this checkpoint
 * (mdb_txn_id); otherwise it takes both again (stor_kv_scan). Between a
 * commit and the clear the overlay holds exactly that commit's batches, so
 * a copy taken then (with the old ov_base) is refused, never wrong. A
 * rerun's partial checkpoint (rerun_wal) commits batches the overlay keeps
 * holding: the overlay stands on that commit too, and ov_base follows it
 * without a clear.
 *
 * While a batch runs, its changes are only PENDING (writer-only, s->pend):
 * a batch that fails drops them (and the open transaction is rebuilt from
 * the WAL, or, while replaying, its nested transaction aborted); a done
 * batch's are merged. Batches whose ops force a checkpoint (shard create /
 * destroy, snapshot install, split) record nothing more once they set
 * s->w_force_ckpt: the checkpoint right after them makes LMDB current.
 */

struct ov_ent {
    struct ov_ent *next;
    uint64_t hash;
    uint64_t shard;
    uint32_t klen;
    bool tomb;
    uint32_t rlen; /* record: create(8) mod(8) value */
    uint8_t data[]; /* key, then record */
};

/* The overlay's entries and the tails' entry data are carved from chunks
 * (both live from one checkpoint to the next and are dropped whole: no
 * malloc and free per entry). What is replaced (an overlay entry by one of
 * another size, a tail's entries cut by a conflicting append) stays in its
 * chunk until then; a chunk is CHUNK bytes, or one entry that does not
 * fit. s->ov_chunks is guarded by ov_lock, s->tl_chunks by s->mu. */
#define CHUNK ((size_t)1 << 20)

struct stor__chunk {
    struct stor__chunk *next;
    size_t used, size;
    _Alignas(max_align_t) uint8_t mem[];
};

void *stor__chunk_alloc(struct stor__chunk **list, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct stor__chunk *c = *list;
    if (!c || c->size - c->used < n) {
        size_t sz = n > CHUNK ? n : CHUNK;
        c = malloc(sizeof(*c) + sz);
        if (!c)
            return NULL;
        c->used = 0;
        c->size = sz;
        c->next = *list;
        *list = c;
    }
    void *p = c->mem + c->used;
    c->used += n;
    return p;
}

/* Drops the chunks, but one when keep_one (the next entries reuse it). */
void stor__chunks_reset(struct stor__chunk **list, bool keep_one)
{
    struct stor__chunk *c = *list, *next;
    if (keep_one && c && c->size == CHUNK) {
        next = c->next;
        c->next = NULL;
        c->used = 0;
        c = next;
    } else {
        *list = NULL;
    }
    for (; c; c = next) {
        next = c->next;
        free(c);
    }
}

struct stor__pend_log {
    struct stor_shard *sh;
    raft_index first;
    const uint8_t *recs; /* packed entries in the batch's arena */
    uint32_t n;
};

static uint64_t ov_hash(uint64_t shard, const void *key, size_t klen)
{
    return XXH3_64bits_withSeed(key, klen, shard ^ 0x6f7665726c6179ull);
}

/* ------------------------------------------------------------- pending */

bool stor__pend_on(const struct stor *s)
{
    return !s->w_replaying && !s->w_force_ckpt;
}

int stor__pend_kv(struct stor *s, uint64_t shard, const void *key, size_t klen,
                  const void *rec, size_t rlen)
{
    uint8_t h[16];
    if (!stor__pend_on(s))
        return 0;
    stor__put64(h, shard);
    stor__put32(h + 8, (uint32_t)klen);
    stor__put32(h + 12, rec ? (uint32_t)rlen + 1 : 0);
    size_t mark = s->pend_kv.len;
    int rc = rk_buf_append(&s->pend_kv, h, 16);
    if (!rc)
        rc = rk_buf_append(&s->pend_kv, key, klen);
    if (!rc && rec)
        rc = rk_buf_append(&s->pend_kv, rec, rlen);
    if (rc)
        rk_buf_truncate(&s->pend_kv, mark);
    return rc;
}

int stor__pend_log(struct stor *s, struct stor_shard *sh, raft_index first,
                   const uint8_t *recs, uint32_t n)
{
    if (!stor__pend_on(s))
        return 0;
    if (s->n_pend_log == s->cap_pend_log) {
        uint32_t nc = s->cap_pend_log ? s->cap_pend_log * 2 : 64;
        struct stor__pend_log *np =
            realloc(s->pend_log, nc * sizeof(*np));
        if (!np)
            return RK_ENOMEM;
        s->pend_log = np;
        s->cap_pend_log = nc;
    }
    s->pend_log[s->n_pend_log++] =
        (struct stor__pend_log){.sh = sh, .first = first, .recs = recs, .n = n};
    return 0;
}

void stor__pend_mark(const struct stor *s, struct stor__pend_mark *m)
{
    m->kv = s->pend_kv.len;
    m->log = s->n_pend_log;
}

void stor__pend_rollback(struct stor *s, const struct stor__pend_mark *m)
{
    rk_buf_truncate(&s->pend_kv, m->kv);
    s->n_pend_log = m->log;
}

void stor__pend_drop(struct stor *s)
{
    rk_buf_reset(&s->pend_kv);
    s->n_pend_log = 0;
}

/* --------------------------------------------------------------- overlay */

static int ov_grow(struct stor *s)
{
    size_t nc = s->ov_cap ? s->ov_cap * 2 : 1024;
    struct ov_ent **nt = calloc(nc, sizeof(*nt));
    if (!nt)
        return RK_ENOMEM;
    for (size_t i = 0; i < s->ov_cap; i++) {
        struct ov_ent *e = s->ov_tab[i], *next;
        for (; e; e = next) {
            next = e->next;
            e->next = nt[e->hash & (nc - 1)];
            nt[e->hash & (nc - 1)] = e;
        }
    }
    free(s->ov_tab);
    s->ov_tab = nt;
    s->ov_cap = nc;
    return 0;
}

/* Caller holds ov_lock exclusively. */
static int ov_put(struct stor *s, uint64_t shard, const uint8_t *key,
                  uint32_t klen, const uint8_t *rec, uint32_t rlen, bool tomb)
{
    if (s->ov_n + 1 > s->ov_cap && ov_grow(s))
        return RK_ENOMEM;
    uint64_t h = ov_hash(shard, key, klen);
    /* The key's entry (its link in the bucket), if it has one. */
    struct ov_ent **pp = &s->ov_tab[h & (s->ov_cap - 1)];
    for (; *pp; pp = &(*pp)->next) {
        const struct ov_ent *o = *pp;
        if (o->hash == h && o->shard == shard && o->klen == klen &&
            memcmp(o->data, key, klen) == 0)
            break;
    }
    struct ov_ent *o = *pp;
    if (o && !tomb && !o->tomb && o->rlen == rlen) {
        /* Written again with a record of the same size (a put of a
         * fixed-size value): the entry takes the new record in place. */
        memcpy(o->data + klen, rec, rlen);
        return 0;
    }
    struct ov_ent *e =
        stor__chunk_alloc(&s->ov_chunks, sizeof(*e) + klen + (tomb ? 0 : rlen));
    if (!e)
        return RK_ENOMEM;
    e->hash = h;
    e->shard = shard;
    e->klen = klen;
    e->tomb = tomb;
    e->rlen = tomb ? 0 : rlen;
    memcpy(e->data, key, klen);
    if (!tomb)
        memcpy(e->data + klen, rec, rlen);
    if (o) {
        e->next = o->next;
        *pp = e; /* o stays in its chunk until the clear */
        return 0;
    }
    e->next = s->ov_tab[h & (s->ov_cap - 1)];
    s->ov_tab[h & (s->ov_cap - 1)] = e;
    s->ov_n++;
    return 0;
}

int stor__overlay_get(struct stor *s, uint64_t shard, const void *key,
                      size_t klen, struct stor_value *out)
{
    int rc = 0;
    pthread_rwlock_rdlock(&s->ov_lock);
    if (s->ov_n > 0) {
        uint64_t h = ov_hash(shard, key, klen);
        for (struct ov_ent *e = s->ov_tab[h & (s->ov_cap - 1)]; e;
             e = e->next) {
            if (e->hash != h || e->shard != shard || e->klen != klen ||
                memcmp(e->data, key, klen) != 0)
                continue;
            if (e->tomb) {
                rc = RK_ENOTFOUND;
                break;
            }
            const uint8_t *r = e->data + klen;
            uint32_t vlen = e->rlen - STOR__VAL_HDR;
            out->data = malloc(vlen ? vlen : 1);
            if (!out->data) {
                rc = RK_ENOMEM;
                break;
            }
            memcpy(out->data, r + STOR__VAL_HDR, vlen);
            out->len = vlen;
            out->create_revision = stor__get64(r);
            out->revision = stor__get64(r + 8);
            rc = 1;
            break;
        }
    }
    pthread_rwlock_unlock(&s->ov_lock);
    return rc;
}

/* Does the entry belong to the scan (see stor__overlay_scan)? */
static bool ov_wants(const struct ov_ent *e, uint64_t shard,
                     const void *prefix, size_t plen, const void *start,
                     size_t slen)
{
    if (e->shard != shard || e->klen < plen ||
        (plen && memcmp(e->data, prefix, plen) != 0))
        return false;
    return !start || stor__key_cmp(e->data, e->klen, start, slen) >= 0;
}

static int ov_item_cmp(const void *a, const void *b)
{
    const struct stor__ov_item *x = a, *y = b;
    return stor__key_cmp(x->key, x->klen, y->key, y->klen);
}

int stor__overlay_scan(struct stor *s, uint64_t shard, const void *prefix,
                       size_t plen, const void *start, size_t slen,
                       struct stor__ov_scan *out)
{
    int rc = 0;
    size_t n = 0, bytes = 0;
    memset(out, 0, sizeof(*out));
    pthread_rwlock_rdlock(&s->ov_lock);
    out->base = s->ov_base;
    /* Two walks under one hold: count, then copy into one block. */
    for (size_t i = 0; i < s->ov_cap && s->ov_n > 0; i++)
        for (const struct ov_ent *e = s->ov_tab[i]; e; e = e->next)
            if (ov_wants(e, shard, prefix, plen, start, slen)) {
                n++;
                bytes += (size_t)e->klen + e->rlen;
            }
    if (n == 0)
        goto done;
    uint8_t *blk = malloc(n * sizeof(struct stor__ov_item) + bytes);
    if (!blk) {
        rc = RK_ENOMEM;
        goto done;
    }
    struct stor__ov_item *items = (struct stor__ov_item *)blk;
    uint8_t *d = blk + n * sizeof(*items);
    size_t k = 0;
    for (size_t i = 0; i < s->ov_cap; i++)
        for (const struct ov_ent *e = s->ov_tab[i]; e; e = e->next) {
            if (!ov_wants(e, shard, prefix, plen, start, slen))
                continue;
            RK_ASSERT(k < n);
            struct stor__ov_item *it = &items[k++];
            memcpy(d, e->data, (size_t)e->klen + e->rlen);
            it->key = d;
            it->klen = e->klen;
            it->tomb = e->tomb;
            it->rec = e->tomb ? NULL : d + e->klen;
            it->rlen = e->rlen;
            d += (size_t)e->klen + e->rlen;
        }
    RK_ASSERT(k == n);
    out->items = items;
    out->n = n;
done:
    pthread_rwlock_unlock(&s->ov_lock);
    if (out->n > 1)
        qsort(out->items, out->n, sizeof(*out->items), ov_item_cmp);
    return rc;
}

/* ----------------------------------------------------------------- tails */

/* Cuts sh's tail to its first `from` entries (their data stays in
 * s->tl_chunks until the tails are cleared). */
static void tail_free(struct stor_shard *sh, uint32_t from)
{
    sh->tail_n = from;
}

/* Caller holds s->mu. */
static int tail_apply(struct stor *s, struct stor_shard *sh, raft_index first,
                      const uint8_t *recs, uint32_t n)
{
    if (sh->tail_from == 0 || first < sh->tail_from ||
        first > sh->tail_from + sh->tail_n) {
        tail_free(sh, 0);
        sh->tail_from = first;
    } else {
        tail_free(sh, (uint32_t)(first - sh->tail_from));
    }
    if (sh->tail_n + n > sh->tail_cap) {
        uint32_t nc = sh->tail_cap ? sh->tail_cap : 16;
        while (nc < sh->tail_n + n)
            nc *= 2;
        struct stor__tent *nt = realloc(sh->tail, nc * sizeof(*nt));
        if (!nt)
            return RK_ENOMEM;
        sh->tail = nt;
        sh->tail_cap = nc;
    }
    for (uint32_t j = 0; j < n; j++) {
        const struct stor__bent *e = (const struct stor__bent *)recs;
        struct stor__tent *t = &sh->tail[sh->tail_n];
        t->data = stor__chunk_alloc(&s->tl_chunks, e->len ? e->len : 1);
        if (!t->data)
            return RK_ENOMEM;
        memcpy(t->data, recs + sizeof(*e), e->len);
        t->term = e->term;
        t->type = e->type;
        t->len = e->len;
        sh->tail_n++;
        recs += stor__bent_size(e->len);
    }
    return 0;
}

int stor__pend_merge_kv(struct stor *s)
{
    int rc = 0;
    if (s->pend_kv.len > 0) {
        pthread_rwlock_wrlock(&s->ov_lock);
        const uint8_t *p = s->pend_kv.data, *end = p + s->pend_kv.len;
        while (rc == 0 && p < end) {
            uint64_t shard = stor__get64(p);
            uint32_t klen = stor__get32(p + 8), r1 = stor__get32(p + 12);
            const uint8_t *key = p + 16;
            uint32_t rlen = r1 ? r1 - 1 : 0;
            rc = ov_put(s, shard, key, klen, key + klen, rlen, r1 == 0);
            p = key + klen + rlen;
        }
        pthread_rwlock_unlock(&s->ov_lock);
    }
    rk_buf_reset(&s->pend_kv);
    return rc;
}

int stor__pend_merge_log_locked(struct stor *s)
{
    int rc = 0;
    for (uint32_t i = 0; i < s->n_pend_log && rc == 0; i++) {
        struct stor__pend_log *pl = &s->pend_log[i];
        rc = tail_apply(s, pl->sh, pl->first, pl->recs, pl->n);
    }
    s->n_pend_log = 0;
    return rc;
}

/* Caller holds s->mu. */
static void tails_clear(struct stor *s)
{
    for (uint32_t i = 0; i < s->n_shards; i++) {
        tail_free(s->shards[i], 0);
        s->shards[i]->tail_from = 0;
    }
    stor__chunks_reset(&s->tl_chunks, true);
}

/* Caller holds ov_lock exclusively. */
static void ov_rebase(struct stor *s)
{
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    s->ov_base = info.me_last_txnid;
}

void stor__overlay_rebase(struct stor *s)
{
    pthread_rwlock_wrlock(&s->ov_lock);
    ov_rebase(s);
    pthread_rwlock_unlock(&s->ov_lock);
}

static void ov_clear(struct stor *s, bool rebase)
{
    pthread_rwlock_wrlock(&s->ov_lock);
    if (rebase)
        ov_rebase(s);
    if (s->ov_n > 0)
        memset(s->ov_tab, 0, s->ov_cap * sizeof(*s->ov_tab));
    s->ov_n = 0;
    stor__chunks_reset(&s->ov_chunks, true);
    pthread_rwlock_unlock(&s->ov_lock);
    pthread_mutex_lock(&s->mu);
    tails_clear(s);
    pthread_mutex_unlock(&s->mu);
}

void stor__overlay_clear(struct stor *s)
{
    ov_clear(s, true);
}

void stor__overlay_free(struct stor *s)
{
    ov_clear(s, false); /* the environment is closed by now */
    stor__chunks_reset(&s->ov_chunks, false);
    stor__chunks_reset(&s->tl_chunks, false);
    free(s->ov_tab);
    s->ov_tab = NULL;
    s->ov_cap = 0;
    stor__log_free(s);
    for (uint32_t i = 0; i < s->n_shards; i++) {
        free(s->shards[i]->tail);
        s->shards[i]->tail = NULL;
        s->shards[i]->tail_cap = 0;
    }
    rk_buf_free(&s->pend_kv);
    free(s->pend_log);
    s->pend_log = NULL;
    s->n_pend_log = s->cap_pend_log = 0;
}
