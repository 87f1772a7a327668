/* Shard splits: the donor's SPLIT entry, the fence, the map switch-over. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "rk_assert.h"
#include "rk_log.h"
#include "srv.h"
#include "srv_rpc.h"

/*
 * A split in the TiKV way: the new shard is born on the donor's nodes, from
 * the donor's own log, so no data crosses the network and the hand-off is
 * one point in one log.
 *
 *  1. The meta leader records the intent (srv_meta_split): the donor is
 *     SPLIT_DONOR, the recipient SPLIT_RECIPIENT with the donor's voters,
 *     the ring already lists the new points but shard_map_route still
 *     sends their arcs to the donor (map->moves). Epoch + 1.
 *  2. The donor's leader (whoever it is, now or after a failover) proposes
 *     a SPLIT entry with those arcs (srv_split_tick). Applying it, every
 *     donor replica moves the keys and sessions into the new shard and
 *     records the arcs, in one storage transaction (stor_split.c). Every
 *     request ordered before the entry was served by the donor, every one
 *     after it is refused there with WRONG_SHARD (writes deterministically
 *     at apply; reads by the fence below), so the hand-off is
 *     linearizable by construction.
 *  3. Each node opens the new group as soon as the apply is done
 *     (srv_split_completed; at start-up, as every stored shard). The
 *     donor's leader then asks the meta leader to finish: the ring points
 *     go to the new shard for good, both shards ACTIVE, epoch + 1. Clients
 *     refused with WRONG_SHARD retry and follow the new map.
 *
 * Reads: a read is served from local state after its ReadIndex (or lease)
 * wait; storage may already hold a LATER batch than the one the group has
 * seen complete. The fence therefore grows when a SPLIT entry is handed to
 * storage (srv_split_gather), before the split can be visible, and every
 * read of a key in a fenced arc is refused.
 *
 * Crashes: the entry is in the log; applying is atomic with the applied
 * index, and applying it twice is a no-op (the record names the
 * recipient). A replica that skips the entry through a snapshot gets the
 * record with the donor's state; it then creates the recipient empty and
 * the recipient's leader fills it by snapshot (srv_split_may_create). An
 * empty replica has no configuration, so it never campaigns.
 */

/* Between two SPLIT proposals of one donor leader. */
#define PROPOSE_EVERY_MS 2000
/* Between two finish (or auto-split) requests to the meta leader. */
#define ASK_EVERY_MS 1000
/* Between two size checks of a led shard (automatic splits). */
#define SIZE_EVERY_MS 10000

/* A size count of one shard on the libuv thread pool (a scan of up to a
 * few times the threshold must not stall the loop): its bytes, and how many
 * of them lie in the arcs a split would move now. */
struct size_work {
    uv_work_t req;
    struct srv *srv;
    uint64_t shard;
    uint64_t limit;
    uint64_t stop;
    struct shard_move *arcs; /* what shard_map_split_begin would move */
    uint32_t n_arcs;
    uint64_t bytes;
    uint64_t moving;
    int rv;
};

struct srv_splits {
    struct size_work *sizing; /* one size count in flight */
    bool asking;              /* one request to the meta leader in flight */
    uint64_t next_ask_ms;
    uint64_t meta_hint; /* the meta leader as last heard */
    uint32_t turn;      /* rotation over the meta voters */
};

static struct srv_splits *state(struct srv *s)
{
    if (s->splits == NULL)
        s->splits = calloc(1, sizeof(*s->splits));
    return s->splits;
}

void srv_split_free(struct srv *s)
{
    /* A size count still queued ends with the loop (its done callback
     * sees s->splits NULL); the loop has stopped by now. */
    free(s->splits);
    s->splits = NULL;
}

/* ----------------------------------------------------------- the fence */

static bool has_arc(const struct srv_group *g, uint32_t to, uint64_t first)
{
    for (uint32_t i = 0; i < g->n_moved; i++)
        if (g->moved[i].to == to && g->moved[i].first == first)
            return true;
    return false;
}

static bool has_to(const struct srv_group *g, uint32_t to)
{
    for (uint32_t i = 0; i < g->n_moved; i++)
        if (g->moved[i].to == to)
            return true;
    return false;
}

static int add_arc(struct srv_group *g, uint32_t to, uint64_t first,
                   uint64_t last)
{
    if (has_arc(g, to, first))
        return 0;
    struct stor_split_arc *p = realloc(g->moved, (g->n_moved + 1) * sizeof(*p));
    if (p == NULL)
        return RK_ENOMEM;
    g->moved = p;
    g->moved[g->n_moved++] = (struct stor_split_arc){first, last, to};
    return 0;
}

