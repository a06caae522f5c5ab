/* Engine tests: the queue algorithm on the embedded store, with the clock
 * driven by hand and faults injected through the store's hook. Each test
 * gets its own data directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <semaphore.h>

#include "queue/queue_int.h"

typedef struct {
    char dir[64];
    sl_store *st;
    sl_acct *a;
    sl_engine *e;
} fx;

/* --- The calls that do not wait ----------------------------------------------
 * The engine's blocking puts, receives and acks are its start calls with
 * the finish call made at once, before the store has answered (it waits).
 * With g_async set (the tests named *_async), the tests' puts, receives
 * and acks go the way the HTTP server takes them instead: start, wait until
 * done is called, then finish. The #defines after these wrappers route the
 * tests' calls through them. */
static int g_async;
/* 1: late writes on the embedded store are stamped when they land, as on a
 * Cassandra whose coordinators stamp writes (sl_store_sqlite_set_late_stamps). */
static int g_landing;

static void t_done(void *arg) {
    sem_post(arg);
}

static void t_wait(sl_op *op, sem_t *s) {
    while (sem_wait(s) != 0) {
    }
    assert_true(sl_op_ready(op));
}

static int t_msg_put(sl_engine *e, const char *account, const char *queue, const sl_put *msgs, size_t n,
                     char (*ids)[SL_MSGID_LEN + 1]) {
    if (!g_async) return sl_msg_put(e, account, queue, msgs, n, ids);
    sem_t s;
    sem_init(&s, 0, 0);
    sl_op *op;
    int rc = sl_msg_put_start(e, account, queue, msgs, n, t_done, &s, &op);
    if (rc == 0) {
        t_wait(op, &s);
        rc = sl_msg_put_finish(op, ids);
    }
    sem_destroy(&s);
    return rc;
}

static int t_msg_receive(sl_engine *e, const char *account, const char *queue, int max, int invis_s,
                         sl_message **out, size_t *n) {
    if (!g_async) return sl_msg_receive(e, account, queue, max, invis_s, out, n);
    sem_t s;
    sem_init(&s, 0, 0);
    sl_op *op;
    int rc = sl_msg_receive_start(e, account, queue, max, invis_s, t_done, &s, &op);
    if (rc == 0) {
        t_wait(op, &s);
        rc = sl_msg_receive_finish(op, out, n);
    } else {
        *out = NULL;
        *n = 0;
    }
    sem_destroy(&s);
    return rc;
}

static int t_msg_ack_many(sl_engine *e, const char *account, const char *queue, const char *const *receipts,
                          size_t n, int *rcs) {
    if (!g_async) return sl_msg_ack_many(e, account, queue, receipts, n, rcs);
    sem_t s;
    sem_init(&s, 0, 0);
    sl_op *op;
    int rc = sl_msg_ack_start(e, account, queue, receipts, n, t_done, &s, &op);
    if (rc == 0) {
        t_wait(op, &s);
        sl_msg_ack_finish(op, rcs);
    }
    sem_destroy(&s);
    return rc;
}

static int t_msg_ack(sl_engine *e, const char *account, const char *queue, const char *receipt) {
    if (!g_async) return sl_msg_ack(e, account, queue, receipt);
    int one;
    int rc = t_msg_ack_many(e, account, queue, &receipt, 1, &one);
    return rc ? rc : one;
}

#define sl_msg_put t_msg_put
#define sl_msg_receive t_msg_receive
#define sl_msg_ack_many t_msg_ack_many
#define sl_msg_ack t_msg_ack

static int rm_rf(const char *dir) {
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    return system(cmd);
}

/* 1: the engine combines concurrent compare-and-sets as it does on
 * Cassandra (eng_cas_many), which the embedded store alone would not ask for. */
static int g_combine;
/* SLUICE_TEST_COMBINE=1 runs every test through the combiner. */
static int g_combine_all;

static void open_engine(fx *f) {
    assert_int_equal(sl_store_sqlite_open(f->dir, &f->st), 0);
    assert_int_equal(sl_acct_open(f->st, &f->a), 0);
    sl_engine_config cfg = {0};
    snprintf(cfg.node_id, sizeof cfg.node_id, "test-node");
    cfg.lease_grace_ms = 2000;
    cfg.combine_cas = g_combine || g_combine_all;
    cfg.accounts = f->a;
    assert_int_equal(sl_engine_open(f->st, &cfg, &f->e), 0);
}

static void close_engine(fx *f) {
    sl_engine_close(f->e);
    sl_acct_close(f->a);
    sl_store_close(f->st);
    f->e = NULL;
    f->a = NULL;
    f->st = NULL;
}

/* Reopens the engine with combined compare-and-sets forced on. */
static void reopen_combined(fx *f) {
    close_engine(f);
    g_combine = 1;
    open_engine(f);
    g_combine = 0;
}

static int setup(void **state) {
    g_async = 0; /* a failed *_async test does not reset it */
    g_landing = 0;
    fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/sluice-engine-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    sl_clock_manual(1);
    sl_clock_set_ms(1800000000000LL);
    sl_log_level = getenv("SLUICE_TEST_LOG") ? SL_DEBUG : SL_ERR;
    open_engine(f);
    struct sl_auth_key keys[2];
    assert_int_equal(sl_acct_create(f->a, "acct", keys), 0);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    if (f->e) close_engine(f);
    rm_rf(f->dir);
    sl_clock_manual(0);
    free(f);
    return 0;
}

static void mkqueue(fx *f, const char *name, int bucket, int maxdc, const char *dlq) {
    sl_queue_opts o;
    sl_queue_opts_default(&o);
    snprintf(o.name, sizeof o.name, "%s", name);
    o.bucket_size = bucket;
    o.max_delivery_count = maxdc;
    o.finalize_timeout_s = 1;
    o.repair_poll_s = 1;
    if (dlq) snprintf(o.dlq, sizeof o.dlq, "%s", dlq);
    char err[128];
    int qrc = sl_queue_create(f->e, "acct", &o, err, sizeof err);
    if (qrc) print_error("queue %s: %s (%s)\n", name, sl_strerror(qrc), err);
    assert_int_equal(qrc, 0);
}

static int put(fx *f, const char *q, const char *body, int delay) {
    sl_put p = {body, strlen(body), delay, NULL};
    char ids[1][SL_MSGID_LEN + 1];
    return sl_msg_put(f->e, "acct", q, &p, 1, ids);
}

/* Receives one message; returns 1 and fills m, or 0 when none is visible. */
static int recv1(fx *f, const char *q, int invis, sl_message *m) {
    sl_message *v;
    size_t n;
    /* Lease entries are written without waiting: let them land (an
     * update's before, this receive's after), so that the hand-driven clock
     * alone decides what is due. */
    assert_int_equal(sl_store_sqlite_flush(f->st), 0);
    assert_int_equal(sl_msg_receive(f->e, "acct", q, 1, invis, &v, &n), 0);
    assert_int_equal(sl_store_sqlite_flush(f->st), 0);
    if (n == 0) {
        free(v);
        return 0;
    }
    *m = v[0];
    free(v); /* the body and attrs now belong to *m */
    return 1;
}

static void msg_clear(sl_message *m) {
    free(m->body);
    free(m->attrs_json);
    memset(m, 0, sizeof *m);
}

static int64_t qsize(fx *f, const char *q) {
    sl_queue_statistics s;
    assert_int_equal(sl_queue_stats(f->e, "acct", q, &s), 0);
    return s.size;
}

/* --- The basics ------------------------------------------------------------ */

static void test_put_receive_ack(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 20, 5, NULL);
    assert_int_equal(put(f, "q", "hello", 0), 0);
    sl_message m;
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_string_equal(m.body, "hello");
    assert_int_equal(m.delivery_count, 1);
    assert_true(m.receipt[0] != 0);
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), 0);
    /* Acked: never again, however long we wait. */
    sl_clock_advance_ms(3600 * 1000);
    sl_message m2;
    assert_int_equal(recv1(f, "q", 30, &m2), 0);
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), SL_ECONFLICT);
    assert_int_equal(qsize(f, "q"), 0);
    msg_clear(&m);
}

static void test_initial_invisibility(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 20, 5, NULL);
    assert_int_equal(put(f, "q", "later", 10), 0);
    assert_int_equal(put(f, "q", "now", 0), 0);
    sl_message m;
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_string_equal(m.body, "now");
    msg_clear(&m);
    assert_int_equal(recv1(f, "q", 30, &m), 0);
    sl_queue_statistics s;
    assert_int_equal(sl_queue_stats(f->e, "acct", "q", &s), 0);
    assert_int_equal(s.delayed, 1);
    assert_int_equal(s.in_flight, 1);
    sl_clock_advance_ms(9999);
    assert_int_equal(recv1(f, "q", 30, &m), 0);
    sl_clock_advance_ms(1);
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_string_equal(m.body, "later");
    assert_int_equal(m.delivery_count, 1);
    msg_clear(&m);
}

static void test_redelivery_counts(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 20, 5, NULL);
    assert_int_equal(put(f, "q", "x", 0), 0);
    char first[SL_RECEIPT_MAX] = "";
    int64_t first_ms = sl_now_ms();
    for (int i = 1; i <= 4; i++) {
        sl_message m;
        assert_int_equal(recv1(f, "q", 5, &m), 1);
        assert_int_equal(m.delivery_count, i);
        /* The first delivery's time, kept by every later one. */
        assert_int_equal(m.first_receive_ms, first_ms);
        if (i == 1) snprintf(first, sizeof first, "%s", m.receipt);
        /* Invisible for the lease, visible right after. */
        sl_message none;
        sl_clock_advance_ms(4999);
        assert_int_equal(recv1(f, "q", 5, &none), 0);
        sl_clock_advance_ms(1);
        msg_clear(&m);
    }
    /* The first receipt is stale after redeliveries. */
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", first), SL_ECONFLICT);
}

static void test_ack_after_lease_expired_before_redelivery(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 20, 5, NULL);
    assert_int_equal(put(f, "q", "x", 0), 0);
    sl_message m;
    assert_int_equal(recv1(f, "q", 5, &m), 1);
    sl_clock_advance_ms(60000);
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), 0);
    sl_message n;
    assert_int_equal(recv1(f, "q", 5, &n), 0);
    msg_clear(&m);
}

/* A pop receipt is "<fields>.<mac>", the MAC being the first 12 bytes of
 * HMAC-SHA256 of the fields under the queue incarnation's secret: receipts
 * handed out by an earlier build stay valid across an upgrade. A receipt
 * whose MAC is off by one bit acks nothing. */
static void test_receipt_is_hmac_sha256(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 20, 5, NULL);
    assert_int_equal(put(f, "q", "x", 0), 0);
    sl_message m;
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    qstate *q;
    assert_int_equal(eng_queue(f->e, "acct", "q", &q), 0);
    const char *dot = strchr(m.receipt, '.');
    assert_non_null(dot);
    char raw[96];
    unsigned char mac[16], want[32];
    long n = sl_b64url_decode(m.receipt, (size_t)(dot - m.receipt), raw, sizeof raw);
    assert_true(n > 0);
    assert_int_equal(sl_b64url_decode(dot + 1, strlen(dot + 1), mac, sizeof mac), 12);
    unsigned int len = sizeof want;
    assert_non_null(HMAC(EVP_sha256(), q->secret, (int)sizeof q->secret, (unsigned char *)raw, (size_t)n, want, &len));
    assert_memory_equal(mac, want, 12);

    char bad[SL_RECEIPT_MAX];
    snprintf(bad, sizeof bad, "%s", m.receipt);
    size_t last = strlen(bad) - 1;
    bad[last] = bad[last] == 'A' ? 'B' : 'A'; /* the MAC's last base64url digit */
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", bad), SL_EINVAL);
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), 0);
    msg_clear(&m);
}

static void test_stale_receipt_conflicts(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 20, 5, NULL);
    assert_int_equal(put(f, "q", "x", 0), 0);
    sl_message a, b;
    assert_int_equal(recv1(f, "q", 1, &a), 1);
    sl_clock_advance_ms(1000);
    assert_int_equal(recv1(f, "q", 30, &b), 1);
    char nr[SL_RECEIPT_MAX], tag[SL_TAG_MAX];
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", a.receipt), SL_ECONFLICT);
    assert_int_equal(sl_msg_update(f->e, "acct", "q", a.receipt, NULL, 0, 10, nr, tag), SL_ECONFLICT);
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", "garbage!"), SL_EINVAL);
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", b.receipt), 0);
    msg_clear(&a);
    msg_clear(&b);
}

/* Options that change in a queue's life (SQS's SetQueueAttributes): the
 * node that changes them sees them at once, another node (a second engine
 * on the same store) within a second, and the layout never changes. */
