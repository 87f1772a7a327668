/*
 * The public API of libringkv: options, statuses, the async calls (thin
 * wrappers that copy their arguments into an op) and the blocking calls,
 * which run a private libuv loop until their op completes.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rkc_int.h"

#ifndef RINGKV_VERSION
#define RINGKV_VERSION "0.1.0"
#endif

static const struct {
    const char *name;
    const char *msg;
} STATUS_TEXT[] = {
    [RINGKV_OK] = {"OK", "success"},
    [RINGKV_NOT_FOUND] = {"NOT_FOUND", "key not found"},
    [RINGKV_CAS_MISMATCH] = {"CAS_MISMATCH",
                             "compare-and-set expectation did not hold"},
    [RINGKV_TIMEOUT] = {"TIMEOUT", "deadline exceeded (a write may or may "
                                   "not have been applied)"},
    [RINGKV_UNAVAILABLE] = {"UNAVAILABLE", "no node could serve the request"},
    [RINGKV_INVALID] = {"INVALID", "invalid argument"},
    [RINGKV_TOO_LARGE] = {"TOO_LARGE", "key or value over the limit"},
    [RINGKV_INTERNAL] = {"INTERNAL", "internal error in the cluster"},
    [RINGKV_NO_MEMORY] = {"NO_MEMORY", "out of memory"},
    [RINGKV_CLOSED] = {"CLOSED", "client closed"},
    [RINGKV_REFUSED] = {"REFUSED", "the cluster refused the request"},
    [RINGKV_PROTOCOL] = {"PROTOCOL", "unexpected answer from a node"},
};

const char *ringkv_strerror(ringkv_status st)
{
    if ((unsigned)st >= sizeof(STATUS_TEXT) / sizeof(STATUS_TEXT[0]))
        return "unknown status";
    return STATUS_TEXT[st].msg;
}

const char *ringkv_status_name(ringkv_status st)
{
    if ((unsigned)st >= sizeof(STATUS_TEXT) / sizeof(STATUS_TEXT[0]))
        return "UNKNOWN";
    return STATUS_TEXT[st].name;
}

const char *ringkv_version(void)
{
    return RINGKV_VERSION;
}

void ringkv_options_init(ringkv_options *o)
{
    memset(o, 0, sizeof(*o));
    o->endpoints = "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003";
    o->timeout_ms = 5000;
    o->attempt_timeout_ms = 1000;
    o->backoff_base_ms = 10;
    o->backoff_cap_ms = 500;
    o->breaker_failures = 5;
    o->breaker_window_ms = 10000;
    o->breaker_error_pct = 50;
    o->breaker_cooldown_ms = 1000;
    o->max_frame_bytes = ((size_t)4 << 20) + 4096;
}

void ringkv_value_free(ringkv_value *v)
{
    if (v == NULL)
        return;
    free(v->data);
    memset(v, 0, sizeof(*v));
}

void ringkv_kvs_free(ringkv_kvs *kvs)
{
    if (kvs == NULL)
        return;
    for (size_t i = 0; i < kvs->n; i++) {
        free(kvs->items[i].key);
        ringkv_value_free(&kvs->items[i].value);
    }
    free(kvs->items);
    memset(kvs, 0, sizeof(*kvs));
}

/* A malloc'd NUL-terminated copy of bytes into a ringkv_value. */
static int value_copy(ringkv_value *v, const ProtobufCBinaryData *b,
                      uint64_t rev, uint64_t crev)
{
    void *p = malloc(b->len + 1);
    if (p == NULL)
        return -1;
    if (b->len > 0)
        memcpy(p, b->data, b->len);
    ((char *)p)[b->len] = '\0';
    rkc_value_set(v, p, b->len, rev, crev);
    return 0;
}

/* ============================================================ async API */

static void get_done(struct rkc_op *op, ringkv_status st,
                     const Ringkv__Response *r)
{
    ringkv_value v = {0};
    if (st == RINGKV_OK && r != NULL &&
        r->result_case == RINGKV__RESPONSE__RESULT_GET) {
        if (!r->get->found)
            st = RINGKV_NOT_FOUND;
        else
            rkc_value_set(&v, r->get->value.data, r->get->value.len,
                          r->get->revision, r->get->create_revision);
    } else if (st == RINGKV_OK) {
        st = RINGKV_PROTOCOL;
    }
    ((ringkv_get_cb)op->cb)(op->arg, st, st == RINGKV_OK ? &v : NULL);
}

