/*
 * ringkv-jepsen-client: the workload of a jepsen campaign. C logical
 * processes (one thread and one libringkv handle each) run a register, set
 * or counter workload against a cluster and write every invocation and
 * completion as one JSON line (the ringkv-lincheck JSON lines format), in
 * real-time order. A call that hits its deadline completes as "info" (its
 * effect is unknown) and its process continues under a new id (id + C), as
 * Jepsen does. A second run with --final performs the final reads.
 *
 * Progress goes to stdout once a second: "progress ops=N ok=N fail=N info=N".
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <ringkv/ringkv.h>

#define MAX_PROCS 256
#define MAX_FINAL_KEYS 100000
#define FINAL_TRIES 40 /* per key, 0.1 s apart, within FINAL_BUDGET_S */
#define FINAL_BUDGET_S 120

enum workload { WL_REGISTER, WL_SET, WL_COUNTER };

struct config {
    const char *endpoints;
    const char *out;
    enum workload wl;
    unsigned concurrency;
    double seconds;
    double rate;      /* ops/s over all processes; 0 = as fast as possible */
    uint64_t seed;
    unsigned timeout_ms;
    unsigned procs_per_key;
    unsigned ops_per_key;
    unsigned readers; /* register: processes that only read */
    int64_t t0_ns;    /* CLOCK_REALTIME origin of the history's times */
    bool final;
    const char *final_keys;
    ringkv_consistency reads; /* register and counter reads */
};

static struct config cfg;
static FILE *hist;
static pthread_mutex_t hist_mu = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool stopping;
static atomic_uint_fast64_t next_value = 1;
static atomic_uint_fast64_t n_ops, n_ok, n_fail, n_info;
static atomic_uint_fast64_t group_ops[MAX_PROCS];

/* ------------------------------------------------------------- helpers */

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec - cfg.t0_ns;
}

static uint64_t rnd(uint64_t *s)
{
    /* xorshift64*: the workload's choices, seeded per process. */
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

static void sleep_ns(int64_t ns)
{
    if (ns <= 0)
        return;
    struct timespec ts = {.tv_sec = ns / 1000000000LL,
                          .tv_nsec = ns % 1000000000LL};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !stopping)
        ;
}

/* One history event. value is a JSON fragment ("null", "5", "[1,2]"). */
static void emit(unsigned long long process, const char *type, const char *f,
                 long long key, const char *value, const char *error)
{
    pthread_mutex_lock(&hist_mu);
    int64_t t = now_ns();
    fprintf(hist, "{\"process\":%llu,\"type\":\"%s\",\"f\":\"%s\"", process,
            type, f);
    if (key >= 0)
        fprintf(hist, ",\"key\":%lld", key);
    fprintf(hist, ",\"value\":%s,\"time\":%" PRId64, value, t);
    if (error != NULL)
        fprintf(hist, ",\"error\":\"%s\"", error);
    fputs("}\n", hist);
    pthread_mutex_unlock(&hist_mu);
}

/* How a write's status completes: ok, fail (surely not applied), info. */
static const char *write_outcome(ringkv_status st)
{
    switch (st) {
    case RINGKV_OK:
        return "ok";
    case RINGKV_CAS_MISMATCH:
    case RINGKV_NOT_FOUND:
    case RINGKV_INVALID:
    case RINGKV_TOO_LARGE:
        return "fail";
    default:
        return "info";
    }
}

static void count(const char *outcome)
{
    atomic_fetch_add(&n_ops, 1);
    if (outcome[0] == 'o')
        atomic_fetch_add(&n_ok, 1);
    else if (outcome[0] == 'f')
        atomic_fetch_add(&n_fail, 1);
    else
        atomic_fetch_add(&n_info, 1);
}

