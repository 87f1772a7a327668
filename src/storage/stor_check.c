/* Offline consistency check of a whole store (stor_check). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stor_int.h"

struct shard_info {
    uint64_t id;
    struct stor__state st;
};

struct ctx {
    struct stor *s;
    MDB_txn *txn;
    struct shard_info *sh;
    uint32_t n;
    char *err;
};

static struct shard_info *find(struct ctx *c, uint64_t id)
{
    uint32_t lo = 0, hi = c->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (c->sh[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < c->n && c->sh[lo].id == id ? &c->sh[lo] : NULL;
}

static int load_states(struct ctx *c)
{
    MDB_cursor *cur;
    MDB_val k, v;
    uint32_t cap = 0;
    int rc = mdb_cursor_open(c->txn, c->s->dbi_state, &cur);
    if (rc)
        return stor__from_mdb(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (c->n == cap) {
            cap = cap ? cap * 2 : 64;
            struct shard_info *np = realloc(c->sh, cap * sizeof(*np));
            if (!np) {
                mdb_cursor_close(cur);
                return RK_ENOMEM;
            }
            c->sh = np;
        }
        struct shard_info *si = &c->sh[c->n];
        si->id = k.mv_size == 8 ? stor__get64(k.mv_data) : 0;
        if (k.mv_size != 8 ||
            stor__state_decode(v.mv_data, v.mv_size, &si->st)) {
            rk_errf(c->err, "state record of shard %llu does not decode",
                    (unsigned long long)si->id);
            mdb_cursor_close(cur);
            return RK_ECORRUPT;
        }
        c->n++;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : stor__from_mdb(rc);
}

/* Walks one database; check(c, shard info, key rest, value) per record. */
static int walk(struct ctx *c, MDB_dbi dbi, const char *name,
                int (*check)(struct ctx *, struct shard_info *, const uint8_t *,
                             size_t, const MDB_val *, void *),
                void *arg)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(c->txn, dbi, &cur);
    if (rc)
        return stor__from_mdb(rc);
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size < 8) {
            rk_errf(c->err, "%s: key of %zu bytes (no shard prefix)", name,
                    k.mv_size);
            rc = -1;
            break;
        }
        uint64_t id = stor__get64(k.mv_data);
        struct shard_info *si = find(c, id);
        if (!si) {
            rk_errf(c->err, "%s: data of shard %llu, which does not exist",
                    name, (unsigned long long)id);
            rc = -1;
            break;
        }
        if (check(c, si, (const uint8_t *)k.mv_data + 8, k.mv_size - 8, &v,
                  arg)) {
            rc = -1;
            break;
        }
    }
    mdb_cursor_close(cur);
    if (rc == -1)
        return RK_ECORRUPT;
    return rc == MDB_NOTFOUND ? 0 : stor__from_mdb(rc);
}

struct log_walk {
    uint64_t shard;
    raft_index prev;
    raft_term prev_term;
};

/* One chunk (stor_int.h): decodes whole; the chunks of a shard are
 * contiguous from the first, which may begin at or before base_index + 1
 * (it keeps compacted entries until all of it is compacted) but not end
 * before it; terms never fall after the base. */
static int check_log(struct ctx *c, struct shard_info *si, const uint8_t *k,
                     size_t klen, const MDB_val *v, void *arg)
{
    struct log_walk *w = arg;
    unsigned long long id = (unsigned long long)si->id;
    struct stor__logc lc;
    if (klen != 8 || stor__logc_open(v->mv_data, v->mv_size, &lc) ||
        stor__logc_check(&lc)) {
        rk_errf(c->err, "log of shard %llu: malformed chunk", id);
        return -1;
    }
    raft_index first = stor__get64(k);
    bool head = w->shard != si->id;
    if (head) {
        w->shard = si->id;
        w->prev = si->st.base_index;
        w->prev_term = si->st.base_term;
    }
    if (first + lc.count - 1 < first ||
        (head ? first > w->prev + 1 || first + lc.count - 1 <= w->prev
              : first != w->prev + 1)) {
        rk_errf(c->err,
                "log of shard %llu: chunk of entries %llu..%llu follows %llu",
                id, (unsigned long long)first,
                (unsigned long long)(first + lc.count - 1),
                (unsigned long long)w->prev);
        return -1;
    }
    for (uint32_t j = 0; j < lc.count; j++) {
        raft_index i = first + j;
        raft_term t;
        (void)stor__logc_entry(&lc, j, &t, NULL, NULL, NULL);
        if (i <= w->prev)
            continue; /* compacted, in the first chunk */
        if (t < w->prev_term) {
            rk_errf(c->err, "log of shard %llu: term falls at entry %llu", id,
                    (unsigned long long)i);
            return -1;
        }
        w->prev = i;
        w->prev_term = t;
    }
    return 0;
}

