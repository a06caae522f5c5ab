/* loadgen.c: the HTTP load generator of Sluice's benchmarks.
 *
 * Design: T threads (2 by default), each with its own epoll set and its own
 * share of N keep-alive HTTP/1.1 connections, each connection one client
 * that runs a closed loop (send a request, wait for its answer, send the
 * next). One request at a time per connection, no pipelining.
 *
 * Why epoll and not a thread per connection: this machine has 2 cores that
 * the load generator shares with the server it measures. A thread per
 * connection (128 of them in W1 64+64) costs a wake-up and a context switch
 * per response, taken from the server's cores; with epoll one thread drains
 * every ready connection per epoll_wait, as wrk does, and the generator
 * needs a fraction of a core. `--proto hello` shows it drives a trivial
 * endpoint at least as fast as wrk on the same machine.
 *
 * Protocols: `sluice` (the native API: put, batch put, receive, ack, batch
 * ack), `sqs` (Amazon SQS's JSON protocol, SigV4-signed: SendMessage,
 * SendMessageBatch, ReceiveMessage, DeleteMessage, DeleteMessageBatch; for
 * Sluice's SQS API and the SQS-compatible peers of bench/sqs.sh), `azure`
 * (Azure Queue REST API with a SAS query string, for Azurite), `hello` (GET
 * one path, for the HTTP ceiling).
 *
 * Roles: producers put (one message, or a batch of --batch); consumers
 * receive up to --recv-max messages and ack them (one DELETE per message for
 * a single message, with --ack-each, or on Azure; one batch ack otherwise).
 * Latency of every request goes into a log-linear histogram (hist.h) per
 * operation.
 *
 * SQS: every request is POST / with X-Amz-Target: AmazonSQS.<Action>,
 * Content-Type: application/x-amz-json-1.0 and AWS Signature Version 4
 * over content-type, host, x-amz-date and x-amz-target and the body's
 * SHA-256 (--access-key, by default the account, and --secret, the account
 * key; the signing key is derived once a day per thread). The QueueUrl in
 * each body is --queue-url (default http://host:port/account/queue). The
 * answers are read minimally: ReceiptHandle values out of ReceiveMessage,
 * and the entries of a batch's "Failed" list (counted in entry_failures,
 * which bench/sqs.sh requires to be 0, as it requires no non-2xx answer).
 *
 * Bounded: every run stops by itself at --duration (plus --warmup), or when
 * --put-count messages were put / --drain messages were acked, and never
 * later than --max-seconds. It connects only to --host, which run.sh sets to
 * 127.0.0.1.
 *
 * Output: one JSON object on stdout. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hist.h"

enum { PROTO_SLUICE, PROTO_AZURE, PROTO_HELLO, PROTO_EVENTS, PROTO_SQS };
enum { ROLE_HELLO, ROLE_PROD, ROLE_CONS };
enum { OP_PUT, OP_RECV, OP_ACK, OP_HELLO, OP_N };
static const char *op_name[OP_N] = {"put", "receive", "ack", "hello"};

#define MAX_RECV 32
#define RCPT_MAX 512 /* SQS receipt handles of some peers are long */
#define ID_MAX 80
#define MSG_LEN 100

/* --- Options -------------------------------------------------------------- */

static struct {
    const char *host, *path, *account, *queue, *sas, *label;
    const char *queue_url, *access_key, *secret, *region; /* sqs */
    const char *headers[8];
    int nheaders;
    int port, proto, producers, consumers, conns, threads;
    double duration, warmup, max_seconds;
    int batch, recv_max, ack_batch, ack_each, wait_s, invis_s;
    int size; /* --size: bytes a message (single puts), 0: MSG_LEN */
    long backoff_us;
    double rate;
    long put_count, drain;
    int tls;
} opt = {
    .host = "127.0.0.1",
    .path = "/health",
    .account = "dev",
    .queue = "bench",
    .sas = "",
    .label = "",
    .secret = "",
    .region = "us-east-1",
    .proto = PROTO_SLUICE,
    .threads = 2,
    .duration = 10,
    .warmup = 0,
    .max_seconds = 600,
    .batch = 1,
    .recv_max = 1,
    .wait_s = 0,
    .invis_s = 30,
    .backoff_us = 0,
};

/* --- Shared state ----------------------------------------------------------- */

static uint64_t t_start, t_measure, t_deadline, t_hard;
static atomic_long puts_claimed;   /* messages claimed by producers (with --put-count) */
static atomic_long acked_total;    /* messages acked, all the run */
static atomic_long acked_window;   /* messages acked inside the measured window */
static atomic_long put_window;      /* messages put inside the measured window */
static atomic_long put_total;
static atomic_ulong last_ack_ns;   /* when the last ack completed (drain) */
static atomic_int stop_all;

typedef struct conn conn;
typedef struct worker {
    pthread_t th;
    int id, ep;
    conn **conns;
    int nconns;
    hist h[OP_N];
    long empties, stale, reconnects, entry_failures;
} worker;

struct conn {
    worker *w;
    int fd, role, id, done;
    SSL *ssl;               /* with --tls */
    int op;                 /* the operation in flight */
    char *wbuf;
    size_t wlen, woff, wcap;
    char *rbuf;
    size_t rlen, rcap;
    uint64_t t_send;
    uint64_t wake_at;       /* sleeping until, or 0 */
    uint64_t next_put_at;   /* rate limit schedule */
    uint64_t put_interval;
    long seq;
    int claimed;            /* messages in the put in flight */
    int hello_built;        /* wbuf holds the hello request */
    /* receipts of the messages received and not yet acked */
    int nrec, ack_i;
    char rcpt[MAX_RECV][RCPT_MAX];
    char mid[MAX_RECV][ID_MAX];
};

static struct sockaddr_in srv_addr;
/* --tls: HTTPS without checking the certificate (a benchmark of the cost
 * of TLS, against a test certificate). Each reconnect is a full handshake. */
static SSL_CTX *tls_ctx;

static void die(const char *m) {
    perror(m);
    exit(2);
}

/* --- Buffers -------------------------------------------------------------- */

static void wreset(conn *c) {
    c->wlen = c->woff = 0;
}

static void wput(conn *c, const char *s, size_t n) {
    if (c->wlen + n + 1 > c->wcap) {
        while (c->wlen + n + 1 > c->wcap) c->wcap = c->wcap ? c->wcap * 2 : 4096;
        c->wbuf = realloc(c->wbuf, c->wcap);
        if (!c->wbuf) die("realloc");
    }
    memcpy(c->wbuf + c->wlen, s, n);
    c->wlen += n;
}

static void wstr(conn *c, const char *s) {
    wput(c, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void wfmt(conn *c, const char *f, ...) {
    char tmp[2048];
    va_list ap;
    va_start(ap, f);
    int n = vsnprintf(tmp, sizeof tmp, f, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp) {
        fprintf(stderr, "loadgen: request line too long\n");
        exit(2);
    }
    wput(c, tmp, (size_t)n);
}

static void urlenc(const char *in, char *out, size_t cap) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *in && o + 4 < cap; in++) {
        unsigned char ch = (unsigned char)*in;
        if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' ||
            ch == '_' || ch == '.' || ch == '~') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
}

