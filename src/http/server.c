/* server.c: the HTTP/1.1 server: listening and accepting, connections on
 * event-loop workers, request framing (parse.c), the routing table, request
 * bodies, parking, responses and TLS.
 *
 * Threads. One thread accepts; it hands each connection to a worker in
 * turn (a burst of connects spreads over all of them instead of landing on
 * whichever few are awake). Each worker owns its connections: an epoll
 * descriptor (edge-triggered), an eventfd that other threads write to hand
 * it a connection or a woken request, and a list of its connections for the
 * timeouts. Handlers run on the worker that owns the connection. On the
 * embedded store the message handlers park their request while its writes
 * commit, so a few workers serve many connections; on Cassandra they run on
 * the store pool, whose fibers park while the node answers (util/fiber.h),
 * so a request in flight to the node holds no thread.
 *
 * Parking (SL_HTTP_WAIT): the connection stops being read and its request
 * waits, holding no thread, until someone calls sl_http_wake() from any
 * thread; the worker then runs the handler again. The worker's mutex orders
 * the two, so a wake that comes before the park is remembered instead of
 * lost.
 *
 * Bounds: the head's size, field count and target length (parse.h), the
 * body per route, the time a request may take to arrive from its first byte
 * (a slow sender cannot hold a connection for long), the idle time between
 * requests, and the count of connections (over it, a connection gets a 503
 * and is closed; one descriptor is kept in reserve so that even running out
 * of descriptors refuses connections instead of leaving them queued in the
 * kernel). Every error, the HTTP layer's own included, is rendered by the
 * API's hook (the native JSON envelope for the native and admin APIs), with
 * an X-Request-Id; after a malformed request the connection closes, since
 * where one request ended is then unknown.
 *
 * Closing after a refusal: the client may still be sending a body (a large
 * upload refused with 413), and closing a socket with unread bytes makes the
 * kernel send a reset that can destroy the response before the client reads
 * it. So the server shuts down its writing side and reads and discards what
 * still comes, up to LINGER_MAX bytes or LINGER_MS, before it closes. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "../util/fiber.h"
#include "../util/metrics.h"
#include "parse.h"
#include "server.h"

#define DEFAULT_BODY_MAX (1024 * 1024)
#define DEFAULT_THREADS 32
#define MAX_SEGS 16
#define MAX_HEADERS 8         /* response headers a handler may add */
#define READ_MAX (64 * 1024)  /* bytes read from a socket at a time */
#define OUT_HIGH (256 * 1024) /* unsent response bytes over which no new request is read */
#define LINGER_MAX (64 * 1024 * 1024)
#define LINGER_MS 10000
#define TICK_MS 250
/* The store pool runs this many handlers at once at most (more wait in
 * its queue, holding nothing but their request), each on a stack of
 * POOL_STACK bytes: reserved address space, of which only the pages a
 * handler touched take memory (util/fiber.c gives back what a deep one
 * touched). The deepest handler parses and writes out JSON nested 2,048
 * deep (jansson's limit), recursively: about 1 MiB, and several times that
 * with AddressSanitizer's frames. */
#define POOL_FIBERS 1024
#if defined(__SANITIZE_ADDRESS__)
#define POOL_STACK (16 * 1024 * 1024)
#else
#define POOL_STACK (4 * 1024 * 1024)
#endif

/* What GET /metrics says of a route: answers by status, and latencies
 * from a request's head being read whole to its answer being queued (a
 * long poll's wait included). */
typedef struct {
    uint64_t status[600];
    sl_hist lat;
} route_stats;

typedef struct {
    const sl_http_route *r;
    route_stats *st;
    int nseg;
    char *seg[MAX_SEGS]; /* literal, or a parameter name when param[i] */
    int param[MAX_SEGS];
} route_c;

typedef struct worker worker;
typedef struct conn conn;

struct sl_http_server {
    sl_http_config cfg;
    route_c *routes;
    int port;
    int lfd;     /* the listening socket */
    int wake[2]; /* a pipe: written to stop the accept thread */
    int spare;   /* a descriptor held in reserve (see accept_main) */
    pthread_t acceptor;
    int acceptor_started;
    worker *workers;
    int nworkers;
    unsigned next; /* the worker that gets the next connection */
    int max_conns;
    int idle_ms, request_ms;
    SSL_CTX *tls;
    int stopping; /* atomic */
    int nconns;   /* atomic: open connections */
    int nreqs;    /* atomic: requests begun and not finished */
    route_stats unrouted;   /* answers with no route: 404, 405, the server's own refusals */
    uint64_t conns_refused; /* atomic: at the connection limit */
    /* The store pool: fibers on a few threads that run the handlers of
     * routes marked blocks, so that no event-loop thread waits on the
     * store, and a handler that waits on Cassandra parks its fiber
     * instead of holding a thread (util/fiber.h). */
    sl_fibers *pool; /* NULL: none; stopped before the event loops, freed with the server */
};

struct worker {
    sl_http_server *s;
    pthread_t t;
    int started;
    int ep, evfd;
    pthread_mutex_t mu;  /* the three lists below and every parking flag of its requests */
    conn *inbox;         /* accepted, not yet taken up */
    sl_http_req *woken;  /* woken, to be run again */
    sl_http_req *parked; /* parked and not woken */
    int quit;
    conn *conns;  /* every connection it owns; the worker's thread only */
    conn *closed; /* closed during this round of events, freed after it */
    int64_t date_s;
    char date[40]; /* "Date: ...\r\n" for date_s */
};

enum { C_HEAD, C_BODY, C_RUN, C_LINGER };

struct conn {
    worker *w;
    conn *next, *prev;
    int fd;
    SSL *ssl;
    int handshaken;
    int state;
    char *in;
    size_t in_len, in_cap;
    char *out;
    size_t out_len, out_off, out_cap;
    int64_t t_start;   /* when the request being read began (monotonic ms), 0 between requests */
    int64_t t_active;  /* the last byte read or written */
    int close_after;   /* close once the output is sent */
    int read_pending;  /* readable while a request ran: read when it is done */
    int drained;       /* the last read emptied the socket, and no readable event came since */
    int want_out;      /* registered for EPOLLOUT */
    int tls_want_read; /* a TLS write waits for the socket to be readable */
    int dead;          /* the peer went away while a request ran: close when it is done */
    int closed;        /* closed: events of this round that name it are skipped */
    size_t lingered;
    sl_http_req *req; /* the request being read or run */
    int chunked;
    uint64_t body_left;
    sl_hp_chunked ck;
};

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t data[];
} chunk;

struct sl_http_req {
    sl_http_server *srv;
    conn *c;
    char *method, *path, *query;
    char *raw; /* the request target as sent */
    sl_http_kv *fields;
    size_t nfields;
    int minor, keep_alive, head;
    const route_c *route;
    int nomatch; /* 404 or 405 when route is NULL */
    char allow[64];
    int nparams;
    const char *pname[SL_HTTP_MAX_PARAMS], *pval[SL_HTTP_MAX_PARAMS];
    char *body;
    size_t len, cap, max;
    char id[17];
    int64_t t0_us;  /* its head read whole (sl_latency_us) */
    sl_log_ctx log; /* its fields in log lines (JSON logs) */
    /* the response */
    int status, has_resp;
    char *resp;
    size_t resp_len;
    const char *ctype;
    int nhdr;
    const char *hname[MAX_HEADERS], *hval[MAX_HEADERS];
    /* parking, under the worker's mu */
    int parked, woken, wake_pending, last_run;
    int answered; /* the store pool ran the handler to its answer */
    int was_parked; /* it parked at least once */
    int on_pool;  /* the handler runs on the store pool now (or there is none) */
    int gone;     /* the client went away (atomic): answer now, do not wait */
    int admin;    /* the admin token was verified (sl_http_set_admin) */
    sl_http_req *pnext, *pprev;
    sl_fiber_task task; /* on the store pool */
    int resumes;
    void *user;
    void (*user_free)(void *);
    chunk *arena;
};

/* --- Request-scoped memory --------------------------------------------- */

void *sl_http_alloc(sl_http_req *r, size_t n) {
    size_t need = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t);
    chunk *c = r->arena;
    if (!c || c->cap - c->used < need) {
        size_t cap = need > 256 ? need : 256; /* units of max_align_t: 4 KiB chunks */
        c = calloc(1, sizeof *c + cap * sizeof(max_align_t));
        if (!c) return NULL;
        c->cap = cap;
        c->next = r->arena;
        r->arena = c;
    }
    void *p = &c->data[c->used];
    c->used += need;
    return p;
}

