/* Unit tests of the shard map: creation, copies, the node registry, splits,
 * steps and the codec. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <xxhash.h>

#include "rk_err.h"
#include "rk_rand.h"
#include "shard.h"
#include "shard_test_util.h"

static void test_create(void **state)
{
    (void)state;
    struct shard_map m;
    assert_int_equal(test_map(&m, 5, 16, 3, 32), 0);
    assert_int_equal(shard_map_validate(&m), 0);
    assert_int_equal(m.epoch, 1);
    assert_int_equal(m.cluster_id, 0xC1u);
    assert_int_equal(m.n_shards, 17);
    assert_int_equal(m.next_shard_id, 17);
    assert_int_equal(m.ring.n_points, 16 * 32);
    assert_int_equal(m.shards[0].id, SHARD_META_ID);
    for (uint32_t s = 0; s < m.n_shards; s++) {
        const struct shard_info *si = &m.shards[s];
        assert_int_equal(si->n_voters, 3);
        assert_int_equal(si->n_learners, 0);
        assert_int_equal(si->state, SHARD_STATE_ACTIVE);
        assert_true(si->leader != 0);
        assert_ptr_equal(shard_map_shard(&m, si->id), si);
        if (s > 0) /* every data shard owns an equal share */
            assert_true(shard_ring_share(&m.ring, si->id) > 1.0 / 16 - 1e-9);
    }
    assert_true(shard_ring_share(&m.ring, SHARD_META_ID) == 0.0);
    struct shard_balance b;
    shard_map_balance(&m, &b);
    assert_int_equal(b.n_active, 5);
    assert_true(b.max_replicas - b.min_replicas <= 1);
    assert_true(b.max_leaders - b.min_leaders <= 1);
    assert_int_equal(b.misplaced, 0);
    assert_null(shard_map_shard(&m, 17));
    /* 17 shards x 3 replicas over 5 nodes: 10 or 11 each, in id order. */
    uint32_t hosted = 0;
    for (shard_node_id id = 1; id <= 5; id++) {
        shard_id ids[32];
        uint32_t k = shard_map_node_shards(&m, id, ids, 32);
        assert_true(k == 10 || k == 11);
        assert_int_equal(shard_map_node_shards(&m, id, NULL, 0), k);
        for (uint32_t i = 0; i < k; i++) {
            const struct shard_info *si = shard_map_shard(&m, ids[i]);
            assert_true(shard__find_id_test(si->voters, si->n_voters, id) >= 0);
            if (i > 0)
                assert_true(ids[i - 1] < ids[i]);
        }
        hosted += k;
    }
    assert_int_equal(hosted, 17 * 3);
    assert_int_equal(shard_map_node_shards(&m, 99, NULL, 0), 0);
    assert_non_null(shard_map_node(&m, 5));
    assert_null(shard_map_node(&m, 6));
    shard_map_free(&m);

    /* Fewer nodes than R: every shard on every node. */
    assert_int_equal(test_map(&m, 2, 4, 3, 8), 0);
    for (uint32_t s = 0; s < m.n_shards; s++)
        assert_int_equal(m.shards[s].n_voters, 2);
    shard_map_free(&m);
    shard_map_free(&m); /* idempotent */
}

static void test_create_rejects(void **state)
{
    (void)state;
    struct shard_map m;
    struct shard_node n[3];
    test_nodes(n, 3, 1);
    assert_int_equal(shard_map_create(&m, 1, n, 0, 4, 3, 8), RK_EINVAL);
    assert_int_equal(shard_map_create(&m, 1, n, 3, 0, 3, 8), RK_EINVAL);
    assert_int_equal(shard_map_create(&m, 1, n, 3, 4, 0, 8), RK_EINVAL);
    assert_int_equal(shard_map_create(&m, 1, n, 3, 4, 8, 8), RK_EINVAL);
    assert_int_equal(shard_map_create(&m, 1, n, 3, 4, 3, 0), RK_EINVAL);
    n[1].id = 1; /* duplicate id */
    assert_int_equal(shard_map_create(&m, 1, n, 3, 4, 3, 8), RK_EINVAL);
    test_nodes(n, 3, 1);
    n[2].id = 0;
    assert_int_equal(shard_map_create(&m, 1, n, 3, 4, 3, 8), RK_EINVAL);
    test_nodes(n, 3, 1);
    n[0].peer_addr[0] = '\0';
    assert_int_equal(shard_map_create(&m, 1, n, 3, 4, 3, 8), RK_EINVAL);
    test_nodes(n, 3, 1);
    memset(n[0].client_addr, 'x', SHARD_ADDR_MAX); /* no NUL */
    assert_int_equal(shard_map_create(&m, 1, n, 3, 4, 3, 8), RK_EINVAL);
    test_nodes(n, 3, 1);
    n[0].state = SHARD_NODE_DRAINING;
    assert_int_equal(shard_map_create(&m, 1, n, 3, 4, 3, 8), RK_EINVAL);
    assert_int_equal(m.n_shards, 0);
    assert_null(m.nodes);
}

