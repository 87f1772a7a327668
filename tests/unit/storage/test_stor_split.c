/* Storage tests: the SPLIT command (shard split in the state machine). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "stor.h"
#include "stor_test_util.h"

/* The test ring: a key's hash is its first byte in the top 8 bits (its
 * last byte for keys over 100 bytes), so arcs are letter ranges. */
static uint64_t letter_hash(const void *key, size_t len)
{
    const uint8_t *k = key;
    return len == 0 ? 0 : (uint64_t)k[len > 100 ? len - 1 : 0] << 56;
}

/* Long keys (over the 480 bytes LMDB keys hold inline) sharing their first
 * 600 bytes, told apart by the last: stored in slots by a hash of the whole
 * key (in the weak-hash build, several to a slot). */
#define N_LONG 8
static const char LONG_LAST[N_LONG + 1] = "acegmptz";

static char *long_key(int i)
{
    char *k = malloc(602);
    memset(k, 'x', 600);
    k[600] = LONG_LAST[i];
    k[601] = '\0';
    return k;
}

#define ARC(a, b)                                                              \
    ((uint64_t)(a) << 56), (((uint64_t)(b) << 56) | ((1ull << 56) - 1))

struct fx {
    char *dir;
    struct stor *s;
    raft_index next; /* next index of shard 1 */
};

static struct stor *open_store(const char *dir)
{
    struct stor_opts o = {.path = dir,
                          .cluster_id = 1,
                          .node_id = 1,
                          .create = true,
                          .conf_decode = tu_conf_decode,
                          .key_hash = letter_hash};
    struct stor *s = NULL;
    char err[RK_ERRMSG_SIZE];
    assert_int_equal(stor_open(&o, &s, err), 0);
    return s;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->dir = tu_mkdtemp("split");
    f->s = open_store(f->dir);
    tu_create_shard(f->s, 1);
    f->next = 1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    int rc = tu_close_rm(f->s, f->dir);
    free(f);
    assert_int_equal(rc, 0);
    return 0;
}

/* Appends and applies one command to shard 1 at term 2. */
static struct stor_result run(struct fx *f, const struct stor_cmd *c)
{
    struct stor_result res;
    assert_int_equal(tu_run(f->s, 1, 2, f->next++, c, &res), 0);
    return res;
}

static struct stor_result put(struct fx *f, uint64_t client, uint64_t seq,
                              const char *k)
{
    struct stor_cmd c = {.op = STOR_CMD_PUT,
                         .client_id = client,
                         .seq = seq,
                         .key = k,
                         .klen = (uint32_t)strlen(k),
                         .value = k,
                         .vlen = (uint32_t)strlen(k)};
    return run(f, &c);
}

static struct stor_result split(struct fx *f, uint32_t to, const uint64_t *arcs,
                                uint32_t n)
{
    struct stor_cmd c = {
        .op = STOR_CMD_SPLIT, .split_to = to, .n_arcs = n, .arcs = arcs};
    return run(f, &c);
}

static bool has_key(struct stor *s, uint64_t shard, const char *k,
                    uint64_t *rev)
{
    struct stor_value v;
    int rc = stor_kv_get(s, shard, k, strlen(k), &v);
    if (rc == RK_ENOTFOUND)
        return false;
    assert_int_equal(rc, 0);
    assert_memory_equal(v.data, k, strlen(k));
    if (rev != NULL)
        *rev = v.revision;
    free(v.data);
    return true;
}

static const char *KEYS[] = {"apple", "kiwi", "lemon", "mango",
                             "melon", "pear", "plum",  "zucchini"};
#define N_KEYS (sizeof(KEYS) / sizeof(KEYS[0]))

/* Keys from 'm' on move: mango, melon, pear, plum, zucchini. */
static bool moves(const char *k)
{
    return k[0] >= 'm';
}

