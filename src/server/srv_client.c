/* Client API of ringkvd: connections, request dispatch, replies. */
#include "srv_client.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "rk_log.h"
#include "srv.h"
#include "srv_conn.h"

/* How long a request may wait on Raft before TIMEOUT. */
#define REQUEST_TIMEOUT_MS 5000
/* Most requests in flight on one connection; more are refused with BUSY
 * (UNAVAILABLE) so one client cannot hold unbounded memory. */
#define MAX_INFLIGHT_PER_CONN 4096
/* Bytes of scan results per response at most (keeps frames bounded). */
#define SCAN_MAX_BYTES (1u << 20)
#define SCAN_MAX_LIMIT 10000

struct cconn;

/* The request's own budget (Request.timeout_ms), bounded. */
static uint64_t request_timeout(const struct srv_request *rq)
{
    if (rq->timeout_ms == 0)
        return REQUEST_TIMEOUT_MS;
    return rq->timeout_ms > 60000 ? 60000 : rq->timeout_ms;
}

/* One request in flight. Owns copies of the bytes it needs. */
struct creq {
    struct srv_waiter w;
    struct cconn *conn; /* NULL once the connection closed */
    struct creq *prev, *next;
    struct srv_group *g;
    enum srv_op op;
    uint64_t request_id;
    uint8_t consistency;
    uint64_t started_us;
    uint8_t *key;
    uint32_t klen;
    uint64_t admin_shard; /* split: the recipient */
    bool split_finish;
};

struct cconn {
    struct srv_conn conn;
    struct srv_clients *cs;
    struct cconn *prev, *next;
    struct creq *reqs; /* in flight */
    uint32_t n_reqs;
};

struct srv_clients {
    struct srv *srv;
    uint64_t started_ns;
    uv_tcp_t listener;
    bool listening;
    bool closing;
    struct cconn *conns;
    uint32_t n_conns;
    struct creq *orphans; /* requests whose connection closed */
};

/* ---------------------------------------------------------------- replies */

static void reply(struct srv_clients *cs, struct cconn *cc, enum srv_op op,
                  uint64_t started_us, struct srv_response *r)
{
    struct srv *s = cs->srv;
    if (r->epoch == 0)
        r->epoch = srv_meta_epoch(s);
    if (r->status == RK_ENOTLEADER && r->leader_hint == NULL)
        r->leader_hint = r->leader_id != 0
                             ? srv_node_client_addr(s, r->leader_id)
                             : "";
    int wire = srv_proto_wire_status(r->status);
    uint64_t now = uv_hrtime() / 1000;
    srv_metrics_request(&s->metrics, op, (unsigned)wire,
                        now > started_us ? now - started_us : 0);
    if (cc == NULL || cc->conn.closing)
        return;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (srv_proto_response_encode(r, &buf, &len) != 0) {
        srv_conn_close(&cc->conn, "cannot encode a response");
        return;
    }
    if (srv_conn_write(&cc->conn, buf, len) == 0)
        s->metrics.client_bytes_out += len + SRV_FRAME_HEADER;
    free(buf);
}

static void reply_error(struct srv_clients *cs, struct cconn *cc,
                        enum srv_op op, uint64_t request_id,
                        uint64_t started_us, int status, const char *msg,
                        uint64_t leader)
{
    struct srv_response r;
    memset(&r, 0, sizeof(r));
    r.request_id = request_id;
    r.status = status;
    r.message = msg;
    r.leader_id = leader;
    reply(cs, cc, op, started_us, &r);
}

/* ------------------------------------------------------------ requests */

static struct creq *creq_new(struct cconn *cc, const struct srv_request *rq,
                             struct srv_group *g, uint64_t started_us)
{
    struct creq *q = calloc(1, sizeof(*q) + rq->klen);
    if (q == NULL)
        return NULL;
    q->conn = cc;
    q->g = g;
    q->op = rq->op;
    q->request_id = rq->request_id;
    q->consistency = rq->consistency;
    q->started_us = started_us;
    q->key = (uint8_t *)(q + 1);
    q->klen = rq->klen;
    if (rq->klen > 0)
        memcpy(q->key, rq->key, rq->klen);
    q->next = cc->reqs;
    if (cc->reqs != NULL)
        cc->reqs->prev = q;
    cc->reqs = q;
    cc->n_reqs++;
    return q;
}

static void creq_free(struct creq *q)
{
    struct cconn *cc = q->conn;
    if (cc != NULL) {
        if (q->prev != NULL)
            q->prev->next = q->next;
        else
            cc->reqs = q->next;
        if (q->next != NULL)
            q->next->prev = q->prev;
        cc->n_reqs--;
    }
    free(q);
}

/* The request a waiter answers, or NULL when its connection closed
 * meanwhile: then nobody waits for the answer, and q is freed. */
