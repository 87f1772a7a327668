/* The core's view of the log: the unstable tail over the stable raft_log_ops. */
#ifndef RAFT_LOG_H
#define RAFT_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"

/*
 * Entry payloads of the unstable tail live in reference-counted blocks
 * (bump allocation, no per-entry malloc). Each unstable entry holds one
 * reference on its block; ready batches and messages that borrow a payload
 * hold one more until raft_advance().
 */
struct raft_blk {
    uint32_t refs;
    size_t cap;
    size_t used;
    unsigned char data[];
};

struct raft_log;
/* Drops a reference to a block of log l's arena: the last reference frees
 * it, or keeps a standard block as l's spare when l has none. */
void raft__log_blk_drop(struct raft_log *l, struct raft_blk *b);

struct raft_log {
    const struct raft_log_ops *ops;
    void *ctx;

    /* Unstable tail: u[k] has index uoff + k. */
    struct raft_entry *u;
    struct raft_blk **ublk;
    uint32_t un;
    uint32_t ucap;
    raft_index uoff;
    raft_index unext; /* first unstable index not yet handed to a ready */

    /* A received snapshot handed to the driver but not yet advanced. */
    bool has_usnap;
    struct raft_snapshot_meta usnap;

    /* Stable cache: entries the driver made durable (they left the unstable
     * tail) but that are not applied yet, still holding their block
     * references, so that the committed entries of the next ready come
     * from memory instead of raft_log_ops.entries (a storage read and a
     * payload copy per Raft round). c[k] has index coff + k; when cn > 0
     * the cache ends where the unstable tail starts (coff + cn == uoff).
     * It only ever holds entries equal to the stable log's, at most
     * RAFT_CACHE_BYTES of payload; anything else is read from storage. */
    struct raft_entry *c;
    struct raft_blk **cblk;
    uint32_t cn;
    uint32_t ccap;
    raft_index coff;
    size_t cbytes;

    raft_index commit;
    raft_index applied;
    raft_index persisted; /* last index known durable (advance) */

    struct raft_blk *arena; /* current bump block (the log holds a ref) */
    struct raft_blk *spare; /* a retired standard block, reused next */
};

int raft__log_init(struct raft_log *l, const struct raft_log_ops *ops,
                   void *ctx);
void raft__log_close(struct raft_log *l);

raft_index raft__log_first_index(const struct raft_log *l);
raft_index raft__log_last_index(const struct raft_log *l);
/* RK_ECOMPACTED / RK_EUNAVAIL_LOG / storage errors. */
int raft__log_term(const struct raft_log *l, raft_index i, raft_term *out);
/* Term of i or 0 when unknown. */
raft_term raft__log_term_or0(const struct raft_log *l, raft_index i);
raft_term raft__log_last_term(const struct raft_log *l);
bool raft__log_match_term(const struct raft_log *l, raft_index i, raft_term t);
/* Thesis §3.6.1: is a log ending at (idx, term) at least as up to date? */
bool raft__log_up_to_date(const struct raft_log *l, raft_index idx,
                          raft_term term);

/* Appends entries (copying payloads into the arena) after truncating any
 * suffix from ents[0].index. The caller guarantees commit < ents[0].index
 * <= last + 1 (asserted). RK_ENOMEM leaves the log unchanged. */
int raft__log_append(struct raft_log *l, const struct raft_entry *ents,
                     uint32_t n);
/* Appends one new entry at last+1 (leader). */
int raft__log_append_one(struct raft_log *l, raft_term term, uint8_t type,
                         const void *data, uint32_t len);
/* First index among ents whose term conflicts with (or is missing from) the
 * log; 0 if all are present. */
raft_index raft__log_find_conflict(const struct raft_log *l,
                                   const struct raft_entry *ents, uint32_t n);
/* Largest index <= idx whose term is <= term (etcd findConflictByTerm). */
raft_index raft__log_find_conflict_by_term(const struct raft_log *l,
                                           raft_index idx, raft_term term);
/* The batch ending at (i, t) is durable: drop it from the unstable tail. */
void raft__log_stable_to(struct raft_log *l, raft_index i, raft_term t);
/* Replaces the whole log by a received snapshot (not yet durable). */
void raft__log_restore(struct raft_log *l, const struct raft_snapshot_meta *m);
void raft__log_snap_stable(struct raft_log *l,
                           const struct raft_snapshot_meta *m);
/* Drops cached entries up to the applied index (call after it moved). */
void raft__log_cache_applied(struct raft_log *l);
/* Is every entry of [lo, hi] in the stable cache? */
static inline bool raft__log_cached(const struct raft_log *l, raft_index lo,
                                    raft_index hi)
{
    return l->cn > 0 && lo >= l->coff && lo <= hi && hi < l->coff + l->cn;
}

/* Is entry i held in the unstable tail? */
static inline bool raft__log_in_unstable(const struct raft_log *l,
                                         raft_index i)
{
    return i >= l->uoff && i < l->uoff + l->un;
}

#endif