static void test_cmd_codec(void **state)
{
    (void)state;
    uint64_t arcs[] = {ARC('a', 'c'), ARC('x', 'z')};
    struct stor_cmd c = {
        .op = STOR_CMD_SPLIT, .split_to = 9, .n_arcs = 2, .arcs = arcs};
    uint8_t buf[128];
    size_t len;
    assert_int_equal(stor_cmd_size(&c), 18 + 8 + 32);
    assert_int_equal(stor_cmd_encode(&c, buf, sizeof buf, &len), 0);
    struct stor_cmd d;
    assert_int_equal(stor_cmd_decode(buf, len, &d), 0);
    assert_int_equal(d.op, STOR_CMD_SPLIT);
    assert_int_equal(d.split_to, 9);
    assert_int_equal(d.n_arcs, 2);
    uint64_t first, last;
    stor_cmd_arc(&d, 1, &first, &last);
    assert_true(first == arcs[2] && last == arcs[3]);
    /* Truncated, trailing, or an arc backwards: malformed. */
    assert_int_equal(stor_cmd_decode(buf, len - 1, &d), RK_EPROTO);
    buf[len] = 0;
    assert_int_equal(stor_cmd_decode(buf, len + 1, &d), RK_EPROTO);
    uint8_t bad[128];
    memcpy(bad, buf, len);
    bad[18 + 8] = 0xff; /* first of arc 0 above its last */
    assert_int_equal(stor_cmd_decode(bad, len, &d), RK_EPROTO);
    /* No arcs, no recipient, or a session: refused. */
    c.n_arcs = 0;
    assert_int_equal(stor_cmd_encode(&c, buf, sizeof buf, &len), RK_EINVAL);
    c.n_arcs = 2;
    c.split_to = 0;
    assert_int_equal(stor_cmd_encode(&c, buf, sizeof buf, &len), RK_EINVAL);
    c.split_to = 9;
    c.client_id = 5;
    c.seq = 1;
    assert_int_equal(stor_cmd_encode(&c, buf, sizeof buf, &len), RK_EINVAL);
}

