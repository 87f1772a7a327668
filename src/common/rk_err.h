/* One error space for all of ringkv: 0 is success, negative RK_E* is failure. */
#ifndef RK_ERR_H
#define RK_ERR_H

#include <stdarg.h>
#include <stddef.h>

/*
 * RK_ERR_MAP(X): X(NAME, value, "message", WIRE_STATUS).
 * The single table of errors: it generates the enum, rk_strerror(),
 * rk_err_name() and the mapping to the wire Status enum (names are those of
 * proto/ringkv.proto's Status). Codes are stable once published.
 */
#define RK_ERR_MAP(X)                                                          \
    X(RK_OK, 0, "success", OK)                                                 \
    X(RK_ENOMEM, -1, "out of memory", INTERNAL)                                \
    X(RK_EINVAL, -2, "invalid argument", INVALID_ARGUMENT)                     \
    X(RK_ENOSPC, -3, "no space left on device", UNAVAILABLE)                   \
    X(RK_EIO, -4, "input/output error", INTERNAL)                              \
    X(RK_ENOTFOUND, -5, "not found", NOT_FOUND)                                \
    X(RK_ENOTLEADER, -6, "not the leader", NOT_LEADER)                         \
    X(RK_EWRONGSHARD, -7, "wrong shard or stale shard map", WRONG_SHARD)       \
    X(RK_ECASMISMATCH, -8, "compare-and-swap mismatch", CAS_MISMATCH)          \
    X(RK_ETOOLARGE, -9, "too large", TOO_LARGE)                                \
    X(RK_ECORRUPT, -10, "data corrupted", INTERNAL)                            \
    X(RK_ETIMEDOUT, -11, "timed out", TIMEOUT)                                 \
    X(RK_EUNAVAILABLE, -12, "unavailable", UNAVAILABLE)                        \
    X(RK_EBUSY, -13, "busy, try again", UNAVAILABLE)                           \
    X(RK_ESTALE, -14, "stale term or index", INVALID_ARGUMENT)                 \
    X(RK_ECOMPACTED, -15, "log compacted past the requested index", INTERNAL)  \
    X(RK_EUNAVAIL_LOG, -16, "log entries not yet available", INTERNAL)         \
    X(RK_EPROTO, -17, "malformed message", INVALID_ARGUMENT)                   \
    X(RK_EEXIST, -18, "already exists", INVALID_ARGUMENT)                      \
    X(RK_EFOREIGN, -19, "data dir belongs to another cluster or node", INTERNAL) \
    X(RK_EVERSION, -20, "unsupported format version", INTERNAL)                \
    X(RK_ESHUTDOWN, -21, "shutting down", UNAVAILABLE)                         \
    X(RK_ECANCELED, -22, "canceled", UNAVAILABLE)                              \
    X(RK_EFAILSTOP, -23, "node stopped after a storage failure", UNAVAILABLE)  \
    X(RK_EUNKNOWNSHARD, -24, "unknown shard", WRONG_SHARD)                     \
    X(RK_ENOTVOTER, -25, "node is not a voter", INVALID_ARGUMENT)

enum rk_err {
#define RK__ERR_ENUM(name, val, msg, wire) name = val,
    RK_ERR_MAP(RK__ERR_ENUM)
#undef RK__ERR_ENUM
};

/* Size of the per-object error message buffers (canonical/raft habit). */
#define RK_ERRMSG_SIZE 256

/* Human-readable message for an RK_E* code; never NULL. */
const char *rk_strerror(int err);
/* Symbolic name ("RK_ENOTLEADER") for an RK_E* code; never NULL. */
const char *rk_err_name(int err);
/* Name of the wire Status ("NOT_LEADER") that an RK_E* code maps to. */
const char *rk_err_wire_name(int err);

/* Formats into buf (RK_ERRMSG_SIZE bytes). */
void rk_errf(char *buf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prefixes buf's current message with a formatted context: "ctx: old". */
void rk_errwrap(char *buf, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
