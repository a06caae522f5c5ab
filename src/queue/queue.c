/* queue.c: queues as a whole: options, create, get, list, delete,
 * statistics, purge and redrive. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue_int.h"

void sl_queue_opts_default(sl_queue_opts *o) {
    memset(o, 0, sizeof *o);
    o->bucket_size = 20;
    o->max_delivery_count = 5;
    o->repair_poll_s = 5;
    o->finalize_timeout_s = 15;
    o->delete_buckets = 1;
    o->retention_s = 1209600;
    o->strict_fifo = 0;
    o->visibility_s = 30;
}

int sl_queue_opts_check(const sl_queue_opts *o, char *err, size_t cap) {
#define RANGE(f, lo, hi, name)                                                                                 \
    if (o->f < (lo) || o->f > (hi)) {                                                                          \
        snprintf(err, cap, "%s must be between %lld and %lld", name, (long long)(lo), (long long)(hi));        \
        return SL_EINVAL;                                                                                      \
    }
    if (!sl_name_valid(o->name)) {
        snprintf(err, cap, "queueName must match [A-Za-z0-9_.-]{1,80}");
        return SL_EINVAL;
    }
    RANGE(bucket_size, 1, 1000, "bucketSize");
    RANGE(max_delivery_count, 1, 1000, "maxDeliveryCount");
    RANGE(repair_poll_s, 1, 3600, "repairWorkerPollSeconds");
    RANGE(finalize_timeout_s, 1, 3600, "repairWorkerBucketFinalizeTimeSeconds");
    RANGE(retention_s, 60, 1209600, "retentionSeconds");
    RANGE(visibility_s, 0, 43200, "visibilityTimeoutSeconds");
    RANGE(delay_s, 0, 900, "delaySeconds");
    RANGE(wait_s, 0, 20, "receiveWaitSeconds");
    if (o->max_bytes != 0) RANGE(max_bytes, 1024, 1048576, "maximumMessageBytes");
#undef RANGE
    if (o->dlq[0] && !sl_name_valid(o->dlq)) {
        snprintf(err, cap, "dlqName must match [A-Za-z0-9_.-]{1,80}");
        return SL_EINVAL;
    }
    if (o->dlq[0] && strcmp(o->dlq, o->name) == 0) {
        snprintf(err, cap, "a queue cannot be its own dead-letter queue");
        return SL_EINVAL;
    }
    return 0;
}

/* Options are stored as JSON text in the queue row, so that adding an
 * option never needs a schema change; the row's "tags" sit beside them. */
static json_t *opts_obj(const sl_queue_opts *o) {
    return json_pack(
        "{s:i,s:i,s:s?,s:i,s:i,s:b,s:I,s:b,s:i,s:i,s:i,s:i,s:b,s:b,s:b,s:b}", "bucketSize", o->bucket_size,
        "maxDeliveryCount", o->max_delivery_count, "dlqName", o->dlq[0] ? o->dlq : NULL,
        "repairWorkerPollSeconds", o->repair_poll_s, "repairWorkerBucketFinalizeTimeSeconds",
        o->finalize_timeout_s, "deleteBucketsAfterFinalize", o->delete_buckets, "retentionSeconds",
        (json_int_t)o->retention_s, "strictFifo", o->strict_fifo, "visibilityTimeoutSeconds", o->visibility_s,
        "delaySeconds", o->delay_s, "receiveWaitSeconds", o->wait_s, "maximumMessageBytes", o->max_bytes,
        "fifo", o->fifo, "fifoContentDedup", o->fifo_content_dedup, "fifoDedupByGroup", o->fifo_dedup_group,
        "fifoThroughputByGroup", o->fifo_throughput_group);
}

static int64_t get_int(json_t *j, const char *k, int64_t dflt) {
    json_t *v = json_object_get(j, k);
    if (json_is_integer(v)) return json_integer_value(v);
    if (json_is_boolean(v)) return json_is_true(v);
    return dflt;
}

