/* Storage tests: open, identity refusals, truncation, compaction, backup. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <lmdb.h>

#include "stor_int.h"
#include "stor_test_util.h"

static struct stor *open_id(const char *dir, uint64_t cluster, uint64_t node,
                            bool create, int *rc, char *err)
{
    struct stor_opts o = {
        .path = dir, .cluster_id = cluster, .node_id = node, .create = create};
    struct stor *s = NULL;
    *rc = stor_open(&o, &s, err);
    return s;
}

static void check_entries(struct stor_shard *sh, raft_index lo, raft_index hi,
                          raft_term term)
{
    struct raft_entry *ents;
    uint32_t n;
    assert_int_equal(stor_log_entries(sh, lo, hi, 0, &ents, &n), 0);
    assert_int_equal(n, hi - lo);
    for (uint32_t i = 0; i < n; i++) {
        struct stor_cmd c;
        char val[32];
        assert_int_equal(ents[i].index, lo + i);
        assert_int_equal(ents[i].term, term);
        assert_int_equal(stor_cmd_decode(ents[i].data, ents[i].len, &c), 0);
        snprintf(val, sizeof val, "v%llu", (unsigned long long)(lo + i));
        assert_int_equal(c.vlen, strlen(val));
        assert_memory_equal(c.value, val, c.vlen);
    }
    free(ents);
}

static void test_open_create_reopen(void **state)
{
    const char *dir = *state;
    struct stor *s = tu_open(dir, 0, 0);
    assert_null(stor_shard_get(s, 7));
    tu_create_shard(s, 7);
    tu_create_shard(s, 3);
    struct stor_shard *sh = stor_shard_get(s, 7);
    assert_non_null(sh);
    assert_int_equal(stor_log_first_index(sh), 1);
    assert_int_equal(stor_log_last_index(sh), 0);
    assert_int_equal(tu_append_apply(s, 7, 1, 10, 2, false), 0);
    assert_int_equal(stor_log_last_index(sh), 10);
    assert_int_equal(stor_log_last_term(sh), 2);
    stor_close(s);

    s = tu_open(dir, 0, 0);
    uint64_t ids[4];
    assert_int_equal(stor_shard_list(s, ids, 4), 2);
    assert_int_equal(ids[0], 3);
    assert_int_equal(ids[1], 7);
    sh = stor_shard_get(s, 7);
    assert_non_null(sh);
    struct stor_shard_state st;
    assert_int_equal(stor_shard_load(sh, &st), 0);
    assert_int_equal(st.first_index, 1);
    assert_int_equal(st.last_index, 10);
    assert_int_equal(st.hs.term, 2);
    assert_int_equal(st.hs.vote, 1);
    assert_int_equal(st.hs.commit, 10);
    assert_int_equal(st.conf.n_voters, 3);
    assert_int_equal(st.applied, 0);
    raft_term t;
    assert_int_equal(stor_log_ops.term(sh, 5, &t), 0);
    assert_int_equal(t, 2);
    assert_int_equal(stor_log_ops.term(sh, 11, &t), RK_EUNAVAIL_LOG);
    check_entries(sh, 1, 11, 2);
    /* max_bytes: at least one entry, then as many as fit. */
    struct raft_entry *ents;
    uint32_t n;
    assert_int_equal(stor_log_ops.entries(sh, 2, 11, 1, &ents, &n), 0);
    assert_int_equal(n, 1);
    free(ents);
    assert_int_equal(stor_log_ops.entries(sh, 2, 12, 0, &ents, &n),
                     RK_EUNAVAIL_LOG);
    uint64_t cid, nid;
    stor_identity(s, &cid, &nid);
    assert_int_equal(cid, 1);
    assert_int_equal(nid, 1);
    /* Creating an existing shard fails the batch but not the store. */
    struct raft_conf_state conf = {.n_voters = 1, .voters = {1}};
    struct stor_batch *b;
    assert_int_equal(stor_batch_new(&b), 0);
    assert_int_equal(stor_batch_create_shard(b, 7, &conf), 0);
    assert_int_equal(stor_batch_commit(s, b), RK_EEXIST);
    assert_int_equal(stor_failed(s), 0);
    /* Unknown shard. */
    stor_batch_reset(b);
    struct raft_hard_state hs = {.term = 1};
    assert_int_equal(stor_batch_set_hard_state(b, 99, &hs), 0);
    assert_int_equal(stor_batch_commit(s, b), RK_EUNKNOWNSHARD);
    /* Destroy. */
    stor_batch_reset(b);
    assert_int_equal(stor_batch_destroy_shard(b, 3), 0);
    assert_int_equal(stor_batch_commit(s, b), 0);
    assert_null(stor_shard_get(s, 3));
    stor_batch_free(b);
    stor_close(s);
    s = tu_open(dir, 0, 0);
    assert_int_equal(stor_shard_list(s, ids, 4), 1);
    stor_close(s);
}

