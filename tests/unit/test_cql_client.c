/* test_cql_client.c: the CQL client (conn.c, cluster.c) against a fake node
 * and against a live Cassandra.
 *
 * The fake node is a thread in this process that speaks just enough of the
 * protocol (OPTIONS, STARTUP, REGISTER, QUERY of system.local/peers) and
 * answers every other QUERY the way the test asks: a chosen ERROR, silence,
 * a late answer, or a closed connection. It covers what a single real node
 * cannot be made to do on demand (a WriteTimeout, Overloaded, a lost
 * connection after sending, a refused protocol version).
 *
 * The live cases need a node on 127.0.0.1:$SLUICE_CASSANDRA_PORT (scripts/
 * test.sh starts one) and are skipped, not passed, without it. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cql/client.h"
#include "cql/conn.h"
#include "cql/token.h"
#include "store/store.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* --- The fake node ------------------------------------------------------- */

enum { FAKE_VOID = 0, FAKE_ERROR, FAKE_SILENT, FAKE_LATE, FAKE_CLOSE };

typedef struct fake {
    char addr[16];     /* 127.0.0.1, or 127.0.0.2 for a second node */
    const char *token; /* its one token */
    struct fake *peer; /* the other node of a two-node cluster */
    int lfd, port;
    pthread_t thr;
    volatile int mode;
    volatile int err_code;
    volatile int refuse_v4;
    volatile int frozen;  /* answer nothing at all, OPTIONS included */
    volatile int queries; /* user queries seen */
    volatile int stopping;
    int conns[64];
    int nconns;
    pthread_mutex_t mu;
} fake;

static fake F, F2;

static int read_full(int fd, void *buf, size_t n) {
    uint8_t *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0) return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void send_frame(int fd, int version, int16_t stream, uint8_t op, const sl_cql_wr *w) {
    uint8_t hdr[SL_CQL_HEADER_LEN];
    sl_cql_header h = {.version = (uint8_t)version,
                       .response = 1,
                       .stream = stream,
                       .opcode = op,
                       .length = (uint32_t)w->len};
    sl_cql_header_encode(hdr, &h);
    hdr[0] |= 0x80;
    ssize_t r = write(fd, hdr, sizeof hdr);
    if (w->len) r = write(fd, w->buf, w->len);
    (void)r;
}

static void col_spec(sl_cql_wr *w, const char *name, uint16_t type) {
    sl_cql_wr_string(w, name, strlen(name));
    sl_cql_wr_short(w, type);
    if (type == SL_CQL_T_SET) sl_cql_wr_short(w, SL_CQL_T_VARCHAR);
}

static void text_cell(sl_cql_wr *w, const char *s) {
    sl_cql_wr_bytes(w, (sl_cql_bytes){(const uint8_t *)s, (int32_t)strlen(s)});
}

static void inet_cell(sl_cql_wr *w, const char *addr) {
    uint8_t a[4];
    inet_pton(AF_INET, addr, a);
    sl_cql_wr_bytes(w, (sl_cql_bytes){a, 4});
}

static void tokens_cell(sl_cql_wr *w, const char *tok) {
    uint8_t set[64];
    size_t n = strlen(tok);
    set[0] = set[1] = set[2] = 0, set[3] = 1;
    set[4] = set[5] = set[6] = 0, set[7] = (uint8_t)n;
    memcpy(set + 8, tok, n);
    sl_cql_wr_bytes(w, (sl_cql_bytes){set, (int32_t)(8 + n)});
}

static void fake_answer(fake *f, int fd, int version, int16_t stream, const char *q) {
    uint8_t buf[2048];
    sl_cql_wr w = sl_cql_wr_make(buf, sizeof buf);
    if (strstr(q, "FROM system.local")) {
        sl_cql_wr_int(&w, SL_CQL_RESULT_ROWS);
        int schema = strstr(q, "schema_version") != NULL;
        sl_cql_wr_int(&w, SL_CQL_MD_GLOBAL_TABLES_SPEC);
        sl_cql_wr_int(&w, schema ? 1 : 5);
        sl_cql_wr_string(&w, "system", 6);
        sl_cql_wr_string(&w, "local", 5);
        if (schema) {
            col_spec(&w, "schema_version", SL_CQL_T_UUID);
            sl_cql_wr_int(&w, 1);
            sl_cql_wr_bytes(&w, (sl_cql_bytes){(const uint8_t *)"0123456789abcdef", 16});
        } else {
            col_spec(&w, "data_center", SL_CQL_T_VARCHAR);
            col_spec(&w, "rpc_address", SL_CQL_T_INET);
            col_spec(&w, "tokens", SL_CQL_T_SET);
            col_spec(&w, "cluster_name", SL_CQL_T_VARCHAR);
            col_spec(&w, "release_version", SL_CQL_T_VARCHAR);
            sl_cql_wr_int(&w, 1);
            text_cell(&w, "dc1");
            inet_cell(&w, f->addr);
            tokens_cell(&w, f->token);
            text_cell(&w, "fake");
            text_cell(&w, "5.0.9");
        }
    } else if (strstr(q, "FROM system.peers")) {
        int rows = f->peer && !strstr(q, "schema_version");
        sl_cql_wr_int(&w, SL_CQL_RESULT_ROWS);
        sl_cql_wr_int(&w, SL_CQL_MD_GLOBAL_TABLES_SPEC);
        sl_cql_wr_int(&w, 4);
        sl_cql_wr_string(&w, "system", 6);
        sl_cql_wr_string(&w, "peers", 5);
        col_spec(&w, "peer", SL_CQL_T_INET);
        col_spec(&w, "data_center", SL_CQL_T_VARCHAR);
        col_spec(&w, "rpc_address", SL_CQL_T_INET);
        col_spec(&w, "tokens", SL_CQL_T_SET);
        sl_cql_wr_int(&w, rows);
        if (rows) {
            inet_cell(&w, f->peer->addr);
            text_cell(&w, "dc1");
            inet_cell(&w, f->peer->addr);
            tokens_cell(&w, f->peer->token);
        }
    } else if (strstr(q, "FROM system_schema")) {
        sl_cql_wr_int(&w, SL_CQL_RESULT_ROWS);
        sl_cql_wr_int(&w, SL_CQL_MD_NO_METADATA);
        sl_cql_wr_int(&w, 2);
        sl_cql_wr_int(&w, 0);
    } else {
        pthread_mutex_lock(&f->mu);
        f->queries++;
        pthread_mutex_unlock(&f->mu);
        switch (f->mode) {
        case FAKE_SILENT:
            return;
        case FAKE_CLOSE:
            shutdown(fd, SHUT_RDWR);
            return;
        case FAKE_LATE:
            usleep(300 * 1000);
            /* fall through */
        case FAKE_VOID:
            sl_cql_wr_int(&w, SL_CQL_RESULT_VOID);
            break;
        case FAKE_ERROR:
            sl_cql_wr_int(&w, f->err_code);
            sl_cql_wr_string(&w, "fake error", 10);
            switch (f->err_code) {
            case SL_CQL_ERR_UNAVAILABLE:
                sl_cql_wr_short(&w, SL_CQL_LOCAL_QUORUM);
                sl_cql_wr_int(&w, 2);
                sl_cql_wr_int(&w, 1);
                break;
            case SL_CQL_ERR_WRITE_TIMEOUT:
                sl_cql_wr_short(&w, SL_CQL_LOCAL_SERIAL);
                sl_cql_wr_int(&w, 0);
                sl_cql_wr_int(&w, 1);
                sl_cql_wr_string(&w, "CAS", 3);
                break;
            case SL_CQL_ERR_ALREADY_EXISTS:
                sl_cql_wr_string(&w, "ks", 2);
                sl_cql_wr_string(&w, "t", 1);
                break;
            case SL_CQL_ERR_READ_TIMEOUT:
                sl_cql_wr_short(&w, SL_CQL_LOCAL_QUORUM);
                sl_cql_wr_int(&w, 0);
                sl_cql_wr_int(&w, 1);
                sl_cql_wr_byte(&w, 0);
                break;
            }
            send_frame(fd, version, stream, SL_CQL_OP_ERROR, &w);
            return;
        }
    }
    send_frame(fd, version, stream, SL_CQL_OP_RESULT, &w);
}

