/* Log replication, commitment and safety (thesis §3.5, §3.6, Figure 8). */
#include "raft_node_impl.h" /* test_arena_block_reused looks at the log */
#include "raft_harness.h"

#include <stdio.h>

static raft_index propose_ok(struct cluster *c, raft_id i, const char *s)
{
    raft_index idx = 0;
    assert_int_equal(h_propose(c, i, s, &idx), 0);
    return idx;
}

/* §3.5: an entry replicated on a majority is committed and applied
 * everywhere in the same order. */
static void test_replicate_and_commit(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    raft_index idx = propose_ok(&c, 1, "hello");
    assert_int_equal(idx, 2);
    h_stabilize(&c);
    for (raft_id i = 1; i <= 3; i++) {
        assert_int_equal(h_commit(&c, i), 2);
        assert_int_equal(c.n_app[i], 2);
        assert_string_equal(c.app[i][1].data, "hello");
    }
    h_free(&c);
}

/* Durability: a follower acknowledges an append only after its sync. */
static void test_follower_ack_after_sync(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    propose_ok(&c, 1, "x");
    h_ready(&c, 1);
    int k = h_find(&c, 1, 2, RAFT_MSG_APPEND);
    assert_true(k >= 0);
    assert_int_equal(h_deliver(&c, (uint32_t)k), 0);
    struct raft_ready rd;
    raft_ready(c.nodes[2], &rd);
    assert_int_equal(rd.n_entries, 1);
    assert_int_equal(rd.n_msgs, 0);
    assert_int_equal(rd.n_msgs_after_sync, 1);
    assert_int_equal(rd.msgs_after_sync[0].type, RAFT_MSG_APPEND_RESP);
    assert_int_equal(rd.msgs_after_sync[0].index, 2);
    assert_true(rd.must_sync);
    assert_int_equal(raft_memlog_persist_ready(c.logs[2], &rd), 0);
    raft_advance(c.nodes[2], &rd);
    h_free(&c);
}

/* Durability: the leader counts its own log only after its sync. */
static void test_leader_counts_itself_after_sync(void **state)
{
    struct cluster c;
    h_init(&c, 2);
    CLUSTER_ELECT(&c, 1);
    propose_ok(&c, 1, "x");
    struct raft_ready rd;
    raft_ready(c.nodes[1], &rd);
    assert_int_equal(rd.n_entries, 1);
    assert_int_equal(rd.n_msgs, 1);
    /* Deliver to the follower while the leader's write is in flight. */
    assert_int_equal(raft_step(c.nodes[2], &rd.msgs[0]), 0);
    h_ready(&c, 2);
    h_deliver_to(&c, 1); /* its ack; the leader's ready is outstanding */
    assert_int_equal(h_commit(&c, 1), 1);
    assert_int_equal(raft_memlog_persist_ready(c.logs[1], &rd), 0);
    raft_advance(c.nodes[1], &rd);
    assert_int_equal(h_commit(&c, 1), 2);
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 2), 2);
    h_free(&c);
}

/* §3.5: followers learn the commit index from later appends/heartbeats. */
static void test_commit_propagates(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    propose_ok(&c, 1, "a");
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 2), 2);
    assert_int_equal(h_commit(&c, 3), 2);
    h_free(&c);
}

/* The entries a round commits are applied from the core's memory (its
 * stable cache), not read back from the log store; once applied they leave
 * it, and a follower that fell behind is caught up from the store. */
static void test_committed_entries_from_memory(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    h_stabilize(&c);
    uint64_t reads = h_entries_reads;
    propose_ok(&c, 1, "a");
    propose_ok(&c, 1, "b");
    h_stabilize(&c);
    for (raft_id i = 1; i <= 3; i++) {
        assert_int_equal(h_commit(&c, i), 3);
        assert_int_equal(c.n_app[i], 3);
        assert_string_equal(c.app[i][1].data, "a");
        assert_string_equal(c.app[i][2].data, "b");
    }
    assert_true(h_entries_reads == reads);

    h_isolate(&c, 3);
    propose_ok(&c, 1, "c");
    propose_ok(&c, 1, "d");
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 1), 5);
    h_heal(&c);
    h_tick(&c, 1, 1); /* a heartbeat finds node 3 behind */
    h_stabilize(&c);
    assert_true(h_entries_reads > reads);
    assert_int_equal(h_commit(&c, 3), 5);
    assert_string_equal(c.app[3][4].data, "d");
    h_check_applied(&c);
    h_free(&c);
}