/* Adds the shard's applied record to the fence. */
static int load_record(struct srv_group *g)
{
    struct stor_split_arc *arcs = NULL;
    uint32_t n = 0;
    int rv = stor_split_out(g->srv->stor, g->shard, &arcs, &n);
    for (uint32_t i = 0; rv == 0 && i < n; i++)
        rv = add_arc(g, arcs[i].to, arcs[i].first, arcs[i].last);
    free(arcs);
    return rv;
}

int srv_split_load(struct srv_group *g)
{
    if (g->shard == SHARD_META_ID)
        return 0;
    return load_record(g);
}

bool srv_split_moved(const struct srv_group *g, const void *key, size_t len)
{
    if (g->n_moved == 0)
        return false;
    uint64_t h = shard_key_hash(key, len);
    for (uint32_t i = 0; i < g->n_moved; i++)
        if (h >= g->moved[i].first && h <= g->moved[i].last)
            return true;
    return false;
}

/* The SPLIT command of an entry, if it is one. */
static bool split_cmd(const struct raft_entry *e, struct stor_cmd *c)
{
    const uint8_t *d = e->data;
    if (e->type != RAFT_ENTRY_NORMAL || e->len < 2 || d[1] != STOR_CMD_SPLIT)
        return false;
    return stor_cmd_decode(e->data, e->len, c) == 0 && c->op == STOR_CMD_SPLIT;
}

bool srv_split_gather(struct srv_group *g, const struct raft_entry *ents,
                      uint32_t n)
{
    bool found = false;
    if (g->shard == SHARD_META_ID)
        return false;
    for (uint32_t i = 0; i < n; i++) {
        struct stor_cmd c;
        if (!split_cmd(&ents[i], &c))
            continue;
        found = true;
        for (uint32_t k = 0; k < c.n_arcs; k++) {
            uint64_t first, last;
            stor_cmd_arc(&c, k, &first, &last);
            if (add_arc(g, c.split_to, first, last) != 0) {
                /* Without the fence reads could see a half-moved shard:
                 * stop answering rather than answer wrong. */
                rk_log(RK_LOG_ERROR,
                       "shard %" PRIu64 ": out of memory "
                       "recording a split",
                       g->shard);
                g->srv->failstop = true;
                srv_groups_fail_all(g->srv, RK_EFAILSTOP);
                return true;
            }
        }
    }
    return found;
}

/* Opens the group of a shard storage holds and the node does not run. */
static void open_local(struct srv *s, uint32_t shard)
{
    if (srv_group_get(s, shard) != NULL ||
        stor_shard_get(s->stor, shard) == NULL)
        return;
    struct srv_group *ng;
    int rv = srv_groups_grow(s, shard);
    if (rv == 0)
        rv = srv_group_open(s, shard, &ng);
    if (rv != 0) {
        rk_log(RK_LOG_ERROR,
               "shard %u: cannot start the split's new group: "
               "%s",
               shard, rk_strerror(rv));
        return;
    }
    s->groups[shard] = ng;
    s->n_groups++;
    rk_log(RK_LOG_INFO, "shard %u: started (created by a split)", shard);
}

void srv_split_completed(struct srv_group *g)
{
    struct srv *s = g->srv;
    const struct raft_ready *rd = &g->rd;
    if (g->shard == SHARD_META_ID)
        return;
    bool split = rd->snap_install;
    for (uint32_t i = 0; i < rd->n_committed; i++) {
        struct stor_cmd c;
        if (split_cmd(&rd->committed[i], &c)) {
            split = true;
            s->metrics.splits_applied++;
            rk_log(RK_LOG_INFO,
                   "shard %" PRIu64 ": split applied at index "
                   "%" PRIu64 ": %u arcs to shard %u",
                   g->shard, rd->committed[i].index, c.n_arcs, c.split_to);
        }
    }
    if (!split)
        return;
    if (load_record(g) != 0)
        rk_log(RK_LOG_ERROR,
               "shard %" PRIu64 ": cannot read its split "
               "record",
               g->shard);
    for (uint32_t i = 0; i < g->n_moved; i++)
        open_local(s, g->moved[i].to);
}

bool srv_split_committed_here(struct srv *s, uint32_t donor, uint32_t to)
{
    struct srv_group *g = srv_group_get(s, donor);
    return g == NULL || has_to(g, to);
}

/* ---------------------------------------------------- local replicas */

