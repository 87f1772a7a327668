/* Peer transport: dialling, handshake, reconnect with backoff, framed sends. */
#include "srv_peer.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "raft_codec.h"
#include "rk_assert.h"
#include "rk_buf.h"
#include "rk_log.h"

#define HELLO_KIND_HELLO SRV_PEER_HELLO
#define HELLO_KIND_ACK SRV_PEER_ACK

struct srv_peer_conn {
    struct srv_conn conn;
    struct srv_peers *set;
    struct srv_peer *peer; /* outbound: its peer; inbound: NULL */
    bool inbound;
    bool handshaken;
    uint64_t remote_id;
    uv_connect_t connect_req; /* outbound only */
    struct srv_peer_conn *prev, *next; /* set->inbound list */
};

/* ----------------------------------------------------------------- hello */

size_t srv_peer_hello_encode(uint8_t *out, size_t cap, uint8_t kind,
                             uint64_t cluster_id, uint64_t from, uint64_t to,
                             const char *client_addr)
{
    struct raft_codec_hello h;
    memset(&h, 0, sizeof(h));
    h.version = RAFT_CODEC_PEER_VERSION;
    h.cluster_id = cluster_id;
    h.node_id = from;
    h.to_node_id = to;
    h.ack = kind == HELLO_KIND_ACK;
    snprintf(h.client_addr, sizeof(h.client_addr), "%s", client_addr);
    struct rk_buf b;
    rk_buf_init(&b);
    size_t n = 0;
    if (raft_codec_hello_append(&h, &b) == 0 && b.len <= cap) {
        memcpy(out, b.data, b.len);
        n = b.len;
    }
    rk_buf_free(&b);
    return n;
}

int srv_peer_hello_decode(const uint8_t *buf, size_t len, uint8_t *kind,
                          uint64_t *cluster_id, uint64_t *from, uint64_t *to,
                          char *client_addr, size_t cap)
{
    struct raft_codec_hello h;
    if (raft_codec_hello_decode(buf, len, &h) != 0 ||
        h.version != RAFT_CODEC_PEER_VERSION)
        return RK_EPROTO;
    size_t alen = strlen(h.client_addr);
    for (size_t i = 0; i < alen; i++) {
        unsigned char ch = (unsigned char)h.client_addr[i];
        if (ch < 0x21 || ch > 0x7e)
            return RK_EPROTO;
    }
    if (alen >= cap)
        return RK_EPROTO;
    *kind = h.ack ? HELLO_KIND_ACK : HELLO_KIND_HELLO;
    *cluster_id = h.cluster_id;
    *from = h.node_id;
    *to = h.to_node_id;
    memcpy(client_addr, h.client_addr, alen + 1);
    return 0;
}

/* -------------------------------------------------------------- helpers */

static void on_retry(uv_timer_t *t);

static void handle_closed(struct srv_peers *ps)
{
    RK_ASSERT(ps->open_handles > 0);
    ps->open_handles--;
    if (ps->closing && ps->open_handles == 0 && ps->closed_cb != NULL)
        ps->closed_cb(ps);
}

static void on_handle_close(uv_handle_t *h)
{
    handle_closed(h->data);
}

static void schedule_retry(struct srv_peer *p)
{
    struct srv_peers *ps = p->set;
    if (ps->closing || p->removed)
        return;
    p->state = SRV_PEER_DOWN;
    uint32_t base = p->backoff_ms;
    /* +-25% jitter so that restarting nodes do not dial in lockstep. */
    uint32_t jitter = (uint32_t)rk_rand_below(&ps->rand, base / 2 + 1);
    uint32_t delay = base - base / 4 + jitter;
    p->backoff_ms = base * 2 > SRV_PEER_BACKOFF_MAX_MS
                        ? SRV_PEER_BACKOFF_MAX_MS
                        : base * 2;
    uv_timer_start(&p->retry, on_retry, delay, 0);
}

