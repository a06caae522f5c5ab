/* sigv4.c: verifying AWS Signature Version 4 (server side), and signing
 * (client side, sl_auth_sigv4_sign at the end).
 *
 *     Authorization: AWS4-HMAC-SHA256 Credential=<akid>/<yyyymmdd>/<region>/<service>/aws4_request,
 *                    SignedHeaders=<h1;h2;...>, Signature=<64 hex>
 *
 * or presigned, the same in the query (a URL that works until it expires):
 *
 *     ?...&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=<akid>%2F<date>%2F...
 *      &X-Amz-Date=<amzdate>&X-Amz-Expires=<1..604800 s>&X-Amz-SignedHeaders=host
 *      &X-Amz-Signature=<64 hex>
 *
 * where the canonical query is the query without X-Amz-Signature, and the
 * URL is good from X-Amz-Date (less the allowed skew) for X-Amz-Expires
 * seconds. A request carries one form, never both.
 *
 * akid is "<account>" (any key of the account may have signed) or
 * "<account>:<keyName>" (only that key). The account must be the one the
 * request addresses. The secret is the key's 86-character base64url string
 * as the admin API hands it out, so kSecret = "AWS4" + that string. Region
 * and service are accepted whatever they are and recorded; the scope date
 * must be the date of the request time.
 *
 * Request time: X-Amz-Date ("20261121T100000Z"), or else Date in the
 * IMF-fixdate form ("Sat, 21 Nov 2026 10:00:00 GMT", or "+0000"/"-0000" for
 * GMT), within the allowed skew. The string to sign always carries the X-Amz-Date form.
 *
 * Canonical request (AWS's definition):
 *
 *     METHOD \n canonical URI \n canonical query \n
 *     canonical headers (each "name:value\n") \n signed headers \n payload hash
 *
 *   canonical headers: the headers listed in SignedHeaders, which must be
 *     lowercase, strictly sorted and include host; each value trimmed, runs
 *     of spaces and tabs collapsed to one space, repeated headers joined
 *     with ','.
 *   payload hash: hex SHA-256 of the body. SigV4 here always signs the body:
 *     x-amz-content-sha256, when sent, must equal that hash, so
 *     UNSIGNED-PAYLOAD and streaming payloads are refused.
 *
 * Signers disagree on the canonical URI and query, and a server must accept
 * what real clients send, so the signature is checked against each of these
 * forms (all of them bind the request as the server will interpret it):
 *
 *   URI   "aws": AWS's form for services other than S3, what botocore and the
 *         AWS SDKs produce: the raw path with dot segments and empty segments
 *         removed (RFC 3986 5.2.4, as botocore's remove_dot_segments), then
 *         every byte outside A-Z a-z 0-9 - . _ ~ / percent-encoded again, so
 *         "my%20q" becomes "my%2520q".
 *         "raw": the path exactly as sent (S3's form; curl 7.88's
 *         --aws-sigv4, which signs the path unchanged).
 *   query "aws": parameters percent-decoded ('+' as space), re-encoded with
 *         only the RFC 3986 unreserved set left bare, sorted by name then
 *         value, "name=value" joined by '&'.
 *         "sorted": the raw "name=value" pairs sorted by name then value
 *         (botocore when the query is part of the URL it signs).
 *         "raw": the query exactly as sent (curl 7.88 neither sorts nor
 *         re-encodes it).
 *
 * string to sign = "AWS4-HMAC-SHA256\n" amzdate "\n" date/region/service/
 * aws4_request "\n" hex(SHA-256(canonical request)); signature = hex
 * HMAC-SHA256 with kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" secret, date),
 * region), service), "aws4_request"). */
#include <openssl/crypto.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "auth_int.h"

#define SCOPE_PART_MAX 63
#define HEADERS_MAX 65536 /* all signed header lines together */
#define MAX_CANDIDATES 6

struct authz {
    const char *akid;
    size_t akid_len;
    char date[9];
    char region[SCOPE_PART_MAX + 1];
    char service[SCOPE_PART_MAX + 1];
    const char *signed_headers;
    size_t sh_len;
    unsigned char sig[SL_SHA256_LEN];
};

static int unhex(char c) {
    unsigned d = (unsigned)(unsigned char)c - '0';
    if (d < 10) return (int)d;
    d = (unsigned)(unsigned char)c - 'a';
    return d < 6 ? (int)d + 10 : -1;
}

static int copy_part(const char *s, size_t n, char *out, size_t cap) {
    if (n == 0 || n >= cap) return -1;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~' || s[i] == ',') return -1;
    memcpy(out, s, n);
    out[n] = '\0';
    return 0;
}

