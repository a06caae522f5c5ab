/* admin.c: the admin API of API.md ("Admin API"), served by its own
 * sl_http server on the admin port (127.0.0.1 by default).
 *
 * Every route but /openapi.json needs "Authorization: Bearer <token>", the
 * token configured at start. The comparison hashes both strings with SHA-256
 * and compares the digests with CRYPTO_memcmp, so its time depends on
 * neither the token's content nor its length.
 *
 * Choices where API.md is silent (also in openapi-admin.json):
 *  - GET /accounts answers [{"accountName", "createdAt"}] sorted by name.
 *  - GET /accounts/{a} answers {"accountName", "createdAt", "keys": {name:
 *    key}}: the admin sees the keys, as the POST that made them did.
 *  - DELETE /accounts/{a} answers {"accountName", "deleted": true,
 *    "queuesDeleted": n}; the queues are marked deleted before it answers
 *    and their data goes in the background.
 *  - POST /accounts/{a}/keys with a name the account already has is 409
 *    KeyAlreadyExists: to rotate a key, delete it and create it again (or
 *    move clients to the other of primary and secondary first). An account
 *    has at most SL_ACCT_MAX_KEYS keys (400 TooManyKeys beyond).
 *  - Signed URLs: levels is required; startTime and endTime are ISO-8601
 *    (Z or an offset like +01:00); the URL writes them in UTC with their colons;
 *    endTime must be after startTime; keyName defaults to "primary". */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "api.h"
#include "req.h"

#define BASE "/admin/api/v1/accounts"
#define BODY_MAX 16384
#define TOKEN_MAX 1024

/* A route of another API served here (sl_api_admin_delegate). */
struct delegate {
    sl_admin *a;
    sl_http_fn fn;
    void *ctx;
    char pattern[256];
};

struct sl_admin {
    sl_admin_config cfg;
    unsigned char token_hash[32];
    sl_http_route *routes;
    size_t nroutes;
    void **dl; /* the blocks of delegates, one per sl_api_admin_delegate */
    size_t ndl;
};

static void sha256(const char *s, size_t n, unsigned char out[32]) {
    unsigned int len = 0;
    EVP_Digest(s, n, out, &len, EVP_sha256(), NULL);
}

/* 0 when the request carries the admin token, else answers 401. */
static int admin_auth(sl_admin *a, sl_http_req *r) {
    const char *h = sl_http_header(r, "Authorization");
    unsigned char got[32];
    int ok = 0;
    if (h && strncasecmp(h, "Bearer ", 7) == 0) {
        const char *t = h + 7;
        t += strspn(t, " \t");
        size_t n = strlen(t);
        if (n > 0 && n <= TOKEN_MAX) {
            sha256(t, n, got);
            ok = CRYPTO_memcmp(got, a->token_hash, sizeof got) == 0;
        }
    }
    if (ok) return 0;
    sl_http_error(r, 401, "AuthenticationFailed", "%s",
                  h ? "the admin token is not valid" : "Authorization: Bearer <admin token> is required");
    sl_http_add_header(r, "WWW-Authenticate", "Bearer realm=\"sluice-admin\"");
    return -1;
}

static int account_not_found(sl_http_req *r, const char *account) {
    return sl_http_error(r, 404, "AccountNotFound", "account '%s' does not exist", account);
}

/* The auth check and the account name of the path. Returns the name, or
 * NULL after answering. */
static const char *begin(sl_admin *a, sl_http_req *r) {
    if (admin_auth(a, r)) return NULL;
    const char *account = sl_http_param(r, "a");
    if (account && !sl_name_valid(account)) {
        sl_http_error(r, 400, "InvalidAccountName", "account names match [A-Za-z0-9_.-]{1,80}");
        return NULL;
    }
    return account ? account : "";
}

static json_t *keys_object(const struct sl_auth_key *k, size_t n) {
    json_t *o = json_object();
    for (size_t i = 0; o && i < n; i++)
        json_object_set_new(o, k[i].name, json_string(k[i].secret));
    return o;
}