/* A 100-byte message body, unique per connection and sequence number. */
static void make_msg(conn *c, char *m) {
    int n = snprintf(m, MSG_LEN + 1, "m-%d-%d-%ld-", c->w->id, c->id, c->seq++);
    memset(m + n, 'x', (size_t)(MSG_LEN - n));
    m[MSG_LEN] = '\0';
}

/* --- Requests --------------------------------------------------------------- */

static void req_head(conn *c, const char *method, const char *target, const char *ctype, size_t clen) {
    wfmt(c, "%s %s HTTP/1.1\r\nHost: %s:%d\r\n", method, target, opt.host, opt.port);
    if (opt.proto == PROTO_AZURE) wstr(c, "x-ms-version: 2021-12-02\r\n");
    for (int i = 0; i < opt.nheaders; i++) {
        wstr(c, opt.headers[i]);
        wstr(c, "\r\n");
    }
    if (ctype) wfmt(c, "Content-Type: %s\r\n", ctype);
    if (ctype || clen) wfmt(c, "Content-Length: %zu\r\n", clen);
    wstr(c, "\r\n");
}

static char qbase[512]; /* /api/v1/accounts/A/queues/Q or /A/Q */

/* --- SQS: the JSON protocol, signed with SigV4 ------------------------------ */

static char sqs_url[600]; /* the QueueUrl of every request body */
static char sqs_host[300]; /* the Host header's value, signed as "host" */

