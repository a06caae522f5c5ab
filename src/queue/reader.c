/* reader.c: receive's first half: leasing a message, the scan of the lease
 * index for messages due again, and sealing buckets that ids have moved
 * past. The second half, READY rows, is fresh.c. */
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"

/* --- The reader ----------------------------------------------------------------- */

int msg_fill_message(sl_message *out, const sl_row *m) {
    memset(out, 0, sizeof *out);
    sl_val_str(&m->v[M_MID], out->id, sizeof out->id);
    sl_val_str(&m->v[M_TAG], out->tag, sizeof out->tag);
    const sl_val *b = &m->v[M_BODY];
    out->len = b->set && !b->null ? b->n : 0;
    out->body = sl_malloc(out->len + 1);
    if (!out->body) return SL_ENOMEM;
    if (out->len) memcpy(out->body, b->p, out->len);
    ((char *)out->body)[out->len] = 0;
    const sl_val *a = &m->v[M_ATTRS];
    size_t alen = a->set && !a->null ? a->n : 0;
    out->attrs_json = sl_malloc(alen ? alen + 1 : 3);
    if (!out->attrs_json) {
        free(out->body);
        out->body = NULL;
        return SL_ENOMEM;
    }
    if (alen) {
        memcpy(out->attrs_json, a->p, alen);
        out->attrs_json[alen] = 0;
    } else {
        strcpy(out->attrs_json, "{}");
    }
    out->delivery_count = msg_dcount(m->v[M_DCOUNT].i);
    out->enqueued_ms = m->v[M_PUT].i;
    out->first_receive_ms = m->v[M_FIRST].set && !m->v[M_FIRST].null ? m->v[M_FIRST].i : 0;
    return 0;
}

void sl_messages_free(sl_message *m, size_t n) {
    if (!m) return;
    for (size_t i = 0; i < n; i++) {
        free(m[i].body);
        free(m[i].attrs_json);
    }
    free(m);
}

/* A message that has used up its deliveries moves to the dead-letter queue
 * instead of being leased. Returns 1 when m was (or may have been) moved and
 * must not be leased, 0 when it should be leased, or a store error. */
static int dead_letter_due(sl_engine *e, qstate *q, const sl_row *m) {
    pthread_mutex_lock(&q->mu);
    char name[SL_NAME_MAX + 1];
    memcpy(name, q->opts.dlq, sizeof name);
    int due = name[0] && msg_dcount(m->v[M_DCOUNT].i) >= q->opts.max_delivery_count;
    pthread_mutex_unlock(&q->mu);
    if (!due) return 0;
    qstate *dlq;
    if (eng_queue(e, q->account, name, &dlq) != 0) return 0; /* the DLQ is gone: deliver, never drop */
    int rc = msg_move(e, q, m, dlq, 0, 1);
    if (rc == 0) sl_count(&q->m.dead_letters, 1);
    return rc == 0 || rc == SL_ENOTAPPLIED ? 1 : rc;
}

/* The CAS that leases message m (as read) until visible_ms. A first
 * delivery records its time, in the write and in m (leased_message reports
 * it from there). */
static void lease_write(const sl_engine *e, qstate *q, sl_row *m, int64_t now, int64_t visible, sl_write *w) {
    memset(w, 0, sizeof *w);
    msg_key(w, q->qkey, m->v[M_BUCKET].i, m->v[M_ID].i);
    w->kind = SL_W_UPDATE_IF;
    w->ttl = (int)ttl_left_s(m->v[M_EXP].i, now);
    w->row.v[M_STATE] = sl_vint(MS_WAITING);
    w->row.v[M_VERSION] = sl_vint(msg_version_next(e, m->v[M_VERSION].i));
    w->row.v[M_VISIBLE] = sl_vint(visible);
    w->row.v[M_DCOUNT] = sl_vint(msg_version_next(e, m->v[M_DCOUNT].i));
    if (msg_dcount(m->v[M_DCOUNT].i) == 0) w->row.v[M_FIRST] = m->v[M_FIRST] = sl_vint(now);
    w->row.v[M_NONCE] = sl_vint(eng_nonce());
    w->cond[0] = msg_cond_of(m, M_VERSION);
    w->cond[1] = msg_cond_of(m, M_STATE);
    w->ncond = 2;
}

