/* Durable storage on LMDB: Raft logs, state, KV, sessions, snapshots. */
#ifndef STOR_H
#define STOR_H

/*
 * One struct stor per data dir holds ONE LMDB environment with these named
 * databases, opened once at start-up in one write transaction:
 *
 *   logc      shard(8 BE) | index(8 BE) -> a chunk of log entries from
 *                                          that index on (format 4; up to
 *                                          3 one record per entry in `log`;
 *                                          see "log chunks" in stor_int.h)
 *   state     shard(8 BE)               -> hard state, conf state (as of the
 *                                          last log entry), log base
 *                                          (compacted index/term), applied
 *                                          index/term/conf, staging status
 *   kv        shard(8 BE) | key         -> create rev(8) mod rev(8) value
 *             (a key over 480 bytes:
 *              shard | key[0..480) | hash(8) -> full key(s) and records;
 *              see "KV key encoding" in stor_int.h)
 *   sessions  shard(8 BE) | client(8 BE)-> exactly-once window (see below)
 *   stage     shard(8 BE) | seq(4 BE)   -> received snapshot chunks
 *   meta      name                      -> cluster id, node id, format
 *
 * Keys are big-endian so one shard's log/data is one contiguous range.
 *
 * WAL. In front of LMDB sits a redo journal, <data dir>/wal/ (stor_wal.c):
 * every batch is one record there (its ops), and the batches run in ONE
 * LMDB write transaction that stays open across batches and is committed
 * as a CHECKPOINT (with the WAL position it covers, in `meta`) every
 * second or 64 MiB of WAL (100 ms when compaction waits for it and the
 * transaction is small), or at once when LMDB must be current (shard
 * create/destroy, snapshot install, SPLIT, stor_batch_commit, and readers
 * of LMDB only, see THREADS). stor_open replays the WAL after the last
 * checkpoint. Why (the figures): src/storage/README.md.
 *
 * THREADS. The owner (the server's loop thread) calls everything here.
 * Batches are written by the storage thread only (stor_batch_submit;
 * stor_batch_commit hands its batch to it and waits). The read functions
 * use short read transactions (MDB_NOTLS), which see the last checkpoint,
 * plus what the open transaction changed since, kept in memory:
 * stor_kv_get consults an overlay of the KV writes first, stor_kv_scan
 * merges a copy of the overlay's entries in its range with LMDB, and the
 * log operations a per-shard tail of the entries not checkpointed yet; all
 * show a batch once it is done (its callback about to run). A new snapshot
 * export, stor_split_out, stor_session_last_seq, stor_shard_load,
 * stor_check and stor_backup read LMDB only: they first ask for a
 * checkpoint and wait for it (an LMDB commit, ~10-100 ms under load, more
 * if the previous checkpoint's sync still runs; nothing when nothing is
 * open), so the loop thread should
 * not call them on a hot path. The storage thread grows the map between
 * checkpoints; read transactions are coordinated with that growth
 * internally.
 *
 * DURABILITY. A batch that holds a log append, a term or vote change, a
 * membership change, a snapshot stage/install or a shard create/destroy is
 * durable when its callback runs: its WAL record is (one sync of a
 * preallocated segment, shared by the batches queued together: an O_DIRECT
 * write with RWF_DSYNC, or a buffered write and fdatasync); the Raft
 * core's votes and acks rely on it. A batch of applies, commit-index
 * changes and compaction only is done once its record is written, without
 * a sync: a power loss may undo it (and only batches after the last sync),
 * which leaves a prefix of the batches, exactly as a process crash
 * between batches does; the entries it applied are durable in the log of
 * a quorum and are applied again. A checkpoint is an LMDB commit without
 * a sync; a thread of the store's own then syncs data.mdb and names the
 * checkpoint durable in the marker `ckpt`, and only then are the WAL
 * segments below it recycled. After a crash stor_open goes back to the
 * last durable checkpoint if a newer one was never synced, and replays the
 * WAL from it (stor_durable.c). A batch followed by a checkpoint at once
 * (shard create/destroy, install, SPLIT, stor_batch_commit) is made
 * durable by a WAL sync. `unsafe_no_sync` (MDB_NOSYNC, no WAL sync)
 * exists for benchmarks only.
 *
 * FAIL-STOP. A failed WAL write, sync or segment preallocation, a failed
 * checkpoint, a full disk (RK_ENOSPC), a full map at its maximum size or
 * corruption found while writing puts the store into fail-stop: that batch
 * and every later one completes with an error (RK_EFAILSTOP after the
 * first) and NOTHING is reported durable afterwards; the open transaction
 * is dropped (a restart replays the WAL). Reads keep working on what was
 * done before. stor_failed() tells.
 *
 * ERRORS. Every function returns 0 or a negative RK_E* code (rk_err.h):
 *   RK_EINVAL       bad argument (a caller bug; nothing was written)
 *   RK_ENOMEM       allocation failed
 *   RK_ENOTFOUND    key / shard / entry absent
 *   RK_ECOMPACTED   log index below the first stored index
 *   RK_EUNAVAIL_LOG log index past the last stored index
 *   RK_ESTALE       snapshot replaced by a newer one (restart from chunk 0)
 *   RK_EPROTO       malformed command, chunk or record from the network
 *   RK_ETOOLARGE    key or value over STOR_MAX_KEY / STOR_MAX_VALUE
 *   RK_ENOSPC       disk or map full (fail-stop)
 *   RK_EIO          I/O error (fail-stop when writing)
 *   RK_ECORRUPT     the data does not decode (fail-stop when writing)
 *   RK_EFAILSTOP    the store stopped after an earlier failure
 *   RK_EFOREIGN     data dir of another cluster or node (stor_open)
 *   RK_EVERSION     data dir of an unknown format version (stor_open)
 *   RK_EBUSY        data dir locked by another process (stor_open)
 *   RK_EUNKNOWNSHARD the shard does not exist here
 * stor_errmsg() gives a sentence naming the problem for the last failure.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"
#include "rk_err.h"

/* Format version written to `meta`. Version 2 added long keys (over 480
 * bytes, see stor_int.h) to the kv database; version 3 added the WAL
 * (`wal/`, whose batches since the last checkpoint live nowhere else) and
 * client session records holding only the newest reply; version 4 keeps
 * the Raft logs in chunks of entries (database `logc`, stor_int.h)
 * instead of one record per entry (`log`), and commits checkpoints without
 * a sync, naming the durable one in `ckpt` (after a crash data.mdb's
 * newest meta may point at pages never written, which only a build that
 * reads `ckpt` knows to pass over). A version 1 to 3 dir is read as it is,
 * its log converted, and marked 4 when opened, so an older build refuses
 * it afterwards ("format version 4") instead of misreading it, ignoring
 * the WAL, finding no log or opening a torn checkpoint. Any other version
 * fails with RK_EVERSION. */
