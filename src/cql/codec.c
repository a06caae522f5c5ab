/* codec.c: the CQL native protocol v3/v4 codec. See codec.h for the wire
 * format and the conventions; this file only adds the why of the details.
 *
 * Every length read from the wire is checked against what is left of the
 * buffer before it is used, in 64-bit arithmetic, so hostile input can at
 * worst make a decoder return SL_EINVAL. Recursion (type trees) is bounded
 * by SL_CQL_MAX_TYPE_DEPTH. */
#include "codec.h"

#include <string.h>

#include <lz4.h>

/* ---- readers ------------------------------------------------------------ */

static uint16_t be16(const uint8_t *p) {
    return (uint16_t)((p[0] << 8) | p[1]);
}
static uint32_t be32(const uint8_t *p) {
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

int sl_cql_rd_raw(sl_cql_rd *r, size_t n, const uint8_t **p) {
    if (sl_cql_rd_left(r) < n) return SL_EINVAL;
    if (p) *p = r->p;
    r->p += n;
    return 0;
}

int sl_cql_rd_byte(sl_cql_rd *r, uint8_t *v) {
    if (sl_cql_rd_left(r) < 1) return SL_EINVAL;
    *v = *r->p++;
    return 0;
}

int sl_cql_rd_short(sl_cql_rd *r, uint16_t *v) {
    if (sl_cql_rd_left(r) < 2) return SL_EINVAL;
    *v = be16(r->p);
    r->p += 2;
    return 0;
}

int sl_cql_rd_int(sl_cql_rd *r, int32_t *v) {
    if (sl_cql_rd_left(r) < 4) return SL_EINVAL;
    *v = (int32_t)be32(r->p);
    r->p += 4;
    return 0;
}

int sl_cql_rd_long(sl_cql_rd *r, int64_t *v) {
    if (sl_cql_rd_left(r) < 8) return SL_EINVAL;
    *v = (int64_t)(((uint64_t)be32(r->p) << 32) | be32(r->p + 4));
    r->p += 8;
    return 0;
}

int sl_cql_rd_string(sl_cql_rd *r, sl_cql_str *s) {
    sl_cql_rd save = *r;
    uint16_t n;
    const uint8_t *p;
    if (sl_cql_rd_short(r, &n) || sl_cql_rd_raw(r, n, &p)) {
        *r = save;
        return SL_EINVAL;
    }
    s->p = (const char *)p;
    s->len = n;
    return 0;
}

int sl_cql_rd_long_string(sl_cql_rd *r, sl_cql_str *s) {
    sl_cql_rd save = *r;
    int32_t n;
    const uint8_t *p;
    if (sl_cql_rd_int(r, &n) || n < 0 || sl_cql_rd_raw(r, (size_t)n, &p)) {
        *r = save;
        return SL_EINVAL;
    }
    s->p = (const char *)p;
    s->len = (size_t)n;
    return 0;
}

int sl_cql_rd_uuid(sl_cql_rd *r, uint8_t uuid[16]) {
    const uint8_t *p;
    if (sl_cql_rd_raw(r, 16, &p)) return SL_EINVAL;
    memcpy(uuid, p, 16);
    return 0;
}

/* [bytes] and [value] differ only in which negative lengths mean something:
 * -1 is null for both, -2 is "unset" for a v4 [value]. */
static int rd_bytes_min(sl_cql_rd *r, sl_cql_bytes *b, int32_t min) {
    sl_cql_rd save = *r;
    int32_t n;
    if (sl_cql_rd_int(r, &n)) return SL_EINVAL;
    if (n < 0) {
        if (n < min) {
            *r = save;
            return SL_EINVAL;
        }
        b->p = NULL;
        b->len = n;
        return 0;
    }
    if (sl_cql_rd_raw(r, (size_t)n, &b->p)) {
        *r = save;
        return SL_EINVAL;
    }
    b->len = n;
    return 0;
}

int sl_cql_rd_bytes(sl_cql_rd *r, sl_cql_bytes *b) {
    return rd_bytes_min(r, b, -1);
}
int sl_cql_rd_value(sl_cql_rd *r, sl_cql_bytes *b) {
    return rd_bytes_min(r, b, -2);
}

int sl_cql_rd_short_bytes(sl_cql_rd *r, sl_cql_bytes *b) {
    sl_cql_rd save = *r;
    uint16_t n;
    if (sl_cql_rd_short(r, &n) || sl_cql_rd_raw(r, n, &b->p)) {
        *r = save;
        return SL_EINVAL;
    }
    b->len = n;
    return 0;
}

int sl_cql_rd_inetaddr(sl_cql_rd *r, sl_cql_inet *in) {
    sl_cql_rd save = *r;
    uint8_t n;
    const uint8_t *p;
    if (sl_cql_rd_byte(r, &n) || (n != 4 && n != 16) || sl_cql_rd_raw(r, n, &p)) {
        *r = save;
        return SL_EINVAL;
    }
    memset(in, 0, sizeof(*in));
    in->family_len = n;
    memcpy(in->addr, p, n);
    return 0;
}

int sl_cql_rd_inet(sl_cql_rd *r, sl_cql_inet *in) {
    sl_cql_rd save = *r;
    int32_t port;
    if (sl_cql_rd_inetaddr(r, in) || sl_cql_rd_int(r, &port)) {
        *r = save;
        return SL_EINVAL;
    }
    in->port = port;
    return 0;
}

int sl_cql_rd_consistency(sl_cql_rd *r, uint16_t *cl) {
    return sl_cql_rd_short(r, cl);
}

/* The collection readers walk every entry once so that iteration over the
 * returned view cannot fail later. */
static int rd_seq(sl_cql_rd *r, sl_cql_seq *s, int kind) {
    sl_cql_rd save = *r;
    uint16_t n;
    if (sl_cql_rd_short(r, &n)) return SL_EINVAL;
    s->rd = *r;
    s->n = n;
    for (uint32_t i = 0; i < n; i++) {
        sl_cql_str k;
        sl_cql_bytes b;
        sl_cql_seq sub;
        int rc = sl_cql_rd_string(r, &k);
        if (!rc && kind == 1) rc = sl_cql_rd_string(r, &k);
        if (!rc && kind == 2) rc = rd_seq(r, &sub, 0);
        if (!rc && kind == 3) rc = sl_cql_rd_bytes(r, &b);
        if (rc) {
            *r = save;
            return SL_EINVAL;
        }
    }
    s->rd.end = r->p;
    return 0;
}

int sl_cql_rd_string_list(sl_cql_rd *r, sl_cql_seq *s) {
    return rd_seq(r, s, 0);
}
int sl_cql_rd_string_map(sl_cql_rd *r, sl_cql_seq *s) {
    return rd_seq(r, s, 1);
}
int sl_cql_rd_string_multimap(sl_cql_rd *r, sl_cql_seq *s) {
    return rd_seq(r, s, 2);
}
int sl_cql_rd_bytes_map(sl_cql_rd *r, sl_cql_seq *s) {
    return rd_seq(r, s, 3);
}

int sl_cql_string_list_next(sl_cql_seq *s, sl_cql_str *v) {
    if (s->n == 0 || sl_cql_rd_string(&s->rd, v)) return 0;
    s->n--;
    return 1;
}

int sl_cql_string_map_next(sl_cql_seq *s, sl_cql_str *k, sl_cql_str *v) {
    if (s->n == 0 || sl_cql_rd_string(&s->rd, k) || sl_cql_rd_string(&s->rd, v)) return 0;
    s->n--;
    return 1;
}

int sl_cql_string_multimap_next(sl_cql_seq *s, sl_cql_str *k, sl_cql_seq *vals) {
    if (s->n == 0 || sl_cql_rd_string(&s->rd, k) || rd_seq(&s->rd, vals, 0)) return 0;
    s->n--;
    return 1;
}

int sl_cql_bytes_map_next(sl_cql_seq *s, sl_cql_str *k, sl_cql_bytes *v) {
    if (s->n == 0 || sl_cql_rd_string(&s->rd, k) || sl_cql_rd_bytes(&s->rd, v)) return 0;
    s->n--;
    return 1;
}

/* ---- writers ------------------------------------------------------------ */

void sl_cql_wr_raw(sl_cql_wr *w, const void *p, size_t n) {
    if (w->len <= w->cap && n <= w->cap - w->len && n) memcpy(w->buf + w->len, p, n);
    w->len += n;
}

void sl_cql_wr_byte(sl_cql_wr *w, uint8_t v) {
    sl_cql_wr_raw(w, &v, 1);
}

void sl_cql_wr_short(sl_cql_wr *w, uint16_t v) {
    uint8_t b[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    sl_cql_wr_raw(w, b, 2);
}

void sl_cql_wr_int(sl_cql_wr *w, int32_t v) {
    uint32_t u = (uint32_t)v;
    uint8_t b[4] = {(uint8_t)(u >> 24), (uint8_t)(u >> 16), (uint8_t)(u >> 8), (uint8_t)u};
    sl_cql_wr_raw(w, b, 4);
}

void sl_cql_wr_long(sl_cql_wr *w, int64_t v) {
    sl_cql_wr_int(w, (int32_t)(uint32_t)((uint64_t)v >> 32));
    sl_cql_wr_int(w, (int32_t)(uint32_t)(uint64_t)v);
}

/* Marks the writer as holding a value the format cannot carry. */
static int wr_fail_if(sl_cql_wr *w, int bad) {
    if (bad) w->err = SL_EINVAL;
    return bad;
}

void sl_cql_wr_string(sl_cql_wr *w, const char *s, size_t n) {
    if (wr_fail_if(w, n > 0xffff)) return;
    sl_cql_wr_short(w, (uint16_t)n);
    sl_cql_wr_raw(w, s, n);
}

void sl_cql_wr_long_string(sl_cql_wr *w, const char *s, size_t n) {
    if (wr_fail_if(w, n > INT32_MAX)) return;
    sl_cql_wr_int(w, (int32_t)n);
    sl_cql_wr_raw(w, s, n);
}

void sl_cql_wr_uuid(sl_cql_wr *w, const uint8_t uuid[16]) {
    sl_cql_wr_raw(w, uuid, 16);
}

void sl_cql_wr_bytes(sl_cql_wr *w, sl_cql_bytes b) {
    if (wr_fail_if(w, b.len < -2 || (b.len > 0 && !b.p))) return;
    sl_cql_wr_int(w, b.len);
    if (b.len > 0) sl_cql_wr_raw(w, b.p, (size_t)b.len);
}

void sl_cql_wr_short_bytes(sl_cql_wr *w, const void *p, uint16_t n) {
    sl_cql_wr_short(w, n);
    sl_cql_wr_raw(w, p, n);
}

void sl_cql_wr_inet(sl_cql_wr *w, const sl_cql_inet *in) {
    sl_cql_wr_byte(w, in->family_len);
    sl_cql_wr_raw(w, in->addr, in->family_len);
    sl_cql_wr_int(w, in->port);
}

void sl_cql_wr_string_list(sl_cql_wr *w, const char *const *v, size_t n) {
    if (wr_fail_if(w, n > 0xffff)) return;
    sl_cql_wr_short(w, (uint16_t)n);
    for (size_t i = 0; i < n; i++)
        sl_cql_wr_string(w, v[i], strlen(v[i]));
}

void sl_cql_wr_string_map(sl_cql_wr *w, const char *const *kv, size_t n) {
    if (wr_fail_if(w, n > 0xffff)) return;
    sl_cql_wr_short(w, (uint16_t)n);
    for (size_t i = 0; i < 2 * n; i++)
        sl_cql_wr_string(w, kv[i], strlen(kv[i]));
}

void sl_cql_wr_bytes_map(sl_cql_wr *w, const char *const *keys, const sl_cql_bytes *vals, size_t n) {
    if (wr_fail_if(w, n > 0xffff)) return;
    sl_cql_wr_short(w, (uint16_t)n);
    for (size_t i = 0; i < n; i++) {
        sl_cql_wr_string(w, keys[i], strlen(keys[i]));
        sl_cql_wr_bytes(w, vals[i]);
    }
}

void *sl_cql_arena_alloc(sl_cql_arena *a, size_t size) {
    size_t at = (a->used + 15) & ~(size_t)15;
    if (at > a->cap || size > a->cap - at) return NULL;
    a->used = at + size;
    memset(a->base + at, 0, size);
    return a->base + at;
}

/* ---- frames ------------------------------------------------------------- */

int sl_cql_header_decode(const uint8_t *buf, size_t len, sl_cql_header *h) {
    if (len < 1) return SL_EPARTIAL;
    uint8_t v = buf[0] & 0x7f;
    memset(h, 0, sizeof(*h));
    h->version = v;
    h->response = buf[0] >> 7;
    /* v1 and v2 have an 8-byte header with a one-byte stream; say so before
     * waiting for a ninth byte that may never come. */
    if (v == 1 || v == 2) return SL_EPROTO;
    if (v != 3 && v != 4 && v != 5) return SL_EINVAL;
    if (len < SL_CQL_HEADER_LEN) return SL_EPARTIAL;
    h->flags = buf[1];
    h->stream = (int16_t)be16(buf + 2);
    h->opcode = buf[4];
    h->length = be32(buf + 5);
    if (v == 5) return SL_EPROTO;
    if (h->opcode > SL_CQL_OP_AUTH_SUCCESS || h->opcode == 0x04) return SL_EINVAL;
    if (h->length > SL_CQL_MAX_BODY) return (h->length & 0x80000000u) ? SL_EINVAL : SL_ETOOBIG;
    return SL_CQL_HEADER_LEN;
}

void sl_cql_header_encode(uint8_t out[SL_CQL_HEADER_LEN], const sl_cql_header *h) {
    out[0] = (uint8_t)(h->version | (h->response ? 0x80 : 0));
    out[1] = h->flags;
    out[2] = (uint8_t)((uint16_t)h->stream >> 8);
    out[3] = (uint8_t)h->stream;
    out[4] = h->opcode;
    out[5] = (uint8_t)(h->length >> 24);
    out[6] = (uint8_t)(h->length >> 16);
    out[7] = (uint8_t)(h->length >> 8);
    out[8] = (uint8_t)h->length;
}

long sl_cql_frame_cut(const uint8_t *buf, size_t len, sl_cql_header *h, const uint8_t **body) {
    int rc = sl_cql_header_decode(buf, len, h);
    if (rc < 0) return rc;
    if (len - SL_CQL_HEADER_LEN < h->length) return SL_EPARTIAL;
    *body = buf + SL_CQL_HEADER_LEN;
    return (long)(SL_CQL_HEADER_LEN + h->length);
}

size_t sl_cql_frame_begin(sl_cql_wr *w, uint8_t version, uint8_t flags, int16_t stream, uint8_t opcode) {
    size_t start = w->len;
    sl_cql_header h = {.version = version, .flags = flags, .stream = stream, .opcode = opcode};
    uint8_t hdr[SL_CQL_HEADER_LEN];
    sl_cql_header_encode(hdr, &h);
    sl_cql_wr_raw(w, hdr, sizeof(hdr));
    return start;
}

void sl_cql_frame_end(sl_cql_wr *w, size_t start) {
    size_t n = w->len - start - SL_CQL_HEADER_LEN;
    if (w->len > w->cap) return;
    uint8_t *p = w->buf + start + 5;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
}

long sl_cql_lz4_compress(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    if (n > SL_CQL_MAX_BODY || cap < 4) return SL_ETOOBIG;
    size_t room = cap - 4;
    if (room > (size_t)LZ4_MAX_INPUT_SIZE) room = LZ4_MAX_INPUT_SIZE;
    int c = LZ4_compress_default((const char *)in, (char *)out + 4, (int)n, (int)room);
    if (c <= 0 && n > 0) return SL_ETOOBIG;
    out[0] = (uint8_t)(n >> 24);
    out[1] = (uint8_t)(n >> 16);
    out[2] = (uint8_t)(n >> 8);
    out[3] = (uint8_t)n;
    return 4 + (long)c;
}

long sl_cql_lz4_inflated_len(const uint8_t *in, size_t n) {
    if (n < 4) return SL_EINVAL;
    uint32_t len = be32(in);
    if (len > SL_CQL_MAX_BODY) return SL_EINVAL;
    return (long)len;
}

long sl_cql_lz4_decompress(const uint8_t *in, size_t n, uint8_t *out, size_t cap) {
    long want = sl_cql_lz4_inflated_len(in, n);
    if (want < 0) return want;
    if ((size_t)want > cap) return SL_ETOOBIG;
    if (n - 4 > (size_t)LZ4_MAX_INPUT_SIZE) return SL_EINVAL;
    /* An empty body still carries one LZ4 block (a lone zero token). */
    int got = LZ4_decompress_safe((const char *)in + 4, (char *)out, (int)(n - 4), (int)want);
    if (got != want) return SL_EINVAL;
    return got;
}

int sl_cql_envelope_decode(const sl_cql_header *h, const uint8_t *body, size_t len, sl_cql_envelope *e) {
    memset(e, 0, sizeof(*e));
    e->msg = sl_cql_rd_make(body, len);
    /* In a request the tracing flag asks for tracing and adds nothing. */
    if (h->response && (h->flags & SL_CQL_FLAG_TRACING)) {
        if (sl_cql_rd_uuid(&e->msg, e->tracing_id)) return SL_EINVAL;
        e->has_tracing = 1;
    }
    if (h->response && (h->flags & SL_CQL_FLAG_WARNING) && h->version >= 4) {
        if (sl_cql_rd_string_list(&e->msg, &e->warnings)) return SL_EINVAL;
        e->has_warnings = 1;
    }
    if ((h->flags & SL_CQL_FLAG_PAYLOAD) && h->version >= 4) {
        if (sl_cql_rd_bytes_map(&e->msg, &e->payload)) return SL_EINVAL;
        e->has_payload = 1;
    }
    return 0;
}

/* ---- requests ----------------------------------------------------------- */

void sl_cql_startup_encode(sl_cql_wr *w, const char *const *kv, size_t npairs) {
    sl_cql_wr_string_map(w, kv, npairs);
}

void sl_cql_options_encode(sl_cql_wr *w) {
    (void)w;
}

/* The order of the optional parts is fixed by the spec (section 4.1.4):
 * values, page size, paging state, serial consistency, timestamp. */
static void wr_qparams(sl_cql_wr *w, const sl_cql_qparams *qp) {
    uint8_t flags = 0;
    if (qp->values) flags |= SL_CQL_QF_VALUES | (qp->names ? SL_CQL_QF_NAMES : 0);
    if (qp->skip_metadata) flags |= SL_CQL_QF_SKIP_METADATA;
    if (qp->page_size >= 0) flags |= SL_CQL_QF_PAGE_SIZE;
    if (qp->paging_state.p) flags |= SL_CQL_QF_PAGING_STATE;
    if (qp->serial_consistency) flags |= SL_CQL_QF_SERIAL;
    if (qp->has_timestamp) flags |= SL_CQL_QF_TIMESTAMP;
    sl_cql_wr_short(w, qp->consistency);
    sl_cql_wr_byte(w, flags);
    if (qp->values) {
        sl_cql_wr_short(w, qp->nvalues);
        for (uint16_t i = 0; i < qp->nvalues; i++) {
            if (qp->names) sl_cql_wr_string(w, qp->names[i].p, qp->names[i].len);
            sl_cql_wr_bytes(w, qp->values[i]);
        }
    }
    if (qp->page_size >= 0) sl_cql_wr_int(w, qp->page_size);
    if (qp->paging_state.p) sl_cql_wr_bytes(w, qp->paging_state);
    if (qp->serial_consistency) sl_cql_wr_short(w, qp->serial_consistency);
    if (qp->has_timestamp) sl_cql_wr_long(w, qp->timestamp);
}

void sl_cql_query_encode(sl_cql_wr *w, const char *query, size_t qlen, const sl_cql_qparams *qp) {
    sl_cql_wr_long_string(w, query, qlen);
    wr_qparams(w, qp);
}

void sl_cql_prepare_encode(sl_cql_wr *w, const char *query, size_t qlen) {
    sl_cql_wr_long_string(w, query, qlen);
}

void sl_cql_execute_encode(sl_cql_wr *w, const uint8_t *id, uint16_t idlen, const sl_cql_qparams *qp) {
    sl_cql_wr_short_bytes(w, id, idlen);
    wr_qparams(w, qp);
}

void sl_cql_batch_encode(sl_cql_wr *w, const sl_cql_batch *b) {
    sl_cql_wr_byte(w, b->type);
    sl_cql_wr_short(w, b->nstmts);
    for (uint16_t i = 0; i < b->nstmts; i++) {
        const sl_cql_batch_stmt *s = &b->stmts[i];
        sl_cql_wr_byte(w, s->kind);
        if (s->kind == 0)
            sl_cql_wr_long_string(w, s->query.p, s->query.len);
        else if (!wr_fail_if(w, s->id.len < 0 || s->id.len > 0xffff))
            sl_cql_wr_short_bytes(w, s->id.p, (uint16_t)s->id.len);
        sl_cql_wr_short(w, s->nvalues);
        for (uint16_t j = 0; j < s->nvalues; j++)
            sl_cql_wr_bytes(w, s->values[j]);
    }
    sl_cql_wr_short(w, b->consistency);
    sl_cql_wr_byte(w, (uint8_t)((b->serial_consistency ? SL_CQL_QF_SERIAL : 0) |
                                (b->has_timestamp ? SL_CQL_QF_TIMESTAMP : 0)));
    if (b->serial_consistency) sl_cql_wr_short(w, b->serial_consistency);
    if (b->has_timestamp) sl_cql_wr_long(w, b->timestamp);
}

void sl_cql_register_encode(sl_cql_wr *w, const char *const *events, size_t n) {
    sl_cql_wr_string_list(w, events, n);
}

void sl_cql_auth_response_encode(sl_cql_wr *w, sl_cql_bytes token) {
    sl_cql_wr_bytes(w, token);
}

/* ---- responses ---------------------------------------------------------- */

static int type_decode(sl_cql_rd *r, sl_cql_arena *a, sl_cql_type *t, int depth) {
    if (depth > SL_CQL_MAX_TYPE_DEPTH) return SL_EINVAL;
    memset(t, 0, sizeof(*t));
    if (sl_cql_rd_short(r, &t->id)) return SL_EINVAL;
    switch (t->id) {
    case SL_CQL_T_CUSTOM:
        return sl_cql_rd_string(r, &t->custom);
    case SL_CQL_T_ASCII:
    case SL_CQL_T_BIGINT:
    case SL_CQL_T_BLOB:
    case SL_CQL_T_BOOLEAN:
    case SL_CQL_T_COUNTER:
    case SL_CQL_T_DECIMAL:
    case SL_CQL_T_DOUBLE:
    case SL_CQL_T_FLOAT:
    case SL_CQL_T_INT:
    case SL_CQL_T_TIMESTAMP:
    case SL_CQL_T_UUID:
    case SL_CQL_T_VARCHAR:
    case SL_CQL_T_VARINT:
    case SL_CQL_T_TIMEUUID:
    case SL_CQL_T_INET:
    case SL_CQL_T_DATE:
    case SL_CQL_T_TIME:
    case SL_CQL_T_SMALLINT:
    case SL_CQL_T_TINYINT:
    case SL_CQL_T_DURATION:
        return 0;
    case SL_CQL_T_LIST:
    case SL_CQL_T_SET:
    case SL_CQL_T_MAP:
        t->n = t->id == SL_CQL_T_MAP ? 2 : 1;
        break;
    case SL_CQL_T_UDT:
        if (sl_cql_rd_string(r, &t->custom) || sl_cql_rd_string(r, &t->name) || sl_cql_rd_short(r, &t->n))
            return SL_EINVAL;
        break;
    case SL_CQL_T_TUPLE:
        if (sl_cql_rd_short(r, &t->n)) return SL_EINVAL;
        break;
    default:
        return SL_EINVAL;
    }
    /* Each child takes at least two bytes on the wire; refuse counts the
     * buffer cannot hold before asking the arena for them. */
    if ((size_t)t->n * 2 > sl_cql_rd_left(r)) return SL_EINVAL;
    if (t->n) {
        t->sub = sl_cql_arena_alloc(a, t->n * sizeof(*t->sub));
        if (!t->sub) return SL_ENOMEM;
    }
    if (t->id == SL_CQL_T_UDT && t->n) {
        t->fields = sl_cql_arena_alloc(a, t->n * sizeof(*t->fields));
        if (!t->fields) return SL_ENOMEM;
    }
    for (uint16_t i = 0; i < t->n; i++) {
        if (t->id == SL_CQL_T_UDT && sl_cql_rd_string(r, &t->fields[i])) return SL_EINVAL;
        int rc = type_decode(r, a, &t->sub[i], depth + 1);
        if (rc) return rc;
    }
    return 0;
}

int sl_cql_type_decode(sl_cql_rd *r, sl_cql_arena *a, sl_cql_type *t) {
    return type_decode(r, a, t, 0);
}

/* Rows metadata (4.2.5.2) and, with `prepared`, the bind metadata of a
 * Prepared result, which in v4 adds the partition-key indexes and never has
 * paging state. */
static int meta_decode(int version, sl_cql_rd *r, sl_cql_arena *a, sl_cql_meta *m, int prepared) {
    memset(m, 0, sizeof(*m));
    m->paging_state = SL_CQL_NULL;
    if (sl_cql_rd_int(r, &m->flags) || sl_cql_rd_int(r, &m->ncols) || m->ncols < 0) return SL_EINVAL;
    if (prepared && version >= 4) {
        int32_t npk;
        if (sl_cql_rd_int(r, &npk) || npk < 0 || (size_t)npk * 2 > sl_cql_rd_left(r)) return SL_EINVAL;
        m->npk = (uint32_t)npk;
        if (npk) {
            m->pk = sl_cql_arena_alloc(a, (size_t)npk * sizeof(*m->pk));
            if (!m->pk) return SL_ENOMEM;
        }
        for (int32_t i = 0; i < npk; i++)
            if (sl_cql_rd_short(r, &m->pk[i])) return SL_EINVAL;
    }
    if (!prepared && (m->flags & SL_CQL_MD_HAS_MORE_PAGES)) {
        if (sl_cql_rd_bytes(r, &m->paging_state)) return SL_EINVAL;
    }
    if (m->flags & SL_CQL_MD_NO_METADATA) return 0;
    sl_cql_str gks = {0}, gtable = {0};
    int global = m->flags & SL_CQL_MD_GLOBAL_TABLES_SPEC;
    if (global && (sl_cql_rd_string(r, &gks) || sl_cql_rd_string(r, &gtable))) return SL_EINVAL;
    /* A column spec takes at least 4 bytes (name and type id). */
    if ((size_t)m->ncols * 4 > sl_cql_rd_left(r)) return SL_EINVAL;
    if (m->ncols) {
        m->cols = sl_cql_arena_alloc(a, (size_t)m->ncols * sizeof(*m->cols));
        if (!m->cols) return SL_ENOMEM;
    }
    for (int32_t i = 0; i < m->ncols; i++) {
        sl_cql_col *c = &m->cols[i];
        if (global) {
            c->keyspace = gks;
            c->table = gtable;
        } else if (sl_cql_rd_string(r, &c->keyspace) || sl_cql_rd_string(r, &c->table)) {
            return SL_EINVAL;
        }
        if (sl_cql_rd_string(r, &c->name)) return SL_EINVAL;
        int rc = type_decode(r, a, &c->type, 0);
        if (rc) return rc;
    }
    return 0;
}

/* Schema change bodies, shared by RESULT and EVENT (v3+ layout). */
static int schema_change_decode(sl_cql_rd *r, sl_cql_result *res) {
    if (sl_cql_rd_string(r, &res->change) || sl_cql_rd_string(r, &res->target) ||
        sl_cql_rd_string(r, &res->sc_keyspace))
        return SL_EINVAL;
    const sl_cql_str *t = &res->target;
#define TARGET_IS(s) (t->len == sizeof(s) - 1 && memcmp(t->p, s, t->len) == 0)
    if (TARGET_IS("KEYSPACE")) return 0;
    if (sl_cql_rd_string(r, &res->sc_name)) return SL_EINVAL;
    if (TARGET_IS("TABLE") || TARGET_IS("TYPE")) return 0;
    if (TARGET_IS("FUNCTION") || TARGET_IS("AGGREGATE")) return sl_cql_rd_string_list(r, &res->sc_args);
#undef TARGET_IS
    return SL_EINVAL;
}

int sl_cql_result_decode(int version, sl_cql_rd *r, sl_cql_arena *a, sl_cql_result *res) {
    memset(res, 0, sizeof(*res));
    res->id = SL_CQL_NULL;
    if (sl_cql_rd_int(r, &res->kind)) return SL_EINVAL;
    switch (res->kind) {
    case SL_CQL_RESULT_VOID:
        return 0;
    case SL_CQL_RESULT_ROWS: {
        int rc = meta_decode(version, r, a, &res->meta, 0);
        if (rc) return rc;
        if (sl_cql_rd_int(r, &res->nrows) || res->nrows < 0) return SL_EINVAL;
        /* Every cell is at least its 4-byte length. */
        uint64_t cells = (uint64_t)res->nrows * (uint64_t)res->meta.ncols;
        if (cells > sl_cql_rd_left(r) / 4) return SL_EINVAL;
        res->rows = *r;
        for (uint64_t i = 0; i < cells; i++) {
            sl_cql_bytes b;
            if (sl_cql_rd_bytes(r, &b)) return SL_EINVAL;
        }
        res->rows.end = r->p;
        return 0;
    }
    case SL_CQL_RESULT_SET_KEYSPACE:
        return sl_cql_rd_string(r, &res->keyspace);
    case SL_CQL_RESULT_PREPARED: {
        if (sl_cql_rd_short_bytes(r, &res->id)) return SL_EINVAL;
        int rc = meta_decode(version, r, a, &res->bind, 1);
        if (!rc) rc = meta_decode(version, r, a, &res->meta, 0);
        return rc;
    }
    case SL_CQL_RESULT_SCHEMA_CHANGE:
        return schema_change_decode(r, res);
    }
    return SL_EINVAL;
}

int sl_cql_rows_next(sl_cql_rd *rows, sl_cql_bytes *cell) {
    if (sl_cql_rd_left(rows) == 0) return 0;
    return sl_cql_rd_bytes(rows, cell) == 0;
}

/* ERROR bodies (4.2.1); the extra fields depend on the code and, for the
 * failure errors, on the protocol version. */
int sl_cql_error_decode(int version, sl_cql_rd *r, sl_cql_error *e) {
    memset(e, 0, sizeof(*e));
    e->unprepared_id = SL_CQL_NULL;
    if (sl_cql_rd_int(r, &e->code) || sl_cql_rd_string(r, &e->message)) return SL_EINVAL;
    switch (e->code) {
    case SL_CQL_ERR_UNAVAILABLE:
        if (sl_cql_rd_consistency(r, &e->consistency) || sl_cql_rd_int(r, &e->required) ||
            sl_cql_rd_int(r, &e->alive))
            return SL_EINVAL;
        return 0;
    case SL_CQL_ERR_WRITE_TIMEOUT:
        if (sl_cql_rd_consistency(r, &e->consistency) || sl_cql_rd_int(r, &e->received) ||
            sl_cql_rd_int(r, &e->blockfor) || sl_cql_rd_string(r, &e->write_type))
            return SL_EINVAL;
        if (version >= 5 && e->write_type.len == 3 && memcmp(e->write_type.p, "CAS", 3) == 0)
            return sl_cql_rd_short(r, &e->contentions);
        return 0;
    case SL_CQL_ERR_READ_TIMEOUT:
        if (sl_cql_rd_consistency(r, &e->consistency) || sl_cql_rd_int(r, &e->received) ||
            sl_cql_rd_int(r, &e->blockfor) || sl_cql_rd_byte(r, &e->data_present))
            return SL_EINVAL;
        return 0;
    case SL_CQL_ERR_READ_FAILURE:
    case SL_CQL_ERR_WRITE_FAILURE:
        if (sl_cql_rd_consistency(r, &e->consistency) || sl_cql_rd_int(r, &e->received) ||
            sl_cql_rd_int(r, &e->blockfor) || sl_cql_rd_int(r, &e->numfailures))
            return SL_EINVAL;
        if (version >= 5) {
            /* v5 replaces the count with a map endpoint -> failure code. */
            if (e->numfailures < 0 || (size_t)e->numfailures * 7 > sl_cql_rd_left(r)) return SL_EINVAL;
            e->reasons = *r;
            for (int32_t i = 0; i < e->numfailures; i++) {
                sl_cql_inet in;
                uint16_t code;
                if (sl_cql_rd_inetaddr(r, &in) || sl_cql_rd_short(r, &code)) return SL_EINVAL;
            }
            e->reasons.end = r->p;
        }
        if (e->code == SL_CQL_ERR_READ_FAILURE) return sl_cql_rd_byte(r, &e->data_present);
        return sl_cql_rd_string(r, &e->write_type);
    case SL_CQL_ERR_CAS_WRITE_UNKNOWN:
        if (sl_cql_rd_consistency(r, &e->consistency) || sl_cql_rd_int(r, &e->received) ||
            sl_cql_rd_int(r, &e->blockfor))
            return SL_EINVAL;
        return 0;
    case SL_CQL_ERR_FUNCTION_FAILURE:
        if (sl_cql_rd_string(r, &e->keyspace) || sl_cql_rd_string(r, &e->function) ||
            sl_cql_rd_string_list(r, &e->arg_types))
            return SL_EINVAL;
        return 0;
    case SL_CQL_ERR_ALREADY_EXISTS:
        if (sl_cql_rd_string(r, &e->keyspace) || sl_cql_rd_string(r, &e->table)) return SL_EINVAL;
        return 0;
    case SL_CQL_ERR_UNPREPARED:
        return sl_cql_rd_short_bytes(r, &e->unprepared_id);
    default:
        /* Server, Protocol, BadCredentials, Overloaded, IsBootstrapping,
         * Truncate, Syntax, Unauthorized, Invalid, Config, CDC write failure
         * and codes from the future: the message is all there is. */
        return 0;
    }
}

int sl_cql_event_decode(sl_cql_rd *r, sl_cql_event *ev) {
    memset(ev, 0, sizeof(*ev));
    if (sl_cql_rd_string(r, &ev->type)) return SL_EINVAL;
    const sl_cql_str *t = &ev->type;
    if ((t->len == 15 && memcmp(t->p, "TOPOLOGY_CHANGE", 15) == 0) ||
        (t->len == 13 && memcmp(t->p, "STATUS_CHANGE", 13) == 0)) {
        if (sl_cql_rd_string(r, &ev->change) || sl_cql_rd_inet(r, &ev->addr)) return SL_EINVAL;
        return 0;
    }
    if (t->len == 13 && memcmp(t->p, "SCHEMA_CHANGE", 13) == 0) {
        if (schema_change_decode(r, &ev->schema)) return SL_EINVAL;
        ev->change = ev->schema.change;
        return 0;
    }
    return SL_EINVAL;
}

int sl_cql_response_decode(const sl_cql_header *h, const uint8_t *body, size_t len, sl_cql_arena *a,
                           sl_cql_response *resp) {
    memset(resp, 0, sizeof(*resp));
    resp->h = *h;
    if (!h->response) return SL_EINVAL;
    if (h->version < 3 || h->version > 4) return SL_EPROTO;
    int rc = sl_cql_envelope_decode(h, body, len, &resp->env);
    if (rc) return rc;
    sl_cql_rd *r = &resp->env.msg;
    switch (h->opcode) {
    case SL_CQL_OP_ERROR:
        rc = sl_cql_error_decode(h->version, r, &resp->error);
        break;
    case SL_CQL_OP_READY:
        break;
    case SL_CQL_OP_AUTHENTICATE:
        rc = sl_cql_rd_string(r, &resp->authenticator);
        break;
    case SL_CQL_OP_SUPPORTED:
        rc = sl_cql_rd_string_multimap(r, &resp->supported);
        break;
    case SL_CQL_OP_RESULT:
        rc = sl_cql_result_decode(h->version, r, a, &resp->result);
        break;
    case SL_CQL_OP_EVENT:
        rc = sl_cql_event_decode(r, &resp->event);
        break;
    case SL_CQL_OP_AUTH_CHALLENGE:
    case SL_CQL_OP_AUTH_SUCCESS:
        rc = sl_cql_rd_bytes(r, &resp->token);
        break;
    default:
        return SL_EINVAL; /* a request opcode in a response */
    }
    if (rc) return rc;
    return sl_cql_rd_left(r) == 0 ? 0 : SL_EINVAL;
}

/* ---- names -------------------------------------------------------------- */

static const char *simple_type_name(uint16_t id) {
    switch (id) {
    case SL_CQL_T_ASCII:
        return "ascii";
    case SL_CQL_T_BIGINT:
        return "bigint";
    case SL_CQL_T_BLOB:
        return "blob";
    case SL_CQL_T_BOOLEAN:
        return "boolean";
    case SL_CQL_T_COUNTER:
        return "counter";
    case SL_CQL_T_DECIMAL:
        return "decimal";
    case SL_CQL_T_DOUBLE:
        return "double";
    case SL_CQL_T_FLOAT:
        return "float";
    case SL_CQL_T_INT:
        return "int";
    case SL_CQL_T_TIMESTAMP:
        return "timestamp";
    case SL_CQL_T_UUID:
        return "uuid";
    case SL_CQL_T_VARCHAR:
        return "varchar";
    case SL_CQL_T_VARINT:
        return "varint";
    case SL_CQL_T_TIMEUUID:
        return "timeuuid";
    case SL_CQL_T_INET:
        return "inet";
    case SL_CQL_T_DATE:
        return "date";
    case SL_CQL_T_TIME:
        return "time";
    case SL_CQL_T_SMALLINT:
        return "smallint";
    case SL_CQL_T_TINYINT:
        return "tinyint";
    case SL_CQL_T_DURATION:
        return "duration";
    case SL_CQL_T_LIST:
        return "list";
    case SL_CQL_T_MAP:
        return "map";
    case SL_CQL_T_SET:
        return "set";
    case SL_CQL_T_TUPLE:
        return "tuple";
    }
    return NULL;
}

static void name_put(sl_cql_wr *w, const char *s, size_t n) {
    sl_cql_wr_raw(w, s, n);
}

static void type_name(sl_cql_wr *w, const sl_cql_type *t) {
    const char *s = simple_type_name(t->id);
    if (t->id == SL_CQL_T_CUSTOM) {
        name_put(w, "'", 1);
        name_put(w, t->custom.p, t->custom.len);
        name_put(w, "'", 1);
        return;
    }
    if (t->id == SL_CQL_T_UDT) {
        name_put(w, t->custom.p, t->custom.len);
        name_put(w, ".", 1);
        name_put(w, t->name.p, t->name.len);
        return;
    }
    name_put(w, s, strlen(s));
    if (!t->n) return;
    name_put(w, "<", 1);
    for (uint16_t i = 0; i < t->n; i++) {
        if (i) name_put(w, ", ", 2);
        type_name(w, &t->sub[i]);
    }
    name_put(w, ">", 1);
}

size_t sl_cql_type_name(const sl_cql_type *t, char *buf, size_t cap) {
    sl_cql_wr w = sl_cql_wr_make(buf, cap ? cap - 1 : 0);
    type_name(&w, t);
    if (cap) buf[w.len < cap - 1 ? w.len : cap - 1] = '\0';
    return w.len;
}

const char *sl_cql_opcode_name(int opcode) {
    static const char *const names[] = {
        "ERROR",     "STARTUP", "READY",          "AUTHENTICATE",  NULL,          "OPTIONS",
        "SUPPORTED", "QUERY",   "RESULT",         "PREPARE",       "EXECUTE",     "REGISTER",
        "EVENT",     "BATCH",   "AUTH_CHALLENGE", "AUTH_RESPONSE", "AUTH_SUCCESS"};
    if (opcode < 0 || opcode > SL_CQL_OP_AUTH_SUCCESS || !names[opcode]) return "?";
    return names[opcode];
}
