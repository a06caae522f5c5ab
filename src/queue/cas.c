/* cas.c: compare-and-set with the resolution of unknown outcomes (a nonce
 * read back at SERIAL), the combiner that makes one batch of concurrent
 * requests' compare-and-sets, and the pointers and counters built on them. */
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"
int64_t eng_nonce(void) {
    int64_t n = (int64_t)(sl_random_u64() >> 1);
    return n ? n : 1;
}

int eng_write(sl_engine *e, const sl_write *w, size_t n) {
    return sl_store_apply(e->st, w, n, NULL);
}

static int val_eq(const sl_val *a, const sl_val *b, sl_type t) {
    int anull = !a->set || a->null, bnull = !b->set || b->null;
    if (anull || bnull) return anull == bnull;
    if (t == SL_INT) return a->i == b->i;
    return a->n == b->n && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0);
}

/* Settles compare-and-set w, of which an earlier send may have applied
 * (sent): every CAS the engine makes writes a fresh nonce into nonce_col,
 * so a SERIAL read tells whether it applied (the nonce is ours), or did not
 * and can be sent again (the condition still holds), or did not and cannot
 * (someone else changed the row). Once a send's outcome was unknown, "not
 * applied" from a later send is not taken at its word either: the earlier
 * one may have landed in between (a Paxos round completed by the next
 * one), and the read tells which. A read that fails learns nothing, so it
 * is made again; the answer is never a guess. A write parked by the fault
 * hook that applies later finds its condition false, as a late Paxos round
 * would. Returns 0 (applied), SL_ENOTAPPLIED, or a store error. */
static int cas_resolve(sl_engine *e, sl_write *w, int nonce_col, int sent) {
    const sl_table *t = w->t;
    int64_t nonce = w->row.v[nonce_col].i;
    if (sent) sl_count(&e->cas_unknown, 1);
    for (int attempt = 0; attempt < 6; attempt++) {
        if (sent) {
            sl_result r;
            sl_result_init(&r);
            int rc = sl_store_get(e->st, t, w->row.v, SL_READ_SERIAL, &r);
            if (rc != 0 && rc != SL_ENOTFOUND) {
                sl_result_free(&r);
                continue; /* could not learn the outcome: ask again */
            }
            if (rc == 0 && r.rows[0].v[nonce_col].set && r.rows[0].v[nonce_col].i == nonce) {
                sl_result_free(&r);
                return 0;
            }
            int holds;
            if (w->kind == SL_W_INSERT_IF_NOT_EXISTS) {
                holds = (rc == SL_ENOTFOUND);
            } else {
                holds = (rc == 0);
                for (int i = 0; holds && i < w->ncond; i++)
                    holds = val_eq(&r.rows[0].v[w->cond[i].col], &w->cond[i].v, t->cols[w->cond[i].col].type);
            }
            sl_result_free(&r);
            if (!holds) return SL_ENOTAPPLIED;
            sl_log(SL_DEBUG, "cas on %s: outcome unknown, condition holds, sending again", t->name);
        }
        eng_cas_sent(e);
        int rc = sl_store_apply(e->st, w, 1, NULL);
        if (rc == SL_EUNKNOWN || (rc == SL_ENOTAPPLIED && sent)) {
            if (!sent) sl_count(&e->cas_unknown, 1);
            sent = 1;
            continue;
        }
        return rc;
    }
    return SL_EUNAVAILABLE;
}

void eng_cas_sent(sl_engine *e) {
    sl_count(&e->cas_rounds, 1);
}

/* Counts a compare-and-set's outcome. */
static int cas_counted(sl_engine *e, int rc) {
    sl_count(&e->cas_outcome[rc == 0 ? 0 : rc == SL_ENOTAPPLIED ? 1 : 2], 1);
    return rc;
}

int eng_cas(sl_engine *e, sl_write *w, int nonce_col) {
    return cas_counted(e, cas_resolve(e, w, nonce_col, 0));
}