static void test_queue_update(void **state) {
    fx *f = *state;
    sl_engine_config cfg = {0};
    snprintf(cfg.node_id, sizeof cfg.node_id, "other-node");
    cfg.lease_grace_ms = 2000;
    cfg.accounts = f->a;
    sl_engine *other;
    assert_int_equal(sl_engine_open(f->st, &cfg, &other), 0);
    mkqueue(f, "dlq", 20, 5, NULL);
    mkqueue(f, "q", 7, 5, NULL);
    sl_queue_info qi;
    assert_int_equal(sl_queue_get(other, "acct", "q", &qi), 0); /* cached on the other node */
    assert_int_equal(qi.opts.visibility_s, 30);
    sl_queue_opts o = qi.opts;
    o.visibility_s = 5;
    o.delay_s = 2;
    o.max_delivery_count = 1;
    o.bucket_size = 99; /* not an option that changes: ignored */
    snprintf(o.dlq, sizeof o.dlq, "dlq");
    char err[128] = "";
    assert_int_equal(sl_queue_update(f->e, "acct", &o, err, sizeof err), 0);
    assert_int_equal(sl_queue_get(f->e, "acct", "q", &qi), 0);
    assert_int_equal(qi.opts.visibility_s, 5);
    assert_int_equal(qi.opts.delay_s, 2);
    assert_int_equal(qi.opts.bucket_size, 7);
    assert_string_equal(qi.opts.dlq, "dlq");
    sl_clock_advance_ms(1001);
    assert_int_equal(sl_queue_get(other, "acct", "q", &qi), 0);
    assert_int_equal(qi.opts.visibility_s, 5);
    assert_string_equal(qi.opts.dlq, "dlq");
    /* The new redrive policy governs the other node's receives. */
    assert_int_equal(put(f, "q", "x", 0), 0);
    sl_message *v;
    size_t n;
    assert_int_equal(sl_msg_receive(other, "acct", "q", 1, 1, &v, &n), 0);
    assert_int_equal(n, 1);
    sl_messages_free(v, n);
    sl_clock_advance_ms(2000);
    for (int i = 0; i < 5 && qsize(f, "dlq") == 0; i++) {
        assert_int_equal(sl_msg_receive(other, "acct", "q", 1, 1, &v, &n), 0);
        assert_int_equal(n, 0); /* moved, never delivered a second time */
        sl_messages_free(v, n);
        sl_clock_advance_ms(1000);
    }
    assert_int_equal(qsize(f, "dlq"), 1);
    /* A DLQ that does not exist, bad values, a queue that does not. */
    snprintf(o.dlq, sizeof o.dlq, "nope");
    assert_int_equal(sl_queue_update(f->e, "acct", &o, err, sizeof err), SL_EINVAL);
    o.dlq[0] = '\0';
    o.visibility_s = 43201;
    assert_int_equal(sl_queue_update(f->e, "acct", &o, err, sizeof err), SL_EINVAL);
    o.visibility_s = 1;
    snprintf(o.name, sizeof o.name, "missing");
    assert_int_equal(sl_queue_update(f->e, "acct", &o, err, sizeof err), SL_ENOTFOUND);
    sl_engine_close(other);
}

/* A sticky receipt (SQS's receipt handle) names a delivery: it stays valid
 * through updates, which retire the plain receipts, until the message is
 * delivered again. */
static void test_sticky_receipt(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 20, 5, NULL);
    assert_int_equal(put(f, "q", "x", 0), 0);
    assert_int_equal(put(f, "q", "y", 0), 0);
    sl_message a, b, c;
    char sa[SL_RECEIPT_MAX], sb[SL_RECEIPT_MAX], sc[SL_RECEIPT_MAX], nr[SL_RECEIPT_MAX], tag[SL_TAG_MAX];
    assert_int_equal(recv1(f, "q", 5, &a), 1);
    assert_int_equal(sl_msg_receipt_sticky(f->e, "acct", "q", &a, sa), 0);
    assert_string_not_equal(sa, a.receipt);
    /* Extended twice with the same handle, then acked with it. */
    assert_int_equal(sl_msg_update(f->e, "acct", "q", sa, NULL, 0, 100, nr, tag), 0);
    assert_int_equal(sl_msg_update(f->e, "acct", "q", sa, NULL, 0, 200, nr, tag), 0);
    sl_clock_advance_ms(150000);
    assert_int_equal(recv1(f, "q", 5, &b), 1); /* the other message: a is still leased */
    assert_string_equal(b.body, "y");
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", a.receipt), SL_ECONFLICT); /* the plain one is retired */
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", sa), 0);
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", sa), SL_ECONFLICT);
    /* Delivered again: the handle of the first delivery acks nothing. */
    assert_int_equal(sl_msg_receipt_sticky(f->e, "acct", "q", &b, sb), 0);
    sl_clock_advance_ms(6000);
    assert_int_equal(recv1(f, "q", 5, &c), 1);
    assert_string_equal(c.body, "y");
    assert_int_equal(sl_msg_receipt_sticky(f->e, "acct", "q", &c, sc), 0);
    assert_int_equal(c.delivery_count, 2); /* the count, without the epoch the row keeps with it */
    sl_message z = {0};                    /* not from a receive: its count as stored is unknown */
    memcpy(z.receipt, c.receipt, sizeof z.receipt);
    assert_int_equal(sl_msg_receipt_sticky(f->e, "acct", "q", &z, nr), SL_EINVAL);
    assert_int_equal(sl_msg_update(f->e, "acct", "q", sb, NULL, 0, 10, nr, tag), SL_ECONFLICT);
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", sb), SL_ECONFLICT);
    /* A handle names one queue's incarnation, byte for byte. */
    sc[3] ^= 1;
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", sc), SL_EINVAL);
    sc[3] ^= 1;
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", sc), 0);
    assert_int_equal(qsize(f, "q"), 0);
    msg_clear(&a);
    msg_clear(&b);
    msg_clear(&c);
}

static void test_update_extends_and_returns(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 20, 5, NULL);
    assert_int_equal(put(f, "q", "v1", 0), 0);
    sl_message m, n;
    assert_int_equal(recv1(f, "q", 5, &m), 1);
    char r2[SL_RECEIPT_MAX], tag[SL_TAG_MAX];
    /* Extend to 100 s: still invisible after the original 5 s. */
    assert_int_equal(sl_msg_update(f->e, "acct", "q", m.receipt, NULL, 0, 100, r2, tag), 0);
    assert_string_equal(tag, m.tag);
    sl_clock_advance_ms(50000);
    assert_int_equal(recv1(f, "q", 5, &n), 0);
    /* The old receipt is dead, the new one works; body replaced; back now. */
    char r3[SL_RECEIPT_MAX];
    assert_int_equal(sl_msg_update(f->e, "acct", "q", m.receipt, NULL, 0, 0, r3, tag), SL_ECONFLICT);
    assert_int_equal(sl_msg_update(f->e, "acct", "q", r2, "v2", 2, 0, r3, tag), 0);
    assert_string_equal(tag, m.tag); /* the tag names the message, whatever its body */
    assert_int_equal(recv1(f, "q", 5, &n), 1);
    assert_string_equal(n.body, "v2");
    assert_string_equal(n.tag, m.tag);
    assert_int_equal(n.delivery_count, 2);
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", r3), SL_ECONFLICT);
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", n.receipt), 0);
    msg_clear(&m);
    msg_clear(&n);
}

/* A 1-hour lease on one message must not delay the redelivery of a 1-second
 * lease on a message in a later bucket. */
static void test_long_lease_does_not_block(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 1, 100, NULL);
    assert_int_equal(put(f, "q", "long", 0), 0);
    assert_int_equal(put(f, "q", "short", 0), 0);
    sl_message a, b, c;
    assert_int_equal(recv1(f, "q", 3600, &a), 1);
    assert_int_equal(recv1(f, "q", 1, &b), 1);
    assert_string_not_equal(a.body, b.body);
    sl_message *lng = strcmp(a.body, "long") == 0 ? &a : &b;
    sl_message *sht = lng == &a ? &b : &a;
    /* Whichever came first, give the long one an hour. */
    char r[SL_RECEIPT_MAX], tag[SL_TAG_MAX];
    assert_int_equal(sl_msg_update(f->e, "acct", "q", lng->receipt, NULL, 0, 3600, r, tag), 0);
    char r2[SL_RECEIPT_MAX];
    assert_int_equal(sl_msg_update(f->e, "acct", "q", sht->receipt, NULL, 0, 1, r2, tag), 0);
    sl_clock_advance_ms(1001);
    assert_int_equal(recv1(f, "q", 30, &c), 1);
    assert_string_equal(c.body, "short");
    assert_int_equal(c.delivery_count, 2);
    msg_clear(&a);
    msg_clear(&b);
    msg_clear(&c);
}

/* A put that claimed an id and crashed before writing leaves a gap; the
 * queue goes on delivering, and the bucket is sealed after the grace. */
static void test_claimed_id_never_written(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 4, 5, NULL);
    qstate *q;
    assert_int_equal(eng_queue(f->e, "acct", "q", &q), 0);
    int64_t lost;
    assert_int_equal(msg_claim(f->e, q, &lost), 0); /* the crashed writer's id */
    assert_int_equal(lost, 0);
    for (int i = 0; i < 7; i++) {
        char b[16];
        snprintf(b, sizeof b, "m%d", i);
        assert_int_equal(put(f, "q", b, 0), 0);
        /* A new block after the first fills, the next bucket. */
    }
    int got = 0;
    sl_message m;
    while (recv1(f, "q", 30, &m)) {
        assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), 0);
        msg_clear(&m);
        got++;
    }
    assert_int_equal(got, 7);
    int64_t reader;
    assert_int_equal(eng_pointer_get(f->e, q->qkey, "reader", &reader), 0);
    assert_int_equal(reader, 0); /* bucket 0 waits for the missing id */
    sl_clock_advance_ms(2000);
    assert_int_equal(recv1(f, "q", 30, &m), 0);
    assert_int_equal(eng_pointer_get(f->e, q->qkey, "reader", &reader), 0);
    assert_true(reader >= 1);
    /* And new messages still flow. */
    assert_int_equal(put(f, "q", "after", 0), 0);
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_string_equal(m.body, "after");
    msg_clear(&m);
}

/* Messages carry a TTL of retentionSeconds: an expired message is never
 * delivered, is not counted, and does not hold up the queue. */
/* A queue of buckets of 4 whose messages live 60 s. */
static void mkqueue_short(fx *f, const char *name) {
    sl_queue_opts o;
    sl_queue_opts_default(&o);
    snprintf(o.name, sizeof o.name, "%s", name);
    o.bucket_size = 4;
    o.retention_s = 60;
    char err[64];
    assert_int_equal(sl_queue_create(f->e, "acct", &o, err, sizeof err), 0);
}

static void test_retention_expires_messages(void **state) {
    fx *f = *state;
    mkqueue_short(f, "short");
    assert_int_equal(put(f, "short", "old", 0), 0);
    assert_int_equal(put(f, "short", "leased", 0), 0);
    sl_message m;
    assert_int_equal(recv1(f, "short", 30, &m), 1); /* one is in flight when it expires */
    msg_clear(&m);
    sl_clock_advance_ms(59000);
    assert_int_equal(qsize(f, "short"), 2);
    sl_clock_advance_ms(1001);
    assert_int_equal(qsize(f, "short"), 0);
    assert_int_equal(recv1(f, "short", 30, &m), 0);
    assert_int_equal(put(f, "short", "fresh", 0), 0);
    assert_int_equal(recv1(f, "short", 30, &m), 1);
    assert_string_equal(m.body, "fresh");
    msg_clear(&m);
}

/* --- The depth kept in memory (ledger.c) ------------------------------------ */

/* The ledger's figures equal the statistics (the store's rows counted):
 * the counts as the operations' hooks left them, then, after two passes of
 * the background work (a recount that is due waits for a pass with no
 * change since the one before), the oldest message's age too. */
static void assert_ledger_matches(fx *f, const char *name) {
    qstate *q;
    assert_int_equal(eng_queue(f->e, "acct", name, &q), 0);
    assert_int_equal(sl_store_sqlite_flush(f->st), 0);
    for (int pass = 0; pass < 2; pass++) {
        lg_fig g;
        lg_figures(q, sl_now_ms(), &g);
        sl_queue_statistics s;
        assert_int_equal(sl_queue_stats(f->e, "acct", name, &s), 0);
        assert_true(g.counted);
        if (g.visible != s.visible || g.in_flight != s.in_flight || g.delayed != s.delayed)
            fail_msg("%s: ledger %lld/%lld/%lld, statistics %lld/%lld/%lld (visible/in flight/delayed)",
                     pass ? "recounted" : "by the hooks", (long long)g.visible, (long long)g.in_flight,
                     (long long)g.delayed, (long long)s.visible, (long long)s.in_flight,
                     (long long)s.delayed);
        if (pass && g.oldest_age_s != s.oldest_age_s)
            fail_msg("oldest: ledger %lld s, statistics %lld s", (long long)g.oldest_age_s,
                     (long long)s.oldest_age_s);
        assert_int_equal(sl_engine_tick(f->e), 0);
        assert_int_equal(sl_engine_tick(f->e), 0);
    }
}

/* Thousands of messages through every kind of change, with the clock
 * moving leases and delays past their time: the table of invisible
 * messages grows, and loses entries from everywhere in its probe chains. */
static void test_ledger_follows_a_random_history(void **state) {
    fx *f = *state;
    mkqueue(f, "lg", 16, 1000, NULL);
    assert_int_equal(sl_engine_tick(f->e), 0); /* the first count, of an empty queue */
    assert_ledger_matches(f, "lg");
    srand(7);
    char(*receipts)[SL_RECEIPT_MAX] = calloc(4096, SL_RECEIPT_MAX);
    size_t nr = 0;
    for (int step = 0; step < 6000; step++) {
        int op = rand() % 10;
        if (op < 4) {
            assert_int_equal(put(f, "lg", "x", rand() % 4 == 0 ? 1 + rand() % 30 : 0), 0);
        } else if (op < 7) {
            sl_message m;
            if (recv1(f, "lg", 1 + rand() % 60, &m)) {
                if (nr < 4096) snprintf(receipts[nr++], SL_RECEIPT_MAX, "%s", m.receipt);
                msg_clear(&m);
            }
        } else if (op < 9 && nr > 0) {
            size_t i = (size_t)rand() % nr;
            int rc = sl_msg_ack(f->e, "acct", "lg", receipts[i]);
            assert_true(rc == 0 || rc == SL_ECONFLICT);
            memcpy(receipts[i], receipts[--nr], SL_RECEIPT_MAX);
        } else if (nr > 0) {
            char nrc[SL_RECEIPT_MAX], tag[SL_TAG_MAX];
            size_t i = (size_t)rand() % nr;
            int rc = sl_msg_update(f->e, "acct", "lg", receipts[i], NULL, 0, rand() % 20, nrc, tag);
            assert_true(rc == 0 || rc == SL_ECONFLICT);
            if (rc == 0) snprintf(receipts[i], SL_RECEIPT_MAX, "%s", nrc);
        }
        if (step % 7 == 0) sl_clock_advance_ms(rand() % 700);
        if (step % 500 == 499) assert_ledger_matches(f, "lg");
    }
    assert_ledger_matches(f, "lg");
    sl_clock_advance_ms(61000); /* every lease and delay ran out */
    assert_ledger_matches(f, "lg");
    free(receipts);
}

/* What the hooks cannot see is recounted by the background pass: a
 * purge, and messages that reach their retention. */
