/* WAL tests: round trip, torn tails, recycled segments, damage. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "rk_buf.h"
#include "stor_int.h"
#include "stor_test_util.h"

#define RHDR 24u /* record header bytes (stor_wal.c) */
#define BLK  4096u

/* Every test runs twice (main): on buffered segments (version 1: records
 * from offset 64, written through the page cache) and on O_DIRECT ones
 * (version 2: records from offset 4096, each write padded to a block). */
static unsigned g_flags;  /* stor__wal_open flags of this round */
static uint64_t g_seg;    /* small segments: many switches */
static uint64_t g_rec0;   /* offset of a segment's first record */
#define SEG  g_seg
#define REC0 g_rec0

/* Record `lsn`'s payload: its length and bytes depend on lsn only. */
static size_t payload(uint64_t lsn, uint8_t *buf, size_t cap)
{
    size_t len = (size_t)((lsn * 37) % 300) + (lsn % 5 == 0 ? 0 : 3);
    assert_true(len <= cap);
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(lsn * 131 + i * 7);
    return len;
}

static size_t rec_bytes(size_t len)
{
    return RHDR + ((len + 7) & ~(size_t)7);
}

struct seen {
    uint64_t first, last, n;
    bool bad;
    uint64_t big_lsn; /* this record is BIG zero bytes */
};

#define BIG (3 * 8192)

static int check_cb(void *arg, uint64_t lsn, const void *p, size_t len)
{
    struct seen *s = arg;
    uint8_t want[512];
    size_t wl = payload(lsn, want, sizeof want);
    if (lsn == s->big_lsn) {
        static const uint8_t zero[BIG];
        if (len != BIG || memcmp(p, zero, BIG) != 0)
            s->bad = true;
        s->last = lsn;
        s->n++;
        return 0;
    }
    if (s->n == 0)
        s->first = lsn;
    else if (lsn != s->last + 1)
        s->bad = true;
    if (len != wl || memcmp(p, want, len) != 0)
        s->bad = true;
    s->last = lsn;
    s->n++;
    return 0;
}

static struct stor__wal *wal_open(const char *dir, uint64_t seg)
{
    struct stor__wal *w;
    char err[RK_ERRMSG_SIZE] = "";
    int rc = stor__wal_open(dir, seg, g_flags, &w, err);
    if (rc)
        fprintf(stderr, "wal open: %s\n", err);
    assert_int_equal(rc, 0);
    return w;
}

/* Replays everything after `from` and checks the payloads (record
 * big_lsn, if not 0, is BIG zero bytes). */
static struct seen replay_big(const char *dir, uint64_t seg, uint64_t from,
                              int want_rc, uint64_t big_lsn)
{
    struct seen s = {.big_lsn = big_lsn};
    uint64_t last;
    struct stor__wal *w = wal_open(dir, seg);
    int rc = stor__wal_replay(w, from, check_cb, &s, &last);
    if (rc != want_rc)
        fprintf(stderr, "replay: %s\n", stor__wal_errmsg(w));
    assert_int_equal(rc, want_rc);
    assert_false(s.bad);
    if (rc == 0)
        assert_int_equal(last, s.n ? s.last : from);
    stor__wal_close(w);
    return s;
}

static struct seen replay(const char *dir, uint64_t seg, uint64_t from,
                          int want_rc)
{
    return replay_big(dir, seg, from, want_rc, 0);
}

static void append_range(struct stor__wal *w, uint64_t lo, uint64_t hi)
{
    uint8_t buf[512];
    for (uint64_t l = lo; l <= hi; l++) {
        uint64_t got;
        size_t len = payload(l, buf, sizeof buf);
        assert_int_equal(stor__wal_append(w, buf, len, &got), 0);
        assert_int_equal(got, l);
    }
}

/* A new journal in the empty `dir` holding records 1..n, synced, open. */
static struct stor__wal *wal_new_seg(const char *dir, uint64_t seg,
                                     uint64_t n)
{
    struct stor__wal *w = wal_open(dir, seg);
    uint64_t last;
    struct seen s = {0};
    assert_int_equal(stor__wal_replay(w, 0, check_cb, &s, &last), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(stor__wal_start(w, 1), 0);
    append_range(w, 1, n);
    assert_int_equal(stor__wal_sync(w), 0);
    return w;
}

static struct stor__wal *wal_new(const char *dir, uint64_t n)
{
    return wal_new_seg(dir, SEG, n);
}

static void seg_path(char *out, size_t cap, const char *dir, uint64_t first)
{
    snprintf(out, cap, "%s/%016llx.wal", dir, (unsigned long long)first);
}

static uint32_t count_prefix(const char *dir, const char *suffix)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls %s | grep -c '%s' || true", dir, suffix);
    FILE *f = popen(cmd, "r");
    unsigned n = 0;
    assert_non_null(f);
    assert_int_equal(fscanf(f, "%u", &n), 1);
    pclose(f);
    return n;
}

