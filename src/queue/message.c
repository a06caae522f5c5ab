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
#include <limits.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "queue_int.h"

#define SETTLE_MS 1000 /* lease entries due this recently may still be landing */

/* Writes 2 * bytes random lowercase hex digits and a NUL. */
static void hex(char *out, int bytes) {
    static const char digit[] = "0123456789abcdef";
    for (int i = 0; i < bytes; i += 8) {
        uint64_t r = sl_random_u64();
        for (int j = 0; j < 8 && i + j < bytes; j++, r >>= 8) {
            out[2 * (i + j)] = digit[(r >> 4) & 15];
            out[2 * (i + j) + 1] = digit[r & 15];
        }
    }
    out[2 * bytes] = '\0';
}

static void msg_key(sl_write *w, const char *qkey, int64_t bucket, int64_t id) {
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
static sl_cond cond_of(const sl_row *m, int col) {
    return (sl_cond){col, unset(&m->v[M_NONCE]) ? sl_vnull() : sl_vint(m->v[col].i)};
}

static int get_msg(sl_engine *e, const char *qkey, int64_t bucket, int64_t id, int cons, sl_result *r) {
    sl_val key[3] = {sl_vtext(qkey), sl_vint(bucket), sl_vint(id)};
    int rc = sl_store_get(e->st, &sl_t_messages, key, cons, r);
    if (rc == 0) msg_norm(&r->rows[0]);
    return rc;
}

/* --- Receipts -------------------------------------------------------------- */

#define RECEIPT_MAC 12 /* bytes of HMAC-SHA256 kept */

/* HMAC-SHA256 (RFC 2104) under the incarnation's secret. The SHA-256 states
 * after the key's inner and outer pads are computed once per incarnation;
 * a MAC then copies them instead of fetching the digest and scheduling the
 * key again, which cost a few microseconds on every receive and ack. */
typedef struct {
    EVP_MD_CTX *in, *out;
} mac_pads;

void msg_receipt_free(qstate *q) {
    mac_pads *m = q->mac_pads;
    if (!m) return;
    EVP_MD_CTX_free(m->in);
    EVP_MD_CTX_free(m->out);
    free(m);
    q->mac_pads = NULL;
}

/* Without the pads (no memory), receipt_mac computes the plain way. */
void msg_receipt_init(qstate *q) {
    mac_pads *m = sl_calloc(1, sizeof *m);
    int ok = m && (m->in = EVP_MD_CTX_new()) != NULL && (m->out = EVP_MD_CTX_new()) != NULL;
    for (int k = 0; ok && k < 2; k++) {
        unsigned char pad[64]; /* SHA-256's block; the 16-byte key padded with zeros */
        memset(pad, k ? 0x5c : 0x36, sizeof pad);
        for (size_t i = 0; i < sizeof q->secret; i++) pad[i] ^= q->secret[i];
        EVP_MD_CTX *c = k ? m->out : m->in;
        ok = EVP_DigestInit_ex(c, EVP_sha256(), NULL) && EVP_DigestUpdate(c, pad, sizeof pad);
    }
    q->mac_pads = m;
    if (!ok) msg_receipt_free(q);
}

static void receipt_mac(const qstate *q, const char *raw, size_t n, unsigned char mac[32]) {
    const mac_pads *m = q->mac_pads;
    unsigned int len = 32;
    EVP_MD_CTX *c = m ? EVP_MD_CTX_new() : NULL;
    unsigned char inner[32];
    int ok = c && EVP_MD_CTX_copy_ex(c, m->in) && EVP_DigestUpdate(c, raw, n) && EVP_DigestFinal_ex(c, inner, &len) &&
             EVP_MD_CTX_copy_ex(c, m->out) && EVP_DigestUpdate(c, inner, sizeof inner) &&
             EVP_DigestFinal_ex(c, mac, &len);
    EVP_MD_CTX_free(c);
    if (!ok) HMAC(EVP_sha256(), q->secret, (int)sizeof q->secret, (const unsigned char *)raw, n, mac, &len);
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
            rc = eng_cas(e, &w, MO_NONCE, NULL);
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
    int rc = sl_store_slice(e->st, &s, out);
    for (size_t i = 0; rc == 0 && i < out->n; i++) msg_norm(&out->rows[i]);
    return rc;
}

/* The lease index entry of message id (at version) that becomes due at
 * due. */
static void lease_entry_write(qstate *q, int64_t id, int64_t version, int64_t due, int64_t exp_ms, int64_t now,
                              sl_write *w) {
    memset(w, 0, sizeof *w);
    w->t = &sl_t_leases;
    w->kind = SL_W_UPSERT;
    w->row.v[L_QKEY] = sl_vtext(q->qkey);
    w->row.v[L_MINUTE] = sl_vint(due / 60000);
    w->row.v[L_DUE] = sl_vint(due);
    w->row.v[L_ID] = sl_vint(id);
    w->row.v[L_VERSION] = sl_vint(version);
    w->ttl = (int)ttl_left_s((exp_ms > due ? exp_ms : due) + 60000, now);
}

/* Whether a moment stamped (mono_ms, sl_now_ms) is less than FRESH_IDLE_MS
 * ago by both clocks: the monotonic one bounds how late another node's
 * writes are seen, the engine's (which tests drive) lets a clock jump end
 * the wait. */
static int recent(int64_t mono_then, int64_t now_then) {
    return sl_mono_ms() - mono_then < FRESH_IDLE_MS && sl_now_ms() - now_then < FRESH_IDLE_MS;
}

/* Remembers when the lease entries this node writes fall due, in a
 * min-heap, so that a receive knows whether one of them can be due before
 * it scans the index (see take_due). Beyond LEASE_DEFER_MAX remembered
 * times the queue stops skipping scans. */
static void lease_dues_note(qstate *q, const sl_write *w, size_t n) {
    pthread_mutex_lock(&q->mu);
    for (size_t k = 0; k < n && !q->dues_overflow; k++) {
        if (q->ndues == q->dues_cap) {
            size_t cap = q->dues_cap ? 2 * q->dues_cap : 256;
            int64_t *d = cap <= LEASE_DEFER_MAX ? sl_realloc(q->dues, cap * sizeof *d) : NULL;
            if (!d) {
                q->dues_overflow = 1;
                break;
            }
            q->dues = d;
            q->dues_cap = cap;
        }
        size_t i = q->ndues++;
        int64_t due = w[k].row.v[L_DUE].i;
        while (i > 0 && q->dues[(i - 1) / 2] > due) {
            q->dues[i] = q->dues[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        q->dues[i] = due;
    }
    pthread_mutex_unlock(&q->mu);
}

/* Forgets the remembered due times up to now less SETTLE_MS; caller holds
 * q->mu. Entries due since may not have landed when a scan looks for them
 * (most are written without waiting), so their due times keep the next
 * receives scanning until they are settled, as the scan's cursor does. */
static void lease_dues_pop(qstate *q, int64_t now) {
    now -= SETTLE_MS;
    while (q->ndues > 0 && q->dues[0] <= now) {
        int64_t last = q->dues[--q->ndues];
        size_t i = 0;
        for (;;) {
            size_t c = 2 * i + 1;
            if (c >= q->ndues) break;
            if (c + 1 < q->ndues && q->dues[c + 1] < q->dues[c]) c++;
            if (q->dues[c] >= last) break;
            q->dues[i] = q->dues[c];
            i = c;
        }
        if (q->ndues > 0) q->dues[i] = last;
    }
}

/* Defers the entry of a lease that lasts LEASE_DEFER_MIN_MS or more: it is
 * written LEASE_DEFER_MS after the lease (by the poller, or by take_due),
 * unless an ack or an update cancels it first. Losing a deferred entry in a
 * crash loses no message, as for a lost entry (see msg_lease_entry), and
 * since it is written at least a second before it is due, other nodes see
 * it in time. Returns 1 when deferred. */
static int lease_entry_defer(qstate *q, int64_t id, int64_t version, int64_t due, int64_t exp_ms, int64_t now) {
    if (due - now < LEASE_DEFER_MIN_MS) return 0;
    pthread_mutex_lock(&q->mu);
    if (q->pend_n == q->pend_cap && q->pend_cap < LEASE_DEFER_MAX) {
        size_t cap = q->pend_cap ? 2 * q->pend_cap : 256;
        struct pend_entry *p = sl_malloc(cap * sizeof *p);
        if (p) {
            for (size_t i = 0; i < q->pend_n; i++) p[i] = q->pend[(q->pend_head + i) % q->pend_cap];
            free(q->pend);
            q->pend = p;
            q->pend_head = 0;
            q->pend_cap = cap;
        }
    }
    int ok = q->pend_n < q->pend_cap;
    if (ok) {
        q->pend[(q->pend_head + q->pend_n) % q->pend_cap] =
            (struct pend_entry){id, version, due, exp_ms, now + LEASE_DEFER_MS};
        q->pend_n++;
    }
    pthread_mutex_unlock(&q->mu);
    return ok;
}

/* Forgets the deferred entry of (id, version), if it is among the newest
 * ones (an ack usually comes soon after its lease; an entry not found is
 * written, and skipped later as stale). */
static void lease_entry_cancel(qstate *q, int64_t id, int64_t version) {
    pthread_mutex_lock(&q->mu);
    for (size_t k = 0; k < q->pend_n && k < 4096; k++) {
        struct pend_entry *p = &q->pend[(q->pend_head + q->pend_n - 1 - k) % q->pend_cap];
        if (p->id == id && p->version == version) {
            p->id = -1;
            break;
        }
    }
    pthread_mutex_unlock(&q->mu);
}

/* Writes the deferred entries whose time came (write_at <= upto), waiting
 * for the commit when sync is set. */
int msg_lease_flush(sl_engine *e, qstate *q, int64_t upto, int sync) {
    enum { CHUNK = 64 };
    int64_t now = sl_now_ms();
    for (;;) {
        sl_write w[CHUNK];
        size_t n = 0;
        pthread_mutex_lock(&q->mu);
        while (q->pend_n > 0 && n < CHUNK) {
            struct pend_entry *p = &q->pend[q->pend_head];
            if (p->write_at > upto) break;
            if (p->id >= 0) lease_entry_write(q, p->id, p->version, p->due, p->exp_ms, now, &w[n++]);
            q->pend_head = (q->pend_head + 1) % q->pend_cap;
            q->pend_n--;
        }
        int more = q->pend_n > 0 && q->pend[q->pend_head].write_at <= upto;
        pthread_mutex_unlock(&q->mu);
        if (n > 0) {
            lease_dues_note(q, w, n);
            int rc = sync ? eng_write(e, w, n) : sl_store_apply_async(e->st, w, n);
            if (rc == SL_EUNKNOWN) rc = eng_write(e, w, n); /* idempotent upserts */
            if (rc) {
                sl_log(SL_INFO, "lease entries for %s not written: %s", q->qkey, sl_strerror(rc));
                return rc;
            }
        }
        if (!more) return 0;
    }
}

int msg_lease_entry(sl_engine *e, qstate *q, int64_t id, int64_t version, int64_t due, int64_t exp_ms, int async) {
    int64_t now = sl_now_ms();
    if (async && lease_entry_defer(q, id, version, due, exp_ms, now)) return 0;
    sl_write w;
    lease_entry_write(q, id, version, due, exp_ms, now, &w);
    lease_dues_note(q, &w, 1);
    /* The entry is an index of the message rows: if it is lost, the message
     * is not, since the repair worker moves expired waiting messages before
     * it finalizes their bucket, or in the newest bucket once their lease
     * has been over for the finalize timeout (later, so only after a
     * crash). Where the message already exists it is written without
     * waiting; a plain upsert of the same values is idempotent, so an
     * unknown outcome is retried. */
    int rc = async ? sl_store_apply_async(e->st, &w, 1) : eng_write(e, &w, 1);
    if (rc == SL_EUNKNOWN) rc = eng_write(e, &w, 1);
    if (rc) sl_log(SL_INFO, "lease entry for %s/%lld not written: %s", q->qkey, (long long)id, sl_strerror(rc));
    return rc;
}

static void fresh_feed(qstate *q, const sl_write *w, size_t n);

/* --- Put ---------------------------------------------------------------------- */

static int is_sealed(sl_engine *e, const char *qkey, int64_t bucket) {
    sl_result r;
    sl_result_init(&r);
    int rc = get_msg(e, qkey, bucket, -1, SL_READ_DEFAULT, &r);
    sl_result_free(&r);
    return rc == 0;
}

static int open_queue(sl_engine *e, const char *account, const char *queue, qstate **q);

/* A put's rows as built by put_rows, with what put_after needs. */
typedef struct {
    int64_t id, block_ms;
    char tag[SL_TAG_MAX];
} put_pending;

static int put_check(sl_engine *e, const char *account, const char *queue, const sl_put *msgs, size_t n,
                     qstate **q) {
    if (n < 1 || n > SL_BATCH_MAX) return SL_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (msgs[i].delay_s < 0 || msgs[i].delay_s > SL_INVIS_MAX || msgs[i].len > 16 * 1024 * 1024)
            return SL_EINVAL;
    int rc = sl_account_exists(e, account);
    return rc ? rc : eng_queue(e, account, queue, q);
}

/* Claims ids for n messages and builds their rows in w[0..n); delayed
 * messages' lease entries (built in entries[0..n)) go to the store first,
 * here. The rows borrow msgs' bytes and ids. */
static int put_rows(sl_engine *e, qstate *q, const sl_put *msgs, size_t n, char (*ids)[SL_MSGID_LEN + 1],
                    put_pending *p, sl_write *w, sl_write *entries, int *any_visible) {
    int64_t now = sl_now_ms(), exp = now + q->opts.retention_s * 1000;
    size_t nentries = 0;
    int rc = 0;
    *any_visible = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const sl_put *m = &msgs[i];
        if ((rc = claim(e, q, &p[i].id, &p[i].block_ms)) != 0) break;
        int64_t id = p[i].id, visible = now + (int64_t)m->delay_s * 1000;
        hex(ids[i], SL_MSGID_LEN / 2);
        hex(p[i].tag, 8);
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
        if (m->delay_s > 0) lease_entry_write(q, id, 0, visible, exp, now, &entries[nentries++]);
    }
    if (rc == 0 && nentries > 0) {
        lease_dues_note(q, entries, nentries);
        rc = eng_write(e, entries, nentries);
        if (rc == SL_EUNKNOWN) rc = eng_write(e, entries, nentries); /* idempotent upserts */
    }
    return rc;
}

/* What follows the write of a put's rows, which returned rc. */
static int put_after(sl_engine *e, qstate *q, const sl_write *w, const put_pending *p, size_t n, int any_visible,
                     int rc) {
    if (rc == 0) {
        fresh_feed(q, w, n);
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
        if (sl_now_ms() - p[i].block_ms >= e->cfg.lease_grace_ms / 2 && is_sealed(e, q->qkey, bucket)) {
            sl_result r;
            sl_result_init(&r);
            /* Only a row nobody has taken: the reader may have found it
             * before the marker (the put was slow), leased it, and even
             * had it acked; moving that one would deliver it again. */
            if (get_msg(e, q->qkey, bucket, p[i].id, SL_READ_SERIAL, &r) == 0 &&
                r.rows[0].v[M_STATE].i == MS_READY)
                msg_move(e, q, &r.rows[0], q, 0, 0);
            sl_result_free(&r);
        }
    }
    if (rc == 0 && any_visible) eng_notify_n(e, q, (size_t)any_visible);
    return rc;
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
    w.cond[0] = cond_of(row, M_VERSION);
    w.cond[1] = cond_of(row, M_STATE);
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
    w->cond[0] = cond_of(m, M_VERSION);
    w->cond[1] = cond_of(m, M_STATE);
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
    eng_cas_many(e, q, &w, 1, M_NONCE, &rc);
    if (rc) return rc;
    msg_lease_entry(e, q, m->v[M_ID].i, m->v[M_VERSION].i + 1, visible, m->v[M_EXP].i, 1);
    return leased_message(q, m, out);
}

/* The leases of rows[0..k) (READY, or WAITING and due): rows that are due
 * for the dead-letter queue go there instead; the others get a lease write
 * in w, their rows in todo. Returns how many, or a store error. */
static int lease_writes(sl_engine *e, qstate *q, sl_row **rows, size_t k, int invis_s, sl_row **todo,
                        sl_write *w, int64_t *visible) {
    int64_t now = sl_now_ms();
    *visible = now + (int64_t)invis_s * 1000;
    int n = 0, rc;
    for (size_t i = 0; i < k && n < SL_RECEIVE_MAX; i++) {
        if ((rc = dead_letter_due(e, q, rows[i])) < 0) return rc;
        if (rc == 0) {
            lease_write(q, rows[i], now, *visible, &w[n]);
            todo[n++] = rows[i];
        }
    }
    return n;
}

/* After the lease writes of todo[0..n) answered rcs: appends to out the
 * messages leased, and writes their lease entries (or defers them) in one
 * batch. Returns 0 if anything was leased, else the first store error. */
static int lease_after(sl_engine *e, qstate *q, sl_row **todo, size_t n, const int *rcs, int64_t visible,
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
        if ((rc = leased_message(q, todo[i], &out[*got])) != 0) return rc;
        (*got)++;
        int64_t id = todo[i]->v[M_ID].i, ver = todo[i]->v[M_VERSION].i + 1, exp = todo[i]->v[M_EXP].i;
        if (!lease_entry_defer(q, id, ver, visible, exp, now)) lease_entry_write(q, id, ver, visible, exp, now, &entries[ne++]);
    }
    if (ne > 0) {
        lease_dues_note(q, entries, ne);
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
static int lease_batch(sl_engine *e, qstate *q, sl_row **rows, size_t k, int invis_s, sl_message *out,
                       size_t *got) {
    sl_row *todo[SL_RECEIVE_MAX];
    sl_write w[SL_RECEIVE_MAX];
    int rcs[SL_RECEIVE_MAX];
    int64_t visible;
    int n = lease_writes(e, q, rows, k, invis_s, todo, w, &visible);
    if (n <= 0) return n;
    eng_cas_many(e, q, w, (size_t)n, M_NONCE, rcs);
    return lease_after(e, q, todo, (size_t)n, rcs, visible, out, got);
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
                       recent(q->lscan_mono_ms, q->lscan_now_ms) &&
                       q->lcur_due >= now - SETTLE_MS - FRESH_IDLE_MS; /* the last walk reached the end */
            if (!idle) {
                q->lscan_dirty = 0;
                q->lscan_mono_ms = sl_mono_ms();
                q->lscan_now_ms = now;
                lease_dues_pop(q, now);
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

/* Whether bucket b may be sealed: every message it will ever hold was
 * delivered, that is ids have moved past it, none of its rows is READY, and
 * every id is present or has been missing for the gap grace (a put that
 * claimed it crashed, or its write is late; a late write is republished by
 * the repair worker). Returns SEAL_DONE when b carries its marker already,
 * SEAL_NOW when it may be sealed, 0 when not. */
enum { SEAL_DONE = 1, SEAL_NOW };

/* The gap clock of bucket b, which ids have moved past and which holds
 * present rows, fewer than its size: returns when it started. It starts
 * when the bucket is first seen so, whether or not it still has READY rows,
 * and again whenever a row arrives; for a block this node claimed, at the
 * claim (its ids were handed out no earlier), and for buckets of a block
 * this node gave up before it used them, long ago: no row can ever appear
 * there (see claim). Every bucket of the reader window is noted as it is
 * read, not only the front one, so that a run of gaps is waited out once,
 * side by side, rather than one grace period per bucket. */
static int64_t gap_clock(qstate *q, int64_t b, int64_t present, int64_t now) {
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

static int seal_state(sl_engine *e, qstate *q, int64_t b, const sl_result *r, int ready, int64_t now) {
    int64_t S = q->opts.bucket_size, present = 0;
    for (size_t i = 0; i < r->n; i++) {
        if (r->rows[i].v[M_ID].i < 0) return SEAL_DONE; /* the marker */
        present++;
    }
    pthread_mutex_lock(&q->mu);
    int64_t head = q->head;
    pthread_mutex_unlock(&q->mu);
    if (head < (b + 1) * S) return 0;
    if (present < S && now - gap_clock(q, b, present, now) < e->cfg.lease_grace_ms) return 0;
    return ready ? 0 : SEAL_NOW;
}

/* Takes the right to seal this queue's buckets: one thread of this node
 * seals at a time, and the others go on reading past what it seals. */
static int seal_take(qstate *q) {
    pthread_mutex_lock(&q->mu);
    int busy = q->sealing;
    q->sealing = 1;
    pthread_mutex_unlock(&q->mu);
    return !busy;
}

/* Waits for the seal markers of one seal_run, sent side by side. */
struct seal_wait {
    sem_t sem;
    int left, rc[SEAL_BATCH];
};
struct seal_slot {
    struct seal_wait *w;
    int i;
};

static void seal_answer(void *arg, int rc) {
    struct seal_slot *s = arg;
    s->w->rc[s->i] = rc;
    if (__atomic_sub_fetch(&s->w->left, 1, __ATOMIC_ACQ_REL) == 0) sem_post(&s->w->sem);
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
#define SEAL_GAPS (INT64_C(1) << 62) /* in seal_run's b[]: the bucket was short of rows */

static int seal_late_rows(sl_engine *e, qstate *q, int64_t b);

static int seal_run(sl_engine *e, qstate *q, const int64_t *bs, int n) {
    int64_t R = -1, b[SEAL_BATCH];
    int gaps[SEAL_BATCH];
    sl_write w[SEAL_BATCH];
    struct seal_slot slot[SEAL_BATCH];
    struct seal_wait sw = {.left = n};
    if (n > SEAL_BATCH) n = sw.left = SEAL_BATCH;
    for (int i = 0; i < n; i++) {
        gaps[i] = (bs[i] & SEAL_GAPS) != 0;
        b[i] = bs[i] & ~SEAL_GAPS;
    }
    sem_init(&sw.sem, 0, 0); /* cannot fail for a process-private semaphore */
    for (int i = 0; i < n; i++) {
        memset(&w[i], 0, sizeof w[i]);
        msg_key(&w[i], q->qkey, b[i], -1);
        w[i].kind = SL_W_INSERT_IF_NOT_EXISTS;
        w[i].ttl = (int)(q->opts.retention_s + 86400);
        w[i].row.v[M_STATE] = sl_vint(MS_SEALED);
        w[i].row.v[M_PUT] = sl_vint(sl_now_ms());
        w[i].row.v[M_NONCE] = sl_vint(eng_nonce());
        slot[i] = (struct seal_slot){&sw, i};
    }
    for (int i = 0; i < n; i++) sl_store_apply_cb(e->st, &w[i], 1, seal_answer, &slot[i]);
    if (n > 0) {
        while (sem_wait(&sw.sem) != 0) {
        } /* EINTR */
    }
    sem_destroy(&sw.sem);
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

/* --- The fresh pool ------------------------------------------------------------ */

/* Reading the reader window for every receive would read the same rows once
 * per consumer. Instead one thread at a time refills a per-queue pool from
 * the window when it runs dry, and receivers pop rows from it under q->mu:
 * in steady state a receive reads nothing, and the threads of one node never
 * race each other for a row. Nodes still race each other, and the CAS of
 * the lease settles that; a row leased elsewhere since it was read costs one
 * CAS that is not applied. */

/* The size of row m with its text and blob values, as row_dup copies it. */
static size_t row_bytes(const sl_row *m) {
    size_t n = sizeof *m;
    for (int i = 0; i < SL_MAX_COLS; i++)
        if (m->v[i].set && !m->v[i].null && m->v[i].p) n += m->v[i].n + 1;
    return n;
}

/* A deep copy of row m in one allocation; *bytes gets its size. */
static sl_row *row_dup(const sl_row *m, size_t *bytes) {
    *bytes = row_bytes(m);
    sl_row *c = sl_malloc(*bytes);
    if (!c) return NULL;
    *c = *m;
    char *p = (char *)(c + 1);
    for (int i = 0; i < SL_MAX_COLS; i++) {
        sl_val *v = &c->v[i];
        if (!v->set || v->null || !v->p) continue;
        memcpy(p, v->p, v->n);
        p[v->n] = '\0';
        v->p = p;
        p += v->n + 1;
    }
    return c;
}

/* Appends a copy made by row_dup to the pool, or frees it when the pool
 * has no room (or the queue is gone); returns 1 when appended. Caller holds
 * q->mu. */
static int fresh_push(qstate *q, sl_row *c, size_t size) {
    if (!q->fresh) q->fresh = sl_calloc(FRESH_MAX, sizeof *q->fresh);
    if (!q->fresh || q->dead || q->nfresh >= FRESH_MAX || q->fresh_bytes + size > FRESH_BYTES) {
        free(c);
        return 0;
    }
    q->fresh[q->nfresh++] = c;
    q->fresh_bytes += size;
    return 1;
}

void msg_fresh_drop(qstate *q) {
    pthread_mutex_lock(&q->mu);
    for (int i = q->fresh_pos; i < q->nfresh; i++)
        free(q->fresh[i]);
    q->nfresh = q->fresh_pos = 0;
    q->fresh_bytes = 0;
    pthread_mutex_unlock(&q->mu);
}

/* Ends this thread's lease attempts on the rows v[0..n) and frees them. */
static void leasing_end(qstate *q, sl_row **v, size_t n) {
    pthread_mutex_lock(&q->mu);
    for (size_t i = 0; i < n; i++) {
        int64_t id = v[i]->v[M_ID].i;
        for (int j = 0; j < q->nleasing; j++)
            if (q->leasing[j] == id) {
                q->leasing[j] = q->leasing[--q->nleasing];
                break;
            }
    }
    pthread_mutex_unlock(&q->mu);
    for (size_t i = 0; i < n; i++)
        free(v[i]);
}

static int cmp_id(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Pops up to want rows of one bucket (so that they can be leased in one
 * conditional batch) and marks them as being leased. Rows purged since the
 * refill are dropped. Caller holds q->mu. */
static size_t fresh_pop(qstate *q, sl_row **v, size_t want) {
    size_t k = 0;
    while (q->fresh_pos < q->nfresh && k < want && q->nleasing < MAX_CLAIMED) {
        sl_row *m = q->fresh[q->fresh_pos];
        if (k > 0 && m->v[M_BUCKET].i != v[0]->v[M_BUCKET].i) break;
        q->fresh[q->fresh_pos++] = NULL;
        q->fresh_bytes -= row_bytes(m);
        if (m->v[M_PUT].i <= q->purge_ms) {
            free(m);
            continue;
        }
        q->leasing[q->nleasing++] = m->v[M_ID].i;
        v[k++] = m;
    }
    if (q->fresh_pos == q->nfresh) q->nfresh = q->fresh_pos = 0;
    return k;
}

static void shuffle(sl_row **v, size_t n) {
    for (size_t i = n; i > 1; i--) {
        size_t j = sl_random_u64() % i;
        sl_row *t = v[i - 1];
        v[i - 1] = v[j];
        v[j] = t;
    }
}

/* Adds copies of the READY rows of one scanned bucket to the pool, except
 * those in busy[0..nbusy) (sorted); returns how many, or -1 when out of
 * memory. *all is cleared when the pool had no room for some. */
static int fresh_add(qstate *q, sl_row **cands, size_t nc, const int64_t *busy, size_t nbusy, int *all) {
    sl_row *copies[1024];
    size_t sizes[1024], n = 0, bytes = 0;
    for (size_t i = 0; i < nc && n < 1024; i++) {
        if (bytes >= FRESH_BYTES) {
            *all = 0;
            break;
        }
        if (bsearch(&cands[i]->v[M_ID].i, busy, nbusy, sizeof *busy, cmp_id)) continue;
        if (!(copies[n] = row_dup(cands[i], &sizes[n]))) {
            while (n > 0) free(copies[--n]);
            return -1;
        }
        bytes += sizes[n++];
    }
    int added = 0;
    pthread_mutex_lock(&q->mu);
    for (size_t i = 0; i < n; i++) {
        if (fresh_push(q, copies[i], sizes[i]))
            added++;
        else
            *all = 0;
    }
    pthread_mutex_unlock(&q->mu);
    return added;
}

/* Refills the pool from the reader window: READ_WINDOW buckets that hold
 * messages, from the reader pointer on, and more while the pool holds fewer
 * than FRESH_TARGET rows (empty buckets, ids claimed and never used or not
 * written yet, are passed over; READ_SCAN_MAX buckets are read at most, so
 * that gaps never starve delivery). Buckets at the front of the window that
 * hold no READY row any more are noted in seal[] (up to SEAL_BATCH), for the
 * caller to seal once it has handed the rows out (seal_run); when the
 * refill finds nothing to hand out, it seals them itself and reads on.
 *
 * Past the first bucket that cannot be sealed yet, buckets below
 * q->fresh_next are not read again: each was read with all its ids present
 * (no row can appear in it later) and its READY rows went to the pool, so
 * they are being leased or were. With many consumers the front buckets
 * still hold rows in flight; without this, the window would fill with
 * buckets that have nothing left to give. The front bucket is always read,
 * so a row whose lease failed is found again once the buckets before it
 * are sealed. */
static int fresh_fill(sl_engine *e, qstate *q, int *found, int64_t *seal, int *nseal) {
    int64_t S = q->opts.bucket_size, now = sl_now_ms();
    int rc;
    /* The pool is empty when a refill begins, so the only rows it may read
     * as READY although this node is leasing them (their CAS has not
     * committed yet) are those being leased now: it passes over those. */
    int64_t busy[MAX_CLAIMED];
    pthread_mutex_lock(&q->mu);
    int64_t R = q->reader, next = q->fresh_next;
    size_t nbusy = (size_t)q->nleasing;
    memcpy(busy, q->leasing, nbusy * sizeof *busy);
    pthread_mutex_unlock(&q->mu);
    qsort(busy, nbusy, sizeof *busy, cmp_id);
    if (R < 0) {
        if ((rc = eng_pointer_get(e, q->qkey, "reader", &R)) != 0) return rc;
        pthread_mutex_lock(&q->mu);
        if (q->reader < R) q->reader = R;
        pthread_mutex_unlock(&q->mu);
    }
    int added = 0;
    int64_t R0 = R;
    for (int pass = 0; pass < 2; pass++) {
        pthread_mutex_lock(&q->mu);
        int64_t head = q->head;
        pthread_mutex_unlock(&q->mu);
        int prefix = 1;
        int64_t b = R;
        for (int k = 0, full = 0; (full < READ_WINDOW || added < FRESH_TARGET) && k < READ_SCAN_MAX && b * S < head;
             k++, b++) {
            if (!prefix && b < next && (b = next) * S >= head) break;
            sl_result r;
            sl_result_init(&r);
            if ((rc = msg_scan_bucket(e, q, b, &r)) != 0) {
                sl_result_free(&r);
                return rc;
            }
            if (r.n > 0) full++;
            sl_row *cands[1024];
            size_t nc = 0;
            int64_t present = 0;
            for (size_t i = 0; i < r.n && nc < 1024; i++) {
                sl_row *m = &r.rows[i];
                present += m->v[M_ID].i >= 0;
                if (m->v[M_ID].i >= 0 && m->v[M_STATE].i == MS_READY && !msg_purged(q, m)) cands[nc++] = m;
            }
            if (!q->opts.strict_fifo) shuffle(cands, nc);
            int all = 1, n = fresh_add(q, cands, nc, busy, nbusy, &all);
            if (n < 0) {
                sl_result_free(&r);
                return SL_ENOMEM;
            }
            added += n;
            /* next only moves over a contiguous run of buckets read whole
             * and taken whole. */
            if (b == next && present == S && all) next = b + 1;
            /* The prefix: buckets from the reader on that are sealed, or
             * may be and are noted in seal[] for the caller to seal. Past
             * it, a bucket short of rows starts its gap clock now. */
            if (!prefix && present < S && (b + 1) * S <= head && !(r.n > 0 && r.rows[0].v[M_ID].i < 0))
                gap_clock(q, b, present, now);
            if (prefix) {
                int st = seal_state(e, q, b, &r, nc > 0, now);
                if (st == SEAL_DONE && *nseal == 0) {
                    R = b + 1;
                    pthread_mutex_lock(&q->mu);
                    if (q->reader < R) q->reader = R;
                    pthread_mutex_unlock(&q->mu);
                } else if (st && *nseal < SEAL_BATCH && (*nseal > 0 || seal_take(q))) {
                    /* A marker there already costs one CAS not applied. */
                    seal[(*nseal)++] = b | (present < S ? SEAL_GAPS : 0);
                } else {
                    prefix = 0;
                }
            }
            sl_result_free(&r);
            if (!all) break; /* the pool is full */
        }
        *found = added;
        pthread_mutex_lock(&q->mu);
        q->fresh_next = next > R ? next : R;
        pthread_mutex_unlock(&q->mu);
        /* Another node may have moved the pointer further; it only grows. */
        if (R > R0 && (rc = eng_pointer_max(e, q->qkey, "reader", R)) != 0) return rc;
        R0 = R;
        if (added > 0) break;
        /* Nothing to hand out, so nobody waits for these seals: seal now,
         * and read on from past them. */
        if (*nseal > 0) {
            rc = seal_run(e, q, seal, *nseal);
            *nseal = 0;
            if (rc) return rc;
            pthread_mutex_lock(&q->mu);
            int sealed = R < q->reader;
            if (sealed) R = R0 = q->reader;
            pthread_mutex_unlock(&q->mu);
            if (sealed) {
                pass--; /* R moved: read on from there (it only grows, up to the head) */
                continue;
            }
        }
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

/* Hands rows just put (READY, durable) to the pool, so that receivers on
 * this node find them without reading. While a refill runs, or when the
 * pool is full, the rows are left for a refill to find instead. */
static void fresh_feed(qstate *q, const sl_write *w, size_t n) {
    sl_row *copies[SL_BATCH_MAX];
    size_t sizes[SL_BATCH_MAX], k = 0, ready = 0;
    for (size_t i = 0; i < n && k < SL_BATCH_MAX; i++) {
        sl_row m = w[i].row; /* as a read would see it */
        msg_norm(&m);
        if (m.v[M_STATE].i != MS_READY) continue;
        ready++;
        if ((copies[k] = row_dup(&m, &sizes[k])) != NULL) k++;
    }
    pthread_mutex_lock(&q->mu);
    if (k < ready) q->fresh_dirty = 1; /* out of memory: a refill finds the rest */
    for (size_t i = 0; i < k; i++) {
        if (q->fresh_scanning) {
            free(copies[i]);
            q->fresh_dirty = 1;
        } else if (!fresh_push(q, copies[i], sizes[i])) {
            q->fresh_dirty = 1;
        }
    }
    pthread_mutex_unlock(&q->mu);
}

/* Takes messages never delivered, from the pool, refilling it when it is
 * dry. A thread that finds another one refilling waits for that refill
 * instead of reading the same buckets again. A receive gives up (and
 * returns what it has, maybe nothing) once a refill found nothing new, or
 * after a few refills that others emptied first. */
/* Pops up to want rows of one bucket from the fresh pool into v (*k of
 * them; they are the caller's until leasing_end), refilling the pool when
 * it is dry, at most 4 times per receive (*refills counts them) and not at
 * all when the receive already has messages (have). *k == 0: nothing to
 * lease now. */
static int fresh_take(sl_engine *e, qstate *q, size_t want, int have, int *refills, sl_row **v, size_t *k) {
    *k = 0;
    for (;;) {
        pthread_mutex_lock(&q->mu);
        if ((*k = fresh_pop(q, v, want)) > 0 || have || *refills >= 4) {
            pthread_mutex_unlock(&q->mu);
            return 0;
        }
        if (!q->fresh_scanning && !q->fresh_dirty && q->fresh_moves == __atomic_load_n(&e->moves, __ATOMIC_ACQUIRE) &&
            recent(q->fresh_mono_ms, q->fresh_now_ms)) {
            pthread_mutex_unlock(&q->mu);
            return 0; /* nothing can have appeared since the last refill */
        }
        (*refills)++;
        if (q->fresh_scanning) {
            uint64_t gen = q->fresh_gen;
            while (q->fresh_scanning && q->fresh_gen == gen)
                pthread_cond_wait(&q->fresh_cv, &q->mu);
            int found = q->fresh_found;
            pthread_mutex_unlock(&q->mu);
            if (!found) return 0;
            continue;
        }
        q->fresh_scanning = 1;
        q->fresh_dirty = 0;
        q->fresh_moves = __atomic_load_n(&e->moves, __ATOMIC_ACQUIRE);
        pthread_mutex_unlock(&q->mu);
        int64_t seal[SEAL_BATCH];
        int found = 0, nseal = 0, rc = fresh_fill(e, q, &found, seal, &nseal);
        pthread_mutex_lock(&q->mu);
        q->fresh_scanning = 0;
        q->fresh_found = found;
        /* A refill that found rows may have stopped at a limit. */
        if (found || rc) q->fresh_dirty = 1;
        q->fresh_mono_ms = sl_mono_ms();
        q->fresh_now_ms = sl_now_ms(); /* the engine's clock, which tests drive */
        q->fresh_gen++;
        pthread_mutex_unlock(&q->mu);
        pthread_cond_broadcast(&q->fresh_cv);
        if (nseal > 0) {
            int src = seal_run(e, q, seal, nseal);
            if (!rc) rc = src;
            /* More delivered buckets may follow the ones just sealed
             * (other refills read past them meanwhile): the next
             * receive refills, and so seals on, even on a queue that
             * has gone quiet. */
            pthread_mutex_lock(&q->mu);
            q->fresh_dirty = 1;
            pthread_mutex_unlock(&q->mu);
        }
        if (rc) return rc;
        if (!found) return 0;
    }
}

static int take_fresh(sl_engine *e, qstate *q, int max, int invis_s, sl_message *out, size_t *got) {
    int refills = 0;
    while ((int)*got < max) {
        sl_row *v[SL_RECEIVE_MAX];
        size_t k;
        int rc = fresh_take(e, q, (size_t)max - *got, *got > 0, &refills, v, &k);
        if (rc || k == 0) return rc;
        rc = lease_batch(e, q, v, k, invis_s, out, got);
        leasing_end(q, v, k);
        if (rc) return rc;
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

/* The CAS that acks message id as leased at version. */
static void ack_write(qstate *q, int64_t id, int64_t version, int64_t exp, int64_t now, sl_write *w) {
    memset(w, 0, sizeof *w);
    msg_key(w, q->qkey, id / q->opts.bucket_size, id);
    w->kind = SL_W_UPDATE_IF;
    w->ttl = (int)ttl_left_s(exp, now);
    w->row.v[M_STATE] = sl_vint(MS_ACKED);
    w->row.v[M_VERSION] = sl_vint(version + 1);
    w->row.v[M_NONCE] = sl_vint(eng_nonce());
    w->cond[0] = (sl_cond){M_VERSION, sl_vint(version)};
    w->cond[1] = (sl_cond){M_STATE, sl_vint(MS_WAITING)};
    w->ncond = 2;
}

/* One CAS per receipt, no read: the receipt carries everything the write
 * needs. A lease that ran out but was not handed to anyone else still has
 * this version, so such an ack succeeds, as API.md promises.
 * Parses n receipts into ack writes: w[0..*k) for receipts idx[0..*k). */
static void ack_writes(qstate *q, const char *const *receipts, size_t n, int *rcs, sl_write *w, size_t *idx,
                       size_t *k) {
    int64_t now = sl_now_ms();
    *k = 0;
    for (size_t i = 0; i < n; i++) {
        int64_t id, version, exp;
        if ((rcs[i] = receipt_parse(q, receipts[i], &id, &version, &exp)) != 0) continue;
        ack_write(q, id, version, exp, now, &w[*k]);
        idx[(*k)++] = i;
    }
}

/* Maps the acks' outcomes to rcs and cancels the acked leases' entries. */
static void ack_after(qstate *q, const sl_write *w, size_t k, const size_t *idx, const int *krc, int *rcs) {
    for (size_t x = 0; x < k; x++) {
        rcs[idx[x]] = krc[x] == SL_ENOTAPPLIED ? SL_ECONFLICT : krc[x];
        if (krc[x] == 0) lease_entry_cancel(q, w[x].row.v[M_ID].i, w[x].cond[0].v.i);
    }
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
    /* The tag names the message, as in CassieQ, and stays through updates
     * of its body; the receipt is what names a delivery. */
    char newtag[SL_TAG_MAX];
    sl_val_str(&r.rows[0].v[M_TAG], newtag, sizeof newtag);
    sl_result_free(&r);
    sl_write w = {0};
    msg_key(&w, q->qkey, id / q->opts.bucket_size, id);
    w.kind = SL_W_UPDATE_IF;
    w.ttl = (int)ttl_left_s(exp, now);
    w.row.v[M_VERSION] = sl_vint(version + 1);
    w.row.v[M_VISIBLE] = sl_vint(visible);
    w.row.v[M_NONCE] = sl_vint(eng_nonce());
    if (body) w.row.v[M_BODY] = sl_vbytes(body, len);
    w.cond[0] = (sl_cond){M_VERSION, sl_vint(version)};
    w.cond[1] = (sl_cond){M_STATE, sl_vint(MS_WAITING)};
    w.ncond = 2;
    rc = eng_cas(e, &w, M_NONCE, NULL);
    if (rc == SL_ENOTAPPLIED) return SL_ECONFLICT;
    if (rc) return rc;
    lease_entry_cancel(q, id, version);
    /* A message returned now (or soon) is found through its entry: write
     * it before answering, so that a receive right after finds it. */
    msg_lease_entry(e, q, id, version + 1, visible, exp, invis_s > 1);
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

/* --- Operations that do not wait for the store ---------------------------- */

/* A put, an ack or a receive whose writes are with the store
 * (sl_msg_put_start and the others). Every request sent (see op_send)
 * answers through op_answer; the last answer calls
 * done and posts sem, which op_finish waits on in case it runs first (a
 * server that stops resumes its parked requests). */
enum { OP_PUT = 1, OP_ACK, OP_RECV };
struct op_slot {
    struct sl_op *op;
    size_t i;
};
struct sl_op {
    sl_engine *e;
    qstate *q;
    int kind, rc; /* rc: a put's answer */
    void (*done)(void *);
    void *arg;
    sem_t sem;
    int left;  /* answers still to come, plus one until the start returns */
    size_t n;  /* messages, receipts, or the receive's max */
    size_t nw; /* writes sent: acks, or leases */
    /* Sized for n, in the same allocation: */
    sl_write *w;                   /* put: 2n (rows, then lease entries); ack, receive: n */
    int *krc;                      /* ack, receive: each write's outcome */
    struct op_slot *slot;          /* ack, receive: one per group; put: one */
    size_t *gstart, *gn;           /* ack, receive: groups of writes, sent together */
    int *grc;                      /* ack, receive: each group's answer */
    size_t ngroups;
    put_pending *p;                /* put */
    char (*ids)[SL_MSGID_LEN + 1]; /* put */
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
    size_t size = sizeof(sl_op) + nw * sizeof(sl_write) + n * (sizeof(int) + sizeof(struct op_slot));
    if (kind == OP_PUT) size += n * (sizeof(put_pending) + SL_MSGID_LEN + 1);
    if (kind == OP_ACK) size += n * (sizeof(int) + sizeof(size_t));
    if (kind == OP_RECV) size += n * 2 * sizeof(sl_row *);
    if (kind != OP_PUT) size += n * (2 * sizeof(size_t) + sizeof(int));
    sl_op *op = sl_calloc(1, size);
    if (!op) return NULL;
    /* Largest alignment first: writes, slots and pointers, then ints and
     * ids. */
    char *at = (char *)(op + 1);
    op->w = (sl_write *)at, at += nw * sizeof(sl_write);
    op->slot = (struct op_slot *)at, at += n * sizeof(struct op_slot);
    if (kind == OP_PUT) op->p = (put_pending *)at, at += n * sizeof(put_pending);
    if (kind == OP_ACK) op->idx = (size_t *)at, at += n * sizeof(size_t);
    if (kind == OP_RECV) {
        op->rows = (sl_row **)at, at += n * sizeof(sl_row *);
        op->todo = (sl_row **)at, at += n * sizeof(sl_row *);
    }
    if (kind != OP_PUT) {
        op->gstart = (size_t *)at, at += n * sizeof(size_t);
        op->gn = (size_t *)at, at += n * sizeof(size_t);
        op->grc = (int *)at, at += n * sizeof(int);
    }
    op->krc = (int *)at, at += n * sizeof(int);
    if (kind == OP_ACK) op->rcs = (int *)at, at += n * sizeof(int);
    if (kind == OP_PUT) op->ids = (char(*)[SL_MSGID_LEN + 1])at;
    op->e = e;
    op->q = q;
    op->kind = kind;
    op->n = n;
    op->done = done;
    op->arg = arg;
    op->left = 1;
    sem_init(&op->sem, 0, 0); /* cannot fail for a process-private semaphore */
    return op;
}

static void op_free(sl_op *op) {
    sem_destroy(&op->sem);
    free(op);
}

/* One answer fewer to wait for; the last one ends the operation. Nothing
 * touches op once its semaphore is posted. */
static void op_step(sl_op *op) {
    if (__atomic_sub_fetch(&op->left, 1, __ATOMIC_ACQ_REL) != 0) return;
    op->done(op->arg);
    sem_post(&op->sem);
}

static void op_answer(void *arg, int rc) {
    struct op_slot *s = arg;
    if (s->op->kind == OP_PUT)
        s->op->rc = rc;
    else
        s->op->grc[s->i] = rc;
    op_step(s->op);
}

static void op_swap(sl_op *op, size_t a, size_t b) {
    if (a == b) return;
    sl_write w = op->w[a];
    op->w[a] = op->w[b];
    op->w[b] = w;
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

/* Sends a put's rows as one request. Sends an ack's or a receive's
 * compare-and-sets as one conditional batch per partition (bucket), as
 * eng_cas_many does, each row once per batch: a batch checks all its
 * conditions before it writes, and would apply both writes of one row. A
 * write of a row that an earlier write has too (a receipt given twice) is
 * not sent: op_settle makes it after the others, so the first one wins, as
 * with eng_cas_many. Then lets the start call's own step go. */
enum { GROUP_LATE = INT_MIN };
static void op_send(sl_op *op, size_t n) {
    if (op->kind == OP_PUT) {
        op->left = 2;
        op->slot[0] = (struct op_slot){op, 0};
        sl_store_apply_cb(op->e->st, op->w, n, op_answer, &op->slot[0]);
        op_step(op);
        return;
    }
    /* The repeated rows go last, in their order. */
    size_t end = n;
    for (size_t i = n; i-- > 0;) {
        const sl_table *t = op->w[i].t;
        int late = 0;
        for (size_t j = 0; j < i && !late; j++)
            late = op->w[j].t == t && eng_same_key(&op->w[j], &op->w[i], t->npk + t->nck);
        if (!late) continue;
        for (size_t x = i; x + 1 < end; x++) op_swap(op, x, x + 1);
        end--;
    }
    op->ngroups = 0;
    for (size_t i = 0; i < end;) {
        size_t last = i + 1;
        const sl_table *t = op->w[i].t;
        for (size_t j = last; j < end; j++)
            if (op->w[j].t == t && eng_same_key(&op->w[j], &op->w[i], t->npk)) op_swap(op, last++, j);
        op->gstart[op->ngroups] = i;
        op->gn[op->ngroups++] = last - i;
        i = last;
    }
    size_t sent = op->ngroups;
    for (size_t i = end; i < n; i++) {
        op->gstart[op->ngroups] = i;
        op->gn[op->ngroups] = 1;
        op->grc[op->ngroups++] = GROUP_LATE;
    }
    op->left = (int)sent + 1;
    for (size_t g = 0; g < sent; g++) {
        op->slot[g] = (struct op_slot){op, g};
        sl_store_apply_cb(op->e->st, &op->w[op->gstart[g]], op->gn[g], op_answer, &op->slot[g]);
    }
    op_step(op);
}

/* Each compare-and-set's outcome from its batch's answer, as cas_round
 * settles them: a batch whose outcome is unknown is looked up by nonce, one
 * that was not applied is retried write by write (blocking; a stale receipt
 * or another node's lease, so rare), and a repeated row's write is made
 * now, after the others. */
static void op_settle(sl_op *op) {
    for (size_t g = 0; g < op->ngroups; g++)
        for (size_t x = op->gstart[g]; x < op->gstart[g] + op->gn[g]; x++) {
            op->krc[x] = op->grc[g] == GROUP_LATE ? eng_cas(op->e, &op->w[x], M_NONCE, NULL)
                                                  : eng_cas_settle(op->e, &op->w[x], M_NONCE, op->grc[g], op->gn[g]);
        }
}

/* Whether the store commits in the background and answers each write on
 * its own. A store that combines compare-and-sets (Cassandra) takes the
 * blocking path instead: its combiner makes one Paxos round of several
 * requests' writes, which single sends would lose. */
static int op_defers(sl_engine *e) {
    int combine = e->cfg.combine_cas ? e->cfg.combine_cas > 0 : e->st->type->combine_cas;
    return sl_store_defers(e->st) && !combine;
}

int sl_engine_defers(sl_engine *e) {
    return op_defers(e);
}

int sl_msg_put_start(sl_engine *e, const char *account, const char *queue, const sl_put *msgs, size_t n,
                     void (*done)(void *), void *arg, sl_op **out) {
    *out = NULL;
    qstate *q;
    int rc = put_check(e, account, queue, msgs, n, &q);
    if (rc) return rc;
    sl_op *op = op_new(e, q, OP_PUT, n, done, arg);
    if (!op) return SL_ENOMEM;
    if ((rc = put_rows(e, q, msgs, n, op->ids, op->p, op->w, op->w + n, &op->any_visible)) != 0) {
        op_free(op);
        return rc;
    }
    /* All n rows go to the store in one request (one commit; on Cassandra
     * one batch), so a batch is all or nothing. */
    *out = op;
    if (op_defers(e)) {
        op_send(op, n);
    } else {
        op->rc = eng_write(e, op->w, n);
        op_step(op);
    }
    return 0;
}

int sl_msg_ack_start(sl_engine *e, const char *account, const char *queue, const char *const *receipts, size_t n,
                     void (*done)(void *), void *arg, sl_op **out) {
    *out = NULL;
    if (n < 1 || n > SL_BATCH_MAX) return SL_EINVAL;
    qstate *q;
    int rc = open_queue(e, account, queue, &q);
    if (rc) return rc;
    sl_op *op = op_new(e, q, OP_ACK, n, done, arg);
    if (!op) return SL_ENOMEM;
    ack_writes(q, receipts, n, op->rcs, op->w, op->idx, &op->nw);
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
    int rc = open_queue(e, account, queue, &q);
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
    rc = take_due(e, q, max, invis_s, op->msgs, &op->got);
    int defer = op_defers(e);
    if (rc == 0 && (int)op->got < max && !defer) rc = take_fresh(e, q, max, invis_s, op->msgs, &op->got);
    if (rc == 0 && (int)op->got < max && defer) {
        /* Rows of one bucket at a time, as take_fresh takes them; only the
         * first fresh_take may refill (and so fail). op_send makes one
         * batch per bucket. */
        int refills = 0, n = 0;
        for (size_t k; rc == 0 && op->got + op->k < (size_t)max; op->k += k) {
            rc = fresh_take(e, q, (size_t)max - op->got - op->k, op->got + op->k > 0, &refills, op->rows + op->k, &k);
            if (rc || k == 0) break;
        }
        if (rc == 0 && op->k > 0 && (n = lease_writes(e, q, op->rows, op->k, invis_s, op->todo, op->w, &op->visible)) < 0)
            rc = n;
        if (n <= 0 && op->k > 0) {
            leasing_end(q, op->rows, op->k);
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
    while (sem_wait(&op->sem) != 0) {
    } /* EINTR */
    sl_engine *e = op->e;
    qstate *q = op->q;
    int rc = 0;
    switch (op->kind) {
    case OP_PUT:
        rc = put_after(e, q, op->w, op->p, op->n, op->any_visible, op->rc);
        if (rc == 0 && ids) memcpy(ids, op->ids, op->n * sizeof *ids);
        break;
    case OP_ACK:
        if (op->ngroups) op_settle(op);
        ack_after(q, op->w, op->nw, op->idx, op->krc, op->rcs);
        if (rcs) memcpy(rcs, op->rcs, op->n * sizeof *rcs);
        break;
    case OP_RECV:
        if (op->nw > 0) {
            op_settle(op);
            rc = lease_after(e, q, op->todo, op->nw, op->krc, op->visible, op->msgs, &op->got);
            leasing_end(q, op->rows, op->k);
            /* Every row was taken by another node first: look further, as
             * take_fresh does. */
            if (!rc && op->got == 0) rc = take_fresh(e, q, (int)op->n, op->invis_s, op->msgs, &op->got);
        }
        if (rc && op->got == 0) {
            free(op->msgs);
            op->msgs = NULL;
        } else {
            rc = 0;
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

int sl_msg_receive(sl_engine *e, const char *account, const char *queue, int max, int invis_s, sl_message **out,
                   size_t *n) {
    *out = NULL;
    *n = 0;
    sl_op *op;
    int rc = sl_msg_receive_start(e, account, queue, max, invis_s, no_wake, NULL, &op);
    return rc ? rc : sl_msg_receive_finish(op, out, n);
}

int sl_msg_ack_many(sl_engine *e, const char *account, const char *queue, const char *const *receipts, size_t n,
                    int *rcs) {
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
