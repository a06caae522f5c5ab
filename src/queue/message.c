/* message.c: a message's row and its life at the edges: put, peek, ack and
 * update, and the row helpers every part of the engine shares. The reader
 * (receive) is reader.c and fresh.c, moves are move.c, the calls that do
 * not wait for the store are op.c.
 *
 * The reader looks for work in two places. Messages never delivered are
 * READY rows in the buckets at and just after the reader pointer (a window
 * of READ_WINDOW buckets that hold messages, so that a bucket still waiting
 * for a slow write does not hold up the buckets after it). Messages that are invisible for a
 * while (leased, delayed, returned) are WAITING rows with an entry in the
 * leases table, partitioned by the minute they become visible; a cursor
 * walks those entries in time order, so an expired lease is found after
 * reading only the entries due before it, and a long lease on one message
 * never delays the redelivery of another. */
#include <stdio.h>
#include <string.h>

#include "queue_int.h"

void msg_key(sl_write *w, const char *qkey, int64_t bucket, int64_t id) {
    w->t = &sl_t_messages;
    w->row.v[M_QKEY] = sl_vtext(qkey);
    w->row.v[M_BUCKET] = sl_vint(bucket);
    w->row.v[M_ID] = sl_vint(id);
}

static int unset(const sl_val *v) {
    return !v->set || v->null;
}

/* Fills in what a row that no compare-and-set has touched yet lacks (see
 * queue_int.h): version 0, no delivery, visible from put_vis on, READY or,
 * when the put was delayed, WAITING. Every message row read goes through
 * it, so the rest of the engine sees one shape. The nonce stays unset: it
 * tells such a row (see cond_of). Marker rows are left alone. */
void msg_norm(sl_row *m) {
    if (m->v[M_ID].i < 0) return;
    int64_t put = m->v[M_PUT].i, vis = unset(&m->v[M_PUTVIS]) ? put : m->v[M_PUTVIS].i;
    if (unset(&m->v[M_VERSION])) m->v[M_VERSION] = sl_vint(0);
    if (unset(&m->v[M_DCOUNT])) m->v[M_DCOUNT] = sl_vint(0);
    if (unset(&m->v[M_VISIBLE])) m->v[M_VISIBLE] = sl_vint(vis);
    if (unset(&m->v[M_STATE])) m->v[M_STATE] = sl_vint(vis > put ? MS_WAITING : MS_READY);
}

/* The condition that column col (version or state) of row m, as read and
 * normalised, still holds its value: "is null" on a row that no
 * compare-and-set has written yet (it has no nonce), since msg_norm made
 * the value up. */
sl_cond msg_cond_of(const sl_row *m, int col) {
    return (sl_cond){col, unset(&m->v[M_NONCE]) ? sl_vnull() : sl_vint(m->v[col].i)};
}

int msg_get_msg(sl_engine *e, const char *qkey, int64_t bucket, int64_t id, int cons, sl_result *r) {
    sl_val key[3] = {sl_vtext(qkey), sl_vint(bucket), sl_vint(id)};
    int rc = sl_store_get(e->st, &sl_t_messages, key, cons, r);
    if (rc == 0) msg_norm(&r->rows[0]);
    return rc;
}

/* --- Put ---------------------------------------------------------------------- */

/* Whether a row written into bucket b now may be missed by the reader and
 * the repair worker alike: 1 when b is sealed (its marker exists) or behind
 * the repair pointer (finalized, and perhaps deleted with its marker), 0
 * when neither has passed it, or a store error. The marker is read first:
 * a bucket loses its marker only after the pointer has moved past it. */
int msg_bucket_passed(sl_engine *e, const char *qkey, int64_t b) {
    sl_result r;
    sl_result_init(&r);
    int rc = msg_get_msg(e, qkey, b, -1, SL_READ_DEFAULT, &r);
    sl_result_free(&r);
    if (rc != SL_ENOTFOUND) return rc == 0 ? 1 : rc;
    int64_t repair;
    if ((rc = eng_pointer_get(e, qkey, "repair", &repair)) != 0) return rc;
    return repair > b;
}

