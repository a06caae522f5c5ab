/* events.c: the event log's routes (API.md "Event log"): ingest one event
 * or a batch, read one, query with continuation tokens, the retention, and
 * subscriptions.
 *
 * Every input is decoded and checked against API.md's rules before the log
 * sees it. The log (events/) gets metadata and data as canonical JSON: keys
 * sorted, and a number with an integral value written as an integer, so
 * that two events with equal JSON values have equal strings ("1.0", "1e0"
 * and "1" are one value) and ingest compares content as strings. A stored
 * event therefore answers with its data in that form. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "req.h"

#define BATCH_MAX 100
#define META_KEY_MAX 64
#define META_VALUE_MAX 1024
#define QUERY_PARAMS_MAX 64

struct sl_api_events {
    sl_api_events_config cfg;
    sl_http_route routes[10];
    size_t nroutes;
};

/* --- Auth ------------------------------------------------------------------- */

/* The account in the path, its credentials and the level. A signed URL
 * for one queue grants nothing here (sl_auth_check: no queue named). */
static int begin(sl_api_events *a, sl_http_req *r, char level, const char **account) {
    struct sl_auth_cred cred;
    return sl_api_path_account(r, account) ||
           sl_api_authorize(a->cfg.acct, a->cfg.skew_ms, r, *account, level, NULL, &cred);
}

static int account_ok(sl_api_events *a, sl_http_req *r, const char *account) {
    return sl_api_account_ok(a->cfg.acct, r, account);
}

/* A store error of the log: 503 with Retry-After (the client retries with
 * the same ids), a 500 for a bug. */
static int log_fail(sl_http_req *r, int rc) {
    return sl_api_fail(r, rc, NULL, NULL);
}

/* --- JSON in ---------------------------------------------------------------- */

/* The body as a JSON object, or NULL after answering 400 MalformedJson. */
static json_t *body_object(sl_http_req *r) {
    return sl_api_body_object_code(r, 0, "MalformedJson");
}

/* A copy of v in canonical form: integral numbers as integers (within the
 * doubles' exact integers), everything else as it is. Keys are sorted when
 * it is written (JSON_SORT_KEYS). */
static json_t *canon(json_t *v) {
    if (json_is_real(v)) {
        double d = json_real_value(v);
        if (d == floor(d) && fabs(d) <= 9007199254740992.0) return json_integer((json_int_t)d);
        return json_real(d);
    }
    if (json_is_array(v)) {
        json_t *out = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            if (!out || json_array_append_new(out, canon(x))) {
                json_decref(out);
                return NULL;
            }
        }
        return out;
    }
    if (json_is_object(v)) {
        json_t *out = json_object(), *x;
        const char *k;
        json_object_foreach(v, k, x) {
            if (!out || json_object_set_new(out, k, canon(x))) {
                json_decref(out);
                return NULL;
            }
        }
        return out;
    }
    return json_incref(v);
}

static char *canon_dump(json_t *v) {
    json_t *c = canon(v);
    char *s = c ? json_dumps(c, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) : NULL;
    json_decref(c);
    return s;
}

/* An event decoded from the request: the strings borrow from the JSON,
 * except meta and data, which it owns. */
typedef struct {
    sl_event ev;
    char *meta, *data;
} ev_in;

static void ev_in_free(ev_in *in) {
    free(in->meta);
    free(in->data);
    in->meta = in->data = NULL;
}

/* "events[3]: " for a batch entry, "" for a single event. */
typedef struct {
    char s[32];
} where;

static where at(int idx) {
    where w = {""};
    if (idx >= 0) snprintf(w.s, sizeof w.s, "events[%d]: ", idx);
    return w;
}

static int bad(sl_http_req *r, int idx, const char *fmt, const char *field) {
    char msg[256];
    snprintf(msg, sizeof msg, fmt, field);
    sl_http_error(r, 400, "InvalidParameter", "%s%s", at(idx).s, msg);
    return -1;
}

/* A string field: 0 absent, 1 set, -1 after answering. */
static int str_field(sl_http_req *r, int idx, json_t *v, const char *name, const char **out) {
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v))
        return bad(r, idx, "field '%s' must be a string", name);
    *out = json_string_value(v);
    return 1;
}

