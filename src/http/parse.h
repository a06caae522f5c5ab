/* parse.h: a strict HTTP/1.1 request parser (RFC 9112), pure functions
 * over buffers the caller owns, as picohttpparser's: no allocation, no I/O,
 * no state beyond what the caller passes in. The server (server.c) feeds
 * it whatever has arrived; the fuzzer and the unit tests feed it anything.
 *
 * Strict where leniency lets a request be framed two ways (request
 * smuggling between a proxy and us, RFC 9112 section 11.2): both
 * Content-Length and Transfer-Encoding, Content-Length values that differ
 * or are not plain digits, whitespace before a field's colon, obs-fold,
 * bare CR, a transfer coding other than exactly "chunked" and malformed
 * chunk framing are all refused, and the server closes the connection
 * after any refusal. Lenient where RFC 9112 allows it and clients rely on
 * it: a bare LF ends a head line, empty lines before a request line are
 * skipped. */
#ifndef SL_HTTP_PARSE_H
#define SL_HTTP_PARSE_H

#include <stddef.h>
#include <stdint.h>

/* Limits: a request over one of them is refused with the status beside it. */
#define SL_HP_TARGET_MAX 8192  /* request target bytes: 414 */
#define SL_HP_HEAD_MAX 16384   /* request line and header section: 431 */
#define SL_HP_FIELDS_MAX 100   /* header fields: 431 */
#define SL_HP_METHOD_MAX 32    /* method bytes: 400 (no such method here) */
#define SL_HP_TRAILER_MAX 4096 /* chunk extensions and trailer section: 400 */

typedef struct {
    const char *name, *value; /* into the caller's buffer, not NUL-terminated */
    size_t name_len, value_len;
} sl_hp_field;

/* A parsed request head. Strings point into the buffer given to
 * sl_hp_parse_head and are not NUL-terminated. */
typedef struct {
    const char *method, *target;
    size_t method_len, target_len;
    int minor; /* HTTP/1.<minor>: 0 or 1 (a higher minor is read as 1) */
    sl_hp_field fields[SL_HP_FIELDS_MAX];
    size_t nfields;
    /* Framing and connection handling, from the fields. */
    int chunked;            /* Transfer-Encoding: chunked */
    int64_t content_length; /* -1 when absent; INT64_MAX when too large to hold */
    int keep_alive;         /* the connection may carry another request */
    int expect_continue;    /* Expect: 100-continue */
} sl_hp_request;

/* Parses the head at buf[0..len). Returns the number of bytes it takes
 * (empty lines before it included) when it is complete, SL_EPARTIAL
 * (which is negative) when more bytes are needed, or the HTTP status that
 * refuses it, negated (-400, -414, -431, -501 or -505); *why then says why
 * in a short sentence (static storage). */
long sl_hp_parse_head(const char *buf, size_t len, sl_hp_request *out, const char **why);

/* The first field named name (case-insensitive), or NULL. */
const sl_hp_field *sl_hp_field_get(const sl_hp_request *r, const char *name);

/* A chunked body decoder. Zero it before the first call. */
typedef struct {
    int state;
    uint64_t left;   /* bytes left in the chunk being read */
    size_t overhead; /* extension and trailer bytes so far, bounded */
    int digits;
} sl_hp_chunked;

/* Decodes from in[0..n): payload bytes are copied to out (which has room
 * for n bytes, and may be in itself: the payload never runs ahead of its
 * framing) and *out_len says how many; *used says how many input bytes
 * were consumed. Returns 1 once the last chunk and the trailer section are
 * in (the bytes after them, in[*used..n), belong to the next request), 0
 * when more input is needed, or -400 for malformed framing (*why says
 * how). */
int sl_hp_decode_chunked(sl_hp_chunked *c, const char *in, size_t n, size_t *used, char *out, size_t *out_len,
                         const char **why);

#endif
