/* move.c: moving a message to a new id or another queue: republishing,
 * dead-lettering, redrive. The source is marked MOVING with the slot its
 * copy goes to, the copy is written there with insert-if-not-exists, then
 * the source is marked done; a crash between two steps leaves a MOVING row
 * that the repair worker completes the same way, so the copy is made once.
 * Completed late, the slot's bucket may have been sealed or finalized
 * meanwhile: see late_slot and forward_if_passed. */
#include <stdio.h>
#include <string.h>

#include "queue_int.h"

/* --- Moving messages ---------------------------------------------------------- */

/* The live incarnation whose key is qkey ("account/name/version"), or
 * SL_ENOTFOUND when that queue was deleted since. */
static int queue_of_qkey(sl_engine *e, const char *qkey, qstate **q) {
    char account[QKEY_MAX], name[QKEY_MAX];
    if (sscanf(qkey, "%[^/]/%[^/]/", account, name) != 2) return SL_ENOTFOUND;
    int rc = eng_queue(e, account, name, q);
    return rc == 0 && strcmp((*q)->qkey, qkey) != 0 ? SL_ENOTFOUND : rc;
}

/* A copy just written (or found) at id in bucket b of dqkey, claimed at
 * claim_ms: when the reader or the repair worker may have passed that
 * bucket already (it was sealed while the copy was on its way, or the copy
 * was written in time and its bucket finalized since), nobody may ever hand
 * the copy out, so it moves on to a fresh id, or its own interrupted move is
 * completed. Both are compare-and-sets: if the repair worker republishes it
 * first, or a receive leases it, that is fine too. */
static int forward_if_passed(sl_engine *e, const char *dqkey, int64_t b, int64_t id, int64_t claim_ms) {
    if (claim_ms > 0 && sl_now_ms() - claim_ms < e->cfg.lease_grace_ms / 2)
        return 0; /* cannot be sealed yet */
    int rc = msg_bucket_passed(e, dqkey, b);
    if (rc <= 0) return rc;
    qstate *dq;
    if (queue_of_qkey(e, dqkey, &dq) != 0) return 0; /* deleted since, and its messages with it */
    sl_result r;
    sl_result_init(&r);
    rc = msg_get_msg(e, dqkey, b, id, SL_READ_SERIAL, &r);
    if (rc == 0) {
        int64_t st = r.rows[0].v[M_STATE].i;
        /* Only a READY copy: a leased one was found, and has its lease entry. */
        if (st == MS_READY)
            rc = msg_move(e, dq, &r.rows[0], dq, 0, 0);
        else if (st == MS_MOVING)
            rc = msg_complete_move(e, dq, &r.rows[0]);
        if (rc == 0 && (st == MS_READY || st == MS_MOVING))
            sl_log(SL_INFO, "move to %s: bucket %lld was passed before copy %lld landed, moved it on", dqkey,
                   (long long)b, (long long)id);
    }
    sl_result_free(&r);
    /* Not found: expired. Not applied: leased or moved meanwhile. */
    return rc == SL_ENOTFOUND || rc == SL_ENOTAPPLIED ? 0 : rc;
}

enum { SLOT_OPEN, SLOT_USED, SLOT_GONE };

/* Where a move completed late (long after its claim: by the repair worker,
 * after a crash cut it) stands with its slot, id in bucket b of dqkey:
 * SLOT_OPEN while neither the reader nor the repair worker has passed the
 * bucket, so a copy written there now is found; SLOT_USED when the copy is
 * there already (written in time, before the crash): whatever became of it
 * is its own story; SLOT_GONE when the bucket was passed and the copy was
 * never written, so that nobody would ever look at a copy written now. A
 * finalized bucket is kept, rows and marker, for GC_DELAY_MS after it was
 * sealed (repair.c), so an empty slot there is known to be empty. Once it
 * is deleted, a copy written in time and since consumed can no longer be
 * told from one never written: that is SLOT_GONE too, and the move goes to
 * a fresh slot, which prefers a duplicate to a loss. */
static int late_slot(sl_engine *e, const char *dqkey, int64_t b, int64_t id) {
    int rc = msg_bucket_passed(e, dqkey, b);
    if (rc <= 0) return rc < 0 ? rc : SLOT_OPEN;
    sl_result r;
    sl_result_init(&r);
    rc = msg_get_msg(e, dqkey, b, id, SL_READ_SERIAL, &r);
    sl_result_free(&r);
    return rc == 0 ? SLOT_USED : rc == SL_ENOTFOUND ? SLOT_GONE : rc;
}

/* Points the move of m (MOVING, as read) at a fresh slot of its
 * destination, then completes it there. */
