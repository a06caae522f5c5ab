/* topology.c: nodes and the token ring, read from system.local and
 * system.peers over the control connection, and its events. */
#include <arpa/inet.h>

#include "cluster_int.h"

/* --- Topology ------------------------------------------------------------ */

int cql_find_node(sl_cql_client *c, const char *host) {
    for (int i = 0; i < c->nnodes; i++)
        if (strcmp(c->nodes[i].host, host) == 0) return i;
    return -1;
}

/* Adds (or revives) a node; returns its index or -1. Called with mu held. */
int cql_add_node(sl_cql_client *c, const char *host, int port, const char *dc) {
    int i = cql_find_node(c, host);
    if (i < 0) {
        node_stats *st = calloc(1, sizeof *st);
        if (!st) return -1;
        if (c->nnodes == c->capnodes) {
            int cap = c->capnodes ? c->capnodes * 2 : 8;
            node *p = realloc(c->nodes, (size_t)cap * sizeof *p);
            if (!p) {
                free(st);
                return -1;
            }
            c->nodes = p;
            c->capnodes = cap;
        }
        i = c->nnodes++;
        memset(&c->nodes[i], 0, sizeof c->nodes[i]);
        snprintf(c->nodes[i].host, sizeof c->nodes[i].host, "%s", host);
        c->nodes[i].port = port;
        c->nodes[i].st = st;
    }
    c->nodes[i].removed = 0;
    if (dc) snprintf(c->nodes[i].dc, sizeof c->nodes[i].dc, "%s", dc);
    return i;
}

void cql_inet_str(sl_cql_bytes b, char *out, size_t cap) {
    out[0] = '\0';
    if (b.len == 4)
        inet_ntop(AF_INET, b.p, out, (socklen_t)cap);
    else if (b.len == 16)
        inet_ntop(AF_INET6, b.p, out, (socklen_t)cap);
}

void cql_text_str(sl_cql_bytes b, char *out, size_t cap) {
    size_t n = b.len > 0 ? (size_t)b.len : 0;
    if (n >= cap) n = cap - 1;
    if (n) memcpy(out, b.p, n);
    out[n] = '\0';
}

int cql_ring_cmp(const void *a, const void *b) {
    int64_t x = ((const ring_ent *)a)->token, y = ((const ring_ent *)b)->token;
    return x < y ? -1 : x > y;
}

/* Appends a node's tokens (a set<text>) to a ring under construction. */
static int add_tokens(ring_ent **ring, int *n, int *cap, sl_cql_bytes set, int node) {
    if (set.len < 4) return 0;
    sl_cql_rd r = sl_cql_rd_make(set.p, (size_t)set.len);
    int32_t cnt;
    if (sl_cql_rd_int(&r, &cnt) || cnt < 0) return SL_EINVAL;
    for (int32_t i = 0; i < cnt; i++) {
        sl_cql_bytes t;
        if (sl_cql_rd_bytes(&r, &t) || t.len <= 0 || t.len > 24) return SL_EINVAL;
        char buf[32];
        cql_text_str(t, buf, sizeof buf);
        if (*n == *cap) {
            int nc = *cap ? *cap * 2 : 256;
            ring_ent *p = realloc(*ring, (size_t)nc * sizeof *p);
            if (!p) return SL_ENOMEM;
            *ring = p;
            *cap = nc;
        }
        (*ring)[(*n)++] = (ring_ent){strtoll(buf, NULL, 10), node};
    }
    return 0;
}

/* A simple query on one connection, decoded. */
/* Sends a simple statement (at ONE, no values) on one connection and waits
 * for the answer frame. */
int cql_conn_send(sl_cql_conn *cn, const char *q, int timeout_ms, sl_cql_frame *f) {
    size_t cap = strlen(q) + 64;
    uint8_t *buf = malloc(cap);
    if (!buf) return SL_ENOMEM;
    sl_cql_wr w = sl_cql_wr_make(buf, cap);
    sl_cql_qparams qp = sl_cql_qparams_make(SL_CQL_ONE);
    sl_cql_query_encode(&w, q, strlen(q), &qp);
    int rc = sl_cql_wr_ok(&w) ? sl_cql_conn_request(cn, SL_CQL_OP_QUERY, buf, w.len, timeout_ms, f, NULL)
                              : SL_EINTERNAL;
    free(buf);
    return rc;
}

int cql_conn_query(sl_cql_conn *cn, const char *q, int timeout_ms, sl_cql_res **out) {
    sl_cql_frame f;
    int rc = cql_conn_send(cn, q, timeout_ms, &f);
    if (rc) return rc;
    sl_cql_error err;
    uint8_t *eb = NULL;
    rc = cql_decode_frame(&f, out, &err, &eb);
    if (rc == 1) {
        sl_log(SL_ERR, "cql: %s: %.*s", q, (int)err.message.len, err.message.p);
        free(eb);
        return SL_EINTERNAL;
    }
    if (rc == 0 && (*out)->r.kind != SL_CQL_RESULT_ROWS) {
        sl_cql_res_free(*out);
        *out = NULL;
        return SL_EINTERNAL;
    }
    return rc;
}

