/* Client protocol codec: proto/ringkv.proto Request/Response <-> srv forms. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "rk_err.h"
#include "rk_proto.h"
#include "srv_client.h"

/* ---------------------------------------------------------------- decode */

/* What a decoded request owns: the unpacked message, plus the scan start
 * key derived from start_after. */
struct owner {
    ProtobufCMessage *msg;
    uint8_t *start;
};

void srv_proto_request_free(void *owner)
{
    struct owner *o = owner;
    if (o == NULL)
        return;
    if (o->msg != NULL)
        rk_proto_free(o->msg);
    free(o->start);
    free(o);
}

static void bin(const ProtobufCBinaryData *b, const uint8_t **p, uint32_t *n)
{
    *p = b->data;
    *n = (uint32_t)b->len;
}

int srv_proto_request_decode(const uint8_t *buf, size_t len,
                             struct srv_request *out, void **owner_out,
                             char *errmsg)
{
    memset(out, 0, sizeof(*out));
    out->op = SRV_OP_OTHER;
    struct owner *o = calloc(1, sizeof(*o));
    *owner_out = o;
    if (o == NULL)
        return RK_ENOMEM;
    int rv = rk_proto_unpack(&ringkv__request__descriptor, buf, len, 0,
                             &o->msg);
    if (rv != 0)
        return rv == RK_ENOMEM ? rv : RK_EPROTO;
    const Ringkv__Request *rq = (const Ringkv__Request *)o->msg;
    out->request_id = rq->request_id;
    out->client_id = rq->client_id;
    out->seq = rq->seq;
    out->shard_epoch = rq->shard_epoch;
    out->timeout_ms = rq->timeout_ms;
    out->consistency = (uint8_t)rq->consistency;
    if ((rv = rk_proto_request_check(rq, errmsg)) != 0)
        return RK_EINVAL;
    switch (rq->op_case) {
    case RINGKV__REQUEST__OP_GET:
        out->op = SRV_OP_GET;
        bin(&rq->get->key, &out->key, &out->klen);
        break;
    case RINGKV__REQUEST__OP_PUT:
        out->op = SRV_OP_PUT;
        bin(&rq->put->key, &out->key, &out->klen);
        bin(&rq->put->value, &out->value, &out->vlen);
        break;
    case RINGKV__REQUEST__OP_DELETE:
        out->op = SRV_OP_DELETE;
        bin(&rq->delete_->key, &out->key, &out->klen);
        break;
    case RINGKV__REQUEST__OP_CAS: {
        const Ringkv__CasRequest *c = rq->cas;
        out->op = SRV_OP_CAS;
        bin(&c->key, &out->key, &out->klen);
        bin(&c->new_value, &out->value, &out->vlen);
        out->cas_delete = c->delete_on_match;
        switch (c->expect_case) {
        case RINGKV__CAS_REQUEST__EXPECT_EXPECT_REVISION:
            if (c->expect_revision == 0) {
                rk_errf(errmsg, "cas expect_revision 0 never matches; use "
                        "expect_absent");
                return RK_EINVAL;
            }
            out->cas_by_revision = true;
            out->expect_rev = c->expect_revision;
            break;
        case RINGKV__CAS_REQUEST__EXPECT_EXPECT_ABSENT:
            out->cas_by_revision = true;
            out->expect_rev = 0;
            break;
        default:
            bin(&c->expect_value, &out->expect, &out->elen);
            break;
        }
        break;
    }
    case RINGKV__REQUEST__OP_SCAN: {
        const Ringkv__ScanRequest *sc = rq->scan;
        out->op = SRV_OP_SCAN;
        out->shard = sc->shard;
        bin(&sc->prefix, &out->key, &out->klen);
        out->limit = sc->limit;
        out->keys_only = sc->keys_only;
        if (sc->start_after.len > 0) {
            /* The smallest key after start_after is start_after + 0x00. */
            o->start = malloc(sc->start_after.len + 1);
            if (o->start == NULL)
                return RK_ENOMEM;
            memcpy(o->start, sc->start_after.data, sc->start_after.len);
            o->start[sc->start_after.len] = 0;
            out->start = o->start;
            out->slen = (uint32_t)sc->start_after.len + 1;
        }
        break;
    }
    case RINGKV__REQUEST__OP_STATUS:
        out->op = SRV_OP_STATUS;
        break;
    case RINGKV__REQUEST__OP_GET_SHARD_MAP:
        out->op = SRV_OP_SHARD_MAP;
        break;
    case RINGKV__REQUEST__OP_MEMBER_LIST:
        out->admin = SRV_ADMIN_MEMBER_LIST;
        break;
    case RINGKV__REQUEST__OP_TRANSFER_LEADER:
        out->admin = SRV_ADMIN_TRANSFER_LEADER;
        out->shard = rq->transfer_leader->shard;
        out->to_node = rq->transfer_leader->to_node;
        break;
    case RINGKV__REQUEST__OP_MEMBER_ADD:
        out->admin = SRV_ADMIN_MEMBER_ADD;
        out->to_node = rq->member_add->node_id;
        out->shard = rq->member_add->shard;
        out->peer_addr = rq->member_add->peer_addr;
        out->client_addr = rq->member_add->client_addr;
        break;
    case RINGKV__REQUEST__OP_MEMBER_REMOVE:
        out->admin = SRV_ADMIN_MEMBER_REMOVE;
        out->to_node = rq->member_remove->node_id;
        out->shard = rq->member_remove->shard;
        break;
    case RINGKV__REQUEST__OP_SPLIT_SHARD:
        out->admin = SRV_ADMIN_SPLIT;
        out->shard = rq->split_shard->shard;
        out->to_node = rq->split_shard->new_shard;
        out->split_finish = rq->split_shard->finish;
        break;
    default:
        out->admin = SRV_ADMIN_UNSUPPORTED;
        break;
    }
    return 0;
}