/* Reads options written by opts_json (the text in v); a missing or mistyped
 * field keeps its default, so rows written by an older version still load. */
static void opts_from_json(json_t *j, sl_queue_opts *o) {
    sl_queue_opts_default(o);
    o->bucket_size = (int)get_int(j, "bucketSize", o->bucket_size);
    o->max_delivery_count = (int)get_int(j, "maxDeliveryCount", o->max_delivery_count);
    o->repair_poll_s = (int)get_int(j, "repairWorkerPollSeconds", o->repair_poll_s);
    o->finalize_timeout_s = (int)get_int(j, "repairWorkerBucketFinalizeTimeSeconds", o->finalize_timeout_s);
    o->delete_buckets = (int)get_int(j, "deleteBucketsAfterFinalize", o->delete_buckets);
    o->retention_s = get_int(j, "retentionSeconds", o->retention_s);
    o->strict_fifo = (int)get_int(j, "strictFifo", o->strict_fifo);
    o->visibility_s = (int)get_int(j, "visibilityTimeoutSeconds", o->visibility_s);
    o->delay_s = (int)get_int(j, "delaySeconds", o->delay_s);
    o->wait_s = (int)get_int(j, "receiveWaitSeconds", o->wait_s);
    o->max_bytes = (int)get_int(j, "maximumMessageBytes", o->max_bytes);
    o->fifo = (int)get_int(j, "fifo", 0);
    o->fifo_content_dedup = (int)get_int(j, "fifoContentDedup", 0);
    o->fifo_dedup_group = (int)get_int(j, "fifoDedupByGroup", 0);
    o->fifo_throughput_group = (int)get_int(j, "fifoThroughputByGroup", 0);
    const char *dlq = json_string_value(json_object_get(j, "dlqName"));
    if (dlq) snprintf(o->dlq, sizeof o->dlq, "%s", dlq);
}

int sl_queue_opts_parse(const sl_val *v, sl_queue_opts *o) {
    json_t *j = v->set && !v->null ? json_loadb(v->p, v->n, 0, NULL) : NULL;
    if (!json_is_object(j)) {
        json_decref(j);
        return SL_EINVAL;
    }
    opts_from_json(j, o);
    json_decref(j);
    return 0;
}

static int init_incarnation(sl_engine *e, const char *qkey, const char *account, const sl_queue_opts *o) {
    /* The id allocator and the pointers exist before the queue row says the
     * queue is active, so that an active queue always has them. */
    sl_write w = {0};
    w.t = &sl_t_monoton;
    w.kind = SL_W_INSERT_IF_NOT_EXISTS;
    w.row.v[MO_QKEY] = sl_vtext(qkey);
    w.row.v[MO_NEXT] = sl_vint(0);
    w.row.v[MO_NONCE] = sl_vint(eng_nonce());
    int rc = eng_cas(e, &w, MO_NONCE);
    if (rc && rc != SL_ENOTAPPLIED) return rc;
    static const char *ptrs[] = {"reader", "repair", "purge", "lease", "gc"};
    for (int i = 0; i < 5; i++) {
        sl_write p = {0};
        p.t = &sl_t_pointers;
        p.kind = SL_W_INSERT_IF_NOT_EXISTS;
        p.row.v[PT_QKEY] = sl_vtext(qkey);
        p.row.v[PT_NAME] = sl_vtext(ptrs[i]);
        /* The lease cursor starts at the queue's birth: nothing is due before. */
        p.row.v[PT_VALUE] = sl_vint(i == 3 ? sl_now_ms() - 60000 : 0);
        p.row.v[PT_NONCE] = sl_vint(eng_nonce());
        rc = eng_cas(e, &p, PT_NONCE);
        if (rc && rc != SL_ENOTAPPLIED) return rc;
    }
    sl_write x = {0};
    x.t = &sl_t_queue_index;
    x.kind = SL_W_UPSERT;
    x.row.v[QI_SHARD] = sl_vint(0);
    x.row.v[QI_QKEY] = sl_vtext(qkey);
    x.row.v[QI_ACCOUNT] = sl_vtext(account);
    x.row.v[QI_NAME] = sl_vtext(o->name);
    x.row.v[QI_STATUS] = sl_vint(Q_ACTIVE);
    x.row.v[QI_BSIZE] = sl_vint(o->bucket_size);
    return eng_write(e, &x, 1);
}

