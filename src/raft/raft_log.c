/* The core's view of the log: the unstable tail over the stable raft_log_ops. */
#include "raft_log.h"

#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"

/* Payload bytes per arena block (larger entries get a block of their own). */
#define RAFT_ARENA_BLOCK (256u * 1024u)
/* Payload bytes the stable cache holds at most (per group). */
#define RAFT_CACHE_BYTES (1u << 20)

void raft__log_blk_drop(struct raft_log *l, struct raft_blk *b)
{
    if (!b || --b->refs > 0)
        return;
    /* One retired standard block is kept for the next arena_alloc: a
     * block freed and a new one allocated per 256 KiB of payload made the
     * heap grow and shrink, faulting fresh pages in every time. */
    if (!l->spare && b->cap == RAFT_ARENA_BLOCK)
        l->spare = b;
    else
        free(b);
}

int raft__log_init(struct raft_log *l, const struct raft_log_ops *ops,
                   void *ctx)
{
    memset(l, 0, sizeof(*l));
    l->ops = ops;
    l->ctx = ctx;
    raft_index last = ops->last_index(ctx);
    l->uoff = last + 1;
    l->unext = last + 1;
    l->persisted = last;
    return 0;
}

static void drop_unstable_from(struct raft_log *l, uint32_t k)
{
    for (uint32_t j = k; j < l->un; j++)
        raft__log_blk_drop(l, l->ublk[j]);
    l->un = k;
}

/* ----------------------------------------------------------- stable cache */

static void cache_clear(struct raft_log *l)
{
    for (uint32_t j = 0; j < l->cn; j++)
        raft__log_blk_drop(l, l->cblk[j]);
    l->cn = 0;
    l->cbytes = 0;
}

/* Drops the cached entries from index `first` on (a conflicting append or
 * a truncation replaced them). */
static void cache_trim_from(struct raft_log *l, raft_index first)
{
    if (l->cn == 0 || first >= l->coff + l->cn)
        return;
    uint32_t keep = first > l->coff ? (uint32_t)(first - l->coff) : 0;
    for (uint32_t j = keep; j < l->cn; j++) {
        l->cbytes -= l->c[j].len;
        raft__log_blk_drop(l, l->cblk[j]);
    }
    l->cn = keep;
}

void raft__log_cache_applied(struct raft_log *l)
{
    if (l->cn == 0 || l->applied < l->coff)
        return;
    uint32_t k = l->applied - l->coff >= l->cn
                     ? l->cn
                     : (uint32_t)(l->applied - l->coff + 1);
    for (uint32_t j = 0; j < k; j++) {
        l->cbytes -= l->c[j].len;
        raft__log_blk_drop(l, l->cblk[j]);
    }
    memmove(l->c, l->c + k, (l->cn - k) * sizeof(*l->c));
    memmove(l->cblk, l->cblk + k, (l->cn - k) * sizeof(*l->cblk));
    l->cn -= k;
    l->coff += k;
}

/* Moves the durable unstable entries u[0, k) into the cache with their
 * block references, or releases them when they do not fit. */
static void cache_take(struct raft_log *l, uint32_t k)
{
    size_t bytes = 0;
    for (uint32_t j = 0; j < k; j++)
        bytes += l->u[j].len;
    if (l->cn > 0 && l->coff + l->cn != l->uoff)
        cache_clear(l); /* not contiguous: start again from here */
    bool fits = l->cbytes + bytes <= RAFT_CACHE_BYTES;
    if (fits && l->cn + k > l->ccap) {
        uint32_t nc = l->ccap ? l->ccap : 64;
        while (nc < l->cn + k)
            nc *= 2;
        struct raft_entry *c = realloc(l->c, nc * sizeof(*c));
        if (c)
            l->c = c;
        struct raft_blk **b = c ? realloc(l->cblk, nc * sizeof(*b)) : NULL;
        if (b) {
            l->cblk = b;
            l->ccap = nc;
        }
        fits = c && b;
    }
    if (!fits) {
        /* Read from storage instead; a cache with a gap is useless. */
        cache_clear(l);
        for (uint32_t j = 0; j < k; j++)
            raft__log_blk_drop(l, l->ublk[j]);
        return;
    }
    if (l->cn == 0)
        l->coff = l->uoff;
    memcpy(l->c + l->cn, l->u, k * sizeof(*l->c));
    memcpy(l->cblk + l->cn, l->ublk, k * sizeof(*l->cblk));
    l->cn += k;
    l->cbytes += bytes;
    raft__log_cache_applied(l);
}

