/* ringkvd: one node of a ringkv cluster (flags, start-up, run, exit code). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rk_log.h"
#include "srv.h"
#include "srv_config.h"

int main(int argc, char **argv)
{
    static struct srv_config cfg;
    static struct srv s;
    srv_config_defaults(&cfg);
    if (srv_config_parse_args(&cfg, argc, argv) != 0) {
        fprintf(stderr, "ringkvd: %s\n", cfg.errmsg);
        return 2;
    }
    if (cfg.help) {
        srv_config_usage(stdout);
        return 0;
    }
    if (cfg.version) {
        printf("ringkvd %s\n", RINGKV_VERSION);
        return 0;
    }
    if (srv_config_validate(&cfg) != 0) {
        fprintf(stderr, "ringkvd: %s\n", cfg.errmsg);
        return 2;
    }
    rk_log_set_level((enum rk_log_level)cfg.log_level);
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "node=%" PRIu64, cfg.id);
    rk_log_set_prefix(prefix);
    if (cfg.log_level <= RK_LOG_VERBOSE) {
        fprintf(stderr, "# effective configuration\n");
        srv_config_dump(&cfg, stderr);
    }
    if (cfg.unsafe_no_sync)
        rk_log(RK_LOG_WARN, "--unsafe-no-sync: acknowledged writes may be "
               "lost on power failure");
    if (cfg.unsafe_test_local_reads)
        rk_log(RK_LOG_WARN, "--unsafe-test-local-reads: reads are served "
               "from local state and are NOT linearizable (testing only)");

    int rv = srv_init(&s, &cfg);
    if (rv != 0) {
        rk_log(RK_LOG_ERROR, "cannot start: %s", s.errmsg);
        srv_fini(&s);
        return 1;
    }
    rv = srv_run(&s);
    bool failstop = s.failstop;
    srv_fini(&s);
    rk_log(RK_LOG_INFO, "node %" PRIu64 " stopped%s", cfg.id,
           failstop ? " after a storage failure" : "");
    return rv != 0 || failstop ? 1 : 0;
}
