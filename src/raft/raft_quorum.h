/* Majority computations over the voters of one configuration. */
#ifndef RAFT_QUORUM_H
#define RAFT_QUORUM_H

#include <stdint.h>

enum raft_vote_result {
    RAFT_VOTE_PENDING = 0,
    RAFT_VOTE_WON = 1,
    RAFT_VOTE_LOST = 2,
};

/* The largest value that a majority of the n values are >= to (n >= 1);
 * vals is reordered. 0 when n is 0. */
uint64_t raft__quorum_value(uint64_t *vals, uint32_t n);
/* Outcome of an election among n voters with the given tallies. */
enum raft_vote_result raft__quorum_vote(uint32_t granted, uint32_t rejected,
                                        uint32_t n);

#endif