typedef struct {
    fake *f;
    int fd;
} fake_conn;

static void *fake_conn_main(void *arg) {
    fake_conn fc = *(fake_conn *)arg;
    free(arg);
    fake *f = fc.f;
    int fd = fc.fd;
    for (;;) {
        uint8_t hdr[SL_CQL_HEADER_LEN];
        if (read_full(fd, hdr, sizeof hdr)) break;
        sl_cql_header h;
        int hrc = sl_cql_header_decode(hdr, sizeof hdr, &h);
        uint32_t len = (uint32_t)hdr[5] << 24 | (uint32_t)hdr[6] << 16 | (uint32_t)hdr[7] << 8 | hdr[8];
        if (len > (1u << 20)) break;
        uint8_t *body = malloc(len + 1);
        if (!body || read_full(fd, body, len)) {
            free(body);
            break;
        }
        int version = hdr[0] & 0x7f;
        int16_t stream = (int16_t)(hdr[2] << 8 | hdr[3]);
        uint8_t buf[512];
        sl_cql_wr w = sl_cql_wr_make(buf, sizeof buf);
        if (f->frozen) {
            free(body);
            continue;
        }
        if (hrc < 0 || (f->refuse_v4 && version == 4)) {
            sl_cql_wr_int(&w, SL_CQL_ERR_PROTOCOL);
            sl_cql_wr_string(&w, "Invalid or unsupported protocol version (4)", 43);
            send_frame(fd, version, stream, SL_CQL_OP_ERROR, &w);
        } else if (hdr[4] == SL_CQL_OP_OPTIONS) {
            const char *kv[] = {"CQL_VERSION", "3.4.7"};
            sl_cql_wr_short(&w, 1);
            sl_cql_wr_string(&w, kv[0], strlen(kv[0]));
            sl_cql_wr_string_list(&w, kv + 1, 1);
            send_frame(fd, version, stream, SL_CQL_OP_SUPPORTED, &w);
        } else if (hdr[4] == SL_CQL_OP_STARTUP || hdr[4] == SL_CQL_OP_REGISTER) {
            send_frame(fd, version, stream, SL_CQL_OP_READY, &w);
        } else if (hdr[4] == SL_CQL_OP_QUERY) {
            sl_cql_rd r = sl_cql_rd_make(body, len);
            sl_cql_str q;
            char text[1024] = "";
            if (sl_cql_rd_long_string(&r, &q) == 0 && q.len < sizeof text) memcpy(text, q.p, q.len);
            fake_answer(f, fd, version, stream, text);
        }
        free(body);
    }
    close(fd);
    return NULL;
}

static void *fake_main(void *arg) {
    fake *f = arg;
    while (!f->stopping) {
        int fd = accept(f->lfd, NULL, NULL);
        if (fd < 0) break;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pthread_mutex_lock(&f->mu);
        if (f->nconns < 64) f->conns[f->nconns++] = fd;
        pthread_mutex_unlock(&f->mu);
        fake_conn *fc = malloc(sizeof *fc);
        if (!fc) {
            close(fd);
            continue;
        }
        *fc = (fake_conn){f, fd};
        pthread_t t;
        pthread_create(&t, NULL, fake_conn_main, fc);
        pthread_detach(t);
    }
    return NULL;
}

/* Starts a fake node on addr:port (port 0: any). */
static int fake_start_on(fake *f, const char *addr, int port, const char *token) {
    memset(f, 0, sizeof *f);
    snprintf(f->addr, sizeof f->addr, "%s", addr);
    f->token = token;
    pthread_mutex_init(&f->mu, NULL);
    f->lfd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(f->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, addr, &sa.sin_addr);
    socklen_t sl = sizeof sa;
    if (bind(f->lfd, (struct sockaddr *)&sa, sizeof sa) || listen(f->lfd, 64) ||
        getsockname(f->lfd, (struct sockaddr *)&sa, &sl))
        return -1;
    f->port = ntohs(sa.sin_port);
    return pthread_create(&f->thr, NULL, fake_main, f) ? -1 : 0;
}

static int fake_start(void **state) {
    (void)state;
    return fake_start_on(&F, "127.0.0.1", 0, "0");
}