static void test_round_trip(void **state)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/wal", (char *)*state);
    struct stor__wal *w = wal_new(dir, 300); /* about 47 KiB: several segments */
    uint64_t last;
    struct seen s = {0};
    struct stor__wal_stats st;
    stor__wal_stats(w, &st);
    assert_true(st.segments >= 4);
    assert_true(st.syncs >= st.segments - 1); /* one per switch at least */
    /* A record bigger than a segment gets a segment of its own. */
    uint8_t *big = calloc(1, BIG);
    uint64_t got;
    assert_non_null(big);
    assert_int_equal(stor__wal_append(w, big, BIG, &got), 0);
    assert_int_equal(got, 301);
    free(big);
    append_range(w, 302, 302); /* and the next one a normal segment */
    stor__wal_close(w);

    /* Everything, then from the middle. */
    s = replay_big(dir, SEG, 0, 0, 301);
    assert_int_equal(s.n, 302);
    assert_int_equal(s.last, 302);
    s = replay_big(dir, SEG, 123, 0, 301);
    assert_int_equal(s.first, 124);
    assert_int_equal(s.n, 302 - 123);

    /* Restart after a checkpoint at 302: the old segments go, LSNs go on. */
    w = wal_open(dir, SEG);
    s = (struct seen){0};
    assert_int_equal(stor__wal_replay(w, 302, check_cb, &s, &last), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(stor__wal_start(w, 303), 0);
    append_range(w, 303, 310);
    assert_int_equal(stor__wal_sync(w), 0);
    stor__wal_close(w);
    struct seen r = replay(dir, SEG, 302, 0);
    assert_int_equal(r.first, 303);
    assert_int_equal(r.last, 310);
    /* At most 2 spares are kept; the rest was deleted. */
    assert_true(count_prefix(dir, "spare-") <= 2);
    assert_int_equal(count_prefix(dir, "\\.wal$"), 1);
}

/* The last record written only up to byte k (the rest still holds what
 * the file held before: zeros, or older bytes) is dropped; every earlier
 * record is kept; writing goes on after it. */
static void torn_tail(const char *base, uint8_t fill)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/torn%02x", base, fill);
    uint8_t buf[512];
    size_t len3 = payload(3, buf, sizeof buf); /* 114 bytes + 6 padding */
    size_t len1 = payload(1, buf, sizeof buf), len2 = payload(2, buf, 512);
    uint64_t off3 = REC0 + rec_bytes(len1) + rec_bytes(len2);
    size_t whole = RHDR + len3; /* bytes that matter */
    for (size_t k = 0; k <= rec_bytes(len3); k++) {
        tu_rmrf(dir);
        struct stor__wal *w = wal_new(dir, 3);
        uint64_t last;
        struct seen s = {0};
        stor__wal_close(w);
        /* Tear record 3 at byte k. */
        seg_path(path, sizeof path, dir, 1);
        int fd = open(path, O_RDWR);
        assert_true(fd >= 0);
        uint8_t junk[1024];
        memset(junk, fill, sizeof junk);
        size_t n = rec_bytes(len3) - k;
        if (n > 0)
            assert_int_equal(pwrite(fd, junk, n, (off_t)(off3 + k)),
                             (ssize_t)n);
        close(fd);
        /* The padding is not covered by the crc. */
        uint64_t want = k >= whole ? 3 : 2;
        struct seen r = replay(dir, SEG, 0, 0);
        assert_int_equal(r.n, want);
        /* Recovery: checkpoint at the last record, write on. */
        w = wal_open(dir, SEG);
        s = (struct seen){0};
        assert_int_equal(stor__wal_replay(w, 0, check_cb, &s, &last), 0);
        assert_int_equal(last, want);
        assert_int_equal(stor__wal_start(w, want + 1), 0);
        append_range(w, want + 1, want + 5);
        assert_int_equal(stor__wal_sync(w), 0);
        stor__wal_close(w);
        r = replay(dir, SEG, want, 0);
        assert_int_equal(r.first, want + 1);
        assert_int_equal(r.last, want + 5);
    }
}

static void test_torn_tail_every_offset(void **state)
{
    torn_tail(*state, 0x00);
    torn_tail(*state, 0x5a);
}

