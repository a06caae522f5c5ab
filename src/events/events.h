/* events.h: the event log (DESIGN.md "The event log", API.md "Event log").
 *
 * An account's events are stored once (the event row) and indexed once per
 * query dimension (the 'all', 'type' and 'tag' indexes), each index cut into
 * partitions by time bucket and shard, so that a partition stays bounded
 * however long the log and however hot one key. Buckets have one width in
 * a deployment, so the buckets of all keys line up and never overlap. A query reads the
 * partitions of one index in position order and pages with continuation
 * tokens that name the position reached.
 *
 * Its pure parts, which touch no store and no clock, are each tested on
 * their own (tests/unit/test_events.c):
 *
 *   positions and their times   (recorded time in microseconds, id)
 *   the syntax of ids, types and tags
 *   buckets, months and shards   index.c
 *   the merge of partitions      index.c
 *   continuation tokens          page.c
 *
 * and the log on the store (log.c; tests/unit/test_evlog.c): its tables,
 * positions stamped by this node and the read horizon, ingest that is
 * idempotent by id, reading one event, and each account's retention.
 *
 * events/ sits on store.h and util only; it never includes queue/. */
#ifndef SL_EVENTS_H
#define SL_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "../sluice.h"
#include "../store/store.h"

#define SL_EV_ID_MAX 128     /* ids and types: [A-Za-z0-9_.:-]{1,128} */
#define SL_EV_TAG_MAX 64     /* tags: [A-Za-z0-9_.:=-]{1,64} */
#define SL_EV_FILTER_MAX 10  /* type or tag values of one query, tags of one event */
#define SL_EV_TOKEN_MAX 4096 /* characters of a continuation token */
#define SL_EV_TIME_LEN 27    /* "2026-12-04T09:00:00.123456Z" */
#define SL_EV_SECRET_LEN 32  /* the token secret, kept in the store */
/* The last microsecond a time may name: 9999-12-31T23:59:59.999999Z. */
#define SL_EV_TIME_LAST 253402300799999999LL

/* --- Positions ----------------------------------------------------------- */

/* An event's position: when the server recorded it (microseconds since the
 * epoch, UTC) and its id. Positions are unique and totally ordered: by time,
 * then by the id's bytes, which is the clustering order of the index tables
 * on both stores (Cassandra compares text as UTF-8 bytes, SQLite's BINARY
 * collation with memcmp). */
typedef struct {
    int64_t us;
    char id[SL_EV_ID_MAX + 1];
} sl_ev_pos;

/* <0, 0 or >0 as a is before, at or after b in ascending order. */
int sl_ev_pos_cmp(const sl_ev_pos *a, const sl_ev_pos *b);

/* A time of the API: an RFC 3339 date-time with any offset and up to six
 * fractional digits ("2026-12-04T10:00:00.5+01:00"; 'T' and 'Z' in either
 * case, as RFC 3339 allows), or integer milliseconds since the epoch
 * ("1764842400500"). Years 1970..9999 and no leap second; returns 0 and the
 * microseconds since the epoch, or SL_EINVAL. s is NUL-terminated. */
int sl_ev_time_parse(const char *s, int64_t *us);
/* Writes us (0..SL_EV_TIME_LAST) as UTC with exactly six fractional digits
 * and a 'Z', so that written times sort as strings; returns the length
 * (SL_EV_TIME_LEN), or 0 for a time out of that range. */
size_t sl_ev_time_format(int64_t us, char out[SL_EV_TIME_LEN + 1]);

/* The syntax of ids and types, and of tags (1 when valid). */
int sl_ev_id_valid(const char *s);
int sl_ev_tag_valid(const char *s);

/* --- Buckets, months and shards (index.c) -------------------------------- */

/* The index partition of an event: its bucket (the start of the time bucket
 * its recorded time falls in, in microseconds) and its shard. The width and
 * the shard count are recorded with each bucket in the bucket directory, so
 * a change of the deployment's settings applies to new buckets only. */
#define SL_EV_WIDTH_DEFAULT_US 60000000LL /* 60 s */
#define SL_EV_SHARDS_DEFAULT 4
#define SL_EV_SHARDS_MAX 64

int64_t sl_ev_bucket(int64_t us, int64_t width_us);
/* The month a bucket starts in, as the directory partitions it: 202612. */
int sl_ev_month(int64_t us);
/* The month after m, and the first microsecond of m. */
int sl_ev_month_next(int m);
int64_t sl_ev_month_start(int m);
/* hash(id) mod shards (FNV-1a). It only spreads writes: a reader reads
 * every shard of a bucket, so nothing depends on it but balance. */
int sl_ev_shard(const char *id, int shards);

/* --- The merge (index.c) ------------------------------------------------- */

