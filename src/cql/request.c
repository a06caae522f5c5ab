/* request.c: requests: the prepared-statement cache, encoding, execution
 * with retries, error mapping, schema changes. */
#include <unistd.h>

#include "cluster_int.h"

/* --- Requests ------------------------------------------------------------ */

typedef struct {
    uint8_t opcode; /* QUERY, EXECUTE, BATCH or PREPARE */
    const char *query;
    sl_cql_stmt *st;
    const sl_cql_bytes *vals;
    size_t n;
    uint8_t btype;
    const sl_cql_batch_item *items;
    size_t nitems;
    sl_cql_qparams qp;
} rq;

/* Encodes a request body into a malloc'ed buffer. Statement ids are read
 * under the client mutex, since a re-prepare may change them. */
static int encode(sl_cql_client *c, const rq *r, uint8_t **out, size_t *len) {
    size_t cap = 4096;
    sl_cql_batch_stmt bst[64], *bs = bst;
    uint8_t ids[64][MAX_ID], (*idp)[MAX_ID] = ids;
    if (r->opcode == SL_CQL_OP_BATCH && r->nitems > 64) {
        bs = malloc(r->nitems * sizeof *bs);
        idp = malloc(r->nitems * sizeof *idp);
        if (!bs || !idp) {
            if (bs != bst) free(bs);
            if (idp != ids) free(idp);
            return SL_ENOMEM;
        }
    }
    uint8_t id[MAX_ID];
    int idlen = 0;
    pthread_mutex_lock(&c->mu);
    if (r->st) memcpy(id, r->st->id, (size_t)(idlen = r->st->idlen));
    for (size_t i = 0; r->opcode == SL_CQL_OP_BATCH && i < r->nitems; i++) {
        memcpy(idp[i], r->items[i].st->id, (size_t)r->items[i].st->idlen);
        bs[i] = (sl_cql_batch_stmt){.kind = 1,
                                    .id = {idp[i], r->items[i].st->idlen},
                                    .values = r->items[i].vals,
                                    .nvalues = (uint16_t)r->items[i].n};
    }
    pthread_mutex_unlock(&c->mu);
    int rc = 0;
    for (;;) {
        uint8_t *buf = malloc(cap);
        if (!buf) {
            rc = SL_ENOMEM;
            break;
        }
        sl_cql_wr w = sl_cql_wr_make(buf, cap);
        switch (r->opcode) {
        case SL_CQL_OP_QUERY:
            sl_cql_query_encode(&w, r->query, strlen(r->query), &r->qp);
            break;
        case SL_CQL_OP_PREPARE:
            sl_cql_prepare_encode(&w, r->query, strlen(r->query));
            break;
        case SL_CQL_OP_EXECUTE:
            sl_cql_execute_encode(&w, id, (uint16_t)idlen, &r->qp);
            break;
        case SL_CQL_OP_BATCH: {
            sl_cql_batch b = {.type = r->btype,
                              .stmts = bs,
                              .nstmts = (uint16_t)r->nitems,
                              .consistency = r->qp.consistency,
                              .serial_consistency = r->qp.serial_consistency,
                              .has_timestamp = r->qp.has_timestamp,
                              .timestamp = r->qp.timestamp};
            sl_cql_batch_encode(&w, &b);
            break;
        }
        }
        rc = sl_cql_wr_status(&w);
        if (rc == SL_ETOOBIG && w.len <= SL_CQL_MAX_BODY) {
            free(buf);
            cap = w.len;
            continue;
        }
        if (rc) {
            free(buf);
            break;
        }
        *out = buf;
        *len = w.len;
        break;
    }
    if (bs != bst) free(bs);
    if (idp != ids) free(idp);
    return rc;
}