static struct creq *waiting_creq(struct srv_waiter *w)
{
    struct creq *q = container_of(w, struct creq, w);
    if (q->conn == NULL || q->conn->cs == NULL) {
        free(q);
        return NULL;
    }
    return q;
}

static void answer_get(struct srv_clients *cs, struct creq *q)
{
    struct srv *s = cs->srv;
    struct srv_response r;
    memset(&r, 0, sizeof(r));
    r.request_id = q->request_id;
    r.op = q->op;
    struct stor_value v;
    memset(&v, 0, sizeof(v));
    /* After its split the donor no longer answers for the moved arcs (the
     * fence covers every split storage may already show). */
    int rv = srv_split_moved(q->g, q->key, q->klen)
                 ? RK_EWRONGSHARD
                 : stor_kv_get(s->stor, q->g->shard, q->key, q->klen, &v);
    if (rv == RK_EWRONGSHARD)
        r.message = "the key's arc moved to a new shard (split): refresh "
                    "the map";
    if (rv == 0) {
        r.found = true;
        r.value = v.data;
        r.vlen = v.len;
        r.revision = v.revision;
        r.create_revision = v.create_revision;
    }
    r.status = rv;
    reply(cs, q->conn, q->op, q->started_us, &r);
    free(v.data);
}

static void on_read_ready(struct srv_waiter *w, int status,
                          const struct stor_result *res)
{
    struct creq *q = waiting_creq(w);
    (void)res;
    if (q == NULL)
        return;
    struct srv_clients *cs = q->conn->cs;
    if (status == 0)
        answer_get(cs, q);
    else
        reply_error(cs, q->conn, q->op, q->request_id, q->started_us, status,
                    NULL, q->g->leader);
    creq_free(q);
}

static void on_applied(struct srv_waiter *w, int status,
                       const struct stor_result *res)
{
    struct creq *q = waiting_creq(w);
    if (q == NULL)
        return;
    struct srv_clients *cs = q->conn->cs;
    struct srv_response r;
    struct stor_value cur;
    memset(&r, 0, sizeof(r));
    memset(&cur, 0, sizeof(cur));
    r.request_id = q->request_id;
    r.op = q->op;
    if (status != 0) {
        r.status = status;
        r.leader_id = q->g->leader;
        if (status == RK_ENOTLEADER)
            r.message = "leadership changed before the write committed; "
                        "retry with the same seq";
    } else {
        r.status = res->status;
        r.revision = res->revision;
        r.prev_revision = res->prev_revision;
        r.duplicate = (res->flags & STOR_RES_DUPLICATE) != 0;
        if (res->status == RK_ESTALE)
            r.message = "seq older than the session's window";
        if (res->status == RK_ESTALE)
            r.status = RK_EINVAL;
        if (q->op == SRV_OP_CAS && res->status == RK_ENOTFOUND) {
            /* Comparing with a key that does not exist is a mismatch. */
            r.status = RK_ECASMISMATCH;
            r.found = false;
            r.revision = 0;
        } else if (q->op == SRV_OP_CAS) {
            /* CasResult describes the key: after the write on a match, as
             * it is now on a mismatch (read after the apply). */
            r.found = res->status == 0 || res->revision != 0;
            if (res->status == RK_ECASMISMATCH &&
                stor_kv_get(cs->srv->stor, q->g->shard, q->key, q->klen,
                            &cur) == 0) {
                r.found = true;
                r.value = cur.data;
                r.vlen = cur.len;
                r.revision = cur.revision;
            } else if (res->status == RK_ECASMISMATCH) {
                /* Gone since the apply (deleted, or moved by a split):
                 * no current value to describe. */
                r.found = false;
            }
        }
    }
    reply(cs, q->conn, q->op, q->started_us, &r);
    free(cur.data);
    creq_free(q);
}

/* Checks the key against the limits. */
static int check_key(struct srv *s, const struct srv_request *rq,
                     const char **msg)
{
    if (rq->klen == 0) {
        *msg = "empty key";
        return RK_EINVAL;
    }
    if (rq->klen > s->cfg->max_key_bytes) {
        *msg = "key over the size limit";
        return RK_ETOOLARGE;
    }
    if (rq->klen >= STOR_RESERVED_PREFIX_LEN &&
        memcmp(rq->key, STOR_RESERVED_PREFIX, STOR_RESERVED_PREFIX_LEN) ==
            0) {
        *msg = "keys starting with \\xffringkv/ are reserved";
        return RK_EINVAL;
    }
    return 0;
}

