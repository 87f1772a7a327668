/* Single-server membership changes and learners (thesis §4.1-§4.2). */
#include "raft_harness.h"

static int conf(struct cluster *c, raft_id l, int type, raft_id node,
                raft_index *idx)
{
    struct raft_conf_change cc = {.type = (uint8_t)type, .node = node};
    return raft_propose_conf(c->nodes[l], &cc, idx);
}

static bool has_voter(struct cluster *c, raft_id i, raft_id v)
{
    struct raft_status st;
    h_status(c, i, &st);
    for (uint32_t k = 0; k < st.conf.n_voters; k++)
        if (st.conf.voters[k] == v)
            return true;
    return false;
}

static bool has_learner(struct cluster *c, raft_id i, raft_id v)
{
    struct raft_status st;
    h_status(c, i, &st);
    for (uint32_t k = 0; k < st.conf.n_learners; k++)
        if (st.conf.learners[k] == v)
            return true;
    return false;
}

/* §4.2.1: a learner receives the log but neither votes nor counts. */
static void test_add_learner_replicates(void **state)
{
    struct cluster c;
    h_init_ex(&c, 3, 2, NULL);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(conf(&c, 1, RAFT_CC_ADD_LEARNER, 3, NULL), 0);
    h_stabilize(&c);
    h_propose(&c, 1, "a", NULL);
    h_stabilize(&c);
    assert_true(has_learner(&c, 3, 3));
    assert_false(has_voter(&c, 3, 3));
    assert_int_equal(h_commit(&c, 3), 3);
    assert_string_equal(c.app[3][2].data, "a");
    h_free(&c);
}

/* §4.2.1: acks from a learner never make a commit quorum. */
static void test_learner_does_not_count(void **state)
{
    struct cluster c;
    h_init_ex(&c, 3, 2, NULL);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(conf(&c, 1, RAFT_CC_ADD_LEARNER, 3, NULL), 0);
    h_stabilize(&c);
    h_isolate(&c, 2);
    h_propose(&c, 1, "a", NULL);
    h_stabilize(&c);
    assert_int_equal(h_last(&c, 3), 3);
    assert_int_equal(h_commit(&c, 1), 2);
    h_heal(&c);
    h_tick(&c, 1, 1);
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 1), 3);
    h_free(&c);
}

/* §4.1: a configuration takes effect as soon as its entry is appended,
 * before it commits. */
static void test_conf_effective_on_append(void **state)
{
    struct cluster c;
    h_init_ex(&c, 4, 3, NULL);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(conf(&c, 1, RAFT_CC_ADD_VOTER, 4, NULL), 0);
    assert_true(has_voter(&c, 1, 4));
    assert_int_equal(h_commit(&c, 1), 1);
    /* The follower switches when it appends the entry, uncommitted. */
    h_ready(&c, 1);
    h_deliver_to(&c, 2);
    assert_true(has_voter(&c, 2, 4));
    h_stabilize(&c);
    assert_true(has_voter(&c, 4, 4));
    h_free(&c);
}

/* §4.1: one change at a time; the next waits for the commit. */
static void test_one_change_at_a_time(void **state)
{
    struct cluster c;
    h_init_ex(&c, 5, 3, NULL);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(conf(&c, 1, RAFT_CC_ADD_VOTER, 4, NULL), 0);
    assert_int_equal(conf(&c, 1, RAFT_CC_ADD_VOTER, 5, NULL), RK_EBUSY);
    h_stabilize(&c);
    assert_int_equal(conf(&c, 1, RAFT_CC_ADD_VOTER, 5, NULL), 0);
    h_stabilize(&c);
    struct raft_status st;
    h_status(&c, 5, &st);
    assert_int_equal(st.conf.n_voters, 5);
    h_free(&c);
}