static void set_down(struct srv_peer *p)
{
    struct srv_peers *ps = p->set;
    bool was_up = p->state == SRV_PEER_UP;
    p->out = NULL;
    schedule_retry(p);
    if (was_up && ps->on_state != NULL && !ps->closing)
        ps->on_state(ps->data, p->id, false);
}

/* ----------------------------------------------------------- connections */

static void on_peer_conn_close(struct srv_conn *c)
{
    struct srv_peer_conn *pc = container_of(c, struct srv_peer_conn, conn);
    struct srv_peers *ps = pc->set;
    if (pc->inbound) {
        if (pc->prev != NULL)
            pc->prev->next = pc->next;
        else
            ps->inbound = pc->next;
        if (pc->next != NULL)
            pc->next->prev = pc->prev;
    } else if (pc->peer != NULL && pc->peer->out == pc) {
        set_down(pc->peer);
    }
    free(pc);
    handle_closed(ps);
}

static int on_inbound_frame(struct srv_conn *c, const uint8_t *buf,
                            size_t len)
{
    struct srv_peer_conn *pc = container_of(c, struct srv_peer_conn, conn);
    struct srv_peers *ps = pc->set;
    if (pc->handshaken) {
        ps->bytes_in += len + SRV_FRAME_HEADER;
        ps->frames_in++;
        if (ps->on_recv(ps->data, pc->remote_id, buf, len) != 0) {
            c->close_reason = "malformed peer batch";
            return -1;
        }
        return 0;
    }
    uint8_t kind;
    uint64_t cid, from, to;
    char caddr[256];
    if (srv_peer_hello_decode(buf, len, &kind, &cid, &from, &to, caddr,
                              sizeof(caddr)) != 0 ||
        kind != HELLO_KIND_HELLO) {
        c->close_reason = "bad peer hello";
        return -1;
    }
    if (cid != ps->cluster_id) {
        rk_log(RK_LOG_WARN,
               "peer %s (node %" PRIu64 ") belongs to cluster %016" PRIx64
               ", we are %016" PRIx64 ": refusing it",
               c->peer_name, from, cid, ps->cluster_id);
        c->close_reason = "foreign cluster id";
        return -1;
    }
    if (to != ps->self || from == ps->self || from == 0) {
        rk_log(RK_LOG_WARN,
               "peer %s says it is node %" PRIu64 " dialling node %" PRIu64
               ", we are node %" PRIu64,
               c->peer_name, from, to, ps->self);
        c->close_reason = "node id mismatch";
        return -1;
    }
    pc->handshaken = true;
    pc->remote_id = from;
    struct srv_peer *p = srv_peers_get(ps, from);
    if (p != NULL && caddr[0] != '\0')
        snprintf(p->client_addr, sizeof(p->client_addr), "%s", caddr);
    uint8_t ack[RAFT_CODEC_HELLO_MAX_BYTES];
    size_t n = srv_peer_hello_encode(ack, sizeof(ack), HELLO_KIND_ACK,
                                     ps->cluster_id, ps->self, from,
                                     ps->client_addr);
    if (n == 0 || srv_conn_write(c, ack, n) != 0) {
        c->close_reason = "cannot answer hello";
        return -1;
    }
    rk_log(RK_LOG_VERBOSE, "inbound peer connection from node %" PRIu64
           " (%s)", from, c->peer_name);
    return 0;
}