/* Whether the donor's APPLIED state (storage) names the recipient. */
static bool donor_applied(struct srv *s, uint32_t donor, uint32_t recipient)
{
    struct stor_split_arc *arcs = NULL;
    uint32_t n = 0;
    bool yes = false;
    if (stor_split_out(s->stor, donor, &arcs, &n) == 0)
        for (uint32_t i = 0; i < n; i++)
            yes = yes || arcs[i].to == recipient;
    free(arcs);
    return yes;
}

bool srv_split_may_create(struct srv *s, const struct shard_info *si)
{
    if (stor_shard_get(s->stor, si->id) != NULL) {
        open_local(s, si->id);
        return false;
    }
    if (si->state != SHARD_STATE_SPLIT_RECIPIENT)
        return true;
    /* The local donor replica creates it, with the data, when it applies
     * the SPLIT entry. Only if it skipped the entry (a snapshot past it)
     * is the new shard created empty, to be filled by its own leader.
     * Creating it empty before the entry applies on every node would
     * leave it without data. */
    if (stor_shard_get(s->stor, si->split_peer) == NULL)
        return true;
    return donor_applied(s, si->split_peer, si->id);
}

uint8_t srv_split_phase(struct srv *s, const struct shard_info *si)
{
    if (si->state == SHARD_STATE_ACTIVE)
        return 0;
    uint32_t donor =
        si->state == SHARD_STATE_SPLIT_DONOR ? si->id : si->split_peer;
    uint32_t to =
        si->state == SHARD_STATE_SPLIT_DONOR ? si->split_peer : si->id;
    struct srv_group *g = srv_group_get(s, donor);
    /* 1 PREPARING: the donor serves; 2 HANDOFF: applied here, the map
     * switch is pending. */
    return g != NULL && has_to(g, to) ? 2 : 1;
}

/* ------------------------------------------------------ the donor side */

static bool conf_matches(const struct raft_conf_state *c,
                         const struct shard_info *si)
{
    if (c->n_learners != 0 || si->n_learners != 0 ||
        c->n_voters != si->n_voters)
        return false;
    for (uint32_t i = 0; i < si->n_voters; i++) {
        bool in = false;
        for (uint32_t k = 0; k < c->n_voters; k++)
            in = in || c->voters[k] == si->voters[i];
        if (!in)
            return false;
    }
    return true;
}

/* The donor's leader proposes the SPLIT entry (again after a failover or
 * a lost proposal: a second one is a no-op). */
static void propose_split(struct srv *s, struct srv_group *g,
                          const struct shard_map *m,
                          const struct shard_info *si, uint64_t now)
{
    if (now < g->split_next_ms)
        return;
    g->split_next_ms = now + PROPOSE_EVERY_MS;
    struct raft_status st;
    raft_status(g->raft, &st);
    /* The new group gets the donor's configuration at the entry: wait
     * until it is the one the map gives the recipient. */
    const struct shard_info *ri = shard_map_shard(m, si->split_peer);
    if (ri == NULL || !conf_matches(&st.conf, ri)) {
        rk_log(RK_LOG_VERBOSE,
               "shard %" PRIu64 ": split waits for the "
               "group's configuration to match the map",
               g->shard);
        return;
    }
    uint32_t n = 0;
    for (uint32_t i = 0; i < m->n_moves; i++)
        n += m->moves[i].from == si->id && m->moves[i].to == si->split_peer;
    if (n == 0 || n > STOR_SPLIT_MAX_ARCS)
        return;
    uint64_t *arcs = calloc(2 * (size_t)n, sizeof(*arcs));
    if (arcs == NULL)
        return;
    uint32_t k = 0;
    for (uint32_t i = 0; i < m->n_moves; i++) {
        const struct shard_move *mv = &m->moves[i];
        if (mv->from != si->id || mv->to != si->split_peer)
            continue;
        arcs[2 * k] = mv->first;
        arcs[2 * k + 1] = mv->last;
        k++;
    }
    struct stor_cmd c;
    memset(&c, 0, sizeof(c));
    c.op = STOR_CMD_SPLIT;
    c.split_to = si->split_peer;
    c.n_arcs = n;
    c.arcs = arcs;
    size_t need = stor_cmd_size(&c), len = 0;
    uint8_t *buf = malloc(need);
    int rv = buf == NULL ? RK_ENOMEM : stor_cmd_encode(&c, buf, need, &len);
    raft_index index = 0;
    if (rv == 0)
        rv = raft_propose(g->raft, buf, len, &index);
    srv_group_wake(g);
    if (rv == 0)
        rk_log(RK_LOG_INFO,
               "shard %" PRIu64 ": proposed the split into "
               "shard %u (%u arcs) at index %" PRIu64,
               g->shard, si->split_peer, n, index);
    else
        rk_log(RK_LOG_DEBUG, "shard %" PRIu64 ": split not proposed: %s",
               g->shard, rk_strerror(rv));
    free(buf);
    free(arcs);
}