static void hexenc(const unsigned char *in, size_t n, char *out) {
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hx[in[i] >> 4];
        out[2 * i + 1] = hx[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* SHA-256 fetched from OpenSSL's provider once: OpenSSL 3 looks
 * EVP_sha256() (and SHA256()) up again on every call, which cost this
 * client more CPU than signing itself, on the machine it shares with the
 * server (the server does the same, src/auth/sigv4.c). */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;
static void sha256_fetch(void) {
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}
static const EVP_MD *sha256(void) {
    pthread_once(&sha256_once, sha256_fetch);
    if (!sha256_md) die("EVP_MD_fetch SHA256");
    return sha256_md;
}

/* Per thread: one digest context, reused for every hash. */
static __thread EVP_MD_CTX *md_ctx, *md_tmp;

static void md_ready(void) {
    if (md_ctx) return;
    md_ctx = EVP_MD_CTX_new();
    md_tmp = EVP_MD_CTX_new();
    if (!md_ctx || !md_tmp) die("EVP_MD_CTX_new");
}

static void hash256(const void *d, size_t dl, unsigned char out[32]) {
    md_ready();
    if (!EVP_DigestInit_ex2(md_ctx, sha256(), NULL) || !EVP_DigestUpdate(md_ctx, d, dl) ||
        !EVP_DigestFinal_ex(md_ctx, out, NULL))
        die("EVP_Digest");
}

static void hmac256(const void *key, size_t kl, const void *d, size_t dl, unsigned char out[32]) {
    unsigned int ol = 32;
    if (!HMAC(sha256(), key, (int)kl, d, dl, out, &ol)) die("HMAC");
}

/* Per thread: X-Amz-Date of the current second, and the signing key
 * (kSigning) of the current UTC day, derived when the day changes, kept as
 * the two SHA-256 states of HMAC (RFC 2104) after the key's padded block:
 * a signature then costs two digests of its data, without OpenSSL's
 * one-shot HMAC(), which sets up a MAC context (fetch, allocation, locks)
 * on every call and cost this client more than the hashing. */
static __thread struct {
    time_t sec;
    char amz[17], day[9];
    EVP_MD_CTX *inner, *outer;
} sigv4;

static void sigv4_key(const unsigned char key[32]) {
    unsigned char pad[64];
    if (!sigv4.inner && (!(sigv4.inner = EVP_MD_CTX_new()) || !(sigv4.outer = EVP_MD_CTX_new())))
        die("EVP_MD_CTX_new");
    for (int i = 0; i < 64; i++)
        pad[i] = (unsigned char)((i < 32 ? key[i] : 0) ^ 0x36);
    if (!EVP_DigestInit_ex2(sigv4.inner, sha256(), NULL) || !EVP_DigestUpdate(sigv4.inner, pad, 64))
        die("EVP_DigestInit");
    for (int i = 0; i < 64; i++)
        pad[i] ^= 0x36 ^ 0x5c;
    if (!EVP_DigestInit_ex2(sigv4.outer, sha256(), NULL) || !EVP_DigestUpdate(sigv4.outer, pad, 64))
        die("EVP_DigestInit");
}

/* HMAC-SHA256 of d under the day's signing key. */
static void sigv4_mac(const void *d, size_t dl, unsigned char out[32]) {
    unsigned char ih[32];
    md_ready();
    if (!EVP_MD_CTX_copy_ex(md_tmp, sigv4.inner) || !EVP_DigestUpdate(md_tmp, d, dl) ||
        !EVP_DigestFinal_ex(md_tmp, ih, NULL) || !EVP_MD_CTX_copy_ex(md_tmp, sigv4.outer) ||
        !EVP_DigestUpdate(md_tmp, ih, 32) || !EVP_DigestFinal_ex(md_tmp, out, NULL))
        die("HMAC");
}

static void sigv4_clock(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec == sigv4.sec) return;
    struct tm tm;
    char day[9];
    gmtime_r(&ts.tv_sec, &tm);
    strftime(sigv4.amz, sizeof sigv4.amz, "%Y%m%dT%H%M%SZ", &tm);
    strftime(day, sizeof day, "%Y%m%d", &tm);
    sigv4.sec = ts.tv_sec;
    if (strcmp(day, sigv4.day) != 0) {
        static __thread char k0[1024];
        int kl = snprintf(k0, sizeof k0, "AWS4%s", opt.secret);
        unsigned char a[32], b[32], c[32], k[32];
        hmac256(k0, (size_t)kl, day, 8, a);
        hmac256(a, 32, opt.region, strlen(opt.region), b);
        hmac256(b, 32, "sqs", 3, c);
        hmac256(c, 32, "aws4_request", 12, k);
        sigv4_key(k);
        memcpy(sigv4.day, day, sizeof day);
    }
}

/* Appends the strings up to the NULL to buf at *n (the caller sizes buf). */
__attribute__((sentinel)) static void cat(char *buf, size_t *n, ...) {
    va_list ap;
    va_start(ap, n);
    for (const char *s; (s = va_arg(ap, const char *)) != NULL;) {
        size_t l = strlen(s);
        memcpy(buf + *n, s, l);
        *n += l;
    }
    va_end(ap);
    buf[*n] = '\0';
}

/* One SQS action: POST / with the JSON body, signed (AWS's canonical
 * request: the URI "/", no query, the four headers, the body's hash).
 * Built with memcpy, not printf: on the 2 cores it shares with the server,
 * formatting was this client's largest cost after the kernel. */
static void sqs_request(conn *c, const char *action, const char *body, size_t bl) {
    unsigned char h[32];
    char bodyhash[65], crhash[65], sig[65], cr[1024], sts[512], head[2048], clen[24];
    size_t cl = 0, sl = 0, hl = 0;
    sigv4_clock();
    hash256(body, bl, h);
    hexenc(h, 32, bodyhash);
    cat(cr, &cl, "POST\n/\n\ncontent-type:application/x-amz-json-1.0\nhost:", sqs_host,
        "\nx-amz-date:", sigv4.amz, "\nx-amz-target:AmazonSQS.", action,
        "\n\ncontent-type;host;x-amz-date;x-amz-target\n", bodyhash, NULL);
    hash256(cr, cl, h);
    hexenc(h, 32, crhash);
    cat(sts, &sl, "AWS4-HMAC-SHA256\n", sigv4.amz, "\n", sigv4.day, "/", opt.region, "/sqs/aws4_request\n",
        crhash, NULL);
    sigv4_mac(sts, sl, h);
    hexenc(h, 32, sig);
    snprintf(clen, sizeof clen, "%zu", bl);
    cat(head, &hl, "POST / HTTP/1.1\r\nHost: ", sqs_host,
        "\r\nContent-Type: application/x-amz-json-1.0\r\nX-Amz-Target: AmazonSQS.", action,
        "\r\nX-Amz-Date: ", sigv4.amz, "\r\nAuthorization: AWS4-HMAC-SHA256 Credential=", opt.access_key, "/",
        sigv4.day, "/", opt.region,
        "/sqs/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=", sig,
        "\r\nContent-Length: ", clen, "\r\n\r\n", NULL);
    wreset(c);
    wput(c, head, hl);
    wput(c, body, bl);
}

#define SQS_BATCH_MAX 10
static __thread char sqs_body[SQS_BATCH_MAX * (RCPT_MAX + MSG_LEN + 64) + 1024];

static void sqs_put(conn *c, int n) {
    char m[MSG_LEN + 1];
    size_t bl;
    if (n == 1 && opt.batch == 1) {
        make_msg(c, m);
        bl = (size_t)sprintf(sqs_body, "{\"QueueUrl\":\"%s\",\"MessageBody\":\"%s\"}", sqs_url, m);
        sqs_request(c, "SendMessage", sqs_body, bl);
        return;
    }
    bl = (size_t)sprintf(sqs_body, "{\"QueueUrl\":\"%s\",\"Entries\":[", sqs_url);
    for (int i = 0; i < n; i++) {
        make_msg(c, m);
        bl += (size_t)sprintf(sqs_body + bl, "%s{\"Id\":\"%d\",\"MessageBody\":\"%s\"}", i ? "," : "", i, m);
    }
    bl += (size_t)sprintf(sqs_body + bl, "]}");
    sqs_request(c, "SendMessageBatch", sqs_body, bl);
}

static void sqs_recv(conn *c) {
    size_t bl = (size_t)sprintf(sqs_body,
                                "{\"QueueUrl\":\"%s\",\"MaxNumberOfMessages\":%d,\"VisibilityTimeout\":%d,"
                                "\"WaitTimeSeconds\":%d}",
                                sqs_url, opt.recv_max, opt.invis_s, opt.wait_s);
    sqs_request(c, "ReceiveMessage", sqs_body, bl);
}

/* A handle is sent back exactly as it came (the content of a JSON string). */
static void sqs_ack(conn *c, int one) {
    size_t bl;
    if (one) {
        bl = (size_t)sprintf(sqs_body, "{\"QueueUrl\":\"%s\",\"ReceiptHandle\":\"%s\"}", sqs_url,
                             c->rcpt[c->ack_i]);
        sqs_request(c, "DeleteMessage", sqs_body, bl);
        return;
    }
    bl = (size_t)sprintf(sqs_body, "{\"QueueUrl\":\"%s\",\"Entries\":[", sqs_url);
    for (int i = 0; i < c->nrec; i++)
        bl += (size_t)sprintf(sqs_body + bl, "%s{\"Id\":\"%d\",\"ReceiptHandle\":\"%s\"}", i ? "," : "", i,
                              c->rcpt[i]);
    bl += (size_t)sprintf(sqs_body + bl, "]}");
    sqs_request(c, "DeleteMessageBatch", sqs_body, bl);
}

/* Whether the ack in flight is of one message (receipt ack_i): always on
 * Azure, with --ack-each, or for a single message without --ack-batch. */
static int ack_one(const conn *c) {
    return opt.proto == PROTO_AZURE || opt.ack_each || (c->nrec == 1 && !opt.ack_batch);
}

/* W5's event: one of 4 types, 2 of 8 tags, 200 bytes of data (a JSON
 * string), no id (the server makes one). */
#define EV_DATA_LEN 200
static int make_event(conn *c, char *out) {
    char d[EV_DATA_LEN - 1];
    long seq = c->seq++;
    int n = snprintf(d, sizeof d, "%d-%d-%ld-", c->w->id, c->id, seq);
    memset(d + n, 'x', sizeof d - 1 - (size_t)n);
    d[sizeof d - 1] = '\0';
    return sprintf(out, "{\"type\":\"t%ld\",\"tags\":[\"g%ld\",\"r%ld\"],\"data\":\"%s\"}", seq % 4, seq % 8,
                   4 + (seq / 8) % 4, d);
}

static void build_put(conn *c, int n) {
    char m[MSG_LEN + 1], target[1024];
    wreset(c);
    c->op = OP_PUT;
    if (opt.proto == PROTO_EVENTS) {
        static __thread char body[100 * (EV_DATA_LEN + 64) + 32];
        size_t bl = 0;
        if (opt.batch == 1) {
            bl = (size_t)make_event(c, body);
            snprintf(target, sizeof target, "/api/v1/accounts/%s/events", opt.account);
        } else {
            bl += (size_t)sprintf(body, "{\"events\":[");
            for (int i = 0; i < n; i++) {
                if (i) body[bl++] = ',';
                bl += (size_t)make_event(c, body + bl);
            }
            bl += (size_t)sprintf(body + bl, "]}");
            snprintf(target, sizeof target, "/api/v1/accounts/%s/events/batch", opt.account);
        }
        req_head(c, "POST", target, "application/json", bl);
        wput(c, body, bl);
        return;
    }
    if (opt.proto == PROTO_SQS) {
        sqs_put(c, n);
        return;
    }
    if (opt.proto == PROTO_AZURE) {
        char body[512];
        make_msg(c, m);
        int bl = snprintf(body, sizeof body, "<QueueMessage><MessageText>%s</MessageText></QueueMessage>", m);
        snprintf(target, sizeof target, "%s/messages?%s", qbase, opt.sas);
        req_head(c, "POST", target, "application/xml", (size_t)bl);
        wput(c, body, (size_t)bl);
        return;
    }
    if (n == 1 && opt.batch == 1) {
        make_msg(c, m);
        snprintf(target, sizeof target, "%s/messages", qbase);
        if (opt.size) { /* --size: the same text, padded with 'x' to opt.size bytes */
            static __thread char *big;
            if (!big && !(big = malloc((size_t)opt.size))) die("malloc");
            memcpy(big, m, MSG_LEN);
            memset(big + MSG_LEN, 'x', (size_t)(opt.size - MSG_LEN));
            req_head(c, "POST", target, "text/plain", (size_t)opt.size);
            wput(c, big, (size_t)opt.size);
            return;
        }
        req_head(c, "POST", target, "text/plain", MSG_LEN);
        wput(c, m, MSG_LEN);
        return;
    }
    /* batch: {"messages":[{"message":"..."},...]} */
    static __thread char body[100 * (MSG_LEN + 16) + 32];
    size_t bl = 0;
    bl += (size_t)sprintf(body + bl, "{\"messages\":[");
    for (int i = 0; i < n; i++) {
        make_msg(c, m);
        bl += (size_t)sprintf(body + bl, "%s{\"message\":\"%s\"}", i ? "," : "", m);
    }
    bl += (size_t)sprintf(body + bl, "]}");
    snprintf(target, sizeof target, "%s/messages/batch", qbase);
    req_head(c, "POST", target, "application/json", bl);
    wput(c, body, bl);
}

static void build_recv(conn *c) {
    char target[1024];
    wreset(c);
    c->op = OP_RECV;
    if (opt.proto == PROTO_SQS) {
        sqs_recv(c);
        return;
    }
    if (opt.proto == PROTO_AZURE) {
        snprintf(target, sizeof target, "%s/messages?numofmessages=%d&visibilitytimeout=%d&%s", qbase, opt.recv_max,
                 opt.invis_s, opt.sas);
        req_head(c, "GET", target, NULL, 0);
        return;
    }
    char body[128];
    int bl = snprintf(body, sizeof body, "{\"maxMessages\":%d,\"invisibilitySeconds\":%d,\"waitSeconds\":%d}",
                      opt.recv_max, opt.invis_s, opt.wait_s);
    snprintf(target, sizeof target, "%s/messages/receive", qbase);
    req_head(c, "POST", target, "application/json", (size_t)bl);
    wput(c, body, (size_t)bl);
}

static void build_ack(conn *c) {
    char target[RCPT_MAX * 3 + 1600], enc[RCPT_MAX * 3];
    wreset(c);
    c->op = OP_ACK;
    if (opt.proto == PROTO_SQS) {
        sqs_ack(c, ack_one(c));
        return;
    }
    if (opt.proto == PROTO_AZURE) {
        urlenc(c->rcpt[c->ack_i], enc, sizeof enc);
        snprintf(target, sizeof target, "%s/messages/%s?popreceipt=%s&%s", qbase, c->mid[c->ack_i], enc, opt.sas);
        req_head(c, "DELETE", target, NULL, 0);
        return;
    }
    if (ack_one(c)) {
        urlenc(c->rcpt[c->ack_i], enc, sizeof enc);
        snprintf(target, sizeof target, "%s/messages?popReceipt=%s", qbase, enc);
        req_head(c, "DELETE", target, NULL, 0);
        return;
    }
    static __thread char body[MAX_RECV * (RCPT_MAX + 4) + 32];
    size_t bl = (size_t)sprintf(body, "{\"popReceipts\":[");
    for (int i = 0; i < c->nrec; i++) bl += (size_t)sprintf(body + bl, "%s\"%s\"", i ? "," : "", c->rcpt[i]);
    bl += (size_t)sprintf(body + bl, "]}");
    snprintf(target, sizeof target, "%s/messages/ack", qbase);
    req_head(c, "POST", target, "application/json", bl);
    wput(c, body, bl);
}

static void build_hello(conn *c) {
    c->op = OP_HELLO;
    if (c->wlen > 0 && c->hello_built) { /* the same bytes every time */
        c->woff = 0;
        return;
    }
    wreset(c);
    req_head(c, "GET", opt.path, NULL, 0);
    c->hello_built = 1;
}

/* --- Connections ------------------------------------------------------------- */

static void conn_open(conn *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&srv_addr, sizeof srv_addr) < 0 && errno != EINPROGRESS) die("connect");
    c->fd = fd;
    c->rlen = 0;
    if (tls_ctx) {
        if (!(c->ssl = SSL_new(tls_ctx))) die("SSL_new");
        SSL_set_fd(c->ssl, fd);
        SSL_set_connect_state(c->ssl); /* the first SSL_write drives the handshake */
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(c->w->ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
}

static void conn_close(conn *c) {
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        epoll_ctl(c->w->ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
}

/* Writes what is pending; returns -1 on a broken connection. */
/* One read or write through TLS when it is on: like read(2)/write(2), with
 * EAGAIN for "wait for the socket" either way (level-triggered epoll keeps
 * both directions watched while a request is being written). */
static ssize_t io(conn *c, int wr, void *buf, size_t n) {
    if (!c->ssl) return wr ? write(c->fd, buf, n) : read(c->fd, buf, n);
    ERR_clear_error();
    int k = wr ? SSL_write(c->ssl, buf, (int)n) : SSL_read(c->ssl, buf, (int)n);
    if (k > 0) return k;
    int e = SSL_get_error(c->ssl, k);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        errno = EAGAIN;
        return -1;
    }
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    errno = EPIPE;
    return -1;
}

static int conn_flush(conn *c) {
    while (c->woff < c->wlen) {
        ssize_t k = io(c, 1, c->wbuf + c->woff, c->wlen - c->woff);
        if (k > 0) {
            c->woff += (size_t)k;
            continue;
        }
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
            epoll_ctl(c->w->ep, EPOLL_CTL_MOD, c->fd, &ev);
            return 0;
        }
        if (k < 0 && errno == EINTR) continue;
        return -1;
    }
    return 0;
}

