/* The in-memory history: an append-only array of events plus key names. */
#include <stdlib.h>
#include <string.h>

#include "lc_internal.h"
#include "rk_err.h"

#define LC_MAX_MOPS 4096

struct lc_history {
    struct lc_op *ops;
    size_t n;
    size_t cap;
    struct lc_imap names; /* key → index into name_strs */
    char **name_strs;
    size_t n_names;
    size_t cap_names;
};

const char *const lc__type_names[LC_INFO + 1] = {"invoke", "ok", "fail",
                                                "info"};
const char *const lc__fn_names[LC_TXN + 1] = {"read",    "write",   "cas",
                                              "acquire", "release", "txn"};

const char *lc__type_name(enum lc_type t)
{
    return (unsigned)t <= LC_INFO ? lc__type_names[t] : "?";
}

const char *lc__fn_name(enum lc_fn fn)
{
    return (unsigned)fn <= LC_TXN ? lc__fn_names[fn] : "?";
}

void lc__errf(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

int lc__grow(void **arr, size_t *cap, size_t need, size_t elem)
{
    size_t ncap;
    void *p;

    if (need <= *cap)
        return 0;
    ncap = *cap ? *cap : 16;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2 / elem)
            return RK_ENOMEM;
        ncap *= 2;
    }
    p = realloc(*arr, ncap * elem);
    if (p == NULL)
        return RK_ENOMEM;
    *arr = p;
    *cap = ncap;
    return 0;
}

/* ------------------------------------------------------------- int map */

void lc__imap_free(struct lc_imap *m)
{
    free(m->keys);
    free(m->vals);
    free(m->used);
    memset(m, 0, sizeof(*m));
}

static size_t imap_slot(const struct lc_imap *m, int64_t key)
{
    size_t mask = m->cap - 1;
    size_t i = (size_t)lc__mix64((uint64_t)key) & mask;

    while (m->used[i] && m->keys[i] != key)
        i = (i + 1) & mask;
    return i;
}

size_t *lc__imap_get(const struct lc_imap *m, int64_t key)
{
    size_t i;

    if (m->cap == 0)
        return NULL;
    i = imap_slot(m, key);
    return m->used[i] ? &m->vals[i] : NULL;
}

static int imap_resize(struct lc_imap *m, size_t ncap)
{
    struct lc_imap nm = {0};
    size_t i;

    nm.keys = malloc(ncap * sizeof(*nm.keys));
    nm.vals = malloc(ncap * sizeof(*nm.vals));
    nm.used = calloc(ncap, 1);
    nm.cap = ncap;
    if (nm.keys == NULL || nm.vals == NULL || nm.used == NULL) {
        lc__imap_free(&nm);
        return RK_ENOMEM;
    }
    for (i = 0; i < m->cap; i++) {
        if (m->used[i]) {
            size_t j = imap_slot(&nm, m->keys[i]);
            nm.used[j] = 1;
            nm.keys[j] = m->keys[i];
            nm.vals[j] = m->vals[i];
            nm.n++;
        }
    }
    lc__imap_free(m);
    *m = nm;
    return 0;
}

int lc__imap_put(struct lc_imap *m, int64_t key, size_t val)
{
    size_t i;
    int rc;

    if ((m->n + 1) * 2 > m->cap) {
        rc = imap_resize(m, m->cap ? m->cap * 2 : 16);
        if (rc != 0)
            return rc;
    }
    i = imap_slot(m, key);
    if (!m->used[i]) {
        m->used[i] = 1;
        m->keys[i] = key;
        m->n++;
    }
    m->vals[i] = val;
    return 0;
}

/* ------------------------------------------------------------- history */

int lc_history_new(struct lc_history **out)
{
    struct lc_history *h = calloc(1, sizeof(*h));

    if (h == NULL)
        return RK_ENOMEM;
    *out = h;
    return 0;
}

void lc_history_free(struct lc_history *h)
{
    size_t i;

    if (h == NULL)
        return;
    for (i = 0; i < h->n; i++)
        free((void *)h->ops[i].mops);
    free(h->ops);
    for (i = 0; i < h->n_names; i++)
        free(h->name_strs[i]);
    free(h->name_strs);
    lc__imap_free(&h->names);
    free(h);
}

