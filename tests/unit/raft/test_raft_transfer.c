/* Leadership transfer with TimeoutNow (thesis §3.10). */
#include "raft_harness.h"

/* §3.10: an up-to-date target gets TimeoutNow at once and wins. */
static void test_transfer_to_up_to_date(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(raft_transfer_leader(c.nodes[1], 2), 0);
    h_ready(&c, 1);
    assert_int_equal(h_count(&c, 1, 2, RAFT_MSG_TIMEOUT_NOW), 1);
    h_stabilize(&c);
    assert_int_equal(h_leader(&c), 2);
    assert_int_equal(h_term(&c, 2), 2);
    assert_int_equal(h_role(&c, 1), RAFT_FOLLOWER);
    h_free(&c);
}

/* §3.10 step 1: the leader first brings a lagging target up to date. */
static void test_transfer_catches_up_target(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    h_isolate(&c, 3);
    h_propose(&c, 1, "a", NULL);
    h_propose(&c, 1, "b", NULL);
    h_stabilize(&c);
    h_heal(&c);
    assert_int_equal(raft_transfer_leader(c.nodes[1], 3), 0);
    h_ready(&c, 1);
    assert_int_equal(h_count(&c, 1, 3, RAFT_MSG_TIMEOUT_NOW), 0);
    assert_true(h_count(&c, 1, 3, RAFT_MSG_APPEND) >= 1);
    h_stabilize(&c);
    assert_int_equal(h_leader(&c), 3);
    assert_int_equal(h_last(&c, 3), 4); /* 3 entries + its no-op */
    h_check_applied(&c);
    h_free(&c);
}

/* §3.10: proposals are refused while the transfer is in progress. */
static void test_transfer_refuses_proposals(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    h_isolate(&c, 2);
    assert_int_equal(raft_transfer_leader(c.nodes[1], 2), 0);
    assert_int_equal(h_propose(&c, 1, "x", NULL), RK_EBUSY);
    struct raft_conf_change cc = {RAFT_CC_REMOVE, 3};
    assert_int_equal(raft_propose_conf(c.nodes[1], &cc, NULL), RK_EBUSY);
    assert_int_equal(raft_read_index(c.nodes[1], 1), RK_EBUSY);
    h_free(&c);
}

/* §3.10 step 3: the transfer is abandoned after an election timeout and
 * the leader accepts proposals again. */
static void test_transfer_aborts_after_timeout(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    h_isolate(&c, 2);
    assert_int_equal(raft_transfer_leader(c.nodes[1], 2), 0);
    for (int t = 0; t < 10; t++) {
        h_tick(&c, 1, 1);
        h_stabilize(&c);
    }
    assert_int_equal(h_role(&c, 1), RAFT_LEADER);
    assert_int_equal(h_propose(&c, 1, "x", NULL), 0);
    h_free(&c);
}

/* TimeoutNow campaigns bypass pre-vote and leader stickiness. */
static void test_transfer_with_prevote_and_check_quorum(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .pre_vote = true, .check_quorum = true,
                               .seed = 4};
    struct cluster c;
    h_init_ex(&c, 3, 0, &base);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(raft_transfer_leader(c.nodes[1], 3), 0);
    h_ready(&c, 1);
    h_deliver_to(&c, 3);
    assert_int_equal(h_role(&c, 3), RAFT_CANDIDATE);
    assert_int_equal(h_count(&c, 3, 0, RAFT_MSG_PREVOTE), 0);
    int k = h_find(&c, 3, 2, RAFT_MSG_VOTE);
    assert_true(k >= 0);
    h_stabilize(&c);
    assert_int_equal(h_leader(&c), 3);
    h_free(&c);
}

/* Transfers to non-members and learners are refused. */
static void test_transfer_target_validation(void **state)
{
    struct cluster c;
    h_init_ex(&c, 3, 2, NULL);
    CLUSTER_ELECT(&c, 1);
    struct raft_conf_change cc = {RAFT_CC_ADD_LEARNER, 3};
    assert_int_equal(raft_propose_conf(c.nodes[1], &cc, NULL), 0);
    h_stabilize(&c);
    assert_int_equal(raft_transfer_leader(c.nodes[1], 9), RK_ENOTFOUND);
    assert_int_equal(raft_transfer_leader(c.nodes[1], 3), RK_ENOTVOTER);
    assert_int_equal(raft_transfer_leader(c.nodes[2], 1), RK_ENOTLEADER);
    assert_int_equal(raft_transfer_leader(c.nodes[1], 1), 0);
    h_free(&c);
}

/* A TimeoutNow from a stale term is ignored. */
static void test_stale_timeout_now_ignored(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    CLUSTER_ELECT(&c, 2);
    struct raft_msg t = h_msg(1, 3, RAFT_MSG_TIMEOUT_NOW, 1);
    assert_int_equal(raft_step(c.nodes[3], &t), RK_ESTALE);
    assert_int_equal(h_role(&c, 3), RAFT_FOLLOWER);
    h_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        H_TEST(test_transfer_to_up_to_date),
        H_TEST(test_transfer_catches_up_target),
        H_TEST(test_transfer_refuses_proposals),
        H_TEST(test_transfer_aborts_after_timeout),
        H_TEST(test_transfer_with_prevote_and_check_quorum),
        H_TEST(test_transfer_target_validation),
        H_TEST(test_stale_timeout_now_ignored),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