static void write_done(struct rkc_op *op, ringkv_status st,
                       const Ringkv__Response *r)
{
    ringkv_write_result res = {0};
    ringkv_value cur = {0};
    const ringkv_value *curp = NULL;
    if (r != NULL) {
        switch (r->result_case) {
        case RINGKV__RESPONSE__RESULT_PUT:
            res.revision = r->put->revision;
            res.prev_revision = r->put->prev_revision;
            res.duplicate = r->put->duplicate;
            break;
        case RINGKV__RESPONSE__RESULT_DELETE:
            res.revision = r->delete_->revision;
            res.prev_revision = r->delete_->prev_revision;
            res.duplicate = r->delete_->duplicate;
            res.found = r->delete_->found;
            if (st == RINGKV_OK && !r->delete_->found)
                st = RINGKV_NOT_FOUND;
            break;
        case RINGKV__RESPONSE__RESULT_CAS:
            res.duplicate = r->cas->duplicate;
            res.found = r->cas->found;
            if (st == RINGKV_CAS_MISMATCH) {
                rkc_value_set(&cur, r->cas->value.data, r->cas->value.len,
                              r->cas->revision, 0);
                curp = &cur;
            } else {
                res.revision = r->cas->revision;
            }
            break;
        default:
            if (st == RINGKV_OK)
                st = RINGKV_PROTOCOL;
            break;
        }
    }
    ((ringkv_write_cb)op->cb)(op->arg, st, &res, curp);
}

static ringkv_status submit(struct rkc_op *op, rkc_done_fn done, void *cb,
                            void *arg)
{
    op->done = done;
    op->cb = cb;
    op->arg = arg;
    rkc_op_submit(op);
    return RINGKV_OK;
}

ringkv_status ringkv_async_get(ringkv_async_t *a, const void *key,
                               size_t klen, ringkv_consistency cons,
                               ringkv_get_cb cb, void *arg)
{
    if (a == NULL || cb == NULL || rkc_check_key(key, klen) != RINGKV_OK ||
        (unsigned)cons > RINGKV_STALE)
        return RINGKV_INVALID;
    if (a->closing)
        return RINGKV_CLOSED;
    struct rkc_op *op = rkc_op_new(a, RKC_GET, key, klen, NULL, 0, NULL, 0);
    if (op == NULL)
        return RINGKV_NO_MEMORY;
    op->cons = (uint8_t)cons;
    return submit(op, get_done, (void *)cb, arg);
}

ringkv_status ringkv_async_put(ringkv_async_t *a, const void *key,
                               size_t klen, const void *val, size_t vlen,
                               ringkv_write_cb cb, void *arg)
{
    if (a == NULL || cb == NULL || rkc_check_key(key, klen) != RINGKV_OK ||
        (val == NULL && vlen > 0))
        return RINGKV_INVALID;
    if (a->closing)
        return RINGKV_CLOSED;
    struct rkc_op *op = rkc_op_new(a, RKC_PUT, key, klen, val, vlen, NULL, 0);
    if (op == NULL)
        return RINGKV_NO_MEMORY;
    return submit(op, write_done, (void *)cb, arg);
}

ringkv_status ringkv_async_del(ringkv_async_t *a, const void *key,
                               size_t klen, ringkv_write_cb cb, void *arg)
{
    if (a == NULL || cb == NULL || rkc_check_key(key, klen) != RINGKV_OK)
        return RINGKV_INVALID;
    if (a->closing)
        return RINGKV_CLOSED;
    struct rkc_op *op = rkc_op_new(a, RKC_DEL, key, klen, NULL, 0, NULL, 0);
    if (op == NULL)
        return RINGKV_NO_MEMORY;
    return submit(op, write_done, (void *)cb, arg);
}

