/* store.h: the table contract.
 *
 * The queue engine, the event log and auth are written once against this
 * interface, and two backends implement it: the embedded SQLite store
 * (store_sqlite.c) and Cassandra (store_cql.c). The contract has Cassandra's
 * semantics and nothing more, so that code which is correct on the embedded
 * store is correct on Cassandra:
 *
 *  - A table has a partition key (1..3 columns), a clustering key (0..2
 *    columns, ordered ascending) and regular columns. Column types are
 *    64-bit integers, UTF-8 text and blobs.
 *  - A row is addressed by its full primary key. A column that was never
 *    written, or was written as null, reads as "not set".
 *  - Writes are upserts of the columns they set; other columns keep their
 *    values. A write may carry a TTL in seconds: the cells it writes expire
 *    then, as in Cassandra. Callers that want a whole row to expire at once
 *    pass the row's remaining TTL on every write to it.
 *  - Reads see every write that was acknowledged before the read began.
 *  - Compare-and-set on one row: insert-if-not-exists, or update-if-equal
 *    (each condition is "column = value" or "column is null"; an update of a
 *    row that does not exist is not applied). A conditional batch applies
 *    several writes to rows of ONE partition if all of their conditions hold,
 *    or none of them.
 *  - Any write may fail with SL_EUNKNOWN: it may or may not have been
 *    applied, now or later. Callers resolve that by reading at SERIAL
 *    (SL_READ_SERIAL) and comparing with what they wrote; the engine writes a
 *    per-operation nonce column for exactly this purpose.
 *
 * Timestamps. Cassandra resolves two writes of one cell by their
 * timestamps, the last write wins, and a write may land long after it was
 * issued: a first attempt stuck on a frozen or partitioned coordinator can
 * be applied after its retry succeeded on another node, and after every
 * write made since (even when apply() answered 0: the retry's success is
 * what it reports). So:
 *  - Every plain write (upsert, delete) carries a timestamp fixed when it
 *    is first issued, the same through every retry (store_cql.c: client-side
 *    timestamps, the wall clock's milliseconds, unique per process). A late
 *    landing then changes only the cells that no write made after it has
 *    written or deleted. The embedded store replays this with its fault
 *    hook (SL_FAULT_DELAY, SL_FAULT_DUPLICATE, sl_store_sqlite_release_delayed).
 *  - A compare-and-set carries the timestamp of its Paxos ballot, made by
 *    the coordinator from its own clock. Between a plain write and a
 *    compare-and-set of the same cell, which one wins is therefore a matter
 *    of clocks (of the Sluice node and the Cassandra nodes), not of the
 *    order the caller issued them in: within a millisecond or a clock skew,
 *    a plain write made before a compare-and-set can still win over it.
 *  - Hence the rule callers follow: a plain write never writes a cell that
 *    compare-and-sets also write, except to delete rows that nothing will
 *    write again (a finalized bucket, a deleted queue's rows), long after
 *    their last compare-and-set. The queue engine's message rows keep it
 *    with columns that only the put writes and columns that only
 *    compare-and-sets write (queue/queue_int.h). A plain write is retried
 *    only when landing twice, or late, does no harm under these rules.
 *
 * Ownership: every value passed in is borrowed for the duration of the call.
 * Rows returned in an sl_result point into memory owned by the result, which
 * the caller frees with sl_result_free(). A result must be initialised with
 * sl_result_init() before its first use; get, slice and apply free whatever
 * it held before filling it, so one result can be reused across calls.
 * Table definitions must stay at one address for the store's lifetime
 * (backends cache prepared statements by it): make them static data. */
#ifndef SL_STORE_H
#define SL_STORE_H

#include <stdint.h>
#include <stddef.h>
#include "../sluice.h"

#define SL_MAX_COLS 17
#define SL_MAX_PK 3
#define SL_MAX_CK 2

typedef enum { SL_INT = 1, SL_TEXT = 2, SL_BLOB = 3 } sl_type;

struct sl_text; /* util/metrics.h */

typedef struct {
    const char *name;
    sl_type type;
} sl_col;

/* A table definition. cols[] lists the partition key columns first, then the
 * clustering key columns, then the regular columns. Definitions are static
 * data owned by the module that uses the table (queue/, auth/, events/); the
 * backends create their tables from them (sl_store_ensure). flags are
 * SL_TABLE_* hints about how the table is used; a backend may ignore them. */