static void do_read(struct srv_clients *cs, struct cconn *cc,
                    const struct srv_request *rq, uint64_t t0)
{
    struct srv *s = cs->srv;
    const char *msg = NULL;
    int rv = check_key(s, rq, &msg);
    if (rv != 0) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, rv, msg, 0);
        return;
    }
    uint64_t shard = srv_meta_route(s, rq->key, rq->klen);
    struct srv_group *g = srv_group_get(s, shard);
    if (g == NULL) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_ENOTLEADER,
                    "shard not hosted here", srv_shard_hint(s, shard));
        return;
    }
    struct creq *q = creq_new(cc, rq, g, t0);
    if (q == NULL) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_ENOMEM, NULL, 0);
        return;
    }
    bool local = rq->consistency == SRV_READ_STALE ||
                 s->cfg->unsafe_test_local_reads;
    if (!local && !srv_group_is_leader(g)) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_ENOTLEADER, NULL,
                    g->leader);
        creq_free(q);
        return;
    }
    if (local) {
        answer_get(cs, q);
        creq_free(q);
        return;
    }
    q->w.cb = on_read_ready;
    rv = srv_group_read(g, &q->w, request_timeout(rq),
                        rq->consistency == SRV_READ_LEASE);
    if (rv != 0) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, rv, NULL, g->leader);
        creq_free(q);
    }
}

static void do_write(struct srv_clients *cs, struct cconn *cc,
                     const struct srv_request *rq, uint64_t t0)
{
    struct srv *s = cs->srv;
    const char *msg = NULL;
    int rv = check_key(s, rq, &msg);
    if (rv == 0 && (rq->vlen > s->cfg->max_value_bytes ||
                    rq->elen > s->cfg->max_value_bytes)) {
        rv = RK_ETOOLARGE;
        msg = "value over the size limit";
    }
    if (rv != 0) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, rv, msg, 0);
        return;
    }
    uint64_t shard = srv_meta_route(s, rq->key, rq->klen);
    struct srv_group *g = srv_group_get(s, shard);
    if (g == NULL || !srv_group_is_leader(g)) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_ENOTLEADER,
                    g == NULL ? "shard not hosted here" : NULL,
                    g != NULL ? g->leader : srv_shard_hint(s, shard));
        return;
    }
    if (srv_split_moved(g, rq->key, rq->klen)) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_EWRONGSHARD,
                    "the key's arc moved to a new shard (split): refresh "
                    "the map", 0);
        return;
    }
    struct stor_cmd cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.client_id = rq->client_id;
    cmd.seq = rq->client_id != 0 ? rq->seq : 0;
    cmd.key = rq->key;
    cmd.klen = rq->klen;
    switch (rq->op) {
    case SRV_OP_PUT:
        cmd.op = STOR_CMD_PUT;
        cmd.value = rq->value != NULL ? rq->value : (const uint8_t *)"";
        cmd.vlen = rq->vlen;
        break;
    case SRV_OP_DELETE:
        cmd.op = STOR_CMD_DEL;
        break;
    default:
        cmd.op = STOR_CMD_CAS;
        cmd.cas_flags = (rq->cas_by_revision ? STOR_CAS_REVISION : 0) |
                        (rq->cas_delete ? STOR_CAS_DELETE : 0);
        cmd.expect_rev = rq->expect_rev;
        cmd.expect = rq->expect != NULL ? rq->expect : (const uint8_t *)"";
        cmd.elen = rq->elen;
        cmd.value = rq->value != NULL ? rq->value : (const uint8_t *)"";
        cmd.vlen = rq->vlen;
        break;
    }
    if (rq->client_id != 0 && rq->seq == 0) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_EINVAL,
                    "seq must be >= 1 when client_id is set", 0);
        return;
    }
    size_t need = stor_cmd_size(&cmd), len = 0;
    uint8_t *buf = malloc(need);
    if (buf == NULL) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_ENOMEM, NULL, 0);
        return;
    }
    rv = stor_cmd_encode(&cmd, buf, need, &len);
    if (rv != 0) {
        free(buf);
        reply_error(cs, cc, rq->op, rq->request_id, t0, rv, NULL, 0);
        return;
    }
    struct creq *q = creq_new(cc, rq, g, t0);
    if (q == NULL) {
        free(buf);
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_ENOMEM, NULL, 0);
        return;
    }
    q->w.cb = on_applied;
    rv = srv_group_propose(g, buf, len, &q->w, request_timeout(rq));
    free(buf);
    if (rv != 0) {
        reply_error(cs, cc, rq->op, rq->request_id, t0,
                    rv == RK_EBUSY ? RK_EUNAVAILABLE : rv, NULL, g->leader);
        creq_free(q);
    }
}

/* A scan runs on one shard; reads are local (stale) or after a ReadIndex
 * round on the leader (linearizable). */
