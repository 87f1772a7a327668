/* A framed TCP stream (4-byte big-endian length + payload) on the loop. */
#ifndef SRV_CONN_H
#define SRV_CONN_H

/*
 * Shared by the client and peer transports. Reading accumulates bytes and
 * hands every complete frame to on_frame; a length over max_frame closes the
 * connection with a logged reason BEFORE anything is allocated for it
 * (DESIGN.md §5). Writes are copied into the connection's output buffer;
 * srv_conn_flush_all() (the loop's flush hook) hands each connection's
 * frames of the iteration to one uv_write. write_queue_bytes (buffered and
 * queued, not yet written) gives the owner its backpressure signal.
 *
 * Lifetime: the owner embeds struct srv_conn, calls srv_conn_init() on a
 * uv_tcp_t it has accepted or connected, and frees its object in on_close,
 * which runs exactly once, after uv_close completed.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

#define SRV_FRAME_HEADER 4

struct srv_conn;

/* Returns 0 to go on, negative to close the connection (the callee already
 * logged why, or sets c->close_reason). */
typedef int (*srv_conn_frame_cb)(struct srv_conn *c, const uint8_t *data,
                                 size_t len);
typedef void (*srv_conn_close_cb)(struct srv_conn *c);

struct srv_conn {
    uv_tcp_t tcp;
    uv_loop_t *loop;
    uint64_t max_frame;
    srv_conn_frame_cb on_frame;
    srv_conn_close_cb on_close;
    void *data;

    uint8_t *rbuf;   /* unread bytes: rbuf[rpos, rlen) */
    size_t rpos, rlen, rcap;
    bool reading;
    bool closing;
    bool in_frame_cb; /* close requested from inside on_frame */
    char peer_name[96];
    const char *close_reason;

    uint64_t write_queue_bytes; /* buffered or queued, not yet written */
    uint8_t *obuf; /* frames not yet handed to uv_write: obuf[0, olen) */
    size_t olen, ocap;
    struct srv_conn *out_next, *out_prev; /* list of conns with output */
    bool out_listed;
    uint32_t writes_pending;
    bool shutting_down;
    uv_shutdown_t shutdown_req;
    uint64_t bytes_in, bytes_out, frames_in, frames_out;
};

/* Starts reading on an initialised, connected c->tcp (c->tcp.loop set). */
int srv_conn_start(struct srv_conn *c, uint64_t max_frame,
                   srv_conn_frame_cb on_frame, srv_conn_close_cb on_close,
                   void *data);

/* Queues one frame holding `n` concatenated parts. RK_ETOOLARGE over
 * max_frame, RK_ESHUTDOWN when closing, RK_ENOMEM, RK_EIO. */
int srv_conn_writev(struct srv_conn *c, const uv_buf_t *parts, unsigned n);
int srv_conn_write(struct srv_conn *c, const void *data, size_t len);
/* Writes the frames buffered on every connection (call once per loop
 * iteration, after everything that answers). */
void srv_conn_flush_all(void);

/* Closes the connection (idempotent); `reason` (static string) is logged
 * at INFO if not NULL. on_close runs later. */
void srv_conn_close(struct srv_conn *c, const char *reason);

/* Stops reading, lets the queued writes drain (uv_shutdown), then closes.
 * Used to deliver a last error response before hanging up. */
void srv_conn_close_after_write(struct srv_conn *c, const char *reason);

/* Fills peer_name with "ip:port" of the remote end. */
void srv_conn_name(struct srv_conn *c);

#endif
