/* Node lifecycle, input dispatch (tick/step), roles and the ready/advance cycle. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "raft_node_impl.h"
#include "rk_assert.h"
#include "rk_log.h"

#define ENT_CHUNK_MIN 1024u

/* ------------------------------------------------------------- names */

const char *raft_role_name(int role)
{
    switch (role) {
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_PRE_CANDIDATE:
        return "pre-candidate";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_LEADER:
        return "leader";
    default:
        return "?";
    }
}

const char *raft_msg_type_name(int type)
{
    static const char *const names[RAFT_MSG__COUNT] = {
        "PREVOTE",   "PREVOTE_RESP",   "VOTE",     "VOTE_RESP",
        "APPEND",    "APPEND_RESP",    "HEARTBEAT", "HEARTBEAT_RESP",
        "SNAPSHOT",  "SNAPSHOT_RESP",  "TIMEOUT_NOW",
    };
    if (type < 0 || type >= RAFT_MSG__COUNT)
        return "?";
    return names[type];
}

void raft_conf_change_encode(const struct raft_conf_change *cc,
                             uint8_t out[RAFT_CONF_CHANGE_SIZE])
{
    out[0] = cc->type;
    for (int i = 0; i < 8; i++)
        out[1 + i] = (uint8_t)(cc->node >> (56 - 8 * i));
}

int raft_conf_change_decode(const void *buf, size_t len,
                            struct raft_conf_change *out)
{
    const uint8_t *p = buf;
    if (!buf || len != RAFT_CONF_CHANGE_SIZE || p[0] > RAFT_CC_REMOVE)
        return RK_EPROTO;
    out->type = p[0];
    out->node = 0;
    for (int i = 0; i < 8; i++)
        out->node = (out->node << 8) | p[1 + i];
    if (out->node == 0)
        return RK_EPROTO;
    return 0;
}

/* ------------------------------------------------------------- tracing */