/* White box: a retired arena block is kept as the log's spare and is the
 * next block, not a new allocation (a 256 KiB block freed and another
 * allocated per block of payload faulted fresh pages in: raft-bench lost a
 * quarter of its rate once the stable cache held blocks until applied). */
static void propose_big(struct cluster *c, raft_id i)
{
    static char big[64 * 1024];
    raft_index idx;
    memset(big, 'x', sizeof big);
    assert_int_equal(raft_propose(c->nodes[i], big, sizeof big, &idx), 0);
    h_stabilize(c);
}

static void test_arena_block_reused(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    h_stabilize(&c);
    struct raft_log *l = &c.nodes[1]->log;
    /* Four 64 KiB entries fill the first block; the fifth starts another
     * and, once the four are applied, the first is the spare. */
    for (int i = 0; i < 5; i++)
        propose_big(&c, 1);
    propose_ok(&c, 1, "x"); /* a round more: the last ready's refs go */
    h_stabilize(&c);
    struct raft_blk *first = l->spare;
    assert_non_null(first);
    assert_ptr_not_equal(l->arena, first);
    for (int i = 0; i < 4; i++)
        propose_big(&c, 1);
    assert_ptr_equal(l->arena, first);
    h_check_applied(&c);
    h_free(&c);
}

/* §3.5: a follower deletes a conflicting suffix and takes the leader's. */
static void test_follower_truncates_conflict(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    h_isolate(&c, 1);
    propose_ok(&c, 1, "lost1");
    propose_ok(&c, 1, "lost2");
    h_ready(&c, 1);
    h_drop_all(&c);
    assert_int_equal(h_last(&c, 1), 3);
    h_heal(&c);
    CLUSTER_ELECT(&c, 2); /* term 2, log 1..2(noop) */
    propose_ok(&c, 2, "kept");
    h_stabilize(&c);
    assert_int_equal(h_last(&c, 1), 3);
    assert_int_equal(h_log_term(&c, 1, 2), 2);
    assert_int_equal(h_log_term(&c, 1, 3), 2);
    assert_int_equal(h_commit(&c, 1), 3);
    assert_string_equal(c.app[1][2].data, "kept");
    h_check_applied(&c);
    h_free(&c);
}

/* §3.5: the consistency check rejects an append whose previous entry does
 * not match, with a hint. */
static void test_reject_mismatched_prev(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    struct raft_msg a = h_msg(1, 2, RAFT_MSG_APPEND, 1);
    a.index = 5;
    a.log_term = 1;
    assert_int_equal(raft_step(c.nodes[2], &a), 0);
    h_ready(&c, 2);
    int k = h_find(&c, 2, 1, RAFT_MSG_APPEND_RESP);
    assert_true(k >= 0);
    assert_true(c.q[k].m.reject);
    assert_int_equal(c.q[k].m.index, 5);
    /* Hint: our last index (1) and its term. */
    assert_int_equal(c.q[k].m.hint_index, 1);
    assert_int_equal(c.q[k].m.hint_term, 1);
    h_free(&c);
}

/* Fast backtracking (thesis §5.3 / etcd hint): a follower with a long
 * conflicting tail is repaired in a few round trips, not one per entry. */
static void test_fast_backtracking(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    /* Node 1 (term 1) writes 50 entries only it has. */
    h_isolate(&c, 1);
    for (int i = 0; i < 50; i++)
        propose_ok(&c, 1, "stale");
    h_ready(&c, 1);
    h_drop_all(&c);
    h_heal(&c);
    h_isolate(&c, 1);
    CLUSTER_ELECT(&c, 2);
    for (int i = 0; i < 5; i++)
        propose_ok(&c, 2, "new");
    h_stabilize(&c);
    h_heal(&c);
    uint32_t before = c.sent[RAFT_MSG_APPEND_RESP];
    /* Node 1 learns the new term from a heartbeat and gets repaired. */
    raft_tick(c.nodes[2]);
    h_stabilize(&c);
    uint32_t rejects = c.sent[RAFT_MSG_APPEND_RESP] - before;
    assert_true(rejects <= 8);
    assert_int_equal(h_last(&c, 1), h_last(&c, 2));
    assert_int_equal(h_commit(&c, 1), h_commit(&c, 2));
    h_check_applied(&c);
    h_free(&c);
}

