/* raft_codec: round trips of every message type and of batches; garbage,
 * truncated, mutated and oversized input rejected cleanly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "raft.pb-c.h"
#include "raft_codec.h"
#include "rk_err.h"
#include "rk_rand.h"
#include "test_proto.h"

/* ------------------------------------------------------------ helpers */

#define MAX_TEST_MSGS 2048

/* Messages with their own storage for entries and chunks. */
struct msgset {
    struct raft_msg msgs[MAX_TEST_MSGS];
    const struct raft_msg *ptrs[MAX_TEST_MSGS];
    uint32_t n;
    struct raft_entry ents[MAX_TEST_MSGS][4];
    uint8_t data[MAX_TEST_MSGS][64];
};

static uint64_t rnd_u64(struct rk_rand *r)
{
    /* Mix small and huge values: varints of every length. */
    return rk_rand_next(r) >> rk_rand_below(r, 64);
}

/* A random message of the given type obeying raft.h's field rules. */
static void random_msg(struct rk_rand *r, struct msgset *s, uint8_t type,
                       uint64_t from, uint64_t to)
{
    uint32_t i = s->n++;
    struct raft_msg *m = &s->msgs[i];
    memset(m, 0, sizeof(*m));
    m->type = type;
    m->shard = rnd_u64(r);
    m->from = rk_rand_below(r, 3) ? from : 1 + rk_rand_below(r, 1000);
    m->to = rk_rand_below(r, 3) ? to : 1 + rk_rand_below(r, 1000);
    m->term = rnd_u64(r);
    m->index = rnd_u64(r) >> 2;
    m->log_term = rnd_u64(r);
    m->commit = rnd_u64(r);
    m->reject = rk_rand_below(r, 2);
    m->hint_index = rnd_u64(r);
    m->hint_term = rnd_u64(r);
    m->context = rnd_u64(r);
    if (type == RAFT_MSG_APPEND) {
        m->n_entries = (uint32_t)rk_rand_below(r, 5);
        for (uint32_t k = 0; k < m->n_entries; k++) {
            struct raft_entry *e = &s->ents[i][k];
            e->term = rnd_u64(r);
            e->index = m->index + 1 + k;
            e->type = (uint8_t)rk_rand_below(r, 3);
            e->len = (uint32_t)rk_rand_below(r, 16);
            e->data = e->len ? &s->data[i][k * 16] : NULL;
            for (uint32_t b = 0; b < e->len; b++)
                s->data[i][k * 16 + b] = (uint8_t)rk_rand_next(r);
        }
        m->entries = m->n_entries ? s->ents[i] : NULL;
    }
    if (type == RAFT_MSG_SNAPSHOT || type == RAFT_MSG_APPEND ||
        rk_rand_below(r, 4) == 0) {
        m->snap.index = rnd_u64(r);
        m->snap.term = rnd_u64(r);
        m->snap.conf.n_voters = (uint32_t)rk_rand_below(r, 9);
        m->snap.conf.n_learners = (uint32_t)rk_rand_below(r, 8);
        for (uint32_t k = 0; k < m->snap.conf.n_voters; k++)
            m->snap.conf.voters[k] = rnd_u64(r);
        for (uint32_t k = 0; k < m->snap.conf.n_learners; k++)
            m->snap.conf.learners[k] = rnd_u64(r);
    }
    if (type == RAFT_MSG_SNAPSHOT) {
        m->chunk_seq = (uint32_t)rk_rand_next(r);
        m->chunk_last = rk_rand_below(r, 2);
        m->chunk_len = (uint32_t)rk_rand_below(r, 65);
        m->chunk_data = m->chunk_len ? s->data[i] : NULL;
        for (uint32_t b = 0; b < m->chunk_len; b++)
            s->data[i][b] = (uint8_t)rk_rand_next(r);
    } else if (rk_rand_below(r, 2)) {
        m->chunk_seq = (uint32_t)rk_rand_next(r);
        m->chunk_last = rk_rand_below(r, 2);
    }
    s->ptrs[i] = m;
}

/* A plain heartbeat (response): the coalescible kind. */
static void plain_hb(struct msgset *s, uint8_t type, uint64_t shard,
                     uint64_t from, uint64_t to, uint64_t term, uint64_t commit,
                     uint64_t ctx)
{
    uint32_t i = s->n++;
    struct raft_msg *m = &s->msgs[i];
    memset(m, 0, sizeof(*m));
    m->type = type;
    m->shard = shard;
    m->from = from;
    m->to = to;
    m->term = term;
    m->commit = commit;
    m->context = ctx;
    s->ptrs[i] = m;
}