/* What a create or an update checks first: the options, the account, and
 * the dead-letter queue, which must exist if they name one. 0, SL_EINVAL
 * (err says why), SL_ENOTFOUND (no account) or a store error. */
static int opts_usable(sl_engine *e, const char *account, const sl_queue_opts *o, char *err, size_t cap) {
    int rc = sl_queue_opts_check(o, err, cap);
    if (rc || (rc = sl_acct_exists(e->cfg.accounts, account)) != 0 || !o->dlq[0]) return rc;
    qstate *d;
    rc = eng_queue(e, account, o->dlq, &d);
    if (rc == SL_ENOTFOUND) {
        snprintf(err, cap, "dead-letter queue '%s' does not exist", o->dlq);
        return SL_EINVAL;
    }
    return rc;
}

/* A tag set as the row keeps it: an object of 0..SL_QUEUE_TAGS_MAX string
 * values. */
static int tags_check(json_t *tags, char *err, size_t cap) {
    const char *k;
    json_t *v;
    if (!json_is_object(tags)) {
        snprintf(err, cap, "tags must be an object of strings");
        return SL_EINVAL;
    }
    json_object_foreach(tags, k, v) {
        if (!json_is_string(v)) {
            snprintf(err, cap, "the tag '%.128s' is not a string", k);
            return SL_EINVAL;
        }
    }
    if (json_object_size(tags) > SL_QUEUE_TAGS_MAX) {
        snprintf(err, cap, "a queue has at most %d tags", SL_QUEUE_TAGS_MAX);
        return SL_EINVAL;
    }
    return 0;
}

int sl_queue_create(sl_engine *e, const char *account, const sl_queue_opts *o, char *err, size_t cap) {
    return sl_queue_create_tagged(e, account, o, NULL, err, cap);
}

/* The options' text for a new queue: o, and its tags when given. */
static char *new_opts(const sl_queue_opts *o, json_t *tags) {
    json_t *j = opts_obj(o);
    char *s = j && (!tags || !json_object_size(tags) || json_object_set(j, "tags", tags) == 0)
                  ? json_dumps(j, JSON_COMPACT)
                  : NULL;
    json_decref(j);
    return s;
}

