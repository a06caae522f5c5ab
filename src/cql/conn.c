/* conn.c: one CQL connection: socket, TLS, handshake, stream multiplexing.
 *
 * Threads. Each connection has one I/O thread of its own, which alone reads
 * and writes the socket. We chose a thread per connection over one event
 * loop for all of them because the pool is small (2 connections per node by
 * default, a handful of nodes), because OpenSSL objects must not be used from
 * two threads at once (one owner thread makes that trivially true), and
 * because a slow or stuck node then cannot delay the frames of another.
 *
 * A caller encodes its request, takes a free stream id under the connection
 * mutex, appends the frame to the output buffer and wakes the I/O thread
 * through an eventfd, and goes on: the I/O thread calls the request's
 * callback once with the response frame, the connection's failure, or the
 * passing of its deadline (it looks for expired requests at most every
 * SCAN_MS while any is pending). So a request in flight costs no thread;
 * the blocking sl_cql_conn_request() is a callback that wakes its caller. A
 * request that times out leaves its stream id reserved (ABANDONED) so a late
 * answer cannot be mistaken for the answer to a newer request on that id;
 * the late answer frees it, or closing the connection does. Callbacks run
 * without the connection's mutex, so they may send again, on this
 * connection or another; they must not block, nor close a connection.
 *
 * "Sent" is tracked by byte offsets: each request remembers where its frame
 * ends in the stream of bytes queued on this connection, and the I/O thread
 * counts the bytes written. When the connection fails, a request whose end
 * offset was written may have reached the server (a write of unknown
 * outcome); one that was not fully written did not execute.
 *
 * Heartbeats. A node that stops answering without closing its sockets (a
 * frozen process, a dead host behind a firewall) would otherwise leave every
 * request to wait out its own timeout forever. When nothing has been read for
 * HB_BUSY_MS while requests are pending, or for HB_IDLE_MS at all, the I/O
 * thread sends an OPTIONS; if nothing at all arrives within HB_TIMEOUT_MS
 * after it, the connection is declared failed, its requests complete with
 * SL_EIO and the pool reconnects.
 *
 * A request that times out while nothing at all has been read since it was
 * sent makes the connection suspect: a heartbeat goes out at once, and until
 * something arrives the pool routes no new request to it (sl_cql_conn_healthy),
 * so callers fail fast instead of each waiting out a timeout on a frozen node.
 * A healthy node answers the heartbeat in milliseconds and clears it. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conn.h"

#define MAX_STREAMS 1024 /* requests in flight on one connection */
#define READ_CHUNK (64 * 1024)
#define HB_BUSY_MS 5000
#define HB_IDLE_MS 30000
#define HB_TIMEOUT_MS 5000
#define SCAN_MS 5 /* how often, at most, expired requests are looked for */

enum { SLOT_FREE = 0, SLOT_ACTIVE, SLOT_ABANDONED };

/* One request in flight, from its send to its callback. */
typedef struct creq {
    sl_cql_conn_cb cb;
    void *arg;
    int64_t deadline_ms;
    uint64_t end_off;       /* offset just past its frame in the output stream */
    uint64_t reads_at_send; /* c->nreads when it was queued */
    /* Set when it completes, for the callback: */
    int rc, sent;
    sl_cql_frame resp;
    struct creq *next; /* in a list of completed requests */
} creq;

struct sl_cql_conn {
    int fd, evfd;
    SSL *ssl;
    int version;
    int compress;
    sl_cql_event_fn on_event;
    void *event_ctx;
    char peer[80];

    pthread_t thr;
    int thr_started;

    pthread_mutex_t mu; /* guards everything below */
    int dead, closing;
    uint8_t slot_state[MAX_STREAMS];
    creq *slot_req[MAX_STREAMS];
    int next_stream, inflight; /* inflight counts a pending heartbeat too */
    int hb_stream;             /* the heartbeat's stream until answered, or -1 */
    uint8_t *out;
    size_t out_len, out_off, out_cap;
    uint64_t queued_total, written_total;
    int proto_error; /* the peer sent a frame of a version we do not speak */
    int64_t last_read_ms, hb_sent_ms;
    int64_t next_deadline_ms; /* no pending request expires before it (0: none pending) */
    int64_t last_scan_ms;
    int suspect;     /* a request timed out with nothing read since it was sent */
    uint64_t nreads; /* successful reads from the socket */
    int handshake_ms;