static int check_kv(struct ctx *c, struct shard_info *si, const uint8_t *k,
                    size_t klen, const MDB_val *v, void *arg)
{
    (void)arg;
    unsigned long long id = (unsigned long long)si->id;
    /* The slot helpers check the encoding: lengths, and for a long key
     * that its entries' full keys have the slot's prefix and hash. */
    MDB_val key = {.mv_size = klen + 8, .mv_data = (void *)(k - 8)};
    struct stor__kvslot it;
    struct stor__kvrec r;
    const uint8_t *prev = NULL;
    uint32_t prev_len = 0;
    int rc;
    stor__kvslot_begin(&it, &key, v);
    while ((rc = stor__kvslot_next(&it, &r)) == 1) {
        if (prev && stor__key_cmp(prev, prev_len, r.key, r.klen) == 0) {
            rk_errf(c->err, "kv of shard %llu: a key stored twice in a slot",
                    id);
            return -1;
        }
        prev = r.key;
        prev_len = r.klen;
        if (r.create_rev > r.mod_rev || r.mod_rev > si->st.applied ||
            r.create_rev == 0) {
            rk_errf(c->err,
                    "kv of shard %llu: revisions %llu/%llu vs applied %llu",
                    id, (unsigned long long)r.create_rev,
                    (unsigned long long)r.mod_rev,
                    (unsigned long long)si->st.applied);
            return -1;
        }
    }
    if (rc < 0) {
        rk_errf(c->err, "kv of shard %llu: malformed record (key of %zu "
                "bytes)", id, klen);
        return -1;
    }
    return 0;
}

static int check_sess(struct ctx *c, struct shard_info *si, const uint8_t *k,
                      size_t klen, const MDB_val *v, void *arg)
{
    (void)k;
    (void)arg;
    if (klen != 8 || !stor__sess_size_ok(v->mv_size)) {
        rk_errf(c->err, "sessions of shard %llu: malformed record",
                (unsigned long long)si->id);
        return -1;
    }
    return 0;
}

static int check_stage(struct ctx *c, struct shard_info *si, const uint8_t *k,
                       size_t klen, const MDB_val *v, void *arg)
{
    (void)v;
    (void)arg;
    if (klen != 4 || stor__get32(k) >= si->st.stage_next) {
        rk_errf(c->err, "staging of shard %llu: unexpected chunk",
                (unsigned long long)si->id);
        return -1;
    }
    return 0;
}

int stor_check(struct stor *s, char *errmsg)
{
    char scratch[RK_ERRMSG_SIZE];
    struct ctx c = {.s = s, .err = errmsg ? errmsg : scratch};
    c.err[0] = '\0';
    stor__checkpoint_wait(s); /* checks what LMDB holds */
    int rc = stor__read_begin(s, &c.txn);
    if (rc) {
        rk_errf(c.err, "cannot begin a read transaction");
        return rc;
    }
    struct log_walk lw = {.shard = UINT64_MAX};
    if ((rc = load_states(&c)) == 0 &&
        (rc = walk(&c, s->dbi_logc, "log", check_log, &lw)) == 0 &&
        (rc = walk(&c, s->dbi_kv, "kv", check_kv, NULL)) == 0 &&
        (rc = walk(&c, s->dbi_sess, "sessions", check_sess, NULL)) == 0)
        rc = walk(&c, s->dbi_stage, "stage", check_stage, NULL);
    /* Each shard's applied index must be covered by the log or the base. */
    for (uint32_t i = 0; rc == 0 && i < c.n; i++) {
        const struct stor__state *st = &c.sh[i].st;
        if (st->applied < st->base_index || st->compact_target > st->applied) {
            rk_errf(c.err,
                    "shard %llu: applied %llu, log base %llu, compaction "
                    "target %llu",
                    (unsigned long long)c.sh[i].id,
                    (unsigned long long)st->applied,
                    (unsigned long long)st->base_index,
                    (unsigned long long)st->compact_target);
            rc = RK_ECORRUPT;
        }
    }
    stor__read_end(s, c.txn);
    free(c.sh);
    if (rc && !c.err[0])
        rk_errf(c.err, "%s", rk_strerror(rc));
    return rc;
}
