/* test_cql_codec.c: the CQL codec against golden frames captured from a real
 * server (../shared/cql-vectors), plus hand-built frames for the error codes,
 * events and types the captures do not contain, and hostile input.
 *
 * For every frame of every session: the header matches the JSON fields; LZ4
 * bodies inflate to decompressed_body_hex; every response decodes and agrees
 * with its note (result kind, columns and types, row count, paging state,
 * error code, message and extra fields, warnings, tracing id, prepared id,
 * schema changes, events); every request is parsed back into the encoders'
 * structs and re-encoded byte for byte. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "cql/codec.h"
#include "cql_vectors.h"

static const char *const sessions[] = {"v4-plain.jsonl", "v3-plain.jsonl",        "v5-unsupported.jsonl",
                                       "v4-lz4.jsonl",   "v4-auth-success.jsonl", "v4-auth-failure.jsonl",
                                       "v4-tokens.jsonl"};

static struct {
    int frames, responses, requests, reencoded, lz4_inflated, lz4_recompressed_same, truncations;
} stats;

static uint8_t arena_mem[1 << 20];

static sl_cql_arena arena(void) {
    return (sl_cql_arena){arena_mem, sizeof(arena_mem), 0};
}

/* A growable string for rendering decoded values the way the notes show
 * them (Python reprs). */
typedef struct {
    char buf[16384];
    size_t len;
} sbuf;

static void sb_put(sbuf *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_put(sbuf *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(s->buf + s->len, sizeof(s->buf) - s->len, fmt, ap);
    va_end(ap);
    if (n > 0) s->len += (size_t)n;
    if (s->len >= sizeof(s->buf)) s->len = sizeof(s->buf) - 1;
}

static void sb_str(sbuf *s, sl_cql_str v) {
    sb_put(s, "%.*s", (int)v.len, v.p);
}

/* "[('id', 'int'), ('t', 'varchar')]" */
static void render_cols(sbuf *s, const sl_cql_meta *m) {
    sb_put(s, "[");
    for (int32_t i = 0; i < m->ncols; i++) {
        char tn[256];
        sl_cql_type_name(&m->cols[i].type, tn, sizeof(tn));
        sb_put(s, "%s('%.*s', '%s')", i ? ", " : "", (int)m->cols[i].name.len, m->cols[i].name.p, tn);
    }
    sb_put(s, "]");
}

/* Python's dict repr of a schema change, in the driver's key order. */
static void render_schema_change(sbuf *s, const sl_cql_result *r) {
    sb_put(s, "{'target_type': '%.*s', 'change_type': '%.*s', 'keyspace': '%.*s'", (int)r->target.len,
           r->target.p, (int)r->change.len, r->change.p, (int)r->sc_keyspace.len, r->sc_keyspace.p);
    if (r->sc_name.p) sb_put(s, ", 'table': '%.*s'", (int)r->sc_name.len, r->sc_name.p);
    sb_put(s, "}");
}

static int contains_nospace(const char *hay, const char *needle) {
    char a[16384], b[16384];
    size_t i = 0, j = 0;
    for (const char *p = hay; *p && i < sizeof(a) - 1; p++)
        if (*p != ' ') a[i++] = *p;
    for (const char *p = needle; *p && j < sizeof(b) - 1; p++)
        if (*p != ' ') b[j++] = *p;
    a[i] = b[j] = '\0';
    return strstr(a, b) != NULL;
}

#define assert_in_note(note, s)                                                                              \
    do {                                                                                                     \
        if (!strstr((note), (s))) fail_msg("note lacks \"%s\":\n  %s", (s), (note));                         \
    } while (0)

static void check_rows_note(const char *note, const sl_cql_result *r) {
    sbuf s = {.len = 0};
    if (r->meta.flags & SL_CQL_MD_NO_METADATA) {
        assert_in_note(note, "no_metadata");
        assert_null(r->meta.cols);
        sb_put(&s, "%d row", r->nrows);
        assert_in_note(note, s.buf);
        return;
    }
    render_cols(&s, &r->meta);
    if (!contains_nospace(note, s.buf)) fail_msg("columns %s not in note %s", s.buf, note);
    s.len = 0;
    sb_put(&s, " %d rows", r->nrows);
    assert_in_note(note, s.buf);
    int more = (r->meta.flags & SL_CQL_MD_HAS_MORE_PAGES) != 0;
    assert_in_note(note, more ? "has_more_pages=True" : "has_more_pages=False");
    if (more) {
        char hex[1024];
        assert_true(r->meta.paging_state.len > 0 && r->meta.paging_state.len < 500);
        tohex(r->meta.paging_state.p, (size_t)r->meta.paging_state.len, hex);
        s.len = 0;
        sb_put(&s, "paging_state=%s", hex);
        assert_in_note(note, s.buf);
    } else {
        assert_null(strstr(note, "paging_state="));
    }
    /* Walk every cell once; the decoder has validated them already. */
    sl_cql_rd rows = r->rows;
    sl_cql_bytes cell;
    long cells = 0;
    while (sl_cql_rows_next(&rows, &cell))
        cells++;
    assert_int_equal(cells, (long)r->nrows * r->meta.ncols);
}

static void check_response_note(const char *note, const sl_cql_response *resp) {
    sbuf s = {.len = 0};
    const sl_cql_envelope *e = &resp->env;
    if (e->has_tracing) {
        const uint8_t *u = e->tracing_id;
        sb_put(&s, "tracing_id=%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0],
               u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14],
               u[15]);
        assert_in_note(note, s.buf);
    } else {
        assert_null(strstr(note, "tracing_id="));
    }
    if (e->has_warnings) {
        s.len = 0;
        sb_put(&s, "warnings=[");
        sl_cql_seq w = e->warnings;
        sl_cql_str v;
        int first = 1;
        while (sl_cql_string_list_next(&w, &v)) {
            sb_put(&s, "%s'%.*s'", first ? "" : ", ", (int)v.len, v.p);
            first = 0;
        }
        sb_put(&s, "]");
        assert_in_note(note, s.buf);
    } else {
        assert_null(strstr(note, "warnings="));
    }
    s.len = 0;
    switch (resp->h.opcode) {
    case SL_CQL_OP_READY:
        assert_in_note(note, "READY");
        break;
    case SL_CQL_OP_SUPPORTED: {
        sl_cql_seq mm = resp->supported, vals;
        sl_cql_str k, v;
        sb_put(&s, "{");
        int first = 1;
        while (sl_cql_string_multimap_next(&mm, &k, &vals)) {
            sb_put(&s, "%s\"%.*s\": [", first ? "" : ", ", (int)k.len, k.p);
            first = 0;
            int f2 = 1;
            while (sl_cql_string_list_next(&vals, &v)) {
                sb_put(&s, "%s\"%.*s\"", f2 ? "" : ", ", (int)v.len, v.p);
                f2 = 0;
            }
            sb_put(&s, "]");
        }
        sb_put(&s, "}");
        assert_in_note(note, s.buf);
        break;
    }
    case SL_CQL_OP_AUTHENTICATE:
        sb_put(&s, "authenticator=");
        sb_str(&s, resp->authenticator);
        assert_in_note(note, s.buf);
        break;
    case SL_CQL_OP_AUTH_SUCCESS:
        assert_int_equal(resp->token.len, -1);
        assert_in_note(note, "token=null");
        break;
    case SL_CQL_OP_ERROR: {
        const sl_cql_error *er = &resp->error;
        sb_put(&s, "code=0x%04x ", er->code);
        assert_in_note(note, s.buf);
        s.len = 0;
        sb_put(&s, ": ");
        sb_str(&s, er->message);
        sb_put(&s, " info=");
        assert_in_note(note, s.buf);
        s.len = 0;
        if (er->code == SL_CQL_ERR_ALREADY_EXISTS) {
            sb_put(&s, "info={'keyspace': '%.*s', 'table': '%.*s'}", (int)er->keyspace.len, er->keyspace.p,
                   (int)er->table.len, er->table.p);
            assert_in_note(note, s.buf);
        } else if (er->code == SL_CQL_ERR_UNPREPARED) {
            sb_put(&s, "info=b'");
            for (int32_t i = 0; i < er->unprepared_id.len; i++)
                sb_put(&s, "\\x%02x", er->unprepared_id.p[i]);
            sb_put(&s, "'");
            assert_in_note(note, s.buf);
        } else {
            assert_in_note(note, "info=None");
        }
        break;
    }
    case SL_CQL_OP_EVENT:
        sb_put(&s, "EVENT ");
        sb_str(&s, resp->event.type);
        sb_put(&s, " ");
        render_schema_change(&s, &resp->event.schema);
        assert_in_note(note, s.buf);
        break;
    case SL_CQL_OP_RESULT: {
        const sl_cql_result *r = &resp->result;
        static const char *const kinds[] = {"", "Void", "Rows", "Set_keyspace", "Prepared", "Schema_change"};
        sb_put(&s, "kind=%s", kinds[r->kind]);
        if (r->kind == SL_CQL_RESULT_ROWS && (r->meta.flags & SL_CQL_MD_NO_METADATA)) s.len = 9;
        assert_in_note(note, s.buf);
        s.len = 0;
        if (r->kind == SL_CQL_RESULT_ROWS) check_rows_note(note, r);
        if (r->kind == SL_CQL_RESULT_SET_KEYSPACE) {
            sb_put(&s, "keyspace=");
            sb_str(&s, r->keyspace);
            assert_in_note(note, s.buf);
        }
        if (r->kind == SL_CQL_RESULT_SCHEMA_CHANGE) {
            render_schema_change(&s, r);
            assert_in_note(note, s.buf);
        }
        if (r->kind == SL_CQL_RESULT_PREPARED) {
            char hex[80];
            assert_int_equal(r->id.len, 16);
            tohex(r->id.p, 16, hex);
            sb_put(&s, "id=%s bind=", hex);
            render_cols(&s, &r->bind);
            if (resp->h.version >= 4) {
                sb_put(&s, " pk_indexes=[");
                for (uint32_t i = 0; i < r->bind.npk; i++)
                    sb_put(&s, "%s%u", i ? ", " : "", r->bind.pk[i]);
                sb_put(&s, "]");
            }
            assert_in_note(note, s.buf);
            s.len = 0;
            sb_put(&s, "result_cols=");
            render_cols(&s, &r->meta);
            assert_in_note(note, s.buf);
        }
        break;
    }
    default:
        fail_msg("unexpected response opcode %d", resp->h.opcode);
    }
}