static int on_outbound_frame(struct srv_conn *c, const uint8_t *buf,
                             size_t len)
{
    struct srv_peer_conn *pc = container_of(c, struct srv_peer_conn, conn);
    struct srv_peers *ps = pc->set;
    struct srv_peer *p = pc->peer;
    if (pc->handshaken || p == NULL) {
        /* Nothing but the ack ever comes back on an outbound connection. */
        c->close_reason = "unexpected frame on an outbound peer connection";
        return -1;
    }
    uint8_t kind;
    uint64_t cid, from, to;
    char caddr[256];
    if (srv_peer_hello_decode(buf, len, &kind, &cid, &from, &to, caddr,
                              sizeof(caddr)) != 0 ||
        kind != HELLO_KIND_ACK) {
        c->close_reason = "bad peer ack";
        return -1;
    }
    if (cid != ps->cluster_id || from != p->id || to != ps->self) {
        rk_log(RK_LOG_WARN,
               "peer at %s answered as node %" PRIu64 " of cluster %016" PRIx64
               "; expected node %" PRIu64 " of cluster %016" PRIx64,
               p->addr_text, from, cid, p->id, ps->cluster_id);
        c->close_reason = "peer identity mismatch";
        return -1;
    }
    pc->handshaken = true;
    if (caddr[0] != '\0')
        snprintf(p->client_addr, sizeof(p->client_addr), "%s", caddr);
    p->state = SRV_PEER_UP;
    p->backoff_ms = SRV_PEER_BACKOFF_MIN_MS;
    rk_log(RK_LOG_INFO, "connected to peer node %" PRIu64 " at %s", p->id,
           p->addr_text);
    if (ps->on_state != NULL)
        ps->on_state(ps->data, p->id, true);
    return 0;
}

static void on_connect(uv_connect_t *req, int status)
{
    struct srv_peer_conn *pc = req->data;
    struct srv_peers *ps = pc->set;
    struct srv_peer *p = pc->peer;
    if (p == NULL || ps->closing || pc->conn.closing) {
        /* Shutting down: the connection is already being closed. */
        srv_conn_close(&pc->conn, NULL);
        return;
    }
    p->connect_pending = false;
    if (status != 0 || p->removed) {
        if (status != 0 && status != UV_ECANCELED)
            rk_log(p->connects <= 1 || p->backoff_ms >= SRV_PEER_BACKOFF_MAX_MS
                       ? RK_LOG_VERBOSE
                       : RK_LOG_DEBUG,
                   "connect to node %" PRIu64 " at %s: %s", p->id,
                   p->addr_text, uv_strerror(status));
        srv_conn_close(&pc->conn, NULL);
        return;
    }
    if (srv_conn_start(&pc->conn, ps->max_frame, on_outbound_frame,
                       on_peer_conn_close, pc) != 0) {
        srv_conn_close(&pc->conn, "read start failed");
        return;
    }
    uint8_t hello[RAFT_CODEC_HELLO_MAX_BYTES];
    size_t n = srv_peer_hello_encode(hello, sizeof(hello), HELLO_KIND_HELLO,
                                     ps->cluster_id, ps->self, p->id,
                                     ps->client_addr);
    p->state = SRV_PEER_HANDSHAKING;
    if (n == 0 || srv_conn_write(&pc->conn, hello, n) != 0)
        srv_conn_close(&pc->conn, "cannot send hello");
}

static void dial(struct srv_peer *p)
{
    struct srv_peers *ps = p->set;
    RK_ASSERT(p->out == NULL);
    struct srv_peer_conn *pc = calloc(1, sizeof(*pc));
    if (pc == NULL) {
        schedule_retry(p);
        return;
    }
    pc->set = ps;
    pc->peer = p;
    uv_tcp_init(ps->loop, &pc->conn.tcp);
    pc->conn.loop = ps->loop;
    pc->conn.on_close = on_peer_conn_close;
    snprintf(pc->conn.peer_name, sizeof(pc->conn.peer_name), "node %" PRIu64,
             p->id);
    ps->open_handles++;
    p->out = pc;
    p->state = SRV_PEER_CONNECTING;
    p->connects++;
    pc->connect_req.data = pc;
    int rc;
    if (ps->bind_local &&
        (rc = uv_tcp_bind(&pc->conn.tcp, (const struct sockaddr *)&ps->local,
                          0)) != 0)
        rk_log(RK_LOG_WARN, "binding the connection to node %" PRIu64
               " to the peer address: %s (connecting from any address)",
               p->id, uv_strerror(rc));
    rc = uv_tcp_connect(&pc->connect_req, &pc->conn.tcp,
                            (const struct sockaddr *)&p->addr, on_connect);
    if (rc != 0) {
        rk_log(RK_LOG_DEBUG, "connect to node %" PRIu64 ": %s", p->id,
               uv_strerror(rc));
        srv_conn_close(&pc->conn, NULL);
        return;
    }
    p->connect_pending = true;
}

