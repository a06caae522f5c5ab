/* cluster.c: the CQL client's cluster layer (client.h): nodes, pools,
 * routing, the prepared-statement cache, retries and error mapping.
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
#include <arpa/inet.h>
#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "client.h"
#include "conn.h"
#include "token.h"

#define MAX_POOL 16
#define MAX_PLAN 16
#define MAX_ID 64
#define MAX_BIND 64
#define MAX_RDC 8

typedef struct pconn {
    sl_cql_conn *c;
    int refs;
    int retired;
} pconn;

typedef struct node {
    char host[64];
    int port;
    char dc[64];
    int up;
    int removed;
    int backoff_ms;
    int64_t next_try_ms;
    int said_down;           /* "is down" was logged; "is up again" is due */
    int64_t suspect_until;   /* a request to it timed out: plans try it last until then (mono ms) */
    int timeouts;            /* requests that timed out on it in a row */
    pconn *pool[MAX_POOL];
} node;

typedef struct {
    int64_t token;
    int node;
} ring_ent;

/* A keyspace's replication: SimpleStrategy (rf) or NetworkTopologyStrategy
 * (rf per DC); rf 0 and ndc 0 for anything else. */
typedef struct {
    char ks[64];
    int simple, rf, ndc;
    struct {
        char dc[64];
        int rf;
    } dcs[MAX_RDC];
} ks_repl;

struct sl_cql_stmt {
    char *query;
    uint8_t id[MAX_ID]; /* guarded by the client mutex */
    int idlen;
    int npk;
    uint16_t pk[MAX_BIND];
    int nbind;
    char ks[64]; /* from the bind metadata: which replication routes it */
    struct sl_cql_stmt *next;
};

struct sl_cql_client {
    sl_cql_config cfg;
    char *strs[12]; /* owned copies of cfg's strings */
    SSL_CTX *ssl;

    pthread_mutex_t mu; /* nodes, ring, pools, statements */
    node *nodes;
    int nnodes, capnodes;
    ring_ent *ring;
    int nring;
    ks_repl *repl;
    int nrepl;
    char local_dc[64];
    uint64_t rr;
    sl_cql_stmt *stmts;
    uint64_t prepares;
    int version;
    int logged_nodes; /* the node count last logged */
    int nsuspect;     /* nodes with timeouts in a row (atomic; see node_outcome) */

    pthread_mutex_t ctl_mu; /* the control connection */
    sl_cql_conn *control;
    int control_node;

