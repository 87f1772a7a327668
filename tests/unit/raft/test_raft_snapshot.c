/* Log compaction and chunked InstallSnapshot (thesis §5.1-§5.3). */
#include "raft_harness.h"

#include <stdio.h>

static void fill(struct cluster *c, raft_id l, int n)
{
    char buf[16];
    for (int i = 0; i < n; i++) {
        snprintf(buf, sizeof(buf), "e%d", i);
        assert_int_equal(raft_propose(c->nodes[l], buf, strlen(buf), NULL), 0);
    }
}

/* Lagging node 3, leader 1 with a snapshot of `len` bytes at its applied
 * index (the log below is compacted). */
static void setup_lagging(struct cluster *c, size_t len, uint32_t chunk)
{
    h_init(c, 3);
    CLUSTER_ELECT(c, 1);
    h_isolate(c, 3);
    fill(c, 1, 20);
    h_stabilize(c);
    raft_memlog_set_chunk_size(c->logs[1], chunk);
    h_snapshot(c, 1, len);
    h_heal(c);
}

/* After setup_lagging: the leader's first SNAPSHOT message to node 3,
 * once the probe has walked back past the compacted log. Returns its
 * position in the queue. */
static int first_chunk(struct cluster *c)
{
    h_tick(c, 1, 1);
    int k = -1;
    for (int r = 0; r < 10 && (k = h_find(c, 1, 3, RAFT_MSG_SNAPSHOT)) < 0;
         r++) {
        h_deliver_to(c, 3);
        h_deliver_to(c, 1);
    }
    assert_true(k >= 0);
    return k;
}

/* §5.1: taking a snapshot compacts the log up to it. */
static void test_snapshot_compacts_log(void **state)
{
    struct cluster c;
    h_init(&c, 1);
    CLUSTER_ELECT(&c, 1);
    fill(&c, 1, 10);
    h_stabilize(&c);
    h_snapshot(&c, 1, 100);
    struct raft_status st;
    h_status(&c, 1, &st);
    assert_int_equal(st.first_index, 12);
    assert_int_equal(st.last_index, 11);
    struct raft_snapshot_meta m;
    raft_memlog_snapshot(c.logs[1], &m, NULL, NULL);
    assert_int_equal(m.index, 11);
    assert_int_equal(m.term, 1);
    assert_int_equal(m.conf.n_voters, 1);
    /* The log continues after it. */
    fill(&c, 1, 1);
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 1), 12);
    h_free(&c);
}

/* §5.3: a follower behind the compacted log gets the snapshot. */
static void test_lagging_follower_gets_snapshot(void **state)
{
    struct cluster c;
    setup_lagging(&c, 100, 1 << 20);
    h_tick(&c, 1, 1);
    h_stabilize(&c);
    assert_int_equal(c.n_installs[3], 1);
    assert_int_equal(c.n_chunks_staged[3], 1);
    struct raft_snapshot_meta m;
    const void *data;
    size_t len;
    raft_memlog_snapshot(c.logs[3], &m, &data, &len);
    assert_int_equal(m.index, 21);
    assert_int_equal(len, 100);
    assert_int_equal(h_commit(&c, 3), 21);
    /* Replication continues from the snapshot. */
    fill(&c, 1, 2);
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 3), 23);
    assert_int_equal(c.app[3][c.n_app[3] - 1].index, 23);
    h_check_applied(&c);
    h_free(&c);
}

/* Chunked InstallSnapshot: many chunks, staged in order, installed once,
 * byte for byte. */
static void test_multi_chunk_snapshot(void **state)
{
    struct cluster c;
    setup_lagging(&c, 1000, 64);
    h_tick(&c, 1, 1);
    h_stabilize(&c);
    assert_int_equal(c.n_chunks_staged[3], 16);
    assert_int_equal(c.n_installs[3], 1);
    const void *d1, *d3;
    size_t l1, l3;
    raft_memlog_snapshot(c.logs[1], NULL, &d1, &l1);
    raft_memlog_snapshot(c.logs[3], NULL, &d3, &l3);
    assert_int_equal(l1, l3);
    assert_memory_equal(d1, d3, l1);
    h_free(&c);
}

