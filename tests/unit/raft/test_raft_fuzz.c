/* Robustness and safety under random schedules and forged messages. */
#include "raft_harness.h"

#include <stdio.h>
#include <stdlib.h>

#include "rk_rand.h"

static uint64_t rnd(struct rk_rand *r, uint64_t n)
{
    return rk_rand_below(r, n);
}

/* Election safety: at most one leader per term (checked over time). */
struct leaders {
    raft_term term[512];
    raft_id id[512];
    uint32_t n;
};

static void check_election_safety(struct cluster *c, struct leaders *L)
{
    for (raft_id i = 1; i <= c->n; i++) {
        if (c->down[i] || h_role(c, i) != RAFT_LEADER)
            continue;
        raft_term t = h_term(c, i);
        bool found = false;
        for (uint32_t k = 0; k < L->n; k++) {
            if (L->term[k] == t) {
                assert_int_equal(L->id[k], i);
                found = true;
            }
        }
        if (!found && L->n < 512) {
            L->term[L->n] = t;
            L->id[L->n] = i;
            L->n++;
        }
    }
}

/* The leader's match for a follower is never past what that follower
 * durably holds with the same term. */
static void check_match_sound(struct cluster *c, uint64_t seed, int step,
                              uint64_t op)
{
    raft_id l = h_leader(c);
    if (!l)
        return;
    struct raft_status st;
    h_status(c, l, &st);
    for (uint32_t k = 0; k < st.n_match; k++) {
        raft_id f = st.match_ids[k];
        raft_index mi = st.match[k];
        if (f == l || f > c->n || mi == 0 || c->down[f])
            continue;
        raft_term lt = h_log_term(c, l, mi), ft = h_log_term(c, f, mi);
        struct raft_snapshot_meta sm;
        raft_memlog_snapshot(c->logs[f], &sm, NULL, NULL);
        bool ok = mi <= sm.index || (ft != 0 && (lt == 0 || lt == ft));
        if (!ok)
            fprintf(stderr, "seed %llu step %d op %llu: leader %llu match "
                    "%llu=%llu but follower term %llu (leader %llu) snap %llu\n",
                    (unsigned long long)seed, step, (unsigned long long)op,
                    (unsigned long long)l, (unsigned long long)f,
                    (unsigned long long)mi, (unsigned long long)ft,
                    (unsigned long long)lt, (unsigned long long)sm.index);
        assert_true(ok);
    }
}

/* Once the cluster is healed, a new entry commits with its proposal's
 * term (so it is ours), election safety holding all along. Without
 * pre-vote a removed member keeps disrupting elections (thesis §4.2.3), so
 * many election rounds are allowed. Returns the leader that proposed it,
 * or 0 if it did not commit. */
static raft_id commit_after_heal(struct cluster *c, struct leaders *L)
{
    for (int attempt = 0; attempt < 30; attempt++) {
        for (int t = 0; t < 300 && !h_leader(c); t++) {
            h_tick_all(c, 1);
            h_stabilize(c);
            check_election_safety(c, L);
        }
        raft_id lead = h_leader(c);
        raft_index idx = 0;
        if (!lead || raft_propose(c->nodes[lead], "final", 5, &idx) != 0)
            continue;
        raft_term term = h_term(c, lead);
        for (int t = 0; t < 100; t++) {
            h_tick_all(c, 1);
            h_stabilize(c);
            check_election_safety(c, L);
            raft_id l2 = h_leader(c);
            if (l2 && h_commit(c, l2) >= idx && h_log_term(c, l2, idx) == term)
                return lead;
        }
    }
    return 0;
}

/* Random schedules: reordering, loss, duplication, partitions, crashes,
 * proposals, membership changes, transfers, snapshots. The cluster must
 * keep election safety and state machine safety, and recover. */
