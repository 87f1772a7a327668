/* Helpers shared by the storage tests. */
#include "stor_test_util.h"

#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "stor_int.h"

char *tu_mkdtemp(const char *tag)
{
    char buf[256];
    snprintf(buf, sizeof buf, "/tmp/rk-stor-%s-XXXXXX", tag);
    if (!mkdtemp(buf))
        abort();
    return strdup(buf);
}

static int rm_cb(const char *p, const struct stat *sb, int flag,
                 struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(p);
    return 0;
}

void tu_rmrf(const char *path)
{
    if (path && strncmp(path, "/tmp/rk-stor-", 13) == 0)
        nftw(path, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

int tu_dir_setup(void **state)
{
    *state = tu_mkdtemp("dir");
    return *state ? 0 : -1;
}

int tu_dir_teardown(void **state)
{
    tu_rmrf(*state);
    free(*state);
    return 0;
}

int tu_conf_decode(const void *buf, size_t len, struct raft_conf_change *out)
{
    const uint8_t *p = buf;
    if (len != 9 || p[0] > RAFT_CC_REMOVE)
        return RK_EPROTO;
    out->type = p[0];
    out->node = stor__get64(p + 1);
    return 0;
}

struct stor *tu_open(const char *dir, size_t map_size, uint32_t chunk)
{
    struct stor_opts o = {
        .path = dir,
        .cluster_id = 1,
        .node_id = 1,
        .create = true,
        .map_size = map_size,
        .snap_chunk_bytes = chunk,
        /* No checkpoint by the clock: tests that check what the open
         * transaction's readers see must not race a timer (a slow ASan
         * run on a busy machine may take more than a second). */
        .checkpoint_ms = 600000,
        .conf_decode = tu_conf_decode,
    };
    struct stor *s = NULL;
    char err[RK_ERRMSG_SIZE];
    int rc = stor_open(&o, &s, err);
    if (rc) {
        fprintf(stderr, "stor_open: %s: %s\n", rk_err_name(rc), err);
        abort();
    }
    return s;
}

size_t tu_put_cmd(void *buf, size_t cap, uint64_t client, uint64_t seq,
                  const char *key, const void *val, uint32_t vlen)
{
    struct stor_cmd c = {.op = STOR_CMD_PUT,
                         .client_id = client,
                         .seq = seq,
                         .key = key,
                         .klen = (uint32_t)strlen(key),
                         .value = val,
                         .vlen = vlen};
    size_t len = 0;
    if (stor_cmd_encode(&c, buf, cap, &len))
        abort();
    return len;
}

int tu_check(struct stor *s)
{
    char err[RK_ERRMSG_SIZE];
    int rc = stor_check(s, err);
    if (rc)
        fprintf(stderr, "stor_check: %s\n", err);
    return rc;
}

void tu_create_shard(struct stor *s, uint64_t id)
{
    struct raft_conf_state conf = {.n_voters = 3, .voters = {1, 2, 3}};
    struct stor_batch *b;
    if (stor_batch_new(&b) || stor_batch_create_shard(b, id, &conf) ||
        stor_batch_commit(s, b))
        abort();
    stor_batch_free(b);
}

int tu_run(struct stor *s, uint64_t shard, uint64_t term, uint64_t index,
           const struct stor_cmd *cmd, struct stor_result *out)
{
    size_t cap = stor_cmd_size(cmd), len = 0;
    uint8_t *buf = malloc(cap);
    struct stor_batch *b;
    if (!buf || stor_batch_new(&b))
        abort();
    int rc = stor_cmd_encode(cmd, buf, cap, &len);
    struct raft_entry e = {.term = term,
                           .index = index,
                           .type = RAFT_ENTRY_NORMAL,
                           .len = (uint32_t)len,
                           .data = buf};
    uint32_t r = 0;
    if (!rc)
        rc = stor_batch_append(b, shard, &e, 1);
    if (!rc)
        rc = stor_batch_apply(b, shard, &e, 1, &r);
    if (!rc)
        rc = stor_batch_commit(s, b);
    if (!rc) {
        if (stor_batch_n_results(b) != 1)
            abort(); /* one entry, one result */
        *out = *stor_batch_result(b, r);
    }
    stor_batch_free(b);
    free(buf);
    return rc;
}

int tu_append_apply(struct stor *s, uint64_t shard, uint64_t first, uint32_t n,
                    uint64_t term, bool apply)
{
    struct stor_batch *b;
    struct raft_entry *ents = calloc(n, sizeof(*ents));
    uint8_t *bufs = malloc((size_t)n * 64);
    if (!ents || !bufs || stor_batch_new(&b))
        abort();
    for (uint32_t i = 0; i < n; i++) {
        char key[32], val[32];
        uint64_t idx = first + i;
        snprintf(key, sizeof key, "k%llu", (unsigned long long)(idx % 64));
        snprintf(val, sizeof val, "v%llu", (unsigned long long)idx);
        ents[i].index = idx;
        ents[i].term = term;
        ents[i].type = RAFT_ENTRY_NORMAL;
        ents[i].data = bufs + (size_t)i * 64;
        ents[i].len = (uint32_t)tu_put_cmd(ents[i].data, 64, 0, 0, key, val,
                                           (uint32_t)strlen(val));
    }
    int rc = stor_batch_append(b, shard, ents, n);
    struct raft_hard_state hs = {
        .term = term, .vote = 1, .commit = first + n - 1};
    if (!rc)
        rc = stor_batch_set_hard_state(b, shard, &hs);
    if (!rc && apply)
        rc = stor_batch_apply(b, shard, ents, n, NULL);
    if (!rc)
        rc = stor_batch_commit(s, b);
    stor_batch_free(b);
    free(ents);
    free(bufs);
    return rc;
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "tu_transfer: %s (%d)\n", what, rc);
    return -1;
}

static int stage_one(struct stor *to, struct stor_batch *b, uint64_t id,
                     const struct raft_snap_chunk *c)
{
    uint32_t op;
    stor_batch_reset(b);
    int rc = stor_batch_stage_chunk(b, id, c, &op);
    if (rc == 0)
        rc = stor_batch_commit(to, b);
    if (rc == 0)
        rc = stor_batch_op_status(b, op);
    return rc;
}

int tu_transfer(struct stor *from, struct stor *to, uint64_t id,
                uint32_t max_len, struct raft_snapshot_meta *meta_out,
                uint32_t *chunks)
{
    struct stor_shard *sh = stor_shard_get(from, id);
    struct raft_snapshot_meta meta;
    int rc = sh == NULL ? -1 : stor_log_ops.snapshot_meta(sh, &meta);
    if (rc != 0 || meta.index == 0)
        return fail("no snapshot metadata", rc);
    struct stor_batch *b;
    if (stor_batch_new(&b) != 0)
        return fail("no batch", -1);
    bool last = false;
    uint32_t seq;
    for (seq = 0; !last && rc == 0; seq++) {
        void *data;
        uint32_t len;
        rc = stor_log_ops.snapshot_chunk(sh, meta.index, seq, &data, &len,
                                         &last);
        if (rc != 0) {
            fail("export", rc);
            break;
        }
        if (len < 4 || memcmp(data, "RKS2", 4) != 0 ||
            (max_len > 0 && len > max_len))
            rc = fail("chunk format or size", (int)len);
        struct raft_snap_chunk c = {
            .meta = meta, .seq = seq, .last = last, .len = len, .data = data};
        if (rc == 0 && (rc = stage_one(to, b, id, &c)) != 0)
            fail("stage", rc);
        free(data);
    }
    if (rc == 0) {
        uint32_t op;
        stor_batch_reset(b);
        rc = stor_batch_install_snapshot(b, id, &meta, &op);
        if (rc == 0)
            rc = stor_batch_commit(to, b);
        if (rc == 0)
            rc = stor_batch_op_status(b, op);
        if (rc != 0)
            fail("install", rc);
    }
    stor_batch_free(b);
    if (rc != 0)
        return -1;
    if (meta_out != NULL)
        *meta_out = meta;
    if (chunks != NULL)
        *chunks = seq;
    return 0;
}

void tu_join_entries(struct raft_entry ents[4], uint8_t cc[3][9],
                     uint64_t removed)
{
    const uint8_t type[3] = {RAFT_CC_ADD_LEARNER, RAFT_CC_PROMOTE,
                             RAFT_CC_REMOVE};
    const uint64_t node[3] = {4, 4, removed};
    ents[0] =
        (struct raft_entry){.term = 1, .index = 1, .type = RAFT_ENTRY_NOOP};
    for (int i = 0; i < 3; i++) {
        cc[i][0] = type[i];
        for (int k = 0; k < 8; k++)
            cc[i][1 + k] = (uint8_t)(node[i] >> (56 - 8 * k));
        ents[i + 1] = (struct raft_entry){.term = 1,
                                          .index = (raft_index)i + 2,
                                          .type = RAFT_ENTRY_CONF,
                                          .len = 9,
                                          .data = cc[i]};
    }
}

struct tu_waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int status;
};

