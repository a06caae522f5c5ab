/* receipt.c: pop receipts.
 *
 * Pop receipt format, version 2: base64url("2:<queue version>:<id>:
 * <message version>:<expiry in s>") "." base64url(the first 12 bytes of
 * HMAC-SHA256 of those fields under the queue incarnation's secret). The
 * message version changes on every lease, update and ack, so a receipt is
 * valid exactly until the message is leased again (guarantee 4); the MAC
 * ties it to one incarnation of one queue, so a receipt of another queue, of
 * a queue since re-created, or with any byte changed acks nothing; the
 * expiry lets ack keep the row's TTL without reading it first.
 *
 * Version 3, a sticky receipt (SQS's receipt handle): the same, with the
 * message's delivery count as stored (with the epoch of its lease in the
 * high bits, msg_dcount) in place of its version. It names a delivery,
 * not a version of the row, so it stays valid through updates (SQS's
 * ChangeMessageVisibility keeps the handle) until the message is delivered
 * again, which is the only thing that changes the delivery count. */
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <string.h>

#include "queue_int.h"

/* --- Receipts -------------------------------------------------------------- */

#define RECEIPT_MAC 12 /* bytes of HMAC-SHA256 kept */

/* HMAC-SHA256 (RFC 2104) under the incarnation's secret. The SHA-256 states
 * after the key's inner and outer pads are computed once per incarnation;
 * a MAC then copies them instead of fetching the digest and scheduling the
 * key again, which cost a few microseconds on every receive and ack. */
typedef struct {
    EVP_MD_CTX *in, *out;
} mac_pads;

void msg_receipt_free(qstate *q) {
    mac_pads *m = q->mac_pads;
    if (!m) return;
    EVP_MD_CTX_free(m->in);
    EVP_MD_CTX_free(m->out);
    free(m);
    q->mac_pads = NULL;
}

/* Without the pads (no memory), receipt_mac computes the plain way. */
void msg_receipt_init(qstate *q) {
    mac_pads *m = sl_calloc(1, sizeof *m);
    int ok = m && (m->in = EVP_MD_CTX_new()) != NULL && (m->out = EVP_MD_CTX_new()) != NULL;
    for (int k = 0; ok && k < 2; k++) {
        unsigned char pad[64]; /* SHA-256's block; the 16-byte key padded with zeros */
        memset(pad, k ? 0x5c : 0x36, sizeof pad);
        for (size_t i = 0; i < sizeof q->secret; i++)
            pad[i] ^= q->secret[i];
        EVP_MD_CTX *c = k ? m->out : m->in;
        ok = EVP_DigestInit_ex(c, EVP_sha256(), NULL) && EVP_DigestUpdate(c, pad, sizeof pad);
    }
    q->mac_pads = m;
    if (!ok) msg_receipt_free(q);
}

static void receipt_mac(const qstate *q, const char *raw, size_t n, unsigned char mac[32]) {
    const mac_pads *m = q->mac_pads;
    unsigned int len = 32;
    EVP_MD_CTX *c = m ? EVP_MD_CTX_new() : NULL;
    unsigned char inner[32];
    int ok = c && EVP_MD_CTX_copy_ex(c, m->in) && EVP_DigestUpdate(c, raw, n) &&
             EVP_DigestFinal_ex(c, inner, &len) && EVP_MD_CTX_copy_ex(c, m->out) &&
             EVP_DigestUpdate(c, inner, sizeof inner) && EVP_DigestFinal_ex(c, mac, &len);
    EVP_MD_CTX_free(c);
    if (!ok) HMAC(EVP_sha256(), q->secret, (int)sizeof q->secret, (const unsigned char *)raw, n, mac, &len);
}

/* "<fields>.<mac>", both base64url; the MAC binds the receipt to one
 * incarnation of one queue and makes every byte of it count. */
static void receipt_make(const qstate *q, char out[SL_RECEIPT_MAX], int kind, int64_t id, int64_t n2,
                         int64_t exp_ms) {
    char raw[96];
    unsigned char mac[32];
    int64_t f[5] = {kind, q->version, id, n2, exp_ms / 1000};
    size_t n = 0;
    for (int i = 0; i < 5; i++) { /* "%d:%lld:%lld:%lld:%lld", without snprintf */
        if (i) raw[n++] = ':';
        n += (size_t)sl_fmt_i64(raw + n, f[i]);
    }
    receipt_mac(q, raw, n, mac);
    size_t o = sl_b64url_encode(raw, (size_t)n, out);
    out[o++] = '.';
    sl_b64url_encode(mac, RECEIPT_MAC, out + o);
}

void msg_receipt_make(const qstate *q, char out[SL_RECEIPT_MAX], int64_t id, int64_t version,
                      int64_t exp_ms) {
    receipt_make(q, out, 2, id, version, exp_ms);
}

void msg_receipt_make_sticky(const qstate *q, char out[SL_RECEIPT_MAX], int64_t id, int64_t dcount,
                             int64_t exp_ms) {
    receipt_make(q, out, 3, id, dcount, exp_ms);
}

/* One decimal field of a receipt: an optional '-' and 1 to 19 digits, that
 * fit an int64. The end of it, or NULL. */
static const char *field(const char *p, const char *end, int64_t *out) {
    int neg = p < end && *p == '-';
    p += neg;
    const char *start = p;
    uint64_t v = 0;
    while (p < end && *p >= '0' && *p <= '9' && p - start < 19)
        v = v * 10 + (uint64_t)(*p++ - '0');
    if (p == start || (p < end && *p >= '0' && *p <= '9') || v > (uint64_t)INT64_MAX) return NULL;
    *out = neg ? -(int64_t)v : (int64_t)v;
    return p;
}

/* Returns 0, or SL_EINVAL for anything that is not a receipt this queue
 * incarnation issued: garbage, another queue's, a tampered one. *version
 * is the message's version, or its delivery count when *sticky is set. */
int msg_receipt_parse(const qstate *q, const char *s, int64_t *id, int64_t *version, int64_t *exp_ms,
                      int *sticky) {
    size_t n = strlen(s);
    const char *dot = strchr(s, '.');
    char raw[96];
    unsigned char mac[RECEIPT_MAC + 2], want[32];
    if (n == 0 || n >= SL_RECEIPT_MAX || !dot) return SL_EINVAL;
    long m = sl_b64url_decode(s, (size_t)(dot - s), raw, sizeof raw - 1);
    if (m <= 0) return SL_EINVAL;
    raw[m] = 0;
    if (sl_b64url_decode(dot + 1, strlen(dot + 1), mac, sizeof mac) != RECEIPT_MAC) return SL_EINVAL;
    receipt_mac(q, raw, (size_t)m, want);
    if (CRYPTO_memcmp(mac, want, RECEIPT_MAC) != 0) return SL_EINVAL;
    int64_t f[5];
    const char *p = raw, *end = raw + m;
    for (int i = 0; i < 5; i++) /* the fields receipt_make wrote, and nothing else */
        if ((i && (p == end || *p++ != ':')) || !(p = field(p, end, &f[i]))) return SL_EINVAL;
    if (p != end || (f[0] != 2 && f[0] != 3)) return SL_EINVAL;
    int64_t a = f[1], b = f[2], c = f[3], d = f[4];
    int kind = (int)f[0];
    if (a != q->version || b < 0 || c < 0 || c == INT64_MAX || d < 0 || d > INT64_MAX / 1000)
        return SL_EINVAL;
    *id = b;
    *version = c;
    *exp_ms = d * 1000;
    *sticky = kind == 3;
    return 0;
}
