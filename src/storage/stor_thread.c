/* Group commit: one LMDB txn + one sync per batch, on a storage thread. */
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

#include "rk_assert.h"
#include "rk_buf.h"
#include "rk_log.h"
#include "stor_int.h"

enum bop_kind {
    BOP_CREATE,
    BOP_DESTROY,
    BOP_APPEND,
    BOP_HS,
    BOP_CONF,
    BOP_APPLIED_CONF,
    BOP_STAGE,
    BOP_INSTALL,
    BOP_APPLY,
    BOP_COMPACT,
};

struct bop {
    uint8_t kind;
    uint64_t shard;
    size_t off; /* payload in the arena */
    uint32_t n; /* entries */
    uint32_t first_result;
    int status; /* per-op status (stage, install) */
    raft_index index;
};

struct stor_batch {
    struct bop *ops;
    uint32_t n_ops, cap_ops;
    uint8_t *arena;
    size_t arena_len, arena_cap;
    struct stor_result *res;
    uint32_t n_res, cap_res;
    size_t bytes;
    struct stor_shard **touched;
    uint32_t n_touched, cap_touched;
    /* Submission. */
    struct stor_batch *q_next;
    stor_done_cb cb;
    void *arg;
    stor_done_cb applied_cb; /* optional, see stor_batch_on_applied */
    void *applied_arg;
};

/* ------------------------------------------------------------ building */

int stor_batch_new(struct stor_batch **out)
{
    *out = calloc(1, sizeof(**out));
    return *out ? 0 : RK_ENOMEM;
}

void stor_batch_free(struct stor_batch *b)
{
    if (!b)
        return;
    free(b->ops);
    free(b->arena);
    free(b->res);
    free(b->touched);
    free(b);
}

void stor_batch_reset(struct stor_batch *b)
{
    b->n_ops = 0;
    b->arena_len = 0;
    b->n_res = 0;
    b->bytes = 0;
    b->n_touched = 0;
}

bool stor_batch_empty(const struct stor_batch *b)
{
    return b->n_ops == 0;
}

size_t stor_batch_bytes(const struct stor_batch *b)
{
    return b->bytes;
}

static int grow(void **p, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    uint32_t nc = *cap ? *cap : 16;
    while (nc < need) {
        if (nc > UINT32_MAX / 2)
            return RK_ENOMEM;
        nc *= 2;
    }
    void *np = realloc(*p, (size_t)nc * elem);
    if (!np)
        return RK_ENOMEM;
    *p = np;
    *cap = nc;
    return 0;
}

/* Reserves n bytes (8-aligned) in the arena; *off is where they start. */
static int arena_alloc(struct stor_batch *b, size_t n, size_t *off)
{
    size_t start = (b->arena_len + 7) & ~(size_t)7;
    if (n > SIZE_MAX / 2 || start + n < start)
        return RK_ENOMEM;
    if (start + n > b->arena_cap) {
        size_t nc = b->arena_cap ? b->arena_cap : 4096;
        while (nc < start + n)
            nc *= 2;
        uint8_t *np = realloc(b->arena, nc);
        if (!np)
            return RK_ENOMEM;
        b->arena = np;
        b->arena_cap = nc;
    }
    *off = start;
    b->arena_len = start + n;
    return 0;
}

static struct bop *add_op(struct stor_batch *b, uint8_t kind, uint64_t shard)
{
    if (grow((void **)&b->ops, &b->cap_ops, b->n_ops + 1, sizeof(*b->ops)))
        return NULL;
    struct bop *op = &b->ops[b->n_ops++];
    memset(op, 0, sizeof(*op));
    op->kind = kind;
    op->shard = shard;
    return op;
}

/* Adds an op whose payload is a copy of len bytes. */
static int add_blob(struct stor_batch *b, uint8_t kind, uint64_t shard,
                    const void *p, size_t len, uint32_t *op_id)
{
    size_t mark = b->arena_len, off;
    if (arena_alloc(b, len, &off))
        return RK_ENOMEM;
    struct bop *op = add_op(b, kind, shard);
    if (!op) {
        b->arena_len = mark;
        return RK_ENOMEM;
    }
    if (len)
        memcpy(b->arena + off, p, len);
    op->off = off;
    op->n = (uint32_t)len;
    if (op_id)
        *op_id = b->n_ops - 1;
    return 0;
}

int stor_batch_create_shard(struct stor_batch *b, uint64_t shard,
                            const struct raft_conf_state *conf)
{
    if (!conf || conf->n_voters > RAFT_MAX_MEMBERS ||
        conf->n_learners > RAFT_MAX_MEMBERS)
        return RK_EINVAL;
    return add_blob(b, BOP_CREATE, shard, conf, sizeof(*conf), NULL);
}

int stor_batch_destroy_shard(struct stor_batch *b, uint64_t shard)
{
    return add_blob(b, BOP_DESTROY, shard, NULL, 0, NULL);
}

