/* page.c: queries and their continuation tokens.
 *
 * A token carries the whole query and the position it reached, so any
 * node answers the next page, after restarts too, with no state kept
 * between pages. Token format, version 1: "v1" followed by base64url (no
 * padding) of
 *
 *   flags        1 byte: bit 0 descending, bit 1 a position is reached
 *   account      1 byte length, the bytes
 *   types        1 byte count (0..10), each 1 byte length and the bytes,
 *                sorted, without repeats
 *   tags         the same
 *   start, end   8 bytes each, big-endian microseconds: the range [start, end)
 *   last         when flagged: 8 bytes of time, 1 byte length, the id
 *   mac          the first 16 bytes of HMAC-SHA256 of all the above under
 *                the account-independent secret kept in the store
 *
 * The MAC is checked before anything else is read, and then every field
 * must be one a query could hold (names, ids and tags by their syntax,
 * values canonical, the position inside the range), so a token is either
 * one this deployment made or refused whole. */
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

#include "events.h"

#define TOKEN_MAC 16
#define TOKEN_RAW_MAX 3072 /* decoded bytes of a SL_EV_TOKEN_MAX-character token */

static int cmp_str(const void *a, const void *b) {
    return strcmp(a, b);
}

/* Sorts n strings of size bytes each and drops repeats; returns how many
 * are left. */
static int canon(char *v, int n, size_t size) {
    int k = 0;
    qsort(v, (size_t)n, size, cmp_str);
    for (int i = 0; i < n; i++)
        if (k == 0 || strcmp(v + (size_t)(k - 1) * size, v + (size_t)i * size) != 0) {
            if (k != i) memcpy(v + (size_t)k * size, v + (size_t)i * size, size);
            k++;
        }
    return k;
}

void sl_ev_query_canon(sl_ev_query *q) {
    q->ntypes = canon(q->types[0], q->ntypes, sizeof q->types[0]);
    q->ntags = canon(q->tags[0], q->ntags, sizeof q->tags[0]);
}

int sl_ev_query_same(const sl_ev_query *a, const sl_ev_query *b) {
    if (strcmp(a->account, b->account) != 0 || a->ntypes != b->ntypes || a->ntags != b->ntags ||
        !a->desc != !b->desc || a->start_us != b->start_us || a->end_us != b->end_us)
        return 0;
    for (int i = 0; i < a->ntypes; i++)
        if (strcmp(a->types[i], b->types[i]) != 0) return 0;
    for (int i = 0; i < a->ntags; i++)
        if (strcmp(a->tags[i], b->tags[i]) != 0) return 0;
    return 1;
}

/* Whether q is one a query could hold: the check of a token read and of a
 * query about to be written into one. */
static int query_ok(const sl_ev_query *q) {
    if (!sl_name_valid(q->account) || q->ntypes < 0 || q->ntypes > SL_EV_FILTER_MAX || q->ntags < 0 ||
        q->ntags > SL_EV_FILTER_MAX || q->start_us < 0 || q->start_us > q->end_us ||
        q->end_us > SL_EV_TIME_LAST + 1)
        return 0;
    for (int i = 0; i < q->ntypes; i++)
        if (!sl_ev_id_valid(q->types[i]) || (i > 0 && strcmp(q->types[i - 1], q->types[i]) >= 0)) return 0;
    for (int i = 0; i < q->ntags; i++)
        if (!sl_ev_tag_valid(q->tags[i]) || (i > 0 && strcmp(q->tags[i - 1], q->tags[i]) >= 0)) return 0;
    return !q->has_last || ((q->last.id[0] == '\0' || sl_ev_id_valid(q->last.id)) &&
                            q->last.us >= q->start_us && q->last.us < q->end_us);
}

static void mac(const unsigned char *secret, const unsigned char *raw, size_t n, unsigned char out[32]) {
    unsigned int len = 32;
    HMAC(EVP_sha256(), secret, SL_EV_SECRET_LEN, raw, n, out, &len);
}

/* --- Writing ------------------------------------------------------------- */

static size_t put_str(unsigned char *b, size_t o, const char *s) {
    size_t n = strlen(s);
    b[o] = (unsigned char)n;
    memcpy(b + o + 1, s, n);
    return o + 1 + n;
}

