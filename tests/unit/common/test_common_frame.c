/* rk_frame: streaming decode of split, batched, empty, oversized, truncated
 * frames; encoder helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rk_err.h"
#include "rk_frame.h"
#include "rk_rand.h"
#include "test_common.h"

/* The frames a decoder produced, copied out. */
struct got {
    size_t n;
    size_t lens[64];
    uint8_t *data[64];
};

static void got_free(struct got *g)
{
    for (size_t i = 0; i < g->n; i++)
        free(g->data[i]);
    g->n = 0;
}

/* Feeds one slice and collects every frame; returns the final code. */
static int feed(struct rk_frame_dec *d, const uint8_t *p, size_t n,
                struct got *g)
{
    rk_frame_dec_feed(d, p, n);
    for (;;) {
        const uint8_t *f;
        size_t len;
        int rc = rk_frame_dec_next(d, &f, &len);
        if (rc <= 0)
            return rc;
        assert_non_null(f);
        assert_true(g->n < 64);
        g->lens[g->n] = len;
        g->data[g->n] = malloc(len ? len : 1);
        memcpy(g->data[g->n], f, len);
        g->n++;
    }
}

/* A stream of frames of the sizes below (two empty, one over 64 KiB), with
 * content derived from frame number and position. */
static const size_t sizes[] = {0, 1, 2, 3, 255, 256, 1000, 5, 0, 70000};
#define N_SIZES (sizeof sizes / sizeof sizes[0])

static uint8_t byte_at(size_t frame, size_t i)
{
    return (uint8_t)(frame * 31 + i * 7 + 1);
}

static void build_stream(struct rk_buf *s)
{
    rk_buf_init(s);
    for (size_t f = 0; f < N_SIZES; f++) {
        uint8_t *p = malloc(sizes[f] + 1);
        for (size_t i = 0; i < sizes[f]; i++)
            p[i] = byte_at(f, i);
        assert_int_equal(rk_frame_append(s, p, sizes[f], 0), 0);
        free(p);
    }
}

static void check_frames(const struct got *g)
{
    assert_int_equal(g->n, N_SIZES);
    for (size_t f = 0; f < N_SIZES; f++) {
        assert_int_equal(g->lens[f], sizes[f]);
        for (size_t i = 0; i < sizes[f]; i++)
            assert_int_equal(g->data[f][i], byte_at(f, i));
    }
}

static void test_many_frames_in_one_buffer(void **state)
{
    (void)state;
    struct rk_buf s;
    build_stream(&s);
    struct rk_frame_dec d;
    rk_frame_dec_init(&d, 0);
    struct got g = {0};
    assert_int_equal(feed(&d, s.data, s.len, &g), 0);
    check_frames(&g);
    assert_false(rk_frame_dec_partial(&d));
    assert_int_equal(d.frames, N_SIZES);
    /* Every frame lay inside the slice: nothing was gathered. */
    assert_int_equal(d.acc.cap, 0);
    got_free(&g);
    rk_frame_dec_free(&d);
    rk_buf_free(&s);
}

static void test_split_at_every_byte_boundary(void **state)
{
    (void)state;
    /* A smaller stream so that every split point (and every pair of split
     * points near the frame boundaries) is cheap to try. */
    struct rk_buf s;
    rk_buf_init(&s);
    static const char *payloads[] = {"", "a", "hello", "", "0123456789abcdef"};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(
            rk_frame_append(&s, payloads[i], strlen(payloads[i]), 64), 0);
    for (size_t cut = 0; cut <= s.len; cut++) {
        for (size_t cut2 = cut; cut2 <= s.len; cut2++) {
            struct rk_frame_dec d;
            rk_frame_dec_init(&d, 64);
            struct got g = {0};
            assert_int_equal(feed(&d, s.data, cut, &g), 0);
            assert_int_equal(feed(&d, s.data + cut, cut2 - cut, &g), 0);
            assert_int_equal(feed(&d, s.data + cut2, s.len - cut2, &g), 0);
            assert_int_equal(g.n, 5);
            for (size_t i = 0; i < 5; i++) {
                assert_int_equal(g.lens[i], strlen(payloads[i]));
                assert_memory_equal(g.data[i], payloads[i], g.lens[i]);
            }
            assert_false(rk_frame_dec_partial(&d));
            got_free(&g);
            rk_frame_dec_free(&d);
        }
    }
    rk_buf_free(&s);
}

