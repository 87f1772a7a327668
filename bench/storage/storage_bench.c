/* storage-bench: raw fdatasync vs the store's durable batch, throughput. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rk_log.h"
#include "stor.h"

/*
 * In ONE run, on the same file system (--dir):
 *   1. raw: pwrite 256 bytes at the end of a file + fdatasync, N times;
 *   2. the store (full durability unless --unsafe-no-sync): batches of 1,
 *      16 and 256 entries of 256 bytes (log append + hard state, what a Raft
 *      ready writes), one at a time for latency (submit -> callback), then
 *      two in flight (double buffering) for throughput;
 *   3. the same with the entries also applied (KV put + applied index).
 * Everything is printed side by side with ratios to the raw fdatasync.
 */

#define ENTRY_BYTES 256

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(double *v, size_t n, double p)
{
    qsort(v, n, sizeof(*v), cmp_d);
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
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

/* --------------------------------------------------------------- raw */

static int raw_fdatasync(const char *dir, int n, double *p50, double *p99)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/raw.dat", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf(stderr, "storage-bench: %s: %s\n", path, strerror(errno));
        return -1;
    }
    double *lat = calloc((size_t)n, sizeof(double));
    char buf[ENTRY_BYTES];
    memset(buf, 'r', sizeof buf);
    for (int i = 0; i < n; i++) {
        double t0 = now_s();
        if (pwrite(fd, buf, sizeof buf, (off_t)i * ENTRY_BYTES) !=
                (ssize_t)sizeof buf ||
            fdatasync(fd) != 0) {
            fprintf(stderr, "storage-bench: raw write: %s\n", strerror(errno));
            close(fd);
            free(lat);
            return -1;
        }
        lat[i] = now_s() - t0;
    }
    close(fd);
    unlink(path);
    *p50 = pct(lat, (size_t)n, 0.50);
    *p99 = pct(lat, (size_t)n, 0.99);
    free(lat);
    return 0;
}

/* ------------------------------------------------------------- store */

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t done;
    int err;
    double *lat;   /* per batch latency, indexed by completion order */
    double *t_sub; /* submit time by batch number */
};