static int queue_create(sl_engine *e, const char *account, const sl_queue_opts *o, json_t *tags) {
    int rc;
    for (int attempt = 0; attempt < 8; attempt++) {
        sl_val key[2] = {sl_vtext(account), sl_vtext(o->name)};
        sl_result r;
        sl_result_init(&r);
        rc = sl_store_get(e->st, &sl_t_queues, key, SL_READ_SERIAL, &r);
        if (rc && rc != SL_ENOTFOUND) {
            sl_result_free(&r);
            return rc;
        }
        int64_t old_version = 0;
        if (rc == 0) {
            int active = r.rows[0].v[QU_STATUS].i == Q_ACTIVE;
            old_version = r.rows[0].v[QU_VERSION].i;
            sl_result_free(&r);
            if (active) return SL_EEXISTS;
        } else {
            sl_result_free(&r);
        }
        int64_t version = old_version + 1;
        char qkey[QKEY_MAX];
        snprintf(qkey, sizeof qkey, "%s/%s/%lld", account, o->name, (long long)version);
        if ((rc = init_incarnation(e, qkey, account, o)) != 0) return rc;
        char *opts = new_opts(o, tags);
        if (!opts) return SL_ENOMEM;
        sl_write w = {0};
        w.t = &sl_t_queues;
        w.row.v[QU_ACCOUNT] = sl_vtext(account);
        w.row.v[QU_NAME] = sl_vtext(o->name);
        w.row.v[QU_VERSION] = sl_vint(version);
        w.row.v[QU_STATUS] = sl_vint(Q_ACTIVE);
        w.row.v[QU_OPTS] = sl_vtext(opts);
        w.row.v[QU_CREATED] = sl_vint(sl_now_ms());
        w.row.v[QU_NONCE] = sl_vint(eng_nonce());
        unsigned char secret[16];
        if ((rc = sl_random_bytes(secret, sizeof secret)) != 0) {
            free(opts);
            return rc;
        }
        w.row.v[QU_SECRET] = sl_vbytes(secret, sizeof secret);
        if (old_version == 0) {
            w.kind = SL_W_INSERT_IF_NOT_EXISTS;
        } else {
            w.kind = SL_W_UPDATE_IF;
            w.cond[0] = (sl_cond){QU_STATUS, sl_vint(Q_DELETED)};
            w.cond[1] = (sl_cond){QU_VERSION, sl_vint(old_version)};
            w.ncond = 2;
        }
        rc = eng_cas(e, &w, QU_NONCE);
        free(opts);
        if (rc != SL_ENOTAPPLIED) return rc;
        /* Someone else created or deleted it meanwhile: look again. */
    }
    return SL_EUNAVAILABLE;
}

int sl_queue_create_tagged(sl_engine *e, const char *account, const sl_queue_opts *o, const char *tags_json,
                           char *err, size_t cap) {
    int rc = opts_usable(e, account, o, err, cap);
    if (rc) return rc;
    json_t *tags = tags_json ? json_loads(tags_json, 0, NULL) : NULL;
    if (tags_json && !tags) return SL_ENOMEM;
    if (tags && (rc = tags_check(tags, err, cap)) != 0) {
        json_decref(tags);
        return rc;
    }
    rc = queue_create(e, account, o, tags);
    json_decref(tags);
    return rc;
}

int eng_opts_edit(sl_engine *e, const char *account, const char *name, opts_edit_fn edit, void *arg,
                  char *err, size_t cap) {
    int rc = SL_EUNAVAILABLE;
    for (int attempt = 0; attempt < 8; attempt++) {
        sl_val key[2] = {sl_vtext(account), sl_vtext(name)};
        sl_result r;
        sl_result_init(&r);
        if ((rc = sl_store_get(e->st, &sl_t_queues, key, SL_READ_SERIAL, &r)) != 0) {
            sl_result_free(&r);
            return rc;
        }
        sl_row *row = &r.rows[0];
        int64_t version = row->v[QU_VERSION].i, nonce = row->v[QU_NONCE].i;
        int has_nonce = row->v[QU_NONCE].set && !row->v[QU_NONCE].null;
        json_t *j = NULL;
        if (row->v[QU_STATUS].i == Q_ACTIVE && row->v[QU_OPTS].set && !row->v[QU_OPTS].null)
            j = json_loadb(row->v[QU_OPTS].p, row->v[QU_OPTS].n, 0, NULL);
        int active = row->v[QU_STATUS].i == Q_ACTIVE;
        sl_result_free(&r);
        if (!active) return SL_ENOTFOUND;
        if (!json_is_object(j)) {
            json_decref(j);
            j = json_object(); /* unreadable: the defaults */
        }
        char *opts = NULL;
        if (!j) return SL_ENOMEM;
        rc = edit(j, arg, err, cap);
        if (rc == 0 && !(opts = json_dumps(j, JSON_COMPACT))) rc = SL_ENOMEM;
        json_decref(j);
        if (rc) return rc;
        sl_write w = {0};
        w.t = &sl_t_queues;
        w.kind = SL_W_UPDATE_IF;
        w.row.v[QU_ACCOUNT] = sl_vtext(account);
        w.row.v[QU_NAME] = sl_vtext(name);
        w.row.v[QU_OPTS] = sl_vtext(opts);
        w.row.v[QU_NONCE] = sl_vint(eng_nonce());
        w.cond[0] = (sl_cond){QU_STATUS, sl_vint(Q_ACTIVE)};
        w.cond[1] = (sl_cond){QU_VERSION, sl_vint(version)};
        w.ncond = 2;
        if (has_nonce) w.cond[w.ncond++] = (sl_cond){QU_NONCE, sl_vint(nonce)};
        rc = eng_cas(e, &w, QU_NONCE);
        free(opts);
        if (rc == 0) {
            qstate *q;
            pthread_mutex_lock(&e->mu);
            for (q = e->queues; q; q = q->next)
                if (!q->dead && q->version == version && strcmp(q->account, account) == 0 &&
                    strcmp(q->name, name) == 0)
                    q->checked_ms = 0;
            pthread_mutex_unlock(&e->mu);
            return eng_queue(e, account, name, &q);
        }
        if (rc != SL_ENOTAPPLIED) return rc;
        /* Changed, deleted or created again meanwhile: look again. */
    }
    return rc == SL_ENOTAPPLIED ? SL_EUNAVAILABLE : rc;
}

