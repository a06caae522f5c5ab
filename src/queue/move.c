/* move.c: moving a message to a new id or another queue: republishing,
 * dead-lettering, redrive; a move is a copy keyed by its source, so a crash
 * between copy and ack makes no duplicate. */
#include <stdio.h>
#include <string.h>

#include "queue_int.h"

/* --- Moving messages ---------------------------------------------------------- */

/* dest format: "<dst qkey>|<id>|<bucket>|<reset>|<dead>". */
int msg_complete_move(sl_engine *e, qstate *src, const sl_row *m) {
    char dest[QKEY_MAX + 80], dqkey[QKEY_MAX];
    if (sl_val_str(&m->v[M_DEST], dest, sizeof dest) < 0) return SL_EINTERNAL;
    char *bar = strchr(dest, '|');
    long long did, dbucket;
    int reset, dead;
    if (!bar || (size_t)(bar - dest) >= sizeof dqkey ||
        sscanf(bar, "|%lld|%lld|%d|%d", &did, &dbucket, &reset, &dead) != 4)
        return SL_EINTERNAL;
    memcpy(dqkey, dest, (size_t)(bar - dest));
    dqkey[bar - dest] = 0;
    int64_t now = sl_now_ms();
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
    w.row.v[M_STATE] = sl_vint(MS_READY);
    w.row.v[M_NONCE] = sl_vint(eng_nonce());
    /* Insert-if-not-exists makes the copy idempotent: a move that is redone
     * after a crash finds its copy there and does not make a second one. */
    int rc = eng_cas(e, &w, M_NONCE, NULL);
    if (rc && rc != SL_ENOTAPPLIED) return rc;
    __atomic_add_fetch(&e->moves, 1, __ATOMIC_RELEASE); /* a READY row the pools lack */

    sl_write f = {0};
    msg_key(&f, src->qkey, m->v[M_BUCKET].i, m->v[M_ID].i);
    f.kind = SL_W_UPDATE_IF;
    f.ttl = (int)ttl_left_s(exp, now);
    f.row.v[M_STATE] = sl_vint(dead ? MS_DEAD : MS_MOVED);
    f.row.v[M_VERSION] = sl_vint(m->v[M_VERSION].i + 1);
    f.row.v[M_NONCE] = sl_vint(eng_nonce());
    f.cond[0] = (sl_cond){M_VERSION, sl_vint(m->v[M_VERSION].i)};
    f.cond[1] = (sl_cond){M_STATE, sl_vint(MS_MOVING)};
    f.ncond = 2;
    rc = eng_cas(e, &f, M_NONCE, NULL);
    if (rc == 0 && dead) eng_counter_add(e, src->qkey, "dead", 1);
    return rc;
}

/* Moves a message (a row as last read) to a new id in dst, which may be the
 * same queue (republishing a late or long-expired message). reset starts the
 * delivery count again (redrive); dead marks it dead-lettered. Returns
 * SL_ENOTAPPLIED when the row changed since it was read. */
int msg_move(sl_engine *e, qstate *src, const sl_row *row, qstate *dst, int reset, int dead) {
    int64_t did;
    int rc = msg_claim(e, dst, &did);
    if (rc) return rc;
    char dest[QKEY_MAX + 80];
    snprintf(dest, sizeof dest, "%s|%lld|%lld|%d|%d", dst->qkey, (long long)did,
             (long long)(did / dst->opts.bucket_size), reset, dead);
    int64_t now = sl_now_ms();
    sl_write w = {0};
    msg_key(&w, src->qkey, row->v[M_BUCKET].i, row->v[M_ID].i);
    w.kind = SL_W_UPDATE_IF;
    w.ttl = (int)ttl_left_s(row->v[M_EXP].i, now);
    w.row.v[M_STATE] = sl_vint(MS_MOVING);
    w.row.v[M_VERSION] = sl_vint(row->v[M_VERSION].i + 1);
    w.row.v[M_DEST] = sl_vtext(dest);
    w.row.v[M_NONCE] = sl_vint(eng_nonce());
    w.cond[0] = msg_cond_of(row, M_VERSION);
    w.cond[1] = msg_cond_of(row, M_STATE);
    w.ncond = 2;
    if ((rc = eng_cas(e, &w, M_NONCE, NULL)) != 0) return rc;
    sl_row moving = *row;
    moving.v[M_STATE] = sl_vint(MS_MOVING);
    moving.v[M_VERSION] = sl_vint(row->v[M_VERSION].i + 1);
    moving.v[M_DEST] = sl_vtext(dest);
    rc = msg_complete_move(e, src, &moving);
    if (rc == 0) eng_notify(e, dst);
    return rc;
}
