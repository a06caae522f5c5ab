/* fuzz_http.c: libFuzzer target over everything HTTP-facing, end to end.
 *
 * LLVMFuzzerInitialize opens the embedded store in a fresh temporary
 * directory (/dev/shm when there is one), the engine, the accounts module,
 * the native API, the event log's API and the admin API, creates the account "dev" with a few
 * queues, and starts both real HTTP servers on 127.0.0.1, port 0. Each input
 * then becomes a request sent over loopback, so the HTTP parser and server, the
 * routing, authentication, the handlers, the engine and the store all run
 * under ASan and UBSan in this process.
 *
 * Input format. A first byte of 0xF0 or more selects raw mode: the rest goes
 * verbatim to a fresh connection (to the admin port for 0xFF), whose write
 * side is then shut; this fuzzes the request parser (src/http/parse.c), the
 * connection handling and our URL handling.
 * Otherwise the first byte picks a route template (routes[] below: every
 * route of API.md, all four APIs; 0xE0..0xEF the event log's, 0xD8..0xDF SQS's POST /, whose action goes
 * in the headers field as X-Amz-Target), the second holds flags (F_*), the third the
 * credentials (low two bits: 0 "Key", 1 none, 2 "Signed", 3 SigV4, each
 * computed for the request as sent; the admin API gets its Bearer token
 * unless 1), and the rest are fields separated by NUL bytes:
 *
 *     method \0 account \0 queue \0 path suffix \0 query \0 headers \0 body
 *
 * An empty field keeps the template's value (method, "dev", a queue chosen
 * by flags). Account and queue are percent-encoded where needed; the suffix
 * and query go into the request line as they are, except for bytes that
 * would end it; headers are '\n'-separated lines; the body is the rest of the
 * input and may contain NULs. Macros, so that small seeds reach deep
 * handlers and size limits, in the query, headers and body and in raw
 * inputs: "@R@" becomes a real pop receipt of a message just put and
 * received on the chosen queue ("orders" in raw mode); "@K@" dev's primary
 * key (so that raw requests can authenticate); "@Btext@" base64url(text), so
 * that receipts can be forged field by field; in bodies and raw inputs,
 * "@Xn@" becomes n KiB of 'x' and "@Un@" n Ki copies of the JSON escape
 * \u0041 (n at most 2048). waitSeconds in a structured body is clamped to 0
 * or 1 so that long polls end quickly (raw long polls are cut off after
 * RAW_TIMEOUT_MS). After each input the account "dev", its primary key and
 * the queues are recreated if the input deleted them.
 *
 * What counts as a bug (abort() with the reason): a 500 from anyone; an
 * answer without an X-Request-Id (every answer of the server has one, its
 * HTTP layer's refusals of malformed requests included); an error status
 * whose body is not a JSON error object (Sluice's envelope or SQS's), or
 * for SQS's query protocol an XML ErrorResponse; a JSON response that does
 * not parse; an answer that is not HTTP; a server that does not answer GET
 * /health within 5 s after the input. Other 5xx and 429s, and requests that
 * got no answer, are noted on stderr and saved once per kind and status
 * under FUZZ_HTTP_NOTES (default build/fuzz/http_notes), not aborted on.
 *
 * Debugging: FUZZ_HTTP_VERBOSE=1 prints each structured request and its
 * answer (use it to turn an input into a curl command), FUZZ_HTTP_STATS=1
 * prints answers per route and status class at exit, FUZZ_HTTP_SLOW_MS=n
 * reports inputs slower than n ms, FUZZ_HTTP_LOG=0..2 sets sl_log_level.
 *
 * Seed corpus: fuzz/corpus/http (make_http_corpus.py). */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <jansson.h>

#include "sluice.h"
#include "account/account.h"
#include "api/api.h"
#include "api/req.h"
#include "auth/auth.h"
#include "http/server.h"
#include "queue/queue.h"
#include "store/store.h"

#define MAX_INPUT (64 * 1024)
#define MAX_REQ (4 * 1024 * 1024 + 256 * 1024)
#define MAX_RESP (2 * 1024 * 1024)
#define REQ_TIMEOUT_MS 3000
#define RAW_TIMEOUT_MS 400
#define BASE "/api/v1/accounts/{a}/queues"

#define ADMIN "/admin/api/v1/accounts"
#define EVENTS "/api/v1/accounts/{a}"

/* admin: 1 for the admin API's server (Authorization: Bearer); there {q} is a
 * key name. */