void raft__trace(struct raft_node *n, int level, const char *fmt, ...)
{
    struct raft_tracer *t = n->cfg.tracer;
    if (!t || !t->emit)
        return;
    char buf[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    t->emit(t->data, n->id, level, buf);
}

/* ------------------------------------------------------------- output */

static int grow(void **p, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    uint32_t nc = *cap ? *cap : 16;
    while (nc < need)
        nc *= 2;
    void *np = realloc(*p, (size_t)nc * elem);
    if (!np)
        return RK_ENOMEM;
    *p = np;
    *cap = nc;
    return 0;
}

struct raft_msg *raft__msg_new(struct raft_node *n, uint8_t type, raft_id to,
                               bool after_sync)
{
    struct raft_out *o = &n->out[n->cur];
    struct raft_msg *m;
    if (after_sync) {
        if (grow((void **)&o->after, &o->cap_after, o->n_after + 1,
                 sizeof(*m)))
            return NULL;
        m = &o->after[o->n_after++];
    } else {
        if (grow((void **)&o->msgs, &o->cap_msgs, o->n_msgs + 1, sizeof(*m)))
            return NULL;
        m = &o->msgs[o->n_msgs++];
    }
    memset(m, 0, sizeof(*m));
    m->type = type;
    m->shard = n->cfg.shard;
    m->from = n->id;
    m->to = to;
    m->term = n->term;
    return m;
}

int raft__out_free_later(struct raft_node *n, void *p)
{
    struct raft_out *o = &n->out[n->cur];
    if (grow((void **)&o->frees, &o->cap_frees, o->n_frees + 1,
             sizeof(void *))) {
        free(p);
        return RK_ENOMEM;
    }
    o->frees[o->n_frees++] = p;
    return 0;
}

int raft__out_read(struct raft_node *n, uint64_t ctx, raft_index index)
{
    struct raft_out *o = &n->out[n->cur];
    if (grow((void **)&o->reads, &o->cap_reads, o->n_reads + 1,
             sizeof(*o->reads)))
        return RK_ENOMEM;
    o->reads[o->n_reads].ctx = ctx;
    o->reads[o->n_reads].index = index;
    o->n_reads++;
    return 0;
}

static struct raft_entry *chunk_alloc(struct raft_out *o, uint32_t cnt)
{
    struct raft_ent_chunk *c = o->chunks;
    if (!c || c->cap - c->used < cnt) {
        /* A new head; older chunks stay valid until the batch is released. */
        uint32_t cap = cnt > ENT_CHUNK_MIN ? cnt : ENT_CHUNK_MIN;
        c = malloc(sizeof(*c) + (size_t)cap * sizeof(struct raft_entry));
        if (!c)
            return NULL;
        c->cap = cap;
        c->used = 0;
        c->next = o->chunks;
        o->chunks = c;
    }
    struct raft_entry *e = &c->e[c->used];
    c->used += cnt;
    return e;
}

/* Copies the cnt entries at src (payloads in the blocks blks[k]) into the
 * current output batch, taking one block reference per run of entries
 * sharing a block. */
static struct raft_entry *copy_refs(struct raft_node *n,
                                    const struct raft_entry *src,
                                    struct raft_blk *const *blks, uint32_t cnt)
{
    struct raft_out *o = &n->out[n->cur];
    uint32_t runs = 0;
    struct raft_blk *prev = NULL;
    for (uint32_t k = 0; k < cnt; k++) {
        struct raft_blk *b = blks[k];
        if (b && b != prev)
            runs++;
        if (b)
            prev = b;
    }
    if (grow((void **)&o->refs, &o->cap_refs, o->n_refs + runs,
             sizeof(*o->refs)))
        return NULL;
    struct raft_entry *e = chunk_alloc(o, cnt);
    if (!e)
        return NULL;
    memcpy(e, src, (size_t)cnt * sizeof(*e));
    prev = NULL;
    for (uint32_t k = 0; k < cnt; k++) {
        struct raft_blk *b = blks[k];
        if (b && b != prev) {
            b->refs++;
            o->refs[o->n_refs++] = b;
            prev = b;
        }
    }
    return e;
}

/* Unstable entries [lo, lo+cnt). */
static struct raft_entry *copy_unstable(struct raft_node *n, raft_index lo,
                                        uint32_t cnt)
{
    struct raft_log *l = &n->log;
    uint32_t k0 = (uint32_t)(lo - l->uoff);
    return copy_refs(n, &l->u[k0], &l->ublk[k0], cnt);
}

/* Cached (stable) entries from lo on, below hi, as many as raft_log_ops
 * .entries would return under max_bytes (0: no limit; the first entry
 * always). The caller checked that lo is cached. */
static struct raft_entry *copy_cached(struct raft_node *n, raft_index lo,
                                      raft_index hi, size_t max_bytes,
                                      uint32_t *cnt)
{
    struct raft_log *l = &n->log;
    uint32_t k0 = (uint32_t)(lo - l->coff);
    raft_index end = l->coff + l->cn;
    if (hi > end)
        hi = end;
    uint32_t c = 0;
    size_t bytes = 0;
    while (lo + c < hi) {
        size_t len = l->c[k0 + c].len;
        if (c > 0 && max_bytes && bytes + len > max_bytes)
            break;
        bytes += len;
        c++;
    }
    *cnt = c;
    return copy_refs(n, &l->c[k0], &l->cblk[k0], c);
}

int raft__out_entries(struct raft_node *n, raft_index lo, raft_index hi,
                      size_t max_bytes, struct raft_entry **ents,
                      uint32_t *cnt)
{
    struct raft_log *l = &n->log;
    *ents = NULL;
    *cnt = 0;
    if (lo >= hi)
        return 0;
    if (lo >= l->uoff && l->un > 0) {
        if (!raft__log_in_unstable(l, lo))
            return RK_EUNAVAIL_LOG;
        raft_index end = l->uoff + l->un;
        if (hi > end)
            hi = end;
        uint32_t k0 = (uint32_t)(lo - l->uoff);
        uint32_t c = 0;
        size_t bytes = 0;
        while (lo + c < hi) {
            size_t len = l->u[k0 + c].len;
            if (c > 0 && bytes + len > max_bytes)
                break;
            bytes += len;
            c++;
        }
        struct raft_entry *e = copy_unstable(n, lo, c);
        if (!e)
            return RK_ENOMEM;
        *ents = e;
        *cnt = c;
        return 0;
    }
    if (l->has_usnap)
        return lo <= l->usnap.index ? RK_ECOMPACTED : RK_EUNAVAIL_LOG;
    if (l->un > 0 && hi > l->uoff)
        hi = l->uoff;
    if (raft__log_cached(l, lo, lo)) {
        uint32_t c = 0;
        struct raft_entry *e = copy_cached(n, lo, hi, max_bytes, &c);
        if (!e)
            return RK_ENOMEM;
        *ents = e;
        *cnt = c;
        return 0;
    }
    struct raft_entry *blk = NULL;
    uint32_t c = 0;
    int rc = l->ops->entries(l->ctx, lo, hi, max_bytes, &blk, &c);
    if (rc)
        return rc;
    if (c == 0 || blk == NULL) {
        free(blk);
        return RK_EIO;
    }
    /* Storage is outside input: check what it returned. */
    for (uint32_t k = 0; k < c; k++) {
        if (blk[k].index != lo + k) {
            free(blk);
            return RK_ECORRUPT;
        }
    }
    rc = raft__out_free_later(n, blk);
    if (rc)
        return rc;
    *ents = blk;
    *cnt = c;
    return 0;
}

static void out_release(struct raft_node *n, struct raft_out *o)
{
    for (uint32_t i = 0; i < o->n_refs; i++)
        raft__log_blk_drop(&n->log, o->refs[i]);
    for (uint32_t i = 0; i < o->n_frees; i++)
        free(o->frees[i]);
    o->n_refs = o->n_frees = 0;
    o->n_msgs = o->n_after = o->n_reads = 0;
    /* Keep the newest chunk for reuse, free older ones. */
    struct raft_ent_chunk *c = o->chunks;
    if (c) {
        struct raft_ent_chunk *rest = c->next;
        c->next = NULL;
        c->used = 0;
        while (rest) {
            struct raft_ent_chunk *nx = rest->next;
            free(rest);
            rest = nx;
        }
    }
    if (o->has_chunk)
        free((void *)o->chunk.data);
    o->has_chunk = false;
    o->install = false;
}

static void out_close(struct raft_node *n, struct raft_out *o)
{
    out_release(n, o);
    free(o->chunks);
    free(o->msgs);
    free(o->after);
    free(o->refs);
    free(o->frees);
    free(o->reads);
    memset(o, 0, sizeof(*o));
}

/* ------------------------------------------------------------- roles */

struct raft_progress *raft__pr(struct raft_node *n, raft_id id)
{
    if (id == 0)
        return NULL;
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++)
        if (n->prs[i].id == id)
            return &n->prs[i];
    return NULL;
}