ringkv_status ringkv_async_cas(ringkv_async_t *a, const void *key,
                               size_t klen, const ringkv_expect *e,
                               const void *nv, size_t nvlen, bool del,
                               ringkv_write_cb cb, void *arg)
{
    if (a == NULL || cb == NULL || e == NULL ||
        rkc_check_key(key, klen) != RINGKV_OK ||
        (unsigned)e->kind > RINGKV_EXPECT_ABSENT ||
        (nv == NULL && nvlen > 0) ||
        (e->kind == RINGKV_EXPECT_VALUE && e->value == NULL && e->vlen > 0))
        return RINGKV_INVALID;
    if (a->closing)
        return RINGKV_CLOSED;
    size_t evlen = e->kind == RINGKV_EXPECT_VALUE ? e->vlen : 0;
    struct rkc_op *op =
        rkc_op_new(a, RKC_CAS, key, klen, nv, nvlen, e->value, evlen);
    if (op == NULL)
        return RINGKV_NO_MEMORY;
    op->expect_kind = (uint8_t)e->kind;
    op->expect_rev = e->revision;
    op->del = del;
    return submit(op, write_done, (void *)cb, arg);
}

/* ========================================================= blocking API */

struct ringkv {
    uv_loop_t loop;
    struct ringkv_async a;
};

/* What a blocking call waits for. */
struct wait {
    bool done;
    ringkv_status st;
    ringkv_value *val;   /* get: the value; cas: the current one */
    ringkv_write_result *res;
    Ringkv__Response *resp; /* raw calls: a copy of the answer */
    ringkv_kvs *kvs;     /* scan */
    uint32_t pending;    /* fan-out calls still running */
};

static void run_until(struct ringkv *c, const bool *done)
{
    while (!*done)
        uv_run(&c->loop, UV_RUN_ONCE);
}

ringkv_status ringkv_open(const ringkv_options *o, ringkv_t **out)
{
    if (out == NULL)
        return RINGKV_INVALID;
    *out = NULL;
    struct ringkv *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return RINGKV_NO_MEMORY;
    if (uv_loop_init(&c->loop) != 0) {
        free(c);
        return RINGKV_INTERNAL;
    }
    ringkv_status st = rkc_async_init(&c->a, &c->loop, o);
    if (st != RINGKV_OK) {
        uv_loop_close(&c->loop);
        free(c);
        return st;
    }
    *out = c;
    return RINGKV_OK;
}

static void set_true(void *arg)
{
    *(bool *)arg = true;
}

void ringkv_close(ringkv_t *c)
{
    if (c == NULL)
        return;
    bool done = false;
    rkc_async_shutdown(&c->a, set_true, &done);
    run_until(c, &done);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    rkc_async_free_state(&c->a); /* shutdown leaves it to us */
    uv_loop_close(&c->loop);
    free(c);
}

const char *ringkv_last_error(ringkv_t *c)
{
    return c != NULL ? c->a.last_error : "";
}

void ringkv_get_stats(ringkv_t *c, ringkv_stats *out)
{
    rkc_stats(&c->a, out);
}

ringkv_breaker_state ringkv_breaker(ringkv_t *c, uint64_t node_id)
{
    return ringkv_async_breaker(&c->a, node_id);
}

void ringkv_test_drop_replies(ringkv_t *c, unsigned n)
{
    c->a.drop_replies = n;
}

static void sync_get_cb(void *arg, ringkv_status st, const ringkv_value *v)
{
    struct wait *w = arg;
    w->st = st;
    if (st == RINGKV_OK && w->val != NULL) {
        ProtobufCBinaryData b = {v->len, v->data};
        if (value_copy(w->val, &b, v->revision, v->create_revision) != 0)
            w->st = RINGKV_NO_MEMORY;
    }
    w->done = true;
}

ringkv_status ringkv_get(ringkv_t *c, const void *key, size_t klen,
                         ringkv_consistency cons, ringkv_value *out)
{
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    struct wait w = {.val = out};
    ringkv_status st =
        c == NULL ? RINGKV_INVALID
                  : ringkv_async_get(&c->a, key, klen, cons, sync_get_cb, &w);
    if (st != RINGKV_OK)
        return st;
    run_until(c, &w.done);
    return w.st;
}

static void sync_write_cb(void *arg, ringkv_status st,
                          const ringkv_write_result *res,
                          const ringkv_value *cur)
{
    struct wait *w = arg;
    w->st = st;
    if (w->res != NULL && res != NULL)
        *w->res = *res;
    if (cur != NULL && w->val != NULL) {
        ProtobufCBinaryData b = {cur->len, cur->data};
        if (value_copy(w->val, &b, cur->revision, 0) != 0)
            w->st = RINGKV_NO_MEMORY;
    }
    w->done = true;
}