static void tu_on_done(struct stor_batch *b, int status, void *arg)
{
    struct tu_waiter *w = arg;
    (void)b;
    pthread_mutex_lock(&w->mu);
    w->status = status;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int tu_submit_wait(struct stor *s, struct stor_batch *b)
{
    struct tu_waiter w = {.mu = PTHREAD_MUTEX_INITIALIZER,
                          .cv = PTHREAD_COND_INITIALIZER};
    int rc = stor_batch_submit(s, b, tu_on_done, &w);
    if (rc)
        return rc;
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    return w.status;
}

int tu_close_rm(struct stor *s, char *dir)
{
    int rc = tu_check(s);
    stor_close(s);
    tu_rmrf(dir);
    free(dir);
    return rc;
}

void tu_old_log_layout(const char *dir, uint64_t version)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi logc, log, meta, state;
    MDB_cursor *cur;
    MDB_val k, v;
    struct rk_buf old = {0}; /* key(16) | u32 len | value, per entry */
    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 8) ||
        mdb_env_set_mapsize(env, (size_t)1 << 30) ||
        mdb_env_open(env, dir, 0, 0600) ||
        mdb_txn_begin(env, NULL, 0, &txn) ||
        mdb_dbi_open(txn, "logc", 0, &logc) ||
        mdb_dbi_open(txn, "log", MDB_CREATE, &log) ||
        mdb_dbi_open(txn, "meta", 0, &meta) ||
        mdb_dbi_open(txn, "state", 0, &state) ||
        mdb_cursor_open(txn, logc, &cur))
        abort();
    /* Every chunk's entries as the records format 3 had (the entries a
     * compaction passed left out: that format deleted them). */
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        struct stor__logc c;
        uint64_t shard = stor__get64(k.mv_data);
        raft_index first = stor__get64((const uint8_t *)k.mv_data + 8);
        if (stor__logc_open(v.mv_data, v.mv_size, &c))
            abort();
        uint8_t sk[8];
        struct stor__state st;
        MDB_val skv = {.mv_size = 8, .mv_data = sk}, sv;
        stor__key_shard(sk, shard);
        if (mdb_get(txn, state, &skv, &sv) ||
            stor__state_decode(sv.mv_data, sv.mv_size, &st))
            abort();
        for (uint32_t j = 0; j < c.count; j++) {
            if (first + j <= st.base_index)
                continue;
            raft_term t;
            uint8_t type, h[16 + 4 + 9];
            const uint8_t *d;
            uint32_t len;
            if (stor__logc_entry(&c, j, &t, &type, &d, &len))
                abort();
            stor__key_log(h, shard, first + j);
            stor__put32(h + 16, len + 9);
            stor__put64(h + 20, t);
            h[28] = type;
            if (rk_buf_append(&old, h, sizeof h) ||
                rk_buf_append(&old, d, len))
                abort();
        }
    }
    mdb_cursor_close(cur);
    for (size_t off = 0; off < old.len;) {
        uint32_t len = stor__get32(old.data + off + 16);
        k.mv_size = 16;
        k.mv_data = old.data + off;
        v.mv_size = len;
        v.mv_data = old.data + off + 20;
        if (mdb_put(txn, log, &k, &v, 0))
            abort();
        off += 20 + len;
    }
    rk_buf_free(&old);
    uint8_t vb[8];
    stor__put64(vb, version);
    k.mv_size = 14;
    k.mv_data = "format_version";
    v.mv_size = 8;
    v.mv_data = vb;
    if (mdb_drop(txn, logc, 1) || mdb_put(txn, meta, &k, &v, 0) ||
        mdb_txn_commit(txn))
        abort();
    mdb_env_close(env);
}