static void test_byte_at_a_time_and_random_slices(void **state)
{
    (void)state;
    struct rk_buf s;
    build_stream(&s);

    struct rk_frame_dec d;
    rk_frame_dec_init(&d, 0);
    struct got g = {0};
    for (size_t i = 0; i < s.len; i++)
        assert_int_equal(feed(&d, s.data + i, 1, &g), 0);
    check_frames(&g);
    got_free(&g);
    rk_frame_dec_free(&d);

    struct rk_rand r;
    rk_rand_seed(&r, 42);
    for (int round = 0; round < 50; round++) {
        rk_frame_dec_init(&d, 0);
        size_t pos = 0;
        while (pos < s.len) {
            size_t n = 1 + rk_rand_below(&r, 3000);
            if (n > s.len - pos)
                n = s.len - pos;
            assert_int_equal(feed(&d, s.data + pos, n, &g), 0);
            pos += n;
        }
        check_frames(&g);
        got_free(&g);
        rk_frame_dec_free(&d);
    }
    rk_buf_free(&s);
}

static void test_zero_length_frame_delivered(void **state)
{
    (void)state;
    static const uint8_t two_empty[] = {0, 0, 0, 0, 0, 0, 0, 0};
    struct rk_frame_dec d;
    rk_frame_dec_init(&d, 0);
    struct got g = {0};
    assert_int_equal(feed(&d, two_empty, sizeof two_empty, &g), 0);
    assert_int_equal(g.n, 2);
    assert_int_equal(g.lens[0], 0);
    assert_int_equal(g.lens[1], 0);
    got_free(&g);
    rk_frame_dec_free(&d);
}

static void test_oversized_rejected_before_allocating(void **state)
{
    (void)state;
    /* max 100: a header of 101 is refused as soon as it is complete, with
     * no payload bytes sent and nothing allocated; the error is sticky. */
    uint8_t hdr[4];
    rk_frame_put_hdr(hdr, 101);
    struct rk_frame_dec d;
    rk_frame_dec_init(&d, 100);
    struct got g = {0};
    assert_int_equal(feed(&d, hdr, 3, &g), 0);
    assert_int_equal(feed(&d, hdr + 3, 1, &g), RK_ETOOLARGE);
    assert_int_equal(d.acc.cap, 0);
    static const uint8_t ok[] = {0, 0, 0, 1, 'x'};
    assert_int_equal(feed(&d, ok, sizeof ok, &g), RK_ETOOLARGE);
    assert_int_equal(g.n, 0);
    rk_frame_dec_free(&d);

    /* The default maximum is 4 MiB: 0xffffffff and 4 MiB + 1 are refused
     * in one slice, 4 MiB exactly is accepted (and gathered in pieces). */
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 1, 2, 3};
    rk_frame_dec_init(&d, 0);
    assert_int_equal(feed(&d, huge, sizeof huge, &g), RK_ETOOLARGE);
    assert_int_equal(d.acc.cap, 0);
    rk_frame_dec_free(&d);

    rk_frame_dec_init(&d, 0);
    rk_frame_put_hdr(hdr, (uint32_t)RK_FRAME_MAX_DEFAULT + 1);
    assert_int_equal(feed(&d, hdr, 4, &g), RK_ETOOLARGE);
    rk_frame_dec_free(&d);

    rk_frame_dec_init(&d, 0);
    uint8_t *big = calloc(1, RK_FRAME_MAX_DEFAULT);
    rk_frame_put_hdr(hdr, (uint32_t)RK_FRAME_MAX_DEFAULT);
    assert_int_equal(feed(&d, hdr, 4, &g), 0);
    assert_int_equal(feed(&d, big, RK_FRAME_MAX_DEFAULT / 2, &g), 0);
    assert_int_equal(
        feed(&d, big + RK_FRAME_MAX_DEFAULT / 2, RK_FRAME_MAX_DEFAULT / 2, &g),
        0);
    assert_int_equal(g.n, 1);
    assert_int_equal(g.lens[0], RK_FRAME_MAX_DEFAULT);
    got_free(&g);
    free(big);
    rk_frame_dec_free(&d);
}