/* A recycled segment keeps its old records past the new ones: the reader
 * stops at the first of them, even where its lsn is the expected one at
 * its offset (a new segment starting at the lsn an old one did: the salt
 * tells them apart). */
static void test_recycled_segment(void **state)
{
    char dir[512], path[600], spare[600];
    snprintf(dir, sizeof dir, "%s/wal", (char *)*state);
    struct stor__wal *w = wal_new(dir, 200);
    uint64_t last;
    struct seen s = {0};
    struct stor__wal_stats st;
    stor__wal_stats(w, &st);
    uint64_t made = st.segments_made;
    /* Checkpoint at 150: the segments below go to the spares. */
    assert_int_equal(stor__wal_release(w, 150), 0);
    stor__wal_stats(w, &st);
    assert_int_equal(st.spares, 2);
    uint32_t n_segs = st.segments;
    /* The next two switches reuse them, the later ones preallocate. */
    append_range(w, 201, 400);
    assert_int_equal(stor__wal_sync(w), 0);
    stor__wal_stats(w, &st);
    assert_true(st.segments >= n_segs + 3);
    assert_int_equal(st.spares, 0);
    assert_int_equal(st.segments_made - made, st.segments - n_segs - 2);
    stor__wal_close(w);
    struct seen r = replay(dir, SEG, 150, 0);
    assert_int_equal(r.first, 151);
    assert_int_equal(r.last, 400);

    /* The same first lsn twice: lsn 1..30 in a segment, which then becomes
     * a spare as if none of it had been durable; the new segment 1 is
     * that file, with records 1..3 of the same sizes at the same offsets,
     * followed by the old 4..30. */
    tu_rmrf(dir);
    w = wal_open(dir, SEG);
    assert_int_equal(stor__wal_replay(w, 0, check_cb, &s, &last), 0);
    assert_int_equal(stor__wal_start(w, 1), 0);
    append_range(w, 1, 30);
    assert_int_equal(stor__wal_sync(w), 0);
    stor__wal_close(w);
    seg_path(path, sizeof path, dir, 1);
    snprintf(spare, sizeof spare, "%s/spare-0", dir);
    assert_int_equal(rename(path, spare), 0);
    w = wal_open(dir, SEG);
    s = (struct seen){0};
    assert_int_equal(stor__wal_replay(w, 0, check_cb, &s, &last), 0);
    assert_int_equal(s.n, 0);
    assert_int_equal(stor__wal_start(w, 1), 0);
    stor__wal_stats(w, &st);
    assert_int_equal(st.segments_made, 0); /* the spare was reused */
    append_range(w, 1, 3);
    assert_int_equal(stor__wal_sync(w), 0);
    stor__wal_close(w);
    r = replay(dir, SEG, 0, 0);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.last, 3);
}

/* Damage that loses durable records is an error, never a silent gap. */
static void test_damage(void **state)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/wal", (char *)*state);
    struct stor__wal *w = wal_new(dir, 200);
    stor__wal_close(w);

    /* Find the second segment's first lsn: it follows the first's last. */
    struct seen all = replay(dir, SEG, 0, 0);
    assert_int_equal(all.n, 200);
    uint64_t second = 0;
    for (uint64_t l = 2; l <= 200 && !second; l++) {
        seg_path(path, sizeof path, dir, l);
        if (access(path, F_OK) == 0)
            second = l;
    }
    assert_true(second > 0);

    /* A record in the middle of segment 1 torn: the records after it (in
     * segment 1 and the later segments) were durable: RK_ECORRUPT. */
    seg_path(path, sizeof path, dir, 1);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t b = 0xff;
    assert_int_equal(pwrite(fd, &b, 1, (off_t)(REC0 + RHDR)), 1); /* rec 1 */
    close(fd);
    replay(dir, SEG, 0, RK_ECORRUPT);
    /* ... unless the checkpoint covers segment 1. */
    struct seen r = replay(dir, SEG, second - 1, 0);
    assert_int_equal(r.first, second);
    assert_int_equal(r.last, 200);

    /* A bad segment header. */
    seg_path(path, sizeof path, dir, second);
    fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, &b, 1, 20), 1);
    close(fd);
    char err[RK_ERRMSG_SIZE];
    assert_int_equal(stor__wal_open(dir, SEG, g_flags, &w, err), RK_ECORRUPT);
    assert_non_null(strstr(err, "bad segment header"));

    /* A missing middle segment. */
    assert_int_equal(unlink(path), 0);
    replay(dir, SEG, second - 1, RK_ECORRUPT);

    /* Starting without replaying, or over unreplayed records, is refused. */
    w = wal_open(dir, SEG);
    assert_int_equal(stor__wal_start(w, 1), RK_EINVAL);
    stor__wal_close(w);
    /* A segment size that is not a multiple of 4096. */
    assert_int_equal(stor__wal_open(dir, 5000, g_flags, &w, err), RK_EINVAL);
}