static ringkv_t *open_handle(uint64_t *rs)
{
    ringkv_options o;
    ringkv_options_init(&o);
    o.endpoints = cfg.endpoints;
    o.timeout_ms = cfg.timeout_ms;
    o.attempt_timeout_ms = cfg.timeout_ms / 2 > 100 ? cfg.timeout_ms / 2 : 100;
    o.seed = rnd(rs) | 1;
    ringkv_t *c = NULL;
    ringkv_status st = ringkv_open(&o, &c);
    if (st != RINGKV_OK) {
        fprintf(stderr, "ringkv-jepsen-client: open: %s\n",
                ringkv_strerror(st));
        exit(3);
    }
    return c;
}

/* A value as decimal text; -1 when it is not a number we wrote. */
static long long parse_value(const ringkv_value *v)
{
    if (v->data == NULL || v->len == 0 || v->len > 20)
        return -1;
    char *end;
    long long x = strtoll((const char *)v->data, &end, 10);
    return *end == '\0' ? x : -1;
}

static size_t key_name(char *buf, size_t cap, char prefix, long long k)
{
    int n = snprintf(buf, cap, "%c/%lld", prefix, k);
    return (size_t)n;
}

/* ------------------------------------------------------------- register */

struct proc {
    unsigned idx;
    unsigned long long id; /* current process id */
    uint64_t rs;
    ringkv_t *c;
};

/* After an indeterminate op the process is gone: a new id, a new session. */
static void crash(struct proc *p)
{
    p->id += cfg.concurrency;
    ringkv_close(p->c);
    p->c = open_handle(&p->rs);
}

static const char *reg_read(struct proc *p, long long key, long long *seen)
{
    char kb[64], val[32];
    size_t kl = key_name(kb, sizeof(kb), 'r', key);
    emit(p->id, "invoke", "read", key, "null", NULL);
    ringkv_value v = {0};
    ringkv_status st = ringkv_get(p->c, kb, kl, cfg.reads, &v);
    const char *out;
    if (st == RINGKV_OK || st == RINGKV_NOT_FOUND) {
        long long x = st == RINGKV_OK ? parse_value(&v) : -1;
        if (st == RINGKV_OK && x < 0)
            snprintf(val, sizeof(val), "-1"); /* garbage: never written */
        else if (x < 0)
            snprintf(val, sizeof(val), "null");
        else
            snprintf(val, sizeof(val), "%lld", x);
        *seen = x;
        emit(p->id, "ok", "read", key, val, NULL);
        out = "ok";
    } else {
        /* A read that did not complete changed nothing: fail. */
        emit(p->id, "fail", "read", key, "null", ringkv_status_name(st));
        out = "fail";
    }
    ringkv_value_free(&v);
    return out;
}

static const char *reg_write(struct proc *p, long long key, long long *seen)
{
    char kb[64], val[32];
    size_t kl = key_name(kb, sizeof(kb), 'r', key);
    long long x = (long long)atomic_fetch_add(&next_value, 1);
    int n = snprintf(val, sizeof(val), "%lld", x);
    emit(p->id, "invoke", "write", key, val, NULL);
    ringkv_status st = ringkv_put(p->c, kb, kl, val, (size_t)n, NULL);
    const char *out = write_outcome(st);
    emit(p->id, out, "write", key, val,
         st == RINGKV_OK ? NULL : ringkv_status_name(st));
    if (st == RINGKV_OK)
        *seen = x;
    return out;
}

static const char *reg_cas(struct proc *p, long long key, long long *seen)
{
    char kb[64], oldv[32], newv[32], pair[80];
    size_t kl = key_name(kb, sizeof(kb), 'r', key);
    long long x = (long long)atomic_fetch_add(&next_value, 1);
    int on = *seen >= 0 ? snprintf(oldv, sizeof(oldv), "%lld", *seen) : 0;
    int nn = snprintf(newv, sizeof(newv), "%lld", x);
    snprintf(pair, sizeof(pair), "[%s,%s]", on ? oldv : "null", newv);
    emit(p->id, "invoke", "cas", key, pair, NULL);
    ringkv_expect e = {.kind = on ? RINGKV_EXPECT_VALUE : RINGKV_EXPECT_ABSENT,
                       .value = oldv,
                       .vlen = (size_t)on};
    ringkv_status st =
        ringkv_cas(p->c, kb, kl, &e, newv, (size_t)nn, false, NULL, NULL);
    const char *out = write_outcome(st);
    emit(p->id, out, "cas", key, pair,
         st == RINGKV_OK ? NULL : ringkv_status_name(st));
    if (st == RINGKV_OK)
        *seen = x;
    return out;
}