typedef struct {
    const char *name;
    int npk, nck, ncol; /* ncol counts every column */
    sl_col cols[SL_MAX_COLS];
    unsigned flags;
} sl_table;

/* Each partition is written within a short time and deleted whole by its
 * owner once done (a queue's bucket), so that a row's expiry is only a
 * backstop: the embedded store then keeps one expiry per partition (the
 * earliest of its rows') instead of indexing every row's. Reads and
 * conditions see the rows' own expiry either way. */
#define SL_TABLE_EXPIRY_BY_PARTITION 1u

/* A value. set == 0 means "not set": absent on read, and on write either
 * "leave this column alone" (SL_W_UPSERT) or ignored (keys must be set).
 * Text and blob bytes are borrowed (p, n); ints live in i. To write a null,
 * set null = 1 (set must be 1 too). */
typedef struct {
    uint8_t set;
    uint8_t null;
    int64_t i;
    const void *p;
    size_t n;
} sl_val;

/* A row, indexed like its table's cols[]. */
typedef struct {
    sl_val v[SL_MAX_COLS];
} sl_row;

/* Value constructors, for brevity at call sites. */
static inline sl_val sl_vint(int64_t i) { sl_val v = {1, 0, i, NULL, 0}; return v; }
static inline sl_val sl_vbytes(const void *p, size_t n) { sl_val v = {1, 0, 0, p, n}; return v; }
sl_val sl_vtext(const char *s); /* s is NUL-terminated, borrowed */
static inline sl_val sl_vnull(void) { sl_val v = {1, 1, 0, NULL, 0}; return v; }

/* The results of a read or of a failed compare-and-set. */
typedef struct {
    sl_row *rows;
    size_t n;     /* rows returned */
    int more;     /* a slice stopped at its limit and more rows may follow */
    void *arena;  /* owned memory behind rows and their text/blob values */
} sl_result;

void sl_result_init(sl_result *r);
void sl_result_free(sl_result *r);
/* For backends building a result: sl_result_add_row() appends a zeroed row,
 * sl_result_alloc() returns n bytes owned by r (for text and blob values);
 * both are freed by sl_result_free() and return NULL when out of memory. */
sl_row *sl_result_add_row(sl_result *r);
void *sl_result_alloc(sl_result *r, size_t n);
/* Copy text or a blob out of a row value as a NUL-terminated string into
 * buf (at most cap-1 bytes); returns the length, SL_ENOTFOUND if unset or
 * SL_ETOOBIG if too long. */
long sl_val_str(const sl_val *v, char *buf, size_t cap);

/* Read consistency. SL_READ_SERIAL sees the outcome of every
 * compare-and-set that was accepted, even one reported SL_EUNKNOWN. */
enum { SL_READ_DEFAULT = 0, SL_READ_SERIAL = 1 };

/* A slice of one partition in clustering order. pk holds the partition key
 * values. from/to are clustering-key prefixes of nfrom/nto columns (0 means
 * unbounded); from_excl/to_excl make the bounds exclusive. limit > 0 caps
 * the rows; out->more says the limit was hit. To page, pass the last row's
 * clustering key as an exclusive from (or, descending, to). */
typedef struct {
    const sl_table *t;
    sl_val pk[SL_MAX_PK];
    sl_val from[SL_MAX_CK], to[SL_MAX_CK];
    int nfrom, nto;
    int from_excl, to_excl;
    int limit;
    int desc;
    int consistency;
} sl_slice;

/* A write. */
typedef enum {
    SL_W_UPSERT = 1,      /* write the set columns of row */
    SL_W_DELETE_ROW,      /* delete the row with row's primary key */
    SL_W_DELETE_PARTITION,/* delete every row of row's partition key */
    SL_W_INSERT_IF_NOT_EXISTS, /* CAS: write row only if no row has its key */
    SL_W_UPDATE_IF        /* CAS: write the set columns if every cond holds */
} sl_wkind;

typedef struct {
    int col;   /* index into the table's cols[]; a regular column */
    sl_val v;  /* v.null = 1: the column must be null / unset */
} sl_cond;

#define SL_MAX_CONDS 4

typedef struct {
    const sl_table *t;
    sl_wkind kind;
    sl_row row;     /* key columns always set; other columns as the kind says */
    int ttl;        /* seconds; 0 means no TTL */
    sl_cond cond[SL_MAX_CONDS];
    int ncond;
} sl_write;