static const struct {
    const char *method, *path;
    int admin;
} routes[] = {
    {"GET", "/health", 0},
    {"GET", "/openapi.json", 0},
    {"GET", "/metrics", 1},
    {"GET", "/ui/", 0},
    {"GET", BASE, 0},
    {"POST", BASE, 0},
    {"GET", BASE "/{q}", 0},
    {"DELETE", BASE "/{q}", 0},
    {"GET", BASE "/{q}/statistics", 0},
    {"POST", BASE "/{q}/purge", 0},
    {"POST", BASE "/{q}/redrive", 0},
    {"POST", BASE "/{q}/messages", 0},
    {"PUT", BASE "/{q}/messages", 0},
    {"DELETE", BASE "/{q}/messages", 0},
    {"GET", BASE "/{q}/messages/next", 0},
    {"GET", BASE "/{q}/messages/peek", 0},
    {"POST", BASE "/{q}/messages/batch", 0},
    {"POST", BASE "/{q}/messages/receive", 0},
    {"POST", BASE "/{q}/messages/ack", 0},
    {"GET", "/openapi.json", 1},
    {"POST", ADMIN, 1},
    {"GET", ADMIN, 1},
    {"GET", ADMIN "/{a}", 1},
    {"DELETE", ADMIN "/{a}", 1},
    {"POST", ADMIN "/{a}/keys", 1},
    {"DELETE", ADMIN "/{a}/keys/{q}", 1},
    {"POST", ADMIN "/{a}/signedUrls", 1},
    /* The event log; first bytes 0xE0..0xEF pick these, so that the rest of
     * the corpus keeps the routes it was found on. {q} is an event id or a
     * subscription's name. */
    {"POST", EVENTS "/events", 0},
    {"POST", EVENTS "/events/batch", 0},
    {"GET", EVENTS "/events/{q}", 0},
    {"GET", EVENTS "/events", 0},
    {"GET", EVENTS "/eventlog", 0},
    {"PUT", EVENTS "/eventlog", 0},
    {"GET", EVENTS "/subscriptions", 0},
    {"POST", EVENTS "/subscriptions", 0},
    {"GET", EVENTS "/subscriptions/{q}", 0},
    {"DELETE", EVENTS "/subscriptions/{q}", 0},
    /* SQS's JSON protocol; first bytes 0xD8..0xDF. */
    {"POST", "/", 0},
};
#define NROUTES (sizeof routes / sizeof routes[0])
#define NEVENT_ROUTES 10
#define NQUEUE_ROUTES (NROUTES - NEVENT_ROUTES - 1)

static const char *const queues[] = {"orders", "dlq", "withdlq", "fifo"};

enum {
    F_METHOD = 1 << 0,  /* byte 1: send the method field even when empty */
    F_CHUNKED = 1 << 1, /* send the body with Transfer-Encoding: chunked */
    F_EXPECT = 1 << 2,  /* Expect: 100-continue */
    F_HTTP10 = 1 << 3,  /* HTTP/1.0 */
    F_NOLEN = 1 << 4,   /* no Content-Length (and not chunked) */
    F_QSHIFT = 5,       /* bits 5-6: which of queues[] */
    F_AGAIN = 1 << 7    /* send the request again on the same connection */
};

static sl_api *g_api;
static sl_evlog *g_evlog;
static sl_api_events *g_evapi;
static sl_api_sqs *g_sqsapi;
static sl_http_route g_routes[64];
static sl_http_server *g_srv, *g_admin_srv;
static sl_store *g_store;
static sl_engine *g_engine;

/* GET /metrics on the admin port: every layer's part, as main.c joins them. */
static void fuzz_metrics(void *ctx, sl_text *t) {
    (void)ctx;
    for (int part = 0; part < SL_HTTP_M_N; part++) {
        sl_http_metrics_head(t, part);
        if (g_srv) sl_http_metrics(g_srv, "queue", part, t);
        if (g_admin_srv) sl_http_metrics(g_admin_srv, "admin", part, t);
    }
    sl_engine_metrics(g_engine, t);
    sl_store_metrics(g_store, t);
}
static sl_acct *g_acct;
static sl_admin *g_admin;
static struct sl_auth_key g_key; /* dev's primary key */
static int g_port, g_admin_port;
#define ADMIN_TOKEN "fuzz-admin-token-0123456789abcdef"
static int g_health_fd = -1;
static char *g_req, *g_resp;
static const uint8_t *g_input;
static size_t g_input_len;
static unsigned g_noted[600];
static unsigned g_stats[NROUTES + 1][6]; /* per route (last: raw), by status class; 0: no answer */

/* --- Small buffers --------------------------------------------------------- */

typedef struct {
    char *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) n = b->cap - b->n; /* truncation only loses fuzz bytes */
    memcpy(b->p + b->n, p, n);
    b->n += n;
}
static void puts_(buf *b, const char *s) {
    put(b, s, strlen(s));
}
static void putf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void putf(buf *b, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* --- Setup ------------------------------------------------------------------ */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "fuzz_http: %s\n", msg);
    /* Fork mode (-fork=N) keeps only the first line of a child's log: keep
     * the reason next to the notes too. */
    const char *dir = getenv("FUZZ_HTTP_NOTES");
    char path[600];
    snprintf(path, sizeof path, "%s/die.log", dir ? dir : "build/fuzz/http_notes");
    FILE *f = fopen(path, "a");
    if (f) {
        fprintf(f, "pid %d: %s\n", (int)getpid(), msg);
        fclose(f);
    }
    abort();
}

/* The account "dev" with its primary key, and the queues every input may
 * rely on: inputs may delete any of them through the API. */
