/* The checkpoint's sync off the storage thread (stor_durable.c): the
 * crash window between a checkpoint committed without a sync and its
 * sync, built for real on disk images.
 *
 * A SIGKILL keeps the page cache, so a kill never shows what a power loss
 * can leave: data.mdb with the new meta page but not the pages it points
 * to. These tests build those files: data.mdb copied right after a durable
 * checkpoint C1 (with the marker `ckpt` of that moment), then the next
 * checkpoint C2 committed; the "crash" images are
 *   - the old file with only C2's meta page written into it,
 *   - the new file with C2's meta slot torn,
 *   - the new file whole (what a kill leaves),
 * each with the WAL and the C1 marker. Each must open with every batch the
 * WAL holds, say that it went back to C1, and pass stor_check. */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "stor.h"
#include "stor_test_util.h"

#define SHARD 1
#define N1 50     /* entries in C1 */
#define N2 3000   /* entries after it, in C2 */
#define PER 100   /* entries per batch */
#define VLEN 200

/* out = a "/" b (bounded; the test fails if it does not fit). */
static void pj(char *out, size_t cap, const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    assert_true(la + lb + 2 <= cap);
    memcpy(out, a, la);
    out[la] = '/';
    memcpy(out + la + 1, b, lb + 1);
}

static void read_file(const char *path, uint8_t **buf, size_t *len)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    *len = (size_t)st.st_size;
    *buf = malloc(*len ? *len : 1);
    assert_non_null(*buf);
    size_t off = 0;
    while (off < *len) {
        ssize_t n = pread(fd, *buf + off, *len - off, (off_t)off);
        assert_true(n > 0);
        off += (size_t)n;
    }
    close(fd);
}

static void write_file(const char *path, const uint8_t *buf, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    size_t off = 0;
    while (off < len) {
        ssize_t n = pwrite(fd, buf + off, len - off, (off_t)off);
        assert_true(n > 0);
        off += (size_t)n;
    }
    close(fd);
}

static void copy_file(const char *from, const char *to)
{
    uint8_t *b;
    size_t n;
    read_file(from, &b, &n);
    write_file(to, b, n);
    free(b);
}

/* Copies the regular files of dir `from` into dir `to` (made). */
static void copy_dir(const char *from, const char *to)
{
    char cmd[8192 + 64];
    assert_int_equal(mkdir(to, 0700), 0);
    assert_true(strlen(from) < 4096 && strlen(to) < 4096);
    snprintf(cmd, sizeof cmd, "cp -p '%.4000s'/* '%.4000s'/", from, to);
    assert_int_equal(system(cmd), 0);
}

static void val_of(uint64_t idx, char *val)
{
    memset(val, 'a' + (int)(idx % 26), VLEN);
    snprintf(val, 24, "v%llu.", (unsigned long long)idx);
}

/* Appends and applies entries [first, first+n): PUT key<idx> = val_of.
 * commit: stor_batch_commit (a checkpoint follows), else submitted (no
 * checkpoint: the open transaction goes on). */
static void put_entries(struct stor *s, uint64_t first, uint32_t n,
                        bool commit)
{
    struct stor_batch *b;
    struct raft_entry *ents = calloc(n, sizeof(*ents));
    uint8_t *bufs = malloc((size_t)n * 512);
    assert_non_null(ents);
    assert_non_null(bufs);
    assert_int_equal(stor_batch_new(&b), 0);
    for (uint32_t i = 0; i < n; i++) {
        char key[32], val[VLEN];
        uint64_t idx = first + i;
        snprintf(key, sizeof key, "key%06llu", (unsigned long long)idx);
        val_of(idx, val);
        ents[i].index = idx;
        ents[i].term = 1;
        ents[i].type = RAFT_ENTRY_NORMAL;
        ents[i].data = bufs + (size_t)i * 512;
        ents[i].len = (uint32_t)tu_put_cmd(ents[i].data, 512, 0, 0, key, val,
                                           VLEN);
    }
    struct raft_hard_state hs = {.term = 1, .vote = 1,
                                 .commit = first + n - 1};
    assert_int_equal(stor_batch_append(b, SHARD, ents, n), 0);
    assert_int_equal(stor_batch_set_hard_state(b, SHARD, &hs), 0);
    assert_int_equal(stor_batch_apply(b, SHARD, ents, n, NULL), 0);
    if (commit)
        assert_int_equal(stor_batch_commit(s, b), 0);
    else
        assert_int_equal(tu_submit_wait(s, b), 0);
    stor_batch_free(b);
    free(ents);
    free(bufs);
}