int lc_history_add(struct lc_history *h, const struct lc_op *op)
{
    struct lc_op *dst;
    struct lc_mop *mops = NULL;
    uint32_t i;

    if ((unsigned)op->type > LC_INFO || (unsigned)op->fn > LC_TXN)
        return RK_EINVAL;
    if (op->fn == LC_TXN) {
        if (op->n_mops == 0 || op->n_mops > LC_MAX_MOPS || op->mops == NULL)
            return RK_EINVAL;
        for (i = 0; i < op->n_mops; i++) {
            if (op->mops[i].fn != LC_READ && op->mops[i].fn != LC_WRITE)
                return RK_EINVAL;
        }
    }
    if (lc__grow((void **)&h->ops, &h->cap, h->n + 1, sizeof(*h->ops)) != 0)
        return RK_ENOMEM;
    if (op->fn == LC_TXN) {
        mops = malloc(op->n_mops * sizeof(*mops));
        if (mops == NULL)
            return RK_ENOMEM;
        memcpy(mops, op->mops, op->n_mops * sizeof(*mops));
    }
    dst = &h->ops[h->n];
    *dst = *op;
    dst->mops = mops;
    if (op->fn != LC_TXN)
        dst->n_mops = 0;
    if (dst->index < 0)
        dst->index = (int64_t)h->n;
    h->n++;
    return 0;
}

size_t lc_history_len(const struct lc_history *h)
{
    return h->n;
}

const struct lc_op *lc_history_op(const struct lc_history *h, size_t i)
{
    return i < h->n ? &h->ops[i] : NULL;
}

int lc_history_set_key_name(struct lc_history *h, int64_t key,
                            const char *name)
{
    size_t *slot = lc__imap_get(&h->names, key);
    char *copy = strdup(name);

    if (copy == NULL)
        return RK_ENOMEM;
    if (slot != NULL) {
        free(h->name_strs[*slot]);
        h->name_strs[*slot] = copy;
        return 0;
    }
    if (lc__grow((void **)&h->name_strs, &h->cap_names, h->n_names + 1,
                 sizeof(*h->name_strs)) != 0 ||
        lc__imap_put(&h->names, key, h->n_names) != 0) {
        free(copy);
        return RK_ENOMEM;
    }
    h->name_strs[h->n_names++] = copy;
    return 0;
}

const char *lc_history_key_name(const struct lc_history *h, int64_t key)
{
    size_t *slot = lc__imap_get(&h->names, key);

    return slot != NULL ? h->name_strs[*slot] : NULL;
}

/* ------------------------------------------------------------- interning */

void lc__intern_free(struct lc_intern *t)
{
    size_t i;

    for (i = 0; i < t->n; i++)
        free(t->strs[i]);
    free(t->strs);
    free(t->lens);
    free(t->slots);
    memset(t, 0, sizeof(*t));
}

static uint64_t fnv1a(const char *s, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    size_t i;

    for (i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static size_t intern_find(const struct lc_intern *t, const char *s,
                          size_t len)
{
    size_t mask = t->cap - 1, j = (size_t)fnv1a(s, len) & mask;

    while (t->slots[j] != 0) {
        size_t k = t->slots[j] - 1;
        if (t->lens[k] == len && memcmp(t->strs[k], s, len) == 0)
            break;
        j = (j + 1) & mask;
    }
    return j;
}

int lc__intern(struct lc_intern *t, const char *s, size_t len, int64_t *id,
               bool *fresh)
{
    size_t j, i;
    char *copy;

    *fresh = false;
    if ((t->n + 1) * 2 > t->cap) {
        size_t ncap = t->cap ? t->cap * 2 : 64;
        struct lc_intern nt = *t;
        if (t->n >= UINT32_MAX - 1)
            return RK_ENOMEM;
        nt.slots = calloc(ncap, sizeof(*nt.slots));
        if (nt.slots == NULL)
            return RK_ENOMEM;
        nt.cap = ncap;
        for (i = 0; i < t->n; i++)
            nt.slots[intern_find(&nt, t->strs[i], t->lens[i])] =
                (uint32_t)(i + 1);
        free(t->slots);
        *t = nt;
    }
    j = intern_find(t, s, len);
    if (t->slots[j] != 0) {
        *id = (int64_t)t->slots[j];
        return 0;
    }
    if (lc__grow((void **)&t->strs, &t->cap_strs, t->n + 1,
                 sizeof(*t->strs)) != 0)
        return RK_ENOMEM;
    {
        size_t lcap = t->cap_strs - 1; /* keep lens in step with strs */
        size_t *nl = realloc(t->lens, (lcap + 1) * sizeof(*nl));
        if (nl == NULL)
            return RK_ENOMEM;
        t->lens = nl;
    }
    copy = malloc(len + 1);
    if (copy == NULL)
        return RK_ENOMEM;
    memcpy(copy, s, len);
    copy[len] = '\0';
    t->strs[t->n] = copy;
    t->lens[t->n] = len;
    t->slots[j] = (uint32_t)(t->n + 1);
    t->n++;
    *id = (int64_t)t->n;
    *fresh = true;
    return 0;
}
