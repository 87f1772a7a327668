/* One-shot client requests from a node to another node's client port. */
#include "srv_rpc.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "rk_err.h"
#include "rk_list.h"
#include "rk_proto.h"
#include "srv_config.h"
#include "srv_conn.h"

struct rpc {
    struct srv_conn conn;
    uv_connect_t connect;
    uv_timer_t timer;
    uint8_t *req;
    size_t len;
    srv_rpc_cb cb;
    void *arg;
    bool done;
    int open_handles;
};

static void rpc_release(struct rpc *r)
{
    if (--r->open_handles > 0)
        return;
    free(r->req);
    free(r);
}

static void on_conn_closed(struct srv_conn *c)
{
    rpc_release(container_of(c, struct rpc, conn));
}

static void on_timer_closed(uv_handle_t *h)
{
    rpc_release(container_of((uv_timer_t *)h, struct rpc, timer));
}

/* Answers once, then closes both handles. */
static void finish(struct rpc *r, int status, const Ringkv__Response *resp)
{
    if (r->done)
        return;
    r->done = true;
    r->cb(r->arg, status, resp);
    uv_timer_stop(&r->timer);
    uv_close((uv_handle_t *)&r->timer, on_timer_closed);
    srv_conn_close(&r->conn, NULL);
}

static int on_frame(struct srv_conn *c, const uint8_t *data, size_t len)
{
    struct rpc *r = container_of(c, struct rpc, conn);
    ProtobufCMessage *m = NULL;
    int rv = rk_proto_unpack(&ringkv__response__descriptor, data, len, 0,
                             &m);
    finish(r, rv == 0 ? 0 : RK_EPROTO, (const Ringkv__Response *)m);
    if (m != NULL)
        rk_proto_free(m);
    return 0;
}

static void on_close_early(struct srv_conn *c)
{
    struct rpc *r = container_of(c, struct rpc, conn);
    if (!r->done) {
        r->done = true;
        r->cb(r->arg, RK_EUNAVAILABLE, NULL);
        uv_timer_stop(&r->timer);
        uv_close((uv_handle_t *)&r->timer, on_timer_closed);
    }
    rpc_release(r);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct rpc *r = container_of(req, struct rpc, connect);
    if (r->done)
        return;
    if (status != 0 ||
        srv_conn_start(&r->conn, r->conn.max_frame, on_frame,
                       on_close_early, r) != 0 ||
        srv_conn_write(&r->conn, r->req, r->len) != 0)
        finish(r, RK_EUNAVAILABLE, NULL);
}

static void on_timeout(uv_timer_t *t)
{
    finish(container_of(t, struct rpc, timer), RK_ETIMEDOUT, NULL);
}

int srv_rpc_call(uv_loop_t *loop, const char *addr,
                 const Ringkv__Request *rq, uint64_t timeout_ms,
                 uint64_t max_frame, srv_rpc_cb cb, void *arg)
{
    struct srv_addr a;
    struct sockaddr_storage ss;
    if (srv_addr_parse(addr, &a) != 0 || a.port == 0 ||
        srv_addr_resolve(&a, &ss) != 0)
        return RK_EINVAL;
    struct rpc *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return RK_ENOMEM;
    int rv = rk_proto_pack((const ProtobufCMessage *)rq, 0, &r->req,
                           &r->len);
    if (rv != 0) {
        free(r);
        return rv;
    }
    r->cb = cb;
    r->arg = arg;
    r->conn.max_frame = max_frame;
    r->conn.on_close = on_conn_closed;
    uv_tcp_init(loop, &r->conn.tcp);
    uv_timer_init(loop, &r->timer);
    r->open_handles = 2;
    uv_timer_start(&r->timer, on_timeout, timeout_ms, 0);
    if (uv_tcp_connect(&r->connect, &r->conn.tcp, (struct sockaddr *)&ss,
                       on_connect) != 0) {
        /* Nothing was started: close both handles without a callback. */
        r->done = true;
        uv_close((uv_handle_t *)&r->timer, on_timer_closed);
        srv_conn_close(&r->conn, NULL);
        return RK_EIO;
    }
    return 0;
}
