/* watch.c: long polling: watches, and waking them when a message may have
 * become visible. */
#include <stdlib.h>

#include "queue_int.h"
/* --- Watches ------------------------------------------------------------- */

int sl_watch_add(sl_engine *e, const char *account, const char *queue, int64_t deadline_ms,
                 void (*fn)(void *), void *arg, sl_watch **out) {
    qstate *q;
    int rc = eng_queue(e, account, queue, &q);
    if (rc) return rc;
    sl_watch *w = sl_calloc(1, sizeof *w);
    if (!w) return SL_ENOMEM;
    w->q = q;
    w->deadline_ms = deadline_ms;
    w->fn = fn;
    w->arg = arg;
    pthread_mutex_lock(&e->mu);
    if (e->cfg.max_watches > 0 && e->nwatches >= e->cfg.max_watches) {
        pthread_mutex_unlock(&e->mu);
        free(w);
        return SL_EBUSY;
    }
    e->nwatches++;
    q->users++;
    w->next = e->watches;
    e->watches = w;
    pthread_cond_broadcast(&e->wake);
    pthread_mutex_unlock(&e->mu);
    *out = w;
    return 0;
}

/* Fires and unlinks the watches of q (all of them when q is NULL and
 * `expired_only` is 0; with expired_only, those past their deadline). The
 * callbacks run with e->mu held, which is what lets sl_watch_cancel promise
 * that a callback is not running once it returns; callbacks only flag and
 * resume a connection, so holding the lock is cheap. */
static int watch_hit(const sl_watch *w, const qstate *q, int expired_only, int64_t now) {
    return expired_only ? w->deadline_ms <= now : (q == NULL || w->q == q);
}

static void fire_n(sl_engine *e, qstate *q, int expired_only, int64_t now, size_t max) {
    pthread_mutex_lock(&e->mu);
    /* The list is newest first: pass over the newest matches, so that the
     * max that are woken are the ones that waited longest. */
    size_t skip = 0;
    if (max != SIZE_MAX) {
        size_t n = 0;
        for (sl_watch *w = e->watches; w; w = w->next)
            n += watch_hit(w, q, expired_only, now);
        skip = n > max ? n - max : 0;
    }
    for (sl_watch **pp = &e->watches; *pp;) {
        sl_watch *w = *pp;
        int hit = watch_hit(w, q, expired_only, now);
        if (hit && skip > 0) {
            skip--;
            hit = 0;
        }
        if (hit) {
            *pp = w->next;
            e->nwatches--;
            w->q->users--;
            w->fired = 1;
            w->next = NULL;
            w->fn(w->arg);
        } else {
            pp = &w->next;
        }
    }
    pthread_mutex_unlock(&e->mu);
}

int sl_watch_cancel(sl_engine *e, sl_watch *w) {
    pthread_mutex_lock(&e->mu);
    int fired = w->fired;
    if (!fired) {
        for (sl_watch **pp = &e->watches; *pp; pp = &(*pp)->next)
            if (*pp == w) {
                *pp = w->next;
                e->nwatches--;
                w->q->users--;
                break;
            }
    }
    pthread_mutex_unlock(&e->mu);
    free(w);
    return fired;
}

void eng_fire(sl_engine *e, qstate *q, int expired_only, int64_t now) {
    fire_n(e, q, expired_only, now, SIZE_MAX);
}

void eng_notify(sl_engine *e, qstate *q) {
    eng_fire(e, q, 0, 0);
}

/* After n messages became visible: wakes n waiters of q, not all of them,
 * which would all run a receive for n messages. A woken waiter that finds
 * nothing (another consumer was quicker) waits again; one that goes away
 * without receiving leaves the message to the next receive, or to the
 * poller, which wakes every waiter of a queue with anything visible. */
void eng_notify_n(sl_engine *e, qstate *q, size_t n) {
    fire_n(e, q, 0, 0, n);
}
