/* Unit and property tests of the placement planner: balance, safety of every
 * step, minimal movement. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "rk_err.h"
#include "rk_rand.h"
#include "shard.h"
#include "shard_test_util.h"

/* What the current property case is, printed when a check fails. */
static char g_case[256];

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            print_error("%s:%d: check failed: %s\n  in %s\n", __FILE__,        \
                        __LINE__, #cond, g_case);                              \
            fail();                                                            \
        }                                                                      \
    } while (0)

static uint32_t count_active(const struct shard_map *m)
{
    uint32_t n = 0;
    for (uint32_t i = 0; i < m->n_nodes; i++)
        n += m->nodes[i].state == SHARD_NODE_ACTIVE;
    return n;
}

static uint32_t r_eff_of(const struct shard_map *m)
{
    uint32_t a = count_active(m);
    return m->replication < a ? m->replication : a;
}

static uint32_t live_voters(const struct shard_map *m,
                            const struct shard_info *s)
{
    uint32_t n = 0;
    for (uint32_t j = 0; j < s->n_voters; j++) {
        const struct shard_node *nd = shard_map_node(m, s->voters[j]);
        n += nd != NULL && nd->state != SHARD_NODE_REMOVED;
    }
    return n;
}

static bool has_quorum(const struct shard_map *m, const struct shard_info *s)
{
    return 2 * live_voters(m, s) > s->n_voters;
}

/* ---------------------------------------------------------------------- */
/* The invariants checked after every step                                */
/* ---------------------------------------------------------------------- */

struct watch {
    uint32_t n_shards;
    shard_id ids[SHARD_MAX_SHARDS / 256];
    uint32_t start_voters[SHARD_MAX_SHARDS / 256];
    bool start_quorum[SHARD_MAX_SHARDS / 256];
    uint32_t r_eff;
    uint32_t steps;
    uint32_t stop_after; /* interrupt the plan after this many steps */
};

static void watch_begin(struct watch *w, const struct shard_map *m)
{
    memset(w, 0, sizeof(*w));
    assert_true(m->n_shards <= SHARD_MAX_SHARDS / 256);
    w->n_shards = m->n_shards;
    w->r_eff = r_eff_of(m);
    w->stop_after = UINT32_MAX;
    for (uint32_t s = 0; s < m->n_shards; s++) {
        w->ids[s] = m->shards[s].id;
        w->start_voters[s] = m->shards[s].n_voters;
        w->start_quorum[s] = has_quorum(m, &m->shards[s]);
    }
}

static int after_step(const struct shard_map *m, const struct shard_step *st,
                      uint32_t i, void *arg)
{
    struct watch *w = arg;
    w->steps++;
    /* No node twice in a shard, leader is a voter, ... */
    CHECK(shard_map_validate(m) == 0);
    for (uint32_t s = 0; s < w->n_shards; s++) {
        const struct shard_info *si = &m->shards[s];
        CHECK(si->id == w->ids[s]);
        /* A live majority of the current voters, always. */
        if (w->start_quorum[s])
            CHECK(has_quorum(m, si));
        /* Never below the replication factor during a move. */
        uint32_t floor =
            w->start_voters[s] < w->r_eff ? w->start_voters[s] : w->r_eff;
        CHECK(si->n_voters >= floor);
        /* At most one extra voter, and one learner, during a move. */
        uint32_t ceil = w->start_voters[s] > w->r_eff + 1 ? w->start_voters[s]
                                                          : w->r_eff + 1;
        CHECK(si->n_voters <= ceil);
    }
    (void)st;
    (void)i;
    return w->steps == w->stop_after ? 1 : 0;
}

/*
 * Runs a plan on m with the per-step checks, then checks the end state:
 * balanced, complete, and a fixpoint (planning again does nothing). With
 * `cut`, a quarter of the plans stop after a random prefix instead, as
 * when a new change arrives mid-plan; the next plan starts from there.
 * Returns whether the plan ran to the end.
 */
