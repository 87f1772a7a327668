/*
 * hello: the smallest program that embeds libringkv. It writes a key, reads
 * it back, swaps it with compare-and-set and deletes it.
 *
 *   cc hello.c $(pkg-config --cflags --libs ringkv) -o hello
 *   ./hello 127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003
 */
#include <stdio.h>
#include <string.h>

#include <ringkv/ringkv.h>

static int fail(ringkv_t *c, const char *what, ringkv_status st)
{
    fprintf(stderr, "hello: %s: %s (%s)\n", what, ringkv_strerror(st),
            ringkv_last_error(c));
    ringkv_close(c);
    return 1;
}

int main(int argc, char **argv)
{
    ringkv_options o;
    ringkv_options_init(&o);
    if (argc > 1)
        o.endpoints = argv[1];
    o.timeout_ms = 5000;

    ringkv_t *c;
    ringkv_status st = ringkv_open(&o, &c);
    if (st != RINGKV_OK) {
        fprintf(stderr, "hello: open: %s\n", ringkv_strerror(st));
        return 1;
    }

    const char *key = "hello";
    ringkv_write_result wr;
    if ((st = ringkv_put(c, key, strlen(key), "world", 5, &wr)) != RINGKV_OK)
        return fail(c, "put", st);
    printf("put hello=world at revision %llu\n",
           (unsigned long long)wr.revision);

    ringkv_value v;
    if ((st = ringkv_get(c, key, strlen(key), RINGKV_LINEARIZABLE, &v)) !=
        RINGKV_OK)
        return fail(c, "get", st);
    printf("get hello -> %.*s (revision %llu)\n", (int)v.len,
           (const char *)v.data, (unsigned long long)v.revision);

    ringkv_expect e = {.kind = RINGKV_EXPECT_REVISION,
                       .revision = v.revision};
    ringkv_value_free(&v);
    if ((st = ringkv_cas(c, key, strlen(key), &e, "ringkv", 6, false, &wr,
                         NULL)) != RINGKV_OK)
        return fail(c, "cas", st);
    printf("cas hello: world -> ringkv at revision %llu\n",
           (unsigned long long)wr.revision);

    if ((st = ringkv_del(c, key, strlen(key), NULL)) != RINGKV_OK)
        return fail(c, "del", st);
    st = ringkv_get(c, key, strlen(key), RINGKV_LINEARIZABLE, &v);
    printf("get hello after del -> %s\n", ringkv_status_name(st));

    ringkv_stats s;
    ringkv_get_stats(c, &s);
    printf("%llu calls, %llu retries, p99 %llu us\n",
           (unsigned long long)s.calls, (unsigned long long)s.retries,
           (unsigned long long)s.lat_p99_us);
    ringkv_close(c);
    return st == RINGKV_NOT_FOUND ? 0 : 1;
}