/* Only what may change in an incarnation; the layout and the tags stay. */
static int edit_update(json_t *j, void *arg, char *err, size_t cap) {
    (void)err, (void)cap;
    const sl_queue_opts *o = arg;
    sl_queue_opts now;
    opts_from_json(j, &now);
    memcpy(now.dlq, o->dlq, sizeof now.dlq);
    now.max_delivery_count = o->max_delivery_count;
    now.retention_s = o->retention_s;
    now.visibility_s = o->visibility_s;
    now.delay_s = o->delay_s;
    now.wait_s = o->wait_s;
    now.max_bytes = o->max_bytes;
    now.fifo_content_dedup = o->fifo_content_dedup;
    now.fifo_dedup_group = o->fifo_dedup_group;
    now.fifo_throughput_group = o->fifo_throughput_group;
    json_t *fresh = opts_obj(&now);
    int rc = fresh && json_object_update(j, fresh) == 0 ? 0 : SL_ENOMEM;
    json_decref(fresh);
    return rc;
}

int sl_queue_update(sl_engine *e, const char *account, const sl_queue_opts *o, char *err, size_t cap) {
    int rc = opts_usable(e, account, o, err, cap);
    if (rc) return rc;
    return eng_opts_edit(e, account, o->name, edit_update, (void *)o, err, cap);
}

/* --- Tags --------------------------------------------------------------- */

struct tag_edit {
    json_t *set;
    const char *const *remove;
    size_t nremove;
};

/* Sets t->set's tags (a new value replaces the old), then removes
 * t->remove's; the result must stay within SL_QUEUE_TAGS_MAX. */
static int edit_tags(json_t *j, void *arg, char *err, size_t cap) {
    const struct tag_edit *t = arg;
    json_t *tags = json_object_get(j, "tags");
    tags = json_is_object(tags) ? json_deep_copy(tags) : json_object();
    if (!tags) return SL_ENOMEM;
    int rc = t->set && json_object_update(tags, t->set) != 0 ? SL_ENOMEM : 0;
    for (size_t i = 0; rc == 0 && i < t->nremove; i++)
        json_object_del(tags, t->remove[i]);
    if (rc == 0) rc = tags_check(tags, err, cap);
    if (rc == 0 && json_object_size(tags) == 0)
        json_object_del(j, "tags");
    else if (rc == 0 && json_object_set(j, "tags", tags) != 0)
        rc = SL_ENOMEM;
    json_decref(tags);
    return rc;
}