static void on_asked(void *arg, int status, const Ringkv__Response *resp)
{
    struct srv *s = arg;
    struct srv_splits *sp = s->splits;
    if (sp == NULL)
        return;
    sp->asking = false;
    if (status != 0 || s->stopping)
        return;
    if (resp->status == RINGKV__STATUS__NOT_LEADER &&
        resp->leader_hint != NULL && resp->leader_hint->node_id != 0)
        sp->meta_hint = resp->leader_hint->node_id;
    else if (resp->status != RINGKV__STATUS__OK)
        rk_log(RK_LOG_VERBOSE, "split request refused: %s",
               resp->message != NULL ? resp->message : "?");
}

/* Sends a SplitShard request (begin, or finish into `to`) to the meta
 * leader as best known. */
static void ask_meta(struct srv *s, uint32_t donor, uint32_t to, bool finish,
                     uint64_t now)
{
    struct srv_splits *sp = state(s);
    if (sp == NULL || sp->asking || now < sp->next_ask_ms)
        return;
    sp->next_ask_ms = now + ASK_EVERY_MS;
    const struct shard_map *m = srv_meta_map(s);
    struct srv_group *mg = srv_group_get(s, SHARD_META_ID);
    uint64_t id = mg != NULL && mg->leader != 0 ? mg->leader : sp->meta_hint;
    if (id == 0) {
        const struct shard_info *mi = shard_map_shard(m, SHARD_META_ID);
        if (mi == NULL || mi->n_voters == 0)
            return;
        id = mi->voters[sp->turn++ % mi->n_voters];
    }
    sp->meta_hint = 0; /* a hint is used once */
    if (finish && id == s->cfg->id) {
        if (srv_meta_split_finish_own(s, donor, to) == 0) {
            s->metrics.splits_finished++;
            rk_log(RK_LOG_INFO,
                   "split of shard %u into %u: map switch "
                   "proposed",
                   donor, to);
        }
        return;
    }
    const char *addr = srv_node_client_addr(s, id);
    const struct shard_node *nd = shard_map_node(m, id);
    if ((addr == NULL || addr[0] == '\0') && nd != NULL)
        addr = nd->client_addr;
    if (addr == NULL || addr[0] == '\0')
        return;
    Ringkv__Request rq = RINGKV__REQUEST__INIT;
    Ringkv__SplitShardRequest ss = RINGKV__SPLIT_SHARD_REQUEST__INIT;
    ss.shard = donor;
    ss.new_shard = to;
    ss.finish = finish;
    rq.op_case = RINGKV__REQUEST__OP_SPLIT_SHARD;
    rq.split_shard = &ss;
    if (srv_rpc_call(&s->loop.loop, addr, &rq, 2000, s->cfg->max_frame_bytes,
                     on_asked, s) == 0)
        sp->asking = true;
}

static void size_work_cb(uv_work_t *req)
{
    struct size_work *w = container_of(req, struct size_work, req);
    struct stor *st = w->srv->stor;
    uint8_t *start = NULL;
    size_t slen = 0;
    for (;;) {
        struct stor_scan sc;
        w->rv = stor_kv_scan(st, w->shard, NULL, 0, start, slen, 1000, 0, &sc);
        if (w->rv != 0)
            break;
        for (uint32_t i = 0; i < sc.n; i++) {
            const struct stor_kv_item *it = &sc.items[i];
            if (it->klen >= STOR_RESERVED_PREFIX_LEN &&
                memcmp(it->key, STOR_RESERVED_PREFIX,
                       STOR_RESERVED_PREFIX_LEN) == 0)
                continue;
            uint64_t sz = (uint64_t)it->klen + it->vlen + 16;
            uint64_t h = shard_key_hash(it->key, it->klen);
            w->bytes += sz;
            for (uint32_t k = 0; k < w->n_arcs; k++)
                if (h >= w->arcs[k].first && h <= w->arcs[k].last) {
                    w->moving += sz;
                    break;
                }
        }
        bool more = sc.more && sc.n > 0 && w->bytes <= w->stop;
        if (more) {
            /* Resume after the last key: the key with a 0 byte appended. */
            const struct stor_kv_item *last = &sc.items[sc.n - 1];
            uint8_t *p = realloc(start, (size_t)last->klen + 1);
            if (p == NULL) {
                w->rv = RK_ENOMEM;
                more = false;
            } else {
                start = p;
                memcpy(start, last->key, last->klen);
                start[last->klen] = 0;
                slen = (size_t)last->klen + 1;
            }
        }
        free(sc.items);
        if (!more)
            break;
    }
    free(start);
}

