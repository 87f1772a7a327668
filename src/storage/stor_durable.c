/* Checkpoint durability: the data file's sync off the storage thread.
 *
 * A checkpoint commits the open LMDB transaction WITHOUT a sync
 * (MDB_NOSYNC set on the env for that commit: the dirty pages and the
 * meta page go into the page cache). The sync thread (one per store) then runs
 * fdatasync of data.mdb and records the checkpoint as DURABLE in the
 * marker file <data dir>/ckpt; only then does the storage thread recycle
 * the WAL segments below it (stor__wal_release). Until then the WAL holds
 * every batch since the last durable checkpoint, so nothing depends on
 * the one that is not durable yet.
 *
 * A power loss may leave data.mdb with the new meta page but not all of
 * the pages it points to. Three rules make that safe:
 *   1. at most ONE checkpoint is not durable: the next commit waits for
 *      the previous sync (stor__dur_reap(s, true); a timed checkpoint is
 *      put off instead, ckpt_due). So T+2, which would overwrite the meta
 *      slot of the durable checkpoint T, commits only after T+1 is
 *      durable, and T's tree is whole on disk meanwhile: LMDB's writer
 *      takes only free-list records below mdb_find_oldest(), which is at
 *      most its own txn id - 1, so T's pages (freed by T+1) are reused by
 *      T+3 at the earliest;
 *   2. the marker says whether the store is open (DIRTY: a checkpoint
 *      after the one it names may be torn) or was closed cleanly (every
 *      commit synced), and which checkpoint is durable;
 *   3. stor_open reads both meta pages before LMDB does (stor__dur_check):
 *      after a crash (marker DIRTY naming T) a newer meta T+1 is not
 *      trusted; its slot is overwritten with a copy of T's meta (txn id
 *      T-1) so that LMDB opens T, and the WAL replays from T's wal_lsn.
 * Every case: src/storage/README.md, "The checkpoint's sync".
 *
 * MARKER FORMAT: 1024 bytes, two 512-byte slots written in turn (slot =
 * seq % 2; the valid one with the higher seq wins, so a torn write leaves
 * the previous state): "RKCKPT01" | seq u64 | txn u64 | wal_lsn u64 |
 * flags u32 (1 = DIRTY) | crc32c of the 36 bytes before, all big-endian.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "rk_assert.h"
#include "rk_log.h"
#include "stor_int.h"

#define MK_MAGIC "RKCKPT01"
#define MK_SLOT 512
#define MK_LEN 40 /* magic 8, seq 8, txn 8, lsn 8, flags 4, crc 4 */
#define MK_DIRTY 1u

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int errno_rc(int e)
{
    return e == ENOSPC || e == EDQUOT ? RK_ENOSPC
           : e == ENOMEM             ? RK_ENOMEM
                                     : RK_EIO;
}

/* ------------------------------------------------------------ marker */

struct mk {
    uint64_t seq, txn, lsn;
    uint32_t flags;
};

static void mk_encode(const struct mk *m, uint8_t *p)
{
    memset(p, 0, MK_SLOT);
    memcpy(p, MK_MAGIC, 8);
    stor__put64(p + 8, m->seq);
    stor__put64(p + 16, m->txn);
    stor__put64(p + 24, m->lsn);
    stor__put32(p + 32, m->flags);
    stor__put32(p + 36, stor__crc32c(0, p, 36));
}

static bool mk_decode(const uint8_t *p, struct mk *m)
{
    if (memcmp(p, MK_MAGIC, 8) != 0 ||
        stor__get32(p + 36) != stor__crc32c(0, p, 36))
        return false;
    m->seq = stor__get64(p + 8);
    m->txn = stor__get64(p + 16);
    m->lsn = stor__get64(p + 24);
    m->flags = stor__get32(p + 32);
    return (m->flags & ~MK_DIRTY) == 0;
}

/* Reads <path>/ckpt: 0 and *have = false if there is none; RK_ECORRUPT
 * (errmsg) if it holds no valid slot. */
