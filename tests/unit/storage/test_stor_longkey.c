/* Storage tests: keys over LMDB's key limit (up to STOR_MAX_KEY). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "stor_int.h"
#include "stor_test_util.h"

/*
 * Built twice: test_stor_longkey on the real store, and
 * test_stor_longkey_collide with STOR_TEST_HASH_BITS=2 on a store whose key
 * hash keeps 2 bits, where long keys sharing a 480-byte prefix collide in
 * LMDB slots (test_collisions_happen checks that they do).
 */

struct fx {
    char *dir;
    struct stor *s;
    struct stor_batch *b;
    raft_index next[3]; /* next index of shards 1 and 2 */
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->dir = tu_mkdtemp("long");
    f->s = tu_open(f->dir, 0, 0);
    tu_create_shard(f->s, 1);
    tu_create_shard(f->s, 2);
    assert_int_equal(stor_batch_new(&f->b), 0);
    f->next[1] = f->next[2] = 1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    stor_batch_free(f->b);
    int rc = tu_close_rm(f->s, f->dir);
    free(f);
    assert_int_equal(rc, 0);
    return 0;
}

/* Appends and applies one command to a shard; returns its result. */
static struct stor_result run_on(struct fx *f, uint64_t shard,
                                 const struct stor_cmd *c)
{
    struct stor_result res;
    assert_int_equal(tu_run(f->s, shard, 1, f->next[shard]++, c, &res), 0);
    return res;
}

static struct stor_result run(struct fx *f, const struct stor_cmd *c)
{
    return run_on(f, 1, c);
}

static struct stor_result put(struct fx *f, const void *k, size_t klen,
                              const void *v, size_t vlen)
{
    struct stor_cmd c = {.op = STOR_CMD_PUT,
                         .key = k,
                         .klen = (uint32_t)klen,
                         .value = v,
                         .vlen = (uint32_t)vlen};
    return run(f, &c);
}

static struct stor_result del(struct fx *f, const void *k, size_t klen)
{
    struct stor_cmd c = {.op = STOR_CMD_DEL, .key = k, .klen = (uint32_t)klen};
    return run(f, &c);
}

/* A key of len bytes: a fixed pattern (so keys share long prefixes) with
 * `tag` written over its last 8 bytes. */
static uint8_t *mkkey(size_t len, uint64_t tag)
{
    uint8_t *k = malloc(len);
    assert_non_null(k);
    for (size_t i = 0; i < len; i++)
        k[i] = (uint8_t)('a' + i % 23);
    for (size_t i = 0; i < 8 && i < len; i++)
        k[len - 1 - i] = (uint8_t)(tag >> (8 * i));
    return k;
}

static void assert_value(struct stor *s, uint64_t shard, const void *k,
                         size_t klen, const void *v, size_t vlen,
                         uint64_t rev)
{
    struct stor_value got;
    assert_int_equal(stor_kv_get(s, shard, k, klen, &got), 0);
    assert_int_equal(got.len, vlen);
    assert_memory_equal(got.data, v, vlen);
    if (rev)
        assert_int_equal(got.revision, rev);
    free(got.data);
}

static void assert_absent(struct stor *s, uint64_t shard, const void *k,
                          size_t klen)
{
    struct stor_value got;
    assert_int_equal(stor_kv_get(s, shard, k, klen, &got), RK_ENOTFOUND);
}

static const size_t lens[] = {1,   400, 479, 480, 481,  487,  488,  489,
                              495, 496, 497, 503, 504,  511,  512,  513,
                              600, 968, 969, 4096, 4097, 65535, 65536};
#define N_LENS (sizeof lens / sizeof lens[0])

/* put, get, overwrite, cas (value and revision), delete, around the 480
 * threshold and up to the 64 KiB maximum; keys of every length coexist. */