ringkv_status ringkv_put(ringkv_t *c, const void *key, size_t klen,
                         const void *val, size_t vlen,
                         ringkv_write_result *res)
{
    struct wait w = {.res = res};
    ringkv_status st = c == NULL ? RINGKV_INVALID
                                 : ringkv_async_put(&c->a, key, klen, val,
                                                    vlen, sync_write_cb, &w);
    if (st != RINGKV_OK)
        return st;
    run_until(c, &w.done);
    return w.st;
}

ringkv_status ringkv_del(ringkv_t *c, const void *key, size_t klen,
                         ringkv_write_result *res)
{
    struct wait w = {.res = res};
    ringkv_status st =
        c == NULL ? RINGKV_INVALID
                  : ringkv_async_del(&c->a, key, klen, sync_write_cb, &w);
    if (st != RINGKV_OK)
        return st;
    run_until(c, &w.done);
    return w.st;
}

ringkv_status ringkv_cas(ringkv_t *c, const void *key, size_t klen,
                         const ringkv_expect *e, const void *nv, size_t nvlen,
                         bool del, ringkv_write_result *res,
                         ringkv_value *cur)
{
    if (cur != NULL)
        memset(cur, 0, sizeof(*cur));
    struct wait w = {.res = res, .val = cur};
    ringkv_status st =
        c == NULL ? RINGKV_INVALID
                  : ringkv_async_cas(&c->a, key, klen, e, nv, nvlen, del,
                                     sync_write_cb, &w);
    if (st != RINGKV_OK)
        return st;
    run_until(c, &w.done);
    return w.st;
}

/* ------------------------------------------------ raw (admin) requests */

/* Completion of a request whose whole answer the caller wants: keeps a
 * copy of the Response (packed and unpacked again: the engine frees its
 * own right after this returns). */
static void raw_done(struct rkc_op *op, ringkv_status st,
                     const Ringkv__Response *r)
{
    struct wait *w = op->arg;
    w->st = st;
    if (r != NULL && w->resp == NULL) {
        uint8_t *buf = NULL;
        size_t len = 0;
        ProtobufCMessage *m = NULL;
        if (rk_proto_pack((const ProtobufCMessage *)r, 0, &buf, &len) == 0 &&
            rk_proto_unpack(&ringkv__response__descriptor, buf, len, 0, &m) ==
                0)
            w->resp = (Ringkv__Response *)m;
        free(buf);
    }
    if (w->pending > 0)
        w->pending--;
    w->done = w->pending == 0;
}

static ringkv_status raw_call(struct ringkv *c, struct rkc_op *op,
                             struct wait *w)
{
    if (op == NULL)
        return RINGKV_NO_MEMORY;
    w->pending = 1;
    submit(op, raw_done, NULL, w);
    run_until(c, &w->done);
    return w->st;
}

static void raw_free(struct wait *w)
{
    if (w->resp != NULL)
        rk_proto_free((ProtobufCMessage *)w->resp);
    w->resp = NULL;
}

static void node_info_from(ringkv_node_info *d, const Ringkv__NodeInfo *s)
{
    d->id = s->id;
    snprintf(d->client_addr, sizeof(d->client_addr), "%s",
             s->client_addr ? s->client_addr : "");
    snprintf(d->peer_addr, sizeof(d->peer_addr), "%s",
             s->peer_addr ? s->peer_addr : "");
    d->state = s->state;
}

void ringkv_shard_map_free(ringkv_shard_map *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->n_shards; i++) {
        free(m->shards[i].replicas);
        free(m->shards[i].learners);
    }
    free(m->shards);
    free(m->nodes);
    memset(m, 0, sizeof(*m));
}

static uint64_t *ids_copy(const uint64_t *src, size_t n)
{
    uint64_t *p = calloc(n + 1, sizeof(*p));
    if (p != NULL && n > 0)
        memcpy(p, src, n * sizeof(*p));
    return p;
}