/* ---------------------------------------------------------------- encode */

int srv_proto_wire_status(int err)
{
    return (int)rk_status_from_err(err);
}

static ProtobufCBinaryData to_bin(const void *p, size_t n)
{
    ProtobufCBinaryData b;
    b.data = (uint8_t *)(n > 0 ? p : NULL);
    b.len = n;
    return b;
}

/* The status/shard-map parts are built in arrays allocated here and freed
 * after packing. */
struct scratch {
    void *blocks[8];
    unsigned n;
};

static void *scratch_alloc(struct scratch *s, size_t size)
{
    if (s->n == sizeof(s->blocks) / sizeof(s->blocks[0]))
        return NULL;
    void *p = calloc(1, size == 0 ? 1 : size);
    if (p != NULL)
        s->blocks[s->n++] = p;
    return p;
}

static void scratch_free(struct scratch *s)
{
    for (unsigned i = 0; i < s->n; i++)
        free(s->blocks[i]);
}

static int fill_shard_status(const struct srv_response *r, struct scratch *sc,
                             Ringkv__ShardStatus ***out)
{
    Ringkv__ShardStatus *arr =
        scratch_alloc(sc, r->n_shards * sizeof(*arr));
    Ringkv__ShardStatus **ptrs =
        scratch_alloc(sc, r->n_shards * sizeof(*ptrs));
    if (arr == NULL || ptrs == NULL)
        return RK_ENOMEM;
    for (uint32_t i = 0; i < r->n_shards; i++) {
        const struct srv_shard_info *si = &r->shards[i];
        Ringkv__ShardStatus x = RINGKV__SHARD_STATUS__INIT;
        x.shard = si->shard;
        x.leader = si->leader;
        x.term = si->term;
        x.commit = si->commit;
        x.applied = si->applied;
        x.role = si->role <= 4 ? (Ringkv__ShardStatus__Role)si->role
                               : RINGKV__SHARD_STATUS__ROLE__NONE;
        x.n_replicas = si->n_replicas;
        x.replicas = (uint64_t *)si->replicas;
        x.n_learners = si->n_learners;
        x.learners = (uint64_t *)si->learners;
        arr[i] = x;
        ptrs[i] = &arr[i];
    }
    *out = ptrs;
    return 0;
}

static int fill_nodes(const struct srv_response *r, struct scratch *sc,
                      Ringkv__NodeInfo ***out)
{
    Ringkv__NodeInfo *arr = scratch_alloc(sc, r->n_nodes * sizeof(*arr));
    Ringkv__NodeInfo **ptrs = scratch_alloc(sc, r->n_nodes * sizeof(*ptrs));
    if (arr == NULL || ptrs == NULL)
        return RK_ENOMEM;
    for (uint32_t i = 0; i < r->n_nodes; i++) {
        Ringkv__NodeInfo x = RINGKV__NODE_INFO__INIT;
        x.id = r->nodes[i].id;
        x.client_addr = (char *)(r->nodes[i].client_addr != NULL
                                     ? r->nodes[i].client_addr
                                     : "");
        x.peer_addr = (char *)(r->nodes[i].peer_addr != NULL
                                   ? r->nodes[i].peer_addr
                                   : "");
        /* shard_node_state -> NodeInfo.State (ACTIVE 0, LEAVING 2,
         * REMOVED 3). */
        x.state = r->nodes[i].state == 2   ? RINGKV__NODE_INFO__STATE__LEAVING
                  : r->nodes[i].state == 3 ? RINGKV__NODE_INFO__STATE__REMOVED
                                           : RINGKV__NODE_INFO__STATE__ACTIVE;
        arr[i] = x;
        ptrs[i] = &arr[i];
    }
    *out = ptrs;
    return 0;
}

