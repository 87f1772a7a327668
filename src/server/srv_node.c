/* The ringkvd node: data dir and bootstrap, groups, listeners, run, shutdown. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rk_assert.h"
#include "rk_log.h"
#include "srv.h"
#include "srv_client.h"
#include "srv_wire.h"

/* The cluster description written next to the LMDB files at bootstrap. */
#define CLUSTER_FILE "cluster.conf"

/* -------------------------------------------------------- cluster file */

/*
 * Until the meta shard's state machine holds the shard map, the shape the
 * cluster was bootstrapped with (shard count, founding members) is kept in
 * <data-dir>/cluster.conf, in the config-file syntax. A restart reads it and
 * it wins over the flags, so every node keeps routing keys the same way.
 */
static int write_cluster_file(struct srv *s)
{
    const struct srv_config *c = s->cfg;
    char path[SRV_PATH_MAX + 32], tmp[SRV_PATH_MAX + 40];
    snprintf(path, sizeof(path), "%s/%s", c->data_dir, CLUSTER_FILE);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL) {
        rk_errf(s->errmsg, "cannot write %s: %s", tmp, strerror(errno));
        return RK_EIO;
    }
    fprintf(f, "# Written once at bootstrap by ringkvd; do not edit.\n");
    fprintf(f, "# cluster id %016" PRIx64 "\n", s->cluster_id);
    fprintf(f, "initial-cluster-token = %s\n", c->cluster_name);
    fprintf(f, "shards = %u\n", c->shards);
    fprintf(f, "initial-cluster = ");
    for (uint32_t i = 0; i < c->n_members; i++) {
        char a[SRV_HOST_MAX + 16];
        srv_addr_format(&c->members[i].peer, a, sizeof(a));
        fprintf(f, "%s%" PRIu64 "=%s", i ? "," : "", c->members[i].id, a);
    }
    fprintf(f, "\n");
    int rv = 0;
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        rv = RK_EIO;
    if (fclose(f) != 0)
        rv = RK_EIO;
    if (rv == 0 && rename(tmp, path) != 0)
        rv = RK_EIO;
    if (rv == 0) {
        int dfd = open(c->data_dir, O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
    }
    if (rv != 0)
        rk_errf(s->errmsg, "cannot write %s: %s", path, strerror(errno));
    return rv;
}

