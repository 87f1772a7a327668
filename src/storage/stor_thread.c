/* Batches: built by the caller, run on the storage thread (WAL + LMDB). */
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
    bool force_ckpt; /* stor_batch_commit: checkpoint right after it */
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

/* An op's payload in the arena; NULL for a batch whose ops carry none (a
 * batch of DESTROYs has no arena, and NULL + 0 is undefined). */
static const uint8_t *op_payload(const struct stor_batch *b,
                                 const struct bop *op)
{
    return b->arena ? b->arena + op->off : NULL;
}

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
        const uint8_t *pl = op_payload(b, op);
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

/* ----------------------------------------------------------- executing
 *
 * THE WRITE PATH. Batches run on the storage thread in ONE LMDB write
 * transaction that stays open across batches (s->open_txn). Each batch:
 *
 *   1. its ops run in the open transaction itself; a batch refused for a
 *      caller error (RK_EINVAL, RK_ECOMPACTED, RK_EUNKNOWNSHARD, RK_EEXIST,
 *      RK_ENOMEM) or a full map drops the open transaction, which is
 *      rebuilt from the WAL records since the checkpoint (undo_open), so it
 *      fails alone, as when each batch had a transaction of its own (a
 *      nested transaction per batch cost ~25% of the storage thread at 64
 *      shards; only the replay at open uses one per record);
 *   2. its WAL record (stor__batch_encode: the ops) is appended;
 *   3. a batch that needs durability (batch_needs_sync) is done after one
 *      sync of the WAL (stor__wal_sync), shared by every batch waiting in
 *      the queue (at most STOR__GROUP_MAX); one that does not is done
 *      without it, once written (stor__wal_write: a process crash keeps
 *      it; a later sync covers it, and a power loss can only lose a suffix
 *      of the WAL: re-applied from the Raft log, as before);
 *   4. then its changes become visible to readers (stor_overlay.c) and the
 *      shards' first/last index views are updated.
 *
 * A CHECKPOINT commits the open transaction (without a sync: the sync
 * thread makes it durable, stor_durable.c) with the lsn of the last record
 * it covers in `meta` (STOR__META_WAL_LSN) and drops the overlay and log
 * tails; once it is durable the WAL segments below it are released. It
 * runs every s->ckpt_every_us (stor_opts.checkpoint_ms, default 1 s)
 * or STOR__CKPT_BYTES of WAL, at once after a batch that creates or
 * destroys a shard, installs a snapshot or applies a SPLIT
 * (s->w_force_ckpt) or comes from stor_batch_commit, when a reader
 * of LMDB only asks (stor__checkpoint_wait), and at close. stor_open
 * replays the WAL from the checkpoint's lsn (stor__wal_recover).
 *
 * LMDB allows no map growth while a write transaction is open: the map
 * grows between checkpoints, and a batch that fills the map is rolled
 * back, the transaction checkpointed, the map grown and the batch run
 * again.
 */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int stor__touch(struct stor *s, MDB_txn *txn, struct stor_batch *b,
                struct stor_shard *sh)
{
    if (sh->t_seq != s->bseq) {
        if (grow((void **)&b->touched, &b->cap_touched, b->n_touched + 1,
                 sizeof(*b->touched)))
            return RK_ENOMEM;
        sh->t_seq = s->bseq;
        sh->t_compact_pending = sh->compact_pending;
        b->touched[b->n_touched++] = sh;
    }
    return stor__w_load(s, txn, sh);
}

static int exec_op(struct stor *s, MDB_txn *txn, struct stor_batch *b,
                   struct bop *op)
{
    struct stor_shard *sh;
    const uint8_t *pl = op_payload(b, op);
    int rc;