static int tags_field(sl_http_req *r, int idx, json_t *v, const char *name, sl_event *ev) {
    if (!json_is_array(v) || json_array_size(v) > SL_EV_FILTER_MAX)
        return bad(r, idx, "field '%s' must be an array of at most 10 tags", name);
    size_t i;
    json_t *t;
    json_array_foreach(v, i, t) {
        if (!json_is_string(t) || strlen(json_string_value(t)) != json_string_length(t) ||
            !sl_ev_tag_valid(json_string_value(t)))
            return bad(r, idx, "field '%s' holds a tag that does not match [A-Za-z0-9_.:=-]{1,64}", name);
        snprintf(ev->tags[i], sizeof ev->tags[i], "%s", json_string_value(t));
    }
    ev->ntags = (int)json_array_size(v);
    return 0;
}

static int meta_key_ok(const char *k) {
    size_t n = strlen(k);
    if (n < 1 || n > META_KEY_MAX) return 0;
    for (size_t i = 0; i < n; i++)
        if (!strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:-", k[i])) return 0;
    return 1;
}

/* Decodes one Event object (idx >= 0 inside a batch). Returns 0, or -1
 * after answering 400 or 413. */
static int decode_event(sl_http_req *r, json_t *o, int idx, ev_in *in) {
    memset(in, 0, sizeof *in);
    sl_event *ev = &in->ev;
    json_t *data = NULL, *meta = NULL, *tags = NULL, *meta_tags = NULL, *v;
    const char *k, *s = NULL;
    int have_type = 0;
    if (!json_is_object(o)) return bad(r, idx, "%s", "an event must be a JSON object");
    json_object_foreach(o, k, v) {
        if (strcmp(k, "type") == 0 || strcmp(k, "id") == 0) {
            if (str_field(r, idx, v, k, &s) < 0) return -1;
            if (strlen(s) > SL_EV_ID_MAX || !sl_ev_id_valid(s))
                return bad(r, idx, "field '%s' must match [A-Za-z0-9_.:-]{1,128}", k);
            snprintf(k[0] == 't' ? ev->type : ev->id, SL_EV_ID_MAX + 1, "%s", s);
            have_type |= k[0] == 't';
        } else if (strcmp(k, "source") == 0) {
            if (str_field(r, idx, v, k, &ev->source) < 0) return -1;
        } else if (strcmp(k, "subject") == 0) {
            if (str_field(r, idx, v, k, &ev->subject) < 0) return -1;
        } else if (strcmp(k, "time") == 0) {
            if (str_field(r, idx, v, k, &ev->time) < 0) return -1;
        } else if (strcmp(k, "datacontenttype") == 0) {
            if (str_field(r, idx, v, k, &ev->datacontenttype) < 0) return -1;
        } else if (strcmp(k, "specversion") == 0) {
            if (!json_is_string(v) || strcmp(json_string_value(v), "1.0") != 0)
                return bad(r, idx, "field '%s' must be \"1.0\"", k);
        } else if (strcmp(k, "tags") == 0) {
            tags = v;
        } else if (strcmp(k, "metadata") == 0) {
            meta = v;
        } else if (strcmp(k, "data") == 0 || strcmp(k, "payload") == 0) {
            if (data) return bad(r, idx, "%s", "give 'data' or 'payload' (its other name), not both");
            data = v;
        } else if (strcmp(k, "recordedAt") == 0 || strcmp(k, "expiresAt") == 0) {
            return bad(r, idx, "field '%s' is the server's", k);
        } else {
            return bad(r, idx, "unknown field '%s' (extension attributes go in 'metadata')", k);
        }
    }
    if (!have_type) return bad(r, idx, "field '%s' is required", "type");
    if (meta) {
        if (!json_is_object(meta)) return bad(r, idx, "field '%s' must be an object of strings", "metadata");
        json_t *copy = json_object();
        if (!copy) return sl_api_unavailable(r, 503, "ServiceUnavailable", "out of memory"), -1;
        json_object_foreach(meta, k, v) {
            if (strcmp(k, "tags") == 0 && json_is_array(v)) { /* the seed's spelling of 'tags' */
                meta_tags = v;
                continue;
            }
            if (!meta_key_ok(k) || !json_is_string(v) || json_string_length(v) > META_VALUE_MAX ||
                strlen(json_string_value(v)) != json_string_length(v)) {
                json_decref(copy);
                return bad(r, idx,
                           "metadata entry '%s' must have a key [A-Za-z0-9_.:-]{1,64} and a string of "
                           "at most 1024 bytes",
                           k);
            }
            json_object_set(copy, k, v);
        }
        if (json_object_size(copy) > SL_EV_META_MAX) {
            json_decref(copy);
            return bad(r, idx, "field '%s' has more than 32 entries", "metadata");
        }
        in->meta = canon_dump(copy);
        json_decref(copy);
        if (!in->meta) return sl_api_unavailable(r, 503, "ServiceUnavailable", "out of memory"), -1;
        ev->metadata = strcmp(in->meta, "{}") == 0 ? NULL : in->meta;
    }
    if (tags && meta_tags)
        return bad(r, idx, "%s", "give 'tags' or 'metadata.tags' (its other name), not both");
    if ((tags || meta_tags) &&
        tags_field(r, idx, tags ? tags : meta_tags, tags ? "tags" : "metadata.tags", ev))
        return -1;
    if (data && !json_is_null(data)) {
        if (!(in->data = canon_dump(data)))
            return sl_api_unavailable(r, 503, "ServiceUnavailable", "out of memory"), -1;
        if (strlen(in->data) > SL_EV_DATA_MAX) {
            sl_http_error(r, 413, "EventTooLarge", "%sthe event's data is over 65536 bytes as compact JSON",
                          at(idx).s);
            return -1;
        }
        ev->data = in->data;
    }
    const char *why = sl_event_check(ev);
    if (why) {
        if (strcmp(why, "tags") == 0) return bad(r, idx, "field '%s' holds the same tag twice", why);
        if (strcmp(why, "time") == 0) return bad(r, idx, "field '%s' must be an RFC 3339 date-time", why);
        return bad(r, idx,
                   "field '%s' must be 1 to 256 characters (128 for datacontenttype), no control characters",
                   why);
    }
    return 0;
}

/* --- JSON out --------------------------------------------------------------- */

static json_t *time_json(int64_t us) {
    char t[SL_EV_TIME_LEN + 1];
    return sl_ev_time_format(us, t) ? json_string(t) : json_null();
}

static json_t *receipt_json(const sl_ev_receipt *rc) {
    return json_pack("{s:s,s:o,s:o}", "id", rc->id, "recordedAt", time_json(rc->recorded_us), "expiresAt",
                     time_json(rc->expires_us));
}

static json_t *stored_json(const sl_stored_event *s) {
    const sl_event *ev = &s->ev;
    json_t *j = json_pack("{s:s,s:s}", "id", ev->id, "type", ev->type);
    if (!j) return NULL;
    if (ev->source) json_object_set_new(j, "source", json_string(ev->source));
    if (ev->subject) json_object_set_new(j, "subject", json_string(ev->subject));
    if (ev->time) json_object_set_new(j, "time", json_string(ev->time));
    if (ev->datacontenttype) json_object_set_new(j, "datacontenttype", json_string(ev->datacontenttype));
    json_t *tags = json_array();
    for (int i = 0; tags && i < ev->ntags; i++)
        json_array_append_new(tags, json_string(ev->tags[i]));
    json_object_set_new(j, "tags", tags ? tags : json_array());
    json_t *meta = ev->metadata ? json_loads(ev->metadata, 0, NULL) : NULL;
    json_object_set_new(j, "metadata", meta ? meta : json_object());
    json_t *data = ev->data ? json_loads(ev->data, JSON_DECODE_ANY, NULL) : NULL;
    json_object_set_new(j, "data", data ? data : json_null());
    json_object_set_new(j, "recordedAt", time_json(s->recorded_us));
    json_object_set_new(j, "expiresAt", time_json(s->expires_us));
    return j;
}

/* --- Ingest ----------------------------------------------------------------- */

static int h_put(sl_http_req *r, void *ctx) {
    sl_api_events *a = ctx;
    const char *account;
    if (begin(a, r, 'p', &account)) return SL_HTTP_DONE;
    json_t *b = body_object(r);
    if (!b) return SL_HTTP_DONE;
    ev_in in;
    if (decode_event(r, b, -1, &in) || account_ok(a, r, account)) {
        ev_in_free(&in);
        json_decref(b);
        return SL_HTTP_DONE;
    }
    sl_ev_receipt rc;
    int ret = sl_evlog_put(a->cfg.log, account, &in.ev, &rc);
    ev_in_free(&in);
    json_decref(b);
    if (ret) return log_fail(r, ret);
    if (rc.outcome == SL_EV_CONFLICT)
        return sl_http_error(r, 409, "EventIdConflict", "event '%s' exists with other content", rc.id);
    return sl_api_json(r, rc.outcome == SL_EV_CREATED ? 201 : 200, receipt_json(&rc));
}

static int h_batch(sl_http_req *r, void *ctx) {
    sl_api_events *a = ctx;
    const char *account;
    if (begin(a, r, 'p', &account)) return SL_HTTP_DONE;
    json_t *b = body_object(r);
    if (!b) return SL_HTTP_DONE;
    json_t *list = json_object_get(b, "events");
    ev_in *in = NULL;
    size_t n = 0, decoded = 0;
    int ok = 0;
    if (json_object_size(b) != 1 || !json_is_array(list)) {
        sl_http_error(r, 400,
                      json_is_object(b) && json_object_size(b) == 1 && list ? "MalformedJson"
                                                                            : "InvalidParameter",
                      "the body must be {\"events\": [Event, ...]} and nothing else");
    } else if ((n = json_array_size(list)) < 1 || n > BATCH_MAX) {
        sl_http_error(r, 400, "InvalidParameter", "a batch holds 1 to 100 events, not %zu", n);
    } else if (!(in = calloc(n, sizeof *in))) {
        sl_api_unavailable(r, 503, "ServiceUnavailable", "out of memory");
    } else {
        ok = 1;
        for (; ok && decoded < n; decoded++)
            ok = decode_event(r, json_array_get(list, decoded), (int)decoded, &in[decoded]) == 0;
        for (size_t i = 0; ok && i < n; i++)
            for (size_t j = 0; ok && j < i; j++)
                if (in[i].ev.id[0] && strcmp(in[i].ev.id, in[j].ev.id) == 0) {
                    sl_http_error(r, 400, "DuplicateId", "events[%zu] and events[%zu] have the same id '%s'",
                                  j, i, in[i].ev.id);
                    ok = 0;
                }
        ok = ok && account_ok(a, r, account) == 0;
    }
    json_t *results = ok ? json_array() : NULL;
    sl_event *evs = ok ? calloc(n, sizeof *evs) : NULL;
    sl_ev_receipt *rcs = ok ? calloc(n, sizeof *rcs) : NULL;
    if (ok && (!results || !evs || !rcs)) {
        sl_api_unavailable(r, 503, "ServiceUnavailable", "out of memory");
        ok = 0;
    }
    for (size_t i = 0; ok && i < n; i++)
        evs[i] = in[i].ev;
    int ret = ok ? sl_evlog_put_batch(a->cfg.log, account, evs, n, rcs) : 0;
    if (ret) {
        log_fail(r, ret);
        ok = 0;
    }
    for (size_t i = 0; ok && i < n; i++) {
        json_t *one = receipt_json(&rcs[i]);
        json_object_set_new(one, "status",
                            json_integer(rcs[i].outcome == SL_EV_CREATED   ? 201
                                         : rcs[i].outcome == SL_EV_MATCHED ? 200
                                                                           : 409));
        json_array_append_new(results, one);
    }
    free(evs);
    free(rcs);
    for (size_t i = 0; i < decoded; i++)
        ev_in_free(&in[i]);
    free(in);
    json_decref(b);
    if (!ok) {
        json_decref(results);
        return SL_HTTP_DONE;
    }
    return sl_api_json(r, 200, json_pack("{s:o}", "results", results));
}

/* --- Reading ---------------------------------------------------------------- */

static int h_get(sl_http_req *r, void *ctx) {
    sl_api_events *a = ctx;
    const char *account, *id = sl_http_param(r, "id");
    if (begin(a, r, 'r', &account) || account_ok(a, r, account)) return SL_HTTP_DONE;
    sl_stored_event s;
    int rc = sl_evlog_get(a->cfg.log, account, id, &s);
    if (rc == SL_ENOTFOUND) return sl_http_error(r, 404, "EventNotFound", "no event '%s'", id);
    if (rc) return log_fail(r, rc);
    json_t *j = stored_json(&s);
    sl_stored_event_free(&s);
    return sl_api_json(r, 200, j);
}

/* The query's parameters; 0, or -1 after answering 400. A parameter that
 * takes one value may not come twice. */
typedef struct {
    sl_ev_query q;
    int limit;
    const char *start, *end, *order, *token;
} query_in;

static int one_value(sl_http_req *r, const char **slot, const sl_http_kv *kv) {
    if (*slot) {
        sl_http_error(r, 400, "InvalidParameter", "parameter '%s' is given twice", kv->name);
        return -1;
    }
    *slot = kv->value;
    return 0;
}

static int parse_query(sl_http_req *r, query_in *in) {
    sl_http_kv kv[QUERY_PARAMS_MAX];
    int oom;
    const char *limit = NULL;
    size_t n = sl_http_query_all(r, kv, QUERY_PARAMS_MAX, &oom);
    memset(in, 0, sizeof *in);
    if (oom) return sl_api_unavailable(r, 503, "ServiceUnavailable", "out of memory"), -1;
    if (n > QUERY_PARAMS_MAX)
        return sl_api_invalid(r, "InvalidParameter", "more than %d query parameters", QUERY_PARAMS_MAX);
    for (size_t i = 0; i < n; i++) {
        const char *k = kv[i].name, *v = kv[i].value;
        if (strcmp(k, "type") == 0 || strcmp(k, "tag") == 0) {
            int type = k[1] == 'y';
            int *count = type ? &in->q.ntypes : &in->q.ntags;
            if (*count == SL_EV_FILTER_MAX)
                return sl_api_invalid(r, "InvalidParameter", "more than 10 values of parameter '%s'", k);
            if (type ? !sl_ev_id_valid(v) : !sl_ev_tag_valid(v))
                return sl_api_invalid(r, "InvalidParameter",
                                      "parameter '%s' has a value that is not a valid %s", k, k);
            snprintf(type ? in->q.types[*count] : in->q.tags[*count],
                     type ? SL_EV_ID_MAX + 1 : SL_EV_TAG_MAX + 1, "%s", v);
            ++*count;
        } else if (strcmp(k, "start") == 0) {
            if (one_value(r, &in->start, &kv[i])) return -1;
        } else if (strcmp(k, "end") == 0) {
            if (one_value(r, &in->end, &kv[i])) return -1;
        } else if (strcmp(k, "order") == 0) {
            if (one_value(r, &in->order, &kv[i])) return -1;
        } else if (strcmp(k, "limit") == 0) {
            if (one_value(r, &limit, &kv[i])) return -1;
        } else if (strcmp(k, "continuation") == 0) {
            if (one_value(r, &in->token, &kv[i])) return -1;
        } else if (strcmp(k, "auth") && strcmp(k, "q") && strcmp(k, "st") && strcmp(k, "et") &&
                   strcmp(k, "sig")) {
            return sl_api_invalid(r, "InvalidParameter", "unknown parameter '%s'", k);
        }
    }
    long long lim = 100;
    if (limit && sl_api_parse_uint(limit, 1, SL_EV_LIMIT_MAX, &lim))
        return sl_api_invalid(r, "InvalidParameter", "parameter 'limit' must be an integer from 1 to 1000");
    in->limit = (int)lim;
    if (in->order && strcmp(in->order, "asc") && strcmp(in->order, "desc"))
        return sl_api_invalid(r, "InvalidParameter", "parameter 'order' must be asc or desc");
    in->q.desc = in->order && strcmp(in->order, "desc") == 0;
    in->q.start_us = 0;
    in->q.end_us = -1; /* now, capped at the horizon */
    if (in->start && sl_ev_time_parse(in->start, &in->q.start_us))
        return sl_api_invalid(
            r, "InvalidParameter",
            "parameter 'start' must be an RFC 3339 date-time (years 1970 to 9999) or milliseconds");
    if (in->end && sl_ev_time_parse(in->end, &in->q.end_us))
        return sl_api_invalid(
            r, "InvalidParameter",
            "parameter 'end' must be an RFC 3339 date-time (years 1970 to 9999) or milliseconds");
    if (in->start && in->end && in->q.start_us > in->q.end_us)
        return sl_api_invalid(r, "InvalidParameter", "parameter 'start' is after 'end'");
    if (in->token && strlen(in->token) > SL_EV_TOKEN_MAX)
        return sl_api_invalid(r, "InvalidContinuation", "the continuation token is over 4096 characters");
    sl_ev_query_canon(&in->q);
    return 0;
}

static int h_query(sl_http_req *r, void *ctx) {
    sl_api_events *a = ctx;
    const char *account;
    query_in in;
    if (begin(a, r, 'r', &account) || parse_query(r, &in) || account_ok(a, r, account)) return SL_HTTP_DONE;
    sl_ev_query q;
    const unsigned char *secret = sl_evlog_secret(a->cfg.log);
    if (in.token) {
        /* The token holds the whole query; what the request repeats must
         * be the same. */
        sl_ev_query given = in.q;
        if (sl_ev_token_read(in.token, strlen(in.token), secret, &q) != 0 || strcmp(q.account, account) != 0)
            return sl_api_invalid(r, "InvalidContinuation",
                                  "the continuation token is not valid for this query"),
                   SL_HTTP_DONE;
        if (!given.ntypes) {
            memcpy(given.types, q.types, sizeof q.types);
            given.ntypes = q.ntypes;
        }
        if (!given.ntags) {
            memcpy(given.tags, q.tags, sizeof q.tags);
            given.ntags = q.ntags;
        }
        given.desc = in.order ? given.desc : q.desc;
        given.start_us = in.start ? given.start_us : q.start_us;
        given.end_us = in.end ? given.end_us : q.end_us;
        snprintf(given.account, sizeof given.account, "%s", account);
        if (!sl_ev_query_same(&given, &q))
            return sl_api_invalid(r, "InvalidContinuation",
                                  "the continuation token is not valid for this query"),
                   SL_HTTP_DONE;
    } else {
        q = in.q;
        snprintf(q.account, sizeof q.account, "%s", account);
        int64_t horizon = sl_evlog_horizon(a->cfg.log);
        if (q.end_us < 0 || q.end_us > horizon) q.end_us = horizon;
        if (q.start_us > q.end_us) q.start_us = q.end_us; /* a start after the horizon: an empty range */
    }
    sl_ev_page p;
    int rc = sl_evlog_query(a->cfg.log, &q, in.limit, &p);
    if (rc) return log_fail(r, rc);
    json_t *events = json_array();
    for (size_t i = 0; events && i < p.n; i++)
        json_array_append_new(events, stored_json(&p.events[i]));
    char tok[SL_EV_TOKEN_MAX + 1];
    json_t *cont = json_null();
    if (!p.done) {
        long n = sl_ev_token_make(&p.next, secret, tok);
        cont = n > 0 ? json_string(tok) : NULL;
    }
    sl_ev_page_free(&p);
    if (!events || !cont) {
        json_decref(events);
        json_decref(cont);
        return log_fail(r, SL_EINTERNAL);
    }
    return sl_api_json(
        r, 200,
        json_pack("{s:o,s:o,s:o}", "events", events, "continuation", cont, "end", time_json(q.end_us)));
}

/* --- Retention -------------------------------------------------------------- */

static int h_eventlog(sl_http_req *r, void *ctx) {
    sl_api_events *a = ctx;
    const char *account;
    int put = strcmp(sl_http_method(r), "PUT") == 0;
    if (begin(a, r, put ? 'c' : 'g', &account)) return SL_HTTP_DONE;
    if (put) {
        json_t *b = body_object(r);
        if (!b) return SL_HTTP_DONE;
        long long s;
        int badreq = json_object_size(b) != 1
                         ? sl_api_invalid(r, "InvalidParameter", "the body must be {\"retentionSeconds\": n}")
                         : sl_api_field_int(r, b, "retentionSeconds", 1, SL_EV_RETENTION_MAX, 0, 1, &s);
        json_decref(b);
        if (badreq || account_ok(a, r, account)) return SL_HTTP_DONE;
        int rc = sl_evlog_set_retention(a->cfg.log, account, (int)s);
        if (rc) return log_fail(r, rc);
    } else if (account_ok(a, r, account)) {
        return SL_HTTP_DONE;
    }
    int seconds;
    int rc = sl_evlog_retention(a->cfg.log, account, &seconds);
    if (rc) return log_fail(r, rc);
    return sl_api_json(r, 200, json_pack("{s:i}", "retentionSeconds", seconds));
}

/* --- Subscriptions ---------------------------------------------------------- */

static json_t *names_json(const char *v, int n, size_t size) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++)
        json_array_append_new(a, json_string(v + (size_t)i * size));
    return a;
}