int sl_queue_tag(sl_engine *e, const char *account, const char *name, const char *set_json,
                 const char *const *remove, size_t nremove, char *err, size_t cap) {
    int rc = sl_acct_exists(e->cfg.accounts, account);
    if (rc) return rc;
    struct tag_edit t = {NULL, remove, nremove};
    if (set_json && !(t.set = json_loads(set_json, 0, NULL))) return SL_ENOMEM;
    if (!t.set || (rc = tags_check(t.set, err, cap)) == 0)
        rc = eng_opts_edit(e, account, name, edit_tags, &t, err, cap);
    json_decref(t.set);
    return rc;
}

int eng_queue_row_json(sl_engine *e, const char *account, const char *name, json_t **out) {
    *out = NULL;
    int rc = sl_acct_exists(e->cfg.accounts, account);
    if (rc) return rc;
    sl_val key[2] = {sl_vtext(account), sl_vtext(name)};
    sl_result r;
    sl_result_init(&r);
    if ((rc = sl_store_get(e->st, &sl_t_queues, key, SL_READ_DEFAULT, &r)) == 0) {
        const sl_row *row = &r.rows[0];
        if (row->v[QU_STATUS].i != Q_ACTIVE)
            rc = SL_ENOTFOUND;
        else if (row->v[QU_OPTS].set && !row->v[QU_OPTS].null)
            *out = json_loadb(row->v[QU_OPTS].p, row->v[QU_OPTS].n, 0, NULL);
        if (rc == 0 && !json_is_object(*out)) {
            json_decref(*out);
            if (!(*out = json_object())) rc = SL_ENOMEM;
        }
    }
    sl_result_free(&r);
    return rc;
}

int sl_queue_tags(sl_engine *e, const char *account, const char *name, char **json) {
    json_t *j;
    *json = NULL;
    int rc = eng_queue_row_json(e, account, name, &j);
    if (rc) return rc;
    json_t *tags = json_object_get(j, "tags");
    if (!(*json = json_is_object(tags) ? json_dumps(tags, JSON_COMPACT | JSON_SORT_KEYS) : strdup("{}")))
        rc = SL_ENOMEM;
    json_decref(j);
    return rc;
}

int sl_queue_get(sl_engine *e, const char *account, const char *name, sl_queue_info *out) {
    int rc = sl_acct_exists(e->cfg.accounts, account);
    if (rc) return rc;
    qstate *q;
    if ((rc = eng_queue(e, account, name, &q)) != 0) return rc;
    eng_queue_opts(q, &out->opts);
    out->version = q->version;
    out->created_ms = q->created_ms;
    return 0;
}

int sl_queue_list(sl_engine *e, const char *account, sl_queue_info **out, size_t *n) {
    *out = NULL;
    *n = 0;
    int rc = sl_acct_exists(e->cfg.accounts, account);
    if (rc) return rc;
    size_t cap = 0;
    sl_queue_info *v = NULL;
    sl_slice s = {0};
    s.t = &sl_t_queues;
    s.pk[0] = sl_vtext(account);
    s.limit = 500;
    char last[SL_NAME_MAX + 1];
    for (;;) {
        sl_result r;
        sl_result_init(&r);
        if ((rc = sl_store_slice(e->st, &s, &r)) != 0) {
            sl_result_free(&r);
            free(v);
            return rc;
        }
        for (size_t i = 0; i < r.n; i++) {
            sl_row *row = &r.rows[i];
            sl_val_str(&row->v[QU_NAME], last, sizeof last);
            if (row->v[QU_STATUS].i != Q_ACTIVE) continue;
            if (*n == cap) {
                cap = cap ? cap * 2 : 16;
                sl_queue_info *nv = sl_realloc(v, cap * sizeof *v);
                if (!nv) {
                    sl_result_free(&r);
                    free(v);
                    return SL_ENOMEM;
                }
                v = nv;
            }
            sl_queue_info *qi = &v[(*n)++];
            if (sl_queue_opts_parse(&row->v[QU_OPTS], &qi->opts) != 0) sl_queue_opts_default(&qi->opts);
            snprintf(qi->opts.name, sizeof qi->opts.name, "%s", last);
            qi->version = row->v[QU_VERSION].i;
            qi->created_ms = row->v[QU_CREATED].i;
        }
        int more = r.more;
        sl_result_free(&r);
        if (!more) break;
        s.from[0] = sl_vtext(last);
        s.nfrom = 1;
        s.from_excl = 1;
    }
    *out = v;
    return 0;
}

