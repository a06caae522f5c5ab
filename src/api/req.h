/* req.h: what every API's handlers share, so that the native API, the
 * admin API and the APIs to come (the event log, SQS) check input, answer
 * errors and park on the engine the same way:
 *
 *  - errors: sl_api_render_error is the server hook that writes the native
 *    envelope {"error": {"code", "message", "requestId"}} (an API with
 *    another envelope, such as SQS, installs its own); sl_api_fail maps an
 *    engine code to a status, sl_api_invalid answers 400;
 *  - authentication against an account's keys (with a decoy key for
 *    accounts that do not exist) and the permission check;
 *  - input: bounded integers and booleans from the query, the body as a JSON
 *    object, typed fields, UTF-8;
 *  - parking a request on an engine operation (start, park, finish).
 *
 * Every function that answers returns -1 (validation chains) or
 * SL_HTTP_DONE (handlers) as it says, after setting the response. */
#ifndef SL_API_REQ_H
#define SL_API_REQ_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "../account/account.h"
#include "../auth/auth.h"
#include "../http/server.h"
#include "../queue/queue.h"
#include "json.h"

/* --- Errors and JSON ------------------------------------------------------ */

/* The server hook (sl_http_config.render_error) of the native and admin
 * APIs: writes {"error": {"code", "message", "requestId"}} as JSON. */
size_t sl_api_render_error(void *ctx, int status, const char *code, const char *message,
                           const char *request_id, char *out, size_t cap, const char **content_type);
/* Serializes j (compact) as application/json and releases the reference;
 * out of memory is a 503. Returns SL_HTTP_DONE. */
