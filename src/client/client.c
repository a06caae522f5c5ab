/* client.c: the client commands (see client.h), over a minimal blocking
 * HTTP/1.1 client: one connection per request, "Connection: close", the
 * response read to the end. Plain http only; the dependency list has no
 * HTTP client library, and a TLS-terminating proxy in front of the server is
 * the way to reach it over https. */
#include <errno.h>
#include <jansson.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "../auth/auth.h"
#include "../limits.h"
#include "../sluice.h"
#include "client.h"

enum { EXIT_OK = 0, EXIT_EMPTY = 1, EXIT_USAGE = 2, EXIT_AUTH = 3, EXIT_SERVER = 4 };

#define RESP_MAX (64 * 1024 * 1024)

typedef struct {
    char host[256];
    char port[8];
    char account[SL_NAME_MAX + 1];
    struct sl_auth_key key;
    int json;
    int sigv4; /* else the "Signed" scheme */
    int timeout_s;
} conn_cfg;

typedef struct {
    int status;
    char *body; /* malloc'ed, NUL-terminated */
    size_t len;
} response;

int sl_client_is_command(const char *cmd) {
    return strcmp(cmd, "queue") == 0 || strcmp(cmd, "put") == 0 || strcmp(cmd, "get") == 0 ||
           strcmp(cmd, "ack") == 0 || strcmp(cmd, "events") == 0 || strcmp(cmd, "subscriptions") == 0;
}

void sl_client_usage(FILE *f) {
    fprintf(
        f,
        "usage:\n"
        "  sluice queue create NAME      create a queue (no error when it exists)\n"
        "  sluice queue list             list the account's queues\n"
        "  sluice queue stats NAME       message counts of a queue\n"
        "  sluice queue delete NAME      delete a queue and its messages\n"
        "  sluice put QUEUE MESSAGE      put a message (\"-\" reads it from standard input)\n"
        "  sluice get QUEUE [--wait N] [--invisibility N]\n"
        "                                receive one message, waiting up to N (0-20) seconds\n"
        "  sluice ack QUEUE RECEIPT      acknowledge (delete) a received message\n"
        "  sluice events put EVENT       ingest an event, a JSON object (\"-\" reads it from standard "
        "input)\n"
        "  sluice events get ID          print one event\n"
        "  sluice events query [--type T]... [--tag T]... [--start TIME] [--end TIME] [--desc] [--limit N]\n"
        "                                print the matching events, one JSON object a line, to the end\n"
        "  sluice events tail [--type T]... [--tag T]... [--start TIME]\n"
        "                                the same, then follow the log as events arrive (Ctrl-C ends)\n"
        "  sluice subscriptions create NAME QUEUE [--type T]... [--tag T]... [--start now|earliest|TIME]\n"
        "                                route the matching events into QUEUE (no error when the same\n"
        "                                one exists)\n"
        "  sluice subscriptions list     the account's subscriptions: name, queue, state, position,\n"
        "                                delivered\n"
        "  sluice subscriptions delete NAME\n"
        "                                stop routing; what was put stays in the queue\n"
        "\n"
        "options (flag, environment):\n"
        "  --url URL        SLUICE_URL      the queue API (http://127.0.0.1:8080)\n"
        "  --account NAME   SLUICE_ACCOUNT  the account\n"
        "  --key KEY        SLUICE_KEY      one of its keys (requests are signed with it)\n"
        "  --scheme S       SLUICE_AUTH_SCHEME  sigv4 (AWS Signature Version 4, covers the body\n"
        "                                   and query; the default) or signed\n"
        "  --json                           print the server's JSON\n"
        "\n"
        "exit codes: 0 ok, 1 not found or nothing to get, 2 usage, 3 authentication or\n"
        "permission, 4 server or network failure\n");
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "sluice: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(sluice help client shows the commands)\n");
    va_end(ap);
    return EXIT_USAGE;
}

