/* store_sqlite.c: the embedded backend of the table contract (store.h).
 *
 * On-disk layout, version 2 (stored as PRAGMA user_version = 2; a database
 * with a larger version is refused, one with 0 is new and gets 2, one with
 * 1 gets 2 and, from ensure(), what 2 adds: "T__v" and its triggers):
 *
 *   DIR/sluice.db   one SQLite database, journal_mode=WAL, synchronous=FULL
 *                   (with its -wal and -shm companions).
 *
 *   Every sl_table T becomes
 *
 *     CREATE TABLE "T" ("pk1" <ty>, .., "ck1" <ty>, .., "col" <ty>, ..,
 *                       "_exp" INTEGER NOT NULL DEFAULT 0,
 *                       PRIMARY KEY ("pk1", .., "ck1", ..)) WITHOUT ROWID;
 *     CREATE INDEX "T__exp" ON "T"("_exp") WHERE "_exp" <> 0;
 *
 *   where <ty> is INTEGER, TEXT or BLOB for SL_INT, SL_TEXT, SL_BLOB. A
 *   column that is not set is NULL. "_exp" is the row's expiry in
 *   milliseconds since the epoch (as sl_now_ms() counts), 0 for never; a row
 *   whose expiry has passed is treated as absent by every read and CAS and
 *   is deleted lazily by the writer. Regular columns added to a table
 *   definition later are added with ALTER TABLE by ensure().
 *
 *   A table flagged SL_TABLE_EXPIRY_BY_PARTITION (the queues' messages) has
 *   no "T__exp" index; instead
 *
 *     CREATE TABLE "T__parts" ("pk1" <ty>, .., "exp" INTEGER NOT NULL,
 *                              PRIMARY KEY ("pk1", ..)) WITHOUT ROWID;
 *     CREATE INDEX "T__parts_exp" ON "T__parts"("exp");
 *
 *   holds, for each partition with rows that expire, a time no later than
 *   the earliest of their expiries (see "Expiry by partition" below). A
 *   database made by a build before gets it from the rows' expiries, and
 *   loses the index, when ensure() first meets the table; a build before
 *   makes the index again and ignores "T__parts".
 *
 *   A table with BLOB columns (besides its key) also has
 *
 *     CREATE TABLE "T__v" ("v");   -- a rowid table
 *     CREATE TRIGGER "T__v_u_col" AFTER UPDATE OF "col" ON "T" ...
 *     CREATE TRIGGER "T__v_d_col" AFTER DELETE ON "T" ...
 *
 *   A value of such a column longer than BIG_VALUE bytes is stored in
 *   "T__v", and the row's column holds its rowid, an INTEGER, which a BLOB
 *   column never holds otherwise (see "Large values" below). The triggers
 *   delete a value once no row refers to it. A build of layout 1 would read
 *   such an integer as the value: it refuses version 2.
 *
 * TTLs are kept per row, not per cell as Cassandra does: each write sets the
 * row's expiry from its own TTL (now + ttl, or never for ttl 0). The contract
 * asks callers that want a row to expire to pass its remaining TTL on every
 * write, and for such callers the two are the same. A conditional update
 * keeps the row's expiry when it lies within the second before the one
 * asked (update_if): the row may expire up to a second early, as it may on
 * Cassandra, which counts expiry in whole seconds, and never late.
 *
 * Threads. One writer thread owns the write connection. apply() enqueues a
 * request and sleeps until the writer answers it. The writer takes every
 * pending request (up to GROUP_MAX), runs them in one transaction, each in a
 * savepoint of its own so that a failing request does not undo the others,
 * commits (fsync, because synchronous=FULL) and only then wakes the callers
 * (group commit), or calls back those who did not wait (apply_cb). Reads use
 * a pool of reader connections; WAL lets them run beside the writer, and
 * each read statement starts a fresh read transaction, so it sees every
 * commit that finished before it began.
 *
 * Early answers (apply_cb_early: a lease). Such a request is called back as
 * soon as its statements ran, before the commit: every later write and
 * condition runs on the writer's connection, after it, and sees it. A copy
 * of its writes stays on the unsynced list until its group is committed:
 *  - a SERIAL read of a row on that list waits for that commit, so that it
 *    too sees what was answered (an update right after its receive), and
 *    so does every read after sl_store_catch_up (a peek, the statistics);
 *  - a failed commit (a full disk, an I/O error) undid writes that were
 *    answered: the writer makes them again, first thing in every group
 *    until one commits (redo), and answers nothing early meanwhile, nor
 *    while the disk is full;
 *  - a crash loses them. Each open counts one more epoch (sl_store_epoch),
 *    on disk before the store is used, and the engine puts it in the
 *    message versions it writes, so that a version answered in a lost
 *    lease is never written again, and its pop receipt never matches. */
#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "../util/metrics.h"
#include "store_int.h"

#define LAYOUT_VERSION 2
#define GROUP_MAX 512       /* requests in one transaction */
#define PURGE_EVERY 16      /* groups between purges of expired rows */
#define PURGE_ROWS 256      /* expired rows deleted per table per purge */
#define READERS_IDLE_MAX 32 /* idle reader connections kept open */
#define BUSY_TIMEOUT_MS 5000
#define BUSY_RETRIES 20
#define REDO_RETRY_MS 100 /* a failed commit's early answers are tried again this often */
#define PEXP_SLOTS 1024   /* partitions whose expiry the writer remembers */
#define PEXP_KEY_MAX 256  /* longer partition keys are not remembered */
#define PURGE_PARTS 16    /* partitions purged per table per purge */

/* The writer's transaction control, prepared once. */
enum { TX_BEGIN, TX_COMMIT, TX_ROLLBACK, TX_SAVEPOINT, TX_RELEASE, TX_ROLLBACK_TO, TX_N };
static const char *const tx_sql[TX_N] = {"BEGIN IMMEDIATE", "COMMIT",    "ROLLBACK",
                                         "SAVEPOINT r",     "RELEASE r", "ROLLBACK TO r"};

/* A connection and its prepared statements, by shape (store_int.h). */
typedef struct conn {
    sqlite3 *db;
    sl_stmt_cache stmts;
    sqlite3_stmt *ping; /* "SELECT 1", prepared at the first ping */
    struct conn *next;  /* in the idle reader list */
} conn;

/* One apply() (or ensure()) waiting for the writer. It lives on the
 * caller's stack; the writer fills rc and cur and, once its group has
 * ended, links the group's waiters through wnext and opens the first one's
 * latch. Each waiter, woken, opens the next one's before it returns: the
 * writer makes one wake-up call per group instead of one per request, and
 * nobody takes the queue mutex to learn that it is done. A request is not
 * touched by anyone after its latch was opened (a caller on a fiber of the
 * store pool parks on it, holding no thread). An apply_async() request (owned
 * != NULL) lives on the heap instead, nobody waits for it, and the writer
 * frees it once it is committed. An apply_cb() request (cb != NULL) lives
 * on the heap too; the writer calls cb once the group is over, outside
 * the mutex, and frees it. */
typedef struct req {
    const sl_write *w;
    size_t n;
    const sl_table *const *tables; /* ensure() when not NULL */
    size_t ntables;
    int rc;
    int want_cur; /* the caller wants the current rows of a CAS not applied */
    sl_result cur;
    sl_latch done; /* a blocking caller waits on it (a caller on a fiber parks) */
    struct req *next, *wnext;
    void *owned;                   /* apply_async(): the heap copy of the writes, freed with the req */
    void (*cb)(void *arg, int rc); /* apply_cb() */
    void *cb_arg;
    int early;    /* apply_cb_early(): cb may run before the commit */
    int answered; /* cb ran already (early) */
} req;

/* A delayed apply(): a deep copy of its writes in one allocation. While it
 * is parked, the writer notes what later writes did to its rows (see
 * note_shadows), so that it can land as a Cassandra write stamped when it
 * was issued would: shadow[k] has the columns of w[k] written since, gone[k]
 * says w[k]'s row (or partition) was deleted since. */
typedef struct parked {
    struct parked *next;
    size_t n;
    sl_write *w;
    uint32_t *shadow;
    uint8_t *gone;
} parked;

/* Appends p to the list *head .. *tail (under the list's lock). */
static void parked_push(parked **head, parked **tail, parked *p) {
    if (*tail)
        (*tail)->next = p;
    else
        *head = p;
    *tail = p;
}

/* Frees a list from p on. */
static void parked_free(parked *p) {
    for (parked *next; p; p = next) {
        next = p->next;
        free(p);
    }
}

/* A partition's noted expiry (SL_TABLE_EXPIRY_BY_PARTITION): the store's
 * record of it is no later than exp. */
typedef struct {
    const sl_table *t;
    uint64_t h;
    int64_t exp;
    size_t n;
    unsigned char *key; /* the partition key's values, as pexp_key makes them */
    uint64_t gen;
} pexp_slot;

typedef struct {
    sl_store base;
    char *path;

    conn *wc; /* the writer's connection: writer thread only */
    pthread_t thr;
    int thr_started;
    const sl_table **tables; /* ensured tables, for purging: writer only */
    size_t ntables, tcap;
    uint64_t groups;
    int full; /* the last group failed on a full disk: writer only */
    /* GET /metrics (atomic adds; read by any thread) */
    uint64_t m_commits, m_requests;
    sl_hist m_commit; /* a group's time, from its first statement to its commit's fsync */

    pthread_mutex_t mu;     /* guards the queue below */
    pthread_cond_t cv;      /* signals the writer */
    sqlite3_stmt *tx[TX_N]; /* the writer's transaction statements */
    req *head, *tail;
    int stopping;
    int npending;    /* requests queued or being committed */
    int max_pending; /* beyond this, apply() sheds load: 0 means no limit */

    pthread_mutex_t rmu; /* guards readers */
    conn *readers;       /* idle reader connections */
    int nidle;

    pthread_mutex_t fmu; /* serializes the fault hook */
    sl_fault_fn fault;
    void *fault_ctx;
    sl_read_fault_fn read_fault;
    void *read_fault_ctx;

    pthread_mutex_t pmu; /* guards the parked list */
    parked *phead, *ptail;
    int nparked;     /* atomic: items on it; the writer notes shadows only then */
    int late_stamps; /* sl_store_sqlite_set_late_stamps */

    int64_t epoch;              /* this open's (sl_store_epoch): set before the writer starts */
    pthread_mutex_t emu;        /* guards the unsynced list */
    pthread_cond_t ecv;         /* signals that the unsynced list emptied */
    parked *uhead, *utail;      /* copies of writes answered early, not yet committed */
    int nunsynced;              /* atomic: entries on the list */
    uint64_t usynced;           /* commits that emptied the list (under emu) */
    int redo;                   /* the list's writes were undone by a failed commit: writer only */
    int fail_commits;           /* sl_store_sqlite_fail_commits: writer only once set */
    uint64_t m_early;           /* requests answered early (atomic adds) */
    pexp_slot pexp[PEXP_SLOTS]; /* expiry noted per partition: writer only */
    uint64_t pexp_gen;          /* a slot of another generation is empty */
} sq_store;

static const sl_store_type sq_type;

static int map_err(int rc) {
    switch (rc & 0xff) {
    case SQLITE_OK:
    case SQLITE_ROW:
    case SQLITE_DONE:
        return 0;
    case SQLITE_NOMEM:
        return SL_ENOMEM;
    case SQLITE_FULL:
        return SL_ENOSPC;
    case SQLITE_IOERR:
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
    case SQLITE_PROTOCOL:
        return SL_EIO;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return SL_ETIMEOUT;
    case SQLITE_TOOBIG:
        return SL_ETOOBIG;
    case SQLITE_ERROR:
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_RANGE:
        return SL_EINVAL;
    }
    return SL_EINTERNAL;
}

/* --- SQL text ------------------------------------------------------------ */

static void sb_num(sbuf *b, long v) {
    char tmp[24];
    sb_addn(b, tmp, (size_t)snprintf(tmp, sizeof tmp, "%ld", v));
}

/* A quoted identifier: "name" with embedded quotes doubled. */
static void sb_ident2(sbuf *b, const char *name, const char *suffix) {
    sb_add(b, "\"");
    for (const char *q = name; *q; q++) {
        sb_addn(b, q, 1);
        if (*q == '"') sb_addn(b, q, 1);
    }
    if (suffix) sb_add(b, suffix);
    sb_add(b, "\"");
}

