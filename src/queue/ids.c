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

/* Claims an id for a new message. Ids come from a block of one whole bucket
 * that this node claimed with a CAS on monoton; a block older than half the
 * gap grace is abandoned, so that an id handed out here is always written
 * long before the reader gives up waiting for it. *block_ms receives the
 * time the id's block was claimed. */
int msg_claim_block(sl_engine *e, qstate *q, int64_t *id, int64_t *block_ms) {
    int64_t S = q->opts.bucket_size;
    for (int attempt = 0; attempt < 16; attempt++) {
        pthread_mutex_lock(&q->mu);
        /* One claim at a time per node: threads that find the block used up
         * while another claims wait for its block instead of claiming their
         * own, which would leave whole buckets of unused ids (gaps that the
         * reader must wait out). */
        while (q->claiming &&
               !(q->id_next < q->id_end && sl_now_ms() - q->block_ms < e->cfg.lease_grace_ms / 2))
            pthread_cond_wait(&q->claimed, &q->mu);
        int64_t now = sl_now_ms();
        if (q->id_next < q->id_end && now - q->block_ms < e->cfg.lease_grace_ms / 2) {
            *id = q->id_next++;
            *block_ms = q->block_ms;
            pthread_mutex_unlock(&q->mu);
            return 0;
        }
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
        pthread_cond_broadcast(&q->claimed);
        pthread_mutex_unlock(&q->mu);
        if (rc == SL_ENOTAPPLIED) continue; /* another node claimed: try the next block */
        if (rc) return rc == SL_ENOTFOUND ? SL_EINTERNAL : rc;
    }
    return SL_EUNAVAILABLE;
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
