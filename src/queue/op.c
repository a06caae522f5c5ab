/* op.c: puts, acks and receives that do not wait for the store (start and
 * finish), and the blocking calls made of them. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"

/* --- Operations that do not wait for the store ---------------------------- */

/* A put, an ack or a receive whose writes are with the store
 * (sl_msg_put_start and the others). Every request sent (see op_send)
 * answers through op_answer; the last answer calls
 * done and opens the latch l, which op_finish waits on in case it runs
 * first (a server that stops resumes its parked requests; a caller on a
 * fiber parks there). */
enum { OP_PUT = 1, OP_ACK, OP_RECV };
struct sl_op {
    sl_engine *e;
    qstate *q;
    int kind, rc; /* rc: a put's answer */
    void (*done)(void *);
    void *arg;
    sl_latch l; /* the last answer opens it */
    int left;  /* answers still to come, plus one until the start returns */
    size_t n;  /* messages, receipts, or the receive's max */
    size_t nw; /* writes sent: acks, or leases */
    /* Sized for n, in the same allocation: */
    sl_write *w;         /* put: 2n (rows, then lease entries); ack, receive: n */
    int *krc;            /* ack, receive: each write's outcome */
    eng_casg *g;         /* ack, receive: groups of writes, sent together */
    size_t *gstart, *gn; /* ack, receive: where each group's writes are */
    size_t ngroups, nsent;
    put_pending *p;                /* put */
    char (*ids)[SL_MSGID_LEN + 1]; /* put */
    sl_put *puts;                  /* put: a copy of the caller's (whose bytes stay borrowed) */
    size_t nids;                   /* put: ids it has (msg_ids_try) */
    sl_op *idnext;                 /* put: the next one waiting for ids on its queue */
    size_t nentries;               /* put: lease entries of delayed messages, in w[n..) */
    int built, entries_again;      /* put: its rows were sent; its entries were sent twice */
    int *rcs;                      /* ack: per receipt */
    size_t *idx;                   /* ack: the receipt of each write */
    sl_row **rows, **todo;         /* receive: rows popped, and those leased */
    /* put */
    int any_visible;
    /* receive */
    int invis_s;
    size_t got, k;
    int64_t visible;
    sl_message *msgs;
};

static sl_op *op_new(sl_engine *e, qstate *q, int kind, size_t n, void (*done)(void *), void *arg) {
    size_t nw = kind == OP_PUT ? 2 * n : n;
    size_t size = sizeof(sl_op) + nw * sizeof(sl_write) + n * sizeof(int);
    if (kind == OP_PUT) size += n * (sizeof(put_pending) + sizeof(sl_put) + SL_MSGID_LEN + 1);
    if (kind == OP_ACK) size += n * (sizeof(int) + sizeof(size_t));
    if (kind == OP_RECV) size += n * 2 * sizeof(sl_row *);
    if (kind != OP_PUT) size += n * (sizeof(eng_casg) + 2 * sizeof(size_t));
    sl_op *op = sl_calloc(1, size);
    if (!op) return NULL;
    /* Largest alignment first: writes, groups and pointers, then ints and
     * ids. */
    char *at = (char *)(op + 1);
    op->w = (sl_write *)at, at += nw * sizeof(sl_write);
    if (kind != OP_PUT) op->g = (eng_casg *)at, at += n * sizeof(eng_casg);
    if (kind == OP_PUT) op->p = (put_pending *)at, at += n * sizeof(put_pending);
    if (kind == OP_PUT) op->puts = (sl_put *)at, at += n * sizeof(sl_put);
    if (kind == OP_ACK) op->idx = (size_t *)at, at += n * sizeof(size_t);
    if (kind == OP_RECV) {
        op->rows = (sl_row **)at, at += n * sizeof(sl_row *);
        op->todo = (sl_row **)at, at += n * sizeof(sl_row *);
    }
    if (kind != OP_PUT) {
        op->gstart = (size_t *)at, at += n * sizeof(size_t);
        op->gn = (size_t *)at, at += n * sizeof(size_t);
    }
    op->krc = (int *)at, at += n * sizeof(int);
    if (kind == OP_ACK) op->rcs = (int *)at, at += n * sizeof(int);
    if (kind == OP_PUT) op->ids = (char(*)[SL_MSGID_LEN + 1]) at;
    op->e = e;
    op->q = q;
    op->kind = kind;
    op->n = n;
    op->done = done;
    op->arg = arg;
    op->left = 1;
    sl_latch_init(&op->l, 1);
    eng_queue_hold(e, q);
    if (kind != OP_RECV) lg_op_begin(q);
    return op;
}

