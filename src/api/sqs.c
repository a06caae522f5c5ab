/* sqs.c: Amazon SQS's protocols on the queue port (API.md "SQS wire
 * protocol"), answered as AWS answers, so that the AWS SDKs, the AWS CLI
 * and hand-written clients work with only their endpoint changed:
 *  - the JSON protocol: POST / with X-Amz-Target: AmazonSQS.<Action> and a
 *    JSON body (current SDKs);
 *  - the query protocol: Action=<Action> and its parameters as a form body
 *    (POST) or a query string (GET), to / or to a queue URL, answered in
 *    XML (older SDKs, such as Debian's boto3). sqs_codec.c turns its
 *    parameters into the JSON protocol's body and the results into XML, so
 *    each action is written once.
 * Every request is signed with SigV4 by an account's key.
 *
 * One queue, two APIs: an SQS queue is a Sluice queue (its attributes map
 * onto the queue's options), and a message put through either API is
 * received through the other. String message attributes are stored as the
 * native API's string attributes; other types keep their DataType (sqs.h).
 *
 * Every action checks all of its input before it calls the engine, as the
 * native API does; an engine error maps to AWS's code for it (sqs_engine).
 * Receipt handles are the engine's sticky receipts: they stay valid through
 * ChangeMessageVisibility until the message is received again, as in SQS.
 *
 * Choices where AWS leaves room, or Sluice differs (README "SQS"):
 *  - DeleteMessage with a handle whose message was received again since,
 *    or deleted, succeeds and deletes nothing, as AWS documents.
 *  - A whole batch that the store could not take is one 503 (the SDKs
 *    retry it), not one failure per entry.
 *  - AddPermission and RemovePermission are 403 AccessDenied: permissions
 *    are keys and signed URLs, not queue policies.
 *  - FIFO queues (fifo.c) send on the store thread, one message after the
 *    other; a delete releases the group's next message. */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "api.h"
#include "req.h"
#include "sqs.h"

#define SQS_BATCH_MAX 10
#define SQS_RECEIVE_MAX 10
#define SQS_VISIBILITY_MAX 43200
#define SQS_DELAY_MAX 900
#define SQS_WAIT_MAX 20
#define SQS_LIST_MAX 1000
#define SQS_ENTRY_ID_MAX 80
#define SQS_SIZE_MAX 1048576
#define SQS_CTYPE "application/x-amz-json-1.0"
/* Where a message's system attributes (AWSTraceHeader) live in its attributes. */
#define SYSTEM_KEY "$system"

struct sl_api_sqs {
    sl_api_sqs_config cfg;
    sl_http_route routes[4];
};

/* A request and the protocol it speaks: its answers are JSON, or the
 * query protocol's XML for its action. */
typedef struct {
    sl_http_req *r;
    int query;
    char action[48];
} sq;

/* --- Errors ------------------------------------------------------------- */

/* An error as AWS sends it: the status, the JSON protocol's __type (after
 * "com.amazonaws.sqs#") and the query protocol's code, which the JSON
 * protocol repeats in x-amzn-query-error and boto3 reads as Error.Code. */
typedef struct {
    int status;
    const char *type, *code;
} sqs_err;

static const sqs_err
    E_NO_QUEUE = {400, "QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"},
    E_QUEUE_EXISTS = {400, "QueueNameExists", "QueueAlreadyExists"},
    E_ATTR_NAME = {400, "InvalidAttributeName", "InvalidAttributeName"},
    E_ATTR_VALUE = {400, "InvalidAttributeValue", "InvalidAttributeValue"},
    E_VALUE = {400, "InvalidParameterValue", "InvalidParameterValue"},
    E_MISSING = {400, "MissingParameter", "MissingParameter"},
    E_CONTENTS = {400, "InvalidMessageContents", "InvalidMessageContents"},
    E_RECEIPT = {404, "ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid"},
    E_NOT_INFLIGHT = {400, "MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight"},
    E_EMPTY_BATCH = {400, "EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest"},
    E_BATCH_MANY = {400, "TooManyEntriesInBatchRequest",
                    "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"},
    E_BATCH_IDS = {400, "BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"},
    E_BATCH_ID = {400, "InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId"},
    E_BATCH_LONG = {400, "BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong"},
    E_UNSUPPORTED = {400, "UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation"},
    E_ACTION = {400, "InvalidAction", "InvalidAction"},
    E_SERIAL = {400, "SerializationException", "SerializationException"},
    E_ADDRESS = {404, "InvalidAddress", "InvalidAddress"}, E_DENIED = {403, "AccessDenied", "AccessDenied"},
    E_NO_AUTH = {403, "MissingAuthenticationToken", "MissingAuthenticationToken"},
    E_TOKEN = {403, "InvalidClientTokenId", "InvalidClientTokenId"},
    E_SIGNATURE = {403, "SignatureDoesNotMatch", "SignatureDoesNotMatch"},
    E_UNAVAILABLE = {503, "ServiceUnavailable", "ServiceUnavailable"},
    E_INTERNAL = {500, "InternalFailure", "InternalFailure"},
    E_NO_RESOURCE = {400, "ResourceNotFoundException", "ResourceNotFoundException"};

static int sqs_fail(const sq *q, const sqs_err *e, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int sqs_fail(const sq *q, const sqs_err *e, const char *fmt, ...) {
    sl_http_req *r = q->r;
    char msg[512], type[96], hdr[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *who = e->status >= 500 ? "Receiver" : "Sender";
    char *text = NULL;
    size_t len = 0;
    if (q->query) {
        text = sl_sqs_query_error(who, e->code, msg, sl_http_request_id(r), &len);
    } else {
        snprintf(type, sizeof type, "com.amazonaws.sqs#%s", e->type);
        json_t *j = json_pack("{s:s,s:s}", "__type", type, "message", msg);
        if (!j) j = json_pack("{s:s,s:s}", "__type", type, "message", e->type); /* echoed input not UTF-8 */
        text = j ? json_dumps(j, JSON_COMPACT) : NULL;
        len = text ? strlen(text) : 0;
        json_decref(j);
        snprintf(hdr, sizeof hdr, "%s;%s", e->code, who);
        sl_http_add_header(r, "x-amzn-query-error", hdr);
    }
    sl_http_add_header(r, "x-amzn-RequestId", sl_http_request_id(r));
    if (e->status == 503) sl_http_add_header(r, "Retry-After", "1");
    if (e->status >= 500)
        sl_log(SL_INFO, "sqs -> %d %s: %s [%s]", e->status, e->code, msg, sl_http_request_id(r));
    sl_http_respond(r, text ? e->status : 503, q->query ? "text/xml" : SQS_CTYPE, text ? text : "", len);
    free(text);
    return SL_HTTP_DONE;
}

/* An engine code as AWS's error; queue names the queue a "not found" is. */
static int sqs_engine(const sq *r, int rc, const char *queue) {
    switch (rc) {
    case SL_ENOTFOUND:
        return sqs_fail(r, &E_NO_QUEUE, "The specified queue does not exist: %s", queue ? queue : "");
    case SL_EINVAL:
        return sqs_fail(r, &E_VALUE, "A parameter is not valid for this queue.");
    case SL_EINTERNAL:
        sl_log(SL_ERR, "sqs: internal error [%s]", sl_http_request_id(r->r));
        return sqs_fail(r, &E_INTERNAL, "internal error");
    default:
        return sqs_fail(r, &E_UNAVAILABLE, "The service is unavailable (%s); retry.", sl_strerror(rc));
    }
}

static int sqs_ok(const sq *q, json_t *j) {
    size_t len = 0;
    char *text = !j         ? NULL
                 : q->query ? sl_sqs_query_answer(q->action, j, sl_http_request_id(q->r), &len)
                            : json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!text) return sqs_fail(q, &E_UNAVAILABLE, "out of memory");
    if (!q->query) len = strlen(text);
    sl_http_add_header(q->r, "x-amzn-RequestId", sl_http_request_id(q->r));
    return sl_http_respond_take(q->r, 200, q->query ? "text/xml" : SQS_CTYPE, text, len);
}

/* The answer of an action that returns nothing: "{}" in the JSON
 * protocol, the action's empty response element in the query protocol. */
static int sqs_ok_empty(const sq *q) {
    if (q->query) return sqs_ok(q, json_object());
    sl_http_add_header(q->r, "x-amzn-RequestId", sl_http_request_id(q->r));
    return sl_http_respond(q->r, 200, SQS_CTYPE, "{}", 2);
}

/* The same for an answer written as it went (sl_jw): the JSON protocol's
 * as it is; the query protocol's read back into a tree first, so that
 * both protocols answer from one text. */
static int sqs_ok_jw(const sq *q, sl_jw *w) {
    size_t len;
    char *text = sl_jw_take(w, &len);
    if (!text) return sqs_fail(q, &E_UNAVAILABLE, "out of memory");
    if (q->query) {
        json_t *j = json_loadb(text, len, JSON_ALLOW_NUL, NULL);
        free(text);
        return sqs_ok(q, j);
    }
    sl_http_add_header(q->r, "x-amzn-RequestId", sl_http_request_id(q->r));
    return sl_http_respond_take(q->r, 200, SQS_CTYPE, text, len);
}

/* --- A call ------------------------------------------------------------- */

typedef struct {
    sl_api_sqs *s;
    sl_http_req *r;
    sq q;                          /* r, and its protocol */
    json_t *in;                    /* the request's body */
    char account[SL_NAME_MAX + 1]; /* the signer's */
    char region[64];               /* of the signature's scope, for ARNs */
    char queue[SL_NAME_MAX + 1];   /* the QueueUrl's, once call_queue read it */
} call;

static void queue_url(const call *c, const char *queue, char *out, size_t cap) {
    const char *host = sl_http_header(c->r, "Host");
    if (!host || !*host || strlen(host) > 255 || strpbrk(host, "/ ")) host = "localhost";
    snprintf(out, cap, "%s://%s/%s/%s", c->s->cfg.tls ? "https" : "http", host, c->account, queue);
}

static void queue_arn(const call *c, const char *queue, char *out, size_t cap) {
    snprintf(out, cap, "arn:aws:sqs:%s:%s:%s", c->region, c->account, queue);
}

/* A string parameter: 1 when present, 0 when absent (or null), -1 after
 * answering 400 (not a string, or one with a NUL). */
static int param_str(call *c, const char *name, int required, const char **out) {
    json_t *v = json_object_get(c->in, name);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required)
            return sqs_fail(&c->q, &E_MISSING, "The request must contain the parameter %s.", name), -1;
        return 0;
    }
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return sqs_fail(&c->q, &E_VALUE, "Value for parameter %s must be a string.", name), -1;
    *out = json_string_value(v);
    return 1;
}

/* An integer parameter in [lo, hi], def when absent: 0 or -1 after
 * answering. The JSON protocol sends numbers; a numeric string is taken
 * too. */
static int int_of(json_t *v, long long *out) {
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return 0;
    }
    return json_is_string(v) ? sl_api_parse_uint(json_string_value(v), 0, LLONG_MAX, out) : -1;
}

static int param_int(call *c, json_t *o, const char *name, long long lo, long long hi, long long def,
                     long long *out) {
    json_t *v = json_object_get(o, name);
    *out = def;
    if (!v || json_is_null(v)) return 0;
    if (int_of(v, out) || *out < lo || *out > hi)
        return sqs_fail(&c->q, &E_VALUE,
                        "Value for parameter %s is invalid. Reason: it must be an integer "
                        "from %lld to %lld.",
                        name, lo, hi),
               -1;
    return 0;
}

