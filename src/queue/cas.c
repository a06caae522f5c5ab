/* cas.c: compare-and-set with the resolution of unknown outcomes (a nonce
 * read back at SERIAL), the combiner that makes one batch of concurrent
 * requests' compare-and-sets, and the pointers and counters built on them. */
#include <limits.h>
#include <semaphore.h>
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

/* Concurrent compare-and-sets of one queue's rows (leases, acks) are
 * combined, on stores that ask for it (combine_cas): while one round is with
 * the store, the next requests queue up, and the thread that leads the next
 * round sends each partition's writes as one conditional batch (one commit on the embedded store, one Paxos
 * round on Cassandra, where single-row rounds on one bucket would contend with each other). A batch is all or
 * nothing, so when one of its conditions fails (another node took a row, a receipt is stale) or its outcome
 * is unknown, each of its writes is settled on its own with eng_cas(). The same row twice in one round is
 * settled on its own too, after the batch that holds it once: a batch evaluates all its conditions before
 * applying any, and would apply both. */
typedef struct cas_req {
    sl_write *w;      /* the caller's writes, */
    int *rcs;         /* and their results, */
    const size_t *ix; /* of which this request holds w[ix[0..n)] */
    size_t n;
    int nonce_col;
    int lead;  /* set by the previous leader before it posts sem: lead the next round */
    int first; /* the combiner was idle when this request came: it leads at once */
    sem_t sem;
    struct cas_req *next, *wnext;
} cas_req;

