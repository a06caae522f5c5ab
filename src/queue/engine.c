/* engine.c: the engine's tables, its node-local queue cache, the
 * compare-and-set helper that resolves unknown outcomes, pointers, counters,
 * accounts, watches (long polling) and the background threads. */
#include <limits.h>
#include <semaphore.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "queue_int.h"

const sl_table sl_t_accounts = {"accounts", 1, 0, 2, {{"name", SL_TEXT}, {"created", SL_INT}}};
const sl_table sl_t_queues = {"queues",
                              1,
                              1,
                              8,
                              {{"account", SL_TEXT},
                               {"name", SL_TEXT},
                               {"version", SL_INT},
                               {"status", SL_INT},
                               {"opts", SL_TEXT},
                               {"created", SL_INT},
                               {"nonce", SL_INT},
                               {"secret", SL_BLOB}}};
const sl_table sl_t_queue_index = {"queue_index",
                                   1,
                                   1,
                                   6,
                                   {{"shard", SL_INT},
                                    {"qkey", SL_TEXT},
                                    {"account", SL_TEXT},
                                    {"name", SL_TEXT},
                                    {"status", SL_INT},
                                    {"bsize", SL_INT}}};
const sl_table sl_t_monoton = {"monoton", 1, 0, 3, {{"qkey", SL_TEXT}, {"next", SL_INT}, {"nonce", SL_INT}}};
const sl_table sl_t_pointers = {
    "pointers", 1, 1, 4, {{"qkey", SL_TEXT}, {"name", SL_TEXT}, {"value", SL_INT}, {"nonce", SL_INT}}};
const sl_table sl_t_messages = {"messages",
                                2,
                                1,
                                16,
                                {{"qkey", SL_TEXT},
                                 {"bucket", SL_INT},
                                 {"id", SL_INT},
                                 {"mid", SL_TEXT},
                                 {"body", SL_BLOB},
                                 {"attrs", SL_TEXT},
                                 {"tag", SL_TEXT},
                                 {"put_ms", SL_INT},
                                 {"exp_ms", SL_INT},
                                 {"visible_ms", SL_INT},
                                 {"version", SL_INT},
                                 {"dcount", SL_INT},
                                 {"state", SL_INT},
                                 {"nonce", SL_INT},
                                 {"dest", SL_TEXT},
                                 {"put_vis", SL_INT}}};
const sl_table sl_t_leases = {
    "leases",
    2,
    2,
    5,
    {{"qkey", SL_TEXT}, {"minute", SL_INT}, {"due", SL_INT}, {"id", SL_INT}, {"version", SL_INT}}};
const sl_table sl_t_counters = {
    "counters", 1, 1, 4, {{"qkey", SL_TEXT}, {"name", SL_TEXT}, {"value", SL_INT}, {"nonce", SL_INT}}};
const sl_table sl_t_repair_lease = {
    "repair_lease", 1, 0, 3, {{"qkey", SL_TEXT}, {"owner", SL_TEXT}, {"nonce", SL_INT}}};

static const sl_table *const all_tables[] = {&sl_t_accounts, &sl_t_queues,   &sl_t_queue_index,
                                             &sl_t_monoton,  &sl_t_pointers, &sl_t_messages,
                                             &sl_t_leases,   &sl_t_counters, &sl_t_repair_lease};

const sl_table *const *sl_engine_tables(size_t *n) {
    *n = sizeof all_tables / sizeof all_tables[0];
    return all_tables;
}

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

/* Runs a compare-and-set and resolves "outcome unknown". Every CAS the
 * engine makes writes a fresh nonce into nonce_col, so after SL_EUNKNOWN a
 * SERIAL read tells whether this CAS applied (the nonce is ours), or did not
 * and can be retried (the condition still holds), or did not and cannot
 * (someone else changed the row). A write parked by the fault hook that
 * applies later finds its condition false, as a late Paxos round would.
 * Returns 0 (applied), SL_ENOTAPPLIED, or a store error. */
int eng_cas(sl_engine *e, sl_write *w, int nonce_col, sl_result *cur) {
    const sl_table *t = w->t;
    int64_t nonce = w->row.v[nonce_col].i;
    for (int attempt = 0; attempt < 4; attempt++) {
        if (cur) sl_result_free(cur);
        int rc = sl_store_apply(e->st, w, 1, cur);
        if (rc != SL_EUNKNOWN) return rc;
        sl_result r;
        sl_result_init(&r);
        rc = sl_store_get(e->st, t, w->row.v, SL_READ_SERIAL, &r);
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
        sl_log(SL_DEBUG, "cas on %s: outcome unknown, condition holds, retrying", t->name);
    }
    return SL_EUNAVAILABLE;
}