/* The queue of the call's QueueUrl, which must be the signer's account's:
 * 0 or -1 after answering. */
static int call_queue(call *c) {
    const char *url;
    if (param_str(c, "QueueUrl", 1, &url) < 0) return -1;
    char account[SL_NAME_MAX + 1];
    if (sl_sqs_queue_url(url, account, c->queue) != 0)
        return sqs_fail(&c->q, &E_ADDRESS, "The address %.200s is not valid for this endpoint.", url), -1;
    if (strcmp(account, c->account) != 0)
        return sqs_fail(&c->q, &E_DENIED, "Access to the resource %.200s is denied.", url), -1;
    return 0;
}

/* call_queue, then the queue's definition: 0 or -1 after answering. */
static int call_queue_info(call *c, sl_queue_info *qi) {
    if (call_queue(c)) return -1;
    int rc = sl_queue_get(c->s->cfg.engine, c->account, c->queue, qi);
    return rc ? sqs_engine(&c->q, rc, c->queue), -1 : 0;
}

/* What a send or a delete parked on the store holds, first in its state:
 * the resume function (see sl_api_resume_fn), the request and its
 * protocol, the operation, the body whose bytes the operation uses, and the
 * queue. */
typedef struct {
    sl_api_resume_fn resume;
    sq q;
    sl_op *op;
    json_t *body;
    int batch;
    sl_api_sqs *s;
    char account[SL_NAME_MAX + 1], queue[SL_NAME_MAX + 1];
} parked;

static void parked_init(parked *p, const call *c, sl_api_resume_fn resume, int batch) {
    p->resume = resume;
    p->q = c->q;
    p->body = json_incref(c->in);
    p->batch = batch;
    p->s = c->s;
    snprintf(p->account, sizeof p->account, "%s", c->account);
    snprintf(p->queue, sizeof p->queue, "%s", c->queue);
}

static void parked_clear(parked *p) {
    if (p->op) sl_op_discard(p->op);
    json_decref(p->body);
}

/* Parks the request on the operation that p (first in a state that
 * destroy frees) started, which returned rc; or, when it did not start,
 * frees the state and answers rc. */
static int park(call *c, int rc, parked *p, void (*destroy)(void *)) {
    if (rc) {
        p->op = NULL;
        destroy(p);
        return sqs_engine(&c->q, rc, c->queue);
    }
    sl_http_set_user(c->r, p, destroy);
    return SL_HTTP_WAIT;
}

/* The operation once the store answered, taken out of p; NULL while the
 * request should stay parked. */
static sl_op *parked_take(sl_http_req *r, parked *p) {
    if (sl_api_op_waiting(r, p->op)) return NULL;
    sl_op *op = p->op;
    p->op = NULL;
    return op;
}

/* An entry id of a batch: 1..80 of [A-Za-z0-9_-]. */
static int entry_id_ok(const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > SQS_ENTRY_ID_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

/* The Entries of a batch action: 1..10 objects with distinct valid ids.
 * Returns the array (borrowed) or NULL after answering. */
static json_t *batch_entries(call *c) {
    json_t *e = json_object_get(c->in, "Entries");
    if (!e || json_is_null(e))
        return sqs_fail(&c->q, &E_MISSING, "The request must contain the parameter Entries."), NULL;
    if (!json_is_array(e)) return sqs_fail(&c->q, &E_VALUE, "Entries must be a list."), NULL;
    size_t n = json_array_size(e);
    if (n == 0)
        return sqs_fail(&c->q, &E_EMPTY_BATCH, "There should be at least one entry in the request."), NULL;
    if (n > SQS_BATCH_MAX)
        return sqs_fail(&c->q, &E_BATCH_MANY,
                        "Maximum number of entries per request are %d. You have sent %zu.", SQS_BATCH_MAX, n),
               NULL;
    for (size_t i = 0; i < n; i++) {
        json_t *x = json_array_get(e, i);
        const char *id = json_string_value(json_object_get(x, "Id"));
        if (!json_is_object(x) || !entry_id_ok(id))
            return sqs_fail(&c->q, &E_BATCH_ID,
                            "A batch entry id can only contain alphanumeric characters, "
                            "hyphens and underscores. It can be at most 80 letters long."),
                   NULL;
        for (size_t j = 0; j < i; j++)
            if (strcmp(id, json_string_value(json_object_get(json_array_get(e, j), "Id"))) == 0)
                return sqs_fail(&c->q, &E_BATCH_IDS, "Id %s repeated.", id), NULL;
    }
    return e;
}

static json_t *entry_failed(const char *id, const sqs_err *e, const char *msg) {
    return json_pack("{s:s,s:b,s:s,s:s}", "Id", id, "SenderFault", e->status < 500, "Code", e->code,
                     "Message", msg);
}

/* The largest message the queue takes: its MaximumMessageSize, within the
 * server's limit. */
static size_t max_message(const call *c, const sl_queue_info *qi) {
    size_t m = qi->opts.max_bytes > 0 ? (size_t)qi->opts.max_bytes : SQS_SIZE_MAX;
    return m < c->s->cfg.max_message_bytes ? m : c->s->cfg.max_message_bytes;
}

/* --- Queues ------------------------------------------------------------- */

/* The attributes a queue may be created with, and how each maps onto the
 * options. */
static int set_attr(call *c, sl_queue_opts *o, const char *name, const char *v) {
    long long x;
    const struct {
        const char *name;
        int *field;
        long long lo, hi;
    } ints[] = {{"VisibilityTimeout", &o->visibility_s, 0, SQS_VISIBILITY_MAX},
                {"DelaySeconds", &o->delay_s, 0, SQS_DELAY_MAX},
                {"ReceiveMessageWaitTimeSeconds", &o->wait_s, 0, SQS_WAIT_MAX},
                {"MaximumMessageSize", &o->max_bytes, 1024, SQS_SIZE_MAX}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        if (strcmp(name, ints[i].name) != 0) continue;
        if (sl_api_parse_uint(v, ints[i].lo, ints[i].hi, &x))
            return sqs_fail(&c->q, &E_ATTR_VALUE,
                            "Invalid value for the parameter %s: it is an integer from %lld "
                            "to %lld.",
                            name, ints[i].lo, ints[i].hi),
                   -1;
        *ints[i].field = (int)x;
        return 0;
    }
    if (strcmp(name, "MessageRetentionPeriod") == 0) {
        if (sl_api_parse_uint(v, 60, 1209600, &x))
            return sqs_fail(&c->q, &E_ATTR_VALUE,
                            "Invalid value for the parameter MessageRetentionPeriod: it is an "
                            "integer from 60 to 1209600."),
                   -1;
        o->retention_s = x;
        return 0;
    }
    if (strcmp(name, "RedrivePolicy") == 0) {
        if (!*v) {
            o->dlq[0] = '\0';
            return 0;
        }
        json_t *p = json_loads(v, 0, NULL);
        const char *arn = json_string_value(json_object_get(p, "deadLetterTargetArn"));
        long long count = -1;
        int bad = !json_is_object(p) || !arn || int_of(json_object_get(p, "maxReceiveCount"), &count) ||
                  count < 1 || count > 1000;
        /* arn:aws:sqs:region:account:queue, of this account. */
        const char *q = arn ? strrchr(arn, ':') : NULL;
        char prefix[160];
        if (!bad) {
            size_t an = (size_t)(q - arn);
            snprintf(prefix, sizeof prefix, ":%s", c->account);
            size_t pn = strlen(prefix);
            bad = strncmp(arn, "arn:aws:sqs:", 12) != 0 || an < pn || strncmp(q - pn, prefix, pn) != 0 ||
                  !sl_name_valid(q + 1);
        }
        if (!bad) {
            snprintf(o->dlq, sizeof o->dlq, "%s", q + 1);
            o->max_delivery_count = (int)count;
        }
        json_decref(p);
        if (bad)
            return sqs_fail(&c->q, &E_ATTR_VALUE,
                            "Value %.300s for parameter RedrivePolicy is invalid. Reason: it is "
                            "{\"deadLetterTargetArn\": an ARN of a queue of this account, "
                            "\"maxReceiveCount\": 1 to 1000}.",
                            v),
                   -1;
        return 0;
    }
    if (strcmp(name, "SqsManagedSseEnabled") == 0 && strcmp(v, "false") == 0) return 0;
    /* FIFO: FifoQueue only when the queue is made; the others only on a
     * FIFO queue (apply_attrs checks, once FifoQueue is known). */
    const struct {
        const char *name, *no, *yes;
        int *field;
    } flags[] = {{"FifoQueue", "false", "true", &o->fifo},
                 {"ContentBasedDeduplication", "false", "true", &o->fifo_content_dedup},
                 {"DeduplicationScope", "queue", "messageGroup", &o->fifo_dedup_group},
                 {"FifoThroughputLimit", "perQueue", "perMessageGroupId", &o->fifo_throughput_group}};
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        if (strcmp(name, flags[i].name) != 0) continue;
        if (i == 0 && strcmp(c->q.action, "CreateQueue") != 0)
            return sqs_fail(&c->q, &E_ATTR_NAME, "FifoQueue cannot be changed after the queue is made."), -1;
        if (strcmp(v, flags[i].no) != 0 && strcmp(v, flags[i].yes) != 0)
            return sqs_fail(&c->q, &E_ATTR_VALUE, "Invalid value for the parameter %s: %s or %s.", name,
                            flags[i].no, flags[i].yes),
                   -1;
        *flags[i].field = strcmp(v, flags[i].yes) == 0;
        return 0;
    }
    if (strcmp(name, "SqsManagedSseEnabled") == 0 || strcmp(name, "KmsMasterKeyId") == 0 ||
        strcmp(name, "KmsDataKeyReusePeriodSeconds") == 0)
        return sqs_fail(&c->q, &E_UNSUPPORTED, "Sluice does not encrypt queues at rest: %s cannot be set.",
                        name),
               -1;
    if (strcmp(name, "Policy") == 0 || strcmp(name, "RedriveAllowPolicy") == 0)
        return sqs_fail(&c->q, &E_UNSUPPORTED,
                        "%s is not supported: Sluice's permissions are its keys and signed "
                        "URLs.",
                        name),
               -1;
    return sqs_fail(&c->q, &E_ATTR_NAME, "Unknown Attribute %.100s.", name), -1;
}

/* Whether the attributes given (a) agree with what the queue has (o). */
static int same_attrs(json_t *a, const sl_queue_opts *given, const sl_queue_opts *o) {
    const char *k;
    json_t *v;
    json_object_foreach(a, k, v) {
        int same =
            strcmp(k, "VisibilityTimeout") == 0               ? given->visibility_s == o->visibility_s
            : strcmp(k, "DelaySeconds") == 0                  ? given->delay_s == o->delay_s
            : strcmp(k, "ReceiveMessageWaitTimeSeconds") == 0 ? given->wait_s == o->wait_s
            : strcmp(k, "MaximumMessageSize") == 0            ? given->max_bytes == o->max_bytes
            : strcmp(k, "MessageRetentionPeriod") == 0        ? given->retention_s == o->retention_s
            : strcmp(k, "RedrivePolicy") == 0
                ? strcmp(given->dlq, o->dlq) == 0 &&
                      (!o->dlq[0] || given->max_delivery_count == o->max_delivery_count)
            : strcmp(k, "FifoQueue") == 0                 ? given->fifo == o->fifo
            : strcmp(k, "ContentBasedDeduplication") == 0 ? given->fifo_content_dedup == o->fifo_content_dedup
            : strcmp(k, "DeduplicationScope") == 0        ? given->fifo_dedup_group == o->fifo_dedup_group
            : strcmp(k, "FifoThroughputLimit") == 0 ? given->fifo_throughput_group == o->fifo_throughput_group
                                                    : 1;
        if (!same) return 0;
    }
    return 1;
}

