/*
 * ringkv bench: a closed-loop load generator on libringkv's async API.
 *
 * C logical clients share one libuv loop and one ringkv_async_t (so one
 * connection per node, pipelined); each keeps exactly one request in
 * flight and sends the next as soon as the previous completes (or at its
 * next slot with --rate). Latency is measured per request from submit to
 * callback into a log-linear histogram (rk_hist, 1.6% buckets).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#include "cli.h"
#include "rk_hist.h"
#include "rk_rand.h"
#include "rk_time.h"

enum { OP_PUT, OP_GET, OP_MIX };

struct bench;

struct bclient {
    struct bench *b;
    uint64_t t0;     /* submit time of the request in flight */
    uint64_t next_at; /* --rate: when the next request may go */
    bool busy;
};

struct bench {
    uv_loop_t loop;
    uv_timer_t tick;
    ringkv_async_t *a;
    struct bclient *clients;
    unsigned n_clients;
    int op;
    ringkv_consistency cons;
    uint64_t n_keys;
    unsigned key_size, value_size;
    char *value;
    char *keybuf; /* key_size bytes: the key being sent (the client copies) */
    struct rk_rand rng;
    /* phases */
    bool prefill;
    uint64_t prefill_next, prefill_done;
    uint64_t t_start, t_measure, t_end; /* ns */
    bool stopping;
    unsigned inflight;
    double rate; /* per client, ops/s; 0 = closed loop */
    /* results */
    struct rk_hist hist, sec_hist;
    uint64_t ops, errors, sec_ops, sec_errors, not_found;
    ringkv_status last_err;
    bool tty;
};

static void issue(struct bclient *c);

static void make_key(struct bench *b, uint64_t k, char *buf)
{
    /* "k" + zero-padded number, padded or cut to key_size. */
    char num[32];
    int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)k);
    unsigned ks = b->key_size;
    memset(buf, '0', ks);
    buf[0] = 'k';
    if ((unsigned)n + 1 <= ks)
        memcpy(buf + ks - (unsigned)n, num, (size_t)n);
    else
        memcpy(buf + 1, num + ((unsigned)n - (ks - 1)), ks - 1);
}

static void record(struct bclient *c, ringkv_status st)
{
    struct bench *b = c->b;
    uint64_t now = rk_time_mono_ns();
    c->busy = false;
    b->inflight--;
    if (b->prefill) {
        if (st != RINGKV_OK) {
            b->errors++;
            b->last_err = st;
        }
        b->prefill_done++;
    } else if (now >= b->t_measure && c->t0 >= b->t_measure) {
        bool ok = st == RINGKV_OK || st == RINGKV_NOT_FOUND;
        if (st == RINGKV_NOT_FOUND)
            b->not_found++;
        if (ok) {
            rk_hist_record(&b->hist, now - c->t0);
            rk_hist_record(&b->sec_hist, now - c->t0);
            b->ops++;
            b->sec_ops++;
        } else {
            b->errors++;
            b->sec_errors++;
            b->last_err = st;
        }
    }
    if (!b->stopping)
        issue(c);
}

static void get_cb(void *arg, ringkv_status st, const ringkv_value *v)
{
    (void)v;
    record(arg, st);
}

static void write_cb(void *arg, ringkv_status st,
                     const ringkv_write_result *res, const ringkv_value *cur)
{
    (void)res;
    (void)cur;
    record(arg, st);
}

