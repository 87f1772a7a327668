/* Linearizable reads with ReadIndex (thesis §6.4). */
#include "raft_harness.h"

/* §6.4: on a single-voter group a read is safe at once. */
static void test_single_node_read_immediate(void **state)
{
    struct cluster c;
    h_init(&c, 1);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(raft_read_index(c.nodes[1], 77), 0);
    h_ready(&c, 1);
    assert_int_equal(c.n_reads[1], 1);
    assert_int_equal(c.reads[1][0].ctx, 77);
    assert_int_equal(c.reads[1][0].index, 1);
    assert_int_equal(c.nq, 0);
    h_free(&c);
}

/* §6.4 step 1: a new leader answers only after its no-op commits. */
static void test_read_waits_for_noop_commit(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT_BY(&c, 1, 2);
    assert_int_equal(h_commit(&c, 1), 0);
    assert_int_equal(raft_read_index(c.nodes[1], 5), 0);
    h_ready(&c, 1);
    assert_int_equal(h_count(&c, 1, 0, RAFT_MSG_HEARTBEAT), 0);
    h_stabilize(&c);
    assert_int_equal(c.n_reads[1], 1);
    assert_int_equal(c.reads[1][0].ctx, 5);
    assert_int_equal(c.reads[1][0].index, 1);
    h_free(&c);
}

/* §6.4 step 2-3: a heartbeat round acknowledged by a majority confirms
 * leadership; the read index is the commit index at arrival. */
static void test_read_needs_heartbeat_quorum(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    h_propose(&c, 1, "a", NULL);
    h_stabilize(&c);
    assert_int_equal(raft_read_index(c.nodes[1], 9), 0);
    h_ready(&c, 1);
    assert_int_equal(h_count(&c, 1, 0, RAFT_MSG_HEARTBEAT), 2);
    int k = h_find(&c, 1, 2, RAFT_MSG_HEARTBEAT);
    assert_true(c.q[k].m.context > 0);
    assert_int_equal(c.n_reads[1], 0);
    /* Only node 2 answers: 2 of 3 is a majority. */
    h_deliver_to(&c, 2);
    h_deliver_to(&c, 1);
    assert_int_equal(c.n_reads[1], 1);
    assert_int_equal(c.reads[1][0].index, 2);
    h_free(&c);
}

/* Without a quorum of answers the read never completes. */
static void test_read_not_served_without_quorum(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    h_isolate(&c, 1);
    assert_int_equal(raft_read_index(c.nodes[1], 9), 0);
    for (int t = 0; t < 5; t++) {
        h_tick(&c, 1, 1);
        h_stabilize(&c);
    }
    assert_int_equal(c.n_reads[1], 0);
    h_free(&c);
}

/* Batching: reads arriving before the round's heartbeats leave share one
 * round. */
static void test_reads_batched_in_one_round(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    for (uint64_t i = 1; i <= 10; i++)
        assert_int_equal(raft_read_index(c.nodes[1], i), 0);
    h_ready(&c, 1);
    assert_int_equal(h_count(&c, 1, 0, RAFT_MSG_HEARTBEAT), 2);
    h_stabilize(&c);
    assert_int_equal(c.n_reads[1], 10);
    for (uint32_t i = 0; i < 10; i++)
        assert_int_equal(c.reads[1][i].ctx, i + 1);
    h_free(&c);
}

/* A heartbeat answer to a round that started before the read does not
 * confirm it. */
static void test_old_round_ack_does_not_confirm(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(raft_read_index(c.nodes[1], 1), 0);
    h_ready(&c, 1); /* round 1 leaves */
    assert_int_equal(raft_read_index(c.nodes[1], 2), 0);
    h_ready(&c, 1); /* round 2 leaves */
    /* Deliver only round-1 heartbeats and their answers. */
    int k = h_find(&c, 1, 2, RAFT_MSG_HEARTBEAT);
    uint64_t ctx1 = c.q[k].m.context;
    h_deliver(&c, (uint32_t)k);
    k = h_find(&c, 1, 3, RAFT_MSG_HEARTBEAT);
    h_deliver(&c, (uint32_t)k);
    h_ready(&c, 2);
    h_ready(&c, 3);
    while ((k = h_find(&c, 0, 1, RAFT_MSG_HEARTBEAT_RESP)) >= 0) {
        assert_int_equal(c.q[k].m.context, ctx1);
        h_deliver(&c, (uint32_t)k);
    }
    h_ready(&c, 1);
    assert_int_equal(c.n_reads[1], 1);
    assert_int_equal(c.reads[1][0].ctx, 1);
    h_stabilize(&c);
    assert_int_equal(c.n_reads[1], 2);
    h_free(&c);
}

