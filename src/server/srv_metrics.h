/* ringkvd metrics: counters and histograms, Prometheus text, HTTP endpoint. */
#ifndef SRV_METRICS_H
#define SRV_METRICS_H

/*
 * Everything here is touched only by the loop thread (the storage thread
 * reports its sync latency through the completion that runs on the loop), so
 * the counters are plain integers. The HTTP server is deliberately tiny: one
 * request per connection (Connection: close), GET /metrics and GET /health,
 * requests bounded to SRV_HTTP_MAX_REQUEST bytes.
 */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include <uv.h>

#include "srv_config.h"

/* Client operations counted by op. */
enum srv_op {
    SRV_OP_GET = 0,
    SRV_OP_PUT,
    SRV_OP_DELETE,
    SRV_OP_CAS,
    SRV_OP_SCAN,
    SRV_OP_STATUS,
    SRV_OP_SHARD_MAP,
    SRV_OP_OTHER,
    SRV_OP__COUNT
};

/* Wire statuses counted (the values of proto/ringkv.proto's Status; the
 * last bucket collects any code this build does not know). */
#define SRV_STATUS_SLOTS 16

/* Prometheus histogram with fixed latency buckets, in microseconds. */
#define SRV_HIST_BUCKETS 16
struct srv_hist {
    uint64_t counts[SRV_HIST_BUCKETS + 1]; /* last one is +Inf */
    uint64_t count;
    uint64_t sum_us;
};

void srv_hist_observe(struct srv_hist *h, uint64_t us);
/* Upper bound (microseconds) of bucket i < SRV_HIST_BUCKETS. */
uint64_t srv_hist_bound_us(unsigned i);

/* Kinds of received Raft messages counted apart. */
enum {
    SRV_PEER_KIND_APPEND,       /* APPEND carrying entries */
    SRV_PEER_KIND_APPEND_EMPTY, /* APPEND without entries (commit, probe) */
    SRV_PEER_KIND_APPEND_RESP,
    SRV_PEER_KIND_HEARTBEAT,
    SRV_PEER_KIND_HEARTBEAT_RESP,
    SRV_PEER_KIND_OTHER, /* votes, snapshots, transfers */
    SRV_PEER_KINDS
};

struct srv_metrics {
    uint64_t requests[SRV_OP__COUNT][SRV_STATUS_SLOTS];
    struct srv_hist latency[SRV_OP__COUNT];
    struct srv_hist sync_latency;      /* storage batch write + sync */
    uint64_t read_rounds_index;  /* ReadIndex rounds started */
    uint64_t read_rounds_lease;  /* lease reads answered by the lease */
    uint64_t splits_applied;     /* SPLIT entries applied by donor replicas */
    uint64_t splits_started;     /* splits begun through this node */
    uint64_t splits_finished;    /* splits finished through this node */
    uint64_t storage_batches;
    uint64_t storage_batch_entries;
    uint64_t peer_bytes_in, peer_bytes_out;
    uint64_t peer_msgs_in, peer_msgs_out;
    /* Received, by kind (SRV_PEER_KIND_*): what a Raft round costs. */
    uint64_t peer_msgs_in_kind[SRV_PEER_KINDS];
    uint64_t peer_frames_in, peer_frames_out;
    uint64_t client_bytes_in, client_bytes_out;
    uint64_t client_conns_accepted, client_conns_closed_bad;
    uint64_t client_conns_open;
    uint64_t peer_conns_open;
    uint64_t start_time_s; /* unix time at start */
};

const char *srv_op_name(enum srv_op op);

void srv_metrics_init(struct srv_metrics *m);
void srv_metrics_request(struct srv_metrics *m, enum srv_op op,
                         unsigned status, uint64_t latency_us);

/* Writes the registry's own families as Prometheus text (version 0.0.4). */
void srv_metrics_write(const struct srv_metrics *m, FILE *out);

/* Writes a HELP and TYPE header for a family the caller then fills. */
void srv_metrics_family(FILE *out, const char *name, const char *type,
                        const char *help);
/* A family with one unlabelled sample: its HELP/TYPE lines, "name v". */
void srv_metrics_counter(FILE *out, const char *name, const char *help,
                         uint64_t v);
void srv_metrics_gauge(FILE *out, const char *name, const char *help,
                       uint64_t v);

/* ---------------------------------------------------------------- HTTP */

#define SRV_HTTP_MAX_REQUEST 16384
#define SRV_HTTP_MAX_CONNS 64

/* Renders the whole /metrics body (the registry plus the caller's gauges). */
typedef void (*srv_metrics_render_cb)(void *data, FILE *out);
/* Fills /health: returns true when healthy; may write a short reason. */
typedef bool (*srv_health_cb)(void *data, FILE *out);

struct http_conn;

struct srv_http {
    uv_tcp_t listener;
    uv_loop_t *loop;
    srv_metrics_render_cb render;
    srv_health_cb health;
    void *data;
    struct http_conn *conns; /* open connections */
    unsigned n_conns;
    bool closing;
    bool listening;
    void (*closed_cb)(struct srv_http *h); /* after srv_http_close */
    uint64_t requests;
    char errmsg[RK_ERRMSG_SIZE];
};

/* Listens on addr. Returns 0 or RK_EIO with h->errmsg. */
int srv_http_start(struct srv_http *h, uv_loop_t *loop,
                   const struct srv_addr *addr, srv_metrics_render_cb render,
                   srv_health_cb health, void *data);
/* The port actually bound (useful when addr asked for port 0). */
int srv_http_port(const struct srv_http *h);
/* Closes the listener and every connection; closed_cb runs when all are
 * gone (it may be NULL). */
void srv_http_close(struct srv_http *h, void (*closed_cb)(struct srv_http *));

#endif
