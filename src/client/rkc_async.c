/*
 * The engine of libringkv: requests on a libuv loop.
 *
 * Every call is an op. An op is routed (key -> shard by the map's ring ->
 * cached leader, else a replica in rotation), encoded straight into the
 * output buffer of the node's connection and written with all the other
 * frames of that loop iteration in one uv_write (the prepare handle flushes
 * before the loop polls). Replies find their op through the request id,
 * whose low bits are the op's slot. One sweeper timer handles every
 * deadline, attempt timeout and backoff wake-up, so an op costs no timer of
 * its own.
 *
 * What happens to an answer:
 *   OK, NOT_FOUND, CAS_MISMATCH, INVALID, TOO_LARGE, INTERNAL: the call ends.
 *   NOT_LEADER: the leader cache takes the hint; a few hops go out at once,
 *     then with backoff.
 *   WRONG_SHARD: the map is fetched again and the op waits for it.
 *   UNAVAILABLE, TIMEOUT: backoff, and the next try goes to another replica.
 *   A broken connection or a try that outlives attempt_timeout_ms counts as
 *   a failure of that node for its breaker and is retried elsewhere.
 * Writes keep their session seq across tries, so a retry is exactly-once.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rk_time.h"
#include "rkc_int.h"

#define SLOT_BITS 24u
#define SLOT_MASK ((1ull << SLOT_BITS) - 1)
#define SWEEP_MS 2u
#define MAX_FAST_HOPS 3u
#define MS 1000000ull

static void dispatch(struct rkc_op *op);
static void start_map_fetch(struct ringkv_async *a);
static void flush_all(uv_prepare_t *p);
static void sweep(uv_timer_t *t);

uint64_t rkc_now(void)
{
    return rk_time_mono_ns();
}

/* ------------------------------------------------------------ statuses */

ringkv_status rkc_status_from_wire(int status)
{
    switch (status) {
    case RINGKV__STATUS__OK:
        return RINGKV_OK;
    case RINGKV__STATUS__NOT_FOUND:
        return RINGKV_NOT_FOUND;
    case RINGKV__STATUS__CAS_MISMATCH:
        return RINGKV_CAS_MISMATCH;
    case RINGKV__STATUS__TIMEOUT:
        return RINGKV_TIMEOUT;
    case RINGKV__STATUS__NOT_LEADER:
    case RINGKV__STATUS__WRONG_SHARD:
    case RINGKV__STATUS__UNAVAILABLE:
        return RINGKV_UNAVAILABLE;
    case RINGKV__STATUS__INVALID_ARGUMENT:
        return RINGKV_INVALID;
    case RINGKV__STATUS__TOO_LARGE:
        return RINGKV_TOO_LARGE;
    default:
        return RINGKV_INTERNAL;
    }
}

ringkv_status rkc_check_key(const void *key, size_t klen)
{
    return key == NULL || klen == 0 ? RINGKV_INVALID : RINGKV_OK;
}

void rkc_value_set(ringkv_value *v, const void *data, size_t len,
                   uint64_t rev, uint64_t crev)
{
    v->data = (void *)data;
    v->len = len;
    v->revision = rev;
    v->create_revision = crev;
}

/* --------------------------------------------------------------- nodes */

struct rkc_node *rkc_node_by_id(struct ringkv_async *a, uint64_t id)
{
    for (uint32_t i = 0; i < a->n_nodes; i++)
        if (a->nodes[i]->id == id && id != 0)
            return a->nodes[i];
    return NULL;
}

static struct rkc_node *node_by_addr(struct ringkv_async *a, const char *addr)
{
    for (uint32_t i = 0; i < a->n_nodes; i++)
        if (strcmp(a->nodes[i]->addr, addr) == 0)
            return a->nodes[i];
    return NULL;
}

static struct rkc_node *node_add(struct ringkv_async *a, uint64_t id,
                                 const char *addr)
{
    if (addr == NULL || addr[0] == '\0' || strlen(addr) >= RKC_ADDR_MAX)
        return NULL;
    struct rkc_node *n = node_by_addr(a, addr);
    if (n != NULL) {
        if (id != 0)
            n->id = id;
        return n;
    }
    struct rkc_node **nn = realloc(a->nodes, (a->n_nodes + 1) * sizeof(*nn));
    if (nn == NULL)
        return NULL;
    a->nodes = nn;
    if ((n = calloc(1, sizeof(*n))) == NULL)
        return NULL;
    n->id = id;
    snprintf(n->addr, sizeof(n->addr), "%s", addr);
    rkc_breaker_init(&n->br);
    a->nodes[a->n_nodes++] = n;
    return n;
}

struct rkc_shard *rkc_shard_by_id(struct ringkv_async *a, uint64_t id)
{
    for (uint32_t i = 0; i < a->n_shards; i++)
        if (a->shards[i].id == id)
            return &a->shards[i];
    return NULL;
}

static bool node_usable(struct ringkv_async *a, struct rkc_node *n,
                        uint64_t now)
{
    return n != NULL && rkc_breaker_peek(&n->br, &a->bcfg, now);
}

/* The node a try of `op` goes to, or NULL if every candidate's breaker is
 * open. Takes the breaker's permission for the node it returns. */
static struct rkc_node *pick_node(struct rkc_op *op, uint64_t now)
{
    struct ringkv_async *a = op->a;
    struct rkc_node *n = NULL;
    if (op->fixed) {
        n = op->node;
        if (!op->no_retry && !node_usable(a, n, now))
            n = NULL;
    } else if (op->kind == RKC_MAP || op->kind == RKC_STATUS ||
               (!a->have_map && op->kind == RKC_MEMBER_LIST)) {
        /* Any node: rotate over all of them. */
        for (uint32_t i = 0; i < a->n_nodes && n == NULL; i++) {
            struct rkc_node *c = a->nodes[a->rr++ % a->n_nodes];
            if (node_usable(a, c, now))
                n = c;
        }
    } else {
        struct rkc_shard *sh = rkc_shard_by_id(a, op->shard);
        if (sh != NULL) {
            struct rkc_node *l = rkc_node_by_id(a, sh->leader);
            if (node_usable(a, l, now))
                n = l;
            for (uint32_t i = 0; i < sh->n_replicas && n == NULL; i++) {
                struct rkc_node *c =
                    rkc_node_by_id(a, sh->replicas[sh->rr++ % sh->n_replicas]);
                if (node_usable(a, c, now))
                    n = c;
            }
        }
    }
    if (n != NULL)
        rkc_breaker_take(&n->br, &a->bcfg, now);
    return n;
}

