/* Single-server membership changes, effective once appended (thesis §4.1). */
#include <stdlib.h>
#include <string.h>

#include "raft_node_impl.h"
#include "rk_assert.h"
#include "rk_log.h"

static bool in_list(const raft_id *ids, uint32_t n, raft_id id)
{
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == id)
            return true;
    return false;
}

static void list_remove(raft_id *ids, uint32_t *n, raft_id id)
{
    for (uint32_t i = 0; i < *n; i++) {
        if (ids[i] == id) {
            ids[i] = ids[*n - 1];
            (*n)--;
            return;
        }
    }
}

bool raft__is_voter(const struct raft_conf_state *c, raft_id id)
{
    return in_list(c->voters, c->n_voters, id);
}

bool raft__is_learner(const struct raft_conf_state *c, raft_id id)
{
    return in_list(c->learners, c->n_learners, id);
}

uint32_t raft__n_voters(const struct raft_node *n)
{
    return n->conf.n_voters;
}

/* Applies cc to c; changes that make no sense are ignored (they were
 * validated by the proposing leader). */
static void conf_apply(struct raft_conf_state *c,
                       const struct raft_conf_change *cc)
{
    raft_id id = cc->node;
    bool voter = raft__is_voter(c, id), learner = raft__is_learner(c, id);
    uint32_t total = c->n_voters + c->n_learners;
    switch (cc->type) {
    case RAFT_CC_ADD_VOTER:
        if (voter)
            break;
        if (learner)
            list_remove(c->learners, &c->n_learners, id);
        else if (total >= RAFT_MAX_MEMBERS)
            break;
        c->voters[c->n_voters++] = id;
        break;
    case RAFT_CC_ADD_LEARNER:
        if (voter || learner || total >= RAFT_MAX_MEMBERS)
            break;
        c->learners[c->n_learners++] = id;
        break;
    case RAFT_CC_PROMOTE:
        if (!learner)
            break;
        list_remove(c->learners, &c->n_learners, id);
        c->voters[c->n_voters++] = id;
        break;
    case RAFT_CC_REMOVE:
        list_remove(c->voters, &c->n_voters, id);
        list_remove(c->learners, &c->n_learners, id);
        break;
    default:
        break;
    }
}

static bool conf_equal(const struct raft_conf_state *a,
                       const struct raft_conf_state *b)
{
    if (a->n_voters != b->n_voters || a->n_learners != b->n_learners)
        return false;
    for (uint32_t i = 0; i < a->n_voters; i++)
        if (!raft__is_voter(b, a->voters[i]))
            return false;
    for (uint32_t i = 0; i < a->n_learners; i++)
        if (!raft__is_learner(b, a->learners[i]))
            return false;
    return true;
}

/* Makes the progress slots match n->conf: keeps known members, adds new
 * ones (probing from the end of the log), frees removed ones. */
void raft__conf_sync_progress(struct raft_node *n)
{
    const struct raft_conf_state *c = &n->conf;
    for (int i = 0; i < RAFT_MAX_MEMBERS; i++) {
        struct raft_progress *pr = &n->prs[i];
        if (pr->id == 0)
            continue;
        if (raft__is_voter(c, pr->id))
            pr->voter = true;
        else if (raft__is_learner(c, pr->id))
            pr->voter = false;
        else
            pr->id = 0;
    }
    raft_index last = raft__log_last_index(&n->log);
    for (int pass = 0; pass < 2; pass++) {
        const raft_id *ids = pass == 0 ? c->voters : c->learners;
        uint32_t cnt = pass == 0 ? c->n_voters : c->n_learners;
        for (uint32_t k = 0; k < cnt; k++) {
            if (raft__pr(n, ids[k]))
                continue;
            struct raft_progress *pr = NULL;
            for (int i = 0; i < RAFT_MAX_MEMBERS && !pr; i++)
                if (n->prs[i].id == 0)
                    pr = &n->prs[i];
            RK_ASSERT(pr != NULL); /* conf_apply bounds the member count */
            struct raft_inflight ins = pr->ins;
            memset(pr, 0, sizeof(*pr));
            pr->ins = ins;
            raft__inflight_reset(&pr->ins);
            pr->id = ids[k];
            pr->voter = pass == 0;
            pr->next = last + 1;
            pr->state = RAFT_PR_PROBE;
            pr->recent_active = true;
            if (pr->id == n->id)
                pr->match = n->log.persisted;
        }
    }
}

static void set_conf(struct raft_node *n, const struct raft_conf_state *c)
{
    if (conf_equal(&n->conf, c))
        return;
    n->conf = *c;
    raft__conf_sync_progress(n);
    /* A node that is no longer a voter stops campaigning; a transfer to a
     * member that left is void. */
    if (n->transferee && !raft__is_voter(c, n->transferee))
        raft__transfer_abort(n);
}

static void recompute(struct raft_node *n)
{
    struct raft_conf_state c = n->conf_base;
    for (uint32_t i = 0; i < n->n_conf_log; i++)
        conf_apply(&c, &n->conf_log[i].cc);
    set_conf(n, &c);
}

