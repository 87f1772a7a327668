/* Helpers over the generated protobuf code: bounded unpacking, Status <->
 * RK_E*. */
#ifndef RK_PROTO_H
#define RK_PROTO_H

/*
 * protobuf-c allocates the unpacked form of a message from what the bytes
 * claim; an unpacked struct can be many times larger than its encoding (an
 * empty sub-message costs 2 bytes on the wire and ~100 bytes unpacked). So
 * every message read from the network is unpacked through rk_proto_unpack,
 * whose allocator refuses to go past a memory budget: garbage gets an error,
 * never a huge allocation.
 */

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "ringkv.pb-c.h"

/* Default decode memory budget: RK_PROTO_MEM_FACTOR times the input plus
 * RK_PROTO_MEM_SLACK, capped at RK_PROTO_MEM_CAP. Well-formed client
 * messages need far less (a scan result of small items about 8x); peer
 * batches use a budget sized from counted messages instead (raft_codec.h). */
#define RK_PROTO_MEM_FACTOR 16
#define RK_PROTO_MEM_SLACK  ((size_t)256 << 10)
#define RK_PROTO_MEM_CAP    ((size_t)64 << 20)

/* Budget rk_proto_unpack uses for an input of len bytes when given 0. */
size_t rk_proto_default_budget(size_t len);

/* Unpacks len bytes as a message of type desc, allocating at most
 * max_mem bytes (0: rk_proto_default_budget(len)). On success *out is the
 * message, released with rk_proto_free. RK_EPROTO for bytes that do not
 * parse, RK_ETOOLARGE when the budget ran out. */
int rk_proto_unpack(const ProtobufCMessageDescriptor *desc, const uint8_t *buf,
                    size_t len, size_t max_mem, ProtobufCMessage **out);
void rk_proto_free(ProtobufCMessage *m);

/* Packs m into a malloc'd buffer (a zero-length message still gets a
 * 1-byte allocation). RK_ETOOLARGE over max_len (0: no limit), RK_ENOMEM. */
int rk_proto_pack(const ProtobufCMessage *m, size_t max_len, uint8_t **out,
                  size_t *len);

/* The wire Status of an RK_E* code (RK_ERR_MAP's last column; unknown
 * codes map to INTERNAL). */
Ringkv__Status rk_status_from_err(int err);
/* A representative RK_E* code for a wire Status: OK -> 0, NOT_FOUND ->
 * RK_ENOTFOUND, NOT_LEADER -> RK_ENOTLEADER, WRONG_SHARD -> RK_EWRONGSHARD,
 * CAS_MISMATCH -> RK_ECASMISMATCH, TIMEOUT -> RK_ETIMEDOUT, UNAVAILABLE ->
 * RK_EUNAVAILABLE, INVALID_ARGUMENT -> RK_EINVAL, TOO_LARGE -> RK_ETOOLARGE,
 * INTERNAL and any unknown number -> RK_EIO. */
int rk_status_to_err(int status);
/* The Status's wire name ("NOT_LEADER"); "INTERNAL" for unknown numbers. */
const char *rk_status_name(int status);

/* Structural checks of a decoded Request that every server does first:
 * an operation is set, enums are in range, a CAS has an expectation, keys
 * are not empty where one is required. RK_EINVAL with a reason in errmsg
 * (RK_ERRMSG_SIZE bytes, may be NULL). Size limits and semantics are the
 * server's business. */
int rk_proto_request_check(const Ringkv__Request *rq, char *errmsg);

#endif