/* §4.2.1: a caught-up learner is promoted to voter and then counts. */
static void test_promote_learner(void **state)
{
    struct cluster c;
    h_init_ex(&c, 3, 2, NULL);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(conf(&c, 1, RAFT_CC_ADD_LEARNER, 3, NULL), 0);
    h_stabilize(&c);
    assert_int_equal(conf(&c, 1, RAFT_CC_PROMOTE, 3, NULL), 0);
    h_stabilize(&c);
    assert_true(has_voter(&c, 3, 3));
    assert_false(has_learner(&c, 3, 3));
    /* Now node 3 replaces the partitioned node 2 in the quorum. */
    h_isolate(&c, 2);
    h_propose(&c, 1, "q", NULL);
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 1), h_last(&c, 1));
    h_free(&c);
}

/* §4.1: removing a follower shrinks the quorum. */
static void test_remove_follower(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(conf(&c, 1, RAFT_CC_REMOVE, 3, NULL), 0);
    h_stabilize(&c);
    assert_false(has_voter(&c, 1, 3));
    h_isolate(&c, 3);
    h_isolate(&c, 2);
    h_propose(&c, 1, "x", NULL);
    h_stabilize(&c);
    /* With voters {1,2}, node 1 alone cannot commit. */
    assert_int_equal(h_commit(&c, 1), 2);
    h_heal(&c);
    h_isolate(&c, 3);
    h_tick(&c, 1, 1);
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 1), 3);
    h_free(&c);
}

/* §4.2.2: a leader that removes itself keeps leading until the entry is
 * committed (without counting itself), then steps down. */
static void test_removed_leader_steps_down(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    raft_index idx;
    assert_int_equal(conf(&c, 1, RAFT_CC_REMOVE, 1, &idx), 0);
    assert_int_equal(h_role(&c, 1), RAFT_LEADER);
    h_stabilize(&c);
    assert_int_equal(h_role(&c, 1), RAFT_FOLLOWER);
    assert_true(h_commit(&c, 2) >= idx);
    /* It never campaigns again. */
    h_tick(&c, 1, 50);
    assert_int_equal(h_role(&c, 1), RAFT_FOLLOWER);
    for (int t = 0; t < 60 && (h_leader(&c) == 0 || h_leader(&c) == 1); t++) {
        h_tick(&c, 2, 1);
        h_tick(&c, 3, 1);
        h_stabilize(&c);
    }
    raft_id l = h_leader(&c);
    assert_true(l == 2 || l == 3);
    h_free(&c);
}

/* §4.1: if the conf entry is truncated from the log, the previous
 * configuration comes back. */
static void test_conf_reverts_on_truncation(void **state)
{
    struct cluster c;
    h_init_ex(&c, 4, 3, NULL);
    CLUSTER_ELECT(&c, 1);
    uint8_t buf[RAFT_CONF_CHANGE_SIZE];
    struct raft_conf_change cc = {RAFT_CC_ADD_VOTER, 4};
    raft_conf_change_encode(&cc, buf);
    struct raft_entry e = {.term = 1, .index = 2, .type = RAFT_ENTRY_CONF,
                           .len = RAFT_CONF_CHANGE_SIZE, .data = buf};
    struct raft_msg a = h_msg(1, 2, RAFT_MSG_APPEND, 1);
    a.index = 1;
    a.log_term = 1;
    a.commit = 1;
    a.entries = &e;
    a.n_entries = 1;
    assert_int_equal(raft_step(c.nodes[2], &a), 0);
    assert_true(has_voter(&c, 2, 4));
    /* A leader of term 2 overwrites index 2 with a normal entry. */
    struct raft_entry e2 = {.term = 2, .index = 2, .type = RAFT_ENTRY_NORMAL,
                            .len = 1, .data = "n"};
    struct raft_msg b = h_msg(3, 2, RAFT_MSG_APPEND, 2);
    b.index = 1;
    b.log_term = 1;
    b.entries = &e2;
    b.n_entries = 1;
    assert_int_equal(raft_step(c.nodes[2], &b), 0);
    assert_false(has_voter(&c, 2, 4));
    struct raft_status st;
    h_status(&c, 2, &st);
    assert_int_equal(st.conf.n_voters, 3);
    h_free(&c);
}

