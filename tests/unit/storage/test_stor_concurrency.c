/* Storage test: reads racing writes, compaction and map growth. */
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

#define ENTRY     3000
#define BATCHES   400
#define PER_BATCH 8

struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint32_t done;
    int err;
};

static void on_done(struct stor_batch *b, int status, void *arg)
{
    struct waiter *w = arg;
    (void)b;
    pthread_mutex_lock(&w->mu);
    if (status && !w->err)
        w->err = status;
    w->done++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Entry i's payload: a command whose value is ENTRY bytes of (i & 0xff). */
static size_t payload(uint8_t *buf, size_t cap, raft_index i)
{
    static uint8_t val[ENTRY];
    char key[16];
    memset(val, (int)(i & 0xff), sizeof val);
    snprintf(key, sizeof key, "k%llu", (unsigned long long)(i % 32));
    struct stor_cmd c = {.op = STOR_CMD_PUT,
                         .key = key,
                         .klen = (uint32_t)strlen(key),
                         .value = val,
                         .vlen = ENTRY};
    size_t len;
    assert_int_equal(stor_cmd_encode(&c, buf, cap, &len), 0);
    return len;
}

static void check_entry(const struct raft_entry *e)
{
    struct stor_cmd c;
    assert_int_equal(stor_cmd_decode(e->data, e->len, &c), 0);
    assert_int_equal(c.vlen, ENTRY);
    const uint8_t *v = c.value;
    assert_int_equal(v[0], e->index & 0xff);
    assert_int_equal(v[ENTRY - 1], e->index & 0xff);
}

static void test_reads_race_writes_and_growth(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("conc");
    /* 1 MiB map: it must grow several times under the readers. The log
     * reaches LMDB at checkpoints (as chunks): every 20 ms here, so that
     * the readers read chunks as well as the tails, and the map grows. */
    struct stor_opts o = {.path = dir,
                          .cluster_id = 1,
                          .node_id = 1,
                          .create = true,
                          .map_size = 1 << 20,
                          .snap_chunk_bytes = 4096,
                          .checkpoint_ms = 20,
                          .conf_decode = tu_conf_decode};
    struct stor *s = NULL;
    char emsg[RK_ERRMSG_SIZE];
    assert_int_equal(stor_open(&o, &s, emsg), 0);
    tu_create_shard(s, 1);
    struct stor_shard *sh = stor_shard_get(s, 1);
    struct waiter w = {.mu = PTHREAD_MUTEX_INITIALIZER,
                       .cv = PTHREAD_COND_INITIALIZER};
    struct stor_batch *bs[2];
    assert_int_equal(stor_batch_new(&bs[0]), 0);
    assert_int_equal(stor_batch_new(&bs[1]), 0);
    static uint8_t bufs[PER_BATCH][ENTRY + 64];
    struct rk_rand rng;
    rk_rand_seed(&rng, 99);
    raft_index next = 1;
    uint64_t reads = 0, compacted = 0, stale = 0, chunks = 0;
    uint32_t submitted = 0;
    while (submitted < BATCHES) {
        pthread_mutex_lock(&w.mu);
        bool can = submitted < 2 || w.done >= submitted - 1;
        int err = w.err;
        pthread_mutex_unlock(&w.mu);
        assert_int_equal(err, 0);
        if (can) {
            struct stor_batch *b = bs[submitted % 2];
            struct raft_entry ents[PER_BATCH];
            stor_batch_reset(b);
            for (int j = 0; j < PER_BATCH; j++, next++) {
                ents[j] = (struct raft_entry){
                    .term = 1, .index = next, .data = bufs[j]};
                ents[j].len = (uint32_t)payload(bufs[j], sizeof bufs[j], next);
            }
            assert_int_equal(stor_batch_append(b, 1, ents, PER_BATCH), 0);
            assert_int_equal(stor_batch_apply(b, 1, ents, PER_BATCH, NULL), 0);
            if (next > 2550 && submitted % 10 == 0)
                assert_int_equal(stor_batch_compact(b, 1, next - 2500), 0);
            assert_int_equal(stor_batch_submit(s, b, on_done, &w), 0);
            submitted++;
        }
        /* Loop-side reads while the storage thread writes. */
        for (int r = 0; r < 4; r++) {
            raft_index first = stor_log_first_index(sh);
            raft_index last = stor_log_last_index(sh);
            if (last < first)
                continue;
            raft_index lo = first + rk_rand_below(&rng, last - first + 1);
            struct raft_entry *ents;
            uint32_t n;
            int rc = stor_log_entries(sh, lo, last + 1, 64 << 10, &ents, &n);
            if (rc == RK_ECOMPACTED) {
                compacted++;
                continue;
            }
            assert_int_equal(rc, 0);
            assert_true(n >= 1);
            for (uint32_t j = 0; j < n; j++) {
                assert_int_equal(ents[j].index, lo + j);
                check_entry(&ents[j]);
            }
            free(ents);
            raft_term t;
            rc = stor_log_term(sh, lo, &t);
            assert_true(rc == 0 || rc == RK_ECOMPACTED);
            struct stor_value v;
            rc = stor_kv_get(s, 1, "k7", 2, &v);
            if (rc == 0) {
                assert_int_equal(v.len, ENTRY);
                assert_int_equal(((uint8_t *)v.data)[0], v.revision & 0xff);
                free(v.data);
            }
            reads++;
        }
        /* A snapshot export now and then (growth may drop it: ESTALE). */
        if (rk_rand_below(&rng, 16) == 0) {
            struct raft_snapshot_meta m;
            assert_int_equal(stor_snapshot_meta(sh, &m), 0);
            if (m.index) {
                void *d;
                uint32_t l;
                bool last;
                int rc = stor_snapshot_chunk(sh, m.index, 0, &d, &l, &last);
                if (rc == RK_ESTALE)
                    stale++;
                else {
                    assert_int_equal(rc, 0);
                    free(d);
                    chunks++;
                }
            }
        }
    }
    pthread_mutex_lock(&w.mu);
    while (w.done < submitted)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    assert_int_equal(w.err, 0);
    struct stor_stats st;
    stor_stats(s, &st);
    fprintf(stderr,
            "concurrency: %llu reads (%llu hit compaction), %llu chunks, "
            "%llu stale exports, %llu map growths, map %llu MiB\n",
            (unsigned long long)reads, (unsigned long long)compacted,
            (unsigned long long)chunks, (unsigned long long)stale,
            (unsigned long long)st.grows,
            (unsigned long long)(st.map_size >> 20));
    assert_true(st.grows >= 2);
    assert_true(reads > 0);
    assert_int_equal(stor_log_last_index(sh), (raft_index)BATCHES * PER_BATCH);
    stor_batch_free(bs[0]);
    stor_batch_free(bs[1]);
    stor_close(s);
    tu_rmrf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_race_writes_and_growth),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