/* Packs entries; kind is BOP_APPEND or BOP_APPLY. */
static int add_entries(struct stor_batch *b, uint8_t kind, uint64_t shard,
                       const struct raft_entry *ents, uint32_t n,
                       struct bop **out)
{
    size_t total = 0;
    if (n == 0 || !ents)
        return RK_EINVAL;
    for (uint32_t i = 0; i < n; i++) {
        if ((ents[i].len && !ents[i].data) ||
            (i > 0 && ents[i].index != ents[0].index + i) || ents[i].index == 0)
            return RK_EINVAL;
        total += stor__bent_size(ents[i].len);
    }
    size_t mark = b->arena_len, off;
    if (arena_alloc(b, total, &off))
        return RK_ENOMEM;
    struct bop *op = add_op(b, kind, shard);
    if (!op) {
        b->arena_len = mark;
        return RK_ENOMEM;
    }
    uint8_t *p = b->arena + off;
    for (uint32_t i = 0; i < n; i++) {
        struct stor__bent *e = (struct stor__bent *)p;
        memset(e, 0, sizeof(*e));
        e->term = ents[i].term;
        e->index = ents[i].index;
        e->len = ents[i].len;
        e->type = ents[i].type;
        if (ents[i].len)
            memcpy(p + sizeof(*e), ents[i].data, ents[i].len);
        p += stor__bent_size(ents[i].len);
        b->bytes += ents[i].len + 32;
    }
    op->off = off;
    op->n = n;
    *out = op;
    return 0;
}

int stor_batch_append(struct stor_batch *b, uint64_t shard,
                      const struct raft_entry *ents, uint32_t n)
{
    struct bop *op;
    if (n == 0)
        return 0;
    return add_entries(b, BOP_APPEND, shard, ents, n, &op);
}

int stor_batch_apply(struct stor_batch *b, uint64_t shard,
                     const struct raft_entry *ents, uint32_t n,
                     uint32_t *first_result)
{
    struct bop *op;
    if (first_result)
        *first_result = b->n_res;
    if (n == 0)
        return 0;
    if (grow((void **)&b->res, &b->cap_res, b->n_res + n, sizeof(*b->res)))
        return RK_ENOMEM;
    int rc = add_entries(b, BOP_APPLY, shard, ents, n, &op);
    if (rc)
        return rc;
    op->first_result = b->n_res;
    memset(&b->res[b->n_res], 0, n * sizeof(*b->res));
    b->n_res += n;
    return 0;
}

int stor_batch_set_hard_state(struct stor_batch *b, uint64_t shard,
                              const struct raft_hard_state *hs)
{
    if (!hs)
        return RK_EINVAL;
    return add_blob(b, BOP_HS, shard, hs, sizeof(*hs), NULL);
}

static bool conf_ok(const struct raft_conf_state *c)
{
    return c && c->n_voters <= RAFT_MAX_MEMBERS &&
           c->n_learners <= RAFT_MAX_MEMBERS;
}

int stor_batch_set_conf(struct stor_batch *b, uint64_t shard,
                        const struct raft_conf_state *conf)
{
    if (!conf_ok(conf))
        return RK_EINVAL;
    return add_blob(b, BOP_CONF, shard, conf, sizeof(*conf), NULL);
}

int stor_batch_set_applied_conf(struct stor_batch *b, uint64_t shard,
                                const struct raft_conf_state *conf)
{
    if (!conf_ok(conf))
        return RK_EINVAL;
    return add_blob(b, BOP_APPLIED_CONF, shard, conf, sizeof(*conf), NULL);
}

/* A staged chunk in the arena: the chunk struct then its bytes. */
int stor_batch_stage_chunk(struct stor_batch *b, uint64_t shard,
                           const struct raft_snap_chunk *c, uint32_t *op)
{
    if (!c || (c->len && !c->data) || !conf_ok(&c->meta.conf))
        return RK_EINVAL;
    size_t mark = b->arena_len, off;
    if (arena_alloc(b, sizeof(*c) + c->len, &off))
        return RK_ENOMEM;
    struct bop *o = add_op(b, BOP_STAGE, shard);
    if (!o) {
        b->arena_len = mark;
        return RK_ENOMEM;
    }
    struct raft_snap_chunk *cp = (struct raft_snap_chunk *)(b->arena + off);
    *cp = *c;
    cp->data = NULL;
    if (c->len)
        memcpy(b->arena + off + sizeof(*c), c->data, c->len);
    o->off = off;
    b->bytes += c->len;
    if (op)
        *op = b->n_ops - 1;
    return 0;
}

int stor_batch_install_snapshot(struct stor_batch *b, uint64_t shard,
                                const struct raft_snapshot_meta *meta,
                                uint32_t *op)
{
    if (!meta || !conf_ok(&meta->conf))
        return RK_EINVAL;
    return add_blob(b, BOP_INSTALL, shard, meta, sizeof(*meta), op);
}

int stor_batch_compact(struct stor_batch *b, uint64_t shard, raft_index index)
{
    struct bop *op = add_op(b, BOP_COMPACT, shard);
    if (!op)
        return RK_ENOMEM;
    op->index = index;
    return 0;
}

int stor_batch_add_ready(struct stor_batch *b, uint64_t shard,
                         const struct raft_ready *rd)
{
    int rc = 0;
    if (rd->snap_chunk)
        rc = stor_batch_stage_chunk(b, shard, rd->snap_chunk, NULL);
    if (!rc && rd->snap_install)
        rc = stor_batch_install_snapshot(b, shard, &rd->snap_meta, NULL);
    if (!rc && rd->n_entries)
        rc = stor_batch_append(b, shard, rd->entries, rd->n_entries);
    if (!rc && rd->hs_changed)
        rc = stor_batch_set_hard_state(b, shard, &rd->hs);
    if (!rc && rd->conf_changed)
        rc = stor_batch_set_conf(b, shard, &rd->conf);
    return rc;
}

