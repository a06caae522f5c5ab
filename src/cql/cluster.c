/* cluster.c: the CQL client's cluster layer (client.h): its life (open,
 * close, introspection), write timestamps and result decoding. Its parts:
 * topology.c (nodes, the ring, the control connection), pool.c (pools and
 * the maintenance thread), plan.c (routing), request.c (the prepared-
 * statement cache, execution, retries, error mapping).
 *
 * Nodes come from the contact points and from system.local/system.peers,
 * read over a control connection that also REGISTERs for topology and
 * status events. Each node has a pool of cfg.pool_size connections. One
 * maintenance thread replaces dead connections, reconnects down nodes with
 * exponential backoff, reopens the control connection and refreshes the
 * topology when an event asks for it; request threads never connect.
 *
 * Routing. A prepared statement's partition key indexes (protocol v4) and its
 * bound values give the routing key, hashed with Cassandra's Murmur3 (the
 * token module) and looked up in the ring built from every node's tokens:
 * the replicas of the token, computed from the keyspace's replication
 * (system_schema.keyspaces: SimpleStrategy walks the ring for RF distinct
 * nodes, NetworkTopologyStrategy for RF distinct nodes of each DC; racks are
 * not considered), are tried first when they are up and in the local DC,
 * starting at a rotating one to spread the load; then the other local nodes
 * round-robin; remote DCs only when no local node is up. For a keyspace whose
 * replication is unknown (LocalStrategy, or not read yet) only the token's
 * owner counts as a replica.
 *
 * Retries. A request that was never sent (no connection, every stream busy,
 * the connection failed before its last byte was written) moves to the next
 * node whatever it is. After it may have executed (a timeout, a connection
 * failure after sending, Overloaded, IsBootstrapping), it moves on only when
 * it is idempotent (a read, or a write flagged SL_CQL_IDEMPOTENT), and at most
 * once after a timeout, so a call takes at most about two request timeouts.
 * CAS and other writes never retry: their unknown outcome is reported as
 * SL_EUNKNOWN. */

#include "cluster_int.h"


/* Write timestamps, in microseconds since the epoch, made here rather than
 * by the coordinator (protocol v3+'s default timestamp): a write keeps the
 * one it got at its first attempt through every retry, so a first attempt
 * that lands late, after writes made after it, loses to them by
 * last-write-wins instead of undoing them (store.h, "Timestamps").
 *
 * They are the wall clock's milliseconds times 1000, made unique by
 * counting up, which is how Cassandra stamps writes and Paxos ballots
 * itself (and the Java driver's generator): stamps with real microseconds
 * run up to a millisecond ahead of a compare-and-set made just after on the
 * same clock, and won over it (seen here: 57 of 500 acks of a message just
 * leased failed, its lease undone by the put before it). Strictly
 * increasing in this process. */
static int64_t last_ts;