/* Reads cluster.conf if present: shards and membership override flags. */
static int read_cluster_file(struct srv *s, bool *found)
{
    char path[SRV_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/%s", s->cfg->data_dir, CLUSTER_FILE);
    *found = access(path, F_OK) == 0;
    if (!*found)
        return 0;
    struct srv_config *file = malloc(sizeof(*file));
    if (file == NULL)
        return RK_ENOMEM;
    srv_config_defaults(file);
    int rv = srv_config_load_file(file, path);
    if (rv != 0) {
        rk_errf(s->errmsg, "%s", file->errmsg);
        free(file);
        return RK_ECORRUPT;
    }
    struct srv_config *c = s->cfg;
    if (c->shards != file->shards)
        rk_log(RK_LOG_WARN, "--shards %u ignored: the cluster was created "
               "with %u shards (%s)", c->shards, file->shards, path);
    c->shards = file->shards;
    memcpy(c->cluster_name, file->cluster_name, sizeof(c->cluster_name));
    /* Keep client addresses given on the command line. */
    for (uint32_t i = 0; i < file->n_members; i++) {
        const struct srv_member *m = srv_config_member(c, file->members[i].id);
        if (m != NULL)
            file->members[i].client = m->client;
    }
    memcpy(c->members, file->members, sizeof(c->members));
    c->n_members = file->n_members;
    free(file);
    return 0;
}

/* ---------------------------------------------------------- placement */

static bool conf_has(const struct raft_conf_state *conf, uint64_t id)
{
    for (uint32_t i = 0; i < conf->n_voters; i++)
        if (conf->voters[i] == id)
            return true;
    for (uint32_t i = 0; i < conf->n_learners; i++)
        if (conf->learners[i] == id)
            return true;
    return false;
}

static int bootstrap(struct srv *s)
{
    const struct srv_config *c = s->cfg;
    struct stor_batch *b;
    int rv = stor_batch_new(&b);
    if (rv != 0)
        return rv;
    uint32_t hosted = 0;
    for (uint64_t shard = 0; shard <= c->shards && rv == 0; shard++) {
        struct raft_conf_state conf;
        srv_meta_bootstrap_conf(c, shard, &conf);
        if (!conf_has(&conf, c->id))
            continue;
        rv = stor_batch_create_shard(b, shard, &conf);
        hosted++;
    }
    if (rv == 0)
        rv = stor_batch_commit(s->stor, b);
    stor_batch_free(b);
    if (rv != 0) {
        rk_errf(s->errmsg, "bootstrap: %s", stor_errmsg(s->stor));
        return rv;
    }
    rk_log(RK_LOG_INFO,
           "bootstrapped cluster %016" PRIx64 ": %u data shards + meta "
           "shard 0 over %u nodes; this node hosts %u of them",
           s->cluster_id, c->shards, c->n_members, hosted);
    return 0;
}

uint64_t srv_shard_hint(struct srv *s, uint64_t shard)
{
    return srv_meta_shard_hint(s, shard);
}

/* ------------------------------------------------------------ peers */

const char *srv_node_client_addr(struct srv *s, uint64_t id)
{
    static char buf[SRV_HOST_MAX + 16];
    const struct srv_member *m = srv_config_member(s->cfg, id);
    if (m != NULL && m->client.port != 0) {
        srv_addr_format(&m->client, buf, sizeof(buf));
        return buf;
    }
    if (id == s->cfg->id) {
        srv_addr_format(&s->cfg->listen, buf, sizeof(buf));
        return buf;
    }
    struct srv_peer *p = s->peers_started ? srv_peers_get(&s->peers, id)
                                          : NULL;
    return p != NULL ? p->client_addr : "";
}

bool srv_node_alive(struct srv *s, uint64_t id)
{
    if (id == s->cfg->id)
        return true;
    if (!s->peers_started || !srv_peers_is_up(&s->peers, id))
        return false;
    uint64_t now = srv_loop_now(&s->loop);
    for (uint32_t i = 0; i < SRV_MAX_NODES; i++) {
        if (s->peer_ids[i] == id)
            return s->peer_last_heard[i] != 0 &&
                   now - s->peer_last_heard[i] <= s->cfg->election_ms;
    }
    return false;
}

static int on_peer_msg(void *arg, const struct raft_msg *m)
{
    struct srv *s = arg;
    s->metrics.peer_msgs_in++;
    unsigned kind;
    switch (m->type) {
    case RAFT_MSG_APPEND:
        kind = m->n_entries > 0 ? SRV_PEER_KIND_APPEND
                                : SRV_PEER_KIND_APPEND_EMPTY;
        break;
    case RAFT_MSG_APPEND_RESP: kind = SRV_PEER_KIND_APPEND_RESP; break;
    case RAFT_MSG_HEARTBEAT: kind = SRV_PEER_KIND_HEARTBEAT; break;
    case RAFT_MSG_HEARTBEAT_RESP: kind = SRV_PEER_KIND_HEARTBEAT_RESP; break;
    default: kind = SRV_PEER_KIND_OTHER; break;
    }
    s->metrics.peer_msgs_in_kind[kind]++;
    int rv = srv_groups_step(s, m);
    if (rv != 0 && rv != RK_ESTALE)
        rk_log(RK_LOG_DEBUG, "shard %" PRIu64 ": %s from node %" PRIu64
               " refused: %s", m->shard, raft_msg_type_name(m->type),
               m->from, rk_strerror(rv));
    /* A refused message is the core's business (stale, unknown shard): it
     * never closes the connection; only undecodable bytes do. */
    return 0;
}

static void note_heard(struct srv *s, uint64_t from)
{
    for (uint32_t i = 0; i < SRV_MAX_NODES; i++) {
        if (s->peer_ids[i] == from) {
            s->peer_last_heard[i] = srv_loop_now(&s->loop);
            return;
        }
    }
}

static int on_peer_frame(void *data, uint64_t from, const uint8_t *buf,
                         size_t len)
{
    struct srv *s = data;
    s->metrics.peer_frames_in++;
    s->metrics.peer_bytes_in += len + SRV_FRAME_HEADER;
    note_heard(s, from);
    if (s->failstop)
        return 0;
    /* Undecodable bytes close the connection; refused messages do not. */
    int rv = srv_wire_decode(buf, len, from, s->cfg->id,
                             s->cfg->max_frame_bytes, on_peer_msg, s);
    return rv == 0 ? 0 : -1;
}

static void on_peer_state(void *data, uint64_t peer, bool up)
{
    struct srv *s = data;
    s->metrics.peer_conns_open += up ? 1 : -1;
    if (!up) {
        rk_log(RK_LOG_INFO, "peer node %" PRIu64 " is unreachable", peer);
        srv_groups_peer_down(s, peer);
    }
}

/* Node-level keepalives, and silent peers wake the groups they lead. */
static void peer_liveness(struct srv *s)
{
    uint64_t now = srv_loop_now(&s->loop);
    for (uint32_t i = 0; i < SRV_MAX_NODES; i++) {
        uint64_t id = s->peer_ids[i];
        if (id == 0)
            continue;
        uint8_t *ka = NULL;
        size_t len = 0;
        if (srv_wire_encode(s->cfg->id, id, NULL, 0, s->cfg->max_frame_bytes,
                            &ka, &len) == 0) {
            uv_buf_t b = uv_buf_init((char *)ka, (unsigned)len);
            if (srv_peers_send(&s->peers, id, &b, 1) == 0) {
                s->metrics.peer_frames_out++;
                s->metrics.peer_bytes_out += len + SRV_FRAME_HEADER;
            }
            free(ka);
        }
        if (s->peer_last_heard[i] != 0 &&
            now - s->peer_last_heard[i] > s->cfg->election_ms) {
            rk_log(RK_LOG_INFO, "peer node %" PRIu64 " silent for %" PRIu64
                   " ms", id, now - s->peer_last_heard[i]);
            s->peer_last_heard[i] = 0;
            srv_groups_peer_down(s, id);
        }
    }
}

/* ------------------------------------------------------------ metrics */

static void render_metrics(void *data, FILE *out)
{
    struct srv *s = data;
    srv_metrics_write(&s->metrics, out);
    struct stor_stats ss;
    stor_stats(s->stor, &ss);
    srv_metrics_counter(out, "ringkv_storage_commits_total",
                        "Storage batches written (one WAL record each).",
                        ss.batches);
    srv_metrics_counter(out, "ringkv_storage_lazy_commits_total",
                        "Batches that needed no durability (no WAL sync of "
                        "their own).",
                        ss.lazy_batches);
    srv_metrics_counter(out, "ringkv_storage_merged_batches_total",
                        "Durable batches that shared another batch's WAL "
                        "sync.",
                        ss.merged_batches);
    srv_metrics_counter(out, "ringkv_storage_checkpoints_total",
                        "LMDB commits of the open transaction (checkpoints "
                        "of the WAL).",
                        ss.checkpoints);
    srv_metrics_counter(out, "ringkv_storage_checkpoint_microseconds_total",
                        "Time the storage thread spent in checkpoints (no "
                        "batch is written meanwhile).",
                        ss.checkpoint_us);
    srv_metrics_counter(out,
                        "ringkv_storage_checkpoint_sync_microseconds_total",
                        "Time the checkpoint sync thread spent making "
                        "checkpoints durable (fdatasync of data.mdb and of "
                        "the ckpt marker; the storage thread goes on "
                        "meanwhile).",
                        ss.checkpoint_sync_us);
    srv_metrics_counter(out, "ringkv_storage_checkpoint_syncs_total",
                        "Checkpoints made durable by the sync thread.",
                        ss.checkpoint_syncs);
    srv_metrics_counter(out, "ringkv_storage_checkpoint_sync_waits_total",
                        "Checkpoint commits that waited for the previous "
                        "checkpoint's sync (part of the checkpoint time).",
                        ss.checkpoint_sync_waits);
    srv_metrics_counter(out,
                        "ringkv_storage_checkpoint_sync_wait_microseconds_"
                        "total",
                        "Of the checkpoint time, the waits for the previous "
                        "checkpoint's sync.",
                        ss.checkpoint_sync_wait_us);
    srv_metrics_counter(out, "ringkv_storage_checkpoints_deferred_total",
                        "Timed checkpoints put off while the previous one's "
                        "sync ran.",
                        ss.checkpoint_deferred);
    srv_metrics_counter(out, "ringkv_storage_wal_bytes_total",
                        "Bytes appended to the WAL.", ss.wal_bytes);
    srv_metrics_counter(out, "ringkv_storage_wal_syncs_total",
                        "Syncs of the WAL (O_DIRECT writes with RWF_DSYNC, "
                        "or fdatasyncs).",
                        ss.wal_syncs);
    srv_metrics_counter(out, "ringkv_storage_wal_writes_total",
                        "Write calls into WAL segments.", ss.wal_writes);
    srv_metrics_counter(out, "ringkv_storage_wal_file_bytes_total",
                        "WAL segment bytes used (records and the padding "
                        "of O_DIRECT writes to whole blocks).",
                        ss.wal_file_bytes);
    srv_metrics_gauge(out, "ringkv_storage_wal_direct",
                      "1 when the WAL is written with O_DIRECT, 0 when "
                      "through the page cache.",
                      ss.wal_direct ? 1 : 0);
    srv_metrics_family(out, "ringkv_shard_term", "gauge",
                       "Current Raft term of each hosted shard.");
    for (uint64_t id = 0; id < s->groups_cap; id++) {
        struct srv_group *g = s->groups[id];
        if (g != NULL)
            fprintf(out, "ringkv_shard_term{shard=\"%" PRIu64 "\"} %" PRIu64
                    "\n", id, g->term);
    }
    struct raft_status st;
    srv_metrics_family(out, "ringkv_shard_commit_index", "gauge",
                       "Raft commit index of each hosted shard.");
    for (uint64_t id = 0; id < s->groups_cap; id++) {
        struct srv_group *g = s->groups[id];
        if (g == NULL)
            continue;
        raft_status(g->raft, &st);
        fprintf(out, "ringkv_shard_commit_index{shard=\"%" PRIu64 "\"} %"
                PRIu64 "\n", id, st.commit);
    }
    srv_metrics_family(out, "ringkv_shard_applied_index", "gauge",
                       "Index applied to the state machine, per shard.");
    for (uint64_t id = 0; id < s->groups_cap; id++) {
        struct srv_group *g = s->groups[id];
        if (g != NULL)
            fprintf(out, "ringkv_shard_applied_index{shard=\"%" PRIu64
                    "\"} %" PRIu64 "\n", id, g->applied);
    }
    srv_metrics_family(out, "ringkv_shard_leader", "gauge",
                       "Node id of the shard's known leader (0 = none).");
    for (uint64_t id = 0; id < s->groups_cap; id++) {
        struct srv_group *g = s->groups[id];
        if (g != NULL)
            fprintf(out, "ringkv_shard_leader{shard=\"%" PRIu64 "\"} %"
                    PRIu64 "\n", id, g->leader);
    }
    uint64_t leaders = 0, quiesced = 0;
    for (uint64_t id = 0; id < s->groups_cap; id++) {
        struct srv_group *g = s->groups[id];
        if (g == NULL)
            continue;
        leaders += g->role == RAFT_LEADER;
        quiesced += g->quiesced;
    }
    srv_metrics_gauge(out, "ringkv_shards_hosted",
                      "Shard replicas hosted by this node.", s->n_groups);
    srv_metrics_gauge(out, "ringkv_shards_leading",
                      "Hosted shards this node leads.", leaders);
    srv_metrics_gauge(out, "ringkv_shards_quiesced",
                      "Hosted shards that stopped ticking (idle).", quiesced);
    srv_metrics_gauge(out, "ringkv_map_epoch",
                      "Epoch of the shard map this node routes with.",
                      srv_meta_epoch(s));
    srv_metrics_gauge(out, "ringkv_moves_in_flight",
                      "Replica moves the meta leader waits for (0 on "
                      "other nodes).",
                      srv_rebalance_moves(s));
    srv_metrics_counter(out, "ringkv_splits_applied_total",
                        "Shard splits this node applied (a SPLIT entry of a "
                        "donor replica).",
                        s->metrics.splits_applied);
    srv_metrics_counter(out, "ringkv_splits_started_total",
                        "Splits begun through this node (meta leader).",
                        s->metrics.splits_started);
    srv_metrics_counter(out, "ringkv_splits_finished_total",
                        "Splits switched over in the map through this node "
                        "(meta leader).",
                        s->metrics.splits_finished);
    srv_metrics_gauge(out, "ringkv_splits_in_flight",
                      "Splits the map records as in flight.",
                      srv_meta_map(s)->n_moves > 0 ? 1u : 0u);
    srv_metrics_gauge(out, "ringkv_fail_stop",
                      "1 after a storage failure stopped the node.",
                      s->failstop ? 1 : 0);
}

static bool health(void *data, FILE *out)
{
    struct srv *s = data;
    if (s->failstop) {
        fprintf(out, "fail-stop: %s\n", rk_strerror(s->failstop_code));
        return false;
    }
    uint32_t without = 0;
    for (uint64_t id = 0; id < s->groups_cap; id++) {
        struct srv_group *g = s->groups[id];
        if (g != NULL && g->leader == 0)
            without++;
    }
    if (without > 0) {
        fprintf(out, "%u of %u shards have no known leader\n", without,
                s->n_groups);
        return false;
    }
    fprintf(out, "ok\n");
    return true;
}

/* ------------------------------------------------------------ the loop */

static void before_sleep(void *data)
{
    struct srv *s = data;
    srv_groups_flush(s);
    srv_conn_flush_all();
}

static void on_tick(void *data)
{
    struct srv *s = data;
    srv_groups_tick(s);
    srv_meta_tick(s);
    srv_rebalance_tick(s);
    srv_split_tick(s);
    /* Keepalives at the heartbeat interval. */
    uint32_t every = s->cfg->heartbeat_ms / s->cfg->tick_ms;
    if (every == 0 || s->loop.ticks % every == 0)
        peer_liveness(s);
}

static void on_done_async(uv_async_t *a)
{
    struct srv *s = a->data;
    srv_groups_on_done(s);
}

static void on_done_async_closed(uv_handle_t *h)
{
    struct srv *s = h->data;
    s->done_async_open = false;
}

static void on_peers_closed(struct srv_peers *ps)
{
    (void)ps;
}

static void on_http_closed(struct srv_http *h)
{
    (void)h;
}

void srv_wait_flushes(struct srv *s)
{
    /* Let the batches already submitted finish so that nothing the core
     * handed out is left half-done; stor_close also waits for them. */
    while (s->flush_head != NULL) {
        srv_groups_submit(s);
        pthread_mutex_lock(&s->done_mu);
        bool done = s->flush_head->done;
        pthread_mutex_unlock(&s->done_mu);
        if (!done) {
            usleep(1000);
            continue;
        }
        srv_groups_on_done(s);
    }
}

static void on_stop(void *data)
{
    struct srv *s = data;
    s->stopping = true;
    srv_groups_fail_all(s, RK_ESHUTDOWN);
    if (s->clients != NULL)
        srv_clients_close(s->clients);
    if (s->peers_started)
        srv_peers_close(&s->peers, on_peers_closed);
    if (s->http_started)
        srv_http_close(&s->http, on_http_closed);
    srv_wait_flushes(s);
    if (s->done_async_open)
        uv_close((uv_handle_t *)&s->done_async, on_done_async_closed);
}

/* -------------------------------------------------------------- init */

static int make_dir(const char *path)
{
    char buf[SRV_PATH_MAX];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *p = buf + 1; *p != '\0'; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(buf, 0700) != 0 && errno != EEXIST)
            return -1;
        *p = '/';
    }
    if (mkdir(buf, 0700) != 0 && errno != EEXIST)
        return -1;
    return 0;
}