static size_t put_i64(unsigned char *b, size_t o, int64_t v) {
    for (int i = 7; i >= 0; i--)
        b[o++] = (unsigned char)((uint64_t)v >> (8 * i));
    return o;
}

long sl_ev_token_make(const sl_ev_query *q, const unsigned char secret[SL_EV_SECRET_LEN],
                      char out[SL_EV_TOKEN_MAX + 1]) {
    unsigned char b[TOKEN_RAW_MAX], m[32];
    size_t o = 0;
    if (!query_ok(q)) return SL_EINVAL;
    b[o++] = (unsigned char)((q->desc ? 1 : 0) | (q->has_last ? 2 : 0));
    o = put_str(b, o, q->account);
    b[o++] = (unsigned char)q->ntypes;
    for (int i = 0; i < q->ntypes; i++)
        o = put_str(b, o, q->types[i]);
    b[o++] = (unsigned char)q->ntags;
    for (int i = 0; i < q->ntags; i++)
        o = put_str(b, o, q->tags[i]);
    o = put_i64(b, o, q->start_us);
    o = put_i64(b, o, q->end_us);
    if (q->has_last) {
        o = put_i64(b, o, q->last.us);
        o = put_str(b, o, q->last.id);
    }
    mac(secret, b, o, m);
    memcpy(b + o, m, TOKEN_MAC);
    o += TOKEN_MAC;
    memcpy(out, "v1", 2);
    return (long)(2 + sl_b64url_encode(b, o, out + 2));
}

/* --- Reading ------------------------------------------------------------- */

typedef struct {
    const unsigned char *b;
    size_t n, o;
    int bad;
} reader;

static void get_str(reader *r, char *out, size_t cap) {
    size_t len = r->o < r->n ? r->b[r->o] : 0;
    if (r->bad || r->o >= r->n || len >= cap || r->n - r->o - 1 < len || memchr(r->b + r->o + 1, 0, len)) {
        r->bad = 1;
        out[0] = '\0';
        return;
    }
    memcpy(out, r->b + r->o + 1, len);
    out[len] = '\0';
    r->o += 1 + len;
}

static int64_t get_i64(reader *r) {
    uint64_t v = 0;
    if (r->bad || r->n - r->o < 8) {
        r->bad = 1;
        return 0;
    }
    for (int i = 0; i < 8; i++)
        v = v << 8 | r->b[r->o++];
    return (int64_t)v;
}

static int get_u8(reader *r) {
    if (r->bad || r->o >= r->n) {
        r->bad = 1;
        return 0;
    }
    return r->b[r->o++];
}

int sl_ev_token_read(const char *s, size_t n, const unsigned char secret[SL_EV_SECRET_LEN], sl_ev_query *q) {
    unsigned char b[TOKEN_RAW_MAX], m[32];
    if (n < 2 || n > SL_EV_TOKEN_MAX || memcmp(s, "v1", 2) != 0) return SL_EINVAL;
    long len = sl_b64url_decode(s + 2, n - 2, b, sizeof b);
    if (len <= TOKEN_MAC) return SL_EINVAL;
    size_t body = (size_t)len - TOKEN_MAC;
    mac(secret, b, body, m);
    if (CRYPTO_memcmp(m, b + body, TOKEN_MAC) != 0) return SL_EINVAL;

    reader r = {b, body, 0, 0};
    memset(q, 0, sizeof *q);
    int flags = get_u8(&r);
    q->desc = flags & 1;
    q->has_last = flags >> 1 & 1;
    get_str(&r, q->account, sizeof q->account);
    q->ntypes = get_u8(&r);
    for (int i = 0; i < q->ntypes && i < SL_EV_FILTER_MAX; i++)
        get_str(&r, q->types[i], sizeof q->types[i]);
    q->ntags = q->ntypes <= SL_EV_FILTER_MAX ? get_u8(&r) : 0;
    for (int i = 0; i < q->ntags && i < SL_EV_FILTER_MAX; i++)
        get_str(&r, q->tags[i], sizeof q->tags[i]);
    q->start_us = get_i64(&r);
    q->end_us = get_i64(&r);
    if (q->has_last) {
        q->last.us = get_i64(&r);
        get_str(&r, q->last.id, sizeof q->last.id);
    }
    if (r.bad || r.o != r.n || flags > 3 || !query_ok(q)) return SL_EINVAL;
    return 0;
}
