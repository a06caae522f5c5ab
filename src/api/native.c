/* native.c: the queue API of API.md ("Queue API" and "Queue API
 * extensions"), /health and /openapi.json.
 *
 * Every handler runs the same steps in the same order: names in the path
 * (400), the auth hook (401/403, later), every query parameter and the body
 * (400), the account (404 AccountNotFound), then the engine call, whose code
 * sl_api_fail() maps to a status. Nothing reaches the engine before all input was
 * checked, because a 5xx must never answer bad input and the engine's own
 * checks are only a second line.
 *
 * Choices where API.md is silent (also written down in openapi.json):
 *  - A message is 1..max_message_bytes bytes of valid UTF-8, as in SQS.
 *  - Times in responses (enqueuedAt, createdAt) are ISO-8601 UTC to the
 *    second with a Z.
 *  - DELETE /{q} answers {"queueName": q, "deleted": true}.
 *  - POST .../receive accepts an empty body as {}.
 *  - The per-receipt status of POST .../ack is 204 or 409 as documented, and
 *    400 for a receipt that was never one of this queue's, or the status a
 *    failed store call would get (503), so one bad receipt does not fail the
 *    rest.
 *  - SL_ENOMEM is a 503 (retry), not a 500: running out of memory is not a
 *    bug. */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <pthread.h>

#include "api.h"
#include "req.h"

#define JSON_MAX_DEFAULT (1024 * 1024)
#define BASE "/api/v1/accounts/{account}/queues"
#define NROUTES 18

struct sl_api {
    sl_api_config cfg;
    sl_http_route routes[NROUTES];
    size_t nroutes;
};

/* --- Input validation --------------------------------------------------- */

/* A pop receipt from the query: present, non-empty and short enough to be
 * one of ours. */
static const char *query_receipt(sl_http_req *r) {
    const char *v = sl_http_query(r, "popReceipt");
    if (!v || !*v) {
        sl_http_error(r, 400, "InvalidParameter", "query parameter 'popReceipt' is required");
        return NULL;
    }
    if (strlen(v) >= SL_RECEIPT_MAX) {
        sl_http_error(r, 400, "InvalidPopReceipt", "the pop receipt is not valid");
        return NULL;
    }
    return v;
}

/* What an error names: "the message", or "messages[i].message" of a batch
 * (i >= 0), formatted only for an error. */
static const char *what_of(char buf[48], long i) {
    if (i < 0) return "the message";
    snprintf(buf, 48, "messages[%ld].message", i);
    return buf;
}

/* A message text: 1..max bytes (the JSON parser already checked UTF-8). */
static int check_message(sl_api *a, sl_http_req *r, long i, size_t len) {
    char buf[48];
    if (len == 0) {
        sl_http_error(r, 400, "InvalidMessage", "%s must not be empty", what_of(buf, i));
        return -1;
    }
    if (len > a->cfg.max_message_bytes) {
        sl_http_error(r, 413, "MessageTooLarge", "%s is %zu bytes, over the limit of %zu", what_of(buf, i),
                      len, a->cfg.max_message_bytes);
        return -1;
    }
    return 0;
}

/* Message attributes: an object of at most SL_ATTRS_MAX string values with
 * keys of 1..SL_ATTR_KEY_MAX and values of at most SL_ATTR_VAL_MAX bytes. */
static int check_attrs(sl_http_req *r, json_t *attrs, size_t idx) {
    if (!json_is_object(attrs)) {
        sl_http_error(r, 400, "InvalidParameter", "messages[%zu].attributes must be an object", idx);
        return -1;
    }
    if (json_object_size(attrs) > SL_ATTRS_MAX) {
        sl_http_error(r, 400, "InvalidParameter", "messages[%zu].attributes has more than %d entries", idx,
                      SL_ATTRS_MAX);
        return -1;
    }
    const char *k;
    json_t *v;
    json_object_foreach(attrs, k, v) {
        size_t kl = strlen(k);
        if (kl == 0 || kl > SL_ATTR_KEY_MAX) {
            sl_http_error(r, 400, "InvalidParameter", "messages[%zu].attributes keys must be 1 to %d bytes",
                          idx, SL_ATTR_KEY_MAX);
            return -1;
        }
        if (!json_is_string(v) || json_string_length(v) > SL_ATTR_VAL_MAX ||
            strlen(json_string_value(v)) != json_string_length(v)) {
            sl_http_error(r, 400, "InvalidParameter",
                          "messages[%zu].attributes values must be strings of at most %d bytes", idx,
                          SL_ATTR_VAL_MAX);
            return -1;
        }
    }
    return 0;
}

/* The common first steps: path names, then credentials and the permission
 * level. Returns 0, or -1 after answering. queue is NULL on account-wide
 * routes. With level 0 only the credentials are checked, and the route
 * checks the level itself once it knows the queue (create names its queue in
 * the body); cred may be NULL when the route does not need it. */
static int begin_cred(sl_api *a, sl_http_req *r, char level, const char **account, const char **queue,
                      struct sl_auth_cred *cred) {
    struct sl_auth_cred local;
    if (sl_api_path_account(r, account)) return -1;
    if (queue) {
        *queue = sl_http_param(r, "q");
        if (!sl_api_name_ok(*queue)) {
            sl_http_error(r, 400, "InvalidQueueName",
                          "queue names match [A-Za-z0-9_.-]{1,80}, except . and ..");
            return -1;
        }
    }
    return sl_api_authorize(a->cfg.acct, a->cfg.skew_ms, r, *account, level, queue ? *queue : NULL,
                            cred ? cred : &local);
}

