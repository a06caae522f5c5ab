/* ledger.c: each queue's depth (visible, in flight, delayed) and the age of
 * its oldest message, kept current by the operations of this node as they
 * happen, for GET /metrics and the dashboard, which must not read the store
 * once per queue per scrape.
 *
 *  - size, the live messages (what sl_queue_stats counts: READY, MOVING and
 *    WAITING rows that no purge covers), goes up with every put and copy
 *    into the queue and down with every ack and move out of it;
 *  - the messages this node made invisible (a delayed put, a lease, a
 *    visibility change) are kept by id with the time they become visible
 *    again, so that a lease that runs out makes its message visible in the
 *    figures without anyone writing anything, and an ack removes exactly
 *    its own entry; visible = size - in flight - delayed;
 *  - a recount (the scan of sl_queue_stats, from the repair pointer to the
 *    head) sets them from the store: when the queue is first loaded, and
 *    whenever something happened that the hooks cannot count exactly (a
 *    purge, a write whose outcome is unknown, messages reaching their
 *    retention, a table of invisible messages that outgrew its bound).
 *    A recount is kept only if no operation of this node that changes the
 *    size was in flight or finished while it read: the figures are exact
 *    whenever the queue is idle, and a recount under load waits for a
 *    quiet moment.
 *
 * With several Sluice nodes on one Cassandra cluster (a store others share,
 * sl_store_type.shared), a node's own operations are not all there is:
 * census.c adds what the other nodes' tallies say they did since the
 * recount, and makes the recount itself wait until no node changes the
 * queue while it is read. So neither GET /{q}/statistics nor a scrape
 * reads the queue's messages; only a recount does, and only after an event
 * that the counts cannot follow. A recount reads only the buckets that
 * still hold live messages (those not yet finalized). */
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"

#define LG_MAX (1u << 20)           /* invisible messages one queue keeps by id */
#define LG_FORCE_MS (5 * 60 * 1000) /* a recount waits for a quiet moment this long at most */
#define LG_SWEEP_MS 5000            /* entries visible again are dropped this often */
#define LG_SEEK_MS 2000             /* the oldest message is looked for this often at most */
#define LG_SEEK_BUCKETS 16          /* buckets one look reads at most */
#define LG_EMPTY INT64_MIN

static size_t slot_of(int64_t id, size_t cap) {
    return (size_t)(((uint64_t)id * 0x9E3779B97F4A7C15ull) >> 32) & (cap - 1);
}

static lg_entry *find(lg_table *t, int64_t id) {
    if (!t->cap) return NULL;
    for (size_t i = slot_of(id, t->cap);; i = (i + 1) & (t->cap - 1)) {
        if (t->e[i].id == id) return &t->e[i];
        if (t->e[i].id == LG_EMPTY) return NULL;
    }
}

static void table_free(lg_table *t) {
    free(t->e);
    memset(t, 0, sizeof *t);
}

static int grow(lg_table *t) {
    size_t cap = t->cap ? 2 * t->cap : 64;
    lg_entry *e = malloc(cap * sizeof *e);
    if (!e) return SL_ENOMEM;
    for (size_t i = 0; i < cap; i++)
        e[i].id = LG_EMPTY;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->e[i].id == LG_EMPTY) continue;
        size_t j = slot_of(t->e[i].id, cap);
        while (e[j].id != LG_EMPTY)
            j = (j + 1) & (cap - 1);
        e[j] = t->e[i];
    }
    free(t->e);
    t->e = e;
    t->cap = cap;
    return 0;
}

/* Inserts or replaces the entry of id. -1 when the table is full (its
 * bound, or out of memory). */
static int put_entry(lg_table *t, const lg_entry *x) {
    lg_entry *f = find(t, x->id);
    if (f) {
        int64_t put = f->put_ms;
        *f = *x;
        if (!f->put_ms) f->put_ms = put;
        return 0;
    }
    if (t->n >= LG_MAX) return -1;
    if ((t->n + 1) * 10 > t->cap * 7 && grow(t)) return -1;
    size_t i = slot_of(x->id, t->cap);
    while (t->e[i].id != LG_EMPTY)
        i = (i + 1) & (t->cap - 1);
    t->e[i] = *x;
    t->n++;
    return 0;
}

/* Removes id's entry (linear probing: the entries after it that hashed at
 * or before its slot move back, so no lookup ever stops short). */