/* The outcome of compare-and-set w, sent in a conditional batch of n
 * writes that was answered rc. An unknown outcome is resolved by w's
 * nonce; a batch of several that was not applied (one condition failed,
 * maybe not w's) is retried with w alone. */
int eng_cas_settle(sl_engine *e, sl_write *w, int nonce_col, int rc, size_t n) {
    if (rc == SL_EUNKNOWN) return cas_counted(e, cas_resolve(e, w, nonce_col, 1));
    if (rc == SL_ENOTAPPLIED && n > 1) return cas_counted(e, cas_resolve(e, w, nonce_col, 0));
    return cas_counted(e, rc);
}

/* --- Combined compare-and-sets -------------------------------------------- */

/* Whether a and b (of one table) agree on their first ncols columns. */
int eng_same_key(const sl_write *a, const sl_write *b, int ncols) {
    for (int i = 0; i < ncols; i++)
        if (!val_eq(&a->row.v[i], &b->row.v[i], a->t->cols[i].type)) return 0;
    return 1;
}

static int same_partition(const sl_write *a, const sl_write *b) {
    return a->t == b->t && eng_same_key(a, b, a->t->npk);
}

static int same_row(const sl_write *a, const sl_write *b) {
    return a->t == b->t && eng_same_key(a, b, a->t->npk + a->t->nck);
}

static void arrange_swap(sl_write *w, void (*swap)(void *ctx, size_t a, size_t b), void *ctx, size_t a,
                         size_t b) {
    if (a == b) return;
    sl_write t = w[a];
    w[a] = w[b];
    w[b] = t;
    if (swap) swap(ctx, a, b);
}

size_t eng_cas_arrange(sl_write *w, size_t n, void (*swap)(void *ctx, size_t a, size_t b), void *ctx,
                       size_t *gstart, size_t *gn, size_t *nsent) {
    /* The repeated rows go last, in their order. */
    size_t end = n;
    for (size_t i = n; i-- > 0;) {
        int late = 0;
        for (size_t j = 0; j < i && !late; j++)
            late = same_row(&w[j], &w[i]);
        if (!late) continue;
        for (size_t x = i; x + 1 < end; x++)
            arrange_swap(w, swap, ctx, x, x + 1);
        end--;
    }
    size_t ng = 0;
    for (size_t i = 0; i < end;) {
        size_t last = i + 1;
        for (size_t j = last; j < end; j++)
            if (same_partition(&w[j], &w[i])) arrange_swap(w, swap, ctx, last++, j);
        gstart[ng] = i;
        gn[ng++] = last - i;
        i = last;
    }
    *nsent = ng;
    for (size_t i = end; i < n; i++) {
        gstart[ng] = i;
        gn[ng++] = 1;
    }
    return ng;
}

/* Which of a queue's combiners takes a write: by its partition, so that
 * rounds for different partitions (buckets) run side by side. */
static int cas_slot(const sl_write *w) {
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < w->t->npk; i++) {
        const sl_val *v = &w->row.v[i];
        if (w->t->cols[i].type == SL_INT) {
            h = (h ^ (uint64_t)v->i) * 1099511628211ULL;
            continue;
        }
        for (size_t k = 0; k < v->n; k++)
            h = (h ^ ((const unsigned char *)v->p)[k]) * 1099511628211ULL;
    }
    return (int)(h % CAS_SLOTS);
}

/* Concurrent compare-and-sets of one queue's rows (leases, acks) are
 * combined, on stores that ask for it (combine_cas): while a round of a
 * combiner is with the store, the groups submitted to it queue up, and when
 * the round's last answer comes, the queued groups go out as the next
 * round, each partition's as one conditional batch (one Paxos round on
 * Cassandra, where single-row rounds on one bucket would contend with each
 * other). A group that has a row in common with a group already in its
 * partition's batch waits for the round after: a batch checks all its
 * conditions before it writes any, and would apply both. Nothing waits
 * here: the answer of a round starts the next one, on whichever thread the
 * store answers on, so a compare-and-set with the store holds no thread.
 * Batches are all or nothing, so the owner of a group settles each of its
 * writes by the batch's answer with eng_cas_settle (by its nonce when the
 * outcome is unknown, on its own when a batch of several was not
 * applied). */