    if (op->kind == BOP_CREATE) {
        rc = stor__shard_add(s, op->shard, &sh);
        if (rc)
            return rc;
        rc = stor__touch(s, txn, b, sh);
        if (rc == 0)
            return RK_EEXIST;
        if (rc != RK_EUNKNOWNSHARD)
            return rc;
        s->w_force_ckpt = true; /* stor_shard_load reads LMDB */
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
    sh = stor__shard_find_w(s, op->shard);
    if (!sh)
        return RK_EUNKNOWNSHARD;
    rc = stor__touch(s, txn, b, sh);
    if (rc)
        return rc;
    switch (op->kind) {
    case BOP_DESTROY:
        s->w_force_ckpt = true; /* the overlay cannot say "all gone" */
        s->sp_epoch++; /* the split record goes with the kv */
        if ((rc = stor__log_drop(s, txn, sh)) ||
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
        s->w_force_ckpt = true; /* kv, sessions and log replaced */
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
        const struct stor_shard *sh = stor__shard_find_w(s, op->shard);
        struct raft_hard_state hs;
        memcpy(&hs, b->arena + op->off, sizeof(hs));
        if (!sh || !sh->c_hs_known || hs.term != sh->c_term ||
            hs.vote != sh->c_vote)
            return true;
    }
    return false;
}

static int txn_ops(struct stor *s, MDB_txn *txn, struct stor_batch *b)
{
    for (uint32_t i = 0; i < b->n_ops; i++) {
        b->ops[i].status = 0;
        int rc = exec_op(s, txn, b, &b->ops[i]);
        if (rc)
            return rc;
    }
    return 0;
}

/* Compaction steps and the state record of every shard the batch changed. */
static int txn_writes(struct stor *s, MDB_txn *txn, struct stor_batch *b)
{
    int rc;
    /* Compaction proceeds in bounded steps, batch after batch: at most
     * STOR_COMPACT_STEP entries per shard and STOR__COMPACT_BUDGET in all. */
    uint64_t budget = STOR__COMPACT_BUDGET;
    uint32_t ns = s->n_shards;
    for (uint32_t k = 0; k < ns && budget > 0; k++) {
        /* Round robin, so that no shard waits behind busier ones. */
        uint32_t i = (s->compact_next + k) % ns;
        struct stor_shard *sh = s->shards[i];
        s->compact_next = i + 1;
        if (!sh->compact_pending)
            continue;
        rc = stor__touch(s, txn, b, sh);
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
    for (uint32_t i = 0; i < b->n_touched; i++) {
        struct stor_shard *sh = b->touched[i];
        if (!sh->w_exists || !sh->w_dirty)
            continue;
        uint8_t kb[8], vb[STOR__STATE_MAX];
        stor__key_shard(kb, sh->id);
        MDB_val k = {.mv_size = 8, .mv_data = kb};
        MDB_val v = {.mv_size = stor__state_encode(&sh->w, vb), .mv_data = vb};
        int mrc = mdb_put(txn, s->dbi_state, &k, &v, 0);
        if (mrc)
            return stor__from_mdb(mrc);
        sh->w_dirty = false;
    }
    return 0;
}

/* Publishes a shard's view (first/last index, existence) from its working
 * state. Caller holds s->mu. */
static void publish(struct stor_shard *sh)
{
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

/* Begins the open transaction if there is none (growing the map first if
 * the next one could fill it). */
static int open_begin(struct stor *s, size_t batch_bytes)
{
    if (s->open_txn)
        return 0;
    /* Room for about what the last transaction wrote, twice: a commit
     * that runs out of map costs a rerun of the WAL (checkpoint). */
    size_t need = batch_bytes * 2 + (size_t)s->prev_txn_wal_bytes * 4 +
                  ((size_t)4 << 20);
    stor__maybe_grow(s, need, false);
    s->gen++;
    /* The writer tails belong to the transaction before (written by its
     * checkpoint, or gone with it). */
    stor__log_wt_reset(s);
    int mrc = mdb_txn_begin(s->env, NULL, 0, &s->open_txn);
    if (mrc) {
        s->open_txn = NULL;
        return stor__from_mdb(mrc);
    }
    s->open_since_us = now_us();
    s->open_wal_bytes = 0;
    return 0;
}

/* Wakes whoever waits for a checkpoint (it came, or never will). */
static void ckpt_wake(struct stor *s, bool done)
{
    pthread_mutex_lock(&s->q_mu);
    if (done) {
        s->ckpt_count++;
        s->ckpt_req = false;
    }
    s->dirty = s->open_txn != NULL;
    pthread_cond_broadcast(&s->ckpt_cv);
    pthread_mutex_unlock(&s->q_mu);
}

/* Writes the WAL position into the open transaction and commits it; the
 * transaction is gone either way. Returns LMDB's code. */
static int commit_open(struct stor *s)
{
    uint8_t vb[8];
    stor__put64(vb, s->open_lsn);
    MDB_val k = {.mv_size = sizeof(STOR__META_WAL_LSN) - 1,
                 .mv_data = (void *)STOR__META_WAL_LSN};
    MDB_val v = {.mv_size = 8, .mv_data = vb};
    /* The log entries of the transaction, as chunks (stor_log.c). */
    int mrc = stor__log_flush(s, s->open_txn);
    if (mrc == 0)
        mrc = mdb_put(s->open_txn, s->dbi_meta, &k, &v, 0);
    /* Committed without a sync: the sync thread makes it durable
     * (stor_durable.c). At open and in a rerun LMDB syncs as before.
     * LMDB 0.9.24's commit syncs unless the ENV has MDB_NOSYNC (a txn's
     * flag does not stop it), and mdb_env_set_flags may change it between
     * transactions; only this thread changes the env's flags. */
    bool nosync = s->dur_started && !s->w_replaying && !s->no_sync;
    if (mrc) {
        mdb_txn_abort(s->open_txn);
    } else {
        if (nosync)
            mdb_env_set_flags(s->env, MDB_NOSYNC, 1);
        mrc = mdb_txn_commit(s->open_txn);
        if (nosync)
            mdb_env_set_flags(s->env, MDB_NOSYNC, 0);
    }
    s->open_txn = NULL;
    return mrc;
}

static int rerun_wal(struct stor *s);
static int write_failed(struct stor *s, int rc, const char *what,
                        const char *detail);
static bool disk_full(const struct stor *s);

/* Commits the open transaction as a checkpoint (see the top). */
static int checkpoint(struct stor *s)
{
    if (!s->open_txn)
        return 0;
    uint64_t t0 = now_us();
    uint64_t txn_wal = s->open_wal_bytes;
    /* One checkpoint at most is not durable (stor_durable.c): the
     * previous one's sync must be done before this commit. */
    int rc = stor__dur_reap(s, true);
    if (rc)
        return rc;
    uint64_t txn_id = mdb_txn_id(s->open_txn);
    int mrc = commit_open(s);
    /* The commit itself ran out of map (LMDB's free list is written at
     * commit): that transaction is lost, but its batches are in the WAL.
     * Grow the map, run them again, commit again. */
    for (int attempt = 0; mrc == MDB_MAP_FULL && !s->w_replaying; attempt++) {
        rc = stor__maybe_grow(s, s->map_size, true);
        if (rc == RK_ENOSPC && !disk_full(s))
            return write_failed(s, RK_ENOSPC, "growing the map",
                                "the map reached its maximum size");
        if (rc == 0)
            rc = rerun_wal(s);
        if (rc)
            return rc == RK_ENOSPC && attempt == 0 ? RK_ENOSPC : rc;
        rk_log(RK_LOG_INFO,
               "storage %s: checkpoint ran out of map; grown to %zu MiB and "
               "rerun from the WAL",
               s->path, s->map_size >> 20);
        txn_id = 0;
        if (s->open_txn) {
            if ((rc = stor__dur_reap(s, true)) != 0)
                return rc;
            txn_id = mdb_txn_id(s->open_txn);
            mrc = commit_open(s);
        } else {
            mrc = 0;
        }
    }
    if (mrc)
        return stor__from_mdb(mrc);
    s->prev_txn_wal_bytes = txn_wal;
    s->compact_held = false;
    uint64_t took = now_us() - t0;
    s->ckpt_lsn = s->open_lsn;
    s->ckpt_deferring = false;
    if (txn_id && (rc = stor__dur_submit(s, txn_id, s->ckpt_lsn)) != 0)
        return rc;
    for (uint32_t i = 0; i < s->n_shards; i++) {
        struct stor_shard *sh = s->shards[i];
        if (sh->w_gen == s->gen && sh->w_exists)
            sh->ck_applied = sh->w.applied;
    }
    if (s->w_rerun) {
        /* Part of a rerun: the overlay still has the rest (and all of what
         * this commit holds), so it stands on this commit as well. */
        stor__overlay_rebase(s);
        return 0;
    }
    /* Only now, after the commit (see READER RACE in stor_overlay.c). */
    stor__pend_drop(s);
    stor__overlay_clear(s);
    pthread_mutex_lock(&s->mu);
    s->n_checkpoints++;
    s->ckpt_us += took;
    pthread_mutex_unlock(&s->mu);
    ckpt_wake(s, true);
    /* The WAL below it is recycled once it is durable (stor__dur_reap). */
    return 0;
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

/* Enters fail-stop for a failure of `what`; the open transaction is
 * dropped (never checkpointed). Returns the error. */
static int write_failed(struct stor *s, int rc, const char *what,
                        const char *detail)
{
    if (rc == RK_EIO && disk_full(s))
        rc = RK_ENOSPC; /* LMDB reports a short write as EIO */
    stor__fail(s, rc, "%s: %s", what,
               detail ? detail
               : rc == RK_ENOSPC ? "the disk is full"
                                 : rk_strerror(rc));
    if (s->open_txn) {
        mdb_txn_abort(s->open_txn);
        s->open_txn = NULL;
    }
    ckpt_wake(s, false);
    return rc;
}

/* Rolls back a batch refused while replaying (its nested txn is gone):
 * the shards it touched reload their working state from the open txn. */
static void rollback(struct stor *s, struct stor_batch *b,
                     const struct stor__pend_mark *m)
{
    stor__log_undo(s); /* the writer tails first: stor__w_load uses them */
    for (uint32_t i = 0; i < b->n_touched; i++) {
        struct stor_shard *sh = b->touched[i];
        sh->compact_pending = sh->t_compact_pending;
        sh->w_gen = 0;
        if (s->open_txn)
            (void)stor__w_load(s, s->open_txn, sh);
    }
    stor__pend_rollback(s, m);
    s->w_force_ckpt = false;
}

/* Undoes a batch that failed in the open transaction: the transaction is
 * dropped and rebuilt from the WAL records after the last checkpoint (the
 * batches before this one; the failed batch has none). A failure is rare
 * (a driver bug, or a full map), so the batches pay no nested transaction
 * for it. */
static int undo_open(struct stor *s, struct stor_batch *b)
{
    mdb_txn_abort(s->open_txn);
    s->open_txn = NULL;
    for (uint32_t i = 0; i < b->n_touched; i++)
        b->touched[i]->compact_pending = b->touched[i]->t_compact_pending;
    return rerun_wal(s);
}

/* A nested batch of the replay writes its log entries into its own
 * transaction (stor_log.c: why). */
static int spill_touched(struct stor *s, MDB_txn *txn, struct stor_batch *b)
{
    for (uint32_t i = 0; i < b->n_touched; i++) {
        int rc = stor__log_spill(s, txn, b->touched[i]);
        if (rc)
            return rc;
    }
    return 0;
}

/* Runs batch b in the open transaction and appends its record (already
 * encoded in s->rec) to the WAL. *fatal: the failure is not the batch's
 * (nothing can be written any more). While replaying, each batch runs in
 * a nested transaction instead, so that one that fails (a full map) rolls
 * back alone and what ran before it can be checkpointed. */
static int exec_one(struct stor *s, struct stor_batch *b, bool lazy,
                    bool *fatal)
{
    MDB_txn *txn;
    struct stor__pend_mark mark;
    int rc, mrc;
    bool nested = s->w_replaying;
    *fatal = false;
    s->bseq++;
    b->n_touched = 0;
    s->w_batch = b;
    s->w_force_ckpt = b->force_ckpt;
    if ((rc = open_begin(s, b->bytes)) != 0) {
        *fatal = true;
        return rc;
    }
    txn = s->open_txn;
    if (nested && (mrc = mdb_txn_begin(s->env, s->open_txn, 0, &txn)) != 0) {
        *fatal = true;
        return stor__from_mdb(mrc);
    }
    if (nested) {
        /* The writer's caches describe the open transaction as its own
         * batches left it: a nested one changes it behind them. */
        s->sp_epoch++;
        stor__log_undo_begin(s);
    }
    stor__pend_mark(s, &mark);
    if ((rc = txn_ops(s, txn, b)) != 0 || (rc = txn_writes(s, txn, b)) != 0 ||
        (nested && (rc = spill_touched(s, txn, b)) != 0)) {
        if (nested) {
            mdb_txn_abort(txn);
            rollback(s, b, &mark);
            return rc;
        }
        stor__pend_rollback(s, &mark);
        s->w_force_ckpt = false;
        if (!is_caller_error(rc) && rc != RK_ENOSPC)
            return rc; /* fail-stop (run_batch): the txn is dropped */
        int urc = undo_open(s, b);
        if (urc) {
            *fatal = true;
            return urc;
        }
        return rc;
    }
    if (nested && (mrc = mdb_txn_commit(txn)) != 0) {
        /* The parent cannot be trusted after a failed nested commit. */
        *fatal = true;
        return stor__from_mdb(mrc);
    }
    if (!s->w_replaying) {
        pthread_mutex_lock(&s->q_mu);
        s->dirty = true; /* LMDB-only readers wait for a checkpoint */
        pthread_mutex_unlock(&s->q_mu);
    }
    if (!s->w_replaying) {
        uint64_t lsn;
        rc = stor__wal_append(s->wal, s->rec.data, s->rec.len, &lsn);
        if (rc) {
            *fatal = true;
            write_failed(s, rc, "appending to the WAL",
                         stor__wal_errmsg(s->wal));
            return rc;
        }
        s->open_lsn = lsn;
        s->open_wal_bytes += s->rec.len;
        /* The results are final: a caller may use them while the sync
         * runs (stor_batch_on_applied). */
        if (b->applied_cb != NULL && (b->n_res > 0 || lazy))
            b->applied_cb(b, lazy ? STOR_APPLIED_LAZY : 0, b->applied_arg);
    }
    return 0;
}

/* Queued batches handled together: one WAL sync for all. */
struct grp {
    struct stor_batch *b[STOR__GROUP_MAX];
    int rc[STOR__GROUP_MAX];
    bool needs[STOR__GROUP_MAX]; /* batch_needs_sync */
    uint32_t n;
    uint32_t fin; /* batches before it are finished */
    bool need_sync;
};

static bool ckpt_due(struct stor *s)
{
    if (!s->open_txn)
        return false;
    pthread_mutex_lock(&s->q_mu);
    bool req = s->ckpt_req || s->q_stop;
    bool busy = s->dur_job && !s->dur_done;
    pthread_mutex_unlock(&s->q_mu);
    if (req)
        return true;
    uint64_t age = now_us() - s->open_since_us;
    bool due = s->open_wal_bytes >= STOR__CKPT_BYTES ||
               age >= s->ckpt_every_us ||
               (s->compact_held && age >= STOR__CKPT_COMPACT_US &&
                s->open_wal_bytes <= STOR__CKPT_COMPACT_BYTES);
    /* The previous checkpoint's sync still runs: this one comes when it
     * ends (the sync thread wakes the idle writer), not now with the
     * writer waiting for it; but not later than 4 intervals or twice the
     * WAL bytes (a sync starved by other I/O then holds the writer, not
     * an ever larger open transaction and WAL). */
    bool overdue = age >= 4 * s->ckpt_every_us ||
                   s->open_wal_bytes >= 2 * (uint64_t)STOR__CKPT_BYTES;
    if (due && busy && !overdue) {
        if (!s->ckpt_deferring) {
            s->ckpt_deferring = true;
            pthread_mutex_lock(&s->q_mu);
            s->n_dur_deferred++;
            pthread_mutex_unlock(&s->q_mu);
        }
        return false;
    }
    return due;
}

/* Finishes batches [g->fin, upto): one WAL sync if any needs it, then
 * their changes become visible and their shards' views are published; a
 * checkpoint follows if `force` or due. */
static void grp_finish(struct stor *s, struct grp *g, uint32_t upto,
                       bool force)
{
    int rc = atomic_load(&s->failed);
    uint32_t from = g->fin;
    uint32_t n_sync = 0;
    g->fin = upto;
    for (uint32_t i = from; i < upto; i++)
        n_sync += g->rc[i] == 0 && g->needs[i];
    /* A batch followed by a checkpoint at once (shard create/destroy,
     * install, SPLIT, stor_batch_commit) is made durable by a WAL sync, as
     * the checkpoint's own sync did before it went to the sync thread:
     * its callers may rely on it. */
    if (rc == 0 && (g->need_sync || force)) {
        if ((rc = stor__wal_sync(s->wal)) != 0)
            write_failed(s, rc, "syncing the WAL", stor__wal_errmsg(s->wal));
    } else if (rc == 0) {
        /* Done without a sync, but written: a process crash keeps it. */
        if ((rc = stor__wal_write(s->wal)) != 0)
            write_failed(s, rc, "writing the WAL", stor__wal_errmsg(s->wal));
    }
    g->need_sync = false;
    if (rc == 0) {
        /* A checkpoint before publishing when the changes cannot all be
         * shown from memory (a batch that forces one records nothing
         * more; the merge ran out of memory). */
        bool ck = force;
        if (ck)
            stor__pend_drop(s);
        else if (stor__pend_merge_kv(s) != 0)
            ck = true;
        if (ck && (rc = checkpoint(s)) != 0)
            write_failed(s, rc, "checkpoint", NULL);
        pthread_mutex_lock(&s->mu);
        /* Tails and views change together: a reader never sees a last
         * index whose entry is neither in the tail nor current in LMDB. */
        if (!ck && stor__pend_merge_log_locked(s) != 0) {
            pthread_mutex_unlock(&s->mu);
            ck = true;
            if ((rc = checkpoint(s)) != 0)
                write_failed(s, rc, "checkpoint", NULL);
            pthread_mutex_lock(&s->mu);
        }
        for (uint32_t i = from; i < upto; i++) {
            /* (Not after a failed checkpoint: it dropped the tails.) */
            if (g->rc[i] != 0 || rc != 0)
                continue;
            for (uint32_t j = 0; j < g->b[i]->n_touched; j++)
                publish(g->b[i]->touched[j]);
            s->n_batches++;
            if (!g->needs[i])
                s->n_lazy_batches++;
        }
        if (n_sync > 1)
            s->n_merged_batches += n_sync - 1;
        struct stor__wal_stats ws;
        stor__wal_stats(s->wal, &ws);
        s->n_wal_bytes = ws.bytes;
        s->n_wal_syncs = ws.syncs;
        s->n_wal_writes = ws.writes;
        s->n_wal_file_bytes = ws.file_bytes;
        s->wal_direct = ws.direct;
        pthread_mutex_unlock(&s->mu);
        if (rc == 0 && !ck && ckpt_due(s) && (rc = checkpoint(s)) != 0)
            write_failed(s, rc, "checkpoint", NULL);
        pthread_mutex_lock(&s->q_mu);
        s->dirty = s->open_txn != NULL;
        pthread_mutex_unlock(&s->q_mu);
    }
    if (rc != 0) {
        /* Nothing of these batches is reported durable (run_group says
         * which one gets the failure's code). */
        for (uint32_t i = from; i < upto; i++)
            if (g->rc[i] == 0)
                g->rc[i] = RK_EFAILSTOP;
    }
}

/* Runs g->b[i] (see the top); the map-full retry finishes what ran before
 * it and checkpoints. */
static int run_batch(struct stor *s, struct grp *g, uint32_t i)
{
    struct stor_batch *b = g->b[i];
    bool fatal;
    int rc;
    if (atomic_load(&s->failed))
        return RK_EFAILSTOP;
    bool needs = batch_needs_sync(s, b);
    bool lazy = !s->no_sync && !needs;
    g->needs[i] = needs;
    if ((rc = stor__batch_encode(b, &s->rec)) != 0)
        return rc;
    size_t need = b->bytes * 2 +
                  ((size_t)4 << 20);
    /* Each retry at least doubles the map, so this ends at max_map_size. */
    for (int attempt = 0;; attempt++) {
        rc = exec_one(s, b, lazy, &fatal);
        if (rc != RK_ENOSPC || fatal || disk_full(s))
            break;
        /* The map is full (not the disk): checkpoint, grow, run again. */
        grp_finish(s, g, i, true);
        if (atomic_load(&s->failed))
            return RK_EFAILSTOP;
        int grc =
            stor__maybe_grow(s, need << (attempt < 8 ? attempt : 8), true);
        if (grc) {
            write_failed(s, RK_ENOSPC, "growing the map",
                         "the map reached its maximum size");
            rk_log(RK_LOG_ERROR, "storage %s: map limit %zu MiB", s->path,
                   s->max_map_size >> 20);
            return RK_ENOSPC;
        }
    }
    if (rc == 0) {
        g->need_sync = g->need_sync || needs;
        return 0;
    }
    if (is_caller_error(rc) && !fatal) {
        rk_log(RK_LOG_WARN, "storage %s: batch refused (%s), nothing written",
               s->path, rk_err_name(rc));
        return rc;
    }
    if (!atomic_load(&s->failed))
        write_failed(s, rc, fatal ? "committing a batch" : "writing a batch",
                     NULL);
    return rc;
}

static void run_group(struct stor *s, struct grp *g)
{
    pthread_mutex_lock(&s->write_mu);
    /* (Also after a failure: a sync's end must be taken, or the idle
     * wait in thread_main would not wait.) */
    int drc = stor__dur_reap(s, false);
    if (drc)
        write_failed(s, drc, "checkpoint", NULL);
    g->fin = 0;
    g->need_sync = false;
    for (uint32_t i = 0; i < g->n; i++) {
        g->rc[i] = run_batch(s, g, i);
        if (g->rc[i] == 0 && s->w_force_ckpt)
            grp_finish(s, g, i + 1, true);
    }
    grp_finish(s, g, g->n, false);
    s->w_batch = NULL;
    if (atomic_load(&s->failed)) {
        /* The first batch to learn of the failure gets its code, every
         * later one RK_EFAILSTOP (refused batches keep their status). */
        for (uint32_t i = 0; i < g->n; i++) {
            if (g->rc[i] == 0 ||
                (is_caller_error(g->rc[i]) && g->rc[i] != RK_ENOMEM))
                continue;
            g->rc[i] = s->fail_reported ? RK_EFAILSTOP : stor_failed(s);
            s->fail_reported = true;
        }
    }
    pthread_mutex_unlock(&s->write_mu);
    for (uint32_t i = 0; i < g->n; i++)
        g->b[i]->cb(g->b[i], g->rc[i], g->b[i]->arg);
}

/* A checkpoint when one is due and no batch comes (or at close). */
static void idle_checkpoint(struct stor *s, bool closing)
{
    pthread_mutex_lock(&s->write_mu);
    int rc = stor__dur_reap(s, false);
    if (rc)
        write_failed(s, rc, "checkpoint", NULL);
    if (atomic_load(&s->failed) == 0 && (closing || ckpt_due(s))) {
        rc = checkpoint(s);
        if (rc)
            write_failed(s, rc, "checkpoint", NULL);
    }
    if (closing && atomic_load(&s->failed) == 0) {
        /* The last checkpoint durable, the marker CLEAN. */
        if ((rc = stor__dur_reap(s, true)) != 0)
            write_failed(s, rc, "checkpoint", NULL);
        else
            stor__dur_close(s);
    }
    if (closing && s->open_txn) {
        mdb_txn_abort(s->open_txn); /* failed before: never committed */
        s->open_txn = NULL;
    }
    pthread_mutex_unlock(&s->write_mu);
    ckpt_wake(s, false);
}

/* ------------------------------------------------------------- thread */

static void *thread_main(void *arg)
{
    struct stor *s = arg;
    struct grp g;
    pthread_mutex_lock(&s->q_mu);
    for (;;) {
        while (!s->q_head && !s->q_stop && !s->ckpt_req && !s->dur_done) {
            /* (dur_done: a checkpoint's sync ended, to be reaped.) */
            if (!s->dirty || (s->dur_job && !s->dur_done)) {
                /* Nothing open, or a checkpoint must wait for the running
                 * sync anyway (which wakes this thread when it ends). */
                pthread_cond_wait(&s->q_cv, &s->q_mu);
                continue;
            }
            /* Something is open: a checkpoint when it is due. */
            bool soon = s->compact_held &&
                        s->open_wal_bytes <= STOR__CKPT_COMPACT_BYTES;
            uint64_t at = s->open_since_us +
                          (soon ? STOR__CKPT_COMPACT_US : s->ckpt_every_us);
            struct timespec ts = {.tv_sec = (time_t)(at / 1000000u),
                                  .tv_nsec = (long)(at % 1000000u) * 1000};
            if (pthread_cond_timedwait(&s->q_cv, &s->q_mu, &ts) != 0)
                break;
        }
        g.n = 0;
        while (s->q_head && g.n < STOR__GROUP_MAX) {
            struct stor_batch *b = s->q_head;
            s->q_head = b->q_next;
            if (!s->q_head)
                s->q_tail = NULL;
            g.b[g.n++] = b;
        }
        bool stop = s->q_stop && g.n == 0;
        pthread_mutex_unlock(&s->q_mu);
        if (g.n > 0)
            run_group(s, &g);
        else
            idle_checkpoint(s, stop);
        pthread_mutex_lock(&s->q_mu);
        if (stop)
            break;
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

void stor__checkpoint_wait(struct stor *s)
{
    pthread_mutex_lock(&s->q_mu);
    if (s->dirty && s->thread_started && !s->q_stop) {
        uint64_t target = s->ckpt_count + 1;
        s->ckpt_req = true;
        pthread_cond_signal(&s->q_cv);
        while (s->ckpt_count < target && s->dirty &&
               atomic_load(&s->failed) == 0)
            pthread_cond_wait(&s->ckpt_cv, &s->q_mu);
    }
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
    pthread_mutex_unlock(&s->q_mu);
    /* Signalled after the unlock: a storage thread woken while the loop
     * still holds q_mu would only block on it again (one more futex wake
     * and two more context switches per batch). It cannot miss the batch:
     * it looks at q_head under q_mu before every wait, and s (with q_cv)
     * outlives every submit. */
    pthread_cond_signal(&s->q_cv);
    return 0;
}

/* stor_batch_commit: the batch goes through the storage thread like any
 * other (LMDB wants a write transaction to end on the thread that began
 * it), with a checkpoint right after it, and the caller waits. */
struct commit_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int rc;
};

static void commit_done_cb(struct stor_batch *b, int status, void *arg)
{
    struct commit_wait *w = arg;
    (void)b;
    pthread_mutex_lock(&w->mu);
    w->rc = status;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int stor_batch_commit(struct stor *s, struct stor_batch *b)
{
    struct commit_wait w = {.mu = PTHREAD_MUTEX_INITIALIZER,
                            .cv = PTHREAD_COND_INITIALIZER};
    stor_done_cb acb = b->applied_cb;
    b->applied_cb = NULL;
    b->force_ckpt = true;
    int rc = stor_batch_submit(s, b, commit_done_cb, &w);
    if (rc == 0) {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        rc = w.rc;
    }
    b->force_ckpt = false;
    b->applied_cb = acb;
    return rc;
}

/* --------------------------------------------------------- WAL replay */

struct replay_ctx {
    struct stor *s;
    struct stor_batch *b;
    char *errmsg;
    uint64_t n;
};

static int replay_cb(void *arg, uint64_t lsn, const void *p, size_t len)
{
    struct replay_ctx *c = arg;
    struct stor *s = c->s;
    bool fatal;
    int rc = stor__batch_decode(p, len, c->b);
    if (rc) {
        rk_errf(c->errmsg,
                "data dir %s: WAL record %llu does not decode (%s): the WAL "
                "is damaged",
                s->path, (unsigned long long)lsn, rk_err_name(rc));
        return rc == RK_ENOMEM ? rc : RK_ECORRUPT;
    }
    for (int attempt = 0;; attempt++) {
        rc = exec_one(s, c->b, true, &fatal);
        if (rc != RK_ENOSPC || fatal || attempt >= 12)
            break;
        /* The map is full: commit what was replayed, grow, go on. */
        if ((rc = checkpoint(s)) != 0)
            break;
        if ((rc = stor__maybe_grow(s, (size_t)64 << (20 + attempt), true)))
            break;
    }
    if (rc) {
        rk_errf(c->errmsg,
                "data dir %s: replaying WAL record %llu failed (%s); the WAL "
                "and the data do not match",
                s->path, (unsigned long long)lsn, rk_err_name(rc));
        return is_caller_error(rc) && rc != RK_ENOMEM ? RK_ECORRUPT : rc;
    }
    s->open_lsn = lsn;
    if (!s->w_rerun) {
        /* (A rerun rebuilds batches already shown, or shown by their
         * group's finish once synced.) */
        pthread_mutex_lock(&s->mu);
        for (uint32_t j = 0; j < c->b->n_touched; j++)
            publish(c->b->touched[j]);
        pthread_mutex_unlock(&s->mu);
    }
    c->n++;
    return 0;
}

/* Runs the WAL records after the last checkpoint again in a new open
 * transaction (after a checkpoint commit that failed for lack of map). */
static int rerun_wal(struct stor *s)
{
    char err[RK_ERRMSG_SIZE] = "";
    struct replay_ctx c = {.s = s, .errmsg = err};
    uint64_t want = s->open_lsn, last;
    int rc = stor_batch_new(&c.b);
    if (rc)
        return rc;
    struct stor_batch *wb = s->w_batch;
    s->open_lsn = s->ckpt_lsn;
    s->w_replaying = true;
    s->w_rerun = true;
    rc = stor__wal_replay(s->wal, s->ckpt_lsn, replay_cb, &c, &last);
    s->w_replaying = false;
    s->w_rerun = false;
    s->w_batch = wb;
    stor_batch_free(c.b);
    if (rc == 0 && s->open_lsn != want) {
        rk_errf(err, "the WAL ends at %llu, not %llu",
                (unsigned long long)s->open_lsn, (unsigned long long)want);
        rc = RK_ECORRUPT;
    }
    if (rc)
        rk_log(RK_LOG_ERROR, "storage %s: rerunning the WAL: %s", s->path,
               err[0] ? err : stor__wal_errmsg(s->wal));
    return rc;
}

int stor__wal_recover(struct stor *s, uint64_t seg_size, char *errmsg)
{
    char dir[4096];
    MDB_txn *txn;
    int rc;
    snprintf(dir, sizeof dir, "%s/wal", s->path);
    unsigned fl = (s->no_sync ? STOR__WAL_NO_SYNC : 0) |
                  (s->wal_buffered ? STOR__WAL_BUFFERED : 0);
    if ((rc = stor__wal_open(dir, seg_size, fl, &s->wal, errmsg)))
        return rc;
    /* The lsn the last checkpoint covers (none: a dir from before the
     * WAL, or a new one). */
    if ((rc = stor__read_begin(s, &txn)) != 0) {
        rk_errf(errmsg, "data dir %s: %s", s->path, rk_strerror(rc));
        return rc;
    }
    MDB_val k = {.mv_size = sizeof(STOR__META_WAL_LSN) - 1,
                 .mv_data = (void *)STOR__META_WAL_LSN};
    MDB_val v;
    int mrc = mdb_get(txn, s->dbi_meta, &k, &v);
    if (mrc == 0 && v.mv_size == 8)
        s->ckpt_lsn = stor__get64(v.mv_data);
    stor__read_end(s, txn);
    if (mrc != 0 && mrc != MDB_NOTFOUND) {
        rk_errf(errmsg, "data dir %s: reading the WAL position: %s", s->path,
                mdb_strerror(mrc));
        return stor__from_mdb(mrc);
    }
    if (mrc == 0 && v.mv_size != 8) {
        rk_errf(errmsg, "data dir %s is corrupt: meta '%s' is not 8 bytes",
                s->path, STOR__META_WAL_LSN);
        return RK_ECORRUPT;
    }
    s->open_lsn = s->ckpt_lsn;
    struct replay_ctx c = {.s = s, .errmsg = errmsg};
    if ((rc = stor_batch_new(&c.b)) != 0)
        return rc;
    uint64_t last, from0 = s->ckpt_lsn;
    s->w_replaying = true;
    for (int round = 0;; round++) {
        errmsg[0] = '\0';
        rc = stor__wal_replay(s->wal, s->ckpt_lsn, replay_cb, &c, &last);
        if (rc && errmsg[0] == '\0')
            rk_errf(errmsg, "%s", stor__wal_errmsg(s->wal));
        if (rc == 0 && (rc = checkpoint(s)) != 0)
            rk_errf(errmsg, "data dir %s: committing the replayed WAL: %s",
                    s->path, rk_strerror(rc));
        if (rc != RK_ENOSPC || round >= 8 || disk_full(s))
            break;
        /* A commit (of what ran before a batch that filled the map, or at
         * the end) ran out of map itself: that transaction is lost. The
         * replay goes again from the last checkpoint it made, with a
         * larger map (none can grow while a transaction is open). */
        if (s->open_txn) {
            mdb_txn_abort(s->open_txn);
            s->open_txn = NULL;
        }
        s->open_lsn = s->ckpt_lsn;
        rk_log(RK_LOG_INFO,
               "storage %s: replaying the WAL ran out of map; growing it and "
               "replaying again from lsn %llu",
               s->path, (unsigned long long)s->ckpt_lsn);
        if (stor__maybe_grow(s, (size_t)64 << (20 + round), true) != 0)
            break;
    }
    s->w_replaying = false;
    if (s->open_txn) {
        mdb_txn_abort(s->open_txn);
        s->open_txn = NULL;
    }
    s->w_batch = NULL;
    stor_batch_free(c.b);
    stor__overlay_clear(s);
    if (rc)
        return rc;
    c.n = s->ckpt_lsn - from0; /* (a replay that went again counted twice) */
    s->n_wal_replayed = c.n;
    if (c.n > 0)
        rk_log(RK_LOG_INFO,
               "storage %s: replayed %llu WAL records (lsn %llu..%llu)",
               s->path, (unsigned long long)c.n,
               (unsigned long long)s->ckpt_lsn - c.n + 1,
               (unsigned long long)s->ckpt_lsn);
    /* Everything replayed is checkpointed: the old segments go. */
    if ((rc = stor__wal_start(s->wal, s->ckpt_lsn + 1)) != 0)
        rk_errf(errmsg, "%s", stor__wal_errmsg(s->wal));
    return rc;
}
