/* Storage tests: snapshot export while writing, staging, install. */
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

#define N_SHARDS 8

struct fx {
    char *dir_a, *dir_b;
    struct stor *a, *b;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->dir_a = tu_mkdtemp("snapa");
    f->dir_b = tu_mkdtemp("snapb");
    /* Small chunks so that every shard needs many. */
    f->a = tu_open(f->dir_a, 0, 700);
    f->b = tu_open(f->dir_b, 0, 700);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    assert_int_equal(tu_check(f->a), 0);
    assert_int_equal(tu_check(f->b), 0);
    stor_close(f->a);
    stor_close(f->b);
    tu_rmrf(f->dir_a);
    tu_rmrf(f->dir_b);
    free(f->dir_a);
    free(f->dir_b);
    free(f);
    return 0;
}

/* Applies n session writes of client c to shard sh starting at index first. */
static void session_writes(struct stor *s, uint64_t sh, raft_index first,
                           uint32_t n, uint64_t client)
{
    struct stor_batch *b;
    assert_int_equal(stor_batch_new(&b), 0);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t cmd[128];
        char key[32];
        snprintf(key, sizeof key, "s%llu-%u", (unsigned long long)client, i);
        struct raft_entry e = {.term = 3, .index = first + i, .data = cmd};
        e.len = (uint32_t)tu_put_cmd(cmd, sizeof cmd, client, i + 1, key, key,
                                     (uint32_t)strlen(key));
        assert_int_equal(stor_batch_append(b, sh, &e, 1), 0);
        assert_int_equal(stor_batch_apply(b, sh, &e, 1, NULL), 0);
    }
    assert_int_equal(stor_batch_commit(s, b), 0);
    stor_batch_free(b);
}

/* Applies n puts of long keys (sharing their first 480 bytes, 481 to
 * about 5,000 bytes) to shard sh from index first. */
static void long_writes(struct stor *s, uint64_t sh, raft_index first,
                        uint32_t n)
{
    struct stor_batch *b;
    assert_int_equal(stor_batch_new(&b), 0);
    for (uint32_t i = 0; i < n; i++) {
        static char key[8192];
        static uint8_t cmd[8400];
        size_t kl = 480 + 1 + (size_t)i * 700;
        memset(key, 'Q', 480);
        memset(key + 480, 'a' + (int)i, kl - 480);
        key[kl] = 0;
        struct raft_entry e = {.term = 3, .index = first + i, .data = cmd};
        e.len = (uint32_t)tu_put_cmd(cmd, sizeof cmd, 0, 0, key, "long", 4);
        assert_int_equal(stor_batch_append(b, sh, &e, 1), 0);
        assert_int_equal(stor_batch_apply(b, sh, &e, 1, NULL), 0);
    }
    assert_int_equal(stor_batch_commit(s, b), 0);
    stor_batch_free(b);
}

/* Exports a shard of `from` chunk by chunk and installs it into `to`;
 * each chunk is the target, or one record over it (long_writes: < 6 KiB). */
static void transfer(struct stor *from, struct stor *to, uint64_t id,
                     struct raft_snapshot_meta *meta_out, uint32_t *chunks)
{
    assert_int_equal(tu_transfer(from, to, id, 700 + 6144, meta_out, chunks),
                     0);
}

static void assert_same_kv(struct stor *x, struct stor *y, uint64_t id)
{
    struct stor_scan sx, sy;
    assert_int_equal(stor_kv_scan(x, id, NULL, 0, NULL, 0, 0, 0, &sx), 0);
    assert_int_equal(stor_kv_scan(y, id, NULL, 0, NULL, 0, 0, 0, &sy), 0);
    assert_int_equal(sx.n, sy.n);
    for (uint32_t i = 0; i < sx.n; i++) {
        assert_int_equal(sx.items[i].klen, sy.items[i].klen);
        assert_memory_equal(sx.items[i].key, sy.items[i].key, sx.items[i].klen);
        assert_int_equal(sx.items[i].vlen, sy.items[i].vlen);
        assert_memory_equal(sx.items[i].value, sy.items[i].value,
                            sx.items[i].vlen);
        assert_int_equal(sx.items[i].revision, sy.items[i].revision);
        assert_int_equal(sx.items[i].create_revision,
                         sy.items[i].create_revision);
    }
    free(sx.items);
    free(sy.items);
}

