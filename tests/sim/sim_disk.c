/* The simulator's durable storage: thin wrappers over raft_memlog. */
#include <stdlib.h>
#include <string.h>

#include "raft_memlog.h"
#include "sim_disk.h"

struct raft_memlog *sim_disk_new(uint32_t snapshot_chunk)
{
    struct raft_memlog *d = raft_memlog_new();
    if (d != NULL)
        raft_memlog_set_chunk_size(d, snapshot_chunk);
    return d;
}

void sim_disk_free(struct raft_memlog *d)
{
    raft_memlog_free(d);
}

void sim_disk_set_conf(struct raft_memlog *d,
                       const struct raft_conf_state *conf)
{
    raft_memlog_set_conf(d, conf);
    raft_memlog_sync(d);
}

int sim_disk_bootstrap(struct raft_memlog *d,
                       const struct raft_conf_state *conf, const void *image,
                       size_t len)
{
    struct raft_entry first = {.term = 1, .index = 1, .type = RAFT_ENTRY_NOOP};
    struct raft_hard_state hs = {.term = 1, .vote = 0, .commit = 1};
    int rc = raft_memlog_append(d, &first, 1);
    if (rc != 0)
        return rc;
    raft_memlog_set_hard_state(d, &hs);
    raft_memlog_set_conf(d, conf);
    raft_memlog_sync(d);
    return raft_memlog_snapshot_create(d, 1, conf, image, len);
}

const struct raft_log_ops *sim_disk_ops(void)
{
    return &raft_memlog_ops;
}

int sim_disk_persist(struct raft_memlog *d, const struct raft_ready *rd)
{
    return raft_memlog_persist_ready(d, rd);
}

void sim_disk_crash(struct raft_memlog *d)
{
    raft_memlog_crash(d);
}

void sim_disk_load(struct raft_memlog *d, struct sim_durable *out)
{
    const void *data;
    size_t len;
    memset(out, 0, sizeof(*out));
    raft_memlog_hard_state(d, &out->hs);
    raft_memlog_conf(d, &out->conf);
    raft_memlog_snapshot(d, &out->snap, &data, &len);
}

int sim_disk_snapshot(struct raft_memlog *d,
                      const struct raft_snapshot_meta *meta, const void *image,
                      size_t len)
{
    return raft_memlog_snapshot_create(d, meta->index, &meta->conf, image, len);
}

const void *sim_disk_snapshot_image(struct raft_memlog *d, size_t *len)
{
    struct raft_snapshot_meta meta;
    const void *data = NULL;
    *len = 0;
    raft_memlog_snapshot(d, &meta, &data, len);
    return meta.index ? data : NULL;
}

raft_index sim_disk_first(struct raft_memlog *d)
{
    return raft_memlog_first_index(d);
}

raft_index sim_disk_last(struct raft_memlog *d)
{
    return raft_memlog_last_index(d);
}

raft_index sim_disk_synced(struct raft_memlog *d)
{
    return raft_memlog_synced_index(d);
}

int sim_disk_term(struct raft_memlog *d, raft_index i, raft_term *t)
{
    return raft_memlog_ops.term(d, i, t);
}

int sim_disk_entry(struct raft_memlog *d, raft_index i, struct raft_entry **blk)
{
    uint32_t n = 0;
    int rc = raft_memlog_ops.entries(d, i, i + 1, 0, blk, &n);
    if (rc == 0 && n != 1) {
        free(*blk);
        *blk = NULL;
        return RK_EUNAVAIL_LOG;
    }
    return rc;
}