uint32_t stor_batch_n_results(const struct stor_batch *b)
{
    return b->n_res;
}

const struct stor_result *stor_batch_result(const struct stor_batch *b,
                                            uint32_t i)
{
    return i < b->n_res ? &b->res[i] : NULL;
}

int stor_batch_op_status(const struct stor_batch *b, uint32_t op)
{
    return op < b->n_ops ? b->ops[op].status : RK_EINVAL;
}

int stor_batch_shard_status(const struct stor_batch *b, uint64_t shard)
{
    for (uint32_t i = 0; i < b->n_ops; i++)
        if (b->ops[i].shard == shard && b->ops[i].status)
            return b->ops[i].status;
    return 0;
}

/* ------------------------------------------------- the batch as a record
 *
 * A batch's WAL record (stor_wal.c) is its ops, in order, each what the
 * add function it came from was given (results and statuses are not
 * recorded: replaying the ops on the same state gives the same ones).
 * All integers big-endian:
 *
 *   u8 version (1) | u32 n_ops | n_ops * (u8 kind | u64 shard | body)
 *   CREATE, CONF, APPLIED_CONF: conf   (u32 n_voters, u32 n_learners, ids)
 *   DESTROY: nothing
 *   APPEND, APPLY: u32 n | n * (u64 term | u64 index | u8 type | u32 len
 *                               | len bytes)
 *   HS: u64 term | u64 vote | u64 commit
 *   STAGE: meta | u32 seq | u8 last (0/1) | u32 len | len bytes
 *   INSTALL: meta                      (u64 index, u64 term, conf)
 *   COMPACT: u64 index
 *
 * The decoder is bounds-checked and rebuilds the batch through the add
 * functions (which check what they are given): truncated, trailing or
 * unknown bytes give RK_EPROTO.
 */
#define REC_VERSION 1u

static int put_meta(struct rk_buf *o, const struct raft_snapshot_meta *m)
{
    uint8_t cb[8 + 16 * RAFT_MAX_MEMBERS];
    int rc = rk_buf_append_u64be(o, m->index);
    if (!rc)
        rc = rk_buf_append_u64be(o, m->term);
    if (!rc)
        rc = rk_buf_append(o, cb, stor__conf_encode(&m->conf, cb));
    return rc;
}

static int put_entries(struct rk_buf *o, const struct stor_batch *b,
                       const struct bop *op)
{
    const uint8_t *p = b->arena + op->off;
    int rc = rk_buf_append_u32be(o, op->n);
    for (uint32_t i = 0; rc == 0 && i < op->n; i++) {
        const struct stor__bent *e = (const struct stor__bent *)p;
        if ((rc = rk_buf_append_u64be(o, e->term)) == 0 &&
            (rc = rk_buf_append_u64be(o, e->index)) == 0 &&
            (rc = rk_buf_append_u8(o, e->type)) == 0 &&
            (rc = rk_buf_append_u32be(o, e->len)) == 0)
            rc = rk_buf_append(o, p + sizeof(*e), e->len);
        p += stor__bent_size(e->len);
    }
    return rc;
}

int stor__batch_encode(const struct stor_batch *b, struct rk_buf *o)
{
    uint8_t cb[8 + 16 * RAFT_MAX_MEMBERS];
    int rc;
    rk_buf_reset(o);
    if ((rc = rk_buf_reserve(o, 64 + b->bytes + (size_t)b->n_ops * 64)) ||
        (rc = rk_buf_append_u8(o, REC_VERSION)) ||
        (rc = rk_buf_append_u32be(o, b->n_ops)))
        return rc;
    for (uint32_t i = 0; i < b->n_ops && rc == 0; i++) {
        const struct bop *op = &b->ops[i];
        const uint8_t *pl = b->arena + op->off;
        if ((rc = rk_buf_append_u8(o, op->kind)) ||
            (rc = rk_buf_append_u64be(o, op->shard)))
            break;
        switch (op->kind) {
        case BOP_CREATE:
        case BOP_CONF:
        case BOP_APPLIED_CONF: {
            struct raft_conf_state c;
            memcpy(&c, pl, sizeof(c));
            rc = rk_buf_append(o, cb, stor__conf_encode(&c, cb));
            break;
        }
        case BOP_DESTROY:
            break;
        case BOP_APPEND:
        case BOP_APPLY:
            rc = put_entries(o, b, op);
            break;
        case BOP_HS: {
            struct raft_hard_state hs;
            memcpy(&hs, pl, sizeof(hs));
            if ((rc = rk_buf_append_u64be(o, hs.term)) == 0 &&
                (rc = rk_buf_append_u64be(o, hs.vote)) == 0)
                rc = rk_buf_append_u64be(o, hs.commit);
            break;
        }
        case BOP_STAGE: {
            struct raft_snap_chunk c;
            memcpy(&c, pl, sizeof(c));
            if ((rc = put_meta(o, &c.meta)) == 0 &&
                (rc = rk_buf_append_u32be(o, c.seq)) == 0 &&
                (rc = rk_buf_append_u8(o, c.last ? 1 : 0)) == 0 &&
                (rc = rk_buf_append_u32be(o, c.len)) == 0)
                rc = rk_buf_append(o, pl + sizeof(c), c.len);
            break;
        }
        case BOP_INSTALL: {
            struct raft_snapshot_meta m;
            memcpy(&m, pl, sizeof(m));
            rc = put_meta(o, &m);
            break;
        }
        case BOP_COMPACT:
            rc = rk_buf_append_u64be(o, op->index);
            break;
        default:
            RK_ASSERT(!"unknown batch op");
        }
    }
    return rc;
}

