/* The meta shard's state machine: shard map record, bootstrap, registry. */
#include "srv_meta.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "rk_assert.h"
#include "rk_log.h"
#include "srv.h"
#include "srv_rpc.h"

/* Replicas per shard when the initial cluster has more nodes. */
#define BOOTSTRAP_REPLICAS 3
/* Pause between two attempts of the leader's own proposals. */
#define RETRY_MS 200
/* How often a node without a meta replica asks for the map. */
#define FETCH_MS 500
/* The last map a node installed, for nodes without a meta replica (a
 * joined node restarts from it). */
#define MAP_FILE "shard-map"

struct srv_meta {
    struct shard_map map; /* in use: committed, or the bootstrap one */
    uint64_t rev;         /* revision of the record; 0 = not committed */
    bool proposing;       /* one own proposal (bootstrap, address) */
    bool peers_dirty;     /* nodes may lack a peer connection */
    bool trusted;         /* the map came from the meta group (record,
                             fetched, or saved): replicas may follow it */
    bool fetching;        /* a map fetch is in flight */
    uint64_t fetched_ms;  /* when a fetch last answered */
    uint64_t next_fetch_ms;
    uint32_t fetch_turn;  /* which meta replica to ask next */
    uint64_t next_try_ms;
    struct srv_waiter w;
};

/* ---------------------------------------------------------- bootstrap */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void srv_meta_bootstrap_conf(const struct srv_config *c, uint64_t shard,
                             struct raft_conf_state *conf)
{
    uint64_t ids[SRV_MAX_NODES];
    uint32_t n = c->n_members;
    for (uint32_t i = 0; i < n; i++)
        ids[i] = c->members[i].id;
    qsort(ids, n, sizeof(ids[0]), cmp_u64);
    memset(conf, 0, sizeof(*conf));
    uint32_t r = n < BOOTSTRAP_REPLICAS ? n : BOOTSTRAP_REPLICAS;
    for (uint32_t k = 0; k < r; k++)
        conf->voters[conf->n_voters++] = ids[(shard + k) % n];
}

/* The epoch-1 map of the initial cluster: the balanced ring of
 * SRV_RING_DEFAULT_VNODES points per shard (what srv_ring builds) and the
 * bootstrap placement, preferred leader = first voter. Client addresses
 * not known yet are recorded as ":0" and fixed by the meta leader. */
static int bootstrap_map(struct srv *s, struct shard_map *m)
{
    const struct srv_config *c = s->cfg;
    struct shard_node *nodes = calloc(c->n_members, sizeof(*nodes));
    if (nodes == NULL)
        return RK_ENOMEM;
    for (uint32_t i = 0; i < c->n_members; i++) {
        nodes[i].id = c->members[i].id;
        nodes[i].state = SHARD_NODE_ACTIVE;
        srv_addr_format(&c->members[i].peer, nodes[i].peer_addr,
                        sizeof(nodes[i].peer_addr));
        if (c->members[i].client.port != 0)
            srv_addr_format(&c->members[i].client, nodes[i].client_addr,
                            sizeof(nodes[i].client_addr));
        else if (nodes[i].id == c->id)
            srv_addr_format(&c->listen, nodes[i].client_addr,
                            sizeof(nodes[i].client_addr));
        else
            snprintf(nodes[i].client_addr, sizeof(nodes[i].client_addr),
                     ":0");
    }
    int rv = shard_map_create(m, s->cluster_id, nodes, c->n_members,
                              c->shards, BOOTSTRAP_REPLICAS,
                              SRV_RING_DEFAULT_VNODES);
    free(nodes);
    if (rv != 0)
        return rv;
    for (uint32_t i = 0; i < m->n_shards; i++) {
        struct shard_info *si = &m->shards[i];
        struct raft_conf_state conf;
        srv_meta_bootstrap_conf(c, si->id, &conf);
        si->n_voters = conf.n_voters;
        memcpy(si->voters, conf.voters, conf.n_voters * sizeof(conf.voters[0]));
        si->n_learners = 0;
        /* No preferred leader until the planner balances leaders after
         * a move (a fresh cluster keeps the leaders it elects). */
        si->leader = 0;
    }
    rv = shard_map_validate(m);
    if (rv != 0)
        shard_map_free(m);
    return rv;
}

