/* Crash test: a writer child SIGKILLed at random, 200 times. */
#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "rk_log.h"
#include "rk_rand.h"
#include "stor.h"

/*
 * The child writes two kinds of records to a pipe:
 *   INTENT n: the state every shard will be in once batch n is durable,
 *             written BEFORE batch n is submitted (n = 0: state at start);
 *   ACK n:    written by batch n's completion callback (status 0).
 * The runs alternate the WAL's I/O mode (O_DIRECT or buffered), and the
 * reopen after a kill uses the other mode (wal_buffered_run).
 * After the kill the parent reopens the store and requires ONE n, with
 * n >= the highest ACK and n <= the highest INTENT, such that every shard's
 * state equals INTENT n (a batch is atomic across shards and an acknowledged
 * batch is never lost). Then it checks each shard's KV contents against its
 * applied index exactly, and its log against the entries' generator.
 *
 * Workload per shard and batch: append 1-8 entries (sometimes replacing an
 * unapplied suffix with a higher term), apply a few (sessions: client =
 * shard, seq = index), compact now and then. Entry i of term t is
 * PUT k<i % 16> = "<i>.<t>", so after applied index A key k<j> must hold the
 * largest i <= A with i % 16 == j, at revision i. Half the keys are long
 * (over LMDB's key limit, stored under a prefix and a hash): key_of().
 */

#define N_SHARDS  4
#define N_KEYS    16
#define MAX_LAG   32
#define MAX_BATCH 8
#define CMD_MAX   4096 /* an encoded command */

enum { REC_INTENT = 1, REC_ACK = 2 };

struct sst {
    uint64_t last, last_term, applied;
};

struct rec {
    uint32_t type;
    uint32_t n;
    struct sst sh[N_SHARDS];
};

static int runs_wanted(void)
{
    const char *e = getenv("STOR_CRASH_RUNS");
    int n = e ? atoi(e) : 200;
    return n > 0 && n < 100000 ? n : 200;
}

static int rm_cb(const char *p, const struct stat *sb, int flag,
                 struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(p);
    return 0;
}

/* --------------------------------------------------------------- child */

struct child {
    struct stor *s;
    int fd;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t done; /* batches completed */
    int failed;
};

static void write_rec(int fd, const struct rec *r)
{
    ssize_t w = write(fd, r, sizeof(*r));
    if (w != (ssize_t)sizeof(*r))
        _exit(4);
}