static json_t *sub_json(const sl_ev_sub *s) {
    const sl_ev_query *f = &s->filter;
    return json_pack("{s:s,s:s,s:{s:o,s:o},s:o,s:o,s:s,s:o,s:I}", "subscriptionName", s->name, "queueName",
                     s->queue, "filter", "types", names_json(f->types[0], f->ntypes, sizeof f->types[0]),
                     "tags", names_json(f->tags[0], f->ntags, sizeof f->tags[0]), "startFrom",
                     time_json(s->start_us), "createdAt", time_json(s->created_us), "state",
                     s->state == SL_SUB_QUEUE_MISSING ? "queueMissing" : "active", "position",
                     time_json(s->position.us), "delivered", (json_int_t)s->delivered);
}

/* filter.types or filter.tags: 0..10 valid values, or -1 after answering. */
static int filter_list(sl_http_req *r, json_t *v, const char *name, int type, sl_ev_query *f) {
    if (!json_is_array(v) || json_array_size(v) > SL_EV_FILTER_MAX)
        return sl_api_invalid(r, "InvalidParameter",
                              "field 'filter.%s' must be an array of at most 10 values", name);
    size_t i;
    json_t *t;
    json_array_foreach(v, i, t) {
        const char *x = json_string_value(t);
        if (!x || strlen(x) != json_string_length(t) || (type ? !sl_ev_id_valid(x) : !sl_ev_tag_valid(x)))
            return sl_api_invalid(r, "InvalidParameter",
                                  "field 'filter.%s' holds a value that is not a valid %s", name,
                                  type ? "type" : "tag");
        snprintf(type ? f->types[i] : f->tags[i], type ? SL_EV_ID_MAX + 1 : SL_EV_TAG_MAX + 1, "%s", x);
    }
    *(type ? &f->ntypes : &f->ntags) = (int)json_array_size(v);
    return 0;
}