/* ---- requests: parse back into the encoders' structs and re-encode ------- */

typedef struct {
    sl_cql_bytes values[64];
    sl_cql_str names[64];
    sl_cql_batch_stmt stmts[64];
    sl_cql_bytes stmt_values[512];
    char strings[4096];
    const char *strv[64];
} reqscratch;

static int parse_qparams(sl_cql_rd *r, sl_cql_qparams *qp, reqscratch *rs) {
    uint8_t flags;
    *qp = sl_cql_qparams_make(0);
    if (sl_cql_rd_consistency(r, &qp->consistency) || sl_cql_rd_byte(r, &flags)) return -1;
    if (flags & ~0x7f) return -1;
    qp->skip_metadata = (flags & SL_CQL_QF_SKIP_METADATA) != 0;
    if (flags & SL_CQL_QF_VALUES) {
        if (sl_cql_rd_short(r, &qp->nvalues) || qp->nvalues > 64) return -1;
        qp->values = rs->values;
        if (flags & SL_CQL_QF_NAMES) qp->names = rs->names;
        for (uint16_t i = 0; i < qp->nvalues; i++) {
            if ((flags & SL_CQL_QF_NAMES) && sl_cql_rd_string(r, &rs->names[i])) return -1;
            if (sl_cql_rd_value(r, &rs->values[i])) return -1;
        }
    }
    if ((flags & SL_CQL_QF_PAGE_SIZE) && (sl_cql_rd_int(r, &qp->page_size) || qp->page_size < 0)) return -1;
    if ((flags & SL_CQL_QF_PAGING_STATE) && (sl_cql_rd_bytes(r, &qp->paging_state) || !qp->paging_state.p))
        return -1;
    if ((flags & SL_CQL_QF_SERIAL) &&
        (sl_cql_rd_consistency(r, &qp->serial_consistency) || !qp->serial_consistency))
        return -1;
    if (flags & SL_CQL_QF_TIMESTAMP) {
        if (sl_cql_rd_long(r, &qp->timestamp)) return -1;
        qp->has_timestamp = 1;
    }
    return 0;
}

/* Copies `n` strings of a [string list] or 2n of a [string map] into
 * NUL-terminated scratch for the encoders. */
static size_t strings_to_argv(sl_cql_seq seq, int map, reqscratch *rs) {
    size_t used = 0, k = 0;
    sl_cql_str a, b;
    while (map ? sl_cql_string_map_next(&seq, &a, &b) : sl_cql_string_list_next(&seq, &a)) {
        for (int j = 0; j <= map; j++) {
            sl_cql_str v = j ? b : a;
            assert_true(used + v.len + 1 <= sizeof(rs->strings) && k < 64);
            memcpy(rs->strings + used, v.p, v.len);
            rs->strings[used + v.len] = '\0';
            rs->strv[k++] = rs->strings + used;
            used += v.len + 1;
        }
    }
    return map ? k / 2 : k;
}

