/* fifo.c: FIFO queues (SQS's .fifo): order within a message group, a group
 * blocked while one of its messages is in flight, deduplication for five
 * minutes, increasing sequence numbers; on both stores, on the table
 * contract like the rest of the engine.
 *
 * The design: a FIFO queue's messages wait in a log per group, and only the
 * head of each group (its oldest message not yet done) is in the engine's
 * queue. Everything the engine guarantees (leases, redelivery of the same
 * message after its lease ran out, dead-lettering, retention, purge) then
 * applies to the head as to any message, and no later message of a group
 * can be delivered while its head is in flight, on any node, because it is
 * not in the queue yet. When the head is done (acked, dead-lettered,
 * expired or purged), the group's next message is released into the queue.
 *
 *   fifo_groups ((qkey, grp))          next head last hb hid nonce
 *       next: the next sequence number; head: the released one (0: none);
 *       last: the highest one done; (hb, hid): the head's bucket and id in
 *       the engine's messages (hid -1 while it is being released, hb then
 *       the time the release began). Written by compare-and-sets on nonce.
 *   fifo_log    ((qkey, grp, page)) seq  mid body attrs dedup put_ms dup
 *       the group's messages, FIFO_PAGE sequence numbers a partition;
 *       a sequence number is claimed by inserting its row (if not exists),
 *       so a row's existence means the number is taken. TTL: retention.
 *       dup: LOG_PENDING while its send has not settled deduplication,
 *       LOG_READY, or LOG_DUP (a second send of a deduplication id: never
 *       delivered).
 *   fifo_dedup  ((qkey, dedup))        grp seq mid      TTL five minutes
 *   fifo_busy   ((qkey, shard)) grp    since            TTL FIFO_BUSY_S
 *       groups with messages lately, FIFO_SHARDS partitions, rewritten by
 *       every put and while the sweeper finds the group busy.
 *
 * A put marks its group busy, claims the next number by inserting the
 * message's log row (pending), then its deduplication row: when that is
 * new, the log row becomes ready and the group's head is released if it
 * had none; when the id was sent already, the row becomes a duplicate and
 * the send is answered with the first one's id. A release stops at a
 * pending row (the send settles it and releases) until it is
 * FIFO_PENDING_STALE_MS old: a send cut by a crash is then delivered if
 * its deduplication row points to it (its client may have been answered,
 * or will be when it retries), skipped otherwise. The release
 * (fifo_advance) moves the group row's head by a compare-and-set before it
 * puts the message into the queue, so two releases never put two messages.
 * An SQS delete of a head advances its group at once (sl_fifo_acked); the
 * queue's repair owner sweeps the busy groups every repair poll and
 * advances any whose head is done otherwise (dead-lettered, expired,
 * purged, or acked by a node that died before it advanced the group).
 *
 * Partitions stay bounded: a group's log in pages, dedup rows one per id,
 * groups one per partition, and the busy index holds only the groups of
 * the last FIFO_BUSY_S seconds, spread over FIFO_SHARDS partitions. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"

#define FIFO_PAGE 256
#define FIFO_SHARDS 16
#define FIFO_BUSY_S 600
#define FIFO_DEDUP_S 300
#define FIFO_RELEASE_STALE_MS 30000
#define FIFO_PENDING_STALE_MS 30000

enum { LOG_READY = 0, LOG_DUP = 1, LOG_PENDING = 2 };

const sl_table sl_t_fifo_groups = {"fifo_groups",
                                   2,
                                   0,
                                   8,
                                   {{"qkey", SL_TEXT},
                                    {"grp", SL_TEXT},
                                    {"next", SL_INT},
                                    {"head", SL_INT},
                                    {"last", SL_INT},
                                    {"hb", SL_INT},
                                    {"hid", SL_INT},
                                    {"nonce", SL_INT}},
                                   0};
const sl_table sl_t_fifo_log = {"fifo_log",
                                3,
                                1,
                                11,
                                {{"qkey", SL_TEXT},
                                 {"grp", SL_TEXT},
                                 {"page", SL_INT},
                                 {"seq", SL_INT},
                                 {"mid", SL_TEXT},
                                 {"body", SL_BLOB},
                                 {"attrs", SL_TEXT},
                                 {"dedup", SL_TEXT},
                                 {"put_ms", SL_INT},
                                 {"dup", SL_INT},
                                 {"nonce", SL_INT}},
                                0};
const sl_table sl_t_fifo_dedup = {"fifo_dedup",
                                  2,
                                  0,
                                  6,
                                  {{"qkey", SL_TEXT},
                                   {"dedup", SL_TEXT},
                                   {"grp", SL_TEXT},
                                   {"seq", SL_INT},
                                   {"mid", SL_TEXT},
                                   {"nonce", SL_INT}},
                                  0};
const sl_table sl_t_fifo_busy = {
    "fifo_busy", 2, 1, 4, {{"qkey", SL_TEXT}, {"shard", SL_INT}, {"grp", SL_TEXT}, {"since", SL_INT}}, 0};

enum { FG_QKEY, FG_GRP, FG_NEXT, FG_HEAD, FG_LAST, FG_HB, FG_HID, FG_NONCE };
enum { FL_QKEY, FL_GRP, FL_PAGE, FL_SEQ, FL_MID, FL_BODY, FL_ATTRS, FL_DEDUP, FL_PUT, FL_DUP, FL_NONCE };
enum { FD_QKEY, FD_DEDUP, FD_GRP, FD_SEQ, FD_MID, FD_NONCE };
enum { FB_QKEY, FB_SHARD, FB_GRP, FB_SINCE };

typedef struct {
    int exists;
    int64_t next, head, last, hb, hid, nonce;
} group_row;

static int group_read(sl_engine *e, const qstate *q, const char *g, group_row *out) {
    memset(out, 0, sizeof *out);
    sl_val key[2] = {sl_vtext(q->qkey), sl_vtext(g)};
    sl_result r;
    sl_result_init(&r);
    int rc = sl_store_get(e->st, &sl_t_fifo_groups, key, SL_READ_SERIAL, &r);
    if (rc == 0) {
        const sl_row *row = &r.rows[0];
        out->exists = 1;
        out->next = row->v[FG_NEXT].i;
        out->head = row->v[FG_HEAD].i;
        out->last = row->v[FG_LAST].i;
        out->hb = row->v[FG_HB].i;
        out->hid = row->v[FG_HID].i;
        out->nonce = row->v[FG_NONCE].i;
    }
    sl_result_free(&r);
    return rc == SL_ENOTFOUND ? 0 : rc;
}

/* A compare-and-set of the group row from what was read (old) to new; the
 * row lives as long as the queue's messages may. */
