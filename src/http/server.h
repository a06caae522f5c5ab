/* server.h: the HTTP/1.1 server (HTTPS when given a certificate), and the
 * routing table.
 *
 * An API (api/native.c, later admin.c, sqs.c) is a table of routes: a
 * method, a path pattern whose "{name}" segments capture parameters, the
 * handler and the largest request body it accepts. The server matches each
 * request against the table (404 NotFound, or 405 with an Allow header when
 * only the method is wrong), reads the body up to the route's limit (413
 * beyond it), then calls the handler once the whole body is in.
 *
 * Threads. The event-loop threads (sl_http_config.threads) read, parse and
 * write every connection and run the handlers of routes that never wait on
 * the store. A route marked blocks runs on the store pool
 * (sl_http_config.store_threads threads) instead, so a slow or frozen store
 * delays only the requests that need it: other connections, the server's
 * own errors and routes like /openapi.json answer meanwhile. On the pool
 * each handler runs on a fiber (util/fiber.h), which parks while it waits
 * on Cassandra, so its waits hold no thread either. Either kind of handler
 * may park its request (below), which holds no thread.
 *
 * A handler answers by setting a response (sl_http_respond, sl_http_error)
 * and returning SL_HTTP_DONE, or returns SL_HTTP_WAIT to park the request
 * without holding a thread: the connection is not read until someone calls
 * sl_http_wake() from any thread, and then the handler is called again from
 * the start. Every response carries an X-Request-Id. Every error, the
 * handlers' and the server's own (malformed requests, limits, timeouts), is
 * rendered by the API's render_error hook (see sl_http_config).
 *
 * Ownership: request-scoped memory comes from sl_http_alloc() and is freed
 * with the request; the user state set by sl_http_set_user() is freed by its
 * destructor when the request completes, whatever the outcome. */
#ifndef SL_HTTP_SERVER_H
#define SL_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "../sluice.h"
#include "../util/metrics.h"

typedef struct sl_http_server sl_http_server;
typedef struct sl_http_req sl_http_req;

/* What a handler returns: SL_HTTP_POOL asks for the handler to be run
 * again, from the start, on the store pool: a route not marked blocks
 * whose request turns out to need the store (SQS's POST / serves every
 * action) says so before it has done anything that should not be done
 * twice, and only while sl_http_on_pool() is 0. */
enum { SL_HTTP_DONE = 0, SL_HTTP_WAIT = 1, SL_HTTP_POOL = 2 };

typedef int (*sl_http_fn)(sl_http_req *r, void *ctx);

#define SL_HTTP_MAX_PARAMS 4

typedef struct {
    const char *method;  /* "GET", "POST", ... */
    const char *pattern; /* "/api/v1/accounts/{account}/queues/{q}" */
    sl_http_fn fn;
    size_t body_max; /* bytes; 0 means the server's default (1 MiB) */
    int blocks;      /* the handler may wait on the store: run it on the store pool */
    void *ctx;       /* passed to fn; NULL: the config's ctx (one server can carry several APIs) */
} sl_http_route;

/* Renders an error body into out (cap bytes): returns its length and sets
 * *content_type, or returns 0 to have the server answer plain text. The
 * server calls it for the errors of handlers (sl_http_error) and for its
 * own (malformed requests, limits, timeouts, 404 and 405, the connection
 * limit), from any of its threads, also before a request exists (then
 * request_id is a new one); it must not block. ctx is the config's ctx. */
typedef size_t (*sl_http_error_fn)(void *ctx, int status, const char *code, const char *message,
                                   const char *request_id, char *out, size_t cap, const char **content_type);

typedef struct {
    const char *host;      /* address or name to bind; NULL or "" means 0.0.0.0 */
    int port;              /* 0 picks a free port; see sl_http_port() */
    int threads;           /* event-loop threads; 0 means 32 */
    int store_threads;     /* the store pool's threads; 0: none (the event loop runs every route) */
    int conn_timeout_s;    /* idle keep-alive connections close after this; 0 means 60 */
    int request_timeout_s; /* a request must arrive within this from its first byte, else 408; 0 means 30 */
    int max_conns;         /* open connections; 0 means the file limit less 64, at most 10,000 */
    const char *tls_cert;  /* PEM certificate chain: serve HTTPS; NULL or "" for plain HTTP */
    const char *tls_key;   /* PEM private key of tls_cert */
    const sl_http_route *routes;
    size_t nroutes;
    void *ctx;                     /* passed to every handler and to render_error */
    sl_http_error_fn render_error; /* NULL: plain-text errors */
} sl_http_config;

/* Starts listening. The config's routes must outlive the server. Returns 0,
 * SL_EINVAL for a bad host, route pattern, TLS certificate or key, or SL_EIO
 * when it could not listen (port in use); the reason is logged. */