    /* I/O thread only */
    uint8_t *in;
    size_t in_len, in_cap;
};

static void deadline_after(struct timespec *ts, int ms) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

/* --- Socket and TLS ------------------------------------------------------ */

static int tcp_connect(const char *host, int port, int timeout_ms, char *peer, size_t peercap) {
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, ps, &hints, &ai) != 0 || !ai) return -1;
    int fd = -1;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0) continue;
        int rc = connect(fd, a->ai_addr, a->ai_addrlen);
        if (rc != 0 && errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int err = 0;
            socklen_t len = sizeof err;
            if (poll(&p, 1, timeout_ms) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 &&
                err == 0)
                rc = 0;
        }
        if (rc == 0) {
            snprintf(peer, peercap, "%s:%d", host, port);
            break;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(ai);
    if (fd >= 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    }
    return fd;
}

/* Runs the TLS handshake on the non-blocking socket, waiting with poll. */
static int tls_handshake(sl_cql_conn *c, SSL_CTX *ctx, const char *verify_name, int timeout_ms) {
    c->ssl = SSL_new(ctx);
    if (!c->ssl) return SL_ENOMEM;
    SSL_set_fd(c->ssl, c->fd);
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (verify_name && *verify_name) {
        X509_VERIFY_PARAM *vp = SSL_get0_param(c->ssl);
        unsigned char tmp[16];
        if (inet_pton(AF_INET, verify_name, tmp) == 1 || inet_pton(AF_INET6, verify_name, tmp) == 1)
            X509_VERIFY_PARAM_set1_ip_asc(vp, verify_name);
        else {
            X509_VERIFY_PARAM_set1_host(vp, verify_name, 0);
            SSL_set_tlsext_host_name(c->ssl, verify_name);
        }
    }
    struct timespec end, now;
    deadline_after(&end, timeout_ms);
    for (;;) {
        int r = SSL_connect(c->ssl);
        if (r == 1) return 0;
        int e = SSL_get_error(c->ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            unsigned long le = ERR_get_error();
            char buf[256];
            ERR_error_string_n(le, buf, sizeof buf);
            long vr = SSL_get_verify_result(c->ssl);
            sl_log(SL_ERR, "cql: TLS handshake with %s failed: %s%s%s", c->peer,
                   le ? buf : "connection closed", vr != X509_V_OK ? ": " : "",
                   vr != X509_V_OK ? X509_verify_cert_error_string(vr) : "");
            return SL_EUNAVAILABLE;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left = (end.tv_sec - now.tv_sec) * 1000 + (end.tv_nsec - now.tv_nsec) / 1000000;
        struct pollfd p = {.fd = c->fd, .events = e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT};
        if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
            sl_log(SL_ERR, "cql: TLS handshake with %s timed out", c->peer);
            return SL_EUNAVAILABLE;
        }
    }
}

/* Reads what is available: > 0 bytes, 0 would block, -1 closed or failed. */
static ssize_t tr_read(sl_cql_conn *c, void *buf, size_t n) {
    if (c->ssl) {
        int r = SSL_read(c->ssl, buf, (int)(n > INT32_MAX ? INT32_MAX : n));
        if (r > 0) return r;
        int e = SSL_get_error(c->ssl, r);
        return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
    }
    ssize_t r = recv(c->fd, buf, n, 0);
    if (r > 0) return r;
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return 0;
    return -1;
}

static ssize_t tr_write(sl_cql_conn *c, const void *buf, size_t n) {
    if (c->ssl) {
        int r = SSL_write(c->ssl, buf, (int)(n > INT32_MAX ? INT32_MAX : n));
        if (r > 0) return r;
        int e = SSL_get_error(c->ssl, r);
        return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
    }
    ssize_t r = send(c->fd, buf, n, MSG_NOSIGNAL);
    if (r >= 0) return r;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return 0;
    return -1;
}

/* --- Failing and dispatching --------------------------------------------- */

/* Calls the callbacks of a list of completed requests (without c->mu) and
 * frees them. */