static void test_copy_equal(void **state)
{
    (void)state;
    struct shard_map a, b;
    assert_int_equal(test_map(&a, 4, 8, 3, 16), 0);
    assert_int_equal(shard_map_copy(&b, &a), 0);
    assert_true(shard_map_equal(&a, &b));
    assert_ptr_not_equal(a.shards, b.shards);
    b.shards[3].leader = b.shards[3].voters[1] == b.shards[3].leader
                             ? b.shards[3].voters[0]
                             : b.shards[3].voters[1];
    assert_false(shard_map_equal(&a, &b));
    shard_map_free(&b);
    assert_int_equal(shard_map_copy(&b, &a), 0);
    strcpy(b.nodes[2].client_addr, "10.0.0.1:1");
    assert_false(shard_map_equal(&a, &b));
    shard_map_free(&b);
    assert_int_equal(shard_map_copy(&b, &a), 0);
    b.ring.points[7].shard = b.ring.points[7].shard % 8 + 1;
    assert_false(shard_map_equal(&a, &b));
    shard_map_free(&b);

    /* Empty maps copy and compare too. */
    struct shard_map e, f;
    shard_map_init(&e);
    assert_int_equal(shard_map_copy(&f, &e), 0);
    assert_true(shard_map_equal(&e, &f));
    assert_false(shard_map_equal(&e, &a));
    shard_map_free(&f);
    shard_map_free(&a);
}

static void test_node_registry(void **state)
{
    (void)state;
    struct shard_map m;
    assert_int_equal(test_map(&m, 3, 4, 3, 8), 0);
    struct shard_node n = test_node(9);
    assert_int_equal(shard_map_node_add(&m, &n), 0);
    assert_int_equal(m.epoch, 2);
    assert_int_equal(m.n_nodes, 4);
    assert_int_equal(m.nodes[3].id, 9);
    assert_int_equal(shard_map_node_add(&m, &n), RK_EEXIST);
    n = test_node(5); /* sorted insert in the middle */
    assert_int_equal(shard_map_node_add(&m, &n), 0);
    assert_int_equal(m.nodes[3].id, 5);
    assert_int_equal(shard_map_validate(&m), 0);
    n = test_node(0);
    assert_int_equal(shard_map_node_add(&m, &n), RK_EINVAL);
    n = test_node(11);
    n.state = SHARD_NODE_REMOVED;
    assert_int_equal(shard_map_node_add(&m, &n), RK_EINVAL);
    n = test_node(11);
    n.client_addr[0] = '\0';
    assert_int_equal(shard_map_node_add(&m, &n), RK_EINVAL);

    uint64_t e = m.epoch;
    assert_int_equal(shard_map_node_set_state(&m, 5, SHARD_NODE_DRAINING), 0);
    assert_int_equal(m.epoch, e + 1);
    assert_int_equal(shard_map_node_set_state(&m, 5, SHARD_NODE_DRAINING), 0);
    assert_int_equal(m.epoch, e + 1); /* no change, no new epoch */
    assert_int_equal(shard_map_node_set_state(&m, 5, SHARD_NODE_ACTIVE), 0);
    assert_int_equal(shard_map_node_set_state(&m, 5, SHARD_NODE_REMOVED), 0);
    assert_int_equal(shard_map_node_set_state(&m, 5, SHARD_NODE_ACTIVE),
                     RK_EINVAL);
    assert_int_equal(shard_map_node_set_state(&m, 5, 0), RK_EINVAL);
    assert_int_equal(shard_map_node_set_state(&m, 77, SHARD_NODE_DRAINING),
                     RK_ENOTFOUND);
    n = test_node(5); /* a removed id is never reused */
    assert_int_equal(shard_map_node_add(&m, &n), RK_EEXIST);
    shard_map_free(&m);
}