static void ensure_queues(void) {
    int rc = sl_acct_ensure(g_acct, "dev", &g_key);
    if (rc) die("cannot recreate the account dev: %s", sl_strerror(rc));
    for (size_t i = 0; i < sizeof queues / sizeof queues[0]; i++) {
        sl_queue_opts o;
        sl_queue_opts_default(&o);
        snprintf(o.name, sizeof o.name, "%s", queues[i]);
        if (strcmp(queues[i], "withdlq") == 0) {
            snprintf(o.dlq, sizeof o.dlq, "dlq");
            o.max_delivery_count = 1;
        }
        if (strcmp(queues[i], "fifo") == 0) o.strict_fifo = 1, o.bucket_size = 1;
        char err[256];
        sl_queue_info qi;
        if (sl_queue_get(g_engine, "dev", queues[i], &qi) == 0) {
            /* Options an input changed (SQS's SetQueueAttributes: a delay,
             * a long wait) go back, so that each input starts alike. */
            const sl_queue_opts *c = &qi.opts;
            if (c->visibility_s != o.visibility_s || c->delay_s != o.delay_s || c->wait_s != o.wait_s ||
                c->max_bytes != o.max_bytes || c->retention_s != o.retention_s ||
                strcmp(c->dlq, o.dlq) != 0 || c->max_delivery_count != o.max_delivery_count)
                (void)sl_queue_update(g_engine, "dev", &o, err, sizeof err);
            continue;
        }
        rc = sl_queue_create(g_engine, "dev", &o, err, sizeof err);
        if (rc && rc != SL_EEXISTS && rc != SL_EINVAL) {
            /* What the engine says about the account and the DLQ, for the
             * report (a campaign once stopped here: withdlq ENOTFOUND). */
            sl_queue_info dq;
            die("cannot create queue %s: %s (%s; account dev: %s, queue dlq: %s)", queues[i], sl_strerror(rc), err,
                sl_strerror(sl_acct_exists(g_acct, "dev")), sl_strerror(sl_queue_get(g_engine, "dev", "dlq", &dq)));
        }
    }
}

static char g_dir[512];

/* Removes the store's directory at exit (best effort; the server keeps
 * running until the process ends, which is harmless on a deleted file). */
static void cleanup(void) {
    if (getenv("FUZZ_HTTP_STATS")) {
        for (size_t i = 0; i <= NROUTES; i++)
            fprintf(stderr, "fuzz_http: %-7s %-46s none %u 1xx %u 2xx %u 3xx %u 4xx %u 5xx %u\n",
                    i < NROUTES ? routes[i].method : "raw", i < NROUTES ? routes[i].path : "", g_stats[i][0],
                    g_stats[i][1], g_stats[i][2], g_stats[i][3], g_stats[i][4], g_stats[i][5]);
    }
    static const char *const files[] = {"sluice.db", "sluice.db-wal", "sluice.db-shm", "sluice.db-journal"};
    char p[600];
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", g_dir, files[i]);
        unlink(p);
    }
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    const char *lvl = getenv("FUZZ_HTTP_LOG");
    sl_log_level = lvl ? atoi(lvl) : -1; /* quiet: even SL_ERR lines are noise here */
    const char *tmp = getenv("TMPDIR");
    struct stat stt;
    char *dir = g_dir;
    snprintf(dir, sizeof g_dir, "%s/sluice-fuzz-http-XXXXXX",
             tmp && *tmp ? tmp : (stat("/dev/shm", &stt) == 0 ? "/dev/shm" : "/tmp"));
    if (!mkdtemp(dir)) die("mkdtemp %s: %s", dir, strerror(errno));
    int rc = sl_store_sqlite_open(dir, &g_store);
    if (rc) die("store: %s", sl_strerror(rc));
    if ((rc = sl_acct_open(g_store, &g_acct))) die("accounts: %s", sl_strerror(rc));
    sl_engine_config ec = {0};
    ec.background = 1;
    ec.lease_grace_ms = 200;
    ec.max_watches = 1000;
    ec.accounts = g_acct;
    if ((rc = sl_engine_open(g_store, &ec, &g_engine))) die("engine: %s", sl_strerror(rc));
    ensure_queues();
    sl_admin_config adc = {.engine = g_engine,
                           .acct = g_acct,
                           .log = NULL,
                           .token = ADMIN_TOKEN,
                           .metrics = fuzz_metrics,
                           .metrics_ctx = NULL};
    if ((rc = sl_api_admin_open(&adc, &g_admin))) die("admin api: %s", sl_strerror(rc));
    sl_api_config ac = {.engine = g_engine, .acct = g_acct};
    if ((rc = sl_api_native_open(&ac, &g_api))) die("api: %s", sl_strerror(rc));
    sl_evlog_config evc = {.atomic = 1}; /* as main.c opens it on the embedded store */
    if ((rc = sl_evlog_open(g_store, &evc, &g_evlog))) die("event log: %s", sl_strerror(rc));
    sl_api_events_config evac = {.log = g_evlog, .acct = g_acct, .engine = g_engine};
    if ((rc = sl_api_events_open(&evac, &g_evapi))) die("events api: %s", sl_strerror(rc));
    sl_http_config hc = {.host = "127.0.0.1", .port = 0, .threads = 4, .store_threads = 4, .conn_timeout_s = 5,
                         .ctx = g_api, .render_error = sl_api_render_error};
    /* The APIs on one port, as main.c serves them. */
    sl_api_sqs_config sqc = {.engine = g_engine, .acct = g_acct};
    if ((rc = sl_api_sqs_open(&sqc, &g_sqsapi))) die("sqs api: %s", sl_strerror(rc));
    const sl_http_route *nr, *er, *sr;
    size_t nn, ne, ns;
    sl_api_native_routes(g_api, &nr, &nn);
    sl_api_events_routes(g_evapi, &er, &ne);
    sl_api_sqs_routes(g_sqsapi, &sr, &ns);
    if (nn + ne + ns > sizeof g_routes / sizeof g_routes[0]) die("too many routes");
    memcpy(g_routes, nr, nn * sizeof *nr);
    for (size_t i = 0; i < nn; i++)
        g_routes[i].ctx = g_api;
    memcpy(g_routes + nn, er, ne * sizeof *er);
    memcpy(g_routes + nn + ne, sr, ns * sizeof *sr);
    /* The admin port serves the native and event routes too (the
     * dashboard's), behind the admin token, as main.c sets it up. */
    if ((rc = sl_api_admin_delegate(g_admin, g_routes, nn + ne))) die("admin routes: %s", sl_strerror(rc));
    sl_http_config ahc = {.host = "127.0.0.1",
                          .port = 0,
                          .threads = 1,
                          .store_threads = 2,
                          .conn_timeout_s = 5,
                          .ctx = g_admin,
                          .render_error = sl_api_render_error};
    sl_api_admin_routes(g_admin, &ahc.routes, &ahc.nroutes);
    if ((rc = sl_http_start(&ahc, &g_admin_srv))) die("admin http: %s", sl_strerror(rc));
    g_admin_port = sl_http_port(g_admin_srv);
    hc.routes = g_routes;
    hc.nroutes = nn + ne + ns;
    if ((rc = sl_http_start(&hc, &g_srv))) die("http: %s", sl_strerror(rc));
    g_port = sl_http_port(g_srv);
    g_req = malloc(MAX_REQ);
    g_resp = malloc(MAX_RESP + 1);
    if (!g_req || !g_resp) die("out of memory");
    atexit(cleanup);
    fprintf(stderr, "fuzz_http: server on 127.0.0.1:%d, store in %s\n", g_port, dir);
    return 0;
}