/* Waits (bounded) until every checkpoint since `base` is durable. */
static void wait_durable(struct stor *s, uint64_t base)
{
    for (int i = 0; i < 2000; i++) {
        struct stor_stats st;
        stor_stats(s, &st);
        if (st.checkpoint_syncs >= st.checkpoints - base)
            return;
        struct timespec ts = {0, 5 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fail_msg("the checkpoint sync did not end within 10 s");
}

/* The txn id of each meta page of an LMDB 0.9 file (64-bit layout). */
static void metas(const uint8_t *f, size_t len, uint64_t txn[2],
                  uint32_t *psize)
{
    memcpy(psize, f + 16 + 24, 4);
    assert_true(*psize >= 4096 && len >= 2 * (size_t)*psize);
    memcpy(&txn[0], f + 16 + 128, 8);
    memcpy(&txn[1], f + *psize + 16 + 128, 8);
}

static void check_all(struct stor *s, uint64_t last)
{
    struct stor_shard_state st;
    assert_int_equal(stor_shard_load(stor_shard_get(s, SHARD), &st), 0);
    assert_int_equal(st.applied, last);
    assert_int_equal(st.last_index, last);
    uint64_t probe[] = {1, N1, N1 + 1, (N1 + last) / 2, last};
    for (size_t i = 0; i < sizeof probe / sizeof probe[0]; i++) {
        char key[32], want[VLEN];
        struct stor_value v;
        snprintf(key, sizeof key, "key%06llu", (unsigned long long)probe[i]);
        val_of(probe[i], want);
        assert_int_equal(stor_kv_get(s, SHARD, key, strlen(key), &v), 0);
        assert_int_equal(v.len, VLEN);
        assert_memory_equal(v.data, want, VLEN);
        free(v.data);
    }
    assert_int_equal(tu_check(s), 0);
}

struct fx {
    char *root;
    char dir[4096];
    char old_mdb[4096], old_ckpt[4096]; /* as of the durable C1 */
    uint64_t c2_txn;
    int c2_slot;
    uint32_t psize;
};

/* The store: C1 durable (saved), then C2 with N2 more entries. */
static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->root = tu_mkdtemp("durable");
    if (!f->root)
        return -1;
    pj(f->dir, sizeof f->dir, f->root, "d");
    pj(f->old_mdb, sizeof f->old_mdb, f->root, "old.mdb");
    pj(f->old_ckpt, sizeof f->old_ckpt, f->root, "old.ckpt");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    tu_rmrf(f->root);
    free(f->root);
    free(f);
    return 0;
}

static void make_store(struct fx *f)
{
    char p[4096 + 16];
    struct stor_stats st;
    struct stor *s = tu_open(f->dir, 0, 0);
    stor_stats(s, &st);
    uint64_t base = st.checkpoints;
    tu_create_shard(s, SHARD);
    put_entries(s, 1, N1, true);
    wait_durable(s, base); /* C1 durable: nothing open, nothing pending */
    pj(p, sizeof p, f->dir, "data.mdb");
    copy_file(p, f->old_mdb);
    pj(p, sizeof p, f->dir, "ckpt");
    copy_file(p, f->old_ckpt);
    stor_stats(s, &st);
    uint64_t ck = st.checkpoints;
    for (uint64_t i = N1 + 1; i <= N1 + N2; i += PER)
        put_entries(s, i, PER, i + PER > N1 + N2);
    stor_stats(s, &st);
    assert_int_equal(st.checkpoints, ck + 1); /* C2: ONE commit */
    stor_close(s);
    /* C2 is the newest meta of the closed store's file. */
    uint8_t *nf;
    size_t nlen;
    uint64_t txn[2];
    pj(p, sizeof p, f->dir, "data.mdb");
    read_file(p, &nf, &nlen);
    metas(nf, nlen, txn, &f->psize);
    f->c2_slot = txn[1] > txn[0];
    f->c2_txn = txn[f->c2_slot];
    free(nf);
}

/* A crash image: dir `name` with the WAL, the C1 marker and data.mdb as
 * `mdb` (len bytes). */
static void make_image(struct fx *f, const char *name, const uint8_t *mdb,
                       size_t len, char *out)
{
    char from[4096 + 16], to[4096 + 16];
    pj(out, 4096, f->root, name);
    assert_int_equal(mkdir(out, 0700), 0);
    pj(from, sizeof from, f->dir, "wal");
    pj(to, sizeof to, out, "wal");
    copy_dir(from, to);
    pj(to, sizeof to, out, "ckpt");
    copy_file(f->old_ckpt, to);
    pj(to, sizeof to, out, "data.mdb");
    write_file(to, mdb, len);
}

static void open_reverted(struct fx *f, const char *dir)
{
    struct stor *s = tu_open(dir, 0, 0);
    struct stor_stats st;
    stor_stats(s, &st);
    assert_true(st.checkpoint_reverted);
    assert_true(st.wal_replayed > 0);
    check_all(s, N1 + N2);
    stor_close(s);
    /* Closed cleanly: the next open trusts data.mdb as it is. */
    s = tu_open(dir, 0, 0);
    stor_stats(s, &st);
    assert_false(st.checkpoint_reverted);
    assert_int_equal(st.wal_replayed, 0);
    check_all(s, N1 + N2);
    stor_close(s);
}

/* The old file holding C1 whole, and only C2's meta page on top: C2's
 * pages are the old file's (free or unwritten) pages. */
static void test_old_file_new_meta(void **state)
{
    struct fx *f = *state;
    char p[4096 + 16], img[4096];
    make_store(f);
    uint8_t *old, *nf;
    size_t olen, nlen;
    read_file(f->old_mdb, &old, &olen);
    pj(p, sizeof p, f->dir, "data.mdb");
    read_file(p, &nf, &nlen);
    size_t off = (size_t)f->c2_slot * f->psize;
    assert_true(olen >= off + f->psize);
    memcpy(old + off, nf + off, f->psize);
    /* As the disk could hold it: C2 points past the old file's end or at
     * pages C1 does not use. */
    make_image(f, "old-new-meta", old, olen, img);
    open_reverted(f, img);
    free(old);
    free(nf);
}

/* The new file with C2's meta slot torn: its first half zeros (magic,
 * version, map size, the free DB's record), its txn id whole, so LMDB
 * alone would refuse the file (MDB_INVALID). */
static void test_new_file_torn_meta(void **state)
{
    struct fx *f = *state;
    char p[4096 + 16], img[4096];
    make_store(f);
    uint8_t *nf;
    size_t nlen;
    pj(p, sizeof p, f->dir, "data.mdb");
    read_file(p, &nf, &nlen);
    memset(nf + (size_t)f->c2_slot * f->psize + 16, 0, 72);
    make_image(f, "new-torn-meta", nf, nlen, img);
    open_reverted(f, img);
    free(nf);
}

/* The new file whole (what a SIGKILL leaves: the page cache had it all):
 * it cannot be told from a torn one, so C1 is opened and the WAL replayed
 * over it, which must give the same state. */
static void test_new_file_whole(void **state)
{
    struct fx *f = *state;
    char p[4096 + 16], img[4096];
    make_store(f);
    uint8_t *nf;
    size_t nlen;
    pj(p, sizeof p, f->dir, "data.mdb");
    read_file(p, &nf, &nlen);
    make_image(f, "new-whole", nf, nlen, img);
    open_reverted(f, img);
    free(nf);
    /* The store itself closed cleanly: opened as it is. */
    struct stor *s = tu_open(f->dir, 0, 0);
    struct stor_stats st;
    stor_stats(s, &st);
    assert_false(st.checkpoint_reverted);
    assert_int_equal(st.wal_replayed, 0);
    check_all(s, N1 + N2);
    stor_close(s);
}

static int open_err(const char *dir, char *err)
{
    struct stor_opts o = {.path = dir, .cluster_id = 1, .node_id = 1,
                          .conf_decode = tu_conf_decode};
    struct stor *s = NULL;
    int rc = stor_open(&o, &s, err);
    if (rc == 0)
        stor_close(s);
    return rc;
}

/* A marker the data file does not match (data.mdb restored from another
 * time), and a damaged marker: refused by name, nothing changed. */
static void test_marker_refused(void **state)
{
    struct fx *f = *state;
    char p[4096 + 16], img[4096], err[RK_ERRMSG_SIZE];
    make_store(f);
    /* A fresh store's data.mdb (txn 1) under the C1 marker (txn >= 3). */
    char fresh[4096 + 16];
    pj(fresh, sizeof fresh, f->root, "fresh");
    stor_close(tu_open(fresh, 0, 0));
    pj(p, sizeof p, fresh, "data.mdb");
    uint8_t *ff;
    size_t flen;
    read_file(p, &ff, &flen);
    make_image(f, "mismatch", ff, flen, img);
    assert_int_equal(open_err(img, err), RK_ECORRUPT);
    assert_non_null(strstr(err, "not the file ckpt describes"));
    /* Nothing was changed: the same answer again. */
    assert_int_equal(open_err(img, err), RK_ECORRUPT);
    free(ff);

    /* Both slots of the marker damaged. */
    pj(p, sizeof p, f->dir, "ckpt");
    uint8_t *mk;
    size_t mlen;
    read_file(p, &mk, &mlen);
    assert_int_equal(mlen, 1024);
    mk[20] ^= 1;
    mk[512 + 20] ^= 1;
    write_file(p, mk, mlen);
    free(mk);
    assert_int_equal(open_err(f->dir, err), RK_ECORRUPT);
    assert_non_null(strstr(err, "ckpt is damaged"));
}

/* After a crash the open goes back to C1 only when C2 is newer than the
 * marker; one torn marker slot leaves the other (the previous state). */
static void test_marker_torn_slot(void **state)
{
    struct fx *f = *state;
    char p[4096 + 16];
    make_store(f);
    /* The store closed cleanly: its marker's newest slot says so. Tear
     * that slot: the other one (DIRTY, naming C2 durable) is used, and C2
     * is the newest meta: nothing to go back to. */
    pj(p, sizeof p, f->dir, "ckpt");
    uint8_t *mk;
    size_t mlen;
    read_file(p, &mk, &mlen);
    uint64_t s0 = 0, s1 = 0;
    for (int i = 0; i < 8; i++) {
        s0 = (s0 << 8) | mk[8 + i];
        s1 = (s1 << 8) | mk[512 + 8 + i];
    }
    memset(mk + (s1 > s0 ? 512 : 0) + 16, 0xee, 8);
    write_file(p, mk, mlen);
    free(mk);
    struct stor *s = tu_open(f->dir, 0, 0);
    struct stor_stats st;
    stor_stats(s, &st);
    assert_false(st.checkpoint_reverted);
    check_all(s, N1 + N2);
    stor_close(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_old_file_new_meta, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_new_file_torn_meta, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_new_file_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_marker_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_marker_torn_slot, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