static void test_put_get_del_cas_threshold(void **state)
{
    struct fx *f = *state;
    uint8_t *keys[N_LENS];
    uint64_t rev[N_LENS];
    for (size_t i = 0; i < N_LENS; i++) {
        keys[i] = mkkey(lens[i], 7);
        char v[32];
        int vl = snprintf(v, sizeof v, "v%zu", lens[i]);
        struct stor_result r = put(f, keys[i], lens[i], v, (size_t)vl);
        assert_int_equal(r.status, 0);
        assert_int_equal(r.prev_revision, 0);
        rev[i] = r.revision;
    }
    for (size_t i = 0; i < N_LENS; i++) {
        char v[32];
        int vl = snprintf(v, sizeof v, "v%zu", lens[i]);
        assert_value(f->s, 1, keys[i], lens[i], v, (size_t)vl, rev[i]);
        /* One byte shorter or longer, or one byte changed: other keys. */
        if (lens[i] > 1)
            assert_absent(f->s, 1, keys[i], lens[i] - 1);
        keys[i][lens[i] / 2] ^= 0x40;
        assert_absent(f->s, 1, keys[i], lens[i]);
        keys[i][lens[i] / 2] ^= 0x40;
    }
    /* Overwrite keeps the create revision; CAS on value and revision. */
    for (size_t i = 0; i < N_LENS; i++) {
        struct stor_result r = put(f, keys[i], lens[i], "w", 1);
        assert_int_equal(r.prev_revision, rev[i]);
        struct stor_value got;
        assert_int_equal(stor_kv_get(f->s, 1, keys[i], lens[i], &got), 0);
        assert_int_equal(got.create_revision, rev[i]);
        assert_int_equal(got.revision, r.revision);
        free(got.data);
        rev[i] = r.revision;

        struct stor_cmd c = {.op = STOR_CMD_CAS,
                             .key = keys[i],
                             .klen = (uint32_t)lens[i],
                             .expect = "x",
                             .elen = 1,
                             .value = "y",
                             .vlen = 1};
        r = run(f, &c);
        assert_int_equal(r.status, RK_ECASMISMATCH);
        assert_int_equal(r.revision, rev[i]);
        c.expect = "w";
        r = run(f, &c);
        assert_int_equal(r.status, 0);
        rev[i] = r.revision;
        c.cas_flags = STOR_CAS_REVISION;
        c.expect_rev = rev[i] - 1;
        c.value = "z";
        assert_int_equal(run(f, &c).status, RK_ECASMISMATCH);
        c.expect_rev = rev[i];
        r = run(f, &c);
        assert_int_equal(r.status, 0);
        rev[i] = r.revision;
        assert_value(f->s, 1, keys[i], lens[i], "z", 1, rev[i]);
    }
    assert_int_equal(tu_check(f->s), 0);
    /* Delete every other key; the rest stay. */
    for (size_t i = 0; i < N_LENS; i += 2) {
        struct stor_result r = del(f, keys[i], lens[i]);
        assert_int_equal(r.status, 0);
        assert_int_equal(r.revision, rev[i]);
        assert_int_equal(del(f, keys[i], lens[i]).status, RK_ENOTFOUND);
    }
    for (size_t i = 0; i < N_LENS; i++) {
        if (i % 2 == 0) {
            assert_absent(f->s, 1, keys[i], lens[i]);
        } else {
            assert_value(f->s, 1, keys[i], lens[i], "z", 1, rev[i]);
        }
    }
    /* CAS "must be absent" creates a deleted long key again, and CAS
     * delete removes it. */
    struct stor_cmd c = {.op = STOR_CMD_CAS,
                         .cas_flags = STOR_CAS_REVISION,
                         .key = keys[N_LENS - 1],
                         .klen = (uint32_t)lens[N_LENS - 1],
                         .value = "again",
                         .vlen = 5};
    struct stor_result r = run(f, &c);
    assert_int_equal(r.status, 0);
    c.cas_flags = STOR_CAS_REVISION | STOR_CAS_DELETE;
    c.expect_rev = r.revision;
    assert_int_equal(run(f, &c).status, 0);
    assert_absent(f->s, 1, keys[N_LENS - 1], lens[N_LENS - 1]);
    /* Over the limit: refused by the codec and by reads. */
    uint8_t *big = mkkey(STOR_MAX_KEY + 1, 1);
    struct stor_cmd bc = {
        .op = STOR_CMD_PUT, .key = big, .klen = STOR_MAX_KEY + 1};
    uint8_t small[64];
    size_t len;
    assert_int_equal(stor_cmd_encode(&bc, small, sizeof small, &len),
                     RK_ETOOLARGE);
    struct stor_value got;
    assert_int_equal(stor_kv_get(f->s, 1, big, STOR_MAX_KEY + 1, &got),
                     RK_ETOOLARGE);
    free(big);
    for (size_t i = 0; i < N_LENS; i++)
        free(keys[i]);
}

