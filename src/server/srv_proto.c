/* Client protocol codec: protobuf wire format of Request and Response. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "rk_err.h"
#include "srv_client.h"

/*
 * Interim, hand-written protobuf (proto3 wire format) codec for the client
 * API, used until proto/ringkv.proto and its protobuf-c code land; this file
 * is then re-based on the generated code. The schema it implements (field
 * numbers are the contract; the Python test client in tests/e2e speaks it):
 *
 *   enum Status { OK=0 NOT_FOUND=1 NOT_LEADER=2 WRONG_SHARD=3 CAS_MISMATCH=4
 *                 TIMEOUT=5 UNAVAILABLE=6 INVALID_ARGUMENT=7 TOO_LARGE=8
 *                 INTERNAL=9 }
 *   enum Consistency { LINEARIZABLE=0 LEASE=1 STALE=2 }
 *   message Request { uint64 request_id=1; uint64 client_id=2; uint64 seq=3;
 *     uint64 shard_epoch=4; Consistency consistency=5;
 *     oneof op { Get get=10; Put put=11; Delete delete=12; Cas cas=13;
 *                Scan scan=14; Status status=15; ShardMapReq shard_map=16 } }
 *   message Get { bytes key=1 }          message Delete { bytes key=1 }
 *   message Put { bytes key=1; bytes value=2 }
 *   message Cas { bytes key=1; oneof expect { bytes expect_value=2;
 *                 uint64 expect_revision=3 }  (revision 0: must be absent)
 *                 bytes value=4; bool delete=5 }
 *   message Scan { uint64 shard=1; bytes prefix=2; bytes start=3;
 *                  uint32 limit=4 }
 *   message Response { uint64 request_id=1; Status status=2;
 *     string leader_hint=3; uint64 epoch=4; string message=5;
 *     uint64 leader_id=6;
 *     oneof result { GetResult get=10; WriteResult write=11;
 *                    ScanResult scan=12; StatusResult status=13;
 *                    ShardMap shard_map=14 } }
 *   message GetResult { bool found=1; bytes value=2; uint64 revision=3;
 *                       uint64 create_revision=4 }
 *   message WriteResult { uint64 revision=1; uint64 prev_revision=2;
 *                         bool duplicate=3 }
 *   message KeyValue { bytes key=1; bytes value=2; uint64 revision=3;
 *                      uint64 create_revision=4 }
 *   message ScanResult { repeated KeyValue items=1; bool more=2 }
 *   message ShardInfo { uint64 shard=1; uint64 leader=2; uint64 term=3;
 *     uint64 commit=4; uint64 applied=5; string role=6;
 *     repeated uint64 replicas=7 (packed) }
 *   message NodeInfo { uint64 id=1; string client_addr=2 }
 *   message StatusResult { uint64 node_id=1; uint64 cluster_id=2;
 *                          repeated ShardInfo shards=3 }
 *   message ShardMap { uint64 epoch=1; uint64 cluster_id=2; uint32 shards=3;
 *     uint32 vnodes=4; uint64 ring_seed=5; repeated ShardInfo shard_info=6;
 *     repeated NodeInfo nodes=7 }
 *
 * Decoding is bounds-checked; unknown fields are skipped (forward
 * compatibility), groups and malformed varints are RK_EPROTO.
 */

/* --------------------------------------------------------------- reading */

struct pb {
    const uint8_t *p;
    size_t len, pos;
};

static int pb_varint(struct pb *b, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (b->pos >= b->len)
            return RK_EPROTO;
        uint8_t c = b->p[b->pos++];
        if (shift == 63 && c > 1)
            return RK_EPROTO;
        v |= (uint64_t)(c & 0x7f) << shift;
        if ((c & 0x80) == 0) {
            *out = v;
            return 0;
        }
    }
    return RK_EPROTO;
}

/* Reads the next field: number, wire type, and for wire type 0 the value,
 * for wire type 2 the bytes. Other wire types (1, 5) are skipped. */