static void answer_scan(struct srv_clients *cs, struct cconn *cc,
                        uint64_t request_id, enum srv_op op, uint64_t t0,
                        uint64_t shard, const uint8_t *prefix, uint32_t plen,
                        const uint8_t *start, uint32_t slen, uint32_t limit,
                        bool keys_only)
{
    struct srv *s = cs->srv;
    struct stor_scan sc;
    memset(&sc, 0, sizeof(sc));
    if (limit == 0 || limit > SCAN_MAX_LIMIT)
        limit = SCAN_MAX_LIMIT;
    int rv = stor_kv_scan(s->stor, shard, prefix, plen, start, slen, limit,
                          SCAN_MAX_BYTES, &sc);
    struct srv_response r;
    memset(&r, 0, sizeof(r));
    r.request_id = request_id;
    r.op = SRV_OP_SCAN;
    r.status = rv;
    struct srv_kv *items = NULL;
    if (rv == 0 && sc.n > 0) {
        items = calloc(sc.n, sizeof(*items));
        if (items == NULL) {
            r.status = RK_ENOMEM;
        } else {
            uint32_t n = 0;
            for (uint32_t i = 0; i < sc.n; i++) {
                if (sc.items[i].klen >= STOR_RESERVED_PREFIX_LEN &&
                    memcmp(sc.items[i].key, STOR_RESERVED_PREFIX,
                           STOR_RESERVED_PREFIX_LEN) == 0)
                    continue; /* the store's own records */
                items[n].key = sc.items[i].key;
                items[n].klen = sc.items[i].klen;
                items[n].value = sc.items[i].value;
                items[n].vlen = sc.items[i].vlen;
                items[n].revision = sc.items[i].revision;
                items[n].create_revision = sc.items[i].create_revision;
                n++;
            }
            r.items = items;
            r.n_items = n;
        }
    }
    r.more = sc.more;
    r.keys_only = keys_only;
    reply(cs, cc, op, t0, &r);
    free(items);
    free(sc.items);
}

/* Scans keep the prefix/start/limit with the request. */
struct scanreq {
    struct creq q;
    uint32_t plen, slen, limit;
    bool keys_only;
    uint8_t *prefix, *start;
};

static void on_scan_ready(struct srv_waiter *w, int status,
                          const struct stor_result *res)
{
    struct creq *q = container_of(w, struct creq, w);
    struct scanreq *sr = container_of(q, struct scanreq, q);
    struct srv_clients *cs = q->conn != NULL ? q->conn->cs : NULL;
    (void)res;
    if (cs == NULL) {
        free(sr->prefix);
        free(sr);
        return;
    }
    if (status == 0)
        answer_scan(cs, q->conn, q->request_id, q->op, q->started_us,
                    q->g->shard, sr->prefix, sr->plen, sr->start, sr->slen,
                    sr->limit, sr->keys_only);
    else
        reply_error(cs, q->conn, q->op, q->request_id, q->started_us, status,
                    NULL, q->g->leader);
    struct cconn *cc = q->conn;
    if (q->prev != NULL)
        q->prev->next = q->next;
    else
        cc->reqs = q->next;
    if (q->next != NULL)
        q->next->prev = q->prev;
    cc->n_reqs--;
    free(sr->prefix);
    free(sr);
}

static void do_scan(struct srv_clients *cs, struct cconn *cc,
                    const struct srv_request *rq, uint64_t t0)
{
    struct srv *s = cs->srv;
    if (rq->shard == SHARD_META_ID || rq->shard >= SHARD_ID_NONE ||
        shard_map_shard(srv_meta_map(s), (shard_id)rq->shard) == NULL) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_EUNKNOWNSHARD,
                    "scan needs a data shard id of the shard map", 0);
        return;
    }
    /* The start key is start_after | 0x00 (srv_proto.c): one byte more. */
    if (rq->klen > s->cfg->max_key_bytes ||
        rq->slen > s->cfg->max_key_bytes + 1) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_ETOOLARGE,
                    "prefix or start key over the key size limit", 0);
        return;
    }
    struct srv_group *g = srv_group_get(s, rq->shard);
    if (g == NULL) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_ENOTLEADER,
                    "shard not hosted here", srv_shard_hint(s, rq->shard));
        return;
    }
    bool leader = srv_group_is_leader(g);
    if (rq->consistency == SRV_READ_STALE) {
        answer_scan(cs, cc, rq->request_id, rq->op, t0, rq->shard, rq->key,
                    rq->klen, rq->start, rq->slen, rq->limit, rq->keys_only);
        return;
    }
    if (!leader) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_ENOTLEADER, NULL,
                    g->leader);
        return;
    }
    struct scanreq *sr = calloc(1, sizeof(*sr));
    uint8_t *bytes = malloc((size_t)rq->klen + rq->slen + 1);
    if (sr == NULL || bytes == NULL) {
        free(sr);
        free(bytes);
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_ENOMEM, NULL, 0);
        return;
    }
    sr->prefix = bytes;
    if (rq->klen > 0) /* a scan without a prefix has no key bytes */
        memcpy(bytes, rq->key, rq->klen);
    sr->plen = rq->klen;
    sr->start = rq->start != NULL ? bytes + rq->klen : NULL;
    if (rq->slen > 0)
        memcpy(bytes + rq->klen, rq->start, rq->slen);
    sr->slen = rq->slen;
    sr->limit = rq->limit;
    sr->keys_only = rq->keys_only;
    struct creq *q = &sr->q;
    q->conn = cc;
    q->g = g;
    q->op = rq->op;
    q->request_id = rq->request_id;
    q->started_us = t0;
    q->next = cc->reqs;
    if (cc->reqs != NULL)
        cc->reqs->prev = q;
    cc->reqs = q;
    cc->n_reqs++;
    q->w.cb = on_scan_ready;
    int rv = srv_group_read(g, &q->w, request_timeout(rq),
                            rq->consistency == SRV_READ_LEASE);
    if (rv != 0)
        q->w.cb(&q->w, rv, NULL); /* replies, unlinks and frees */
}

