/* engine_cost.c: what the embedded store's writer does a message, replayed on
 * SQLite as Sluice lays it out, and on LMDB and RocksDB, to measure an engine
 * before any switch (issue 18). One thread, no HTTP: only the storage work.
 *
 *   engine_cost ENGINE DIR [LIFECYCLES [PER_COMMIT [PER_REQUEST [BACKLOG]]]]
 *
 * ENGINE is sqlite, sqlite-kv, sqlite-split, lmdb, rocksdb or rocksdb-range;
 * DIR a fresh directory on the disk under test. It first puts BACKLOG messages (20,000), unmeasured,
 * then runs LIFECYCLES (100,000) lifecycles in commits of PER_COMMIT (16)
 * each: every commit puts PER_COMMIT new messages at the tail, leases
 * PER_COMMIT at the head (a compare-and-set on version and state) and acks
 * those leased by the commit before (a compare-and-set again), and deletes
 * each bucket (20 ids) once all its messages are acked, as the queue engine
 * does. A request is PER_REQUEST (1) messages of one kind; on SQLite each
 * request runs in a savepoint of its own, as the store's writer runs it.
 * Every commit is durable (SQLite: WAL, synchronous=FULL; LMDB: its default
 * sync at commit; RocksDB: a write with sync), unless ENGINE_NOSYNC=1, which
 * tells the engine's own work from the sync's; ENGINE_LEASE_IN_MEMORY=1 makes
 * a lease write nothing (the ack's condition is then the put's state), the
 * most that leases kept in memory could save the writer; ENGINE_SQLITE_PRAGMAS
 * runs SQL on SQLite's connection first; ENGINE_SQLITE_NO_EXPIRY_RECORD=1
 * leaves out the record of each bucket's expiry, to weigh it. Prints one JSON object:
 * lifecycles/s, the process's CPU (all its threads, a background compaction
 * included) and the bytes it wrote a lifecycle.
 *
 * The SQLite rows are those of store_sqlite.c's "messages" table (WITHOUT
 * ROWID, keyed by queue, bucket and id, a record of each bucket's earliest
 * expiry in "messages__parts"), and the statements the shapes it runs (an
 * upsert; an UPDATE conditioned on the key, the expiry and the compare-and-set
 * columns, keeping the row's expiry). sqlite-split keeps the body, the id and
 * the put time in a table of their own, written once, so that a lease or an
 * ack rewrites a row of 80 bytes instead of 225; sqlite-kv keeps a row as
 * one blob under one key, with no expiry record. LMDB and RocksDB keep a row
 * as one value of about the same size under a key that sorts as SQLite's;
 * rocksdb deletes a bucket a tombstone a row, rocksdb-range with one range
 * tombstone. */
#define _GNU_SOURCE
#include <lmdb.h>
#include <rocksdb/c.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#define BUCKET 20
#define QKEY "acct-dev/q"
#define BODY 100
#define MID 22

static int nosync; /* ENGINE_NOSYNC=1: commits not synced, to tell the engine's work from the disk's */
static int lease_in_memory;   /* ENGINE_LEASE_IN_MEMORY=1: a lease writes nothing (the most it could save) */
static int expiry_record = 1; /* ENGINE_SQLITE_NO_EXPIRY_RECORD=1: no "messages__parts" record a bucket */

enum { READY = 0, WAITING = 1, ACKED = 2 };

/* A message row but its key: what LMDB and RocksDB store as the value. */
typedef struct {
    char mid[MID];
    unsigned char body[BODY];
    int64_t put_ms, exp_ms, visible_ms, version, dcount, state, nonce, put_vis, first_ms;
} row;