static int group_cas(sl_engine *e, qstate *q, const char *g, const group_row *old, const group_row *nw) {
    sl_write w = {0};
    w.t = &sl_t_fifo_groups;
    w.ttl = (int)(eng_queue_retention(q) + 86400);
    w.row.v[FG_QKEY] = sl_vtext(q->qkey);
    w.row.v[FG_GRP] = sl_vtext(g);
    w.row.v[FG_NEXT] = sl_vint(nw->next);
    w.row.v[FG_HEAD] = sl_vint(nw->head);
    w.row.v[FG_LAST] = sl_vint(nw->last);
    w.row.v[FG_HB] = sl_vint(nw->hb);
    w.row.v[FG_HID] = sl_vint(nw->hid);
    w.row.v[FG_NONCE] = sl_vint(eng_nonce());
    if (!old->exists) {
        w.kind = SL_W_INSERT_IF_NOT_EXISTS;
    } else {
        w.kind = SL_W_UPDATE_IF;
        w.cond[0] = (sl_cond){FG_NONCE, sl_vint(old->nonce)};
        w.ncond = 1;
    }
    return eng_cas(e, &w, FG_NONCE);
}

static int64_t shard_of(const char *g) {
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)g; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (int64_t)(h % FIFO_SHARDS);
}

/* A plain write that may be sent again (an upsert of the same values):
 * an unknown outcome is retried. */
static int write_again(sl_engine *e, const sl_write *w) {
    int rc = eng_write(e, w, 1);
    for (int i = 0; i < 3 && rc == SL_EUNKNOWN; i++)
        rc = eng_write(e, w, 1);
    return rc == SL_EUNKNOWN ? SL_EUNAVAILABLE : rc;
}