static const char *register_op(struct proc *p)
{
    unsigned ngroups = (cfg.concurrency + cfg.procs_per_key - 1) /
                       cfg.procs_per_key;
    unsigned g = p->idx / cfg.procs_per_key;
    uint64_t done = atomic_fetch_add(&group_ops[g], 1);
    long long key = (long long)(g + ngroups * (done / cfg.ops_per_key));
    static _Thread_local long long last_key = -1, seen = -1;
    if (key != last_key) {
        last_key = key;
        seen = -1;
    }
    if (p->idx < cfg.readers)
        return reg_read(p, key, &seen);
    switch (rnd(&p->rs) % 3) {
    case 0:
        return reg_read(p, key, &seen);
    case 1:
        return reg_write(p, key, &seen);
    default:
        return reg_cas(p, key, &seen);
    }
}

/* ------------------------------------------------------------- set */

static const char *set_add(struct proc *p)
{
    char kb[64], val[32];
    long long x = (long long)atomic_fetch_add(&next_value, 1);
    size_t kl = key_name(kb, sizeof(kb), 's', x);
    int n = snprintf(val, sizeof(val), "%lld", x);
    emit(p->id, "invoke", "add", -1, val, NULL);
    ringkv_status st = ringkv_put(p->c, kb, kl, val, (size_t)n, NULL);
    const char *out = write_outcome(st);
    emit(p->id, out, "add", -1, val,
         st == RINGKV_OK ? NULL : ringkv_status_name(st));
    return out;
}

/* The whole set by pages; 0 or the status of the page that failed. */
static ringkv_status set_scan(ringkv_t *c, char **json)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    char after[64];
    size_t alen = 0;
    if (buf == NULL)
        return RINGKV_NO_MEMORY;
    buf[len++] = '[';
    for (int page = 0; page < 100000; page++) {
        ringkv_kvs kvs = {0};
        ringkv_status st = ringkv_scan(c, "s/", 2, alen ? after : NULL, alen,
                                       1000, false, &kvs);
        if (st != RINGKV_OK) {
            free(buf);
            return st;
        }
        for (size_t i = 0; i < kvs.n; i++) {
            if (len + 32 > cap) {
                cap *= 2;
                char *nb = realloc(buf, cap);
                if (nb == NULL) {
                    free(buf);
                    ringkv_kvs_free(&kvs);
                    return RINGKV_NO_MEMORY;
                }
                buf = nb;
            }
            long long x = parse_value(&kvs.items[i].value);
            len += (size_t)snprintf(buf + len, cap - len, "%s%lld",
                                    len > 1 ? "," : "", x);
        }
        if (kvs.n > 0) {
            ringkv_kv *lastkv = &kvs.items[kvs.n - 1];
            alen = lastkv->klen < sizeof(after) ? lastkv->klen : 0;
            memcpy(after, lastkv->key, alen);
        }
        size_t got = kvs.n;
        ringkv_kvs_free(&kvs);
        if (got < 1000 || alen == 0)
            break;
    }
    buf[len++] = ']';
    buf[len] = '\0';
    *json = buf;
    return RINGKV_OK;
}

/* ------------------------------------------------------------- counter */

