/* raft-sim: runs the deterministic cluster simulator over a range of seeds. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: raft-sim [--seeds N] [--seed-start S] [--nodes K] "
            "[--events E] [--profile mixed|fast|churn] [--regress FILE] "
            "[--stats] [-v]\n"
            "  Runs N seeds (S, S+1, ...) of a K-node cluster, E events each,\n"
            "  checking the Raft safety properties after every event and the\n"
            "  client history for linearizability. SIM_SEED=n replays seed n.\n"
            "  --regress FILE runs the seeds listed in FILE (\"seed nodes "
            "[events]\" per line).\n");
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end != '\0' || s[0] == '-')
        return -1;
    *out = v;
    return 0;
}

struct totals {
    uint64_t seeds, events, violations, lin_unknown;
    /* Coverage (--stats). */
    uint64_t sim_ms, commits, msgs, dropped, crashes, partitions, conf,
        transfers, snapshots, installs, disk_faults;
    uint64_t ops[3][4]; /* [kind][status] */
};

static bool g_stats;

/* Runs one seed; prints a line (and a trace) when it fails. */
static int g_profile = -1; /* --profile; -1: drawn from each seed */

static void run_seed(uint64_t seed, int nodes, uint64_t events, bool verbose,
                     struct totals *t)
{
    struct sim_opts o;
    sim_opts_default(&o, seed, nodes);
    o.profile = g_profile;
    o.max_events = events;
    o.verbose = verbose;
    struct sim s;
    int rc = sim_init(&s, &o);
    if (rc != 0) {
        printf("FAIL seed=%llu nodes=%d event=0 invariant: cannot start the "
               "cluster (%s)\n",
               (unsigned long long)seed, nodes, rk_strerror(rc));
        t->seeds++;
        t->violations++;
        sim_free(&s);
        return;
    }
    sim_run(&s);
    t->seeds++;
    t->events += s.events;
    t->lin_unknown += s.lincheck_unknown;
    t->sim_ms += s.now;
    t->commits += s.n_commits_seen;
    t->msgs += s.n_msgs;
    t->dropped += s.n_dropped;
    t->crashes += s.n_crashes;
    t->partitions += s.n_partitions;
    t->conf += s.n_conf;
    t->transfers += s.n_transfers;
    t->snapshots += s.n_snapshots;
    t->installs += s.n_snap_installs;
    t->disk_faults += s.n_disk_faults;
    for (size_t k = 0; k < s.n_ops; k++)
        t->ops[s.ops[k].kind][s.ops[k].status]++;
    if (s.failed) {
        t->violations++;
        printf("FAIL seed=%llu nodes=%d event=%llu invariant: %s\n",
               (unsigned long long)seed, nodes,
               (unsigned long long)s.fail_event, s.fail_what);
        if (!verbose)
            sim_print_trace(&s, stdout, 16);
        printf("  replay: SIM_SEED=%llu raft-sim --nodes %d --events %llu%s%s "
               "-v\n",
               (unsigned long long)seed, nodes, (unsigned long long)events,
               g_profile >= 0 ? " --profile " : "",
               g_profile == 0   ? "mixed"
               : g_profile == 1 ? "fast"
               : g_profile == 2 ? "churn"
                                : "");
    } else if (verbose) {
        printf("ok seed=%llu nodes=%d events=%llu time=%llums ops=%zu "
               "commits=%llu msgs=%llu dropped=%llu crashes=%llu "
               "partitions=%llu conf=%llu transfers=%llu snapshots=%llu "
               "installs=%llu trace=%016llx\n",
               (unsigned long long)seed, nodes, (unsigned long long)s.events,
               (unsigned long long)s.now, s.n_ops,
               (unsigned long long)s.n_commits_seen,
               (unsigned long long)s.n_msgs, (unsigned long long)s.n_dropped,
               (unsigned long long)s.n_crashes,
               (unsigned long long)s.n_partitions, (unsigned long long)s.n_conf,
               (unsigned long long)s.n_transfers,
               (unsigned long long)s.n_snapshots,
               (unsigned long long)s.n_snap_installs,
               (unsigned long long)s.trace_hash);
    }
    fflush(stdout);
    sim_free(&s);
}