/* --- Combined compare-and-sets -------------------------------------------- */

/* Concurrent compare-and-sets of one queue's rows (leases, acks) are
 * combined, on stores that ask for it (combine_cas): while one round is with
 * the store, the next requests queue up, and the thread that leads the next
 * round sends each partition's writes as one conditional batch (one commit on the embedded store, one Paxos round
 * on Cassandra, where single-row rounds on one bucket would contend with
 * each other). A batch is all or nothing, so when one of its conditions
 * fails (another node took a row, a receipt is stale) or its outcome is
 * unknown, each of its writes is settled on its own with eng_cas(). The
 * same row twice in one round is settled on its own too, after the batch
 * that holds it once: a batch evaluates all its conditions before applying
 * any, and would apply both. */
typedef struct cas_req {
    sl_write *w;     /* the caller's writes, */
    int *rcs;        /* and their results, */
    const size_t *ix; /* of which this request holds w[ix[0..n)] */
    size_t n;
    int nonce_col;
    int lead;   /* set by the previous leader before it posts sem: lead the next round */
    int first;  /* the combiner was idle when this request came: it leads at once */
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
        for (size_t k = 0; k < v->n; k++) h = (h ^ ((const unsigned char *)v->p)[k]) * 1099511628211ULL;
    }
    return (int)(h % CAS_SLOTS);
}

/* Was the CAS w, whose outcome was unknown, applied? Its nonce tells. */
static int cas_landed(sl_engine *e, const sl_write *w, int nonce_col) {
    sl_result r;
    sl_result_init(&r);
    int landed = sl_store_get(e->st, w->t, w->row.v, SL_READ_SERIAL, &r) == 0 &&
                 r.rows[0].v[nonce_col].i == w->row.v[nonce_col].i;
    sl_result_free(&r);
    return landed;
}

/* The outcome of compare-and-set w, sent in a conditional batch of n
 * writes that was answered rc. An unknown outcome is resolved by w's
 * nonce, as eng_cas() does; a batch of several that was not applied (one
 * condition failed, maybe not w's) is retried with w alone. */