/* Re-encodes one request body; returns 0 when the request parsed fully. */
static int reencode_request(const sl_cql_header *h, const uint8_t *body, size_t len, sl_cql_wr *w) {
    static reqscratch rs;
    sl_cql_envelope env;
    if (sl_cql_envelope_decode(h, body, len, &env)) return -1;
    if (env.has_payload) {
        sl_cql_seq p = env.payload;
        sl_cql_str k;
        sl_cql_bytes v;
        const char *keys[16];
        sl_cql_bytes vals[16];
        char kbuf[16][64];
        size_t n = 0;
        while (sl_cql_bytes_map_next(&p, &k, &v) && n < 16) {
            snprintf(kbuf[n], sizeof(kbuf[n]), "%.*s", (int)k.len, k.p);
            keys[n] = kbuf[n];
            vals[n++] = v;
        }
        sl_cql_wr_bytes_map(w, keys, vals, n);
    }
    sl_cql_rd *r = &env.msg;
    sl_cql_str q;
    sl_cql_qparams qp;
    sl_cql_bytes b;
    sl_cql_seq seq;
    switch (h->opcode) {
    case SL_CQL_OP_OPTIONS:
        sl_cql_options_encode(w);
        break;
    case SL_CQL_OP_STARTUP:
        if (sl_cql_rd_string_map(r, &seq)) return -1;
        sl_cql_startup_encode(w, rs.strv, strings_to_argv(seq, 1, &rs));
        break;
    case SL_CQL_OP_REGISTER:
        if (sl_cql_rd_string_list(r, &seq)) return -1;
        sl_cql_register_encode(w, rs.strv, strings_to_argv(seq, 0, &rs));
        break;
    case SL_CQL_OP_AUTH_RESPONSE:
        if (sl_cql_rd_bytes(r, &b)) return -1;
        sl_cql_auth_response_encode(w, b);
        break;
    case SL_CQL_OP_PREPARE:
        if (sl_cql_rd_long_string(r, &q)) return -1;
        sl_cql_prepare_encode(w, q.p, q.len);
        break;
    case SL_CQL_OP_QUERY:
        if (sl_cql_rd_long_string(r, &q) || parse_qparams(r, &qp, &rs)) return -1;
        sl_cql_query_encode(w, q.p, q.len, &qp);
        break;
    case SL_CQL_OP_EXECUTE:
        if (sl_cql_rd_short_bytes(r, &b) || parse_qparams(r, &qp, &rs)) return -1;
        sl_cql_execute_encode(w, b.p, (uint16_t)b.len, &qp);
        break;
    case SL_CQL_OP_BATCH: {
        sl_cql_batch bt = {0};
        uint8_t flags;
        size_t nv = 0;
        if (sl_cql_rd_byte(r, &bt.type) || sl_cql_rd_short(r, &bt.nstmts) || bt.nstmts > 64) return -1;
        bt.stmts = rs.stmts;
        for (uint16_t i = 0; i < bt.nstmts; i++) {
            sl_cql_batch_stmt *s = &rs.stmts[i];
            memset(s, 0, sizeof(*s));
            if (sl_cql_rd_byte(r, &s->kind) || s->kind > 1) return -1;
            if (s->kind == 0 ? sl_cql_rd_long_string(r, &s->query) : sl_cql_rd_short_bytes(r, &s->id))
                return -1;
            if (sl_cql_rd_short(r, &s->nvalues) || nv + s->nvalues > 512) return -1;
            s->values = rs.stmt_values + nv;
            for (uint16_t j = 0; j < s->nvalues; j++)
                if (sl_cql_rd_value(r, &rs.stmt_values[nv++])) return -1;
        }
        if (sl_cql_rd_consistency(r, &bt.consistency) || sl_cql_rd_byte(r, &flags) || (flags & ~0x30))
            return -1;
        if ((flags & SL_CQL_QF_SERIAL) && sl_cql_rd_consistency(r, &bt.serial_consistency)) return -1;
        if (flags & SL_CQL_QF_TIMESTAMP) {
            if (sl_cql_rd_long(r, &bt.timestamp)) return -1;
            bt.has_timestamp = 1;
        }
        sl_cql_batch_encode(w, &bt);
        break;
    }
    default:
        return -1;
    }
    return sl_cql_rd_left(r) == 0 ? 0 : -1;
}

/* ---- the session walk --------------------------------------------------- */

static int opcode_by_name(const char *name) {
    for (int op = 0; op <= SL_CQL_OP_AUTH_SUCCESS; op++)
        if (strcmp(sl_cql_opcode_name(op), name) == 0) return op;
    return -1;
}

/* Every strict prefix of a body must be rejected, and the decoder must not
 * read past it (each copy is an exact-size heap block for ASan). */
static void check_truncations(const sl_cql_header *h, const uint8_t *body, size_t len) {
    size_t step = len > 4096 ? len / 512 : 1;
    for (size_t cut = 0; cut < len; cut += step) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, body, cut);
        sl_cql_arena a = arena();
        sl_cql_response resp;
        int rc = sl_cql_response_decode(h, copy, cut, &a, &resp);
        if (rc == 0)
            fail_msg("%s body truncated to %zu of %zu bytes decoded", sl_cql_opcode_name(h->opcode), cut,
                     len);
        free(copy);
        stats.truncations++;
    }
}

static void check_frame(const char *file, json_t *o, size_t idx) {
    size_t flen;
    uint8_t *frame = unhex(jstr(o, "hex"), &flen);
    const char *note = jstr(o, "note");
    int c2s = strcmp(jstr(o, "dir"), "c2s") == 0;
    int version = (int)json_integer_value(json_object_get(o, "version"));
    int flags = (int)json_integer_value(json_object_get(o, "flags"));
    int stream = (int)json_integer_value(json_object_get(o, "stream"));
    int length = (int)json_integer_value(json_object_get(o, "length"));
    int opcode = opcode_by_name(jstr(o, "opcode"));
    stats.frames++;

    assert_int_equal(flen, (size_t)SL_CQL_HEADER_LEN + (size_t)length);
    sl_cql_header h;
    const uint8_t *body;
    long n = sl_cql_frame_cut(frame, flen, &h, &body);
    if ((version & 0x7f) == 5) {
        /* The probe a v5 client sends first: recognized, not spoken. */
        assert_int_equal(n, SL_EPROTO);
        assert_int_equal(h.version, 5);
        assert_int_equal(h.opcode, opcode);
        uint8_t hdr[SL_CQL_HEADER_LEN];
        sl_cql_header_encode(hdr, &h);
        assert_memory_equal(hdr, frame, SL_CQL_HEADER_LEN);
        stats.reencoded++;
        free(frame);
        return;
    }
    if (n < 0) fail_msg("%s #%zu: frame_cut %ld", file, idx, n);
    assert_int_equal(n, (long)flen);
    assert_int_equal(h.version | (h.response ? 0x80 : 0), version);
    assert_int_equal(h.response, !c2s);
    assert_int_equal(h.flags, flags);
    assert_int_equal(h.stream, stream);
    assert_int_equal(h.opcode, opcode);
    assert_int_equal(h.length, (uint32_t)length);
    uint8_t hdr[SL_CQL_HEADER_LEN];
    sl_cql_header_encode(hdr, &h);
    assert_memory_equal(hdr, frame, SL_CQL_HEADER_LEN);

    /* Every strict prefix of a frame is "need more bytes", never an error. */
    for (size_t cut = 0; cut < flen; cut += (cut < 64 ? 1 : flen / 16 + 1)) {
        sl_cql_header h2;
        const uint8_t *b2;
        assert_int_equal(sl_cql_frame_cut(frame, cut, &h2, &b2), SL_EPARTIAL);
    }

    uint8_t *plain = (uint8_t *)body;
    size_t plen = h.length;
    uint8_t *inflated = NULL;
    if ((h.flags & SL_CQL_FLAG_COMPRESSION) && h.length > 0) {
        size_t want_len;
        uint8_t *want = unhex(jstr(o, "decompressed_body_hex"), &want_len);
        long ilen = sl_cql_lz4_inflated_len(body, h.length);
        assert_int_equal(ilen, (long)want_len);
        inflated = malloc(want_len ? want_len : 1);
        long got = sl_cql_lz4_decompress(body, h.length, inflated, want_len);
        assert_int_equal(got, (long)want_len);
        assert_memory_equal(inflated, want, want_len);
        if (want_len)
            assert_int_equal(sl_cql_lz4_decompress(body, h.length, inflated, want_len - 1), SL_ETOOBIG);
        free(want);
        plain = inflated;
        plen = want_len;
        stats.lz4_inflated++;
    }

    if (!c2s) {
        sl_cql_arena a = arena();
        sl_cql_response resp;
        int rc = sl_cql_response_decode(&h, plain, plen, &a, &resp);
        if (rc) fail_msg("%s #%zu: response_decode %s: %s", file, idx, sl_strerror(rc), note);
        check_response_note(note, &resp);
        stats.responses++;
        check_truncations(&h, plain, plen);
    } else {
        /* Re-encode: body from the parsed request, then (for compressed
         * frames) LZ4 and the frame header, and compare the whole frame. */
        size_t cap = plen + 64;
        uint8_t *out = malloc(cap), *cbody = malloc(SL_CQL_LZ4_BOUND(cap));
        sl_cql_wr w = sl_cql_wr_make(out, cap);
        if (reencode_request(&h, plain, plen, &w))
            fail_msg("%s #%zu: request did not parse: %s", file, idx, note);
        assert_true(sl_cql_wr_ok(&w));
        assert_int_equal(w.len, plen);
        assert_memory_equal(out, plain, plen);
        if (inflated) {
            long c = sl_cql_lz4_compress(out, w.len, cbody, SL_CQL_LZ4_BOUND(cap));
            assert_true(c > 0);
            uint8_t *rt = malloc(w.len ? w.len : 1);
            assert_int_equal(sl_cql_lz4_decompress(cbody, (size_t)c, rt, w.len), (long)w.len);
            assert_memory_equal(rt, out, w.len);
            free(rt);
            if ((size_t)c == h.length && memcmp(cbody, body, (size_t)c) == 0) stats.lz4_recompressed_same++;
        }
        /* The whole frame, uncompressed ones byte for byte from the encoders. */
        if (!inflated) {
            sl_cql_wr fw = sl_cql_wr_make(malloc(flen), flen);
            size_t start = sl_cql_frame_begin(&fw, h.version, h.flags, h.stream, h.opcode);
            sl_cql_wr_raw(&fw, out, w.len);
            sl_cql_frame_end(&fw, start);
            assert_true(sl_cql_wr_ok(&fw));
            assert_memory_equal(fw.buf, frame, flen);
            free(fw.buf);
        }
        free(out);
        free(cbody);
        stats.requests++;
        stats.reencoded++;
    }
    free(inflated);
    free(frame);
}

