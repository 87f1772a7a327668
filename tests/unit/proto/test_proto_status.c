/* Status <-> RK_E* agreement, bounded unpacking, client message helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rk_err.h"
#include "rk_proto.h"
#include "rk_rand.h"
#include "test_proto.h"

static const int all_codes[] = {
#define RK__CODE(name, val, msg, wire) val,
    RK_ERR_MAP(RK__CODE)
#undef RK__CODE
};

static void test_every_error_has_its_wire_status(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof all_codes / sizeof all_codes[0]; i++) {
        int code = all_codes[i];
        const char *wire = rk_err_wire_name(code);
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value_by_name(
                &ringkv__status__descriptor, wire);
        assert_non_null(v);
        assert_int_equal(rk_status_from_err(code), v->value);
        assert_string_equal(rk_status_name(v->value), wire);
        /* Back and forth lands on the same wire status. */
        assert_int_equal(rk_status_from_err(rk_status_to_err(v->value)),
                         v->value);
    }
    assert_int_equal(rk_status_from_err(-9999), RINGKV__STATUS__INTERNAL);
}

static void test_status_numbers_are_stable(void **state)
{
    (void)state;
    static const char *names[] = {
        "OK",           "NOT_FOUND", "NOT_LEADER",  "WRONG_SHARD",
        "CAS_MISMATCH", "TIMEOUT",   "UNAVAILABLE", "INVALID_ARGUMENT",
        "TOO_LARGE",    "INTERNAL",
    };
    for (int i = 0; i < 10; i++) {
        const ProtobufCEnumValue *v =
            protobuf_c_enum_descriptor_get_value_by_name(
                &ringkv__status__descriptor, names[i]);
        assert_non_null(v);
        assert_int_equal(v->value, i);
    }
    assert_int_equal(rk_status_to_err(RINGKV__STATUS__OK), 0);
    assert_int_equal(rk_status_to_err(RINGKV__STATUS__NOT_LEADER),
                     RK_ENOTLEADER);
    assert_int_equal(rk_status_to_err(RINGKV__STATUS__CAS_MISMATCH),
                     RK_ECASMISMATCH);
    assert_int_equal(rk_status_to_err(77), RK_EIO);
    assert_string_equal(rk_status_name(77), "INTERNAL");
}

static void test_request_response_round_trip(void **state)
{
    (void)state;
    Ringkv__Request rq = RINGKV__REQUEST__INIT;
    Ringkv__CasRequest cas = RINGKV__CAS_REQUEST__INIT;
    rq.request_id = 42;
    rq.client_id = 7;
    rq.seq = 3;
    rq.shard_epoch = 9;
    rq.consistency = RINGKV__REQUEST__CONSISTENCY__LEASE;
    rq.op_case = RINGKV__REQUEST__OP_CAS;
    rq.cas = &cas;
    cas.key.data = (uint8_t *)"k";
    cas.key.len = 1;
    cas.expect_case = RINGKV__CAS_REQUEST__EXPECT_EXPECT_VALUE;
    cas.expect_value.data = NULL;
    cas.expect_value.len = 0; /* an empty expected value is still set */
    cas.new_value.data = (uint8_t *)"v2";
    cas.new_value.len = 2;
    uint8_t *buf;
    size_t len;
    assert_int_equal(rk_proto_pack(&rq.base, 0, &buf, &len), 0);
    assert_int_equal(rk_proto_pack(&rq.base, len - 1, &buf, &len),
                     RK_ETOOLARGE);
    ProtobufCMessage *m;
    assert_int_equal(
        rk_proto_unpack(&ringkv__request__descriptor, buf, len, 0, &m), 0);
    Ringkv__Request *got = (Ringkv__Request *)m;
    assert_true(got->request_id == 42 && got->client_id == 7 && got->seq == 3 &&
                got->shard_epoch == 9);
    assert_int_equal(got->op_case, RINGKV__REQUEST__OP_CAS);
    assert_int_equal(got->cas->expect_case,
                     RINGKV__CAS_REQUEST__EXPECT_EXPECT_VALUE);
    assert_int_equal(got->cas->expect_value.len, 0);
    assert_int_equal(rk_proto_request_check(got, NULL), 0);
    rk_proto_free(m);
    free(buf);

    Ringkv__Response rs = RINGKV__RESPONSE__INIT;
    Ringkv__LeaderHint hint = RINGKV__LEADER_HINT__INIT;
    rs.request_id = 42;
    rs.status = rk_status_from_err(RK_ENOTLEADER);
    rs.leader_hint = &hint;
    hint.node_id = 2;
    hint.address = (char *)"127.0.0.2:6001";
    assert_int_equal(rk_proto_pack(&rs.base, 0, &buf, &len), 0);
    assert_int_equal(
        rk_proto_unpack(&ringkv__response__descriptor, buf, len, 0, &m), 0);
    Ringkv__Response *gr = (Ringkv__Response *)m;
    assert_int_equal(gr->status, RINGKV__STATUS__NOT_LEADER);
    assert_string_equal(gr->leader_hint->address, "127.0.0.2:6001");
    assert_int_equal(gr->result_case, RINGKV__RESPONSE__RESULT__NOT_SET);
    rk_proto_free(m);
    free(buf);

    /* An empty message is zero bytes and unpacks to all defaults. */
    assert_int_equal(
        rk_proto_unpack(&ringkv__request__descriptor, NULL, 0, 0, &m), 0);
    char err[RK_ERRMSG_SIZE];
    assert_int_equal(rk_proto_request_check((Ringkv__Request *)m, err),
                     RK_EINVAL);
    assert_string_equal(err, "request without an operation");
    rk_proto_free(m);
}

