/* ringkvd metrics: Prometheus text rendering and the /metrics HTTP server. */
#include "srv_metrics.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <http_parser.h>

#include "rk_assert.h"
#include "rk_log.h"

/* ------------------------------------------------------------ registry */

static const char *const op_names[SRV_OP__COUNT] = {
    "get", "put", "delete", "cas", "scan", "status", "shard_map", "other",
};

/* Names of proto/ringkv.proto's Status values, in enum order. */
static const char *const status_names[SRV_STATUS_SLOTS] = {
    "OK",          "NOT_FOUND",        "NOT_LEADER", "WRONG_SHARD",
    "CAS_MISMATCH", "TIMEOUT",         "UNAVAILABLE", "INVALID_ARGUMENT",
    "TOO_LARGE",   "INTERNAL",         "S10",        "S11",
    "S12",         "S13",              "S14",        "OTHER",
};

const char *srv_op_name(enum srv_op op)
{
    return (unsigned)op < SRV_OP__COUNT ? op_names[op] : "other";
}

/* Bucket bounds: 100us, 250us, 500us, 1ms ... 10s. */
static const uint64_t bounds_us[SRV_HIST_BUCKETS] = {
    100,     250,     500,     1000,    2500,     5000,    10000,  25000,
    50000,   100000,  250000,  500000,  1000000,  2500000, 5000000, 10000000,
};

uint64_t srv_hist_bound_us(unsigned i)
{
    RK_ASSERT(i < SRV_HIST_BUCKETS);
    return bounds_us[i];
}

void srv_hist_observe(struct srv_hist *h, uint64_t us)
{
    unsigned i = 0;
    while (i < SRV_HIST_BUCKETS && us > bounds_us[i])
        i++;
    h->counts[i]++;
    h->count++;
    h->sum_us += us;
}

void srv_metrics_init(struct srv_metrics *m)
{
    memset(m, 0, sizeof(*m));
    m->start_time_s = (uint64_t)time(NULL);
}

void srv_metrics_request(struct srv_metrics *m, enum srv_op op,
                         unsigned status, uint64_t latency_us)
{
    if ((unsigned)op >= SRV_OP__COUNT)
        op = SRV_OP_OTHER;
    if (status >= SRV_STATUS_SLOTS)
        status = SRV_STATUS_SLOTS - 1;
    m->requests[op][status]++;
    srv_hist_observe(&m->latency[op], latency_us);
}

void srv_metrics_family(FILE *out, const char *name, const char *type,
                        const char *help)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void write_hist(FILE *out, const char *name, const char *labels,
                       const struct srv_hist *h)
{
    uint64_t cum = 0;
    const char *sep = labels[0] != '\0' ? "," : "";
    for (unsigned i = 0; i < SRV_HIST_BUCKETS; i++) {
        cum += h->counts[i];
        fprintf(out, "%s_bucket{%s%sle=\"%g\"} %" PRIu64 "\n", name, labels,
                sep, (double)bounds_us[i] / 1e6, cum);
    }
    cum += h->counts[SRV_HIST_BUCKETS];
    fprintf(out, "%s_bucket{%s%sle=\"+Inf\"} %" PRIu64 "\n", name, labels, sep,
            cum);
    if (labels[0] != '\0') {
        fprintf(out, "%s_sum{%s} %.6f\n", name, labels,
                (double)h->sum_us / 1e6);
        fprintf(out, "%s_count{%s} %" PRIu64 "\n", name, labels, h->count);
    } else {
        fprintf(out, "%s_sum %.6f\n", name, (double)h->sum_us / 1e6);
        fprintf(out, "%s_count %" PRIu64 "\n", name, h->count);
    }
}

static void sample(FILE *out, const char *name, const char *type,
                   const char *help, uint64_t v)
{
    srv_metrics_family(out, name, type, help);
    fprintf(out, "%s %" PRIu64 "\n", name, v);
}

void srv_metrics_counter(FILE *out, const char *name, const char *help,
                         uint64_t v)
{
    sample(out, name, "counter", help, v);
}

