/* ringkv-lincheck: checks an EDN or JSON-lines history for linearizability. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lincheck.h"
#include "rk_err.h"

#define EXIT_USAGE 3

static void usage(FILE *out)
{
    fputs(
        "usage: ringkv-lincheck [options] FILE.edn|FILE.jsonl\n"
        "  --model M          register | cas-register | multi-register | "
        "mutex\n"
        "                     (default: from the ops: txn -> multi-register,\n"
        "                     acquire/release -> mutex, else cas-register)\n"
        "  --time-limit S     give up after S seconds (verdict unknown)\n"
        "  --memory-limit MB  memo budget per partition (default 1024)\n"
        "  --initial V        initial register value: an integer or nil\n"
        "  --nil-read R       any: a nil read result is unknown (Knossos);\n"
        "                     absent: nil means the key does not exist\n"
        "  --format F         edn | jsonl (default: by extension/content)\n"
        "  --json             print the result as one JSON object\n"
        "EDN histories default to Knossos semantics (initial 0, nil reads\n"
        "match anything); JSON-lines ones to ringkv's (initial nil, nil\n"
        "reads mean absent).\n"
        "exit status: 0 valid, 1 invalid, 2 unknown, 3 usage or parse "
        "error\n",
        out);
}

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int parse_double(const char *s, double *out)
{
    char *end;

    errno = 0;
    *out = strtod(s, &end);
    return (errno != 0 || end == s || *end != '\0' || *out < 0) ? -1 : 0;
}

int main(int argc, char **argv)
{
    enum {
        OPT_MODEL = 256,
        OPT_TIME,
        OPT_MEM,
        OPT_INITIAL,
        OPT_NILREAD,
        OPT_FORMAT,
        OPT_JSON,
    };
    static const struct option longopts[] = {
        {"model", required_argument, NULL, OPT_MODEL},
        {"time-limit", required_argument, NULL, OPT_TIME},
        {"memory-limit", required_argument, NULL, OPT_MEM},
        {"initial", required_argument, NULL, OPT_INITIAL},
        {"nil-read", required_argument, NULL, OPT_NILREAD},
        {"format", required_argument, NULL, OPT_FORMAT},
        {"json", no_argument, NULL, OPT_JSON},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    enum lc_model model = LC_MODEL_AUTO;
    enum lc_format fmt = LC_FORMAT_AUTO;
    double time_limit = 0, mem_mb = 0, t0, t1, t2;
    const char *initial = NULL, *nil_read = NULL, *path;
    bool json = false;
    struct lc_history *h = NULL;
    struct lc_options opt;
    struct lc_result res;
    char err[512] = "";
    int c, rc;

    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case OPT_MODEL:
            if (lc_model_parse(optarg, &model) != 0) {
                fprintf(stderr, "ringkv-lincheck: unknown model '%s'\n",
                        optarg);
                return EXIT_USAGE;
            }
            break;
        case OPT_TIME:
            if (parse_double(optarg, &time_limit) != 0) {
                fprintf(stderr, "ringkv-lincheck: bad --time-limit\n");
                return EXIT_USAGE;
            }
            break;
        case OPT_MEM:
            if (parse_double(optarg, &mem_mb) != 0 || mem_mb > 1e9) {
                fprintf(stderr, "ringkv-lincheck: bad --memory-limit\n");
                return EXIT_USAGE;
            }
            break;
        case OPT_INITIAL:
            initial = optarg;
            break;
        case OPT_NILREAD:
            if (strcmp(optarg, "any") != 0 && strcmp(optarg, "absent") != 0) {
                fprintf(stderr, "ringkv-lincheck: --nil-read any|absent\n");
                return EXIT_USAGE;
            }
            nil_read = optarg;
            break;
        case OPT_FORMAT:
            if (strcmp(optarg, "edn") == 0) {
                fmt = LC_FORMAT_EDN;
            } else if (strcmp(optarg, "jsonl") == 0) {
                fmt = LC_FORMAT_JSONL;
            } else {
                fprintf(stderr, "ringkv-lincheck: --format edn|jsonl\n");
                return EXIT_USAGE;
            }
            break;
        case OPT_JSON:
            json = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc - 1) {
        usage(stderr);
        return EXIT_USAGE;
    }
    path = argv[optind];
    if (fmt == LC_FORMAT_AUTO) {
        /* By extension, else by the first bytes of the file. */
        FILE *f = fopen(path, "rb");
        char head[256];
        size_t got = f != NULL ? fread(head, 1, sizeof(head), f) : 0;
        if (f != NULL)
            fclose(f);
        fmt = lc_format_detect(path, head, got);
    }

    t0 = now_s();
    rc = lc_read_file(path, fmt, &h, err, sizeof(err));
    t1 = now_s();
    if (rc != 0) {
        fprintf(stderr, "ringkv-lincheck: %s (%s)\n", err, rk_err_name(rc));
        return EXIT_USAGE;
    }
    if (fmt == LC_FORMAT_JSONL)
        lc_options_init_ringkv(&opt);
    else
        lc_options_init_knossos(&opt);
    opt.model = model;
    opt.time_limit_s = time_limit;
    opt.memory_limit = (size_t)(mem_mb * 1024 * 1024);
    if (nil_read != NULL)
        opt.nil_read_matches_any = strcmp(nil_read, "any") == 0;
    if (initial != NULL) {
        char *end;
        if (strcmp(initial, "nil") == 0) {
            opt.initial = LC_NIL;
        } else {
            errno = 0;
            long long v = strtoll(initial, &end, 10);
            if (errno != 0 || end == initial || *end != '\0') {
                fprintf(stderr, "ringkv-lincheck: bad --initial\n");
                lc_history_free(h);
                return EXIT_USAGE;
            }
            opt.initial = LC_INT(v);
        }
    }

    rc = lc_check(h, &opt, &res, err, sizeof(err));
    t2 = now_s();
    if (rc != 0) {
        fprintf(stderr, "ringkv-lincheck: %s: %s (%s)\n", path, err,
                rk_err_name(rc));
        lc_history_free(h);
        return EXIT_USAGE;
    }
    if (json) {
        lc_result_print_json(h, &res, stdout);
    } else {
        printf("%s: %zu events\n", path, lc_history_len(h));
        lc_result_print(h, &res, stdout);
        printf("timing: read %.3f ms, check %.3f ms\n", (t1 - t0) * 1e3,
               (t2 - t1) * 1e3);
    }
    rc = res.verdict == LC_VALID     ? 0
         : res.verdict == LC_INVALID ? 1
                                     : 2;
    lc_result_free(&res);
    lc_history_free(h);
    return rc;
}