static void sb_ident(sbuf *b, const char *name) {
    sb_ident2(b, name, NULL);
}

/* "c[from]", .., "c[to-1]" */
static void sb_cols(sbuf *b, const sl_table *t, int from, int to) {
    for (int i = from; i < to; i++) {
        if (i > from) sb_add(b, ",");
        sb_ident(b, t->cols[i].name);
    }
}

/* "c0"=? AND .. for the first n columns. */
static void sb_eq(sbuf *b, const sl_table *t, int n) {
    for (int i = 0; i < n; i++) {
        if (i) sb_add(b, " AND ");
        sb_ident(b, t->cols[i].name);
        sb_add(b, "=?");
    }
}

static const char *live = " AND (\"_exp\"=0 OR \"_exp\">?)";

static void build_sql(sbuf *b, const sl_stmt_shape *k) {
    const sl_table *t = k->t;
    int nkey = t->npk + t->nck;
    switch (k->op) {
    case SL_STMT_GET:
        sb_add(b, "SELECT ");
        if (k->cols) { /* only these columns, in table order (cas_holds) */
            for (int i = 0, first = 1; i < t->ncol; i++) {
                if (!(k->cols >> i & 1)) continue;
                if (!first) sb_add(b, ",");
                sb_ident(b, t->cols[i].name);
                first = 0;
            }
        } else {
            sb_cols(b, t, 0, t->ncol);
        }
        sb_add(b, " FROM ");
        sb_ident(b, t->name);
        sb_add(b, " WHERE ");
        sb_eq(b, t, nkey);
        sb_add(b, live);
        break;
    case SL_STMT_SLICE: {
        int nfrom = k->nfrom, nto = k->nto, fexcl = k->from_excl, texcl = k->to_excl, desc = k->desc;
        sb_add(b, "SELECT ");
        sb_cols(b, t, 0, t->ncol);
        sb_add(b, " FROM ");
        sb_ident(b, t->name);
        sb_add(b, " WHERE ");
        sb_eq(b, t, t->npk);
        sb_add(b, live);
        for (int side = 0; side < 2; side++) {
            int nb = side ? nto : nfrom;
            if (!nb) continue;
            sb_add(b, " AND (");
            sb_cols(b, t, t->npk, t->npk + nb);
            sb_add(b, side ? (texcl ? ")<(" : ")<=(") : (fexcl ? ")>(" : ")>=("));
            for (int i = 0; i < nb; i++)
                sb_add(b, i ? ",?" : "?");
            sb_add(b, ")");
        }
        for (int i = 0; i < t->nck; i++) {
            sb_add(b, i ? "," : " ORDER BY ");
            sb_ident(b, t->cols[t->npk + i].name);
            sb_add(b, desc ? " DESC" : " ASC");
        }
        sb_add(b, " LIMIT ?");
        break;
    }
    case SL_STMT_UPSERT: {
        /* Parameters: ?1 now, ?2 expiry, then the key and the set columns.
         * A column the write leaves alone keeps its value, unless the row
         * it conflicts with has expired: then it reads as never written. */
        uint32_t mask = k->cols;
        int np = 2;
        sb_add(b, "INSERT INTO ");
        sb_ident(b, t->name);
        sb_add(b, "(");
        for (int i = 0; i < t->ncol; i++)
            if (i < nkey || (mask >> i & 1)) sb_ident(b, t->cols[i].name), sb_add(b, ",");
        sb_add(b, "\"_exp\") VALUES(");
        for (int i = 0; i < t->ncol; i++)
            if (i < nkey || (mask >> i & 1)) sb_add(b, "?"), sb_num(b, ++np), sb_add(b, ",");
        sb_add(b, "?2) ON CONFLICT(");
        sb_cols(b, t, 0, nkey);
        sb_add(b, ") DO UPDATE SET ");
        for (int i = nkey; i < t->ncol; i++) {
            sb_ident(b, t->cols[i].name);
            if (mask >> i & 1) {
                sb_add(b, "=excluded.");
                sb_ident(b, t->cols[i].name);
            } else {
                sb_add(b, "=CASE WHEN \"_exp\"<>0 AND \"_exp\"<=?1 THEN NULL ELSE ");
                sb_ident(b, t->cols[i].name);
                sb_add(b, " END");
            }
            sb_add(b, ",");
        }
        sb_add(b, "\"_exp\"=excluded.\"_exp\"");
        break;
    }
    case SL_STMT_UPDATE_IF:
    case SL_STMT_UPDATE_KEEP_EXP: {
        /* Parameters: ?1 now, ?2 expiry, the set columns, the key, then the
         * conditions' values (do_writes: one statement, no read first).
         * SL_STMT_UPDATE_KEEP_EXP leaves "_exp" alone and applies only to a
         * row whose expiry is already the one asked, up to a second earlier
         * (update_if); at least one column is set. */
        int np = 2, keep = k->op == SL_STMT_UPDATE_KEEP_EXP;
        sb_add(b, "UPDATE ");
        sb_ident(b, t->name);
        sb_add(b, " SET ");
        for (int i = nkey; i < t->ncol; i++) {
            if (!(k->cols >> i & 1)) continue;
            if (np > 2) sb_add(b, ",");
            sb_ident(b, t->cols[i].name);
            sb_add(b, "=?");
            sb_num(b, ++np);
        }
        if (!keep) sb_add(b, np > 2 ? ",\"_exp\"=?2" : "\"_exp\"=?2");
        sb_add(b, " WHERE ");
        for (int i = 0; i < nkey; i++) {
            if (i) sb_add(b, " AND ");
            sb_ident(b, t->cols[i].name);
            sb_add(b, "=?");
            sb_num(b, ++np);
        }
        sb_add(b, " AND (\"_exp\"=0 OR \"_exp\">?1)");
        if (keep) sb_add(b, " AND \"_exp\" BETWEEN ?2-1000 AND ?2");
        for (int c = 0; c < k->ncond; c++) {
            const char *name = t->cols[k->cond[c].col].name;
            sb_add(b, " AND ");
            if (t->cols[k->cond[c].col].type == SL_BLOB && !k->cond[c].is_null) {
                /* a large value is compared where it is kept */
                sb_add(b, "(CASE WHEN typeof(");
                sb_ident(b, name);
                sb_add(b, ")='integer' THEN (SELECT \"v\" FROM ");
                sb_ident2(b, t->name, "__v");
                sb_add(b, " WHERE rowid=");
                sb_ident(b, name);
                sb_add(b, ") ELSE ");
                sb_ident(b, name);
                sb_add(b, " END)");
            } else {
                sb_ident(b, name);
            }
            if (k->cond[c].is_null) {
                sb_add(b, " IS NULL");
            } else {
                sb_add(b, "=?");
                sb_num(b, ++np);
            }
        }
        break;
    }
    case SL_STMT_DEL_ROW:
    case SL_STMT_DEL_PART:
        sb_add(b, "DELETE FROM ");
        sb_ident(b, t->name);
        sb_add(b, " WHERE ");
        sb_eq(b, t, k->op == SL_STMT_DEL_ROW ? nkey : t->npk);
        break;
    case SL_STMT_PURGE:
        sb_add(b, "DELETE FROM ");
        sb_ident(b, t->name);
        sb_add(b, " WHERE (");
        sb_cols(b, t, 0, nkey);
        sb_add(b, ") IN (SELECT ");
        sb_cols(b, t, 0, nkey);
        sb_add(b, " FROM ");
        sb_ident(b, t->name);
        sb_add(b, " WHERE \"_exp\"<>0 AND \"_exp\"<=?1 LIMIT ?2)");
        break;
    case SL_STMT_PEXP_NOTE:
        sb_add(b, "INSERT INTO ");
        sb_ident2(b, t->name, "__parts");
        sb_add(b, "(");
        sb_cols(b, t, 0, t->npk);
        sb_add(b, ",\"exp\") VALUES(");
        for (int i = 0; i <= t->npk; i++)
            sb_add(b, i ? ",?" : "?");
        sb_add(b, ") ON CONFLICT(");
        sb_cols(b, t, 0, t->npk);
        sb_add(b, ") DO UPDATE SET \"exp\"=min(\"exp\",excluded.\"exp\")");
        break;
    case SL_STMT_PEXP_DUE:
        sb_add(b, "SELECT ");
        sb_cols(b, t, 0, t->npk);
        sb_add(b, " FROM ");
        sb_ident2(b, t->name, "__parts");
        sb_add(b, " WHERE \"exp\"<=?1 LIMIT ?2");
        break;
    case SL_STMT_PEXP_DROP:
    case SL_STMT_PEXP_MIN:
        sb_add(b, k->op == SL_STMT_PEXP_DROP ? "DELETE FROM " : "SELECT min(\"_exp\") FROM ");
        sb_ident(b, t->name);
        sb_add(b, " WHERE ");
        sb_eq(b, t, t->npk);
        sb_add(b, k->op == SL_STMT_PEXP_DROP ? " AND \"_exp\"<>0 AND \"_exp\"<=?" : " AND \"_exp\"<>0");
        break;
    case SL_STMT_BIG_PUT:
        sb_add(b, "INSERT INTO ");
        sb_ident2(b, t->name, "__v");
        sb_add(b, "(\"v\") VALUES(?)");
        break;
    case SL_STMT_BIG_GET:
    case SL_STMT_BIG_DEL:
        sb_add(b, k->op == SL_STMT_BIG_GET ? "SELECT \"v\" FROM " : "DELETE FROM ");
        sb_ident2(b, t->name, "__v");
        sb_add(b, " WHERE rowid=?");
        break;
    case SL_STMT_PEXP_SET:
    case SL_STMT_PEXP_DEL:
        sb_add(b, k->op == SL_STMT_PEXP_SET ? "UPDATE " : "DELETE FROM ");
        sb_ident2(b, t->name, "__parts");
        if (k->op == SL_STMT_PEXP_SET) sb_add(b, " SET \"exp\"=?");
        sb_add(b, " WHERE "); /* the key after the new expiry, if any */
        sb_eq(b, t, t->npk);
        break;
    }
}

/* --- Connections and the statement cache --------------------------------- */

/* Returns the cached statement of shape k, preparing it on first use. The
 * statement belongs to the connection; callers reset it after use. */
static int stmt_get(conn *c, const sl_stmt_shape *k, sqlite3_stmt **out) {
    if ((*out = sl_stmt_cache_get(&c->stmts, k)) != NULL) return 0;
    sbuf b = {0};
    build_sql(&b, k);
    if (b.oom) {
        free(b.p);
        return SL_ENOMEM;
    }
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(c->db, b.p, (int)b.n, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        sl_log(SL_DEBUG, "store: prepare %s: %s", b.p, sqlite3_errmsg(c->db));
        free(b.p);
        return map_err(rc);
    }
    free(b.p);
    if ((rc = sl_stmt_cache_put(&c->stmts, k, st)) != 0) {
        sqlite3_finalize(st);
        return rc;
    }
    *out = st;
    return 0;
}

/* stmt_get for the shapes that are their operation alone. */
static int stmt_op(conn *c, const sl_table *t, int op, sqlite3_stmt **out) {
    sl_stmt_shape k;
    sl_stmt_shape_init(&k, t, op);
    return stmt_get(c, &k, out);
}

static void finalize(void *st) {
    sqlite3_finalize(st);
}

static void conn_free(conn *c) {
    if (!c) return;
    sl_stmt_cache_free(&c->stmts, finalize);
    sqlite3_finalize(c->ping);
    sqlite3_close(c->db);
    free(c);
}

/* Runs SQL that returns no rows we need, retrying while the database is
 * busy (another process, or a checkpoint). */
static int exec(sqlite3 *db, const char *sql) {
    int rc;
    for (int i = 0; (rc = sqlite3_exec(db, sql, NULL, NULL, NULL)) == SQLITE_BUSY && i < BUSY_RETRIES; i++) {
    }
    if (rc != SQLITE_OK) sl_log(SL_DEBUG, "store: %s: %s", sql, sqlite3_errmsg(db));
    return map_err(rc);
}

