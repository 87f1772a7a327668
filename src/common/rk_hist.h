/* Log-linear latency histogram (HDR-like): record ns, merge, percentiles. */
#ifndef RK_HIST_H
#define RK_HIST_H

/*
 * Values are unsigned 64-bit (nanoseconds by convention). Values below
 * RK_HIST_SUB (64) have a bucket each; above, every power-of-two range
 * [2^k, 2^(k+1)) is split into RK_HIST_SUB equal buckets, so a bucket is at
 * most 1/64 (1.6%) of its values wide and a percentile reported as its
 * bucket's upper bound is within 1.6% above the true value. count, sum, min
 * and max are exact. The whole uint64 range is covered: nothing is clamped.
 *
 * A struct rk_hist is a plain value (about 30 KiB): embed it or malloc it,
 * rk_hist_init it, and merge histograms of many threads or runs with
 * rk_hist_merge. It is not thread-safe.
 *
 * Prometheus: rk_hist_next walks the non-empty buckets in order with their
 * bounds and cumulative counts; rk_hist_count_le gives the cumulative count
 * for an arbitrary `le` bound (exact when the bound is a bucket's upper
 * bound, otherwise counting only buckets wholly at or below it).
 */

#include <stdbool.h>
#include <stdint.h>

#define RK_HIST_SUB_BITS 6
#define RK_HIST_SUB      (1u << RK_HIST_SUB_BITS)
/* Linear buckets [0, SUB) plus SUB buckets for each exponent 6..63. */
#define RK_HIST_BUCKETS (RK_HIST_SUB * (64 - RK_HIST_SUB_BITS + 1))

struct rk_hist {
    uint64_t count;
    uint64_t sum; /* saturates at UINT64_MAX */
    uint64_t min; /* UINT64_MAX while empty */
    uint64_t max;
    uint64_t buckets[RK_HIST_BUCKETS];
};

struct rk_hist_summary {
    uint64_t count;
    uint64_t min, max;
    double mean;
    uint64_t p50, p90, p99, p999;
};

/* Walks non-empty buckets: zero it, then call rk_hist_next until false. */
struct rk_hist_iter {
    uint32_t idx;        /* next bucket to look at */
    uint64_t lo, hi;     /* bounds of the current bucket, inclusive */
    uint64_t count;      /* values in it */
    uint64_t cumulative; /* values in it and every bucket below */
};

void rk_hist_init(struct rk_hist *h);
void rk_hist_reset(struct rk_hist *h);

void rk_hist_record(struct rk_hist *h, uint64_t v);
/* Records v n times (a coordinated-omission correction may use it). */
void rk_hist_record_n(struct rk_hist *h, uint64_t v, uint64_t n);
/* dst += src. */
void rk_hist_merge(struct rk_hist *dst, const struct rk_hist *src);

uint64_t rk_hist_count(const struct rk_hist *h);
/* 0 when empty. */
uint64_t rk_hist_min(const struct rk_hist *h);
uint64_t rk_hist_max(const struct rk_hist *h);
double rk_hist_mean(const struct rk_hist *h);

/* Value at percentile p in [0, 100]: the upper bound of the bucket holding
 * the ceil(p/100 * count)-th smallest value, capped at max (so p = 100 gives
 * max exactly, and p = 0 gives min). 0 when empty. */
uint64_t rk_hist_percentile(const struct rk_hist *h, double p);
void rk_hist_summarize(const struct rk_hist *h, struct rk_hist_summary *out);

bool rk_hist_next(const struct rk_hist *h, struct rk_hist_iter *it);
/* Number of recorded values in buckets whose upper bound is <= le. */
uint64_t rk_hist_count_le(const struct rk_hist *h, uint64_t le);

/* Bucket arithmetic (exposed for tests and exporters). */
uint32_t rk_hist_bucket(uint64_t v);
uint64_t rk_hist_bucket_lo(uint32_t idx);
uint64_t rk_hist_bucket_hi(uint32_t idx);

#endif
