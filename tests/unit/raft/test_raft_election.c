/* Leader election, pre-vote and check-quorum (thesis §3.4, §4.2.3, §6.2, §9.6). */
#include "raft_harness.h"

/* §3.3: a server starts as a follower in term 0 with no leader. */
static void test_initial_state_follower(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    struct raft_status st;
    h_status(&c, 1, &st);
    assert_int_equal(st.role, RAFT_FOLLOWER);
    assert_int_equal(st.term, 0);
    assert_int_equal(st.leader, 0);
    /* The first ready only hands out the bootstrap configuration. */
    struct raft_ready rd;
    assert_true(raft_has_ready(c.nodes[1]));
    raft_ready(c.nodes[1], &rd);
    assert_true(rd.conf_changed);
    assert_int_equal(rd.conf.n_voters, 3);
    assert_int_equal(rd.n_msgs + rd.n_entries + rd.n_committed, 0);
    assert_false(rd.hs_changed);
    assert_true(rd.must_sync);
    raft_advance(c.nodes[1], &rd);
    assert_false(raft_has_ready(c.nodes[1]));
    h_free(&c);
}

/* §3.4 + durability: a lone candidate becomes leader only once its term and
 * self-vote are persisted, then commits its no-op. */
static void test_single_node_leader_after_vote_synced(void **state)
{
    struct cluster c;
    h_init(&c, 1);
    assert_int_equal(raft_campaign(c.nodes[1]), 0);
    assert_int_equal(h_role(&c, 1), RAFT_CANDIDATE);
    struct raft_ready rd;
    assert_true(raft_has_ready(c.nodes[1]));
    raft_ready(c.nodes[1], &rd);
    assert_true(rd.hs_changed);
    assert_true(rd.must_sync);
    assert_int_equal(rd.hs.term, 1);
    assert_int_equal(rd.hs.vote, 1);
    /* Not a leader before the vote is durable. */
    assert_int_equal(h_role(&c, 1), RAFT_CANDIDATE);
    assert_int_equal(raft_memlog_persist_ready(c.logs[1], &rd), 0);
    raft_advance(c.nodes[1], &rd);
    assert_int_equal(h_role(&c, 1), RAFT_LEADER);
    h_stabilize(&c);
    assert_int_equal(h_commit(&c, 1), 1);
    assert_int_equal(c.n_app[1], 1);
    assert_int_equal(c.app[1][0].type, RAFT_ENTRY_NOOP);
    assert_int_equal(c.app[1][0].term, 1);
    h_free(&c);
}

/* §3.4: election timeouts are drawn from [e, 2e). */
static void test_election_timeout_in_range(void **state)
{
    for (uint64_t seed = 1; seed <= 20; seed++) {
        struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                                   .seed = seed};
        struct cluster c;
        h_init_ex(&c, 3, 0, &base);
        uint32_t ticks = 0;
        while (h_role(&c, 1) == RAFT_FOLLOWER && ticks < 100) {
            raft_tick(c.nodes[1]);
            ticks++;
        }
        assert_true(ticks >= 10 && ticks < 20);
        h_free(&c);
    }
}

/* §3.4: randomization spreads timeouts so that split votes are rare. */
static void test_election_timeouts_differ_between_nodes(void **state)
{
    struct cluster c;
    h_init(&c, 5);
    uint32_t first[6] = {0};
    for (uint32_t t = 1; t < 40; t++) {
        for (raft_id i = 1; i <= 5; i++) {
            if (first[i])
                continue;
            raft_tick(c.nodes[i]);
            if (h_role(&c, i) != RAFT_FOLLOWER)
                first[i] = t;
        }
    }
    bool differ = false;
    for (raft_id i = 2; i <= 5; i++)
        if (first[i] != first[1])
            differ = true;
    assert_true(differ);
    h_free(&c);
}

/* §3.4: a candidate increments its term, votes for itself and asks every
 * other voter, carrying its last log index and term. */
static void test_candidate_requests_votes(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    raft_campaign(c.nodes[1]);
    h_ready(&c, 1);
    assert_int_equal(h_term(&c, 1), 1);
    assert_int_equal(h_count(&c, 1, 0, RAFT_MSG_VOTE), 2);
    int k = h_find(&c, 1, 2, RAFT_MSG_VOTE);
    assert_true(k >= 0);
    assert_int_equal(c.q[k].m.term, 1);
    assert_int_equal(c.q[k].m.index, 0);
    assert_int_equal(c.q[k].m.log_term, 0);
    struct raft_hard_state hs;
    raft_memlog_hard_state(c.logs[1], &hs);
    assert_int_equal(hs.vote, 1);
    h_free(&c);
}