static void op_free(sl_op *op) {
    if (op->kind != OP_RECV) lg_op_end(op->q);
    eng_queue_release(op->e, op->q);
    free(op);
}

/* One answer fewer to wait for; the last one ends the operation. Nothing
 * touches op once its latch is open. */
static void op_step(sl_op *op) {
    if (__atomic_sub_fetch(&op->left, 1, __ATOMIC_ACQ_REL) != 0) return;
    op->done(op->arg);
    sl_latch_done(&op->l);
}

static void put_answer(void *arg, int rc) {
    sl_op *op = arg;
    op->rc = rc;
    op_step(op);
}

/* A put that ends before its rows were sent (its ids, or its entries,
 * failed). */
static void put_fail(sl_op *op, int rc) {
    op->rc = rc;
    op_step(op);
}

static void put_rows_send(sl_op *op) {
    op->built = 1;
    sl_store_apply_cb(op->e->st, op->w, op->n, put_answer, op);
}

/* Delayed messages' lease entries go to the store before their rows
 * (msg_put_rows); they are idempotent upserts, sent again once when their
 * outcome is unknown. */
static void put_entries_answer(void *arg, int rc) {
    sl_op *op = arg;
    if (rc == SL_EUNKNOWN && !op->entries_again) {
        op->entries_again = 1;
        sl_store_apply_cb(op->e->st, op->w + op->n, op->nentries, put_entries_answer, op);
        return;
    }
    if (rc)
        put_fail(op, rc);
    else
        put_rows_send(op);
}

/* A put that has its ids: builds its rows and sends them, its entries
 * first. */
static void put_send(sl_op *op) {
    int rc = msg_put_rows(op->e, op->q, op->puts, op->n, op->ids, op->p, 1, op->w, op->w + op->n,
                          &op->nentries, &op->any_visible);
    if (rc)
        put_fail(op, rc);
    else if (op->nentries > 0)
        sl_store_apply_cb(op->e->st, op->w + op->n, op->nentries, put_entries_answer, op);
    else
        put_rows_send(op);
}

sl_op *op_idwait_link(sl_op *op, sl_op *next) {
    sl_op *old = op->idnext;
    op->idnext = next;
    return old;
}

put_pending *op_idwait_need(sl_op *op, size_t *n, size_t **have) {
    *n = op->n;
    *have = &op->nids;
    return op->p;
}

void msg_ids_ready(sl_op *op, int rc) {
    if (rc)
        put_fail(op, rc);
    else
        put_send(op);
}

static void group_answer(void *arg) {
    op_step(arg);
}

/* Moves a receive's and an ack's arrays that run parallel to its writes
 * along with them (eng_cas_arrange). */
static void op_swap(void *ctx, size_t a, size_t b) {
    sl_op *op = ctx;
    if (op->idx) {
        size_t t = op->idx[a];
        op->idx[a] = op->idx[b];
        op->idx[b] = t;
    }
    if (op->todo) {
        sl_row *t = op->todo[a];
        op->todo[a] = op->todo[b];
        op->todo[b] = t;
    }
}

