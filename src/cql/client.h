/* client.h: the CQL client as the store sees it: a cluster of nodes behind
 * one handle.
 *
 * sl_cql_client_open connects to the contact points, discovers the other
 * nodes (system.local, system.peers), keeps a pool of connections per node,
 * routes each statement to a replica of its partition (Murmur3 tokens),
 * prefers the local data center, reconnects with backoff, caches prepared
 * statements, and retries a statement on another node only when it is
 * idempotent. All functions are thread-safe.
 *
 * Errors (from every request function):
 *   SL_EUNKNOWN      a write may or may not have been applied: a WriteTimeout
 *                    (CAS included), a connection that failed after the write
 *                    was sent, or a client-side timeout of a write;
 *   SL_EUNAVAILABLE  not executed: Unavailable, Overloaded, no node up, no
 *                    connection before sending;
 *   SL_ETIMEOUT      a read that timed out (ReadTimeout, ReadFailure, or no
 *                    answer in time);
 *   SL_EINTERNAL     the statement is wrong (Syntax, Invalid, ConfigError):
 *                    a bug; the server's message is logged;
 *   SL_EAUTH         BadCredentials, Unauthorized (logged);
 *   SL_EEXISTS       AlreadyExists (schema statements);
 *   SL_EINVAL, SL_ETOOBIG, SL_ENOMEM for bad input and memory. */
#ifndef SL_CQL_CLIENT_H
#define SL_CQL_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "codec.h"

typedef struct sl_cql_config {
    const char *contact_points; /* "host1,host2:9043,..." */
    int port;                   /* 9042 when 0 */
    const char *keyspace;       /* informational here; the store qualifies names */
    const char *username, *password;
    uint16_t consistency;        /* SL_CQL_LOCAL_QUORUM when 0 */
    uint16_t serial_consistency; /* SL_CQL_LOCAL_SERIAL when 0 */
    int use_ssl;
    const char *ssl_ca_file;                  /* verify the server's certificate against it */
    int ssl_verify_host;                      /* also check the certificate names the node */
    const char *ssl_cert_file, *ssl_key_file; /* optional client certificate */
    const char *data_center;                  /* the local DC; empty: the first contact point's */
    const char *cluster_name;                 /* checked against system.local, logged on mismatch */
    int request_timeout_ms;                   /* 5000 when 0 */
    int connect_timeout_ms;                   /* 5000 when 0 */
    int pool_size;                            /* connections per node, 2 when 0 */
    int no_compression;                       /* do not use lz4 even when offered */
    int max_protocol;                         /* 4 when 0; 3 forces v3 */
    int reconnect_min_ms, reconnect_max_ms;   /* backoff, 200 and 10000 when 0 */
} sl_cql_config;

typedef struct sl_cql_client sl_cql_client;

/* Returns 0 once at least one node answers, or the first contact point's
 * error (SL_EUNAVAILABLE, SL_EAUTH, SL_EINVAL for a bad configuration). */
int sl_cql_client_open(const sl_cql_config *cfg, sl_cql_client **out);
void sl_cql_client_close(sl_cql_client *c);

/* Request flags. */
enum {
    SL_CQL_IDEMPOTENT = 1, /* a write that may safely be executed twice */
    SL_CQL_READ = 2        /* a read (idempotent; timeouts are SL_ETIMEOUT) */
};

typedef struct {
    uint16_t consistency;        /* 0: the configured one */
    uint16_t serial_consistency; /* 0: the configured one (sent with CAS) */
    int flags;
    int32_t page_size;         /* 0: not sent (the server's default) */
    sl_cql_bytes paging_state; /* p NULL: first page */
    int timeout_ms;            /* 0: the configured request timeout */
} sl_cql_opts;

/* A server answer: a RESULT, decoded. Owned by the caller, freed with
 * sl_cql_res_free. */
typedef struct sl_cql_res {
    sl_cql_result r; /* views into body */
    uint8_t *body;
    uint8_t *arena;
    int version;
} sl_cql_res;
void sl_cql_res_free(sl_cql_res *r);

/* A prepared statement, cached by query string; owned by the client. */
typedef struct sl_cql_stmt sl_cql_stmt;

int sl_cql_prepare(sl_cql_client *c, const char *query, sl_cql_stmt **out);
/* The statement of a query text without a round trip: one prepared before,
 * or one registered now and prepared by its first execution (on the node
 * that runs it; other nodes prepare it when they answer UNPREPARED). For
 * callers that must not block; such a statement routes by token once
 * prepared. */
int sl_cql_stmt_lazy(sl_cql_client *c, const char *query, sl_cql_stmt **out);
/* Executes a prepared statement with values bound in order. *out receives
 * the result when the call returns 0 (out may be NULL). */
