/* The redo journal: preallocated segment files of checksummed records. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "rk_assert.h"
#include "rk_log.h"
#include "stor_int.h"

/*
 * LAYOUT. The directory holds live segments named "<first lsn>.wal" (16 hex
 * digits, so names sort as LSNs do) and spare ones named "spare-<n>"
 * (recycled, never read). A segment is one file of a fixed size, allocated and WRITTEN OUT
 * before its first record goes in (zero-filled when new, the old bytes of
 * a recycled one otherwise), so that the fdatasync of an append flushes
 * data blocks only: no allocation, no unwritten-extent conversion, no
 * journal commit of the file system.
 *
 *   segment header (64 bytes, at offset 0):
 *     "RKWALSEG" | u32 version (1) | u32 crc32c of the 64 bytes with this
 *     field zero | u64 first lsn | u64 file size | u64 salt | zeros
 *   records from offset 64, each aligned to 8 bytes:
 *     u32 magic "RKWR" | u32 len | u64 lsn | u32 crc32c | u32 zero
 *     | len payload bytes | zero padding to 8
 *   the crc covers the segment's salt, the record header (crc field zero)
 *   and the payload.
 *
 * The salt is random, new each time a segment file is (re)used: a record
 * left in a recycled file by its previous use fails its crc even where its
 * lsn is the one expected at its offset (possible after a crash: a new
 * segment may start at the lsn an old one did, when none of the old one's
 * records became durable).
 *
 * All integers are big-endian. LSNs number records 1, 2, 3, ... across
 * segments and restarts (the caller stores the LSN its checkpoint covers;
 * stor__wal_start continues after it); a segment's records are consecutive
 * from its header's first lsn.
 *
 * READING stops cleanly at the first record that is torn (short, bad
 * magic, bad crc) or stale (an lsn other than the next one, or another
 * salt): bytes a recycled segment held before are never taken for new
 * records. The reader then
 * goes on with the next segment only if that one starts with the next lsn
 * (a segment ends where the next record did not fit); a later segment that
 * does not means records that were once durable are missing: RK_ECORRUPT.
 *
 * ORDER OF FLUSHES. A segment switch syncs the old segment's records
 * first, then makes the new one durable (header, data, rename, directory)
 * before any record goes in. So a durable record implies every earlier
 * record is durable too, and a reader's chain is never broken in its
 * middle by a crash.
 *
 * TWO KINDS OF SEGMENT, read alike (a directory may hold both: the kind
 * is chosen per segment when it is made, and stor__wal_start always
 * begins a new one, so switching modes between runs needs nothing):
 *
 *   version 1, BUFFERED: records follow each other from offset 64; each
 *   append is a pwritev into the page cache, a sync is one fdatasync.
 *   Used where O_DIRECT is not available (the probe in stor__wal_start)
 *   or not wanted (STOR__WAL_BUFFERED).
 *
 *   version 2, DIRECT (O_DIRECT): block 0 (4096 bytes) holds the header
 *   only; records from offset 4096. Appends are staged in an aligned
 *   buffer and go to the disk in ONE write per group: at a sync, a
 *   pwritev2(RWF_DSYNC) (O_DSYNC for this write: the data and a cache
 *   flush, no page cache, no metadata since the segment is written out);
 *   for a group that needs no durability (stor__wal_write), the same
 *   write without RWF_DSYNC. Every write starts on a block boundary and
 *   is padded to the next one, so NO BYTE OF A SEGMENT IS EVER WRITTEN
 *   TWICE: a crash in the middle of a write can tear only that write's
 *   blocks, never a record an earlier write made durable (rewriting a
 *   partly filled tail block, as the page cache does for the buffered
 *   kind, is safe only if the disk writes a sector all or nothing). The
 *   padding is a marker at the end of the last record:
 *     u32 magic "RKWP" | u32 crc32c(salt | u64 offset of the marker)
 *   meaning "the records go on at the next 4096-byte boundary"; the rest
 *   of the block is zeros. A marker left by an earlier use of a recycled
 *   file fails its check (another salt), and one at a block boundary is
 *   never written, so neither is followed. The cost is space: a group
 *   takes at least one block (measured in src/storage/README.md).
 */

#define SEG_MAGIC   "RKWALSEG"
#define SEG_V_BUF   1u /* records from SEG_HDR, written through the cache */
#define SEG_V_DIO   2u /* records from BLK, block-padded O_DIRECT writes */
#define SEG_HDR     64u
#define BLK         4096u /* O_DIRECT alignment (buffer, offset, length) */
#define REC_MAGIC   0x524b5752u /* "RKWR" */
#define PAD_MAGIC   0x524b5750u /* "RKWP" */
#define PAD_HDR     8u
#define STAGE_MAX   ((size_t)1 << 20) /* staged bytes written early past it */
#define REC_HDR     24u
#define SPARES_MAX  2u
#define FILL_CHUNK  ((size_t)1 << 20)

struct wal_seg {
    uint64_t first_lsn;
    uint64_t size;
    uint64_t salt;
    uint64_t last_lsn; /* last record in it (first_lsn - 1: none) */
    uint32_t version;  /* SEG_V_BUF or SEG_V_DIO */
};