/* --- Routes ------------------------------------------------------------- */

/* GET /metrics: the Prometheus text format, from what every layer counts
 * (cfg.metrics writes it). It reads no store, so it runs on the event loop. */
static int h_metrics(sl_http_req *r, void *ctx) {
    sl_admin *a = ctx;
    if (admin_auth(a, r)) return SL_HTTP_DONE;
    if (!a->cfg.metrics) return sl_http_error(r, 404, "NotFound", "this server keeps no metrics");
    sl_text t = {0};
    a->cfg.metrics(a->cfg.metrics_ctx, &t);
    if (t.oom) {
        free(t.p);
        return sl_http_error(r, 503, "ServiceUnavailable", "out of memory");
    }
    sl_http_respond(r, 200, "text/plain; version=0.0.4; charset=utf-8", t.p ? t.p : "", t.n);
    free(t.p);
    return SL_HTTP_DONE;
}

static int h_openapi(sl_http_req *r, void *ctx) {
    (void)ctx;
    return sl_http_respond(r, 200, "application/json", sl_openapi_admin_json, sl_openapi_admin_json_len);
}

/* The body of POST /accounts: {"accountName": "shop"}, or the bare JSON
 * string "shop" that CassieQ's admin API takes. A new reference to the
 * object or the string, or NULL after answering 400. */
static json_t *create_body(sl_http_req *r) {
    size_t len;
    const char *b = sl_http_body(r, &len);
    size_t i = strspn(b, " \t\r\n");
    if (i == len || b[i] != '"') return sl_api_body_object(r, 0);
    json_t *j = json_loadb(b, len, JSON_DECODE_ANY, NULL);
    if (json_is_string(j)) return j;
    json_decref(j);
    sl_http_error(r, 400, "InvalidJson",
                  "the body must be a JSON object or a JSON string (the account's name)");
    return NULL;
}

static int h_create(sl_http_req *r, void *ctx) {
    sl_admin *a = ctx;
    if (!begin(a, r)) return SL_HTTP_DONE;
    json_t *b = create_body(r);
    if (!b) return SL_HTTP_DONE;
    if (json_is_string(b)) { /* CassieQ's form */
        json_t *o = json_pack("{s:O}", "accountName", b);
        json_decref(b);
        if (!(b = o)) return sl_api_unavailable(r, 503, "ServiceUnavailable", "out of memory");
    }
    const char *name;
    char account[SL_NAME_MAX + 1];
    int have = sl_api_field_str(r, b, "accountName", &name);
    if (have == 0 || (have == 1 && !sl_api_name_ok(name))) {
        json_decref(b);
        return sl_http_error(r, 400, "InvalidAccountName",
                             "field 'accountName' is required and must match [A-Za-z0-9_.-]{1,80}, "
                             "except . and ..");
    }
    if (have < 0) {
        json_decref(b);
        return SL_HTTP_DONE;
    }
    if (sl_api_account_reserved(name)) {
        int done = sl_http_error(r, 400, "InvalidAccountName",
                                 "'%s' is reserved: api, admin, health, metrics and ui name routes", name);
        json_decref(b);
        return done;
    }
    snprintf(account, sizeof account, "%s", name);
    json_decref(b);
    struct sl_auth_key keys[2];
    int rc = sl_acct_create(a->cfg.acct, account, keys);
    if (rc == SL_EEXISTS)
        return sl_http_error(r, 409, "AccountAlreadyExists", "account '%s' already exists", account);
    if (rc) return sl_api_fail(r, rc, NULL, NULL);
    json_t *j = json_pack("{s:s,s:o}", "accountName", account, "keys", keys_object(keys, 2));
    OPENSSL_cleanse(keys, sizeof keys);
    return sl_api_json(r, 201, j);
}