/* The store: a struct of function pointers, like Redis' ConnectionType.
 *
 * apply() executes n writes. n == 1 is a single write. n > 1 is a batch,
 * which must stay within one partition when any write in it is conditional;
 * it applies all or nothing. Returns 0 when applied (for a CAS: the condition
 * held), SL_ENOTAPPLIED when a condition failed (current then holds, for the
 * conditional rows, the row's current values, at least the key and the
 * condition columns; an absent row is simply missing from current), and
 * SL_EUNKNOWN, SL_EUNAVAILABLE, SL_ETIMEOUT or SL_EIO on failure. current may
 * be NULL. When the call returns 0 the writes are durable (on the embedded
 * store: fsynced; on Cassandra: acknowledged at the configured consistency).
 *
 * get() reads one row by its full primary key: 0 with out->n == 1, or
 * SL_ENOTFOUND with out->n == 0. slice() reads a slice; an empty partition is
 * 0 with out->n == 0. */
typedef struct sl_store sl_store;
typedef struct {
    const char *name; /* "sqlite", "cql" */
    int (*ensure)(sl_store *s, const sl_table *const *tables, size_t n);
    int (*get)(sl_store *s, const sl_table *t, const sl_val *key, int consistency, sl_result *out);
    int (*slice)(sl_store *s, const sl_slice *q, sl_result *out);
    int (*apply)(sl_store *s, const sl_write *w, size_t n, sl_result *current);
    /* Optional: sends writes without waiting for them; they may be lost (a
     * crash, a store error) and nothing reports the outcome. For writes of
     * data that can be rebuilt, such as index entries. NULL: the wrapper
     * below falls back to apply(). */
    int (*apply_async)(sl_store *s, const sl_write *w, size_t n);
    /* Optional: apply() without waiting. done(arg, rc) runs exactly once
     * with what apply() would have returned, either before this returns or
     * later on a store thread, so it must be short (wake somebody up). The
     * writes stay borrowed until done runs. A caller that must not block
     * (an HTTP worker that can park its request meanwhile) uses it; NULL:
     * the wrapper below runs apply() and calls done itself. */
    void (*apply_cb)(sl_store *s, const sl_write *w, size_t n, void (*done)(void *arg, int rc), void *arg);
    /* Optional: apply_cb() for writes whose loss in a crash the caller can
     * afford (a lease: its message is delivered again). done may run once
     * the writes are applied, before they are durable: every later write,
     * condition and SERIAL read of this store sees them, but a crash may
     * still undo them, as a Cassandra write acknowledged before its commit
     * log was synced is undone when every replica loses power. Writes so
     * answered that a failed commit undid are made again before anything
     * else. NULL: the wrapper below uses apply_cb(). */
    void (*apply_cb_early)(sl_store *s, const sl_write *w, size_t n, void (*done)(void *arg, int rc),
                           void *arg);
    /* Optional: this start of the store's life, larger than every earlier
     * one (1, 2, ...), for values that must never be given twice although
     * writes answered early were lost in a crash (message versions, so that
     * a lost lease's pop receipt never matches a later one). NULL: 0, a
     * store that answers nothing early. */
    int64_t (*epoch)(sl_store *s);
    /* Optional: waits until every write answered early so far is seen by
     * every read, not only SERIAL ones (a peek right after a receive must
     * not show the message it leased), or a few seconds at most (commits
     * failing: a full disk), after which reads see what is on disk. NULL:
     * nothing to wait for. */
    void (*catch_up)(sl_store *s);
    int (*ping)(sl_store *s); /* 0 when the store answers */
    void (*close)(sl_store *s);
    /* Optional: writes the store's figures for GET /metrics (Prometheus
     * text format, every family with its HELP and TYPE lines). */
    void (*metrics)(sl_store *s, struct sl_text *t);
    /* A hint for callers, not part of the semantics: concurrent single-row
     * compare-and-sets of one partition are much cheaper sent together as
     * one conditional batch (Cassandra: one Paxos round instead of several
     * that contend). The embedded store commits every pending write in one
     * transaction anyway, and combining would only add a hand-off. */
    int combine_cas;
    /* Other Sluice nodes may share the data (Cassandra): what this node
     * keeps in memory of it does not see their writes. */
    int shared;
} sl_store_type;

struct sl_store {
    const sl_store_type *type;
};

/* Counts the statements each call sends, by table and kind, for GET
 * /metrics (sluice_store_statements_total: store.c). */
