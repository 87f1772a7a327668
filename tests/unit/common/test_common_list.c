/* rk_list: queue order, removal while iterating, splice, move. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "rk_list.h"
#include "test_common.h"

struct item {
    int v;
    struct rk_list link;
};

static int val(struct rk_list *n)
{
    return rk_list_entry(n, struct item, link)->v;
}

static void test_fifo_and_lifo(void **state)
{
    (void)state;
    struct rk_list q;
    rk_list_init(&q);
    assert_true(rk_list_empty(&q));
    assert_null(rk_list_head(&q));
    assert_null(rk_list_pop_tail(&q));
    struct item it[5];
    for (int i = 0; i < 5; i++) {
        it[i].v = i;
        rk_list_init(&it[i].link);
        assert_false(rk_list_linked(&it[i].link));
        rk_list_push_tail(&q, &it[i].link);
        assert_true(rk_list_linked(&it[i].link));
    }
    assert_int_equal(rk_list_count(&q), 5);
    assert_int_equal(val(rk_list_head(&q)), 0);
    assert_int_equal(val(rk_list_tail(&q)), 4);
    assert_int_equal(val(rk_list_pop_head(&q)), 0);
    assert_int_equal(val(rk_list_pop_tail(&q)), 4);
    rk_list_push_head(&q, &it[0].link);
    rk_list_insert_after(&it[2].link, &it[4].link);
    int want[] = {0, 1, 2, 4, 3}, k = 0;
    struct rk_list *pos;
    rk_list_foreach(pos, &q)
    {
        assert_int_equal(val(pos), want[k]);
        k++;
    }
    assert_int_equal(k, 5);
}

static void test_remove_while_iterating(void **state)
{
    (void)state;
    struct rk_list q;
    rk_list_init(&q);
    struct item it[10];
    for (int i = 0; i < 10; i++) {
        it[i].v = i;
        rk_list_push_tail(&q, &it[i].link);
    }
    struct rk_list *pos, *tmp;
    rk_list_foreach_safe(pos, tmp, &q)
    {
        if (val(pos) % 2)
            rk_list_remove(pos);
    }
    assert_int_equal(rk_list_count(&q), 5);
    int k = 0;
    rk_list_foreach(pos, &q)
    {
        assert_int_equal(val(pos), 2 * k);
        k++;
    }
    /* Removing an unlinked node again is harmless. */
    rk_list_remove(&it[1].link);
    assert_int_equal(rk_list_count(&q), 5);
}

static void test_splice_and_move(void **state)
{
    (void)state;
    struct rk_list a, b;
    rk_list_init(&a);
    rk_list_init(&b);
    struct item it[6];
    for (int i = 0; i < 6; i++) {
        it[i].v = i;
        rk_list_push_tail(i < 3 ? &a : &b, &it[i].link);
    }
    rk_list_splice_tail(&a, &b);
    assert_true(rk_list_empty(&b));
    assert_int_equal(rk_list_count(&a), 6);
    rk_list_splice_tail(&a, &b); /* empty source: no-op */
    assert_int_equal(rk_list_count(&a), 6);
    rk_list_move_tail(&a, &it[0].link);
    assert_int_equal(val(rk_list_head(&a)), 1);
    assert_int_equal(val(rk_list_tail(&a)), 0);
    int k = 0;
    struct rk_list *pos;
    rk_list_foreach(pos, &a)
    {
        assert_int_equal(val(pos), (k + 1) % 6);
        k++;
    }
}

int test_common_list_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fifo_and_lifo),
        cmocka_unit_test(test_remove_while_iterating),
        cmocka_unit_test(test_splice_and_move),
    };
    return cmocka_run_group_tests_name("common_list", tests, NULL, NULL);
}