static int h_list(sl_http_req *r, void *ctx) {
    sl_admin *a = ctx;
    if (!begin(a, r)) return SL_HTTP_DONE;
    char(*names)[SL_NAME_MAX + 1];
    int64_t *created;
    size_t n;
    int rc = sl_acct_list(a->cfg.acct, &names, &created, &n);
    if (rc) return sl_api_fail(r, rc, NULL, NULL);
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        char at[32];
        sl_iso_time(created[i], at);
        json_array_append_new(arr, json_pack("{s:s,s:s}", "accountName", names[i], "createdAt", at));
    }
    free(names);
    free(created);
    return sl_api_json(r, 200, arr);
}

static int h_get(sl_http_req *r, void *ctx) {
    sl_admin *a = ctx;
    const char *account = begin(a, r);
    if (!account) return SL_HTTP_DONE;
    struct sl_auth_key keys[SL_ACCT_MAX_KEYS];
    int64_t created[SL_ACCT_MAX_KEYS];
    size_t n;
    int rc = sl_acct_keys_read(a->cfg.acct, account, keys, created, SL_ACCT_MAX_KEYS, &n);
    if (rc == SL_ENOTFOUND) return account_not_found(r, account);
    if (rc) return sl_api_fail(r, rc, NULL, NULL);
    json_t *j = json_pack("{s:s,s:o}", "accountName", account, "keys", keys_object(keys, n));
    OPENSSL_cleanse(keys, sizeof keys);
    return sl_api_json(r, 200, j);
}

/* Deletes an account and everything in it: its keys first (requests stop
 * authenticating at once on this node), then each of its queues is marked
 * deleted (the engine removes their data in the background) and its event
 * log forgotten (its subscriptions deleted, its events gone from reads)
 * while the account still exists, then the account. A retry after a failure
 * finishes the job. *queues counts the queues deleted. */
static int delete_account(sl_admin *a, const char *account, size_t *queues) {
    int exists;
    int rc = sl_acct_delete_begin(a->cfg.acct, account, &exists);
    if (rc || !exists) return rc ? rc : sl_acct_delete_finish(a->cfg.acct, account, 0);
    sl_queue_info *qs = NULL;
    size_t n = 0;
    rc = sl_queue_list(a->cfg.engine, account, &qs, &n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        int drc = sl_queue_delete(a->cfg.engine, account, qs[i].opts.name);
        if (drc == 0)
            (*queues)++;
        else if (drc != SL_ENOTFOUND)
            rc = drc;
    }
    free(qs);
    if (rc && rc != SL_ENOTFOUND) return rc;
    if (a->cfg.log && (rc = sl_evlog_forget(a->cfg.log, account)) != 0) return rc;
    return sl_acct_delete_finish(a->cfg.acct, account, 1);
}

static int h_delete(sl_http_req *r, void *ctx) {
    sl_admin *a = ctx;
    const char *account = begin(a, r);
    if (!account) return SL_HTTP_DONE;
    size_t queues = 0;
    int rc = delete_account(a, account, &queues);
    if (rc == SL_ENOTFOUND) return account_not_found(r, account);
    if (rc) return sl_api_fail(r, rc, NULL, NULL);
    return sl_api_json(r, 200,
                       json_pack("{s:s,s:b,s:I}", "accountName", account, "deleted", 1, "queuesDeleted",
                                 (json_int_t)queues));
}

static int h_key_create(sl_http_req *r, void *ctx) {
    sl_admin *a = ctx;
    const char *account = begin(a, r);
    if (!account) return SL_HTTP_DONE;
    json_t *b = sl_api_body_object(r, 0);
    if (!b) return SL_HTTP_DONE;
    const char *name;
    char key_name[SL_NAME_MAX + 1];
    int have = sl_api_field_str(r, b, "keyName", &name);
    if (have == 0 || (have == 1 && !sl_api_name_ok(name))) {
        json_decref(b);
        return sl_http_error(
            r, 400, "InvalidKeyName",
            "field 'keyName' is required and must match [A-Za-z0-9_.-]{1,80}, except . and ..");
    }
    if (have < 0) {
        json_decref(b);
        return SL_HTTP_DONE;
    }
    snprintf(key_name, sizeof key_name, "%s", name);
    json_decref(b);
    struct sl_auth_key k;
    int rc = sl_acct_key_create(a->cfg.acct, account, key_name, &k);
    if (rc == SL_ENOTFOUND) return account_not_found(r, account);
    if (rc == SL_EEXISTS)
        return sl_http_error(r, 409, "KeyAlreadyExists", "account '%s' already has a key '%s'", account,
                             key_name);
    if (rc == SL_ETOOBIG)
        return sl_http_error(r, 400, "TooManyKeys", "an account has at most %d keys", SL_ACCT_MAX_KEYS);
    if (rc) return sl_api_fail(r, rc, NULL, NULL);
    json_t *j = json_pack("{s:s,s:s}", "keyName", key_name, "key", k.secret);
    OPENSSL_cleanse(&k, sizeof k);
    return sl_api_json(r, 201, j);
}