static void test_sessions(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof(sessions) / sizeof(sessions[0]); i++) {
        char rel[128];
        snprintf(rel, sizeof(rel), "sessions/%s", sessions[i]);
        json_t *arr = load_jsonl(rel);
        assert_non_null(arr);
        assert_true(json_array_size(arr) > 0);
        size_t idx;
        json_t *o;
        json_array_foreach(arr, idx, o) check_frame(sessions[i], o, idx);
        json_decref(arr);
    }
    printf("vectors: %d frames decoded (%d responses, %d requests), %d re-encoded byte-exact, "
           "%d lz4 bodies inflated (%d re-compressed identically), %d truncated bodies rejected\n",
           stats.frames, stats.responses, stats.requests, stats.reencoded, stats.lz4_inflated,
           stats.lz4_recompressed_same, stats.truncations);
    assert_true(stats.frames >= 400);
}

/* The same frames concatenated into one stream, as a connection reads them,
 * cut apart again one by one. */
static void test_stream_cut(void **state) {
    (void)state;
    json_t *arr = load_jsonl("sessions/v4-plain.jsonl");
    assert_non_null(arr);
    size_t total = 0, idx, nframes = 0;
    json_t *o;
    json_array_foreach(arr, idx, o) if (!strcmp(jstr(o, "dir"), "s2c")) total += strlen(jstr(o, "hex")) / 2;
    uint8_t *buf = malloc(total);
    size_t off = 0;
    json_array_foreach(arr, idx, o) {
        if (strcmp(jstr(o, "dir"), "s2c")) continue;
        size_t n;
        uint8_t *f = unhex(jstr(o, "hex"), &n);
        memcpy(buf + off, f, n);
        off += n;
        free(f);
    }
    off = 0;
    json_array_foreach(arr, idx, o) {
        if (strcmp(jstr(o, "dir"), "s2c")) continue;
        sl_cql_header h;
        const uint8_t *body;
        long n = sl_cql_frame_cut(buf + off, total - off, &h, &body);
        assert_int_equal(n, (long)strlen(jstr(o, "hex")) / 2);
        assert_int_equal(h.stream, json_integer_value(json_object_get(o, "stream")));
        off += (size_t)n;
        nframes++;
    }
    assert_int_equal(off, total);
    free(buf);
    json_decref(arr);
    assert_true(nframes > 50);
}

/* Finds the n-th frame of a session with the given direction and opcode. */
static uint8_t *find_frame(const char *file, const char *dir, const char *opcode, int nth, size_t *len) {
    char rel[128];
    snprintf(rel, sizeof(rel), "sessions/%s", file);
    json_t *arr = load_jsonl(rel);
    assert_non_null(arr);
    size_t idx;
    json_t *o;
    uint8_t *out = NULL;
    json_array_foreach(arr, idx, o) {
        if (strcmp(jstr(o, "dir"), dir) || strcmp(jstr(o, "opcode"), opcode)) continue;
        if (nth-- == 0) {
            out = unhex(jstr(o, "hex"), len);
            break;
        }
    }
    json_decref(arr);
    assert_non_null(out);
    return out;
}

/* Requests built from scratch with the encoders, not parsed from the vectors,
 * compared with what the python driver sent. */