static void complete(creq *list) {
    while (list) {
        creq *r = list;
        list = r->next;
        r->cb(r->arg, r->rc, r->rc == 0 ? &r->resp : NULL, r->sent);
        free(r);
    }
}

/* Takes every pending request off the connection, to complete with
 * SL_EIO. Called with c->mu held; the caller completes the list it returns
 * after letting go of the mutex. */
static creq *fail_all_locked(sl_cql_conn *c) {
    creq *list = NULL;
    c->dead = 1;
    for (int i = 0; i < MAX_STREAMS; i++) {
        if (c->slot_state[i] == SLOT_ACTIVE) {
            creq *r = c->slot_req[i];
            r->rc = SL_EIO;
            r->sent = c->written_total >= r->end_off;
            r->next = list;
            list = r;
        }
        c->slot_state[i] = SLOT_FREE;
        c->slot_req[i] = NULL;
    }
    c->inflight = 0;
    c->hb_stream = -1;
    c->next_deadline_ms = 0;
    return list;
}

/* Takes the requests whose deadline passed off the connection (their ids
 * stay reserved), to complete with SL_ETIMEOUT; a timeout with nothing read
 * since its request was sent makes the connection suspect. Called with
 * c->mu held, at most every SCAN_MS. */
static creq *expire_locked(sl_cql_conn *c, int64_t now) {
    creq *list = NULL;
    int64_t next = 0;
    c->last_scan_ms = now;
    for (int i = 0; i < MAX_STREAMS; i++) {
        if (c->slot_state[i] != SLOT_ACTIVE) continue;
        creq *r = c->slot_req[i];
        if (r->deadline_ms > now) {
            if (!next || r->deadline_ms < next) next = r->deadline_ms;
            continue;
        }
        /* Keep the id reserved: a late answer must not reach a newer
         * request that reuses it. */
        c->slot_state[i] = SLOT_ABANDONED;
        c->slot_req[i] = NULL;
        if (c->nreads == r->reads_at_send) c->suspect = 1; /* heartbeat_locked sends one now */
        r->rc = SL_ETIMEOUT;
        r->sent = 1;
        r->next = list;
        list = r;
    }
    c->next_deadline_ms = next;
    return list;
}

static void wake(sl_cql_conn *c) {
    uint64_t one = 1;
    ssize_t r = write(c->evfd, &one, sizeof one);
    (void)r;
}

/* Hands one complete frame to its waiter, or to the event callback. */
static void dispatch(sl_cql_conn *c, const sl_cql_header *h, const uint8_t *body) {
    uint8_t *plain = NULL;
    size_t len = h->length;
    if ((h->flags & SL_CQL_FLAG_COMPRESSION) && len > 0) {
        long want = sl_cql_lz4_inflated_len(body, len);
        if (want < 0 || (size_t)want > SL_CQL_MAX_BODY || !(plain = malloc(want ? (size_t)want : 1))) {
            sl_log(SL_ERR, "cql: %s: bad compressed frame", c->peer);
            return;
        }
        long got = sl_cql_lz4_decompress(body, len, plain, (size_t)want);
        if (got < 0) {
            sl_log(SL_ERR, "cql: %s: corrupt compressed frame", c->peer);
            free(plain);
            return;
        }
        len = (size_t)got;
    } else {
        if (!(plain = malloc(len ? len : 1))) return;
        memcpy(plain, body, len);
    }
    sl_cql_header hh = *h;
    hh.flags &= (uint8_t)~SL_CQL_FLAG_COMPRESSION;
    hh.length = (uint32_t)len;
    if (h->stream < 0) {
        if (h->opcode == SL_CQL_OP_EVENT && c->on_event) {
            uint8_t mem[4096];
            sl_cql_arena a = {mem, sizeof mem, 0};
            sl_cql_response resp;
            if (sl_cql_response_decode(&hh, plain, len, &a, &resp) == 0)
                c->on_event(c->event_ctx, &resp.event);
        }
        free(plain);
        return;
    }
    pthread_mutex_lock(&c->mu);
    int s = h->stream;
    creq *r = NULL;
    if (s < MAX_STREAMS && c->slot_state[s] == SLOT_ACTIVE) {
        r = c->slot_req[s];
        r->resp = (sl_cql_frame){hh, plain, len};
        r->rc = 0;
        r->sent = 1;
        r->next = NULL;
        plain = NULL;
    }
    if (s < MAX_STREAMS && c->slot_state[s] != SLOT_FREE) {
        c->slot_state[s] = SLOT_FREE;
        c->slot_req[s] = NULL;
        c->inflight--;
        if (s == c->hb_stream) c->hb_stream = -1;
    }
    pthread_mutex_unlock(&c->mu);
    free(plain);
    complete(r);
}