/* The Attributes of CreateQueue or SetQueueAttributes onto o: 0, or -1
 * after answering. */
static int apply_attrs(call *c, json_t *attrs, sl_queue_opts *o) {
    if (attrs && !json_is_null(attrs) && !json_is_object(attrs))
        return sqs_fail(&c->q, &E_VALUE, "Attributes must be a map."), -1;
    const char *k;
    json_t *v;
    json_object_foreach(attrs, k, v) {
        if (!json_is_string(v))
            return sqs_fail(&c->q, &E_ATTR_VALUE, "Value for attribute %.100s must be a string.", k), -1;
        if (set_attr(c, o, k, json_string_value(v))) return -1;
    }
    if (o->dlq[0] && strcmp(o->dlq, o->name) == 0)
        return sqs_fail(&c->q, &E_ATTR_VALUE,
                        "Value for parameter RedrivePolicy is invalid. Reason: a queue cannot be "
                        "its own dead-letter queue."),
               -1;
    static const char *const fifo_only[] = {"ContentBasedDeduplication", "DeduplicationScope",
                                            "FifoThroughputLimit"};
    for (size_t i = 0; !o->fifo && i < sizeof fifo_only / sizeof fifo_only[0]; i++)
        if (json_object_get(attrs, fifo_only[i]))
            return sqs_fail(&c->q, &E_ATTR_NAME, "Unknown Attribute %s: only FIFO queues have it.",
                            fifo_only[i]),
                   -1;
    /* A dead-letter queue is of its source's kind. */
    sl_queue_info dq;
    if (o->dlq[0] && sl_queue_get(c->s->cfg.engine, c->account, o->dlq, &dq) == 0 && dq.opts.fifo != o->fifo)
        return sqs_fail(&c->q, &E_ATTR_VALUE,
                        "Value for parameter RedrivePolicy is invalid. Reason: Dead-letter queue must be "
                        "same type of queue as the source."),
               -1;
    return 0;
}

#define SQS_TAG_KEY_MAX 128
#define SQS_TAG_VALUE_MAX 256

/* A tag key (1..128 characters) or value (0..256): letters, digits and
 * spaces in any language, and _ . : / = + - @, as AWS's tagging rules. */
static int tag_text_ok(const char *s, size_t lo, size_t hi) {
    size_t chars = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p & 0xC0) != 0x80) chars++; /* the input is valid UTF-8 (JSON) */
        if (*p < 0x80 && !strchr("_.:/=+-@ ", *p) && !(*p >= '0' && *p <= '9') &&
            !((*p | 0x20) >= 'a' && (*p | 0x20) <= 'z'))
            return 0;
    }
    return chars >= lo && chars <= hi;
}

/* The tag map parameter name: 0 with *out set (NULL when absent and not
 * required), or -1 after answering. */
static int tags_param(call *c, const char *name, int required, json_t **out) {
    json_t *t = json_object_get(c->in, name);
    *out = NULL;
    if (!t || json_is_null(t)) {
        if (!required) return 0;
        return sqs_fail(&c->q, &E_MISSING, "The request must contain the parameter %s.", name), -1;
    }
    if (!json_is_object(t)) return sqs_fail(&c->q, &E_VALUE, "%s must be a map of strings.", name), -1;
    if (json_object_size(t) > SL_QUEUE_TAGS_MAX)
        return sqs_fail(&c->q, &E_VALUE, "Too many tags: a queue has at most %d.", SL_QUEUE_TAGS_MAX), -1;
    const char *k;
    json_t *v;
    json_object_foreach(t, k, v) {
        if (!tag_text_ok(k, 1, SQS_TAG_KEY_MAX) || strncmp(k, "aws:", 4) == 0)
            return sqs_fail(&c->q, &E_VALUE,
                            "The tag key '%.128s' is invalid: 1 to 128 letters, digits, spaces or _.:/=+-@, "
                            "not starting with 'aws:'.",
                            k),
                   -1;
        if (!json_is_string(v) || !tag_text_ok(json_string_value(v), 0, SQS_TAG_VALUE_MAX))
            return sqs_fail(&c->q, &E_VALUE,
                            "The value of the tag '%.128s' is invalid: up to 256 letters, digits, spaces or "
                            "_.:/=+-@.",
                            k),
                   -1;
    }
    *out = t;
    return 0;
}

/* What a create or update of queue o that returned SL_EINVAL (with err)
 * answers: the DLQ it names does not exist. */
static int bad_dlq(call *c, const char *err) {
    return sqs_fail(&c->q, &E_ATTR_VALUE, "Value for parameter RedrivePolicy is invalid. Reason: %s.",
                    err[0] ? err : "Dead letter target does not exist");
}

static int a_create_queue(call *c) {
    const char *name;
    if (param_str(c, "QueueName", 1, &name) < 0) return SL_HTTP_DONE;
    if (!sl_sqs_queue_name_ok(name))
        return sqs_fail(&c->q, &E_VALUE,
                        "Can only include alphanumeric characters, hyphens, or underscores. 1 to 80 "
                        "in length");
    size_t nl = strlen(name);
    int fifo_name = nl > 5 && strcmp(name + nl - 5, ".fifo") == 0;
    /* The JSON protocol names them "tags"; the query protocol's Tag.N.Key
     * decode as "Tags". */
    json_t *tags;
    if (tags_param(c, json_object_get(c->in, "tags") ? "tags" : "Tags", 0, &tags)) return SL_HTTP_DONE;
    sl_queue_opts o;
    sl_queue_opts_default(&o);
    snprintf(o.name, sizeof o.name, "%s", name);
    json_t *attrs = json_object_get(c->in, "Attributes");
    if (apply_attrs(c, attrs, &o)) return SL_HTTP_DONE;
    if (fifo_name != o.fifo)
        return sqs_fail(&c->q, &E_VALUE,
                        fifo_name
                            ? "A queue named .fifo is a FIFO queue: set its attribute FifoQueue to true."
                            : "The name of a FIFO queue must end with the .fifo suffix.");
    char err[256] = "", url[512], *tags_json = NULL;
    if (json_object_size(tags) && !(tags_json = json_dumps(tags, JSON_COMPACT)))
        return sqs_engine(&c->q, SL_ENOMEM, NULL);
    int rc = sl_queue_create_tagged(c->s->cfg.engine, c->account, &o, tags_json, err, sizeof err);
    free(tags_json);
    if (rc == SL_EINVAL && o.dlq[0]) return bad_dlq(c, err);
    if (rc == SL_EEXISTS) {
        sl_queue_info qi;
        if ((rc = sl_queue_get(c->s->cfg.engine, c->account, name, &qi)) != 0)
            return sqs_engine(&c->q, rc, name);
        if (!same_attrs(attrs, &o, &qi.opts))
            return sqs_fail(&c->q, &E_QUEUE_EXISTS,
                            "A queue already exists with the same name and a different "
                            "value for attribute(s) given.");
        rc = 0;
    }
    if (rc) return sqs_engine(&c->q, rc, name);
    queue_url(c, name, url, sizeof url);
    return sqs_ok(&c->q, json_pack("{s:s}", "QueueUrl", url));
}

static int a_set_queue_attributes(call *c) {
    sl_queue_info qi;
    if (call_queue_info(c, &qi)) return SL_HTTP_DONE;
    json_t *attrs = json_object_get(c->in, "Attributes");
    if (!attrs || json_is_null(attrs))
        return sqs_fail(&c->q, &E_MISSING, "The request must contain the parameter Attributes.");
    sl_queue_opts o = qi.opts;
    if (apply_attrs(c, attrs, &o)) return SL_HTTP_DONE;
    char err[256] = "";
    int rc = sl_queue_update(c->s->cfg.engine, c->account, &o, err, sizeof err);
    if (rc == SL_EINVAL && o.dlq[0]) return bad_dlq(c, err);
    return rc ? sqs_engine(&c->q, rc, c->queue) : sqs_ok_empty(&c->q);
}

static int a_get_queue_url(call *c) {
    const char *name, *owner;
    if (param_str(c, "QueueName", 1, &name) < 0 || param_str(c, "QueueOwnerAWSAccountId", 0, &owner) < 0)
        return SL_HTTP_DONE;
    if (owner && strcmp(owner, c->account) != 0)
        return sqs_fail(&c->q, &E_DENIED, "Access to the queues of account %.100s is denied.", owner);
    sl_queue_info qi;
    int rc = sl_name_valid(name) ? sl_queue_get(c->s->cfg.engine, c->account, name, &qi) : SL_ENOTFOUND;
    if (rc) return sqs_engine(&c->q, rc, name);
    char url[512];
    queue_url(c, name, url, sizeof url);
    return sqs_ok(&c->q, json_pack("{s:s}", "QueueUrl", url));
}

/* ListQueues and ListDeadLetterSourceQueues: the account's queue URLs in
 * name order, those after NextToken (the last name of the page before)
 * that have the prefix, or that dead-letter into dlq. */
static int list_urls(call *c, const char *prefix, const char *dlq, const char *key) {
    long long max;
    const char *token;
    if (param_int(c, c->in, "MaxResults", 1, SQS_LIST_MAX, SQS_LIST_MAX, &max) ||
        param_str(c, "NextToken", 0, &token) < 0)
        return SL_HTTP_DONE;
    int paged = json_object_get(c->in, "MaxResults") != NULL;
    sl_queue_info *qs = NULL;
    size_t n = 0;
    int rc = sl_queue_list(c->s->cfg.engine, c->account, &qs, &n);
    if (rc) return sqs_engine(&c->q, rc, NULL);
    json_t *urls = json_array(), *out = json_object();
    size_t got = 0, i = 0;
    const char *last = NULL;
    for (; i < n && urls; i++) {
        const sl_queue_opts *o = &qs[i].opts;
        if (token && strcmp(o->name, token) <= 0) continue;
        if (prefix && strncmp(o->name, prefix, strlen(prefix)) != 0) continue;
        if (dlq && strcmp(o->dlq, dlq) != 0) continue;
        if ((long long)got == max) break;
        char url[512];
        queue_url(c, o->name, url, sizeof url);
        json_array_append_new(urls, json_string(url));
        last = o->name;
        got++;
    }
    if (got > 0 || dlq) json_object_set(out, key, urls);
    if (paged && i < n && last) json_object_set_new(out, "NextToken", json_string(last));
    json_decref(urls);
    free(qs);
    return sqs_ok(&c->q, out);
}

static int a_list_queues(call *c) {
    const char *prefix;
    if (param_str(c, "QueueNamePrefix", 0, &prefix) < 0) return SL_HTTP_DONE;
    return list_urls(c, prefix, NULL, "QueueUrls");
}