/* Records the id and metadata of a PREPARE's answer in st; takes f. */
static int prepared_record(sl_cql_client *c, sl_cql_stmt *st, sl_cql_frame *f) {
    sl_cql_res *res = NULL;
    sl_cql_error err;
    uint8_t *eb = NULL;
    int rc = cql_decode_frame(f, &res, &err, &eb);
    if (rc == 1) {
        sl_log(SL_ERR, "cql: cannot prepare \"%s\": %.*s", st->query, (int)err.message.len, err.message.p);
        int code = err.code;
        free(eb);
        return code == SL_CQL_ERR_UNAUTHORIZED ? SL_EAUTH : SL_EINTERNAL;
    }
    if (rc) return rc;
    if (res->r.kind != SL_CQL_RESULT_PREPARED || res->r.id.len <= 0 || res->r.id.len > MAX_ID ||
        res->r.bind.npk > MAX_BIND) {
        sl_cql_res_free(res);
        return SL_EINTERNAL;
    }
    pthread_mutex_lock(&c->mu);
    memcpy(st->id, res->r.id.p, (size_t)res->r.id.len);
    st->idlen = res->r.id.len;
    st->npk = (int)res->r.bind.npk;
    for (int i = 0; i < st->npk; i++)
        st->pk[i] = res->r.bind.pk[i];
    st->nbind = res->r.bind.ncols;
    if (res->r.bind.ncols > 0 && res->r.bind.cols)
        cql_text_str((sl_cql_bytes){(const uint8_t *)res->r.bind.cols[0].keyspace.p,
                                    (int32_t)res->r.bind.cols[0].keyspace.len},
                     st->ks, sizeof st->ks);
    c->prepares++;
    pthread_mutex_unlock(&c->mu);
    sl_cql_res_free(res);
    return 0;
}

/* Encodes the PREPARE of st. */
static int encode_prepare(sl_cql_client *c, sl_cql_stmt *st, uint8_t **body, size_t *len) {
    rq r = {.opcode = SL_CQL_OP_PREPARE, .query = st->query};
    return encode(c, &r, body, len);
}

/* Prepares a statement on one connection and records its id. */
static int prepare_on(sl_cql_client *c, sl_cql_conn *cn, sl_cql_stmt *st, int timeout_ms) {
    uint8_t *body;
    size_t len;
    int rc = encode_prepare(c, st, &body, &len);
    if (rc) return rc;
    sl_cql_frame f;
    rc = sl_cql_conn_request(cn, SL_CQL_OP_PREPARE, body, len, timeout_ms, &f, NULL);
    free(body);
    if (rc) return rc == SL_EIO || rc == SL_EBUSY ? SL_EUNAVAILABLE : rc;
    return prepared_record(c, st, &f);
}

static int is_write(const rq *r, int flags) {
    return !(flags & SL_CQL_READ) && r->opcode != SL_CQL_OP_PREPARE;
}

/* Maps a server error to a Sluice code, logging what an operator needs. */
static int map_error(sl_cql_client *c, const rq *r, int flags, const sl_cql_error *e) {
    (void)c;
    const char *what = r->query ? r->query : r->st ? r->st->query : r->items ? r->items[0].st->query : "?";
    int write = is_write(r, flags);
    switch (e->code) {
    case SL_CQL_ERR_UNAVAILABLE:
        sl_log(SL_DEBUG, "cql: Unavailable (%d of %d replicas alive)", e->alive, e->required);
        return SL_EUNAVAILABLE;
    case SL_CQL_ERR_OVERLOADED:
    case SL_CQL_ERR_IS_BOOTSTRAPPING:
    case SL_CQL_ERR_TRUNCATE:
        return SL_EUNAVAILABLE;
    case SL_CQL_ERR_WRITE_TIMEOUT:
    case SL_CQL_ERR_WRITE_FAILURE:
    case SL_CQL_ERR_CAS_WRITE_UNKNOWN:
        sl_log(SL_DEBUG, "cql: %s (write type %.*s, %d of %d acks): outcome unknown",
               e->code == SL_CQL_ERR_WRITE_TIMEOUT ? "WriteTimeout" : "WriteFailure", (int)e->write_type.len,
               e->write_type.p ? e->write_type.p : "", e->received, e->blockfor);
        return SL_EUNKNOWN;
    case SL_CQL_ERR_READ_TIMEOUT:
    case SL_CQL_ERR_READ_FAILURE:
        return SL_ETIMEOUT;
    case SL_CQL_ERR_INVALID:
        if (e->message.len > 0 && memmem(e->message.p, e->message.len, "oversized", 9)) {
            sl_log(SL_ERR, "cql: %.*s", (int)e->message.len, e->message.p);
            return SL_ETOOBIG; /* over the server's mutation size (commitlog_segment_size / 2) */
        }
        /* fall through */
    case SL_CQL_ERR_SYNTAX:
    case SL_CQL_ERR_CONFIG:
    case SL_CQL_ERR_PROTOCOL:
    case SL_CQL_ERR_FUNCTION_FAILURE:
        sl_log(SL_ERR, "cql: server refused \"%s\" (error 0x%04x): %.*s", what, (unsigned)e->code,
               (int)e->message.len, e->message.p);
        return SL_EINTERNAL;
    case SL_CQL_ERR_ALREADY_EXISTS:
        return SL_EEXISTS;
    case SL_CQL_ERR_BAD_CREDENTIALS:
    case SL_CQL_ERR_UNAUTHORIZED:
        sl_log(SL_ERR, "cql: not authorized (check USERNAME, PASSWORD and the role's permissions): %.*s",
               (int)e->message.len, e->message.p);
        return SL_EAUTH;
    }
    sl_log(SL_ERR, "cql: server error 0x%04x on \"%s\": %.*s", (unsigned)e->code, what, (int)e->message.len,
           e->message.p);
    return write ? SL_EUNKNOWN : SL_EIO;
}

