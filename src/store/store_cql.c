/* store_cql.c: the Cassandra backend of the table contract (store.h).
 *
 * Schema, version 6 (created by sl_store_cql_schema, i.e. `sluice schema`;
 * serve only checks it). Version 2 added the event log's tables, version 3
 * its subscriptions', version 4 FIFO queues', version 5 the messages'
 * first_ms column, version 6 the table tallies (queue/census.c); running
 * `sluice schema` on an older keyspace creates what is missing (every
 * statement is IF NOT EXISTS, and missing columns are added) and records
 * version 6. Every sl_table T becomes, in the keyspace
 * K,
 *
 *   CREATE TABLE "K"."T" ("pk1" <ty>, .., "ck1" <ty>, .., "col" <ty>, ..,
 *                         "_row" boolean,
 *                         PRIMARY KEY (("pk1", ..), "ck1", ..));
 *
 * with <ty> bigint, text or blob for SL_INT, SL_TEXT, SL_BLOB, and
 * "K"."schema_version" (name text PRIMARY KEY, version int) holds the row
 * ('sluice', 6). A database with a newer version is refused.
 *
 * "_row" is written (true, with the write's TTL) by every upsert and
 * compare-and-set. Cassandra evaluates "IF c = null" as true for a row that
 * does not exist, while the contract says an update of a missing row is not
 * applied; so every UPDATE_IF also carries IF "_row" = true. Its value in a
 * CAS result also tells a present row from an absent one.
 *
 * Statements are prepared once per shape (sl_stmt_shape in store_int.h: the
 * table, the operation, the columns a write sets, the slice bounds and the
 * condition columns), in the cache both backends share. The client caches
 * them by query string too and re-prepares on UNPREPARED.
 *
 * Divergences from the embedded store, all allowed by store.h:
 *  - TTLs are per cell (Cassandra's), not per row: columns a write leaves
 *    alone keep their own expiry. Callers that pass a row's remaining TTL on
 *    every write see no difference. Expiry follows the server's real clock,
 *    not sl_now_ms(), so sl_clock_manual() does not move it.
 *  - A CAS that is not applied reports, for the rows it names, the key and
 *    the condition columns only (what Cassandra returns), not every column.
 *    An INSERT_IF_NOT_EXISTS that is not applied reports the whole row.
 *  - A conditional batch that fails reports the rows Cassandra returns: the
 *    existing rows named by its conditions.
 *  - An unconditional batch across several partitions is a LOGGED batch:
 *    atomic eventually (the batch log), not isolated. Cassandra refuses one
 *    over batch_size_fail_threshold (50 KiB by default), so one whose values
 *    add up to more than SPLIT_BATCH_BYTES goes partition by partition, each
 *    an unlogged batch (a single mutation, atomic): then it is atomic per
 *    partition only, and a failure can leave the first partitions written.
 *  - Plain writes carry a client-side timestamp fixed at their first
 *    attempt (cluster.c, store.h "Timestamps"); compare-and-sets carry their
 *    Paxos ballot's. Every write of a batch has the same timestamp: a batch
 *    that deletes a row and writes it again loses the write (a tombstone
 *    wins a tie), where the embedded store applies batch writes in order.
 *  - Values: the contract's 16 MiB per value holds only when the cluster
 *    accepts such mutations (commitlog_segment_size of 32 MiB or more, and
 *    native_transport_max_frame_size above the frame); a default node stops
 *    just short of 16 MiB, and the store then answers SL_ETOOBIG.
 *  - Reads at SL_READ_DEFAULT and writes use CONSISTENCY_LEVEL (LOCAL_QUORUM),
 *    so "reads see acknowledged writes" holds only when the sum of the two
 *    levels exceeds the replication factor, as it does by default. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../cql/client.h"
#include "../util/metrics.h"
#include "store_int.h"

#define SCHEMA_VERSION SL_STORE_CQL_SCHEMA_VERSION
#define PAGE_SIZE 1000
#define DDL_TIMEOUT_MS 60000
#define ROW_COL "_row"
#define SPLIT_BATCH_BYTES (40 * 1024) /* see the header: under the 50 KiB default */

typedef struct {
    sl_store base;
    sl_cql_client *cl;
    char *ks;
    pthread_mutex_t mu;   /* the statement table */
    sl_stmt_cache stmts; /* the statements belong to the client */
} cq_store;

static const sl_store_type cq_type;

/* --- CQL text ------------------------------------------------------------ */

/* A quoted identifier: "name" with embedded quotes doubled. */
static void sb_ident(sbuf *b, const char *name) {
    sb_add(b, "\"");
    for (const char *q = name; *q; q++) {
        sb_addn(b, q, 1);
        if (*q == '"') sb_addn(b, q, 1);
    }
    sb_add(b, "\"");
}

static void sb_table(sbuf *b, const char *ks, const sl_table *t) {
    sb_ident(b, ks);
    sb_add(b, ".");
    sb_ident(b, t->name);
}

static void sb_cols(sbuf *b, const sl_table *t, int from, int to) {
    for (int i = from; i < to; i++) {
        if (i > from) sb_add(b, ",");
        sb_ident(b, t->cols[i].name);
    }
}