static void test_roundtrip_many_shards(void **state)
{
    struct fx *f = *state;
    for (uint64_t id = 1; id <= N_SHARDS; id++) {
        tu_create_shard(f->a, id);
        tu_create_shard(f->b, id);
        /* Different amounts per shard, including a near-empty one. */
        uint32_t n = id == 3 ? 1 : (uint32_t)(40 * id);
        assert_int_equal(tu_append_apply(f->a, id, 1, n, 3, true), 0);
        session_writes(f->a, id, n + 1, 5, 100 + id);
        /* The destination has older, different data that must vanish. */
        assert_int_equal(tu_append_apply(f->b, id, 1, 7, 1, true), 0);
        session_writes(f->b, id, 8, 3, 999);
    }
    for (uint64_t id = 1; id <= N_SHARDS; id++) {
        struct raft_snapshot_meta meta;
        uint32_t chunks;
        transfer(f->a, f->b, id, &meta, &chunks);
        uint32_t n = id == 3 ? 1 : (uint32_t)(40 * id);
        assert_int_equal(meta.index, n + 5);
        assert_int_equal(meta.term, 3);
        assert_int_equal(meta.conf.n_voters, 3);
        if (id >= 4)
            assert_true(chunks > 2);
        assert_same_kv(f->a, f->b, id);
        struct stor_shard_state st;
        struct stor_shard *sh = stor_shard_get(f->b, id);
        assert_int_equal(stor_shard_load(sh, &st), 0);
        assert_int_equal(st.applied, meta.index);
        assert_int_equal(st.applied_term, 3);
        assert_int_equal(st.first_index, meta.index + 1);
        assert_int_equal(st.last_index, meta.index);
        assert_int_equal(st.snap.index, meta.index);
        assert_true(st.hs.commit >= meta.index);
        raft_term t;
        assert_int_equal(stor_log_term(sh, meta.index, &t), 0);
        assert_int_equal(t, 3);
        /* Sessions came along and the old ones are gone. */
        uint64_t seq;
        assert_int_equal(stor_session_last_seq(f->b, id, 100 + id, &seq), 0);
        assert_int_equal(seq, 5);
        assert_int_equal(stor_session_last_seq(f->b, id, 999, &seq), 0);
        assert_int_equal(seq, 0);
        /* The installed shard keeps going: the log continues after it. */
        assert_int_equal(tu_append_apply(f->b, id, meta.index + 1, 3, 4, true),
                         0);
        /* And a retried session write is a duplicate there. */
        uint8_t cmd[128];
        struct raft_entry e = {.term = 4, .index = meta.index + 4, .data = cmd};
        e.len =
            (uint32_t)tu_put_cmd(cmd, sizeof cmd, 100 + id, 5, "zz", "zz", 2);
        struct stor_batch *b;
        uint32_t r;
        assert_int_equal(stor_batch_new(&b), 0);
        assert_int_equal(stor_batch_append(b, id, &e, 1), 0);
        assert_int_equal(stor_batch_apply(b, id, &e, 1, &r), 0);
        assert_int_equal(stor_batch_commit(f->b, b), 0);
        assert_true(stor_batch_result(b, r)->flags & STOR_RES_DUPLICATE);
        stor_batch_free(b);
    }
    /* All of it survives a reopen. */
    stor_close(f->b);
    f->b = tu_open(f->dir_b, 0, 700);
    for (uint64_t id = 1; id <= N_SHARDS; id++) {
        struct stor_shard_state st;
        assert_int_equal(stor_shard_load(stor_shard_get(f->b, id), &st), 0);
        uint32_t n = id == 3 ? 1 : (uint32_t)(40 * id);
        assert_int_equal(st.applied, n + 5 + 4);
    }
}