/* Cuts and dispatches every whole frame in the input buffer. Returns -1 on
 * a frame we cannot parse (the connection is then unusable). */
static int process_input(sl_cql_conn *c) {
    size_t off = 0;
    for (;;) {
        sl_cql_header h;
        const uint8_t *body;
        long n = sl_cql_frame_cut(c->in + off, c->in_len - off, &h, &body);
        if (n == SL_EPARTIAL) break;
        if (n < 0) {
            if (n == SL_EPROTO) {
                pthread_mutex_lock(&c->mu);
                c->proto_error = 1;
                pthread_mutex_unlock(&c->mu);
            }
            sl_log(SL_DEBUG, "cql: %s: bad frame (%s)", c->peer, sl_strerror((int)n));
            return -1;
        }
        if (h.version != c->version) {
            pthread_mutex_lock(&c->mu);
            c->proto_error = 1;
            pthread_mutex_unlock(&c->mu);
            return -1;
        }
        dispatch(c, &h, body);
        off += (size_t)n;
    }
    if (off) {
        memmove(c->in, c->in + off, c->in_len - off);
        c->in_len -= off;
    }
    return 0;
}

static int read_some(sl_cql_conn *c) {
    for (;;) {
        if (c->in_cap - c->in_len < READ_CHUNK) {
            size_t cap = c->in_cap ? c->in_cap * 2 : 2 * READ_CHUNK;
            uint8_t *p = realloc(c->in, cap);
            if (!p) return -1;
            c->in = p;
            c->in_cap = cap;
        }
        ssize_t r = tr_read(c, c->in + c->in_len, c->in_cap - c->in_len);
        if (r < 0) return -1;
        if (r == 0) return 0;
        pthread_mutex_lock(&c->mu);
        c->last_read_ms = sl_mono_ms();
        c->hb_sent_ms = 0;
        c->suspect = 0;
        c->nreads++;
        pthread_mutex_unlock(&c->mu);
        c->in_len += (size_t)r;
        if (process_input(c)) return -1;
        /* Shrink a buffer grown for one huge frame once it is drained. */
        if (c->in_len == 0 && c->in_cap > (8u << 20)) {
            free(c->in);
            c->in = NULL;
            c->in_cap = 0;
        }
    }
}

/* Writes queued bytes until the socket would block. Called with c->mu held. */
static int flush_locked(sl_cql_conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t w = tr_write(c, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0) return -1;
        if (w == 0) break;
        c->out_off += (size_t)w;
        c->written_total += (uint64_t)w;
    }
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = 0;
        if (c->out_cap > (8u << 20)) {
            free(c->out);
            c->out = NULL;
            c->out_cap = 0;
        }
    }
    return 0;
}

/* Sends a heartbeat when the connection has been quiet, or declares it
 * failed when one went unanswered. Returns -1 for a failed connection.
 * Called with c->mu held. */
static int heartbeat_locked(sl_cql_conn *c) {
    int64_t now = sl_mono_ms();
    if (c->hb_sent_ms) {
        if (now - c->hb_sent_ms <= HB_TIMEOUT_MS) return 0;
        sl_log(SL_ERR, "cql: %s: no answer to a heartbeat in %d ms; closing the connection", c->peer,
               HB_TIMEOUT_MS);
        return -1;
    }
    if (!c->suspect && now - c->last_read_ms < (c->inflight ? HB_BUSY_MS : HB_IDLE_MS)) return 0;
    int s = -1;
    for (int i = 0; i < MAX_STREAMS && s < 0; i++)
        if (c->slot_state[(c->next_stream + i) % MAX_STREAMS] == SLOT_FREE)
            s = (c->next_stream + i) % MAX_STREAMS;
    if (s < 0) return 0;
    if (c->out_len + SL_CQL_HEADER_LEN > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap * 2 : 64 * 1024;
        uint8_t *p = realloc(c->out, cap);
        if (!p) return 0;
        c->out = p;
        c->out_cap = cap;
    }
    /* The answer frees the slot, like a late answer to an abandoned request. */
    c->slot_state[s] = SLOT_ABANDONED;
    c->inflight++;
    c->hb_stream = s;
    c->next_stream = (s + 1) % MAX_STREAMS;
    sl_cql_header h = {.version = (uint8_t)c->version, .stream = (int16_t)s, .opcode = SL_CQL_OP_OPTIONS};
    sl_cql_header_encode(c->out + c->out_len, &h);
    c->out_len += SL_CQL_HEADER_LEN;
    c->queued_total += SL_CQL_HEADER_LEN;
    c->hb_sent_ms = now;
    sl_log(SL_DEBUG, "cql: %s: heartbeat on stream %d%s", c->peer, s, c->suspect ? " (suspect)" : "");
    return 0;
}