void srv_metrics_gauge(FILE *out, const char *name, const char *help,
                       uint64_t v)
{
    sample(out, name, "gauge", help, v);
}

void srv_metrics_write(const struct srv_metrics *m, FILE *out)
{
    srv_metrics_family(out, "ringkv_requests_total", "counter",
                       "Client requests answered, by operation and status.");
    for (unsigned op = 0; op < SRV_OP__COUNT; op++) {
        for (unsigned s = 0; s < SRV_STATUS_SLOTS; s++) {
            if (m->requests[op][s] == 0)
                continue;
            fprintf(out,
                    "ringkv_requests_total{op=\"%s\",status=\"%s\"} %" PRIu64
                    "\n",
                    op_names[op], status_names[s], m->requests[op][s]);
        }
    }
    srv_metrics_family(out, "ringkv_request_duration_seconds", "histogram",
                       "Time from receiving a request to sending its "
                       "response, by operation.");
    for (unsigned op = 0; op < SRV_OP__COUNT; op++) {
        if (m->latency[op].count == 0)
            continue;
        char labels[48];
        snprintf(labels, sizeof(labels), "op=\"%s\"", op_names[op]);
        write_hist(out, "ringkv_request_duration_seconds", labels,
                   &m->latency[op]);
    }
    srv_metrics_family(out, "ringkv_storage_sync_duration_seconds",
                       "histogram",
                       "Duration of one group-commit batch (write "
                       "transaction and sync).");
    write_hist(out, "ringkv_storage_sync_duration_seconds", "",
               &m->sync_latency);
    srv_metrics_counter(
        out, "ringkv_read_index_rounds_total",
        "ReadIndex rounds (each serves every read queued on a shard).",
        m->read_rounds_index);
    srv_metrics_counter(out, "ringkv_lease_read_rounds_total",
                        "Lease read rounds answered from the leader's lease.",
                        m->read_rounds_lease);
    srv_metrics_counter(out, "ringkv_storage_batches_total",
                        "Group-commit batches written.", m->storage_batches);
    srv_metrics_counter(out, "ringkv_storage_batch_entries_total",
                        "Raft entries written by group-commit batches.",
                        m->storage_batch_entries);
    srv_metrics_counter(out, "ringkv_peer_bytes_received_total",
                        "Bytes received from peer nodes.", m->peer_bytes_in);
    srv_metrics_counter(out, "ringkv_peer_bytes_sent_total",
                        "Bytes sent to peer nodes.", m->peer_bytes_out);
    srv_metrics_counter(out, "ringkv_peer_messages_received_total",
                        "Raft messages received from peer nodes.",
                        m->peer_msgs_in);
    srv_metrics_counter(out, "ringkv_peer_messages_sent_total",
                        "Raft messages sent to peer nodes.", m->peer_msgs_out);
    static const char *const kinds[SRV_PEER_KINDS] = {
        "append", "append_empty", "append_resp", "heartbeat",
        "heartbeat_resp", "other"};
    srv_metrics_family(out, "ringkv_peer_messages_received_by_kind_total",
                       "counter",
                       "Raft messages received from peer nodes, by kind "
                       "(append_empty: an APPEND without entries).");
    for (unsigned i = 0; i < SRV_PEER_KINDS; i++)
        fprintf(out,
                "ringkv_peer_messages_received_by_kind_total{kind=\"%s\"} "
                "%" PRIu64 "\n",
                kinds[i], m->peer_msgs_in_kind[i]);
    srv_metrics_counter(out, "ringkv_peer_frames_received_total",
                        "Peer batches (frames) received.", m->peer_frames_in);
    srv_metrics_counter(out, "ringkv_peer_frames_sent_total",
                        "Peer batches (frames) sent.", m->peer_frames_out);
    srv_metrics_counter(out, "ringkv_client_bytes_received_total",
                        "Bytes received from clients.", m->client_bytes_in);
    srv_metrics_counter(out, "ringkv_client_bytes_sent_total",
                        "Bytes sent to clients.", m->client_bytes_out);
    srv_metrics_counter(out, "ringkv_client_connections_total",
                        "Client connections accepted.",
                        m->client_conns_accepted);
    srv_metrics_counter(out, "ringkv_client_connections_rejected_total",
                        "Client connections closed for bad input.",
                        m->client_conns_closed_bad);
    srv_metrics_gauge(out, "ringkv_client_connections",
                      "Open client connections.", m->client_conns_open);
    srv_metrics_gauge(out, "ringkv_peer_connections", "Open peer connections.",
                      m->peer_conns_open);
    srv_metrics_gauge(out, "ringkv_start_time_seconds",
                      "Unix time at which the node started.", m->start_time_s);
}