static void test_export_is_pinned_while_writing(void **state)
{
    struct fx *f = *state;
    tu_create_shard(f->a, 1);
    tu_create_shard(f->b, 1);
    assert_int_equal(tu_append_apply(f->a, 1, 1, 300, 1, true), 0);
    struct stor_shard *sh = stor_shard_get(f->a, 1);
    struct raft_snapshot_meta meta, again;
    assert_int_equal(stor_snapshot_meta(sh, &meta), 0);
    assert_int_equal(meta.index, 300);
    /* Writers keep going: the export still describes index 300. */
    assert_int_equal(tu_append_apply(f->a, 1, 301, 200, 1, true), 0);
    assert_int_equal(stor_snapshot_meta(sh, &again), 0);
    assert_int_equal(again.index, 300); /* reused while fresh */
    /* Chunks in any order, any number of times, give the same bytes. */
    void *c0, *c2, *c2b, *c1;
    uint32_t l0, l2, l2b, l1;
    bool last;
    assert_int_equal(stor_snapshot_chunk(sh, 300, 2, &c2, &l2, &last), 0);
    assert_int_equal(stor_snapshot_chunk(sh, 300, 0, &c0, &l0, &last), 0);
    assert_int_equal(stor_snapshot_chunk(sh, 300, 1, &c1, &l1, &last), 0);
    assert_int_equal(stor_snapshot_chunk(sh, 300, 2, &c2b, &l2b, &last), 0);
    assert_int_equal(l2, l2b);
    assert_memory_equal(c2, c2b, l2);
    free(c0);
    free(c1);
    free(c2);
    free(c2b);
    void *d;
    uint32_t l;
    assert_int_equal(stor_snapshot_chunk(sh, 299, 0, &d, &l, &last), RK_ESTALE);
    assert_int_equal(stor_snapshot_chunk(sh, 300, 100000, &d, &l, &last),
                     RK_EINVAL);
    /* Transfer and compare with what index 300 held: "k<i%64>" = v<i>. */
    struct raft_snapshot_meta m;
    uint32_t chunks;
    transfer(f->a, f->b, 1, &m, &chunks);
    assert_int_equal(m.index, 300);
    for (int j = 0; j < 64; j++) {
        char key[16], val[16];
        int last_i = 300 - ((300 - j) % 64 + 64) % 64;
        snprintf(key, sizeof key, "k%d", j);
        snprintf(val, sizeof val, "v%d", last_i);
        struct stor_value v;
        assert_int_equal(stor_kv_get(f->b, 1, key, strlen(key), &v), 0);
        assert_int_equal(v.len, strlen(val));
        assert_memory_equal(v.data, val, v.len);
        assert_int_equal(v.revision, (uint64_t)last_i);
        free(v.data);
    }
    struct stor_stats st;
    stor_stats(f->a, &st);
    assert_int_equal(st.n_exports, 1);
    /* Once the log is compacted past it, the export is not handed out
     * again: a follower could not continue after it. */
    struct stor_batch *b;
    assert_int_equal(stor_batch_new(&b), 0);
    assert_int_equal(stor_batch_compact(b, 1, 400), 0);
    assert_int_equal(stor_batch_commit(f->a, b), 0);
    stor_batch_free(b);
    assert_int_equal(stor_log_first_index(sh), 401);
    assert_int_equal(stor_snapshot_meta(sh, &again), 0);
    assert_int_equal(again.index, 500);
    stor_stats(f->a, &st);
    assert_int_equal(st.n_exports, 2);
}

