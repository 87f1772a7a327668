/*
 * client-check: drives libringkv against a real cluster for the end-to-end
 * tests of the client (tests/e2e/test_e2e_client.py).
 *
 *   client-check ENDPOINTS load SECONDS
 *       sync puts and gets in a loop; every 100 ms one line
 *       "t=<ms> ok=<n> err=<n> last=<status> breakers=<id>:<state>,..."
 *       and at the end "done ok=<n> err=<n> maxlat_ms=<n> opened=<n>
 *       closed=<n>". Exit 0 when every call succeeded.
 *   client-check ENDPOINTS once-put KEY VALUE
 *       one put whose first reply is dropped (test-only switch): prints
 *       "put status=<s> revision=<r> duplicate=<0|1> retries=<n>" and then
 *       "get revision=<r> create_revision=<c> value=<v>".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ringkv/ringkv.h"

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static const char *BR[] = {"closed", "open", "half-open"};

static int load(ringkv_t *c, double seconds)
{
    double t0 = now_ms(), next = t0 + 100, maxlat = 0;
    unsigned long ok = 0, err = 0, i = 0;
    ringkv_status last = RINGKV_OK;
    while (now_ms() - t0 < seconds * 1000) {
        char key[32], val[32];
        snprintf(key, sizeof(key), "load-%lu", (i / 2) % 200);
        snprintf(val, sizeof(val), "v%lu", i);
        double s = now_ms();
        ringkv_status st = (i % 2 == 0)
                               ? ringkv_put(c, key, strlen(key), val,
                                            strlen(val), NULL)
                               : ringkv_get(c, key, strlen(key),
                                            RINGKV_LINEARIZABLE, NULL);
        double lat = now_ms() - s;
        maxlat = lat > maxlat ? lat : maxlat;
        if (st == RINGKV_OK || st == RINGKV_NOT_FOUND) {
            ok++;
        } else {
            err++;
            fprintf(stderr, "call failed: %s: %s\n", ringkv_status_name(st),
                    ringkv_last_error(c));
        }
        last = st;
        i++;
        if (now_ms() >= next) {
            printf("t=%.0f ok=%lu err=%lu last=%s breakers=", now_ms() - t0,
                   ok, err, ringkv_status_name(last));
            for (uint64_t id = 1; id <= 9; id++)
                printf("%s%llu:%s", id > 1 ? "," : "",
                       (unsigned long long)id, BR[ringkv_breaker(c, id)]);
            printf("\n");
            fflush(stdout);
            next += 100;
        }
    }
    ringkv_stats s;
    ringkv_get_stats(c, &s);
    printf("done ok=%lu err=%lu maxlat_ms=%.0f opened=%llu closed=%llu "
           "retries=%llu\n",
           ok, err, maxlat, (unsigned long long)s.breaker_opened,
           (unsigned long long)s.breaker_closed,
           (unsigned long long)s.retries);
    return err == 0 ? 0 : 1;
}

static int once_put(ringkv_t *c, const char *key, const char *val)
{
    ringkv_stats before, after;
    ringkv_get_stats(c, &before);
    ringkv_test_drop_replies(c, 1);
    ringkv_write_result wr = {0};
    ringkv_status st = ringkv_put(c, key, strlen(key), val, strlen(val), &wr);
    ringkv_get_stats(c, &after);
    printf("put status=%s revision=%llu duplicate=%d retries=%llu\n",
           ringkv_status_name(st), (unsigned long long)wr.revision,
           wr.duplicate ? 1 : 0,
           (unsigned long long)(after.retries - before.retries));
    ringkv_value v;
    st = ringkv_get(c, key, strlen(key), RINGKV_LINEARIZABLE, &v);
    if (st != RINGKV_OK) {
        printf("get status=%s\n", ringkv_status_name(st));
        return 1;
    }
    printf("get revision=%llu create_revision=%llu value=%.*s\n",
           (unsigned long long)v.revision,
           (unsigned long long)v.create_revision, (int)v.len,
           (const char *)v.data);
    ringkv_value_free(&v);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: client-check ENDPOINTS load SECONDS | "
                        "once-put KEY VALUE\n");
        return 2;
    }
    ringkv_options o;
    ringkv_options_init(&o);
    o.endpoints = argv[1];
    o.timeout_ms = 5000;
    o.attempt_timeout_ms = 300;
    o.breaker_failures = 3;
    o.breaker_cooldown_ms = 500;
    ringkv_t *c;
    ringkv_status st = ringkv_open(&o, &c);
    if (st != RINGKV_OK) {
        fprintf(stderr, "open: %s\n", ringkv_strerror(st));
        return 2;
    }
    int rc = 2;
    if (strcmp(argv[2], "load") == 0 && argc == 4)
        rc = load(c, atof(argv[3]));
    else if (strcmp(argv[2], "once-put") == 0 && argc == 5)
        rc = once_put(c, argv[3], argv[4]);
    else
        fprintf(stderr, "client-check: bad arguments\n");
    ringkv_close(c);
    return rc;
}
