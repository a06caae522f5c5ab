/* ids.c: message ids: the head (monoton next), claiming blocks of ids,
 * purge markers, and reading one bucket. */

#include "queue_int.h"

/* --- Ids, heads, purge ------------------------------------------------------ */

int msg_head(sl_engine *e, qstate *q, int64_t *head) {
    sl_val key[1] = {sl_vtext(q->qkey)};
    sl_result r;
    sl_result_init(&r);
    int rc = sl_store_get(e->st, &sl_t_monoton, key, SL_READ_DEFAULT, &r);
    if (rc == 0) {
        *head = r.rows[0].v[MO_NEXT].i;
        pthread_mutex_lock(&q->mu);
        if (*head > q->head) q->head = *head;
        pthread_mutex_unlock(&q->mu);
    }
    sl_result_free(&r);
    return rc;
}

/* Whether the node's block has an id to hand out: a block older than half
 * the gap grace is abandoned, so that an id handed out here is always
 * written long before the reader gives up waiting for it. Under q->mu. */
static int block_usable(sl_engine *e, const qstate *q, int64_t now) {
    return q->id_next < q->id_end && now - q->block_ms < e->cfg.lease_grace_ms / 2;
}

/* Makes sure the node's block has an id to hand out, claiming a new block
 * (a SERIAL read and a compare-and-set on monoton: this waits on the store)
 * when it has none. Called, and returns, with q->mu held. */
static int block_ensure_locked(sl_engine *e, qstate *q) {
    int64_t S = q->opts.bucket_size;
    for (int attempt = 0; attempt < 16; attempt++) {
        /* One claim at a time per node: threads that find the block used up
         * while another claims wait for its block instead of claiming their
         * own, which would leave whole buckets of unused ids (gaps that the
         * reader must wait out). */
        while (q->claiming && !block_usable(e, q, sl_now_ms()))
            sl_fcond_wait(&q->claimed, &q->mu);
        int64_t now = sl_now_ms();
        if (block_usable(e, q, now)) return 0;
        q->claiming = 1;
        /* Blocks grow while they are used up fast (each claim is a serial
         * read and a compare-and-set on the queue's one monoton row, which
         * would cap the put rate) and shrink when one expires unused, since
         * its unused ids become gaps that the reader waits out. */
        if (q->id_end > 0 && q->id_next >= q->id_end && now - q->block_ms < CLAIM_FAST_MS) {
            if (q->claim_k < CLAIM_MAX_BUCKETS) q->claim_k *= 2;
        } else if (q->id_next < q->id_end && q->claim_k > 1) {
            q->claim_k /= 2;
        }
        /* The rest of the block is given up for good: no id of it was
         * handed out, and none will be, so the reader of this node may
         * seal its whole buckets without waiting for rows (gap_clock);
         * other nodes wait out the grace once for the run of them. */
        if (q->id_next < q->id_end) {
            for (int64_t b = (q->id_next + S - 1) / S; b < q->id_end / S; b++) {
                int slot = (int)(b % READ_SCAN_MAX);
                q->claim_bucket[slot] = b + 1;
                q->claim_ms[slot] = CLAIM_UNUSED;
            }
            q->id_end = q->id_next;
        }
        int64_t len = q->claim_k * S;
        pthread_mutex_unlock(&q->mu);
        sl_val key[1] = {sl_vtext(q->qkey)};
        sl_result r;
        sl_result_init(&r);
        int rc = sl_store_get(e->st, &sl_t_monoton, key, SL_READ_SERIAL, &r);
        int64_t old = rc == 0 ? r.rows[0].v[MO_NEXT].i : 0;
        sl_result_free(&r);
        int64_t start = (old + S - 1) / S * S; /* bucket-aligned */
        if (rc == 0) {
            sl_write w = {0};
            w.t = &sl_t_monoton;
            w.kind = SL_W_UPDATE_IF;
            w.row.v[MO_QKEY] = sl_vtext(q->qkey);
            w.row.v[MO_NEXT] = sl_vint(start + len);
            w.row.v[MO_NONCE] = sl_vint(eng_nonce());
            w.cond[0] = (sl_cond){MO_NEXT, sl_vint(old)};
            w.ncond = 1;
            rc = eng_cas(e, &w, MO_NONCE);
        }
        pthread_mutex_lock(&q->mu);
        q->claiming = 0;
        if (rc == 0) {
            q->id_next = start;
            q->id_end = start + len;
            q->block_ms = now;
            for (int64_t b = start / S; b < (start + len) / S; b++) {
                int slot = (int)(b % READ_SCAN_MAX);
                q->claim_bucket[slot] = b + 1; /* +1: zero means "no bucket" */
                q->claim_ms[slot] = now;
            }
            if (start + len > q->head) q->head = start + len;
        }
        sl_fcond_broadcast(&q->claimed);
        if (rc == SL_ENOTAPPLIED) continue; /* another node claimed: try the next block */
        if (rc) return rc == SL_ENOTFOUND ? SL_EINTERNAL : rc;
    }
    return SL_EUNAVAILABLE;
}

/* Claims an id for a new message from this node's block, claiming a new
 * block when it has none. *block_ms receives the time the id's block was
 * claimed. */
int msg_claim_block(sl_engine *e, qstate *q, int64_t *id, int64_t *block_ms) {
    pthread_mutex_lock(&q->mu);
    int rc = block_ensure_locked(e, q);
    if (rc == 0) {
        *id = q->id_next++;
        *block_ms = q->block_ms;
    }
    pthread_mutex_unlock(&q->mu);
    return rc;
}

