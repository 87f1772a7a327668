/* Internals of the LMDB store shared by the src/storage files. */
#ifndef STOR_INT_H
#define STOR_INT_H

#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>

#include "rk_buf.h"
#include "stor.h"

/* ------------------------------------------------------ big-endian codec */

static inline void stor__put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static inline uint64_t stor__get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static inline void stor__put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint32_t stor__get32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* A bounds-checked reader over untrusted bytes: every get fails (returns
 * false and sticks) instead of reading past the end. */
struct stor__rd {
    const uint8_t *p;
    size_t left;
    bool bad;
};

bool stor__rd_u8(struct stor__rd *r, uint8_t *v);
bool stor__rd_u16(struct stor__rd *r, uint16_t *v);
bool stor__rd_u32(struct stor__rd *r, uint32_t *v);
bool stor__rd_u64(struct stor__rd *r, uint64_t *v);
bool stor__rd_bytes(struct stor__rd *r, size_t n, const void **v);

/* CRC-32C (Castagnoli), software. */
uint32_t stor__crc32c(uint32_t crc, const void *buf, size_t len);

/* --------------------------------------------------------- state record */

struct stor__state {
    struct raft_hard_state hs;
    struct raft_conf_state conf;
    raft_index base_index; /* log entries <= base are compacted away */
    raft_term base_term;
    raft_index applied;
    raft_term applied_term;
    struct raft_conf_state applied_conf;
    struct raft_snapshot_meta snap;
    raft_index compact_target;
    /* Staging of a received snapshot. */
    struct raft_snapshot_meta stage_meta;
    uint32_t stage_next; /* next expected chunk seq; 0 = nothing staged */
    bool stage_complete;
};

/* Upper bound of an encoded state record. */
#define STOR__STATE_MAX 2048
size_t stor__state_encode(const struct stor__state *st, uint8_t *buf);
int stor__state_decode(const void *buf, size_t len, struct stor__state *st);

/* Encoded conf state (n_voters, n_learners, ids), bounds-checked decode. */
size_t stor__conf_encode(const struct raft_conf_state *c, uint8_t *buf);
bool stor__conf_decode(struct stor__rd *r, struct raft_conf_state *c);

/* -------------------------------------------------------------- shards */

struct stor_export;

/* An entry of a shard's log tail (stor_overlay.c). */
struct stor__tent {
    raft_term term;
    uint32_t len;
    uint8_t type;
    uint8_t *data;
};

struct stor_shard {
    struct stor *s;
    uint64_t id;

    /* Committed view, guarded by s->mu (written after each commit). */
    bool exists;
    raft_index first;
    raft_index last;
    raft_term last_term;
    raft_index base_index;
    raft_term base_term;

    /* Writer-only working copy for the transaction in progress. */
    uint64_t w_gen; /* == s->gen when loaded in this txn */
    bool w_exists;
    bool w_dirty;
    bool w_deleted;
    struct stor__state w;
    raft_index w_last;
    raft_term w_last_term;
    bool compact_pending;   /* writer-only: target > base */
    bool c_compact_pending; /* committed copy of compact_pending */
    /* Writer-only: term and vote of the last commit (always synced: a
     * term or vote change makes its batch durable). */
    bool c_hs_known;
    raft_term c_term;
    raft_id c_vote;
    /* Writer-only: the batch sequence number that last listed this shard
     * as touched, and its compaction flag then (restored on rollback). */
    uint64_t t_seq;
    bool t_compact_pending;
    /* Writer-only: the applied index as of the last checkpoint (the
     * compaction limit). */
    raft_index ck_applied;
    /* Writer-only: a copy of this shard's STOR_SPLIT_KEY value as the open
     * transaction has it (sp_len 0: none), valid while sp_gen == s->gen
     * and sp_epoch == s->sp_epoch (stor__split_moved, per applied entry). */
    uint64_t sp_gen, sp_epoch;
    uint8_t *sp_rec;
    size_t sp_len;

    /* Log tail (guarded by s->mu, stor_overlay.c): entries tail_from ..
     * tail_from + tail_n - 1 as the open transaction has them; 0 = none. */
    raft_index tail_from;
    struct stor__tent *tail;
    uint32_t tail_n, tail_cap;