ringkv_status ringkv_get_shard_map(ringkv_t *c, ringkv_shard_map *out)
{
    if (c == NULL || out == NULL)
        return RINGKV_INVALID;
    memset(out, 0, sizeof(*out));
    struct wait w = {0};
    ringkv_status st = raw_call(
        c, rkc_op_new(&c->a, RKC_MAP, NULL, 0, NULL, 0, NULL, 0), &w);
    if (st == RINGKV_OK && (w.resp == NULL || w.resp->result_case !=
                                                  RINGKV__RESPONSE__RESULT_SHARD_MAP))
        st = RINGKV_PROTOCOL;
    if (st != RINGKV_OK) {
        raw_free(&w);
        return st;
    }
    const Ringkv__ShardMap *m = w.resp->shard_map;
    out->cluster_id = m->cluster_id;
    out->epoch = m->epoch;
    out->nodes = calloc(m->n_nodes + 1, sizeof(*out->nodes));
    out->shards = calloc(m->n_shards + 1, sizeof(*out->shards));
    if (out->nodes == NULL || out->shards == NULL) {
        ringkv_shard_map_free(out);
        raw_free(&w);
        return RINGKV_NO_MEMORY;
    }
    out->n_nodes = m->n_nodes;
    for (size_t i = 0; i < m->n_nodes; i++)
        node_info_from(&out->nodes[i], m->nodes[i]);
    out->n_shards = m->n_shards;
    for (size_t i = 0; i < m->n_shards; i++) {
        const Ringkv__ShardInfo *si = m->shards[i];
        ringkv_shard_info *d = &out->shards[i];
        d->id = si->id;
        struct rkc_shard *cached = rkc_shard_by_id(&c->a, si->id);
        d->leader = cached != NULL ? cached->leader : 0;
        d->replicas = ids_copy(si->replicas, si->n_replicas);
        d->n_replicas = si->n_replicas;
        d->learners = ids_copy(si->learners, si->n_learners);
        d->n_learners = si->n_learners;
        d->split_phase = si->split != NULL ? (int)si->split->phase : 0;
        for (size_t k = 0; k < m->n_points; k++)
            if (m->points[k]->shard == si->id)
                d->n_points++;
    }
    /* Ring shares: each point owns the arc from the previous point. */
    for (size_t k = 0; k < m->n_points; k++) {
        uint64_t prev = m->points[k == 0 ? m->n_points - 1 : k - 1]->hash;
        double arc = (double)(m->points[k]->hash - prev) / 18446744073709551616.0;
        if (m->n_points == 1)
            arc = 1.0;
        for (size_t i = 0; i < out->n_shards; i++)
            if (out->shards[i].id == m->points[k]->shard)
                out->shards[i].ring_share += arc;
    }
    raw_free(&w);
    return RINGKV_OK;
}

ringkv_status ringkv_member_list(ringkv_t *c, ringkv_node_info **nodes,
                                 size_t *n)
{
    if (c == NULL || nodes == NULL || n == NULL)
        return RINGKV_INVALID;
    *nodes = NULL;
    *n = 0;
    struct wait w = {0};
    ringkv_status st = raw_call(
        c, rkc_op_new(&c->a, RKC_MEMBER_LIST, NULL, 0, NULL, 0, NULL, 0), &w);
    if (st == RINGKV_OK && (w.resp == NULL || w.resp->result_case !=
                                                  RINGKV__RESPONSE__RESULT_MEMBERS))
        st = RINGKV_PROTOCOL;
    if (st == RINGKV_OK) {
        const Ringkv__MemberListResult *ml = w.resp->members;
        *nodes = calloc(ml->n_nodes + 1, sizeof(**nodes));
        if (*nodes == NULL) {
            st = RINGKV_NO_MEMORY;
        } else {
            for (size_t i = 0; i < ml->n_nodes; i++)
                node_info_from(&(*nodes)[i], ml->nodes[i]);
            *n = ml->n_nodes;
        }
    }
    raw_free(&w);
    return st;
}

static ringkv_status admin_call(struct ringkv *c, struct rkc_op *op,
                                ringkv_admin_result *res)
{
    if (res != NULL)
        memset(res, 0, sizeof(*res));
    struct wait w = {0};
    ringkv_status st = raw_call(c, op, &w);
    if (w.resp != NULL) {
        if (st == RINGKV_INVALID)
            st = RINGKV_REFUSED;
        if (res != NULL) {
            if (w.resp->result_case == RINGKV__RESPONSE__RESULT_ADMIN) {
                res->epoch = w.resp->admin->epoch;
                res->shard = w.resp->admin->shard;
                res->index = w.resp->admin->index;
            }
            snprintf(res->message, sizeof(res->message), "%s",
                     w.resp->message != NULL ? w.resp->message : "");
        }
    }
    raw_free(&w);
    return st;
}