static int retarget(sl_engine *e, qstate *src, const sl_row *m, const char *dqkey, int reset, int dead) {
    qstate *dq;
    int rc = queue_of_qkey(e, dqkey, &dq);
    if (rc) return rc;
    int64_t did, claim_ms;
    if ((rc = msg_claim_block(e, dq, &did, &claim_ms)) != 0) return rc;
    char dest[QKEY_MAX + 100];
    snprintf(dest, sizeof dest, "%s|%lld|%lld|%d|%d|%lld", dq->qkey, (long long)did,
             (long long)(did / dq->opts.bucket_size), reset, dead, (long long)claim_ms);
    sl_write w = {0};
    msg_key(&w, src->qkey, m->v[M_BUCKET].i, m->v[M_ID].i);
    w.kind = SL_W_UPDATE_IF;
    w.ttl = (int)ttl_left_s(m->v[M_EXP].i, sl_now_ms());
    w.row.v[M_VERSION] = sl_vint(msg_version_next(e, m->v[M_VERSION].i));
    w.row.v[M_DEST] = sl_vtext(dest);
    w.row.v[M_NONCE] = sl_vint(eng_nonce());
    w.cond[0] = msg_cond_of(m, M_VERSION);
    w.cond[1] = (sl_cond){M_STATE, sl_vint(MS_MOVING)};
    w.ncond = 2;
    if ((rc = eng_cas(e, &w, M_NONCE)) != 0) return rc;
    /* Past GC_DELAY_MS (the bucket deleted) this may be a second copy. */
    sl_log(SL_ERR, "move of %s id %lld: its slot in %s was passed with no copy in it, moved to id %lld",
           src->qkey, (long long)m->v[M_ID].i, dq->qkey, (long long)did);
    sl_row again = *m;
    again.v[M_VERSION] = sl_vint(msg_version_next(e, m->v[M_VERSION].i));
    again.v[M_DEST] = sl_vtext(dest);
    rc = msg_complete_move(e, src, &again);
    if (rc == 0) eng_notify(e, dq);
    return rc;
}

/* dest format: "<dst qkey>|<id>|<bucket>|<reset>|<dead>|<claim ms>"; rows
 * written before the claim time was recorded lack the last field. */
static int complete_move(sl_engine *e, qstate *src, const sl_row *m, qstate *dq);

/* The ledgers (ledger.c) of both queues see the move as it lands; dq is
 * NULL when the destination is gone. */
int msg_complete_move(sl_engine *e, qstate *src, const sl_row *m) {
    char dqkey[QKEY_MAX];
    qstate *dq = NULL;
    if (sl_val_str(&m->v[M_DEST], dqkey, sizeof dqkey) >= 0) {
        char *bar = strchr(dqkey, '|');
        if (bar) *bar = 0;
        if (queue_of_qkey(e, dqkey, &dq) != 0) dq = NULL;
    }
    lg_op_begin(src);
    if (dq) lg_op_begin(dq);
    int rc = complete_move(e, src, m, dq);
    if (dq) lg_op_end(dq);
    lg_op_end(src);
    return rc;
}