static void sb_eq(sbuf *b, const sl_table *t, int n) {
    for (int i = 0; i < n; i++) {
        sb_add(b, i ? " AND " : " WHERE ");
        sb_ident(b, t->cols[i].name);
        sb_add(b, "=?");
    }
}

static const char *type_name(sl_type t) {
    return t == SL_INT ? "bigint" : t == SL_TEXT ? "text" : "blob";
}

/* The CQL of a statement shape (store_int.h). */
static void build_cql(sbuf *b, const char *ks, const sl_stmt_shape *k) {
    const sl_table *t = k->t;
    int nkey = t->npk + t->nck;
    uint32_t mask = k->cols;
    switch (k->op) {
    case SL_STMT_GET:
        sb_add(b, "SELECT ");
        sb_cols(b, t, 0, t->ncol);
        sb_add(b, " FROM ");
        sb_table(b, ks, t);
        sb_eq(b, t, nkey);
        break;
    case SL_STMT_SLICE: {
        int nfrom = k->nfrom, nto = k->nto, fexcl = k->from_excl, texcl = k->to_excl, desc = k->desc;
        sb_add(b, "SELECT ");
        sb_cols(b, t, 0, t->ncol);
        sb_add(b, " FROM ");
        sb_table(b, ks, t);
        sb_eq(b, t, t->npk);
        /* Tuple notation for both bounds: Cassandra refuses a column that
         * is restricted by a tuple on one side and singly on the other. */
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
        if (k->limit) sb_add(b, " LIMIT ?");
        break;
    }
    case SL_STMT_UPSERT:
    case SL_STMT_INSERT_NX:
        sb_add(b, "INSERT INTO ");
        sb_table(b, ks, t);
        sb_add(b, "(");
        for (int i = 0; i < t->ncol; i++)
            if (i < nkey || (mask >> i & 1)) sb_ident(b, t->cols[i].name), sb_add(b, ",");
        sb_ident(b, ROW_COL);
        sb_add(b, ") VALUES (");
        for (int i = 0; i < t->ncol; i++)
            if (i < nkey || (mask >> i & 1)) sb_add(b, "?,");
        sb_add(b, "true)");
        if (k->op == SL_STMT_INSERT_NX) sb_add(b, " IF NOT EXISTS");
        sb_add(b, " USING TTL ?");
        break;
    case SL_STMT_UPDATE_IF: {
        sb_add(b, "UPDATE ");
        sb_table(b, ks, t);
        sb_add(b, " USING TTL ? SET ");
        for (int i = nkey; i < t->ncol; i++)
            if (mask >> i & 1) sb_ident(b, t->cols[i].name), sb_add(b, "=?,");
        sb_ident(b, ROW_COL);
        sb_add(b, "=true");
        sb_eq(b, t, nkey);
        sb_add(b, " IF ");
        sb_ident(b, ROW_COL);
        sb_add(b, "=true");
        for (int c = 0; c < k->ncond; c++) {
            sb_add(b, " AND ");
            sb_ident(b, t->cols[k->cond[c].col].name);
            sb_add(b, k->cond[c].is_null ? "=null" : "=?");
        }
        break;
    }
    case SL_STMT_DEL_ROW:
    case SL_STMT_DEL_PART:
        sb_add(b, "DELETE FROM ");
        sb_table(b, ks, t);
        sb_eq(b, t, k->op == SL_STMT_DEL_ROW ? nkey : t->npk);
        break;
    }
}

/* The prepared statement of shape k, preparing it on first use; lazy:
 * without a round trip, its first execution prepares it (writes, which
 * must not block: see cq_apply_cb). */
static int stmt_get(cq_store *s, const sl_stmt_shape *k, int lazy, sl_cql_stmt **out) {
    pthread_mutex_lock(&s->mu);
    *out = sl_stmt_cache_get(&s->stmts, k);
    pthread_mutex_unlock(&s->mu);
    if (*out) return 0;
    sbuf b = {0};
    build_cql(&b, s->ks, k);
    if (b.oom) {
        free(b.p);
        return SL_ENOMEM;
    }
    sl_cql_stmt *st;
    int rc = lazy ? sl_cql_stmt_lazy(s->cl, b.p, &st) : sl_cql_prepare(s->cl, b.p, &st);
    free(b.p);
    if (rc) return rc;
    pthread_mutex_lock(&s->mu);
    /* Another thread may have prepared it meanwhile; the client prepares a
     * query text once, so both hold the same statement. A full cache only
     * means preparing again next time. */
    if (!sl_stmt_cache_get(&s->stmts, k)) sl_stmt_cache_put(&s->stmts, k, st);
    pthread_mutex_unlock(&s->mu);
    *out = st;
    return 0;
}

static int stmt_op(cq_store *s, const sl_table *t, int op, sl_cql_stmt **out) {
    sl_stmt_shape k;
    sl_stmt_shape_init(&k, t, op);
    return stmt_get(s, &k, 0, out);
}

/* --- Values -------------------------------------------------------------- */

/* Bound values of one statement; ints are encoded into bytes kept here. */
typedef struct {
    sl_cql_bytes v[SL_MAX_COLS * 2 + 4];
    uint8_t num[SL_MAX_COLS * 2 + 4][8];
    int n;
} binder;