/* A SubscriptionCreate; 0, or -1 after answering 400. */
static int decode_sub(sl_http_req *r, json_t *b, sl_ev_sub *s) {
    memset(s, 0, sizeof *s);
    const char *k;
    json_t *v;
    int have_name = 0, have_queue = 0;
    json_object_foreach(b, k, v) {
        if (strcmp(k, "subscriptionName") == 0 || strcmp(k, "queueName") == 0) {
            const char *x = json_string_value(v);
            if (!x || strlen(x) != json_string_length(v) || !sl_name_valid(x))
                return sl_api_invalid(r, "InvalidParameter", "field '%s' must match [A-Za-z0-9_.-]{1,80}", k);
            snprintf(k[0] == 's' ? s->name : s->queue, SL_NAME_MAX + 1, "%s", x);
            *(k[0] == 's' ? &have_name : &have_queue) = 1;
        } else if (strcmp(k, "filter") == 0) {
            if (json_is_null(v)) continue;
            if (!json_is_object(v))
                return sl_api_invalid(r, "InvalidParameter", "field 'filter' must be an object");
            const char *fk;
            json_t *fv;
            json_object_foreach(v, fk, fv) {
                if (strcmp(fk, "types") == 0 || strcmp(fk, "tags") == 0) {
                    if (!json_is_null(fv) && filter_list(r, fv, fk, fk[1] == 'y', &s->filter)) return -1;
                } else {
                    return sl_api_invalid(r, "InvalidParameter", "unknown field 'filter.%s'", fk);
                }
            }
        } else if (strcmp(k, "startFrom") == 0) {
            const char *x = json_string_value(v);
            if (json_is_null(v) || (x && strcmp(x, "now") == 0)) {
                s->start = SL_SUB_NOW;
            } else if (x && strcmp(x, "earliest") == 0) {
                s->start = SL_SUB_EARLIEST;
            } else if (x && strlen(x) == json_string_length(v) && sl_ev_time_parse(x, &s->start_us) == 0) {
                s->start = SL_SUB_TIME;
            } else {
                return sl_api_invalid(
                    r, "InvalidParameter",
                    "field 'startFrom' must be \"now\", \"earliest\" or an RFC 3339 date-time");
            }
        } else {
            return sl_api_invalid(r, "InvalidParameter", "unknown field '%s'", k);
        }
    }
    if (!have_name) return sl_api_invalid(r, "InvalidParameter", "field 'subscriptionName' is required");
    if (!have_queue) return sl_api_invalid(r, "InvalidParameter", "field 'queueName' is required");
    sl_ev_query_canon(&s->filter);
    return 0;
}