static void arena_free(sl_http_req *r) {
    while (r->arena) {
        chunk *n = r->arena->next;
        free(r->arena);
        r->arena = n;
    }
}

static char *req_strdup(sl_http_req *r, const char *s) {
    size_t n = strlen(s);
    char *p = sl_http_alloc(r, n + 1);
    if (p) memcpy(p, s, n + 1);
    return p;
}

/* --- Routing ------------------------------------------------------------ */

/* Splits a path in place into segments; "/" has none. Returns the count or
 * -1 for a path that does not start with '/' or has too many segments. A
 * single trailing slash is ignored so ".../queues/" lists queues too. */
static int split_path(char *p, char **seg) {
    if (*p != '/') return -1;
    size_t n = strlen(p);
    if (n > 1 && p[n - 1] == '/') p[n - 1] = '\0';
    int k = 0;
    p++;
    if (*p == '\0') return 0;
    for (;;) {
        if (k == MAX_SEGS) return -1;
        seg[k++] = p;
        char *sl = strchr(p, '/');
        if (!sl) break;
        *sl = '\0';
        p = sl + 1;
    }
    return k;
}

static int compile_route(const sl_http_route *r, route_c *c) {
    c->r = r;
    char *dup = strdup(r->pattern);
    if (!dup) return SL_ENOMEM;
    char *seg[MAX_SEGS];
    int n = split_path(dup, seg);
    int np = 0;
    if (n < 0) {
        free(dup);
        return SL_EINVAL;
    }
    c->nseg = n;
    for (int i = 0; i < n; i++) {
        size_t len = strlen(seg[i]);
        c->param[i] = len > 2 && seg[i][0] == '{' && seg[i][len - 1] == '}';
        if (c->param[i]) {
            seg[i][len - 1] = '\0';
            seg[i]++;
            if (++np > SL_HTTP_MAX_PARAMS) {
                free(dup);
                return SL_EINVAL;
            }
        }
        c->seg[i] = strdup(seg[i]);
        if (!c->seg[i]) {
            free(dup);
            return SL_ENOMEM;
        }
    }
    free(dup);
    return 0;
}

static int route_matches(const route_c *c, char **seg, int n) {
    if (c->nseg != n) return 0;
    for (int i = 0; i < n; i++) {
        if (c->param[i] ? seg[i][0] == '\0' : strcmp(c->seg[i], seg[i]) != 0) return 0;
    }
    return 1;
}

/* Finds the route for r's method and path; when only the path matches,
 * records 405 and the allowed methods, else 404. */
static void route_request(sl_http_req *r) {
    sl_http_server *s = r->srv;
    char *seg[MAX_SEGS];
    r->nomatch = 404;
    char *p = req_strdup(r, r->path);
    if (!p) return;
    int n = split_path(p, seg);
    if (n < 0) return;
    for (size_t i = 0; i < s->cfg.nroutes; i++) {
        const route_c *c = &s->routes[i];
        if (!route_matches(c, seg, n)) continue;
        if (strcmp(c->r->method, r->method) == 0) {
            r->route = c;
            for (int k = 0; k < n; k++) {
                if (!c->param[k]) continue;
                r->pname[r->nparams] = c->seg[k];
                r->pval[r->nparams++] = seg[k];
            }
            return;
        }
        r->nomatch = 405;
        if (!strstr(r->allow, c->r->method)) {
            size_t used = strlen(r->allow);
            snprintf(r->allow + used, sizeof r->allow - used, "%s%s", used ? ", " : "", c->r->method);
        }
    }
}

/* --- Accessors ---------------------------------------------------------- */

const char *sl_http_method(const sl_http_req *r) {
    return r->method;
}

const char *sl_http_param(const sl_http_req *r, const char *name) {
    for (int i = 0; i < r->nparams; i++)
        if (strcmp(r->pname[i], name) == 0) return r->pval[i];
    return NULL;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) into out (room for n + 1 bytes), NUL-terminated;
 * in a query, '+' is a space (form encoding). "%00" stays as it is: a
 * decoded NUL would silently cut the string short ("/queues/%00" would
 * become "/queues/"), while the literal "%00" is simply an invalid name. */
static size_t unescape(const char *s, size_t n, char *out, int plus) {
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hexval(s[i + 1])) >= 0 && (lo = hexval(s[i + 2])) >= 0 &&
            (hi | lo) != 0) {
            out[w++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[w++] = plus && s[i] == '+' ? ' ' : s[i];
        }
    }
    out[w] = '\0';
    return w;
}

const char *sl_http_query(const sl_http_req *r, const char *name) {
    size_t nlen = strlen(name);
    char key[256];
    for (const char *p = r->query; *p;) {
        size_t n = strcspn(p, "&"), k = strcspn(p, "=");
        if (k > n) k = n;
        if (k < sizeof key && unescape(p, k, key, 1) == nlen && memcmp(key, name, nlen) == 0) {
            if (k == n) return "";
            /* Decoded into the request's memory; const only to callers. */
            char *v = sl_http_alloc((sl_http_req *)r, n - k);
            if (!v) return NULL;
            unescape(p + k + 1, n - k - 1, v, 1);
            return v;
        }
        p += n + (p[n] == '&');
    }
    return NULL;
}

size_t sl_http_query_all(const sl_http_req *r, sl_http_kv *out, size_t cap, int *oom) {
    size_t count = 0;
    *oom = 0;
    for (const char *p = r->query; *p; p += strcspn(p, "&"), p += *p == '&') {
        size_t n = strcspn(p, "&"), k = strcspn(p, "=");
        if (n == 0) continue;
        if (k > n) k = n;
        if (count < cap) {
            /* Decoded into the request's memory; const only to callers. */
            char *name = sl_http_alloc((sl_http_req *)r, k + 1),
                 *v = sl_http_alloc((sl_http_req *)r, n - k + 1);
            if (!name || !v) {
                *oom = 1;
                return 0;
            }
            unescape(p, k, name, 1);
            if (k < n) unescape(p + k + 1, n - k - 1, v, 1);
            out[count] = (sl_http_kv){name, v};
        }
        count++;
    }
    return count;
}

const char *sl_http_header(const sl_http_req *r, const char *name) {
    for (size_t i = 0; i < r->nfields; i++)
        if (strcasecmp(r->fields[i].name, name) == 0) return r->fields[i].value;
    return NULL;
}

void sl_http_raw_target(const sl_http_req *r, const char **path, size_t *path_len, const char **query,
                        size_t *query_len) {
    size_t n = strcspn(r->raw, "?");
    *path = r->raw;
    *path_len = n;
    *query = r->raw[n] ? r->raw + n + 1 : "";
    *query_len = strlen(*query);
}

size_t sl_http_headers(const sl_http_req *r, sl_http_kv *out, size_t cap) {
    for (size_t i = 0; i < r->nfields && i < cap; i++)
        out[i] = r->fields[i];
    return r->nfields;
}

const char *sl_http_body(const sl_http_req *r, size_t *len) {
    *len = r->len;
    return r->body ? r->body : "";
}

const char *sl_http_request_id(const sl_http_req *r) {
    return r->id;
}
int sl_http_resumes(const sl_http_req *r) {
    return r->resumes;
}
int sl_http_on_pool(const sl_http_req *r) {
    return r->on_pool || !r->srv->pool;
}

int sl_http_stopping(const sl_http_req *r) {
    return __atomic_load_n(&r->srv->stopping, __ATOMIC_ACQUIRE);
}

int sl_http_gone(const sl_http_req *r) {
    return __atomic_load_n(&r->gone, __ATOMIC_ACQUIRE);
}

void sl_http_set_user(sl_http_req *r, void *user, void (*destroy)(void *)) {
    r->user = user;
    r->user_free = destroy;
}

void *sl_http_user(const sl_http_req *r) {
    return r->user;
}

void sl_http_set_admin(sl_http_req *r) {
    r->admin = 1;
}

int sl_http_admin(const sl_http_req *r) {
    return r->admin;
}

/* --- Responses ---------------------------------------------------------- */

int sl_http_respond_take(sl_http_req *r, int status, const char *content_type, char *body, size_t len) {
    free(r->resp);
    r->resp = len > 0 ? body : NULL;
    r->resp_len = len;
    r->status = status;
    r->ctype = content_type;
    r->has_resp = 1;
    if (len == 0) free(body);
    return SL_HTTP_DONE;
}