static bool run_plan(struct shard_map *m, struct shard_plan *p,
                     uint32_t expect_stuck, struct rk_rand *cut)
{
    struct watch w;
    watch_begin(&w, m);
    CHECK(shard_plan_compute(m, p) == 0);
    if (cut != NULL && p->n_steps > 0 && rk_rand_below(cut, 4) == 0)
        w.stop_after = 1 + (uint32_t)rk_rand_below(cut, p->n_steps);
    CHECK(p->n_stuck == expect_stuck);
    uint32_t adds = 0, promotes = 0;
    for (uint32_t i = 0; i < p->n_steps; i++) {
        adds += p->steps[i].kind == SHARD_STEP_ADD_LEARNER;
        promotes += p->steps[i].kind == SHARD_STEP_PROMOTE;
    }
    CHECK(promotes == p->n_moves);
    CHECK(adds <= promotes);
    CHECK(p->n_transfers <= 2 * m->n_shards);
    uint32_t done = 0;
    int rc = shard_plan_simulate(m, p, after_step, &w, &done);
    if (rc == 1 && done == w.stop_after) {
        if (done < p->n_steps)
            return false;
        rc = 0; /* the cut fell after the last step */
    }
    if (rc != 0)
        print_error("step %u (%s shard %u node %llu): %s\n", done,
                    shard_step_kind_name(p->steps[done].kind),
                    p->steps[done].shard,
                    (unsigned long long)p->steps[done].node, rk_err_name(rc));
    CHECK(rc == 0);
    CHECK(done == p->n_steps);
    if (expect_stuck > 0)
        return true;

    struct shard_balance b;
    shard_map_balance(m, &b);
    CHECK(b.misplaced == 0);
    CHECK(b.max_replicas - b.min_replicas <= 1);
    CHECK(b.max_leaders - b.min_leaders <= 1);
    uint32_t r_eff = r_eff_of(m);
    for (uint32_t s = 0; s < m->n_shards; s++) {
        const struct shard_info *si = &m->shards[s];
        CHECK(si->n_voters == r_eff);
        CHECK(si->n_learners == 0);
        CHECK(si->leader != 0);
        for (uint32_t j = 0; j < si->n_voters; j++)
            CHECK(shard_map_node(m, si->voters[j])->state == SHARD_NODE_ACTIVE);
    }
    struct shard_plan again;
    CHECK(shard_plan_compute(m, &again) == 0);
    CHECK(again.n_steps == 0);
    shard_plan_free(&again);
    return true;
}

/* ---------------------------------------------------------------------- */
/* Scenarios                                                              */
/* ---------------------------------------------------------------------- */

static void test_fresh_map_is_a_fixpoint(void **state)
{
    (void)state;
    snprintf(g_case, sizeof(g_case), "fresh maps");
    for (uint32_t n = 1; n <= 9; n++) {
        for (uint32_t s = 1; s <= 40; s += 13) {
            struct shard_map m;
            assert_int_equal(test_map(&m, n, s, 3, 4), 0);
            struct shard_plan p;
            assert_int_equal(shard_plan_compute(&m, &p), 0);
            assert_int_equal(p.n_steps, 0);
            shard_plan_free(&p);
            shard_map_free(&m);
        }
    }
}

static void test_add_node(void **state)
{
    (void)state;
    snprintf(g_case, sizeof(g_case), "add a 4th node to 3, 12 shards");
    struct shard_map m;
    assert_int_equal(test_map(&m, 3, 12, 3, 8), 0);
    struct shard_node n = test_node(4);
    assert_int_equal(shard_map_node_add(&m, &n), 0);
    struct shard_plan p;
    run_plan(&m, &p, 0, NULL);
    /* 13 shards x 3 = 39 replicas: node 4 takes 9 or 10 of them. */
    assert_true(p.n_moves >= 9 && p.n_moves <= 10);
    /* Each move is learner, promote, remove: the leader moves first. */
    for (uint32_t i = 0; i + 2 < p.n_steps; i++) {
        if (p.steps[i].kind != SHARD_STEP_ADD_LEARNER)
            continue;
        assert_int_equal(p.steps[i + 1].kind, SHARD_STEP_PROMOTE);
        assert_int_equal(p.steps[i + 1].node, p.steps[i].node);
        assert_int_equal(p.steps[i + 1].shard, p.steps[i].shard);
        uint8_t k = p.steps[i + 2].kind;
        assert_true(k == SHARD_STEP_REMOVE || k == SHARD_STEP_TRANSFER_LEADER);
    }
    shard_plan_free(&p);
    shard_map_free(&m);
}

