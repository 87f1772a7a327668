/* The log in chunks (stor_log.c): writer tails written at checkpoints,
 * reads from chunks, truncation and compaction across chunk and tail
 * boundaries, replay after a crash and after a full map, and the
 * conversion of a format 3 data dir (one record per entry). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "stor_int.h"
#include "stor_test_util.h"

/* Entry i of term t: len(i) bytes, each derived from (i, t). The lengths
 * vary (0 to ~2 KiB) so that chunks hold entries of every size. */
static uint32_t ent_len(raft_index i)
{
    return (uint32_t)((i * 7919u) % 2048u);
}

static void ent_fill(uint8_t *p, raft_index i, raft_term t)
{
    uint32_t n = ent_len(i);
    for (uint32_t j = 0; j < n; j++)
        p[j] = (uint8_t)(i * 31u + t * 17u + j);
}

static struct stor *open_opts(const char *dir, size_t map, uint32_t ckpt_ms)
{
    struct stor_opts o = {.path = dir,
                          .cluster_id = 1,
                          .node_id = 1,
                          .create = true,
                          .map_size = map,
                          .checkpoint_ms = ckpt_ms,
                          .conf_decode = tu_conf_decode};
    struct stor *s = NULL;
    char err[RK_ERRMSG_SIZE];
    if (stor_open(&o, &s, err)) {
        fprintf(stderr, "stor_open: %s\n", err);
        abort();
    }
    return s;
}

/* Appends [first, first + n) of term t to shard (a batch; `commit`: with a
 * checkpoint right after it, else in the open transaction). */
static int append_ex(struct stor *s, uint64_t shard, raft_index first,
                     uint32_t n, raft_term t, bool commit, bool apply)
{
    struct stor_batch *b;
    struct raft_entry *e = calloc(n, sizeof(*e));
    uint8_t *buf = malloc((size_t)n * 2048 + 1);
    assert_non_null(e);
    assert_non_null(buf);
    assert_int_equal(stor_batch_new(&b), 0);
    for (uint32_t j = 0; j < n; j++) {
        e[j].index = first + j;
        e[j].term = t;
        e[j].type = RAFT_ENTRY_NOOP; /* applied as nothing */
        e[j].data = buf + (size_t)j * 2048;
        e[j].len = ent_len(first + j);
        ent_fill(buf + (size_t)j * 2048, first + j, t);
    }
    assert_int_equal(stor_batch_append(b, shard, e, n), 0);
    if (apply)
        assert_int_equal(stor_batch_apply(b, shard, e, n, NULL), 0);
    int rc = commit ? stor_batch_commit(s, b) : tu_submit_wait(s, b);
    stor_batch_free(b);
    free(e);
    free(buf);
    return rc;
}

static int append(struct stor *s, uint64_t shard, raft_index first, uint32_t n,
                  raft_term t, bool commit)
{
    return append_ex(s, shard, first, n, t, commit, false);
}

/* Reads [lo, hi] of shard in pieces of at most max_bytes and checks every
 * entry against term_of(i). */
static void expect_log(struct stor *s, uint64_t shard, raft_index lo,
                       raft_index hi, raft_term (*term_of)(raft_index),
                       size_t max_bytes)
{
    struct stor_shard *sh = stor_shard_get(s, shard);
    assert_non_null(sh);
    assert_int_equal(stor_log_first_index(sh), lo);
    assert_int_equal(stor_log_last_index(sh), hi);
    assert_int_equal(stor_log_last_term(sh), term_of(hi));
    static uint8_t want[2048];
    raft_index i = lo;
    while (i <= hi) {
        struct raft_entry *e;
        uint32_t n;
        assert_int_equal(stor_log_entries(sh, i, hi + 1, max_bytes, &e, &n),
                         0);
        assert_true(n >= 1);
        for (uint32_t j = 0; j < n; j++, i++) {
            raft_term t;
            assert_int_equal(e[j].index, i);
            assert_int_equal(e[j].term, term_of(i));
            assert_int_equal(e[j].len, ent_len(i));
            ent_fill(want, i, term_of(i));
            if (e[j].len)
                assert_memory_equal(e[j].data, want, e[j].len);
            assert_int_equal(stor_log_term(sh, i, &t), 0);
            assert_int_equal(t, term_of(i));
        }
        free(e);
    }
    raft_term t;
    if (lo > 1)
        assert_int_equal(stor_log_term(sh, lo - 2, &t), RK_ECOMPACTED);
    assert_int_equal(stor_log_term(sh, hi + 1, &t), RK_EUNAVAIL_LOG);
}