/* Stops listening and closes every connection, as a node that dies. */
static void fake_kill_node(fake *f) {
    f->stopping = 1;
    shutdown(f->lfd, SHUT_RDWR);
    close(f->lfd);
    pthread_join(f->thr, NULL);
    pthread_mutex_lock(&f->mu);
    for (int i = 0; i < f->nconns; i++)
        shutdown(f->conns[i], SHUT_RDWR);
    f->nconns = 0;
    pthread_mutex_unlock(&f->mu);
}

static void fake_kill(void) {
    fake_kill_node(&F);
}

static int fake_stop(void **state) {
    (void)state;
    if (!F.stopping) fake_kill();
    usleep(50 * 1000); /* let connection threads see EOF */
    return 0;
}

/* Two nodes on one port: 127.0.0.1 (token 0) and 127.0.0.2 (token 2^62). */
static int fake_start2(void **state) {
    (void)state;
    if (fake_start_on(&F, "127.0.0.1", 0, "0")) return -1;
    if (fake_start_on(&F2, "127.0.0.2", F.port, "4611686018427387904")) return -1;
    F.peer = &F2;
    F2.peer = &F;
    return 0;
}

static int fake_stop2(void **state) {
    (void)state;
    if (!F.stopping) fake_kill_node(&F);
    if (!F2.stopping) fake_kill_node(&F2);
    usleep(50 * 1000);
    return 0;
}

static sl_cql_client *fake_client(int timeout_ms) {
    char cp[64];
    snprintf(cp, sizeof cp, "127.0.0.1:%d", F.port);
    sl_cql_config cfg = {.contact_points = cp, .request_timeout_ms = timeout_ms, .pool_size = 1};
    sl_cql_client *c = NULL;
    assert_int_equal(sl_cql_client_open(&cfg, &c), 0);
    return c;
}

static int fake_run(sl_cql_client *c, int flags) {
    sl_cql_opts o = {.flags = flags};
    return sl_cql_query(c, flags == SL_CQL_READ ? "SELECT x FROM t" : "UPDATE t SET x=1 WHERE k=0", NULL, 0,
                        &o, NULL);
}

static void t_fake_error_mapping(void **state) {
    (void)state;
    sl_cql_client *c = fake_client(300);
    assert_int_equal(sl_cql_client_protocol(c), 4);
    static const struct {
        int code, flags, want;
    } cases[] = {
        {SL_CQL_ERR_UNAVAILABLE, 0, SL_EUNAVAILABLE},
        {SL_CQL_ERR_UNAVAILABLE, SL_CQL_READ, SL_EUNAVAILABLE},
        {SL_CQL_ERR_OVERLOADED, 0, SL_EUNAVAILABLE},
        {SL_CQL_ERR_IS_BOOTSTRAPPING, SL_CQL_READ, SL_EUNAVAILABLE},
        {SL_CQL_ERR_WRITE_TIMEOUT, 0, SL_EUNKNOWN}, /* write type CAS */
        {SL_CQL_ERR_READ_TIMEOUT, SL_CQL_READ, SL_ETIMEOUT},
        {SL_CQL_ERR_SYNTAX, 0, SL_EINTERNAL},
        {SL_CQL_ERR_INVALID, SL_CQL_READ, SL_EINTERNAL},
        {SL_CQL_ERR_CONFIG, 0, SL_EINTERNAL},
        {SL_CQL_ERR_UNAUTHORIZED, 0, SL_EAUTH},
        {SL_CQL_ERR_SERVER, 0, SL_EUNKNOWN},
        {SL_CQL_ERR_SERVER, SL_CQL_READ, SL_EIO},
        {SL_CQL_ERR_ALREADY_EXISTS, 0, SL_EEXISTS},
    };
    F.mode = FAKE_ERROR;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        F.err_code = cases[i].code;
        double t0 = now_s();
        int rc = fake_run(c, cases[i].flags);
        if (now_s() - t0 > 0.2) print_message("error 0x%04x took %.2fs\n", cases[i].code, now_s() - t0);
        if (rc != cases[i].want)
            print_error("error 0x%04x flags %d: got %s, want %s\n", cases[i].code, cases[i].flags,
                        sl_strerror(rc), sl_strerror(cases[i].want));
        assert_int_equal(rc, cases[i].want);
    }
    /* No answer in time: a write's outcome is unknown, a read timed out. */
    F.mode = FAKE_SILENT;
    assert_int_equal(fake_run(c, 0), SL_EUNKNOWN);
    usleep(100 * 1000); /* the heartbeat answer clears the suspicion */
    assert_int_equal(fake_run(c, SL_CQL_READ), SL_ETIMEOUT);
    usleep(100 * 1000);
    F.mode = FAKE_VOID;
    assert_int_equal(fake_run(c, 0), 0);
    /* The connection fails after the write was sent: unknown. */
    F.mode = FAKE_CLOSE;
    assert_int_equal(fake_run(c, 0), SL_EUNKNOWN);
    sl_cql_client_close(c);
}

/* After the node dies, nothing is sent: unavailable, and fast. */
static void t_fake_node_down(void **state) {
    (void)state;
    sl_cql_client *c = fake_client(2000);
    F.mode = FAKE_VOID;
    assert_int_equal(fake_run(c, 0), 0);
    fake_kill();
    usleep(300 * 1000); /* the I/O threads see the close */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(fake_run(c, 0), SL_EUNAVAILABLE); /* a CAS against a stopped node */
    assert_int_equal(fake_run(c, SL_CQL_READ), SL_EUNAVAILABLE);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_true(t1.tv_sec - t0.tv_sec < 2);
    int known, up;
    sl_cql_client_nodes(c, &known, &up);
    assert_int_equal(known, 1);
    sl_cql_client_close(c);
}

/* A request that times out keeps its stream id until the late answer
 * comes, and that answer reaches nobody else. */