static void run_schedule(uint64_t seed, uint32_t nodes, bool pv_cq)
{
    struct rk_rand r;
    rk_rand_seed(&r, seed);
    const char *tr = getenv("RAFT_FUZZ_TRACE");
    bool trace = tr && strtoull(tr, NULL, 10) == seed;
    if (getenv("RAFT_FUZZ_VERBOSE"))
        fprintf(stderr, "schedule seed %llu nodes %u\n",
                (unsigned long long)seed, nodes);
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .pre_vote = pv_cq, .check_quorum = pv_cq,
                               .max_inflight_msgs = 4, .max_msg_bytes = 64,
                               .seed = seed};
    struct cluster c;
    h_init_ex(&c, nodes, 0, &base);
    for (raft_id i = 1; i <= nodes; i++)
        raft_memlog_set_chunk_size(c.logs[i], 7);
    struct leaders L = {.n = 0};
    char buf[32];
    uint32_t proposals = 0;
    for (int step = 0; step < 6000; step++) {
        uint64_t op = rnd(&r, 100);
        raft_id i = (raft_id)(1 + rnd(&r, nodes));
        if (op < 35 && c.nq > 0) {
            uint32_t k = (uint32_t)rnd(&r, c.nq);
            if (rnd(&r, 100) < 8) {
                h_drop(&c, k);
            } else {
                if (rnd(&r, 100) < 5) /* duplicate */
                    h_enqueue(&c, &c.q[k].m);
                raft_id to = c.q[k].m.to;
                if (trace) {
                    const struct raft_msg *m = &c.q[k].m;
                    fprintf(stderr, "step %d deliver %s %llu->%llu t%llu "
                            "i%llu lt%llu c%llu rej %d n %u snap %llu "
                            "seq %u last %d\n", step,
                            raft_msg_type_name(m->type),
                            (unsigned long long)m->from,
                            (unsigned long long)m->to,
                            (unsigned long long)m->term,
                            (unsigned long long)m->index,
                            (unsigned long long)m->log_term,
                            (unsigned long long)m->commit, m->reject,
                            m->n_entries, (unsigned long long)m->snap.index,
                            m->chunk_seq, m->chunk_last);
                }
                h_deliver(&c, k);
                h_ready(&c, to);
            }
        } else if (op < 55) {
            if (!c.down[i])
                h_tick(&c, i, 1);
        } else if (op < 70) {
            if (!c.down[i] && h_role(&c, i) == RAFT_LEADER) {
                snprintf(buf, sizeof(buf), "s%llu-%d",
                         (unsigned long long)seed, step);
                if (raft_propose(c.nodes[i], buf, strlen(buf), NULL) == 0)
                    proposals++;
                h_ready(&c, i);
            }
        } else if (op < 73) {
            if (!c.down[i] && h_role(&c, i) == RAFT_LEADER) {
                raft_read_index(c.nodes[i], (uint64_t)step);
                h_ready(&c, i);
            }
        } else if (op < 75) {
            if (!c.down[i] && h_role(&c, i) == RAFT_LEADER) {
                raft_transfer_leader(c.nodes[i], 1 + rnd(&r, nodes));
                h_ready(&c, i);
            }
        } else if (op < 77) {
            if (!c.down[i] && h_role(&c, i) == RAFT_LEADER) {
                struct raft_conf_change cc = {
                    .type = (uint8_t)rnd(&r, 4),
                    .node = 1 + rnd(&r, nodes)};
                raft_propose_conf(c.nodes[i], &cc, NULL);
                h_ready(&c, i);
            }
        } else if (op < 80) {
            if (!c.down[i]) {
                struct raft_status st;
                h_status(&c, i, &st);
                if (st.applied >= st.first_index)
                    h_snapshot(&c, i, 1 + rnd(&r, 40));
            }
        } else if (op < 83) {
            if (c.down[i]) {
                h_restart(&c, i);
            } else {
                uint32_t up = 0;
                for (raft_id j = 1; j <= nodes; j++)
                    up += !c.down[j];
                if (up > nodes / 2 + 1)
                    h_crash(&c, i);
            }
        } else if (op < 86) {
            if (rnd(&r, 2))
                h_heal(&c);
            else
                h_isolate(&c, i);
        }
        check_election_safety(&c, &L);
        h_check_applied(&c);
        check_match_sound(&c, seed, step, op);
    }
    /* Heal and restart everyone: the group must converge. */
    h_heal(&c);
    for (raft_id i = 1; i <= nodes; i++)
        if (c.down[i])
            h_restart(&c, i);
    raft_id lead = 0;
    for (int t = 0; t < 400; t++) {
        h_tick_all(&c, 1);
        h_stabilize(&c);
        check_election_safety(&c, &L);
        lead = h_leader(&c);
        if (lead && t > 50)
            break;
    }
    if (!lead) {
        for (raft_id i = 1; i <= nodes; i++) {
            struct raft_status st;
            h_status(&c, i, &st);
            fprintf(stderr, "seed %llu node %llu role %d term %llu commit %llu last %llu voters %u learners %u first %llu\n",
                    (unsigned long long)seed, (unsigned long long)i, st.role, (unsigned long long)st.term,
                    (unsigned long long)st.commit, (unsigned long long)st.last_index, st.conf.n_voters, st.conf.n_learners, (unsigned long long)st.first_index);
            for (uint32_t k = 0; k < st.conf.n_voters; k++) fprintf(stderr, "  v%llu", (unsigned long long)st.conf.voters[k]);
            fprintf(stderr, "\n");
        }
    }
    assert_true(lead != 0);
    h_check_applied(&c);
    /* Liveness after healing: a new entry commits on every member. */
    lead = commit_after_heal(&c, &L);
    if (lead == 0) {
        for (raft_id i = 1; i <= nodes; i++) {
            struct raft_status st;
            h_status(&c, i, &st);
            fprintf(stderr, "seed %llu node %llu %s term %llu lead %llu commit %llu "
                    "last %llu first %llu voters:", (unsigned long long)seed,
                    (unsigned long long)i, raft_role_name(st.role),
                    (unsigned long long)st.term, (unsigned long long)st.leader,
                    (unsigned long long)st.commit,
                    (unsigned long long)st.last_index, (unsigned long long)st.first_index);
            for (uint32_t k = 0; k < st.conf.n_voters; k++)
                fprintf(stderr, " %llu",
                        (unsigned long long)st.conf.voters[k]);
            fprintf(stderr, " learners:");
            for (uint32_t k = 0; k < st.conf.n_learners; k++)
                fprintf(stderr, " %llu",
                        (unsigned long long)st.conf.learners[k]);
            fprintf(stderr, "\n");
            for (uint32_t k = 0; k < st.n_match; k++)
                fprintf(stderr, "    match %llu = %llu\n",
                        (unsigned long long)st.match_ids[k],
                        (unsigned long long)st.match[k]);
        }
    }
    assert_true(lead != 0);
    /* Heartbeats spread the last commit index. */
    for (int t = 0; t < 3; t++) {
        h_tick_all(&c, 1);
        h_stabilize(&c);
    }
    assert_true(lead != 0);
    struct raft_status ls;
    h_status(&c, lead, &ls);
    for (uint32_t k = 0; k < ls.conf.n_voters + ls.conf.n_learners; k++) {
        raft_id m = k < ls.conf.n_voters ? ls.conf.voters[k]
                                         : ls.conf.learners[k - ls.conf.n_voters];
        assert_int_equal(h_commit(&c, m), ls.commit);
    }
    h_free(&c);
}

