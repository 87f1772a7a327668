/* Tests of the simulator over the real core: determinism, faults, checks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sim.h"

/* Canonical-style fixture macros: a quiet cluster without random faults. */
#define CLUSTER_CALM(s, seed, n)                                               \
    do {                                                                       \
        struct sim_opts o_;                                                    \
        sim_opts_default(&o_, (seed), (n));                                    \
        o_.crashes = o_.partitions = o_.membership = false;                    \
        o_.transfers = o_.snapshots = false;                                   \
        o_.loss = o_.dup = o_.reorder = 0;                                     \
        assert_int_equal(sim_init((s), &o_), 0);                               \
        (s)->workload = false;                                                 \
    } while (0)
#define CLUSTER_ELECT(s, out)                                                  \
    do {                                                                       \
        (out) = sim_until_leader((s), 10000);                                  \
        assert_true((out) >= 0);                                               \
        assert_false((s)->failed);                                             \
    } while (0)
#define CLUSTER_KILL_LEADER(s, l) sim_crash((s), (l))

static void run_seed(uint64_t seed, int nodes, uint64_t events, uint64_t *hash,
                     uint64_t *n_events, bool *failed)
{
    struct sim_opts o;
    sim_opts_default(&o, seed, nodes);
    o.max_events = events;
    struct sim s;
    assert_int_equal(sim_init(&s, &o), 0);
    sim_run(&s);
    *hash = s.trace_hash;
    *n_events = s.events;
    *failed = s.failed;
    sim_free(&s);
}

static void test_same_seed_same_trace(void **state)
{
    (void)state;
    uint64_t h1, h2, h3, e1, e2, e3;
    bool f1, f2, f3;
    run_seed(11, 3, 3000, &h1, &e1, &f1);
    run_seed(11, 3, 3000, &h2, &e2, &f2);
    run_seed(12, 3, 3000, &h3, &e3, &f3);
    assert_int_equal(h1, h2);
    assert_int_equal(e1, e2);
    assert_int_equal(f1, f2);
    assert_true(h1 != h3);
}

static void test_calm_cluster_elects_and_commits(void **state)
{
    (void)state;
    struct sim s;
    int l;
    CLUSTER_CALM(&s, 3, 5);
    CLUSTER_ELECT(&s, l);
    raft_index idx = sim_propose_write(&s, l, 1, 42);
    assert_true(idx > 0);
    for (int i = 0; i < 5; i++) {
        assert_true(sim_until_applied(&s, i, idx, 5000));
        assert_int_equal(s.nodes[i].kv[1], 42);
    }
    assert_false(s.failed);
    sim_free(&s);
}

static void test_new_leader_after_leader_crash(void **state)
{
    (void)state;
    struct sim s;
    int l, l2;
    CLUSTER_CALM(&s, 5, 3);
    CLUSTER_ELECT(&s, l);
    raft_index idx = sim_propose_write(&s, l, 0, 7);
    assert_true(sim_until_applied(&s, l, idx, 5000));
    struct raft_status st;
    raft_status(s.nodes[l].raft, &st);
    raft_term old_term = st.term;
    CLUSTER_KILL_LEADER(&s, l);
    CLUSTER_ELECT(&s, l2);
    assert_int_not_equal(l, l2);
    raft_status(s.nodes[l2].raft, &st);
    assert_true(st.term > old_term);
    idx = sim_propose_write(&s, l2, 0, 8);
    assert_true(sim_until_applied(&s, l2, idx, 5000));
    assert_int_equal(s.nodes[l2].kv[0], 8);
    /* The old leader comes back and catches up. */
    assert_int_equal(sim_restart(&s, l), 0);
    assert_true(sim_until_applied(&s, l, idx, 5000));
    assert_int_equal(s.nodes[l].kv[0], 8);
    assert_false(s.failed);
    sim_free(&s);
}

static void test_minority_partition_cannot_commit(void **state)
{
    (void)state;
    struct sim s;
    int l;
    CLUSTER_CALM(&s, 9, 5);
    CLUSTER_ELECT(&s, l);
    for (int i = 0; i < 5; i++)
        if (i != l)
            sim_cut(&s, l, i, true);
    raft_index idx = sim_propose_write(&s, l, 2, 5);
    /* Isolated: the write cannot commit (check-quorum makes it step down). */
    assert_false(sim_until_applied(&s, l, idx ? idx : 1000000, 3000));
    sim_heal(&s);
    int l2;
    CLUSTER_ELECT(&s, l2);
    raft_index idx2 = sim_propose_write(&s, l2, 2, 6);
    assert_true(idx2 > 0);
    for (int i = 0; i < 5; i++)
        assert_true(sim_until_applied(&s, i, idx2, 5000));
    assert_false(s.failed);
    sim_free(&s);
}