/* Durability: each chunk is acknowledged only after it is staged. */
static void test_chunk_ack_after_sync(void **state)
{
    struct cluster c;
    setup_lagging(&c, 100, 40);
    int k = first_chunk(&c);
    assert_int_equal(c.q[k].m.chunk_seq, 0);
    assert_false(c.q[k].m.chunk_last);
    assert_int_equal(c.q[k].m.chunk_len, 40);
    h_deliver(&c, (uint32_t)k);
    struct raft_ready rd;
    raft_ready(c.nodes[3], &rd);
    assert_non_null(rd.snap_chunk);
    assert_int_equal(rd.snap_chunk->seq, 0);
    assert_false(rd.snap_install);
    assert_int_equal(rd.n_msgs, 0);
    assert_int_equal(rd.n_msgs_after_sync, 1);
    assert_int_equal(rd.msgs_after_sync[0].type, RAFT_MSG_SNAPSHOT_RESP);
    assert_false(rd.msgs_after_sync[0].reject);
    assert_true(rd.must_sync);
    assert_int_equal(raft_memlog_persist_ready(c.logs[3], &rd), 0);
    h_enqueue(&c, &rd.msgs_after_sync[0]);
    raft_advance(c.nodes[3], &rd);
    h_stabilize(&c);
    assert_int_equal(c.n_installs[3], 1);
    h_free(&c);
}

/* §5.3: a follower refuses a snapshot older than its commit index. */
static void test_reject_snapshot_older_than_commit(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    fill(&c, 1, 5);
    h_stabilize(&c);
    struct raft_msg m = h_msg(1, 2, RAFT_MSG_SNAPSHOT, 1);
    m.snap.index = 3;
    m.snap.term = 1;
    m.snap.conf.n_voters = 3;
    m.snap.conf.voters[0] = 1;
    m.snap.conf.voters[1] = 2;
    m.snap.conf.voters[2] = 3;
    m.chunk_last = true;
    assert_int_equal(raft_step(c.nodes[2], &m), RK_ESTALE);
    h_ready(&c, 2);
    int k = h_find(&c, 2, 1, RAFT_MSG_SNAPSHOT_RESP);
    assert_true(k >= 0);
    assert_true(c.q[k].m.reject);
    assert_int_equal(c.q[k].m.hint_index, 6);
    assert_int_equal(c.n_installs[2], 0);
    assert_int_equal(h_commit(&c, 2), 6);
    h_free(&c);
}

/* A lost chunk is sent again after an election timeout of silence. */
static void test_lost_chunk_resent(void **state)
{
    struct cluster c;
    setup_lagging(&c, 300, 100);
    int k = first_chunk(&c);
    h_drop_all(&c);
    for (int t = 0; t < 12; t++) {
        h_tick(&c, 1, 1);
        for (int j = h_find(&c, 1, 0, RAFT_MSG_HEARTBEAT); j >= 0;
             j = h_find(&c, 1, 0, RAFT_MSG_HEARTBEAT))
            h_drop(&c, (uint32_t)j);
    }
    k = h_find(&c, 1, 3, RAFT_MSG_SNAPSHOT);
    assert_true(k >= 0);
    assert_int_equal(c.q[k].m.chunk_seq, 0);
    h_stabilize(&c);
    assert_int_equal(c.n_installs[3], 1);
    assert_int_equal(c.n_chunks_staged[3], 3);
    h_free(&c);
}