/* http://host[:port][/] -> host and port. */
static int parse_url(const char *url, conn_cfg *c) {
    if (strncmp(url, "http://", 7) != 0) return -1;
    const char *h = url + 7, *end;
    size_t hn;
    if (*h == '[') {
        end = strchr(h, ']');
        if (!end) return -1;
        hn = (size_t)(end - h - 1);
        h++;
        end++;
    } else {
        hn = strcspn(h, ":/");
        end = h + hn;
    }
    if (hn == 0 || hn >= sizeof c->host) return -1;
    memcpy(c->host, h, hn);
    c->host[hn] = '\0';
    snprintf(c->port, sizeof c->port, "80");
    if (*end == ':') {
        size_t pn = strspn(end + 1, "0123456789");
        if (pn == 0 || pn > 5) return -1;
        memcpy(c->port, end + 1, pn);
        c->port[pn] = '\0';
        end += 1 + pn;
    }
    return strcmp(end, "") == 0 || strcmp(end, "/") == 0 ? 0 : -1;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Decodes a chunked body in place; -1 when malformed. */
static long dechunk(char *b, size_t n) {
    size_t in = 0, out = 0;
    for (;;) {
        char *end;
        if (in >= n) return -1;
        unsigned long sz = strtoul(b + in, &end, 16);
        char *crlf = strstr(b + in, "\r\n");
        if (!crlf || end == b + in) return -1;
        in = (size_t)(crlf - b) + 2;
        if (sz == 0) break;
        if (sz > n - in) return -1;
        memmove(b + out, b + in, sz);
        out += sz;
        in += sz + 2;
    }
    b[out] = '\0';
    return (long)out;
}

/* The Authorization header (and the time header) of one request. */
static int sign(const conn_cfg *c, const char *method, const char *host, const char *path, const char *query,
                const char *ctype, const char *body, size_t body_len, char *auth, size_t cap) {
    int64_t now = sl_now_ms();
    if (!c->sigv4) {
        char t[32], sig[44];
        sl_auth_time_format(now, t);
        if (sl_auth_signed_sign(&c->key, c->account, method, path, strlen(path), t, sig) != 0) return -1;
        return snprintf(auth, cap, "Authorization: Signed %s\r\nX-Sluice-Request-Time: %s\r\n", sig, t) <
                       (int)cap
                   ? 0
                   : -1;
    }
    char amz[17], authz[512];
    sl_auth_amz_date_format(now, amz);
    struct sl_auth_header h[3] = {{"Host", host}, {"X-Amz-Date", amz}, {"Content-Type", ctype}};
    struct sl_auth_request rq = {.method = method,
                                 .path = path,
                                 .path_len = strlen(path),
                                 .query = query ? query : "",
                                 .query_len = query ? strlen(query) : 0,
                                 .headers = h,
                                 .n_headers = 3,
                                 .body = body,
                                 .body_len = body_len};
    char akid[2 * SL_NAME_MAX + 2];
    snprintf(akid, sizeof akid, "%s", c->account);
    if (sl_auth_sigv4_sign(&rq, &c->key, akid, "us-east-1", "sqs", authz, sizeof authz) != 0) return -1;
    return snprintf(auth, cap, "Authorization: %s\r\nX-Amz-Date: %s\r\n", authz, amz) < (int)cap ? 0 : -1;
}

/* One request, signed with SigV4 or the "Signed" scheme. path is the raw
 * path (the names in it are plain [A-Za-z0-9_.-]); query is already encoded.
 * Returns 0 and *resp, or EXIT_SERVER after saying why. */
static int http_call(const conn_cfg *c, const char *method, const char *path, const char *query,
                     const char *body, size_t body_len, response *resp) {
    memset(resp, 0, sizeof *resp);
    int hostv6 = strchr(c->host, ':') != NULL;
    char host[300], auth[800];
    snprintf(host, sizeof host, "%s%s%s:%s", hostv6 ? "[" : "", c->host, hostv6 ? "]" : "", c->port);
    const char *ctype = body && body_len && body[0] == '{' ? "application/json" : "text/plain; charset=utf-8";
    if (sign(c, method, host, path, query, ctype, body, body_len, auth, sizeof auth) != 0) {
        fprintf(stderr, "sluice: cannot sign the request\n");
        return EXIT_SERVER;
    }
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(c->host, c->port, &hints, &ai);
    if (gai != 0) {
        fprintf(stderr, "sluice: cannot resolve %s: %s\n", c->host, gai_strerror(gai));
        return EXIT_SERVER;
    }
    int fd = -1;
    for (struct addrinfo *p = ai; p; p = p->ai_next) {
        fd = socket(p->ai_family, p->ai_socktype, p->ai_protocol);
        if (fd < 0) continue;
        struct timeval tv = {c->timeout_s, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, p->ai_addr, p->ai_addrlen) == 0) break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd < 0) {
        fprintf(stderr, "sluice: cannot connect to %s port %s: %s\n", c->host, c->port, strerror(errno));
        return EXIT_SERVER;
    }
    char *head = NULL;
    int hn = asprintf(&head,
                      "%s %s%s%s HTTP/1.1\r\nHost: %s\r\n%sUser-Agent: sluice/%s\r\nConnection: close\r\n"
                      "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n",
                      method, path, query && *query ? "?" : "", query ? query : "", host, auth, SL_VERSION,
                      ctype, body_len);
    int rc = EXIT_SERVER;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    if (hn < 0 || write_all(fd, head, (size_t)hn) != 0 || (body_len && write_all(fd, body, body_len) != 0)) {
        fprintf(stderr, "sluice: cannot send the request: %s\n", strerror(errno));
        goto out;
    }
    for (;;) {
        if (cap - len < 65536) {
            if (cap > RESP_MAX) {
                fprintf(stderr, "sluice: the response is too large\n");
                goto out;
            }
            cap = cap ? cap * 2 : 65536;
            char *nb = realloc(buf, cap + 1);
            if (!nb) goto out;
            buf = nb;
        }
        ssize_t n = recv(fd, buf + len, cap - len, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            fprintf(stderr, "sluice: no answer from the server: %s\n", strerror(errno));
            goto out;
        }
        if (n == 0) break;
        len += (size_t)n;
    }
    if (!buf) goto bad;
    buf[len] = '\0';
    char *hend = strstr(buf, "\r\n\r\n");
    if (!hend || sscanf(buf, "HTTP/1.%*c %d", &resp->status) != 1) goto bad;
    *hend = '\0';
    char *b = hend + 4;
    size_t blen = len - (size_t)(b - buf);
    int chunked = 0;
    for (char *line = strstr(buf, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, "Transfer-Encoding:", 18) == 0 && strcasestr(line + 2, "chunked"))
            chunked = 1;
    }
    if (chunked) {
        long d = dechunk(b, blen);
        if (d < 0) goto bad;
        blen = (size_t)d;
    }
    resp->body = malloc(blen + 1);
    if (!resp->body) goto out;
    memcpy(resp->body, b, blen);
    resp->body[blen] = '\0';
    resp->len = blen;
    rc = 0;
    goto out;