/* A node without --initial-cluster: restarts from the map it saved when
 * it joined, or joins now (--join). Sets s->cluster_id. */
static int joined_identity(struct srv *s, bool *joined)
{
    const struct srv_config *c = s->cfg;
    char path[SRV_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/shard-map", c->data_dir);
    if (make_dir(c->data_dir) != 0) {
        rk_errf(s->errmsg, "cannot create %s: %s", c->data_dir,
                strerror(errno));
        return RK_EIO;
    }
    if (access(path, F_OK) != 0) {
        if (c->join.port == 0)
            return 0;
        int rv = srv_meta_join(s);
        if (rv != 0)
            return rv;
    }
    struct shard_map m;
    shard_map_init(&m);
    int rv = srv_meta_read_file(c, &m);
    if (rv != 0) {
        rk_errf(s->errmsg, "%s is not a shard map: %s", path,
                rk_strerror(rv));
        return rv;
    }
    s->cluster_id = m.cluster_id;
    shard_map_free(&m);
    *joined = true;
    return 0;
}

static int open_storage(struct srv *s)
{
    struct srv_config *c = s->cfg;
    bool found = false;
    int rv = read_cluster_file(s, &found);
    if (rv != 0)
        return rv;
    if (make_dir(c->data_dir) != 0) {
        rk_errf(s->errmsg, "cannot create %s: %s", c->data_dir,
                strerror(errno));
        return RK_EIO;
    }
    /* A node that joined a running cluster has no cluster.conf: its
     * identity is the shard map it saved (srv_meta_join). */
    bool joined = false;
    if (c->n_members == 0 && (rv = joined_identity(s, &joined)) != 0)
        return rv;
    if (c->n_members == 0 && !joined) {
        rk_errf(s->errmsg,
                "%s holds no cluster and neither --initial-cluster nor "
                "--join was given", c->data_dir);
        return RK_EINVAL;
    }
    if (!joined && srv_config_member(c, c->id) == NULL) {
        rk_errf(s->errmsg, "node %" PRIu64 " is not a member of the cluster "
                "in %s", c->id, c->data_dir);
        return RK_EFOREIGN;
    }
    if (!joined)
        s->cluster_id = srv_config_cluster_id(c);
    struct stor_opts o;
    memset(&o, 0, sizeof(o));
    o.path = c->data_dir;
    o.cluster_id = s->cluster_id;
    o.node_id = c->id;
    o.create = true;
    o.unsafe_no_sync = c->unsafe_no_sync;
    o.conf_decode = raft_conf_change_decode;
    o.key_hash = shard_key_hash;
    char err[RK_ERRMSG_SIZE] = "";
    rv = stor_open(&o, &s->stor, err);
    if (rv != 0) {
        rk_errf(s->errmsg, "cannot open the data dir: %s", err);
        return rv;
    }
    uint64_t ids[1];
    if (!joined && stor_shard_list(s->stor, ids, 1) == 0) {
        if ((rv = bootstrap(s)) != 0)
            return rv;
    }
    if (!joined && !found && (rv = write_cluster_file(s)) != 0)
        return rv;
    s->n_data_shards = c->shards;
    return 0;
}

static int open_groups(struct srv *s)
{
    uint32_t n = stor_shard_list(s->stor, NULL, 0);
    uint64_t *ids = calloc(n + 1, sizeof(*ids));
    if (ids == NULL)
        return RK_ENOMEM;
    n = stor_shard_list(s->stor, ids, n);
    uint64_t max = 0;
    for (uint32_t i = 0; i < n; i++)
        max = ids[i] > max ? ids[i] : max;
    s->groups_cap = (uint32_t)max + 1;
    s->groups = calloc(s->groups_cap, sizeof(*s->groups));
    if (s->groups == NULL) {
        free(ids);
        return RK_ENOMEM;
    }
    int rv = 0;
    for (uint32_t i = 0; i < n && rv == 0; i++) {
        struct srv_group *g;
        rv = srv_group_open(s, ids[i], &g);
        if (rv == 0) {
            s->groups[ids[i]] = g;
            s->n_groups++;
        } else {
            rk_errf(s->errmsg, "cannot start shard %" PRIu64 ": %s", ids[i],
                    rk_strerror(rv));
        }
    }
    free(ids);
    return rv;
}

static int start_peers(struct srv *s)
{
    struct srv_config *c = s->cfg;
    char caddr[SRV_HOST_MAX + 16];
    srv_addr_format(&c->listen, caddr, sizeof(caddr));
    int rv = srv_peers_init(&s->peers, &s->loop.loop, s->cluster_id, c->id,
                            caddr, &c->peer_listen, c->max_frame_bytes,
                            on_peer_frame, on_peer_state, s);
    if (rv != 0) {
        rk_errf(s->errmsg, "%s", s->peers.errmsg);
        return rv;
    }
    s->peers_started = true;
    uint32_t k = 0;
    for (uint32_t i = 0; i < c->n_members; i++) {
        const struct srv_member *m = &c->members[i];
        if (m->id == c->id)
            continue;
        struct sockaddr_storage ss;
        if (srv_addr_resolve(&m->peer, &ss) != 0) {
            rk_errf(s->errmsg, "cannot resolve node %" PRIu64 "'s address %s",
                    m->id, m->peer.host);
            return RK_EINVAL;
        }
        if ((rv = srv_peers_add(&s->peers, m->id, &ss)) != 0)
            return rv;
        s->peer_ids[k++] = m->id;
    }
    return 0;
}

int srv_init(struct srv *s, struct srv_config *cfg)
{
    memset(s, 0, sizeof(*s));
    s->cfg = cfg;
    srv_metrics_init(&s->metrics);
    pthread_mutex_init(&s->done_mu, NULL);
    s->election_ticks = cfg->election_ms / cfg->tick_ms;
    s->heartbeat_ticks = cfg->heartbeat_ms / cfg->tick_ms;
    if (s->heartbeat_ticks == 0)
        s->heartbeat_ticks = 1;
    if (s->election_ticks <= s->heartbeat_ticks)
        s->election_ticks = s->heartbeat_ticks * 3;
    /* srv_config caps --max-key-bytes at 64 KiB, which storage holds. */
    _Static_assert(STOR_MAX_KEY >= (64u << 10),
                   "storage must hold the largest --max-key-bytes");
    RK_ASSERT(cfg->max_key_bytes <= STOR_MAX_KEY);

    struct srv_loop_hooks hooks = {.data = s,
                                   .before_sleep = before_sleep,
                                   .on_tick = on_tick,
                                   .on_stop = on_stop};
    int rv = srv_loop_init(&s->loop, cfg->tick_ms, &hooks);
    if (rv != 0) {
        rk_errf(s->errmsg, "cannot set up the event loop");
        return rv;
    }
    uv_async_init(&s->loop.loop, &s->done_async, on_done_async);
    s->done_async.data = s;
    s->done_async_open = true;

    if ((rv = open_storage(s)) != 0)
        return rv;
    if ((rv = srv_meta_init(s)) != 0)
        return rv;
    if ((rv = srv_ring_init(&s->ring, s->n_data_shards,
                            SRV_RING_DEFAULT_VNODES)) != 0) {
        rk_errf(s->errmsg, "cannot build the hash ring");
        return rv;
    }
    if ((rv = open_groups(s)) != 0)
        return rv;
    if ((rv = start_peers(s)) != 0)
        return rv;
    if ((rv = srv_clients_start(s, &s->clients)) != 0)
        return rv;
    if (cfg->metrics_listen.port != 0) {
        rv = srv_http_start(&s->http, &s->loop.loop, &cfg->metrics_listen,
                            render_metrics, health, s);
        if (rv != 0) {
            rk_errf(s->errmsg, "%s", s->http.errmsg);
            return rv;
        }
        s->http_started = true;
    }
    char a[SRV_HOST_MAX + 16], p[SRV_HOST_MAX + 16];
    srv_addr_format(&cfg->listen, a, sizeof(a));
    srv_addr_format(&cfg->peer_listen, p, sizeof(p));
    rk_log(RK_LOG_INFO, "node %" PRIu64 " ready: clients on %s, peers on %s, "
           "%u shard replicas", cfg->id, a, p, s->n_groups);
    return 0;
}

int srv_run(struct srv *s)
{
    return srv_loop_run(&s->loop);
}

void srv_fini(struct srv *s)
{
    if (s->loop.loop.data != NULL && !s->loop.stopping) {
        /* srv_init failed half-way: close what it opened. */
        srv_loop_stop(&s->loop);
        srv_loop_run(&s->loop);
    }
    srv_groups_fail_all(s, RK_ESHUTDOWN);
    if (s->clients != NULL)
        srv_clients_free(s->clients);
    for (uint64_t id = 0; id < s->groups_cap; id++)
        srv_group_free(s->groups[id]);
    free(s->groups);
    srv_ring_free(&s->ring);
    srv_meta_free(s);
    srv_rebalance_free(s);
    srv_split_free(s);
    if (s->stor != NULL)
        stor_close(s->stor);
    pthread_mutex_destroy(&s->done_mu);
    rk_buf_free(&s->wire_out);
}