static void size_done_cb(uv_work_t *req, int status)
{
    struct size_work *w = container_of(req, struct size_work, req);
    struct srv *s = w->srv;
    if (s->splits != NULL)
        s->splits->sizing = NULL;
    struct srv_group *g = status == 0 && w->rv == 0 && !s->stopping &&
                                  !s->failstop && s->splits != NULL
                              ? srv_group_get(s, w->shard)
                              : NULL;
    const struct shard_map *m = srv_meta_map(s);
    const struct shard_info *si =
        g != NULL ? shard_map_shard(m, (shard_id)w->shard) : NULL;
    if (si != NULL && w->bytes > w->limit && si->state == SHARD_STATE_ACTIVE &&
        m->n_moves == 0 && g->role == RAFT_LEADER) {
        if (w->moving < w->bytes / 10 || w->bytes - w->moving < w->bytes / 10) {
            /* Its data sits on too few ring positions (one hot hash tag):
             * a split would move (almost) nothing, or (almost) everything. */
            g->auto_off = true;
            rk_log(RK_LOG_WARN,
                   "shard %" PRIu64 ": over %" PRIu64 " bytes, "
                   "but a split would move %" PRIu64 " of %" PRIu64 " (its "
                   "keys share few ring positions, e.g. one hash tag): no "
                   "automatic split",
                   w->shard, w->limit, w->moving, w->bytes);
        } else {
            rk_log(RK_LOG_INFO,
                   "shard %" PRIu64 ": %" PRIu64 " bytes, over "
                   "%" PRIu64 ": asking for a split (about %" PRIu64 " would "
                   "move)",
                   w->shard, w->bytes, w->limit, w->moving);
            ask_meta(s, (uint32_t)w->shard, 0, false, srv_loop_now(&s->loop));
        }
    }
    free(w->arcs);
    free(w);
}

/* Automatic split: a led ACTIVE shard whose data exceeds the threshold,
 * if the split the meta leader would make now moves a fair part of it. */
static void check_size(struct srv *s, struct srv_group *g,
                       const struct shard_map *m, const struct shard_info *si,
                       uint64_t now)
{
    uint64_t limit = s->cfg->split_threshold_bytes;
    struct srv_splits *sp = state(s);
    if (limit == 0 || sp == NULL || sp->sizing != NULL || m->n_moves > 0 ||
        si->state != SHARD_STATE_ACTIVE || si->n_learners > 0 || g->auto_off ||
        now < g->size_next_ms)
        return;
    g->size_next_ms = now + SIZE_EVERY_MS;
    struct size_work *w = calloc(1, sizeof(*w));
    struct shard_map next;
    if (w == NULL || shard_map_copy(&next, m) != 0) {
        free(w);
        return;
    }
    /* The split is a pure function of the map: compute its arcs here. */
    shard_id rid;
    int rv = shard_map_split_begin(&next, si->id, &rid, &w->arcs, &w->n_arcs);
    shard_map_free(&next);
    if (rv != 0) {
        free(w);
        if (rv == RK_EINVAL)
            g->auto_off = true; /* its arcs are too short to split */
        return;
    }
    w->srv = s;
    w->shard = g->shard;
    w->limit = limit;
    /* Counted up to 4x the threshold: a fair sample of a bigger shard. */
    w->stop = limit > UINT64_MAX / 4 ? UINT64_MAX : 4 * limit;
    if (uv_queue_work(&s->loop.loop, &w->req, size_work_cb, size_done_cb) !=
        0) {
        free(w->arcs);
        free(w);
        return;
    }
    sp->sizing = w;
}

void srv_split_tick(struct srv *s)
{
    if (s->stopping || s->failstop || s->meta == NULL || !srv_meta_trusted(s))
        return;
    const struct shard_map *m = srv_meta_map(s);
    uint64_t now = srv_loop_now(&s->loop);
    for (uint32_t i = 0; i < m->n_shards; i++) {
        const struct shard_info *si = &m->shards[i];
        struct srv_group *g = srv_group_get(s, si->id);
        if (si->id == SHARD_META_ID || g == NULL || g->role != RAFT_LEADER)
            continue;
        if (si->state == SHARD_STATE_SPLIT_DONOR) {
            if (!has_to(g, si->split_peer))
                propose_split(s, g, m, si, now);
            else if (srv_group_get(s, si->split_peer) != NULL)
                ask_meta(s, si->id, si->split_peer, true, now);
        } else {
            check_size(s, g, m, si, now);
        }
    }
}