static void bind_val(binder *b, sl_type ty, const sl_val *v) {
    int i = b->n++;
    if (!v->set || v->null) {
        b->v[i] = SL_CQL_NULL;
    } else if (ty == SL_INT) {
        uint64_t x = (uint64_t)v->i;
        for (int k = 0; k < 8; k++)
            b->num[i][k] = (uint8_t)(x >> (56 - 8 * k));
        b->v[i] = (sl_cql_bytes){b->num[i], 8};
    } else {
        b->v[i] = (sl_cql_bytes){v->n ? v->p : (const uint8_t *)"", (int32_t)v->n};
    }
}

static void bind_int32(binder *b, int32_t x) {
    int i = b->n++;
    for (int k = 0; k < 4; k++)
        b->num[i][k] = (uint8_t)((uint32_t)x >> (24 - 8 * k));
    b->v[i] = (sl_cql_bytes){b->num[i], 4};
}

/* Copies a cell into a row value of column type ty. */
static int cell_val(sl_result *r, sl_type ty, sl_cql_bytes c, sl_val *v) {
    memset(v, 0, sizeof *v);
    if (c.len < 0) return 0;
    if (ty == SL_INT) {
        if (c.len != 8) return SL_EINTERNAL;
        *v = sl_vint(sl_cql_cell_i64(c));
        return 0;
    }
    char *copy = sl_result_alloc(r, (size_t)c.len + 1);
    if (!copy) return SL_ENOMEM;
    if (c.len) memcpy(copy, c.p, (size_t)c.len);
    copy[c.len] = '\0';
    *v = sl_vbytes(copy, (size_t)c.len);
    return 0;
}

/* Appends the rows of a SELECT of every column, in table order. */
static int read_rows(const sl_table *t, sl_cql_res *res, sl_result *out, int max) {
    if (res->r.kind != SL_CQL_RESULT_ROWS || res->r.meta.ncols != t->ncol) return SL_EINTERNAL;
    sl_cql_rd rows = res->r.rows;
    for (int32_t i = 0; i < res->r.nrows && (max < 0 || (int)out->n < max); i++) {
        sl_row *row = sl_result_add_row(out);
        if (!row) return SL_ENOMEM;
        for (int k = 0; k < t->ncol; k++) {
            sl_cql_bytes c;
            if (sl_cql_rows_next(&rows, &c) != 1) return SL_EINTERNAL;
            int rc = cell_val(out, t->cols[k].type, c, &row->v[k]);
            if (rc) return rc;
        }
    }
    return 0;
}

/* --- Input checks -------------------------------------------------------- */

/* --- Writes -------------------------------------------------------------- */

/* The statement and bound values of one write. */
static int prepare_write(cq_store *s, const sl_write *w, sl_cql_stmt **st, binder *b) {
    const sl_table *t = w->t;
    int nkey = t->npk + t->nck;
    uint32_t mask = 0;
    for (int i = nkey; i < t->ncol; i++)
        if (w->row.v[i].set) mask |= 1u << i;
    sl_stmt_shape k;
    sl_stmt_shape_init(&k, t, 0);
    k.cols = mask;
    b->n = 0;
    switch (w->kind) {
    case SL_W_UPSERT:
    case SL_W_INSERT_IF_NOT_EXISTS:
        k.op = w->kind == SL_W_UPSERT ? SL_STMT_UPSERT : SL_STMT_INSERT_NX;
        for (int i = 0; i < t->ncol; i++)
            if (i < nkey || (mask >> i & 1)) bind_val(b, t->cols[i].type, &w->row.v[i]);
        bind_int32(b, w->ttl);
        break;
    case SL_W_UPDATE_IF:
        k.op = SL_STMT_UPDATE_IF;
        k.ncond = (uint8_t)w->ncond;
        for (int c = 0; c < w->ncond; c++) {
            k.cond[c].col = (uint8_t)w->cond[c].col;
            k.cond[c].is_null = (uint8_t)w->cond[c].v.null;
        }
        bind_int32(b, w->ttl);
        for (int i = nkey; i < t->ncol; i++)
            if (mask >> i & 1) bind_val(b, t->cols[i].type, &w->row.v[i]);
        for (int i = 0; i < nkey; i++)
            bind_val(b, t->cols[i].type, &w->row.v[i]);
        for (int k = 0; k < w->ncond; k++)
            if (!w->cond[k].v.null) bind_val(b, t->cols[w->cond[k].col].type, &w->cond[k].v);
        break;
    case SL_W_DELETE_ROW:
    case SL_W_DELETE_PARTITION: {
        int nb = w->kind == SL_W_DELETE_ROW ? nkey : t->npk;
        k.op = w->kind == SL_W_DELETE_ROW ? SL_STMT_DEL_ROW : SL_STMT_DEL_PART;
        k.cols = 0;
        for (int i = 0; i < nb; i++)
            bind_val(b, t->cols[i].type, &w->row.v[i]);
        break;
    }
    }
    return stmt_get(s, &k, 1, st);
}

/* Reads the [applied] rows of a CAS result into current. For a single
 * write, key columns Cassandra leaves out come from the write. */