/* Marks the group busy for the next FIFO_BUSY_S seconds. */
static int busy_mark(sl_engine *e, qstate *q, const char *g) {
    sl_write w = {0};
    w.t = &sl_t_fifo_busy;
    w.kind = SL_W_UPSERT;
    w.ttl = FIFO_BUSY_S;
    w.row.v[FB_QKEY] = sl_vtext(q->qkey);
    w.row.v[FB_SHARD] = sl_vint(shard_of(g));
    w.row.v[FB_GRP] = sl_vtext(g);
    w.row.v[FB_SINCE] = sl_vint(sl_now_ms());
    return write_again(e, &w);
}

static void log_key(sl_write *w, qstate *q, const char *g, int64_t seq) {
    w->t = &sl_t_fifo_log;
    w->ttl = (int)eng_queue_retention(q);
    w->row.v[FL_QKEY] = sl_vtext(q->qkey);
    w->row.v[FL_GRP] = sl_vtext(g);
    w->row.v[FL_PAGE] = sl_vint(seq / FIFO_PAGE);
    w->row.v[FL_SEQ] = sl_vint(seq);
}

static int log_read(sl_engine *e, const qstate *q, const char *g, int64_t seq, sl_result *r) {
    sl_val key[4] = {sl_vtext(q->qkey), sl_vtext(g), sl_vint(seq / FIFO_PAGE), sl_vint(seq)};
    return sl_store_get(e->st, &sl_t_fifo_log, key, SL_READ_DEFAULT, r);
}

/* --- Whether the head is done ------------------------------------------- */

/* 1 when the message at (b, id) of q is still to be delivered or acked
 * (ready, in flight, or on its way to a new id of q), 0 when it is done:
 * acked, dead-lettered, moved to another queue, expired or purged. */
static int head_live(sl_engine *e, qstate *q, int64_t b, int64_t id) {
    for (int hop = 0; hop < 8; hop++) {
        sl_result r;
        sl_result_init(&r);
        int rc = msg_get_msg(e, q->qkey, b, id, SL_READ_SERIAL, &r);
        if (rc) {
            sl_result_free(&r);
            return rc == SL_ENOTFOUND ? 0 : rc;
        }
        const sl_row *m = &r.rows[0];
        int64_t st = m->v[M_STATE].i;
        int live = (st == MS_READY || st == MS_WAITING || st == MS_MOVING) && !msg_purged(q, m);
        char dest[QKEY_MAX + 100] = "", dq[QKEY_MAX];
        long long did = 0, db = 0;
        if (st == MS_MOVED) sl_val_str(&m->v[M_DEST], dest, sizeof dest);
        sl_result_free(&r);
        if (st != MS_MOVED) return live;
        /* Republished within q (its bucket was sealed under it): follow. */
        if (sscanf(dest, "%[^|]|%lld|%lld|", dq, &did, &db) != 3 || strcmp(dq, q->qkey) != 0) return 0;
        b = db;
        id = did;
    }
    return 1; /* a chain this long: keep waiting rather than guess */
}

/* --- Releasing the next message -------------------------------------------- */

/* Puts log row lr (sequence seq of group g) into the queue as a message of
 * its own id, its group and number in the attributes under "$fifo". */