/* Credential=akid/date/region/service/aws4_request */
static int parse_credential(const char *s, size_t n, struct authz *a) {
    const char *part[5];
    size_t len[5], k = 0, start = 0;
    for (size_t i = 0; i <= n; i++) {
        if (i < n && s[i] != '/') continue;
        if (k == 5) return -1;
        part[k] = s + start;
        len[k++] = i - start;
        start = i + 1;
    }
    if (k != 5 || len[0] == 0 || len[1] != 8 || !sl__token_eq(part[4], len[4], "aws4_request")) return -1;
    for (int i = 0; i < 8; i++)
        if (part[1][i] < '0' || part[1][i] > '9') return -1;
    a->akid = part[0];
    a->akid_len = len[0];
    memcpy(a->date, part[1], 8);
    a->date[8] = '\0';
    if (copy_part(part[2], len[2], a->region, sizeof a->region) ||
        copy_part(part[3], len[3], a->service, sizeof a->service))
        return -1;
    return 0;
}

static int parse_signature(const char *v, size_t vn, struct authz *a) {
    if (vn != 2 * SL_SHA256_LEN) return -1;
    for (size_t i = 0; i < SL_SHA256_LEN; i++) {
        int hi = unhex(v[2 * i]), lo = unhex(v[2 * i + 1]);
        if (hi < 0 || lo < 0) return -1;
        a->sig[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

/* The three components, each exactly once, in any order, separated by
 * commas with optional spaces (botocore writes ", ", some clients ","). */
static int parse_authorization(const char *h, struct authz *a) {
    size_t w = strcspn(h, " \t");
    if (!sl__token_eq(h, w, "AWS4-HMAC-SHA256") || strlen(h) > SL_AUTH_MAX_HEADER) return -1;
    const char *p = h + w;
    int seen = 0;
    for (;;) {
        p += strspn(p, " \t");
        if (*p == '\0') break;
        size_t n = strcspn(p, ",");
        size_t vn = n;
        while (vn > 0 && (p[vn - 1] == ' ' || p[vn - 1] == '\t'))
            vn--;
        const char *eq = memchr(p, '=', vn);
        if (!eq) return -1;
        size_t kn = (size_t)(eq - p);
        const char *v = eq + 1;
        vn -= kn + 1;
        if (sl__token_eq(p, kn, "Credential") && !(seen & 1)) {
            if (parse_credential(v, vn, a)) return -1;
            seen |= 1;
        } else if (sl__token_eq(p, kn, "SignedHeaders") && !(seen & 2)) {
            a->signed_headers = v;
            a->sh_len = vn;
            seen |= 2;
        } else if (sl__token_eq(p, kn, "Signature") && !(seen & 4)) {
            if (parse_signature(v, vn, a)) return -1;
            seen |= 4;
        } else {
            return -1;
        }
        p += n;
        if (*p == ',') p++;
    }
    return seen == 7 ? 0 : -1;
}

#define PRESIGN_EXPIRES_MAX 604800 /* seven days, as AWS */

/* A presigned request's parameters, decoded; a's strings point into it. */
struct presigned {
    char cred[2 * SL_NAME_MAX + 2 * SCOPE_PART_MAX + 32];
    char sh[1024];
    char amz[17];
    char sig[2 * SL_SHA256_LEN + 1];
    int64_t expires_s;
};

/* 1 when the query carries a presigned SigV4 (X-Amz-Algorithm), 0 when it
 * does not, -1 when it does but a parameter is missing, repeated or
 * malformed. */
static int parse_presigned(const struct sl_auth_request *rq, struct authz *a, struct presigned *p) {
    char alg[32], exp[16];
    int has = sl__query_param(rq->query, rq->query_len, "X-Amz-Algorithm", alg, sizeof alg);
    if (has <= 0) return has;
    if (strcmp(alg, "AWS4-HMAC-SHA256") != 0 ||
        sl__query_param(rq->query, rq->query_len, "X-Amz-Credential", p->cred, sizeof p->cred) != 1 ||
        sl__query_param(rq->query, rq->query_len, "X-Amz-SignedHeaders", p->sh, sizeof p->sh) != 1 ||
        sl__query_param(rq->query, rq->query_len, "X-Amz-Date", p->amz, sizeof p->amz) != 1 ||
        sl__query_param(rq->query, rq->query_len, "X-Amz-Expires", exp, sizeof exp) != 1 ||
        sl__query_param(rq->query, rq->query_len, "X-Amz-Signature", p->sig, sizeof p->sig) != 1)
        return -1;
    char *end;
    long long e = strtoll(exp, &end, 10);
    if (exp[0] < '0' || exp[0] > '9' || *end || e < 1 || e > PRESIGN_EXPIRES_MAX || strlen(p->amz) != 16 ||
        parse_credential(p->cred, strlen(p->cred), a) || parse_signature(p->sig, strlen(p->sig), a))
        return -1;
    p->expires_s = e;
    a->signed_headers = p->sh;
    a->sh_len = strlen(p->sh);
    return 1;
}

/* "Sat, 21 Nov 2026 10:00:00 GMT" to "20261121T100000Z". The zone may also
 * be written "+0000" or "-0000": botocore sends RFC 2822's "-0000". */
static int imf_to_amz(const char *s, char out[17]) {
    static const char *months = "JanFebMarAprMayJunJulAugSepOctNovDec";
    static const char *days = "MonTueWedThuFriSatSun";
    size_t n = strlen(s);
    if ((n != 29 || strcmp(s + 25, " GMT") != 0) &&
        (n != 31 || (strcmp(s + 25, " +0000") != 0 && strcmp(s + 25, " -0000") != 0)))
        return -1;
    if (s[3] != ',' || s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' || s[19] != ':' ||
        s[22] != ':')
        return -1;
    int day_ok = 0, mon = 0;
    for (int i = 0; i < 7; i++)
        day_ok |= memcmp(s, days + 3 * i, 3) == 0;
    for (int i = 0; i < 12; i++)
        if (memcmp(s + 8, months + 3 * i, 3) == 0) mon = i + 1;
    if (!day_ok || !mon) return -1;
    const int at[] = {12, 13, 14, 15, 5, 6, 17, 18, 20, 21, 23, 24};
    for (int i = 0; i < 12; i++)
        if (s[at[i]] < '0' || s[at[i]] > '9') return -1;
    memcpy(out, s + 12, 4);
    out[4] = (char)('0' + mon / 10);
    out[5] = (char)('0' + mon % 10);
    memcpy(out + 6, s + 5, 2);
    out[8] = 'T';
    memcpy(out + 9, s + 17, 2);
    memcpy(out + 11, s + 20, 2);
    memcpy(out + 13, s + 23, 2);
    out[15] = 'Z';
    out[16] = '\0';
    return 0;
}

static int amz_time(const char *s, int64_t *ms) {
    int v[6], w[6] = {4, 2, 2, 2, 2, 2}, off[6] = {0, 4, 6, 9, 11, 13};
    if (strlen(s) != 16 || s[8] != 'T' || s[15] != 'Z') return -1;
    for (int i = 0; i < 6; i++) {
        v[i] = 0;
        for (int j = 0; j < w[i]; j++) {
            char c = s[off[i] + j];
            if (c < '0' || c > '9') return -1;
            v[i] = v[i] * 10 + (c - '0');
        }
    }
    return sl__time_from_fields(v[0], v[1], v[2], v[3], v[4], v[5], 0, ms);
}

static int unreserved(unsigned char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

static void put_encoded(struct sl__sb *b, const char *s, size_t n, int keep_slash) {
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c) || (keep_slash && c == '/')) {
            sl__sb_chr(b, (char)c);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            sl__sb_put(b, e, 3);
        }
    }
}

/* botocore's _normalize_url_path for non-S3 services. */
static void uri_aws(struct sl__sb *b, const char *path, size_t n) {
    /* Where each output segment starts, so ".." can drop the last one. */
    size_t seg_start[SL_AUTH_MAX_PATH / 2 + 2];
    size_t nseg = 0;
    if (n == 0 || path[0] == '/') sl__sb_chr(b, '/');
    size_t base = b->len;
    for (size_t i = 0; i < n;) {
        size_t e = i;
        while (e < n && path[e] != '/')
            e++;
        size_t sn = e - i;
        if (sn == 2 && path[i] == '.' && path[i + 1] == '.') {
            if (nseg > 0) b->len = seg_start[--nseg];
        } else if (sn > 0 && !(sn == 1 && path[i] == '.')) {
            seg_start[nseg++] = b->len;
            if (b->len > base) sl__sb_chr(b, '/');
            put_encoded(b, path + i, sn, 0);
        }
        i = e + 1;
    }
    if (n > 0 && path[n - 1] == '/' && nseg > 0) sl__sb_chr(b, '/');
}

/* One candidate form; s is NULL when the form is not available. */
struct span {
    const char *s;
    size_t n;
};

/* Candidate i need not be tried: it is unavailable or an earlier one is the
 * same string. */
static int skip(const struct span *c, int i) {
    if (!c[i].s) return 1;
    for (int o = 0; o < i; o++)
        if (c[o].s && c[o].n == c[i].n && memcmp(c[o].s, c[i].s, c[i].n) == 0) return 1;
    return 0;
}

struct pair {
    const char *k, *v;
    size_t kn, vn;
};

static int bytes_cmp(const char *a, size_t an, const char *b, size_t bn) {
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : (an > bn) - (an < bn);
}

static int pair_cmp(const void *x, const void *y) {
    const struct pair *a = x, *b = y;
    int c = bytes_cmp(a->k, a->kn, b->k, b->kn);
    return c ? c : bytes_cmp(a->v, a->vn, b->v, b->vn);
}

static size_t split_pairs(const char *q, size_t n, struct pair *out) {
    size_t np = 0;
    for (size_t i = 0; n > 0 && i <= n;) {
        size_t e = i;
        while (e < n && q[e] != '&')
            e++;
        size_t eq = i;
        while (eq < e && q[eq] != '=')
            eq++;
        out[np].k = q + i;
        out[np].kn = eq - i;
        out[np].v = eq < e ? q + eq + 1 : q + e;
        out[np].vn = eq < e ? e - eq - 1 : 0;
        np++;
        i = e + 1;
    }
    return np;
}

static void put_pairs(struct sl__sb *b, struct pair *p, size_t np) {
    qsort(p, np, sizeof *p, pair_cmp);
    for (size_t i = 0; i < np; i++) {
        if (i) sl__sb_chr(b, '&');
        sl__sb_put(b, p[i].k, p[i].kn);
        sl__sb_chr(b, '=');
        sl__sb_put(b, p[i].v, p[i].vn);
    }
}

/* Decodes and re-encodes each pair into scratch, then sorts and joins them.
 * -1 when a parameter does not decode (that form is then not tried). */
static int query_aws(struct sl__sb *b, struct sl__sb *scratch, const struct pair *raw, struct pair *p,
                     size_t np) {
    char tmp[SL_AUTH_MAX_QUERY + 1];
    for (size_t i = 0; i < np; i++) {
        long n = sl__query_unescape(raw[i].k, raw[i].kn, tmp, sizeof tmp);
        if (n < 0) return -1;
        p[i].k = scratch->p + scratch->len;
        put_encoded(scratch, tmp, (size_t)n, 0);
        p[i].kn = (size_t)(scratch->p + scratch->len - p[i].k);
        n = sl__query_unescape(raw[i].v, raw[i].vn, tmp, sizeof tmp);
        if (n < 0) return -1;
        p[i].v = scratch->p + scratch->len;
        put_encoded(scratch, tmp, (size_t)n, 0);
        p[i].vn = (size_t)(scratch->p + scratch->len - p[i].v);
    }
    put_pairs(b, p, np);
    return 0;
}

static int header_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c && strchr("-!#$%&'*+.^_`|~", c));
}