    /* Writer-only: the entries the open transaction appended, which LMDB
     * does not hold until the checkpoint writes them as chunks
     * (stor_log.c): wt_from .. wt_from + wt_n - 1 (wt_n 0: none); the
     * open transaction's log is its chunks below wt_from, then these.
     * Emptied when a new open transaction begins. */
    raft_index wt_from;
    struct stor__tent *wt;
    uint32_t wt_n, wt_cap;
    size_t wt_bytes; /* their chunk bytes: data + descriptors */
    /* Writer-only: wt saved for the running nested batch (replay). */
    uint64_t wt_undo_seq;
};

/* ---------------------------------------------------------------- store */

struct stor {
    MDB_env *env;
    MDB_dbi dbi_logc, dbi_state, dbi_kv, dbi_sess, dbi_stage, dbi_meta;
    char *path;
    int lock_fd;
    uint64_t cluster_id;
    uint64_t node_id;
    bool no_sync;
    bool wal_buffered; /* stor_opts.wal_buffered or RINGKV_WAL_IO=buffered */
    size_t map_size;
    size_t max_map_size;
    size_t page_size;
    uint32_t chunk_bytes;
    uint64_t ckpt_every_us; /* opts->checkpoint_ms, or STOR__CKPT_US */
    int (*conf_decode)(const void *buf, size_t len,
                       struct raft_conf_change *out);
    uint64_t (*key_hash)(const void *key, size_t len);
    /* Writer-only: the batch the write txn in progress runs (a SPLIT
     * creates its recipient shard in it). */
    struct stor_batch *w_batch;

    /* Readers hold it shared around read txns; growing the map takes it
     * exclusively (LMDB: no transaction may be active then). */
    pthread_rwlock_t map_lock;
    /* One writer at a time (storage thread or stor_batch_commit). */
    pthread_mutex_t write_mu;

    /* Guards shards[], the committed shard views, failure and stats. */
    pthread_mutex_t mu;
    struct stor_shard **shards; /* sorted by id */
    uint32_t n_shards, cap_shards;
    atomic_int failed;
    char errmsg[RK_ERRMSG_SIZE];
    uint64_t n_batches;
    uint64_t n_lazy_batches; /* committed with MDB_NOMETASYNC */
    uint64_t n_merged_batches; /* committed by another batch's commit */
    uint64_t n_grows;
    uint64_t gen;          /* writer-only: transaction generation */
    uint64_t bseq;         /* writer-only: batch sequence number */
    uint32_t compact_next; /* writer-only: round-robin start of compaction */

    /* Snapshot exports (guarded by exp_mu; lock order map_lock, exp_mu). */
    pthread_mutex_t exp_mu;
    struct stor_export *exports;
    uint32_t n_exports;

    /* Storage thread and its queue (guarded by q_mu). */
    pthread_mutex_t q_mu;
    pthread_cond_t q_cv;
    struct stor_batch *q_head, *q_tail;
    bool q_stop;
    bool thread_started;
    pthread_t thread;

    /* WAL and the open transaction (writer-only unless said otherwise;
     * see stor_thread.c). */
    struct stor__wal *wal;
    MDB_txn *open_txn;       /* batches run in it between checkpoints */
    uint64_t open_since_us;  /* when it began (monotonic) */
    uint64_t open_wal_bytes; /* WAL bytes appended since */
    uint64_t open_lsn;       /* last WAL record whose batch ran in it */
    uint64_t prev_txn_wal_bytes; /* WAL bytes of the last checkpointed txn */
    uint64_t ckpt_lsn;       /* the last checkpoint covers records <= it */
    bool w_force_ckpt;       /* the running batch needs a checkpoint */
    bool w_replaying;        /* stor_open replays the WAL (or a rerun) */
    bool w_rerun;            /* rerun after a checkpoint out of map */
    bool fail_reported;      /* a batch got the fail-stop's own code */
    bool compact_held;       /* compaction waits for a checkpoint */
    bool ckpt_deferring;     /* a due checkpoint waits for a sync (counted) */
    struct rk_buf rec;       /* the WAL record being written */
    /* Guarded by q_mu: checkpoints asked for by readers, and done. */
    bool ckpt_req;
    bool dirty; /* the open transaction holds something */
    uint64_t ckpt_count;
    pthread_cond_t ckpt_cv;
    /* Stats of the WAL path (guarded by mu). */
    uint64_t n_checkpoints, n_wal_bytes, n_wal_syncs, n_wal_replayed;
    uint64_t n_wal_writes, n_wal_file_bytes;
    bool wal_direct;
    uint64_t ckpt_us; /* time spent in checkpoint commits */