/* The chunks of a shard in LMDB: count, and the first index of each. */
static uint32_t chunks_of(struct stor *s, uint64_t shard, raft_index *firsts,
                          uint32_t max)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    uint8_t kb[16];
    uint32_t n = 0;
    stor__checkpoint_wait(s);
    assert_int_equal(stor__read_begin(s, &txn), 0);
    assert_int_equal(mdb_cursor_open(txn, s->dbi_logc, &cur), 0);
    stor__key_log(kb, shard, 0);
    k.mv_size = 16;
    k.mv_data = kb;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
         rc == 0 && stor__get64(k.mv_data) == shard;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        struct stor__logc c;
        assert_int_equal(stor__logc_open(v.mv_data, v.mv_size, &c), 0);
        assert_int_equal(stor__logc_check(&c), 0);
        if (n < max)
            firsts[n] = stor__get64((const uint8_t *)k.mv_data + 8);
        n++;
    }
    mdb_cursor_close(cur);
    stor__read_end(s, txn);
    return n;
}

static raft_term term1(raft_index i)
{
    (void)i;
    return 1;
}

static raft_index cut_at;
static raft_term term_cut(raft_index i)
{
    return i < cut_at ? 1 : 2;
}

static void compact(struct stor *s, uint64_t shard, raft_index to)
{
    struct stor_batch *b;
    assert_int_equal(stor_batch_new(&b), 0);
    assert_int_equal(stor_batch_compact(b, shard, to), 0);
    assert_int_equal(stor_batch_commit(s, b), 0);
    stor_batch_free(b);
}

/* Entries written by several checkpoints: the chunks hold at most 1 MiB
 * of data each, contiguous, and read back through every boundary, from
 * the tail and LMDB alike; after a reopen too. */
static void test_chunks_and_reads(void **state)
{
    struct stor *s = tu_open(*state, 0, 0);
    tu_create_shard(s, 1);
    tu_create_shard(s, 2);
    /* ~3 MiB in one transaction, then small checkpointed pieces. */
    for (raft_index i = 1; i <= 3000; i += 100)
        assert_int_equal(append(s, 1, i, 100, 1, false), 0);
    assert_int_equal(append(s, 2, 1, 5, 1, false), 0);
    expect_log(s, 1, 1, 3000, term1, 0); /* from the tail */
    expect_log(s, 1, 1, 3000, term1, 70000);
    raft_index f[16];
    uint32_t n = chunks_of(s, 1, f, 16); /* checkpoints */
    assert_in_range(n, 3, 4);
    assert_int_equal(f[0], 1);
    assert_int_equal(chunks_of(s, 2, f, 16), 1);
    expect_log(s, 1, 1, 3000, term1, 0); /* from the chunks */
    expect_log(s, 1, 1, 3000, term1, 5000);
    for (raft_index i = 3001; i <= 3010; i++)
        assert_int_equal(append(s, 1, i, 1, 1, true), 0);
    assert_int_equal(chunks_of(s, 1, f, 16), n + 10);
    expect_log(s, 1, 1, 3010, term1, 3000);
    assert_int_equal(tu_check(s), 0);
    stor_close(s);
    s = tu_open(*state, 0, 0);
    expect_log(s, 1, 1, 3010, term1, 0);
    expect_log(s, 2, 1, 5, term1, 0);
    assert_int_equal(tu_check(s), 0);
    stor_close(s);
}