/* Hint when the follower's log is shorter: it names its last index. */
static void test_hint_for_short_follower_log(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    h_isolate(&c, 3);
    for (int i = 0; i < 10; i++)
        propose_ok(&c, 1, "x");
    h_stabilize(&c);
    h_heal(&c);
    /* Direct probe far ahead of node 3. */
    struct raft_msg a = h_msg(1, 3, RAFT_MSG_APPEND, 1);
    a.index = 11;
    a.log_term = 1;
    raft_step(c.nodes[3], &a);
    h_ready(&c, 3);
    int k = h_find(&c, 3, 1, RAFT_MSG_APPEND_RESP);
    assert_true(c.q[k].m.reject);
    assert_int_equal(c.q[k].m.hint_index, 1);
    h_drop_all(&c);
    raft_tick(c.nodes[1]);
    h_stabilize(&c);
    assert_int_equal(h_last(&c, 3), 11);
    h_free(&c);
}

/* §10.2.1: in replicate state the leader pipelines appends without
 * waiting for acks. */
static void test_pipelining(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    for (int i = 0; i < 5; i++) {
        propose_ok(&c, 1, "p");
        h_ready(&c, 1);
    }
    assert_int_equal(h_count(&c, 1, 2, RAFT_MSG_APPEND), 5);
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 2), 6);
    h_free(&c);
}

/* Flow control: at most max_inflight_msgs appends are outstanding. */
static void test_inflight_window(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .max_inflight_msgs = 2, .seed = 1};
    struct cluster c;
    h_init_ex(&c, 3, 0, &base);
    CLUSTER_ELECT(&c, 1);
    for (int i = 0; i < 6; i++) {
        propose_ok(&c, 1, "w");
        h_ready(&c, 1);
    }
    assert_int_equal(h_count(&c, 1, 2, RAFT_MSG_APPEND), 2);
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 2), 7);
    assert_int_equal(h_last(&c, 3), 7);
    h_free(&c);
}

/* Flow control: one append carries at most max_msg_bytes of payload. */
static void test_max_msg_bytes_splits(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .max_msg_bytes = 10, .seed = 1};
    struct cluster c;
    h_init_ex(&c, 2, 0, &base);
    CLUSTER_ELECT(&c, 1);
    for (int i = 0; i < 4; i++)
        propose_ok(&c, 1, "12345678"); /* 8 bytes each */
    h_ready(&c, 1);
    assert_int_equal(h_count(&c, 1, 2, RAFT_MSG_APPEND), 4);
    int k = h_find(&c, 1, 2, RAFT_MSG_APPEND);
    assert_int_equal(c.q[k].m.n_entries, 1);
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 2), 5);
    h_free(&c);
}

/* Probe state: one append at a time until the follower answers. */
static void test_probe_one_at_a_time(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    /* Become leader without delivering the no-op appends. */
    CLUSTER_ELECT_BY(&c, 1, 2);
    h_ready(&c, 1);
    uint32_t before = h_count(&c, 1, 3, RAFT_MSG_APPEND);
    assert_int_equal(before, 1);
    propose_ok(&c, 1, "a");
    propose_ok(&c, 1, "b");
    h_ready(&c, 1);
    /* Node 3 is still probed: no new append before it answers. */
    assert_int_equal(h_count(&c, 1, 3, RAFT_MSG_APPEND), 1);
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 3), 3);
    h_free(&c);
}

/* Heartbeats carry min(match, commit) so a follower never commits entries
 * it may not hold. */
static void test_heartbeat_commit_capped_by_match(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    h_isolate(&c, 3);
    propose_ok(&c, 1, "a");
    h_stabilize(&c);
    h_heal(&c);
    raft_tick(c.nodes[1]);
    h_ready(&c, 1);
    int k = h_find(&c, 1, 3, RAFT_MSG_HEARTBEAT);
    assert_true(k >= 0);
    assert_int_equal(c.q[k].m.commit, 1);
    k = h_find(&c, 1, 2, RAFT_MSG_HEARTBEAT);
    assert_int_equal(c.q[k].m.commit, 2);
    h_free(&c);
}