static int h_key_delete(sl_http_req *r, void *ctx) {
    sl_admin *a = ctx;
    const char *account = begin(a, r);
    if (!account) return SL_HTTP_DONE;
    const char *key_name = sl_http_param(r, "k");
    int rc = sl_acct_key_delete(a->cfg.acct, account, key_name);
    if (rc == SL_ENOTFOUND) {
        if (sl_acct_exists(a->cfg.acct, account) == SL_ENOTFOUND) return account_not_found(r, account);
        return sl_http_error(r, 404, "KeyNotFound", "account '%s' has no key '%s'", account, key_name);
    }
    if (rc) return sl_api_fail(r, rc, NULL, NULL);
    return sl_http_respond(r, 204, NULL, NULL, 0);
}

/* Parses an optional time field into *ms (-1 when absent). */
static int field_time(sl_http_req *r, json_t *b, const char *key, int64_t *ms) {
    const char *s;
    *ms = -1;
    int have = sl_api_field_str(r, b, key, &s);
    if (have <= 0) return have;
    if (sl_auth_time_parse(s, strlen(s), ms) != 0) {
        sl_http_error(r, 400, "InvalidParameter",
                      "field '%s' must be an ISO-8601 time like 2026-11-21T10:00:00Z or "
                      "2026-11-21T11:00:00+01:00",
                      key);
        return -1;
    }
    return 0;
}

/* Signs a URL for account with its key key_name and answers {field: the
 * query string} with status. */
static int sign_url(sl_admin *a, sl_http_req *r, const char *account, const char *key_name, unsigned levels,
                    const char *queue, int64_t st, int64_t et, int status, const char *field) {
    struct sl_auth_key keys[SL_ACCT_MAX_KEYS];
    size_t n;
    int rc = sl_acct_keys_read(a->cfg.acct, account, keys, NULL, SL_ACCT_MAX_KEYS, &n);
    if (rc == SL_ENOTFOUND) return account_not_found(r, account);
    if (rc) return sl_api_fail(r, rc, NULL, NULL);
    struct sl_auth_keyring ring = {account, keys, n};
    char out[1024];
    rc = sl_auth_url_sign(&ring, key_name, levels, queue, st, et, out, sizeof out);
    OPENSSL_cleanse(keys, sizeof keys);
    if (rc == SL_ENOTFOUND)
        return sl_http_error(r, 404, "KeyNotFound", "account '%s' has no key '%s'", account, key_name);
    if (rc == SL_EINVAL)
        return sl_http_error(r, 400, "InvalidParameter", "the signed URL parameters are not valid");
    if (rc) return sl_api_fail(r, rc, NULL, NULL);
    return sl_api_json(r, status, json_pack("{s:s}", field, out));
}