int sl_http_respond(sl_http_req *r, int status, const char *content_type, const void *body, size_t len) {
    free(r->resp);
    r->resp = NULL;
    r->resp_len = 0;
    r->status = status;
    r->ctype = content_type;
    r->has_resp = 1;
    if (len > 0) {
        r->resp = malloc(len);
        if (!r->resp) {
            r->status = 503;
            r->ctype = NULL;
            return SL_HTTP_DONE;
        }
        memcpy(r->resp, body, len);
        r->resp_len = len;
    }
    return SL_HTTP_DONE;
}

/* Renders an error through the API's hook (see server.h) into buf; a
 * server without one (a test's, a benchmark's) answers plain text. */
static size_t render_error(const sl_http_server *s, int status, const char *code, const char *msg,
                           const char *id, char *buf, size_t cap, const char **ctype) {
    size_t n = 0;
    if (s->cfg.render_error) n = s->cfg.render_error(s->cfg.ctx, status, code, msg, id, buf, cap, ctype);
    if (n == 0 || n > cap) {
        int k = snprintf(buf, cap, "%d %s: %s (request %s)\n", status, code, msg, id);
        n = k < 0 ? 0 : (size_t)k < cap ? (size_t)k : cap - 1;
        *ctype = "text/plain; charset=utf-8";
    }
    return n;
}

int sl_http_error(sl_http_req *r, int status, const char *code, const char *fmt, ...) {
    char msg[512], body[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (status >= 500)
        sl_log(SL_INFO, "http %s %s -> %d %s: %s [%s]", r->method, r->path, status, code, msg, r->id);
    const char *ctype;
    size_t n = render_error(r->srv, status, code, msg, r->id, body, sizeof body, &ctype);
    return sl_http_respond(r, status, ctype, body, n);
}

void sl_http_add_header(sl_http_req *r, const char *name, const char *value) {
    if (r->nhdr == MAX_HEADERS) return;
    const char *n = req_strdup(r, name), *v = req_strdup(r, value);
    if (!n || !v) return;
    r->hname[r->nhdr] = n;
    r->hval[r->nhdr++] = v;
}

/* --- Responses on the wire -------------------------------------------- */

static const char *reason(int status) {
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    case 507:
        return "Insufficient Storage";
    default:
        return "Status";
    }
}

static int out_reserve(conn *c, size_t n) {
    if (c->out_off > 0 && c->out_off == c->out_len) c->out_off = c->out_len = 0;
    if (c->out_len + n <= c->out_cap) return 0;
    size_t cap = c->out_cap ? c->out_cap : 4096;
    while (cap < c->out_len + n)
        cap *= 2;
    char *p = realloc(c->out, cap);
    if (!p) return SL_ENOMEM;
    c->out = p;
    c->out_cap = cap;
    return 0;
}