int msg_put_check(sl_engine *e, const char *account, const char *queue, const sl_put *msgs, size_t n,
                  qstate **q) {
    if (n < 1 || n > SL_BATCH_MAX) return SL_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (msgs[i].delay_s < 0 || msgs[i].delay_s > SL_INVIS_MAX || msgs[i].len > 16 * 1024 * 1024)
            return SL_EINVAL;
    int rc = sl_acct_exists(e->cfg.accounts, account);
    if (rc || (rc = eng_queue(e, account, queue, q)) != 0) return rc;
    return (*q)->opts.fifo ? SL_EINVAL : 0; /* FIFO queues take sl_fifo_put */
}

/* Builds the rows of n messages in w[0..n), and the lease entries of the
 * delayed ones in entries[0..*nentries), which must go to the store first
 * (msg_put_entries). The ids are p[i].id when ids_given, or claimed here
 * (waiting on the store when the node's block is used up). The rows
 * borrow msgs' bytes and the message ids. */
int msg_put_rows(sl_engine *e, qstate *q, const sl_put *msgs, size_t n, char (*ids)[SL_MSGID_LEN + 1],
                 put_pending *p, int ids_given, sl_write *w, sl_write *entries, size_t *nentries,
                 int *any_visible) {
    int64_t now = sl_now_ms(), exp = now + eng_queue_retention(q) * 1000;
    int rc = 0;
    *any_visible = 0;
    *nentries = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const sl_put *m = &msgs[i];
        if (!ids_given && (rc = msg_claim_block(e, q, &p[i].id, &p[i].block_ms)) != 0) break;
        int64_t id = p[i].id, visible = now + (int64_t)m->delay_s * 1000;
        sl_random_hex(ids[i], SL_MSGID_LEN / 2);
        sl_random_hex(p[i].tag, 8);
        sl_write *x = &w[i];
        msg_key(x, q->qkey, id / q->opts.bucket_size, id);
        x->kind = SL_W_UPSERT;
        x->ttl = (int)ttl_left_s(exp, now);
        x->row.v[M_MID] = sl_vtext(ids[i]);
        x->row.v[M_BODY] = sl_vbytes(m->body ? m->body : "", m->len);
        x->row.v[M_ATTRS] = sl_vtext(m->attrs_json ? m->attrs_json : "{}");
        x->row.v[M_TAG] = sl_vtext(p[i].tag);
        x->row.v[M_PUT] = sl_vint(now);
        x->row.v[M_EXP] = sl_vint(exp);
        /* Only the columns no compare-and-set writes (queue_int.h): a
         * first attempt that lands late cannot undo a lease or an ack. */
        x->row.v[M_PUTVIS] = sl_vint(visible);
        *any_visible += m->delay_s == 0;
        /* A delayed message is tracked by the lease index from the start, so
         * that it never holds up the bucket it lives in. Its entry is
         * written first: an entry without a message is skipped, a waiting
         * message without an entry would wait for the repair worker. */
        if (m->delay_s > 0) msg_lease_entry_write(q, id, 0, visible, exp, now, &entries[(*nentries)++]);
    }
    if (rc == 0 && *nentries > 0) msg_lease_dues_note(q, entries, *nentries);
    return rc;
}

int msg_put_entries(sl_engine *e, sl_write *entries, size_t n) {
    int rc = eng_write(e, entries, n);
    if (rc == SL_EUNKNOWN) rc = eng_write(e, entries, n); /* idempotent upserts */
    return rc;
}