static const char *counter_read(struct proc *p, bool final)
{
    char val[32];
    const char *f = final ? "final-read" : "read";
    emit(p->id, "invoke", f, 0, "null", NULL);
    ringkv_value v = {0};
    ringkv_status st = ringkv_get(p->c, "c/0", 3, cfg.reads, &v);
    const char *out = "fail";
    if (st == RINGKV_OK || st == RINGKV_NOT_FOUND) {
        snprintf(val, sizeof(val), "%lld",
                 st == RINGKV_OK ? parse_value(&v) : 0);
        emit(p->id, "ok", f, 0, val, NULL);
        out = "ok";
    } else {
        emit(p->id, "fail", f, 0, "null", ringkv_status_name(st));
    }
    ringkv_value_free(&v);
    return out;
}

/* An increment: read the counter, then cas on its revision. */
static const char *counter_add(struct proc *p)
{
    emit(p->id, "invoke", "add", 0, "1", NULL);
    ringkv_value v = {0};
    ringkv_status st = ringkv_get(p->c, "c/0", 3, RINGKV_LINEARIZABLE, &v);
    if (st != RINGKV_OK && st != RINGKV_NOT_FOUND) {
        emit(p->id, "fail", "add", 0, "1", ringkv_status_name(st));
        return "fail";
    }
    long long cur = st == RINGKV_OK ? parse_value(&v) : 0;
    char nv[32];
    int n = snprintf(nv, sizeof(nv), "%lld", cur + 1);
    ringkv_expect e = {.kind = st == RINGKV_OK ? RINGKV_EXPECT_REVISION
                                               : RINGKV_EXPECT_ABSENT,
                       .revision = v.revision};
    ringkv_value_free(&v);
    st = ringkv_cas(p->c, "c/0", 3, &e, nv, (size_t)n, false, NULL, NULL);
    const char *out = write_outcome(st);
    emit(p->id, out, "add", 0, "1",
         st == RINGKV_OK ? NULL : ringkv_status_name(st));
    return out;
}

/* ------------------------------------------------------------- runs */

static void *proc_main(void *arg)
{
    struct proc *p = arg;
    int64_t end = now_ns() + (int64_t)(cfg.seconds * 1e9);
    int64_t gap = cfg.rate > 0 ? (int64_t)(cfg.concurrency * 1e9 / cfg.rate)
                               : 0;
    int64_t next = now_ns() + (gap ? (int64_t)(rnd(&p->rs) % (uint64_t)gap)
                                   : 0);
    while (!stopping && now_ns() < end) {
        sleep_ns(next - now_ns());
        if (stopping || now_ns() >= end)
            break;
        const char *out;
        if (cfg.wl == WL_REGISTER)
            out = register_op(p);
        else if (cfg.wl == WL_SET)
            out = set_add(p);
        else
            out = rnd(&p->rs) % 5 == 0 ? counter_read(p, false)
                                        : counter_add(p);
        count(out);
        if (out[0] == 'i')
            crash(p);
        /* Jitter in [0.5, 1.5) of the mean gap keeps processes apart. */
        next += gap ? gap / 2 + (int64_t)(rnd(&p->rs) % (uint64_t)gap) : 0;
        if (next < now_ns() - 1000000000LL)
            next = now_ns(); /* fell behind (a long call): no burst */
    }
    return NULL;
}

