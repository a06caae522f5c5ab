/* message.c: messages: put, receive (the reader), peek, ack, update, and
 * moving a message to another id or queue (republish, dead-letter,
 * redrive).
 *
 * The reader looks for work in two places. Messages never delivered are
 * READY rows in the buckets at and just after the reader pointer (a window
 * of READ_WINDOW buckets that hold messages, so that a bucket still waiting
 * for a slow write does not hold up the buckets after it). Messages that are invisible for a
 * while (leased, delayed, returned) are WAITING rows with an entry in the
 * leases table, partitioned by the minute they become visible; a cursor
 * walks those entries in time order, so an expired lease is found after
 * reading only the entries due before it, and a long lease on one message
 * never delays the redelivery of another.
 *
 * Pop receipt format, version 2: base64url("2:<queue version>:<id>:
 * <message version>:<expiry in s>") "." base64url(the first 12 bytes of
 * HMAC-SHA256 of those fields under the queue incarnation's secret). The
 * message version changes on every lease, update and ack, so a receipt is
 * valid exactly until the message is leased again (guarantee 4); the MAC
 * ties it to one incarnation of one queue, so a receipt of another queue, of
 * a queue since re-created, or with any byte changed acks nothing; the
 * expiry lets ack keep the row's TTL without reading it first. */
#include <jansson.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"

#define SETTLE_MS 1000 /* lease entries due this recently may still be landing */

static void hex(char *out, int bytes) {
    for (int i = 0; i < bytes; i += 8) {
        uint64_t r = sl_random_u64();
        for (int j = 0; j < 8 && i + j < bytes; j++) snprintf(out + 2 * (i + j), 3, "%02x", (unsigned)(r >> (8 * j)) & 0xff);
    }
}

static void msg_key(sl_write *w, const char *qkey, int64_t bucket, int64_t id) {
    w->t = &sl_t_messages;
    w->row.v[M_QKEY] = sl_vtext(qkey);
    w->row.v[M_BUCKET] = sl_vint(bucket);
    w->row.v[M_ID] = sl_vint(id);
}

static int get_msg(sl_engine *e, const char *qkey, int64_t bucket, int64_t id, int cons, sl_result *r) {
    sl_val key[3] = {sl_vtext(qkey), sl_vint(bucket), sl_vint(id)};
    return sl_store_get(e->st, &sl_t_messages, key, cons, r);
}

/* --- Receipts -------------------------------------------------------------- */

#define RECEIPT_MAC 12 /* bytes of HMAC-SHA256 kept */

static void receipt_mac(const qstate *q, const char *raw, size_t n, unsigned char mac[32]) {
    unsigned int len = 32;
    HMAC(EVP_sha256(), q->secret, (int)sizeof q->secret, (const unsigned char *)raw, n, mac, &len);
}

/* "<fields>.<mac>", both base64url; the MAC binds the receipt to one
 * incarnation of one queue and makes every byte of it count. */
static void receipt_make(const qstate *q, char out[SL_RECEIPT_MAX], int64_t id, int64_t version, int64_t exp_ms) {
    char raw[96];
    unsigned char mac[32];
    int n = snprintf(raw, sizeof raw, "2:%lld:%lld:%lld:%lld", (long long)q->version, (long long)id,
                     (long long)version, (long long)(exp_ms / 1000));
    receipt_mac(q, raw, (size_t)n, mac);
    size_t o = sl_b64url_encode(raw, (size_t)n, out);
    out[o++] = '.';
    sl_b64url_encode(mac, RECEIPT_MAC, out + o);
}

/* Returns 0, or SL_EINVAL for anything that is not a receipt this queue
 * incarnation issued: garbage, another queue's, a tampered one. */