    /* Checkpoint durability (stor_durable.c): checkpoints commit without
     * a sync; the sync thread syncs data.mdb and names the checkpoint
     * durable in <path>/ckpt, then the writer recycles the WAL below it.
     * dur_* guarded by q_mu unless said. */
    int data_fd;           /* data.mdb (LMDB's descriptor) */
    int ckpt_fd;           /* <path>/ckpt, -1 until opened */
    uint64_t mk_seq;       /* the marker's last write (one writer at once) */
    pthread_t dur_thread;
    bool dur_started;      /* owner/writer only */
    bool dur_stop;
    pthread_cond_t dur_cv; /* a job, its end, or stop */
    bool dur_job;          /* a committed checkpoint waits for its sync */
    bool dur_done;         /* ... which ended; the writer has not reaped it */
    int dur_rc;
    char dur_err[160];
    uint64_t dur_txn, dur_lsn; /* the job: LMDB txn id, WAL lsn */
    uint64_t durable_txn;  /* writer-only: the last durable checkpoint */
    bool ckpt_reverted;    /* stor_open went back to the durable one */
    uint64_t n_dur_waits, dur_wait_us; /* commits that waited for a sync */
    uint64_t n_dur_deferred; /* timed checkpoints put off meanwhile */
    uint64_t n_dur_syncs, dur_sync_us; /* the sync thread (guarded by mu) */

    /* The running batch's pending changes (writer-only). */
    struct rk_buf pend_kv;
    struct stor__pend_log *pend_log;
    uint32_t n_pend_log, cap_pend_log;
    /* The overlay (guarded by ov_lock; stor_overlay.c). */
    pthread_rwlock_t ov_lock;
    struct ov_ent **ov_tab;
    size_t ov_cap, ov_n;
    /* Where the overlay's entries (ov_lock) and the tails' entry data
     * (mu) live: chunks filled in order, all dropped at once when the
     * overlay and tails are cleared (stor_overlay.c). */
    struct stor__chunk *ov_chunks, *tl_chunks;
    /* The LMDB transaction id of the checkpoint the overlay was last
     * cleared after: the overlay holds the batches done since (scans check
     * their read transaction sees this one; stor_overlay.c). */
    uint64_t ov_base;

    /* Writer-only: where the writer tails' entry data live (1 MiB chunks
     * dropped whole when a new open transaction begins), and the undo
     * records of the running nested batch (stor_log.c). */
    struct stor__chunk *wt_chunks;
    struct rk_buf wt_undo;
    /* Bumped whenever a STOR_SPLIT_KEY record may change other than
     * through a new open transaction (see sp_gen). */
    uint64_t sp_epoch;
};

/* ------------------------------------------------ overlay and log tails
 * (stor_overlay.c; the model is described there). */
struct stor__pend_mark {
    size_t kv;
    uint32_t log;
};
/* Whether pending changes are recorded now (not while replaying, nor
 * after a batch asked for a checkpoint). */
bool stor__pend_on(const struct stor *s);
/* Records a KV write (rec = value record) or delete (rec NULL). */
int stor__pend_kv(struct stor *s, uint64_t shard, const void *key, size_t klen,
                  const void *rec, size_t rlen);
/* Records that sh's log holds the n packed entries recs (in the batch's
 * arena) from `first` on, anything after them cut. */
int stor__pend_log(struct stor *s, struct stor_shard *sh, raft_index first,
                   const uint8_t *recs, uint32_t n);
void stor__pend_mark(const struct stor *s, struct stor__pend_mark *m);
void stor__pend_rollback(struct stor *s, const struct stor__pend_mark *m);
void stor__pend_drop(struct stor *s);
/* Makes the pending KV changes visible (overlay), then (s->mu held) the
 * pending log changes (tails). RK_ENOMEM leaves them partly merged: the
 * caller checkpoints then. */
int stor__pend_merge_kv(struct stor *s);
int stor__pend_merge_log_locked(struct stor *s);
/* After a checkpoint commit: LMDB holds it all. */
void stor__overlay_clear(struct stor *s);
/* After a commit that LMDB holds but the overlay keeps (a rerun's partial
 * checkpoint): ov_base follows it. */