typedef struct engine engine;
struct engine {
    int (*begin)(engine *);
    int (*request_begin)(engine *);
    int (*request_end)(engine *);
    int (*put)(engine *, int64_t id, const row *r);
    /* Sets the row's version, visible time, state (and more) if its version
     * and state are still those given; *held says whether they were. */
    int (*cas)(engine *, int64_t id, int64_t version, int64_t state, const row *to, int *held);
    int (*drop_bucket)(engine *, int64_t bucket);
    int (*commit)(engine *);
    void *h;
};

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t rnd_state = 88172645463325252ULL;
static uint64_t rnd(void) {
    rnd_state ^= rnd_state << 13;
    rnd_state ^= rnd_state >> 7;
    rnd_state ^= rnd_state << 17;
    return rnd_state;
}

static void fill_row(row *r, int64_t now) {
    static const char a[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for (int i = 0; i < MID; i++)
        r->mid[i] = a[rnd() % 62];
    for (int i = 0; i < BODY; i++)
        r->body[i] = (unsigned char)('a' + rnd() % 26);
    r->put_ms = now, r->exp_ms = now + 4 * 86400000LL, r->visible_ms = now, r->version = 0, r->dcount = 0;
    r->state = READY, r->nonce = (int64_t)(rnd() >> 1), r->put_vis = now, r->first_ms = 0;
}

/* The compare-and-set of the engines that keep a row as one value: whether
 * r still has version and state, and if so r with to's changes. */
static int cas_apply(row *r, int64_t version, int64_t state, const row *to) {
    if (r->version != version || r->state != state) return 0;
    r->version = to->version, r->visible_ms = to->visible_ms, r->nonce = to->nonce, r->dcount = to->dcount;
    r->state = to->state, r->first_ms = to->first_ms;
    return 1;
}

/* --- A key that sorts as (queue, bucket, id) ---------------------------- */

typedef struct {
    char b[sizeof QKEY - 1 + 16];
} kv_key;

static void be64(char *p, uint64_t v) {
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (char)(v & 0xff);
}

static kv_key key_of(int64_t id) {
    kv_key k;
    memcpy(k.b, QKEY, sizeof QKEY - 1);
    be64(k.b + sizeof QKEY - 1, (uint64_t)(id / BUCKET));
    be64(k.b + sizeof QKEY - 1 + 8, (uint64_t)id);
    return k;
}

/* --- SQLite, laid out as store_sqlite.c lays it out ---------------------- */

typedef struct {
    sqlite3 *db;
    int split;
    sqlite3_stmt *kv_get, *kv_put, *kv_drop, *put, *body, *note, *cas, *drop, *drop_body, *drop_note, *sp,
        *rel, *begin, *commit;
    int64_t noted; /* the last bucket whose expiry is recorded */
} sq;

static int sq_exec(sq *s, const char *sql) {
    char *err = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "sqlite: %s: %s\n", sql, err ? err : "?");
        sqlite3_free(err);
        return -1;
    }
    return 0;
}

static int sq_step(sq *s, sqlite3_stmt *st) {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return 0;
    fprintf(stderr, "sqlite: %s\n", sqlite3_errmsg(s->db));
    return -1;
}

static int sq_begin(engine *e) {
    sq *s = e->h;
    return sq_step(s, s->begin);
}
static int sq_commit(engine *e) {
    sq *s = e->h;
    return sq_step(s, s->commit);
}
static int sq_req_begin(engine *e) {
    sq *s = e->h;
    return sq_step(s, s->sp);
}
static int sq_req_end(engine *e) {
    sq *s = e->h;
    return sq_step(s, s->rel);
}

static void sq_key(sqlite3_stmt *st, int at, int64_t id) {
    sqlite3_bind_text(st, at, QKEY, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, at + 1, id / BUCKET);
    sqlite3_bind_int64(st, at + 2, id);
}