static void assert_msg_equal(const struct raft_msg *a, const struct raft_msg *b)
{
    assert_int_equal(a->type, b->type);
    assert_true(a->shard == b->shard);
    assert_true(a->from == b->from);
    assert_true(a->to == b->to);
    assert_true(a->term == b->term);
    assert_true(a->index == b->index);
    assert_true(a->log_term == b->log_term);
    assert_true(a->commit == b->commit);
    assert_int_equal(a->reject, b->reject);
    assert_true(a->hint_index == b->hint_index);
    assert_true(a->hint_term == b->hint_term);
    assert_true(a->context == b->context);
    assert_int_equal(a->n_entries, b->n_entries);
    for (uint32_t k = 0; k < a->n_entries; k++) {
        const struct raft_entry *x = &a->entries[k], *y = &b->entries[k];
        assert_true(x->term == y->term);
        assert_true(x->index == y->index);
        assert_int_equal(x->type, y->type);
        assert_int_equal(x->len, y->len);
        if (x->len)
            assert_memory_equal(x->data, y->data, x->len);
    }
    assert_true(a->snap.index == b->snap.index);
    assert_true(a->snap.term == b->snap.term);
    assert_int_equal(a->snap.conf.n_voters, b->snap.conf.n_voters);
    assert_int_equal(a->snap.conf.n_learners, b->snap.conf.n_learners);
    for (uint32_t k = 0; k < a->snap.conf.n_voters; k++)
        assert_true(a->snap.conf.voters[k] == b->snap.conf.voters[k]);
    for (uint32_t k = 0; k < a->snap.conf.n_learners; k++)
        assert_true(a->snap.conf.learners[k] == b->snap.conf.learners[k]);
    assert_int_equal(a->chunk_seq, b->chunk_seq);
    assert_int_equal(a->chunk_last, b->chunk_last);
    assert_int_equal(a->chunk_len, b->chunk_len);
    if (a->chunk_len)
        assert_memory_equal(a->chunk_data, b->chunk_data, a->chunk_len);
}

/* The decoder's order: non-coalescible messages, heartbeats, responses. */
static void expected_order(const struct msgset *s, uint64_t from, uint64_t to,
                           const struct raft_msg **out)
{
    uint32_t k = 0;
    for (int pass = 0; pass < 3; pass++) {
        for (uint32_t i = 0; i < s->n; i++) {
            const struct raft_msg *m = &s->msgs[i];
            bool hb = (m->type == RAFT_MSG_HEARTBEAT ||
                       m->type == RAFT_MSG_HEARTBEAT_RESP) &&
                      m->from == from && m->to == to && m->index == 0 &&
                      m->log_term == 0 && m->n_entries == 0 && !m->reject &&
                      m->hint_index == 0 && m->hint_term == 0 &&
                      m->snap.index == 0 && m->snap.term == 0 &&
                      m->snap.conf.n_voters == 0 &&
                      m->snap.conf.n_learners == 0 && m->chunk_seq == 0 &&
                      !m->chunk_last && m->chunk_len == 0;
            int cls = !hb ? 0 : m->type == RAFT_MSG_HEARTBEAT ? 1 : 2;
            if (cls == pass)
                out[k++] = m;
        }
    }
    assert_int_equal(k, s->n);
}

struct collect {
    const struct raft_msg **want;
    uint32_t n;
    uint32_t stop_at; /* return 99 from this message on (UINT32_MAX: never) */
};

static int check_cb(void *arg, const struct raft_msg *m)
{
    struct collect *c = arg;
    if (c->n == c->stop_at)
        return 99;
    assert_msg_equal(m, c->want[c->n]);
    c->n++;
    return 0;
}

/* The fast path and protobuf-c decode buf alike: the same code, and the
 * same messages. Returns the code. */
static int same_decode(const uint8_t *buf, size_t len)
{
    struct raft_codec_limits slow;
    raft_codec_limits_default(&slow);
    slow.protobuf_c_only = true;
    struct raft_codec_batch a, b;
    int rc = raft_codec_batch_decode_all(buf, len, NULL, &a);
    assert_int_equal(raft_codec_batch_decode_all(buf, len, &slow, &b), rc);
    if (rc != 0)
        return rc;
    assert_true(a.from == b.from && a.to == b.to);
    assert_int_equal(a.n_msgs, b.n_msgs);
    for (uint32_t i = 0; i < a.n_msgs; i++)
        assert_msg_equal(&a.msgs[i], &b.msgs[i]);
    raft_codec_batch_free(&a);
    raft_codec_batch_free(&b);
    return 0;
}

