/* In-memory stable storage for the Raft core: log, hard state, snapshots. */
#include "raft_memlog.h"

#include <stdlib.h>
#include <string.h>

#define ML_DEFAULT_CHUNK (64u * 1024u)

/* One stored entry; its index is implicit (snap.index + 1 + position) and its
 * payload lives at `off` in the byte buffer (entries are in index order, so
 * truncating the log truncates the buffer too). */
struct ml_ent {
    raft_term term;
    uint64_t off;
    uint32_t len;
    uint8_t type;
};

struct raft_memlog {
    struct raft_snapshot_meta snap;
    uint8_t *snap_data;
    size_t snap_len;

    struct ml_ent *ents;
    uint64_t n, cap;
    uint8_t *bytes;
    size_t bytes_len, bytes_cap;

    struct raft_hard_state hs, synced_hs;
    struct raft_conf_state conf;
    raft_index synced; /* last durable index */
    uint32_t chunk_size;

    struct raft_snapshot_meta stage_meta;
    uint8_t *stage;
    size_t stage_len, stage_cap;
    uint32_t stage_next;
    bool stage_complete;
};

struct raft_memlog *raft_memlog_new(void)
{
    struct raft_memlog *ml = calloc(1, sizeof(*ml));
    if (ml)
        ml->chunk_size = ML_DEFAULT_CHUNK;
    return ml;
}

void raft_memlog_free(struct raft_memlog *ml)
{
    if (!ml)
        return;
    free(ml->snap_data);
    free(ml->ents);
    free(ml->bytes);
    free(ml->stage);
    free(ml);
}

static raft_index ml_last(const struct raft_memlog *ml)
{
    return ml->snap.index + ml->n;
}

raft_index raft_memlog_last_index(const struct raft_memlog *ml)
{
    return ml_last(ml);
}

raft_index raft_memlog_first_index(const struct raft_memlog *ml)
{
    return ml->snap.index + 1;
}

raft_index raft_memlog_synced_index(const struct raft_memlog *ml)
{
    return ml->synced;
}

static int reserve(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 16;
    while (nc < need)
        nc *= 2;
    void *np = realloc(*p, nc * elem);
    if (!np)
        return RK_ENOMEM;
    *p = np;
    *cap = nc;
    return 0;
}

/* Drops stored entries with index >= i. */
static void truncate_from(struct raft_memlog *ml, raft_index i)
{
    if (i > ml_last(ml))
        return;
    uint64_t keep = i - ml->snap.index - 1;
    ml->bytes_len = keep < ml->n ? ml->ents[keep].off : ml->bytes_len;
    ml->n = keep;
    if (ml->synced >= i)
        ml->synced = i - 1;
}

int raft_memlog_append(struct raft_memlog *ml, const struct raft_entry *ents,
                       uint32_t n)
{
    if (n == 0)
        return 0;
    if (!ents)
        return RK_EINVAL;
    raft_index first = ents[0].index;
    if (first <= ml->snap.index)
        return RK_ECOMPACTED;
    if (first > ml_last(ml) + 1)
        return RK_EINVAL;
    size_t total = 0;
    for (uint32_t k = 0; k < n; k++) {
        if (ents[k].index != first + k || (ents[k].len && !ents[k].data))
            return RK_EINVAL;
        total += ents[k].len;
    }
    uint64_t keep = first - ml->snap.index - 1;
    size_t base = keep < ml->n ? ml->ents[keep].off : ml->bytes_len;
    size_t ecap = ml->cap;
    int rc = reserve((void **)&ml->ents, &ecap, keep + n, sizeof(*ml->ents));
    ml->cap = ecap;
    if (rc)
        return rc;
    rc = reserve((void **)&ml->bytes, &ml->bytes_cap, base + total, 1);
    if (rc)
        return rc;
    truncate_from(ml, first);
    size_t off = ml->bytes_len;
    for (uint32_t k = 0; k < n; k++) {
        struct ml_ent *e = &ml->ents[ml->n++];
        e->term = ents[k].term;
        e->type = ents[k].type;
        e->len = ents[k].len;
        e->off = off;
        if (e->len)
            memcpy(ml->bytes + off, ents[k].data, e->len);
        off += e->len;
    }
    ml->bytes_len = off;
    return 0;
}

void raft_memlog_set_hard_state(struct raft_memlog *ml,
                                const struct raft_hard_state *hs)
{
    ml->hs = *hs;
}

void raft_memlog_hard_state(const struct raft_memlog *ml,
                            struct raft_hard_state *out)
{
    *out = ml->hs;
}

