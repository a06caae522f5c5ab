/* auth_int.h: helpers shared by the files of src/auth, not part of the
 * module's interface. */
#ifndef SL_AUTH_INT_H
#define SL_AUTH_INT_H

#include <stddef.h>
#include <string.h>

#include "auth.h"

#define SL_SHA256_LEN 32

/* HMAC-SHA256 and SHA-256. 0 or SL_EINTERNAL (OpenSSL failed). */
int sl__hmac(const void *key, size_t key_len, const void *msg, size_t n, unsigned char out[SL_SHA256_LEN]);
int sl__sha256(const void *msg, size_t n, unsigned char out[SL_SHA256_LEN]);
void sl__hex(const unsigned char *in, size_t n, char *out); /* lowercase, NUL-terminated */

/* The value of header `name` (case-insensitive). Returns the number of
 * occurrences and stores the first in *value (NULL when there is none). */
size_t sl__header(const struct sl_auth_request *rq, const char *name, const char **value);

/* The single token after the scheme word of the Authorization header
 * ("Key <token>", "Signed <token>"), with blanks around it. 0, or -1 when
 * there is not exactly one such header, the scheme differs, or the token is
 * missing or followed by anything. */
int sl__auth_token(const struct sl_auth_request *rq, const char *scheme, const char **tok, size_t *n);

/* The key of ring whose HMAC-SHA256 of msg is want, checking every key in
 * constant time per key. *match is NULL when none is. 0 or SL_EINTERNAL. */
int sl__hmac_match(const struct sl_auth_keyring *ring, const void *msg, size_t n,
                   const unsigned char want[SL_SHA256_LEN], const struct sl_auth_key **match);

/* Case-insensitive comparison of an ASCII token of length n with lit. */
int sl__token_eq(const char *s, size_t n, const char *lit);

/* Percent-decodes in[0..n) into out (cap bytes, NUL-terminated), turning '+'
 * into a space, the way the HTTP layer decodes query parameters. Returns the
 * decoded length, or -1 for a bad escape, an embedded NUL or no room. */
long sl__query_unescape(const char *in, size_t n, char *out, size_t cap);

/* Looks up one query parameter by its decoded name and stores its decoded
 * value (unless out is NULL). 1 found, 0 absent, -1 repeated or malformed
 * or too long. */
int sl__query_param(const char *query, size_t query_len, const char *name, char *out, size_t cap);

/* Milliseconds since the epoch of a UTC date and time; -1 when a field is
 * out of range (month 13, February 30, hour 24, second 60). */
int sl__time_from_fields(int y, int mo, int d, int h, int mi, int s, int ms, int64_t *out);

/* A string builder over a buffer sized by the caller in advance. Writes past
 * cap are dropped and remembered in err, so a wrong size estimate is caught
 * once at the end instead of at every append. */
struct sl__sb {
    char *p;
    size_t len, cap;
    int err;
};

static inline void sl__sb_put(struct sl__sb *b, const void *s, size_t n) {
    if (n > b->cap - b->len) {
        b->err = 1;
        return;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static inline void sl__sb_str(struct sl__sb *b, const char *s) {
    sl__sb_put(b, s, strlen(s));
}
static inline void sl__sb_chr(struct sl__sb *b, char c) {
    sl__sb_put(b, &c, 1);
}

#endif