static void set_leader(struct ringkv_async *a, uint64_t shard, uint64_t node)
{
    struct rkc_shard *sh = rkc_shard_by_id(a, shard);
    if (sh != NULL)
        sh->leader = node;
}

/* The node answered (whatever it said): its breaker records a success. */
static void node_ok(struct ringkv_async *a, struct rkc_node *n, uint64_t now)
{
    uint64_t closed = n->br.closed;
    rkc_breaker_success(&n->br, &a->bcfg, now);
    a->st.breaker_closed += n->br.closed - closed;
}

static void node_failed(struct ringkv_async *a, struct rkc_node *n,
                        uint64_t now)
{
    uint64_t opened = n->br.opened;
    rkc_breaker_failure(&n->br, &a->bcfg, now);
    a->st.breaker_opened += n->br.opened - opened;
    for (uint32_t i = 0; i < a->n_shards; i++)
        if (a->shards[i].leader == n->id)
            a->shards[i].leader = 0;
}

/* ---------------------------------------------------------------- ops */

struct rkc_op *rkc_op_new(struct ringkv_async *a, uint8_t kind,
                          const void *key, size_t klen, const void *val,
                          size_t vlen, const void *ev, size_t evlen)
{
    if (a->n_free == 0 && a->n_slots == a->cap_slots) {
        uint32_t cap = a->cap_slots ? a->cap_slots * 2 : 64;
        if (cap > SLOT_MASK)
            return NULL;
        struct rkc_op **s = realloc(a->slots, cap * sizeof(*s));
        if (s == NULL)
            return NULL;
        a->slots = s;
        uint32_t *f = realloc(a->free_slots, cap * sizeof(*f));
        if (f == NULL)
            return NULL;
        a->free_slots = f;
        a->cap_slots = cap;
    }
    struct rkc_op *op = calloc(1, sizeof(*op) + klen + vlen + evlen + 3);
    if (op == NULL)
        return NULL;
    uint8_t *p = (uint8_t *)(op + 1);
    op->key = p;
    if (klen > 0)
        memcpy(p, key, klen);
    p[klen] = 0;
    p += klen + 1;
    op->val = p;
    if (vlen > 0)
        memcpy(p, val, vlen);
    p[vlen] = 0;
    p += vlen + 1;
    op->expect_val = p;
    if (evlen > 0)
        memcpy(p, ev, evlen);
    op->klen = klen;
    op->vlen = vlen;
    op->evlen = evlen;
    op->a = a;
    op->kind = kind;
    op->slot = a->n_free > 0 ? a->free_slots[--a->n_free] : a->n_slots++;
    a->slots[op->slot] = op;
    rk_list_init(&op->link);
    rk_list_init(&op->conn_link);
    return op;
}

/* A free session of the shard's list (a new one when all are busy). A list
 * has room for every session it owns, so giving one back cannot fail. */
int rkc__session_take(struct ringkv_async *a, uint64_t shard, uint32_t *out)
{
    uint32_t pool = (uint32_t)(shard % RKC_SESS_POOLS);
    struct rkc_sess_pool *p = &a->sess_pool[pool];
    if (p->n > 0) {
        *out = p->free[--p->n];
        return 0;
    }
    if (a->n_sess == a->cap_sess) {
        uint32_t cap = a->cap_sess ? a->cap_sess * 2 : 16;
        struct rkc_session *ns = realloc(a->sess, cap * sizeof(*ns));
        if (ns == NULL)
            return -1;
        a->sess = ns;
        a->cap_sess = cap;
    }
    if (p->cap == p->owned) {
        /* Room for every session of this list, all of which may come back
         * at once. */
        uint32_t cap = p->cap ? p->cap * 2 : 4;
        uint32_t *nf = realloc(p->free, cap * sizeof(*nf));
        if (nf == NULL)
            return -1;
        p->free = nf;
        p->cap = cap;
    }
    /* Ids follow the first one: distinct, and tied to this handle. */
    a->sess[a->n_sess] = (struct rkc_session){
        .id = a->client_id + a->n_sess, .seq = 0, .pool = pool};
    p->owned++;
    if (a->sess[a->n_sess].id == 0)
        a->sess[a->n_sess].id = 1;
    *out = a->n_sess++;
    return 0;
}

void rkc__session_give(struct ringkv_async *a, uint32_t sess)
{
    struct rkc_sess_pool *p = &a->sess_pool[a->sess[sess].pool];
    p->free[p->n++] = sess;
}

void rkc_op_free(struct rkc_op *op)
{
    struct ringkv_async *a = op->a;
    if (op->seq != 0)
        rkc__session_give(a, op->sess);
    a->slots[op->slot] = NULL;
    a->free_slots[a->n_free++] = op->slot;
    free(op->start_after);
    free(op);
}

/* Leaves the connection it was in flight on (a late reply is dropped). */
static void op_detach(struct rkc_op *op)
{
    rk_list_remove(&op->conn_link);
    op->rid = 0;
}

