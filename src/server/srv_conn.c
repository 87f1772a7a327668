/* A framed TCP stream: bounded frame reassembly, copied writes, one close. */
#include "srv_conn.h"

#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "rk_err.h"
#include "rk_log.h"

/* Read buffers start small and grow to the largest frame seen; a mostly
 * idle connection shrinks back when drained. */
#define RBUF_MIN 16384

/* Frames queued by srv_conn_writev during one loop iteration are appended
 * to the connection's output buffer and written by srv_conn_flush_all (the
 * loop's flush hook) with ONE uv_write per connection per iteration: a
 * pipelining client gets its answers in one write, not one syscall each.
 * A buffer over OBUF_FLUSH bytes is written at once. */
#define OBUF_MIN 4096
#define OBUF_FLUSH (256u << 10)

struct write_req {
    uv_write_t req;
    struct srv_conn *conn;
    size_t len;
    uint8_t *bytes; /* frames, owned */
};

/* Connections with buffered output; the loop thread's (one per process). */
static struct srv_conn *out_head;

static void out_unlink(struct srv_conn *c)
{
    if (!c->out_listed)
        return;
    if (c->out_prev != NULL)
        c->out_prev->out_next = c->out_next;
    else
        out_head = c->out_next;
    if (c->out_next != NULL)
        c->out_next->out_prev = c->out_prev;
    c->out_next = c->out_prev = NULL;
    c->out_listed = false;
}

static void out_link(struct srv_conn *c)
{
    if (c->out_listed)
        return;
    c->out_prev = NULL;
    c->out_next = out_head;
    if (out_head != NULL)
        out_head->out_prev = c;
    out_head = c;
    c->out_listed = true;
}

/* Drops buffered output that was never handed to uv_write. */
static void out_drop(struct srv_conn *c)
{
    out_unlink(c);
    c->write_queue_bytes -= c->olen;
    free(c->obuf);
    c->obuf = NULL;
    c->olen = c->ocap = 0;
}

static void on_closed(uv_handle_t *h)
{
    struct srv_conn *c = container_of(h, struct srv_conn, tcp);
    free(c->rbuf);
    c->rbuf = NULL;
    out_drop(c);
    if (c->on_close != NULL)
        c->on_close(c);
}

void srv_conn_close(struct srv_conn *c, const char *reason)
{
    if (c->closing)
        return;
    c->closing = true;
    out_drop(c);
    if (reason != NULL) {
        c->close_reason = reason;
        rk_log(RK_LOG_INFO, "closing connection %s: %s", c->peer_name,
               reason);
    }
    uv_close((uv_handle_t *)&c->tcp, on_closed);
}

void srv_conn_name(struct srv_conn *c)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    char ip[64] = "?";
    int port = 0;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &len) == 0) {
        if (ss.ss_family == AF_INET) {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            uv_ip4_name(a, ip, sizeof(ip));
            port = ntohs(a->sin_port);
        } else if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, ip, sizeof(ip));
            port = ntohs(a->sin6_port);
        }
    }
    snprintf(c->peer_name, sizeof(c->peer_name), "%s:%d", ip, port);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct srv_conn *c = container_of(h, struct srv_conn, tcp);
    (void)suggested;
    /* Compact, then make sure there is room to read into. */
    if (c->rpos > 0) {
        memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
        c->rlen -= c->rpos;
        c->rpos = 0;
    }
    if (c->rcap - c->rlen < RBUF_MIN / 4) {
        size_t cap = c->rcap == 0 ? RBUF_MIN : c->rcap * 2;
        uint8_t *p = realloc(c->rbuf, cap);
        if (p == NULL) {
            *buf = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
            return;
        }
        c->rbuf = p;
        c->rcap = cap;
    }
    *buf = uv_buf_init((char *)c->rbuf + c->rlen,
                       (unsigned)(c->rcap - c->rlen));
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

/* Hands every complete frame to the owner; grows the buffer to fit the
 * next frame's announced (and already checked) length. */