static int release_put(sl_engine *e, qstate *q, const char *g, int64_t seq, const sl_row *lr, int64_t *b,
                       int64_t *id) {
    json_t *attrs = NULL;
    const sl_val *a = &lr->v[FL_ATTRS];
    if (a->set && !a->null) attrs = json_loadb(a->p, a->n, 0, NULL);
    if (!json_is_object(attrs)) {
        json_decref(attrs);
        attrs = json_object();
    }
    char dedup[256] = "", mid[SL_MSGID_LEN + 1] = "";
    sl_val_str(&lr->v[FL_DEDUP], dedup, sizeof dedup);
    sl_val_str(&lr->v[FL_MID], mid, sizeof mid);
    int64_t put_ms = lr->v[FL_PUT].i;
    json_t *f =
        json_pack("{s:s,s:I,s:s,s:I}", "g", g, "s", (json_int_t)seq, "d", dedup, "t", (json_int_t)put_ms);
    char *text = f && json_object_set_new(attrs, "$fifo", f) == 0 ? json_dumps(attrs, JSON_COMPACT) : NULL;
    json_decref(attrs);
    if (!text) return SL_ENOMEM;
    /* The queue's delay counts from the send. */
    pthread_mutex_lock(&q->mu);
    int64_t delay_ms = (int64_t)q->opts.delay_s * 1000;
    pthread_mutex_unlock(&q->mu);
    int64_t left = put_ms + delay_ms - sl_now_ms();
    sl_put p = {.body = lr->v[FL_BODY].p,
                .len = lr->v[FL_BODY].n,
                .delay_s = left > 0 ? (int)((left + 999) / 1000) : 0,
                .attrs_json = text};
    char ids[1][SL_MSGID_LEN + 1];
    put_pending pp;
    sl_write w[1], entries[1];
    int any_visible;
    size_t nentries;
    memset(w, 0, sizeof w);
    memset(entries, 0, sizeof entries);
    lg_op_begin(q);
    int rc = msg_put_rows(e, q, &p, 1, ids, &pp, 0, w, entries, &nentries, &any_visible);
    if (rc == 0 && nentries > 0) rc = msg_put_entries(e, entries, nentries);
    if (rc == 0) {
        /* The message keeps the id SendMessage gave it; its send time
         * travels in "$fifo" (the row's put time is the release's, which
         * the engine's reader and purge go by). */
        w[0].row.v[M_MID] = sl_vtext(mid);
        rc = msg_put_after(e, q, w, &pp, 1, any_visible, eng_write(e, w, 1));
    }
    lg_op_end(q);
    free(text);
    *b = pp.id / q->opts.bucket_size;
    *id = pp.id;
    return rc;
}

static void dedup_key(qstate *q, const char *group, const char *dedup, char *out, size_t cap) {
    pthread_mutex_lock(&q->mu);
    int by_group = q->opts.fifo_dedup_group;
    pthread_mutex_unlock(&q->mu);
    if (by_group)
        snprintf(out, cap, "%zu:%s%s", strlen(group), group, dedup);
    else
        snprintf(out, cap, "%s", dedup);
}

/* Sets the dup column of g's log row seq. */
static int log_mark(sl_engine *e, qstate *q, const char *g, int64_t seq, int dup) {
    sl_write x = {0};
    log_key(&x, q, g, seq);
    x.kind = SL_W_UPSERT;
    x.row.v[FL_DUP] = sl_vint(dup);
    return write_again(e, &x);
}

/* An earlier message of the same deduplication id, within five minutes:
 * 1 with its id and number in out, 0 when there is none. */
static int dedup_find(sl_engine *e, const qstate *q, const char *key, sl_fifo_sent *out, int cons,
                      char group[SL_FIFO_GROUP_MAX + 1]) {
    sl_val k[2] = {sl_vtext(q->qkey), sl_vtext(key)};
    sl_result r;
    sl_result_init(&r);
    int rc = sl_store_get(e->st, &sl_t_fifo_dedup, k, cons, &r);
    if (rc == 0) {
        sl_val_str(&r.rows[0].v[FD_MID], out->id, sizeof out->id);
        sl_val_str(&r.rows[0].v[FD_GRP], group, SL_FIFO_GROUP_MAX + 1);
        out->seq = r.rows[0].v[FD_SEQ].i;
        out->duplicate = 1;
        rc = 1;
    }
    sl_result_free(&r);
    return rc == SL_ENOTFOUND ? 0 : rc;
}

/* The first message of g to release from seq from on (below next): its log
 * row in r, and its number in *seq; 0 with *seq = next when none is left
 * (numbers whose rows expired, were purged or are duplicates are skipped),
 * or -1 when the first is a send still settling. */