void stor__overlay_rebase(struct stor *s);
void stor__overlay_free(struct stor *s);
/* 1: *out filled from the overlay; 0: not there; RK_ENOTFOUND: deleted
 * there; RK_ENOMEM. */
int stor__overlay_get(struct stor *s, uint64_t shard, const void *key,
                      size_t klen, struct stor_value *out);
/* A scan's copy of the overlay entries of one shard that it wants (see
 * stor__overlay_scan), sorted by user key. */
struct stor__ov_item {
    const uint8_t *key;
    uint32_t klen;
    bool tomb;
    const uint8_t *rec; /* create(8) mod(8) value; NULL for a tombstone */
    uint32_t rlen;
};
struct stor__ov_scan {
    struct stor__ov_item *items; /* items[n], then the keys and records */
    size_t n;
    uint64_t base; /* ov_base when copied */
};
/* Copies, under ov_lock, the overlay entries of `shard` whose key starts
 * with prefix and is >= start (NULL: no bound), tombstones included, in
 * byte order of user keys (stor__key_cmp). Costs one walk of the whole
 * overlay. RK_ENOMEM. Free with free(out->items). */
int stor__overlay_scan(struct stor *s, uint64_t shard, const void *prefix,
                       size_t plen, const void *start, size_t slen,
                       struct stor__ov_scan *out);
/* Makes LMDB hold everything done so far (readers that read LMDB only:
 * scans, exports, shard loads, checks, backups): asks the storage thread
 * for a checkpoint and waits for it, unless nothing is open. */
void stor__checkpoint_wait(struct stor *s);