/* --- A request in flight ------------------------------------------------- */

/* One request, from its first attempt to its answer, as a chain of
 * callbacks: each step sends something (the request, or the PREPARE of one
 * of its statements) on a connection and returns; the connection's I/O
 * thread calls the next step with the answer. So a request holds no thread
 * while it waits; the blocking calls wait on one (run). The steps follow
 * the plan of nodes for the request's token: a request that was not sent,
 * or an idempotent one that timed out once, goes on to the next node; an
 * UNPREPARED answer (the node forgot the statement, or never had it: see
 * sl_cql_stmt_lazy) sends the PREPARE, then the request again. */
typedef struct areq {
    sl_cql_client *c;
    rq r;
    int flags, timeout_ms, idem, write;
    int plan[MAX_PLAN], np, k;
    int rc, again, tried, timeouts, maybe_applied, reprepares, lazy;
    pconn *p;       /* this attempt's connection (a reference held) */
    node_stats *ns; /* and its node's figures */
    sl_cql_stmt *prep; /* being prepared on p */
    sl_cql_res *res;
    sl_cql_done_fn done;
    void *arg;
} areq;

static void a_next(areq *a);
static void a_send(areq *a);

static void a_finish(areq *a) {
    if (a->rc == SL_EUNAVAILABLE) sl_log(SL_DEBUG, "cql: no host available");
    /* A write that may have executed on an earlier node stays "unknown",
     * whatever a later attempt says, unless one succeeded. */
    if (a->rc != 0 && a->write && a->maybe_applied) a->rc = SL_EUNKNOWN;
    sl_cql_res *res = a->rc == 0 ? a->res : NULL;
    if (a->rc != 0) sl_cql_res_free(a->res);
    a->done(a->arg, a->rc, res);
    free(a);
}

/* The attempt on this node is over: answer, or try the next node. */
static void a_node_done(areq *a) {
    cql_pconn_release(a->c, a->p);
    a->p = NULL;
    if (a->rc != 0) sl_count(&a->ns->errors, 1);
    if (a->rc == 0 || !a->again) {
        a_finish(a);
        return;
    }
    pthread_mutex_lock(&a->c->mu);
    pthread_cond_signal(&a->c->maint_cv); /* a connection may have died */
    pthread_mutex_unlock(&a->c->mu);
    a_next(a);
}

/* Sends on the next node of the plan that has a healthy connection. */
static void a_next(areq *a) {
    sl_cql_client *c = a->c;
    while (++a->k < a->np) {
        pthread_mutex_lock(&c->mu);
        pconn *p = c->stopping ? NULL : cql_pick_conn_locked(c, &c->nodes[a->plan[a->k]]);
        node_stats *ns = c->nodes[a->plan[a->k]].st;
        pthread_mutex_unlock(&c->mu);
        if (!p) continue;
        sl_count(&ns->requests, 1);
        if (a->tried) sl_count(&ns->retries, 1);
        a->tried = 1;
        a->p = p;
        a->ns = ns;
        a->again = 0;
        a->reprepares = 0;
        a_send(a);
        return;
    }
    a_finish(a);
}

static void a_prepared(void *arg, int rc, sl_cql_frame *f, int sent) {
    areq *a = arg;
    (void)sent;
    if (rc == 0) rc = prepared_record(a->c, a->prep, f);
    if (rc == 0) {
        a_send(a);
        return;
    }
    /* Nothing of the request itself ran: another node may take it. */
    a->again = rc == SL_EIO || rc == SL_ETIMEOUT || rc == SL_EUNAVAILABLE;
    a->rc = a->again ? SL_EUNAVAILABLE : rc;
    a_node_done(a);
}