static void conn_send(conn *c) {
    c->t_send = now_ns();
    c->wake_at = 0;
    if (c->fd < 0) conn_open(c); /* EPOLLOUT will flush once connected */
    else if (conn_flush(c) < 0) {
        conn_close(c);
        c->w->reconnects++;
        c->woff = 0;
        conn_open(c);
    }
}

/* --- Responses ------------------------------------------------------------------ */

/* Finds a header line starting with n ("\r\nname:"), case-insensitively,
 * looking only at line starts. */
static const char *memmem_ci(const char *h, size_t hl, const char *n) {
    size_t nl = strlen(n);
    const char *p = h, *end = h + hl;
    while (p + nl <= end) {
        const char *cr = memchr(p, '\r', (size_t)(end - p));
        if (!cr || cr + nl > end) return NULL;
        if (strncasecmp(cr, n, nl) == 0) return cr;
        p = cr + 1;
    }
    return NULL;
}

/* Parses one complete response from rbuf. Returns 1 when complete (sets
 * *status, *body, *blen, *consumed, *close), 0 when more bytes are needed,
 * -1 on garbage. A chunked body is decoded in place. */
static int parse_response(conn *c, int *status, char **body, size_t *blen, size_t *consumed, int *close_after) {
    char *b = c->rbuf;
    size_t n = c->rlen;
    char *eoh = memmem(b, n, "\r\n\r\n", 4);
    if (!eoh) return 0;
    size_t hl = (size_t)(eoh - b) + 4;
    if (n < 12 || memcmp(b, "HTTP/1.", 7) != 0) return -1;
    *status = atoi(b + 9);
    *close_after = memmem_ci(b, hl, "\r\nconnection: close") != NULL;
    if (*status == 204 || *status == 304 || *status / 100 == 1) {
        *body = b + hl;
        *blen = 0;
        *consumed = hl;
        return 1;
    }
    const char *cl = memmem_ci(b, hl, "\r\ncontent-length:");
    if (cl) {
        size_t len = strtoul(cl + 17, NULL, 10);
        if (n < hl + len) return 0;
        *body = b + hl;
        *blen = len;
        *consumed = hl + len;
        return 1;
    }
    if (memmem_ci(b, hl, "\r\ntransfer-encoding: chunked")) {
        /* check completeness first, then decode */
        size_t p = hl;
        for (;;) {
            char *le = memmem(b + p, n - p, "\r\n", 2);
            if (!le) return 0;
            size_t sz = strtoul(b + p, NULL, 16);
            size_t data = (size_t)(le - b) + 2;
            if (sz == 0) {
                char *end = memmem(b + data - 2, n - (data - 2), "\r\n\r\n", 4);
                if (!end) return 0;
                *consumed = (size_t)(end - b) + 4;
                break;
            }
            if (n < data + sz + 2) return 0;
            p = data + sz + 2;
        }
        size_t out = hl;
        p = hl;
        for (;;) {
            char *le = memmem(b + p, *consumed - p, "\r\n", 2);
            size_t sz = strtoul(b + p, NULL, 16);
            size_t data = (size_t)(le - b) + 2;
            if (sz == 0) break;
            memmove(b + out, b + data, sz);
            out += sz;
            p = data + sz + 2;
        }
        *body = b + hl;
        *blen = out - hl;
        return 1;
    }
    /* no length: an empty body on a keep-alive connection */
    *body = b + hl;
    *blen = 0;
    *consumed = hl;
    return 1;
}