int64_t sl_cql_next_timestamp(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = ((int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000) * 1000;
    int64_t prev = __atomic_load_n(&last_ts, __ATOMIC_RELAXED), next;
    do {
        next = now > prev ? now : prev + 1;
    } while (!__atomic_compare_exchange_n(&last_ts, &prev, next, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return next;
}

uint16_t sl_cql_consistency_parse(const char *s) {
    static const struct {
        const char *name;
        uint16_t cl;
    } t[] = {{"ANY", SL_CQL_ANY},
             {"ONE", SL_CQL_ONE},
             {"TWO", SL_CQL_TWO},
             {"THREE", SL_CQL_THREE},
             {"QUORUM", SL_CQL_QUORUM},
             {"ALL", SL_CQL_ALL},
             {"LOCAL_QUORUM", SL_CQL_LOCAL_QUORUM},
             {"EACH_QUORUM", SL_CQL_EACH_QUORUM},
             {"SERIAL", SL_CQL_SERIAL},
             {"LOCAL_SERIAL", SL_CQL_LOCAL_SERIAL},
             {"LOCAL_ONE", SL_CQL_LOCAL_ONE}};
    for (size_t i = 0; s && i < sizeof t / sizeof t[0]; i++)
        if (strcasecmp(s, t[i].name) == 0) return t[i].cl ? t[i].cl : 0xFFFF;
    return 0;
}

int64_t sl_cql_cell_i64(sl_cql_bytes b) {
    int64_t v = 0;
    if (b.len <= 0 || b.len > 8) return 0;
    for (int i = 0; i < b.len; i++)
        v = (int64_t)((uint64_t)v << 8 | b.p[i]);
    if (b.len < 8 && (b.p[0] & 0x80)) v -= (int64_t)1 << (8 * b.len); /* sign-extend int, smallint */
    return v;
}

void sl_cql_res_free(sl_cql_res *r) {
    if (!r) return;
    free(r->body);
    free(r->arena);
    free(r);
}

/* Decodes a response frame into a result the caller owns (takes f->body).
 * On an ERROR frame returns 1 with *err filled (views into *errbody, which
 * the caller frees). */
int cql_decode_frame(sl_cql_frame *f, sl_cql_res **out, sl_cql_error *err, uint8_t **errbody) {
    size_t acap = 8192;
    for (;;) {
        uint8_t *arena = malloc(acap);
        if (!arena) {
            free(f->body);
            return SL_ENOMEM;
        }
        sl_cql_arena a = {arena, acap, 0};
        sl_cql_response resp;
        int rc = sl_cql_response_decode(&f->h, f->body, f->len, &a, &resp);
        if (rc == SL_ENOMEM && acap < (64u << 20)) {
            free(arena);
            acap *= 4;
            continue;
        }
        if (rc) {
            free(arena);
            free(f->body);
            sl_log(SL_ERR, "cql: undecodable %s frame (%s)", sl_cql_opcode_name(f->h.opcode),
                   sl_strerror(rc));
            return SL_EINTERNAL;
        }
        if (f->h.opcode == SL_CQL_OP_ERROR) {
            free(arena);
            *err = resp.error;
            *errbody = f->body;
            return 1;
        }
        if (f->h.opcode != SL_CQL_OP_RESULT) {
            free(arena);
            free(f->body);
            return SL_EINTERNAL;
        }
        sl_cql_res *r = calloc(1, sizeof *r);
        if (!r) {
            free(arena);
            free(f->body);
            return SL_ENOMEM;
        }
        r->r = resp.result;
        r->body = f->body;
        r->arena = arena;
        r->version = f->h.version;
        *out = r;
        return 0;
    }
}

/* --- Introspection ------------------------------------------------------- */

int sl_cql_client_protocol(sl_cql_client *c) {
    pthread_mutex_lock(&c->mu);
    int v = c->version;
    pthread_mutex_unlock(&c->mu);
    return v;
}

void sl_cql_client_nodes(sl_cql_client *c, int *known, int *up) {
    pthread_mutex_lock(&c->mu);
    *known = *up = 0;
    for (int i = 0; i < c->nnodes; i++) {
        if (c->nodes[i].removed) continue;
        (*known)++;
        *up += c->nodes[i].up;
    }
    pthread_mutex_unlock(&c->mu);
}

void sl_cql_metrics(sl_cql_client *c, sl_text *t) {
    static const struct {
        const char *name, *type, *help;
        size_t off; /* in node_stats; SIZE_MAX: up; SIZE_MAX - 1: connections; SIZE_MAX - 2: in flight */
    } fam[] = {
        {"sluice_cql_requests_total", "counter", "CQL requests sent to the node, retries included.",
         offsetof(node_stats, requests)},
        {"sluice_cql_errors_total", "counter", "CQL requests the node answered with an error or not at all.",
         offsetof(node_stats, errors)},
        {"sluice_cql_timeouts_total", "counter", "CQL requests to the node that timed out.",
         offsetof(node_stats, timeouts)},
        {"sluice_cql_retries_total", "counter", "CQL requests sent to the node after another node's attempt.",
         offsetof(node_stats, retries)},
        {"sluice_cql_connects_total", "counter", "Connections opened to the node (reconnections included).",
         offsetof(node_stats, connects)},
        {"sluice_cql_node_up", "gauge", "1 while the client holds a live connection to the node.", SIZE_MAX},
        {"sluice_cql_connections", "gauge", "The node's pooled connections.", SIZE_MAX - 1},
        {"sluice_cql_requests_in_flight", "gauge",
         "CQL requests sent to the node and not answered yet (timed-out ones included until they are).",
         SIZE_MAX - 2},
    };
    pthread_mutex_lock(&c->mu);
    for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        sl_metric_head(t, fam[f].name, fam[f].type, fam[f].help);
        for (int i = 0; i < c->nnodes; i++) {
            const node *n = &c->nodes[i];
            if (n->removed) continue;
            unsigned long long v;
            if (fam[f].off == SIZE_MAX) {
                v = (unsigned long long)n->up;
            } else if (fam[f].off == SIZE_MAX - 1) {
                v = 0;
                for (int k = 0; k < MAX_POOL; k++)
                    v += n->pool[k] && !n->pool[k]->retired;
            } else if (fam[f].off == SIZE_MAX - 2) {
                v = 0;
                for (int k = 0; k < MAX_POOL; k++)
                    if (n->pool[k]) v += (unsigned long long)sl_cql_conn_inflight(n->pool[k]->c);
            } else {
                v = sl_counted((const uint64_t *)((const char *)n->st + fam[f].off));
            }
            sl_text_printf(t, "%s{node=\"%s:%d\",dc=\"%s\"} %llu\n", fam[f].name, n->host, n->port, n->dc, v);
        }
    }
    pthread_mutex_unlock(&c->mu);
}

uint16_t sl_cql_client_serial(sl_cql_client *c) {
    return c->cfg.serial_consistency;
}

void sl_cql_stmt_forget(sl_cql_stmt *st) {
    memset(st->id, 0xAB, sizeof st->id);
    st->idlen = 16;
}

uint64_t sl_cql_prepare_count(sl_cql_client *c) {
    pthread_mutex_lock(&c->mu);
    uint64_t n = c->prepares;
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* --- Open and close ------------------------------------------------------ */

static int make_ssl(sl_cql_client *c) {
    c->ssl = SSL_CTX_new(TLS_client_method());
    if (!c->ssl) return SL_ENOMEM;
    SSL_CTX_set_min_proto_version(c->ssl, TLS1_2_VERSION);
    if (c->cfg.ssl_ca_file && *c->cfg.ssl_ca_file) {
        if (SSL_CTX_load_verify_locations(c->ssl, c->cfg.ssl_ca_file, NULL) != 1) {
            sl_log(SL_ERR, "cql: cannot load the CA file %s", c->cfg.ssl_ca_file);
            return SL_EINVAL;
        }
        SSL_CTX_set_verify(c->ssl, SSL_VERIFY_PEER, NULL);
    } else {
        sl_log(SL_INFO, "cql: TLS without SSL_CA_FILE: the server's certificate is not verified");
        SSL_CTX_set_verify(c->ssl, SSL_VERIFY_NONE, NULL);
    }
    if (c->cfg.ssl_cert_file && *c->cfg.ssl_cert_file) {
        if (SSL_CTX_use_certificate_chain_file(c->ssl, c->cfg.ssl_cert_file) != 1 ||
            SSL_CTX_use_PrivateKey_file(c->ssl,
                                        c->cfg.ssl_key_file ? c->cfg.ssl_key_file : c->cfg.ssl_cert_file,
                                        SSL_FILETYPE_PEM) != 1) {
            sl_log(SL_ERR, "cql: cannot load the client certificate %s", c->cfg.ssl_cert_file);
            return SL_EINVAL;
        }
    }
    return 0;
}

static const char *dupstr(sl_cql_client *c, int slot, const char *s) {
    if (!s) return NULL;
    c->strs[slot] = strdup(s);
    return c->strs[slot];
}

int sl_cql_client_open(const sl_cql_config *cfg, sl_cql_client **out) {
    if (!cfg || !cfg->contact_points || !*cfg->contact_points) return SL_EINVAL;
    sl_cql_client *c = calloc(1, sizeof *c);
    if (!c) return SL_ENOMEM;
    c->cfg = *cfg;
    c->cfg.contact_points = dupstr(c, 0, cfg->contact_points);
    c->cfg.keyspace = dupstr(c, 1, cfg->keyspace);
    c->cfg.username = dupstr(c, 2, cfg->username);
    c->cfg.password = dupstr(c, 3, cfg->password);
    c->cfg.ssl_ca_file = dupstr(c, 4, cfg->ssl_ca_file);
    c->cfg.data_center = dupstr(c, 5, cfg->data_center);
    c->cfg.cluster_name = dupstr(c, 6, cfg->cluster_name);
    c->cfg.ssl_cert_file = dupstr(c, 7, cfg->ssl_cert_file);
    c->cfg.ssl_key_file = dupstr(c, 8, cfg->ssl_key_file);
    if (!c->cfg.port) c->cfg.port = 9042;
    if (!c->cfg.consistency) c->cfg.consistency = SL_CQL_LOCAL_QUORUM;
    if (!c->cfg.serial_consistency) c->cfg.serial_consistency = SL_CQL_LOCAL_SERIAL;
    if (c->cfg.consistency == 0xFFFF) c->cfg.consistency = SL_CQL_ANY;
    if (c->cfg.request_timeout_ms <= 0) c->cfg.request_timeout_ms = 5000;
    if (c->cfg.connect_timeout_ms <= 0) c->cfg.connect_timeout_ms = 5000;
    if (c->cfg.pool_size <= 0) c->cfg.pool_size = 2;
    if (c->cfg.pool_size > MAX_POOL) c->cfg.pool_size = MAX_POOL;
    if (c->cfg.reconnect_min_ms <= 0) c->cfg.reconnect_min_ms = 200;
    if (c->cfg.reconnect_max_ms <= 0) c->cfg.reconnect_max_ms = 10000;
    if (c->cfg.data_center) snprintf(c->local_dc, sizeof c->local_dc, "%s", c->cfg.data_center);
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->ctl_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->maint_cv, &ca);
    pthread_condattr_destroy(&ca);
    int rc = 0;
    if (!c->cfg.contact_points) rc = SL_ENOMEM;
    if (rc == 0 && c->cfg.use_ssl) rc = make_ssl(c);

    /* The first contact point that answers becomes the control connection. */
    char *list = rc ? NULL : strdup(c->cfg.contact_points), *save = NULL;
    if (!rc && !list) rc = SL_ENOMEM;
    int first_err = 0;
    for (char *tok = list ? strtok_r(list, ", ", &save) : NULL; tok && !c->control;
         tok = strtok_r(NULL, ", ", &save)) {
        char host[64];
        snprintf(host, sizeof host, "%s", tok);
        int port = c->cfg.port;
        char *colon = strrchr(host, ':');
        if (colon && strchr(host, ':') == colon) { /* host:port, not IPv6 */
            *colon = '\0';
            port = atoi(colon + 1);
        }
        int e = cql_open_conn(c, host, port, 1, &c->control);
        if (e == 0) {
            c->cfg.port = port;
            pthread_mutex_lock(&c->ctl_mu);
            e = cql_refresh_topology(c, host);
            pthread_mutex_unlock(&c->ctl_mu);
            if (e) {
                sl_cql_conn_close(c->control);
                c->control = NULL;
            }
        }
        if (e) {
            if (!first_err) first_err = e;
            sl_log(SL_ERR, "cql: contact point %s:%d: %s", host, port, sl_strerror(e));
        }
    }
    free(list);
    if (rc == 0 && !c->control) rc = first_err ? first_err : SL_EUNAVAILABLE;
    if (rc == 0) {
        c->version = sl_cql_conn_version(c->control);
        cql_maintain_pools(c); /* opens the pools now, so the first request finds them */
        int known, up;
        sl_cql_client_nodes(c, &known, &up);
        if (!up)
            rc = SL_EUNAVAILABLE;
        else
            sl_log(SL_DEBUG, "cql: connected: %d node(s), %d up, local DC '%s', protocol v%d%s%s", known, up,
                   c->local_dc, c->version, sl_cql_conn_compressed(c->control) ? ", lz4" : "",
                   c->ssl ? ", TLS" : "");
    }
    if (rc == 0) {
        if (pthread_create(&c->maint, NULL, cql_maint_main, c))
            rc = SL_ENOMEM;
        else
            c->maint_started = 1;
    }
    if (rc) {
        sl_cql_client_close(c);
        return rc;
    }
    *out = c;
    return 0;
}

void sl_cql_client_close(sl_cql_client *c) {
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    c->stopping = 1;
    pthread_cond_signal(&c->maint_cv);
    pthread_mutex_unlock(&c->mu);
    if (c->maint_started) pthread_join(c->maint, NULL);
    cql_close_graveyard(c);
    if (c->control) sl_cql_conn_close(c->control);
    for (int i = 0; i < c->nnodes; i++) {
        for (int k = 0; k < MAX_POOL; k++)
            if (c->nodes[i].pool[k]) {
                sl_cql_conn_close(c->nodes[i].pool[k]->c);
                free(c->nodes[i].pool[k]);
            }
        free(c->nodes[i].st);
    }
    for (sl_cql_stmt *s = c->stmts, *n; s; s = n) {
        n = s->next;
        free(s->query);
        free(s);
    }
    free(c->nodes);
    free(c->ring);
    free(c->repl);
    if (c->ssl) SSL_CTX_free(c->ssl);
    for (size_t i = 0; i < sizeof c->strs / sizeof c->strs[0]; i++)
        free(c->strs[i]);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->ctl_mu);
    pthread_cond_destroy(&c->maint_cv);
    free(c);
}