/* Prepares st on this attempt's connection, then sends the request again. */
static void a_prepare(areq *a, sl_cql_stmt *st) {
    a->prep = st;
    uint8_t *body;
    size_t len;
    int rc = encode_prepare(a->c, st, &body, &len);
    if (rc == 0) {
        rc = sl_cql_conn_send(a->p->c, SL_CQL_OP_PREPARE, body, len, a->timeout_ms, a_prepared, a);
        free(body);
    }
    if (rc == 0) return;
    a->again = rc == SL_EBUSY || rc == SL_EUNAVAILABLE;
    a->rc = a->again ? SL_EUNAVAILABLE : rc;
    a_node_done(a);
}

/* The first of the request's statements that has no id yet, or NULL. */
static sl_cql_stmt *unprepared(sl_cql_client *c, const rq *r) {
    sl_cql_stmt *st = NULL;
    pthread_mutex_lock(&c->mu);
    if (r->st && r->st->idlen == 0) st = r->st;
    for (size_t i = 0; !st && r->opcode == SL_CQL_OP_BATCH && i < r->nitems; i++)
        if (r->items[i].st->idlen == 0) st = r->items[i].st;
    pthread_mutex_unlock(&c->mu);
    return st;
}

static void a_answer(void *arg, int rc, sl_cql_frame *f, int sent) {
    areq *a = arg;
    sl_cql_client *c = a->c;
    if (rc == SL_EIO && !sent) {
        a->rc = SL_EUNAVAILABLE;
        a->again = 1;
    } else if (rc == SL_EIO || rc == SL_ETIMEOUT) {
        if (rc == SL_ETIMEOUT) {
            sl_count(&a->ns->timeouts, 1);
            a->timeouts++;
            cql_node_outcome(c, a->plan[a->k], 1);
        }
        a->maybe_applied = 1;
        a->again = a->idem && a->timeouts <= 1;
        a->rc = a->write ? SL_EUNKNOWN : rc == SL_ETIMEOUT ? SL_ETIMEOUT : SL_EUNAVAILABLE;
    } else if (rc) {
        a->rc = rc;
    } else {
        sl_cql_error err;
        uint8_t *eb = NULL;
        rc = cql_decode_frame(f, &a->res, &err, &eb);
        if (rc == 0) cql_node_outcome(c, a->plan[a->k], 0);
        a->rc = rc;
        if (rc == 1 && err.code == SL_CQL_ERR_UNPREPARED && a->reprepares < 3) {
            /* Which statement: the execute's, or the batch item whose id
             * the server names. */
            sl_cql_stmt *st = a->r.st;
            pthread_mutex_lock(&c->mu);
            for (size_t i = 0; !st && i < a->r.nitems; i++) {
                sl_cql_stmt *x = a->r.items[i].st;
                if (x->idlen == err.unprepared_id.len && memcmp(x->id, err.unprepared_id.p, (size_t)x->idlen) == 0)
                    st = x;
            }
            if (!st && a->r.nitems) st = a->r.items[a->reprepares % a->r.nitems].st;
            pthread_mutex_unlock(&c->mu);
            free(eb);
            a->reprepares++;
            sl_log(SL_DEBUG, "cql: UNPREPARED, preparing \"%s\" again", st ? st->query : "?");
            if (st) {
                a_prepare(a, st);
                return;
            }
            a->rc = SL_EINTERNAL;
        } else if (rc == 1) {
            a->rc = map_error(c, &a->r, a->flags, &err);
            a->again = (err.code == SL_CQL_ERR_OVERLOADED || err.code == SL_CQL_ERR_IS_BOOTSTRAPPING) && a->idem;
            free(eb);
        }
    }
    a_node_done(a);
}

/* Sends the request on this attempt's connection (preparing first a
 * statement that was never prepared). */
