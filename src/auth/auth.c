/* auth.c: picking the scheme of a request, the authorization decision, and
 * the small helpers (hashing, headers, query parameters) the schemes share. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>

#include "auth_int.h"

/* SHA-256, fetched from OpenSSL's provider once: OpenSSL 3 looks an
 * algorithm named by EVP_sha256() up again on every use, which cost a
 * SigV4 request more than its hashing (bench/results/sqs.md). */
static EVP_MD *g_sha256;
static pthread_once_t g_sha256_once = PTHREAD_ONCE_INIT;

static void fetch_sha256(void) {
    g_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

static const EVP_MD *sha256_md(void) {
    pthread_once(&g_sha256_once, fetch_sha256);
    return g_sha256 ? g_sha256 : EVP_sha256();
}

/* The digest of the concatenation of two parts (either may be empty). */
static int digest2(const void *a, size_t an, const void *b, size_t bn, unsigned char out[SL_SHA256_LEN]) {
    unsigned int len = 0;
    return sl_digest(sha256_md(), a, an, b, bn, out, &len) == 0 && len == SL_SHA256_LEN ? SL_OK
                                                                                        : SL_EINTERNAL;
}

/* HMAC-SHA256 (RFC 2104) over the fetched digest. */
int sl__hmac(const void *key, size_t key_len, const void *msg, size_t n, unsigned char out[SL_SHA256_LEN]) {
    enum { BLOCK = 64 };
    unsigned char k[BLOCK] = {0}, pad[BLOCK], inner[SL_SHA256_LEN];
    int rc = SL_OK;
    if (key_len > BLOCK)
        rc = sl__sha256(key, key_len, k);
    else if (key_len)
        memcpy(k, key, key_len);
    for (int i = 0; i < BLOCK; i++)
        pad[i] = k[i] ^ 0x36;
    if (rc == SL_OK) rc = digest2(pad, BLOCK, msg, n, inner);
    for (int i = 0; i < BLOCK; i++)
        pad[i] = k[i] ^ 0x5c;
    if (rc == SL_OK) rc = digest2(pad, BLOCK, inner, SL_SHA256_LEN, out);
    OPENSSL_cleanse(k, sizeof k);
    OPENSSL_cleanse(pad, sizeof pad);
    OPENSSL_cleanse(inner, sizeof inner);
    return rc;
}

int sl__sha256(const void *msg, size_t n, unsigned char out[SL_SHA256_LEN]) {
    return digest2(msg, n, "", 0, out);
}

int sl__hmac_match(const struct sl_auth_keyring *ring, const void *msg, size_t n,
                   const unsigned char want[SL_SHA256_LEN], const struct sl_auth_key **match) {
    *match = NULL;
    for (size_t i = 0; i < ring->n; i++) {
        unsigned char mac[SL_SHA256_LEN];
        int rc = sl__hmac(ring->keys[i].bytes, SL_AUTH_KEY_BYTES, msg, n, mac);
        if (rc != SL_OK) return rc;
        if (CRYPTO_memcmp(mac, want, SL_SHA256_LEN) == 0 && !*match) *match = &ring->keys[i];
    }
    return SL_OK;
}

void sl__hex(const unsigned char *in, size_t n, char *out) {
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
}

size_t sl__header(const struct sl_auth_request *rq, const char *name, const char **value) {
    size_t count = 0;
    *value = NULL;
    for (size_t i = 0; i < rq->n_headers; i++) {
        if (!rq->headers[i].name || !rq->headers[i].value || strcasecmp(rq->headers[i].name, name) != 0)
            continue;
        if (count++ == 0) *value = rq->headers[i].value;
    }
    return count;
}

int sl__auth_token(const struct sl_auth_request *rq, const char *scheme, const char **tok, size_t *n) {
    const char *auth;
    if (sl__header(rq, "authorization", &auth) != 1) return -1;
    size_t w = strcspn(auth, " \t");
    if (!sl__token_eq(auth, w, scheme)) return -1;
    const char *t = auth + w + strspn(auth + w, " \t");
    size_t len = strcspn(t, " \t");
    if (len == 0 || t[len + strspn(t + len, " \t")] != '\0') return -1;
    *tok = t;
    *n = len;
    return 0;
}

int sl__token_eq(const char *s, size_t n, const char *lit) {
    return strlen(lit) == n && strncasecmp(s, lit, n) == 0;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

long sl__query_unescape(const char *in, size_t n, char *out, size_t cap) {
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int c = (unsigned char)in[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (n - i < 3) return -1;
            int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            c = hi << 4 | lo;
            i += 2;
        }
        if (c == 0 || o + 1 >= cap) return -1;
        out[o++] = (char)c;
    }
    if (o >= cap) return -1;
    out[o] = '\0';
    return (long)o;
}

int sl__query_param(const char *query, size_t query_len, const char *name, char *out, size_t cap) {
    char key[32];
    int found = 0;
    size_t i = 0;
    while (query && i < query_len) {
        size_t end = i;
        while (end < query_len && query[end] != '&')
            end++;
        size_t eq = i;
        while (eq < end && query[eq] != '=')
            eq++;
        /* A parameter name longer than key[] cannot be one of ours. */
        if (sl__query_unescape(query + i, eq - i, key, sizeof key) >= 0 && strcmp(key, name) == 0) {
            if (found) return -1;
            found = 1;
            size_t vs = eq < end ? eq + 1 : end;
            if (out && sl__query_unescape(query + vs, end - vs, out, cap) < 0) return -1;
        }
        i = end + 1;
    }
    return found;
}

/* The Authorization header decides the scheme when there is one, so a signed
 * URL's parameters in the query of such a request are ordinary parameters.
 * Two Authorization headers are refused rather than guessing which counts. */
int sl_auth_verify(const struct sl_auth_request *rq, const struct sl_auth_keyring *ring, int64_t skew_ms,
                   struct sl_auth_cred *out) {
    const char *auth;
    size_t n = sl__header(rq, "authorization", &auth);
    if (n > 1) return SL_EAUTH;
    if (n == 1) {
        size_t w = strcspn(auth, " \t");
        if (sl__token_eq(auth, w, "Key")) return sl_auth_verify_key(rq, ring, out);
        if (sl__token_eq(auth, w, "Signed")) return sl_auth_verify_signed(rq, ring, skew_ms, out);
        if (sl__token_eq(auth, w, "AWS4-HMAC-SHA256")) return sl_auth_verify_sigv4(rq, ring, skew_ms, out);
        return SL_EAUTH;
    }
    if (sl__query_param(rq->query, rq->query_len, "X-Amz-Algorithm", NULL, 0) != 0)
        return sl_auth_verify_sigv4(rq, ring, skew_ms, out); /* presigned */
    if (sl__query_param(rq->query, rq->query_len, "sig", NULL, 0) != 0)
        return sl_auth_verify_url(rq, ring, out);
    return SL_EAUTH;
}

int sl_auth_check(const struct sl_auth_cred *c, char level, const char *queue) {
    if (!c || c->scheme == SL_AUTH_NONE) return SL_EAUTH;
    int bit = sl_auth_level_bit(level);
    if (bit < 0) return SL_EINVAL;
    if (!(c->levels & (unsigned)bit)) return SL_EFORBIDDEN;
    /* A signed URL for one queue grants nothing account-wide (listing or
     * creating queues with no queue named), nor on any other queue. */
    if (c->queue[0] && (!queue || strcmp(queue, c->queue) != 0)) return SL_EFORBIDDEN;
    return SL_OK;
}