/* What a client gets for a message it leased with lease_write(). */
static int leased_message(const sl_engine *e, qstate *q, const sl_row *m, int64_t visible, sl_message *out) {
    lg_leased(q, m->v[M_ID].i, m->v[M_PUT].i, visible);
    int rc = msg_fill_message(out, m);
    if (rc) return rc;
    out->delivery_count = msg_dcount(m->v[M_DCOUNT].i) + 1;
    out->lease_dcount = msg_version_next(e, m->v[M_DCOUNT].i);
    msg_receipt_make(q, out->receipt, m->v[M_ID].i, msg_version_next(e, m->v[M_VERSION].i), m->v[M_EXP].i);
    out->lease_id = m->v[M_ID].i;
    out->lease_exp_ms = m->v[M_EXP].i;
    out->lease_set = 1;
    return 0;
}

/* Leases one message as read in row m (READY, or WAITING and due). Returns
 * 0 with out filled, SL_ENOTAPPLIED when someone else got it first or it
 * was dead-lettered, or a store error. */
static int lease_one(sl_engine *e, qstate *q, sl_row *m, int invis_s, sl_message *out) {
    int rc = dead_letter_due(e, q, m);
    if (rc) return rc > 0 ? SL_ENOTAPPLIED : rc;
    int64_t now = sl_now_ms(), visible = now + (int64_t)invis_s * 1000;
    sl_write w;
    lease_write(e, q, m, now, visible, &w);
    eng_cas_many(e, q, &w, 1, M_NONCE, &rc);
    if (rc) return rc;
    msg_lease_entry(e, q, m->v[M_ID].i, msg_version_next(e, m->v[M_VERSION].i), visible, m->v[M_EXP].i, 1);
    return leased_message(e, q, m, visible, out);
}

/* The leases of rows[0..k) (READY, or WAITING and due): rows that are due
 * for the dead-letter queue go there instead; the others get a lease write
 * in w, their rows in todo. Returns how many, or a store error. */
int msg_lease_writes(sl_engine *e, qstate *q, sl_row **rows, size_t k, int invis_s, sl_row **todo,
                     sl_write *w, int64_t *visible) {
    int64_t now = sl_now_ms();
    *visible = now + (int64_t)invis_s * 1000;
    int n = 0, rc;
    for (size_t i = 0; i < k && n < SL_RECEIVE_MAX; i++) {
        if ((rc = dead_letter_due(e, q, rows[i])) < 0) return rc;
        if (rc == 0) {
            lease_write(e, q, rows[i], now, *visible, &w[n]);
            todo[n++] = rows[i];
        }
    }
    return n;
}

/* After the lease writes of todo[0..n) answered rcs: appends to out the
 * messages leased, and writes their lease entries (or defers them) in one
 * batch. Returns 0 if anything was leased, else the first store error. */
int msg_lease_after(sl_engine *e, qstate *q, sl_row **todo, size_t n, const int *rcs, int64_t visible,
                    sl_message *out, size_t *got) {
    sl_write entries[SL_RECEIVE_MAX];
    size_t ne = 0, before = *got;
    int64_t now = sl_now_ms();
    int rc, err = 0;
    for (size_t i = 0; i < n; i++) {
        if (rcs[i] != 0) {
            /* Taken by another node: skip it. A store error: report it,
             * unless others were leased, which the client must get. */
            if (rcs[i] != SL_ENOTAPPLIED && !err) err = rcs[i];
            continue;
        }
        if ((rc = leased_message(e, q, todo[i], visible, &out[*got])) != 0) return rc;
        (*got)++;
        int64_t id = todo[i]->v[M_ID].i, ver = msg_version_next(e, todo[i]->v[M_VERSION].i);
        int64_t exp = todo[i]->v[M_EXP].i;
        if (!msg_lease_entry_defer(q, id, ver, visible, exp, now))
            msg_lease_entry_write(q, id, ver, visible, exp, now, &entries[ne++]);
    }
    if (ne > 0) {
        msg_lease_dues_note(q, entries, ne);
        rc = sl_store_apply_async(e->st, entries, ne);
        if (rc == SL_EUNKNOWN) rc = eng_write(e, entries, ne);
        /* Not fatal: the repair worker moves waiting messages whose entry
         * was lost (see msg_lease_entry). */
        if (rc) sl_log(SL_INFO, "lease entries for %s not written: %s", q->qkey, sl_strerror(rc));
    }
    return *got > before ? 0 : err;
}