/* ------------------------------------------------------------ install */

/* Peers for nodes the map knows and the transport does not (joined). */
static void add_peers(struct srv *s)
{
    if (!s->peers_started)
        return;
    const struct shard_map *m = &s->meta->map;
    for (uint32_t i = 0; i < m->n_nodes; i++) {
        const struct shard_node *nd = &m->nodes[i];
        if (nd->id == s->cfg->id || nd->state == SHARD_NODE_REMOVED)
            continue;
        uint32_t k, free_slot = SRV_MAX_NODES;
        for (k = 0; k < SRV_MAX_NODES; k++) {
            if (s->peer_ids[k] == nd->id)
                break;
            if (s->peer_ids[k] == 0 && free_slot == SRV_MAX_NODES)
                free_slot = k;
        }
        if (k < SRV_MAX_NODES || free_slot == SRV_MAX_NODES)
            continue;
        struct srv_addr a;
        struct sockaddr_storage ss;
        if (srv_addr_parse(nd->peer_addr, &a) != 0 ||
            srv_addr_resolve(&a, &ss) != 0 ||
            srv_peers_add(&s->peers, nd->id, &ss) != 0) {
            rk_log(RK_LOG_WARN, "node %" PRIu64 ": cannot reach peer address "
                   "%s", nd->id, nd->peer_addr);
            continue;
        }
        s->peer_ids[free_slot] = nd->id;
    }
}

/* Writes the map to <data-dir>/MAP_FILE (atomically, synced). */
int srv_meta_save(const struct srv_config *c, const struct shard_map *m)
{
    char path[SRV_PATH_MAX + 32], tmp[SRV_PATH_MAX + 40];
    snprintf(path, sizeof(path), "%s/%s", c->data_dir, MAP_FILE);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    size_t cap = shard_map_encoded_size(m), len = 0;
    uint8_t *buf = malloc(cap);
    if (buf == NULL)
        return RK_ENOMEM;
    int rv = shard_map_encode(m, buf, cap, &len);
    int fd = rv == 0 ? open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600) : -1;
    if (rv == 0 && fd < 0)
        rv = RK_EIO;
    if (fd >= 0) {
        if (write(fd, buf, len) != (ssize_t)len || fsync(fd) != 0)
            rv = RK_EIO;
        if (close(fd) != 0)
            rv = RK_EIO;
    }
    if (rv == 0 && rename(tmp, path) != 0)
        rv = RK_EIO;
    free(buf);
    if (rv != 0)
        rk_log(RK_LOG_WARN, "cannot write %s: %s", path, strerror(errno));
    return rv;
}