static int read_cas(const sl_write *w, size_t n, sl_cql_res *res, sl_result *cur) {
    if (res->r.kind != SL_CQL_RESULT_ROWS || res->r.nrows < 1 || res->r.meta.ncols < 1) return SL_EINTERNAL;
    const sl_table *t = w[0].t;
    int ncols = res->r.meta.ncols;
    int map[64];
    if (ncols > 64) return SL_EINTERNAL;
    int rowcol = -1;
    for (int k = 0; k < ncols; k++) {
        const sl_cql_str *nm = &res->r.meta.cols[k].name;
        map[k] = -1;
        if (nm->len == strlen(ROW_COL) && memcmp(nm->p, ROW_COL, nm->len) == 0) rowcol = k;
        for (int i = 0; i < t->ncol; i++)
            if (strlen(t->cols[i].name) == nm->len && memcmp(t->cols[i].name, nm->p, nm->len) == 0)
                map[k] = i;
    }
    sl_cql_rd rows = res->r.rows;
    int applied = 0;
    for (int32_t r = 0; r < res->r.nrows; r++) {
        sl_cql_bytes cells[64];
        for (int k = 0; k < ncols; k++)
            if (sl_cql_rows_next(&rows, &cells[k]) != 1) return SL_EINTERNAL;
        if (r == 0) applied = cells[0].len == 1 && cells[0].p[0] != 0;
        if (applied || !cur) continue;
        /* Only rows that exist: every row the store wrote has "_row". */
        if (rowcol < 0 || cells[rowcol].len < 0) continue;
        sl_row *row = sl_result_add_row(cur);
        if (!row) return SL_ENOMEM;
        if (n == 1)
            for (int i = 0; i < t->npk + t->nck; i++) {
                const sl_val *v = &w[0].row.v[i];
                sl_cql_bytes kb = {v->p, (int32_t)v->n};
                uint8_t num[8];
                if (t->cols[i].type == SL_INT) {
                    for (int q = 0; q < 8; q++)
                        num[q] = (uint8_t)((uint64_t)v->i >> (56 - 8 * q));
                    kb = (sl_cql_bytes){num, 8};
                }
                int rc = cell_val(cur, t->cols[i].type, kb, &row->v[i]);
                if (rc) return rc;
            }
        for (int k = 1; k < ncols; k++) {
            if (map[k] < 0) continue;
            int rc = cell_val(cur, t->cols[map[k]].type, cells[k], &row->v[map[k]]);
            if (rc) return rc;
        }
    }
    return applied ? 0 : SL_ENOTAPPLIED;
}

static int same_partition(const sl_write *a, const sl_write *b) {
    if (a->t != b->t && strcmp(a->t->name, b->t->name) != 0) return 0;
    for (int i = 0; i < a->t->npk; i++)
        if (!sl_store_val_eq(a->t->cols[i].type, &a->row.v[i], &b->row.v[i])) return 0;
    return 1;
}

/* One apply() with the cluster: its writes go out as one request (a
 * statement or a batch), or, for an unconditional batch over several
 * partitions that is too large for one logged batch, as one unlogged batch
 * per partition in order of first appearance, each sent when the one
 * before it succeeded. Nothing here waits: the client's callback takes
 * each step (cq_apply_cb), and cq_apply waits for the last. */
typedef struct capp {
    cq_store *s;
    const sl_write *w; /* borrowed until done runs */
    size_t n;
    int cas, one_part;
    sl_result *cur; /* a failed compare-and-set's rows, or NULL */
    void (*done)(void *arg, int rc);
    void *arg;
    /* the request in flight: */
    const sl_write *sw;
    size_t sn;
    binder *bs;
    sl_cql_batch_item *items;
    /* split: the writes of the partition in flight, and those sent */
    sl_write *part;
    unsigned char *sent;
    size_t next;
} capp;

static void capp_end(capp *a, int rc) {
    free(a->bs);
    free(a->items);
    free(a->part);
    free(a->sent);
    void (*done)(void *, int) = a->done;
    void *arg = a->arg;
    free(a);
    done(arg, rc);
}

static void capp_answer(void *arg, int rc, sl_cql_res *res);

/* Sends sw[0..sn) as one request. */
static void capp_send(capp *a, const sl_write *sw, size_t sn) {
    sl_cql_opts o = {.flags = a->cas ? 0 : SL_CQL_IDEMPOTENT};
    free(a->bs);
    free(a->items);
    a->items = NULL;
    a->sw = sw;
    a->sn = sn;
    a->bs = malloc(sn * sizeof *a->bs);
    if (sn > 1) a->items = malloc(sn * sizeof *a->items);
    int rc = a->bs && (sn == 1 || a->items) ? 0 : SL_ENOMEM;
    sl_cql_stmt *stmt = NULL;
    for (size_t k = 0; rc == 0 && k < sn; k++) {
        if ((rc = prepare_write(a->s, &sw[k], &stmt, &a->bs[k]))) break;
        if (a->items) a->items[k] = (sl_cql_batch_item){stmt, a->bs[k].v, (size_t)a->bs[k].n};
    }
    if (rc) {
        capp_end(a, rc);
        return;
    }
    if (sn == 1) {
        sl_cql_execute_cb(a->s->cl, stmt, a->bs[0].v, (size_t)a->bs[0].n, &o, capp_answer, a);
        return;
    }
    /* Unlogged when one partition holds it all: a single mutation is atomic
     * already. A conditional batch is logged (Cassandra's default for it). */
    int one = a->part ? 1 : a->one_part;
    uint8_t type = one && !a->cas ? SL_CQL_BATCH_UNLOGGED : SL_CQL_BATCH_LOGGED;
    sl_cql_batch_cb(a->s->cl, type, a->items, sn, &o, capp_answer, a);
}