/* Errors (stor_err.c). */
int stor__from_mdb(int rc);
/* Enters fail-stop with a message (first failure wins); returns err. */
int stor__fail(struct stor *s, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Read txn bracket with map-growth coordination (stor_env.c). */
int stor__read_begin(struct stor *s, MDB_txn **txn);
void stor__read_end(struct stor *s, MDB_txn *txn);

/* Shard registry (stor_env.c). find: NULL if absent. add: the writer
 * creates a handle (not yet existing) for a shard created in a batch. */
struct stor_shard *stor__shard_find(struct stor *s, uint64_t id);
/* The same for the writer, without s->mu: only the writer changes
 * shards[] (stor__shard_add), so its own reads need no lock. */
struct stor_shard *stor__shard_find_w(struct stor *s, uint64_t id);
int stor__shard_add(struct stor *s, uint64_t id, struct stor_shard **out);

/* Keys. */
static inline void stor__key_shard(uint8_t k[8], uint64_t shard)
{
    stor__put64(k, shard);
}
static inline void stor__key_log(uint8_t k[16], uint64_t shard, raft_index i)
{
    stor__put64(k, shard);
    stor__put64(k + 8, i);
}

/* Deletes every key of `dbi` starting with the 8-byte shard prefix whose
 * remaining bytes are >= from (from NULL = all), at most max keys (0 = no
 * limit). Sets *n_deleted. */
int stor__del_range(MDB_txn *txn, MDB_dbi dbi, uint64_t shard, const void *from,
                    size_t from_len, uint64_t max, uint64_t *n_deleted);

/* ------------------------------------------------------ log chunks
 *
 * The log database (dbi_logc, "logc") holds each shard's entries in
 * CHUNKS: key shard(8) | index of the chunk's first entry(8), value
 *
 *   u8 format (1) | u32 count | count * (u64 term | u32 end | u8 type)
 *   | the entries' data, one after the other
 *
 * (big-endian; entry j's data is [end[j-1], end[j]) of the data, end[-1]
 * = 0). A chunk is written whole from a shard's writer tail, once it holds
 * STOR__LOGC_BYTES (data and descriptors; one larger entry alone) or at
 * the checkpoint; the chunks of a shard are contiguous, and the first may
 * hold compacted entries (<= base_index) before the live ones. */
#define STOR__LOGC_FORMAT 1u
#define STOR__LOGC_HDR    5u
#define STOR__LOGC_DESC   13u
#define STOR__LOGC_BYTES  ((size_t)1 << 20)

struct stor__logc {
    const uint8_t *v; /* the value */
    size_t size;
    uint32_t count;
    const uint8_t *data; /* the entries' data */
    size_t data_len;
};
/* Opens a chunk value: header, count and that the descriptors fit. 0 or
 * RK_ECORRUPT. */
int stor__logc_open(const void *v, size_t size, struct stor__logc *out);
/* Entry j (< count) of an opened chunk: 0 or RK_ECORRUPT (its data out of
 * bounds). */
int stor__logc_entry(const struct stor__logc *c, uint32_t j, raft_term *term,
                     uint8_t *type, const uint8_t **data, uint32_t *len);
/* Every entry in bounds, ends in order, the data all used (stor_check,
 * the fuzz target). 0 or RK_ECORRUPT. */
int stor__logc_check(const struct stor__logc *c);
/* The chunk of `shard` holding index i in txn: 0 with *first and *c,
 * RK_ENOTFOUND, RK_ECORRUPT or an LMDB error (translated). */
int stor__logc_find(MDB_cursor *cur, uint64_t shard, raft_index i,
                    raft_index *first, struct stor__logc *c);

/* Finds the last log entry of a shard: *idx 0 if the shard has none. */
int stor__log_last(MDB_txn *txn, MDB_dbi dbi, uint64_t shard, raft_index *idx,
                   raft_term *term);

/* Converts a data dir's per-entry log (format 3 and before: dbi `old`,
 * key shard | index, value term(8) type(1) data) into chunks in `logc`, in
 * txn. *n: entries converted. */
int stor__log_convert(MDB_txn *txn, MDB_dbi old, MDB_dbi logc, uint64_t *n);

/* Loads the working state of a shard for the current txn (writer). */
int stor__w_load(struct stor *s, MDB_txn *txn, struct stor_shard *sh);

/* A log entry packed in a batch's arena: the header, then len bytes of
 * data, then padding to 8 bytes. */
struct stor__bent {
    raft_term term;
    raft_index index;
    uint32_t len;
    uint8_t type;
    uint8_t pad[3];
};
static inline size_t stor__bent_size(uint32_t len)
{
    return sizeof(struct stor__bent) + (((size_t)len + 7) & ~(size_t)7);
}

/* A checkpoint commits the open transaction after this long or this many
 * WAL bytes (stor_thread.c). */
#define STOR__CKPT_US    1000000ull
#define STOR__CKPT_BYTES ((uint64_t)64 << 20)
/* When compaction waits for a checkpoint (it deletes nothing past the
 * checkpointed applied index) and the open transaction is small (cheap to
 * commit: light load), it is checkpointed after this long already. */
#define STOR__CKPT_COMPACT_US    100000ull
#define STOR__CKPT_COMPACT_BYTES ((uint64_t)2 << 20)
/* At most this many queued batches share one WAL sync. */
#define STOR__GROUP_MAX 64u

/* Log entries compaction may delete in one batch, all shards together. */
#define STOR__COMPACT_BUDGET 32768u

/* Log writing (stor_log.c). */
int stor__log_append(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                     const uint8_t *recs, uint32_t n);
int stor__log_compact_step(struct stor *s, MDB_txn *txn, struct stor_shard *sh);
/* Drops the whole log of sh in txn (destroy, snapshot install): its chunks
 * and its writer tail. */
int stor__log_drop(struct stor *s, MDB_txn *txn, struct stor_shard *sh);
/* Writes every shard's writer tail into the open transaction as chunks
 * (before the checkpoint's commit); LMDB's code. */
int stor__log_flush(struct stor *s, MDB_txn *txn);
/* Writes sh's writer tail as chunks into txn and empties it (each nested
 * batch of the replay, at its end). */
int stor__log_spill(struct stor *s, MDB_txn *txn, struct stor_shard *sh);
/* Empties every writer tail (a new open transaction begins). */
void stor__log_wt_reset(struct stor *s);
/* Nested batches of the replay: begin one (undo records dropped), or roll
 * the writer tails back to what they were before it. */
void stor__log_undo_begin(struct stor *s);
void stor__log_undo(struct stor *s);
void stor__log_free(struct stor *s);

/* The overlay's chunk allocator (stor_overlay.c), for the writer tails. */
void *stor__chunk_alloc(struct stor__chunk **list, size_t n);
void stor__chunks_reset(struct stor__chunk **list, bool keep_one);

/* Applying (stor_kv.c): one entry; fills *res. Returns an error only for
 * transaction failures (the result carries command-level statuses). */
int stor__apply_entry(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                      raft_term term, raft_index index, uint8_t type,
                      const void *data, uint32_t len, struct stor_result *res);
/* Value record: create rev(8) mod rev(8) value. */
#define STOR__VAL_HDR 16

/* ------------------------------------------------------ KV key encoding
 *
 * LMDB keys hold at most 511 bytes, user keys up to STOR_MAX_KEY. The kv
 * database stores
 *
 *   a SHORT key (1..STOR__KEY_INLINE bytes) as  shard(8) | key
 *       -> value record: create rev(8) mod rev(8) value
 *   a LONG key (more bytes)                  as  shard(8) | key[0..480) | h(8)
 *       -> slot: one or more entries  u32 klen | key | u32 rlen | record
 *
 * with h the XXH3-64 (seed STOR__KEY_HASH_SEED, big-endian) of the FULL key
 * and `record` the same value record as a short key's. Encoded short keys
 * are 9..488 bytes, long ones exactly STOR__KV_KEY_MAX (496): the two never
 * meet. A slot holds more than one entry only when two long keys share
 * their first 480 bytes AND their 64-bit hash; every lookup compares the
 * full key, so such a collision is handled, not assumed away.
 *
 * ORDER. LMDB orders a long key correctly against every short key and
 * every long key with another 480-byte prefix (the prefix decides first);
 * long keys sharing their 480-byte prefix form one contiguous run of slots
 * ordered by hash, which readers sort by full key (stor_kv_scan does).
 *
 * These helpers are the only code that knows the encoding: anything that
 * reads or writes the kv database (apply, reads, snapshots, stor_check, a
 * shard split copying a key range) goes through them.
 */
#define STOR__KEY_INLINE    480u
#define STOR__KV_KEY_MAX    (8u + STOR__KEY_INLINE + 8u)
#define STOR__KEY_HASH_SEED 0x726b6b65793a3031ull /* "rkkey:01" */

/* Encodes (shard, user key) into out (STOR__KV_KEY_MAX bytes); returns the
 * encoded length. klen must be 1..STOR_MAX_KEY (caller checks). */
size_t stor__kv_key_encode(uint8_t *out, uint64_t shard, const void *key,
                           size_t klen);
static inline bool stor__kv_key_is_long(size_t enc_len)
{
    return enc_len == STOR__KV_KEY_MAX;
}

/* One stored KV record. Pointers go into the read txn's map or the slot
 * being walked: valid until the transaction writes or ends. */
struct stor__kvrec {
    const uint8_t *key; /* the full user key */
    uint32_t klen;
    const uint8_t *rec; /* value record: create(8) mod(8) value */
    size_t rlen;
    uint64_t create_rev;
    uint64_t mod_rev;
    const uint8_t *val;
    uint32_t vlen;
};

/* Walks the records of one kv database entry (a short key: one record; a
 * long slot: its entries). k is the LMDB key WITH the shard prefix. */
struct stor__kvslot {
    const uint8_t *k;
    size_t klen;
    const uint8_t *p;
    size_t left;
    bool started;
};
void stor__kvslot_begin(struct stor__kvslot *it, const MDB_val *k,
                        const MDB_val *v);
/* 1: a record in *out; 0: no more; RK_ECORRUPT: a malformed entry (bad
 * lengths, revisions missing, a long key whose prefix or hash does not
 * match the slot's key). */
int stor__kvslot_next(struct stor__kvslot *it, struct stor__kvrec *out);

/* Finds a user key of `shard` in txn. RK_ENOTFOUND, RK_ECORRUPT, or an
 * LMDB error (translated). */
int stor__kv_find(struct stor *s, MDB_txn *txn, uint64_t shard,
                  const void *key, size_t klen, struct stor__kvrec *out);
/* Writes a user key's value record (create(8) mod(8) value, rlen >= 16),
 * replacing the key's old record if any. rec must not point into the map
 * (copy first). */
int stor__kv_write_rec(struct stor *s, MDB_txn *txn, uint64_t shard,
                       const void *key, size_t klen, const void *rec,
                       size_t rlen);
/* The same with the record given as its parts. */
int stor__kv_write(struct stor *s, MDB_txn *txn, uint64_t shard,
                   const void *key, size_t klen, uint64_t create,
                   uint64_t mod, const void *val, size_t vlen);
/* Deletes a user key. RK_ENOTFOUND if absent. */
int stor__kv_delete(struct stor *s, MDB_txn *txn, uint64_t shard,
                    const void *key, size_t klen);
/* Byte order of user keys (memcmp, then the shorter first). */
int stor__key_cmp(const void *a, size_t alen, const void *b, size_t blen);

/* Snapshots (stor_snapshot.c). Both return op-level statuses through *op_rc
 * and transaction failures through the return value. */
int stor__stage_chunk(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                      const struct raft_snap_chunk *c, int *op_rc);
int stor__install(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                  const struct raft_snapshot_meta *meta, int *op_rc);
/* Drops every export (the map is about to grow); caller holds map_lock
 * exclusively. */
void stor__exports_kill_all(struct stor *s);
void stor__exports_close(struct stor *s);
/* Session record size, and the largest one read (records of the eight-slot
 * form written by earlier builds); stor__sess_size_ok says whether a
 * stored or received session record has a size a session can have. */
#define STOR__SESS_SIZE (8 + 8 + 8 + STOR_SESSION_REPLIES * 29)
#define STOR__SESS_SIZE_MAX (8 + 8 + 8 + 8 * 29)
bool stor__sess_size_ok(size_t len);

/* Splits (stor_split.c). Applies a SPLIT command of shard sh at `index`
 * (fills res; transaction failures are returned). */
int stor__split_apply(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                      raft_term term, raft_index index,
                      const struct stor_cmd *c, struct stor_result *res);
/* Whether sh gave the key's arc away (*moved), as of the txn. */
int stor__split_moved(struct stor *s, MDB_txn *txn, struct stor_shard *sh,
                      const void *key, uint32_t klen, bool *moved);

/* A batch as a WAL record (stor_thread.c, format there): encode into o
 * (reset first; RK_ENOMEM); decode into b (reset first), bounds-checked:
 * RK_EPROTO for anything malformed, RK_ENOMEM. */
struct rk_buf;
int stor__batch_encode(const struct stor_batch *b, struct rk_buf *o);
int stor__batch_decode(const void *buf, size_t len, struct stor_batch *b);

/* Batch execution (stor_thread.c). */
/* Loads sh's working state into the batch's txn and lists it as touched
 * (its state is written and published at commit). RK_EUNKNOWNSHARD if it
 * does not exist (yet) in this txn. */
int stor__touch(struct stor *s, MDB_txn *txn, struct stor_batch *b,
                struct stor_shard *sh);
/* Opens the WAL (<path>/wal) and replays it from the lsn the last
 * checkpoint covers, then checkpoints and starts a fresh segment (before
 * the storage thread starts). errmsg says what failed. */
int stor__wal_recover(struct stor *s, uint64_t seg_size, char *errmsg);
/* meta record: the lsn of the last WAL record the checkpoint covers. */
#define STOR__META_WAL_LSN "wal_lsn"
void stor__thread_stop(struct stor *s);
int stor__thread_start(struct stor *s);
/* Checkpoint durability (stor_durable.c; the scheme is at its top).
 * check: before mdb_env_open, after a crash, makes LMDB open the last
 * durable checkpoint (RK_ECORRUPT and errmsg for a marker or data file it
 * cannot trust). start: after the WAL replay, names what is committed
 * durable and starts the sync thread; stop joins it (and closes ckpt).
 * The writer: submit hands a committed checkpoint to the sync thread;
 * reap takes its result (wait: for a pending one first), recycles the
 * WAL below it, or enters fail-stop; busy: a sync runs; close: at a clean
 * close, marks the marker CLEAN. */
int stor__dur_check(struct stor *s, char *errmsg);
int stor__dur_start(struct stor *s, char *errmsg);
void stor__dur_stop(struct stor *s);
int stor__dur_submit(struct stor *s, uint64_t txn, uint64_t lsn);
int stor__dur_reap(struct stor *s, bool wait);
bool stor__dur_busy(struct stor *s);
void stor__dur_close(struct stor *s);
/* Grows the map if the next txn (about `need` bytes) could fill it. */
int stor__maybe_grow(struct stor *s, size_t need, bool force);

/* ------------------------------------------------- redo journal (WAL)
 *
 * stor_wal.c: records appended to preallocated segment files in a
 * directory, one sync per group of durable batches (an O_DIRECT write
 * with RWF_DSYNC where the file system allows, else a buffered write and
 * fdatasync); read back from an LSN up to
 * the first torn or stale record; segments wholly below a checkpoint are
 * recycled. Format and flush order: the top of stor_wal.c. Single-threaded
 * (the writer). Errors set a message (stor__wal_errmsg). */
struct stor__wal;

/* Default segment size. */
#define STOR__WAL_SEG_SIZE ((uint64_t)64 << 20)

/* stor__wal_open flags. */
#define STOR__WAL_NO_SYNC  1u /* no fdatasync/fsync/O_DSYNC (benchmarks) */
#define STOR__WAL_BUFFERED 2u /* never O_DIRECT (tests; A/B measurements) */

struct stor__wal_stats {
    uint64_t bytes;         /* record bytes appended since open */
    uint64_t syncs;         /* syncs of appends (fdatasync or RWF_DSYNC) */
    uint64_t writes;        /* write calls into segments */
    uint64_t file_bytes;    /* segment bytes used: records and padding */
    bool direct;            /* the active segment is written O_DIRECT */
    uint64_t segments_made; /* segments preallocated (not recycled) */
    uint32_t segments;      /* live segments */
    uint32_t spares;        /* recycled segments waiting for reuse */
};

/* Opens (creating) the WAL directory and lists its segments (headers
 * checked: RK_ECORRUPT for a damaged one, RK_EVERSION for one of a newer
 * format). seg_size 0 = the default, else a multiple of 4096. flags:
 * STOR__WAL_*. errmsg (RK_ERRMSG_SIZE, may be NULL) says what failed.
 * RK_EINVAL, RK_ENOMEM, RK_EIO, RK_ECORRUPT, RK_EVERSION. */
int stor__wal_open(const char *dir, uint64_t seg_size, unsigned flags,
                   struct stor__wal **out, char *errmsg);
/* Calls cb(arg, lsn, payload, len) for every record with lsn > from, in
 * order, up to the end of the chain (the first torn or stale record); a
 * non-zero return of cb stops and is returned. *last: the last lsn passed
 * to cb (from if none). RK_ECORRUPT when records after `from` are missing
 * before a later segment (durable records were lost). Must precede
 * stor__wal_start when the directory holds segments. */
int stor__wal_replay(struct stor__wal *w, uint64_t from,
                     int (*cb)(void *arg, uint64_t lsn, const void *p,
                               size_t len),
                     void *arg, uint64_t *last);
/* Releases every segment (all must be covered by a checkpoint at
 * next_lsn - 1, else RK_EINVAL) and opens a fresh segment for records from
 * next_lsn on; the first start probes for O_DIRECT (logged at INFO).
 * RK_ENOSPC (preallocation), RK_EIO, RK_ENOMEM. */
int stor__wal_start(struct stor__wal *w, uint64_t next_lsn);
/* Appends one record; *lsn is its number. Buffered segments: written
 * (into the page cache), not synced. O_DIRECT segments: staged in memory
 * until stor__wal_write or stor__wal_sync (or a large stage) writes it.
 * Switches to a new segment when it does not fit (syncing the old one).
 * RK_ENOSPC, RK_EIO, RK_ETOOLARGE, RK_ENOMEM. */
int stor__wal_append(struct stor__wal *w, const void *p, size_t len,
                     uint64_t *lsn);
/* Writes every appended record to the file without a sync (a process
 * crash keeps it, a power loss may not): one write for the staged records
 * of an O_DIRECT segment, nothing for a buffered one. RK_EIO. */
int stor__wal_write(struct stor__wal *w);
/* Makes every appended record durable: one O_DIRECT write with RWF_DSYNC
 * of the staged records, or one fdatasync; nothing if nothing is new.
 * RK_EIO, RK_ENOSPC. */
int stor__wal_sync(struct stor__wal *w);
/* Drops (recycles as spares, at most 2, or deletes) the segments, except
 * the active one, whose records are all <= ckpt. RK_EIO. */
int stor__wal_release(struct stor__wal *w, uint64_t ckpt);
/* The lsn the next append gets. */
uint64_t stor__wal_next_lsn(const struct stor__wal *w);
void stor__wal_stats(const struct stor__wal *w, struct stor__wal_stats *out);
const char *stor__wal_errmsg(const struct stor__wal *w);
void stor__wal_close(struct stor__wal *w);

#endif
