/* Helpers shared by the storage tests: temp dirs, commands, batches. */
#ifndef STOR_TEST_UTIL_H
#define STOR_TEST_UTIL_H

#include <stdbool.h>
#include <stdint.h>

#include "stor.h"

/* Makes a fresh directory under /tmp; returns a malloc'd path. */
char *tu_mkdtemp(const char *tag);
/* rm -rf path (bounded: only regular files and directories). */
void tu_rmrf(const char *path);
/* cmocka fixtures: *state = a fresh temporary dir; removed and freed. */
int tu_dir_setup(void **state);
int tu_dir_teardown(void **state);

/* Opens (creating) a store with cluster 1, node 1 at dir. */
struct stor *tu_open(const char *dir, size_t map_size, uint32_t chunk);

/* The test conf-change decoder: type(1) node(8 BE). */
int tu_conf_decode(const void *buf, size_t len, struct raft_conf_change *out);

/* Encodes a PUT command into buf (cap bytes); returns its length. */
size_t tu_put_cmd(void *buf, size_t cap, uint64_t client, uint64_t seq,
                  const char *key, const void *val, uint32_t vlen);

/* stor_check(s): its status, its message printed to stderr if not 0. */
/* Rewrites a closed data dir into the layout of format `version` (3 or
 * before): the log's chunks become one record per entry in "log", "logc"
 * goes, meta says `version`. */
void tu_old_log_layout(const char *dir, uint64_t version);
int tu_check(struct stor *s);
/* Fixture end: checks the store (tu_check), closes it, removes and frees
 * the dir; returns tu_check's result. */
int tu_close_rm(struct stor *s, char *dir);
/* Hands b to the storage thread (stor_batch_submit) and waits for its done
 * callback; returns its status. */
int tu_submit_wait(struct stor *s, struct stor_batch *b);

/* Commits a batch that creates shard `id` with voters 1,2,3. */
void tu_create_shard(struct stor *s, uint64_t id);

/* Appends and applies one command as entry `index` of `term` on `shard`,
 * in a batch of its own, and commits it; the command's result goes to
 * *out. Returns 0 or the failing step's error (encode, append, apply,
 * commit). */
int tu_run(struct stor *s, uint64_t shard, uint64_t term, uint64_t index,
           const struct stor_cmd *cmd, struct stor_result *out);

/* Appends and applies entries [first, first+n) of term `term` whose command
 * is PUT key "k<index % 64>" = "v<index>" and PUT "counter" is not used:
 * one command per entry. Returns the batch status. */
int tu_append_apply(struct stor *s, uint64_t shard, uint64_t first, uint32_t n,
                    uint64_t term, bool apply);

/* Exports shard `id` of `from` chunk by chunk (each an RKS2 chunk of at
 * most max_len bytes when max_len > 0), stages the chunks in `to` one batch
 * each and installs the snapshot there. meta_out and chunks (both may be
 * NULL) get its metadata and chunk count. 0, or -1 with the reason on
 * stderr. */
/* The log of node 4 joining a group of {1,2,3} through its learner:
 * entries 1-4 of term 1 = no-op, add-learner 4, promote 4, remove
 * `removed`, in tu_conf_decode's format; cc holds the changes' bytes. */
void tu_join_entries(struct raft_entry ents[4], uint8_t cc[3][9],
                     uint64_t removed);

int tu_transfer(struct stor *from, struct stor *to, uint64_t id,
                uint32_t max_len, struct raft_snapshot_meta *meta_out,
                uint32_t *chunks);

#endif
