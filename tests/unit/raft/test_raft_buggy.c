/* The test-only bug switches really break safety (linked with rk_raft_buggy*). */
#include "raft_harness.h"

#ifdef EXPECT_BUG_COMMIT_OLD_TERM
/* Figure 8 (§3.6.2): with RAFT_BUG_COMMIT_OLD_TERM the leader commits an
 * entry of an earlier term as soon as a majority stores it. */
static void test_bug_commits_old_term_by_count(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .max_msg_bytes = 1, .seed = 1};
    struct cluster c;
    h_init_ex(&c, 3, 0, &base);
    CLUSTER_ELECT(&c, 1);
    assert_int_equal(h_propose(&c, 1, "xx", NULL), 0);
    h_ready(&c, 1);
    h_drop_all(&c);
    raft_campaign(c.nodes[2]);
    h_ready(&c, 2);
    h_deliver_to(&c, 3);
    h_deliver_to(&c, 1);
    h_deliver_to(&c, 2);
    assert_int_equal(h_role(&c, 2), RAFT_LEADER);
    h_ready(&c, 2);
    h_drop_all(&c);
    raft_campaign(c.nodes[1]);
    h_ready(&c, 1);
    h_deliver_to(&c, 3);
    int k = h_find(&c, 3, 1, RAFT_MSG_VOTE_RESP);
    assert_true(k >= 0);
    h_deliver(&c, (uint32_t)k);
    assert_int_equal(h_role(&c, 1), RAFT_LEADER);
    h_drop_all(&c);
    h_ready(&c, 1);
    h_drop_all(&c);
    raft_tick(c.nodes[1]);
    h_ready(&c, 1);
    for (int round = 0; round < 20; round++) {
        int m = h_find(&c, 1, 3, -1);
        if (m < 0)
            break;
        const struct raft_msg *mm = &c.q[m].m;
        if (mm->type == RAFT_MSG_APPEND && mm->index == 2 &&
            mm->n_entries > 0 && h_log_term(&c, 3, 2) == 1) {
            h_drop(&c, (uint32_t)m);
            continue;
        }
        h_deliver(&c, (uint32_t)m);
        h_ready(&c, 3);
        for (int r = h_find(&c, 3, 1, -1); r >= 0; r = h_find(&c, 3, 1, -1))
            h_deliver(&c, (uint32_t)r);
        h_ready(&c, 1);
        while (h_find(&c, 1, 2, -1) >= 0)
            h_drop(&c, (uint32_t)h_find(&c, 1, 2, -1));
    }
    /* The correct core stays at 1 here (test_raft_replication). */
    assert_int_equal(h_commit(&c, 1), 2);
    h_free(&c);
}
#endif

#ifdef EXPECT_BUG_ACK_BEFORE_SYNC
/* With RAFT_BUG_ACK_BEFORE_SYNC the append ack leaves before the sync. */
static void test_bug_ack_before_sync(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    c.allow_early_acks = true;
    CLUSTER_ELECT(&c, 1);
    /* The harness saw acks for entries not yet synced. */
    assert_true(c.early_acks > 0);
    assert_int_equal(h_propose(&c, 1, "x", NULL), 0);
    h_ready(&c, 1);
    int k = h_find(&c, 1, 2, RAFT_MSG_APPEND);
    assert_true(k >= 0);
    h_deliver(&c, (uint32_t)k);
    struct raft_ready rd;
    raft_ready(c.nodes[2], &rd);
    assert_int_equal(rd.n_msgs, 1);
    assert_int_equal(rd.msgs[0].type, RAFT_MSG_APPEND_RESP);
    assert_int_equal(rd.n_msgs_after_sync, 0);
    assert_int_equal(raft_memlog_persist_ready(c.logs[2], &rd), 0);
    raft_advance(c.nodes[2], &rd);
    h_free(&c);
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
#ifdef EXPECT_BUG_COMMIT_OLD_TERM
        H_TEST(test_bug_commits_old_term_by_count),
#endif
#ifdef EXPECT_BUG_ACK_BEFORE_SYNC
        H_TEST(test_bug_ack_before_sync),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