/* What follows the write of a put's rows, which returned rc. */
int msg_put_after(sl_engine *e, qstate *q, const sl_write *w, const put_pending *p, size_t n, int any_visible,
                  int rc) {
    if (rc) lg_suspect(q); /* the rows may land all the same */
    for (size_t i = 0; i < n && rc == 0; i++)
        lg_put(q, w[i].row.v[M_ID].i, w[i].row.v[M_PUT].i, w[i].row.v[M_PUTVIS].i, w[i].row.v[M_EXP].i);
    if (rc == 0) {
        msg_fresh_feed(q, w, n);
    } else {
        pthread_mutex_lock(&q->mu);
        q->fresh_dirty = 1; /* the rows may land all the same */
        pthread_mutex_unlock(&q->mu);
    }
    /* An unknown outcome is not retried here: the ids are this put's alone,
     * so writes that land later are just late writes, which the repair
     * worker delivers. The client gets a 503 and may put again. */
    if (rc == SL_EUNKNOWN) rc = SL_EUNAVAILABLE;
    for (size_t i = 0; i < n && rc == 0; i++) {
        /* If the reader sealed this bucket before the write landed, move the
         * message on at once rather than wait for the repair worker. The
         * reader cannot have sealed it while the block is younger than half
         * the gap grace, so the check costs nothing in steady state. */
        int64_t bucket = p[i].id / q->opts.bucket_size;
        if (sl_now_ms() - p[i].block_ms >= e->cfg.lease_grace_ms / 2 &&
            msg_bucket_passed(e, q->qkey, bucket) == 1) {
            sl_result r;
            sl_result_init(&r);
            /* Only a row nobody has taken: the reader may have found it
             * before the marker (the put was slow), leased it, and even
             * had it acked; moving that one would deliver it again. */
            if (msg_get_msg(e, q->qkey, bucket, p[i].id, SL_READ_SERIAL, &r) == 0 &&
                r.rows[0].v[M_STATE].i == MS_READY)
                msg_move(e, q, &r.rows[0], q, 0, 0);
            sl_result_free(&r);
        }
    }
    if (rc == 0 && any_visible) eng_notify_n(e, q, (size_t)any_visible);
    return rc;
}

int msg_open_queue(sl_engine *e, const char *account, const char *queue, qstate **q) {
    int rc = sl_acct_exists(e->cfg.accounts, account);
    if (rc) return rc;
    if ((rc = eng_queue(e, account, queue, q)) != 0) return rc;
    msg_refresh_purge(e, *q, 0);
    return 0;
}

/* Peek reads every bucket that is not finalized, from the repair pointer
 * on, and returns the first visible messages without leasing them. */
int sl_msg_peek(sl_engine *e, const char *account, const char *queue, int max, sl_message **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (max < 1 || max > SL_RECEIVE_MAX) return SL_EINVAL;
    qstate *q;
    int rc = msg_open_queue(e, account, queue, &q);
    if (rc) return rc;
    /* A message leased by a receive that was answered must not show. */
    sl_store_catch_up(e->st);
    int64_t repair, head, now = sl_now_ms();
    if ((rc = eng_pointer_get(e, q->qkey, "repair", &repair)) != 0) return rc;
    if ((rc = msg_head(e, q, &head)) != 0) return rc;
    sl_message *v = sl_calloc((size_t)max, sizeof *v);
    if (!v) return SL_ENOMEM;
    size_t got = 0;
    int64_t last = head > 0 ? (head - 1) / q->opts.bucket_size : -1;
    for (int64_t b = repair; b <= last && (int)got < max && rc == 0; b++) {
        sl_result r;
        sl_result_init(&r);
        rc = msg_scan_bucket(e, q, b, &r);
        for (size_t i = 0; rc == 0 && i < r.n && (int)got < max; i++) {
            sl_row *m = &r.rows[i];
            int64_t st = m->v[M_STATE].i;
            if (m->v[M_ID].i < 0 || msg_purged(q, m)) continue;
            if (st == MS_READY || (st == MS_WAITING && m->v[M_VISIBLE].i <= now))
                if ((rc = msg_fill_message(&v[got], m)) == 0) got++;
        }
        sl_result_free(&r);
    }
    if (rc) {
        sl_messages_free(v, got);
        return rc;
    }
    *out = v;
    *n = got;
    return 0;
}

/* Resolves a receipt to its message row, read at SERIAL. Returns SL_EINVAL
 * for a receipt this queue incarnation did not issue, SL_ECONFLICT when it
 * is stale: the message is gone, or it was leased again. */