static int sq_put(engine *e, int64_t id, const row *r) {
    sq *s = e->h;
    if (expiry_record && id / BUCKET != s->noted) { /* the bucket's first write records its expiry */
        sqlite3_bind_text(s->note, 1, QKEY, -1, SQLITE_STATIC);
        sqlite3_bind_int64(s->note, 2, id / BUCKET);
        sqlite3_bind_int64(s->note, 3, r->exp_ms);
        if (sq_step(s, s->note)) return -1;
        s->noted = id / BUCKET;
    }
    sqlite3_stmt *st = s->put;
    sq_key(st, 1, id);
    int i = 4;
    if (!s->split) {
        sqlite3_bind_text(st, i++, r->mid, MID, SQLITE_STATIC);
        sqlite3_bind_blob(st, i++, r->body, BODY, SQLITE_STATIC);
        sqlite3_bind_int64(st, i++, r->put_ms);
    }
    int64_t v[] = {r->exp_ms, r->visible_ms, r->version, r->dcount,
                   r->state,  r->nonce,      r->put_vis, r->exp_ms};
    for (size_t k = 0; k < sizeof v / sizeof v[0]; k++)
        sqlite3_bind_int64(st, i++, v[k]);
    if (sq_step(s, st)) return -1;
    if (!s->split) return 0;
    st = s->body;
    sq_key(st, 1, id);
    sqlite3_bind_text(st, 4, r->mid, MID, SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, r->body, BODY, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, r->put_ms);
    sqlite3_bind_int64(st, 7, r->exp_ms);
    return sq_step(s, st);
}

static int sq_cas(engine *e, int64_t id, int64_t version, int64_t state, const row *to, int *held) {
    sq *s = e->h;
    sqlite3_stmt *st = s->cas;
    sqlite3_bind_int64(st, 1, now_ms());
    sqlite3_bind_int64(st, 2, to->exp_ms);
    sqlite3_bind_int64(st, 3, to->version);
    sqlite3_bind_int64(st, 4, to->visible_ms);
    sqlite3_bind_int64(st, 5, to->nonce);
    sqlite3_bind_int64(st, 6, to->dcount);
    sqlite3_bind_int64(st, 7, to->state);
    sqlite3_bind_int64(st, 8, to->first_ms);
    sq_key(st, 9, id);
    sqlite3_bind_int64(st, 12, version);
    sqlite3_bind_int64(st, 13, state);
    if (sq_step(s, st)) return -1;
    *held = sqlite3_changes(s->db) == 1;
    return 0;
}

static int sq_drop(engine *e, int64_t bucket) {
    sq *s = e->h;
    sqlite3_stmt *d[] = {s->drop, s->drop_note, s->drop_body};
    for (int i = 0; i < (s->split ? 3 : 2); i++) {
        if (d[i] == s->drop_note && !expiry_record) continue;
        sqlite3_bind_text(d[i], 1, QKEY, -1, SQLITE_STATIC);
        sqlite3_bind_int64(d[i], 2, bucket);
        if (sq_step(s, d[i])) return -1;
    }
    return 0;
}

/* sqlite-kv: a row as one value under one key, as LMDB and RocksDB keep it */
static int kv_put(engine *e, int64_t id, const row *r) {
    sq *s = e->h;
    kv_key k = key_of(id);
    sqlite3_bind_blob(s->kv_put, 1, k.b, sizeof k.b, SQLITE_STATIC);
    sqlite3_bind_blob(s->kv_put, 2, r, sizeof *r, SQLITE_STATIC);
    return sq_step(s, s->kv_put);
}

static int kv_cas(engine *e, int64_t id, int64_t version, int64_t state, const row *to, int *held) {
    sq *s = e->h;
    kv_key k = key_of(id);
    sqlite3_bind_blob(s->kv_get, 1, k.b, sizeof k.b, SQLITE_STATIC);
    row r;
    int rc = sqlite3_step(s->kv_get);
    int ok = rc == SQLITE_ROW && sqlite3_column_bytes(s->kv_get, 0) == (int)sizeof r;
    if (ok) memcpy(&r, sqlite3_column_blob(s->kv_get, 0), sizeof r);
    sqlite3_reset(s->kv_get);
    if (!ok) {
        fprintf(stderr, "sqlite-kv: row %lld missing\n", (long long)id);
        return -1;
    }
    return (*held = cas_apply(&r, version, state, to)) ? kv_put(e, id, &r) : 0;
}