void raft_memlog_set_conf(struct raft_memlog *ml,
                          const struct raft_conf_state *conf)
{
    ml->conf = *conf;
}

void raft_memlog_conf(const struct raft_memlog *ml, struct raft_conf_state *out)
{
    *out = ml->conf;
}

/* Drops entries with index <= i (i within the stored log or past it). */
static void compact_to(struct raft_memlog *ml, raft_index i, raft_term term)
{
    uint64_t drop = i >= ml_last(ml) ? ml->n : i - ml->snap.index;
    if (drop >= ml->n) {
        ml->n = 0;
        ml->bytes_len = 0;
    } else {
        size_t boff = ml->ents[drop].off;
        /* No payload at all means no buffer (NULL): nothing to move. */
        if (ml->bytes_len > boff && boff > 0)
            memmove(ml->bytes, ml->bytes + boff, ml->bytes_len - boff);
        ml->bytes_len -= boff;
        memmove(ml->ents, ml->ents + drop, (ml->n - drop) * sizeof(*ml->ents));
        ml->n -= drop;
        for (uint64_t k = 0; k < ml->n; k++)
            ml->ents[k].off -= boff;
    }
    ml->snap.index = i;
    ml->snap.term = term;
    if (ml->synced < i)
        ml->synced = i;
}

int raft_memlog_snapshot_create(struct raft_memlog *ml, raft_index index,
                                const struct raft_conf_state *conf,
                                const void *data, size_t len)
{
    if (index <= ml->snap.index)
        return RK_ESTALE;
    if (index > ml_last(ml))
        return RK_EUNAVAIL_LOG;
    if (!conf || (len && !data))
        return RK_EINVAL;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy)
        return RK_ENOMEM;
    if (len)
        memcpy(copy, data, len);
    raft_term term = ml->ents[index - ml->snap.index - 1].term;
    compact_to(ml, index, term);
    free(ml->snap_data);
    ml->snap_data = copy;
    ml->snap_len = len;
    ml->snap.conf = *conf;
    return 0;
}

void raft_memlog_snapshot(const struct raft_memlog *ml,
                          struct raft_snapshot_meta *meta, const void **data,
                          size_t *len)
{
    if (meta)
        *meta = ml->snap;
    if (data)
        *data = ml->snap_data;
    if (len)
        *len = ml->snap_len;
}

void raft_memlog_set_chunk_size(struct raft_memlog *ml, uint32_t size)
{
    ml->chunk_size = size ? size : 1;
}

int raft_memlog_stage_chunk(struct raft_memlog *ml,
                            const struct raft_snap_chunk *c)
{
    if (!c || (c->len && !c->data))
        return RK_EINVAL;
    if (c->seq == 0) {
        ml->stage_meta = c->meta;
        ml->stage_len = 0;
        ml->stage_next = 0;
        ml->stage_complete = false;
    } else if (c->seq != ml->stage_next ||
               c->meta.index != ml->stage_meta.index ||
               c->meta.term != ml->stage_meta.term || ml->stage_complete) {
        return RK_EINVAL;
    }
    int rc = reserve((void **)&ml->stage, &ml->stage_cap,
                     ml->stage_len + c->len, 1);
    if (rc)
        return rc;
    if (c->len)
        memcpy(ml->stage + ml->stage_len, c->data, c->len);
    ml->stage_len += c->len;
    ml->stage_next++;
    ml->stage_complete = c->last;
    return 0;
}

int raft_memlog_install_staged(struct raft_memlog *ml,
                               const struct raft_snapshot_meta *meta)
{
    if (!meta || !ml->stage_complete || meta->index != ml->stage_meta.index ||
        meta->term != ml->stage_meta.term)
        return RK_EINVAL;
    if (meta->index <= ml->snap.index)
        return RK_ESTALE;
    /* Keep the staged buffer as the snapshot's bytes (no copy). */
    free(ml->snap_data);
    ml->snap_data = ml->stage;
    ml->snap_len = ml->stage_len;
    ml->stage = NULL;
    ml->stage_len = ml->stage_cap = 0;
    ml->stage_next = 0;
    ml->stage_complete = false;
    /* The whole log goes: the snapshot replaces it. */
    ml->n = 0;
    ml->bytes_len = 0;
    ml->snap = *meta;
    ml->synced = meta->index;
    ml->conf = meta->conf;
    return 0;
}

void raft_memlog_sync(struct raft_memlog *ml)
{
    ml->synced = ml_last(ml);
    ml->synced_hs = ml->hs;
}