static void test_drain_and_remove(void **state)
{
    (void)state;
    struct shard_map m;
    struct shard_plan p;
    snprintf(g_case, sizeof(g_case), "drain node 2 of 5");
    assert_int_equal(test_map(&m, 5, 20, 3, 8), 0);
    assert_int_equal(shard_map_node_set_state(&m, 2, SHARD_NODE_DRAINING), 0);
    run_plan(&m, &p, 0, NULL);
    assert_true(p.n_moves <= (21 * 3 + 4) / 5 + 3);
    shard_plan_free(&p);

    snprintf(g_case, sizeof(g_case), "node 4 of 4 dies");
    assert_int_equal(shard_map_node_set_state(&m, 4, SHARD_NODE_REMOVED), 0);
    run_plan(&m, &p, 0, NULL);
    shard_plan_free(&p);

    /* Down to R nodes and below: shards shrink to the nodes left. */
    snprintf(g_case, sizeof(g_case), "3 nodes left, one drains");
    assert_int_equal(shard_map_node_set_state(&m, 5, SHARD_NODE_DRAINING), 0);
    run_plan(&m, &p, 0, NULL);
    for (uint32_t s = 0; s < m.n_shards; s++)
        assert_int_equal(m.shards[s].n_voters, 2);
    shard_plan_free(&p);

    /* Nodes come back: shards grow to R again. */
    snprintf(g_case, sizeof(g_case), "node 5 active again, node 6 joins");
    assert_int_equal(shard_map_node_set_state(&m, 5, SHARD_NODE_ACTIVE), 0);
    struct shard_node n = test_node(6);
    assert_int_equal(shard_map_node_add(&m, &n), 0);
    run_plan(&m, &p, 0, NULL);
    for (uint32_t s = 0; s < m.n_shards; s++)
        assert_int_equal(m.shards[s].n_voters, 3);
    shard_plan_free(&p);

    /* No active node: nothing to plan for. */
    for (shard_node_id id = 1; id <= 6; id++)
        shard_map_node_set_state(&m, id, SHARD_NODE_DRAINING);
    assert_int_equal(shard_plan_compute(&m, &p), RK_EUNAVAILABLE);
    assert_int_equal(p.n_steps, 0);
    shard_map_free(&m);
}

/* Two of three voters of some shards die: those shards are left alone. */
static void test_lost_quorum_is_skipped(void **state)
{
    (void)state;
    snprintf(g_case, sizeof(g_case), "2 of 5 nodes die at once");
    struct shard_map m;
    assert_int_equal(test_map(&m, 5, 10, 3, 8), 0);
    assert_int_equal(shard_map_node_set_state(&m, 1, SHARD_NODE_REMOVED), 0);
    assert_int_equal(shard_map_node_set_state(&m, 2, SHARD_NODE_REMOVED), 0);
    uint32_t stuck = 0;
    for (uint32_t s = 0; s < m.n_shards; s++)
        stuck += !has_quorum(&m, &m.shards[s]);
    assert_true(stuck > 0);
    struct shard_plan p;
    run_plan(&m, &p, stuck, NULL);
    for (uint32_t i = 0; i < p.n_steps; i++)
        assert_true(has_quorum(&m, shard_map_shard(&m, p.steps[i].shard)));
    shard_plan_free(&p);
    shard_map_free(&m);
}