static int a_list_dlq_sources(call *c) {
    sl_queue_info qi;
    if (call_queue_info(c, &qi)) return SL_HTTP_DONE;
    return list_urls(c, NULL, c->queue, "queueUrls");
}

static int a_delete_queue(call *c) {
    if (call_queue(c)) return SL_HTTP_DONE;
    int rc = sl_queue_delete(c->s->cfg.engine, c->account, c->queue);
    return rc ? sqs_engine(&c->q, rc, c->queue) : sqs_ok_empty(&c->q);
}

static int a_purge_queue(call *c) {
    if (call_queue(c)) return SL_HTTP_DONE;
    int rc = sl_queue_purge(c->s->cfg.engine, c->account, c->queue);
    return rc ? sqs_engine(&c->q, rc, c->queue) : sqs_ok_empty(&c->q);
}

static const char *const queue_attr_names[] = {"ApproximateNumberOfMessages",
                                               "ApproximateNumberOfMessagesNotVisible",
                                               "ApproximateNumberOfMessagesDelayed",
                                               "CreatedTimestamp",
                                               "LastModifiedTimestamp",
                                               "DelaySeconds",
                                               "MaximumMessageSize",
                                               "MessageRetentionPeriod",
                                               "QueueArn",
                                               "ReceiveMessageWaitTimeSeconds",
                                               "VisibilityTimeout",
                                               "RedrivePolicy",
                                               "SqsManagedSseEnabled",
                                               "FifoQueue",
                                               "ContentBasedDeduplication",
                                               "DeduplicationScope",
                                               "FifoThroughputLimit"};

static int a_get_queue_attributes(call *c) {
    if (call_queue(c)) return SL_HTTP_DONE;
    json_t *names = json_object_get(c->in, "AttributeNames");
    if (names && !json_is_null(names) && !json_is_array(names))
        return sqs_fail(&c->q, &E_VALUE, "AttributeNames must be a list.");
    enum { NATTR = sizeof queue_attr_names / sizeof queue_attr_names[0] };
    int want[NATTR] = {0}, any = 0;
    for (size_t i = 0; i < json_array_size(names); i++) {
        const char *n = json_string_value(json_array_get(names, i));
        int all = n && strcmp(n, "All") == 0, known = all;
        for (size_t k = 0; n && k < NATTR; k++)
            if (all || strcmp(n, queue_attr_names[k]) == 0) known = want[k] = any = 1;
        if (!known)
            return sqs_fail(&c->q, &E_ATTR_NAME, "Unknown Attribute %.100s.", n ? n : "(not a string)");
    }
    sl_queue_info qi;
    sl_queue_statistics st = {0};
    int rc = sl_queue_get(c->s->cfg.engine, c->account, c->queue, &qi);
    if (rc == 0 && (want[0] || want[1] || want[2]))
        rc = sl_queue_stats(c->s->cfg.engine, c->account, c->queue, &st);
    if (rc) return sqs_engine(&c->q, rc, c->queue);
    json_t *out = json_object(), *a = json_object();
    char v[512];
    for (size_t k = 0; k < NATTR && a; k++) {
        if (!want[k]) continue;
        const sl_queue_opts *o = &qi.opts;
        v[0] = '\0';
        switch (k) {
        case 0:
            snprintf(v, sizeof v, "%lld", (long long)st.visible);
            break;
        case 1:
            snprintf(v, sizeof v, "%lld", (long long)st.in_flight);
            break;
        case 2:
            snprintf(v, sizeof v, "%lld", (long long)st.delayed);
            break;
        case 3:
        case 4:
            snprintf(v, sizeof v, "%lld", (long long)(qi.created_ms / 1000));
            break;
        case 5:
            snprintf(v, sizeof v, "%d", o->delay_s);
            break;
        case 6:
            snprintf(v, sizeof v, "%zu", max_message(c, &qi));
            break;
        case 7:
            snprintf(v, sizeof v, "%lld", (long long)o->retention_s);
            break;
        case 8:
            queue_arn(c, c->queue, v, sizeof v);
            break;
        case 9:
            snprintf(v, sizeof v, "%d", o->wait_s);
            break;
        case 10:
            snprintf(v, sizeof v, "%d", o->visibility_s);
            break;
        case 11:
            if (o->dlq[0]) {
                char arn[300];
                queue_arn(c, o->dlq, arn, sizeof arn);
                snprintf(v, sizeof v, "{\"deadLetterTargetArn\":\"%s\",\"maxReceiveCount\":%d}", arn,
                         o->max_delivery_count);
            }
            break;
        case 12:
            snprintf(v, sizeof v, "false");
            break;
        /* FIFO queues' own, only on them. */
        case 13:
            if (o->fifo) snprintf(v, sizeof v, "true");
            break;
        case 14:
            if (o->fifo) snprintf(v, sizeof v, "%s", o->fifo_content_dedup ? "true" : "false");
            break;
        case 15:
            if (o->fifo) snprintf(v, sizeof v, "%s", o->fifo_dedup_group ? "messageGroup" : "queue");
            break;
        default:
            if (o->fifo)
                snprintf(v, sizeof v, "%s", o->fifo_throughput_group ? "perMessageGroupId" : "perQueue");
            break;
        }
        if (v[0]) json_object_set_new(a, queue_attr_names[k], json_string(v));
    }
    if (any && json_object_size(a) > 0) json_object_set(out, "Attributes", a);
    json_decref(a);
    return sqs_ok(&c->q, out);
}

/* --- Sending ------------------------------------------------------------ */

/* A message to send, checked: its engine form and its answer. */
typedef struct {
    const char *id; /* the batch entry's, NULL for SendMessage */
    sl_put put;
    char *attrs; /* malloc'ed: the stored attributes */
    char md5_body[33], md5_attrs[33], md5_sys[33];
    size_t bytes; /* as AWS counts them against the size limit */
    /* FIFO queues: the group, and the deduplication id (given, or the
     * body's SHA-256 when the queue deduplicates by content). */
    const char *group;
    char dedup[SL_FIFO_GROUP_MAX + 1];
} outgoing;

/* A MessageGroupId or MessageDeduplicationId: 1..128 of letters, digits
 * and punctuation. */
static int fifo_id_ok(const char *s) {
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > SL_FIFO_GROUP_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x21 || s[i] > 0x7e) return 0;
    return 1;
}

/* The FIFO parameters of message m onto o: NULL, or the error. */
static const sqs_err *outgoing_fifo(json_t *m, const sl_queue_info *qi, outgoing *o, const char *text,
                                    size_t len, char *err, size_t cap) {
    json_t *g = json_object_get(m, "MessageGroupId"), *d = json_object_get(m, "MessageDeduplicationId");
    if (g && json_is_null(g)) g = NULL;
    if (d && json_is_null(d)) d = NULL;
    if (!qi->opts.fifo) {
        if (d) {
            snprintf(err, cap,
                     "The request include parameter MessageDeduplicationId that is not valid for this queue "
                     "type.");
            return &E_VALUE;
        }
        return NULL; /* a MessageGroupId on a standard queue is allowed, and changes nothing */
    }
    if (!g) {
        snprintf(err, cap, "The request must contain the parameter MessageGroupId.");
        return &E_MISSING;
    }
    if (!fifo_id_ok(json_string_value(g)) || (d && !fifo_id_ok(json_string_value(d)))) {
        snprintf(err, cap,
                 "Value for parameter %s is invalid. Reason: 1 to 128 letters, digits or punctuation.",
                 fifo_id_ok(json_string_value(g)) ? "MessageDeduplicationId" : "MessageGroupId");
        return &E_VALUE;
    }
    json_t *delay = json_object_get(m, "DelaySeconds");
    long long dv = 0;
    if (delay && !json_is_null(delay) && (int_of(delay, &dv) || dv != 0)) {
        snprintf(err, cap,
                 "Value for parameter DelaySeconds is invalid. Reason: The request include parameter that is "
                 "not valid for this queue type.");
        return &E_VALUE;
    }
    o->group = json_string_value(g);
    if (d) {
        snprintf(o->dedup, sizeof o->dedup, "%s", json_string_value(d));
    } else if (qi->opts.fifo_content_dedup) {
        unsigned char h[32];
        if (!EVP_Digest(text, len, h, NULL, EVP_sha256(), NULL)) {
            snprintf(err, cap, "out of memory");
            return &E_UNAVAILABLE;
        }
        for (int i = 0; i < 32; i++)
            snprintf(o->dedup + 2 * i, 3, "%02x", h[i]);
    } else {
        snprintf(err, cap,
                 "The queue should either have ContentBasedDeduplication enabled or MessageDeduplicationId "
                 "provided explicitly");
        return &E_VALUE;
    }
    return NULL;
}

/* Checks one message (a SendMessage's body, or a batch entry) and builds
 * it. Returns NULL when it is good, or the error (with its message in
 * err) that answers it. */
static const sqs_err *outgoing_make(call *c, json_t *m, const sl_queue_info *qi, outgoing *o, char *err,
                                    size_t cap) {
    json_t *body = json_object_get(m, "MessageBody");
    if (!body || json_is_null(body)) {
        snprintf(err, cap, "The request must contain the parameter MessageBody.");
        return &E_MISSING;
    }
    const char *text = json_string_value(body);
    size_t len = json_string_length(body);
    if (!text || len == 0) {
        snprintf(err, cap, "The request must contain the parameter MessageBody.");
        return &E_MISSING;
    }
    if (strlen(text) != len || !sl_sqs_text_ok(text, len)) {
        snprintf(err, cap,
                 "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to "
                 "#xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF");
        return &E_CONTENTS;
    }
    const sqs_err *fe = outgoing_fifo(m, qi, o, text, len, err, cap);
    if (fe) return fe;
    long long delay = qi->opts.delay_s;
    json_t *d = json_object_get(m, "DelaySeconds");
    if (d && !json_is_null(d) && (int_of(d, &delay) || delay < 0 || delay > SQS_DELAY_MAX)) {
        snprintf(err, cap,
                 "Value for parameter DelaySeconds is invalid. Reason: DelaySeconds must be >= 0 and "
                 "<= 900.");
        return &E_VALUE;
    }
    json_t *ma = json_object_get(m, "MessageAttributes"), *sa = json_object_get(m, "MessageSystemAttributes");
    o->bytes = len;
    if (ma && json_is_null(ma)) ma = NULL;
    if (sa && json_is_null(sa)) sa = NULL;
    if ((ma && sl_sqs_attrs_check(ma, 0, &o->bytes, err, cap)) ||
        (sa && sl_sqs_attrs_check(sa, 1, &o->bytes, err, cap)))
        return &E_VALUE;
    size_t max = max_message(c, qi);
    if (o->bytes > max) {
        snprintf(err, cap,
                 "One or more parameters are invalid. Reason: Message must be shorter than %zu bytes.", max);
        return &E_VALUE;
    }
    sl_sqs_md5_hex(text, len, o->md5_body);
    o->md5_attrs[0] = o->md5_sys[0] = '\0';
    if (json_object_size(ma) == 0 && json_object_size(sa) == 0) {
        o->put = (sl_put){.body = text, .len = len, .delay_s = (int)delay};
        return NULL;
    }
    json_t *stored = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(ma, k, v) {
        const char *t = json_string_value(json_object_get(v, "DataType"));
        json_object_set(stored, k, strcmp(t, "String") == 0 ? json_object_get(v, "StringValue") : v);
    }
    if (json_object_size(sa) > 0) json_object_set(stored, SYSTEM_KEY, sa);
    if (!stored || (json_object_size(ma) > 0 && sl_sqs_md5_attrs(ma, o->md5_attrs)) ||
        (json_object_size(sa) > 0 && sl_sqs_md5_attrs(sa, o->md5_sys)) ||
        (json_object_size(stored) > 0 && !(o->attrs = json_dumps(stored, JSON_COMPACT | JSON_SORT_KEYS)))) {
        json_decref(stored);
        snprintf(err, cap, "out of memory");
        return &E_UNAVAILABLE;
    }
    json_decref(stored);
    o->put = (sl_put){.body = text, .len = len, .delay_s = (int)delay, .attrs_json = o->attrs};
    return NULL;
}