static bool get_meta(struct stor__rd *r, struct raft_snapshot_meta *m)
{
    memset(m, 0, sizeof(*m));
    return stor__rd_u64(r, &m->index) && stor__rd_u64(r, &m->term) &&
           stor__conf_decode(r, &m->conf);
}

/* Decodes n entries into a malloc'd array pointing into the record. */
static int get_entries(struct stor__rd *r, struct raft_entry **out,
                       uint32_t *n_out)
{
    uint32_t n;
    *out = NULL;
    if (!stor__rd_u32(r, &n) || n == 0 || n > r->left / 21)
        return RK_EPROTO; /* each entry takes at least 21 bytes */
    struct raft_entry *e = calloc(n, sizeof(*e));
    if (!e)
        return RK_ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        uint8_t type;
        const void *d;
        if (!stor__rd_u64(r, &e[i].term) || !stor__rd_u64(r, &e[i].index) ||
            !stor__rd_u8(r, &type) || !stor__rd_u32(r, &e[i].len) ||
            !stor__rd_bytes(r, e[i].len, &d)) {
            free(e);
            return RK_EPROTO;
        }
        e[i].type = type;
        e[i].data = (void *)d;
    }
    *out = e;
    *n_out = n;
    return 0;
}

int stor__batch_decode(const void *buf, size_t len, struct stor_batch *b)
{
    struct stor__rd r = {.p = buf, .left = len};
    uint8_t ver;
    uint32_t n_ops;
    int rc = 0;
    stor_batch_reset(b);
    if (!stor__rd_u8(&r, &ver) || ver != REC_VERSION ||
        !stor__rd_u32(&r, &n_ops) || n_ops > r.left / 9)
        return RK_EPROTO;
    for (uint32_t i = 0; i < n_ops && rc == 0; i++) {
        uint8_t kind;
        uint64_t shard;
        if (!stor__rd_u8(&r, &kind) || !stor__rd_u64(&r, &shard))
            return RK_EPROTO;
        switch (kind) {
        case BOP_CREATE:
        case BOP_CONF:
        case BOP_APPLIED_CONF: {
            struct raft_conf_state c;
            if (!stor__conf_decode(&r, &c))
                return RK_EPROTO;
            rc = kind == BOP_CREATE ? stor_batch_create_shard(b, shard, &c)
                 : kind == BOP_CONF ? stor_batch_set_conf(b, shard, &c)
                                    : stor_batch_set_applied_conf(b, shard, &c);
            break;
        }
        case BOP_DESTROY:
            rc = stor_batch_destroy_shard(b, shard);
            break;
        case BOP_APPEND:
        case BOP_APPLY: {
            struct raft_entry *e;
            uint32_t n;
            if ((rc = get_entries(&r, &e, &n)) != 0)
                return rc;
            rc = kind == BOP_APPEND ? stor_batch_append(b, shard, e, n)
                                    : stor_batch_apply(b, shard, e, n, NULL);
            free(e);
            break;
        }
        case BOP_HS: {
            struct raft_hard_state hs;
            if (!stor__rd_u64(&r, &hs.term) || !stor__rd_u64(&r, &hs.vote) ||
                !stor__rd_u64(&r, &hs.commit))
                return RK_EPROTO;
            rc = stor_batch_set_hard_state(b, shard, &hs);
            break;
        }
        case BOP_STAGE: {
            struct raft_snap_chunk c;
            uint8_t last;
            const void *d;
            memset(&c, 0, sizeof(c));
            if (!get_meta(&r, &c.meta) || !stor__rd_u32(&r, &c.seq) ||
                !stor__rd_u8(&r, &last) || last > 1 ||
                !stor__rd_u32(&r, &c.len) || !stor__rd_bytes(&r, c.len, &d))
                return RK_EPROTO;
            c.last = last;
            c.data = d;
            rc = stor_batch_stage_chunk(b, shard, &c, NULL);
            break;
        }
        case BOP_INSTALL: {
            struct raft_snapshot_meta m;
            if (!get_meta(&r, &m))
                return RK_EPROTO;
            rc = stor_batch_install_snapshot(b, shard, &m, NULL);
            break;
        }
        case BOP_COMPACT: {
            uint64_t idx;
            if (!stor__rd_u64(&r, &idx))
                return RK_EPROTO;
            rc = stor_batch_compact(b, shard, idx);
            break;
        }
        default:
            return RK_EPROTO;
        }
    }
    if (rc == RK_EINVAL)
        rc = RK_EPROTO; /* an op its add function refuses */
    if (rc == 0 && r.left != 0)
        rc = RK_EPROTO;
    return rc;
}

/* ----------------------------------------------------------- executing */

int stor__touch(struct stor *s, MDB_txn *txn, struct stor_batch *b,
                struct stor_shard *sh)
{
    if (sh->w_gen == s->gen)
        return sh->w_exists ? 0 : RK_EUNKNOWNSHARD;
    if (grow((void **)&b->touched, &b->cap_touched, b->n_touched + 1,
             sizeof(*b->touched)))
        return RK_ENOMEM;
    int rc = stor__w_load(s, txn, sh);
    if (rc == 0 || rc == RK_EUNKNOWNSHARD)
        b->touched[b->n_touched++] = sh;
    return rc;
}