/* ---------------------------------------------------------------- HTTP */

struct http_conn {
    uv_tcp_t tcp;
    struct srv_http *srv;
    struct http_conn *prev, *next; /* h->conns */
    http_parser parser;
    char url[256];
    size_t url_len;
    bool url_too_long;
    bool done;     /* a complete request was parsed */
    bool closing;
    size_t received;
    char buf[4096];
    uv_write_t wreq;
    char *resp;
    size_t resp_len;
};

static void maybe_closed(struct srv_http *h)
{
    if (h->closing && h->n_conns == 0 && !h->listening && h->closed_cb)
        h->closed_cb(h);
}

static void on_conn_close(uv_handle_t *handle)
{
    struct http_conn *c = container_of(handle, struct http_conn, tcp);
    struct srv_http *h = c->srv;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        h->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    free(c->resp);
    free(c);
    RK_ASSERT(h->n_conns > 0);
    h->n_conns--;
    maybe_closed(h);
}

static void conn_close(struct http_conn *c)
{
    if (c->closing)
        return;
    c->closing = true;
    uv_close((uv_handle_t *)&c->tcp, on_conn_close);
}

static void on_written(uv_write_t *req, int status)
{
    struct http_conn *c = req->data;
    (void)status;
    conn_close(c);
}

static void respond(struct http_conn *c, int code, const char *reason,
                    const char *ctype, const char *body, size_t body_len)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL) {
        conn_close(c);
        return;
    }
    fprintf(f,
            "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
            "Connection: close\r\n\r\n",
            code, reason, ctype, body_len);
    fwrite(body, 1, body_len, f);
    if (fclose(f) != 0) {
        free(buf);
        conn_close(c);
        return;
    }
    c->resp = buf;
    c->resp_len = len;
    uv_buf_t b = uv_buf_init(buf, (unsigned)len);
    c->wreq.data = c;
    uv_read_stop((uv_stream_t *)&c->tcp);
    if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, on_written) != 0)
        conn_close(c);
}