/* Collects receipts (and, on Azure, message ids) from a receive answer. */
static void parse_receipts(conn *c, const char *body, size_t blen) {
    c->nrec = 0;
    c->ack_i = 0;
    const char *p = body, *end = body + blen;
    if (opt.proto == PROTO_AZURE) {
        while (c->nrec < MAX_RECV) {
            const char *a = memmem(p, (size_t)(end - p), "<MessageId>", 11);
            if (!a) break;
            a += 11;
            const char *ae = memmem(a, (size_t)(end - a), "</MessageId>", 12);
            const char *r = memmem(a, (size_t)(end - a), "<PopReceipt>", 12);
            if (!ae || !r) break;
            r += 12;
            const char *re = memmem(r, (size_t)(end - r), "</PopReceipt>", 13);
            if (!re || ae - a >= ID_MAX || re - r >= RCPT_MAX) break;
            memcpy(c->mid[c->nrec], a, (size_t)(ae - a));
            c->mid[c->nrec][ae - a] = '\0';
            memcpy(c->rcpt[c->nrec], r, (size_t)(re - r));
            c->rcpt[c->nrec][re - r] = '\0';
            c->nrec++;
            p = re;
        }
        return;
    }
    if (opt.proto == PROTO_SQS) {
        /* "ReceiptHandle": "..." (some peers put spaces around the colon);
         * the value is kept as its JSON text, escapes and all */
        while (c->nrec < MAX_RECV) {
            const char *r = memmem(p, (size_t)(end - p), "\"ReceiptHandle\"", 15);
            if (!r) break;
            r += 15;
            while (r < end && (*r == ' ' || *r == '\t' || *r == '\r' || *r == '\n' || *r == ':')) r++;
            if (r >= end || *r != '"') break;
            const char *re = ++r;
            while (re < end && *re != '"') re += *re == '\\' ? 2 : 1;
            if (re >= end || re - r >= RCPT_MAX) break;
            memcpy(c->rcpt[c->nrec], r, (size_t)(re - r));
            c->rcpt[c->nrec][re - r] = '\0';
            c->nrec++;
            p = re + 1;
        }
        return;
    }
    while (c->nrec < MAX_RECV) {
        const char *r = memmem(p, (size_t)(end - p), "\"popReceipt\":\"", 14);
        if (!r) break;
        r += 14;
        const char *re = memchr(r, '"', (size_t)(end - r));
        if (!re || re - r >= RCPT_MAX) break;
        memcpy(c->rcpt[c->nrec], r, (size_t)(re - r));
        c->rcpt[c->nrec][re - r] = '\0';
        c->nrec++;
        p = re;
    }
}

static long count_str(const char *b, size_t n, const char *s) {
    long k = 0;
    size_t sl = strlen(s);
    const char *p = b, *end = b + n;
    while ((p = memmem(p, (size_t)(end - p), s, sl))) {
        k++;
        p += sl;
    }
    return k;
}

/* Claims up to want messages for a producer under --put-count; 0 when none left. */
static int claim_puts(int want) {
    if (opt.put_count <= 0) return want;
    long before = atomic_fetch_add(&puts_claimed, want);
    if (before >= opt.put_count) return 0;
    long left = opt.put_count - before;
    return left < want ? (int)left : want;
}

static void start_put(conn *c, uint64_t now) {
    int want = opt.proto == PROTO_AZURE ? 1 : opt.batch;
    int n = claim_puts(want);
    if (n == 0) {
        c->done = 1;
        return;
    }
    c->claimed = n;
    build_put(c, n);
    if (c->put_interval) {
        if (c->next_put_at == 0) c->next_put_at = now;
        uint64_t at = c->next_put_at;
        c->next_put_at += c->put_interval * (uint64_t)n;
        if (at > now) {
            c->wake_at = at; /* send when the schedule says */
            return;
        }
    }
    conn_send(c);
}

static void start_recv(conn *c, uint64_t now, int backoff) {
    build_recv(c);
    if (backoff && opt.backoff_us > 0) {
        c->wake_at = now + (uint64_t)opt.backoff_us * 1000;
        return;
    }
    conn_send(c);
}

static int finished(uint64_t now) {
    if (atomic_load(&stop_all)) return 1;
    if (now >= t_deadline || now >= t_hard) return 1;
    if (opt.drain > 0 && atomic_load(&acked_total) >= opt.drain) return 1;
    return 0;
}