static int del_entry(lg_table *t, int64_t id, lg_entry *out) {
    lg_entry *f = find(t, id);
    if (!f) return -1;
    if (out) *out = *f;
    size_t i = (size_t)(f - t->e), mask = t->cap - 1;
    for (size_t j = (i + 1) & mask; t->e[j].id != LG_EMPTY; j = (j + 1) & mask) {
        size_t h = slot_of(t->e[j].id, t->cap);
        /* Does j's home lie cyclically in (i, j]? Then it stays. */
        if (i <= j ? (i < h && h <= j) : (i < h || h <= j)) continue;
        t->e[i] = t->e[j];
        i = j;
    }
    t->e[i].id = LG_EMPTY;
    t->n--;
    return 0;
}

/* What the other nodes' tallies add to this node's count (census.c). */
static int64_t others_net(const struct ledger *l) {
    int64_t n = 0;
    for (size_t i = 0; i < l->npeers; i++)
        n += l->peers[i].net - l->peers[i].net_cut;
    return n;
}

/* Notes that this node changed id's state while a recount reads. */
static void touch(struct ledger *l, int64_t id) {
    if (!l->tracking) return;
    lg_entry x = {id, 0, 0, 0};
    if (put_entry(&l->touched, &x)) l->touched_full = 1;
}

static void track_stop(struct ledger *l) {
    table_free(&l->touched);
    l->tracking = l->touched_full = 0;
}

/* --- Hooks (each under lg.mu) -------------------------------------------- */

void lg_init(qstate *q) {
    pthread_mutex_init(&q->lg.mu, NULL);
    q->lg.recount = 1;
}

void lg_destroy(qstate *q) {
    table_free(&q->lg.inv);
    table_free(&q->lg.touched);
    free(q->lg.peers);
    cs_recount_free(q->lg.rc);
    pthread_mutex_destroy(&q->lg.mu);
}

void lg_op_begin(qstate *q) {
    pthread_mutex_lock(&q->lg.mu);
    q->lg.pending++;
    pthread_mutex_unlock(&q->lg.mu);
}

void lg_op_end(qstate *q) {
    pthread_mutex_lock(&q->lg.mu);
    q->lg.pending--;
    q->lg.seq++;
    pthread_mutex_unlock(&q->lg.mu);
}

void lg_suspect(qstate *q) {
    pthread_mutex_lock(&q->lg.mu);
    q->lg.recount = 1;
    q->lg.sus++; /* the other nodes recount too (census.c) */
    pthread_mutex_unlock(&q->lg.mu);
}

void lg_purged(qstate *q) {
    struct ledger *l = &q->lg;
    pthread_mutex_lock(&l->mu);
    /* Everything in the queue so far is gone, whoever put it; a put that
     * raced the purge is found by the recount. */
    l->size = 0;
    l->oldest_put = 0;
    table_free(&l->inv);
    for (size_t i = 0; i < l->npeers; i++)
        l->peers[i].net_cut = l->peers[i].net;
    l->recount = 1;
    l->sus++;
    l->seq++;
    pthread_mutex_unlock(&l->mu);
}

void lg_put(qstate *q, int64_t id, int64_t put_ms, int64_t vis_ms, int64_t exp_ms) {
    struct ledger *l = &q->lg;
    pthread_mutex_lock(&l->mu);
    l->seq++;
    l->adds++;
    if (l->size++ + others_net(l) <= 0) l->oldest_put = put_ms; /* else older ones are there (known or not) */
    if (exp_ms < l->min_exp || !l->min_exp) l->min_exp = exp_ms;
    if (exp_ms < l->min_exp_new || !l->min_exp_new) l->min_exp_new = exp_ms;
    if (vis_ms > put_ms) {
        lg_entry x = {id, vis_ms, put_ms, 1};
        if (put_entry(&l->inv, &x)) l->recount = 1;
        touch(l, id);
    }
    pthread_mutex_unlock(&l->mu);
}

void lg_leased(qstate *q, int64_t id, int64_t put_ms, int64_t vis_ms) {
    pthread_mutex_lock(&q->lg.mu);
    lg_entry x = {id, vis_ms, put_ms, 0};
    q->lg.seq++;
    if (put_entry(&q->lg.inv, &x)) q->lg.recount = 1;
    touch(&q->lg, id);
    pthread_mutex_unlock(&q->lg.mu);
}