static int receipt_parse(const qstate *q, const char *s, int64_t *id, int64_t *version, int64_t *exp_ms) {
    size_t n = strlen(s);
    const char *dot = strchr(s, '.');
    char raw[96];
    unsigned char mac[RECEIPT_MAC + 2], want[32];
    if (n == 0 || n >= SL_RECEIPT_MAX || !dot) return SL_EINVAL;
    long m = sl_b64url_decode(s, (size_t)(dot - s), raw, sizeof raw - 1);
    if (m <= 0) return SL_EINVAL;
    raw[m] = 0;
    if (sl_b64url_decode(dot + 1, strlen(dot + 1), mac, sizeof mac) != RECEIPT_MAC) return SL_EINVAL;
    receipt_mac(q, raw, (size_t)m, want);
    if (CRYPTO_memcmp(mac, want, RECEIPT_MAC) != 0) return SL_EINVAL;
    long long a, b, c, d;
    int used = 0;
    if (sscanf(raw, "2:%lld:%lld:%lld:%lld%n", &a, &b, &c, &d, &used) != 4 || used != m) return SL_EINVAL;
    if (a != q->version || b < 0 || c < 0 || c == INT64_MAX || d < 0 || d > INT64_MAX / 1000) return SL_EINVAL;
    *id = b;
    *version = c;
    *exp_ms = d * 1000;
    return 0;
}

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
static int claim(sl_engine *e, qstate *q, int64_t *id, int64_t *block_ms) {
    int64_t S = q->opts.bucket_size;
    for (int attempt = 0; attempt < 16; attempt++) {
        pthread_mutex_lock(&q->mu);
        /* One claim at a time per node: threads that find the block used up
         * while another claims wait for its block instead of claiming their
         * own, which would leave whole buckets of unused ids (gaps that the
         * reader must wait out). */
        while (q->claiming && !(q->id_next < q->id_end && sl_now_ms() - q->block_ms < e->cfg.lease_grace_ms / 2))
            pthread_cond_wait(&q->claimed, &q->mu);
        int64_t now = sl_now_ms();
        if (q->id_next < q->id_end && now - q->block_ms < e->cfg.lease_grace_ms / 2) {
            *id = q->id_next++;
            *block_ms = q->block_ms;
            pthread_mutex_unlock(&q->mu);
            return 0;
        }
        q->claiming = 1;
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
            w.row.v[MO_NEXT] = sl_vint(start + S);
            w.row.v[MO_NONCE] = sl_vint(eng_nonce());
            w.cond[0] = (sl_cond){MO_NEXT, sl_vint(old)};
            w.ncond = 1;
            rc = eng_cas(e, &w, MO_NONCE, NULL);
        }
        pthread_mutex_lock(&q->mu);
        q->claiming = 0;
        if (rc == 0) {
            q->id_next = start;
            q->id_end = start + S;
            q->block_ms = now;
            if (start + S > q->head) q->head = start + S;
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
    return claim(e, q, id, &block_ms);
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
    return sl_store_slice(e->st, &s, out);
}

int msg_lease_entry(sl_engine *e, qstate *q, int64_t id, int64_t version, int64_t due, int64_t exp_ms, int async) {
    sl_write w = {0};
    w.t = &sl_t_leases;
    w.kind = SL_W_UPSERT;
    w.row.v[L_QKEY] = sl_vtext(q->qkey);
    w.row.v[L_MINUTE] = sl_vint(due / 60000);
    w.row.v[L_DUE] = sl_vint(due);
    w.row.v[L_ID] = sl_vint(id);
    w.row.v[L_VERSION] = sl_vint(version);
    int64_t now = sl_now_ms();
    w.ttl = (int)ttl_left_s((exp_ms > due ? exp_ms : due) + 60000, now);
    /* The entry is an index of the message rows: if it is lost, the message
     * is not, since the repair worker moves expired waiting messages before
     * it finalizes their bucket (later, so only after a crash). Where the
     * message already exists it is written without waiting; a plain upsert
     * of the same values is idempotent, so an unknown outcome is retried. */
    int rc = async ? sl_store_apply_async(e->st, &w, 1) : eng_write(e, &w, 1);
    if (rc == SL_EUNKNOWN) rc = eng_write(e, &w, 1);
    if (rc) sl_log(SL_INFO, "lease entry for %s/%lld not written: %s", q->qkey, (long long)id, sl_strerror(rc));
    return rc;
}

/* --- Put ---------------------------------------------------------------------- */

static int is_sealed(sl_engine *e, const char *qkey, int64_t bucket) {
    sl_result r;
    sl_result_init(&r);
    int rc = get_msg(e, qkey, bucket, -1, SL_READ_DEFAULT, &r);
    sl_result_free(&r);
    return rc == 0;
}

int sl_msg_put(sl_engine *e, const char *account, const char *queue, const sl_put *msgs, size_t n,
               char (*ids)[SL_MSGID_LEN + 1]) {
    if (n < 1 || n > SL_BATCH_MAX) return SL_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (msgs[i].delay_s < 0 || msgs[i].delay_s > SL_INVIS_MAX || msgs[i].len > 16 * 1024 * 1024)
            return SL_EINVAL;
    int rc = sl_account_exists(e, account);
    if (rc) return rc;
    qstate *q;
    if ((rc = eng_queue(e, account, queue, &q)) != 0) return rc;

    int64_t now = sl_now_ms(), exp = now + q->opts.retention_s * 1000;
    int any_visible = 0;
    for (size_t i = 0; i < n; i++) {
        const sl_put *m = &msgs[i];
        int64_t id, block_ms;
        if ((rc = claim(e, q, &id, &block_ms)) != 0) return rc;
        int64_t bucket = id / q->opts.bucket_size;
        char tag[SL_TAG_MAX];
        hex(ids[i], SL_MSGID_LEN / 2);
        hex(tag, 8);
        sl_write w = {0};
        msg_key(&w, q->qkey, bucket, id);
        w.kind = SL_W_UPSERT;
        w.ttl = (int)ttl_left_s(exp, now);
        w.row.v[M_MID] = sl_vtext(ids[i]);
        w.row.v[M_BODY] = sl_vbytes(m->body ? m->body : "", m->len);
        w.row.v[M_ATTRS] = sl_vtext(m->attrs_json ? m->attrs_json : "{}");
        w.row.v[M_TAG] = sl_vtext(tag);
        w.row.v[M_PUT] = sl_vint(now);
        w.row.v[M_EXP] = sl_vint(exp);
        w.row.v[M_VISIBLE] = sl_vint(now + (int64_t)m->delay_s * 1000);
        w.row.v[M_VERSION] = sl_vint(0);
        w.row.v[M_DCOUNT] = sl_vint(0);
        w.row.v[M_STATE] = sl_vint(m->delay_s > 0 ? MS_WAITING : MS_READY);
        w.row.v[M_NONCE] = sl_vint(eng_nonce());
        /* A delayed message is tracked by the lease index from the start, so
         * that it never holds up the bucket it lives in. Its entry is
         * written first: an entry without a message is skipped, a waiting
         * message without an entry would wait for the repair worker. */
        if (m->delay_s > 0 && (rc = msg_lease_entry(e, q, id, 0, now + (int64_t)m->delay_s * 1000, exp, 0)) != 0)
            return rc;
        rc = eng_write(e, &w, 1);
        /* An unknown outcome is not retried here: the id is this put's alone,
         * so a write that lands later is just a late write, which the repair
         * worker delivers. The client gets a 503 and may put again. */
        if (rc == SL_EUNKNOWN) rc = SL_EUNAVAILABLE;
        if (rc) return rc;
        any_visible |= m->delay_s == 0;
        /* If the reader sealed this bucket before the write landed, move the
         * message on at once rather than wait for the repair worker. The
         * reader cannot have sealed it while the block is younger than half
         * the gap grace, so the check costs nothing in steady state. */
        if (sl_now_ms() - block_ms >= e->cfg.lease_grace_ms / 2 && is_sealed(e, q->qkey, bucket)) {
            sl_result r;
            sl_result_init(&r);
            if (get_msg(e, q->qkey, bucket, id, SL_READ_SERIAL, &r) == 0) msg_move(e, q, &r.rows[0], q, 0, 0);
            sl_result_free(&r);
        }
    }
    if (any_visible) eng_notify(e, q);
    return 0;
}

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
    w.cond[0] = (sl_cond){M_VERSION, sl_vint(row->v[M_VERSION].i)};
    w.cond[1] = (sl_cond){M_STATE, sl_vint(row->v[M_STATE].i)};
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

/* --- The reader ----------------------------------------------------------------- */

static int fill_message(sl_message *out, const sl_row *m) {
    memset(out, 0, sizeof *out);
    sl_val_str(&m->v[M_MID], out->id, sizeof out->id);
    sl_val_str(&m->v[M_TAG], out->tag, sizeof out->tag);
    const sl_val *b = &m->v[M_BODY];
    out->len = b->set && !b->null ? b->n : 0;
    out->body = malloc(out->len + 1);
    if (!out->body) return SL_ENOMEM;
    if (out->len) memcpy(out->body, b->p, out->len);
    ((char *)out->body)[out->len] = 0;
    const sl_val *a = &m->v[M_ATTRS];
    size_t alen = a->set && !a->null ? a->n : 0;
    out->attrs_json = malloc(alen ? alen + 1 : 3);
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
    out->delivery_count = m->v[M_DCOUNT].i;
    out->enqueued_ms = m->v[M_PUT].i;
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
    if (!q->opts.dlq[0] || m->v[M_DCOUNT].i < q->opts.max_delivery_count) return 0;
    qstate *dlq;
    if (eng_queue(e, q->account, q->opts.dlq, &dlq) != 0) return 0; /* the DLQ is gone: deliver, never drop */
    int rc = msg_move(e, q, m, dlq, 0, 1);
    return rc == 0 || rc == SL_ENOTAPPLIED ? 1 : rc;
}

/* The CAS that leases message m (as read) until visible_ms. */
static void lease_write(qstate *q, const sl_row *m, int64_t now, int64_t visible, sl_write *w) {
    memset(w, 0, sizeof *w);
    msg_key(w, q->qkey, m->v[M_BUCKET].i, m->v[M_ID].i);
    w->kind = SL_W_UPDATE_IF;
    w->ttl = (int)ttl_left_s(m->v[M_EXP].i, now);
    w->row.v[M_STATE] = sl_vint(MS_WAITING);
    w->row.v[M_VERSION] = sl_vint(m->v[M_VERSION].i + 1);
    w->row.v[M_VISIBLE] = sl_vint(visible);
    w->row.v[M_DCOUNT] = sl_vint(m->v[M_DCOUNT].i + 1);
    w->row.v[M_NONCE] = sl_vint(eng_nonce());
    w->cond[0] = (sl_cond){M_VERSION, sl_vint(m->v[M_VERSION].i)};
    w->cond[1] = (sl_cond){M_STATE, sl_vint(m->v[M_STATE].i)};
    w->ncond = 2;
}

/* What a client gets for a message it leased with lease_write(). */
static int leased_message(qstate *q, const sl_row *m, sl_message *out) {
    int rc = fill_message(out, m);
    if (rc) return rc;
    out->delivery_count = m->v[M_DCOUNT].i + 1;
    receipt_make(q, out->receipt, m->v[M_ID].i, m->v[M_VERSION].i + 1, m->v[M_EXP].i);
    return 0;
}

/* Leases one message as read in row m (READY, or WAITING and due). Returns
 * 0 with out filled, SL_ENOTAPPLIED when someone else got it first or it
 * was dead-lettered, or a store error. */
static int lease_one(sl_engine *e, qstate *q, const sl_row *m, int invis_s, sl_message *out) {
    int rc = dead_letter_due(e, q, m);
    if (rc) return rc > 0 ? SL_ENOTAPPLIED : rc;
    int64_t now = sl_now_ms(), visible = now + (int64_t)invis_s * 1000;
    sl_write w;
    lease_write(q, m, now, visible, &w);
    if ((rc = eng_cas(e, &w, M_NONCE, NULL)) != 0) return rc;
    msg_lease_entry(e, q, m->v[M_ID].i, m->v[M_VERSION].i + 1, visible, m->v[M_EXP].i, 1);
    return leased_message(q, m, out);
}

/* Leases up to k rows of one bucket in one conditional batch (one round
 * trip, one Paxos round on Cassandra), and writes their lease entries, which
 * share a partition since they share a due time, in one batch too. When the
 * batch is not applied because another reader took one of the rows, or its
 * outcome is unknown, each row is settled on its own. Appends to out. */
static int lease_batch(sl_engine *e, qstate *q, sl_row **rows, size_t k, int invis_s, sl_message *out,
                       size_t *got) {
    sl_row *todo[SL_RECEIVE_MAX];
    size_t n = 0;
    int rc;
    for (size_t i = 0; i < k && n < SL_RECEIVE_MAX; i++) {
        if ((rc = dead_letter_due(e, q, rows[i])) < 0) return rc;
        if (rc == 0) todo[n++] = rows[i];
    }
    if (n == 0) return 0;
    if (n == 1) {
        rc = lease_one(e, q, todo[0], invis_s, &out[*got]);
        if (rc == 0) (*got)++;
        return rc == SL_ENOTAPPLIED ? 0 : rc;
    }
    int64_t now = sl_now_ms(), visible = now + (int64_t)invis_s * 1000;
    sl_write w[SL_RECEIVE_MAX], entries[SL_RECEIVE_MAX];
    int applied[SL_RECEIVE_MAX] = {0};
    for (size_t i = 0; i < n; i++) lease_write(q, todo[i], now, visible, &w[i]);
    rc = sl_store_apply(e->st, w, n, NULL);
    if (rc == 0) {
        for (size_t i = 0; i < n; i++) applied[i] = 1;
    } else if (rc == SL_ENOTAPPLIED || rc == SL_EUNKNOWN) {
        for (size_t i = 0; i < n; i++) {
            if (rc == SL_EUNKNOWN) {
                sl_result r;
                sl_result_init(&r);
                int g = get_msg(e, q->qkey, todo[i]->v[M_BUCKET].i, todo[i]->v[M_ID].i, SL_READ_SERIAL, &r);
                applied[i] = g == 0 && r.rows[0].v[M_NONCE].i == w[i].row.v[M_NONCE].i;
                sl_result_free(&r);
                if (applied[i]) continue;
            }
            int one = eng_cas(e, &w[i], M_NONCE, NULL);
            if (one == 0) applied[i] = 1;
            else if (one != SL_ENOTAPPLIED) return one;
        }
    } else {
        return rc;
    }
    size_t ne = 0;
    for (size_t i = 0; i < n; i++) {
        if (!applied[i]) continue;
        if ((rc = leased_message(q, todo[i], &out[*got])) != 0) return rc;
        (*got)++;
        sl_write *x = &entries[ne++];
        memset(x, 0, sizeof *x);
        x->t = &sl_t_leases;
        x->kind = SL_W_UPSERT;
        x->row.v[L_QKEY] = sl_vtext(q->qkey);
        x->row.v[L_MINUTE] = sl_vint(visible / 60000);
        x->row.v[L_DUE] = sl_vint(visible);
        x->row.v[L_ID] = todo[i]->v[M_ID];
        x->row.v[L_VERSION] = sl_vint(todo[i]->v[M_VERSION].i + 1);
        x->ttl = (int)ttl_left_s((todo[i]->v[M_EXP].i > visible ? todo[i]->v[M_EXP].i : visible) + 60000, now);
    }
    if (ne > 0) {
        rc = sl_store_apply_async(e->st, entries, ne);
        if (rc == SL_EUNKNOWN) rc = eng_write(e, entries, ne);
        /* Not fatal: the repair worker moves waiting messages whose entry
         * was lost (see msg_lease_entry). */
        if (rc) sl_log(SL_INFO, "lease entries for %s not written: %s", q->qkey, sl_strerror(rc));
    }
    return 0;
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
    if (now / 60000 - cdue / 60000 >= LEASE_SCAN_MINUTES) upto = (cdue / 60000 + LEASE_SCAN_MINUTES) * 60000 - 1;
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
    for (int i = 0; i < SEEN_RING && !hit; i++) hit = q->seen[i][0] == due && q->seen[i][1] == id;
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
static int take_due(sl_engine *e, qstate *q, int max, int invis_s, sl_message *out, size_t *got) {
    int scanned = 0;
    while ((int)*got < max) {
        cand c;
        pthread_mutex_lock(&q->mu);
        int have = q->ncands > 0;
        if (have) c = q->cands[--q->ncands];
        pthread_mutex_unlock(&q->mu);
        if (!have) {
            if (scanned) break;
            scanned = 1;
            int rc = msg_lease_scan(e, q, sl_now_ms());
            if (rc) return rc;
            continue;
        }
        int64_t bucket = c.id / q->opts.bucket_size;
        sl_result r;
        sl_result_init(&r);
        int rc = get_msg(e, q->qkey, bucket, c.id, SL_READ_DEFAULT, &r);
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

/* Seals bucket b if every message it will ever hold was delivered: ids have
 * moved past it, none of its rows is READY, and every id is present or has
 * been missing for the gap grace (a put that claimed it crashed, or its write
 * is late; a late write is republished by the repair worker). Returns 1 when
 * the bucket is (now) sealed. */
static int try_seal(sl_engine *e, qstate *q, int64_t b, const sl_result *r, int ready, int64_t now) {
    int64_t S = q->opts.bucket_size, present = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (r->rows[i].v[M_ID].i < 0) { /* marker: already sealed */
            eng_pointer_max(e, q->qkey, "reader", b + 1);
            pthread_mutex_lock(&q->mu);
            if (q->reader < b + 1) q->reader = b + 1;
            pthread_mutex_unlock(&q->mu);
            return 1;
        }
        present++;
    }
    pthread_mutex_lock(&q->mu);
    int64_t head = q->head;
    pthread_mutex_unlock(&q->mu);
    if (ready || head < (b + 1) * S) return 0;
    if (present < S) {
        int slot = (int)(b % READ_SCAN_MAX);
        pthread_mutex_lock(&q->mu);
        if (q->gap_bucket[slot] != b + 1 || q->gap_present[slot] != present) {
            q->gap_bucket[slot] = b + 1; /* +1: zero means "no bucket" */
            q->gap_present[slot] = present;
            q->gap_since[slot] = now;
        }
        int64_t since = q->gap_since[slot];
        pthread_mutex_unlock(&q->mu);
        if (now - since < e->cfg.lease_grace_ms) return 0;
    }
    /* One thread of this node seals at a time; the others go on reading. */
    pthread_mutex_lock(&q->mu);
    int busy = q->sealing;
    q->sealing = 1;
    pthread_mutex_unlock(&q->mu);
    if (busy) return 0;
    sl_write w = {0};
    msg_key(&w, q->qkey, b, -1);
    w.kind = SL_W_INSERT_IF_NOT_EXISTS;
    w.ttl = (int)(q->opts.retention_s + 86400);
    w.row.v[M_STATE] = sl_vint(MS_SEALED);
    w.row.v[M_PUT] = sl_vint(now);
    w.row.v[M_NONCE] = sl_vint(eng_nonce());
    int rc = eng_cas(e, &w, M_NONCE, NULL);
    int sealed = rc == 0 || rc == SL_ENOTAPPLIED;
    /* Advance the pointer past b. Another node may have done it first; the
     * pointer only ever grows. */
    if (sealed) eng_pointer_max(e, q->qkey, "reader", b + 1);
    pthread_mutex_lock(&q->mu);
    q->sealing = 0;
    if (sealed && q->reader < b + 1) q->reader = b + 1;
    pthread_mutex_unlock(&q->mu);
    return sealed;
}

/* Threads of one node that read the same bucket would otherwise race each
 * other for the same rows, and every lost compare-and-set costs a commit.
 * A thread claims the rows it will try, in memory, before the CAS; the other
 * threads of the node pass over them. Nodes still race each other, and the
 * CAS settles that. Returns how many of v[0..n) it claimed, moved to the
 * front of v. */
static size_t claim_rows(qstate *q, sl_row **v, size_t n) {
    size_t k = 0;
    pthread_mutex_lock(&q->mu);
    for (size_t i = 0; i < n && q->nleasing < MAX_CLAIMED; i++) {
        int64_t id = v[i]->v[M_ID].i;
        int busy = 0;
        for (int j = 0; j < q->nleasing && !busy; j++) busy = q->leasing[j] == id;
        if (busy) continue;
        q->leasing[q->nleasing++] = id;
        sl_row *t = v[k];
        v[k++] = v[i];
        v[i] = t;
    }
    pthread_mutex_unlock(&q->mu);
    return k;
}

static void unclaim_rows(qstate *q, sl_row **v, size_t n) {
    pthread_mutex_lock(&q->mu);
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < q->nleasing; j++)
            if (q->leasing[j] == v[i]->v[M_ID].i) {
                q->leasing[j] = q->leasing[--q->nleasing];
                break;
            }
    pthread_mutex_unlock(&q->mu);
}

static void shuffle(sl_row **v, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = sl_random_u64() % i;
        sl_row *t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* Takes messages never delivered from the reader window, sealing buckets at
 * the front of the window as they complete and moving the pointer past
 * them. */
static int take_fresh(sl_engine *e, qstate *q, int max, int invis_s, sl_message *out, size_t *got) {
    int64_t S = q->opts.bucket_size, now = sl_now_ms();
    int rc;
    pthread_mutex_lock(&q->mu);
    int64_t R = q->reader;
    pthread_mutex_unlock(&q->mu);
    if (R < 0) {
        if ((rc = eng_pointer_get(e, q->qkey, "reader", &R)) != 0) return rc;
        pthread_mutex_lock(&q->mu);
        if (q->reader < R) q->reader = R;
        pthread_mutex_unlock(&q->mu);
    }
    for (int pass = 0; pass < 2 && (int)*got < max; pass++) {
        pthread_mutex_lock(&q->mu);
        int64_t head = q->head;
        pthread_mutex_unlock(&q->mu);
        int prefix = 1;
        int64_t b = R;
        /* The window is READ_WINDOW buckets that hold messages; empty ones
         * (ids claimed and never used, or not written yet) are passed over,
         * up to READ_SCAN_MAX buckets, so that gaps never starve delivery. */
        for (int k = 0, full = 0; full < READ_WINDOW && k < READ_SCAN_MAX && b * S < head && (int)*got < max;
             k++, b++) {
            sl_result r;
            sl_result_init(&r);
            if ((rc = msg_scan_bucket(e, q, b, &r)) != 0) {
                sl_result_free(&r);
                return rc;
            }
            if (r.n > 0) full++;
            sl_row *cands[1024];
            size_t nc = 0;
            for (size_t i = 0; i < r.n && nc < 1024; i++) {
                sl_row *m = &r.rows[i];
                if (m->v[M_ID].i >= 0 && m->v[M_STATE].i == MS_READY && !msg_purged(q, m)) cands[nc++] = m;
            }
            if (!q->opts.strict_fifo) shuffle(cands, nc);
            /* Every candidate tried was leased, taken by someone else or
             * dead-lettered: either way it is no longer READY. Candidates
             * that another thread of this node is leasing are left to it. */
            size_t taken = 0;
            while (taken < nc && (int)*got < max) {
                size_t want = (size_t)max - *got;
                size_t k = claim_rows(q, cands + taken, nc - taken);
                if (k == 0) break;
                if (k > want) {
                    unclaim_rows(q, cands + taken + want, k - want);
                    k = want;
                }
                rc = lease_batch(e, q, cands + taken, k, invis_s, out, got);
                unclaim_rows(q, cands + taken, k);
                if (rc) {
                    sl_result_free(&r);
                    return rc;
                }
                taken += k;
            }
            if (prefix) {
                if (taken == nc && try_seal(e, q, b, &r, 0, now)) {
                    R = b + 1;
                } else {
                    prefix = 0;
                }
            }
            sl_result_free(&r);
        }
        if ((int)*got > 0) break;
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

static int open_queue(sl_engine *e, const char *account, const char *queue, qstate **q) {
    int rc = sl_account_exists(e, account);
    if (rc) return rc;
    if ((rc = eng_queue(e, account, queue, q)) != 0) return rc;
    msg_refresh_purge(e, *q, 0);
    return 0;
}

int sl_msg_receive(sl_engine *e, const char *account, const char *queue, int max, int invis_s, sl_message **out,
                   size_t *n) {
    *out = NULL;
    *n = 0;
    if (max < 1 || max > SL_RECEIVE_MAX || invis_s < 0 || invis_s > SL_INVIS_MAX) return SL_EINVAL;
    qstate *q;
    int rc = open_queue(e, account, queue, &q);
    if (rc) return rc;
    sl_message *v = calloc((size_t)max, sizeof *v);
    if (!v) return SL_ENOMEM;
    size_t got = 0;
    /* Redeliveries first: they have waited longest. With strictFifo the
     * oldest message is wanted first, which is the same order. */
    rc = take_due(e, q, max, invis_s, v, &got);
    if (rc == 0 && (int)got < max) rc = take_fresh(e, q, max, invis_s, v, &got);
    if (rc && got == 0) {
        free(v);
        return rc;
    }
    *out = v;
    *n = got;
    return 0;
}

/* Peek reads every bucket that is not finalized, from the repair pointer
 * on, and returns the first visible messages without leasing them. */
int sl_msg_peek(sl_engine *e, const char *account, const char *queue, int max, sl_message **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (max < 1 || max > SL_RECEIVE_MAX) return SL_EINVAL;
    qstate *q;
    int rc = open_queue(e, account, queue, &q);
    if (rc) return rc;
    int64_t repair, head, now = sl_now_ms();
    if ((rc = eng_pointer_get(e, q->qkey, "repair", &repair)) != 0) return rc;
    if ((rc = msg_head(e, q, &head)) != 0) return rc;
    sl_message *v = calloc((size_t)max, sizeof *v);
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
                if ((rc = fill_message(&v[got], m)) == 0) got++;
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
    int rc = receipt_parse(q, receipt, id, version, exp);
    if (rc) return rc;
    rc = get_msg(e, q->qkey, *id / q->opts.bucket_size, *id, SL_READ_SERIAL, r);
    if (rc == SL_ENOTFOUND) return SL_ECONFLICT;
    if (rc) return rc;
    sl_row *m = &r->rows[0];
    if (m->v[M_VERSION].i != *version || m->v[M_STATE].i != MS_WAITING) return SL_ECONFLICT;
    return 0;
}

int sl_msg_ack(sl_engine *e, const char *account, const char *queue, const char *receipt) {
    qstate *q;
    int rc = open_queue(e, account, queue, &q);
    if (rc) return rc;
    int64_t id, version, exp;
    if ((rc = receipt_parse(q, receipt, &id, &version, &exp)) != 0) return rc;
    int64_t now = sl_now_ms();
    /* One CAS, no read: the receipt carries everything the write needs. A
     * lease that ran out but was not handed to anyone else still has this
     * version, so such an ack succeeds, as API.md promises. */
    sl_write w = {0};
    msg_key(&w, q->qkey, id / q->opts.bucket_size, id);
    w.kind = SL_W_UPDATE_IF;
    w.ttl = (int)ttl_left_s(exp, now);
    w.row.v[M_STATE] = sl_vint(MS_ACKED);
    w.row.v[M_VERSION] = sl_vint(version + 1);
    w.row.v[M_NONCE] = sl_vint(eng_nonce());
    w.cond[0] = (sl_cond){M_VERSION, sl_vint(version)};
    w.cond[1] = (sl_cond){M_STATE, sl_vint(MS_WAITING)};
    w.ncond = 2;
    rc = eng_cas(e, &w, M_NONCE, NULL);
    return rc == SL_ENOTAPPLIED ? SL_ECONFLICT : rc;
}

int sl_msg_update(sl_engine *e, const char *account, const char *queue, const char *receipt, const void *body,
                  size_t len, int invis_s, char new_receipt[SL_RECEIPT_MAX], char tag[SL_TAG_MAX]) {
    if (invis_s < 0 || invis_s > SL_INVIS_MAX || len > 16 * 1024 * 1024) return SL_EINVAL;
    qstate *q;
    int rc = open_queue(e, account, queue, &q);
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
    char newtag[SL_TAG_MAX];
    if (body) hex(newtag, 8);
    else sl_val_str(&r.rows[0].v[M_TAG], newtag, sizeof newtag);
    sl_result_free(&r);
    sl_write w = {0};
    msg_key(&w, q->qkey, id / q->opts.bucket_size, id);
    w.kind = SL_W_UPDATE_IF;
    w.ttl = (int)ttl_left_s(exp, now);
    w.row.v[M_VERSION] = sl_vint(version + 1);
    w.row.v[M_VISIBLE] = sl_vint(visible);
    w.row.v[M_NONCE] = sl_vint(eng_nonce());
    if (body) {
        w.row.v[M_BODY] = sl_vbytes(body, len);
        w.row.v[M_TAG] = sl_vtext(newtag);
    }
    w.cond[0] = (sl_cond){M_VERSION, sl_vint(version)};
    w.cond[1] = (sl_cond){M_STATE, sl_vint(MS_WAITING)};
    w.ncond = 2;
    rc = eng_cas(e, &w, M_NONCE, NULL);
    if (rc == SL_ENOTAPPLIED) return SL_ECONFLICT;
    if (rc) return rc;
    msg_lease_entry(e, q, id, version + 1, visible, exp, 1);
    receipt_make(q, new_receipt, id, version + 1, exp);
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
    for (int64_t b = R, full = 0; full < READ_WINDOW && b < R + READ_SCAN_MAX && b * q->opts.bucket_size < head;
         b++) {
        sl_result r;
        sl_result_init(&r);
        int found = 0;
        if (msg_scan_bucket(e, q, b, &r) == 0 && r.n > 0) full++;
        for (size_t i = 0; i < r.n && !found; i++)
                found = r.rows[i].v[M_ID].i >= 0 && r.rows[i].v[M_STATE].i == MS_READY && !msg_purged(q, &r.rows[i]);
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