/* --------------------------------------------------------------- scans */

struct ref {
    uint8_t *k;
    size_t len;
    bool live;
};

static int ref_cmp(const void *a, const void *b)
{
    const struct ref *x = a, *y = b;
    return stor__key_cmp(x->k, x->len, y->k, y->len);
}

/* A key set that crosses the threshold every way: prefixes of each other,
 * many long keys sharing one 480-byte prefix (ordered by hash in LMDB),
 * short keys equal to that prefix, keys differing only after byte 480. */
static size_t make_keyset(struct ref *refs, size_t cap)
{
    size_t n = 0;
    uint8_t *base = mkkey(1200, 0);
    size_t cuts[] = {1, 2, 100, 479, 480, 481, 488, 496, 497, 600, 1200};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        refs[n].k = malloc(cuts[i]);
        memcpy(refs[n].k, base, cuts[i]);
        refs[n++].len = cuts[i];
    }
    /* 40 long keys with base's first 480 bytes, then varying bytes. */
    for (uint32_t i = 0; i < 40 && n < cap; i++) {
        size_t len = 481 + (i * 37) % 700;
        uint8_t *k = malloc(len);
        memcpy(k, base, 480);
        for (size_t j = 480; j < len; j++)
            k[j] = (uint8_t)((i * 2654435761u) >> (j % 24));
        k[480] = (uint8_t)(i * 5);
        refs[n].k = k;
        refs[n++].len = len;
    }
    /* Keys just around the prefix in byte order. */
    for (int d = -1; d <= 1; d += 2) {
        for (size_t len = 470; len <= 520 && n < cap; len += 10) {
            uint8_t *k = malloc(len);
            memcpy(k, base, len);
            k[len - 1] = (uint8_t)(k[len - 1] + d);
            refs[n].k = k;
            refs[n++].len = len;
        }
    }
    free(base);
    qsort(refs, n, sizeof(*refs), ref_cmp);
    /* Drop duplicates. */
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (m && ref_cmp(&refs[m - 1], &refs[i]) == 0) {
            free(refs[i].k);
            continue;
        }
        refs[m++] = refs[i];
    }
    return m;
}

/* Pages through a scan with `limit` and checks it returns exactly the live
 * refs with the prefix, in order, once each. */
static void check_scan(struct stor *s, uint64_t shard, const struct ref *refs,
                       size_t n, const uint8_t *prefix, size_t plen,
                       uint32_t limit, size_t max_bytes)
{
    size_t want = 0;
    uint8_t *after = NULL;
    size_t alen = 0;
    for (int pages = 0; pages < 10000; pages++) {
        struct stor_scan sc;
        assert_int_equal(stor_kv_scan(s, shard, prefix, plen, after, alen,
                                      limit, max_bytes, &sc),
                         0);
        for (uint32_t i = 0; i < sc.n; i++) {
            while (want < n &&
                   (!refs[want].live || refs[want].len < plen ||
                    (plen && memcmp(refs[want].k, prefix, plen) != 0)))
                want++;
            assert_true(want < n);
            assert_int_equal(sc.items[i].klen, refs[want].len);
            assert_memory_equal(sc.items[i].key, refs[want].k, refs[want].len);
            assert_int_equal(sc.items[i].vlen, 4);
            want++;
        }
        if (!sc.more) {
            free(sc.items);
            break;
        }
        assert_true(sc.n > 0);
        /* Resume after the last key, as the server does: key | 0x00. */
        free(after);
        alen = sc.items[sc.n - 1].klen + 1;
        after = malloc(alen);
        memcpy(after, sc.items[sc.n - 1].key, alen - 1);
        after[alen - 1] = 0;
        free(sc.items);
    }
    free(after);
    while (want < n && (!refs[want].live || refs[want].len < plen ||
                        (plen && memcmp(refs[want].k, prefix, plen) != 0)))
        want++;
    assert_int_equal(want, n);
}