static void a_send(areq *a) {
    sl_cql_stmt *st = unprepared(a->c, &a->r);
    if (st && a->lazy++ <= (int)a->r.nitems) {
        a_prepare(a, st);
        return;
    }
    uint8_t *body;
    size_t len;
    int rc = encode(a->c, &a->r, &body, &len);
    if (rc == 0) {
        rc = sl_cql_conn_send(a->p->c, a->r.opcode, body, len, a->timeout_ms, a_answer, a);
        free(body);
    }
    if (rc == 0) return;
    a->again = rc == SL_EBUSY || rc == SL_EUNAVAILABLE;
    a->rc = a->again ? SL_EUNAVAILABLE : rc;
    a_node_done(a);
}

/* Starts one request with routing, re-preparing and retries; done runs
 * once, maybe before this returns. r's pointers stay borrowed until then. */
static void run_async(sl_cql_client *c, const rq *r, int flags, int has_token, int64_t token, int timeout_ms,
                      sl_cql_done_fn done, void *arg) {
    areq *a = calloc(1, sizeof *a);
    if (!a) {
        done(arg, SL_ENOMEM, NULL);
        return;
    }
    a->c = c;
    a->r = *r;
    a->flags = flags;
    a->timeout_ms = timeout_ms;
    a->done = done;
    a->arg = arg;
    a->k = -1;
    a->rc = SL_EUNAVAILABLE;
    pthread_mutex_lock(&c->mu);
    const sl_cql_stmt *rs = r->st ? r->st : r->nitems ? r->items[0].st : NULL;
    a->np = cql_make_plan(c, has_token, token, rs ? rs->ks : NULL, a->plan);
    pthread_mutex_unlock(&c->mu);
    a->idem = (flags & (SL_CQL_READ | SL_CQL_IDEMPOTENT)) != 0 || r->opcode == SL_CQL_OP_PREPARE;
    a->write = is_write(r, flags);
    /* Fixed here, before the first attempt: every retry carries the same
     * timestamp (compare-and-sets take their ballot's; Cassandra ignores it
     * for them). */
    if (a->write && !a->r.qp.has_timestamp) {
        a->r.qp.has_timestamp = 1;
        a->r.qp.timestamp = sl_cql_next_timestamp();
    }
    a_next(a);
}

/* The blocking form: run_async, and wait for its answer. */
typedef struct {
    sl_latch l;
    int rc;
    sl_cql_res *res;
} waiter;

static void wait_done(void *arg, int rc, sl_cql_res *res) {
    waiter *w = arg;
    w->rc = rc;
    w->res = res;
    sl_latch_done(&w->l);
}

static int run(sl_cql_client *c, rq *r, int flags, int has_token, int64_t token, int timeout_ms,
               sl_cql_res **out) {
    waiter w;
    sl_latch_init(&w.l, 1);
    run_async(c, r, flags, has_token, token, timeout_ms, wait_done, &w);
    sl_latch_wait(&w.l);
    if (w.rc == 0 && out)
        *out = w.res;
    else
        sl_cql_res_free(w.res);
    return w.rc;
}

static void fill_qparams(sl_cql_client *c, const sl_cql_opts *o, const sl_cql_bytes *vals, size_t n,
                         sl_cql_qparams *qp) {
    *qp = sl_cql_qparams_make(o && o->consistency ? o->consistency : c->cfg.consistency);
    qp->serial_consistency = o && o->serial_consistency ? o->serial_consistency : c->cfg.serial_consistency;
    qp->values = n ? vals : NULL;
    qp->nvalues = (uint16_t)n;
    if (o && o->page_size > 0) qp->page_size = o->page_size;
    if (o && o->paging_state.p) qp->paging_state = o->paging_state;
}

static int timeout_of(sl_cql_client *c, const sl_cql_opts *o) {
    return o && o->timeout_ms > 0 ? o->timeout_ms : c->cfg.request_timeout_ms;
}

int sl_cql_stmt_lazy(sl_cql_client *c, const char *query, sl_cql_stmt **out) {
    pthread_mutex_lock(&c->mu);
    for (sl_cql_stmt *s = c->stmts; s; s = s->next)
        if (strcmp(s->query, query) == 0) {
            *out = s;
            pthread_mutex_unlock(&c->mu);
            return 0;
        }
    sl_cql_stmt *st = calloc(1, sizeof *st);
    if (!st || !(st->query = strdup(query))) {
        pthread_mutex_unlock(&c->mu);
        free(st);
        return SL_ENOMEM;
    }
    st->next = c->stmts;
    c->stmts = st;
    pthread_mutex_unlock(&c->mu);
    *out = st;
    return 0;
}