bad:
    fprintf(stderr, "sluice: the server's answer is not HTTP\n");
out:
    free(head);
    free(buf);
    close(fd);
    return rc;
}

/* Exit code and message for a response that is not the success expected. */
static int report(const conn_cfg *c, const response *r) {
    int rc = r->status == 404 || r->status == 409                      ? EXIT_EMPTY
             : r->status == 401 || r->status == 403                    ? EXIT_AUTH
             : r->status >= 400 && r->status < 500 && r->status != 429 ? EXIT_USAGE
                                                                       : EXIT_SERVER;
    json_t *j = json_loadb(r->body, r->len, 0, NULL);
    const char *code = json_string_value(json_object_get(json_object_get(j, "error"), "code"));
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    if (c->json) printf("%s\n", r->body);
    fprintf(stderr, "sluice: %d %s: %s\n", r->status, code ? code : "error", msg ? msg : r->body);
    json_decref(j);
    return rc;
}

static void put_escaped(char *out, const char *s, size_t cap) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s && o + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
            strchr("-._~", ch)) {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
}

static int queue_name(const char *q) {
    if (sl_name_valid(q) && strcmp(q, ".") != 0 && strcmp(q, "..") != 0) return 0;
    usage_error("'%s' is not a queue name: [A-Za-z0-9_.-]{1,80}", q);
    return -1;
}