static void test_request_check(void **state)
{
    (void)state;
    Ringkv__Request rq = RINGKV__REQUEST__INIT;
    Ringkv__GetRequest get = RINGKV__GET_REQUEST__INIT;
    Ringkv__CasRequest cas = RINGKV__CAS_REQUEST__INIT;
    Ringkv__ScanRequest scan = RINGKV__SCAN_REQUEST__INIT;
    char err[RK_ERRMSG_SIZE];

    rq.op_case = RINGKV__REQUEST__OP_GET;
    rq.get = &get;
    assert_int_equal(rk_proto_request_check(&rq, err), RK_EINVAL); /* key */
    get.key.data = (uint8_t *)"a";
    get.key.len = 1;
    assert_int_equal(rk_proto_request_check(&rq, err), 0);
    rq.consistency = (Ringkv__Request__Consistency)3;
    assert_int_equal(rk_proto_request_check(&rq, err), RK_EINVAL);
    rq.consistency = RINGKV__REQUEST__CONSISTENCY__STALE;
    assert_int_equal(rk_proto_request_check(&rq, err), 0);

    rq.op_case = RINGKV__REQUEST__OP_CAS;
    rq.cas = &cas;
    cas.key = get.key;
    assert_int_equal(rk_proto_request_check(&rq, err), RK_EINVAL);
    assert_string_equal(err, "cas without an expectation");
    cas.expect_case = RINGKV__CAS_REQUEST__EXPECT_EXPECT_ABSENT;
    assert_int_equal(rk_proto_request_check(&rq, err), RK_EINVAL);
    cas.expect_absent = true;
    assert_int_equal(rk_proto_request_check(&rq, err), 0);

    rq.op_case = RINGKV__REQUEST__OP_SCAN;
    rq.scan = &scan;
    assert_int_equal(rk_proto_request_check(&rq, err), RK_EINVAL);
    scan.shard = 3;
    assert_int_equal(rk_proto_request_check(&rq, err), 0);

    rq.op_case = (Ringkv__Request__OpCase)99;
    assert_int_equal(rk_proto_request_check(&rq, err), RK_EINVAL);
}

static void test_unpack_garbage_and_budget(void **state)
{
    (void)state;
    struct rk_rand r;
    rk_rand_seed(&r, 11);
    uint8_t junk[256];
    for (int i = 0; i < 20000; i++) {
        size_t len = (size_t)rk_rand_below(&r, sizeof junk);
        for (size_t k = 0; k < len; k++)
            junk[k] = (uint8_t)rk_rand_next(&r);
        ProtobufCMessage *m;
        const ProtobufCMessageDescriptor *d =
            (i & 1) ? &ringkv__request__descriptor
                    : &ringkv__response__descriptor;
        int rc = rk_proto_unpack(d, junk, len, 0, &m);
        assert_true(rc == 0 || rc == RK_EPROTO || rc == RK_ETOOLARGE);
        if (rc == 0) {
            if (i & 1)
                (void)rk_proto_request_check((Ringkv__Request *)m, NULL);
            rk_proto_free(m);
        } else {
            assert_null(m);
        }
    }
    /* Field number 0 (an overlong tag varint, which protobuf-c would keep
     * as an unknown field and then pack into bytes it refuses): refused,
     * at the top level and nested. */
    static const uint8_t field0[] = {0x80, 0x00, 0x31};
    ProtobufCMessage *z;
    assert_int_equal(rk_proto_unpack(&ringkv__request__descriptor, field0,
                                     sizeof field0, 0, &z),
                     RK_EPROTO);
    assert_null(z);
    static const uint8_t nested0[] = {0x52, 0x06, 0x0a, 0x01,
                                      'k',  0x80, 0x00, 0x01};
    assert_int_equal(rk_proto_unpack(&ringkv__request__descriptor, nested0,
                                     sizeof nested0, 0, &z),
                     RK_EPROTO);
    static const uint8_t nested_ok[] = {0x52, 0x05, 0x0a, 0x01,
                                        'k',  0x78, 0x01};
    assert_int_equal(rk_proto_unpack(&ringkv__request__descriptor, nested_ok,
                                     sizeof nested_ok, 0, &z),
                     0);
    assert_int_equal(((Ringkv__Request *)z)->get->base.n_unknown_fields, 1);
    rk_proto_free(z);

    /* A scan result of 1000 empty items: refused under a 4 KiB budget. */
    uint8_t buf[4 + 2 * 1000 + 8];
    size_t len = 0;
    buf[len++] = 0x72; /* Response field 14 (scan), length-delimited */
    buf[len++] = 0xd0; /* 2000 as a varint */
    buf[len++] = 0x0f;
    for (int i = 0; i < 1000; i++) {
        buf[len++] = 0x0a; /* ScanResult.items */
        buf[len++] = 0;
    }
    ProtobufCMessage *m;
    assert_int_equal(
        rk_proto_unpack(&ringkv__response__descriptor, buf, len, 4096, &m),
        RK_ETOOLARGE);
    assert_int_equal(
        rk_proto_unpack(&ringkv__response__descriptor, buf, len, 0, &m), 0);
    assert_int_equal(((Ringkv__Response *)m)->scan->n_items, 1000);
    rk_proto_free(m);
    assert_true(rk_proto_default_budget(SIZE_MAX) == RK_PROTO_MEM_CAP);
}

int test_proto_status_run(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_error_has_its_wire_status),
        cmocka_unit_test(test_status_numbers_are_stable),
        cmocka_unit_test(test_request_response_round_trip),
        cmocka_unit_test(test_request_check),
        cmocka_unit_test(test_unpack_garbage_and_budget),
    };
    return cmocka_run_group_tests_name("proto_status", tests, NULL, NULL);
}