/* Whether a and b (of one table) agree on their first ncols columns. */
int eng_same_key(const sl_write *a, const sl_write *b, int ncols) {
    for (int i = 0; i < ncols; i++)
        if (!val_eq(&a->row.v[i], &b->row.v[i], a->t->cols[i].type)) return 0;
    return 1;
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

/* Settles every write of the round's requests. Until settled, a write's
 * result slot holds CAS_PENDING, or CAS_TAKEN once it is in the batch being
 * built; nothing is allocated, since every lease and ack comes this way. */
enum { CAS_PENDING = INT_MIN, CAS_TAKEN };

static void cas_round(sl_engine *e, cas_req *list) {
    struct item {
        sl_write *w;
        int nonce_col, *rc;
    } in[SL_BATCH_MAX];
    sl_write batch[SL_BATCH_MAX];
    for (cas_req *r = list; r; r = r->next)
        for (size_t i = 0; i < r->n; i++)
            r->rcs[r->ix[i]] = CAS_PENDING;
    for (cas_req *r = list; r; r = r->next)
        for (size_t i = 0; i < r->n; i++) {
            const sl_write *first = &r->w[r->ix[i]];
            if (r->rcs[r->ix[i]] != CAS_PENDING) continue;
            const sl_table *t = first->t;
            /* A batch: this pending write and every later one of the same
             * partition, each row once. */
            size_t nb = 0;
            for (cas_req *o = r; o && nb < SL_BATCH_MAX; o = o->next)
                for (size_t j = o == r ? i : 0; j < o->n && nb < SL_BATCH_MAX; j++) {
                    sl_write *w = &o->w[o->ix[j]];
                    int *rc = &o->rcs[o->ix[j]];
                    if (*rc != CAS_PENDING || w->t != t || !eng_same_key(w, first, t->npk)) continue;
                    int dup = 0;
                    for (size_t x = 0; x < nb && !dup; x++)
                        dup = eng_same_key(in[x].w, w, t->npk + t->nck);
                    if (dup) continue;
                    in[nb] = (struct item){w, o->nonce_col, rc};
                    batch[nb++] = *w;
                    *rc = CAS_TAKEN;
                }
            if (nb == 1) {
                *in[0].rc = eng_cas(e, in[0].w, in[0].nonce_col);
                continue;
            }
            eng_cas_sent(e);
            int brc = sl_store_apply(e->st, batch, nb, NULL);
            for (size_t x = 0; x < nb; x++)
                *in[x].rc = eng_cas_settle(e, in[x].w, in[x].nonce_col, brc, nb);
        }
}

/* Waits for the round that settles r, or leads it. */
static void cas_settle(sl_engine *e, qstate *q, int slot, cas_req *r) {
    struct cas_slot *c = &q->cas[slot];
    if (!r->first) {
        while (sem_wait(&r->sem) != 0) {
        } /* EINTR */
    }
    if (!r->first && !r->lead) {
        if (r->wnext) sem_post(&r->wnext->sem);
        return;
    }
    /* Lead one round: everything queued so far, r included. */
    pthread_mutex_lock(&q->mu);
    cas_req *list = c->head;
    c->head = c->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    cas_round(e, list);
    /* Hand the lead to the first request that came meanwhile, then wake
     * this round's others, each waking the next. A request is not touched
     * once its semaphore is posted. */
    pthread_mutex_lock(&q->mu);
    cas_req *next_lead = c->head;
    if (next_lead)
        next_lead->lead = 1;
    else
        c->busy = 0;
    cas_req *done = NULL, **tail = &done;
    for (cas_req *x = list; x; x = x->next)
        if (x != r) {
            *tail = x;
            tail = &x->wnext;
        }
    *tail = NULL;
    pthread_mutex_unlock(&q->mu);
    if (next_lead) sem_post(&next_lead->sem);
    if (done) sem_post(&done->sem);
}

void eng_cas_many(sl_engine *e, qstate *q, sl_write *w, size_t n, int nonce_col, int *rcs) {
    if (n > SL_BATCH_MAX) {
        for (size_t i = 0; i < n; i++)
            rcs[i] = SL_EINVAL;
        return;
    }
    size_t ix[SL_BATCH_MAX];
    int combine = e->cfg.combine_cas ? e->cfg.combine_cas > 0 : e->st->type->combine_cas;
    if (!combine) { /* this request's writes alone (see sl_store_type) */
        for (size_t i = 0; i < n; i++)
            ix[i] = i;
        cas_req r = {.w = w, .rcs = rcs, .ix = ix, .n = n, .nonce_col = nonce_col};
        cas_round(e, &r);
        return;
    }
    /* One request per combiner the writes go to, in slot order: a thread
     * waits only after leading its lower slots, so waits never form a
     * cycle. */
    size_t cnt[CAS_SLOTS] = {0}, off[CAS_SLOTS];
    for (size_t i = 0; i < n; i++)
        cnt[cas_slot(&w[i])]++;
    for (size_t sl = 0, o = 0; sl < CAS_SLOTS; sl++) {
        off[sl] = o;
        o += cnt[sl];
    }
    for (size_t i = 0; i < n; i++)
        ix[off[cas_slot(&w[i])]++] = i;
    cas_req sub[CAS_SLOTS];
    memset(sub, 0, sizeof sub);
    pthread_mutex_lock(&q->mu);
    for (size_t sl = 0, o = 0; sl < CAS_SLOTS; o += cnt[sl], sl++) {
        if (!cnt[sl]) continue;
        cas_req *r = &sub[sl];
        *r = (cas_req){.w = w, .rcs = rcs, .ix = ix + o, .n = cnt[sl], .nonce_col = nonce_col};
        sem_init(&r->sem, 0, 0); /* cannot fail for a process-private semaphore */
        struct cas_slot *c = &q->cas[sl];
        if (c->tail)
            c->tail->next = r;
        else
            c->head = r;
        c->tail = r;
        if (!c->busy) c->busy = r->first = 1;
    }
    pthread_mutex_unlock(&q->mu);
    for (int sl = 0; sl < CAS_SLOTS; sl++) {
        if (!cnt[sl]) continue;
        cas_settle(e, q, sl, &sub[sl]);
        sem_destroy(&sub[sl].sem);
    }
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