/* Commit notices: a replicating follower that holds everything learns a
 * new commit index from a heartbeat with context 0 (no empty append), once
 * its own ack is in, and does not answer it; a proposal made before the
 * leader's next ready carries the commit in its append instead. */
static void test_commit_notice(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    h_stabilize(&c);
    propose_ok(&c, 1, "x");
    h_ready(&c, 1);
    h_deliver_to(&c, 2);
    h_deliver_to(&c, 3);
    int k = h_find(&c, 2, 1, RAFT_MSG_APPEND_RESP);
    assert_true(k >= 0);
    assert_int_equal(h_deliver(&c, (uint32_t)k), 0);
    assert_int_equal(h_commit(&c, 1), 2);
    h_ready(&c, 1);
    /* Node 2 acked: a notice. Node 3's ack is on its way: nothing yet. */
    assert_int_equal(h_count(&c, 1, 2, RAFT_MSG_APPEND), 0);
    assert_int_equal(h_count(&c, 1, 2, RAFT_MSG_HEARTBEAT), 1);
    k = h_find(&c, 1, 2, RAFT_MSG_HEARTBEAT);
    assert_int_equal(c.q[k].m.context, 0);
    assert_int_equal(c.q[k].m.commit, 2);
    assert_int_equal(h_count(&c, 1, 3, RAFT_MSG_APPEND), 0);
    assert_int_equal(h_count(&c, 1, 3, RAFT_MSG_HEARTBEAT), 0);
    h_deliver_to(&c, 1); /* node 3's ack */
    assert_int_equal(h_count(&c, 1, 3, RAFT_MSG_APPEND), 0);
    k = h_find(&c, 1, 3, RAFT_MSG_HEARTBEAT);
    assert_true(k >= 0);
    assert_int_equal(c.q[k].m.context, 0);
    assert_int_equal(c.q[k].m.commit, 2);
    h_deliver_to(&c, 2);
    h_deliver_to(&c, 3);
    assert_int_equal(h_commit(&c, 2), 2);
    assert_int_equal(h_commit(&c, 3), 2);
    /* Not answered. */
    assert_int_equal(h_count(&c, 0, 1, RAFT_MSG_HEARTBEAT_RESP), 0);
    assert_int_equal(h_count(&c, 0, 1, RAFT_MSG_APPEND_RESP), 0);

    /* The ack of "y" commits it; "z" is proposed before the next ready. */
    propose_ok(&c, 1, "y");
    h_ready(&c, 1);
    h_deliver_to(&c, 2);
    h_deliver_to(&c, 3);
    /* Both acks are stepped, no ready in between. */
    while ((k = h_find(&c, 0, 1, RAFT_MSG_APPEND_RESP)) >= 0)
        assert_int_equal(h_deliver(&c, (uint32_t)k), 0);
    assert_int_equal(h_commit(&c, 1), 3);
    propose_ok(&c, 1, "z");
    h_ready(&c, 1);
    for (raft_id i = 2; i <= 3; i++) {
        assert_int_equal(h_count(&c, 1, i, RAFT_MSG_HEARTBEAT), 0);
        k = h_find(&c, 1, i, RAFT_MSG_APPEND);
        assert_true(k >= 0);
        assert_int_equal(c.q[k].m.n_entries, 1);
        assert_int_equal(c.q[k].m.commit, 3);
    }
    h_stabilize(&c);
    for (raft_id i = 1; i <= 3; i++)
        assert_int_equal(h_commit(&c, i), 4);
    h_check_applied(&c);
    h_free(&c);
}

/* Figure 8 (§3.6.2): an entry from an earlier term that reached a majority
 * is not committed by counting; it commits with the current term's entry. */