static void test_bad_chunks_and_install(void **state)
{
    struct fx *f = *state;
    tu_create_shard(f->a, 1);
    tu_create_shard(f->b, 1);
    assert_int_equal(tu_append_apply(f->a, 1, 1, 100, 1, true), 0);
    struct stor_shard *sh = stor_shard_get(f->a, 1);
    struct raft_snapshot_meta meta;
    assert_int_equal(stor_snapshot_meta(sh, &meta), 0);
    void *c0, *c1;
    uint32_t l0, l1;
    bool last;
    assert_int_equal(stor_snapshot_chunk(sh, meta.index, 0, &c0, &l0, &last),
                     0);
    assert_int_equal(stor_snapshot_chunk(sh, meta.index, 1, &c1, &l1, &last),
                     0);
    struct stor_batch *b;
    uint32_t op, op2;
    assert_int_equal(stor_batch_new(&b), 0);
    /* A flipped byte fails the checksum: not staged, batch still fine. */
    ((uint8_t *)c0)[40] ^= 1;
    struct raft_snap_chunk c = {.meta = meta, .seq = 0, .len = l0, .data = c0};
    assert_int_equal(stor_batch_stage_chunk(b, 1, &c, &op), 0);
    assert_int_equal(tu_append_apply(f->b, 1, 1, 3, 1, true), 0);
    assert_int_equal(stor_batch_commit(f->b, b), 0);
    assert_int_equal(stor_batch_op_status(b, op), RK_EPROTO);
    ((uint8_t *)c0)[40] ^= 1;
    /* Out of order. */
    stor_batch_reset(b);
    c.seq = 1;
    c.data = c1;
    c.len = l1;
    assert_int_equal(stor_batch_stage_chunk(b, 1, &c, &op), 0);
    assert_int_equal(stor_batch_commit(f->b, b), 0);
    assert_int_equal(stor_batch_op_status(b, op), RK_EINVAL);
    /* Truncated (frame fields of another seq). */
    stor_batch_reset(b);
    c.seq = 0;
    c.data = c0;
    c.len = 10;
    assert_int_equal(stor_batch_stage_chunk(b, 1, &c, &op), 0);
    assert_int_equal(stor_batch_commit(f->b, b), 0);
    assert_int_equal(stor_batch_op_status(b, op), RK_EPROTO);
    /* Install of an incompletely staged snapshot fails alone. */
    stor_batch_reset(b);
    c.len = l0;
    assert_int_equal(stor_batch_stage_chunk(b, 1, &c, &op), 0);
    assert_int_equal(stor_batch_install_snapshot(b, 1, &meta, &op2), 0);
    assert_int_equal(stor_batch_commit(f->b, b), 0);
    assert_int_equal(stor_batch_op_status(b, op), 0);
    assert_int_equal(stor_batch_op_status(b, op2), RK_EINVAL);
    /* Nothing changed in the destination's state machine. */
    struct stor_shard_state st;
    assert_int_equal(stor_shard_load(stor_shard_get(f->b, 1), &st), 0);
    assert_int_equal(st.applied, 3);
    /* A random garbage chunk with a valid frame is rejected at install. */
    uint8_t junk[64];
    memset(junk, 0x5a, sizeof junk);
    memcpy(junk, "RKS1", 4);
    stor__put64(junk + 8, meta.index);
    stor__put64(junk + 16, meta.term);
    stor__put32(junk + 24, 0);
    junk[28] = 1;
    stor__put32(junk + 4, stor__crc32c(0, junk + 8, sizeof junk - 8));
    stor_batch_reset(b);
    c.seq = 0;
    c.last = true;
    c.data = junk;
    c.len = sizeof junk;
    assert_int_equal(stor_batch_stage_chunk(b, 1, &c, &op), 0);
    assert_int_equal(stor_batch_install_snapshot(b, 1, &meta, &op2), 0);
    assert_int_equal(stor_batch_commit(f->b, b), 0);
    assert_int_equal(stor_batch_op_status(b, op), 0);
    assert_int_equal(stor_batch_op_status(b, op2), RK_EPROTO);
    assert_int_equal(stor_failed(f->b), 0);
    assert_int_equal(stor_shard_load(stor_shard_get(f->b, 1), &st), 0);
    assert_int_equal(st.applied, 3);
    free(c0);
    free(c1);
    stor_batch_free(b);
    /* A shard with nothing applied has no snapshot. */
    tu_create_shard(f->a, 2);
    assert_int_equal(stor_snapshot_meta(stor_shard_get(f->a, 2), &meta), 0);
    assert_int_equal(meta.index, 0);
}

