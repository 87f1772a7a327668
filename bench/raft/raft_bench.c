/* raft-bench: entries committed per second through an in-process Raft group. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "raft.h"
#include "raft_memlog.h"

#define MAXN 7

struct bench {
    uint32_t n;
    struct raft_node *nodes[MAXN + 1];
    struct raft_memlog *logs[MAXN + 1];
    uint64_t applied[MAXN + 1];
    uint64_t since_compact[MAXN + 1];
    uint64_t msgs;
};

static double now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "raft-bench: %s: %s\n", what, rk_strerror(rc));
    exit(1);
}

/* Delivers one message in-process (the receiver copies what it keeps). */
static void deliver(struct bench *b, const struct raft_msg *m)
{
    if (m->to >= 1 && m->to <= b->n) {
        raft_step(b->nodes[m->to], m);
        b->msgs++;
    }
}

/* One driver round for node i: persist, send, apply, advance. */
static int drive(struct bench *b, uint32_t i, uint64_t compact_every)
{
    struct raft_node *n = b->nodes[i];
    if (!raft_has_ready(n))
        return 0;
    struct raft_ready rd;
    raft_ready(n, &rd);
    for (uint32_t k = 0; k < rd.n_msgs; k++)
        deliver(b, &rd.msgs[k]);
    int rc = raft_memlog_persist_ready(b->logs[i], &rd);
    if (rc)
        die("persist", rc);
    for (uint32_t k = 0; k < rd.n_msgs_after_sync; k++)
        deliver(b, &rd.msgs_after_sync[k]);
    b->applied[i] += rd.n_committed;
    b->since_compact[i] += rd.n_committed;
    raft_advance(n, &rd);
    if (b->since_compact[i] >= compact_every) {
        /* Keep memory bounded: snapshot (empty state) at the applied index
         * once every follower has the entries. */
        struct raft_status st;
        raft_status(n, &st);
        raft_index upto = st.applied;
        if (st.role == RAFT_LEADER)
            for (uint32_t k = 0; k < st.n_match; k++)
                if (st.match[k] < upto)
                    upto = st.match[k];
        struct raft_conf_state conf;
        if (upto > raft_memlog_first_index(b->logs[i]) &&
            raft_conf_at(n, upto, &conf) == 0 &&
            raft_memlog_snapshot_create(b->logs[i], upto, &conf, NULL, 0) ==
                0) {
            raft_snapshot_taken(n, upto);
            b->since_compact[i] = 0;
        }
    }
    return 1;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: raft-bench [-n entries] [-b batch] [-s size] [-w window]\n"
            "  -n  entries to commit (default 2000000)\n"
            "  -b  proposals per driver round (default 512)\n"
            "  -s  entry payload bytes (default 64)\n"
            "  -w  max proposals in flight (default 16384)\n"
            "  -N  nodes (default 3)\n");
}

int main(int argc, char **argv)
{
    uint64_t total = 2000000, batch = 512, window = 16384;
    size_t size = 64;
    uint32_t nodes = 3;
    int opt;
    while ((opt = getopt(argc, argv, "n:b:s:w:N:h")) != -1) {
        switch (opt) {
        case 'n':
            total = strtoull(optarg, NULL, 10);
            break;
        case 'b':
            batch = strtoull(optarg, NULL, 10);
            break;
        case 's':
            size = strtoull(optarg, NULL, 10);
            break;
        case 'w':
            window = strtoull(optarg, NULL, 10);
            break;
        case 'N':
            nodes = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        default:
            usage();
            return opt == 'h' ? 0 : 2;
        }
    }
    if (nodes < 1 || nodes > MAXN || batch == 0 || window == 0 || total == 0) {
        usage();
        return 2;
    }
    struct bench b;
    memset(&b, 0, sizeof(b));
    b.n = nodes;
    struct raft_conf_state conf;
    memset(&conf, 0, sizeof(conf));
    for (uint32_t i = 1; i <= nodes; i++)
        conf.voters[conf.n_voters++] = i;
    for (uint32_t i = 1; i <= nodes; i++) {
        b.logs[i] = raft_memlog_new();
        if (!b.logs[i])
            die("memlog", RK_ENOMEM);
        struct raft_config cfg = {
            .id = i,
            .election_ticks = 10,
            .heartbeat_ticks = 1,
            .pre_vote = true,
            .check_quorum = true,
            .max_inflight_msgs = 256,
            .max_msg_bytes = 1 << 20,
            .seed = i,
            .log = &raft_memlog_ops,
            .log_ctx = b.logs[i],
            .conf = conf,
        };
        int rc = raft_node_new(&cfg, &b.nodes[i]);
        if (rc)
            die("raft_node_new", rc);
    }
    if (raft_campaign(b.nodes[1]) != 0)
        die("campaign", RK_EINVAL);
    for (int round = 0; round < 100; round++)
        for (uint32_t i = 1; i <= nodes; i++)
            drive(&b, i, UINT64_MAX);
    struct raft_status st;
    raft_status(b.nodes[1], &st);
    if (st.role != RAFT_LEADER) {
        fprintf(stderr, "raft-bench: node 1 did not become leader\n");
        return 1;
    }
    uint64_t base = b.applied[1];
    char *payload = malloc(size ? size : 1);
    memset(payload, 'x', size);
    uint64_t proposed = 0, rounds = 0;
    double t0 = now_sec();
    while (b.applied[1] - base < total) {
        uint64_t inflight = proposed - (b.applied[1] - base);
        for (uint64_t k = 0; k < batch && proposed < total &&
                             inflight < window;
             k++, inflight++) {
            int rc = raft_propose(b.nodes[1], payload, size, NULL);
            if (rc)
                die("propose", rc);
            proposed++;
        }
        int busy = 0;
        for (uint32_t i = 1; i <= nodes; i++)
            busy += drive(&b, i, 1 << 16);
        rounds++;
        if (!busy && proposed >= total && b.applied[1] - base < total) {
            /* Nothing moves: tick to recover (should not happen). */
            for (uint32_t i = 1; i <= nodes; i++)
                raft_tick(b.nodes[i]);
        }
    }
    double dt = now_sec() - t0;
    uint64_t done = b.applied[1] - base;
    printf("raft-bench: %u nodes, %zu-byte entries, batch %llu, window %llu\n",
           nodes, size, (unsigned long long)batch,
           (unsigned long long)window);
    printf("committed %llu entries in %.3f s: %.0f entries/s "
           "(%.1f MB/s payload, %llu messages, %llu driver rounds)\n",
           (unsigned long long)done, dt, (double)done / dt,
           (double)done * (double)size / dt / 1e6,
           (unsigned long long)b.msgs, (unsigned long long)rounds);
    /* Let the followers learn the last commit, then show what each applied. */
    for (int round = 0; round < 10; round++) {
        for (uint32_t i = 1; i <= nodes; i++)
            raft_tick(b.nodes[i]);
        for (uint32_t i = 1; i <= nodes; i++)
            drive(&b, i, UINT64_MAX);
    }
    for (uint32_t i = 1; i <= nodes; i++) {
        raft_status(b.nodes[i], &st);
        printf("node %u: %s term %llu commit %llu applied %llu\n", i,
               raft_role_name(st.role), (unsigned long long)st.term,
               (unsigned long long)st.commit, (unsigned long long)st.applied);
    }
    free(payload);
    for (uint32_t i = 1; i <= nodes; i++) {
        raft_node_free(b.nodes[i]);
        raft_memlog_free(b.logs[i]);
    }
    return 0;
}