/* tb owns the transaction's list of touched shards (the first batch of a
 * merged transaction); b holds the op's payload and results. */
static int exec_op(struct stor *s, MDB_txn *txn, struct stor_batch *tb,
                   struct stor_batch *b, struct bop *op)
{
    struct stor_shard *sh;
    const uint8_t *pl = b->arena + op->off;
    int rc;

    if (op->kind == BOP_CREATE) {
        rc = stor__shard_add(s, op->shard, &sh);
        if (rc)
            return rc;
        rc = stor__touch(s, txn, tb, sh);
        if (rc == 0)
            return RK_EEXIST;
        if (rc != RK_EUNKNOWNSHARD)
            return rc;
        const struct raft_conf_state *conf = (const void *)pl;
        memset(&sh->w, 0, sizeof(sh->w));
        sh->w.conf = *conf;
        sh->w.applied_conf = *conf;
        sh->w_exists = true;
        sh->w_dirty = true;
        sh->w_deleted = false;
        sh->w_last = 0;
        sh->w_last_term = 0;
        sh->compact_pending = false;
        return 0;
    }
    sh = stor__shard_find(s, op->shard);
    if (!sh)
        return RK_EUNKNOWNSHARD;
    rc = stor__touch(s, txn, tb, sh);
    if (rc)
        return rc;
    switch (op->kind) {
    case BOP_DESTROY:
        if ((rc = stor__del_range(txn, s->dbi_log, sh->id, NULL, 0, 0, NULL)) ||
            (rc = stor__del_range(txn, s->dbi_kv, sh->id, NULL, 0, 0, NULL)) ||
            (rc =
                 stor__del_range(txn, s->dbi_sess, sh->id, NULL, 0, 0, NULL)) ||
            (rc = stor__del_range(txn, s->dbi_stage, sh->id, NULL, 0, 0, NULL)))
            return rc;
        {
            uint8_t kb[8];
            stor__key_shard(kb, sh->id);
            MDB_val k = {.mv_size = 8, .mv_data = kb};
            int mrc = mdb_del(txn, s->dbi_state, &k, NULL);
            if (mrc)
                return stor__from_mdb(mrc);
        }
        sh->w_exists = false;
        sh->w_deleted = true;
        sh->w_dirty = false;
        sh->compact_pending = false;
        return 0;
    case BOP_APPEND:
        return stor__log_append(s, txn, sh, pl, op->n);
    case BOP_HS:
        memcpy(&sh->w.hs, pl, sizeof(sh->w.hs));
        sh->w_dirty = true;
        return 0;
    case BOP_CONF:
        memcpy(&sh->w.conf, pl, sizeof(sh->w.conf));
        /* A replica created empty (to join a group) learns the group's
         * bootstrap configuration with the leader's first append. Until
         * anything is applied, that is also the applied configuration the
         * CONF entries fold onto: folding them onto the empty one left a
         * replica promoted into {a, b, c} with {self} as its applied conf,
         * so after a restart (snapshot_meta's conf) it was a group of one
         * that elected itself and served its stale state. */
        if (sh->w.applied == 0 && sh->w.snap.index == 0)
            sh->w.applied_conf = sh->w.conf;
        sh->w_dirty = true;
        return 0;
    case BOP_APPLIED_CONF:
        memcpy(&sh->w.applied_conf, pl, sizeof(sh->w.applied_conf));
        sh->w_dirty = true;
        return 0;
    case BOP_STAGE: {
        struct raft_snap_chunk c;
        memcpy(&c, pl, sizeof(c));
        c.data = pl + sizeof(c);
        return stor__stage_chunk(s, txn, sh, &c, &op->status);
    }
    case BOP_INSTALL: {
        struct raft_snapshot_meta m;
        memcpy(&m, pl, sizeof(m));
        return stor__install(s, txn, sh, &m, &op->status);
    }
    case BOP_APPLY:
        for (uint32_t i = 0; i < op->n; i++) {
            const struct stor__bent *e = (const struct stor__bent *)pl;
            rc = stor__apply_entry(s, txn, sh, e->term, e->index, e->type,
                                   pl + sizeof(*e), e->len,
                                   &b->res[op->first_result + i]);
            if (rc)
                return rc;
            pl += stor__bent_size(e->len);
        }
        return 0;
    case BOP_COMPACT: {
        raft_index t = op->index < sh->w.applied ? op->index : sh->w.applied;
        if (t > sh->w.compact_target) {
            sh->w.compact_target = t;
            sh->w_dirty = true;
        }
        sh->compact_pending = sh->w.compact_target > sh->w.base_index;
        return 0;
    }
    default:
        return RK_EINVAL;
    }
}

/* True when the batch must be durable before it is reported done: it holds
 * a log append, a term or vote change, a membership change, a snapshot
 * stage/install, or creates or destroys a shard. Votes and acks rely on
 * those. A batch of applies, commit-index updates and compaction only needs
 * no durability: its entries are durable in the logs of a quorum and are
 * re-applied deterministically if a power loss undoes it. */
