/* repair.c: the repair worker and the deletion of deleted queues.
 *
 * The repair worker follows the reader over sealed buckets. Once a bucket
 * has been sealed for the finalize timeout, every write that was in flight
 * when it was sealed has landed or never will, so the worker republishes
 * what is still undelivered in it (late writes, and leases that ran out long
 * ago), completes moves that a crash interrupted, then finalizes the bucket
 * and, when the queue says so, deletes it GC_DELAY_MS after it was sealed. In the newest bucket, which is
 * not sealed while ids have not moved past it, it republishes messages whose
 * lease ran out long ago (see repair_newest). One node at a time runs a queue's
 * worker: it holds a lease row, taken with insert-if-not-exists and renewed
 * with a CAS, both with a TTL, so another node takes over when the owner
 * stops renewing. */
#include <stdio.h>
#include <string.h>

#include "queue_int.h"

#define REPAIR_RUN 32 /* buckets finalized before the pointer moves and they are deleted */

static int own_repair(sl_engine *e, qstate *q) {
    int ttl = q->opts.repair_poll_s * 3;
    if (ttl < 10) ttl = 10;
    sl_write w = {0};
    w.t = &sl_t_repair_lease;
    w.kind = SL_W_INSERT_IF_NOT_EXISTS;
    w.ttl = ttl;
    w.row.v[R_QKEY] = sl_vtext(q->qkey);
    w.row.v[R_OWNER] = sl_vtext(e->cfg.node_id);
    w.row.v[R_NONCE] = sl_vint(eng_nonce());
    int rc = eng_cas(e, &w, R_NONCE);
    if (rc == 0) return 1;
    if (rc != SL_ENOTAPPLIED) return 0;
    w.kind = SL_W_UPDATE_IF;
    w.row.v[R_NONCE] = sl_vint(eng_nonce());
    w.cond[0] = (sl_cond){R_OWNER, sl_vtext(e->cfg.node_id)};
    w.ncond = 1;
    return eng_cas(e, &w, R_NONCE) == 0;
}

/* Finalizes the buckets from *P on, up to R and at most REPAIR_RUN of them,
 * stopping at the first that is not sealed, whose finalize timeout has not
 * passed, or that holds a message whose time has not come; *P ends past the
 * last one finalized. */
static int finalize_run(sl_engine *e, qstate *q, int64_t *P, int64_t R) {
    int rc = 0;
    for (int64_t end = *P + REPAIR_RUN; *P < R && *P < end && !e->stopping; (*P)++) {
        int64_t now = sl_now_ms();
        sl_result r;
        sl_result_init(&r);
        if ((rc = msg_scan_bucket(e, q, *P, &r)) != 0) {
            sl_result_free(&r);
            return rc;
        }
        /* The marker (id -1) sorts first. */
        sl_row *mk = r.n > 0 && r.rows[0].v[M_ID].i < 0 ? &r.rows[0] : NULL;
        int final = mk && mk->v[M_STATE].i == MS_FINAL;
        if (!mk || (!final && now < mk->v[M_PUT].i + (int64_t)q->opts.finalize_timeout_s * 1000)) {
            sl_result_free(&r);
            break;
        }
        int blocked = 0;
        for (size_t i = 0; !final && i < r.n && rc == 0; i++) {
            sl_row *m = &r.rows[i];
            int64_t st = m->v[M_STATE].i;
            if (m->v[M_ID].i < 0 || msg_purged(q, m)) continue;
            if (st == MS_READY || (st == MS_WAITING && m->v[M_VISIBLE].i <= now)) {
                rc = msg_move(e, q, m, q, 0, 0);
                if (rc == 0) sl_log(SL_DEBUG, "repair %s: republished id %lld", q->qkey, (long long)m->v[M_ID].i);
            } else if (st == MS_WAITING) {
                blocked = 1; /* leased or delayed: its time has not come */
            } else if (st == MS_MOVING) {
                rc = msg_complete_move(e, q, m);
            }
            if (rc == SL_ENOTAPPLIED) {
                blocked = 1; /* it changed under us: look again next time */
                rc = 0;
            }
        }
        if (rc || blocked) {
            sl_result_free(&r);
            return rc;
        }
        if (!final) {
            sl_write w = {0};
            w.t = &sl_t_messages;
            w.kind = SL_W_UPDATE_IF;
            w.row.v[M_QKEY] = sl_vtext(q->qkey);
            w.row.v[M_BUCKET] = sl_vint(*P);
            w.row.v[M_ID] = sl_vint(-1);
            w.row.v[M_STATE] = sl_vint(MS_FINAL);
            w.row.v[M_NONCE] = sl_vint(eng_nonce());
            w.cond[0] = (sl_cond){M_STATE, sl_vint(MS_SEALED)};
            w.ncond = 1;
            w.ttl = (int)(eng_queue_retention(q) + 86400);
            rc = eng_cas(e, &w, M_NONCE);
            if (rc && rc != SL_ENOTAPPLIED) {
                sl_result_free(&r);
                return rc;
            }
            rc = 0;
        }
        sl_result_free(&r);
    }
    return rc;
}