static int mk_read(const char *path, struct mk *out, bool *have,
                   char *errmsg)
{
    char file[4096];
    uint8_t buf[2 * MK_SLOT];
    snprintf(file, sizeof file, "%s/ckpt", path);
    *have = false;
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        rk_errf(errmsg, "data dir %s: cannot open ckpt: %s", path,
                strerror(errno));
        return RK_EIO;
    }
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    int e = errno;
    close(fd);
    if (n < 0) {
        rk_errf(errmsg, "data dir %s: cannot read ckpt: %s", path,
                strerror(e));
        return RK_EIO;
    }
    struct mk a, b;
    bool va = n >= MK_SLOT && mk_decode(buf, &a);
    bool vb = n >= 2 * MK_SLOT && mk_decode(buf + MK_SLOT, &b);
    if (!va && !vb) {
        rk_errf(errmsg,
                "data dir %s: the checkpoint marker ckpt is damaged (no "
                "valid slot), so it cannot be told whether data.mdb's "
                "newest checkpoint is whole; if the machine did not lose "
                "power since the store last ran, removing ckpt opens "
                "data.mdb as it is",
                path);
        return RK_ECORRUPT;
    }
    *out = va && (!vb || a.seq > b.seq) ? a : b;
    *have = true;
    return 0;
}

/* Writes the next marker state into its slot and syncs it. */
static int mk_write(struct stor *s, uint64_t txn, uint64_t lsn, bool dirty)
{
    uint8_t buf[MK_SLOT];
    struct mk m = {.seq = ++s->mk_seq, .txn = txn, .lsn = lsn,
                   .flags = dirty ? MK_DIRTY : 0};
    mk_encode(&m, buf);
    off_t off = (off_t)(m.seq % 2) * MK_SLOT;
    if (pwrite(s->ckpt_fd, buf, sizeof buf, off) != (ssize_t)sizeof buf)
        return errno ? errno : EIO;
    if (!s->no_sync && fdatasync(s->ckpt_fd) != 0)
        return errno;
    return 0;
}

/* Creates <path>/ckpt (both slots, atomically: a temporary file renamed
 * and the directory synced) and opens it. */
static int mk_create(struct stor *s, uint64_t txn, uint64_t lsn, bool dirty,
                     char *errmsg)
{
    char file[4096], tmp[4096];
    uint8_t buf[2 * MK_SLOT];
    snprintf(file, sizeof file, "%s/ckpt", s->path);
    snprintf(tmp, sizeof tmp, "%s/ckpt.tmp", s->path);
    struct mk m = {.seq = ++s->mk_seq, .txn = txn, .lsn = lsn,
                   .flags = dirty ? MK_DIRTY : 0};
    memset(buf, 0, sizeof buf);
    mk_encode(&m, buf + (m.seq % 2) * MK_SLOT);
    int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int e = 0;
    if (fd < 0)
        e = errno;
    else if (pwrite(fd, buf, sizeof buf, 0) != (ssize_t)sizeof buf)
        e = errno ? errno : EIO;
    else if (fdatasync(fd) != 0 || rename(tmp, file) != 0)
        e = errno;
    if (e == 0) {
        int dfd = open(s->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) != 0)
            e = errno;
        if (dfd >= 0)
            close(dfd);
    }
    if (e) {
        if (fd >= 0)
            close(fd);
        unlink(tmp);
        rk_errf(errmsg, "data dir %s: cannot create ckpt: %s", s->path,
                strerror(e));
        return errno_rc(e);
    }
    s->ckpt_fd = fd;
    return 0;
}

/* -------------------------------------------------- meta pages (open) */

/* LMDB 0.9 (MDB_DATA_VERSION 1) on a 64-bit host: a meta page is the page
 * header (pgno u64, pad u16, flags u16, lower/upper u16) and MDB_meta:
 * magic u32, version u32, address, mapsize, 2 x MDB_db (48 bytes; the
 * first's md_pad holds the page size), last_pg, txnid. Native order. */