static bool batch_needs_sync(struct stor *s, const struct stor_batch *b)
{
    for (uint32_t i = 0; i < b->n_ops; i++) {
        const struct bop *op = &b->ops[i];
        if (op->kind == BOP_APPLY || op->kind == BOP_COMPACT)
            continue;
        if (op->kind != BOP_HS)
            return true;
        const struct stor_shard *sh = stor__shard_find(s, op->shard);
        struct raft_hard_state hs;
        memcpy(&hs, b->arena + op->off, sizeof(hs));
        if (!sh || !sh->c_hs_known || hs.term != sh->c_term ||
            hs.vote != sh->c_vote)
            return true;
    }
    return false;
}

/* A write transaction runs in phases so that several batches can share it
 * (see thread_exec): begin, the ops of each batch, the writes that follow
 * them (compaction steps, state records), commit. b->touched of the first
 * batch lists the shards the transaction touched. */
static int txn_begin(struct stor *s, struct stor_batch *tb, MDB_txn **txn)
{
    s->gen++;
    tb->n_touched = 0;
    s->w_batch = tb; /* stor__touch from an apply (stor_split.c) */
    int mrc = mdb_txn_begin(s->env, NULL, 0, txn);
    return mrc ? stor__from_mdb(mrc) : 0;
}

static int txn_ops(struct stor *s, MDB_txn *txn, struct stor_batch *tb,
                   struct stor_batch *b)
{
    for (uint32_t i = 0; i < b->n_ops; i++) {
        b->ops[i].status = 0;
        int rc = exec_op(s, txn, tb, b, &b->ops[i]);
        if (rc)
            return rc;
    }
    return 0;
}

/* Compaction steps (if compact) and the state record of every touched
 * shard that changed (written again, to the same value or a later one, when
 * a merged batch follows). */
static int txn_writes(struct stor *s, MDB_txn *txn, struct stor_batch *tb,
                      bool compact)
{
    int rc;
    /* Compaction proceeds in bounded steps, batch after batch: at most
     * STOR_COMPACT_STEP entries per shard and STOR__COMPACT_BUDGET in all. */
    uint64_t budget = compact ? STOR__COMPACT_BUDGET : 0;
    uint32_t ns = s->n_shards;
    for (uint32_t k = 0; k < ns && budget > 0; k++) {
        /* Round robin, so that no shard waits behind busier ones. */
        uint32_t i = (s->compact_next + k) % ns;
        struct stor_shard *sh = s->shards[i];
        s->compact_next = i + 1;
        if (!sh->compact_pending)
            continue;
        rc = stor__touch(s, txn, tb, sh);
        if (rc == RK_EUNKNOWNSHARD) {
            sh->compact_pending = false;
            continue;
        }
        if (rc)
            return rc;
        raft_index base0 = sh->w.base_index;
        if ((rc = stor__log_compact_step(s, txn, sh)))
            return rc;
        uint64_t done = sh->w.base_index - base0;
        budget = done >= budget ? 0 : budget - done;
    }
    for (uint32_t i = 0; i < tb->n_touched; i++) {
        struct stor_shard *sh = tb->touched[i];
        if (!sh->w_exists || !sh->w_dirty)
            continue;
        uint8_t kb[8], vb[STOR__STATE_MAX];
        stor__key_shard(kb, sh->id);
        MDB_val k = {.mv_size = 8, .mv_data = kb};
        MDB_val v = {.mv_size = stor__state_encode(&sh->w, vb), .mv_data = vb};
        int mrc = mdb_put(txn, s->dbi_state, &k, &v, 0);
        if (mrc)
            return stor__from_mdb(mrc);
    }
    return 0;
}

static void txn_abort(MDB_txn *txn, struct stor_batch *tb)
{
    mdb_txn_abort(txn);
    for (uint32_t i = 0; i < tb->n_touched; i++)
        tb->touched[i]->compact_pending = tb->touched[i]->c_compact_pending;
}

/* Commits (the txn is gone either way) and publishes the committed view.
 *
 * A lazy transaction (nothing in it needs durability, batch_needs_sync)
 * commits with MDB_NOMETASYNC: its data pages are still flushed, only the
 * meta page write is left to the next commit's flush (LMDB: "preserves ACI,
 * not D"). A system crash can then undo that last transaction only, never
 * corrupt the environment nor undo a synced one: the next synced commit
 * flushes the file (the unsynced meta page included) before writing its
 * own meta. Every state a power loss can leave is therefore a prefix of the
 * committed batches, as after a process crash. */
