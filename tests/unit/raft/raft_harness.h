/* Test harness: N Raft cores over raft_memlog with manual message delivery. */
#ifndef RAFT_HARNESS_H
#define RAFT_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "raft.h"
#include "raft_memlog.h"

#define H_MAXN 7
#define H_MAX_APPLIED 4096

struct h_msg {
    struct raft_msg m; /* deep copy: entries and chunk data owned */
};

struct h_applied {
    raft_index index;
    raft_term term;
    uint8_t type;
    uint32_t len;
    char data[32];
};

struct cluster {
    uint32_t n;
    struct raft_config base; /* template for every node (id/log set per node) */
    struct raft_node *nodes[H_MAXN + 1]; /* 1-based ids */
    struct raft_memlog *logs[H_MAXN + 1];
    bool down[H_MAXN + 1];
    bool cut[H_MAXN + 1][H_MAXN + 1]; /* drop messages from -> to */
    bool hold_sync[H_MAXN + 1]; /* do not process readies of this node */
    struct h_msg *q;
    uint32_t nq, capq;
    struct h_applied *app[H_MAXN + 1];
    uint32_t n_app[H_MAXN + 1];
    raft_index app_next[H_MAXN + 1]; /* next index to apply (0 = any) */
    struct raft_read_state reads[H_MAXN + 1][64];
    uint32_t n_reads[H_MAXN + 1];
    uint32_t n_chunks_staged[H_MAXN + 1];
    uint32_t n_installs[H_MAXN + 1];
    uint32_t sent[RAFT_MSG__COUNT]; /* messages queued per type */
    /* Append acks naming an index their sender had not synced (a bug);
     * asserted to stay 0 unless allow_early_acks. */
    uint32_t early_acks;
    bool allow_early_acks;
};

/* Calls of raft_log_ops.entries the cores made (all clusters): the harness
 * gives every node raft_memlog_ops with that one counted. */
extern uint64_t h_entries_reads;

/* Creates n nodes with ids 1..n all voters (bootstrap conf). `voters` = 0
 * means all n; otherwise nodes voters+1..n start with an EMPTY conf (to be
 * added later). */
void h_init(struct cluster *c, uint32_t n);
void h_init_ex(struct cluster *c, uint32_t n, uint32_t voters,
               const struct raft_config *base);
void h_free(struct cluster *c);
/* Processes node i's readies (persist, queue messages, record applied) until
 * none is left. */
void h_ready(struct cluster *c, raft_id i);
void h_ready_all(struct cluster *c);
/* Second half of a ready taken by hand (whose rd.msgs were queued):
 * persist, queue msgs_after_sync, record applied entries, advance. */
void h_complete(struct cluster *c, raft_id i, const struct raft_ready *rd);
/* Queues a deep copy of m (for tests that drive a ready by hand). */
void h_enqueue(struct cluster *c, const struct raft_msg *m);
/* Delivers queued message k (removing it); returns raft_step's code. */
int h_deliver(struct cluster *c, uint32_t k);
/* Delivers every queued message addressed to `to` (in order), then its
 * readies; returns the number delivered. */
uint32_t h_deliver_to(struct cluster *c, raft_id to);
/* Repeats readies + delivery until no message is left (bounded). */
void h_stabilize(struct cluster *c);
void h_tick(struct cluster *c, raft_id i, uint32_t k);
void h_tick_all(struct cluster *c, uint32_t k);
/* Index of the first queued message matching (from, to, type); 0 = any
 * from/to. -1 if none. */
int h_find(const struct cluster *c, raft_id from, raft_id to, int type);
uint32_t h_count(const struct cluster *c, raft_id from, raft_id to, int type);
void h_drop_all(struct cluster *c);
void h_drop(struct cluster *c, uint32_t k);
/* Partitions: isolate i (both directions), heal everything. */
void h_isolate(struct cluster *c, raft_id i);
void h_heal(struct cluster *c);
/* Crash (lose unsynced state) and restart from the memlog. */
void h_crash(struct cluster *c, raft_id i);
void h_restart(struct cluster *c, raft_id i);
/* Snapshot at node i's applied index with state bytes (len). */
void h_snapshot(struct cluster *c, raft_id i, size_t len);
/* Leader id if exactly one node is leader in the highest term, else 0. */
raft_id h_leader(const struct cluster *c);
/* Proposes a string on node i; returns the code, stores the index. */
int h_propose(struct cluster *c, raft_id i, const char *s, raft_index *idx);
void h_status(const struct cluster *c, raft_id i, struct raft_status *st);
raft_term h_term(const struct cluster *c, raft_id i);
int h_role(const struct cluster *c, raft_id i);
raft_index h_commit(const struct cluster *c, raft_id i);
raft_index h_last(const struct cluster *c, raft_id i);
/* Checks that all nodes applied the same entry at every common index. */
void h_check_applied(const struct cluster *c);
/* Builds a valid message header from -> to of type with term. */
struct raft_msg h_msg(raft_id from, raft_id to, int type, raft_term term);
raft_term h_log_term(struct cluster *c, raft_id i, raft_index idx);

/* Elect node i with a campaign and full delivery. */
#define CLUSTER_ELECT(c, i)                                                    \
    do {                                                                       \
        assert_int_equal(raft_campaign((c)->nodes[i]), 0);                     \
        h_stabilize(c);                                                        \
        assert_int_equal(h_role(c, i), RAFT_LEADER);                           \
    } while (0)

/* Elect node i with node v's vote alone: one round of messages, so the new
 * leader's first appends (its no-op) are still queued, nothing committed. */
#define CLUSTER_ELECT_BY(c, i, v)                                              \
    do {                                                                       \
        assert_int_equal(raft_campaign((c)->nodes[i]), 0);                     \
        h_ready(c, i);                                                         \
        h_deliver_to(c, v);                                                    \
        h_deliver_to(c, i);                                                    \
        assert_int_equal(h_role(c, i), RAFT_LEADER);                           \
    } while (0)

#define H_TEST(f) cmocka_unit_test(f)

#endif