/* exec() for the writer's transaction statements, without parsing them
 * again for every group. */
static void pexp_forget_all(sq_store *s);

static int tx(sq_store *s, int which) {
    sqlite3 *db = s->wc->db;
    if (which == TX_ROLLBACK || which == TX_ROLLBACK_TO) pexp_forget_all(s);
    if (!s->tx[which]) {
        int rc = sqlite3_prepare_v2(db, tx_sql[which], -1, &s->tx[which], NULL);
        if (rc != SQLITE_OK) return exec(db, tx_sql[which]);
    }
    sqlite3_stmt *st = s->tx[which];
    int rc;
    for (int i = 0; (rc = sqlite3_step(st)) == SQLITE_BUSY && i < BUSY_RETRIES; i++)
        sqlite3_reset(st);
    sqlite3_reset(st);
    if (rc == SQLITE_DONE || rc == SQLITE_ROW) return 0;
    sl_log(SL_DEBUG, "store: %s: %s", tx_sql[which], sqlite3_errmsg(db));
    return map_err(rc);
}

static int conn_open(const char *path, int writer, conn **out) {
    conn *c = sl_calloc(1, sizeof *c);
    if (!c) return SL_ENOMEM;
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (writer ? SQLITE_OPEN_CREATE : 0);
    int rc = map_err(sqlite3_open_v2(path, &c->db, flags, NULL));
    if (rc == 0) rc = map_err(sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS));
    if (rc == 0 && writer) {
        sqlite3_stmt *st = NULL;
        rc = map_err(sqlite3_prepare_v2(c->db, "PRAGMA journal_mode=WAL", -1, &st, NULL));
        if (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
            const char *mode = (const char *)sqlite3_column_text(st, 0);
            if (!mode || strcmp(mode, "wal") != 0) rc = SL_EIO;
        } else if (rc == 0) {
            rc = map_err(sqlite3_errcode(c->db));
            if (rc == 0) rc = SL_EIO;
        }
        sqlite3_finalize(st);
        if (rc == 0) rc = exec(c->db, "PRAGMA synchronous=FULL");
    } else if (rc == 0) {
        rc = exec(c->db, "PRAGMA query_only=1");
    }
    if (rc) {
        if (c->db) sl_log(SL_ERR, "store: open %s: %s", path, sqlite3_errmsg(c->db));
        conn_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

/* Readers come from a pool that grows to the number of concurrent readers
 * and keeps up to READERS_IDLE_MAX idle ones; a connection is used by one
 * thread at a time. */
static int reader_take(sq_store *s, conn **out) {
    pthread_mutex_lock(&s->rmu);
    conn *c = s->readers;
    if (c) {
        s->readers = c->next;
        s->nidle--;
    }
    pthread_mutex_unlock(&s->rmu);
    if (c) {
        *out = c;
        return 0;
    }
    return conn_open(s->path, 0, out);
}

static void reader_put(sq_store *s, conn *c) {
    pthread_mutex_lock(&s->rmu);
    int keep = s->nidle < READERS_IDLE_MAX;
    if (keep) {
        c->next = s->readers;
        s->readers = c;
        s->nidle++;
    }
    pthread_mutex_unlock(&s->rmu);
    if (!keep) conn_free(c);
}

/* --- Values -------------------------------------------------------------- */

static int bind_val(sqlite3_stmt *st, int i, sl_type ty, const sl_val *v) {
    if (!v->set || v->null) return sqlite3_bind_null(st, i);
    switch (ty) {
    case SL_INT:
        return sqlite3_bind_int64(st, i, v->i);
    case SL_TEXT:
        return sqlite3_bind_text64(st, i, v->n ? v->p : "", v->n, SQLITE_STATIC, SQLITE_UTF8);
    case SL_BLOB:
        return v->n ? sqlite3_bind_blob64(st, i, v->p, v->n, SQLITE_STATIC) : sqlite3_bind_zeroblob(st, i, 0);
    }
    return SQLITE_MISUSE;
}

static int step(sqlite3_stmt *st) {
    int rc;
    for (int i = 0; (rc = sqlite3_step(st)) == SQLITE_BUSY && i < BUSY_RETRIES; i++)
        sqlite3_reset(st);
    return rc;
}

/* Runs a statement that returns no rows and resets it. */
static int run(sqlite3_stmt *st) {
    int rc = step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : map_err(rc);
}

/* --- Large values ----------------------------------------------------------
 *
 * A blob longer than BIG_VALUE bytes is not kept in its row. It goes in
 * "T__v", a rowid table of values alone, and the row's column holds its
 * rowid, an integer, which a blob column never holds otherwise. Each write
 * to a row rewrites all of it, and a message's row is written three times
 * (its put, its lease, its ack). SQLite keeps a row of a WITHOUT ROWID table
 * that is longer than about 1,000 bytes (at 4 KiB pages) partly on overflow
 * pages, and each rewrite writes those pages anew, and frees the old ones.
 * Out of its row, a value is written once. Triggers (ensure_one) delete a
 * value when its row is deleted, or its column rewritten, however that
 * happens (a delete, an update, a purge, an upsert over an expired row). */
#define BIG_VALUE 640

/* Binds value v of column col of t as parameter i of st, a write. A large
 * blob of a regular column (keys stay in their row) is stored first and its
 * reference bound: *ref (else 0). */
static int bind_w(conn *c, sqlite3_stmt *st, int i, const sl_table *t, int col, const sl_val *v,
                  int64_t *ref) {
    *ref = 0;
    if (col < t->npk + t->nck || t->cols[col].type != SL_BLOB || !v->set || v->null || v->n <= BIG_VALUE) {
        bind_val(st, i, t->cols[col].type, v);
        return 0;
    }
    sqlite3_stmt *put;
    int rc = stmt_op(c, t, SL_STMT_BIG_PUT, &put);
    if (rc) return rc;
    sqlite3_bind_blob64(put, 1, v->p, v->n, SQLITE_STATIC);
    if ((rc = run(put))) return rc;
    *ref = sqlite3_last_insert_rowid(c->db);
    sqlite3_bind_int64(st, i, *ref);
    return 0;
}

/* Deletes the values that refs[0..n) stand for, which no row took (a
 * condition that failed). */
static int big_drop(conn *c, const sl_table *t, const int64_t *refs, int n) {
    for (int i = 0; i < n; i++) {
        if (!refs[i]) continue;
        sqlite3_stmt *del;
        int rc = stmt_op(c, t, SL_STMT_BIG_DEL, &del);
        if (rc == 0) {
            sqlite3_bind_int64(del, 1, refs[i]);
            rc = run(del);
        }
        if (rc) return rc;
    }
    return 0;
}

/* Steps to the value that column i of t refers to, read as column sc of
 * st's current row, when it holds a reference (a regular blob column
 * holding an integer): *out is then that statement, on its row, the value
 * in its column 0, which the caller resets. */
static int big_get(conn *c, const sl_table *t, int i, sqlite3_stmt *st, int sc, sqlite3_stmt **out) {
    *out = NULL;
    if (i < t->npk + t->nck || t->cols[i].type != SL_BLOB || sqlite3_column_type(st, sc) != SQLITE_INTEGER)
        return 0;
    sqlite3_stmt *get;
    int rc = stmt_op(c, t, SL_STMT_BIG_GET, &get);
    if (rc) return rc;
    sqlite3_bind_int64(get, 1, sqlite3_column_int64(st, sc));
    int src = step(get);
    if (src == SQLITE_ROW) {
        *out = get;
        return 0;
    }
    sqlite3_reset(get);
    return src == SQLITE_DONE ? SL_EIO : map_err(src); /* a reference to nothing: damage */
}

/* Appends the statement's current row to r, copying text and blobs into r's
 * arena (a large value from where it is kept, c's "T__v"). Text is also
 * NUL-terminated there, for callers that print it. */
static int read_row(conn *c, sqlite3_stmt *st, const sl_table *t, sl_result *r) {
    sl_row *row = sl_result_add_row(r);
    if (!row) return SL_ENOMEM;
    for (int i = 0; i < t->ncol; i++) {
        sl_val *v = &row->v[i];
        if (sqlite3_column_type(st, i) == SQLITE_NULL) continue;
        if (t->cols[i].type == SL_INT) {
            *v = sl_vint(sqlite3_column_int64(st, i));
            continue;
        }
        sqlite3_stmt *big, *src = st;
        int rc = big_get(c, t, i, st, i, &big);
        if (rc) return rc;
        int col = i;
        if (big) src = big, col = 0;
        const void *p = t->cols[i].type == SL_TEXT ? (const void *)sqlite3_column_text(src, col)
                                                   : sqlite3_column_blob(src, col);
        size_t n = (size_t)sqlite3_column_bytes(src, col);
        char *copy = NULL;
        if (!p && n == 0 && sqlite3_errcode(sqlite3_db_handle(src)) == SQLITE_NOMEM)
            rc = SL_ENOMEM;
        else if (!(copy = sl_result_alloc(r, n + 1)))
            rc = SL_ENOMEM;
        if (copy) {
            if (n) memcpy(copy, p, n);
            copy[n] = '\0';
            *v = sl_vbytes(copy, n);
        }
        if (big) sqlite3_reset(big);
        if (rc) return rc;
    }
    return 0;
}

/* --- Input checks (in the caller's thread, before anything is queued) ----- */

/* Key values must be set and not null, like Cassandra's. */
/* --- The writer ---------------------------------------------------------- */

/* Reads the live row with w's key into cur; *found says whether there is one. */
static int read_current(conn *c, const sl_write *w, int64_t now, sl_result *cur, int *found) {
    const sl_table *t = w->t;
    int nkey = t->npk + t->nck;
    sqlite3_stmt *st;
    int rc = stmt_op(c, t, SL_STMT_GET, &st);
    if (rc) return rc;
    for (int i = 0; i < nkey; i++)
        bind_val(st, i + 1, t->cols[i].type, &w->row.v[i]);
    sqlite3_bind_int64(st, nkey + 1, now);
    int src = step(st);
    *found = src == SQLITE_ROW;
    rc = src == SQLITE_ROW ? read_row(c, st, t, cur) : src == SQLITE_DONE ? 0 : map_err(src);
    sqlite3_reset(st);
    return rc;
}

/* Whether CAS w's condition holds now (*holds), reading only the columns
 * its conditions name, and nothing into memory (the engine never asks for
 * the current rows; read_current reads them for a caller that does). */
static int cas_holds(conn *c, const sl_write *w, int64_t now, int *holds) {
    const sl_table *t = w->t;
    int nkey = t->npk + t->nck;
    sl_stmt_shape k;
    sl_stmt_shape_init(&k, t, SL_STMT_GET);
    k.cols = 1u; /* the first key column: whether the row exists */
    for (int i = 0; i < w->ncond; i++)
        k.cols |= 1u << w->cond[i].col;
    sqlite3_stmt *st;
    int rc = stmt_get(c, &k, &st);
    if (rc) return rc;
    for (int i = 0; i < nkey; i++)
        bind_val(st, i + 1, t->cols[i].type, &w->row.v[i]);
    sqlite3_bind_int64(st, nkey + 1, now);
    int src = step(st);
    if (src != SQLITE_ROW) {
        sqlite3_reset(st);
        if (src != SQLITE_DONE) return map_err(src);
        *holds = w->kind == SL_W_INSERT_IF_NOT_EXISTS;
        return 0;
    }
    *holds = w->kind != SL_W_INSERT_IF_NOT_EXISTS;
    for (int i = 0; *holds && i < w->ncond; i++) {
        const sl_cond *cd = &w->cond[i];
        int col = __builtin_popcount(k.cols & ((1u << cd->col) - 1)); /* its place in the select list */
        int null = sqlite3_column_type(st, col) == SQLITE_NULL;
        if (cd->v.null || null) {
            *holds = cd->v.null && null;
        } else if (t->cols[cd->col].type == SL_INT) {
            *holds = sqlite3_column_int64(st, col) == cd->v.i;
        } else {
            sqlite3_stmt *big, *src = st;
            if ((rc = big_get(c, t, cd->col, st, col, &big))) break;
            if (big) src = big, col = 0;
            const void *p = sqlite3_column_blob(src, col);
            size_t n = (size_t)sqlite3_column_bytes(src, col);
            *holds = n == cd->v.n && (n == 0 || (p && memcmp(p, cd->v.p, n) == 0));
            if (big) sqlite3_reset(big);
        }
    }
    sqlite3_reset(st);
    return rc;
}

static int write_one(conn *c, const sl_write *w, int64_t now) {
    const sl_table *t = w->t;
    int nkey = t->npk + t->nck;
    sqlite3_stmt *st;
    int rc;
    if (w->kind == SL_W_DELETE_ROW || w->kind == SL_W_DELETE_PARTITION) {
        int nb = w->kind == SL_W_DELETE_ROW ? nkey : t->npk;
        if ((rc = stmt_op(c, t, w->kind == SL_W_DELETE_ROW ? SL_STMT_DEL_ROW : SL_STMT_DEL_PART, &st)))
            return rc;
        for (int i = 0; i < nb; i++)
            bind_val(st, i + 1, t->cols[i].type, &w->row.v[i]);
        return run(st);
    }
    sl_stmt_shape k;
    sl_stmt_shape_init(&k, t, SL_STMT_UPSERT);
    for (int i = nkey; i < t->ncol; i++)
        if (w->row.v[i].set) k.cols |= 1u << i;
    uint32_t mask = k.cols;
    if ((rc = stmt_get(c, &k, &st))) return rc;
    int np = 2, nref = 0;
    int64_t refs[SL_MAX_COLS];
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int64(st, 2, w->ttl > 0 ? now + (int64_t)w->ttl * 1000 : 0);
    for (int i = 0; rc == 0 && i < t->ncol; i++)
        if (i < nkey || (mask >> i & 1)) rc = bind_w(c, st, ++np, t, i, &w->row.v[i], &refs[nref++]);
    if (rc == 0) rc = run(st);
    if (rc) big_drop(c, t, refs, nref); /* a request of one write has no savepoint to undo them */
    return rc;
}

/* Update-if w as one conditional UPDATE: *applied says whether its
 * conditions held (a row that is missing or expired holds none). */
static int update_if_as(conn *c, const sl_write *w, int64_t now, int op, int *applied) {
    const sl_table *t = w->t;
    int nkey = t->npk + t->nck;
    sl_stmt_shape k;
    sl_stmt_shape_init(&k, t, op);
    for (int i = nkey; i < t->ncol; i++)
        if (w->row.v[i].set) k.cols |= 1u << i;
    k.ncond = (uint8_t)w->ncond;
    for (int i = 0; i < w->ncond; i++) {
        k.cond[i].col = (uint8_t)w->cond[i].col;
        k.cond[i].is_null = w->cond[i].v.null;
    }
    sqlite3_stmt *st;
    int rc = stmt_get(c, &k, &st);
    if (rc) return rc;
    int np = 2, nref = 0;
    int64_t refs[SL_MAX_COLS];
    *applied = 0;
    sqlite3_bind_int64(st, 1, now);
    sqlite3_bind_int64(st, 2, w->ttl > 0 ? now + (int64_t)w->ttl * 1000 : 0);
    for (int i = nkey; rc == 0 && i < t->ncol; i++)
        if (k.cols >> i & 1) rc = bind_w(c, st, ++np, t, i, &w->row.v[i], &refs[nref++]);
    for (int i = 0; i < nkey; i++)
        bind_val(st, ++np, t->cols[i].type, &w->row.v[i]);
    for (int i = 0; i < w->ncond; i++)
        if (!w->cond[i].v.null) bind_val(st, ++np, t->cols[w->cond[i].col].type, &w->cond[i].v);
    if (rc == 0 && (rc = run(st)) == 0 && (*applied = sqlite3_changes(c->db) > 0)) return 0;
    /* Not applied, or failed: the values stored for it are nobody's (a
     * request of one write has no savepoint to undo them). */
    int drc = big_drop(c, t, refs, nref);
    return rc ? rc : drc;
}

/* A conditional update. A caller that wants a row to expire passes its
 * remaining TTL on every write (store.h), in whole seconds rounded up, so
 * that most updates ask again for the expiry the row has, or up to a second
 * later. Rewriting "_exp" all the same would move the row in the expiry
 * index, for nothing: an update that sets columns first runs without it,
 * for a row whose expiry lies within the second before the one asked (the
 * row expires at most a second early, as Cassandra, which counts expiry in
 * whole seconds, would make it). Only when that changes no row (a failed
 * condition, or an expiry that moves) does the full update run. */
static int update_if(conn *c, const sl_write *w, int64_t now, int *applied) {
    int cols = 0;
    for (int i = w->t->npk + w->t->nck; i < w->t->ncol; i++)
        cols |= w->row.v[i].set;
    int rc;
    if (cols && ((rc = update_if_as(c, w, now, SL_STMT_UPDATE_KEEP_EXP, applied)) || *applied)) return rc;
    return update_if_as(c, w, now, SL_STMT_UPDATE_IF, applied);
}

/* --- Expiry by partition --------------------------------------------------
 *
 * A table flagged SL_TABLE_EXPIRY_BY_PARTITION has no index of its rows'
 * expiry: "T__parts" holds one expiry per partition, no later than that of
 * any of its rows that expire. Its rows are written within a short time (a
 * queue's bucket), so the record is written about once a partition, not
 * once a row, and the owner deletes the partition whole, record and all.
 * The purge takes the partitions whose expiry has passed, deletes their
 * expired rows and records the earliest expiry left. The writer remembers
 * what it recorded (pexp, a cache: a slot may be overwritten): a write that
 * expires no earlier than the remembered expiry writes no record. What is
 * remembered is never earlier than what is on disk; a rollback could break
 * that, so every rollback forgets everything (pexp_gen). */

/* The partition key of row v as bytes; 0 when it is too long to keep. */
static size_t pexp_key(const sl_table *t, const sl_val *v, unsigned char *buf) {
    size_t n = 0;
    for (int i = 0; i < t->npk; i++) {
        if (t->cols[i].type == SL_INT) {
            if (n + 9 > PEXP_KEY_MAX) return 0;
            buf[n++] = 'i';
            memcpy(buf + n, &v[i].i, 8);
            n += 8;
            continue;
        }
        uint32_t len = (uint32_t)v[i].n;
        if (n + 5 + v[i].n > PEXP_KEY_MAX) return 0;
        buf[n++] = 's';
        memcpy(buf + n, &len, 4);
        n += 4;
        if (len) memcpy(buf + n, v[i].p, len);
        n += len;
    }
    return n;
}

/* The slot of partition v of t, and whether it holds that partition. */
static pexp_slot *pexp_find(sq_store *s, const sl_table *t, const sl_val *v, unsigned char *key, size_t *n,
                            uint64_t *h, int *known) {
    *known = 0;
    if ((*n = pexp_key(t, v, key)) == 0) return NULL;
    uint64_t x = 1469598103934665603ULL ^ (uint64_t)(uintptr_t)t;
    for (size_t i = 0; i < *n; i++)
        x = (x ^ key[i]) * 1099511628211ULL;
    *h = x;
    pexp_slot *e = &s->pexp[x % PEXP_SLOTS];
    *known = e->gen == s->pexp_gen && e->t == t && e->h == x && e->n == *n && memcmp(e->key, key, *n) == 0;
    return e;
}

static void pexp_forget_all(sq_store *s) {
    s->pexp_gen++;
}

static void bind_key(sqlite3_stmt *st, int from, const sl_table *t, const sl_val *v) {
    for (int i = 0; i < t->npk; i++)
        bind_val(st, from + i, t->cols[i].type, &v[i]);
}

/* Makes the record of write w's partition no later than exp, the expiry
 * that w gives its row. */
static int pexp_note(sq_store *s, const sl_write *w, int64_t exp) {
    const sl_table *t = w->t;
    unsigned char key[PEXP_KEY_MAX];
    size_t n;
    uint64_t h = 0;
    int known;
    pexp_slot *e = pexp_find(s, t, w->row.v, key, &n, &h, &known);
    if (known && e->exp <= exp) return 0;
    sqlite3_stmt *st;
    int rc = stmt_op(s->wc, t, SL_STMT_PEXP_NOTE, &st);
    if (rc) return rc;
    bind_key(st, 1, t, w->row.v);
    sqlite3_bind_int64(st, t->npk + 1, exp);
    if ((rc = run(st)) || !e) return rc;
    if (!known) {
        unsigned char *p = sl_realloc(e->key, n);
        if (!p) { /* remembered no more: the next write records again */
            e->gen = s->pexp_gen - 1;
            return 0;
        }
        memcpy(p, key, n);
        *e = (pexp_slot){t, h, exp, n, p, s->pexp_gen};
    }
    e->exp = exp;
    return 0;
}

/* Sets partition v's record to exp, or deletes it (left 0). */
static int pexp_set(sq_store *s, const sl_table *t, const sl_val *v, int left, int64_t exp) {
    sqlite3_stmt *st;
    int rc = stmt_op(s->wc, t, left ? SL_STMT_PEXP_SET : SL_STMT_PEXP_DEL, &st);
    if (rc) return rc;
    if (left) sqlite3_bind_int64(st, 1, exp);
    bind_key(st, left ? 2 : 1, t, v);
    if ((rc = run(st))) return rc;
    unsigned char key[PEXP_KEY_MAX];
    size_t n;
    uint64_t h;
    int known;
    pexp_slot *e = pexp_find(s, t, v, key, &n, &h, &known);
    if (known) e->gen = s->pexp_gen - 1; /* the record moved later: forgotten */
    return 0;
}

/* Before write w: a write that gives its row an expiry first makes the
 * partition's record no later (were the write not made after all, the
 * record is only early); a failure leaves the write unmade. */
static int pexp_before(sq_store *s, const sl_write *w, int64_t now) {
    if (!(w->t->flags & SL_TABLE_EXPIRY_BY_PARTITION) || w->ttl <= 0) return 0;
    if (w->kind == SL_W_DELETE_ROW || w->kind == SL_W_DELETE_PARTITION) return 0;
    return pexp_note(s, w, now + (int64_t)w->ttl * 1000);
}

/* After write w: a partition deleted takes its record along. A record that
 * could not be deleted is harmless (the purge finds the partition empty),
 * unless the failure ended the transaction. */
static int pexp_after(sq_store *s, const sl_write *w) {
    if (!(w->t->flags & SL_TABLE_EXPIRY_BY_PARTITION) || w->kind != SL_W_DELETE_PARTITION) return 0;
    int rc = pexp_set(s, w->t, w->row.v, 0, 0);
    return rc && sqlite3_get_autocommit(s->wc->db) ? rc : 0;
}

/* write_one and update_if on the writer's connection, with the records of
 * the partitions' expiry kept (pexp_before, pexp_after). */
static int write_kept(sq_store *s, const sl_write *w, int64_t now) {
    int rc;
    if ((rc = pexp_before(s, w, now)) || (rc = write_one(s->wc, w, now))) return rc;
    return pexp_after(s, w);
}

static int update_kept(sq_store *s, const sl_write *w, int64_t now, int *applied) {
    int rc = pexp_before(s, w, now);
    return rc ? rc : update_if(s->wc, w, now, applied);
}

/* Purges up to PURGE_PARTS partitions of t whose expiry has passed. */
static int purge_parts(sq_store *s, const sl_table *t, int64_t now) {
    for (int k = 0; k < PURGE_PARTS; k++) {
        sqlite3_stmt *st;
        int rc = stmt_op(s->wc, t, SL_STMT_PEXP_DUE, &st);
        if (rc) return rc;
        sqlite3_bind_int64(st, 1, now);
        sqlite3_bind_int(st, 2, 1);
        int src = step(st);
        if (src != SQLITE_ROW) {
            sqlite3_reset(st);
            return src == SQLITE_DONE ? 0 : map_err(src);
        }
        sl_val v[SL_MAX_PK];
        void *mem[SL_MAX_PK] = {0};
        for (int i = 0; i < t->npk && rc == 0; i++) {
            if (t->cols[i].type == SL_INT) {
                v[i] = sl_vint(sqlite3_column_int64(st, i));
                continue;
            }
            const void *p = sqlite3_column_blob(st, i);
            size_t n = (size_t)sqlite3_column_bytes(st, i);
            if ((mem[i] = sl_malloc(n ? n : 1)) == NULL) {
                rc = SL_ENOMEM;
                break;
            }
            if (n) memcpy(mem[i], p, n);
            v[i] = sl_vbytes(mem[i], n);
        }
        sqlite3_reset(st);
        if (rc == 0) rc = stmt_op(s->wc, t, SL_STMT_PEXP_DROP, &st);
        if (rc == 0) {
            bind_key(st, 1, t, v);
            sqlite3_bind_int64(st, t->npk + 1, now);
            rc = run(st);
        }
        if (rc == 0) rc = stmt_op(s->wc, t, SL_STMT_PEXP_MIN, &st);
        if (rc == 0) {
            bind_key(st, 1, t, v);
            src = step(st);
            int left = src == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL;
            int64_t first = left ? sqlite3_column_int64(st, 0) : 0;
            sqlite3_reset(st);
            rc = src == SQLITE_ROW || src == SQLITE_DONE ? pexp_set(s, t, v, left, first) : map_err(src);
        }
        for (int i = 0; i < t->npk; i++)
            free(mem[i]);
        if (rc) return rc;
    }
    return 0;
}

static int same_key(const sl_write *a, const sl_write *b, int ncols);

/* Whether conditional batch w[0..n) can run as it goes, each update-if one
 * conditional UPDATE: no insert-if-not-exists, no partition deleted, and no
 * row written twice, so that no write changes what a later condition sees
 * (in a Cassandra batch every condition sees the state before it). */
static int updates_only(const sl_write *w, size_t n) {
    for (size_t k = 0; k < n; k++) {
        if (w[k].kind == SL_W_INSERT_IF_NOT_EXISTS || w[k].kind == SL_W_DELETE_PARTITION) return 0;
        for (size_t j = 0; j < k; j++)
            if (w[j].t == w[k].t && same_key(&w[j], &w[k], w[k].t->npk + w[k].t->nck)) return 0;
    }
    return 1;
}

static void note_shadows(sq_store *s, const sl_write *w, size_t n);
static parked *copy_writes(const sl_write *w, size_t n);

/* Executes one apply() inside the group's transaction. Conditions are all
 * checked before anything is written, so a batch that is not applied leaves
 * no trace, and every condition sees the state before the batch, as in a
 * Cassandra batch. */
static int do_writes(sq_store *s, req *r) {
    int64_t now = sl_now_ms();
    int rc, ok = 1;
    if (sl_write_is_cas(r->w, r->n) && updates_only(r->w, r->n)) {
        /* One statement a write, in order; the first condition that fails
         * undoes those before it (the request's savepoint: run_group opens
         * one when n > 1). This reads nothing beforehand, which made every
         * lease and ack cost a lookup more. */
        for (size_t k = 0; k < r->n; k++) {
            const sl_write *w = &r->w[k];
            if (w->kind != SL_W_UPDATE_IF) {
                if ((rc = write_kept(s, w, now))) return rc;
                continue;
            }
            if ((rc = update_kept(s, w, now, &ok))) return rc;
            if (ok) continue;
            if (k > 0 && (rc = tx(s, TX_ROLLBACK_TO))) return rc;
            for (size_t j = 0; r->want_cur && j < r->n; j++) {
                int found;
                if (r->w[j].kind != SL_W_UPDATE_IF) continue;
                if ((rc = read_current(s->wc, &r->w[j], now, &r->cur, &found))) return rc;
            }
            return SL_ENOTAPPLIED;
        }
        if (__atomic_load_n(&s->nparked, __ATOMIC_ACQUIRE) > 0) note_shadows(s, r->w, r->n);
        return 0;
    }
    if (sl_write_is_cas(r->w, r->n)) {
        for (size_t k = 0; k < r->n; k++) {
            const sl_write *w = &r->w[k];
            if (w->kind != SL_W_INSERT_IF_NOT_EXISTS && w->kind != SL_W_UPDATE_IF) continue;
            int holds = 0;
            if ((rc = cas_holds(s->wc, w, now, &holds))) return rc;
            ok &= holds;
        }
        /* Not applied: the rows as they are, for a caller that wants them. */
        for (size_t k = 0; !ok && r->want_cur && k < r->n; k++) {
            int found;
            if (r->w[k].kind != SL_W_INSERT_IF_NOT_EXISTS && r->w[k].kind != SL_W_UPDATE_IF) continue;
            if ((rc = read_current(s->wc, &r->w[k], now, &r->cur, &found))) return rc;
        }
        if (!ok) return SL_ENOTAPPLIED;
    }
    for (size_t k = 0; k < r->n; k++)
        if ((rc = write_kept(s, &r->w[k], now))) return rc;
    if (__atomic_load_n(&s->nparked, __ATOMIC_ACQUIRE) > 0) note_shadows(s, r->w, r->n);
    return 0;
}

/* Whether sql, with the texts a and b bound, returns a row. */
static int has_row(sqlite3 *db, const char *sql, const char *a, const char *b, int *found) {
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc != SQLITE_OK) return map_err(rc);
    sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
    rc = step(st);
    *found = rc == SQLITE_ROW;
    sqlite3_finalize(st);
    return rc == SQLITE_ROW || rc == SQLITE_DONE ? 0 : map_err(rc);
}