/* A shard holding stale learners, and a leader-less shard. */
static void test_learners_and_missing_leader(void **state)
{
    (void)state;
    snprintf(g_case, sizeof(g_case), "stale learners, leader 0");
    struct shard_map m;
    assert_int_equal(test_map(&m, 4, 4, 3, 8), 0);
    for (uint32_t s = 0; s < m.n_shards; s++) {
        struct shard_info *si = &m.shards[s];
        for (shard_node_id id = 1; id <= 4; id++) {
            if (shard__find_id_test(si->voters, si->n_voters, id) < 0) {
                struct shard_step st = {SHARD_STEP_ADD_LEARNER, si->id, id};
                assert_int_equal(shard_map_apply_step(&m, &st), 0);
            }
        }
    }
    m.shards[2].leader = 0;
    struct shard_plan p;
    run_plan(&m, &p, 0, NULL);
    shard_plan_free(&p);
    shard_map_free(&m);
}

/* ---------------------------------------------------------------------- */
/* Property test over random clusters                                     */
/* ---------------------------------------------------------------------- */

struct totals {
    uint64_t cases, plans, steps, moves, bound, transfers, stuck;
    uint64_t least, excess_max; /* moves that could not be avoided */
    uint64_t cut;               /* plans interrupted part way */
    uint64_t transfers_single, leaders_least, transfer_excess_max;
};

/* Preferred leaders on a node: all of them must move when it leaves. */
static uint32_t leaders_on(const struct shard_map *m, shard_node_id id)
{
    uint32_t n = 0;
    for (uint32_t s = 0; s < m->n_shards; s++)
        n += m->shards[s].leader == id;
    return n;
}

/* Voters a node hosts: all of them must move when it leaves. */
static uint32_t voters_on(const struct shard_map *m, shard_node_id id)
{
    uint32_t n = 0;
    for (uint32_t s = 0; s < m->n_shards; s++)
        n += shard__find_id_test(m->shards[s].voters, m->shards[s].n_voters,
                                 id) >= 0;
    return n;
}

static shard_node_id pick_active(const struct shard_map *m, struct rk_rand *r)
{
    uint32_t a = count_active(m), k = (uint32_t)rk_rand_below(r, a);
    for (uint32_t i = 0; i < m->n_nodes; i++)
        if (m->nodes[i].state == SHARD_NODE_ACTIVE && k-- == 0)
            return m->nodes[i].id;
    return 0;
}

/* Whether every shard has exactly r_eff voters, all on active nodes,
 * balanced, and no learner (no plan was cut short half-way). */
static bool settled(const struct shard_map *m)
{
    struct shard_balance b;
    shard_map_balance(m, &b);
    if (b.misplaced != 0 || b.max_replicas - b.min_replicas > 1)
        return false;
    for (uint32_t s = 0; s < m->n_shards; s++)
        if (m->shards[s].n_learners != 0 ||
            m->shards[s].n_voters != r_eff_of(m))
            return false;
    return true;
}