static void out_add(conn *c, const void *p, size_t n) {
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

/* The Date field, formatted once a second per worker. */
static const char *date_field(worker *w) {
    time_t now = time(NULL);
    if (now != w->date_s) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(w->date, sizeof w->date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        w->date_s = now;
    }
    return w->date;
}

/* Counts an answer for GET /metrics. */
static void count_answer(const sl_http_req *r) {
    route_stats *st = r->route ? r->route->st : &r->srv->unrouted;
    if (r->status >= 100 && r->status < 600) sl_count(&st->status[r->status], 1);
    sl_hist_observe(&st->lat, sl_latency_us() - r->t0_us);
}

/* Appends r's response to its connection's output. A response to HEAD
 * carries the fields of the body it does not send; 1xx, 204 and 304 carry
 * no body and no Content-Length (RFC 9110 section 8.6). */
static int serialize(conn *c, sl_http_req *r) {
    if (!r->has_resp) sl_http_error(r, 500, "InternalError", "the handler set no response");
    count_answer(r);
    int bodyless = r->status == 204 || r->status == 304 || r->status < 200;
    size_t extra = 0;
    for (int i = 0; i < r->nhdr; i++)
        extra += strlen(r->hname[i]) + strlen(r->hval[i]) + 4;
    size_t send = bodyless || r->head ? 0 : r->resp_len;
    if (out_reserve(c, 320 + extra + (r->ctype ? strlen(r->ctype) : 0) + send)) return SL_ENOMEM;
    /* Formatted by hand: snprintf was a percent of the server's time. */
    char num[20];
    int st = r->status >= 100 && r->status <= 999 ? r->status : 500;
    char code[4] = {(char)('0' + st / 100), (char)('0' + st / 10 % 10), (char)('0' + st % 10), ' '};
    const char *why = reason(st), *date = date_field(c->w);
    out_add(c, "HTTP/1.1 ", 9);
    out_add(c, code, 4);
    out_add(c, why, strlen(why));
    out_add(c, "\r\n", 2);
    out_add(c, date, strlen(date));
    if (!bodyless) {
        size_t k = sizeof num, v = r->resp_len;
        do
            num[--k] = (char)('0' + v % 10);
        while ((v /= 10) != 0);
        out_add(c, "Content-Length: ", 16);
        out_add(c, num + k, sizeof num - k);
        out_add(c, "\r\n", 2);
        if (r->ctype) {
            out_add(c, "Content-Type: ", 14);
            out_add(c, r->ctype, strlen(r->ctype));
            out_add(c, "\r\n", 2);
        }
    }
    out_add(c, "X-Request-Id: ", 14);
    out_add(c, r->id, strlen(r->id));
    out_add(c, "\r\n", 2);
    for (int i = 0; i < r->nhdr; i++) {
        out_add(c, r->hname[i], strlen(r->hname[i]));
        out_add(c, ": ", 2);
        out_add(c, r->hval[i], strlen(r->hval[i]));
        out_add(c, "\r\n", 2);
    }
    if (c->close_after)
        out_add(c, "Connection: close\r\n", 19);
    else if (r->minor == 0)
        out_add(c, "Connection: keep-alive\r\n", 24);
    out_add(c, "\r\n", 2);
    if (send) out_add(c, r->resp, send);
    return 0;
}

/* --- Requests ------------------------------------------------------------ */

static sl_http_req *req_new(conn *c) {
    sl_http_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->srv = c->w->s;
    r->c = c;
    r->t0_us = sl_latency_us();
    sl_random_hex(r->id, 8);
    r->method = r->path = r->raw = r->query = (char *)"-";
    __atomic_add_fetch(&r->srv->nreqs, 1, __ATOMIC_RELAXED);
    return r;
}

/* The request's fields for log lines: its id, method, route pattern and
 * the account and queue its path names. */
static void log_fields(sl_http_req *r) {
    r->log = (sl_log_ctx){r->id, r->method, r->route ? r->route->r->pattern : "-",
                          sl_http_param(r, "account"), sl_http_param(r, "q")};
}

static void req_free(sl_http_req *r) {
    if (!r) return;
    /* The user state goes first: it may hold a wake-up source (a watch) that
     * must be cancelled before r disappears. */
    if (r->user_free) r->user_free(r->user);
    if (sl_log_level >= SL_DEBUG) {
        log_fields(r);
        sl_log_request(&r->log, r->path, r->status, sl_latency_us() - r->t0_us);
    }
    free(r->body);
    free(r->resp);
    __atomic_sub_fetch(&r->srv->nreqs, 1, __ATOMIC_RELEASE);
    arena_free(r);
    free(r);
}

static char *arena_copy(sl_http_req *r, const char *p, size_t n) {
    char *s = sl_http_alloc(r, n + 1);
    if (s) memcpy(s, p, n);
    return s;
}

/* Sets r up from a parsed head: copies what it keeps (the head's buffer is
 * reused for the next bytes), decodes the path and matches the route. */
static int req_setup(sl_http_req *r, const sl_hp_request *h) {
    r->minor = h->minor;
    r->keep_alive = h->keep_alive;
    char *m = arena_copy(r, h->method, h->method_len);
    char *raw = arena_copy(r, h->target, h->target_len);
    r->fields = sl_http_alloc(r, (h->nfields ? h->nfields : 1) * sizeof *r->fields);
    if (!m || !raw || !r->fields) return SL_ENOMEM;
    for (size_t i = 0; i < h->nfields; i++) {
        const sl_hp_field *f = &h->fields[i];
        char *name = arena_copy(r, f->name, f->name_len), *value = arena_copy(r, f->value, f->value_len);
        if (!name || !value) return SL_ENOMEM;
        r->fields[i].name = name;
        r->fields[i].value = value;
    }
    r->nfields = h->nfields;
    r->method = m;
    r->raw = raw;
    r->head = strcmp(m, "HEAD") == 0;
    size_t plen = strcspn(raw, "?");
    r->query = raw[plen] ? raw + plen + 1 : (char *)"";
    char *path = sl_http_alloc(r, plen + 1);
    if (!path) return SL_ENOMEM;
    unescape(raw, plen, path, 0);
    r->path = path;
    route_request(r);
    r->max = r->route && r->route->r->body_max ? r->route->r->body_max : DEFAULT_BODY_MAX;
    return 0;
}

/* --- Connections ----------------------------------------------------------- */

/* Closes c. Its memory outlives the round of events being handled (a
 * later event of the same epoll_wait may name it); worker_main frees it. */
static void conn_close(conn *c) {
    worker *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    req_free(c->req);
    c->req = NULL;
    if (c->ssl) SSL_free(c->ssl);
    c->ssl = NULL;
    close(c->fd);
    free(c->in);
    free(c->out);
    c->in = c->out = NULL;
    c->closed = 1;
    c->next = w->closed;
    w->closed = c;
    __atomic_sub_fetch(&w->s->nconns, 1, __ATOMIC_RELEASE);
}

/* The client of c's running or parked request went away: a reset, or the
 * end of its input (a client that gives up on a long poll closes its
 * connection, as nginx also takes it). The request is woken to answer now,
 * and sl_http_gone() tells its handler, so that a long poll does not take
 * messages for a client that will never see them. */
static void req_abandoned(conn *c) {
    __atomic_store_n(&c->req->gone, 1, __ATOMIC_RELEASE);
    sl_http_wake(c->req);
}

/* Ends c after a failed read or write, or a reset. A running or parked
 * request is not freed under its handler or its wake-up source (freeing a
 * parked one left it on the worker's parked list): the connection goes
 * when the request is done, in conn_resume. */
static void conn_drop(conn *c) {
    if (c->state != C_RUN) {
        conn_close(c);
        return;
    }
    c->dead = 1;
    req_abandoned(c);
}

static void free_closed(worker *w) {
    while (w->closed) {
        conn *c = w->closed;
        w->closed = c->next;
        free(c);
    }
}

static void want_out(conn *c, int on) {
    if (c->want_out == on) return;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = on;
}

/* Reads what is there into c->in (up to READ_MAX at a time). Returns the
 * bytes read, 0 when nothing is there now, or -1 at the end of the stream
 * or on an error (the connection is done). */
static long conn_read(conn *c, char *buf, size_t cap) {
    if (c->ssl) {
        ERR_clear_error();
        int n = SSL_read(c->ssl, buf, (int)cap);
        if (n > 0) return n;
        int e = SSL_get_error(c->ssl, n);
        if (e == SSL_ERROR_WANT_READ) return 0;
        if (e == SSL_ERROR_WANT_WRITE) {
            want_out(c, 1);
            return 0;
        }
        return -1;
    }
    /* The descriptor is edge-triggered: bytes that arrive after a read
     * emptied the socket bring an event of their own, so until it comes
     * another read would only answer EAGAIN. A keep-alive client sends its
     * next request only once it has the answer, so this saves a system call
     * a request. */
    if (c->drained) return 0;
    for (;;) {
        ssize_t n = recv(c->fd, buf, cap, 0);
        if (n > 0) {
            c->drained = (size_t)n < cap; /* a stream socket gives all it holds, up to cap */
            return n;
        }
        if (n == 0) return -1;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
        c->drained = 1;
        return 0;
    }
}

/* Sends what it can of the output. Returns 0, or -1 when the connection is
 * done (the peer went away, or everything is sent and it closes). */
static int conn_flush(conn *c) {
    while (c->out_off < c->out_len) {
        size_t n = c->out_len - c->out_off;
        ssize_t k;
        if (c->ssl) {
            ERR_clear_error();
            int m = SSL_write(c->ssl, c->out + c->out_off, n > INT32_MAX ? INT32_MAX : (int)n);
            if (m <= 0) {
                int e = SSL_get_error(c->ssl, m);
                if (e == SSL_ERROR_WANT_WRITE) {
                    want_out(c, 1);
                    return 0;
                }
                if (e == SSL_ERROR_WANT_READ) {
                    c->tls_want_read = 1;
                    return 0;
                }
                return -1;
            }
            k = m;
        } else {
            k = send(c->fd, c->out + c->out_off, n, MSG_NOSIGNAL);
            if (k < 0) {
                if (errno == EINTR) continue;
                if (errno == EAGAIN || errno == EWOULDBLOCK) {
                    want_out(c, 1);
                    return 0;
                }
                return -1;
            }
        }
        c->out_off += (size_t)k;
        c->t_active = sl_mono_ms();
    }
    c->out_off = c->out_len = 0;
    c->tls_want_read = 0;
    want_out(c, 0);
    if (c->close_after && c->state != C_LINGER) {
        /* Stop sending, and read what the client still sends for a while
         * (see the top of the file). */
        if (c->ssl) SSL_shutdown(c->ssl);
        shutdown(c->fd, SHUT_WR);
        c->state = C_LINGER;
        c->t_start = sl_mono_ms();
        c->lingered = 0;
    }
    return 0;
}

/* Answers the request being read with an error of the HTTP layer and
 * closes the connection after it. */
static void conn_refuse(conn *c, int status, const char *code, const char *msg) {
    sl_http_req *r = c->req;
    if (!r && (r = req_new(c)) != NULL) {
        /* A refused head may still say HEAD, and a client that sent HEAD
         * reads no body after the fields (RFC 9110 section 9.3.2). */
        size_t k = 0;
        while (k < c->in_len && (c->in[k] == '\r' || c->in[k] == '\n'))
            k++;
        r->head = c->in_len - k >= 5 && memcmp(c->in + k, "HEAD ", 5) == 0;
    }
    c->req = NULL;
    c->close_after = 1;
    if (r) {
        sl_http_error(r, status, code, "%s", msg);
        if (status == 503 || status == 429) sl_http_add_header(r, "Retry-After", "1");
        serialize(c, r);
        req_free(r);
    }
    c->state = C_HEAD; /* conn_flush moves it on to C_LINGER */
    c->t_start = 0;
}

/* How the server answers a request the parser refuses. RFC 9112 would have
 * 501 for a transfer coding other than chunked and 505 for another major
 * version; here bad input never gets a 5xx (API.md), so both are 400 with a
 * code that says which. */
static void refuse_parse(conn *c, long status, const char *why) {
    switch (status) {
    case 414:
        conn_refuse(c, 414, "UriTooLong", why);
        break;
    case 431:
        conn_refuse(c, 431, "RequestHeaderFieldsTooLarge", why);
        break;
    case 501:
        conn_refuse(c, 400, "UnsupportedTransferCoding", why);
        break;
    case 505:
        conn_refuse(c, 400, "HttpVersionNotSupported", why);
        break;
    default:
        conn_refuse(c, 400, "BadRequest", why);
        break;
    }
}

static void too_big(conn *c) {
    char msg[96];
    snprintf(msg, sizeof msg, "the request body exceeds the limit of %zu bytes", c->req->max);
    conn_refuse(c, 413, "RequestBodyTooLarge", msg);
}

static void run_request(conn *c);

/* Takes the head at the front of c->in. Returns 1 when a request is under
 * way (its body, if any, is next), 0 when more bytes are needed, -1 when
 * the connection was refused. */
static int take_head(conn *c) {
    sl_hp_request h;
    const char *why;
    long n = sl_hp_parse_head(c->in, c->in_len, &h, &why);
    if (n == SL_EPARTIAL) {
        /* Only whitespace between requests does not start one. */
        size_t k = 0;
        while (k < c->in_len && (c->in[k] == '\r' || c->in[k] == '\n'))
            k++;
        if (k < c->in_len && c->t_start == 0) c->t_start = sl_mono_ms();
        return 0;
    }
    if (n < 0) {
        refuse_parse(c, -n, why);
        return -1;
    }
    if (c->t_start == 0) c->t_start = sl_mono_ms();
    sl_http_req *r = req_new(c);
    if (!r || req_setup(r, &h) != 0) {
        req_free(r);
        conn_refuse(c, 503, "ServiceUnavailable", "out of memory");
        return -1;
    }
    c->req = r;
    memmove(c->in, c->in + n, c->in_len - (size_t)n);
    c->in_len -= (size_t)n;
    c->chunked = h.chunked;
    c->body_left = h.content_length > 0 ? (uint64_t)h.content_length : 0;
    memset(&c->ck, 0, sizeof c->ck);
    if (!c->chunked && c->body_left == 0) {
        run_request(c);
        return 1;
    }
    if (!c->chunked && c->body_left > r->max) {
        too_big(c);
        return -1;
    }
    /* A client that waits for "100 Continue" before sending the body gets it
     * now that the head is accepted (RFC 9110 section 10.1.1). */
    if (h.expect_continue && c->in_len == 0 && r->minor == 1) {
        if (out_reserve(c, 25) == 0) out_add(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
    size_t want = c->chunked ? 4096 : (size_t)c->body_left;
    if (!(r->body = malloc(want + 1))) {
        conn_refuse(c, 503, "ServiceUnavailable", "out of memory");
        return -1;
    }
    r->cap = want + 1;
    c->state = C_BODY;
    return 1;
}

/* Moves body bytes from c->in into the request. Returns 1 once the body is
 * complete, 0 when more is needed, -1 when the connection was refused. */
static int take_body(conn *c) {
    sl_http_req *r = c->req;
    if (!c->chunked) {
        size_t k = c->in_len < c->body_left ? c->in_len : (size_t)c->body_left;
        memcpy(r->body + r->len, c->in, k);
        r->len += k;
        c->body_left -= k;
        memmove(c->in, c->in + k, c->in_len - k);
        c->in_len -= k;
        r->body[r->len] = '\0';
        return c->body_left == 0;
    }
    size_t used, got;
    const char *why;
    /* Payload is never longer than its framing, so it is decoded in place. */
    int rc = sl_hp_decode_chunked(&c->ck, c->in, c->in_len, &used, c->in, &got, &why);
    if (rc < 0) {
        conn_refuse(c, 400, "BadRequest", why);
        return -1;
    }
    if (r->len + got > r->max) {
        too_big(c);
        return -1;
    }
    if (r->len + got + 1 > r->cap) {
        size_t cap = r->cap * 2;
        while (cap < r->len + got + 1)
            cap *= 2;
        if (cap > r->max + 1) cap = r->max + 1;
        char *b = realloc(r->body, cap);
        if (!b) {
            conn_refuse(c, 503, "ServiceUnavailable", "out of memory");
            return -1;
        }
        r->body = b;
        r->cap = cap;
    }
    memcpy(r->body + r->len, c->in, got);
    r->len += got;
    r->body[r->len] = '\0';
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
    return rc;
}

/* Wakes w's thread to look at its inbox, its woken list or quit. */
static void kick(worker *w) {
    uint64_t one = 1;
    ssize_t k = write(w->evfd, &one, sizeof one);
    (void)k;
}

/* Under w->mu, before adding to w's lists: whether the caller must
 * kick(w) once it lets go of the lock. Whoever found them empty kicks, and
 * the thread takes both lists whole, so one write of the eventfd covers
 * every addition until then: a commit that wakes fifty requests writes it
 * once per event-loop thread, not fifty times. */
static int kick_due(const worker *w) {
    return !w->woken && !w->inbox;
}

/* Parks r unless a wake already came; returns 1 if parked, 0 to run the
 * handler again now, -1 when the server is stopping. */
static int park(sl_http_req *r) {
    worker *w = r->c->w;
    int rc;
    pthread_mutex_lock(&w->mu);
    if (r->wake_pending) {
        r->wake_pending = 0;
        rc = 0;
    } else if (__atomic_load_n(&r->srv->stopping, __ATOMIC_ACQUIRE)) {
        rc = -1;
    } else {
        r->parked = 1;
        r->was_parked = 1;
        r->pprev = NULL;
        r->pnext = w->parked;
        if (w->parked) w->parked->pprev = r;
        w->parked = r;
        rc = 1;
    }
    pthread_mutex_unlock(&w->mu);
    return rc;
}

void sl_http_wake(sl_http_req *r) {
    worker *w = r->c->w;
    pthread_mutex_lock(&w->mu);
    if (r->parked) {
        r->parked = 0;
        if (r->pprev)
            r->pprev->pnext = r->pnext;
        else
            w->parked = r->pnext;
        if (r->pnext) r->pnext->pprev = r->pprev;
        r->pprev = NULL;
        int k = kick_due(w);
        r->pnext = w->woken;
        w->woken = r;
        r->woken = 1;
        pthread_mutex_unlock(&w->mu);
        if (k) kick(w);
        return;
    }
    if (!r->woken) r->wake_pending = 1;
    pthread_mutex_unlock(&w->mu);
}

static void conn_process(conn *c);

/* Calls r's handler until it answers (returns 0) or parks (returns 1), on
 * an event-loop thread or a store-pool thread. Only SL_HTTP_WAIT parks: a
 * handler that returns anything else has answered (or must be taken to
 * have), so a stray return value never leaves a request parked for good. */
static int run_handler(sl_http_req *r) {
    log_fields(r);
    for (;;) {
        void *ctx = r->route->r->ctx ? r->route->r->ctx : r->srv->cfg.ctx;
        sl_log_ctx_set(&r->log); /* the handler's log lines carry the request's fields */
        int rc = r->route->r->fn(r, ctx);
        sl_log_ctx_set(NULL);
        if (rc == SL_HTTP_POOL && !sl_http_on_pool(r)) return 2;
        if (rc == SL_HTTP_POOL) {
            sl_log(SL_ERR, "http: a handler asked for the store pool while on it");
            sl_http_error(r, 500, "InternalError", "the handler could not run");
            return 0;
        }
        if (rc != SL_HTTP_WAIT) return 0;
        int p = park(r);
        if (p == 1) return 1;
        /* Stopping: handlers answer instead of parking once they see it
         * (sl_http_stopping), so run this one again, once. */
        if (p < 0 && !r->last_run) {
            r->last_run = 1;
            r->resumes++;
            continue;
        }
        if (p < 0) {
            sl_http_error(r, 503, "ServiceUnavailable", "the server is shutting down");
            sl_http_add_header(r, "Retry-After", "1");
            return 0;
        }
        r->resumes++;
    }
}

/* A handler on the store pool: an answer goes back to the connection's
 * event-loop thread, which alone writes to the connection (a parked
 * handler's wake sends it there too, and it comes back here). */
static void pool_run(sl_fiber_task *t) {
    sl_http_req *r = (sl_http_req *)((char *)t - offsetof(sl_http_req, task));
    r->on_pool = 1;
    int h = run_handler(r);
    r->on_pool = 0;
    if (h == 0) {
        worker *w = r->c->w;
        pthread_mutex_lock(&w->mu);
        r->answered = 1;
        r->woken = 1;
        int k = kick_due(w);
        r->pnext = w->woken;
        w->woken = r;
        pthread_mutex_unlock(&w->mu);
        if (k) kick(w);
    }
}

/* Queues r for the store pool. Returns -1 when the pool is stopping (or
 * there is none): the caller runs the handler itself. */
static int pool_push(sl_http_server *s, sl_http_req *r) {
    if (!s->pool) return -1;
    r->task.fn = pool_run;
    /* A request that parked goes ahead of new ones: it has waited, and
     * finishing it frees what it holds. */
    return sl_fibers_submit(s->pool, &r->task, r->was_parked);
}

/* Runs the handler of c's request (again, after a wake) until it answers or
 * parks, or hands it to the store pool; an answer goes out, and the
 * connection reads on. */
static void run_request(conn *c) {
    sl_http_req *r = c->req;
    sl_http_server *s = c->w->s;
    c->state = C_RUN;
    if (r->answered) {
        r->answered = 0; /* back from the store pool */
    } else if (!r->route) {
        if (r->nomatch == 405) {
            sl_http_error(r, 405, "MethodNotAllowed", "%s is not allowed on %s", r->method, r->path);
            sl_http_add_header(r, "Allow", r->allow);
        } else {
            sl_http_error(r, 404, "NotFound", "no route for %s %s", r->method, r->path);
        }
    } else if (r->route->r->blocks && pool_push(s, r) == 0) {
        return; /* with the store pool */
    } else {
        int h = run_handler(r);
        /* The handler found it must wait on the store after all. */
        if (h == 2 && pool_push(s, r) == 0) return;
        if (h == 2) { /* the pool is stopping: run it here */
            r->on_pool = 1;
            h = run_handler(r);
            r->on_pool = 0;
        }
        if (h == 1) return; /* parked */
    }
    if (!r->keep_alive || __atomic_load_n(&s->stopping, __ATOMIC_ACQUIRE)) c->close_after = 1;
    if (serialize(c, r) != 0) c->close_after = 1;
    req_free(r);
    c->req = NULL;
    c->state = C_HEAD;
    c->t_start = 0;
}

/* Reads what has arrived and serves every complete request in it, in
 * order. Returns -1 when the connection is to be closed now. */
static int conn_on_input(conn *c) {
    for (;;) {
        if (c->state == C_LINGER) {
            char buf[16384];
            long n = conn_read(c, buf, sizeof buf);
            if (n < 0) return -1;
            if (n == 0) return 0;
            c->lingered += (size_t)n;
            if (c->lingered > LINGER_MAX) return -1;
            continue;
        }
        if (c->state == C_RUN || c->close_after || c->out_len - c->out_off > OUT_HIGH) {
            c->read_pending = 1; /* read on once the request is answered */
            return 0;
        }
        c->read_pending = 0;
        /* Room for a head over the limit (so the parser can tell), or for the
         * next slice of a body. */
        if (c->in_cap - c->in_len < 4096) {
            size_t cap = c->in_cap ? c->in_cap * 2 : 16384;
            if (cap > SL_HP_HEAD_MAX + READ_MAX) cap = SL_HP_HEAD_MAX + READ_MAX;
            if (cap > c->in_cap) {
                char *p = realloc(c->in, cap);
                if (!p) return -1;
                c->in = p;
                c->in_cap = cap;
            }
        }
        long n = c->in_cap > c->in_len ? conn_read(c, c->in + c->in_len, c->in_cap - c->in_len) : 0;
        if (n < 0 && c->out_len > c->out_off) {
            c->close_after = 1; /* the client is done sending: answer what it sent, then close */
            return 0;
        }
        if (n < 0) return -1;
        if (n > 0) {
            c->in_len += (size_t)n;
            c->t_active = sl_mono_ms();
        }
        size_t before = c->in_len;
        conn_process(c);
        if (conn_flush(c) < 0) return -1;
        /* Nothing read and nothing taken: wait for the socket. */
        if (n == 0 && c->in_len == before) return 0;
    }
}

/* Serves the complete requests at the front of c->in. */
static void conn_process(conn *c) {
    while (!c->close_after && c->out_len - c->out_off <= OUT_HIGH) {
        if (c->state == C_HEAD) {
            if (c->in_len == 0 || take_head(c) <= 0) return;
            continue;
        }
        if (c->state == C_BODY) {
            int rc = take_body(c);
            if (rc <= 0) return;
            run_request(c);
            continue;
        }
        return;
    }
}

/* The handshake of a TLS connection, driven by its events. Returns 1 once
 * done, 0 while it waits for the socket, -1 when it failed. */
static int tls_handshake(conn *c) {
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        c->handshaken = 1;
        want_out(c, 0);
        return 1;
    }
    int e = SSL_get_error(c->ssl, rc);
    if (e == SSL_ERROR_WANT_READ) return 0;
    if (e == SSL_ERROR_WANT_WRITE) {
        want_out(c, 1);
        return 0;
    }
    sl_log(SL_DEBUG, "http: TLS handshake failed: %s", ERR_reason_error_string(ERR_peek_last_error()));
    return -1;
}

static void conn_event(conn *c, uint32_t ev) {
    if (c->closed) return;
    c->t_active = sl_mono_ms();
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->drained = 0; /* new bytes, or the end */
    if (c->ssl && !c->handshaken) {
        int rc = tls_handshake(c);
        if (rc < 0) {
            conn_close(c);
            return;
        }
        if (rc == 0) return;
        ev |= EPOLLIN; /* the request may have come with the handshake's last bytes */
    }
    if ((ev & EPOLLOUT) || ((ev & EPOLLIN) && c->tls_want_read)) {
        if (conn_flush(c) < 0) {
            conn_drop(c);
            return;
        }
        /* The output drained: serve what waited behind it. */
        if (c->out_len == 0 && c->state != C_RUN) ev |= EPOLLIN;
    }
    if ((ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && c->state != C_RUN) {
        /* The input may have started a request that now runs or parks, and
         * may have ended behind it. */
        if (conn_on_input(c) < 0)
            conn_drop(c);
        else if (c->state == C_RUN && (ev & EPOLLRDHUP))
            req_abandoned(c);
    } else if (ev & (EPOLLERR | EPOLLHUP)) {
        conn_drop(c); /* a reset while a request runs or parks */
    } else if (ev & (EPOLLIN | EPOLLRDHUP)) {
        c->read_pending = 1;
        if (ev & EPOLLRDHUP) req_abandoned(c);
    }
}

/* Runs the woken request of c again, then reads on. */
static void conn_resume(conn *c) {
    if (!c->req->answered) c->req->resumes++;
    run_request(c);
    if (c->state == C_RUN) return; /* parked again */
    if (c->dead) {
        conn_close(c);
        return;
    }
    conn_process(c);
    /* conn_process may have started the next pipelined request, which now
     * runs or parks. */
    if (conn_flush(c) < 0 || (c->read_pending && c->state != C_RUN && conn_on_input(c) < 0)) conn_drop(c);
}

/* Closes idle connections, answers 408 to requests that take too long to
 * arrive, and ends lingering closes. */
static void conn_timeouts(worker *w, int64_t now) {
    sl_http_server *s = w->s;
    for (conn *c = w->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == C_RUN) continue;
        if (c->state == C_LINGER) {
            if (now - c->t_start > LINGER_MS) conn_close(c);
            continue;
        }
        if (c->out_len > c->out_off) {
            if (now - c->t_active > s->request_ms) conn_close(c); /* a client that does not read */
            continue;
        }
        if (c->t_start && now - c->t_start > s->request_ms) {
            conn_refuse(c, 408, "RequestTimeout", "the request did not arrive in time");
            if (conn_flush(c) < 0) conn_close(c);
        } else if (!c->t_start && now - c->t_active > s->idle_ms) {
            conn_close(c);
        }
    }
}

/* Takes up the connections the accept thread handed over. */
static void take_inbox(worker *w, conn *list) {
    while (list) {
        conn *c = list;
        list = c->next;
        c->prev = NULL;
        c->next = w->conns;
        if (w->conns) w->conns->prev = c;
        w->conns = c;
        c->t_active = sl_mono_ms();
        struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP | EPOLLET, .data.ptr = c};
        if (epoll_ctl(w->ep, EPOLL_CTL_ADD, c->fd, &ev) != 0) conn_close(c);
    }
}

static void *worker_main(void *arg) {
    sl_thread_name("sl-http");
    worker *w = arg;
    struct epoll_event evs[64];
    int64_t last_tick = sl_mono_ms();
    for (;;) {
        int n = epoll_wait(w->ep, evs, 64, w->conns ? TICK_MS : -1);
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr == w) {
                uint64_t v;
                ssize_t k = read(w->evfd, &v, sizeof v);
                (void)k;
                pthread_mutex_lock(&w->mu);
                conn *inbox = w->inbox;
                sl_http_req *woken = w->woken;
                int quit = w->quit;
                w->inbox = NULL;
                w->woken = NULL;
                for (sl_http_req *r = woken; r; r = r->pnext)
                    r->woken = 0;
                pthread_mutex_unlock(&w->mu);
                take_inbox(w, inbox);
                while (woken) {
                    sl_http_req *r = woken;
                    woken = r->pnext;
                    r->pnext = NULL;
                    conn_resume(r->c);
                }
                if (quit) {
                    free_closed(w);
                    return NULL;
                }
                continue;
            }
            conn_event(evs[i].data.ptr, evs[i].events);
        }
        int64_t now = sl_mono_ms();
        if (now - last_tick >= TICK_MS) {
            conn_timeouts(w, now);
            last_tick = now;
        }
        free_closed(w);
    }
}