/* Leases up to k rows of one bucket with one combined compare-and-set (one
 * conditional batch with other receivers' leases of the bucket, see
 * eng_cas_many), and writes their lease entries (or defers them) in one
 * batch too. Appends to out what it leased. */
int msg_lease_batch(sl_engine *e, qstate *q, sl_row **rows, size_t k, int invis_s, sl_message *out,
                    size_t *got) {
    sl_row *todo[SL_RECEIVE_MAX];
    sl_write w[SL_RECEIVE_MAX];
    int rcs[SL_RECEIVE_MAX];
    int64_t visible;
    int n = msg_lease_writes(e, q, rows, k, invis_s, todo, w, &visible);
    if (n <= 0) return n;
    eng_cas_many(e, q, w, (size_t)n, M_NONCE, rcs);
    return msg_lease_after(e, q, todo, (size_t)n, rcs, visible, out, got);
}

static int seen_recently(qstate *q, int64_t due, int64_t id);

/* Walks the lease index from the node's cursor up to now and queues every
 * entry whose message is still waiting with the entry's version as a
 * candidate. Only one thread per queue scans at a time. The cursor never
 * passes entries due within SETTLE_MS of now, since an entry written with
 * an earlier clock may still land there; those are re-read and skipped by
 * a small memory of what was seen. */
int msg_lease_scan(sl_engine *e, qstate *q, int64_t now) {
    pthread_mutex_lock(&q->mu);
    if (q->lscanning) {
        pthread_mutex_unlock(&q->mu);
        return 0;
    }
    q->lscanning = 1;
    int64_t cdue = q->lcur_due, cid = q->lcur_id;
    pthread_mutex_unlock(&q->mu);
    int rc = 0;
    if (cdue < 0) {
        int64_t p;
        if ((rc = eng_pointer_get(e, q->qkey, "lease", &p)) != 0) goto out;
        cdue = p > 0 ? p : q->created_ms - 60000;
        cid = -1;
    }
    int64_t newdue = cdue, newid = cid;
    int full = 0;
    /* After a long idle spell the cursor may be far behind: walk at most
     * LEASE_SCAN_MINUTES partitions per call, so no request pays for the
     * whole gap; the next call (or the repair tick) goes on from there. */
    int64_t upto = now;
    if (now / 60000 - cdue / 60000 >= LEASE_SCAN_MINUTES)
        upto = (cdue / 60000 + LEASE_SCAN_MINUTES) * 60000 - 1;
    for (int64_t minute = cdue / 60000; minute <= upto / 60000 && !full; minute++) {
        sl_slice s = {0};
        s.t = &sl_t_leases;
        s.pk[0] = sl_vtext(q->qkey);
        s.pk[1] = sl_vint(minute);
        s.from[0] = sl_vint(cdue);
        s.from[1] = sl_vint(cid);
        s.nfrom = 2;
        s.from_excl = 1;
        s.to[0] = sl_vint(upto);
        s.nto = 1;
        s.limit = 128;
        for (;;) {
            sl_result r;
            sl_result_init(&r);
            if ((rc = sl_store_slice(e->st, &s, &r)) != 0) {
                sl_result_free(&r);
                goto out;
            }
            for (size_t i = 0; i < r.n && !full; i++) {
                int64_t due = r.rows[i].v[L_DUE].i, id = r.rows[i].v[L_ID].i;
                int64_t ver = r.rows[i].v[L_VERSION].i;
                int settled = due < now - SETTLE_MS;
                if (!settled && seen_recently(q, due, id)) continue;
                pthread_mutex_lock(&q->mu);
                if (q->ncands < MAX_CANDIDATES) {
                    q->cands[q->ncands++] = (cand){id, ver};
                } else {
                    full = 1;
                }
                pthread_mutex_unlock(&q->mu);
                if (full) break;
                if (settled) {
                    newdue = due;
                    newid = id;
                }
            }
            int more = r.more && !full;
            if (more) {
                s.from[0] = sl_vint(r.rows[r.n - 1].v[L_DUE].i);
                s.from[1] = sl_vint(r.rows[r.n - 1].v[L_ID].i);
            }
            sl_result_free(&r);
            if (!more) break;
        }
    }
    /* Everything settled up to the end of the walk has been looked at. */
    if (!full && upto < now - SETTLE_MS) {
        newdue = upto;
        newid = INT64_MAX;
    } else if (!full && newdue < now - SETTLE_MS) {
        newdue = now - SETTLE_MS;
        newid = -1;
    }
out:
    pthread_mutex_lock(&q->mu);
    if (rc == 0) {
        int advance_durable = q->ncands == 0 && now - q->lsweep_ms >= LEASE_SWEEP_MS;
        q->lcur_due = newdue;
        q->lcur_id = newid;
        if (advance_durable) q->lsweep_ms = now;
        q->lscanning = 0;
        pthread_mutex_unlock(&q->mu);
        /* The durable cursor lets a restarted node skip what was done. It
         * moves only when this node holds no unexamined candidates, so a
         * crash loses nothing that the cursor has passed. */
        if (advance_durable) eng_pointer_max(e, q->qkey, "lease", newdue);
    } else {
        q->lscanning = 0;
        pthread_mutex_unlock(&q->mu);
    }
    return rc;
}