/* Appends the canonical header lines for SignedHeaders and checks its
 * form. -1 for a malformed list, a missing host or a signed header the
 * request does not have. */
static int canonical_headers(struct sl__sb *b, const struct sl_auth_request *rq, const char *sh, size_t n) {
    const char *prev = NULL;
    size_t prev_n = 0, count = 0;
    int host = 0;
    if (n == 0 || sh[n - 1] == ';') return -1;
    for (size_t i = 0; i < n;) {
        size_t e = i;
        while (e < n && sh[e] != ';')
            e++;
        const char *name = sh + i;
        size_t nn = e - i;
        if (nn == 0 || ++count > SL_AUTH_MAX_SIGNED_HEADERS) return -1;
        for (size_t j = 0; j < nn; j++)
            if (!header_char(name[j])) return -1;
        if (prev && bytes_cmp(prev, prev_n, name, nn) >= 0) return -1;
        host |= nn == 4 && memcmp(name, "host", 4) == 0;
        sl__sb_put(b, name, nn);
        sl__sb_chr(b, ':');
        int found = 0;
        for (size_t h = 0; h < rq->n_headers; h++) {
            const char *hn = rq->headers[h].name, *v = rq->headers[h].value;
            /* the first letter, either case, rules most headers out */
            if (!hn || !v || (hn[0] | 0x20) != (name[0] | 0x20) || strlen(hn) != nn ||
                strncasecmp(hn, name, nn) != 0)
                continue;
            if (found++) sl__sb_chr(b, ',');
            /* Trim, and collapse each run of blanks to one space. */
            int space = 0, any = 0;
            const char *end = v + SL_AUTH_MAX_HEADER;
            for (; *v; v++) {
                if (v == end) return -1;
                if (*v == ' ' || *v == '\t') {
                    space = any;
                    continue;
                }
                if (space) sl__sb_chr(b, ' ');
                sl__sb_chr(b, *v);
                space = 0;
                any = 1;
            }
        }
        if (!found) return -1;
        sl__sb_chr(b, '\n');
        prev = name;
        prev_n = nn;
        i = e + 1;
    }
    return host ? 0 : -1;
}