typedef struct cas_batch {
    sl_engine *e;
    qstate *q;
    int slot;
    eng_casg *members;
    size_t n;
    sl_write w[SL_BATCH_MAX];
} cas_batch;

static void round_start(sl_engine *e, qstate *q, int slot, eng_casg *list);

static void batch_answer(void *arg, int rc) {
    cas_batch *b = arg;
    sl_engine *e = b->e;
    qstate *q = b->q;
    int slot = b->slot;
    struct cas_slot *s = &q->cas[slot];
    /* The next round first: this batch's members hold q until told. */
    eng_casg *next = NULL;
    pthread_mutex_lock(&q->mu);
    if (--s->inflight == 0) {
        next = s->head;
        s->head = s->tail = NULL;
        if (!next) s->busy = 0;
    }
    pthread_mutex_unlock(&q->mu);
    if (next) round_start(e, q, slot, next);
    for (eng_casg *m = b->members, *nx; m; m = nx) {
        nx = m->next;
        m->rc = rc;
        m->bn = b->n;
        m->done(m->arg);
    }
    free(b);
}

/* Answers a group that could not be sent. */
static void group_fail(eng_casg *g, int rc) {
    g->rc = rc;
    g->bn = g->n;
    g->done(g->arg);
}

/* Sends a round: the groups of list, by partition, each batch as large as
 * SL_BATCH_MAX allows; a group that does not fit (a row twice, or too many
 * writes) goes back to wait for the next round. */
static void round_start(sl_engine *e, qstate *q, int slot, eng_casg *list) {
    cas_batch *bs[CAS_ROUND_MAX];
    int nb = 0;
    eng_casg *back = NULL, *backtail = NULL, *failed = NULL;
    while (list) {
        eng_casg *g = list;
        list = g->next;
        g->next = NULL;
        cas_batch *b = NULL;
        for (int k = 0; k < nb && !b; k++)
            if (same_partition(&bs[k]->w[0], &g->w[0])) b = bs[k];
        int fits = 1;
        if (b) {
            fits = b->n + g->n <= SL_BATCH_MAX;
            for (size_t x = 0; x < b->n && fits; x++)
                for (size_t y = 0; y < g->n && fits; y++)
                    fits = !same_row(&b->w[x], &g->w[y]);
        } else if (nb < CAS_ROUND_MAX && (b = malloc(sizeof *b)) != NULL) {
            b->e = e; /* not zeroed: w is large, and filled as it grows */
            b->q = q;
            b->slot = slot;
            b->members = NULL;
            b->n = 0;
            bs[nb++] = b;
        } else if (nb == 0) { /* out of memory, and nothing goes out to come back for it */
            g->next = failed;
            failed = g;
            continue;
        } else {
            fits = 0;
        }
        if (!fits) {
            if (backtail)
                backtail->next = g;
            else
                back = g;
            backtail = g;
            continue;
        }
        memcpy(&b->w[b->n], g->w, g->n * sizeof *g->w);
        b->n += g->n;
        g->next = b->members;
        b->members = g;
    }
    pthread_mutex_lock(&q->mu);
    struct cas_slot *s = &q->cas[slot];
    if (back) { /* ahead of what came meanwhile */
        backtail->next = s->head;
        if (!s->head) s->tail = backtail;
        s->head = back;
    }
    s->inflight = nb;
    if (nb == 0) s->busy = 0; /* only when list held failed groups alone */
    pthread_mutex_unlock(&q->mu);
    for (int k = 0; k < nb; k++) {
        eng_cas_sent(e);
        sl_store_apply_cb(e->st, bs[k]->w, bs[k]->n, batch_answer, bs[k]);
    }
    for (eng_casg *g = failed, *nx; g; g = nx) {
        nx = g->next;
        group_fail(g, SL_ENOMEM);
    }
}

