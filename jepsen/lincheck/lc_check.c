/* Wing-Gong-Lowe linearizability search, memoised on (linearized, state). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lc_internal.h"
#include "rk_assert.h"
#include "rk_err.h"

/*
 * The algorithm (G. Lowe, "Testing for linearizability", 2017, §3; the same
 * search as porcupine and knossos.wgl):
 *
 * Each operation of one partition becomes a call entry and, if it completed
 * OK, a return entry; the entries form a doubly linked list in history order.
 * The search walks the list from its head. At a call entry it tries to apply
 * the op to the current model state; if the model accepts it and the pair
 * (set of linearized ops, new state) has not been seen before, the op is
 * linearized: its entries are lifted out of the list (dancing links), the
 * previous state is pushed on a stack, and the walk restarts at the head.
 * Otherwise it moves on to the next entry. Reaching a return entry means the
 * op it belongs to had to take effect before this point and could not: the
 * search backtracks (pops the last linearized op, puts its entries back and
 * tries the entry after its call). An empty stack at that point means no
 * linearization exists. The search succeeds when no return entry is left.
 *
 * Indeterminate ops (:info, or no completion at all) only have a call entry:
 * they may be linearized anywhere after their invocation, or never. Failed
 * ops are dropped. Indeterminate reads are dropped too: they neither change
 * the state nor were observed, so they never constrain anything.
 *
 * The memo makes the search polynomial in practice: two search paths that
 * have linearized the same set of ops and reached the same state have the
 * same future, so the second one is cut. The set is a bitset; its hash is
 * kept incrementally (Zobrist: XOR of one random word per op).
 */

#define CHECK_CLOCK_EVERY 1024u
#define DEFAULT_MEMORY_LIMIT ((size_t)1 << 30)
#define NO_POS SIZE_MAX

/* One operation (an invocation and its completion) of the history. */
struct cop {
    size_t inv;  /* event index of the invocation */
    size_t ret;  /* event index of the OK completion, or NO_POS */
    enum lc_fn fn;
    int64_t key;
    struct lc_val value;
    struct lc_val value2;
    const struct lc_mop *mops;
    uint32_t n_mops;
    bool dropped; /* failed, or an indeterminate read */
};

/* One list entry: a call or a return of a partition-local op. */
struct entry {
    size_t pos;   /* event index: the list order */
    uint32_t op;  /* partition-local op id */
    bool is_ret;
    uint32_t prev;
    uint32_t next;
    uint32_t match; /* call: index of its return entry or UINT32_MAX */
};

/*
 * The memo: open addressing over variable-length records in one arena.
 * A record is a header word (lo << 32 | nw), the bitset words lo..lo+nw-1,
 * then the state words. lo is the first word of the bitset that is not all
 * ones and lo+nw is one past its last non-zero word: a canonical encoding
 * that stays a few words long however long the history is, because the
 * search linearizes ops roughly in history order.
 */
struct memo {
    uint64_t *hashes; /* 0 means empty (real hashes are forced non-zero) */
    size_t *offs;     /* record offset in arena words */
    size_t cap;
    size_t n;
    uint64_t *arena;
    size_t arena_len; /* in words */
    size_t arena_cap; /* in words */
};

struct frame {
    uint32_t call;   /* entry index of the linearized call */
    size_t state_off; /* offset of the previous state in the state stack */
};

/* Everything the search over one partition needs. */
struct part {
    const struct lc_options *opt;
    enum lc_model model;
    const struct cop *ops;  /* all ops */
    const size_t *ids;      /* partition-local → global op index */
    uint32_t n;
    /* Registers of this partition (multi-register: several). */
    const int64_t *regs;
    uint32_t n_regs;
    uint32_t sw;            /* state words: 2 per register, 1 for a mutex */
};

/* What the search reports back. */
struct search_out {
    enum lc_verdict verdict;
    uint64_t steps;
    size_t memo_n;
    char reason[128];
    /* The stuck point (furthest return entry at which the search blocked). */
    size_t best_pos;
    uint32_t stuck;
    uint32_t *prefix;
    uint32_t n_prefix;
    uint64_t *best_bits;
    uint32_t *bitpos;  /* op → bit position in the linearized set */
    size_t bw;
    int64_t *states;  /* up to LC_MAX_STATES states of sw words */
    size_t n_states;
};

/* ------------------------------------------------------------- helpers */

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static bool val_eq(struct lc_val a, struct lc_val b)
{
    if (a.nil || b.nil)
        return a.nil == b.nil;
    return a.v == b.v;
}

static void put_val(int64_t *w, struct lc_val v)
{
    w[0] = v.nil ? 0 : v.v;
    w[1] = v.nil ? 1 : 0;
}

static struct lc_val get_val(const int64_t *w)
{
    struct lc_val v = {.v = w[0], .nil = w[1] != 0};
    return v;
}

const char *lc_model_name(enum lc_model m)
{
    switch (m) {
    case LC_MODEL_AUTO:
        return "auto";
    case LC_MODEL_REGISTER:
        return "register";
    case LC_MODEL_CAS_REGISTER:
        return "cas-register";
    case LC_MODEL_MULTI_REGISTER:
        return "multi-register";
    case LC_MODEL_MUTEX:
        return "mutex";
    }
    return "?";
}