static void test_export_dropped_by_map_growth(void **state)
{
    struct fx *f = *state;
    stor_close(f->a);
    tu_rmrf(f->dir_a);
    free(f->dir_a);
    f->dir_a = tu_mkdtemp("snapgrow");
    f->a = tu_open(f->dir_a, 1 << 20, 700);
    tu_create_shard(f->a, 1);
    assert_int_equal(tu_append_apply(f->a, 1, 1, 50, 1, true), 0);
    struct stor_shard *sh = stor_shard_get(f->a, 1);
    struct raft_snapshot_meta meta;
    assert_int_equal(stor_snapshot_meta(sh, &meta), 0);
    /* Fill until the map grows. */
    static uint8_t blob[32 << 10];
    struct stor_batch *b;
    assert_int_equal(stor_batch_new(&b), 0);
    struct stor_stats st;
    stor_stats(f->a, &st);
    uint64_t grows0 = st.grows;
    raft_index i = 51;
    do {
        struct raft_entry e = {
            .term = 1, .index = i++, .len = sizeof blob, .data = blob};
        stor_batch_reset(b);
        assert_int_equal(stor_batch_append(b, 1, &e, 1), 0);
        assert_int_equal(stor_batch_commit(f->a, b), 0);
        stor_stats(f->a, &st);
    } while (st.grows == grows0 && i < 2000);
    assert_true(st.grows > grows0);
    stor_batch_free(b);
    void *d;
    uint32_t l;
    bool last;
    assert_int_equal(stor_snapshot_chunk(sh, meta.index, 0, &d, &l, &last),
                     RK_ESTALE);
    assert_int_equal(st.n_exports, 0);
    /* A new export works. */
    assert_int_equal(stor_snapshot_meta(sh, &meta), 0);
    assert_int_equal(stor_snapshot_chunk(sh, meta.index, 0, &d, &l, &last), 0);
    free(d);
}