/* Calls and, on the expected status, hands the parsed body to the caller
 * (*out, may be NULL for an empty body). Returns an exit code. */
static int call_json(const conn_cfg *c, const char *method, const char *path, const char *query,
                     const char *body, size_t body_len, int expect, int expect2, response *resp,
                     json_t **out) {
    *out = NULL;
    int rc = http_call(c, method, path, query, body, body_len, resp);
    if (rc) return rc;
    if (resp->status != expect && resp->status != expect2) return report(c, resp);
    if (resp->len) *out = json_loadb(resp->body, resp->len, 0, NULL);
    if (c->json && resp->len) printf("%s\n", resp->body);
    return 0;
}

static int cmd_queue(conn_cfg *c, int argc, char **argv, const char *base) {
    if (argc < 1) return usage_error("queue needs create, list, stats or delete");
    const char *sub = argv[0];
    char path[512];
    response r = {0};
    json_t *j = NULL;
    int rc;
    if (strcmp(sub, "list") == 0) {
        if (argc != 1) return usage_error("queue list takes no name");
        rc = call_json(c, "GET", base, NULL, NULL, 0, 200, 200, &r, &j);
        if (rc == 0 && !c->json) {
            size_t i;
            json_t *q;
            json_array_foreach(j, i, q) printf("%s\n", json_string_value(json_object_get(q, "queueName")));
        }
    } else if (strcmp(sub, "create") == 0 || strcmp(sub, "stats") == 0 || strcmp(sub, "delete") == 0) {
        if (argc != 2) return usage_error("queue %s needs exactly one queue name", sub);
        if (queue_name(argv[1])) return EXIT_USAGE;
        const char *q = argv[1];
        if (strcmp(sub, "create") == 0) {
            char body[160];
            snprintf(body, sizeof body, "{\"queueName\":\"%s\"}", q);
            rc = call_json(c, "POST", base, NULL, body, strlen(body), 201, 200, &r, &j);
            if (rc == 0 && !c->json)
                printf(r.status == 201 ? "created queue %s\n" : "queue %s already exists\n", q);
        } else if (strcmp(sub, "stats") == 0) {
            snprintf(path, sizeof path, "%s/%s/statistics", base, q);
            rc = call_json(c, "GET", path, NULL, NULL, 0, 200, 200, &r, &j);
            if (rc == 0 && !c->json) {
                static const char *const f[] = {"size",    "visible",      "inFlight",
                                                "delayed", "deadLettered", "oldestMessageAgeSeconds"};
                for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
                    printf("%-24s %lld\n", f[i], (long long)json_integer_value(json_object_get(j, f[i])));
            }
        } else {
            snprintf(path, sizeof path, "%s/%s", base, q);
            rc = call_json(c, "DELETE", path, NULL, NULL, 0, 200, 200, &r, &j);
            if (rc == 0 && !c->json) printf("deleted queue %s\n", q);
        }
    } else {
        return usage_error("unknown queue command '%s'", sub);
    }
    json_decref(j);
    free(r.body);
    return rc;
}

/* Reads standard input up to the message limit. */
static char *read_stdin(size_t *n) {
    size_t cap = SL_MSG_MAX_DEFAULT + 2;
    char *b = malloc(cap);
    *n = b ? fread(b, 1, cap - 1, stdin) : 0;
    return b;
}