static void issue(struct bclient *c)
{
    struct bench *b = c->b;
    uint64_t now = rk_time_mono_ns();
    if (b->rate > 0 && now < c->next_at)
        return; /* the tick timer sends it at its slot */
    char *key = b->keybuf;
    bool put;
    uint64_t k;
    if (b->prefill) {
        if (b->prefill_next >= b->n_keys)
            return;
        k = b->prefill_next++;
        put = true;
    } else {
        k = rk_rand_below(&b->rng, b->n_keys);
        put = b->op == OP_PUT ||
              (b->op == OP_MIX && (rk_rand_next(&b->rng) & 1));
    }
    make_key(b, k, key);
    c->t0 = now;
    if (b->rate > 0)
        c->next_at = (c->next_at > 0 ? c->next_at : now) +
                     (uint64_t)(1e9 / b->rate);
    ringkv_status st =
        put ? ringkv_async_put(b->a, key, b->key_size, b->value,
                               b->value_size, write_cb, c)
            : ringkv_async_get(b->a, key, b->key_size, b->cons, get_cb, c);
    if (st != RINGKV_OK) {
        b->errors++;
        b->last_err = st;
        return;
    }
    c->busy = true;
    b->inflight++;
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

static void on_tick(uv_timer_t *t)
{
    struct bench *b = t->data;
    uint64_t now = rk_time_mono_ns();
    if (b->prefill) {
        if (b->prefill_done >= b->n_keys) {
            b->prefill = false;
            fprintf(stderr, "%sprefilled %llu keys%s", b->tty ? "\r" : "",
                    (unsigned long long)b->n_keys, b->tty ? "\033[K\n" : "\n");
            /* The clock starts now: warm-up, then the measured run. */
            uint64_t warm = b->t_measure - b->t_start;
            uint64_t run = b->t_end - b->t_measure;
            b->t_start = now;
            b->t_measure = now + warm;
            b->t_end = b->t_measure + run;
            for (unsigned i = 0; i < b->n_clients; i++)
                if (!b->clients[i].busy)
                    issue(&b->clients[i]);
        } else if (b->tty) {
            fprintf(stderr, "\rprefill %llu/%llu\033[K",
                    (unsigned long long)b->prefill_done,
                    (unsigned long long)b->n_keys);
        }
        return;
    }
    if (b->rate > 0 && !b->stopping)
        for (unsigned i = 0; i < b->n_clients; i++)
            if (!b->clients[i].busy)
                issue(&b->clients[i]);
    static uint64_t last_print;
    if (now - last_print >= 1000000000ull) {
        double el = (double)(now - b->t_start) / 1e9;
        double dt = last_print == 0 ? 1.0 : (double)(now - last_print) / 1e9;
        if (now >= b->t_measure)
            fprintf(stderr,
                    "%s[%5.1fs] %9.0f ops/s  p99 %7.2f ms  errors %llu%s%s",
                    b->tty ? "\r" : "", el, (double)b->sec_ops / dt,
                    ms(rk_hist_percentile(&b->sec_hist, 99.0)),
                    (unsigned long long)b->errors,
                    b->errors ? " last " : "",
                    b->errors ? ringkv_status_name(b->last_err) : "");
        else
            fprintf(stderr, "%s[%5.1fs] warming up", b->tty ? "\r" : "", el);
        fprintf(stderr, "%s", b->tty ? "\033[K" : "\n");
        rk_hist_reset(&b->sec_hist);
        b->sec_ops = 0;
        b->sec_errors = 0;
        last_print = now;
    }
    if (now >= b->t_end && !b->stopping) {
        b->stopping = true;
        if (b->tty)
            fprintf(stderr, "\n");
    }
    if (b->stopping && b->inflight == 0) {
        uv_timer_stop(&b->tick);
        uv_stop(&b->loop);
    }
}

static bool parse_op(const char *s, int *op)
{
    if (strcmp(s, "put") == 0)
        *op = OP_PUT;
    else if (strcmp(s, "get") == 0)
        *op = OP_GET;
    else if (strcmp(s, "mix") == 0)
        *op = OP_MIX;
    else
        return false;
    return true;
}

static void closed_cb(void *arg)
{
    *(bool *)arg = true;
}

static const char *OPNAME[] = {"put", "get", "mix"};

int cli_bench(struct cli *cl)
{
    struct bench *b = calloc(1, sizeof(*b));
    if (b == NULL)
        return CLI_INTERNAL;
    b->n_clients = 16;
    unsigned duration_ms = 10000, warmup_ms = 1000;
    b->op = OP_PUT;
    b->value_size = 256;
    b->n_keys = 10000;
    b->key_size = 16;
    b->cons = RINGKV_LINEARIZABLE;
    bool no_prefill = false;
    int rc = CLI_OK;
    for (int i = 1; i < cl->argc && rc == CLI_OK; i++) {
        const char *a = cl->argv[i];
        const char *v = i + 1 < cl->argc ? cl->argv[i + 1] : NULL;
        uint64_t x = 0;
        unsigned d;
        if (strcmp(a, "--no-prefill") == 0) {
            no_prefill = true;
            continue;
        }
        if (v == NULL) {
            rc = cli_usage("bench", "%s needs a value", a);
            break;
        }
        i++;
        if (strcmp(a, "--clients") == 0 && cli_parse_u64(v, &x) && x > 0 &&
            x <= 100000)
            b->n_clients = (unsigned)x;
        else if (strcmp(a, "--duration") == 0 &&
                 cli_parse_duration_ms(v, &d))
            duration_ms = d;
        else if (strcmp(a, "--warmup") == 0 &&
                 (strcmp(v, "0") == 0 || cli_parse_duration_ms(v, &d)))
            warmup_ms = strcmp(v, "0") == 0 ? 0 : d;
        else if (strcmp(a, "--op") == 0 && parse_op(v, &b->op))
            ;
        else if (strcmp(a, "--value-size") == 0 && cli_parse_u64(v, &x) &&
                 x <= (1u << 20))
            b->value_size = (unsigned)x;
        else if (strcmp(a, "--keys") == 0 && cli_parse_u64(v, &x) && x > 0)
            b->n_keys = x;
        else if (strcmp(a, "--key-size") == 0 && cli_parse_u64(v, &x) &&
                 x >= 4 && x <= 65536)
            b->key_size = (unsigned)x;
        else if (strcmp(a, "--rate") == 0 && cli_parse_u64(v, &x) && x > 0)
            b->rate = (double)x; /* total; divided per client below */
        else if (strcmp(a, "--consistency") == 0 &&
                 (strcmp(v, "linearizable") == 0 || strcmp(v, "lease") == 0 ||
                  strcmp(v, "stale") == 0))
            b->cons = v[0] == 'l' && v[1] == 'i' ? RINGKV_LINEARIZABLE
                      : v[0] == 'l'              ? RINGKV_LEASE
                                                 : RINGKV_STALE;
        else
            rc = cli_usage("bench", "bad option or value: %s %s", a, v);
    }
    if (rc != CLI_OK) {
        free(b);
        return rc;
    }
    if (b->rate > 0)
        b->rate /= b->n_clients;
    b->tty = isatty(STDERR_FILENO);
    b->value = malloc(b->value_size + 1);
    b->keybuf = malloc(b->key_size);
    b->clients = calloc(b->n_clients, sizeof(*b->clients));
    if (b->value == NULL || b->keybuf == NULL || b->clients == NULL) {
        free(b->value);
        free(b->keybuf);
        free(b->clients);
        free(b);
        return CLI_INTERNAL;
    }
    rk_rand_seed(&b->rng, rk_time_mono_ns());
    for (unsigned i = 0; i < b->value_size; i++)
        b->value[i] = (char)('a' + rk_rand_below(&b->rng, 26));
    rk_hist_init(&b->hist);
    rk_hist_init(&b->sec_hist);
    uv_loop_init(&b->loop);
    ringkv_options o = cl->opts;
    ringkv_status st = ringkv_async_open(&b->loop, &o, &b->a);
    if (st != RINGKV_OK) {
        cli_err("bad endpoints \"%s\": %s", o.endpoints, ringkv_strerror(st));
        uv_loop_close(&b->loop);
        free(b->value);
        free(b->keybuf);
        free(b->clients);
        free(b);
        return CLI_USAGE;
    }
    uint64_t now = rk_time_mono_ns();
    b->prefill = b->op != OP_PUT && !no_prefill;
    b->t_start = now;
    b->t_measure = now + (uint64_t)warmup_ms * 1000000ull;
    b->t_end = b->t_measure + (uint64_t)duration_ms * 1000000ull;
    uv_timer_init(&b->loop, &b->tick);
    b->tick.data = b;
    uv_timer_start(&b->tick, on_tick, 10, 10);
    for (unsigned i = 0; i < b->n_clients; i++) {
        b->clients[i].b = b;
        issue(&b->clients[i]);
    }
    uv_run(&b->loop, UV_RUN_DEFAULT);
    double secs = (double)duration_ms / 1000.0;
    struct rk_hist_summary s;
    rk_hist_summarize(&b->hist, &s);
    ringkv_stats cs;
    ringkv_async_get_stats(b->a, &cs);
    double ops_s = (double)b->ops / secs;
    if (cl->json) {
        json_t *j = json_object();
        json_object_set_new(j, "op", json_string(OPNAME[b->op]));
        json_object_set_new(j, "clients", json_integer(b->n_clients));
        json_object_set_new(j, "duration_s", json_real(secs));
        json_object_set_new(j, "value_size", json_integer(b->value_size));
        json_object_set_new(j, "key_size", json_integer(b->key_size));
        json_object_set_new(j, "keys", json_integer((json_int_t)b->n_keys));
        json_object_set_new(j, "ops", json_integer((json_int_t)b->ops));
        json_object_set_new(j, "ops_per_sec", json_real(ops_s));
        json_object_set_new(j, "p50_ms", json_real(ms(s.p50)));
        json_object_set_new(j, "p90_ms", json_real(ms(s.p90)));
        json_object_set_new(j, "p99_ms", json_real(ms(s.p99)));
        json_object_set_new(j, "p999_ms", json_real(ms(s.p999)));
        json_object_set_new(j, "max_ms", json_real(ms(s.max)));
        json_object_set_new(j, "mean_ms", json_real(s.mean / 1e6));
        json_object_set_new(j, "errors", json_integer((json_int_t)b->errors));
        json_object_set_new(j, "not_found",
                            json_integer((json_int_t)b->not_found));
        json_object_set_new(j, "retries", json_integer((json_int_t)cs.retries));
        if (b->errors > 0)
            json_object_set_new(j, "last_error",
                                json_string(ringkv_status_name(b->last_err)));
        json_object_set_new(j, "consistency",
                            json_string(b->cons == RINGKV_LINEARIZABLE
                                            ? "linearizable"
                                        : b->cons == RINGKV_LEASE ? "lease"
                                                                  : "stale"));
        cli_json_print(j);
    } else {
        printf("%s, %u clients, %.1f s, %u-byte values, %llu keys\n",
               OPNAME[b->op], b->n_clients, secs, b->value_size,
               (unsigned long long)b->n_keys);
        printf("%12s %9s %9s %9s %9s %9s %8s\n", "ops/s", "p50 ms", "p90 ms",
               "p99 ms", "p99.9 ms", "max ms", "errors");
        printf("%12.0f %9.3f %9.3f %9.3f %9.3f %9.3f %8llu\n", ops_s,
               ms(s.p50), ms(s.p90), ms(s.p99), ms(s.p999), ms(s.max),
               (unsigned long long)b->errors);
        if (b->errors > 0)
            printf("last error: %s\n", ringkv_strerror(b->last_err));
    }
    bool closed = false;
    ringkv_async_close(b->a, closed_cb, &closed);
    uv_close((uv_handle_t *)&b->tick, NULL);
    while (!closed)
        uv_run(&b->loop, UV_RUN_ONCE);
    uv_run(&b->loop, UV_RUN_DEFAULT);
    uv_loop_close(&b->loop);
    rc = b->ops == 0 ? CLI_UNAVAILABLE : CLI_OK;
    free(b->value);
    free(b->keybuf);
    free(b->clients);
    free(b);
    return rc;
}
