/* Safety invariants: election, log matching, completeness, SM safety. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "sim.h"

uint64_t sim_hash_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    if (h == 0)
        h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    return h;
}

uint64_t sim_entry_hash(const struct raft_entry *e)
{
    uint64_t h = sim_hash_bytes(0, &e->type, 1);
    uint32_t len = e->len;
    h = sim_hash_bytes(h, &len, sizeof(len));
    if (e->len)
        h = sim_hash_bytes(h, e->data, e->len);
    return h;
}

uint64_t sim_state_hash(const int64_t kv[SIM_KEYS])
{
    return sim_hash_bytes(0, kv, sizeof(int64_t) * SIM_KEYS);
}

void sim_trace(struct sim *s, const char *fmt, ...)
{
    char *line = s->trace[s->trace_n % SIM_TRACE_RING];
    int off =
        snprintf(line, SIM_TRACE_LINE, "[%llu ms #%llu] ",
                 (unsigned long long)s->now, (unsigned long long)s->events);
    if (off < 0 || off >= SIM_TRACE_LINE)
        off = 0;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + off, (size_t)(SIM_TRACE_LINE - off), fmt, ap);
    va_end(ap);
    s->trace_n++;
    s->trace_hash = sim_hash_bytes(s->trace_hash, line, strlen(line));
    if (s->o.verbose)
        printf("  %s\n", line);
}

void sim_print_trace(const struct sim *s, void *fp, int max_lines)
{
    FILE *f = fp;
    uint64_t n =
        s->trace_n < (uint64_t)max_lines ? s->trace_n : (uint64_t)max_lines;
    if (n > SIM_TRACE_RING)
        n = SIM_TRACE_RING;
    for (uint64_t i = s->trace_n - n; i < s->trace_n; i++)
        fprintf(f, "    %s\n", s->trace[i % SIM_TRACE_RING]);
}

void sim_violation(struct sim *s, const char *fmt, ...)
{
    if (s->failed)
        return;
    s->failed = true;
    s->fail_event = s->events;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->fail_what, sizeof(s->fail_what), fmt, ap);
    va_end(ap);
    sim_trace(s, "VIOLATION: %s", s->fail_what);
}

/* ------------------------------------------------------ election safety */

void sim_check_leader(struct sim *s, raft_id id, raft_term term)
{
    if (term >= s->n_term_leader) {
        size_t n = s->n_term_leader ? s->n_term_leader : 64;
        while (n <= term)
            n *= 2;
        raft_id *t = realloc(s->term_leader, n * sizeof(*t));
        RK_ASSERT(t != NULL);
        memset(t + s->n_term_leader, 0, (n - s->n_term_leader) * sizeof(*t));
        s->term_leader = t;
        s->n_term_leader = n;
    }
    if (s->term_leader[term] == 0)
        s->term_leader[term] = id;
    else if (s->term_leader[term] != id)
        sim_violation(s, "election safety: term %llu has leaders %llu and %llu",
                      (unsigned long long)term,
                      (unsigned long long)s->term_leader[term],
                      (unsigned long long)id);
}

/* ------------------------------------------------ state-machine safety */

void sim_check_apply(struct sim *s, raft_id id, raft_index index,
                     raft_term term, uint64_t hash, uint64_t state_hash)
{
    if (index >= s->applied_cap) {
        size_t n = s->applied_cap ? s->applied_cap : 256;
        while (n <= index)
            n *= 2;
        struct sim_applied *a = realloc(s->applied, n * sizeof(*a));
        RK_ASSERT(a != NULL);
        memset(a + s->applied_cap, 0, (n - s->applied_cap) * sizeof(*a));
        s->applied = a;
        s->applied_cap = n;
    }
    struct sim_applied *a = &s->applied[index];
    if (a->term == 0) {
        a->term = term;
        a->hash = hash;
        a->state_hash = state_hash;
        if (index > s->applied_max)
            s->applied_max = index;
        return;
    }
    if (a->term != term || a->hash != hash)
        sim_violation(s,
                      "state-machine safety: node %llu applied (%llu,t%llu) "
                      "but (%llu,t%llu) was applied before",
                      (unsigned long long)id, (unsigned long long)index,
                      (unsigned long long)term, (unsigned long long)index,
                      (unsigned long long)a->term);
    else if (state_hash != 0 && a->state_hash != state_hash)
        sim_violation(s,
                      "state-machine safety: node %llu state diverged at %llu",
                      (unsigned long long)id, (unsigned long long)index);
}

