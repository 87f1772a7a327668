/* rk_buf: growth, big-endian helpers, consume, tail/commit, detach. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rk_buf.h"
#include "rk_err.h"
#include "test_common.h"

static void test_append_grows_and_keeps_bytes(void **state)
{
    (void)state;
    struct rk_buf b;
    rk_buf_init(&b);
    for (int i = 0; i < 10000; i++) {
        uint8_t v = (uint8_t)(i * 7);
        assert_int_equal(rk_buf_append(&b, &v, 1), 0);
    }
    assert_int_equal(b.len, 10000);
    assert_true(b.cap >= b.len);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(b.data[i], (uint8_t)(i * 7));
    assert_int_equal(rk_buf_append(&b, NULL, 0), 0);
    assert_int_equal(b.len, 10000);
    rk_buf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
}

static void test_big_endian_helpers(void **state)
{
    (void)state;
    struct rk_buf b;
    rk_buf_init(&b);
    assert_int_equal(rk_buf_append_u8(&b, 0xab), 0);
    assert_int_equal(rk_buf_append_u32be(&b, 0x01020304u), 0);
    assert_int_equal(rk_buf_append_u64be(&b, 0x1122334455667788ull), 0);
    static const uint8_t want[] = {0xab, 1,    2,    3,    4,    0x11, 0x22,
                                   0x33, 0x44, 0x55, 0x66, 0x77, 0x88};
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    assert_int_equal(rk_get_u32be(b.data + 1), 0x01020304u);
    assert_true(rk_get_u64be(b.data + 5) == 0x1122334455667788ull);
    rk_buf_free(&b);
}

static void test_consume_and_truncate(void **state)
{
    (void)state;
    struct rk_buf b;
    rk_buf_init(&b);
    assert_int_equal(rk_buf_append(&b, "hello world", 11), 0);
    rk_buf_consume(&b, 6);
    assert_int_equal(b.len, 5);
    assert_memory_equal(b.data, "world", 5);
    rk_buf_truncate(&b, 3);
    assert_memory_equal(b.data, "wor", 3);
    rk_buf_consume(&b, 3);
    assert_int_equal(b.len, 0);
    rk_buf_reset(&b);
    assert_non_null(b.data); /* memory kept */
    rk_buf_free(&b);
}

static void test_tail_commit_detach(void **state)
{
    (void)state;
    struct rk_buf b;
    rk_buf_init(&b);
    uint8_t *p;
    size_t avail;
    assert_int_equal(rk_buf_tail(&b, 100, &p, &avail), 0);
    assert_true(avail >= 100);
    memset(p, 'x', 100);
    rk_buf_commit(&b, 100);
    assert_int_equal(b.len, 100);
    size_t len;
    uint8_t *d = rk_buf_detach(&b, &len);
    assert_int_equal(len, 100);
    assert_int_equal(d[99], 'x');
    assert_null(b.data);
    free(d);
    assert_null(rk_buf_detach(&b, &len));
    assert_int_equal(len, 0);
}

static void test_reserve_overflow_refused(void **state)
{
    (void)state;
    struct rk_buf b;
    rk_buf_init(&b);
    assert_int_equal(rk_buf_append(&b, "ab", 2), 0);
    assert_int_equal(rk_buf_reserve(&b, SIZE_MAX), RK_ETOOLARGE);
    assert_int_equal(rk_buf_reserve(&b, SIZE_MAX - 1), RK_ETOOLARGE);
    assert_int_equal(b.len, 2);
    assert_memory_equal(b.data, "ab", 2);
    rk_buf_free(&b);
}

int test_common_buf_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_append_grows_and_keeps_bytes),
        cmocka_unit_test(test_big_endian_helpers),
        cmocka_unit_test(test_consume_and_truncate),
        cmocka_unit_test(test_tail_commit_detach),
        cmocka_unit_test(test_reserve_overflow_refused),
    };
    return cmocka_run_group_tests_name("common_buf", tests, NULL, NULL);
}