/* Sends the next partition's writes of a split batch, or ends it. */
static void capp_next_part(capp *a) {
    while (a->next < a->n && a->sent[a->next])
        a->next++;
    if (a->next == a->n) {
        capp_end(a, 0);
        return;
    }
    size_t k = 0;
    for (size_t j = a->next; j < a->n; j++)
        if (!a->sent[j] && same_partition(&a->w[a->next], &a->w[j])) {
            a->part[k++] = a->w[j];
            a->sent[j] = 1;
        }
    capp_send(a, a->part, k);
}

static void capp_answer(void *arg, int rc, sl_cql_res *res) {
    capp *a = arg;
    if (rc == 0 && a->cas) {
        sl_result tmp;
        sl_result_init(&tmp);
        rc = read_cas(a->sw, a->sn, res, a->cur ? a->cur : &tmp);
        sl_result_free(&tmp);
        if (rc != SL_ENOTAPPLIED && a->cur) sl_result_free(a->cur);
    }
    sl_cql_res_free(res);
    if (rc == 0 && a->part) {
        capp_next_part(a);
        return;
    }
    capp_end(a, rc);
}

static void capp_start(cq_store *s, const sl_write *w, size_t n, sl_result *current, void (*done)(void *, int),
                       void *arg) {
    if (current) sl_result_free(current);
    if (n == 0) {
        done(arg, 0);
        return;
    }
    int cas, one_part;
    int rc = sl_store_check_writes(w, n, &cas, &one_part);
    capp *a = rc ? NULL : calloc(1, sizeof *a);
    if (!a) {
        done(arg, rc ? rc : SL_ENOMEM);
        return;
    }
    *a = (capp){.s = s, .w = w, .n = n, .cas = cas, .one_part = one_part, .cur = current, .done = done, .arg = arg};
    size_t bytes = 0;
    for (size_t k = 0; !cas && !one_part && k < n; k++)
        for (int i = 0; i < w[k].t->ncol; i++)
            bytes += w[k].row.v[i].n + 8;
    if (bytes <= SPLIT_BATCH_BYTES) {
        capp_send(a, w, n);
        return;
    }
    a->part = malloc(n * sizeof *a->part);
    a->sent = calloc(n, 1);
    if (!a->part || !a->sent) {
        capp_end(a, SL_ENOMEM);
        return;
    }
    capp_next_part(a);
}

static void cq_apply_cb(sl_store *st, const sl_write *w, size_t n, void (*done)(void *arg, int rc), void *arg) {
    capp_start((cq_store *)st, w, n, NULL, done, arg);
}

/* The blocking apply(): cq_apply_cb, and wait for its answer. */
typedef struct {
    sl_latch l;
    int rc;
} waiter;

static void wait_done(void *arg, int rc) {
    waiter *wt = arg;
    wt->rc = rc;
    sl_latch_done(&wt->l);
}

static int cq_apply(sl_store *st, const sl_write *w, size_t n, sl_result *current) {
    waiter wt;
    sl_latch_init(&wt.l, 1);
    capp_start((cq_store *)st, w, n, current, wait_done, &wt);
    sl_latch_wait(&wt.l);
    return wt.rc;
}

/* --- Reads --------------------------------------------------------------- */

static uint16_t read_cl(cq_store *s, int consistency) {
    return consistency == SL_READ_SERIAL ? sl_cql_client_serial(s->cl) : 0;
}

static int cq_get(sl_store *st, const sl_table *t, const sl_val *key, int consistency, sl_result *out) {
    cq_store *s = (cq_store *)st;
    sl_result_free(out);
    if (sl_store_check_table(t) || !key || sl_store_check_key(key, t->npk + t->nck)) return SL_EINVAL;
    sl_cql_stmt *stmt;
    int rc = stmt_op(s, t, SL_STMT_GET, &stmt);
    if (rc) return rc;
    binder b = {.n = 0};
    for (int i = 0; i < t->npk + t->nck; i++)
        bind_val(&b, t->cols[i].type, &key[i]);
    sl_cql_opts o = {.flags = SL_CQL_READ, .consistency = read_cl(s, consistency)};
    sl_cql_res *res = NULL;
    if ((rc = sl_cql_execute(s->cl, stmt, b.v, (size_t)b.n, &o, &res))) return rc;
    rc = read_rows(t, res, out, 1);
    sl_cql_res_free(res);
    if (rc) {
        sl_result_free(out);
        return rc;
    }
    return out->n ? 0 : SL_ENOTFOUND;
}

