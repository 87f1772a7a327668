/* Disk-full test: fill a small tmpfs, fail-stop, keep acked data. */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "rk_log.h"
#include "stor.h"
#include "stor_int.h"

/*
 * The work runs in a child process that enters a private mount namespace
 * (unshare(CLONE_NEWNS)) and mounts a small tmpfs there, so the mount
 * disappears with the child whatever happens. Exit status 77 means the
 * namespace or the mount is not possible here: the test is then skipped
 * with a message.
 */

#define SKIP_STATUS 77
#define ENTRY_BYTES 1000

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t done;
    raft_index acked; /* highest last index of a batch reported durable */
    int first_err;
    bool ok_after_err; /* a success reported after a failure: a bug */
    raft_index batch_last[2];
};

static void on_done(struct stor_batch *b, int status, void *arg)
{
    struct waiter *w = arg;
    (void)b;
    pthread_mutex_lock(&w->mu);
    if (status == 0) {
        if (w->first_err)
            w->ok_after_err = true;
        raft_index l = w->batch_last[w->done % 2];
        if (l > w->acked)
            w->acked = l;
    } else if (!w->first_err) {
        w->first_err = status;
    } else if (status != RK_EFAILSTOP) {
        w->ok_after_err = true; /* later batches must say EFAILSTOP */
    }
    w->done++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

#define CHECK(c)                                                               \
    do {                                                                       \
        if (!(c)) {                                                            \
            fprintf(stderr, "enospc child: check failed line %d: %s\n",        \
                    __LINE__, #c);                                             \
            return 1;                                                          \
        }                                                                      \
    } while (0)

/* Enters a private mount namespace with a 3 MiB tmpfs at mnt. */
static int enter_tmpfs(const char *mnt)
{
    if (unshare(CLONE_NEWNS) != 0) {
        fprintf(stderr, "unshare(CLONE_NEWNS): %s\n", strerror(errno));
        return SKIP_STATUS;
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount("rk-enospc", mnt, "tmpfs", 0, "size=3m") != 0) {
        fprintf(stderr, "mount tmpfs: %s\n", strerror(errno));
        return SKIP_STATUS;
    }
    return 0;
}

/* Fills the disk with batches until the store fail-stops; `where` is the
 * step the test wants to fail ("WAL" preallocating a segment, or the
 * "checkpoint"): small segments are preallocated one after the other long
 * before a checkpoint (every 100 ms) recycles them; one large segment
 * preallocated at open, and a checkpoint after every batch (asked for by
 * a reader of LMDB), leave the rest of the disk to LMDB. */
static int child_fill(const char *mnt, uint64_t seg_bytes, bool ckpt_often,
                      size_t filler_bytes, const char *where)
{
    int erc = enter_tmpfs(mnt);
    if (erc)
        return erc;
    rk_log_set_level(RK_LOG_ERROR);
    char dir[512], filler[600];
    snprintf(dir, sizeof dir, "%s/d", mnt);
    /* Space an operator frees before restarting: the replay of the WAL
     * needs room in LMDB (see the reopen). */
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    FILE *ff = fopen(filler, "w");
    CHECK(ff != NULL);
    static char junk[64 << 10];
    for (size_t n = 0; n < filler_bytes; n += sizeof junk)
        CHECK(fwrite(junk, 1, sizeof junk, ff) == sizeof junk);
    CHECK(fclose(ff) == 0);
    struct stor_opts o = {.path = dir,
                          .cluster_id = 9,
                          .node_id = 1,
                          .create = true,
                          .map_size = 64 << 20,
                          .wal_segment_bytes = seg_bytes};
    char err[RK_ERRMSG_SIZE];
    struct stor *s;
    CHECK(stor_open(&o, &s, err) == 0);
    struct raft_conf_state conf = {.n_voters = 1, .voters = {1}};
    struct stor_batch *bs[2];
    CHECK(stor_batch_new(&bs[0]) == 0 && stor_batch_new(&bs[1]) == 0);
    CHECK(stor_batch_create_shard(bs[0], 1, &conf) == 0);
    CHECK(stor_batch_commit(s, bs[0]) == 0);

    struct waiter w = {.mu = PTHREAD_MUTEX_INITIALIZER,
                       .cv = PTHREAD_COND_INITIALIZER};
    static uint8_t cmd[ENTRY_BYTES + 64];
    static char val[ENTRY_BYTES];
    memset(val, 'x', sizeof val);
    raft_index next = 1;
    uint32_t submitted = 0;
    /* Bounded: 3 MiB fill up long before 2000 batches of 16 KiB. */
    for (uint32_t n = 0; n < 2000; n++) {
        pthread_mutex_lock(&w.mu);
        while (submitted >= 2 && w.done < submitted - 1)
            pthread_cond_wait(&w.cv, &w.mu);
        bool stop = w.first_err != 0;
        pthread_mutex_unlock(&w.mu);
        if (stop)
            break;
        struct stor_batch *b = bs[submitted % 2];
        stor_batch_reset(b);
        for (int j = 0; j < 16; j++, next++) {
            char key[32];
            snprintf(key, sizeof key, "key%llu", (unsigned long long)next);
            struct stor_cmd c = {.op = STOR_CMD_PUT,
                                 .key = key,
                                 .klen = (uint32_t)strlen(key),
                                 .value = val,
                                 .vlen = sizeof val};
            size_t len;
            CHECK(stor_cmd_encode(&c, cmd, sizeof cmd, &len) == 0);
            struct raft_entry e = {
                .term = 1, .index = next, .data = cmd, .len = (uint32_t)len};
            CHECK(stor_batch_append(b, 1, &e, 1) == 0);
            CHECK(stor_batch_apply(b, 1, &e, 1, NULL) == 0);
        }
        pthread_mutex_lock(&w.mu);
        w.batch_last[submitted % 2] = next - 1;
        pthread_mutex_unlock(&w.mu);
        int rc = stor_batch_submit(s, b, on_done, &w);
        if (rc == RK_EFAILSTOP)
            break;
        CHECK(rc == 0);
        submitted++;
        /* A reader of LMDB only: a checkpoint now (see child_fill). */
        uint64_t seq;
        if (ckpt_often)
            (void)stor_session_last_seq(s, 1, 1, &seq);
    }
    pthread_mutex_lock(&w.mu);
    while (w.done < submitted)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    fprintf(stderr,
            "enospc: %u batches, %llu entries acknowledged, first error %s, "
            "message: %s\n",
            submitted, (unsigned long long)w.acked, rk_err_name(w.first_err),
            stor_errmsg(s));
    CHECK(w.first_err == RK_ENOSPC);
    CHECK(!w.ok_after_err);
    CHECK(w.acked >= 16);
    CHECK(stor_failed(s) == RK_ENOSPC);
    CHECK(strstr(stor_errmsg(s), "disk is full") != NULL);
    CHECK(strstr(stor_errmsg(s), where) != NULL);
    /* Nothing is acknowledged any more, through either path. */
    stor_batch_reset(bs[0]);
    struct raft_hard_state hs = {.term = 2};
    CHECK(stor_batch_set_hard_state(bs[0], 1, &hs) == 0);
    CHECK(stor_batch_commit(s, bs[0]) == RK_EFAILSTOP);
    CHECK(stor_batch_submit(s, bs[0], on_done, &w) == RK_EFAILSTOP);
    stor_batch_free(bs[0]);
    stor_batch_free(bs[1]);
    stor_close(s);

    /* The operator frees some space and restarts: everything acknowledged
     * is there (replayed from the WAL, which needs room in LMDB). */
    CHECK(unlink(filler) == 0);
    o.create = false;
    int orc = stor_open(&o, &s, err);
    if (orc)
        fprintf(stderr, "enospc: reopen: %s\n", err);
    CHECK(orc == 0);
    struct stor_shard *sh = stor_shard_get(s, 1);
    CHECK(sh != NULL);
    struct stor_shard_state st;
    CHECK(stor_shard_load(sh, &st) == 0);
    CHECK(st.last_index >= w.acked);
    CHECK(st.applied >= w.acked);
    for (raft_index i = 1; i <= w.acked; i++) {
        char key[32];
        struct stor_value v;
        snprintf(key, sizeof key, "key%llu", (unsigned long long)i);
        CHECK(stor_kv_get(s, 1, key, strlen(key), &v) == 0);
        CHECK(v.len == sizeof val && v.revision == i);
        free(v.data);
        struct raft_entry *e;
        uint32_t ne;
        CHECK(stor_log_entries(sh, i, i + 1, 0, &e, &ne) == 0 && ne == 1);
        free(e);
    }
    stor_close(s);
    umount2(mnt, MNT_DETACH);
    return 0;
}

static int count_rec(void *arg, uint64_t lsn, const void *p, size_t len)
{
    (void)lsn;
    (void)p;
    (void)len;
    (*(uint64_t *)arg)++;
    return 0;
}

/* The WAL on a full disk: a segment that cannot be preallocated is an
 * RK_ENOSPC with a message saying so, leaves no partial file, and the
 * records synced before it all read back. */
static int wal_child(const char *mnt)
{
    int rc = enter_tmpfs(mnt);
    if (rc)
        return rc;
    char dir[512], err[RK_ERRMSG_SIZE] = "";
    snprintf(dir, sizeof dir, "%s/wal", mnt);
    struct stor__wal *w;
    /* A first segment larger than the disk. */
    CHECK(stor__wal_open(dir, 4 << 20, false, &w, err) == 0);
    uint64_t last, n = 0;
    CHECK(stor__wal_replay(w, 0, count_rec, &n, &last) == 0);
    CHECK(stor__wal_start(w, 1) == RK_ENOSPC);
    fprintf(stderr, "wal enospc: %s\n", stor__wal_errmsg(w));
    CHECK(strstr(stor__wal_errmsg(w), "disk is full") != NULL);
    stor__wal_close(w);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls %s | grep -q tmp", dir);
    CHECK(system(cmd) != 0); /* no partial segment left */
    /* Segments of 256 KiB: the disk fills at a segment switch. */
    CHECK(stor__wal_open(dir, 256 << 10, false, &w, err) == 0);
    CHECK(stor__wal_replay(w, 0, count_rec, &n, &last) == 0);
    CHECK(stor__wal_start(w, 1) == 0);
    static uint8_t rec[10000];
    memset(rec, 'r', sizeof rec);
    uint64_t synced = 0, lsn;
    int arc = 0;
    for (int i = 0; i < 1000 && arc == 0; i++) {
        arc = stor__wal_append(w, rec, sizeof rec, &lsn);
        if (arc == 0 && stor__wal_sync(w) == 0)
            synced = lsn;
    }
    fprintf(stderr, "wal enospc: %llu records synced, then %s: %s\n",
            (unsigned long long)synced, rk_err_name(arc),
            stor__wal_errmsg(w));
    CHECK(arc == RK_ENOSPC);
    CHECK(strstr(stor__wal_errmsg(w), "disk is full") != NULL);
    CHECK(synced >= 20);
    stor__wal_close(w);
    CHECK(system(cmd) != 0);
    CHECK(stor__wal_open(dir, 256 << 10, false, &w, err) == 0);
    n = 0;
    CHECK(stor__wal_replay(w, 0, count_rec, &n, &last) == 0);
    CHECK(n == synced && last == synced);
    stor__wal_close(w);
    umount2(mnt, MNT_DETACH);
    return 0;
}

static void run_child(int (*fn)(const char *mnt))
{
    char mnt[] = "/tmp/rk-stor-enospc-XXXXXX";
    assert_non_null(mkdtemp(mnt));
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(fn(mnt));
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    rmdir(mnt); /* the tmpfs lived only in the child's namespace */
    if (WIFEXITED(status) && WEXITSTATUS(status) == SKIP_STATUS) {
        fprintf(stderr, "SKIPPED: cannot mount a private tmpfs here (needs "
                        "CAP_SYS_ADMIN / user namespaces)\n");
        skip();
    }
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static int child_wal(const char *mnt)
{
    return child_fill(mnt, 128 << 10, false, 2 << 20, "WAL");
}

static int child_checkpoint(const char *mnt)
{
    return child_fill(mnt, 2 << 20, true, 512 << 10, "checkpoint");
}

static void test_disk_full_at_wal_prealloc(void **state)
{
    (void)state;
    run_child(child_wal);
}

static void test_disk_full_at_checkpoint(void **state)
{
    (void)state;
    run_child(child_checkpoint);
}

static void test_wal_disk_full(void **state)
{
    (void)state;
    run_child(wal_child);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_disk_full_at_wal_prealloc),
        cmocka_unit_test(test_disk_full_at_checkpoint),
        cmocka_unit_test(test_wal_disk_full),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