/* Routes 100k keys before and after a split of shard `donor`. */
static void check_split(struct shard_map *m, shard_id donor)
{
    enum { KEYS = 100000 };
    shard_id *before = malloc(KEYS * sizeof(*before));
    assert_non_null(before);
    for (int i = 0; i < KEYS; i++) {
        char k[32];
        int n = snprintf(k, sizeof(k), "key:%d", i);
        before[i] = shard_map_route(m, k, (size_t)n);
    }
    struct shard_ring old;
    assert_int_equal(shard_ring_copy(&old, &m->ring), 0);
    double share = shard_ring_share(&m->ring, donor);
    uint64_t epoch = m->epoch;
    shard_id rid;
    struct shard_move *mv;
    uint32_t n_mv;
    assert_int_equal(shard_map_split_begin(m, donor, &rid, &mv, &n_mv), 0);
    assert_int_equal(shard_map_validate(m), 0);
    assert_int_equal(m->epoch, epoch + 1);
    const struct shard_info *d = shard_map_shard(m, donor);
    const struct shard_info *r = shard_map_shard(m, rid);
    assert_non_null(r);
    assert_int_equal(d->state, SHARD_STATE_SPLIT_DONOR);
    assert_int_equal(r->state, SHARD_STATE_SPLIT_RECIPIENT);
    assert_int_equal(d->split_peer, rid);
    assert_int_equal(r->split_peer, donor);
    assert_int_equal(r->n_voters, d->n_voters);
    assert_memory_equal(r->voters, d->voters,
                        d->n_voters * sizeof(d->voters[0]));
    assert_int_equal(r->leader, d->leader);
    /* The moves are exactly the ring diff, all donor -> recipient. */
    assert_true(n_mv >= 1);
    struct shard_move *diff;
    uint32_t n_diff;
    assert_int_equal(shard_ring_diff(&old, &m->ring, &diff, &n_diff), 0);
    assert_int_equal(n_diff, n_mv);
    assert_memory_equal(diff, mv, n_mv * sizeof(*mv));
    for (uint32_t i = 0; i < n_mv; i++) {
        assert_int_equal(mv[i].from, donor);
        assert_int_equal(mv[i].to, rid);
    }
    /* About half of the donor's keyspace moves. */
    double moved = shard_ring_share(&m->ring, rid);
    assert_true(moved >= 0.3 * share && moved <= 0.7 * share);
    assert_true(shard_ring_share(&m->ring, donor) + moved > share - 1e-9);
    /* During the handoff the donor still serves everything it had. */
    for (int i = 0; i < KEYS; i++) {
        char k[32];
        int n = snprintf(k, sizeof(k), "key:%d", i);
        assert_int_equal(shard_map_route(m, k, (size_t)n), before[i]);
    }
    assert_int_equal(shard_map_split_begin(m, donor, &rid, NULL, NULL),
                     RK_EBUSY);
    assert_int_equal(shard_map_split_finish(m, donor), 0);
    assert_int_equal(shard_map_validate(m), 0);
    assert_int_equal(m->n_moves, 0);
    /* Only the donor's keys moved, all to the recipient, about half. */
    uint32_t donor_keys = 0, moved_keys = 0;
    for (int i = 0; i < KEYS; i++) {
        char k[32];
        int n = snprintf(k, sizeof(k), "key:%d", i);
        shard_id now = shard_map_route(m, k, (size_t)n);
        donor_keys += before[i] == donor;
        if (now != before[i]) {
            assert_int_equal(before[i], donor);
            assert_int_equal(now, rid);
            moved_keys++;
        }
    }
    assert_true(moved_keys >= donor_keys * 3 / 10 &&
                moved_keys <= donor_keys * 7 / 10);
    free(mv);
    free(diff);
    free(before);
    shard_ring_free(&old);
}