static int cq_slice(sl_store *st, const sl_slice *q, sl_result *out) {
    cq_store *s = (cq_store *)st;
    sl_result_free(out);
    if (!q || sl_store_check_table(q->t)) return SL_EINVAL;
    const sl_table *t = q->t;
    if (q->nfrom < 0 || q->nfrom > t->nck || q->nto < 0 || q->nto > t->nck || q->limit < 0 ||
        sl_store_check_key(q->pk, t->npk) || sl_store_check_key(q->from, q->nfrom) || sl_store_check_key(q->to, q->nto))
        return SL_EINVAL;
    sl_stmt_shape k;
    sl_stmt_shape_slice(&k, q);
    sl_cql_stmt *stmt;
    int rc = stmt_get(s, &k, 0, &stmt);
    if (rc) return rc;
    binder b = {.n = 0};
    for (int i = 0; i < t->npk; i++)
        bind_val(&b, t->cols[i].type, &q->pk[i]);
    for (int i = 0; i < q->nfrom; i++)
        bind_val(&b, t->cols[t->npk + i].type, &q->from[i]);
    for (int i = 0; i < q->nto; i++)
        bind_val(&b, t->cols[t->npk + i].type, &q->to[i]);
    /* One more row than asked tells whether more follow. */
    int want = q->limit <= 0 ? -1 : q->limit == INT32_MAX ? INT32_MAX : q->limit + 1;
    if (q->limit > 0) bind_int32(&b, q->limit == INT32_MAX ? INT32_MAX : q->limit + 1);
    sl_cql_opts o = {.flags = SL_CQL_READ, .consistency = read_cl(s, q->consistency), .page_size = PAGE_SIZE};
    sl_cql_res *prev = NULL;
    for (;;) {
        sl_cql_res *res = NULL;
        rc = sl_cql_execute(s->cl, stmt, b.v, (size_t)b.n, &o, &res);
        sl_cql_res_free(prev); /* its paging state was copied into the request */
        prev = NULL;
        if (rc) break;
        if ((rc = read_rows(t, res, out, want))) {
            sl_cql_res_free(res);
            break;
        }
        if ((want > 0 && (int)out->n >= want) || !(res->r.meta.flags & SL_CQL_MD_HAS_MORE_PAGES) ||
            res->r.meta.paging_state.len <= 0) {
            sl_cql_res_free(res);
            break;
        }
        o.paging_state = res->r.meta.paging_state;
        prev = res;
    }
    if (rc) {
        sl_result_free(out);
        return rc;
    }
    if (q->limit > 0 && out->n > (size_t)q->limit) {
        out->n = (size_t)q->limit;
        out->more = 1;
    }
    return 0;
}

static int cq_ping(sl_store *st) {
    cq_store *s = (cq_store *)st;
    sl_cql_opts o = {.flags = SL_CQL_READ, .consistency = SL_CQL_ONE};
    return sl_cql_query(s->cl, "SELECT release_version FROM system.local", NULL, 0, &o, NULL);
}

/* --- Schema -------------------------------------------------------------- */

/* The columns of K.T as (name, type) from system_schema.columns. */
static int table_columns(cq_store *s, const char *table, sl_cql_res **out) {
    static const char *q = "SELECT column_name, type FROM system_schema.columns WHERE keyspace_name=? AND "
                           "table_name=?";
    sl_cql_bytes v[2] = {{(const uint8_t *)s->ks, (int32_t)strlen(s->ks)},
                         {(const uint8_t *)table, (int32_t)strlen(table)}};
    sl_cql_opts o = {.flags = SL_CQL_READ, .consistency = SL_CQL_ONE};
    return sl_cql_query(s->cl, q, v, 2, &o, out);
}

/* 0 when K.T has every column of t with the right type (and "_row");
 * *missing says whether the table exists at all (-1), or the index of the
 * first missing column, or 0. */
static int check_columns(cq_store *s, const sl_table *t, int *missing, int *wrong) {
    sl_cql_res *res = NULL;
    int rc = table_columns(s, t->name, &res);
    if (rc) return rc;
    *missing = res->r.nrows == 0 ? -1 : 0;
    *wrong = -1;
    for (int i = 0; i <= t->ncol && *missing == 0; i++) {
        const char *name = i < t->ncol ? t->cols[i].name : ROW_COL;
        const char *ty = i < t->ncol ? type_name(t->cols[i].type) : "boolean";
        int found = 0;
        sl_cql_rd rows = res->r.rows;
        for (int32_t r = 0; r < res->r.nrows; r++) {
            sl_cql_bytes cn, ct;
            sl_cql_rows_next(&rows, &cn);
            sl_cql_rows_next(&rows, &ct);
            if (cn.len == (int32_t)strlen(name) && memcmp(cn.p, name, (size_t)cn.len) == 0) {
                found = 1;
                if (!(ct.len == (int32_t)strlen(ty) && memcmp(ct.p, ty, (size_t)ct.len) == 0)) *wrong = i;
            }
        }
        if (!found) *missing = i + 1;
    }
    sl_cql_res_free(res);
    return 0;
}

