/* Limits, bad input, quiescence and the in-memory log. */
#include "raft_harness.h"

#include <stdlib.h>

static struct raft_config limits(size_t entry, size_t uncommitted,
                                 size_t committed)
{
    struct raft_config b = {.election_ticks = 10, .heartbeat_ticks = 1,
                            .seed = 1, .max_entry_bytes = entry,
                            .max_uncommitted_bytes = uncommitted,
                            .max_committed_bytes = committed};
    return b;
}

static void test_propose_too_large(void **state)
{
    struct raft_config b = limits(8, 0, 0);
    struct cluster c;
    h_init_ex(&c, 1, 0, &b);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(h_propose(&c, 1, "123456789", NULL), RK_ETOOLARGE);
    assert_int_equal(h_propose(&c, 1, "12345678", NULL), 0);
    h_free(&c);
}

static void test_max_uncommitted_bytes(void **state)
{
    struct raft_config b = limits(0, 10, 0);
    struct cluster c;
    h_init_ex(&c, 3, 0, &b);
    CLUSTER_ELECT(&c, 1);
    h_isolate(&c, 1);
    assert_int_equal(h_propose(&c, 1, "123456", NULL), 0);
    assert_int_equal(h_propose(&c, 1, "1234", NULL), 0);
    assert_int_equal(h_propose(&c, 1, "1", NULL), RK_EBUSY);
    h_heal(&c);
    h_tick(&c, 1, 1);
    h_stabilize(&c);
    /* Committing frees the budget. */
    assert_int_equal(h_propose(&c, 1, "1", NULL), 0);
    h_free(&c);
}

static void test_max_committed_bytes_per_ready(void **state)
{
    struct raft_config b = limits(0, 0, 4);
    struct cluster c;
    h_init_ex(&c, 1, 0, &b);
    CLUSTER_ELECT(&c, 1);
    for (int i = 0; i < 6; i++)
        assert_int_equal(h_propose(&c, 1, "abc", NULL), 0);
    uint32_t batches = 0, total = 0;
    for (int guard = 0; guard < 50 && raft_has_ready(c.nodes[1]); guard++) {
        struct raft_ready rd;
        raft_ready(c.nodes[1], &rd);
        /* 3 + 3 > 4: one entry per batch (but always at least one). */
        assert_true(rd.n_committed <= 1);
        if (rd.n_committed)
            batches++;
        total += rd.n_committed;
        assert_int_equal(raft_memlog_persist_ready(c.logs[1], &rd), 0);
        raft_advance(c.nodes[1], &rd);
    }
    assert_int_equal(total, 6);
    assert_int_equal(batches, 6);
    struct raft_status st;
    h_status(&c, 1, &st);
    assert_int_equal(st.applied, 7);
    h_free(&c);
}

static void test_propose_on_follower(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(h_propose(&c, 2, "x", NULL), RK_ENOTLEADER);
    assert_int_equal(raft_propose(c.nodes[1], NULL, 3, NULL), RK_EINVAL);
    h_free(&c);
}

static void test_bad_message_type(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    struct raft_msg m = h_msg(2, 1, RAFT_MSG__COUNT, 1);
    assert_int_equal(raft_step(c.nodes[1], &m), RK_EPROTO);
    m.type = 200;
    assert_int_equal(raft_step(c.nodes[1], &m), RK_EPROTO);
    assert_int_equal(raft_step(c.nodes[1], NULL), RK_EINVAL);
    h_free(&c);
}

static void test_bad_addressing(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    struct raft_msg m = h_msg(2, 3, RAFT_MSG_HEARTBEAT, 1);
    assert_int_equal(raft_step(c.nodes[1], &m), RK_EINVAL); /* not to us */
    m = h_msg(1, 1, RAFT_MSG_HEARTBEAT, 1);
    assert_int_equal(raft_step(c.nodes[1], &m), RK_EINVAL); /* from self */
    m = h_msg(0, 1, RAFT_MSG_HEARTBEAT, 1);
    assert_int_equal(raft_step(c.nodes[1], &m), RK_EINVAL); /* from 0 */
    m = h_msg(2, 1, RAFT_MSG_HEARTBEAT, 1);
    m.shard = 99;
    assert_int_equal(raft_step(c.nodes[1], &m), RK_EINVAL); /* wrong shard */
    m = h_msg(2, 1, RAFT_MSG_APPEND, 0);
    assert_int_equal(raft_step(c.nodes[1], &m), RK_EPROTO); /* term 0 */
    assert_int_equal(h_term(&c, 1), 0);
    h_free(&c);
}