/* ------------------------------------------------ O_DIRECT segments only */

/* Whether `dir` (created) takes O_DIRECT: the probe the WAL makes. */
static bool dir_takes_odirect(const char *dir)
{
    char path[600];
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/probe-test", dir);
    int fd = open(path, O_RDWR | O_CREAT | O_DIRECT, 0600);
    if (fd >= 0) {
        close(fd);
        unlink(path);
    }
    return fd >= 0;
}

static void read_at(const char *path, void *buf, size_t n, uint64_t off)
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, buf, n, (off_t)off), (ssize_t)n);
    close(fd);
}

static void write_at(const char *path, const void *buf, size_t n, uint64_t off)
{
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
    close(fd);
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
           p[3];
}

/* Offset just past records lo..hi laid end to end from `off`. */
static uint64_t after_recs(uint64_t off, uint64_t lo, uint64_t hi)
{
    uint8_t buf[512];
    for (uint64_t l = lo; l <= hi; l++)
        off += rec_bytes(payload(l, buf, sizeof buf));
    return off;
}

/* The layout: records from block 1; a group (one sync, or one write
 * without a sync) starts on a block boundary and ends with a padding
 * marker ("RKWP") and zeros up to the next; a later group never changes
 * an earlier group's blocks; everything reads back, also after a group
 * that ended in the middle of a block and a reopen. */
static void test_direct_layout(void **state)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/wal", (char *)*state);
    if (!dir_takes_odirect(dir)) {
        fprintf(stderr, "SKIPPED: %s takes no O_DIRECT\n", dir);
        skip();
    }
    uint64_t seg = 1024 * BLK, last; /* 4 MiB: no switch in this test */
    struct seen s = {0};
    struct stor__wal_stats st;
    struct stor__wal *w = wal_open(dir, seg);
    assert_int_equal(stor__wal_replay(w, 0, check_cb, &s, &last), 0);
    assert_int_equal(stor__wal_start(w, 1), 0);
    stor__wal_stats(w, &st);
    assert_true(st.direct);
    uint64_t writes0 = st.writes;

    /* Group 1: records 1..3, synced: one write of one block. */
    append_range(w, 1, 3);
    stor__wal_stats(w, &st);
    assert_int_equal(st.writes, writes0); /* staged, not written yet */
    assert_int_equal(stor__wal_sync(w), 0);
    stor__wal_stats(w, &st);
    assert_int_equal(st.writes, writes0 + 1);
    assert_int_equal(st.syncs, 1);
    assert_int_equal(st.file_bytes, BLK);
    assert_int_equal(st.bytes, after_recs(0, 1, 3));
    seg_path(path, sizeof path, dir, 1);
    uint8_t blk1[BLK], b[BLK], hdr[RHDR];
    read_at(path, blk1, BLK, BLK);
    uint64_t end3 = after_recs(BLK, 1, 3);
    assert_true(end3 % BLK != 0);              /* ends mid-block */
    assert_int_equal(be32(blk1), 0x524b5752u); /* "RKWR": record 1 */
    assert_int_equal(be32(blk1 + 12), 1);      /* its lsn (low half) */
    assert_int_equal(be32(blk1 + (end3 - BLK)), 0x524b5750u); /* "RKWP" */
    for (uint64_t i = end3 - BLK + 8; i < BLK; i++)
        assert_int_equal(blk1[i], 0);
    /* It reads back from another handle while the writer is open. */
    struct seen r = replay(dir, seg, 0, 0);
    assert_int_equal(r.n, 3);

    /* Group 2: records 4..5 written without a sync; group 3: record 6,
     * synced. Each starts a block; block 1 is never written again. */
    append_range(w, 4, 5);
    assert_int_equal(stor__wal_write(w), 0);
    append_range(w, 6, 6);
    assert_int_equal(stor__wal_sync(w), 0);
    stor__wal_stats(w, &st);
    assert_int_equal(st.writes, writes0 + 3);
    assert_int_equal(st.syncs, 2);
    assert_int_equal(st.file_bytes, 3 * BLK);
    read_at(path, b, BLK, BLK);
    assert_memory_equal(b, blk1, BLK);
    read_at(path, hdr, RHDR, 2 * BLK);
    assert_int_equal(be32(hdr + 12), 4);
    read_at(path, hdr, RHDR, 3 * BLK);
    assert_int_equal(be32(hdr + 12), 6);
    /* A sync with nothing staged, after a write without one: a flush. */
    append_range(w, 7, 7);
    assert_int_equal(stor__wal_write(w), 0);
    assert_int_equal(stor__wal_sync(w), 0);
    stor__wal_stats(w, &st);
    assert_int_equal(st.syncs, 3);
    assert_int_equal(st.writes, writes0 + 4);
    /* Staged records past 1 MiB are written early (no sync), in the
     * same layout. */
    append_range(w, 8, 8000 + 7);
    stor__wal_stats(w, &st);
    assert_true(st.bytes > ((uint64_t)1 << 20));
    assert_true(st.writes > writes0 + 4);
    assert_int_equal(st.syncs, 3);
    assert_int_equal(st.segments, 1);
    assert_int_equal(stor__wal_sync(w), 0);
    stor__wal_close(w);
    r = replay(dir, seg, 0, 0);
    assert_int_equal(r.n, 8007);

    /* Reopen after the last group ended mid-block: the records are all
     * there; the next segment (a recycled file) holds the new ones. */
    w = wal_open(dir, seg);
    s = (struct seen){0};
    assert_int_equal(stor__wal_replay(w, 0, check_cb, &s, &last), 0);
    assert_false(s.bad);
    assert_int_equal(last, 8007);
    assert_int_equal(stor__wal_start(w, 8008), 0);
    append_range(w, 8008, 8010);
    assert_int_equal(stor__wal_sync(w), 0);
    stor__wal_close(w);
    r = replay(dir, seg, 8007, 0);
    assert_int_equal(r.first, 8008);
    assert_int_equal(r.last, 8010);
}