static int has_column(sqlite3 *db, const char *table, const char *col, int *found) {
    return has_row(db, "SELECT 1 FROM pragma_table_info(?1) WHERE name=?2", table, col, found);
}

/* Whether the index named table + suffix exists. */
static int has_index(sqlite3 *db, const char *table, const char *suffix, int *found) {
    return has_row(db, "SELECT 1 FROM sqlite_master WHERE type='index' AND name=?1||?2", table, suffix,
                   found);
}

static const char *const tyname[] = {"", " INTEGER", " TEXT", " BLOB"};

/* CREATE TABLE "<t><suffix>" of t's first ncol columns and then last, keyed
 * by the first nkey. */
static void sb_create(sbuf *b, const sl_table *t, const char *suffix, int ncol, const char *last, int nkey) {
    sb_add(b, "CREATE TABLE IF NOT EXISTS ");
    sb_ident2(b, t->name, suffix);
    sb_add(b, "(");
    for (int i = 0; i < ncol; i++) {
        sb_ident(b, t->cols[i].name);
        sb_add(b, tyname[t->cols[i].type]);
        sb_add(b, ",");
    }
    sb_add(b, last);
    sb_add(b, ",PRIMARY KEY(");
    sb_cols(b, t, 0, nkey);
    sb_add(b, ")) WITHOUT ROWID;");
}