static void round_trip(const struct msgset *s, uint64_t from, uint64_t to)
{
    uint8_t *buf;
    size_t len;
    assert_int_equal(
        raft_codec_batch_encode(from, to, s->ptrs, s->n, NULL, &buf, &len), 0);
    /* The encoder writes the wire bytes itself: they must be the ones
     * protobuf-c packs for the same PeerBatch. */
    Ringkv__PeerBatch *pb = ringkv__peer_batch__unpack(NULL, len, buf);
    assert_non_null(pb);
    size_t plen = ringkv__peer_batch__get_packed_size(pb);
    assert_int_equal(plen, len);
    uint8_t *pbuf = malloc(plen + 1);
    assert_non_null(pbuf);
    assert_int_equal(ringkv__peer_batch__pack(pb, pbuf), len);
    assert_memory_equal(pbuf, buf, len);
    free(pbuf);
    ringkv__peer_batch__free_unpacked(pb, NULL);

    const struct raft_msg **want = calloc(s->n + 1, sizeof(*want));
    expected_order(s, from, to, want);

    uint64_t f = 0, t = 0;
    struct collect c = {.want = want, .n = 0, .stop_at = UINT32_MAX};
    assert_int_equal(
        raft_codec_batch_decode(buf, len, NULL, &f, &t, check_cb, &c), 0);
    assert_int_equal(c.n, s->n);
    assert_true(f == from && t == to);

    struct raft_codec_batch b;
    assert_int_equal(raft_codec_batch_decode_all(buf, len, NULL, &b), 0);
    assert_int_equal(b.n_msgs, s->n);
    assert_true(b.from == from && b.to == to);
    for (uint32_t i = 0; i < b.n_msgs; i++) {
        assert_msg_equal(&b.msgs[i], want[i]);
        /* Our own batches take the fast path: payloads are not copied. */
        for (uint32_t k = 0; k < b.msgs[i].n_entries; k++)
            if (b.msgs[i].entries[k].len)
                assert_true((const uint8_t *)b.msgs[i].entries[k].data >=
                                buf &&
                            (const uint8_t *)b.msgs[i].entries[k].data <
                                buf + len);
    }
    raft_codec_batch_free(&b);
    assert_int_equal(same_decode(buf, len), 0);
    free(want);
    free(buf);
}

static struct msgset *msgset_new(void)
{
    struct msgset *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    return s;
}

/* -------------------------------------------------------------- tests */

static void test_round_trip_every_type(void **state)
{
    (void)state;
    struct rk_rand r;
    rk_rand_seed(&r, 1);
    struct msgset *s = msgset_new();
    for (int round = 0; round < 200; round++) {
        for (uint8_t type = 0; type < RAFT_MSG__COUNT; type++) {
            s->n = 0;
            random_msg(&r, s, type, 7, 9);
            round_trip(s, 7, 9);
        }
    }
    free(s);
}

static void test_round_trip_mixed_batches(void **state)
{
    (void)state;
    struct rk_rand r;
    rk_rand_seed(&r, 2);
    struct msgset *s = msgset_new();
    for (int round = 0; round < 50; round++) {
        s->n = 0;
        uint32_t n = (uint32_t)rk_rand_below(&r, 200);
        for (uint32_t i = 0; i < n; i++) {
            if (rk_rand_below(&r, 2))
                plain_hb(s,
                         rk_rand_below(&r, 2) ? RAFT_MSG_HEARTBEAT
                                              : RAFT_MSG_HEARTBEAT_RESP,
                         rnd_u64(&r), 3, 4, rnd_u64(&r),
                         rk_rand_below(&r, 2) ? rnd_u64(&r) : 0,
                         rk_rand_below(&r, 2) ? rnd_u64(&r) : 0);
            else
                random_msg(&r, s, (uint8_t)rk_rand_below(&r, RAFT_MSG__COUNT),
                           3, 4);
        }
        round_trip(s, 3, 4);
    }
    free(s);
}

static void test_empty_batch_is_a_keepalive(void **state)
{
    (void)state;
    struct msgset *s = msgset_new();
    round_trip(s, 1, 2);
    uint8_t *buf;
    size_t len;
    assert_int_equal(raft_codec_batch_encode(1, 2, NULL, 0, NULL, &buf, &len),
                     0);
    assert_true(len > 0 && len <= 4);
    free(buf);
    free(s);
}

static void test_heartbeats_are_coalesced(void **state)
{
    (void)state;
    /* 1000 idle shards' heartbeats: a few bytes each, not a message each. */
    struct msgset *s = msgset_new();
    for (uint64_t sh = 1; sh <= 1000; sh++)
        plain_hb(s, RAFT_MSG_HEARTBEAT, sh, 1, 2, 5, 100 + sh, 0);
    uint8_t *buf;
    size_t len;
    assert_int_equal(
        raft_codec_batch_encode(1, 2, s->ptrs, s->n, NULL, &buf, &len), 0);
    assert_true(len < 1000 * 6);
    free(buf);
    round_trip(s, 1, 2);

    /* A heartbeat with extra fields is not coalesced, and still exact. */
    s->n = 0;
    plain_hb(s, RAFT_MSG_HEARTBEAT, 1, 1, 2, 5, 0, 0);
    plain_hb(s, RAFT_MSG_HEARTBEAT_RESP, 1, 1, 2, 5, 0, 0);
    s->msgs[1].reject = true;
    plain_hb(s, RAFT_MSG_HEARTBEAT, 2, 8, 2, 5, 0, 0); /* other sender */
    round_trip(s, 1, 2);
    free(s);
}

static void test_callback_error_stops_decoding(void **state)
{
    (void)state;
    struct msgset *s = msgset_new();
    for (uint64_t sh = 1; sh <= 10; sh++)
        plain_hb(s, RAFT_MSG_HEARTBEAT, sh, 1, 2, 5, 0, 0);
    uint8_t *buf;
    size_t len;
    assert_int_equal(
        raft_codec_batch_encode(1, 2, s->ptrs, s->n, NULL, &buf, &len), 0);
    const struct raft_msg *want[10];
    expected_order(s, 1, 2, want);
    struct collect c = {.want = want, .n = 0, .stop_at = 3};
    assert_int_equal(
        raft_codec_batch_decode(buf, len, NULL, NULL, NULL, check_cb, &c), 99);
    assert_int_equal(c.n, 3);
    free(buf);
    free(s);
}