int eng_cas_settle(sl_engine *e, sl_write *w, int nonce_col, int rc, size_t n) {
    if (rc == SL_EUNKNOWN) return cas_landed(e, w, nonce_col) ? 0 : eng_cas(e, w, nonce_col, NULL);
    if (rc == SL_ENOTAPPLIED && n > 1) return eng_cas(e, w, nonce_col, NULL);
    return rc;
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
        for (size_t i = 0; i < r->n; i++) r->rcs[r->ix[i]] = CAS_PENDING;
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
                    for (size_t x = 0; x < nb && !dup; x++) dup = eng_same_key(in[x].w, w, t->npk + t->nck);
                    if (dup) continue;
                    in[nb] = (struct item){w, o->nonce_col, rc};
                    batch[nb++] = *w;
                    *rc = CAS_TAKEN;
                }
            if (nb == 1) {
                *in[0].rc = eng_cas(e, in[0].w, in[0].nonce_col, NULL);
                continue;
            }
            int brc = sl_store_apply(e->st, batch, nb, NULL);
            for (size_t x = 0; x < nb; x++) *in[x].rc = eng_cas_settle(e, in[x].w, in[x].nonce_col, brc, nb);
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
        for (size_t i = 0; i < n; i++) rcs[i] = SL_EINVAL;
        return;
    }
    size_t ix[SL_BATCH_MAX];
    int combine = e->cfg.combine_cas ? e->cfg.combine_cas > 0 : e->st->type->combine_cas;
    if (!combine) { /* this request's writes alone (see sl_store_type) */
        for (size_t i = 0; i < n; i++) ix[i] = i;
        cas_req r = {.w = w, .rcs = rcs, .ix = ix, .n = n, .nonce_col = nonce_col};
        cas_round(e, &r);
        return;
    }
    /* One request per combiner the writes go to, in slot order: a thread
     * waits only after leading its lower slots, so waits never form a
     * cycle. */
    size_t cnt[CAS_SLOTS] = {0}, off[CAS_SLOTS];
    for (size_t i = 0; i < n; i++) cnt[cas_slot(&w[i])]++;
    for (size_t sl = 0, o = 0; sl < CAS_SLOTS; sl++) {
        off[sl] = o;
        o += cnt[sl];
    }
    for (size_t i = 0; i < n; i++) ix[off[cas_slot(&w[i])]++] = i;
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
    int rc = eng_cas(e, &w, PT_NONCE, NULL);
    if (rc == SL_ENOTAPPLIED) {
        int64_t now;
        rc = eng_pointer_get(e, qkey, name, &now);
        if (rc == 0 && now < to) {
            if (now == 0 && from == 0) {
                w.kind = SL_W_INSERT_IF_NOT_EXISTS;
                w.ncond = 0;
                rc = eng_cas(e, &w, PT_NONCE, NULL);
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
        rc = eng_cas(e, &w, C_NONCE, NULL);
        if (rc != SL_ENOTAPPLIED) return rc;
    }
    return SL_EUNAVAILABLE;
}

/* --- Accounts ------------------------------------------------------------ */

int sl_account_create(sl_engine *e, const char *account) {
    if (!sl_name_valid(account)) return SL_EINVAL;
    sl_write w = {0};
    w.t = &sl_t_accounts;
    w.kind = SL_W_INSERT_IF_NOT_EXISTS;
    w.row.v[ACC_NAME] = sl_vtext(account);
    w.row.v[ACC_CREATED] = sl_vint(sl_now_ms());
    int rc = sl_store_apply(e->st, &w, 1, NULL);
    if (rc == SL_EUNKNOWN) {
        /* Creating an account is idempotent for the caller: if it exists
         * now, either this call or an earlier one made it. */
        rc = sl_account_exists(e, account);
        return rc == SL_ENOTFOUND ? SL_EUNAVAILABLE : rc;
    }
    return rc == SL_ENOTAPPLIED ? SL_EEXISTS : rc;
}

int sl_account_delete(sl_engine *e, const char *account) {
    if (!sl_name_valid(account)) return 0;
    sl_write w = {0};
    w.t = &sl_t_accounts;
    w.kind = SL_W_DELETE_ROW;
    w.row.v[ACC_NAME] = sl_vtext(account);
    int rc = sl_store_apply(e->st, &w, 1, NULL);
    /* Forget it here even when the outcome is unknown: a stale "exists" is
     * the one answer this node must not give after a delete. */
    unsigned h = 5381;
    for (const char *p = account; *p; p++) h = h * 33 + (unsigned char)*p;
    pthread_mutex_lock(&e->mu);
    if (strcmp(e->acct[h % 64].name, account) == 0) e->acct[h % 64].until_ms = 0;
    pthread_mutex_unlock(&e->mu);
    return rc;
}

/* Accounts are read on every request, so a positive answer is cached for
 * two seconds; API.md allows revocation to take up to five. */
int sl_account_exists(sl_engine *e, const char *account) {
    if (!sl_name_valid(account)) return SL_ENOTFOUND;
    int64_t now = sl_now_ms();
    unsigned h = 5381;
    for (const char *p = account; *p; p++) h = h * 33 + (unsigned char)*p;
    struct acct_cache *c = &e->acct[h % 64];
    pthread_mutex_lock(&e->mu);
    int hit = c->until_ms > now && strcmp(c->name, account) == 0;
    pthread_mutex_unlock(&e->mu);
    if (hit) return 0;
    sl_val key[1] = {sl_vtext(account)};
    sl_result r;
    sl_result_init(&r);
    int rc = sl_store_get(e->st, &sl_t_accounts, key, SL_READ_DEFAULT, &r);
    sl_result_free(&r);
    if (rc == 0) {
        pthread_mutex_lock(&e->mu);
        snprintf(c->name, sizeof c->name, "%s", account);
        c->until_ms = now + 2000;
        pthread_mutex_unlock(&e->mu);
    }
    return rc;
}

/* --- The queue cache ----------------------------------------------------- */

int sl_queue_opts_parse(const char *json, sl_queue_opts *o); /* queue.c */

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
    pthread_cond_init(&q->claimed, NULL);
    pthread_cond_init(&q->fresh_cv, NULL);
    return q;
}