static void test_scan_order_across_threshold(void **state)
{
    struct fx *f = *state;
    struct ref refs[128];
    size_t n = make_keyset(refs, 100);
    assert_true(n > 60);
    /* The neighbour shard's keys (long ones too) must never show up. */
    for (size_t i = 0; i < n; i++) {
        refs[i].live = true;
        assert_int_equal(put(f, refs[i].k, refs[i].len, "vvvv", 4).status, 0);
        struct stor_cmd c = {.op = STOR_CMD_PUT,
                             .key = refs[i].k,
                             .klen = (uint32_t)refs[i].len,
                             .value = "2",
                             .vlen = 1};
        assert_int_equal(run_on(f, 2, &c).status, 0);
    }
    uint8_t *base = mkkey(1200, 0);
    size_t plens[] = {0, 1, 100, 479, 480, 481, 490, 600};
    uint32_t limits[] = {0, 1, 3, 7, 1000};
    for (size_t p = 0; p < sizeof plens / sizeof plens[0]; p++) {
        for (size_t l = 0; l < sizeof limits / sizeof limits[0]; l++)
            check_scan(f->s, 1, refs, n, base, plens[p], limits[l], 0);
        /* Byte-budget pages (about two items each). */
        check_scan(f->s, 1, refs, n, base, plens[p], 0, 1000);
    }
    /* A prefix that only long keys have, and one nobody has. */
    uint8_t pfx[482];
    memcpy(pfx, base, 480);
    pfx[480] = 10;
    check_scan(f->s, 1, refs, n, pfx, 481, 2, 0);
    pfx[481] = 0xff;
    check_scan(f->s, 1, refs, n, pfx, 482, 2, 0);
    /* Delete a third, scan again. */
    for (size_t i = 0; i < n; i += 3) {
        refs[i].live = false;
        assert_int_equal(del(f, refs[i].k, refs[i].len).status, 0);
    }
    for (size_t p = 0; p < sizeof plens / sizeof plens[0]; p++)
        check_scan(f->s, 1, refs, n, base, plens[p], 2, 0);
    struct stor_scan sc;
    assert_int_equal(stor_kv_scan(f->s, 2, NULL, 0, NULL, 0, 0, 0, &sc), 0);
    assert_int_equal(sc.n, n);
    free(sc.items);
    /* A start key over the key limit + 1 is refused. */
    uint8_t *huge = mkkey(STOR_MAX_KEY + 2, 0);
    assert_int_equal(stor_kv_scan(f->s, 1, NULL, 0, huge, STOR_MAX_KEY + 2, 0,
                                  0, &sc),
                     RK_ETOOLARGE);
    /* A start of STOR_MAX_KEY + 1 bytes (after a maximal key) is fine. */
    assert_int_equal(stor_kv_scan(f->s, 1, NULL, 0, huge, STOR_MAX_KEY + 1, 0,
                                  0, &sc),
                     0);
    free(sc.items);
    free(huge);
    free(base);
    for (size_t i = 0; i < n; i++)
        free(refs[i].k);
}