static void on_done(struct stor_batch *b, int status, void *arg)
{
    struct child *c = arg;
    (void)b;
    pthread_mutex_lock(&c->mu);
    if (status) {
        c->failed = status;
    } else {
        struct rec r = {.type = REC_ACK, .n = c->done + 1};
        write_rec(c->fd, &r);
    }
    c->done++;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

/* Key j: "k<j>" for even j; for odd j a long key: 490 'L's then "k<j>"
 * (just over the 480-byte threshold), or 480 'L's, "k<j>" and 3000 'p's.
 * All the long ones share their first 480 bytes. Returns the length. */
static size_t key_of(uint64_t j, char *key)
{
    size_t n = 0;
    if (j % 2)
        for (size_t pad = j % 4 == 1 ? 490 : 480; n < pad; n++)
            key[n] = 'L';
    n += (size_t)snprintf(key + n, 16, "k%llu", (unsigned long long)j);
    if (j % 4 == 3)
        for (size_t e = n + 3000; n < e; n++)
            key[n] = 'p';
    return n;
}

/* Asks for the applied cb as ringkvd does: a batch that needs no
 * durability is then done without a WAL sync of its own (stor_thread.c);
 * the kills must find every acknowledged batch, whether it was replayed
 * from the WAL or checkpointed into LMDB before the kill. */
static void on_applied(struct stor_batch *b, int status, void *arg)
{
    (void)b;
    (void)arg;
    if (status != 0 && status != STOR_APPLIED_LAZY)
        _exit(9);
}

static size_t make_cmd(uint8_t *buf, size_t cap, uint64_t shard, uint64_t i,
                       uint64_t t)
{
    char key[3600], val[48];
    size_t klen = key_of(i % N_KEYS, key);
    snprintf(val, sizeof val, "%llu.%llu", (unsigned long long)i,
             (unsigned long long)t);
    struct stor_cmd c = {.op = STOR_CMD_PUT,
                         .client_id = shard,
                         .seq = i,
                         .key = key,
                         .klen = (uint32_t)klen,
                         .value = val,
                         .vlen = (uint32_t)strlen(val)};
    size_t len;
    if (stor_cmd_encode(&c, buf, cap, &len))
        _exit(5);
    return len;
}

/* The WAL's I/O mode of a run: O_DIRECT (where the file system has it)
 * or buffered, by the seed's low bit; the reopen after the kill uses the
 * other one, so every replay reads segments the other mode wrote. */
static bool wal_buffered_run(uint64_t seed)
{
    return (seed & 1) != 0;
}

static void child_main(const char *dir, int fd, uint64_t seed)
{
    struct child c = {.fd = fd,
                      .mu = PTHREAD_MUTEX_INITIALIZER,
                      .cv = PTHREAD_COND_INITIALIZER};
    struct stor_opts o = {.path = dir,
                          .cluster_id = 7,
                          .node_id = 3,
                          .create = true,
                          .map_size = 4 << 20,
                          .wal_buffered = wal_buffered_run(seed),
                          /* Half the runs checkpoint every 5 ms, so that
                           * kills land between a checkpoint's commit and
                           * its sync (the reopen goes back to the last
                           * durable one and replays). */
                          .checkpoint_ms = (seed & 2) ? 5 : 0};
    char err[RK_ERRMSG_SIZE];
    struct rk_rand rng;
    rk_rand_seed(&rng, seed);
    rk_log_set_level(RK_LOG_WARN);
    if (stor_open(&o, &c.s, err))
        _exit(2);
    struct stor_batch *bufs[2];
    if (stor_batch_new(&bufs[0]) || stor_batch_new(&bufs[1]))
        _exit(2);
    struct raft_conf_state conf = {.n_voters = 1, .voters = {3}};
    for (uint64_t id = 1; id <= N_SHARDS; id++)
        if (!stor_shard_get(c.s, id) &&
            stor_batch_create_shard(bufs[0], id, &conf))
            _exit(2);
    if (!stor_batch_empty(bufs[0]) && stor_batch_commit(c.s, bufs[0]))
        _exit(2);
    /* State at start, and the terms of the unapplied tails. */
    struct sst st[N_SHARDS];
    uint64_t terms[N_SHARDS][MAX_LAG + MAX_BATCH + 1];
    for (int k = 0; k < N_SHARDS; k++) {
        struct stor_shard *sh = stor_shard_get(c.s, (uint64_t)k + 1);
        struct stor_shard_state ss;
        if (!sh || stor_shard_load(sh, &ss))
            _exit(2);
        st[k].last = ss.last_index;
        st[k].last_term = stor_log_last_term(sh);
        st[k].applied = ss.applied;
        if (st[k].last - st[k].applied > MAX_LAG)
            _exit(2);
        for (uint64_t i = st[k].applied + 1; i <= st[k].last; i++) {
            struct raft_entry *e;
            uint32_t n;
            if (stor_log_entries(sh, i, i + 1, 0, &e, &n))
                _exit(2);
            terms[k][i - st[k].applied - 1] = e[0].term;
            free(e);
        }
    }
    struct rec r = {.type = REC_INTENT, .n = 0};
    memcpy(r.sh, st, sizeof st);
    write_rec(fd, &r);

    static uint8_t payload[N_SHARDS][MAX_LAG + MAX_BATCH + 1][CMD_MAX];
    struct raft_entry app[MAX_LAG + MAX_BATCH + 1];
    struct raft_entry ent[MAX_BATCH];
    for (uint32_t n = 1;; n++) {
        struct stor_batch *b = bufs[n % 2];
        pthread_mutex_lock(&c.mu);
        while (n >= 3 && c.done < n - 2)
            pthread_cond_wait(&c.cv, &c.mu);
        int failed = c.failed;
        pthread_mutex_unlock(&c.mu);
        if (failed)
            _exit(6);
        stor_batch_reset(b);
        /* One batch in four applies and compacts only (no append, same term
         * and vote): the store commits those without the meta-page sync. */
        bool apply_only = n > 1 && rk_rand_below(&rng, 4) == 0;
        for (int k = 0; k < N_SHARDS; k++) {
            uint64_t id = (uint64_t)k + 1;
            struct sst *x = &st[k];
            uint64_t term = x->last_term ? x->last_term : 1;
            uint64_t from = x->last + 1;
            if (apply_only)
                goto apply;
            if (x->last > x->applied && rk_rand_below(&rng, 8) == 0) {
                /* A new leader overwrites an unapplied suffix. */
                from =
                    x->applied + 1 + rk_rand_below(&rng, x->last - x->applied);
                term++;
            }
            uint32_t cnt = 1 + (uint32_t)rk_rand_below(&rng, MAX_BATCH);
            for (uint32_t j = 0; j < cnt; j++) {
                uint64_t i = from + j;
                uint8_t *p = payload[k][(i - x->applied - 1)];
                ent[j].index = i;
                ent[j].term = term;
                ent[j].type = RAFT_ENTRY_NORMAL;
                ent[j].data = p;
                ent[j].len = (uint32_t)make_cmd(p, CMD_MAX, id, i, term);
                terms[k][i - x->applied - 1] = term;
            }
            if (stor_batch_append(b, id, ent, cnt))
                _exit(7);
            x->last = from + cnt - 1;
            x->last_term = term;
        apply:;
            uint64_t to = x->applied + rk_rand_below(&rng, 6);
            if (to > x->last)
                to = x->last;
            if (x->last - to > MAX_LAG - MAX_BATCH)
                to = x->last - (MAX_LAG - MAX_BATCH);
            uint32_t na = 0;
            for (uint64_t i = x->applied + 1; i <= to; i++, na++) {
                app[na].index = i;
                app[na].term = terms[k][i - x->applied - 1];
                app[na].type = RAFT_ENTRY_NORMAL;
                app[na].data = payload[k][na];
                app[na].len =
                    (uint32_t)make_cmd(app[na].data, CMD_MAX, id, i,
                                    app[na].term);
            }
            struct raft_hard_state hs = {.term = term, .vote = 3, .commit = to};
            if (stor_batch_set_hard_state(b, id, &hs) ||
                (na && stor_batch_apply(b, id, app, na, NULL)))
                _exit(7);
            /* Shift the tail buffers so that slot 0 is applied + 1. */
            if (na) {
                memmove(terms[k], terms[k] + na,
                        (MAX_LAG + MAX_BATCH + 1 - na) * sizeof(uint64_t));
                memmove(payload[k], payload[k] + na,
                        (MAX_LAG + MAX_BATCH + 1 - na) * sizeof(payload[k][0]));
            }
            x->applied = to;
            if (rk_rand_below(&rng, 16) == 0 && x->applied > 50)
                if (stor_batch_compact(b, id, x->applied - 50))
                    _exit(7);
        }
        r.type = REC_INTENT;
        r.n = n;
        memcpy(r.sh, st, sizeof st);
        write_rec(fd, &r);
        stor_batch_on_applied(b, on_applied, &c);
        if (stor_batch_submit(c.s, b, on_done, &c))
            _exit(8);
    }
}

/* -------------------------------------------------------------- parent */

/* Reopens that replayed WAL records (the kill came between a batch's WAL
 * append and the checkpoint that would have made LMDB hold it). */
static uint64_t runs_replayed, records_replayed;
/* Reopens that went back to the last durable checkpoint (the kill came
 * after a checkpoint's commit, before its sync named it durable). */
static uint64_t runs_reverted;

static int check_store(const char *dir, bool wal_buffered,
                       const struct rec *intents, uint32_t n_intents,
                       uint32_t max_ack, bool have_ack, struct sst *out,
                       char *why, size_t whylen)
{
    struct stor_opts o = {.path = dir, .cluster_id = 7, .node_id = 3,
                          .wal_buffered = wal_buffered};
    char err[RK_ERRMSG_SIZE];
    struct stor *s;
    int rc = stor_open(&o, &s, err);
    if (rc) {
        snprintf(why, whylen, "reopen: %s: %s", rk_err_name(rc), err);
        return -1;
    }
    struct sst got[N_SHARDS];
    int bad = 0;
    struct stor_stats st;
    stor_stats(s, &st);
    runs_reverted += st.checkpoint_reverted;
    if (st.wal_replayed > 0) {
        runs_replayed++;
        records_replayed += st.wal_replayed;
    }
    if (stor_check(s, err) != 0) {
        snprintf(why, whylen, "stor_check: %s", err);
        stor_close(s);
        return -1;
    }
    for (int k = 0; k < N_SHARDS && !bad; k++) {
        struct stor_shard *sh = stor_shard_get(s, (uint64_t)k + 1);
        struct stor_shard_state ss;
        if (!sh || stor_shard_load(sh, &ss)) {
            snprintf(why, whylen, "shard %d missing", k + 1);
            bad = 1;
            break;
        }
        got[k].last = ss.last_index;
        got[k].last_term = stor_log_last_term(sh);
        got[k].applied = ss.applied;
        /* The log: every entry from first to last, as generated. */
        uint64_t prev_term = 0;
        for (uint64_t i = ss.first_index; i <= ss.last_index && !bad; i++) {
            struct raft_entry *e;
            uint32_t n;
            struct stor_cmd c;
            char val[48];
            if (stor_log_entries(sh, i, i + 1, 0, &e, &n) || n != 1) {
                snprintf(why, whylen, "shard %d entry %llu unreadable", k + 1,
                         (unsigned long long)i);
                bad = 1;
                break;
            }
            snprintf(val, sizeof val, "%llu.%llu", (unsigned long long)i,
                     (unsigned long long)e[0].term);
            if (stor_cmd_decode(e[0].data, e[0].len, &c) ||
                c.vlen != strlen(val) || memcmp(c.value, val, c.vlen) ||
                e[0].term < prev_term) {
                snprintf(why, whylen, "shard %d entry %llu wrong", k + 1,
                         (unsigned long long)i);
                bad = 1;
            }
            prev_term = e[0].term;
            free(e);
        }
        if (ss.first_index > ss.applied + 1) {
            snprintf(why, whylen, "shard %d compacted past applied", k + 1);
            bad = 1;
        }
        /* KV contents == exactly the entries up to applied. */
        for (uint64_t j = 0; j < N_KEYS && !bad; j++) {
            char key[3600];
            size_t klen = key_of(j, key);
            uint64_t want = 0;
            if (ss.applied >= j && ss.applied > 0)
                want = ss.applied - ((ss.applied - j) % N_KEYS);
            struct stor_value v;
            rc = stor_kv_get(s, (uint64_t)k + 1, key, klen, &v);
            if (want == 0) {
                if (rc != RK_ENOTFOUND) {
                    snprintf(why, whylen, "shard %d key k%llu should be absent",
                             k + 1, (unsigned long long)j);
                    bad = 1;
                }
                if (rc == 0)
                    free(v.data);
                continue;
            }
            char pre[32];
            int pl =
                snprintf(pre, sizeof pre, "%llu.", (unsigned long long)want);
            if (rc || v.revision != want || v.len <= (uint32_t)pl ||
                memcmp(v.data, pre, (size_t)pl) != 0) {
                snprintf(why, whylen,
                         "shard %d key k%llu: rc %d rev %llu, want rev %llu "
                         "(applied %llu)",
                         k + 1, (unsigned long long)j, rc, (unsigned long long)v.revision,
                         (unsigned long long)want,
                         (unsigned long long)ss.applied);
                bad = 1;
            }
            if (rc == 0)
                free(v.data);
        }
        uint64_t seq;
        if (!bad &&
            (stor_session_last_seq(s, (uint64_t)k + 1, (uint64_t)k + 1, &seq) ||
             seq != ss.applied)) {
            snprintf(why, whylen, "shard %d session seq %llu != applied", k + 1,
                     (unsigned long long)seq);
            bad = 1;
        }
    }
    stor_close(s);
    if (bad)
        return -1;
    /* One intent n >= max_ack that matches every shard. */
    for (uint32_t i = 0; i < n_intents; i++) {
        if (have_ack && intents[i].n < max_ack)
            continue;
        if (memcmp(intents[i].sh, got, sizeof got) == 0) {
            memcpy(out, got, sizeof got);
            return (int)intents[i].n;
        }
    }
    snprintf(why, whylen,
             "state matches no batch at or after the last acknowledged one "
             "(%u); shard 1 last %llu term %llu applied %llu",
             max_ack, (unsigned long long)got[0].last,
             (unsigned long long)got[0].last_term,
             (unsigned long long)got[0].applied);
    return -1;
}

static void test_sigkill_storm(void **state)
{
    (void)state;
    char dir[] = "/tmp/rk-stor-crash-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char data[sizeof dir + 8];
    snprintf(data, sizeof data, "%s/d", dir);
    rk_log_set_level(RK_LOG_WARN);
    struct rk_rand rng;
    rk_rand_seed(&rng, (uint64_t)time(NULL));
    int runs = runs_wanted();
    uint64_t total_acks = 0, total_batches_seen = 0;
    struct sst prev[N_SHARDS];
    memset(prev, 0, sizeof prev);
    bool have_prev = false;
    static struct rec intents[1 << 14];
    int fails = 0;
    for (int run = 0; run < runs && !fails; run++) {
        int p[2];
        assert_int_equal(pipe(p), 0);
        uint64_t seed = rk_rand_next(&rng);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(p[0]);
            child_main(data, p[1], seed);
            _exit(0);
        }
        close(p[1]);
        /* Read while the child runs. Most runs kill it 1-60 ms after it
         * reported its start (so a slow disk still sees acknowledged
         * batches); one in eight kills it 0-10 ms after fork, inside
         * stor_open or the shard creation. */
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        bool early = rk_rand_below(&rng, 8) == 0;
        long delay = early ? (long)rk_rand_below(&rng, 11)
                           : 1 + (long)rk_rand_below(&rng, 60);
        long kill_ms = early ? delay : 5000; /* until the start is seen */
        uint32_t n_int = 0, max_ack = 0;
        bool have_ack = false, killed = false, eof = false;
        struct rec r;
        size_t got = 0;
        uint8_t *rb = (uint8_t *)&r;
        while (!eof) {
            clock_gettime(CLOCK_MONOTONIC, &t);
            long el = (t.tv_sec - t0.tv_sec) * 1000 +
                      (t.tv_nsec - t0.tv_nsec) / 1000000;
            if (!killed && el >= kill_ms) {
                kill(pid, SIGKILL);
                killed = true;
            }
            struct pollfd pf = {.fd = p[0], .events = POLLIN};
            int pr = poll(&pf, 1, killed ? 5000 : (int)(kill_ms - el) + 1);
            if (pr < 0 && errno == EINTR)
                continue;
            if (pr <= 0) {
                if (killed)
                    break; /* no EOF within 5 s: give up reading */
                continue;
            }
            ssize_t n = read(p[0], rb + got, sizeof r - got);
            if (n <= 0) {
                eof = true;
                break;
            }
            got += (size_t)n;
            if (got < sizeof r)
                continue;
            got = 0;
            if (r.type == REC_INTENT &&
                n_int < (sizeof intents / sizeof intents[0])) {
                if (r.n == 0 && !early) {
                    clock_gettime(CLOCK_MONOTONIC, &t);
                    kill_ms = (t.tv_sec - t0.tv_sec) * 1000 +
                              (t.tv_nsec - t0.tv_nsec) / 1000000 + delay;
                }
                intents[n_int++] = r;
            } else if (r.type == REC_ACK) {
                have_ack = true;
                if (r.n > max_ack)
                    max_ack = r.n;
                total_acks++;
            }
        }
        close(p[0]);
        if (!killed)
            kill(pid, SIGKILL);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)) {
            fprintf(stderr, "run %d: child exited on its own (status %#x)\n",
                    run, status);
            fails++;
            break;
        }
        total_batches_seen += n_int;
        if (n_int == 0) {
            /* Killed before it reported its start: state as before. */
            if (!have_prev)
                continue; /* killed during creation: may be empty */
            intents[0].type = REC_INTENT;
            intents[0].n = 0;
            memcpy(intents[0].sh, prev, sizeof prev);
            n_int = 1;
        } else if (have_prev && memcmp(intents[0].sh, prev, sizeof prev)) {
            fprintf(stderr, "run %d: child started from another state\n", run);
            fails++;
            break;
        }
        char why[512];
        struct sst now[N_SHARDS];
        int n = check_store(data, !wal_buffered_run(seed), intents, n_int,
                            max_ack, have_ack, now, why, sizeof why);
        if (n < 0) {
            fprintf(stderr, "run %d (seed %llu): %s\n", run,
                    (unsigned long long)seed, why);
            fails++;
            break;
        }
        memcpy(prev, now, sizeof now);
        have_prev = true;
    }
    fprintf(stderr,
            "crash test: %d runs, %llu batches submitted, %llu acknowledged, "
            "final shard 1 last %llu applied %llu; %llu reopens replayed "
            "%llu WAL records, %llu went back to the last durable "
            "checkpoint\n",
            runs, (unsigned long long)total_batches_seen,
            (unsigned long long)total_acks, (unsigned long long)prev[0].last,
            (unsigned long long)prev[0].applied,
            (unsigned long long)runs_replayed,
            (unsigned long long)records_replayed,
            (unsigned long long)runs_reverted);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    assert_int_equal(fails, 0);
    /* Not vacuous: many batches were acknowledged and checked. */
    assert_true(total_acks >= (uint64_t)runs / 2);
    /* ... and the kills found WAL records not checkpointed yet. */
    assert_true(runs_replayed >= (uint64_t)runs / 4);
    /* ... and some came between a checkpoint's commit and its sync (about
     * 30 of 200 here). */
    assert_true(runs_reverted > 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sigkill_storm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