bool raft__promotable(const struct raft_node *n)
{
    /* A node holding log entries from index 1 but no idea of the bootstrap
     * configuration they build on (a joiner whose learned bootstrap conf was
     * lost, e.g. by a torn write) cannot know the real voters: it may vote
     * but never campaigns until it learns the base again. */
    if (n->conf_boot.n_voters == 0 && n->conf_base_index == 0 &&
        raft__log_last_index(&n->log) > 0)
        return false;
    if (raft__is_voter(&n->conf, n->id))
        return true;
    /* Thesis §4.2.2: a node whose log removes it, but not yet committedly,
     * may still be needed to elect a leader (its log may be the only one
     * up to date enough). It campaigns, counts the votes of the new
     * configuration and, once leader, steps down after the commit. */
    struct raft_conf_state committed;
    if (raft_conf_at(n, n->log.commit, &committed) != 0)
        return false;
    return raft__is_voter(&committed, n->id);
}

void raft__reset_randomized_timeout(struct raft_node *n)
{
    uint32_t e = n->cfg.election_ticks;
    /* Thesis §3.4: timeouts random in [e, 2e) split votes rarely. */
    n->randomized_timeout = e + (uint32_t)rk_rand_below(&n->rand, e);
}

static int step_follower(struct raft_node *n, const struct raft_msg *m);
static int step_candidate(struct raft_node *n, const struct raft_msg *m);
static int step_leader(struct raft_node *n, const struct raft_msg *m);

static void reset(struct raft_node *n, raft_term term)
{
    if (n->term != term) {
        n->term = term;
        n->vote = 0;
    }
    n->leader = 0;
    n->election_elapsed = 0;
    n->heartbeat_elapsed = 0;
    raft__reset_randomized_timeout(n);
    raft__transfer_abort(n);
    n->self_vote_pending = false;
    n->uncommitted_bytes = 0;
    n->bcast_pending = false;
    raft__read_reset(n);
    raft_index last = raft__log_last_index(&n->log);
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++) {
        struct raft_progress *pr = &n->prs[i];
        if (pr->id == 0)
            continue;
        pr->match = 0;
        pr->next = last + 1;
        pr->state = RAFT_PR_PROBE;
        pr->commit_sent = 0;
        pr->probe_sent = false;
        pr->recent_active = false;
        pr->pending_snap = 0;
        pr->read_ack = 0;
        pr->lease_ack = 0;
        pr->vote = RAFT_VM_NONE;
        raft__inflight_reset(&pr->ins);
        if (pr->id == n->id)
            pr->match = n->log.persisted;
    }
}

void raft__become_follower(struct raft_node *n, raft_term term,
                           raft_id leader)
{
    reset(n, term);
    n->leader = leader;
    n->role = RAFT_FOLLOWER;
    n->step_fn = step_follower;
    raft__trace(n, RK_LOG_VERBOSE, "term %llu: became follower of %llu",
                (unsigned long long)term, (unsigned long long)leader);
}

void raft__become_pre_candidate(struct raft_node *n)
{
    RK_ASSERT(n->role != RAFT_LEADER);
    /* Thesis §9.6: pre-vote leaves term and vote untouched. */
    n->step_fn = step_candidate;
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++)
        n->prs[i].vote = RAFT_VM_NONE;
    n->leader = 0;
    n->role = RAFT_PRE_CANDIDATE;
    n->election_elapsed = 0;
    raft__reset_randomized_timeout(n);
    raft__trace(n, RK_LOG_VERBOSE, "term %llu: became pre-candidate",
                (unsigned long long)n->term);
}

