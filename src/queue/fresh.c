/* fresh.c: the fresh pool: READY rows of the reader window, read by one
 * thread at a time for every consumer of a queue on this node. */
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"

/* --- The fresh pool ------------------------------------------------------------ */

/* Reading the reader window for every receive would read the same rows once
 * per consumer. Instead one thread at a time refills a per-queue pool from
 * the window when it runs dry, and receivers pop rows from it under q->mu:
 * in steady state a receive reads nothing, and the threads of one node never
 * race each other for a row. Nodes still race each other, and the CAS of
 * the lease settles that; a row leased elsewhere since it was read costs one
 * CAS that is not applied. */

/* The size of row m with its text and blob values, as row_dup copies it. */
static size_t row_bytes(const sl_row *m) {
    size_t n = sizeof *m;
    for (int i = 0; i < SL_MAX_COLS; i++)
        if (m->v[i].set && !m->v[i].null && m->v[i].p) n += m->v[i].n + 1;
    return n;
}

/* A deep copy of row m in one allocation; *bytes gets its size. */
static sl_row *row_dup(const sl_row *m, size_t *bytes) {
    *bytes = row_bytes(m);
    sl_row *c = sl_malloc(*bytes);
    if (!c) return NULL;
    *c = *m;
    char *p = (char *)(c + 1);
    for (int i = 0; i < SL_MAX_COLS; i++) {
        sl_val *v = &c->v[i];
        if (!v->set || v->null || !v->p) continue;
        memcpy(p, v->p, v->n);
        p[v->n] = '\0';
        v->p = p;
        p += v->n + 1;
    }
    return c;
}

/* Appends a copy made by row_dup to the pool, or frees it when the pool
 * has no room (or the queue is gone); returns 1 when appended. Caller holds
 * q->mu. */
static int fresh_push(qstate *q, sl_row *c, size_t size) {
    if (!q->fresh) q->fresh = sl_calloc(FRESH_MAX, sizeof *q->fresh);
    if (!q->fresh || q->dead || q->nfresh >= FRESH_MAX || q->fresh_bytes + size > FRESH_BYTES) {
        free(c);
        return 0;
    }
    q->fresh[q->nfresh++] = c;
    q->fresh_bytes += size;
    return 1;
}

void msg_fresh_drop(qstate *q) {
    pthread_mutex_lock(&q->mu);
    for (int i = q->fresh_pos; i < q->nfresh; i++)
        free(q->fresh[i]);
    q->nfresh = q->fresh_pos = 0;
    q->fresh_bytes = 0;
    pthread_mutex_unlock(&q->mu);
}

/* Ends this thread's lease attempts on the rows v[0..n) and frees them. */
void msg_leasing_end(qstate *q, sl_row **v, size_t n) {
    pthread_mutex_lock(&q->mu);
    for (size_t i = 0; i < n; i++) {
        int64_t id = v[i]->v[M_ID].i;
        for (int j = 0; j < q->nleasing; j++)
            if (q->leasing[j] == id) {
                q->leasing[j] = q->leasing[--q->nleasing];
                break;
            }
    }
    pthread_mutex_unlock(&q->mu);
    for (size_t i = 0; i < n; i++)
        free(v[i]);
}