void lg_gone(qstate *q, int64_t id, int64_t put_ms) {
    pthread_mutex_lock(&q->lg.mu);
    struct ledger *l = &q->lg;
    lg_entry old;
    l->seq++;
    l->removes++;
    touch(l, id);
    if (del_entry(&l->inv, id, &old) == 0 && old.put_ms) put_ms = old.put_ms;
    /* Below 0 only on a shared store, where this node may take out what
     * others put: their tallies make up for it. */
    if (l->size > 0 || l->npeers) l->size--;
    l->gone++;
    /* The oldest went (or may have): until the background worker finds the
     * next one (seek_oldest), lg_figures looks for it in what this node
     * knows. */
    if (!put_ms || put_ms <= l->oldest_put) l->oldest_put = 0;
    pthread_mutex_unlock(&q->lg.mu);
}

/* --- Recount --------------------------------------------------------------- */

static int count_row(void *arg, const sl_row *m, int64_t now) {
    lg_count *a = arg;
    a->size++;
    if (!a->oldest || m->v[M_PUT].i < a->oldest) a->oldest = m->v[M_PUT].i;
    if (!a->min_exp || m->v[M_EXP].i < a->min_exp) a->min_exp = m->v[M_EXP].i;
    if (m->v[M_STATE].i == MS_WAITING && m->v[M_VISIBLE].i > now) {
        lg_entry x = {m->v[M_ID].i, m->v[M_VISIBLE].i, m->v[M_PUT].i, msg_dcount(m->v[M_DCOUNT].i) == 0};
        if (put_entry(&a->inv, &x)) a->full = 1;
    }
    return 0;
}

int lg_scan(sl_engine *e, qstate *q, int64_t now, int (*fn)(void *, const sl_row *, int64_t), void *arg) {
    msg_refresh_purge(e, q, 1);
    int64_t repair, head;
    /* The rows as every answered lease left them (sl_store_catch_up):
     * statistics right after a receive count what it leased as in flight. */
    sl_store_catch_up(e->st);
    int rc;
    if ((rc = eng_pointer_get(e, q->qkey, "repair", &repair)) != 0) return rc;
    if ((rc = msg_head(e, q, &head)) != 0) return rc;
    int64_t last = head > 0 ? (head - 1) / q->opts.bucket_size : -1;
    for (int64_t b = repair; b <= last && !__atomic_load_n(&e->stopping, __ATOMIC_ACQUIRE); b++) {
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
            if ((st == MS_READY || st == MS_MOVING || st == MS_WAITING) && (rc = fn(arg, m, now)) != 0) break;
        }
        sl_result_free(&r);
        if (rc) return rc;
    }
    return 0;
}

int lg_count_scan(sl_engine *e, qstate *q, int64_t now, lg_count *a) {
    memset(a, 0, sizeof *a);
    pthread_mutex_lock(&q->lg.mu);
    q->lg.min_exp_new = 0;
    a->sus_at = q->lg.sus;
    track_stop(&q->lg);
    q->lg.tracking = e->st->type->shared;
    pthread_mutex_unlock(&q->lg.mu);
    return lg_scan(e, q, now, count_row, a);
}

void lg_count_abandon(qstate *q) {
    pthread_mutex_lock(&q->lg.mu);
    track_stop(&q->lg);
    pthread_mutex_unlock(&q->lg.mu);
}

void lg_count_free(lg_count *a) {
    table_free(&a->inv);
}

static int later_first(const void *x, const void *y) {
    const lg_entry *a = x, *b = y;
    return (a->vis_ms < b->vis_ms) - (a->vis_ms > b->vis_ms);
}

/* Brings l->inv in line with a recount's invisible messages (found), on a
 * shared store, leaving alone the messages this node touched since the
 * scan began: drops its entries of messages the scan saw visible or gone
 * (another node took them out, or returned them), and adds those found
 * that no live node counts: of those this node does not know, all but the
 * `others` (of the same kind) that the live nodes publish, the latest
 * first (a node that died had written its earlier leases to its tallies,
 * and a closed node's are left to this one). */
static void reconcile(struct ledger *l, const lg_table *found, int64_t others_inflight,
                      int64_t others_delayed) {
    for (size_t i = 0; i < l->inv.cap;) {
        const lg_entry *x = &l->inv.e[i];
        if (x->id != LG_EMPTY && !find((lg_table *)found, x->id) && !find(&l->touched, x->id))
            del_entry(&l->inv, x->id, NULL); /* i again: another may have moved here */
        else
            i++;
    }
    for (int delayed = 0; delayed < 2; delayed++) {
        int64_t others = delayed ? others_delayed : others_inflight;
        size_t n = 0;
        lg_entry *v = found->n ? malloc(found->n * sizeof *v) : NULL;
        for (size_t i = 0; v && i < found->cap; i++) {
            const lg_entry *x = &found->e[i];
            if (x->id != LG_EMPTY && x->delayed == delayed && !find(&l->inv, x->id) &&
                !find(&l->touched, x->id))
                v[n++] = *x;
        }
        if (v && (int64_t)n > others) {
            qsort(v, n, sizeof *v, later_first);
            for (size_t i = 0; i < n - (size_t)(others < 0 ? 0 : others); i++)
                if (put_entry(&l->inv, &v[i])) l->recount = 1;
        }
        free(v);
    }
}

