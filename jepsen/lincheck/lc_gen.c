/* Generates realistic concurrent register histories, or corrupted ones. */
#include <stdlib.h>
#include <string.h>

#include "lc_internal.h"
#include "rk_err.h"
#include "rk_rand.h"

/*
 * Two passes. The first lays out, process by process, when each op is
 * invoked, when it takes effect (a random instant inside its interval) and
 * when it completes. The second applies the effects to a simulated store in
 * effect order, which gives every op its result; the history is then the
 * invocations and completions sorted by time. Because each effect lies
 * strictly inside its op's interval, the history is linearizable by
 * construction (the effect order is a witness).
 */

enum gop_outcome { G_OK, G_FAIL, G_INFO_DONE, G_INFO_NOT };

struct gop {
    int64_t process;
    int64_t t_inv, t_eff, t_done;
    enum lc_fn fn;
    int64_t key;
    struct lc_val value, value2; /* read result / written / cas old,new */
    enum gop_outcome out;
};

struct gev {
    int64_t t;
    uint32_t op;
    bool done;
};

void lc_gen_opts_init(struct lc_gen_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->seed = 1;
    o->n_ops = 10000;
    o->n_keys = 50;
    o->n_procs = 20;
    o->p_read = 0.45;
    o->p_write = 0.35;
    o->p_info = 0.01;
    o->p_fail = 0.02;
}

/* An op's effect instant, sortable without global state. */
struct geff {
    int64_t t;
    uint32_t op;
};

static int cmp_eff(const void *a, const void *b)
{
    const struct geff *x = a, *y = b;

    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    return x->op < y->op ? -1 : x->op > y->op;
}

static int cmp_ev(const void *a, const void *b)
{
    const struct gev *x = a, *y = b;

    if (x->t != y->t)
        return x->t < y->t ? -1 : 1;
    if (x->done != y->done)
        return x->done ? -1 : 1; /* completions first at a tie */
    return x->op < y->op ? -1 : x->op > y->op;
}

/* Latency in ns: mostly 0.2-2 ms, with a 5% tail up to 50 ms. */
static int64_t latency(struct rk_rand *r)
{
    int64_t base = 200000 + (int64_t)rk_rand_below(r, 1800000);

    if (rk_rand_double(r) < 0.05)
        base *= 2 + (int64_t)rk_rand_below(r, 24);
    return base;
}

static bool written_ok(const struct gop *g)
{
    return g->out == G_OK && (g->fn == LC_WRITE || g->fn == LC_CAS);
}

/* Makes one ok read return a value overwritten before it was invoked. */
static void corrupt(struct gop *ops, uint32_t n)
{
    uint32_t r, i, j;

    for (r = n; r-- > 0;) {
        struct gop *rd = &ops[r];
        if (rd->fn != LC_READ || rd->out != G_OK)
            continue;
        for (i = 0; i < n; i++) {
            const struct gop *w1 = &ops[i];
            struct lc_val x = w1->fn == LC_CAS ? w1->value2 : w1->value;
            if (!written_ok(w1) || w1->key != rd->key || x.nil ||
                w1->t_done >= rd->t_inv ||
                (!rd->value.nil && rd->value.v == x.v))
                continue;
            for (j = 0; j < n; j++) {
                const struct gop *w2 = &ops[j];
                if (written_ok(w2) && w2->key == rd->key &&
                    w2->t_inv > w1->t_done && w2->t_done < rd->t_inv) {
                    rd->value = x;
                    return;
                }
            }
        }
    }
    /* No stale value available: read one that was never written. */
    for (r = n; r-- > 0;) {
        if (ops[r].fn == LC_READ && ops[r].out == G_OK) {
            ops[r].value = LC_INT(-7);
            return;
        }
    }
}