static void test_truncated_frame_is_partial(void **state)
{
    (void)state;
    struct rk_buf s;
    rk_buf_init(&s);
    assert_int_equal(rk_frame_append(&s, "abcdef", 6, 0), 0);
    for (size_t cut = 1; cut < s.len; cut++) {
        struct rk_frame_dec d;
        rk_frame_dec_init(&d, 0);
        struct got g = {0};
        assert_int_equal(feed(&d, s.data, cut, &g), 0);
        assert_int_equal(g.n, 0);
        assert_true(rk_frame_dec_partial(&d));
        assert_int_equal(rk_frame_dec_pending(&d), cut);
        rk_frame_dec_free(&d);
    }
    struct rk_frame_dec d;
    rk_frame_dec_init(&d, 0);
    assert_false(rk_frame_dec_partial(&d));
    assert_int_equal(rk_frame_dec_pending(&d), 0);
    rk_frame_dec_free(&d);
    rk_buf_free(&s);
}

static int count_cb(void *arg, const uint8_t *frame, size_t len)
{
    (void)frame;
    (void)len;
    int *n = arg;
    return ++*n == 2 ? 77 : 0;
}

static void test_feed_cb_stops_on_callback_error(void **state)
{
    (void)state;
    struct rk_buf s;
    rk_buf_init(&s);
    for (int i = 0; i < 4; i++)
        assert_int_equal(rk_frame_append(&s, "xy", 2, 0), 0);
    struct rk_frame_dec d;
    rk_frame_dec_init(&d, 0);
    int n = 0;
    assert_int_equal(rk_frame_dec_feed_cb(&d, s.data, s.len, count_cb, &n), 77);
    assert_int_equal(n, 2);
    rk_frame_dec_free(&d);
    rk_buf_free(&s);
}

static void test_encoder_limits_and_in_place(void **state)
{
    (void)state;
    struct rk_buf b;
    rk_buf_init(&b);
    assert_int_equal(rk_frame_append(&b, "abc", 3, 2), RK_ETOOLARGE);
    assert_int_equal(b.len, 0);
    assert_int_equal(rk_frame_append(&b, "abc", 3, 3), 0);

    size_t mark;
    assert_int_equal(rk_frame_begin(&b, &mark), 0);
    assert_int_equal(mark, 7);
    assert_int_equal(rk_buf_append(&b, "hello", 5), 0);
    assert_int_equal(rk_frame_end(&b, mark, 0), 0);
    static const uint8_t want[] = {0, 0, 0, 3,   'a', 'b', 'c', 0,
                                   0, 0, 5, 'h', 'e', 'l', 'l', 'o'};
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);

    /* Over the limit: the half-built frame is removed. */
    assert_int_equal(rk_frame_begin(&b, &mark), 0);
    assert_int_equal(rk_buf_append(&b, "0123456789", 10), 0);
    assert_int_equal(rk_frame_end(&b, mark, 9), RK_ETOOLARGE);
    assert_int_equal(b.len, sizeof want);
    rk_buf_free(&b);
}

int test_common_frame_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_frames_in_one_buffer),
        cmocka_unit_test(test_split_at_every_byte_boundary),
        cmocka_unit_test(test_byte_at_a_time_and_random_slices),
        cmocka_unit_test(test_zero_length_frame_delivered),
        cmocka_unit_test(test_oversized_rejected_before_allocating),
        cmocka_unit_test(test_truncated_frame_is_partial),
        cmocka_unit_test(test_feed_cb_stops_on_callback_error),
        cmocka_unit_test(test_encoder_limits_and_in_place),
    };
    return cmocka_run_group_tests_name("common_frame", tests, NULL, NULL);
}
