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
 * option never needs a schema change. */
static char *opts_json(const sl_queue_opts *o) {
    json_t *j = json_pack(
        "{s:i,s:i,s:s?,s:i,s:i,s:b,s:I,s:b,s:i,s:i,s:i,s:i}", "bucketSize", o->bucket_size,
        "maxDeliveryCount", o->max_delivery_count, "dlqName", o->dlq[0] ? o->dlq : NULL,
        "repairWorkerPollSeconds", o->repair_poll_s, "repairWorkerBucketFinalizeTimeSeconds",
        o->finalize_timeout_s, "deleteBucketsAfterFinalize", o->delete_buckets, "retentionSeconds",
        (json_int_t)o->retention_s, "strictFifo", o->strict_fifo, "visibilityTimeoutSeconds", o->visibility_s,
        "delaySeconds", o->delay_s, "receiveWaitSeconds", o->wait_s, "maximumMessageBytes", o->max_bytes);
    if (!j) return NULL;
    char *s = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    return s;
}

static int64_t get_int(json_t *j, const char *k, int64_t dflt) {
    json_t *v = json_object_get(j, k);
    if (json_is_integer(v)) return json_integer_value(v);
    if (json_is_boolean(v)) return json_is_true(v);
    return dflt;
}

/* Reads options written by opts_json; a missing or mistyped field keeps its
 * default, so rows written by an older version still load. */