static void test_install_fuzzed_chunks(void **state)
{
    struct fx *f = *state;
    tu_create_shard(f->a, 1);
    tu_create_shard(f->b, 1);
    assert_int_equal(tu_append_apply(f->a, 1, 1, 120, 1, true), 0);
    session_writes(f->a, 1, 121, 4, 55);
    long_writes(f->a, 1, 125, 8);
    struct stor_shard *sh = stor_shard_get(f->a, 1);
    struct raft_snapshot_meta meta;
    assert_int_equal(stor_snapshot_meta(sh, &meta), 0);
    void *chunk[64];
    uint32_t len[64];
    uint32_t n = 0;
    bool last = false;
    while (!last && n < 64) {
        assert_int_equal(
            stor_snapshot_chunk(sh, meta.index, n, &chunk[n], &len[n], &last),
            0);
        n++;
    }
    assert_true(last);
    assert_true(n > 3);
    struct rk_rand rng;
    rk_rand_seed(&rng, 4242);
    struct stor_batch *b;
    assert_int_equal(stor_batch_new(&b), 0);
    int ok = 0, rejected = 0;
    for (int it = 0; it < 300; it++) {
        uint32_t victim = (uint32_t)rk_rand_below(&rng, n);
        uint8_t *copy = malloc(len[victim]);
        memcpy(copy, chunk[victim], len[victim]);
        uint32_t clen = len[victim];
        int flips = 1 + (int)rk_rand_below(&rng, 3);
        for (int k = 0; k < flips; k++) {
            uint32_t at = 29 + (uint32_t)rk_rand_below(&rng, clen - 29);
            copy[at] ^= (uint8_t)(1 + rk_rand_below(&rng, 255));
        }
        if (rk_rand_below(&rng, 4) == 0)
            clen = 30 + (uint32_t)rk_rand_below(&rng, clen - 30);
        /* A valid frame around damaged records: only the parser stands
         * between them and the state machine. */
        stor__put32(copy + 4, stor__crc32c(0, copy + 8, clen - 8));
        uint32_t ops[65], iop;
        stor_batch_reset(b);
        for (uint32_t k = 0; k < n; k++) {
            struct raft_snap_chunk c = {.meta = meta,
                                        .seq = k,
                                        .last = k + 1 == n,
                                        .len = k == victim ? clen : len[k],
                                        .data = k == victim ? copy : chunk[k]};
            assert_int_equal(stor_batch_stage_chunk(b, 1, &c, &ops[k]), 0);
        }
        assert_int_equal(stor_batch_install_snapshot(b, 1, &meta, &iop), 0);
        assert_int_equal(stor_batch_commit(f->b, b), 0);
        int st = stor_batch_op_status(b, iop);
        assert_true(st == 0 || st == RK_EPROTO || st == RK_EINVAL);
        if (st == 0) {
            ok++;
            struct stor_shard_state ss;
            assert_int_equal(stor_shard_load(stor_shard_get(f->b, 1), &ss), 0);
            assert_int_equal(ss.applied, meta.index);
        } else {
            rejected++;
        }
        assert_int_equal(stor_failed(f->b), 0);
        free(copy);
    }
    fprintf(stderr, "fuzzed installs: %d accepted, %d rejected\n", ok,
            rejected);
    assert_true(rejected > 0);
    /* The store still takes a clean snapshot afterwards. */
    struct raft_snapshot_meta m2;
    uint32_t chunks;
    transfer(f->a, f->b, 1, &m2, &chunks);
    assert_same_kv(f->a, f->b, 1);
    for (uint32_t k = 0; k < n; k++)
        free(chunk[k]);
    stor_batch_free(b);
}