static int h_signed_url(sl_http_req *r, void *ctx) {
    sl_admin *a = ctx;
    const char *account = begin(a, r);
    if (!account) return SL_HTTP_DONE;
    json_t *b = sl_api_body_object(r, 0);
    if (!b) return SL_HTTP_DONE;
    const char *levels_s, *queue, *key_name;
    unsigned levels = 0;
    int64_t st, et;
    int bad = 0;
    char qbuf[SL_NAME_MAX + 1] = "", kbuf[SL_NAME_MAX + 1] = "primary";
    int hl = sl_api_field_str(r, b, "levels", &levels_s);
    if (hl < 0) {
        bad = 1;
    } else if (hl == 0 || sl_auth_levels_parse(levels_s, strlen(levels_s), &levels) != 0) {
        bad = 1;
        sl_http_error(r, 400, "InvalidParameter",
                      "field 'levels' is required: distinct letters of rpuagcd, like \"rp\"");
    } else if (sl_api_field_str(r, b, "queueName", &queue) < 0) {
        bad = 1;
    } else if (queue && !sl_api_name_ok(queue)) {
        bad = 1;
        sl_http_error(r, 400, "InvalidQueueName", "queue names match [A-Za-z0-9_.-]{1,80}, except . and ..");
    } else if (sl_api_field_str(r, b, "keyName", &key_name) < 0) {
        bad = 1;
    } else if (key_name && !sl_name_valid(key_name)) {
        bad = 1;
        sl_http_error(r, 400, "InvalidKeyName", "key names match [A-Za-z0-9_.-]{1,80}");
    } else if (field_time(r, b, "startTime", &st) || field_time(r, b, "endTime", &et)) {
        bad = 1;
    } else if (st >= 0 && et >= 0 && et <= st) {
        bad = 1;
        sl_http_error(r, 400, "InvalidParameter", "endTime must be after startTime");
    } else {
        if (queue) snprintf(qbuf, sizeof qbuf, "%s", queue);
        if (key_name) snprintf(kbuf, sizeof kbuf, "%s", key_name);
    }
    json_decref(b);
    if (bad) return SL_HTTP_DONE;
    return sign_url(a, r, account, kbuf, levels, qbuf[0] ? qbuf : NULL, st, et, 200, "queryString");
}

/* The levels of CassieQ's GetAuthQueryParamsRequest: an array (or one
 * string) of level names ("ReadMessage") or their letters ("r"). Returns
 * 0, or -1 after answering 400. */
static int cassieq_levels(sl_http_req *r, json_t *v, unsigned *levels) {
    static const char *const names[] = {"ReadMessage",         "PutMessage",  "UpdateMessage", "AckMessage",
                                        "GetQueueInformation", "CreateQueue", "DeleteQueue"};
    static const char letters[] = "rpuagcd";
    json_t *one = json_is_string(v) ? json_pack("[O]", v) : json_incref(v);
    size_t i;
    json_t *e;
    *levels = 0;
    int ok = json_is_array(one) && json_array_size(one) > 0;
    json_array_foreach(one, i, e) {
        const char *s = json_string_value(e);
        int bit = -1;
        for (int k = 0; s && k < 7 && bit < 0; k++)
            if (strcmp(s, names[k]) == 0 || (s[0] == letters[k] && !s[1]))
                bit = sl_auth_level_bit(letters[k]);
        if (s && (strcmp(s, "None") == 0 || strcmp(s, "n") == 0)) continue;
        if (bit < 0)
            ok = 0;
        else
            *levels |= (unsigned)bit;
    }
    json_decref(one);
    if (ok && *levels) return 0;
    sl_http_error(r, 400, "InvalidParameter",
                  "field 'levels' must be an array of levels: ReadMessage (r), PutMessage (p), UpdateMessage "
                  "(u), AckMessage (a), GetQueueInformation (g), CreateQueue (c), DeleteQueue (d)");
    return -1;
}

/* A time of CassieQ's request: an ISO-8601 string, milliseconds since the
 * epoch (as Jackson writes a Joda DateTime), null or absent (-1). */
static int cassieq_time(sl_http_req *r, json_t *b, const char *key, int64_t *ms) {
    json_t *v = json_object_get(b, key);
    if (json_is_integer(v) && json_integer_value(v) >= 0) {
        *ms = (int64_t)json_integer_value(v);
        return 0;
    }
    return field_time(r, b, key, ms);
}

/* POST /admin/api/v1/permissions: CassieQ's admin route for signed URLs,
 * so that its tooling works: {"accountName", "keyName", "levels": [...],
 * "startTime"?, "endTime"?, "queueName"?} answers 201 {"queryParam"}, the
 * same query string as /accounts/{a}/signedUrls. */