static int receipt_row(sl_engine *e, qstate *q, const char *receipt, int64_t *id, int64_t *version,
                       int64_t *exp, sl_result *r) {
    int sticky;
    int rc = msg_receipt_parse(q, receipt, id, version, exp, &sticky);
    if (rc) return rc;
    rc = msg_get_msg(e, q->qkey, *id / q->opts.bucket_size, *id, SL_READ_SERIAL, r);
    if (rc == SL_ENOTFOUND) return SL_ECONFLICT;
    if (rc) return rc;
    sl_row *m = &r->rows[0];
    if (m->v[sticky ? M_DCOUNT : M_VERSION].i != *version || m->v[M_STATE].i != MS_WAITING)
        return SL_ECONFLICT;
    if (sticky) *version = m->v[M_VERSION].i; /* the update's CAS is on the version it read */
    return 0;
}

int sl_msg_receipt_sticky(sl_engine *e, const char *account, const char *queue, const sl_message *m,
                          char out[SL_RECEIPT_MAX]) {
    qstate *q;
    int rc = eng_queue(e, account, queue, &q);
    if (rc) return rc;
    /* The delivery count as stored (its epoch included) is known only to
     * the receive that leased m: a receipt alone does not carry it. */
    if (!m->lease_set) return SL_EINVAL;
    msg_receipt_make_sticky(q, out, m->lease_id, m->lease_dcount, m->lease_exp_ms);
    return 0;
}

/* The CAS that acks message id as leased at version, or, for a sticky
 * receipt, in its delivery number dcount (n): the row is not leased again
 * since, whatever updates it had. An ack leaves the version as it is then:
 * every CAS that could follow it asks for a state that is not ACKED. */
static void ack_write(qstate *q, int64_t id, int64_t n, int sticky, int64_t exp, int64_t now, sl_write *w) {
    memset(w, 0, sizeof *w);
    msg_key(w, q->qkey, id / q->opts.bucket_size, id);
    w->kind = SL_W_UPDATE_IF;
    w->ttl = (int)ttl_left_s(exp, now);
    w->row.v[M_STATE] = sl_vint(MS_ACKED);
    if (!sticky) w->row.v[M_VERSION] = sl_vint(n + 1);
    w->row.v[M_NONCE] = sl_vint(eng_nonce());
    w->cond[0] = (sl_cond){sticky ? M_DCOUNT : M_VERSION, sl_vint(n)};
    w->cond[1] = (sl_cond){M_STATE, sl_vint(MS_WAITING)};
    w->ncond = 2;
}

/* One CAS per receipt, no read: the receipt carries everything the write
 * needs. A lease that ran out but was not handed to anyone else still has
 * this version, so such an ack succeeds, as API.md promises.
 * Parses n receipts into ack writes: w[0..*k) for receipts idx[0..*k). */
void msg_ack_writes(qstate *q, const char *const *receipts, size_t n, int *rcs, sl_write *w, size_t *idx,
                    size_t *k) {
    int64_t now = sl_now_ms();
    *k = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t id, version, exp;
        int sticky;
        if ((rcs[i] = msg_receipt_parse(q, receipts[i], &id, &version, &exp, &sticky)) != 0) continue;
        ack_write(q, id, version, sticky, exp, now, &w[*k]);
        idx[(*k)++] = i;
    }
}

/* Maps the acks' outcomes to rcs and cancels the acked leases' entries (a
 * sticky receipt's ack, conditioned on the delivery count, cancels the
 * newest entry of its message: an acked message needs none). */
void msg_ack_after(qstate *q, const sl_write *w, size_t k, const size_t *idx, const int *krc, int *rcs) {
    for (size_t x = 0; x < k; x++) {
        rcs[idx[x]] = krc[x] == SL_ENOTAPPLIED ? SL_ECONFLICT : krc[x];
        if (krc[x] == 0) lg_gone(q, w[x].row.v[M_ID].i, 0);
        if (krc[x] != 0 && krc[x] != SL_ENOTAPPLIED) lg_suspect(q);
        if (krc[x] == 0)
            msg_lease_entry_cancel(q, w[x].row.v[M_ID].i,
                                   w[x].cond[0].col == M_VERSION ? w[x].cond[0].v.i : -1);
    }
}