int sl_queue_opts_parse(const char *json, sl_queue_opts *o) {
    json_t *j = json_loads(json, 0, NULL);
    if (!json_is_object(j)) {
        json_decref(j);
        return SL_EINVAL;
    }
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
    const char *dlq = json_string_value(json_object_get(j, "dlqName"));
    if (dlq) snprintf(o->dlq, sizeof o->dlq, "%s", dlq);
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

int sl_queue_create(sl_engine *e, const char *account, const sl_queue_opts *o, char *err, size_t cap) {
    int rc = opts_usable(e, account, o, err, cap);
    if (rc) return rc;
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
        char *opts = opts_json(o);
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

int sl_queue_update(sl_engine *e, const char *account, const sl_queue_opts *o, char *err, size_t cap) {
    int rc = opts_usable(e, account, o, err, cap);
    if (rc) return rc;
    for (int attempt = 0; attempt < 8; attempt++) {
        sl_val key[2] = {sl_vtext(account), sl_vtext(o->name)};
        sl_result r;
        sl_result_init(&r);
        rc = sl_store_get(e->st, &sl_t_queues, key, SL_READ_SERIAL, &r);
        if (rc) {
            sl_result_free(&r);
            return rc;
        }
        sl_row *row = &r.rows[0];
        int64_t version = row->v[QU_VERSION].i;
        char text[4096];
        sl_queue_opts now;
        if (row->v[QU_STATUS].i != Q_ACTIVE) {
            sl_result_free(&r);
            return SL_ENOTFOUND;
        }
        if (sl_val_str(&row->v[QU_OPTS], text, sizeof text) < 0 || sl_queue_opts_parse(text, &now) != 0)
            sl_queue_opts_default(&now);
        sl_result_free(&r);
        /* Only what may change in an incarnation; the layout stays. */
        memcpy(now.dlq, o->dlq, sizeof now.dlq);
        now.max_delivery_count = o->max_delivery_count;
        now.retention_s = o->retention_s;
        now.visibility_s = o->visibility_s;
        now.delay_s = o->delay_s;
        now.wait_s = o->wait_s;
        now.max_bytes = o->max_bytes;
        char *opts = opts_json(&now);
        if (!opts) return SL_ENOMEM;
        sl_write w = {0};
        w.t = &sl_t_queues;
        w.kind = SL_W_UPDATE_IF;
        w.row.v[QU_ACCOUNT] = sl_vtext(account);
        w.row.v[QU_NAME] = sl_vtext(o->name);
        w.row.v[QU_OPTS] = sl_vtext(opts);
        w.row.v[QU_NONCE] = sl_vint(eng_nonce());
        w.cond[0] = (sl_cond){QU_STATUS, sl_vint(Q_ACTIVE)};
        w.cond[1] = (sl_cond){QU_VERSION, sl_vint(version)};
        w.ncond = 2;
        rc = eng_cas(e, &w, QU_NONCE);
        free(opts);
        if (rc == 0) {
            /* This node sees the change at once; the others when they read
             * the row again, within a second (eng_queue). */
            qstate *q;
            pthread_mutex_lock(&e->mu);
            for (q = e->queues; q; q = q->next)
                if (!q->dead && q->version == version && strcmp(q->account, account) == 0 &&
                    strcmp(q->name, o->name) == 0)
                    q->checked_ms = 0;
            pthread_mutex_unlock(&e->mu);
            return eng_queue(e, account, o->name, &q);
        }
        if (rc != SL_ENOTAPPLIED) return rc;
        /* Changed, deleted or created again meanwhile: look again. */
    }
    return SL_EUNAVAILABLE;
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
            char opts[4096];
            if (sl_val_str(&row->v[QU_OPTS], opts, sizeof opts) < 0 || sl_queue_opts_parse(opts, &qi->opts) != 0)
                sl_queue_opts_default(&qi->opts);
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

/* Statistics are computed by reading the buckets that are not finalized yet
 * (from the repair pointer to the head): exact, and proportional to the
 * messages still in the queue rather than to its history. */
int sl_queue_stats(sl_engine *e, const char *account, const char *name, sl_queue_statistics *out) {
    memset(out, 0, sizeof *out);
    int rc = sl_acct_exists(e->cfg.accounts, account);
    if (rc) return rc;
    qstate *q;
    if ((rc = eng_queue(e, account, name, &q)) != 0) return rc;
    msg_refresh_purge(e, q, 1);
    int64_t repair, head, now = sl_now_ms(), oldest = 0;
    if ((rc = eng_pointer_get(e, q->qkey, "repair", &repair)) != 0) return rc;
    if ((rc = msg_head(e, q, &head)) != 0) return rc;
    int64_t last = head > 0 ? (head - 1) / q->opts.bucket_size : -1;
    for (int64_t b = repair; b <= last; b++) {
        sl_result r;
        sl_result_init(&r);
        if ((rc = msg_scan_bucket(e, q, b, &r)) != 0) {
            sl_result_free(&r);
            return rc;
        }
        for (size_t i = 0; i < r.n; i++) {
            sl_row *m = &r.rows[i];
            if (m->v[M_ID].i < 0 || msg_purged(q, m)) continue;
            int64_t st = m->v[M_STATE].i;
            if (st == MS_READY || st == MS_MOVING) {
                out->visible++;
            } else if (st == MS_WAITING) {
                if (m->v[M_VISIBLE].i <= now)
                    out->visible++;
                else if (m->v[M_DCOUNT].i == 0)
                    out->delayed++;
                else
                    out->in_flight++;
            } else {
                continue;
            }
            if (oldest == 0 || m->v[M_PUT].i < oldest) oldest = m->v[M_PUT].i;
        }
        sl_result_free(&r);
    }
    out->size = out->visible + out->in_flight + out->delayed;
    out->oldest_age_s = oldest ? (now - oldest) / 1000 : 0;
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
    msg_refresh_purge(e, src, 1);
    int64_t repair, head, now = sl_now_ms();
    if ((rc = eng_pointer_get(e, src->qkey, "repair", &repair)) != 0) return rc;
    if ((rc = msg_head(e, src, &head)) != 0) return rc;
    int64_t last = head > 0 ? (head - 1) / src->opts.bucket_size : -1;
    for (int64_t b = repair; b <= last; b++) {
        sl_result r;
        sl_result_init(&r);
        if ((rc = msg_scan_bucket(e, src, b, &r)) != 0) {
            sl_result_free(&r);
            return rc;
        }
        for (size_t i = 0; i < r.n; i++) {
            sl_row *m = &r.rows[i];
            if (m->v[M_ID].i < 0 || msg_purged(src, m)) continue;
            int64_t st = m->v[M_STATE].i;
            /* Messages leased from the DLQ right now stay with their reader. */
            if (st != MS_READY && !(st == MS_WAITING && m->v[M_VISIBLE].i <= now)) continue;
            rc = msg_move(e, src, m, dst, 1, 0);
            if (rc == 0) (*moved)++;
            else if (rc != SL_ENOTAPPLIED) {
                sl_result_free(&r);
                return rc;
            }
        }
        sl_result_free(&r);
    }
    if (*moved) eng_notify(e, dst);
    return 0;
}
