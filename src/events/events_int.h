/* events_int.h: what the event log's files share and nothing else sees:
 * the columns of the index and directory tables (log.c describes the
 * tables) and the names of index keys. */
#ifndef SL_EVENTS_INT_H
#define SL_EVENTS_INT_H

#include "../util/metrics.h"
#include "events.h"

enum { IX_IKEY, IX_BUCKET, IX_SHARD, IX_RECORDED, IX_ID, IX_TYPE, IX_TAGS };
enum { BK_IKEY, BK_MONTH, BK_BUCKET, BK_WIDTH, BK_SHARDS };

/* An index key: "<account>/<kind>/<key>", kind 'a' (all; key ""), 't'
 * (a type) or 'g' (a tag). */
#define IKEY_MAX (SL_NAME_MAX + 3 + SL_EV_ID_MAX + 1)
void ev_ikey(char out[IKEY_MAX], const char *account, char kind, const char *key);

/* The log's store and its deployment's bucket width (log.c). */
sl_store *ev_store(const sl_evlog *l);
int64_t ev_width(const sl_evlog *l);

/* log.c: counts a query page that began at t0_us (sl_latency_us). */
void ev_note_query(sl_evlog *l, int64_t t0_us);

#endif