static int begin(sl_api *a, sl_http_req *r, char level, const char **account, const char **queue) {
    return begin_cred(a, r, level, account, queue, NULL);
}

static int account_ok(sl_api *a, sl_http_req *r, const char *account) {
    return sl_api_account_ok(a->cfg.acct, r, account);
}

/* A message within its queue's maximumMessageBytes (SQS's
 * MaximumMessageSize), when it has one: 0, or -1 after answering 413. */
static int check_queue_size(sl_http_req *r, const sl_queue_opts *o, long i, size_t len) {
    if (o->max_bytes <= 0 || len <= (size_t)o->max_bytes) return 0;
    char buf[48];
    sl_http_error(r, 413, "MessageTooLarge", "%s is %zu bytes, over the queue's maximumMessageBytes of %d",
                  what_of(buf, i), len, o->max_bytes);
    return -1;
}

/* The queue's options, for the defaults of calls that leave a value out
 * (its visibility timeout, delay and long-poll wait: one queue, whichever
 * API made it). 0, or -1 after answering. */
static int queue_opts(sl_api *a, sl_http_req *r, const char *account, const char *q, sl_queue_opts *o) {
    sl_queue_info qi;
    int rc = sl_queue_get(a->cfg.engine, account, q, &qi);
    if (rc) return sl_api_fail(r, rc, account, q), -1;
    *o = qi.opts;
    return 0;
}

/* --- JSON of engine results --------------------------------------------- */

static json_t *queue_json(const sl_queue_info *qi) {
    char created[32];
    sl_iso_time(qi->created_ms, created);
    const sl_queue_opts *o = &qi->opts;
    return json_pack("{s:s,s:i,s:i,s:o,s:i,s:i,s:b,s:I,s:b,s:i,s:i,s:i,s:o,s:I,s:s}", "queueName", o->name,
                     "bucketSize", o->bucket_size, "maxDeliveryCount", o->max_delivery_count, "dlqName",
                     o->dlq[0] ? json_string(o->dlq) : json_null(), "repairWorkerPollSeconds",
                     o->repair_poll_s, "repairWorkerBucketFinalizeTimeSeconds", o->finalize_timeout_s,
                     "deleteBucketsAfterFinalize", o->delete_buckets, "retentionSeconds",
                     (json_int_t)o->retention_s, "strictFifo", o->strict_fifo, "visibilityTimeoutSeconds",
                     o->visibility_s, "delaySeconds", o->delay_s, "receiveWaitSeconds", o->wait_s,
                     "maximumMessageBytes", o->max_bytes ? json_integer(o->max_bytes) : json_null(),
                     "version", (json_int_t)qi->version, "createdAt", created);
}

static void message_write(sl_jw *w, const sl_message *m, int leased) {
    char at[32];
    sl_iso_time(m->enqueued_ms, at);
    sl_jw_open(w, '{');
    sl_jw_kstr(w, "messageId", m->id);
    sl_jw_key(w, "message");
    sl_jw_str(w, m->body, m->len);
    sl_jw_key(w, "deliveryCount");
    sl_jw_int(w, m->delivery_count);
    sl_jw_kstr(w, "messageTag", m->tag);
    sl_jw_kstr(w, "enqueuedAt", at);
    sl_jw_key(w, "attributes");
    /* Most messages have none: "{}" needs no parse. */
    json_t *attrs =
        m->attrs_json && strcmp(m->attrs_json, "{}") != 0 ? json_loads(m->attrs_json, 0, NULL) : NULL;
    if (json_is_object(attrs)) {
        sl_jw_json(w, attrs);
    } else {
        sl_jw_open(w, '{');
        sl_jw_close(w, '}');
    }
    json_decref(attrs);
    if (leased) sl_jw_kstr(w, "popReceipt", m->receipt);
    sl_jw_close(w, '}');
}

static int messages_answer(sl_http_req *r, const sl_message *m, size_t n, int leased) {
    sl_jw w = {0};
    sl_jw_open(&w, '{');
    sl_jw_key(&w, "messages");
    sl_jw_open(&w, '[');
    for (size_t i = 0; i < n; i++)
        message_write(&w, &m[i], leased);
    sl_jw_close(&w, ']');
    sl_jw_close(&w, '}');
    return sl_api_jw(r, 200, &w);
}

/* --- Operations endpoints ----------------------------------------------- */

static int h_health(sl_http_req *r, void *ctx) {
    sl_api *a = ctx;
    if (sl_engine_ping(a->cfg.engine) == 0) return sl_api_json(r, 200, json_pack("{s:s}", "status", "ok"));
    return sl_api_unavailable(r, 503, "ServiceUnavailable", "the store does not answer");
}

static int h_openapi(sl_http_req *r, void *ctx) {
    (void)ctx;
    return sl_http_respond(r, 200, "application/json", sl_openapi_json, sl_openapi_json_len);
}

/* --- Queues ------------------------------------------------------------- */

static int h_list(sl_http_req *r, void *ctx) {
    sl_api *a = ctx;
    const char *account;
    if (begin(a, r, 'g', &account, NULL) || account_ok(a, r, account)) return SL_HTTP_DONE;
    sl_queue_info *qs = NULL;
    size_t n = 0;
    int rc = sl_queue_list(a->cfg.engine, account, &qs, &n);
    if (rc) return sl_api_fail(r, rc, account, NULL);
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        json_array_append_new(arr, queue_json(&qs[i]));
    free(qs);
    return sl_api_json(r, 200, arr);
}

