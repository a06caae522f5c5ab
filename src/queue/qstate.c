/* qstate.c: the node-local cache of queue definitions and their state
 * (qstate), checked against the store now and then. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"
/* --- The queue cache ----------------------------------------------------- */

int sl_queue_opts_parse(const sl_val *v, sl_queue_opts *o); /* queue.c */

static qstate *qstate_new(const char *account, const char *name, int64_t version) {
    qstate *q = sl_calloc(1, sizeof *q);
    if (!q) return NULL;
    snprintf(q->account, sizeof q->account, "%s", account);
    snprintf(q->name, sizeof q->name, "%s", name);
    snprintf(q->qkey, sizeof q->qkey, "%s/%s/%lld", account, name, (long long)version);
    q->version = version;
    q->reader = -1;
    q->lcur_due = -1;
    q->claim_k = 1;
    q->fresh_dirty = 1;
    pthread_mutex_init(&q->mu, NULL);
    sl_fcond_init(&q->claimed);
    sl_fcond_init(&q->fresh_cv);
    lg_init(q);
    return q;
}

static uint64_t text_hash(const sl_val *v) {
    uint64_t h = 1469598103934665603ULL;
    const unsigned char *s = v->p;
    for (size_t i = 0; i < v->n; i++)
        h = (h ^ s[i]) * 1099511628211ULL;
    return h;
}

/* Takes the options that may change in an incarnation (sl_queue_update)
 * from text, the queue row's options as just read, whose hash is h: parsed
 * only when they changed, not on every read of the row. */
static void opts_refresh(qstate *q, const sl_val *text, uint64_t h) {
    pthread_mutex_lock(&q->mu);
    int same = q->opts_hash == h;
    pthread_mutex_unlock(&q->mu);
    sl_queue_opts fresh;
    if (same || sl_queue_opts_parse(text, &fresh) != 0) return;
    pthread_mutex_lock(&q->mu);
    memcpy(q->opts.dlq, fresh.dlq, sizeof q->opts.dlq);
    q->opts.max_delivery_count = fresh.max_delivery_count;
    q->opts.retention_s = fresh.retention_s;
    q->opts.visibility_s = fresh.visibility_s;
    q->opts.delay_s = fresh.delay_s;
    q->opts.wait_s = fresh.wait_s;
    q->opts.max_bytes = fresh.max_bytes;
    q->opts.fifo_content_dedup = fresh.fifo_content_dedup;
    q->opts.fifo_dedup_group = fresh.fifo_dedup_group;
    q->opts.fifo_throughput_group = fresh.fifo_throughput_group;
    q->opts_hash = h;
    pthread_mutex_unlock(&q->mu);
}

int64_t eng_queue_retention(qstate *q) {
    pthread_mutex_lock(&q->mu);
    int64_t r = q->opts.retention_s;
    pthread_mutex_unlock(&q->mu);
    return r;
}

void eng_queue_opts(qstate *q, sl_queue_opts *out) {
    pthread_mutex_lock(&q->mu);
    *out = q->opts;
    pthread_mutex_unlock(&q->mu);
}

/* Finds the live incarnation of account/name. The queue row is re-read when
 * the cached copy is older than a second, so a delete on another node, or
 * a change of its options, is seen within a second. */