/* Called when a response to c's request is complete. */
static void on_response(conn *c, int status, char *body, size_t blen) {
    worker *w = c->w;
    uint64_t now = now_ns();
    int in_window = c->t_send >= t_measure && now <= t_deadline;
    int ok = status >= 200 && status < 300;
    hist *h = &w->h[c->op];
    /* a drain's empty receives are its tail: not a latency of a receive that found work */
    int rec = in_window;
    if (opt.drain > 0 && c->op == OP_RECV && ok) {
        const char *mark = opt.proto == PROTO_AZURE ? "<MessageId>"
                           : opt.proto == PROTO_SQS ? "\"ReceiptHandle\""
                                                    : "popReceipt";
        if (!memmem(body, blen, mark, strlen(mark))) rec = 0;
    }
    if (rec) {
        if (ok) hist_add(h, now - c->t_send);
        else h->errors++;
    } else if (!ok) {
        h->errors++;
    }
    if (!ok && c->op != OP_HELLO) {
        static atomic_int shown;
        if (atomic_fetch_add(&shown, 1) < 5)
            fprintf(stderr, "loadgen: %s answered %d: %.*s\n", op_name[c->op], status, (int)(blen > 200 ? 200 : blen),
                    body);
    }
    int stop = finished(now);
    switch (c->op) {
    case OP_HELLO:
        if (stop) c->done = 1;
        else {
            build_hello(c);
            conn_send(c);
        }
        return;
    case OP_PUT:
        if (ok) {
            int n = c->claimed;
            if (opt.proto == PROTO_SQS && (n > 1 || opt.batch > 1)) {
                /* SendMessageBatch: the entries in "Failed" were not put */
                long f = count_str(body, blen, "\"SenderFault\"");
                w->entry_failures += f;
                n -= (int)f;
            }
            atomic_fetch_add(&put_total, n);
            if (in_window) atomic_fetch_add(&put_window, n);
        }
        if (stop) c->done = 1;
        else start_put(c, now);
        return;
    case OP_RECV:
        if (ok) parse_receipts(c, body, blen);
        else c->nrec = 0;
        if (c->nrec == 0) {
            if (ok && in_window) w->empties++;
            if (stop) c->done = 1;
            else start_recv(c, now, 1);
            return;
        }
        build_ack(c); /* ack what we hold even after the deadline: leave nothing leased */
        conn_send(c);
        return;
    case OP_ACK: {
        int n = 1;
        if (!ack_one(c)) {
            n = c->nrec;
            if (ok && opt.proto == PROTO_SLUICE) {
                long st = count_str(body, blen, "\"status\":409");
                w->stale += st;
                n -= (int)st;
            } else if (ok && opt.proto == PROTO_SQS) { /* DeleteMessageBatch's "Failed" entries */
                long f = count_str(body, blen, "\"SenderFault\"");
                w->entry_failures += f;
                n -= (int)f;
            }
        } else if (status == 409 || status == 404) {
            w->stale++;
        }
        if (ok && n > 0) {
            atomic_fetch_add(&acked_total, n);
            if (in_window) atomic_fetch_add(&acked_window, n);
            atomic_store(&last_ack_ns, now);
        }
        if (ack_one(c) && ++c->ack_i < c->nrec) {
            build_ack(c);
            conn_send(c);
            return;
        }
        c->nrec = 0;
        if (finished(now)) c->done = 1;
        else start_recv(c, now, 0);
        return;
    }
    }
}

static void on_readable(conn *c) {
    for (;;) {
        if (c->rcap - c->rlen < 4096) {
            c->rcap = c->rcap ? c->rcap * 2 : 16384;
            c->rbuf = realloc(c->rbuf, c->rcap);
            if (!c->rbuf) die("realloc");
        }
        if (c->ssl && c->woff < c->wlen && conn_flush(c) < 0) break; /* a handshake waiting to read */
        ssize_t k = io(c, 0, c->rbuf + c->rlen, c->rcap - c->rlen - 1);
        if (k > 0) {
            c->rlen += (size_t)k;
            int status, close_after;
            char *body;
            size_t blen, consumed;
            int pr = parse_response(c, &status, &body, &blen, &consumed, &close_after);
            if (pr == 0) continue;
            if (pr < 0) {
                fprintf(stderr, "loadgen: garbage from server\n");
                exit(2);
            }
            body[blen] = '\0'; /* rcap keeps a spare byte */
            if (close_after) {
                /* answer it, then reconnect for the next request */
                conn_close(c);
                c->w->reconnects++;
                c->rlen = 0;
                on_response(c, status, body, blen);
                if (!c->done && c->wake_at == 0) {
                    c->woff = 0;
                    conn_open(c);
                }
                return;
            }
            on_response(c, status, body, blen);
            memmove(c->rbuf, c->rbuf + consumed, c->rlen - consumed);
            c->rlen -= consumed;
            return;
        }
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (k < 0 && errno == EINTR) continue;
        /* EOF or error: resend the request in flight on a new connection */
        conn_close(c);
        c->w->reconnects++;
        if (c->done) return;
        if (finished(now_ns())) {
            c->done = 1;
            return;
        }
        c->woff = 0;
        c->rlen = 0;
        conn_open(c);
        return;
    }
}

/* --- Workers ------------------------------------------------------------------------ */