/* A follower's conflicting suffix: inside the tail, across the tail and
 * LMDB (a straddling chunk rewritten), and below several chunks; reopened
 * after each. */
static void test_truncate_across_boundary(void **state)
{
    const char *dir = *state;
    struct stor *s = tu_open(dir, 0, 0);
    tu_create_shard(s, 1);
    for (raft_index i = 1; i <= 2000; i += 200)
        assert_int_equal(append(s, 1, i, 200, 1, false), 0);
    stor__checkpoint_wait(s); /* 1..2000 in chunks */
    raft_index f[16];
    uint32_t n0 = chunks_of(s, 1, f, 16);
    assert_true(n0 >= 2);
    /* Tail 2001..2100, then cut inside the tail. */
    assert_int_equal(append(s, 1, 2001, 100, 1, false), 0);
    cut_at = 2050;
    assert_int_equal(append(s, 1, 2050, 10, 2, false), 0);
    expect_log(s, 1, 1, 2059, term_cut, 0);
    stor_close(s);
    s = tu_open(dir, 0, 0);
    expect_log(s, 1, 1, 2059, term_cut, 0);
    assert_int_equal(tu_check(s), 0);

    /* Across: the tail 2060..2080 and a cut at 1990 (inside the chunk
     * holding 2059, which ends at the tail's start). */
    assert_int_equal(append(s, 1, 2060, 21, 2, false), 0);
    cut_at = 1990;
    assert_int_equal(append(s, 1, 1990, 5, 3, false), 0);
    struct stor_shard *sh = stor_shard_get(s, 1);
    raft_term t;
    assert_int_equal(stor_log_last_index(sh), 1994);
    assert_int_equal(stor_log_term(sh, 1994, &t), 0);
    assert_int_equal(t, 3);
    assert_int_equal(stor_log_term(sh, 1989, &t), 0);
    assert_int_equal(t, 1);
    stor_close(s);
    s = tu_open(dir, 0, 0);
    sh = stor_shard_get(s, 1);
    assert_int_equal(stor_log_last_index(sh), 1994);
    assert_int_equal(stor_log_term(sh, 1990, &t), 0);
    assert_int_equal(t, 3);
    assert_int_equal(tu_check(s), 0);

    /* Below several chunks: at 500, after a checkpoint; the chunks from
     * it on are gone, the one holding 499 cut there. */
    cut_at = 500;
    assert_int_equal(append(s, 1, 500, 3, 2, true), 0);
    expect_log(s, 1, 1, 502, term_cut, 0);
    uint32_t n1 = chunks_of(s, 1, f, 16);
    assert_int_equal(f[n1 - 1], 500);
    stor_close(s);
    s = tu_open(dir, 0, 0);
    expect_log(s, 1, 1, 502, term_cut, 0);
    assert_int_equal(tu_check(s), 0);
    stor_close(s);
}

/* Compaction deletes whole chunks; the one straddling the new base stays
 * and its entries past the base read as before; entries of the tail that
 * compaction passed are never written. */