#define STOR_FORMAT_VERSION 4u

/* Longest key (64 KiB). Keys over 480 bytes are stored under a prefix and
 * a hash of the full key (stor_int.h); lookups compare the full key.
 * Longer keys are refused with RK_ETOOLARGE. */
#define STOR_MAX_KEY 65536u
/* Longest value. */
#define STOR_MAX_VALUE (8u << 20)
/* Default and most bytes of one snapshot chunk (a chunk holding one record
 * bigger than the target may exceed it: at most one record plus framing). */
#define STOR_SNAP_CHUNK_DEFAULT (1u << 20)
/* Exactly-once window: seqs below max_seq - 63 are "too old" (RK_ESTALE). */
#define STOR_SESSION_WINDOW 64u
/* Replies kept per client session: the newest one. libringkv holds a
 * session for one write at a time, so a retry carries the session's newest
 * seq; an older applied seq is answered RK_ESTALE with STOR_RES_DUPLICATE.
 * (Eight slots made a 256-byte record written per put per shard; records of
 * that older form are still read, see stor_kv.c.) */
#define STOR_SESSION_REPLIES 1u
/* Log entries deleted per shard per batch by compaction. */
#define STOR_COMPACT_STEP 4096u

struct stor;
struct stor_shard;
struct stor_batch;

/* =============================================================== opening */