static void op_complete(struct rkc_op *op, ringkv_status st,
                        const Ringkv__Response *resp)
{
    struct ringkv_async *a = op->a;
    op_detach(op);
    rk_list_remove(&op->link);
    a->n_ops--;
    if (!op->internal) {
        a->st.calls++;
        if (st == RINGKV_OK)
            a->st.ok++;
        else if (st != RINGKV_NOT_FOUND && st != RINGKV_CAS_MISMATCH)
            a->st.errors++;
        if (st == RINGKV_TIMEOUT)
            a->st.timeouts++;
        rk_hist_record(&a->lat, (rkc_now() - op->t_start) / 1000);
    }
    if (st != RINGKV_OK && st != RINGKV_NOT_FOUND &&
        st != RINGKV_CAS_MISMATCH) {
        if (op->errmsg[0] != '\0')
            snprintf(a->last_error, sizeof(a->last_error), "%s",
                     op->errmsg);
        else
            snprintf(a->last_error, sizeof(a->last_error), "%s",
                     ringkv_strerror(st));
    }
    op->done(op, st, resp);
    rkc_op_free(op);
}

static void note_error(struct rkc_op *op, const char *what, const char *addr)
{
    snprintf(op->errmsg, sizeof(op->errmsg), "%s (%s)", what, addr);
}

/* Backs off and tries again, unless the deadline or the retry budget says
 * the call is over. */
static void op_retry(struct rkc_op *op, uint64_t now)
{
    struct ringkv_async *a = op->a;
    op_detach(op);
    if (op->no_retry || (a->o.max_retries > 0 &&
                         op->attempt > a->o.max_retries)) {
        op_complete(op, RINGKV_UNAVAILABLE, NULL);
        return;
    }
    uint64_t d = rkc_backoff_ns(op->attempt, a->o.backoff_base_ms * MS,
                                a->o.backoff_cap_ms * MS, &a->rng);
    op->retry_at = now + d;
    if (op->retry_at >= op->deadline) {
        /* Sleeping past the deadline is pointless: one last try at it. */
        op->retry_at = op->deadline > now + MS ? op->deadline - MS : now;
    }
    op->state = RKC_OP_WAIT_RETRY;
}

/* ---------------------------------------------------------- connections */

static void conn_closed_cb(uv_handle_t *h)
{
    struct rkc_conn *c = h->data;
    struct ringkv_async *a = c->a;
    rk_frame_dec_free(&c->dec);
    rk_buf_free(&c->out);
    rk_buf_free(&c->wbuf);
    free(c);
    if (--a->open_handles == 0 && a->closing && a->close_done != NULL)
        a->close_done(a->close_arg);
}

/* Closes a connection: every op in flight on it is retried elsewhere (or
 * failed when closing). */
static void conn_fail(struct rkc_conn *c, const char *why)
{
    if (c->closing)
        return;
    struct ringkv_async *a = c->a;
    uint64_t now = rkc_now();
    c->closing = true;
    struct rkc_node *n = c->node;
    c->node = NULL;
    if (n != NULL) {
        n->conn = NULL;
        if (!a->closing)
            node_failed(a, n, now);
    }
    struct rk_list *pos, *tmp;
    rk_list_foreach_safe(pos, tmp, &c->ops)
    {
        struct rkc_op *op = rk_list_entry(pos, struct rkc_op, conn_link);
        note_error(op, why, n != NULL ? n->addr : "?");
        if (a->closing)
            op_complete(op, RINGKV_CLOSED, NULL);
        else
            op_retry(op, now);
    }
    uv_close((uv_handle_t *)&c->tcp, conn_closed_cb);
}

static void write_cb(uv_write_t *w, int status)
{
    struct rkc_conn *c = w->data;
    c->writing = false;
    rk_buf_reset(&c->wbuf);
    if (status != 0) {
        conn_fail(c, uv_strerror(status));
        return;
    }
}

static void conn_flush(struct rkc_conn *c)
{
    if (!c->up || c->writing || c->closing || c->out.len == 0)
        return;
    struct rk_buf t = c->wbuf;
    c->wbuf = c->out;
    c->out = t;
    rk_buf_reset(&c->out);
    uv_buf_t b = uv_buf_init((char *)c->wbuf.data, (unsigned)c->wbuf.len);
    c->writing = true;
    c->wreq.data = c;
    int rv = uv_write(&c->wreq, (uv_stream_t *)&c->tcp, &b, 1, write_cb);
    if (rv != 0) {
        c->writing = false;
        conn_fail(c, uv_strerror(rv));
    }
}

static void flush_all(uv_prepare_t *p)
{
    struct ringkv_async *a = p->data;
    for (uint32_t i = 0; i < a->n_nodes; i++)
        if (a->nodes[i]->conn != NULL)
            conn_flush(a->nodes[i]->conn);
}

static void on_response(struct rkc_conn *c, const Ringkv__Response *r);

static int frame_cb(void *arg, const uint8_t *frame, size_t len)
{
    struct rkc_conn *c = arg;
    ProtobufCMessage *m = NULL;
    if (rk_proto_unpack(&ringkv__response__descriptor, frame, len, 0, &m) !=
        0) {
        conn_fail(c, "unreadable response");
        return 1;
    }
    on_response(c, (Ringkv__Response *)m);
    rk_proto_free(m);
    return c->closing ? 1 : 0;
}

static void alloc_cb(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    (void)hint;
    struct rkc_conn *c = h->data;
    *b = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void read_cb(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct rkc_conn *c = s->data;
    if (n < 0) {
        conn_fail(c, n == UV_EOF ? "connection closed by the node"
                                 : uv_strerror((int)n));
        return;
    }
    if (n == 0 || c->closing)
        return;
    int rv = rk_frame_dec_feed_cb(&c->dec, b->base, (size_t)n, frame_cb, c);
    if (rv < 0 && !c->closing)
        conn_fail(c, "bad frame from the node");
}

static void connect_cb(uv_connect_t *req, int status)
{
    struct rkc_conn *c = req->data;
    if (c->closing)
        return;
    if (status != 0) {
        conn_fail(c, uv_strerror(status));
        return;
    }
    c->up = true;
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
    conn_flush(c);
}

static int parse_addr(const char *addr, struct sockaddr_storage *ss)
{
    char host[RKC_ADDR_MAX];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || (size_t)(colon - addr) >= sizeof(host))
        return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535)
        return -1;
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0)
        return 0;
    char h6[RKC_ADDR_MAX];
    size_t hl = strlen(host);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        memcpy(h6, host + 1, hl - 2);
        h6[hl - 2] = '\0';
    } else {
        snprintf(h6, sizeof(h6), "%s", host);
    }
    return uv_ip6_addr(h6, (int)port, (struct sockaddr_in6 *)ss) == 0 ? 0
                                                                       : -1;
}

