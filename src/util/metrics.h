/* metrics.h: what every layer needs to count itself for GET /metrics
 * (the Prometheus text format, version 0.0.4): a growing text buffer, and
 * latency histograms with fixed buckets that are updated with relaxed
 * atomic adds, so that counting costs a few instructions and no lock, no
 * allocation and no store read.
 *
 * Each layer keeps its own counters where they happen (the HTTP server per
 * route, the engine per queue, the embedded store per commit) and writes
 * them out on request with sl_text_printf; main.c joins the parts. */
#ifndef SL_METRICS_H
#define SL_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* A text that grows as it is written; oom is set (and the text kept as it
 * was) once an allocation failed. Free p. */
typedef struct sl_text {
    char *p;
    size_t n, cap;
    int oom;
} sl_text;

void sl_text_printf(sl_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A counter's or gauge's "# HELP" and "# TYPE" lines. */
void sl_metric_head(sl_text *t, const char *name, const char *type, const char *help);

/* Latency histograms in microseconds, printed in seconds. The bucket upper
 * bounds (SL_HIST_BOUNDS_US) run from 0.5 ms to 30 s; the last bucket is
 * +Inf. */
#define SL_HIST_N 16
extern const int64_t sl_hist_bounds_us[SL_HIST_N - 1];

typedef struct {
    uint64_t bucket[SL_HIST_N]; /* not cumulative: each value lands in one */
    uint64_t sum_us;
} sl_hist;

static inline void sl_hist_observe(sl_hist *h, int64_t us) {
    int i = 0;
    if (us < 0) us = 0;
    while (i < SL_HIST_N - 1 && us > sl_hist_bounds_us[i])
        i++;
    __atomic_add_fetch(&h->bucket[i], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&h->sum_us, (uint64_t)us, __ATOMIC_RELAXED);
}

/* The clock latencies are measured with: monotonic, in microseconds (not
 * the injectable test clock, which stands still in the tests). */
static inline int64_t sl_latency_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static inline void sl_count(uint64_t *c, uint64_t n) {
    __atomic_add_fetch(c, n, __ATOMIC_RELAXED);
}

static inline uint64_t sl_counted(const uint64_t *c) {
    return __atomic_load_n(c, __ATOMIC_RELAXED);
}

/* Writes h as NAME_bucket{LABELS,le="..."}, NAME_sum{LABELS} and
 * NAME_count{LABELS}; labels is the text between the braces, without them
 * ("" for none). Nothing is written for a histogram that saw nothing.
 * Label values need no escaping: they are names Sluice validated
 * ([A-Za-z0-9_.-]) and route patterns. */
void sl_hist_print(sl_text *t, const char *name, const char *labels, const sl_hist *h);

#endif