struct stor_opts {
    const char *path;          /* data dir; created (mode 0700) with `create` */
    uint64_t cluster_id;       /* 0 = accept the stored one (must exist) */
    uint64_t node_id;          /* 0 = accept the stored one (must exist) */
    bool create;               /* initialise an empty/missing dir */
    bool unsafe_no_sync;       /* MDB_NOSYNC: benchmarks only, loses data */
    size_t map_size;           /* initial map size; 0 = 64 MiB */
    size_t max_map_size;       /* growth limit; 0 = 1 TiB */
    uint32_t snap_chunk_bytes; /* 0 = STOR_SNAP_CHUNK_DEFAULT */
    /* Longest time between checkpoints (commits of the open LMDB txn) while
     * something is open; 0 = 1000 ms. Tests that watch the overlay set it
     * long so that no checkpoint comes by the clock. */
    uint32_t checkpoint_ms;
    /* Decodes a RAFT_ENTRY_CONF payload (pass raft_conf_change_decode).
     * Applying such an entry folds the change into the shard's applied
     * configuration, which snapshots carry. NULL: conf entries are counted
     * as applied but the applied configuration only changes through
     * stor_batch_set_applied_conf / snapshot installs. */
    int (*conf_decode)(const void *buf, size_t len,
                       struct raft_conf_change *out);
    /* The ring position of a key (pass shard_key_hash). Needed by SPLIT
     * commands (which keys move) and by writes to a shard that gave arcs
     * away; NULL: SPLIT commands fail with RK_EINVAL. */
    uint64_t (*key_hash)(const void *key, size_t len);
    /* WAL segment size (a multiple of 4096); 0 = 64 MiB. Tests use small
     * ones. */
    uint64_t wal_segment_bytes;
    /* Write the WAL through the page cache + fdatasync even where O_DIRECT
     * works (tests of that path, A/B measurements). The environment
     * variable RINGKV_WAL_IO=buffered does the same for any program. */
    bool wal_buffered;
};

/* Opens (or with opts->create, creates) the store at opts->path. On failure
 * *out is NULL and errmsg (RK_ERRMSG_SIZE bytes, may be NULL) says what is
 * wrong, e.g. "data dir /d belongs to cluster 0x1f, not 0x2a".
 * Errors: RK_EINVAL, RK_ENOTFOUND (no store and !create), RK_EFOREIGN,
 * RK_EVERSION, RK_ECORRUPT, RK_EBUSY, RK_EIO, RK_ENOSPC, RK_ENOMEM. */
int stor_open(const struct stor_opts *opts, struct stor **out, char *errmsg);

/* Stops the storage thread (after the batches already submitted complete),
 * ends every export and closes the environment. NULL is fine. */
void stor_close(struct stor *s);

/* The first failure's code (0 while healthy) and message. */
int stor_failed(const struct stor *s);
const char *stor_errmsg(const struct stor *s);

void stor_identity(const struct stor *s, uint64_t *cluster_id,
                   uint64_t *node_id);

/* Consistent online copy of the whole environment into directory `path`
 * (created if missing, must not hold a data.mdb), compacted
 * (mdb_env_copy2 + MDB_CP_COMPACT). Blocks for the copy: call it from a
 * worker thread, not the loop. Writers keep going; map growth waits.
 * RK_EEXIST, RK_EIO, RK_ENOSPC. */
int stor_backup(struct stor *s, const char *path);

/* Verifies the whole store in one read txn (offline tools, tests): every
 * state record decodes; each shard's log is contiguous from first to last
 * index with non-decreasing terms; KV records are well-formed with
 * create <= mod revision <= applied index; session records have their size;
 * no log/kv/session/staging key belongs to a shard without state. Returns 0
 * or RK_ECORRUPT with errmsg (RK_ERRMSG_SIZE) naming the first problem.
 * Reads everything: slow on a large store. */
int stor_check(struct stor *s, char *errmsg);