static struct rkc_conn *conn_get(struct ringkv_async *a, struct rkc_node *n,
                                 char *why, size_t wlen)
{
    if (n->conn != NULL)
        return n->conn;
    struct sockaddr_storage ss;
    if (parse_addr(n->addr, &ss) != 0) {
        snprintf(why, wlen, "bad address %s", n->addr);
        return NULL;
    }
    struct rkc_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        snprintf(why, wlen, "out of memory");
        return NULL;
    }
    c->a = a;
    c->node = n;
    rk_list_init(&c->ops);
    rk_buf_init(&c->out);
    rk_buf_init(&c->wbuf);
    rk_frame_dec_init(&c->dec, a->o.max_frame_bytes);
    uv_tcp_init(a->loop, &c->tcp);
    c->tcp.data = c;
    c->creq.data = c;
    a->open_handles++;
    int rv = uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&ss,
                            connect_cb);
    if (rv != 0) {
        snprintf(why, wlen, "connect %s: %s", n->addr, uv_strerror(rv));
        c->node = NULL;
        c->closing = true;
        uv_close((uv_handle_t *)&c->tcp, conn_closed_cb);
        return NULL;
    }
    n->conn = c;
    return c;
}

/* ------------------------------------------------------------ encoding */

static int encode(struct rkc_op *op, struct rk_buf *out)
{
    struct ringkv_async *a = op->a;
    Ringkv__Request rq = RINGKV__REQUEST__INIT;
    Ringkv__GetRequest g = RINGKV__GET_REQUEST__INIT;
    Ringkv__PutRequest p = RINGKV__PUT_REQUEST__INIT;
    Ringkv__DeleteRequest d = RINGKV__DELETE_REQUEST__INIT;
    Ringkv__CasRequest cs = RINGKV__CAS_REQUEST__INIT;
    Ringkv__ScanRequest sc = RINGKV__SCAN_REQUEST__INIT;
    Ringkv__StatusRequest st = RINGKV__STATUS_REQUEST__INIT;
    Ringkv__GetShardMapRequest gm = RINGKV__GET_SHARD_MAP_REQUEST__INIT;
    Ringkv__MemberListRequest ml = RINGKV__MEMBER_LIST_REQUEST__INIT;
    Ringkv__MemberAddRequest ma = RINGKV__MEMBER_ADD_REQUEST__INIT;
    Ringkv__MemberRemoveRequest mr = RINGKV__MEMBER_REMOVE_REQUEST__INIT;
    Ringkv__TransferLeaderRequest tl = RINGKV__TRANSFER_LEADER_REQUEST__INIT;
    Ringkv__SplitShardRequest ss = RINGKV__SPLIT_SHARD_REQUEST__INIT;
    ProtobufCBinaryData key = {op->klen, op->key};
    rq.request_id = op->rid;
    rq.client_id = op->seq != 0 ? a->sess[op->sess].id : 0;
    rq.seq = op->seq;
    rq.shard_epoch = a->have_map ? a->map_epoch : 0;
    uint64_t left = op->deadline > rkc_now()
                        ? (op->deadline - rkc_now()) / MS
                        : 1;
    rq.timeout_ms = left > a->o.attempt_timeout_ms ? a->o.attempt_timeout_ms
                                                   : (uint32_t)left;
    switch (op->kind) {
    case RKC_GET:
        g.key = key;
        rq.consistency = (Ringkv__Request__Consistency)op->cons;
        rq.op_case = RINGKV__REQUEST__OP_GET;
        rq.get = &g;
        break;
    case RKC_PUT:
        p.key = key;
        p.value = (ProtobufCBinaryData){op->vlen, op->val};
        rq.op_case = RINGKV__REQUEST__OP_PUT;
        rq.put = &p;
        break;
    case RKC_DEL:
        d.key = key;
        rq.op_case = RINGKV__REQUEST__OP_DELETE;
        rq.delete_ = &d;
        break;
    case RKC_CAS:
        cs.key = key;
        if (op->expect_kind == RINGKV_EXPECT_VALUE) {
            cs.expect_case = RINGKV__CAS_REQUEST__EXPECT_EXPECT_VALUE;
            cs.expect_value = (ProtobufCBinaryData){op->evlen, op->expect_val};
        } else if (op->expect_kind == RINGKV_EXPECT_REVISION) {
            cs.expect_case = RINGKV__CAS_REQUEST__EXPECT_EXPECT_REVISION;
            cs.expect_revision = op->expect_rev;
        } else {
            cs.expect_case = RINGKV__CAS_REQUEST__EXPECT_EXPECT_ABSENT;
            cs.expect_absent = true;
        }
        cs.new_value = (ProtobufCBinaryData){op->vlen, op->val};
        cs.delete_on_match = op->del;
        rq.op_case = RINGKV__REQUEST__OP_CAS;
        rq.cas = &cs;
        break;
    case RKC_SCAN:
        sc.prefix = key;
        sc.start_after = (ProtobufCBinaryData){op->salen, op->start_after};
        sc.limit = op->limit;
        sc.shard = op->shard;
        sc.keys_only = op->keys_only;
        rq.consistency = (Ringkv__Request__Consistency)op->cons;
        rq.op_case = RINGKV__REQUEST__OP_SCAN;
        rq.scan = &sc;
        break;
    case RKC_STATUS:
        rq.op_case = RINGKV__REQUEST__OP_STATUS;
        rq.status = &st;
        rq.shard_epoch = 0;
        break;
    case RKC_MAP:
        gm.known_epoch = a->map_epoch;
        rq.op_case = RINGKV__REQUEST__OP_GET_SHARD_MAP;
        rq.get_shard_map = &gm;
        rq.shard_epoch = 0;
        break;
    case RKC_MEMBER_LIST:
        rq.op_case = RINGKV__REQUEST__OP_MEMBER_LIST;
        rq.member_list = &ml;
        break;
    case RKC_MEMBER_ADD:
        ma.node_id = op->arg_node;
        ma.peer_addr = op->addr1;
        ma.client_addr = op->addr2;
        rq.op_case = RINGKV__REQUEST__OP_MEMBER_ADD;
        rq.member_add = &ma;
        break;
    case RKC_MEMBER_REMOVE:
        mr.node_id = op->arg_node;
        rq.op_case = RINGKV__REQUEST__OP_MEMBER_REMOVE;
        rq.member_remove = &mr;
        break;
    case RKC_TRANSFER:
        tl.shard = op->shard;
        tl.to_node = op->arg_node;
        rq.op_case = RINGKV__REQUEST__OP_TRANSFER_LEADER;
        rq.transfer_leader = &tl;
        break;
    case RKC_SPLIT:
        ss.shard = op->arg_node;
        rq.op_case = RINGKV__REQUEST__OP_SPLIT_SHARD;
        rq.split_shard = &ss;
        break;
    default:
        return -1;
    }
    size_t n = ringkv__request__get_packed_size(&rq);
    if (n > a->o.max_frame_bytes)
        return -2;
    if (rk_buf_reserve(out, RK_FRAME_HDR + n) != 0)
        return -1;
    uint8_t *w = out->data + out->len;
    rk_frame_put_hdr(w, (uint32_t)n);
    ringkv__request__pack(&rq, w + RK_FRAME_HDR);
    out->len += RK_FRAME_HDR + n;
    return 0;
}