static void test_inconsistent_entries(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    struct raft_msg m = h_msg(1, 2, RAFT_MSG_APPEND, 1);
    m.index = 1;
    m.log_term = 1;
    m.n_entries = 2; /* but no array */
    assert_int_equal(raft_step(c.nodes[2], &m), RK_EPROTO);
    struct raft_entry e[2] = {
        {.term = 1, .index = 2, .type = 0, .len = 1, .data = "a"},
        {.term = 1, .index = 4, .type = 0, .len = 1, .data = "b"},
    };
    m.entries = e;
    assert_int_equal(raft_step(c.nodes[2], &m), RK_EPROTO); /* gap */
    e[1].index = 3;
    e[1].term = 5; /* beyond the message term */
    assert_int_equal(raft_step(c.nodes[2], &m), RK_EPROTO);
    e[1].term = 1;
    e[1].len = 3;
    e[1].data = NULL;
    assert_int_equal(raft_step(c.nodes[2], &m), RK_EPROTO);
    e[1].data = "bbb";
    e[1].type = 9;
    assert_int_equal(raft_step(c.nodes[2], &m), RK_EPROTO);
    e[1].type = 0;
    struct raft_msg h = h_msg(1, 2, RAFT_MSG_HEARTBEAT, 1);
    h.n_entries = 1;
    h.entries = e;
    assert_int_equal(raft_step(c.nodes[2], &h), RK_EPROTO);
    assert_int_equal(h_last(&c, 2), 1);
    assert_int_equal(raft_step(c.nodes[2], &m), 0);
    assert_int_equal(h_last(&c, 2), 3);
    h_free(&c);
}

static void test_response_from_non_member(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    struct raft_msg m = h_msg(9, 1, RAFT_MSG_APPEND_RESP, 1);
    m.index = 1;
    assert_int_equal(raft_step(c.nodes[1], &m), RK_ENOTFOUND);
    m.type = RAFT_MSG_HEARTBEAT_RESP;
    assert_int_equal(raft_step(c.nodes[1], &m), RK_ENOTFOUND);
    assert_int_equal(h_role(&c, 1), RAFT_LEADER);
    h_free(&c);
}

static void test_ack_past_end(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    struct raft_msg m = h_msg(2, 1, RAFT_MSG_APPEND_RESP, 1);
    m.index = 1000;
    assert_int_equal(raft_step(c.nodes[1], &m), RK_EPROTO);
    assert_int_equal(h_commit(&c, 1), 1);
    h_free(&c);
}

/* §3.4 election safety: a second leader for our term is a protocol error. */
static void test_two_leaders_same_term(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    struct raft_msg m = h_msg(2, 1, RAFT_MSG_APPEND, 1);
    m.index = 1;
    m.log_term = 1;
    assert_int_equal(raft_step(c.nodes[1], &m), RK_EPROTO);
    assert_int_equal(h_role(&c, 1), RAFT_LEADER);
    h_free(&c);
}

/* Leader completeness: an append that would overwrite a committed entry is
 * refused. */
static void test_overwrite_committed_refused(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    h_propose(&c, 1, "a", NULL);
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 2), 2);
    struct raft_entry e = {.term = 2, .index = 2, .type = 0, .len = 1,
                           .data = "z"};
    struct raft_msg m = h_msg(3, 2, RAFT_MSG_APPEND, 2);
    m.index = 1;
    m.log_term = 1;
    m.entries = &e;
    m.n_entries = 1;
    /* index 1 < commit 2: answered with the commit, nothing changes. */
    assert_int_equal(raft_step(c.nodes[2], &m), 0);
    assert_int_equal(h_log_term(&c, 2, 2), 1);
    /* The ack names the commit index, not the conflicting entry. */
    h_ready(&c, 2);
    int k = h_find(&c, 2, 3, RAFT_MSG_APPEND_RESP);
    assert_true(k >= 0);
    assert_false(c.q[k].m.reject);
    assert_int_equal(c.q[k].m.index, 2);
    h_free(&c);
}

static void test_oversized_entry_in_append(void **state)
{
    struct raft_config b = limits(4, 0, 0);
    struct cluster c;
    h_init_ex(&c, 3, 0, &b);
    CLUSTER_ELECT(&c, 1);
    struct raft_entry e = {.term = 1, .index = 2, .type = 0, .len = 5,
                           .data = "12345"};
    struct raft_msg m = h_msg(1, 2, RAFT_MSG_APPEND, 1);
    m.index = 1;
    m.log_term = 1;
    m.entries = &e;
    m.n_entries = 1;
    assert_int_equal(raft_step(c.nodes[2], &m), RK_ETOOLARGE);
    assert_int_equal(h_last(&c, 2), 1);
    h_free(&c);
}