static void test_add_ready_and_conf(void **state)
{
    struct fx *f = *state;
    tu_create_shard(f->a, 1);
    tu_create_shard(f->b, 1);
    assert_int_equal(tu_append_apply(f->a, 1, 1, 40, 2, true), 0);
    /* Membership changes folded while applying, carried by the snapshot. */
    uint8_t add5[9] = {RAFT_CC_ADD_LEARNER, 0, 0, 0, 0, 0, 0, 0, 5};
    uint8_t pro5[9] = {RAFT_CC_PROMOTE, 0, 0, 0, 0, 0, 0, 0, 5};
    uint8_t rm2[9] = {RAFT_CC_REMOVE, 0, 0, 0, 0, 0, 0, 0, 2};
    struct raft_entry cc[3] = {
        {.term = 2,
         .index = 41,
         .type = RAFT_ENTRY_CONF,
         .len = 9,
         .data = add5},
        {.term = 2,
         .index = 42,
         .type = RAFT_ENTRY_CONF,
         .len = 9,
         .data = pro5},
        {.term = 2,
         .index = 43,
         .type = RAFT_ENTRY_CONF,
         .len = 9,
         .data = rm2},
    };
    struct raft_conf_state last_conf = {.n_voters = 3, .voters = {1, 3, 5}};
    struct raft_ready rd;
    memset(&rd, 0, sizeof rd);
    rd.entries = cc;
    rd.n_entries = 3;
    rd.hs = (struct raft_hard_state){.term = 2, .vote = 1, .commit = 43};
    rd.hs_changed = true;
    rd.conf = last_conf;
    rd.conf_changed = true;
    struct stor_batch *b;
    assert_int_equal(stor_batch_new(&b), 0);
    assert_int_equal(stor_batch_add_ready(b, 1, &rd), 0);
    assert_int_equal(stor_batch_apply(b, 1, cc, 3, NULL), 0);
    assert_int_equal(stor_batch_commit(f->a, b), 0);
    assert_int_equal(stor_batch_shard_status(b, 1), 0);
    struct stor_shard_state st;
    assert_int_equal(stor_shard_load(stor_shard_get(f->a, 1), &st), 0);
    assert_int_equal(st.hs.commit, 43);
    assert_int_equal(st.conf.n_voters, 3);
    assert_int_equal(st.applied_conf.n_voters, 3);
    assert_int_equal(st.applied_conf.n_learners, 0);
    assert_int_equal(st.applied_conf.voters[0], 1);
    assert_int_equal(st.applied_conf.voters[1], 3);
    assert_int_equal(st.applied_conf.voters[2], 5);
    struct raft_snapshot_meta meta;
    assert_int_equal(stor_snapshot_meta(stor_shard_get(f->a, 1), &meta), 0);
    assert_int_equal(meta.index, 43);
    assert_int_equal(meta.conf.n_voters, 3);
    assert_int_equal(meta.conf.voters[2], 5);

    /* The follower side through raft_ready: chunks, then the install, then
     * entries after it, all as the core hands them out. */
    struct stor_shard *sh = stor_shard_get(f->a, 1);
    bool last = false;
    for (uint32_t seq = 0; !last; seq++) {
        void *data;
        uint32_t len;
        assert_int_equal(stor_snapshot_chunk(sh, 43, seq, &data, &len, &last),
                         0);
        struct raft_snap_chunk c = {
            .meta = meta, .seq = seq, .last = last, .len = len, .data = data};
        memset(&rd, 0, sizeof rd);
        rd.snap_chunk = &c;
        if (last) {
            rd.snap_install = true;
            rd.snap_meta = meta;
        }
        stor_batch_reset(b);
        assert_int_equal(stor_batch_add_ready(b, 1, &rd), 0);
        assert_int_equal(stor_batch_commit(f->b, b), 0);
        assert_int_equal(stor_batch_shard_status(b, 1), 0);
        free(data);
    }
    assert_int_equal(stor_shard_load(stor_shard_get(f->b, 1), &st), 0);
    assert_int_equal(st.applied, 43);
    assert_int_equal(st.applied_conf.voters[2], 5);
    assert_int_equal(st.conf.voters[2], 5);
    assert_same_kv(f->a, f->b, 1);
    /* A rejected chunk shows in the shard status. */
    uint8_t junk[40] = {0};
    struct raft_snap_chunk bad = {
        .meta = meta, .seq = 0, .len = 40, .data = junk};
    memset(&rd, 0, sizeof rd);
    rd.snap_chunk = &bad;
    stor_batch_reset(b);
    assert_int_equal(stor_batch_add_ready(b, 1, &rd), 0);
    assert_int_equal(stor_batch_commit(f->b, b), 0);
    assert_int_equal(stor_batch_shard_status(b, 1), RK_EPROTO);
    /* Overriding the applied conf directly. */
    struct raft_conf_state one = {.n_voters = 1, .voters = {9}};
    stor_batch_reset(b);
    assert_int_equal(stor_batch_set_applied_conf(b, 1, &one), 0);
    assert_int_equal(stor_batch_commit(f->b, b), 0);
    assert_int_equal(stor_shard_load(stor_shard_get(f->b, 1), &st), 0);
    assert_int_equal(st.applied_conf.n_voters, 1);
    assert_int_equal(st.applied_conf.voters[0], 9);
    /* Destroy and re-create in one batch: a clean, empty shard. */
    stor_batch_reset(b);
    assert_int_equal(stor_batch_destroy_shard(b, 1), 0);
    assert_int_equal(stor_batch_create_shard(b, 1, &one), 0);
    assert_int_equal(stor_batch_commit(f->b, b), 0);
    assert_int_equal(stor_shard_load(stor_shard_get(f->b, 1), &st), 0);
    assert_int_equal(st.applied, 0);
    assert_int_equal(st.last_index, 0);
    struct stor_scan sc;
    assert_int_equal(stor_kv_scan(f->b, 1, NULL, 0, NULL, 0, 0, 0, &sc), 0);
    assert_int_equal(sc.n, 0);
    stor_exports_expire(f->a);
    stor_batch_free(b);
}