ringkv_status ringkv_member_add(ringkv_t *c, uint64_t node_id,
                                const char *peer_addr,
                                const char *client_addr,
                                ringkv_admin_result *res)
{
    if (c == NULL || peer_addr == NULL || client_addr == NULL ||
        strlen(peer_addr) >= RKC_ADDR_MAX ||
        strlen(client_addr) >= RKC_ADDR_MAX)
        return RINGKV_INVALID;
    struct rkc_op *op =
        rkc_op_new(&c->a, RKC_MEMBER_ADD, NULL, 0, NULL, 0, NULL, 0);
    if (op != NULL) {
        op->arg_node = node_id;
        snprintf(op->addr1, sizeof(op->addr1), "%s", peer_addr);
        snprintf(op->addr2, sizeof(op->addr2), "%s", client_addr);
    }
    return admin_call(c, op, res);
}

ringkv_status ringkv_member_remove(ringkv_t *c, uint64_t node_id,
                                   ringkv_admin_result *res)
{
    if (c == NULL || node_id == 0)
        return RINGKV_INVALID;
    struct rkc_op *op =
        rkc_op_new(&c->a, RKC_MEMBER_REMOVE, NULL, 0, NULL, 0, NULL, 0);
    if (op != NULL)
        op->arg_node = node_id;
    return admin_call(c, op, res);
}

ringkv_status ringkv_leader_transfer(ringkv_t *c, uint64_t shard,
                                     uint64_t to_node,
                                     ringkv_admin_result *res)
{
    if (c == NULL)
        return RINGKV_INVALID;
    struct rkc_op *op =
        rkc_op_new(&c->a, RKC_TRANSFER, NULL, 0, NULL, 0, NULL, 0);
    if (op != NULL) {
        op->shard = shard;
        op->arg_node = to_node;
    }
    return admin_call(c, op, res);
}

ringkv_status ringkv_shard_split(ringkv_t *c, uint64_t shard,
                                 ringkv_admin_result *res)
{
    if (c == NULL || shard == 0)
        return RINGKV_INVALID;
    struct rkc_op *op = rkc_op_new(&c->a, RKC_SPLIT, NULL, 0, NULL, 0, NULL, 0);
    if (op != NULL) {
        /* The meta leader (shard 0) decides splits: route there. */
        op->shard = 0;
        op->arg_node = shard;
    }
    return admin_call(c, op, res);
}

/* --------------------------------------------------------------- status */

void ringkv_cluster_status_free(ringkv_cluster_status *s)
{
    if (s == NULL)
        return;
    for (size_t i = 0; i < s->n_nodes; i++)
        free(s->nodes[i].shards);
    free(s->nodes);
    memset(s, 0, sizeof(*s));
}

struct status_one {
    struct wait *w;
    ringkv_node_status *ns;
};

static void status_done(struct rkc_op *op, ringkv_status st,
                        const Ringkv__Response *r)
{
    struct status_one *one = op->arg;
    ringkv_node_status *ns = one->ns;
    ns->st = st;
    if (st == RINGKV_OK && r != NULL &&
        r->result_case == RINGKV__RESPONSE__RESULT_NODE_STATUS) {
        const Ringkv__StatusResult *s = r->node_status;
        ns->node_id = s->node_id;
        ns->cluster_id = s->cluster_id;
        ns->uptime_ms = s->uptime_ms;
        snprintf(ns->version, sizeof(ns->version), "%s",
                 s->version != NULL ? s->version : "");
        ns->shards = calloc(s->n_shards + 1, sizeof(*ns->shards));
        if (ns->shards == NULL) {
            ns->st = RINGKV_NO_MEMORY;
        } else {
            ns->n_shards = s->n_shards;
            for (size_t i = 0; i < s->n_shards; i++) {
                const Ringkv__ShardStatus *x = s->shards[i];
                ns->shards[i] = (ringkv_shard_status){
                    x->shard, x->role, x->leader, x->term, x->commit,
                    x->applied};
            }
        }
    } else if (st == RINGKV_OK) {
        ns->st = RINGKV_PROTOCOL;
    }
    if (--one->w->pending == 0)
        one->w->done = true;
}