/* Reads QueueCreateOptions into o. Returns 0 or -1 after answering 400. */
static int parse_create(sl_http_req *r, json_t *b, sl_queue_opts *o) {
    sl_queue_opts_default(o);
    json_t *name = json_object_get(b, "queueName");
    if (!json_is_string(name)) {
        sl_http_error(r, 400, "InvalidParameter", "field 'queueName' is required and must be a string");
        return -1;
    }
    if (!sl_api_name_ok(json_string_value(name)) ||
        strlen(json_string_value(name)) != json_string_length(name)) {
        sl_http_error(r, 400, "InvalidQueueName", "queue names match [A-Za-z0-9_.-]{1,80}, except . and ..");
        return -1;
    }
    snprintf(o->name, sizeof o->name, "%s", json_string_value(name));
    json_t *dlq = json_object_get(b, "dlqName");
    if (dlq && !json_is_null(dlq)) {
        if (!json_is_string(dlq)) {
            sl_http_error(r, 400, "InvalidParameter", "field 'dlqName' must be a string or null");
            return -1;
        }
        const char *d = json_string_value(dlq);
        if (*d && (!sl_api_name_ok(d) || strlen(d) != json_string_length(dlq))) {
            sl_http_error(r, 400, "InvalidQueueName", "dlqName must match [A-Za-z0-9_.-]{1,80}");
            return -1;
        }
        snprintf(o->dlq, sizeof o->dlq, "%s", d);
    }
    long long v;
    if (sl_api_field_int(r, b, "bucketSize", INT_MIN, INT_MAX, o->bucket_size, 0, &v)) return -1;
    o->bucket_size = (int)v;
    if (sl_api_field_int(r, b, "maxDeliveryCount", INT_MIN, INT_MAX, o->max_delivery_count, 0, &v)) return -1;
    o->max_delivery_count = (int)v;
    if (sl_api_field_int(r, b, "repairWorkerPollSeconds", INT_MIN, INT_MAX, o->repair_poll_s, 0, &v))
        return -1;
    o->repair_poll_s = (int)v;
    if (sl_api_field_int(r, b, "repairWorkerBucketFinalizeTimeSeconds", INT_MIN, INT_MAX,
                         o->finalize_timeout_s, 0, &v))
        return -1;
    o->finalize_timeout_s = (int)v;
    if (sl_api_field_int(r, b, "retentionSeconds", LLONG_MIN, LLONG_MAX, o->retention_s, 0, &v)) return -1;
    o->retention_s = v;
    if (sl_api_field_bool(r, b, "deleteBucketsAfterFinalize", o->delete_buckets, &o->delete_buckets))
        return -1;
    if (sl_api_field_bool(r, b, "strictFifo", o->strict_fifo, &o->strict_fifo)) return -1;
    if (sl_api_field_int(r, b, "visibilityTimeoutSeconds", INT_MIN, INT_MAX, o->visibility_s, 0, &v))
        return -1;
    o->visibility_s = (int)v;
    if (sl_api_field_int(r, b, "delaySeconds", INT_MIN, INT_MAX, o->delay_s, 0, &v)) return -1;
    o->delay_s = (int)v;
    if (sl_api_field_int(r, b, "receiveWaitSeconds", INT_MIN, INT_MAX, o->wait_s, 0, &v)) return -1;
    o->wait_s = (int)v;
    json_t *mb = json_object_get(b, "maximumMessageBytes");
    if (mb && !json_is_null(mb)) {
        if (sl_api_field_int(r, b, "maximumMessageBytes", INT_MIN, INT_MAX, 0, 0, &v)) return -1;
        if (v == 0)
            return sl_api_invalid(r, "InvalidParameter",
                                  "maximumMessageBytes must be between 1024 and 1048576");
        o->max_bytes = (int)v;
    }
    char err[256] = "";
    if (sl_queue_opts_check(o, err, sizeof err) != 0) {
        sl_http_error(r, 400, "InvalidParameter", "%s", err[0] ? err : "invalid queue options");
        return -1;
    }
    return 0;
}

static int h_create(sl_http_req *r, void *ctx) {
    sl_api *a = ctx;
    const char *account;
    int error_if_exists;
    struct sl_auth_cred cred;
    if (begin_cred(a, r, 0, &account, NULL, &cred) ||
        sl_api_query_bool(r, "errorIfExists", 0, &error_if_exists))
        return SL_HTTP_DONE;
    json_t *b = sl_api_body_object(r, 0);
    if (!b) return SL_HTTP_DONE;
    sl_queue_opts o;
    int bad = parse_create(r, b, &o);
    json_decref(b);
    /* A signed URL for one queue may create that queue, so the level is
     * checked against the name in the body. */
    if (bad || sl_api_allowed(r, &cred, 'c', o.name) || account_ok(a, r, account)) return SL_HTTP_DONE;
    char err[256] = "";
    int rc = sl_queue_create(a->cfg.engine, account, &o, err, sizeof err);
    if (rc == SL_EEXISTS && error_if_exists)
        return sl_http_error(r, 409, "QueueAlreadyExists", "queue '%s' already exists", o.name);
    if (rc == SL_EINVAL)
        return sl_http_error(r, 400, "InvalidParameter", "%s", err[0] ? err : "invalid options");
    if (rc != 0 && rc != SL_EEXISTS) return sl_api_fail(r, rc, account, NULL);
    sl_queue_info qi;
    int grc = sl_queue_get(a->cfg.engine, account, o.name, &qi);
    if (grc) return sl_api_fail(r, grc, account, o.name);
    return sl_api_json(r, rc == 0 ? 201 : 200, queue_json(&qi));
}