/* Counts kv entries of shard 1 that hold more than one key (collisions). */
static uint32_t shared_slots(struct stor *s)
{
    MDB_txn *txn;
    MDB_cursor *cur;
    MDB_val k, v;
    uint32_t shared = 0;
    assert_int_equal(stor__read_begin(s, &txn), 0);
    assert_int_equal(mdb_cursor_open(txn, s->dbi_kv, &cur), 0);
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        struct stor__kvslot it;
        struct stor__kvrec r;
        uint32_t n = 0;
        int x;
        stor__kvslot_begin(&it, &k, &v);
        while ((x = stor__kvslot_next(&it, &r)) == 1)
            n++;
        assert_int_equal(x, 0);
        shared += n > 1;
    }
    mdb_cursor_close(cur);
    stor__read_end(s, txn);
    return shared;
}

/* With the 2-bit hash, 40 long keys sharing a prefix land in 4 slots: the
 * chained entries are written, replaced, deleted one by one. */
static void test_collisions_happen(void **state)
{
    struct fx *f = *state;
    struct ref refs[128];
    size_t n = make_keyset(refs, 100);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(put(f, refs[i].k, refs[i].len, "vvvv", 4).status, 0);
#ifdef STOR_TEST_HASH_BITS
    assert_true(shared_slots(f->s) > 0);
#else
    assert_int_equal(shared_slots(f->s), 0);
#endif
    /* Overwrite each, then delete each, checking all the others. */
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(put(f, refs[i].k, refs[i].len, "wwww", 4).status, 0);
        for (size_t j = 0; j < n; j++)
            assert_value(f->s, 1, refs[j].k, refs[j].len,
                         j <= i ? "wwww" : "vvvv", 4, 0);
    }
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(del(f, refs[i].k, refs[i].len).status, 0);
        for (size_t j = 0; j < n; j++) {
            if (j <= i)
                assert_absent(f->s, 1, refs[j].k, refs[j].len);
            else
                assert_value(f->s, 1, refs[j].k, refs[j].len, "wwww", 4, 0);
        }
    }
    assert_int_equal(shared_slots(f->s), 0);
    struct stor_scan sc;
    assert_int_equal(stor_kv_scan(f->s, 1, NULL, 0, NULL, 0, 0, 0, &sc), 0);
    assert_int_equal(sc.n, 0);
    for (size_t i = 0; i < n; i++)
        free(refs[i].k);
}

/* Exactly-once with a long key: a retried write gets the cached reply. */
static void test_session_long_key(void **state)
{
    struct fx *f = *state;
    uint8_t *k = mkkey(4096, 3);
    struct stor_cmd c = {.op = STOR_CMD_PUT,
                         .client_id = 77,
                         .seq = 1,
                         .key = k,
                         .klen = 4096,
                         .value = "one",
                         .vlen = 3};
    struct stor_result r1 = run(f, &c);
    assert_int_equal(r1.status, 0);
    c.value = "two";
    struct stor_result r2 = run(f, &c);
    assert_true(r2.flags & STOR_RES_DUPLICATE);
    assert_int_equal(r2.revision, r1.revision);
    assert_value(f->s, 1, k, 4096, "one", 3, r1.revision);
    free(k);
}

/* ------------------------------------- snapshots, reopen, backup, format */

static void fill_long(struct fx *f, struct ref *refs, size_t *n)
{
    *n = make_keyset(refs, 100);
    for (size_t i = 0; i < *n; i++) {
        refs[i].live = true;
        assert_int_equal(put(f, refs[i].k, refs[i].len, "vvvv", 4).status, 0);
    }
    /* Plus a maximal key with a big value (in shard 2 so that shard 1 holds
     * the key set alone). */
    uint8_t *k = mkkey(STOR_MAX_KEY, 9);
    uint8_t *v = malloc(200000);
    memset(v, 0x5a, 200000);
    struct stor_cmd c = {.op = STOR_CMD_PUT,
                         .key = k,
                         .klen = STOR_MAX_KEY,
                         .value = v,
                         .vlen = 200000};
    assert_int_equal(run_on(f, 2, &c).status, 0);
    free(k);
    free(v);
}