/* §3.4: at most one vote per term, first come first served. */
static void test_vote_granted_once_per_term(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    struct raft_msg v = h_msg(1, 2, RAFT_MSG_VOTE, 1);
    assert_int_equal(raft_step(c.nodes[2], &v), 0);
    h_ready(&c, 2);
    int k = h_find(&c, 2, 1, RAFT_MSG_VOTE_RESP);
    assert_true(k >= 0);
    assert_false(c.q[k].m.reject);
    struct raft_msg v3 = h_msg(3, 2, RAFT_MSG_VOTE, 1);
    assert_int_equal(raft_step(c.nodes[2], &v3), 0);
    h_ready(&c, 2);
    k = h_find(&c, 2, 3, RAFT_MSG_VOTE_RESP);
    assert_true(k >= 0);
    assert_true(c.q[k].m.reject);
    /* A repeated request from the same candidate is granted again. */
    assert_int_equal(raft_step(c.nodes[2], &v), 0);
    h_ready(&c, 2);
    assert_int_equal(h_count(&c, 2, 1, RAFT_MSG_VOTE_RESP), 2);
    h_free(&c);
}

/* Durability: the vote response leaves only after the vote is synced. */
static void test_vote_response_after_sync(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    struct raft_msg v = h_msg(1, 2, RAFT_MSG_VOTE, 1);
    assert_int_equal(raft_step(c.nodes[2], &v), 0);
    struct raft_ready rd;
    raft_ready(c.nodes[2], &rd);
    assert_int_equal(rd.n_msgs, 0);
    assert_int_equal(rd.n_msgs_after_sync, 1);
    assert_int_equal(rd.msgs_after_sync[0].type, RAFT_MSG_VOTE_RESP);
    assert_true(rd.must_sync);
    assert_true(rd.hs_changed);
    assert_int_equal(rd.hs.vote, 1);
    assert_int_equal(rd.hs.term, 1);
    raft_advance(c.nodes[2], &rd);
    h_free(&c);
}

/* §3.6.1: votes go only to candidates whose log is at least as up to date
 * (higher last term wins). */
static void test_vote_rejected_if_log_older_term(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1); /* everyone has entry 1 at term 1 */
    struct raft_msg v = h_msg(3, 2, RAFT_MSG_VOTE, 5);
    v.index = 10;
    v.log_term = 0; /* longer log but older last term */
    raft_step(c.nodes[2], &v);
    h_ready(&c, 2);
    int k = h_find(&c, 2, 3, RAFT_MSG_VOTE_RESP);
    assert_true(k >= 0);
    assert_true(c.q[k].m.reject);
    assert_int_equal(h_term(&c, 2), 5);
    h_free(&c);
}

/* §3.6.1: same last term, shorter log loses. */
static void test_vote_rejected_if_log_shorter(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    h_propose(&c, 1, "x", NULL);
    h_stabilize(&c);
    struct raft_msg v = h_msg(3, 2, RAFT_MSG_VOTE, 3);
    v.index = 1;
    v.log_term = 1;
    raft_step(c.nodes[2], &v);
    h_ready(&c, 2);
    int k = h_find(&c, 2, 3, RAFT_MSG_VOTE_RESP);
    assert_true(k >= 0);
    assert_true(c.q[k].m.reject);
    /* The same log length is enough. */
    struct raft_msg v2 = h_msg(3, 2, RAFT_MSG_VOTE, 4);
    v2.index = 2;
    v2.log_term = 1;
    raft_step(c.nodes[2], &v2);
    h_ready(&c, 2);
    assert_int_equal(h_count(&c, 2, 3, RAFT_MSG_VOTE_RESP), 2);
    k = h_find(&c, 2, 3, RAFT_MSG_VOTE_RESP);
    h_drop(&c, (uint32_t)k);
    k = h_find(&c, 2, 3, RAFT_MSG_VOTE_RESP);
    assert_false(c.q[k].m.reject);
    h_free(&c);
}

/* §3.4: a majority of votes makes a leader; the others follow it. */
static void test_candidate_wins_with_majority(void **state)
{
    struct cluster c;
    h_init(&c, 5);
    CLUSTER_ELECT(&c, 3);
    assert_int_equal(h_leader(&c), 3);
    for (raft_id i = 1; i <= 5; i++) {
        struct raft_status st;
        h_status(&c, i, &st);
        assert_int_equal(st.leader, 3);
        assert_int_equal(st.term, 1);
        assert_int_equal(st.commit, 1);
    }
    h_check_applied(&c);
    h_free(&c);
}