int sl_api_json(sl_http_req *r, int status, json_t *j);
/* The same for a text written with sl_jw (json.h). */
int sl_api_jw(sl_http_req *r, int status, sl_jw *w);
/* Answers 400 with code and returns -1, for validation chains. */
int sl_api_invalid(sl_http_req *r, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Answers status with Retry-After: 1. Returns SL_HTTP_DONE. */
int sl_api_unavailable(sl_http_req *r, int status, const char *code, const char *msg);
/* Maps an engine code to a response; queue is NULL when a "not found" can
 * only mean the account. Returns SL_HTTP_DONE. */
int sl_api_fail(sl_http_req *r, int rc, const char *account, const char *queue);
/* The status sl_api_fail gives rc, or otherwise for a code it does not map. */
int sl_api_status(int rc, int otherwise);

/* --- Authentication and authorization ----------------------------------- */

/* Verifies the request's credentials against the keys of account (any
 * scheme of auth.h). An account that does not exist has no keys, so it is
 * 401 like a wrong key: unauthenticated callers cannot learn which accounts
 * exist. Returns 0 and *cred, SL_EAUTH, or a store error. */
int sl_api_authenticate(sl_acct *acct, int64_t skew_ms, sl_http_req *r, const char *account,
                        struct sl_auth_cred *cred);
/* Answers 401 or 403 (or 503 for a store error) for an auth code. */
void sl_api_deny(sl_http_req *r, int rc);
/* The account named in the path: 0, or -1 after answering 400
 * InvalidAccountName. */
int sl_api_path_account(sl_http_req *r, const char **account);
/* Authenticates r for account and, when level is not 0, checks that the
 * credentials grant it on queue (NULL: account-wide): 0 and *cred, or -1
 * after answering 401, 403 or 503. */
int sl_api_authorize(sl_acct *acct, int64_t skew_ms, sl_http_req *r, const char *account, char level,
                     const char *queue, struct sl_auth_cred *cred);
/* After all input was checked: the account must exist. 0, or -1 after
 * answering. */
int sl_api_account_ok(sl_acct *acct, sl_http_req *r, const char *account);
/* May cred do level on queue (NULL: account-wide)? Answers and returns -1
 * when not. */
int sl_api_allowed(sl_http_req *r, const struct sl_auth_cred *cred, char level, const char *queue);

/* --- Input ------------------------------------------------------------------ */

/* A name of a queue or an account that paths carry unambiguously: the
 * pattern of API.md, but neither "." nor ".." (SigV4 normalizes dot
 * segments). */
int sl_api_name_ok(const char *s);
/* An account name the other routes' first path segments take (API.md:
 * api, admin, health, metrics, ui), so that no queue URL "/{account}/
 * {queue}" of SQS stands for one of them. */
int sl_api_account_reserved(const char *s);
/* A decimal of digits only in [lo, hi]: 0, or -1 for anything else. */
int sl_api_parse_uint(const char *s, long long lo, long long hi, long long *out);
/* Query parameters, def when absent: 0, or -1 after answering 400. */
int sl_api_query_int(sl_http_req *r, const char *name, long long lo, long long hi, long long def,
                     long long *out);
int sl_api_query_bool(sl_http_req *r, const char *name, int def, int *out);
/* The body as a JSON object (an empty one counts as {} when empty_ok): a
 * new reference, or NULL after answering 400. */
json_t *sl_api_body_object(sl_http_req *r, int empty_ok);
/* The same, answering 400 with code (the event log's MalformedJson) for a
 * body that is not a JSON object. */
json_t *sl_api_body_object_code(sl_http_req *r, int empty_ok, const char *code);
/* Fields of a body object, def when absent unless required: 0, or -1 after
 * answering 400. sl_api_field_str returns 0 when absent or null (*out
 * NULL), 1 when present, -1 after answering 400 (not a string, or one with
 * a NUL). */
int sl_api_field_int(sl_http_req *r, json_t *o, const char *key, long long lo, long long hi, long long def,
                     int required, long long *out);
int sl_api_field_bool(sl_http_req *r, json_t *o, const char *key, int def, int *out);
int sl_api_field_str(sl_http_req *r, json_t *o, const char *key, const char **out);
/* --- Parking on engine operations --------------------------------------- */

/* The done callback of the engine's *_start calls: wakes the request. */
void sl_api_op_wake(void *r);
/* Whether r should park (again) on op. */
int sl_api_op_waiting(sl_http_req *r, const sl_op *op);
/* The operation r parked on: *op is NULL when r has not started one yet.
 * Returns nonzero while r should stay parked. */
int sl_api_op_pending(sl_http_req *r, sl_op **op);
/* Parks r on op, which is discarded if the request is torn down first.
 * Returns SL_HTTP_WAIT. */
int sl_api_op_park(sl_http_req *r, sl_op *op);

/* --- Long polling ----------------------------------------------------------- */

/* The user state of a parked request may start with a resume function, so
 * that a handler with several kinds of parked state (SQS's actions) calls
 * it without knowing which kind it is: (*(sl_api_resume_fn *)state)(r,
 * state). The receive's state below does. */
typedef int (*sl_api_resume_fn)(sl_http_req *r, void *state);

/* A receive that waits up to wait_s for messages without holding a thread
 * (API.md: it answers as soon as a message becomes visible, on whichever
 * node it was put). answer renders the result: it owns m (free it with
 * sl_messages_free) and returns SL_HTTP_DONE; an engine error is answered
 * by fail, or by sl_api_fail when fail is NULL. arg is the caller's, freed
 * with arg_free (when not NULL) with the request. */
typedef struct {
    sl_engine *engine;
    const char *account, *queue; /* copied */
    int max, invis, wait_s;
    int (*answer)(sl_http_req *r, void *arg, sl_message *m, size_t n);
    int (*fail)(sl_http_req *r, void *arg, int rc);
    void *arg;
    void (*arg_free)(void *arg);
} sl_api_recv_args;
/* Starts the receive; the request's user state is the receive's from here
 * on. Returns SL_HTTP_WAIT or SL_HTTP_DONE. */
int sl_api_recv_begin(sl_http_req *r, const sl_api_recv_args *args);
/* What the handler returns when it runs again with that user state. */
int sl_api_recv_resume(sl_http_req *r);

#endif
