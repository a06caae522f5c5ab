/* req.c: what every API's handlers share; see req.h. */
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <openssl/crypto.h>

#include "req.h"

/* --- Errors and JSON ------------------------------------------------------ */

size_t sl_api_render_error(void *ctx, int status, const char *code, const char *message,
                           const char *request_id, char *out, size_t cap, const char **content_type) {
    (void)ctx;
    (void)status;
    json_t *e =
        json_pack("{s:{s:s,s:s,s:s}}", "error", "code", code, "message", message, "requestId", request_id);
    if (!e) /* a message with invalid UTF-8 (echoed input): say less */
        e = json_pack("{s:{s:s,s:s,s:s}}", "error", "code", code, "message", code, "requestId", request_id);
    size_t n = e ? json_dumpb(e, out, cap, JSON_COMPACT) : 0;
    json_decref(e);
    *content_type = "application/json";
    return n <= cap ? n : 0;
}

int sl_api_json(sl_http_req *r, int status, json_t *j) {
    char *text = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    json_decref(j);
    if (!text) /* only running out of memory gets here */
        return sl_api_unavailable(r, 503, "ServiceUnavailable", "out of memory");
    return sl_http_respond_take(r, status, "application/json", text, strlen(text));
}

int sl_api_jw(sl_http_req *r, int status, sl_jw *w) {
    size_t len;
    char *text = sl_jw_take(w, &len);
    if (!text) return sl_api_unavailable(r, 503, "ServiceUnavailable", "out of memory");
    return sl_http_respond_take(r, status, "application/json", text, len);
}

/* Answers 400 with code and returns -1, for validation chains. */
int sl_api_invalid(sl_http_req *r, const char *code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sl_http_error(r, 400, code, "%s", msg);
    return -1;
}

int sl_api_unavailable(sl_http_req *r, int status, const char *code, const char *msg) {
    sl_http_error(r, status, code, "%s", msg);
    sl_http_add_header(r, "Retry-After", "1");
    return SL_HTTP_DONE;
}

/* The statuses of the native and admin APIs for the engine's codes
 * (SL_ERRNO_MAP in sluice.h); another envelope (SQS) keeps a table of its
 * own. retry: the answer carries Retry-After. A message of NULL says which
 * code made the store unavailable. Not here: SL_ENOTFOUND and SL_EEXISTS,
 * whose answers name the queue or the account (sl_api_fail). */
static const struct {
    int rc, status, retry;
    const char *code, *msg;
} statuses[] = {
    {SL_EINVAL, 400, 0, "InvalidParameter", "the request is not valid"},
    {SL_EAUTH, 401, 0, "AuthenticationFailed", "missing or invalid credentials"},
    {SL_EFORBIDDEN, 403, 0, "Forbidden", "the credentials lack the permission"},
    {SL_ECONFLICT, 409, 0, "Conflict", "the request conflicts with the current state"},
    {SL_ETOOBIG, 413, 0, "MessageTooLarge", "the message is over the size limit"},
    {SL_EBUSY, 429, 1, "ServerBusy", "the server is saturated; retry later"},
    {SL_ENOMEM, 503, 1, "ServiceUnavailable", NULL},
    {SL_EUNAVAILABLE, 503, 1, "ServiceUnavailable", NULL},
    {SL_ETIMEOUT, 503, 1, "ServiceUnavailable", NULL},
    {SL_EIO, 503, 1, "ServiceUnavailable", NULL},
    {SL_EUNKNOWN, 503, 1, "ServiceUnavailable", NULL},
    {SL_ENOSPC, 507, 1, "InsufficientStorage",
     "the server's disk is full; nothing was written; retry once space is freed"},
};

int sl_api_status(int rc, int otherwise) {
    if (rc == SL_ENOTFOUND) return 404;
    if (rc == SL_EEXISTS) return 409;
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        if (statuses[i].rc == rc) return statuses[i].status;
    return otherwise;
}

/* Maps an engine code to a response. queue is NULL when a "not found" can
 * only mean the account. */