/* Sends an ack's or a receive's compare-and-sets as one group per partition (bucket) to the combiner
 * (eng_cas_submit), each row once: a batch checks all its conditions
 * before it writes, and would apply both writes of one row. A write of a
 * row that an earlier write has too (a receipt given twice) is not sent:
 * op_settle makes it after the others, so the first one wins, as with
 * eng_cas_many. Then lets the start call's own step go. */
static void op_send(sl_op *op, size_t n) {
    op->ngroups = eng_cas_arrange(op->w, n, op_swap, op, op->gstart, op->gn, &op->nsent);
    op->left = (int)op->nsent + 1;
    for (size_t g = 0; g < op->nsent; g++) {
        op->g[g] = (eng_casg){.w = &op->w[op->gstart[g]],
                              .n = op->gn[g],
                              .done = group_answer,
                              .arg = op,
                              /* leases may be answered before they are durable */
                              .early = op->kind == OP_RECV};
        eng_cas_submit(op->e, op->q, &op->g[g]);
    }
    op_step(op);
}

/* Each compare-and-set's outcome from its batch's answer (eng_cas_settle):
 * a batch whose outcome is unknown is looked up by nonce, one of several
 * writes that was not applied is retried write by write (blocking; a stale
 * receipt or another node's lease, so rare), and a repeated row's write is
 * made now, after the others. */
static void op_settle(sl_op *op) {
    for (size_t g = 0; g < op->ngroups; g++)
        for (size_t x = op->gstart[g]; x < op->gstart[g] + op->gn[g]; x++) {
            op->krc[x] = g >= op->nsent ? eng_cas(op->e, &op->w[x], M_NONCE)
                                        : eng_cas_settle(op->e, &op->w[x], M_NONCE, op->g[g].rc, op->g[g].bn);
        }
}

/* Whether the store takes writes without waiting for them (both stores
 * do): then a put's, an ack's or a receive's writes are with the store
 * while the operation holds no thread, and the answers end it. */
static int op_defers(sl_engine *e) {
    return sl_store_defers(e->st);
}

int sl_engine_blocks(sl_engine *e) {
    return !op_defers(e) || e->st->type->shared;
}

int sl_msg_put_start(sl_engine *e, const char *account, const char *queue, const sl_put *msgs, size_t n,
                     void (*done)(void *), void *arg, sl_op **out) {
    *out = NULL;
    qstate *q;
    int rc = msg_put_check(e, account, queue, msgs, n, &q);
    if (rc) return rc;
    sl_op *op = op_new(e, q, OP_PUT, n, done, arg);
    if (!op) return SL_ENOMEM;
    /* All n rows go to the store in one request (one commit; on Cassandra
     * one batch), so a batch is all or nothing. */
    if (!op_defers(e)) {
        rc =
            msg_put_rows(e, q, msgs, n, op->ids, op->p, 0, op->w, op->w + n, &op->nentries, &op->any_visible);
        if (rc == 0 && op->nentries > 0) rc = msg_put_entries(e, op->w + n, op->nentries);
        if (rc) {
            op_free(op);
            return rc;
        }
        *out = op;
        op->built = 1;
        op->rc = eng_write(e, op->w, n);
        op_step(op);
        return 0;
    }
    /* Ids from the node's block if it has them; else the put waits for
     * the claimer without a thread (msg_ids_wait), which sends it on. */
    memcpy(op->puts, msgs, n * sizeof *msgs);
    *out = op;
    op->left = 2; /* this call's step, and the store's answer */
    if (msg_ids_try(e, q, op->p, n, &op->nids))
        put_send(op);
    else
        msg_ids_wait(e, q, op);
    op_step(op);
    return 0;
}