static int seen_recently(qstate *q, int64_t due, int64_t id) {
    /* A small memory, per queue, of entries already taken as candidates
     * while they were still within SETTLE_MS; consulted only for those. */
    pthread_mutex_lock(&q->mu);
    int hit = 0;
    for (int i = 0; i < SEEN_RING && !hit; i++)
        hit = q->seen[i][0] == due && q->seen[i][1] == id;
    if (!hit) {
        q->seen[q->seen_pos][0] = due;
        q->seen[q->seen_pos][1] = id;
        q->seen_pos = (q->seen_pos + 1) % SEEN_RING;
    }
    pthread_mutex_unlock(&q->mu);
    return hit;
}

/* Takes due redeliveries: candidates from the lease index, each re-read and
 * leased if it is still waiting with the version the entry was made for. */
int msg_take_due(sl_engine *e, qstate *q, int max, int invis_s, sl_message *out, size_t *got) {
    int scanned = 0;
    /* A deferred entry is due LEASE_DEFER_MIN_MS - LEASE_DEFER_MS after its
     * write time at the earliest. The poller writes entries on time; if it
     * fell that far behind (or the test clock jumped), write the ones that
     * may be due before looking for them. */
    int rc0 = msg_lease_flush(e, q, sl_now_ms() - (LEASE_DEFER_MIN_MS - LEASE_DEFER_MS), 1);
    if (rc0) return rc0;
    while ((int)*got < max) {
        cand c;
        pthread_mutex_lock(&q->mu);
        int have = q->ncands > 0;
        if (have) c = q->cands[--q->ncands];
        pthread_mutex_unlock(&q->mu);
        if (!have) {
            if (scanned) break;
            scanned = 1;
            /* The scan is skipped when no entry this node wrote is due yet
             * and the last scan was less than FRESH_IDLE_MS ago by both
             * clocks: entries of other nodes are found that much later. */
            int64_t now = sl_now_ms();
            pthread_mutex_lock(&q->mu);
            int idle = !q->lscan_dirty && !q->dues_overflow && (q->ndues == 0 || q->dues[0] > now) &&
                       msg_recent(q->lscan_mono_ms, q->lscan_now_ms) &&
                       q->lcur_due >= now - SETTLE_MS - FRESH_IDLE_MS; /* the last walk reached the end */
            if (!idle) {
                q->lscan_dirty = 0;
                q->lscan_mono_ms = sl_mono_ms();
                q->lscan_now_ms = now;
                msg_lease_dues_pop(q, now);
            }
            pthread_mutex_unlock(&q->mu);
            if (idle) break;
            int rc = msg_lease_scan(e, q, now);
            if (rc) {
                pthread_mutex_lock(&q->mu);
                q->lscan_dirty = 1; /* scan again next time */
                pthread_mutex_unlock(&q->mu);
                return rc;
            }
            continue;
        }
        int64_t bucket = c.id / q->opts.bucket_size;
        sl_result r;
        sl_result_init(&r);
        int rc = msg_get_msg(e, q->qkey, bucket, c.id, SL_READ_DEFAULT, &r);
        if (rc == SL_ENOTFOUND) {
            sl_result_free(&r);
            continue;
        }
        if (rc) {
            sl_result_free(&r);
            pthread_mutex_lock(&q->mu);
            if (q->ncands < MAX_CANDIDATES) q->cands[q->ncands++] = c;
            pthread_mutex_unlock(&q->mu);
            return rc;
        }
        sl_row *m = &r.rows[0];
        int64_t st = m->v[M_STATE].i;
        if (m->v[M_VERSION].i == c.version && !msg_purged(q, m)) {
            if (st == MS_WAITING && m->v[M_VISIBLE].i <= sl_now_ms()) {
                rc = lease_one(e, q, m, invis_s, &out[*got]);
                if (rc == 0) (*got)++;
            } else if (st == MS_MOVING) {
                rc = msg_complete_move(e, q, m);
            }
        }
        sl_result_free(&r);
        if (rc && rc != SL_ENOTAPPLIED && rc != SL_ENOTFOUND) return rc;
    }
    return 0;
}