int sl_cql_prepare(sl_cql_client *c, const char *query, sl_cql_stmt **out) {
    sl_cql_stmt *st;
    int rc = sl_cql_stmt_lazy(c, query, &st);
    if (rc) return rc;
    pthread_mutex_lock(&c->mu);
    int have = st->idlen > 0;
    int plan[MAX_PLAN];
    int np = have ? 0 : cql_make_plan(c, 0, 0, NULL, plan);
    pthread_mutex_unlock(&c->mu);
    /* On every node up, as drivers do: each node keeps its own cache, and a
     * statement it has not seen costs an UNPREPARED round trip on the
     * request path (a node that restarts still does). The statement id is
     * the same everywhere, so one node that has it is enough to go on; an
     * error that is not about availability (the statement is wrong) ends
     * the attempt unless a node took it. */
    int ok = have;
    rc = SL_EUNAVAILABLE;
    for (int k = 0; k < np; k++) {
        pthread_mutex_lock(&c->mu);
        pconn *p = cql_pick_conn_locked(c, &c->nodes[plan[k]]);
        pthread_mutex_unlock(&c->mu);
        if (!p) continue;
        int prc = prepare_on(c, p->c, st, c->cfg.request_timeout_ms);
        cql_pconn_release(c, p);
        if (prc == 0) {
            ok = 1;
        } else if (!ok) {
            rc = prc;
            if (prc != SL_EUNAVAILABLE && prc != SL_ETIMEOUT) break;
        }
    }
    /* A statement that could not be prepared stays known, unprepared: its
     * next use prepares it (sl_cql_stmt_lazy). */
    if (!ok) return rc;
    *out = st;
    return 0;
}

static int exec_setup(sl_cql_client *c, sl_cql_stmt *st, const sl_cql_bytes *vals, size_t n, const sl_cql_opts *o,
                      rq *r, int *has, int64_t *token) {
    if (!st || n > MAX_BIND * 4) return SL_EINVAL;
    *r = (rq){.opcode = SL_CQL_OP_EXECUTE, .st = st, .vals = vals, .n = n};
    fill_qparams(c, o, vals, n, &r->qp);
    *token = 0;
    *has = sl_cql_routing_token(st, vals, n, token);
    return 0;
}

static int batch_setup(sl_cql_client *c, uint8_t type, const sl_cql_batch_item *items, size_t n,
                       const sl_cql_opts *o, rq *r, int *has, int64_t *token) {
    if (!items || n == 0 || n > 65535) return SL_EINVAL;
    *r = (rq){.opcode = SL_CQL_OP_BATCH, .btype = type, .items = items, .nitems = n};
    fill_qparams(c, o, NULL, 0, &r->qp);
    *token = 0;
    *has = sl_cql_routing_token(items[0].st, items[0].vals, items[0].n, token);
    return 0;
}

int sl_cql_execute(sl_cql_client *c, sl_cql_stmt *st, const sl_cql_bytes *vals, size_t n,
                   const sl_cql_opts *o, sl_cql_res **out) {
    rq r;
    int has;
    int64_t token;
    int rc = exec_setup(c, st, vals, n, o, &r, &has, &token);
    return rc ? rc : run(c, &r, o ? o->flags : 0, has, token, timeout_of(c, o), out);
}

/* Starts r as set up (setup returned rc), or answers the setup's error. */
static void start_cb(sl_cql_client *c, int rc, const rq *r, int has, int64_t token, const sl_cql_opts *o,
                     sl_cql_done_fn done, void *arg) {
    if (rc)
        done(arg, rc, NULL);
    else
        run_async(c, r, o ? o->flags : 0, has, token, timeout_of(c, o), done, arg);
}

void sl_cql_execute_cb(sl_cql_client *c, sl_cql_stmt *st, const sl_cql_bytes *vals, size_t n,
                       const sl_cql_opts *o, sl_cql_done_fn done, void *arg) {
    rq r;
    int has = 0;
    int64_t token = 0;
    start_cb(c, exec_setup(c, st, vals, n, o, &r, &has, &token), &r, has, token, o, done, arg);
}

int sl_cql_query(sl_cql_client *c, const char *query, const sl_cql_bytes *vals, size_t n,
                 const sl_cql_opts *o, sl_cql_res **out) {
    rq r = {.opcode = SL_CQL_OP_QUERY, .query = query, .vals = vals, .n = n};
    fill_qparams(c, o, vals, n, &r.qp);
    return run(c, &r, o ? o->flags : 0, 0, 0, timeout_of(c, o), out);
}