void raft__become_candidate(struct raft_node *n)
{
    RK_ASSERT(n->role != RAFT_LEADER);
    reset(n, n->term + 1);
    n->vote = n->id;
    n->role = RAFT_CANDIDATE;
    n->step_fn = step_candidate;
    raft__trace(n, RK_LOG_VERBOSE, "term %llu: became candidate",
                (unsigned long long)n->term);
}

void raft__become_leader(struct raft_node *n)
{
    RK_ASSERT(n->role == RAFT_CANDIDATE);
    reset(n, n->term);
    n->leader = n->id;
    n->role = RAFT_LEADER;
    n->step_fn = step_leader;
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++)
        n->prs[i].recent_active = n->prs[i].id != 0;
    struct raft_progress *self = raft__pr(n, n->id);
    if (self) {
        self->match = n->log.persisted;
        raft__pr_become_replicate(self);
    }
    /* Any conf entry still uncommitted in the log blocks new changes. */
    n->pending_conf_index = raft__log_last_index(&n->log);
    /* Thesis §6.4 / §3.6.2: a no-op of the new term lets the leader commit
     * (and learn the commit index for reads). */
    int rc = raft__log_append_one(&n->log, n->term, RAFT_ENTRY_NOOP, NULL, 0);
    if (rc)
        raft__trace(n, RK_LOG_WARN, "cannot append no-op: %s",
                    rk_strerror(rc));
    n->bcast_pending = true;
    raft__trace(n, RK_LOG_INFO, "term %llu: became leader",
                (unsigned long long)n->term);
}

/* ------------------------------------------------------------- lifecycle */

int raft_node_new(const struct raft_config *cfg, struct raft_node **out)
{
    if (!cfg || !out || cfg->id == 0 || !cfg->log || !cfg->log->first_index ||
        !cfg->log->last_index || !cfg->log->term || !cfg->log->entries ||
        !cfg->log->snapshot_meta || !cfg->log->snapshot_chunk)
        return RK_EINVAL;
    struct raft_node *n = calloc(1, sizeof(*n));
    if (!n)
        return RK_ENOMEM;
    n->cfg = *cfg;
    struct raft_config *c = &n->cfg;
    if (c->election_ticks == 0)
        c->election_ticks = 10;
    if (c->heartbeat_ticks == 0)
        c->heartbeat_ticks = 1;
    if (c->heartbeat_ticks >= c->election_ticks) {
        free(n);
        return RK_EINVAL;
    }
    if (c->max_inflight_msgs == 0)
        c->max_inflight_msgs = 256;
    if (c->max_msg_bytes == 0)
        c->max_msg_bytes = SIZE_MAX;
    if (c->max_committed_bytes == 0)
        c->max_committed_bytes = SIZE_MAX;
    n->id = c->id;
    rk_rand_seed(&n->rand, c->seed ^ (c->id * 0x9e3779b97f4a7c15ULL));
    int rc = 0;
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++) {
        rc = raft__inflight_init(&n->prs[i].ins, c->max_inflight_msgs);
        if (rc)
            goto err_free;
    }
    rc = raft__log_init(&n->log, c->log, c->log_ctx);
    if (rc)
        goto err_free;
    raft_index last = raft__log_last_index(&n->log);
    struct raft_snapshot_meta sm;
    rc = c->log->snapshot_meta(c->log_ctx, &sm);
    if (rc)
        goto err_log;
    /* A commit index past the stored log means storage lost data. */
    if (c->hs.commit > last) {
        rc = RK_ECORRUPT;
        goto err_log;
    }
    n->term = c->hs.term;
    n->vote = c->hs.vote;
    n->log.commit = c->hs.commit > sm.index ? c->hs.commit : sm.index;
    n->log.applied = c->applied;
    if (n->log.applied < sm.index)
        n->log.applied = sm.index;
    if (n->log.applied > n->log.commit) {
        rc = RK_EINVAL;
        goto err_log;
    }
    rc = raft__conf_init(n);
    if (rc)
        goto err_log;
    n->prev_hs.term = n->term;
    n->prev_hs.vote = n->vote;
    n->prev_hs.commit = n->log.commit;
    raft__become_follower(n, n->term, 0);
    n->restart_quiet = c->check_quorum && n->term > 0;
    n->prev_soft.role = RAFT_FOLLOWER;
    n->prev_soft.leader = 0;
    *out = n;
    return 0;

err_log:
    raft__log_close(&n->log);
err_free:
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++)
        raft__inflight_close(&n->prs[i].ins);
    free(n);
    return rc;
}

void raft_node_free(struct raft_node *n)
{
    if (!n)
        return;
    out_close(n, &n->out[0]);
    out_close(n, &n->out[1]);
    raft__log_close(&n->log);
    raft__conf_close(n);
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++)
        raft__inflight_close(&n->prs[i].ins);
    free(n->reads);
    free(n);
}