static void serve(struct http_conn *c)
{
    struct srv_http *h = c->srv;
    h->requests++;
    char *body = NULL;
    size_t len = 0;
    if (c->parser.method != HTTP_GET && c->parser.method != HTTP_HEAD) {
        respond(c, 405, "Method Not Allowed", "text/plain",
                "only GET is supported\n", 22);
        return;
    }
    /* Ignore a query string. */
    char *q = strchr(c->url, '?');
    if (q != NULL)
        *q = '\0';
    FILE *f = open_memstream(&body, &len);
    if (f == NULL) {
        respond(c, 500, "Internal Server Error", "text/plain", "", 0);
        return;
    }
    int code = 200;
    const char *reason = "OK";
    const char *ctype = "text/plain; charset=utf-8";
    if (strcmp(c->url, "/metrics") == 0) {
        ctype = "text/plain; version=0.0.4; charset=utf-8";
        if (h->render != NULL)
            h->render(h->data, f);
    } else if (strcmp(c->url, "/health") == 0) {
        bool ok = h->health == NULL || h->health(h->data, f);
        if (!ok) {
            code = 503;
            reason = "Service Unavailable";
        }
    } else {
        code = 404;
        reason = "Not Found";
        fprintf(f, "not found; try /metrics or /health\n");
    }
    if (fclose(f) != 0) {
        free(body);
        respond(c, 500, "Internal Server Error", "text/plain", "", 0);
        return;
    }
    if (c->parser.method == HTTP_HEAD)
        len = 0;
    respond(c, code, reason, ctype, body, len);
    free(body);
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    struct http_conn *c = p->data;
    if (c->url_len + len >= sizeof(c->url)) {
        c->url_too_long = true;
        return 0;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->url[c->url_len] = '\0';
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct http_conn *c = p->data;
    c->done = true;
    /* Stop parsing: one request per connection. */
    return 1;
}

static const http_parser_settings parser_settings = {
    .on_url = on_url,
    .on_message_complete = on_message_complete,
};

static void on_alloc(uv_handle_t *handle, size_t suggested, uv_buf_t *buf)
{
    struct http_conn *c = container_of(handle, struct http_conn, tcp);
    (void)suggested;
    *buf = uv_buf_init(c->buf, sizeof(c->buf));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct http_conn *c = container_of(s, struct http_conn, tcp);
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0 || c->done)
        return;
    c->received += (size_t)nread;
    http_parser_execute(&c->parser, &parser_settings, buf->base,
                        (size_t)nread);
    if (c->done) {
        if (c->url_too_long)
            respond(c, 414, "URI Too Long", "text/plain", "", 0);
        else
            serve(c);
        return;
    }
    if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK) {
        respond(c, 400, "Bad Request", "text/plain", "bad request\n", 12);
        return;
    }
    if (c->received > SRV_HTTP_MAX_REQUEST)
        respond(c, 431, "Request Header Fields Too Large", "text/plain", "",
                0);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct srv_http *h = container_of(server, struct srv_http, listener);
    if (status != 0 || h->closing)
        return;
    struct http_conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return;
    c->srv = h;
    uv_tcp_init(h->loop, &c->tcp);
    c->next = h->conns;
    if (h->conns != NULL)
        h->conns->prev = c;
    h->conns = c;
    h->n_conns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0 ||
        h->n_conns > SRV_HTTP_MAX_CONNS) {
        conn_close(c);
        return;
    }
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_close(c);
}

int srv_http_start(struct srv_http *h, uv_loop_t *loop,
                   const struct srv_addr *addr, srv_metrics_render_cb render,
                   srv_health_cb health, void *data)
{
    memset(h, 0, sizeof(*h));
    h->loop = loop;
    h->render = render;
    h->health = health;
    h->data = data;
    struct sockaddr_storage ss;
    int rc = srv_addr_resolve(addr, &ss);
    if (rc != 0) {
        rk_errf(h->errmsg, "cannot resolve %s", addr->host);
        return RK_EIO;
    }
    uv_tcp_init(loop, &h->listener);
    h->listening = true;
    if ((rc = uv_tcp_bind(&h->listener, (struct sockaddr *)&ss, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&h->listener, 64, on_connection)) !=
            0) {
        char a[SRV_HOST_MAX + 16];
        srv_addr_format(addr, a, sizeof(a));
        rk_errf(h->errmsg, "metrics listen on %s: %s", a, uv_strerror(rc));
        srv_http_close(h, NULL);
        return RK_EIO;
    }
    return 0;
}

static void on_listener_close(uv_handle_t *handle)
{
    struct srv_http *h = container_of(handle, struct srv_http, listener);
    h->listening = false;
    maybe_closed(h);
}

void srv_http_close(struct srv_http *h, void (*closed_cb)(struct srv_http *))
{
    if (h->closing)
        return;
    h->closing = true;
    h->closed_cb = closed_cb;
    for (struct http_conn *c = h->conns; c != NULL; c = c->next)
        conn_close(c);
    if (!uv_is_closing((uv_handle_t *)&h->listener))
        uv_close((uv_handle_t *)&h->listener, on_listener_close);
}

int srv_http_port(const struct srv_http *h)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getsockname(&h->listener, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}