int eng_queue(sl_engine *e, const char *account, const char *name, qstate **out) {
    if (!sl_name_valid(account) || !sl_name_valid(name)) return SL_ENOTFOUND;
    int64_t now = sl_now_ms();
    pthread_mutex_lock(&e->mu);
    qstate *q = e->queues;
    for (; q; q = q->next)
        if (!q->dead && strcmp(q->account, account) == 0 && strcmp(q->name, name) == 0) break;
    if (q && now - q->checked_ms < 1000) {
        pthread_mutex_unlock(&e->mu);
        *out = q;
        return 0;
    }
    pthread_mutex_unlock(&e->mu);

    sl_val key[2] = {sl_vtext(account), sl_vtext(name)};
    sl_result r;
    sl_result_init(&r);
    int rc = sl_store_get(e->st, &sl_t_queues, key, SL_READ_DEFAULT, &r);
    if (rc != 0) {
        sl_result_free(&r);
        if (rc == SL_ENOTFOUND && q) eng_queue_forget(e, q);
        return rc;
    }
    sl_row *row = &r.rows[0];
    if (row->v[QU_STATUS].i != Q_ACTIVE) {
        sl_result_free(&r);
        if (q) eng_queue_forget(e, q);
        return SL_ENOTFOUND;
    }
    int64_t version = row->v[QU_VERSION].i;
    const sl_val *opts = &row->v[QU_OPTS];
    int readable = opts->set && !opts->null;
    uint64_t h = readable ? text_hash(opts) : 0;
    pthread_mutex_lock(&e->mu);
    if (q && q->version == version) {
        q->checked_ms = now;
        pthread_mutex_unlock(&e->mu);
        if (readable) opts_refresh(q, opts, h); /* opts points into r */
        sl_result_free(&r);
        *out = q;
        return 0;
    }
    if (q) q->dead = 1;
    /* Another thread may have loaded this version meanwhile. */
    for (q = e->queues; q; q = q->next)
        if (!q->dead && q->version == version && strcmp(q->account, account) == 0 &&
            strcmp(q->name, name) == 0)
            break;
    if (!q) {
        q = qstate_new(account, name, version);
        if (!q) {
            pthread_mutex_unlock(&e->mu);
            sl_result_free(&r);
            return SL_ENOMEM;
        }
        if (readable && sl_queue_opts_parse(opts, &q->opts) == 0) {
            q->opts_hash = h;
        } else {
            sl_log(SL_ERR, "queue %s has unreadable options", q->qkey);
            sl_queue_opts_default(&q->opts);
        }
        snprintf(q->opts.name, sizeof q->opts.name, "%s", name);
        q->created_ms = row->v[QU_CREATED].i;
        const sl_val *sec = &row->v[QU_SECRET];
        if (sec->set && !sec->null && sec->n == sizeof q->secret) memcpy(q->secret, sec->p, sizeof q->secret);
        msg_receipt_init(q);
        q->next = e->queues;
        e->queues = q;
    }
    q->checked_ms = now;
    pthread_mutex_unlock(&e->mu);
    sl_result_free(&r);
    *out = q;
    return 0;
}

/* Marks an incarnation dead and wakes its watchers, which then find the
 * queue gone. The poller frees the qstate later (eng_queue_reap). */
void eng_queue_forget(sl_engine *e, qstate *q) {
    pthread_mutex_lock(&e->mu);
    q->dead = 1;
    pthread_mutex_unlock(&e->mu);
    msg_fresh_drop(q);
    eng_notify(e, q);
}

void eng_queue_hold(sl_engine *e, qstate *q) {
    pthread_mutex_lock(&e->mu);
    q->users++;
    pthread_mutex_unlock(&e->mu);
}

void eng_queue_release(sl_engine *e, qstate *q) {
    pthread_mutex_lock(&e->mu);
    q->users--;
    pthread_mutex_unlock(&e->mu);
}

static void qstate_free(qstate *q) {
    msg_fresh_drop(q);
    msg_receipt_free(q);
    free(q->fresh);
    free(q->pend);
    free(q->dues);
    pthread_mutex_destroy(&q->mu);
    lg_destroy(q);
    sl_fcond_destroy(&q->claimed);
    sl_fcond_destroy(&q->fresh_cv);
    free(q);
}

/* Frees the dead incarnations that nothing holds and that have been dead
 * for QSTATE_REAP_PASSES calls of this (one poller pass each), or every
 * qstate when all is set (the engine closes). Called by the poller, the
 * one thread that walks the list without the lock (flush_lease_entries),
 * or at close once the poller has stopped. */
void eng_queue_reap(sl_engine *e, int all) {
    qstate *gone = NULL;
    pthread_mutex_lock(&e->mu);
    for (qstate **pp = &e->queues; *pp;) {
        qstate *q = *pp;
        if (all || (q->dead && q->users == 0 && ++q->dead_passes >= QSTATE_REAP_PASSES)) {
            *pp = q->next;
            q->next = gone;
            gone = q;
        } else {
            pp = &q->next;
        }
    }
    pthread_mutex_unlock(&e->mu);
    for (qstate *n; gone; gone = n) {
        n = gone->next;
        qstate_free(gone);
    }
}