static void t_fake_late_answer(void **state) {
    (void)state;
    sl_cql_conn_opts o = {.host = "127.0.0.1", .port = F.port, .max_version = 4};
    sl_cql_conn *cn;
    assert_int_equal(sl_cql_conn_open(&o, &cn), 0);
    uint8_t buf[256];
    sl_cql_wr w = sl_cql_wr_make(buf, sizeof buf);
    sl_cql_qparams qp = sl_cql_qparams_make(SL_CQL_ONE);
    sl_cql_query_encode(&w, "SELECT x FROM t", 15, &qp);
    sl_cql_frame f;
    int sent;
    F.mode = FAKE_LATE;
    assert_int_equal(sl_cql_conn_request(cn, SL_CQL_OP_QUERY, buf, w.len, 100, &f, &sent), SL_ETIMEOUT);
    /* Reserved, not reused (the heartbeat the timeout sends is not counted). */
    assert_int_equal(sl_cql_conn_inflight(cn), 1);
    /* The fake answers 300 ms late; wait for that answer to free the id
     * (on a loaded machine under ASan it can take longer than 500 ms). */
    double deadline = now_s() + 10;
    while (sl_cql_conn_inflight(cn) != 0 && now_s() < deadline)
        usleep(10 * 1000);
    assert_int_equal(sl_cql_conn_inflight(cn), 0); /* the late answer freed it */
    F.mode = FAKE_VOID;
    assert_int_equal(sl_cql_conn_request(cn, SL_CQL_OP_QUERY, buf, w.len, 1000, &f, &sent), 0);
    assert_int_equal(f.h.opcode, SL_CQL_OP_RESULT);
    free(f.body);
    sl_cql_conn_close(cn);
}

/* A node that stops answering altogether (frozen) is found out by the
 * heartbeat: the connection fails within about HB_BUSY_MS + HB_TIMEOUT_MS,
 * and the request that was waiting completes instead of hanging. */
static void t_fake_frozen(void **state) {
    (void)state;
    sl_cql_conn_opts o = {.host = "127.0.0.1", .port = F.port, .max_version = 4};
    sl_cql_conn *cn;
    assert_int_equal(sl_cql_conn_open(&o, &cn), 0);
    uint8_t buf[256];
    sl_cql_wr w = sl_cql_wr_make(buf, sizeof buf);
    sl_cql_qparams qp = sl_cql_qparams_make(SL_CQL_ONE);
    sl_cql_query_encode(&w, "SELECT x FROM t", 15, &qp);
    sl_cql_frame f;
    int sent;
    F.frozen = 1;
    double t0 = now_s();
    int rc = sl_cql_conn_request(cn, SL_CQL_OP_QUERY, buf, w.len, 30000, &f, &sent);
    double dt = now_s() - t0;
    assert_int_equal(rc, SL_EIO);
    assert_int_equal(sent, 1);
    assert_true(dt > 4 && dt < 15);
    assert_false(sl_cql_conn_alive(cn));
    sl_cql_conn_close(cn);
}

/* Through the client: after one timeout on a frozen node, requests fail
 * fast (SL_EUNAVAILABLE, nothing sent) instead of each waiting out its own
 * timeout, and the client recovers by itself once the node answers again. */
static void t_fake_frozen_fail_fast(void **state) {
    (void)state;
    sl_cql_client *c = fake_client(300);
    F.mode = FAKE_VOID;
    assert_int_equal(fake_run(c, SL_CQL_READ), 0);
    F.frozen = 1;
    assert_int_equal(fake_run(c, SL_CQL_READ), SL_ETIMEOUT);
    double t0 = now_s();
    assert_int_equal(fake_run(c, SL_CQL_READ), SL_EUNAVAILABLE);
    assert_int_equal(fake_run(c, 0), SL_EUNAVAILABLE); /* a write that was never sent */
    assert_true(now_s() - t0 < 0.1);
    usleep(300 * 1000); /* the heartbeat reaches the frozen node and is lost */
    F.frozen = 0;
    double end = now_s() + 20;
    int rc;
    while ((rc = fake_run(c, SL_CQL_READ)) != 0 && now_s() < end)
        usleep(100 * 1000);
    assert_int_equal(rc, 0);
    print_message("recovered %.1f s after the node answered again\n", now_s() - (end - 20));
    sl_cql_client_close(c);
}

/* Two nodes: discovery through system.peers, round-robin, and retries on
 * the other node only where the statement allows them. */
static void t_fake_two_nodes(void **state) {
    (void)state;
    sl_cql_client *c = fake_client(300);
    int known, up;
    sl_cql_client_nodes(c, &known, &up);
    assert_int_equal(known, 2);
    assert_int_equal(up, 2);
    for (int i = 0; i < 20; i++)
        assert_int_equal(fake_run(c, SL_CQL_READ), 0);
    assert_true(F.queries > 0 && F2.queries > 0); /* both coordinate */

    /* Node 1 overloaded: reads move on and succeed; a write is not retried
     * and reports unavailable (Overloaded means it was not executed). */
    F.mode = FAKE_ERROR;
    F.err_code = SL_CQL_ERR_OVERLOADED;
    int unavailable = 0, ok = 0;
    for (int i = 0; i < 10; i++)
        assert_int_equal(fake_run(c, SL_CQL_READ), 0);
    for (int i = 0; i < 10; i++) {
        int rc = fake_run(c, 0);
        assert_true(rc == 0 || rc == SL_EUNAVAILABLE);
        unavailable += rc == SL_EUNAVAILABLE;
        ok += rc == 0;
    }
    assert_true(unavailable > 0 && ok > 0);

    /* Node 1 silent: an idempotent read times out there and succeeds on node
     * 2; a write that timed out on node 1 is not sent to node 2. */
    F.mode = FAKE_SILENT;
    int q1 = F.queries, q2 = F2.queries, unknown = 0, done = 0;
    for (int i = 0; i < 6; i++) {
        int rc = fake_run(c, 0);
        assert_true(rc == 0 || rc == SL_EUNKNOWN);
        unknown += rc == SL_EUNKNOWN;
        done += rc == 0;
        usleep(100 * 1000); /* node 1 answers the heartbeat: no longer suspect */
    }
    assert_int_equal(F.queries - q1, unknown);
    assert_int_equal(F2.queries - q2, done);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(fake_run(c, SL_CQL_READ), 0);
        usleep(100 * 1000);
    }
    F.mode = FAKE_VOID;
    sl_cql_client_close(c);
}

/* A server that refuses v4 gets v3. */
static void t_fake_v3_fallback(void **state) {
    (void)state;
    F.refuse_v4 = 1;
    sl_cql_client *c = fake_client(1000);
    assert_int_equal(sl_cql_client_protocol(c), 3);
    F.mode = FAKE_VOID;
    assert_int_equal(fake_run(c, 0), 0);
    sl_cql_client_close(c);
}

/* --- Live cases ---------------------------------------------------------- */

static int live_port(void) {
    const char *p = getenv("SLUICE_CASSANDRA_PORT");
    return p && *p ? atoi(p) : 0;
}

