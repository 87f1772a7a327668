/* Bounded unpacking, packing, and the Status <-> RK_E* mapping. */
#include "rk_proto.h"

#include <stdbool.h>
#include <stdlib.h>

#include "rk_err.h"

/* ---------------------------------------------------------- allocation */

struct budget {
    ProtobufCAllocator a; /* first: protobuf-c hands back allocator_data */
    size_t left;
    bool exceeded;
};

static void *budget_alloc(void *data, size_t size)
{
    struct budget *b = data;
    if (size > b->left) {
        b->exceeded = true;
        return NULL;
    }
    b->left -= size;
    return malloc(size ? size : 1);
}

static void plain_free(void *data, void *p)
{
    (void)data;
    free(p);
}

/* Frees what any budget allocator handed out (memory is plain malloc). */
static ProtobufCAllocator free_allocator = {
    .alloc = NULL,
    .free = plain_free,
    .allocator_data = NULL,
};

size_t rk_proto_default_budget(size_t len)
{
    if (len > (RK_PROTO_MEM_CAP - RK_PROTO_MEM_SLACK) / RK_PROTO_MEM_FACTOR)
        return RK_PROTO_MEM_CAP;
    return len * RK_PROTO_MEM_FACTOR + RK_PROTO_MEM_SLACK;
}

/*
 * protobuf-c 1.4 accepts a field number 0 (invalid in protobuf) when its tag
 * is written as an overlong varint, keeps it as an unknown field, and then
 * packs it into bytes that it refuses itself. Such input is malformed: walk
 * the unpacked tree (the schema has no recursive types, so the depth is
 * bounded) and refuse it.
 */
static bool unknown_fields_ok(const ProtobufCMessage *m)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0)
            return false;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE)
            continue;
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *arr =
                *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t k = 0; k < n; k++)
                if (arr[k] && !unknown_fields_ok(arr[k]))
                    return false;
            continue;
        }
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue; /* another member of the oneof owns the storage */
        const ProtobufCMessage *sub =
            *(const ProtobufCMessage *const *)(base + f->offset);
        if (sub && !unknown_fields_ok(sub))
            return false;
    }
    return true;
}

int rk_proto_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *buf,
                    size_t len, size_t max_mem, ProtobufCMessage **out)
{
    struct budget b = {
        .a = {.alloc = budget_alloc,
              .free = plain_free,
              .allocator_data = NULL},
        .left = max_mem ? max_mem : rk_proto_default_budget(len),
        .exceeded = false,
    };
    b.a.allocator_data = &b;
    /* protobuf-c wants a non-NULL pointer even for zero bytes. */
    static const uint8_t none[1];
    ProtobufCMessage *m =
        protobuf_c_message_unpack(desc, &b.a, len, len ? buf : none);
    if (m == NULL) {
        *out = NULL;
        return b.exceeded ? RK_ETOOLARGE : RK_EPROTO;
    }
    if (!unknown_fields_ok(m)) {
        rk_proto_free(m);
        *out = NULL;
        return RK_EPROTO;
    }
    *out = m;
    return 0;
}

void rk_proto_free(ProtobufCMessage *m)
{
    if (m)
        protobuf_c_message_free_unpacked(m, &free_allocator);
}

int rk_proto_pack(const ProtobufCMessage *m, size_t max_len, uint8_t **out,
                  size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    if (max_len && n > max_len)
        return RK_ETOOLARGE;
    uint8_t *p = malloc(n ? n : 1);
    if (p == NULL)
        return RK_ENOMEM;
    size_t w = protobuf_c_message_pack(m, p);
    if (w != n) {
        /* protobuf-c packs exactly what it measured; anything else is a
         * bug in the message (e.g. a bad oneof case). */
        free(p);
        return RK_EINVAL;
    }
    *out = p;
    *len = n;
    return 0;
}

/* -------------------------------------------------------------- status */

/* Generated from RK_ERR_MAP: a wire name missing from the Status enum of
 * ringkv.proto fails to compile here. */
Ringkv__Status rk_status_from_err(int err)
{
    switch (err) {
#define RK__ERR_STATUS(name, val, msg, wire)                                   \
    case val:                                                                  \
        return RINGKV__STATUS__##wire;
        RK_ERR_MAP(RK__ERR_STATUS)
#undef RK__ERR_STATUS
    default:
        return RINGKV__STATUS__INTERNAL;
    }
}