int sl_queue_delete(sl_engine *e, const char *account, const char *name) {
    int rc = sl_acct_exists(e->cfg.accounts, account);
    if (rc) return rc;
    qstate *q;
    if ((rc = eng_queue(e, account, name, &q)) != 0) return rc;
    sl_write w = {0};
    w.t = &sl_t_queues;
    w.kind = SL_W_UPDATE_IF;
    w.row.v[QU_ACCOUNT] = sl_vtext(account);
    w.row.v[QU_NAME] = sl_vtext(name);
    w.row.v[QU_STATUS] = sl_vint(Q_DELETED);
    w.row.v[QU_NONCE] = sl_vint(eng_nonce());
    w.cond[0] = (sl_cond){QU_STATUS, sl_vint(Q_ACTIVE)};
    w.cond[1] = (sl_cond){QU_VERSION, sl_vint(q->version)};
    w.ncond = 2;
    rc = eng_cas(e, &w, QU_NONCE);
    if (rc == SL_ENOTAPPLIED) rc = SL_ENOTFOUND; /* deleted (or replaced) by someone else */
    if (rc) return rc;
    eng_queue_forget(e, q);
    /* The background job removes the data; the index row says what to do. */
    sl_write x = {0};
    x.t = &sl_t_queue_index;
    x.kind = SL_W_UPSERT;
    x.row.v[QI_SHARD] = sl_vint(0);
    x.row.v[QI_QKEY] = sl_vtext(q->qkey);
    x.row.v[QI_ACCOUNT] = sl_vtext(account);
    x.row.v[QI_NAME] = sl_vtext(name);
    x.row.v[QI_STATUS] = sl_vint(Q_DELETED);
    x.row.v[QI_BSIZE] = sl_vint(q->opts.bucket_size);
    rc = eng_write(e, &x, 1);
    if (rc) sl_log(SL_ERR, "queue %s deleted, but its cleanup was not recorded: %s", q->qkey, sl_strerror(rc));
    return 0;
}

/* Statistics come from memory (ledger.c, and census.c for what other nodes
 * did): no request reads the queue's messages. Until the queue's first
 * recount on this node they are counted by reading the buckets that are
 * not finalized yet (lg_scan): exact, and proportional to the messages
 * still in the queue rather than to its history. */
typedef struct {
    sl_queue_statistics *out;
    int64_t oldest;
} stats_acc;

static int stats_row(void *arg, const sl_row *m, int64_t now) {
    stats_acc *a = arg;
    if (m->v[M_STATE].i != MS_WAITING || m->v[M_VISIBLE].i <= now)
        a->out->visible++;
    else if (msg_dcount(m->v[M_DCOUNT].i) == 0)
        a->out->delayed++;
    else
        a->out->in_flight++;
    if (a->oldest == 0 || m->v[M_PUT].i < a->oldest) a->oldest = m->v[M_PUT].i;
    return 0;
}