struct stor_stats {
    uint64_t map_size; /* current map size */
    uint64_t map_used; /* bytes up to the highest page in use */
    uint64_t page_size;
    uint64_t batches; /* batches done (one WAL record each) */
    uint64_t lazy_batches; /* batches that needed no WAL sync */
    uint64_t merged_batches; /* durable batches that shared a WAL sync */
    uint64_t grows;   /* map growths */
    uint64_t checkpoints; /* LMDB commits of the open transaction */
    uint64_t checkpoint_us; /* time spent in them (the storage thread
                               writes no batch meanwhile) */
    /* A checkpoint commits without a sync; a thread of its own then syncs
     * data.mdb and names the checkpoint durable (file `ckpt`). */
    uint64_t checkpoint_syncs;    /* those syncs */
    uint64_t checkpoint_sync_us;  /* their time (not the storage thread's) */
    uint64_t checkpoint_sync_waits; /* commits that waited for the previous
                                       checkpoint's sync (one at most is
                                       not durable) */
    uint64_t checkpoint_sync_wait_us; /* of checkpoint_us, that waiting */
    uint64_t checkpoint_deferred; /* timed checkpoints put off meanwhile */
    bool checkpoint_reverted; /* stor_open found the newest checkpoint not
                                 durable after a crash and opened the one
                                 before (the WAL replayed the rest) */
    uint64_t wal_bytes;   /* WAL bytes appended since open */
    uint64_t wal_syncs;   /* syncs of the WAL (fdatasync or RWF_DSYNC) */
    uint64_t wal_writes;  /* write calls into WAL segments */
    uint64_t wal_file_bytes; /* segment bytes used: records + padding */
    bool wal_direct;      /* the WAL is written with O_DIRECT */
    uint64_t wal_replayed; /* WAL records replayed by stor_open */
    uint32_t n_shards;
    uint32_t n_exports; /* open snapshot exports */
};
void stor_stats(struct stor *s, struct stor_stats *out);

/* ================================================================ shards */

/* Everything a shard's Raft node needs at start (struct raft_config). */
struct stor_shard_state {
    struct raft_hard_state hs;
    struct raft_conf_state conf; /* as of the last log entry */
    raft_index first_index;      /* log base index + 1 */
    raft_index last_index;
    raft_index applied; /* state machine applied index */
    raft_term applied_term;
    struct raft_conf_state applied_conf; /* configuration at `applied` */
    struct raft_snapshot_meta snap; /* latest installed snapshot (0 = none) */
};

/* The handle of an existing shard (created by a committed batch), or NULL.
 * Handles stay valid until stor_close(). */
struct stor_shard *stor_shard_get(struct stor *s, uint64_t shard);
uint64_t stor_shard_id(const struct stor_shard *sh);
/* Ids of the existing shards, ascending; returns how many there are (fills
 * at most `max`). */
uint32_t stor_shard_list(struct stor *s, uint64_t *ids, uint32_t max);
/* Reads the shard's durable state (short read txn). RK_EUNKNOWNSHARD. */
int stor_shard_load(struct stor_shard *sh, struct stor_shard_state *out);

/* =============================================================== Raft log */

/*
 * struct raft_log_ops with a struct stor_shard * as ctx. first/last index and
 * the last term come from an in-memory cache updated when a batch is done
 * (WAL-durable; no transaction); term/entries come from the shard's
 * in-memory tail for entries not checkpointed yet, else from a short read
 * txn (a read that spans both returns the LMDB part: fewer entries).
 * term(first_index - 1) is the term of the compaction point. Compaction
 * deletes nothing past the applied index of the last checkpoint (the state
 * a new export describes).
 *
 * SNAPSHOTS ARE THE STATE MACHINE (as in TiKV): snapshot_meta describes the
 * shard's state as it is now (applied index/term/conf), so its index is
 * >= first_index - 1: the log keeps entries between the compaction point and
 * the applied index. Its conf is the configuration AS OF that index (see
 * conf_decode); a driver rebuilding membership replays only the CONF entries
 * after meta.index. snapshot_meta pins that state: it opens an export, a
 * read txn on which snapshot_chunk(index, seq) cuts chunk `seq` (any order,
 * any number of times, always the same bytes) while writers keep going.
 * Later calls return the same export while it is younger than 10 s or a
 * chunk of it was asked for in the last 10 s (a transfer in progress), and
 * the log has not been compacted past it. RK_ESTALE when that export is gone
 * (no chunk within 5 s of its creation, 60 s without a chunk, replaced, or
 * dropped to grow the map): call snapshot_meta again, restart from chunk 0.
 * At most 2 exports per shard and 64 in all are open.
 */
extern const struct raft_log_ops stor_log_ops;

/* The same operations, callable directly. */
raft_index stor_log_first_index(struct stor_shard *sh);
raft_index stor_log_last_index(struct stor_shard *sh);
raft_term stor_log_last_term(struct stor_shard *sh);
int stor_log_term(struct stor_shard *sh, raft_index i, raft_term *out);
int stor_log_entries(struct stor_shard *sh, raft_index lo, raft_index hi,
                     size_t max_bytes, struct raft_entry **out,
                     uint32_t *n_out);