static int complete_move(sl_engine *e, qstate *src, const sl_row *m, qstate *dq) {
    char dest[QKEY_MAX + 100], dqkey[QKEY_MAX];
    if (sl_val_str(&m->v[M_DEST], dest, sizeof dest) < 0) return SL_EINTERNAL;
    char *bar = strchr(dest, '|');
    long long did, dbucket, claim_ms = 0;
    int reset, dead;
    if (!bar || (size_t)(bar - dest) >= sizeof dqkey ||
        sscanf(bar, "|%lld|%lld|%d|%d|%lld", &did, &dbucket, &reset, &dead, &claim_ms) < 4)
        return SL_EINTERNAL;
    memcpy(dqkey, dest, (size_t)(bar - dest));
    dqkey[bar - dest] = 0;
    int64_t now = sl_now_ms();
    if (claim_ms == 0 || now - claim_ms >= e->cfg.lease_grace_ms / 2) {
        /* Late: the slot's bucket may have been sealed since the claim. */
        int slot = late_slot(e, dqkey, dbucket, did);
        if (slot < 0) return slot;
        if (slot == SLOT_GONE) {
            int rc = retarget(e, src, m, dqkey, reset, dead);
            /* The destination was deleted: the copy goes with it, as before. */
            if (rc != SL_ENOTFOUND) return rc;
        }
    }
    int64_t exp = m->v[M_EXP].i;
    sl_write w = {0};
    msg_key(&w, dqkey, dbucket, did);
    w.kind = SL_W_INSERT_IF_NOT_EXISTS;
    w.ttl = (int)ttl_left_s(exp, now);
    w.row.v[M_MID] = m->v[M_MID];
    w.row.v[M_BODY] = m->v[M_BODY];
    w.row.v[M_ATTRS] = m->v[M_ATTRS];
    w.row.v[M_TAG] = m->v[M_TAG];
    w.row.v[M_PUT] = sl_vint(reset ? now : m->v[M_PUT].i);
    w.row.v[M_EXP] = sl_vint(exp);
    w.row.v[M_VISIBLE] = sl_vint(now);
    w.row.v[M_VERSION] = sl_vint(0);
    w.row.v[M_DCOUNT] = sl_vint(reset ? 0 : m->v[M_DCOUNT].i);
    if (!reset) w.row.v[M_FIRST] = m->v[M_FIRST];
    w.row.v[M_STATE] = sl_vint(MS_READY);
    w.row.v[M_NONCE] = sl_vint(eng_nonce());
    /* Insert-if-not-exists makes the copy idempotent: a move that is redone
     * after a crash finds its copy there and does not make a second one. */
    int rc = eng_cas(e, &w, M_NONCE);
    if (rc && rc != SL_ENOTAPPLIED) return rc;
    __atomic_add_fetch(&e->moves, 1, __ATOMIC_RELEASE); /* a READY row the pools lack */
    if (dq) {
        if (rc == 0)
            lg_put(dq, did, w.row.v[M_PUT].i, now, exp);
        else
            lg_suspect(dq); /* a copy made before, which may or may not have been counted */
    }
    /* Before the source is marked done: a crash in between leaves it
     * MOVING, and this runs again. */
    if ((rc = forward_if_passed(e, dqkey, dbucket, did, claim_ms)) != 0) return rc;

    sl_write f = {0};
    msg_key(&f, src->qkey, m->v[M_BUCKET].i, m->v[M_ID].i);
    f.kind = SL_W_UPDATE_IF;
    f.ttl = (int)ttl_left_s(exp, now);
    f.row.v[M_STATE] = sl_vint(dead ? MS_DEAD : MS_MOVED);
    f.row.v[M_VERSION] = sl_vint(msg_version_next(e, m->v[M_VERSION].i));
    f.row.v[M_NONCE] = sl_vint(eng_nonce());
    f.cond[0] = (sl_cond){M_VERSION, sl_vint(m->v[M_VERSION].i)};
    f.cond[1] = (sl_cond){M_STATE, sl_vint(MS_MOVING)};
    f.ncond = 2;
    rc = eng_cas(e, &f, M_NONCE);
    if (rc == 0) lg_gone(src, m->v[M_ID].i, m->v[M_PUT].i);
    if (rc && rc != SL_ENOTAPPLIED) lg_suspect(src);
    if (rc == 0 && dead) eng_counter_add(e, src->qkey, "dead", 1);
    return rc;
}

/* Moves a message (a row as last read) to a new id in dst, which may be the
 * same queue (republishing a late or long-expired message). reset starts the
 * delivery count again (redrive); dead marks it dead-lettered. Returns
 * SL_ENOTAPPLIED when the row changed since it was read. */
int msg_move(sl_engine *e, qstate *src, const sl_row *row, qstate *dst, int reset, int dead) {
    int64_t did, claim_ms;
    int rc = msg_claim_block(e, dst, &did, &claim_ms);
    if (rc) return rc;
    char dest[QKEY_MAX + 100];
    snprintf(dest, sizeof dest, "%s|%lld|%lld|%d|%d|%lld", dst->qkey, (long long)did,
             (long long)(did / dst->opts.bucket_size), reset, dead, (long long)claim_ms);
    int64_t now = sl_now_ms();
    sl_write w = {0};
    msg_key(&w, src->qkey, row->v[M_BUCKET].i, row->v[M_ID].i);
    w.kind = SL_W_UPDATE_IF;
    w.ttl = (int)ttl_left_s(row->v[M_EXP].i, now);
    w.row.v[M_STATE] = sl_vint(MS_MOVING);
    w.row.v[M_VERSION] = sl_vint(msg_version_next(e, row->v[M_VERSION].i));
    w.row.v[M_DEST] = sl_vtext(dest);
    w.row.v[M_NONCE] = sl_vint(eng_nonce());
    w.cond[0] = msg_cond_of(row, M_VERSION);
    w.cond[1] = msg_cond_of(row, M_STATE);
    w.ncond = 2;
    if ((rc = eng_cas(e, &w, M_NONCE)) != 0) return rc;
    sl_row moving = *row;
    moving.v[M_STATE] = sl_vint(MS_MOVING);
    moving.v[M_VERSION] = sl_vint(msg_version_next(e, row->v[M_VERSION].i));
    moving.v[M_DEST] = sl_vtext(dest);
    rc = msg_complete_move(e, src, &moving);
    if (rc == 0) eng_notify(e, dst);
    return rc;
}