static void test_encode_rejects_bad_messages(void **state)
{
    (void)state;
    struct msgset *s = msgset_new();
    struct rk_rand r;
    rk_rand_seed(&r, 3);
    struct rk_buf out;
    rk_buf_init(&out);
    assert_int_equal(rk_buf_append(&out, "hdr", 3), 0);

    random_msg(&r, s, RAFT_MSG_VOTE, 1, 2);
    struct raft_msg *m = &s->msgs[0];
    const struct raft_msg *one[1] = {m};
    struct raft_msg saved = *m;

    m->type = RAFT_MSG__COUNT;
    assert_int_equal(raft_codec_batch_append(1, 2, one, 1, NULL, &out),
                     RK_EINVAL);
    *m = saved;
    m->from = 0;
    assert_int_equal(raft_codec_batch_append(1, 2, one, 1, NULL, &out),
                     RK_EINVAL);
    *m = saved;
    m->n_entries = 1; /* entries on a vote, and no array */
    assert_int_equal(raft_codec_batch_append(1, 2, one, 1, NULL, &out),
                     RK_EINVAL);
    *m = saved;
    m->chunk_len = 3; /* chunk on a vote */
    m->chunk_data = s->data[0];
    assert_int_equal(raft_codec_batch_append(1, 2, one, 1, NULL, &out),
                     RK_EINVAL);
    *m = saved;
    m->snap.conf.n_voters = 10;
    m->snap.conf.n_learners = 7;
    assert_int_equal(raft_codec_batch_append(1, 2, one, 1, NULL, &out),
                     RK_EINVAL);
    *m = saved;
    assert_int_equal(raft_codec_batch_append(0, 2, one, 1, NULL, &out),
                     RK_EINVAL);

    /* Non-consecutive entry indexes. */
    s->n = 0;
    random_msg(&r, s, RAFT_MSG_APPEND, 1, 2);
    while (s->msgs[0].n_entries < 2) {
        s->n = 0;
        random_msg(&r, s, RAFT_MSG_APPEND, 1, 2);
    }
    s->ents[0][1].index++;
    assert_int_equal(raft_codec_batch_append(1, 2, one, 1, NULL, &out),
                     RK_EINVAL);
    /* Nothing was appended by the failed calls. */
    assert_int_equal(out.len, 3);
    rk_buf_free(&out);
    free(s);
}

static void test_encode_limits(void **state)
{
    (void)state;
    struct msgset *s = msgset_new();
    struct raft_codec_limits lim;
    raft_codec_limits_default(&lim);
    struct rk_buf out;
    rk_buf_init(&out);

    for (uint64_t sh = 1; sh <= 100; sh++)
        plain_hb(s, RAFT_MSG_HEARTBEAT, sh, 1, 2, 5, 0, 0);
    lim.max_msgs = 99;
    assert_int_equal(raft_codec_batch_append(1, 2, s->ptrs, 100, &lim, &out),
                     RK_ETOOLARGE);
    lim.max_msgs = 100;
    lim.max_batch_bytes = 50;
    assert_int_equal(raft_codec_batch_append(1, 2, s->ptrs, 100, &lim, &out),
                     RK_ETOOLARGE);
    assert_int_equal(out.len, 0);
    raft_codec_limits_default(&lim);

    struct rk_rand r;
    rk_rand_seed(&r, 4);
    s->n = 0;
    random_msg(&r, s, RAFT_MSG_SNAPSHOT, 1, 2);
    s->msgs[0].chunk_len = 64;
    s->msgs[0].chunk_data = s->data[0];
    lim.max_chunk_bytes = 63;
    assert_int_equal(raft_codec_batch_append(1, 2, s->ptrs, 1, &lim, &out),
                     RK_ETOOLARGE);
    lim.max_chunk_bytes = 64;
    assert_int_equal(raft_codec_batch_append(1, 2, s->ptrs, 1, &lim, &out), 0);
    assert_true(out.len > 64);
    rk_buf_free(&out);
    free(s);
}

/* ------------------------------------------- hand-made bad PeerBatches */

/* Packs a PeerBatch built field by field (the encoder refuses to). */
static int decode_pb(const Ringkv__PeerBatch *pb,
                     const struct raft_codec_limits *lim)
{
    size_t n = ringkv__peer_batch__get_packed_size(pb);
    uint8_t *buf = malloc(n + 1);
    ringkv__peer_batch__pack(pb, buf);
    struct raft_codec_batch b;
    int rc = raft_codec_batch_decode_all(buf, n, lim, &b);
    if (rc == 0)
        raft_codec_batch_free(&b);
    free(buf);
    return rc;
}

