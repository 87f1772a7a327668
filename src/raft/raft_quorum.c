/* Majority computations over the voters of one configuration. */
#include "raft_quorum.h"

uint64_t raft__quorum_value(uint64_t *vals, uint32_t n)
{
    if (n == 0)
        return 0;
    /* Insertion sort, descending: n <= RAFT_MAX_MEMBERS. */
    for (uint32_t i = 1; i < n; i++) {
        uint64_t v = vals[i];
        uint32_t j = i;
        while (j > 0 && vals[j - 1] < v) {
            vals[j] = vals[j - 1];
            j--;
        }
        vals[j] = v;
    }
    /* Thesis §3.6.2: an index is committed once a majority stores it. */
    return vals[n / 2];
}

enum raft_vote_result raft__quorum_vote(uint32_t granted, uint32_t rejected,
                                        uint32_t n)
{
    uint32_t q = n / 2 + 1;
    if (granted >= q)
        return RAFT_VOTE_WON;
    if (rejected > n - q)
        return RAFT_VOTE_LOST;
    return RAFT_VOTE_PENDING;
}