#define LM_PAGEHDR 16
#define LM_P_META 0x08
#define LM_MAGIC 0xBEEFC0DEu
#define LM_VERSION 1u
#define LM_OFF_FLAGS 10
#define LM_OFF_MAGIC (LM_PAGEHDR + 0)
#define LM_OFF_VERSION (LM_PAGEHDR + 4)
#define LM_OFF_PSIZE (LM_PAGEHDR + 24)
#define LM_OFF_TXNID (LM_PAGEHDR + 128)
#define LM_META_END (LM_PAGEHDR + 136)
#define LM_MAX_PSIZE 65536u
_Static_assert(sizeof(size_t) == 8 && sizeof(void *) == 8,
               "the LMDB meta layout read here is the 64-bit one");

struct lm_meta {
    bool valid;
    uint64_t txnid;
    uint32_t psize;
};

static void lm_parse(const uint8_t *p, uint64_t pgno, struct lm_meta *m)
{
    uint64_t pg, txn;
    uint16_t fl;
    uint32_t magic, ver, psize;
    memcpy(&pg, p, 8);
    memcpy(&fl, p + LM_OFF_FLAGS, 2);
    memcpy(&magic, p + LM_OFF_MAGIC, 4);
    memcpy(&ver, p + LM_OFF_VERSION, 4);
    memcpy(&psize, p + LM_OFF_PSIZE, 4);
    memcpy(&txn, p + LM_OFF_TXNID, 8);
    m->valid = pg == pgno && (fl & LM_P_META) && magic == LM_MAGIC &&
               ver == LM_VERSION && psize >= 512 && psize <= LM_MAX_PSIZE &&
               (psize & (psize - 1)) == 0;
    m->txnid = txn;
    m->psize = psize;
}

