/* The client history and its linearizability check (rk_lincheck). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lincheck.h"
#include "rk_assert.h"
#include "sim.h"

uint64_t sim_hist_invoke(struct sim *s, int client, uint8_t kind, int key,
                         int64_t a1, int64_t a2)
{
    if (s->n_ops == s->ops_cap) {
        size_t cap = s->ops_cap ? s->ops_cap * 2 : 256;
        struct sim_op *ops = realloc(s->ops, cap * sizeof(*ops));
        RK_ASSERT(ops != NULL);
        s->ops = ops;
        s->ops_cap = cap;
    }
    struct sim_op *op = &s->ops[s->n_ops];
    memset(op, 0, sizeof(*op));
    op->id = (uint64_t)s->n_ops + 1;
    op->client = client;
    op->process = s->clients[client].process;
    op->kind = kind;
    op->key = key;
    op->arg1 = a1;
    op->arg2 = a2;
    op->status = SIM_ST_PENDING;
    op->invoke_ms = s->now;
    op->invoke_pos = s->hist_pos++;
    return s->n_ops++;
}

void sim_hist_complete(struct sim *s, uint64_t i, uint8_t status,
                       int64_t result)
{
    struct sim_op *op = &s->ops[i];
    RK_ASSERT(op->status == SIM_ST_PENDING);
    op->status = status;
    op->result = result;
    op->complete_ms = s->now;
    op->complete_pos = s->hist_pos++;
}

void sim_cmd_encode(const struct sim_cmd *c, uint8_t out[SIM_CMD_SIZE])
{
    out[0] = c->kind;
    out[1] = c->key;
    memcpy(out + 2, &c->op, 8);
    memcpy(out + 10, &c->a1, 8);
    memcpy(out + 18, &c->a2, 8);
    memset(out + 26, 0xA5, SIM_CMD_SIZE - 26);
}

int sim_cmd_decode(const void *buf, size_t len, struct sim_cmd *out)
{
    const uint8_t *b = buf;
    if (len != SIM_CMD_SIZE || b[0] > SIM_OP_CAS || b[1] >= SIM_KEYS)
        return RK_EPROTO;
    out->kind = b[0];
    out->key = b[1];
    memcpy(&out->op, b + 2, 8);
    memcpy(&out->a1, b + 10, 8);
    memcpy(&out->a2, b + 18, 8);
    return 0;
}

struct hist_event {
    uint64_t pos;
    size_t op;
    bool completion;
};

static int cmp_event(const void *a, const void *b)
{
    const struct hist_event *x = a, *y = b;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

static enum lc_fn fn_of(uint8_t kind)
{
    return kind == SIM_OP_WRITE  ? LC_WRITE
           : kind == SIM_OP_READ ? LC_READ
                                 : LC_CAS;
}

/* Builds the lincheck history: events in the order they happened. */
static int build_history(struct sim *s, struct lc_history **out)
{
    struct lc_history *h;
    int rc = lc_history_new(&h);
    if (rc != 0)
        return rc;
    size_t n_ev = 0;
    struct hist_event *ev = calloc(2 * s->n_ops + 1, sizeof(*ev));
    if (ev == NULL) {
        lc_history_free(h);
        return RK_ENOMEM;
    }
    for (size_t i = 0; i < s->n_ops; i++) {
        ev[n_ev++] = (struct hist_event){s->ops[i].invoke_pos, i, false};
        if (s->ops[i].status != SIM_ST_PENDING)
            ev[n_ev++] = (struct hist_event){s->ops[i].complete_pos, i, true};
    }
    qsort(ev, n_ev, sizeof(*ev), cmp_event);
    for (size_t k = 0; k < n_ev && rc == 0; k++) {
        const struct sim_op *op = &s->ops[ev[k].op];
        struct lc_op o;
        memset(&o, 0, sizeof(o));
        o.process = op->process;
        o.fn = fn_of(op->kind);
        o.key = op->key;
        o.index = -1;
        if (!ev[k].completion) {
            o.type = LC_INVOKE;
            o.time = (int64_t)op->invoke_ms;
            o.value = op->kind == SIM_OP_READ ? LC_NIL : LC_INT(op->arg1);
        } else {
            o.type = op->status == SIM_ST_OK     ? LC_OK
                     : op->status == SIM_ST_FAIL ? LC_FAIL
                                                 : LC_INFO;
            o.time = (int64_t)op->complete_ms;
            if (op->kind == SIM_OP_READ)
                o.value = op->status == SIM_ST_OK ? LC_INT(op->result) : LC_NIL;
            else
                o.value = LC_INT(op->arg1);
        }
        if (op->kind == SIM_OP_CAS)
            o.value2 = LC_INT(op->arg2);
        rc = lc_history_add(h, &o);
    }
    free(ev);
    if (rc != 0) {
        lc_history_free(h);
        return rc;
    }
    *out = h;
    return 0;
}

bool sim_check_history(struct sim *s)
{
    struct lc_history *h = NULL;
    int rc = build_history(s, &h);
    if (rc != 0) {
        sim_violation(s, "history: cannot build (%s)", rk_strerror(rc));
        return false;
    }
    struct lc_options opt;
    lc_options_init_knossos(&opt);
    opt.model = LC_MODEL_CAS_REGISTER;
    opt.initial = LC_INT(0);
    opt.time_limit_s = 20;
    struct lc_result res;
    memset(&res, 0, sizeof(res));
    char err[256] = "";
    rc = lc_check(h, &opt, &res, err, sizeof(err));
    bool ok = true;
    if (rc != 0) {
        sim_violation(s, "history: checker error %s: %s", rk_err_name(rc), err);
        ok = false;
    } else if (res.verdict == LC_INVALID) {
        sim_violation(s,
                      "linearizability: history of key %lld is not "
                      "linearizable (%zu ops)",
                      (long long)res.bad_key, res.n_ops);
        if (s->o.verbose)
            lc_result_print(h, &res, stdout);
        ok = false;
    } else if (res.verdict == LC_UNKNOWN) {
        sim_trace(s, "history: checker gave up (%s)", res.reason);
        s->lincheck_unknown++;
    }
    if (rc == 0)
        lc_result_free(&res);
    lc_history_free(h);
    return ok;
}