static void one_case(uint64_t seed, struct totals *t)
{
    struct rk_rand r;
    rk_rand_seed(&r, seed);
    uint32_t n = 3 + (uint32_t)rk_rand_below(&r, 10); /* 3..12 */
    if (rk_rand_below(&r, 10) == 0)
        n = 1 + (uint32_t)rk_rand_below(&r, 2); /* sometimes 1..2 */
    uint32_t s = 1 + (uint32_t)rk_rand_below(&r, 64);
    uint32_t rep = n < 3 ? n : 3;
    struct shard_map m;
    snprintf(g_case, sizeof(g_case), "seed %llu: create n=%u s=%u R=%u",
             (unsigned long long)seed, n, s, rep);
    CHECK(test_map(&m, n, s, rep, 4) == 0);
    shard_node_id next_id = n + 1;
    t->cases++;

    for (int round = 0; round < 6; round++) {
        uint32_t active = count_active(&m);
        uint32_t r_before = r_eff_of(&m);
        bool was_settled = settled(&m);
        uint32_t total = (m.n_shards) * r_before;
        uint32_t ev = (uint32_t)rk_rand_below(&r, 6);
        int64_t bound = -1;      /* the ceil(total / N) + R movement bound */
        uint32_t least = 0;      /* replicas that must move at the very least */
        uint32_t lead_least = 0; /* leaders that must move at least */
        const char *what = "";
        if (ev == 0 || active == 1) {
            struct shard_node nd = test_node(next_id++);
            CHECK(shard_map_node_add(&m, &nd) == 0);
            bound = (total + active) / (active + 1) + r_before;
            least = total / (active + 1);
            lead_least = m.n_shards / (active + 1);
            what = "add node";
        } else if (ev == 1 || ev == 2) {
            shard_node_id victim = pick_active(&m, &r);
            least = voters_on(&m, victim);
            lead_least = leaders_on(&m, victim);
            CHECK(shard_map_node_set_state(&m, victim,
                                           ev == 1 ? SHARD_NODE_DRAINING
                                                   : SHARD_NODE_REMOVED) == 0);
            bound = (total + active - 1) / active + r_before;
            what = ev == 1 ? "drain node" : "node dies";
        } else if (ev == 3) {
            /* Split a random data shard; finish it or leave it running. */
            const struct shard_info *d =
                &m.shards[1 + rk_rand_below(&r, m.n_shards - 1)];
            shard_id donor = d->id, rid;
            if (d->state == SHARD_STATE_ACTIVE &&
                shard_map_split_begin(&m, donor, &rid, NULL, NULL) == 0 &&
                rk_rand_below(&r, 2) == 0)
                CHECK(shard_map_split_finish(&m, donor) == 0);
            what = "split";
        } else if (ev == 4) {
            /* Two changes at once: a node joins as another drains. */
            struct shard_node nd = test_node(next_id++);
            CHECK(shard_map_node_add(&m, &nd) == 0);
            CHECK(shard_map_node_set_state(&m, pick_active(&m, &r),
                                           SHARD_NODE_DRAINING) == 0);
            what = "add + drain";
        } else {
            /* A draining or removed node comes back, or a no-op. */
            for (uint32_t i = 0; i < m.n_nodes; i++)
                if (m.nodes[i].state == SHARD_NODE_DRAINING) {
                    CHECK(shard_map_node_set_state(&m, m.nodes[i].id,
                                                   SHARD_NODE_ACTIVE) == 0);
                    break;
                }
            what = "reactivate";
        }
        CHECK(shard_map_validate(&m) == 0);
        if (count_active(&m) == 0)
            break;
        uint32_t stuck = 0;
        for (uint32_t i = 0; i < m.n_shards; i++)
            stuck += !has_quorum(&m, &m.shards[i]);
        snprintf(g_case, sizeof(g_case),
                 "seed %llu round %d: %s (nodes %u active %u shards %u R=%u)",
                 (unsigned long long)seed, round, what, m.n_nodes,
                 count_active(&m), m.n_shards, m.replication);
        struct shard_plan p;
        bool full = run_plan(&m, &p, stuck, &r);
        t->plans++;
        t->cut += !full;
        t->steps += p.n_steps;
        t->transfers += p.n_transfers;
        t->stuck += stuck;
        /* Moving one of N nodes moves about 1/N of the replicas. */
        if (full && bound >= 0 && was_settled && stuck == 0 &&
            r_eff_of(&m) == r_before) {
            if (p.n_moves > (uint64_t)bound)
                print_error("moved %u replicas, bound %lld\n", p.n_moves,
                            (long long)bound);
            CHECK(p.n_moves <= (uint64_t)bound);
            CHECK(p.n_moves >= least);
            t->moves += p.n_moves;
            t->bound += (uint64_t)bound;
            t->least += least;
            /* Leaders: at least those that must move (a newcomer's share,
             * or the leavers' own); the excess (chains of shifts when the
             * voters of an orphaned shard all lead already, and leaders
             * that hand over before their replica moves) is printed. */
            CHECK(p.n_transfers >= lead_least);
            t->transfers_single += p.n_transfers;
            t->leaders_least += lead_least;
            if (p.n_transfers - lead_least > t->transfer_excess_max)
                t->transfer_excess_max = p.n_transfers - lead_least;
            if (p.n_moves - least > t->excess_max)
                t->excess_max = p.n_moves - least;
        }
        shard_plan_free(&p);
        if (stuck > 0)
            break; /* that cluster lost data: start a new one */
    }
    shard_map_free(&m);
}