static int h_get(sl_http_req *r, void *ctx) {
    sl_api *a = ctx;
    const char *account, *q;
    if (begin(a, r, 'g', &account, &q) || account_ok(a, r, account)) return SL_HTTP_DONE;
    sl_queue_info qi;
    int rc = sl_queue_get(a->cfg.engine, account, q, &qi);
    if (rc) return sl_api_fail(r, rc, account, q);
    return sl_api_json(r, 200, queue_json(&qi));
}

static int h_delete(sl_http_req *r, void *ctx) {
    sl_api *a = ctx;
    const char *account, *q;
    if (begin(a, r, 'd', &account, &q) || account_ok(a, r, account)) return SL_HTTP_DONE;
    int rc = sl_queue_delete(a->cfg.engine, account, q);
    if (rc) return sl_api_fail(r, rc, account, q);
    return sl_api_json(r, 200, json_pack("{s:s,s:b}", "queueName", q, "deleted", 1));
}

static int h_stats(sl_http_req *r, void *ctx) {
    sl_api *a = ctx;
    const char *account, *q;
    if (begin(a, r, 'g', &account, &q) || account_ok(a, r, account)) return SL_HTTP_DONE;
    sl_queue_statistics st;
    int rc = sl_queue_stats(a->cfg.engine, account, q, &st);
    if (rc) return sl_api_fail(r, rc, account, q);
    return sl_api_json(r, 200,
                        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "size", (json_int_t)st.size, "visible",
                                  (json_int_t)st.visible, "inFlight", (json_int_t)st.in_flight, "delayed",
                                  (json_int_t)st.delayed, "deadLettered", (json_int_t)st.dead_lettered,
                                  "oldestMessageAgeSeconds", (json_int_t)st.oldest_age_s));
}

static int h_purge(sl_http_req *r, void *ctx) {
    sl_api *a = ctx;
    const char *account, *q;
    if (begin(a, r, 'd', &account, &q) || account_ok(a, r, account)) return SL_HTTP_DONE;
    int rc = sl_queue_purge(a->cfg.engine, account, q);
    if (rc) return sl_api_fail(r, rc, account, q);
    return sl_http_respond(r, 204, NULL, NULL, 0);
}

static int h_redrive(sl_http_req *r, void *ctx) {
    sl_api *a = ctx;
    const char *account, *q;
    struct sl_auth_cred cred;
    if (begin_cred(a, r, 'c', &account, &q, &cred)) return SL_HTTP_DONE;
    json_t *b = sl_api_body_object(r, 0);
    if (!b) return SL_HTTP_DONE;
    json_t *to = json_object_get(b, "to");
    char dest[SL_NAME_MAX + 1];
    int bad = 0;
    if (!json_is_string(to)) {
        bad = sl_api_invalid(r, "InvalidParameter", "field 'to' is required and must be a queue name");
    } else if (!sl_api_name_ok(json_string_value(to)) ||
               strlen(json_string_value(to)) != json_string_length(to)) {
        bad = sl_api_invalid(r, "InvalidQueueName", "field 'to' must match [A-Za-z0-9_.-]{1,80}");
    } else if (strcmp(json_string_value(to), q) == 0) {
        bad = sl_api_invalid(r, "InvalidParameter", "a queue cannot be redriven into itself");
    } else {
        snprintf(dest, sizeof dest, "%s", json_string_value(to));
    }
    json_decref(b);
    /* Redriving puts messages into the destination: a credential limited to
     * the DLQ must also grant put there. */
    if (bad || sl_api_allowed(r, &cred, 'p', dest) || account_ok(a, r, account)) return SL_HTTP_DONE;
    sl_queue_info qi;
    int rc = sl_queue_get(a->cfg.engine, account, q, &qi);
    if (rc) return sl_api_fail(r, rc, account, q);
    rc = sl_queue_get(a->cfg.engine, account, dest, &qi);
    if (rc) return sl_api_fail(r, rc, account, dest);
    int64_t moved = 0;
    rc = sl_queue_redrive(a->cfg.engine, account, q, dest, &moved);
    if (rc == SL_EINVAL)
        return sl_http_error(r, 400, "InvalidParameter", "queue '%s' cannot be redriven to '%s'", q, dest);
    if (rc) return sl_api_fail(r, rc, account, q);
    return sl_api_json(r, 200, json_pack("{s:I}", "moved", (json_int_t)moved));
}

/* --- Messages ----------------------------------------------------------- */

/* Puts, acks and receives park their request while the store commits, so
 * that the worker serves other connections meanwhile and the writer's next
 * group holds more requests (see sl_msg_put_start): the first call starts
 * the operation and parks, the call after the wake-up finishes it. The
 * operation lives in the request's user state, whose destructor discards
 * it if the request is torn down first, so nothing the store still holds
 * outlives the request's body. A wake-up before the store answered parks
 * again, unless the server is stopping. */