int sl_queue_stats(sl_engine *e, const char *account, const char *name, sl_queue_statistics *out) {
    memset(out, 0, sizeof *out);
    int rc = sl_acct_exists(e->cfg.accounts, account);
    if (rc) return rc;
    qstate *q;
    if ((rc = eng_queue(e, account, name, &q)) != 0) return rc;
    int64_t now = sl_now_ms();
    lg_fig f;
    lg_figures(q, now, &f);
    if (f.counted) {
        out->visible = f.visible;
        out->in_flight = f.in_flight;
        out->delayed = f.delayed;
        out->oldest_age_s = f.oldest_age_s;
    } else {
        stats_acc a = {out, 0};
        if ((rc = lg_scan(e, q, now, stats_row, &a)) != 0) return rc;
        out->oldest_age_s = a.oldest ? (now - a.oldest) / 1000 : 0;
    }
    out->size = out->visible + out->in_flight + out->delayed;
    sl_val key[2] = {sl_vtext(q->qkey), sl_vtext("dead")};
    sl_result r;
    sl_result_init(&r);
    rc = sl_store_get(e->st, &sl_t_counters, key, SL_READ_DEFAULT, &r);
    if (rc == 0) out->dead_lettered = r.rows[0].v[C_VALUE].i;
    sl_result_free(&r);
    return rc == SL_ENOTFOUND ? 0 : rc;
}

/* Purge is a floor in time: every message put at or before purge_ms is
 * gone. The call returns only once the clock has moved past that
 * millisecond, so a put that starts after it returns is never purged. */
int sl_queue_purge(sl_engine *e, const char *account, const char *name) {
    int rc = sl_acct_exists(e->cfg.accounts, account);
    if (rc) return rc;
    qstate *q;
    if ((rc = eng_queue(e, account, name, &q)) != 0) return rc;
    int64_t floor = sl_now_ms();
    if ((rc = eng_pointer_max(e, q->qkey, "purge", floor)) != 0) return rc;
    pthread_mutex_lock(&q->mu);
    if (q->purge_ms < floor) q->purge_ms = floor;
    q->ncands = 0;
    pthread_mutex_unlock(&q->mu);
    lg_purged(q);
    for (int i = 0; i < 20 && sl_now_ms() <= floor; i++) usleep(250);
    return 0;
}

int sl_queue_purged_at(sl_engine *e, const char *account, const char *name, int64_t *ms) {
    int rc = sl_acct_exists(e->cfg.accounts, account);
    if (rc) return rc;
    qstate *q;
    if ((rc = eng_queue(e, account, name, &q)) != 0) return rc;
    return eng_pointer_get(e, q->qkey, "purge", ms);
}

int sl_queue_redrive(sl_engine *e, const char *account, const char *dlq, const char *to, int64_t *moved) {
    *moved = 0;
    int rc = sl_acct_exists(e->cfg.accounts, account);
    if (rc) return rc;
    qstate *src, *dst;
    if ((rc = eng_queue(e, account, dlq, &src)) != 0) return rc;
    if ((rc = eng_queue(e, account, to, &dst)) != 0) return rc;
    if (src == dst) return SL_EINVAL;
    return eng_redrive(e, src, dst, NULL, NULL, moved);
}

typedef struct {
    sl_engine *e;
    qstate *src, *dst;
    int (*step)(void *arg, int64_t moved);
    void *arg;
    int64_t *moved;
} redrive_ctx;

static int redrive_row(void *arg, const sl_row *m, int64_t now) {
    redrive_ctx *c = arg;
    /* Messages leased from the DLQ right now stay with their reader. */
    if (m->v[M_STATE].i == MS_MOVING || (m->v[M_STATE].i == MS_WAITING && m->v[M_VISIBLE].i > now)) return 0;
    int rc = msg_move(c->e, c->src, m, c->dst, 1, 0);
    if (rc == SL_ENOTAPPLIED) return 0;
    if (rc) return rc;
    ++*c->moved;
    return c->step && c->step(c->arg, *c->moved) ? 1 : 0;
}

int eng_redrive(sl_engine *e, qstate *src, qstate *dst, int (*step)(void *arg, int64_t moved), void *arg,
                int64_t *moved) {
    redrive_ctx c = {e, src, dst, step, arg, moved};
    int rc = lg_scan(e, src, sl_now_ms(), redrive_row, &c);
    if (*moved) eng_notify(e, dst);
    return rc;
}