/* Whether bucket b may be sealed: every message it will ever hold was
 * delivered, that is ids have moved past it, none of its rows is READY, and
 * every id is present or has been missing for the gap grace (a put that
 * claimed it crashed, or its write is late; a late write is republished by
 * the repair worker). Returns SEAL_DONE when b carries its marker already,
 * SEAL_NOW when it may be sealed, 0 when not. */

/* The gap clock of bucket b, which ids have moved past and which holds
 * present rows, fewer than its size: returns when it started. It starts
 * when the bucket is first seen so, whether or not it still has READY rows,
 * and again whenever a row arrives; for a block this node claimed, at the
 * claim (its ids were handed out no earlier), and for buckets of a block
 * this node gave up before it used them, long ago: no row can ever appear
 * there (see claim). Every bucket of the reader window is noted as it is
 * read, not only the front one, so that a run of gaps is waited out once,
 * side by side, rather than one grace period per bucket. */
int64_t msg_gap_clock(qstate *q, int64_t b, int64_t present, int64_t now) {
    int slot = (int)(b % READ_SCAN_MAX);
    pthread_mutex_lock(&q->mu);
    if (q->gap_bucket[slot] != b + 1 || q->gap_present[slot] != present) {
        int first = q->gap_bucket[slot] != b + 1;
        q->gap_bucket[slot] = b + 1; /* +1: zero means "no bucket" */
        q->gap_present[slot] = present;
        int claimed = first && q->claim_bucket[slot] == b + 1 && q->claim_ms[slot] < now;
        q->gap_since[slot] = claimed ? q->claim_ms[slot] : now;
    }
    int64_t since = q->claim_bucket[slot] == b + 1 && q->claim_ms[slot] == CLAIM_UNUSED ? CLAIM_UNUSED
                                                                                        : q->gap_since[slot];
    pthread_mutex_unlock(&q->mu);
    return since;
}

int msg_seal_state(sl_engine *e, qstate *q, int64_t b, const sl_result *r, int ready, int64_t now) {
    int64_t S = q->opts.bucket_size, present = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (r->rows[i].v[M_ID].i < 0) return SEAL_DONE; /* the marker */
        present++;
    }
    pthread_mutex_lock(&q->mu);
    int64_t head = q->head;
    pthread_mutex_unlock(&q->mu);
    if (head < (b + 1) * S) return 0;
    if (present < S && now - msg_gap_clock(q, b, present, now) < e->cfg.lease_grace_ms) return 0;
    return ready ? 0 : SEAL_NOW;
}

/* Takes the right to seal this queue's buckets: one thread of this node
 * seals at a time, and the others go on reading past what it seals. */
int msg_seal_take(qstate *q) {
    pthread_mutex_lock(&q->mu);
    int busy = q->sealing;
    q->sealing = 1;
    pthread_mutex_unlock(&q->mu);
    return !busy;
}