static int ensure_one(sqlite3 *db, const sl_table *t) {
    sbuf b = {0};
    int rc;
    sb_create(&b, t, NULL, t->ncol, "\"_exp\" INTEGER NOT NULL DEFAULT 0", t->npk + t->nck);
    if (t->flags & SL_TABLE_EXPIRY_BY_PARTITION) {
        /* The partitions' expiry (see the top of the file), taken over
         * from the rows' index when a build before made one. */
        sb_create(&b, t, "__parts", t->npk, "\"exp\" INTEGER NOT NULL", t->npk);
        sb_add(&b, "CREATE INDEX IF NOT EXISTS ");
        sb_ident2(&b, t->name, "__parts_exp");
        sb_add(&b, " ON ");
        sb_ident2(&b, t->name, "__parts");
        sb_add(&b, "(\"exp\");");
        int found = 0;
        if ((rc = has_index(db, t->name, "__exp", &found))) {
            free(b.p);
            return rc;
        }
        if (found) {
            sb_add(&b, "INSERT INTO ");
            sb_ident2(&b, t->name, "__parts");
            sb_add(&b, " SELECT ");
            sb_cols(&b, t, 0, t->npk);
            sb_add(&b, ",min(\"_exp\") FROM ");
            sb_ident(&b, t->name);
            sb_add(&b, " WHERE \"_exp\"<>0 GROUP BY ");
            sb_cols(&b, t, 0, t->npk);
            sb_add(&b, " ON CONFLICT DO UPDATE SET \"exp\"=min(\"exp\",excluded.\"exp\");DROP INDEX ");
            sb_ident2(&b, t->name, "__exp");
        }
    } else {
        sb_add(&b, "CREATE INDEX IF NOT EXISTS ");
        sb_ident2(&b, t->name, "__exp");
        sb_add(&b, " ON ");
        sb_ident(&b, t->name);
        sb_add(&b, "(\"_exp\") WHERE \"_exp\"<>0");
    }
    rc = b.oom ? SL_ENOMEM : exec(db, b.p);
    /* Columns added to the definition since the table was created. */
    for (int i = t->npk + t->nck; rc == 0 && i < t->ncol; i++) {
        int found = 0;
        if ((rc = has_column(db, t->name, t->cols[i].name, &found)) || found) continue;
        b.n = 0;
        sb_add(&b, "ALTER TABLE ");
        sb_ident(&b, t->name);
        sb_add(&b, " ADD COLUMN ");
        sb_ident(&b, t->cols[i].name);
        sb_add(&b, tyname[t->cols[i].type]);
        rc = b.oom ? SL_ENOMEM : exec(db, b.p);
    }
    /* Where the blob columns' large values are kept (see "Large values"),
     * and the triggers that delete a value with its row, or when its
     * column is rewritten with anything else. */
    b.n = 0;
    for (int i = t->npk + t->nck; i < t->ncol; i++) {
        if (t->cols[i].type != SL_BLOB) continue;
        if (!b.n) {
            sb_add(&b, "CREATE TABLE IF NOT EXISTS ");
            sb_ident2(&b, t->name, "__v");
            sb_add(&b, "(\"v\");");
        }
        for (int del = 0; del < 2; del++) {
            sbuf name = {0};
            sb_add(&name, t->name);
            sb_add(&name, del ? "__v_d_" : "__v_u_");
            sb_add(&name, t->cols[i].name);
            sb_add(&b, "CREATE TRIGGER IF NOT EXISTS ");
            sb_ident(&b, name.oom ? "" : name.p);
            b.oom |= name.oom;
            free(name.p);
            sb_add(&b, del ? " AFTER DELETE ON " : " AFTER UPDATE OF ");
            if (!del) {
                sb_ident(&b, t->cols[i].name);
                sb_add(&b, " ON ");
            }
            sb_ident(&b, t->name);
            sb_add(&b, " WHEN typeof(OLD.");
            sb_ident(&b, t->cols[i].name);
            sb_add(&b, ")='integer'");
            if (!del) {
                sb_add(&b, " AND OLD.");
                sb_ident(&b, t->cols[i].name);
                sb_add(&b, " IS NOT NEW.");
                sb_ident(&b, t->cols[i].name);
            }
            sb_add(&b, " BEGIN DELETE FROM ");
            sb_ident2(&b, t->name, "__v");
            sb_add(&b, " WHERE rowid=OLD.");
            sb_ident(&b, t->cols[i].name);
            sb_add(&b, "; END;");
        }
    }
    if (rc == 0 && b.n) rc = b.oom ? SL_ENOMEM : exec(db, b.p);
    free(b.p);
    return rc;
}

static int do_ensure(sq_store *s, req *r) {
    for (size_t i = 0; i < r->ntables; i++) {
        int rc = ensure_one(s->wc->db, r->tables[i]);
        if (rc) return rc;
    }
    return 0;
}

/* Called after the ensure() request's transaction committed. */
static void remember_tables(sq_store *s, const req *r) {
    for (size_t i = 0; i < r->ntables; i++) {
        size_t j = 0;
        while (j < s->ntables && strcmp(s->tables[j]->name, r->tables[i]->name) != 0)
            j++;
        if (j < s->ntables) continue;
        if (s->ntables == s->tcap) {
            size_t cap = s->tcap ? s->tcap * 2 : 16;
            const sl_table **p = sl_realloc(s->tables, cap * sizeof *p);
            if (!p) return; /* only purging is affected */
            s->tables = p;
            s->tcap = cap;
        }
        s->tables[s->ntables++] = r->tables[i];
    }
}

/* Deletes a bounded number of expired rows, so that expired data does not
 * pile up and no single group pays for all of it. Failures are harmless:
 * expired rows are invisible anyway. */