static int h_put(sl_http_req *r, void *ctx) {
    sl_api *a = ctx;
    const char *account, *q;
    sl_op *op;
    if (sl_api_op_pending(r, &op)) return SL_HTTP_WAIT;
    if (op) {
        char id[1][SL_MSGID_LEN + 1];
        int rc = sl_msg_put_finish(op, id);
        if (rc) return sl_api_fail(r, rc, sl_http_param(r, "account"), sl_http_param(r, "q"));
        sl_jw w = {0};
        sl_jw_open(&w, '{');
        sl_jw_kstr(&w, "messageId", id[0]);
        sl_jw_close(&w, '}');
        return sl_api_jw(r, 201, &w);
    }
    long long delay;
    if (begin(a, r, 'p', &account, &q) ||
        sl_api_query_int(r, "initialInvisibilitySeconds", 0, SL_INVIS_MAX, 0, &delay))
        return SL_HTTP_DONE;
    size_t len;
    const char *body = sl_http_body(r, &len);
    if (check_message(a, r, -1, len)) return SL_HTTP_DONE;
    if (!sl_api_utf8_valid(body, len))
        return sl_http_error(r, 400, "InvalidMessage", "the message must be valid UTF-8");
    sl_queue_opts qo;
    if (account_ok(a, r, account) || queue_opts(a, r, account, q, &qo) || check_queue_size(r, &qo, -1, len))
        return SL_HTTP_DONE;
    if (!sl_http_query(r, "initialInvisibilitySeconds")) delay = qo.delay_s;
    sl_put p = {.body = body, .len = len, .delay_s = (int)delay, .attrs_json = NULL};
    int rc = sl_msg_put_start(a->cfg.engine, account, q, &p, 1, sl_api_op_wake, r, &op);
    return rc ? sl_api_fail(r, rc, account, q) : sl_api_op_park(r, op);
}

/* A batch put waiting for the store: the messages' bytes live in body. */
typedef struct {
    sl_op *op;
    json_t *body;
    char *attrs[SL_BATCH_MAX];
    size_t n;
} batch_state;

static void batch_state_free(void *p) {
    batch_state *st = p;
    if (st->op) sl_op_discard(st->op);
    for (size_t i = 0; i < st->n; i++)
        free(st->attrs[i]);
    json_decref(st->body);
    free(st);
}

static int batch_answer(sl_http_req *r, batch_state *st) {
    char(*ids)[SL_MSGID_LEN + 1] = calloc(st->n, sizeof *ids);
    sl_op *op = st->op;
    st->op = NULL;
    if (!ids) {
        sl_op_discard(op);
        return sl_api_fail(r, SL_ENOMEM, sl_http_param(r, "account"), sl_http_param(r, "q"));
    }
    int rc = sl_msg_put_finish(op, ids);
    if (rc) {
        free(ids);
        return sl_api_fail(r, rc, sl_http_param(r, "account"), sl_http_param(r, "q"));
    }
    sl_jw w = {0};
    sl_jw_open(&w, '{');
    sl_jw_key(&w, "messageIds");
    sl_jw_open(&w, '[');
    for (size_t i = 0; i < st->n; i++)
        sl_jw_cstr(&w, ids[i]);
    sl_jw_close(&w, ']');
    sl_jw_close(&w, '}');
    free(ids);
    return sl_api_jw(r, 201, &w);
}

static int h_batch(sl_http_req *r, void *ctx) {
    sl_api *a = ctx;
    const char *account, *q;
    batch_state *st = sl_http_user(r);
    if (st) return sl_api_op_waiting(r, st->op) ? SL_HTTP_WAIT : batch_answer(r, st);
    if (begin(a, r, 'p', &account, &q)) return SL_HTTP_DONE;
    json_t *b = sl_api_body_object(r, 0);
    if (!b) return SL_HTTP_DONE;
    sl_put msgs[SL_BATCH_MAX];
    char *attrs[SL_BATCH_MAX] = {0};
    size_t n = 0;
    int rc = 0;
    json_t *arr = json_object_get(b, "messages");
    if (!json_is_array(arr) || json_array_size(arr) < 1 || json_array_size(arr) > SL_BATCH_MAX) {
        sl_http_error(r, 400, "InvalidParameter", "field 'messages' must be an array of 1 to %d entries",
                      SL_BATCH_MAX);
        goto out;
    }
    for (n = 0; n < json_array_size(arr); n++) {
        json_t *m = json_array_get(arr, n);
        if (!json_is_object(m)) {
            sl_http_error(r, 400, "InvalidParameter", "messages[%zu] must be an object", n);
            goto out;
        }
        json_t *text = json_object_get(m, "message");
        if (!json_is_string(text)) {
            sl_http_error(r, 400, "InvalidParameter",
                          "messages[%zu].message is required and must be a string", n);
            goto out;
        }
        if (check_message(a, r, (long)n, json_string_length(text))) goto out;
        long long delay;
        if (sl_api_field_int(r, m, "delaySeconds", 0, SL_INVIS_MAX, -1, 0, &delay)) goto out;
        json_t *at = json_object_get(m, "attributes");
        if (at) {
            if (check_attrs(r, at, n)) goto out;
            if (json_object_size(at) > 0) {
                attrs[n] = json_dumps(at, JSON_COMPACT | JSON_SORT_KEYS);
                if (!attrs[n]) {
                    sl_api_fail(r, SL_ENOMEM, account, q);
                    goto out;
                }
            }
        }
        msgs[n] = (sl_put){.body = json_string_value(text),
                           .len = json_string_length(text),
                           .delay_s = (int)delay,
                           .attrs_json = attrs[n]};
    }
    if (account_ok(a, r, account)) goto out;
    /* A message without delaySeconds waits the queue's delay. */
    sl_queue_opts qo;
    if (queue_opts(a, r, account, q, &qo)) goto out;
    for (size_t i = 0; i < n; i++) {
        if (check_queue_size(r, &qo, (long)i, msgs[i].len)) goto out;
        if (msgs[i].delay_s < 0) msgs[i].delay_s = qo.delay_s;
    }
    if (!(st = calloc(1, sizeof *st))) {
        sl_api_fail(r, SL_ENOMEM, account, q);
        goto out;
    }
    if ((rc = sl_msg_put_start(a->cfg.engine, account, q, msgs, n, sl_api_op_wake, r, &st->op)) != 0) {
        free(st);
        sl_api_fail(r, rc, account, q);
        goto out;
    }
    /* The state owns the body and the attributes from here on. */
    st->body = b;
    st->n = n;
    memcpy(st->attrs, attrs, sizeof attrs);
    sl_http_set_user(r, st, batch_state_free);
    return SL_HTTP_WAIT;
out:
    for (size_t i = 0; i < SL_BATCH_MAX; i++)
        free(attrs[i]);
    json_decref(b);
    return SL_HTTP_DONE;
}