/* ------------------------------------------------------------ dispatch */

static bool needs_map(const struct rkc_op *op)
{
    return !op->fixed && op->kind != RKC_MAP && op->kind != RKC_STATUS &&
           op->kind != RKC_MEMBER_LIST;
}

static void dispatch(struct rkc_op *op)
{
    struct ringkv_async *a = op->a;
    uint64_t now = rkc_now();
    if (needs_map(op) && !a->have_map) {
        op->state = RKC_OP_WAIT_MAP;
        start_map_fetch(a);
        return;
    }
    if (op->kind == RKC_GET || op->kind == RKC_PUT || op->kind == RKC_DEL ||
        op->kind == RKC_CAS)
        op->shard = shard_ring_lookup(&a->ring, op->key, op->klen);
    if (!op->sess_tried && (op->kind == RKC_PUT || op->kind == RKC_DEL ||
                            op->kind == RKC_CAS)) {
        /* Once, at the first routing: the seq stays the same for every try
         * (a retry that lands on another shard after a split keeps it; the
         * session is still held by this op alone). */
        op->sess_tried = true;
        if (rkc__session_take(a, op->shard, &op->sess) == 0)
            op->seq = ++a->sess[op->sess].seq;
        /* else: no memory for a session: sent without one (seq 0), so a
         * retry of it could apply twice; only under memory exhaustion. */
    }
    struct rkc_node *n = pick_node(op, now);
    if (n == NULL) {
        if (op->errmsg[0] == '\0')
            snprintf(op->errmsg, sizeof(op->errmsg),
                     "no node available for shard %llu (circuit breakers "
                     "open)", (unsigned long long)op->shard);
        op->attempt++;
        op_retry(op, now);
        return;
    }
    char why[128] = "";
    struct rkc_conn *c = conn_get(a, n, why, sizeof(why));
    if (c == NULL) {
        snprintf(op->errmsg, sizeof(op->errmsg), "%s", why);
        node_failed(a, n, now);
        op->attempt++;
        op_retry(op, now);
        return;
    }
    op->rid = (++a->rid_gen << SLOT_BITS) | op->slot;
    int rv = encode(op, &c->out);
    if (rv != 0) {
        op->rid = 0;
        snprintf(op->errmsg, sizeof(op->errmsg), "%s",
                 rv == -2 ? "request over the frame limit" : "out of memory");
        op_complete(op, rv == -2 ? RINGKV_TOO_LARGE : RINGKV_NO_MEMORY,
                    NULL);
        return;
    }
    if (op->attempt > 0)
        a->st.retries++;
    a->st.attempts++;
    op->attempt++;
    op->node = n;
    op->state = RKC_OP_INFLIGHT;
    op->attempt_deadline = now + (uint64_t)a->o.attempt_timeout_ms * MS;
    rk_list_push_tail(&c->ops, &op->conn_link);
}

void rkc_op_submit(struct rkc_op *op)
{
    struct ringkv_async *a = op->a;
    op->t_start = rkc_now();
    op->deadline = op->t_start + (uint64_t)a->o.timeout_ms * MS;
    rk_list_push_tail(&a->ops, &op->link);
    a->n_ops++;
    if (!uv_is_active((uv_handle_t *)&a->sweeper))
        uv_timer_start(&a->sweeper, sweep, SWEEP_MS, SWEEP_MS);
    dispatch(op);
}

/* ------------------------------------------------------------ shard map */

