/* Growable byte buffer. */
#include "rk_buf.h"

#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "rk_err.h"

#define RK_BUF_MIN_CAP 64

void rk_buf_init(struct rk_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void rk_buf_free(struct rk_buf *b)
{
    free(b->data);
    rk_buf_init(b);
}

void rk_buf_reset(struct rk_buf *b)
{
    b->len = 0;
}

int rk_buf_reserve(struct rk_buf *b, size_t extra)
{
    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX - b->len)
        return RK_ETOOLARGE;
    size_t need = b->len + extra;
    size_t cap = b->cap < RK_BUF_MIN_CAP ? RK_BUF_MIN_CAP : b->cap;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    uint8_t *p = realloc(b->data, cap);
    if (p == NULL)
        return RK_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int rk_buf_append(struct rk_buf *b, const void *p, size_t n)
{
    if (n == 0)
        return 0;
    int rc = rk_buf_reserve(b, n);
    if (rc)
        return rc;
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

int rk_buf_append_u8(struct rk_buf *b, uint8_t v)
{
    return rk_buf_append(b, &v, 1);
}

int rk_buf_append_u32be(struct rk_buf *b, uint32_t v)
{
    uint8_t tmp[4];
    rk_put_u32be(tmp, v);
    return rk_buf_append(b, tmp, sizeof tmp);
}

int rk_buf_append_u64be(struct rk_buf *b, uint64_t v)
{
    uint8_t tmp[8];
    rk_put_u64be(tmp, v);
    return rk_buf_append(b, tmp, sizeof tmp);
}

int rk_buf_tail(struct rk_buf *b, size_t min, uint8_t **p, size_t *avail)
{
    int rc = rk_buf_reserve(b, min == 0 ? 1 : min);
    if (rc)
        return rc;
    *p = b->data + b->len;
    if (avail)
        *avail = b->cap - b->len;
    return 0;
}

void rk_buf_commit(struct rk_buf *b, size_t n)
{
    RK_ASSERT(n <= b->cap - b->len);
    b->len += n;
}

void rk_buf_consume(struct rk_buf *b, size_t n)
{
    RK_ASSERT(n <= b->len);
    if (n == b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void rk_buf_truncate(struct rk_buf *b, size_t n)
{
    RK_ASSERT(n <= b->len);
    b->len = n;
}

uint8_t *rk_buf_detach(struct rk_buf *b, size_t *len)
{
    uint8_t *p = b->data;
    if (len)
        *len = b->len;
    rk_buf_init(b);
    return p;
}