static void *io_main(void *arg) {
    sl_thread_name("sl-cql-io");
    sl_cql_conn *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        if (c->closing || c->dead) {
            creq *failed = fail_all_locked(c);
            pthread_mutex_unlock(&c->mu);
            complete(failed);
            break;
        }
        int want_write = c->out_off < c->out_len;
        /* Wake for the next deadline, but look at most every SCAN_MS. */
        int wait_ms = 1000;
        if (c->next_deadline_ms) {
            int64_t at = c->next_deadline_ms, now = sl_mono_ms();
            if (at < c->last_scan_ms + SCAN_MS) at = c->last_scan_ms + SCAN_MS;
            wait_ms = at <= now ? 0 : at - now < 1000 ? (int)(at - now) : 1000;
        }
        pthread_mutex_unlock(&c->mu);
        struct pollfd p[2] = {{.fd = c->fd, .events = POLLIN | (want_write ? POLLOUT : 0)},
                              {.fd = c->evfd, .events = POLLIN}};
        int pending = c->ssl && SSL_pending(c->ssl) > 0;
        if (!pending && poll(p, 2, wait_ms) < 0 && errno != EINTR) break;
        if (p[1].revents & POLLIN) {
            uint64_t v;
            ssize_t r = read(c->evfd, &v, sizeof v);
            (void)r;
        }
        int failed = 0;
        if (pending || (p[0].revents & (POLLIN | POLLERR | POLLHUP))) failed = read_some(c) < 0;
        creq *expired = NULL;
        pthread_mutex_lock(&c->mu);
        int64_t now = sl_mono_ms();
        if (c->next_deadline_ms && now >= c->next_deadline_ms && now >= c->last_scan_ms + SCAN_MS)
            expired = expire_locked(c, now);
        if (!failed) failed = heartbeat_locked(c) < 0;
        if (!failed && c->out_off < c->out_len) failed = flush_locked(c) < 0;
        if (failed) {
            if (!c->closing) sl_log(SL_DEBUG, "cql: connection to %s failed", c->peer);
            creq *f = fail_all_locked(c);
            pthread_mutex_unlock(&c->mu);
            complete(expired);
            complete(f);
            break;
        }
        pthread_mutex_unlock(&c->mu);
        complete(expired);
    }
    return NULL;
}

/* --- Requests ------------------------------------------------------------ */