static void install_map(struct ringkv_async *a, Ringkv__ShardMap *m)
{
    struct shard_ring ring = {0};
    struct rkc_shard *shards = NULL;
    if (m->n_points > 0) {
        ring.points = calloc(m->n_points, sizeof(*ring.points));
        if (ring.points == NULL)
            return;
        ring.n_points = (uint32_t)m->n_points;
        for (size_t i = 0; i < m->n_points; i++) {
            ring.points[i].hash = m->points[i]->hash;
            ring.points[i].shard = (shard_id)m->points[i]->shard;
            if (i > 0 && ring.points[i].hash <= ring.points[i - 1].hash) {
                free(ring.points);
                return; /* not sorted: refuse the map */
            }
        }
    }
    if (m->n_shards > 0 &&
        (shards = calloc(m->n_shards, sizeof(*shards))) == NULL) {
        free(ring.points);
        return;
    }
    for (size_t i = 0; i < m->n_shards; i++) {
        Ringkv__ShardInfo *si = m->shards[i];
        struct rkc_shard *s = &shards[i];
        struct rkc_shard *old = rkc_shard_by_id(a, si->id);
        s->id = si->id;
        s->leader = old != NULL ? old->leader : 0;
        s->n_replicas = (uint32_t)si->n_replicas;
        s->replicas = calloc(si->n_replicas + 1, sizeof(uint64_t));
        s->n_learners = (uint32_t)si->n_learners;
        s->learners = calloc(si->n_learners + 1, sizeof(uint64_t));
        if (s->replicas != NULL && si->n_replicas > 0)
            memcpy(s->replicas, si->replicas, si->n_replicas * 8);
        else
            s->n_replicas = 0;
        if (s->learners != NULL && si->n_learners > 0)
            memcpy(s->learners, si->learners, si->n_learners * 8);
        else
            s->n_learners = 0;
        if (si->split != NULL)
            s->split_phase = si->split->phase;
    }
    for (size_t i = 0; i < m->n_nodes; i++) {
        Ringkv__NodeInfo *ni = m->nodes[i];
        if (ni->state == RINGKV__NODE_INFO__STATE__REMOVED)
            continue;
        struct rkc_node *n = rkc_node_by_id(a, ni->id);
        if (n != NULL && strcmp(n->addr, ni->client_addr) != 0 &&
            n->conn == NULL)
            snprintf(n->addr, sizeof(n->addr), "%s", ni->client_addr);
        else if (n == NULL)
            n = node_add(a, ni->id, ni->client_addr);
        if (n != NULL)
            n->in_map = true;
    }
    for (uint32_t i = 0; i < a->n_shards; i++) {
        free(a->shards[i].replicas);
        free(a->shards[i].learners);
    }
    free(a->shards);
    shard_ring_free(&a->ring);
    a->ring = ring;
    a->shards = shards;
    a->n_shards = (uint32_t)m->n_shards;
    a->map_epoch = m->epoch;
    a->cluster_id = m->cluster_id;
    a->have_map = ring.n_points > 0;
    a->st.map_refreshes++;
}

static void map_done(struct rkc_op *op, ringkv_status st,
                     const Ringkv__Response *r)
{
    (void)r; /* on_response installed the map */
    struct ringkv_async *a = op->a;
    a->map_fetching = false;
    /* Ops that waited go now (or fetch again on their next turn). */
    struct rk_list *pos, *tmp;
    uint64_t now = rkc_now();
    rk_list_foreach_safe(pos, tmp, &a->ops)
    {
        struct rkc_op *w = rk_list_entry(pos, struct rkc_op, link);
        if (w->state != RKC_OP_WAIT_MAP || w == op)
            continue;
        if (a->have_map) {
            dispatch(w);
        } else {
            snprintf(w->errmsg, sizeof(w->errmsg),
                     "could not fetch the shard map: %.120s",
                     op->errmsg[0] ? op->errmsg : ringkv_strerror(st));
            op_retry(w, now);
        }
    }
}

static void start_map_fetch(struct ringkv_async *a)
{
    if (a->map_fetching || a->closing)
        return;
    struct rkc_op *op = rkc_op_new(a, RKC_MAP, NULL, 0, NULL, 0, NULL, 0);
    if (op == NULL)
        return;
    a->map_fetching = true;
    op->internal = true;
    op->done = map_done;
    rkc_op_submit(op);
}

/* ------------------------------------------------------------ replies */

static void on_response(struct rkc_conn *c, const Ringkv__Response *r)
{
    struct ringkv_async *a = c->a;
    uint64_t now = rkc_now();
    if (c->node != NULL)
        node_ok(a, c->node, now);
    uint64_t slot = r->request_id & SLOT_MASK;
    if (slot >= a->n_slots)
        return;
    struct rkc_op *op = a->slots[slot];
    if (op == NULL || op->rid != r->request_id || r->request_id == 0)
        return; /* a late reply to a try given up on */
    op_detach(op);
    if (r->message != NULL && r->message[0] != '\0' &&
        r->status != RINGKV__STATUS__OK)
        snprintf(op->errmsg, sizeof(op->errmsg), "%s: %s (%s)",
                 rk_status_name(r->status), r->message,
                 c->node != NULL ? c->node->addr : "?");
    if (r->epoch > a->map_epoch && a->have_map && op->kind != RKC_MAP)
        start_map_fetch(a);
    bool is_write = op->kind == RKC_PUT || op->kind == RKC_DEL ||
                    op->kind == RKC_CAS;
    switch (r->status) {
    case RINGKV__STATUS__NOT_LEADER: {
        a->st.not_leader++;
        struct rkc_node *to = NULL;
        if (r->leader_hint != NULL && r->leader_hint->node_id != 0) {
            to = rkc_node_by_id(a, r->leader_hint->node_id);
            if (to == NULL && r->leader_hint->address != NULL)
                to = node_add(a, r->leader_hint->node_id,
                              r->leader_hint->address);
        }
        set_leader(a, op->shard, to != NULL ? to->id : 0);
        if (op->fixed) {
            op_complete(op, RINGKV_UNAVAILABLE, r);
        } else if (to != NULL && to != c->node &&
                   op->hops++ < MAX_FAST_HOPS) {
            dispatch(op);
        } else {
            op->hops = 0;
            op_retry(op, now);
        }
        return;
    }
    case RINGKV__STATUS__WRONG_SHARD:
        a->st.wrong_shard++;
        if (op->kind == RKC_MAP || op->fixed) {
            op_complete(op, RINGKV_UNAVAILABLE, r);
            return;
        }
        if (r->epoch == 0 || r->epoch > a->map_epoch) {
            /* Our map is old: wait for the new one. */
            op->state = RKC_OP_WAIT_MAP;
            start_map_fetch(a);
        } else {
            /* The node's map is older than ours: it catches up soon. */
            op_retry(op, now);
        }
        return;
    case RINGKV__STATUS__UNAVAILABLE:
    case RINGKV__STATUS__TIMEOUT:
        if (op->kind != RKC_STATUS && !op->fixed)
            set_leader(a, op->shard, 0);
        if (op->fixed) {
            op_complete(op, rkc_status_from_wire(r->status), r);
        } else {
            op_retry(op, now);
        }
        return;
    default:
        break;
    }
    if (is_write && a->drop_replies > 0 && r->status == RINGKV__STATUS__OK) {
        /* TEST ONLY: pretend this reply was lost on the way. */
        a->drop_replies--;
        op_retry(op, now);
        return;
    }
    if (op->kind == RKC_MAP && r->status == RINGKV__STATUS__OK &&
        r->result_case == RINGKV__RESPONSE__RESULT_SHARD_MAP &&
        (!a->have_map || r->shard_map->epoch >= a->map_epoch))
        install_map(a, r->shard_map); /* whoever asked for it */
    if (r->status == RINGKV__STATUS__OK && c->node != NULL &&
        !op->fixed && op->kind != RKC_MAP && op->kind != RKC_STATUS &&
        op->kind != RKC_MEMBER_LIST)
        set_leader(a, op->shard, c->node->id);
    op_complete(op, rkc_status_from_wire(r->status), r);
}