int sl_api_fail(sl_http_req *r, int rc, const char *account, const char *queue) {
    if (rc == SL_ENOTFOUND) {
        if (queue) return sl_http_error(r, 404, "QueueNotFound", "queue '%s' does not exist", queue);
        if (account) return sl_http_error(r, 404, "AccountNotFound", "account '%s' does not exist", account);
        return sl_http_error(r, 404, "NotFound", "it does not exist");
    }
    if (rc == SL_EEXISTS) {
        if (queue) return sl_http_error(r, 409, "QueueAlreadyExists", "queue '%s' already exists", queue);
        return sl_http_error(r, 409, "Conflict", "it already exists");
    }
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++) {
        if (statuses[i].rc != rc) continue;
        char msg[160];
        if (statuses[i].msg)
            snprintf(msg, sizeof msg, "%s", statuses[i].msg);
        else
            snprintf(msg, sizeof msg, "the store is unavailable (%s); retry", sl_strerror(rc));
        if (statuses[i].retry) return sl_api_unavailable(r, statuses[i].status, statuses[i].code, msg);
        return sl_http_error(r, statuses[i].status, statuses[i].code, "%s", msg);
    }
    sl_log(SL_ERR, "api: unexpected engine code %s on %s [%s]", sl_strerror(rc), sl_http_method(r),
           sl_http_request_id(r));
    return sl_http_error(r, 500, "InternalError", "internal error (%s)", sl_strerror(rc));
}

/* --- Authentication and authorization ----------------------------------- */

static struct sl_auth_key decoy;
static int decoy_ok;
static pthread_once_t decoy_once = PTHREAD_ONCE_INIT;

static void decoy_init(void) {
    char secret[SL_AUTH_KEY_CHARS + 1];
    decoy_ok = sl_auth_key_generate(secret) == 0 && sl_auth_key_init(&decoy, "primary", secret) == 0;
    OPENSSL_cleanse(secret, sizeof secret);
}

/* Verifies the request's credentials against the keys of the account in its
 * path (sl_auth_verify picks the scheme). An account that does not exist has
 * no keys, so it is 401 like a wrong key: unauthenticated callers cannot
 * learn which accounts exist. Returns 0 and *cred, SL_EAUTH, or a store
 * error. */
int sl_api_authenticate(sl_acct *acct, int64_t skew_ms, sl_http_req *r, const char *account,
                        struct sl_auth_cred *cred) {
    if (sl_http_admin(r)) {
        /* The admin server verified its token (admin.c, delegated routes). */
        memset(cred, 0, sizeof *cred);
        cred->scheme = SL_AUTH_ADMIN;
        cred->levels = SL_LEVEL_ALL;
        snprintf(cred->key_name, sizeof cred->key_name, "admin");
        return 0;
    }
    size_t nh = sl_http_headers(r, NULL, 0);
    if (nh > 256) return SL_EAUTH;
    sl_http_kv *kv = sl_http_alloc(r, (nh ? nh : 1) * sizeof *kv);
    struct sl_auth_header *hv = sl_http_alloc(r, (nh ? nh : 1) * sizeof *hv);
    /* On the stack, and only the keys there are wiped after: the arena
     * zeroed and wiped all 7 KiB of them on every request. */
    struct sl_auth_key keys[SL_ACCT_MAX_KEYS];
    if (!kv || !hv) return SL_ENOMEM;
    nh = sl_http_headers(r, kv, nh);
    for (size_t i = 0; i < nh; i++)
        hv[i] = (struct sl_auth_header){kv[i].name, kv[i].value};
    size_t nk = 0;
    int rc = sl_acct_keys(acct, account, keys, &nk);
    if (rc) {
        OPENSSL_cleanse(keys, sizeof keys); /* a store error may leave some read */
        return rc;
    }
    if (nk == 0) {
        /* An account without keys (or none at all) is checked against a
         * secret random key, so that it costs what a wrong key costs and
         * timing does not tell which accounts exist. */
        pthread_once(&decoy_once, decoy_init);
        if (decoy_ok) keys[nk++] = decoy;
    }
    struct sl_auth_request rq = {
        .method = sl_http_method(r), .headers = hv, .n_headers = nh, .now_ms = sl_now_ms()};
    sl_http_raw_target(r, &rq.path, &rq.path_len, &rq.query, &rq.query_len);
    rq.body = sl_http_body(r, &rq.body_len);
    struct sl_auth_keyring ring = {account, keys, nk};
    rc = sl_auth_verify(&rq, &ring, skew_ms, cred);
    OPENSSL_cleanse(keys, nk * sizeof *keys);
    return rc;
}