/* --- Sockets ---------------------------------------------------------------- */

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int dial(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket: %s", strerror(errno));
    /* Reset on close: no TIME_WAIT, so hours of fuzzing do not run out of
     * ephemeral ports. */
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Writes all of p, polling so that a server that stopped reading (it
 * answered early, e.g. 413) does not block us forever. Returns 0, or -1
 * when the peer closed or stalled. */
static int send_all(int fd, const char *p, size_t n, int64_t deadline) {
    while (n > 0) {
        struct pollfd pf = {fd, POLLOUT, 0};
        int left = (int)(deadline - now_ms());
        if (left <= 0 || poll(&pf, 1, left) <= 0) return -1;
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

typedef struct {
    int status;
    const char *body;
    size_t body_len;
    int has_id;   /* X-Request-Id: the response came from one of our handlers */
    int json;     /* Content-Type: application/json (or SQS's x-amz-json-1.0) */
    int xml;      /* Content-Type: text/xml (SQS's query protocol) */
    size_t total; /* bytes of this response, headers and body */
} response;

static const char *find_header(const char *h, size_t hlen, const char *name) {
    size_t nl = strlen(name);
    for (const char *p = h; p && p < h + hlen;) {
        const char *eol = memmem(p, (size_t)(h + hlen - p), "\r\n", 2);
        if (!eol) break;
        if ((size_t)(eol - p) > nl && strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            return v;
        }
        p = eol + 2;
    }
    return NULL;
}

/* Parses the response at the start of p. Returns 1 when complete, 0 when
 * more bytes are needed, -1 when it is not HTTP. head: a response to HEAD,
 * whose Content-Length describes a body that is not sent. */
static int parse_response(const char *p, size_t n, int head, response *out) {
    memset(out, 0, sizeof *out);
    const char *end = memmem(p, n, "\r\n\r\n", 4);
    if (n >= 12 && (memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ')) return -1;
    if (!end) return 0;
    out->status = atoi(p + 9);
    size_t hlen = (size_t)(end - p) + 2;
    out->has_id = find_header(p, hlen, "X-Request-Id") != NULL;
    const char *ct = find_header(p, hlen, "Content-Type");
    out->json = ct && (strncasecmp(ct, "application/json", 16) == 0 ||
                       strncasecmp(ct, "application/x-amz-json-1.0", 26) == 0);
    out->xml = ct && strncasecmp(ct, "text/xml", 8) == 0;
    const char *cl = find_header(p, hlen, "Content-Length");
    size_t blen = 0;
    if (cl)
        blen = strtoull(cl, NULL, 10);
    else if (find_header(p, hlen, "Transfer-Encoding"))
        return -1; /* not used by our server */
    if (head || out->status == 204 || out->status == 304 || out->status / 100 == 1) blen = 0;
    size_t need = hlen + 2 + blen;
    if (n < need) return 0;
    out->body = end + 4;
    out->body_len = blen;
    out->total = need;
    return 1;
}

/* Reads until one full final response is in (1xx responses are skipped),
 * the peer closes or the deadline passes. Returns the bytes received. */
static size_t read_response(int fd, int64_t deadline, int head, response *r, int *complete, int stop_1xx) {
    size_t n = 0, total = 0;
    *complete = 0;
    for (;;) {
        if (n > 0) {
            int pr = parse_response(g_resp, n, head, r);
            if (pr == 1 && r->status / 100 == 1 && stop_1xx) {
                *complete = 0;
                break;
            }
            if (pr == 1 && r->status / 100 == 1) {
                memmove(g_resp, g_resp + r->total, n - r->total);
                n -= r->total;
                continue;
            }
            if (pr != 0) {
                *complete = pr;
                break;
            }
        }
        int left = (int)(deadline - now_ms());
        struct pollfd pf = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, left) <= 0) break;
        ssize_t got = recv(fd, g_resp + n, MAX_RESP - n, 0);
        if (got <= 0) break;
        n += (size_t)got;
        total += (size_t)got;
        if (n == MAX_RESP) break;
    }
    g_resp[n] = 0;
    return total;
}

/* --- Checks ----------------------------------------------------------------- */

/* Saves the current input once per (kind, status) so that every kind of
 * oddity gets one reproducer without stopping the run. */
static void note(const char *kind, int status, const char *detail) {
    unsigned idx = (unsigned)(status > 0 && status < 600 ? status : 0);
    unsigned bit = kind[0] == 't' ? 2u : kind[0] == '5' ? 4u : 8u;
    if (g_noted[idx] & bit) return;
    g_noted[idx] |= bit;
    const char *dir = getenv("FUZZ_HTTP_NOTES");
    if (!dir) dir = "build/fuzz/http_notes";
    mkdir(dir, 0777);
    char path[600];
    snprintf(path, sizeof path, "%s/%s-%d", dir, kind, status);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(g_input, 1, g_input_len, f);
        fclose(f);
    }
    fprintf(stderr, "fuzz_http: NOTE %s status %d: %.200s (input saved to %s)\n", kind, status, detail, path);
}

static void check(const response *r, int head, const char *what) {
    if (r->status == 500)
        die("%s: status 500: %.*s", what, (int)(r->body_len > 400 ? 400 : r->body_len), r->body);
    if (r->status < 100 || r->status > 599) die("%s: bad status line", what);
    if (!r->has_id) die("%s: status %d without an X-Request-Id: %.200s", what, r->status, r->body);
    if (r->status >= 500 || r->status == 429)
        note("5xx", r->status, r->body); /* 503: bad input must never get one */
    if (head) return;                    /* no body to check */
    if (r->xml) {
        /* SQS's query protocol: an XML answer, or for an error its
         * ErrorResponse with a Code. */
        if (r->body_len < 5 || memcmp(r->body, "<?xml", 5) != 0 ||
            (r->status >= 400 && (!memmem(r->body, r->body_len, "<ErrorResponse", 14) ||
                                  !memmem(r->body, r->body_len, "<Code>", 6))))
            die("%s: status %d with a body that is not SQS's XML: %.*s", what, r->status,
                (int)(r->body_len > 400 ? 400 : r->body_len), r->body);
        return;
    }
    if (r->status >= 400 || r->json) {
        json_error_t err;
        json_t *j = json_loadb(r->body, r->body_len, JSON_ALLOW_NUL, &err);
        if (!j)
            die("%s: status %d with a body that is not JSON (%s): %.*s", what, r->status, err.text,
                (int)(r->body_len > 400 ? 400 : r->body_len), r->body);
        if (r->status >= 400) {
            /* Sluice's envelope, or SQS's (__type and message). */
            json_t *code = json_object_get(json_object_get(j, "error"), "code");
            if (!code) code = json_object_get(j, "__type");
            if (!json_is_string(code) || !r->json)
                die("%s: status %d without a JSON error object: %.*s", what, r->status,
                    (int)(r->body_len > 400 ? 400 : r->body_len), r->body);
        }
        json_decref(j);
    }
}

/* GET /health on a kept-alive connection (reconnecting once). */
static void health(void) {
    static const char req[] = "GET /health HTTP/1.1\r\nHost: fuzz\r\n\r\n";
    for (int attempt = 0; attempt < 2; attempt++) {
        if (g_health_fd < 0) g_health_fd = dial(g_port);
        if (g_health_fd < 0) continue;
        int64_t deadline = now_ms() + 5000;
        response r;
        int complete;
        if (send_all(g_health_fd, req, sizeof req - 1, deadline) == 0) {
            read_response(g_health_fd, deadline, 0, &r, &complete, 0);
            if (complete == 1 && r.status == 200) return;
            if (complete == 1) die("GET /health answered %d after the input", r.status);
        }
        close(g_health_fd);
        g_health_fd = -1;
    }
    die("the server stopped answering GET /health after the input");
}

/* --- Building a request ----------------------------------------------------- */

/* Splits the input into fields at NUL bytes; the last field takes the rest. */
static int fields(const uint8_t *p, size_t n, const uint8_t **f, size_t *fl, int nf) {
    int k = 0;
    while (k < nf - 1) {
        const uint8_t *z = memchr(p, 0, n);
        if (!z) break;
        f[k] = p;
        fl[k++] = (size_t)(z - p);
        n -= (size_t)(z - p) + 1;
        p = z + 1;
    }
    f[k] = p;
    fl[k++] = n;
    for (int i = k; i < nf; i++)
        f[i] = NULL, fl[i] = 0;
    return k;
}

static void put_escaped(buf *b, const uint8_t *p, size_t n, const char *keep) {
    for (size_t i = 0; i < n; i++) {
        unsigned c = p[i];
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            (c && strchr(keep, (int)c)))
            put(b, &p[i], 1);
        else
            putf(b, "%%%02X", c);
    }
}

/* A real receipt on queue q: put a message and lease it. */
static void fresh_receipt(const char *q, char out[SL_RECEIPT_MAX]) {
    strcpy(out, "bm90LWEtcmVjZWlwdA");
    sl_put p = {.body = "receipt", .len = 7};
    char id[1][SL_MSGID_LEN + 1];
    if (sl_msg_put(g_engine, "dev", q, &p, 1, id) != 0) return;
    sl_message *m = NULL;
    size_t n = 0;
    if (sl_msg_receive(g_engine, "dev", q, 1, 30, &m, &n) == 0 && n > 0)
        snprintf(out, SL_RECEIPT_MAX, "%s", m[0].receipt);
    sl_messages_free(m, n);
}

/* Copies p to b expanding the macros of the header comment. */
static void expand(buf *b, const uint8_t *p, size_t n, const char *q, int body) {
    char rcpt[SL_RECEIPT_MAX] = "";
    for (size_t i = 0; i < n;) {
        if (p[i] == '@' && i + 2 < n && p[i + 1] == 'R' && p[i + 2] == '@') {
            if (!rcpt[0]) fresh_receipt(q, rcpt);
            puts_(b, rcpt);
            i += 3;
            continue;
        }
        if (p[i] == '@' && i + 2 < n && p[i + 1] == 'K' && p[i + 2] == '@') {
            puts_(b, g_key.secret);
            i += 3;
            continue;
        }
        if (p[i] == '@' && i + 2 < n && p[i + 1] == 'B') {
            /* "@B<text>@": base64url of text, to forge receipts field by field. */
            const uint8_t *z = memchr(p + i + 2, '@', n - i - 2);
            if (z && z - (p + i + 2) <= 96) {
                char enc[SL_B64URL_LEN(96) + 1];
                size_t k = sl_b64url_encode(p + i + 2, (size_t)(z - (p + i + 2)), enc);
                put(b, enc, k);
                i = (size_t)(z - p) + 1;
                continue;
            }
        }
        if (body && p[i] == '@' && i + 3 < n && (p[i + 1] == 'X' || p[i + 1] == 'U')) {
            size_t j = i + 2, k = 0;
            while (j < n && j < i + 7 && p[j] >= '0' && p[j] <= '9')
                k = k * 10 + (p[j++] - '0');
            if (j > i + 2 && j < n && p[j] == '@' && k <= 2048) {
                const char *unit = p[i + 1] == 'X' ? "x" : "\\u0041";
                size_t ul = strlen(unit);
                for (size_t c = 0; c < k * 1024 && b->n + ul <= b->cap; c++)
                    put(b, unit, ul);
                i = j + 1;
                continue;
            }
        }
        put(b, &p[i++], 1);
    }
}

static void clamp_key(char *p, size_t n, const char *key) {
    size_t kl = strlen(key);
    for (char *s = memmem(p, n, key, kl); s; s = memmem(s + 1, (size_t)(p + n - s - 1), key, kl)) {
        char *v = s + kl, *end = p + n;
        while (v < end && (*v == ' ' || *v == ':' || *v == '\t' || *v == '\n' || *v == '\r' || *v == '"'))
            v++;
        if (v < end && *v >= '0' && *v <= '9') {
            if (*v > '1') *v = '1';
            for (v++; v < end && *v >= '0' && *v <= '9'; v++)
                *v = ' ';
        }
    }
}

/* Long polls must end fast: "waitSeconds": N becomes 0 or 1, and so do the
 * waits of SQS and the queues' default waits, which persist ("20" too). */
static void clamp_wait(char *p, size_t n) {
    static const char *const keys[] = {"\"waitSeconds\"", "\"WaitTimeSeconds\"",
                                       "\"ReceiveMessageWaitTimeSeconds\"", "\"receiveWaitSeconds\""};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        clamp_key(p, n, keys[k]);
}

/* --- One input -------------------------------------------------------------- */

static void run_raw(const uint8_t *data, size_t size, int port) {
    buf b = {g_req, 0, MAX_REQ};
    expand(&b, data, size, "orders", 1);
    int fd = dial(port);
    if (fd < 0) die("cannot connect to the server");
    int64_t deadline = now_ms() + RAW_TIMEOUT_MS;
    send_all(fd, b.p, b.n, deadline);
    shutdown(fd, SHUT_WR);
    /* Read everything until the server closes (it does after our EOF) or
     * the deadline, then check every complete response in order: the input
     * may hold pipelined requests. */
    size_t n = 0;
    for (;;) {
        int left = (int)(deadline - now_ms());
        /* Once an answer is in, a short quiet spell ends the wait: the server
         * keeps a connection with a partial second request open after our
         * EOF until its request timeout. */
        if (n > 0 && left > 30) left = 30;
        struct pollfd pf = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pf, 1, left) <= 0) break;
        ssize_t got = recv(fd, g_resp + n, MAX_RESP - n, 0);
        if (got <= 0) break;
        n += (size_t)got;
        if (n == MAX_RESP) break;
    }
    g_resp[n] = 0;
    close(fd);
    if (getenv("FUZZ_HTTP_VERBOSE")) {
        fprintf(stderr, "fuzz_http: raw request:\n");
        fwrite(b.p, 1, b.n > 4000 ? 4000 : b.n, stderr);
        fprintf(stderr, "\nfuzz_http: raw response:\n");
        fwrite(g_resp, 1, n > 4000 ? 4000 : n, stderr);
        fprintf(stderr, "\n");
    }
    int head = size >= 5 && memcmp(data, "HEAD ", 5) == 0;
    response r;
    for (size_t off = 0; off < n; off += r.total) {
        int pr = parse_response(g_resp + off, n - off, head, &r);
        if (pr < 0) die("raw: the answer is not HTTP: %.200s", g_resp + off);
        if (pr == 0) {
            if (n - off >= 12 && memcmp(g_resp + off + 8, " 500", 4) == 0)
                die("raw: a 500 in a partial response: %.200s", g_resp + off);
            break;
        }
        check(&r, head, "raw");
        g_stats[NROUTES][r.status / 100]++;
    }
}

