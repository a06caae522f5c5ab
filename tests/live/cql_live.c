/* cql_live.c: the codec against a live Cassandra (scripts/cassandra.sh
 * start), over one blocking socket with LZ4 on: OPTIONS, STARTUP, schema,
 * PREPARE, a logged BATCH of prepared inserts, paging through them 3 rows at
 * a time, an LWT applied and not applied, token() against sl_cql_token, and
 * a syntax error. Not part of `make test`: it needs a server.
 *
 *   make cql-live && build/tests/cql_live [port]   (prints "cql_live: OK") */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cql/codec.h"
#include "cql/token.h"

#define CHECK(c)                                                                                             \
    do {                                                                                                     \
        if (!(c)) {                                                                                          \
            fprintf(stderr, "cql_live: %s:%d: check failed: %s\n", __FILE__, __LINE__, #c);                  \
            exit(1);                                                                                         \
        }                                                                                                    \
    } while (0)

static int fd;
static int compress_on;
static int16_t next_stream = 1;
static uint8_t out[1 << 16], zbody[1 << 16], in[1 << 20], plain[1 << 20], arena_mem[1 << 16];

/* Sends one request whose body the callback has written after the header. */
static void send_frame(uint8_t opcode, sl_cql_wr *body) {
    uint8_t flags = 0;
    const uint8_t *p = body->buf;
    size_t n = body->len;
    CHECK(sl_cql_wr_ok(body));
    if (compress_on && n > 0) {
        long c = sl_cql_lz4_compress(body->buf, n, zbody, sizeof(zbody));
        CHECK(c > 0);
        p = zbody;
        n = (size_t)c;
        flags |= SL_CQL_FLAG_COMPRESSION;
    }
    sl_cql_header h = {
        .version = 4, .flags = flags, .stream = next_stream++, .opcode = opcode, .length = (uint32_t)n};
    uint8_t hdr[SL_CQL_HEADER_LEN];
    sl_cql_header_encode(hdr, &h);
    CHECK(write(fd, hdr, sizeof(hdr)) == (ssize_t)sizeof(hdr));
    CHECK(n == 0 || write(fd, p, n) == (ssize_t)n);
}

/* Reads until one whole frame is in, then decodes it. Server pushes (stream
 * -1) are skipped. */
static void recv_frame(sl_cql_response *resp) {
    static size_t have;
    for (;;) {
        sl_cql_header h;
        const uint8_t *body;
        long n = sl_cql_frame_cut(in, have, &h, &body);
        if (n == SL_EPARTIAL) {
            ssize_t got = read(fd, in + have, sizeof(in) - have);
            CHECK(got > 0);
            have += (size_t)got;
            continue;
        }
        CHECK(n > 0);
        const uint8_t *b = body;
        size_t len = h.length;
        if (h.flags & SL_CQL_FLAG_COMPRESSION) {
            long m = sl_cql_lz4_decompress(body, h.length, plain, sizeof(plain));
            CHECK(m >= 0);
            b = plain;
            len = (size_t)m;
        } else {
            memcpy(plain, body, len);
            b = plain;
        }
        memmove(in, in + n, have - (size_t)n);
        have -= (size_t)n;
        sl_cql_arena a = {arena_mem, sizeof(arena_mem), 0};
        int rc = sl_cql_response_decode(&h, b, len, &a, resp);
        CHECK(rc == 0);
        if (h.stream == -1) continue;
        if (h.opcode == SL_CQL_OP_ERROR && resp->error.code != SL_CQL_ERR_SYNTAX)
            fprintf(stderr, "cql_live: ERROR 0x%04x %.*s\n", resp->error.code, (int)resp->error.message.len,
                    resp->error.message.p);
        return;
    }
}

static void query(const char *q, const sl_cql_qparams *qp, sl_cql_response *resp) {
    sl_cql_wr w = sl_cql_wr_make(out, sizeof(out));
    sl_cql_qparams def = sl_cql_qparams_make(SL_CQL_ONE);
    sl_cql_query_encode(&w, q, strlen(q), qp ? qp : &def);
    send_frame(SL_CQL_OP_QUERY, &w);
    recv_frame(resp);
}

static int32_t cell_int(sl_cql_bytes b) {
    sl_cql_rd r = sl_cql_rd_make(b.p, (size_t)b.len);
    int32_t v = 0;
    CHECK(b.len == 4 && sl_cql_rd_int(&r, &v) == 0);
    return v;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 9042;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sl_cql_response r;
    sl_cql_wr w;

    w = sl_cql_wr_make(out, sizeof(out));
    send_frame(SL_CQL_OP_OPTIONS, &w);
    recv_frame(&r);
    CHECK(r.h.opcode == SL_CQL_OP_SUPPORTED);
    sl_cql_seq mm = r.supported, vals;
    sl_cql_str k, v;
    printf("SUPPORTED");
    while (sl_cql_string_multimap_next(&mm, &k, &vals)) {
        printf(" %.*s=", (int)k.len, k.p);
        while (sl_cql_string_list_next(&vals, &v))
            printf("%.*s%s", (int)v.len, v.p, vals.n ? "," : "");
    }
    printf("\n");

    const char *startup[] = {"CQL_VERSION", "3.0.0", "COMPRESSION", "lz4"};
    w = sl_cql_wr_make(out, sizeof(out));
    sl_cql_startup_encode(&w, startup, 2);
    send_frame(SL_CQL_OP_STARTUP, &w);
    compress_on = 1;
    recv_frame(&r);
    CHECK(r.h.opcode == SL_CQL_OP_READY);

    query("SELECT release_version FROM system.local", NULL, &r);
    CHECK(r.result.kind == SL_CQL_RESULT_ROWS && r.result.nrows == 1);
    sl_cql_rd rows = r.result.rows;
    sl_cql_bytes c;
    CHECK(sl_cql_rows_next(&rows, &c) == 1);
    printf("release_version %.*s (response frames v%d)\n", c.len, (const char *)c.p, r.h.version);

    query("CREATE KEYSPACE IF NOT EXISTS sluice_live WITH replication = "
          "{'class': 'SimpleStrategy', 'replication_factor': 1}",
          NULL, &r);
    CHECK(r.h.opcode == SL_CQL_OP_RESULT);
    query("CREATE TABLE IF NOT EXISTS sluice_live.t (p int, c int, v text, PRIMARY KEY (p, c))", NULL, &r);
    CHECK(r.h.opcode == SL_CQL_OP_RESULT);
    query("TRUNCATE sluice_live.t", NULL, &r);
    CHECK(r.h.opcode == SL_CQL_OP_RESULT);

    const char *ins = "INSERT INTO sluice_live.t (p, c, v) VALUES (?, ?, ?)";
    w = sl_cql_wr_make(out, sizeof(out));
    sl_cql_prepare_encode(&w, ins, strlen(ins));
    send_frame(SL_CQL_OP_PREPARE, &w);
    recv_frame(&r);
    CHECK(r.result.kind == SL_CQL_RESULT_PREPARED && r.result.bind.ncols == 3 && r.result.bind.npk == 1);
    uint8_t id[64];
    uint16_t idlen = (uint16_t)r.result.id.len;
    CHECK(idlen <= sizeof(id));
    memcpy(id, r.result.id.p, idlen);

    /* Ten prepared inserts in one logged batch, values built by hand. */
    uint8_t ints[10][2][4];
    sl_cql_bytes values[10][3];
    sl_cql_batch_stmt st[10];
    for (int i = 0; i < 10; i++) {
        uint8_t p[4] = {0, 0, 0, 7}, cc[4] = {0, 0, 0, (uint8_t)i};
        memcpy(ints[i][0], p, 4);
        memcpy(ints[i][1], cc, 4);
        values[i][0] = (sl_cql_bytes){ints[i][0], 4};
        values[i][1] = (sl_cql_bytes){ints[i][1], 4};
        values[i][2] = (sl_cql_bytes){(const uint8_t *)"row", 3};
        st[i] = (sl_cql_batch_stmt){.kind = 1, .id = {id, idlen}, .values = values[i], .nvalues = 3};
    }
    sl_cql_batch b = {.type = SL_CQL_BATCH_LOGGED, .stmts = st, .nstmts = 10, .consistency = SL_CQL_ONE};
    w = sl_cql_wr_make(out, sizeof(out));
    sl_cql_batch_encode(&w, &b);
    send_frame(SL_CQL_OP_BATCH, &w);
    recv_frame(&r);
    CHECK(r.result.kind == SL_CQL_RESULT_VOID);

    /* Page through them three at a time, feeding the paging state back. */
    uint8_t ps[256];
    sl_cql_qparams qp = sl_cql_qparams_make(SL_CQL_ONE);
    qp.page_size = 3;
    int total = 0, pages = 0;
    for (;;) {
        query("SELECT p, c, v FROM sluice_live.t WHERE p = 7", &qp, &r);
        CHECK(r.result.kind == SL_CQL_RESULT_ROWS);
        rows = r.result.rows;
        for (int32_t i = 0; i < r.result.nrows; i++) {
            sl_cql_bytes p, cc, vv;
            CHECK(sl_cql_rows_next(&rows, &p) && sl_cql_rows_next(&rows, &cc) &&
                  sl_cql_rows_next(&rows, &vv));
            CHECK(cell_int(cc) == total);
            total++;
        }
        pages++;
        if (!(r.result.meta.flags & SL_CQL_MD_HAS_MORE_PAGES)) break;
        CHECK(r.result.meta.paging_state.len > 0 && (size_t)r.result.meta.paging_state.len <= sizeof(ps));
        memcpy(ps, r.result.meta.paging_state.p, (size_t)r.result.meta.paging_state.len);
        qp.paging_state = (sl_cql_bytes){ps, r.result.meta.paging_state.len};
    }
    CHECK(total == 10);
    printf("paged 10 rows in %d pages\n", pages);

    /* LWT: applied, then not applied with the existing row. */
    query("DELETE FROM sluice_live.t WHERE p = 8 AND c = 0", NULL, &r);
    sl_cql_qparams lwt = sl_cql_qparams_make(SL_CQL_ONE);
    lwt.serial_consistency = SL_CQL_LOCAL_SERIAL;
    for (int i = 0; i < 2; i++) {
        query("INSERT INTO sluice_live.t (p, c, v) VALUES (8, 0, 'x') IF NOT EXISTS", &lwt, &r);
        CHECK(r.result.kind == SL_CQL_RESULT_ROWS && r.result.nrows == 1);
        rows = r.result.rows;
        CHECK(sl_cql_rows_next(&rows, &c) && c.len == 1);
        CHECK(c.p[0] == (i == 0));
        CHECK(r.result.meta.ncols == (i == 0 ? 1 : 4));
    }
    printf("LWT applied, then not applied with %d columns\n", r.result.meta.ncols);

    /* token(p) for an int key is Murmur3 over its 4 big-endian bytes. */
    query("SELECT token(p) FROM sluice_live.t WHERE p = 7 LIMIT 1", NULL, &r);
    rows = r.result.rows;
    CHECK(sl_cql_rows_next(&rows, &c) && c.len == 8);
    sl_cql_rd tr = sl_cql_rd_make(c.p, 8);
    int64_t tok;
    CHECK(sl_cql_rd_long(&tr, &tok) == 0);
    CHECK(tok == sl_cql_token((const uint8_t[]){0, 0, 0, 7}, 4));
    printf("token(7) = %lld matches\n", (long long)tok);

    query("SELEC nothing", NULL, &r);
    CHECK(r.h.opcode == SL_CQL_OP_ERROR && r.error.code == SL_CQL_ERR_SYNTAX);
    printf("syntax error: %.*s\n", (int)r.error.message.len, r.error.message.p);

    close(fd);
    printf("cql_live: OK\n");
    return 0;
}
