/* Storage tests: apply, CAS, scans, sessions, command codec, async. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rk_rand.h"
#include "stor_int.h"
#include "stor_test_util.h"

struct fx {
    char *dir;
    struct stor *s;
    struct stor_batch *b;
    raft_index next; /* next index of shard 1 */
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->dir = tu_mkdtemp("kv");
    f->s = tu_open(f->dir, 0, 0);
    tu_create_shard(f->s, 1);
    assert_int_equal(stor_batch_new(&f->b), 0);
    f->next = 1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    stor_batch_free(f->b);
    int rc = tu_close_rm(f->s, f->dir);
    free(f);
    assert_int_equal(rc, 0);
    return 0;
}

/* Appends and applies one command; returns its result. */
static struct stor_result run(struct fx *f, const struct stor_cmd *c)
{
    struct stor_result res;
    assert_int_equal(tu_run(f->s, 1, 1, f->next++, c, &res), 0);
    return res;
}

static struct stor_result put(struct fx *f, uint64_t client, uint64_t seq,
                              const char *k, const char *v)
{
    struct stor_cmd c = {.op = STOR_CMD_PUT,
                         .client_id = client,
                         .seq = seq,
                         .key = k,
                         .klen = (uint32_t)strlen(k),
                         .value = v,
                         .vlen = (uint32_t)strlen(v)};
    return run(f, &c);
}

static void expect_kv(struct fx *f, const char *k, const char *v, uint64_t rev)
{
    struct stor_value val;
    if (!v) {
        assert_int_equal(stor_kv_get(f->s, 1, k, strlen(k), &val),
                         RK_ENOTFOUND);
        return;
    }
    assert_int_equal(stor_kv_get(f->s, 1, k, strlen(k), &val), 0);
    assert_int_equal(val.len, strlen(v));
    assert_memory_equal(val.data, v, val.len);
    assert_int_equal(val.revision, rev);
    free(val.data);
}

static void test_put_get_del(void **state)
{
    struct fx *f = *state;
    struct stor_result r = put(f, 0, 0, "a", "1");
    assert_int_equal(r.status, 0);
    assert_int_equal(r.revision, 1);
    assert_int_equal(r.prev_revision, 0);
    r = put(f, 0, 0, "a", "22");
    assert_int_equal(r.revision, 2);
    assert_int_equal(r.prev_revision, 1);
    struct stor_value v;
    assert_int_equal(stor_kv_get(f->s, 1, "a", 1, &v), 0);
    assert_int_equal(v.create_revision, 1);
    assert_int_equal(v.revision, 2);
    free(v.data);
    /* Other shards do not see it. */
    assert_int_equal(stor_kv_get(f->s, 2, "a", 1, &v), RK_ENOTFOUND);
    struct stor_cmd del = {.op = STOR_CMD_DEL, .key = "a", .klen = 1};
    r = run(f, &del);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.revision, 2);
    expect_kv(f, "a", NULL, 0);
    r = run(f, &del);
    assert_int_equal(r.status, RK_ENOTFOUND);
    /* Empty values are values. */
    put(f, 0, 0, "e", "");
    expect_kv(f, "e", "", 5);
    /* The applied index follows, and survives reopening. */
    struct stor_shard_state st;
    assert_int_equal(stor_shard_load(stor_shard_get(f->s, 1), &st), 0);
    assert_int_equal(st.applied, 5);
    assert_int_equal(st.applied_term, 1);
    stor_close(f->s);
    f->s = tu_open(f->dir, 0, 0);
    assert_int_equal(stor_shard_load(stor_shard_get(f->s, 1), &st), 0);
    assert_int_equal(st.applied, 5);
    expect_kv(f, "e", "", 5);
}

static void test_cas(void **state)
{
    struct fx *f = *state;
    struct stor_cmd c = {.op = STOR_CMD_CAS,
                         .key = "x",
                         .klen = 1,
                         .expect = "old",
                         .elen = 3,
                         .value = "new",
                         .vlen = 3};
    /* Value compare on a missing key. */
    struct stor_result r = run(f, &c);
    assert_int_equal(r.status, RK_ENOTFOUND);
    /* Revision 0 = create if absent. */
    c.cas_flags = STOR_CAS_REVISION;
    c.expect_rev = 0;
    c.value = "old";
    r = run(f, &c);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.revision, 2);
    r = run(f, &c);
    assert_int_equal(r.status, RK_ECASMISMATCH);
    assert_int_equal(r.revision, 2);
    /* Value compare. */
    c.cas_flags = 0;
    c.expect = "nope";
    c.elen = 4;
    c.value = "new";
    r = run(f, &c);
    assert_int_equal(r.status, RK_ECASMISMATCH);
    expect_kv(f, "x", "old", 2);
    c.expect = "old";
    c.elen = 3;
    r = run(f, &c);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.prev_revision, 2);
    expect_kv(f, "x", "new", 5);
    /* Revision compare. */
    c.cas_flags = STOR_CAS_REVISION;
    c.expect_rev = 2;
    c.value = "rev";
    r = run(f, &c);
    assert_int_equal(r.status, RK_ECASMISMATCH);
    assert_int_equal(r.revision, 5);
    c.expect_rev = 5;
    r = run(f, &c);
    assert_int_equal(r.status, 0);
    expect_kv(f, "x", "rev", 7);
    struct stor_value v;
    assert_int_equal(stor_kv_get(f->s, 1, "x", 1, &v), 0);
    assert_int_equal(v.create_revision, 2);
    free(v.data);
    /* Compare-and-delete. */
    c.cas_flags = STOR_CAS_REVISION | STOR_CAS_DELETE;
    c.expect_rev = 6;
    r = run(f, &c);
    assert_int_equal(r.status, RK_ECASMISMATCH);
    c.expect_rev = 7;
    r = run(f, &c);
    assert_int_equal(r.status, 0);
    expect_kv(f, "x", NULL, 0);
}