/* A crash in the middle of a group's write tears only that group's
 * blocks: every record of the groups before it reads back, the reader
 * stops in the torn group, and writing goes on after it. */
static void test_direct_torn_group(void **state)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/wal", (char *)*state);
    if (!dir_takes_odirect(dir)) {
        fprintf(stderr, "SKIPPED: %s takes no O_DIRECT\n", dir);
        skip();
    }
    uint64_t seg = 16 * BLK, last;
    static const uint8_t fills[] = {0x00, 0x5a};
    for (int f = 0; f < 2; f++) {
        /* Group 1: 1..3 (ends mid-block 1); group 2: 4..40 (blocks 2-3).
         * A crash tears group 2's write from a sector on. */
        for (uint64_t tear = 2 * BLK; tear < 4 * BLK; tear += 512) {
            tu_rmrf(dir);
            struct stor__wal *w = wal_open(dir, seg);
            struct seen s = {0};
            assert_int_equal(stor__wal_replay(w, 0, check_cb, &s, &last), 0);
            assert_int_equal(stor__wal_start(w, 1), 0);
            append_range(w, 1, 3);
            assert_int_equal(stor__wal_sync(w), 0);
            append_range(w, 4, 40);
            assert_int_equal(stor__wal_sync(w), 0);
            stor__wal_close(w);
            assert_true(after_recs(2 * BLK, 4, 40) > 3 * BLK);
            assert_true(after_recs(2 * BLK, 4, 40) < 4 * BLK);
            /* The sectors from `tear` on did not make it (old bytes). */
            seg_path(path, sizeof path, dir, 1);
            uint8_t orig[2 * BLK], junk[2 * BLK];
            read_at(path, orig, sizeof orig, 2 * BLK);
            memset(junk, fills[f], sizeof junk);
            write_at(path, junk, 4 * BLK - tear, tear);
            /* Group 1 survives whole, and group 2's records up to the
             * first one that lost a byte that matters (the padding to 8
             * is not covered by the crc). */
            uint64_t want = 3, start = 2 * BLK;
            uint8_t buf[512];
            for (uint64_t l = 4; l <= 40; l++) {
                size_t len = payload(l, buf, sizeof buf);
                bool same = true;
                for (uint64_t o = start; o < start + RHDR + len; o++)
                    if (o >= tear && orig[o - 2 * BLK] != fills[f])
                        same = false;
                if (!same)
                    break;
                want = l;
                start += rec_bytes(len);
            }
            struct seen r = replay(dir, seg, 0, 0);
            assert_int_equal(r.n, want);
            w = wal_open(dir, seg);
            s = (struct seen){0};
            assert_int_equal(stor__wal_replay(w, 0, check_cb, &s, &last), 0);
            assert_int_equal(stor__wal_start(w, last + 1), 0);
            append_range(w, last + 1, last + 4);
            assert_int_equal(stor__wal_sync(w), 0);
            stor__wal_close(w);
            r = replay(dir, seg, last, 0);
            assert_int_equal(r.n, 4);
        }
    }
}