int sl_msg_ack_start(sl_engine *e, const char *account, const char *queue, const char *const *receipts,
                     size_t n, void (*done)(void *), void *arg, sl_op **out) {
    *out = NULL;
    if (n < 1 || n > SL_BATCH_MAX) return SL_EINVAL;
    qstate *q;
    int rc = msg_open_queue(e, account, queue, &q);
    if (rc) return rc;
    sl_op *op = op_new(e, q, OP_ACK, n, done, arg);
    if (!op) return SL_ENOMEM;
    msg_ack_writes(q, receipts, n, op->rcs, op->w, op->idx, &op->nw);
    *out = op;
    if (op_defers(e)) {
        op_send(op, op->nw);
    } else {
        eng_cas_many(e, q, op->w, op->nw, M_NONCE, op->krc);
        op_step(op);
    }
    return 0;
}

int sl_msg_receive_start(sl_engine *e, const char *account, const char *queue, int max, int invis_s,
                         void (*done)(void *), void *arg, sl_op **out) {
    *out = NULL;
    if (max < 1 || max > SL_RECEIVE_MAX || invis_s < 0 || invis_s > SL_INVIS_MAX) return SL_EINVAL;
    qstate *q;
    int rc = msg_open_queue(e, account, queue, &q);
    if (rc) return rc;
    sl_op *op = op_new(e, q, OP_RECV, (size_t)max, done, arg);
    if (!op) return SL_ENOMEM;
    if (!(op->msgs = sl_calloc((size_t)max, sizeof *op->msgs))) {
        op_free(op);
        return SL_ENOMEM;
    }
    op->invis_s = invis_s;
    /* Redeliveries first: they have waited longest. With strictFifo the
     * oldest message is wanted first, which is the same order. They are
     * rare, and are leased here, blocking; fresh rows are leased in the
     * background. */
    rc = msg_take_due(e, q, max, invis_s, op->msgs, &op->got);
    int defer = op_defers(e);
    if (rc == 0 && (int)op->got < max && !defer) rc = msg_take_fresh(e, q, max, invis_s, op->msgs, &op->got);
    if (rc == 0 && (int)op->got < max && defer) {
        /* Rows of one bucket at a time, as take_fresh takes them; only the
         * first fresh_take may refill (and so fail). op_send makes one
         * batch per bucket. */
        int refills = 0, n = 0;
        for (size_t k; rc == 0 && op->got + op->k < (size_t)max; op->k += k) {
            rc = msg_fresh_take(e, q, (size_t)max - op->got - op->k, op->got + op->k > 0, &refills,
                                op->rows + op->k, &k);
            if (rc || k == 0) break;
        }
        if (rc == 0 && op->k > 0 &&
            (n = msg_lease_writes(e, q, op->rows, op->k, invis_s, op->todo, op->w, &op->visible)) < 0)
            rc = n;
        if (n <= 0 && op->k > 0) {
            msg_leasing_end(q, op->rows, op->k);
            op->k = 0;
        }
        op->nw = n > 0 ? (size_t)n : 0;
    }
    if (rc && op->got == 0) {
        free(op->msgs);
        op_free(op);
        return rc;
    }
    /* A store error after some messages were leased: the client gets them. */
    *out = op;
    if (op->nw > 0)
        op_send(op, op->nw);
    else
        op_step(op);
    return 0;
}

int sl_op_ready(const sl_op *op) {
    return __atomic_load_n(&op->left, __ATOMIC_ACQUIRE) == 0;
}

/* Waits for the store's answers, does what follows them, fills whichever
 * of the outputs the operation has and the caller wants, and frees op. */