static void test_scan(void **state)
{
    struct fx *f = *state;
    const char *keys[] = {"a", "app/1", "app/2", "app/3", "apq", "b"};
    for (int i = 0; i < 6; i++)
        put(f, 0, 0, keys[i], keys[i]);
    struct stor_scan sc;
    assert_int_equal(stor_kv_scan(f->s, 1, "app/", 4, NULL, 0, 0, 0, &sc), 0);
    assert_int_equal(sc.n, 3);
    assert_false(sc.more);
    for (uint32_t i = 0; i < 3; i++) {
        assert_int_equal(sc.items[i].klen, 5);
        assert_memory_equal(sc.items[i].key, keys[1 + i], 5);
        assert_memory_equal(sc.items[i].value, keys[1 + i], 5);
        assert_int_equal(sc.items[i].revision, 2 + i);
    }
    free(sc.items);
    /* Limit and resume. */
    assert_int_equal(stor_kv_scan(f->s, 1, "app/", 4, NULL, 0, 2, 0, &sc), 0);
    assert_int_equal(sc.n, 2);
    assert_true(sc.more);
    free(sc.items);
    assert_int_equal(stor_kv_scan(f->s, 1, "app/", 4, "app/3", 5, 2, 0, &sc),
                     0);
    assert_int_equal(sc.n, 1);
    assert_memory_equal(sc.items[0].key, "app/3", 5);
    assert_false(sc.more);
    free(sc.items);
    /* All keys; max_bytes stops early but returns at least one. */
    assert_int_equal(stor_kv_scan(f->s, 1, NULL, 0, NULL, 0, 0, 0, &sc), 0);
    assert_int_equal(sc.n, 6);
    free(sc.items);
    assert_int_equal(stor_kv_scan(f->s, 1, NULL, 0, NULL, 0, 0, 1, &sc), 0);
    assert_int_equal(sc.n, 1);
    assert_true(sc.more);
    free(sc.items);
    /* Nothing matches. */
    assert_int_equal(stor_kv_scan(f->s, 1, "zz", 2, NULL, 0, 0, 0, &sc), 0);
    assert_int_equal(sc.n, 0);
    assert_null(sc.items);
    assert_int_equal(stor_kv_scan(f->s, 3, NULL, 0, NULL, 0, 0, 0, &sc), 0);
    assert_int_equal(sc.n, 0);
}

/* Writes a session record of the eight-slot form earlier builds wrote
 * (STOR__SESS_SIZE_MAX bytes) straight into the closed store's LMDB: the
 * header, then replies for seqs `seqs` (revision seq * 10) in that order. */
static void put_old_session(const char *dir, uint64_t shard, uint64_t client,
                            uint64_t max_seq, uint64_t bitmap,
                            uint64_t last_index, const uint64_t *seqs,
                            unsigned n)
{
    uint8_t kb[16], vb[STOR__SESS_SIZE_MAX];
    memset(vb, 0, sizeof(vb));
    stor__put64(kb, shard);
    stor__put64(kb + 8, client);
    stor__put64(vb, max_seq);
    stor__put64(vb + 8, bitmap);
    stor__put64(vb + 16, last_index);
    assert_true(n <= 8);
    for (unsigned i = 0; i < n; i++) {
        uint8_t *p = vb + 24 + i * 29;
        stor__put64(p, seqs[i]);
        stor__put64(p + 12, seqs[i] * 10);
    }
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "sessions", 0, &dbi), 0);
    MDB_val k = {.mv_size = 16, .mv_data = kb},
            v = {.mv_size = sizeof(vb), .mv_data = vb};
    assert_int_equal(mdb_put(txn, dbi, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

/* Sessions written by earlier builds (eight reply slots, 256 bytes) keep
 * deduplicating: the newest reply is kept, older applied seqs are refused
 * and never re-applied, and the next write stores the one-slot form. */
static void test_sessions_old_records(void **state)
{
    struct fx *f = *state;
    stor_close(f->s);
    const uint64_t seqs[] = {5, 1, 2, 3, 4};
    put_old_session(f->dir, 1, 90, 5, 0x1f, 0, seqs, 5);
    put_old_session(f->dir, 1, 91, 1, 0x1, 0, seqs + 1, 1);
    f->s = tu_open(f->dir, 0, 0);

    struct stor_result r = put(f, 90, 5, "k", "retry of 5");
    assert_true(r.flags & STOR_RES_DUPLICATE);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.revision, 50);
    r = put(f, 90, 3, "k", "retry of 3");
    assert_true(r.flags & STOR_RES_DUPLICATE);
    assert_int_equal(r.status, RK_ESTALE);
    expect_kv(f, "k", NULL, 0);
    r = put(f, 90, 6, "k", "six");
    assert_int_equal(r.status, 0);
    assert_int_equal(r.flags, 0);
    expect_kv(f, "k", "six", r.index);
    r = put(f, 90, 6, "k", "retry of 6");
    assert_true(r.flags & STOR_RES_DUPLICATE);
    assert_int_equal(r.revision, r.index - 1);
    uint64_t last;
    assert_int_equal(stor_session_last_seq(f->s, 1, 90, &last), 0);
    assert_int_equal(last, 6);

    /* Client 90's record is now of the current size; 91's is still old
     * (and passes the check in teardown). */
    stor_close(f->s);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    uint8_t kb[16];
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 16);
    assert_int_equal(mdb_env_open(env, f->dir, MDB_RDONLY, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "sessions", 0, &dbi), 0);
    stor__put64(kb, 1);
    stor__put64(kb + 8, 90);
    MDB_val k = {.mv_size = 16, .mv_data = kb}, v;
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    assert_int_equal(v.mv_size, STOR__SESS_SIZE);
    stor__put64(kb + 8, 91);
    assert_int_equal(mdb_get(txn, dbi, &k, &v), 0);
    assert_int_equal(v.mv_size, STOR__SESS_SIZE_MAX);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    f->s = tu_open(f->dir, 0, 0);
    r = put(f, 91, 1, "k9", "retry of 1");
    assert_true(r.flags & STOR_RES_DUPLICATE);
    assert_int_equal(r.revision, 10);
}