enum { SL_STAT_GET, SL_STAT_SLICE, SL_STAT_WRITE, SL_STAT_CAS, SL_STAT_N };
void sl_store_count(const sl_table *t, int kind);
void sl_store_count_writes(const sl_write *w, size_t n);
void sl_store_count_metrics(struct sl_text *t);

static inline int sl_store_ensure(sl_store *s, const sl_table *const *t, size_t n) { return s->type->ensure(s, t, n); }
static inline int sl_store_get(sl_store *s, const sl_table *t, const sl_val *key, int cons, sl_result *out) {
    sl_store_count(t, SL_STAT_GET);
    return s->type->get(s, t, key, cons, out);
}
static inline int sl_store_slice(sl_store *s, const sl_slice *q, sl_result *out) {
    if (q) sl_store_count(q->t, SL_STAT_SLICE);
    return s->type->slice(s, q, out);
}
static inline int sl_store_apply(sl_store *s, const sl_write *w, size_t n, sl_result *cur) {
    sl_store_count_writes(w, n);
    return s->type->apply(s, w, n, cur);
}
static inline int sl_store_apply_async(sl_store *s, const sl_write *w, size_t n) {
    sl_store_count_writes(w, n);
    return s->type->apply_async ? s->type->apply_async(s, w, n) : s->type->apply(s, w, n, NULL);
}
static inline void sl_store_apply_cb(sl_store *s, const sl_write *w, size_t n, void (*done)(void *, int), void *arg) {
    sl_store_count_writes(w, n);
    if (s->type->apply_cb)
        s->type->apply_cb(s, w, n, done, arg);
    else
        done(arg, s->type->apply(s, w, n, NULL));
}
static inline void sl_store_apply_cb_early(sl_store *s, const sl_write *w, size_t n,
                                           void (*done)(void *, int), void *arg) {
    if (!s->type->apply_cb_early) {
        sl_store_apply_cb(s, w, n, done, arg);
        return;
    }
    sl_store_count_writes(w, n);
    s->type->apply_cb_early(s, w, n, done, arg);
}
static inline int64_t sl_store_epoch(sl_store *s) {
    return s->type->epoch ? s->type->epoch(s) : 0;
}
static inline void sl_store_catch_up(sl_store *s) {
    if (s->type->catch_up) s->type->catch_up(s);
}
/* Whether apply_cb() returns before the writes are done. */
static inline int sl_store_defers(const sl_store *s) { return s->type->apply_cb != NULL; }
static inline int sl_store_ping(sl_store *s) { return s->type->ping(s); }
static inline void sl_store_close(sl_store *s) { if (s) s->type->close(s); }
static inline void sl_store_metrics(sl_store *s, struct sl_text *t) {
    sl_store_count_metrics(t);
    if (s->type->metrics) s->type->metrics(s, t);
}

/* --- The embedded SQLite backend (store_sqlite.c) ---------------------- */

/* Opens (creating) DIR/sluice.db in WAL mode with synchronous=FULL. One
 * writer thread commits the writes of many callers in one transaction and
 * answers each caller only after that transaction is on disk (group commit),
 * except those of apply_cb_early(), answered as soon as their statements
 * ran; reads use a pool of read-only connections. Each open counts one more
 * epoch, on disk before it returns. A failed COMMIT is reported as
 * SL_EUNKNOWN (it may have reached the disk). Returns 0 and *out, or a
 * negative code. */
int sl_store_sqlite_open(const char *dir, sl_store **out);
/* Caps the writes waiting for the writer (0: no cap). Past it, apply()
 * returns SL_EBUSY at once, without applying anything: load shedding. */
void sl_store_sqlite_set_max_pending(sl_store *s, int max);
/* Waits until every write queued so far, apply_async() ones included, is
 * committed. For tests that need the effects of asynchronous writes. */
int sl_store_sqlite_flush(sl_store *s);
/* Tests: the next n groups fail before their COMMIT, as on a full disk
 * (everything in them rolled back, their callers told SL_EIO). */
void sl_store_sqlite_fail_commits(sl_store *s, int n);

/* --- The Cassandra backend (store_cql.c) ------------------------------ */

/* The configuration and the client are those of cql/client.h. */
struct sl_cql_config;
struct sl_cql_client;

/* Connects to the cluster cfg names (its keyspace, "sluice" when empty,
 * holds the tables). The schema must exist: ensure() checks it and tells the
 * operator to run `sluice schema` when it does not. Returns 0 and *out, or
 * SL_EUNAVAILABLE, SL_EAUTH, SL_EINVAL. */