static int cq_ensure(sl_store *st, const sl_table *const *tables, size_t n) {
    cq_store *s = (cq_store *)st;
    if (!tables && n) return SL_EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (sl_store_check_table(tables[i])) return SL_EINVAL;
        int missing, wrong;
        int rc = check_columns(s, tables[i], &missing, &wrong);
        if (rc) return rc;
        if (missing || wrong >= 0) {
            if (missing < 0)
                sl_log(SL_ERR,
                       "store: table %s.%s does not exist: run `sluice schema` (with --create-keyspace "
                       "for a new keyspace) to create the schema",
                       s->ks, tables[i]->name);
            else
                sl_log(SL_ERR,
                       "store: table %s.%s has no column %s of the expected type: run `sluice schema` "
                       "to migrate the schema",
                       s->ks, tables[i]->name,
                       missing > 0
                           ? (missing - 1 < tables[i]->ncol ? tables[i]->cols[missing - 1].name : ROW_COL)
                       : wrong < tables[i]->ncol ? tables[i]->cols[wrong].name
                                                 : ROW_COL);
            return SL_ENOTFOUND;
        }
    }
    return 0;
}

/* One schema change, then a wait until every live node has it: the next
 * statement (DDL that names the keyspace, a read of system_schema, a
 * write) may go to another node, which would not know the keyspace or the
 * table yet (issue 11: on a fresh 3-node cluster, `sluice schema
 * --create-keyspace` failed that way every time). */
static int ddl(cq_store *s, const char *q) {
    int rc = SL_EUNAVAILABLE;
    for (int attempt = 0; attempt < 3 && (rc == SL_EUNAVAILABLE || rc == SL_EUNKNOWN); attempt++) {
        if (attempt) sleep(1); /* the control connection is being reopened */
        rc = sl_cql_schema_change(s->cl, q, DDL_TIMEOUT_MS); /* statements of IF NOT EXISTS: idempotent */
    }
    if (rc == SL_ETIMEOUT)
        sl_log(SL_ERR, "store: the nodes did not agree on the schema within %d s after: %s",
               DDL_TIMEOUT_MS / 1000, q);
    else if (rc)
        sl_log(SL_ERR, "store: %s: %s", q, sl_strerror(rc));
    return rc;
}

int sl_store_cql_schema(sl_store *st, const sl_table *const *tables, size_t n, int create_keyspace,
                        const char *replication) {
    return sl_store_cql_schema_with(st, tables, NULL, n, create_keyspace, replication);
}