static int h_subs(sl_http_req *r, void *ctx) {
    sl_api_events *a = ctx;
    const char *account;
    int post = strcmp(sl_http_method(r), "POST") == 0;
    if (begin(a, r, post ? 'c' : 'g', &account)) return SL_HTTP_DONE;
    if (!post) {
        if (account_ok(a, r, account)) return SL_HTTP_DONE;
        sl_ev_sub *subs;
        size_t n;
        int rc = sl_evsub_list(a->cfg.log, account, &subs, &n);
        if (rc) return log_fail(r, rc);
        json_t *list = json_array();
        for (size_t i = 0; list && i < n; i++)
            json_array_append_new(list, sub_json(&subs[i]));
        free(subs);
        return sl_api_json(r, 200, json_pack("{s:o}", "subscriptions", list));
    }
    json_t *b = body_object(r);
    if (!b) return SL_HTTP_DONE;
    sl_ev_sub def, s;
    int bad_req = decode_sub(r, b, &def);
    json_decref(b);
    if (bad_req || account_ok(a, r, account)) return SL_HTTP_DONE;
    sl_queue_info qi;
    int rc = sl_queue_get(a->cfg.engine, account, def.queue, &qi);
    if (rc == SL_ENOTFOUND) return sl_http_error(r, 404, "QueueNotFound", "no queue '%s'", def.queue);
    if (rc) return log_fail(r, rc);
    int created;
    rc = sl_evsub_create(a->cfg.log, account, &def, &s, &created);
    if (rc == SL_EEXISTS)
        return sl_http_error(r, 409, "SubscriptionExists", "subscription '%s' exists with another definition",
                             def.name);
    if (rc == SL_ETOOBIG)
        return sl_http_error(r, 409, "SubscriptionLimitExceeded", "the account has %d subscriptions already",
                             SL_EV_SUBS_MAX);
    if (rc) return log_fail(r, rc);
    return sl_api_json(r, created ? 201 : 200, sub_json(&s));
}