void lg_install_locked(sl_engine *e, struct ledger *l, lg_count *a, int64_t now, int64_t net_at,
                       int consistent, int64_t others_inflight, int64_t others_delayed) {
    l->recount = 0;
    if (e->st->type->shared) {
        /* This node's operations since the scan ended are on top of it;
         * its invisible messages it knows by its own hooks, and the live
         * nodes count theirs (census.c). */
        l->size = a->size + (l->adds - l->removes - net_at);
        if (a->full || l->touched_full)
            l->recount = 1; /* the table cannot say which are whose */
        else
            reconcile(l, &a->inv, others_inflight, others_delayed);
        track_stop(l);
        l->min_exp = a->min_exp;
        if (l->min_exp_new && (!l->min_exp || l->min_exp_new < l->min_exp)) l->min_exp = l->min_exp_new;
    } else {
        l->size = a->size;
        l->min_exp = a->min_exp;
        table_free(&l->inv);
        l->inv = a->inv;
        a->inv = (lg_table){0};
    }
    l->recount |= a->full || !consistent || l->sus != a->sus_at;
    l->oldest_put = a->oldest;
    l->counted_ms = now;
    l->counted = 1;
}

/* Looks for the oldest live message, in LG_SEEK_BUCKETS buckets from
 * where the last look stopped (at first the repair pointer), rather than
 * recounting the queue: it is in the first bucket that holds a live
 * message, or near it (ids are handed out in put order on each node).
 * Done when the oldest this node knew of went, or another node's tallies
 * moved, LG_SEEK_MS apart at most. */
static void seek_oldest(sl_engine *e, qstate *q, int64_t now) {
    struct ledger *l = &q->lg;
    int64_t repair, head, found = 0;
    pthread_mutex_lock(&l->mu);
    uint64_t gone = l->gone;
    int64_t from = l->seek_from;
    l->seek_ms = now;
    l->seek_gen = l->peers_gen;
    pthread_mutex_unlock(&l->mu);
    if (eng_pointer_get(e, q->qkey, "repair", &repair) != 0 || msg_head(e, q, &head) != 0) return;
    int64_t last = head > 0 ? (head - 1) / q->opts.bucket_size : -1, b = from > repair ? from : repair;
    for (int k = 0; k < LG_SEEK_BUCKETS && b <= last && !found; k++, b++) {
        sl_result r;
        sl_result_init(&r);
        if (msg_scan_bucket(e, q, b, &r) != 0) {
            sl_result_free(&r);
            return;
        }
        for (size_t i = 0; i < r.n; i++) {
            const sl_row *m = &r.rows[i];
            int64_t st = m->v[M_STATE].i;
            if (m->v[M_ID].i < 0 || msg_purged(q, m) || m->v[M_EXP].i <= now ||
                (st != MS_READY && st != MS_MOVING && st != MS_WAITING))
                continue;
            if (!found || m->v[M_PUT].i < found) found = m->v[M_PUT].i;
        }
        sl_result_free(&r);
    }
    pthread_mutex_lock(&l->mu);
    if (l->gone == gone) { /* else what it found may have gone meanwhile: look again */
        if (found || b > last) l->oldest_put = found;
        l->seek_from = found || b > last ? 0 : b;
    }
    pthread_mutex_unlock(&l->mu);
}

/* Recounts q if that is due; the background worker calls it for every
 * queue on every pass. */
