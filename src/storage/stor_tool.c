/* ringkv-stor: inspect, check and back up a ringkvd data dir (offline). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rk_log.h"
#include "stor.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: ringkv-stor info DATA_DIR      identity, map, shards\n"
            "       ringkv-stor check DATA_DIR     verify every record\n"
            "       ringkv-stor backup DATA_DIR DEST  compacted copy\n"
            "Opening takes the data dir's lock, so ringkvd must be stopped. "
            "Put a copy back\nonly if the node has not run since it was "
            "taken (see README).\n");
}

static int info(struct stor *s)
{
    uint64_t cid, nid;
    struct stor_stats st;
    stor_identity(s, &cid, &nid);
    stor_stats(s, &st);
    printf("cluster %#llx node %llu format %u\n", (unsigned long long)cid,
           (unsigned long long)nid, STOR_FORMAT_VERSION);
    printf("map %llu MiB, used %llu MiB, page %llu bytes, %u shards\n",
           (unsigned long long)(st.map_size >> 20),
           (unsigned long long)(st.map_used >> 20),
           (unsigned long long)st.page_size, st.n_shards);
    uint32_t n = stor_shard_list(s, NULL, 0);
    uint64_t *ids = calloc(n ? n : 1, sizeof(*ids));
    if (!ids)
        return 1;
    stor_shard_list(s, ids, n);
    printf("%8s %10s %10s %12s %12s %12s %6s %s\n", "shard", "term", "vote",
           "first", "last", "applied", "voters", "snapshot");
    for (uint32_t i = 0; i < n; i++) {
        struct stor_shard_state ss;
        if (stor_shard_load(stor_shard_get(s, ids[i]), &ss) != 0)
            continue;
        printf(
            "%8llu %10llu %10llu %12llu %12llu %12llu %6u %llu\n",
            (unsigned long long)ids[i], (unsigned long long)ss.hs.term,
            (unsigned long long)ss.hs.vote, (unsigned long long)ss.first_index,
            (unsigned long long)ss.last_index, (unsigned long long)ss.applied,
            ss.applied_conf.n_voters, (unsigned long long)ss.snap.index);
    }
    free(ids);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3 || (strcmp(argv[1], "backup") == 0 && argc != 4)) {
        usage(stderr);
        return 2;
    }
    rk_log_set_level(RK_LOG_WARN);
    struct stor_opts o = {.path = argv[2]};
    char err[RK_ERRMSG_SIZE];
    struct stor *s;
    int rc = stor_open(&o, &s, err);
    if (rc) {
        fprintf(stderr, "ringkv-stor: %s (%s)\n", err, rk_err_name(rc));
        return 1;
    }
    int status = 0;
    if (strcmp(argv[1], "info") == 0) {
        status = info(s);
    } else if (strcmp(argv[1], "check") == 0) {
        rc = stor_check(s, err);
        if (rc) {
            fprintf(stderr, "ringkv-stor: check failed: %s\n", err);
            status = 1;
        } else {
            printf("ok\n");
        }
    } else if (strcmp(argv[1], "backup") == 0) {
        rc = stor_backup(s, argv[3]);
        if (rc) {
            fprintf(stderr, "ringkv-stor: backup to %s: %s\n", argv[3],
                    rk_strerror(rc));
            status = 1;
        } else {
            printf("backup written to %s\n", argv[3]);
        }
    } else {
        usage(stderr);
        status = 2;
    }
    stor_close(s);
    return status;
}