/* Parses a map<text, text> cell of replication options into r. */
void cql_parse_replication(sl_cql_bytes cell, ks_repl *r) {
    if (cell.len < 4) return;
    sl_cql_rd rd = sl_cql_rd_make(cell.p, (size_t)cell.len);
    int32_t n;
    if (sl_cql_rd_int(&rd, &n) || n < 0) return;
    int nts = 0, simple = 0, rf = 0;
    for (int32_t i = 0; i < n; i++) {
        sl_cql_bytes k, v;
        if (sl_cql_rd_bytes(&rd, &k) || sl_cql_rd_bytes(&rd, &v) || k.len < 0 || v.len < 0) return;
        char key[64], val[128];
        cql_text_str(k, key, sizeof key);
        cql_text_str(v, val, sizeof val);
        if (strcmp(key, "class") == 0) {
            simple = strstr(val, "SimpleStrategy") != NULL;
            nts = strstr(val, "NetworkTopologyStrategy") != NULL;
        } else if (strcmp(key, "replication_factor") == 0) {
            rf = atoi(val); /* "3", or "3/1" with transient replicas */
        } else if (r->ndc < MAX_RDC) {
            snprintf(r->dcs[r->ndc].dc, sizeof r->dcs[r->ndc].dc, "%s", key);
            r->dcs[r->ndc++].rf = atoi(val);
        }
    }
    r->simple = simple;
    r->rf = simple ? rf : 0;
    if (!nts) r->ndc = 0;
}

/* Reads system.local and system.peers over the control connection and
 * rebuilds the node list and the token ring. ctl_mu is held. */
int cql_refresh_topology(sl_cql_client *c, const char *contact_host) {
    sl_cql_res *lr = NULL, *pr = NULL;
    int to = c->cfg.request_timeout_ms;
    int rc = cql_conn_query(c->control,
                            "SELECT data_center, rpc_address, tokens, cluster_name, release_version "
                            "FROM system.local WHERE key='local'",
                            to, &lr);
    if (rc == 0)
        rc = cql_conn_query(c->control, "SELECT peer, data_center, rpc_address, tokens FROM system.peers", to,
                            &pr);
    if (rc) {
        sl_cql_res_free(lr);
        return rc;
    }
    /* Replication, for replica-aware routing; without it (an old server,
     * no permission) routing falls back to the token's owner. */
    sl_cql_res *kr = NULL;
    ks_repl *repl = NULL;
    int nrepl = 0;
    if (cql_conn_query(c->control, "SELECT keyspace_name, replication FROM system_schema.keyspaces", to,
                       &kr) == 0 &&
        kr->r.meta.ncols == 2 && kr->r.nrows > 0 && (repl = calloc((size_t)kr->r.nrows, sizeof *repl))) {
        sl_cql_rd rows = kr->r.rows;
        for (int32_t i = 0; i < kr->r.nrows; i++) {
            sl_cql_bytes name, map;
            sl_cql_rows_next(&rows, &name);
            sl_cql_rows_next(&rows, &map);
            cql_text_str(name, repl[nrepl].ks, sizeof repl[nrepl].ks);
            cql_parse_replication(map, &repl[nrepl]);
            nrepl++;
        }
    }
    sl_cql_res_free(kr);
    ring_ent *ring = NULL;
    int nring = 0, capring = 0;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->nnodes; i++)
        c->nodes[i].removed = 1;
    sl_cql_rd rows = lr->r.rows;
    if (lr->r.nrows >= 1 && lr->r.meta.ncols == 5) {
        sl_cql_bytes dc, addr, toks, cname, rel;
        sl_cql_rows_next(&rows, &dc);
        sl_cql_rows_next(&rows, &addr);
        sl_cql_rows_next(&rows, &toks);
        sl_cql_rows_next(&rows, &cname);
        sl_cql_rows_next(&rows, &rel);
        char host[64], dcs[64], cn[128], rv[32];
        cql_inet_str(addr, host, sizeof host);
        if (!host[0] || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
            snprintf(host, sizeof host, "%s", contact_host);
        cql_text_str(dc, dcs, sizeof dcs);
        cql_text_str(cname, cn, sizeof cn);
        cql_text_str(rel, rv, sizeof rv);
        int ni = cql_add_node(c, host, c->cfg.port, dcs);
        if (ni >= 0) {
            c->control_node = ni;
            add_tokens(&ring, &nring, &capring, toks, ni);
        }
        if (!c->local_dc[0]) snprintf(c->local_dc, sizeof c->local_dc, "%s", dcs);
        if (c->cfg.cluster_name && *c->cfg.cluster_name && strcmp(c->cfg.cluster_name, cn) != 0)
            sl_log(SL_ERR, "cql: CLUSTER_NAME is '%s' but the cluster calls itself '%s'", c->cfg.cluster_name,
                   cn);
        sl_log(SL_DEBUG, "cql: control node %s, data center %s, Cassandra %s, cluster '%s'", host, dcs, rv,
               cn);
    }
    rows = pr->r.rows;
    for (int32_t i = 0; i < pr->r.nrows && pr->r.meta.ncols == 4; i++) {
        sl_cql_bytes peer, dc, addr, toks;
        sl_cql_rows_next(&rows, &peer);
        sl_cql_rows_next(&rows, &dc);
        sl_cql_rows_next(&rows, &addr);
        sl_cql_rows_next(&rows, &toks);
        char host[64], dcs[64];
        cql_inet_str(addr, host, sizeof host);
        if (!host[0] || strcmp(host, "0.0.0.0") == 0) cql_inet_str(peer, host, sizeof host);
        if (!host[0]) continue;
        cql_text_str(dc, dcs, sizeof dcs);
        int ni = cql_add_node(c, host, c->cfg.port, dcs);
        if (ni >= 0) add_tokens(&ring, &nring, &capring, toks, ni);
    }
    if (ring) qsort(ring, (size_t)nring, sizeof *ring, cql_ring_cmp);
    free(c->ring);
    c->ring = ring;
    c->nring = nring;
    free(c->repl);
    c->repl = repl;
    c->nrepl = nrepl;
    for (int i = 0; i < c->nnodes; i++) {
        if (!c->nodes[i].removed) continue;
        for (int k = 0; k < MAX_POOL; k++) /* the maintenance thread closes them */
            if (c->nodes[i].pool[k]) sl_cql_conn_kill(c->nodes[i].pool[k]->c);
        c->nodes[i].up = 0;
    }
    int local = 0, known = 0;
    char list[256] = "";
    for (int i = 0; i < c->nnodes; i++) {
        if (c->nodes[i].removed) continue;
        known++;
        local += strcmp(c->nodes[i].dc, c->local_dc) == 0;
        size_t l = strlen(list);
        if (l + strlen(c->nodes[i].host) + 3 < sizeof list)
            snprintf(list + l, sizeof list - l, "%s%s", l ? ", " : "", c->nodes[i].host);
    }
    if (known != c->logged_nodes) {
        sl_log(SL_INFO, "cql: %d node%s in the cluster (%s), %d in the local data center '%s'", known,
               known == 1 ? "" : "s", list, local, c->local_dc);
        c->logged_nodes = known;
    }
    if (!local) sl_log(SL_ERR, "cql: no node in the local data center '%s'; using the others", c->local_dc);
    pthread_mutex_unlock(&c->mu);
    sl_cql_res_free(lr);
    sl_cql_res_free(pr);
    return 0;
}