static int next_pending(sl_engine *e, qstate *q, const char *g, int64_t from, int64_t next, int64_t *seq,
                        sl_result *r) {
    for (int64_t s = from; s < next; s++) {
        sl_result_free(r);
        sl_result_init(r);
        int rc = log_read(e, q, g, s, r);
        if (rc == SL_ENOTFOUND) continue;
        if (rc) return rc;
        const sl_row *lr = &r->rows[0];
        pthread_mutex_lock(&q->mu);
        int purged = lr->v[FL_PUT].i <= q->purge_ms;
        pthread_mutex_unlock(&q->mu);
        if (lr->v[FL_DUP].i == LOG_DUP || purged) continue;
        if (lr->v[FL_DUP].i == LOG_PENDING) {
            if (sl_now_ms() - lr->v[FL_PUT].i < FIFO_PENDING_STALE_MS) {
                *seq = -1;
                return 0;
            }
            /* Its send was cut: delivered if its deduplication row is its. */
            char dedup[SL_FIFO_GROUP_MAX + 1] = "", key[2 * SL_FIFO_GROUP_MAX + 24],
                                           dg[SL_FIFO_GROUP_MAX + 1] = "";
            sl_fifo_sent d;
            sl_val_str(&lr->v[FL_DEDUP], dedup, sizeof dedup);
            dedup_key(q, g, dedup, key, sizeof key);
            int found = dedup_find(e, q, key, &d, SL_READ_SERIAL, dg);
            if (found < 0) return found;
            if (!found || d.seq != s || strcmp(dg, g) != 0) continue;
        }
        *seq = s;
        return 0;
    }
    *seq = next;
    return 0;
}

/* Releases g's next message when its head is done (or it has none).
 * marked_ms: when g's busy row was last written, as the sweeper read it (0:
 * unknown); a live head rewrites the row only once it is half way to its
 * TTL, not on every sweep. */
static int fifo_advance(sl_engine *e, qstate *q, const char *g, int64_t marked_ms) {
    int rc = 0;
    for (int attempt = 0; attempt < 16; attempt++) {
        group_row gr, nw;
        if ((rc = group_read(e, q, g, &gr)) != 0 || !gr.exists) return rc;
        int64_t from, s;
        sl_result r;
        sl_result_init(&r);
        if (gr.head != 0 && gr.hid < 0) {
            /* A release under way, or cut by a crash: after a while, again. */
            if (sl_now_ms() - gr.hb < FIFO_RELEASE_STALE_MS) return 0;
            from = gr.head;
        } else if (gr.head != 0) {
            int live = head_live(e, q, gr.hb, gr.hid);
            if (live != 0) {
                if (live == 1 && sl_now_ms() - marked_ms > FIFO_BUSY_S * 500LL)
                    busy_mark(e, q, g); /* still busy: keep it swept */
                return live < 0 ? live : 0;
            }
            from = gr.head + 1;
        } else {
            from = gr.last + 1;
        }
        if ((rc = next_pending(e, q, g, from, gr.next, &s, &r)) != 0 || s < 0) {
            sl_result_free(&r);
            return rc; /* or a send still settling: it releases */
        }
        nw = gr;
        if (s >= gr.next) {
            /* Nothing left: the group is idle. */
            sl_result_free(&r);
            if (gr.head == 0 && gr.last == gr.next - 1) return 0;
            nw.head = 0;
            nw.last = gr.next - 1;
            nw.hb = nw.hid = 0;
            rc = group_cas(e, q, g, &gr, &nw);
            if (rc == SL_ENOTAPPLIED) continue;
            return rc;
        }
        nw.head = s;
        nw.last = s - 1;
        nw.hb = sl_now_ms();
        nw.hid = -1;
        if ((rc = group_cas(e, q, g, &gr, &nw)) != 0) {
            sl_result_free(&r);
            if (rc == SL_ENOTAPPLIED) continue;
            return rc;
        }
        /* The head is ours to put: nobody else moves it while hid is -1
         * and the release is recent. */
        group_row mine = nw;
        int64_t started = nw.hb;
        if ((rc = group_read(e, q, g, &mine)) != 0 || mine.head != s || mine.hid != -1 ||
            mine.hb != started) {
            sl_result_free(&r);
            return rc;
        }
        busy_mark(e, q, g);
        int64_t b, id;
        rc = release_put(e, q, g, s, &r.rows[0], &b, &id);
        sl_result_free(&r);
        if (rc) return rc; /* retried by the sweeper once the release is stale */
        /* Record where it is; puts may bump next meanwhile (the nonce
         * changes), nothing else moves the head while hid is -1. */
        for (int k = 0; k < 32; k++) {
            group_row done = mine;
            done.hb = b;
            done.hid = id;
            if ((rc = group_cas(e, q, g, &mine, &done)) != SL_ENOTAPPLIED) return rc;
            if ((rc = group_read(e, q, g, &mine)) != 0 || mine.head != s || mine.hid != -1 ||
                mine.hb != started)
                return rc;
        }
        return SL_EUNAVAILABLE;
    }
    return rc == SL_ENOTAPPLIED ? SL_EUNAVAILABLE : rc;
}