static int cmd_put(conn_cfg *c, int argc, char **argv, const char *base) {
    if (argc != 2) return usage_error("put needs QUEUE and MESSAGE");
    if (queue_name(argv[0])) return EXIT_USAGE;
    char path[512];
    snprintf(path, sizeof path, "%s/%s/messages", base, argv[0]);
    char *owned = NULL;
    const char *msg = argv[1];
    size_t len = strlen(msg);
    if (strcmp(msg, "-") == 0) {
        if (!(owned = read_stdin(&len))) return EXIT_SERVER;
        msg = owned;
    }
    response r = {0};
    json_t *j;
    int rc = call_json(c, "POST", path, NULL, msg, len, 201, 201, &r, &j);
    if (rc == 0 && !c->json) printf("%s\n", json_string_value(json_object_get(j, "messageId")));
    json_decref(j);
    free(r.body);
    free(owned);
    return rc;
}

static int int_flag(const char *name, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long n = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || n < lo || n > hi) {
        usage_error("%s needs a number from %ld to %ld", name, lo, hi);
        return -1;
    }
    *out = n;
    return 0;
}

static int cmd_get(conn_cfg *c, int argc, char **argv, const char *base) {
    const char *q = NULL;
    long wait = 0, invis = 30;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--wait") == 0) {
            if (int_flag("--wait", i + 1 < argc ? argv[++i] : NULL, 0, SL_WAIT_MAX, &wait)) return EXIT_USAGE;
        } else if (strcmp(argv[i], "--invisibility") == 0) {
            if (int_flag("--invisibility", i + 1 < argc ? argv[++i] : NULL, 0, SL_INVIS_MAX, &invis))
                return EXIT_USAGE;
        } else if (!q) {
            q = argv[i];
        } else {
            return usage_error("get takes one queue");
        }
    }
    if (!q) return usage_error("get needs QUEUE");
    if (queue_name(q)) return EXIT_USAGE;
    char path[512], body[128];
    snprintf(path, sizeof path, "%s/%s/messages/receive", base, q);
    snprintf(body, sizeof body, "{\"maxMessages\":1,\"waitSeconds\":%ld,\"invisibilitySeconds\":%ld}", wait,
             invis);
    c->timeout_s += (int)wait;
    response r = {0};
    json_t *j;
    int rc = call_json(c, "POST", path, NULL, body, strlen(body), 200, 200, &r, &j);
    json_t *m = json_array_get(json_object_get(j, "messages"), 0);
    if (rc == 0 && !m) {
        if (!c->json) fprintf(stderr, "sluice: no message in %s\n", q);
        rc = EXIT_EMPTY;
    } else if (rc == 0 && !c->json) {
        printf("%s\n", json_string_value(json_object_get(m, "message")));
        fprintf(stderr, "receipt: %s\nmessageId: %s, delivery %lld\n",
                json_string_value(json_object_get(m, "popReceipt")),
                json_string_value(json_object_get(m, "messageId")),
                (long long)json_integer_value(json_object_get(m, "deliveryCount")));
    }
    json_decref(j);
    free(r.body);
    return rc;
}

static int cmd_ack(conn_cfg *c, int argc, char **argv, const char *base) {
    if (argc != 2) return usage_error("ack needs QUEUE and RECEIPT");
    if (queue_name(argv[0])) return EXIT_USAGE;
    if (strlen(argv[1]) >= SL_RECEIPT_MAX || !*argv[1]) return usage_error("that is not a pop receipt");
    char path[512], query[3 * SL_RECEIPT_MAX + 16] = "popReceipt=";
    snprintf(path, sizeof path, "%s/%s/messages", base, argv[0]);
    put_escaped(query + strlen(query), argv[1], sizeof query - strlen(query));
    response r = {0};
    json_t *j;
    int rc = call_json(c, "DELETE", path, query, NULL, 0, 204, 204, &r, &j);
    if (rc == 0 && !c->json) printf("acked\n");
    json_decref(j);
    free(r.body);
    return rc;
}