/* One partition's slice, in the query's order (ascending, or descending
 * with desc). more: the slice stopped at its limit, so entries may follow
 * its last one. */
typedef struct {
    const sl_ev_pos *p;
    size_t n;
    int more;
} sl_ev_run;

/* An entry taken by the merge: run r, its entry i. */
typedef struct {
    uint32_t r, i;
} sl_ev_hit;

/* The most runs one merge takes: every shard of every key of a query. */
#define SL_EV_MERGE_MAX (SL_EV_FILTER_MAX * SL_EV_SHARDS_MAX)

/* Merges the runs (at most SL_EV_MERGE_MAX; more are not read) into one
 * sequence in the query's order, each position once (an event with two
 * wanted tags sits in two partitions; the first run that holds it supplies
 * it), at most limit hits into out. It stops early, setting *cut, where a
 * run that has more lies beyond its last entry: what follows could be out
 * of order, so the caller reads that run on from the last hit. Returns the
 * number of hits. */
size_t sl_ev_merge(const sl_ev_run *runs, size_t nruns, int desc, size_t limit, sl_ev_hit *out, int *cut);

/* --- Queries and continuation tokens (page.c) ---------------------------- */

/* A query and how far it got: what a continuation token carries. The type
 * and tag values are kept sorted and without repeats (sl_ev_query_canon),
 * so two queries with the same sets compare equal. end is the range's
 * frozen end. last is the position reached: the next page reads strictly
 * after it in the query's order. Its id may be "", which sorts before every
 * id: (t, "") ascending has reached every time before t, descending every
 * time from t on. */
typedef struct {
    char account[SL_NAME_MAX + 1];
    int ntypes, ntags;
    char types[SL_EV_FILTER_MAX][SL_EV_ID_MAX + 1];
    char tags[SL_EV_FILTER_MAX][SL_EV_TAG_MAX + 1];
    int desc;
    int64_t start_us, end_us; /* [start, end) */
    int has_last;
    sl_ev_pos last;
} sl_ev_query;

/* Sorts the type and tag values and drops repeats. */
void sl_ev_query_canon(sl_ev_query *q);
/* Whether two queries are the same (account, filters, order, range),
 * whatever position each reached. Both must be canonical. */
int sl_ev_query_same(const sl_ev_query *a, const sl_ev_query *b);

/* Writes q's token into out (at most SL_EV_TOKEN_MAX characters and a NUL)
 * and returns its length, or SL_EINVAL for a query that is not valid and
 * canonical. */
long sl_ev_token_make(const sl_ev_query *q, const unsigned char secret[SL_EV_SECRET_LEN],
                      char out[SL_EV_TOKEN_MAX + 1]);
/* Reads a token made under secret: 0 and *q, or SL_EINVAL for one that is
 * malformed, altered, or made under another secret. The caller checks that
 * it belongs to the account and matches the query it came with. */
int sl_ev_token_read(const char *s, size_t n, const unsigned char secret[SL_EV_SECRET_LEN], sl_ev_query *q);

/* --- Events ------------------------------------------------------------- */

#define SL_EV_STR_MAX 256    /* source, subject: 1..256 characters */
#define SL_EV_DCT_MAX 128    /* datacontenttype */
#define SL_EV_META_MAX 32    /* metadata entries; the API checks them */
#define SL_EV_DATA_MAX 65536 /* bytes of data's compact JSON */
#define SL_EV_RETENTION_DEFAULT 604800
#define SL_EV_RETENTION_MAX 31536000

/* An event as given (API.md "Events"). The strings are borrowed; NULL
 * means absent. metadata and data are compact JSON written by
 * the API in one canonical form (keys sorted, numbers as it writes them),
 * so that two events with equal values have equal strings: ingest compares
 * them as strings. metadata NULL means {}, data NULL means null. */
typedef struct {
    char id[SL_EV_ID_MAX + 1]; /* "" : the server makes one */
    char type[SL_EV_ID_MAX + 1];
    const char *source, *subject, *time, *datacontenttype;
    int ntags;
    char tags[SL_EV_FILTER_MAX][SL_EV_TAG_MAX + 1];
    const char *metadata, *data;
} sl_event;

/* NULL when ev may be stored, else the name of the first field out of its
 * rule (the id only when given): "id", "type", "source", ... */
const char *sl_event_check(const sl_event *ev);

/* An event as stored: the event (its strings owned by r), its position and
 * when it expires. Free with sl_stored_event_free. */
typedef struct {
    sl_event ev;
    int64_t recorded_us, expires_us;
    sl_result r;
} sl_stored_event;
void sl_stored_event_free(sl_stored_event *s);

/* --- The log on the store (log.c) ---------------------------------------- */

typedef struct sl_evlog sl_evlog;

/* width_us and shards are the deployment's: the first node to open the log
 * stores its own, and every node uses the stored ones from then on. */