int srv_proto_response_encode(const struct srv_response *r, uint8_t **out,
                              size_t *len)
{
    Ringkv__Response resp = RINGKV__RESPONSE__INIT;
    Ringkv__LeaderHint hint = RINGKV__LEADER_HINT__INIT;
    Ringkv__GetResult get = RINGKV__GET_RESULT__INIT;
    Ringkv__PutResult put = RINGKV__PUT_RESULT__INIT;
    Ringkv__DeleteResult del = RINGKV__DELETE_RESULT__INIT;
    Ringkv__CasResult cas = RINGKV__CAS_RESULT__INIT;
    Ringkv__ScanResult scan = RINGKV__SCAN_RESULT__INIT;
    Ringkv__StatusResult st = RINGKV__STATUS_RESULT__INIT;
    Ringkv__ShardMap map = RINGKV__SHARD_MAP__INIT;
    Ringkv__MemberListResult members = RINGKV__MEMBER_LIST_RESULT__INIT;
    Ringkv__AdminResult admin = RINGKV__ADMIN_RESULT__INIT;
    struct scratch sc = {0};
    int rv = 0;

    resp.request_id = r->request_id;
    resp.status = rk_status_from_err(r->status);
    if (r->message != NULL)
        resp.message = (char *)r->message;
    else if (r->status != 0)
        resp.message = (char *)rk_strerror(r->status);
    resp.epoch = r->epoch;
    if (r->status == RK_ENOTLEADER && r->leader_id != 0) {
        hint.node_id = r->leader_id;
        hint.address = (char *)(r->leader_hint != NULL ? r->leader_hint
                                                       : "");
        resp.leader_hint = &hint;
    }
    bool ok = r->status == 0;
    switch (r->op) {
    case SRV_OP_GET:
        if (ok || r->status == RK_ENOTFOUND) {
            get.found = r->found;
            get.value = to_bin(r->value, r->vlen);
            get.revision = r->revision;
            get.create_revision = r->create_revision;
            resp.result_case = RINGKV__RESPONSE__RESULT_GET;
            resp.get = &get;
        }
        break;
    case SRV_OP_PUT:
        if (ok) {
            put.revision = r->revision;
            put.prev_revision = r->prev_revision;
            put.duplicate = r->duplicate;
            resp.result_case = RINGKV__RESPONSE__RESULT_PUT;
            resp.put = &put;
        }
        break;
    case SRV_OP_DELETE:
        if (ok || r->status == RK_ENOTFOUND) {
            del.found = ok;
            del.revision = r->revision;
            del.prev_revision = r->prev_revision;
            del.duplicate = r->duplicate;
            resp.result_case = RINGKV__RESPONSE__RESULT_DELETE;
            resp.delete_ = &del;
        }
        break;
    case SRV_OP_CAS:
        if (ok || r->status == RK_ECASMISMATCH) {
            cas.revision = r->revision;
            cas.found = r->found;
            cas.value = to_bin(r->value, r->vlen);
            cas.duplicate = r->duplicate;
            resp.result_case = RINGKV__RESPONSE__RESULT_CAS;
            resp.cas = &cas;
        }
        break;
    case SRV_OP_SCAN: {
        if (!ok)
            break;
        Ringkv__KeyValue *kvs = scratch_alloc(&sc, r->n_items * sizeof(*kvs));
        Ringkv__KeyValue **ptrs =
            scratch_alloc(&sc, r->n_items * sizeof(*ptrs));
        if (kvs == NULL || ptrs == NULL) {
            rv = RK_ENOMEM;
            break;
        }
        for (uint32_t i = 0; i < r->n_items; i++) {
            Ringkv__KeyValue kv = RINGKV__KEY_VALUE__INIT;
            kv.key = to_bin(r->items[i].key, r->items[i].klen);
            if (!r->keys_only)
                kv.value = to_bin(r->items[i].value, r->items[i].vlen);
            kv.revision = r->items[i].revision;
            kv.create_revision = r->items[i].create_revision;
            kvs[i] = kv;
            ptrs[i] = &kvs[i];
        }
        scan.n_items = r->n_items;
        scan.items = ptrs;
        scan.more = r->more;
        resp.result_case = RINGKV__RESPONSE__RESULT_SCAN;
        resp.scan = &scan;
        break;
    }
    case SRV_OP_STATUS:
        if (!ok)
            break;
        st.node_id = r->node_id;
        st.cluster_id = r->cluster_id;
        st.version = (char *)RINGKV_VERSION;
        st.uptime_ms = r->uptime_ms;
        st.n_data_shards = r->n_data_shards;
        st.ring_vnodes = r->ring_vnodes;
        st.ring_seed = r->ring_seed;
        if ((rv = fill_shard_status(r, &sc, &st.shards)) != 0 ||
            (rv = fill_nodes(r, &sc, &st.nodes)) != 0)
            break;
        st.n_shards = r->n_shards;
        st.n_nodes = r->n_nodes;
        resp.result_case = RINGKV__RESPONSE__RESULT_NODE_STATUS;
        resp.node_status = &st;
        break;
    case SRV_OP_SHARD_MAP: {
        if (!ok)
            break;
        map.cluster_id = r->cluster_id;
        map.epoch = r->epoch;
        map.vnodes_per_shard = r->ring_vnodes;
        map.ring_seed = r->ring_seed;
        Ringkv__RingPoint *pts =
            scratch_alloc(&sc, r->n_points * sizeof(*pts));
        Ringkv__RingPoint **pp = scratch_alloc(&sc, r->n_points * sizeof(*pp));
        Ringkv__ShardInfo *sis =
            scratch_alloc(&sc, r->n_shards * sizeof(*sis));
        Ringkv__ShardInfo **sp = scratch_alloc(&sc, r->n_shards * sizeof(*sp));
        if (pts == NULL || pp == NULL || sis == NULL || sp == NULL ||
            (rv = fill_nodes(r, &sc, &map.nodes)) != 0) {
            rv = RK_ENOMEM;
            break;
        }
        for (uint32_t i = 0; i < r->n_points; i++) {
            Ringkv__RingPoint p = RINGKV__RING_POINT__INIT;
            p.hash = r->points[i].hash;
            p.shard = r->points[i].shard;
            pts[i] = p;
            pp[i] = &pts[i];
        }
        for (uint32_t i = 0; i < r->n_shards; i++) {
            Ringkv__ShardInfo x = RINGKV__SHARD_INFO__INIT;
            x.id = r->shards[i].shard;
            x.n_replicas = r->shards[i].n_replicas;
            x.replicas = (uint64_t *)r->shards[i].replicas;
            x.n_learners = r->shards[i].n_learners;
            x.learners = (uint64_t *)r->shards[i].learners;
            if (r->shards[i].split_phase != 0) {
                Ringkv__SplitState *ss = scratch_alloc(&sc, sizeof(*ss));
                if (ss == NULL) {
                    rv = RK_ENOMEM;
                    break;
                }
                ringkv__split_state__init(ss);
                ss->phase = r->shards[i].split_phase;
                ss->new_shard = r->shards[i].split_peer;
                x.split = ss;
            }
            sis[i] = x;
            sp[i] = &sis[i];
        }
        map.n_points = r->n_points;
        map.points = pp;
        map.n_shards = r->n_shards;
        map.shards = sp;
        map.n_nodes = r->n_nodes;
        map.encoded = to_bin(r->map_blob, (uint32_t)r->map_len);
        resp.result_case = RINGKV__RESPONSE__RESULT_SHARD_MAP;
        resp.shard_map = &map;
        break;
    }
    default:
        if (!ok)
            break;
        if (r->admin == SRV_ADMIN_MEMBER_LIST) {
            if ((rv = fill_nodes(r, &sc, &members.nodes)) != 0)
                break;
            members.n_nodes = r->n_nodes;
            resp.result_case = RINGKV__RESPONSE__RESULT_MEMBERS;
            resp.members = &members;
        } else if (r->admin == SRV_ADMIN_TRANSFER_LEADER ||
                   r->admin == SRV_ADMIN_SPLIT ||
                   r->admin == SRV_ADMIN_MEMBER_ADD ||
                   r->admin == SRV_ADMIN_MEMBER_REMOVE) {
            admin.epoch = r->epoch;
            admin.shard = r->admin_shard;
            admin.index = r->admin_index;
            resp.result_case = RINGKV__RESPONSE__RESULT_ADMIN;
            resp.admin = &admin;
        }
        break;
    }
    if (rv == 0)
        rv = rk_proto_pack((const ProtobufCMessage *)&resp, 0, out, len);
    scratch_free(&sc);
    return rv;
}