/* ------------------------------------------------------------ sweeper */

static void probe_done(struct rkc_op *op, ringkv_status st,
                       const Ringkv__Response *r)
{
    (void)op;
    (void)st;
    (void)r; /* the breaker already learnt the outcome */
}

/* A node whose breaker has cooled down gets a status request as its probe
 * even when no call would pick it (its shards' leaders moved elsewhere), so
 * that a node that came back is seen as healthy again. */
static void probe_nodes(struct ringkv_async *a, uint64_t now)
{
    if (now < a->next_probe)
        return;
    a->next_probe = now + 100 * MS;
    for (uint32_t i = 0; i < a->n_nodes; i++) {
        struct rkc_node *n = a->nodes[i];
        if (n->br.state == RKC_BREAKER_CLOSED ||
            !rkc_breaker_peek(&n->br, &a->bcfg, now))
            continue;
        struct rkc_op *op =
            rkc_op_new(a, RKC_STATUS, NULL, 0, NULL, 0, NULL, 0);
        if (op == NULL)
            return;
        op->fixed = op->no_retry = op->internal = true;
        op->node = n;
        op->done = probe_done;
        rkc_op_submit(op);
    }
}

static void sweep(uv_timer_t *t)
{
    struct ringkv_async *a = t->data;
    uint64_t now = rkc_now();
    bool waiting_map = false;
    struct rk_list *pos, *tmp;
    rk_list_foreach_safe(pos, tmp, &a->ops)
    {
        struct rkc_op *op = rk_list_entry(pos, struct rkc_op, link);
        if (now >= op->deadline) {
            if (op->errmsg[0] == '\0' || op->state == RKC_OP_INFLIGHT)
                snprintf(op->errmsg, sizeof(op->errmsg),
                         "deadline of %u ms passed after %u tries%s%s",
                         a->o.timeout_ms, op->attempt,
                         op->node != NULL ? ", last to " : "",
                         op->node != NULL ? op->node->addr : "");
            op_complete(op, RINGKV_TIMEOUT, NULL);
            continue;
        }
        switch (op->state) {
        case RKC_OP_INFLIGHT:
            if (now >= op->attempt_deadline) {
                struct rkc_node *n = op->node;
                snprintf(op->errmsg, sizeof(op->errmsg),
                         "no answer from %s within %u ms",
                         n != NULL ? n->addr : "?", a->o.attempt_timeout_ms);
                if (n != NULL)
                    node_failed(a, n, now);
                if (op->fixed && op->no_retry)
                    op_complete(op, RINGKV_TIMEOUT, NULL);
                else
                    op_retry(op, now);
            }
            break;
        case RKC_OP_WAIT_RETRY:
            if (now >= op->retry_at)
                dispatch(op);
            break;
        case RKC_OP_WAIT_MAP:
            waiting_map = true;
            break;
        default:
            break;
        }
    }
    if (waiting_map && !a->map_fetching)
        start_map_fetch(a);
    if (!a->closing)
        probe_nodes(a, now);
    if (a->n_ops == 0)
        uv_timer_stop(&a->sweeper);
}

/* ---------------------------------------------------------- open/close */

static void handle_closed(uv_handle_t *h)
{
    struct ringkv_async *a = h->data;
    if (--a->open_handles == 0 && a->close_done != NULL)
        a->close_done(a->close_arg);
}

static ringkv_status parse_endpoints(struct ringkv_async *a, const char *eps)
{
    if (eps == NULL || eps[0] == '\0')
        return RINGKV_INVALID;
    char *copy = strdup(eps);
    if (copy == NULL)
        return RINGKV_NO_MEMORY;
    ringkv_status st = RINGKV_OK;
    char *save = NULL;
    for (char *t = strtok_r(copy, ", ", &save); t != NULL;
         t = strtok_r(NULL, ", ", &save)) {
        struct sockaddr_storage ss;
        if (parse_addr(t, &ss) != 0) {
            snprintf(a->last_error, sizeof(a->last_error),
                     "bad endpoint \"%s\": want host:port", t);
            st = RINGKV_INVALID;
            break;
        }
        if (node_add(a, 0, t) == NULL) {
            st = RINGKV_NO_MEMORY;
            break;
        }
    }
    free(copy);
    if (st == RINGKV_OK && a->n_nodes == 0)
        st = RINGKV_INVALID;
    return st;
}