/* A chunk out of order is rejected and the transfer restarts from 0. */
static void test_out_of_order_chunk_rejected(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    struct raft_msg m = h_msg(1, 2, RAFT_MSG_SNAPSHOT, 1);
    m.snap.index = 50;
    m.snap.term = 1;
    m.snap.conf.n_voters = 1;
    m.snap.conf.voters[0] = 1;
    m.chunk_seq = 2;
    m.chunk_len = 3;
    m.chunk_data = "abc";
    assert_int_equal(raft_step(c.nodes[2], &m), RK_EINVAL);
    h_ready(&c, 2);
    int k = h_find(&c, 2, 1, RAFT_MSG_SNAPSHOT_RESP);
    assert_true(k >= 0);
    assert_true(c.q[k].m.reject);
    assert_int_equal(c.n_chunks_staged[2], 0);
    h_free(&c);
}

/* §5.3: after installing, the follower's log is replaced; it restarts
 * from the snapshot after a crash. */
static void test_restart_from_snapshot(void **state)
{
    struct cluster c;
    setup_lagging(&c, 50, 16);
    h_tick(&c, 1, 1);
    h_stabilize(&c);
    h_crash(&c, 3);
    h_restart(&c, 3);
    struct raft_status st;
    h_status(&c, 3, &st);
    assert_int_equal(st.first_index, 22);
    assert_int_equal(st.commit, 21);
    assert_int_equal(st.applied, 21);
    assert_int_equal(st.conf.n_voters, 3);
    fill(&c, 1, 1);
    h_tick(&c, 1, 1);
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 3), 22);
    h_free(&c);
}

/* A new learner with an empty log is caught up by snapshot (DESIGN §4),
 * then promoted. */
static void test_new_learner_via_snapshot_then_promote(void **state)
{
    struct cluster c;
    h_init_ex(&c, 3, 2, NULL);
    CLUSTER_ELECT(&c, 1);
    fill(&c, 1, 10);
    h_stabilize(&c);
    h_snapshot(&c, 1, 200);
    struct raft_conf_change cc = {RAFT_CC_ADD_LEARNER, 3};
    assert_int_equal(raft_propose_conf(c.nodes[1], &cc, NULL), 0);
    h_stabilize(&c);
    h_tick(&c, 1, 1);
    h_stabilize(&c);
    assert_int_equal(c.n_installs[3], 1);
    assert_int_equal(h_commit(&c, 3), h_commit(&c, 1));
    cc.type = RAFT_CC_PROMOTE;
    assert_int_equal(raft_propose_conf(c.nodes[1], &cc, NULL), 0);
    h_stabilize(&c);
    struct raft_status st;
    h_status(&c, 3, &st);
    assert_int_equal(st.conf.n_voters, 3);
    h_check_applied(&c);
    h_free(&c);
}

/* Snapshots must be newer: memlog refuses a stale one. */
static void test_memlog_snapshot_rules(void **state)
{
    struct raft_memlog *ml = raft_memlog_new();
    struct raft_entry e[3];
    for (int i = 0; i < 3; i++) {
        e[i] = (struct raft_entry){.term = 1, .index = (raft_index)i + 1,
                                   .type = 0, .len = 1, .data = "x"};
    }
    assert_int_equal(raft_memlog_append(ml, e, 3), 0);
    struct raft_conf_state cs = {0};
    assert_int_equal(raft_memlog_snapshot_create(ml, 2, &cs, "ab", 2), 0);
    assert_int_equal(raft_memlog_snapshot_create(ml, 2, &cs, "ab", 2),
                     RK_ESTALE);
    assert_int_equal(raft_memlog_snapshot_create(ml, 9, &cs, "ab", 2),
                     RK_EUNAVAIL_LOG);
    assert_int_equal(raft_memlog_first_index(ml), 3);
    raft_term t;
    assert_int_equal(raft_memlog_ops.term(ml, 1, &t), RK_ECOMPACTED);
    assert_int_equal(raft_memlog_ops.term(ml, 2, &t), 0);
    assert_int_equal(t, 1);
    struct raft_entry *out;
    uint32_t n;
    assert_int_equal(raft_memlog_ops.entries(ml, 2, 4, 100, &out, &n),
                     RK_ECOMPACTED);
    raft_memlog_free(ml);
}