static int h_next(sl_http_req *r, void *ctx) {
    sl_api *a = ctx;
    const char *account, *q;
    long long invis;
    sl_op *op;
    if (sl_api_op_pending(r, &op)) return SL_HTTP_WAIT;
    if (op) {
        sl_message *m = NULL;
        size_t n = 0;
        int rc = sl_msg_receive_finish(op, &m, &n);
        if (rc) return sl_api_fail(r, rc, sl_http_param(r, "account"), sl_http_param(r, "q"));
        if (n == 0) {
            sl_messages_free(m, n);
            return sl_http_respond(r, 204, NULL, NULL, 0);
        }
        sl_jw w = {0};
        message_write(&w, &m[0], 1);
        sl_messages_free(m, n);
        return sl_api_jw(r, 200, &w);
    }
    if (begin(a, r, 'r', &account, &q) ||
        sl_api_query_int(r, "invisibilityTimeSeconds", 0, SL_INVIS_MAX, 30, &invis) ||
        account_ok(a, r, account))
        return SL_HTTP_DONE;
    sl_queue_opts qo;
    if (!sl_http_query(r, "invisibilityTimeSeconds")) {
        if (queue_opts(a, r, account, q, &qo)) return SL_HTTP_DONE;
        invis = qo.visibility_s;
    }
    int rc = sl_msg_receive_start(a->cfg.engine, account, q, 1, (int)invis, sl_api_op_wake, r, &op);
    return rc ? sl_api_fail(r, rc, account, q) : sl_api_op_park(r, op);
}

static int h_peek(sl_http_req *r, void *ctx) {
    sl_api *a = ctx;
    const char *account, *q;
    long long count;
    if (begin(a, r, 'g', &account, &q) || sl_api_query_int(r, "count", 1, SL_RECEIVE_MAX, 1, &count) ||
        account_ok(a, r, account))
        return SL_HTTP_DONE;
    sl_message *m = NULL;
    size_t n = 0;
    int rc = sl_msg_peek(a->cfg.engine, account, q, (int)count, &m, &n);
    if (rc) return sl_api_fail(r, rc, account, q);
    int done = messages_answer(r, m, n, 0);
    sl_messages_free(m, n);
    return done;
}

static int h_update(sl_http_req *r, void *ctx) {
    sl_api *a = ctx;
    const char *account, *q, *receipt;
    if (begin(a, r, 'u', &account, &q) || !(receipt = query_receipt(r))) return SL_HTTP_DONE;
    json_t *b = sl_api_body_object(r, 0);
    if (!b) return SL_HTTP_DONE;
    long long invis;
    const char *text = NULL;
    size_t len = 0;
    int bad = sl_api_field_int(r, b, "newInvisibilitySeconds", 0, SL_INVIS_MAX, 0, 1, &invis);
    json_t *m = json_object_get(b, "message");
    if (!bad && m && !json_is_null(m)) {
        if (!json_is_string(m)) {
            bad = sl_api_invalid(r, "InvalidParameter", "field 'message' must be a string");
        } else {
            text = json_string_value(m);
            len = json_string_length(m);
            bad = check_message(a, r, -1, len);
        }
    }
    if (bad || account_ok(a, r, account)) {
        json_decref(b);
        return SL_HTTP_DONE;
    }
    char nr[SL_RECEIPT_MAX], tag[SL_TAG_MAX];
    int rc = sl_msg_update(a->cfg.engine, account, q, receipt, text, len, (int)invis, nr, tag);
    json_decref(b);
    if (rc == SL_ECONFLICT)
        return sl_http_error(r, 409, "PopReceiptMismatch",
                             "the pop receipt is stale: the message was delivered again, updated or acked");
    if (rc == SL_EINVAL) return sl_http_error(r, 400, "InvalidPopReceipt", "the pop receipt is not valid");
    if (rc) return sl_api_fail(r, rc, account, q);
    return sl_api_json(r, 200, json_pack("{s:s,s:s}", "popReceipt", nr, "messageTag", tag));
}

