/* Binary encoding of KV commands in Raft entries (bounds-checked). */
#include <string.h>

#include "stor_int.h"

#define CMD_VERSION 1
#define CMD_HDR     18 /* version, op, client id, seq */

size_t stor_cmd_size(const struct stor_cmd *c)
{
    switch (c->op) {
    case STOR_CMD_PUT:
        return CMD_HDR + 4 + (size_t)c->klen + 4 + (size_t)c->vlen;
    case STOR_CMD_DEL:
        return CMD_HDR + 4 + (size_t)c->klen;
    case STOR_CMD_CAS:
        return CMD_HDR + 1 + 4 + (size_t)c->klen + 8 + 4 + (size_t)c->elen + 4 +
               (size_t)c->vlen;
    case STOR_CMD_EXPIRE_SESSIONS:
        return CMD_HDR + 8;
    case STOR_CMD_SPLIT:
        return CMD_HDR + 8 + 16 * (size_t)c->n_arcs;
    default:
        return 0;
    }
}

static uint8_t *put_blob(uint8_t *p, const void *d, uint32_t len)
{
    stor__put32(p, len);
    if (len)
        memcpy(p + 4, d, len);
    return p + 4 + len;
}

int stor_cmd_encode(const struct stor_cmd *c, void *buf, size_t cap,
                    size_t *len)
{
    size_t need = stor_cmd_size(c);
    if (need == 0)
        return RK_EINVAL;
    if ((c->klen && !c->key) || (c->vlen && !c->value) ||
        (c->elen && !c->expect) || (c->client_id && c->seq == 0))
        return RK_EINVAL;
    bool keyless = c->op == STOR_CMD_EXPIRE_SESSIONS || c->op == STOR_CMD_SPLIT;
    if (!keyless && c->klen == 0)
        return RK_EINVAL;
    if (c->op == STOR_CMD_SPLIT &&
        (c->n_arcs == 0 || c->n_arcs > STOR_SPLIT_MAX_ARCS || !c->arcs ||
         c->split_to == 0 || c->client_id != 0))
        return RK_EINVAL;
    if (c->klen > STOR_MAX_KEY || c->vlen > STOR_MAX_VALUE ||
        c->elen > STOR_MAX_VALUE)
        return RK_ETOOLARGE;
    if (c->op == STOR_CMD_CAS &&
        (c->cas_flags & ~(STOR_CAS_REVISION | STOR_CAS_DELETE)))
        return RK_EINVAL;
    if (cap < need || !buf)
        return RK_ETOOLARGE;
    uint8_t *p = buf;
    p[0] = CMD_VERSION;
    p[1] = c->op;
    stor__put64(p + 2, c->client_id);
    stor__put64(p + 10, c->seq);
    p += CMD_HDR;
    switch (c->op) {
    case STOR_CMD_PUT:
        p = put_blob(p, c->key, c->klen);
        p = put_blob(p, c->value, c->vlen);
        break;
    case STOR_CMD_DEL:
        p = put_blob(p, c->key, c->klen);
        break;
    case STOR_CMD_CAS:
        *p++ = c->cas_flags;
        p = put_blob(p, c->key, c->klen);
        stor__put64(p, c->expect_rev);
        p += 8;
        p = put_blob(p, c->expect, c->elen);
        p = put_blob(p, c->value, c->vlen);
        break;
    case STOR_CMD_EXPIRE_SESSIONS:
        stor__put64(p, c->before_index);
        p += 8;
        break;
    case STOR_CMD_SPLIT:
        stor__put32(p, c->split_to);
        stor__put32(p + 4, c->n_arcs);
        p += 8;
        for (uint32_t i = 0; i < 2 * c->n_arcs; i++, p += 8)
            stor__put64(p, c->arcs[i]);
        break;
    }
    *len = (size_t)(p - (uint8_t *)buf);
    return 0;
}

/* Reads a u32-length-prefixed blob of at most max bytes. */
static int get_blob(struct stor__rd *r, uint32_t max, const void **d,
                    uint32_t *len)
{
    if (!stor__rd_u32(r, len))
        return RK_EPROTO;
    if (*len > max)
        return *len > r->left ? RK_EPROTO : RK_ETOOLARGE;
    if (!stor__rd_bytes(r, *len, d))
        return RK_EPROTO;
    return 0;
}

int stor_cmd_decode(const void *buf, size_t len, struct stor_cmd *c)
{
    struct stor__rd r = {.p = buf, .left = len};
    uint8_t ver;
    int rc;
    memset(c, 0, sizeof(*c));
    if (!buf && len)
        return RK_EINVAL;
    if (!stor__rd_u8(&r, &ver) || ver != CMD_VERSION ||
        !stor__rd_u8(&r, &c->op) || !stor__rd_u64(&r, &c->client_id) ||
        !stor__rd_u64(&r, &c->seq))
        return RK_EPROTO;
    if (c->client_id && c->seq == 0)
        return RK_EPROTO;
    switch (c->op) {
    case STOR_CMD_PUT:
        if ((rc = get_blob(&r, STOR_MAX_KEY, &c->key, &c->klen)) ||
            (rc = get_blob(&r, STOR_MAX_VALUE, &c->value, &c->vlen)))
            return rc;
        break;
    case STOR_CMD_DEL:
        if ((rc = get_blob(&r, STOR_MAX_KEY, &c->key, &c->klen)))
            return rc;
        break;
    case STOR_CMD_CAS:
        if (!stor__rd_u8(&r, &c->cas_flags) ||
            (c->cas_flags & ~(STOR_CAS_REVISION | STOR_CAS_DELETE)))
            return RK_EPROTO;
        if ((rc = get_blob(&r, STOR_MAX_KEY, &c->key, &c->klen)))
            return rc;
        if (!stor__rd_u64(&r, &c->expect_rev))
            return RK_EPROTO;
        if ((rc = get_blob(&r, STOR_MAX_VALUE, &c->expect, &c->elen)) ||
            (rc = get_blob(&r, STOR_MAX_VALUE, &c->value, &c->vlen)))
            return rc;
        break;
    case STOR_CMD_EXPIRE_SESSIONS:
        if (!stor__rd_u64(&r, &c->before_index))
            return RK_EPROTO;
        break;
    case STOR_CMD_SPLIT:
        if (!stor__rd_u32(&r, &c->split_to) || !stor__rd_u32(&r, &c->n_arcs) ||
            c->split_to == 0 || c->n_arcs == 0 ||
            c->n_arcs > STOR_SPLIT_MAX_ARCS || c->client_id != 0 ||
            !stor__rd_bytes(&r, 16 * (size_t)c->n_arcs, &c->arcs_be))
            return RK_EPROTO;
        for (uint32_t i = 0; i < c->n_arcs; i++) {
            uint64_t first, last;
            stor_cmd_arc(c, i, &first, &last);
            if (first > last)
                return RK_EPROTO;
        }
        break;
    default:
        return RK_EPROTO;
    }
    if (r.left != 0)
        return RK_EPROTO;
    if (c->op != STOR_CMD_EXPIRE_SESSIONS && c->op != STOR_CMD_SPLIT &&
        c->klen == 0)
        return RK_EPROTO;
    return 0;
}

void stor_cmd_arc(const struct stor_cmd *c, uint32_t i, uint64_t *first,
                  uint64_t *last)
{
    const uint8_t *p = (const uint8_t *)c->arcs_be + 16 * (size_t)i;
    *first = stor__get64(p);
    *last = stor__get64(p + 8);
}