/* Validation of proposals: duplicates, unknown nodes, last voter. */
static void test_conf_change_validation(void **state)
{
    struct cluster c;
    h_init_ex(&c, 2, 1, NULL);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(conf(&c, 1, RAFT_CC_ADD_VOTER, 1, NULL), RK_EEXIST);
    assert_int_equal(conf(&c, 1, RAFT_CC_REMOVE, 9, NULL), RK_ENOTFOUND);
    assert_int_equal(conf(&c, 1, RAFT_CC_REMOVE, 1, NULL), RK_EINVAL);
    assert_int_equal(conf(&c, 1, RAFT_CC_PROMOTE, 1, NULL), RK_EEXIST);
    assert_int_equal(conf(&c, 1, RAFT_CC_PROMOTE, 2, NULL), RK_ENOTFOUND);
    assert_int_equal(conf(&c, 1, 9, 2, NULL), RK_EINVAL);
    assert_int_equal(conf(&c, 1, RAFT_CC_ADD_VOTER, 0, NULL), RK_EINVAL);
    assert_int_equal(conf(&c, 2, RAFT_CC_ADD_VOTER, 3, NULL), RK_ENOTLEADER);
    h_free(&c);
}

/* A node created empty learns the bootstrap configuration from the
 * leader's first append and reports it for persistence. */
static void test_joiner_learns_bootstrap_conf(void **state)
{
    struct cluster c;
    h_init_ex(&c, 3, 2, NULL);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(conf(&c, 1, RAFT_CC_ADD_VOTER, 3, NULL), 0);
    h_ready(&c, 1);
    int k = -1;
    for (int round = 0; round < 10; round++) {
        k = h_find(&c, 1, 3, RAFT_MSG_APPEND);
        assert_true(k >= 0);
        if (c.q[k].m.index == 0)
            break;
        /* The first probe (at the leader's last index) is rejected. */
        assert_int_equal(h_deliver(&c, (uint32_t)k), 0);
        h_ready(&c, 3);
        h_deliver_to(&c, 1);
    }
    assert_int_equal(c.q[k].m.index, 0);
    assert_int_equal(c.q[k].m.snap.conf.n_voters, 2);
    assert_int_equal(h_deliver(&c, (uint32_t)k), 0);
    struct raft_ready rd;
    raft_ready(c.nodes[3], &rd);
    assert_true(rd.conf_changed);
    assert_int_equal(rd.conf.n_voters, 2);
    assert_int_equal(raft_memlog_persist_ready(c.logs[3], &rd), 0);
    raft_advance(c.nodes[3], &rd);
    assert_true(has_voter(&c, 3, 3));
    struct raft_status st;
    h_status(&c, 3, &st);
    assert_int_equal(st.conf.n_voters, 3);
    /* Leaders and bootstrapped nodes never report a change. */
    h_stabilize(&c);
    h_crash(&c, 3);
    h_restart(&c, 3);
    h_status(&c, 3, &st);
    assert_int_equal(st.conf.n_voters, 3);
    h_free(&c);
}

/* A joiner that lost its learned bootstrap conf (torn write) must not
 * derive a configuration from its log alone: it does not campaign until a
 * probing leader hands the bootstrap conf again. */
static void test_joiner_without_bootstrap_conf_waits(void **state)
{
    struct cluster c;
    h_init_ex(&c, 3, 2, NULL);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(conf(&c, 1, RAFT_CC_ADD_VOTER, 3, NULL), 0);
    h_stabilize(&c);
    assert_true(has_voter(&c, 3, 3));
    /* Lose the bootstrap conf record but keep the log. */
    struct raft_conf_state empty;
    memset(&empty, 0, sizeof(empty));
    raft_memlog_set_conf(c.logs[3], &empty);
    h_crash(&c, 3);
    h_restart(&c, 3);
    struct raft_status st;
    h_status(&c, 3, &st);
    assert_int_equal(st.conf.n_voters, 1); /* {3}: replayed from the log */
    assert_int_equal(raft_campaign(c.nodes[3]), RK_ENOTVOTER);
    h_isolate(&c, 3);
    h_tick(&c, 3, 50);
    assert_int_equal(h_role(&c, 3), RAFT_FOLLOWER);
    h_heal(&c);
    h_drop_all(&c);
    /* The leader probes it (after an unreachable report) and the
     * bootstrap conf comes back. */
    raft_report_unreachable(c.nodes[1], 3);
    h_propose(&c, 1, "x", NULL);
    h_stabilize(&c);
    h_status(&c, 3, &st);
    assert_int_equal(st.conf.n_voters, 3);
    struct raft_conf_state boot;
    raft_memlog_conf(c.logs[3], &boot);
    assert_int_equal(boot.n_voters, 2);
    h_free(&c);
}