/* --- Accepting ------------------------------------------------------------ */

/* Refuses a connection at once, before it is anyone's: a 503 rendered like
 * every other error, if the socket takes it, then close. */
static void refuse_fd(sl_http_server *s, int fd) {
    sl_count(&s->conns_refused, 1);
    char id[17], body[1536], buf[2048];
    const char *ctype;
    snprintf(id, sizeof id, "%016llx", (unsigned long long)sl_random_u64());
    size_t bn = render_error(s, 503, "ServiceUnavailable", "too many connections; try again", id, body,
                             sizeof body, &ctype);
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 503 Service Unavailable\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "X-Request-Id: %s\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%.*s",
                     ctype, bn, id, (int)bn, body);
    if (n > 0) {
        ssize_t k =
            send(fd, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)k;
    }
    close(fd);
}

static void hand_over(sl_http_server *s, int fd) {
    conn *c = calloc(1, sizeof *c);
    if (c && s->tls && !(c->ssl = SSL_new(s->tls))) {
        free(c);
        c = NULL;
    }
    if (!c) {
        refuse_fd(s, fd);
        return;
    }
    c->fd = fd;
    if (c->ssl) {
        SSL_set_fd(c->ssl, fd);
        SSL_set_accept_state(c->ssl);
    }
    __atomic_add_fetch(&s->nconns, 1, __ATOMIC_RELAXED);
    worker *w = &s->workers[s->next++ % (unsigned)s->nworkers];
    c->w = w;
    pthread_mutex_lock(&w->mu);
    int k = kick_due(w);
    c->next = w->inbox;
    w->inbox = c;
    pthread_mutex_unlock(&w->mu);
    if (k) kick(w);
}