static void test_ledger_recounts_purges_and_retention(void **state) {
    fx *f = *state;
    mkqueue_short(f, "lgr");
    assert_int_equal(sl_engine_tick(f->e), 0);
    for (int i = 0; i < 6; i++)
        assert_int_equal(put(f, "lgr", "m", 0), 0);
    sl_message m;
    assert_int_equal(recv1(f, "lgr", 30, &m), 1);
    msg_clear(&m);
    assert_ledger_matches(f, "lgr");
    sl_clock_advance_ms(60001); /* all six reach their retention */
    assert_int_equal(sl_engine_tick(f->e), 0);
    assert_int_equal(sl_engine_tick(f->e), 0);
    assert_ledger_matches(f, "lgr");
    assert_int_equal(qsize(f, "lgr"), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(put(f, "lgr", "m", 0), 0);
    sl_clock_advance_ms(5);
    assert_int_equal(sl_queue_purge(f->e, "acct", "lgr"), 0);
    sl_clock_advance_ms(5); /* the purge's floor is in the past (the clock is the test's) */
    assert_int_equal(put(f, "lgr", "after", 0), 0);
    assert_int_equal(sl_engine_tick(f->e), 0);
    assert_int_equal(sl_engine_tick(f->e), 0);
    assert_ledger_matches(f, "lgr");
    assert_int_equal(qsize(f, "lgr"), 1);
}

/* After a day with nobody receiving (and no repair tick: all nodes down),
 * a new message is delivered at once, and a lease that ran out meanwhile is
 * found within a bounded number of receives, each doing bounded work. */
static void test_lease_found_after_long_idle(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 20, 5, NULL);
    assert_int_equal(put(f, "q", "leased", 0), 0);
    sl_message m;
    /* Due in 20 hours: its entry lies far past the cursor's first steps. */
    assert_int_equal(recv1(f, "q", 20 * 3600, &m), 1);
    msg_clear(&m);
    sl_clock_advance_ms(24LL * 3600 * 1000);
    assert_int_equal(put(f, "q", "fresh", 0), 0);
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_string_equal(m.body, "fresh");
    msg_clear(&m);
    int tries = 0, found = 0;
    while (!found && tries++ < 24 * 60 / LEASE_SCAN_MINUTES + 2) {
        if (recv1(f, "q", 30, &m)) {
            assert_string_equal(m.body, "leased");
            assert_int_equal(m.delivery_count, 2);
            msg_clear(&m);
            found = 1;
        }
    }
    assert_true(found);
}

static size_t lease_entries_at(fx *f, int64_t m);

/* A lease entry outlives its due time by a day at most: it stayed for the
 * message's retention (14 days), long after an ack, so the leases table
 * grew with every lease written. A message whose entry expired before any
 * node read it (every node down for longer) is still delivered: the repair
 * worker republishes it. */
static void test_lease_entry_kept_a_day_past_due(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 20, 5, NULL);
    assert_int_equal(put(f, "q", "acked", 0), 0);
    assert_int_equal(put(f, "q", "abandoned", 0), 0);
    sl_message a, b;
    assert_int_equal(recv1(f, "q", 1, &a), 1); /* a short lease's entry is written at once */
    assert_int_equal(recv1(f, "q", 1, &b), 1);
    if (strcmp(a.body, "acked") != 0) {
        sl_message t = a;
        a = b;
        b = t;
    }
    assert_string_equal(a.body, "acked");
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", a.receipt), 0);
    msg_clear(&a);
    msg_clear(&b);
    int64_t due_minute = (sl_now_ms() + 1000) / 60000;
    assert_int_equal(lease_entries_at(f, due_minute), 2);
    close_engine(f); /* every node down */
    sl_clock_advance_ms(LEASE_ENTRY_KEEP_MS + 2 * 60000);
    open_engine(f);
    assert_int_equal(lease_entries_at(f, due_minute), 0);
    assert_int_equal(sl_engine_tick(f->e), 0);
    sl_message m;
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_string_equal(m.body, "abandoned");
    assert_int_equal(m.delivery_count, 2);
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), 0);
    msg_clear(&m);
    assert_int_equal(qsize(f, "q"), 0);
}

/* Empty buckets (blocks of ids claimed and never used, by crashed or idle
 * writers) between the reader and new messages must not delay them: with
 * the clock frozen, so no gap grace passes, the message is received at once. */
/* Moves the id allocator of queue q to next, as if other nodes had claimed
 * every id below it and written none of them; returns the queue. */
static qstate *claimed_elsewhere(fx *f, const char *name, int64_t next) {
    qstate *q;
    assert_int_equal(eng_queue(f->e, "acct", name, &q), 0);
    sl_write w = {0};
    w.t = &sl_t_monoton;
    w.kind = SL_W_UPSERT;
    w.row.v[MO_QKEY] = sl_vtext(q->qkey);
    w.row.v[MO_NEXT] = sl_vint(next);
    assert_int_equal(sl_store_apply(f->st, &w, 1, NULL), 0);
    return q;
}

static void test_gaps_do_not_starve_delivery(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 2, 5, NULL);
    claimed_elsewhere(f, "q", 60); /* 30 empty buckets */
    assert_int_equal(put(f, "q", "after-the-gaps", 0), 0);
    sl_message m;
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_string_equal(m.body, "after-the-gaps");
    msg_clear(&m);
}

/* A run of empty buckets (a block another node claimed and gave up) longer
 * than the reader window, with a message after it: the gap grace is waited
 * out once for the whole run, not once per bucket, which took the reader
 * minutes to cross on Cassandra (issue 11, defect 1: "stranded" messages
 * that no receive returned for 82 s and more). */
static void test_gap_run_waited_once(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 2, 5, NULL);
    qstate *q = claimed_elsewhere(f, "q", 2 * (READ_SCAN_MAX + 16)); /* past the window */
    assert_int_equal(put(f, "q", "after-the-run", 0), 0);
    msg_fresh_drop(q); /* as if another node had put it: found by reading only */
    sl_message m;
    assert_int_equal(recv1(f, "q", 30, &m), 0); /* out of reach: the run starts its clocks */
    sl_clock_advance_ms(2000);                  /* one grace */
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_string_equal(m.body, "after-the-run");
    msg_clear(&m);
}

/* A slow put: its row is committed, found by the reader, leased, acked and
 * its bucket sealed, all before the put's own caller finishes it. The put
 * then finds the bucket sealed; it must not move (and so deliver again) a
 * message that was taken meanwhile. Found by the history checker: on a
 * loaded machine a few messages acked before their put answered 201 came
 * back with deliveryCount 2. */
static void test_slow_put_after_ack_not_moved(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 1, 5, NULL);
    sem_t s;
    sem_init(&s, 0, 0);
    sl_put p = {"slow", 4, 0, NULL};
    sl_op *op;
    assert_int_equal(sl_msg_put_start(f->e, "acct", "q", &p, 1, t_done, &s, &op), 0);
    t_wait(op, &s); /* committed; put_after has not run */
    sem_destroy(&s);
    sl_message m;
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_string_equal(m.body, "slow");
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), 0);
    msg_clear(&m);
    sl_clock_advance_ms(2000);                  /* the block is old: the put will look for a marker */
    assert_int_equal(recv1(f, "q", 30, &m), 0); /* seals the bucket */
    char ids[1][SL_MSGID_LEN + 1];
    assert_int_equal(sl_msg_put_finish(op, ids), 0);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(recv1(f, "q", 30, &m), 0); /* acked: never again */
        sl_clock_advance_ms(20000);
        assert_int_equal(sl_engine_tick(f->e), 0);
    }
    assert_int_equal(qsize(f, "q"), 0);
}

/* The buckets of a block this node gave up unused can hold no row, ever:
 * the reader seals them without waiting for the grace. */
static void test_abandoned_block_sealed_at_once(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 2, 5, NULL);
    sl_message m;
    /* ids 0-1, then 2-3 of the block [2,6) */
    for (int i = 0; i < 4; i++) assert_int_equal(put(f, "q", "m", 0), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(recv1(f, "q", 30, &m), 1);
        assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), 0);
        msg_clear(&m);
    }
    sl_clock_advance_ms(1000); /* half the grace: [2,6) is given up at the next put, bucket 2 unused */
    assert_int_equal(put(f, "q", "next", 0), 0); /* id 6, bucket 3 */
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_string_equal(m.body, "next");
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), 0);
    msg_clear(&m);
    assert_int_equal(recv1(f, "q", 30, &m), 0); /* a refill: it seals what it may */
    qstate *q;
    assert_int_equal(eng_queue(f->e, "acct", "q", &q), 0);
    int64_t reader;
    assert_int_equal(eng_pointer_get(f->e, q->qkey, "reader", &reader), 0);
    assert_int_equal(reader, 3); /* 0, 1 and the unused 2 sealed at once; 3 waits for id 7 */
}

/* A write that lands after its bucket was sealed is republished by the
 * repair worker, and delivered. */
static sl_fault_action delay_first_message_write(void *ctx, const sl_write *w, size_t n) {
    int *armed = ctx;
    (void)n;
    if (*armed && w->t == &sl_t_messages && w->kind == SL_W_UPSERT) {
        *armed = 0;
        return SL_FAULT_DELAY;
    }
    return SL_FAULT_NONE;
}

static void test_late_write_republished(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 4, 5, NULL);
    int armed = 1;
    sl_store_sqlite_set_fault(f->st, delay_first_message_write, &armed);
    assert_int_equal(put(f, "q", "late", 0), SL_EUNAVAILABLE); /* outcome unknown to the client */
    for (int i = 0; i < 3; i++) assert_int_equal(put(f, "q", "on-time", 0), 0);
    sl_message m;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(recv1(f, "q", 30, &m), 1);
        assert_string_equal(m.body, "on-time");
        assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), 0);
        msg_clear(&m);
    }
    sl_clock_advance_ms(2000);
    assert_int_equal(recv1(f, "q", 30, &m), 0); /* seals bucket 0 */
    qstate *q;
    assert_int_equal(eng_queue(f->e, "acct", "q", &q), 0);
    int64_t reader;
    assert_int_equal(eng_pointer_get(f->e, q->qkey, "reader", &reader), 0);
    assert_int_equal(reader, 1);
    assert_int_equal(sl_store_sqlite_release_delayed(f->st), 1); /* the late write lands */
    assert_int_equal(recv1(f, "q", 30, &m), 0);                 /* behind the reader */
    assert_int_equal(qsize(f, "q"), 1);                          /* but counted */
    sl_clock_advance_ms(1000);                                   /* the finalize timeout */
    assert_int_equal(sl_engine_tick(f->e), 0);
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_string_equal(m.body, "late");
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), 0);
    msg_clear(&m);
    assert_int_equal(qsize(f, "q"), 0);
}

static sl_fault_action drop_lease_entries(void *ctx, const sl_write *w, size_t n) {
    (void)ctx;
    (void)n;
    return w->t == &sl_t_leases ? SL_FAULT_FAIL : SL_FAULT_NONE;
}

/* A lease whose index entry was lost (the node died before it landed) in
 * the newest bucket, which no id has moved past, so the reader cannot seal
 * it and the repair worker never reaches it: the message comes back once
 * its lease is over by the finalize timeout, even when nothing more is
 * put. Before, it stayed counted in the queue and was never delivered. */
static void test_lost_lease_entry_in_newest_bucket(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 4, 5, NULL);
    assert_int_equal(put(f, "q", "leased", 0), 0);
    sl_store_sqlite_set_fault(f->st, drop_lease_entries, NULL);
    sl_message m;
    assert_int_equal(recv1(f, "q", 1, &m), 1);
    assert_string_equal(m.body, "leased");
    msg_clear(&m);
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    close_engine(f); /* the node dies; another starts */
    open_engine(f);
    sl_clock_advance_ms(1000);
    assert_int_equal(qsize(f, "q"), 1);
    assert_int_equal(recv1(f, "q", 30, &m), 0); /* no entry says it is due */
    sl_clock_advance_ms(1000);                  /* the finalize timeout past the lease */
    assert_int_equal(sl_engine_tick(f->e), 0);
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_string_equal(m.body, "leased");
    assert_int_equal(m.delivery_count, 2);
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), 0);
    msg_clear(&m);
    assert_int_equal(qsize(f, "q"), 0);
}

static void test_dead_letter_and_redrive(void **state) {
    fx *f = *state;
    mkqueue(f, "dlq", 20, 5, NULL);
    mkqueue(f, "q", 20, 2, "dlq");
    assert_int_equal(put(f, "q", "poison", 0), 0);
    sl_message m;
    for (int i = 1; i <= 2; i++) {
        assert_int_equal(recv1(f, "q", 1, &m), 1);
        assert_int_equal(m.delivery_count, i);
        msg_clear(&m);
        sl_clock_advance_ms(1000);
    }
    /* The third attempt moves it instead of delivering it. */
    assert_int_equal(recv1(f, "q", 1, &m), 0);
    sl_queue_statistics s;
    assert_int_equal(sl_queue_stats(f->e, "acct", "q", &s), 0);
    assert_int_equal(s.dead_lettered, 1);
    assert_int_equal(s.size, 0);
    assert_int_equal(qsize(f, "dlq"), 1);
    assert_int_equal(recv1(f, "dlq", 1, &m), 1);
    assert_string_equal(m.body, "poison");
    assert_int_equal(m.delivery_count, 3);
    msg_clear(&m);
    sl_clock_advance_ms(1000);
    int64_t moved;
    assert_int_equal(sl_queue_redrive(f->e, "acct", "dlq", "q", &moved), 0);
    assert_int_equal(moved, 1);
    assert_int_equal(qsize(f, "dlq"), 0);
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_string_equal(m.body, "poison");
    assert_int_equal(m.delivery_count, 1);
    msg_clear(&m);
}

/* The DLQ "dlq" (buckets of dlq_bucket ids) and "q" (maxDeliveryCount 1,
 * dead-lettering to it) with one message, body, delivered once and its
 * lease over: due for the DLQ. r gets q's bucket 0, that message's row. */