int sl_http_start(const sl_http_config *cfg, sl_http_server **out);
/* The port actually bound (useful with port 0). */
int sl_http_port(const sl_http_server *s);
/* Whether it serves HTTPS. */
int sl_http_tls(const sl_http_server *s);
/* Stops accepting, answers every parked request (handlers see
 * sl_http_stopping() true and must not park again), waits for in-flight
 * handlers to finish, and frees the server. */
void sl_http_stop(sl_http_server *s);

/* GET /metrics (Prometheus text format): each server counts its answers
 * by route and status and their latencies as it serializes them. A family's
 * samples must be written together, so the caller writes part by part:
 * sl_http_metrics_head(t, part), then sl_http_metrics() of every server
 * with that part. server is the label ("queue", "admin"). */
enum {
    SL_HTTP_M_REQUESTS,
    SL_HTTP_M_DURATION,
    SL_HTTP_M_CONNS,
    SL_HTTP_M_REFUSED,
    SL_HTTP_M_PARKED,
    SL_HTTP_M_POOL_BUSY,
    SL_HTTP_M_POOL_WAITING,
    SL_HTTP_M_POOL_QUEUED,
    SL_HTTP_M_N
};
void sl_http_metrics_head(sl_text *t, int part);
void sl_http_metrics(sl_http_server *s, const char *server, int part, sl_text *t);

/* --- Inside a handler --------------------------------------------------- */

/* A request header or query parameter; strings live as long as the request. */
typedef struct {
    const char *name;
    const char *value;
} sl_http_kv;

const char *sl_http_method(const sl_http_req *r);
/* The path parameter named in the route's pattern, or NULL. */
const char *sl_http_param(const sl_http_req *r, const char *name);
/* A query parameter (decoded), NULL when absent, "" when given without a value. */
const char *sl_http_query(const sl_http_req *r, const char *name);
const char *sl_http_header(const sl_http_req *r, const char *name);
/* Every query parameter (decoded), in the order sent, a repeated one once
 * per occurrence: stores up to cap and returns how many there are in all,
 * or 0 with *oom set when out of memory. */
size_t sl_http_query_all(const sl_http_req *r, sl_http_kv *out, size_t cap, int *oom);
/* The request target exactly as sent on the wire, split at the first '?'
 * (no percent-decoding, no normalization): what signatures are computed
 * over. *query is "" when there is none. */
void sl_http_raw_target(const sl_http_req *r, const char **path, size_t *path_len, const char **query,
                        size_t *query_len);

/* Stores up to cap headers, in the order received (a repeated header once
 * per occurrence), and returns how many the request has in all. */
size_t sl_http_headers(const sl_http_req *r, sl_http_kv *out, size_t cap);
/* The request body; NUL-terminated after len bytes for convenience. */
const char *sl_http_body(const sl_http_req *r, size_t *len);
/* This request's id (16 hex chars), also sent as X-Request-Id. */
const char *sl_http_request_id(const sl_http_req *r);
/* How many times the handler was called again after sl_http_wake(). */
int sl_http_resumes(const sl_http_req *r);
/* Whether the handler runs on the store pool now (or the server has none,
 * so it may wait where it is). */
int sl_http_on_pool(const sl_http_req *r);
/* True once sl_http_stop() began: answer now, do not park. */
int sl_http_stopping(const sl_http_req *r);
/* True once the client is known to be gone (its connection was reset or
 * closed, or an answer could not be written): a parked request is woken
 * when that happens, and should answer rather than wait again. */
int sl_http_gone(const sl_http_req *r);

/* Request-scoped memory, zeroed, freed with the request. NULL when out of memory. */
void *sl_http_alloc(sl_http_req *r, size_t n);
/* Attaches handler state that lives across SL_HTTP_WAIT; destroy(user) runs
 * when the request completes (also when the client went away). */
void sl_http_set_user(sl_http_req *r, void *user, void (*destroy)(void *user));
void *sl_http_user(const sl_http_req *r);
/* Marks the request as made by the operator: the admin server sets it once
 * the admin token is verified, before it runs a handler of another API
 * (the dashboard's routes), and sl_api_authenticate then grants every
 * level on every account instead of checking account keys. */
void sl_http_set_admin(sl_http_req *r);
int sl_http_admin(const sl_http_req *r);

/* Responses. Each replaces a response set earlier. body is copied. */
int sl_http_respond(sl_http_req *r, int status, const char *content_type, const void *body, size_t len);
/* The same with a body from malloc, which the request now owns. */
int sl_http_respond_take(sl_http_req *r, int status, const char *content_type, char *body, size_t len);
/* An error: the message is formatted, then rendered by the server's
 * render_error hook (the API's envelope; see sl_http_config). */
int sl_http_error(sl_http_req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Adds a response header (copied); at most 8 per response. */
void sl_http_add_header(sl_http_req *r, const char *name, const char *value);

/* Wakes a request parked with SL_HTTP_WAIT so that its handler runs again.
 * Safe from any thread and more than once; a wake that arrives while the
 * handler is still running makes the server call it again at once instead of
 * parking. */
void sl_http_wake(sl_http_req *r);

#endif
