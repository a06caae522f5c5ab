/* parse.c: the HTTP/1.1 request parser; see parse.h for what it accepts. */
#include <string.h>
#include <strings.h>

#include "../sluice.h"
#include "parse.h"

/* tchar (RFC 9110 section 5.6.2): what a method and a field name are made of. */
static int is_tchar(unsigned char c) {
    if (c >= '0' && c <= '9') return 1;
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return 1;
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* A field value's bytes: visible characters, obs-text, space and tab. */
static int is_vchar(unsigned char c) {
    return (c >= 0x21 && c != 0x7f) || c == ' ' || c == '\t';
}

/* Finds the end of the line starting at from: returns the index of its LF
 * in buf[0..len), or -1 when it has not arrived; *cr says whether a CR
 * comes before the LF. A CR not followed by LF is an error (-2). */
static long line_end(const char *buf, size_t from, size_t len, size_t *cr) {
    for (size_t i = from; i < len; i++) {
        if (buf[i] == '\n') {
            *cr = i > from && buf[i - 1] == '\r';
            return (long)i;
        }
        if (buf[i] == '\r' && i + 1 < len && buf[i + 1] != '\n') return -2;
    }
    return -1;
}

static int ieq(const char *a, size_t n, const char *b) {
    return strlen(b) == n && strncasecmp(a, b, n) == 0;
}

/* Calls fn(token, len, arg) for each element of a comma-separated list,
 * with optional whitespace trimmed; empty elements are skipped (RFC 9110
 * section 5.6.1). Stops at and returns fn's first non-zero result. */
static int each_token(const char *v, size_t n, int (*fn)(const char *, size_t, void *), void *arg) {
    size_t i = 0;
    while (i <= n) {
        size_t j = i;
        while (j < n && v[j] != ',')
            j++;
        size_t a = i, b = j;
        while (a < b && (v[a] == ' ' || v[a] == '\t'))
            a++;
        while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
            b--;
        if (b > a) {
            int rc = fn(v + a, b - a, arg);
            if (rc) return rc;
        }
        i = j + 1;
    }
    return 0;
}

typedef struct {
    int close, keep_alive;
} conn_opts;

static int conn_token(const char *t, size_t n, void *arg) {
    conn_opts *o = arg;
    if (ieq(t, n, "close")) o->close = 1;
    if (ieq(t, n, "keep-alive")) o->keep_alive = 1;
    return 0;
}

typedef struct {
    int n, chunked_last;
} te_list;

static int te_token(const char *t, size_t n, void *arg) {
    te_list *l = arg;
    l->n++;
    l->chunked_last = ieq(t, n, "chunked");
    return 0;
}

/* One Content-Length element: digits only. Every element of every
 * Content-Length field must have the same value. */
static int cl_token(const char *t, size_t n, void *arg) {
    int64_t *cl = arg, v = 0;
    for (size_t i = 0; i < n; i++) {
        if (t[i] < '0' || t[i] > '9') return -1;
        if (v > (INT64_MAX - 9) / 10)
            v = INT64_MAX; /* too large to hold: over any limit */
        else
            v = v * 10 + (t[i] - '0');
    }
    if (*cl >= 0 && *cl != v) return -1;
    *cl = v;
    return 0;
}

#define FAIL(status, text)                                                                                   \
    do {                                                                                                     \
        *why = (text);                                                                                       \
        return -(status);                                                                                    \
    } while (0)

/* Parses "METHOD SP target SP HTTP/d.d" in buf[0..end) (end excludes the
 * line's CR LF). */
static long request_line(const char *buf, size_t end, sl_hp_request *r, const char **why) {
    size_t i = 0;
    while (i < end && is_tchar((unsigned char)buf[i]))
        i++;
    if (i == 0 || i >= end || buf[i] != ' ') FAIL(400, "malformed request line");
    if (i > SL_HP_METHOD_MAX) FAIL(400, "the method is too long");
    r->method = buf;
    r->method_len = i;
    size_t t = ++i;
    while (i < end && (unsigned char)buf[i] > 0x20 && buf[i] != 0x7f)
        i++;
    if (i == t || i >= end || buf[i] != ' ') FAIL(400, "malformed request line");
    if (i - t > SL_HP_TARGET_MAX) FAIL(414, "the request target is over 8192 bytes");
    r->target = buf + t;
    r->target_len = i - t;
    const char *v = buf + i + 1;
    size_t vn = end - i - 1;
    if (vn != 8 || memcmp(v, "HTTP/", 5) != 0 || v[6] != '.' || v[5] < '0' || v[5] > '9' || v[7] < '0' ||
        v[7] > '9')
        FAIL(400, "malformed HTTP version");
    if (v[5] != '1') FAIL(505, "only HTTP/1.0 and HTTP/1.1 are served here");
    r->minor = v[7] == '0' ? 0 : 1;
    return 0;
}

/* The framing and connection fields, checked once the head is in. */
static long framing(sl_hp_request *r, const char **why) {
    te_list te = {0, 0};
    conn_opts co = {0, 0};
    int hosts = 0, te_fields = 0;
    r->content_length = -1;
    for (size_t k = 0; k < r->nfields; k++) {
        const sl_hp_field *f = &r->fields[k];
        if (ieq(f->name, f->name_len, "content-length")) {
            if (f->value_len == 0 || each_token(f->value, f->value_len, cl_token, &r->content_length) != 0 ||
                r->content_length < 0)
                FAIL(400, "invalid Content-Length");
        } else if (ieq(f->name, f->name_len, "transfer-encoding")) {
            te_fields++;
            each_token(f->value, f->value_len, te_token, &te);
        } else if (ieq(f->name, f->name_len, "connection")) {
            each_token(f->value, f->value_len, conn_token, &co);
        } else if (ieq(f->name, f->name_len, "host")) {
            hosts++;
        } else if (ieq(f->name, f->name_len, "expect")) {
            r->expect_continue = ieq(f->value, f->value_len, "100-continue");
        }
    }
    if (te_fields) {
        /* RFC 9112 section 6.1: a request with both could be framed two
         * ways by two parsers; one that is HTTP/1.0 has no business with
         * transfer codings at all. */
        if (r->content_length >= 0) FAIL(400, "both Content-Length and Transfer-Encoding");
        if (r->minor == 0) FAIL(400, "Transfer-Encoding in an HTTP/1.0 request");
        if (te.n == 0) FAIL(400, "empty Transfer-Encoding");
        if (te.n != 1 || !te.chunked_last) FAIL(501, "the only transfer coding served here is chunked");
        r->chunked = 1;
    }
    if (r->minor == 1 && hosts != 1) FAIL(400, hosts ? "more than one Host field" : "no Host field");
    r->keep_alive = !co.close && (r->minor == 1 || co.keep_alive);
    return 0;
}

long sl_hp_parse_head(const char *buf, size_t len, sl_hp_request *r, const char **why) {
    memset(r, 0, sizeof *r);
    *why = "";
    size_t p = 0, cr;
    /* Empty lines before the request line are skipped (RFC 9112 section
     * 2.2), such as a CRLF some clients send after a body. */
    while (p < len && (buf[p] == '\n' || (buf[p] == '\r' && p + 1 < len && buf[p + 1] == '\n')))
        p += buf[p] == '\r' ? 2 : 1;
    long e = line_end(buf, p, len, &cr);
    if (e == -2) FAIL(400, "a CR not followed by LF");
    if (e < 0) {
        if (len - p > SL_HP_TARGET_MAX + 64) {
            /* No line end yet: the target, or the whole line, is too long. */
            const char *sp = memchr(buf + p, ' ', len - p < 64 ? len - p : 64);
            FAIL(sp ? 414 : 400, sp ? "the request target is over 8192 bytes" : "malformed request line");
        }
        return SL_EPARTIAL;
    }
    long rc = request_line(buf + p, (size_t)e - cr - p, r, why);
    if (rc) return rc;
    size_t start = p;
    p = (size_t)e + 1;
    for (;;) {
        e = line_end(buf, p, len, &cr);
        if (e == -2) FAIL(400, "a CR not followed by LF");
        if (e < 0) {
            if (len - start > SL_HP_HEAD_MAX) FAIL(431, "the header section is over 16384 bytes");
            return SL_EPARTIAL;
        }
        if ((size_t)e + 1 - start > SL_HP_HEAD_MAX) FAIL(431, "the header section is over 16384 bytes");
        size_t end = (size_t)e - cr;
        if (end == p) { /* the empty line: the head is complete */
            p = (size_t)e + 1;
            break;
        }
        if (buf[p] == ' ' || buf[p] == '\t') FAIL(400, "obsolete line folding in a header field");
        if (r->nfields == SL_HP_FIELDS_MAX) FAIL(431, "more than 100 header fields");
        size_t i = p;
        while (i < end && is_tchar((unsigned char)buf[i]))
            i++;
        if (i == p || i >= end || buf[i] != ':')
            FAIL(400, i < end && (buf[i] == ' ' || buf[i] == '\t')
                          ? "whitespace before a header field's colon"
                          : "malformed header field");
        sl_hp_field *f = &r->fields[r->nfields++];
        f->name = buf + p;
        f->name_len = i - p;
        size_t a = i + 1, b = end;
        while (a < b && (buf[a] == ' ' || buf[a] == '\t'))
            a++;
        while (b > a && (buf[b - 1] == ' ' || buf[b - 1] == '\t'))
            b--;
        for (size_t k = a; k < b; k++)
            if (!is_vchar((unsigned char)buf[k])) FAIL(400, "a control character in a header field");
        f->value = buf + a;
        f->value_len = b - a;
        p = (size_t)e + 1;
    }
    if ((rc = framing(r, why)) != 0) return rc;
    return (long)p;
}

const sl_hp_field *sl_hp_field_get(const sl_hp_request *r, const char *name) {
    for (size_t k = 0; k < r->nfields; k++)
        if (ieq(r->fields[k].name, r->fields[k].name_len, name)) return &r->fields[k];
    return NULL;
}

/* --- Chunked bodies (RFC 9112 section 7.1) ------------------------------ */

enum {
    CK_SIZE,
    CK_EXT,
    CK_SIZE_LF,
    CK_DATA,
    CK_DATA_CR,
    CK_DATA_LF,
    CK_TRAILER,
    CK_TRAILER_LINE,
    CK_TRAILER_LF,
    CK_LAST_LF,
    CK_DONE
};

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') return (c | 0x20) - 'a' + 10;
    return -1;
}