static void test_sessions_exactly_once(void **state)
{
    struct fx *f = *state;
    struct stor_result r = put(f, 77, 1, "k", "first");
    assert_int_equal(r.status, 0);
    assert_int_equal(r.flags, 0);
    /* A retry of seq 1 reaches the log again: not applied twice. */
    r = put(f, 77, 1, "k", "retry");
    assert_int_equal(r.flags & STOR_RES_DUPLICATE, STOR_RES_DUPLICATE);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.revision, 1);
    expect_kv(f, "k", "first", 1);
    /* Out of order inside the window: 3 then 2 both apply once. */
    r = put(f, 77, 3, "k", "three");
    assert_int_equal(r.status, 0);
    r = put(f, 77, 2, "k2", "two");
    assert_int_equal(r.status, 0);
    assert_int_equal(r.flags, 0);
    r = put(f, 77, 2, "k2", "again");
    assert_true(r.flags & STOR_RES_DUPLICATE);
    expect_kv(f, "k2", "two", 4);
    uint64_t last;
    assert_int_equal(stor_session_last_seq(f->s, 1, 77, &last), 0);
    assert_int_equal(last, 3);
    /* A failed CAS is a reply like any other. */
    struct stor_cmd c = {.op = STOR_CMD_CAS,
                         .client_id = 77,
                         .seq = 4,
                         .cas_flags = STOR_CAS_REVISION,
                         .expect_rev = 99,
                         .key = "k",
                         .klen = 1,
                         .value = "z",
                         .vlen = 1};
    r = run(f, &c);
    assert_int_equal(r.status, RK_ECASMISMATCH);
    r = run(f, &c);
    assert_int_equal(r.status, RK_ECASMISMATCH);
    assert_true(r.flags & STOR_RES_DUPLICATE);
    /* Other clients are independent. */
    r = put(f, 78, 1, "k3", "x");
    assert_int_equal(r.flags, 0);
    /* Beyond the window: too old to tell, never applied. */
    r = put(f, 77, 100, "k", "hundred");
    assert_int_equal(r.status, 0);
    r = put(f, 77, 30, "k", "thirty");
    assert_int_equal(r.status, RK_ESTALE);
    assert_false(r.flags & STOR_RES_DUPLICATE);
    expect_kv(f, "k", "hundred", r.index - 1);
    /* Applied but its reply was evicted: refused, not re-applied. */
    for (uint64_t q = 101; q < 101 + STOR_SESSION_REPLIES; q++)
        put(f, 77, q, "q", "q");
    r = put(f, 77, 100, "k", "again");
    assert_true(r.flags & STOR_RES_DUPLICATE);
    assert_int_equal(r.status, RK_ESTALE);
    /* Sessions survive a restart. */
    stor_close(f->s);
    f->s = tu_open(f->dir, 0, 0);
    r = put(f, 77, 101, "q", "dup");
    assert_true(r.flags & STOR_RES_DUPLICATE);
    assert_int_equal(r.status, 0);
    /* Expiry drops idle sessions (client 78 wrote at index 8). */
    struct stor_cmd ex = {.op = STOR_CMD_EXPIRE_SESSIONS, .before_index = 10};
    r = run(f, &ex);
    assert_int_equal(r.status, 0);
    assert_int_equal(stor_session_last_seq(f->s, 1, 78, &last), 0);
    assert_int_equal(last, 0);
    assert_int_equal(stor_session_last_seq(f->s, 1, 77, &last), 0);
    assert_int_equal(last, 100 + STOR_SESSION_REPLIES);
}

static void test_apply_garbage_and_order(void **state)
{
    struct fx *f = *state;
    uint8_t junk[5] = {9, 9, 9, 9, 9};
    uint8_t conf_add[9] = {RAFT_CC_ADD_LEARNER, 0, 0, 0, 0, 0, 0, 0, 4};
    struct raft_entry ents[4] = {
        {.term = 2,
         .index = 1,
         .type = RAFT_ENTRY_NORMAL,
         .len = 5,
         .data = junk},
        {.term = 2, .index = 2, .type = RAFT_ENTRY_NOOP},
        {.term = 2,
         .index = 3,
         .type = RAFT_ENTRY_CONF,
         .len = 9,
         .data = conf_add},
        {.term = 2, .index = 4, .type = 77},
    };
    uint32_t r0;
    assert_int_equal(stor_batch_append(f->b, 1, ents, 4), 0);
    assert_int_equal(stor_batch_apply(f->b, 1, ents, 4, &r0), 0);
    assert_int_equal(stor_batch_commit(f->s, f->b), 0);
    assert_int_equal(stor_batch_result(f->b, r0)->status, RK_EPROTO);
    assert_int_equal(stor_batch_result(f->b, r0 + 1)->flags, STOR_RES_NOCMD);
    assert_int_equal(stor_batch_result(f->b, r0 + 2)->status, 0);
    assert_int_equal(stor_batch_result(f->b, r0 + 3)->status, RK_EPROTO);
    struct stor_shard_state st;
    assert_int_equal(stor_shard_load(stor_shard_get(f->s, 1), &st), 0);
    assert_int_equal(st.applied, 4);
    assert_int_equal(st.applied_term, 2);
    assert_int_equal(st.applied_conf.n_voters, 3);
    assert_int_equal(st.applied_conf.n_learners, 1);
    assert_int_equal(st.applied_conf.learners[0], 4);
    /* Re-applying is skipped; a gap fails the batch. */
    stor_batch_reset(f->b);
    assert_int_equal(stor_batch_apply(f->b, 1, ents, 2, &r0), 0);
    assert_int_equal(stor_batch_commit(f->s, f->b), 0);
    assert_int_equal(stor_batch_result(f->b, r0)->flags, STOR_RES_SKIPPED);
    stor_batch_reset(f->b);
    struct raft_entry gap = {.term = 2, .index = 9};
    assert_int_equal(stor_batch_apply(f->b, 1, &gap, 1, &r0), 0);
    assert_int_equal(stor_batch_commit(f->s, f->b), RK_EINVAL);
    assert_int_equal(stor_failed(f->s), 0);
    /* Bad adds leave the batch unchanged. */
    stor_batch_reset(f->b);
    struct raft_entry bad[2] = {{.index = 5}, {.index = 7}};
    assert_int_equal(stor_batch_append(f->b, 1, bad, 2), RK_EINVAL);
    assert_true(stor_batch_empty(f->b));
}

static bool conf_has_voter(const struct raft_conf_state *c, uint64_t id)
{
    for (uint32_t i = 0; i < c->n_voters; i++)
        if (c->voters[i] == id)
            return true;
    return false;
}

/* A replica created empty (the rebalancer's new learner) learns the group's
 * bootstrap configuration with the leader's first append and then applies
 * its own addition and promotion: the applied configuration (what
 * snapshot_meta and a restart start from) must be the group's, not {self}.
 * Found by a 5-node jepsen kill campaign: such a node restarted as a group
 * of one, elected itself and served a stale (nil) read. */