static void test_figure8_no_commit_of_old_term_by_count(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .max_msg_bytes = 1, .seed = 1};
    struct cluster c;
    h_init_ex(&c, 3, 0, &base);
    CLUSTER_ELECT(&c, 1); /* index 1, term 1 everywhere */
    /* Term 1: "xx" at index 2 reaches nobody. */
    propose_ok(&c, 1, "xx");
    h_ready(&c, 1);
    h_drop_all(&c);
    /* Term 2: node 2 wins with node 3 and writes a no-op nobody gets. */
    raft_campaign(c.nodes[2]);
    h_ready(&c, 2);
    h_deliver_to(&c, 3);
    h_deliver_to(&c, 1); /* node 1 steps down to term 2 and rejects */
    h_deliver_to(&c, 2);
    assert_int_equal(h_role(&c, 2), RAFT_LEADER);
    h_ready(&c, 2);
    h_drop_all(&c);
    /* Term 3: node 1 wins with node 3 (its log ends with term 1, index 2). */
    assert_int_equal(h_role(&c, 1), RAFT_FOLLOWER);
    raft_campaign(c.nodes[1]);
    h_ready(&c, 1);
    h_deliver_to(&c, 3);
    int k = h_find(&c, 3, 1, RAFT_MSG_VOTE_RESP);
    assert_true(k >= 0);
    h_deliver(&c, (uint32_t)k);
    assert_int_equal(h_role(&c, 1), RAFT_LEADER);
    assert_int_equal(h_term(&c, 1), 3);
    h_drop_all(&c);
    h_ready(&c, 1);
    h_drop_all(&c);
    /* Node 1 holds [1:t1, 2:t1 "x", 3:t3 noop]. Bring node 3 up to index 2
     * only: one entry per message (max_msg_bytes=1). */
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
    assert_int_equal(h_log_term(&c, 3, 2), 1);
    struct raft_status st;
    h_status(&c, 1, &st);
    /* Index 2 (term 1) is on nodes 1 and 3, a majority, yet uncommitted. */
    assert_int_equal(st.commit, 1);
    /* The dropped append is found missing at the next heartbeat. */
    h_tick(&c, 1, 1);
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 1), 3);
    assert_int_equal(h_commit(&c, 3), 3);
    h_check_applied(&c);
    h_free(&c);
}

/* §3.5: a follower never commits past the last entry it got from the
 * leader in this append. */
static void test_follower_commit_capped_by_lastnew(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    struct raft_entry e = {.term = 1, .index = 2, .type = RAFT_ENTRY_NORMAL,
                           .len = 1, .data = "z"};
    struct raft_msg a = h_msg(1, 2, RAFT_MSG_APPEND, 1);
    a.index = 1;
    a.log_term = 1;
    a.commit = 10;
    a.entries = &e;
    a.n_entries = 1;
    assert_int_equal(raft_step(c.nodes[2], &a), 0);
    assert_int_equal(h_commit(&c, 2), 2);
    h_free(&c);
}

/* State machine safety under churn: repeated leader changes and partitions
 * never apply different entries at one index. */
static void test_log_matching_under_churn(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .pre_vote = true, .check_quorum = true,
                               .seed = 9};
    struct cluster c;
    h_init_ex(&c, 5, 0, &base);
    CLUSTER_ELECT(&c, 1);
    char buf[16];
    for (int round = 0; round < 30; round++) {
        raft_id l = h_leader(&c);
        if (l) {
            snprintf(buf, sizeof(buf), "v%d", round);
            raft_propose(c.nodes[l], buf, strlen(buf), NULL);
        }
        if (round % 5 == 0) {
            h_heal(&c);
            h_isolate(&c, (raft_id)(1 + round / 5 % 5));
        }
        for (int t = 0; t < 4; t++) {
            h_tick_all(&c, 1);
            h_stabilize(&c);
        }
    }
    h_heal(&c);
    for (int t = 0; t < 40; t++) {
        h_tick_all(&c, 1);
        h_stabilize(&c);
    }
    raft_id l = h_leader(&c);
    assert_true(l != 0);
    for (raft_id i = 1; i <= 5; i++)
        assert_int_equal(h_commit(&c, i), h_commit(&c, l));
    h_check_applied(&c);
    h_free(&c);
}