/* A padding marker whose check word is wrong (left by another use of the
 * file, or damaged) ends the chain there. */
static void test_direct_bad_pad(void **state)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/wal", (char *)*state);
    if (!dir_takes_odirect(dir)) {
        fprintf(stderr, "SKIPPED: %s takes no O_DIRECT\n", dir);
        skip();
    }
    uint64_t seg = 16 * BLK;
    struct stor__wal *w = wal_new_seg(dir, seg, 3);
    append_range(w, 4, 6);
    assert_int_equal(stor__wal_sync(w), 0);
    stor__wal_close(w);
    assert_int_equal(replay(dir, seg, 0, 0).n, 6);
    seg_path(path, sizeof path, dir, 1);
    uint8_t m[8];
    uint64_t at = after_recs(BLK, 1, 3);
    read_at(path, m, 8, at);
    assert_int_equal(be32(m), 0x524b5750u);
    m[7] ^= 1;
    write_at(path, m, 8, at);
    assert_int_equal(replay(dir, seg, 0, 0).n, 3);
    /* A marker copied to another offset fails there too. */
    m[7] ^= 1;
    write_at(path, m, 8, at);
    assert_int_equal(replay(dir, seg, 0, 0).n, 6);
    write_at(path, m, 8, after_recs(2 * BLK, 4, 4));
    assert_int_equal(replay(dir, seg, 0, 0).n, 4);
}

static uint32_t seg_version(const char *dir, uint64_t first)
{
    char path[600];
    uint8_t h[12];
    seg_path(path, sizeof path, dir, first);
    read_at(path, h, sizeof h, 0);
    return be32(h + 8);
}

/* Opens `dir` with `flags`, replays after `from` (want: the records
 * there), starts at want_last + 1 and writes n more, synced. */
static uint64_t mode_round(const char *dir, unsigned flags, uint64_t from,
                           uint64_t want_last, uint64_t n)
{
    struct stor__wal *w;
    char err[RK_ERRMSG_SIZE] = "";
    uint64_t last;
    struct seen s = {0};
    assert_int_equal(stor__wal_open(dir, 3 * BLK, flags, &w, err), 0);
    assert_int_equal(stor__wal_replay(w, from, check_cb, &s, &last), 0);
    assert_false(s.bad);
    assert_int_equal(last, want_last);
    assert_int_equal(s.n, want_last - from);
    assert_int_equal(stor__wal_start(w, last + 1), 0);
    struct stor__wal_stats st;
    stor__wal_stats(w, &st);
    assert_int_equal(st.direct, !(flags & STOR__WAL_BUFFERED));
    append_range(w, last + 1, last + n);
    assert_int_equal(stor__wal_sync(w), 0);
    stor__wal_close(w);
    return last + n;
}

/* A directory written with O_DIRECT opened without it (another build or
 * file system: STOR__WAL_BUFFERED here), and back: each reads the
 * other's segments, and recycled files of one kind serve the other. */
static void test_mode_switch(void **state)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s/wal", (char *)*state);
    if (!dir_takes_odirect(dir)) {
        fprintf(stderr, "SKIPPED: %s takes no O_DIRECT\n", dir);
        skip();
    }
    uint64_t last = mode_round(dir, 0, 0, 0, 60); /* O_DIRECT, 1..60 */
    assert_int_equal(seg_version(dir, 1), 2);
    /* Read all of it without O_DIRECT, then write 61..120 buffered. */
    last = mode_round(dir, STOR__WAL_BUFFERED, 0, 60, 60);
    assert_int_equal(seg_version(dir, 61), 1);
    last = mode_round(dir, 0, 60, 120, 60);
    assert_int_equal(seg_version(dir, 121), 2);
    last = mode_round(dir, STOR__WAL_BUFFERED, 120, 180, 1);
    last = mode_round(dir, 0, 180, 181, 1);
    assert_int_equal(last, 182);
    struct seen r = replay(dir, 3 * BLK, 181, 0);
    assert_int_equal(r.n, 1);
}

/* The store's switches: stor_opts.wal_buffered and RINGKV_WAL_IO=buffered
 * turn O_DIRECT off (stor_stats.wal_direct); the data written in one mode
 * is there in the other. */