/* §3.4: a candidate that collects a majority of rejections steps down. */
static void test_candidate_loses_with_majority_reject(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    h_propose(&c, 1, "a", NULL);
    h_stabilize(&c);
    /* Node 3 misses entry 3 then campaigns: both others reject. */
    h_isolate(&c, 3);
    h_propose(&c, 1, "b", NULL);
    h_stabilize(&c);
    h_heal(&c);
    struct raft_msg v = h_msg(3, 2, RAFT_MSG_VOTE, 1);
    (void)v;
    raft_campaign(c.nodes[3]);
    h_ready(&c, 3);
    /* Deliver the vote requests and bring back the answers only. */
    h_deliver_to(&c, 1);
    h_deliver_to(&c, 2);
    h_deliver_to(&c, 3);
    assert_int_equal(h_role(&c, 3), RAFT_FOLLOWER);
    assert_int_equal(h_term(&c, 3), 2);
    h_free(&c);
}

/* §3.4: a candidate that hears from a leader of its term follows it. */
static void test_candidate_follows_leader_of_same_term(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    raft_campaign(c.nodes[2]);
    h_ready(&c, 2);
    h_drop_all(&c);
    struct raft_msg hb = h_msg(1, 2, RAFT_MSG_HEARTBEAT, 1);
    assert_int_equal(raft_step(c.nodes[2], &hb), 0);
    struct raft_status st;
    h_status(&c, 2, &st);
    assert_int_equal(st.role, RAFT_FOLLOWER);
    assert_int_equal(st.leader, 1);
    assert_int_equal(st.term, 1);
    h_free(&c);
}

/* §3.3: any message with a higher term turns a leader into a follower. */
static void test_leader_steps_down_on_higher_term(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    struct raft_msg r = h_msg(2, 1, RAFT_MSG_APPEND_RESP, 7);
    assert_int_equal(raft_step(c.nodes[1], &r), 0);
    assert_int_equal(h_role(&c, 1), RAFT_FOLLOWER);
    assert_int_equal(h_term(&c, 1), 7);
    h_free(&c);
}

/* §3.3: a request with a stale term is rejected. */
static void test_stale_term_rejected(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    CLUSTER_ELECT(&c, 2); /* term 2 */
    struct raft_msg a = h_msg(1, 3, RAFT_MSG_APPEND, 1);
    a.index = 1;
    a.log_term = 1;
    assert_int_equal(raft_step(c.nodes[3], &a), RK_ESTALE);
    struct raft_msg v = h_msg(1, 3, RAFT_MSG_VOTE, 1);
    assert_int_equal(raft_step(c.nodes[3], &v), RK_ESTALE);
    assert_int_equal(h_term(&c, 3), 2);
    h_free(&c);
}

/* §6.4 / §3.6.2: a new leader appends a no-op entry of its term. */
static void test_leader_appends_noop(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    CLUSTER_ELECT(&c, 2);
    assert_int_equal(h_last(&c, 2), 2);
    assert_int_equal(h_log_term(&c, 2, 2), 2);
    assert_int_equal(c.app[3][1].type, RAFT_ENTRY_NOOP);
    assert_int_equal(c.app[3][1].term, 2);
    h_free(&c);
}

/* §3.4 election safety: simultaneous candidates never both win a term. */
static void test_split_vote_at_most_one_leader(void **state)
{
    for (uint64_t seed = 1; seed <= 10; seed++) {
        struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                                   .seed = seed};
        struct cluster c;
        h_init_ex(&c, 4, 0, &base);
        raft_campaign(c.nodes[1]);
        raft_campaign(c.nodes[2]);
        h_ready_all(&c);
        h_stabilize(&c);
        uint32_t leaders = 0;
        for (raft_id i = 1; i <= 4; i++)
            if (h_role(&c, i) == RAFT_LEADER && h_term(&c, i) == 1)
                leaders++;
        assert_true(leaders <= 1);
        /* Ticking resolves it. */
        for (int t = 0; t < 200 && !h_leader(&c); t++) {
            h_tick_all(&c, 1);
            h_stabilize(&c);
        }
        assert_true(h_leader(&c) != 0);
        h_free(&c);
    }
}