int sl_cql_conn_send(sl_cql_conn *c, uint8_t opcode, const uint8_t *body, size_t len, int timeout_ms,
                     sl_cql_conn_cb cb, void *arg) {
    if (len > SL_CQL_MAX_BODY) return SL_ETOOBIG;
    uint8_t *z = NULL;
    uint8_t flags = 0;
    if (c->compress && len > 0 && opcode != SL_CQL_OP_STARTUP && opcode != SL_CQL_OP_OPTIONS) {
        size_t cap = SL_CQL_LZ4_BOUND(len);
        if (!(z = malloc(cap))) return SL_ENOMEM;
        long n = sl_cql_lz4_compress(body, len, z, cap);
        if (n < 0) {
            free(z);
            return SL_EINTERNAL;
        }
        body = z;
        len = (size_t)n;
        flags = SL_CQL_FLAG_COMPRESSION;
    }
    creq *r = calloc(1, sizeof *r);
    int rc = r ? 0 : SL_ENOMEM;
    pthread_mutex_lock(&c->mu);
    int s = -1;
    if (rc == 0 && (c->dead || c->closing)) {
        rc = SL_EUNAVAILABLE;
    } else if (rc == 0) {
        for (int i = 0; i < MAX_STREAMS; i++) {
            int cand = (c->next_stream + i) % MAX_STREAMS;
            if (c->slot_state[cand] == SLOT_FREE) {
                s = cand;
                break;
            }
        }
        if (s < 0) rc = SL_EBUSY;
    }
    if (rc == 0 && c->out_len + SL_CQL_HEADER_LEN + len > c->out_cap) {
        size_t cap = c->out_cap ? c->out_cap : 64 * 1024;
        while (cap < c->out_len + SL_CQL_HEADER_LEN + len)
            cap *= 2;
        uint8_t *p = realloc(c->out, cap);
        if (!p)
            rc = SL_ENOMEM;
        else
            c->out = p, c->out_cap = cap;
    }
    if (rc) {
        pthread_mutex_unlock(&c->mu);
        free(r);
        free(z);
        return rc;
    }
    r->cb = cb;
    r->arg = arg;
    r->deadline_ms = sl_mono_ms() + (timeout_ms > 0 ? timeout_ms : 1);
    if (!c->next_deadline_ms || r->deadline_ms < c->next_deadline_ms) c->next_deadline_ms = r->deadline_ms;
    c->next_stream = (s + 1) % MAX_STREAMS;
    c->slot_state[s] = SLOT_ACTIVE;
    c->slot_req[s] = r;
    c->inflight++;
    sl_cql_header h = {.version = (uint8_t)c->version,
                       .flags = flags,
                       .stream = (int16_t)s,
                       .opcode = opcode,
                       .length = (uint32_t)len};
    sl_cql_header_encode(c->out + c->out_len, &h);
    if (len) memcpy(c->out + c->out_len + SL_CQL_HEADER_LEN, body, len);
    c->out_len += SL_CQL_HEADER_LEN + len;
    c->queued_total += SL_CQL_HEADER_LEN + len;
    r->end_off = c->queued_total;
    r->reads_at_send = c->nreads;
    pthread_mutex_unlock(&c->mu);
    wake(c);
    free(z);
    return 0;
}

/* The blocking request: a callback that hands the answer to its waiter. */
typedef struct {
    sl_latch l;
    int rc, sent;
    sl_cql_frame resp;
} waiter;

static void wait_done(void *arg, int rc, sl_cql_frame *resp, int sent) {
    waiter *w = arg;
    w->rc = rc;
    w->sent = sent;
    if (resp) w->resp = *resp;
    sl_latch_done(&w->l);
}

int sl_cql_conn_request(sl_cql_conn *c, uint8_t opcode, const uint8_t *body, size_t len, int timeout_ms,
                        sl_cql_frame *resp, int *sent) {
    if (sent) *sent = 0;
    waiter w;
    sl_latch_init(&w.l, 1);
    int rc = sl_cql_conn_send(c, opcode, body, len, timeout_ms, wait_done, &w);
    if (rc) sl_latch_done(&w.l); /* not queued: no callback comes */
    sl_latch_wait(&w.l);
    if (rc == 0) {
        rc = w.rc;
        if (sent) *sent = w.sent || rc == 0;
        if (rc == 0) *resp = w.resp;
    }
    return rc;
}

/* A request during the handshake: decodes the answer into resp (views into
 * the frame, which the caller frees). */
static int hs_request(sl_cql_conn *c, uint8_t op, sl_cql_wr *w, sl_cql_frame *f, sl_cql_response *resp,
                      uint8_t *arena, size_t acap) {
    if (!sl_cql_wr_ok(w)) return SL_EINTERNAL;
    int rc = sl_cql_conn_request(c, op, w->buf, w->len, c->handshake_ms, f, NULL);
    if (rc) {
        pthread_mutex_lock(&c->mu);
        int proto = c->proto_error;
        pthread_mutex_unlock(&c->mu);
        return proto ? SL_EPROTO : rc == SL_ETIMEOUT ? SL_EUNAVAILABLE : rc == SL_EIO ? SL_EUNAVAILABLE : rc;
    }
    sl_cql_arena a = {arena, acap, 0};
    rc = sl_cql_response_decode(&f->h, f->body, f->len, &a, resp);
    if (rc) {
        free(f->body);
        f->body = NULL;
        return SL_EPROTO;
    }
    return 0;
}

