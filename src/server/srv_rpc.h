/* One-shot client requests from a node to another node's client port. */
#ifndef SRV_RPC_H
#define SRV_RPC_H

/*
 * A node asks another node (map refresh, join) with the client protocol:
 * connect, send one Request frame, wait for its Response, close. Everything
 * runs on the loop; the callback runs exactly once, with status 0 and the
 * decoded Response (borrowed for the call), or RK_EUNAVAILABLE (connect
 * failed or the connection closed), RK_ETIMEDOUT, RK_EPROTO (not a
 * Response) and resp NULL.
 */

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#include "ringkv.pb-c.h"

typedef void (*srv_rpc_cb)(void *arg, int status,
                           const Ringkv__Response *resp);

/* Starts a call to addr ("host:port", resolved now). 0, RK_EINVAL (bad
 * address), RK_ENOMEM, RK_EIO (then cb is not called). */
int srv_rpc_call(uv_loop_t *loop, const char *addr,
                 const Ringkv__Request *rq, uint64_t timeout_ms,
                 uint64_t max_frame, srv_rpc_cb cb, void *arg);

#endif