static void check_long(struct stor *s, struct ref *refs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        assert_value(s, 1, refs[i].k, refs[i].len, "vvvv", 4, 0);
    uint8_t *k = mkkey(STOR_MAX_KEY, 9);
    struct stor_value got;
    assert_int_equal(stor_kv_get(s, 2, k, STOR_MAX_KEY, &got), 0);
    assert_int_equal(got.len, 200000);
    free(got.data);
    free(k);
    assert_int_equal(tu_check(s), 0);
}


static void test_snapshot_roundtrip_reopen_backup(void **state)
{
    struct fx *f = *state;
    struct ref refs[128];
    size_t n;
    fill_long(f, refs, &n);
    /* Small chunks: the key set spans many. */
    char *dir_b = tu_mkdtemp("longb");
    struct stor *b = tu_open(dir_b, 0, 2000);
    tu_create_shard(b, 1);
    tu_create_shard(b, 2);
    assert_int_equal(tu_transfer(f->s, b, 1, 0, NULL, NULL), 0);
    assert_int_equal(tu_transfer(f->s, b, 2, 0, NULL, NULL), 0);
    check_long(b, refs, n);
    for (uint32_t limit = 1; limit <= 5; limit += 4)
        check_scan(b, 1, refs, n, NULL, 0, limit, 0);
    /* Reopen both. */
    stor_close(b);
    b = tu_open(dir_b, 0, 0);
    check_long(b, refs, n);
    stor_close(f->s);
    f->s = tu_open(f->dir, 0, 0);
    check_long(f->s, refs, n);
    /* A backup holds them too. */
    char *dir_c = tu_mkdtemp("longc");
    char bk[512];
    snprintf(bk, sizeof bk, "%s/copy", dir_c);
    assert_int_equal(stor_backup(f->s, bk), 0);
    struct stor *c = tu_open(bk, 0, 0);
    check_long(c, refs, n);
    stor_close(c);
    stor_close(b);
    tu_rmrf(dir_b);
    tu_rmrf(dir_c);
    free(dir_b);
    free(dir_c);
    for (size_t i = 0; i < n; i++)
        free(refs[i].k);
}

/* A chunk of the old format ("RKS1", u16 key lengths) still installs. */
static void test_snapshot_v1_chunk_accepted(void **state)
{
    struct fx *f = *state;
    assert_int_equal(put(f, "old", 3, "gone", 4).status, 0);
    struct raft_snapshot_meta meta = {.index = 50, .term = 4};
    meta.conf.n_voters = 1;
    meta.conf.voters[0] = 1;
    uint8_t ch[256];
    size_t n = 29;
    uint8_t *p = ch + n;
    *p++ = 0; /* INFO */
    stor__put64(p, meta.index);
    stor__put64(p + 8, meta.term);
    p += 16;
    p += stor__conf_encode(&meta.conf, p);
    *p++ = 1; /* KV, u16 klen */
    *p++ = 0;
    *p++ = 3;
    memcpy(p, "abc", 3);
    p += 3;
    stor__put32(p, 16 + 2);
    stor__put64(p + 4, 40);
    stor__put64(p + 12, 41);
    memcpy(p + 20, "hi", 2);
    p += 22;
    *p++ = 3; /* END */
    n = (size_t)(p - ch);
    memcpy(ch, "RKS1", 4);
    stor__put64(ch + 8, meta.index);
    stor__put64(ch + 16, meta.term);
    stor__put32(ch + 24, 0);
    ch[28] = 1;
    stor__put32(ch + 4, stor__crc32c(0, ch + 8, n - 8));
    struct raft_snap_chunk c = {
        .meta = meta, .seq = 0, .last = true, .len = (uint32_t)n, .data = ch};
    uint32_t op, op2;
    stor_batch_reset(f->b);
    assert_int_equal(stor_batch_stage_chunk(f->b, 1, &c, &op), 0);
    assert_int_equal(stor_batch_install_snapshot(f->b, 1, &meta, &op2), 0);
    assert_int_equal(stor_batch_commit(f->s, f->b), 0);
    assert_int_equal(stor_batch_op_status(f->b, op), 0);
    assert_int_equal(stor_batch_op_status(f->b, op2), 0);
    assert_value(f->s, 1, "abc", 3, "hi", 2, 41);
    assert_absent(f->s, 1, "old", 3);
    /* An unknown magic is refused, never read. */
    memcpy(ch, "RKS9", 4);
    stor_batch_reset(f->b);
    assert_int_equal(stor_batch_stage_chunk(f->b, 1, &c, &op), 0);
    assert_int_equal(stor_batch_commit(f->s, f->b), 0);
    assert_int_equal(stor_batch_op_status(f->b, op), RK_EPROTO);
}