/* The map's shards (voters, learners, known or preferred leader). */
static void map_shards(struct srv *s, const struct shard_map *m,
                       struct srv_shard_info *out, uint32_t *n)
{
    for (uint32_t i = 0; i < m->n_shards; i++) {
        const struct shard_info *sh = &m->shards[i];
        struct srv_shard_info *si = &out[(*n)++];
        struct srv_group *g = srv_group_get(s, sh->id);
        si->shard = sh->id;
        si->leader = g != NULL && g->leader != 0 ? g->leader : sh->leader;
        si->role = g != NULL ? g->role : 4;
        for (uint32_t k = 0; k < sh->n_voters && k < 16; k++)
            si->replicas[si->n_replicas++] = sh->voters[k];
        for (uint32_t k = 0; k < sh->n_learners && k < 16; k++)
            si->learners[si->n_learners++] = sh->learners[k];
        si->split_phase = srv_split_phase(s, sh);
        si->split_peer = sh->split_peer != SHARD_ID_NONE ? sh->split_peer : 0;
    }
}

static void do_info(struct srv_clients *cs, struct cconn *cc,
                    const struct srv_request *rq, uint64_t t0)
{
    struct srv *s = cs->srv;
    const struct shard_map *m = srv_meta_map(s);
    struct srv_response r;
    memset(&r, 0, sizeof(r));
    r.request_id = rq->request_id;
    r.op = rq->op;
    r.admin = rq->admin;
    r.node_id = s->cfg->id;
    r.uptime_ms = (uv_hrtime() - cs->started_ns) / 1000000;
    r.cluster_id = s->cluster_id;
    r.n_data_shards = m->n_shards > 0 ? m->n_shards - 1 : 0;
    r.ring_vnodes = m->points_per_shard;
    r.ring_seed = SRV_RING_SEED;
    uint32_t cap = s->groups_cap + m->n_shards + 1;
    struct srv_shard_info *shards = calloc(cap, sizeof(*shards));
    struct srv_node_info *nodes = calloc(m->n_nodes + 1, sizeof(*nodes));
    struct srv_ring_point *points =
        calloc(m->ring.n_points + 1, sizeof(*points));
    if (shards == NULL || nodes == NULL || points == NULL) {
        free(shards);
        free(nodes);
        free(points);
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_ENOMEM, NULL, 0);
        return;
    }
    for (uint32_t i = 0; i < m->ring.n_points; i++) {
        points[i].hash = m->ring.points[i].hash;
        /* Clients route as the nodes do: the arcs of a split in flight
         * still go to the donor (a point owns the arc ending at it). */
        points[i].shard = m->n_moves > 0
                              ? shard_map_route_hash(m, points[i].hash)
                              : m->ring.points[i].shard;
    }
    r.points = points;
    r.n_points = m->ring.n_points;
    uint8_t *blob = NULL;
    if (rq->op == SRV_OP_SHARD_MAP) {
        map_shards(s, m, shards, &r.n_shards);
        size_t bcap = shard_map_encoded_size(m);
        blob = malloc(bcap);
        if (blob != NULL &&
            shard_map_encode(m, blob, bcap, &r.map_len) == 0)
            r.map_blob = blob;
    }
    for (uint64_t id = 0; rq->op != SRV_OP_SHARD_MAP && id < s->groups_cap;
         id++) {
        struct srv_group *g = s->groups[id];
        if (g == NULL)
            continue;
        struct raft_status st;
        raft_status(g->raft, &st);
        struct srv_shard_info *si = &shards[r.n_shards++];
        si->shard = id;
        si->leader = g->leader;
        si->term = st.term;
        si->commit = st.commit;
        si->applied = g->applied;
        si->role = g->role;
        for (uint32_t k = 0; k < st.conf.n_voters && k < 16; k++)
            si->replicas[si->n_replicas++] = st.conf.voters[k];
        for (uint32_t k = 0; k < st.conf.n_learners && k < 16; k++)
            si->learners[si->n_learners++] = st.conf.learners[k];
    }
    for (uint32_t i = 0; i < m->n_nodes; i++) {
        const struct shard_node *nd = &m->nodes[i];
        nodes[i].id = nd->id;
        nodes[i].client_addr = nd->client_addr;
        nodes[i].peer_addr = nd->peer_addr;
        nodes[i].state = nd->state;
    }
    r.n_nodes = m->n_nodes;
    r.shards = shards;
    r.nodes = nodes;
    reply(cs, cc, rq->op, t0, &r);
    free(blob);
    free(points);
    free(shards);
    free(nodes);
}

