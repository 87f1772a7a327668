/* The LMDB environment: open/close, identity, shards, map growth, backup. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "rk_log.h"
#include "stor_int.h"

#define DEFAULT_MAP_SIZE     ((size_t)64 << 20)
#define DEFAULT_MAX_MAP_SIZE ((size_t)1 << 40)
#define MAX_READERS          510

/* ------------------------------------------------------------- helpers */

int stor__read_begin(struct stor *s, MDB_txn **txn)
{
    pthread_rwlock_rdlock(&s->map_lock);
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
    if (rc) {
        pthread_rwlock_unlock(&s->map_lock);
        *txn = NULL;
        return stor__from_mdb(rc);
    }
    return 0;
}

void stor__read_end(struct stor *s, MDB_txn *txn)
{
    if (txn)
        mdb_txn_abort(txn);
    pthread_rwlock_unlock(&s->map_lock);
}

int stor__del_range(MDB_txn *txn, MDB_dbi dbi, uint64_t shard, const void *from,
                    size_t from_len, uint64_t max, uint64_t *n_deleted)
{
    uint8_t kbuf[8 + 512];
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t n = 0;
    int rc;

    if (from_len > 512)
        return RK_EINVAL;
    stor__key_shard(kbuf, shard);
    if (from_len)
        memcpy(kbuf + 8, from, from_len);
    rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc)
        return stor__from_mdb(rc);
    k.mv_data = kbuf;
    k.mv_size = 8 + from_len;
    rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        if (k.mv_size < 8 || memcmp(k.mv_data, kbuf, 8) != 0)
            break;
        if (max && n >= max)
            break;
        rc = mdb_cursor_del(cur, 0);
        if (rc)
            break;
        n++;
        rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (n_deleted)
        *n_deleted = n;
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : stor__from_mdb(rc);
}

static int read_state(struct stor *s, MDB_txn *txn, uint64_t shard,
                      struct stor__state *st)
{
    uint8_t kbuf[8];
    MDB_val k = {.mv_size = 8, .mv_data = kbuf}, v;
    stor__key_shard(kbuf, shard);
    int rc = mdb_get(txn, s->dbi_state, &k, &v);
    if (rc)
        return stor__from_mdb(rc);
    return stor__state_decode(v.mv_data, v.mv_size, st);
}

int stor__w_load(struct stor *s, MDB_txn *txn, struct stor_shard *sh)
{
    if (sh->w_gen == s->gen)
        return sh->w_exists ? 0 : RK_EUNKNOWNSHARD;
    int rc = read_state(s, txn, sh->id, &sh->w);
    if (rc == RK_ENOTFOUND) {
        sh->w_gen = s->gen;
        sh->w_exists = false;
        sh->w_dirty = false;
        sh->w_deleted = false;
        return RK_EUNKNOWNSHARD;
    }
    if (rc)
        return rc;
    rc = stor__log_last(txn, s->dbi_logc, sh->id, &sh->w_last, &sh->w_last_term);
    if (rc)
        return rc;
    if (sh->wt_n > 0) {
        /* Entries the open transaction holds in memory (a reload after a
         * nested batch of the replay failed: stor_log.c). */
        sh->w_last = sh->wt_from + sh->wt_n - 1;
        sh->w_last_term = sh->wt[sh->wt_n - 1].term;
    }
    if (sh->w_last == 0 || sh->w_last < sh->w.base_index) {
        sh->w_last = sh->w.base_index;
        sh->w_last_term = sh->w.base_term;
    }
    sh->w_gen = s->gen;
    sh->w_exists = true;
    sh->w_dirty = false;
    sh->w_deleted = false;
    return 0;
}

/* ------------------------------------------------------ shard registry */