/* -------------------------------------------------------- log matching */

static size_t lm_slot(const struct sim *s, raft_index index, raft_term term)
{
    uint64_t h = index * 0x9e3779b97f4a7c15ull ^ (term + 0x632be59bd9b4e019ull);
    h ^= h >> 29;
    return (size_t)(h & (s->lm_cap - 1));
}

static struct sim_lm *lm_find(struct sim *s, raft_index index, raft_term term,
                              bool insert)
{
    if (insert && (s->lm_len + 1) * 2 > s->lm_cap) {
        size_t old_cap = s->lm_cap;
        struct sim_lm *old = s->lm;
        s->lm_cap = old_cap ? old_cap * 2 : 1024;
        s->lm = calloc(s->lm_cap, sizeof(*s->lm));
        RK_ASSERT(s->lm != NULL);
        for (size_t i = 0; i < old_cap; i++) {
            if (old[i].index == 0)
                continue;
            size_t j = lm_slot(s, old[i].index, old[i].term);
            while (s->lm[j].index != 0)
                j = (j + 1) & (s->lm_cap - 1);
            s->lm[j] = old[i];
        }
        free(old);
    }
    if (s->lm_cap == 0)
        return NULL;
    size_t j = lm_slot(s, index, term);
    while (s->lm[j].index != 0) {
        if (s->lm[j].index == index && s->lm[j].term == term)
            return &s->lm[j];
        j = (j + 1) & (s->lm_cap - 1);
    }
    if (!insert)
        return NULL;
    s->lm[j].index = index;
    s->lm[j].term = term;
    s->lm[j].hash = 0;
    s->lm[j].prev_term = UINT64_MAX;
    s->lm_len++;
    return &s->lm[j];
}

void sim_check_entry(struct sim *s, raft_id id, raft_index index,
                     raft_term term, uint64_t hash, raft_term prev_term)
{
    if (index == 0)
        return;
    struct sim_lm *e = lm_find(s, index, term, false);
    if (e == NULL) {
        e = lm_find(s, index, term, true);
        e->hash = hash;
        e->prev_term = prev_term;
        return;
    }
    if (e->hash != hash) {
        sim_violation(s,
                      "log matching: node %llu has entry (%llu,t%llu) with "
                      "different content",
                      (unsigned long long)id, (unsigned long long)index,
                      (unsigned long long)term);
        return;
    }
    if (prev_term == UINT64_MAX)
        return;
    if (e->prev_term == UINT64_MAX)
        e->prev_term = prev_term;
    else if (e->prev_term != prev_term)
        sim_violation(s,
                      "log matching: node %llu has (%llu,t%llu) after term "
                      "%llu, another log after term %llu",
                      (unsigned long long)id, (unsigned long long)index,
                      (unsigned long long)term, (unsigned long long)prev_term,
                      (unsigned long long)e->prev_term);
}

void sim_check_free(struct sim *s)
{
    free(s->term_leader);
    free(s->applied);
    free(s->lm);
    free(s->ops);
    s->term_leader = NULL;
    s->applied = NULL;
    s->lm = NULL;
    s->ops = NULL;
    s->n_term_leader = s->applied_cap = s->lm_cap = s->lm_len = 0;
    s->n_ops = s->ops_cap = 0;
}