/* ------------------------------------------------------------- tick */

static void tick_election(struct raft_node *n)
{
    n->election_elapsed++;
    if (n->election_elapsed >= n->cfg.election_ticks)
        n->restart_quiet = false;
    if (raft__promotable(n) &&
        n->election_elapsed >= n->randomized_timeout) {
        n->election_elapsed = 0;
        raft__campaign(n, n->cfg.pre_vote ? RAFT_CAMPAIGN_PRE
                                          : RAFT_CAMPAIGN_ELECTION);
    }
}

static bool quorum_active(struct raft_node *n)
{
    uint32_t active = 0, voters = 0;
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++) {
        struct raft_progress *pr = &n->prs[i];
        if (pr->id == 0 || !pr->voter)
            continue;
        voters++;
        if (pr->id == n->id || pr->recent_active)
            active++;
    }
    return active >= voters / 2 + 1;
}

static void tick_heartbeat(struct raft_node *n)
{
    n->heartbeat_elapsed++;
    n->election_elapsed++;
    if (n->election_elapsed >= n->cfg.election_ticks) {
        n->election_elapsed = 0;
        /* Thesis §6.2: a leader that cannot reach a quorum steps down. */
        if (n->cfg.check_quorum) {
            if (!quorum_active(n)) {
                raft__trace(n, RK_LOG_INFO,
                            "term %llu: no quorum active, stepping down",
                            (unsigned long long)n->term);
                raft__become_follower(n, n->term, 0);
                return;
            }
            for (int i = 0; i < RAFT_MAX_MEMBERS; i++)
                if (n->prs[i].id != n->id)
                    n->prs[i].recent_active = false;
        }
    }
    raft__transfer_tick(n);
    if (n->heartbeat_elapsed >= n->cfg.heartbeat_ticks) {
        n->heartbeat_elapsed = 0;
        raft__bcast_heartbeat(n);
        raft__snapshot_tick(n);
    }
}

void raft_tick(struct raft_node *n)
{
    n->lease_clock++;
    if (n->role == RAFT_LEADER)
        tick_heartbeat(n);
    else
        tick_election(n);
}

/* ------------------------------------------------------------- step */

static int check_msg(const struct raft_node *n, const struct raft_msg *m)
{
    if (!m)
        return RK_EINVAL;
    if (m->type >= RAFT_MSG__COUNT)
        return RK_EPROTO;
    if (m->to != n->id || m->from == 0 || m->from == n->id ||
        m->shard != n->cfg.shard)
        return RK_EINVAL;
    if (m->n_entries > 0 && (m->type != RAFT_MSG_APPEND || !m->entries))
        return RK_EPROTO;
    if (m->type == RAFT_MSG_SNAPSHOT && m->chunk_len > 0 && !m->chunk_data)
        return RK_EPROTO;
    /* No legitimate term or index comes near 2^62: refusing larger ones
     * keeps every "+1" in the core far from wrapping around. */
    if (m->term > RAFT_MAX_NUMBER || m->log_term > RAFT_MAX_NUMBER ||
        m->index > RAFT_MAX_NUMBER || m->commit > RAFT_MAX_NUMBER ||
        m->hint_index > RAFT_MAX_NUMBER || m->hint_term > RAFT_MAX_NUMBER ||
        m->snap.index > RAFT_MAX_NUMBER || m->snap.term > RAFT_MAX_NUMBER ||
        m->n_entries > RAFT_MAX_NUMBER - m->index)
        return RK_EPROTO;
    switch (m->type) {
    case RAFT_MSG_PREVOTE:
    case RAFT_MSG_VOTE:
    case RAFT_MSG_APPEND:
    case RAFT_MSG_HEARTBEAT:
    case RAFT_MSG_SNAPSHOT:
    case RAFT_MSG_TIMEOUT_NOW:
        if (m->term == 0)
            return RK_EPROTO;
        break;
    default:
        break;
    }
    return 0;
}

