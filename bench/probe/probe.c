/* ringkv-probe: fdatasync latency of a data dir and loopback TCP round trip. */

/*
 * The physical floor a replicated write cannot beat on this machine: one
 * durable append (4 KiB pwrite + fdatasync into a file that is already
 * written out, so only data blocks are flushed, like a log append into
 * preallocated space) and one loopback round trip (64 bytes each way over
 * 127.0.0.1 with TCP_NODELAY, an echo thread on the other end). bench/run
 * compares ringkv's one-client put latency with their sum.
 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rk_hist.h"
#include "rk_time.h"

#define PROBE_BLOCK   4096
#define PROBE_PING    64
#define PROBE_WARMUP  100
#define PROBE_MAX_N   10000000L

struct probe_opts {
    const char *dir;
    long syncs;
    long pings;
    int json;
};

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ringkv-probe [--dir DIR] [--syncs N] [--pings N] [--json]\n"
            "  --dir DIR   where the fdatasync file goes (default .): the data disk\n"
            "  --syncs N   4 KiB appends, each followed by fdatasync (default 2000)\n"
            "  --pings N   64-byte loopback TCP round trips (default 20000)\n"
            "  --json      one JSON object on stdout instead of text\n");
}

static int parse_count(const char *flag, const char *s, long *out)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || errno || *end || v < 1 || v > PROBE_MAX_N) {
        fprintf(stderr, "ringkv-probe: %s needs a count between 1 and %ld, got '%s'\n",
                flag, PROBE_MAX_N, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_args(int argc, char **argv, struct probe_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--dir") && v) {
            o->dir = v;
            i++;
        } else if (!strcmp(a, "--syncs")) {
            if (parse_count(a, v, &o->syncs))
                return -1;
            i++;
        } else if (!strcmp(a, "--pings")) {
            if (parse_count(a, v, &o->pings))
                return -1;
            i++;
        } else if (!strcmp(a, "--json")) {
            o->json = 1;
        } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            exit(0);
        } else {
            fprintf(stderr, "ringkv-probe: unknown or incomplete argument '%s'\n", a);
            usage(stderr);
            return -1;
        }
    }
    return 0;
}

static int write_full(int fd, const void *p, size_t n, off_t off)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = pwrite(fd, c, n, off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -1;
        c += w;
        n -= (size_t)w;
        off += w;
    }
    return 0;
}

/* Fills h with the latency of `count` 4 KiB pwrite+fdatasync appends into a
 * file of `dir` that was written out and synced beforehand. */
static int probe_sync(const char *dir, long count, struct rk_hist *h)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/ringkv-probe.XXXXXX", dir) >= (int)sizeof path) {
        fprintf(stderr, "ringkv-probe: --dir path too long\n");
        return -1;
    }
    int fd = mkstemp(path);
    if (fd < 0) {
        fprintf(stderr, "ringkv-probe: cannot create a file in %s: %s\n", dir, strerror(errno));
        return -1;
    }
    unlink(path); /* gone on every exit path; the open fd keeps it alive */
    char block[PROBE_BLOCK];
    memset(block, 0, sizeof block);
    int rc = 0;
    for (long i = 0; i < count && rc == 0; i++)
        rc = write_full(fd, block, sizeof block, (off_t)i * PROBE_BLOCK);
    if (rc == 0)
        rc = fsync(fd);
    memset(block, 'r', sizeof block);
    for (long i = 0; i < count && rc == 0; i++) {
        uint64_t t0 = rk_time_mono_ns();
        rc = write_full(fd, block, sizeof block, (off_t)i * PROBE_BLOCK);
        if (rc == 0)
            rc = fdatasync(fd);
        rk_hist_record(h, rk_time_since_ns(t0));
    }
    if (rc != 0)
        fprintf(stderr, "ringkv-probe: write/sync in %s failed: %s\n", dir, strerror(errno));
    close(fd);
    return rc;
}

static int io_full(int fd, char *p, size_t n, int is_send)
{
    while (n > 0) {
        ssize_t r = is_send ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Echo thread: returns every 64-byte message until the peer closes. */
static void *echo_main(void *arg)
{
    int lfd = *(int *)arg;
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0)
        return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[PROBE_PING];
    while (io_full(fd, buf, sizeof buf, 0) == 0 && io_full(fd, buf, sizeof buf, 1) == 0) {
    }
    close(fd);
    return NULL;
}

static int probe_tcp(long count, struct rk_hist *h)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) || listen(lfd, 1) ||
        getsockname(lfd, (struct sockaddr *)&sa, &len)) {
        fprintf(stderr, "ringkv-probe: loopback listen failed: %s\n", strerror(errno));
        if (lfd >= 0)
            close(lfd);
        return -1;
    }
    pthread_t th;
    if (pthread_create(&th, NULL, echo_main, &lfd)) {
        fprintf(stderr, "ringkv-probe: cannot start the echo thread\n");
        close(lfd);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    int rc = fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) ? -1 : 0;
    if (rc == 0)
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char buf[PROBE_PING];
    memset(buf, 'p', sizeof buf);
    for (long i = 0; i < count + PROBE_WARMUP && rc == 0; i++) {
        uint64_t t0 = rk_time_mono_ns();
        rc = io_full(fd, buf, sizeof buf, 1) || io_full(fd, buf, sizeof buf, 0) ? -1 : 0;
        if (i >= PROBE_WARMUP)
            rk_hist_record(h, rk_time_since_ns(t0));
    }
    if (rc != 0)
        fprintf(stderr, "ringkv-probe: loopback ping-pong failed: %s\n", strerror(errno));
    if (fd >= 0)
        close(fd); /* the echo thread sees EOF and returns */
    else
        shutdown(lfd, SHUT_RDWR);
    pthread_join(th, NULL);
    close(lfd);
    return rc;
}

static double ms(uint64_t ns)
{
    return (double)ns / 1e6;
}

int main(int argc, char **argv)
{
    struct probe_opts o = {.dir = ".", .syncs = 2000, .pings = 20000};
    if (parse_args(argc, argv, &o))
        return 2;
    static struct rk_hist hs, ht;
    rk_hist_init(&hs);
    rk_hist_init(&ht);
    if (probe_sync(o.dir, o.syncs, &hs) || probe_tcp(o.pings, &ht))
        return 1;
    struct rk_hist_summary s, t;
    rk_hist_summarize(&hs, &s);
    rk_hist_summarize(&ht, &t);
    if (o.json) {
        printf("{\"fdatasync\":{\"count\":%llu,\"p50_ms\":%.4f,\"p99_ms\":%.4f,"
               "\"mean_ms\":%.4f},\"tcp_rtt\":{\"count\":%llu,\"p50_ms\":%.4f,\"p99_ms\":%.4f,"
               "\"mean_ms\":%.4f}}\n",
               (unsigned long long)s.count, ms(s.p50), ms(s.p99), s.mean / 1e6,
               (unsigned long long)t.count, ms(t.p50), ms(t.p99), t.mean / 1e6);
    } else {
        printf("fdatasync (4 KiB append, %s) x%llu:  p50 %.3f ms  p99 %.3f ms\n", o.dir,
               (unsigned long long)s.count, ms(s.p50), ms(s.p99));
        printf("loopback TCP round trip (64 B) x%llu:  p50 %.3f ms  p99 %.3f ms\n",
               (unsigned long long)t.count, ms(t.p50), ms(t.p99));
    }
    return 0;
}