typedef struct {
    int settle_ms;    /* the read horizon's distance from now; 0 on the embedded store */
    int64_t width_us; /* bucket width, whole seconds dividing a day; 0: SL_EV_WIDTH_DEFAULT_US */
    int shards;       /* 1..SL_EV_SHARDS_MAX; 0: SL_EV_SHARDS_DEFAULT */
    /* The store commits a batch of writes at once, all or nothing (the
     * embedded store): an ingest then writes each event confirmed, with
     * its index entries, in one commit, and a batch of events in one. 0:
     * the row unconfirmed with its entries first, then its confirmation
     * (Cassandra, where a batch is not seen all at once). */
    int atomic;
} sl_evlog_config;

/* The tables of the log, for `sluice schema` and sl_store_ensure, and each
 * by name for tests and tools (log.c describes them). */
const sl_table *const *sl_evlog_tables(size_t *n);
extern const sl_table sl_t_event, sl_t_event_index, sl_t_event_bucket, sl_t_event_settings, sl_t_event_meta;
/* Cassandra's table options for t (the text after WITH), or NULL: TWCS for
 * the tables whose rows all expire by TTL. */
const char *sl_evlog_table_options(const sl_table *t);

/* Opens the log on st (whose tables must exist; the embedded store makes
 * them) and reads or makes the deployment's settings and token secret.
 * Returns 0 and *out, SL_EINVAL for a config out of its rules, or a store
 * error. */
int sl_evlog_open(sl_store *st, const sl_evlog_config *cfg, sl_evlog **out);
void sl_evlog_close(sl_evlog *l);
/* GET /metrics: events ingested by outcome and the ingests' latency, query
 * pages and their latency, since the process started. */
struct sl_text;
void sl_evlog_metrics(sl_evlog *l, struct sl_text *t);
/* The token secret (the same on every node). */
const unsigned char *sl_evlog_secret(const sl_evlog *l);

/* The read horizon: no position before it can still be written. Now less
 * the settle time, and never past the oldest ingest of this node still in
 * flight, so that on the embedded store (settle 0) a read never passes an
 * event that a commit under way would add. */
int64_t sl_evlog_horizon(sl_evlog *l);

typedef enum {
    SL_EV_CREATED = 1, /* stored now */
    SL_EV_MATCHED,     /* the id exists with the same content: nothing stored */
    SL_EV_CONFLICT     /* the id exists with other content: nothing stored */
} sl_ev_outcome;

typedef struct {
    sl_ev_outcome outcome;
    char id[SL_EV_ID_MAX + 1];
    int64_t recorded_us, expires_us; /* the stored event's */
} sl_ev_receipt;

/* Stores ev in account's log, or finds it stored already (by id). Returns
 * 0 and the receipt; SL_EINVAL (ev fails sl_event_check) or SL_ETOOBIG
 * (data too large); SL_ETIMEOUT when its writes stayed slower than half
 * the settle time through every new position; or a store error. After an
 * error the event may or may not be stored, and a retry with the same id
 * is safe. */
int sl_evlog_put(sl_evlog *l, const char *account, const sl_event *ev, sl_ev_receipt *out);
/* n events (distinct ids) as sl_evlog_put each, out[i] for evs[i]; with
 * config.atomic in one commit. Returns 0 with every receipt, or the first
 * error (then each event may or may not be stored; a retry is safe). */
int sl_evlog_put_batch(sl_evlog *l, const char *account, const sl_event *evs, size_t n, sl_ev_receipt *out);
/* Reads one event: 0 and *out, or SL_ENOTFOUND (never stored, expired, or
 * its ingest not finished), or a store error. */
int sl_evlog_get(sl_evlog *l, const char *account, const char *id, sl_stored_event *out);

/* An account's retention in seconds (SL_EV_RETENTION_DEFAULT until set),
 * and setting it (1..SL_EV_RETENTION_MAX, else SL_EINVAL): events ingested
 * from then on expire that long after they were recorded. Each node reads
 * it again after at most a few seconds. */
int sl_evlog_retention(sl_evlog *l, const char *account, int *seconds);
int sl_evlog_set_retention(sl_evlog *l, const char *account, int seconds);
/* Forgets a deleted account's log: its events are gone from reads at once
 * on this node and within a few seconds on the others (each stays stored
 * until its TTL), its retention is the default again, and its
 * subscriptions are deleted. A re-created account of that name starts
 * with an empty log. 0 or a store error; a retry finishes the job. */
int sl_evlog_forget(sl_evlog *l, const char *account);

/* --- Queries on the store (query.c) ------------------------------------- */

#define SL_EV_LIMIT_MAX 1000

/* One page: events in the query's order (each freed by sl_ev_page_free),
 * and either done (the query is complete) or next, the query with the
 * position reached, to make the continuation token from. */
