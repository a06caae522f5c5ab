/* key.c: account keys and the "Authorization: Key <accountKey>" scheme. */
#include <openssl/crypto.h>

#include "auth_int.h"

int sl_auth_key_generate(char out[SL_AUTH_KEY_CHARS + 1]) {
    unsigned char raw[SL_AUTH_KEY_BYTES];
    int rc = sl_random_bytes(raw, sizeof raw);
    if (rc == SL_OK) sl_b64url_encode(raw, sizeof raw, out);
    OPENSSL_cleanse(raw, sizeof raw);
    return rc;
}

/* Only the exact 86-character form is a key: sl_b64url_decode() refuses
 * non-zero leftover bits, so each 64-byte key has one spelling, and comparing
 * strings is the same as comparing keys. */
int sl_auth_key_decode(const char *s, size_t n, unsigned char out[SL_AUTH_KEY_BYTES]) {
    if (!s || n != SL_AUTH_KEY_CHARS) return SL_EINVAL;
    if (sl_b64url_decode(s, n, out, SL_AUTH_KEY_BYTES) != SL_AUTH_KEY_BYTES) return SL_EINVAL;
    return SL_OK;
}

int sl_auth_key_init(struct sl_auth_key *k, const char *name, const char *secret) {
    if (!k || !sl_name_valid(name) || !secret) return SL_EINVAL;
    int rc = sl_auth_key_decode(secret, strlen(secret), k->bytes);
    if (rc != SL_OK) return rc;
    strcpy(k->name, name);
    memcpy(k->secret, secret, SL_AUTH_KEY_CHARS + 1);
    return SL_OK;
}

/* The header value is "Key" and the key after one or more spaces or tabs;
 * trailing whitespace is not part of it (the HTTP parser strips it anyway).
 * The length check leaks only that the presented string is not 86
 * characters, which every client knows. */
int sl_auth_verify_key(const struct sl_auth_request *rq, const struct sl_auth_keyring *ring,
                       struct sl_auth_cred *out) {
    const char *k;
    size_t n;
    if (sl__auth_token(rq, "Key", &k, &n) != 0 || n != SL_AUTH_KEY_CHARS) return SL_EAUTH;

    const struct sl_auth_key *match = NULL;
    for (size_t i = 0; i < ring->n; i++) {
        if (CRYPTO_memcmp(ring->keys[i].secret, k, SL_AUTH_KEY_CHARS) == 0 && !match) match = &ring->keys[i];
    }
    if (!match) return SL_EAUTH;
    memset(out, 0, sizeof *out);
    out->scheme = SL_AUTH_KEY;
    out->levels = SL_LEVEL_ALL;
    strcpy(out->key_name, match->name);
    return SL_OK;
}