int srv_meta_read_file(const struct srv_config *c, struct shard_map *m)
{
    char path[SRV_PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/%s", c->data_dir, MAP_FILE);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return errno == ENOENT ? RK_ENOTFOUND : RK_EIO;
    size_t cap = 1u << 20, len = 0;
    uint8_t *buf = malloc(cap);
    int rv = 0;
    while (buf != NULL) {
        len += fread(buf + len, 1, cap - len, f);
        if (len < cap)
            break;
        uint8_t *p = cap < (64u << 20) ? realloc(buf, cap * 2) : NULL;
        if (p == NULL) {
            rv = RK_ETOOLARGE;
            break;
        }
        buf = p;
        cap *= 2;
    }
    if (buf == NULL)
        rv = RK_ENOMEM;
    if (rv == 0 && ferror(f))
        rv = RK_EIO;
    fclose(f);
    if (rv == 0)
        rv = shard_map_decode(m, buf, len);
    free(buf);
    return rv;
}

/* Takes `next` (a valid map of this cluster, consumed) if its epoch is
 * newer: a fetched map (rev 0), or the meta record at revision rev (equal
 * epochs too: the record is the truth). */
static void install(struct srv *s, struct shard_map *next, uint64_t rev)
{
    struct srv_meta *mt = s->meta;
    if (rev != 0)
        mt->rev = rev; /* what the next CAS compares with */
    if (next->epoch < mt->map.epoch ||
        (rev == 0 && next->epoch == mt->map.epoch)) {
        /* Older than what this node knows (a lagging meta replica's record
         * after a fetched map): keep the newer one. */
        shard_map_free(next);
        return;
    }
    bool same = next->epoch == mt->map.epoch;
    shard_map_free(&mt->map);
    mt->map = *next;
    shard_map_init(next);
    mt->trusted = true;
    if (same)
        return;
    rk_log(RK_LOG_INFO, "shard map epoch %" PRIu64 ": %u nodes, %u shards",
           mt->map.epoch, mt->map.n_nodes, mt->map.n_shards);
    mt->peers_dirty = true;
    if (srv_group_get(s, SHARD_META_ID) == NULL)
        srv_meta_save(s->cfg, &mt->map);
}

/* Reads the record from shard 0's state machine; installs a newer epoch. */
static int load(struct srv *s)
{
    struct srv_meta *mt = s->meta;
    struct stor_value v;
    memset(&v, 0, sizeof(v));
    int rv = stor_kv_get(s->stor, SHARD_META_ID, SRV_META_KEY,
                         SRV_META_KEY_LEN, &v);
    if (rv == RK_ENOTFOUND)
        return 0;
    if (rv != 0)
        return rv;
    if (v.revision == mt->rev) {
        free(v.data);
        return 0;
    }
    struct shard_map next;
    shard_map_init(&next);
    rv = shard_map_decode(&next, v.data, v.len);
    free(v.data);
    if (rv != 0) {
        rk_log(RK_LOG_ERROR, "meta shard: the shard map record at revision "
               "%" PRIu64 " does not decode: %s", v.revision,
               rk_strerror(rv));
        return RK_ECORRUPT;
    }
    if (next.cluster_id != s->cluster_id) {
        shard_map_free(&next);
        rk_log(RK_LOG_ERROR, "meta shard: shard map of another cluster");
        return RK_EFOREIGN;
    }
    install(s, &next, v.revision);
    return 0;
}

int srv_meta_init(struct srv *s)
{
    struct srv_meta *mt = calloc(1, sizeof(*mt));
    if (mt == NULL)
        return RK_ENOMEM;
    shard_map_init(&mt->map);
    mt->peers_dirty = true; /* nodes that joined after the founders */
    s->meta = mt;
    /* The map saved by a node without a meta replica (a joined node, or a
     * founder whose meta replica moved away) beats the bootstrap one. */
    struct shard_map saved;
    shard_map_init(&saved);
    int rv = srv_meta_read_file(s->cfg, &saved);
    if (rv == 0) {
        mt->map = saved;
        mt->trusted = true;
    } else if (s->cfg->n_members > 0) {
        rv = bootstrap_map(s, &mt->map);
    }
    if (rv != 0) {
        rk_errf(s->errmsg, "cannot build or read the shard map: %s",
                rk_strerror(rv));
        return rv;
    }
    if (stor_shard_get(s->stor, SHARD_META_ID) != NULL &&
        (rv = load(s)) != 0) {
        rk_errf(s->errmsg, "cannot load the shard map from the meta shard: "
                "%s", rk_strerror(rv));
        return rv;
    }
    return 0;
}

void srv_meta_free(struct srv *s)
{
    if (s->meta == NULL)
        return;
    shard_map_free(&s->meta->map);
    free(s->meta);
    s->meta = NULL;
}

void srv_meta_applied(struct srv *s)
{
    int rv = load(s);
    if (rv != 0)
        rk_log(RK_LOG_ERROR, "meta shard: keeping epoch %" PRIu64 ": %s",
               s->meta->map.epoch, rk_strerror(rv));
}

/* ------------------------------------------------------------ queries */

const struct shard_map *srv_meta_map(const struct srv *s)
{
    return &s->meta->map;
}

uint64_t srv_meta_epoch(const struct srv *s)
{
    return s->meta != NULL ? s->meta->map.epoch : 0;
}

bool srv_meta_committed(const struct srv *s)
{
    return s->meta->rev != 0;
}

bool srv_meta_trusted(const struct srv *s)
{
    return s->meta->trusted;
}

bool srv_meta_fresh(struct srv *s)
{
    struct srv_meta *mt = s->meta;
    struct srv_group *g = srv_group_get(s, SHARD_META_ID);
    if (g != NULL && g->leader != 0) {
        struct raft_status st;
        raft_status(g->raft, &st);
        for (uint32_t i = 0; i < st.conf.n_voters; i++)
            if (st.conf.voters[i] == s->cfg->id)
                return st.commit <= g->applied;
    }
    return mt->fetched_ms != 0 &&
           srv_loop_now(&s->loop) <= mt->fetched_ms + 3 * FETCH_MS;
}

uint32_t srv_meta_route(const struct srv *s, const void *key, size_t len)
{
    return shard_map_route(&s->meta->map, key, len);
}

uint64_t srv_meta_shard_hint(const struct srv *s, uint64_t shard)
{
    if (shard > UINT32_MAX)
        return 0;
    const struct shard_info *si = shard_map_shard(&s->meta->map,
                                                  (shard_id)shard);
    if (si == NULL || si->n_voters == 0)
        return 0;
    return si->leader != 0 ? si->leader : si->voters[0];
}

/* ---------------------------------------------------------- proposals */

/* Proposes `next` as the new record: CAS on the revision the change was
 * computed from (0 = the record must be absent). */
static int propose_map(struct srv *s, const struct shard_map *next,
                       struct srv_waiter *w, uint64_t timeout_ms)
{
    struct srv_group *g = srv_group_get(s, SHARD_META_ID);
    if (g == NULL || !srv_group_is_leader(g))
        return RK_ENOTLEADER;
    size_t cap = shard_map_encoded_size(next), vlen = 0;
    uint8_t *val = malloc(cap);
    if (val == NULL)
        return RK_ENOMEM;
    int rv = shard_map_encode(next, val, cap, &vlen);
    struct stor_cmd cmd;
    memset(&cmd, 0, sizeof(cmd));
    cmd.op = STOR_CMD_CAS;
    cmd.cas_flags = STOR_CAS_REVISION;
    cmd.expect_rev = s->meta->rev;
    cmd.expect = "";
    cmd.key = SRV_META_KEY;
    cmd.klen = SRV_META_KEY_LEN;
    cmd.value = val;
    cmd.vlen = (uint32_t)vlen;
    size_t need = stor_cmd_size(&cmd), len = 0;
    uint8_t *buf = rv == 0 ? malloc(need) : NULL;
    if (rv == 0 && buf == NULL)
        rv = RK_ENOMEM;
    if (rv == 0)
        rv = stor_cmd_encode(&cmd, buf, need, &len);
    if (rv == 0)
        rv = srv_group_propose(g, buf, len, w, timeout_ms);
    free(buf);
    free(val);
    return rv;
}

static void on_own_applied(struct srv_waiter *w, int status,
                           const struct stor_result *res)
{
    struct srv_meta *mt = container_of(w, struct srv_meta, w);
    mt->proposing = false;
    if (status != 0 || res->status != 0)
        rk_log(RK_LOG_VERBOSE, "meta shard: own change not applied: %s",
               rk_strerror(status != 0 ? status : res->status));
}

/* The first client address a node announced that the map lacks. */
static bool fix_address(struct srv *s, struct shard_map *next)
{
    for (uint32_t i = 0; i < next->n_nodes; i++) {
        struct shard_node *nd = &next->nodes[i];
        if (nd->state == SHARD_NODE_REMOVED)
            continue;
        const char *a = srv_node_client_addr(s, nd->id);
        if (a[0] == '\0' || strcmp(a, nd->client_addr) == 0)
            continue;
        snprintf(nd->client_addr, sizeof(nd->client_addr), "%s", a);
        next->epoch++;
        return true;
    }
    return false;
}

static void on_fetched(void *arg, int status, const Ringkv__Response *resp)
{
    struct srv *s = arg;
    struct srv_meta *mt = s->meta;
    mt->fetching = false;
    if (status != 0 || s->stopping || resp->status != RINGKV__STATUS__OK ||
        resp->shard_map == NULL || resp->shard_map->encoded.len == 0)
        return;
    mt->fetched_ms = srv_loop_now(&s->loop);
    struct shard_map next;
    shard_map_init(&next);
    if (shard_map_decode(&next, resp->shard_map->encoded.data,
                         resp->shard_map->encoded.len) != 0)
        return;
    if (next.cluster_id != s->cluster_id) {
        shard_map_free(&next);
        return;
    }
    if (next.epoch > mt->map.epoch)
        install(s, &next, 0);
    else
        shard_map_free(&next);
}

/* A node without a meta replica asks a meta replica for the map. */
static void maybe_fetch(struct srv *s, uint64_t now)
{
    struct srv_meta *mt = s->meta;
    struct srv_group *g = srv_group_get(s, SHARD_META_ID);
    if (mt->fetching || now < mt->next_fetch_ms)
        return;
    if (g != NULL && g->leader != 0) {
        /* A meta replica applies the records itself, unless the group
         * removed it (its log then stops growing). */
        struct raft_status st;
        raft_status(g->raft, &st);
        bool member = false;
        for (uint32_t i = 0; i < st.conf.n_voters; i++)
            member = member || st.conf.voters[i] == s->cfg->id;
        if (member)
            return;
    }
    mt->next_fetch_ms = now + FETCH_MS;
    const struct shard_info *si = shard_map_shard(&mt->map, SHARD_META_ID);
    if (si == NULL || si->n_voters == 0)
        return;
    uint64_t id = si->voters[mt->fetch_turn++ % si->n_voters];
    const struct shard_node *nd = shard_map_node(&mt->map, id);
    if (nd == NULL)
        return;
    Ringkv__Request rq = RINGKV__REQUEST__INIT;
    Ringkv__GetShardMapRequest gm = RINGKV__GET_SHARD_MAP_REQUEST__INIT;
    gm.known_epoch = mt->map.epoch;
    rq.op_case = RINGKV__REQUEST__OP_GET_SHARD_MAP;
    rq.get_shard_map = &gm;
    if (srv_rpc_call(&s->loop.loop, nd->client_addr, &rq, 2000,
                     s->cfg->max_frame_bytes, on_fetched, s) == 0)
        mt->fetching = true;
}

int srv_meta_propose_own(struct srv *s, const struct shard_map *next)
{
    struct srv_meta *mt = s->meta;
    if (mt->proposing || mt->rev == 0)
        return RK_EBUSY;
    mt->w.cb = on_own_applied;
    int rv = propose_map(s, next, &mt->w, 5000);
    if (rv == 0)
        mt->proposing = true;
    return rv;
}

void srv_meta_tick(struct srv *s)
{
    struct srv_meta *mt = s->meta;
    if (mt != NULL && !s->stopping)
        maybe_fetch(s, srv_loop_now(&s->loop));
    if (mt != NULL && mt->peers_dirty && s->peers_started) {
        mt->peers_dirty = false;
        add_peers(s);
    }
    struct srv_group *g = srv_group_get(s, SHARD_META_ID);
    if (mt == NULL || g == NULL || !srv_group_is_leader(g) ||
        mt->proposing || s->stopping || s->failstop)
        return;
    uint64_t now = srv_loop_now(&s->loop);
    if (now < mt->next_try_ms)
        return;
    mt->next_try_ms = now + RETRY_MS;
    struct shard_map next;
    if (shard_map_copy(&next, &mt->map) != 0)
        return;
    bool change = mt->rev == 0 || fix_address(s, &next);
    if (change) {
        mt->w.cb = on_own_applied;
        int rv = propose_map(s, &next, &mt->w, 5000);
        if (rv == 0)
            mt->proposing = true;
        else
            rk_log(RK_LOG_DEBUG, "meta shard: change not proposed: %s",
                   rk_strerror(rv));
    }
    shard_map_free(&next);
}

/* ------------------------------------------------------------ registry */

/* Proposes `next` for a client, after the checks common to every change. */
static int propose_client(struct srv *s, struct shard_map *next,
                          struct srv_waiter *w, uint64_t timeout_ms,
                          uint64_t *epoch)
{
    int rv = shard_map_validate(next);
    if (rv == 0)
        rv = propose_map(s, next, w, timeout_ms);
    if (rv == 0)
        *epoch = next->epoch;
    shard_map_free(next);
    return rv;
}

static int leader_copy(struct srv *s, struct shard_map *next, char *errmsg)
{
    struct srv_group *g = srv_group_get(s, SHARD_META_ID);
    if (g == NULL || !srv_group_is_leader(g)) {
        rk_errf(errmsg, "not the meta shard's leader");
        return RK_ENOTLEADER;
    }
    if (s->meta->rev == 0) {
        rk_errf(errmsg, "the shard map is not stored yet; retry");
        return RK_EBUSY;
    }
    return shard_map_copy(next, &s->meta->map);
}

int srv_meta_node_add(struct srv *s, uint64_t id, const char *peer_addr,
                      const char *client_addr, struct srv_waiter *w,
                      uint64_t timeout_ms, uint64_t *epoch, char *errmsg)
{
    struct shard_node nd;
    memset(&nd, 0, sizeof(nd));
    struct srv_addr a;
    if (id == 0) {
        rk_errf(errmsg, "node id 0 is reserved");
        return RK_EINVAL;
    }
    if (srv_addr_parse(peer_addr, &a) != 0 || a.port == 0 ||
        strlen(peer_addr) >= sizeof(nd.peer_addr)) {
        rk_errf(errmsg, "bad peer address \"%s\" (want host:port)",
                peer_addr);
        return RK_EINVAL;
    }
    if (srv_addr_parse(client_addr, &a) != 0 || a.port == 0 ||
        strlen(client_addr) >= sizeof(nd.client_addr)) {
        rk_errf(errmsg, "bad client address \"%s\" (want host:port)",
                client_addr);
        return RK_EINVAL;
    }
    nd.id = id;
    nd.state = SHARD_NODE_ACTIVE;
    snprintf(nd.peer_addr, sizeof(nd.peer_addr), "%s", peer_addr);
    snprintf(nd.client_addr, sizeof(nd.client_addr), "%s", client_addr);
    struct shard_map next;
    int rv = leader_copy(s, &next, errmsg);
    if (rv != 0)
        return rv;
    const struct shard_node *old = shard_map_node(&next, id);
    if (old != NULL && old->state == SHARD_NODE_DRAINING) {
        /* Leaving: answering OK would change nothing (the drain goes on and
         * the node ends removed), and its id can never come back. */
        shard_map_free(&next);
        rk_errf(errmsg, "node %" PRIu64 " is leaving (being drained after "
                "`member remove`); its id cannot be added again (ids are "
                "never reused): add the node under a new id", id);
        return RK_EEXIST;
    }
    if (old != NULL && old->state == SHARD_NODE_ACTIVE &&
        strcmp(old->peer_addr, peer_addr) != 0) {
        /* Registered (e.g. by `member add`) under another peer address: a
         * join from this one is another node, or a misconfigured one. */
        rk_errf(errmsg, "node %" PRIu64 " is registered with peer address "
                "%s, not %s (a node joins with the --peer-listen address "
                "it was added with)", id, old->peer_addr, peer_addr);
        shard_map_free(&next); /* old points into it */
        return RK_EEXIST;
    }
    if (old != NULL && old->state == SHARD_NODE_ACTIVE &&
        shard_map_node_shards(&next, id, NULL, 0) == 0) {
        /* A retried join (its answer was lost): nothing moved onto the node
         * yet, so this is the same node again, not an error. */
        shard_map_free(&next);
        *epoch = s->meta->map.epoch;
        return SRV_META_ALREADY;
    }
    if (old != NULL && old->state != SHARD_NODE_REMOVED) {
        /* It hosts replicas: a node that lost its data dir must not come
         * back under its id (an empty voter could elect a stale leader). */
        shard_map_free(&next);
        rk_errf(errmsg, "node %" PRIu64 " is a member hosting replicas; a "
                "node that lost its data joins with a new id after "
                "`member remove %" PRIu64 "`", id, id);
        return RK_EEXIST;
    }
    rv = shard_map_node_add(&next, &nd);
    if (rv != 0) {
        shard_map_free(&next);
        rk_errf(errmsg, rv == RK_EEXIST ? "node id %" PRIu64 " is taken "
                "(ids are never reused)" : "cannot register node %" PRIu64,
                id);
        return rv;
    }
    return propose_client(s, &next, w, timeout_ms, epoch);
}

int srv_meta_node_remove(struct srv *s, uint64_t id, struct srv_waiter *w,
                         uint64_t timeout_ms, uint64_t *epoch, char *errmsg)
{
    struct shard_map next;
    int rv = leader_copy(s, &next, errmsg);
    if (rv != 0)
        return rv;
    const struct shard_node *nd = shard_map_node(&next, id);
    uint32_t hosted = shard_map_node_shards(&next, id, NULL, 0);
    if (nd == NULL || nd->state == SHARD_NODE_REMOVED) {
        rv = RK_EINVAL;
        rk_errf(errmsg, "node %" PRIu64 " is not a member", id);
    } else if (nd->state == SHARD_NODE_DRAINING) {
        shard_map_free(&next);
        *epoch = s->meta->map.epoch;
        return SRV_META_ALREADY;
    } else {
        /* A node with replicas drains first (the rebalancer moves them
         * away, then marks it REMOVED). */
        rv = shard_map_node_set_state(&next, id, hosted > 0
                                                     ? SHARD_NODE_DRAINING
                                                     : SHARD_NODE_REMOVED);
    }
    if (rv != 0) {
        shard_map_free(&next);
        return rv;
    }
    return propose_client(s, &next, w, timeout_ms, epoch);
}

/* --------------------------------------------------------------- splits */

int srv_meta_split(struct srv *s, uint32_t donor, bool finish,
                   uint32_t *recipient, struct srv_waiter *w,
                   uint64_t timeout_ms, uint64_t *epoch, char *errmsg)
{
    struct shard_map next;
    int rv = leader_copy(s, &next, errmsg);
    if (rv != 0)
        return rv;
    const struct shard_info *si = shard_map_shard(&next, donor);
    if (si == NULL || donor == SHARD_META_ID) {
        shard_map_free(&next);
        rk_errf(errmsg, "shard %u is not a data shard of the map", donor);
        return RK_EINVAL;
    }
    if (finish) {
        if (si->state != SHARD_STATE_SPLIT_DONOR ||
            si->split_peer != *recipient) {
            shard_map_free(&next);
            *epoch = s->meta->map.epoch;
            return SRV_META_ALREADY;
        }
        /* The switch is safe once the donor's SPLIT entry is committed
         * (every donor replica then builds the new shard). The donor's
         * leader asks only after applying it; a replica here must agree. */
        if (!srv_split_committed_here(s, donor, *recipient)) {
            shard_map_free(&next);
            rk_errf(errmsg, "shard %u's split is not committed here yet; "
                    "retry", donor);
            return RK_EBUSY;
        }
        rv = shard_map_split_finish(&next, donor);
    } else if (si->state == SHARD_STATE_SPLIT_DONOR) {
        *recipient = si->split_peer;
        shard_map_free(&next);
        *epoch = s->meta->map.epoch;
        return SRV_META_ALREADY;
    } else if (next.n_moves > 0 || si->state != SHARD_STATE_ACTIVE) {
        rv = RK_EBUSY;
        rk_errf(errmsg, "another split is in flight; retry when it is done");
    } else if (si->n_learners > 0) {
        rv = RK_EBUSY;
        rk_errf(errmsg, "shard %u is moving replicas; retry when it is "
                "done", donor);
    } else {
        rv = shard_map_split_begin(&next, donor, recipient, NULL, NULL);
        if (rv == RK_EINVAL)
            rk_errf(errmsg, "shard %u cannot be split (its arcs are too "
                    "short)", donor);
    }
    if (rv != 0) {
        shard_map_free(&next);
        return rv;
    }
    return propose_client(s, &next, w, timeout_ms, epoch);
}

int srv_meta_split_finish_own(struct srv *s, uint32_t donor,
                              uint32_t recipient)
{
    struct srv_meta *mt = s->meta;
    if (mt->proposing || mt->rev == 0)
        return RK_EBUSY;
    const struct shard_info *si = shard_map_shard(&mt->map, donor);
    if (si == NULL || si->state != SHARD_STATE_SPLIT_DONOR ||
        si->split_peer != recipient)
        return 0;
    if (!srv_split_committed_here(s, donor, recipient))
        return RK_EBUSY;
    struct shard_map next;
    int rv = shard_map_copy(&next, &mt->map);
    if (rv != 0)
        return rv;
    rv = shard_map_split_finish(&next, donor);
    if (rv == 0)
        rv = srv_meta_propose_own(s, &next);
    shard_map_free(&next);
    return rv;
}