void raft__log_close(struct raft_log *l)
{
    drop_unstable_from(l, 0);
    cache_clear(l);
    free(l->c);
    free(l->cblk);
    l->c = NULL;
    l->cblk = NULL;
    l->ccap = 0;
    free(l->u);
    free(l->ublk);
    raft__log_blk_drop(l, l->arena);
    free(l->spare);
    l->spare = NULL;
    l->u = NULL;
    l->ublk = NULL;
    l->arena = NULL;
}

raft_index raft__log_first_index(const struct raft_log *l)
{
    if (l->has_usnap)
        return l->usnap.index + 1;
    return l->ops->first_index(l->ctx);
}

raft_index raft__log_last_index(const struct raft_log *l)
{
    if (l->un > 0)
        return l->uoff + l->un - 1;
    if (l->has_usnap)
        return l->usnap.index;
    return l->ops->last_index(l->ctx);
}

int raft__log_term(const struct raft_log *l, raft_index i, raft_term *out)
{
    if (raft__log_in_unstable(l, i)) {
        *out = l->u[i - l->uoff].term;
        return 0;
    }
    if (raft__log_cached(l, i, i)) {
        *out = l->c[i - l->coff].term;
        return 0;
    }
    if (l->has_usnap) {
        if (i == l->usnap.index) {
            *out = l->usnap.term;
            return 0;
        }
        return i < l->usnap.index ? RK_ECOMPACTED : RK_EUNAVAIL_LOG;
    }
    if (i > raft__log_last_index(l))
        return RK_EUNAVAIL_LOG;
    if (i == 0) {
        *out = 0;
        return 0;
    }
    return l->ops->term(l->ctx, i, out);
}

raft_term raft__log_term_or0(const struct raft_log *l, raft_index i)
{
    raft_term t = 0;
    if (raft__log_term(l, i, &t) != 0)
        return 0;
    return t;
}

raft_term raft__log_last_term(const struct raft_log *l)
{
    return raft__log_term_or0(l, raft__log_last_index(l));
}

bool raft__log_match_term(const struct raft_log *l, raft_index i, raft_term t)
{
    raft_term have;
    if (raft__log_term(l, i, &have) != 0)
        return false;
    return have == t;
}

bool raft__log_up_to_date(const struct raft_log *l, raft_index idx,
                          raft_term term)
{
    raft_term lt = raft__log_last_term(l);
    return term > lt || (term == lt && idx >= raft__log_last_index(l));
}

static void *arena_alloc(struct raft_log *l, size_t len, struct raft_blk **blk)
{
    struct raft_blk *b = l->arena;
    if (!b || b->cap - b->used < len) {
        size_t cap = len > RAFT_ARENA_BLOCK ? len : RAFT_ARENA_BLOCK;
        if (cap == RAFT_ARENA_BLOCK && l->spare) {
            b = l->spare;
            l->spare = NULL;
        } else if (!(b = malloc(sizeof(*b) + cap))) {
            return NULL;
        }
        b->refs = 1; /* the log's own reference while it is current */
        b->cap = cap;
        b->used = 0;
        raft__log_blk_drop(l, l->arena);
        l->arena = b;
    }
    void *p = b->data + b->used;
    b->used += len;
    b->refs++;
    *blk = b;
    return p;
}

static int reserve_unstable(struct raft_log *l, uint32_t need)
{
    if (need <= l->ucap)
        return 0;
    uint32_t nc = l->ucap ? l->ucap : 64;
    while (nc < need)
        nc *= 2;
    struct raft_entry *u = realloc(l->u, nc * sizeof(*u));
    if (!u)
        return RK_ENOMEM;
    l->u = u;
    struct raft_blk **b = realloc(l->ublk, nc * sizeof(*b));
    if (!b)
        return RK_ENOMEM;
    l->ublk = b;
    l->ucap = nc;
    return 0;
}

/* Makes room for entries from index `first` on: truncates what follows. */
static void truncate_for(struct raft_log *l, raft_index first)
{
    cache_trim_from(l, first);
    if (l->un == 0) {
        l->uoff = first;
    } else if (first >= l->uoff) {
        RK_ASSERT(first <= l->uoff + l->un);
        drop_unstable_from(l, (uint32_t)(first - l->uoff));
    } else {
        /* The conflict lies in the stable log: the whole tail goes. */
        drop_unstable_from(l, 0);
        l->uoff = first;
    }
    if (l->unext > first)
        l->unext = first;
    if (l->persisted >= first)
        l->persisted = first - 1;
}