static void test_split(void **state)
{
    (void)state;
    struct shard_map m;
    assert_int_equal(test_map(&m, 3, 8, 3, 64), 0);
    check_split(&m, 3);
    assert_int_equal(m.n_shards, 10);
    assert_int_equal(m.shards[9].id, 9);
    check_split(&m, 9); /* split the new shard again */
    check_split(&m, 1);
    assert_int_equal(m.next_shard_id, 12);
    shard_map_free(&m);

    /* One point per shard: the recipient gets a point mid-arc, and a
     * shard can be split again and again. */
    assert_int_equal(test_map(&m, 3, 2, 3, 1), 0);
    for (int i = 0; i < 6; i++) {
        uint32_t before = m.ring.n_points;
        check_split(&m, 1);
        assert_int_equal(m.ring.n_points, before + 1);
    }
    shard_map_free(&m);

    /* A single data shard owning the whole ring. */
    assert_int_equal(test_map(&m, 1, 1, 1, 1), 0);
    check_split(&m, 1);
    assert_true(shard_ring_share(&m.ring, 2) > 0.5 - 1e-9 &&
                shard_ring_share(&m.ring, 2) < 0.5 + 1e-9);
    shard_map_free(&m);
}

static void test_split_errors_and_two_in_flight(void **state)
{
    (void)state;
    struct shard_map m, orig;
    assert_int_equal(test_map(&m, 3, 4, 3, 16), 0);
    shard_id rid;
    assert_int_equal(shard_map_split_begin(&m, 0, &rid, NULL, NULL), RK_EINVAL);
    assert_int_equal(shard_map_split_begin(&m, 42, &rid, NULL, NULL),
                     RK_EUNKNOWNSHARD);
    assert_int_equal(shard_map_split_finish(&m, 2), RK_EINVAL);
    assert_int_equal(shard_map_split_finish(&m, 42), RK_EUNKNOWNSHARD);
    assert_int_equal(shard_map_copy(&orig, &m), 0);

    /* Two splits in flight, finished one after the other. */
    shard_id r2, r3;
    assert_int_equal(shard_map_split_begin(&m, 2, &r2, NULL, NULL), 0);
    assert_int_equal(shard_map_split_begin(&m, 3, &r3, NULL, NULL), 0);
    assert_int_equal(shard_map_validate(&m), 0);
    /* Both donors keep serving their arcs; the moves of both interleave
     * on the ring and the route lookup finds each of them. */
    bool from2 = false, from3 = false;
    for (uint32_t i = 0; i < m.n_moves; i++) {
        from2 |= m.moves[i].from == 2;
        from3 |= m.moves[i].from == 3;
        assert_int_equal(shard_map_route_hash(&m, m.moves[i].first),
                         m.moves[i].from);
        assert_int_equal(shard_map_route_hash(&m, m.moves[i].last),
                         m.moves[i].from);
    }
    assert_true(from2 && from3);
    struct rk_rand rnd;
    rk_rand_seed(&rnd, 3);
    for (int i = 0; i < 20000; i++) {
        uint64_t h = rk_rand_next(&rnd);
        assert_int_equal(shard_map_route_hash(&m, h),
                         shard_ring_owner(&orig.ring, h));
    }
    /* Hash tags route through the map as through the ring. */
    assert_int_equal(shard_map_route(&m, "{user1}.a", 9),
                     shard_map_route(&m, "{user1}.b", 9));
    assert_int_equal(shard_map_split_begin(&m, r2, &rid, NULL, NULL), RK_EBUSY);
    assert_int_equal(shard_map_split_finish(&m, r2), RK_EINVAL);
    /* Finishing one hands its arcs to its recipient and leaves the other
     * split's moves (and routing) alone. */
    struct shard_move *mv2 = NULL;
    uint32_t n2 = 0;
    for (uint32_t i = 0; i < m.n_moves; i++)
        if (m.moves[i].from == 2) {
            mv2 = realloc(mv2, (n2 + 1) * sizeof(*mv2));
            assert_non_null(mv2);
            mv2[n2++] = m.moves[i];
        }
    assert_int_equal(shard_map_split_finish(&m, 2), 0);
    assert_int_equal(shard_map_validate(&m), 0);
    assert_int_equal(shard_map_shard(&m, 2)->state, SHARD_STATE_ACTIVE);
    assert_int_equal(shard_map_shard(&m, r2)->state, SHARD_STATE_ACTIVE);
    for (uint32_t i = 0; i < n2; i++) {
        assert_int_equal(shard_map_route_hash(&m, mv2[i].first), r2);
        assert_int_equal(shard_map_route_hash(&m, mv2[i].last), r2);
    }
    free(mv2);
    for (uint32_t i = 0; i < m.n_moves; i++) {
        assert_int_equal(m.moves[i].from, 3);
        assert_int_equal(shard_map_route_hash(&m, m.moves[i].first), 3);
    }
    assert_int_equal(shard_map_split_finish(&m, 2), RK_EINVAL);
    assert_int_equal(shard_map_split_finish(&m, 3), 0);
    assert_int_equal(m.n_moves, 0);
    /* The map now routes by its ring alone, with two more shards. */
    rk_rand_seed(&rnd, 4);
    for (int i = 0; i < 20000; i++) {
        uint64_t h = rk_rand_next(&rnd);
        assert_int_equal(shard_map_route_hash(&m, h),
                         shard_ring_owner(&m.ring, h));
    }
    assert_int_equal(m.n_shards, orig.n_shards + 2);
    assert_int_equal(m.epoch, orig.epoch + 4);
    assert_int_equal(m.next_shard_id, orig.next_shard_id + 2);
    shard_map_free(&orig);
    shard_map_free(&m);
}