static int run_regress(const char *path, uint64_t events, bool verbose,
                       struct totals *t)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        fprintf(stderr, "raft-sim: cannot open %s: %s\n", path,
                strerror(errno));
        return -1;
    }
    char line[256];
    int lineno = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        char *p = line + strspn(line, " \t");
        if (*p == '#' || *p == '\n' || *p == '\0')
            continue;
        unsigned long long seed, ev = events;
        int nodes;
        int got = sscanf(p, "%llu %d %llu", &seed, &nodes, &ev);
        if (got < 2 || nodes < 1 || nodes > 7) {
            fprintf(stderr,
                    "raft-sim: %s:%d: expected \"seed nodes [events]\"\n", path,
                    lineno);
            fclose(f);
            return -1;
        }
        run_seed(seed, nodes, ev, verbose, t);
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t seeds = 100, start = 1, nodes = 3, events = 5000;
    bool verbose = false;
    const char *regress = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        uint64_t *dst = NULL;
        if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            verbose = true;
            continue;
        } else if (strcmp(a, "--stats") == 0) {
            g_stats = true;
            continue;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--seeds") == 0) {
            dst = &seeds;
        } else if (strcmp(a, "--seed-start") == 0) {
            dst = &start;
        } else if (strcmp(a, "--nodes") == 0) {
            dst = &nodes;
        } else if (strcmp(a, "--events") == 0) {
            dst = &events;
        } else if (strcmp(a, "--profile") == 0 && i + 1 < argc) {
            static const char *const names[] = {"mixed", "fast", "churn"};
            g_profile = -2;
            for (int p = 0; p < 3; p++)
                if (strcmp(argv[i + 1], names[p]) == 0)
                    g_profile = p;
            if (g_profile == -2) {
                fprintf(stderr, "raft-sim: bad --profile '%s'\n", argv[i + 1]);
                return 2;
            }
            i++;
            continue;
        } else if (strcmp(a, "--regress") == 0 && i + 1 < argc) {
            regress = argv[++i];
            continue;
        }
        if (dst == NULL || i + 1 >= argc || parse_u64(argv[i + 1], dst) != 0) {
            fprintf(stderr, "raft-sim: bad argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
        i++;
    }
    if (nodes < 1 || nodes > 7 || events == 0) {
        fprintf(stderr, "raft-sim: --nodes must be 1..7 and --events > 0\n");
        return 2;
    }
    const char *env = getenv("SIM_SEED");
    if (env != NULL && *env != '\0') {
        if (parse_u64(env, &start) != 0) {
            fprintf(stderr, "raft-sim: bad SIM_SEED '%s'\n", env);
            return 2;
        }
        seeds = 1;
        regress = NULL;
    }
    struct totals t = {0};
    if (regress != NULL) {
        if (run_regress(regress, events, verbose, &t) != 0)
            return 2;
    } else {
        for (uint64_t k = 0; k < seeds; k++)
            run_seed(start + k, (int)nodes, events, verbose, &t);
    }
    if (t.lin_unknown)
        printf("note: the linearizability checker gave up on %llu histories\n",
               (unsigned long long)t.lin_unknown);
    if (g_stats) {
        static const char *const kinds[] = {"write", "read", "cas"};
        printf("coverage: sim_time=%llus applied=%llu msgs=%llu dropped=%llu "
               "crashes=%llu partitions=%llu conf_changes=%llu transfers=%llu "
               "snapshots=%llu installs=%llu disk_faults=%llu\n",
               (unsigned long long)(t.sim_ms / 1000),
               (unsigned long long)t.commits, (unsigned long long)t.msgs,
               (unsigned long long)t.dropped, (unsigned long long)t.crashes,
               (unsigned long long)t.partitions, (unsigned long long)t.conf,
               (unsigned long long)t.transfers, (unsigned long long)t.snapshots,
               (unsigned long long)t.installs,
               (unsigned long long)t.disk_faults);
        for (int k = 0; k < 3; k++)
            printf("coverage: %-5s ok=%llu fail=%llu info=%llu pending=%llu\n",
                   kinds[k], (unsigned long long)t.ops[k][SIM_ST_OK],
                   (unsigned long long)t.ops[k][SIM_ST_FAIL],
                   (unsigned long long)t.ops[k][SIM_ST_INFO],
                   (unsigned long long)t.ops[k][SIM_ST_PENDING]);
    }
    printf("seeds=%llu events=%llu violations=%llu\n",
           (unsigned long long)t.seeds, (unsigned long long)t.events,
           (unsigned long long)t.violations);
    return t.violations == 0 ? 0 : 1;
}