int stor__dur_check(struct stor *s, char *errmsg)
{
    char file[4096];
    struct mk mk;
    bool have;
    int rc = mk_read(s->path, &mk, &have, errmsg);
    if (rc)
        return rc;
    if (have) {
        s->mk_seq = mk.seq;
        snprintf(file, sizeof file, "%s/ckpt", s->path);
        s->ckpt_fd = open(file, O_RDWR | O_CLOEXEC);
        if (s->ckpt_fd < 0) {
            rk_errf(errmsg, "data dir %s: cannot open ckpt: %s", s->path,
                    strerror(errno));
            return errno_rc(errno);
        }
    }
    if (!have || !(mk.flags & MK_DIRTY))
        return 0; /* closed cleanly (every commit synced), or no marker */
    snprintf(file, sizeof file, "%s/data.mdb", s->path);
    int fd = open(file, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0; /* nothing to check (stor_open says what is wrong) */
        rk_errf(errmsg, "data dir %s: cannot open data.mdb: %s", s->path,
                strerror(errno));
        return errno_rc(errno);
    }
    uint8_t *pg[2] = {malloc(LM_MAX_PSIZE), malloc(LM_MAX_PSIZE)};
    struct lm_meta m[2] = {{0}, {0}};
    uint32_t psize = 0;
    rc = 0;
    if (!pg[0] || !pg[1]) {
        rk_errf(errmsg, "out of memory");
        rc = RK_ENOMEM;
        goto out;
    }
    ssize_t n = pread(fd, pg[0], LM_MAX_PSIZE, 0);
    if (n < 0) {
        rk_errf(errmsg, "data dir %s: cannot read data.mdb: %s", s->path,
                strerror(errno));
        rc = RK_EIO;
        goto out;
    }
    if (n >= LM_META_END)
        lm_parse(pg[0], 0, &m[0]);
    if (n == 0)
        goto out; /* an empty file: stor_open refuses or creates it */
    psize = m[0].valid ? m[0].psize : (uint32_t)sysconf(_SC_PAGESIZE);
    if (pread(fd, pg[1], psize, psize) == (ssize_t)psize)
        lm_parse(pg[1], 1, &m[1]);
    if (m[1].valid && m[0].valid && m[1].psize != psize)
        m[1].valid = false;
    if (!m[0].valid && !m[1].valid) {
        rk_errf(errmsg,
                "data dir %s: data.mdb's meta pages are not in the LMDB 0.9 "
                "format this build knows, so it cannot be told whether its "
                "newest checkpoint is whole",
                s->path);
        rc = RK_ECORRUPT;
        goto out;
    }
    /* Which slot holds the durable checkpoint the marker names? */
    int d = -1;
    for (int i = 0; i < 2; i++)
        if (m[i].valid && m[i].txnid == mk.txn)
            d = i;
    uint64_t newest = 0;
    for (int i = 0; i < 2; i++)
        if (m[i].valid && m[i].txnid > newest)
            newest = m[i].txnid;
    if (d < 0) {
        if (m[0].valid && m[1].valid && m[0].txnid > mk.txn &&
            m[1].txnid > mk.txn) {
            /* Both newer: something else committed (synced) here after
             * the marker; one checkpoint at most is not durable, so
             * LMDB's newest is taken. */
            rk_log(RK_LOG_WARN,
                   "storage %s: data.mdb holds txns %llu and %llu, both "
                   "after the durable checkpoint ckpt names (%llu): written "
                   "by another program; opening the newest",
                   s->path, (unsigned long long)m[0].txnid,
                   (unsigned long long)m[1].txnid,
                   (unsigned long long)mk.txn);
            goto out;
        }
        rk_errf(errmsg,
                "data dir %s: ckpt names checkpoint txn %llu as durable but "
                "data.mdb's meta pages hold %s%llu and %s%llu: data.mdb is "
                "not the file ckpt describes (restored from a backup? then "
                "remove ckpt and wal/ as well)",
                s->path, (unsigned long long)mk.txn,
                m[0].valid ? "" : "(torn) ", (unsigned long long)m[0].txnid,
                m[1].valid ? "" : "(torn) ", (unsigned long long)m[1].txnid);
        rc = RK_ECORRUPT;
        goto out;
    }
    int o = 1 - d;
    if (m[o].valid && m[o].txnid <= mk.txn)
        goto out; /* the durable one is the newest: LMDB opens it */
    /* The other slot holds a newer checkpoint that was never named
     * durable (or is torn): make LMDB open the durable one. */
    memcpy(pg[o], pg[d], psize);
    uint64_t pgno = (uint64_t)o, older = mk.txn > 0 ? mk.txn - 1 : 0;
    memcpy(pg[o], &pgno, 8);
    memcpy(pg[o] + LM_OFF_TXNID, &older, 8);
    if (pwrite(fd, pg[o], psize, (off_t)o * psize) != (ssize_t)psize ||
        fdatasync(fd) != 0) {
        int e = errno ? errno : EIO;
        rk_errf(errmsg,
                "data dir %s: cannot set data.mdb back to its durable "
                "checkpoint: %s",
                s->path, strerror(e));
        rc = errno_rc(e);
        goto out;
    }
    s->ckpt_reverted = true;
    if (m[o].valid)
        rk_log(RK_LOG_WARN,
               "storage %s: data.mdb's newest checkpoint (txn %llu) was "
               "never synced (ckpt names txn %llu, wal lsn %llu): a crash "
               "may have torn it; opening txn %llu instead, the WAL "
               "replays what came after",
               s->path, (unsigned long long)m[o].txnid,
               (unsigned long long)mk.txn, (unsigned long long)mk.lsn,
               (unsigned long long)mk.txn);
    else
        rk_log(RK_LOG_WARN,
               "storage %s: data.mdb's meta page %d is torn; opening the "
               "durable checkpoint ckpt names (txn %llu, wal lsn %llu), the "
               "WAL replays what came after",
               s->path, o, (unsigned long long)mk.txn,
               (unsigned long long)mk.lsn);
out:
    free(pg[0]);
    free(pg[1]);
    close(fd);
    return rc;
}

/* -------------------------------------------------- the sync thread */

/* Writes data.mdb's dirty pages back DUR_CHUNK bytes at a time, each
 * range waited for before the next is started: the device never holds
 * more than one range of them queued, so the WAL's durable writes (which
 * queue behind them, flush included) wait for ~one range, not for the
 * whole checkpoint (30-50 MB under load); and in the IDLE I/O class
 * (dur_main). The fdatasync after it finds little left and makes it
 * durable (and reports any error). */