static int op_finish(sl_op *op, char (*ids)[SL_MSGID_LEN + 1], int *rcs, sl_message **msgs, size_t *nmsgs) {
    sl_latch_wait(&op->l);
    sl_engine *e = op->e;
    qstate *q = op->q;
    int rc = 0;
    switch (op->kind) {
    case OP_PUT:
        /* Nothing was sent when the ids or the entries failed. */
        rc = op->built ? msg_put_after(e, q, op->w, op->p, op->n, op->any_visible, op->rc) : op->rc;
        if (rc == SL_EUNKNOWN) rc = SL_EUNAVAILABLE;
        if (rc == 0) sl_count(&q->m.puts, op->n);
        if (rc == 0 && ids) memcpy(ids, op->ids, op->n * sizeof *ids);
        break;
    case OP_ACK:
        if (op->ngroups) op_settle(op);
        msg_ack_after(q, op->w, op->nw, op->idx, op->krc, op->rcs);
        size_t acked = 0;
        for (size_t i = 0; i < op->n; i++)
            acked += op->rcs[i] == 0;
        sl_count(&q->m.acks, acked);
        if (rcs) memcpy(rcs, op->rcs, op->n * sizeof *rcs);
        break;
    case OP_RECV:
        if (op->nw > 0) {
            op_settle(op);
            rc = msg_lease_after(e, q, op->todo, op->nw, op->krc, op->visible, op->msgs, &op->got);
            msg_leasing_end(q, op->rows, op->k);
            /* Every row was taken by another node first: look further, as
             * take_fresh does. */
            if (!rc && op->got == 0) rc = msg_take_fresh(e, q, (int)op->n, op->invis_s, op->msgs, &op->got);
        }
        if (rc && op->got == 0) {
            free(op->msgs);
            op->msgs = NULL;
        } else {
            rc = 0;
            size_t again = 0;
            for (size_t i = 0; i < op->got; i++)
                again += op->msgs[i].delivery_count > 1;
            sl_count(&q->m.deliveries, op->got);
            sl_count(&q->m.redeliveries, again);
        }
        if (msgs) {
            *msgs = op->msgs;
            *nmsgs = op->got;
        } else {
            sl_messages_free(op->msgs, op->got);
        }
        break;
    }
    op_free(op);
    return rc;
}

int sl_msg_put_finish(sl_op *op, char (*ids)[SL_MSGID_LEN + 1]) {
    return op_finish(op, ids, NULL, NULL, NULL);
}

void sl_msg_ack_finish(sl_op *op, int *rcs) {
    op_finish(op, NULL, rcs, NULL, NULL);
}

int sl_msg_receive_finish(sl_op *op, sl_message **out, size_t *n) {
    *out = NULL;
    *n = 0;
    return op_finish(op, NULL, NULL, out, n);
}

void sl_op_discard(sl_op *op) {
    op_finish(op, NULL, NULL, NULL, NULL);
}

/* The blocking calls: the same operations, finished at once (op_finish
 * waits for the store). */
static void no_wake(void *arg) {
    (void)arg;
}

int sl_msg_put(sl_engine *e, const char *account, const char *queue, const sl_put *msgs, size_t n,
               char (*ids)[SL_MSGID_LEN + 1]) {
    sl_op *op;
    int rc = sl_msg_put_start(e, account, queue, msgs, n, no_wake, NULL, &op);
    return rc ? rc : sl_msg_put_finish(op, ids);
}

int sl_msg_receive(sl_engine *e, const char *account, const char *queue, int max, int invis_s,
                   sl_message **out, size_t *n) {
    *out = NULL;
    *n = 0;
    sl_op *op;
    int rc = sl_msg_receive_start(e, account, queue, max, invis_s, no_wake, NULL, &op);
    return rc ? rc : sl_msg_receive_finish(op, out, n);
}

int sl_msg_ack_many(sl_engine *e, const char *account, const char *queue, const char *const *receipts,
                    size_t n, int *rcs) {
    sl_op *op;
    int rc = sl_msg_ack_start(e, account, queue, receipts, n, no_wake, NULL, &op);
    if (rc == 0) sl_msg_ack_finish(op, rcs);
    return rc;
}

int sl_msg_ack(sl_engine *e, const char *account, const char *queue, const char *receipt) {
    int one;
    int rc = sl_msg_ack_many(e, account, queue, &receipt, 1, &one);
    return rc ? rc : one;
}