static sl_cql_client *live_client(int pool, int max_protocol) {
    if (!live_port()) {
        print_message("skipped: SLUICE_CASSANDRA_PORT is not set (no Cassandra node to test against)\n");
        skip();
    }
    sl_cql_config cfg = {.contact_points = "127.0.0.1",
                         .port = live_port(),
                         .pool_size = pool,
                         .max_protocol = max_protocol,
                         .consistency = SL_CQL_ONE};
    sl_cql_client *c = NULL;
    assert_int_equal(sl_cql_client_open(&cfg, &c), 0);
    return c;
}

static void ddl(sl_cql_client *c, const char *q) {
    sl_cql_opts o = {.flags = SL_CQL_IDEMPOTENT, .timeout_ms = 60000};
    int rc = sl_cql_query(c, q, NULL, 0, &o, NULL);
    if (rc) print_error("%s: %s\n", q, sl_strerror(rc));
    assert_int_equal(rc, 0);
}

static char ks[64];

static void live_schema(sl_cql_client *c) {
    if (!ks[0]) snprintf(ks, sizeof ks, "sluice_client_%ld", (long)getpid());
    char q[512];
    snprintf(q, sizeof q,
             "CREATE KEYSPACE IF NOT EXISTS %s WITH replication = "
             "{'class':'SimpleStrategy','replication_factor':1}",
             ks);
    ddl(c, q);
    snprintf(q, sizeof q,
             "CREATE TABLE IF NOT EXISTS %s.t (p text, q bigint, c bigint, v text, PRIMARY KEY ((p, q), c))",
             ks);
    ddl(c, q);
    snprintf(q, sizeof q, "CREATE TABLE IF NOT EXISTS %s.kv (k text PRIMARY KEY, v bigint)", ks);
    ddl(c, q);
    sl_cql_wait_schema_agreement(c, 10000);
}

static sl_cql_bytes be64(uint8_t *buf, int64_t v) {
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)v >> (56 - 8 * i));
    return (sl_cql_bytes){buf, 8};
}

static sl_cql_bytes txt(const char *s) {
    return (sl_cql_bytes){(const uint8_t *)s, (int32_t)strlen(s)};
}

static sl_cql_stmt *prep(sl_cql_client *c, const char *fmt) {
    char q[512];
    snprintf(q, sizeof q, fmt, ks);
    sl_cql_stmt *st = NULL;
    assert_int_equal(sl_cql_prepare(c, q, &st), 0);
    return st;
}

static void t_live_connect(void **state) {
    (void)state;
    sl_cql_client *c = live_client(2, 0);
    assert_int_equal(sl_cql_client_protocol(c), 4);
    int known, up;
    sl_cql_client_nodes(c, &known, &up);
    assert_int_equal(known, 1);
    assert_int_equal(up, 1);
    sl_cql_res *r = NULL;
    sl_cql_opts o = {.flags = SL_CQL_READ};
    assert_int_equal(sl_cql_query(c, "SELECT release_version FROM system.local", NULL, 0, &o, &r), 0);
    sl_cql_rd rows = r->r.rows;
    sl_cql_bytes v;
    assert_int_equal(sl_cql_rows_next(&rows, &v), 1);
    print_message("Cassandra %.*s, protocol v%d\n", v.len, (const char *)v.p, sl_cql_client_protocol(c));
    sl_cql_res_free(r);
    sl_cql_client_close(c);

    c = live_client(1, 3); /* v3 on request */
    assert_int_equal(sl_cql_client_protocol(c), 3);
    assert_int_equal(sl_cql_query(c, "SELECT release_version FROM system.local", NULL, 0, &o, &r), 0);
    sl_cql_res_free(r);
    sl_cql_client_close(c);
}

static void t_live_reprepare(void **state) {
    (void)state;
    sl_cql_client *c = live_client(1, 0);
    live_schema(c);
    sl_cql_stmt *ins = prep(c, "INSERT INTO %s.kv (k, v) VALUES (?, ?)");
    sl_cql_stmt *sel = prep(c, "SELECT v FROM %s.kv WHERE k = ?");
    uint8_t n8[8];
    sl_cql_bytes vals[2] = {txt("a"), be64(n8, 42)};
    sl_cql_opts o = {0};
    assert_int_equal(sl_cql_execute(c, ins, vals, 2, &o, NULL), 0);
    uint64_t before = sl_cql_prepare_count(c);
    /* A forgotten id: the server answers UNPREPARED, the client prepares
     * again and the caller never sees it. */
    sl_cql_stmt_forget(sel);
    sl_cql_res *r = NULL;
    o.flags = SL_CQL_READ;
    assert_int_equal(sl_cql_execute(c, sel, vals, 1, &o, &r), 0);
    assert_int_equal(r->r.nrows, 1);
    sl_cql_res_free(r);
    assert_int_equal(sl_cql_prepare_count(c), before + 1);
    /* A schema change and a TRUNCATE do not break the cached statement. */
    char q[256];
    snprintf(q, sizeof q, "ALTER TABLE %s.kv ADD extra%ld text", ks, (long)time(NULL) % 100000);
    ddl(c, q);
    snprintf(q, sizeof q, "TRUNCATE %s.kv", ks);
    ddl(c, q);
    assert_int_equal(sl_cql_execute(c, sel, vals, 1, &o, &r), 0);
    assert_int_equal(r->r.nrows, 0);
    sl_cql_res_free(r);
    sl_cql_client_close(c);
}