static void alone_answer(void *arg, int rc) {
    eng_casg *g = arg;
    g->rc = rc;
    g->bn = g->n;
    g->done(g->arg);
}

void eng_cas_submit(sl_engine *e, qstate *q, eng_casg *g) {
    int combine = e->cfg.combine_cas ? e->cfg.combine_cas > 0 : e->st->type->combine_cas;
    g->next = NULL;
    if (!combine) { /* this group alone (see sl_store_type) */
        eng_cas_sent(e);
        if (g->early)
            sl_store_apply_cb_early(e->st, g->w, g->n, alone_answer, g);
        else
            sl_store_apply_cb(e->st, g->w, g->n, alone_answer, g);
        return;
    }
    int slot = cas_slot(&g->w[0]);
    struct cas_slot *s = &q->cas[slot];
    pthread_mutex_lock(&q->mu);
    int lead = !s->busy;
    if (lead) {
        s->busy = 1;
    } else {
        if (s->tail)
            s->tail->next = g;
        else
            s->head = g;
        s->tail = g;
    }
    pthread_mutex_unlock(&q->mu);
    if (lead) round_start(e, q, slot, g);
}

/* eng_cas_many: its writes arranged in groups (a copy, so that w keeps its
 * order), submitted, waited for, and settled. */
struct many {
    sl_latch l;
    size_t ix[SL_BATCH_MAX];
};

static void many_swap(void *ctx, size_t a, size_t b) {
    struct many *m = ctx;
    size_t t = m->ix[a];
    m->ix[a] = m->ix[b];
    m->ix[b] = t;
}

static void many_done(void *arg) {
    sl_latch_done(&((struct many *)arg)->l);
}

void eng_cas_many(sl_engine *e, qstate *q, sl_write *w, size_t n, int nonce_col, int *rcs) {
    if (n > SL_BATCH_MAX) {
        for (size_t i = 0; i < n; i++)
            rcs[i] = SL_EINVAL;
        return;
    }
    sl_write *tmp = malloc(n * sizeof *tmp);
    eng_casg *g = malloc(n * sizeof *g);
    struct many *m = malloc(sizeof *m);
    if (!tmp || !g || !m) {
        for (size_t i = 0; i < n; i++)
            rcs[i] = SL_ENOMEM;
        free(tmp), free(g), free(m);
        return;
    }
    size_t gstart[SL_BATCH_MAX], gn[SL_BATCH_MAX], nsent;
    for (size_t i = 0; i < n; i++)
        m->ix[i] = i;
    memcpy(tmp, w, n * sizeof *tmp);
    size_t ng = eng_cas_arrange(tmp, n, many_swap, m, gstart, gn, &nsent);
    sl_latch_init(&m->l, (int)nsent);
    for (size_t x = 0; x < nsent; x++) {
        g[x] = (eng_casg){.w = &tmp[gstart[x]], .n = gn[x], .done = many_done, .arg = m};
        eng_cas_submit(e, q, &g[x]);
    }
    sl_latch_wait(&m->l);
    /* A repeated row's write is made now, after the others, so the first
     * one wins. */
    for (size_t x = 0; x < ng; x++)
        for (size_t k = gstart[x]; k < gstart[x] + gn[x]; k++)
            rcs[m->ix[k]] = x < nsent ? eng_cas_settle(e, &tmp[k], nonce_col, g[x].rc, g[x].bn)
                                      : eng_cas(e, &tmp[k], nonce_col);
    free(tmp), free(g), free(m);
}

/* --- Pointers and counters ---------------------------------------------- */

static void ptr_key(sl_write *w, const sl_table *t, const char *qkey, const char *name) {
    memset(w, 0, sizeof *w);
    w->t = t;
    w->row.v[0] = sl_vtext(qkey);
    w->row.v[1] = sl_vtext(name);
}