static void test_store_wal_modes(void **state)
{
    char dir[512], wdir[600];
    snprintf(dir, sizeof dir, "%s/store", (char *)*state);
    snprintf(wdir, sizeof wdir, "%s/wal", dir);
    bool odirect = dir_takes_odirect(dir);
    tu_rmrf(dir);
    if (!odirect)
        fprintf(stderr, "note: %s takes no O_DIRECT: every round is buffered\n",
                dir);
    uint64_t next = 1;
    for (int round = 0; round < 4; round++) {
        /* 0: default, 1: the option, 2: the environment, 3: default. */
        struct stor_opts o = {.path = dir, .cluster_id = 1, .node_id = 1,
                              .create = true, .wal_buffered = round == 1};
        if (round == 2)
            setenv("RINGKV_WAL_IO", "buffered", 1);
        struct stor *st;
        char err[RK_ERRMSG_SIZE] = "";
        int rc = stor_open(&o, &st, err);
        unsetenv("RINGKV_WAL_IO");
        if (rc)
            fprintf(stderr, "stor_open: %s\n", err);
        assert_int_equal(rc, 0);
        if (round == 0)
            tu_create_shard(st, 1);
        assert_int_equal(tu_append_apply(st, 1, next, 20, 1, true), 0);
        next += 20;
        struct stor_stats ss;
        stor_stats(st, &ss);
        assert_int_equal(ss.wal_direct, odirect && (round == 0 || round == 3));
        assert_true(ss.wal_writes > 0);
        assert_true(ss.wal_file_bytes >= ss.wal_bytes);
        struct stor_shard *sh = stor_shard_get(st, 1);
        assert_non_null(sh);
        assert_int_equal(stor_log_last_index(sh), next - 1);
        /* Every put so far reads back: "k<i % 64>" = "v<i>". */
        for (uint64_t i = next > 64 ? next - 64 : 1; i < next; i++) {
            char key[16], val[24];
            struct stor_value v;
            snprintf(key, sizeof key, "k%llu", (unsigned long long)(i % 64));
            snprintf(val, sizeof val, "v%llu", (unsigned long long)i);
            assert_int_equal(stor_kv_get(st, 1, key, strlen(key), &v), 0);
            assert_int_equal(v.len, strlen(val));
            assert_memory_equal(v.data, val, v.len);
            free(v.data);
        }
        assert_int_equal(tu_check(st), 0);
        stor_close(st);
    }
    (void)wdir;
}

/* ------------------------------------------------ the batch as a record */

/* A batch holding every kind of op. */
static void every_op(struct stor_batch *b)
{
    struct raft_conf_state conf = {.n_voters = 3, .voters = {1, 2, 3},
                                   .n_learners = 1, .learners = {4}};
    struct raft_entry ents[3] = {
        {.term = 2, .index = 7, .type = RAFT_ENTRY_NORMAL, .data = "abc",
         .len = 3},
        {.term = 2, .index = 8, .type = RAFT_ENTRY_NORMAL, .data = "", .len = 0},
        {.term = 3, .index = 9, .type = RAFT_ENTRY_CONF, .data = "xyzw",
         .len = 4},
    };
    struct raft_hard_state hs = {.term = 3, .vote = 2, .commit = 8};
    struct raft_snap_chunk ch = {.meta = {.index = 40, .term = 2, .conf = conf},
                                 .seq = 1, .last = true, .data = "chunk",
                                 .len = 5};
    assert_int_equal(stor_batch_create_shard(b, 5, &conf), 0);
    assert_int_equal(stor_batch_append(b, 5, ents, 3), 0);
    assert_int_equal(stor_batch_set_hard_state(b, 5, &hs), 0);
    assert_int_equal(stor_batch_set_conf(b, 5, &conf), 0);
    assert_int_equal(stor_batch_set_applied_conf(b, 6, &conf), 0);
    assert_int_equal(stor_batch_stage_chunk(b, 6, &ch, NULL), 0);
    assert_int_equal(stor_batch_install_snapshot(b, 6, &ch.meta, NULL), 0);
    assert_int_equal(stor_batch_apply(b, 5, ents, 2, NULL), 0);
    assert_int_equal(stor_batch_compact(b, 5, 6), 0);
    assert_int_equal(stor_batch_destroy_shard(b, 9), 0);
}