/* Crash recovery: unsynced entries may be lost, committed ones never. */
static void test_crash_keeps_committed(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    propose_ok(&c, 1, "durable");
    h_stabilize(&c);
    for (raft_id i = 1; i <= 3; i++) {
        h_crash(&c, i);
        h_restart(&c, i);
    }
    for (int t = 0; t < 60 && !h_leader(&c); t++) {
        h_tick_all(&c, 1);
        h_stabilize(&c);
    }
    raft_id l = h_leader(&c);
    assert_true(l != 0);
    propose_ok(&c, l, "after");
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, l), 4);
    assert_string_equal(c.app[l][1].data, "durable");
    h_check_applied(&c);
    h_free(&c);
}

/* A crash before the sync loses the unsynced tail and the unsynced vote. */
static void test_crash_loses_unsynced(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    propose_ok(&c, 1, "a");
    struct raft_ready rd;
    raft_ready(c.nodes[1], &rd);
    raft_memlog_append(c.logs[1], rd.entries, rd.n_entries);
    assert_int_equal(raft_memlog_last_index(c.logs[1]), 2);
    raft_advance(c.nodes[1], &rd);
    h_crash(&c, 1);
    assert_int_equal(raft_memlog_last_index(c.logs[1]), 1);
    h_restart(&c, 1);
    assert_int_equal(h_last(&c, 1), 1);
    h_free(&c);
}

/* An unreachable follower goes back to probing. */
static void test_report_unreachable_probes(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    raft_report_unreachable(c.nodes[1], 2);
    propose_ok(&c, 1, "a");
    propose_ok(&c, 1, "b");
    h_ready(&c, 1);
    /* One probe carrying both entries instead of pipelining. */
    assert_int_equal(h_count(&c, 1, 2, RAFT_MSG_APPEND), 1);
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 2), 3);
    h_free(&c);
}

/* Committed entries come out once, in order, after persistence. */
static void test_committed_once_in_order(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    char buf[16];
    for (int i = 0; i < 100; i++) {
        snprintf(buf, sizeof(buf), "%d", i);
        propose_ok(&c, 1, buf);
        if (i % 7 == 0)
            h_stabilize(&c);
    }
    h_stabilize(&c);
    for (raft_id i = 1; i <= 3; i++) {
        assert_int_equal(c.n_app[i], 101);
        for (uint32_t k = 0; k < c.n_app[i]; k++)
            assert_int_equal(c.app[i][k].index, k + 1);
    }
    h_check_applied(&c);
    h_free(&c);
}

/* The in-between rule: inputs may arrive between ready and advance. */
static void test_inputs_between_ready_and_advance(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 2);
    propose_ok(&c, 2, "one");
    struct raft_ready rd;
    raft_ready(c.nodes[2], &rd);
    assert_false(raft_has_ready(c.nodes[2]));
    propose_ok(&c, 2, "two");
    raft_tick(c.nodes[2]);
    assert_false(raft_has_ready(c.nodes[2]));
    for (uint32_t k = 0; k < rd.n_msgs; k++)
        raft_step(c.nodes[rd.msgs[k].to], &rd.msgs[k]);
    assert_int_equal(raft_memlog_persist_ready(c.logs[2], &rd), 0);
    raft_advance(c.nodes[2], &rd);
    assert_true(raft_has_ready(c.nodes[2]));
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 1), 3);
    assert_string_equal(c.app[1][2].data, "two");
    h_free(&c);
}

/* §3.5: duplicated and reordered appends are idempotent. */
static void test_duplicate_append_idempotent(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    propose_ok(&c, 1, "a");
    propose_ok(&c, 1, "b");
    h_ready(&c, 1);
    int k = h_find(&c, 1, 2, RAFT_MSG_APPEND);
    /* Our own copy: the queue frees its entries on delivery. */
    struct raft_msg copy = c.q[k].m;
    assert_int_equal(copy.n_entries, 2);
    struct raft_entry ents[2];
    char data[2][4];
    for (int i = 0; i < 2; i++) {
        ents[i] = copy.entries[i];
        memcpy(data[i], copy.entries[i].data, ents[i].len);
        ents[i].data = data[i];
    }
    copy.entries = ents;
    assert_int_equal(raft_step(c.nodes[2], &copy), 0);
    assert_int_equal(raft_step(c.nodes[2], &copy), 0);
    h_stabilize(&c);
    assert_int_equal(raft_step(c.nodes[2], &copy), 0); /* old, late */
    h_stabilize(&c);
    assert_int_equal(h_last(&c, 2), 3);
    assert_int_equal(h_commit(&c, 2), 3);
    assert_int_equal(c.n_app[2], 3);
    h_check_applied(&c);
    h_free(&c);
}