ringkv_status ringkv_get_cluster_status(ringkv_t *c, ringkv_cluster_status *out)
{
    if (c == NULL || out == NULL)
        return RINGKV_INVALID;
    memset(out, 0, sizeof(*out));
    struct ringkv_async *a = &c->a;
    if (!a->have_map) {
        /* Learn the members first; without a map, ask the endpoints. */
        ringkv_shard_map m;
        if (ringkv_get_shard_map(c, &m) == RINGKV_OK)
            ringkv_shard_map_free(&m);
    }
    uint32_t n = 0;
    struct rkc_node **targets = calloc(a->n_nodes + 1, sizeof(*targets));
    if (targets == NULL)
        return RINGKV_NO_MEMORY;
    for (uint32_t i = 0; i < a->n_nodes; i++)
        if (a->nodes[i]->in_map || !a->have_map)
            targets[n++] = a->nodes[i];
    out->nodes = calloc(n + 1, sizeof(*out->nodes));
    struct status_one *ones = calloc(n + 1, sizeof(*ones));
    if (out->nodes == NULL || ones == NULL) {
        free(targets);
        free(ones);
        ringkv_cluster_status_free(out);
        return RINGKV_NO_MEMORY;
    }
    out->n_nodes = n;
    struct wait w = {0};
    w.pending = n;
    for (uint32_t i = 0; i < n; i++) {
        ringkv_node_status *ns = &out->nodes[i];
        snprintf(ns->addr, sizeof(ns->addr), "%s", targets[i]->addr);
        ns->node_id = targets[i]->id;
        ones[i] = (struct status_one){&w, ns};
        struct rkc_op *op =
            rkc_op_new(a, RKC_STATUS, NULL, 0, NULL, 0, NULL, 0);
        if (op == NULL) {
            ns->st = RINGKV_NO_MEMORY;
            w.pending--;
            continue;
        }
        op->fixed = true;
        op->no_retry = true;
        op->node = targets[i];
        submit(op, status_done, NULL, &ones[i]);
    }
    w.done = w.pending == 0;
    run_until(c, &w.done);
    free(ones);
    free(targets);
    return RINGKV_OK;
}

/* ----------------------------------------------------------------- scan */

struct scan_one {
    struct wait *w;
    struct ringkv *c;
    uint64_t shard;
    size_t limit;
    ringkv_kvs got;
    ringkv_status st;
};

static void scan_done(struct rkc_op *op, ringkv_status st,
                      const Ringkv__Response *r);

static ringkv_status scan_submit(struct scan_one *s, const void *prefix,
                                 size_t plen, const void *after, size_t alen,
                                 bool keys_only, uint8_t cons)
{
    struct rkc_op *op =
        rkc_op_new(&s->c->a, RKC_SCAN, prefix, plen, NULL, 0, NULL, 0);
    if (op == NULL)
        return RINGKV_NO_MEMORY;
    if (alen > 0) {
        if ((op->start_after = malloc(alen)) == NULL) {
            rkc_op_free(op);
            return RINGKV_NO_MEMORY;
        }
        memcpy(op->start_after, after, alen);
        op->salen = alen;
    }
    op->shard = s->shard;
    op->limit = (uint32_t)(s->limit - s->got.n);
    op->keys_only = keys_only;
    op->cons = cons;
    submit(op, scan_done, NULL, s);
    return RINGKV_OK;
}

static void scan_done(struct rkc_op *op, ringkv_status st,
                      const Ringkv__Response *r)
{
    struct scan_one *s = op->arg;
    if (st == RINGKV_OK && (r == NULL || r->result_case !=
                                             RINGKV__RESPONSE__RESULT_SCAN))
        st = RINGKV_PROTOCOL;
    bool again = false;
    if (st == RINGKV_OK) {
        const Ringkv__ScanResult *sr = r->scan;
        ringkv_kv *items = realloc(s->got.items, (s->got.n + sr->n_items + 1) *
                                                     sizeof(*items));
        if (items == NULL) {
            st = RINGKV_NO_MEMORY;
        } else {
            s->got.items = items;
            for (size_t i = 0; i < sr->n_items && s->got.n < s->limit; i++) {
                const Ringkv__KeyValue *kv = sr->items[i];
                ringkv_kv *d = &s->got.items[s->got.n];
                memset(d, 0, sizeof(*d));
                ProtobufCBinaryData kb = kv->key;
                ringkv_value kval;
                if (value_copy(&kval, &kb, 0, 0) != 0 ||
                    value_copy(&d->value, &kv->value, kv->revision,
                               kv->create_revision) != 0) {
                    st = RINGKV_NO_MEMORY;
                    break;
                }
                d->key = kval.data;
                d->klen = kval.len;
                s->got.n++;
            }
            again = st == RINGKV_OK && sr->more && s->got.n < s->limit &&
                    s->got.n > 0;
        }
    }
    if (again) {
        const ringkv_kv *last = &s->got.items[s->got.n - 1];
        if (scan_submit(s, op->key, op->klen, last->key, last->klen,
                        op->keys_only, op->cons) == RINGKV_OK)
            return;
        st = RINGKV_NO_MEMORY;
    }
    s->st = st;
    if (--s->w->pending == 0)
        s->w->done = true;
}