static int h_sub(sl_http_req *r, void *ctx) {
    sl_api_events *a = ctx;
    const char *account, *name = sl_http_param(r, "s");
    int del = strcmp(sl_http_method(r), "DELETE") == 0;
    if (begin(a, r, del ? 'd' : 'g', &account) || account_ok(a, r, account)) return SL_HTTP_DONE;
    sl_ev_sub s;
    int rc = del ? sl_evsub_delete(a->cfg.log, account, name) : sl_evsub_get(a->cfg.log, account, name, &s);
    if (rc == SL_ENOTFOUND)
        return sl_http_error(r, 404, "SubscriptionNotFound", "no subscription '%s'", name);
    if (rc) return log_fail(r, rc);
    return sl_api_json(r, 200, del ? json_object() : sub_json(&s));
}

/* The message a subscription puts for one event. */
int sl_api_event_message(const sl_stored_event *s, const char *sub, char **body, size_t *len, char **attrs) {
    *body = *attrs = NULL;
    json_t *j = stored_json(s);
    json_t *at =
        json_pack("{s:s,s:s,s:s}", "ce-id", s->ev.id, "ce-type", s->ev.type, "sluice-subscription", sub);
    if (at && s->ev.source) json_object_set_new(at, "ce-source", json_string(s->ev.source));
    if (j) *body = json_dumps(j, JSON_COMPACT);
    if (at) *attrs = json_dumps(at, JSON_COMPACT);
    json_decref(j);
    json_decref(at);
    if (!*body || !*attrs) {
        free(*body);
        free(*attrs);
        *body = *attrs = NULL;
        return SL_ENOMEM;
    }
    *len = strlen(*body);
    return 0;
}