/* Deletes finalized buckets, from the gc pointer up to the repair pointer
 * P, once they have been sealed for GC_DELAY_MS, a run at a time with one
 * write each (three durable writes per bucket were a background load that
 * competed with the clients'). A finalized bucket keeps its rows and its
 * marker that long because a move cut by a crash may be completed long
 * after its claim, into a slot of such a bucket: while the bucket exists,
 * the slot tells whether the copy was ever written (see move.c). The
 * pointer moves before the deletes, so a crash between the two leaves rows
 * behind (they expire), never a pointer at a deleted bucket. */
static int gc_run(sl_engine *e, qstate *q, int64_t P) {
    sl_val key[2] = {sl_vtext(q->qkey), sl_vtext("gc")};
    sl_result r;
    sl_result_init(&r);
    int rc = sl_store_get(e->st, &sl_t_pointers, key, SL_READ_DEFAULT, &r);
    /* A queue made before the gc pointer existed deleted its buckets as it
     * finalized them: start near the repair pointer. */
    int64_t G = rc == 0 ? r.rows[0].v[PT_VALUE].i : P > REPAIR_RUN ? P - REPAIR_RUN : 0;
    sl_result_free(&r);
    if (rc && rc != SL_ENOTFOUND) return rc;
    int64_t now = sl_now_ms();
    for (int young = 0; !young && G < P && !e->stopping;) {
        int64_t from = G;
        for (; G < P && G < from + REPAIR_RUN; G++) {
            sl_result_init(&r);
            rc = msg_get_msg(e, q->qkey, G, -1, SL_READ_DEFAULT, &r);
            int64_t sealed = rc == 0 ? r.rows[0].v[M_PUT].i : 0;
            sl_result_free(&r);
            if (rc && rc != SL_ENOTFOUND) return rc;
            if (rc == 0 && now - sealed < GC_DELAY_MS) {
                young = 1; /* buckets are sealed in order: the rest are younger */
                break;
            }
        }
        if (G == from) break;
        if ((rc = eng_pointer_max(e, q->qkey, "gc", G)) != 0) return rc;
        sl_write d[REPAIR_RUN];
        for (int64_t b = from; b < G; b++) {
            sl_write *w = &d[b - from];
            memset(w, 0, sizeof *w);
            w->t = &sl_t_messages;
            w->kind = SL_W_DELETE_PARTITION;
            w->row.v[M_QKEY] = sl_vtext(q->qkey);
            w->row.v[M_BUCKET] = sl_vint(b);
        }
        if ((rc = eng_write(e, d, (size_t)(G - from))) != 0) return rc;
    }
    return 0;
}

/* The newest bucket. Ids have not moved past it, so the reader cannot seal
 * it and finalize_run never reaches it: a message leased there whose lease
 * index entry was lost (its node died before the entry landed) would stay
 * waiting, counted in the queue and never handed out, for as long as
 * nothing more is put. Once its lease has been over for the finalize
 * timeout, ample time for any node's receives to find an entry that
 * exists, it is republished as in a sealed bucket, and a move a crash
 * interrupted there is completed. Both are compare-and-sets, so a receive
 * that leases the message first wins. */