static void on_event(void *ctx, const sl_cql_event *ev) {
    sl_cql_client *c = ctx;
    char host[64] = "";
    if (ev->addr.family_len == 4)
        inet_ntop(AF_INET, ev->addr.addr, host, sizeof host);
    else if (ev->addr.family_len == 16)
        inet_ntop(AF_INET6, ev->addr.addr, host, sizeof host);
    int schema = ev->type.len == 13 && memcmp(ev->type.p, "SCHEMA_CHANGE", 13) == 0;
    sl_log(schema ? SL_DEBUG : SL_INFO, "cql: event %.*s %.*s %s", (int)ev->type.len, ev->type.p,
           (int)ev->change.len, ev->change.p, host);
    pthread_mutex_lock(&c->mu);
    if (ev->type.len == 15 && memcmp(ev->type.p, "TOPOLOGY_CHANGE", 15) == 0) c->refresh_needed = 1;
    if (schema && ev->schema.target.len == 8 && memcmp(ev->schema.target.p, "KEYSPACE", 8) == 0)
        c->refresh_needed = 1; /* a keyspace's replication may have changed */
    if (ev->change.len == 2 && memcmp(ev->change.p, "UP", 2) == 0) {
        int i = cql_find_node(c, host);
        if (i >= 0) c->nodes[i].next_try_ms = 0, c->nodes[i].backoff_ms = 0;
    }
    pthread_cond_signal(&c->maint_cv);
    pthread_mutex_unlock(&c->mu);
}

int cql_open_conn(sl_cql_client *c, const char *host, int port, int control, sl_cql_conn **out) {
    sl_cql_conn_opts o = {.host = host,
                          .port = port,
                          .username = c->cfg.username,
                          .password = c->cfg.password,
                          .compression = !c->cfg.no_compression,
                          .max_version = c->cfg.max_protocol,
                          .ssl = c->ssl,
                          .ssl_verify_name = c->cfg.ssl_verify_host ? host : NULL,
                          .connect_timeout_ms = c->cfg.connect_timeout_ms,
                          .on_event = control ? on_event : NULL,
                          .event_ctx = c};
    return sl_cql_conn_open(&o, out);
}