static int kv_drop(engine *e, int64_t bucket) {
    sq *s = e->h;
    kv_key a = key_of(bucket * BUCKET), b = key_of((bucket + 1) * BUCKET);
    sqlite3_bind_blob(s->kv_drop, 1, a.b, sizeof a.b, SQLITE_STATIC);
    sqlite3_bind_blob(s->kv_drop, 2, b.b, sizeof b.b, SQLITE_STATIC);
    return sq_step(s, s->kv_drop);
}

static int sq_open(engine *e, const char *dir, int split, int kv) { /* kv: sqlite-kv */
    sq *s = calloc(1, sizeof *s);
    char path[4096];
    snprintf(path, sizeof path, "%s/sluice.db", dir);
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); /* as store_sqlite.c opens it */
    if (sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                        NULL) != SQLITE_OK)
        return -1;
    s->split = split, s->noted = -1;
    const char *ddl_whole =
        "CREATE TABLE messages(qkey TEXT, bucket INTEGER, id INTEGER, mid TEXT, body BLOB, attrs TEXT, tag "
        "TEXT,"
        " put_ms INTEGER, exp_ms INTEGER, visible_ms INTEGER, version INTEGER, dcount INTEGER, state INTEGER,"
        " nonce INTEGER, dest TEXT, put_vis INTEGER, first_ms INTEGER, _exp INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY(qkey, bucket, id)) WITHOUT ROWID;";
    const char *ddl_split =
        "CREATE TABLE messages(qkey TEXT, bucket INTEGER, id INTEGER, attrs TEXT, tag TEXT,"
        " exp_ms INTEGER, visible_ms INTEGER, version INTEGER, dcount INTEGER, state INTEGER,"
        " nonce INTEGER, dest TEXT, put_vis INTEGER, first_ms INTEGER, _exp INTEGER NOT NULL DEFAULT 0,"
        " PRIMARY KEY(qkey, bucket, id)) WITHOUT ROWID;"
        "CREATE TABLE bodies(qkey TEXT, bucket INTEGER, id INTEGER, mid TEXT, body BLOB, put_ms INTEGER,"
        " _exp INTEGER NOT NULL DEFAULT 0, PRIMARY KEY(qkey, bucket, id)) WITHOUT ROWID;";
    const char *extra = getenv("ENGINE_SQLITE_PRAGMAS"); /* tried before the tables exist: a page size too */
    if (extra && sq_exec(s, extra)) return -1;
    if (sq_exec(s, "PRAGMA journal_mode=WAL") ||
        sq_exec(s, nosync ? "PRAGMA synchronous=OFF" : "PRAGMA synchronous=FULL") ||
        sq_exec(s, split ? ddl_split : ddl_whole) ||
        sq_exec(s, "CREATE TABLE kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID") ||
        sq_exec(s, "CREATE TABLE messages__parts(qkey TEXT, bucket INTEGER, exp INTEGER NOT NULL,"
                   " PRIMARY KEY(qkey, bucket)) WITHOUT ROWID;"
                   "CREATE INDEX messages__parts_exp ON messages__parts(exp);"))
        return -1;
    struct {
        sqlite3_stmt **st;
        const char *sql;
    } p[] = {
        {&s->put,
         split ? "INSERT OR REPLACE INTO messages(qkey,bucket,id,exp_ms,visible_ms,version,dcount,state,"
                 "nonce,put_vis,_exp) VALUES(?,?,?,?,?,?,?,?,?,?,?)"
               : "INSERT OR REPLACE INTO messages(qkey,bucket,id,mid,body,put_ms,exp_ms,visible_ms,version,"
                 "dcount,state,nonce,put_vis,_exp) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)"},
        {&s->body,
         "INSERT OR REPLACE INTO bodies(qkey,bucket,id,mid,body,put_ms,_exp) VALUES(?,?,?,?,?,?,?)"},
        {&s->note, "INSERT INTO messages__parts(qkey,bucket,exp) VALUES(?,?,?)"
                   " ON CONFLICT DO UPDATE SET exp=min(exp,excluded.exp)"},
        {&s->cas, "UPDATE messages SET version=?3,visible_ms=?4,nonce=?5,dcount=?6,state=?7,first_ms=?8"
                  " WHERE qkey=?9 AND bucket=?10 AND id=?11 AND (_exp=0 OR _exp>?1)"
                  " AND _exp BETWEEN ?2-1000 AND ?2 AND version=?12 AND state=?13"},
        {&s->drop, "DELETE FROM messages WHERE qkey=? AND bucket=?"},
        {&s->drop_body, "DELETE FROM bodies WHERE qkey=? AND bucket=?"},
        {&s->drop_note, "DELETE FROM messages__parts WHERE qkey=? AND bucket=?"},
        {&s->kv_get, "SELECT v FROM kv WHERE k=?"},
        {&s->kv_put, "INSERT OR REPLACE INTO kv(k,v) VALUES(?,?)"},
        {&s->kv_drop, "DELETE FROM kv WHERE k>=? AND k<?"},
        {&s->sp, "SAVEPOINT r"},
        {&s->rel, "RELEASE r"},
        {&s->begin, "BEGIN IMMEDIATE"},
        {&s->commit, "COMMIT"},
    };
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) {
        if (!split && p[i].st == &s->body) continue;
        if (!split && p[i].st == &s->drop_body) continue;
        if (sqlite3_prepare_v2(s->db, p[i].sql, -1, p[i].st, NULL) != SQLITE_OK) {
            fprintf(stderr, "sqlite: %s: %s\n", p[i].sql, sqlite3_errmsg(s->db));
            return -1;
        }
    }
    *e = (engine){sq_begin, sq_req_begin, sq_req_end, sq_put, sq_cas, sq_drop, sq_commit, s};
    if (kv) e->put = kv_put, e->cas = kv_cas, e->drop_bucket = kv_drop;
    return 0;
}

