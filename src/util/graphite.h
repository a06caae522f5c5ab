/* graphite.h: pushes the figures of GET /metrics to a carbon plaintext
 * receiver (USE_METRICS_GRAPHITE, GRAPHITE_URL, GRAPHITE_PREFIX), from a
 * thread of its own: a receiver that is down or slow costs that thread
 * its timeouts and never touches a request. */
#ifndef SL_GRAPHITE_H
#define SL_GRAPHITE_H

#include <stdint.h>

#include "metrics.h"

/* Carbon's plaintext lines for a Prometheus text: one "PATH VALUE TS\n"
 * per sample, PATH being prefix.name.labelvalue... (label values in their
 * order, each character outside [A-Za-z0-9_-] written as '_'); comments and
 * samples that are not finite numbers are left out. */
void sl_graphite_lines(const char *prom, size_t n, const char *prefix, int64_t ts_s, sl_text *out);

typedef struct sl_graphite sl_graphite;

/* Starts pushing every interval_s seconds what collect(ctx, t) writes to
 * host:port (port 2003 when left out). 0, SL_EINVAL (a bad address),
 * SL_ENOMEM or SL_EIO. */
int sl_graphite_start(const char *url, const char *prefix, int interval_s, void (*collect)(void *ctx, sl_text *t),
                      void *ctx, sl_graphite **out);
/* Stops the thread (at most one connection timeout later) and frees g. */
void sl_graphite_stop(sl_graphite *g);

#endif