static void t_live_paging(void **state) {
    (void)state;
    enum { ROWS = 2500, PAGE = 300 };
    sl_cql_client *c = live_client(2, 0);
    live_schema(c);
    sl_cql_stmt *ins = prep(c, "INSERT INTO %s.t (p, q, c, v) VALUES (?, ?, ?, 'x')");
    static uint8_t nums[100][2][8];
    sl_cql_bytes vals[100][3];
    sl_cql_batch_item items[100];
    for (int b = 0; b < ROWS / 100; b++) {
        for (int i = 0; i < 100; i++) {
            vals[i][0] = txt("paging");
            vals[i][1] = be64(nums[i][0], 1);
            vals[i][2] = be64(nums[i][1], b * 100 + i);
            items[i] = (sl_cql_batch_item){ins, vals[i], 3};
        }
        sl_cql_opts o = {.flags = SL_CQL_IDEMPOTENT};
        assert_int_equal(sl_cql_batch_exec(c, SL_CQL_BATCH_UNLOGGED, items, 100, &o, NULL), 0);
    }
    sl_cql_stmt *sel = prep(c, "SELECT c FROM %s.t WHERE p = ? AND q = ?");
    uint8_t q8[8];
    sl_cql_bytes key[2] = {txt("paging"), be64(q8, 1)};
    sl_cql_opts o = {.flags = SL_CQL_READ, .page_size = PAGE};
    int seen = 0, pages = 0;
    sl_cql_res *prev = NULL;
    for (;;) {
        sl_cql_res *r = NULL;
        assert_int_equal(sl_cql_execute(c, sel, key, 2, &o, &r), 0);
        sl_cql_res_free(prev);
        sl_cql_rd rows = r->r.rows;
        for (int32_t i = 0; i < r->r.nrows; i++) {
            sl_cql_bytes cell;
            assert_int_equal(sl_cql_rows_next(&rows, &cell), 1);
            assert_int_equal(sl_cql_cell_i64(cell), seen);
            seen++;
        }
        pages++;
        if (!(r->r.meta.flags & SL_CQL_MD_HAS_MORE_PAGES)) {
            sl_cql_res_free(r);
            break;
        }
        o.paging_state = r->r.meta.paging_state;
        prev = r;
    }
    assert_int_equal(seen, ROWS);
    assert_int_equal(pages, (ROWS + PAGE - 1) / PAGE + (ROWS % PAGE == 0));
    sl_cql_client_close(c);
}

static int applied(sl_cql_res *r) {
    sl_cql_rd rows = r->r.rows;
    sl_cql_bytes cell;
    return sl_cql_rows_next(&rows, &cell) == 1 && cell.len == 1 && cell.p[0];
}

static void t_live_cas_batch(void **state) {
    (void)state;
    sl_cql_client *c = live_client(1, 0);
    live_schema(c);
    sl_cql_stmt *ins = prep(c, "INSERT INTO %s.t (p, q, c, v) VALUES (?, ?, ?, ?) IF NOT EXISTS");
    sl_cql_stmt *upd = prep(c, "UPDATE %s.t SET v = ? WHERE p = ? AND q = ? AND c = ? IF v = ?");
    uint8_t n[4][8];
    char pk[32];
    snprintf(pk, sizeof pk, "cas%ld", (long)time(NULL));
    sl_cql_bytes a[4] = {txt(pk), be64(n[0], 1), be64(n[1], 1), txt("one")};
    sl_cql_bytes b[4] = {txt(pk), be64(n[0], 1), be64(n[2], 2), txt("two")};
    sl_cql_batch_item items[2] = {{ins, a, 4}, {ins, b, 4}};
    sl_cql_opts o = {0};
    sl_cql_res *r = NULL;
    assert_int_equal(sl_cql_batch_exec(c, SL_CQL_BATCH_LOGGED, items, 2, &o, &r), 0);
    assert_true(applied(r));
    sl_cql_res_free(r);
    /* The same inserts again: not applied, nothing written. */
    assert_int_equal(sl_cql_batch_exec(c, SL_CQL_BATCH_LOGGED, items, 2, &o, &r), 0);
    assert_false(applied(r));
    assert_true(r->r.nrows >= 1);
    sl_cql_res_free(r);
    /* Two conditional updates, one condition false: neither applies. */
    sl_cql_bytes u1[5] = {txt("ONE"), txt(pk), be64(n[0], 1), be64(n[1], 1), txt("one")};
    sl_cql_bytes u2[5] = {txt("TWO"), txt(pk), be64(n[0], 1), be64(n[2], 2), txt("wrong")};
    sl_cql_batch_item up[2] = {{upd, u1, 5}, {upd, u2, 5}};
    assert_int_equal(sl_cql_batch_exec(c, SL_CQL_BATCH_LOGGED, up, 2, &o, &r), 0);
    assert_false(applied(r));
    sl_cql_res_free(r);
    u2[4] = txt("two");
    assert_int_equal(sl_cql_batch_exec(c, SL_CQL_BATCH_LOGGED, up, 2, &o, &r), 0);
    assert_true(applied(r));
    sl_cql_res_free(r);
    sl_cql_client_close(c);
}

/* The token the client computes is the server's token(), for a single and
 * a composite partition key, and the ring names this node as its owner. */
static void t_live_token(void **state) {
    (void)state;
    sl_cql_client *c = live_client(1, 0);
    live_schema(c);
    sl_cql_stmt *s1 = prep(c, "SELECT token(k) FROM %s.kv WHERE k = ?");
    sl_cql_stmt *s2 = prep(c, "SELECT token(p, q) FROM %s.t WHERE p = ? AND q = ?");
    sl_cql_stmt *i1 = prep(c, "INSERT INTO %s.kv (k, v) VALUES (?, 1)");
    sl_cql_stmt *i2 = prep(c, "INSERT INTO %s.t (p, q, c) VALUES (?, ?, 0)");
    static const char *keys[] = {"a", "queue-\xc3\xa9\xe2\x82\xac", "0123456789abcdefXYZ", ""};
    for (int k = 0; k < 4; k++) {
        uint8_t n8[8];
        sl_cql_bytes v1[1] = {txt(keys[k])}, v2[2] = {txt(keys[k]), be64(n8, -7 * k - 1)};
        sl_cql_opts o = {0};
        if (k < 3) assert_int_equal(sl_cql_execute(c, i1, v1, 1, &o, NULL), 0);
        assert_int_equal(sl_cql_execute(c, i2, v2, 2, &o, NULL), 0);
        for (int which = 0; which < 2; which++) {
            if (which == 0 && k == 3) continue; /* an empty single key is not allowed */
            sl_cql_stmt *st = which ? s2 : s1;
            sl_cql_bytes *v = which ? v2 : v1;
            int64_t mine;
            assert_int_equal(sl_cql_routing_token(st, v, which ? 2 : 1, &mine), 1);
            sl_cql_res *r = NULL;
            o.flags = SL_CQL_READ;
            assert_int_equal(sl_cql_execute(c, st, v, which ? 2 : 1, &o, &r), 0);
            assert_int_equal(r->r.nrows, 1);
            sl_cql_rd rows = r->r.rows;
            sl_cql_bytes cell;
            sl_cql_rows_next(&rows, &cell);
            assert_true(sl_cql_cell_i64(cell) == mine);
            sl_cql_res_free(r);
            char owner[64];
            assert_int_equal(sl_cql_token_owner(c, mine, owner, sizeof owner), 0);
            assert_string_equal(owner, "127.0.0.1");
        }
    }
    sl_cql_client_close(c);
}