#undef FAIL
#define FAIL(text)                                                                                           \
    do {                                                                                                     \
        *why = (text);                                                                                       \
        *used = i;                                                                                           \
        return -400;                                                                                         \
    } while (0)

int sl_hp_decode_chunked(sl_hp_chunked *c, const char *in, size_t n, size_t *used, char *out, size_t *out_len,
                         const char **why) {
    size_t i = 0, o = 0;
    *why = "";
    *out_len = 0;
    while (i < n && c->state != CK_DONE) {
        char ch = in[i];
        switch (c->state) {
        case CK_SIZE: {
            int h = hexval(ch);
            if (h >= 0) {
                if (++c->digits > 15) FAIL("a chunk size over 15 hex digits");
                c->left = c->left << 4 | (uint64_t)h;
                i++;
            } else if (c->digits == 0) {
                FAIL("malformed chunk size");
            } else if (ch == ';' || ch == ' ' || ch == '\t') {
                c->state = CK_EXT;
            } else if (ch == '\r') {
                c->state = CK_SIZE_LF;
                i++;
            } else {
                FAIL("malformed chunk size");
            }
            break;
        }
        case CK_EXT: /* chunk extensions are ignored, but bounded */
            if (ch == '\r') {
                c->state = CK_SIZE_LF;
            } else if (ch == '\n' || ++c->overhead > SL_HP_TRAILER_MAX) {
                FAIL(ch == '\n' ? "a bare LF in chunk framing" : "chunk extensions too long");
            }
            i++;
            break;
        case CK_SIZE_LF:
            if (ch != '\n') FAIL("a chunk size line not ended by CRLF");
            i++;
            c->digits = 0;
            c->state = c->left ? CK_DATA : CK_TRAILER;
            break;
        case CK_DATA: {
            size_t k = n - i < c->left ? n - i : (size_t)c->left;
            memmove(out + o, in + i, k); /* out may be in, for decoding in place */
            o += k;
            i += k;
            c->left -= k;
            if (c->left == 0) c->state = CK_DATA_CR;
            break;
        }
        case CK_DATA_CR:
            if (ch != '\r') FAIL("chunk data not followed by CRLF");
            i++;
            c->state = CK_DATA_LF;
            break;
        case CK_DATA_LF:
            if (ch != '\n') FAIL("chunk data not followed by CRLF");
            i++;
            c->state = CK_SIZE;
            break;
        case CK_TRAILER: /* at the start of a trailer line, or of the final CRLF */
            if (ch == '\r') {
                c->state = CK_LAST_LF;
            } else {
                if (ch == '\n' || ++c->overhead > SL_HP_TRAILER_MAX)
                    FAIL(ch == '\n' ? "a bare LF in chunk framing" : "trailer section too long");
                c->state = CK_TRAILER_LINE;
            }
            i++;
            break;
        case CK_TRAILER_LINE: /* inside a trailer line: its fields are ignored */
            if (ch == '\r')
                c->state = CK_TRAILER_LF;
            else if (ch == '\n' || ++c->overhead > SL_HP_TRAILER_MAX)
                FAIL(ch == '\n' ? "a bare LF in chunk framing" : "trailer section too long");
            i++;
            break;
        case CK_TRAILER_LF:
            if (ch != '\n') FAIL("a CR not followed by LF");
            i++;
            c->state = CK_TRAILER;
            break;
        case CK_LAST_LF:
            if (ch != '\n') FAIL("the chunked body not ended by CRLF");
            i++;
            c->state = CK_DONE;
            break;
        }
    }
    *used = i;
    *out_len = o;
    return c->state == CK_DONE;
}