int raft_step(struct raft_node *n, const struct raft_msg *m)
{
    int rc = check_msg(n, m);
    if (rc)
        return rc;
    uint8_t t = m->type;
    if (m->term > n->term) {
        if (t == RAFT_MSG_VOTE || t == RAFT_MSG_PREVOTE) {
            /* Thesis §4.2.3: ignore disruptive candidates while a leader is
             * known to be alive (unless the leader asked for it). */
            bool force = t == RAFT_MSG_VOTE && m->context == RAFT_CTX_TRANSFER;
            if (!force && raft__in_lease(n)) {
                raft__trace(n, RK_LOG_DEBUG,
                            "ignoring %s from %llu: leader in lease",
                            raft_msg_type_name(t),
                            (unsigned long long)m->from);
                return 0;
            }
        }
        if (t == RAFT_MSG_PREVOTE || (t == RAFT_MSG_PREVOTE_RESP && !m->reject)) {
            /* Pre-vote traffic never changes the term (thesis §9.6). */
        } else if (t == RAFT_MSG_APPEND || t == RAFT_MSG_HEARTBEAT ||
                   t == RAFT_MSG_SNAPSHOT || t == RAFT_MSG_TIMEOUT_NOW) {
            raft__become_follower(n, m->term, m->from);
        } else {
            raft__become_follower(n, m->term, 0);
        }
    } else if (m->term < n->term) {
        /* Paper §5.1: a request with a stale term is rejected, and the
         * answer carries our term so that the sender catches up. A stale
         * leader must learn it: with diverged configurations nobody else
         * may ever send it a message of the new term. */
        if (t == RAFT_MSG_APPEND || t == RAFT_MSG_HEARTBEAT ||
            t == RAFT_MSG_SNAPSHOT) {
            /* A rejection at index 0 is a no-op for any progress. */
            struct raft_msg *r =
                raft__msg_new(n, RAFT_MSG_APPEND_RESP, m->from, false);
            if (r)
                r->reject = true;
        } else if (t == RAFT_MSG_PREVOTE || t == RAFT_MSG_VOTE) {
            struct raft_msg *r = raft__msg_new(
                n, t == RAFT_MSG_VOTE ? RAFT_MSG_VOTE_RESP
                                      : RAFT_MSG_PREVOTE_RESP,
                m->from, false);
            if (r)
                r->reject = true;
        }
        return RK_ESTALE;
    }
    if (t == RAFT_MSG_VOTE || t == RAFT_MSG_PREVOTE)
        return raft__handle_vote(n, m);
    return n->step_fn(n, m);
}

static int step_follower(struct raft_node *n, const struct raft_msg *m)
{
    switch (m->type) {
    case RAFT_MSG_APPEND:
        n->election_elapsed = 0;
        n->leader = m->from;
        return raft__handle_append(n, m);
    case RAFT_MSG_HEARTBEAT:
        n->election_elapsed = 0;
        n->leader = m->from;
        return raft__handle_heartbeat(n, m);
    case RAFT_MSG_SNAPSHOT:
        n->election_elapsed = 0;
        n->leader = m->from;
        return raft__handle_snapshot(n, m);
    case RAFT_MSG_TIMEOUT_NOW:
        return raft__handle_timeout_now(n, m);
    default:
        /* Late responses from an earlier role: nothing to do. */
        return 0;
    }
}

static int step_candidate(struct raft_node *n, const struct raft_msg *m)
{
    switch (m->type) {
    case RAFT_MSG_APPEND:
    case RAFT_MSG_HEARTBEAT:
    case RAFT_MSG_SNAPSHOT:
        /* Thesis §3.4: a leader of our term exists; follow it. */
        raft__become_follower(n, m->term, m->from);
        return step_follower(n, m);
    case RAFT_MSG_PREVOTE_RESP:
    case RAFT_MSG_VOTE_RESP:
        return raft__handle_vote_resp(n, m);
    default:
        return 0;
    }
}

static int step_leader(struct raft_node *n, const struct raft_msg *m)
{
    switch (m->type) {
    case RAFT_MSG_APPEND:
    case RAFT_MSG_HEARTBEAT:
    case RAFT_MSG_SNAPSHOT:
        /* Election safety: two leaders in one term is a protocol error. */
        return RK_EPROTO;
    case RAFT_MSG_APPEND_RESP:
    case RAFT_MSG_HEARTBEAT_RESP:
    case RAFT_MSG_SNAPSHOT_RESP: {
        struct raft_progress *pr = raft__pr(n, m->from);
        if (!pr)
            return RK_ENOTFOUND;
        pr->recent_active = true;
        if (m->type == RAFT_MSG_APPEND_RESP)
            return raft__handle_append_resp(n, m);
        if (m->type == RAFT_MSG_HEARTBEAT_RESP)
            return raft__handle_heartbeat_resp(n, m);
        return raft__handle_snapshot_resp(n, m);
    }
    default:
        return 0;
    }
}

int raft_campaign(struct raft_node *n)
{
    if (n->role == RAFT_LEADER)
        return 0;
    if (!raft__promotable(n))
        return RK_ENOTVOTER;
    raft__campaign(n, n->cfg.pre_vote ? RAFT_CAMPAIGN_PRE
                                      : RAFT_CAMPAIGN_ELECTION);
    return 0;
}

/* ------------------------------------------------------------- propose */