int sl_cql_batch_exec(sl_cql_client *c, uint8_t type, const sl_cql_batch_item *items, size_t n,
                      const sl_cql_opts *o, sl_cql_res **out) {
    rq r;
    int has;
    int64_t token;
    int rc = batch_setup(c, type, items, n, o, &r, &has, &token);
    return rc ? rc : run(c, &r, o ? o->flags : 0, has, token, timeout_of(c, o), out);
}

void sl_cql_batch_cb(sl_cql_client *c, uint8_t type, const sl_cql_batch_item *items, size_t n,
                     const sl_cql_opts *o, sl_cql_done_fn done, void *arg) {
    rq r;
    int has = 0;
    int64_t token = 0;
    start_cb(c, batch_setup(c, type, items, n, o, &r, &has, &token), &r, has, token, o, done, arg);
}

int sl_cql_schema_change(sl_cql_client *c, const char *query, int timeout_ms) {
    pthread_mutex_lock(&c->ctl_mu);
    if (!c->control) {
        pthread_mutex_unlock(&c->ctl_mu);
        return SL_EUNAVAILABLE;
    }
    sl_cql_frame f;
    int rc = cql_conn_send(c->control, query, timeout_ms, &f);
    if (rc == 0) {
        sl_cql_error err;
        uint8_t *eb = NULL;
        sl_cql_res *res = NULL;
        rc = cql_decode_frame(&f, &res, &err, &eb);
        if (rc == 1) {
            rc = map_error(c, &(rq){.opcode = SL_CQL_OP_QUERY, .query = query}, 0, &err);
            free(eb);
        }
        sl_cql_res_free(res);
    } else if (rc == SL_ETIMEOUT || rc == SL_EIO) {
        rc = SL_EUNKNOWN;
    }
    pthread_mutex_unlock(&c->ctl_mu);
    if (rc == 0 && sl_cql_wait_schema_agreement(c, timeout_ms) != 0) rc = SL_ETIMEOUT;
    return rc;
}

int sl_cql_wait_schema_agreement(sl_cql_client *c, int timeout_ms) {
    int64_t end = sl_mono_ms() + timeout_ms;
    for (;;) {
        int agreed = 0;
        pthread_mutex_lock(&c->ctl_mu);
        sl_cql_res *a = NULL, *b = NULL;
        if (c->control &&
            cql_conn_query(c->control, "SELECT schema_version FROM system.local WHERE key='local'",
                           c->cfg.request_timeout_ms, &a) == 0 &&
            cql_conn_query(c->control, "SELECT peer, rpc_address, schema_version FROM system.peers",
                           c->cfg.request_timeout_ms, &b) == 0) {
            sl_cql_rd ra = a->r.rows, rb = b->r.rows;
            sl_cql_bytes va, peer, addr, vb;
            agreed = a->r.nrows == 1 && sl_cql_rows_next(&ra, &va) == 1 && b->r.meta.ncols == 3;
            /* Nodes that are down never agree; drivers leave them out too. */
            for (int32_t i = 0; agreed && i < b->r.nrows; i++) {
                if (sl_cql_rows_next(&rb, &peer) != 1 || sl_cql_rows_next(&rb, &addr) != 1 ||
                    sl_cql_rows_next(&rb, &vb) != 1) {
                    agreed = 0;
                    break;
                }
                char host[64];
                cql_inet_str(addr, host, sizeof host);
                if (!host[0] || strcmp(host, "0.0.0.0") == 0) cql_inet_str(peer, host, sizeof host);
                pthread_mutex_lock(&c->mu);
                int ni = cql_find_node(c, host), up = ni >= 0 && c->nodes[ni].up && !c->nodes[ni].removed;
                pthread_mutex_unlock(&c->mu);
                if (up && (vb.len != va.len || (vb.len > 0 && memcmp(vb.p, va.p, (size_t)vb.len) != 0)))
                    agreed = 0;
            }
        }
        sl_cql_res_free(a);
        sl_cql_res_free(b);
        pthread_mutex_unlock(&c->ctl_mu);
        if (agreed) return 0;
        if (sl_mono_ms() >= end) return SL_ETIMEOUT;
        usleep(200 * 1000);
    }
}