/* §4.2.1: learners never campaign. */
static void test_learner_never_campaigns(void **state)
{
    struct cluster c;
    h_init_ex(&c, 2, 1, NULL);
    CLUSTER_ELECT(&c, 1);
    struct raft_conf_change cc = {RAFT_CC_ADD_LEARNER, 2};
    assert_int_equal(raft_propose_conf(c.nodes[1], &cc, NULL), 0);
    h_stabilize(&c);
    h_isolate(&c, 2);
    h_tick(&c, 2, 100);
    assert_int_equal(h_role(&c, 2), RAFT_FOLLOWER);
    assert_int_equal(h_count(&c, 2, 0, RAFT_MSG_VOTE), 0);
    assert_int_equal(raft_campaign(c.nodes[2]), RK_ENOTVOTER);
    h_free(&c);
}

/* §3.4: after the leader crashes, the others elect a new one by timeout. */
static void test_new_leader_after_crash(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    h_propose(&c, 1, "x", NULL);
    h_stabilize(&c);
    h_crash(&c, 1);
    for (int t = 0; t < 100 && (h_leader(&c) == 0 || h_leader(&c) == 1); t++) {
        h_tick_all(&c, 1);
        h_stabilize(&c);
    }
    raft_id l = h_leader(&c);
    assert_true(l == 2 || l == 3);
    assert_true(h_term(&c, l) >= 2);
    /* Leader completeness: the committed entry survives. */
    assert_true(h_commit(&c, l) >= 2);
    h_check_applied(&c);
    h_free(&c);
}

/* §9.6: without pre-vote, a partitioned node that rejoins with a higher
 * term deposes a healthy leader. */
static void test_no_prevote_rejoin_disrupts(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    h_isolate(&c, 3);
    h_tick(&c, 3, 60);
    h_drop_all(&c);
    assert_true(h_term(&c, 3) >= 3);
    h_heal(&c);
    /* Its next campaign reaches the others. */
    h_tick(&c, 3, 25);
    h_stabilize(&c);
    assert_true(h_term(&c, 1) >= 3);
    h_free(&c);
}

/* §9.6: a pre-candidate does not increment its term. */
static void test_prevote_keeps_term(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .pre_vote = true, .seed = 3};
    struct cluster c;
    h_init_ex(&c, 3, 0, &base);
    CLUSTER_ELECT(&c, 1);
    h_isolate(&c, 3);
    h_tick(&c, 3, 100);
    h_stabilize(&c);
    assert_int_equal(h_term(&c, 3), 1);
    assert_true(c.sent[RAFT_MSG_PREVOTE] > 0);
    h_free(&c);
}

/* §9.6: PREVOTE carries term+1; success is followed by a real election. */
static void test_prevote_then_vote(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .pre_vote = true, .seed = 3};
    struct cluster c;
    h_init_ex(&c, 3, 0, &base);
    raft_campaign(c.nodes[1]);
    assert_int_equal(h_role(&c, 1), RAFT_PRE_CANDIDATE);
    h_ready(&c, 1);
    int k = h_find(&c, 1, 2, RAFT_MSG_PREVOTE);
    assert_true(k >= 0);
    assert_int_equal(c.q[k].m.term, 1);
    assert_int_equal(h_term(&c, 1), 0);
    assert_int_equal(h_count(&c, 0, 0, RAFT_MSG_VOTE), 0);
    h_deliver_to(&c, 2);
    /* The receiver keeps its term. */
    assert_int_equal(h_term(&c, 2), 0);
    h_deliver_to(&c, 1);
    assert_int_equal(h_role(&c, 1), RAFT_CANDIDATE);
    assert_int_equal(h_term(&c, 1), 1);
    assert_true(h_count(&c, 1, 0, RAFT_MSG_VOTE) >= 1);
    h_stabilize(&c);
    assert_int_equal(h_leader(&c), 1);
    h_free(&c);
}

/* §9.6: pre-votes follow the up-to-date rule. */
static void test_prevote_rejected_if_log_behind(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .pre_vote = true, .seed = 3};
    struct cluster c;
    h_init_ex(&c, 3, 0, &base);
    CLUSTER_ELECT(&c, 1);
    struct raft_msg p = h_msg(3, 2, RAFT_MSG_PREVOTE, 2);
    p.index = 0;
    p.log_term = 0;
    /* Node 2 heard from the leader: without check-quorum it still answers. */
    assert_int_equal(raft_step(c.nodes[2], &p), 0);
    h_ready(&c, 2);
    int k = h_find(&c, 2, 3, RAFT_MSG_PREVOTE_RESP);
    assert_true(k >= 0);
    assert_true(c.q[k].m.reject);
    assert_int_equal(h_term(&c, 2), 1);
    h_free(&c);
}