/* Hands out ids to p[*have..n) while the block has them. Under q->mu. */
static void ids_take_locked(sl_engine *e, qstate *q, put_pending *p, size_t n, size_t *have) {
    while (*have < n && block_usable(e, q, sl_now_ms())) {
        p[*have].id = q->id_next++;
        p[*have].block_ms = q->block_ms;
        (*have)++;
    }
}

int msg_ids_try(sl_engine *e, qstate *q, put_pending *p, size_t n, size_t *have) {
    pthread_mutex_lock(&q->mu);
    if (!q->idwait && !q->claiming) ids_take_locked(e, q, p, n, have);
    pthread_mutex_unlock(&q->mu);
    return *have == n;
}

/* --- The claimer ------------------------------------------------------------ */

/* A put whose ids the node's block cannot give at once (see op.c) waits on
 * its queue's list without a thread; the claimer thread claims blocks for
 * the waiting puts in order, hands each its ids, and sends it on
 * (msg_ids_ready). One thread for the whole engine: it waits on the store
 * for one claim at a time, so requests never do. */
void msg_ids_wait(sl_engine *e, qstate *q, sl_op *op) {
    pthread_mutex_lock(&q->mu);
    op_idwait_link(op, NULL);
    if (q->idwait_tail)
        op_idwait_link(q->idwait_tail, op);
    else
        q->idwait = op;
    q->idwait_tail = op;
    pthread_mutex_unlock(&q->mu);
    pthread_mutex_lock(&e->mu);
    if (!q->claim_queued) {
        q->claim_queued = 1;
        q->users++; /* until the claimer is done with it */
        q->claim_next = NULL;
        if (e->claim_tail)
            e->claim_tail->claim_next = q;
        else
            e->claim_head = q;
        e->claim_tail = q;
        pthread_cond_signal(&e->claim_cv);
    }
    pthread_mutex_unlock(&e->mu);
}

/* Serves q's waiting puts, oldest first. A claim that fails fails every
 * put waiting then (each would otherwise wait out a claim of its own on a
 * node that does not answer); puts that come later try again. */
static void claim_for(sl_engine *e, qstate *q) {
    pthread_mutex_lock(&q->mu);
    while (q->idwait) {
        sl_op *op = q->idwait;
        int rc = block_ensure_locked(e, q);
        if (rc == 0) {
            size_t *have, n;
            put_pending *p = op_idwait_need(op, &n, &have);
            ids_take_locked(e, q, p, n, have);
            if (*have < n) continue;
            q->idwait = op_idwait_link(op, NULL);
            if (!q->idwait) q->idwait_tail = NULL;
            pthread_mutex_unlock(&q->mu);
            msg_ids_ready(op, 0);
            pthread_mutex_lock(&q->mu);
            continue;
        }
        q->idwait = q->idwait_tail = NULL;
        pthread_mutex_unlock(&q->mu);
        while (op) {
            sl_op *next = op_idwait_link(op, NULL);
            msg_ids_ready(op, rc);
            op = next;
        }
        pthread_mutex_lock(&q->mu);
    }
    pthread_mutex_unlock(&q->mu);
}

void *msg_claimer_main(void *arg) {
    sl_thread_name("sl-claimer");
    sl_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    for (;;) {
        qstate *q = e->claim_head;
        if (!q) {
            if (e->stopping) break;
            pthread_cond_wait(&e->claim_cv, &e->mu);
            continue;
        }
        e->claim_head = q->claim_next;
        if (!e->claim_head) e->claim_tail = NULL;
        q->claim_queued = 0;
        pthread_mutex_unlock(&e->mu);
        claim_for(e, q);
        pthread_mutex_lock(&e->mu);
        q->users--;
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

int msg_claim(sl_engine *e, qstate *q, int64_t *id) {
    int64_t block_ms;
    return msg_claim_block(e, q, id, &block_ms);
}

void msg_refresh_purge(sl_engine *e, qstate *q, int force) {
    int64_t now = sl_now_ms(), v;
    pthread_mutex_lock(&q->mu);
    int stale = force || now - q->purge_checked_ms >= 1000 || q->purge_checked_ms == 0;
    pthread_mutex_unlock(&q->mu);
    if (!stale || eng_pointer_get(e, q->qkey, "purge", &v) != 0) return;
    pthread_mutex_lock(&q->mu);
    if (v > q->purge_ms) q->purge_ms = v;
    q->purge_checked_ms = now;
    pthread_mutex_unlock(&q->mu);
}

int msg_purged(qstate *q, const sl_row *r) {
    pthread_mutex_lock(&q->mu);
    int p = r->v[M_PUT].i <= q->purge_ms;
    pthread_mutex_unlock(&q->mu);
    return p;
}

int msg_scan_bucket(sl_engine *e, qstate *q, int64_t bucket, sl_result *out) {
    sl_slice s = {0};
    s.t = &sl_t_messages;
    s.pk[0] = sl_vtext(q->qkey);
    s.pk[1] = sl_vint(bucket);
    s.limit = q->opts.bucket_size + 2;
    int rc = sl_store_slice(e->st, &s, out);
    for (size_t i = 0; rc == 0 && i < out->n; i++)
        msg_norm(&out->rows[i]);
    return rc;
}