static int push_rec(struct raft_node *n, raft_index index,
                    const struct raft_conf_change *cc)
{
    if (n->n_conf_log == n->cap_conf_log) {
        uint32_t nc = n->cap_conf_log ? n->cap_conf_log * 2 : 8;
        struct raft_conf_rec *p = realloc(n->conf_log, nc * sizeof(*p));
        if (!p)
            return RK_ENOMEM;
        n->conf_log = p;
        n->cap_conf_log = nc;
    }
    n->conf_log[n->n_conf_log].index = index;
    n->conf_log[n->n_conf_log].cc = *cc;
    n->n_conf_log++;
    return 0;
}

int raft__conf_on_append(struct raft_node *n, const struct raft_entry *ents,
                         uint32_t cnt, raft_index truncated_from)
{
    bool changed = false;
    if (truncated_from) {
        /* Thesis §4.1: a configuration whose entry is removed from the log
         * no longer applies; fall back to the previous one. */
        while (n->n_conf_log > 0 &&
               n->conf_log[n->n_conf_log - 1].index >= truncated_from) {
            n->n_conf_log--;
            changed = true;
        }
    }
    int rc = 0;
    for (uint32_t k = 0; k < cnt; k++) {
        if (ents[k].type != RAFT_ENTRY_CONF)
            continue;
        struct raft_conf_change cc;
        if (raft_conf_change_decode(ents[k].data, ents[k].len, &cc) != 0) {
            raft__trace(n, RK_LOG_WARN, "ignoring malformed conf entry %llu",
                        (unsigned long long)ents[k].index);
            continue;
        }
        int r = push_rec(n, ents[k].index, &cc);
        if (r && !rc)
            rc = r;
        changed = true;
    }
    if (changed)
        recompute(n);
    return rc;
}

void raft__conf_fold(struct raft_node *n, raft_index applied)
{
    /* While the bootstrap conf is unknown, keep every record: learning the
     * bootstrap conf later replays them all on top of it. */
    if (n->conf_boot.n_voters == 0 && n->conf_base_index == 0)
        return;
    uint32_t k = 0;
    while (k < n->n_conf_log && n->conf_log[k].index <= applied) {
        conf_apply(&n->conf_base, &n->conf_log[k].cc);
        n->conf_base_index = n->conf_log[k].index;
        k++;
    }
    if (k == 0)
        return;
    memmove(n->conf_log, n->conf_log + k,
            (n->n_conf_log - k) * sizeof(*n->conf_log));
    n->n_conf_log -= k;
}

void raft__conf_restore(struct raft_node *n,
                        const struct raft_snapshot_meta *m)
{
    n->n_conf_log = 0;
    n->conf_base = m->conf;
    n->conf_base_index = m->index;
    set_conf(n, &m->conf);
}

int raft__conf_init(struct raft_node *n)
{
    const struct raft_log_ops *ops = n->cfg.log;
    void *ctx = n->cfg.log_ctx;
    struct raft_snapshot_meta sm;
    int rc = ops->snapshot_meta(ctx, &sm);
    if (rc)
        return rc;
    const struct raft_conf_state *base = sm.index > 0 ? &sm.conf : &n->cfg.conf;
    if (!raft__conf_valid(base) || !raft__conf_valid(&n->cfg.conf))
        return sm.index > 0 ? RK_ECORRUPT : RK_EINVAL;
    n->conf_base = *base;
    n->conf_base_index = sm.index;
    n->conf_boot = n->cfg.conf;
    memset(&n->conf, 0, sizeof(n->conf));
    /* Replay the CONF entries of the stored log on top of the base. */
    raft_index lo = ops->first_index(ctx), last = ops->last_index(ctx);
    while (lo <= last) {
        struct raft_entry *blk = NULL;
        uint32_t cnt = 0;
        rc = ops->entries(ctx, lo, last + 1, 4u << 20, &blk, &cnt);
        if (rc || cnt == 0) {
            free(blk);
            return rc ? rc : RK_EIO;
        }
        for (uint32_t k = 0; k < cnt && rc == 0; k++) {
            struct raft_conf_change cc;
            /* Entries up to the snapshot index are in the snapshot's
             * configuration already (a log may keep entries below its
             * snapshot, e.g. storage whose snapshot is the applied state):
             * replaying them would apply a change twice. */
            if (blk[k].index <= sm.index)
                continue;
            if (blk[k].type == RAFT_ENTRY_CONF &&
                raft_conf_change_decode(blk[k].data, blk[k].len, &cc) == 0)
                rc = push_rec(n, blk[k].index, &cc);
        }
        lo = blk[cnt - 1].index + 1;
        free(blk);
        if (rc)
            return rc;
    }
    recompute(n);
    /* set_conf saw no change if both are empty; make sure slots exist. */
    raft__conf_sync_progress(n);
    /* Hand the bootstrap configuration to the driver once per start, so
     * that it is durable even if the driver did not store it itself. */
    n->conf_dirty = n->conf_boot.n_voters > 0;
    raft__conf_fold(n, n->log.applied);
    return 0;
}