struct bad {
    Ringkv__PeerBatch pb;
    Ringkv__RaftMessage m;
    Ringkv__RaftMessage *mp;
    Ringkv__RaftEntry e[3];
    Ringkv__RaftEntry *ep[3];
    Ringkv__RaftSnapshotMeta snap;
    Ringkv__RaftConfState conf;
    uint64_t ids[40];
    Ringkv__CoalescedHeartbeats hb;
    uint64_t col[8];
    uint8_t data[256];
};

/* A valid one-message batch: APPEND of 3 entries from 1 to 2. */
static void bad_init(struct bad *b)
{
    memset(b, 0, sizeof(*b));
    ringkv__peer_batch__init(&b->pb);
    b->pb.from = 1;
    b->pb.to = 2;
    ringkv__raft_message__init(&b->m);
    b->m.type = RINGKV__RAFT_MESSAGE__TYPE__APPEND;
    b->m.term = 5;
    b->m.index = 10;
    b->m.log_term = 4;
    for (int k = 0; k < 3; k++) {
        ringkv__raft_entry__init(&b->e[k]);
        b->e[k].term = 5;
        b->e[k].index = 11 + (uint64_t)k;
        b->e[k].data.len = 10;
        b->e[k].data.data = b->data;
        b->ep[k] = &b->e[k];
    }
    b->m.n_entries = 3;
    b->m.entries = b->ep;
    b->mp = &b->m;
    b->pb.n_msgs = 1;
    b->pb.msgs = &b->mp;
    ringkv__raft_snapshot_meta__init(&b->snap);
    ringkv__raft_conf_state__init(&b->conf);
    b->snap.conf = &b->conf;
    b->conf.voters = b->ids;
    b->conf.learners = b->ids + 20;
    ringkv__coalesced_heartbeats__init(&b->hb);
    b->hb.shards = b->col;
    b->hb.terms = b->col + 2;
    b->hb.commits = b->col + 4;
    b->hb.contexts = b->col + 6;
}

static void test_decode_rejects_bad_fields(void **state)
{
    (void)state;
    struct bad *b = malloc(sizeof(*b));
    struct raft_codec_limits lim;
    raft_codec_limits_default(&lim);

    bad_init(b);
    assert_int_equal(decode_pb(&b->pb, NULL), 0);

    bad_init(b);
    b->m.type = (Ringkv__RaftMessage__Type)11;
    assert_int_equal(decode_pb(&b->pb, NULL), RK_EPROTO);
    bad_init(b);
    b->m.type = (Ringkv__RaftMessage__Type)-1;
    assert_int_equal(decode_pb(&b->pb, NULL), RK_EPROTO);

    bad_init(b);
    b->e[1].type = (Ringkv__RaftEntry__Type)3;
    assert_int_equal(decode_pb(&b->pb, NULL), RK_EPROTO);

    bad_init(b);
    b->e[2].index = 14; /* gap */
    assert_int_equal(decode_pb(&b->pb, NULL), RK_EPROTO);

    bad_init(b);
    b->m.index = UINT64_MAX - 1; /* indexes would wrap */
    assert_int_equal(decode_pb(&b->pb, NULL), RK_EPROTO);

    bad_init(b);
    b->m.type = RINGKV__RAFT_MESSAGE__TYPE__VOTE; /* entries on a vote */
    assert_int_equal(decode_pb(&b->pb, NULL), RK_EPROTO);

    bad_init(b);
    lim.max_entries = 2;
    assert_int_equal(decode_pb(&b->pb, &lim), RK_EPROTO);
    raft_codec_limits_default(&lim);

    bad_init(b);
    lim.max_entry_bytes = 9;
    assert_int_equal(decode_pb(&b->pb, &lim), RK_EPROTO);
    raft_codec_limits_default(&lim);

    bad_init(b);
    b->m.chunk_data.len = 5; /* chunk on an append */
    b->m.chunk_data.data = b->data;
    assert_int_equal(decode_pb(&b->pb, NULL), RK_EPROTO);

    bad_init(b);
    b->m.type = RINGKV__RAFT_MESSAGE__TYPE__SNAPSHOT;
    b->m.n_entries = 0;
    b->m.chunk_data.len = 200;
    b->m.chunk_data.data = b->data;
    assert_int_equal(decode_pb(&b->pb, NULL), 0);
    lim.max_chunk_bytes = 199;
    assert_int_equal(decode_pb(&b->pb, &lim), RK_EPROTO);
    raft_codec_limits_default(&lim);

    bad_init(b);
    b->m.snap = &b->snap;
    b->conf.n_voters = RAFT_MAX_MEMBERS;
    assert_int_equal(decode_pb(&b->pb, NULL), 0);
    b->conf.n_voters = RAFT_MAX_MEMBERS + 1;
    assert_int_equal(decode_pb(&b->pb, NULL), RK_EPROTO);
    b->conf.n_voters = 9;
    b->conf.n_learners = 8;
    assert_int_equal(decode_pb(&b->pb, NULL), RK_EPROTO);
    b->conf.n_voters = 0;
    b->conf.n_learners = 17;
    assert_int_equal(decode_pb(&b->pb, NULL), RK_EPROTO);

    bad_init(b);
    b->pb.from = 0;
    assert_int_equal(decode_pb(&b->pb, NULL), RK_EPROTO);
    bad_init(b);
    b->pb.to = 0;
    assert_int_equal(decode_pb(&b->pb, NULL), RK_EPROTO);

    /* Coalesced columns of unequal length. */
    bad_init(b);
    b->pb.heartbeats = &b->hb;
    b->hb.n_shards = 2;
    b->hb.n_terms = 2;
    assert_int_equal(decode_pb(&b->pb, NULL), 0);
    b->hb.n_terms = 1;
    assert_int_equal(decode_pb(&b->pb, NULL), RK_EPROTO);
    b->hb.n_terms = 2;
    b->hb.n_commits = 1;
    assert_int_equal(decode_pb(&b->pb, NULL), RK_EPROTO);
    b->hb.n_commits = 2;
    b->hb.n_contexts = 3;
    assert_int_equal(decode_pb(&b->pb, NULL), RK_EPROTO);
    b->hb.n_contexts = 2;
    assert_int_equal(decode_pb(&b->pb, NULL), 0);
    /* 1 message + 2 heartbeats over a limit of 2. */
    lim.max_msgs = 2;
    assert_int_equal(decode_pb(&b->pb, &lim), RK_EPROTO);
    raft_codec_limits_default(&lim);
    free(b);
}

