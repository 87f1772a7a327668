/* Length-prefixed frame codec: 4-byte big-endian length, then the payload. */
#ifndef RK_FRAME_H
#define RK_FRAME_H

/*
 * Wire form (DESIGN.md §5): u32 big-endian payload length, then that many
 * bytes (one protobuf message). The length counts the payload only.
 *
 * Limits. Every decoder has a maximum payload length (default
 * RK_FRAME_MAX_DEFAULT, 4 MiB). A header announcing more is refused with
 * RK_ETOOLARGE as soon as its 4 bytes are in, BEFORE anything is allocated
 * for it; the error is sticky (the stream is no longer in sync, so the
 * connection must be closed).
 *
 * Zero-length frames are legal and delivered (len 0, a non-NULL pointer):
 * an empty protobuf message encodes to zero bytes (e.g. an all-default
 * Request, or an empty PeerBatch used as a keepalive), so refusing them would
 * refuse valid messages. Whether an empty message is meaningful is the
 * business of the layer above.
 *
 * Decoding is streaming: feed any slices (one byte at a time or many frames
 * at once) and pull complete frames. A frame that lies wholly inside the fed
 * slice is returned in place (no copy); a frame split across slices is
 * gathered in an internal buffer sized exactly to its checked length.
 *
 *     rk_frame_dec_feed(&d, data, n);
 *     while ((rc = rk_frame_dec_next(&d, &p, &len)) == 1)
 *         handle(p, len);
 *     if (rc < 0)
 *         close the connection (rk_strerror(rc));
 *
 * A frame returned by rk_frame_dec_next stays valid until the next call to
 * rk_frame_dec_next, rk_frame_dec_feed or rk_frame_dec_free, and the fed
 * slice must stay valid until rk_frame_dec_next has returned 0.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rk_buf.h"

#define RK_FRAME_HDR         4
#define RK_FRAME_MAX_DEFAULT ((size_t)4 << 20)

struct rk_frame_dec {
    size_t max; /* largest payload accepted */
    int err;    /* sticky error, 0 while healthy */
    uint8_t hdr[RK_FRAME_HDR];
    uint32_t hdr_have; /* header bytes gathered (0..4) */
    bool in_payload;   /* header complete, gathering `need` bytes */
    uint32_t need;     /* payload length of the frame being gathered */
    struct rk_buf acc; /* partial payload of a split frame */
    bool acc_ready;    /* acc holds a complete frame handed out last */
    const uint8_t *in; /* the fed slice */
    size_t in_len;
    size_t in_pos;
    uint64_t frames; /* frames delivered so far */
};

/* max = 0 means RK_FRAME_MAX_DEFAULT; larger than UINT32_MAX is clamped. */
void rk_frame_dec_init(struct rk_frame_dec *d, size_t max);
void rk_frame_dec_free(struct rk_frame_dec *d);

/* Hands the decoder the next slice of the stream. The previous slice must
 * have been used up (rk_frame_dec_next returned 0 or an error). */
void rk_frame_dec_feed(struct rk_frame_dec *d, const void *data, size_t len);

/* Returns 1 and sets *frame, *len for the next complete frame; 0 when the
 * fed slice is used up and more bytes are needed; RK_ETOOLARGE (a length
 * over max) or RK_ENOMEM (gathering a split frame) otherwise, sticky. */
int rk_frame_dec_next(struct rk_frame_dec *d, const uint8_t **frame,
                      size_t *len);

/* Called once per frame; a nonzero return stops rk_frame_dec_feed_cb, which
 * returns that value (the rest of the slice is dropped). */
typedef int (*rk_frame_cb)(void *arg, const uint8_t *frame, size_t len);

/* Feeds a slice and hands every complete frame to cb. Returns 0, the
 * decoder's error, or cb's nonzero return. */
int rk_frame_dec_feed_cb(struct rk_frame_dec *d, const void *data, size_t len,
                         rk_frame_cb cb, void *arg);

/* True when the stream stopped inside a frame (at end of stream: a
 * truncated frame). */
bool rk_frame_dec_partial(const struct rk_frame_dec *d);
/* Bytes of the current partial frame gathered so far, header included. */
size_t rk_frame_dec_pending(const struct rk_frame_dec *d);

/* ------------------------------------------------------------- encoding */

static inline void rk_frame_put_hdr(uint8_t hdr[RK_FRAME_HDR], uint32_t len)
{
    hdr[0] = (uint8_t)(len >> 24);
    hdr[1] = (uint8_t)(len >> 16);
    hdr[2] = (uint8_t)(len >> 8);
    hdr[3] = (uint8_t)len;
}

/* Appends one frame (header + payload) to b. RK_ETOOLARGE if n > max (0 =
 * RK_FRAME_MAX_DEFAULT), RK_ENOMEM. */
int rk_frame_append(struct rk_buf *b, const void *payload, size_t n,
                    size_t max);

/* In-place encoding: rk_frame_begin reserves the header and returns its
 * offset in *mark; write the payload with rk_buf_* calls; rk_frame_end
 * fills in the length. RK_ETOOLARGE (the frame is then removed from b) if
 * the payload is over max. */
int rk_frame_begin(struct rk_buf *b, size_t *mark);
int rk_frame_end(struct rk_buf *b, size_t mark, size_t max);

#endif
