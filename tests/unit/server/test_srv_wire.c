/* Unit tests of the peer batch codec: round trip, truncation, garbage. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rk_rand.h"
#include "srv_wire.h"

struct got {
    struct raft_msg msgs[8];
    struct raft_entry ents[8][4];
    char data[8][4][32];
    uint8_t chunk[8][32];
    int n;
};

static int collect(void *arg, const struct raft_msg *m)
{
    struct got *g = arg;
    if (g->n == 8)
        return RK_EINVAL;
    struct raft_msg *c = &g->msgs[g->n];
    *c = *m;
    for (uint32_t k = 0; k < m->n_entries && k < 4; k++) {
        g->ents[g->n][k] = m->entries[k];
        if (m->entries[k].len > 0)
            memcpy(g->data[g->n][k], m->entries[k].data, m->entries[k].len);
        g->ents[g->n][k].data = g->data[g->n][k];
    }
    c->entries = g->ents[g->n];
    if (m->chunk_len > 0) {
        memcpy(g->chunk[g->n], m->chunk_data, m->chunk_len);
        c->chunk_data = g->chunk[g->n];
    }
    g->n++;
    return 0;
}

static void make_msgs(struct raft_msg *m, struct raft_entry *e)
{
    memset(m, 0, 3 * sizeof(*m));
    e[0] = (struct raft_entry){.term = 3, .index = 10, .type = 0, .len = 5,
                               .data = "hello"};
    e[1] = (struct raft_entry){.term = 3, .index = 11, .type = 2, .len = 0,
                               .data = ""};
    m[0] = (struct raft_msg){.type = RAFT_MSG_APPEND, .shard = 7, .from = 1,
                             .to = 2, .term = 3, .index = 9, .log_term = 2,
                             .commit = 8, .entries = e, .n_entries = 2};
    m[1] = (struct raft_msg){.type = RAFT_MSG_HEARTBEAT, .shard = 8,
                             .from = 1, .to = 2, .term = 4, .commit = 1,
                             .context = 99};
    m[2] = (struct raft_msg){.type = RAFT_MSG_SNAPSHOT, .shard = 9, .from = 1,
                             .to = 2, .term = 5, .chunk_seq = 2,
                             .chunk_last = true, .chunk_len = 3,
                             .chunk_data = "abc", .reject = true,
                             .hint_index = 4, .hint_term = 1};
    m[2].snap.index = 20;
    m[2].snap.term = 4;
    m[2].snap.conf.n_voters = 3;
    m[2].snap.conf.voters[0] = 1;
    m[2].snap.conf.voters[1] = 2;
    m[2].snap.conf.voters[2] = 3;
    m[2].snap.conf.n_learners = 1;
    m[2].snap.conf.learners[0] = 4;
}

static void test_round_trip(void **state)
{
    struct raft_msg m[3];
    struct raft_entry e[2];
    make_msgs(m, e);
    const struct raft_msg *pm[3] = {&m[0], &m[1], &m[2]};
    uint8_t *buf;
    size_t len;
    assert_int_equal(srv_wire_encode(1, 2, pm, 3, 1 << 20, &buf, &len), 0);
    static struct got g;
    memset(&g, 0, sizeof(g));
    assert_int_equal(srv_wire_decode(buf, len, 1, 2, 1 << 20, collect, &g),
                     0);
    assert_int_equal(g.n, 3);
    /* The codec moves coalesced heartbeats after the other messages. */
    assert_int_equal(g.msgs[0].type, RAFT_MSG_APPEND);
    assert_int_equal(g.msgs[1].type, RAFT_MSG_SNAPSHOT);
    assert_int_equal(g.msgs[2].type, RAFT_MSG_HEARTBEAT);
    assert_int_equal(g.msgs[2].context, 99);
    assert_int_equal(g.msgs[2].n_entries, 0);
    assert_int_equal(g.msgs[2].shard, 8);
    assert_int_equal(g.msgs[0].shard, 7);
    assert_int_equal(g.msgs[0].index, 9);
    assert_int_equal(g.msgs[0].log_term, 2);
    assert_int_equal(g.msgs[0].commit, 8);
    assert_int_equal(g.msgs[0].n_entries, 2);
    assert_int_equal(g.ents[0][0].index, 10);
    assert_memory_equal(g.data[0][0], "hello", 5);
    assert_int_equal(g.ents[0][1].type, 2);
    assert_int_equal(g.ents[0][1].len, 0);
    assert_int_equal(g.msgs[1].snap.index, 20);
    assert_int_equal(g.msgs[1].snap.conf.n_voters, 3);
    assert_int_equal(g.msgs[1].snap.conf.voters[2], 3);
    assert_int_equal(g.msgs[1].snap.conf.learners[0], 4);
    assert_true(g.msgs[1].chunk_last);
    assert_true(g.msgs[1].reject);
    assert_int_equal(g.msgs[1].hint_index, 4);
    assert_memory_equal(g.chunk[1], "abc", 3);

    /* A batch from or to another node than the connection's is refused,
     * and nothing is handed out. */
    memset(&g, 0, sizeof(g));
    assert_int_equal(srv_wire_decode(buf, len, 3, 2, 1 << 20, collect, &g),
                     RK_EPROTO);
    assert_int_equal(srv_wire_decode(buf, len, 1, 3, 1 << 20, collect, &g),
                     RK_EPROTO);
    assert_int_equal(g.n, 0);
    /* Truncations never read out of bounds (ASan) and are all-or-nothing:
     * a cut that fails hands out no message (a cut at a field boundary can
     * be a valid, shorter protobuf message). Most cuts fail. */
    size_t failed = 0;
    for (size_t cut = 1; cut < len; cut++) {
        memset(&g, 0, sizeof(g));
        uint8_t *copy = malloc(cut);
        memcpy(copy, buf, cut);
        if (srv_wire_decode(copy, cut, 1, 2, 1 << 20, collect, &g) != 0) {
            assert_int_equal(g.n, 0);
            failed++;
        }
        free(copy);
    }
    assert_true(failed > (len - 1) / 2);
    /* The size limit is enforced while encoding and decoding. */
    uint8_t *b2;
    size_t l2;
    assert_int_equal(srv_wire_encode(1, 2, pm, 3, 40, &b2, &l2),
                     RK_ETOOLARGE);
    assert_int_not_equal(srv_wire_decode(buf, len, 1, 2, 40, collect, &g),
                         0);
    /* An empty batch is the keepalive. */
    uint8_t *ka;
    size_t kal;
    assert_int_equal(srv_wire_encode(1, 2, NULL, 0, 1 << 20, &ka, &kal), 0);
    memset(&g, 0, sizeof(g));
    assert_int_equal(srv_wire_decode(ka, kal, 1, 2, 1 << 20, collect, &g), 0);
    assert_int_equal(g.n, 0);
    free(ka);
    free(buf);
}

