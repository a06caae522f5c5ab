/* hist.h: a log-linear latency histogram (HdrHistogram-like), header only.
 *
 * Values are nanoseconds. Below 128 ns each value has its own bucket; above,
 * each power of two is split into 64 sub-buckets, so a reported percentile is
 * within 1/64 (1.6%) of the true value. Recording is a shift and an add, so
 * the histogram costs the load generator nothing measurable, and a run of any
 * length uses the same 20 KiB per operation per thread. */
#ifndef BENCH_HIST_H
#define BENCH_HIST_H

#include <stdint.h>
#include <string.h>
#include <time.h>

#define HIST_BUCKETS (128 + 40 * 64)

typedef struct {
    uint64_t n, sum_ns, max_ns, errors;
    uint64_t b[HIST_BUCKETS];
} hist;

static inline int hist_index(uint64_t v) {
    if (v < 128) return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 6;
    int idx = 128 + (shift - 1) * 64 + (int)((v >> shift) - 64);
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

static inline uint64_t hist_value(int idx) {
    if (idx < 128) return (uint64_t)idx;
    int shift = (idx - 128) / 64 + 1;
    uint64_t mant = (uint64_t)((idx - 128) % 64 + 64);
    return (mant << shift) + ((1ull << shift) >> 1);
}

static inline void hist_add(hist *h, uint64_t ns) {
    h->n++;
    h->sum_ns += ns;
    if (ns > h->max_ns) h->max_ns = ns;
    h->b[hist_index(ns)]++;
}

static inline void hist_merge(hist *into, const hist *from) {
    into->n += from->n;
    into->sum_ns += from->sum_ns;
    into->errors += from->errors;
    if (from->max_ns > into->max_ns) into->max_ns = from->max_ns;
    for (int i = 0; i < HIST_BUCKETS; i++) into->b[i] += from->b[i];
}

/* The value at quantile q (0..1), in nanoseconds; 0 for an empty histogram. */
static inline uint64_t hist_quantile(const hist *h, double q) {
    if (h->n == 0) return 0;
    uint64_t rank = (uint64_t)(q * (double)h->n);
    if (rank >= h->n) rank = h->n - 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen > rank) {
            uint64_t v = hist_value(i);
            return v > h->max_ns ? h->max_ns : v;
        }
    }
    return h->max_ns;
}

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

#endif