void lg_maintain(sl_engine *e, qstate *q, int64_t now) {
    struct ledger *l = &q->lg;
    pthread_mutex_lock(&l->mu);
    if (now - l->swept_ms >= LG_SWEEP_MS) {
        /* Entries visible again: their messages count as visible anyway. */
        l->swept_ms = now;
        for (size_t i = 0; i < l->inv.cap;) {
            if (l->inv.e[i].id != LG_EMPTY && l->inv.e[i].vis_ms <= now)
                del_entry(&l->inv, l->inv.e[i].id, NULL); /* i again: another may have moved here */
            else
                i++;
        }
    }
    if (l->min_exp && now >= l->min_exp && !l->recount) {
        l->recount = 1; /* messages reached their retention */
        l->sus++;       /* which the other nodes' counts do not see either */
    }
    /* A recount waits for a pass with no change since the pass before, so
     * that a busy queue is not read over and over in vain; past
     * LG_FORCE_MS (or before the first count) it goes ahead, and is kept
     * even if the queue changed meanwhile (it is then due again). */
    int quiet = l->pending == 0 && l->seq == l->seq_seen;
    l->seq_seen = l->seq;
    int force = !l->counted || now - l->counted_ms >= LG_FORCE_MS;
    int due = l->recount;
    uint64_t seq = l->seq;
    /* On a shared store another node may have taken the oldest out. */
    int seek = l->counted && !l->recount && (!l->oldest_put || l->peers_gen != l->seek_gen) &&
               l->size + others_net(l) > 0 && now - l->seek_ms >= LG_SEEK_MS;
    pthread_mutex_unlock(&l->mu);
    if (seek) seek_oldest(e, q, now);
    if (e->st->type->shared) {
        cs_recount_step(e, q, now, due, quiet, force);
        return;
    }
    if (!due || !(quiet || force)) return;

    lg_count a;
    int rc = lg_count_scan(e, q, now, &a);
    pthread_mutex_lock(&l->mu);
    quiet = l->pending == 0 && l->seq == seq;
    if (rc == 0 && (quiet || force)) lg_install_locked(e, l, &a, now, 0, quiet, 0, 0);
    pthread_mutex_unlock(&l->mu);
    lg_count_free(&a);
}

void lg_own_invisible(const struct ledger *l, int64_t now, int64_t *inflight, int64_t *delayed,
                      int64_t *max_vis, int64_t *oldest_put) {
    *inflight = *delayed = *max_vis = *oldest_put = 0;
    for (size_t i = 0; i < l->inv.cap; i++) {
        const lg_entry *x = &l->inv.e[i];
        if (x->id == LG_EMPTY) continue;
        if (x->put_ms && (!*oldest_put || x->put_ms < *oldest_put)) *oldest_put = x->put_ms;
        if (x->vis_ms <= now) continue;
        ++*(x->delayed ? delayed : inflight);
        if (x->vis_ms > *max_vis) *max_vis = x->vis_ms;
    }
}

/* The figures as of now, from memory only: this node's ledger, and on a
 * shared store what the other nodes' tallies add to it (census.c). */
void lg_figures(qstate *q, int64_t now, lg_fig *out) {
    struct ledger *l = &q->lg;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&l->mu);
    int64_t oldest = l->oldest_put, known, max_vis;
    lg_own_invisible(l, now, &out->in_flight, &out->delayed, &max_vis, &known);
    out->counted = l->counted;
    int64_t size = l->size + others_net(l), o_inflight = 0, o_delayed = 0;
    for (size_t i = 0; i < l->npeers; i++) {
        const cs_peer *p = &l->peers[i];
        if (p->live && p->max_vis > now) {
            o_inflight += p->inflight;
            o_delayed += p->delayed;
        }
    }
    pthread_mutex_unlock(&l->mu);
    if (!oldest) {
        /* The oldest this node knows of: an invisible message, or the next
         * one its receivers would get. */
        pthread_mutex_lock(&q->mu);
        if (q->fresh_pos < q->nfresh) {
            int64_t p = q->fresh[q->fresh_pos]->v[M_PUT].i;
            if (!known || p < known) known = p;
        }
        pthread_mutex_unlock(&q->mu);
        oldest = known;
    }
    /* The others' invisible messages, as far as the size leaves room for
     * them: an ack on this node of a message another leased leaves it in
     * that node's count until its lease would have ended. */
    if (size < out->in_flight + out->delayed) size = out->in_flight + out->delayed;
    out->delayed +=
        o_delayed < size - out->in_flight - out->delayed ? o_delayed : size - out->in_flight - out->delayed;
    out->in_flight +=
        o_inflight < size - out->in_flight - out->delayed ? o_inflight : size - out->in_flight - out->delayed;
    out->visible = size - out->in_flight - out->delayed;
    out->oldest_age_s = size > 0 && oldest ? (now - oldest) / 1000 : 0;
    if (out->oldest_age_s < 0) out->oldest_age_s = 0;
}