static int h_ack(sl_http_req *r, void *ctx) {
    sl_api *a = ctx;
    const char *account, *q, *receipt;
    sl_op *op;
    if (sl_api_op_pending(r, &op)) return SL_HTTP_WAIT;
    if (!op) {
        if (begin(a, r, 'a', &account, &q) || !(receipt = query_receipt(r)) || account_ok(a, r, account))
            return SL_HTTP_DONE;
        int rc = sl_msg_ack_start(a->cfg.engine, account, q, &receipt, 1, sl_api_op_wake, r, &op);
        return rc ? sl_api_fail(r, rc, account, q) : sl_api_op_park(r, op);
    }
    account = sl_http_param(r, "account");
    q = sl_http_param(r, "q");
    int rc;
    sl_msg_ack_finish(op, &rc);
    if (rc == SL_ECONFLICT)
        return sl_http_error(r, 409, "PopReceiptMismatch",
                             "the pop receipt is stale: the message was delivered again, updated or acked");
    if (rc == SL_EINVAL) return sl_http_error(r, 400, "InvalidPopReceipt", "the pop receipt is not valid");
    if (rc) return sl_api_fail(r, rc, account, q);
    return sl_http_respond(r, 204, NULL, NULL, 0);
}

/* A batch ack waiting for the store: the receipts' bytes live in body. */
typedef struct {
    sl_op *op;
    json_t *body;
    size_t n;
    int at[SL_BATCH_MAX]; /* each receipt's place among those sent, or -1 */
} ackb_state;

static void ackb_state_free(void *p) {
    ackb_state *st = p;
    if (st->op) sl_op_discard(st->op);
    json_decref(st->body);
    free(st);
}

/* The answer of a batch ack: rcs[at[i]] for receipt i (-1: too long to be
 * one of ours). */
static int ackb_answer(sl_http_req *r, json_t *arr, size_t n, const int *at, const int *rcs) {
    sl_jw w = {0};
    sl_jw_open(&w, '{');
    sl_jw_key(&w, "results");
    sl_jw_open(&w, '[');
    for (size_t i = 0; i < n; i++) {
        int one = at[i] < 0 ? SL_EINVAL : rcs[at[i]];
        json_t *rcpt = json_array_get(arr, i);
        sl_jw_open(&w, '{');
        sl_jw_key(&w, "popReceipt");
        sl_jw_str(&w, json_string_value(rcpt), json_string_length(rcpt));
        sl_jw_key(&w, "status");
        sl_jw_int(&w, one == 0 ? 204 : one == SL_EINTERNAL ? 500 : sl_api_status(one, 503));
        sl_jw_close(&w, '}');
    }
    sl_jw_close(&w, ']');
    sl_jw_close(&w, '}');
    return sl_api_jw(r, 200, &w);
}

static int h_ack_batch(sl_http_req *r, void *ctx) {
    sl_api *a = ctx;
    const char *account, *q;
    ackb_state *st = sl_http_user(r);
    if (st) {
        if (sl_api_op_waiting(r, st->op)) return SL_HTTP_WAIT;
        int rcs[SL_BATCH_MAX];
        sl_op *op = st->op;
        st->op = NULL;
        sl_msg_ack_finish(op, rcs);
        return ackb_answer(r, json_object_get(st->body, "popReceipts"), st->n, st->at, rcs);
    }
    if (begin(a, r, 'a', &account, &q)) return SL_HTTP_DONE;
    json_t *b = sl_api_body_object(r, 0);
    if (!b) return SL_HTTP_DONE;
    json_t *arr = json_object_get(b, "popReceipts");
    int bad = 0;
    if (!json_is_array(arr) || json_array_size(arr) < 1 || json_array_size(arr) > SL_BATCH_MAX) {
        bad = sl_api_invalid(r, "InvalidParameter", "field 'popReceipts' must be an array of 1 to %d strings",
                      SL_BATCH_MAX);
    }
    for (size_t i = 0; !bad && i < json_array_size(arr); i++) {
        json_t *v = json_array_get(arr, i);
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            strlen(json_string_value(v)) != json_string_length(v))
            bad = sl_api_invalid(r, "InvalidParameter", "popReceipts[%zu] must be a non-empty string", i);
    }
    if (bad || account_ok(a, r, account)) {
        json_decref(b);
        return SL_HTTP_DONE;
    }
    /* Receipts too long to be ours are answered 400 without asking the
     * engine; the others are acked together. */
    size_t n = json_array_size(arr), k = 0;
    const char *rcpts[SL_BATCH_MAX];
    int at[SL_BATCH_MAX];
    for (size_t i = 0; i < n; i++) {
        const char *rcpt = json_string_value(json_array_get(arr, i));
        at[i] = -1;
        if (strlen(rcpt) < SL_RECEIPT_MAX) {
            at[i] = (int)k;
            rcpts[k++] = rcpt;
        }
    }
    int rc;
    if (k == 0) {
        rc = ackb_answer(r, arr, n, at, NULL);
        json_decref(b);
        return rc;
    }
    if (!(st = calloc(1, sizeof *st))) {
        json_decref(b);
        return sl_api_fail(r, SL_ENOMEM, account, q);
    }
    if ((rc = sl_msg_ack_start(a->cfg.engine, account, q, rcpts, k, sl_api_op_wake, r, &st->op)) != 0) {
        /* The queue went away under us: nothing can succeed. */
        free(st);
        json_decref(b);
        return sl_api_fail(r, rc, account, q);
    }
    st->body = b;
    st->n = n;
    memcpy(st->at, at, n * sizeof *at);
    sl_http_set_user(r, st, ackb_state_free);
    return SL_HTTP_WAIT;
}

/* Long polling (req.c's sl_api_recv): the first call validates and
 * starts; later calls resume the parked receive, which answers with
 * receive_answer. */
static int receive_answer(sl_http_req *r, void *arg, sl_message *m, size_t n) {
    (void)arg;
    int done = messages_answer(r, m, n, 1);
    sl_messages_free(m, n);
    return done;
}