static int startup(sl_cql_conn *c, const sl_cql_conn_opts *o) {
    uint8_t buf[1024], arena[4096];
    sl_cql_frame f = {0};
    sl_cql_response resp;
    sl_cql_wr w = sl_cql_wr_make(buf, sizeof buf);
    sl_cql_options_encode(&w);
    int rc = hs_request(c, SL_CQL_OP_OPTIONS, &w, &f, &resp, arena, sizeof arena);
    if (rc) return rc;
    int lz4 = 0;
    if (resp.h.opcode == SL_CQL_OP_ERROR) {
        rc = resp.error.code == SL_CQL_ERR_PROTOCOL ? SL_EPROTO : SL_EUNAVAILABLE;
        free(f.body);
        return rc;
    }
    if (resp.h.opcode == SL_CQL_OP_SUPPORTED) {
        sl_cql_seq mm = resp.supported, vals;
        sl_cql_str k, v;
        while (sl_cql_string_multimap_next(&mm, &k, &vals))
            if (k.len == 11 && memcmp(k.p, "COMPRESSION", 11) == 0)
                while (sl_cql_string_list_next(&vals, &v))
                    if (v.len == 3 && memcmp(v.p, "lz4", 3) == 0) lz4 = 1;
    }
    free(f.body);

    const char *kv[4] = {"CQL_VERSION", "3.0.0", "COMPRESSION", "lz4"};
    int use_lz4 = lz4 && o->compression;
    w = sl_cql_wr_make(buf, sizeof buf);
    sl_cql_startup_encode(&w, kv, use_lz4 ? 2 : 1);
    /* Frames after STARTUP are compressed in both directions. */
    c->compress = use_lz4;
    if ((rc = hs_request(c, SL_CQL_OP_STARTUP, &w, &f, &resp, arena, sizeof arena))) return rc;
    if (resp.h.opcode == SL_CQL_OP_AUTHENTICATE) {
        free(f.body);
        if (!o->username || !o->password) {
            sl_log(SL_ERR, "cql: %s requires authentication: set USERNAME and PASSWORD", c->peer);
            return SL_EAUTH;
        }
        size_t ul = strlen(o->username), pl = strlen(o->password);
        if (ul + pl > 512) return SL_EINVAL;
        uint8_t tok[520];
        tok[0] = 0;
        memcpy(tok + 1, o->username, ul);
        tok[1 + ul] = 0;
        memcpy(tok + 2 + ul, o->password, pl);
        w = sl_cql_wr_make(buf, sizeof buf);
        sl_cql_auth_response_encode(&w, (sl_cql_bytes){tok, (int32_t)(ul + pl + 2)});
        if ((rc = hs_request(c, SL_CQL_OP_AUTH_RESPONSE, &w, &f, &resp, arena, sizeof arena))) return rc;
        if (resp.h.opcode == SL_CQL_OP_ERROR) {
            sl_log(SL_ERR, "cql: authentication as '%s' to %s failed: %.*s", o->username, c->peer,
                   (int)resp.error.message.len, resp.error.message.p);
            free(f.body);
            return SL_EAUTH;
        }
        if (resp.h.opcode != SL_CQL_OP_AUTH_SUCCESS) {
            sl_log(SL_ERR, "cql: %s: unexpected %s during SASL PLAIN", c->peer,
                   sl_cql_opcode_name(resp.h.opcode));
            free(f.body);
            return SL_EAUTH;
        }
    } else if (resp.h.opcode == SL_CQL_OP_ERROR) {
        rc = resp.error.code == SL_CQL_ERR_PROTOCOL ? SL_EPROTO : SL_EUNAVAILABLE;
        sl_log(rc == SL_EPROTO ? SL_DEBUG : SL_ERR, "cql: STARTUP refused by %s: %.*s", c->peer,
               (int)resp.error.message.len, resp.error.message.p);
        free(f.body);
        return rc;
    } else if (resp.h.opcode != SL_CQL_OP_READY) {
        free(f.body);
        return SL_EPROTO;
    }
    free(f.body);
    if (o->on_event) {
        const char *ev[] = {"TOPOLOGY_CHANGE", "STATUS_CHANGE", "SCHEMA_CHANGE"};
        w = sl_cql_wr_make(buf, sizeof buf);
        sl_cql_register_encode(&w, ev, 3);
        if ((rc = hs_request(c, SL_CQL_OP_REGISTER, &w, &f, &resp, arena, sizeof arena))) return rc;
        rc = resp.h.opcode == SL_CQL_OP_READY ? 0 : SL_EPROTO;
        free(f.body);
    }
    return rc;
}