void raft_memlog_crash(struct raft_memlog *ml)
{
    if (ml->synced < ml->snap.index)
        ml->synced = ml->snap.index;
    truncate_from(ml, ml->synced + 1);
    ml->hs = ml->synced_hs;
    ml->stage_len = 0;
    ml->stage_next = 0;
    ml->stage_complete = false;
}

int raft_memlog_persist_ready(struct raft_memlog *ml,
                              const struct raft_ready *rd)
{
    int rc = 0;
    if (rd->snap_chunk && (rc = raft_memlog_stage_chunk(ml, rd->snap_chunk)))
        return rc;
    if (rd->snap_install &&
        (rc = raft_memlog_install_staged(ml, &rd->snap_meta)))
        return rc;
    if (rd->n_entries &&
        (rc = raft_memlog_append(ml, rd->entries, rd->n_entries)))
        return rc;
    if (rd->hs_changed)
        raft_memlog_set_hard_state(ml, &rd->hs);
    if (rd->conf_changed)
        raft_memlog_set_conf(ml, &rd->conf);
    if (rd->must_sync)
        raft_memlog_sync(ml);
    return 0;
}

/* ------------------------------------------------------------ log ops */

static raft_index op_first_index(void *ctx)
{
    return raft_memlog_first_index(ctx);
}

static raft_index op_last_index(void *ctx)
{
    return raft_memlog_last_index(ctx);
}

static int op_term(void *ctx, raft_index i, raft_term *out)
{
    struct raft_memlog *ml = ctx;
    if (i < ml->snap.index)
        return RK_ECOMPACTED;
    if (i > ml_last(ml))
        return RK_EUNAVAIL_LOG;
    *out = i == ml->snap.index ? ml->snap.term
                               : ml->ents[i - ml->snap.index - 1].term;
    return 0;
}

static int op_entries(void *ctx, raft_index lo, raft_index hi,
                      size_t max_bytes, struct raft_entry **out,
                      uint32_t *n_out)
{
    struct raft_memlog *ml = ctx;
    *out = NULL;
    *n_out = 0;
    if (lo >= hi)
        return RK_EINVAL;
    if (lo <= ml->snap.index)
        return RK_ECOMPACTED;
    if (hi > ml_last(ml) + 1)
        return RK_EUNAVAIL_LOG;
    uint64_t k0 = lo - ml->snap.index - 1;
    uint64_t want = hi - lo;
    if (want > UINT32_MAX)
        want = UINT32_MAX;
    size_t bytes = 0;
    uint64_t cnt = 0;
    while (cnt < want) {
        size_t l = ml->ents[k0 + cnt].len;
        if (cnt > 0 && bytes + l > max_bytes)
            break;
        bytes += l;
        cnt++;
    }
    struct raft_entry *blk = malloc(cnt * sizeof(*blk) + bytes + 1);
    if (!blk)
        return RK_ENOMEM;
    uint8_t *p = (uint8_t *)(blk + cnt);
    for (uint64_t k = 0; k < cnt; k++) {
        const struct ml_ent *e = &ml->ents[k0 + k];
        blk[k].term = e->term;
        blk[k].index = lo + k;
        blk[k].type = e->type;
        blk[k].len = e->len;
        blk[k].data = e->len ? p : NULL;
        if (e->len)
            memcpy(p, ml->bytes + e->off, e->len);
        p += e->len;
    }
    *out = blk;
    *n_out = (uint32_t)cnt;
    return 0;
}

static int op_snapshot_meta(void *ctx, struct raft_snapshot_meta *out)
{
    struct raft_memlog *ml = ctx;
    *out = ml->snap;
    return 0;
}

static int op_snapshot_chunk(void *ctx, raft_index snap_index, uint32_t seq,
                             void **data, uint32_t *len, bool *last)
{
    struct raft_memlog *ml = ctx;
    if (snap_index == 0 || snap_index != ml->snap.index)
        return RK_ESTALE;
    size_t cs = ml->chunk_size;
    size_t off = (size_t)seq * cs;
    if (off > ml->snap_len || (off == ml->snap_len && seq > 0))
        return RK_EINVAL;
    size_t l = ml->snap_len - off < cs ? ml->snap_len - off : cs;
    void *buf = malloc(l ? l : 1);
    if (!buf)
        return RK_ENOMEM;
    if (l)
        memcpy(buf, ml->snap_data + off, l);
    *data = buf;
    *len = (uint32_t)l;
    *last = off + l >= ml->snap_len;
    return 0;
}

const struct raft_log_ops raft_memlog_ops = {
    .first_index = op_first_index,
    .last_index = op_last_index,
    .term = op_term,
    .entries = op_entries,
    .snapshot_meta = op_snapshot_meta,
    .snapshot_chunk = op_snapshot_chunk,
};