/* Finds the live incarnation of account/name. The queue row is re-read when
 * the cached copy is older than a second, so a delete on another node is
 * seen within a second. */
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
    pthread_mutex_lock(&e->mu);
    if (q && q->version == version) {
        q->checked_ms = now;
        pthread_mutex_unlock(&e->mu);
        sl_result_free(&r);
        *out = q;
        return 0;
    }
    if (q) q->dead = 1;
    /* Another thread may have loaded this version meanwhile. */
    for (q = e->queues; q; q = q->next)
        if (!q->dead && q->version == version && strcmp(q->account, account) == 0 && strcmp(q->name, name) == 0)
            break;
    if (!q) {
        q = qstate_new(account, name, version);
        if (!q) {
            pthread_mutex_unlock(&e->mu);
            sl_result_free(&r);
            return SL_ENOMEM;
        }
        char opts[4096];
        if (sl_val_str(&row->v[QU_OPTS], opts, sizeof opts) < 0 || sl_queue_opts_parse(opts, &q->opts) != 0) {
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
 * queue gone. The qstate itself lives until the engine closes. */
void eng_queue_forget(sl_engine *e, qstate *q) {
    pthread_mutex_lock(&e->mu);
    q->dead = 1;
    pthread_mutex_unlock(&e->mu);
    msg_fresh_drop(q);
    eng_notify(e, q);
}

/* --- Watches ------------------------------------------------------------- */

int sl_watch_add(sl_engine *e, const char *account, const char *queue, int64_t deadline_ms, void (*fn)(void *),
                 void *arg, sl_watch **out) {
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
        for (sl_watch *w = e->watches; w; w = w->next) n += watch_hit(w, q, expired_only, now);
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
                break;
            }
    }
    pthread_mutex_unlock(&e->mu);
    free(w);
    return fired;
}

static void fire(sl_engine *e, qstate *q, int expired_only, int64_t now) {
    fire_n(e, q, expired_only, now, SIZE_MAX);
}

void eng_notify(sl_engine *e, qstate *q) {
    fire(e, q, 0, 0);
}

/* After n messages became visible: wakes n waiters of q, not all of them,
 * which would all run a receive for n messages. A woken waiter that finds
 * nothing (another consumer was quicker) waits again; one that goes away
 * without receiving leaves the message to the next receive, or to the
 * poller, which wakes every waiter of a queue with anything visible. */
void eng_notify_n(sl_engine *e, qstate *q, size_t n) {
    fire_n(e, q, 0, 0, n);
}

/* Writes the deferred lease entries of every queue whose time came, or all
 * of them (at close). Queues are never freed before the engine, and new
 * ones are added at the head, so the list is walked from a head read under
 * the lock. */
static void flush_lease_entries(sl_engine *e, int all) {
    pthread_mutex_lock(&e->mu);
    qstate *head = e->queues;
    pthread_mutex_unlock(&e->mu);
    for (qstate *q = head; q; q = q->next) msg_lease_flush(e, q, all ? INT64_MAX : sl_now_ms(), all);
}

/* The poller wakes watchers for what this node cannot see happen: a put on
 * another node, and leases that ran out. It checks only queues that have
 * watchers, every 200 ms, with a few bounded reads (msg_has_visible), and
 * wakes the waiters only when there is something to receive. */
