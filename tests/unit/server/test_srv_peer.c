/* Unit tests of the peer transport: handshake, framed delivery, refusal. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "rk_assert.h"
#include "srv_conn.h"
#include "srv_peer.h"

struct fx {
    uv_loop_t loop;
    struct srv_peers p[3];
    uv_timer_t deadline;
    uv_timer_t check;
    uv_prepare_t flush; /* the node's flush hook: writes the frames */
    int ups[3];
    int downs[3];
    int received[3];
    char last[3][64];
    int closed;
    bool timed_out;
    bool sent;
    int phase;
};

static struct fx *g_fx;

static int idx_of(void *data)
{
    return (int)(intptr_t)data;
}

static int on_recv(void *data, uint64_t from, const uint8_t *buf, size_t len)
{
    int i = idx_of(data);
    g_fx->received[i]++;
    snprintf(g_fx->last[i], sizeof(g_fx->last[i]), "%llu:%.*s",
             (unsigned long long)from, (int)len, (const char *)buf);
    /* A batch starting with '!' is "malformed": close the connection. */
    return len > 0 && buf[0] == '!' ? -1 : 0;
}

static void on_state(void *data, uint64_t peer, bool up)
{
    int i = idx_of(data);
    if (up)
        g_fx->ups[i]++;
    else
        g_fx->downs[i]++;
}

static void on_peers_closed(struct srv_peers *ps)
{
    g_fx->closed++;
}

static void on_any_close(uv_handle_t *h)
{
}

static void finish(struct fx *f, int n)
{
    for (int i = 0; i < n; i++)
        srv_peers_close(&f->p[i], on_peers_closed);
    uv_close((uv_handle_t *)&f->deadline, on_any_close);
    uv_close((uv_handle_t *)&f->check, on_any_close);
    uv_close((uv_handle_t *)&f->flush, on_any_close);
}

static void on_flush(uv_prepare_t *h)
{
    (void)h;
    srv_conn_flush_all();
}

static void on_deadline(uv_timer_t *t)
{
    struct fx *f = t->data;
    f->timed_out = true;
    finish(f, 3);
}

static void send_text(struct srv_peers *ps, uint64_t to, const char *s)
{
    uv_buf_t b = uv_buf_init((char *)s, (unsigned)strlen(s));
    assert_int_equal(srv_peers_send(ps, to, &b, 1), 0);
}

static void on_check_exchange(uv_timer_t *t)
{
    struct fx *f = t->data;
    if (f->phase == 0 && srv_peers_is_up(&f->p[0], 2) &&
        srv_peers_is_up(&f->p[1], 1)) {
        send_text(&f->p[0], 2, "to-two");
        send_text(&f->p[1], 1, "to-one");
        f->phase = 1;
    } else if (f->phase == 1 && f->received[0] == 1 && f->received[1] == 1) {
        /* A malformed batch closes the inbound side; the sender sees its
         * connection drop and reconnects. */
        send_text(&f->p[0], 2, "!bad");
        f->phase = 2;
    } else if (f->phase == 2 && f->downs[0] >= 1 && f->ups[0] >= 2) {
        send_text(&f->p[0], 2, "again");
        f->phase = 3;
    } else if (f->phase == 3 && f->received[1] == 3) {
        uv_timer_stop(&f->deadline);
        finish(f, 3);
    }
}

static void start_peer(struct fx *f, int i, uint64_t cluster, uint64_t id)
{
    struct srv_addr a = {.host = "127.0.0.1", .port = 0};
    char caddr[32];
    snprintf(caddr, sizeof(caddr), "127.0.0.1:70%02d", (int)id);
    assert_int_equal(srv_peers_init(&f->p[i], &f->loop, cluster, id, caddr,
                                    &a, 1 << 20, on_recv, on_state,
                                    (void *)(intptr_t)i),
                     0);
}

static void addr_of(struct fx *f, int i, struct sockaddr_storage *ss)
{
    struct srv_addr a = {.host = "127.0.0.1"};
    a.port = (uint16_t)srv_peers_port(&f->p[i]);
    assert_int_equal(srv_addr_resolve(&a, ss), 0);
}

