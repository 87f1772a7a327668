/* Storage tests: the writer's state of the open transaction (the log
 * entries it holds in memory until the checkpoint, each shard's split
 * record). */
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

/*
 * The storage thread keeps, for the one LMDB write transaction that stays
 * open between checkpoints, each shard's log entries appended in it (the
 * writer tail: LMDB gets them as chunks at the checkpoint, stor_log.c) and
 * a copy of each shard's split record (read per applied entry). Every
 * batch below is submitted WITHOUT a checkpoint, so that one open
 * transaction sees them all: changes of a log (truncation, compaction,
 * destroy, snapshot install), a write of a split record by a SPLIT or by a
 * command, and a refused batch (the open transaction is rebuilt from the
 * WAL, the tails with it) must each leave that state right.
 *
 * A wrong split record shows in the results (a key applied that moved, or
 * refused that did not); a wrong writer tail in the logs read back, before
 * and after the checkpoint that writes it.
 */

/* The test ring: a key's hash is its first byte in the top 8 bits. */
static uint64_t letter_hash(const void *key, size_t len)
{
    const uint8_t *k = key;
    return len == 0 ? 0 : (uint64_t)k[0] << 56;
}

struct fx {
    char *dir;
    struct stor *s;
};

static struct stor *open_store(const char *dir)
{
    struct stor_opts o = {.path = dir,
                          .cluster_id = 1,
                          .node_id = 1,
                          .create = true,
                          /* No checkpoint by the clock (see the top). */
                          .checkpoint_ms = 600000,
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
    f->dir = tu_mkdtemp("wcache");
    f->s = open_store(f->dir);
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

/* ------------------------------------------------------------ commands */

/* Commands of one batch, packed as entries. */
struct cmds {
    struct raft_entry e[16];
    uint8_t buf[16][256];
    uint32_t n;
};

static void add_cmd(struct cmds *c, raft_index index, raft_term term,
                    const struct stor_cmd *cmd)
{
    size_t len = 0;
    assert_true(c->n < 16);
    assert_int_equal(stor_cmd_encode(cmd, c->buf[c->n], 256, &len), 0);
    c->e[c->n] = (struct raft_entry){.term = term,
                                     .index = index,
                                     .type = RAFT_ENTRY_NORMAL,
                                     .len = (uint32_t)len,
                                     .data = c->buf[c->n]};
    c->n++;
}

static void add_put(struct cmds *c, raft_index index, const void *k,
                    uint32_t klen, const void *v, uint32_t vlen)
{
    struct stor_cmd cmd = {
        .op = STOR_CMD_PUT, .key = k, .klen = klen, .value = v, .vlen = vlen};
    add_cmd(c, index, 1, &cmd);
}

static void add_put_str(struct cmds *c, raft_index index, const char *k)
{
    add_put(c, index, k, (uint32_t)strlen(k), k, (uint32_t)strlen(k));
}

/* A split record giving the arc of first letters [a, z] to shard `to`
 * (stor_split.c's format: version 1, count, (to, first, last)). */
static uint32_t split_rec(uint8_t *p, uint32_t to, uint8_t a, uint8_t z)
{
    uint64_t first = (uint64_t)a << 56;
    uint64_t last = ((uint64_t)z << 56) | ((1ull << 56) - 1);
    p[0] = 1;
    p[1] = p[2] = p[3] = 0;
    p[4] = 1;
    for (int i = 0; i < 4; i++)
        p[5 + i] = (uint8_t)(to >> (24 - 8 * i));
    for (int i = 0; i < 8; i++) {
        p[9 + i] = (uint8_t)(first >> (56 - 8 * i));
        p[17 + i] = (uint8_t)(last >> (56 - 8 * i));
    }
    return 25;
}

/* Appends and applies c's entries to shard 1 in one batch, submitted (no
 * checkpoint; with stor_batch_commit, and one after it, when `commit`),
 * with an op on an unknown shard after them when `refuse`; returns the
 * batch status and fills st[] with the results. */
static int run_cmds_ex(struct stor *s, const struct cmds *c, bool refuse,
                       bool commit, int *st)
{
    struct stor_batch *b;
    uint32_t r0;
    assert_int_equal(stor_batch_new(&b), 0);
    assert_int_equal(stor_batch_append(b, 1, c->e, c->n), 0);
    assert_int_equal(stor_batch_apply(b, 1, c->e, c->n, &r0), 0);
    if (refuse) {
        struct raft_hard_state hs = {.term = 1};
        assert_int_equal(stor_batch_set_hard_state(b, 77, &hs), 0);
    }
    int rc = commit ? stor_batch_commit(s, b) : tu_submit_wait(s, b);
    for (uint32_t i = 0; rc == 0 && i < c->n; i++)
        st[i] = stor_batch_result(b, r0 + i)->status;
    stor_batch_free(b);
    return rc;
}

static int run_cmds(struct stor *s, const struct cmds *c, bool refuse,
                    int *st)
{
    return run_cmds_ex(s, c, refuse, false, st);
}

static bool has_key(struct stor *s, const void *k, size_t klen)
{
    struct stor_value v;
    int rc = stor_kv_get(s, 1, k, klen, &v);
    if (rc == RK_ENOTFOUND)
        return false;
    assert_int_equal(rc, 0);
    free(v.data);
    return true;
}

/* A SPLIT in the middle of a batch: the entries after it see its record
 * (the shard's copy, read by the entries before it, is stale). */
static void test_split_in_batch(void **state)
{
    struct fx *f = *state;
    tu_create_shard(f->s, 1);
    uint64_t arcs[2] = {(uint64_t)'m' << 56,
                        ((uint64_t)'z' << 56) | ((1ull << 56) - 1)};
    struct stor_cmd sp = {
        .op = STOR_CMD_SPLIT, .split_to = 2, .n_arcs = 1, .arcs = arcs};
    struct cmds c = {.n = 0};
    int st[16];
    add_put_str(&c, 1, "apple");
    add_put_str(&c, 2, "mango");
    add_cmd(&c, 3, 1, &sp);
    add_put_str(&c, 4, "melon");
    add_put_str(&c, 5, "kiwi");
    assert_int_equal(run_cmds(f->s, &c, false, st), 0);
    assert_int_equal(st[0], 0);
    assert_int_equal(st[1], 0);
    assert_int_equal(st[2], 0);
    assert_int_equal(st[3], RK_EWRONGSHARD);
    assert_int_equal(st[4], 0);
    assert_true(has_key(f->s, "apple", 5));
    assert_true(has_key(f->s, "kiwi", 4));
    assert_false(has_key(f->s, "mango", 5)); /* moved */
    assert_false(has_key(f->s, "melon", 5));
}

/* A command that writes, then deletes, the split record itself (a log from
 * elsewhere may hold one): the entries after each see it. */
static void test_split_record_by_command(void **state)
{
    struct fx *f = *state;
    tu_create_shard(f->s, 1);
    uint8_t rec[32];
    uint32_t rlen = split_rec(rec, 2, 'm', 'z');
    struct stor_cmd del = {.op = STOR_CMD_DEL,
                           .key = STOR_SPLIT_KEY,
                           .klen = STOR_SPLIT_KEY_LEN};
    struct cmds c = {.n = 0};
    int st[16];
    add_put_str(&c, 1, "apple");
    add_put(&c, 2, STOR_SPLIT_KEY, STOR_SPLIT_KEY_LEN, rec, rlen);
    add_put_str(&c, 3, "melon");
    add_cmd(&c, 4, 1, &del);
    add_put_str(&c, 5, "mango");
    assert_int_equal(run_cmds(f->s, &c, false, st), 0);
    assert_int_equal(st[0], 0);
    assert_int_equal(st[1], 0);
    assert_int_equal(st[2], RK_EWRONGSHARD);
    assert_int_equal(st[3], 0);
    assert_int_equal(st[4], 0);
    assert_false(has_key(f->s, "melon", 5));
    assert_true(has_key(f->s, "mango", 5));

    /* Again, one batch per command. */
    struct cmds c2 = {.n = 0};
    add_put(&c2, 6, STOR_SPLIT_KEY, STOR_SPLIT_KEY_LEN, rec, rlen);
    assert_int_equal(run_cmds(f->s, &c2, false, st), 0);
    struct cmds c3 = {.n = 0};
    add_put_str(&c3, 7, "melon");
    assert_int_equal(run_cmds(f->s, &c3, false, st), 0);
    assert_int_equal(st[0], RK_EWRONGSHARD);
    struct cmds c4 = {.n = 0};
    add_cmd(&c4, 8, 1, &del);
    assert_int_equal(run_cmds(f->s, &c4, false, st), 0);
    struct cmds c5 = {.n = 0};
    add_put_str(&c5, 9, "melon");
    assert_int_equal(run_cmds(f->s, &c5, false, st), 0);
    assert_int_equal(st[0], 0);
    assert_true(has_key(f->s, "melon", 5));
}

/* A refused batch that wrote a split record (and read it back): the open
 * transaction is rebuilt without it, and so is what the writer knows,
 * whether batches before it are rerun from the WAL or none are (a
 * checkpoint just before). */
static void split_record_refused(struct fx *f, bool ckpt)
{
    tu_create_shard(f->s, 1);
    uint8_t rec[32];
    uint32_t rlen = split_rec(rec, 2, 'a', 'z');
    int st[16];
    struct cmds c1 = {.n = 0};
    add_put_str(&c1, 1, "apple");
    assert_int_equal(run_cmds_ex(f->s, &c1, false, ckpt, st), 0);
    assert_int_equal(st[0], 0);

    struct cmds c2 = {.n = 0};
    add_put(&c2, 2, STOR_SPLIT_KEY, STOR_SPLIT_KEY_LEN, rec, rlen);
    add_put_str(&c2, 3, "kiwi");
    assert_int_equal(run_cmds(f->s, &c2, true, st), RK_EUNKNOWNSHARD);

    struct cmds c3 = {.n = 0};
    add_put_str(&c3, 2, "melon");
    add_put_str(&c3, 3, "kiwi");
    assert_int_equal(run_cmds(f->s, &c3, false, st), 0);
    assert_int_equal(st[0], 0);
    assert_int_equal(st[1], 0);
    assert_false(has_key(f->s, STOR_SPLIT_KEY, STOR_SPLIT_KEY_LEN));
    assert_true(has_key(f->s, "melon", 5));
    assert_true(has_key(f->s, "kiwi", 4));
}

static void test_split_record_refused(void **state)
{
    split_record_refused(*state, false);
}

static void test_split_record_refused_first(void **state)
{
    split_record_refused(*state, true);
}

/* ------------------------------------------------------------------ log */

/* A batch appending entries [first, first + n) of `term` to `shard`,
 * after an op destroying shard `destroy` when not 0, before an op on an
 * unknown shard when `refuse`; submitted. Returns its status. */
static int append_ex(struct stor *s, uint64_t destroy, uint64_t shard,
                     raft_index first, uint32_t n, raft_term term,
                     bool refuse)
{
    struct raft_entry e[8];
    uint8_t data[8][8];
    struct stor_batch *b;
    assert_true(n <= 8);
    for (uint32_t i = 0; i < n; i++) {
        memset(data[i], (int)(first + i), 8);
        e[i] = (struct raft_entry){.term = term,
                                   .index = first + i,
                                   .type = RAFT_ENTRY_NORMAL,
                                   .len = 8,
                                   .data = data[i]};
    }
    assert_int_equal(stor_batch_new(&b), 0);
    if (destroy)
        assert_int_equal(stor_batch_destroy_shard(b, destroy), 0);
    assert_int_equal(stor_batch_append(b, shard, e, n), 0);
    if (refuse) {
        struct raft_hard_state hs = {.term = 1};
        assert_int_equal(stor_batch_set_hard_state(b, 77, &hs), 0);
    }
    int rc = tu_submit_wait(s, b);
    stor_batch_free(b);
    return rc;
}

static int append(struct stor *s, uint64_t shard, raft_index first,
                  uint32_t n, raft_term term)
{
    return append_ex(s, 0, shard, first, n, term, false);
}

/* Shard `id` holds exactly entries [first, last] with terms[] (from
 * `first`) and the data append_ex wrote. */
static void assert_log(struct stor *s, uint64_t id, raft_index first,
                       raft_index last, const raft_term *terms)
{
    struct stor_shard *sh = stor_shard_get(s, id);
    assert_non_null(sh);
    assert_int_equal(stor_log_first_index(sh), first);
    assert_int_equal(stor_log_last_index(sh), last);
    if (last < first)
        return;
    /* (A call may stop where the open transaction's tail begins.) */
    for (raft_index i = first; i <= last;) {
        struct raft_entry *e;
        uint32_t n;
        assert_int_equal(stor_log_entries(sh, i, last + 1, 0, &e, &n), 0);
        assert_true(n > 0 && n <= last + 1 - i);
        for (uint32_t j = 0; j < n; j++, i++) {
            uint8_t want[8];
            memset(want, (int)i, 8);
            assert_int_equal(e[j].index, i);
            assert_int_equal(e[j].term, terms[i - first]);
            assert_int_equal(e[j].len, 8);
            assert_memory_equal(e[j].data, want, 8);
        }
        free(e);
    }
}

/* A log emptied by compaction, cut by a conflicting append, the open
 * transaction rebuilt after a refused batch, a destroy in the batch of an
 * append: the appends after each and the logs stay right, before and after
 * a reopen (which replays the WAL in nested transactions). */
static void test_log_last_key(void **state)
{
    struct fx *f = *state;
    for (uint64_t id = 1; id <= 3; id++)
        tu_create_shard(f->s, id);
    /* Shard 3 (the highest): entries 1-4 applied and checkpointed, so that
     * compaction may delete them all. */
    assert_int_equal(tu_append_apply(f->s, 3, 1, 4, 1, true), 0);

    assert_int_equal(append(f->s, 1, 1, 2, 1), 0);
    /* Compaction empties shard 3's log: shard 1 has the last key now. */
    struct stor_batch *b;
    assert_int_equal(stor_batch_new(&b), 0);
    assert_int_equal(stor_batch_compact(b, 3, 4), 0);
    assert_int_equal(tu_submit_wait(f->s, b), 0);
    stor_batch_free(b);
    assert_log(f->s, 3, 5, 4, NULL);
    /* Shard 2 becomes the highest, then its suffix is cut. */
    assert_int_equal(append(f->s, 2, 1, 2, 1), 0);
    assert_int_equal(append(f->s, 2, 3, 2, 1), 0);
    assert_int_equal(append(f->s, 2, 2, 1, 2), 0);
    assert_int_equal(append(f->s, 1, 3, 1, 1), 0);
    static const raft_term t2[] = {1, 2};
    assert_log(f->s, 2, 1, 2, t2);
    /* Refused after appending past shard 2's end: rebuilt without it. */
    assert_int_equal(append_ex(f->s, 0, 2, 3, 3, 2, true), RK_EUNKNOWNSHARD);
    assert_log(f->s, 2, 1, 2, t2);
    assert_int_equal(append(f->s, 1, 4, 1, 1), 0);
    assert_int_equal(append(f->s, 2, 3, 1, 2), 0);
    static const raft_term t2b[] = {1, 2, 2};
    assert_log(f->s, 2, 1, 3, t2b);
    /* Shard 2 destroyed, shard 1 appended to in the same batch. */
    assert_int_equal(append_ex(f->s, 2, 1, 5, 1, 1, false), 0);
    struct stor_shard *sh2 = stor_shard_get(f->s, 2);
    assert_true(sh2 == NULL || stor_log_last_index(sh2) == 0);
    /* Shard 3's log goes on after its compacted entries. */
    assert_int_equal(append(f->s, 3, 5, 2, 1), 0);
    assert_int_equal(append(f->s, 1, 6, 2, 1), 0);
    static const raft_term t1[] = {1, 1, 1, 1, 1, 1, 1};
    static const raft_term t3[] = {1, 1};
    for (int round = 0; round < 2; round++) {
        assert_log(f->s, 1, 1, 7, t1);
        assert_log(f->s, 3, 5, 6, t3);
        if (round == 0) {
            stor_close(f->s);
            f->s = open_store(f->dir);
        }
    }
    /* And appends after the reopen. */
    assert_int_equal(append(f->s, 1, 8, 1, 1), 0);
    assert_int_equal(append(f->s, 3, 7, 1, 1), 0);
    static const raft_term t3b[] = {1, 1, 1};
    assert_log(f->s, 3, 5, 7, t3b);
}

/* Copies shard `id` of `from` into `to` as a snapshot whose install batch
 * also appends n entries after it (as a Raft ready may). */
static void install_and_append(struct stor *from, struct stor *to,
                               uint64_t id, uint32_t n)
{
    struct stor_shard *sh = stor_shard_get(from, id);
    struct raft_snapshot_meta meta;
    assert_non_null(sh);
    assert_int_equal(stor_log_ops.snapshot_meta(sh, &meta), 0);
    struct stor_batch *b;
    assert_int_equal(stor_batch_new(&b), 0);
    bool last = false;
    for (uint32_t seq = 0; !last; seq++) {
        void *data;
        uint32_t len, op;
        assert_int_equal(stor_log_ops.snapshot_chunk(sh, meta.index, seq,
                                                     &data, &len, &last),
                         0);
        struct raft_snap_chunk c = {
            .meta = meta, .seq = seq, .last = last, .len = len, .data = data};
        stor_batch_reset(b);
        assert_int_equal(stor_batch_stage_chunk(b, id, &c, &op), 0);
        assert_int_equal(tu_submit_wait(to, b), 0);
        assert_int_equal(stor_batch_op_status(b, op), 0);
        free(data);
    }
    struct raft_entry e[8];
    uint8_t data[8][8];
    assert_true(n <= 8);
    for (uint32_t i = 0; i < n; i++) {
        raft_index idx = meta.index + 1 + i;
        memset(data[i], (int)idx, 8);
        e[i] = (struct raft_entry){.term = meta.term,
                                   .index = idx,
                                   .type = RAFT_ENTRY_NORMAL,
                                   .len = 8,
                                   .data = data[i]};
    }
    uint32_t op;
    stor_batch_reset(b);
    assert_int_equal(stor_batch_install_snapshot(b, id, &meta, &op), 0);
    assert_int_equal(stor_batch_append(b, id, e, n), 0);
    assert_int_equal(tu_submit_wait(to, b), 0);
    assert_int_equal(stor_batch_op_status(b, op), 0);
    stor_batch_free(b);
}

/* A snapshot installed into the highest shard, which had entries in the
 * open transaction, and appended to in the same batch. */
static void test_log_last_key_install(void **state)
{
    struct fx *f = *state;
    char *dir2 = tu_mkdtemp("wcache-src");
    struct stor *src = open_store(dir2);
    tu_create_shard(src, 5);
    assert_int_equal(tu_append_apply(src, 5, 1, 10, 1, true), 0);

    tu_create_shard(f->s, 4);
    tu_create_shard(f->s, 5);
    assert_int_equal(append(f->s, 4, 1, 2, 1), 0);
    assert_int_equal(append(f->s, 5, 1, 3, 1), 0);
    assert_int_equal(append(f->s, 4, 3, 1, 1), 0);
    install_and_append(src, f->s, 5, 2);
    assert_int_equal(append(f->s, 4, 4, 1, 1), 0);
    assert_int_equal(append(f->s, 5, 13, 1, 1), 0);
    static const raft_term t4[] = {1, 1, 1, 1};
    static const raft_term t5[] = {1, 1, 1};
    assert_log(f->s, 4, 1, 4, t4);
    assert_log(f->s, 5, 11, 13, t5);
    assert_int_equal(tu_close_rm(src, dir2), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_split_in_batch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_record_by_command, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_split_record_refused, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_split_record_refused_first, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_log_last_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_log_last_key_install, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