static void on_retry(uv_timer_t *t)
{
    struct srv_peer *p = container_of(t, struct srv_peer, retry);
    if (p->set->closing || p->removed || p->out != NULL)
        return;
    dial(p);
}

static void on_accept(uv_stream_t *server, int status)
{
    struct srv_peers *ps = container_of(server, struct srv_peers, listener);
    if (status != 0 || ps->closing)
        return;
    struct srv_peer_conn *pc = calloc(1, sizeof(*pc));
    if (pc == NULL)
        return;
    pc->set = ps;
    pc->inbound = true;
    uv_tcp_init(ps->loop, &pc->conn.tcp);
    pc->conn.loop = ps->loop;
    pc->conn.on_close = on_peer_conn_close;
    ps->open_handles++;
    pc->next = ps->inbound;
    if (ps->inbound != NULL)
        ps->inbound->prev = pc;
    ps->inbound = pc;
    if (uv_accept(server, (uv_stream_t *)&pc->conn.tcp) != 0 ||
        srv_conn_start(&pc->conn, ps->max_frame, on_inbound_frame,
                       on_peer_conn_close, pc) != 0)
        srv_conn_close(&pc->conn, "accept failed");
}

/* ------------------------------------------------------------------ API */

int srv_peers_init(struct srv_peers *ps, uv_loop_t *loop, uint64_t cluster_id,
                   uint64_t self, const char *client_addr,
                   const struct srv_addr *listen, uint64_t max_frame,
                   srv_peer_recv_cb on_recv, srv_peer_state_cb on_state,
                   void *data)
{
    memset(ps, 0, sizeof(*ps));
    ps->loop = loop;
    ps->cluster_id = cluster_id;
    ps->self = self;
    snprintf(ps->client_addr, sizeof(ps->client_addr), "%s", client_addr);
    ps->max_frame = max_frame;
    ps->on_recv = on_recv;
    ps->on_state = on_state;
    ps->data = data;
    rk_rand_seed(&ps->rand, self * 0x9e3779b97f4a7c15ull ^ uv_hrtime());

    struct sockaddr_storage ss;
    char a[SRV_HOST_MAX + 16];
    srv_addr_format(listen, a, sizeof(a));
    if (srv_addr_resolve(listen, &ss) != 0) {
        rk_errf(ps->errmsg, "cannot resolve peer address %s", a);
        return RK_EIO;
    }
    ps->local = ss;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ps->local;
        in->sin_port = 0;
        ps->bind_local = in->sin_addr.s_addr != htonl(INADDR_ANY);
    } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ps->local;
        in6->sin6_port = 0;
        ps->bind_local = memcmp(&in6->sin6_addr, &in6addr_any,
                                sizeof(in6addr_any)) != 0;
    }
    uv_tcp_init(loop, &ps->listener);
    ps->listener.data = ps;
    ps->open_handles = 1;
    ps->listening = true;
    int rc;
    if ((rc = uv_tcp_bind(&ps->listener, (struct sockaddr *)&ss, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&ps->listener, 128, on_accept)) != 0) {
        rk_errf(ps->errmsg, "peer listen on %s: %s", a, uv_strerror(rc));
        uv_close((uv_handle_t *)&ps->listener, NULL);
        ps->listening = false;
        ps->open_handles = 0;
        return RK_EIO;
    }
    return 0;
}