/* §9.6 + §4.2.3: with pre-vote and check-quorum, a node returning from a
 * partition does not disturb the leader. */
static void test_prevote_rejoin_no_disruption(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .pre_vote = true, .check_quorum = true,
                               .seed = 5};
    struct cluster c;
    h_init_ex(&c, 3, 0, &base);
    CLUSTER_ELECT(&c, 1);
    h_isolate(&c, 3);
    for (int t = 0; t < 50; t++) {
        h_tick_all(&c, 1);
        h_stabilize(&c);
    }
    h_heal(&c);
    for (int t = 0; t < 50; t++) {
        h_tick_all(&c, 1);
        h_stabilize(&c);
    }
    assert_int_equal(h_leader(&c), 1);
    assert_int_equal(h_term(&c, 1), 1);
    assert_int_equal(h_term(&c, 3), 1);
    h_free(&c);
}

/* §6.2: a leader that has not heard from a quorum for an election timeout
 * steps down. */
static void test_check_quorum_step_down(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .check_quorum = true, .seed = 5};
    struct cluster c;
    h_init_ex(&c, 3, 0, &base);
    CLUSTER_ELECT(&c, 1);
    h_isolate(&c, 1);
    for (int t = 0; t < 25; t++) {
        h_tick(&c, 1, 1);
        h_drop_all(&c);
    }
    assert_int_equal(h_role(&c, 1), RAFT_FOLLOWER);
    assert_int_equal(h_term(&c, 1), 1);
    h_free(&c);
}

/* §6.2: a leader in touch with a quorum stays. */
static void test_check_quorum_stays_with_quorum(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .check_quorum = true, .seed = 5};
    struct cluster c;
    h_init_ex(&c, 3, 0, &base);
    CLUSTER_ELECT(&c, 1);
    h_isolate(&c, 3);
    for (int t = 0; t < 40; t++) {
        h_tick(&c, 1, 1);
        h_tick(&c, 2, 1);
        h_stabilize(&c);
    }
    assert_int_equal(h_role(&c, 1), RAFT_LEADER);
    h_free(&c);
}

/* §4.2.3: followers that heard from a leader recently ignore vote
 * requests (leader stickiness). */
static void test_stickiness_ignores_vote_in_lease(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .check_quorum = true, .seed = 5};
    struct cluster c;
    h_init_ex(&c, 3, 0, &base);
    CLUSTER_ELECT(&c, 1);
    struct raft_msg v = h_msg(3, 2, RAFT_MSG_VOTE, 5);
    v.index = 100;
    v.log_term = 100;
    assert_int_equal(raft_step(c.nodes[2], &v), 0);
    h_ready(&c, 2);
    assert_int_equal(h_count(&c, 2, 3, RAFT_MSG_VOTE_RESP), 0);
    assert_int_equal(h_term(&c, 2), 1);
    /* Once the lease ran out (an election timeout without the leader), the
     * request is considered. */
    h_isolate(&c, 1);
    for (int t = 0; t < 10; t++)
        raft_tick(c.nodes[2]);
    assert_int_equal(raft_step(c.nodes[2], &v), 0);
    h_ready(&c, 2);
    assert_int_equal(h_count(&c, 2, 3, RAFT_MSG_VOTE_RESP), 1);
    assert_int_equal(h_term(&c, 2), 5);
    h_free(&c);
}

/* §6.2 / etcd: a stale leader that receives an answer carrying a newer term
 * learns it and steps down. */
static void test_stale_leader_learns_new_term(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .check_quorum = true, .pre_vote = true,
                               .seed = 5};
    struct cluster c;
    h_init_ex(&c, 3, 0, &base);
    CLUSTER_ELECT(&c, 1);
    h_isolate(&c, 1);
    for (int t = 0; t < 60 && h_leader(&c) <= 1; t++) {
        h_tick(&c, 2, 1);
        h_tick(&c, 3, 1);
        h_stabilize(&c);
    }
    raft_id nl = h_leader(&c);
    assert_true(nl == 2 || nl == 3);
    /* The old leader (still leader of term 1) heartbeats a follower. */
    struct raft_msg hb = h_msg(1, nl, RAFT_MSG_HEARTBEAT, 1);
    assert_int_equal(raft_step(c.nodes[nl], &hb), RK_ESTALE);
    h_ready(&c, nl);
    int k = h_find(&c, nl, 1, RAFT_MSG_APPEND_RESP);
    assert_true(k >= 0);
    h_heal(&c);
    h_deliver(&c, (uint32_t)k);
    assert_int_equal(h_role(&c, 1), RAFT_FOLLOWER);
    assert_true(h_term(&c, 1) >= 2);
    h_free(&c);
}