static void test_learned_bootstrap_conf_is_applied_base(void **state)
{
    struct fx *f = *state;
    struct raft_conf_state empty = {0};
    assert_int_equal(stor_batch_create_shard(f->b, 2, &empty), 0);
    assert_int_equal(stor_batch_commit(f->s, f->b), 0);
    /* Node 4 joins {1,2,3}: add-learner 4, promote 4, remove 1. */
    struct raft_entry ents[4];
    uint8_t cc[3][9];
    tu_join_entries(ents, cc, 1);
    struct raft_conf_state boot = {.n_voters = 3, .voters = {1, 2, 3}};
    /* As stor_batch_add_ready orders them: entries, then the conf; the
     * first two entries are applied in the same batch, the rest later. */
    uint32_t r0;
    stor_batch_reset(f->b);
    assert_int_equal(stor_batch_append(f->b, 2, ents, 4), 0);
    assert_int_equal(stor_batch_set_conf(f->b, 2, &boot), 0);
    assert_int_equal(stor_batch_apply(f->b, 2, ents, 2, &r0), 0);
    assert_int_equal(stor_batch_commit(f->s, f->b), 0);
    struct stor_shard_state st;
    assert_int_equal(stor_shard_load(stor_shard_get(f->s, 2), &st), 0);
    assert_int_equal(st.applied, 2);
    assert_int_equal(st.applied_conf.n_voters, 3);
    assert_int_equal(st.applied_conf.n_learners, 1);
    assert_int_equal(st.applied_conf.learners[0], 4);
    stor_batch_reset(f->b);
    assert_int_equal(stor_batch_apply(f->b, 2, ents + 2, 2, &r0), 0);
    /* A restart hands the same bootstrap conf again: nothing changes. */
    assert_int_equal(stor_batch_set_conf(f->b, 2, &boot), 0);
    assert_int_equal(stor_batch_commit(f->s, f->b), 0);
    stor_close(f->s);
    f->s = tu_open(f->dir, 0, 0);
    assert_int_equal(stor_shard_load(stor_shard_get(f->s, 2), &st), 0);
    assert_int_equal(st.applied, 4);
    assert_int_equal(st.applied_conf.n_voters, 3);
    assert_int_equal(st.applied_conf.n_learners, 0);
    assert_true(conf_has_voter(&st.applied_conf, 2));
    assert_true(conf_has_voter(&st.applied_conf, 3));
    assert_true(conf_has_voter(&st.applied_conf, 4));
    struct raft_snapshot_meta sm;
    assert_int_equal(stor_log_ops.snapshot_meta(stor_shard_get(f->s, 2), &sm),
                     0);
    assert_int_equal(sm.index, 4);
    assert_int_equal(sm.conf.n_voters, 3);
    assert_true(conf_has_voter(&sm.conf, 4) && !conf_has_voter(&sm.conf, 1));
}

static void test_cmd_codec(void **state)
{
    (void)state;
    uint8_t buf[4096], out[4096];
    size_t len;
    struct stor_cmd c = {.op = STOR_CMD_CAS,
                         .client_id = 5,
                         .seq = 9,
                         .cas_flags = STOR_CAS_DELETE,
                         .key = "key",
                         .klen = 3,
                         .expect_rev = 42,
                         .expect = "ee",
                         .elen = 2,
                         .value = "vvv",
                         .vlen = 3};
    assert_int_equal(stor_cmd_encode(&c, buf, sizeof buf, &len), 0);
    assert_int_equal(len, stor_cmd_size(&c));
    struct stor_cmd d;
    assert_int_equal(stor_cmd_decode(buf, len, &d), 0);
    assert_int_equal(d.op, STOR_CMD_CAS);
    assert_int_equal(d.client_id, 5);
    assert_int_equal(d.seq, 9);
    assert_int_equal(d.cas_flags, STOR_CAS_DELETE);
    assert_int_equal(d.expect_rev, 42);
    assert_memory_equal(d.key, "key", 3);
    assert_memory_equal(d.expect, "ee", 2);
    assert_memory_equal(d.value, "vvv", 3);
    /* Every truncation is rejected; so are trailing bytes. */
    for (size_t n = 0; n < len; n++)
        assert_int_equal(stor_cmd_decode(buf, n, &d), RK_EPROTO);
    buf[len] = 0;
    assert_int_equal(stor_cmd_decode(buf, len + 1, &d), RK_EPROTO);
    /* Limits. */
    static uint8_t big[STOR_MAX_KEY + 1];
    struct stor_cmd p = {
        .op = STOR_CMD_PUT, .key = big, .klen = STOR_MAX_KEY + 1};
    assert_int_equal(stor_cmd_encode(&p, out, sizeof out, &len), RK_ETOOLARGE);
    p.klen = 0;
    assert_int_equal(stor_cmd_encode(&p, out, sizeof out, &len), RK_EINVAL);
    p.klen = 1;
    p.op = 99;
    assert_int_equal(stor_cmd_encode(&p, out, sizeof out, &len), RK_EINVAL);
    p.op = STOR_CMD_PUT;
    assert_int_equal(stor_cmd_encode(&p, out, 4, &len), RK_ETOOLARGE);
    /* A hand-made oversized key length is TOO_LARGE only if the bytes are
     * there; otherwise it is malformed. */
    uint8_t h[64] = {1, STOR_CMD_DEL};
    stor__put32(h + 18, 1000);
    assert_int_equal(stor_cmd_decode(h, 22, &d), RK_EPROTO);
    /* Random garbage and bit flips never crash and are either valid or
     * rejected with EPROTO / ETOOLARGE. */
    struct rk_rand rng;
    rk_rand_seed(&rng, 12345);
    assert_int_equal(stor_cmd_encode(&c, buf, sizeof buf, &len), 0);
    for (int it = 0; it < 20000; it++) {
        memcpy(out, buf, len);
        size_t n = len;
        int flips = 1 + (int)rk_rand_below(&rng, 4);
        for (int k = 0; k < flips; k++)
            out[rk_rand_below(&rng, n)] ^=
                (uint8_t)(1 + rk_rand_below(&rng, 255));
        if (rk_rand_below(&rng, 4) == 0)
            n = rk_rand_below(&rng, n + 1);
        int rc = stor_cmd_decode(out, n, &d);
        assert_true(rc == 0 || rc == RK_EPROTO || rc == RK_ETOOLARGE);
        if (rc == 0) {
            assert_true(d.klen <= STOR_MAX_KEY);
            assert_true((const uint8_t *)d.key + d.klen <= out + n);
        }
    }
}

/* ----------------------------------------------------------- async */

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int status[64];
    int order[64];
};