static void due_for_dlq(fx *f, int dlq_bucket, const char *body, qstate **q, qstate **d, sl_result *r) {
    mkqueue(f, "dlq", dlq_bucket, 5, NULL);
    mkqueue(f, "q", 20, 1, "dlq");
    assert_int_equal(put(f, "q", body, 0), 0);
    sl_message m;
    assert_int_equal(recv1(f, "q", 1, &m), 1);
    msg_clear(&m);
    sl_clock_advance_ms(1000);
    assert_int_equal(eng_queue(f->e, "acct", "q", q), 0);
    assert_int_equal(eng_queue(f->e, "acct", "dlq", d), 0);
    sl_result_init(r);
    assert_int_equal(msg_scan_bucket(f->e, *q, 0, r), 0);
    assert_int_equal(r->n, 1);
}

/* The copy to the DLQ is keyed by the source message: a crash between the
 * copy and marking the source done leaves a MOVING row, and finishing it
 * again makes no second copy. */
static void test_dead_letter_crash_no_duplicate(void **state) {
    fx *f = *state;
    qstate *q, *d;
    sl_result r;
    due_for_dlq(f, 20, "p", &q, &d, &r);
    sl_message m;
    /* Move, then pretend the final CAS never happened by moving it back to
     * MOVING through a plain store write, and complete it twice. */
    assert_int_equal(msg_move(f->e, q, &r.rows[0], d, 0, 1), 0);
    sl_result_free(&r);
    sl_result_init(&r);
    assert_int_equal(msg_scan_bucket(f->e, q, 0, &r), 0);
    assert_int_equal(r.rows[0].v[M_STATE].i, MS_DEAD);
    sl_write w = {0};
    w.t = &sl_t_messages;
    w.kind = SL_W_UPSERT;
    w.row.v[M_QKEY] = sl_vtext(q->qkey);
    w.row.v[M_BUCKET] = sl_vint(0);
    w.row.v[M_ID] = r.rows[0].v[M_ID];
    w.row.v[M_STATE] = sl_vint(MS_MOVING);
    w.row.v[M_VERSION] = sl_vint(r.rows[0].v[M_VERSION].i - 1);
    assert_int_equal(sl_store_apply(f->st, &w, 1, NULL), 0);
    sl_result_free(&r);
    sl_result_init(&r);
    assert_int_equal(msg_scan_bucket(f->e, q, 0, &r), 0);
    assert_int_equal(msg_complete_move(f->e, q, &r.rows[0]), 0);
    sl_result_free(&r);
    assert_int_equal(qsize(f, "dlq"), 1);
    assert_int_equal(recv1(f, "dlq", 30, &m), 1);
    msg_clear(&m);
    assert_int_equal(recv1(f, "dlq", 30, &m), 0);
}

/* Fails the writes of a move that a crash would cut: every
 * insert-if-not-exists into the messages table (the copy), or, with ctx
 * set, the compare-and-set that marks the source dead (the copy is made,
 * the source stays MOVING). */
static sl_fault_action cut_move(void *ctx, const sl_write *w, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (w[i].t != &sl_t_messages) continue;
        if (!ctx && w[i].kind == SL_W_INSERT_IF_NOT_EXISTS) return SL_FAULT_FAIL;
        if (ctx && w[i].kind == SL_W_UPDATE_IF && w[i].row.v[M_STATE].set && w[i].row.v[M_STATE].i == MS_DEAD)
            return SL_FAULT_FAIL;
    }
    return SL_FAULT_NONE;
}

enum { LATE_FINALIZED, LATE_DELETED, LATE_COPY_ACKED };

/* A dead-lettering cut by a crash is completed later, by the source's
 * repair worker, into the slot it claimed in the DLQ back then. By that
 * time the DLQ's reader has sealed that slot's bucket, and its repair
 * worker has finalized it (LATE_FINALIZED) or even deleted it
 * (LATE_DELETED): a copy written there now would be seen by neither, so it
 * must go to a fresh slot. (Seen on Cassandra: messages killed mid-move
 * never reached the DLQ.) LATE_COPY_ACKED: the crash came after the copy was
 * made, and the copy was delivered and acked from the DLQ before the move
 * was completed: completing it makes no second copy. */
static void dead_letter_completed_late(fx *f, int mode) {
    qstate *q, *d;
    sl_result r;
    due_for_dlq(f, 2, "poison", &q, &d, &r);
    sl_message m;
    int copied = mode == LATE_COPY_ACKED;
    sl_store_sqlite_set_fault(f->st, cut_move, copied ? &copied : NULL);
    assert_int_not_equal(msg_move(f->e, q, &r.rows[0], d, 0, 1), 0);
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    sl_result_free(&r);
    if (copied) { /* the copy (id 0) is delivered and acked */
        assert_int_equal(recv1(f, "dlq", 30, &m), 1);
        assert_string_equal(m.body, "poison");
        assert_int_equal(sl_msg_ack(f->e, "acct", "dlq", m.receipt), 0);
        msg_clear(&m);
    }
    /* The DLQ moves on past the claimed id (0): id 1 and a new block. */
    assert_int_equal(put(f, "dlq", "a", 0), 0);
    sl_clock_advance_ms(1000);
    assert_int_equal(put(f, "dlq", "b", 0), 0);
    sl_clock_advance_ms(3000); /* the gap's grace */
    for (int i = 0; i < 2; i++) {
        assert_int_equal(recv1(f, "dlq", 30, &m), 1);
        assert_int_not_equal(strcmp(m.body, "poison"), 0);
        assert_int_equal(sl_msg_ack(f->e, "acct", "dlq", m.receipt), 0);
        msg_clear(&m);
    }
    sl_clock_advance_ms(3000);
    assert_int_equal(recv1(f, "dlq", 30, &m), 0); /* the reader seals bucket 0 */
    sl_clock_advance_ms(2000);
    assert_int_equal(repair_queue(f->e, d), 0);
    int64_t repair, gc;
    assert_int_equal(eng_pointer_get(f->e, d->qkey, "repair", &repair), 0);
    assert_true(repair >= 1); /* bucket 0 finalized */
    if (mode == LATE_DELETED) {
        sl_clock_advance_ms(GC_DELAY_MS);
        assert_int_equal(repair_queue(f->e, d), 0);
        assert_int_equal(eng_pointer_get(f->e, d->qkey, "gc", &gc), 0);
        assert_true(gc >= 1); /* and deleted */
    }
    /* Now the source's repair worker finds the move and completes it (its
     * first pass seals the source's bucket, the next one finalizes it). */
    assert_int_equal(repair_queue(f->e, q), 0);
    sl_clock_advance_ms(2000);
    assert_int_equal(repair_queue(f->e, q), 0);
    if (mode != LATE_COPY_ACKED) {
        assert_int_equal(recv1(f, "dlq", 30, &m), 1);
        assert_string_equal(m.body, "poison");
        msg_clear(&m);
    }
    assert_int_equal(recv1(f, "dlq", 30, &m), 0);
    assert_int_equal(recv1(f, "q", 30, &m), 0);
    sl_queue_statistics s;
    assert_int_equal(sl_queue_stats(f->e, "acct", "q", &s), 0);
    assert_int_equal(s.dead_lettered, 1);
}

static void test_dead_letter_completed_after_dlq_bucket_finalized(void **state) {
    dead_letter_completed_late(*state, LATE_FINALIZED);
}

static void test_dead_letter_completed_after_dlq_bucket_deleted(void **state) {
    dead_letter_completed_late(*state, LATE_DELETED);
}

static void test_dead_letter_completed_after_copy_acked(void **state) {
    dead_letter_completed_late(*state, LATE_COPY_ACKED);
}

static int nqstates(fx *f) {
    int n = 0;
    pthread_mutex_lock(&f->e->mu);
    for (qstate *q = f->e->queues; q; q = q->next)
        n++;
    pthread_mutex_unlock(&f->e->mu);
    return n;
}

static void no_op(void *arg) {
    (void)arg;
}

/* The state of a deleted queue is freed once nothing holds it and it has
 * been dead for QSTATE_REAP_PASSES passes of the poller: queues created and
 * deleted all day do not pile up (the soak's RSS grew by 2.5 MiB a minute,
 * 17 KiB per incarnation). An operation holds it until it is finished, a
 * watch until it is fired or cancelled. */
static void test_deleted_queue_state_freed(void **state) {
    fx *f = *state;
    mkqueue(f, "keep", 10, 5, NULL);
    mkqueue(f, "q", 10, 5, NULL);
    assert_int_equal(put(f, "q", "m", 0), 0);
    assert_int_equal(put(f, "keep", "k", 0), 0);
    int before = nqstates(f);
    sl_watch *w;
    assert_int_equal(sl_watch_add(f->e, "acct", "q", sl_now_ms() + 60000, no_op, NULL, &w), 0);
    sl_op *op;
    sl_put p = {"x", 1, 0, NULL};
    assert_int_equal(sl_msg_put_start(f->e, "acct", "q", &p, 1, no_op, NULL, &op), 0);
    assert_int_equal(sl_queue_delete(f->e, "acct", "q"), 0);
    for (int i = 0; i <= QSTATE_REAP_PASSES; i++)
        eng_queue_reap(f->e, 0);
    assert_int_equal(nqstates(f), before); /* the operation holds it */
    char ids[1][SL_MSGID_LEN + 1];
    sl_msg_put_finish(op, ids);
    /* The delete fired the watch, which let go of it then. */
    for (int i = 0; i < QSTATE_REAP_PASSES / 2; i++)
        eng_queue_reap(f->e, 0);
    assert_int_equal(nqstates(f), before);
    for (int i = 0; i <= QSTATE_REAP_PASSES; i++)
        eng_queue_reap(f->e, 0);
    /* The poller holds a queue while it looks at its watch, so one that
     * picked this queue before the delete fired the watch may hold it a
     * moment longer. */
    for (int i = 0; i < 2000 && nqstates(f) != before - 1; i++) {
        usleep(1000);
        eng_queue_reap(f->e, 0);
    }
    assert_int_equal(nqstates(f), before - 1);
    assert_int_equal(sl_watch_cancel(f->e, w), 1); /* touches nothing freed */
    /* The live queue was left alone; the name can be used again. */
    sl_message m;
    assert_int_equal(recv1(f, "keep", 30, &m), 1);
    assert_string_equal(m.body, "k");
    msg_clear(&m);
    mkqueue(f, "q", 10, 5, NULL);
    assert_int_equal(put(f, "q", "again", 0), 0);
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_string_equal(m.body, "again");
    msg_clear(&m);
}

/* One round of a batch load: puts n messages of body in one call, receives
 * n in one call and acks each. Returns how many of those received have the
 * body old. */
static int batch_round(fx *f, const char *body, size_t n, const char *old) {
    sl_put p[10];
    char ids[10][SL_MSGID_LEN + 1];
    assert_true(n <= 10);
    for (size_t i = 0; i < n; i++)
        p[i] = (sl_put){body, strlen(body), 0, NULL};
    assert_int_equal(sl_msg_put(f->e, "acct", "q", p, n, ids), 0);
    sl_message *v;
    size_t got;
    assert_int_equal(sl_msg_receive(f->e, "acct", "q", (int)n, 30, &v, &got), 0);
    assert_int_equal(got, n);
    int k = 0;
    for (size_t i = 0; i < got; i++) {
        k += strcmp(v[i].body, old) == 0;
        assert_int_equal(sl_msg_ack(f->e, "acct", "q", v[i].receipt), 0);
    }
    sl_messages_free(v, got);
    return k;
}

/* A queue whose every receive is served by the rows that puts on this node
 * just fed the pool never refills, and so never sealed a bucket: nothing was
 * finalized or deleted, and the queue grew without bound (the soak: batches
 * put and received in turn, 11,000 buckets of acked rows after 20 minutes).
 * The repair worker seals behind the reader. */
static void test_pool_fed_queue_still_sealed(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 10, 5, NULL);
    for (int round = 0; round < 5; round++) {
        batch_round(f, "m", 10, "");
        sl_clock_advance_ms(100);
    }
    qstate *q;
    assert_int_equal(eng_queue(f->e, "acct", "q", &q), 0);
    assert_int_equal(sl_store_sqlite_flush(f->st), 0);
    assert_int_equal(sl_engine_tick(f->e), 0);
    int64_t reader, repair;
    assert_int_equal(eng_pointer_get(f->e, q->qkey, "reader", &reader), 0);
    assert_true(reader >= 5);
    sl_clock_advance_ms(2000);
    assert_int_equal(sl_engine_tick(f->e), 0);
    assert_int_equal(eng_pointer_get(f->e, q->qkey, "repair", &repair), 0);
    assert_true(repair >= 5);
    sl_queue_statistics st;
    assert_int_equal(sl_queue_stats(f->e, "acct", "q", &st), 0);
    assert_int_equal(st.size, 0);
}

/* Rows that are not in the pool (put by a process that was killed since,
 * or copies the repair worker republished) were never delivered while
 * puts on this node kept the pool fed: no receive found it dry, so none
 * refilled (the soak: a batch put at a SIGKILL waited for good). The repair
 * pass sees them waiting at the reader's front, and the next receive
 * refills from there. */
static void test_rows_outside_a_fed_pool_delivered(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 10, 5, NULL);
    qstate *q;
    assert_int_equal(eng_queue(f->e, "acct", "q", &q), 0);
    for (int i = 0; i < 5; i++)
        assert_int_equal(put(f, "q", "old", 0), 0);
    msg_fresh_drop(q); /* as after a restart */
    int old = 0;
    for (int round = 0; round < 8; round++) {
        if (round == 4) { /* the repair pass, once the rows have waited */
            sl_clock_advance_ms(5000);
            assert_int_equal(sl_engine_tick(f->e), 0);
        }
        old += batch_round(f, "new", 5, "old");
        if (round < 4) assert_int_equal(old, 0); /* the pool is never dry */
    }
    assert_int_equal(old, 5);
}