/* A send parked on the store: the messages' bytes live in body. */
typedef struct {
    parked p; /* first */
    size_t n; /* messages sent */
    outgoing out[SQS_BATCH_MAX];
    json_t *failed; /* the batch's entries that were not sent */
} send_state;

static void send_state_free(void *p) {
    send_state *st = p;
    parked_clear(&st->p);
    for (size_t i = 0; i < st->n; i++)
        free(st->out[i].attrs);
    json_decref(st->failed);
    free(st);
}

/* A message sent: SendMessage's answer, or an entry of SendMessageBatch's. */
static void sent_write(sl_jw *w, const outgoing *o, const char *id, int64_t seq) {
    sl_jw_open(w, '{');
    sl_jw_kstr(w, "MessageId", id);
    sl_jw_kstr(w, "MD5OfMessageBody", o->md5_body);
    if (o->group) {
        char sn[24];
        snprintf(sn, sizeof sn, "%020lld", (long long)seq);
        sl_jw_kstr(w, "SequenceNumber", sn);
    }
    if (o->md5_attrs[0]) sl_jw_kstr(w, "MD5OfMessageAttributes", o->md5_attrs);
    if (o->md5_sys[0]) sl_jw_kstr(w, "MD5OfMessageSystemAttributes", o->md5_sys);
    if (o->id) sl_jw_kstr(w, "Id", o->id);
    sl_jw_close(w, '}');
}

static int send_resume(sl_http_req *r, void *state) {
    send_state *st = state;
    sl_op *op = parked_take(r, &st->p);
    if (!op) return SL_HTTP_WAIT;
    char ids[SQS_BATCH_MAX][SL_MSGID_LEN + 1];
    int rc = sl_msg_put_finish(op, ids);
    if (rc) return sqs_engine(&st->p.q, rc, st->p.queue);
    sl_jw w = {0};
    if (!st->p.batch) {
        sent_write(&w, &st->out[0], ids[0], 0);
        return sqs_ok_jw(&st->p.q, &w);
    }
    sl_jw_open(&w, '{');
    sl_jw_key(&w, "Successful");
    sl_jw_open(&w, '[');
    for (size_t i = 0; i < st->n; i++)
        sent_write(&w, &st->out[i], ids[i], 0);
    sl_jw_close(&w, ']');
    if (json_array_size(st->failed) > 0) sl_jw_kjson(&w, "Failed", st->failed);
    sl_jw_close(&w, '}');
    return sqs_ok_jw(&st->p.q, &w);
}

/* A FIFO queue's sends, one after the other in the batch's order (their
 * order in their groups), on this store thread. An entry that fails
 * stops those after it in its group, so none overtakes it. */
static int send_fifo(call *c, send_state *st) {
    sl_jw w = {0};
    int rc = 0;
    if (st->p.batch) {
        sl_jw_open(&w, '{');
        sl_jw_key(&w, "Successful");
        sl_jw_open(&w, '[');
    }
    for (size_t i = 0; i < st->n; i++) {
        outgoing *o = &st->out[i];
        int blocked = 0;
        for (size_t k = 0; k < json_array_size(st->failed) && !blocked; k++) {
            const char *fg = json_string_value(json_object_get(json_array_get(st->failed, k), "Group"));
            blocked = fg && strcmp(fg, o->group) == 0;
        }
        sl_fifo_msg m = {.body = o->put.body,
                         .len = o->put.len,
                         .attrs_json = o->put.attrs_json,
                         .group = o->group,
                         .dedup = o->dedup};
        sl_fifo_sent sent;
        rc = blocked ? SL_EUNAVAILABLE : sl_fifo_put(c->s->cfg.engine, c->account, c->queue, &m, &sent);
        if (rc && !st->p.batch) break;
        if (rc) {
            json_t *f = entry_failed(o->id, &E_UNAVAILABLE,
                                     blocked ? "An earlier message of its group in this batch was not sent."
                                             : sl_errmsg(rc));
            json_object_set_new(f, "Group", json_string(o->group)); /* removed below */
            json_array_append_new(st->failed, f);
            continue;
        }
        sent_write(&w, o, sent.id, sent.seq);
    }
    if (!st->p.batch) {
        send_state_free(st);
        if (rc) {
            size_t n;
            free(sl_jw_take(&w, &n));
            return sqs_engine(&c->q, rc, c->queue);
        }
        return sqs_ok_jw(&c->q, &w);
    }
    json_t *f;
    size_t i;
    json_array_foreach(st->failed, i, f) json_object_del(f, "Group");
    sl_jw_close(&w, ']');
    if (json_array_size(st->failed) > 0) sl_jw_kjson(&w, "Failed", st->failed);
    sl_jw_close(&w, '}');
    send_state_free(st);
    return sqs_ok_jw(&c->q, &w);
}

/* Starts the put of st's messages and parks on it, or answers. */
static int send_start(call *c, send_state *st) {
    if (st->n > 0 && st->out[0].group) return send_fifo(c, st);
    sl_put puts[SQS_BATCH_MAX];
    for (size_t i = 0; i < st->n; i++)
        puts[i] = st->out[i].put;
    parked_init(&st->p, c, send_resume, st->p.batch);
    int rc = sl_msg_put_start(c->s->cfg.engine, c->account, c->queue, puts, st->n, sl_api_op_wake, c->r,
                              &st->p.op);
    return park(c, rc, &st->p, send_state_free);
}

/* A FIFO queue's sends and deletes wait on the store (fifo.c): on the
 * event loop, they ask for the store pool. */
static int fifo_off_loop(call *c, const sl_queue_info *qi) {
    return qi->opts.fifo && !sl_http_on_pool(c->r);
}

static int a_send_message(call *c) {
    sl_queue_info qi;
    if (call_queue_info(c, &qi)) return SL_HTTP_DONE;
    if (fifo_off_loop(c, &qi)) return SL_HTTP_POOL;
    send_state *st = calloc(1, sizeof *st);
    if (!st) return sqs_engine(&c->q, SL_ENOMEM, c->queue);
    char err[512];
    const sqs_err *e = outgoing_make(c, c->in, &qi, &st->out[0], err, sizeof err);
    if (e) {
        free(st->out[0].attrs);
        free(st);
        return sqs_fail(&c->q, e, "%s", err);
    }
    st->n = 1;
    return send_start(c, st);
}

static int a_send_message_batch(call *c) {
    json_t *entries;
    sl_queue_info qi;
    if (call_queue_info(c, &qi) || !(entries = batch_entries(c))) return SL_HTTP_DONE;
    if (fifo_off_loop(c, &qi)) return SL_HTTP_POOL;
    send_state *st = calloc(1, sizeof *st);
    if (!st || !(st->failed = json_array())) {
        free(st);
        return sqs_engine(&c->q, SL_ENOMEM, c->queue);
    }
    st->p.batch = 1;
    size_t total = 0;
    for (size_t i = 0; i < json_array_size(entries); i++) {
        json_t *m = json_array_get(entries, i);
        const char *id = json_string_value(json_object_get(m, "Id"));
        outgoing *o = &st->out[st->n];
        memset(o, 0, sizeof *o);
        char err[512];
        const sqs_err *e = outgoing_make(c, m, &qi, o, err, sizeof err);
        if (e == &E_UNAVAILABLE) {
            free(o->attrs);
            send_state_free(st);
            return sqs_engine(&c->q, SL_ENOMEM, c->queue);
        }
        if (e) {
            free(o->attrs);
            json_array_append_new(st->failed, entry_failed(id, e, err));
            continue;
        }
        o->id = id;
        total += o->bytes;
        st->n++;
    }
    size_t max = max_message(c, &qi);
    if (total > max) {
        send_state_free(st);
        return sqs_fail(&c->q, &E_BATCH_LONG,
                        "Batch requests cannot be longer than %zu bytes. You have sent %zu "
                        "bytes.",
                        max, total);
    }
    if (st->n == 0) { /* every entry failed: nothing to put */
        json_t *j = json_pack("{s:[],s:O}", "Successful", "Failed", st->failed);
        send_state_free(st);
        return sqs_ok(&c->q, j);
    }
    return send_start(c, st);
}

/* --- Receiving ---------------------------------------------------------- */

enum {
    SYS_SENT = 1,
    SYS_COUNT = 2,
    SYS_FIRST = 4,
    SYS_SENDER = 8,
    SYS_TRACE = 16,
    SYS_GROUP = 32,
    SYS_DEDUP = 64,
    SYS_SEQ = 128
};

/* What a receive returns of each message. */
typedef struct {
    sl_api_sqs *s;
    sq q;
    char account[SL_NAME_MAX + 1], queue[SL_NAME_MAX + 1];
    unsigned sys;  /* SYS_* asked for */
    json_t *names; /* MessageAttributeNames, or NULL */
} rx;

static void rx_free(void *p) {
    rx *x = p;
    json_decref(x->names);
    free(x);
}

/* Whether MessageAttributeNames asks for attribute k: "All", ".*", a
 * "prefix.*" or the name itself. */
static int rx_wants(const rx *x, const char *k) {
    for (size_t i = 0; i < json_array_size(x->names); i++) {
        const char *n = json_string_value(json_array_get(x->names, i));
        size_t nl = n ? strlen(n) : 0;
        if (!n) continue;
        if (strcmp(n, "All") == 0 || strcmp(n, ".*") == 0 || strcmp(n, k) == 0) return 1;
        if (nl > 2 && strcmp(n + nl - 2, ".*") == 0 && strncmp(k, n, nl - 1) == 0) return 1;
    }
    return 0;
}