int rk_status_to_err(int status)
{
    switch (status) {
    case RINGKV__STATUS__OK:
        return 0;
    case RINGKV__STATUS__NOT_FOUND:
        return RK_ENOTFOUND;
    case RINGKV__STATUS__NOT_LEADER:
        return RK_ENOTLEADER;
    case RINGKV__STATUS__WRONG_SHARD:
        return RK_EWRONGSHARD;
    case RINGKV__STATUS__CAS_MISMATCH:
        return RK_ECASMISMATCH;
    case RINGKV__STATUS__TIMEOUT:
        return RK_ETIMEDOUT;
    case RINGKV__STATUS__UNAVAILABLE:
        return RK_EUNAVAILABLE;
    case RINGKV__STATUS__INVALID_ARGUMENT:
        return RK_EINVAL;
    case RINGKV__STATUS__TOO_LARGE:
        return RK_ETOOLARGE;
    default:
        return RK_EIO;
    }
}

const char *rk_status_name(int status)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
        &ringkv__status__descriptor, status);
    return v ? v->name : "INTERNAL";
}

/* ------------------------------------------------------------- requests */

static int bad(char *errmsg, const char *why)
{
    if (errmsg)
        rk_errf(errmsg, "%s", why);
    return RK_EINVAL;
}

/* The key of a keyed operation, or NULL for the others. */
static const ProtobufCBinaryData *op_key(const Ringkv__Request *rq)
{
    switch (rq->op_case) {
    case RINGKV__REQUEST__OP_GET:
        return rq->get ? &rq->get->key : NULL;
    case RINGKV__REQUEST__OP_PUT:
        return rq->put ? &rq->put->key : NULL;
    case RINGKV__REQUEST__OP_DELETE:
        return rq->delete_ ? &rq->delete_->key : NULL;
    case RINGKV__REQUEST__OP_CAS:
        return rq->cas ? &rq->cas->key : NULL;
    default:
        return NULL;
    }
}

int rk_proto_request_check(const Ringkv__Request *rq, char *errmsg)
{
    if ((unsigned)rq->consistency > RINGKV__REQUEST__CONSISTENCY__STALE)
        return bad(errmsg, "unknown consistency level");
    switch (rq->op_case) {
    case RINGKV__REQUEST__OP__NOT_SET:
        return bad(errmsg, "request without an operation");
    case RINGKV__REQUEST__OP_GET:
    case RINGKV__REQUEST__OP_PUT:
    case RINGKV__REQUEST__OP_DELETE:
    case RINGKV__REQUEST__OP_CAS: {
        const ProtobufCBinaryData *key = op_key(rq);
        if (key == NULL)
            return bad(errmsg, "operation without its body");
        if (key->len == 0)
            return bad(errmsg, "empty key");
        if (rq->op_case != RINGKV__REQUEST__OP_CAS)
            return 0;
        if (rq->cas->expect_case == RINGKV__CAS_REQUEST__EXPECT__NOT_SET)
            return bad(errmsg, "cas without an expectation");
        if (rq->cas->expect_case == RINGKV__CAS_REQUEST__EXPECT_EXPECT_ABSENT &&
            !rq->cas->expect_absent)
            return bad(errmsg, "cas expect_absent must be true when set");
        return 0;
    }
    case RINGKV__REQUEST__OP_SCAN:
        if (rq->scan == NULL || rq->scan->shard == 0)
            return bad(errmsg, "scan without a shard");
        return 0;
    case RINGKV__REQUEST__OP_MEMBER_ADD:
        if (rq->member_add == NULL || rq->member_add->node_id == 0)
            return bad(errmsg, "member add without a node id");
        return 0;
    case RINGKV__REQUEST__OP_MEMBER_REMOVE:
        if (rq->member_remove == NULL || rq->member_remove->node_id == 0)
            return bad(errmsg, "member remove without a node id");
        return 0;
    case RINGKV__REQUEST__OP_STATUS:
    case RINGKV__REQUEST__OP_GET_SHARD_MAP:
    case RINGKV__REQUEST__OP_MEMBER_LIST:
    case RINGKV__REQUEST__OP_TRANSFER_LEADER:
    case RINGKV__REQUEST__OP_SPLIT_SHARD:
        return 0;
    default:
        return bad(errmsg, "unknown operation");
    }
}