/* Accepts until told to stop. Over the connection limit, a connection gets
 * a 503 and is closed. When descriptors run out, accept() fails with EMFILE
 * while the connection stays queued, and nothing would tell the client; so
 * the spare descriptor is given up for a moment to accept and refuse it
 * (as libev and nginx do). Other errors (a client that gave up) are the
 * client's. */
static void *accept_main(void *arg) {
    sl_thread_name("sl-accept");
    sl_http_server *s = arg;
    struct pollfd p[2] = {{.fd = s->lfd, .events = POLLIN}, {.fd = s->wake[0], .events = POLLIN}};
    for (;;) {
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            sl_log(SL_ERR, "http: the accept thread stops: %s", strerror(errno));
            break;
        }
        if (p[1].revents) break;
        if (!(p[0].revents & POLLIN)) continue;
        for (;;) {
            int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) {
                if ((errno == EMFILE || errno == ENFILE) && s->spare >= 0) {
                    close(s->spare);
                    fd = accept4(s->lfd, NULL, NULL, SOCK_CLOEXEC);
                    if (fd >= 0) refuse_fd(s, fd);
                    s->spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
                    sl_log(SL_INFO, "http: out of file descriptors; connections are refused");
                    continue;
                }
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                    sl_log(SL_ERR, "http: cannot accept a connection: %s", strerror(errno));
                    poll(NULL, 0, 50);
                }
                break;
            }
            if (__atomic_load_n(&s->nconns, __ATOMIC_ACQUIRE) >= s->max_conns) {
                refuse_fd(s, fd);
                continue;
            }
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            hand_over(s, fd);
        }
    }
    return NULL;
}