/* Final reads after the cluster healed: retried until one succeeds. */
static int final_reads(void)
{
    uint64_t rs = cfg.seed | 1;
    struct proc p = {.idx = 0, .id = 1000000, .rs = rs};
    p.c = open_handle(&p.rs);
    int rc = 0;
    int64_t budget = now_ns() + FINAL_BUDGET_S * 1000000000LL;
    if (cfg.wl == WL_REGISTER) {
        const char *s = cfg.final_keys ? cfg.final_keys : "";
        while (*s) {
            char *end;
            long long key = strtoll(s, &end, 10);
            if (end == s) {
                fprintf(stderr, "ringkv-jepsen-client: bad --final-keys\n");
                rc = 2;
                break;
            }
            long long seen = -1;
            int t = 0;
            while (t++ < FINAL_TRIES && now_ns() < budget &&
                   strcmp(reg_read(&p, key, &seen), "ok") != 0)
                sleep_ns(100000000LL);
            if (t > FINAL_TRIES || now_ns() >= budget)
                rc = 1;
            s = *end == ',' ? end + 1 : end;
        }
    } else if (cfg.wl == WL_SET) {
        int t = 0;
        for (; t < FINAL_TRIES; t++) {
            char *json = NULL;
            emit(p.id, "invoke", "read", -1, "null", NULL);
            ringkv_status st = set_scan(p.c, &json);
            if (st == RINGKV_OK) {
                emit(p.id, "ok", "read", -1, json, NULL);
                free(json);
                break;
            }
            emit(p.id, "fail", "read", -1, "null", ringkv_status_name(st));
            sleep_ns(100000000LL);
        }
        rc = t < FINAL_TRIES ? 0 : 1;
    } else {
        int t = 0;
        while (t < FINAL_TRIES && strcmp(counter_read(&p, true), "ok") != 0) {
            t++;
            sleep_ns(100000000LL);
        }
        rc = t < FINAL_TRIES ? 0 : 1;
    }
    ringkv_close(p.c);
    return rc;
}

static void on_signal(int sig)
{
    (void)sig;
    stopping = true;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ringkv-jepsen-client --endpoints H:P,... --out FILE\n"
            "  [--workload register|set|counter] [--concurrency C]\n"
            "  [--time S] [--rate OPS] [--seed N] [--timeout-ms MS]\n"
            "  [--procs-per-key N] [--ops-per-key N] [--readers N]\n"
            "  [--consistency linearizable|lease] [--t0 NS]\n"
            "  [--final [--final-keys K,K,...]]\n"
            "Appends the history as JSON lines to FILE. Exit 0 when the run\n"
            "(or every final read) completed, 1 if a final read never\n"
            "succeeded, 2 for bad usage, 3 when the client cannot start.\n");
}