static void test_purge_peek_stats(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 3, 5, NULL);
    for (int i = 0; i < 7; i++) assert_int_equal(put(f, "q", "old", 0), 0);
    sl_message *v;
    size_t n;
    assert_int_equal(sl_msg_peek(f->e, "acct", "q", 32, &v, &n), 0);
    assert_int_equal(n, 7);
    assert_string_equal(v[0].receipt, "");
    sl_messages_free(v, n);
    sl_message m;
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_int_equal(m.delivery_count, 1);
    msg_clear(&m);
    sl_queue_statistics s;
    assert_int_equal(sl_queue_stats(f->e, "acct", "q", &s), 0);
    assert_int_equal(s.size, 7);
    assert_int_equal(s.visible, 6);
    assert_int_equal(s.in_flight, 1);
    sl_clock_advance_ms(1);
    assert_int_equal(sl_queue_purge(f->e, "acct", "q"), 0);
    sl_clock_advance_ms(1);
    assert_int_equal(qsize(f, "q"), 0);
    assert_int_equal(recv1(f, "q", 30, &m), 0);
    sl_clock_advance_ms(60000);
    assert_int_equal(recv1(f, "q", 30, &m), 0); /* the in-flight one is purged too */
    assert_int_equal(put(f, "q", "new", 0), 0);
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_string_equal(m.body, "new");
    msg_clear(&m);
}

static void test_strict_fifo_order(void **state) {
    fx *f = *state;
    sl_queue_opts o;
    sl_queue_opts_default(&o);
    snprintf(o.name, sizeof o.name, "fifo");
    o.bucket_size = 5;
    o.strict_fifo = 1;
    char err[64];
    assert_int_equal(sl_queue_create(f->e, "acct", &o, err, sizeof err), 0);
    for (int i = 0; i < 23; i++) {
        char b[16];
        snprintf(b, sizeof b, "%d", i);
        assert_int_equal(put(f, "fifo", b, 0), 0);
    }
    for (int i = 0; i < 23; i++) {
        sl_message m;
        assert_int_equal(recv1(f, "fifo", 30, &m), 1);
        assert_int_equal(atoi(m.body), i);
        assert_int_equal(sl_msg_ack(f->e, "acct", "fifo", m.receipt), 0);
        msg_clear(&m);
    }
}

static void test_queue_delete_and_recreate(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 20, 5, NULL);
    assert_int_equal(put(f, "q", "x", 0), 0);
    char err[64];
    sl_queue_opts o;
    sl_queue_opts_default(&o);
    snprintf(o.name, sizeof o.name, "q");
    assert_int_equal(sl_queue_create(f->e, "acct", &o, err, sizeof err), SL_EEXISTS);
    assert_int_equal(sl_queue_delete(f->e, "acct", "q"), 0);
    assert_int_equal(sl_queue_delete(f->e, "acct", "q"), SL_ENOTFOUND);
    assert_int_equal(put(f, "q", "x", 0), SL_ENOTFOUND);
    sl_queue_info *list;
    size_t n;
    assert_int_equal(sl_queue_list(f->e, "acct", &list, &n), 0);
    assert_int_equal(n, 0);
    free(list);
    assert_int_equal(sl_queue_create(f->e, "acct", &o, err, sizeof err), 0);
    sl_queue_info qi;
    assert_int_equal(sl_queue_get(f->e, "acct", "q", &qi), 0);
    assert_int_equal(qi.version, 2);
    sl_message m;
    assert_int_equal(recv1(f, "q", 30, &m), 0); /* the old message went with the old queue */
    /* The background job removes the old incarnation's data. */
    assert_int_equal(sl_engine_tick(f->e), 0);
    sl_result r;
    sl_result_init(&r);
    sl_val key[3] = {sl_vtext("acct/q/1"), sl_vint(0), sl_vint(0)};
    assert_int_equal(sl_store_get(f->st, &sl_t_messages, key, SL_READ_DEFAULT, &r), SL_ENOTFOUND);
    sl_result_free(&r);
    assert_int_equal(sl_queue_create(f->e, "nope", &o, err, sizeof err), SL_ENOTFOUND);
    snprintf(o.name, sizeof o.name, "bad/name");
    assert_int_equal(sl_queue_create(f->e, "acct", &o, err, sizeof err), SL_EINVAL);
    snprintf(o.name, sizeof o.name, "r");
    snprintf(o.dlq, sizeof o.dlq, "missing");
    assert_int_equal(sl_queue_create(f->e, "acct", &o, err, sizeof err), SL_EINVAL);
}

/* The repair worker finalizes buckets once every message in them is done,
 * and follows the reader; it deletes them GC_DELAY_MS after they were
 * sealed, not before. It works in runs of up to 32 buckets; 75 buckets take
 * three, the last one short. */
static void repair_finalizes_and_deletes(fx *f, int nb) {
    mkqueue(f, "q", 2, 5, NULL);
    for (int i = 0; i < 2 * nb; i++) assert_int_equal(put(f, "q", "m", 0), 0);
    sl_message m;
    for (int i = 0; i < 2 * nb; i++) {
        assert_int_equal(recv1(f, "q", 30, &m), 1);
        assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), 0);
        msg_clear(&m);
    }
    assert_int_equal(recv1(f, "q", 30, &m), 0);
    qstate *q;
    assert_int_equal(eng_queue(f->e, "acct", "q", &q), 0);
    sl_clock_advance_ms(1000);
    assert_int_equal(sl_engine_tick(f->e), 0);
    int64_t repair, gc;
    assert_int_equal(eng_pointer_get(f->e, q->qkey, "repair", &repair), 0);
    assert_int_equal(repair, nb);
    for (int b = 0; b < nb; b++) { /* finalized, still there */
        sl_result r;
        sl_result_init(&r);
        assert_int_equal(msg_scan_bucket(f->e, q, b, &r), 0);
        assert_int_equal(r.n, 3);
        assert_int_equal(r.rows[0].v[M_STATE].i, MS_FINAL);
        sl_result_free(&r);
    }
    sl_clock_advance_ms(GC_DELAY_MS - 2000);
    assert_int_equal(sl_engine_tick(f->e), 0);
    assert_int_equal(eng_pointer_get(f->e, q->qkey, "gc", &gc), 0);
    assert_int_equal(gc, 0);
    sl_clock_advance_ms(2000);
    assert_int_equal(sl_engine_tick(f->e), 0);
    assert_int_equal(eng_pointer_get(f->e, q->qkey, "gc", &gc), 0);
    assert_int_equal(gc, nb);
    for (int b = 0; b < nb; b++) {
        sl_result r;
        sl_result_init(&r);
        assert_int_equal(msg_scan_bucket(f->e, q, b, &r), 0);
        assert_int_equal(r.n, 0);
        sl_result_free(&r);
    }
}

static void test_repair_finalizes_and_deletes(void **state) {
    repair_finalizes_and_deletes(*state, 3);
}

static void test_repair_in_runs(void **state) {
    repair_finalizes_and_deletes(*state, 75);
}

/* A second engine (a second node) on the same store does not run the repair
 * worker of a queue while the first holds its lease, and takes over once the
 * lease runs out. */
static void test_repair_lease_single_owner(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 20, 5, NULL);
    sl_engine_config cfg = {0};
    snprintf(cfg.node_id, sizeof cfg.node_id, "other-node");
    cfg.accounts = f->a;
    sl_engine *e2;
    assert_int_equal(sl_engine_open(f->st, &cfg, &e2), 0);
    assert_int_equal(sl_engine_tick(f->e), 0);
    sl_val key[1] = {sl_vtext("acct/q/1")};
    sl_result r;
    sl_result_init(&r);
    assert_int_equal(sl_store_get(f->st, &sl_t_repair_lease, key, SL_READ_SERIAL, &r), 0);
    char owner[40];
    sl_val_str(&r.rows[0].v[R_OWNER], owner, sizeof owner);
    assert_string_equal(owner, "test-node");
    sl_result_free(&r);
    sl_clock_advance_ms(5000);
    assert_int_equal(sl_engine_tick(e2), 0);
    sl_result_init(&r);
    assert_int_equal(sl_store_get(f->st, &sl_t_repair_lease, key, SL_READ_SERIAL, &r), 0);
    sl_val_str(&r.rows[0].v[R_OWNER], owner, sizeof owner);
    assert_string_equal(owner, "test-node"); /* still held */
    sl_result_free(&r);
    sl_clock_advance_ms(11000); /* the first node stopped renewing */
    assert_int_equal(sl_engine_tick(e2), 0);
    sl_result_init(&r);
    assert_int_equal(sl_store_get(f->st, &sl_t_repair_lease, key, SL_READ_SERIAL, &r), 0);
    sl_val_str(&r.rows[0].v[R_OWNER], owner, sizeof owner);
    assert_string_equal(owner, "other-node");
    sl_result_free(&r);
    sl_engine_close(e2);
}

/* Durability: messages survive closing and reopening the store (the
 * embedded store fsyncs before a put returns). */
static void test_durable_across_reopen(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 20, 5, NULL);
    assert_int_equal(put(f, "q", "kept", 0), 0);
    close_engine(f);
    open_engine(f);
    sl_message m;
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_string_equal(m.body, "kept");
    msg_clear(&m);
}

/* --- Batches and deferred lease entries ------------------------------------ */

static sl_fault_action fail_message_batches(void *ctx, const sl_write *w, size_t n) {
    (void)ctx;
    return w->t == &sl_t_messages && w->kind == SL_W_UPSERT && n > 1 ? SL_FAULT_FAIL : SL_FAULT_NONE;
}

/* A batch put is one write: when it fails, none of its messages exists. */
static void test_batch_put_all_or_nothing(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 4, 5, NULL); /* 5 messages span two buckets */
    sl_put p[5];
    char bodies[5][16], ids[5][SL_MSGID_LEN + 1];
    for (int i = 0; i < 5; i++) {
        snprintf(bodies[i], sizeof bodies[i], "m%d", i);
        p[i] = (sl_put){bodies[i], strlen(bodies[i]), 0, NULL};
    }
    sl_store_sqlite_set_fault(f->st, fail_message_batches, NULL);
    assert_int_not_equal(sl_msg_put(f->e, "acct", "q", p, 5, ids), 0);
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    assert_int_equal(qsize(f, "q"), 0);
    sl_message m;
    assert_int_equal(recv1(f, "q", 30, &m), 0);
    assert_int_equal(sl_msg_put(f->e, "acct", "q", p, 5, ids), 0);
    assert_int_equal(qsize(f, "q"), 5);
    int seen[5] = {0};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(recv1(f, "q", 30, &m), 1);
        seen[((const char *)m.body)[1] - '0']++;
        assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), 0);
        msg_clear(&m);
    }
    for (int i = 0; i < 5; i++) assert_int_equal(seen[i], 1);
    assert_int_equal(qsize(f, "q"), 0);
}

/* Acking many receipts at once answers each as acking it alone would: good
 * ones are acked even when a stale one shares their bucket, a repeated one
 * conflicts, garbage is invalid. */
static void test_ack_many_mixed(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 20, 5, NULL);
    for (int i = 0; i < 3; i++) assert_int_equal(put(f, "q", "x", 0), 0);
    sl_message m[3];
    for (int i = 0; i < 3; i++) assert_int_equal(recv1(f, "q", 30, &m[i]), 1);
    char fresh[SL_RECEIPT_MAX], tag[SL_TAG_MAX];
    assert_int_equal(sl_msg_update(f->e, "acct", "q", m[2].receipt, NULL, 0, 30, fresh, tag), 0);
    const char *r[5] = {m[0].receipt, m[1].receipt, "garbage", m[1].receipt, m[2].receipt /* stale now */};
    int rcs[5];
    assert_int_equal(sl_msg_ack_many(f->e, "acct", "q", r, 5, rcs), 0);
    assert_int_equal(rcs[0], 0);
    assert_int_equal(rcs[1], 0);
    assert_int_equal(rcs[2], SL_EINVAL);
    assert_int_equal(rcs[3], SL_ECONFLICT);
    assert_int_equal(rcs[4], SL_ECONFLICT);
    assert_int_equal(qsize(f, "q"), 1);
    const char *last = fresh;
    assert_int_equal(sl_msg_ack_many(f->e, "acct", "q", &last, 1, rcs), 0);
    assert_int_equal(rcs[0], 0);
    assert_int_equal(qsize(f, "q"), 0);
    assert_int_equal(sl_msg_ack_many(f->e, "acct", "nope", &last, 1, rcs), SL_ENOTFOUND);
    /* One receipt twice, nothing else in the batch: the first ack wins. */
    sl_message d;
    assert_int_equal(put(f, "q", "y", 0), 0);
    assert_int_equal(recv1(f, "q", 30, &d), 1);
    const char *twice[2] = {d.receipt, d.receipt};
    assert_int_equal(sl_msg_ack_many(f->e, "acct", "q", twice, 2, rcs), 0);
    assert_int_equal(rcs[0], 0);
    assert_int_equal(rcs[1], SL_ECONFLICT);
    assert_int_equal(qsize(f, "q"), 0);
    msg_clear(&d);
    for (int i = 0; i < 3; i++) msg_clear(&m[i]);
}

/* The lease entries of queue q (its first incarnation) due in minute m. */
static size_t lease_entries_at(fx *f, int64_t m) {
    sl_result r;
    sl_result_init(&r);
    sl_slice s = {0};
    s.t = &sl_t_leases;
    s.pk[0] = sl_vtext("acct/q/1");
    s.pk[1] = sl_vint(m);
    assert_int_equal(sl_store_slice(f->st, &s, &r), 0);
    size_t n = r.n;
    sl_result_free(&r);
    return n;
}

static size_t lease_entries(fx *f) {
    return lease_entries_at(f, sl_now_ms() / 60000);
}

/* Receivers on one node share a pool of READY rows bounded in bytes: with
 * bodies that overflow it many times, every message is still delivered
 * exactly once. */