/* ---------------------------------------------------------------------- */
/* Steps                                                                  */
/* ---------------------------------------------------------------------- */

static void test_step_rules(void **state)
{
    (void)state;
    struct shard_map m;
    assert_int_equal(test_map(&m, 4, 1, 3, 4), 0);
    const struct shard_info *s = shard_map_shard(&m, 1);
    shard_node_id spare = 0;
    for (shard_node_id id = 1; id <= 4; id++)
        if (shard__find_id_test(s->voters, s->n_voters, id) < 0)
            spare = id;
    assert_true(spare != 0);
    shard_node_id leader = s->leader, other = 0;
    for (uint32_t j = 0; j < s->n_voters; j++)
        if (s->voters[j] != leader)
            other = s->voters[j];

    struct shard_step st = {SHARD_STEP_PROMOTE, 1, spare};
    assert_int_equal(shard_map_apply_step(&m, &st), RK_EINVAL);
    st = (struct shard_step){SHARD_STEP_REMOVE, 1, other};
    assert_int_equal(shard_map_apply_step(&m, &st), RK_EINVAL); /* < R */
    st = (struct shard_step){SHARD_STEP_ADD_LEARNER, 1, other};
    assert_int_equal(shard_map_apply_step(&m, &st), RK_EEXIST);
    st = (struct shard_step){SHARD_STEP_ADD_LEARNER, 77, spare};
    assert_int_equal(shard_map_apply_step(&m, &st), RK_EUNKNOWNSHARD);
    st = (struct shard_step){SHARD_STEP_ADD_LEARNER, 1, 99};
    assert_int_equal(shard_map_apply_step(&m, &st), RK_ENOTFOUND);
    st = (struct shard_step){SHARD_STEP_TRANSFER_LEADER, 1, spare};
    assert_int_equal(shard_map_apply_step(&m, &st), RK_EINVAL);
    st = (struct shard_step){9, 1, spare};
    assert_int_equal(shard_map_apply_step(&m, &st), RK_EINVAL);
    uint64_t e = m.epoch;

    /* The full safe sequence: learner, promote, transfer, remove. */
    st = (struct shard_step){SHARD_STEP_ADD_LEARNER, 1, spare};
    assert_int_equal(shard_map_apply_step(&m, &st), 0);
    s = shard_map_shard(&m, 1);
    assert_int_equal(s->n_learners, 1);
    st = (struct shard_step){SHARD_STEP_PROMOTE, 1, spare};
    assert_int_equal(shard_map_apply_step(&m, &st), 0);
    s = shard_map_shard(&m, 1);
    assert_int_equal(s->n_voters, 4);
    assert_int_equal(s->n_learners, 0);
    st = (struct shard_step){SHARD_STEP_REMOVE, 1, leader};
    assert_int_equal(shard_map_apply_step(&m, &st), RK_EINVAL); /* leader */
    st = (struct shard_step){SHARD_STEP_TRANSFER_LEADER, 1, spare};
    assert_int_equal(shard_map_apply_step(&m, &st), 0);
    st = (struct shard_step){SHARD_STEP_REMOVE, 1, leader};
    assert_int_equal(shard_map_apply_step(&m, &st), 0);
    s = shard_map_shard(&m, 1);
    assert_int_equal(s->n_voters, 3);
    assert_int_equal(s->leader, spare);
    assert_int_equal(m.epoch, e + 4);
    assert_int_equal(shard_map_validate(&m), 0);

    /* Learners: not on draining nodes; removing one is always allowed. */
    assert_int_equal(shard_map_node_set_state(&m, leader, SHARD_NODE_DRAINING),
                     0);
    st = (struct shard_step){SHARD_STEP_ADD_LEARNER, 1, leader};
    assert_int_equal(shard_map_apply_step(&m, &st), RK_EINVAL);
    assert_int_equal(shard_map_node_set_state(&m, leader, SHARD_NODE_ACTIVE),
                     0);
    assert_int_equal(shard_map_apply_step(&m, &st), 0);
    st.kind = SHARD_STEP_REMOVE;
    assert_int_equal(shard_map_apply_step(&m, &st), 0);

    /* Quorum: with two of three voters gone, nothing may change. */
    s = shard_map_shard(&m, 1);
    shard_node_id v0 = s->voters[0], v1 = s->voters[1];
    assert_int_equal(shard_map_node_set_state(&m, v0, SHARD_NODE_REMOVED), 0);
    assert_int_equal(shard_map_node_set_state(&m, v1, SHARD_NODE_REMOVED), 0);
    shard_node_id free_node = 0;
    for (shard_node_id id = 1; id <= 4; id++)
        if (shard__find_id_test(s->voters, s->n_voters, id) < 0)
            free_node = id;
    st = (struct shard_step){SHARD_STEP_ADD_LEARNER, 1, free_node};
    assert_int_equal(shard_map_apply_step(&m, &st), RK_EUNAVAILABLE);
    shard_map_free(&m);
}