int raft_propose(struct raft_node *n, const void *data, size_t len,
                 raft_index *index)
{
    if (n->role != RAFT_LEADER)
        return RK_ENOTLEADER;
    if (len > 0 && !data)
        return RK_EINVAL;
    if (len > UINT32_MAX ||
        (n->cfg.max_entry_bytes && len > n->cfg.max_entry_bytes))
        return RK_ETOOLARGE;
    /* Thesis §3.10: no new entries while leadership is being handed off. */
    if (n->transferee)
        return RK_EBUSY;
    if (n->cfg.max_uncommitted_bytes && n->uncommitted_bytes > 0 &&
        n->uncommitted_bytes + len > n->cfg.max_uncommitted_bytes)
        return RK_EBUSY;
    int rc = raft__log_append_one(&n->log, n->term, RAFT_ENTRY_NORMAL, data,
                                  (uint32_t)len);
    if (rc)
        return rc;
    n->uncommitted_bytes += len;
    n->bcast_pending = true;
    if (index)
        *index = raft__log_last_index(&n->log);
    return 0;
}

/* ------------------------------------------------------------- ready */

static bool hs_equal(const struct raft_hard_state *a,
                     const struct raft_hard_state *b)
{
    return a->term == b->term && a->vote == b->vote && a->commit == b->commit;
}

static raft_index apply_limit(const struct raft_node *n)
{
    const struct raft_log *l = &n->log;
    if (l->has_usnap)
        return l->applied;
    return l->commit < l->persisted ? l->commit : l->persisted;
}

bool raft_has_ready(const struct raft_node *n)
{
    if (n->ready_out)
        return false;
    const struct raft_out *o = &n->out[n->cur];
    struct raft_hard_state hs = {n->term, n->vote, n->log.commit};
    const struct raft_log *l = &n->log;
    return o->n_msgs || o->n_after || o->n_reads || o->has_chunk ||
           o->install || !hs_equal(&hs, &n->prev_hs) ||
           (l->un > 0 && l->unext < l->uoff + l->un) ||
           apply_limit(n) > l->applied || n->prev_soft.role != n->role ||
           n->prev_soft.leader != n->leader || n->conf_dirty ||
           (n->role == RAFT_LEADER && n->bcast_pending);
}

void raft_ready(struct raft_node *n, struct raft_ready *rd)
{
    RK_ASSERT(!n->ready_out);
    if (n->role == RAFT_LEADER && n->bcast_pending)
        raft__bcast_append(n);
    raft__read_close_round(n);
    struct raft_out *o = &n->out[n->cur];
    struct raft_log *l = &n->log;
    memset(rd, 0, sizeof(*rd));
    rd->hs.term = n->term;
    rd->hs.vote = n->vote;
    rd->hs.commit = l->commit;
    rd->hs_changed = !hs_equal(&rd->hs, &n->prev_hs);

    if (l->un > 0 && l->unext < l->uoff + l->un) {
        raft_index lo = l->unext > l->uoff ? l->unext : l->uoff;
        uint32_t cnt = (uint32_t)(l->uoff + l->un - lo);
        struct raft_entry *e = copy_unstable(n, lo, cnt);
        if (e) {
            rd->entries = e;
            rd->n_entries = cnt;
            l->unext = l->uoff + l->un;
        } else {
            raft__trace(n, RK_LOG_WARN, "no memory for the ready batch");
        }
    }
    if (o->has_chunk)
        rd->snap_chunk = &o->chunk;
    if (o->install) {
        rd->snap_install = true;
        rd->snap_meta = o->install_meta;
    }

    raft_index hi = apply_limit(n);
    if (hi > l->applied &&
        raft__log_cached(l, l->applied + 1, l->applied + 1)) {
        /* Usually the entries just committed are still in memory. */
        uint32_t cnt = 0;
        struct raft_entry *e = copy_cached(n, l->applied + 1, hi + 1,
                                           n->cfg.max_committed_bytes, &cnt);
        if (e) {
            rd->committed = e;
            rd->n_committed = cnt;
        } else {
            raft__trace(n, RK_LOG_WARN, "no memory for the ready batch");
        }
    } else if (hi > l->applied) {
        struct raft_entry *blk = NULL;
        uint32_t cnt = 0;
        int rc = l->ops->entries(l->ctx, l->applied + 1, hi + 1,
                                 n->cfg.max_committed_bytes, &blk, &cnt);
        if (rc == 0 && cnt > 0 && blk[0].index == l->applied + 1 &&
            raft__out_free_later(n, blk) == 0) {
            if (blk[cnt - 1].index > hi)
                cnt = (uint32_t)(hi - l->applied);
            rd->committed = blk;
            rd->n_committed = cnt;
        } else if (rc) {
            free(blk);
            raft__trace(n, RK_LOG_WARN, "cannot read committed entries: %s",
                        rk_strerror(rc));
        }
    }
    if (n->role == RAFT_LEADER) {
        for (uint32_t k = 0; k < rd->n_committed; k++) {
            if (rd->committed[k].term != n->term)
                continue;
            size_t len = rd->committed[k].len;
            n->uncommitted_bytes -=
                len < n->uncommitted_bytes ? len : n->uncommitted_bytes;
        }
    }

    rd->msgs = o->msgs;
    rd->n_msgs = o->n_msgs;
    rd->msgs_after_sync = o->after;
    rd->n_msgs_after_sync = o->n_after;
    rd->reads = o->reads;
    rd->n_reads = o->n_reads;
    rd->soft.leader = n->leader;
    rd->soft.role = n->role;
    rd->soft_changed = n->prev_soft.leader != n->leader ||
                       n->prev_soft.role != n->role;
    rd->conf = n->conf_boot;
    rd->conf_changed = n->conf_dirty;
    n->conf_dirty = false;
    rd->must_sync = rd->hs_changed || rd->n_entries > 0 || rd->snap_chunk ||
                    rd->snap_install || rd->n_msgs_after_sync > 0 ||
                    rd->conf_changed;
    n->prev_hs = rd->hs;
    n->prev_soft = rd->soft;
    n->cur ^= 1;
    n->ready_out = true;
}