void rkc_async_free_state(struct ringkv_async *a)
{
    for (uint32_t i = 0; i < a->n_nodes; i++)
        free(a->nodes[i]);
    free(a->nodes);
    for (uint32_t i = 0; i < a->n_shards; i++) {
        free(a->shards[i].replicas);
        free(a->shards[i].learners);
    }
    free(a->shards);
    shard_ring_free(&a->ring);
    free(a->slots);
    free(a->free_slots);
    free(a->sess);
    for (uint32_t i = 0; i < RKC_SESS_POOLS; i++)
        free(a->sess_pool[i].free);
    free(a->endpoints);
}

ringkv_status rkc_async_init(struct ringkv_async *a, uv_loop_t *loop,
                             const ringkv_options *o)
{
    ringkv_options d;
    ringkv_options_init(&d);
    if (o == NULL)
        o = &d;
    a->loop = loop;
    a->o = *o;
#define DEF(f)                                                                 \
    if (a->o.f == 0)                                                           \
    a->o.f = d.f
    DEF(timeout_ms);
    DEF(attempt_timeout_ms);
    DEF(backoff_base_ms);
    DEF(backoff_cap_ms);
    DEF(breaker_failures);
    DEF(breaker_window_ms);
    DEF(breaker_error_pct);
    DEF(breaker_cooldown_ms);
    DEF(max_frame_bytes);
#undef DEF
    if (a->o.attempt_timeout_ms > a->o.timeout_ms)
        a->o.attempt_timeout_ms = a->o.timeout_ms;
    a->bcfg = (struct rkc_breaker_cfg){
        .failures = a->o.breaker_failures,
        .window_ns = (uint64_t)a->o.breaker_window_ms * MS,
        .error_pct = a->o.breaker_error_pct,
        .min_calls = 20,
        .cooldown_ns = (uint64_t)a->o.breaker_cooldown_ms * MS,
    };
    uint64_t seed = o->seed != 0 ? o->seed
                                 : rk_time_wall_ns() ^ rk_time_mono_ns() ^
                                       ((uint64_t)(uintptr_t)a << 16);
    rk_rand_seed(&a->rng, seed);
    a->client_id = o->client_id;
    while (a->client_id == 0)
        a->client_id = rk_rand_next(&a->rng);
    rk_list_init(&a->ops);
    rk_hist_init(&a->lat);
    const char *env = getenv("RINGKV_TEST_DROP_REPLIES");
    if (env != NULL)
        a->drop_replies = (unsigned)strtoul(env, NULL, 10);
    ringkv_status st = parse_endpoints(a, o->endpoints ? o->endpoints
                                                         : d.endpoints);
    if (st != RINGKV_OK) {
        rkc_async_free_state(a);
        return st;
    }
    uv_timer_init(loop, &a->sweeper);
    a->sweeper.data = a;
    uv_prepare_init(loop, &a->flusher);
    a->flusher.data = a;
    uv_prepare_start(&a->flusher, flush_all);
    uv_unref((uv_handle_t *)&a->flusher);
    a->open_handles = 2;
    return RINGKV_OK;
}

ringkv_status ringkv_async_open(struct uv_loop_s *loop,
                                const ringkv_options *o, ringkv_async_t **out)
{
    if (loop == NULL || out == NULL)
        return RINGKV_INVALID;
    struct ringkv_async *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return RINGKV_NO_MEMORY;
    ringkv_status st = rkc_async_init(a, loop, o);
    if (st != RINGKV_OK) {
        free(a);
        return st;
    }
    *out = a;
    return RINGKV_OK;
}

struct close_ctx {
    struct ringkv_async *a;
    void (*done)(void *);
    void *arg;
};

static void close_finish(void *arg)
{
    struct close_ctx *cc = arg;
    struct ringkv_async *a = cc->a;
    void (*done)(void *) = cc->done;
    void *darg = cc->arg;
    free(cc);
    rkc_async_free_state(a);
    free(a);
    if (done != NULL)
        done(darg);
}

void rkc_async_shutdown(struct ringkv_async *a, void (*done)(void *),
                        void *arg)
{
    a->closing = true;
    a->close_done = done;
    a->close_arg = arg;
    struct rk_list *pos, *tmp;
    rk_list_foreach_safe(pos, tmp, &a->ops)
    {
        struct rkc_op *op = rk_list_entry(pos, struct rkc_op, link);
        op_complete(op, RINGKV_CLOSED, NULL);
    }
    for (uint32_t i = 0; i < a->n_nodes; i++)
        if (a->nodes[i]->conn != NULL)
            conn_fail(a->nodes[i]->conn, "client closing");
    uv_timer_stop(&a->sweeper);
    uv_close((uv_handle_t *)&a->sweeper, handle_closed);
    uv_close((uv_handle_t *)&a->flusher, handle_closed);
}

void ringkv_async_close(ringkv_async_t *a, void (*done)(void *arg), void *arg)
{
    if (a == NULL)
        return;
    struct close_ctx *cc = malloc(sizeof(*cc));
    if (cc == NULL)
        abort(); /* cannot report it: the callback contract needs it */
    *cc = (struct close_ctx){a, done, arg};
    rkc_async_shutdown(a, close_finish, cc);
}

/* ---------------------------------------------------------- statistics */

void rkc_stats(struct ringkv_async *a, ringkv_stats *out)
{
    *out = a->st;
    struct rk_hist_summary s;
    rk_hist_summarize(&a->lat, &s);
    out->lat_p50_us = s.p50;
    out->lat_p90_us = s.p90;
    out->lat_p99_us = s.p99;
    out->lat_p999_us = s.p999;
    out->lat_max_us = s.max;
}

void ringkv_async_get_stats(ringkv_async_t *a, ringkv_stats *out)
{
    rkc_stats(a, out);
}

ringkv_breaker_state ringkv_async_breaker(ringkv_async_t *a, uint64_t id)
{
    struct rkc_node *n = rkc_node_by_id(a, id);
    if (n == NULL)
        return RINGKV_BREAKER_CLOSED;
    return (ringkv_breaker_state)rkc_breaker_state_at(&n->br, &a->bcfg,
                                                      rkc_now());
}