struct stor__wal {
    char *dir;
    int dir_fd;
    uint64_t seg_size;
    bool no_sync;
    bool buffered; /* STOR__WAL_BUFFERED: version 1 segments only */
    int direct;    /* O_DIRECT probe: -1 not yet, 0 unusable, 1 usable */
    bool replayed; /* the last_lsn of every segment is known */
    /* Live segments, ascending; the last one is the active one once
     * started. */
    struct wal_seg *segs;
    uint32_t n_segs, cap_segs;
    uint32_t n_spares;
    uint64_t spare_next; /* name counter of spares */
    int fd;              /* active segment, -1 before stor__wal_start */
    bool fd_direct;      /* fd has O_DIRECT (a version 2 segment) */
    bool no_rwf;         /* pwritev2(RWF_DSYNC) unsupported: fdatasync */
    bool write_failed;   /* a staged write failed: close writes nothing */
    /* Next write offset in the active segment; in a version 2 segment,
     * block-aligned: where the staged records go. */
    uint64_t off;
    uint8_t *stage; /* version 2: records not yet written (BLK-aligned) */
    size_t stage_len, stage_cap;
    uint64_t next_lsn;
    uint64_t synced_lsn; /* every record <= it is durable */
    uint64_t salt_ctr;
    uint64_t bytes; /* record bytes appended (stats) */
    uint64_t syncs;
    uint64_t writes;     /* write calls into segments (stats) */
    uint64_t file_bytes; /* segment bytes used: records and padding */
    uint64_t segs_made;
    char errmsg[RK_ERRMSG_SIZE];
};

static size_t rec_size(size_t len)
{
    return REC_HDR + ((len + 7) & ~(size_t)7);
}

static uint64_t blk_up(uint64_t n)
{
    return (n + BLK - 1) & ~(uint64_t)(BLK - 1);
}

/* Where a segment's first record is. */
static uint64_t rec_start(const struct wal_seg *sg)
{
    return sg->version == SEG_V_DIO ? BLK : SEG_HDR;
}

/* The check word of a padding marker at offset `off` of a segment. */
static uint32_t pad_check(uint64_t salt, uint64_t off)
{
    uint8_t b[16];
    stor__put64(b, salt);
    stor__put64(b + 8, off);
    return stor__crc32c(0, b, sizeof b);
}

static int from_errno(int e)
{
    switch (e) {
    case ENOSPC:
    case EDQUOT:
        return RK_ENOSPC;
    case ENOMEM:
        return RK_ENOMEM;
    default:
        return RK_EIO;
    }
}

/* Sets w->errmsg and returns the RK_E* code of errno e. */
static int sys_fail(struct stor__wal *w, int e, const char *what,
                    const char *name)
{
    rk_errf(w->errmsg, "WAL %s%s%s: %s: %s", w->dir, name ? "/" : "",
            name ? name : "", what, strerror(e));
    return from_errno(e);
}

static void seg_name(char *buf, size_t cap, uint64_t first_lsn)
{
    snprintf(buf, cap, "%016" PRIx64 ".wal", first_lsn);
}

/* A salt no earlier use of a file had: the clock, the process and a
 * counter, mixed (splitmix64). */