static void set_format(const char *dir, uint64_t version)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    uint8_t v[8];
    stor__put64(v, version);
    assert_int_equal(mdb_env_create(&env), 0);
    mdb_env_set_maxdbs(env, 8);
    assert_int_equal(mdb_env_open(env, dir, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &dbi), 0);
    MDB_val k = {.mv_size = 14, .mv_data = "format_version"},
            val = {.mv_size = 8, .mv_data = v};
    assert_int_equal(mdb_put(txn, dbi, &k, &val, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static uint64_t get_format(struct stor *s)
{
    MDB_txn *txn;
    MDB_val k = {.mv_size = 14, .mv_data = "format_version"}, v;
    assert_int_equal(stor__read_begin(s, &txn), 0);
    assert_int_equal(mdb_get(txn, s->dbi_meta, &k, &v), 0);
    uint64_t ver = stor__get64(v.mv_data);
    stor__read_end(s, txn);
    return ver;
}

/* A version 1, 2 or 3 dir is read and marked current; a newer
 * one is refused with a message. */
static void test_format_upgrade(void **state)
{
    struct fx *f = *state;
    assert_int_equal(put(f, "short", 5, "kept", 4).status, 0);
    stor_close(f->s);
    tu_old_log_layout(f->dir, 1);
    f->s = tu_open(f->dir, 0, 0);
    assert_int_equal(get_format(f->s), STOR_FORMAT_VERSION);
    assert_value(f->s, 1, "short", 5, "kept", 4, 0);
    /* A version 2 dir (no WAL) too. */
    stor_close(f->s);
    tu_old_log_layout(f->dir, 2);
    f->s = tu_open(f->dir, 0, 0);
    assert_int_equal(get_format(f->s), STOR_FORMAT_VERSION);
    assert_value(f->s, 1, "short", 5, "kept", 4, 0);
    /* A version 3 dir (every checkpoint synced, no `ckpt` marker) too: it
     * gets its marker. */
    stor_close(f->s);
    tu_old_log_layout(f->dir, 3);
    char mk[4096];
    assert_true(strlen(f->dir) < sizeof mk - 8);
    snprintf(mk, sizeof mk, "%.4000s/ckpt", f->dir);
    assert_int_equal(unlink(mk), 0);
    f->s = tu_open(f->dir, 0, 0);
    assert_int_equal(get_format(f->s), STOR_FORMAT_VERSION);
    assert_int_equal(STOR_FORMAT_VERSION, 4);
    assert_int_equal(access(mk, F_OK), 0);
    assert_value(f->s, 1, "short", 5, "kept", 4, 0);
    stor_close(f->s);
    f->s = NULL;
    set_format(f->dir, STOR_FORMAT_VERSION + 1);
    struct stor_opts o = {.path = f->dir};
    char err[RK_ERRMSG_SIZE];
    struct stor *s = NULL;
    assert_int_equal(stor_open(&o, &s, err), RK_EVERSION);
    assert_null(s);
    assert_non_null(strstr(err, "format version"));
    set_format(f->dir, STOR_FORMAT_VERSION);
    f->s = tu_open(f->dir, 0, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get_del_cas_threshold, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_scan_order_across_threshold,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_collisions_happen, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_session_long_key, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_roundtrip_reopen_backup,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshot_v1_chunk_accepted, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_format_upgrade, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