static int h_permissions(sl_http_req *r, void *ctx) {
    sl_admin *a = ctx;
    if (!begin(a, r)) return SL_HTTP_DONE;
    json_t *b = sl_api_body_object(r, 0);
    if (!b) return SL_HTTP_DONE;
    const char *account = NULL, *queue = NULL, *key_name = NULL;
    char abuf[SL_NAME_MAX + 1] = "", qbuf[SL_NAME_MAX + 1] = "", kbuf[SL_NAME_MAX + 1] = "primary";
    unsigned levels = 0;
    int64_t st = -1, et = -1;
    int bad = 1;
    if (sl_api_field_str(r, b, "accountName", &account) < 0) {
    } else if (!account || !sl_name_valid(account)) {
        sl_http_error(r, 400, "InvalidAccountName", "field 'accountName' is required: [A-Za-z0-9_.-]{1,80}");
    } else if (cassieq_levels(r, json_object_get(b, "levels"), &levels) < 0 ||
               sl_api_field_str(r, b, "queueName", &queue) < 0 ||
               sl_api_field_str(r, b, "keyName", &key_name) < 0) {
    } else if (queue && !sl_api_name_ok(queue)) {
        sl_http_error(r, 400, "InvalidQueueName", "queue names match [A-Za-z0-9_.-]{1,80}, except . and ..");
    } else if (key_name && !sl_name_valid(key_name)) {
        sl_http_error(r, 400, "InvalidKeyName", "key names match [A-Za-z0-9_.-]{1,80}");
    } else if (cassieq_time(r, b, "startTime", &st) || cassieq_time(r, b, "endTime", &et)) {
    } else if (st >= 0 && et >= 0 && et <= st) {
        sl_http_error(r, 400, "InvalidParameter", "endTime must be after startTime");
    } else {
        bad = 0;
        snprintf(abuf, sizeof abuf, "%s", account);
        if (queue) snprintf(qbuf, sizeof qbuf, "%s", queue);
        if (key_name) snprintf(kbuf, sizeof kbuf, "%s", key_name);
    }
    json_decref(b);
    if (bad) return SL_HTTP_DONE;
    return sign_url(a, r, abuf, kbuf, levels, qbuf[0] ? qbuf : NULL, st, et, 201, "queryParam");
}

/* --- The dashboard ------------------------------------------------------ */

/* GET /ui/ and /ui/{f}: the dashboard's files (web.c). They hold no secret
 * (the page asks for the admin token and sends it with every API call it
 * makes), so they are served without it. */
static int h_ui(sl_http_req *r, void *ctx) {
    (void)ctx;
    const char *f = sl_http_param(r, "f"), *type, *path, *q;
    size_t plen, qlen;
    sl_http_raw_target(r, &path, &plen, &q, &qlen);
    if (!f && path[plen - 1] != '/') {
        /* The page names its files relative to /ui/. */
        sl_http_add_header(r, "Location", "/ui/");
        return sl_http_respond(r, 301, "text/plain", "/ui/\n", 5);
    }
    const void *data;
    size_t len;
    if (sl_web_file(f ? f : "index.html", &type, &data, &len))
        return sl_http_error(r, 404, "NotFound", "the dashboard has no file '%s'", f);
    sl_http_add_header(r, "Cache-Control", "no-cache");
    sl_http_add_header(r, "X-Content-Type-Options", "nosniff");
    sl_http_add_header(r, "Content-Security-Policy",
                       "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'");
    return sl_http_respond(r, 200, type, data, len);
}

/* A delegated route: the admin token, then the other API's handler, which
 * sees the request marked as the operator's. A parked request runs this
 * again when woken, and checks the token again: a hash, cheap. */
static int h_delegate(sl_http_req *r, void *ctx) {
    struct delegate *d = ctx;
    if (!sl_http_admin(r)) {
        if (admin_auth(d->a, r)) return SL_HTTP_DONE;
        sl_http_set_admin(r);
    }
    return d->fn(r, d->ctx);
}