/* §4.1: after a restart the configuration is rebuilt from the log. */
static void test_conf_replayed_after_restart(void **state)
{
    struct cluster c;
    h_init_ex(&c, 3, 2, NULL);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(conf(&c, 1, RAFT_CC_ADD_VOTER, 3, NULL), 0);
    h_stabilize(&c);
    h_crash(&c, 2);
    h_restart(&c, 2);
    assert_true(has_voter(&c, 2, 3));
    struct raft_status st;
    h_status(&c, 2, &st);
    assert_int_equal(st.conf.n_voters, 3);
    h_free(&c);
}

/* A conf entry lost in a crash (never synced) is not applied on restart. */
static void test_unsynced_conf_lost_in_crash(void **state)
{
    struct cluster c;
    h_init_ex(&c, 3, 2, NULL);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(conf(&c, 1, RAFT_CC_ADD_VOTER, 3, NULL), 0);
    struct raft_ready rd;
    raft_ready(c.nodes[1], &rd);
    raft_memlog_append(c.logs[1], rd.entries, rd.n_entries);
    raft_advance(c.nodes[1], &rd);
    h_crash(&c, 1);
    h_restart(&c, 1);
    assert_false(has_voter(&c, 1, 3));
    h_free(&c);
}

/* Learners ignore TimeoutNow: they must not campaign. */
static void test_learner_ignores_timeout_now(void **state)
{
    struct cluster c;
    h_init_ex(&c, 3, 2, NULL);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(conf(&c, 1, RAFT_CC_ADD_LEARNER, 3, NULL), 0);
    h_stabilize(&c);
    struct raft_msg t = h_msg(1, 3, RAFT_MSG_TIMEOUT_NOW, 1);
    assert_int_equal(raft_step(c.nodes[3], &t), RK_ENOTVOTER);
    assert_int_equal(h_role(&c, 3), RAFT_FOLLOWER);
    h_free(&c);
}

/* raft_conf_at answers the configuration at an applied index. */
static void test_conf_at_index(void **state)
{
    struct cluster c;
    h_init_ex(&c, 3, 2, NULL);
    CLUSTER_ELECT(&c, 1);
    raft_index idx;
    assert_int_equal(conf(&c, 1, RAFT_CC_ADD_LEARNER, 3, &idx), 0);
    struct raft_conf_state cs;
    assert_int_equal(raft_conf_at(c.nodes[1], idx - 1, &cs), 0);
    assert_int_equal(cs.n_learners, 0);
    assert_int_equal(raft_conf_at(c.nodes[1], idx, &cs), 0);
    assert_int_equal(cs.n_learners, 1);
    assert_int_equal(raft_conf_at(c.nodes[1], idx + 5, &cs), RK_EUNAVAIL_LOG);
    h_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        H_TEST(test_add_learner_replicates),
        H_TEST(test_learner_does_not_count),
        H_TEST(test_conf_effective_on_append),
        H_TEST(test_one_change_at_a_time),
        H_TEST(test_promote_learner),
        H_TEST(test_remove_follower),
        H_TEST(test_removed_leader_steps_down),
        H_TEST(test_conf_reverts_on_truncation),
        H_TEST(test_conf_change_validation),
        H_TEST(test_joiner_learns_bootstrap_conf),
        H_TEST(test_conf_replayed_after_restart),
        H_TEST(test_joiner_without_bootstrap_conf_waits),
        H_TEST(test_unsynced_conf_lost_in_crash),
        H_TEST(test_learner_ignores_timeout_now),
        H_TEST(test_conf_at_index),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
