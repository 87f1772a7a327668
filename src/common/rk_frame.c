/* Length-prefixed frame codec (streaming decoder, encoder helpers). */
#include "rk_frame.h"

#include <string.h>

#include "rk_assert.h"
#include "rk_err.h"

/* Gather buffers up to this size are reused from frame to frame. */
#define RK_FRAME_KEEP_BYTES ((size_t)64 << 10)

/* What a zero-length frame points at (callers may rely on non-NULL). */
static const uint8_t empty_frame[1];

static size_t clamp_max(size_t max)
{
    if (max == 0)
        return RK_FRAME_MAX_DEFAULT;
    if (max > UINT32_MAX)
        return UINT32_MAX;
    return max;
}

void rk_frame_dec_init(struct rk_frame_dec *d, size_t max)
{
    memset(d, 0, sizeof(*d));
    d->max = clamp_max(max);
    rk_buf_init(&d->acc);
}

void rk_frame_dec_free(struct rk_frame_dec *d)
{
    rk_buf_free(&d->acc);
    d->in = NULL;
    d->in_len = d->in_pos = 0;
}

void rk_frame_dec_feed(struct rk_frame_dec *d, const void *data, size_t len)
{
    RK_ASSERT(d->in_pos == d->in_len || d->err);
    d->in = data;
    d->in_len = len;
    d->in_pos = 0;
}

/* A complete header is in d->hdr: check its length before anything else. */
static int take_header(struct rk_frame_dec *d)
{
    uint32_t n = rk_get_u32be(d->hdr);
    if (n > d->max) {
        d->err = RK_ETOOLARGE;
        return d->err;
    }
    d->need = n;
    d->in_payload = true;
    return 0;
}

static void frame_done(struct rk_frame_dec *d)
{
    d->hdr_have = 0;
    d->in_payload = false;
    d->need = 0;
    d->frames++;
}

int rk_frame_dec_next(struct rk_frame_dec *d, const uint8_t **frame,
                      size_t *len)
{
    if (d->err)
        return d->err;
    if (d->acc_ready) {
        /* The frame handed out last lived in acc: it is consumed now. A
         * large gather buffer is not kept around for the next frame. */
        if (d->acc.cap > RK_FRAME_KEEP_BYTES)
            rk_buf_free(&d->acc);
        else
            rk_buf_reset(&d->acc);
        d->acc_ready = false;
    }
    size_t left = d->in_len - d->in_pos;
    const uint8_t *p = d->in + d->in_pos;

    /* Fast path: a whole frame (header and payload) inside the slice. */
    if (!d->in_payload && d->hdr_have == 0 && left >= RK_FRAME_HDR) {
        memcpy(d->hdr, p, RK_FRAME_HDR);
        int rc = take_header(d);
        if (rc)
            return rc;
        d->in_pos += RK_FRAME_HDR;
        left -= RK_FRAME_HDR;
        p += RK_FRAME_HDR;
        if (left >= d->need) {
            *frame = d->need ? p : empty_frame;
            *len = d->need;
            d->in_pos += d->need;
            frame_done(d);
            return 1;
        }
        /* Falls through to gather a split payload. */
    }

    /* Slow path: gather the header byte by byte... */
    while (!d->in_payload) {
        if (d->in_pos == d->in_len)
            return 0;
        d->hdr[d->hdr_have++] = d->in[d->in_pos++];
        if (d->hdr_have == RK_FRAME_HDR) {
            int rc = take_header(d);
            if (rc)
                return rc;
        }
    }

    /* ...then the payload into acc, allocated exactly once per frame (the
     * length was checked against max above). */
    if (d->need == 0) {
        *frame = empty_frame;
        *len = 0;
        frame_done(d);
        return 1;
    }
    if (d->acc.cap < d->need) {
        int rc = rk_buf_reserve(&d->acc, d->need);
        if (rc) {
            d->err = rc;
            return rc;
        }
    }
    size_t want = d->need - d->acc.len;
    size_t take = d->in_len - d->in_pos;
    if (take > want)
        take = want;
    rk_buf_append(&d->acc, d->in + d->in_pos, take); /* room reserved */
    d->in_pos += take;
    if (d->acc.len < d->need)
        return 0;
    *frame = d->acc.data;
    *len = d->acc.len;
    d->acc_ready = true;
    frame_done(d);
    return 1;
}

int rk_frame_dec_feed_cb(struct rk_frame_dec *d, const void *data, size_t len,
                         rk_frame_cb cb, void *arg)
{
    rk_frame_dec_feed(d, data, len);
    for (;;) {
        const uint8_t *f;
        size_t n;
        int rc = rk_frame_dec_next(d, &f, &n);
        if (rc <= 0)
            return rc;
        rc = cb(arg, f, n);
        if (rc) {
            d->in_pos = d->in_len;
            return rc;
        }
    }
}

bool rk_frame_dec_partial(const struct rk_frame_dec *d)
{
    return d->hdr_have > 0 || d->in_payload;
}

size_t rk_frame_dec_pending(const struct rk_frame_dec *d)
{
    if (d->in_payload)
        return RK_FRAME_HDR + d->acc.len;
    return d->hdr_have;
}

int rk_frame_append(struct rk_buf *b, const void *payload, size_t n, size_t max)
{
    if (n > clamp_max(max))
        return RK_ETOOLARGE;
    int rc = rk_buf_reserve(b, RK_FRAME_HDR + n);
    if (rc)
        return rc;
    uint8_t hdr[RK_FRAME_HDR];
    rk_frame_put_hdr(hdr, (uint32_t)n);
    rk_buf_append(b, hdr, sizeof hdr); /* room reserved */
    rk_buf_append(b, payload, n);
    return 0;
}

int rk_frame_begin(struct rk_buf *b, size_t *mark)
{
    static const uint8_t zero[RK_FRAME_HDR];
    *mark = b->len;
    return rk_buf_append(b, zero, sizeof zero);
}

int rk_frame_end(struct rk_buf *b, size_t mark, size_t max)
{
    RK_ASSERT(mark + RK_FRAME_HDR <= b->len);
    size_t n = b->len - mark - RK_FRAME_HDR;
    if (n > clamp_max(max)) {
        rk_buf_truncate(b, mark);
        return RK_ETOOLARGE;
    }
    rk_frame_put_hdr(b->data + mark, (uint32_t)n);
    return 0;
}
