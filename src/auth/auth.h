/* auth.h: authentication and authorization primitives of the queue API.
 *
 * Everything here is a pure function over buffers the caller owns: no I/O,
 * no store access, no HTTP library types. The HTTP layer describes a request
 * with struct sl_auth_request, loads the addressed account's keys into a
 * struct sl_auth_keyring (from its key cache, at most 5 s old) and calls
 * sl_auth_verify(); then, per route, sl_auth_check() with the level letter and
 * queue the route needs.
 *
 * Return codes, and what the HTTP layer answers:
 *   0              verified / allowed
 *   SL_EAUTH       401: no credentials, or any credential that is malformed,
 *                  does not match a key of the account, or is outside its
 *                  time (request time beyond the skew, signed URL before
 *                  st or after et). A malformed Authorization header, time
 *                  header or signed-URL parameter is a credential problem,
 *                  so it is 401, never 400.
 *   SL_EFORBIDDEN  403: verified, but the credential lacks the level or queue.
 *   SL_EINVAL      400: only from the generators and parsers the admin API
 *                  calls with user input (levels string, signed-URL times,
 *                  names), never from a verifier.
 *   SL_ENOTFOUND   404: sl_auth_url_sign() with a keyName the account lacks.
 *   SL_ENOMEM, SL_EIO, SL_EINTERNAL: 500.
 *
 * Secrets: a key is 64 bytes from the CSPRNG, given to clients as 86
 * characters of base64url without padding. "Key" auth compares that string;
 * "Signed" auth and signed URLs use the decoded 64 bytes as the HMAC key; SigV4
 * uses the 86-character string as the AWS secret access key, because AWS
 * SDKs and curl take the secret as a string and prefix it with "AWS4".
 * Every comparison of a secret or a signature is constant time
 * (CRYPTO_memcmp), and every key of the account is tried, without stopping at
 * the first match, so timing does not reveal which key matched. */
#ifndef SL_AUTH_H
#define SL_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "../sluice.h"

#define SL_AUTH_KEY_BYTES 64
#define SL_AUTH_KEY_CHARS 86 /* base64url of 64 bytes, no padding */

/* Default allowed difference between a request's time and the server's, in
 * both directions, for "Signed" and SigV4. */
#define SL_AUTH_DEFAULT_SKEW_MS 60000

/* Bounds on what the verifiers read. Larger inputs are refused (SL_EAUTH)
 * before anything is allocated. */
#define SL_AUTH_MAX_PATH 4096
#define SL_AUTH_MAX_QUERY 4096
#define SL_AUTH_MAX_HEADER 4096 /* one header value */
#define SL_AUTH_MAX_SIGNED_HEADERS 32

/* Permission levels, one bit per letter of "rpuagcd". */
enum {
    SL_LEVEL_R = 1 << 0, /* read message */
    SL_LEVEL_P = 1 << 1, /* put message */
    SL_LEVEL_U = 1 << 2, /* update message */
    SL_LEVEL_A = 1 << 3, /* ack message */
    SL_LEVEL_G = 1 << 4, /* get queue information */
    SL_LEVEL_C = 1 << 5, /* create queue */
    SL_LEVEL_D = 1 << 6, /* delete queue */
    SL_LEVEL_ALL = 0x7f
};

/* One key of an account. The store keeps the name and the 86-character
 * string; sl_auth_key_init() fills in the decoded bytes. */
struct sl_auth_key {
    char name[SL_NAME_MAX + 1];
    char secret[SL_AUTH_KEY_CHARS + 1];
    unsigned char bytes[SL_AUTH_KEY_BYTES];
};

/* The keys of one account, owned by the caller. Every verifier tries all of
 * them, so a client may use any current key (rotation: primary, secondary). */
struct sl_auth_keyring {
    const char *account;
    const struct sl_auth_key *keys;
    size_t n;
};

/* One request header, NUL-terminated name and value as the HTTP library
 * delivers them (names compare case-insensitively; a repeated header appears
 * once per occurrence, in the order received). */
struct sl_auth_header {
    const char *name;
    const char *value;
};

/* What the verifiers see of a request. path and query are the raw bytes of
 * the request target as sent on the wire, split at the first '?', before any
 * percent-decoding or normalization (sl_http_raw_target gives them; the
 * path the routes see is already decoded). query is NULL or empty when there
 * is none. */
struct sl_auth_request {
    const char *method; /* "GET", as sent */
    const char *path;
    size_t path_len;
    const char *query;
    size_t query_len;
    const struct sl_auth_header *headers;
    size_t n_headers;
    const void *body;
    size_t body_len;
    int64_t now_ms; /* the server's time, from sl_now_ms() */
};

/* SL_AUTH_ADMIN: the admin token, verified by the admin server for the
 * dashboard's calls (sl_http_set_admin); never from sl_auth_verify. */