static void on_done(struct stor_batch *b, int status, void *arg)
{
    struct waiter *w = arg;
    (void)b;
    double t = now_s();
    pthread_mutex_lock(&w->mu);
    if (status && !w->err)
        w->err = status;
    if (w->lat)
        w->lat[w->done] = t - w->t_sub[w->done];
    w->done++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

struct run_result {
    double p50, p99; /* latency, one batch in flight */
    double eps;      /* entries/s, two in flight */
    double raw50;    /* raw write+fdatasync p50 interleaved with it */
    double cpu_us;   /* process CPU (user+sys) per batch, two in flight */
};

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

/* One raw 256-byte append + fdatasync on fd; returns seconds or -1. */
static double raw_once(int fd, off_t *off)
{
    char buf[ENTRY_BYTES];
    memset(buf, 'r', sizeof buf);
    double t0 = now_s();
    if (pwrite(fd, buf, sizeof buf, *off) != (ssize_t)sizeof buf ||
        fdatasync(fd) != 0)
        return -1;
    *off += ENTRY_BYTES;
    return now_s() - t0;
}

static raft_index next_index;
static uint64_t cur_shard = 1;

/* mode: 0 = append + hard state, 1 = the same + apply in one batch,
 * 2 = append + hard state committed first (not timed), then the apply of
 * those entries as a batch of its own (the leader's second commit of a
 * write: no append, no term/vote change, so done without a WAL sync). */
static void fill(struct stor *s, struct stor_batch *b, uint32_t n, int mode,
                 uint8_t *cmds, struct raft_entry *ents)
{
    bool apply = mode != 0;
    stor_batch_reset(b);
    for (uint32_t i = 0; i < n; i++) {
        raft_index idx = next_index + i;
        uint8_t *p = cmds + (size_t)i * (ENTRY_BYTES + 64);
        size_t len = ENTRY_BYTES;
        if (apply) {
            /* A PUT whose encoding is 256 bytes. */
            char key[24];
            static char val[ENTRY_BYTES];
            int kl = snprintf(key, sizeof key, "key%07llu",
                              (unsigned long long)(idx % 1000000));
            struct stor_cmd c = {.op = STOR_CMD_PUT,
                                 .key = key,
                                 .klen = (uint32_t)kl,
                                 .value = val,
                                 .vlen = (uint32_t)(ENTRY_BYTES - 18 - 8 - kl)};
            memset(val, 'v', sizeof val);
            stor_cmd_encode(&c, p, ENTRY_BYTES + 64, &len);
        } else {
            memset(p, (int)(idx & 0xff), ENTRY_BYTES);
        }
        ents[i] = (struct raft_entry){.term = 1,
                                      .index = idx,
                                      .type = RAFT_ENTRY_NORMAL,
                                      .len = (uint32_t)len,
                                      .data = p};
    }
    stor_batch_append(b, cur_shard, ents, n);
    struct raft_hard_state hs = {
        .term = 1, .vote = 1, .commit = next_index + n - 1};
    stor_batch_set_hard_state(b, cur_shard, &hs);
    if (mode == 2) {
        if (stor_batch_commit(s, b) != 0)
            fprintf(stderr, "storage-bench: append: %s\n", stor_errmsg(s));
        stor_batch_reset(b);
    }
    if (apply)
        stor_batch_apply(b, cur_shard, ents, n, NULL);
    next_index += n;
}

/* The latency loop also runs one raw append+fdatasync after each commit
 * (raw_fd), so that both see the same disk conditions on a shared machine. */
static int run_size(struct stor *s, uint32_t n, int batches, int mode,
                    int raw_fd, struct run_result *out)
{
    off_t raw_off = 0;
    double *rawl = calloc((size_t)batches, sizeof(double));
    struct stor_batch *bs[2];
    uint8_t *cmds = malloc((size_t)n * (ENTRY_BYTES + 64));
    struct raft_entry *ents = calloc(n, sizeof(*ents));
    double *lat = calloc((size_t)batches, sizeof(double));
    double *tsub = calloc((size_t)batches, sizeof(double));
    if (!cmds || !ents || !lat || !tsub || stor_batch_new(&bs[0]) ||
        stor_batch_new(&bs[1]))
        return RK_ENOMEM;
    struct waiter w = {.mu = PTHREAD_MUTEX_INITIALIZER,
                       .cv = PTHREAD_COND_INITIALIZER,
                       .lat = lat,
                       .t_sub = tsub};
    /* Latency: one at a time. */
    for (int i = 0; i < batches; i++) {
        fill(s, bs[0], n, mode, cmds, ents);
        tsub[i] = now_s();
        stor_batch_submit(s, bs[0], on_done, &w);
        pthread_mutex_lock(&w.mu);
        while (w.done < (uint64_t)i + 1)
            pthread_cond_wait(&w.cv, &w.mu);
        int e = w.err;
        pthread_mutex_unlock(&w.mu);
        if (e)
            return e;
        rawl[i] = raw_once(raw_fd, &raw_off);
        if (rawl[i] < 0)
            return RK_EIO;
    }
    out->raw50 = pct(rawl, (size_t)batches, 0.50);
    free(rawl);
    if (w.err)
        return w.err;
    out->p50 = pct(lat, (size_t)batches, 0.50);
    out->p99 = pct(lat, (size_t)batches, 0.99);
    out->eps = 0;
    /* Throughput: two in flight, the next gathers while one syncs (not for
     * mode 2, whose appends are committed by the submitting thread). */
    if (mode == 2)
        batches = 0;
    w.done = 0;
    w.lat = NULL;
    out->cpu_us = 0;
    double t0 = now_s(), c0 = cpu_s();
    for (int i = 0; i < batches; i++) {
        pthread_mutex_lock(&w.mu);
        while (i >= 2 && w.done < (uint64_t)i - 1)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        fill(s, bs[i % 2], n, mode, cmds, ents);
        stor_batch_submit(s, bs[i % 2], on_done, &w);
    }
    pthread_mutex_lock(&w.mu);
    while (w.done < (uint64_t)batches)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    double el = now_s() - t0;
    if (batches) {
        out->eps = (double)n * batches / el;
        out->cpu_us = (cpu_s() - c0) * 1e6 / batches;
    }
    stor_batch_free(bs[0]);
    stor_batch_free(bs[1]);
    free(cmds);
    free(ents);
    free(lat);
    free(tsub);
    return w.err;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: storage-bench [--dir DIR] [--quick] [--unsafe-no-sync]\n"
            "  --dir DIR          file system to measure (default $TMPDIR or "
            "/var/tmp)\n"
            "  --quick            fewer iterations\n"
            "  --unsafe-no-sync   store without fsync (upper bound only)\n");
}

