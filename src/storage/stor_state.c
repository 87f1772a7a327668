/* Codecs: bounded reader, CRC-32C, conf and per-shard state records. */
#include <string.h>

#include "stor_int.h"

/* ------------------------------------------------------------- reader */

bool stor__rd_bytes(struct stor__rd *r, size_t n, const void **v)
{
    if (r->bad || r->left < n) {
        r->bad = true;
        return false;
    }
    *v = r->p;
    r->p += n;
    r->left -= n;
    return true;
}

bool stor__rd_u8(struct stor__rd *r, uint8_t *v)
{
    const void *p;
    if (!stor__rd_bytes(r, 1, &p))
        return false;
    *v = *(const uint8_t *)p;
    return true;
}

bool stor__rd_u16(struct stor__rd *r, uint16_t *v)
{
    const void *p;
    if (!stor__rd_bytes(r, 2, &p))
        return false;
    const uint8_t *b = p;
    *v = (uint16_t)((b[0] << 8) | b[1]);
    return true;
}

bool stor__rd_u32(struct stor__rd *r, uint32_t *v)
{
    const void *p;
    if (!stor__rd_bytes(r, 4, &p))
        return false;
    *v = stor__get32(p);
    return true;
}

bool stor__rd_u64(struct stor__rd *r, uint64_t *v)
{
    const void *p;
    if (!stor__rd_bytes(r, 8, &p))
        return false;
    *v = stor__get64(p);
    return true;
}

/* ------------------------------------------------------------- CRC-32C */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^
                              crc_table[0][crc_table[t - 1][i] & 0xff];
}

uint32_t stor__crc32c(uint32_t crc, const void *buf, size_t len)
{
    pthread_once(&crc_once, crc_init);
    const uint8_t *p = buf;
    crc = ~crc;
    while (len >= 8) {
        uint32_t lo = crc ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 |
                             (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^
              crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24] ^
              crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^
              crc_table[0][p[7]];
        p += 8;
        len -= 8;
    }
    while (len--)
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
    return ~crc;
}

/* --------------------------------------------------------- conf state */

size_t stor__conf_encode(const struct raft_conf_state *c, uint8_t *buf)
{
    uint8_t *p = buf;
    stor__put32(p, c->n_voters);
    stor__put32(p + 4, c->n_learners);
    p += 8;
    for (uint32_t i = 0; i < c->n_voters; i++, p += 8)
        stor__put64(p, c->voters[i]);
    for (uint32_t i = 0; i < c->n_learners; i++, p += 8)
        stor__put64(p, c->learners[i]);
    return (size_t)(p - buf);
}

bool stor__conf_decode(struct stor__rd *r, struct raft_conf_state *c)
{
    memset(c, 0, sizeof(*c));
    if (!stor__rd_u32(r, &c->n_voters) || !stor__rd_u32(r, &c->n_learners))
        return false;
    if (c->n_voters > RAFT_MAX_MEMBERS || c->n_learners > RAFT_MAX_MEMBERS) {
        r->bad = true;
        return false;
    }
    for (uint32_t i = 0; i < c->n_voters; i++)
        if (!stor__rd_u64(r, &c->voters[i]))
            return false;
    for (uint32_t i = 0; i < c->n_learners; i++)
        if (!stor__rd_u64(r, &c->learners[i]))
            return false;
    return true;
}

/* -------------------------------------------------------- state record */

#define STATE_VERSION 1

static uint8_t *put_meta(uint8_t *p, const struct raft_snapshot_meta *m)
{
    stor__put64(p, m->index);
    stor__put64(p + 8, m->term);
    p += 16;
    return p + stor__conf_encode(&m->conf, p);
}

static bool get_meta(struct stor__rd *r, struct raft_snapshot_meta *m)
{
    return stor__rd_u64(r, &m->index) && stor__rd_u64(r, &m->term) &&
           stor__conf_decode(r, &m->conf);
}

size_t stor__state_encode(const struct stor__state *st, uint8_t *buf)
{
    uint8_t *p = buf;
    *p++ = STATE_VERSION;
    stor__put64(p, st->hs.term);
    stor__put64(p + 8, st->hs.vote);
    stor__put64(p + 16, st->hs.commit);
    p += 24;
    p += stor__conf_encode(&st->conf, p);
    stor__put64(p, st->base_index);
    stor__put64(p + 8, st->base_term);
    stor__put64(p + 16, st->applied);
    stor__put64(p + 24, st->applied_term);
    p += 32;
    p += stor__conf_encode(&st->applied_conf, p);
    p = put_meta(p, &st->snap);
    stor__put64(p, st->compact_target);
    p += 8;
    p = put_meta(p, &st->stage_meta);
    stor__put32(p, st->stage_next);
    p += 4;
    *p++ = st->stage_complete ? 1 : 0;
    return (size_t)(p - buf);
}

int stor__state_decode(const void *buf, size_t len, struct stor__state *st)
{
    struct stor__rd r = {.p = buf, .left = len};
    uint8_t ver = 0, complete = 0;
    memset(st, 0, sizeof(*st));
    if (!stor__rd_u8(&r, &ver) || ver != STATE_VERSION)
        return RK_ECORRUPT;
    if (!stor__rd_u64(&r, &st->hs.term) || !stor__rd_u64(&r, &st->hs.vote) ||
        !stor__rd_u64(&r, &st->hs.commit) ||
        !stor__conf_decode(&r, &st->conf) ||
        !stor__rd_u64(&r, &st->base_index) ||
        !stor__rd_u64(&r, &st->base_term) || !stor__rd_u64(&r, &st->applied) ||
        !stor__rd_u64(&r, &st->applied_term) ||
        !stor__conf_decode(&r, &st->applied_conf) || !get_meta(&r, &st->snap) ||
        !stor__rd_u64(&r, &st->compact_target) ||
        !get_meta(&r, &st->stage_meta) || !stor__rd_u32(&r, &st->stage_next) ||
        !stor__rd_u8(&r, &complete) || r.left != 0 || complete > 1)
        return RK_ECORRUPT;
    st->stage_complete = complete;
    return 0;
}