static void test_pool_overflow_delivers_all(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 20, 5, NULL);
    enum { N = 50, SZ = 400 * 1024 }; /* 20 MB, five times the pool */
    char *body = malloc(SZ + 1);
    assert_non_null(body);
    memset(body, 'x', SZ);
    body[SZ] = 0;
    for (int i = 0; i < N; i++) {
        char num[16];
        snprintf(num, sizeof num, "%06d", i);
        memcpy(body, num, 6);
        assert_int_equal(put(f, "q", body, 0), 0);
    }
    close_engine(f); /* a fresh engine: its pool starts empty */
    open_engine(f);
    int seen[N] = {0};
    sl_message m;
    for (int i = 0; i < N; i++) {
        assert_int_equal(recv1(f, "q", 30, &m), 1);
        assert_int_equal(m.len, SZ);
        seen[atoi(m.body)]++;
        assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), 0);
        msg_clear(&m);
    }
    assert_int_equal(recv1(f, "q", 30, &m), 0);
    for (int i = 0; i < N; i++) assert_int_equal(seen[i], 1);
    free(body);
}

/* A lease acked soon after it began never has its index entry written; one
 * that is still out when the engine closes has it written then, so it is
 * delivered again after a restart once it runs out. */
static void test_lease_entry_deferred(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 20, 5, NULL);
    assert_int_equal(put(f, "q", "acked", 0), 0);
    assert_int_equal(put(f, "q", "kept", 0), 0);
    sl_message a, b;
    assert_int_equal(recv1(f, "q", 30, &a), 1);
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", a.receipt), 0);
    assert_int_equal(lease_entries(f), 0);
    assert_int_equal(recv1(f, "q", 30, &b), 1);
    assert_string_not_equal(a.body, b.body);
    assert_int_equal(lease_entries(f), 0); /* deferred */
    close_engine(f);
    open_engine(f);
    assert_int_equal(lease_entries(f), 1); /* written at close */
    sl_message c;
    assert_int_equal(recv1(f, "q", 30, &c), 0);
    sl_clock_advance_ms(31 * 1000);
    assert_int_equal(recv1(f, "q", 30, &c), 1);
    assert_string_equal(c.body, b.body);
    assert_int_equal(c.delivery_count, 2);
    msg_clear(&a);
    msg_clear(&b);
    msg_clear(&c);
}

/* A deleted queue's deferred lease entries are dropped, not written: they
 * landed after the delete, in a partition nothing reads again, and grew the
 * lease index with every queue deleted (the soak's churn of queues). */
static void test_lease_entry_of_deleted_queue_dropped(void **state) {
    fx *f = *state;
    mkqueue(f, "q", 20, 5, NULL);
    assert_int_equal(put(f, "q", "leased", 0), 0);
    sl_message a;
    assert_int_equal(recv1(f, "q", 30, &a), 1);
    assert_int_equal(lease_entries(f), 0); /* deferred */
    assert_int_equal(sl_queue_delete(f->e, "acct", "q"), 0);
    close_engine(f); /* writes what is deferred */
    open_engine(f);
    assert_int_equal(lease_entries(f), 0);
    msg_clear(&a);
}

/* --- Outcome unknown on every CAS ------------------------------------------ */

typedef struct {
    sl_fault_action action;
    int every;   /* fault every n-th CAS */
    int count;
    int injected;
    int fail_reads; /* the SERIAL read after each fault fails too */
    int read_fails; /* reads still to fail */
} cas_fault;

static sl_fault_action fault_every_cas(void *ctx, const sl_write *w, size_t n) {
    cas_fault *c = ctx;
    if (!sl_write_is_cas(w, n)) return SL_FAULT_NONE;
    if (++c->count % c->every != 0) return SL_FAULT_NONE;
    c->injected++;
    c->read_fails = c->fail_reads;
    return c->action;
}

static int fail_serial_read(void *ctx, const sl_table *t, int consistency) {
    cas_fault *c = ctx;
    (void)t;
    if (consistency != SL_READ_SERIAL || c->read_fails == 0) return 0;
    c->read_fails--;
    return SL_EUNAVAILABLE;
}

/* Runs the whole life of a queue (create, put, receive, update, ack,
 * redelivery, dead-lettering, repair, purge, delete) with an unknown outcome
 * injected on every n-th CAS, and checks every guarantee along the way. */
static void lifecycle_with_unknowns(fx *f, sl_fault_action action, int every, int fail_reads) {
    cas_fault c = {action, every, 0, 0, fail_reads, 0};
    sl_store_sqlite_set_fault(f->st, fault_every_cas, &c);
    if (fail_reads) sl_store_sqlite_set_read_fault(f->st, fail_serial_read, &c);
    mkqueue(f, "dlq", 4, 5, NULL);
    mkqueue(f, "q", 4, 2, "dlq");
    for (int i = 0; i < 10; i++) {
        char b[16];
        snprintf(b, sizeof b, "%d", i);
        assert_int_equal(put(f, "q", b, 0), 0);
        if (action == SL_FAULT_DELAY) sl_store_sqlite_release_delayed(f->st);
    }
    int seen[10] = {0}, acked[10] = {0}, deliveries = 0;
    for (int round = 0; round < 200; round++) {
        sl_message m;
        if (!recv1(f, "q", 1, &m)) {
            if (action == SL_FAULT_DELAY) sl_store_sqlite_release_delayed(f->st);
            sl_clock_advance_ms(1000);
            assert_int_equal(sl_engine_tick(f->e), 0);
            int done = 1;
            for (int i = 0; i < 10; i++) done &= acked[i] || seen[i] >= 2;
            if (done && qsize(f, "q") == 0) break;
            continue;
        }
        int i = atoi(m.body);
        assert_false(acked[i]); /* guarantee 3 */
        seen[i]++;
        deliveries++;
        if (action == SL_FAULT_DELAY) sl_store_sqlite_release_delayed(f->st);
        if (i % 3 == 0) {
            /* Never acked: dead-lettered after two deliveries. */
            msg_clear(&m);
            continue;
        }
        if (i % 3 == 1) {
            char r[SL_RECEIPT_MAX], tag[SL_TAG_MAX];
            assert_int_equal(sl_msg_update(f->e, "acct", "q", m.receipt, NULL, 0, 5, r, tag), 0);
            /* Guarantee 4: only the newest receipt is valid. */
            assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), SL_ECONFLICT);
            snprintf(m.receipt, sizeof m.receipt, "%s", r);
        }
        assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), 0);
        acked[i] = 1;
        msg_clear(&m);
    }
    for (int i = 0; i < 10; i++) {
        if (i % 3 == 0) {
            assert_int_equal(seen[i], 2);
        } else {
            assert_int_equal(seen[i], 1);
            assert_true(acked[i]);
        }
    }
    assert_int_equal(qsize(f, "q"), 0);
    assert_int_equal(qsize(f, "dlq"), 4);
    sl_queue_statistics s;
    assert_int_equal(sl_queue_stats(f->e, "acct", "q", &s), 0);
    assert_int_equal(s.dead_lettered, 4);
    assert_int_equal(sl_queue_purge(f->e, "acct", "dlq"), 0);
    sl_clock_advance_ms(1);
    assert_int_equal(qsize(f, "dlq"), 0);
    assert_int_equal(sl_queue_delete(f->e, "acct", "q"), 0);
    sl_message *v;
    size_t n;
    assert_int_equal(sl_msg_receive(f->e, "acct", "q", 1, 1, &v, &n), SL_ENOTFOUND);
    assert_true(c.injected > 0);
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    sl_store_sqlite_set_read_fault(f->st, NULL, NULL);
    sl_store_sqlite_release_delayed(f->st);
}

static void test_unknown_applied_every_cas(void **state) {
    lifecycle_with_unknowns(*state, SL_FAULT_UNKNOWN_APPLIED, 1, 0);
}
/* As when a node dies under a compare-and-set: its outcome is unknown, and
 * the first reads that would tell time out too. An ack that landed is
 * answered as landed (not 409 "lease lost", which left the client
 * believing the message would come back, while it was gone). */
static void test_unknown_applied_then_reads_fail(void **state) {
    lifecycle_with_unknowns(*state, SL_FAULT_UNKNOWN_APPLIED, 1, 2);
}
/* The same through the combiner, as on Cassandra: a batch's unknown outcome
 * is settled write by write. */
static void test_unknown_applied_then_reads_fail_combined(void **state) {
    reopen_combined(*state);
    lifecycle_with_unknowns(*state, SL_FAULT_UNKNOWN_APPLIED, 1, 2);
}
static void test_unknown_dropped_every_cas(void **state) {
    lifecycle_with_unknowns(*state, SL_FAULT_UNKNOWN_DROPPED, 2, 0);
}
static void test_unknown_dropped_every_third_cas(void **state) {
    lifecycle_with_unknowns(*state, SL_FAULT_UNKNOWN_DROPPED, 3, 1);
}
static void test_delayed_every_other_cas(void **state) {
    lifecycle_with_unknowns(*state, SL_FAULT_DELAY, 2, 0);
}

/* Receiving many messages leases rows of one bucket in one conditional
 * batch; with the batch's outcome unknown (applied or not), each message is
 * still handed out exactly once. */
static void receive_many(fx *f, sl_fault_action action) {
    mkqueue(f, "q", 10, 5, NULL);
    for (int i = 0; i < 30; i++) {
        char b[16];
        snprintf(b, sizeof b, "%d", i);
        assert_int_equal(put(f, "q", b, 0), 0);
    }
    cas_fault c = {action, 1, 0, 0, 0, 0};
    if (action != SL_FAULT_NONE) sl_store_sqlite_set_fault(f->st, fault_every_cas, &c);
    int seen[30] = {0}, total = 0;
    for (int round = 0; round < 10 && total < 30; round++) {
        sl_message *v;
        size_t n;
        assert_int_equal(sl_msg_receive(f->e, "acct", "q", 7, 30, &v, &n), 0);
        for (size_t i = 0; i < n; i++) {
            int id = atoi(v[i].body);
            assert_int_equal(seen[id], 0);
            seen[id] = 1;
            total++;
        }
        sl_messages_free(v, n);
    }
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    assert_int_equal(total, 30);
    if (action != SL_FAULT_NONE) assert_true(c.injected > 0);
    sl_queue_statistics s;
    assert_int_equal(sl_queue_stats(f->e, "acct", "q", &s), 0);
    assert_int_equal(s.in_flight, 30);
}

static void test_receive_many_distinct(void **state) {
    receive_many(*state, SL_FAULT_NONE);
}
static void test_receive_many_unknown_applied(void **state) {
    receive_many(*state, SL_FAULT_UNKNOWN_APPLIED);
}

/* Real threads: 8 consumers share 400 messages; each is delivered exactly
 * once (the clock is frozen, so no lease runs out) and every ack succeeds. */
typedef struct {
    fx *f;
    int *owner;
    pthread_mutex_t *mu;
    int acked;
    int *received, n; /* messages received by all workers, of n */
} worker;

static int64_t mono_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Receives and acks until all n messages were received, or until receives
 * have come back empty for 10 s: a receive may come back empty while
 * messages remain (other threads emptied the refills it waited for, or a
 * refill that found nothing lets receives skip refilling for 50 ms). */
static void *consume(void *arg) {
    worker *w = arg;
    int64_t since = mono_now_ms();
    for (int idle = 0; !(idle && mono_now_ms() - since > 10000) && __atomic_load_n(w->received, __ATOMIC_ACQUIRE) < w->n;) {
        sl_message *v;
        size_t n;
        if (sl_msg_receive(w->f->e, "acct", "q", 4, 30, &v, &n) != 0) break;
        if (n > 0 || !idle) since = mono_now_ms();
        idle = n == 0;
        for (size_t i = 0; i < n; i++) {
            int id = atoi(v[i].body);
            pthread_mutex_lock(w->mu);
            w->owner[id]++;
            pthread_mutex_unlock(w->mu);
            __atomic_add_fetch(w->received, 1, __ATOMIC_RELEASE);
            if (sl_msg_ack(w->f->e, "acct", "q", v[i].receipt) == 0) w->acked++;
        }
        sl_messages_free(v, n);
    }
    return NULL;
}

static void concurrent_consumers_n(fx *f, int bucket, int N) {
    enum { T = 8 };
    mkqueue(f, "q", bucket, 5, NULL);
    for (int i = 0; i < N; i++) {
        char b[16];
        snprintf(b, sizeof b, "%d", i);
        assert_int_equal(put(f, "q", b, 0), 0);
    }
    int *owner = calloc((size_t)N, sizeof *owner);
    assert_non_null(owner);
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    int received = 0;
    worker w[T];
    pthread_t th[T];
    for (int i = 0; i < T; i++) {
        w[i] = (worker){f, owner, &mu, 0, &received, N};
        assert_int_equal(pthread_create(&th[i], NULL, consume, &w[i]), 0);
    }
    int acked = 0;
    for (int i = 0; i < T; i++) {
        pthread_join(th[i], NULL);
        acked += w[i].acked;
    }
    for (int i = 0; i < N; i++) assert_int_equal(owner[i], 1);
    free(owner);
    assert_int_equal(acked, N);
    assert_int_equal(qsize(f, "q"), 0);
}

static void concurrent_consumers(fx *f) {
    concurrent_consumers_n(f, 20, 400);
}

static void test_concurrent_consumers(void **state) {
    concurrent_consumers(*state);
}

/* The same with combined compare-and-sets: leases and acks of many threads
 * go out as shared conditional batches, and still each message goes to
 * exactly one consumer. */
static void test_concurrent_consumers_combined(void **state) {
    reopen_combined(*state);
    concurrent_consumers(*state);
}

/* Many small buckets: a refill notes the delivered buckets it passes for
 * sealing and seals them after handing its rows out, while other threads
 * refill past them. Every message is received exactly once, and once the
 * queue is drained every bucket is sealed: the durable reader pointer is
 * past them all. */
static void test_drain_many_buckets(void **state) {
    fx *f = *state;
    enum { N = 3000 };
    concurrent_consumers_n(f, 1, N);
    sl_message *v;
    size_t n;
    assert_int_equal(sl_msg_receive(f->e, "acct", "q", 1, 30, &v, &n), 0);
    assert_int_equal(n, 0);
    sl_messages_free(v, n);
    qstate *q;
    assert_int_equal(eng_queue(f->e, "acct", "q", &q), 0);
    int64_t reader;
    assert_int_equal(eng_pointer_get(f->e, q->qkey, "reader", &reader), 0);
    assert_int_equal(reader, N);
}

/* --- Random faults ------------------------------------------------------------ */