static int pb_field(struct pb *b, uint32_t *num, uint8_t *wt, uint64_t *v,
                    const uint8_t **bytes, uint32_t *blen)
{
    uint64_t tag;
    int rv = pb_varint(b, &tag);
    if (rv != 0)
        return rv;
    *num = (uint32_t)(tag >> 3);
    *wt = (uint8_t)(tag & 7);
    if (*num == 0 || tag >> 3 > 0x1fffffff)
        return RK_EPROTO;
    switch (*wt) {
    case 0:
        return pb_varint(b, v);
    case 1:
        if (b->len - b->pos < 8)
            return RK_EPROTO;
        b->pos += 8;
        return 0;
    case 5:
        if (b->len - b->pos < 4)
            return RK_EPROTO;
        b->pos += 4;
        return 0;
    case 2: {
        uint64_t n;
        if ((rv = pb_varint(b, &n)) != 0)
            return rv;
        if (n > b->len - b->pos)
            return RK_EPROTO;
        *bytes = b->p + b->pos;
        *blen = (uint32_t)n;
        b->pos += (size_t)n;
        return 0;
    }
    default:
        return RK_EPROTO;
    }
}

/* Parses the body of an operation message into rq. */
static int parse_op(struct srv_request *rq, uint32_t opnum,
                    const uint8_t *buf, uint32_t len)
{
    struct pb b = {.p = buf, .len = len};
    while (b.pos < b.len) {
        uint32_t num;
        uint8_t wt;
        uint64_t v = 0;
        const uint8_t *bytes = NULL;
        uint32_t blen = 0;
        int rv = pb_field(&b, &num, &wt, &v, &bytes, &blen);
        if (rv != 0)
            return rv;
        switch (opnum) {
        case 10: /* Get */
        case 12: /* Delete */
            if (num == 1 && wt == 2) {
                rq->key = bytes;
                rq->klen = blen;
            }
            break;
        case 11: /* Put */
            if (num == 1 && wt == 2) {
                rq->key = bytes;
                rq->klen = blen;
            } else if (num == 2 && wt == 2) {
                rq->value = bytes;
                rq->vlen = blen;
            }
            break;
        case 13: /* Cas */
            if (num == 1 && wt == 2) {
                rq->key = bytes;
                rq->klen = blen;
            } else if (num == 2 && wt == 2) {
                rq->cas_by_revision = false;
                rq->expect = bytes;
                rq->elen = blen;
            } else if (num == 3 && wt == 0) {
                rq->cas_by_revision = true;
                rq->expect_rev = v;
            } else if (num == 4 && wt == 2) {
                rq->value = bytes;
                rq->vlen = blen;
            } else if (num == 5 && wt == 0) {
                rq->cas_delete = v != 0;
            }
            break;
        case 14: /* Scan */
            if (num == 1 && wt == 0) {
                rq->shard = v;
            } else if (num == 2 && wt == 2) {
                rq->key = bytes; /* the prefix travels as the key */
                rq->klen = blen;
            } else if (num == 3 && wt == 2) {
                rq->start = bytes;
                rq->slen = blen;
            } else if (num == 4 && wt == 0) {
                rq->limit = v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
            }
            break;
        default:
            break;
        }
    }
    return 0;
}