int lc_gen_register(const struct lc_gen_opts *o, struct lc_history **out)
{
    struct rk_rand rnd;
    struct gop *ops = NULL;
    struct gev *evs = NULL;
    struct geff *order = NULL;
    uint32_t i;
    int64_t *free_at = NULL, *pid = NULL, next_pid;
    struct lc_val *store = NULL;
    int64_t next_val = 1;
    struct lc_history *h = NULL;
    int rc = RK_ENOMEM;

    if (o->n_ops == 0 || o->n_keys == 0 || o->n_procs == 0)
        return RK_EINVAL;
    rk_rand_seed(&rnd, o->seed);
    ops = calloc(o->n_ops, sizeof(*ops));
    evs = calloc(2 * (size_t)o->n_ops, sizeof(*evs));
    order = calloc(o->n_ops, sizeof(*order));
    free_at = calloc(o->n_procs, sizeof(*free_at));
    pid = calloc(o->n_procs, sizeof(*pid));
    store = calloc(o->n_keys, sizeof(*store));
    if (ops == NULL || evs == NULL || order == NULL || free_at == NULL ||
        pid == NULL || store == NULL)
        goto out;
    for (i = 0; i < o->n_procs; i++)
        pid[i] = i;
    next_pid = o->n_procs;
    for (i = 0; i < o->n_keys; i++)
        store[i] = LC_NIL;

    /* Pass 1: timing, kinds and outcomes. */
    for (i = 0; i < o->n_ops; i++) {
        struct gop *g = &ops[i];
        uint32_t p = 0, q;
        double x;
        int64_t lat;

        for (q = 1; q < o->n_procs; q++) {
            if (free_at[q] < free_at[p])
                p = q;
        }
        g->process = pid[p];
        g->t_inv = free_at[p] + (int64_t)rk_rand_below(&rnd, 300000);
        lat = latency(&rnd);
        g->t_eff = g->t_inv + 1 + (int64_t)rk_rand_below(&rnd, (uint64_t)lat);
        g->t_done = g->t_inv + lat + 2;
        g->key = (int64_t)rk_rand_below(&rnd, o->n_keys);
        x = rk_rand_double(&rnd);
        g->fn = x < o->p_read                ? LC_READ
                : x < o->p_read + o->p_write ? LC_WRITE
                                             : LC_CAS;
        x = rk_rand_double(&rnd);
        if (x < o->p_fail) {
            g->out = G_FAIL;
        } else if (x < o->p_fail + o->p_info) {
            g->out = rk_rand_below(&rnd, 2) ? G_INFO_DONE : G_INFO_NOT;
            /* Jepsen: a crashed process is replaced by a new one. */
            pid[p] = next_pid++;
        } else {
            g->out = G_OK;
        }
        free_at[p] = g->t_done;
        order[i].t = g->t_eff;
        order[i].op = i;
    }

    /* Pass 2: apply the effects in effect order. */
    qsort(order, o->n_ops, sizeof(*order), cmp_eff);
    for (i = 0; i < o->n_ops; i++) {
        struct gop *g = &ops[order[i].op];
        struct lc_val *cell = &store[g->key];
        bool takes_effect = g->out == G_OK || g->out == G_INFO_DONE;

        switch (g->fn) {
        case LC_READ:
            g->value = *cell;
            break;
        case LC_WRITE:
            g->value = LC_INT(next_val++);
            if (takes_effect)
                *cell = g->value;
            break;
        default: /* LC_CAS */
            if (rk_rand_double(&rnd) < 0.6 || cell->nil)
                g->value = *cell;
            else
                g->value = LC_INT(1 + (int64_t)rk_rand_below(
                                          &rnd, (uint64_t)next_val));
            g->value2 = LC_INT(next_val++);
            if (takes_effect) {
                bool match = g->value.nil ? cell->nil
                                          : !cell->nil &&
                                                cell->v == g->value.v;
                if (match)
                    *cell = g->value2;
                else if (g->out == G_OK)
                    g->out = G_FAIL; /* a cas mismatch answers :fail */
            }
            break;
        }
    }
    if (o->corrupt)
        corrupt(ops, o->n_ops);

    /* The events, in time order. */
    for (i = 0; i < o->n_ops; i++) {
        evs[2 * i].t = ops[i].t_inv;
        evs[2 * i].op = i;
        evs[2 * i].done = false;
        evs[2 * i + 1].t = ops[i].t_done;
        evs[2 * i + 1].op = i;
        evs[2 * i + 1].done = true;
    }
    qsort(evs, 2 * (size_t)o->n_ops, sizeof(*evs), cmp_ev);
    if (lc_history_new(&h) != 0)
        goto out;
    for (i = 0; i < 2 * o->n_ops; i++) {
        const struct gop *g = &ops[evs[i].op];
        struct lc_op ev;
        memset(&ev, 0, sizeof(ev));
        ev.process = g->process;
        ev.fn = g->fn;
        ev.key = g->key;
        ev.time = evs[i].t;
        ev.index = -1;
        ev.value = g->value;
        ev.value2 = g->value2;
        if (!evs[i].done) {
            ev.type = LC_INVOKE;
            if (g->fn == LC_READ)
                ev.value = LC_NIL;
        } else {
            ev.type = g->out == G_OK     ? LC_OK
                      : g->out == G_FAIL ? LC_FAIL
                                         : LC_INFO;
            if (g->fn == LC_READ && g->out != G_OK)
                ev.value = LC_NIL;
        }
        if (lc_history_add(h, &ev) != 0)
            goto out;
    }
    *out = h;
    h = NULL;
    rc = 0;
out:
    lc_history_free(h);
    free(ops);
    free(evs);
    free(order);
    free(free_at);
    free(pid);
    free(store);
    return rc;
}
