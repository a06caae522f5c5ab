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

/* Prepares a statement on one connection and records its id. */
static int prepare_on(sl_cql_client *c, sl_cql_conn *cn, sl_cql_stmt *st, int timeout_ms) {
    rq r = {.opcode = SL_CQL_OP_PREPARE, .query = st->query};
    uint8_t *body;
    size_t len;
    int rc = encode(c, &r, &body, &len);
    if (rc) return rc;
    sl_cql_frame f;
    rc = sl_cql_conn_request(cn, SL_CQL_OP_PREPARE, body, len, timeout_ms, &f, NULL);
    free(body);
    if (rc) return rc == SL_EIO || rc == SL_EBUSY ? SL_EUNAVAILABLE : rc;
    sl_cql_res *res = NULL;
    sl_cql_error err;
    uint8_t *eb = NULL;
    rc = cql_decode_frame(&f, &res, &err, &eb);
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

/* Runs one request with routing, re-preparing and retries. */
static int run(sl_cql_client *c, rq *r, int flags, int has_token, int64_t token, int timeout_ms,
               sl_cql_res **out) {
    int plan[MAX_PLAN];
    pthread_mutex_lock(&c->mu);
    const sl_cql_stmt *rs = r->st ? r->st : r->nitems ? r->items[0].st : NULL;
    int np = cql_make_plan(c, has_token, token, rs ? rs->ks : NULL, plan);
    pthread_mutex_unlock(&c->mu);
    int idem = (flags & (SL_CQL_READ | SL_CQL_IDEMPOTENT)) != 0 || r->opcode == SL_CQL_OP_PREPARE;
    int write = is_write(r, flags);
    /* Fixed here, before the first attempt: every retry carries the same
     * timestamp (compare-and-sets take their ballot's; Cassandra ignores it
     * for them). */
    if (write && !r->qp.has_timestamp) {
        r->qp.has_timestamp = 1;
        r->qp.timestamp = sl_cql_next_timestamp();
    }
    int rc = SL_EUNAVAILABLE, timeouts = 0, maybe_applied = 0, tried = 0;
    for (int k = 0; k < np; k++) {
        pthread_mutex_lock(&c->mu);
        pconn *p = cql_pick_conn_locked(c, &c->nodes[plan[k]]);
        node_stats *ns = c->nodes[plan[k]].st;
        pthread_mutex_unlock(&c->mu);
        if (!p) continue;
        sl_count(&ns->requests, 1);
        if (tried) sl_count(&ns->retries, 1);
        tried = 1;
        int again = 0, reprepares = 0;
        for (;;) {
            uint8_t *body;
            size_t len;
            if ((rc = encode(c, r, &body, &len))) break;
            sl_cql_frame f;
            int sent = 0;
            rc = sl_cql_conn_request(p->c, r->opcode, body, len, timeout_ms, &f, &sent);
            free(body);
            if (rc == SL_EBUSY || rc == SL_EUNAVAILABLE || (rc == SL_EIO && !sent)) {
                rc = SL_EUNAVAILABLE;
                again = 1;
                break;
            }
            if (rc == SL_EIO || rc == SL_ETIMEOUT) {
                if (rc == SL_ETIMEOUT) {
                    sl_count(&ns->timeouts, 1);
                    timeouts++;
                    cql_node_outcome(c, plan[k], 1);
                }
                maybe_applied = 1;
                again = idem && timeouts <= 1;
                rc = write ? SL_EUNKNOWN : rc == SL_ETIMEOUT ? SL_ETIMEOUT : SL_EUNAVAILABLE;
                break;
            }
            if (rc) break;
            sl_cql_error err;
            uint8_t *eb = NULL;
            sl_cql_res *res = NULL;
            rc = cql_decode_frame(&f, &res, &err, &eb);
            if (rc == 0) {
                if (out)
                    *out = res;
                else
                    sl_cql_res_free(res);
                cql_node_outcome(c, plan[k], 0);
                break;
            }
            if (rc < 0) break;
            if (err.code == SL_CQL_ERR_UNPREPARED && reprepares < 3) {
                /* Which statement: the execute's, or the batch item whose id
                 * the server names. */
                sl_cql_stmt *st = r->st;
                pthread_mutex_lock(&c->mu);
                for (size_t i = 0; !st && i < r->nitems; i++) {
                    sl_cql_stmt *s = r->items[i].st;
                    if (s->idlen == err.unprepared_id.len &&
                        memcmp(s->id, err.unprepared_id.p, (size_t)s->idlen) == 0)
                        st = s;
                }
                if (!st && r->nitems) st = r->items[reprepares % r->nitems].st;
                pthread_mutex_unlock(&c->mu);
                free(eb);
                reprepares++;
                sl_log(SL_DEBUG, "cql: UNPREPARED, preparing \"%s\" again", st ? st->query : "?");
                if (st && (rc = prepare_on(c, p->c, st, timeout_ms)) == 0) continue;
                break;
            }
            rc = map_error(c, r, flags, &err);
            again = (err.code == SL_CQL_ERR_OVERLOADED || err.code == SL_CQL_ERR_IS_BOOTSTRAPPING) && idem;
            free(eb);
            break;
        }
        cql_pconn_release(c, p);
        if (rc != 0) sl_count(&ns->errors, 1);
        if (rc == 0 || !again) break;
        pthread_mutex_lock(&c->mu);
        pthread_cond_signal(&c->maint_cv); /* a connection may have died */
        pthread_mutex_unlock(&c->mu);
    }
    if (rc == SL_EUNAVAILABLE) sl_log(SL_DEBUG, "cql: no host available");
    /* A write that may have executed on an earlier node stays "unknown",
     * whatever a later attempt says, unless one succeeded. */
    if (rc != 0 && write && maybe_applied) rc = SL_EUNKNOWN;
    return rc;
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

int sl_cql_prepare(sl_cql_client *c, const char *query, sl_cql_stmt **out) {
    pthread_mutex_lock(&c->mu);
    for (sl_cql_stmt *s = c->stmts; s; s = s->next)
        if (strcmp(s->query, query) == 0) {
            *out = s;
            pthread_mutex_unlock(&c->mu);
            return 0;
        }
    pthread_mutex_unlock(&c->mu);
    sl_cql_stmt *st = calloc(1, sizeof *st);
    if (!st || !(st->query = strdup(query))) {
        free(st);
        return SL_ENOMEM;
    }
    int plan[MAX_PLAN], rc = SL_EUNAVAILABLE;
    pthread_mutex_lock(&c->mu);
    int np = cql_make_plan(c, 0, 0, NULL, plan);
    pthread_mutex_unlock(&c->mu);
    /* On every node up, as drivers do: each node keeps its own cache, and a
     * statement it has not seen costs an UNPREPARED round trip on the
     * request path (a node that restarts still does). The statement id is
     * the same everywhere, so one node that has it is enough to go on; an
     * error that is not about availability (the statement is wrong) ends
     * the attempt unless a node took it. */
    int ok = 0;
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
    if (ok) rc = 0;
    if (rc) {
        free(st->query);
        free(st);
        return rc;
    }
    pthread_mutex_lock(&c->mu);
    for (sl_cql_stmt *s = c->stmts; s; s = s->next)
        if (strcmp(s->query, query) == 0) { /* another thread won the race */
            pthread_mutex_unlock(&c->mu);
            free(st->query);
            free(st);
            *out = s;
            return 0;
        }
    st->next = c->stmts;
    c->stmts = st;
    pthread_mutex_unlock(&c->mu);
    *out = st;
    return 0;
}

int sl_cql_execute(sl_cql_client *c, sl_cql_stmt *st, const sl_cql_bytes *vals, size_t n,
                   const sl_cql_opts *o, sl_cql_res **out) {
    if (!st || n > MAX_BIND * 4) return SL_EINVAL;
    rq r = {.opcode = SL_CQL_OP_EXECUTE, .st = st, .vals = vals, .n = n};
    fill_qparams(c, o, vals, n, &r.qp);
    int64_t token = 0;
    int has = sl_cql_routing_token(st, vals, n, &token);
    return run(c, &r, o ? o->flags : 0, has, token, timeout_of(c, o), out);
}

int sl_cql_query(sl_cql_client *c, const char *query, const sl_cql_bytes *vals, size_t n,
                 const sl_cql_opts *o, sl_cql_res **out) {
    rq r = {.opcode = SL_CQL_OP_QUERY, .query = query, .vals = vals, .n = n};
    fill_qparams(c, o, vals, n, &r.qp);
    return run(c, &r, o ? o->flags : 0, 0, 0, timeout_of(c, o), out);
}

int sl_cql_batch_exec(sl_cql_client *c, uint8_t type, const sl_cql_batch_item *items, size_t n,
                      const sl_cql_opts *o, sl_cql_res **out) {
    if (!items || n == 0 || n > 65535) return SL_EINVAL;
    rq r = {.opcode = SL_CQL_OP_BATCH, .btype = type, .items = items, .nitems = n};
    fill_qparams(c, o, NULL, 0, &r.qp);
    int64_t token = 0;
    int has = sl_cql_routing_token(items[0].st, items[0].vals, items[0].n, &token);
    return run(c, &r, o ? o->flags : 0, has, token, timeout_of(c, o), out);
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
