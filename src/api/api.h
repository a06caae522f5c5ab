/* api.h: the HTTP APIs, each a routing table over the server in http/.
 * What their handlers share (errors, authentication, input, parking) is in
 * req.h; each server is given sl_api_render_error as its error hook.
 *
 * native.c serves the queue API of API.md ("Queue API" and its extensions)
 * plus /health and /openapi.json; events.c the event log. It validates every input before it calls
 * the engine, so that bad input always gets a 4xx, and maps engine codes to
 * statuses; a 500 means a bug. */
#ifndef SL_API_H
#define SL_API_H

#include <stddef.h>

#include "../account/account.h"
#include "../events/events.h"
#include "../http/server.h"
#include "../queue/queue.h"

typedef struct {
    sl_engine *engine;        /* borrowed, must outlive the API */
    sl_acct *acct;            /* borrowed: accounts and keys */
    int64_t skew_ms;          /* allowed request-time skew; 0 means 60 s */
    size_t max_message_bytes; /* 0 means SL_MSG_MAX_DEFAULT (1 MiB) */
    size_t max_json_bytes;    /* 0 means 1 MiB */
} sl_api_config;

typedef struct sl_api sl_api;

/* Builds the native API. Returns 0, SL_ENOMEM, or SL_EINTERNAL when the
 * embedded OpenAPI document is not valid JSON. */
int sl_api_native_open(const sl_api_config *cfg, sl_api **out);
/* The routing table (owned by a, valid until sl_api_native_close); pass a
 * itself as the server's ctx. */
void sl_api_native_routes(sl_api *a, const sl_http_route **routes, size_t *n);
void sl_api_native_close(sl_api *a);

/* The admin API of API.md on its own server: accounts, keys, signed URLs,
 * behind "Authorization: Bearer <token>". */
typedef struct {
    sl_engine *engine; /* borrowed */
    sl_acct *acct;     /* borrowed */
    sl_evlog *log;     /* borrowed; NULL: no event log to forget accounts in */
    const char *token; /* the admin token, copied */
    /* GET /metrics: writes the Prometheus text (NULL: 404). */
    void (*metrics)(void *ctx, sl_text *t);
    void *metrics_ctx;
} sl_admin_config;

typedef struct sl_admin sl_admin;

/* Returns 0, SL_EINVAL (no token or one shorter than 16 bytes), SL_ENOMEM. */
int sl_api_admin_open(const sl_admin_config *cfg, sl_admin **out);
/* The routing table; pass a itself as the server's ctx. */
void sl_api_admin_routes(sl_admin *a, const sl_http_route **routes, size_t *n);
/* Serves the routes of another API (the native queue API, the event log)
 * on the admin port too, under "/admin" + their pattern, behind the admin
 * token instead of account keys (sl_http_set_admin): the dashboard's view
 * of every account. Routes outside /api/ (health, the OpenAPI document) are
 * left out. Call before sl_api_admin_routes. 0 or SL_ENOMEM. */
int sl_api_admin_delegate(sl_admin *a, const sl_http_route *routes, size_t n);
/* The dashboard's embedded files (web.c): 0 and the file named name
 * ("index.html", "app.js", ...), or -1. */
int sl_web_file(const char *name, const char **type, const void **data, size_t *len);
void sl_api_admin_close(sl_admin *a);

/* The event log's routes of API.md ("Event log"), served on the queue port
 * beside the native API: each route carries its own ctx, so main.c joins
 * the two tables into one server. */
typedef struct {
    sl_evlog *log;         /* borrowed */
    sl_acct *acct;         /* borrowed */
    sl_engine *engine;     /* borrowed: a subscription's queue must exist */
    int64_t skew_ms;       /* 0 means 60 s */
    size_t max_json_bytes; /* 0 means 1 MiB */
} sl_api_events_config;

typedef struct sl_api_events sl_api_events;

int sl_api_events_open(const sl_api_events_config *cfg, sl_api_events **out);
void sl_api_events_routes(sl_api_events *a, const sl_http_route **routes, size_t *n);
void sl_api_events_close(sl_api_events *a);
/* The queue message a subscription puts for an event (API.md
 * "Subscriptions"): body, the StoredEvent as GET /events/{id} answers it,
 * and attrs, the attributes as a JSON object; both malloc'ed. Returns 0 or
 * SL_ENOMEM. */
int sl_api_event_message(const sl_stored_event *s, const char *sub, char **body, size_t *len, char **attrs);

/* Amazon SQS's JSON and query protocols on the queue port (API.md "SQS
 * wire protocol"): POST / with X-Amz-Target, or Action=... to / or to a
 * queue URL, answered as AWS answers. */
typedef struct {
    sl_engine *engine;        /* borrowed */
    sl_acct *acct;            /* borrowed */
    int64_t skew_ms;          /* 0 means 60 s */
    size_t max_message_bytes; /* the server's limit; 0 means SL_MSG_MAX_DEFAULT; at most 1 MiB */
    int tls;                  /* queue URLs say https */
} sl_api_sqs_config;

typedef struct sl_api_sqs sl_api_sqs;

int sl_api_sqs_open(const sl_api_sqs_config *cfg, sl_api_sqs **out);
/* The routing table; each route carries a as its ctx. */
void sl_api_sqs_routes(sl_api_sqs *a, const sl_http_route **routes, size_t *n);
void sl_api_sqs_close(sl_api_sqs *a);

/* The OpenAPI 3 document of the admin API (src/api/openapi-admin.json). */
extern const char sl_openapi_admin_json[];
extern const size_t sl_openapi_admin_json_len;

/* The OpenAPI 3 document of the native API (src/api/openapi.json, embedded
 * at build time by openapi.c), NUL-terminated. */
extern const char sl_openapi_json[];
extern const size_t sl_openapi_json_len;

#endif