static void test_exchange_and_reconnect(void **state)
{
    static struct fx f;
    memset(&f, 0, sizeof(f));
    g_fx = &f;
    assert_int_equal(uv_loop_init(&f.loop), 0);
    start_peer(&f, 0, 42, 1);
    start_peer(&f, 1, 42, 2);
    /* Peer 3 claims another cluster: node 1 must refuse it. */
    start_peer(&f, 2, 43, 3);
    struct sockaddr_storage s0, s1;
    addr_of(&f, 0, &s0);
    addr_of(&f, 1, &s1);
    assert_int_equal(srv_peers_add(&f.p[0], 2, &s1), 0);
    assert_int_equal(srv_peers_add(&f.p[0], 2, &s1), RK_EEXIST);
    assert_int_equal(srv_peers_add(&f.p[0], 1, &s1), RK_EINVAL);
    assert_int_equal(srv_peers_add(&f.p[1], 1, &s0), 0);
    assert_int_equal(srv_peers_add(&f.p[2], 1, &s0), 0);
    uv_buf_t b = uv_buf_init("x", 1);
    assert_int_equal(srv_peers_send(&f.p[0], 9, &b, 1), RK_ENOTFOUND);

    uv_timer_init(&f.loop, &f.deadline);
    uv_timer_init(&f.loop, &f.check);
    f.deadline.data = f.check.data = &f;
    uv_timer_start(&f.deadline, on_deadline, 20000, 0);
    uv_timer_start(&f.check, on_check_exchange, 5, 5);
    uv_prepare_init(&f.loop, &f.flush);
    uv_prepare_start(&f.flush, on_flush);
    uv_run(&f.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f.loop), 0);

    assert_false(f.timed_out);
    assert_int_equal(f.closed, 3);
    assert_string_equal(f.last[0], "2:to-one");
    assert_string_equal(f.last[1], "1:again");
    /* The foreign node never came up and node 1 got nothing from it. */
    assert_int_equal(f.ups[2], 0);
    assert_int_equal(f.received[0], 1);
}

static void test_hello_codec(void **state)
{
    uint8_t buf[1024];
    size_t n = srv_peer_hello_encode(buf, sizeof(buf), SRV_PEER_HELLO, 7, 1,
                                     2, "127.0.0.1:7001");
    assert_true(n > 0);
    uint8_t kind;
    uint64_t cid, from, to;
    char addr[64];
    assert_int_equal(srv_peer_hello_decode(buf, n, &kind, &cid, &from, &to,
                                           addr, sizeof(addr)),
                     0);
    assert_int_equal(kind, SRV_PEER_HELLO);
    assert_int_equal(cid, 7);
    assert_int_equal(from, 1);
    assert_int_equal(to, 2);
    assert_string_equal(addr, "127.0.0.1:7001");
    n = srv_peer_hello_encode(buf, sizeof(buf), SRV_PEER_ACK, 7, 2, 1, "");
    assert_true(n > 0);
    assert_int_equal(srv_peer_hello_decode(buf, n, &kind, &cid, &from, &to,
                                           addr, sizeof(addr)),
                     0);
    assert_int_equal(kind, SRV_PEER_ACK);
    assert_string_equal(addr, "");
    /* Garbage, truncation, an address too long for the caller's buffer,
     * a buffer too small to encode into. */
    assert_int_equal(srv_peer_hello_decode((const uint8_t *)"\xff\xff\xff",
                                           3, &kind, &cid, &from, &to, addr,
                                           sizeof(addr)),
                     RK_EPROTO);
    n = srv_peer_hello_encode(buf, sizeof(buf), SRV_PEER_HELLO, 7, 1, 2,
                              "127.0.0.1:7001");
    assert_int_equal(srv_peer_hello_decode(buf, n - 3, &kind, &cid, &from,
                                           &to, addr, sizeof(addr)),
                     RK_EPROTO);
    assert_int_equal(srv_peer_hello_decode(buf, n, &kind, &cid, &from, &to,
                                           addr, 4),
                     RK_EPROTO);
    assert_int_equal(srv_peer_hello_encode(buf, 4, SRV_PEER_HELLO, 7, 1, 2,
                                           "x"),
                     0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_codec),
        cmocka_unit_test(test_exchange_and_reconnect),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