/* Waits for the seal markers of one seal_run, sent side by side. */
struct seal_wait {
    sl_latch l;
    int rc[SEAL_BATCH];
};
struct seal_slot {
    struct seal_wait *w;
    int i;
};

static void seal_answer(void *arg, int rc) {
    struct seal_slot *s = arg;
    s->w->rc[s->i] = rc;
    sl_latch_done(&s->w->l);
}

/* Seals the buckets b[0..n) (consecutive, from this node's reader on),
 * moves the reader pointer past those sealed up to the first that cannot
 * be, and gives the right to seal back. A marker another node wrote first
 * counts as sealed. A refill collects these buckets and seals them only
 * after it has handed its rows to the waiting receivers: a seal is one
 * durable write each, and receivers should not wait for them. The markers
 * go to the store side by side (on the embedded store, into one group
 * commit) rather than one after another: a marker past one that failed is
 * still right, since whether a bucket can be sealed does not depend on the
 * buckets before it, and the pointer stops at the failure. */

static int seal_late_rows(sl_engine *e, qstate *q, int64_t b);

int msg_seal_run(sl_engine *e, qstate *q, const int64_t *bs, int n) {
    int64_t R = -1, b[SEAL_BATCH];
    int gaps[SEAL_BATCH];
    sl_write w[SEAL_BATCH];
    struct seal_slot slot[SEAL_BATCH];
    struct seal_wait sw;
    if (n > SEAL_BATCH) n = SEAL_BATCH;
    for (int i = 0; i < n; i++) {
        gaps[i] = (bs[i] & SEAL_GAPS) != 0;
        b[i] = bs[i] & ~SEAL_GAPS;
    }
    sl_latch_init(&sw.l, n);
    int64_t retention = eng_queue_retention(q);
    for (int i = 0; i < n; i++) {
        memset(&w[i], 0, sizeof w[i]);
        msg_key(&w[i], q->qkey, b[i], -1);
        w[i].kind = SL_W_INSERT_IF_NOT_EXISTS;
        w[i].ttl = (int)(retention + 86400);
        w[i].row.v[M_STATE] = sl_vint(MS_SEALED);
        w[i].row.v[M_PUT] = sl_vint(sl_now_ms());
        w[i].row.v[M_NONCE] = sl_vint(eng_nonce());
        slot[i] = (struct seal_slot){&sw, i};
    }
    for (int i = 0; i < n; i++)
        sl_store_apply_cb(e->st, &w[i], 1, seal_answer, &slot[i]);
    sl_latch_wait(&sw.l);
    for (int i = 0; i < n; i++) {
        int rc = eng_cas_settle(e, &w[i], M_NONCE, sw.rc[i], 1);
        if (rc != 0 && rc != SL_ENOTAPPLIED) break;
        if (rc == 0 && gaps[i] && seal_late_rows(e, q, b[i]) != 0) break;
        R = b[i] + 1;
    }
    pthread_mutex_lock(&q->mu);
    q->sealing = 0;
    if (q->reader < R) q->reader = R;
    pthread_mutex_unlock(&q->mu);
    return R < 0 ? 0 : eng_pointer_max(e, q->qkey, "reader", R);
}

/* Seals the buckets from this node's reader on whose rows have all been
 * taken, as a refill would. A refill runs only when a receive finds the
 * pool dry, and on a queue whose every receive finds the rows that puts on
 * this node just fed the pool, that never happens: the buckets behind would
 * never be sealed, so never finalized or deleted, and the queue would grow
 * without bound (the soak found it: batches put and received in turn, 11,000
 * buckets of acked rows). The repair worker calls this every poll; while
 * the reader is at the newest bucket it reads nothing, or on a queue that
 * receives that bucket alone (see fresh_stale). */