static void test_malformed_snapshot_message(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    struct raft_msg m = h_msg(1, 2, RAFT_MSG_SNAPSHOT, 1);
    m.snap.index = 10;
    m.snap.term = 1;
    m.snap.conf.n_voters = 40; /* too many */
    assert_int_equal(raft_step(c.nodes[2], &m), RK_EPROTO);
    m.snap.conf.n_voters = 1;
    m.snap.conf.voters[0] = 1;
    m.chunk_len = 10; /* no data */
    assert_int_equal(raft_step(c.nodes[2], &m), RK_EPROTO);
    m.chunk_len = 0;
    m.snap.term = 3; /* newer than the message term */
    assert_int_equal(raft_step(c.nodes[2], &m), RK_EPROTO);
    h_free(&c);
}

static void test_conf_change_codec(void **state)
{
    struct raft_conf_change cc = {RAFT_CC_PROMOTE, 0x0102030405060708ULL}, out;
    uint8_t buf[RAFT_CONF_CHANGE_SIZE];
    raft_conf_change_encode(&cc, buf);
    assert_int_equal(raft_conf_change_decode(buf, sizeof(buf), &out), 0);
    assert_int_equal(out.type, RAFT_CC_PROMOTE);
    assert_true(out.node == cc.node);
    assert_int_equal(raft_conf_change_decode(buf, 5, &out), RK_EPROTO);
    buf[0] = 7;
    assert_int_equal(raft_conf_change_decode(buf, sizeof(buf), &out),
                     RK_EPROTO);
    assert_int_equal(raft_conf_change_decode(NULL, 9, &out), RK_EPROTO);
}

static void test_bad_config(void **state)
{
    struct raft_node *n = NULL;
    struct raft_memlog *ml = raft_memlog_new();
    struct raft_config cfg = {.id = 0, .log = &raft_memlog_ops, .log_ctx = ml};
    assert_int_equal(raft_node_new(&cfg, &n), RK_EINVAL);
    cfg.id = 1;
    cfg.election_ticks = 2;
    cfg.heartbeat_ticks = 5;
    assert_int_equal(raft_node_new(&cfg, &n), RK_EINVAL);
    cfg.heartbeat_ticks = 1;
    cfg.hs.commit = 5; /* past the (empty) log: storage lost data */
    assert_int_equal(raft_node_new(&cfg, &n), RK_ECORRUPT);
    cfg.hs.commit = 0;
    cfg.log = NULL;
    assert_int_equal(raft_node_new(&cfg, &n), RK_EINVAL);
    raft_memlog_free(ml);
}

/* Quiescence: an idle, caught-up group may stop ticking. */
static void test_quiescable(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    h_propose(&c, 1, "x", NULL);
    assert_false(raft_quiescable(c.nodes[1]));
    h_stabilize(&c);
    h_tick(&c, 1, 1);
    h_stabilize(&c);
    assert_true(raft_quiescable(c.nodes[1]));
    assert_true(raft_quiescable(c.nodes[2]));
    h_isolate(&c, 3);
    h_propose(&c, 1, "y", NULL);
    h_stabilize(&c);
    assert_false(raft_quiescable(c.nodes[1]));
    h_free(&c);
}

static void test_names(void **state)
{
    assert_string_equal(raft_role_name(RAFT_LEADER), "leader");
    assert_string_equal(raft_msg_type_name(RAFT_MSG_TIMEOUT_NOW),
                        "TIMEOUT_NOW");
    assert_string_equal(raft_msg_type_name(99), "?");
}

