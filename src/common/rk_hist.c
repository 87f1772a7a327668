/* Log-linear latency histogram. */
#include "rk_hist.h"

#include <string.h>

#include "rk_assert.h"

/*
 * Bucket index of v: below SUB the value itself; otherwise, with m the
 * position of v's top bit (m >= SUB_BITS) and e = m - SUB_BITS, the top
 * SUB_BITS + 1 bits of v select one of SUB buckets of the range
 * [2^m, 2^(m+1)): idx = (e + 1) * SUB + ((v >> e) - SUB).
 */
uint32_t rk_hist_bucket(uint64_t v)
{
    if (v < RK_HIST_SUB)
        return (uint32_t)v;
    unsigned m = 63u - (unsigned)__builtin_clzll(v);
    unsigned e = m - RK_HIST_SUB_BITS;
    return (e + 1) * RK_HIST_SUB + (uint32_t)((v >> e) - RK_HIST_SUB);
}

uint64_t rk_hist_bucket_lo(uint32_t idx)
{
    RK_ASSERT(idx < RK_HIST_BUCKETS);
    if (idx < RK_HIST_SUB)
        return idx;
    unsigned e = idx / RK_HIST_SUB - 1;
    uint64_t mant = RK_HIST_SUB + idx % RK_HIST_SUB;
    return mant << e;
}

uint64_t rk_hist_bucket_hi(uint32_t idx)
{
    RK_ASSERT(idx < RK_HIST_BUCKETS);
    if (idx < RK_HIST_SUB)
        return idx;
    unsigned e = idx / RK_HIST_SUB - 1;
    /* lo + 2^e - 1, which is UINT64_MAX for the very last bucket. */
    return rk_hist_bucket_lo(idx) + ((UINT64_C(1) << e) - 1);
}

void rk_hist_init(struct rk_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min = UINT64_MAX;
}

void rk_hist_reset(struct rk_hist *h)
{
    rk_hist_init(h);
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
    if (a != 0 && b > UINT64_MAX / a)
        return UINT64_MAX;
    return a * b;
}

void rk_hist_record_n(struct rk_hist *h, uint64_t v, uint64_t n)
{
    if (n == 0)
        return;
    h->buckets[rk_hist_bucket(v)] += n;
    h->count += n;
    h->sum = sat_add(h->sum, sat_mul(v, n));
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

void rk_hist_record(struct rk_hist *h, uint64_t v)
{
    rk_hist_record_n(h, v, 1);
}

void rk_hist_merge(struct rk_hist *dst, const struct rk_hist *src)
{
    if (src->count == 0)
        return;
    for (uint32_t i = 0; i < RK_HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum = sat_add(dst->sum, src->sum);
    if (src->min < dst->min)
        dst->min = src->min;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t rk_hist_count(const struct rk_hist *h)
{
    return h->count;
}

uint64_t rk_hist_min(const struct rk_hist *h)
{
    return h->count ? h->min : 0;
}

uint64_t rk_hist_max(const struct rk_hist *h)
{
    return h->max;
}

double rk_hist_mean(const struct rk_hist *h)
{
    return h->count ? (double)h->sum / (double)h->count : 0.0;
}

uint64_t rk_hist_percentile(const struct rk_hist *h, double p)
{
    if (h->count == 0)
        return 0;
    if (!(p > 0.0)) /* also catches NaN */
        return h->min;
    if (p >= 100.0)
        return h->max;
    /* Rank of the wanted value, 1-based: ceil(p/100 * count), computed
     * without libm (rk_common needs libc only). */
    double x = p / 100.0 * (double)h->count;
    uint64_t rank = x >= (double)h->count ? h->count : (uint64_t)x;
    if ((double)rank < x)
        rank++;
    if (rank == 0)
        rank = 1;
    if (rank > h->count)
        rank = h->count;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < RK_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t v = rk_hist_bucket_hi(i);
            if (v > h->max)
                v = h->max;
            if (v < h->min)
                v = h->min;
            return v;
        }
    }
    return h->max; /* not reached while the counts agree */
}

void rk_hist_summarize(const struct rk_hist *h, struct rk_hist_summary *out)
{
    out->count = h->count;
    out->min = rk_hist_min(h);
    out->max = rk_hist_max(h);
    out->mean = rk_hist_mean(h);
    out->p50 = rk_hist_percentile(h, 50.0);
    out->p90 = rk_hist_percentile(h, 90.0);
    out->p99 = rk_hist_percentile(h, 99.0);
    out->p999 = rk_hist_percentile(h, 99.9);
}

bool rk_hist_next(const struct rk_hist *h, struct rk_hist_iter *it)
{
    while (it->idx < RK_HIST_BUCKETS) {
        uint32_t i = it->idx++;
        if (h->buckets[i] == 0)
            continue;
        it->lo = rk_hist_bucket_lo(i);
        it->hi = rk_hist_bucket_hi(i);
        it->count = h->buckets[i];
        it->cumulative += h->buckets[i];
        return true;
    }
    return false;
}

uint64_t rk_hist_count_le(const struct rk_hist *h, uint64_t le)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < RK_HIST_BUCKETS; i++) {
        if (rk_hist_bucket_hi(i) > le)
            break;
        n += h->buckets[i];
    }
    return n;
}