static int listen_on(sl_http_server *s, const struct addrinfo *ai) {
    int one = 1;
    s->lfd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (s->lfd < 0) return -1;
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6) setsockopt(s->lfd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(s->lfd, ai->ai_addr, ai->ai_addrlen) || listen(s->lfd, SOMAXCONN)) return -1;
    struct sockaddr_storage sa;
    socklen_t n = sizeof sa;
    if (getsockname(s->lfd, (struct sockaddr *)&sa, &n)) return -1;
    s->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                             : ((struct sockaddr_in *)&sa)->sin_port);
    return 0;
}

/* Allows as many connections as file descriptors, less 64 for the store and
 * the rest, up to 10,000: parked long polls hold theirs. */
static int connection_limit(void) {
    struct rlimit rl;
    rlim_t lim = 1024;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) lim = rl.rlim_cur == RLIM_INFINITY ? 10064 : rl.rlim_cur;
    if (lim > 10064) lim = 10064;
    return lim > 128 ? (int)(lim - 64) : 64;
}

/* --- Start and stop ------------------------------------------------------- */

static void free_server(sl_http_server *s) {
    if (s->routes) {
        for (size_t i = 0; i < s->cfg.nroutes; i++) {
            for (int k = 0; k < s->routes[i].nseg; k++)
                free(s->routes[i].seg[k]);
            free(s->routes[i].st);
        }
        free(s->routes);
    }
    for (int i = 0; s->workers && i < s->nworkers; i++) {
        worker *w = &s->workers[i];
        while (w->conns)
            conn_close(w->conns);
        while (w->inbox) {
            conn *c = w->inbox;
            w->inbox = c->next;
            c->prev = c->next = NULL;
            w->conns = c;
            conn_close(c);
        }
        free_closed(w);
        if (w->ep >= 0) close(w->ep);
        if (w->evfd >= 0) close(w->evfd);
        pthread_mutex_destroy(&w->mu);
    }
    free(s->workers);
    sl_fibers_free(s->pool);
    if (s->tls) SSL_CTX_free(s->tls);
    if (s->lfd >= 0) close(s->lfd);
    if (s->spare >= 0) close(s->spare);
    for (int i = 0; i < 2; i++)
        if (s->wake[i] >= 0) close(s->wake[i]);
    free(s);
}

static int tls_setup(sl_http_server *s, const char *cert, const char *key) {
    s->tls = SSL_CTX_new(TLS_server_method());
    if (!s->tls) return SL_ENOMEM;
    SSL_CTX_set_min_proto_version(s->tls, TLS1_2_VERSION);
    SSL_CTX_set_mode(s->tls, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    const char *what = cert;
    if (SSL_CTX_use_certificate_chain_file(s->tls, cert) == 1 &&
        (what = key, SSL_CTX_use_PrivateKey_file(s->tls, key, SSL_FILETYPE_PEM) == 1) &&
        (what = "the key and the certificate", SSL_CTX_check_private_key(s->tls) == 1))
        return 0;
    char buf[256];
    ERR_error_string_n(ERR_get_error(), buf, sizeof buf);
    sl_log(SL_ERR, "http: cannot load the TLS certificate or key (%s): %s", what, buf);
    return SL_EINVAL;
}

static int start_workers(sl_http_server *s, int n) {
    s->workers = calloc((size_t)n, sizeof *s->workers);
    if (!s->workers) return SL_ENOMEM;
    s->nworkers = n;
    for (int i = 0; i < n; i++) { /* all set up first: free_server tears down any of them */
        s->workers[i].s = s;
        s->workers[i].ep = s->workers[i].evfd = -1;
        pthread_mutex_init(&s->workers[i].mu, NULL);
    }
    for (int i = 0; i < n; i++) {
        worker *w = &s->workers[i];
        w->ep = epoll_create1(EPOLL_CLOEXEC);
        w->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = w};
        if (w->ep < 0 || w->evfd < 0 || epoll_ctl(w->ep, EPOLL_CTL_ADD, w->evfd, &ev) != 0) return SL_EIO;
    }
    for (int i = 0; i < n; i++) {
        if (pthread_create(&s->workers[i].t, NULL, worker_main, &s->workers[i]) != 0) return SL_EIO;
        s->workers[i].started = 1;
    }
    return 0;
}

static void stop_workers(sl_http_server *s) {
    for (int i = 0; s->workers && i < s->nworkers; i++) {
        worker *w = &s->workers[i];
        if (!w->started) continue;
        pthread_mutex_lock(&w->mu);
        w->quit = 1;
        pthread_mutex_unlock(&w->mu);
        kick(w);
        pthread_join(w->t, NULL);
        w->started = 0;
    }
}

static int start_pool(sl_http_server *s, int n) {
    if (n <= 0) return 0;
    return sl_fibers_start(n, POOL_FIBERS, POOL_STACK, &s->pool);
}

/* Runs what is queued and every handler to its end, then joins the store
 * pool's threads. The event loops, still running, may go on handing it
 * requests (their wakes): it refuses them, and they run the handlers
 * themselves, so it is freed only with the server. */
static void stop_pool(sl_http_server *s) {
    if (s->pool) sl_fibers_stop(s->pool);
}