static void *worker_main(void *arg) {
    worker *w = arg;
    struct epoll_event evs[256];
    uint64_t now = now_ns();
    for (int i = 0; i < w->nconns; i++) {
        conn *c = w->conns[i];
        if (c->role == ROLE_HELLO) {
            build_hello(c);
            conn_send(c);
        } else if (c->role == ROLE_PROD) {
            start_put(c, now);
        } else {
            start_recv(c, now, 0);
        }
    }
    for (;;) {
        int live = 0;
        uint64_t next_wake = UINT64_MAX;
        now = now_ns();
        for (int i = 0; i < w->nconns; i++) {
            conn *c = w->conns[i];
            if (c->done) continue;
            if (c->wake_at) {
                if (c->wake_at <= now) {
                    if (finished(now)) {
                        c->done = 1;
                        continue;
                    }
                    conn_send(c);
                } else if (c->wake_at < next_wake) {
                    next_wake = c->wake_at;
                }
            }
            if (!c->done) live++;
        }
        if (!live) break;
        if (now >= t_hard + 5000000000ull) break; /* a server that stopped answering */
        int timeout = 100;
        if (next_wake != UINT64_MAX) {
            uint64_t d = next_wake > now ? next_wake - now : 0;
            int ms = (int)((d + 999999) / 1000000);
            if (ms < timeout) timeout = ms;
        }
        int n = epoll_wait(w->ep, evs, 256, timeout);
        for (int i = 0; i < n; i++) {
            conn *c = evs[i].data.ptr;
            if (c->fd < 0) continue;
            if (evs[i].events & EPOLLOUT) {
                if (conn_flush(c) < 0) {
                    conn_close(c);
                    w->reconnects++;
                    if (finished(now_ns())) {
                        c->done = 1;
                        continue;
                    }
                    c->woff = 0;
                    conn_open(c);
                    continue;
                }
                if (c->woff == c->wlen) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(w->ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
        }
    }
    for (int i = 0; i < w->nconns; i++) conn_close(w->conns[i]);
    return NULL;
}

/* --- Main ------------------------------------------------------------------------------- */

static void usage(void) {
    fprintf(
        stderr,
        "usage: loadgen --port P [--host 127.0.0.1] [--proto sluice|sqs|azure|hello|events] [options]\n"
        "  --producers P --consumers C   clients (sluice, azure; events: producers only, ingesting\n"
        "                                 events of 4 types, 2 tags and 200 bytes of data)\n"
        "  --conns N --path /health       clients and path (hello)\n"
        "  --threads T                    epoll threads (2)\n"
        "  --duration S --warmup S        measured seconds, after a warm-up (10, 0)\n"
        "  --batch B                      messages per put (1: the single-put route)\n"
        "  --recv-max N --size S          maxMessages per receive (1); bytes a single put's message (100)\n"
        "  --ack-batch                    use the batch ack route for one message too\n"
        "  --ack-each                     one ack request per message (sluice, sqs)\n"
        "  --wait S --invis S             waitSeconds, invisibilitySeconds (0, 30)\n"
        "  --backoff-us U                 sleep after an empty receive (0)\n"
        "  --rate R                       total puts/s of all producers (0: closed loop)\n"
        "  --put-count N                  stop producers after N messages\n"
        "  --drain N                      stop when N messages were acked\n"
        "  --account A --queue Q --sas S  where (azure: account, queue and SAS query)\n"
        "  --header 'Name: value'          an extra request header (up to 8), e.g. Authorization\n"
        "  --queue-url URL                sqs: the QueueUrl (default http://HOST:PORT/ACCOUNT/QUEUE)\n"
        "  --access-key K --secret S      sqs: SigV4 access key id (default: the account) and secret\n"
        "  --region R                     sqs: the region signed (us-east-1); --batch and --recv-max <= 10\n"
        "  --label L --max-seconds S\n"
        "  --tls                          HTTPS (the certificate is not checked)\n");
    exit(2);
}

static void print_op(const char *name, const hist *h, double secs, int first) {
    printf("%s\"%s\":{\"n\":%llu,\"per_s\":%.1f,\"errors\":%llu,\"mean_ms\":%.3f,\"p50_ms\":%.3f,\"p90_ms\":%.3f,"
           "\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f}",
           first ? "" : ",", name, (unsigned long long)h->n, secs > 0 ? (double)h->n / secs : 0,
           (unsigned long long)h->errors, h->n ? (double)h->sum_ns / (double)h->n / 1e6 : 0,
           (double)hist_quantile(h, 0.50) / 1e6, (double)hist_quantile(h, 0.90) / 1e6,
           (double)hist_quantile(h, 0.99) / 1e6, (double)hist_quantile(h, 0.999) / 1e6, (double)h->max_ns / 1e6);
}

int main(int argc, char **argv) {
    static struct option lo[] = {
        {"host", 1, 0, 'h'},       {"port", 1, 0, 'p'},       {"proto", 1, 0, 'P'},
        {"path", 1, 0, 'u'},       {"producers", 1, 0, 'r'},  {"consumers", 1, 0, 'c'},
        {"conns", 1, 0, 'n'},      {"threads", 1, 0, 't'},    {"duration", 1, 0, 'd'},
        {"warmup", 1, 0, 'W'},     {"batch", 1, 0, 'b'},      {"recv-max", 1, 0, 'm'},
        {"ack-batch", 0, 0, 'A'},  {"wait", 1, 0, 'w'},       {"invis", 1, 0, 'i'},
        {"backoff-us", 1, 0, 'B'}, {"rate", 1, 0, 'R'},       {"put-count", 1, 0, 'N'},
        {"drain", 1, 0, 'D'},      {"account", 1, 0, 'a'},    {"queue", 1, 0, 'q'},
        {"sas", 1, 0, 's'},        {"label", 1, 0, 'l'},      {"max-seconds", 1, 0, 'M'},
        {"header", 1, 0, 'H'},     {"tls", 0, 0, 'T'},        {"ack-each", 0, 0, 'E'},
        {"queue-url", 1, 0, 'U'},  {"access-key", 1, 0, 'K'}, {"secret", 1, 0, 'S'},
        {"region", 1, 0, 'G'},     {"size", 1, 0, 'z'},       {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'P':
            if (!strcmp(optarg, "sluice")) opt.proto = PROTO_SLUICE;
            else if (!strcmp(optarg, "azure")) opt.proto = PROTO_AZURE;
            else if (!strcmp(optarg, "hello")) opt.proto = PROTO_HELLO;
            else if (!strcmp(optarg, "events"))
                opt.proto = PROTO_EVENTS;
            else if (!strcmp(optarg, "sqs"))
                opt.proto = PROTO_SQS;
            else usage();
            break;
        case 'u': opt.path = optarg; break;
        case 'T': opt.tls = 1; break;
        case 'r': opt.producers = atoi(optarg); break;
        case 'c': opt.consumers = atoi(optarg); break;
        case 'n': opt.conns = atoi(optarg); break;
        case 't': opt.threads = atoi(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'W': opt.warmup = atof(optarg); break;
        case 'b': opt.batch = atoi(optarg); break;
        case 'm': opt.recv_max = atoi(optarg); break;
        case 'A': opt.ack_batch = 1; break;
        case 'E': opt.ack_each = 1; break;
        case 'U': opt.queue_url = optarg; break;
        case 'K': opt.access_key = optarg; break;
        case 'S': opt.secret = optarg; break;
        case 'G': opt.region = optarg; break;
        case 'z':
            opt.size = atoi(optarg);
            break;
        case 'w': opt.wait_s = atoi(optarg); break;
        case 'i': opt.invis_s = atoi(optarg); break;
        case 'B': opt.backoff_us = atol(optarg); break;
        case 'R': opt.rate = atof(optarg); break;
        case 'N': opt.put_count = atol(optarg); break;
        case 'D': opt.drain = atol(optarg); break;
        case 'a': opt.account = optarg; break;
        case 'q': opt.queue = optarg; break;
        case 's': opt.sas = optarg; break;
        case 'l': opt.label = optarg; break;
        case 'M': opt.max_seconds = atof(optarg); break;
        case 'H':
            if (opt.nheaders == 8 || strchr(optarg, '\r') || strchr(optarg, '\n')) usage();
            opt.headers[opt.nheaders++] = optarg;
            break;
        default: usage();
        }
    }
    if (opt.port <= 0 || opt.threads < 1 || opt.batch < 1 || opt.batch > 100 || opt.recv_max < 1 ||
        opt.recv_max > MAX_RECV)
        usage();
    if (opt.size &&
        (opt.size < MSG_LEN || opt.size > 1024 * 1024 || opt.proto != PROTO_SLUICE || opt.batch != 1))
        usage();
    if (opt.proto == PROTO_SQS && (opt.batch > SQS_BATCH_MAX || opt.recv_max > SQS_BATCH_MAX || opt.tls)) usage();
    if (opt.proto == PROTO_HELLO) {
        if (opt.conns < 1) opt.conns = 64;
        opt.producers = opt.consumers = 0;
    } else {
        if (opt.proto == PROTO_EVENTS) opt.consumers = 0;
        opt.conns = opt.producers + opt.consumers;
        if (opt.conns < 1) usage();
    }
    if (opt.threads > opt.conns) opt.threads = opt.conns;
    if (opt.proto == PROTO_AZURE) snprintf(qbase, sizeof qbase, "/%s/%s", opt.account, opt.queue);
    else snprintf(qbase, sizeof qbase, "/api/v1/accounts/%s/queues/%s", opt.account, opt.queue);
    if (opt.proto == PROTO_SQS) {
        if (!opt.access_key) opt.access_key = opt.account;
        snprintf(sqs_host, sizeof sqs_host, "%s:%d", opt.host, opt.port);
        if (opt.queue_url) snprintf(sqs_url, sizeof sqs_url, "%s", opt.queue_url);
        else snprintf(sqs_url, sizeof sqs_url, "http://%s:%d/%s/%s", opt.host, opt.port, opt.account, opt.queue);
        /* bounds of sqs_request's buffers */
        if (strpbrk(sqs_url, "\"\\") || strlen(opt.secret) > 900 || strlen(opt.access_key) > 256 ||
            strlen(opt.region) > 64)
            usage();
    }

    if (opt.tls) {
        if (!(tls_ctx = SSL_CTX_new(TLS_client_method()))) die("SSL_CTX_new");
        SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_mode(tls_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    }
    srv_addr.sin_family = AF_INET;
    srv_addr.sin_port = htons((uint16_t)opt.port);
    if (inet_pton(AF_INET, opt.host, &srv_addr.sin_addr) != 1) {
        fprintf(stderr, "loadgen: --host must be an IPv4 address\n");
        return 2;
    }

    worker *ws = calloc((size_t)opt.threads, sizeof *ws);
    conn *cs = calloc((size_t)opt.conns, sizeof *cs);
    if (!ws || !cs) die("calloc");
    for (int t = 0; t < opt.threads; t++) {
        ws[t].id = t;
        ws[t].ep = epoll_create1(EPOLL_CLOEXEC);
        ws[t].conns = calloc((size_t)opt.conns, sizeof(conn *));
        if (ws[t].ep < 0 || !ws[t].conns) die("epoll_create1");
    }
    /* interleave producers and consumers over the threads */
    int np = 0, nc = 0;
    for (int i = 0; i < opt.conns; i++) {
        conn *c = &cs[i];
        c->fd = -1;
        c->id = i;
        if (opt.proto == PROTO_HELLO) c->role = ROLE_HELLO;
        else if (np < opt.producers && (nc >= opt.consumers || np <= nc)) {
            c->role = ROLE_PROD;
            np++;
        } else {
            c->role = ROLE_CONS;
            nc++;
        }
        worker *w = &ws[i % opt.threads];
        c->w = w;
        w->conns[w->nconns++] = c;
        if (c->role == ROLE_PROD && opt.rate > 0)
            c->put_interval = (uint64_t)(1e9 * opt.producers / opt.rate);
    }

    t_start = now_ns();
    t_measure = t_start + (uint64_t)(opt.warmup * 1e9);
    t_deadline = t_measure + (uint64_t)(opt.duration * 1e9);
    t_hard = t_start + (uint64_t)(opt.max_seconds * 1e9);
    if (t_deadline > t_hard) t_deadline = t_hard;
    for (int t = 0; t < opt.threads; t++)
        if (pthread_create(&ws[t].th, NULL, worker_main, &ws[t])) die("pthread_create");
    for (int t = 0; t < opt.threads; t++) pthread_join(ws[t].th, NULL);
    uint64_t t_end = now_ns();

    hist *tot = calloc(OP_N, sizeof(hist));
    long empties = 0, stale = 0, reconnects = 0, entry_failures = 0;
    for (int t = 0; t < opt.threads; t++) {
        for (int o = 0; o < OP_N; o++) hist_merge(&tot[o], &ws[t].h[o]);
        empties += ws[t].empties;
        stale += ws[t].stale;
        reconnects += ws[t].reconnects;
        entry_failures += ws[t].entry_failures;
    }
    /* the measured window: a drain ends at its last ack */
    double secs;
    if (opt.drain > 0 || opt.put_count > 0) {
        uint64_t end = opt.drain > 0 ? atomic_load(&last_ack_ns) : t_end;
        if (end < t_measure) end = t_end;
        secs = (double)(end - t_measure) / 1e9;
    } else {
        uint64_t end = t_end < t_deadline ? t_end : t_deadline;
        secs = (double)(end - t_measure) / 1e9;
    }
    long acked = opt.drain > 0 ? atomic_load(&acked_total) : atomic_load(&acked_window);
    long puts = opt.put_count > 0 ? atomic_load(&put_total) : atomic_load(&put_window);
    printf("{\"label\":\"%s\",\"proto\":\"%s\",\"producers\":%d,\"consumers\":%d,\"conns\":%d,\"threads\":%d,"
           "\"batch\":%d,\"recv_max\":%d,\"wait_s\":%d,\"rate_target\":%.1f,\"seconds\":%.3f,"
           "\"messages_put\":%ld,\"messages_acked\":%ld,\"put_msgs_per_s\":%.1f,\"lifecycles_per_s\":%.1f,"
           "\"empty_receives\":%ld,\"stale_acks\":%ld,\"entry_failures\":%ld,\"reconnects\":%ld,\"ack_each\":%d,"
           "\"ops\":{",
           opt.label,
           opt.proto == PROTO_SLUICE   ? "sluice"
           : opt.proto == PROTO_AZURE  ? "azure"
           : opt.proto == PROTO_EVENTS ? "events"
           : opt.proto == PROTO_SQS    ? "sqs"
                                       : "hello",
           opt.producers, opt.consumers, opt.conns, opt.threads, opt.batch, opt.recv_max, opt.wait_s,
           opt.rate, secs, puts, acked, secs > 0 ? (double)puts / secs : 0,
           secs > 0 ? (double)acked / secs : 0, empties, stale, entry_failures, reconnects, opt.ack_each);
    int first = 1;
    for (int o = 0; o < OP_N; o++) {
        if (tot[o].n == 0 && tot[o].errors == 0) continue;
        print_op(op_name[o], &tot[o], secs, first);
        first = 0;
    }
    printf("}}\n");
    return 0;
}