int srv_proto_request_decode(const uint8_t *buf, size_t len,
                             struct srv_request *out, void **owner)
{
    memset(out, 0, sizeof(*out));
    *owner = NULL;
    out->op = SRV_OP__COUNT;
    struct pb b = {.p = buf, .len = len};
    bool have_op = false;
    while (b.pos < b.len) {
        uint32_t num;
        uint8_t wt;
        uint64_t v = 0;
        const uint8_t *bytes = NULL;
        uint32_t blen = 0;
        int rv = pb_field(&b, &num, &wt, &v, &bytes, &blen);
        if (rv != 0)
            return rv;
        if (wt == 0) {
            switch (num) {
            case 1: out->request_id = v; break;
            case 2: out->client_id = v; break;
            case 3: out->seq = v; break;
            case 4: out->shard_epoch = v; break;
            case 5:
                out->consistency = v <= SRV_READ_STALE ? (uint8_t)v : 0;
                break;
            default: break;
            }
        } else if (wt == 2 && num >= 10 && num <= 16) {
            static const enum srv_op ops[] = {
                SRV_OP_GET, SRV_OP_PUT, SRV_OP_DELETE, SRV_OP_CAS,
                SRV_OP_SCAN, SRV_OP_STATUS, SRV_OP_SHARD_MAP,
            };
            /* proto3 oneof: the last one wins. */
            uint64_t rid = out->request_id, cid = out->client_id;
            uint64_t seq = out->seq, ep = out->shard_epoch;
            uint8_t cons = out->consistency;
            memset(out, 0, sizeof(*out));
            out->request_id = rid;
            out->client_id = cid;
            out->seq = seq;
            out->shard_epoch = ep;
            out->consistency = cons;
            out->op = ops[num - 10];
            if ((rv = parse_op(out, num, bytes, blen)) != 0)
                return rv;
            have_op = true;
        }
    }
    if (!have_op)
        return RK_EINVAL;
    return 0;
}

void srv_proto_request_free(void *owner)
{
    free(owner);
}

/* --------------------------------------------------------------- writing */

struct wb {
    uint8_t *p;
    size_t len, cap;
    bool oom;
};

static void wb_reserve(struct wb *w, size_t n)
{
    if (w->oom || w->len + n <= w->cap)
        return;
    size_t cap = w->cap == 0 ? 128 : w->cap;
    while (cap < w->len + n)
        cap *= 2;
    uint8_t *p = realloc(w->p, cap);
    if (p == NULL) {
        w->oom = true;
        return;
    }
    w->p = p;
    w->cap = cap;
}

