/* The nemesis: random faults chosen by the seed's fault profile. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "sim.h"
#include "sim_disk.h"
#include "sim_internal.h"

/* ------------------------------------------------------------- nemesis */

int sim__find_leader(struct sim *s)
{
    int best = -1;
    raft_term best_term = 0;
    for (int i = 0; i < s->n_slots; i++) {
        if (!s->nodes[i].up)
            continue;
        struct raft_status st;
        raft_status(s->nodes[i].raft, &st);
        if (st.role == RAFT_LEADER && st.term >= best_term) {
            best = i;
            best_term = st.term;
        }
    }
    return best;
}

int sim_leader(struct sim *s)
{
    return sim__find_leader(s);
}

int sim__count_down(const struct sim *s)
{
    int d = 0;
    for (int i = 0; i < s->n_slots; i++)
        if (!s->nodes[i].up && !s->nodes[i].retired)
            d++;
    return d;
}

static void nemesis_membership(struct sim *s, int l)
{
    struct raft_status st;
    raft_status(s->nodes[l].raft, &st);
    uint64_t r = rk_rand_below(&s->rng, 4);
    if (r == 0 && st.conf.n_learners > 0) {
        raft_id who =
            st.conf.learners[rk_rand_below(&s->rng, st.conf.n_learners)];
        sim_conf_change(s, l, RAFT_CC_PROMOTE, who);
    } else if (r == 1 && st.conf.n_voters > 3) {
        raft_id who = st.conf.voters[rk_rand_below(&s->rng, st.conf.n_voters)];
        sim_conf_change(s, l, RAFT_CC_REMOVE, who);
    } else if (r == 2 && st.conf.n_learners > 0) {
        raft_id who =
            st.conf.learners[rk_rand_below(&s->rng, st.conf.n_learners)];
        sim_conf_change(s, l, RAFT_CC_REMOVE, who);
    } else if (st.conf.n_voters + st.conf.n_learners < 8 &&
               s->n_slots < SIM_MAX_NODES) {
        /* A brand-new node id: the slot starts once the change is in. */
        raft_id id = (raft_id)s->n_slots + 1;
        uint8_t type =
            sim__chance(s, 0.5) ? RAFT_CC_ADD_LEARNER : RAFT_CC_ADD_VOTER;
        if (sim_conf_change(s, l, type, id) == 0)
            sim_add_slot(s);
    }
}

/* Leader churn: crash or isolate the leader for a short while, again and
 * again, so that logs diverge and stale candidates win elections (the
 * ground of Figure 8). False when it did nothing. */
static bool nemesis_churn(struct sim *s, int l)
{
    if (l < 0)
        return false;
    uint64_t r = rk_rand_below(&s->rng, 100);
    int max_down = s->o.nodes > 3 ? (s->o.nodes - 1) / 2 : 1;
    if (r < 55 && s->o.crashes && sim__count_down(s) < max_down) {
        sim__schedule(s, 0, SIM_EV_CRASH, l, 0, NULL);
        sim__schedule(s, sim__rand_range(s, 5, 400), SIM_EV_RESTART, l, 0,
                      NULL);
        return true;
    }
    if (r < 90 && s->o.partitions) {
        for (int y = 0; y < s->n_slots; y++)
            if (y != l)
                sim_cut(s, l, y, true);
        sim_trace(s, "partition isolate n%d (churn)", l + 1);
        s->n_partitions++;
        sim__schedule(s, sim__rand_range(s, 20, 400), SIM_EV_HEAL, -1, 0, NULL);
        return true;
    }
    return false;
}

/* Leader churn, commit-triggered: cut the leader off the moment its commit
 * index advanced, before the news (and its next entries) spread. */
void sim__nemesis_on_commit(struct sim *s, int l)
{
    if (s->net_calm || s->profile != SIM_PROFILE_CHURN || !s->o.partitions ||
        !sim__chance(s, 0.3))
        return;
    for (int y = 0; y < s->n_slots; y++)
        if (y != l)
            sim_cut(s, l, y, true);
    sim_trace(s, "partition isolate n%d (on commit)", l + 1);
    s->n_partitions++;
    sim__schedule(s, sim__rand_range(s, 20, 600), SIM_EV_HEAL, -1, 0, NULL);
}