int sl_cql_execute(sl_cql_client *c, sl_cql_stmt *st, const sl_cql_bytes *vals, size_t n,
                   const sl_cql_opts *o, sl_cql_res **out);
/* The asynchronous forms of sl_cql_execute and sl_cql_batch_exec: they
 * return at once and done(arg, rc, res) runs exactly once with what the
 * blocking call would have returned (res on 0, owned by done, which frees it
 * with sl_cql_res_free), on a connection's I/O thread or before the call
 * returns. done must not block; it may start other requests. vals, items
 * and the values they point to stay borrowed until done runs. A request in
 * flight holds no thread: its retries on other nodes, re-prepares and
 * timeout are steps taken by the connections' I/O threads. */
typedef void (*sl_cql_done_fn)(void *arg, int rc, sl_cql_res *res);
void sl_cql_execute_cb(sl_cql_client *c, sl_cql_stmt *st, const sl_cql_bytes *vals, size_t n,
                       const sl_cql_opts *o, sl_cql_done_fn done, void *arg);

/* A simple (unprepared) statement; used for schema changes and tests. */
int sl_cql_query(sl_cql_client *c, const char *query, const sl_cql_bytes *vals, size_t n,
                 const sl_cql_opts *o, sl_cql_res **out);

typedef struct {
    sl_cql_stmt *st;
    const sl_cql_bytes *vals;
    size_t n;
} sl_cql_batch_item;

/* A BATCH of prepared statements (type SL_CQL_BATCH_LOGGED or _UNLOGGED). A
 * conditional batch returns its [applied] rows in *out. */
int sl_cql_batch_exec(sl_cql_client *c, uint8_t type, const sl_cql_batch_item *items, size_t n,
                      const sl_cql_opts *o, sl_cql_res **out);
void sl_cql_batch_cb(sl_cql_client *c, uint8_t type, const sl_cql_batch_item *items, size_t n,
                     const sl_cql_opts *o, sl_cql_done_fn done, void *arg);

/* Waits until every node up reports the same schema version (after DDL),
 * up to timeout_ms, as the control node sees them. Returns 0 or
 * SL_ETIMEOUT. */
int sl_cql_wait_schema_agreement(sl_cql_client *c, int timeout_ms);
/* Runs a schema change (or another simple statement that must be followed
 * by agreement) on the control connection, then waits for agreement: the
 * control node has the change when it answers, so agreement as it sees it
 * means every live node has it. (Run on another node, the control node and
 * its view of the peers may all still hold the old version and "agree" at
 * once.) Returns 0, a server error as the other calls map it, SL_EUNKNOWN
 * when no answer came, SL_EUNAVAILABLE without a control connection, or
 * SL_ETIMEOUT when the nodes did not agree in time. */
int sl_cql_schema_change(sl_cql_client *c, const char *query, int timeout_ms);

/* --- Introspection, for tests and logs ---------------------------------- */

/* The protocol version of the connections (3 or 4). */
int sl_cql_client_protocol(sl_cql_client *c);
/* How many nodes are known and how many are up. */
void sl_cql_client_nodes(sl_cql_client *c, int *known, int *up);
/* GET /metrics: per node (host:port, dc), requests, errors, timeouts,
 * retries and connections opened since the client started, whether it is
 * up, and its pooled connections. */
struct sl_text;
void sl_cql_metrics(sl_cql_client *c, struct sl_text *t);
/* The token a prepared statement with these values routes by, and whether
 * it has one (v4 gives partition key indexes). */
int sl_cql_routing_token(sl_cql_stmt *st, const sl_cql_bytes *vals, size_t n, int64_t *token);
/* The address ("127.0.0.1") of the node that owns a token, into buf. */
int sl_cql_token_owner(sl_cql_client *c, int64_t token, char *buf, size_t cap);
/* Forgets a statement's server-side id so the next execution meets
 * UNPREPARED (a test hook). */
void sl_cql_stmt_forget(sl_cql_stmt *st);
/* How many times statements were (re-)prepared. */
uint64_t sl_cql_prepare_count(sl_cql_client *c);

/* The next write timestamp (microseconds since the epoch, strictly
 * increasing in this process): every write the client sends carries one,
 * fixed at its first attempt, so retries and late landings keep it. */
int64_t sl_cql_next_timestamp(void);

/* The configured serial consistency (for reads at SERIAL). */
uint16_t sl_cql_client_serial(sl_cql_client *c);

/* Consistency level names ("LOCAL_QUORUM") to codes; 0 when unknown. */
uint16_t sl_cql_consistency_parse(const char *name);

/* Cell decoding helpers for rows: bigint, int, boolean and text. */
int64_t sl_cql_cell_i64(sl_cql_bytes b);

#endif