static void test_encode_from_scratch(void **state) {
    (void)state;
    uint8_t buf[256];
    size_t len;
    uint8_t *want;

    sl_cql_wr w = sl_cql_wr_make(buf, sizeof(buf));
    size_t s = sl_cql_frame_begin(&w, 4, 0, 0, SL_CQL_OP_OPTIONS);
    sl_cql_options_encode(&w);
    sl_cql_frame_end(&w, s);
    want = find_frame("v4-plain.jsonl", "c2s", "OPTIONS", 0, &len);
    assert_int_equal(w.len, len);
    assert_memory_equal(buf, want, len);
    free(want);

    const char *startup[] = {"CQL_VERSION", "3.0.0"};
    w = sl_cql_wr_make(buf, sizeof(buf));
    s = sl_cql_frame_begin(&w, 4, 0, 1, SL_CQL_OP_STARTUP);
    sl_cql_startup_encode(&w, startup, 1);
    sl_cql_frame_end(&w, s);
    want = find_frame("v4-plain.jsonl", "c2s", "STARTUP", 0, &len);
    assert_int_equal(w.len, len);
    assert_memory_equal(buf, want, len);
    free(want);

    const char *startup_lz4[] = {"COMPRESSION", "lz4", "CQL_VERSION", "3.0.0"};
    w = sl_cql_wr_make(buf, sizeof(buf));
    s = sl_cql_frame_begin(&w, 4, 0, 1, SL_CQL_OP_STARTUP);
    sl_cql_startup_encode(&w, startup_lz4, 2);
    sl_cql_frame_end(&w, s);
    want = find_frame("v4-lz4.jsonl", "c2s", "STARTUP", 0, &len);
    assert_int_equal(w.len, len);
    assert_memory_equal(buf, want, len);
    free(want);

    const char *events[] = {"TOPOLOGY_CHANGE", "STATUS_CHANGE", "SCHEMA_CHANGE"};
    w = sl_cql_wr_make(buf, sizeof(buf));
    s = sl_cql_frame_begin(&w, 4, 0, 2, SL_CQL_OP_REGISTER);
    sl_cql_register_encode(&w, events, 3);
    sl_cql_frame_end(&w, s);
    want = find_frame("v4-plain.jsonl", "c2s", "REGISTER", 0, &len);
    assert_int_equal(w.len, len);
    assert_memory_equal(buf, want, len);
    free(want);

    static const uint8_t plain[] = "\0cassandra\0cassandra";
    w = sl_cql_wr_make(buf, sizeof(buf));
    s = sl_cql_frame_begin(&w, 4, 0, 1, SL_CQL_OP_AUTH_RESPONSE);
    sl_cql_auth_response_encode(&w, (sl_cql_bytes){plain, (int32_t)sizeof(plain) - 1});
    sl_cql_frame_end(&w, s);
    want = find_frame("v4-auth-success.jsonl", "c2s", "AUTH_RESPONSE", 0, &len);
    assert_int_equal(w.len, len);
    assert_memory_equal(buf, want, len);
    free(want);

    /* A writer that is too small drops bytes but counts what it needed. */
    w = sl_cql_wr_make(buf, 10);
    s = sl_cql_frame_begin(&w, 4, 0, 2, SL_CQL_OP_REGISTER);
    sl_cql_register_encode(&w, events, 3);
    sl_cql_frame_end(&w, s);
    assert_false(sl_cql_wr_ok(&w));
    assert_int_equal(w.len, 9 + 49);
    assert_int_equal(sl_cql_wr_status(&w), SL_ETOOBIG);

    /* Values the format cannot carry poison the writer for good. */
    static char big[70000];
    w = sl_cql_wr_make(buf, sizeof(buf));
    sl_cql_wr_string(&w, big, sizeof(big));
    assert_int_equal(sl_cql_wr_status(&w), SL_EINVAL);
    w = sl_cql_wr_make(buf, sizeof(buf));
    sl_cql_wr_bytes(&w, (sl_cql_bytes){NULL, -3});
    assert_int_equal(sl_cql_wr_status(&w), SL_EINVAL);
    sl_cql_batch_stmt bad = {.kind = 1, .id = {NULL, -1}};
    sl_cql_batch bb = {.stmts = &bad, .nstmts = 1};
    w = sl_cql_wr_make(buf, sizeof(buf));
    sl_cql_batch_encode(&w, &bb);
    assert_int_equal(sl_cql_wr_status(&w), SL_EINVAL);
}

/* QUERY and EXECUTE flag combinations, field order checked by hand. */
static void test_encode_qparams(void **state) {
    (void)state;
    uint8_t buf[256];
    sl_cql_bytes vals[3] = {{(const uint8_t *)"\0\0\0\1", 4}, SL_CQL_NULL, SL_CQL_UNSET};
    sl_cql_qparams qp = sl_cql_qparams_make(SL_CQL_LOCAL_QUORUM);
    qp.values = vals;
    qp.nvalues = 3;
    qp.skip_metadata = 1;
    qp.page_size = 100;
    qp.paging_state = (sl_cql_bytes){(const uint8_t *)"PS", 2};
    qp.serial_consistency = SL_CQL_LOCAL_SERIAL;
    qp.has_timestamp = 1;
    qp.timestamp = 0x0102030405060708LL;
    sl_cql_wr w = sl_cql_wr_make(buf, sizeof(buf));
    sl_cql_query_encode(&w, "Q", 1, &qp);
    static const uint8_t want[] = {0, 0, 0,    1,    'Q',  0x00, 0x06, 0x3f, 0x00, 0x03, 0, 0, 0, 4,   0, 0,
                                   0, 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 100, 0, 0,
                                   0, 2, 'P',  'S',  0x00, 0x09, 1,    2,    3,    4,    5, 6, 7, 8};
    assert_int_equal(w.len, sizeof(want));
    assert_memory_equal(buf, want, sizeof(want));

    /* Named values set 0x40 as well. */
    sl_cql_str names[1] = {{"k", 1}};
    qp = sl_cql_qparams_make(SL_CQL_ONE);
    qp.values = vals;
    qp.names = names;
    qp.nvalues = 1;
    w = sl_cql_wr_make(buf, sizeof(buf));
    sl_cql_execute_encode(&w, (const uint8_t *)"ID", 2, &qp);
    static const uint8_t want2[] = {0, 2, 'I', 'D', 0, 1, 0x41, 0, 1, 0, 1, 'k', 0, 0, 0, 4, 0, 0, 0, 1};
    assert_int_equal(w.len, sizeof(want2));
    assert_memory_equal(buf, want2, sizeof(want2));

    /* Batch: logged, one of each kind, serial and timestamp. */
    sl_cql_batch_stmt st[2] = {{.kind = 0, .query = {"Q", 1}},
                               {.kind = 1, .id = {(const uint8_t *)"I", 1}, .values = vals, .nvalues = 1}};
    sl_cql_batch b = {.type = SL_CQL_BATCH_LOGGED,
                      .stmts = st,
                      .nstmts = 2,
                      .consistency = SL_CQL_QUORUM,
                      .serial_consistency = SL_CQL_SERIAL,
                      .has_timestamp = 1,
                      .timestamp = 5};
    w = sl_cql_wr_make(buf, sizeof(buf));
    sl_cql_batch_encode(&w, &b);
    static const uint8_t want3[] = {0, 0, 2, 0, 0, 0, 0, 1, 'Q',  0, 0, 1, 0, 1, 'I', 0, 1, 0, 0,
                                    0, 4, 0, 0, 0, 1, 0, 4, 0x30, 0, 8, 0, 0, 0, 0,   0, 0, 0, 5};
    assert_int_equal(w.len, sizeof(want3));
    assert_memory_equal(buf, want3, sizeof(want3));
}

static void test_header_edges(void **state) {
    (void)state;
    sl_cql_header h;
    const uint8_t *body;
    uint8_t f[16] = {0x84, 0, 0, 1, SL_CQL_OP_READY, 0, 0, 0, 0};
    assert_int_equal(sl_cql_header_decode(f, 0, &h), SL_EPARTIAL);
    assert_int_equal(sl_cql_header_decode(f, 8, &h), SL_EPARTIAL);
    assert_int_equal(sl_cql_frame_cut(f, 9, &h, &body), 9);
    f[4] = 0x04; /* CREDENTIALS, v1 only */
    assert_int_equal(sl_cql_header_decode(f, 9, &h), SL_EINVAL);
    f[4] = 0x11;
    assert_int_equal(sl_cql_header_decode(f, 9, &h), SL_EINVAL);
    f[4] = SL_CQL_OP_READY;
    f[5] = 0x80; /* negative length */
    assert_int_equal(sl_cql_header_decode(f, 9, &h), SL_EINVAL);
    f[5] = 0x10; /* 256 MiB + ... */
    f[8] = 1;
    assert_int_equal(sl_cql_header_decode(f, 9, &h), SL_ETOOBIG);
    f[5] = 0;
    f[8] = 0;
    f[0] = 0x82;
    assert_int_equal(sl_cql_header_decode(f, 1, &h), SL_EPROTO);
    assert_int_equal(h.version, 2);
    f[0] = 0x05;
    assert_int_equal(sl_cql_header_decode(f, 9, &h), SL_EPROTO);
    assert_int_equal(h.version, 5);
    f[0] = 0x07;
    assert_int_equal(sl_cql_header_decode(f, 9, &h), SL_EINVAL);
    f[0] = 0x00;
    assert_int_equal(sl_cql_header_decode(f, 9, &h), SL_EINVAL);

    /* A request opcode in a response frame, trailing bytes, and a v3 frame
     * with the warning flag (v4-only) that carries a list anyway. */
    sl_cql_arena a = arena();
    sl_cql_response resp;
    sl_cql_header rh = {.version = 4, .response = 1, .opcode = SL_CQL_OP_QUERY};
    assert_int_equal(sl_cql_response_decode(&rh, f, 0, &a, &resp), SL_EINVAL);
    rh.opcode = SL_CQL_OP_READY;
    assert_int_equal(sl_cql_response_decode(&rh, f, 1, &a, &resp), SL_EINVAL);
    rh.version = 3;
    rh.flags = SL_CQL_FLAG_WARNING;
    uint8_t wl[] = {0, 0};
    assert_int_equal(sl_cql_response_decode(&rh, wl, 2, &a, &resp), SL_EINVAL);
    rh.version = 5;
    assert_int_equal(sl_cql_response_decode(&rh, wl, 0, &a, &resp), SL_EPROTO);
}