static int parse_args(int argc, char **argv)
{
    cfg.wl = WL_REGISTER;
    cfg.concurrency = 10;
    cfg.seconds = 30;
    cfg.rate = 100;
    cfg.timeout_ms = 1500;
    cfg.procs_per_key = 5;
    cfg.ops_per_key = 200;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool need = true;
        if (strcmp(a, "--final") == 0) {
            cfg.final = true;
            need = false;
        } else if (strcmp(a, "--help") == 0) {
            usage(stdout);
            exit(0);
        } else if (v == NULL) {
            fprintf(stderr, "ringkv-jepsen-client: %s needs a value\n", a);
            return -1;
        } else if (strcmp(a, "--endpoints") == 0) {
            cfg.endpoints = v;
        } else if (strcmp(a, "--out") == 0) {
            cfg.out = v;
        } else if (strcmp(a, "--workload") == 0) {
            if (strcmp(v, "register") == 0)
                cfg.wl = WL_REGISTER;
            else if (strcmp(v, "set") == 0)
                cfg.wl = WL_SET;
            else if (strcmp(v, "counter") == 0)
                cfg.wl = WL_COUNTER;
            else {
                fprintf(stderr, "ringkv-jepsen-client: unknown workload "
                                "'%s'\n", v);
                return -1;
            }
        } else if (strcmp(a, "--concurrency") == 0) {
            cfg.concurrency = (unsigned)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--time") == 0) {
            cfg.seconds = strtod(v, NULL);
        } else if (strcmp(a, "--rate") == 0) {
            cfg.rate = strtod(v, NULL);
        } else if (strcmp(a, "--seed") == 0) {
            cfg.seed = strtoull(v, NULL, 10);
        } else if (strcmp(a, "--timeout-ms") == 0) {
            cfg.timeout_ms = (unsigned)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--procs-per-key") == 0) {
            cfg.procs_per_key = (unsigned)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--ops-per-key") == 0) {
            cfg.ops_per_key = (unsigned)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--readers") == 0) {
            cfg.readers = (unsigned)strtoul(v, NULL, 10);
        } else if (strcmp(a, "--t0") == 0) {
            cfg.t0_ns = strtoll(v, NULL, 10);
        } else if (strcmp(a, "--consistency") == 0) {
            if (strcmp(v, "linearizable") == 0)
                cfg.reads = RINGKV_LINEARIZABLE;
            else if (strcmp(v, "lease") == 0)
                cfg.reads = RINGKV_LEASE;
            else {
                fprintf(stderr, "ringkv-jepsen-client: --consistency "
                                "linearizable|lease\n");
                return -1;
            }
        } else if (strcmp(a, "--final-keys") == 0) {
            cfg.final_keys = v;
        } else {
            fprintf(stderr, "ringkv-jepsen-client: unknown option '%s'\n", a);
            return -1;
        }
        if (need)
            i++;
    }
    if (cfg.endpoints == NULL || cfg.out == NULL) {
        fprintf(stderr, "ringkv-jepsen-client: --endpoints and --out are "
                        "required\n");
        return -1;
    }
    if (cfg.concurrency == 0 || cfg.concurrency > MAX_PROCS ||
        cfg.procs_per_key == 0 || cfg.ops_per_key == 0 ||
        cfg.timeout_ms == 0 || !(cfg.seconds >= 0) || !(cfg.rate >= 0)) {
        fprintf(stderr, "ringkv-jepsen-client: --concurrency must be in "
                        "[1, %d]; --procs-per-key, --ops-per-key and "
                        "--timeout-ms positive; --time and --rate >= 0\n",
                MAX_PROCS);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) != 0) {
        usage(stderr);
        return 2;
    }
    if (cfg.t0_ns == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        cfg.t0_ns = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
    }
    if (cfg.seed == 0)
        cfg.seed = (uint64_t)cfg.t0_ns;
    hist = fopen(cfg.out, "a");
    if (hist == NULL) {
        fprintf(stderr, "ringkv-jepsen-client: %s: %s\n", cfg.out,
                strerror(errno));
        return 3;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = 0;
    if (cfg.final) {
        rc = final_reads();
    } else {
        static struct proc procs[MAX_PROCS];
        pthread_t th[MAX_PROCS];
        uint64_t rs = cfg.seed;
        for (unsigned i = 0; i < cfg.concurrency; i++) {
            procs[i].idx = i;
            procs[i].id = i;
            procs[i].rs = rnd(&rs) | 1;
            procs[i].c = open_handle(&procs[i].rs);
        }
        unsigned started = 0;
        for (; started < cfg.concurrency; started++)
            if (pthread_create(&th[started], NULL, proc_main,
                               &procs[started]) != 0)
                break;
        if (started < cfg.concurrency) {
            fprintf(stderr, "ringkv-jepsen-client: cannot start threads\n");
            stopping = true;
            rc = 3;
        }
        /* Progress until the run ends (bounded by --time plus one call). */
        int64_t end = now_ns() + (int64_t)(cfg.seconds * 1e9);
        while (!stopping && now_ns() < end) {
            sleep_ns(1000000000LL);
            printf("progress ops=%" PRIuFAST64 " ok=%" PRIuFAST64
                   " fail=%" PRIuFAST64 " info=%" PRIuFAST64 "\n",
                   atomic_load(&n_ops), atomic_load(&n_ok),
                   atomic_load(&n_fail), atomic_load(&n_info));
            fflush(stdout);
        }
        for (unsigned i = 0; i < started; i++)
            pthread_join(th[i], NULL);
        for (unsigned i = 0; i < cfg.concurrency; i++)
            ringkv_close(procs[i].c);
        printf("done ops=%" PRIuFAST64 " ok=%" PRIuFAST64 " fail=%" PRIuFAST64
               " info=%" PRIuFAST64 "\n",
               atomic_load(&n_ops), atomic_load(&n_ok), atomic_load(&n_fail),
               atomic_load(&n_info));
    }
    if (fclose(hist) != 0) {
        fprintf(stderr, "ringkv-jepsen-client: %s: %s\n", cfg.out,
                strerror(errno));
        rc = 3;
    }
    return rc;
}