/* §3.8 (persistent state): a restarted node remembers its vote and does
 * not vote twice in one term. */
static void test_vote_survives_restart(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    struct raft_msg v = h_msg(1, 2, RAFT_MSG_VOTE, 1);
    raft_step(c.nodes[2], &v);
    h_ready(&c, 2);
    h_drop_all(&c);
    h_crash(&c, 2);
    h_restart(&c, 2);
    struct raft_msg v3 = h_msg(3, 2, RAFT_MSG_VOTE, 1);
    raft_step(c.nodes[2], &v3);
    h_ready(&c, 2);
    int k = h_find(&c, 2, 3, RAFT_MSG_VOTE_RESP);
    assert_true(k >= 0);
    assert_true(c.q[k].m.reject);
    h_free(&c);
}

/* Paper §5.1: a stale vote request is answered with a rejection carrying
 * the current term. */
static void test_stale_vote_answered_with_term(void **state)
{
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    CLUSTER_ELECT(&c, 2);
    struct raft_msg v = h_msg(3, 1, RAFT_MSG_VOTE, 1);
    assert_int_equal(raft_step(c.nodes[1], &v), RK_ESTALE);
    h_ready(&c, 1);
    int k = h_find(&c, 1, 3, RAFT_MSG_VOTE_RESP);
    assert_true(k >= 0);
    assert_true(c.q[k].m.reject);
    assert_int_equal(c.q[k].m.term, 2);
    h_free(&c);
}

/* §4.2.3: a removed server that keeps campaigning does not depose the
 * leader when pre-vote and check-quorum are on. */
static void test_removed_server_does_not_disrupt(void **state)
{
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .pre_vote = true, .check_quorum = true,
                               .seed = 8};
    struct cluster c;
    h_init_ex(&c, 4, 0, &base);
    CLUSTER_ELECT(&c, 1);
    struct raft_conf_change cc = {RAFT_CC_REMOVE, 4};
    assert_int_equal(raft_propose_conf(c.nodes[1], &cc, NULL), 0);
    /* Node 4 never hears of its removal. */
    h_isolate(&c, 4);
    h_stabilize(&c);
    h_heal(&c);
    raft_term t = h_term(&c, 1);
    for (int i = 0; i < 100; i++) {
        h_tick_all(&c, 1);
        h_stabilize(&c);
    }
    assert_int_equal(h_leader(&c), 1);
    assert_int_equal(h_term(&c, 1), t);
    h_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        H_TEST(test_initial_state_follower),
        H_TEST(test_single_node_leader_after_vote_synced),
        H_TEST(test_election_timeout_in_range),
        H_TEST(test_election_timeouts_differ_between_nodes),
        H_TEST(test_candidate_requests_votes),
        H_TEST(test_vote_granted_once_per_term),
        H_TEST(test_vote_response_after_sync),
        H_TEST(test_vote_rejected_if_log_older_term),
        H_TEST(test_vote_rejected_if_log_shorter),
        H_TEST(test_candidate_wins_with_majority),
        H_TEST(test_candidate_loses_with_majority_reject),
        H_TEST(test_candidate_follows_leader_of_same_term),
        H_TEST(test_leader_steps_down_on_higher_term),
        H_TEST(test_stale_term_rejected),
        H_TEST(test_leader_appends_noop),
        H_TEST(test_split_vote_at_most_one_leader),
        H_TEST(test_learner_never_campaigns),
        H_TEST(test_new_leader_after_crash),
        H_TEST(test_no_prevote_rejoin_disrupts),
        H_TEST(test_prevote_keeps_term),
        H_TEST(test_prevote_then_vote),
        H_TEST(test_prevote_rejected_if_log_behind),
        H_TEST(test_prevote_rejoin_no_disruption),
        H_TEST(test_check_quorum_step_down),
        H_TEST(test_check_quorum_stays_with_quorum),
        H_TEST(test_stickiness_ignores_vote_in_lease),
        H_TEST(test_stale_leader_learns_new_term),
        H_TEST(test_vote_survives_restart),
        H_TEST(test_stale_vote_answered_with_term),
        H_TEST(test_removed_server_does_not_disrupt),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