/* ---- hand-built responses for what the captures lack --------------------- */

static int decode_body(int version, int opcode, uint8_t flags, const sl_cql_wr *w, sl_cql_response *resp) {
    static sl_cql_arena a;
    a = arena();
    sl_cql_header h = {.version = (uint8_t)version,
                       .response = 1,
                       .flags = flags,
                       .opcode = (uint8_t)opcode,
                       .length = (uint32_t)w->len};
    return sl_cql_response_decode(&h, w->buf, w->len, &a, resp);
}

static void error_head(sl_cql_wr *w, int32_t code) {
    *w = sl_cql_wr_make(malloc(512), 512);
    sl_cql_wr_int(w, code);
    sl_cql_wr_string(w, "msg", 3);
}

static void test_errors(void **state) {
    (void)state;
    sl_cql_response r;
    sl_cql_wr w;

    error_head(&w, SL_CQL_ERR_UNAVAILABLE);
    sl_cql_wr_short(&w, SL_CQL_LOCAL_QUORUM);
    sl_cql_wr_int(&w, 2);
    sl_cql_wr_int(&w, 1);
    assert_int_equal(decode_body(4, SL_CQL_OP_ERROR, 0, &w, &r), 0);
    assert_int_equal(r.error.consistency, SL_CQL_LOCAL_QUORUM);
    assert_int_equal(r.error.required, 2);
    assert_int_equal(r.error.alive, 1);
    assert_int_equal(r.error.message.len, 3);
    free(w.buf);

    error_head(&w, SL_CQL_ERR_WRITE_TIMEOUT);
    sl_cql_wr_short(&w, SL_CQL_SERIAL);
    sl_cql_wr_int(&w, 0);
    sl_cql_wr_int(&w, 1);
    sl_cql_wr_string(&w, "CAS", 3);
    assert_int_equal(decode_body(4, SL_CQL_OP_ERROR, 0, &w, &r), 0);
    assert_int_equal(r.error.blockfor, 1);
    assert_memory_equal(r.error.write_type.p, "CAS", 3);
    /* v5 adds the contention count after a CAS write type. */
    assert_int_equal(decode_body(5, SL_CQL_OP_ERROR, 0, &w, &r), SL_EPROTO);
    sl_cql_rd rd = sl_cql_rd_make(w.buf, w.len);
    assert_int_equal(sl_cql_error_decode(5, &rd, &r.error), SL_EINVAL);
    sl_cql_wr_short(&w, 3);
    rd = sl_cql_rd_make(w.buf, w.len);
    assert_int_equal(sl_cql_error_decode(5, &rd, &r.error), 0);
    assert_int_equal(r.error.contentions, 3);
    free(w.buf);

    error_head(&w, SL_CQL_ERR_READ_TIMEOUT);
    sl_cql_wr_short(&w, SL_CQL_QUORUM);
    sl_cql_wr_int(&w, 1);
    sl_cql_wr_int(&w, 2);
    sl_cql_wr_byte(&w, 1);
    assert_int_equal(decode_body(4, SL_CQL_OP_ERROR, 0, &w, &r), 0);
    assert_int_equal(r.error.received, 1);
    assert_int_equal(r.error.blockfor, 2);
    assert_int_equal(r.error.data_present, 1);
    free(w.buf);

    /* ReadFailure / WriteFailure: v4 count, v5 reason map. */
    for (int code = SL_CQL_ERR_READ_FAILURE; code <= SL_CQL_ERR_WRITE_FAILURE; code += 0x200) {
        error_head(&w, code);
        sl_cql_wr_short(&w, SL_CQL_ALL);
        sl_cql_wr_int(&w, 1);
        sl_cql_wr_int(&w, 3);
        sl_cql_wr_int(&w, 2);
        size_t mark = w.len;
        if (code == SL_CQL_ERR_READ_FAILURE)
            sl_cql_wr_byte(&w, 0);
        else
            sl_cql_wr_string(&w, "SIMPLE", 6);
        assert_int_equal(decode_body(4, SL_CQL_OP_ERROR, 0, &w, &r), 0);
        assert_int_equal(r.error.numfailures, 2);
        if (code == SL_CQL_ERR_WRITE_FAILURE) assert_memory_equal(r.error.write_type.p, "SIMPLE", 6);
        /* The same head with a two-entry reason map, as v5 sends it. */
        w.len = mark;
        sl_cql_wr_byte(&w, 4);
        sl_cql_wr_raw(&w, "\x7f\0\0\1", 4);
        sl_cql_wr_short(&w, 1);
        sl_cql_wr_byte(&w, 16);
        sl_cql_wr_raw(&w, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\1", 16);
        sl_cql_wr_short(&w, 2);
        if (code == SL_CQL_ERR_READ_FAILURE)
            sl_cql_wr_byte(&w, 1);
        else
            sl_cql_wr_string(&w, "BATCH", 5);
        rd = sl_cql_rd_make(w.buf, w.len);
        assert_int_equal(sl_cql_error_decode(5, &rd, &r.error), 0);
        assert_int_equal(sl_cql_rd_left(&rd), 0);
        sl_cql_rd reasons = r.error.reasons;
        sl_cql_inet in;
        uint16_t fc;
        assert_int_equal(sl_cql_rd_inetaddr(&reasons, &in), 0);
        assert_int_equal(in.family_len, 4);
        assert_int_equal(sl_cql_rd_short(&reasons, &fc), 0);
        assert_int_equal(fc, 1);
        assert_int_equal(sl_cql_rd_inetaddr(&reasons, &in), 0);
        assert_int_equal(in.family_len, 16);
        assert_int_equal(sl_cql_rd_short(&reasons, &fc), 0);
        assert_int_equal(fc, 2);
        free(w.buf);
    }

    error_head(&w, SL_CQL_ERR_FUNCTION_FAILURE);
    sl_cql_wr_string(&w, "ks", 2);
    sl_cql_wr_string(&w, "fn", 2);
    const char *args[] = {"int", "text"};
    sl_cql_wr_string_list(&w, args, 2);
    assert_int_equal(decode_body(4, SL_CQL_OP_ERROR, 0, &w, &r), 0);
    assert_int_equal(r.error.arg_types.n, 2);
    assert_memory_equal(r.error.function.p, "fn", 2);
    free(w.buf);

    error_head(&w, SL_CQL_ERR_CAS_WRITE_UNKNOWN);
    sl_cql_wr_short(&w, SL_CQL_SERIAL);
    sl_cql_wr_int(&w, 1);
    sl_cql_wr_int(&w, 2);
    rd = sl_cql_rd_make(w.buf, w.len);
    assert_int_equal(sl_cql_error_decode(5, &rd, &r.error), 0);
    assert_int_equal(r.error.blockfor, 2);
    free(w.buf);

    /* Codes whose body is only the message. */
    static const int32_t plain_codes[] = {
        SL_CQL_ERR_SERVER,           SL_CQL_ERR_PROTOCOL, SL_CQL_ERR_BAD_CREDENTIALS, SL_CQL_ERR_OVERLOADED,
        SL_CQL_ERR_IS_BOOTSTRAPPING, SL_CQL_ERR_TRUNCATE, SL_CQL_ERR_SYNTAX,          SL_CQL_ERR_UNAUTHORIZED,
        SL_CQL_ERR_INVALID,          SL_CQL_ERR_CONFIG};
    for (size_t i = 0; i < sizeof(plain_codes) / sizeof(plain_codes[0]); i++) {
        error_head(&w, plain_codes[i]);
        assert_int_equal(decode_body(4, SL_CQL_OP_ERROR, 0, &w, &r), 0);
        assert_int_equal(r.error.code, plain_codes[i]);
        sl_cql_wr_byte(&w, 0);
        assert_int_equal(decode_body(4, SL_CQL_OP_ERROR, 0, &w, &r), SL_EINVAL);
        free(w.buf);
    }
}

static void test_events_and_auth(void **state) {
    (void)state;
    sl_cql_response r;
    sl_cql_wr w = sl_cql_wr_make(malloc(256), 256);
    sl_cql_inet in = {.family_len = 4, .addr = {10, 0, 0, 7}, .port = 9042};
    sl_cql_wr_string(&w, "TOPOLOGY_CHANGE", 15);
    sl_cql_wr_string(&w, "NEW_NODE", 8);
    sl_cql_wr_inet(&w, &in);
    assert_int_equal(decode_body(4, SL_CQL_OP_EVENT, 0, &w, &r), 0);
    assert_memory_equal(r.event.change.p, "NEW_NODE", 8);
    assert_int_equal(r.event.addr.port, 9042);
    assert_int_equal(r.event.addr.addr[3], 7);

    w.len = 0;
    sl_cql_wr_string(&w, "STATUS_CHANGE", 13);
    sl_cql_wr_string(&w, "DOWN", 4);
    in.family_len = 16;
    sl_cql_wr_inet(&w, &in);
    assert_int_equal(decode_body(4, SL_CQL_OP_EVENT, 0, &w, &r), 0);
    assert_int_equal(r.event.addr.family_len, 16);

    w.len = 0;
    sl_cql_wr_string(&w, "SCHEMA_CHANGE", 13);
    sl_cql_wr_string(&w, "DROPPED", 7);
    sl_cql_wr_string(&w, "FUNCTION", 8);
    sl_cql_wr_string(&w, "ks", 2);
    sl_cql_wr_string(&w, "f", 1);
    const char *args[] = {"int"};
    sl_cql_wr_string_list(&w, args, 1);
    assert_int_equal(decode_body(4, SL_CQL_OP_EVENT, 0, &w, &r), 0);
    assert_int_equal(r.event.schema.sc_args.n, 1);

    w.len = 0;
    sl_cql_wr_string(&w, "BOGUS", 5);
    assert_int_equal(decode_body(4, SL_CQL_OP_EVENT, 0, &w, &r), SL_EINVAL);

    /* AUTH_CHALLENGE with a token, AUTH_SUCCESS with an empty one. */
    w.len = 0;
    sl_cql_wr_bytes(&w, (sl_cql_bytes){(const uint8_t *)"abc", 3});
    assert_int_equal(decode_body(4, SL_CQL_OP_AUTH_CHALLENGE, 0, &w, &r), 0);
    assert_int_equal(r.token.len, 3);
    w.len = 0;
    sl_cql_wr_bytes(&w, (sl_cql_bytes){(const uint8_t *)"", 0});
    assert_int_equal(decode_body(4, SL_CQL_OP_AUTH_SUCCESS, 0, &w, &r), 0);
    assert_int_equal(r.token.len, 0);
    /* [bytes] may be null but never "unset". */
    w.len = 0;
    sl_cql_wr_int(&w, -2);
    assert_int_equal(decode_body(4, SL_CQL_OP_AUTH_SUCCESS, 0, &w, &r), SL_EINVAL);

    /* Tracing id, warnings and custom payload together, in that order. */
    w.len = 0;
    static const uint8_t uuid[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    sl_cql_wr_uuid(&w, uuid);
    const char *warn[] = {"careful"};
    sl_cql_wr_string_list(&w, warn, 1);
    const char *keys[] = {"k"};
    sl_cql_bytes vals[] = {{(const uint8_t *)"v", 1}};
    sl_cql_wr_bytes_map(&w, keys, vals, 1);
    sl_cql_wr_int(&w, SL_CQL_RESULT_VOID);
    assert_int_equal(decode_body(4, SL_CQL_OP_RESULT, 0x0e, &w, &r), 0);
    assert_memory_equal(r.env.tracing_id, uuid, 16);
    assert_int_equal(r.env.warnings.n, 1);
    sl_cql_seq p = r.env.payload;
    sl_cql_str k;
    sl_cql_bytes v;
    assert_int_equal(sl_cql_bytes_map_next(&p, &k, &v), 1);
    assert_int_equal(v.len, 1);
    assert_int_equal(sl_cql_bytes_map_next(&p, &k, &v), 0);
    assert_int_equal(r.result.kind, SL_CQL_RESULT_VOID);
    free(w.buf);
}

/* Rows with per-column table specs and every kind of type option, and a v4
 * Prepared with two pk indexes. */
static void test_types(void **state) {
    (void)state;
    sl_cql_response r;
    sl_cql_wr w = sl_cql_wr_make(malloc(1024), 1024);
    sl_cql_wr_int(&w, SL_CQL_RESULT_ROWS);
    sl_cql_wr_int(&w, 0); /* no global spec */
    sl_cql_wr_int(&w, 5);
    const char *names[] = {"l", "m", "u", "t", "c"};
    for (int i = 0; i < 5; i++) {
        sl_cql_wr_string(&w, "ks", 2);
        sl_cql_wr_string(&w, "tb", 2);
        sl_cql_wr_string(&w, names[i], 1);
        switch (i) {
        case 0: /* list<frozen<set<int>>> */
            sl_cql_wr_short(&w, SL_CQL_T_LIST);
            sl_cql_wr_short(&w, SL_CQL_T_SET);
            sl_cql_wr_short(&w, SL_CQL_T_INT);
            break;
        case 1: /* map<text, tuple<int, uuid>> */
            sl_cql_wr_short(&w, SL_CQL_T_MAP);
            sl_cql_wr_short(&w, SL_CQL_T_VARCHAR);
            sl_cql_wr_short(&w, SL_CQL_T_TUPLE);
            sl_cql_wr_short(&w, 2);
            sl_cql_wr_short(&w, SL_CQL_T_INT);
            sl_cql_wr_short(&w, SL_CQL_T_UUID);
            break;
        case 2: /* udt ks.addr {street text, zip int} */
            sl_cql_wr_short(&w, SL_CQL_T_UDT);
            sl_cql_wr_string(&w, "ks", 2);
            sl_cql_wr_string(&w, "addr", 4);
            sl_cql_wr_short(&w, 2);
            sl_cql_wr_string(&w, "street", 6);
            sl_cql_wr_short(&w, SL_CQL_T_VARCHAR);
            sl_cql_wr_string(&w, "zip", 3);
            sl_cql_wr_short(&w, SL_CQL_T_INT);
            break;
        case 3:
            sl_cql_wr_short(&w, SL_CQL_T_DURATION);
            break;
        case 4:
            sl_cql_wr_short(&w, SL_CQL_T_CUSTOM);
            sl_cql_wr_string(&w, "org.example.T", 13);
            break;
        }
    }
    sl_cql_wr_int(&w, 1);
    for (int i = 0; i < 5; i++)
        sl_cql_wr_bytes(&w, i == 3 ? SL_CQL_NULL : (sl_cql_bytes){(const uint8_t *)"x", 1});
    assert_true(sl_cql_wr_ok(&w));
    assert_int_equal(decode_body(4, SL_CQL_OP_RESULT, 0, &w, &r), 0);
    const sl_cql_meta *m = &r.result.meta;
    char tn[128];
    sl_cql_type_name(&m->cols[0].type, tn, sizeof(tn));
    assert_string_equal(tn, "list<set<int>>");
    sl_cql_type_name(&m->cols[1].type, tn, sizeof(tn));
    assert_string_equal(tn, "map<varchar, tuple<int, uuid>>");
    sl_cql_type_name(&m->cols[2].type, tn, sizeof(tn));
    assert_string_equal(tn, "ks.addr");
    assert_int_equal(m->cols[2].type.n, 2);
    assert_memory_equal(m->cols[2].type.fields[1].p, "zip", 3);
    assert_int_equal(m->cols[2].type.sub[1].id, SL_CQL_T_INT);
    sl_cql_type_name(&m->cols[3].type, tn, sizeof(tn));
    assert_string_equal(tn, "duration");
    sl_cql_type_name(&m->cols[4].type, tn, sizeof(tn));
    assert_string_equal(tn, "'org.example.T'");
    assert_memory_equal(m->cols[4].table.p, "tb", 2);
    sl_cql_rd rows = r.result.rows;
    sl_cql_bytes cell;
    int nulls = 0, cells = 0;
    while (sl_cql_rows_next(&rows, &cell)) {
        cells++;
        nulls += cell.len == -1;
    }
    assert_int_equal(cells, 5);
    assert_int_equal(nulls, 1);

    /* A tiny arena is an ordinary error, not a crash. */
    uint8_t small[64];
    sl_cql_arena a = {small, sizeof(small), 0};
    sl_cql_header h = {.version = 4, .response = 1, .opcode = SL_CQL_OP_RESULT, .length = (uint32_t)w.len};
    assert_int_equal(sl_cql_response_decode(&h, w.buf, w.len, &a, &r), SL_ENOMEM);

    /* Nesting deeper than SL_CQL_MAX_TYPE_DEPTH is refused. */
    w.len = 0;
    sl_cql_wr_int(&w, SL_CQL_RESULT_ROWS);
    sl_cql_wr_int(&w, SL_CQL_MD_GLOBAL_TABLES_SPEC);
    sl_cql_wr_int(&w, 1);
    sl_cql_wr_string(&w, "ks", 2);
    sl_cql_wr_string(&w, "tb", 2);
    sl_cql_wr_string(&w, "c", 1);
    for (int i = 0; i < 40; i++)
        sl_cql_wr_short(&w, SL_CQL_T_LIST);
    sl_cql_wr_short(&w, SL_CQL_T_INT);
    sl_cql_wr_int(&w, 0);
    assert_int_equal(decode_body(4, SL_CQL_OP_RESULT, 0, &w, &r), SL_EINVAL);

    /* Prepared, v4: two pk indexes, no result columns. */
    w.len = 0;
    sl_cql_wr_int(&w, SL_CQL_RESULT_PREPARED);
    sl_cql_wr_short_bytes(&w, "0123456789abcdef", 16);
    sl_cql_wr_int(&w, SL_CQL_MD_GLOBAL_TABLES_SPEC);
    sl_cql_wr_int(&w, 2);
    sl_cql_wr_int(&w, 2);
    sl_cql_wr_short(&w, 1);
    sl_cql_wr_short(&w, 0);
    sl_cql_wr_string(&w, "ks", 2);
    sl_cql_wr_string(&w, "tb", 2);
    sl_cql_wr_string(&w, "a", 1);
    sl_cql_wr_short(&w, SL_CQL_T_VARCHAR);
    sl_cql_wr_string(&w, "b", 1);
    sl_cql_wr_short(&w, SL_CQL_T_VARCHAR);
    sl_cql_wr_int(&w, SL_CQL_MD_NO_METADATA);
    sl_cql_wr_int(&w, 0);
    assert_int_equal(decode_body(4, SL_CQL_OP_RESULT, 0, &w, &r), 0);
    assert_int_equal(r.result.bind.npk, 2);
    assert_int_equal(r.result.bind.pk[0], 1);
    assert_int_equal(r.result.bind.ncols, 2);
    free(w.buf);
}

/* Row values of the captured results, read cell by cell. */
static void test_row_values(void **state) {
    (void)state;
    size_t len;
    /* The 150000-byte blob: byte i = (7*i + (i>>8)) & 0xff. */
    json_t *arr = load_jsonl("sessions/v4-plain.jsonl");
    size_t idx;
    json_t *o;
    int seen = 0;
    json_array_foreach(arr, idx, o) {
        if (strcmp(jstr(o, "dir"), "s2c") || json_integer_value(json_object_get(o, "length")) != 150057)
            continue;
        uint8_t *fr = unhex(jstr(o, "hex"), &len);
        sl_cql_header h;
        const uint8_t *body;
        assert_int_equal(sl_cql_frame_cut(fr, len, &h, &body), (long)len);
        sl_cql_arena a = arena();
        sl_cql_response r;
        assert_int_equal(sl_cql_response_decode(&h, body, h.length, &a, &r), 0);
        sl_cql_rd rows = r.result.rows;
        sl_cql_bytes id, blob;
        assert_int_equal(sl_cql_rows_next(&rows, &id), 1);
        assert_int_equal(sl_cql_rows_next(&rows, &blob), 1);
        assert_int_equal(blob.len, 150000);
        for (int32_t i = 0; i < blob.len; i++)
            if (blob.p[i] != (uint8_t)((7 * i + (i >> 8)) & 0xff)) fail_msg("blob byte %d", i);
        assert_int_equal(sl_cql_rows_next(&rows, &id), 0);
        free(fr);
        seen++;
    }
    assert_int_equal(seen, 1);
    json_decref(arr);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sessions),
        cmocka_unit_test(test_stream_cut),
        cmocka_unit_test(test_encode_from_scratch),
        cmocka_unit_test(test_encode_qparams),
        cmocka_unit_test(test_header_edges),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_events_and_auth),
        cmocka_unit_test(test_types),
        cmocka_unit_test(test_row_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