/* --- Put ---------------------------------------------------------------------- */

int sl_fifo_put(sl_engine *e, const char *account, const char *queue, const sl_fifo_msg *m,
                sl_fifo_sent *out) {
    memset(out, 0, sizeof *out);
    if (!m->group || !m->group[0] || strlen(m->group) > SL_FIFO_GROUP_MAX || !m->dedup || !m->dedup[0] ||
        strlen(m->dedup) > SL_FIFO_GROUP_MAX)
        return SL_EINVAL;
    qstate *q;
    int rc = msg_open_queue(e, account, queue, &q);
    if (rc) return rc;
    if (!q->opts.fifo) return SL_EINVAL;
    char key[2 * SL_FIFO_GROUP_MAX + 24], dg[SL_FIFO_GROUP_MAX + 1];
    dedup_key(q, m->group, m->dedup, key, sizeof key);
    if ((rc = dedup_find(e, q, key, out, SL_READ_DEFAULT, dg)) != 0) {
        if (rc < 0) return rc;
        /* Sent before: settle that send's row in case its sender was cut
         * (it is ready then, or about to be). */
        if ((rc = log_mark(e, q, dg, out->seq, LOG_READY)) != 0) return rc;
        int arc = fifo_advance(e, q, dg, 0);
        if (arc)
            sl_log(SL_INFO, "fifo %s group %s: release after a duplicate: %s", q->qkey, dg, sl_strerror(arc));
        return 0;
    }
    if ((rc = busy_mark(e, q, m->group)) != 0) return rc;

    char mid[SL_MSGID_LEN + 1];
    unsigned char rnd[SL_MSGID_LEN / 2];
    if ((rc = sl_random_bytes(rnd, sizeof rnd)) != 0) return rc;
    for (size_t i = 0; i < sizeof rnd; i++)
        snprintf(mid + 2 * i, 3, "%02x", rnd[i]);
    int64_t now = sl_now_ms(), seq = 0;
    int placed = 0;
    for (int attempt = 0; attempt < 64 && !placed; attempt++) {
        group_row gr;
        if ((rc = group_read(e, q, m->group, &gr)) != 0) return rc;
        int64_t s = seq ? seq : gr.exists ? gr.next : 1;
        if (!seq) {
            /* Claim s by inserting its row. */
            sl_write w = {0};
            log_key(&w, q, m->group, s);
            w.kind = SL_W_INSERT_IF_NOT_EXISTS;
            w.row.v[FL_MID] = sl_vtext(mid);
            w.row.v[FL_BODY] = sl_vbytes(m->body ? m->body : "", m->len);
            w.row.v[FL_ATTRS] = sl_vtext(m->attrs_json ? m->attrs_json : "{}");
            w.row.v[FL_DEDUP] = sl_vtext(m->dedup);
            w.row.v[FL_PUT] = sl_vint(now);
            w.row.v[FL_DUP] = sl_vint(LOG_PENDING);
            w.row.v[FL_NONCE] = sl_vint(eng_nonce());
            rc = eng_cas(e, &w, FL_NONCE);
            if (rc && rc != SL_ENOTAPPLIED) return rc;
            if (rc == 0) seq = s;
        }
        /* Then move next past s, ours or the one that beat us to it (the
         * row just read may be older than that: read it again then). */
        if (gr.exists && gr.next > s) {
            placed = seq != 0;
            continue;
        }
        group_row nw = gr.exists ? gr : (group_row){0};
        nw.next = s + 1;
        rc = group_cas(e, q, m->group, &gr, &nw);
        if (rc && rc != SL_ENOTAPPLIED) return rc; /* the client sends again */
        placed = rc == 0 && seq != 0;
    }
    if (!placed) return SL_EUNAVAILABLE;
    out->seq = seq;
    snprintf(out->id, sizeof out->id, "%s", mid);

    /* Within five minutes, one message per deduplication id: a concurrent
     * send of the same id that got there first wins, and ours is skipped. */
    sl_write d = {0};
    d.t = &sl_t_fifo_dedup;
    d.kind = SL_W_INSERT_IF_NOT_EXISTS;
    d.ttl = FIFO_DEDUP_S;
    d.row.v[FD_QKEY] = sl_vtext(q->qkey);
    d.row.v[FD_DEDUP] = sl_vtext(key);
    d.row.v[FD_GRP] = sl_vtext(m->group);
    d.row.v[FD_SEQ] = sl_vint(seq);
    d.row.v[FD_MID] = sl_vtext(mid);
    d.row.v[FD_NONCE] = sl_vint(eng_nonce());
    rc = eng_cas(e, &d, FD_NONCE);
    if (rc == SL_ENOTAPPLIED) {
        if ((rc = log_mark(e, q, m->group, seq, LOG_DUP)) != 0) return rc;
        rc = dedup_find(e, q, key, out, SL_READ_SERIAL, dg);
        return rc < 0 ? rc : 0;
    }
    if (rc || (rc = log_mark(e, q, m->group, seq, LOG_READY)) != 0) return rc;
    sl_count(&q->m.puts, 1);
    /* The message is durable; its release may wait for the sweeper. */
    int arc = fifo_advance(e, q, m->group, sl_now_ms()); /* marked above */
    if (arc) sl_log(SL_INFO, "fifo %s group %s: release after put: %s", q->qkey, m->group, sl_strerror(arc));
    return 0;
}