static void purge(sq_store *s) {
    int64_t now = sl_now_ms();
    if (exec(s->wc->db, "SAVEPOINT purge")) return;
    for (size_t i = 0; i < s->ntables; i++) {
        const sl_table *t = s->tables[i];
        sqlite3_stmt *st;
        int rc;
        if (t->flags & SL_TABLE_EXPIRY_BY_PARTITION) {
            rc = purge_parts(s, t, now);
        } else {
            if (stmt_op(s->wc, t, SL_STMT_PURGE, &st)) continue;
            sqlite3_bind_int64(st, 1, now);
            sqlite3_bind_int(st, 2, PURGE_ROWS);
            rc = run(st);
        }
        if (rc) {
            exec(s->wc->db, "ROLLBACK TO purge");
            pexp_forget_all(s); /* the records purge_parts set may be undone */
            break;
        }
    }
    exec(s->wc->db, "RELEASE purge");
}

/* Writes again what was answered early and then undone by a failed commit
 * (see the top of the file), in the order it was first written. Their
 * conditions held then, on the rows as the last commit left them, and
 * nothing else has written those rows since, since these come first; a
 * condition that fails now means that the failed COMMIT landed after all
 * (its outcome was unknown), and the write is there already. */
static int redo_unsynced(sq_store *s) {
    int64_t now = sl_now_ms();
    int rc = 0;
    for (parked *p = s->uhead; p && rc == 0; p = p->next)
        for (size_t k = 0; k < p->n && rc == 0; k++) {
            int applied;
            rc = p->w[k].kind == SL_W_UPDATE_IF ? update_kept(s, &p->w[k], now, &applied)
                                                : write_kept(s, &p->w[k], now);
        }
    return rc;
}

/* After r's statements ran (r->rc): answers it now if it asked to be
 * answered early and may be. Its writes go on the unsynced list first; a
 * write that was not applied (a failed condition) wrote nothing to keep. */
static void answer_early(sq_store *s, req *r) {
    if (!r->early || s->redo || s->full || (r->rc != 0 && r->rc != SL_ENOTAPPLIED)) return;
    if (r->rc == 0) {
        parked *p = copy_writes(r->w, r->n);
        if (!p) return; /* answered after the commit, as any other */
        pthread_mutex_lock(&s->emu);
        parked_push(&s->uhead, &s->utail, p);
        __atomic_add_fetch(&s->nunsynced, 1, __ATOMIC_RELEASE);
        pthread_mutex_unlock(&s->emu);
    }
    r->answered = 1;
    sl_count(&s->m_early, 1);
    sl_result_free(&r->cur);
    r->cb(r->cb_arg, r->rc);
}

/* After the group's COMMIT: committed (ok), the unsynced list is on disk;
 * else it must be written again. */
static void unsynced_settle(sq_store *s, int ok) {
    pthread_mutex_lock(&s->emu);
    if (ok) {
        parked_free(s->uhead);
        s->uhead = s->utail = NULL;
        s->usynced++;
        __atomic_store_n(&s->nunsynced, 0, __ATOMIC_RELEASE);
        pthread_cond_broadcast(&s->ecv);
    } else if (s->uhead && !s->redo) {
        sl_log(SL_ERR, "store: writes answered before a failed commit are made again with the next group");
    }
    s->redo = !ok && s->uhead;
    pthread_mutex_unlock(&s->emu);
}

static void run_group(sq_store *s, req *group) {
    sqlite3 *db = s->wc->db;
    int rc = tx(s, TX_BEGIN);
    if (rc == 0 && s->redo) rc = redo_unsynced(s);
    for (req *r = group; r && rc == 0; r = r->next) {
        /* A request of one write is one statement, which SQLite makes
         * atomic by itself; only longer ones need a savepoint to fail alone. */
        int sp = r->tables || r->n > 1;
        if (sp && (rc = tx(s, TX_SAVEPOINT))) break;
        r->rc = r->tables ? do_ensure(s, r) : do_writes(s, r);
        if (r->rc < 0 && r->rc != SL_ENOTAPPLIED) {
            sl_result_free(&r->cur);
            /* IO errors, a full disk or no memory can roll back the whole
             * transaction; then the group fails together. */
            if (sqlite3_get_autocommit(db)) {
                rc = r->rc;
                break;
            }
            if (sp && (rc = tx(s, TX_ROLLBACK_TO))) break;
        }
        if (sp) rc = tx(s, TX_RELEASE);
        if (rc == 0) answer_early(s, r);
    }
    if (rc == 0 && ++s->groups % PURGE_EVERY == 0) purge(s);
    /* A COMMIT that fails (an fsync error, say) may still have reached the
     * disk: its outcome is unknown, and callers must treat it so. A failure
     * before COMMIT rolled everything back: nothing was applied. So did a
     * full disk at COMMIT: SQLite writes the WAL frame that marks the commit
     * last, and a frame that could not be written in full commits nothing. */
    int at_commit = 0;
    if (rc == 0 && s->fail_commits > 0) { /* sl_store_sqlite_fail_commits */
        s->fail_commits--;
        rc = SL_EIO;
    }
    if (rc == 0) at_commit = (rc = tx(s, TX_COMMIT)) != 0;
    if (rc) {
        pexp_forget_all(s); /* what the group recorded may be undone */
        if (rc != SL_ENOSPC)
            sl_log(SL_ERR, "store: group commit failed: %s", sl_strerror(rc));
        else if (!s->full)
            sl_log(SL_ERR, "store: the disk of %s is full: writes are refused (507) until space is freed",
                   s->path);
        s->full = rc == SL_ENOSPC;
        if (!sqlite3_get_autocommit(db)) tx(s, TX_ROLLBACK);
        /* A COMMIT whose outcome is unknown may have landed: writing the
         * answered writes again is harmless then (they are the newest). */
        unsynced_settle(s, 0);
        for (req *r = group; r; r = r->next) {
            r->rc = rc == SL_ENOSPC ? SL_ENOSPC : at_commit ? SL_EUNKNOWN : SL_EIO;
            sl_result_free(&r->cur);
        }
        return;
    }
    unsynced_settle(s, 1);
    if (s->full) sl_log(SL_INFO, "store: the disk has room again: writes succeed");
    s->full = 0;
    for (req *r = group; r; r = r->next)
        if (r->tables && r->rc == 0) remember_tables(s, r);
}

static void *writer_main(void *arg) {
    sl_thread_name("sl-writer");
    sq_store *s = arg;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int idle = 0; /* nothing queued, and writes answered early to make again */
        while (!s->head && !s->stopping && !idle) {
            if (!s->redo) {
                pthread_cond_wait(&s->cv, &s->mu);
                continue;
            }
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += REDO_RETRY_MS * 1000000L;
            if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
            idle = pthread_cond_timedwait(&s->cv, &s->mu, &until) == ETIMEDOUT;
        }
        req *group = s->head, *last = group;
        if (!group && !idle && !s->redo) {
            pthread_mutex_unlock(&s->mu);
            break; /* stopping, and nothing is left to do */
        }
        for (int i = 1; last && i < GROUP_MAX && last->next; i++)
            last = last->next;
        if (last) {
            s->head = last->next;
            if (!s->head) s->tail = NULL;
            last->next = NULL;
        }
        int stopping = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (!group && stopping) { /* a last try at them; a crash would lose them too */
            run_group(s, NULL);
            break;
        }

        int64_t t0_us = sl_latency_us();
        run_group(s, group);
        size_t ngroup = 0;
        for (req *r = group; r; r = r->next)
            ngroup++;
        sl_count(&s->m_commits, 1);
        sl_count(&s->m_requests, ngroup);
        sl_hist_observe(&s->m_commit, sl_latency_us() - t0_us);

        req *waiters = NULL, **tailp = &waiters, *calls = NULL, **ctail = &calls;
        pthread_mutex_lock(&s->mu);
        for (req *r = group, *next; r; r = next) {
            next = r->next;
            s->npending--;
            if (r->cb) {
                *ctail = r;
                ctail = &r->wnext;
                continue;
            }
            if (!r->owned) {
                *tailp = r;
                tailp = &r->wnext;
                continue;
            }
            if (r->rc < 0 && r->rc != SL_ENOTAPPLIED)
                sl_log(SL_INFO, "store: an asynchronous write failed: %s", sl_strerror(r->rc));
            sl_result_free(&r->cur);
            free(r->owned);
            free(r);
        }
        *tailp = NULL;
        *ctail = NULL;
        pthread_mutex_unlock(&s->mu);
        if (waiters) sl_latch_done(&waiters->done);
        for (req *r = calls, *next; r; r = next) {
            next = r->wnext;
            sl_result_free(&r->cur);
            if (!r->answered) r->cb(r->cb_arg, r->rc);
            free(r);
        }
    }
    return NULL;
}

/* Hands a request to the writer and waits for its answer. current, when not
 * NULL, receives the current rows of a CAS that was not applied. */
/* Puts r on the writer's queue: 0, or SL_EUNAVAILABLE when the store is
 * closing, or SL_EBUSY when too many requests wait already (when the disk
 * cannot keep up, a longer queue only adds latency: say "busy" at once,
 * nothing applied, and let the client back off). */