/* Answers 401 or 403 (or 503 for a store error) for an auth code. */
void sl_api_deny(sl_http_req *r, int rc) {
    if (rc == SL_EAUTH) {
        const char *h = sl_http_header(r, "Authorization");
        sl_http_error(r, 401, "AuthenticationFailed", "%s",
                      h || sl_http_query(r, "sig")
                          ? "the credentials are not valid for this account, or the request time is "
                            "outside the allowed skew"
                          : "credentials are required: Authorization: Key, Signed or AWS4-HMAC-SHA256, "
                            "or a signed URL");
        sl_http_add_header(
            r, "WWW-Authenticate",
            "AWS4-HMAC-SHA256 realm=\"sluice\", Key realm=\"sluice\", Signed realm=\"sluice\"");
    } else if (rc == SL_EFORBIDDEN) {
        sl_http_error(r, 403, "Forbidden", "the credentials do not grant this permission on this queue");
    } else {
        char msg[128];
        snprintf(msg, sizeof msg, "the store is unavailable (%s); retry", sl_strerror(rc));
        sl_http_error(r, 503, "ServiceUnavailable", "%s", msg);
        sl_http_add_header(r, "Retry-After", "1");
    }
}

/* May cred do level on queue (NULL: account-wide)? Answers and returns -1
 * when not. */
int sl_api_path_account(sl_http_req *r, const char **account) {
    *account = sl_http_param(r, "account");
    if (sl_name_valid(*account)) return 0;
    sl_http_error(r, 400, "InvalidAccountName", "account names match [A-Za-z0-9_.-]{1,80}");
    return -1;
}

int sl_api_authorize(sl_acct *acct, int64_t skew_ms, sl_http_req *r, const char *account, char level,
                     const char *queue, struct sl_auth_cred *cred) {
    int rc = sl_api_authenticate(acct, skew_ms, r, account, cred);
    if (rc) {
        sl_api_deny(r, rc);
        return -1;
    }
    return level ? sl_api_allowed(r, cred, level, queue) : 0;
}

int sl_api_account_ok(sl_acct *acct, sl_http_req *r, const char *account) {
    int rc = sl_acct_exists(acct, account);
    if (rc == 0) return 0;
    sl_api_fail(r, rc, account, NULL);
    return -1;
}

int sl_api_allowed(sl_http_req *r, const struct sl_auth_cred *cred, char level, const char *queue) {
    int rc = sl_auth_check(cred, level, queue);
    if (rc == 0) return 0;
    sl_api_deny(r, rc);
    return -1;
}

/* --- Input ------------------------------------------------------------------ */