static void wb_varint(struct wb *w, uint64_t v)
{
    wb_reserve(w, 10);
    if (w->oom)
        return;
    while (v >= 0x80) {
        w->p[w->len++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    w->p[w->len++] = (uint8_t)v;
}

static void wb_u64(struct wb *w, uint32_t num, uint64_t v)
{
    if (v == 0)
        return; /* proto3 default */
    wb_varint(w, (uint64_t)num << 3);
    wb_varint(w, v);
}

static void wb_bytes(struct wb *w, uint32_t num, const void *b, size_t n,
                     bool always)
{
    if (n == 0 && !always)
        return;
    wb_varint(w, (uint64_t)num << 3 | 2);
    wb_varint(w, n);
    wb_reserve(w, n);
    if (w->oom || n == 0)
        return;
    memcpy(w->p + w->len, b, n);
    w->len += n;
}

static void wb_str(struct wb *w, uint32_t num, const char *s)
{
    if (s != NULL)
        wb_bytes(w, num, s, strlen(s), false);
}

/* Appends a nested message built in `sub` as field `num`. */
static void wb_msg(struct wb *w, uint32_t num, struct wb *sub)
{
    if (sub->oom)
        w->oom = true;
    else
        wb_bytes(w, num, sub->p, sub->len, true);
    free(sub->p);
    memset(sub, 0, sizeof(*sub));
}

int srv_proto_wire_status(int err)
{
    switch (err) {
    case RK_OK: return 0;
    case RK_ENOTFOUND: return 1;
    case RK_ENOTLEADER: return 2;
    case RK_EWRONGSHARD: case RK_EUNKNOWNSHARD: return 3;
    case RK_ECASMISMATCH: return 4;
    case RK_ETIMEDOUT: return 5;
    case RK_EINVAL: case RK_EPROTO: case RK_ESTALE: case RK_EEXIST:
        return 7;
    case RK_ETOOLARGE: return 8;
    case RK_ENOMEM: case RK_EIO: case RK_ECORRUPT: return 9;
    default: return 6; /* UNAVAILABLE: busy, shutting down, fail-stop */
    }
}

static void shard_info(struct wb *w, uint32_t num,
                       const struct srv_shard_info *si)
{
    static const char *const roles[] = {"follower", "pre-candidate",
                                        "candidate", "leader"};
    struct wb sub = {0};
    wb_varint(&sub, 1 << 3); /* shard 0 is meaningful: always write it */
    wb_varint(&sub, si->shard);
    wb_u64(&sub, 2, si->leader);
    wb_u64(&sub, 3, si->term);
    wb_u64(&sub, 4, si->commit);
    wb_u64(&sub, 5, si->applied);
    wb_str(&sub, 6, si->role < 4 ? roles[si->role] : "?");
    if (si->n_replicas > 0) {
        struct wb packed = {0};
        for (uint32_t k = 0; k < si->n_replicas; k++)
            wb_varint(&packed, si->replicas[k]);
        wb_msg(&sub, 7, &packed);
    }
    wb_msg(w, num, &sub);
}

int srv_proto_response_encode(const struct srv_response *r, uint8_t **out,
                              size_t *len)
{
    struct wb w = {0};
    struct wb sub = {0};
    wb_u64(&w, 1, r->request_id);
    wb_u64(&w, 2, (uint64_t)srv_proto_wire_status(r->status));
    wb_str(&w, 3, r->leader_hint);
    wb_u64(&w, 4, r->epoch);
    wb_str(&w, 5, r->message != NULL ? r->message
                                     : (r->status != 0 ? rk_strerror(r->status)
                                                       : NULL));
    wb_u64(&w, 6, r->leader_id);
    switch (r->op_kind) {
    case SRV_RESULT_GET:
        if (r->status == 0 || r->status == RK_ENOTFOUND) {
            wb_u64(&sub, 1, r->found);
            wb_bytes(&sub, 2, r->value, r->vlen, false);
            wb_u64(&sub, 3, r->revision);
            wb_u64(&sub, 4, r->create_revision);
            wb_msg(&w, 10, &sub);
        }
        break;
    case SRV_RESULT_WRITE:
        wb_u64(&sub, 1, r->revision);
        wb_u64(&sub, 2, r->prev_revision);
        wb_u64(&sub, 3, r->duplicate);
        wb_msg(&w, 11, &sub);
        break;
    case SRV_RESULT_SCAN:
        for (uint32_t i = 0; i < r->n_items; i++) {
            struct wb kv = {0};
            const struct srv_kv *it = &r->items[i];
            wb_bytes(&kv, 1, it->key, it->klen, false);
            wb_bytes(&kv, 2, it->value, it->vlen, false);
            wb_u64(&kv, 3, it->revision);
            wb_u64(&kv, 4, it->create_revision);
            wb_msg(&sub, 1, &kv);
        }
        wb_u64(&sub, 2, r->more);
        wb_msg(&w, 12, &sub);
        break;
    case SRV_RESULT_STATUS:
        wb_u64(&sub, 1, r->node_id);
        wb_u64(&sub, 2, r->cluster_id);
        for (uint32_t i = 0; i < r->n_shards; i++)
            shard_info(&sub, 3, &r->shards[i]);
        wb_msg(&w, 13, &sub);
        break;
    case SRV_RESULT_SHARD_MAP:
        wb_u64(&sub, 1, r->epoch);
        wb_u64(&sub, 2, r->cluster_id);
        wb_u64(&sub, 3, r->n_data_shards);
        wb_u64(&sub, 4, r->ring_vnodes);
        wb_u64(&sub, 5, r->ring_seed);
        for (uint32_t i = 0; i < r->n_shards; i++)
            shard_info(&sub, 6, &r->shards[i]);
        for (uint32_t i = 0; i < r->n_nodes; i++) {
            struct wb n = {0};
            wb_u64(&n, 1, r->nodes[i].id);
            wb_str(&n, 2, r->nodes[i].client_addr);
            wb_msg(&sub, 7, &n);
        }
        wb_msg(&w, 14, &sub);
        break;
    default:
        break;
    }
    if (w.oom) {
        free(w.p);
        return RK_ENOMEM;
    }
    if (w.p == NULL) {
        /* An all-default response encodes to zero bytes; keep a buffer. */
        w.p = malloc(1);
        if (w.p == NULL)
            return RK_ENOMEM;
    }
    *out = w.p;
    *len = w.len;
    return 0;
}