void raft__conf_close(struct raft_node *n)
{
    free(n->conf_log);
    n->conf_log = NULL;
    n->n_conf_log = n->cap_conf_log = 0;
}

bool raft__conf_valid(const struct raft_conf_state *c)
{
    if (c->n_voters > RAFT_MAX_MEMBERS || c->n_learners > RAFT_MAX_MEMBERS ||
        c->n_voters + c->n_learners > RAFT_MAX_MEMBERS)
        return false;
    /* Ids are non-zero and appear once across voters and learners. */
    raft_id all[RAFT_MAX_MEMBERS];
    uint32_t n = 0;
    for (uint32_t i = 0; i < c->n_voters; i++)
        all[n++] = c->voters[i];
    for (uint32_t i = 0; i < c->n_learners; i++)
        all[n++] = c->learners[i];
    for (uint32_t i = 0; i < n; i++) {
        if (all[i] == 0)
            return false;
        for (uint32_t j = i + 1; j < n; j++)
            if (all[i] == all[j])
                return false;
    }
    return true;
}

void raft__conf_adopt_boot(struct raft_node *n,
                           const struct raft_conf_state *boot)
{
    /* A node created empty to join a group learns the group's bootstrap
     * configuration (index 0) from the leader's first append, and asks the
     * driver to persist it (rd.conf). */
    if (n->conf_boot.n_voters > 0 || boot->n_voters == 0 ||
        !raft__conf_valid(boot) || n->conf_base_index != 0)
        return;
    raft__trace(n, RK_LOG_INFO, "learned the bootstrap configuration");
    n->conf_boot = *boot;
    n->conf_base = *boot;
    n->conf_dirty = true;
    recompute(n);
}

void raft__conf_check_removed_leader(struct raft_node *n)
{
    /* Thesis §4.2.2: a leader removed from the configuration steps down
     * once the entry that removes it is committed. */
    if (n->role == RAFT_LEADER && !raft__is_voter(&n->conf, n->id) &&
        n->log.commit >= n->pending_conf_index) {
        raft__trace(n, RK_LOG_INFO, "term %llu: removed, stepping down",
                    (unsigned long long)n->term);
        /* Let the others learn the commit before we go quiet. */
        raft__bcast_append(n);
        raft__become_follower(n, n->term, 0);
    }
}

int raft_propose_conf(struct raft_node *n, const struct raft_conf_change *cc,
                      raft_index *index)
{
    if (!cc || cc->node == 0 || cc->type > RAFT_CC_REMOVE)
        return RK_EINVAL;
    if (n->role != RAFT_LEADER)
        return RK_ENOTLEADER;
    if (n->transferee)
        return RK_EBUSY;
    /* Thesis §4.1: one change at a time; the next waits for the commit. */
    if (n->pending_conf_index > n->log.commit)
        return RK_EBUSY;
    const struct raft_conf_state *c = &n->conf;
    bool voter = raft__is_voter(c, cc->node);
    bool learner = raft__is_learner(c, cc->node);
    uint32_t total = c->n_voters + c->n_learners;
    switch (cc->type) {
    case RAFT_CC_ADD_VOTER:
        if (voter)
            return RK_EEXIST;
        if (!learner && total >= RAFT_MAX_MEMBERS)
            return RK_ETOOLARGE;
        break;
    case RAFT_CC_ADD_LEARNER:
        if (voter || learner)
            return RK_EEXIST;
        if (total >= RAFT_MAX_MEMBERS)
            return RK_ETOOLARGE;
        break;
    case RAFT_CC_PROMOTE:
        if (!learner)
            return voter ? RK_EEXIST : RK_ENOTFOUND;
        break;
    case RAFT_CC_REMOVE:
        if (!voter && !learner)
            return RK_ENOTFOUND;
        if (voter && c->n_voters == 1)
            return RK_EINVAL; /* the last voter cannot leave */
        break;
    }
    uint8_t buf[RAFT_CONF_CHANGE_SIZE];
    raft_conf_change_encode(cc, buf);
    raft_index idx = raft__log_last_index(&n->log) + 1;
    struct raft_entry e = {
        .term = n->term,
        .index = idx,
        .type = RAFT_ENTRY_CONF,
        .len = RAFT_CONF_CHANGE_SIZE,
        .data = buf,
    };
    int rc = raft__append_to_log(n, &e, 1);
    if (rc)
        return rc;
    n->pending_conf_index = idx;
    n->bcast_pending = true;
    if (index)
        *index = idx;
    /* The leader may have removed itself from the voters; with no other
     * voter able to lag, it could even commit at once. */
    return 0;
}

int raft_conf_at(const struct raft_node *n, raft_index index,
                 struct raft_conf_state *out)
{
    if (index < n->conf_base_index)
        return RK_ECOMPACTED;
    if (index > raft__log_last_index(&n->log))
        return RK_EUNAVAIL_LOG;
    *out = n->conf_base;
    for (uint32_t i = 0; i < n->n_conf_log; i++)
        if (n->conf_log[i].index <= index)
            conf_apply(out, &n->conf_log[i].cc);
    return 0;
}