    pthread_cond_t maint_cv; /* under mu */
    int refresh_needed;
    int stopping;
    pthread_t maint;
    int maint_started;
};

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
static int decode_frame(sl_cql_frame *f, sl_cql_res **out, sl_cql_error *err, uint8_t **errbody) {
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

/* --- Topology ------------------------------------------------------------ */

static int find_node(sl_cql_client *c, const char *host) {
    for (int i = 0; i < c->nnodes; i++)
        if (strcmp(c->nodes[i].host, host) == 0) return i;
    return -1;
}

/* Adds (or revives) a node; returns its index or -1. Called with mu held. */
static int add_node(sl_cql_client *c, const char *host, int port, const char *dc) {
    int i = find_node(c, host);
    if (i < 0) {
        if (c->nnodes == c->capnodes) {
            int cap = c->capnodes ? c->capnodes * 2 : 8;
            node *p = realloc(c->nodes, (size_t)cap * sizeof *p);
            if (!p) return -1;
            c->nodes = p;
            c->capnodes = cap;
        }
        i = c->nnodes++;
        memset(&c->nodes[i], 0, sizeof c->nodes[i]);
        snprintf(c->nodes[i].host, sizeof c->nodes[i].host, "%s", host);
        c->nodes[i].port = port;
    }
    c->nodes[i].removed = 0;
    if (dc) snprintf(c->nodes[i].dc, sizeof c->nodes[i].dc, "%s", dc);
    return i;
}

static void inet_str(sl_cql_bytes b, char *out, size_t cap) {
    out[0] = '\0';
    if (b.len == 4)
        inet_ntop(AF_INET, b.p, out, (socklen_t)cap);
    else if (b.len == 16)
        inet_ntop(AF_INET6, b.p, out, (socklen_t)cap);
}

static void text_str(sl_cql_bytes b, char *out, size_t cap) {
    size_t n = b.len > 0 ? (size_t)b.len : 0;
    if (n >= cap) n = cap - 1;
    if (n) memcpy(out, b.p, n);
    out[n] = '\0';
}

static int ring_cmp(const void *a, const void *b) {
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
        text_str(t, buf, sizeof buf);
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
static int conn_send(sl_cql_conn *cn, const char *q, int timeout_ms, sl_cql_frame *f) {
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

static int conn_query(sl_cql_conn *cn, const char *q, int timeout_ms, sl_cql_res **out) {
    sl_cql_frame f;
    int rc = conn_send(cn, q, timeout_ms, &f);
    if (rc) return rc;
    sl_cql_error err;
    uint8_t *eb = NULL;
    rc = decode_frame(&f, out, &err, &eb);
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
static void parse_replication(sl_cql_bytes cell, ks_repl *r) {
    if (cell.len < 4) return;
    sl_cql_rd rd = sl_cql_rd_make(cell.p, (size_t)cell.len);
    int32_t n;
    if (sl_cql_rd_int(&rd, &n) || n < 0) return;
    int nts = 0, simple = 0, rf = 0;
    for (int32_t i = 0; i < n; i++) {
        sl_cql_bytes k, v;
        if (sl_cql_rd_bytes(&rd, &k) || sl_cql_rd_bytes(&rd, &v) || k.len < 0 || v.len < 0) return;
        char key[64], val[128];
        text_str(k, key, sizeof key);
        text_str(v, val, sizeof val);
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
static int refresh_topology(sl_cql_client *c, const char *contact_host) {
    sl_cql_res *lr = NULL, *pr = NULL;
    int to = c->cfg.request_timeout_ms;
    int rc = conn_query(c->control,
                        "SELECT data_center, rpc_address, tokens, cluster_name, release_version "
                        "FROM system.local WHERE key='local'",
                        to, &lr);
    if (rc == 0)
        rc = conn_query(c->control, "SELECT peer, data_center, rpc_address, tokens FROM system.peers", to,
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
    if (conn_query(c->control, "SELECT keyspace_name, replication FROM system_schema.keyspaces", to, &kr) ==
            0 &&
        kr->r.meta.ncols == 2 && kr->r.nrows > 0 && (repl = calloc((size_t)kr->r.nrows, sizeof *repl))) {
        sl_cql_rd rows = kr->r.rows;
        for (int32_t i = 0; i < kr->r.nrows; i++) {
            sl_cql_bytes name, map;
            sl_cql_rows_next(&rows, &name);
            sl_cql_rows_next(&rows, &map);
            text_str(name, repl[nrepl].ks, sizeof repl[nrepl].ks);
            parse_replication(map, &repl[nrepl]);
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
        inet_str(addr, host, sizeof host);
        if (!host[0] || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0)
            snprintf(host, sizeof host, "%s", contact_host);
        text_str(dc, dcs, sizeof dcs);
        text_str(cname, cn, sizeof cn);
        text_str(rel, rv, sizeof rv);
        int ni = add_node(c, host, c->cfg.port, dcs);
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
        inet_str(addr, host, sizeof host);
        if (!host[0] || strcmp(host, "0.0.0.0") == 0) inet_str(peer, host, sizeof host);
        if (!host[0]) continue;
        text_str(dc, dcs, sizeof dcs);
        int ni = add_node(c, host, c->cfg.port, dcs);
        if (ni >= 0) add_tokens(&ring, &nring, &capring, toks, ni);
    }
    if (ring) qsort(ring, (size_t)nring, sizeof *ring, ring_cmp);
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
        int i = find_node(c, host);
        if (i >= 0) c->nodes[i].next_try_ms = 0, c->nodes[i].backoff_ms = 0;
    }
    pthread_cond_signal(&c->maint_cv);
    pthread_mutex_unlock(&c->mu);
}

static int open_conn(sl_cql_client *c, const char *host, int port, int control, sl_cql_conn **out) {
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

/* --- Pools --------------------------------------------------------------- */

static void pconn_release_locked(sl_cql_client *c, pconn *p, sl_cql_conn **to_close) {
    (void)c;
    *to_close = NULL;
    if (--p->refs == 0 && p->retired) {
        *to_close = p->c;
        free(p);
    }
}

static void pconn_release(sl_cql_client *c, pconn *p) {
    sl_cql_conn *cl;
    pthread_mutex_lock(&c->mu);
    pconn_release_locked(c, p, &cl);
    pthread_mutex_unlock(&c->mu);
    if (cl) sl_cql_conn_close(cl);
}

/* The live connection of a node with the fewest requests in flight, with a
 * reference taken. Called with mu held. */
static pconn *pick_conn_locked(sl_cql_client *c, node *n) {
    pconn *best = NULL;
    int bestn = 0;
    for (int k = 0; k < c->cfg.pool_size; k++) {
        pconn *p = n->pool[k];
        if (!p || p->retired || !sl_cql_conn_healthy(p->c)) continue;
        int inf = sl_cql_conn_inflight(p->c);
        if (!best || inf < bestn) best = p, bestn = inf;
    }
    if (best) best->refs++;
    return best;
}

/* One pass of the maintenance thread over the pools. */
static void maintain_pools(sl_cql_client *c) {
    int64_t now = sl_mono_ms();
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->nnodes; i++) {
        node *n = &c->nodes[i];
        int live = 0;
        for (int k = 0; k < MAX_POOL; k++) {
            pconn *p = n->pool[k];
            if (!p) continue;
            if (!n->removed && k < c->cfg.pool_size && sl_cql_conn_alive(p->c)) {
                live++;
                continue;
            }
            n->pool[k] = NULL;
            p->retired = 1;
            if (p->refs == 0) {
                sl_cql_conn *cl = p->c;
                free(p);
                pthread_mutex_unlock(&c->mu);
                sl_cql_conn_close(cl);
                pthread_mutex_lock(&c->mu);
                n = &c->nodes[i]; /* the array may have moved */
            }
        }
        if (n->removed || live >= c->cfg.pool_size || now < n->next_try_ms || c->stopping) {
            n->up = live > 0;
            continue;
        }
        char host[64];
        snprintf(host, sizeof host, "%s", n->host);
        int port = n->port;
        pthread_mutex_unlock(&c->mu);
        sl_cql_conn *cn = NULL;
        int rc = open_conn(c, host, port, 0, &cn);
        pthread_mutex_lock(&c->mu);
        n = &c->nodes[i];
        if (rc == 0) {
            pconn *p = calloc(1, sizeof *p);
            int placed = 0;
            for (int k = 0; p && k < c->cfg.pool_size && !placed; k++)
                if (!n->pool[k]) n->pool[k] = p, placed = 1;
            if (placed) {
                p->c = cn;
                if (!c->version) c->version = sl_cql_conn_version(cn);
                if (n->said_down) sl_log(SL_INFO, "cql: node %s is up again", n->host);
                n->said_down = 0;
                n->up = 1;
                n->backoff_ms = 0;
                n->next_try_ms = 0;
                i--; /* fill the rest of this node's pool */
            } else {
                free(p);
                pthread_mutex_unlock(&c->mu);
                sl_cql_conn_close(cn);
                pthread_mutex_lock(&c->mu);
            }
        } else {
            int min = c->cfg.reconnect_min_ms, max = c->cfg.reconnect_max_ms;
            n->backoff_ms = n->backoff_ms ? n->backoff_ms * 2 : min;
            if (n->backoff_ms > max) n->backoff_ms = max;
            n->next_try_ms = sl_mono_ms() + n->backoff_ms;
            if (live == 0) {
                if (!n->said_down)
                    sl_log(SL_ERR, "cql: node %s:%d is down (%s); retrying in %d ms", host, port,
                           sl_strerror(rc), n->backoff_ms);
                n->said_down = 1;
                n->up = 0;
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
}

/* Reopens the control connection on any node that is up, and refreshes
 * the topology when it was reopened or an event asked for it. */
static void maintain_control(sl_cql_client *c) {
    pthread_mutex_lock(&c->ctl_mu);
    int reopened = 0;
    if (c->control && !sl_cql_conn_alive(c->control)) {
        sl_cql_conn_close(c->control);
        c->control = NULL;
    }
    if (!c->control) {
        pthread_mutex_lock(&c->mu);
        int n = c->nnodes;
        pthread_mutex_unlock(&c->mu);
        for (int i = 0; i < n && !c->control; i++) {
            char host[64];
            int port, up;
            pthread_mutex_lock(&c->mu);
            snprintf(host, sizeof host, "%s", c->nodes[i].host);
            port = c->nodes[i].port;
            up = c->nodes[i].up && !c->nodes[i].removed;
            pthread_mutex_unlock(&c->mu);
            if (up && open_conn(c, host, port, 1, &c->control) == 0) reopened = 1;
        }
    }
    pthread_mutex_lock(&c->mu);
    int refresh = c->refresh_needed || reopened;
    c->refresh_needed = 0;
    char host[64];
    snprintf(host, sizeof host, "%s", c->control_node < c->nnodes ? c->nodes[c->control_node].host : "");
    pthread_mutex_unlock(&c->mu);
    if (refresh && c->control && refresh_topology(c, host) != 0) {
        pthread_mutex_lock(&c->mu);
        c->refresh_needed = 1;
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&c->ctl_mu);
}

static void *maint_main(void *arg) {
    sl_cql_client *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        if (c->stopping) {
            pthread_mutex_unlock(&c->mu);
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&c->maint_cv, &c->mu, &ts);
        int stop = c->stopping;
        pthread_mutex_unlock(&c->mu);
        if (stop) break;
        maintain_pools(c);
        maintain_control(c);
    }
    return NULL;
}

/* --- Planning ------------------------------------------------------------ */

/* The index of the first ring entry whose token is >= t (wrapping). */
static int ring_find(const sl_cql_client *c, int64_t token) {
    int lo = 0, hi = c->nring;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (c->ring[mid].token < token)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == c->nring ? 0 : lo;
}

/* The replicas of a token in keyspace ks, in ring order from its owner.
 * Called with mu held. */
static int replicas(const sl_cql_client *c, const char *ks, int64_t token, int *out, int max) {
    if (c->nring == 0) return 0;
    int start = ring_find(c, token), n = 0;
    const ks_repl *r = NULL;
    for (int i = 0; ks && ks[0] && i < c->nrepl && !r; i++)
        if (strcmp(c->repl[i].ks, ks) == 0) r = &c->repl[i];
    int want = r && r->simple ? r->rf : 0, need = 0, have[MAX_RDC] = {0};
    for (int d = 0; r && d < r->ndc; d++)
        need += r->dcs[d].rf;
    if (!r || (!want && !need)) { /* unknown replication: the owner alone */
        out[0] = c->ring[start].node;
        return 1;
    }
    for (int k = 0; k < c->nring && n < max; k++) {
        int ni = c->ring[(start + k) % c->nring].node, dup = 0;
        for (int j = 0; j < n; j++)
            dup |= out[j] == ni;
        if (dup) continue;
        if (want) {
            out[n++] = ni;
            if (n == want) break;
            continue;
        }
        for (int d = 0; d < r->ndc; d++)
            if (strcmp(c->nodes[ni].dc, r->dcs[d].dc) == 0 && have[d] < r->dcs[d].rf) {
                have[d]++;
                out[n++] = ni;
                need--;
                break;
            }
        if (need == 0) break;
    }
    return n;
}

static int usable(const node *n, const char *local_dc, int local) {
    return n->up && !n->removed && (strcmp(n->dc, local_dc) == 0) == local;
}

/* Fills plan[] with node indexes to try, best first: the token's replicas
 * in the local DC (from a rotating start), the other local nodes
 * round-robin, then, only when no local node is up, the remote ones. Called
 * with mu held. */
static int make_plan(sl_cql_client *c, int has_token, int64_t token, const char *ks, int *plan) {
    int np = 0;
    uint64_t rot = c->rr++; /* one rotation per plan spreads the load */
    if (has_token) {
        int reps[MAX_PLAN], nr = replicas(c, ks, token, reps, MAX_PLAN), local[MAX_PLAN], nl = 0;
        for (int i = 0; i < nr; i++)
            if (usable(&c->nodes[reps[i]], c->local_dc, 1)) local[nl++] = reps[i];
        for (int i = 0; i < nl; i++)
            plan[np++] = local[(rot + (uint64_t)i) % (uint64_t)nl];
    }
    for (int pass = 0; pass < 2 && np < MAX_PLAN; pass++) {
        if (pass == 1 && np > 0) break; /* remote DCs only when no local node is up */
        for (int k = 0; k < c->nnodes && np < MAX_PLAN; k++) {
            int i = (int)((rot + (uint64_t)k) % (uint64_t)c->nnodes);
            if (!usable(&c->nodes[i], c->local_dc, pass == 0)) continue;
            int dup = 0;
            for (int j = 0; j < np; j++)
                dup |= plan[j] == i;
            if (!dup) plan[np++] = i;
        }
    }
    /* A node whose last request timed out goes last, replica or not: a
     * frozen or overloaded node keeps its connections open, so nothing
     * else tells the pools to avoid it, and every request sent to it would
     * wait out the timeout. It keeps its place in the order otherwise, and
     * a request that succeeds on it clears the mark. */
    int64_t now = sl_mono_ms();
    int fast[MAX_PLAN], slow[MAX_PLAN], nf = 0, ns = 0;
    for (int j = 0; j < np; j++) {
        if (c->nodes[plan[j]].suspect_until > now)
            slow[ns++] = plan[j];
        else
            fast[nf++] = plan[j];
    }
    if (ns > 0 && nf > 0) {
        memcpy(plan, fast, (size_t)nf * sizeof *plan);
        memcpy(plan + nf, slow, (size_t)ns * sizeof *plan);
    }
    return np;
}

/* What a request to node i found out about it: a timeout marks it suspect
 * for a while, longer after each one in a row (up to SUSPECT_MAX_MS); an
 * answer clears that. Timeouts of requests that were all in flight when
 * the node stopped answering are one event, not one each: only a timeout
 * after the window ran out (the node was tried again and still did not
 * answer) lengthens it. Otherwise a node frozen under load would be
 * shunned for the longest window at once, long after it answers again. */
#define SUSPECT_MS 2000
#define SUSPECT_MAX_MS 30000
static void node_outcome(sl_cql_client *c, int i, int timed_out) {
    /* Every answer comes here: while no node is suspect (nearly always),
     * it costs one atomic read, not the client's lock. */
    if (!timed_out && __atomic_load_n(&c->nsuspect, __ATOMIC_ACQUIRE) == 0) return;
    pthread_mutex_lock(&c->mu); /* the node array may move: read it under the lock */
    node *n = &c->nodes[i];
    int64_t now = sl_mono_ms();
    if (timed_out && (n->timeouts == 0 || now >= n->suspect_until)) {
        int64_t ms = (int64_t)SUSPECT_MS << (n->timeouts < 4 ? n->timeouts : 4);
        if (ms > SUSPECT_MAX_MS) ms = SUSPECT_MAX_MS;
        if (n->timeouts++ == 0) {
            __atomic_add_fetch(&c->nsuspect, 1, __ATOMIC_RELEASE);
            sl_log(SL_INFO, "cql: node %s timed out; trying the others first", n->host);
        }
        n->suspect_until = now + ms;
    } else if (!timed_out && n->timeouts) {
        sl_log(SL_INFO, "cql: node %s answers again", n->host);
        __atomic_sub_fetch(&c->nsuspect, 1, __ATOMIC_RELEASE);
        n->timeouts = 0;
        n->suspect_until = 0;
    }
    pthread_mutex_unlock(&c->mu);
}

int sl_cql_routing_token(sl_cql_stmt *st, const sl_cql_bytes *vals, size_t n, int64_t *token) {
    if (!st || st->npk <= 0) return 0;
    sl_cql_bytes parts[MAX_BIND];
    for (int i = 0; i < st->npk; i++) {
        if (st->pk[i] >= n || vals[st->pk[i]].len < 0) return 0;
        parts[i] = vals[st->pk[i]];
    }
    if (st->npk == 1) {
        *token = sl_cql_token(parts[0].p, (size_t)parts[0].len);
        return 1;
    }
    uint8_t buf[1024];
    long need = sl_cql_token_composite(parts, (size_t)st->npk, buf, sizeof buf);
    if (need < 0) return 0;
    if ((size_t)need <= sizeof buf) {
        *token = sl_cql_token(buf, (size_t)need);
        return 1;
    }
    uint8_t *big = malloc((size_t)need);
    if (!big) return 0;
    sl_cql_token_composite(parts, (size_t)st->npk, big, (size_t)need);
    *token = sl_cql_token(big, (size_t)need);
    free(big);
    return 1;
}

int sl_cql_token_owner(sl_cql_client *c, int64_t token, char *buf, size_t cap) {
    pthread_mutex_lock(&c->mu);
    int rc = SL_ENOTFOUND;
    if (c->nring > 0) {
        snprintf(buf, cap, "%s", c->nodes[c->ring[ring_find(c, token)].node].host);
        rc = 0;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

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
    rc = decode_frame(&f, &res, &err, &eb);
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
        text_str((sl_cql_bytes){(const uint8_t *)res->r.bind.cols[0].keyspace.p,
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
    int np = make_plan(c, has_token, token, rs ? rs->ks : NULL, plan);
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
    int rc = SL_EUNAVAILABLE, timeouts = 0, maybe_applied = 0;
    for (int k = 0; k < np; k++) {
        pthread_mutex_lock(&c->mu);
        pconn *p = pick_conn_locked(c, &c->nodes[plan[k]]);
        pthread_mutex_unlock(&c->mu);
        if (!p) continue;
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
                    timeouts++;
                    node_outcome(c, plan[k], 1);
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
            rc = decode_frame(&f, &res, &err, &eb);
            if (rc == 0) {
                if (out)
                    *out = res;
                else
                    sl_cql_res_free(res);
                node_outcome(c, plan[k], 0);
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
        pconn_release(c, p);
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
    int np = make_plan(c, 0, 0, NULL, plan);
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
        pconn *p = pick_conn_locked(c, &c->nodes[plan[k]]);
        pthread_mutex_unlock(&c->mu);
        if (!p) continue;
        int prc = prepare_on(c, p->c, st, c->cfg.request_timeout_ms);
        pconn_release(c, p);
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
    int rc = conn_send(c->control, query, timeout_ms, &f);
    if (rc == 0) {
        sl_cql_error err;
        uint8_t *eb = NULL;
        sl_cql_res *res = NULL;
        rc = decode_frame(&f, &res, &err, &eb);
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
            conn_query(c->control, "SELECT schema_version FROM system.local WHERE key='local'",
                       c->cfg.request_timeout_ms, &a) == 0 &&
            conn_query(c->control, "SELECT peer, rpc_address, schema_version FROM system.peers",
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
                inet_str(addr, host, sizeof host);
                if (!host[0] || strcmp(host, "0.0.0.0") == 0) inet_str(peer, host, sizeof host);
                pthread_mutex_lock(&c->mu);
                int ni = find_node(c, host), up = ni >= 0 && c->nodes[ni].up && !c->nodes[ni].removed;
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
        int e = open_conn(c, host, port, 1, &c->control);
        if (e == 0) {
            c->cfg.port = port;
            pthread_mutex_lock(&c->ctl_mu);
            e = refresh_topology(c, host);
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
        maintain_pools(c); /* opens the pools now, so the first request finds them */
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
        if (pthread_create(&c->maint, NULL, maint_main, c))
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
    if (c->control) sl_cql_conn_close(c->control);
    for (int i = 0; i < c->nnodes; i++)
        for (int k = 0; k < MAX_POOL; k++)
            if (c->nodes[i].pool[k]) {
                sl_cql_conn_close(c->nodes[i].pool[k]->c);
                free(c->nodes[i].pool[k]);
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