int sl_http_start(const sl_http_config *cfg, sl_http_server **out) {
    *out = NULL;
    sl_http_server *s = calloc(1, sizeof *s);
    if (!s) return SL_ENOMEM;
    s->cfg = *cfg;
    s->lfd = s->wake[0] = s->wake[1] = -1;
    s->spare = open("/dev/null", O_RDONLY | O_CLOEXEC);
    s->max_conns = cfg->max_conns > 0 ? cfg->max_conns : connection_limit();
    s->idle_ms = (cfg->conn_timeout_s > 0 ? cfg->conn_timeout_s : 60) * 1000;
    s->request_ms = (cfg->request_timeout_s > 0 ? cfg->request_timeout_s : 30) * 1000;
    s->routes = calloc(cfg->nroutes ? cfg->nroutes : 1, sizeof *s->routes);
    if (!s->routes) {
        free_server(s);
        return SL_ENOMEM;
    }
    for (size_t i = 0; i < cfg->nroutes; i++) {
        int rc = compile_route(&cfg->routes[i], &s->routes[i]);
        if (rc == 0 && !(s->routes[i].st = calloc(1, sizeof *s->routes[i].st))) rc = SL_ENOMEM;
        if (rc != 0) {
            if (rc == SL_EINVAL) sl_log(SL_ERR, "http: bad route pattern '%s'", cfg->routes[i].pattern);
            free_server(s);
            return rc;
        }
    }
    int rc;
    if (cfg->tls_cert && *cfg->tls_cert && (rc = tls_setup(s, cfg->tls_cert, cfg->tls_key)) != 0) {
        free_server(s);
        return rc;
    }

    const char *host = cfg->host && *cfg->host ? cfg->host : "0.0.0.0";
    char port[16];
    snprintf(port, sizeof port, "%d", cfg->port);
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0 || !ai) {
        sl_log(SL_ERR, "http: cannot resolve host '%s': %s", host, gai_strerror(gai));
        free_server(s);
        return SL_EINVAL;
    }
    if (listen_on(s, ai)) {
        sl_log(SL_ERR, "http: cannot listen on %s:%d: %s", host, cfg->port, strerror(errno));
        freeaddrinfo(ai);
        free_server(s);
        return SL_EIO;
    }
    freeaddrinfo(ai);
    int threads = cfg->threads > 0 ? cfg->threads : DEFAULT_THREADS;
    if (start_workers(s, threads) != 0 || start_pool(s, cfg->store_threads) != 0 || pipe2(s->wake, O_CLOEXEC) ||
        pthread_create(&s->acceptor, NULL, accept_main, s)) {
        sl_log(SL_ERR, "http: cannot start the server's threads");
        stop_pool(s);
        stop_workers(s);
        free_server(s);
        return SL_EIO;
    }
    s->acceptor_started = 1;
    *out = s;
    return 0;
}

int sl_http_port(const sl_http_server *s) {
    return s->port;
}

/* One route's samples of one family (see sl_http_metrics). */
static void route_metrics(sl_text *t, const char *server, const char *method, const char *route, int part,
                          const route_stats *st) {
    if (part == SL_HTTP_M_REQUESTS) {
        for (int code = 100; code < 600; code++) {
            uint64_t n = sl_counted(&st->status[code]);
            if (n)
                sl_text_printf(t,
                               "sluice_http_requests_total{server=\"%s\",method=\"%s\",route=\"%s\","
                               "status=\"%d\"} %llu\n",
                               server, method, route, code, (unsigned long long)n);
        }
    } else {
        char labels[512];
        snprintf(labels, sizeof labels, "server=\"%s\",method=\"%s\",route=\"%s\"", server, method, route);
        sl_hist_print(t, "sluice_http_request_duration_seconds", labels, &st->lat);
    }
}

void sl_http_metrics_head(sl_text *t, int part) {
    static const char *const heads[SL_HTTP_M_N][3] = {
        {"sluice_http_requests_total", "counter",
         "Answers by server (queue or admin port), method, route pattern (\"-\" when none matched: 404, 405 "
         "and the server's own refusals) and status."},
        {"sluice_http_request_duration_seconds", "histogram",
         "Time from a request's head being read to its answer, by route (long polls' waits included)."},
        {"sluice_http_connections", "gauge", "Open connections."},
        {"sluice_http_connections_refused_total", "counter",
         "Connections refused with a 503 at the connection limit."},
        {"sluice_http_requests_parked", "gauge",
         "Requests waiting with no thread: on the store's answer to their writes, or on a long poll."},
        {"sluice_http_store_pool_busy", "gauge", "Threads of the store pool running a handler now."},
        {"sluice_http_store_pool_waiting", "gauge",
         "Handlers of the store pool waiting on the store, holding no thread (their fibers are parked)."},
        {"sluice_http_store_pool_queued", "gauge",
         "Requests waiting for the store pool to start their handler (it runs that many at most at once)."},
    };
    sl_metric_head(t, heads[part][0], heads[part][1], heads[part][2]);
}

static int parked_count(sl_http_server *s, int wake_all);

void sl_http_metrics(sl_http_server *s, const char *server, int part, sl_text *t) {
    switch (part) {
    case SL_HTTP_M_REQUESTS:
    case SL_HTTP_M_DURATION:
        for (size_t i = 0; i < s->cfg.nroutes; i++)
            route_metrics(t, server, s->routes[i].r->method, s->routes[i].r->pattern, part, s->routes[i].st);
        route_metrics(t, server, "-", "-", part, &s->unrouted);
        break;
    case SL_HTTP_M_CONNS:
        sl_text_printf(t, "sluice_http_connections{server=\"%s\"} %d\n", server,
                       __atomic_load_n(&s->nconns, __ATOMIC_RELAXED));
        break;
    case SL_HTTP_M_PARKED:
        sl_text_printf(t, "sluice_http_requests_parked{server=\"%s\"} %d\n", server, parked_count(s, 0));
        break;
    case SL_HTTP_M_POOL_BUSY:
    case SL_HTTP_M_POOL_WAITING:
    case SL_HTTP_M_POOL_QUEUED: {
        int fig[3] = {0, 0, 0}; /* busy, waiting, queued: in the order of the parts */
        if (s->pool) sl_fibers_figures(s->pool, &fig[0], &fig[1], &fig[2]);
        static const char *const names[] = {"busy", "waiting", "queued"};
        int k = part - SL_HTTP_M_POOL_BUSY;
        sl_text_printf(t, "sluice_http_store_pool_%s{server=\"%s\"} %d\n", names[k], server, fig[k]);
        break;
    }
    default:
        sl_text_printf(t, "sluice_http_connections_refused_total{server=\"%s\"} %llu\n", server,
                       (unsigned long long)sl_counted(&s->conns_refused));
        break;
    }
}

int sl_http_tls(const sl_http_server *s) {
    return s->tls != NULL;
}

static int parked_count(sl_http_server *s, int wake_all) {
    int n = 0;
    for (int i = 0; i < s->nworkers; i++) {
        worker *w = &s->workers[i];
        pthread_mutex_lock(&w->mu);
        while (wake_all && w->parked) {
            sl_http_req *r = w->parked;
            pthread_mutex_unlock(&w->mu);
            sl_http_wake(r);
            pthread_mutex_lock(&w->mu);
        }
        for (sl_http_req *r = w->parked; r; r = r->pnext)
            n++;
        pthread_mutex_unlock(&w->mu);
    }
    return n;
}

void sl_http_stop(sl_http_server *s) {
    if (!s) return;
    __atomic_store_n(&s->stopping, 1, __ATOMIC_RELEASE);
    if (s->acceptor_started) { /* stop accepting; the kernel refuses new connects once lfd is closed */
        ssize_t w = write(s->wake[1], "x", 1);
        (void)w;
        pthread_join(s->acceptor, NULL);
        s->acceptor_started = 0;
        close(s->lfd);
        s->lfd = -1;
    }
    /* Wake every parked request; its handler sees sl_http_stopping() and
     * answers. Then give the requests in flight up to 5 s to finish and send
     * their answers, and in any case wait (up to 30 s) until no request is
     * parked: one still parked holds a wake-up source that may fire, so its
     * memory cannot go. Shutdown is rare, so a short sleep loop is fine. */
    parked_count(s, 1);
    int64_t t0 = sl_mono_ms();
    while (sl_mono_ms() - t0 < 30000) {
        int busy = __atomic_load_n(&s->nreqs, __ATOMIC_ACQUIRE) > 0;
        if (!busy || (sl_mono_ms() - t0 > 5000 && parked_count(s, 0) == 0)) break;
        struct timespec ms10 = {0, 10 * 1000 * 1000};
        nanosleep(&ms10, NULL);
    }
    int left = parked_count(s, 0);
    /* The pool first: the answers of its handlers go back to the event-loop
     * threads, which write them before they quit. */
    stop_pool(s);
    stop_workers(s);
    if (left) {
        sl_log(SL_ERR, "http: %d requests still parked at shutdown; their memory is left", left);
        for (int i = 0; i < s->nworkers; i++)
            for (conn *c = s->workers[i].conns; c; c = c->next)
                if (c->state == C_RUN) c->req = NULL; /* leaked, not freed under a live wake-up source */
    }
    free_server(s);
}
