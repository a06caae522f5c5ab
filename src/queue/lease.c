/* lease.c: the lease index: entries of the leases table (written at once,
 * or deferred and flushed), and the due times remembered per queue. */
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"

/* The lease index entry of message id (at version) that becomes due at
 * due. It lives until the message expires, but no more than
 * LEASE_ENTRY_KEEP_MS past its due time: by then a node's lease scan (a
 * receive, or the repair worker's tick) has read it, unless every node was
 * down all that time, and the repair worker republishes such a message
 * anyway (finalize_run, repair_newest). With the message's expiry alone,
 * the entry of every lease that was written stayed for the retention
 * period (14 days by default), long after its message was acked. */
void msg_lease_entry_write(qstate *q, int64_t id, int64_t version, int64_t due, int64_t exp_ms, int64_t now,
                           sl_write *w) {
    memset(w, 0, sizeof *w);
    w->t = &sl_t_leases;
    w->kind = SL_W_UPSERT;
    w->row.v[L_QKEY] = sl_vtext(q->qkey);
    w->row.v[L_MINUTE] = sl_vint(due / 60000);
    w->row.v[L_DUE] = sl_vint(due);
    w->row.v[L_ID] = sl_vint(id);
    w->row.v[L_VERSION] = sl_vint(version);
    int64_t keep = exp_ms > due ? exp_ms : due;
    if (keep > due + LEASE_ENTRY_KEEP_MS) keep = due + LEASE_ENTRY_KEEP_MS;
    w->ttl = (int)ttl_left_s(keep + 60000, now);
}

/* Whether a moment stamped (mono_ms, sl_now_ms) is less than FRESH_IDLE_MS
 * ago by both clocks: the monotonic one bounds how late another node's
 * writes are seen, the engine's (which tests drive) lets a clock jump end
 * the wait. */
int msg_recent(int64_t mono_then, int64_t now_then) {
    return sl_mono_ms() - mono_then < FRESH_IDLE_MS && sl_now_ms() - now_then < FRESH_IDLE_MS;
}

/* Remembers when the lease entries this node writes fall due, in a
 * min-heap, so that a receive knows whether one of them can be due before
 * it scans the index (see take_due). Beyond LEASE_DEFER_MAX remembered
 * times the queue stops skipping scans. */