static void on_done(struct stor_batch *b, int status, void *arg)
{
    struct waiter *w = arg;
    (void)b;
    pthread_mutex_lock(&w->mu);
    w->status[w->done] = status;
    w->done++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void test_async_double_buffering(void **state)
{
    struct fx *f = *state;
    struct waiter w = {.mu = PTHREAD_MUTEX_INITIALIZER,
                       .cv = PTHREAD_COND_INITIALIZER};
    struct stor_batch *bs[2];
    assert_int_equal(stor_batch_new(&bs[0]), 0);
    assert_int_equal(stor_batch_new(&bs[1]), 0);
    tu_create_shard(f->s, 2);
    uint8_t cmd[64];
    raft_index idx[3] = {0, 1, 1};
    int submitted = 0;
    for (int round = 0; round < 20; round++) {
        struct stor_batch *b = bs[round % 2];
        /* Wait until this buffer's previous batch is done. */
        pthread_mutex_lock(&w.mu);
        while (w.done < submitted - 1)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        stor_batch_reset(b);
        for (uint64_t sh = 1; sh <= 2; sh++) {
            struct raft_entry e = {.term = 1,
                                   .index = idx[sh],
                                   .type = RAFT_ENTRY_NORMAL,
                                   .data = cmd};
            e.len = (uint32_t)tu_put_cmd(cmd, sizeof cmd, 0, 0, "n", "v", 1);
            assert_int_equal(stor_batch_append(b, sh, &e, 1), 0);
            assert_int_equal(stor_batch_apply(b, sh, &e, 1, NULL), 0);
            idx[sh]++;
        }
        assert_int_equal(stor_batch_submit(f->s, b, on_done, &w), 0);
        submitted++;
    }
    pthread_mutex_lock(&w.mu);
    while (w.done < submitted)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    for (int i = 0; i < submitted; i++)
        assert_int_equal(w.status[i], 0);
    for (uint64_t sh = 1; sh <= 2; sh++) {
        struct stor_value v;
        assert_int_equal(stor_kv_get(f->s, sh, "n", 1, &v), 0);
        assert_int_equal(v.revision, 20);
        free(v.data);
        assert_int_equal(stor_log_last_index(stor_shard_get(f->s, sh)), 20);
    }
    stor_batch_free(bs[0]);
    stor_batch_free(bs[1]);
}

/* A batch that needs no durability is done without a WAL sync (its
 * applied cb says STOR_APPLIED_LAZY); the next one (submitted here from its
 * applied cb) syncs for its append. A batch that fails (a gap in the log)
 * rolls back alone in the open transaction: the one before it stays. All
 * of it is there after a reopen (replayed from the WAL or checkpointed). */
struct merge_fx {
    struct fx *f;
    struct stor_batch *next; /* submitted from the first applied cb */
    struct waiter *w;
    int applied_status[4];
    int n_applied;
};

static void merge_on_applied(struct stor_batch *b, int status, void *arg)
{
    struct merge_fx *m = arg;
    (void)b;
    if (m->n_applied < 4)
        m->applied_status[m->n_applied] = status;
    m->n_applied++;
    if (m->next != NULL) {
        struct stor_batch *n = m->next;
        m->next = NULL;
        assert_int_equal(stor_batch_submit(m->f->s, n, on_done, m->w), 0);
    }
}

static void wait_done(struct waiter *w, int n)
{
    pthread_mutex_lock(&w->mu);
    while (w->done < n)
        pthread_cond_wait(&w->cv, &w->mu);
    pthread_mutex_unlock(&w->mu);
}

static void test_async_lazy(void **state)
{
    struct fx *f = *state;
    struct waiter w = {.mu = PTHREAD_MUTEX_INITIALIZER,
                       .cv = PTHREAD_COND_INITIALIZER};
    uint8_t cmd[6][64];
    struct raft_entry e[6];
    const char *keys[6] = {"a", "b", "c", "d", "e", "f"};
    for (int i = 0; i < 6; i++) {
        e[i] = (struct raft_entry){.term = 1,
                                   .index = (raft_index)i + 1,
                                   .type = RAFT_ENTRY_NORMAL,
                                   .data = cmd[i]};
        e[i].len = (uint32_t)tu_put_cmd(cmd[i], sizeof cmd[i], 0, 0, keys[i],
                                        "v", 1);
    }
    struct raft_hard_state hs = {.term = 1, .vote = 1, .commit = 0};
    stor_batch_reset(f->b);
    assert_int_equal(stor_batch_set_hard_state(f->b, 1, &hs), 0);
    assert_int_equal(stor_batch_append(f->b, 1, e, 4), 0);
    assert_int_equal(stor_batch_commit(f->s, f->b), 0);

    struct stor_batch *a, *b;
    assert_int_equal(stor_batch_new(&a), 0);
    assert_int_equal(stor_batch_new(&b), 0);
    struct merge_fx m = {.f = f, .next = b, .w = &w};
    struct stor_stats s0, s1;
    stor_stats(f->s, &s0);
    /* a: commit index and an apply (lazy); b: an append and an apply. */
    hs.commit = 2;
    assert_int_equal(stor_batch_set_hard_state(a, 1, &hs), 0);
    assert_int_equal(stor_batch_apply(a, 1, &e[0], 1, NULL), 0);
    assert_int_equal(stor_batch_append(b, 1, &e[4], 1), 0);
    assert_int_equal(stor_batch_apply(b, 1, &e[1], 1, NULL), 0);
    stor_batch_on_applied(a, merge_on_applied, &m);
    stor_batch_on_applied(b, merge_on_applied, &m);
    assert_int_equal(stor_batch_submit(f->s, a, on_done, &w), 0);
    wait_done(&w, 2);
    assert_int_equal(w.status[0], 0);
    assert_int_equal(w.status[1], 0);
    assert_int_equal(m.n_applied, 2);
    assert_int_equal(m.applied_status[0], STOR_APPLIED_LAZY);
    assert_int_equal(m.applied_status[1], 0);
    assert_int_equal(stor_batch_result(a, 0)->status, 0);
    assert_int_equal(stor_batch_result(b, 0)->status, 0);
    stor_stats(f->s, &s1);
    assert_int_equal(s1.batches, s0.batches + 2);
    /* a needed no WAL sync; b's append did. */
    assert_int_equal(s1.lazy_batches, s0.lazy_batches + 1);
    assert_true(s1.wal_syncs >= s0.wal_syncs + 1);
    expect_kv(f, "a", "v", 1);
    expect_kv(f, "b", "v", 2);
    assert_int_equal(stor_log_last_index(stor_shard_get(f->s, 1)), 5);

    /* A batch that fails (a gap in the log): a still commits. */
    stor_batch_reset(a);
    stor_batch_reset(b);
    m = (struct merge_fx){.f = f, .next = b, .w = &w};
    assert_int_equal(stor_batch_apply(a, 1, &e[2], 1, NULL), 0);
    struct raft_entry gap = e[5];
    gap.index = 9;
    assert_int_equal(stor_batch_append(b, 1, &gap, 1), 0);
    stor_batch_on_applied(a, merge_on_applied, &m);
    stor_batch_on_applied(b, merge_on_applied, &m);
    assert_int_equal(stor_batch_submit(f->s, a, on_done, &w), 0);
    wait_done(&w, 4);
    assert_int_equal(w.status[2], 0);
    assert_int_not_equal(w.status[3], 0);
    assert_int_equal(m.applied_status[0], STOR_APPLIED_LAZY);
    assert_int_equal(stor_batch_result(a, 0)->status, 0);
    expect_kv(f, "c", "v", 3);
    assert_int_equal(stor_log_last_index(stor_shard_get(f->s, 1)), 5);

    /* A lone lazy batch is done by itself (no WAL sync). */
    stor_stats(f->s, &s0);
    stor_batch_reset(a);
    m = (struct merge_fx){.f = f, .w = &w};
    assert_int_equal(stor_batch_apply(a, 1, &e[3], 1, NULL), 0);
    stor_batch_on_applied(a, merge_on_applied, &m);
    assert_int_equal(stor_batch_submit(f->s, a, on_done, &w), 0);
    wait_done(&w, 5);
    assert_int_equal(w.status[4], 0);
    stor_stats(f->s, &s1);
    assert_int_equal(s1.batches, s0.batches + 1);
    assert_int_equal(s1.lazy_batches, s0.lazy_batches + 1);
    assert_int_equal(s1.wal_syncs, s0.wal_syncs);
    expect_kv(f, "d", "v", 4);

    /* All of it survives a reopen. */
    stor_batch_free(a);
    stor_batch_free(b);
    stor_close(f->s);
    f->s = tu_open(f->dir, 0, 0);
    struct stor_shard_state st;
    assert_int_equal(stor_shard_load(stor_shard_get(f->s, 1), &st), 0);
    assert_int_equal(st.applied, 4);
    assert_int_equal(st.last_index, 5);
    expect_kv(f, "b", "v", 2);
    expect_kv(f, "d", "v", 4);
}

/* A replica created with an empty configuration (to join a group) that
 * learns the bootstrap configuration from the leader and then applies CONF
 * entries: its applied configuration (what a restart rebuilds membership
 * from) holds the bootstrap members plus the changes, not the changes
 * alone. (e2e_join failed on this: after a full restart the joined node
 * believed it was the only voter of a shard and elected itself.) */
static void test_joined_replica_applied_conf(void **state)
{
    struct fx *f = *state;
    struct raft_conf_state empty = {0};
    assert_int_equal(stor_batch_create_shard(f->b, 5, &empty), 0);
    assert_int_equal(stor_batch_commit(f->s, f->b), 0);
    stor_batch_reset(f->b);
    struct raft_conf_state boot = {.n_voters = 3, .voters = {1, 2, 3}};
    uint8_t add4[9] = {RAFT_CC_ADD_LEARNER, 0, 0, 0, 0, 0, 0, 0, 4};
    uint8_t promote4[9] = {RAFT_CC_PROMOTE, 0, 0, 0, 0, 0, 0, 0, 4};
    uint8_t remove2[9] = {RAFT_CC_REMOVE, 0, 0, 0, 0, 0, 0, 0, 2};
    struct raft_entry ents[3] = {
        {.term = 1, .index = 1, .type = RAFT_ENTRY_CONF, .len = 9,
         .data = add4},
        {.term = 1, .index = 2, .type = RAFT_ENTRY_CONF, .len = 9,
         .data = promote4},
        {.term = 1, .index = 3, .type = RAFT_ENTRY_CONF, .len = 9,
         .data = remove2},
    };
    /* As ringkvd writes a ready: the learned configuration, the entries,
     * then (here in the same batch) their apply. */
    assert_int_equal(stor_batch_append(f->b, 5, ents, 3), 0);
    assert_int_equal(stor_batch_set_conf(f->b, 5, &boot), 0);
    assert_int_equal(stor_batch_apply(f->b, 5, ents, 3, NULL), 0);
    assert_int_equal(stor_batch_commit(f->s, f->b), 0);
    stor_close(f->s);
    f->s = tu_open(f->dir, 0, 0);
    struct stor_shard_state st;
    assert_int_equal(stor_shard_load(stor_shard_get(f->s, 5), &st), 0);
    assert_int_equal(st.applied, 3);
    assert_int_equal(st.conf.n_voters, 3);
    assert_int_equal(st.applied_conf.n_voters, 3);
    uint64_t sum = 0;
    for (uint32_t i = 0; i < st.applied_conf.n_voters; i++)
        sum |= (uint64_t)1 << st.applied_conf.voters[i];
    assert_int_equal(sum, (1u << 1) | (1u << 3) | (1u << 4)); /* 1, 3, 4 */
    assert_int_equal(st.applied_conf.n_learners, 0);
    /* The bootstrap configuration handed over again at a later start (the
     * core does so once per start) leaves the applied one alone. */
    stor_batch_reset(f->b);
    assert_int_equal(stor_batch_set_conf(f->b, 5, &boot), 0);
    assert_int_equal(stor_batch_commit(f->s, f->b), 0);
    struct raft_conf_state before = st.applied_conf;
    assert_int_equal(stor_shard_load(stor_shard_get(f->s, 5), &st), 0);
    assert_memory_equal(&st.applied_conf, &before, sizeof(before));
}

/* Commits one batch built by the caller; returns 1 when it needed no WAL
 * sync (a "lazy" batch), 0 when it was made durable. stor_batch_commit
 * syncs the WAL after either kind (its checkpoint's data sync runs on the
 * sync thread, so the WAL makes the batch durable before it returns). */
static int commit_lazy(struct fx *f)
{
    struct stor_stats a, b;
    stor_stats(f->s, &a);
    assert_int_equal(stor_batch_commit(f->s, f->b), 0);
    stor_stats(f->s, &b);
    assert_int_equal(b.batches, a.batches + 1);
    int lazy = (int)(b.lazy_batches - a.lazy_batches);
    assert_int_equal(b.wal_syncs - a.wal_syncs, 1);
    stor_batch_reset(f->b);
    return lazy;
}

/* Only batches without appends, term/vote changes, membership changes,
 * snapshots or shard creation skip the WAL sync; and what they wrote is
 * committed like any other batch. */
static void test_which_batches_sync(void **state)
{
    struct fx *f = *state;
    uint8_t cmd[64];
    struct raft_entry e[2];
    for (int i = 0; i < 2; i++) {
        e[i] = (struct raft_entry){.term = 1,
                                   .index = (raft_index)i + 1,
                                   .type = RAFT_ENTRY_NORMAL,
                                   .data = cmd};
        e[i].len = (uint32_t)tu_put_cmd(cmd, sizeof cmd, 0, 0, "z", "v", 1);
    }
    struct raft_hard_state hs = {.term = 1, .vote = 1, .commit = 0};
    stor_batch_reset(f->b);
    /* The first hard state after open is durable (nothing to compare). */
    assert_int_equal(stor_batch_set_hard_state(f->b, 1, &hs), 0);
    assert_int_equal(commit_lazy(f), 0);
    assert_int_equal(stor_batch_append(f->b, 1, e, 2), 0);
    assert_int_equal(commit_lazy(f), 0);
    /* Commit index only: lazy. */
    hs.commit = 2;
    assert_int_equal(stor_batch_set_hard_state(f->b, 1, &hs), 0);
    assert_int_equal(commit_lazy(f), 1);
    /* Apply only: lazy, and applied like any batch. */
    assert_int_equal(stor_batch_apply(f->b, 1, &e[0], 1, NULL), 0);
    assert_int_equal(commit_lazy(f), 1);
    expect_kv(f, "z", "v", 1);
    /* Compaction only: lazy. */
    assert_int_equal(stor_batch_compact(f->b, 1, 1), 0);
    assert_int_equal(commit_lazy(f), 1);
    /* Apply + a vote change in one batch: durable. */
    hs.vote = 2;
    assert_int_equal(stor_batch_apply(f->b, 1, &e[1], 1, NULL), 0);
    assert_int_equal(stor_batch_set_hard_state(f->b, 1, &hs), 0);
    assert_int_equal(commit_lazy(f), 0);
    /* A term change: durable; the same term and vote again: lazy. */
    hs.term = 2;
    assert_int_equal(stor_batch_set_hard_state(f->b, 1, &hs), 0);
    assert_int_equal(commit_lazy(f), 0);
    assert_int_equal(stor_batch_set_hard_state(f->b, 1, &hs), 0);
    assert_int_equal(commit_lazy(f), 1);
    /* Membership (applied configuration) and shard creation: durable. */
    struct raft_conf_state conf = {.n_voters = 1, .voters = {1}};
    assert_int_equal(stor_batch_set_applied_conf(f->b, 1, &conf), 0);
    assert_int_equal(commit_lazy(f), 0);
    assert_int_equal(stor_batch_create_shard(f->b, 9, &conf), 0);
    assert_int_equal(commit_lazy(f), 0);
    /* Everything is there after reopening. */
    stor_close(f->s);
    f->s = tu_open(f->dir, 0, 0);
    struct stor_shard_state st;
    assert_int_equal(stor_shard_load(stor_shard_get(f->s, 1), &st), 0);
    assert_int_equal(st.applied, 2);
    assert_int_equal(st.hs.term, 2);
    assert_int_equal(st.hs.vote, 2);
    assert_int_equal(st.hs.commit, 2);
    expect_kv(f, "z", "v", 2);
    assert_non_null(stor_shard_get(f->s, 9));
}

/* Submitted batches run in the open transaction behind the WAL: readers
 * see them at once (the KV overlay, the log tail: no checkpoint between
 * them, the interval is 1 s); a refused batch among them (a gap) drops the
 * open transaction and rebuilds it from the WAL without losing the others;
 * a truncation of the log tail is seen too; and a close without a final
 * checkpoint (the process dies) leaves them all to the WAL replay. */
static void test_open_txn_overlay_tail_replay(void **state)
{
    struct fx *f = *state;
    struct waiter w = {.mu = PTHREAD_MUTEX_INITIALIZER,
                       .cv = PTHREAD_COND_INITIALIZER};
    uint8_t cmd[12][64];
    struct raft_entry e[12];
    char key[12][8], val[12][8];
    for (int i = 0; i < 12; i++) {
        snprintf(key[i], sizeof key[i], "o%d", i % 6);
        snprintf(val[i], sizeof val[i], "v%d", i + 1);
        e[i] = (struct raft_entry){.term = 1,
                                   .index = (raft_index)i + 1,
                                   .type = RAFT_ENTRY_NORMAL,
                                   .data = cmd[i]};
        e[i].len = (uint32_t)tu_put_cmd(cmd[i], sizeof cmd[i], 0, 0, key[i],
                                        val[i], (uint32_t)strlen(val[i]));
    }
    struct stor_stats s0, s1;
    stor_stats(f->s, &s0);
    struct stor_batch *bs[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(stor_batch_new(&bs[i]), 0);
    /* 1-6 appended and applied, 7-9 appended only. */
    assert_int_equal(stor_batch_append(bs[0], 1, e, 9), 0);
    assert_int_equal(stor_batch_apply(bs[0], 1, e, 6, NULL), 0);
    /* A gap: refused. */
    struct raft_entry gap = e[11];
    gap.index = 20;
    assert_int_equal(stor_batch_append(bs[1], 1, &gap, 1), 0);
    /* Then 8-9 replaced by a higher term (the tail cut), 7 applied. */
    struct raft_entry t2[2] = {e[7], e[8]};
    t2[0].term = t2[1].term = 2;
    assert_int_equal(stor_batch_append(bs[2], 1, t2, 2), 0);
    assert_int_equal(stor_batch_apply(bs[2], 1, &e[6], 1, NULL), 0);
    assert_int_equal(stor_batch_submit(f->s, bs[0], on_done, &w), 0);
    assert_int_equal(stor_batch_submit(f->s, bs[1], on_done, &w), 0);
    assert_int_equal(stor_batch_submit(f->s, bs[2], on_done, &w), 0);
    pthread_mutex_lock(&w.mu);
    while (w.done < 3)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    assert_int_equal(w.status[0], 0);
    assert_int_equal(w.status[1], RK_EINVAL);
    assert_int_equal(w.status[2], 0);
    stor_stats(f->s, &s1);
    assert_int_equal(s1.checkpoints, s0.checkpoints); /* all in the txn */

    struct stor_shard *sh = stor_shard_get(f->s, 1);
    assert_int_equal(stor_log_last_index(sh), 9);
    assert_int_equal(stor_log_last_term(sh), 2);
    raft_term t;
    assert_int_equal(stor_log_term(sh, 8, &t), 0);
    assert_int_equal(t, 2);
    assert_int_equal(stor_log_term(sh, 5, &t), 0);
    assert_int_equal(t, 1);
    struct raft_entry *got;
    uint32_t n;
    assert_int_equal(stor_log_entries(sh, 1, 10, 0, &got, &n), 0);
    assert_int_equal(n, 9);
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(got[i].index, i + 1);
        assert_int_equal(got[i].term, i >= 7 ? 2 : 1);
        assert_int_equal(got[i].len, e[i].len);
        assert_memory_equal(got[i].data, e[i].data, e[i].len);
    }
    free(got);
    /* o0..o5 hold v1..v6, then o0 = v7 (entry 7). */
    expect_kv(f, "o0", "v7", 7);
    for (int i = 1; i < 6; i++)
        expect_kv(f, key[i], val[i], (uint64_t)i + 1);
    stor_stats(f->s, &s1);
    assert_int_equal(s1.checkpoints, s0.checkpoints);

    /* The process dies: nothing more is checkpointed (a copy of the data
     * dir as it is now, opened elsewhere). */
    char copy[600], cmdline[1300];
    snprintf(copy, sizeof copy, "%s-copy", f->dir);
    snprintf(cmdline, sizeof cmdline, "rm -rf '%s' && cp -a '%s' '%s'", copy,
             f->dir, copy);
    assert_int_equal(system(cmdline), 0);
    struct stor *c = tu_open(copy, 0, 0);
    stor_stats(c, &s1);
    assert_int_equal(s1.wal_replayed, 2); /* bs[0] and bs[2] */
    struct stor_shard *csh = stor_shard_get(c, 1);
    struct stor_shard_state st;
    assert_int_equal(stor_shard_load(csh, &st), 0);
    assert_int_equal(st.applied, 7);
    assert_int_equal(st.last_index, 9);
    assert_int_equal(stor_log_last_term(csh), 2);
    struct stor_value v;
    assert_int_equal(stor_kv_get(c, 1, "o0", 2, &v), 0);
    assert_int_equal(v.revision, 7);
    free(v.data);
    assert_int_equal(tu_check(c), 0);
    stor_close(c);
    tu_rmrf(copy);

    /* A scan sees the overlay without a checkpoint (o0 = v7, entry 7). */
    struct stor_scan sc;
    assert_int_equal(stor_kv_scan(f->s, 1, "o", 1, NULL, 0, 0, 0, &sc), 0);
    assert_int_equal(sc.n, 6);
    assert_int_equal(sc.items[0].vlen, 2);
    assert_memory_equal(sc.items[0].value, "v7", 2);
    assert_int_equal(sc.items[0].revision, 7);
    free(sc.items);
    stor_stats(f->s, &s1);
    assert_int_equal(s1.checkpoints, s0.checkpoints);
    /* A reader of LMDB only asks for a checkpoint: LMDB then holds it
     * all. */
    struct stor_shard_state lst;
    assert_int_equal(stor_shard_load(sh, &lst), 0);
    assert_int_equal(lst.applied, 7);
    stor_stats(f->s, &s1);
    assert_true(s1.checkpoints > s0.checkpoints);
    for (int i = 0; i < 4; i++)
        stor_batch_free(bs[i]);
}

/* Batches that overflow the map inside the open transaction (one burst,
 * no checkpoint between them): the batch that fills it drops the
 * transaction, which is rebuilt from the WAL (itself overflowing the map
 * on the way: partial checkpoints, growth), the map grows and the batch
 * runs again. Every batch succeeds; everything reads back, before and
 * after a reopen. */
static void test_open_txn_fills_map(void **state)
{
    struct fx *f = *state;
    stor_close(f->s);
    tu_rmrf(f->dir);
    f->s = tu_open(f->dir, 1 << 20, 0);
    tu_create_shard(f->s, 1);
    enum { N = 24, VLEN = 400 << 10 };
    struct waiter w = {.mu = PTHREAD_MUTEX_INITIALIZER,
                       .cv = PTHREAD_COND_INITIALIZER};
    struct stor_batch *bs[N];
    uint8_t *val = malloc(VLEN), *cmd = malloc(VLEN + 256);
    assert_non_null(val);
    assert_non_null(cmd);
    struct stor_stats s0, s1;
    stor_stats(f->s, &s0);
    for (int i = 0; i < N; i++) {
        char key[16];
        snprintf(key, sizeof key, "big%d", i);
        memset(val, 'a' + i, VLEN);
        struct stor_cmd c = {.op = STOR_CMD_PUT,
                             .key = key,
                             .klen = (uint32_t)strlen(key),
                             .value = val,
                             .vlen = VLEN};
        size_t len;
        assert_int_equal(stor_cmd_encode(&c, cmd, VLEN + 256, &len), 0);
        struct raft_entry e = {.term = 1,
                               .index = (raft_index)i + 1,
                               .type = RAFT_ENTRY_NORMAL,
                               .data = cmd,
                               .len = (uint32_t)len};
        assert_int_equal(stor_batch_new(&bs[i]), 0);
        assert_int_equal(stor_batch_append(bs[i], 1, &e, 1), 0);
        assert_int_equal(stor_batch_apply(bs[i], 1, &e, 1, NULL), 0);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(stor_batch_submit(f->s, bs[i], on_done, &w), 0);
    pthread_mutex_lock(&w.mu);
    while (w.done < N)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    for (int i = 0; i < N; i++)
        assert_int_equal(w.status[i], 0);
    stor_stats(f->s, &s1);
    assert_true(s1.grows >= s0.grows + 1); /* 8 MiB could not hold it */
    assert_int_equal(stor_failed(f->s), 0);
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < N; i++) {
            char key[16];
            struct stor_value v;
            snprintf(key, sizeof key, "big%d", i);
            assert_int_equal(stor_kv_get(f->s, 1, key, strlen(key), &v), 0);
            assert_int_equal(v.len, VLEN);
            assert_int_equal(v.revision, (uint64_t)i + 1);
            assert_int_equal(((uint8_t *)v.data)[VLEN - 1], 'a' + i);
            free(v.data);
        }
        /* A scan sees them all too (the overlay on top of partial
         * checkpoints, then LMDB after the reopen). */
        struct stor_scan sc;
        assert_int_equal(stor_kv_scan(f->s, 1, "big", 3, NULL, 0, 0,
                                      (size_t)32 << 20, &sc),
                         0);
        assert_int_equal(sc.n, N);
        assert_false(sc.more);
        for (uint32_t i = 0; i < sc.n; i++) {
            assert_int_equal(sc.items[i].vlen, VLEN);
            int k = atoi((const char *)sc.items[i].key + 3);
            assert_int_equal(sc.items[i].revision, (uint64_t)k + 1);
            assert_int_equal(((const uint8_t *)sc.items[i].value)[0], 'a' + k);
        }
        free(sc.items);
        assert_int_equal(stor_log_last_index(stor_shard_get(f->s, 1)), N);
        stor_close(f->s);
        f->s = tu_open(f->dir, 0, 0);
    }
    for (int i = 0; i < N; i++)
        stor_batch_free(bs[i]);
    free(val);
    free(cmd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get_del, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sessions_exactly_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_sessions_old_records, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_apply_garbage_and_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(
            test_learned_bootstrap_conf_is_applied_base, setup, teardown),
        cmocka_unit_test(test_cmd_codec),
        cmocka_unit_test_setup_teardown(test_which_batches_sync, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_joined_replica_applied_conf,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_txn_overlay_tail_replay,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_txn_fills_map, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_async_lazy, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_async_double_buffering, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