void sim__on_nemesis(struct sim *s)
{
    if (s->net_calm)
        return;
    int l = sim__find_leader(s);
    if (s->profile == SIM_PROFILE_CHURN && sim__chance(s, 0.85) &&
        nemesis_churn(s, l)) {
        sim__schedule(
            s, sim__rand_range(s, 10, 2 * (uint64_t)s->o.nemesis_every_ms),
            SIM_EV_NEMESIS, -1, 0, NULL);
        return;
    }
    uint64_t r = rk_rand_below(&s->rng, 100);
    if (r < 20 && s->o.crashes) {
        int i = (int)rk_rand_below(&s->rng, (uint64_t)s->n_slots);
        if (sim__chance(s, 0.4) && l >= 0)
            i = l;
        if (s->nodes[i].up && sim__count_down(s) < 2) {
            sim__schedule(s, 0, SIM_EV_CRASH, i, 0, NULL);
            sim__schedule(s, sim__rand_range(s, 20, 1500), SIM_EV_RESTART, i, 0,
                          NULL);
        }
    } else if (r < 40 && s->o.partitions) {
        uint64_t kind = rk_rand_below(&s->rng, 3);
        int a = (int)rk_rand_below(&s->rng, (uint64_t)s->n_slots);
        if (kind == 0) {
            /* Random two-sided split. */
            uint64_t mask = rk_rand_next(&s->rng);
            for (int x = 0; x < s->n_slots; x++)
                for (int y = 0; y < s->n_slots; y++)
                    if (((mask >> x) & 1) != ((mask >> y) & 1))
                        s->cut[x][y] = true;
            sim_trace(s, "partition split mask=%llx",
                      (unsigned long long)(mask & ((1u << s->n_slots) - 1)));
        } else if (kind == 1) {
            /* Isolate the leader (or a random node). */
            int v = l >= 0 ? l : a;
            for (int y = 0; y < s->n_slots; y++)
                if (y != v)
                    sim_cut(s, v, y, true);
            sim_trace(s, "partition isolate n%d", v + 1);
        } else {
            int b = (int)rk_rand_below(&s->rng, (uint64_t)s->n_slots);
            if (a != b) {
                sim_cut(s, a, b, false);
                sim_trace(s, "partition one-way n%d -> n%d", a + 1, b + 1);
            }
        }
        s->n_partitions++;
        sim__schedule(s, sim__rand_range(s, 50, 2500), SIM_EV_HEAL, -1, 0,
                      NULL);
    } else if (r < 52 && s->o.membership && l >= 0) {
        nemesis_membership(s, l);
    } else if (r < 62 && s->o.transfers && l >= 0) {
        struct raft_status st;
        raft_status(s->nodes[l].raft, &st);
        raft_id to = st.conf.voters[rk_rand_below(&s->rng, st.conf.n_voters)];
        sim_transfer(s, l, to);
    } else if (r < 66 && s->o.crashes) {
        /* The next write of a random node fails. */
        int i = (int)rk_rand_below(&s->rng, (uint64_t)s->n_slots);
        if (s->nodes[i].up && sim__count_down(s) < 2)
            s->nodes[i].disk_fault = true;
    } else if (r < 80 && s->o.snapshots) {
        int i = (int)rk_rand_below(&s->rng, (uint64_t)s->n_slots);
        if (s->nodes[i].up)
            sim_take_snapshot(s, i);
    } else if (r < 90) {
        s->o.loss = sim__chance(s, 0.5) ? 0.0 : 0.1 * rk_rand_double(&s->rng);
        s->o.dup = sim__chance(s, 0.5) ? 0.0 : 0.05;
        s->o.reorder =
            sim__chance(s, 0.5) ? 0.0 : 0.2 * rk_rand_double(&s->rng);
        s->o.delay_max_ms = (uint32_t)sim__rand_range(s, 2, 40);
        s->o.disk_max_ms = (uint32_t)sim__rand_range(s, 1, 30);
        sim_trace(s, "knobs loss=%.3f dup=%.2f reorder=%.3f delay<=%u disk<=%u",
                  s->o.loss, s->o.dup, s->o.reorder, s->o.delay_max_ms,
                  s->o.disk_max_ms);
    }
    sim__schedule(s, sim__rand_range(s, 1, 2 * (uint64_t)s->o.nemesis_every_ms),
                  SIM_EV_NEMESIS, -1, 0, NULL);
}