static int open_version(const sl_cql_conn_opts *o, int version, sl_cql_conn **out) {
    sl_cql_conn *c = calloc(1, sizeof *c);
    if (!c) return SL_ENOMEM;
    c->fd = c->evfd = -1;
    c->hb_stream = -1;
    c->version = version;
    c->on_event = o->on_event;
    c->event_ctx = o->event_ctx;
    c->handshake_ms = o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 5000;
    c->last_read_ms = sl_mono_ms();
    pthread_mutex_init(&c->mu, NULL);
    int rc = SL_EUNAVAILABLE;
    c->fd = tcp_connect(o->host, o->port, o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 5000, c->peer,
                        sizeof c->peer);
    if (c->fd < 0) {
        snprintf(c->peer, sizeof c->peer, "%s:%d", o->host, o->port);
        sl_log(SL_DEBUG, "cql: cannot connect to %s", c->peer);
        goto fail;
    }
    if ((c->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) goto fail;
    if (o->ssl && (rc = tls_handshake(c, o->ssl, o->ssl_verify_name,
                                      o->connect_timeout_ms > 0 ? o->connect_timeout_ms : 5000)))
        goto fail;
    if (pthread_create(&c->thr, NULL, io_main, c)) {
        rc = SL_ENOMEM;
        goto fail;
    }
    c->thr_started = 1;
    if ((rc = startup(c, o))) goto fail;
    *out = c;
    return 0;
fail:
    sl_cql_conn_close(c);
    return rc;
}

int sl_cql_conn_open(const sl_cql_conn_opts *o, sl_cql_conn **out) {
    int v = o->max_version == 3 ? 3 : 4;
    int rc = open_version(o, v, out);
    if (rc == SL_EPROTO && v == 4) {
        sl_log(SL_INFO, "cql: %s:%d refused protocol v4, trying v3", o->host, o->port);
        rc = open_version(o, 3, out);
    }
    return rc;
}

int sl_cql_conn_version(const sl_cql_conn *c) {
    return c->version;
}

int sl_cql_conn_compressed(const sl_cql_conn *c) {
    return c->compress;
}

int sl_cql_conn_healthy(sl_cql_conn *c) {
    pthread_mutex_lock(&c->mu);
    int ok = !c->dead && !c->closing && !c->suspect;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

int sl_cql_conn_alive(sl_cql_conn *c) {
    pthread_mutex_lock(&c->mu);
    int alive = !c->dead && !c->closing;
    pthread_mutex_unlock(&c->mu);
    return alive;
}

int sl_cql_conn_inflight(sl_cql_conn *c) {
    pthread_mutex_lock(&c->mu);
    int n = c->inflight - (c->hb_stream >= 0);
    pthread_mutex_unlock(&c->mu);
    return n;
}

void sl_cql_conn_kill(sl_cql_conn *c) {
    creq *failed = NULL;
    pthread_mutex_lock(&c->mu);
    c->closing = 1;
    if (!c->thr_started) failed = fail_all_locked(c);
    pthread_mutex_unlock(&c->mu);
    complete(failed);
    if (c->evfd >= 0) wake(c);
}

void sl_cql_conn_close(sl_cql_conn *c) {
    if (!c) return;
    sl_cql_conn_kill(c);
    if (c->thr_started) pthread_join(c->thr, NULL);
    if (c->ssl) {
        SSL_shutdown(c->ssl);
        SSL_free(c->ssl);
    }
    if (c->fd >= 0) close(c->fd);
    if (c->evfd >= 0) close(c->evfd);
    pthread_mutex_destroy(&c->mu);
    free(c->out);
    free(c->in);
    free(c);
}