/* ---------------------------------------------------------------------- */
/* Codec                                                                  */
/* ---------------------------------------------------------------------- */

/* A map with every feature in use: draining and removed nodes, learners,
 * a split in flight, a preferred leader of 0. */
static void busy_map(struct shard_map *m)
{
    assert_int_equal(test_map(m, 5, 6, 3, 8), 0);
    struct shard_node n = test_node(6);
    assert_int_equal(shard_map_node_add(m, &n), 0);
    assert_int_equal(shard_map_node_set_state(m, 2, SHARD_NODE_DRAINING), 0);
    const struct shard_info *s = shard_map_shard(m, 4);
    if (shard__find_id_test(s->voters, s->n_voters, 6) < 0) {
        struct shard_step st = {SHARD_STEP_ADD_LEARNER, 4, 6};
        assert_int_equal(shard_map_apply_step(m, &st), 0);
    }
    shard_id rid;
    assert_int_equal(shard_map_split_begin(m, 5, &rid, NULL, NULL), 0);
    assert_int_equal(shard_map_node_set_state(m, 3, SHARD_NODE_REMOVED), 0);
    m->shards[2].leader = 0;
    assert_int_equal(shard_map_validate(m), 0);
}

static void roundtrip(const struct shard_map *m)
{
    size_t size = shard_map_encoded_size(m), len = 0;
    uint8_t *buf = malloc(size);
    assert_non_null(buf);
    assert_int_equal(shard_map_encode(m, buf, size, &len), 0);
    assert_int_equal(len, size);
    assert_int_equal(shard_map_encode(m, buf, size - 1, &len), RK_ETOOLARGE);
    struct shard_map d;
    assert_int_equal(shard_map_decode(&d, buf, size), 0);
    assert_true(shard_map_equal(m, &d));
    shard_map_free(&d);
    free(buf);
}

static void test_codec_roundtrip(void **state)
{
    (void)state;
    struct shard_map m;
    shard_map_init(&m);
    roundtrip(&m);
    assert_int_equal(test_map(&m, 3, 16, 3, 64), 0);
    roundtrip(&m);
    shard_map_free(&m);
    busy_map(&m);
    roundtrip(&m);
    /* An invalid map is not encoded. */
    m.shards[1].voters[1] = m.shards[1].voters[0];
    uint8_t buf[16];
    size_t len;
    assert_int_equal(shard_map_encode(&m, buf, sizeof(buf), &len), RK_EINVAL);
    shard_map_free(&m);
}

/* Rewrites the trailing checksum so that only the content is judged. */
static void reseal(uint8_t *buf, size_t len)
{
    uint64_t h = XXH3_64bits(buf, len - 8);
    for (int i = 0; i < 8; i++)
        buf[len - 8 + i] = (uint8_t)(h >> (56 - 8 * i));
}