/* Drops exports idle for more than 60 s (the server may call it every
 * few seconds; exports are also checked lazily). */
void stor_exports_expire(struct stor *s);

/* ========================================================= KV commands */

/*
 * The state machine's commands, carried in RAFT_ENTRY_NORMAL payloads.
 * Encoding (all integers big-endian):
 *   u8 version (1) | u8 op | u64 client_id | u64 seq | op fields
 *   PUT:  u32 klen key | u32 vlen value
 *   DEL:  u32 klen key
 *   CAS:  u8 flags | u32 klen key | u64 expect_rev | u32 elen expect_value
 *         | u32 vlen value
 *   EXPIRE_SESSIONS: u64 before_index
 *   SPLIT: u32 recipient | u32 n | n * (u64 first, u64 last)
 * client_id 0 means "no session" (no exactly-once dedup).
 */
enum stor_cmd_op {
    STOR_CMD_PUT = 1,
    STOR_CMD_DEL = 2,
    STOR_CMD_CAS = 3,
    /* Drops client sessions whose last write is below before_index
     * (deterministic: it is in the log). */
    STOR_CMD_EXPIRE_SESSIONS = 4,
    /* Shard split (stor_split.c): in ONE transaction the keys whose ring
     * hash lies in the arcs move to the new shard `split_to` (created here
     * with this entry's index and term as its log base, the donor's
     * applied configuration, and a copy of the client sessions), and the
     * donor records the arcs under STOR_SPLIT_KEY: from then on its writes
     * to those arcs fail with RK_EWRONGSHARD. Applying it again (same
     * recipient) changes nothing. If the recipient already exists on this
     * node (an empty replica filled by its own leader) the keys are only
     * deleted here. */
    STOR_CMD_SPLIT = 5,
};

/* Most arcs of one SPLIT command. */
#define STOR_SPLIT_MAX_ARCS 65536u
/* The donor's record of the arcs it gave away, a reserved key in its KV
 * space (so snapshots carry it): u8 version (1), u32 n, n * (u32 to,
 * u64 first, u64 last). Clients must not use keys starting with
 * STOR_RESERVED_PREFIX. */
#define STOR_RESERVED_PREFIX     "\xff" "ringkv/"
#define STOR_RESERVED_PREFIX_LEN (sizeof(STOR_RESERVED_PREFIX) - 1)
#define STOR_SPLIT_KEY           "\xff" "ringkv/split-out"
#define STOR_SPLIT_KEY_LEN       (sizeof(STOR_SPLIT_KEY) - 1)

/* CAS flags. Default: compare the current value with expect_value (the key
 * must exist). */
#define STOR_CAS_REVISION                                                      \
    0x1u /* compare the key's mod revision with                                \
            expect_rev; 0 = the key must be absent */
#define STOR_CAS_DELETE                                                        \
    0x2u /* on match delete the key instead of                                 \
            writing value */

struct stor_cmd {
    uint8_t op; /* enum stor_cmd_op */
    uint8_t cas_flags;
    uint64_t client_id;
    uint64_t seq;
    const void *key;
    uint32_t klen;
    const void *value;
    uint32_t vlen;
    uint64_t expect_rev;
    const void *expect;
    uint32_t elen;
    uint64_t before_index; /* EXPIRE_SESSIONS */
    /* SPLIT: the recipient and n_arcs arcs [first, last] of ring hashes.
     * Encode reads `arcs` (host order, first/last pairs); decode points
     * `arcs_be` into the buffer (read them with stor_cmd_arc). */
    uint32_t split_to;
    uint32_t n_arcs;
    const uint64_t *arcs;
    const void *arcs_be;
};

/* Arc i of a decoded SPLIT command. */
void stor_cmd_arc(const struct stor_cmd *c, uint32_t i, uint64_t *first,
                  uint64_t *last);

/* Bytes stor_cmd_encode() writes for cmd. */
size_t stor_cmd_size(const struct stor_cmd *cmd);
/* Encodes into buf (cap bytes). RK_EINVAL (unknown op, NULL data with a
 * length), RK_ETOOLARGE (key/value limits, or cap too small); sets *len. */