/* Issue 11, defect 2, on the embedded store: a put's first attempt lands
 * after its retry succeeded and the message was received and acked (a
 * coordinator frozen for longer than the request timeout does that). The
 * acked message must never come back, whether the late write carries the
 * timestamp it was issued with or one from when it landed. */
static sl_fault_action duplicate_first_put(void *ctx, const sl_write *w, size_t n) {
    int *armed = ctx;
    (void)n;
    if (*armed && w->t == &sl_t_messages && w->kind == SL_W_UPSERT) {
        *armed = 0;
        return SL_FAULT_DUPLICATE;
    }
    return SL_FAULT_NONE;
}

static void late_put_after_ack(fx *f, int landing) {
    mkqueue(f, "q", 4, 5, NULL);
    int armed = 1;
    sl_store_sqlite_set_fault(f->st, duplicate_first_put, &armed);
    sl_store_sqlite_set_late_stamps(f->st, landing);
    assert_int_equal(put(f, "q", "once", 0), 0);
    sl_message m;
    assert_int_equal(recv1(f, "q", 30, &m), 1);
    assert_string_equal(m.body, "once");
    assert_int_equal(sl_msg_ack(f->e, "acct", "q", m.receipt), 0);
    msg_clear(&m);
    assert_int_equal(sl_store_sqlite_release_delayed(f->st), 1); /* the first attempt lands */
    for (int i = 0; i < 4; i++) { /* leases, seals, finalize timeouts, repair */
        assert_int_equal(recv1(f, "q", 30, &m), 0);
        sl_clock_advance_ms(40000);
        assert_int_equal(sl_engine_tick(f->e), 0);
    }
    assert_int_equal(qsize(f, "q"), 0);
}

static void test_late_put_after_ack_stamped(void **state) {
    late_put_after_ack(*state, 0);
}

static void test_late_put_after_ack_landing(void **state) {
    late_put_after_ack(*state, 1);
}

/* A seeded soak: random puts, receives, acks, updates and clock steps with
 * random store faults on every write. Afterwards, with faults off, the queue
 * is drained; every put that returned 0 must have been delivered, and no
 * message acked successfully may be delivered after its ack. */
static void soak(fx *f, uint64_t seed) {
    enum { N = 300 };
    mkqueue(f, "q", 5, 1000, NULL);
    sl_fault_random_cfg rc = {0};
    rc.seed = seed;
    rc.fail_ppm = 20000;
    rc.unknown_applied_ppm = 30000;
    rc.unknown_dropped_ppm = 30000;
    rc.delay_ppm = 20000;
    rc.duplicate_ppm = 20000;
    sl_store_sqlite_set_fault(f->st, sl_fault_random, &rc);
    sl_store_sqlite_set_late_stamps(f->st, g_landing);
    static int durable[N], delivered[N], acked[N];
    memset(durable, 0, sizeof durable);
    memset(delivered, 0, sizeof delivered);
    memset(acked, 0, sizeof acked);
    uint64_t x = seed * 2654435761u + 1;
    int next = 0;
    char held[8][SL_RECEIPT_MAX];
    int held_id[8], nheld = 0;
    for (int step = 0; step < 1500; step++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        int op = (int)(x % 10);
        if (op < 3 && next < N) {
            char b[16];
            snprintf(b, sizeof b, "%d", next);
            if (put(f, "q", b, 0) == 0) durable[next] = 1;
            next++;
        } else if (op < 6) {
            sl_message *v;
            size_t n;
            if (sl_msg_receive(f->e, "acct", "q", 3, 2, &v, &n) == 0) {
                for (size_t i = 0; i < n; i++) {
                    int id = atoi(v[i].body);
                    assert_false(acked[id]);
                    delivered[id] = 1;
                    if (nheld < 8) {
                        snprintf(held[nheld], SL_RECEIPT_MAX, "%s", v[i].receipt);
                        held_id[nheld++] = id;
                    }
                }
                sl_messages_free(v, n);
            }
        } else if (op < 8 && nheld > 0) {
            int k = (int)(x % (uint64_t)nheld);
            if (sl_msg_ack(f->e, "acct", "q", held[k]) == 0) acked[held_id[k]] = 1;
            held[k][0] = 0;
            memmove(&held[k], &held[k + 1], (size_t)(nheld - k - 1) * SL_RECEIPT_MAX);
            memmove(&held_id[k], &held_id[k + 1], (size_t)(nheld - k - 1) * sizeof(int));
            nheld--;
        } else if (op == 8) {
            sl_clock_advance_ms((int64_t)(x % 3000));
            sl_engine_tick(f->e);
        } else {
            sl_store_sqlite_release_delayed(f->st);
        }
    }
    assert_true(rc.injected > 0);
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    sl_store_sqlite_release_delayed(f->st);
    /* Drain with faults off. Acked messages must not come back; every
     * durable message not acked must be delivered. */
    for (int round = 0; round < 400; round++) {
        sl_message *v;
        size_t n;
        assert_int_equal(sl_msg_receive(f->e, "acct", "q", 32, 1, &v, &n), 0);
        for (size_t i = 0; i < n; i++) {
            int id = atoi(v[i].body);
            assert_false(acked[id]);
            delivered[id] = 1;
            if (sl_msg_ack(f->e, "acct", "q", v[i].receipt) == 0) acked[id] = 1;
        }
        sl_messages_free(v, n);
        if (n == 0) {
            sl_clock_advance_ms(2500);
            assert_int_equal(sl_engine_tick(f->e), 0);
            if (qsize(f, "q") == 0) break;
        }
    }
    for (int i = 0; i < N; i++)
        if (durable[i]) assert_true(delivered[i]);
    assert_int_equal(qsize(f, "q"), 0);
}

static void test_soak_seed_1(void **state) {
    soak(*state, 1);
}
/* Seeded faults on every write, with combined compare-and-sets: a batch
 * that fails or whose outcome is unknown is settled row by row. */
static void test_soak_combined(void **state) {
    reopen_combined(*state);
    soak(*state, 4);
}
static void test_soak_seed_2(void **state) {
    soak(*state, 2);
}
static void test_soak_seed_3(void **state) {
    soak(*state, 3);
}
/* The same with late plain writes stamped when they land: a late put must
 * not undo the lease or the ack made after it (issue 11, defect 2). */
static void test_soak_landing_seed_5(void **state) {
    g_landing = 1;
    soak(*state, 5);
    g_landing = 0;
}
static void test_soak_landing_seed_6(void **state) {
    g_landing = 1;
    soak(*state, 6);
    g_landing = 0;
}

/* The same tests through the calls that do not wait. */
#define ASYNC(name)                                                                                    \
    static void name##_async(void **state) {                                                           \
        g_async = 1;                                                                                   \
        name(state);                                                                                   \
        g_async = 0;                                                                                   \
    }
ASYNC(test_put_receive_ack)
ASYNC(test_redelivery_counts)
ASYNC(test_ack_after_lease_expired_before_redelivery)
ASYNC(test_stale_receipt_conflicts)
ASYNC(test_sticky_receipt)
ASYNC(test_dead_letter_and_redrive)
ASYNC(test_batch_put_all_or_nothing)
ASYNC(test_ack_many_mixed)
ASYNC(test_lease_entry_deferred)
ASYNC(test_unknown_applied_every_cas)
ASYNC(test_unknown_applied_then_reads_fail)
ASYNC(test_unknown_dropped_every_cas)
ASYNC(test_delayed_every_other_cas)
ASYNC(test_receive_many_distinct)
ASYNC(test_receive_many_unknown_applied)
ASYNC(test_concurrent_consumers)
ASYNC(test_drain_many_buckets)
ASYNC(test_soak_seed_1)

/* --- Allocation failures ---------------------------------------------------- */

static int g_alloc_left; /* atomic: allocations until the one that fails */

static int fail_nth_alloc(size_t bytes) {
    (void)bytes;
    return __atomic_sub_fetch(&g_alloc_left, 1, __ATOMIC_ACQ_REL) == 0;
}

/* Each allocation of a put, a batch put, a receive, an ack and a peek fails
 * in turn (the Nth of the sequence, for every N until the sequence runs
 * through): the call fails cleanly (SL_ENOMEM, or succeeds where the memory
 * was optional), nothing crashes or leaks (the sanitizer build checks), and
 * afterwards every message whose put succeeded is delivered exactly once,
 * with its body, unless its ack succeeded. */
static void test_alloc_failure_at_every_point(void **state) {
    fx *f = *state;
    int hit = 0, nth;
    for (nth = 1; nth < 2000; nth++) {
        char q[24];
        snprintf(q, sizeof q, "alloc-%d", nth);
        mkqueue(f, q, 4, 100, NULL);
        const char *bodies[4] = {"one", "two", "three", "four"};
        char ids[4][SL_MSGID_LEN + 1];
        int put_ok[4] = {0}, acked = -1;
        __atomic_store_n(&g_alloc_left, nth, __ATOMIC_RELEASE);
        sl_alloc_hook(fail_nth_alloc);
        sl_put batch[3];
        for (int i = 0; i < 3; i++)
            batch[i] = (sl_put){.body = bodies[i], .len = strlen(bodies[i])};
        int rc = sl_msg_put(f->e, "acct", q, batch, 3, ids);
        assert_true(rc == 0 || rc == SL_ENOMEM);
        for (int i = 0; i < 3; i++)
            put_ok[i] = rc == 0;
        sl_put one = {.body = bodies[3], .len = strlen(bodies[3])};
        rc = sl_msg_put(f->e, "acct", q, &one, 1, &ids[3]);
        assert_true(rc == 0 || rc == SL_ENOMEM);
        put_ok[3] = rc == 0;
        sl_message *ms = NULL;
        size_t n = 0;
        rc = sl_msg_receive(f->e, "acct", q, 2, 30, &ms, &n);
        assert_true(rc == 0 || rc == SL_ENOMEM);
        if (rc == 0 && n > 0) {
            int arc = sl_msg_ack(f->e, "acct", q, ms[0].receipt);
            assert_true(arc == 0 || arc == SL_ENOMEM);
            for (int i = 0; i < 4 && arc == 0; i++)
                if (put_ok[i] && strcmp(ids[i], ms[0].id) == 0) acked = i;
        }
        if (rc == 0) sl_messages_free(ms, n);
        rc = sl_msg_peek(f->e, "acct", q, 2, &ms, &n);
        assert_true(rc == 0 || rc == SL_ENOMEM);
        if (rc == 0) sl_messages_free(ms, n);
        sl_alloc_hook(NULL);
        int failed = __atomic_load_n(&g_alloc_left, __ATOMIC_ACQUIRE) <= 0;
        hit += failed;

        /* Every lease runs out; then the queue gives back what it owes. */
        sl_clock_advance_ms(3600 * 1000);
        int seen[4] = {0};
        for (int round = 0; round < 20; round++) {
            rc = sl_msg_receive(f->e, "acct", q, 10, SL_INVIS_MAX, &ms, &n);
            assert_int_equal(rc, 0);
            for (size_t j = 0; j < n; j++) {
                int k = -1;
                for (int i = 0; i < 4; i++)
                    if (put_ok[i] && strcmp(ids[i], ms[j].id) == 0) k = i;
                assert_true(k >= 0); /* no message whose put failed */
                assert_int_equal(seen[k], 0);
                seen[k] = 1;
                assert_int_equal(ms[j].len, strlen(bodies[k]));
                assert_memory_equal(ms[j].body, bodies[k], ms[j].len);
            }
            sl_messages_free(ms, n);
            if (n == 0) {
                if (sl_engine_tick(f->e) != 0) break;
                sl_clock_advance_ms(3600 * 1000);
            }
            int all = 1;
            for (int i = 0; i < 4; i++)
                if (put_ok[i] && i != acked && !seen[i]) all = 0;
            if (all && n == 0) break;
        }
        for (int i = 0; i < 4; i++) {
            if (!put_ok[i]) continue;
            if (i == acked) {
                assert_int_equal(seen[i], 0);
            } else if (!seen[i]) {
                print_error("allocation %d failed: message %d (put answered 0) was never delivered\n", nth, i);
                fail();
            }
        }
        if (!failed) break; /* the whole sequence ran: every allocation was tried */
    }
    print_message("%d allocations in the sequence, each failed once\n", nth - 1);
    assert_true(hit > 10);
}
ASYNC(test_alloc_failure_at_every_point)

/* --- FIFO queues (fifo.c) -------------------------------------------------- */

static void mkfifo_queue(fx *f, const char *name, int maxdc, const char *dlq) {
    sl_queue_opts o;
    sl_queue_opts_default(&o);
    snprintf(o.name, sizeof o.name, "%s", name);
    o.fifo = 1;
    o.max_delivery_count = maxdc;
    o.finalize_timeout_s = 1;
    o.repair_poll_s = 1;
    if (dlq) snprintf(o.dlq, sizeof o.dlq, "%s", dlq);
    char err[128];
    assert_int_equal(sl_queue_create(f->e, "acct", &o, err, sizeof err), 0);
}

static int fput(fx *f, const char *q, const char *group, const char *dedup, const char *body,
                sl_fifo_sent *out) {
    sl_fifo_msg m = {.body = body, .len = strlen(body), .group = group, .dedup = dedup};
    sl_fifo_sent scratch;
    return sl_fifo_put(f->e, "acct", q, &m, out ? out : &scratch);
}

/* Receives everything visible now: the bodies, joined by spaces, in b. */
static void recv_all(fx *f, const char *q, int invis, char *b, size_t cap, sl_message *first) {
    sl_message *v;
    size_t n;
    assert_int_equal(sl_store_sqlite_flush(f->st), 0);
    assert_int_equal(sl_msg_receive(f->e, "acct", q, 10, invis, &v, &n), 0);
    b[0] = '\0';
    for (size_t i = 0; i < n; i++)
        snprintf(b + strlen(b), cap - strlen(b), "%s%s", i ? " " : "", (char *)v[i].body);
    if (first && n > 0) {
        *first = v[0];
        v[0].body = NULL;
        v[0].attrs_json = NULL;
    }
    sl_messages_free(v, n);
}