static void on_admin_applied(struct srv_waiter *w, int status,
                             const struct stor_result *res)
{
    struct creq *q = waiting_creq(w);
    if (q == NULL)
        return;
    struct srv_clients *cs = q->conn->cs;
    struct srv_response r;
    memset(&r, 0, sizeof(r));
    r.request_id = q->request_id;
    r.op = q->op;
    r.admin = q->consistency; /* the admin kind, kept there */
    r.status = status != 0 ? status : res->status;
    r.leader_id = q->g->leader;
    if (r.status == RK_ECASMISMATCH) {
        r.status = RK_EUNAVAILABLE;
        r.message = "the shard map changed meanwhile; retry";
    }
    if (r.status == 0) {
        /* The epoch the change created (the local map may be reloaded
         * only once the apply is durable). */
        r.admin_index = res->index;
        r.epoch = w->ctx;
        r.admin_shard = q->admin_shard;
        if (q->consistency == SRV_ADMIN_SPLIT && q->split_finish)
            cs->srv->metrics.splits_finished++;
        else if (q->consistency == SRV_ADMIN_SPLIT)
            cs->srv->metrics.splits_started++;
    }
    reply(cs, q->conn, q->op, q->started_us, &r);
    creq_free(q);
}

/* A request for a change of the shard map (member add/remove, split),
 * waiting for its apply in the meta shard; NULL when this node cannot take
 * it (then already answered: not the meta shard's leader, or no memory). */
static struct creq *meta_creq_new(struct srv_clients *cs, struct cconn *cc,
                                  const struct srv_request *rq, uint64_t t0)
{
    struct srv *s = cs->srv;
    struct srv_group *g = srv_group_get(s, SHARD_META_ID);
    if (g == NULL || !srv_group_is_leader(g)) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_ENOTLEADER,
                    "not the meta shard's leader",
                    g != NULL ? g->leader : srv_shard_hint(s, 0));
        return NULL;
    }
    struct creq *q = creq_new(cc, rq, g, t0);
    if (q == NULL) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_ENOMEM, NULL, 0);
        return NULL;
    }
    q->consistency = rq->admin;
    q->w.cb = on_admin_applied;
    return q;
}

/* Takes what srv_meta_* made of q's change: 0, proposed (q waits, and
 * on_admin_applied answers it with `epoch`); SRV_META_ALREADY, done before
 * (answered now, with `epoch` and q's admin_shard); else an error (answered
 * with `why` if set). Returns whether the change was proposed; if not, q is
 * freed. */
static bool meta_creq_proposed(struct srv_clients *cs, struct creq *q,
                               const struct srv_request *rq, uint64_t t0,
                               int rv, uint64_t epoch, const char *why)
{
    if (rv == 0) {
        q->w.ctx = epoch;
        return true;
    }
    if (rv == SRV_META_ALREADY) {
        struct srv_response r;
        memset(&r, 0, sizeof(r));
        r.request_id = rq->request_id;
        r.op = rq->op;
        r.admin = rq->admin;
        r.epoch = epoch;
        r.admin_shard = q->admin_shard;
        reply(cs, q->conn, rq->op, t0, &r);
    } else {
        reply_error(cs, q->conn, rq->op, rq->request_id, t0,
                    rv == RK_EBUSY ? RK_EUNAVAILABLE : rv,
                    why[0] != '\0' ? why : NULL, q->g->leader);
    }
    creq_free(q);
    return false;
}

/* Member add/remove of the cluster (shard 0): a change of the shard map. */
static void do_member(struct srv_clients *cs, struct cconn *cc,
                      const struct srv_request *rq, uint64_t t0)
{
    struct srv *s = cs->srv;
    if (rq->shard != SHARD_META_ID) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_EINVAL,
                    "replicas of data shards are placed by the cluster; "
                    "give shard 0 to add or remove a node", 0);
        return;
    }
    struct creq *q = meta_creq_new(cs, cc, rq, t0);
    if (q == NULL)
        return;
    char why[RK_ERRMSG_SIZE] = "";
    uint64_t epoch = 0;
    int rv = rq->admin == SRV_ADMIN_MEMBER_ADD
                 ? srv_meta_node_add(s, rq->to_node, rq->peer_addr,
                                     rq->client_addr, &q->w,
                                     request_timeout(rq), &epoch, why)
                 : srv_meta_node_remove(s, rq->to_node, &q->w,
                                        request_timeout(rq), &epoch, why);
    meta_creq_proposed(cs, q, rq, t0, rv, epoch, why);
}

/* Shard split: begin (ringkv shard split), or the donor leader's finish;
 * a change of the shard map, answered with the recipient's id. */