static int enqueue(sq_store *s, req *r) {
    pthread_mutex_lock(&s->mu);
    if (s->stopping || (s->max_pending > 0 && s->npending >= s->max_pending)) {
        int rc = s->stopping ? SL_EUNAVAILABLE : SL_EBUSY;
        pthread_mutex_unlock(&s->mu);
        return rc;
    }
    s->npending++;
    if (s->tail)
        s->tail->next = r;
    else
        s->head = r;
    s->tail = r;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

static int submit(sq_store *s, const sl_write *w, size_t n, const sl_table *const *tables, size_t ntables,
                  sl_result *current) {
    req r = {.w = w, .n = n, .tables = tables, .ntables = ntables, .want_cur = current != NULL};
    sl_result_init(&r.cur);
    sl_latch_init(&r.done, 1);
    int rc = enqueue(s, &r);
    if (rc) {
        sl_latch_done(&r.done);
        sl_latch_wait(&r.done); /* destroys it */
        return rc;
    }
    sl_latch_wait(&r.done);
    /* The writer woke the first caller of its group, and each wakes the
     * next, so that the writer goes back to committing at once. */
    req *next = r.wnext;
    if (next) sl_latch_done(&next->done);
    if (r.rc == SL_ENOTAPPLIED && current)
        *current = r.cur;
    else
        sl_result_free(&r.cur);
    return r.rc;
}

/* --- Delayed writes ------------------------------------------------------ */

static size_t val_bytes(const sl_val *v) {
    return v->set && !v->null ? v->n : 0;
}

static void val_copy(sl_val *v, char **dst) {
    if (!v->set || v->null || v->n == 0) {
        v->p = NULL;
        return;
    }
    memcpy(*dst, v->p, v->n);
    v->p = *dst;
    *dst += v->n;
}

/* A deep copy of n writes in one allocation (values are borrowed). */
static parked *copy_writes(const sl_write *w, size_t n) {
    size_t bytes = sizeof(parked) + n * (sizeof(sl_write) + sizeof(uint32_t) + 1);
    for (size_t k = 0; k < n; k++) {
        for (int i = 0; i < w[k].t->ncol; i++)
            bytes += val_bytes(&w[k].row.v[i]);
        for (int i = 0; i < w[k].ncond; i++)
            bytes += val_bytes(&w[k].cond[i].v);
    }
    parked *p = sl_malloc(bytes);
    if (!p) return NULL;
    p->next = NULL;
    p->n = n;
    p->w = (sl_write *)(p + 1);
    memcpy(p->w, w, n * sizeof(sl_write));
    p->shadow = (uint32_t *)(p->w + n);
    p->gone = (uint8_t *)(p->shadow + n);
    memset(p->shadow, 0, n * sizeof *p->shadow);
    memset(p->gone, 0, n);
    char *dst = (char *)(p->gone + n);
    for (size_t k = 0; k < n; k++) {
        for (int i = 0; i < w[k].t->ncol; i++)
            val_copy(&p->w[k].row.v[i], &dst);
        for (int i = 0; i < w[k].ncond; i++)
            val_copy(&p->w[k].cond[i].v, &dst);
    }
    return p;
}

static int park(sq_store *s, const sl_write *w, size_t n) {
    parked *p = copy_writes(w, n);
    if (!p) return SL_ENOMEM;
    pthread_mutex_lock(&s->pmu);
    parked_push(&s->phead, &s->ptail, p);
    __atomic_add_fetch(&s->nparked, 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&s->pmu);
    return 0;
}

/* Whether a and b (of one table) agree on their first ncols key columns. */
static int same_key(const sl_write *a, const sl_write *b, int ncols) {
    for (int i = 0; i < ncols; i++)
        if (!sl_store_val_eq(a->t->cols[i].type, &a->row.v[i], &b->row.v[i])) return 0;
    return 1;
}

/* The writer, after applying w[0..n): notes on every parked plain write
 * what these newer writes did to its rows. */
static void note_shadows(sq_store *s, const sl_write *w, size_t n) {
    pthread_mutex_lock(&s->pmu);
    for (parked *p = s->phead; p; p = p->next)
        for (size_t k = 0; k < p->n; k++) {
            const sl_write *o = &p->w[k];
            const sl_table *t = o->t;
            int nkey = t->npk + t->nck;
            for (size_t j = 0; j < n; j++) {
                const sl_write *x = &w[j];
                if (x->t != t || !same_key(x, o, t->npk)) continue;
                int row = o->kind == SL_W_DELETE_PARTITION || x->kind == SL_W_DELETE_PARTITION ||
                          same_key(x, o, nkey);
                if (!row) continue;
                if (x->kind == SL_W_DELETE_ROW || x->kind == SL_W_DELETE_PARTITION) {
                    p->gone[k] = 1;
                    continue;
                }
                for (int i = nkey; i < t->ncol; i++)
                    if (x->row.v[i].set) p->shadow[k] |= 1u << i;
            }
        }
    pthread_mutex_unlock(&s->pmu);
}

/* Rewrites parked plain writes into what they still do when they land with
 * the timestamp they were issued with (last write wins, per cell): an
 * upsert writes only the columns nobody wrote since, and nothing if its row
 * was deleted since; a row delete removes only the columns nobody wrote
 * since; a partition delete is dropped if anything touched the partition
 * since (Cassandra would still remove the older rows of it: this errs on
 * the side of keeping data). Returns how many writes are left in p. */
static size_t land_stamped(parked *p) {
    size_t m = 0;
    for (size_t k = 0; k < p->n; k++) {
        sl_write *w = &p->w[k];
        const sl_table *t = w->t;
        int nkey = t->npk + t->nck, keep = 1;
        uint32_t sh = p->shadow[k];
        if (w->kind == SL_W_UPSERT) {
            keep = !p->gone[k];
            for (int i = nkey; i < t->ncol; i++)
                if (sh >> i & 1) w->row.v[i].set = 0;
        } else if (w->kind == SL_W_DELETE_ROW && (sh || p->gone[k])) {
            keep = !p->gone[k];
            w->kind = SL_W_UPSERT; /* the columns it still removes, written as null */
            for (int i = nkey; i < t->ncol; i++)
                w->row.v[i] = sh >> i & 1 ? (sl_val){0} : sl_vnull();
        } else if (w->kind == SL_W_DELETE_PARTITION) {
            keep = !sh && !p->gone[k];
        }
        if (keep) p->w[m++] = *w;
    }
    return m;
}

void sl_store_sqlite_set_late_stamps(sl_store *st, int landing) {
    if (!st || st->type != &sq_type) return;
    sq_store *s = (sq_store *)st;
    pthread_mutex_lock(&s->pmu);
    s->late_stamps = landing;
    pthread_mutex_unlock(&s->pmu);
}

int sl_store_sqlite_release_delayed(sl_store *st) {
    if (!st || st->type != &sq_type) return SL_EINVAL;
    sq_store *s = (sq_store *)st;
    pthread_mutex_lock(&s->pmu);
    parked *p = s->phead;
    s->phead = s->ptail = NULL;
    __atomic_store_n(&s->nparked, 0, __ATOMIC_RELEASE);
    int landing = s->late_stamps;
    pthread_mutex_unlock(&s->pmu);
    int count = 0, err = 0;
    while (p) {
        parked *next = p->next;
        /* A compare-and-set lands as a late Paxos round: its conditions
         * are evaluated now. A plain write keeps its first timestamp,
         * unless the store is told that writes are stamped on landing. */
        size_t n = landing || sl_write_is_cas(p->w, p->n) ? p->n : land_stamped(p);
        int rc = n ? submit(s, p->w, n, NULL, 0, NULL) : 0;
        if (rc < 0 && rc != SL_ENOTAPPLIED && !err) err = rc;
        count++;
        free(p);
        p = next;
    }
    return err ? err : count;
}

void sl_store_sqlite_set_fault(sl_store *st, sl_fault_fn fn, void *ctx) {
    if (!st || st->type != &sq_type) return;
    sq_store *s = (sq_store *)st;
    pthread_mutex_lock(&s->fmu);
    s->fault = fn;
    s->fault_ctx = ctx;
    pthread_mutex_unlock(&s->fmu);
}

void sl_store_sqlite_set_read_fault(sl_store *st, sl_read_fault_fn fn, void *ctx) {
    if (!st || st->type != &sq_type) return;
    sq_store *s = (sq_store *)st;
    pthread_mutex_lock(&s->fmu);
    s->read_fault = fn;
    s->read_fault_ctx = ctx;
    pthread_mutex_unlock(&s->fmu);
}

/* --- The contract -------------------------------------------------------- */

static int sq_ensure(sl_store *st, const sl_table *const *tables, size_t n) {
    if (!tables && n) return SL_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (sl_store_check_table(tables[i])) return SL_EINVAL;
    return n ? submit((sq_store *)st, NULL, 0, tables, n, NULL) : 0;
}

static int sq_apply(sl_store *st, const sl_write *w, size_t n, sl_result *current) {
    sq_store *s = (sq_store *)st;
    if (current) sl_result_free(current);
    if (n == 0) return 0;
    int cas, one_partition;
    int rc = sl_store_check_writes(w, n, &cas, &one_partition);
    if (rc) return rc;
    sl_fault_action act = SL_FAULT_NONE;
    pthread_mutex_lock(&s->fmu);
    if (s->fault) act = s->fault(s->fault_ctx, w, n);
    pthread_mutex_unlock(&s->fmu);
    switch (act) {
    case SL_FAULT_NONE:
        break;
    case SL_FAULT_FAIL:
        return SL_EUNAVAILABLE;
    case SL_FAULT_UNKNOWN_DROPPED:
        return SL_EUNKNOWN;
    case SL_FAULT_DELAY:
        return (rc = park(s, w, n)) ? rc : SL_EUNKNOWN;
    case SL_FAULT_UNKNOWN_APPLIED:
        submit(s, w, n, NULL, 0, NULL);
        return SL_EUNKNOWN;
    case SL_FAULT_DUPLICATE:
        if ((rc = park(s, w, n)) != 0) return rc;
        break;
    }
    return submit(s, w, n, NULL, 0, current);
}

void sl_store_sqlite_fail_commits(sl_store *st, int n) {
    sq_store *s = (sq_store *)st;
    pthread_mutex_lock(&s->mu);
    s->fail_commits = n;
    pthread_mutex_unlock(&s->mu);
}

void sl_store_sqlite_set_max_pending(sl_store *st, int max) {
    sq_store *s = (sq_store *)st;
    pthread_mutex_lock(&s->mu);
    s->max_pending = max;
    pthread_mutex_unlock(&s->mu);
}

/* Queues writes for the next group commit and returns without waiting for
 * it; the caller learns nothing of the outcome. The fault hook applies as
 * for apply() (a parked or dropped write is simply not written). */
static int sq_apply_async(sl_store *st, const sl_write *w, size_t n) {
    sq_store *s = (sq_store *)st;
    if (n == 0) return 0;
    int cas, one_partition;
    int rc = sl_store_check_writes(w, n, &cas, &one_partition);
    if (rc) return rc;
    sl_fault_action act = SL_FAULT_NONE;
    pthread_mutex_lock(&s->fmu);
    if (s->fault) act = s->fault(s->fault_ctx, w, n);
    pthread_mutex_unlock(&s->fmu);
    if (act == SL_FAULT_FAIL || act == SL_FAULT_UNKNOWN_DROPPED)
        return act == SL_FAULT_FAIL ? SL_EUNAVAILABLE : 0;
    if (act == SL_FAULT_DELAY) return park(s, w, n);
    if (act == SL_FAULT_DUPLICATE && (rc = park(s, w, n)) != 0) return rc;
    parked *p = copy_writes(w, n);
    req *r = sl_calloc(1, sizeof *r);
    if (!p || !r) {
        free(p);
        free(r);
        return SL_ENOMEM;
    }
    r->w = p->w;
    r->n = n;
    r->owned = p;
    sl_result_init(&r->cur);
    if ((rc = enqueue(s, r)) != 0) {
        free(p);
        free(r);
    }
    return rc;
}

/* apply() without waiting: the request goes on the writer's queue and done
 * runs from the writer once its group is committed. With a fault hook set
 * (tests only), or when the request cannot be queued, it runs here. */
static void apply_cb(sl_store *st, const sl_write *w, size_t n, void (*done)(void *, int), void *arg,
                     int early) {
    sq_store *s = (sq_store *)st;
    int cas, one_partition, rc;
    req *r = NULL;
    if (n == 0 || (rc = sl_store_check_writes(w, n, &cas, &one_partition)) != 0) {
        done(arg, n == 0 ? 0 : rc);
        return;
    }
    pthread_mutex_lock(&s->fmu);
    int hooked = s->fault != NULL;
    pthread_mutex_unlock(&s->fmu);
    if (hooked || !(r = sl_calloc(1, sizeof *r))) {
        done(arg, sq_apply(st, w, n, NULL));
        return;
    }
    r->w = w;
    r->n = n;
    r->cb = done;
    r->cb_arg = arg;
    r->early = early;
    sl_result_init(&r->cur);
    if ((rc = enqueue(s, r)) != 0) {
        free(r);
        done(arg, rc);
    }
}

static void sq_apply_cb(sl_store *st, const sl_write *w, size_t n, void (*done)(void *, int), void *arg) {
    apply_cb(st, w, n, done, arg, 0);
}

static void sq_apply_cb_early(sl_store *st, const sl_write *w, size_t n, void (*done)(void *, int),
                              void *arg) {
    apply_cb(st, w, n, done, arg, 1);
}

static int64_t sq_epoch(sl_store *st) {
    return ((sq_store *)st)->epoch;
}

/* A SERIAL read of a row that a write answered early has changed waits for
 * that write's commit (t != NULL: the row of t with key), and so does a
 * read after sl_store_catch_up (t == NULL: every write answered so far,
 * which the next commit that empties the list has made durable, however
 * many were answered since); see the top of the file. SL_EUNAVAILABLE if
 * that takes longer than EARLY_WAIT_MS (commits failing: a full disk): a
 * SERIAL read then fails, a read after catch_up reads what is on disk. */
#define EARLY_WAIT_MS 5000
static int unsynced_wait(sq_store *s, const sl_table *t, const sl_val *key) {
    sl_write probe = {.t = t};
    if (t) memcpy(probe.row.v, key, (size_t)(t->npk + t->nck) * sizeof *key);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += EARLY_WAIT_MS / 1000;
    int rc = 0;
    pthread_mutex_lock(&s->emu);
    for (uint64_t synced = s->usynced; s->usynced == synced;) {
        int hit = !t && s->uhead;
        for (parked *p = t ? s->uhead : NULL; p && !hit; p = p->next)
            for (size_t k = 0; k < p->n && !hit; k++)
                hit = p->w[k].t == t && same_key(&probe, &p->w[k], t->npk + t->nck);
        if (!hit) break;
        if (pthread_cond_timedwait(&s->ecv, &s->emu, &until) == ETIMEDOUT) {
            rc = SL_EUNAVAILABLE;
            break;
        }
    }
    pthread_mutex_unlock(&s->emu);
    return rc;
}

static void sq_catch_up(sl_store *st) {
    sq_store *s = (sq_store *)st;
    if (__atomic_load_n(&s->nunsynced, __ATOMIC_ACQUIRE) > 0) unsynced_wait(s, NULL, NULL);
}

int sl_store_sqlite_flush(sl_store *st) {
    /* The writer takes requests in order, so an empty one is answered only
     * after everything queued before it was committed. */
    return submit((sq_store *)st, NULL, 0, NULL, 0, NULL);
}

static int sq_get(sl_store *st, const sl_table *t, const sl_val *key, int consistency, sl_result *out) {
    sq_store *s = (sq_store *)st;
    /* Every read is linearizable here (one writer, WAL); the consistency
     * asked for only reaches the read fault hook. */
    sl_result_free(out);
    if (sl_store_check_table(t) || !key || sl_store_check_key(key, t->npk + t->nck)) return SL_EINVAL;
    int frc = 0;
    pthread_mutex_lock(&s->fmu);
    if (s->read_fault) frc = s->read_fault(s->read_fault_ctx, t, consistency);
    pthread_mutex_unlock(&s->fmu);
    if (frc) return frc;
    if (consistency == SL_READ_SERIAL && __atomic_load_n(&s->nunsynced, __ATOMIC_ACQUIRE) > 0 &&
        (frc = unsynced_wait(s, t, key)) != 0)
        return frc;
    conn *c;
    sqlite3_stmt *q;
    int rc = reader_take(s, &c);
    if (rc) return rc;
    if ((rc = stmt_op(c, t, SL_STMT_GET, &q)) == 0) {
        int nkey = t->npk + t->nck;
        for (int i = 0; i < nkey; i++)
            bind_val(q, i + 1, t->cols[i].type, &key[i]);
        sqlite3_bind_int64(q, nkey + 1, sl_now_ms());
        int src = step(q);
        rc = src == SQLITE_ROW ? read_row(c, q, t, out) : src == SQLITE_DONE ? SL_ENOTFOUND : map_err(src);
        sqlite3_reset(q);
    }
    reader_put(s, c);
    if (rc && rc != SL_ENOTFOUND) sl_result_free(out);
    return rc;
}

static int sq_slice(sl_store *st, const sl_slice *q, sl_result *out) {
    sq_store *s = (sq_store *)st;
    sl_result_free(out);
    if (!q || sl_store_check_table(q->t)) return SL_EINVAL;
    const sl_table *t = q->t;
    if (q->nfrom < 0 || q->nfrom > t->nck || q->nto < 0 || q->nto > t->nck || q->limit < 0 ||
        sl_store_check_key(q->pk, t->npk) || sl_store_check_key(q->from, q->nfrom) ||
        sl_store_check_key(q->to, q->nto))
        return SL_EINVAL;
    sl_stmt_shape k;
    sl_stmt_shape_slice(&k, q); /* its SQL has LIMIT ? either way (-1 for none) */
    conn *c;
    sqlite3_stmt *qs;
    int rc = reader_take(s, &c);
    if (rc) return rc;
    if ((rc = stmt_get(c, &k, &qs)) == 0) {
        int np = 0;
        for (int i = 0; i < t->npk; i++)
            bind_val(qs, ++np, t->cols[i].type, &q->pk[i]);
        sqlite3_bind_int64(qs, ++np, sl_now_ms());
        for (int i = 0; i < q->nfrom; i++)
            bind_val(qs, ++np, t->cols[t->npk + i].type, &q->from[i]);
        for (int i = 0; i < q->nto; i++)
            bind_val(qs, ++np, t->cols[t->npk + i].type, &q->to[i]);
        sqlite3_bind_int64(qs, ++np, q->limit > 0 ? (int64_t)q->limit + 1 : -1);
        int src;
        while ((src = step(qs)) == SQLITE_ROW) {
            if (q->limit > 0 && out->n == (size_t)q->limit) {
                out->more = 1;
                break;
            }
            if ((rc = read_row(c, qs, t, out))) break;
        }
        if (rc == 0 && src != SQLITE_ROW && src != SQLITE_DONE) rc = map_err(src);
        sqlite3_reset(qs);
    }
    reader_put(s, c);
    if (rc) sl_result_free(out);
    return rc;
}

static int sq_ping(sl_store *st) {
    sq_store *s = (sq_store *)st;
    conn *c;
    int rc = reader_take(s, &c);
    if (rc) return rc;
    if (!c->ping)
        rc = map_err(sqlite3_prepare_v3(c->db, "SELECT 1", -1, SQLITE_PREPARE_PERSISTENT, &c->ping, NULL));
    if (rc == 0) {
        int src = step(c->ping);
        sqlite3_reset(c->ping);
        rc = src == SQLITE_ROW ? 0 : map_err(src);
    }
    reader_put(s, c);
    return rc;
}

/* Drains the writer (queued requests still get their answers), then frees
 * everything. Delayed writes that were never released are dropped. */
static void sq_close(sl_store *st) {
    sq_store *s = (sq_store *)st;
    if (s->thr_started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = 1;
        pthread_cond_signal(&s->cv);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thr, NULL);
    }
    parked_free(s->phead);
    parked_free(s->uhead);
    for (conn *c = s->readers, *next; c; c = next) {
        next = c->next;
        conn_free(c);
    }
    for (int i = 0; i < TX_N; i++)
        sqlite3_finalize(s->tx[i]);
    conn_free(s->wc);
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->rmu);
    pthread_mutex_destroy(&s->fmu);
    pthread_mutex_destroy(&s->pmu);
    pthread_mutex_destroy(&s->emu);
    pthread_cond_destroy(&s->ecv);
    free(s->tables);
    for (size_t i = 0; i < PEXP_SLOTS; i++)
        free(s->pexp[i].key);
    free(s->path);
    free(s);
}