static void put_be32_at(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void test_codec_garbage(void **state)
{
    (void)state;
    struct shard_map m, d;
    busy_map(&m);
    size_t size = shard_map_encoded_size(&m), len;
    uint8_t *buf = malloc(size + 1), *bad = malloc(size + 1);
    assert_int_equal(shard_map_encode(&m, buf, size, &len), 0);

    /* Every truncation, and a trailing byte. */
    for (size_t n = 0; n < size; n++)
        assert_int_equal(shard_map_decode(&d, buf, n), RK_EPROTO);
    memcpy(bad, buf, size);
    bad[size] = 0;
    assert_int_equal(shard_map_decode(&d, bad, size + 1), RK_EPROTO);
    reseal(bad, size + 1);
    assert_int_equal(shard_map_decode(&d, bad, size + 1), RK_EPROTO);

    /* Every single bit flip is caught (by the checksum at least). */
    for (size_t i = 0; i < size; i++) {
        memcpy(bad, buf, size);
        bad[i] ^= (uint8_t)(1u << (i % 8));
        int rc = shard_map_decode(&d, bad, size);
        assert_true(rc == RK_EPROTO || rc == RK_EVERSION);
    }

    /* Random bytes, with and without a valid header and checksum. */
    struct rk_rand rnd;
    rk_rand_seed(&rnd, 42);
    for (int k = 0; k < 2000; k++) {
        size_t n = 1 + rk_rand_below(&rnd, size);
        for (size_t i = 0; i < n; i++)
            bad[i] = (uint8_t)rk_rand_next(&rnd);
        if (k % 2 && n >= 16) {
            memcpy(bad, "RKSM\0\1\0\0", 8);
            reseal(bad, n);
        }
        assert_int_equal(shard_map_decode(&d, bad, n), RK_EPROTO);
        assert_null(d.nodes);
    }

    /* Content damage behind a valid checksum: each field is checked. */
    size_t nodes_at = 8 + 8 + 8 + 4 + 4 + 4;
    memcpy(bad, buf, size);
    put_be32_at(bad + nodes_at, 0xFFFFFFFFu); /* huge node count */
    reseal(bad, size);
    assert_int_equal(shard_map_decode(&d, bad, size), RK_EPROTO);
    memcpy(bad, buf, size);
    put_be32_at(bad + nodes_at, (uint32_t)(m.n_nodes - 1));
    reseal(bad, size);
    assert_int_equal(shard_map_decode(&d, bad, size), RK_EPROTO);
    memcpy(bad, buf, size);
    bad[nodes_at + 4 + 7] = 0; /* first node id becomes 0 */
    reseal(bad, size);
    assert_int_equal(shard_map_decode(&d, bad, size), RK_EPROTO);
    memcpy(bad, buf, size);
    bad[nodes_at + 4 + 8] = 9; /* bad node state */
    reseal(bad, size);
    assert_int_equal(shard_map_decode(&d, bad, size), RK_EPROTO);
    memcpy(bad, buf, size);
    bad[nodes_at + 4 + 9 + 2] = 0; /* NUL inside an address */
    reseal(bad, size);
    assert_int_equal(shard_map_decode(&d, bad, size), RK_EPROTO);
    memcpy(bad, buf, size);
    bad[6] = 1; /* reserved field */
    reseal(bad, size);
    assert_int_equal(shard_map_decode(&d, bad, size), RK_EPROTO);
    /* The last ring point names an unknown shard: the map is invalid. */
    memcpy(bad, buf, size);
    size_t moves_at = size - 8 - 4 - m.n_moves * 24;
    put_be32_at(bad + moves_at - 4, 999);
    reseal(bad, size);
    assert_int_equal(shard_map_decode(&d, bad, size), RK_EPROTO);

    /* A newer version is refused as such. */
    memcpy(bad, buf, size);
    bad[5] = 2;
    reseal(bad, size);
    assert_int_equal(shard_map_decode(&d, bad, size), RK_EVERSION);

    /* And the intact buffer still decodes. */
    assert_int_equal(shard_map_decode(&d, buf, size), 0);
    assert_true(shard_map_equal(&m, &d));
    shard_map_free(&d);
    free(buf);
    free(bad);
    shard_map_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create),
        cmocka_unit_test(test_create_rejects),
        cmocka_unit_test(test_copy_equal),
        cmocka_unit_test(test_node_registry),
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_split_errors_and_two_in_flight),
        cmocka_unit_test(test_step_rules),
        cmocka_unit_test(test_codec_roundtrip),
        cmocka_unit_test(test_codec_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