int msg_seal_behind(sl_engine *e, qstate *q) {
    int64_t S = q->opts.bucket_size, R, head;
    int rc = 0;
    for (int round = 0; round < 64 && rc == 0 && !e->stopping; round++) {
        pthread_mutex_lock(&q->mu);
        R = q->reader;
        head = q->head;
        /* On a queue that receives, look at the newest bucket too: rows
         * left behind there would wait as long (see fresh_stale). */
        int active = q->nfresh > q->fresh_pos || sl_mono_ms() - q->take_mono_ms < 60000;
        pthread_mutex_unlock(&q->mu);
        if (R < 0) {
            if ((rc = eng_pointer_get(e, q->qkey, "reader", &R)) != 0) return rc;
            pthread_mutex_lock(&q->mu);
            if (q->reader < R) q->reader = R;
            pthread_mutex_unlock(&q->mu);
        }
        int64_t end = active ? head : head / S * S; /* ids below end are read */
        if (R * S >= end || !msg_seal_take(q)) return 0;
        int64_t seal[SEAL_BATCH], now = sl_now_ms(), b = R;
        int n = 0;
        for (; n < SEAL_BATCH && b * S < end; b++) {
            sl_result r;
            sl_result_init(&r);
            if ((rc = msg_scan_bucket(e, q, b, &r)) != 0) {
                sl_result_free(&r);
                break;
            }
            int ready = 0;
            int64_t present = 0, oldest = INT64_MAX, oldest_id = -1;
            for (size_t i = 0; i < r.n; i++) {
                const sl_row *m = &r.rows[i];
                present += m->v[M_ID].i >= 0;
                if (m->v[M_ID].i >= 0 && m->v[M_STATE].i == MS_READY && !msg_purged(q, m)) {
                    ready = 1;
                    if (m->v[M_VISIBLE].i < oldest) {
                        oldest = m->v[M_VISIBLE].i;
                        oldest_id = m->v[M_ID].i;
                    }
                }
            }
            int st = msg_seal_state(e, q, b, &r, ready, now);
            sl_result_free(&r);
            if (st == SEAL_DONE && n == 0) {
                R = b + 1; /* sealed by someone else: the pointer moves on */
            } else if (st == SEAL_NOW) {
                seal[n++] = b | (present < S ? SEAL_GAPS : 0);
            } else {
                if (ready && active && now - oldest >= 2 * e->cfg.lease_grace_ms) {
                    /* Stale only if the pool lacks it: a backlog that the
                     * pool holds in order is handed out as it is. */
                    pthread_mutex_lock(&q->mu);
                    int pooled = 0;
                    for (int i = q->fresh_pos; i < q->nfresh && !pooled; i++)
                        pooled = q->fresh[i]->v[M_ID].i == oldest_id;
                    for (int i = 0; i < q->nleasing && !pooled; i++)
                        pooled = q->leasing[i] == oldest_id;
                    if (!pooled) q->fresh_stale = 1;
                    pthread_mutex_unlock(&q->mu);
                }
                break;
            }
        }
        if (n == 0) {
            pthread_mutex_lock(&q->mu);
            q->sealing = 0;
            int moved = q->reader < R;
            if (moved) q->reader = R;
            pthread_mutex_unlock(&q->mu);
            if (rc == 0 && moved) rc = eng_pointer_max(e, q->qkey, "reader", R);
            if (!moved) break;
            continue;
        }
        int src = msg_seal_run(e, q, seal, n); /* gives the right to seal back */
        if (!rc) rc = src;
    }
    return rc;
}

/* A bucket sealed while ids of it had no row yet: a put of one of them may
 * have landed between the scan that decided to seal and the marker, and
 * checked for the marker (put_after) before it was there. Read the bucket
 * again now that the marker is in: a READY row found is moved on at once,
 * rather than wait for the repair worker's finalize timeout (a false empty
 * of 20 s and more, seen on a loaded machine); a put that lands after this
 * read sees the marker itself. */
static int seal_late_rows(sl_engine *e, qstate *q, int64_t b) {
    sl_result r;
    sl_result_init(&r);
    int rc = msg_scan_bucket(e, q, b, &r);
    for (size_t i = 0; rc == 0 && i < r.n; i++) {
        sl_row *m = &r.rows[i];
        if (m->v[M_ID].i < 0 || m->v[M_STATE].i != MS_READY || msg_purged(q, m)) continue;
        rc = msg_move(e, q, m, q, 0, 0);
        if (rc == SL_ENOTAPPLIED) rc = 0; /* taken meanwhile */
    }
    sl_result_free(&r);
    return rc;
}