/* RAFT_FUZZ_SEEDS=n runs n seeds per cluster size (default 30 and 16). */
static uint64_t n_seeds(uint64_t dflt)
{
    const char *e = getenv("RAFT_FUZZ_SEEDS");
    return e ? strtoull(e, NULL, 10) : dflt;
}

static void test_random_schedules_3(void **state)
{
    uint64_t n = n_seeds(30);
    for (uint64_t seed = 1; seed <= n; seed++)
        run_schedule(seed, 3, seed % 2 == 0);
}

static void test_random_schedules_5(void **state)
{
    uint64_t n = n_seeds(16);
    for (uint64_t seed = 100000; seed < 100000 + n; seed++)
        run_schedule(seed, 5, seed % 2 == 1);
}

/* Asynchronous storage (the server's pipelining): each node may hold one
 * ready whose messages left but whose write is still in flight, while new
 * messages, ticks and proposals keep arriving. Safety must hold and the
 * group must converge once writes complete. */
static void run_async_schedule(uint64_t seed, uint32_t nodes)
{
    struct rk_rand r;
    rk_rand_seed(&r, seed);
    struct raft_config base = {.election_ticks = 10, .heartbeat_ticks = 1,
                               .pre_vote = seed % 2 == 0,
                               .check_quorum = seed % 2 == 0,
                               .max_inflight_msgs = 8, .max_msg_bytes = 64,
                               .seed = seed};
    struct cluster c;
    h_init_ex(&c, nodes, 0, &base);
    for (raft_id i = 1; i <= nodes; i++)
        raft_memlog_set_chunk_size(c.logs[i], 5);
    struct raft_ready rd[H_MAXN + 1];
    bool pending[H_MAXN + 1] = {false};
    struct leaders L = {.n = 0};
    char buf[32];
    for (int step = 0; step < 5000; step++) {
        uint64_t op = rnd(&r, 100);
        raft_id i = (raft_id)(1 + rnd(&r, nodes));
        if (op < 30 && c.nq > 0) {
            uint32_t k = (uint32_t)rnd(&r, c.nq);
            if (rnd(&r, 100) < 5)
                h_drop(&c, k);
            else
                h_deliver(&c, k);
        } else if (op < 45) {
            if (!c.down[i] && !pending[i] && raft_has_ready(c.nodes[i])) {
                raft_ready(c.nodes[i], &rd[i]);
                for (uint32_t k = 0; k < rd[i].n_msgs; k++)
                    h_enqueue(&c, &rd[i].msgs[k]);
                pending[i] = true;
            }
        } else if (op < 60) {
            if (pending[i]) {
                pending[i] = false;
                h_complete(&c, i, &rd[i]);
            }
        } else if (op < 72) {
            if (!c.down[i])
                raft_tick(c.nodes[i]);
        } else if (op < 84) {
            if (!c.down[i] && h_role(&c, i) == RAFT_LEADER) {
                snprintf(buf, sizeof(buf), "a%llu-%d",
                         (unsigned long long)seed, step);
                raft_propose(c.nodes[i], buf, strlen(buf), NULL);
            }
        } else if (op < 86) {
            if (!c.down[i] && h_role(&c, i) == RAFT_LEADER) {
                struct raft_conf_change cc = {
                    .type = (uint8_t)rnd(&r, 4),
                    .node = 1 + rnd(&r, nodes)};
                raft_propose_conf(c.nodes[i], &cc, NULL);
            }
        } else if (op < 88) {
            if (!c.down[i] && !pending[i]) {
                struct raft_status st;
                h_status(&c, i, &st);
                if (st.applied >= st.first_index)
                    h_snapshot(&c, i, 1 + rnd(&r, 30));
            }
        } else if (op < 90) {
            if (!c.down[i] && h_role(&c, i) == RAFT_LEADER)
                raft_read_index(c.nodes[i], (uint64_t)step);
        } else if (op < 92) {
            if (c.down[i]) {
                h_restart(&c, i);
            } else {
                uint32_t up = 0;
                for (raft_id j = 1; j <= nodes; j++)
                    up += !c.down[j];
                if (up > nodes / 2 + 1) {
                    pending[i] = false; /* the write in flight is lost */
                    h_crash(&c, i);
                }
            }
        } else if (op < 94) {
            if (rnd(&r, 2))
                h_heal(&c);
            else
                h_isolate(&c, i);
        }
        check_election_safety(&c, &L);
        h_check_applied(&c);
    }
    for (raft_id i = 1; i <= nodes; i++) {
        if (pending[i])
            h_complete(&c, i, &rd[i]);
        if (c.down[i])
            h_restart(&c, i);
    }
    h_heal(&c);
    assert_true(commit_after_heal(&c, &L) != 0);
    h_check_applied(&c);
    h_free(&c);
}