void msg_lease_dues_note(qstate *q, const sl_write *w, size_t n) {
    pthread_mutex_lock(&q->mu);
    for (size_t k = 0; k < n && !q->dues_overflow; k++) {
        if (q->ndues == q->dues_cap) {
            size_t cap = q->dues_cap ? 2 * q->dues_cap : 256;
            int64_t *d = cap <= LEASE_DEFER_MAX ? sl_realloc(q->dues, cap * sizeof *d) : NULL;
            if (!d) {
                q->dues_overflow = 1;
                break;
            }
            q->dues = d;
            q->dues_cap = cap;
        }
        size_t i = q->ndues++;
        int64_t due = w[k].row.v[L_DUE].i;
        while (i > 0 && q->dues[(i - 1) / 2] > due) {
            q->dues[i] = q->dues[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        q->dues[i] = due;
    }
    pthread_mutex_unlock(&q->mu);
}

/* Forgets the remembered due times up to now less SETTLE_MS; caller holds
 * q->mu. Entries due since may not have landed when a scan looks for them
 * (most are written without waiting), so their due times keep the next
 * receives scanning until they are settled, as the scan's cursor does. */
void msg_lease_dues_pop(qstate *q, int64_t now) {
    now -= SETTLE_MS;
    while (q->ndues > 0 && q->dues[0] <= now) {
        int64_t last = q->dues[--q->ndues];
        size_t i = 0;
        for (;;) {
            size_t c = 2 * i + 1;
            if (c >= q->ndues) break;
            if (c + 1 < q->ndues && q->dues[c + 1] < q->dues[c]) c++;
            if (q->dues[c] >= last) break;
            q->dues[i] = q->dues[c];
            i = c;
        }
        if (q->ndues > 0) q->dues[i] = last;
    }
}

/* Defers the entry of a lease that lasts LEASE_DEFER_MIN_MS or more: it is
 * written LEASE_DEFER_MS after the lease (by the poller, or by take_due),
 * unless an ack or an update cancels it first. Losing a deferred entry in a
 * crash loses no message, as for a lost entry (see msg_lease_entry), and
 * since it is written at least a second before it is due, other nodes see
 * it in time. Returns 1 when deferred. */
int msg_lease_entry_defer(qstate *q, int64_t id, int64_t version, int64_t due, int64_t exp_ms, int64_t now) {
    if (due - now < LEASE_DEFER_MIN_MS) return 0;
    pthread_mutex_lock(&q->mu);
    if (q->pend_n == q->pend_cap && q->pend_cap < LEASE_DEFER_MAX) {
        size_t cap = q->pend_cap ? 2 * q->pend_cap : 256;
        struct pend_entry *p = sl_malloc(cap * sizeof *p);
        if (p) {
            for (size_t i = 0; i < q->pend_n; i++)
                p[i] = q->pend[(q->pend_head + i) % q->pend_cap];
            free(q->pend);
            q->pend = p;
            q->pend_head = 0;
            q->pend_cap = cap;
        }
    }
    int ok = q->pend_n < q->pend_cap;
    if (ok) {
        q->pend[(q->pend_head + q->pend_n) % q->pend_cap] =
            (struct pend_entry){id, version, due, exp_ms, now + LEASE_DEFER_MS};
        q->pend_n++;
    }
    pthread_mutex_unlock(&q->mu);
    return ok;
}

/* Forgets the deferred entry of (id, version), or with version -1 the
 * newest one of id (a sticky receipt's ack knows the delivery, not the
 * version), if it is among the newest ones (an ack usually comes soon
 * after its lease; an entry not found is written, and skipped later as
 * stale). */
void msg_lease_entry_cancel(qstate *q, int64_t id, int64_t version) {
    pthread_mutex_lock(&q->mu);
    for (size_t k = 0; k < q->pend_n && k < 4096; k++) {
        struct pend_entry *p = &q->pend[(q->pend_head + q->pend_n - 1 - k) % q->pend_cap];
        if (p->id == id && (version < 0 || p->version == version)) {
            p->id = -1;
            break;
        }
    }
    pthread_mutex_unlock(&q->mu);
}

/* Writes the deferred entries whose time came (write_at <= upto), waiting
 * for the commit when sync is set. A deleted incarnation's entries are
 * dropped: its messages are gone, and the entries would only land in a
 * partition that nothing reads again. */
int msg_lease_flush(sl_engine *e, qstate *q, int64_t upto, int sync) {
    enum { CHUNK = 64 };
    int64_t now = sl_now_ms();
    pthread_mutex_lock(&e->mu);
    int dead = q->dead;
    pthread_mutex_unlock(&e->mu);
    if (dead) {
        pthread_mutex_lock(&q->mu);
        q->pend_n = 0;
        pthread_mutex_unlock(&q->mu);
        return 0;
    }
    for (;;) {
        sl_write w[CHUNK];
        size_t n = 0;
        pthread_mutex_lock(&q->mu);
        while (q->pend_n > 0 && n < CHUNK) {
            struct pend_entry *p = &q->pend[q->pend_head];
            if (p->write_at > upto) break;
            if (p->id >= 0) msg_lease_entry_write(q, p->id, p->version, p->due, p->exp_ms, now, &w[n++]);
            q->pend_head = (q->pend_head + 1) % q->pend_cap;
            q->pend_n--;
        }
        int more = q->pend_n > 0 && q->pend[q->pend_head].write_at <= upto;
        pthread_mutex_unlock(&q->mu);
        if (n > 0) {
            msg_lease_dues_note(q, w, n);
            int rc = sync ? eng_write(e, w, n) : sl_store_apply_async(e->st, w, n);
            if (rc == SL_EUNKNOWN) rc = eng_write(e, w, n); /* idempotent upserts */
            if (rc) {
                sl_log(SL_INFO, "lease entries for %s not written: %s", q->qkey, sl_strerror(rc));
                return rc;
            }
        }
        if (!more) return 0;
    }
}

int msg_lease_entry(sl_engine *e, qstate *q, int64_t id, int64_t version, int64_t due, int64_t exp_ms,
                    int async) {
    int64_t now = sl_now_ms();
    if (async && msg_lease_entry_defer(q, id, version, due, exp_ms, now)) return 0;
    sl_write w;
    msg_lease_entry_write(q, id, version, due, exp_ms, now, &w);
    msg_lease_dues_note(q, &w, 1);
    /* The entry is an index of the message rows: if it is lost, the message
     * is not, since the repair worker moves expired waiting messages before
     * it finalizes their bucket, or in the newest bucket once their lease
     * has been over for the finalize timeout (later, so only after a
     * crash). Where the message already exists it is written without
     * waiting; a plain upsert of the same values is idempotent, so an
     * unknown outcome is retried. */
    int rc = async ? sl_store_apply_async(e->st, &w, 1) : eng_write(e, &w, 1);
    if (rc == SL_EUNKNOWN) rc = eng_write(e, &w, 1);
    if (rc)
        sl_log(SL_INFO, "lease entry for %s/%lld not written: %s", q->qkey, (long long)id, sl_strerror(rc));
    return rc;
}