static void test_property_random_clusters(void **state)
{
    (void)state;
    struct totals t;
    memset(&t, 0, sizeof(t));
    uint64_t base = 20261122;
    const char *env = getenv("SHARD_SEED");
    if (env != NULL) { /* reproduce one case */
        one_case(strtoull(env, NULL, 10), &t);
        return;
    }
    /* SHARD_CASES=n runs more cases (e.g. a long soak before a commit). */
    uint64_t cases = 500;
    if (getenv("SHARD_CASES") != NULL)
        cases = strtoull(getenv("SHARD_CASES"), NULL, 10);
    for (uint64_t i = 0; i < cases; i++)
        one_case(base + i, &t);
    printf("planner property: %llu clusters, %llu plans (%llu cut short), "
           "%llu steps, %llu transfers, %llu stuck shards\n"
           "planner property: single-node changes moved %llu replicas; "
           "at least %llu had to move; bound sum(ceil(total/N)+R) = %llu; "
           "worst case %llu above the least\n"
           "planner property: their leader transfers %llu; at least %llu "
           "had to move; worst case %llu above the least\n",
           (unsigned long long)t.cases, (unsigned long long)t.plans,
           (unsigned long long)t.cut, (unsigned long long)t.steps,
           (unsigned long long)t.transfers, (unsigned long long)t.stuck,
           (unsigned long long)t.moves, (unsigned long long)t.least,
           (unsigned long long)t.bound, (unsigned long long)t.excess_max,
           (unsigned long long)t.transfers_single,
           (unsigned long long)t.leaders_least,
           (unsigned long long)t.transfer_excess_max);
}

/* A larger cluster, to show the planner's cost (printed, not asserted). */
static void test_scale(void **state)
{
    (void)state;
    snprintf(g_case, sizeof(g_case), "scale: 40 nodes, 2000 shards");
    struct shard_node nodes[64];
    test_nodes(nodes, 40, 1);
    struct shard_map m;
    clock_t c0 = clock();
    assert_int_equal(shard_map_create(&m, 7, nodes, 40, 2000, 3, 16), 0);
    clock_t c1 = clock();
    struct shard_node n = test_node(41);
    assert_int_equal(shard_map_node_add(&m, &n), 0);
    struct shard_plan p;
    assert_int_equal(shard_plan_compute(&m, &p), 0);
    clock_t c2 = clock();
    assert_int_equal(shard_plan_simulate(&m, &p, NULL, NULL, NULL), 0);
    struct shard_balance b;
    shard_map_balance(&m, &b);
    assert_true(b.max_replicas - b.min_replicas <= 1);
    assert_true(b.max_leaders - b.min_leaders <= 1);
    assert_true(p.n_moves <= (2001 * 3 + 40) / 41 + 3);
    /* The newcomer needs floor(2001 / 41) = 48 leaders; no more move. */
    assert_true(p.n_transfers >= 48 && p.n_transfers <= 49);
    printf("planner scale: create 40 nodes x 2001 shards %.1f ms, plan for "
           "a 41st node %.1f ms: %u steps, %u moves, %u transfers\n",
           1000.0 * (double)(c1 - c0) / CLOCKS_PER_SEC,
           1000.0 * (double)(c2 - c1) / CLOCKS_PER_SEC, p.n_steps, p.n_moves,
           p.n_transfers);
    shard_plan_free(&p);
    shard_map_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fresh_map_is_a_fixpoint),
        cmocka_unit_test(test_add_node),
        cmocka_unit_test(test_drain_and_remove),
        cmocka_unit_test(test_lost_quorum_is_skipped),
        cmocka_unit_test(test_learners_and_missing_leader),
        cmocka_unit_test(test_property_random_clusters),
        cmocka_unit_test(test_scale),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