/* --- The API ---------------------------------------------------------------- */

int sl_api_events_open(const sl_api_events_config *cfg, sl_api_events **out) {
    sl_api_events *a = calloc(1, sizeof *a);
    if (!a) return SL_ENOMEM;
    a->cfg = *cfg;
    if (!a->cfg.skew_ms) a->cfg.skew_ms = 60000;
    size_t js = a->cfg.max_json_bytes ? a->cfg.max_json_bytes : 1 << 20;
#define BASE "/api/v1/accounts/{account}"
    const sl_http_route routes[] = {
        {"POST", BASE "/events", h_put, js, 1, a},
        {"POST", BASE "/events/batch", h_batch, js, 1, a},
        {"GET", BASE "/events/{id}", h_get, 0, 1, a},
        {"GET", BASE "/events", h_query, 0, 1, a},
        {"GET", BASE "/eventlog", h_eventlog, 0, 1, a},
        {"PUT", BASE "/eventlog", h_eventlog, js, 1, a},
        {"GET", BASE "/subscriptions", h_subs, 0, 1, a},
        {"POST", BASE "/subscriptions", h_subs, js, 1, a},
        {"GET", BASE "/subscriptions/{s}", h_sub, 0, 1, a},
        {"DELETE", BASE "/subscriptions/{s}", h_sub, 0, 1, a},
    };
#undef BASE
    a->nroutes = sizeof routes / sizeof routes[0];
    memcpy(a->routes, routes, sizeof routes);
    *out = a;
    return 0;
}

void sl_api_events_routes(sl_api_events *a, const sl_http_route **routes, size_t *n) {
    *routes = a->routes;
    *n = a->nroutes;
}

void sl_api_events_close(sl_api_events *a) {
    free(a);
}