static void test_async_storage_schedules(void **state)
{
    uint64_t n = n_seeds(30);
    for (uint64_t seed = 5000; seed < 5000 + n; seed++)
        run_async_schedule(seed, seed % 3 == 0 ? 5 : 3);
}

/* Forged and malformed messages never crash a node; they get codes. */
static void test_forged_messages_never_crash(void **state)
{
    struct rk_rand r;
    rk_rand_seed(&r, 7);
    struct cluster c;
    h_init(&c, 3);
    CLUSTER_ELECT(&c, 1);
    static char data[64] = "payload-payload-payload-payload";
    struct raft_entry ents[6];
    for (int it = 0; it < 100000; it++) {
        raft_id to = (raft_id)(1 + rnd(&r, 3));
        struct raft_msg m;
        memset(&m, 0, sizeof(m));
        m.type = (uint8_t)rnd(&r, RAFT_MSG__COUNT + 2);
        m.from = rnd(&r, 10) == 0 ? rnd(&r, 6) : 1 + rnd(&r, 4);
        m.to = rnd(&r, 20) == 0 ? 9 : to;
        raft_term t = h_term(&c, to);
        m.term = rnd(&r, 30) == 0 ? UINT64_MAX - rnd(&r, 3)
                                   : t + rnd(&r, 3) - (t > 0 ? 1 : 0);
        raft_index last = h_last(&c, to);
        m.index = rnd(&r, 30) == 0 ? UINT64_MAX : last + rnd(&r, 5) -
                                                      (last > 3 ? 3 : last);
        m.log_term = rnd(&r, 4);
        m.commit = rnd(&r, 10) == 0 ? UINT64_MAX : rnd(&r, last + 3);
        m.reject = rnd(&r, 2);
        m.hint_index = rnd(&r, last + 5);
        m.hint_term = rnd(&r, 4);
        m.context = rnd(&r, 5);
        uint32_t ne = (uint32_t)rnd(&r, 5);
        for (uint32_t k = 0; k < ne; k++) {
            ents[k].index = m.index + 1 + k + (rnd(&r, 10) == 0);
            ents[k].term = m.log_term + rnd(&r, 2);
            ents[k].type = (uint8_t)rnd(&r, 4);
            ents[k].len = (uint32_t)rnd(&r, 10);
            ents[k].data = rnd(&r, 15) == 0 ? NULL : data;
        }
        if (ne) {
            m.n_entries = ne;
            m.entries = rnd(&r, 15) == 0 ? NULL : ents;
        }
        m.snap.index = rnd(&r, last + 10);
        m.snap.term = rnd(&r, 4);
        m.snap.conf.n_voters = (uint32_t)rnd(&r, 5);
        for (uint32_t k = 0; k < m.snap.conf.n_voters; k++)
            m.snap.conf.voters[k] = rnd(&r, 5);
        m.snap.conf.n_learners = (uint32_t)rnd(&r, 2) * 20;
        m.chunk_seq = (uint32_t)rnd(&r, 3);
        m.chunk_last = rnd(&r, 2);
        m.chunk_len = (uint32_t)rnd(&r, 10);
        m.chunk_data = rnd(&r, 10) == 0 ? NULL : data;
        int rc = raft_step(c.nodes[to], &m);
        assert_true(rc <= 0);
        if (rnd(&r, 3) == 0)
            h_ready(&c, to);
        if (rnd(&r, 50) == 0)
            h_drop_all(&c);
        if (rnd(&r, 20) == 0)
            h_tick(&c, to, 1);
        if (rnd(&r, 40) == 0 && h_role(&c, to) == RAFT_LEADER)
            raft_propose(c.nodes[to], "p", 1, NULL);
        if (c.nq > 1000)
            h_drop_all(&c);
    }
    h_ready_all(&c);
    h_drop_all(&c);
    h_free(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        H_TEST(test_random_schedules_3),
        H_TEST(test_random_schedules_5),
        H_TEST(test_async_storage_schedules),
        H_TEST(test_forged_messages_never_crash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
