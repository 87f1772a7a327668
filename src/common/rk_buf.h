/* Growable byte buffer with big-endian integer helpers. */
#ifndef RK_BUF_H
#define RK_BUF_H

/*
 * struct rk_buf owns `cap` bytes at `data`, of which the first `len` are in
 * use. A zeroed struct is a valid empty buffer (rk_buf_init does that), so
 * buffers can be embedded in other structs. Growth doubles the capacity.
 * Functions that can fail return 0, RK_ENOMEM, or RK_ETOOLARGE when the size
 * would overflow size_t; on failure the buffer is unchanged.
 */

#include <stddef.h>
#include <stdint.h>

struct rk_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

void rk_buf_init(struct rk_buf *b);
/* Releases the memory; the buffer is empty and reusable afterwards. */
void rk_buf_free(struct rk_buf *b);
/* Forgets the contents but keeps the memory. */
void rk_buf_reset(struct rk_buf *b);

/* Makes room for at least `extra` more bytes after len. */
int rk_buf_reserve(struct rk_buf *b, size_t extra);
int rk_buf_append(struct rk_buf *b, const void *p, size_t n);
int rk_buf_append_u8(struct rk_buf *b, uint8_t v);
int rk_buf_append_u32be(struct rk_buf *b, uint32_t v);
int rk_buf_append_u64be(struct rk_buf *b, uint64_t v);

/* Direct writes: *p gets room for at least `min` bytes after len (the usable
 * room, cap - len, goes to *avail if not NULL); after writing n bytes there,
 * rk_buf_commit(b, n) makes them part of the contents. */
int rk_buf_tail(struct rk_buf *b, size_t min, uint8_t **p, size_t *avail);
void rk_buf_commit(struct rk_buf *b, size_t n);

/* Drops the first n bytes (n <= len), moving the rest to the front. */
void rk_buf_consume(struct rk_buf *b, size_t n);
/* Shrinks the contents to n bytes (n <= len). */
void rk_buf_truncate(struct rk_buf *b, size_t n);

/* Hands the memory to the caller (free() it; NULL when empty and never
 * allocated); the buffer becomes empty. */
uint8_t *rk_buf_detach(struct rk_buf *b, size_t *len);

/* Big-endian load/store on raw memory (no alignment needed). */
static inline void rk_put_u32be(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static inline uint32_t rk_get_u32be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           (uint32_t)p[3];
}

static inline void rk_put_u64be(uint8_t *p, uint64_t v)
{
    rk_put_u32be(p, (uint32_t)(v >> 32));
    rk_put_u32be(p + 4, (uint32_t)v);
}

static inline uint64_t rk_get_u64be(const uint8_t *p)
{
    return (uint64_t)rk_get_u32be(p) << 32 | rk_get_u32be(p + 4);
}

#endif