int sl_api_admin_delegate(sl_admin *a, const sl_http_route *routes, size_t n) {
    size_t keep = 0;
    for (size_t i = 0; i < n; i++)
        keep += strncmp(routes[i].pattern, "/api/", 5) == 0;
    if (!keep) return 0;
    /* Each call's delegates are one block, which never moves: the routes
     * point into it. */
    struct delegate *dl = calloc(keep, sizeof *dl);
    sl_http_route *rt = realloc(a->routes, (a->nroutes + keep) * sizeof *rt);
    void **blocks = realloc(a->dl, (a->ndl + 1) * sizeof *blocks);
    if (rt) a->routes = rt;
    if (blocks) a->dl = blocks;
    if (!dl || !rt || !blocks) {
        free(dl);
        return SL_ENOMEM;
    }
    a->dl[a->ndl++] = dl;
    for (size_t i = 0; i < n; i++) {
        if (strncmp(routes[i].pattern, "/api/", 5) != 0) continue;
        dl->a = a;
        dl->fn = routes[i].fn;
        dl->ctx = routes[i].ctx;
        snprintf(dl->pattern, sizeof dl->pattern, "/admin%s", routes[i].pattern);
        rt[a->nroutes] = routes[i];
        rt[a->nroutes].pattern = dl->pattern;
        rt[a->nroutes].fn = h_delegate;
        rt[a->nroutes++].ctx = dl++;
    }
    return 0;
}

/* --- Setup -------------------------------------------------------------- */

int sl_api_admin_open(const sl_admin_config *cfg, sl_admin **out) {
    *out = NULL;
    if (!cfg->token || strlen(cfg->token) < 16 || strlen(cfg->token) > TOKEN_MAX) return SL_EINVAL;
    sl_admin *a = calloc(1, sizeof *a);
    if (!a) return SL_ENOMEM;
    a->cfg = *cfg;
    a->cfg.token = NULL; /* only its hash is kept */
    sha256(cfg->token, strlen(cfg->token), a->token_hash);
    /* Every route but the document reads or writes the store: the store pool
     * runs them (sl_http_route.blocks). */
    const sl_http_route routes[] = {
        {"GET", "/openapi.json", h_openapi, 0, 0, NULL},
        {"GET", "/metrics", h_metrics, 0, 0, NULL},
        {"POST", BASE, h_create, BODY_MAX, 1, NULL},
        {"GET", BASE, h_list, BODY_MAX, 1, NULL},
        {"GET", BASE "/{a}", h_get, BODY_MAX, 1, NULL},
        {"DELETE", BASE "/{a}", h_delete, BODY_MAX, 1, NULL},
        {"POST", BASE "/{a}/keys", h_key_create, BODY_MAX, 1, NULL},
        {"DELETE", BASE "/{a}/keys/{k}", h_key_delete, BODY_MAX, 1, NULL},
        {"POST", BASE "/{a}/signedUrls", h_signed_url, BODY_MAX, 1, NULL},
        {"POST", "/admin/api/v1/permissions", h_permissions, BODY_MAX, 1, NULL},
        {"GET", "/ui", h_ui, 0, 0, NULL}, /* "/ui/" too */
        {"GET", "/ui/{f}", h_ui, 0, 0, NULL},
    };
    a->nroutes = sizeof routes / sizeof routes[0];
    if (!(a->routes = malloc(sizeof routes))) {
        free(a);
        return SL_ENOMEM;
    }
    memcpy(a->routes, routes, sizeof routes);
    *out = a;
    return 0;
}

void sl_api_admin_routes(sl_admin *a, const sl_http_route **routes, size_t *n) {
    *routes = a->routes;
    *n = a->nroutes;
}

void sl_api_admin_close(sl_admin *a) {
    if (!a) return;
    OPENSSL_cleanse(a->token_hash, sizeof a->token_hash);
    free(a->routes);
    for (size_t i = 0; i < a->ndl; i++)
        free(a->dl[i]);
    free(a->dl);
    free(a);
}