int sl_auth_sigv4_account(const char *authorization, const char *credential, char account[SL_NAME_MAX + 1]) {
    struct authz a = {0};
    if (authorization) {
        /* Only the Credential component: verification parses the whole
         * header anyway, and this runs first on every SQS request. */
        size_t w = strcspn(authorization, " \t");
        if (!sl__token_eq(authorization, w, "AWS4-HMAC-SHA256")) return SL_EAUTH;
        const char *c = authorization + w;
        while ((c = strstr(c, "Credential=")) != NULL && c[-1] != ' ' && c[-1] != '\t' && c[-1] != ',')
            c++;
        if (!c) return SL_EAUTH;
        c += 11;
        if (parse_credential(c, strcspn(c, ", \t"), &a) != 0) return SL_EAUTH;
    } else if (!credential || parse_credential(credential, strlen(credential), &a) != 0) {
        return SL_EAUTH;
    }
    const char *colon = memchr(a.akid, ':', a.akid_len);
    size_t n = colon ? (size_t)(colon - a.akid) : a.akid_len;
    if (n == 0 || n > SL_NAME_MAX) return SL_EAUTH;
    memcpy(account, a.akid, n);
    account[n] = '\0';
    return 0;
}

/* Picks the keys an access key id allows: its account must be the ring's,
 * and a ":keyName" suffix narrows the keys to that one. */
