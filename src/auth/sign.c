/* sign.c: the "Authorization: Signed <signature>" scheme.
 *
 * String to sign (no trailing newline):
 *
 *     <account> "\n" <METHOD> "\n" <path> "\n" <time>
 *
 * account: the account of the request path. METHOD: the request method as
 * sent. path: the request path exactly as sent on the wire, up to but not
 * including '?', with no percent-decoding and no normalization (so a client
 * signs the string it puts in its request line). time: the value of
 * X-Sluice-Request-Time, or else x-cassieq-request-time, exactly as sent; it
 * must parse as an ISO-8601 UTC time (see time.c) within the allowed skew of
 * the server's clock, in either direction.
 *
 * signature = base64url without padding of HMAC-SHA256(decoded key, string),
 * 43 characters. This scheme covers neither the query nor the body; SigV4
 * does, which is why API.md recommends SigV4. */
#include "auth_int.h"

#define TIME_MAX 40

static int string_to_sign(struct sl__sb *b, const char *account, const char *method, const char *path,
                          size_t path_len, const char *time) {
    sl__sb_str(b, account);
    sl__sb_chr(b, '\n');
    sl__sb_str(b, method);
    sl__sb_chr(b, '\n');
    sl__sb_put(b, path, path_len);
    sl__sb_chr(b, '\n');
    sl__sb_str(b, time);
    return b->err ? SL_EAUTH : SL_OK;
}

int sl_auth_signed_sign(const struct sl_auth_key *key, const char *account, const char *method,
                        const char *path, size_t path_len, const char *time, char out[44]) {
    char buf[SL_NAME_MAX + 16 + SL_AUTH_MAX_PATH + TIME_MAX + 4];
    struct sl__sb b = {buf, 0, sizeof buf, 0};
    unsigned char mac[SL_SHA256_LEN];
    if (strlen(method) > 16 || strlen(time) > TIME_MAX || path_len > SL_AUTH_MAX_PATH) return SL_EINVAL;
    if (string_to_sign(&b, account, method, path, path_len, time) != SL_OK) return SL_EINVAL;
    int rc = sl__hmac(key->bytes, SL_AUTH_KEY_BYTES, buf, b.len, mac);
    if (rc == SL_OK) sl_b64url_encode(mac, sizeof mac, out);
    return rc;
}

int sl_auth_verify_signed(const struct sl_auth_request *rq, const struct sl_auth_keyring *ring,
                          int64_t skew_ms, struct sl_auth_cred *out) {
    const char *sig, *time;
    size_t sig_len;
    unsigned char want[SL_SHA256_LEN];
    if (skew_ms <= 0) skew_ms = SL_AUTH_DEFAULT_SKEW_MS;
    if (sl__auth_token(rq, "Signed", &sig, &sig_len) != 0 || sig_len != 43 ||
        sl_b64url_decode(sig, sig_len, want, sizeof want) != SL_SHA256_LEN)
        return SL_EAUTH;

    size_t nt = sl__header(rq, "x-sluice-request-time", &time);
    if (nt == 0) nt = sl__header(rq, "x-cassieq-request-time", &time);
    if (nt != 1) return SL_EAUTH;
    int64_t t;
    if (sl_auth_time_parse(time, strlen(time), &t) != SL_OK) return SL_EAUTH;
    if (t > rq->now_ms + skew_ms || t < rq->now_ms - skew_ms) return SL_EAUTH;

    if (!rq->method || strlen(rq->method) > 16 || rq->path_len > SL_AUTH_MAX_PATH) return SL_EAUTH;
    char buf[SL_NAME_MAX + 16 + SL_AUTH_MAX_PATH + TIME_MAX + 4];
    struct sl__sb b = {buf, 0, sizeof buf, 0};
    if (string_to_sign(&b, ring->account, rq->method, rq->path, rq->path_len, time) != SL_OK) return SL_EAUTH;

    const struct sl_auth_key *match;
    int rc = sl__hmac_match(ring, buf, b.len, want, &match);
    if (rc != SL_OK) return rc;
    if (!match) return SL_EAUTH;
    memset(out, 0, sizeof *out);
    out->scheme = SL_AUTH_SIGNED;
    out->levels = SL_LEVEL_ALL;
    strcpy(out->key_name, match->name);
    return SL_OK;
}