static void ack_fifo(fx *f, const char *q, sl_message *m) {
    assert_int_equal(sl_msg_ack(f->e, "acct", q, m->receipt), 0);
    assert_int_equal(sl_fifo_acked(f->e, "acct", q, m->receipt), 0);
    msg_clear(m);
}

static void test_fifo_groups_order_dedup(void **state) {
    fx *f = *state;
    mkfifo_queue(f, "q.fifo", 5, NULL);
    sl_fifo_sent a0, dup;
    assert_int_equal(fput(f, "q.fifo", "A", "a0", "A0", &a0), 0);
    assert_int_equal(fput(f, "q.fifo", "A", "a1", "A1", NULL), 0);
    assert_int_equal(fput(f, "q.fifo", "B", "b0", "B0", NULL), 0);
    assert_int_equal(fput(f, "q.fifo", "A", "a0", "A0 again", &dup), 0);
    assert_true(dup.duplicate);
    assert_string_equal(dup.id, a0.id);
    assert_int_equal(dup.seq, a0.seq);
    /* Standard puts are refused, and a FIFO put to a standard queue. */
    assert_int_equal(put(f, "q.fifo", "x", 0), SL_EINVAL);
    mkqueue(f, "std", 20, 5, NULL);
    assert_int_equal(fput(f, "std", "A", "x", "x", NULL), SL_EINVAL);

    char got[256];
    sl_message m;
    recv_all(f, "q.fifo", 30, got, sizeof got, &m);
    assert_true(strcmp(got, "A0 B0") == 0 || strcmp(got, "B0 A0") == 0);
    recv_all(f, "q.fifo", 30, got, sizeof got, NULL);
    assert_string_equal(got, "");    /* both groups blocked */
    if (strcmp(m.body, "A0") != 0) { /* ack A0, whichever came first */
        msg_clear(&m);
        sl_clock_advance_ms(31000); /* both leases run out */
        recv_all(f, "q.fifo", 30, got, sizeof got, &m);
        while (strcmp(m.body, "A0") != 0) {
            msg_clear(&m);
            sl_clock_advance_ms(31000);
            recv_all(f, "q.fifo", 30, got, sizeof got, &m);
        }
    }
    ack_fifo(f, "q.fifo", &m);
    recv_all(f, "q.fifo", 30, got, sizeof got, &m);
    assert_string_equal(got, "A1");
    ack_fifo(f, "q.fifo", &m);
    /* Only the duplicate was left of A: nothing more. */
    recv_all(f, "q.fifo", 30, got, sizeof got, NULL);
    assert_string_equal(got, "");
}

/* A release whose put into the queue failed (the store, or a crash) is
 * made again by the sweeper once it is stale; the message is never lost. */
static sl_fault_action fail_message_writes(void *ctx, const sl_write *w, size_t n) {
    (void)ctx;
    for (size_t i = 0; i < n; i++)
        if (w[i].t == &sl_t_messages) return SL_FAULT_FAIL;
    return SL_FAULT_NONE;
}

static void test_fifo_release_cut_is_made_again(void **state) {
    fx *f = *state;
    mkfifo_queue(f, "q.fifo", 5, NULL);
    sl_store_sqlite_set_fault(f->st, fail_message_writes, NULL);
    assert_int_equal(fput(f, "q.fifo", "g", "1", "first", NULL), 0); /* durable in its log */
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    assert_int_equal(fput(f, "q.fifo", "g", "2", "second", NULL), 0);
    char got[256];
    sl_message m;
    recv_all(f, "q.fifo", 30, got, sizeof got, NULL);
    assert_string_equal(got, ""); /* first is being released: second waits */
    qstate *q;
    assert_int_equal(eng_queue(f->e, "acct", "q.fifo", &q), 0);
    assert_int_equal(repair_queue(f->e, q), 0);
    recv_all(f, "q.fifo", 30, got, sizeof got, NULL);
    assert_string_equal(got, ""); /* not stale yet */
    sl_clock_advance_ms(31000);
    assert_int_equal(repair_queue(f->e, q), 0);
    recv_all(f, "q.fifo", 30, got, sizeof got, &m);
    assert_string_equal(got, "first");
    ack_fifo(f, "q.fifo", &m);
    recv_all(f, "q.fifo", 30, got, sizeof got, &m);
    assert_string_equal(got, "second");
    ack_fifo(f, "q.fifo", &m);
}

/* A head that is done without an SQS delete (dead-lettered, acked through
 * the native API, purged) is found by the sweeper, and its group goes on. */
static void test_fifo_sweeper_moves_groups_on(void **state) {
    fx *f = *state;
    mkfifo_queue(f, "dlq.fifo", 5, NULL);
    mkfifo_queue(f, "q.fifo", 1, "dlq.fifo");
    for (int i = 0; i < 4; i++) {
        char d[16], b[16];
        snprintf(d, sizeof d, "%d", i);
        snprintf(b, sizeof b, "m%d", i);
        assert_int_equal(fput(f, "q.fifo", "g", d, b, NULL), 0);
    }
    qstate *q;
    assert_int_equal(eng_queue(f->e, "acct", "q.fifo", &q), 0);
    char got[256];
    sl_message m;
    /* m0 is received once and left: its next receive dead-letters it. */
    recv_all(f, "q.fifo", 1, got, sizeof got, NULL);
    assert_string_equal(got, "m0");
    sl_clock_advance_ms(2000);
    recv_all(f, "q.fifo", 30, got, sizeof got, NULL);
    assert_string_equal(got, "");
    assert_int_equal(repair_queue(f->e, q), 0);
    recv_all(f, "q.fifo", 30, got, sizeof got, &m);
    assert_string_equal(got, "m1");
    /* m1 acked without sl_fifo_acked (as the native API does). */
    assert_int_equal(sl_msg_ack(f->e, "acct", "q.fifo", m.receipt), 0);
    msg_clear(&m);
    recv_all(f, "q.fifo", 30, got, sizeof got, NULL);
    assert_string_equal(got, "");
    assert_int_equal(repair_queue(f->e, q), 0);
    recv_all(f, "q.fifo", 30, got, sizeof got, NULL);
    assert_string_equal(got, "m2");
    /* A purge takes m2 (in the queue) and m3 (in the log). */
    sl_clock_advance_ms(10);
    assert_int_equal(sl_queue_purge(f->e, "acct", "q.fifo"), 0);
    sl_clock_advance_ms(10);
    assert_int_equal(repair_queue(f->e, q), 0);
    recv_all(f, "q.fifo", 30, got, sizeof got, NULL);
    assert_string_equal(got, "");
    assert_int_equal(fput(f, "q.fifo", "g", "4", "m4", NULL), 0);
    recv_all(f, "q.fifo", 30, got, sizeof got, NULL);
    assert_string_equal(got, "m4");
    recv_all(f, "dlq.fifo", 30, got, sizeof got, NULL);
    assert_string_equal(got, "m0");
}

/* A send cut after its log row (before its deduplication row) was never
 * answered: its message is skipped once the row is stale, and the group
 * goes on. One cut after its deduplication row may have been answered (or
 * is, when its client retries): it is delivered, in its place. */
static sl_fault_action fail_table(void *ctx, const sl_write *w, size_t n) {
    const sl_table *t = ctx;
    for (size_t i = 0; i < n; i++)
        if (w[i].t == t && (t != &sl_t_fifo_log || w[i].kind == SL_W_UPSERT)) return SL_FAULT_FAIL;
    return SL_FAULT_NONE;
}

static void test_fifo_sends_cut_midway(void **state) {
    fx *f = *state;
    mkfifo_queue(f, "q.fifo", 5, NULL);
    qstate *q;
    assert_int_equal(eng_queue(f->e, "acct", "q.fifo", &q), 0);
    /* Group A: the first send loses its deduplication row. */
    sl_store_sqlite_set_fault(f->st, fail_table, (void *)&sl_t_fifo_dedup);
    assert_int_not_equal(fput(f, "q.fifo", "A", "a1", "A1", NULL), 0);
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    assert_int_equal(fput(f, "q.fifo", "A", "a2", "A2", NULL), 0);
    /* Group B: the first send is cut before its row is marked ready. */
    sl_store_sqlite_set_fault(f->st, fail_table, (void *)&sl_t_fifo_log);
    assert_int_not_equal(fput(f, "q.fifo", "B", "b1", "B1", NULL), 0);
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    assert_int_equal(fput(f, "q.fifo", "B", "b2", "B2", NULL), 0);
    char got[256];
    sl_message m;
    recv_all(f, "q.fifo", 30, got, sizeof got, NULL);
    assert_string_equal(got, ""); /* both groups wait for their first sends */
    sl_clock_advance_ms(31000);
    assert_int_equal(repair_queue(f->e, q), 0);
    recv_all(f, "q.fifo", 30, got, sizeof got, &m);
    assert_true(strcmp(got, "A2 B1") == 0 || strcmp(got, "B1 A2") == 0);
    msg_clear(&m);
    /* Group C: a cut send whose client retries is delivered at once. */
    sl_store_sqlite_set_fault(f->st, fail_table, (void *)&sl_t_fifo_log);
    assert_int_not_equal(fput(f, "q.fifo", "C", "c1", "C1", NULL), 0);
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    sl_fifo_sent again;
    assert_int_equal(fput(f, "q.fifo", "C", "c1", "C1", &again), 0);
    assert_true(again.duplicate);
    recv_all(f, "q.fifo", 30, got, sizeof got, NULL);
    assert_string_equal(got, "C1");
}

/* Sends whose compare-and-sets have unknown outcomes still give each
 * message one number, and lose none. */
static sl_fault_action unknown_fifo_cas(void *ctx, const sl_write *w, size_t n) {
    int *k = ctx;
    if (n == 1 && (w[0].t == &sl_t_fifo_log || w[0].t == &sl_t_fifo_groups) && (*k)++ % 2 == 0)
        return SL_FAULT_UNKNOWN_APPLIED;
    return SL_FAULT_NONE;
}

static void test_fifo_unknown_outcomes(void **state) {
    fx *f = *state;
    mkfifo_queue(f, "q.fifo", 5, NULL);
    int k = 0;
    sl_store_sqlite_set_fault(f->st, unknown_fifo_cas, &k);
    sl_fifo_sent s[5];
    for (int i = 0; i < 5; i++) {
        char d[16], b[16];
        snprintf(d, sizeof d, "%d", i);
        snprintf(b, sizeof b, "m%d", i);
        assert_int_equal(fput(f, "q.fifo", "g", d, b, &s[i]), 0);
        assert_false(s[i].duplicate);
        if (i) assert_int_equal(s[i].seq, s[i - 1].seq + 1);
    }
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    char got[256];
    sl_message m;
    for (int i = 0; i < 5; i++) {
        char b[16];
        snprintf(b, sizeof b, "m%d", i);
        recv_all(f, "q.fifo", 30, got, sizeof got, &m);
        assert_string_equal(got, b);
        ack_fifo(f, "q.fifo", &m);
    }
    recv_all(f, "q.fifo", 30, got, sizeof got, NULL);
    assert_string_equal(got, "");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_receive_ack, setup, teardown),
        cmocka_unit_test_setup_teardown(test_initial_invisibility, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redelivery_counts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_after_lease_expired_before_redelivery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_receipt_is_hmac_sha256, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_receipt_conflicts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sticky_receipt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_extends_and_returns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_lease_does_not_block, setup, teardown),
        cmocka_unit_test_setup_teardown(test_claimed_id_never_written, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention_expires_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ledger_follows_a_random_history, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ledger_recounts_purges_and_retention, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gaps_do_not_starve_delivery, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gap_run_waited_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abandoned_block_sealed_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_put_after_ack_not_moved, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_found_after_long_idle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_entry_kept_a_day_past_due, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late_write_republished, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_lease_entry_in_newest_bucket, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_and_redrive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_crash_no_duplicate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_completed_after_dlq_bucket_finalized, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_completed_after_dlq_bucket_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_completed_after_copy_acked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deleted_queue_state_freed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_fed_queue_still_sealed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rows_outside_a_fed_pool_delivered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_purge_peek_stats, setup, teardown),
        cmocka_unit_test_setup_teardown(test_strict_fifo_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_delete_and_recreate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repair_finalizes_and_deletes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repair_in_runs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_repair_lease_single_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_durable_across_reopen, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_put_all_or_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_many_mixed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pool_overflow_delivers_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_entry_deferred, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_entry_of_deleted_queue_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_applied_then_reads_fail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fifo_groups_order_dedup, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fifo_release_cut_is_made_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fifo_sweeper_moves_groups_on, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fifo_unknown_outcomes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fifo_sends_cut_midway, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_applied_then_reads_fail_combined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_applied_every_cas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_dropped_every_cas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_dropped_every_third_cas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delayed_every_other_cas, setup, teardown),
        cmocka_unit_test_setup_teardown(test_receive_many_distinct, setup, teardown),
        cmocka_unit_test_setup_teardown(test_receive_many_unknown_applied, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_consumers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain_many_buckets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_consumers_combined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_soak_seed_1, setup, teardown),
        cmocka_unit_test_setup_teardown(test_soak_seed_2, setup, teardown),
        cmocka_unit_test_setup_teardown(test_soak_seed_3, setup, teardown),
        cmocka_unit_test_setup_teardown(test_soak_combined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_soak_landing_seed_5, setup, teardown),
        cmocka_unit_test_setup_teardown(test_soak_landing_seed_6, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late_put_after_ack_stamped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late_put_after_ack_landing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_receive_ack_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redelivery_counts_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_after_lease_expired_before_redelivery_async, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stale_receipt_conflicts_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sticky_receipt_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dead_letter_and_redrive_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_put_all_or_nothing_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ack_many_mixed_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_entry_deferred_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_applied_every_cas_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_applied_then_reads_fail_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_dropped_every_cas_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delayed_every_other_cas_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_receive_many_distinct_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_receive_many_unknown_applied_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_consumers_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drain_many_buckets_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_soak_seed_1_async, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failure_at_every_point, setup, teardown),
        cmocka_unit_test_setup_teardown(test_alloc_failure_at_every_point_async, setup, teardown),
    };
    g_combine_all = getenv("SLUICE_TEST_COMBINE") != NULL;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
