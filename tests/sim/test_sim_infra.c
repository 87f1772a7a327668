/* Unit tests of the simulator's heap, message copies, checks, history. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sim.h"

static void test_heap_orders_by_time_then_seq(void **state)
{
    (void)state;
    struct sim_heap h;
    struct rk_rand r;
    sim_heap_init(&h);
    rk_rand_seed(&r, 42);
    for (uint64_t i = 0; i < 2000; i++) {
        struct sim_event e = {.time = rk_rand_below(&r, 50), .seq = i};
        assert_int_equal(sim_heap_push(&h, &e), 0);
    }
    struct sim_event prev = {0}, e;
    size_t n = 0;
    while (sim_heap_pop(&h, &e)) {
        if (n > 0) {
            assert_true(prev.time <= e.time);
            if (prev.time == e.time)
                assert_true(prev.seq < e.seq);
        }
        prev = e;
        n++;
    }
    assert_int_equal(n, 2000);
    assert_null(sim_heap_peek(&h));
    sim_heap_free(&h);
}

static void test_heap_free_releases_messages(void **state)
{
    (void)state;
    struct sim_heap h;
    sim_heap_init(&h);
    struct raft_msg m;
    memset(&m, 0, sizeof(m));
    for (uint64_t i = 0; i < 10; i++) {
        struct sim_event e = {
            .time = 10 - i, .seq = i, .msg = sim_msg_clone(&m)};
        assert_non_null(e.msg);
        assert_int_equal(sim_heap_push(&h, &e), 0);
    }
    sim_heap_free(&h); /* ASan reports a leak if the copies stay */
}

static void test_msg_clone_is_deep(void **state)
{
    (void)state;
    char a[] = "alpha", b[] = "bravo!", chunk[] = "chunk-data";
    struct raft_entry ents[2] = {
        {.term = 3, .index = 7, .type = RAFT_ENTRY_NORMAL, .len = 5, .data = a},
        {.term = 3, .index = 8, .type = RAFT_ENTRY_NORMAL, .len = 6, .data = b},
    };
    struct raft_msg m;
    memset(&m, 0, sizeof(m));
    m.type = RAFT_MSG_APPEND;
    m.from = 1;
    m.to = 2;
    m.index = 6;
    m.entries = ents;
    m.n_entries = 2;
    m.chunk_len = sizeof(chunk);
    m.chunk_data = chunk;
    struct raft_msg *c = sim_msg_clone(&m);
    assert_non_null(c);
    a[0] = 'X';
    chunk[0] = 'X';
    assert_int_equal(c->n_entries, 2);
    assert_ptr_not_equal(c->entries, ents);
    assert_memory_equal(c->entries[0].data, "alpha", 5);
    assert_memory_equal(c->entries[1].data, "bravo!", 6);
    assert_int_equal(c->entries[1].index, 8);
    assert_memory_equal(c->chunk_data, "chunk-data", sizeof(chunk));
    free(c);
}

static void test_election_safety_detects_two_leaders(void **state)
{
    (void)state;
    struct sim s;
    memset(&s, 0, sizeof(s));
    sim_check_leader(&s, 1, 5);
    sim_check_leader(&s, 1, 5);
    sim_check_leader(&s, 2, 6);
    sim_check_leader(&s, 3, 300);
    assert_false(s.failed);
    sim_check_leader(&s, 2, 5);
    assert_true(s.failed);
    assert_non_null(strstr(s.fail_what, "election safety"));
    sim_check_free(&s);
}

static void test_state_machine_safety_detects_divergence(void **state)
{
    (void)state;
    struct sim s;
    memset(&s, 0, sizeof(s));
    sim_check_apply(&s, 1, 1, 1, 0xaa, 11);
    sim_check_apply(&s, 2, 1, 1, 0xaa, 11);
    sim_check_apply(&s, 2, 2, 1, 0xbb, 12);
    assert_false(s.failed);
    assert_int_equal(s.applied_max, 2);
    sim_check_apply(&s, 3, 2, 2, 0xcc, 13); /* another entry at index 2 */
    assert_true(s.failed);
    assert_non_null(strstr(s.fail_what, "state-machine safety"));
    sim_check_free(&s);

    memset(&s, 0, sizeof(s));
    sim_check_apply(&s, 1, 1, 1, 0xaa, 11);
    sim_check_apply(&s, 2, 1, 1, 0xaa, 99); /* same entry, other state */
    assert_true(s.failed);
    sim_check_free(&s);
}