static void test_snapshot_catches_up_lagging_node(void **state)
{
    (void)state;
    struct sim s;
    int l;
    CLUSTER_CALM(&s, 21, 3);
    CLUSTER_ELECT(&s, l);
    int lag = (l + 1) % 3;
    sim_crash(&s, lag);
    raft_index idx = 0;
    for (int k = 0; k < 30; k++) {
        idx = sim_propose_write(&s, l, k % SIM_KEYS, 100 + k);
        assert_true(idx > 0);
        assert_true(sim_until_applied(&s, l, idx, 5000));
    }
    assert_int_equal(sim_take_snapshot(&s, l), 0);
    assert_int_equal(s.n_snapshots, 1);
    assert_int_equal(sim_restart(&s, lag), 0);
    assert_true(sim_until_applied(&s, lag, idx, 10000));
    assert_true(s.n_snap_installs >= 1);
    assert_memory_equal(s.nodes[lag].kv, s.nodes[l].kv, sizeof(s.nodes[l].kv));
    assert_false(s.failed);
    sim_free(&s);
}

/* The checker, fed a hand-made violation in a live cluster, must see it. */
static void test_checker_detects_injected_divergence(void **state)
{
    (void)state;
    struct sim s;
    int l;
    CLUSTER_CALM(&s, 4, 3);
    CLUSTER_ELECT(&s, l);
    raft_index idx = sim_propose_write(&s, l, 0, 1);
    assert_true(sim_until_applied(&s, l, idx, 5000));
    assert_false(s.failed);
    /* A node "applies" another entry at a committed index. */
    sim_check_apply(&s, 99, idx, s.applied[idx].term + 1, 0x1234, 0);
    assert_true(s.failed);
    assert_non_null(strstr(s.fail_what, "state-machine safety"));
    sim_free(&s);

    CLUSTER_CALM(&s, 4, 3);
    CLUSTER_ELECT(&s, l);
    struct raft_status st;
    raft_status(s.nodes[l].raft, &st);
    /* A second leader claims the current term. */
    sim_check_leader(&s, s.nodes[l].id + 1, st.term);
    assert_false(sim_check_safety(&s));
    sim_free(&s);
}

static void test_faulty_seeds_hold_invariants(void **state)
{
    (void)state;
    for (uint64_t seed = 100; seed < 104; seed++) {
        uint64_t h, e;
        bool failed;
        run_seed(seed, 5, 3000, &h, &e, &failed);
        assert_false(failed);
        assert_true(e >= 3000);
    }
}

/* End to end, the linearizability check must object to stale local reads. */
static void test_history_check_catches_stale_reads(void **state)
{
    (void)state;
    int found = 0;
    for (uint64_t seed = 1; seed <= 40 && found == 0; seed++) {
        struct sim_opts o;
        sim_opts_default(&o, seed, 5);
        o.max_events = 20000;
        o.stale_reads = true;
        struct sim s;
        assert_int_equal(sim_init(&s, &o), 0);
        sim_run(&s);
        if (s.failed) {
            assert_non_null(strstr(s.fail_what, "linearizab"));
            found++;
        }
        sim_free(&s);
    }
    assert_true(found > 0);
}

/* A driver that lets votes and acks out before the sync must be caught. */
static void test_checker_catches_acks_before_sync(void **state)
{
    (void)state;
    struct sim_opts o;
    sim_opts_default(&o, 1, 3);
    o.max_events = 5000;
    o.early_acks = true;
    struct sim s;
    assert_int_equal(sim_init(&s, &o), 0);
    sim_run(&s);
    assert_true(s.failed);
    assert_non_null(strstr(s.fail_what, "before durable"));
    sim_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_seed_same_trace),
        cmocka_unit_test(test_calm_cluster_elects_and_commits),
        cmocka_unit_test(test_new_leader_after_leader_crash),
        cmocka_unit_test(test_minority_partition_cannot_commit),
        cmocka_unit_test(test_snapshot_catches_up_lagging_node),
        cmocka_unit_test(test_checker_detects_injected_divergence),
        cmocka_unit_test(test_faulty_seeds_hold_invariants),
        cmocka_unit_test(test_history_check_catches_stale_reads),
        cmocka_unit_test(test_checker_catches_acks_before_sync),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
