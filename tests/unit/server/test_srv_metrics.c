/* Unit tests of ringkvd's metrics: histogram buckets, text format, HTTP. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "rk_assert.h"
#include "srv_metrics.h"

static void test_hist_buckets(void **state)
{
    struct srv_hist h;
    memset(&h, 0, sizeof(h));
    srv_hist_observe(&h, 0);
    srv_hist_observe(&h, 100);        /* le 100us */
    srv_hist_observe(&h, 101);        /* le 250us */
    srv_hist_observe(&h, 20000000);   /* +Inf */
    assert_int_equal(h.counts[0], 2);
    assert_int_equal(h.counts[1], 1);
    assert_int_equal(h.counts[SRV_HIST_BUCKETS], 1);
    assert_int_equal(h.count, 4);
    assert_int_equal(h.sum_us, 20000201);
    for (unsigned i = 1; i < SRV_HIST_BUCKETS; i++)
        assert_true(srv_hist_bound_us(i) > srv_hist_bound_us(i - 1));
}

/* Every non-comment line is `name{labels} value` or `name value` with a
 * numeric value, and every family has HELP and TYPE before its samples. */
static void check_prometheus(const char *text)
{
    char *copy = strdup(text);
    char *save = NULL;
    int samples = 0;
    char family[128] = "";
    for (char *line = strtok_r(copy, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        if (strncmp(line, "# HELP ", 7) == 0) {
            sscanf(line + 7, "%127s", family);
            continue;
        }
        if (strncmp(line, "# TYPE ", 7) == 0) {
            char name[128], type[32];
            assert_int_equal(sscanf(line + 7, "%127s %31s", name, type), 2);
            assert_string_equal(name, family);
            assert_true(strcmp(type, "counter") == 0 ||
                        strcmp(type, "gauge") == 0 ||
                        strcmp(type, "histogram") == 0);
            continue;
        }
        assert_true(line[0] != '#');
        assert_true(strncmp(line, family, strlen(family)) == 0);
        char *sp = strrchr(line, ' ');
        assert_non_null(sp);
        char *end;
        strtod(sp + 1, &end);
        assert_true(*end == '\0' && end != sp + 1);
        samples++;
    }
    assert_true(samples > 10);
    free(copy);
}

static void test_text_format(void **state)
{
    struct srv_metrics m;
    srv_metrics_init(&m);
    srv_metrics_request(&m, SRV_OP_PUT, 0, 1500);
    srv_metrics_request(&m, SRV_OP_GET, 2, 90);
    srv_metrics_request(&m, SRV_OP_GET, 999, 90);
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    srv_metrics_write(&m, f);
    fclose(f);
    check_prometheus(buf);
    assert_non_null(
        strstr(buf, "ringkv_requests_total{op=\"put\",status=\"OK\"} 1\n"));
    assert_non_null(strstr(
        buf, "ringkv_requests_total{op=\"get\",status=\"NOT_LEADER\"} 1\n"));
    assert_non_null(strstr(
        buf, "ringkv_requests_total{op=\"get\",status=\"OTHER\"} 1\n"));
    assert_non_null(strstr(buf, "ringkv_request_duration_seconds_bucket{op="
                                "\"put\",le=\"0.0025\"} 1\n"));
    assert_non_null(
        strstr(buf, "ringkv_request_duration_seconds_count{op=\"put\"} 1\n"));
    free(buf);
}

/* ------------------------------------------------------------ HTTP test */

struct fixture {
    uv_loop_t loop;
    struct srv_http http;
    struct srv_metrics m;
    uv_async_t done;
    int port;
    bool healthy;
    bool closed;
    char replies[6][8192];
};

static void render(void *data, FILE *out)
{
    struct fixture *fx = data;
    srv_metrics_write(&fx->m, out);
    srv_metrics_family(out, "ringkv_shard_term", "gauge", "Term.");
    fprintf(out, "ringkv_shard_term{shard=\"1\"} 7\n");
}

static bool health(void *data, FILE *out)
{
    struct fixture *fx = data;
    /* Healthy on the first call only (both run on the loop thread). */
    bool ok = fx->healthy;
    fx->healthy = false;
    fprintf(out, ok ? "ok\n" : "no leader\n");
    return ok;
}

/* Sends req (or nothing when NULL), returns what the server answered. */
static void exchange(int port, const char *req, size_t len, char *out,
                     size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    struct timeval tv = {.tv_sec = 10};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    out[0] = '\0';
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        close(fd);
        return;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, req + off, len - off);
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    size_t got = 0;
    for (int i = 0; i < 1000 && got + 1 < cap; i++) {
        ssize_t n = read(fd, out + got, cap - 1 - got);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    out[got] = '\0';
    close(fd);
}

static void *client_thread(void *arg)
{
    struct fixture *fx = arg;
    const char *get_metrics = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    const char *get_health = "GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    const char *get_nope = "GET /nope?x=1 HTTP/1.0\r\n\r\n";
    const char *garbage = "\x01\x02garbage\r\n\r\n";
    const char *post = "POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
    exchange(fx->port, get_metrics, strlen(get_metrics), fx->replies[0],
             sizeof(fx->replies[0]));
    exchange(fx->port, get_health, strlen(get_health), fx->replies[1],
             sizeof(fx->replies[1]));
    exchange(fx->port, get_health, strlen(get_health), fx->replies[2],
             sizeof(fx->replies[2]));
    exchange(fx->port, get_nope, strlen(get_nope), fx->replies[3],
             sizeof(fx->replies[3]));
    exchange(fx->port, garbage, strlen(garbage), fx->replies[4],
             sizeof(fx->replies[4]));
    exchange(fx->port, post, strlen(post), fx->replies[5],
             sizeof(fx->replies[5]));
    uv_async_send(&fx->done);
    return NULL;
}

static void on_http_closed(struct srv_http *h)
{
    struct fixture *fx = container_of(h, struct fixture, http);
    fx->closed = true;
}

static void on_done(uv_async_t *a)
{
    struct fixture *fx = a->data;
    srv_http_close(&fx->http, on_http_closed);
    uv_close((uv_handle_t *)a, NULL);
}

static void test_http(void **state)
{
    static struct fixture fx;
    memset(&fx, 0, sizeof(fx));
    fx.healthy = true;
    srv_metrics_init(&fx.m);
    assert_int_equal(uv_loop_init(&fx.loop), 0);
    struct srv_addr a = {.host = "127.0.0.1", .port = 0};
    assert_int_equal(
        srv_http_start(&fx.http, &fx.loop, &a, render, health, &fx), 0);
    fx.port = srv_http_port(&fx.http);
    assert_true(fx.port > 0);
    uv_async_init(&fx.loop, &fx.done, on_done);
    fx.done.data = &fx;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, client_thread, &fx), 0);
    uv_run(&fx.loop, UV_RUN_DEFAULT);
    pthread_join(t, NULL);
    assert_true(fx.closed);
    assert_int_equal(uv_loop_close(&fx.loop), 0);

    assert_non_null(strstr(fx.replies[0], "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(fx.replies[0], "version=0.0.4"));
    char *body = strstr(fx.replies[0], "\r\n\r\n");
    assert_non_null(body);
    check_prometheus(body + 4);
    assert_non_null(strstr(body, "ringkv_shard_term{shard=\"1\"} 7\n"));
    assert_non_null(strstr(fx.replies[1], "200 OK"));
    assert_non_null(strstr(fx.replies[1], "\r\n\r\nok\n"));
    assert_non_null(strstr(fx.replies[2], "503 Service Unavailable"));
    assert_non_null(strstr(fx.replies[3], "404 Not Found"));
    assert_non_null(strstr(fx.replies[4], "400 Bad Request"));
    assert_non_null(strstr(fx.replies[5], "405"));
    assert_int_equal(fx.http.requests, 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hist_buckets),
        cmocka_unit_test(test_text_format),
        cmocka_unit_test(test_http),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