/* --- The event log ----------------------------------------------------------- */

/* Appends "&name=value" (escaped) to the query q of capacity cap. */
static void add_param(char *q, size_t cap, const char *name, const char *value) {
    size_t n = strlen(q);
    if (n + strlen(name) + 3 >= cap) return;
    n += (size_t)snprintf(q + n, cap - n, "%s%s=", n ? "&" : "", name);
    put_escaped(q + n, value, cap - n);
}

/* query and tail: pages one query to its end, printing each event as a
 * line of JSON; tail then queries again from the range's end, once a
 * second, for as long as it runs. */
static int events_read(conn_cfg *c, int argc, char **argv, const char *ebase, int follow) {
    char filters[4096] = "", query[8192], path[512];
    const char *start = NULL;
    for (int i = 0; i < argc; i++) {
        int has = i + 1 < argc;
        if ((strcmp(argv[i], "--type") == 0 || strcmp(argv[i], "--tag") == 0) && has) {
            add_param(filters, sizeof filters, argv[i] + 2, argv[i + 1]);
            i++;
        } else if (strcmp(argv[i], "--start") == 0 && has) {
            start = argv[++i];
        } else if (!follow && (strcmp(argv[i], "--end") == 0 || strcmp(argv[i], "--limit") == 0) && has) {
            add_param(filters, sizeof filters, argv[i] + 2, argv[i + 1]);
            i++;
        } else if (!follow && strcmp(argv[i], "--desc") == 0) {
            add_param(filters, sizeof filters, "order", "desc");
        } else {
            return usage_error("events %s: unexpected '%s'", follow ? "tail" : "query", argv[i]);
        }
    }
    snprintf(path, sizeof path, "%s/events", ebase);
    char *token = NULL, *from = start ? strdup(start) : NULL;
    int rc = 0;
    for (;;) {
        snprintf(query, sizeof query, "%s", token ? "" : filters);
        if (token)
            add_param(query, sizeof query, "continuation", token);
        else if (from)
            add_param(query, sizeof query, "start", from);
        response r = {0};
        json_t *j = NULL;
        int json = c->json;
        c->json = 0; /* one event a line, not the page */
        rc = call_json(c, "GET", path, query, NULL, 0, 200, 200, &r, &j);
        c->json = json;
        if (rc == 0) {
            size_t i;
            json_t *e;
            json_array_foreach(json_object_get(j, "events"), i, e) {
                char *line = json_dumps(e, JSON_COMPACT | JSON_PRESERVE_ORDER);
                if (line) printf("%s\n", line);
                free(line);
            }
            fflush(stdout);
            const char *next = json_string_value(json_object_get(j, "continuation"));
            const char *end = json_string_value(json_object_get(j, "end"));
            free(token);
            token = next ? strdup(next) : NULL;
            if (!next && end) {
                free(from);
                from = strdup(end);
            }
        }
        json_decref(j);
        free(r.body);
        if (rc || (!token && !follow)) break;
        if (!token) sleep(1);
    }
    free(token);
    free(from);
    return rc;
}