/* Thesis §3.8, etcd async storage writes: entries that a newer-term append
 * replaces before they were ever written must not be acked to the old
 * leader (seed 601787 n3). Node 3 receives L+2..L+3 of term 2 while its
 * write of L+1 is in flight; a term-3 leader replaces L+2 in the same
 * gathered batch; the ack of L+3 to the term-2 leader must not leave. */
static void test_no_ack_for_entries_replaced_before_written(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    raft_term t = h_term(&c, 1);
    raft_index last = h_last(&c, 3);
    c.hold_sync[3] = true;
    propose_ok(&c, 1, "a");
    h_ready(&c, 1);
    h_deliver_to(&c, 3);
    struct raft_ready rd0; /* the write of L+1, in flight */
    raft_ready(c.nodes[3], &rd0);
    assert_int_equal(rd0.n_entries, 1);
    propose_ok(&c, 1, "b");
    propose_ok(&c, 1, "c");
    h_ready(&c, 1);
    h_deliver_to(&c, 3); /* L+2..L+3 (term t) and their ack are gathered */
    assert_int_equal(h_last(&c, 3), last + 3);

    struct raft_entry e = {.term = t + 1, .index = last + 2,
                           .type = RAFT_ENTRY_NORMAL, .len = 1, .data = "z"};
    struct raft_msg m = h_msg(2, 3, RAFT_MSG_APPEND, t + 1);
    m.index = last + 1;
    m.log_term = t;
    m.entries = &e;
    m.n_entries = 1;
    assert_int_equal(raft_step(c.nodes[3], &m), 0);
    assert_int_equal(h_last(&c, 3), last + 2);

    h_complete(&c, 3, &rd0);
    struct raft_ready rd1;
    raft_ready(c.nodes[3], &rd1);
    assert_int_equal(rd1.n_entries, 1);
    assert_int_equal(rd1.entries[0].term, t + 1);
    uint32_t acks_to_2 = 0;
    for (uint32_t k = 0; k < rd1.n_msgs_after_sync; k++) {
        const struct raft_msg *a = &rd1.msgs_after_sync[k];
        if (a->type != RAFT_MSG_APPEND_RESP || a->reject)
            continue;
        /* Nothing past L+1 may be acked in term t: only L+1 of term t
         * is ever written. */
        if (a->to == 1)
            assert_true(a->index <= last + 1);
        if (a->to == 2) {
            assert_int_equal(a->term, t + 1);
            assert_int_equal(a->index, last + 2);
            acks_to_2++;
        }
    }
    assert_int_equal(acks_to_2, 1);
    h_complete(&c, 3, &rd1);
    c.hold_sync[3] = false;
    assert_int_equal(c.early_acks, 0);
    h_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        H_TEST(test_replicate_and_commit),
        H_TEST(test_follower_ack_after_sync),
        H_TEST(test_leader_counts_itself_after_sync),
        H_TEST(test_commit_propagates),
        H_TEST(test_committed_entries_from_memory),
        H_TEST(test_arena_block_reused),
        H_TEST(test_follower_truncates_conflict),
        H_TEST(test_reject_mismatched_prev),
        H_TEST(test_fast_backtracking),
        H_TEST(test_hint_for_short_follower_log),
        H_TEST(test_pipelining),
        H_TEST(test_inflight_window),
        H_TEST(test_max_msg_bytes_splits),
        H_TEST(test_probe_one_at_a_time),
        H_TEST(test_heartbeat_commit_capped_by_match),
        H_TEST(test_commit_notice),
        H_TEST(test_figure8_no_commit_of_old_term_by_count),
        H_TEST(test_follower_commit_capped_by_lastnew),
        H_TEST(test_log_matching_under_churn),
        H_TEST(test_crash_keeps_committed),
        H_TEST(test_crash_loses_unsynced),
        H_TEST(test_report_unreachable_probes),
        H_TEST(test_committed_once_in_order),
        H_TEST(test_inputs_between_ready_and_advance),
        H_TEST(test_duplicate_append_idempotent),
        H_TEST(test_no_ack_for_entries_replaced_before_written),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