int lc_model_parse(const char *name, enum lc_model *out)
{
    static const enum lc_model all[] = {
        LC_MODEL_AUTO, LC_MODEL_REGISTER, LC_MODEL_CAS_REGISTER,
        LC_MODEL_MULTI_REGISTER, LC_MODEL_MUTEX};
    size_t i;

    for (i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
        if (strcmp(name, lc_model_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    }
    return RK_EINVAL;
}

const char *lc_verdict_name(enum lc_verdict v)
{
    switch (v) {
    case LC_VALID:
        return "valid";
    case LC_INVALID:
        return "invalid";
    case LC_UNKNOWN:
        return "unknown";
    }
    return "?";
}

void lc_options_init_knossos(struct lc_options *o)
{
    memset(o, 0, sizeof(*o));
    o->model = LC_MODEL_AUTO;
    o->initial = LC_INT(0);
    o->nil_read_matches_any = true;
}

void lc_options_init_ringkv(struct lc_options *o)
{
    memset(o, 0, sizeof(*o));
    o->model = LC_MODEL_AUTO;
    o->initial = LC_NIL;
    o->nil_read_matches_any = false;
}

void lc_result_free(struct lc_result *res)
{
    free(res->prefix);
    free(res->window);
    free(res->window_in_prefix);
    res->prefix = NULL;
    res->window = NULL;
    res->window_in_prefix = NULL;
    res->n_prefix = 0;
    res->n_window = 0;
}

/* ---------------------------------------------------------------- model */

/* Index of key among the partition's registers (a short sorted array). */
static uint32_t reg_index(const struct part *p, int64_t key)
{
    uint32_t lo = 0, hi = p->n_regs;

    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (p->regs[mid] < key)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool read_matches(const struct part *p, struct lc_val cur,
                         struct lc_val got, bool indeterminate)
{
    if (got.nil && (p->opt->nil_read_matches_any || indeterminate))
        return true;
    return val_eq(cur, got);
}

/*
 * Applies op to state cur (sw words) and writes the next state to next.
 * Returns false when the model rejects the op in this state.
 */
static bool model_step(const struct part *p, const int64_t *cur,
                       const struct cop *op, int64_t *next)
{
    uint32_t i, off = 0;

    memcpy(next, cur, p->sw * sizeof(*next));
    if (p->model == LC_MODEL_MULTI_REGISTER && op->fn != LC_TXN)
        off = 2 * reg_index(p, op->key);
    switch (op->fn) {
    case LC_READ:
        return read_matches(p, get_val(cur + off), op->value, false);
    case LC_WRITE:
        put_val(next + off, op->value);
        return true;
    case LC_CAS:
        if (!val_eq(get_val(cur), op->value))
            return false;
        put_val(next, op->value2);
        return true;
    case LC_ACQUIRE:
        if (cur[0] != 0)
            return false;
        next[0] = 1;
        return true;
    case LC_RELEASE:
        if (cur[0] == 0)
            return false;
        next[0] = 0;
        return true;
    case LC_TXN:
        for (i = 0; i < op->n_mops; i++) {
            const struct lc_mop *m = &op->mops[i];
            int64_t *w = next + 2 * reg_index(p, m->key);
            if (m->fn == LC_WRITE)
                put_val(w, m->value);
            else if (!read_matches(p, get_val(w), m->value,
                                   op->ret == NO_POS))
                return false;
        }
        return true;
    }
    return false;
}

/* ----------------------------------------------------------------- memo */

static void memo_free(struct memo *m)
{
    free(m->hashes);
    free(m->offs);
    free(m->arena);
    memset(m, 0, sizeof(*m));
}

static size_t memo_bytes(const struct memo *m)
{
    return m->cap * (sizeof(*m->hashes) + sizeof(*m->offs)) +
           m->arena_cap * sizeof(uint64_t);
}

static int memo_rehash(struct memo *m, size_t ncap)
{
    uint64_t *nh = calloc(ncap, sizeof(*nh));
    size_t *ni = malloc(ncap * sizeof(*ni));
    size_t i;

    if (nh == NULL || ni == NULL) {
        free(nh);
        free(ni);
        return RK_ENOMEM;
    }
    for (i = 0; i < m->cap; i++) {
        if (m->hashes[i] != 0) {
            size_t j = (size_t)m->hashes[i] & (ncap - 1);
            while (nh[j] != 0)
                j = (j + 1) & (ncap - 1);
            nh[j] = m->hashes[i];
            ni[j] = m->offs[i];
        }
    }
    free(m->hashes);
    free(m->offs);
    m->hashes = nh;
    m->offs = ni;
    m->cap = ncap;
    return 0;
}

/*
 * Inserts the record rec (len words) with hash h unless present.
 * Returns 1 if inserted, 0 if it was already there, or RK_ENOMEM.
 */
static int memo_insert(struct memo *m, uint64_t h, const uint64_t *rec,
                       size_t len)
{
    size_t j;
    int rc;

    if (h == 0)
        h = 1;
    if ((m->n + 1) * 4 > m->cap * 3) {
        rc = memo_rehash(m, m->cap ? m->cap * 2 : 1024);
        if (rc != 0)
            return rc;
    }
    j = (size_t)h & (m->cap - 1);
    while (m->hashes[j] != 0) {
        /* Equal headers mean equal lengths, so memcmp stays in bounds. */
        if (m->hashes[j] == h && m->arena[m->offs[j]] == rec[0] &&
            memcmp(m->arena + m->offs[j], rec, len * sizeof(uint64_t)) == 0)
            return 0;
        j = (j + 1) & (m->cap - 1);
    }
    if (lc__grow((void **)&m->arena, &m->arena_cap, m->arena_len + len,
                 sizeof(uint64_t)) != 0)
        return RK_ENOMEM;
    memcpy(m->arena + m->arena_len, rec, len * sizeof(uint64_t));
    m->hashes[j] = h;
    m->offs[j] = m->arena_len;
    m->arena_len += len;
    m->n++;
    return 1;
}

/* --------------------------------------------------------------- search */

static void lift(struct entry *e, uint32_t c)
{
    e[e[c].prev].next = e[c].next;
    e[e[c].next].prev = e[c].prev;
    if (e[c].match != UINT32_MAX) {
        uint32_t r = e[c].match;
        e[e[r].prev].next = e[r].next;
        e[e[r].next].prev = e[r].prev;
    }
}

static void unlift(struct entry *e, uint32_t c)
{
    if (e[c].match != UINT32_MAX) {
        uint32_t r = e[c].match;
        e[e[r].prev].next = r;
        e[e[r].next].prev = r;
    }
    e[e[c].prev].next = c;
    e[e[c].next].prev = c;
}

static int cmp_entry(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;

    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/*
 * The linearized set is one bitset in two word-aligned segments: the ops
 * that completed OK (all of them end up linearized, roughly in order, so
 * their window [lo, hi) stays short) and the indeterminate ones (most are
 * never linearized; a separate window keeps them from pinning lo).
 */
struct seg {
    size_t base; /* first word */
    size_t end;  /* one past the last word */
    size_t lo;   /* first word that is not all ones (or end) */
    size_t hi;   /* one past the last non-zero word (or base) */
};

static struct seg *seg_of(struct seg *segs, uint32_t b)
{
    return (size_t)b / 64 < segs[0].end ? &segs[0] : &segs[1];
}

/* Sets bit b and keeps its segment's lo/hi exact. */
static void set_bit(uint64_t *bits, struct seg *segs, uint32_t b)
{
    struct seg *g = seg_of(segs, b);
    size_t w = b / 64;

    bits[w] |= (uint64_t)1 << (b % 64);
    if (w + 1 > g->hi)
        g->hi = w + 1;
    while (g->lo < g->end && bits[g->lo] == ~(uint64_t)0)
        g->lo++;
}

/* Clears bit b and keeps its segment's lo/hi exact. */
static void clear_bit(uint64_t *bits, struct seg *segs, uint32_t b)
{
    struct seg *g = seg_of(segs, b);
    size_t w = b / 64;

    bits[w] &= ~((uint64_t)1 << (b % 64));
    if (w < g->lo)
        g->lo = w;
    while (g->hi > g->base && bits[g->hi - 1] == 0)
        g->hi--;
}

/* Appends one segment's canonical encoding to rec; returns its length. */
static size_t encode_seg(const uint64_t *bits, const struct seg *g,
                         uint64_t *rec)
{
    size_t nw = g->hi > g->lo ? g->hi - g->lo : 0;

    rec[0] = ((uint64_t)g->lo << 32) | nw;
    memcpy(rec + 1, bits + g->lo, nw * sizeof(*rec));
    return 1 + nw;
}

/* Records the state at the stuck point (deduplicated, bounded). */
static void note_state(const struct part *p, struct search_out *so,
                       const int64_t *state)
{
    size_t i;

    for (i = 0; i < so->n_states; i++) {
        if (memcmp(so->states + i * p->sw, state, p->sw * sizeof(*state)) ==
            0)
            return;
    }
    if (so->n_states < LC_MAX_STATES) {
        memcpy(so->states + so->n_states * p->sw, state,
               p->sw * sizeof(*state));
        so->n_states++;
    }
}

/*
 * Runs the search over one partition. Returns 0 (verdict in so) or
 * RK_ENOMEM. deadline is an absolute now_s() time, or 0 for none.
 */
static int search(const struct part *p, double deadline, struct search_out *so)
{
    const uint32_t n = p->n;
    struct entry *e = NULL;
    struct frame *stack = NULL;
    int64_t *sstack = NULL; /* previous states, sw words per frame */
    int64_t *state = NULL, *next = NULL;
    uint64_t *bits = NULL, *rec = NULL, *zob = NULL;
    struct memo memo = {0};
    uint32_t n_entries = 0, depth = 0, cur, i, remaining = 0, n_ok = 0;
    struct seg segs[2];
    size_t bw;
    uint64_t bhash = 0;
    size_t limit = p->opt->memory_limit ? p->opt->memory_limit
                                        : DEFAULT_MEMORY_LIMIT;
    int rc = RK_ENOMEM;

    so->verdict = LC_VALID;
    so->best_pos = 0;
    so->n_prefix = 0;
    so->n_states = 0;
    so->stuck = UINT32_MAX;

    /* Entry 0 is the list head sentinel. */
    e = calloc(2 * (size_t)n + 1, sizeof(*e));
    stack = malloc(((size_t)n + 1) * sizeof(*stack));
    sstack = malloc(((size_t)n + 1) * p->sw * sizeof(*sstack));
    state = malloc(p->sw * sizeof(*state));
    next = malloc(p->sw * sizeof(*next));
    /* Bit positions: OK ops from 0, indeterminate ops from segment 1. */
    so->bitpos = malloc(((size_t)n + 1) * sizeof(*so->bitpos));
    if (so->bitpos == NULL)
        goto out;
    for (i = 0; i < n; i++)
        n_ok += p->ops[p->ids[i]].ret != NO_POS;
    segs[0].base = segs[0].lo = segs[0].hi = 0;
    segs[0].end = ((size_t)n_ok + 63) / 64;
    segs[1].base = segs[1].lo = segs[1].hi = segs[0].end;
    segs[1].end = segs[0].end + ((size_t)(n - n_ok) + 63) / 64;
    bw = segs[1].end;
    {
        uint32_t a = 0, b = (uint32_t)(segs[1].base * 64);
        for (i = 0; i < n; i++)
            so->bitpos[i] = p->ops[p->ids[i]].ret != NO_POS ? a++ : b++;
    }
    so->bw = bw;
    bits = calloc(bw + 1, sizeof(*bits));
    rec = malloc((2 + bw + p->sw) * sizeof(*rec));
    zob = malloc(((size_t)n + 1) * sizeof(*zob));
    so->prefix = malloc(((size_t)n + 1) * sizeof(*so->prefix));
    so->best_bits = calloc(bw + 1, sizeof(*so->best_bits));
    so->states = malloc(LC_MAX_STATES * p->sw * sizeof(*so->states));
    if (e == NULL || stack == NULL || sstack == NULL || state == NULL ||
        next == NULL || bits == NULL || rec == NULL || zob == NULL ||
        so->prefix == NULL || so->best_bits == NULL || so->states == NULL)
        goto out;

    /* Build the entries in history order. */
    for (i = 0; i < n; i++) {
        const struct cop *op = &p->ops[p->ids[i]];
        struct entry *c = &e[1 + n_entries++];
        c->pos = op->inv;
        c->op = i;
        c->is_ret = false;
        if (op->ret != NO_POS) {
            struct entry *r = &e[1 + n_entries++];
            r->pos = op->ret;
            r->op = i;
            r->is_ret = true;
            remaining++;
        }
        zob[i] = lc__mix64(0x6c696e636865636bULL ^ ((uint64_t)i << 1));
    }
    qsort(e + 1, n_entries, sizeof(*e), cmp_entry);
    for (i = 0; i < n; i++)
        stack[i].call = UINT32_MAX; /* reused below as op → call entry */
    for (i = 1; i <= n_entries; i++) {
        e[i].prev = i - 1;
        e[i].next = i == n_entries ? 0 : i + 1;
        e[i].match = UINT32_MAX;
        if (!e[i].is_ret)
            stack[e[i].op].call = i;
    }
    for (i = 1; i <= n_entries; i++) {
        if (e[i].is_ret)
            e[stack[e[i].op].call].match = i;
    }
    e[0].prev = n_entries;
    e[0].next = n_entries ? 1 : 0;

    /* The initial state. */
    if (p->model == LC_MODEL_MUTEX) {
        state[0] = 0;
    } else {
        for (i = 0; i < p->n_regs; i++)
            put_val(state + 2 * i, p->opt->initial);
    }

    cur = e[0].next;
    while (remaining > 0) {
        so->steps++;
        if (deadline > 0 && (so->steps % CHECK_CLOCK_EVERY) == 0 &&
            now_s() > deadline) {
            so->verdict = LC_UNKNOWN;
            snprintf(so->reason, sizeof(so->reason),
                     "time limit of %.3g s reached",
                     p->opt->time_limit_s);
            break;
        }
        /* A return entry remains, and the walk stops at it before the
         * end of the list. */
        RK_ASSERT(cur != 0);
        if (!e[cur].is_ret) {
            const struct cop *op = &p->ops[p->ids[e[cur].op]];
            uint32_t o = e[cur].op;
            if (model_step(p, state, op, next)) {
                uint64_t h;
                size_t len;
                int ins;
                set_bit(bits, segs, so->bitpos[o]);
                h = bhash ^ zob[o];
                len = encode_seg(bits, &segs[0], rec);
                len += encode_seg(bits, &segs[1], rec + len);
                memcpy(rec + len, next, p->sw * sizeof(*rec));
                len += p->sw;
                for (i = 0; i < p->sw; i++)
                    h = lc__mix64(h ^ (uint64_t)next[i]);
                ins = memo_insert(&memo, h, rec, len);
                if (ins < 0)
                    goto out;
                if (ins == 1) {
                    if (memo_bytes(&memo) > limit) {
                        so->verdict = LC_UNKNOWN;
                        snprintf(so->reason, sizeof(so->reason),
                                 "memory limit of %zu bytes reached "
                                 "(%zu memo entries)",
                                 limit, memo.n);
                        break;
                    }
                    stack[depth].call = cur;
                    stack[depth].state_off = (size_t)depth * p->sw;
                    memcpy(sstack + (size_t)depth * p->sw, state,
                           p->sw * sizeof(*state));
                    depth++;
                    memcpy(state, next, p->sw * sizeof(*state));
                    bhash ^= zob[o];
                    lift(e, cur);
                    if (e[cur].match != UINT32_MAX)
                        remaining--;
                    cur = e[0].next;
                    continue;
                }
                clear_bit(bits, segs, so->bitpos[o]);
            }
            cur = e[cur].next;
            continue;
        }

        /* A return entry: its op could not be placed before it. */
        if (e[cur].pos > so->best_pos || so->stuck == UINT32_MAX) {
            so->best_pos = e[cur].pos;
            so->stuck = e[cur].op;
            so->n_states = 0;
            for (i = 0; i < depth; i++)
                so->prefix[i] = e[stack[i].call].op;
            so->n_prefix = depth;
            memcpy(so->best_bits, bits, bw * sizeof(*bits));
        }
        if (e[cur].pos == so->best_pos)
            note_state(p, so, state);
        if (depth == 0) {
            so->verdict = LC_INVALID;
            break;
        }
        depth--;
        {
            uint32_t c = stack[depth].call;
            uint32_t o = e[c].op;
            memcpy(state, sstack + stack[depth].state_off,
                   p->sw * sizeof(*state));
            clear_bit(bits, segs, so->bitpos[o]);
            bhash ^= zob[o];
            unlift(e, c);
            if (e[c].match != UINT32_MAX)
                remaining++;
            cur = e[c].next;
        }
    }
    so->memo_n = memo.n;
    rc = 0;
out:
    memo_free(&memo);
    free(e);
    free(stack);
    free(sstack);
    free(state);
    free(next);
    free(bits);
    free(rec);
    free(zob);
    return rc;
}

/* --------------------------------------------------------------- driver */

static bool model_allows(enum lc_model m, enum lc_fn fn)
{
    switch (m) {
    case LC_MODEL_REGISTER:
        return fn == LC_READ || fn == LC_WRITE;
    case LC_MODEL_CAS_REGISTER:
        return fn == LC_READ || fn == LC_WRITE || fn == LC_CAS;
    case LC_MODEL_MULTI_REGISTER:
        return fn == LC_TXN || fn == LC_READ || fn == LC_WRITE;
    case LC_MODEL_MUTEX:
        return fn == LC_ACQUIRE || fn == LC_RELEASE;
    case LC_MODEL_AUTO:
        break;
    }
    return false;
}

static enum lc_model pick_model(const struct lc_history *h)
{
    size_t i, n = lc_history_len(h);

    for (i = 0; i < n; i++) {
        const struct lc_op *op = lc_history_op(h, i);
        if (op->fn == LC_TXN)
            return LC_MODEL_MULTI_REGISTER;
        if (op->fn == LC_ACQUIRE || op->fn == LC_RELEASE)
            return LC_MODEL_MUTEX;
    }
    /* Without cas ops the two register models accept the same histories. */
    return LC_MODEL_CAS_REGISTER;
}

/*
 * Pairs invocations with completions into ops. A completion belongs to the
 * pending invocation of its process. A second invocation while one is
 * pending means the first one's outcome was never seen: indeterminate.
 */
static int build_ops(const struct lc_history *h, struct cop **out,
                     size_t *n_out, char *err, size_t errlen)
{
    size_t n = lc_history_len(h), i, n_ops = 0, cap = 0;
    struct cop *ops = NULL;
    struct lc_imap pending = {0};
    int rc = 0;

    for (i = 0; i < n; i++) {
        const struct lc_op *ev = lc_history_op(h, i);
        size_t *slot = lc__imap_get(&pending, ev->process);
        struct cop *op;

        if (ev->type == LC_INVOKE) {
            if (slot != NULL && *slot != NO_POS) {
                /* The previous op of this process never completed. */
                *slot = NO_POS;
            }
            rc = lc__grow((void **)&ops, &cap, n_ops + 1, sizeof(*ops));
            if (rc == 0)
                rc = lc__imap_put(&pending, ev->process, n_ops);
            if (rc != 0)
                goto fail;
            op = &ops[n_ops++];
            memset(op, 0, sizeof(*op));
            op->inv = i;
            op->ret = NO_POS;
            op->fn = ev->fn;
            op->key = ev->key;
            op->value = ev->value;
            op->value2 = ev->value2;
            op->mops = ev->mops;
            op->n_mops = ev->n_mops;
            continue;
        }
        if (slot == NULL || *slot == NO_POS) {
            lc__errf(err, errlen,
                     "event %zu (index %lld): %s completion of process %lld "
                     "without a pending invocation",
                     i, (long long)ev->index,
                     ev->type == LC_OK ? "ok"
                     : ev->type == LC_FAIL ? "fail" : "info",
                     (long long)ev->process);
            rc = RK_EINVAL;
            goto fail;
        }
        op = &ops[*slot];
        *slot = NO_POS;
        if (ev->fn != op->fn) {
            lc__errf(err, errlen,
                     "event %zu (index %lld): process %lld completes :%s "
                     "but invoked :%s",
                     i, (long long)ev->index, (long long)ev->process,
                     lc__fn_name(ev->fn), lc__fn_name(op->fn));
            rc = RK_EINVAL;
            goto fail;
        }
        switch (ev->type) {
        case LC_OK:
            /* Knossos: the completion carries the op's observed value. */
            op->ret = i;
            op->key = ev->key;
            op->value = ev->value;
            op->value2 = ev->value2;
            if (ev->fn == LC_TXN) {
                op->mops = ev->mops;
                op->n_mops = ev->n_mops;
            }
            break;
        case LC_FAIL:
            op->dropped = true;
            break;
        default: /* LC_INFO: stays indeterminate. */
            break;
        }
    }
    for (i = 0; i < n_ops; i++) {
        /* An indeterminate read observed nothing and changed nothing. */
        if (ops[i].ret == NO_POS && ops[i].fn == LC_READ)
            ops[i].dropped = true;
    }
    lc__imap_free(&pending);
    *out = ops;
    *n_out = n_ops;
    return 0;
fail:
    lc__imap_free(&pending);
    free(ops);
    return rc;
}

static uint64_t observed_hash(int64_t key, struct lc_val v)
{
    uint64_t h = lc__mix64((uint64_t)key ^ 0x6f6273657276ULL);

    h = lc__mix64(h ^ (uint64_t)(v.nil ? 0 : v.v));
    return h ^ (v.nil ? 0x9e37ULL : 0);
}

/*
 * Drops indeterminate writes and cas ops whose new value nobody observed.
 * Such an op, once applied, leaves the register in a state that only ops
 * which do not look at it (writes, nil reads under Knossos semantics) can
 * follow until the next write; removing it from a linearization keeps the
 * linearization legal. So "it never took effect" is always a possible
 * choice, and taking it up front spares the search an exponential number
 * of subsets when histories carry many crashed writes with unique values.
 * A value counts as observed when an OK read returned it or a cas that is
 * kept expected it. Dropping ops can make more values unobserved, so this
 * runs to a fixpoint (bounded; stopping early only keeps more ops). The
 * argument holds for the dropped set as a whole: in a linearization, an op
 * that is kept sees either the constant output of the last kept writer, as
 * before, or follows a dropped writer, which it could only follow by not
 * looking at the state. Hash collisions only keep more ops: still sound.
 */
#define PRUNE_MAX_ROUNDS 32

static int prune_unobserved(const struct lc_options *opt, struct cop *ops,
                            size_t n_ops)
{
    size_t round, changed = 1;
    int rc = 0;

    for (round = 0; round < PRUNE_MAX_ROUNDS && changed > 0 && rc == 0;
         round++) {
        struct lc_imap seen = {0};
        size_t i;

        changed = 0;
        for (i = 0; i < n_ops && rc == 0; i++) {
            const struct cop *op = &ops[i];
            if (op->dropped)
                continue;
            bool looks = op->fn == LC_CAS ||
                         (op->fn == LC_READ && op->ret != NO_POS &&
                          !(op->value.nil && opt->nil_read_matches_any));
            if (looks)
                rc = lc__imap_put(
                    &seen, (int64_t)observed_hash(op->key, op->value), 1);
        }
        for (i = 0; i < n_ops && rc == 0; i++) {
            struct cop *op = &ops[i];
            struct lc_val nv;
            if (op->dropped || op->ret != NO_POS ||
                (op->fn != LC_WRITE && op->fn != LC_CAS))
                continue;
            nv = op->fn == LC_WRITE ? op->value : op->value2;
            if (lc__imap_get(&seen, (int64_t)observed_hash(op->key, nv)) ==
                NULL) {
                op->dropped = true;
                changed++;
            }
        }
        lc__imap_free(&seen);
    }
    return rc;
}

/* Union-find over key slots (multi-register partitions). */
static size_t uf_find(size_t *parent, size_t x)
{
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];
        x = parent[x];
    }
    return x;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

    return x < y ? -1 : x > y;
}

/* Partition plan: ops grouped by partition, keys of each partition. */
struct plan {
    size_t n_parts;
    size_t *part_start; /* n_parts + 1 offsets into ids */
    size_t *ids;        /* op indices grouped by partition, in order */
    size_t *key_start;  /* n_parts + 1 offsets into keys */
    int64_t *keys;      /* sorted keys of each partition */
};

static void plan_free(struct plan *pl)
{
    free(pl->part_start);
    free(pl->ids);
    free(pl->key_start);
    free(pl->keys);
    memset(pl, 0, sizeof(*pl));
}

static int make_plan(const struct cop *ops, size_t n_ops, bool multi,
                     struct plan *pl)
{
    struct lc_imap key_slot = {0}; /* key → slot */
    struct lc_imap root_part = {0}; /* root slot → partition */
    int64_t *slot_key = NULL;
    size_t *parent = NULL, *op_part = NULL, *count = NULL, *kcount = NULL;
    size_t n_slots = 0, cap_slots = 0, cap_parent = 0, i, j;
    int rc = RK_ENOMEM;

    memset(pl, 0, sizeof(*pl));
    op_part = malloc((n_ops + 1) * sizeof(*op_part));
    if (op_part == NULL)
        goto out;

    /* Slots for every key; union the keys of each txn. */
    for (i = 0; i < n_ops; i++) {
        const struct cop *op = &ops[i];
        uint32_t nk = (multi && op->fn == LC_TXN) ? op->n_mops : 1;
        size_t first = 0;
        if (op->dropped)
            continue;
        for (j = 0; j < nk; j++) {
            int64_t k = (multi && op->fn == LC_TXN) ? op->mops[j].key : op->key;
            size_t *s = lc__imap_get(&key_slot, k);
            size_t sl;
            if (s == NULL) {
                if (lc__grow((void **)&slot_key, &cap_slots, n_slots + 1,
                             sizeof(*slot_key)) != 0 ||
                    lc__grow((void **)&parent, &cap_parent, n_slots + 1,
                             sizeof(*parent)) != 0 ||
                    lc__imap_put(&key_slot, k, n_slots) != 0)
                    goto out;
                slot_key[n_slots] = k;
                parent[n_slots] = n_slots;
                sl = n_slots++;
            } else {
                sl = *s;
            }
            if (j == 0) {
                first = sl;
            } else {
                size_t a = uf_find(parent, first), b = uf_find(parent, sl);
                if (a != b)
                    parent[b] = a;
            }
        }
    }

    /* Number the partitions by first appearance. */
    for (i = 0; i < n_ops; i++) {
        const struct cop *op = &ops[i];
        int64_t k;
        size_t root, *pp;
        if (op->dropped) {
            op_part[i] = NO_POS;
            continue;
        }
        k = (multi && op->fn == LC_TXN) ? op->mops[0].key : op->key;
        root = uf_find(parent, *lc__imap_get(&key_slot, k));
        pp = lc__imap_get(&root_part, (int64_t)root);
        if (pp == NULL) {
            if (lc__imap_put(&root_part, (int64_t)root, pl->n_parts) != 0)
                goto out;
            op_part[i] = pl->n_parts++;
        } else {
            op_part[i] = *pp;
        }
    }

    /* Counting sort of ops and keys into their partitions. */
    count = calloc(pl->n_parts + 1, sizeof(*count));
    kcount = calloc(pl->n_parts + 1, sizeof(*kcount));
    pl->part_start = calloc(pl->n_parts + 1, sizeof(*pl->part_start));
    pl->key_start = calloc(pl->n_parts + 1, sizeof(*pl->key_start));
    pl->ids = malloc((n_ops + 1) * sizeof(*pl->ids));
    pl->keys = malloc((n_slots + 1) * sizeof(*pl->keys));
    if (count == NULL || kcount == NULL || pl->part_start == NULL ||
        pl->key_start == NULL || pl->ids == NULL || pl->keys == NULL)
        goto out;
    for (i = 0; i < n_ops; i++) {
        if (op_part[i] != NO_POS)
            count[op_part[i]]++;
    }
    for (i = 0; i < n_slots; i++) {
        size_t *pp = lc__imap_get(&root_part, (int64_t)uf_find(parent, i));
        if (pp != NULL) /* keys used only by dropped ops have no partition */
            kcount[*pp]++;
    }
    for (i = 0; i < pl->n_parts; i++) {
        pl->part_start[i + 1] = pl->part_start[i] + count[i];
        pl->key_start[i + 1] = pl->key_start[i] + kcount[i];
        count[i] = pl->part_start[i];
        kcount[i] = pl->key_start[i];
    }
    for (i = 0; i < n_ops; i++) {
        if (op_part[i] != NO_POS)
            pl->ids[count[op_part[i]]++] = i;
    }
    for (i = 0; i < n_slots; i++) {
        size_t *pp = lc__imap_get(&root_part, (int64_t)uf_find(parent, i));
        if (pp != NULL)
            pl->keys[kcount[*pp]++] = slot_key[i];
    }
    for (i = 0; i < pl->n_parts; i++)
        qsort(pl->keys + pl->key_start[i],
              pl->key_start[i + 1] - pl->key_start[i], sizeof(*pl->keys),
              cmp_i64);
    rc = 0;
out:
    if (rc != 0)
        plan_free(pl);
    lc__imap_free(&key_slot);
    lc__imap_free(&root_part);
    free(slot_key);
    free(parent);
    free(op_part);
    free(count);
    free(kcount);
    return rc;
}

static void search_out_free(struct search_out *so)
{
    free(so->prefix);
    free(so->best_bits);
    free(so->bitpos);
    so->bitpos = NULL;
    free(so->states);
    so->prefix = NULL;
    so->best_bits = NULL;
    so->states = NULL;
}

/* Copies the stuck point of partition p into res. */
static int fill_violation(const struct part *p, const struct search_out *so,
                          struct lc_result *res)
{
    const struct cop *stuck = &p->ops[p->ids[so->stuck]];
    uint32_t i, reg = 0;

    res->prefix = malloc(((size_t)so->n_prefix + 1) * sizeof(*res->prefix));
    res->window = malloc(((size_t)p->n + 1) * sizeof(*res->window));
    res->window_in_prefix =
        malloc(((size_t)p->n + 1) * sizeof(*res->window_in_prefix));
    if (res->prefix == NULL || res->window == NULL ||
        res->window_in_prefix == NULL)
        return RK_ENOMEM;
    for (i = 0; i < so->n_prefix; i++)
        res->prefix[i] = p->ops[p->ids[so->prefix[i]]].inv;
    res->n_prefix = so->n_prefix;
    res->stuck_op = stuck->inv;
    res->n_window = 0;
    for (i = 0; i < p->n; i++) {
        const struct cop *op = &p->ops[p->ids[i]];
        uint32_t b = so->bitpos[i];
        bool lin = (so->best_bits[b / 64] >> (b % 64)) & 1;
        /* Ops whose interval overlaps the stuck op's. Every op left out of
         * the prefix and invoked before the stuck return is among them: its
         * own return comes later, or the search would have stopped there. */
        if (op->inv < stuck->ret &&
            (op->ret == NO_POS || op->ret > stuck->inv)) {
            res->window_in_prefix[res->n_window] = lin;
            res->window[res->n_window++] = op->inv;
        }
    }
    res->bad_key = stuck->fn == LC_TXN ? stuck->mops[0].key : stuck->key;
    if (p->model == LC_MODEL_MULTI_REGISTER)
        reg = reg_index(p, res->bad_key);
    res->n_states = so->n_states;
    for (i = 0; i < so->n_states; i++) {
        const int64_t *s = so->states + (size_t)i * p->sw;
        res->states[i] = p->model == LC_MODEL_MUTEX ? LC_INT(s[0])
                                                    : get_val(s + 2 * reg);
    }
    return 0;
}

int lc_check(const struct lc_history *h, const struct lc_options *opt,
             struct lc_result *res, char *err, size_t errlen)
{
    struct lc_options defaults;
    struct cop *ops = NULL;
    struct plan pl = {0};
    size_t n_ops = 0, i;
    double start = now_s(), deadline = 0;
    bool unknown = false;
    int rc;

    if (opt == NULL) {
        lc_options_init_knossos(&defaults);
        opt = &defaults;
    }
    memset(res, 0, sizeof(*res));
    res->model = opt->model == LC_MODEL_AUTO ? pick_model(h) : opt->model;
    if (opt->time_limit_s > 0)
        deadline = start + opt->time_limit_s;

    rc = build_ops(h, &ops, &n_ops, err, errlen);
    if (rc != 0)
        return rc;
    for (i = 0; i < n_ops; i++) {
        if (!ops[i].dropped && !model_allows(res->model, ops[i].fn)) {
            lc__errf(err, errlen,
                     "event %zu: :%s is not an operation of the %s model",
                     ops[i].inv, lc__fn_name(ops[i].fn),
                     lc_model_name(res->model));
            rc = RK_EINVAL;
            goto out;
        }
        if (!ops[i].dropped && ops[i].n_mops > 0) {
            uint32_t j;
            for (j = 0; j < ops[i].n_mops; j++) {
                if (ops[i].mops[j].fn != LC_READ &&
                    ops[i].mops[j].fn != LC_WRITE) {
                    lc__errf(err, errlen, "event %zu: bad txn micro-op",
                             ops[i].inv);
                    rc = RK_EINVAL;
                    goto out;
                }
            }
        }
        if (!ops[i].dropped)
            res->n_ops++;
    }
    if (res->model == LC_MODEL_REGISTER ||
        res->model == LC_MODEL_CAS_REGISTER) {
        rc = prune_unobserved(opt, ops, n_ops);
        if (rc != 0) {
            lc__errf(err, errlen, "out of memory");
            goto out;
        }
    }
    rc = make_plan(ops, n_ops, res->model == LC_MODEL_MULTI_REGISTER, &pl);
    if (rc != 0)
        goto out;
    res->n_partitions = pl.n_parts;
    res->verdict = LC_VALID;

    for (i = 0; i < pl.n_parts; i++) {
        struct part p = {0};
        struct search_out so = {0};
        size_t cnt = pl.part_start[i + 1] - pl.part_start[i];

        if (cnt > UINT32_MAX / 4) {
            lc__errf(err, errlen, "partition with %zu ops is too large", cnt);
            rc = RK_EINVAL;
            goto out;
        }
        p.opt = opt;
        p.model = res->model;
        p.ops = ops;
        p.ids = pl.ids + pl.part_start[i];
        p.n = (uint32_t)cnt;
        p.regs = pl.keys + pl.key_start[i];
        p.n_regs = (uint32_t)(pl.key_start[i + 1] - pl.key_start[i]);
        if (res->model != LC_MODEL_MULTI_REGISTER)
            p.n_regs = 1;
        p.sw = res->model == LC_MODEL_MUTEX ? 1 : 2 * p.n_regs;
        if (deadline > 0 && now_s() > deadline) {
            unknown = true;
            snprintf(res->reason, sizeof(res->reason),
                     "time limit of %.3g s reached", opt->time_limit_s);
            break;
        }
        rc = search(&p, deadline, &so);
        res->n_steps += so.steps;
        if (so.memo_n > res->peak_memo)
            res->peak_memo = so.memo_n;
        if (rc != 0) {
            search_out_free(&so);
            lc__errf(err, errlen, "out of memory");
            goto out;
        }
        if (so.verdict == LC_INVALID) {
            res->verdict = LC_INVALID;
            rc = fill_violation(&p, &so, res);
            search_out_free(&so);
            if (rc != 0) {
                lc__errf(err, errlen, "out of memory");
                goto out;
            }
            break;
        }
        if (so.verdict == LC_UNKNOWN) {
            /* Keep going: another partition may still prove a violation,
             * unless the clock is what ran out. */
            if (!unknown)
                memcpy(res->reason, so.reason, sizeof(res->reason));
            unknown = true;
        }
        search_out_free(&so);
    }
    if (res->verdict == LC_VALID && unknown)
        res->verdict = LC_UNKNOWN;
    rc = 0;
out:
    res->elapsed_s = now_s() - start;
    if (rc != 0)
        lc_result_free(res);
    plan_free(&pl);
    free(ops);
    return rc;
}