static int cmd_events(conn_cfg *c, int argc, char **argv, const char *ebase) {
    if (argc < 1) return usage_error("events needs put, get, query or tail");
    const char *sub = argv[0];
    char path[1024];
    response r = {0};
    json_t *j = NULL;
    int rc;
    if (strcmp(sub, "put") == 0) {
        if (argc != 2) return usage_error("events put needs one EVENT, a JSON object");
        char *owned = NULL;
        const char *ev = argv[1];
        size_t len = strlen(ev);
        if (strcmp(ev, "-") == 0) {
            if (!(owned = read_stdin(&len))) return EXIT_SERVER;
            ev = owned;
        }
        snprintf(path, sizeof path, "%s/events", ebase);
        rc = call_json(c, "POST", path, NULL, ev, len, 201, 200, &r, &j);
        if (rc == 0 && !c->json)
            printf("%s %s%s\n", json_string_value(json_object_get(j, "id")),
                   json_string_value(json_object_get(j, "recordedAt")),
                   r.status == 200 ? " (stored already)" : "");
        free(owned);
    } else if (strcmp(sub, "get") == 0) {
        if (argc != 2 || !*argv[1] || strlen(argv[1]) > 128)
            return usage_error("events get needs one event ID");
        char id[3 * 128 + 1];
        put_escaped(id, argv[1], sizeof id);
        snprintf(path, sizeof path, "%s/events/%s", ebase, id);
        rc = call_json(c, "GET", path, NULL, NULL, 0, 200, 200, &r, &j);
        if (rc == 0 && !c->json) {
            char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
            if (s) printf("%s\n", s);
            free(s);
        }
    } else if (strcmp(sub, "query") == 0 || strcmp(sub, "tail") == 0) {
        return events_read(c, argc - 1, argv + 1, ebase, sub[0] == 't');
    } else {
        return usage_error("unknown events command '%s'", sub);
    }
    json_decref(j);
    free(r.body);
    return rc;
}

static int sub_name(const char *s) {
    if (sl_name_valid(s)) return 0;
    usage_error("'%s' is not a subscription name: [A-Za-z0-9_.-]{1,80}", s);
    return -1;
}

static int cmd_subscriptions(conn_cfg *c, int argc, char **argv, const char *ebase) {
    if (argc < 1) return usage_error("subscriptions needs create, list or delete");
    const char *sub = argv[0];
    char path[512];
    response r = {0};
    json_t *j = NULL;
    int rc;
    if (strcmp(sub, "list") == 0) {
        if (argc != 1) return usage_error("subscriptions list takes no argument");
        snprintf(path, sizeof path, "%s/subscriptions", ebase);
        rc = call_json(c, "GET", path, NULL, NULL, 0, 200, 200, &r, &j);
        size_t i;
        json_t *s;
        if (rc == 0 && !c->json) json_array_foreach(json_object_get(j, "subscriptions"), i, s) {
                printf("%s %s %s %s %lld\n", json_string_value(json_object_get(s, "subscriptionName")),
                       json_string_value(json_object_get(s, "queueName")),
                       json_string_value(json_object_get(s, "state")),
                       json_string_value(json_object_get(s, "position")),
                       (long long)json_integer_value(json_object_get(s, "delivered")));
            }
    } else if (strcmp(sub, "delete") == 0) {
        if (argc != 2) return usage_error("subscriptions delete needs one NAME");
        if (sub_name(argv[1])) return EXIT_USAGE;
        snprintf(path, sizeof path, "%s/subscriptions/%s", ebase, argv[1]);
        rc = call_json(c, "DELETE", path, NULL, NULL, 0, 200, 200, &r, &j);
    } else if (strcmp(sub, "create") == 0) {
        if (argc < 3) return usage_error("subscriptions create needs NAME and QUEUE");
        if (sub_name(argv[1]) || queue_name(argv[2])) return EXIT_USAGE;
        json_t *types = json_array(), *tags = json_array();
        json_t *body = json_pack("{s:s,s:s,s:{s:o,s:o}}", "subscriptionName", argv[1], "queueName", argv[2],
                                 "filter", "types", types, "tags", tags);
        if (!body) return EXIT_SERVER;
        rc = 0;
        for (int i = 3; i < argc && rc == 0; i++) {
            int type = strcmp(argv[i], "--type") == 0, tag = strcmp(argv[i], "--tag") == 0;
            if ((type || tag || strcmp(argv[i], "--start") == 0) && i + 1 < argc) {
                json_t *v = json_string(argv[++i]);
                if (type || tag)
                    json_array_append_new(type ? types : tags, v);
                else
                    json_object_set_new(body, "startFrom", v);
            } else {
                rc = usage_error("subscriptions create: unexpected '%s'", argv[i]);
            }
        }
        char *text = rc ? NULL : json_dumps(body, JSON_COMPACT);
        json_decref(body);
        if (rc) return rc;
        if (!text) return EXIT_SERVER;
        snprintf(path, sizeof path, "%s/subscriptions", ebase);
        rc = call_json(c, "POST", path, NULL, text, strlen(text), 201, 200, &r, &j);
        free(text);
        if (rc == 0 && !c->json)
            printf("%s from %s%s\n", json_string_value(json_object_get(j, "subscriptionName")),
                   json_string_value(json_object_get(j, "startFrom")),
                   r.status == 200 ? " (exists already)" : "");
    } else {
        return usage_error("unknown subscriptions command '%s'", sub);
    }
    json_decref(j);
    free(r.body);
    return rc;
}