static int repair_newest(sl_engine *e, qstate *q) {
    int64_t head;
    int rc = msg_head(e, q, &head);
    if (rc || head <= 0) return rc;
    sl_result r;
    sl_result_init(&r);
    if ((rc = msg_scan_bucket(e, q, (head - 1) / q->opts.bucket_size, &r)) != 0) {
        sl_result_free(&r);
        return rc;
    }
    int64_t late = sl_now_ms() - (int64_t)q->opts.finalize_timeout_s * 1000;
    /* A marker (id -1, first) means sealed: finalize_run's part. */
    for (size_t i = 0; i < r.n && rc == 0 && r.rows[0].v[M_ID].i >= 0 && !e->stopping; i++) {
        sl_row *m = &r.rows[i];
        int64_t st = m->v[M_STATE].i;
        if (msg_purged(q, m)) continue;
        if (st == MS_WAITING && m->v[M_VISIBLE].i <= late) {
            rc = msg_move(e, q, m, q, 0, 0);
            if (rc == 0) sl_log(SL_DEBUG, "repair %s: republished id %lld, its lease long over", q->qkey,
                                (long long)m->v[M_ID].i);
        } else if (st == MS_MOVING) {
            rc = msg_complete_move(e, q, m);
        }
        if (rc == SL_ENOTAPPLIED) rc = 0; /* leased, acked or moved meanwhile */
    }
    sl_result_free(&r);
    return rc;
}

int repair_queue(sl_engine *e, qstate *q) {
    /* Keep this node's lease cursor near now even when nobody receives, so
     * the first receive after a quiet spell finds due leases at once. */
    msg_lease_scan(e, q, sl_now_ms());
    int rc = msg_seal_behind(e, q);
    if (rc) return rc;
    if (!own_repair(e, q)) return 0;
    int64_t P, R;
    if ((rc = eng_pointer_get(e, q->qkey, "repair", &P)) != 0) return rc;
    if ((rc = eng_pointer_get(e, q->qkey, "reader", &R)) != 0) return rc;
    msg_refresh_purge(e, q, 1);
    if (q->opts.fifo && (rc = fifo_sweep(e, q)) != 0)
        sl_log(SL_INFO, "fifo sweep of %s: %s", q->qkey, sl_strerror(rc));
    while (P < R && !e->stopping) {
        /* Finalize a run of buckets, then move the pointer past the run. */
        int64_t from = P;
        rc = finalize_run(e, q, &P, R);
        if (P == from) break;
        int rc2 = eng_pointer_max(e, q->qkey, "repair", P);
        if (rc || rc2) return rc ? rc : rc2;
    }
    if (rc == 0 && q->opts.delete_buckets) rc = gc_run(e, q, P);
    return rc ? rc : repair_newest(e, q);
}

/* Removes everything of a deleted incarnation. Each step is idempotent, so
 * two nodes doing it at once, or one doing it again after a crash, is fine;
 * the index row goes last, so the work is found again until it is done. */
int repair_delete_queue(sl_engine *e, const char *qkey, int64_t bucket_size) {
    sl_val key[1] = {sl_vtext(qkey)};
    sl_result r;
    sl_result_init(&r);
    int rc = sl_store_get(e->st, &sl_t_monoton, key, SL_READ_DEFAULT, &r);
    int64_t head = rc == 0 ? r.rows[0].v[MO_NEXT].i : 0;
    sl_result_free(&r);
    if (rc && rc != SL_ENOTFOUND) return rc;
    int64_t first = 0; /* buckets before the gc pointer are deleted already */
    if (rc == 0) eng_pointer_get(e, qkey, "gc", &first);
    sl_write d = {0};
    d.t = &sl_t_messages;
    d.kind = SL_W_DELETE_PARTITION;
    d.row.v[M_QKEY] = sl_vtext(qkey);
    if (bucket_size < 1) bucket_size = 1;
    for (int64_t b = first; b * bucket_size < head && !e->stopping; b++) {
        d.row.v[M_BUCKET] = sl_vint(b);
        if ((rc = eng_write(e, &d, 1)) != 0) return rc;
    }
    if (e->stopping) return 0;
    const sl_table *per_queue[] = {&sl_t_pointers, &sl_t_counters, &sl_t_monoton, &sl_t_repair_lease,
                                   &sl_t_tallies};
    for (size_t i = 0; i < sizeof per_queue / sizeof per_queue[0]; i++) {
        sl_write w = {0};
        w.t = per_queue[i];
        w.kind = SL_W_DELETE_PARTITION;
        w.row.v[0] = sl_vtext(qkey);
        if ((rc = eng_write(e, &w, 1)) != 0) return rc;
    }
    sl_write x = {0};
    x.t = &sl_t_queue_index;
    x.kind = SL_W_DELETE_ROW;
    x.row.v[QI_SHARD] = sl_vint(0);
    x.row.v[QI_QKEY] = sl_vtext(qkey);
    return eng_write(e, &x, 1);
}