int sl_msg_update(sl_engine *e, const char *account, const char *queue, const char *receipt, const void *body,
                  size_t len, int invis_s, char new_receipt[SL_RECEIPT_MAX], char tag[SL_TAG_MAX]) {
    if (invis_s < 0 || invis_s > SL_INVIS_MAX || len > 16 * 1024 * 1024) return SL_EINVAL;
    qstate *q;
    int rc = msg_open_queue(e, account, queue, &q);
    if (rc) return rc;
    int64_t id, version, exp;
    sl_result r;
    sl_result_init(&r);
    if ((rc = receipt_row(e, q, receipt, &id, &version, &exp, &r)) != 0) {
        sl_result_free(&r);
        return rc;
    }
    int64_t now = sl_now_ms(), visible = now + (int64_t)invis_s * 1000;
    exp = r.rows[0].v[M_EXP].i;
    /* The tag names the message, as in CassieQ, and stays through updates
     * of its body; the receipt is what names a delivery. */
    char newtag[SL_TAG_MAX];
    sl_val_str(&r.rows[0].v[M_TAG], newtag, sizeof newtag);
    sl_result_free(&r);
    sl_write w = {0};
    msg_key(&w, q->qkey, id / q->opts.bucket_size, id);
    w.kind = SL_W_UPDATE_IF;
    w.ttl = (int)ttl_left_s(exp, now);
    w.row.v[M_VERSION] = sl_vint(msg_version_next(e, version));
    w.row.v[M_VISIBLE] = sl_vint(visible);
    w.row.v[M_NONCE] = sl_vint(eng_nonce());
    if (body) w.row.v[M_BODY] = sl_vbytes(body, len);
    w.cond[0] = (sl_cond){M_VERSION, sl_vint(version)};
    w.cond[1] = (sl_cond){M_STATE, sl_vint(MS_WAITING)};
    w.ncond = 2;
    rc = eng_cas(e, &w, M_NONCE);
    if (rc == SL_ENOTAPPLIED) return SL_ECONFLICT;
    if (rc) return rc;
    lg_leased(q, id, 0, visible);
    msg_lease_entry_cancel(q, id, version);
    /* A message returned now (or soon) is found through its entry: write
     * it before answering, so that a receive right after finds it. */
    msg_lease_entry(e, q, id, msg_version_next(e, version), visible, exp, invis_s > 1);
    msg_receipt_make(q, new_receipt, id, msg_version_next(e, version), exp);
    snprintf(tag, SL_TAG_MAX, "%s", newtag);
    if (invis_s == 0) eng_notify(e, q);
    return 0;
}

/* For the watch poller: is anything visible now? Reads the reader window
 * and the lease index after the node's cursor, both bounded. */
int msg_has_visible(sl_engine *e, qstate *q) {
    int64_t now = sl_now_ms(), R, head;
    pthread_mutex_lock(&q->mu);
    int have = q->ncands > 0;
    int64_t cur = q->lcur_due < 0 ? now - LEASE_SWEEP_MS : q->lcur_due;
    pthread_mutex_unlock(&q->mu);
    if (have) return 1;
    if (eng_pointer_get(e, q->qkey, "reader", &R) != 0 || msg_head(e, q, &head) != 0) return 0;
    msg_refresh_purge(e, q, 0);
    for (int64_t b = R, full = 0;
         full < READ_WINDOW && b < R + READ_SCAN_MAX && b * q->opts.bucket_size < head; b++) {
        sl_result r;
        sl_result_init(&r);
        int found = 0;
        if (msg_scan_bucket(e, q, b, &r) == 0 && r.n > 0) full++;
        for (size_t i = 0; i < r.n && !found; i++)
            found =
                r.rows[i].v[M_ID].i >= 0 && r.rows[i].v[M_STATE].i == MS_READY && !msg_purged(q, &r.rows[i]);
        sl_result_free(&r);
        if (found) return 1;
    }
    for (int64_t m = cur / 60000; m <= now / 60000; m++) {
        sl_slice s = {0};
        s.t = &sl_t_leases;
        s.pk[0] = sl_vtext(q->qkey);
        s.pk[1] = sl_vint(m);
        s.from[0] = sl_vint(cur);
        s.nfrom = 1;
        s.to[0] = sl_vint(now);
        s.nto = 1;
        s.limit = 1;
        sl_result r;
        sl_result_init(&r);
        int found = sl_store_slice(e->st, &s, &r) == 0 && r.n > 0;
        sl_result_free(&r);
        if (found) return 1;
    }
    return 0;
}