static void test_decode_memory_and_size_bounds(void **state)
{
    (void)state;
    /* 20000 empty messages: 40 KB on the wire, ~4 MB unpacked. A small
     * explicit memory budget refuses them. */
    size_t n = 20000;
    uint8_t *buf = malloc(2 * n + 8);
    size_t len = 0;
    buf[len++] = 0x08; /* from = 1 */
    buf[len++] = 1;
    buf[len++] = 0x10; /* to = 2 */
    buf[len++] = 2;
    for (size_t i = 0; i < n; i++) {
        buf[len++] = 0x1a; /* field 3, length-delimited */
        buf[len++] = 0;
    }
    struct raft_codec_limits lim;
    raft_codec_limits_default(&lim);
    lim.max_decode_mem = 64 << 10;
    struct raft_codec_batch b;
    assert_int_equal(raft_codec_batch_decode_all(buf, len, &lim, &b),
                     RK_ETOOLARGE);
    /* The default budget is sized from the counted messages: they decode
     * (they are valid PREVOTEs from 1 to 2). */
    assert_int_equal(raft_codec_batch_decode_all(buf, len, NULL, &b), 0);
    assert_int_equal(b.n_msgs, n);
    assert_int_equal(b.msgs[n - 1].type, RAFT_MSG_PREVOTE);
    assert_true(b.msgs[n - 1].from == 1 && b.msgs[n - 1].to == 2);
    raft_codec_batch_free(&b);
    /* More messages than the limit: refused by the wire scan. */
    raft_codec_limits_default(&lim);
    lim.max_msgs = 19999;
    assert_int_equal(raft_codec_batch_decode_all(buf, len, &lim, &b),
                     RK_EPROTO);
    raft_codec_limits_default(&lim);
    lim.max_batch_bytes = len - 1;
    assert_int_equal(raft_codec_batch_decode_all(buf, len, &lim, &b),
                     RK_ETOOLARGE);
    raft_codec_limits_default(&lim);

    /* One message repeating its (singular) snap field 20000 times: each
     * occurrence is unpacked on its own, which the count-sized budget does
     * not cover. */
    len = 0;
    buf[len++] = 0x08; /* from = 1 */
    buf[len++] = 1;
    buf[len++] = 0x10; /* to = 2 */
    buf[len++] = 2;
    buf[len++] = 0x1a; /* one message of 40000 bytes */
    buf[len++] = 0xc0;
    buf[len++] = 0xb8;
    buf[len++] = 0x02;
    for (size_t i = 0; i < n; i++) {
        buf[len++] = 0x72; /* field 14 (snap), empty */
        buf[len++] = 0;
    }
    assert_int_equal(raft_codec_batch_decode_all(buf, len, NULL, &b),
                     RK_ETOOLARGE);

    /* An entry count over the limit is refused by the wire scan. */
    lim.max_entries = 3;
    len = 0;
    buf[len++] = 0x08;
    buf[len++] = 1;
    buf[len++] = 0x10;
    buf[len++] = 2;
    buf[len++] = 0x1a;
    buf[len++] = 8;
    for (int i = 0; i < 4; i++) {
        buf[len++] = 0x4a; /* field 9 (entries), empty */
        buf[len++] = 0;
    }
    assert_int_equal(raft_codec_batch_decode_all(buf, len, &lim, &b),
                     RK_EPROTO);
    /* A group (wire type 3) is not supported. */
    static const uint8_t group[] = {0x08, 1, 0x10, 2, 0x1b, 0x1c};
    assert_int_equal(raft_codec_batch_decode_all(group, sizeof group, NULL, &b),
                     RK_EPROTO);
    free(buf);
}