#define DUR_CHUNK ((off_t)1 << 20)
static void write_back(struct stor *s)
{
    struct stat st;
    if (fstat(s->data_fd, &st) != 0)
        return;
    for (off_t off = 0; off < st.st_size; off += DUR_CHUNK)
        if (sync_file_range(s->data_fd, off, DUR_CHUNK,
                            SYNC_FILE_RANGE_WAIT_BEFORE |
                                SYNC_FILE_RANGE_WRITE |
                                SYNC_FILE_RANGE_WAIT_AFTER) != 0)
            return; /* fdatasync says what failed */
}

/* The job: data.mdb, then the marker naming the checkpoint. */
static int sync_and_mark(struct stor *s, uint64_t txn, uint64_t lsn,
                         char *err, size_t errlen)
{
    int e = 0;
    if (!s->no_sync && s->dur_started)
        write_back(s);
    if (!s->no_sync && fdatasync(s->data_fd) != 0) {
        e = errno;
        snprintf(err, errlen, "fdatasync of data.mdb: %s", strerror(e));
    } else if ((e = mk_write(s, txn, lsn, true)) != 0) {
        snprintf(err, errlen, "writing ckpt: %s", strerror(e));
    }
    return e ? errno_rc(e) : 0;
}

/* ioprio_set(2) (no glibc wrapper): this thread's I/O in the IDLE class,
 * so the block layer serves the WAL's writes first (mq-deadline and BFQ
 * honour it; mq-deadline still serves idle requests within 10 s). */
#define IOPRIO_WHO_PROCESS 1
#define IOPRIO_CLASS_IDLE 3
#define IOPRIO_CLASS_SHIFT 13

static void *dur_main(void *arg)
{
    struct stor *s = arg;
    if (syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0,
                IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT) != 0)
        rk_log(RK_LOG_INFO,
               "storage %s: the checkpoint sync thread keeps the default I/O "
               "priority (ioprio_set: %s)",
               s->path, strerror(errno));
    pthread_mutex_lock(&s->q_mu);
    for (;;) {
        while (!(s->dur_job && !s->dur_done) && !s->dur_stop)
            pthread_cond_wait(&s->dur_cv, &s->q_mu);
        if (!(s->dur_job && !s->dur_done))
            break;
        uint64_t txn = s->dur_txn, lsn = s->dur_lsn;
        pthread_mutex_unlock(&s->q_mu);
        char err[sizeof s->dur_err];
        err[0] = '\0';
        uint64_t t0 = now_us();
        int rc = sync_and_mark(s, txn, lsn, err, sizeof err);
        uint64_t took = now_us() - t0;
        pthread_mutex_lock(&s->mu);
        s->dur_sync_us += took;
        s->n_dur_syncs++;
        pthread_mutex_unlock(&s->mu);
        pthread_mutex_lock(&s->q_mu);
        s->dur_rc = rc;
        memcpy(s->dur_err, err, sizeof err);
        s->dur_done = true;
        pthread_cond_broadcast(&s->dur_cv);
        pthread_cond_signal(&s->q_cv); /* an idle writer reaps it */
    }
    pthread_mutex_unlock(&s->q_mu);
    return NULL;
}

int stor__dur_start(struct stor *s, char *errmsg)
{
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    uint64_t txn = info.me_last_txnid;
    /* Everything committed so far was synced by LMDB (open, replay):
     * sync once more to be sure, and name it durable. From now on the
     * marker says DIRTY: checkpoints commit without a sync. */
    int e = s->no_sync ? 0 : fdatasync(s->data_fd) != 0 ? errno : 0;
    if (e) {
        rk_errf(errmsg, "data dir %s: fdatasync of data.mdb: %s", s->path,
                strerror(e));
        return errno_rc(e);
    }
    int rc;
    if (s->ckpt_fd < 0) {
        if ((rc = mk_create(s, txn, s->ckpt_lsn, true, errmsg)) != 0)
            return rc;
    } else if ((e = mk_write(s, txn, s->ckpt_lsn, true)) != 0) {
        rk_errf(errmsg, "data dir %s: writing ckpt: %s", s->path,
                strerror(e));
        return errno_rc(e);
    }
    s->durable_txn = txn;
    if (pthread_create(&s->dur_thread, NULL, dur_main, s) != 0) {
        rk_errf(errmsg, "cannot start the checkpoint sync thread");
        return RK_ENOMEM;
    }
    s->dur_started = true;
    return 0;
}

