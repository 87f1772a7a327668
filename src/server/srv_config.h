/* ringkvd configuration: command-line flags, `--config FILE`, validation. */
#ifndef SRV_CONFIG_H
#define SRV_CONFIG_H

/*
 * Every setting has one name, used both as a flag (`--name value` or
 * `--name=value`) and as a config-file key (`name = value`, `#` comments).
 * The file given by `--config` is read first; flags on the command line
 * override it whatever their position.
 *
 * Cluster membership follows etcd: `--initial-cluster 1=host:port,2=...`
 * lists the PEER address of every founding node (ids are positive integers).
 * Client addresses are published by each node itself: a node announces its
 * `--listen` address in the peer handshake, and the meta shard's node registry
 * records it. `--initial-cluster-clients 1=host:port,...` may pin them up front
 * (useful for leader hints before the first handshake); when both exist the
 * explicit setting wins.
 */

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "rk_err.h"

/* Most nodes an initial cluster may list. */
#define SRV_MAX_NODES 64
/* Most data shards a cluster may be created with (meta shard 0 excluded). */
#define SRV_MAX_SHARDS 4096
/* Longest host name or literal kept in an address. */
#define SRV_HOST_MAX 256
#define SRV_PATH_MAX 1024

struct srv_addr {
    char host[SRV_HOST_MAX]; /* IPv4/IPv6 literal or host name; "" = unset */
    uint16_t port;
};

struct srv_member {
    uint64_t id;
    struct srv_addr peer;
    struct srv_addr client; /* port 0 when not known yet */
};

struct srv_config {
    uint64_t id;
    struct srv_addr listen;      /* client API */
    struct srv_addr peer_listen; /* Raft traffic between nodes */
    struct srv_addr metrics_listen; /* port 0 = metrics disabled */
    char data_dir[SRV_PATH_MAX];
    char cluster_name[128];      /* initial-cluster-token: part of cluster id */

    struct srv_member members[SRV_MAX_NODES];
    uint32_t n_members;
    struct srv_addr join; /* port 0 = not joining */

    uint32_t shards;
    uint32_t snapshot_count; /* applied entries kept before compacting */
    uint64_t split_threshold_bytes; /* auto split above it; 0 = off */
    uint32_t election_ms;
    uint32_t heartbeat_ms;
    uint32_t tick_ms;

    uint64_t max_key_bytes;
    uint64_t max_value_bytes;
    uint64_t max_frame_bytes;

    int log_level; /* enum rk_log_level */
    bool unsafe_no_sync;
    bool unsafe_test_local_reads; /* testing the checker only */

    bool help;
    bool version;
    char config_file[SRV_PATH_MAX];

    char errmsg[RK_ERRMSG_SIZE];
};

/* Fills c with the documented defaults. */
void srv_config_defaults(struct srv_config *c);

/*
 * Applies argv (argv[0] is skipped): first the file named by `--config`, then
 * every flag. Returns 0 or RK_EINVAL with c->errmsg set. `--help` and
 * `--version` only set c->help / c->version.
 */
int srv_config_parse_args(struct srv_config *c, int argc, char **argv);

/* Reads `name = value` lines from path. RK_EINVAL / RK_EIO with errmsg. */
int srv_config_load_file(struct srv_config *c, const char *path);

/* Sets one setting by its name (without the leading dashes). */
int srv_config_set(struct srv_config *c, const char *name, const char *value);

/* Checks the combination (required id, own entry in the initial cluster,
 * timing ratios, limits). RK_EINVAL with errmsg. */
int srv_config_validate(struct srv_config *c);

/* Writes the `--help` text. */
void srv_config_usage(FILE *out);

/* Writes every effective setting as config-file lines. */
void srv_config_dump(const struct srv_config *c, FILE *out);

/* Parses "host:port", "[v6]:port" or ":port" (host 0.0.0.0). */
int srv_addr_parse(const char *s, struct srv_addr *out);
/* Formats an address as host:port (brackets around IPv6 literals). */
void srv_addr_format(const struct srv_addr *a, char *buf, size_t len);

struct sockaddr_storage;
/* Resolves an address (literal or host name, blocking getaddrinfo: used at
 * start-up only). Returns 0 or RK_EINVAL. */
int srv_addr_resolve(const struct srv_addr *a, struct sockaddr_storage *out);

/* Parses a byte size: plain digits or with a K/KiB/M/MiB/G/GiB suffix. */
int srv_parse_size(const char *s, uint64_t *out);

/* Looks up a member of the initial cluster; NULL if absent. */
const struct srv_member *srv_config_member(const struct srv_config *c,
                                           uint64_t id);

/* The cluster id: a hash of the cluster name and the founding members. */
uint64_t srv_config_cluster_id(const struct srv_config *c);

#endif