int stor_cmd_encode(const struct stor_cmd *cmd, void *buf, size_t cap,
                    size_t *len);
/* Decodes; pointers in *out point into buf. Bounds-checked: truncated,
 * trailing or unknown bytes give RK_EPROTO, limits RK_ETOOLARGE. */
int stor_cmd_decode(const void *buf, size_t len, struct stor_cmd *out);

/* ============================================================== applying */

/* Result of applying one entry (also what a session caches as its reply). */
struct stor_result {
    uint64_t shard;
    raft_index index;
    uint64_t client_id;
    uint64_t seq;
    /* RK_OK; RK_ENOTFOUND (DEL of a missing key, CAS on a missing key);
     * RK_ECASMISMATCH; RK_EPROTO / RK_ETOOLARGE (garbage or oversized
     * command: skipped, deterministically on every replica); RK_ESTALE (seq
     * older than the session window, or a duplicate whose reply is no
     * longer cached: it was not applied again). */
    int status;
    /* PUT/CAS success: the new mod revision (= index). DEL: the deleted
     * key's last revision. CAS mismatch: the key's current revision (0 if
     * absent). */
    uint64_t revision;
    uint64_t prev_revision; /* PUT/CAS: the overwritten revision, 0 = new */
    uint8_t flags;          /* STOR_RES_* */
};
#define STOR_RES_DUPLICATE                                                     \
    0x1u                      /* (client, seq) was applied before: this is     \
                                 the cached original reply */
#define STOR_RES_SKIPPED 0x2u /* index <= applied index: not applied */
#define STOR_RES_NOCMD   0x4u /* NOOP/CONF entry: nothing to answer */

/* ================================================================= reads */

struct stor_value {
    void *data; /* malloc'd (even for an empty value); free() it */
    uint32_t len;
    uint64_t revision;        /* mod revision: index of the last write */
    uint64_t create_revision; /* index of the write that created it */
};

/* Reads one key from the shard's committed state. RK_ENOTFOUND,
 * RK_ETOOLARGE (key), RK_EINVAL, RK_ENOMEM, RK_ECORRUPT. */
int stor_kv_get(struct stor *s, uint64_t shard, const void *key, size_t klen,
                struct stor_value *out);

struct stor_kv_item {
    const void *key;
    uint32_t klen;
    const void *value;
    uint32_t vlen;
    uint64_t revision;
    uint64_t create_revision;
};

struct stor_scan {
    struct stor_kv_item *items; /* ONE malloc'd block (items then bytes):
                                   free(items); NULL when n == 0 */
    uint32_t n;
    bool more; /* stopped by limit/max_bytes: resume after the last key */
};

/* Keys of `shard` starting with prefix (plen 0 = all), in byte order (long
 * keys included), from `start` (inclusive; NULL = the first with the
 * prefix; up to STOR_MAX_KEY + 1 bytes, so that "after key K" = K | 0x00
 * fits), at most `limit` items (0 = no limit) and about max_bytes of
 * keys+values (0 = 4 MiB; at least one item). What the open transaction
 * wrote is seen (the overlay is merged in: its value wins, its delete
 * hides the key), as of one point between batches; no checkpoint is
 * waited for. Cost: one walk of the whole overlay (all shards' writes
 * since the last checkpoint) under its read lock, and a copy of its
 * entries in the range, whatever the limit; long keys that share their
 * first 480 bytes are read and sorted together; deleted keys not yet
 * checkpointed are read from LMDB and skipped. RK_EINVAL, RK_ETOOLARGE,
 * RK_ENOMEM, RK_ECORRUPT, RK_EBUSY (checkpoints kept coming between the
 * overlay copy and the read transaction, 8 times; not seen in practice). */
int stor_kv_scan(struct stor *s, uint64_t shard, const void *prefix,
                 size_t plen, const void *start, size_t slen, uint32_t limit,
                 size_t max_bytes, struct stor_scan *out);

/* An arc of ring hashes [first, last] a shard gave to shard `to`. */
struct stor_split_arc {
    uint64_t first;
    uint64_t last;
    uint32_t to;
};

/* The arcs `shard` gave away (its STOR_SPLIT_KEY record, as committed), in
 * a malloc'd array (*out NULL when n is 0). RK_ECORRUPT, RK_ENOMEM. */