static int none(engine *e) {
    (void)e;
    return 0;
}

/* --- LMDB: one write transaction a commit, synced at commit -------------- */

typedef struct {
    MDB_env *env;
    MDB_dbi dbi;
    MDB_txn *txn;
} lm;

static int lm_chk(int rc, const char *what) {
    if (rc == 0) return 0;
    fprintf(stderr, "lmdb: %s: %s\n", what, mdb_strerror(rc));
    return -1;
}

static int lm_begin(engine *e) {
    lm *l = e->h;
    return lm_chk(mdb_txn_begin(l->env, NULL, 0, &l->txn), "begin");
}
static int lm_commit(engine *e) {
    lm *l = e->h;
    int rc = mdb_txn_commit(l->txn);
    l->txn = NULL;
    return lm_chk(rc, "commit");
}
static int lm_put(engine *e, int64_t id, const row *r) {
    lm *l = e->h;
    kv_key k = key_of(id);
    MDB_val kv = {sizeof k.b, k.b}, vv = {sizeof *r, (void *)r};
    return lm_chk(mdb_put(l->txn, l->dbi, &kv, &vv, 0), "put");
}
static int lm_cas(engine *e, int64_t id, int64_t version, int64_t state, const row *to, int *held) {
    lm *l = e->h;
    kv_key k = key_of(id);
    MDB_val kv = {sizeof k.b, k.b}, vv;
    if (lm_chk(mdb_get(l->txn, l->dbi, &kv, &vv), "get")) return -1;
    row r;
    memcpy(&r, vv.mv_data, sizeof r);
    if (!(*held = cas_apply(&r, version, state, to))) return 0;
    vv = (MDB_val){sizeof r, &r};
    return lm_chk(mdb_put(l->txn, l->dbi, &kv, &vv, 0), "put");
}
static int lm_drop(engine *e, int64_t bucket) {
    lm *l = e->h;
    for (int64_t id = bucket * BUCKET; id < (bucket + 1) * BUCKET; id++) {
        kv_key k = key_of(id);
        MDB_val kv = {sizeof k.b, k.b};
        int rc = mdb_del(l->txn, l->dbi, &kv, NULL);
        if (rc && rc != MDB_NOTFOUND) return lm_chk(rc, "del");
    }
    return 0;
}
static int lm_open(engine *e, const char *dir) {
    lm *l = calloc(1, sizeof *l);
    if (lm_chk(mdb_env_create(&l->env), "create") ||
        lm_chk(mdb_env_set_mapsize(l->env, 4ULL << 30), "mapsize") ||
        lm_chk(mdb_env_open(l->env, dir, nosync ? MDB_NOSYNC : 0, 0600), "open") ||
        lm_chk(mdb_txn_begin(l->env, NULL, 0, &l->txn), "txn") ||
        lm_chk(mdb_dbi_open(l->txn, NULL, 0, &l->dbi), "dbi") || lm_chk(mdb_txn_commit(l->txn), "commit"))
        return -1;
    *e = (engine){lm_begin, none, none, lm_put, lm_cas, lm_drop, lm_commit, l};
    return 0;
}