typedef struct {
    sl_cql_client *c;
    sl_cql_stmt *st;
    int id, n, lwt, errors, done;
} worker;

static void *worker_main(void *arg) {
    worker *w = arg;
    char key[32];
    uint8_t n8[8], o8[8];
    for (int i = 0; i < w->n; i++) {
        sl_cql_opts o = {0};
        int rc;
        if (w->lwt) {
            /* Each thread bumps its own row: a CAS chain without contention. */
            snprintf(key, sizeof key, "lwt%d", w->id);
            sl_cql_bytes v[3] = {be64(n8, i + 1), txt(key), be64(o8, i)};
            sl_cql_res *r = NULL;
            rc = sl_cql_execute(w->c, w->st, v, 3, &o, &r);
            if (rc == 0 && !applied(r)) rc = SL_ENOTAPPLIED;
            sl_cql_res_free(r);
        } else {
            snprintf(key, sizeof key, "w%d-%d", w->id, i);
            sl_cql_bytes v[2] = {txt(key), be64(n8, i)};
            o.flags = SL_CQL_IDEMPOTENT;
            rc = sl_cql_execute(w->c, w->st, v, 2, &o, NULL);
        }
        if (rc)
            w->errors++;
        else
            w->done++;
    }
    return NULL;
}

/* 16 threads over ONE connection (pool size 1): stream ids multiplex them.
 * Prints the throughput of plain inserts and of LWT updates. */
static void t_live_concurrent(void **state) {
    (void)state;
    enum { THREADS = 16, N = 400, NLWT = 100 };
    sl_cql_client *c = live_client(1, 0);
    live_schema(c);
    sl_cql_stmt *ins = prep(c, "INSERT INTO %s.kv (k, v) VALUES (?, ?)");
    sl_cql_stmt *lwt = prep(c, "UPDATE %s.kv SET v = ? WHERE k = ? IF v = ?");
    sl_cql_stmt *seed = prep(c, "INSERT INTO %s.kv (k, v) VALUES (?, 0)");
    for (int lw = 0; lw < 2; lw++) {
        worker w[THREADS];
        pthread_t th[THREADS];
        for (int i = 0; lw && i < THREADS; i++) {
            char key[32];
            snprintf(key, sizeof key, "lwt%d", i);
            sl_cql_bytes v[1] = {txt(key)};
            sl_cql_opts o = {0};
            assert_int_equal(sl_cql_execute(c, seed, v, 1, &o, NULL), 0);
        }
        double t0 = now_s();
        for (int i = 0; i < THREADS; i++) {
            w[i] = (worker){c, lw ? lwt : ins, i, lw ? NLWT : N, lw, 0, 0};
            assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
        }
        int done = 0, errors = 0;
        for (int i = 0; i < THREADS; i++) {
            pthread_join(th[i], NULL);
            done += w[i].done;
            errors += w[i].errors;
        }
        double dt = now_s() - t0;
        print_message("%d threads, one connection: %d %s in %.2fs: %.0f/s\n", THREADS, done,
                      lw ? "LWT UPDATEs (IF v = ?)" : "single-row INSERTs", dt, done / dt);
        assert_int_equal(errors, 0);
        assert_int_equal(done, THREADS * (lw ? NLWT : N));
    }
    sl_cql_client_close(c);
}

/* The asynchronous calls: one thread has N inserts, then N reads of them,
 * in flight at once (statements registered lazily, so the first execution
 * prepares them); every callback runs once, and each read finds its own
 * row. */
enum { ASYNC_N = 400 };
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int left, errors, wrong, peak, inflight;
} async_wait;
typedef struct {
    async_wait *w;
    int64_t want; /* reads: the value the row must hold; -1: an insert */
    char key[32];
    uint8_t n8[8];
    sl_cql_bytes v[2];
} async_req;

static void async_done(void *arg, int rc, sl_cql_res *res) {
    async_req *r = arg;
    async_wait *w = r->w;
    int wrong = 0;
    if (rc == 0 && r->want >= 0) {
        sl_cql_rd rows = res->r.rows;
        sl_cql_bytes cell;
        wrong = res->r.nrows != 1 || sl_cql_rows_next(&rows, &cell) != 1 || sl_cql_cell_i64(cell) != r->want;
    }
    sl_cql_res_free(res);
    pthread_mutex_lock(&w->mu);
    w->errors += rc != 0;
    w->wrong += wrong;
    w->inflight--;
    if (--w->left == 0) pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void t_live_async(void **state) {
    (void)state;
    sl_cql_client *c = live_client(1, 0);
    live_schema(c);
    char q[512];
    sl_cql_stmt *ins, *sel;
    snprintf(q, sizeof q, "INSERT INTO %s.kv (k, v) VALUES (?, ?)", ks);
    assert_int_equal(sl_cql_stmt_lazy(c, q, &ins), 0);
    snprintf(q, sizeof q, "SELECT v FROM %s.kv WHERE k = ?", ks);
    assert_int_equal(sl_cql_stmt_lazy(c, q, &sel), 0);
    static async_req reqs[ASYNC_N];
    for (int phase = 0; phase < 2; phase++) {
        async_wait w = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .left = ASYNC_N};
        for (int i = 0; i < ASYNC_N; i++) {
            async_req *r = &reqs[i];
            r->w = &w;
            r->want = phase ? 1000 + i : -1;
            snprintf(r->key, sizeof r->key, "async-%d-%d", (int)getpid(), i);
            r->v[0] = txt(r->key);
            r->v[1] = be64(r->n8, 1000 + i);
            sl_cql_opts o = {.flags = phase ? SL_CQL_READ : SL_CQL_IDEMPOTENT};
            pthread_mutex_lock(&w.mu);
            if (++w.inflight > w.peak) w.peak = w.inflight;
            pthread_mutex_unlock(&w.mu);
            if (phase)
                sl_cql_execute_cb(c, sel, r->v, 1, &o, async_done, r);
            else
                sl_cql_execute_cb(c, ins, r->v, 2, &o, async_done, r);
        }
        pthread_mutex_lock(&w.mu);
        while (w.left > 0)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        print_message("%s: %d requests from one thread, %d in flight at most\n", phase ? "reads" : "inserts",
                      ASYNC_N, w.peak);
        assert_int_equal(w.errors, 0);
        assert_int_equal(w.wrong, 0);
        assert_true(w.peak > 1); /* the thread did not wait for each answer */
    }
    sl_cql_client_close(c);
}