static void test_split_moves_keys_and_sessions(void **state)
{
    struct fx *f = *state;
    uint64_t rev[N_KEYS];
    for (uint32_t i = 0; i < N_KEYS; i++)
        rev[i] = put(f, 7, i + 1, KEYS[i]).revision;
    char *lk[N_LONG];
    for (int i = 0; i < N_LONG; i++) {
        lk[i] = long_key(i);
        assert_int_equal(put(f, 0, 0, lk[i]).status, 0);
    }
    uint64_t arcs[] = {ARC('m', 'z')};
    raft_index at = f->next;
    struct stor_result r = split(f, 2, arcs, 1);
    assert_int_equal(r.status, 0);

    /* The new shard starts at the split entry, with the donor's voters. */
    struct stor_shard *sh = stor_shard_get(f->s, 2);
    assert_non_null(sh);
    struct stor_shard_state st;
    assert_int_equal(stor_shard_load(sh, &st), 0);
    assert_int_equal(st.applied, at);
    assert_int_equal(st.applied_term, 2);
    assert_int_equal(st.first_index, at + 1);
    assert_int_equal(st.last_index, at);
    assert_int_equal(st.hs.term, 2);
    assert_int_equal(st.hs.vote, 0);
    assert_int_equal(st.hs.commit, at);
    assert_int_equal(st.conf.n_voters, 3);
    assert_int_equal(st.applied_conf.n_voters, 3);
    raft_term t = 0;
    assert_int_equal(stor_log_term(sh, at, &t), 0);
    assert_int_equal(t, 2);

    /* Keys moved with their revisions; the others stayed. */
    for (uint32_t i = 0; i < N_KEYS; i++) {
        uint64_t rv = 0;
        assert_int_equal(has_key(f->s, 1, KEYS[i], NULL), !moves(KEYS[i]));
        assert_int_equal(has_key(f->s, 2, KEYS[i], &rv), moves(KEYS[i]));
        if (moves(KEYS[i]))
            assert_int_equal(rv, rev[i]);
    }
    for (int i = 0; i < N_LONG; i++) {
        bool mv = LONG_LAST[i] >= 'm';
        assert_int_equal(has_key(f->s, 1, lk[i], NULL), !mv);
        assert_int_equal(has_key(f->s, 2, lk[i], NULL), mv);
        free(lk[i]);
    }
    /* Sessions were copied: a retried write is still a duplicate there. */
    uint64_t seq = 0;
    assert_int_equal(stor_session_last_seq(f->s, 2, 7, &seq), 0);
    assert_int_equal(seq, N_KEYS);

    /* The donor's record, and its refusal of the moved arcs. */
    struct stor_split_arc *out;
    uint32_t n;
    assert_int_equal(stor_split_out(f->s, 1, &out, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].to, 2);
    assert_true(out[0].first == arcs[0] && out[0].last == arcs[1]);
    free(out);
    assert_int_equal(stor_split_out(f->s, 2, &out, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(put(f, 8, 1, "pineapple").status, RK_EWRONGSHARD);
    assert_false(has_key(f->s, 1, "pineapple", NULL));
    assert_int_equal(put(f, 8, 2, "banana").status, 0);
    /* A refused write is not in the session: the same seq applies on the
     * new shard's side later. */
    assert_int_equal(stor_session_last_seq(f->s, 1, 8, &seq), 0);
    assert_int_equal(seq, 2);

    /* Applying the split again (a second leader's proposal) is a no-op. */
    assert_int_equal(split(f, 2, arcs, 1).status, 0);
    assert_int_equal(stor_split_out(f->s, 1, &out, &n), 0);
    assert_int_equal(n, 1);
    free(out);
    assert_int_equal(stor_shard_load(sh, &st), 0);
    assert_int_equal(st.applied, at);

    /* A second split of the donor adds to the record. */
    uint64_t arcs2[] = {ARC('a', 'b')};
    assert_int_equal(split(f, 3, arcs2, 1).status, 0);
    assert_true(has_key(f->s, 3, "apple", NULL));
    assert_false(has_key(f->s, 1, "apple", NULL));
    assert_int_equal(stor_split_out(f->s, 1, &out, &n), 0);
    assert_int_equal(n, 2);
    free(out);

    /* It all survives a reopen. */
    assert_int_equal(tu_check(f->s), 0);
    stor_close(f->s);
    f->s = open_store(f->dir);
    assert_non_null(stor_shard_get(f->s, 2));
    assert_true(has_key(f->s, 2, "plum", NULL));
    assert_int_equal(put(f, 8, 3, "pumpkin").status, RK_EWRONGSHARD);
}

static void test_split_recipient_exists(void **state)
{
    struct fx *f = *state;
    for (uint32_t i = 0; i < N_KEYS; i++)
        put(f, 0, 0, KEYS[i]);
    /* The new shard was created empty here (its leader fills it). */
    struct stor_batch *b;
    struct raft_conf_state empty;
    memset(&empty, 0, sizeof(empty));
    assert_int_equal(stor_batch_new(&b), 0);
    assert_int_equal(stor_batch_create_shard(b, 2, &empty), 0);
    assert_int_equal(stor_batch_commit(f->s, b), 0);
    stor_batch_free(b);
    uint64_t arcs[] = {ARC('m', 'z')};
    assert_int_equal(split(f, 2, arcs, 1).status, 0);
    for (uint32_t i = 0; i < N_KEYS; i++) {
        assert_int_equal(has_key(f->s, 1, KEYS[i], NULL), !moves(KEYS[i]));
        assert_false(has_key(f->s, 2, KEYS[i], NULL));
    }
    struct stor_shard_state st;
    assert_int_equal(stor_shard_load(stor_shard_get(f->s, 2), &st), 0);
    assert_int_equal(st.applied, 0);
    assert_int_equal(st.conf.n_voters, 0);
}

/* A snapshot of the donor taken after the split has neither the moved keys
 * nor lets them back in: it carries the record. */
static void test_snapshot_after_split(void **state)
{
    struct fx *f = *state;
    for (uint32_t i = 0; i < N_KEYS; i++)
        put(f, 0, 0, KEYS[i]);
    uint64_t arcs[] = {ARC('m', 'z')};
    assert_int_equal(split(f, 2, arcs, 1).status, 0);

    char *dir2 = tu_mkdtemp("split2");
    struct stor *s2 = open_store(dir2);
    struct stor_batch *b;
    struct raft_conf_state empty;
    memset(&empty, 0, sizeof(empty));
    assert_int_equal(stor_batch_new(&b), 0);
    assert_int_equal(stor_batch_create_shard(b, 1, &empty), 0);
    assert_int_equal(stor_batch_commit(s2, b), 0);

    struct stor_shard *sh = stor_shard_get(f->s, 1);
    struct raft_snapshot_meta meta;
    assert_int_equal(stor_log_ops.snapshot_meta(sh, &meta), 0);
    bool last = false;
    for (uint32_t seq = 0; !last; seq++) {
        void *data;
        uint32_t len;
        assert_int_equal(stor_log_ops.snapshot_chunk(sh, meta.index, seq, &data,
                                                     &len, &last),
                         0);
        struct raft_snap_chunk c = {
            .meta = meta, .seq = seq, .last = last, .len = len, .data = data};
        stor_batch_reset(b);
        assert_int_equal(stor_batch_stage_chunk(b, 1, &c, NULL), 0);
        assert_int_equal(stor_batch_commit(s2, b), 0);
        free(data);
    }
    uint32_t op;
    stor_batch_reset(b);
    assert_int_equal(stor_batch_install_snapshot(b, 1, &meta, &op), 0);
    assert_int_equal(stor_batch_commit(s2, b), 0);
    assert_int_equal(stor_batch_op_status(b, op), 0);

    for (uint32_t i = 0; i < N_KEYS; i++)
        assert_int_equal(has_key(s2, 1, KEYS[i], NULL), !moves(KEYS[i]));
    struct stor_split_arc *out;
    uint32_t n;
    assert_int_equal(stor_split_out(s2, 1, &out, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(out[0].to, 2);
    free(out);
    /* No recipient here: the replica creates it empty (server side). */
    assert_null(stor_shard_get(s2, 2));

    /* The next entry, a write of a moved key, is refused there too. */
    uint8_t cmd[128];
    struct raft_entry e = {.term = 2, .index = meta.index + 1, .data = cmd};
    e.len = (uint32_t)tu_put_cmd(cmd, sizeof cmd, 0, 0, "peach", "x", 1);
    uint32_t r;
    stor_batch_reset(b);
    assert_int_equal(stor_batch_append(b, 1, &e, 1), 0);
    assert_int_equal(stor_batch_apply(b, 1, &e, 1, &r), 0);
    assert_int_equal(stor_batch_commit(s2, b), 0);
    assert_int_equal(stor_batch_result(b, r)->status, RK_EWRONGSHARD);
    stor_batch_free(b);
    assert_int_equal(tu_check(s2), 0);
    stor_close(s2);
    tu_rmrf(dir2);
    free(dir2);
}

/* Without a key hash function the store cannot split: refused, nothing
 * changes. */
static void test_split_without_hash(void **state)
{
    struct fx *f = *state;
    put(f, 0, 0, "plum");
    stor_close(f->s);
    struct stor_opts o = {.path = f->dir, .create = false};
    char err[RK_ERRMSG_SIZE];
    assert_int_equal(stor_open(&o, &f->s, err), 0);
    uint64_t arcs[] = {ARC('m', 'z')};
    assert_int_equal(split(f, 2, arcs, 1).status, RK_EINVAL);
    assert_true(has_key(f->s, 1, "plum", NULL));
    assert_null(stor_shard_get(f->s, 2));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cmd_codec),
        cmocka_unit_test_setup_teardown(test_split_moves_keys_and_sessions,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_recipient_exists, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_after_split, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_split_without_hash, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