int sl_store_cql_open(const struct sl_cql_config *cfg, sl_store **out);
/* Creates the keyspace (when create_keyspace; replication is a CQL map
 * literal, SimpleStrategy RF 1 when NULL), the schema_version table and
 * every table of tables[], adds columns missing from existing tables, and
 * refuses a schema newer than this build's (SL_STORE_CQL_SCHEMA_VERSION).
 * Running it again is a no-op. */
#define SL_STORE_CQL_SCHEMA_VERSION 6
int sl_store_cql_schema(sl_store *s, const sl_table *const *tables, size_t n, int create_keyspace,
                        const char *replication);
/* The same with each table's options (options[i], the text after WITH, or
 * NULL; options itself may be NULL): set on creation and, with ALTER
 * TABLE, on a table that exists. */
int sl_store_cql_schema_with(sl_store *s, const sl_table *const *tables, const char *const *options, size_t n,
                             int create_keyspace, const char *replication);
/* The store's client (for tests and tools); NULL for another backend. */
struct sl_cql_client *sl_store_cql_client(sl_store *s);

/* --- Fault injection (the embedded backend only) ----------------------- */

/* What the fault hook decides for one apply() call. */
typedef enum {
    SL_FAULT_NONE = 0,            /* behave normally */
    SL_FAULT_FAIL,                /* not applied; caller gets SL_EUNAVAILABLE */
    SL_FAULT_UNKNOWN_APPLIED,     /* applied; caller gets SL_EUNKNOWN */
    SL_FAULT_UNKNOWN_DROPPED,     /* not applied; caller gets SL_EUNKNOWN */
    SL_FAULT_DELAY,               /* caller gets SL_EUNKNOWN now; the writes
                                     are parked and applied (CAS conditions
                                     evaluated then) by
                                     sl_store_sqlite_release_delayed() */
    SL_FAULT_DUPLICATE            /* applied now, and the caller gets what
                                     apply() says; a copy is parked and lands
                                     again at release: a first attempt that
                                     timed out and landed after its retry */
} sl_fault_action;

/* The hook sees each apply() before it runs. It is called from the caller's
 * thread, never concurrently with itself for one store. */
typedef sl_fault_action (*sl_fault_fn)(void *ctx, const sl_write *w, size_t n);
void sl_store_sqlite_set_fault(sl_store *s, sl_fault_fn fn, void *ctx);
/* The read hook sees each get() before it runs, with the consistency asked
 * for, and returns 0 (read) or the error the caller gets instead (a
 * SERIAL read that times out while a node goes down). */
typedef int (*sl_read_fault_fn)(void *ctx, const sl_table *t, int consistency);
void sl_store_sqlite_set_read_fault(sl_store *s, sl_read_fault_fn fn, void *ctx);
/* Applies every parked (delayed or duplicated) write, in the order they
 * were parked, as writes that land late (see "Timestamps" above): a
 * compare-and-set has its conditions evaluated then; a plain write keeps
 * the timestamp it was issued with, so it changes only the cells that no
 * write made since it was parked has written or deleted. Returns how many
 * apply() calls were released, or a negative code. */
int sl_store_sqlite_release_delayed(sl_store *s);
/* landing = 1: released plain writes are stamped when they land instead,
 * and overwrite whatever was written since, as on a Cassandra whose
 * coordinators stamp writes (Sluice before client-side timestamps). The
 * engine must keep its guarantees either way. Default 0. */
void sl_store_sqlite_set_late_stamps(sl_store *s, int landing);

/* A seeded random fault source: each apply() draws from a xorshift
 * generator seeded with seed, and gets each action with the probability
 * given in parts per million. Only writes to tables whose name matches
 * only_table (when not NULL) and, when only_cas is set, only CAS writes, are
 * touched. Use with sl_fault_random as the hook and &cfg as its ctx. */
typedef struct {
    uint64_t seed;
    uint32_t fail_ppm, unknown_applied_ppm, unknown_dropped_ppm, delay_ppm, duplicate_ppm;
    const char *only_table;
    int only_cas;
    uint64_t state; /* generator state; 0 means "start from seed" */
    uint64_t injected; /* how many faults were injected so far */
} sl_fault_random_cfg;
sl_fault_action sl_fault_random(void *ctx, const sl_write *w, size_t n);

/* True when a write is a compare-and-set (or a batch containing one). */
int sl_write_is_cas(const sl_write *w, size_t n);

#endif