static void drain(struct srv_conn *c)
{
    while (!c->closing && !c->shutting_down &&
           c->rlen - c->rpos >= SRV_FRAME_HEADER) {
        uint32_t len = get_be32(c->rbuf + c->rpos);
        if (len > c->max_frame) {
            rk_log(RK_LOG_WARN,
                   "connection %s: frame of %u bytes over the %llu-byte "
                   "limit",
                   c->peer_name, len, (unsigned long long)c->max_frame);
            srv_conn_close(c, "frame over --max-frame-bytes");
            return;
        }
        if (c->rlen - c->rpos - SRV_FRAME_HEADER < len) {
            size_t need = SRV_FRAME_HEADER + (size_t)len;
            if (need > c->rcap) {
                /* Move the partial frame to the front and grow once. */
                memmove(c->rbuf, c->rbuf + c->rpos, c->rlen - c->rpos);
                c->rlen -= c->rpos;
                c->rpos = 0;
                size_t cap = c->rcap;
                while (cap < need + RBUF_MIN / 4)
                    cap *= 2;
                uint8_t *p = realloc(c->rbuf, cap);
                if (p == NULL) {
                    srv_conn_close(c, "out of memory for a frame");
                    return;
                }
                c->rbuf = p;
                c->rcap = cap;
            }
            return;
        }
        const uint8_t *payload = c->rbuf + c->rpos + SRV_FRAME_HEADER;
        c->rpos += SRV_FRAME_HEADER + (size_t)len;
        c->frames_in++;
        c->in_frame_cb = true;
        int rv = c->on_frame(c, payload, len);
        c->in_frame_cb = false;
        if (rv != 0) {
            srv_conn_close(c, c->close_reason != NULL ? c->close_reason
                                                      : "bad frame");
            return;
        }
    }
    if (c->rpos == c->rlen) {
        c->rpos = c->rlen = 0;
        /* Give back a buffer that grew for one big frame. */
        if (c->rcap > 4 * RBUF_MIN) {
            free(c->rbuf);
            c->rbuf = NULL;
            c->rcap = 0;
        }
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct srv_conn *c = container_of(s, struct srv_conn, tcp);
    (void)buf;
    if (nread < 0) {
        if (nread == UV_EOF)
            srv_conn_close(c, NULL);
        else if (nread == UV_ENOBUFS)
            srv_conn_close(c, "out of memory for the read buffer");
        else
            srv_conn_close(c, uv_err_name((int)nread));
        return;
    }
    if (nread == 0 || c->closing || c->shutting_down)
        return;
    c->rlen += (size_t)nread;
    c->bytes_in += (uint64_t)nread;
    drain(c);
}

int srv_conn_start(struct srv_conn *c, uint64_t max_frame,
                   srv_conn_frame_cb on_frame, srv_conn_close_cb on_close,
                   void *data)
{
    c->loop = c->tcp.loop;
    c->max_frame = max_frame;
    c->on_frame = on_frame;
    c->on_close = on_close;
    c->data = data;
    if (c->peer_name[0] == '\0')
        srv_conn_name(c);
    uv_tcp_nodelay(&c->tcp, 1);
    int rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    if (rc != 0) {
        rk_log(RK_LOG_WARN, "connection %s: read start: %s", c->peer_name,
               uv_strerror(rc));
        return RK_EIO;
    }
    c->reading = true;
    return 0;
}

static void on_written(uv_write_t *req, int status)
{
    struct write_req *w = container_of(req, struct write_req, req);
    struct srv_conn *c = w->conn;
    RK_ASSERT(c->writes_pending > 0);
    c->writes_pending--;
    c->write_queue_bytes -= w->len;
    free(w->bytes);
    free(w);
    if (status < 0 && status != UV_ECANCELED)
        srv_conn_close(c, uv_err_name(status));
}

/* Hands the buffered frames to one uv_write. */
static void out_flush(struct srv_conn *c)
{
    out_unlink(c);
    if (c->olen == 0 || c->closing)
        return;
    struct write_req *w = malloc(sizeof(*w));
    if (w == NULL) {
        srv_conn_close(c, "out of memory for a write");
        return;
    }
    w->conn = c;
    w->len = c->olen;
    w->bytes = c->obuf;
    c->obuf = NULL;
    c->olen = c->ocap = 0;
    uv_buf_t b = uv_buf_init((char *)w->bytes, (unsigned)w->len);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_written);
    if (rc != 0) {
        c->write_queue_bytes -= w->len;
        free(w->bytes);
        free(w);
        srv_conn_close(c, uv_err_name(rc));
        return;
    }
    c->writes_pending++;
}

void srv_conn_flush_all(void)
{
    while (out_head != NULL)
        out_flush(out_head);
}

int srv_conn_writev(struct srv_conn *c, const uv_buf_t *parts, unsigned n)
{
    if (c->closing || c->shutting_down)
        return RK_ESHUTDOWN;
    size_t len = 0;
    for (unsigned i = 0; i < n; i++)
        len += parts[i].len;
    if (len > c->max_frame)
        return RK_ETOOLARGE;
    size_t need = c->olen + SRV_FRAME_HEADER + len;
    if (need > c->ocap) {
        size_t cap = c->ocap == 0 ? OBUF_MIN : c->ocap;
        while (cap < need)
            cap *= 2;
        uint8_t *p = realloc(c->obuf, cap);
        if (p == NULL)
            return RK_ENOMEM;
        c->obuf = p;
        c->ocap = cap;
    }
    uint8_t *h = c->obuf + c->olen;
    h[0] = (uint8_t)(len >> 24);
    h[1] = (uint8_t)(len >> 16);
    h[2] = (uint8_t)(len >> 8);
    h[3] = (uint8_t)len;
    size_t off = c->olen + SRV_FRAME_HEADER;
    for (unsigned i = 0; i < n; i++) {
        if (parts[i].len > 0)
            memcpy(c->obuf + off, parts[i].base, parts[i].len);
        off += parts[i].len;
    }
    c->olen = need;
    c->write_queue_bytes += SRV_FRAME_HEADER + len;
    c->bytes_out += SRV_FRAME_HEADER + len;
    c->frames_out++;
    if (c->olen >= OBUF_FLUSH)
        out_flush(c);
    else
        out_link(c);
    return 0;
}

int srv_conn_write(struct srv_conn *c, const void *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    return srv_conn_writev(c, &b, 1);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct srv_conn *c = req->data;
    (void)status;
    srv_conn_close(c, NULL);
}

void srv_conn_close_after_write(struct srv_conn *c, const char *reason)
{
    if (c->closing || c->shutting_down)
        return;
    out_flush(c); /* the last answers go before the FIN */
    if (c->closing)
        return;
    if (reason != NULL) {
        c->close_reason = reason;
        rk_log(RK_LOG_INFO, "closing connection %s: %s", c->peer_name,
               reason);
    }
    c->shutting_down = true;
    if (c->reading) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->reading = false;
    }
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) !=
        0)
        srv_conn_close(c, NULL);
}