static void test_compact_straddling_chunk(void **state)
{
    const char *dir = *state;
    struct stor *s = tu_open(dir, 0, 0);
    tu_create_shard(s, 1);
    for (raft_index i = 1; i <= 3000; i += 300)
        assert_int_equal(append_ex(s, 1, i, 300, 1, false, true), 0);
    raft_index f[16];
    uint32_t n = chunks_of(s, 1, f, 16); /* a checkpoint: applied 3000 */
    assert_true(n >= 3);
    raft_index mid = f[1] + 10;
    compact(s, 1, mid);
    /* Compaction goes in steps of STOR_COMPACT_STEP, batch after batch. */
    for (int k = 0; k < 100 && stor_log_first_index(stor_shard_get(s, 1)) <=
                                   mid; k++)
        compact(s, 1, mid);
    expect_log(s, 1, mid + 1, 3000, term1, 0);
    raft_index g[16];
    assert_int_equal(chunks_of(s, 1, g, 16), n - 1);
    assert_int_equal(g[0], f[1]); /* the straddling one stayed */
    assert_int_equal(tu_check(s), 0);
    stor_close(s);
    s = tu_open(dir, 0, 0);
    expect_log(s, 1, mid + 1, 3000, term1, 0);
    assert_int_equal(tu_check(s), 0);

    /* Entries appended, applied and compacted before any checkpoint
     * writes them: compaction waits for the checkpoint of the apply, then
     * the chunks that hold them go. */
    assert_int_equal(append_ex(s, 1, 3001, 500, 1, false, true), 0);
    compact(s, 1, 3400);
    for (int k = 0; k < 100 &&
                    stor_log_first_index(stor_shard_get(s, 1)) <= 3400;
         k++)
        compact(s, 1, 3400);
    expect_log(s, 1, 3401, 3500, term1, 0);
    assert_int_equal(chunks_of(s, 1, g, 16), 1);
    assert_true(g[0] <= 3401);
    stor_close(s);
    s = tu_open(dir, 0, 0);
    expect_log(s, 1, 3401, 3500, term1, 0);
    /* All of it compacted: no chunk left. */
    compact(s, 1, 3500);
    for (int k = 0; k < 100 &&
                    stor_log_first_index(stor_shard_get(s, 1)) <= 3500;
         k++)
        compact(s, 1, 3500);
    assert_int_equal(chunks_of(s, 1, g, 16), 0);
    assert_int_equal(stor_log_last_index(stor_shard_get(s, 1)), 3500);
    assert_int_equal(tu_check(s), 0);
    stor_close(s);
    s = tu_open(dir, 0, 0);
    assert_int_equal(stor_log_first_index(stor_shard_get(s, 1)), 3501);
    assert_int_equal(stor_log_last_index(stor_shard_get(s, 1)), 3500);
    stor_close(s);
}

/* Full chunks are written into the open transaction as the tail fills
 * (before any checkpoint): a cut inside one of them (the chunks from it
 * on deleted, the one straddling it rewritten, all in the open
 * transaction), and a refused batch after them (the open transaction
 * rebuilt from the WAL, those chunks with it) read right before and after
 * the checkpoint and a reopen. */
static void test_chunks_written_early(void **state)
{
    const char *dir = *state;
    struct stor *s = tu_open(dir, 0, 0);
    tu_create_shard(s, 1);
    /* ~3 MiB: two or three chunks written before the checkpoint. */
    for (raft_index i = 1; i <= 3000; i += 100)
        assert_int_equal(append(s, 1, i, 100, 1, false), 0);
    /* (The writer is idle: its tail starts past the chunks written.) */
    assert_true(stor_shard_get(s, 1)->wt_from > 1000);
    expect_log(s, 1, 1, 3000, term1, 0);
    /* Cut at 1500 (inside the second chunk) in the same transaction. */
    cut_at = 1500;
    assert_int_equal(append(s, 1, 1500, 50, 2, false), 0);
    expect_log(s, 1, 1, 1549, term_cut, 0);
    /* A refused batch: an append to a shard that does not exist. */
    struct stor_batch *b;
    struct raft_entry e = {.index = 1, .term = 1, .len = 0};
    assert_int_equal(stor_batch_new(&b), 0);
    assert_int_equal(stor_batch_append(b, 1, &(struct raft_entry){
                                                  .index = 1550,
                                                  .term = 2,
                                                  .len = 0},
                                       1),
                     0);
    assert_int_equal(stor_batch_append(b, 99, &e, 1), 0);
    assert_int_equal(tu_submit_wait(s, b), RK_EUNKNOWNSHARD);
    stor_batch_free(b);
    expect_log(s, 1, 1, 1549, term_cut, 0);
    assert_int_equal(append(s, 1, 1550, 1000, 2, false), 0);
    expect_log(s, 1, 1, 2549, term_cut, 0);
    raft_index f[16];
    uint32_t n = chunks_of(s, 1, f, 16); /* the checkpoint */
    assert_true(n >= 3);
    expect_log(s, 1, 1, 2549, term_cut, 0);
    assert_int_equal(tu_check(s), 0);
    stor_close(s);
    s = tu_open(dir, 0, 0);
    expect_log(s, 1, 1, 2549, term_cut, 0);
    assert_int_equal(tu_check(s), 0);
    stor_close(s);
}