static void sq_metrics(sl_store *st, sl_text *t) {
    sq_store *s = (sq_store *)st;
    sl_metric_head(t, "sluice_store_commits_total", "counter",
                   "Embedded store: transactions committed (each fsynced; a group of pending requests).");
    sl_text_printf(t, "sluice_store_commits_total %llu\n", (unsigned long long)sl_counted(&s->m_commits));
    sl_metric_head(t, "sluice_store_committed_requests_total", "counter",
                   "Embedded store: write requests committed; divided by the commits, the mean group size.");
    sl_text_printf(t, "sluice_store_committed_requests_total %llu\n",
                   (unsigned long long)sl_counted(&s->m_requests));
    sl_metric_head(t, "sluice_store_commit_duration_seconds", "histogram",
                   "Embedded store: a group's time from its first statement to its commit's fsync.");
    sl_hist_print(t, "sluice_store_commit_duration_seconds", "", &s->m_commit);
    sl_metric_head(t, "sluice_store_early_answers_total", "counter",
                   "Embedded store: write requests (leases) answered once applied, before their commit.");
    sl_text_printf(t, "sluice_store_early_answers_total %llu\n", (unsigned long long)sl_counted(&s->m_early));
    pthread_mutex_lock(&s->mu);
    int pending = s->npending;
    pthread_mutex_unlock(&s->mu);
    sl_metric_head(
        t, "sluice_store_pending_writes", "gauge",
        "Embedded store: write requests queued or being committed (over --max-pending-writes: 429).");
    sl_text_printf(t, "sluice_store_pending_writes %d\n", pending);
}

static const sl_store_type sq_type = {
    .name = "sqlite",
    .ensure = sq_ensure,
    .get = sq_get,
    .slice = sq_slice,
    .apply = sq_apply,
    .apply_async = sq_apply_async,
    .apply_cb = sq_apply_cb,
    .apply_cb_early = sq_apply_cb_early,
    .epoch = sq_epoch,
    .catch_up = sq_catch_up,
    .ping = sq_ping,
    .close = sq_close,
    .metrics = sq_metrics,
};

/* Reads the layout version, stamps a new database with ours, and refuses
 * one written by a newer Sluice. */
static int check_layout(sqlite3 *db) {
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL);
    if (rc != SQLITE_OK) return map_err(rc);
    rc = step(st);
    int version = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_finalize(st);
    if (version < 0) return map_err(rc);
    if (version < LAYOUT_VERSION) { /* new, or 1: ensure() adds what 2 has (see the top) */
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA user_version=%d", LAYOUT_VERSION);
        return exec(db, sql);
    }
    if (version > LAYOUT_VERSION) {
        sl_log(SL_ERR, "store: database layout %d is newer than this build's %d", version, LAYOUT_VERSION);
        return SL_EINVAL;
    }
    return 0;
}

/* Counts this open's epoch: one more than the last one on disk, committed
 * (fsynced) before anything is answered early (see the top of the file). */
static int epoch_next(sqlite3 *db, int64_t *out) {
    int rc = exec(db, "BEGIN IMMEDIATE");
    if (rc) return rc;
    sqlite3_stmt *st = NULL;
    rc = exec(db, "CREATE TABLE IF NOT EXISTS sluice_epoch(k INTEGER PRIMARY KEY, v INTEGER NOT NULL)");
    if (rc == 0)
        rc = map_err(sqlite3_prepare_v2(db, "SELECT v FROM sluice_epoch WHERE k = 0", -1, &st, NULL));
    if (rc == 0) {
        int src = step(st);
        *out = (src == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0) + 1;
        if (src != SQLITE_ROW && src != SQLITE_DONE) rc = map_err(src);
    }
    sqlite3_finalize(st);
    char sql[96];
    snprintf(sql, sizeof sql, "INSERT OR REPLACE INTO sluice_epoch(k, v) VALUES(0, %lld)", (long long)*out);
    if (rc == 0) rc = exec(db, sql);
    if (rc == 0) rc = exec(db, "COMMIT");
    if (rc) exec(db, "ROLLBACK");
    return rc;
}

/* Creates dir and its missing parents, like mkdir -p. */
static int mkdir_p(const char *dir) {
    char *p = strdup(dir);
    if (!p) return SL_ENOMEM;
    int rc = 0;
    for (char *q = p + 1;; q++) {
        if (*q != '/' && *q != '\0') continue;
        char c = *q;
        *q = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            sl_log(SL_ERR, "store: mkdir %s: %s", p, strerror(errno));
            rc = SL_EIO;
            break;
        }
        *q = c;
        if (!c) break;
    }
    free(p);
    return rc;
}

/* SQLite counts every allocation under one process-wide mutex unless told
 * not to; nothing here reads those counts, and under load the writer and
 * the readers took that mutex a few times per row. It can only be switched
 * off before SQLite initializes; if something else in the process started
 * SQLite first, the setting stays on and nothing else changes. */
static void sqlite_setup(void) {
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

int sl_store_sqlite_open(const char *dir, sl_store **out) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    if (!dir || !*dir || !out) return SL_EINVAL;
    if (!sqlite3_threadsafe()) return SL_EINTERNAL;
    pthread_once(&once, sqlite_setup);
    int rc = mkdir_p(dir);
    if (rc) return rc;
    /* SQLite would only say "unable to open database file". */
    if (access(dir, W_OK) != 0) {
        sl_log(SL_ERR, "store: the data directory %s is not writable: %s", dir, strerror(errno));
        return SL_EIO;
    }
    sq_store *s = sl_calloc(1, sizeof *s);
    if (!s) return SL_ENOMEM;
    s->base.type = &sq_type;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->rmu, NULL);
    pthread_mutex_init(&s->fmu, NULL);
    pthread_mutex_init(&s->pmu, NULL);
    pthread_mutex_init(&s->emu, NULL);
    pthread_cond_init(&s->ecv, NULL);
    rc = SL_ENOMEM;
    size_t len = strlen(dir) + sizeof "/sluice.db";
    if (!(s->path = sl_malloc(len))) goto fail;
    snprintf(s->path, len, "%s/sluice.db", dir);
    if ((rc = conn_open(s->path, 1, &s->wc))) goto fail;
    if ((rc = check_layout(s->wc->db))) goto fail;
    if ((rc = epoch_next(s->wc->db, &s->epoch))) goto fail;
    if (pthread_create(&s->thr, NULL, writer_main, s)) {
        rc = SL_ENOMEM;
        goto fail;
    }
    s->thr_started = 1;
    *out = &s->base;
    return 0;
fail:
    sq_close(&s->base);
    return rc;
}