static int kv_cmp(const ringkv_kv *x, const ringkv_kv *y)
{
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = memcmp(x->key, y->key, n);
    if (c != 0)
        return c;
    return x->klen < y->klen ? -1 : x->klen > y->klen;
}

ringkv_status ringkv_scan(ringkv_t *c, const void *prefix, size_t plen,
                          const void *start_after, size_t salen, size_t limit,
                          bool keys_only, ringkv_kvs *out)
{
    if (c == NULL || out == NULL || (prefix == NULL && plen > 0) ||
        (start_after == NULL && salen > 0))
        return RINGKV_INVALID;
    memset(out, 0, sizeof(*out));
    if (limit == 0)
        limit = 1000;
    struct ringkv_async *a = &c->a;
    if (!a->have_map) {
        ringkv_shard_map m;
        ringkv_status st = ringkv_get_shard_map(c, &m);
        if (st != RINGKV_OK)
            return st;
        ringkv_shard_map_free(&m);
        if (!a->have_map)
            return RINGKV_UNAVAILABLE;
    }
    uint32_t n = 0;
    struct scan_one *ss = calloc(a->n_shards + 1, sizeof(*ss));
    if (ss == NULL)
        return RINGKV_NO_MEMORY;
    struct wait w = {0};
    for (uint32_t i = 0; i < a->n_shards; i++) {
        if (a->shards[i].id == 0)
            continue; /* the meta shard holds no user keys */
        ss[n] = (struct scan_one){.w = &w, .c = c,
                                  .shard = a->shards[i].id, .limit = limit};
        n++;
    }
    w.pending = n;
    ringkv_status st = RINGKV_OK;
    for (uint32_t i = 0; i < n; i++) {
        if (scan_submit(&ss[i], prefix, plen, start_after, salen, keys_only,
                        RINGKV_LINEARIZABLE) != RINGKV_OK) {
            ss[i].st = RINGKV_NO_MEMORY;
            w.pending--;
        }
    }
    w.done = w.pending == 0;
    run_until(c, &w.done);
    /* Merge: every shard's first `limit` keys hold the overall first. */
    size_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (ss[i].st != RINGKV_OK && st == RINGKV_OK)
            st = ss[i].st;
        total += ss[i].got.n;
    }
    if (st == RINGKV_OK) {
        out->items = calloc(total + 1, sizeof(*out->items));
        if (out->items == NULL)
            st = RINGKV_NO_MEMORY;
    }
    size_t *pos = calloc(n + 1, sizeof(*pos));
    if (pos == NULL)
        st = RINGKV_NO_MEMORY;
    while (st == RINGKV_OK && out->n < limit) {
        int best = -1;
        for (uint32_t i = 0; i < n; i++)
            if (pos[i] < ss[i].got.n &&
                (best < 0 || kv_cmp(&ss[i].got.items[pos[i]],
                                    &ss[best].got.items[pos[best]]) < 0))
                best = (int)i;
        if (best < 0)
            break;
        out->items[out->n++] = ss[best].got.items[pos[best]];
        memset(&ss[best].got.items[pos[best]], 0, sizeof(ringkv_kv));
        pos[best]++;
    }
    free(pos);
    for (uint32_t i = 0; i < n; i++) {
        /* What was not taken (and the taken, now empty, slots). */
        ringkv_kvs_free(&ss[i].got);
    }
    free(ss);
    if (st != RINGKV_OK)
        ringkv_kvs_free(out);
    return st;
}