static void run_structured(const uint8_t *data, size_t size) {
    unsigned ri = data[0] >= 0xE0   ? NQUEUE_ROUTES + (data[0] - 0xE0u) % NEVENT_ROUTES
                  : data[0] >= 0xD8 ? NROUTES - 1
                                    : data[0] % NQUEUE_ROUTES;
    unsigned flags = size > 1 ? data[1] : 0;
    unsigned auth = size > 2 ? data[2] : 0;
    const uint8_t *f[7];
    size_t fl[7];
    fields(data + (size > 2 ? 3 : size), size > 2 ? size - 3 : 0, f, fl, 7);
    const char *q = queues[(flags >> F_QSHIFT) & 3];
    char qname[128];
    snprintf(qname, sizeof qname, "%s", q);
    if (fl[2] > 0 && fl[2] < 100) {
        memcpy(qname, f[2], fl[2]);
        qname[fl[2]] = 0;
        if (strlen(qname) != fl[2] || !sl_name_valid(qname)) snprintf(qname, sizeof qname, "%s", q);
    }

    /* The body first: its length goes into the headers. */
    static char body_mem[MAX_REQ / 2];
    buf body = {body_mem, 0, sizeof body_mem};
    expand(&body, f[6] ? f[6] : (const uint8_t *)"", fl[6], qname, 1);
    clamp_wait(body.p, body.n);

    /* Method and request target (path and query), as sent. */
    char method[40], account[256] = "dev";
    static char target_mem[64 * 1024];
    buf t = {target_mem, 0, sizeof target_mem - 1};
    int head = 0;
    if (fl[0] > 0 || (flags & F_METHOD)) {
        size_t k = 0;
        for (size_t i = 0; i < fl[0] && k < sizeof method - 1; i++)
            method[k++] =
                f[0][i] == ' ' || f[0][i] == '\r' || f[0][i] == '\n' || f[0][i] == 0 ? '_' : (char)f[0][i];
        method[k] = 0;
        head = strcmp(method, "HEAD") == 0;
    } else {
        snprintf(method, sizeof method, "%s", routes[ri].method);
    }
    if (fl[1] > 0) {
        buf ab = {account, 0, sizeof account - 1};
        put_escaped(&ab, f[1], fl[1], "_.-~");
        account[ab.n] = 0;
    }
    /* The third byte's top six bits 101001 send a queue or event-log route
     * to the admin port under /admin with the admin token (the dashboard's
     * routes), one input in 64, so that the corpus keeps its routes. */
    int delegated = !routes[ri].admin && strncmp(routes[ri].path, "/api/", 5) == 0 && (auth >> 2) == 0x29;
    if (delegated) puts_(&t, "/admin");
    for (const char *p = routes[ri].path; *p;) {
        if (strncmp(p, "{a}", 3) == 0) {
            puts_(&t, account);
            p += 3;
        } else if (strncmp(p, "{q}", 3) == 0) {
            if (fl[2] > 0)
                put_escaped(&t, f[2], fl[2], "_.-~");
            else
                puts_(&t, q);
            p += 3;
        } else {
            put(&t, p++, 1);
        }
    }
    if (fl[3] > 0) put_escaped(&t, f[3], fl[3], "/_.-~%?&=+;:@!$'()*,");
    size_t path_len = t.n;
    if (fl[4] > 0) {
        puts_(&t, "?");
        buf qb = {body_mem + body.n, 0, sizeof body_mem - body.n};
        expand(&qb, f[4], fl[4], qname, 0);
        put_escaped(&t, (const uint8_t *)qb.p, qb.n, "/_.-~%?&=+;:@!$'()*,");
    }
    target_mem[t.n] = 0;

    /* Credentials, chosen by the third byte: a key, none, "Signed", SigV4. */
    char authz[1024] = "", extra[128] = "";
    if (routes[ri].admin || delegated) {
        if ((auth & 3) != 1) snprintf(authz, sizeof authz, "Bearer %s", ADMIN_TOKEN);
    } else if ((auth & 3) == 0) {
        snprintf(authz, sizeof authz, "Key %s", g_key.secret);
    } else if ((auth & 3) == 2) {
        char when[32], sig[44];
        sl_auth_time_format(sl_now_ms(), when);
        if (sl_auth_signed_sign(&g_key, "dev", method, target_mem, path_len, when, sig) == 0) {
            snprintf(authz, sizeof authz, "Signed %s", sig);
            snprintf(extra, sizeof extra, "X-Sluice-Request-Time: %s\r\n", when);
        }
    } else if ((auth & 3) == 3) {
        char amz[17];
        sl_auth_amz_date_format(sl_now_ms(), amz);
        struct sl_auth_header hs[2] = {{"Host", "fuzz"}, {"X-Amz-Date", amz}};
        struct sl_auth_request rq = {.method = method,
                                     .path = target_mem,
                                     .path_len = path_len,
                                     .query = path_len < t.n ? target_mem + path_len + 1 : "",
                                     .query_len = path_len < t.n ? t.n - path_len - 1 : 0,
                                     .headers = hs,
                                     .n_headers = 2,
                                     .body = body.p,
                                     .body_len = body.n};
        if (sl_auth_sigv4_sign(&rq, &g_key, "dev", "us-east-1", "sqs", authz, sizeof authz) == 0)
            snprintf(extra, sizeof extra, "X-Amz-Date: %s\r\n", amz);
    }

    buf b = {g_req, 0, MAX_REQ / 2};
    puts_(&b, method);
    puts_(&b, " ");
    put(&b, target_mem, t.n);
    puts_(&b, flags & F_HTTP10 ? " HTTP/1.0\r\nHost: fuzz\r\n" : " HTTP/1.1\r\nHost: fuzz\r\n");
    if (authz[0]) putf(&b, "Authorization: %s\r\n", authz);
    puts_(&b, extra);
    if (flags & F_EXPECT) puts_(&b, "Expect: 100-continue\r\n");
    static char hdr_mem[64 * 1024];
    buf hb = {hdr_mem, 0, sizeof hdr_mem};
    if (f[5]) expand(&hb, f[5], fl[5], qname, 0);
    for (size_t i = 0, s = 0; i <= hb.n; i++) {
        if (i == hb.n || hb.p[i] == '\n') {
            if (i > s) {
                for (size_t k = s; k < i; k++)
                    put(&b, hb.p[k] == '\r' ? "_" : &hb.p[k], 1);
                puts_(&b, "\r\n");
            }
            s = i + 1;
        }
    }
    if (flags & F_CHUNKED)
        puts_(&b, "Transfer-Encoding: chunked\r\n");
    else if (!(flags & F_NOLEN) || body.n > 0)
        putf(&b, "Content-Length: %zu\r\n", body.n);
    puts_(&b, "\r\n");
    size_t head_len = b.n;
    b.cap = MAX_REQ;
    if (flags & F_CHUNKED) {
        /* Chunks of a size the fuzz input chooses (the flags byte), at least 1. */
        size_t step = (size_t)(flags >> 5) * 997 + 1;
        for (size_t o = 0; o < body.n; o += step) {
            size_t k = body.n - o < step ? body.n - o : step;
            putf(&b, "%zx\r\n", k);
            put(&b, body.p + o, k);
            puts_(&b, "\r\n");
        }
        puts_(&b, "0\r\n\r\n");
    } else {
        put(&b, body.p, body.n);
    }

    if (getenv("FUZZ_HTTP_VERBOSE"))
        fprintf(stderr, "fuzz_http: request:\n%.*s\n", (int)(b.n > 2000 ? 2000 : b.n), g_req);
    int fd = dial(routes[ri].admin || delegated ? g_admin_port : g_port);
    if (fd < 0) die("cannot connect to the server");
    int64_t deadline = now_ms() + REQ_TIMEOUT_MS;
    response r;
    int complete = 0;
    size_t n = 0;
    int expect = (flags & F_EXPECT) && body.n > 0 && !(flags & F_HTTP10);
    if (expect) {
        /* Send the head, then wait briefly for 100 Continue or a final answer. */
        send_all(fd, g_req, head_len, deadline);
        n = read_response(fd, now_ms() + 50, head, &r, &complete, 1);
    }
    if (complete == 0) {
        size_t off = expect ? head_len : 0;
        send_all(fd, g_req + off, b.n - off, deadline);
        n += read_response(fd, deadline, head, &r, &complete, 0);
    }
    if (getenv("FUZZ_HTTP_VERBOSE"))
        fprintf(stderr, "fuzz_http: response:\n%.*s\n", (int)(n > 2000 ? 2000 : n), g_resp);
    g_stats[ri][complete == 1 ? r.status / 100 : 0]++;
    if (complete == 1)
        check(&r, head, routes[ri].path);
    else if (complete < 0)
        die("%s: the answer is not HTTP: %.200s", routes[ri].path, g_resp);
    else if (n == 0)
        note("timeout", 0, routes[ri].path);
    /* The same request once more on the kept-alive connection (a receipt is
     * stale by then): the per-connection state must start afresh. A server
     * that closed the connection (HTTP/1.0, an early 413) answers nothing. */
    if ((flags & F_AGAIN) && complete == 1 && r.total == n && send_all(fd, g_req, b.n, deadline) == 0) {
        n = read_response(fd, now_ms() + REQ_TIMEOUT_MS, head, &r, &complete, 0);
        if (getenv("FUZZ_HTTP_VERBOSE"))
            fprintf(stderr, "fuzz_http: response (again):\n%.*s\n", (int)(n > 2000 ? 2000 : n), g_resp);
        if (complete == 1)
            check(&r, head, routes[ri].path);
        else if (complete < 0)
            die("%s (again): the answer is not HTTP: %.200s", routes[ri].path, g_resp);
    }
    close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0 || size > MAX_INPUT) return 0;
    g_input = data;
    g_input_len = size;
    static int slow_ms = -1;
    if (slow_ms < 0) slow_ms = getenv("FUZZ_HTTP_SLOW_MS") ? atoi(getenv("FUZZ_HTTP_SLOW_MS")) : 0;
    int64_t t0 = now_ms();
    if (data[0] >= 0xF0)
        run_raw(data + 1, size - 1, data[0] == 0xFF ? g_admin_port : g_port);
    else
        run_structured(data, size);
    int64_t t1 = now_ms();
    health();
    int64_t t2 = now_ms();
    ensure_queues();
    /* FUZZ_HTTP_SLOW_MS=n: say which inputs take longer than n ms, and where. */
    if (slow_ms > 0 && now_ms() - t0 > slow_ms)
        fprintf(stderr,
                "fuzz_http: slow input (%d bytes, first 0x%02x): request %lld ms, health %lld ms, queues "
                "%lld ms\n",
                (int)size, data[0], (long long)(t1 - t0), (long long)(t2 - t1), (long long)(now_ms() - t2));
    return 0;
}