int raft__log_append(struct raft_log *l, const struct raft_entry *ents,
                     uint32_t n)
{
    if (n == 0)
        return 0;
    raft_index first = ents[0].index;
    RK_ASSERT(first > l->commit || l->has_usnap);
    RK_ASSERT(first <= raft__log_last_index(l) + 1);
    uint32_t keep = l->un;
    if (first < l->uoff)
        keep = 0;
    else if (first < l->uoff + l->un)
        keep = (uint32_t)(first - l->uoff);
    if ((uint64_t)keep + n > UINT32_MAX)
        return RK_ENOMEM;
    int rc = reserve_unstable(l, keep + n);
    if (rc)
        return rc;
    /* Allocate every payload first so that failure leaves the log intact. */
    size_t total = 0;
    for (uint32_t k = 0; k < n; k++)
        total += ents[k].len;
    struct raft_blk *blk = NULL;
    unsigned char *p = NULL;
    if (total > 0) {
        p = arena_alloc(l, total, &blk);
        if (!p)
            return RK_ENOMEM;
    }
    truncate_for(l, first);
    uint32_t with_payload = 0;
    for (uint32_t k = 0; k < n; k++) {
        struct raft_entry *e = &l->u[l->un];
        *e = ents[k];
        if (e->len) {
            memcpy(p, ents[k].data, e->len);
            e->data = p;
            p += e->len;
            l->ublk[l->un] = blk;
            with_payload++;
        } else {
            e->data = NULL;
            l->ublk[l->un] = NULL;
        }
        l->un++;
    }
    /* arena_alloc took one reference for the run; each entry holds one. */
    if (blk)
        blk->refs += with_payload - 1;
    return 0;
}

int raft__log_append_one(struct raft_log *l, raft_term term, uint8_t type,
                         const void *data, uint32_t len)
{
    struct raft_entry e = {
        .term = term,
        .index = raft__log_last_index(l) + 1,
        .type = type,
        .len = len,
        .data = (void *)data,
    };
    return raft__log_append(l, &e, 1);
}

raft_index raft__log_find_conflict(const struct raft_log *l,
                                   const struct raft_entry *ents, uint32_t n)
{
    for (uint32_t k = 0; k < n; k++)
        if (!raft__log_match_term(l, ents[k].index, ents[k].term))
            return ents[k].index;
    return 0;
}

raft_index raft__log_find_conflict_by_term(const struct raft_log *l,
                                           raft_index idx, raft_term term)
{
    raft_index last = raft__log_last_index(l);
    if (idx > last)
        return idx;
    for (;;) {
        raft_term t;
        if (raft__log_term(l, idx, &t) != 0 || t <= term || idx == 0)
            return idx;
        idx--;
    }
}

void raft__log_stable_to(struct raft_log *l, raft_index i, raft_term t)
{
    if (!raft__log_in_unstable(l, i) || i >= l->unext)
        return;
    /* Log matching: same index and term means the same prefix. */
    if (l->u[i - l->uoff].term != t)
        return;
    uint32_t k = (uint32_t)(i - l->uoff) + 1;
    cache_take(l, k);
    memmove(l->u, l->u + k, (l->un - k) * sizeof(*l->u));
    memmove(l->ublk, l->ublk + k, (l->un - k) * sizeof(*l->ublk));
    l->un -= k;
    l->uoff = i + 1;
    if (l->persisted < i)
        l->persisted = i;
}

void raft__log_restore(struct raft_log *l, const struct raft_snapshot_meta *m)
{
    drop_unstable_from(l, 0);
    cache_clear(l);
    l->uoff = m->index + 1;
    l->unext = m->index + 1;
    l->has_usnap = true;
    l->usnap = *m;
    if (l->commit < m->index)
        l->commit = m->index;
    l->persisted = 0;
}

void raft__log_snap_stable(struct raft_log *l,
                           const struct raft_snapshot_meta *m)
{
    if (!l->has_usnap || l->usnap.index != m->index ||
        l->usnap.term != m->term)
        return;
    l->has_usnap = false;
    l->persisted = m->index;
    if (l->applied < m->index)
        l->applied = m->index;
    raft__log_cache_applied(l);
}