/* The writes a child makes before it dies without closing (its open
 * transaction lost, its batches in the WAL only): shard 1 ~2.5 MiB in
 * 1..2500 (chunks: checkpointed), then 2501..2600 and a cut at 2550 of
 * term 2 in the WAL only; shard 2 compacted to 30 of 1..60 (chunks) and
 * 61..70 in the WAL; shard 3 created, nothing appended. */
static void child_writes(const char *dir, size_t map)
{
    struct stor *s = open_opts(dir, map, 600000);
    tu_create_shard(s, 1);
    tu_create_shard(s, 2);
    tu_create_shard(s, 3);
    for (raft_index i = 1; i <= 2500; i += 250)
        if (append_ex(s, 1, i, 250, 1, false, true))
            _exit(3);
    if (append_ex(s, 2, 1, 60, 1, true, true))
        _exit(3);
    compact(s, 2, 30);
    for (int k = 0; k < 10; k++)
        compact(s, 2, 30);
    /* The WAL only from here. */
    if (append(s, 1, 2501, 100, 1, false) || append(s, 1, 2550, 1, 2, false) ||
        append(s, 2, 61, 10, 1, false))
        _exit(3);
    _exit(0);
}

static raft_term term_conv(raft_index i)
{
    return i < 2550 ? 1 : 2;
}

static void run_child(const char *dir, size_t map)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        child_writes(dir, map);
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void expect_child_state(struct stor *s)
{
    expect_log(s, 1, 1, 2550, term_conv, 0);
    expect_log(s, 1, 1, 2550, term_conv, 100000);
    expect_log(s, 2, 31, 70, term1, 0);
    struct stor_shard *sh = stor_shard_get(s, 3);
    assert_non_null(sh);
    assert_int_equal(stor_log_last_index(sh), 0);
    assert_int_equal(tu_check(s), 0);
}

/* After a crash the replay rebuilds the writer tails, and the checkpoint
 * of the open writes them. */
static void test_crash_replay(void **state)
{
    run_child(*state, 0);
    struct stor *s = tu_open(*state, 0, 0);
    expect_child_state(s);
    stor_close(s);
    s = tu_open(*state, 0, 0);
    expect_child_state(s);
    stor_close(s);
}

/* A format 3 dir (one log record per entry, built from this one by
 * tu_old_log_layout) with batches in its WAL since the last checkpoint:
 * the open converts the log in one transaction, drops 'log', marks the
 * dir 4, and replays the WAL onto the chunks. */
