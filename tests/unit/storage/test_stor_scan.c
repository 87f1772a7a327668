/* Storage tests: scans merge the open transaction's overlay with LMDB. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "rk_rand.h"
#include "stor_int.h"
#include "stor_test_util.h"

/* Batches go through the storage thread (stor_batch_submit), so that they
 * stay in the open transaction: the scans below must find them in the
 * overlay. `sync_batch` (stor_batch_commit) checkpoints instead. */
struct fx {
    char *dir;
    struct stor *s;
    raft_index next[4]; /* next index of shards 1..3 */
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->dir = tu_mkdtemp("scan");
    f->s = tu_open(f->dir, 0, 0);
    for (uint64_t sh = 1; sh <= 3; sh++) {
        tu_create_shard(f->s, sh);
        f->next[sh] = 1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    int rc = tu_close_rm(f->s, f->dir);
    free(f);
    assert_int_equal(rc, 0);
    return 0;
}

/* One write: a PUT, or a DEL when del. */
struct op {
    bool del;
    const void *key;
    uint32_t klen;
    const void *val;
    uint32_t vlen;
};

/* Appends and applies ops[0..n) on `shard` as consecutive entries of one
 * batch; submitted to the storage thread (ckpt false: it stays in the open
 * transaction) or committed (ckpt true: a checkpoint follows). */
static void batch(struct fx *f, uint64_t shard, const struct op *ops,
                  uint32_t n, bool ckpt)
{
    struct stor_batch *b;
    struct raft_entry *e = calloc(n, sizeof(*e));
    void **bufs = calloc(n, sizeof(*bufs));
    assert_non_null(e);
    assert_non_null(bufs);
    assert_int_equal(stor_batch_new(&b), 0);
    for (uint32_t i = 0; i < n; i++) {
        struct stor_cmd c = {.op = ops[i].del ? STOR_CMD_DEL : STOR_CMD_PUT,
                             .key = ops[i].key,
                             .klen = ops[i].klen,
                             .value = ops[i].val,
                             .vlen = ops[i].vlen};
        size_t cap = stor_cmd_size(&c), len = 0;
        bufs[i] = malloc(cap);
        assert_non_null(bufs[i]);
        assert_int_equal(stor_cmd_encode(&c, bufs[i], cap, &len), 0);
        e[i] = (struct raft_entry){.term = 1,
                                   .index = f->next[shard]++,
                                   .type = RAFT_ENTRY_NORMAL,
                                   .data = bufs[i],
                                   .len = (uint32_t)len};
    }
    assert_int_equal(stor_batch_append(b, shard, e, n), 0);
    assert_int_equal(stor_batch_apply(b, shard, e, n, NULL), 0);
    if (ckpt) {
        assert_int_equal(stor_batch_commit(f->s, b), 0);
    } else {
        assert_int_equal(tu_submit_wait(f->s, b), 0);
    }
    for (uint32_t i = 0; i < n; i++)
        assert_int_equal(stor_batch_result(b, i)->status, 0);
    stor_batch_free(b);
    for (uint32_t i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(e);
}

static struct op P(const char *k, const char *v)
{
    return (struct op){.key = k,
                       .klen = (uint32_t)strlen(k),
                       .val = v,
                       .vlen = (uint32_t)strlen(v)};
}

static struct op D(const char *k)
{
    return (struct op){.del = true, .key = k, .klen = (uint32_t)strlen(k)};
}

static uint64_t checkpoints(struct fx *f)
{
    struct stor_stats st;
    stor_stats(f->s, &st);
    return st.checkpoints;
}

/* Scans and checks the keys and values against "k=v" strings (k alone:
 * the value is the key). */
static void expect_scan(struct fx *f, uint64_t shard, const char *prefix,
                        const char *start, uint32_t limit, size_t max_bytes,
                        bool more, const char *const *want, uint32_t n_want)
{
    struct stor_scan sc;
    assert_int_equal(stor_kv_scan(f->s, shard, prefix,
                                  prefix ? strlen(prefix) : 0, start,
                                  start ? strlen(start) : 0, limit, max_bytes,
                                  &sc),
                     0);
    if (sc.n != n_want) {
        for (uint32_t i = 0; i < sc.n; i++)
            fprintf(stderr, "got %.*s\n", (int)sc.items[i].klen,
                    (const char *)sc.items[i].key);
    }
    assert_int_equal(sc.n, n_want);
    assert_int_equal(sc.more, more);
    for (uint32_t i = 0; i < n_want; i++) {
        const char *eq = strchr(want[i], '=');
        size_t kl = eq ? (size_t)(eq - want[i]) : strlen(want[i]);
        const char *v = eq ? eq + 1 : want[i];
        assert_int_equal(sc.items[i].klen, kl);
        assert_memory_equal(sc.items[i].key, want[i], kl);
        assert_int_equal(sc.items[i].vlen, strlen(v));
        assert_memory_equal(sc.items[i].value, v, strlen(v));
    }
    free(sc.items);
}

#define N(a) ((uint32_t)(sizeof(a) / sizeof((a)[0])))

/* LMDB holds a c e g i k (checkpointed); the open transaction adds b d,
 * overwrites e, deletes g, deletes and re-puts i, and writes the other
 * shards. A scan sees the merge, and no checkpoint happens for it. */
static void test_scan_merges_overlay(void **state)
{
    struct fx *f = *state;
    struct op base[] = {P("a", "a"), P("c", "c"), P("e", "e"),
                        P("g", "g"), P("i", "i"), P("k", "k")};
    batch(f, 1, base, N(base), true);
    struct op base2[] = {P("c", "x")};
    batch(f, 2, base2, 1, true);
    uint64_t ck0 = checkpoints(f);
    struct op o1[] = {P("d", "d"), P("b", "b"), P("e", "E"), D("g"), D("i")};
    batch(f, 1, o1, N(o1), false);
    struct op o2[] = {P("i", "I")};
    batch(f, 1, o2, N(o2), false);
    /* Other shards' writes, keys that would sort among shard 1's (a
     * tombstone of shard 2's c too). */
    struct op o3[] = {P("bb", "x"), P("h", "x"), D("c")};
    batch(f, 2, o3, N(o3), false);
    batch(f, 3, o3, 2, false);

    const char *all[] = {"a", "b", "c", "d", "e=E", "i=I", "k"};
    expect_scan(f, 1, NULL, NULL, 0, 0, false, all, N(all));
    /* The revisions: the overlay's own (b is entry 8, E entry 9). */
    struct stor_scan sc;
    assert_int_equal(stor_kv_scan(f->s, 1, NULL, 0, NULL, 0, 0, 0, &sc), 0);
    assert_int_equal(sc.items[1].revision, 8);
    assert_int_equal(sc.items[1].create_revision, 8);
    assert_int_equal(sc.items[4].revision, 9);
    assert_int_equal(sc.items[4].create_revision, 3);
    assert_int_equal(sc.items[5].revision, 12);
    assert_int_equal(sc.items[5].create_revision, 12);
    free(sc.items);
    /* Start bounds: on an overlay key, on a tombstone, past the end. */
    const char *from_b[] = {"b", "c", "d", "e=E", "i=I", "k"};
    expect_scan(f, 1, NULL, "b", 0, 0, false, from_b, N(from_b));
    const char *from_g[] = {"i=I", "k"};
    expect_scan(f, 1, NULL, "g", 0, 0, false, from_g, N(from_g));
    expect_scan(f, 1, NULL, "l", 0, 0, false, NULL, 0);
    /* Limits and `more`: the tombstone g hides an LMDB record between
     * e and i; the cut comes after as many visible records as asked. */
    const char *two[] = {"a", "b"};
    expect_scan(f, 1, NULL, NULL, 2, 0, true, two, N(two));
    const char *after_d[] = {"e=E", "i=I"};
    expect_scan(f, 1, NULL, "d\x01", 2, 0, true, after_d, N(after_d));
    const char *last2[] = {"i=I", "k"};
    expect_scan(f, 1, NULL, "e\x01", 2, 0, false, last2, N(last2));
    const char *last1[] = {"k"};
    expect_scan(f, 1, NULL, "i\x01", 1, 0, false, last1, N(last1));
    /* max_bytes: 2 bytes = "a"+"a"; 3 still only one; at least one. */
    const char *one[] = {"a"};
    expect_scan(f, 1, NULL, NULL, 0, 3, true, one, N(one));
    expect_scan(f, 1, NULL, NULL, 0, 4, true, two, N(two));
    const char *one_e[] = {"e=E"};
    expect_scan(f, 1, NULL, "e", 0, 1, true, one_e, N(one_e));
    /* Other shards: their own merges, nothing of shard 1's. */
    const char *sh2[] = {"bb=x", "h=x"};
    expect_scan(f, 2, NULL, NULL, 0, 0, false, sh2, N(sh2));
    expect_scan(f, 3, NULL, NULL, 0, 0, false, sh2, N(sh2));
    assert_int_equal(checkpoints(f), ck0);

    /* The same after a checkpoint (LMDB alone). */
    struct op none[] = {P("zz", "z")};
    batch(f, 3, none, 1, true);
    assert_true(checkpoints(f) > ck0);
    expect_scan(f, 1, NULL, NULL, 0, 0, false, all, N(all));
    expect_scan(f, 1, NULL, NULL, 2, 0, true, two, N(two));
}

/* Prefix bounds with the overlay: a prefix that only overlay keys have, a
 * deleted LMDB key at the prefix's edges, and a key equal to the prefix. */
static void test_scan_prefix(void **state)
{
    struct fx *f = *state;
    struct op base[] = {P("ap", "1"), P("app", "2"), P("app/1", "3"),
                        P("app/3", "4"), P("apq", "5"), P("b", "6")};
    batch(f, 1, base, N(base), true);
    uint64_t ck0 = checkpoints(f);
    struct op o[] = {P("app/2", "N"), D("app/3"), P("app/4", "M"),
                     P("apo", "O"), P("new/1", "P"), D("app")};
    batch(f, 1, o, N(o), false);
    const char *app_s[] = {"app/1=3", "app/2=N", "app/4=M"};
    expect_scan(f, 1, "app/", NULL, 0, 0, false, app_s, N(app_s));
    expect_scan(f, 1, "app", NULL, 0, 0, false, app_s, N(app_s));
    const char *ap[] = {"ap=1", "apo=O", "app/1=3", "app/2=N", "app/4=M",
                        "apq=5"};
    expect_scan(f, 1, "ap", NULL, 0, 0, false, ap, N(ap));
    const char *nw[] = {"new/1=P"};
    expect_scan(f, 1, "new/", NULL, 0, 0, false, nw, N(nw));
    expect_scan(f, 1, "new/", "new/2", 0, 0, false, NULL, 0);
    const char *app_from[] = {"app/4=M"};
    expect_scan(f, 1, "app/", "app/3", 0, 0, false, app_from, N(app_from));
    const char *app_lim[] = {"app/1=3"};
    expect_scan(f, 1, "app/", NULL, 1, 0, true, app_lim, N(app_lim));
    /* A start before the prefix is the prefix. */
    expect_scan(f, 1, "app/", "a", 0, 0, false, app_s, N(app_s));
    assert_int_equal(checkpoints(f), ck0);
}

/* Tombstones hiding many LMDB records: a scan with a small limit reads
 * LMDB past them and still says whether there is more. */
static void test_scan_many_hidden(void **state)
{
    struct fx *f = *state;
    enum { K = 300 };
    static char keys[K][16];
    struct op ops[K];
    for (int i = 0; i < K; i++) {
        snprintf(keys[i], sizeof keys[i], "k%04d", i);
        ops[i] = P(keys[i], "v");
    }
    batch(f, 1, ops, K, true);
    uint64_t ck0 = checkpoints(f);
    /* Delete all but k0150 and k0299. */
    uint32_t n = 0;
    for (int i = 0; i < K; i++)
        if (i != 150 && i != 299)
            ops[n++] = D(keys[i]);
    batch(f, 1, ops, n, false);
    const char *first[] = {"k0150=v"};
    expect_scan(f, 1, NULL, NULL, 1, 0, true, first, N(first));
    const char *both[] = {"k0150=v", "k0299=v"};
    expect_scan(f, 1, NULL, NULL, 2, 0, false, both, N(both));
    expect_scan(f, 1, "k", NULL, 0, 0, false, both, N(both));
    const char *last[] = {"k0299=v"};
    expect_scan(f, 1, NULL, "k0150\x01", 1, 0, false, last, N(last));
    expect_scan(f, 1, "k00", NULL, 5, 0, false, NULL, 0);
    assert_int_equal(checkpoints(f), ck0);
}

/* Long keys (over 480 bytes) in LMDB and in the overlay, sharing their
 * first 480 bytes and not; short keys among them. */
static void test_scan_long_keys(void **state)
{
    struct fx *f = *state;
    enum { L = 600 };
    static char k[6][L + 1];
    for (int i = 0; i < 6; i++) {
        memset(k[i], 'x', L);
        k[i][L] = '\0';
    }
    k[0][500] = 'a';       /* LMDB */
    k[1][500] = 'c';       /* LMDB, deleted in the overlay */
    k[2][500] = 'b';       /* overlay only, between them */
    k[3][510] = '\0';      /* overlay: 510 x's */
    k[3][505] = 'd';
    k[4][480] = '\0';      /* a short key (480 x's), LMDB */
    k[5][100] = 'y';       /* after all of them */
    struct op base[] = {P(k[0], "0"), P(k[1], "1"), P(k[4], "4"),
                        P(k[5], "5")};
    batch(f, 1, base, N(base), true);
    uint64_t ck0 = checkpoints(f);
    struct op o[] = {P(k[2], "2"), D(k[1]), P(k[3], "3"), P(k[0], "A")};
    batch(f, 1, o, N(o), false);
    /* Order: k4 (480 x's, a prefix of the others) < k0 ('a' at 500) < k2
     * ('b' at 500) < k3 ('x' at 500, 'd' at 505) < k5 ('y' at 100). */
    struct stor_scan sc;
    assert_int_equal(stor_kv_scan(f->s, 1, NULL, 0, NULL, 0, 0, 0, &sc), 0);
    const char *want[] = {k[4], k[0], k[2], k[3], k[5]};
    const char *vals[] = {"4", "A", "2", "3", "5"};
    assert_int_equal(sc.n, 5);
    assert_false(sc.more);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(sc.items[i].klen, strlen(want[i]));
        assert_memory_equal(sc.items[i].key, want[i], strlen(want[i]));
        assert_int_equal(sc.items[i].vlen, 1);
        assert_memory_equal(sc.items[i].value, vals[i], 1);
    }
    free(sc.items);
    /* A 490-byte prefix (longer than LMDB's inline part; k4 is shorter),
     * with a limit, and from after k0. */
    assert_int_equal(stor_kv_scan(f->s, 1, k[0], 490, NULL, 0, 2, 0, &sc), 0);
    assert_int_equal(sc.n, 2);
    assert_true(sc.more);
    assert_memory_equal(sc.items[0].key, k[0], L);
    assert_memory_equal(sc.items[1].key, k[2], L);
    free(sc.items);
    static char after0[L + 1];
    memcpy(after0, k[0], L);
    assert_int_equal(
        stor_kv_scan(f->s, 1, k[0], 490, after0, L + 1, 0, 0, &sc), 0);
    assert_int_equal(sc.n, 2);
    assert_false(sc.more);
    assert_memory_equal(sc.items[0].key, k[2], L);
    assert_int_equal(sc.items[1].klen, 510);
    assert_memory_equal(sc.items[1].key, k[3], 510);
    free(sc.items);
    assert_int_equal(checkpoints(f), ck0);
}

/* ------------------------------------------------------ randomized model */

/* A model KV: the visible keys of one shard with value and revisions. */
struct mkv {
    uint8_t *key;
    uint32_t klen;
    uint8_t val[16];
    uint32_t vlen;
    uint64_t rev, create;
    bool live;
};

enum { POOL = 48, SHARDS = 2 };

struct model {
    struct mkv kv[SHARDS + 1][POOL];
};

static int mkv_cmp(const void *a, const void *b)
{
    const struct mkv *x = a, *y = b;
    return stor__key_cmp(x->key, x->klen, y->key, y->klen);
}

/* The pool of keys: short ones sharing prefixes, and long ones sharing
 * their first 480 bytes or not, all distinct, sorted. */
static void make_pool(uint8_t *keys[POOL], uint32_t lens[POOL],
                      struct rk_rand *r)
{
    for (int i = 0; i < POOL; i++) {
        bool dup;
        do {
            uint32_t len;
            uint32_t kind = (uint32_t)(rk_rand_next(r) % 4);
            if (kind == 0)
                len = 480 + 1 + (uint32_t)(rk_rand_next(r) % 40);
            else if (kind == 1)
                len = 470 + (uint32_t)(rk_rand_next(r) % 20);
            else
                len = 1 + (uint32_t)(rk_rand_next(r) % 4);
            keys[i] = realloc(keys[i], len);
            assert_non_null(keys[i]);
            for (uint32_t j = 0; j < len; j++)
                keys[i][j] = j < 478 && len > 400
                                 ? 'p'
                                 : (uint8_t)("ab\xff"[rk_rand_next(r) % 3]);
            lens[i] = len;
            dup = false;
            for (int j = 0; j < i && !dup; j++)
                dup = lens[j] == len && memcmp(keys[j], keys[i], len) == 0;
        } while (dup);
    }
}

/* Checks one scan against the model. */
static void check_scan(struct fx *f, struct model *m, uint64_t shard,
                       const uint8_t *prefix, uint32_t plen,
                       const uint8_t *start, uint32_t slen, uint32_t limit,
                       size_t max_bytes)
{
    struct mkv want[POOL];
    uint32_t n = 0;
    for (int i = 0; i < POOL; i++) {
        struct mkv *e = &m->kv[shard][i];
        if (!e->live || e->klen < plen ||
            (plen && memcmp(e->key, prefix, plen) != 0))
            continue;
        if (start && stor__key_cmp(e->key, e->klen, start, slen) < 0)
            continue;
        want[n++] = *e;
    }
    qsort(want, n, sizeof(*want), mkv_cmp);
    uint32_t cut = 0;
    size_t bytes = 0, budget = max_bytes ? max_bytes : ((size_t)4 << 20);
    while (cut < n && (!limit || cut < limit)) {
        size_t sz = (size_t)want[cut].klen + want[cut].vlen;
        if (cut > 0 && bytes + sz > budget)
            break;
        bytes += sz;
        cut++;
    }
    struct stor_scan sc;
    assert_int_equal(stor_kv_scan(f->s, shard, prefix, plen, start, slen,
                                  limit, max_bytes, &sc),
                     0);
    assert_int_equal(sc.n, cut);
    assert_int_equal(sc.more, cut < n);
    for (uint32_t i = 0; i < cut; i++) {
        assert_int_equal(sc.items[i].klen, want[i].klen);
        assert_memory_equal(sc.items[i].key, want[i].key, want[i].klen);
        assert_int_equal(sc.items[i].vlen, want[i].vlen);
        if (want[i].vlen)
            assert_memory_equal(sc.items[i].value, want[i].val,
                                want[i].vlen);
        assert_int_equal(sc.items[i].revision, want[i].rev);
        assert_int_equal(sc.items[i].create_revision, want[i].create);
    }
    free(sc.items);
}

/* Pages through a shard by `more` with a small limit: the pages add up to
 * the model's keys. */
static void check_pages(struct fx *f, struct model *m, uint64_t shard,
                        uint32_t limit)
{
    uint32_t live = 0, seen = 0;
    for (int i = 0; i < POOL; i++)
        live += m->kv[shard][i].live;
    uint8_t *after = NULL;
    size_t alen = 0;
    for (int page = 0; page <= POOL; page++) {
        struct stor_scan sc;
        assert_int_equal(stor_kv_scan(f->s, shard, NULL, 0, after, alen,
                                      limit, 0, &sc),
                         0);
        seen += sc.n;
        free(after);
        after = NULL;
        if (sc.n > 0) {
            const struct stor_kv_item *it = &sc.items[sc.n - 1];
            alen = it->klen + 1;
            after = calloc(1, alen);
            assert_non_null(after);
            memcpy(after, it->key, it->klen);
        }
        bool more = sc.more;
        free(sc.items);
        if (!more)
            break;
    }
    free(after);
    assert_int_equal(seen, live);
}

static void test_scan_random_model(void **state)
{
    struct fx *f = *state;
    const char *env = getenv("STOR_SCAN_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 10) : 20261123;
    struct rk_rand r;
    rk_rand_seed(&r, seed);
    uint8_t *keys[POOL] = {0};
    uint32_t lens[POOL];
    make_pool(keys, lens, &r);
    struct model *m = calloc(1, sizeof(*m));
    assert_non_null(m);
    for (uint64_t sh = 1; sh <= SHARDS; sh++)
        for (int i = 0; i < POOL; i++) {
            m->kv[sh][i].key = keys[i];
            m->kv[sh][i].klen = lens[i];
        }
    uint32_t overlay_scans = 0;
    for (int round = 0; round < 150; round++) {
        uint64_t shard = 1 + rk_rand_next(&r) % SHARDS;
        uint32_t n = 1 + (uint32_t)(rk_rand_next(&r) % 8);
        struct op ops[8];
        uint8_t vals[8][16];
        for (uint32_t i = 0; i < n; i++) {
            uint32_t k = (uint32_t)(rk_rand_next(&r) % POOL);
            struct mkv *e = &m->kv[shard][k];
            uint64_t idx = f->next[shard] + i;
            /* A delete of a live key (a missing one would be refused
             * with NOT_FOUND), else a put. */
            if (e->live && rk_rand_next(&r) % 3 == 0) {
                ops[i] = (struct op){.del = true, .key = keys[k],
                                     .klen = lens[k]};
                e->live = false;
                continue;
            }
            uint32_t vl = (uint32_t)(rk_rand_next(&r) % 16);
            for (uint32_t j = 0; j < vl; j++)
                vals[i][j] = (uint8_t)rk_rand_next(&r);
            ops[i] = (struct op){.key = keys[k], .klen = lens[k],
                                 .val = vals[i], .vlen = vl};
            if (!e->live)
                e->create = idx;
            e->live = true;
            e->rev = idx;
            memcpy(e->val, vals[i], vl);
            e->vlen = vl;
        }
        bool ckpt = rk_rand_next(&r) % 10 == 0;
        uint64_t ck0 = checkpoints(f);
        batch(f, shard, ops, n, ckpt);
        for (int q = 0; q < 6; q++) {
            uint64_t qs = 1 + rk_rand_next(&r) % SHARDS;
            const uint8_t *pk = keys[rk_rand_next(&r) % POOL];
            uint32_t plen = (uint32_t)(rk_rand_next(&r) % 4);
            if (rk_rand_next(&r) % 4 == 0)
                plen = 470 + (uint32_t)(rk_rand_next(&r) % 30);
            uint32_t pidx = (uint32_t)(rk_rand_next(&r) % POOL);
            if (plen > lens[pidx])
                plen = lens[pidx];
            pk = keys[pidx];
            uint32_t sidx = (uint32_t)(rk_rand_next(&r) % POOL);
            bool has_start = rk_rand_next(&r) % 2;
            uint32_t limit = (uint32_t)(rk_rand_next(&r) % 6);
            size_t mb = rk_rand_next(&r) % 3 == 0
                            ? (size_t)(rk_rand_next(&r) % 2000)
                            : 0;
            check_scan(f, m, qs, pk, plen, has_start ? keys[sidx] : NULL,
                       has_start ? lens[sidx] : 0, limit, mb);
        }
        check_pages(f, m, shard, 1 + (uint32_t)(rk_rand_next(&r) % 4));
        if (!ckpt && checkpoints(f) == ck0)
            overlay_scans++;
        if (rk_rand_next(&r) % 25 == 0) {
            /* A reopen: what was in the overlay is replayed. */
            stor_close(f->s);
            f->s = tu_open(f->dir, 0, 0);
        }
    }
    /* Most rounds scanned with their batch still in the open transaction
     * (the others: a committed batch, or the 1 s checkpoint came). */
    assert_true(overlay_scans >= 30);
    for (int i = 0; i < POOL; i++)
        free(keys[i]);
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_scan_merges_overlay, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_scan_prefix, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_many_hidden, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_scan_long_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scan_random_model, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