/* --- RocksDB: one synced write batch a commit ---------------------------- */

typedef struct {
    rocksdb_t *db;
    rocksdb_writebatch_t *wb;
    rocksdb_writeoptions_t *wo;
    rocksdb_readoptions_t *ro;
    int range; /* a bucket deleted by a range tombstone, not a tombstone a row */
} rk;

static int rk_err(char *err, const char *what) {
    if (!err) return 0;
    fprintf(stderr, "rocksdb: %s: %s\n", what, err);
    free(err);
    return -1;
}
static int rk_begin(engine *e) {
    rk *r = e->h;
    rocksdb_writebatch_clear(r->wb);
    return 0;
}
static int rk_commit(engine *e) {
    rk *r = e->h;
    char *err = NULL;
    rocksdb_write(r->db, r->wo, r->wb, &err);
    return rk_err(err, "write");
}
static int rk_put(engine *e, int64_t id, const row *x) {
    rk *r = e->h;
    kv_key k = key_of(id);
    rocksdb_writebatch_put(r->wb, k.b, sizeof k.b, (const char *)x, sizeof *x);
    return 0;
}
/* The queue's head was put commits before: its rows are read from the
 * database (a batch that read its own writes would need RocksDB's indexed
 * batch, which the store would use). */
static int rk_cas(engine *e, int64_t id, int64_t version, int64_t state, const row *to, int *held) {
    rk *r = e->h;
    kv_key k = key_of(id);
    char *err = NULL;
    size_t n = 0;
    char *v = rocksdb_get(r->db, r->ro, k.b, sizeof k.b, &n, &err);
    if (rk_err(err, "get")) return -1;
    if (!v || n != sizeof(row)) {
        fprintf(stderr, "rocksdb: row %lld missing\n", (long long)id);
        rocksdb_free(v);
        return -1;
    }
    row x;
    memcpy(&x, v, sizeof x);
    rocksdb_free(v);
    if (!(*held = cas_apply(&x, version, state, to))) return 0;
    rocksdb_writebatch_put(r->wb, k.b, sizeof k.b, (const char *)&x, sizeof x);
    return 0;
}
static int rk_drop(engine *e, int64_t bucket) {
    rk *r = e->h;
    if (r->range) { /* one tombstone; every read of the memtable then walks them all (7.8) */
        kv_key a = key_of(bucket * BUCKET), b = key_of((bucket + 1) * BUCKET);
        rocksdb_writebatch_delete_range(r->wb, a.b, sizeof a.b, b.b, sizeof b.b);
        return 0;
    }
    for (int64_t id = bucket * BUCKET; id < (bucket + 1) * BUCKET; id++) {
        kv_key k = key_of(id);
        rocksdb_writebatch_delete(r->wb, k.b, sizeof k.b);
    }
    return 0;
}
static int rk_open(engine *e, const char *dir, int range) {
    rk *r = calloc(1, sizeof *r);
    r->range = range;
    rocksdb_options_t *o = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(o, 1);
    rocksdb_options_set_compression(o, rocksdb_no_compression);
    char *err = NULL;
    r->db = rocksdb_open(o, dir, &err);
    if (rk_err(err, "open")) return -1;
    r->wb = rocksdb_writebatch_create();
    r->wo = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(r->wo, !nosync);
    r->ro = rocksdb_readoptions_create();
    *e = (engine){rk_begin, none, none, rk_put, rk_cas, rk_drop, rk_commit, r};
    return 0;
}