static uint64_t new_salt(struct stor__wal *w)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t z = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
    z ^= ((uint64_t)getpid() << 32) ^ (++w->salt_ctr * 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static int pwrite_all(int fd, const void *p, size_t n, uint64_t off)
{
    const uint8_t *c = p;
    while (n > 0) {
        ssize_t k = pwrite(fd, c, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (k == 0)
            return EIO;
        c += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

static int pread_all(int fd, void *p, size_t n, uint64_t off, size_t *got)
{
    uint8_t *c = p;
    *got = 0;
    while (n > 0) {
        ssize_t k = pread(fd, c, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        if (k == 0)
            return 0;
        c += k;
        n -= (size_t)k;
        off += (uint64_t)k;
        *got += (size_t)k;
    }
    return 0;
}

static void seg_hdr_encode(uint8_t h[SEG_HDR], const struct wal_seg *sg)
{
    memset(h, 0, SEG_HDR);
    memcpy(h, SEG_MAGIC, 8);
    stor__put32(h + 8, sg->version);
    stor__put64(h + 16, sg->first_lsn);
    stor__put64(h + 24, sg->size);
    stor__put64(h + 32, sg->salt);
    stor__put32(h + 12, stor__crc32c(0, h, SEG_HDR));
}

static bool seg_hdr_decode(const uint8_t h[SEG_HDR], struct wal_seg *out)
{
    uint8_t c[SEG_HDR];
    uint32_t v = stor__get32(h + 8);
    if (memcmp(h, SEG_MAGIC, 8) != 0 || (v != SEG_V_BUF && v != SEG_V_DIO))
        return false;
    memcpy(c, h, SEG_HDR);
    memset(c + 12, 0, 4);
    if (stor__crc32c(0, c, SEG_HDR) != stor__get32(h + 12))
        return false;
    out->version = v;
    out->first_lsn = stor__get64(h + 16);
    out->size = stor__get64(h + 24);
    out->salt = stor__get64(h + 32);
    out->last_lsn = out->first_lsn - 1;
    return out->first_lsn > 0 && out->size >= rec_start(out);
}

static uint32_t rec_crc(uint64_t salt, const uint8_t h[REC_HDR], const void *p,
                        size_t len)
{
    uint8_t sb[8], hc[REC_HDR];
    stor__put64(sb, salt);
    memcpy(hc, h, REC_HDR);
    memset(hc + 16, 0, 4);
    uint32_t c = stor__crc32c(0, sb, 8);
    c = stor__crc32c(c, hc, REC_HDR);
    return stor__crc32c(c, p, len);
}

/* ------------------------------------------------------------ reading */

/* Reads the record at *off of segment sg (open as fd) into *buf (grown as
 * needed). 1: a valid record with lsn `want`, *off advanced; 2: a padding
 * marker (version 2), *off advanced to the next block; 0: the chain ends
 * here (torn, stale, past the end); <0: -errno. */
static int read_rec(int fd, const struct wal_seg *sg, uint64_t *off,
                    uint64_t want, uint8_t **buf, size_t *cap, size_t *len)
{
    uint8_t h[REC_HDR];
    size_t got;
    if (*off + PAD_HDR > sg->size)
        return 0;
    int e = pread_all(fd, h, REC_HDR, *off, &got);
    if (e)
        return -e;
    if (sg->version == SEG_V_DIO && got >= PAD_HDR &&
        stor__get32(h) == PAD_MAGIC && *off % BLK != 0 &&
        stor__get32(h + 4) == pad_check(sg->salt, *off)) {
        *off = blk_up(*off);
        return 2;
    }
    if (*off + REC_HDR > sg->size)
        return 0;
    if (got < REC_HDR || stor__get32(h) != REC_MAGIC ||
        stor__get64(h + 8) != want || stor__get32(h + 20) != 0)
        return 0;
    uint32_t n = stor__get32(h + 4);
    if ((uint64_t)n > sg->size - *off - REC_HDR)
        return 0;
    if (n > *cap) {
        uint8_t *nb = realloc(*buf, n);
        if (!nb)
            return -ENOMEM;
        *buf = nb;
        *cap = n;
    }
    e = pread_all(fd, *buf, n, *off + REC_HDR, &got);
    if (e)
        return -e;
    if (got < n || rec_crc(sg->salt, h, *buf, n) != stor__get32(h + 16))
        return 0;
    *len = n;
    *off += rec_size(n);
    return 1;
}

static int seg_cmp(const void *a, const void *b)
{
    const struct wal_seg *x = a, *y = b;
    return x->first_lsn < y->first_lsn ? -1 : x->first_lsn > y->first_lsn;
}

static int segs_reserve(struct stor__wal *w)
{
    if (w->n_segs < w->cap_segs)
        return 0;
    uint32_t nc = w->cap_segs ? w->cap_segs * 2 : 8;
    struct wal_seg *ns = realloc(w->segs, nc * sizeof(*ns));
    if (!ns)
        return RK_ENOMEM;
    w->segs = ns;
    w->cap_segs = nc;
    return 0;
}

static bool is_spare(const char *nm, uint64_t *v)
{
    char tail[2];
    return sscanf(nm, "spare-%" SCNu64 "%1s", v, tail) == 1;
}

/* Lists the directory: live segments (headers checked) and spares. */
static int scan_dir(struct stor__wal *w)
{
    DIR *d = opendir(w->dir);
    if (!d)
        return sys_fail(w, errno, "listing", NULL);
    struct dirent *de;
    int rc = 0;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        const char *nm = de->d_name;
        uint64_t v;
        if (is_spare(nm, &v)) {
            w->n_spares++;
            if (v >= w->spare_next)
                w->spare_next = v + 1;
            continue;
        }
        size_t l = strlen(nm);
        if (l > 4 && strcmp(nm + l - 4, ".tmp") == 0) {
            /* A segment whose preallocation did not finish. */
            if (unlinkat(w->dir_fd, nm, 0) != 0)
                rc = sys_fail(w, errno, "removing", nm);
            continue;
        }
        if (l != 20 || strcmp(nm + 16, ".wal") != 0 ||
            sscanf(nm, "%16" SCNx64, &v) != 1)
            continue;
        int fd = openat(w->dir_fd, nm, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = sys_fail(w, errno, "opening", nm);
            break;
        }
        uint8_t h[SEG_HDR];
        size_t got;
        struct wal_seg sg;
        struct stat st;
        int e = pread_all(fd, h, SEG_HDR, 0, &got);
        if (e == 0 && fstat(fd, &st) != 0)
            e = errno;
        close(fd);
        if (e) {
            rc = sys_fail(w, e, "reading the header of", nm);
            break;
        }
        if (got >= SEG_HDR && memcmp(h, SEG_MAGIC, 8) == 0 &&
            stor__get32(h + 8) > SEG_V_DIO) {
            rk_errf(w->errmsg,
                    "WAL %s/%s: segment version %" PRIu32
                    " is newer than this build reads (%u): written by a "
                    "newer ringkv",
                    w->dir, nm, stor__get32(h + 8), SEG_V_DIO);
            rc = RK_EVERSION;
            break;
        }
        if (got < SEG_HDR || !seg_hdr_decode(h, &sg) || sg.first_lsn != v ||
            sg.size != (uint64_t)st.st_size) {
            rk_errf(w->errmsg,
                    "WAL %s/%s: bad segment header (not a ringkv WAL "
                    "segment, or damaged)",
                    w->dir, nm);
            rc = RK_ECORRUPT;
            break;
        }
        if ((rc = segs_reserve(w)) == 0)
            w->segs[w->n_segs++] = sg;
    }
    closedir(d);
    if (rc == 0 && w->n_segs > 1)
        qsort(w->segs, w->n_segs, sizeof(*w->segs), seg_cmp);
    return rc;
}

int stor__wal_replay(struct stor__wal *w, uint64_t from,
                     int (*cb)(void *arg, uint64_t lsn, const void *p,
                               size_t len),
                     void *arg, uint64_t *last)
{
    uint8_t *buf = NULL;
    size_t cap = 0, len = 0;
    uint64_t expect = from + 1; /* the next record the chain needs */
    int rc = 0;
    *last = from;
    /* While writing (a rerun after a refused batch): staged records are
     * read back from the file like the others. */
    if (w->fd >= 0 && (rc = stor__wal_write(w)) != 0)
        return rc;
    for (uint32_t i = 0; i < w->n_segs && rc == 0; i++) {
        struct wal_seg *sg = &w->segs[i];
        char nm[32];
        seg_name(nm, sizeof nm, sg->first_lsn);
        /* Records expect..first-1 are nowhere: fine if the checkpoint
         * covers them (segments of before it), else durable records were
         * lost (a switch syncs the previous segment first). */
        if (sg->first_lsn > expect && sg->first_lsn - 1 > from) {
            rk_errf(w->errmsg,
                    "WAL %s: records %" PRIu64 "..%" PRIu64
                    " are missing or damaged (segment %s follows)",
                    w->dir, expect, sg->first_lsn - 1, nm);
            rc = RK_ECORRUPT;
            break;
        }
        int fd = openat(w->dir_fd, nm, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            rc = sys_fail(w, errno, "opening", nm);
            break;
        }
        uint64_t off = rec_start(sg), lsn = sg->first_lsn;
        for (;;) {
            int r = read_rec(fd, sg, &off, lsn, &buf, &cap, &len);
            if (r < 0) {
                rc = sys_fail(w, -r, "reading", nm);
                break;
            }
            if (r == 0)
                break;
            if (r == 2)
                continue;
            sg->last_lsn = lsn;
            if (lsn > from) {
                if ((rc = cb(arg, lsn, buf, len)) != 0)
                    break;
                *last = lsn;
            }
            lsn++;
        }
        close(fd);
        if (lsn > expect)
            expect = lsn;
    }
    free(buf);
    if (rc == 0)
        w->replayed = true;
    return rc;
}

/* ------------------------------------------------------------ writing */

static int fsync_dir(struct stor__wal *w)
{
    if (w->no_sync)
        return 0;
    if (fsync(w->dir_fd) != 0)
        return sys_fail(w, errno, "syncing the directory", NULL);
    return 0;
}

/* Renames a spare of sg->size bytes to sg's name with sg's header, made
 * durable. 1: done (*fd_out); 0: no usable spare; <0: error. */
static int seg_recycle(struct stor__wal *w, const struct wal_seg *sg,
                       const char *nm, int *fd_out)
{
    char spare[300] = "";
    uint8_t h[SEG_HDR];
    DIR *d = opendir(w->dir);
    struct dirent *de;
    uint64_t v;
    if (!d)
        return sys_fail(w, errno, "listing", NULL);
    while ((de = readdir(d)) != NULL) {
        if (is_spare(de->d_name, &v)) {
            snprintf(spare, sizeof spare, "%s", de->d_name);
            break;
        }
    }
    closedir(d);
    if (!spare[0]) {
        w->n_spares = 0;
        return 0;
    }
    w->n_spares--;
    int fd = openat(w->dir_fd, spare, O_RDWR | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || (uint64_t)st.st_size != sg->size) {
        /* Not usable (another size): drop it. */
        if (fd >= 0)
            close(fd);
        unlinkat(w->dir_fd, spare, 0);
        return 0;
    }
    seg_hdr_encode(h, sg);
    int e = pwrite_all(fd, h, SEG_HDR, 0);
    if (e == 0 && !w->no_sync && fdatasync(fd) != 0)
        e = errno;
    if (e == 0 && renameat(w->dir_fd, spare, w->dir_fd, nm) != 0)
        e = errno;
    if (e) {
        close(fd);
        return sys_fail(w, e, "recycling", spare);
    }
    *fd_out = fd;
    return 1;
}

/* Makes segment sg durable and open for writing (*fd_out): a recycled
 * spare, or a new file preallocated and written out. */
static int seg_make(struct stor__wal *w, const struct wal_seg *sg, int *fd_out)
{
    char nm[32], tmp[40];
    uint8_t h[SEG_HDR];
    int fd = -1, e, rc;
    seg_name(nm, sizeof nm, sg->first_lsn);
    if (sg->size == w->seg_size && w->n_spares > 0) {
        rc = seg_recycle(w, sg, nm, &fd);
        if (rc < 0)
            return rc;
        if (rc == 1) {
            if ((rc = fsync_dir(w)) != 0) {
                close(fd);
                return rc;
            }
            *fd_out = fd;
            return 0;
        }
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", nm);
    /* An O_DIRECT segment is also filled with O_DIRECT: 64 MiB of zeros
     * copied into the page cache and written back cost the storage
     * thread ~20% of its time in the seconds a new node makes its first
     * segments (64 shards, 256 clients); from an aligned buffer it is
     * little more than the device's time. */
    bool dio = sg->version == SEG_V_DIO && w->direct == 1;
    fd = openat(w->dir_fd, tmp,
                O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | (dio ? O_DIRECT : 0),
                0600);
    if (fd < 0 && dio && errno == EINVAL) {
        dio = false;
        fd = openat(w->dir_fd, tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
                    0600);
    }
    if (fd < 0)
        return sys_fail(w, errno, "creating", tmp);
    uint8_t *zero = NULL;
    if (dio ? posix_memalign((void **)&zero, BLK, FILL_CHUNK) != 0
            : (zero = malloc(FILL_CHUNK)) == NULL) {
        close(fd);
        unlinkat(w->dir_fd, tmp, 0);
        return RK_ENOMEM;
    }
    memset(zero, 0, FILL_CHUNK);
    /* fallocate alone would leave unwritten extents, whose conversion on
     * the first write makes every append's fdatasync a journal commit:
     * the zeros are written out. */
    e = posix_fallocate(fd, 0, (off_t)sg->size);
    for (uint64_t off = 0; e == 0 && off < sg->size; off += FILL_CHUNK) {
        uint64_t n = sg->size - off < FILL_CHUNK ? sg->size - off : FILL_CHUNK;
        e = pwrite_all(fd, zero, (size_t)n, off);
    }
    seg_hdr_encode(h, sg);
    if (e == 0 && dio) {
        /* The header in a block of its own (sizes are multiples of it). */
        memcpy(zero, h, SEG_HDR);
        e = pwrite_all(fd, zero, BLK, 0);
    } else if (e == 0) {
        e = pwrite_all(fd, h, SEG_HDR, 0);
    }
    free(zero);
    if (e == 0 && !w->no_sync && fdatasync(fd) != 0)
        e = errno;
    if (e == 0 && renameat(w->dir_fd, tmp, w->dir_fd, nm) != 0)
        e = errno;
    if (e) {
        close(fd);
        unlinkat(w->dir_fd, tmp, 0);
        rc = sys_fail(w, e, "preallocating", tmp);
        if (rc == RK_ENOSPC)
            rk_errf(w->errmsg,
                    "WAL %s: the disk is full: preallocating a segment of "
                    "%" PRIu64 " KiB failed (%s)",
                    w->dir, sg->size >> 10, strerror(e));
        return rc;
    }
    if ((rc = fsync_dir(w)) != 0) {
        close(fd);
        return rc;
    }
    w->segs_made++;
    *fd_out = fd;
    return 0;
}

/* Decides once whether segments can be written with O_DIRECT (a probe
 * file in the directory): the open must succeed (tmpfs before Linux 6.6
 * and some other file systems say EINVAL), and the alignment the file
 * system asks for (statx STATX_DIOALIGN, where it tells) must divide
 * BLK. Logged once. */
static void probe_direct(struct stor__wal *w)
{
    static const char nm[] = "odirect-probe.tmp"; /* .tmp: removed at open */
    char why[160] = "";
    if (w->direct >= 0)
        return;
    w->direct = 0;
    if (w->buffered) {
        rk_log(RK_LOG_INFO,
               "WAL %s: buffered writes + fdatasync (O_DIRECT turned off)",
               w->dir);
        return;
    }
    int fd = openat(w->dir_fd, nm,
                    O_RDWR | O_CREAT | O_TRUNC | O_DIRECT | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(why, sizeof why, "opening with O_DIRECT: %s",
                 strerror(errno));
    } else {
#ifdef STATX_DIOALIGN
        struct statx sx;
        if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &sx) == 0 &&
            (sx.stx_mask & STATX_DIOALIGN) &&
            (sx.stx_dio_offset_align == 0 || sx.stx_dio_mem_align == 0 ||
             BLK % sx.stx_dio_offset_align != 0 ||
             BLK % sx.stx_dio_mem_align != 0))
            snprintf(why, sizeof why,
                     "direct I/O alignment %" PRIu32 "/%" PRIu32
                     " (memory/offset) does not divide %u",
                     sx.stx_dio_mem_align, sx.stx_dio_offset_align, BLK);
        else
#endif
            w->direct = 1;
        close(fd);
        unlinkat(w->dir_fd, nm, 0);
    }
    if (w->direct)
        rk_log(RK_LOG_INFO,
               "WAL %s: O_DIRECT writes of %u-byte blocks, O_DSYNC at syncs",
               w->dir, BLK);
    else
        rk_log(RK_LOG_INFO,
               "WAL %s: no O_DIRECT here (%s): buffered writes + fdatasync",
               w->dir, why);
}

/* Turns O_DIRECT on for the new version 2 segment open as fd (its header
 * was written and synced through the page cache). If the file system
 * refuses now, the segment is written through the cache instead: the same
 * blocks, then fdatasync. */
static void seg_set_direct(struct stor__wal *w, int fd)
{
    int fl = fcntl(fd, F_GETFL);
    w->fd_direct = fl >= 0 && fcntl(fd, F_SETFL, fl | O_DIRECT) == 0;
    if (!w->fd_direct)
        rk_log(RK_LOG_WARN,
               "WAL %s: O_DIRECT refused on a new segment (%s): its blocks "
               "go through the page cache",
               w->dir, strerror(errno));
}

/* Opens a new active segment for records from w->next_lsn on, holding at
 * least `need` bytes of records. */
static int seg_switch(struct stor__wal *w, size_t need)
{
    int rc;
    if (w->fd >= 0) {
        /* Every record of the old segment is durable before the new one
         * can hold any (see ORDER OF FLUSHES). */
        if ((rc = stor__wal_sync(w)) != 0)
            return rc;
        close(w->fd);
        w->fd = -1;
    }
    if ((rc = segs_reserve(w)) != 0)
        return rc;
    probe_direct(w);
    struct wal_seg sg = {
        .first_lsn = w->next_lsn,
        .size = w->seg_size,
        .salt = new_salt(w),
        .last_lsn = w->next_lsn - 1,
        .version = w->direct == 1 ? SEG_V_DIO : SEG_V_BUF,
    };
    /* A record too big for a segment gets one of its own (a version 2
     * one: padded to whole blocks). */
    if (rec_start(&sg) + need > sg.size)
        sg.size = blk_up(rec_start(&sg) + need);
    int fd;
    if ((rc = seg_make(w, &sg, &fd)) != 0)
        return rc;
    w->fd_direct = false;
    if (sg.version == SEG_V_DIO)
        seg_set_direct(w, fd);
    w->segs[w->n_segs++] = sg;
    w->fd = fd;
    w->off = rec_start(&sg);
    w->stage_len = 0;
    return 0;
}

/* ------------------------------------------- version 2: staged writes */

/* Writes the staged records at w->off, padded to the next block (see
 * LAYOUT), and clears the stage. durable: with the data flushed to the
 * disk before it returns (RWF_DSYNC on the O_DIRECT fd; else fdatasync
 * after). A failure is the writer's end (the caller fail-stops): the
 * stage is kept, nothing is retried. */
static int stage_write(struct stor__wal *w, bool durable)
{
    struct wal_seg *sg = &w->segs[w->n_segs - 1];
    char nm[32];
    if (w->stage_len == 0)
        return 0;
    if (w->write_failed) {
        rk_errf(w->errmsg, "WAL %s: an earlier write failed", w->dir);
        return RK_EIO;
    }
    size_t n = (size_t)blk_up(w->stage_len);
    RK_ASSERT(w->off % BLK == 0 && w->off + n <= sg->size &&
              n <= w->stage_cap);
    if (n > w->stage_len) {
        uint8_t *pad = w->stage + w->stage_len;
        memset(pad, 0, n - w->stage_len);
        stor__put32(pad, PAD_MAGIC);
        stor__put32(pad + 4, pad_check(sg->salt, w->off + w->stage_len));
    }
    bool dsync = durable && !w->no_sync && w->fd_direct && !w->no_rwf;
    size_t done = 0;
    int e = 0;
    while (done < n) {
        struct iovec v = {.iov_base = w->stage + done, .iov_len = n - done};
        ssize_t k = pwritev2(w->fd, &v, 1, (off_t)(w->off + done),
                             dsync ? RWF_DSYNC : 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && dsync && (errno == EOPNOTSUPP || errno == ENOSYS)) {
            w->no_rwf = true; /* an old kernel: fdatasync after */
            dsync = false;
            continue;
        }
        if (k <= 0) {
            e = k < 0 ? errno : EIO;
            break;
        }
        done += (size_t)k;
    }
    if (e == 0 && durable && !w->no_sync && !dsync && fdatasync(w->fd) != 0)
        e = errno;
    if (e) {
        w->write_failed = true;
        seg_name(nm, sizeof nm, sg->first_lsn);
        return sys_fail(w, e, durable ? "writing and syncing" : "writing",
                        nm);
    }
    w->writes++;
    w->file_bytes += n;
    w->off += n;
    w->stage_len = 0;
    if (durable) {
        if (!w->no_sync)
            w->syncs++;
        w->synced_lsn = w->next_lsn - 1;
    }
    return 0;
}

/* Room for `need` more staged bytes plus the padding. */
static int stage_reserve(struct stor__wal *w, size_t need)
{
    size_t want = (size_t)blk_up(w->stage_len + need);
    if (want <= w->stage_cap)
        return 0;
    size_t cap = w->stage_cap ? w->stage_cap : 16 * BLK;
    while (cap < want)
        cap *= 2;
    void *nb;
    if (posix_memalign(&nb, BLK, cap) != 0)
        return RK_ENOMEM;
    if (w->stage_len > 0)
        memcpy(nb, w->stage, w->stage_len);
    free(w->stage);
    w->stage = nb;
    w->stage_cap = cap;
    return 0;
}

/* stor__wal_append for a version 2 segment: the record goes to the
 * stage; the stage is written when the group ends (stor__wal_sync or
 * stor__wal_write), when it grows past STAGE_MAX, or before a switch. */
static int append_staged(struct stor__wal *w, const void *p, size_t len,
                         uint64_t *lsn)
{
    size_t rs = rec_size(len);
    int rc;
    if (w->stage_len > 0 && w->stage_len + rs > STAGE_MAX &&
        (rc = stage_write(w, false)) != 0)
        return rc;
    if (w->off + blk_up(w->stage_len + rs) > w->segs[w->n_segs - 1].size &&
        (rc = seg_switch(w, rs)) != 0)
        return rc;
    if (w->segs[w->n_segs - 1].version != SEG_V_DIO)
        return stor__wal_append(w, p, len, lsn); /* switched to buffered */
    if ((rc = stage_reserve(w, rs)) != 0)
        return rc;
    const struct wal_seg *sg = &w->segs[w->n_segs - 1];
    uint8_t *h = w->stage + w->stage_len;
    stor__put32(h, REC_MAGIC);
    stor__put32(h + 4, (uint32_t)len);
    stor__put64(h + 8, w->next_lsn);
    memset(h + 16, 0, 8);
    if (len > 0)
        memcpy(h + REC_HDR, p, len);
    memset(h + REC_HDR + len, 0, rs - REC_HDR - len);
    stor__put32(h + 16, rec_crc(sg->salt, h, h + REC_HDR, len));
    w->stage_len += rs;
    w->segs[w->n_segs - 1].last_lsn = w->next_lsn;
    w->bytes += rs;
    *lsn = w->next_lsn++;
    return 0;
}

int stor__wal_open(const char *dir, uint64_t seg_size, unsigned flags,
                   struct stor__wal **out, char *errmsg)
{
    *out = NULL;
    if (seg_size == 0)
        seg_size = STOR__WAL_SEG_SIZE;
    if (seg_size < 4096 || seg_size % 4096 != 0) {
        if (errmsg)
            rk_errf(errmsg,
                    "WAL segment size %" PRIu64 " is not a multiple of 4096",
                    seg_size);
        return RK_EINVAL;
    }
    struct stor__wal *w = calloc(1, sizeof(*w));
    if (!w || !(w->dir = strdup(dir))) {
        free(w);
        return RK_ENOMEM;
    }
    w->fd = -1;
    w->dir_fd = -1;
    w->seg_size = seg_size;
    w->no_sync = (flags & STOR__WAL_NO_SYNC) != 0;
    w->buffered = (flags & STOR__WAL_BUFFERED) != 0;
    w->direct = -1;
    w->next_lsn = 1;
    int rc = 0;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        rc = sys_fail(w, errno, "creating the directory", NULL);
    if (rc == 0) {
        w->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (w->dir_fd < 0)
            rc = sys_fail(w, errno, "opening the directory", NULL);
    }
    if (rc == 0)
        rc = scan_dir(w);
    if (rc) {
        if (errmsg)
            rk_errf(errmsg, "%s", w->errmsg);
        stor__wal_close(w);
        return rc;
    }
    w->replayed = w->n_segs == 0;
    *out = w;
    return 0;
}

int stor__wal_start(struct stor__wal *w, uint64_t next_lsn)
{
    RK_ASSERT(w->fd < 0 && next_lsn > 0);
    if (!w->replayed) {
        rk_errf(w->errmsg, "WAL %s: started before it was replayed", w->dir);
        return RK_EINVAL;
    }
    /* Segments whose records all precede next_lsn (every one, after a
     * replay and its checkpoint) are released. Appending after any other
     * would make two records with one lsn: refused. */
    w->next_lsn = next_lsn;
    w->synced_lsn = next_lsn - 1;
    int rc = stor__wal_release(w, next_lsn - 1);
    if (rc)
        return rc;
    if (w->n_segs > 0) {
        rk_errf(w->errmsg,
                "WAL %s: records after lsn %" PRIu64
                " exist: replay and checkpoint them first",
                w->dir, next_lsn - 1);
        return RK_EINVAL;
    }
    return seg_switch(w, 0);
}

int stor__wal_append(struct stor__wal *w, const void *p, size_t len,
                     uint64_t *lsn)
{
    RK_ASSERT(w->fd >= 0);
    if (len > UINT32_MAX - 8) {
        rk_errf(w->errmsg, "WAL %s: a record of %zu bytes is too large",
                w->dir, len);
        return RK_ETOOLARGE;
    }
    size_t rs = rec_size(len);
    int rc;
    if (w->segs[w->n_segs - 1].version == SEG_V_DIO)
        return append_staged(w, p, len, lsn);
    if (w->off + rs > w->segs[w->n_segs - 1].size &&
        (rc = seg_switch(w, rs)) != 0)
        return rc;
    const struct wal_seg *sg = &w->segs[w->n_segs - 1];
    uint8_t h[REC_HDR];
    static const uint8_t pad[8];
    stor__put32(h, REC_MAGIC);
    stor__put32(h + 4, (uint32_t)len);
    stor__put64(h + 8, w->next_lsn);
    memset(h + 16, 0, 8);
    stor__put32(h + 16, rec_crc(sg->salt, h, p, len));
    const struct iovec iov[3] = {
        {.iov_base = h, .iov_len = REC_HDR},
        {.iov_base = (void *)p, .iov_len = len},
        {.iov_base = (void *)pad, .iov_len = rs - REC_HDR - len},
    };
    size_t done = 0;
    while (done < rs) {
        /* A short write resumes where it stopped. */
        struct iovec v[3];
        int nv = 0;
        size_t skip = done;
        for (int i = 0; i < 3; i++) {
            if (skip >= iov[i].iov_len) {
                skip -= iov[i].iov_len;
                continue;
            }
            v[nv].iov_base = (uint8_t *)iov[i].iov_base + skip;
            v[nv].iov_len = iov[i].iov_len - skip;
            skip = 0;
            nv++;
        }
        ssize_t k = pwritev(w->fd, v, nv, (off_t)(w->off + done));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            char nm[32];
            seg_name(nm, sizeof nm, sg->first_lsn);
            return sys_fail(w, k < 0 ? errno : EIO, "appending to", nm);
        }
        done += (size_t)k;
    }
    w->off += rs;
    w->segs[w->n_segs - 1].last_lsn = w->next_lsn;
    w->bytes += rs;
    w->file_bytes += rs;
    w->writes++;
    *lsn = w->next_lsn++;
    return 0;
}

int stor__wal_write(struct stor__wal *w)
{
    if (w->fd < 0 || w->segs[w->n_segs - 1].version != SEG_V_DIO)
        return 0; /* buffered: every append was written */
    return stage_write(w, false);
}

int stor__wal_sync(struct stor__wal *w)
{
    if (w->fd < 0 || w->synced_lsn + 1 == w->next_lsn)
        return 0;
    if (w->segs[w->n_segs - 1].version == SEG_V_DIO) {
        /* The staged records with their flush; or, when a write without
         * one (stor__wal_write) left nothing staged, the flush alone. */
        int rc = w->stage_len > 0 ? stage_write(w, true) : 0;
        if (rc)
            return rc;
        if (w->stage_len == 0 && w->synced_lsn + 1 == w->next_lsn)
            return 0;
    }
    if (!w->no_sync) {
        if (fdatasync(w->fd) != 0) {
            char nm[32];
            seg_name(nm, sizeof nm, w->segs[w->n_segs - 1].first_lsn);
            return sys_fail(w, errno, "syncing", nm);
        }
        w->syncs++;
    }
    w->synced_lsn = w->next_lsn - 1;
    return 0;
}

int stor__wal_release(struct stor__wal *w, uint64_t ckpt)
{
    uint32_t n_old = w->n_segs, i;
    bool changed = false;
    int rc = 0;
    if (w->fd >= 0)
        n_old--; /* the active segment stays, whatever it holds */
    for (i = 0; i < n_old; i++) {
        struct wal_seg *sg = &w->segs[i];
        /* A segment's records end where the next one's begin. */
        uint64_t end = i + 1 < w->n_segs ? w->segs[i + 1].first_lsn - 1
                                         : sg->last_lsn;
        if (end > ckpt)
            break;
        char nm[32], spare[40];
        seg_name(nm, sizeof nm, sg->first_lsn);
        if (sg->size == w->seg_size && w->n_spares < SPARES_MAX) {
            snprintf(spare, sizeof spare, "spare-%" PRIu64, w->spare_next++);
            if (renameat(w->dir_fd, nm, w->dir_fd, spare) != 0) {
                rc = sys_fail(w, errno, "recycling", nm);
                break;
            }
            w->n_spares++;
        } else if (unlinkat(w->dir_fd, nm, 0) != 0) {
            rc = sys_fail(w, errno, "removing", nm);
            break;
        }
        changed = true;
    }
    if (i > 0) {
        memmove(w->segs, w->segs + i, (w->n_segs - i) * sizeof(*w->segs));
        w->n_segs -= i;
    }
    if (changed && rc == 0)
        rc = fsync_dir(w);
    return rc;
}

uint64_t stor__wal_next_lsn(const struct stor__wal *w)
{
    return w->next_lsn;
}

void stor__wal_stats(const struct stor__wal *w, struct stor__wal_stats *out)
{
    out->bytes = w->bytes;
    out->syncs = w->syncs;
    out->writes = w->writes;
    out->file_bytes = w->file_bytes;
    out->direct = w->fd >= 0 && w->fd_direct;
    out->segments = w->n_segs;
    out->spares = w->n_spares;
    out->segments_made = w->segs_made;
}

const char *stor__wal_errmsg(const struct stor__wal *w)
{
    return w->errmsg;
}

void stor__wal_close(struct stor__wal *w)
{
    if (!w)
        return;
    /* Staged records are written, as a buffered append would have been
     * (not synced: a sync is asked for where it is needed). */
    if (w->fd >= 0 && !w->write_failed && stor__wal_write(w) != 0)
        rk_log(RK_LOG_WARN, "%s", w->errmsg);
    if (w->fd >= 0)
        close(w->fd);
    free(w->stage);
    if (w->dir_fd >= 0)
        close(w->dir_fd);
    free(w->segs);
    free(w->dir);
    free(w);
}