/* Raft paper Fig. 13 rule 6: a snapshot whose last entry our log already
 * holds does not discard the entries after it. */
static void test_snapshot_matching_log_keeps_suffix(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    fill(&c, 1, 5); /* indexes 2..6 */
    h_ready(&c, 1);
    /* Node 2 gets the entries but not the commit. */
    h_deliver_to(&c, 2);
    h_drop_all(&c);
    assert_int_equal(h_last(&c, 2), 6);
    assert_int_equal(h_commit(&c, 2), 1);
    struct raft_msg m = h_msg(1, 2, RAFT_MSG_SNAPSHOT, 1);
    m.snap.index = 4;
    m.snap.term = 1;
    m.snap.conf.n_voters = 3;
    for (int i = 0; i < 3; i++)
        m.snap.conf.voters[i] = (raft_id)i + 1;
    m.chunk_last = true;
    m.chunk_len = 2;
    m.chunk_data = "zz";
    raft_step(c.nodes[2], &m);
    h_ready(&c, 2);
    assert_int_equal(c.n_installs[2], 0);
    assert_int_equal(h_last(&c, 2), 6);
    assert_int_equal(h_commit(&c, 2), 4);
    int k = h_find(&c, 2, 1, RAFT_MSG_SNAPSHOT_RESP);
    assert_true(k >= 0);
    assert_true(c.q[k].m.reject);
    assert_int_equal(c.q[k].m.hint_index, 4);
    h_free(&c);
}

/* A chunk stream is tied to one leader and term: chunks of a new leader
 * with the same snapshot start a fresh staging. */
static void test_staging_restarts_for_new_leader(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    struct raft_msg m = h_msg(1, 3, RAFT_MSG_SNAPSHOT, 1);
    m.snap.index = 9;
    m.snap.term = 1;
    m.snap.conf.n_voters = 1;
    m.snap.conf.voters[0] = 1;
    m.chunk_len = 2;
    m.chunk_data = "ab";
    assert_int_equal(raft_step(c.nodes[3], &m), 0); /* leader 1, chunk 0 */
    h_ready(&c, 3);
    /* Leader 2 of term 2 sends the same snapshot from chunk 0: staged. */
    struct raft_msg m2 = m;
    m2.from = 2;
    m2.term = 2;
    assert_int_equal(raft_step(c.nodes[3], &m2), 0);
    h_ready(&c, 3);
    assert_int_equal(c.n_chunks_staged[3], 2);
    /* Its chunk 1 (last) completes the install. */
    m2.chunk_seq = 1;
    m2.chunk_last = true;
    assert_int_equal(raft_step(c.nodes[3], &m2), 0);
    h_ready(&c, 3);
    assert_int_equal(c.n_installs[3], 1);
    const void *d;
    size_t l;
    raft_memlog_snapshot(c.logs[3], NULL, &d, &l);
    assert_int_equal(l, 4);
    assert_memory_equal(d, "abab", 4);
    h_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        H_TEST(test_snapshot_compacts_log),
        H_TEST(test_lagging_follower_gets_snapshot),
        H_TEST(test_multi_chunk_snapshot),
        H_TEST(test_chunk_ack_after_sync),
        H_TEST(test_reject_snapshot_older_than_commit),
        H_TEST(test_lost_chunk_resent),
        H_TEST(test_out_of_order_chunk_rejected),
        H_TEST(test_restart_from_snapshot),
        H_TEST(test_new_learner_via_snapshot_then_promote),
        H_TEST(test_memlog_snapshot_rules),
        H_TEST(test_snapshot_matching_log_keeps_suffix),
        H_TEST(test_staging_restarts_for_new_leader),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