static void test_convert_format3(void **state)
{
    const char *dir = *state;
    run_child(dir, 0);
    tu_old_log_layout(dir, 3);
    struct stor *s = tu_open(dir, 0, 0);
    MDB_txn *txn;
    MDB_dbi d;
    MDB_val k = {.mv_size = 14, .mv_data = "format_version"}, v;
    assert_int_equal(stor__read_begin(s, &txn), 0);
    assert_int_equal(mdb_get(txn, s->dbi_meta, &k, &v), 0);
    assert_int_equal(stor__get64(v.mv_data), STOR_FORMAT_VERSION);
    assert_int_equal(STOR_FORMAT_VERSION, 4);
    assert_int_equal(mdb_dbi_open(txn, "log", 0, &d), MDB_NOTFOUND);
    stor__read_end(s, txn);
    expect_child_state(s);
    raft_index f[8];
    assert_int_equal(chunks_of(s, 1, f, 8) >= 3, true);
    stor_close(s);
    s = tu_open(dir, 0, 0);
    expect_child_state(s);
    stor_close(s);

    /* A damaged old record: the open fails with a clear error. */
    tu_old_log_layout(dir, 3);
    MDB_env *env;
    MDB_dbi log;
    uint8_t kb[16];
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "log", 0, &log), 0);
    stor__key_log(kb, 1, 7);
    k.mv_size = 16;
    k.mv_data = kb;
    v.mv_size = 3;
    v.mv_data = "bad";
    assert_int_equal(mdb_put(txn, log, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    struct stor_opts o = {.path = dir};
    char err[RK_ERRMSG_SIZE];
    s = NULL;
    assert_int_equal(stor_open(&o, &s, err), RK_ECORRUPT);
    assert_null(s);
    assert_non_null(strstr(err, "converting the log to chunks"));
}

/* The replay after a crash runs out of map (the child wrote with a large
 * map, the reopen starts from 1 MiB): the nested batch that fills it is
 * rolled back (the writer tails too), what ran before is checkpointed
 * (writing the tails), the map grows and the replay goes on. */
static void test_replay_map_full(void **state)
{
    const char *dir = *state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct stor *s = open_opts(dir, (size_t)256 << 20, 600000);
        tu_create_shard(s, 1);
        tu_create_shard(s, 2);
        /* ~12 MiB of entries and their KV writes (puts of 4000 bytes)
         * in the WAL only. */
        static uint8_t cmd[8192];
        static char val[4000];
        memset(val, 'v', sizeof val);
        struct stor_batch *b;
        if (stor_batch_new(&b))
            _exit(3);
        for (raft_index i = 1; i <= 3000; i++) {
            char key[32];
            snprintf(key, sizeof key, "key%llu", (unsigned long long)i);
            struct raft_entry e = {.index = (i + 1) / 2, .term = 1,
                                   .type = RAFT_ENTRY_NORMAL, .data = cmd};
            e.len = (uint32_t)tu_put_cmd(cmd, sizeof cmd, 0, 0, key, val,
                                         sizeof val);
            stor_batch_reset(b);
            if (stor_batch_append(b, 1 + i % 2, &e, 1) ||
                stor_batch_apply(b, 1 + i % 2, &e, 1, NULL) ||
                tu_submit_wait(s, b))
                _exit(3);
        }
        _exit(0);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    /* LMDB takes a smaller map than the file's when the data fit. */
    struct stor *s = tu_open(dir, 1 << 20, 0);
    struct stor_stats ss;
    stor_stats(s, &ss);
    assert_true(ss.grows >= 2);
    for (uint64_t id = 1; id <= 2; id++) {
        struct stor_shard *sh = stor_shard_get(s, id);
        assert_int_equal(stor_log_last_index(sh), 1500);
        struct raft_entry *e;
        uint32_t n;
        for (raft_index i = 1; i <= 1500; i += n) {
            assert_int_equal(stor_log_entries(sh, i, 1501, 0, &e, &n), 0);
            for (uint32_t j = 0; j < n; j++)
                assert_int_equal(e[j].index, i + j);
            free(e);
        }
    }
    struct stor_value v;
    assert_int_equal(stor_kv_get(s, 2, "key2999", 7, &v), 0);
    assert_int_equal(v.len, 4000);
    free(v.data);
    assert_int_equal(tu_check(s), 0);
    stor_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_chunks_and_reads, tu_dir_setup,
                                        tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_truncate_across_boundary,
                                        tu_dir_setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_compact_straddling_chunk,
                                        tu_dir_setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_chunks_written_early,
                                        tu_dir_setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_crash_replay, tu_dir_setup,
                                        tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_convert_format3, tu_dir_setup,
                                        tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_replay_map_full, tu_dir_setup,
                                        tu_dir_teardown),
    };
    (void)open_opts;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
