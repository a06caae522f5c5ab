/* url.c: signed URLs, the query parameters auth, q, st, et and sig.
 *
 * String to sign: the lines below joined by "\n", no trailing newline, a
 * line left out when its parameter is absent:
 *
 *     <account>
 *     <auth>              the levels exactly as in the URL ("pr" and "rp"
 *                         grant the same set but sign differently)
 *     startTime:<st>
 *     endTime:<et>
 *     q:<q>
 *
 * Values are the decoded query parameters (%HH and '+' decoded, as the HTTP
 * layer decodes them). st and et are ISO-8601 times like the request-time
 * header (see time.c); CassieQ uses ISO times here too, and writes them with
 * their colons as they are ("st=2026-12-04T11:49:55Z"), which is how they are
 * written here: CassieQ's client splits a URL's query and encodes each value
 * again, so a "%3A" written here reached the server as "%253A". A time that
 * still holds a '%' after one decoding (such a URL, made by an older Sluice)
 * is decoded once more, and a space in it was a '+' of an offset
 * ("+01:00") that the query's form encoding turned into a space; the string
 * to sign holds the time so restored. The URL is valid
 * from st inclusive to et exclusive. sig = base64url without padding of
 * HMAC-SHA256(decoded key, string), checked against every key of the
 * account, so the URL need not name its key. */
#include "auth_int.h"

#define TIME_MAX 40

static int string_to_sign(struct sl__sb *b, const char *account, const char *auth, const char *st,
                          const char *et, const char *q) {
    sl__sb_str(b, account);
    sl__sb_chr(b, '\n');
    sl__sb_str(b, auth);
    if (st) {
        sl__sb_str(b, "\nstartTime:");
        sl__sb_str(b, st);
    }
    if (et) {
        sl__sb_str(b, "\nendTime:");
        sl__sb_str(b, et);
    }
    if (q) {
        sl__sb_str(b, "\nq:");
        sl__sb_str(b, q);
    }
    return b->err ? SL_EINTERNAL : SL_OK;
}

/* A time as the URL carries it: ':' is legal in a query (RFC 3986), and
 * what CassieQ writes; everything else in it is unreserved. */
static void put_time_param(struct sl__sb *b, const char *name, const char *t) {
    sl__sb_str(b, name);
    sl__sb_str(b, t);
}

/* Restores a time parameter decoded once (see the top of the file). */
static int time_param(char *v, size_t cap) {
    if (strchr(v, '%')) {
        char once[TIME_MAX];
        long n = sl__query_unescape(v, strlen(v), once, sizeof once);
        if (n < 0 || (size_t)n >= cap) return -1;
        memcpy(v, once, (size_t)n + 1);
    }
    for (char *p = v; *p; p++)
        if (*p == ' ') *p = '+';
    return 0;
}

int sl_auth_url_sign(const struct sl_auth_keyring *ring, const char *key_name, unsigned levels,
                     const char *queue, int64_t st_ms, int64_t et_ms, char *out, size_t cap) {
    char auth[8], st[32], et[32];
    if (!key_name) key_name = "primary";
    if (levels == 0 || (levels & ~(unsigned)SL_LEVEL_ALL)) return SL_EINVAL;
    if (queue && !sl_name_valid(queue)) return SL_EINVAL;
    if (st_ms >= 0 && sl_auth_time_format(st_ms, st) == 0) return SL_EINVAL;
    if (et_ms >= 0 && sl_auth_time_format(et_ms, et) == 0) return SL_EINVAL;
    if (st_ms >= 0 && et_ms >= 0 && et_ms <= st_ms) return SL_EINVAL;
    const struct sl_auth_key *key = NULL;
    for (size_t i = 0; i < ring->n && !key; i++)
        if (strcmp(ring->keys[i].name, key_name) == 0) key = &ring->keys[i];
    if (!key) return SL_ENOTFOUND;
    sl_auth_levels_format(levels, auth);

    char buf[SL_NAME_MAX * 2 + 2 * TIME_MAX + 64];
    struct sl__sb b = {buf, 0, sizeof buf, 0};
    int rc = string_to_sign(&b, ring->account, auth, st_ms >= 0 ? st : NULL, et_ms >= 0 ? et : NULL, queue);
    unsigned char mac[SL_SHA256_LEN];
    if (rc == SL_OK) rc = sl__hmac(key->bytes, SL_AUTH_KEY_BYTES, buf, b.len, mac);
    if (rc != SL_OK) return rc;
    char sig[44];
    sl_b64url_encode(mac, sizeof mac, sig);

    struct sl__sb o = {out, 0, cap ? cap - 1 : 0, 0};
    sl__sb_str(&o, "auth=");
    sl__sb_str(&o, auth);
    if (queue) {
        sl__sb_str(&o, "&q=");
        sl__sb_str(&o, queue);
    }
    if (st_ms >= 0) put_time_param(&o, "&st=", st);
    if (et_ms >= 0) put_time_param(&o, "&et=", et);
    sl__sb_str(&o, "&sig=");
    sl__sb_str(&o, sig);
    if (o.err || cap == 0) return SL_EINVAL;
    out[o.len] = '\0';
    return SL_OK;
}