static int txn_commit(struct stor *s, MDB_txn *txn, struct stor_batch *tb,
                      bool lazy, uint32_t n_batches)
{
    /* LMDB 0.9 takes MDB_NOMETASYNC from the environment only (not from
     * mdb_txn_begin), at commit: set it for this commit alone. Only this
     * thread, holding write_mu, commits or changes flags. */
    if (lazy)
        mdb_env_set_flags(s->env, MDB_NOMETASYNC, 1);
    int mrc = mdb_txn_commit(txn);
    if (lazy)
        mdb_env_set_flags(s->env, MDB_NOMETASYNC, 0);
    if (mrc)
        return stor__from_mdb(mrc);
    /* Publish the committed view. */
    pthread_mutex_lock(&s->mu);
    for (uint32_t i = 0; i < tb->n_touched; i++) {
        struct stor_shard *sh = tb->touched[i];
        sh->exists = sh->w_exists;
        sh->base_index = sh->w.base_index;
        sh->base_term = sh->w.base_term;
        sh->first = sh->w.base_index + 1;
        sh->last = sh->w_last;
        sh->last_term = sh->w_last_term;
        sh->c_compact_pending = sh->compact_pending;
        sh->c_hs_known = sh->w_exists;
        sh->c_term = sh->w.hs.term;
        sh->c_vote = sh->w.hs.vote;
    }
    s->n_batches += n_batches;
    if (n_batches > 1)
        s->n_merged_batches += n_batches - 1;
    if (lazy)
        s->n_lazy_batches++;
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* Runs the batch in one write txn. *at_commit tells whether a failure came
 * from the commit itself. */
static int run_txn(struct stor *s, struct stor_batch *b, bool *at_commit)
{
    MDB_txn *txn;
    int rc;
    *at_commit = false;
    bool lazy = !s->no_sync && !batch_needs_sync(s, b);
    if ((rc = txn_begin(s, b, &txn)))
        return rc;
    if ((rc = txn_ops(s, txn, b, b)) || (rc = txn_writes(s, txn, b, true))) {
        txn_abort(txn, b);
        return rc;
    }
    *at_commit = true;
    /* The results are final from here on (no retry after this point): a
     * caller may use them while the commit and its sync run. */
    if (b->applied_cb != NULL && b->n_res > 0)
        b->applied_cb(b, 0, b->applied_arg);
    return txn_commit(s, txn, b, lazy, 1);
}

static bool is_caller_error(int rc)
{
    return rc == RK_EINVAL || rc == RK_ECOMPACTED || rc == RK_EUNKNOWNSHARD ||
           rc == RK_EEXIST || rc == RK_ENOMEM;
}

/* True when the data dir's file system has (almost) no space left. */
static bool disk_full(const struct stor *s)
{
    struct statvfs v;
    if (statvfs(s->path, &v) != 0)
        return false;
    return (uint64_t)v.f_bavail * v.f_frsize < ((uint64_t)1 << 20);
}

/* Failures of a batch: a caller error refuses it (nothing written); any
 * other puts the store into fail-stop. */
static int batch_failed(struct stor *s, struct stor_batch *b, int rc,
                        bool at_commit)
{
    if (rc == RK_EIO && disk_full(s))
        rc = RK_ENOSPC; /* LMDB reports a short write as EIO */
    if (rc && !is_caller_error(rc))
        stor__fail(s, rc, "%s a batch of %u ops: %s",
                   at_commit ? "committing" : "writing", b->n_ops,
                   rc == RK_ENOSPC && at_commit ? "the disk is full"
                                                : rk_strerror(rc));
    else if (rc)
        rk_log(RK_LOG_WARN, "storage %s: batch refused (%s), nothing written",
               s->path, rk_err_name(rc));
    return rc;
}

/* One batch in its own txn; the caller holds write_mu. */
static int batch_exec_locked(struct stor *s, struct stor_batch *b)
{
    int rc;
    bool at_commit;
    if (atomic_load(&s->failed))
        return RK_EFAILSTOP;
    size_t need = b->bytes * 2 + ((size_t)4 << 20);
    stor__maybe_grow(s, need, false);
    /* Each retry at least doubles the map, so this ends at max_map_size. */
    for (int attempt = 0;; attempt++) {
        rc = run_txn(s, b, &at_commit);
        if (rc != RK_ENOSPC || at_commit)
            break;
        /* The map is full (not the disk): grow it and run the batch again. */
        int grc =
            stor__maybe_grow(s, need << (attempt < 8 ? attempt : 8), true);
        if (grc) {
            stor__fail(s, RK_ENOSPC,
                       "the map reached its maximum size (%zu MiB)",
                       s->max_map_size >> 20);
            break;
        }
    }
    return batch_failed(s, b, rc, at_commit);
}

int stor__batch_exec(struct stor *s, struct stor_batch *b)
{
    pthread_mutex_lock(&s->write_mu);
    int rc = batch_exec_locked(s, b);
    pthread_mutex_unlock(&s->write_mu);
    return rc;
}

int stor_batch_commit(struct stor *s, struct stor_batch *b)
{
    return stor__batch_exec(s, b);
}

/* ------------------------------------------------------------- thread */

/* Pops the next queued batch, waiting until deadline (CLOCK_MONOTONIC) at
 * most; NULL if none came or the store is closing. */
static struct stor_batch *queue_pop_until(struct stor *s,
                                          const struct timespec *deadline)
{
    pthread_mutex_lock(&s->q_mu);
    while (!s->q_head && !s->q_stop && !s->q_nudge) {
        if (pthread_cond_timedwait(&s->q_cv, &s->q_mu, deadline) != 0)
            break;
    }
    s->q_nudge = false;
    struct stor_batch *b = s->q_head;
    if (b) {
        s->q_head = b->q_next;
        if (!s->q_head)
            s->q_tail = NULL;
    }
    pthread_mutex_unlock(&s->q_mu);
    return b;
}

/* Runs a submitted batch and calls its done cb (and those of the batches
 * merged into it).
 *
 * A batch that needs no durability (applies, commit index, compaction:
 * batch_needs_sync) does not commit at once. Its ops run, its applied cb
 * reports the results (status STOR_APPLIED_LAZY), and the transaction stays
 * open for up to STOR__MERGE_WAIT_US for the next submitted batch, whose ops
 * then run in the same transaction; one commit (and one sync, if any merged
 * batch needs it) then covers all of them. Without this a lone apply pays a
 * flush of its own, and a follower's next append waits behind the flush of
 * the previous apply. Done cbs still come only after the commit (and its
 * sync): what a batch reports as durable is. If anything fails before the
 * commit, the transaction is aborted and every batch runs again alone (the
 * same ops on the same state give the same results). */
static void thread_exec(struct stor *s, struct stor_batch *first)
{
    struct stor_batch *list[STOR__MERGE_MAX];
    int rcs[STOR__MERGE_MAX];
    uint32_t n = 0;
    MDB_txn *txn;
    int rc;

    pthread_mutex_lock(&s->write_mu);
    if (atomic_load(&s->failed) || first->applied_cb == NULL || s->no_sync ||
        batch_needs_sync(s, first)) {
        rc = batch_exec_locked(s, first);
        pthread_mutex_unlock(&s->write_mu);
        first->cb(first, rc, first->arg);
        return;
    }
    size_t need = first->bytes * 2 + ((size_t)4 << 20);
    stor__maybe_grow(s, need, false);
    if ((rc = txn_begin(s, first, &txn)) != 0) {
        rc = batch_exec_locked(s, first);
        pthread_mutex_unlock(&s->write_mu);
        first->cb(first, rc, first->arg);
        return;
    }
    list[n++] = first;
    if ((rc = txn_ops(s, txn, first, first)) == 0 &&
        (rc = txn_writes(s, txn, first, true)) == 0)
        first->applied_cb(first, STOR_APPLIED_LAZY, first->applied_arg);
    bool lazy = true;
    size_t bytes = first->bytes;
    struct timespec deadline;
    clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_nsec += STOR__MERGE_WAIT_US * 1000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec++;
        deadline.tv_nsec -= 1000000000L;
    }
    while (rc == 0 && lazy && n < STOR__MERGE_MAX &&
           bytes < STOR__MERGE_MAX_BYTES) {
        struct stor_batch *b = queue_pop_until(s, &deadline);
        if (b == NULL)
            break;
        list[n++] = b;
        bytes += b->bytes;
        lazy = !batch_needs_sync(s, b);
        if ((rc = txn_ops(s, txn, first, b)) != 0)
            break;
        /* A lazy one may in turn wait for the next (same deadline). */
        if (b->applied_cb != NULL && (lazy || b->n_res > 0))
            b->applied_cb(b, lazy ? STOR_APPLIED_LAZY : 0, b->applied_arg);
    }
    if (rc == 0 && n > 1)
        rc = txn_writes(s, txn, first, false);
    if (rc != 0) {
        txn_abort(txn, first);
        for (uint32_t i = 0; i < n; i++)
            rcs[i] = batch_exec_locked(s, list[i]);
    } else {
        rc = txn_commit(s, txn, first, lazy, n);
        if (rc != 0)
            rc = batch_failed(s, first, rc, true);
        for (uint32_t i = 0; i < n; i++)
            rcs[i] = rc;
    }
    pthread_mutex_unlock(&s->write_mu);
    for (uint32_t i = 0; i < n; i++)
        list[i]->cb(list[i], rcs[i], list[i]->arg);
}