static int any_cb(void *arg, const struct raft_msg *m)
{
    /* Whatever the decoder accepts obeys raft.h's structural rules. */
    (void)arg;
    assert_true(m->type < RAFT_MSG__COUNT);
    assert_true(m->from != 0 && m->to != 0);
    assert_true(m->n_entries == 0 || m->type == RAFT_MSG_APPEND);
    assert_true(m->chunk_len == 0 || m->type == RAFT_MSG_SNAPSHOT);
    assert_true(m->snap.conf.n_voters + m->snap.conf.n_learners <=
                RAFT_MAX_MEMBERS);
    for (uint32_t k = 0; k < m->n_entries; k++)
        assert_true(m->entries[k].index == m->index + 1 + k);
    return 0;
}

static void test_garbage_truncated_and_mutated_input(void **state)
{
    (void)state;
    struct rk_rand r;
    rk_rand_seed(&r, 5);
    uint8_t junk[512];
    int rejected = 0;
    for (int i = 0; i < 20000; i++) {
        size_t len = (size_t)rk_rand_below(&r, sizeof junk);
        for (size_t k = 0; k < len; k++)
            junk[k] = (uint8_t)rk_rand_next(&r);
        int rc =
            raft_codec_batch_decode(junk, len, NULL, NULL, NULL, any_cb, NULL);
        assert_true(rc == 0 || rc == RK_EPROTO || rc == RK_ETOOLARGE);
        assert_int_equal(same_decode(junk, len), rc);
        rejected += rc != 0;
    }
    assert_true(rejected > 19000);

    /* A rich valid batch, then every prefix and every single-byte change. */
    struct msgset *s = msgset_new();
    for (int i = 0; i < 30; i++)
        random_msg(&r, s, (uint8_t)(i % RAFT_MSG__COUNT), 1, 2);
    for (uint64_t sh = 1; sh <= 10; sh++)
        plain_hb(s, RAFT_MSG_HEARTBEAT, sh, 1, 2, 5, sh, 0);
    uint8_t *buf;
    size_t len;
    assert_int_equal(
        raft_codec_batch_encode(1, 2, s->ptrs, s->n, NULL, &buf, &len), 0);
    int truncated_rejected = 0;
    for (size_t cut = 0; cut < len; cut++) {
        int rc =
            raft_codec_batch_decode(buf, cut, NULL, NULL, NULL, any_cb, NULL);
        assert_true(rc == 0 || rc == RK_EPROTO);
        assert_int_equal(same_decode(buf, cut), rc);
        truncated_rejected += rc != 0;
    }
    /* Most cuts land inside a field; a cut between top-level fields is a
     * valid shorter batch. */
    assert_true(truncated_rejected > (int)len / 2);
    uint8_t *mut = malloc(len);
    for (size_t pos = 0; pos < len; pos++) {
        memcpy(mut, buf, len);
        mut[pos] ^= (uint8_t)(1 + rk_rand_below(&r, 255));
        int rc =
            raft_codec_batch_decode(mut, len, NULL, NULL, NULL, any_cb, NULL);
        assert_true(rc == 0 || rc == RK_EPROTO || rc == RK_ETOOLARGE);
        assert_int_equal(same_decode(mut, len), rc);
    }
    free(mut);
    free(buf);
    free(s);
}

/* Random batches with a few bytes changed, cut or appended: the fast path
 * and protobuf-c agree on every one (accepted or not, and on what). */
static void test_fast_path_agrees_with_protobuf_c(void **state)
{
    (void)state;
    struct rk_rand r;
    rk_rand_seed(&r, 6);
    struct msgset *s = msgset_new();
    int accepted = 0;
    for (int round = 0; round < 3000; round++) {
        s->n = 0;
        uint32_t n = 1 + (uint32_t)rk_rand_below(&r, 12);
        for (uint32_t i = 0; i < n; i++) {
            if (rk_rand_below(&r, 3) == 0)
                plain_hb(s, rk_rand_below(&r, 2) ? RAFT_MSG_HEARTBEAT
                                                 : RAFT_MSG_HEARTBEAT_RESP,
                         rk_rand_below(&r, 100), 1, 2, rk_rand_below(&r, 9),
                         rk_rand_below(&r, 2) ? rnd_u64(&r) : 0,
                         rk_rand_below(&r, 2) ? rnd_u64(&r) : 0);
            else
                random_msg(&r, s, (uint8_t)rk_rand_below(&r, RAFT_MSG__COUNT),
                           1, 2);
        }
        struct rk_buf b;
        rk_buf_init(&b);
        assert_int_equal(raft_codec_batch_append(1, 2, s->ptrs, s->n, NULL, &b),
                         0);
        uint8_t *p;
        assert_int_equal(rk_buf_tail(&b, 8, &p, NULL), 0);
        uint32_t changes = (uint32_t)rk_rand_below(&r, 4);
        for (uint32_t k = 0; k < changes; k++)
            b.data[rk_rand_below(&r, b.len)] = (uint8_t)rk_rand_next(&r);
        size_t len = b.len;
        uint32_t how = (uint32_t)rk_rand_below(&r, 4);
        if (how == 0)
            len = (size_t)rk_rand_below(&r, b.len + 1);
        else if (how == 1) {
            /* An extra (possibly unknown or repeated) field at the end. */
            uint32_t extra = 1 + (uint32_t)rk_rand_below(&r, 8);
            for (uint32_t k = 0; k < extra; k++)
                p[k] = (uint8_t)rk_rand_next(&r);
            len += extra;
        }
        accepted += same_decode(b.data, len) == 0;
        rk_buf_free(&b);
    }
    /* Both kinds were seen. */
    assert_true(accepted > 300 && accepted < 2900);
    free(s);
}