int srv_peers_port(const struct srv_peers *ps)
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    if (uv_tcp_getsockname(&ps->listener, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

struct srv_peer *srv_peers_get(struct srv_peers *ps, uint64_t id)
{
    for (uint32_t i = 0; i < ps->n_peers; i++) {
        if (ps->peers[i]->id == id)
            return ps->peers[i];
    }
    return NULL;
}

int srv_peers_add(struct srv_peers *ps, uint64_t id,
                  const struct sockaddr_storage *addr)
{
    if (id == 0 || id == ps->self || ps->closing)
        return RK_EINVAL;
    if (srv_peers_get(ps, id) != NULL)
        return RK_EEXIST;
    if (ps->n_peers == SRV_MAX_NODES)
        return RK_ENOMEM;
    struct srv_peer *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return RK_ENOMEM;
    p->id = id;
    p->set = ps;
    p->addr = *addr;
    char ip[64] = "?";
    int port = 0;
    if (addr->ss_family == AF_INET) {
        uv_ip4_name((const struct sockaddr_in *)addr, ip, sizeof(ip));
        port = ntohs(((const struct sockaddr_in *)addr)->sin_port);
    } else if (addr->ss_family == AF_INET6) {
        uv_ip6_name((const struct sockaddr_in6 *)addr, ip, sizeof(ip));
        port = ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
    }
    snprintf(p->addr_text, sizeof(p->addr_text), "%s:%d", ip, port);
    p->backoff_ms = SRV_PEER_BACKOFF_MIN_MS;
    uv_timer_init(ps->loop, &p->retry);
    p->retry.data = ps;
    ps->open_handles++;
    ps->peers[ps->n_peers++] = p;
    dial(p);
    return 0;
}

bool srv_peers_is_up(struct srv_peers *ps, uint64_t id)
{
    struct srv_peer *p = srv_peers_get(ps, id);
    return p != NULL && p->state == SRV_PEER_UP;
}

int srv_peers_send(struct srv_peers *ps, uint64_t to, const uv_buf_t *parts,
                   unsigned n_parts)
{
    struct srv_peer *p = srv_peers_get(ps, to);
    if (p == NULL)
        return RK_ENOTFOUND;
    if (p->state != SRV_PEER_UP || p->out == NULL ||
        p->out->conn.write_queue_bytes > SRV_PEER_MAX_QUEUE) {
        p->drops++;
        return RK_EUNAVAILABLE;
    }
    int rv = srv_conn_writev(&p->out->conn, parts, n_parts);
    if (rv == 0) {
        ps->frames_out++;
        size_t len = SRV_FRAME_HEADER;
        for (unsigned i = 0; i < n_parts; i++)
            len += parts[i].len;
        ps->bytes_out += len;
    } else {
        p->drops++;
    }
    return rv;
}

static void on_peer_free(uv_handle_t *h)
{
    struct srv_peer *p = container_of((uv_timer_t *)h, struct srv_peer,
                                      retry);
    struct srv_peers *ps = h->data;
    free(p);
    handle_closed(ps);
}

void srv_peers_close(struct srv_peers *ps,
                     void (*closed_cb)(struct srv_peers *))
{
    if (ps->closing)
        return;
    ps->closing = true;
    ps->closed_cb = closed_cb;
    unsigned before = ps->open_handles;
    /* Hold one reference so that closed_cb cannot run before the end. */
    ps->open_handles++;
    if (ps->listening) {
        ps->listening = false;
        ps->listener.data = ps;
        uv_close((uv_handle_t *)&ps->listener, on_handle_close);
    }
    for (struct srv_peer_conn *pc = ps->inbound; pc != NULL; pc = pc->next)
        srv_conn_close(&pc->conn, NULL);
    for (uint32_t i = 0; i < ps->n_peers; i++) {
        struct srv_peer *p = ps->peers[i];
        if (p->out != NULL) {
            p->out->peer = NULL;
            srv_conn_close(&p->out->conn, NULL);
            p->out = NULL;
        }
        uv_timer_stop(&p->retry);
        uv_close((uv_handle_t *)&p->retry, on_peer_free);
        ps->peers[i] = NULL;
    }
    ps->n_peers = 0;
    (void)before;
    handle_closed(ps);
}