static int cmp_id(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Pops up to want rows of one bucket (so that they can be leased in one
 * conditional batch) and marks them as being leased. Rows purged since the
 * refill are dropped. Caller holds q->mu. */
static size_t fresh_pop(qstate *q, sl_row **v, size_t want) {
    size_t k = 0;
    while (q->fresh_pos < q->nfresh && k < want && q->nleasing < MAX_CLAIMED) {
        sl_row *m = q->fresh[q->fresh_pos];
        if (k > 0 && m->v[M_BUCKET].i != v[0]->v[M_BUCKET].i) break;
        q->fresh[q->fresh_pos++] = NULL;
        q->fresh_bytes -= row_bytes(m);
        if (m->v[M_PUT].i <= q->purge_ms) {
            free(m);
            continue;
        }
        q->leasing[q->nleasing++] = m->v[M_ID].i;
        v[k++] = m;
    }
    if (q->fresh_pos == q->nfresh) q->nfresh = q->fresh_pos = 0;
    return k;
}

static void shuffle(sl_row **v, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = sl_random_u64() % i;
        sl_row *t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* Adds copies of the READY rows of one scanned bucket to the pool, except
 * those in busy[0..nbusy) (sorted); returns how many, or -1 when out of
 * memory. *all is cleared when the pool had no room for some. */
static int fresh_add(qstate *q, sl_row **cands, size_t nc, const int64_t *busy, size_t nbusy, int *all) {
    sl_row *copies[1024];
    size_t sizes[1024], n = 0, bytes = 0;
    for (size_t i = 0; i < nc && n < 1024; i++) {
        if (bytes >= FRESH_BYTES) {
            *all = 0;
            break;
        }
        if (bsearch(&cands[i]->v[M_ID].i, busy, nbusy, sizeof *busy, cmp_id)) continue;
        if (!(copies[n] = row_dup(cands[i], &sizes[n]))) {
            while (n > 0)
                free(copies[--n]);
            return -1;
        }
        bytes += sizes[n++];
    }
    int added = 0;
    pthread_mutex_lock(&q->mu);
    for (size_t i = 0; i < n; i++) {
        if (fresh_push(q, copies[i], sizes[i]))
            added++;
        else
            *all = 0;
    }
    pthread_mutex_unlock(&q->mu);
    return added;
}

/* Refills the pool from the reader window: READ_WINDOW buckets that hold
 * messages, from the reader pointer on, and more while the pool holds fewer
 * than FRESH_TARGET rows (empty buckets, ids claimed and never used or not
 * written yet, are passed over; READ_SCAN_MAX buckets are read at most, so
 * that gaps never starve delivery). Buckets at the front of the window that
 * hold no READY row any more are noted in seal[] (up to SEAL_BATCH), for the
 * caller to seal once it has handed the rows out (seal_run); when the
 * refill finds nothing to hand out, it seals them itself and reads on.
 *
 * Past the first bucket that cannot be sealed yet, buckets below
 * q->fresh_next are not read again: each was read with all its ids present
 * (no row can appear in it later) and its READY rows went to the pool, so
 * they are being leased or were. With many consumers the front buckets
 * still hold rows in flight; without this, the window would fill with
 * buckets that have nothing left to give. The front bucket is always read,
 * so a row whose lease failed is found again once the buckets before it
 * are sealed. */
static int fresh_fill(sl_engine *e, qstate *q, int *found, int64_t *seal, int *nseal) {
    int64_t S = q->opts.bucket_size, now = sl_now_ms();
    int rc;
    /* The pool is empty when a refill begins, so the only rows it may read
     * as READY although this node is leasing them (their CAS has not
     * committed yet) are those being leased now: it passes over those. */
    int64_t busy[MAX_CLAIMED];
    pthread_mutex_lock(&q->mu);
    int64_t R = q->reader, next = q->fresh_next;
    size_t nbusy = (size_t)q->nleasing;
    memcpy(busy, q->leasing, nbusy * sizeof *busy);
    pthread_mutex_unlock(&q->mu);
    qsort(busy, nbusy, sizeof *busy, cmp_id);
    if (R < 0) {
        if ((rc = eng_pointer_get(e, q->qkey, "reader", &R)) != 0) return rc;
        pthread_mutex_lock(&q->mu);
        if (q->reader < R) q->reader = R;
        pthread_mutex_unlock(&q->mu);
    }
    int added = 0;
    int64_t R0 = R;
    for (int pass = 0; pass < 2; pass++) {
        pthread_mutex_lock(&q->mu);
        int64_t head = q->head;
        pthread_mutex_unlock(&q->mu);
        int prefix = 1;
        int64_t b = R;
        for (int k = 0, full = 0;
             (full < READ_WINDOW || added < FRESH_TARGET) && k < READ_SCAN_MAX && b * S < head; k++, b++) {
            if (!prefix && b < next && (b = next) * S >= head) break;
            sl_result r;
            sl_result_init(&r);
            if ((rc = msg_scan_bucket(e, q, b, &r)) != 0) {
                sl_result_free(&r);
                return rc;
            }
            if (r.n > 0) full++;
            sl_row *cands[1024];
            size_t nc = 0;
            int64_t present = 0;
            for (size_t i = 0; i < r.n && nc < 1024; i++) {
                sl_row *m = &r.rows[i];
                present += m->v[M_ID].i >= 0;
                if (m->v[M_ID].i >= 0 && m->v[M_STATE].i == MS_READY && !msg_purged(q, m)) cands[nc++] = m;
            }
            if (!q->opts.strict_fifo) shuffle(cands, nc);
            int all = 1, n = fresh_add(q, cands, nc, busy, nbusy, &all);
            if (n < 0) {
                sl_result_free(&r);
                return SL_ENOMEM;
            }
            added += n;
            /* next only moves over a contiguous run of buckets read whole
             * and taken whole. */
            if (b == next && present == S && all) next = b + 1;
            /* The prefix: buckets from the reader on that are sealed, or
             * may be and are noted in seal[] for the caller to seal. Past
             * it, a bucket short of rows starts its gap clock now. */
            if (!prefix && present < S && (b + 1) * S <= head && !(r.n > 0 && r.rows[0].v[M_ID].i < 0))
                msg_gap_clock(q, b, present, now);
            if (prefix) {
                int st = msg_seal_state(e, q, b, &r, nc > 0, now);
                if (st == SEAL_DONE && *nseal == 0) {
                    R = b + 1;
                    pthread_mutex_lock(&q->mu);
                    if (q->reader < R) q->reader = R;
                    pthread_mutex_unlock(&q->mu);
                } else if (st && *nseal < SEAL_BATCH && (*nseal > 0 || msg_seal_take(q))) {
                    /* A marker there already costs one CAS not applied. */
                    seal[(*nseal)++] = b | (present < S ? SEAL_GAPS : 0);
                } else {
                    prefix = 0;
                }
            }
            sl_result_free(&r);
            if (!all) break; /* the pool is full */
        }
        *found = added;
        pthread_mutex_lock(&q->mu);
        q->fresh_next = next > R ? next : R;
        pthread_mutex_unlock(&q->mu);
        /* Another node may have moved the pointer further; it only grows. */
        if (R > R0 && (rc = eng_pointer_max(e, q->qkey, "reader", R)) != 0) return rc;
        R0 = R;
        if (added > 0) break;
        /* Nothing to hand out, so nobody waits for these seals: seal now,
         * and read on from past them. */
        if (*nseal > 0) {
            rc = msg_seal_run(e, q, seal, *nseal);
            *nseal = 0;
            if (rc) return rc;
            pthread_mutex_lock(&q->mu);
            int sealed = R < q->reader;
            if (sealed) R = R0 = q->reader;
            pthread_mutex_unlock(&q->mu);
            if (sealed) {
                pass--; /* R moved: read on from there (it only grows, up to the head) */
                continue;
            }
        }
        /* Nothing found: maybe another node put messages past what this node
         * knows of the head, or another node moved the reader pointer. */
        int64_t old = head, nh;
        if ((rc = msg_head(e, q, &nh)) != 0) return rc;
        int64_t p;
        if ((rc = eng_pointer_get(e, q->qkey, "reader", &p)) != 0) return rc;
        int moved = p > R;
        if (moved) {
            R = p;
            pthread_mutex_lock(&q->mu);
            if (q->reader < R) q->reader = R;
            pthread_mutex_unlock(&q->mu);
        }
        if (nh <= old && !moved) break;
    }
    return 0;
}

/* Hands rows just put (READY, durable) to the pool, so that receivers on
 * this node find them without reading. While a refill runs, or when the
 * pool is full, the rows are left for a refill to find instead. */
void msg_fresh_feed(qstate *q, const sl_write *w, size_t n) {
    sl_row *copies[SL_BATCH_MAX];
    size_t sizes[SL_BATCH_MAX], k = 0, ready = 0;
    for (size_t i = 0; i < n && k < SL_BATCH_MAX; i++) {
        sl_row m = w[i].row; /* as a read would see it */
        msg_norm(&m);
        if (m.v[M_STATE].i != MS_READY) continue;
        ready++;
        if ((copies[k] = row_dup(&m, &sizes[k])) != NULL) k++;
    }
    pthread_mutex_lock(&q->mu);
    if (k < ready) q->fresh_dirty = 1; /* out of memory: a refill finds the rest */
    for (size_t i = 0; i < k; i++) {
        if (q->fresh_scanning) {
            free(copies[i]);
            q->fresh_dirty = 1;
        } else if (!fresh_push(q, copies[i], sizes[i])) {
            q->fresh_dirty = 1;
        }
    }
    pthread_mutex_unlock(&q->mu);
}

/* Takes messages never delivered, from the pool, refilling it when it is
 * dry. A thread that finds another one refilling waits for that refill
 * instead of reading the same buckets again. A receive gives up (and
 * returns what it has, maybe nothing) once a refill found nothing new, or
 * after a few refills that others emptied first. */
/* Pops up to want rows of one bucket from the fresh pool into v (*k of
 * them; they are the caller's until leasing_end), refilling the pool when
 * it is dry, at most 4 times per receive (*refills counts them) and not at
 * all when the receive already has messages (have). *k == 0: nothing to
 * lease now. */
int msg_fresh_take(sl_engine *e, qstate *q, size_t want, int have, int *refills, sl_row **v, size_t *k) {
    *k = 0;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        q->take_mono_ms = sl_mono_ms();
        if (q->fresh_stale && !q->fresh_scanning) {
            /* The rows dropped are READY in the store: the refill reads
             * them again, in bucket order, behind the ones left waiting. */
            for (int i = q->fresh_pos; i < q->nfresh; i++)
                free(q->fresh[i]);
            q->nfresh = q->fresh_pos = 0;
            q->fresh_bytes = 0;
            q->fresh_stale = 0;
            q->fresh_dirty = 1;
            q->fresh_next = 0; /* the rows dropped may lie in buckets a refill skips */
        }
        if ((*k = fresh_pop(q, v, want)) > 0 || have || *refills >= 4) {
            pthread_mutex_unlock(&q->mu);
            return 0;
        }
        if (!q->fresh_scanning && !q->fresh_dirty &&
            q->fresh_moves == __atomic_load_n(&e->moves, __ATOMIC_ACQUIRE) &&
            msg_recent(q->fresh_mono_ms, q->fresh_now_ms)) {
            pthread_mutex_unlock(&q->mu);
            return 0; /* nothing can have appeared since the last refill */
        }
        (*refills)++;
        if (q->fresh_scanning) {
            uint64_t gen = q->fresh_gen;
            while (q->fresh_scanning && q->fresh_gen == gen)
                sl_fcond_wait(&q->fresh_cv, &q->mu);
            int found = q->fresh_found;
            pthread_mutex_unlock(&q->mu);
            if (!found) return 0;
            continue;
        }
        q->fresh_scanning = 1;
        q->fresh_dirty = 0;
        q->fresh_moves = __atomic_load_n(&e->moves, __ATOMIC_ACQUIRE);
        pthread_mutex_unlock(&q->mu);
        int64_t seal[SEAL_BATCH];
        int found = 0, nseal = 0, rc = fresh_fill(e, q, &found, seal, &nseal);
        pthread_mutex_lock(&q->mu);
        q->fresh_scanning = 0;
        q->fresh_found = found;
        /* A refill that found rows may have stopped at a limit. */
        if (found || rc) q->fresh_dirty = 1;
        q->fresh_mono_ms = sl_mono_ms();
        q->fresh_now_ms = sl_now_ms(); /* the engine's clock, which tests drive */
        q->fresh_gen++;
        sl_fcond_broadcast(&q->fresh_cv);
        pthread_mutex_unlock(&q->mu);
        if (nseal > 0) {
            int src = msg_seal_run(e, q, seal, nseal);
            if (!rc) rc = src;
            /* More delivered buckets may follow the ones just sealed
             * (other refills read past them meanwhile): the next
             * receive refills, and so seals on, even on a queue that
             * has gone quiet. */
            pthread_mutex_lock(&q->mu);
            q->fresh_dirty = 1;
            pthread_mutex_unlock(&q->mu);
        }
        if (rc) return rc;
        if (!found) return 0;
    }
}

int msg_take_fresh(sl_engine *e, qstate *q, int max, int invis_s, sl_message *out, size_t *got) {
    int refills = 0;
    while ((int)*got < max) {
        sl_row *v[SL_RECEIVE_MAX];
        size_t k;
        int rc = msg_fresh_take(e, q, (size_t)max - *got, *got > 0, &refills, v, &k);
        if (rc || k == 0) return rc;
        rc = msg_lease_batch(e, q, v, k, invis_s, out, got);
        msg_leasing_end(q, v, k);
        if (rc) return rc;
    }
    return 0;
}