int main(int argc, char **argv)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/var/tmp";
    bool quick = false, no_sync = false;
    static const struct option lo[] = {
        {"dir", required_argument, NULL, 'd'},
        {"quick", no_argument, NULL, 'q'},
        {"unsafe-no-sync", no_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "d:quh", lo, NULL)) != -1) {
        switch (c) {
        case 'd':
            base = optarg;
            break;
        case 'q':
            quick = true;
            break;
        case 'u':
            no_sync = true;
            break;
        default:
            usage();
            return c == 'h' ? 0 : 2;
        }
    }
    rk_log_set_level(RK_LOG_WARN);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/storage-bench-XXXXXX", base);
    if (!mkdtemp(dir)) {
        fprintf(stderr, "storage-bench: mkdtemp in %s: %s\n", base,
                strerror(errno));
        return 1;
    }
    int raw_n = quick ? 300 : 2000;
    double raw50, raw99;
    if (raw_fdatasync(dir, raw_n, &raw50, &raw99)) {
        nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
        return 1;
    }
    char sdir[4200];
    snprintf(sdir, sizeof sdir, "%s/store", dir);
    struct stor_opts o = {.path = sdir,
                          .cluster_id = 1,
                          .node_id = 1,
                          .create = true,
                          .unsafe_no_sync = no_sync,
                          .map_size = (size_t)1 << 30};
    char err[RK_ERRMSG_SIZE];
    struct stor *s;
    int rc = stor_open(&o, &s, err);
    if (rc) {
        fprintf(stderr, "storage-bench: %s\n", err);
        return 1;
    }
    struct stor_batch *b;
    struct raft_conf_state conf = {.n_voters = 1, .voters = {1}};
    stor_batch_new(&b);
    stor_batch_create_shard(b, 1, &conf);
    stor_batch_create_shard(b, 2, &conf);
    stor_batch_create_shard(b, 3, &conf);
    stor_batch_commit(s, b);
    stor_batch_free(b);

    printf("storage-bench: dir %s, %d-byte entries, %s\n", base, ENTRY_BYTES,
           no_sync ? "UNSAFE no-sync store"
                   : "full durability (a durable batch: one WAL record "
                     "+ one sync; LMDB checkpoints every second)");
    printf("raw pwrite(%d)+fdatasync x%d:  p50 %.3f ms   p99 %.3f ms\n\n",
           ENTRY_BYTES, raw_n, raw50 * 1e3, raw99 * 1e3);
    char rpath[4200];
    snprintf(rpath, sizeof rpath, "%s/raw-paired.dat", dir);
    int raw_fd = open(rpath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (raw_fd < 0) {
        fprintf(stderr, "storage-bench: %s: %s\n", rpath, strerror(errno));
        return 1;
    }
    printf("%-13s %5s %8s %8s %10s %9s %10s %13s %10s %8s\n", "path",
           "batch", "p50 ms", "p99 ms", "p50/raw50", "raw50 ms", "p50/raw*",
           "entries/s(x2)", "batches/s", "cpu us");
    static const uint32_t sizes[] = {1, 16, 256};
    static const char *const mode_name[] = {"append+hs", "append+apply",
                                            "apply-only"};
    for (int mode = 0; mode <= 2; mode++) {
        /* One shard per mode: 1 the log path, 2 log + state machine, 3 the
         * apply batch alone. */
        cur_shard = (uint64_t)mode + 1;
        next_index = 1;
        for (int i = 0; i < 3; i++) {
            int batches =
                sizes[i] == 256 ? (quick ? 60 : 300) : (quick ? 150 : 800);
            struct run_result r;
            rc = run_size(s, sizes[i], batches, mode, raw_fd, &r);
            if (rc) {
                fprintf(stderr, "storage-bench: %s: %s\n", rk_err_name(rc),
                        stor_errmsg(s));
                stor_close(s);
                nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
                return 1;
            }
            printf("%-13s %5u %8.3f %8.3f %9.2fx %9.3f %9.2fx %13.0f %10.0f "
                   "%8.1f\n",
                   mode_name[mode], sizes[i], r.p50 * 1e3,
                   r.p99 * 1e3, r.p50 / raw50, r.raw50 * 1e3, r.p50 / r.raw50,
                   r.eps, r.eps / sizes[i], r.cpu_us);
        }
    }
    close(raw_fd);
    struct stor_stats st;
    stor_stats(s, &st);
    printf("\nstore: %llu batches (%llu without a WAL sync), %llu WAL "
           "syncs, %llu WAL writes (%s), %llu MiB of WAL records in %llu "
           "MiB of segment space, %llu checkpoints, map %llu MiB (used "
           "%llu MiB)\n",
           (unsigned long long)st.batches,
           (unsigned long long)st.lazy_batches,
           (unsigned long long)st.wal_syncs,
           (unsigned long long)st.wal_writes,
           st.wal_direct ? "O_DIRECT" : "buffered",
           (unsigned long long)(st.wal_bytes >> 20),
           (unsigned long long)(st.wal_file_bytes >> 20),
           (unsigned long long)st.checkpoints,
           (unsigned long long)(st.map_size >> 20),
           (unsigned long long)(st.map_used >> 20));
    printf("raw* = raw append+fdatasync measured interleaved with the commits "
           "of that row\n");
    printf("cpu us = CPU (user+sys) of the process per batch while two are "
           "in flight (the\n      storage thread and the submitter; the "
           "WAL mode is O_DIRECT where the file\n      system has it, "
           "RINGKV_WAL_IO=buffered turns it off)\n");
    printf("note: a durable batch is one WAL record appended to a "
           "preallocated, written-out\n      segment and one fdatasync "
           "(no file-size change: cheaper than the raw append\n      above, "
           "which grows its file); the LMDB B-tree is committed every "
           "second\n      (checkpoint). apply-only batches (no append, no "
           "term/vote change) need no\n      WAL sync. entries/s(x2) is "
           "not measured for apply-only (0).\n");
    printf("targets: 1-entry commit p50 <= 1.5x raw p50; >= 200000 entries/s "
           "with 256-entry batches\n");
    stor_close(s);
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
    return 0;
}