/* Followers do not serve ReadIndex themselves. */
static void test_follower_read_not_leader(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(raft_read_index(c.nodes[2], 1), RK_ENOTLEADER);
    h_free(&c);
}

/* Pending reads are dropped when leadership is lost. */
static void test_reads_dropped_on_step_down(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(raft_read_index(c.nodes[1], 1), 0);
    h_ready(&c, 1);
    h_drop_all(&c);
    struct raft_msg r = h_msg(2, 1, RAFT_MSG_APPEND_RESP, 5);
    raft_step(c.nodes[1], &r);
    assert_int_equal(h_role(&c, 1), RAFT_FOLLOWER);
    h_stabilize(&c);
    assert_int_equal(c.n_reads[1], 0);
    h_free(&c);
}

/* A read answered at index i is served once applied >= i: the index is
 * never below an entry committed before the read. */
static void test_read_index_covers_prior_writes(void **state)
{
    struct cluster c;
    h_init(&c, 5);
    CLUSTER_ELECT(&c, 3);
    raft_index w;
    h_propose(&c, 3, "w", &w);
    h_stabilize(&c);
    assert_int_equal(raft_read_index(c.nodes[3], 4), 0);
    h_stabilize(&c);
    assert_int_equal(c.n_reads[3], 1);
    assert_true(c.reads[3][0].index >= w);
    h_free(&c);
}

/* Lease reads (§6.4.1) need check-quorum and answer without a round. */
static void test_lease_read(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .check_quorum = true, .seed = 2};
    struct cluster c;
    h_init_ex(&c, 3, 0, &base);
    CLUSTER_ELECT_BY(&c, 1, 2);
    assert_int_equal(raft_read_lease(c.nodes[1], 3), RK_EBUSY);
    h_stabilize(&c);
    /* No heartbeat round answered yet: no lease (§6.4.1). */
    assert_int_equal(raft_read_lease(c.nodes[1], 3), RK_EBUSY);
    h_tick(&c, 1, 1);
    h_stabilize(&c);
    assert_int_equal(raft_read_lease(c.nodes[1], 3), 0);
    h_ready(&c, 1);
    assert_int_equal(c.n_reads[1], 1);
    assert_int_equal(c.reads[1][0].index, 1);
    assert_int_equal(h_count(&c, 1, 0, RAFT_MSG_HEARTBEAT), 0);
    assert_int_equal(raft_read_lease(c.nodes[2], 3), RK_ENOTLEADER);
    h_free(&c);
}

static void test_lease_read_needs_check_quorum(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(raft_read_lease(c.nodes[1], 3), RK_EINVAL);
    h_free(&c);
}

/* Thesis §3.10/§6.4.1: once a leader sent TimeoutNow, the transferee may
 * win at once (its election ignores leases), so the old leader's lease is
 * void for the rest of its term, even after the transfer timed out
 * (seed 902102 n7). ReadIndex still works. */
static void test_lease_void_after_timeout_now(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .check_quorum = true, .seed = 2};
    struct cluster c;
    h_init_ex(&c, 3, 0, &base);
    CLUSTER_ELECT(&c, 1);
    h_tick(&c, 1, 1);
    h_stabilize(&c);
    assert_int_equal(raft_read_lease(c.nodes[1], 3), 0);
    assert_int_equal(raft_transfer_leader(c.nodes[1], 2), 0);
    h_ready(&c, 1);
    int k = h_find(&c, 1, 2, RAFT_MSG_TIMEOUT_NOW);
    assert_true(k >= 0);
    h_drop(&c, (uint32_t)k); /* lost (or delayed): 2 may still campaign */
    assert_int_equal(raft_read_lease(c.nodes[1], 4), RK_EBUSY);
    /* The transfer times out; heartbeats keep the quorum in touch. */
    for (int t = 0; t < 12; t++) {
        h_tick(&c, 1, 1);
        h_stabilize(&c);
    }
    assert_int_equal(h_role(&c, 1), RAFT_LEADER);
    raft_index idx = 0;
    assert_int_equal(h_propose(&c, 1, "x", &idx), 0); /* transfer over */
    h_stabilize(&c);
    assert_int_equal(raft_read_lease(c.nodes[1], 5), RK_EBUSY);
    assert_int_equal(raft_read_index(c.nodes[1], 6), 0);
    h_free(&c);
}