/* A request timeout on a live node: a read far too slow for 1 ms. */
static void t_live_timeout(void **state) {
    (void)state;
    sl_cql_client *c = live_client(1, 0);
    sl_cql_opts o = {.flags = SL_CQL_READ, .timeout_ms = 1};
    int timeouts = 0, fast_fails = 0;
    for (int i = 0; i < 20; i++) {
        int rc = sl_cql_query(c, "SELECT * FROM system_schema.columns", NULL, 0, &o, NULL);
        /* After a timeout the connection is suspect until the node answers
         * again: requests in between fail fast as unavailable. */
        assert_true(rc == 0 || rc == SL_ETIMEOUT || rc == SL_EUNAVAILABLE);
        timeouts += rc == SL_ETIMEOUT;
        fast_fails += rc == SL_EUNAVAILABLE;
    }
    assert_true(timeouts > 0);
    /* The connection is good again as soon as the late answers arrive. */
    o.timeout_ms = 0;
    double end = now_s() + 10;
    int rc;
    while ((rc = sl_cql_query(c, "SELECT release_version FROM system.local", NULL, 0, &o, NULL)) != 0 &&
           now_s() < end)
        usleep(20 * 1000);
    assert_int_equal(rc, 0);
    sl_cql_client_close(c);
}

/* TLS and SASL PLAIN against a node started with `scripts/cassandra.sh
 * start --ssl --auth` (superuser cassandra/cassandra): SLUICE_CASSANDRA_TLS_PORT
 * names its port, SLUICE_CASSANDRA_TLS_CA its certificate (RUN/conf/ca.pem).
 * Skipped without them. */
static int tls_open(const char *user, const char *pass, const char *ca, int use_ssl, sl_cql_client **c) {
    const char *port = getenv("SLUICE_CASSANDRA_TLS_PORT");
    sl_cql_config cfg = {.contact_points = "127.0.0.1",
                         .port = atoi(port),
                         .username = user,
                         .password = pass,
                         .use_ssl = use_ssl,
                         .ssl_ca_file = ca,
                         .ssl_verify_host = 1,
                         .connect_timeout_ms = 3000,
                         .consistency = SL_CQL_ONE};
    *c = NULL;
    return sl_cql_client_open(&cfg, c);
}

static void t_live_tls_auth(void **state) {
    (void)state;
    const char *port = getenv("SLUICE_CASSANDRA_TLS_PORT"), *ca = getenv("SLUICE_CASSANDRA_TLS_CA");
    if (!port || !*port || !ca || !*ca) {
        print_message(
            "skipped: SLUICE_CASSANDRA_TLS_PORT and SLUICE_CASSANDRA_TLS_CA are not set (a node from "
            "`scripts/cassandra.sh start --ssl --auth`)\n");
        skip();
    }
    sl_cql_client *c;
    assert_int_equal(tls_open("cassandra", "cassandra", ca, 1, &c), 0);
    assert_int_equal(sl_cql_client_protocol(c), 4);
    sl_cql_opts o = {.flags = SL_CQL_READ};
    sl_cql_res *r = NULL;
    assert_int_equal(sl_cql_query(c, "SELECT release_version FROM system.local", NULL, 0, &o, &r), 0);
    assert_int_equal(r->r.nrows, 1);
    sl_cql_res_free(r);
    sl_cql_client_close(c);
    /* Bad credentials, and none at all, are SL_EAUTH. */
    assert_int_equal(tls_open("cassandra", "wrong", ca, 1, &c), SL_EAUTH);
    assert_int_equal(tls_open(NULL, NULL, ca, 1, &c), SL_EAUTH);
    /* A certificate the CA file does not vouch for is refused. */
    assert_int_equal(tls_open("cassandra", "cassandra", "/etc/ssl/certs/ca-certificates.crt", 1, &c),
                     SL_EUNAVAILABLE);
    /* Plain TCP to a TLS-only port does not get through. */
    assert_int_equal(tls_open("cassandra", "cassandra", NULL, 0, &c), SL_EUNAVAILABLE);
}

static int live_teardown_group(void **state) {
    (void)state;
    if (!ks[0] || !live_port()) return 0;
    sl_cql_config cfg = {.contact_points = "127.0.0.1", .port = live_port()};
    sl_cql_client *c;
    if (sl_cql_client_open(&cfg, &c)) return 0;
    char q[128];
    snprintf(q, sizeof q, "DROP KEYSPACE IF EXISTS %s", ks);
    sl_cql_opts o = {.flags = SL_CQL_IDEMPOTENT, .timeout_ms = 60000};
    sl_cql_query(c, q, NULL, 0, &o, NULL);
    sl_cql_client_close(c);
    return 0;
}

int main(void) {
    const struct CMUnitTest fake_tests[] = {
        cmocka_unit_test_setup_teardown(t_fake_error_mapping, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(t_fake_node_down, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(t_fake_late_answer, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(t_fake_v3_fallback, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(t_fake_frozen, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(t_fake_frozen_fail_fast, fake_start, fake_stop),
        cmocka_unit_test_setup_teardown(t_fake_two_nodes, fake_start2, fake_stop2),
    };
    const struct CMUnitTest live_tests[] = {
        cmocka_unit_test(t_live_connect), cmocka_unit_test(t_live_reprepare),
        cmocka_unit_test(t_live_paging),  cmocka_unit_test(t_live_cas_batch),
        cmocka_unit_test(t_live_token),   cmocka_unit_test(t_live_concurrent),
        cmocka_unit_test(t_live_timeout), cmocka_unit_test(t_live_tls_auth),
        cmocka_unit_test(t_live_async),
    };
    int failed = cmocka_run_group_tests_name("cql client (fake node)", fake_tests, NULL, NULL);
    failed +=
        cmocka_run_group_tests_name("cql client (live Cassandra)", live_tests, NULL, live_teardown_group);
    return failed ? 1 : 0;
}