void stor__dur_stop(struct stor *s)
{
    if (s->dur_started) {
        pthread_mutex_lock(&s->q_mu);
        s->dur_stop = true;
        pthread_cond_broadcast(&s->dur_cv);
        pthread_mutex_unlock(&s->q_mu);
        pthread_join(s->dur_thread, NULL);
        s->dur_started = false;
    }
    if (s->ckpt_fd >= 0)
        close(s->ckpt_fd);
    s->ckpt_fd = -1;
}

int stor__dur_submit(struct stor *s, uint64_t txn, uint64_t lsn)
{
    if (!s->dur_started) {
        /* At open (the replay): LMDB synced it; named durable at once,
         * since the replay's end recycles the WAL below it. */
        char err[sizeof s->dur_err];
        if (s->ckpt_fd < 0)
            return 0; /* no marker: LMDB's newest is trusted anyway */
        int rc = sync_and_mark(s, txn, lsn, err, sizeof err);
        if (rc)
            rk_log(RK_LOG_ERROR, "storage %s: %s", s->path, err);
        else
            s->durable_txn = txn;
        return rc;
    }
    pthread_mutex_lock(&s->q_mu);
    RK_ASSERT(!s->dur_job && !s->dur_done);
    s->dur_job = true;
    s->dur_txn = txn;
    s->dur_lsn = lsn;
    pthread_cond_broadcast(&s->dur_cv);
    pthread_mutex_unlock(&s->q_mu);
    return 0;
}

int stor__dur_reap(struct stor *s, bool wait)
{
    if (!s->dur_started)
        return 0;
    uint64_t waited = 0;
    pthread_mutex_lock(&s->q_mu);
    if (wait && s->dur_job && !s->dur_done) {
        uint64_t t0 = now_us();
        while (!s->dur_done)
            pthread_cond_wait(&s->dur_cv, &s->q_mu);
        waited = now_us() - t0;
        s->n_dur_waits++;
        s->dur_wait_us += waited;
    }
    if (!s->dur_done) {
        pthread_mutex_unlock(&s->q_mu);
        return 0;
    }
    int rc = s->dur_rc;
    uint64_t txn = s->dur_txn, lsn = s->dur_lsn;
    char err[sizeof s->dur_err];
    memcpy(err, s->dur_err, sizeof err);
    s->dur_job = s->dur_done = false;
    pthread_mutex_unlock(&s->q_mu);
    if (atomic_load(&s->failed))
        return 0; /* fail-stop: nothing is released or reported any more */
    if (rc)
        return stor__fail(s, rc, "syncing checkpoint (LMDB txn %llu): %s",
                          (unsigned long long)txn, err);
    s->durable_txn = txn;
    if (s->wal && (rc = stor__wal_release(s->wal, lsn)) != 0)
        return stor__fail(s, rc, "recycling the WAL: %s",
                          stor__wal_errmsg(s->wal));
    return 0;
}

bool stor__dur_busy(struct stor *s)
{
    pthread_mutex_lock(&s->q_mu);
    bool busy = s->dur_job && !s->dur_done;
    pthread_mutex_unlock(&s->q_mu);
    return busy;
}

void stor__dur_close(struct stor *s)
{
    if (!s->dur_started || atomic_load(&s->failed) || s->open_txn)
        return;
    /* Every checkpoint is durable (reaped, the store did not fail): the
     * marker says CLEAN, so the next open trusts data.mdb's newest meta
     * (a program that edits data.mdb after a clean close stays visible). */
    int e = mk_write(s, s->durable_txn, s->ckpt_lsn, false);
    if (e)
        rk_log(RK_LOG_WARN,
               "storage %s: writing ckpt at close: %s (the next open checks "
               "data.mdb's last checkpoint)",
               s->path, strerror(e));
}