/* Thesis §6.4.1: the lease ends election_ticks - (2 + election_ticks/10)
 * ticks after the SEND of the last heartbeat round a quorum answered, not
 * when check-quorum (which may keep a cut-off leader for up to two election
 * timeouts) notices (seed 1100440 n3). */
static void test_lease_ends_after_quorum_round_send(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .check_quorum = true, .seed = 2};
    struct cluster c;
    h_init_ex(&c, 3, 0, &base);
    CLUSTER_ELECT(&c, 1);
    h_tick(&c, 1, 1); /* round sent at tick 1, answered by all */
    h_stabilize(&c);
    assert_int_equal(raft_read_lease(c.nodes[1], 1), 0);
    h_isolate(&c, 1);
    /* Lease = 10 - 2 - 1 = 7 ticks from the send at tick 1: up to tick 7. */
    for (int t = 2; t <= 7; t++) {
        h_tick(&c, 1, 1);
        assert_int_equal(raft_read_lease(c.nodes[1], 10 + t), 0);
    }
    h_tick(&c, 1, 1); /* tick 8 */
    assert_int_equal(h_role(&c, 1), RAFT_LEADER); /* check-quorum: not yet */
    assert_int_equal(raft_read_lease(c.nodes[1], 20), RK_EBUSY);
    /* A newer round answered by a quorum renews it. */
    h_drop_all(&c);
    h_heal(&c);
    h_tick(&c, 1, 1);
    h_stabilize(&c);
    assert_int_equal(raft_read_lease(c.nodes[1], 21), 0);
    h_free(&c);
}

/* Thesis §6.4.1 + §4.2.3: a follower that answered a lease round keeps
 * refusing votes for an election timeout; a crash must not shorten that.
 * Node 3 is cut off and campaigns; node 2 acked node 1's round, crashes
 * and restarts at once: it must not vote for 3 while 1's lease holds
 * (else 3 leads while 1 still answers lease reads). */
static void test_restarted_follower_keeps_lease_promise(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .check_quorum = true, .seed = 2};
    struct cluster c;
    h_init_ex(&c, 3, 0, &base);
    CLUSTER_ELECT(&c, 1);
    h_isolate(&c, 3);
    h_tick(&c, 3, 20); /* 3 times out and campaigns, unheard */
    h_drop_all(&c);
    h_tick(&c, 1, 1); /* a round answered by 2: the lease starts */
    h_stabilize(&c);
    assert_int_equal(raft_read_lease(c.nodes[1], 1), 0);
    h_crash(&c, 2);
    h_restart(&c, 2);
    h_heal(&c);
    c.cut[1][2] = c.cut[2][1] = c.cut[1][3] = c.cut[3][1] = true;
    h_tick(&c, 3, 20); /* 3 campaigns again; 2 hears it */
    for (int k = 0; k < 4; k++) {
        h_deliver_to(&c, 2);
        h_deliver_to(&c, 3);
    }
    if (raft_read_lease(c.nodes[1], 2) == 0)
        assert_int_not_equal(h_role(&c, 3), RAFT_LEADER);
    /* After an election timeout of its own, 2 may vote again. */
    h_tick(&c, 2, 10);
    h_tick(&c, 3, 20);
    for (int k = 0; k < 4; k++) {
        h_deliver_to(&c, 2);
        h_deliver_to(&c, 3);
    }
    assert_int_equal(h_role(&c, 3), RAFT_LEADER);
    h_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        H_TEST(test_single_node_read_immediate),
        H_TEST(test_read_waits_for_noop_commit),
        H_TEST(test_read_needs_heartbeat_quorum),
        H_TEST(test_read_not_served_without_quorum),
        H_TEST(test_reads_batched_in_one_round),
        H_TEST(test_old_round_ack_does_not_confirm),
        H_TEST(test_follower_read_not_leader),
        H_TEST(test_reads_dropped_on_step_down),
        H_TEST(test_read_index_covers_prior_writes),
        H_TEST(test_lease_read),
        H_TEST(test_lease_read_needs_check_quorum),
        H_TEST(test_lease_void_after_timeout_now),
        H_TEST(test_lease_ends_after_quorum_round_send),
        H_TEST(test_restarted_follower_keeps_lease_promise),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