static uint32_t shard_pos(struct stor *s, uint64_t id)
{
    uint32_t lo = 0, hi = s->n_shards;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (s->shards[mid]->id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

struct stor_shard *stor__shard_find(struct stor *s, uint64_t id)
{
    pthread_mutex_lock(&s->mu);
    uint32_t p = shard_pos(s, id);
    struct stor_shard *sh =
        p < s->n_shards && s->shards[p]->id == id ? s->shards[p] : NULL;
    pthread_mutex_unlock(&s->mu);
    return sh;
}

struct stor_shard *stor__shard_find_w(struct stor *s, uint64_t id)
{
    uint32_t p = shard_pos(s, id);
    return p < s->n_shards && s->shards[p]->id == id ? s->shards[p] : NULL;
}

int stor__shard_add(struct stor *s, uint64_t id, struct stor_shard **out)
{
    struct stor_shard *sh = stor__shard_find(s, id);
    if (sh) {
        *out = sh;
        return 0;
    }
    sh = calloc(1, sizeof(*sh));
    if (!sh)
        return RK_ENOMEM;
    sh->s = s;
    sh->id = id;
    pthread_mutex_lock(&s->mu);
    if (s->n_shards == s->cap_shards) {
        uint32_t nc = s->cap_shards ? s->cap_shards * 2 : 16;
        struct stor_shard **np = realloc(s->shards, nc * sizeof(*np));
        if (!np) {
            pthread_mutex_unlock(&s->mu);
            free(sh);
            return RK_ENOMEM;
        }
        s->shards = np;
        s->cap_shards = nc;
    }
    uint32_t p = shard_pos(s, id);
    memmove(&s->shards[p + 1], &s->shards[p],
            (s->n_shards - p) * sizeof(*s->shards));
    s->shards[p] = sh;
    s->n_shards++;
    pthread_mutex_unlock(&s->mu);
    *out = sh;
    return 0;
}

struct stor_shard *stor_shard_get(struct stor *s, uint64_t shard)
{
    struct stor_shard *sh = stor__shard_find(s, shard);
    if (!sh)
        return NULL;
    pthread_mutex_lock(&s->mu);
    bool ex = sh->exists;
    pthread_mutex_unlock(&s->mu);
    return ex ? sh : NULL;
}

uint64_t stor_shard_id(const struct stor_shard *sh)
{
    return sh->id;
}

uint32_t stor_shard_list(struct stor *s, uint64_t *ids, uint32_t max)
{
    uint32_t n = 0;
    pthread_mutex_lock(&s->mu);
    for (uint32_t i = 0; i < s->n_shards; i++) {
        if (!s->shards[i]->exists)
            continue;
        if (n < max && ids)
            ids[n] = s->shards[i]->id;
        n++;
    }
    pthread_mutex_unlock(&s->mu);
    return n;
}

int stor_shard_load(struct stor_shard *sh, struct stor_shard_state *out)
{
    struct stor *s = sh->s;
    struct stor__state st;
    MDB_txn *txn;
    memset(out, 0, sizeof(*out));
    stor__checkpoint_wait(s); /* the state records are read from LMDB */
    int rc = stor__read_begin(s, &txn);
    if (rc)
        return rc;
    rc = read_state(s, txn, sh->id, &st);
    raft_index last = 0;
    raft_term last_term = 0;
    if (rc == 0)
        rc = stor__log_last(txn, s->dbi_logc, sh->id, &last, &last_term);
    stor__read_end(s, txn);
    if (rc == RK_ENOTFOUND)
        return RK_EUNKNOWNSHARD;
    if (rc)
        return rc;
    out->hs = st.hs;
    out->conf = st.conf;
    out->first_index = st.base_index + 1;
    out->last_index = last > st.base_index ? last : st.base_index;
    out->applied = st.applied;
    out->applied_term = st.applied_term;
    out->applied_conf = st.applied_conf;
    out->snap = st.snap;
    return 0;
}

/* ------------------------------------------------------------ map size */

int stor__maybe_grow(struct stor *s, size_t need, bool force)
{
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    size_t map = info.me_mapsize;
    size_t used = (info.me_last_pgno + 1) * s->page_size;
    s->map_size = map;
    if (!force && used + need <= map / 4 * 3)
        return 0;
    size_t nmap = map;
    while (nmap < s->max_map_size &&
           (nmap / 4 * 3 < used + need || nmap == map))
        nmap = nmap > s->max_map_size / 2 ? s->max_map_size : nmap * 2;
    if (nmap <= map)
        return RK_ENOSPC; /* at the limit: the txn may still fit */
    /* Early growth never makes readers wait: if one is active (a loop read,
     * a backup), try again at the next batch. Only a full map waits. */
    if (!force) {
        if (pthread_rwlock_trywrlock(&s->map_lock) != 0)
            return 0;
    } else {
        pthread_rwlock_wrlock(&s->map_lock);
    }
    stor__exports_kill_all(s);
    int rc = mdb_env_set_mapsize(s->env, nmap);
    pthread_rwlock_unlock(&s->map_lock);
    if (rc)
        return stor__from_mdb(rc);
    s->map_size = nmap;
    pthread_mutex_lock(&s->mu);
    s->n_grows++;
    pthread_mutex_unlock(&s->mu);
    rk_log(RK_LOG_INFO,
           "storage %s: map grown from %zu to %zu MiB (used %zu MiB)", s->path,
           map >> 20, nmap >> 20, used >> 20);
    return 0;
}

/* ---------------------------------------------------------- open/close */

static const char META_FORMAT[] = "format_version";
static const char META_CLUSTER[] = "cluster_id";
static const char META_NODE[] = "node_id";

static int meta_get_u64(struct stor *s, MDB_txn *txn, const char *name,
                        uint64_t *out, char *errmsg)
{
    MDB_val k = {.mv_size = strlen(name), .mv_data = (void *)name}, v;
    int rc = mdb_get(txn, s->dbi_meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        rk_errf(errmsg, "data dir %s is corrupt: meta record '%s' is missing",
                s->path, name);
        return RK_ECORRUPT;
    }
    if (rc) {
        rk_errf(errmsg, "data dir %s: reading meta '%s': %s", s->path, name,
                mdb_strerror(rc));
        return stor__from_mdb(rc);
    }
    if (v.mv_size != 8) {
        rk_errf(errmsg,
                "data dir %s is corrupt: meta record '%s' has %zu bytes, not 8",
                s->path, name, v.mv_size);
        return RK_ECORRUPT;
    }
    *out = stor__get64(v.mv_data);
    return 0;
}

static int meta_put_u64(struct stor *s, MDB_txn *txn, const char *name,
                        uint64_t val)
{
    uint8_t b[8];
    stor__put64(b, val);
    MDB_val k = {.mv_size = strlen(name), .mv_data = (void *)name};
    MDB_val v = {.mv_size = 8, .mv_data = b};
    return mdb_put(txn, s->dbi_meta, &k, &v, 0);
}

/* Opens the named databases, checks or writes the identity, loads shards. */
static int open_dbs(struct stor *s, const struct stor_opts *o, char *errmsg)
{
    MDB_txn *txn;
    MDB_dbi probe;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc) {
        rk_errf(errmsg, "data dir %s: cannot begin a transaction: %s", s->path,
                mdb_strerror(rc));
        return stor__from_mdb(rc);
    }
    bool fresh = false;
    rc = mdb_dbi_open(txn, "meta", 0, &probe);
    if (rc == MDB_NOTFOUND) {
        fresh = true;
    } else if (rc) {
        rk_errf(errmsg, "data dir %s is corrupt: cannot open 'meta': %s",
                s->path, mdb_strerror(rc));
        rc = rc == MDB_INCOMPATIBLE ? RK_ECORRUPT : stor__from_mdb(rc);
        goto err_abort;
    }
    if (fresh && !o->create) {
        rk_errf(errmsg,
                "data dir %s holds an LMDB environment without ringkv metadata "
                "(corrupt or not ringkv's)",
                s->path);
        rc = RK_ECORRUPT;
        goto err_abort;
    }
    if (fresh && (o->cluster_id == 0 || o->node_id == 0)) {
        rk_errf(errmsg, "creating data dir %s needs a cluster id and a node id",
                s->path);
        rc = RK_EINVAL;
        goto err_abort;
    }
    static const struct {
        const char *name;
        size_t off;
    } dbs[] = {
        {"state", offsetof(struct stor, dbi_state)},
        {"kv", offsetof(struct stor, dbi_kv)},
        {"sessions", offsetof(struct stor, dbi_sess)},
        {"stage", offsetof(struct stor, dbi_stage)},
        {"meta", offsetof(struct stor, dbi_meta)},
    };
    for (size_t i = 0; i < sizeof dbs / sizeof dbs[0]; i++) {
        MDB_dbi *d = (MDB_dbi *)((char *)s + dbs[i].off);
        rc = mdb_dbi_open(txn, dbs[i].name, fresh ? MDB_CREATE : 0, d);
        if (rc) {
            rk_errf(errmsg, "data dir %s is corrupt: database '%s': %s",
                    s->path, dbs[i].name, mdb_strerror(rc));
            rc = rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE
                     ? RK_ECORRUPT
                     : stor__from_mdb(rc);
            goto err_abort;
        }
    }
    if (fresh) {
        rc = meta_put_u64(s, txn, META_FORMAT, STOR_FORMAT_VERSION);
        if (!rc)
            rc = meta_put_u64(s, txn, META_CLUSTER, o->cluster_id);
        if (!rc)
            rc = meta_put_u64(s, txn, META_NODE, o->node_id);
        if (rc) {
            rk_errf(errmsg, "data dir %s: writing meta: %s", s->path,
                    mdb_strerror(rc));
            rc = stor__from_mdb(rc);
            goto err_abort;
        }
    }
    uint64_t fmt = 0, cid = 0, nid = 0;
    rc = meta_get_u64(s, txn, META_FORMAT, &fmt, errmsg);
    if (rc)
        goto err_abort;
    if (fmt >= 1 && fmt < STOR_FORMAT_VERSION) {
        /* Version 1 holds no key over 480 bytes (version 2 added them);
         * version 2 has no WAL and 8-reply session records (version 3
         * adds the WAL and 1-reply records); up to version 3 the log has
         * one record per entry in 'log' (version 4: chunks in 'logc') and
         * every checkpoint was synced (version 4 syncs them off the storage
         * thread and names the durable one in `ckpt`). All are read as
         * they are but the log, converted here in this transaction (the
         * WAL's batches since the last checkpoint are replayed onto it
         * after); marking the dir 4 makes an older build refuse it from
         * now on instead of misreading long keys or sessions, ignoring the
         * WAL, finding no log, or opening a checkpoint a crash tore. */
        MDB_dbi old;
        uint64_t n = 0;
        rc = mdb_dbi_open(txn, "log", 0, &old);
        if (rc == 0)
            rc = mdb_dbi_open(txn, "logc", MDB_CREATE, &s->dbi_logc);
        if (rc) {
            rk_errf(errmsg, "data dir %s is corrupt: database 'log': %s",
                    s->path, mdb_strerror(rc));
            rc = rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE
                     ? RK_ECORRUPT
                     : stor__from_mdb(rc);
            goto err_abort;
        }
        rc = stor__log_convert(txn, old, s->dbi_logc, &n);
        if (rc) {
            rk_errf(errmsg, "data dir %s: converting the log to chunks: %s",
                    s->path, rk_strerror(rc));
            goto err_abort;
        }
        rc = mdb_drop(txn, old, 1);
        if (!rc)
            rc = meta_put_u64(s, txn, META_FORMAT, STOR_FORMAT_VERSION);
        if (rc) {
            rk_errf(errmsg, "data dir %s: upgrading the format: %s", s->path,
                    mdb_strerror(rc));
            rc = stor__from_mdb(rc);
            goto err_abort;
        }
        rk_log(RK_LOG_INFO,
               "storage %s: format version %llu upgraded to %u (log chunks: "
               "%llu entries converted; checkpoints synced in the "
               "background); earlier builds will refuse this data dir",
               s->path, (unsigned long long)fmt, STOR_FORMAT_VERSION,
               (unsigned long long)n);
        fmt = STOR_FORMAT_VERSION;
    } else if (fmt == STOR_FORMAT_VERSION) {
        rc = mdb_dbi_open(txn, "logc", fresh ? MDB_CREATE : 0, &s->dbi_logc);
        if (rc) {
            rk_errf(errmsg, "data dir %s is corrupt: database 'logc': %s",
                    s->path, mdb_strerror(rc));
            rc = rc == MDB_NOTFOUND || rc == MDB_INCOMPATIBLE
                     ? RK_ECORRUPT
                     : stor__from_mdb(rc);
            goto err_abort;
        }
    }
    if (fmt != STOR_FORMAT_VERSION) {
        rk_errf(errmsg,
                "data dir %s has format version %llu; this build reads "
                "versions 1 to %u only",
                s->path, (unsigned long long)fmt, STOR_FORMAT_VERSION);
        rc = RK_EVERSION;
        goto err_abort;
    }
    rc = meta_get_u64(s, txn, META_CLUSTER, &cid, errmsg);
    if (!rc)
        rc = meta_get_u64(s, txn, META_NODE, &nid, errmsg);
    if (rc)
        goto err_abort;
    if (o->cluster_id && cid != o->cluster_id) {
        rk_errf(errmsg,
                "data dir %s belongs to cluster %#llx, not to cluster %#llx",
                s->path, (unsigned long long)cid,
                (unsigned long long)o->cluster_id);
        rc = RK_EFOREIGN;
        goto err_abort;
    }
    if (o->node_id && nid != o->node_id) {
        rk_errf(errmsg, "data dir %s belongs to node %llu, not to node %llu",
                s->path, (unsigned long long)nid,
                (unsigned long long)o->node_id);
        rc = RK_EFOREIGN;
        goto err_abort;
    }
    s->cluster_id = cid;
    s->node_id = nid;

    /* Load every shard's committed view. */
    MDB_cursor *cur;
    MDB_val k, v;
    rc = mdb_cursor_open(txn, s->dbi_state, &cur);
    if (rc) {
        rk_errf(errmsg, "data dir %s: %s", s->path, mdb_strerror(rc));
        rc = stor__from_mdb(rc);
        goto err_abort;
    }
    int crc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
    rc = 0;
    while (crc == 0) {
        struct stor__state st;
        struct stor_shard *sh;
        uint64_t id = k.mv_size == 8 ? stor__get64(k.mv_data) : 0;
        if (k.mv_size != 8 || stor__state_decode(v.mv_data, v.mv_size, &st)) {
            rk_errf(errmsg,
                    "data dir %s is corrupt: bad state record of shard %llu",
                    s->path, (unsigned long long)id);
            rc = RK_ECORRUPT;
            break;
        }
        rc = stor__shard_add(s, id, &sh);
        if (rc) {
            rk_errf(errmsg, "out of memory");
            break;
        }
        raft_index last;
        raft_term lterm;
        rc = stor__log_last(txn, s->dbi_logc, id, &last, &lterm);
        if (rc) {
            rk_errf(errmsg, "data dir %s: reading the log of shard %llu: %s",
                    s->path, (unsigned long long)id, rk_strerror(rc));
            break;
        }
        if (last < st.base_index) {
            last = st.base_index;
            lterm = st.base_term;
        }
        sh->exists = true;
        sh->first = st.base_index + 1;
        sh->last = last;
        sh->last_term = lterm;
        sh->base_index = st.base_index;
        sh->base_term = st.base_term;
        sh->compact_pending = st.compact_target > st.base_index;
        sh->c_compact_pending = sh->compact_pending;
        sh->ck_applied = st.applied;
        crc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(cur);
    if (rc)
        goto err_abort;
    if (crc != MDB_NOTFOUND) {
        rk_errf(errmsg, "data dir %s: scanning shards: %s", s->path,
                mdb_strerror(crc));
        rc = stor__from_mdb(crc);
        goto err_abort;
    }
    rc = mdb_txn_commit(txn);
    if (rc) {
        rk_errf(errmsg, "data dir %s: commit at open: %s", s->path,
                mdb_strerror(rc));
        return stor__from_mdb(rc);
    }
    return 0;

err_abort:
    mdb_txn_abort(txn);
    return rc;
}

/* Frees s and what stor_open made for it but the environment and the
 * write thread (closed before): shards, lock file, locks. */
static void free_stor(struct stor *s)
{
    stor__overlay_free(s);
    for (uint32_t i = 0; i < s->n_shards; i++) {
        free(s->shards[i]->sp_rec);
        free(s->shards[i]);
    }
    free(s->shards);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    pthread_rwlock_destroy(&s->map_lock);
    pthread_mutex_destroy(&s->write_mu);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->exp_mu);
    pthread_mutex_destroy(&s->q_mu);
    pthread_cond_destroy(&s->q_cv);
    pthread_cond_destroy(&s->ckpt_cv);
    pthread_cond_destroy(&s->dur_cv);
    if (s->ckpt_fd >= 0)
        close(s->ckpt_fd);
    pthread_rwlock_destroy(&s->ov_lock);
    stor__wal_close(s->wal);
    rk_buf_free(&s->rec);
    free(s->path);
    free(s);
}

int stor_open(const struct stor_opts *o, struct stor **out, char *errmsg)
{
    char scratch[RK_ERRMSG_SIZE];
    char file[4096];
    struct stat stt;
    int rc;

    if (!errmsg)
        errmsg = scratch;
    errmsg[0] = '\0';
    *out = NULL;
    if (!o || !o->path || !o->path[0]) {
        rk_errf(errmsg, "no data dir given");
        return RK_EINVAL;
    }
    if (strlen(o->path) > sizeof file - 16) {
        rk_errf(errmsg, "data dir path too long");
        return RK_EINVAL;
    }
    struct stor *s = calloc(1, sizeof(*s));
    if (!s) {
        rk_errf(errmsg, "out of memory");
        return RK_ENOMEM;
    }
    s->lock_fd = -1;
    s->ckpt_fd = -1;
    s->data_fd = -1;
    s->path = strdup(o->path);
    if (!s->path) {
        free(s);
        rk_errf(errmsg, "out of memory");
        return RK_ENOMEM;
    }
    pthread_rwlockattr_t rwa;
    pthread_rwlockattr_init(&rwa);
    pthread_rwlockattr_setkind_np(&rwa,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&s->map_lock, &rwa);
    pthread_rwlockattr_destroy(&rwa);
    pthread_mutex_init(&s->write_mu, NULL);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->exp_mu, NULL);
    pthread_mutex_init(&s->q_mu, NULL);
    /* Monotonic, for the storage thread's short timed waits. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->q_cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_cond_init(&s->ckpt_cv, NULL);
    pthread_cond_init(&s->dur_cv, NULL);
    pthread_rwlock_init(&s->ov_lock, NULL);
    s->no_sync = o->unsafe_no_sync;
    const char *wal_io = getenv("RINGKV_WAL_IO");
    s->wal_buffered = o->wal_buffered ||
                      (wal_io != NULL && strcmp(wal_io, "buffered") == 0);
    s->max_map_size = o->max_map_size ? o->max_map_size : DEFAULT_MAX_MAP_SIZE;
    s->chunk_bytes =
        o->snap_chunk_bytes ? o->snap_chunk_bytes : STOR_SNAP_CHUNK_DEFAULT;
    s->ckpt_every_us = o->checkpoint_ms ? (uint64_t)o->checkpoint_ms * 1000u
                                  : STOR__CKPT_US;
    if (s->chunk_bytes < 256)
        s->chunk_bytes = 256;
    s->conf_decode = o->conf_decode;
    s->key_hash = o->key_hash;
    size_t map = o->map_size ? o->map_size : DEFAULT_MAP_SIZE;
    if (map > s->max_map_size)
        map = s->max_map_size;

    /* The directory and its data file. */
    if (stat(o->path, &stt) != 0) {
        if (errno != ENOENT || !o->create) {
            rk_errf(errmsg, "data dir %s: %s", o->path,
                    errno == ENOENT ? "no such directory" : strerror(errno));
            rc = errno == ENOENT ? RK_ENOTFOUND : RK_EIO;
            goto err_free;
        }
        if (mkdir(o->path, 0700) != 0 && errno != EEXIST) {
            rk_errf(errmsg, "cannot create data dir %s: %s", o->path,
                    strerror(errno));
            rc = errno == ENOSPC ? RK_ENOSPC : RK_EIO;
            goto err_free;
        }
    } else if (!S_ISDIR(stt.st_mode)) {
        rk_errf(errmsg, "data dir %s is not a directory", o->path);
        rc = RK_EINVAL;
        goto err_free;
    }
    snprintf(file, sizeof file, "%s/data.mdb", o->path);
    if (stat(file, &stt) != 0) {
        if (!o->create) {
            rk_errf(errmsg, "data dir %s holds no store (no data.mdb)",
                    o->path);
            rc = RK_ENOTFOUND;
            goto err_free;
        }
    } else if (stt.st_size == 0 && !o->create) {
        /* LMDB never empties its file: this is an interrupted creation,
         * which `create` may finish. */
        rk_errf(errmsg, "data dir %s is corrupt: data.mdb is empty", o->path);
        rc = RK_ECORRUPT;
        goto err_free;
    }

    /* One process per data dir. */
    snprintf(file, sizeof file, "%s/LOCK", o->path);
    s->lock_fd = open(file, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (s->lock_fd < 0) {
        rk_errf(errmsg, "data dir %s: cannot open LOCK: %s", o->path,
                strerror(errno));
        rc = errno == ENOSPC ? RK_ENOSPC : RK_EIO;
        goto err_free;
    }
    if (flock(s->lock_fd, LOCK_EX | LOCK_NB) != 0) {
        if (errno == EWOULDBLOCK) {
            rk_errf(errmsg, "data dir %s is in use by another process",
                    o->path);
            rc = RK_EBUSY;
        } else {
            rk_errf(errmsg, "data dir %s: cannot lock LOCK: %s", o->path,
                    strerror(errno));
            rc = RK_EIO;
        }
        goto err_free;
    }

    /* After a crash, LMDB must open the last durable checkpoint. */
    rc = stor__dur_check(s, errmsg);
    if (rc)
        goto err_free;

    rc = mdb_env_create(&s->env);
    if (rc) {
        rk_errf(errmsg, "mdb_env_create: %s", mdb_strerror(rc));
        rc = stor__from_mdb(rc);
        goto err_free;
    }
    mdb_env_set_maxdbs(s->env, 8);
    mdb_env_set_maxreaders(s->env, MAX_READERS);
    mdb_env_set_mapsize(s->env, map);
    /* Checkpoints commit with MDB_NOSYNC set on the env for the commit
     * (stor_thread.c, commit_open); the sync thread syncs them. */
    unsigned flags = MDB_NOTLS | MDB_NORDAHEAD;
    if (s->no_sync)
        flags |= MDB_NOSYNC;
    rc = mdb_env_open(s->env, o->path, flags, 0600);
    if (rc) {
        if (rc == MDB_INVALID)
            rk_errf(errmsg,
                    "data dir %s is corrupt: data.mdb is not an LMDB file",
                    o->path);
        else if (rc == MDB_VERSION_MISMATCH)
            rk_errf(errmsg,
                    "data dir %s was written by an incompatible LMDB version",
                    o->path);
        else
            rk_errf(errmsg, "data dir %s: mdb_env_open: %s", o->path,
                    mdb_strerror(rc));
        rc = rc == MDB_INVALID ? RK_ECORRUPT : stor__from_mdb(rc);
        goto err_env;
    }
    if (mdb_env_get_fd(s->env, &s->data_fd) != 0) {
        rk_errf(errmsg, "data dir %s: no data.mdb descriptor", o->path);
        rc = RK_EIO;
        goto err_env;
    }
    int dead = 0;
    mdb_reader_check(s->env, &dead);
    if (dead)
        rk_log(RK_LOG_INFO, "storage %s: cleared %d stale reader slots",
               o->path, dead);
    MDB_stat mst;
    mdb_env_stat(s->env, &mst);
    s->page_size = mst.ms_psize;
    MDB_envinfo info;
    mdb_env_info(s->env, &info);
    s->map_size = info.me_mapsize;

    rc = open_dbs(s, o, errmsg);
    if (rc)
        goto err_env;
    rc = stor__wal_recover(s, o->wal_segment_bytes, errmsg);
    if (rc)
        goto err_env;
    rc = stor__dur_start(s, errmsg);
    if (rc)
        goto err_env;
    rc = stor__thread_start(s);
    if (rc) {
        rk_errf(errmsg, "cannot start the storage thread");
        goto err_env;
    }
    rk_log(RK_LOG_INFO,
           "storage %s: opened (cluster %#llx node %llu, %u shards, map %zu "
           "MiB%s)",
           s->path, (unsigned long long)s->cluster_id,
           (unsigned long long)s->node_id, s->n_shards, s->map_size >> 20,
           s->no_sync ? ", UNSAFE no-sync" : "");
    *out = s;
    return 0;

err_env:
    stor__dur_stop(s);
    mdb_env_close(s->env);
err_free:
    free_stor(s);
    return rc;
}

void stor_close(struct stor *s)
{
    if (!s)
        return;
    stor__thread_stop(s);
    stor__dur_stop(s);
    stor__exports_close(s);
    mdb_env_close(s->env);
    free_stor(s);
}

void stor_identity(const struct stor *s, uint64_t *cluster_id,
                   uint64_t *node_id)
{
    if (cluster_id)
        *cluster_id = s->cluster_id;
    if (node_id)
        *node_id = s->node_id;
}

int stor_backup(struct stor *s, const char *path)
{
    char file[4096];
    struct stat stt;
    if (!path || strlen(path) > sizeof file - 16)
        return RK_EINVAL;
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return errno == ENOSPC ? RK_ENOSPC : RK_EIO;
    snprintf(file, sizeof file, "%s/data.mdb", path);
    if (stat(file, &stt) == 0)
        return RK_EEXIST;
    /* The copy holds the last checkpoint: make it hold everything. */
    stor__checkpoint_wait(s);
    pthread_rwlock_rdlock(&s->map_lock);
    int rc = mdb_env_copy2(s->env, path, MDB_CP_COMPACT);
    pthread_rwlock_unlock(&s->map_lock);
    if (rc) {
        rk_log(RK_LOG_WARN, "storage %s: backup to %s failed: %s", s->path,
               path, mdb_strerror(rc));
        return stor__from_mdb(rc);
    }
    return 0;
}

void stor_stats(struct stor *s, struct stor_stats *out)
{
    MDB_envinfo info;
    memset(out, 0, sizeof(*out));
    pthread_rwlock_rdlock(&s->map_lock);
    mdb_env_info(s->env, &info);
    pthread_rwlock_unlock(&s->map_lock);
    out->map_size = info.me_mapsize;
    out->page_size = s->page_size;
    out->map_used = (info.me_last_pgno + 1) * s->page_size;
    pthread_mutex_lock(&s->mu);
    out->batches = s->n_batches;
    out->lazy_batches = s->n_lazy_batches;
    out->merged_batches = s->n_merged_batches;
    out->checkpoints = s->n_checkpoints;
    out->checkpoint_us = s->ckpt_us;
    out->checkpoint_syncs = s->n_dur_syncs;
    out->checkpoint_sync_us = s->dur_sync_us;
    out->checkpoint_reverted = s->ckpt_reverted;
    out->wal_bytes = s->n_wal_bytes;
    out->wal_syncs = s->n_wal_syncs;
    out->wal_writes = s->n_wal_writes;
    out->wal_file_bytes = s->n_wal_file_bytes;
    out->wal_direct = s->wal_direct;
    out->wal_replayed = s->n_wal_replayed;
    out->grows = s->n_grows;
    for (uint32_t i = 0; i < s->n_shards; i++)
        out->n_shards += s->shards[i]->exists;
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&s->q_mu);
    out->checkpoint_sync_waits = s->n_dur_waits;
    out->checkpoint_sync_wait_us = s->dur_wait_us;
    out->checkpoint_deferred = s->n_dur_deferred;
    pthread_mutex_unlock(&s->q_mu);
    pthread_mutex_lock(&s->exp_mu);
    out->n_exports = s->n_exports;
    pthread_mutex_unlock(&s->exp_mu);
}