/* Reads one optional parameter into buf; *v is NULL when it is absent. A
 * repeated or undecodable parameter fails rather than picking one. */
static int param(const struct sl_auth_request *rq, const char *name, char *buf, size_t cap, const char **v) {
    int r = sl__query_param(rq->query, rq->query_len, name, buf, cap);
    *v = r == 1 ? buf : NULL;
    return r < 0 ? -1 : 0;
}

int sl_auth_verify_url(const struct sl_auth_request *rq, const struct sl_auth_keyring *ring,
                       struct sl_auth_cred *out) {
    char auth_b[16], q_b[SL_NAME_MAX + 1], st_b[TIME_MAX], et_b[TIME_MAX], sig_b[48];
    const char *auth, *q, *st, *et, *sig;
    if (!rq->query || rq->query_len > SL_AUTH_MAX_QUERY) return SL_EAUTH;
    if (param(rq, "auth", auth_b, sizeof auth_b, &auth) || param(rq, "q", q_b, sizeof q_b, &q) ||
        param(rq, "st", st_b, sizeof st_b, &st) || param(rq, "et", et_b, sizeof et_b, &et) ||
        param(rq, "sig", sig_b, sizeof sig_b, &sig))
        return SL_EAUTH;
    if ((st && time_param(st_b, sizeof st_b)) || (et && time_param(et_b, sizeof et_b))) return SL_EAUTH;
    unsigned levels;
    if (!auth || !sig || sl_auth_levels_parse(auth, strlen(auth), &levels) != SL_OK) return SL_EAUTH;
    if (q && !sl_name_valid(q)) return SL_EAUTH;
    int64_t st_ms, et_ms;
    if (st && (sl_auth_time_parse(st, strlen(st), &st_ms) != SL_OK || rq->now_ms < st_ms)) return SL_EAUTH;
    if (et && (sl_auth_time_parse(et, strlen(et), &et_ms) != SL_OK || rq->now_ms >= et_ms)) return SL_EAUTH;
    unsigned char want[SL_SHA256_LEN];
    if (strlen(sig) != 43 || sl_b64url_decode(sig, 43, want, sizeof want) != SL_SHA256_LEN) return SL_EAUTH;

    char buf[SL_NAME_MAX * 2 + 2 * TIME_MAX + 64];
    struct sl__sb b = {buf, 0, sizeof buf, 0};
    int rc = string_to_sign(&b, ring->account, auth, st, et, q);
    if (rc != SL_OK) return rc;
    const struct sl_auth_key *match;
    rc = sl__hmac_match(ring, buf, b.len, want, &match);
    if (rc != SL_OK) return rc;
    if (!match) return SL_EAUTH;
    memset(out, 0, sizeof *out);
    out->scheme = SL_AUTH_URL;
    out->levels = levels;
    strcpy(out->key_name, match->name);
    if (q) strcpy(out->queue, q);
    return SL_OK;
}