static void *thread_main(void *arg)
{
    struct stor *s = arg;
    pthread_mutex_lock(&s->q_mu);
    for (;;) {
        while (!s->q_head && !s->q_stop)
            pthread_cond_wait(&s->q_cv, &s->q_mu);
        struct stor_batch *b = s->q_head;
        if (!b)
            break; /* stopping and drained */
        s->q_head = b->q_next;
        if (!s->q_head)
            s->q_tail = NULL;
        pthread_mutex_unlock(&s->q_mu);
        thread_exec(s, b);
        pthread_mutex_lock(&s->q_mu);
    }
    pthread_mutex_unlock(&s->q_mu);
    return NULL;
}

int stor__thread_start(struct stor *s)
{
    if (pthread_create(&s->thread, NULL, thread_main, s) != 0)
        return RK_ENOMEM;
    s->thread_started = true;
    return 0;
}

void stor__thread_stop(struct stor *s)
{
    if (!s->thread_started)
        return;
    pthread_mutex_lock(&s->q_mu);
    s->q_stop = true;
    pthread_cond_signal(&s->q_cv);
    pthread_mutex_unlock(&s->q_mu);
    pthread_join(s->thread, NULL);
    s->thread_started = false;
}

void stor_commit_now(struct stor *s)
{
    pthread_mutex_lock(&s->q_mu);
    s->q_nudge = true;
    pthread_cond_signal(&s->q_cv);
    pthread_mutex_unlock(&s->q_mu);
}

void stor_batch_on_applied(struct stor_batch *b, stor_done_cb cb, void *arg)
{
    b->applied_cb = cb;
    b->applied_arg = arg;
}

int stor_batch_submit(struct stor *s, struct stor_batch *b, stor_done_cb cb,
                      void *arg)
{
    if (!b || !cb)
        return RK_EINVAL;
    if (atomic_load(&s->failed))
        return RK_EFAILSTOP;
    b->cb = cb;
    b->arg = arg;
    b->q_next = NULL;
    pthread_mutex_lock(&s->q_mu);
    if (s->q_stop) {
        pthread_mutex_unlock(&s->q_mu);
        return RK_ESHUTDOWN;
    }
    if (s->q_tail)
        s->q_tail->q_next = b;
    else
        s->q_head = b;
    s->q_tail = b;
    pthread_cond_signal(&s->q_cv);
    pthread_mutex_unlock(&s->q_mu);
    return 0;
}