int stor_split_out(struct stor *s, uint64_t shard, struct stor_split_arc **out,
                   uint32_t *n);
/* Decodes such a record. RK_ECORRUPT, RK_ENOMEM. */
int stor_split_parse(const void *buf, size_t len, struct stor_split_arc **out,
                     uint32_t *n);

/* The last seq applied for a client session (0 if none): tests, admin. */
int stor_session_last_seq(struct stor *s, uint64_t shard, uint64_t client_id,
                          uint64_t *seq);

/* ================================================================ batches */

/*
 * A batch collects work for MANY shards; it is written as ONE WAL record
 * and runs atomically (a nested transaction of the open one, see WAL at
 * the top), made durable by ONE sync. Operations run in the order they were
 * added. Every add function COPIES what it is given (the caller may free or
 * reuse its memory at once, e.g. a raft_ready before raft_advance). An add
 * function fails only with RK_ENOMEM or RK_EINVAL (then the batch is
 * unchanged).
 *
 * Whole-batch errors (reported by commit/callback): nothing of the batch is
 * written. RK_EINVAL / RK_ECOMPACTED / RK_EUNKNOWNSHARD for operations that
 * do not fit the stored state (a driver bug: the store stays usable), or a
 * fail-stop error (see top).
 */

/* Called on the storage thread when a submitted batch is done (status 0:
 * durable). Keep it short: e.g. uv_async_send(). */
typedef void (*stor_done_cb)(struct stor_batch *b, int status, void *arg);
/* Status of an applied cb for a batch that needs no durability. */
#define STOR_APPLIED_LAZY 1

int stor_batch_new(struct stor_batch **out);
void stor_batch_free(struct stor_batch *b);
/* Empties the batch for reuse (keeps its memory). */
void stor_batch_reset(struct stor_batch *b);
bool stor_batch_empty(const struct stor_batch *b);
/* Payload bytes and operations added so far (to cap a batch's size). */
size_t stor_batch_bytes(const struct stor_batch *b);

/* Creates a shard with a bootstrap configuration (empty log, applied 0).
 * RK_EEXIST at commit if it exists. */
int stor_batch_create_shard(struct stor_batch *b, uint64_t shard,
                            const struct raft_conf_state *conf);
/* Deletes a shard and all its data (log, kv, sessions, staging, state). */
int stor_batch_destroy_shard(struct stor_batch *b, uint64_t shard);

/* Appends entries (consecutive indexes). If ents[0].index <= the stored
 * last index, the stored suffix from that index is truncated first
 * (conflicting suffix). Entries at or below the shard's applied index are
 * committed, hence identical to the stored ones (Log Matching): they are
 * skipped, never rewritten. At commit: RK_EINVAL on a gap after the last
 * index. */
int stor_batch_append(struct stor_batch *b, uint64_t shard,
                      const struct raft_entry *ents, uint32_t n);
int stor_batch_set_hard_state(struct stor_batch *b, uint64_t shard,
                              const struct raft_hard_state *hs);
/* The configuration raft_ready.conf carries (the group's bootstrap
 * configuration, index 0). While nothing is applied (a replica created
 * empty), it also becomes the applied configuration, which CONF entries
 * fold onto as they are applied. */
int stor_batch_set_conf(struct stor_batch *b, uint64_t shard,
                        const struct raft_conf_state *conf);
/* Overrides the applied configuration (rarely needed; see conf_decode). */
int stor_batch_set_applied_conf(struct stor_batch *b, uint64_t shard,
                                const struct raft_conf_state *conf);

/* Stages one received snapshot chunk (durably, with the batch). Chunk 0
 * always starts a new staging (another sender may cut differently); the
 * others must follow in order for the same snapshot (index and term); a
 * repeated chunk below the next expected seq is accepted as a
 * retransmission. A bad chunk is NOT staged and does not fail the batch:
 * its status is returned by stor_batch_op_status(*op) (op may be NULL):
 * RK_EPROTO for a bad frame (magic, checksum, header fields that do not
 * match the chunk's meta/seq/last), RK_EINVAL for a chunk out of order or
 * with meta.index 0. */
int stor_batch_stage_chunk(struct stor_batch *b, uint64_t shard,
                           const struct raft_snap_chunk *chunk, uint32_t *op);