/* ------------------------------------------------------------- hello */

static void test_hello_round_trip_and_rejects(void **state)
{
    (void)state;
    struct raft_codec_hello h = {
        .version = RAFT_CODEC_PEER_VERSION,
        .cluster_id = 0xabcdef,
        .node_id = 3,
        .to_node_id = 5,
        .ack = true,
    };
    strcpy(h.peer_addr, "127.0.0.3:7001");
    strcpy(h.client_addr, "127.0.0.3:6001");
    struct rk_buf b;
    rk_buf_init(&b);
    assert_int_equal(raft_codec_hello_append(&h, &b), 0);
    struct raft_codec_hello g;
    assert_int_equal(raft_codec_hello_decode(b.data, b.len, &g), 0);
    assert_int_equal(g.version, 1);
    assert_true(g.cluster_id == 0xabcdef && g.node_id == 3 &&
                g.to_node_id == 5 && g.ack);
    assert_string_equal(g.peer_addr, "127.0.0.3:7001");
    assert_string_equal(g.client_addr, "127.0.0.3:6001");

    for (size_t cut = 0; cut < b.len; cut++) {
        int rc = raft_codec_hello_decode(b.data, cut, &g);
        assert_true(rc == 0 || rc == RK_EPROTO);
    }
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(raft_codec_hello_decode(junk, sizeof junk, &g), RK_EPROTO);
    assert_int_equal(raft_codec_hello_decode(junk, 0, &g), RK_EPROTO);

    /* Hand-made: an address over the limit, version 0, node 0. */
    Ringkv__PeerHello ph;
    ringkv__peer_hello__init(&ph);
    char longaddr[300];
    memset(longaddr, 'a', sizeof longaddr - 1);
    longaddr[sizeof longaddr - 1] = '\0';
    ph.version = 1;
    ph.node_id = 1;
    ph.peer_addr = longaddr;
    uint8_t out[512];
    size_t n = ringkv__peer_hello__pack(&ph, out);
    assert_int_equal(raft_codec_hello_decode(out, n, &g), RK_EPROTO);
    ph.peer_addr = (char *)"x";
    ph.version = 0;
    n = ringkv__peer_hello__pack(&ph, out);
    assert_int_equal(raft_codec_hello_decode(out, n, &g), RK_EPROTO);
    ph.version = 1;
    ph.node_id = 0;
    n = ringkv__peer_hello__pack(&ph, out);
    assert_int_equal(raft_codec_hello_decode(out, n, &g), RK_EPROTO);
    uint8_t big[RAFT_CODEC_HELLO_MAX_BYTES + 1] = {0};
    assert_int_equal(raft_codec_hello_decode(big, sizeof big, &g),
                     RK_ETOOLARGE);

    h.node_id = 0;
    assert_int_equal(raft_codec_hello_append(&h, &b), RK_EINVAL);
    rk_buf_free(&b);
}

/* raft_codec copies struct raft_msg field by field. If raft.h grows a
 * field, this fails: add it to raft.proto's RaftMessage, to msg_size,
 * put_msg, fast_msg and dec_msg in proto/raft_codec.c, to
 * random_msg/assert_msg_equal here and to msg_equal in
 * tests/fuzz/fuzz_entry.c, then update the sizes below. */
static void test_raft_msg_layout_is_the_one_encoded(void **state)
{
    (void)state;
    if (sizeof(void *) != 8)
        skip();
    assert_int_equal(sizeof(struct raft_msg), 408);
    assert_int_equal(sizeof(struct raft_entry), 32);
    assert_int_equal(sizeof(struct raft_snapshot_meta), 280);
    assert_int_equal(RAFT_MSG__COUNT, 11);
    assert_int_equal(RAFT_ENTRY_NOOP, 2);
}

int test_proto_codec_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_raft_msg_layout_is_the_one_encoded),
        cmocka_unit_test(test_round_trip_every_type),
        cmocka_unit_test(test_round_trip_mixed_batches),
        cmocka_unit_test(test_empty_batch_is_a_keepalive),
        cmocka_unit_test(test_heartbeats_are_coalesced),
        cmocka_unit_test(test_callback_error_stops_decoding),
        cmocka_unit_test(test_encode_rejects_bad_messages),
        cmocka_unit_test(test_encode_limits),
        cmocka_unit_test(test_decode_rejects_bad_fields),
        cmocka_unit_test(test_decode_memory_and_size_bounds),
        cmocka_unit_test(test_garbage_truncated_and_mutated_input),
        cmocka_unit_test(test_fast_path_agrees_with_protobuf_c),
        cmocka_unit_test(test_hello_round_trip_and_rejects),
    };
    return cmocka_run_group_tests_name("proto_codec", tests, NULL, NULL);
}