static int select_keys(const struct authz *a, const struct sl_auth_keyring *ring,
                       const struct sl_auth_key **only) {
    const char *colon = memchr(a->akid, ':', a->akid_len);
    size_t an = colon ? (size_t)(colon - a->akid) : a->akid_len;
    *only = NULL;
    if (strlen(ring->account) != an || memcmp(ring->account, a->akid, an) != 0) return -1;
    if (!colon) return 0;
    size_t kn = a->akid_len - an - 1;
    for (size_t i = 0; i < ring->n; i++)
        if (strlen(ring->keys[i].name) == kn && memcmp(ring->keys[i].name, colon + 1, kn) == 0)
            *only = &ring->keys[i];
    return *only ? 0 : -1;
}

/* The last signing keys this thread derived: a key is the same for every
 * request of one access key, day, region and service, and deriving it is
 * four HMACs, for each key of the account that may have signed. */
#define SK_CACHE 8
static __thread struct sk_entry {
    char secret[SL_AUTH_KEY_CHARS];
    char date[9], region[SCOPE_PART_MAX + 1], service[SCOPE_PART_MAX + 1];
    unsigned char key[SL_SHA256_LEN];
    int used;
} sk_cache[SK_CACHE];
static __thread unsigned sk_next;

static int signing_key(const struct sl_auth_key *k, const struct authz *a, unsigned char out[SL_SHA256_LEN]) {
    for (int i = 0; i < SK_CACHE; i++) {
        struct sk_entry *c = &sk_cache[i];
        if (c->used && CRYPTO_memcmp(c->secret, k->secret, SL_AUTH_KEY_CHARS) == 0 &&
            strcmp(c->date, a->date) == 0 && strcmp(c->region, a->region) == 0 &&
            strcmp(c->service, a->service) == 0) {
            memcpy(out, c->key, SL_SHA256_LEN);
            return SL_OK;
        }
    }
    char secret[4 + SL_AUTH_KEY_CHARS];
    unsigned char k_date[SL_SHA256_LEN], k_region[SL_SHA256_LEN], k_service[SL_SHA256_LEN];
    memcpy(secret, "AWS4", 4);
    memcpy(secret + 4, k->secret, SL_AUTH_KEY_CHARS);
    int rc = sl__hmac(secret, sizeof secret, a->date, 8, k_date);
    if (rc == SL_OK) rc = sl__hmac(k_date, SL_SHA256_LEN, a->region, strlen(a->region), k_region);
    if (rc == SL_OK) rc = sl__hmac(k_region, SL_SHA256_LEN, a->service, strlen(a->service), k_service);
    if (rc == SL_OK) rc = sl__hmac(k_service, SL_SHA256_LEN, "aws4_request", 12, out);
    if (rc == SL_OK) {
        struct sk_entry *c = &sk_cache[sk_next++ % SK_CACHE];
        memcpy(c->secret, k->secret, SL_AUTH_KEY_CHARS);
        memcpy(c->date, a->date, sizeof c->date);
        snprintf(c->region, sizeof c->region, "%s", a->region);
        snprintf(c->service, sizeof c->service, "%s", a->service);
        memcpy(c->key, out, SL_SHA256_LEN);
        c->used = 1;
    }
    OPENSSL_cleanse(secret, sizeof secret);
    OPENSSL_cleanse(k_date, sizeof k_date);
    OPENSSL_cleanse(k_region, sizeof k_region);
    OPENSSL_cleanse(k_service, sizeof k_service);
    return rc;
}