static void do_split(struct srv_clients *cs, struct cconn *cc,
                     const struct srv_request *rq, uint64_t t0)
{
    if (rq->shard == SHARD_META_ID || rq->shard >= SHARD_ID_NONE) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_EINVAL,
                    "only data shards split", 0);
        return;
    }
    if (!rq->split_finish && rq->to_node != 0) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_EINVAL,
                    "the new shard's id is chosen by the cluster", 0);
        return;
    }
    struct creq *q = meta_creq_new(cs, cc, rq, t0);
    if (q == NULL)
        return;
    q->split_finish = rq->split_finish;
    char why[RK_ERRMSG_SIZE] = "";
    uint64_t epoch = 0;
    uint32_t to = (uint32_t)rq->to_node;
    int rv = srv_meta_split(cs->srv, (uint32_t)rq->shard, rq->split_finish,
                            &to, &q->w, request_timeout(rq), &epoch, why);
    q->admin_shard = to;
    if (meta_creq_proposed(cs, q, rq, t0, rv, epoch, why))
        rk_log(RK_LOG_INFO, "split of shard %" PRIu64 " %s shard %u: "
               "proposed (epoch %" PRIu64 ")", rq->shard,
               rq->split_finish ? "into" : "begins, new", to, epoch);
}

static void do_admin(struct srv_clients *cs, struct cconn *cc,
                     const struct srv_request *rq, uint64_t t0)
{
    struct srv *s = cs->srv;
    if (rq->admin == SRV_ADMIN_MEMBER_LIST) {
        do_info(cs, cc, rq, t0);
        return;
    }
    if (rq->admin == SRV_ADMIN_MEMBER_ADD ||
        rq->admin == SRV_ADMIN_MEMBER_REMOVE) {
        do_member(cs, cc, rq, t0);
        return;
    }
    if (rq->admin == SRV_ADMIN_SPLIT) {
        do_split(cs, cc, rq, t0);
        return;
    }
    if (rq->admin != SRV_ADMIN_TRANSFER_LEADER) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_EINVAL,
                    "unknown admin operation", 0);
        return;
    }
    struct srv_group *g = srv_group_get(s, rq->shard);
    if (g == NULL) {
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_EUNKNOWNSHARD,
                    "shard not hosted here", 0);
        return;
    }
    raft_id to = rq->to_node;
    if (to == 0) {
        /* The most caught-up follower. */
        struct raft_status st;
        raft_status(g->raft, &st);
        raft_index best = 0;
        for (uint32_t k = 0; k < st.n_match; k++) {
            if (st.match_ids[k] != s->cfg->id && st.match[k] >= best) {
                best = st.match[k];
                to = st.match_ids[k];
            }
        }
    }
    int rv = g->role != RAFT_LEADER ? RK_ENOTLEADER
                                    : raft_transfer_leader(g->raft, to);
    srv_group_wake(g);
    if (rv == RK_ENOTFOUND || rv == RK_ENOTVOTER) {
        /* Not "key not found": say which node cannot lead the shard. */
        char why[RK_ERRMSG_SIZE];
        rk_errf(why, "node %" PRIu64 " %s shard %" PRIu64 " (only a voter "
                "can take the leadership)", to, rv == RK_ENOTFOUND
                ? "is not a replica of" : "is a learner, not a voter, of",
                rq->shard);
        reply_error(cs, cc, rq->op, rq->request_id, t0, RK_EINVAL, why,
                    g->leader);
        return;
    }
    struct srv_response r;
    memset(&r, 0, sizeof(r));
    r.request_id = rq->request_id;
    r.op = rq->op;
    r.admin = rq->admin;
    r.status = rv;
    r.leader_id = g->leader;
    r.admin_shard = rq->shard;
    reply(cs, cc, rq->op, t0, &r);
}

/* ------------------------------------------------------------- frames */