/* --- After an ack, and the sweeper ------------------------------------------ */

int sl_fifo_acked(sl_engine *e, const char *account, const char *queue, const char *receipt) {
    qstate *q;
    int rc = msg_open_queue(e, account, queue, &q);
    if (rc || !q->opts.fifo) return rc;
    int64_t id, version, exp;
    int sticky;
    if (msg_receipt_parse(q, receipt, &id, &version, &exp, &sticky) != 0) return SL_EINVAL;
    sl_result r;
    sl_result_init(&r);
    rc = msg_get_msg(e, q->qkey, id / q->opts.bucket_size, id, SL_READ_DEFAULT, &r);
    char g[SL_FIFO_GROUP_MAX + 1] = "";
    if (rc == 0) {
        const sl_val *a = &r.rows[0].v[M_ATTRS];
        json_t *j = a->set && !a->null ? json_loadb(a->p, a->n, 0, NULL) : NULL;
        const char *s = json_string_value(json_object_get(json_object_get(j, "$fifo"), "g"));
        if (s) snprintf(g, sizeof g, "%s", s);
        json_decref(j);
    }
    sl_result_free(&r);
    if (rc) return rc == SL_ENOTFOUND ? 0 : rc;
    return g[0] ? fifo_advance(e, q, g, 0) : 0;
}

int fifo_sweep(sl_engine *e, qstate *q) {
    int rc = 0;
    for (int64_t shard = 0; shard < FIFO_SHARDS && rc == 0 && !e->stopping; shard++) {
        sl_slice s = {0};
        s.t = &sl_t_fifo_busy;
        s.pk[0] = sl_vtext(q->qkey);
        s.pk[1] = sl_vint(shard);
        s.limit = 1000;
        sl_result r;
        sl_result_init(&r);
        if ((rc = sl_store_slice(e->st, &s, &r)) == 0) {
            for (size_t i = 0; i < r.n && !e->stopping; i++) {
                char g[SL_FIFO_GROUP_MAX + 1];
                if (sl_val_str(&r.rows[i].v[FB_GRP], g, sizeof g) < 0) continue;
                int arc = fifo_advance(e, q, g, r.rows[i].v[FB_SINCE].i);
                if (arc) rc = arc;
            }
        }
        sl_result_free(&r);
    }
    return rc;
}
