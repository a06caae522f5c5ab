/* cluster_int.h: what the files of the CQL client's cluster layer share
 * (cluster.c, topology.c, pool.c, plan.c, request.c): the client and its
 * nodes, and the functions they call across files. Not for other modules. */
#ifndef SL_CQL_CLUSTER_INT_H
#define SL_CQL_CLUSTER_INT_H

#include <pthread.h>
#include <stdint.h>
#include <openssl/ssl.h>

#include "../util/metrics.h"
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
    struct pconn *next; /* in the graveyard */
} pconn;

/* A node's figures for GET /metrics, apart from the node array (which may
 * move), so that a request counts without the client's lock (atomic adds). */
typedef struct node_stats {
    uint64_t requests; /* sent, retries included */
    uint64_t errors;   /* answered with an error or not at all (timeouts included) */
    uint64_t timeouts;
    uint64_t retries;  /* requests sent here after another node's attempt */
    uint64_t connects; /* connections opened (the first ones and reconnections) */
} node_stats;

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
    node_stats *st; /* never NULL once added; freed with the client */
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
    pconn *graveyard; /* retired connections no request uses, to close */
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

/* --- Between the files of the cluster layer -------------------------------- */

/* cluster.c */
int cql_decode_frame(sl_cql_frame *f, sl_cql_res **out, sl_cql_error *err, uint8_t **errbody);

/* topology.c */
int cql_ring_cmp(const void *a, const void *b);
int cql_add_node(sl_cql_client *c, const char *host, int port, const char *dc);
void cql_parse_replication(sl_cql_bytes cell, ks_repl *r);
void cql_text_str(sl_cql_bytes b, char *out, size_t cap);
int cql_refresh_topology(sl_cql_client *c, const char *contact_host);
int cql_open_conn(sl_cql_client *c, const char *host, int port, int control, sl_cql_conn **out);
void cql_inet_str(sl_cql_bytes b, char *out, size_t cap);
int cql_find_node(sl_cql_client *c, const char *host);
int cql_conn_send(sl_cql_conn *cn, const char *q, int timeout_ms, sl_cql_frame *f);
int cql_conn_query(sl_cql_conn *cn, const char *q, int timeout_ms, sl_cql_res **out);

/* pool.c */
pconn *cql_pick_conn_locked(sl_cql_client *c, node *n);
void cql_pconn_release(sl_cql_client *c, pconn *p);
void cql_close_graveyard(sl_cql_client *c);
void cql_maintain_pools(sl_cql_client *c);
void *cql_maint_main(void *arg);

/* plan.c */
int cql_replicas(const sl_cql_client *c, const char *ks, int64_t token, int *out, int max);
void cql_node_outcome(sl_cql_client *c, int i, int timed_out);
int cql_make_plan(sl_cql_client *c, int has_token, int64_t token, const char *ks, int *plan);

#endif