typedef struct {
    sl_stored_event *events;
    size_t n;
    int done;
    sl_ev_query next;
} sl_ev_page;

/* Reads the page of q (canonical; end capped at the horizon by the caller
 * on the first page) that follows its position, at most limit events
 * (1..SL_EV_LIMIT_MAX). Returns 0 and *out, SL_EINVAL, or a store error. */
int sl_evlog_query(sl_evlog *l, const sl_ev_query *q, int limit, sl_ev_page *out);
void sl_ev_page_free(sl_ev_page *p);

/* --- Subscriptions (sub.c) ---------------------------------------------- */

/* A subscription routes the events of its account's log that match its
 * filter into a queue of that account, at least once and in position
 * order, from startFrom on (API.md "Subscriptions"). Its row holds the
 * definition and the durable cursor: every matching event before the
 * cursor has been put in the queue. One node at a time works it, holding
 * a lease row; after each page put in the queue it advances the cursor
 * with a compare-and-set on the row's version. */
#define SL_EV_SUBS_MAX 100 /* subscriptions of one account */
#define SL_EV_SUB_PAGE 500 /* events read and put in the queue at once, then one advance */

typedef enum { SL_SUB_NOW = 0, SL_SUB_EARLIEST = 1, SL_SUB_TIME = 2 } sl_sub_start;
typedef enum { SL_SUB_ACTIVE = 0, SL_SUB_QUEUE_MISSING = 1, SL_SUB_DELETED = 2 } sl_sub_state;

typedef struct {
    char name[SL_NAME_MAX + 1], queue[SL_NAME_MAX + 1];
    sl_ev_query filter; /* its types and tags only, canonical */
    sl_sub_start start; /* as given */
    int64_t start_us;   /* the time it starts from (given for SL_SUB_TIME; resolved on create) */
    int64_t created_us;
    sl_sub_state state;
    sl_ev_pos position; /* the durable cursor */
    int64_t delivered;  /* events put */
    int64_t version;    /* bumped by every change of the row */
} sl_ev_sub;

extern const sl_table sl_t_event_subscription, sl_t_event_sub_dir, sl_t_event_sub_lease;

/* Creates name's subscription from def (name, queue, filter, start and,
 * for SL_SUB_TIME, start_us; the caller checks that the queue exists).
 * Returns 0 and the subscription in *out, with *created 1 when it was made
 * now and 0 when one with the same definition existed; SL_EEXISTS when the
 * name is taken by a different one; SL_ETOOBIG when the account has
 * SL_EV_SUBS_MAX; SL_EINVAL; or a store error. */
int sl_evsub_create(sl_evlog *l, const char *account, const sl_ev_sub *def, sl_ev_sub *out, int *created);
/* 0 and *out, SL_ENOTFOUND, or a store error. */
int sl_evsub_get(sl_evlog *l, const char *account, const char *name, sl_ev_sub *out);
/* The account's subscriptions by name (*out malloc'ed; free it). */
int sl_evsub_list(sl_evlog *l, const char *account, sl_ev_sub **out, size_t *n);
/* Deletes one: 0, SL_ENOTFOUND, or a store error. Its worker stops within
 * a page; what it put stays in the queue. */
int sl_evsub_delete(sl_evlog *l, const char *account, const char *name);

/* Where the worker puts events: main.c wires it to the queue engine, so
 * that events/ and queue/ stay siblings. put stores n events (1..
 * SL_EV_SUB_PAGE) in the queue and returns 0 once they are all durable,
 * SL_ENOTFOUND when the queue does not exist, or another error (the worker
 * tries again later). exists answers 1, 0, or an error. */
typedef struct {
    int (*put)(void *ctx, const char *account, const char *queue, const char *sub, const sl_stored_event *evs,
               size_t n);
    int (*exists)(void *ctx, const char *account, const char *queue);
    void *ctx;
} sl_ev_sink;

typedef struct {
    const char *node_id; /* this node's name in the lease rows */
    sl_ev_sink sink;
    int poll_ms; /* how often an idle subscription looks for events; 0: 250 */
} sl_evsubs_config;

typedef struct sl_evsubs sl_evsubs;

/* Starts this node's worker thread, which takes the lease of every
 * subscription that no live node holds and delivers its events. */
int sl_evsubs_start(sl_evlog *l, const sl_evsubs_config *cfg, sl_evsubs **out);
/* Stops it and gives its leases back, so another node takes over at once. */
void sl_evsubs_stop(sl_evsubs *w);
/* GET /metrics: per subscription this node works on, how far behind the
 * log's read horizon it has read, and the events it put into the queue. */
void sl_evsubs_metrics(sl_evsubs *w, struct sl_text *t);

#endif
