/* metrics.c: see metrics.h. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../sluice.h"
#include "metrics.h"

const int64_t sl_hist_bounds_us[SL_HIST_N - 1] = {500,    1000,    2500,    5000,    10000,
                                                  25000,  50000,   100000,  250000,  500000,
                                                  1000000, 2500000, 5000000, 10000000, 30000000};

void sl_text_printf(sl_text *t, const char *fmt, ...) {
    if (t->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = t->cap - t->n;
        int k = vsnprintf(t->p ? t->p + t->n : NULL, t->p ? room : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            t->oom = 1;
            return;
        }
        if (t->p && (size_t)k < room) {
            t->n += (size_t)k;
            return;
        }
        size_t cap = t->cap ? t->cap : 4096;
        while (cap - t->n <= (size_t)k)
            cap *= 2;
        char *p = sl_realloc(t->p, cap);
        if (!p) {
            t->oom = 1;
            if (t->p) t->p[t->n] = '\0';
            return;
        }
        t->p = p;
        t->cap = cap;
    }
}

void sl_metric_head(sl_text *t, const char *name, const char *type, const char *help) {
    sl_text_printf(t, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void sl_hist_print(sl_text *t, const char *name, const char *labels, const sl_hist *h) {
    uint64_t b[SL_HIST_N], total = 0;
    for (int i = 0; i < SL_HIST_N; i++)
        total += b[i] = sl_counted(&h->bucket[i]);
    if (total == 0) return;
    const char *sep = labels[0] ? "," : "";
    uint64_t cum = 0;
    for (int i = 0; i < SL_HIST_N; i++) {
        cum += b[i];
        if (i < SL_HIST_N - 1)
            sl_text_printf(t, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep,
                           (double)sl_hist_bounds_us[i] / 1e6, (unsigned long long)cum);
        else
            sl_text_printf(t, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
    }
    const char *open = labels[0] ? "{" : "", *close = labels[0] ? "}" : "";
    sl_text_printf(t, "%s_sum%s%s%s %.6f\n%s_count%s%s%s %llu\n", name, open, labels, close,
                   (double)sl_counted(&h->sum_us) / 1e6, name, open, labels, close, (unsigned long long)cum);
}