static void test_identity_refusals(void **state)
{
    const char *dir = *state;
    char err[RK_ERRMSG_SIZE], path[512];
    int rc;
    struct stor *s;

    /* Missing store without create. */
    s = open_id(dir, 1, 1, false, &rc, err);
    assert_null(s);
    assert_int_equal(rc, RK_ENOTFOUND);
    /* Creation needs ids. */
    s = open_id(dir, 0, 1, true, &rc, err);
    assert_int_equal(rc, RK_EINVAL);
    s = open_id(dir, 0x2a, 4, true, &rc, err);
    assert_non_null(s);
    /* A second opener is refused while the first holds the dir. */
    struct stor *s2 = open_id(dir, 0x2a, 4, false, &rc, err);
    assert_null(s2);
    assert_int_equal(rc, RK_EBUSY);
    stor_close(s);

    s = open_id(dir, 0x1f, 4, false, &rc, err);
    assert_null(s);
    assert_int_equal(rc, RK_EFOREIGN);
    assert_non_null(strstr(err, "cluster 0x2a"));
    s = open_id(dir, 0x2a, 5, false, &rc, err);
    assert_int_equal(rc, RK_EFOREIGN);
    assert_non_null(strstr(err, "node 4"));
    /* 0 accepts the stored identity. */
    s = open_id(dir, 0, 0, false, &rc, err);
    assert_non_null(s);
    stor_close(s);

    /* A newer format version. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    uint8_t v[8];
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    stor__put64(v, STOR_FORMAT_VERSION + 1);
    MDB_val k = {.mv_size = 14, .mv_data = "format_version"},
            val = {.mv_size = 8, .mv_data = v};
    assert_int_equal(mdb_put(txn, dbi, &k, &val, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    /* LMDB: one handle per environment and process at a time. */
    mdb_env_close(env);
    s = open_id(dir, 0x2a, 4, false, &rc, err);
    assert_int_equal(rc, RK_EVERSION);
    char want[64];
    snprintf(want, sizeof want, "format version %u", STOR_FORMAT_VERSION + 1);
    assert_non_null(strstr(err, want));
    /* A corrupt state record. */
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    stor__put64(v, STOR_FORMAT_VERSION);
    assert_int_equal(mdb_put(txn, dbi, &k, &val, 0), 0);
    assert_int_equal(mdb_dbi_open(txn, "state", 0, &dbi), 0);
    uint8_t sk[8];
    stor__put64(sk, 9);
    MDB_val k2 = {.mv_size = 8, .mv_data = sk},
            v2 = {.mv_size = 3, .mv_data = "bad"};
    assert_int_equal(mdb_put(txn, dbi, &k2, &v2, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    s = open_id(dir, 0x2a, 4, false, &rc, err);
    assert_int_equal(rc, RK_ECORRUPT);
    assert_non_null(strstr(err, "shard 9"));

    /* A data.mdb that is not LMDB at all. */
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 8192; i++)
        fputc(i * 7, f);
    fclose(f);
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    unlink(path);
    s = open_id(dir, 0x2a, 4, false, &rc, err);
    assert_null(s);
    assert_int_equal(rc, RK_ECORRUPT);
    assert_non_null(strstr(err, "corrupt"));
}

static void test_truncate_conflicting_suffix(void **state)
{
    struct stor *s = tu_open(*state, 0, 0);
    tu_create_shard(s, 1);
    tu_create_shard(s, 2);
    struct stor_shard *sh = stor_shard_get(s, 1);
    assert_int_equal(tu_append_apply(s, 1, 1, 10, 1, false), 0);
    /* Shard 2 gets entries so shard 1's appends are not at the DB's end. */
    assert_int_equal(tu_append_apply(s, 2, 1, 5, 1, false), 0);
    assert_int_equal(tu_append_apply(s, 1, 6, 3, 2, false), 0);
    assert_int_equal(stor_log_last_index(sh), 8);
    assert_int_equal(stor_log_last_term(sh), 2);
    check_entries(sh, 1, 6, 1);
    check_entries(sh, 6, 9, 2);
    /* The other shard is untouched. */
    check_entries(stor_shard_get(s, 2), 1, 6, 1);
    /* A gap fails the batch, writes nothing and keeps the store healthy. */
    assert_int_equal(tu_append_apply(s, 1, 20, 2, 2, false), RK_EINVAL);
    assert_int_equal(stor_failed(s), 0);
    assert_int_equal(stor_log_last_index(sh), 8);
    /* Applying with a gap after the applied index fails the batch. */
    assert_int_equal(tu_append_apply(s, 1, 9, 4, 3, true), RK_EINVAL);
    assert_int_equal(tu_append_apply(s, 1, 9, 4, 3, false), 0);
    assert_int_equal(stor_log_last_index(sh), 12);
    stor_close(s);
    s = tu_open(*state, 0, 0);
    sh = stor_shard_get(s, 1);
    assert_int_equal(stor_log_last_index(sh), 12);
    assert_int_equal(stor_log_last_term(sh), 3);
    check_entries(sh, 9, 13, 3);
    stor_close(s);
}

static int commit_empty(struct stor *s)
{
    struct stor_batch *b;
    assert_int_equal(stor_batch_new(&b), 0);
    int rc = stor_batch_commit(s, b);
    stor_batch_free(b);
    return rc;
}

static void test_compaction_in_steps(void **state)
{
    struct stor *s = tu_open(*state, 0, 0);
    tu_create_shard(s, 5);
    struct stor_shard *sh = stor_shard_get(s, 5);
    for (int i = 0; i < 10; i++)
        assert_int_equal(tu_append_apply(s, 5, 1 + i * 1000, 1000, 1, true), 0);
    struct stor_batch *b;
    assert_int_equal(stor_batch_new(&b), 0);
    assert_int_equal(stor_batch_compact(b, 5, 9000), 0);
    assert_int_equal(stor_batch_commit(s, b), 0);
    stor_batch_free(b);
    assert_int_equal(stor_log_first_index(sh), STOR_COMPACT_STEP + 1);
    raft_term t;
    assert_int_equal(stor_log_term(sh, STOR_COMPACT_STEP, &t), 0);
    assert_int_equal(stor_log_term(sh, STOR_COMPACT_STEP - 1, &t),
                     RK_ECOMPACTED);
    /* The target survives a restart and the next batches finish it. */
    stor_close(s);
    s = tu_open(*state, 0, 0);
    sh = stor_shard_get(s, 5);
    assert_int_equal(stor_log_first_index(sh), STOR_COMPACT_STEP + 1);
    assert_int_equal(commit_empty(s), 0);
    assert_int_equal(commit_empty(s), 0);
    assert_int_equal(stor_log_first_index(sh), 9001);
    assert_int_equal(commit_empty(s), 0);
    assert_int_equal(stor_log_first_index(sh), 9001);
    assert_int_equal(stor_log_term(sh, 9000, &t), 0);
    assert_int_equal(t, 1);
    struct raft_entry *ents;
    uint32_t n;
    assert_int_equal(stor_log_entries(sh, 9000, 9005, 0, &ents, &n),
                     RK_ECOMPACTED);
    check_entries(sh, 9001, 10001, 1);
    /* A target past the applied index is lowered to it. */
    assert_int_equal(tu_append_apply(s, 5, 10001, 10, 1, false), 0);
    assert_int_equal(stor_batch_new(&b), 0);
    assert_int_equal(stor_batch_compact(b, 5, 10010), 0);
    assert_int_equal(stor_batch_commit(s, b), 0);
    stor_batch_free(b);
    assert_int_equal(stor_log_first_index(sh), 10001);
    assert_int_equal(stor_log_last_index(sh), 10010);
    struct stor_shard_state st;
    assert_int_equal(stor_shard_load(sh, &st), 0);
    assert_int_equal(st.first_index, 10001);
    assert_int_equal(st.applied, 10000);
    stor_close(s);
}

static void test_check_finds_damage(void **state)
{
    char err[RK_ERRMSG_SIZE];
    struct stor *s = tu_open(*state, 0, 0);
    tu_create_shard(s, 4);
    assert_int_equal(tu_append_apply(s, 4, 1, 100, 1, true), 0);
    struct stor_batch *b;
    assert_int_equal(stor_batch_new(&b), 0);
    assert_int_equal(stor_batch_compact(b, 4, 50), 0);
    assert_int_equal(stor_batch_commit(s, b), 0);
    stor_batch_free(b);
    assert_int_equal(stor_check(s, err), 0);
    stor_close(s);
    /* Damage: a KV record from the future and a hole in the log. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi kv, log;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    assert_int_equal(mdb_env_open(env, *state, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "kv", 0, &kv), 0);
    assert_int_equal(mdb_dbi_open(txn, "logc", 0, &log), 0);
    uint8_t k[10], v[20];
    stor__put64(k, 4);
    memcpy(k + 8, "zz", 2);
    stor__put64(v, 500);
    stor__put64(v + 8, 500);
    memcpy(v + 16, "abcd", 4);
    MDB_val mk = {.mv_size = 10, .mv_data = k},
            mv = {.mv_size = 20, .mv_data = v};
    assert_int_equal(mdb_put(txn, kv, &mk, &mv, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    /* LMDB: one handle per environment and process at a time. */
    mdb_env_close(env);
    s = tu_open(*state, 0, 0);
    assert_int_equal(stor_check(s, err), RK_ECORRUPT);
    assert_non_null(strstr(err, "shard 4"));
    stor_close(s);
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    assert_int_equal(mdb_env_open(env, *state, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "kv", 0, &kv), 0);
    assert_int_equal(mdb_dbi_open(txn, "logc", 0, &log), 0);
    assert_int_equal(mdb_del(txn, kv, &mk, NULL), 0);
    /* The log is one chunk, entries 1..100: a chunk of entry 102 after it
     * leaves a hole. */
    uint8_t lk[16], lv[STOR__LOGC_HDR + STOR__LOGC_DESC + 1] = {0};
    stor__put64(lk, 4);
    stor__put64(lk + 8, 102);
    lv[0] = STOR__LOGC_FORMAT;
    stor__put32(lv + 1, 1);
    stor__put64(lv + 5, 1);
    stor__put32(lv + 13, 1);
    MDB_val ml = {.mv_size = 16, .mv_data = lk},
            mlv = {.mv_size = sizeof lv, .mv_data = lv};
    assert_int_equal(mdb_put(txn, log, &ml, &mlv, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    s = tu_open(*state, 0, 0);
    assert_int_equal(stor_check(s, err), RK_ECORRUPT);
    assert_non_null(strstr(err, "entries 102..102 follows 100"));
    stor_close(s);
    /* A chunk whose entry 60 ends before entry 59 does. */
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    assert_int_equal(mdb_env_open(env, *state, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "logc", 0, &log), 0);
    assert_int_equal(mdb_del(txn, log, &ml, NULL), 0);
    stor__put64(lk + 8, 1);
    MDB_val cv;
    assert_int_equal(mdb_get(txn, log, &ml, &cv), 0);
    uint8_t *bad = malloc(cv.mv_size);
    assert_non_null(bad);
    memcpy(bad, cv.mv_data, cv.mv_size);
    stor__put32(bad + STOR__LOGC_HDR + 59 * STOR__LOGC_DESC + 8, 0);
    cv.mv_data = bad;
    assert_int_equal(mdb_put(txn, log, &ml, &cv, 0), 0);
    free(bad);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    s = tu_open(*state, 0, 0);
    assert_int_equal(stor_check(s, err), RK_ECORRUPT);
    assert_non_null(strstr(err, "log of shard 4: malformed chunk"));
    /* Reading the damaged entry is an error, not a crash. */
    struct raft_entry *ents;
    uint32_t n;
    assert_int_equal(
        stor_log_entries(stor_shard_get(s, 4), 51, 101, 0, &ents, &n),
        RK_ECORRUPT);
    stor_close(s);
}

static void test_backup_restore(void **state)
{
    struct stor *s = tu_open(*state, 0, 0);
    tu_create_shard(s, 1);
    assert_int_equal(tu_append_apply(s, 1, 1, 500, 1, true), 0);
    char bdir[512];
    snprintf(bdir, sizeof bdir, "%s/backup", (char *)*state);
    assert_int_equal(stor_backup(s, bdir), 0);
    assert_int_equal(stor_backup(s, bdir), RK_EEXIST);
    /* Writes after the backup are not in it. */
    assert_int_equal(tu_append_apply(s, 1, 501, 10, 1, true), 0);
    stor_close(s);
    int rc;
    char err[RK_ERRMSG_SIZE];
    s = open_id(bdir, 1, 1, false, &rc, err);
    assert_non_null(s);
    struct stor_shard *sh = stor_shard_get(s, 1);
    assert_non_null(sh);
    assert_int_equal(stor_log_last_index(sh), 500);
    check_entries(sh, 1, 501, 1);
    struct stor_value v;
    assert_int_equal(stor_kv_get(s, 1, "k20", 3, &v), 0);
    assert_int_equal(v.len, 4);
    assert_memory_equal(v.data, "v468", 4);
    assert_int_equal(v.revision, 468);
    free(v.data);
    stor_close(s);
}

/* Opens the data dir's LMDB environment read-only without the store. */
static MDB_env *raw_env(const char *dir)
{
    MDB_env *env;
    if (mdb_env_create(&env) != 0)
        return NULL;
    mdb_env_set_maxdbs(env, 8);
    if (mdb_env_open(env, dir, MDB_RDONLY | MDB_NOTLS, 0600) != 0) {
        mdb_env_close(env);
        return NULL;
    }
    return env;
}

/* Forks a child that runs fn(dir), tells the parent through a pipe when it
 * is ready ("r"), then waits until *release is closed by the parent (or the
 * parent dies). Returns the pid; *ready is whether it signalled. */
static pid_t fork_child(const char *dir, bool (*fn)(const char *),
                        int *release, bool *ready)
{
    int up[2], down[2];
    assert_int_equal(pipe(up), 0);
    assert_int_equal(pipe(down), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(up[0]);
        close(down[1]);
        char c;
        if (!fn(dir) || write(up[1], "r", 1) != 1)
            _exit(1);
        (void)!read(down[0], &c, 1); /* EOF when released */
        _exit(0);
    }
    close(up[1]);
    close(down[0]);
    char c = 0;
    *ready = read(up[0], &c, 1) == 1;
    close(up[0]);
    *release = down[1];
    return pid;
}

static bool hold_env(const char *dir)
{
    return raw_env(dir) != NULL; /* kept open until the child exits */
}

static bool hold_read_txn(const char *dir)
{
    struct stor *cs = tu_open(dir, 0, 0);
    MDB_txn *txn;
    return mdb_txn_begin(cs->env, NULL, MDB_RDONLY, &txn) == 0;
}

static int count_pid_cb(const char *msg, void *ctx)
{
    /* mdb_reader_list lines: "pid thread txnid" (a header line first). */
    int *n = ctx;
    long pid = strtol(msg, NULL, 10);
    if (pid > 0 && pid == (long)n[1])
        n[0]++;
    return 0;
}

/* A process killed while it holds a read transaction leaves its reader slot
 * behind when another process keeps the environment open (LMDB resets the
 * table only for the first opener), pinning old pages for ever; opening the
 * store clears it. */
static void test_stale_readers_cleared(void **state)
{
    struct stor *s = tu_open(*state, 0, 0);
    tu_create_shard(s, 1);
    stor_close(s);
    int rel_h, rel_r, st;
    bool ready_h, ready_r;
    pid_t holder = fork_child(*state, hold_env, &rel_h, &ready_h);
    pid_t reader = fork_child(*state, hold_read_txn, &rel_r, &ready_r);
    kill(reader, SIGKILL);
    assert_int_equal(waitpid(reader, &st, 0), reader);
    close(rel_r);
    /* Slots of the dead reader: {count, pid}, before and after the open. */
    int before[2] = {0, (int)reader}, after[2] = {-1, (int)reader};
    MDB_env *env = raw_env(*state);
    if (env) {
        mdb_reader_list(env, count_pid_cb, before);
        mdb_env_close(env);
    }
    if (ready_h && ready_r) {
        s = tu_open(*state, 0, 0);
        after[0] = 0;
        mdb_reader_list(s->env, count_pid_cb, after);
        stor_close(s);
    }
    close(rel_h);
    assert_int_equal(waitpid(holder, NULL, 0), holder);
    assert_true(ready_h && ready_r && WIFSIGNALED(st));
    assert_int_equal(before[0], 1); /* left behind ... */
    assert_int_equal(after[0], 0);  /* ... until the store opened */
}

static void never_cb(struct stor_batch *b, int status, void *arg)
{
    (void)b;
    (void)status;
    (void)arg;
    abort();
}

static void test_map_growth_and_full(void **state)
{
    /* A 1 MiB map grows while 6 MiB of entries go in. */
    struct stor *s = tu_open(*state, 1 << 20, 0);
    tu_create_shard(s, 1);
    struct stor_shard *sh = stor_shard_get(s, 1);
    static uint8_t blob[64 << 10];
    memset(blob, 0xab, sizeof blob);
    struct stor_batch *b;
    assert_int_equal(stor_batch_new(&b), 0);
    for (int i = 0; i < 100; i++) {
        struct raft_entry e = {.term = 1,
                               .index = (raft_index)i + 1,
                               .type = RAFT_ENTRY_NORMAL,
                               .len = sizeof blob,
                               .data = blob};
        stor_batch_reset(b);
        assert_int_equal(stor_batch_append(b, 1, &e, 1), 0);
        assert_int_equal(stor_batch_commit(s, b), 0);
    }
    struct stor_stats st;
    stor_stats(s, &st);
    assert_true(st.grows > 0);
    assert_true(st.map_size >= 6u << 20);
    assert_int_equal(stor_log_last_index(sh), 100);
    stor_close(s);

    /* At the maximum size a full map is a fail-stop ENOSPC. */
    struct stor_opts o = {
        .path = *state, .create = false, .max_map_size = 8 << 20};
    char err[RK_ERRMSG_SIZE];
    assert_int_equal(stor_open(&o, &s, err), 0);
    sh = stor_shard_get(s, 1);
    int rc = 0;
    raft_index i;
    for (i = 101; i < 400 && rc == 0; i++) {
        struct raft_entry e = {
            .term = 1, .index = i, .len = sizeof blob, .data = blob};
        stor_batch_reset(b);
        assert_int_equal(stor_batch_append(b, 1, &e, 1), 0);
        rc = stor_batch_commit(s, b);
    }
    assert_int_equal(rc, RK_ENOSPC);
    assert_int_equal(stor_failed(s), RK_ENOSPC);
    assert_non_null(strstr(stor_errmsg(s), "maximum"));
    raft_index acked = i - 2;
    assert_int_equal(stor_batch_commit(s, b), RK_EFAILSTOP);
    assert_int_equal(stor_batch_submit(s, b, never_cb, NULL), RK_EFAILSTOP);
    /* Reads still work. */
    assert_int_equal(stor_log_last_index(sh), acked);
    stor_close(s);
    s = tu_open(*state, 0, 0);
    sh = stor_shard_get(s, 1);
    /* The refused batch's record may have reached the WAL before the
     * checkpoint ran out of map (the log is written at checkpoints): the
     * replay keeps it, a Raft entry that was never acknowledged. */
    assert_in_range(stor_log_last_index(sh), acked, acked + 1);
    struct raft_entry *ents;
    uint32_t n;
    assert_int_equal(stor_log_entries(sh, acked, acked + 1, 0, &ents, &n), 0);
    assert_int_equal(ents[0].len, sizeof blob);
    free(ents);
    stor_batch_free(b);
    stor_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_create_reopen, tu_dir_setup,
                                        tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_identity_refusals, tu_dir_setup,
                                        tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_truncate_conflicting_suffix,
                                        tu_dir_setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_compaction_in_steps, tu_dir_setup,
                                        tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_check_finds_damage, tu_dir_setup,
                                        tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_backup_restore, tu_dir_setup,
                                        tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_stale_readers_cleared,
                                        tu_dir_setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_map_growth_and_full, tu_dir_setup,
                                        tu_dir_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