static void test_memlog_append_truncate_crash(void **state)
{
    struct raft_memlog *ml = raft_memlog_new();
    struct raft_entry e[4];
    for (int i = 0; i < 4; i++)
        e[i] = (struct raft_entry){.term = 1, .index = (raft_index)i + 1,
                                   .len = 2, .data = "ab"};
    assert_int_equal(raft_memlog_append(ml, e, 4), 0);
    raft_memlog_sync(ml);
    struct raft_entry f = {.term = 2, .index = 3, .len = 1, .data = "z"};
    assert_int_equal(raft_memlog_append(ml, &f, 1), 0);
    assert_int_equal(raft_memlog_last_index(ml), 3);
    assert_int_equal(raft_memlog_synced_index(ml), 2);
    struct raft_entry *out;
    uint32_t n;
    assert_int_equal(raft_memlog_ops.entries(ml, 1, 4, 3, &out, &n), 0);
    assert_int_equal(n, 1); /* 2 + 2 > 3: at least one */
    free(out);
    assert_int_equal(raft_memlog_ops.entries(ml, 1, 4, 100, &out, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(out[2].term, 2);
    assert_memory_equal(out[2].data, "z", 1);
    free(out);
    assert_int_equal(raft_memlog_ops.entries(ml, 2, 9, 100, &out, &n),
                     RK_EUNAVAIL_LOG);
    struct raft_entry gap = {.term = 2, .index = 9, .len = 0};
    assert_int_equal(raft_memlog_append(ml, &gap, 1), RK_EINVAL);
    struct raft_hard_state hs = {5, 1, 2}, got;
    raft_memlog_set_hard_state(ml, &hs);
    raft_memlog_crash(ml);
    assert_int_equal(raft_memlog_last_index(ml), 2);
    raft_memlog_hard_state(ml, &got);
    assert_int_equal(got.term, 0);
    raft_memlog_free(ml);
}

static void test_memlog_stage_install(void **state)
{
    struct raft_memlog *ml = raft_memlog_new();
    struct raft_snap_chunk ch = {.meta = {.index = 5, .term = 2},
                                 .seq = 1, .len = 1, .data = "x"};
    assert_int_equal(raft_memlog_stage_chunk(ml, &ch), RK_EINVAL);
    ch.seq = 0;
    assert_int_equal(raft_memlog_stage_chunk(ml, &ch), 0);
    assert_int_equal(raft_memlog_install_staged(ml, &ch.meta), RK_EINVAL);
    ch.seq = 1;
    ch.last = true;
    ch.data = "y";
    assert_int_equal(raft_memlog_stage_chunk(ml, &ch), 0);
    assert_int_equal(raft_memlog_install_staged(ml, &ch.meta), 0);
    const void *d;
    size_t l;
    struct raft_snapshot_meta m;
    raft_memlog_snapshot(ml, &m, &d, &l);
    assert_int_equal(m.index, 5);
    assert_int_equal(l, 2);
    assert_memory_equal(d, "xy", 2);
    assert_int_equal(raft_memlog_first_index(ml), 6);
    raft_memlog_set_chunk_size(ml, 1);
    void *buf;
    uint32_t len;
    bool last;
    assert_int_equal(raft_memlog_ops.snapshot_chunk(ml, 5, 1, &buf, &len, &last),
                     0);
    assert_true(last);
    assert_memory_equal(buf, "y", 1);
    free(buf);
    assert_int_equal(raft_memlog_ops.snapshot_chunk(ml, 4, 0, &buf, &len, &last),
                     RK_ESTALE);
    raft_memlog_free(ml);
}

/* Compacting a log of empty entries (no payload buffer) is fine. */
static void test_memlog_compact_empty_payloads(void **state)
{
    struct raft_memlog *ml = raft_memlog_new();
    struct raft_entry e[3];
    for (int i = 0; i < 3; i++)
        e[i] = (struct raft_entry){.term = 1, .index = (raft_index)i + 1,
                                   .type = RAFT_ENTRY_NOOP};
    assert_int_equal(raft_memlog_append(ml, e, 3), 0);
    struct raft_conf_state cs = {0};
    assert_int_equal(raft_memlog_snapshot_create(ml, 1, &cs, NULL, 0), 0);
    assert_int_equal(raft_memlog_first_index(ml), 2);
    assert_int_equal(raft_memlog_last_index(ml), 3);
    struct raft_entry *out;
    uint32_t n;
    assert_int_equal(raft_memlog_ops.entries(ml, 2, 4, 10, &out, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(out[1].type, RAFT_ENTRY_NOOP);
    free(out);
    raft_memlog_free(ml);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        H_TEST(test_propose_too_large),
        H_TEST(test_max_uncommitted_bytes),
        H_TEST(test_max_committed_bytes_per_ready),
        H_TEST(test_propose_on_follower),
        H_TEST(test_bad_message_type),
        H_TEST(test_bad_addressing),
        H_TEST(test_inconsistent_entries),
        H_TEST(test_response_from_non_member),
        H_TEST(test_ack_past_end),
        H_TEST(test_two_leaders_same_term),
        H_TEST(test_overwrite_committed_refused),
        H_TEST(test_oversized_entry_in_append),
        H_TEST(test_malformed_snapshot_message),
        H_TEST(test_conf_change_codec),
        H_TEST(test_bad_config),
        H_TEST(test_quiescable),
        H_TEST(test_names),
        H_TEST(test_memlog_append_truncate_crash),
        H_TEST(test_memlog_stage_install),
        H_TEST(test_memlog_compact_empty_payloads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