static void test_log_matching_detects_conflicts(void **state)
{
    (void)state;
    struct sim s;
    memset(&s, 0, sizeof(s));
    for (raft_index i = 1; i <= 3000; i++)
        sim_check_entry(&s, 1, i, 1 + i / 100, i,
                        i == 1 ? 0 : (i - 1) / 100 + 1);
    for (raft_index i = 1; i <= 3000; i++)
        sim_check_entry(&s, 2, i, 1 + i / 100, i, UINT64_MAX);
    assert_false(s.failed);
    /* Same (index, term), other content. */
    sim_check_entry(&s, 3, 50, 1, 0xdead, UINT64_MAX);
    assert_true(s.failed);
    assert_non_null(strstr(s.fail_what, "log matching"));
    sim_check_free(&s);

    /* Same (index, term) and content after a different predecessor. */
    memset(&s, 0, sizeof(s));
    sim_check_entry(&s, 1, 10, 4, 0x1, 3);
    sim_check_entry(&s, 2, 10, 4, 0x1, 2);
    assert_true(s.failed);
    sim_check_free(&s);
}

/* Builds a history of (client, kind, key, a1, a2, status, result) steps. */
static void hist(struct sim *s, int client, uint8_t kind, int64_t a1,
                 int64_t a2, uint8_t status, int64_t result)
{
    uint64_t op = sim_hist_invoke(s, client, kind, 0, a1, a2);
    sim_hist_complete(s, op, status, result);
}

static void test_history_linearizable(void **state)
{
    (void)state;
    struct sim s;
    memset(&s, 0, sizeof(s));
    for (int c = 0; c < SIM_CLIENTS; c++)
        s.clients[c].process = c;
    hist(&s, 0, SIM_OP_READ, 0, 0, SIM_ST_OK, 0);
    hist(&s, 0, SIM_OP_WRITE, 1, 0, SIM_ST_OK, 0);
    hist(&s, 1, SIM_OP_CAS, 1, 2, SIM_ST_OK, 0);
    hist(&s, 1, SIM_OP_CAS, 1, 3, SIM_ST_FAIL, 0);
    hist(&s, 2, SIM_OP_WRITE, 9, 0, SIM_ST_INFO, 0);
    hist(&s, 0, SIM_OP_READ, 0, 0, SIM_ST_OK,
         9); /* the info write took effect */
    /* Two overlapping ops: invoke both, complete both. */
    uint64_t w = sim_hist_invoke(&s, 0, SIM_OP_WRITE, 0, 4, 0);
    uint64_t r = sim_hist_invoke(&s, 1, SIM_OP_READ, 0, 0, 0);
    sim_hist_complete(&s, r, SIM_ST_OK, 4);
    sim_hist_complete(&s, w, SIM_ST_OK, 0);
    assert_true(sim_check_history(&s));
    assert_false(s.failed);
    sim_check_free(&s);
}

static void test_history_detects_stale_read(void **state)
{
    (void)state;
    struct sim s;
    memset(&s, 0, sizeof(s));
    for (int c = 0; c < SIM_CLIENTS; c++)
        s.clients[c].process = c;
    hist(&s, 0, SIM_OP_WRITE, 1, 0, SIM_ST_OK, 0);
    hist(&s, 1, SIM_OP_WRITE, 2, 0, SIM_ST_OK, 0);
    hist(&s, 2, SIM_OP_READ, 0, 0, SIM_ST_OK, 1); /* stale */
    assert_false(sim_check_history(&s));
    assert_true(s.failed);
    assert_non_null(strstr(s.fail_what, "linearizab"));
    sim_check_free(&s);
}

static void test_cmd_codec_round_trip(void **state)
{
    (void)state;
    struct sim_cmd c = {
        .kind = SIM_OP_CAS, .key = 2, .op = 77, .a1 = -5, .a2 = 1ll << 40};
    uint8_t buf[SIM_CMD_SIZE];
    sim_cmd_encode(&c, buf);
    struct sim_cmd d;
    assert_int_equal(sim_cmd_decode(buf, sizeof(buf), &d), 0);
    assert_int_equal(d.kind, c.kind);
    assert_int_equal(d.key, c.key);
    assert_int_equal(d.op, c.op);
    assert_int_equal(d.a1, c.a1);
    assert_int_equal(d.a2, c.a2);
    assert_int_equal(sim_cmd_decode(buf, sizeof(buf) - 1, &d), RK_EPROTO);
    buf[1] = SIM_KEYS;
    assert_int_equal(sim_cmd_decode(buf, sizeof(buf), &d), RK_EPROTO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_heap_orders_by_time_then_seq),
        cmocka_unit_test(test_heap_free_releases_messages),
        cmocka_unit_test(test_msg_clone_is_deep),
        cmocka_unit_test(test_election_safety_detects_two_leaders),
        cmocka_unit_test(test_state_machine_safety_detects_divergence),
        cmocka_unit_test(test_log_matching_detects_conflicts),
        cmocka_unit_test(test_history_linearizable),
        cmocka_unit_test(test_history_detects_stale_read),
        cmocka_unit_test(test_cmd_codec_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