static int on_client_frame(struct srv_conn *c, const uint8_t *buf,
                           size_t len)
{
    struct cconn *cc = container_of(c, struct cconn, conn);
    struct srv_clients *cs = cc->cs;
    struct srv *s = cs->srv;
    uint64_t t0 = uv_hrtime() / 1000;
    s->metrics.client_bytes_in += len + SRV_FRAME_HEADER;
    struct srv_request rq;
    void *owner = NULL;
    char why[RK_ERRMSG_SIZE] = "";
    int rv = srv_proto_request_decode(buf, len, &rq, &owner, why);
    if (rv == RK_EPROTO || rv == RK_ETOOLARGE) {
        srv_proto_request_free(owner);
        reply_error(cs, cc, SRV_OP_OTHER, 0, t0, RK_EINVAL,
                    "malformed request: not a Request message", 0);
        s->metrics.client_conns_closed_bad++;
        srv_conn_close_after_write(c, "malformed request");
        return 0;
    }
    if (rv != 0) {
        reply_error(cs, cc, rq.op, rq.request_id, t0, rv,
                    why[0] != '\0' ? why : NULL, 0);
        srv_proto_request_free(owner);
        return 0;
    }
    /* A client routing with another epoch refreshes its map (or, if this
     * node is behind, retries until it caught up). */
    if (rq.shard_epoch != 0 && rq.shard_epoch != srv_meta_epoch(s)) {
        reply_error(cs, cc, rq.op, rq.request_id, t0, RK_EWRONGSHARD,
                    "shard map epoch differs: refresh the map", 0);
    } else if (s->failstop) {
        reply_error(cs, cc, rq.op, rq.request_id, t0, RK_EFAILSTOP, NULL, 0);
    } else if (cc->n_reqs >= MAX_INFLIGHT_PER_CONN) {
        reply_error(cs, cc, rq.op, rq.request_id, t0, RK_EBUSY,
                    "too many requests in flight on this connection", 0);
    } else {
        switch (rq.op) {
        case SRV_OP_GET:
            do_read(cs, cc, &rq, t0);
            break;
        case SRV_OP_PUT:
        case SRV_OP_DELETE:
        case SRV_OP_CAS:
            do_write(cs, cc, &rq, t0);
            break;
        case SRV_OP_SCAN:
            do_scan(cs, cc, &rq, t0);
            break;
        case SRV_OP_STATUS:
        case SRV_OP_SHARD_MAP:
            do_info(cs, cc, &rq, t0);
            break;
        default:
            do_admin(cs, cc, &rq, t0);
            break;
        }
    }
    srv_proto_request_free(owner);
    return 0;
}

static void on_client_close(struct srv_conn *c)
{
    struct cconn *cc = container_of(c, struct cconn, conn);
    struct srv_clients *cs = cc->cs;
    /* Requests still waiting on Raft complete later without a connection. */
    for (struct creq *q = cc->reqs; q != NULL;) {
        struct creq *next = q->next;
        q->conn = NULL;
        q->prev = q->next = NULL;
        q = next;
    }
    if (cc->prev != NULL)
        cc->prev->next = cc->next;
    else
        cs->conns = cc->next;
    if (cc->next != NULL)
        cc->next->prev = cc->prev;
    cs->n_conns--;
    cs->srv->metrics.client_conns_open--;
    free(cc);
}

static void on_client_accept(uv_stream_t *server, int status)
{
    struct srv_clients *cs = container_of(server, struct srv_clients,
                                          listener);
    if (status != 0 || cs->closing)
        return;
    struct cconn *cc = calloc(1, sizeof(*cc));
    if (cc == NULL)
        return;
    cc->cs = cs;
    uv_tcp_init(server->loop, &cc->conn.tcp);
    cc->conn.on_close = on_client_close;
    cc->next = cs->conns;
    if (cs->conns != NULL)
        cs->conns->prev = cc;
    cs->conns = cc;
    cs->n_conns++;
    cs->srv->metrics.client_conns_open++;
    cs->srv->metrics.client_conns_accepted++;
    if (uv_accept(server, (uv_stream_t *)&cc->conn.tcp) != 0 ||
        srv_conn_start(&cc->conn, cs->srv->cfg->max_frame_bytes,
                       on_client_frame, on_client_close, cc) != 0)
        srv_conn_close(&cc->conn, "accept failed");
}

/* ---------------------------------------------------------------- API */

int srv_clients_start(struct srv *s, struct srv_clients **out)
{
    struct srv_clients *cs = calloc(1, sizeof(*cs));
    if (cs == NULL)
        return RK_ENOMEM;
    cs->srv = s;
    cs->started_ns = uv_hrtime();
    struct sockaddr_storage ss;
    char a[SRV_HOST_MAX + 16];
    srv_addr_format(&s->cfg->listen, a, sizeof(a));
    if (srv_addr_resolve(&s->cfg->listen, &ss) != 0) {
        rk_errf(s->errmsg, "cannot resolve client address %s", a);
        free(cs);
        return RK_EINVAL;
    }
    uv_tcp_init(&s->loop.loop, &cs->listener);
    cs->listening = true;
    int rc;
    if ((rc = uv_tcp_bind(&cs->listener, (struct sockaddr *)&ss, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&cs->listener, 511,
                        on_client_accept)) != 0) {
        rk_errf(s->errmsg, "client listen on %s: %s", a, uv_strerror(rc));
        *out = cs; /* closed by srv_clients_close at shutdown */
        return RK_EIO;
    }
    *out = cs;
    return 0;
}

void srv_clients_close(struct srv_clients *cs)
{
    if (cs->closing)
        return;
    cs->closing = true;
    if (cs->listening) {
        cs->listening = false;
        uv_close((uv_handle_t *)&cs->listener, NULL);
    }
    for (struct cconn *cc = cs->conns; cc != NULL; cc = cc->next)
        srv_conn_close(&cc->conn, NULL);
}

void srv_clients_free(struct srv_clients *cs)
{
    if (cs == NULL)
        return;
    RK_ASSERT(cs->n_conns == 0);
    free(cs);
}