static void rx_message(sl_jw *w, const rx *x, const sl_message *m, const char *handle) {
    char md5[33], v[32];
    sl_sqs_md5_hex(m->body, m->len, md5);
    sl_jw_open(w, '{');
    sl_jw_kstr(w, "MessageId", m->id);
    sl_jw_kstr(w, "ReceiptHandle", handle);
    sl_jw_kstr(w, "MD5OfBody", md5);
    sl_jw_key(w, "Body");
    sl_jw_str(w, m->body, m->len);
    /* Most messages have no attributes: "{}" needs no parse (NULL reads as
     * empty), and most receives ask for no system attribute. */
    json_t *stored = m->attrs_json && strcmp(m->attrs_json, "{}") != 0 ? json_loads(m->attrs_json, 0, NULL) : NULL;
    if (!stored && !x->sys) {
        sl_jw_close(w, '}');
        return;
    }
    json_t *attrs = json_object(), *sys = json_object();
    const char *k;
    json_t *a;
    json_object_foreach(stored, k, a) {
        if (strcmp(k, SYSTEM_KEY) == 0 || !rx_wants(x, k)) continue;
        if (json_is_string(a))
            json_object_set_new(attrs, k, json_pack("{s:s,s:O}", "DataType", "String", "StringValue", a));
        else if (json_is_object(a) && json_is_string(json_object_get(a, "DataType")))
            json_object_set(attrs, k, a);
    }
    /* A FIFO queue's message: its group, deduplication id, number and
     * send time, as fifo.c released it. */
    json_t *fifo = json_object_get(stored, "$fifo");
    json_int_t sent_ms = json_is_integer(json_object_get(fifo, "t"))
                             ? json_integer_value(json_object_get(fifo, "t"))
                             : m->enqueued_ms;
    if (x->sys & SYS_SENT) {
        snprintf(v, sizeof v, "%lld", (long long)sent_ms);
        json_object_set_new(sys, "SentTimestamp", json_string(v));
    }
    if ((x->sys & SYS_GROUP) && json_is_string(json_object_get(fifo, "g")))
        json_object_set(sys, "MessageGroupId", json_object_get(fifo, "g"));
    if ((x->sys & SYS_DEDUP) && json_is_string(json_object_get(fifo, "d")))
        json_object_set(sys, "MessageDeduplicationId", json_object_get(fifo, "d"));
    if ((x->sys & SYS_SEQ) && json_is_integer(json_object_get(fifo, "s"))) {
        snprintf(v, sizeof v, "%020lld", (long long)json_integer_value(json_object_get(fifo, "s")));
        json_object_set_new(sys, "SequenceNumber", json_string(v));
    }
    if (x->sys & SYS_COUNT) {
        snprintf(v, sizeof v, "%lld", (long long)m->delivery_count);
        json_object_set_new(sys, "ApproximateReceiveCount", json_string(v));
    }
    if ((x->sys & SYS_FIRST) && m->first_receive_ms > 0) {
        snprintf(v, sizeof v, "%lld", (long long)m->first_receive_ms);
        json_object_set_new(sys, "ApproximateFirstReceiveTimestamp", json_string(v));
    }
    if (x->sys & SYS_SENDER) json_object_set_new(sys, "SenderId", json_string(x->account));
    json_t *trace = json_object_get(json_object_get(json_object_get(stored, SYSTEM_KEY), "AWSTraceHeader"),
                                    "StringValue");
    if ((x->sys & SYS_TRACE) && json_is_string(trace)) json_object_set(sys, "AWSTraceHeader", trace);
    if (json_object_size(sys) > 0) sl_jw_kjson(w, "Attributes", sys);
    if (json_object_size(attrs) > 0 && sl_sqs_md5_attrs(attrs, md5) == 0) {
        sl_jw_kjson(w, "MessageAttributes", attrs);
        sl_jw_kstr(w, "MD5OfMessageAttributes", md5);
    }
    sl_jw_close(w, '}');
    json_decref(stored);
    json_decref(attrs);
    json_decref(sys);
}

static int rx_fail(sl_http_req *r, void *arg, int rc) {
    rx *x = arg;
    sq q = x ? x->q : (sq){.r = r};
    return sqs_engine(&q, rc, x ? x->queue : NULL);
}

static int rx_answer(sl_http_req *r, void *arg, sl_message *m, size_t n) {
    rx *x = arg;
    (void)r; /* x->q.r */
    sl_jw w = {0};
    int rc = 0;
    sl_jw_open(&w, '{');
    if (n > 0) {
        sl_jw_key(&w, "Messages");
        sl_jw_open(&w, '[');
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        char handle[SL_RECEIPT_MAX];
        rc = sl_msg_receipt_sticky(x->s->cfg.engine, x->account, x->queue, &m[i], handle);
        if (rc == 0) rx_message(&w, x, &m[i], handle);
    }
    sl_messages_free(m, n);
    if (n > 0) sl_jw_close(&w, ']');
    sl_jw_close(&w, '}');
    if (rc) {
        free(sl_jw_take(&w, &n));
        return sqs_engine(&x->q, rc, x->queue);
    }
    return sqs_ok_jw(&x->q, &w);
}

/* The system attributes a receive asks for, from AttributeNames and
 * MessageSystemAttributeNames; names SQS knows but that have no value here
 * (FIFO's on a standard queue, DeadLetterQueueSourceArn) return nothing. */
static int rx_system(call *c, unsigned *sys) {
    static const struct {
        const char *name;
        unsigned bit;
    } known[] = {{"All", ~0u},
                 {"SentTimestamp", SYS_SENT},
                 {"ApproximateReceiveCount", SYS_COUNT},
                 {"ApproximateFirstReceiveTimestamp", SYS_FIRST},
                 {"SenderId", SYS_SENDER},
                 {"AWSTraceHeader", SYS_TRACE},
                 {"MessageDeduplicationId", SYS_DEDUP},
                 {"MessageGroupId", SYS_GROUP},
                 {"SequenceNumber", SYS_SEQ},
                 {"DeadLetterQueueSourceArn", 0},
                 {"SqsManagedSseEnabled", 0}};
    const char *params[] = {"AttributeNames", "MessageSystemAttributeNames", "MessageAttributeNames"};
    *sys = 0;
    for (int p = 0; p < 3; p++) {
        json_t *a = json_object_get(c->in, params[p]);
        if (a && !json_is_null(a) && !json_is_array(a))
            return sqs_fail(&c->q, &E_VALUE, "%s must be a list.", params[p]), -1;
        for (size_t i = 0; i < json_array_size(a); i++) {
            const char *n = json_string_value(json_array_get(a, i));
            if (!n) return sqs_fail(&c->q, &E_VALUE, "%s must be a list of strings.", params[p]), -1;
            if (p == 2) continue;
            size_t k = 0;
            while (k < sizeof known / sizeof known[0] && strcmp(known[k].name, n) != 0)
                k++;
            if (k == sizeof known / sizeof known[0])
                return sqs_fail(&c->q, &E_ATTR_NAME, "Unknown Attribute %.100s.", n), -1;
            *sys |= known[k].bit;
        }
    }
    return 0;
}

static int a_receive_message(call *c) {
    sl_queue_info qi;
    if (call_queue_info(c, &qi)) return SL_HTTP_DONE;
    long long max, invis, wait;
    unsigned sys;
    if (param_int(c, c->in, "MaxNumberOfMessages", 1, SQS_RECEIVE_MAX, 1, &max) ||
        param_int(c, c->in, "VisibilityTimeout", 0, SQS_VISIBILITY_MAX, qi.opts.visibility_s, &invis) ||
        param_int(c, c->in, "WaitTimeSeconds", 0, SQS_WAIT_MAX, qi.opts.wait_s, &wait) || rx_system(c, &sys))
        return SL_HTTP_DONE;
    rx *x = calloc(1, sizeof *x);
    if (!x) return sqs_engine(&c->q, SL_ENOMEM, c->queue);
    x->s = c->s;
    x->q = c->q;
    snprintf(x->account, sizeof x->account, "%s", c->account);
    snprintf(x->queue, sizeof x->queue, "%s", c->queue);
    x->sys = sys;
    x->names = json_incref(json_object_get(c->in, "MessageAttributeNames"));
    sl_api_recv_args args = {.engine = c->s->cfg.engine,
                             .account = c->account,
                             .queue = c->queue,
                             .max = (int)max,
                             .invis = (int)invis,
                             .wait_s = (int)wait,
                             .answer = rx_answer,
                             .fail = rx_fail,
                             .arg = x,
                             .arg_free = rx_free};
    return sl_api_recv_begin(c->r, &args);
}

/* --- Deleting and changing visibility ------------------------------------ */

/* A receipt handle that can be one of ours, or NULL. */
static const char *handle_of(json_t *o) {
    const char *h = json_string_value(json_object_get(o, "ReceiptHandle"));
    return h && *h && strlen(h) < SL_RECEIPT_MAX ? h : NULL;
}

/* A delete parked on the store. */
typedef struct {
    parked p;              /* first */
    size_t n;              /* entries */
    int at[SQS_BATCH_MAX]; /* each entry's place among the handles acked, or -1: not one of ours */
    int fifo;              /* a FIFO queue's: the answer releases the groups' next messages */
} del_state;

static void del_state_free(void *p) {
    del_state *st = p;
    parked_clear(&st->p);
    free(st);
}

static int del_answer(del_state *st, const int *rcs) {
    json_t *entries = json_object_get(st->p.body, "Entries");
    /* On a FIFO queue, each message acked lets its group's next one out. */
    for (size_t i = 0; i < st->n && st->fifo; i++) {
        const char *h = handle_of(st->p.batch ? json_array_get(entries, i) : st->p.body);
        if (h && st->at[i] >= 0 && rcs[st->at[i]] == 0) {
            int rc = sl_fifo_acked(st->p.s->cfg.engine, st->p.account, st->p.queue, h);
            if (rc)
                sl_log(SL_INFO, "sqs: after a delete in %s/%s: %s", st->p.account, st->p.queue,
                       sl_strerror(rc));
        }
    }
    if (!st->p.batch) {
        int rc = st->at[0] < 0 ? SL_EINVAL : rcs[st->at[0]];
        if (rc == SL_EINVAL) return sqs_fail(&st->p.q, &E_RECEIPT, "The input receipt handle is invalid.");
        if (rc && rc != SL_ECONFLICT) return sqs_engine(&st->p.q, rc, st->p.queue);
        return sqs_ok_empty(&st->p.q);
    }
    json_t *failed = json_array();
    sl_jw w = {0};
    sl_jw_open(&w, '{');
    sl_jw_key(&w, "Successful");
    sl_jw_open(&w, '[');
    for (size_t i = 0; i < st->n && failed; i++) {
        const char *id = json_string_value(json_object_get(json_array_get(entries, i), "Id"));
        int rc = st->at[i] < 0 ? SL_EINVAL : rcs[st->at[i]];
        if (rc == 0 || rc == SL_ECONFLICT) {
            sl_jw_open(&w, '{');
            sl_jw_kstr(&w, "Id", id);
            sl_jw_close(&w, '}');
        } else if (rc == SL_EINVAL) {
            json_array_append_new(failed,
                                  entry_failed(id, &E_RECEIPT, "The input receipt handle is invalid."));
        } else {
            json_array_append_new(failed, entry_failed(id, &E_UNAVAILABLE, sl_strerror(rc)));
        }
    }
    sl_jw_close(&w, ']');
    if (json_array_size(failed) > 0) sl_jw_kjson(&w, "Failed", failed);
    sl_jw_close(&w, '}');
    if (!failed) w.oom = 1;
    json_decref(failed);
    return sqs_ok_jw(&st->p.q, &w);
}

static int del_resume(sl_http_req *r, void *state) {
    del_state *st = state;
    if (st->fifo && !sl_http_on_pool(r)) return SL_HTTP_POOL;
    sl_op *op = parked_take(r, &st->p);
    if (!op) return SL_HTTP_WAIT;
    int rcs[SQS_BATCH_MAX];
    sl_msg_ack_finish(op, rcs);
    return del_answer(st, rcs);
}