/* A replica created empty to join a group learns the bootstrap
 * configuration from the leader's first append (rd.conf) and then applies
 * the log from index 1: the membership changes fold into the bootstrap
 * configuration. (They folded into an empty one: after a restart the joined
 * node of e2e_join believed it was a group's only voter and elected itself
 * beside the real leader, in the same term.) */
static void test_joined_replica_applied_conf(void **state)
{
    struct fx *f = *state;
    struct raft_conf_state empty = {0};
    struct stor_batch *b;
    assert_int_equal(stor_batch_new(&b), 0);
    assert_int_equal(stor_batch_create_shard(b, 1, &empty), 0);
    assert_int_equal(stor_batch_commit(f->a, b), 0);
    /* Node 4 joins {1,2,3}: add-learner 4, promote 4, remove 2. */
    struct raft_entry ents[4];
    uint8_t cc[3][9];
    tu_join_entries(ents, cc, 2);
    struct raft_ready rd;
    memset(&rd, 0, sizeof rd);
    rd.entries = ents;
    rd.n_entries = 4;
    rd.hs = (struct raft_hard_state){.term = 1, .commit = 4};
    rd.hs_changed = true;
    rd.conf = (struct raft_conf_state){.n_voters = 3, .voters = {1, 2, 3}};
    rd.conf_changed = true;
    stor_batch_reset(b);
    assert_int_equal(stor_batch_add_ready(b, 1, &rd), 0);
    assert_int_equal(stor_batch_commit(f->a, b), 0);
    /* Applied in a later batch, one entry at a time. */
    for (int i = 0; i < 4; i++) {
        stor_batch_reset(b);
        assert_int_equal(stor_batch_apply(b, 1, &ents[i], 1, NULL), 0);
        assert_int_equal(stor_batch_commit(f->a, b), 0);
    }
    struct stor_shard_state st;
    assert_int_equal(stor_shard_load(stor_shard_get(f->a, 1), &st), 0);
    assert_int_equal(st.applied, 4);
    assert_int_equal(st.applied_conf.n_voters, 3);
    assert_int_equal(st.applied_conf.n_learners, 0);
    assert_int_equal(st.applied_conf.voters[0], 1);
    assert_int_equal(st.applied_conf.voters[1], 3);
    assert_int_equal(st.applied_conf.voters[2], 4);
    struct raft_snapshot_meta meta;
    assert_int_equal(stor_snapshot_meta(stor_shard_get(f->a, 1), &meta), 0);
    assert_int_equal(meta.index, 4);
    assert_int_equal(meta.conf.n_voters, 3);
    assert_int_equal(meta.conf.voters[2], 4);
    /* A founder (created with the bootstrap configuration) is unchanged. */
    struct raft_conf_state boot = {.n_voters = 3, .voters = {1, 2, 3}};
    stor_batch_reset(b);
    assert_int_equal(stor_batch_create_shard(b, 1, &boot), 0);
    assert_int_equal(stor_batch_commit(f->b, b), 0);
    stor_batch_reset(b);
    assert_int_equal(stor_batch_append(b, 1, ents, 4), 0);
    assert_int_equal(stor_batch_apply(b, 1, ents, 4, NULL), 0);
    assert_int_equal(stor_batch_commit(f->b, b), 0);
    assert_int_equal(stor_shard_load(stor_shard_get(f->b, 1), &st), 0);
    assert_int_equal(st.applied_conf.n_voters, 3);
    assert_int_equal(st.applied_conf.voters[2], 4);
    stor_exports_expire(f->a);
    stor_batch_free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_joined_replica_applied_conf,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_roundtrip_many_shards, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_export_is_pinned_while_writing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_chunks_and_install, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_export_dropped_by_map_growth,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_install_fuzzed_chunks, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_add_ready_and_conf, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