static int count_only(void *arg, const struct raft_msg *m)
{
    (void)m;
    (*(int *)arg)++;
    return 0;
}

/* Random bytes and random mutations of a valid batch never crash. */
static void test_garbage(void **state)
{
    struct rk_rand r;
    rk_rand_seed(&r, 12345);
    struct raft_msg m[3];
    struct raft_entry e[2];
    make_msgs(m, e);
    const struct raft_msg *pm[3] = {&m[0], &m[1], &m[2]};
    uint8_t *good;
    size_t glen;
    assert_int_equal(srv_wire_encode(1, 2, pm, 3, 1 << 20, &good, &glen), 0);
    for (int i = 0; i < 20000; i++) {
        size_t len = (size_t)rk_rand_below(&r, glen + 8);
        uint8_t *b = malloc(len + 1);
        if (i % 2 == 0) {
            for (size_t k = 0; k < len; k++)
                b[k] = (uint8_t)rk_rand_next(&r);
        } else {
            size_t n = len < glen ? len : glen;
            memcpy(b, good, n);
            for (int k = 0; k < 3 && n > 0; k++)
                b[rk_rand_below(&r, n)] = (uint8_t)rk_rand_next(&r);
            len = n;
        }
        int count = 0;
        srv_wire_decode(b, len, 1, 2, 1 << 20, count_only, &count);
        free(b);
    }
    free(good);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_garbage),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