int sl_api_name_ok(const char *s) {
    return sl_name_valid(s) && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

int sl_api_account_reserved(const char *s) {
    static const char *const names[] = {"api", "admin", "health", "metrics", "ui"};
    for (size_t i = 0; s && i < sizeof names / sizeof names[0]; i++)
        if (strcmp(s, names[i]) == 0) return 1;
    return 0;
}

/* Parses a decimal integer made of digits only (no sign, no spaces) in
 * [lo, hi]. Returns 0, or -1 for anything else, overflow included. */
int sl_api_parse_uint(const char *s, long long lo, long long hi, long long *out) {
    if (!s || !*s) return -1;
    long long v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') return -1;
        if (v > (LLONG_MAX - (*p - '0')) / 10) return -1;
        v = v * 10 + (*p - '0');
    }
    if (v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* An integer query parameter, def when absent. Returns 0, or answers 400 and
 * returns -1. */
int sl_api_query_int(sl_http_req *r, const char *name, long long lo, long long hi, long long def,
                     long long *out) {
    const char *v = sl_http_query(r, name);
    if (!v) {
        *out = def;
        return 0;
    }
    if (sl_api_parse_uint(v, lo, hi, out) == 0) return 0;
    sl_http_error(r, 400, "InvalidParameter", "query parameter '%s' must be an integer from %lld to %lld",
                  name, lo, hi);
    return -1;
}

/* A boolean query parameter ("true"/"false", also 1/0). */
int sl_api_query_bool(sl_http_req *r, const char *name, int def, int *out) {
    const char *v = sl_http_query(r, name);
    if (!v) {
        *out = def;
        return 0;
    }
    if (strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0)
        *out = 1;
    else if (strcasecmp(v, "false") == 0 || strcmp(v, "0") == 0)
        *out = 0;
    else {
        sl_http_error(r, 400, "InvalidParameter", "query parameter '%s' must be true or false", name);
        return -1;
    }
    return 0;
}

/* The body as a JSON object; an empty body counts as {} when empty_ok.
 * Returns a new reference, or NULL after answering 400. */
json_t *sl_api_body_object(sl_http_req *r, int empty_ok) {
    return sl_api_body_object_code(r, empty_ok, "InvalidJson");
}

json_t *sl_api_body_object_code(sl_http_req *r, int empty_ok, const char *code) {
    size_t len;
    const char *b = sl_http_body(r, &len);
    size_t i = 0;
    while (i < len && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n'))
        i++;
    if (i == len) {
        if (empty_ok) return json_object();
        sl_http_error(r, 400, code, "a JSON object body is required");
        return NULL;
    }
    json_error_t err;
    json_t *j = sl_json_parse(b, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &err);
    if (!j) {
        sl_http_error(r, 400, code, "malformed JSON at line %d column %d: %s", err.line, err.column,
                      err.text);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        sl_http_error(r, 400, code, "the body must be a JSON object");
        return NULL;
    }
    return j;
}

/* An integer field of o in [lo, hi]; def when absent unless required. null
 * is the wrong type, as for every field not documented as nullable.
 * Returns 0, or answers 400 and returns -1. */
int sl_api_field_int(sl_http_req *r, json_t *o, const char *key, long long lo, long long hi, long long def,
                     int required, long long *out) {
    json_t *v = json_object_get(o, key);
    if (!v) {
        if (required) {
            sl_http_error(r, 400, "InvalidParameter", "field '%s' is required", key);
            return -1;
        }
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        sl_http_error(r, 400, "InvalidParameter", "field '%s' must be an integer from %lld to %lld", key, lo,
                      hi);
        return -1;
    }
    *out = json_integer_value(v);
    return 0;
}

int sl_api_field_bool(sl_http_req *r, json_t *o, const char *key, int def, int *out) {
    json_t *v = json_object_get(o, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!json_is_boolean(v)) {
        sl_http_error(r, 400, "InvalidParameter", "field '%s' must be true or false", key);
        return -1;
    }
    *out = json_is_true(v);
    return 0;
}

int sl_api_field_str(sl_http_req *r, json_t *o, const char *key, const char **out) {
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
        sl_http_error(r, 400, "InvalidParameter", "field '%s' must be a string", key);
        return -1;
    }
    *out = json_string_value(v);
    return 1;
}

/* --- Parking on engine operations --------------------------------------- */

void sl_api_op_wake(void *r) {
    sl_http_wake(r);
}

static void op_discard(void *op) {
    sl_op_discard(op);
}

/* Whether r should park (again) on op: the store has not answered, and
 * the server is not stopping (then the finish call waits for the answer,
 * so that the client learns the outcome). */
int sl_api_op_waiting(sl_http_req *r, const sl_op *op) {
    return !sl_op_ready(op) && !sl_http_stopping(r);
}

/* The operation r parked on: *op is NULL when r has not started one yet.
 * Returns nonzero while r should stay parked. */
int sl_api_op_pending(sl_http_req *r, sl_op **op) {
    *op = sl_http_user(r);
    if (!*op) return 0;
    if (sl_api_op_waiting(r, *op)) return 1;
    sl_http_set_user(r, NULL, NULL);
    return 0;
}

int sl_api_op_park(sl_http_req *r, sl_op *op) {
    sl_http_set_user(r, op, op_discard);
    return SL_HTTP_WAIT;
}

/* --- Long polling ----------------------------------------------------------- */

/* Each receive is started, parked on and finished; when it found nothing,
 * a watch is armed and a second receive started, so a put that lands
 * between the two is not missed (the watch fires, or the second receive
 * sees it). The watch's callback only marks the state and wakes the parked
 * request; the handler runs again on a server thread. */
typedef struct {
    sl_api_resume_fn resume; /* first: see sl_api_resume_fn */
    sl_api_recv_args args;
    sl_http_req *r;
    char account[SL_NAME_MAX + 1], queue[SL_NAME_MAX + 1];
    int64_t deadline_ms;
    sl_watch *w;
    int fired;   /* w fired */
    sl_op *op;   /* a receive with the store */
    int watched; /* op was started after w was armed */
} recv_state;

static void recv_state_free(void *p) {
    recv_state *st = p;
    if (st->w) sl_watch_cancel(st->args.engine, st->w);
    if (st->op) sl_op_discard(st->op);
    if (st->args.arg && st->args.arg_free) st->args.arg_free(st->args.arg);
    free(st);
}

static void recv_wake(void *arg) {
    recv_state *st = arg;
    __atomic_store_n(&st->fired, 1, __ATOMIC_RELEASE);
    sl_http_wake(st->r);
}

static int recv_fail(sl_http_req *r, recv_state *st, int rc) {
    return st->args.fail ? st->args.fail(r, st->args.arg, rc) : sl_api_fail(r, rc, st->account, st->queue);
}

static int recv_answer(sl_http_req *r, recv_state *st, sl_message *m, size_t n) {
    if (st->w) {
        sl_watch_cancel(st->args.engine, st->w);
        st->w = NULL;
    }
    sl_queue_note_receive(st->args.engine, st->account, st->queue, n);
    return st->args.answer(r, st->args.arg, m, n);
}

static int recv_start(sl_http_req *r, recv_state *st, int watched) {
    st->watched = watched;
    int rc = sl_msg_receive_start(st->args.engine, st->account, st->queue, st->args.max, st->args.invis,
                                  sl_api_op_wake, r, &st->op);
    if (rc) {
        st->op = NULL;
        return recv_fail(r, st, rc);
    }
    return SL_HTTP_WAIT;
}

static int recv_resume(sl_http_req *r, void *state) {
    (void)state;
    return sl_api_recv_resume(r);
}

int sl_api_recv_begin(sl_http_req *r, const sl_api_recv_args *args) {
    recv_state *st = calloc(1, sizeof *st);
    if (!st) {
        int done = args->fail ? args->fail(r, args->arg, SL_ENOMEM)
                              : sl_api_fail(r, SL_ENOMEM, args->account, args->queue);
        if (args->arg && args->arg_free) args->arg_free(args->arg);
        return done;
    }
    st->resume = recv_resume;
    st->args = *args;
    st->r = r;
    snprintf(st->account, sizeof st->account, "%s", args->account);
    snprintf(st->queue, sizeof st->queue, "%s", args->queue);
    st->args.account = st->account;
    st->args.queue = st->queue;
    st->deadline_ms = sl_now_ms() + (int64_t)args->wait_s * 1000;
    sl_http_set_user(r, st, recv_state_free);
    return recv_start(r, st, 0);
}

int sl_api_recv_resume(sl_http_req *r) {
    recv_state *st = sl_http_user(r);
    sl_engine *e = st->args.engine;
    if (st->op) {
        if (sl_api_op_waiting(r, st->op)) return SL_HTTP_WAIT;
        sl_message *m = NULL;
        size_t n = 0;
        sl_op *op = st->op;
        st->op = NULL;
        int rc = sl_msg_receive_finish(op, &m, &n);
        if (rc) return recv_fail(r, st, rc);
        if (n > 0 || sl_now_ms() >= st->deadline_ms || sl_http_stopping(r) || sl_http_gone(r))
            return recv_answer(r, st, m, n);
        sl_messages_free(m, n);
        if (!st->watched) {
            if ((rc = sl_watch_add(e, st->account, st->queue, st->deadline_ms, recv_wake, st, &st->w)) != 0) {
                st->w = NULL;
                return recv_fail(r, st, rc);
            }
            return recv_start(r, st, 1);
        }
        /* Parked on the watch, unless it fired while the receive ran (its
         * wake-up then found the request running, and ran it again). */
        if (!__atomic_load_n(&st->fired, __ATOMIC_ACQUIRE) && !sl_http_stopping(r) && !sl_http_gone(r))
            return SL_HTTP_WAIT;
    }
    /* The watch fired (a put, or the deadline), the server is stopping, or
     * the client is gone (then no new receive takes messages for it). */
    if (sl_http_stopping(r) || sl_http_gone(r)) return recv_answer(r, st, NULL, 0);
    if (st->w) {
        sl_watch_cancel(e, st->w);
        st->w = NULL;
    }
    st->fired = 0;
    return recv_start(r, st, 0);
}
