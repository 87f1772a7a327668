/* ringkv-lincheck-gen: writes a generated register history as JSON lines. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lincheck.h"

static int num(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;

    errno = 0;
    *out = strtoull(s, &end, 10);
    return (errno != 0 || end == s || *end != '\0' || *out > max) ? -1 : 0;
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"ops", required_argument, NULL, 'n'},
        {"keys", required_argument, NULL, 'k'},
        {"procs", required_argument, NULL, 'p'},
        {"seed", required_argument, NULL, 's'},
        {"info", required_argument, NULL, 'i'},
        {"corrupt", no_argument, NULL, 'c'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    struct lc_gen_opts o;
    struct lc_history *h = NULL;
    unsigned long long v;
    int c, rc;

    lc_gen_opts_init(&o);
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        if (c == 'c') {
            o.corrupt = true;
            continue;
        }
        if (c == 'i') {
            char *end;
            o.p_info = strtod(optarg, &end);
            if (end == optarg || *end != '\0' || o.p_info < 0 ||
                o.p_info > 0.5) {
                fputs("ringkv-lincheck-gen: --info P with 0 <= P <= 0.5\n",
                      stderr);
                return 3;
            }
            continue;
        }
        if (c == 'h' || c == '?' ||
            num(optarg, c == 's' ? ~0ULL : 10000000ULL, &v) != 0 || v == 0) {
            fputs("usage: ringkv-lincheck-gen [--ops N] [--keys K] "
                  "[--procs P] [--seed S] [--info P] [--corrupt] "
                  "> history.jsonl\n",
                  c == 'h' ? stdout : stderr);
            return c == 'h' ? 0 : 3;
        }
        if (c == 'n')
            o.n_ops = (uint32_t)v;
        else if (c == 'k')
            o.n_keys = (uint32_t)v;
        else if (c == 'p')
            o.n_procs = (uint32_t)v;
        else
            o.seed = v;
    }
    rc = lc_gen_register(&o, &h);
    if (rc != 0) {
        fprintf(stderr, "ringkv-lincheck-gen: generation failed (%d)\n", rc);
        return 3;
    }
    rc = lc_history_write_jsonl(h, stdout);
    lc_history_free(h);
    return rc == 0 ? 0 : 3;
}