static void test_batch_record(void **state)
{
    (void)state;
    struct stor_batch *b, *d;
    struct rk_buf e1 = {0}, e2 = {0};
    assert_int_equal(stor_batch_new(&b), 0);
    assert_int_equal(stor_batch_new(&d), 0);
    every_op(b);
    assert_int_equal(stor__batch_encode(b, &e1), 0);
    /* Decoding gives the same batch: it encodes to the same bytes. */
    assert_int_equal(stor__batch_decode(e1.data, e1.len, d), 0);
    assert_int_equal(stor_batch_n_results(d), 2);
    assert_int_equal(stor__batch_encode(d, &e2), 0);
    assert_int_equal(e1.len, e2.len);
    assert_memory_equal(e1.data, e2.data, e1.len);
    /* An empty batch. */
    stor_batch_reset(b);
    assert_int_equal(stor__batch_encode(b, &e2), 0);
    assert_int_equal(stor__batch_decode(e2.data, e2.len, d), 0);
    assert_true(stor_batch_empty(d));

    /* Every truncation and a trailing byte are refused. */
    for (size_t n = 0; n < e1.len; n++)
        assert_int_equal(stor__batch_decode(e1.data, n, d), RK_EPROTO);
    uint8_t *longer = malloc(e1.len + 1);
    assert_non_null(longer);
    memcpy(longer, e1.data, e1.len);
    longer[e1.len] = 0;
    assert_int_equal(stor__batch_decode(longer, e1.len + 1, d), RK_EPROTO);
    free(longer);
    /* Another version, an unknown op kind. */
    e1.data[0] = 2;
    assert_int_equal(stor__batch_decode(e1.data, e1.len, d), RK_EPROTO);
    e1.data[0] = 1;
    uint8_t k0 = e1.data[5];
    e1.data[5] = 200;
    assert_int_equal(stor__batch_decode(e1.data, e1.len, d), RK_EPROTO);
    e1.data[5] = k0;

    /* Fuzz: every byte set to a few values, and seeded random multi-byte
     * damage. Decoding must fail cleanly or give a batch that encodes
     * again (ASan/UBSan watch the reads). */
    static const uint8_t vals[] = {0x00, 0x01, 0x7f, 0x80, 0xff};
    uint64_t rnd = 0x9e3779b97f4a7c15ull;
    uint8_t *m = malloc(e1.len);
    assert_non_null(m);
    for (size_t i = 0; i < e1.len * 5 + 20000; i++) {
        memcpy(m, e1.data, e1.len);
        if (i < e1.len * 5) {
            m[i / 5] = vals[i % 5];
        } else {
            for (int j = 0; j < 4; j++) {
                rnd ^= rnd << 13;
                rnd ^= rnd >> 7;
                rnd ^= rnd << 17;
                m[rnd % e1.len] = (uint8_t)(rnd >> 32);
            }
        }
        size_t len = i % 7 == 0 ? (size_t)(rnd % (e1.len + 1)) : e1.len;
        int rc = stor__batch_decode(m, len, d);
        assert_true(rc == 0 || rc == RK_EPROTO);
        if (rc == 0)
            assert_int_equal(stor__batch_encode(d, &e2), 0);
    }
    free(m);
    rk_buf_free(&e1);
    rk_buf_free(&e2);
    stor_batch_free(b);
    stor_batch_free(d);
}

/* Sets up a round: buffered or O_DIRECT segments. */
static int round_setup(unsigned flags)
{
    g_flags = flags;
    /* An O_DIRECT segment gives its first block to the header: 3 blocks
     * hold about as many records as 2 buffered ones. */
    g_seg = flags & STOR__WAL_BUFFERED ? 8192 : 3 * BLK;
    g_rec0 = flags & STOR__WAL_BUFFERED ? 64 : BLK;
    return 0;
}

static int buffered_setup(void **state)
{
    (void)state;
    return round_setup(STOR__WAL_BUFFERED);
}

static int direct_setup(void **state)
{
    (void)state;
    return round_setup(0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_round_trip, tu_dir_setup,
                                        tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_torn_tail_every_offset,
                                        tu_dir_setup, tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_recycled_segment, tu_dir_setup,
                                        tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_damage, tu_dir_setup,
                                        tu_dir_teardown),
    };
    const struct CMUnitTest direct_tests[] = {
        cmocka_unit_test_setup_teardown(test_direct_layout, tu_dir_setup,
                                        tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_direct_torn_group, tu_dir_setup,
                                        tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_direct_bad_pad, tu_dir_setup,
                                        tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_mode_switch, tu_dir_setup,
                                        tu_dir_teardown),
        cmocka_unit_test_setup_teardown(test_store_wal_modes, tu_dir_setup,
                                        tu_dir_teardown),
    };
    const struct CMUnitTest other[] = {
        cmocka_unit_test(test_batch_record),
    };
    int fails = cmocka_run_group_tests_name("buffered segments", tests,
                                            buffered_setup, NULL);
    fails += cmocka_run_group_tests_name("O_DIRECT segments", tests,
                                         direct_setup, NULL);
    fails += cmocka_run_group_tests_name("O_DIRECT only", direct_tests,
                                         direct_setup, NULL);
    fails += cmocka_run_group_tests_name("records", other, NULL, NULL);
    return fails;
}