enum sl_auth_scheme {
    SL_AUTH_NONE = 0,
    SL_AUTH_KEY,
    SL_AUTH_SIGNED,
    SL_AUTH_SIGV4,
    SL_AUTH_URL,
    SL_AUTH_ADMIN
};

/* A verified credential. */
struct sl_auth_cred {
    int scheme;                     /* enum sl_auth_scheme */
    unsigned levels;                /* SL_LEVEL_* bits granted */
    char key_name[SL_NAME_MAX + 1]; /* the key that matched */
    char queue[SL_NAME_MAX + 1];    /* signed URL restricted to this queue; "" = any */
    char region[64];                /* SigV4 credential scope, for logs only */
    char service[64];
};

/* Keys. */
int sl_auth_key_generate(char out[SL_AUTH_KEY_CHARS + 1]);
int sl_auth_key_decode(const char *s, size_t n, unsigned char out[SL_AUTH_KEY_BYTES]);
int sl_auth_key_init(struct sl_auth_key *k, const char *name, const char *secret);

/* Levels. */
int sl_auth_levels_parse(const char *s, size_t n, unsigned *levels);
size_t sl_auth_levels_format(unsigned levels, char out[8]);
int sl_auth_level_bit(char letter);

/* Times: ISO-8601 "2026-11-21T10:00:00Z", optionally with 1 to 9
 * fractional digits ("2026-11-21T10:00:00.123Z"), and with "+HH:MM" or
 * "-HH:MM" in place of the Z; nothing else. Formatting writes UTC with Z. */
int sl_auth_time_parse(const char *s, size_t n, int64_t *ms);
size_t sl_auth_time_format(int64_t ms, char out[32]);

/* Verification. skew_ms <= 0 means SL_AUTH_DEFAULT_SKEW_MS. out is written
 * only on success. sl_auth_verify() picks the scheme: the Authorization
 * header when there is one (exactly one), else a signed URL when the query has
 * a "sig" parameter, else SL_EAUTH (no credentials). */
int sl_auth_verify(const struct sl_auth_request *rq, const struct sl_auth_keyring *ring, int64_t skew_ms,
                   struct sl_auth_cred *out);
int sl_auth_verify_key(const struct sl_auth_request *rq, const struct sl_auth_keyring *ring,
                       struct sl_auth_cred *out);
int sl_auth_verify_signed(const struct sl_auth_request *rq, const struct sl_auth_keyring *ring,
                          int64_t skew_ms, struct sl_auth_cred *out);
int sl_auth_verify_sigv4(const struct sl_auth_request *rq, const struct sl_auth_keyring *ring,
                         int64_t skew_ms, struct sl_auth_cred *out);
int sl_auth_verify_url(const struct sl_auth_request *rq, const struct sl_auth_keyring *ring,
                       struct sl_auth_cred *out);

/* The account of a SigV4 access key id ("account" or "account:keyName"),
 * taken from the Authorization header, or when that is NULL from a
 * presigned URL's X-Amz-Credential (decoded), for APIs whose requests name
 * their account only there (SQS): 0, or SL_EAUTH when it is not well-formed.
 * Says nothing of whether the signature is good. */
int sl_auth_sigv4_account(const char *authorization, const char *credential, char account[SL_NAME_MAX + 1]);

/* "Signed" scheme, client side (tests, tools): the signature for one request,
 * base64url without padding, 43 characters plus NUL. */
int sl_auth_signed_sign(const struct sl_auth_key *key, const char *account, const char *method,
                        const char *path, size_t path_len, const char *time, char out[44]);

/* AWS SigV4, client side (the CLI, tests): signs rq (method, raw path and
 * query as they will be sent, body) and every header in rq->headers, which
 * must include Host and X-Amz-Date (sl_auth_amz_date_format) and nothing a
 * proxy may change, with the canonical forms of AWS and botocore. Writes the
 * Authorization header value into out. akid is "account" or
 * "account:keyName". 0, SL_EINVAL (a bad input or out too small). */
int sl_auth_sigv4_sign(const struct sl_auth_request *rq, const struct sl_auth_key *key, const char *akid,
                       const char *region, const char *service, char *out, size_t cap);
/* "20261121T100000Z", the X-Amz-Date form of a time. */
size_t sl_auth_amz_date_format(int64_t ms, char out[17]);

/* Signed URLs (admin API). Writes the query string "auth=..&q=..&st=..&et=..
 * &sig=.." (absent parts left out) into out. key_name NULL means "primary".
 * queue NULL means any queue; st_ms/et_ms < 0 mean absent. */
int sl_auth_url_sign(const struct sl_auth_keyring *ring, const char *key_name, unsigned levels,
                     const char *queue, int64_t st_ms, int64_t et_ms, char *out, size_t cap);

/* Authorization: may credential c do a route that needs level letter `level`
 * on queue `queue` (NULL for account-wide routes such as listing queues)?
 * 0, SL_EFORBIDDEN, or SL_EAUTH when c is not a verified credential. */
int sl_auth_check(const struct sl_auth_cred *c, char level, const char *queue);

#endif