static int delete_messages(call *c, int batch) {
    json_t *entries = NULL;
    if (call_queue(c) || (batch && !(entries = batch_entries(c)))) return SL_HTTP_DONE;
    if (!batch && !json_object_get(c->in, "ReceiptHandle"))
        return sqs_fail(&c->q, &E_MISSING, "The request must contain the parameter ReceiptHandle.");
    sl_queue_info qi;
    int fifo = sl_queue_get(c->s->cfg.engine, c->account, c->queue, &qi) == 0 && qi.opts.fifo;
    if (fifo && fifo_off_loop(c, &qi)) return SL_HTTP_POOL;
    del_state *st = calloc(1, sizeof *st);
    if (!st) return sqs_engine(&c->q, SL_ENOMEM, c->queue);
    st->fifo = fifo;
    parked_init(&st->p, c, del_resume, batch);
    st->n = batch ? json_array_size(entries) : 1;
    const char *handles[SQS_BATCH_MAX];
    size_t k = 0;
    for (size_t i = 0; i < st->n; i++) {
        const char *h = handle_of(batch ? json_array_get(entries, i) : c->in);
        st->at[i] = h ? (int)k : -1;
        if (h) handles[k++] = h;
    }
    if (k == 0) {
        int done = del_answer(st, NULL);
        del_state_free(st);
        return done;
    }
    int rc =
        sl_msg_ack_start(c->s->cfg.engine, c->account, c->queue, handles, k, sl_api_op_wake, c->r, &st->p.op);
    return park(c, rc, &st->p, del_state_free);
}

static int a_delete_message(call *c) {
    return delete_messages(c, 0);
}

static int a_delete_message_batch(call *c) {
    return delete_messages(c, 1);
}

/* One visibility change: NULL when done, or the error with its message. */
static const sqs_err *change_one(call *c, json_t *o, char *err, size_t cap) {
    const char *h = handle_of(o);
    json_t *v = json_object_get(o, "VisibilityTimeout");
    long long invis;
    if (!json_object_get(o, "ReceiptHandle")) {
        snprintf(err, cap, "The request must contain the parameter ReceiptHandle.");
        return &E_MISSING;
    }
    if (!v) {
        snprintf(err, cap, "The request must contain the parameter VisibilityTimeout.");
        return &E_MISSING;
    }
    if (int_of(v, &invis) || invis < 0 || invis > SQS_VISIBILITY_MAX) {
        snprintf(err, cap,
                 "Value for parameter VisibilityTimeout is invalid. Reason: it must be an integer from 0 "
                 "to %d.",
                 SQS_VISIBILITY_MAX);
        return &E_VALUE;
    }
    char nr[SL_RECEIPT_MAX], tag[SL_TAG_MAX];
    int rc = h ? sl_msg_update(c->s->cfg.engine, c->account, c->queue, h, NULL, 0, (int)invis, nr, tag)
               : SL_EINVAL;
    if (rc == 0) return NULL;
    if (rc == SL_EINVAL) {
        snprintf(err, cap, "The input receipt handle is invalid.");
        return &E_RECEIPT;
    }
    if (rc == SL_ECONFLICT) {
        snprintf(err, cap,
                 "Message does not exist or is not available for visibility timeout change: it was "
                 "deleted or received again.");
        return &E_NOT_INFLIGHT;
    }
    snprintf(err, cap, "%s", rc == SL_ENOTFOUND ? "The specified queue does not exist." : sl_strerror(rc));
    return rc == SL_ENOTFOUND ? &E_NO_QUEUE : &E_UNAVAILABLE;
}

static int a_change_visibility(call *c) {
    if (call_queue(c)) return SL_HTTP_DONE;
    char err[256];
    const sqs_err *e = change_one(c, c->in, err, sizeof err);
    return e ? sqs_fail(&c->q, e, "%s", err) : sqs_ok_empty(&c->q);
}

static int a_change_visibility_batch(call *c) {
    json_t *entries;
    if (call_queue(c) || !(entries = batch_entries(c))) return SL_HTTP_DONE;
    json_t *ok = json_array(), *failed = json_array();
    for (size_t i = 0; i < json_array_size(entries) && ok && failed; i++) {
        json_t *x = json_array_get(entries, i);
        const char *id = json_string_value(json_object_get(x, "Id"));
        char err[256];
        const sqs_err *e = change_one(c, x, err, sizeof err);
        if (e == &E_NO_QUEUE) {
            json_decref(ok);
            json_decref(failed);
            return sqs_fail(&c->q, e, "%s", err);
        }
        json_array_append_new(e ? failed : ok, e ? entry_failed(id, e, err) : json_pack("{s:s}", "Id", id));
    }
    json_t *j = json_pack("{s:o}", "Successful", ok);
    if (j && json_array_size(failed) > 0) json_object_set(j, "Failed", failed);
    json_decref(failed);
    return sqs_ok(&c->q, j);
}

/* --- Tags and permissions ------------------------------------------------ */

/* What the engine's tag calls answer: too many tags is the client's. */
static int tags_answer(call *c, int rc, const char *err) {
    if (rc == SL_EINVAL) return sqs_fail(&c->q, &E_VALUE, "%s.", err);
    return rc ? sqs_engine(&c->q, rc, c->queue) : sqs_ok_empty(&c->q);
}

static int a_tag_queue(call *c) {
    json_t *tags;
    if (call_queue(c) || tags_param(c, "Tags", 1, &tags)) return SL_HTTP_DONE;
    char *set = json_dumps(tags, JSON_COMPACT), err[128] = "";
    if (!set) return sqs_engine(&c->q, SL_ENOMEM, NULL);
    int rc = sl_queue_tag(c->s->cfg.engine, c->account, c->queue, set, NULL, 0, err, sizeof err);
    free(set);
    return tags_answer(c, rc, err);
}

static int a_untag_queue(call *c) {
    if (call_queue(c)) return SL_HTTP_DONE;
    json_t *keys = json_object_get(c->in, "TagKeys");
    if (!keys || json_is_null(keys))
        return sqs_fail(&c->q, &E_MISSING, "The request must contain the parameter TagKeys.");
    size_t n = json_array_size(keys);
    if (!json_is_array(keys) || n > SL_QUEUE_TAGS_MAX)
        return sqs_fail(&c->q, &E_VALUE, "TagKeys must be a list of at most %d keys.", SL_QUEUE_TAGS_MAX);
    const char *remove[SL_QUEUE_TAGS_MAX];
    for (size_t i = 0; i < n; i++) {
        json_t *k = json_array_get(keys, i);
        remove[i] = json_string_value(k);
        if (!remove[i] || !tag_text_ok(remove[i], 1, SQS_TAG_KEY_MAX))
            return sqs_fail(&c->q, &E_VALUE, "TagKeys must hold tag keys of 1 to 128 characters.");
    }
    char err[128] = "";
    int rc = sl_queue_tag(c->s->cfg.engine, c->account, c->queue, NULL, remove, n, err, sizeof err);
    return tags_answer(c, rc, err);
}

static int a_list_queue_tags(call *c) {
    if (call_queue(c)) return SL_HTTP_DONE;
    char *text;
    int rc = sl_queue_tags(c->s->cfg.engine, c->account, c->queue, &text);
    if (rc) return sqs_engine(&c->q, rc, c->queue);
    json_t *tags = json_loads(text, 0, NULL);
    free(text);
    if (!tags) return sqs_engine(&c->q, SL_ENOMEM, NULL);
    json_t *out = json_object();
    if (out && json_object_size(tags)) json_object_set(out, "Tags", tags);
    json_decref(tags);
    return sqs_ok(&c->q, out);
}

/* Sluice's permissions are its keys and signed URLs, not queue policies:
 * AddPermission and RemovePermission answer as AWS does to a principal
 * whose IAM policies do not allow them, after checking the queue URL. */
static int a_permission(call *c) {
    if (call_queue(c)) return SL_HTTP_DONE;
    return sqs_fail(&c->q, &E_DENIED,
                    "Access to %s is denied: queue policies are not supported; grant access with "
                    "an account key or a signed URL.",
                    c->q.action);
}

/* --- Message move tasks ---------------------------------------------------- */

/* The queue an ARN parameter names, which must be the signer's: 1 when
 * present, 0 when absent and not required, -1 after answering. */
static int param_arn(call *c, const char *name, int required, char queue[SL_NAME_MAX + 1]) {
    const char *arn;
    int has = param_str(c, name, required, &arn);
    if (has <= 0) return has;
    char account[SL_NAME_MAX + 1];
    int n = 0;
    if (sscanf(arn, "arn:%*[a-z-]:sqs:%*[a-z0-9-]:%80[A-Za-z0-9_.-]:%80[A-Za-z0-9_.-]%n", account, queue,
               &n) != 2 ||
        arn[n] != '\0')
        return sqs_fail(&c->q, &E_VALUE, "Value %.200s for parameter %s is invalid: not a queue ARN.", arn,
                        name),
               -1;
    if (strcmp(account, c->account) != 0)
        return sqs_fail(&c->q, &E_DENIED, "Access to the resource %.200s is denied.", arn), -1;
    return 1;
}

static int a_start_move_task(call *c) {
    char src[SL_NAME_MAX + 1], dst[SL_NAME_MAX + 1] = "", handle[SL_MOVE_HANDLE_MAX], err[160] = "";
    long long rate;
    if (param_arn(c, "SourceArn", 1, src) < 0 || param_arn(c, "DestinationArn", 0, dst) < 0 ||
        param_int(c, c->in, "MaxNumberOfMessagesPerSecond", 1, SL_MOVE_RATE_MAX, SL_MOVE_RATE_MAX, &rate))
        return SL_HTTP_DONE;
    int rc = sl_move_task_start(c->s->cfg.engine, c->account, src, dst, (int)rate, handle, err, sizeof err);
    if (rc == SL_ENOTFOUND)
        return sqs_fail(&c->q, &E_NO_RESOURCE, "The source queue %s does not exist.", src);
    if (rc == SL_EINVAL || rc == SL_EEXISTS) return sqs_fail(&c->q, &E_VALUE, "%s.", err);
    if (rc) return sqs_engine(&c->q, rc, src);
    return sqs_ok(&c->q, json_pack("{s:s}", "TaskHandle", handle));
}

static int a_list_move_tasks(call *c) {
    char src[SL_NAME_MAX + 1], arn[256];
    long long max;
    if (param_arn(c, "SourceArn", 1, src) < 0 ||
        param_int(c, c->in, "MaxResults", 1, SL_MOVE_TASKS_KEPT, 1, &max))
        return SL_HTTP_DONE;
    char *text;
    int rc = sl_move_tasks(c->s->cfg.engine, c->account, src, &text);
    if (rc == SL_ENOTFOUND)
        return sqs_fail(&c->q, &E_NO_RESOURCE, "The source queue %s does not exist.", src);
    if (rc) return sqs_engine(&c->q, rc, src);
    json_t *tasks = json_loads(text, 0, NULL), *t, *out = json_array();
    free(text);
    size_t i;
    json_array_foreach(tasks, i, t) {
        if ((long long)i == max) break;
        const char *status = json_string_value(json_object_get(t, "status"));
        json_t *o = json_object();
        queue_arn(c, src, arn, sizeof arn);
        json_object_set_new(o, "SourceArn", json_string(arn));
        queue_arn(c, json_string_value(json_object_get(t, "destination")), arn, sizeof arn);
        json_object_set_new(o, "DestinationArn", json_string(arn));
        json_object_set(o, "Status", json_object_get(t, "status"));
        if (status && strcmp(status, "RUNNING") == 0)
            json_object_set(o, "TaskHandle", json_object_get(t, "taskHandle"));
        json_object_set(o, "MaxNumberOfMessagesPerSecond", json_object_get(t, "rate"));
        json_object_set(o, "ApproximateNumberOfMessagesMoved", json_object_get(t, "moved"));
        json_object_set(o, "ApproximateNumberOfMessagesToMove", json_object_get(t, "toMove"));
        json_object_set(o, "StartedTimestamp", json_object_get(t, "startedMs"));
        if (json_object_get(t, "failureReason"))
            json_object_set(o, "FailureReason", json_object_get(t, "failureReason"));
        json_array_append_new(out, o);
    }
    json_decref(tasks);
    return sqs_ok(&c->q, json_pack("{s:o}", "Results", out));
}