int sl_store_cql_schema_with(sl_store *st, const sl_table *const *tables, const char *const *options,
                             size_t n, int create_keyspace, const char *replication) {
    if (!st || st->type != &cq_type) return SL_EINVAL;
    cq_store *s = (cq_store *)st;
    sbuf b = {0};
    int rc = 0;
    if (!create_keyspace) {
        static const char *q = "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name=?";
        sl_cql_bytes v[1] = {{(const uint8_t *)s->ks, (int32_t)strlen(s->ks)}};
        sl_cql_opts o = {.flags = SL_CQL_READ, .consistency = SL_CQL_ONE};
        sl_cql_res *res = NULL;
        if ((rc = sl_cql_query(s->cl, q, v, 1, &o, &res)) == 0 && res->r.nrows == 0) {
            sl_log(SL_ERR,
                   "store: keyspace %s does not exist: create it (sluice schema --create-keyspace "
                   "[--replication MAP]) or set KEYSPACE",
                   s->ks);
            rc = SL_ENOTFOUND;
        }
        sl_cql_res_free(res);
    } else {
        sb_add(&b, "CREATE KEYSPACE IF NOT EXISTS ");
        sb_ident(&b, s->ks);
        sb_add(&b, " WITH replication = ");
        sb_add(&b, replication && *replication ? replication
                                               : "{'class':'SimpleStrategy','replication_factor':1}");
        rc = b.oom ? SL_ENOMEM : ddl(s, b.p);
    }
    if (rc == 0) {
        b.n = 0;
        sb_add(&b, "CREATE TABLE IF NOT EXISTS ");
        sb_ident(&b, s->ks);
        sb_add(&b, ".schema_version (name text PRIMARY KEY, version int)");
        rc = b.oom ? SL_ENOMEM : ddl(s, b.p);
    }
    if (rc == 0) {
        b.n = 0;
        sb_add(&b, "SELECT version FROM ");
        sb_ident(&b, s->ks);
        sb_add(&b, ".schema_version WHERE name='sluice'");
        sl_cql_res *res = NULL;
        sl_cql_opts o = {.flags = SL_CQL_READ, .consistency = SL_CQL_SERIAL};
        rc = b.oom ? SL_ENOMEM : sl_cql_query(s->cl, b.p, NULL, 0, &o, &res);
        if (rc == 0 && res->r.kind == SL_CQL_RESULT_ROWS && res->r.nrows == 1) {
            sl_cql_rd rows = res->r.rows;
            sl_cql_bytes c;
            sl_cql_rows_next(&rows, &c);
            int64_t v = sl_cql_cell_i64(c);
            if (v > SCHEMA_VERSION) {
                sl_log(SL_ERR,
                       "store: the schema in keyspace %s is version %lld, newer than this build's %d: "
                       "upgrade Sluice",
                       s->ks, (long long)v, SCHEMA_VERSION);
                rc = SL_EINVAL;
            }
        }
        sl_cql_res_free(res);
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        const sl_table *t = tables[i];
        if ((rc = sl_store_check_table(t))) break;
        b.n = 0;
        sb_add(&b, "CREATE TABLE IF NOT EXISTS ");
        sb_table(&b, s->ks, t);
        sb_add(&b, " (");
        for (int k = 0; k < t->ncol; k++) {
            sb_ident(&b, t->cols[k].name);
            sb_add(&b, " ");
            sb_add(&b, type_name(t->cols[k].type));
            sb_add(&b, ", ");
        }
        sb_ident(&b, ROW_COL);
        sb_add(&b, " boolean, PRIMARY KEY ((");
        sb_cols(&b, t, 0, t->npk);
        sb_add(&b, ")");
        for (int k = t->npk; k < t->npk + t->nck; k++) {
            sb_add(&b, ", ");
            sb_ident(&b, t->cols[k].name);
        }
        sb_add(&b, "))");
        const char *with = options ? options[i] : NULL;
        int existed = 0;
        if (with) {
            int missing, wrong;
            if ((rc = check_columns(s, t, &missing, &wrong))) break;
            existed = missing >= 0;
            sb_add(&b, " WITH ");
            sb_add(&b, with);
        }
        if ((rc = b.oom ? SL_ENOMEM : ddl(s, b.p))) break;
        /* A table that existed gets the options too (a migration). */
        if (existed) {
            b.n = 0;
            sb_add(&b, "ALTER TABLE ");
            sb_table(&b, s->ks, t);
            sb_add(&b, " WITH ");
            sb_add(&b, with);
            if ((rc = b.oom ? SL_ENOMEM : ddl(s, b.p))) break;
        }
        /* Migration: regular columns added to a definition since. */
        for (;;) {
            int missing, wrong;
            if ((rc = check_columns(s, t, &missing, &wrong))) break;
            if (wrong >= 0) {
                sl_log(SL_ERR, "store: %s.%s.%s has another type than %s: migrate it by hand", s->ks, t->name,
                       wrong < t->ncol ? t->cols[wrong].name : ROW_COL,
                       wrong < t->ncol ? type_name(t->cols[wrong].type) : "boolean");
                rc = SL_EINVAL;
                break;
            }
            if (missing <= 0) break;
            int col = missing - 1;
            if (col < t->npk + t->nck) { /* a key column cannot be added */
                sl_log(SL_ERR, "store: %s.%s has another primary key: migrate it by hand", s->ks, t->name);
                rc = SL_EINVAL;
                break;
            }
            b.n = 0;
            sb_add(&b, "ALTER TABLE ");
            sb_table(&b, s->ks, t);
            sb_add(&b, " ADD ");
            sb_ident(&b, col < t->ncol ? t->cols[col].name : ROW_COL);
            sb_add(&b, " ");
            sb_add(&b, col < t->ncol ? type_name(t->cols[col].type) : "boolean");
            if ((rc = b.oom ? SL_ENOMEM : ddl(s, b.p))) break;
        }
    }
    if (rc == 0) {
        b.n = 0;
        sb_add(&b, "INSERT INTO ");
        sb_ident(&b, s->ks);
        char v[64];
        snprintf(v, sizeof v, ".schema_version (name, version) VALUES ('sluice', %d)", SCHEMA_VERSION);
        sb_add(&b, v);
        rc = b.oom ? SL_ENOMEM : ddl(s, b.p);
    }
    free(b.p);
    return rc;
}

sl_cql_client *sl_store_cql_client(sl_store *st) {
    return st && st->type == &cq_type ? ((cq_store *)st)->cl : NULL;
}

/* --- Open and close ------------------------------------------------------ */

static void cq_close(sl_store *st) {
    cq_store *s = (cq_store *)st;
    sl_cql_client_close(s->cl);
    pthread_mutex_destroy(&s->mu);
    sl_stmt_cache_free(&s->stmts, NULL);
    free(s->ks);
    free(s);
}

static void cq_metrics(sl_store *st, sl_text *t) {
    sl_cql_metrics(((cq_store *)st)->cl, t);
}

static const sl_store_type cq_type = {
    .name = "cql",
    .ensure = cq_ensure,
    .get = cq_get,
    .slice = cq_slice,
    .apply = cq_apply,
    .apply_cb = cq_apply_cb,
    .ping = cq_ping,
    .close = cq_close,
    .metrics = cq_metrics,
    .combine_cas = 1,
    .shared = 1,
};

int sl_store_cql_open(const sl_cql_config *cfg, sl_store **out) {
    if (!cfg || !out) return SL_EINVAL;
    const char *ks = cfg->keyspace && *cfg->keyspace ? cfg->keyspace : "sluice";
    if (strlen(ks) > 48) return SL_EINVAL;
    cq_store *s = calloc(1, sizeof *s);
    if (!s) return SL_ENOMEM;
    s->base.type = &cq_type;
    pthread_mutex_init(&s->mu, NULL);
    if (!(s->ks = strdup(ks))) {
        pthread_mutex_destroy(&s->mu);
        free(s);
        return SL_ENOMEM;
    }
    int rc = sl_cql_client_open(cfg, &s->cl);
    if (rc) {
        pthread_mutex_destroy(&s->mu);
        free(s->ks);
        free(s);
        return rc;
    }
    *out = &s->base;
    return 0;
}