/* Installs the completely staged snapshot `meta` atomically: the shard's kv
 * and sessions are replaced, applied = meta->index, applied conf and conf =
 * meta->conf, the log is reset to start after meta->index, hs.commit is
 * raised to meta->index, the staging is cleared. If nothing complete is
 * staged for meta the op fails alone (RK_EINVAL via stor_batch_op_status). */
int stor_batch_install_snapshot(struct stor_batch *b, uint64_t shard,
                                const struct raft_snapshot_meta *meta,
                                uint32_t *op);

/* Convenience: adds rd's snapshot chunk, snapshot install, entries, hard
 * state and conf for `shard`, in that order. */
int stor_batch_add_ready(struct stor_batch *b, uint64_t shard,
                         const struct raft_ready *rd);

/* Applies committed entries (consecutive, in order) to the shard's state
 * machine: KV writes, client sessions and the new applied index/term in the
 * same transaction. Entries <= the applied index are skipped
 * (STOR_RES_SKIPPED); a gap after it fails the batch (RK_EINVAL). One
 * struct stor_result per entry, from index *first_result on (may be NULL). */
int stor_batch_apply(struct stor_batch *b, uint64_t shard,
                     const struct raft_entry *ents, uint32_t n,
                     uint32_t *first_result);

/* Compacts the log up to `index` (entries <= index go; index must be <= the
 * applied index at commit, else it is lowered to it). Deletes at most
 * STOR_COMPACT_STEP entries in this batch; the rest goes in later batches
 * (the store remembers the target durably), so first_index rises in steps. */
int stor_batch_compact(struct stor_batch *b, uint64_t shard, raft_index index);

/* After completion: the results of stor_batch_apply, and per-op status. */
uint32_t stor_batch_n_results(const struct stor_batch *b);
const struct stor_result *stor_batch_result(const struct stor_batch *b,
                                            uint32_t i);
int stor_batch_op_status(const struct stor_batch *b, uint32_t op);
/* The first non-zero op status (staged chunk, install) of `shard` in the
 * batch, 0 if none: e.g. to answer a snapshot chunk with a reject after
 * stor_batch_add_ready(). */
int stor_batch_shard_status(const struct stor_batch *b, uint64_t shard);

/* Writes the batch and waits for it (start-up, tests, tools): the storage
 * thread runs it like a submitted one, then checkpoints, so that LMDB
 * holds it when this returns. Returns the batch's status. */
int stor_batch_commit(struct stor *s, struct stor_batch *b);

/* Hands the batch to the storage thread; cb(b, status, arg) runs there when
 * it is durable or failed. Batches are written in submission order; while
 * one syncs the next may be gathered and submitted (double buffering). The
 * batch belongs to the store until cb. RK_ESHUTDOWN after stor_close began,
 * RK_EFAILSTOP (cb is not called then). */
int stor_batch_submit(struct stor *s, struct stor_batch *b, stor_done_cb cb,
                      void *arg);
/* Before stor_batch_submit: cb(b, status, arg) also runs on the storage
 * thread once the batch's ops ran, before its commit and sync, if it
 * applies anything or needs no durability. The apply results
 * (stor_batch_result) are then final and may be read (never the batch
 * otherwise) until the done cb: a caller may answer clients from them,
 * since applied entries were committed (durable on a quorum) and applying
 * is deterministic; if the commit then fails, the store fail-stops and a
 * restart applies the entries again. The applied state itself is visible
 * to readers only after the done cb.
 *
 * status STOR_APPLIED_LAZY says the batch holds nothing that needs
 * durability (applies, commit index, compaction: no append, term or vote,
 * membership or snapshot change): its done cb follows without a WAL sync.
 * status 0: its done cb comes after the WAL sync. */
void stor_batch_on_applied(struct stor_batch *b, stor_done_cb cb, void *arg);

/* ============================================================= snapshots */

/* Direct snapshot access for tools and tests (the Raft core goes through
 * stor_log_ops). Exports the shard's current state: meta, then chunks by
 * seq until *last. Same errors as the log ops. */
int stor_snapshot_meta(struct stor_shard *sh, struct raft_snapshot_meta *out);
int stor_snapshot_chunk(struct stor_shard *sh, raft_index snap_index,
                        uint32_t seq, void **data, uint32_t *len, bool *last);

#endif