void raft_advance(struct raft_node *n, const struct raft_ready *rd)
{
    RK_ASSERT(n->ready_out);
    struct raft_log *l = &n->log;
    if (rd->snap_install)
        raft__log_snap_stable(l, &rd->snap_meta);
    if (rd->n_entries > 0) {
        const struct raft_entry *e = &rd->entries[rd->n_entries - 1];
        raft__log_stable_to(l, e->index, e->term);
    }
    if (rd->n_committed > 0) {
        raft_index a = rd->committed[rd->n_committed - 1].index;
        if (a > l->applied)
            l->applied = a;
    }
    raft__log_cache_applied(l);
    raft__conf_fold(n, l->applied);
    out_release(n, &n->out[n->cur ^ 1]);
    n->ready_out = false;
    /* Thesis §3.4 + etcd async writes: the candidate's own vote counts only
     * once the term and vote that grant it are durable. */
    if (rd->hs_changed && n->role == RAFT_CANDIDATE && n->self_vote_pending &&
        rd->hs.term == n->term && rd->hs.vote == n->id)
        raft__self_vote_synced(n);
    if (n->role == RAFT_LEADER)
        raft__self_persisted(n);
}

/* ------------------------------------------------------------- status */

void raft_status(const struct raft_node *n, struct raft_status *out)
{
    memset(out, 0, sizeof(*out));
    out->id = n->id;
    out->role = n->role;
    out->leader = n->leader;
    out->term = n->term;
    out->commit = n->log.commit;
    out->applied = n->log.applied;
    out->last_index = raft__log_last_index(&n->log);
    out->first_index = raft__log_first_index(&n->log);
    out->conf = n->conf;
    if (n->role != RAFT_LEADER)
        return;
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++) {
        if (n->prs[i].id == 0)
            continue;
        out->match_ids[out->n_match] = n->prs[i].id;
        out->match[out->n_match] = n->prs[i].match;
        out->n_match++;
    }
}

bool raft_quiescable(const struct raft_node *n)
{
    if (raft_has_ready(n) || n->ready_out || n->n_reads > 0)
        return false;
    if (n->role == RAFT_FOLLOWER)
        return n->leader != 0 && n->log.commit == n->log.applied;
    if (n->role != RAFT_LEADER || n->transferee)
        return false;
    raft_index last = raft__log_last_index(&n->log);
    if (n->log.commit != last || n->log.applied != last)
        return false;
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++) {
        const struct raft_progress *pr = &n->prs[i];
        if (pr->id != 0 && pr->match != last)
            return false;
    }
    return true;
}

void raft_report_unreachable(struct raft_node *n, raft_id id)
{
    struct raft_progress *pr = raft__pr(n, id);
    if (n->role != RAFT_LEADER || !pr || id == n->id)
        return;
    /* Optimistic sends were probably lost: go back to probing. */
    if (pr->state == RAFT_PR_REPLICATE)
        raft__pr_become_probe(pr);
}

void raft_report_snapshot(struct raft_node *n, raft_id id, int status)
{
    struct raft_progress *pr = raft__pr(n, id);
    if (n->role != RAFT_LEADER || !pr || pr->state != RAFT_PR_SNAPSHOT)
        return;
    if (status != RAFT_SNAP_FINISHED)
        pr->pending_snap = 0;
    raft__pr_become_probe(pr);
    pr->probe_sent = true; /* wait for a heartbeat response before probing */
}

void raft_snapshot_taken(struct raft_node *n, raft_index index)
{
    if (index > n->log.applied || index <= n->snap_taken)
        return;
    n->snap_taken = index;
    raft__trace(n, RK_LOG_VERBOSE, "snapshot taken at %llu",
                (unsigned long long)index);
}