static void *poller_main(void *arg) {
    sl_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    while (!e->stopping) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 200 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&e->wake, &e->mu, &ts);
        if (e->stopping) break;
        /* Collect the distinct queues with watchers (a few; bounded). */
        qstate *qs[64];
        int nq = 0;
        for (sl_watch *w = e->watches; w && nq < 64; w = w->next) {
            int seen = 0;
            for (int i = 0; i < nq; i++) seen |= qs[i] == w->q;
            if (!seen) qs[nq++] = w->q;
        }
        pthread_mutex_unlock(&e->mu);
        for (int i = 0; i < nq; i++) {
            qstate *q = qs[i];
            int wake = q->dead || msg_has_visible(e, q);
            if (wake) eng_notify(e, q);
        }
        fire(e, NULL, 1, sl_now_ms());
        flush_lease_entries(e, 0);
        pthread_mutex_lock(&e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* --- Background work ----------------------------------------------------- */

/* One pass of background work: the repair worker of every active queue
 * whose poll interval has passed, and the deletion of deleted queues. */
int sl_engine_tick(sl_engine *e) {
    sl_slice s = {0};
    s.t = &sl_t_queue_index;
    s.pk[0] = sl_vint(0);
    s.limit = 1000;
    int64_t now = sl_now_ms();
    char last[QKEY_MAX] = "";
    for (;;) {
        sl_result r;
        sl_result_init(&r);
        int rc = sl_store_slice(e->st, &s, &r);
        if (rc) {
            sl_result_free(&r);
            return rc;
        }
        for (size_t i = 0; i < r.n && !e->stopping; i++) {
            sl_row *row = &r.rows[i];
            char qkey[QKEY_MAX], account[SL_NAME_MAX + 1], name[SL_NAME_MAX + 1];
            sl_val_str(&row->v[QI_QKEY], qkey, sizeof qkey);
            sl_val_str(&row->v[QI_ACCOUNT], account, sizeof account);
            sl_val_str(&row->v[QI_NAME], name, sizeof name);
            snprintf(last, sizeof last, "%s", qkey);
            if (row->v[QI_STATUS].i == Q_DELETED) {
                repair_delete_queue(e, qkey, row->v[QI_BSIZE].i);
                continue;
            }
            qstate *q;
            if (eng_queue(e, account, name, &q) != 0 || strcmp(q->qkey, qkey) != 0) continue;
            if (q->repair_next_ms > now) continue;
            q->repair_next_ms = now + (int64_t)q->opts.repair_poll_s * 1000;
            rc = repair_queue(e, q);
            if (rc && rc != SL_ENOTFOUND) sl_log(SL_INFO, "repair of %s: %s", qkey, sl_strerror(rc));
        }
        int more = r.more;
        sl_result_free(&r);
        if (!more || !last[0]) break;
        s.from[0] = sl_vtext(last);
        s.nfrom = 1;
        s.from_excl = 1;
    }
    return 0;
}

static void *bg_main(void *arg) {
    sl_engine *e = arg;
    while (!__atomic_load_n(&e->stopping, __ATOMIC_ACQUIRE)) {
        sl_engine_tick(e);
        for (int i = 0; i < 5 && !__atomic_load_n(&e->stopping, __ATOMIC_ACQUIRE); i++) usleep(100 * 1000);
    }
    return NULL;
}

int sl_engine_open(sl_store *st, const sl_engine_config *cfg, sl_engine **out) {
    enum { NOWN = sizeof all_tables / sizeof all_tables[0], NMAX = NOWN + 16 };
    const sl_table *tables[NMAX];
    size_t n = NOWN, extra = cfg ? cfg->n_extra_tables : 0;
    if (extra > NMAX - NOWN) return SL_EINVAL;
    memcpy(tables, all_tables, sizeof all_tables);
    for (size_t i = 0; i < extra; i++) tables[n++] = cfg->extra_tables[i];
    int rc = sl_store_ensure(st, tables, n);
    if (rc) return rc;
    sl_engine *e = sl_calloc(1, sizeof *e);
    if (!e) return SL_ENOMEM;
    e->st = st;
    if (cfg) e->cfg = *cfg;
    if (e->cfg.lease_grace_ms <= 0) e->cfg.lease_grace_ms = 2000;
    if (!e->cfg.node_id[0]) {
        unsigned char b[8];
        sl_random_bytes(b, sizeof b);
        for (int i = 0; i < 8; i++) snprintf(e->cfg.node_id + 2 * i, 3, "%02x", b[i]);
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->wake, NULL);
    if (pthread_create(&e->poller, NULL, poller_main, e) != 0) {
        free(e);
        return SL_ENOMEM;
    }
    if (e->cfg.background) {
        if (pthread_create(&e->bg, NULL, bg_main, e) == 0) e->bg_started = 1;
    }
    *out = e;
    return 0;
}

void sl_engine_close(sl_engine *e) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    __atomic_store_n(&e->stopping, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&e->wake);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->poller, NULL);
    if (e->bg_started) pthread_join(e->bg, NULL);
    /* Wake whoever still waits, so no watch outlives the engine. */
    fire(e, NULL, 0, 0);
    flush_lease_entries(e, 1);
    for (qstate *q = e->queues, *n; q; q = n) {
        n = q->next;
        msg_fresh_drop(q);
        msg_receipt_free(q);
        free(q->fresh);
        free(q->pend);
        free(q->dues);
        pthread_mutex_destroy(&q->mu);
        pthread_cond_destroy(&q->claimed);
        pthread_cond_destroy(&q->fresh_cv);
        free(q);
    }
    pthread_cond_destroy(&e->wake);
    pthread_mutex_destroy(&e->mu);
    free(e);
}