static int h_receive(sl_http_req *r, void *ctx) {
    sl_api *a = ctx;
    if (sl_http_user(r)) return sl_api_recv_resume(r);
    const char *account, *q;
    if (begin(a, r, 'r', &account, &q)) return SL_HTTP_DONE;
    json_t *b = sl_api_body_object(r, 1);
    if (!b) return SL_HTTP_DONE;
    long long max, invis, wait;
    int bad = sl_api_field_int(r, b, "maxMessages", 1, SL_RECEIVE_MAX, 1, 0, &max) ||
              sl_api_field_int(r, b, "invisibilitySeconds", 0, SL_INVIS_MAX, -1, 0, &invis) ||
              sl_api_field_int(r, b, "waitSeconds", 0, SL_WAIT_MAX, -1, 0, &wait);
    json_decref(b);
    if (bad || account_ok(a, r, account)) return SL_HTTP_DONE;
    /* Left out: the queue's visibility timeout and wait. */
    sl_queue_opts qo;
    if (invis < 0 || wait < 0) {
        if (queue_opts(a, r, account, q, &qo)) return SL_HTTP_DONE;
        if (invis < 0) invis = qo.visibility_s;
        if (wait < 0) wait = qo.wait_s;
    }
    sl_api_recv_args args = {.engine = a->cfg.engine,
                             .account = account,
                             .queue = q,
                             .max = (int)max,
                             .invis = (int)invis,
                             .wait_s = (int)wait,
                             .answer = receive_answer};
    return sl_api_recv_begin(r, &args);
}

/* --- Setup -------------------------------------------------------------- */

int sl_api_native_open(const sl_api_config *cfg, sl_api **out) {
    *out = NULL;
    json_error_t err;
    json_t *doc = json_loadb(sl_openapi_json, sl_openapi_json_len, 0, &err);
    if (!json_is_object(doc)) {
        sl_log(SL_ERR, "api: the embedded openapi.json is not valid: line %d: %s", err.line, err.text);
        json_decref(doc);
        return SL_EINTERNAL;
    }
    json_decref(doc);
    sl_api *a = calloc(1, sizeof *a);
    if (!a) return SL_ENOMEM;
    a->cfg = *cfg;
    if (!a->cfg.max_message_bytes) a->cfg.max_message_bytes = SL_MSG_MAX_DEFAULT;
    if (!a->cfg.max_json_bytes) a->cfg.max_json_bytes = JSON_MAX_DEFAULT;
    size_t js = a->cfg.max_json_bytes;
    /* An update or a batch carries a message of up to the limit, which JSON
     * escaping can blow up six times (\u00XX); let such a body in so that
     * the message limit, not the escaping, decides. */
    size_t upd = a->cfg.max_message_bytes * 6 + 4096;
    if (upd < js) upd = js;
    const sl_http_route routes[] = {
        {"GET", "/health", h_health, 0, 0, NULL},
        {"GET", "/openapi.json", h_openapi, 0, 0, NULL},
        {"GET", BASE, h_list, js, 0, NULL},
        {"POST", BASE, h_create, js, 0, NULL},
        {"GET", BASE "/{q}", h_get, js, 0, NULL},
        {"DELETE", BASE "/{q}", h_delete, js, 0, NULL},
        {"GET", BASE "/{q}/statistics", h_stats, js, 0, NULL},
        {"POST", BASE "/{q}/purge", h_purge, js, 0, NULL},
        {"POST", BASE "/{q}/redrive", h_redrive, js, 0, NULL},
        {"POST", BASE "/{q}/messages", h_put, a->cfg.max_message_bytes, 0, NULL},
        {"PUT", BASE "/{q}/messages", h_update, upd, 0, NULL},
        {"DELETE", BASE "/{q}/messages", h_ack, js, 0, NULL},
        {"GET", BASE "/{q}/messages/next", h_next, js, 0, NULL},
        {"GET", BASE "/{q}/messages/peek", h_peek, js, 0, NULL},
        {"POST", BASE "/{q}/messages/batch", h_batch, upd, 0, NULL},
        {"POST", BASE "/{q}/messages/receive", h_receive, js, 0, NULL},
        {"POST", BASE "/{q}/messages/ack", h_ack_batch, js, 0, NULL},
    };
    a->nroutes = sizeof routes / sizeof routes[0];
    memcpy(a->routes, routes, sizeof routes);
    /* Which handlers wait on the store (sl_http_route.blocks): every one
     * that reads or writes it, except put, receive and ack where the engine
     * waits for nothing (sl_engine_blocks: on the embedded store, whose
     * reads are lookups in SQLite's page cache). On Cassandra those run on
     * the store pool too, for their reads, but park while their writes are
     * with the store, letting the pool's thread go. */
    int blocks = sl_engine_blocks(a->cfg.engine);
    for (size_t i = 0; i < a->nroutes; i++) {
        sl_http_fn fn = a->routes[i].fn;
        int op = fn == h_put || fn == h_batch || fn == h_next || fn == h_receive || fn == h_ack || fn == h_ack_batch;
        a->routes[i].blocks = fn != h_openapi && !(op && !blocks);
    }
    *out = a;
    return 0;
}

void sl_api_native_routes(sl_api *a, const sl_http_route **routes, size_t *n) {
    *routes = a->routes;
    *n = a->nroutes;
}

void sl_api_native_close(sl_api *a) {
    free(a);
}