/* --- The workload --------------------------------------------------------- */

static double cpu_s(void) {
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return u.ru_utime.tv_sec + u.ru_stime.tv_sec + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

static long long written(void) {
    FILE *f = fopen("/proc/self/io", "r");
    char line[128];
    long long n = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "write_bytes: %lld", &n) == 1) break;
    if (f) fclose(f);
    return n;
}

static double wall_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

typedef struct {
    engine e;
    int per_req;
    int64_t tail, head, acked_to; /* next id to put, to lease, and ids below acked_to are acked */
    int64_t *leased;              /* ids leased by the last commit, to ack in the next */
    int64_t *exp;                 /* each id's expiry, which every later write keeps, as the engine's do */
    int nleased;
    int in_req; /* messages in the open request */
} work;

static int req_step(work *w) { /* closes the request after per_req messages */
    if (w->in_req == 0 && w->e.request_begin(&w->e)) return -1;
    if (++w->in_req == w->per_req) {
        w->in_req = 0;
        return w->e.request_end(&w->e);
    }
    return 0;
}
static int req_close(work *w) {
    if (w->in_req == 0) return 0;
    w->in_req = 0;
    return w->e.request_end(&w->e);
}

static int commit_of(work *w, int puts, int leases) {
    int64_t now = now_ms();
    row r;
    if (w->e.begin(&w->e)) return -1;
    for (int i = 0; i < puts; i++) {
        fill_row(&r, now);
        w->exp[w->tail] = r.exp_ms;
        if (w->e.put(&w->e, w->tail++, &r) || req_step(w)) return -1;
    }
    if (req_close(w)) return -1;
    for (int i = 0; i < w->nleased; i++) { /* ack what the commit before leased */
        int held;
        row to = {.version = 2,
                  .state = ACKED,
                  .nonce = (int64_t)(rnd() >> 1),
                  .visible_ms = now + 30000,
                  .dcount = 1,
                  .first_ms = now,
                  .exp_ms = w->exp[w->leased[i]]};
        if (w->e.cas(&w->e, w->leased[i], lease_in_memory ? 0 : 1, lease_in_memory ? READY : WAITING, &to,
                     &held) ||
            req_step(w))
            return -1;
        if (!held) {
            fprintf(stderr, "ack of %lld not held\n", (long long)w->leased[i]);
            return -1;
        }
    }
    if (req_close(w)) return -1;
    if (w->nleased) {
        int64_t to = w->leased[w->nleased - 1] + 1; /* buckets wholly acked are deleted */
        for (int64_t b = w->acked_to / BUCKET; b < to / BUCKET; b++)
            if (w->e.drop_bucket(&w->e, b)) return -1;
        w->acked_to = to;
    }
    w->nleased = 0;
    for (int i = 0; i < leases && w->head < w->tail; i++) {
        int held;
        row to = {.version = 1,
                  .state = WAITING,
                  .nonce = (int64_t)(rnd() >> 1),
                  .visible_ms = now + 30000,
                  .dcount = 1,
                  .first_ms = now,
                  .exp_ms = w->exp[w->head]};
        if (lease_in_memory) /* the lease kept in memory: no write; the ack's condition is the put's state */
            held = 1;
        else if (w->e.cas(&w->e, w->head, 0, READY, &to, &held) || req_step(w))
            return -1;
        if (!held) {
            fprintf(stderr, "lease of %lld not held\n", (long long)w->head);
            return -1;
        }
        w->leased[w->nleased++] = w->head++;
    }
    if (req_close(w)) return -1;
    return w->e.commit(&w->e);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: engine_cost sqlite|sqlite-kv|sqlite-split|lmdb|rocksdb|rocksdb-range DIR "
                        "[LIFECYCLES [PER_COMMIT "
                        "[PER_REQUEST [BACKLOG]]]]\n");
        return 2;
    }
    const char *name = argv[1], *dir = argv[2];
    nosync = getenv("ENGINE_NOSYNC") && strcmp(getenv("ENGINE_NOSYNC"), "1") == 0;
    lease_in_memory = getenv("ENGINE_LEASE_IN_MEMORY") && strcmp(getenv("ENGINE_LEASE_IN_MEMORY"), "1") == 0;
    expiry_record = !(getenv("ENGINE_SQLITE_NO_EXPIRY_RECORD") &&
                      strcmp(getenv("ENGINE_SQLITE_NO_EXPIRY_RECORD"), "1") == 0);
    long long n = argc > 3 ? atoll(argv[3]) : 100000;
    int per_commit = argc > 4 ? atoi(argv[4]) : 16, per_req = argc > 5 ? atoi(argv[5]) : 1;
    long long backlog = argc > 6 ? atoll(argv[6]) : 20000;
    if (n <= 0 || per_commit <= 0 || per_req <= 0 || backlog < per_commit) {
        fprintf(stderr, "engine_cost: bad numbers\n");
        return 2;
    }
    work w = {.per_req = per_req,
              .leased = calloc((size_t)per_commit, sizeof(int64_t)),
              .exp = calloc((size_t)(backlog + n + per_commit), sizeof(int64_t))};
    if (!w.leased || !w.exp) return 1;
    int rc = !strcmp(name, "sqlite")          ? sq_open(&w.e, dir, 0, 0)
             : !strcmp(name, "sqlite-split")  ? sq_open(&w.e, dir, 1, 0)
             : !strcmp(name, "sqlite-kv")     ? sq_open(&w.e, dir, 0, 1)
             : !strcmp(name, "lmdb")          ? lm_open(&w.e, dir)
             : !strcmp(name, "rocksdb")       ? rk_open(&w.e, dir, 0)
             : !strcmp(name, "rocksdb-range") ? rk_open(&w.e, dir, 1)
                                              : (fprintf(stderr, "engine_cost: no engine %s\n", name), -1);
    if (rc) return 1;
    for (long long i = 0; i < backlog; i += 1000) /* the backlog, unmeasured */
        if (commit_of(&w, backlog - i < 1000 ? (int)(backlog - i) : 1000, 0)) return 1;
    double t0 = wall_s(), c0 = cpu_s();
    long long b0 = written(), commits = 0;
    for (; commits * per_commit < n; commits++)
        if (commit_of(&w, per_commit, per_commit)) return 1;
    n = commits * per_commit; /* LIFECYCLES rounded up to whole commits */
    double t = wall_s() - t0, c = cpu_s() - c0;
    long long b = written() - b0;
    printf("{\"engine\":\"%s\",\"lifecycles\":%lld,\"per_commit\":%d,\"per_request\":%d,\"backlog\":%lld,"
           "\"lifecycles_per_s\":%.0f,\"commits_per_s\":%.0f,\"cpu_us_per_lifecycle\":%.2f,"
           "\"wall_us_per_lifecycle\":%.2f,\"bytes_written_per_lifecycle\":%.0f,\"synced\":%s}\n",
           name, n, per_commit, per_req, backlog, n / t, commits / t, c * 1e6 / n, t * 1e6 / n, (double)b / n,
           nosync ? "false" : "true");
    return 0;
}