int sl_client_main(int argc, char **argv) {
    conn_cfg c = {.timeout_s = 30};
    const char *url = getenv("SLUICE_URL"), *account = getenv("SLUICE_ACCOUNT"), *key = getenv("SLUICE_KEY");
    const char *scheme = getenv("SLUICE_AUTH_SCHEME");
    if (!url || !*url) url = "http://127.0.0.1:8080";
    const char *cmd = argv[0];
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    int nrest = 0;
    if (!rest) return EXIT_SERVER;
    for (int i = 1; i < argc; i++) {
        const char **dst = strcmp(argv[i], "--url") == 0       ? &url
                           : strcmp(argv[i], "--account") == 0 ? &account
                           : strcmp(argv[i], "--key") == 0     ? &key
                           : strcmp(argv[i], "--scheme") == 0  ? &scheme
                                                               : NULL;
        if (dst) {
            if (i + 1 >= argc) {
                free(rest);
                return usage_error("%s needs a value", argv[i]);
            }
            *dst = argv[++i];
        } else if (strcmp(argv[i], "--json") == 0) {
            c.json = 1;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            sl_client_usage(stdout);
            free(rest);
            return EXIT_OK;
        } else {
            rest[nrest++] = argv[i];
        }
    }
    int rc = EXIT_USAGE;
    if (parse_url(url, &c) != 0)
        usage_error("SLUICE_URL must look like http://HOST:PORT, not '%s'", url);
    else if (!account || !sl_name_valid(account))
        usage_error("set SLUICE_ACCOUNT (or --account) to the account name");
    else if (scheme && *scheme && strcmp(scheme, "sigv4") != 0 && strcmp(scheme, "signed") != 0)
        usage_error("the scheme is sigv4 or signed, not '%s'", scheme);
    else if (!key || sl_auth_key_init(&c.key, "key", key) != 0)
        usage_error("set SLUICE_KEY (or --key) to one of the account's keys (86 characters)");
    else {
        char base[160], ebase[160];
        c.sigv4 = !scheme || !*scheme || strcmp(scheme, "sigv4") == 0;
        snprintf(c.account, sizeof c.account, "%s", account);
        snprintf(base, sizeof base, "/api/v1/accounts/%s/queues", account);
        snprintf(ebase, sizeof ebase, "/api/v1/accounts/%s", account);
        if (strcmp(cmd, "events") == 0)
            rc = cmd_events(&c, nrest, rest, ebase);
        else if (strcmp(cmd, "subscriptions") == 0)
            rc = cmd_subscriptions(&c, nrest, rest, ebase);
        else if (strcmp(cmd, "queue") == 0)
            rc = cmd_queue(&c, nrest, rest, base);
        else if (strcmp(cmd, "put") == 0)
            rc = cmd_put(&c, nrest, rest, base);
        else if (strcmp(cmd, "get") == 0)
            rc = cmd_get(&c, nrest, rest, base);
        else
            rc = cmd_ack(&c, nrest, rest, base);
    }
    free(rest);
    return rc;
}