int sl_auth_verify_sigv4(const struct sl_auth_request *rq, const struct sl_auth_keyring *ring,
                         int64_t skew_ms, struct sl_auth_cred *out) {
    const char *h, *v;
    struct authz a = {0};
    struct presigned ps;
    char amz[17];
    int64_t t;
    if (skew_ms <= 0) skew_ms = SL_AUTH_DEFAULT_SKEW_MS;
    size_t nh = sl__header(rq, "authorization", &h);
    int presigned = parse_presigned(rq, &a, &ps);
    if (presigned < 0 || nh > 1 || (nh == 1) == (presigned == 1)) return SL_EAUTH; /* one form */
    if (nh == 1 && parse_authorization(h, &a) != 0) return SL_EAUTH;

    if (presigned) {
        memcpy(amz, ps.amz, 17);
    } else {
        size_t nd = sl__header(rq, "x-amz-date", &v);
        if (nd > 1) return SL_EAUTH;
        if (nd == 1) {
            if (strlen(v) != 16) return SL_EAUTH;
            memcpy(amz, v, 17);
        } else if (sl__header(rq, "date", &v) != 1 || imf_to_amz(v, amz) != 0) {
            return SL_EAUTH;
        }
    }
    if (amz_time(amz, &t) != 0 || memcmp(amz, a.date, 8) != 0) return SL_EAUTH;
    /* A presigned URL is good from its time (less the skew) until it expires. */
    int64_t until = presigned ? t + ps.expires_s * 1000 : t + skew_ms;
    if (t > rq->now_ms + skew_ms || rq->now_ms > until) return SL_EAUTH;

    const struct sl_auth_key *only;
    if (select_keys(&a, ring, &only) != 0) return SL_EAUTH;

    unsigned char body_hash[SL_SHA256_LEN];
    char payload[2 * SL_SHA256_LEN + 1];
    int rc = sl__sha256(rq->body ? rq->body : "", rq->body ? rq->body_len : 0, body_hash);
    if (rc != SL_OK) return rc;
    sl__hex(body_hash, sizeof body_hash, payload);
    size_t nc = sl__header(rq, "x-amz-content-sha256", &v);
    if (nc > 1 || (nc == 1 && strcmp(v, payload) != 0)) return SL_EAUTH;

    if (!rq->method || strlen(rq->method) > 16 || rq->path_len > SL_AUTH_MAX_PATH ||
        rq->query_len > SL_AUTH_MAX_QUERY || (rq->query_len && !rq->query))
        return SL_EAUTH;

    /* One allocation, sized from the bounded inputs, holds every form. */
    size_t P = rq->path_len, Q = rq->query_len;
    size_t np_max = Q ? 1 : 0;
    for (size_t i = 0; i < Q; i++)
        np_max += rq->query[i] == '&';
    size_t H = 0;
    for (size_t i = 0; i < rq->n_headers; i++)
        if (rq->headers[i].name && rq->headers[i].value)
            H += strlen(rq->headers[i].name) + strlen(rq->headers[i].value) + 3;
    H = H + a.sh_len + 2;
    if (H > HEADERS_MAX) H = HEADERS_MAX;
    size_t uri_cap = 3 * P + 2, q_cap = 3 * Q + 2 * np_max + 2;
    size_t cr_cap = 32 + uri_cap + q_cap + H + a.sh_len + 2 * SL_SHA256_LEN;
    size_t total =
        uri_cap + 2 * q_cap + 3 * Q + 2 * np_max + H + cr_cap + Q + 1 + 2 * np_max * sizeof(struct pair);
    char *mem = malloc(total);
    if (!mem) return SL_ENOMEM;
    struct pair *raw_pairs = (struct pair *)mem, *pairs = raw_pairs + np_max;
    char *p = (char *)(pairs + np_max);
    struct sl__sb uri = {p, 0, uri_cap, 0};
    struct sl__sb qa = {uri.p + uri_cap, 0, q_cap, 0};
    struct sl__sb qs = {qa.p + q_cap, 0, q_cap, 0};
    struct sl__sb scratch = {qs.p + q_cap, 0, 3 * Q + 2 * np_max, 0};
    struct sl__sb hd = {scratch.p + scratch.cap, 0, H, 0};
    struct sl__sb cr = {hd.p + H, 0, cr_cap, 0};

    rc = SL_EAUTH;
    if (canonical_headers(&hd, rq, a.signed_headers, a.sh_len) != 0 || hd.err) goto done;
    uri_aws(&uri, rq->path, P);
    size_t np = split_pairs(rq->query, Q, raw_pairs);
    /* A presigned query is signed without its signature; "as sent" is then
     * the rest in its order (it was appended last). */
    const char *qraw = Q ? rq->query : "";
    size_t qraw_len = Q;
    if (presigned) {
        size_t k = 0;
        for (size_t i = 0; i < np; i++)
            if (!sl__token_eq(raw_pairs[i].k, raw_pairs[i].kn, "X-Amz-Signature"))
                raw_pairs[k++] = raw_pairs[i];
        np = k;
        memcpy(pairs, raw_pairs, np * sizeof *pairs);
        struct sl__sb rest = {cr.p + cr_cap, 0, Q + 1, 0};
        for (size_t i = 0; i < np; i++) {
            if (i) sl__sb_chr(&rest, '&');
            sl__sb_put(&rest, raw_pairs[i].k, raw_pairs[i].kn);
            if (raw_pairs[i].v > raw_pairs[i].k + raw_pairs[i].kn) {
                sl__sb_chr(&rest, '=');
                sl__sb_put(&rest, raw_pairs[i].v, raw_pairs[i].vn);
            }
        }
        qraw = rest.p;
        qraw_len = rest.len;
    }
    int have_qa = query_aws(&qa, &scratch, raw_pairs, pairs, np) == 0;
    memcpy(pairs, raw_pairs, np * sizeof *pairs);
    put_pairs(&qs, pairs, np);
    if (uri.err || qa.err || qs.err || scratch.err) {
        rc = SL_EINTERNAL;
        goto done;
    }

    const struct span uris[2] = {{uri.p, uri.len}, {P ? rq->path : "/", P ? P : 1}};
    const struct span queries[3] = {{have_qa ? qa.p : NULL, qa.len}, {qs.p, qs.len}, {qraw, qraw_len}};

    /* The string to sign of every distinct candidate form. */
    char sts[MAX_CANDIDATES][320];
    size_t sts_len[MAX_CANDIDATES], nsts = 0;
    for (int u = 0; u < 2; u++) {
        if (skip(uris, u)) continue;
        for (int q = 0; q < 3; q++) {
            if (skip(queries, q)) continue;
            cr.len = 0;
            sl__sb_str(&cr, rq->method);
            sl__sb_chr(&cr, '\n');
            sl__sb_put(&cr, uris[u].s, uris[u].n);
            sl__sb_chr(&cr, '\n');
            sl__sb_put(&cr, queries[q].s, queries[q].n);
            sl__sb_chr(&cr, '\n');
            sl__sb_put(&cr, hd.p, hd.len);
            sl__sb_chr(&cr, '\n');
            sl__sb_put(&cr, a.signed_headers, a.sh_len);
            sl__sb_chr(&cr, '\n');
            sl__sb_str(&cr, payload);
            unsigned char crh[SL_SHA256_LEN];
            char crhex[2 * SL_SHA256_LEN + 1];
            if (cr.err) {
                rc = SL_EINTERNAL;
                goto done;
            }
            if ((rc = sl__sha256(cr.p, cr.len, crh)) != SL_OK) goto done;
            sl__hex(crh, sizeof crh, crhex);
            /* region and service are at most SCOPE_PART_MAX each: it fits */
            struct sl__sb st = {sts[nsts], 0, sizeof sts[nsts], 0};
            sl__sb_put(&st, "AWS4-HMAC-SHA256\n", 17);
            sl__sb_put(&st, amz, 16);
            sl__sb_chr(&st, '\n');
            sl__sb_put(&st, a.date, 8);
            sl__sb_chr(&st, '/');
            sl__sb_str(&st, a.region);
            sl__sb_chr(&st, '/');
            sl__sb_str(&st, a.service);
            sl__sb_put(&st, "/aws4_request\n", 14);
            sl__sb_put(&st, crhex, 2 * SL_SHA256_LEN);
            if (st.err) {
                rc = SL_EAUTH;
                goto done;
            }
            sts_len[nsts++] = st.len;
        }
    }

    const struct sl_auth_key *match = NULL;
    for (size_t i = 0; i < ring->n; i++) {
        const struct sl_auth_key *k = &ring->keys[i];
        if (only && k != only) continue;
        unsigned char ks[SL_SHA256_LEN], mac[SL_SHA256_LEN];
        if ((rc = signing_key(k, &a, ks)) != SL_OK) goto done;
        for (size_t c = 0; c < nsts; c++) {
            if ((rc = sl__hmac(ks, sizeof ks, sts[c], sts_len[c], mac)) != SL_OK) goto done;
            if (CRYPTO_memcmp(mac, a.sig, sizeof mac) == 0 && !match) match = k;
        }
        OPENSSL_cleanse(ks, sizeof ks);
    }
    rc = SL_EAUTH;
    if (match) {
        memset(out, 0, sizeof *out);
        out->scheme = SL_AUTH_SIGV4;
        out->levels = SL_LEVEL_ALL;
        strcpy(out->key_name, match->name);
        strcpy(out->region, a.region);
        strcpy(out->service, a.service);
        rc = SL_OK;
    }
done:
    free(mem);
    return rc;
}