static int a_cancel_move_task(call *c) {
    const char *handle;
    if (param_str(c, "TaskHandle", 1, &handle) < 0) return SL_HTTP_DONE;
    int64_t moved;
    int rc = sl_move_task_cancel(c->s->cfg.engine, c->account, handle, &moved);
    if (rc == SL_ENOTFOUND)
        return sqs_fail(&c->q, &E_NO_RESOURCE, "No running message move task has the handle %.200s.", handle);
    if (rc) return sqs_engine(&c->q, rc, NULL);
    return sqs_ok(&c->q, json_pack("{s:I}", "ApproximateNumberOfMessagesMoved", (json_int_t)moved));
}

/* --- Dispatch ----------------------------------------------------------- */

/* loop: on a store that defers its writes (the embedded one), the action
 * runs on the event loop like the native API's put, receive and ack (it
 * parks while the store commits); every other action runs on the store
 * pool, and so does every action on Cassandra. */
static const struct {
    const char *name;
    int (*fn)(call *c);
    int loop;
} actions[] = {
    {"CreateQueue", a_create_queue, 0},
    {"GetQueueUrl", a_get_queue_url, 0},
    {"ListQueues", a_list_queues, 0},
    {"DeleteQueue", a_delete_queue, 0},
    {"GetQueueAttributes", a_get_queue_attributes, 0},
    {"SetQueueAttributes", a_set_queue_attributes, 0},
    {"SendMessage", a_send_message, 1},
    {"SendMessageBatch", a_send_message_batch, 1},
    {"ReceiveMessage", a_receive_message, 1},
    {"DeleteMessage", a_delete_message, 1},
    {"DeleteMessageBatch", a_delete_message_batch, 1},
    {"ChangeMessageVisibility", a_change_visibility, 0},
    {"ChangeMessageVisibilityBatch", a_change_visibility_batch, 0},
    {"PurgeQueue", a_purge_queue, 0},
    {"ListDeadLetterSourceQueues", a_list_dlq_sources, 0},
    {"TagQueue", a_tag_queue, 0},
    {"UntagQueue", a_untag_queue, 0},
    {"ListQueueTags", a_list_queue_tags, 0},
    {"StartMessageMoveTask", a_start_move_task, 0},
    {"ListMessageMoveTasks", a_list_move_tasks, 0},
    {"CancelMessageMoveTask", a_cancel_move_task, 0},
    {"AddPermission", a_permission, 0},
    {"RemovePermission", a_permission, 0},
};

/* The signer: the account named by the SigV4 credential, whose keys must
 * have made the signature. 0, or -1 after answering 403 (or 503). */
static int authenticate(call *c) {
    const char *h = sl_http_header(c->r, "Authorization"), *credential = NULL;
    if (!h && !(credential = sl_http_query(c->r, "X-Amz-Credential")))
        return sqs_fail(&c->q, &E_NO_AUTH, "Request is missing Authentication Token"), -1;
    if (sl_auth_sigv4_account(h, credential, c->account) != 0)
        return sqs_fail(&c->q, &E_TOKEN,
                        "The security token included in the request is invalid: SQS requests are "
                        "signed with AWS Signature Version 4, access key id 'account' or "
                        "'account:keyName'."),
               -1;
    struct sl_auth_cred cred;
    int rc = sl_api_authenticate(c->s->cfg.acct, c->s->cfg.skew_ms, c->r, c->account, &cred);
    if (rc == SL_EAUTH)
        return sqs_fail(&c->q, &E_SIGNATURE,
                        "The request signature we calculated does not match the signature you "
                        "provided, or the request time is outside the allowed skew."),
               -1;
    if (rc) return sqs_engine(&c->q, rc, NULL), -1;
    snprintf(c->region, sizeof c->region, "%s", cred.region);
    return 0;
}

#define QUERY_PARAMS_MAX 256

/* The query protocol's request: the parameters of its query string and,
 * posted, of its form body, as the JSON protocol's body in c->in. 0, or -1
 * after answering. */
static int query_request(call *c) {
    sl_http_req *r = c->r;
    int oom = 0;
    size_t nq = sl_http_query_all(r, NULL, 0, &oom);
    if (nq > QUERY_PARAMS_MAX) return sqs_fail(&c->q, &E_VALUE, "Too many parameters."), -1;
    const char **names = sl_http_alloc(r, 2 * QUERY_PARAMS_MAX * sizeof *names);
    const char **values = sl_http_alloc(r, 2 * QUERY_PARAMS_MAX * sizeof *values);
    sl_http_kv *kv = sl_http_alloc(r, (nq ? nq : 1) * sizeof *kv);
    if (!names || !values || !kv || oom) return sqs_engine(&c->q, SL_ENOMEM, NULL), -1;
    nq = sl_http_query_all(r, kv, nq, &oom);
    for (size_t i = 0; i < nq; i++) {
        names[i] = kv[i].name;
        values[i] = kv[i].value;
    }
    size_t n = nq, len;
    const char *body = sl_http_body(r, &len);
    if (strcmp(sl_http_method(r), "POST") == 0 && len > 0) {
        char *copy = sl_http_alloc(r, len + 1);
        if (!copy) return sqs_engine(&c->q, SL_ENOMEM, NULL), -1;
        memcpy(copy, body, len);
        long k = strlen(copy) == len
                     ? sl_sqs_form_split(copy, (char **)names + n, (char **)values + n, QUERY_PARAMS_MAX)
                     : SL_EINVAL;
        if (k < 0)
            return sqs_fail(&c->q, &E_VALUE, "The body is not application/x-www-form-urlencoded parameters."),
                   -1;
        n += (size_t)k;
    }
    char err[256] = "";
    c->in = sl_sqs_query_decode(names, values, n, c->q.action, sizeof c->q.action, err, sizeof err);
    if (!c->in) return sqs_fail(&c->q, c->q.action[0] ? &E_VALUE : &E_ACTION, "%s", err), -1;
    /* A request to a queue URL names its queue by its path. */
    const char *account = sl_http_param(r, "account"), *queue = sl_http_param(r, "q");
    if (account && queue && !json_object_get(c->in, "QueueUrl")) {
        char url[2 * SL_NAME_MAX + 8];
        snprintf(url, sizeof url, "/%s/%s", account, queue);
        json_object_set_new(c->in, "QueueUrl", json_string(url));
    }
    return 0;
}

static int h_sqs(sl_http_req *r, void *ctx) {
    sl_api_sqs *a = ctx;
    /* On Cassandra every action may wait on the store: the store pool
     * (sends, receives and deletes still park while their writes are with
     * the store, and come back to the pool to finish). */
    if (!sl_http_on_pool(r) && sl_engine_blocks(a->cfg.engine)) return SL_HTTP_POOL;
    void *user = sl_http_user(r);
    if (user) return (*(sl_api_resume_fn *)user)(r, user);
    /* "/api/v1" is no queue URL, but a route that does not exist. */
    if (sl_api_account_reserved(sl_http_param(r, "account"))) {
        const char *path, *query;
        size_t plen, qlen;
        sl_http_raw_target(r, &path, &plen, &query, &qlen);
        return sl_http_error(r, 404, "NotFound", "no route for %s %.*s", sl_http_method(r), (int)plen, path);
    }
    call c = {.s = ctx, .r = r, .q = {.r = r}};
    const char *target = sl_http_header(r, "X-Amz-Target");
    size_t k = 0, na = sizeof actions / sizeof actions[0];
    if (!target) {
        /* The query protocol: Action=... in a form body or the query. */
        c.q.query = 1;
        if (query_request(&c)) return SL_HTTP_DONE;
        while (k < na && strcmp(actions[k].name, c.q.action) != 0)
            k++;
        if (k == na) {
            json_decref(c.in);
            return sqs_fail(&c.q, &E_ACTION, "The action %.100s is not valid for this endpoint.", c.q.action);
        }
    } else {
        if (strncmp(target, "AmazonSQS.", 10) == 0)
            while (k < na && strcmp(actions[k].name, target + 10) != 0)
                k++;
        if (strncmp(target, "AmazonSQS.", 10) != 0 || k == na)
            return sqs_fail(&c.q, &E_ACTION, "The action %.100s is not valid for this endpoint.", target);
        size_t len;
        const char *body = sl_http_body(r, &len);
        if (len == 0) {
            c.in = json_object();
        } else {
            json_error_t err;
            c.in = sl_json_parse(body, len, JSON_REJECT_DUPLICATES, &err);
            if (!json_is_object(c.in)) {
                json_decref(c.in);
                return sqs_fail(&c.q, &E_SERIAL, "The body is not a JSON object: %s", err.text);
            }
        }
        if (!c.in) return sqs_engine(&c.q, SL_ENOMEM, NULL);
    }
    snprintf(c.q.action, sizeof c.q.action, "%s", actions[k].name);
    if (!actions[k].loop && !sl_http_on_pool(r)) {
        json_decref(c.in);
        return SL_HTTP_POOL;
    }
    int done = authenticate(&c) ? SL_HTTP_DONE : actions[k].fn(&c);
    json_decref(c.in);
    return done;
}

/* --- Setup -------------------------------------------------------------- */

int sl_api_sqs_open(const sl_api_sqs_config *cfg, sl_api_sqs **out) {
    *out = NULL;
    sl_api_sqs *a = calloc(1, sizeof *a);
    if (!a) return SL_ENOMEM;
    a->cfg = *cfg;
    if (!a->cfg.max_message_bytes) a->cfg.max_message_bytes = SL_MSG_MAX_DEFAULT;
    if (a->cfg.max_message_bytes > SQS_SIZE_MAX) a->cfg.max_message_bytes = SQS_SIZE_MAX;
    /* A batch carries up to the message limit in all, which JSON escaping
     * can blow up six times (\u00XX). The routes start on the event loop:
     * on the embedded store, sends, receives and deletes of standard queues
     * stay there (they park while the store commits, as the native API's
     * do); every other action, and every action on Cassandra, asks for the
     * store pool (SL_HTTP_POOL) before it has done anything. */
    size_t body_max = a->cfg.max_message_bytes * 6 + 64 * 1024;
    a->routes[0] = (sl_http_route){"POST", "/", h_sqs, body_max, 0, a};
    a->routes[1] = (sl_http_route){"GET", "/", h_sqs, body_max, 0, a};
    a->routes[2] = (sl_http_route){"POST", "/{account}/{q}", h_sqs, body_max, 0, a};
    a->routes[3] = (sl_http_route){"GET", "/{account}/{q}", h_sqs, body_max, 0, a};
    *out = a;
    return 0;
}

void sl_api_sqs_routes(sl_api_sqs *a, const sl_http_route **routes, size_t *n) {
    *routes = a->routes;
    *n = sizeof a->routes / sizeof a->routes[0];
}

void sl_api_sqs_close(sl_api_sqs *a) {
    free(a);
}