int eng_pointer_get(sl_engine *e, const char *qkey, const char *name, int64_t *out) {
    sl_val key[2] = {sl_vtext(qkey), sl_vtext(name)};
    sl_result r;
    sl_result_init(&r);
    int rc = sl_store_get(e->st, &sl_t_pointers, key, SL_READ_DEFAULT, &r);
    if (rc == 0) *out = r.rows[0].v[PT_VALUE].i;
    if (rc == SL_ENOTFOUND) {
        *out = 0;
        rc = 0;
    }
    sl_result_free(&r);
    return rc;
}

/* Moves a pointer from `from` to `to` if nobody moved it first; creates the
 * row when from == 0 and it does not exist. Returns 0 when it now stands at
 * `to` or beyond. */
int eng_pointer_advance(sl_engine *e, const char *qkey, const char *name, int64_t from, int64_t to) {
    sl_write w;
    ptr_key(&w, &sl_t_pointers, qkey, name);
    w.row.v[PT_VALUE] = sl_vint(to);
    w.row.v[PT_NONCE] = sl_vint(eng_nonce());
    w.kind = SL_W_UPDATE_IF;
    w.cond[0] = (sl_cond){PT_VALUE, sl_vint(from)};
    w.ncond = 1;
    int rc = eng_cas(e, &w, PT_NONCE);
    if (rc == SL_ENOTAPPLIED) {
        int64_t now;
        rc = eng_pointer_get(e, qkey, name, &now);
        if (rc == 0 && now < to) {
            if (now == 0 && from == 0) {
                w.kind = SL_W_INSERT_IF_NOT_EXISTS;
                w.ncond = 0;
                rc = eng_cas(e, &w, PT_NONCE);
                return rc == SL_ENOTAPPLIED ? 0 : rc;
            }
            return SL_ENOTAPPLIED;
        }
    }
    return rc;
}

/* Raises a pointer to at least value (never lowers it). */
int eng_pointer_max(sl_engine *e, const char *qkey, const char *name, int64_t value) {
    for (int i = 0; i < 8; i++) {
        int64_t cur;
        int rc = eng_pointer_get(e, qkey, name, &cur);
        if (rc) return rc;
        if (cur >= value) return 0;
        rc = eng_pointer_advance(e, qkey, name, cur, value);
        if (rc != SL_ENOTAPPLIED) return rc;
    }
    return SL_EUNAVAILABLE;
}

int eng_counter_add(sl_engine *e, const char *qkey, const char *name, int64_t delta) {
    for (int i = 0; i < 16; i++) {
        sl_val key[2] = {sl_vtext(qkey), sl_vtext(name)};
        sl_result r;
        sl_result_init(&r);
        int rc = sl_store_get(e->st, &sl_t_counters, key, SL_READ_SERIAL, &r);
        if (rc != 0 && rc != SL_ENOTFOUND) {
            sl_result_free(&r);
            return rc;
        }
        sl_write w;
        ptr_key(&w, &sl_t_counters, qkey, name);
        w.row.v[C_NONCE] = sl_vint(eng_nonce());
        if (rc == SL_ENOTFOUND) {
            w.kind = SL_W_INSERT_IF_NOT_EXISTS;
            w.row.v[C_VALUE] = sl_vint(delta);
        } else {
            w.kind = SL_W_UPDATE_IF;
            w.row.v[C_VALUE] = sl_vint(r.rows[0].v[C_VALUE].i + delta);
            w.cond[0] = (sl_cond){C_VALUE, sl_vint(r.rows[0].v[C_VALUE].i)};
            w.ncond = 1;
        }
        sl_result_free(&r);
        rc = eng_cas(e, &w, C_NONCE);
        if (rc != SL_ENOTAPPLIED) return rc;
    }
    return SL_EUNAVAILABLE;
}