/* --- Signing (client side: the CLI, tests) ------------------------------ */

static int name_cmp(const void *x, const void *y) {
    return strcmp(*(char *const *)x, *(char *const *)y);
}

size_t sl_auth_amz_date_format(int64_t ms, char out[17]) {
    char iso[32];
    sl_auth_time_format(ms - ms % 1000, iso); /* "2026-11-21T10:00:00Z" */
    snprintf(out, 17, "%.4s%.2s%.2sT%.2s%.2s%.2sZ", iso, iso + 5, iso + 8, iso + 11, iso + 14, iso + 17);
    return 16;
}

/* Signs with the forms AWS defines and botocore uses for services other than
 * S3 (see the top of this file): the "aws" canonical URI and query, and every
 * header of rq signed. */
int sl_auth_sigv4_sign(const struct sl_auth_request *rq, const struct sl_auth_key *key, const char *akid,
                       const char *region, const char *service, char *out, size_t cap) {
    struct authz a = {0};
    const char *amz;
    if (!rq->method || strlen(rq->method) > 16 || rq->path_len > SL_AUTH_MAX_PATH ||
        rq->query_len > SL_AUTH_MAX_QUERY || (rq->query_len && !rq->query) ||
        rq->n_headers > SL_AUTH_MAX_SIGNED_HEADERS || sl__header(rq, "x-amz-date", &amz) != 1 ||
        strlen(amz) != 16 || copy_part(region, strlen(region), a.region, sizeof a.region) ||
        copy_part(service, strlen(service), a.service, sizeof a.service))
        return SL_EINVAL;
    memcpy(a.date, amz, 8);

    /* SignedHeaders: the lowercase names, sorted, each once. */
    char names[SL_AUTH_MAX_SIGNED_HEADERS][64], *sorted[SL_AUTH_MAX_SIGNED_HEADERS];
    size_t nn = 0;
    for (size_t i = 0; i < rq->n_headers; i++) {
        size_t l = strlen(rq->headers[i].name);
        if (l == 0 || l >= sizeof names[0]) return SL_EINVAL;
        for (size_t j = 0; j <= l; j++)
            names[nn][j] = (char)tolower((unsigned char)rq->headers[i].name[j]);
        sorted[nn] = names[nn];
        nn++;
    }
    qsort(sorted, nn, sizeof *sorted, name_cmp);
    char sh[SL_AUTH_MAX_SIGNED_HEADERS * 65];
    struct sl__sb shb = {sh, 0, sizeof sh - 1, 0};
    for (size_t i = 0; i < nn; i++) {
        if (i && strcmp(sorted[i], sorted[i - 1]) == 0) continue;
        if (shb.len) sl__sb_chr(&shb, ';');
        sl__sb_str(&shb, sorted[i]);
    }
    sh[shb.len] = '\0';

    size_t P = rq->path_len, Q = rq->query_len, np_max = Q ? 1 : 0, H = 2;
    for (size_t i = 0; i < Q; i++)
        np_max += rq->query[i] == '&';
    for (size_t i = 0; i < rq->n_headers; i++)
        H += strlen(rq->headers[i].name) + strlen(rq->headers[i].value) + 3;
    size_t uri_cap = 3 * P + 2, q_cap = 3 * Q + 2 * np_max + 2, sc_cap = 3 * Q + 2 * np_max;
    size_t cr_cap = 32 + uri_cap + q_cap + H + shb.len + 2 * SL_SHA256_LEN;
    char *mem = malloc(2 * np_max * sizeof(struct pair) + uri_cap + q_cap + sc_cap + H + cr_cap + 1);
    if (!mem) return SL_ENOMEM;
    struct pair *raw_pairs = (struct pair *)mem, *pairs = raw_pairs + np_max;
    struct sl__sb uri = {(char *)(pairs + np_max), 0, uri_cap, 0};
    struct sl__sb qa = {uri.p + uri_cap, 0, q_cap, 0};
    struct sl__sb scratch = {qa.p + q_cap, 0, sc_cap, 0};
    struct sl__sb hd = {scratch.p + sc_cap, 0, H, 0};
    struct sl__sb cr = {hd.p + H, 0, cr_cap, 0};

    unsigned char hash[SL_SHA256_LEN], ks[SL_SHA256_LEN], mac[SL_SHA256_LEN];
    char payload[2 * SL_SHA256_LEN + 1], crhex[2 * SL_SHA256_LEN + 1], sig[2 * SL_SHA256_LEN + 1];
    int rc = SL_EINVAL;
    if (canonical_headers(&hd, rq, sh, shb.len) != 0 || hd.err || shb.err) goto done;
    uri_aws(&uri, rq->path, P);
    size_t np = split_pairs(rq->query, Q, raw_pairs);
    if (query_aws(&qa, &scratch, raw_pairs, pairs, np) != 0 || uri.err || qa.err || scratch.err) goto done;
    if ((rc = sl__sha256(rq->body ? rq->body : "", rq->body ? rq->body_len : 0, hash)) != SL_OK) goto done;
    sl__hex(hash, sizeof hash, payload);
    sl__sb_str(&cr, rq->method);
    sl__sb_chr(&cr, '\n');
    sl__sb_put(&cr, uri.p, uri.len);
    sl__sb_chr(&cr, '\n');
    sl__sb_put(&cr, qa.p, qa.len);
    sl__sb_chr(&cr, '\n');
    sl__sb_put(&cr, hd.p, hd.len);
    sl__sb_chr(&cr, '\n');
    sl__sb_put(&cr, sh, shb.len);
    sl__sb_chr(&cr, '\n');
    sl__sb_str(&cr, payload);
    rc = SL_EINTERNAL;
    if (cr.err) goto done;
    if ((rc = sl__sha256(cr.p, cr.len, hash)) != SL_OK) goto done;
    sl__hex(hash, sizeof hash, crhex);
    char sts[320];
    int n = snprintf(sts, sizeof sts, "AWS4-HMAC-SHA256\n%s\n%s/%s/%s/aws4_request\n%s", amz, a.date,
                     a.region, a.service, crhex);
    rc = SL_EINVAL;
    if (n < 0 || (size_t)n >= sizeof sts) goto done;
    if ((rc = signing_key(key, &a, ks)) != SL_OK) goto done;
    rc = sl__hmac(ks, sizeof ks, sts, (size_t)n, mac);
    OPENSSL_cleanse(ks, sizeof ks);
    if (rc != SL_OK) goto done;
    sl__hex(mac, sizeof mac, sig);
    n = snprintf(out, cap,
                 "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, Signature=%s", akid,
                 a.date, a.region, a.service, sh, sig);
    rc = n < 0 || (size_t)n >= cap ? SL_EINVAL : SL_OK;
done:
    free(mem);
    return rc;
}
