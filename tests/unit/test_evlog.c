/* test_evlog.c: the event log on the embedded store (src/events/log.c):
 * ingest and reading back, idempotency by id, positions and the read
 * horizon with an ingest in flight, an ingest cut before its confirmation,
 * the index entries and directory rows an ingest writes, retention, the
 * rules of the fields, the token secret shared through the store, and
 * subscriptions: the worker's delivery in order through a lost advance, a
 * missing queue and failed puts, one owner of two nodes' workers, and a
 * deleted subscription or account. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw, mkdtemp; the sanitizer build drops the Makefile's -D */
#endif
#include <ftw.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "events/events.h"
#include "sluice.h"
#include "store/store.h"

#define T0_MS 1800000000000LL

static int64_t g_width_us; /* the log's bucket width and shards at setup; 0: the defaults */
static int g_shards;
static int g_atomic; /* the log as main.c opens it on the embedded store (one commit per ingest) */

typedef struct {
    char dir[64];
    sl_store *st;
    sl_evlog *l;
} fx;

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/sluice-evlog-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    sl_clock_manual(1);
    sl_clock_set_ms(T0_MS);
    sl_log_level = SL_ERR;
    assert_int_equal(sl_store_sqlite_open(f->dir, &f->st), 0);
    sl_evlog_config cfg = {0, g_width_us, g_shards, g_atomic};
    assert_int_equal(sl_evlog_open(f->st, &cfg, &f->l), 0);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    sl_evlog_close(f->l);
    sl_store_close(f->st);
    nftw(f->dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    sl_clock_manual(0);
    free(f);
    return 0;
}

static sl_event order_event(const char *id) {
    sl_event ev;
    memset(&ev, 0, sizeof ev);
    snprintf(ev.id, sizeof ev.id, "%s", id);
    snprintf(ev.type, sizeof ev.type, "order.created");
    ev.source = "shop/checkout-3";
    ev.subject = "order/1042";
    ev.time = "2026-12-04T10:00:00.5+01:00";
    ev.datacontenttype = "application/json";
    ev.ntags = 2;
    snprintf(ev.tags[0], sizeof ev.tags[0], "customer-77");
    snprintf(ev.tags[1], sizeof ev.tags[1], "eu");
    ev.metadata = "{\"traceId\":\"4bf92f35\"}";
    ev.data = "{\"items\":3,\"total\":99.5}";
    return ev;
}

static size_t rows_of(fx *f, const sl_table *t, sl_val pk0, sl_val pk1, sl_val pk2) {
    sl_result r;
    sl_result_init(&r);
    sl_slice s = {0};
    s.t = t;
    s.pk[0] = pk0;
    s.pk[1] = pk1;
    s.pk[2] = pk2;
    assert_int_equal(sl_store_slice(f->st, &s, &r), 0);
    size_t n = r.n;
    sl_result_free(&r);
    return n;
}

static size_t entries(fx *f, const char *ikey, int64_t us, const char *id) {
    return rows_of(f, &sl_t_event_index, sl_vtext(ikey), sl_vint(sl_ev_bucket(us, SL_EV_WIDTH_DEFAULT_US)),
                   sl_vint(sl_ev_shard(id, SL_EV_SHARDS_DEFAULT)));
}

/* The first page of acme's whole log, up to the read horizon. */
static void first_page(fx *f, int limit, sl_ev_page *p) {
    sl_ev_query q;
    memset(&q, 0, sizeof q);
    snprintf(q.account, sizeof q.account, "acme");
    q.end_us = sl_evlog_horizon(f->l);
    assert_int_equal(sl_evlog_query(f->l, &q, limit, p), 0);
}

static void test_put_and_get(void **state) {
    fx *f = *state;
    sl_event ev = order_event("order-1042-created");
    sl_ev_receipt rc;
    assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &rc), 0);
    assert_int_equal(rc.outcome, SL_EV_CREATED);
    assert_string_equal(rc.id, "order-1042-created");
    assert_int_equal(rc.recorded_us, T0_MS * 1000);
    assert_int_equal(rc.expires_us, rc.recorded_us + (int64_t)SL_EV_RETENTION_DEFAULT * 1000000);

    sl_stored_event s;
    assert_int_equal(sl_evlog_get(f->l, "acme", "order-1042-created", &s), 0);
    assert_string_equal(s.ev.type, "order.created");
    assert_string_equal(s.ev.source, "shop/checkout-3");
    assert_string_equal(s.ev.subject, "order/1042");
    assert_string_equal(s.ev.time, "2026-12-04T10:00:00.5+01:00");
    assert_string_equal(s.ev.datacontenttype, "application/json");
    assert_int_equal(s.ev.ntags, 2);
    assert_string_equal(s.ev.tags[0], "customer-77");
    assert_string_equal(s.ev.tags[1], "eu");
    assert_string_equal(s.ev.metadata, ev.metadata);
    assert_string_equal(s.ev.data, ev.data);
    assert_int_equal(s.recorded_us, rc.recorded_us);
    assert_int_equal(s.expires_us, rc.expires_us);
    sl_stored_event_free(&s);

    /* Absent fields read back absent; another account has its own ids. */
    sl_event bare;
    memset(&bare, 0, sizeof bare);
    snprintf(bare.id, sizeof bare.id, "b");
    snprintf(bare.type, sizeof bare.type, "t");
    assert_int_equal(sl_evlog_put(f->l, "acme", &bare, &rc), 0);
    assert_int_equal(sl_evlog_get(f->l, "acme", "b", &s), 0);
    assert_null(s.ev.source);
    assert_null(s.ev.data);
    assert_null(s.ev.metadata);
    assert_int_equal(s.ev.ntags, 0);
    sl_stored_event_free(&s);
    assert_int_equal(sl_evlog_get(f->l, "other", "b", &s), SL_ENOTFOUND);
    assert_int_equal(sl_evlog_get(f->l, "acme", "never", &s), SL_ENOTFOUND);
    assert_int_equal(sl_evlog_get(f->l, "acme", "not an id", &s), SL_ENOTFOUND);
}

/* The same id again: the same content matches the stored event and gets
 * its receipt; other content is a conflict; neither stores anything. */
static void test_idempotent_by_id(void **state) {
    fx *f = *state;
    sl_event ev = order_event("e1");
    sl_ev_receipt first, again;
    assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &first), 0);
    sl_clock_advance_ms(5000);
    assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &again), 0);
    assert_int_equal(again.outcome, SL_EV_MATCHED);
    assert_int_equal(again.recorded_us, first.recorded_us);
    assert_int_equal(again.expires_us, first.expires_us);

    sl_event other[5];
    for (int i = 0; i < 5; i++)
        other[i] = order_event("e1");
    other[0].data = "{\"items\":4,\"total\":99.5}";
    snprintf(other[1].tags[0], sizeof other[1].tags[0], "eu");
    snprintf(other[1].tags[1], sizeof other[1].tags[1], "customer-77"); /* tags compare in order */
    other[2].source = NULL;
    other[3].ntags = 1;
    snprintf(other[4].type, sizeof other[4].type, "order.paid");
    for (int i = 0; i < 5; i++) {
        assert_int_equal(sl_evlog_put(f->l, "acme", &other[i], &again), 0);
        assert_int_equal(again.outcome, SL_EV_CONFLICT);
        assert_int_equal(again.recorded_us, first.recorded_us);
    }
    sl_stored_event s;
    assert_int_equal(sl_evlog_get(f->l, "acme", "e1", &s), 0);
    assert_string_equal(s.ev.data, ev.data);
    assert_string_equal(s.ev.type, "order.created");
    sl_stored_event_free(&s);
    /* One index entry in the 'all' index: nothing was stored twice. */
    assert_int_equal(entries(f, "acme/a/", first.recorded_us, "e1"), 1);
}

/* Without an id the server makes one: unique, of the id syntax. Positions
 * increase even while the clock stands still. */
static void test_made_ids_and_positions(void **state) {
    fx *f = *state;
    enum { N = 500 };
    static char ids[N][SL_EV_ID_MAX + 1];
    int64_t last = 0;
    sl_event ev;
    memset(&ev, 0, sizeof ev);
    snprintf(ev.type, sizeof ev.type, "tick");
    for (int i = 0; i < N; i++) {
        sl_ev_receipt rc;
        assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &rc), 0);
        assert_int_equal(rc.outcome, SL_EV_CREATED);
        assert_true(sl_ev_id_valid(rc.id));
        assert_true(rc.recorded_us > last);
        last = rc.recorded_us;
        snprintf(ids[i], sizeof ids[i], "%s", rc.id);
        for (int j = 0; j < i; j++)
            assert_string_not_equal(ids[i], ids[j]);
    }
    assert_int_equal(last, T0_MS * 1000 + N - 1);
    sl_stored_event s;
    assert_int_equal(sl_evlog_get(f->l, "acme", ids[N / 2], &s), 0);
    sl_stored_event_free(&s);
}

/* --- An ingest held in the store ------------------------------------------ */

typedef struct {
    sem_t entered, release;
    int hold;
} holder;

static sl_fault_action hold_index_writes(void *ctx, const sl_write *w, size_t n) {
    holder *h = ctx;
    for (size_t i = 0; i < n; i++)
        if (w[i].t == &sl_t_event_index && __atomic_exchange_n(&h->hold, 0, __ATOMIC_ACQ_REL)) {
            sem_post(&h->entered);
            sem_wait(&h->release);
        }
    return SL_FAULT_NONE;
}

typedef struct {
    fx *f;
    sl_ev_receipt rc;
    int ret;
} put_arg;

static void *put_thread(void *arg) {
    put_arg *a = arg;
    sl_event ev = order_event("held");
    a->ret = sl_evlog_put(a->f->l, "acme", &ev, &a->rc);
    return NULL;
}

/* The horizon never passes an ingest still in flight: the clock moves on
 * 10 s while one is held in the store, and the horizon stays at its stamp
 * until it is done, then moves to now. */
static void test_horizon_waits_for_ingest_in_flight(void **state) {
    fx *f = *state;
    holder h;
    sem_init(&h.entered, 0, 0);
    sem_init(&h.release, 0, 0);
    h.hold = 1;
    sl_store_sqlite_set_fault(f->st, hold_index_writes, &h);
    put_arg a = {f, {0}, -1};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, put_thread, &a), 0);
    sem_wait(&h.entered);
    sl_clock_advance_ms(10000);
    int64_t during = sl_evlog_horizon(f->l);
    sem_post(&h.release);
    pthread_join(t, NULL);
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    assert_int_equal(a.ret, 0);
    assert_int_equal(a.rc.recorded_us, T0_MS * 1000);
    assert_int_equal(during, a.rc.recorded_us);
    assert_int_equal(sl_evlog_horizon(f->l), (T0_MS + 10000) * 1000);
    sem_destroy(&h.entered);
    sem_destroy(&h.release);
}

/* --- An ingest cut before its confirmation --------------------------------- */

static sl_fault_action fail_confirmation(void *ctx, const sl_write *w, size_t n) {
    int *left = ctx;
    if (n == 1 && w->t == &sl_t_event && !w->row.v[4].set && *left > 0) { /* only 'confirmed' is written */
        --*left;
        return SL_FAULT_FAIL;
    }
    return SL_FAULT_NONE;
}

/* The event row and its entries are written, the confirmation is not: the
 * event is not visible, and the client's retry with the same id stores it
 * at a new position. */
static void test_cut_ingest_is_invisible_and_retried(void **state) {
    fx *f = *state;
    int left = 1;
    sl_store_sqlite_set_fault(f->st, fail_confirmation, &left);
    sl_event ev = order_event("cut");
    sl_ev_receipt rc;
    assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &rc), SL_EUNAVAILABLE);
    int64_t first_us = T0_MS * 1000;
    assert_int_equal(entries(f, "acme/a/", first_us, "cut"), 1); /* written, and skipped by readers */
    sl_stored_event s;
    assert_int_equal(sl_evlog_get(f->l, "acme", "cut", &s), SL_ENOTFOUND);
    sl_clock_advance_ms(1000);
    assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &rc), 0);
    assert_int_equal(rc.outcome, SL_EV_CREATED);
    assert_true(rc.recorded_us > first_us);
    assert_int_equal(sl_evlog_get(f->l, "acme", "cut", &s), 0);
    assert_int_equal(s.recorded_us, rc.recorded_us);
    sl_stored_event_free(&s);
    assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &rc), 0);
    assert_int_equal(rc.outcome, SL_EV_MATCHED);
}

/* --- Late writes ------------------------------------------------------------- */

static int slow_left;
static sl_fault_action slow_index_writes(void *ctx, const sl_write *w, size_t n) {
    (void)ctx;
    for (size_t i = 0; i < n; i++)
        if (w[i].t == &sl_t_event_index && slow_left > 0) {
            slow_left--;
            sl_clock_advance_ms(600); /* the writes take 600 ms */
            break;
        }
    return SL_FAULT_NONE;
}

/* With a settle time (Cassandra's horizon), an ingest whose writes took
 * over half of it is stored again at a new position: a reader elsewhere
 * may have passed the first one. The entries at the old position are
 * skipped, so a query returns the event once, at the position its receipt
 * names; writes that stay late after a few tries answer ETIMEOUT. */
static void test_late_ingest_is_stamped_again(void **state) {
    fx *f = *state;
    sl_evlog_close(f->l);
    sl_evlog_config cfg = {.settle_ms = 1000};
    assert_int_equal(sl_evlog_open(f->st, &cfg, &f->l), 0);
    slow_left = 1;
    sl_store_sqlite_set_fault(f->st, slow_index_writes, NULL);
    sl_event ev = order_event("late");
    sl_ev_receipt rc;
    assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &rc), 0);
    assert_int_equal(rc.recorded_us, (T0_MS + 600) * 1000);
    assert_int_equal(entries(f, "acme/a/", T0_MS * 1000, "late"), 2); /* the old entry and the new */
    sl_clock_advance_ms(2000);
    sl_ev_page p;
    first_page(f, 10, &p);
    assert_int_equal(p.n, 1);
    assert_int_equal(p.events[0].recorded_us, rc.recorded_us);
    sl_ev_page_free(&p);
    slow_left = 100;
    ev = order_event("never-on-time");
    assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &rc), SL_ETIMEOUT);
    sl_stored_event st;
    assert_int_equal(sl_evlog_get(f->l, "acme", "never-on-time", &st), SL_ENOTFOUND);
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
}

/* --- Index entries and the bucket directory -------------------------------- */

static int dir_writes;
static sl_fault_action count_dir_writes(void *ctx, const sl_write *w, size_t n) {
    (void)ctx;
    for (size_t i = 0; i < n; i++)
        dir_writes += w[i].t == &sl_t_event_bucket;
    return SL_FAULT_NONE;
}

static void test_index_entries_and_directory(void **state) {
    fx *f = *state;
    sl_event ev = order_event("e1");
    sl_ev_receipt rc;
    dir_writes = 0;
    sl_store_sqlite_set_fault(f->st, count_dir_writes, NULL);
    assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &rc), 0);
    assert_int_equal(dir_writes, 4); /* all, the type, two tags */
    static const char *keys[] = {"acme/a/", "acme/t/order.created", "acme/g/customer-77", "acme/g/eu"};
    int64_t bucket = sl_ev_bucket(rc.recorded_us, SL_EV_WIDTH_DEFAULT_US);
    for (size_t k = 0; k < 4; k++) {
        assert_int_equal(entries(f, keys[k], rc.recorded_us, "e1"), 1);
        sl_result r;
        sl_result_init(&r);
        sl_slice s = {0};
        s.t = &sl_t_event_bucket;
        s.pk[0] = sl_vtext(keys[k]);
        s.pk[1] = sl_vint(sl_ev_month(bucket));
        assert_int_equal(sl_store_slice(f->st, &s, &r), 0);
        assert_int_equal(r.n, 1);
        assert_int_equal(r.rows[0].v[2].i, bucket);
        assert_int_equal(r.rows[0].v[3].i, SL_EV_WIDTH_DEFAULT_US);
        assert_int_equal(r.rows[0].v[4].i, SL_EV_SHARDS_DEFAULT);
        sl_result_free(&r);
    }
    assert_int_equal(entries(f, "acme/t/order.paid", rc.recorded_us, "e1"), 0);
    /* The same bucket again: the directory is known; the next bucket's is
     * written, for the keys of that event only. */
    ev = order_event("e2");
    assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &rc), 0);
    assert_int_equal(dir_writes, 4);
    sl_clock_advance_ms(SL_EV_WIDTH_DEFAULT_US / 1000);
    ev = order_event("e3");
    ev.ntags = 0;
    assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &rc), 0);
    assert_int_equal(dir_writes, 6);
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
}

/* --- Retention ------------------------------------------------------------- */

static void test_retention(void **state) {
    fx *f = *state;
    int s;
    assert_int_equal(sl_evlog_retention(f->l, "acme", &s), 0);
    assert_int_equal(s, SL_EV_RETENTION_DEFAULT);
    assert_int_equal(sl_evlog_set_retention(f->l, "acme", 0), SL_EINVAL);
    assert_int_equal(sl_evlog_set_retention(f->l, "acme", SL_EV_RETENTION_MAX + 1), SL_EINVAL);
    assert_int_equal(sl_evlog_set_retention(f->l, "acme", 60), 0);
    assert_int_equal(sl_evlog_retention(f->l, "acme", &s), 0);
    assert_int_equal(s, 60);
    assert_int_equal(sl_evlog_retention(f->l, "other", &s), 0);
    assert_int_equal(s, SL_EV_RETENTION_DEFAULT);

    sl_event ev = order_event("short");
    sl_ev_receipt rc;
    assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &rc), 0);
    assert_int_equal(rc.expires_us, rc.recorded_us + 60 * 1000000LL);
    assert_int_equal(sl_evlog_put(f->l, "other", &ev, &rc), 0);
    sl_clock_advance_ms(61 * 1000);
    sl_stored_event st;
    assert_int_equal(sl_evlog_get(f->l, "acme", "short", &st), SL_ENOTFOUND);
    assert_int_equal(entries(f, "acme/a/", T0_MS * 1000, "short"), 0);
    assert_int_equal(sl_evlog_get(f->l, "other", "short", &st), 0);
    sl_stored_event_free(&st);
    /* Expired, its id is free again. */
    assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &rc), 0);
    assert_int_equal(rc.outcome, SL_EV_CREATED);
}

/* --- The rules of the fields ----------------------------------------------- */

static void test_field_rules(void **state) {
    fx *f = *state;
    sl_ev_receipt rc;
    char long_text[600], many[SL_EV_STR_MAX * 2 + 1];
    memset(long_text, 'x', SL_EV_STR_MAX + 1);
    long_text[SL_EV_STR_MAX + 1] = '\0';
    for (int i = 0; i < SL_EV_STR_MAX; i++)
        memcpy(many + 2 * i, "\xc3\xa9", 2); /* 256 characters of 2 bytes */
    many[SL_EV_STR_MAX * 2] = '\0';
    sl_event ev = order_event("x");
    assert_null(sl_event_check(&ev));
    ev.source = many;
    assert_null(sl_event_check(&ev));
    struct {
        const char *field;
        sl_event ev;
    } bad[9];
    for (int i = 0; i < 9; i++)
        bad[i].ev = order_event("x");
    bad[0].field = "id", snprintf(bad[0].ev.id, sizeof bad[0].ev.id, "a b");
    bad[1].field = "type", bad[1].ev.type[0] = '\0';
    bad[2].field = "source", bad[2].ev.source = "";
    bad[3].field = "source", bad[3].ev.source = long_text;
    bad[4].field = "subject", bad[4].ev.subject = "two\nlines";
    bad[5].field = "time", bad[5].ev.time = "yesterday";
    bad[6].field = "tags", snprintf(bad[6].ev.tags[1], sizeof bad[6].ev.tags[1], "customer-77");
    bad[7].field = "tags", bad[7].ev.ntags = SL_EV_FILTER_MAX + 1;
    bad[8].field = "datacontenttype", bad[8].ev.datacontenttype = "a\x7f";
    for (int i = 0; i < 9; i++) {
        const char *why = sl_event_check(&bad[i].ev);
        if (!why || strcmp(why, bad[i].field) != 0) fail_msg("case %d: %s, not %s", i, why, bad[i].field);
        assert_int_equal(sl_evlog_put(f->l, "acme", &bad[i].ev, &rc), SL_EINVAL);
    }
    char *big = malloc(SL_EV_DATA_MAX + 2);
    memset(big, '1', SL_EV_DATA_MAX + 1);
    big[SL_EV_DATA_MAX + 1] = '\0';
    ev = order_event("big");
    ev.data = big;
    assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &rc), SL_ETOOBIG);
    big[SL_EV_DATA_MAX] = '\0';
    assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &rc), 0);
    free(big);
    assert_int_equal(sl_evlog_put(f->l, "not/an/account", &ev, &rc), SL_EINVAL);
    sl_stored_event s;
    assert_int_equal(sl_evlog_get(f->l, "acme", "x", &s), SL_ENOTFOUND); /* nothing refused was stored */
}

/* Every node verifies every node's tokens: the secret is made once and
 * read from the store by the next log opened. */
static void test_secret_shared(void **state) {
    fx *f = *state;
    sl_evlog *other;
    sl_evlog_config cfg = {0};
    assert_int_equal(sl_evlog_open(f->st, &cfg, &other), 0);
    assert_memory_equal(sl_evlog_secret(other), sl_evlog_secret(f->l), SL_EV_SECRET_LEN);
    static const unsigned char zero[SL_EV_SECRET_LEN];
    assert_memory_not_equal(sl_evlog_secret(f->l), zero, SL_EV_SECRET_LEN);
    sl_evlog_close(other);
}

/* --- Queries against brute force ------------------------------------------ */

enum { NEV = 700 };
typedef struct {
    int64_t us;
    char id[32];
    int type;
    unsigned tags; /* bit i: tag gi */
    int visible;
} ref_event;

static int ref_cmp(const void *a, const void *b) {
    const ref_event *x = a, *y = b;
    if (x->us != y->us) return x->us < y->us ? -1 : 1;
    return strcmp(x->id, y->id);
}

static int setup_small_buckets(void **state) {
    g_width_us = 1000000; /* 1 s */
    g_shards = 3;
    int rc = setup(state);
    g_width_us = 0;
    g_shards = 0;
    return rc;
}

static uint64_t rnd = 88172645463325252ull;
static uint64_t next_rnd(void) {
    rnd ^= rnd << 13;
    rnd ^= rnd >> 7;
    rnd ^= rnd << 17;
    return rnd;
}

/* Events of 4 types and 0..3 of 5 tags over about 17 minutes of 1-second
 * buckets of 3 shards (some at one microsecond, some cut before their
 * confirmation), then random queries paged to their end through tokens:
 * each gives exactly the matching events in the range, in strict position
 * order, each once, at most limit per page. */
static void test_queries_match_brute_force(void **state) {
    fx *f = *state;
    static ref_event ref[NEV];
    int cut_left = 0;
    for (int i = 0; i < NEV; i++) {
        ref_event *r = &ref[i];
        sl_clock_advance_ms((int64_t)(next_rnd() % 4) == 0 ? 0 : (int64_t)(next_rnd() % 3000));
        sl_event ev;
        memset(&ev, 0, sizeof ev);
        snprintf(r->id, sizeof r->id, "ev-%d", i);
        snprintf(ev.id, sizeof ev.id, "%s", r->id);
        r->type = (int)(next_rnd() % 4);
        snprintf(ev.type, sizeof ev.type, "t%d", r->type);
        r->tags = 0;
        for (int k = (int)(next_rnd() % 4); k > 0; k--) {
            int g = (int)(next_rnd() % 5);
            if (r->tags & 1u << g) continue;
            r->tags |= 1u << g;
            snprintf(ev.tags[ev.ntags++], sizeof ev.tags[0], "g%d", g);
        }
        int cut = next_rnd() % 20 == 0;
        if (cut) {
            cut_left = 1;
            sl_store_sqlite_set_fault(f->st, fail_confirmation, &cut_left);
        }
        sl_ev_receipt rc;
        int ret = sl_evlog_put(f->l, "acme", &ev, &rc);
        sl_store_sqlite_set_fault(f->st, NULL, NULL);
        assert_int_equal(ret, cut ? SL_EUNAVAILABLE : 0);
        r->us = cut ? sl_now_us() : rc.recorded_us;
        r->visible = !cut;
    }
    sl_clock_advance_ms(1);
    int64_t first = ref[0].us, horizon = sl_evlog_horizon(f->l);
    qsort(ref, NEV, sizeof ref[0], ref_cmp);

    sl_ev_query q;
    char tok[SL_EV_TOKEN_MAX + 1];
    static ref_event want[NEV];
    for (int round = 0; round < 150; round++) {
        memset(&q, 0, sizeof q);
        snprintf(q.account, sizeof q.account, "acme");
        q.desc = (int)(next_rnd() % 2);
        int64_t span = horizon - first + 2000000;
        q.start_us = round % 3 == 0 ? 0 : first - 1000000 + (int64_t)(next_rnd() % (uint64_t)span);
        q.end_us = round % 3 == 0 ? horizon : q.start_us + (int64_t)(next_rnd() % (uint64_t)span);
        if (q.end_us > horizon) q.end_us = horizon;
        if (q.end_us < q.start_us) q.end_us = q.start_us;
        unsigned types = 0, tags = 0;
        for (int k = (int)(next_rnd() % 3); k > 0; k--)
            types |= 1u << (next_rnd() % 4);
        for (int k = (int)(next_rnd() % 3); k > 0; k--)
            tags |= 1u << (next_rnd() % 5);
        for (int t = 0; t < 4; t++)
            if (types & 1u << t) snprintf(q.types[q.ntypes++], sizeof q.types[0], "t%d", t);
        for (int g = 0; g < 5; g++)
            if (tags & 1u << g) snprintf(q.tags[q.ntags++], sizeof q.tags[0], "g%d", g);
        sl_ev_query_canon(&q);
        int nwant = 0;
        for (int i = 0; i < NEV; i++) {
            const ref_event *r = &ref[q.desc ? NEV - 1 - i : i];
            if (r->visible && r->us >= q.start_us && r->us < q.end_us && (!types || types & 1u << r->type) &&
                (!tags || tags & r->tags))
                want[nwant++] = *r;
        }
        int limit = 1 + (int)(next_rnd() % 40), got = 0, pages = 0;
        for (;;) {
            sl_ev_page p;
            assert_int_equal(sl_evlog_query(f->l, &q, limit, &p), 0);
            assert_true(p.n <= (size_t)limit);
            for (size_t i = 0; i < p.n; i++, got++) {
                if (got >= nwant) fail_msg("round %d: more events than the %d matching", round, nwant);
                if (strcmp(p.events[i].ev.id, want[got].id) != 0)
                    fail_msg("round %d (%s, limit %d): event %d is %s, not %s", round,
                             q.desc ? "desc" : "asc", limit, got, p.events[i].ev.id, want[got].id);
                assert_int_equal(p.events[i].recorded_us, want[got].us);
            }
            int done = p.done;
            sl_ev_query next = p.next;
            sl_ev_page_free(&p);
            assert_true(++pages < 2000);
            if (done) break;
            /* Through a token, as a client pages. */
            long n = sl_ev_token_make(&next, sl_evlog_secret(f->l), tok);
            assert_true(n > 0);
            assert_int_equal(sl_ev_token_read(tok, (size_t)n, sl_evlog_secret(f->l), &q), 0);
        }
        if (got != nwant) fail_msg("round %d: %d events of the %d matching", round, got, nwant);
    }
}

/* --- Subscriptions ------------------------------------------------------ */

/* A sink that records what the worker puts, as the queue would hold it. */
typedef struct {
    pthread_mutex_t mu;
    char (*ids)[SL_EV_ID_MAX + 1];
    size_t n, cap;
    int puts;
    int missing;   /* answer SL_ENOTFOUND: no such queue */
    int fail_left; /* answer SL_EIO this many times */
} sink_rec;

static int rec_put(void *ctx, const char *account, const char *queue, const char *sub,
                   const sl_stored_event *evs, size_t n) {
    (void)account;
    (void)queue;
    (void)sub;
    sink_rec *k = ctx;
    pthread_mutex_lock(&k->mu);
    int rc = k->missing ? SL_ENOTFOUND : k->fail_left > 0 ? (k->fail_left--, SL_EIO) : 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (k->n == k->cap) k->ids = realloc(k->ids, (k->cap = k->cap ? 2 * k->cap : 256) * sizeof *k->ids);
        snprintf(k->ids[k->n++], sizeof k->ids[0], "%s", evs[i].ev.id);
    }
    if (rc == 0) k->puts++;
    pthread_mutex_unlock(&k->mu);
    return rc;
}

static int rec_exists(void *ctx, const char *account, const char *queue) {
    (void)account;
    (void)queue;
    sink_rec *k = ctx;
    pthread_mutex_lock(&k->mu);
    int x = !k->missing;
    pthread_mutex_unlock(&k->mu);
    return x;
}

static size_t rec_count(sink_rec *k) {
    pthread_mutex_lock(&k->mu);
    size_t n = k->n;
    pthread_mutex_unlock(&k->mu);
    return n;
}

/* Waits (real time; the worker runs on it) until cond(arg) holds, for at
 * most 20 s. */
static int await_cond(int (*cond)(void *), void *arg) {
    for (int i = 0; i < 2000; i++) {
        if (cond(arg)) return 1;
        usleep(10000);
    }
    return 0;
}

typedef struct {
    sink_rec *k;
    size_t n;
} atleast;
static int has_atleast(void *arg) {
    atleast *a = arg;
    return rec_count(a->k) >= a->n;
}

static sl_evsubs *start_worker(fx *f, const char *node, sink_rec *k) {
    sl_evsubs_config c = {.node_id = node, .sink = {rec_put, rec_exists, k}, .poll_ms = 10};
    sl_evsubs *w;
    assert_int_equal(sl_evsubs_start(f->l, &c, &w), 0);
    return w;
}

static sl_ev_sub sub_def(const char *name, const char *type) {
    sl_ev_sub d;
    memset(&d, 0, sizeof d);
    snprintf(d.name, sizeof d.name, "%s", name);
    snprintf(d.queue, sizeof d.queue, "q");
    if (type) snprintf(d.filter.types[d.filter.ntypes++], sizeof d.filter.types[0], "%s", type);
    d.start = SL_SUB_NOW;
    return d;
}

static void put_typed(fx *f, const char *id, const char *type) {
    sl_event ev;
    memset(&ev, 0, sizeof ev);
    snprintf(ev.id, sizeof ev.id, "%s", id);
    snprintf(ev.type, sizeof ev.type, "%s", type);
    sl_ev_receipt rc;
    assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &rc), 0);
}

/* Fails the next compare-and-set of a subscription row that advances its
 * cursor over delivered events (delivered past *ctx): not applied, and the
 * caller is told the outcome is unknown (as a crash between the put and
 * the advance leaves it). */
static int advances_to_drop;
static sl_fault_action drop_advance(void *ctx, const sl_write *w, size_t n) {
    int col = 0;
    while (strcmp(sl_t_event_subscription.cols[col].name, "delivered") != 0)
        col++;
    if (n == 1 && w->t == &sl_t_event_subscription && w->kind == SL_W_UPDATE_IF &&
        w->row.v[col].i > *(const int64_t *)ctx && __atomic_load_n(&advances_to_drop, __ATOMIC_SEQ_CST) > 0) {
        __atomic_sub_fetch(&advances_to_drop, 1, __ATOMIC_SEQ_CST);
        return SL_FAULT_UNKNOWN_DROPPED;
    }
    return SL_FAULT_NONE;
}

/* Matching events are put in position order, each once; a put whose
 * advance is lost is put again (the same events, nothing else) and
 * nothing is lost; failed puts are tried again. */
static void test_sub_delivers_in_order(void **state) {
    fx *f = *state;
    sink_rec k = {.mu = PTHREAD_MUTEX_INITIALIZER};
    sl_ev_sub def = sub_def("s1", "a"), s;
    int created;
    assert_int_equal(sl_evsub_create(f->l, "acme", &def, &s, &created), 0);
    assert_true(created);
    sl_clock_advance_ms(1);
    char id[32];
    for (int i = 0; i < 250; i++) {
        snprintf(id, sizeof id, "e%03d", i);
        put_typed(f, id, i % 5 == 0 ? "b" : "a");
    }
    sl_clock_advance_ms(1);
    sl_evsubs *w = start_worker(f, "node-a", &k);
    atleast want = {&k, 200};
    assert_true(await_cond(has_atleast, &want));
    pthread_mutex_lock(&k.mu);
    assert_int_equal(k.n, 200);
    for (int i = 0, j = 0; i < 250; i++) {
        if (i % 5 == 0) continue;
        snprintf(id, sizeof id, "e%03d", i);
        assert_string_equal(k.ids[j++], id);
    }
    pthread_mutex_unlock(&k.mu);

    /* The next advance is lost after its put: that page comes again. */
    static const int64_t so_far = 200; /* an idle write of the cursor is not the one */
    __atomic_store_n(&advances_to_drop, 1, __ATOMIC_SEQ_CST);
    sl_store_sqlite_set_fault(f->st, drop_advance, (void *)&so_far);
    for (int i = 0; i < 30; i++) {
        snprintf(id, sizeof id, "f%03d", i);
        put_typed(f, id, "a");
    }
    sl_clock_advance_ms(1);
    want.n = 260;
    assert_true(await_cond(has_atleast, &want));
    /* Then puts that fail twice: tried again, nothing lost. */
    pthread_mutex_lock(&k.mu);
    k.fail_left = 2;
    pthread_mutex_unlock(&k.mu);
    put_typed(f, "g000", "a");
    sl_clock_advance_ms(1);
    want.n = 261;
    assert_true(await_cond(has_atleast, &want));
    sl_evsubs_stop(w);
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    assert_int_equal(__atomic_load_n(&advances_to_drop, __ATOMIC_SEQ_CST), 0);
    /* f000..f029 twice in a row (the page again), then g000. */
    assert_int_equal(k.n, 261);
    for (int i = 0; i < 60; i++) {
        snprintf(id, sizeof id, "f%03d", i % 30);
        assert_string_equal(k.ids[200 + i], id);
    }
    assert_string_equal(k.ids[260], "g000");
    assert_int_equal(sl_evsub_get(f->l, "acme", "s1", &s), 0);
    assert_int_equal(s.delivered, 231); /* the lost advance did not count */
    assert_int_equal(s.state, SL_SUB_ACTIVE);
    assert_true(s.position.us > 0);
    free(k.ids);
}

typedef struct {
    fx *f;
    sl_sub_state state;
} state_is;
static int has_state(void *arg) {
    state_is *x = arg;
    sl_ev_sub s;
    return sl_evsub_get(x->f->l, "acme", "s1", &s) == 0 && s.state == x->state;
}

/* While its queue is missing a subscription waits with its position
 * unchanged, then delivers what came meanwhile. */
static void test_sub_waits_for_its_queue(void **state) {
    fx *f = *state;
    sink_rec k = {.mu = PTHREAD_MUTEX_INITIALIZER, .missing = 1};
    sl_ev_sub def = sub_def("s1", NULL), s;
    int created;
    assert_int_equal(sl_evsub_create(f->l, "acme", &def, &s, &created), 0);
    int64_t start = s.position.us;
    sl_clock_advance_ms(1);
    put_typed(f, "m1", "x");
    put_typed(f, "m2", "y");
    sl_clock_advance_ms(1);
    sl_evsubs *w = start_worker(f, "node-a", &k);
    state_is missing = {f, SL_SUB_QUEUE_MISSING}, active = {f, SL_SUB_ACTIVE};
    assert_true(await_cond(has_state, &missing));
    assert_int_equal(sl_evsub_get(f->l, "acme", "s1", &s), 0);
    assert_int_equal(s.position.us, start);
    assert_int_equal(rec_count(&k), 0);
    pthread_mutex_lock(&k.mu);
    k.missing = 0;
    pthread_mutex_unlock(&k.mu);
    atleast want = {&k, 2};
    assert_true(await_cond(has_atleast, &want));
    assert_true(await_cond(has_state, &active));
    sl_evsubs_stop(w);
    assert_int_equal(k.n, 2);
    assert_string_equal(k.ids[0], "m1");
    assert_string_equal(k.ids[1], "m2");
    free(k.ids);
}

/* Two nodes' workers: one owns the subscription and delivers; when it
 * stops it gives the lease back and the other delivers from where it was,
 * at once. A deleted subscription delivers nothing more. */
static void test_sub_one_owner_then_the_other(void **state) {
    fx *f = *state;
    sink_rec ka = {.mu = PTHREAD_MUTEX_INITIALIZER}, kb = {.mu = PTHREAD_MUTEX_INITIALIZER};
    sl_ev_sub def = sub_def("s1", NULL), s;
    int created;
    assert_int_equal(sl_evsub_create(f->l, "acme", &def, &s, &created), 0);
    sl_evsubs *a = start_worker(f, "node-a", &ka);
    atleast one = {&ka, 1};
    sl_clock_advance_ms(1);
    put_typed(f, "o1", "x");
    sl_clock_advance_ms(1);
    assert_true(await_cond(has_atleast, &one));
    sl_evsubs *b = start_worker(f, "node-b", &kb);
    char id[32];
    for (int i = 2; i <= 20; i++) {
        snprintf(id, sizeof id, "o%d", i);
        put_typed(f, id, "x");
        sl_clock_advance_ms(1);
    }
    one.n = 20;
    assert_true(await_cond(has_atleast, &one));
    assert_int_equal(rec_count(&kb), 0);
    sl_evsubs_stop(a);
    put_typed(f, "o21", "x");
    sl_clock_advance_ms(1);
    atleast other = {&kb, 1};
    assert_true(await_cond(has_atleast, &other)); /* well before the 15 s TTL */
    assert_string_equal(kb.ids[0], "o21");
    assert_int_equal(ka.n, 20);

    /* Deleted: a second subscription shows the worker has moved past. */
    assert_int_equal(sl_evsub_delete(f->l, "acme", "s1"), 0);
    assert_int_equal(sl_evsub_delete(f->l, "acme", "s1"), SL_ENOTFOUND);
    assert_int_equal(sl_evsub_get(f->l, "acme", "s1", &s), SL_ENOTFOUND);
    sl_ev_sub d2 = sub_def("s2", "marker");
    assert_int_equal(sl_evsub_create(f->l, "acme", &d2, &s, &created), 0);
    sl_clock_advance_ms(1);
    put_typed(f, "o22", "x");
    put_typed(f, "mk", "marker");
    sl_clock_advance_ms(1);
    other.n = 2;
    assert_true(await_cond(has_atleast, &other));
    sl_evsubs_stop(b);
    assert_int_equal(kb.n, 2);
    assert_string_equal(kb.ids[1], "mk");
    free(ka.ids);
    free(kb.ids);
}

/* Definitions: the same one is found again, another under the name is
 * refused, an account holds at most SL_EV_SUBS_MAX, and a deleted
 * account's subscriptions and events are gone. */
static void test_sub_definitions_and_forget(void **state) {
    fx *f = *state;
    sl_ev_sub d = sub_def("s1", "b"), s;
    snprintf(d.filter.types[d.filter.ntypes++], sizeof d.filter.types[0], "a");
    d.start = SL_SUB_TIME;
    d.start_us = 1000;
    int created;
    assert_int_equal(sl_evsub_create(f->l, "acme", &d, &s, &created), 0);
    assert_true(created);
    assert_string_equal(s.filter.types[0], "a"); /* canonical */
    assert_int_equal(s.position.us, 1000);
    assert_int_equal(sl_evsub_create(f->l, "acme", &d, &s, &created), 0);
    assert_false(created);
    d.start_us = 2000;
    assert_int_equal(sl_evsub_create(f->l, "acme", &d, &s, &created), SL_EEXISTS);
    for (int i = 2; i <= SL_EV_SUBS_MAX; i++) {
        sl_ev_sub x = sub_def("", NULL);
        snprintf(x.name, sizeof x.name, "s%d", i);
        assert_int_equal(sl_evsub_create(f->l, "acme", &x, &s, &created), 0);
    }
    sl_ev_sub x = sub_def("one-more", NULL);
    assert_int_equal(sl_evsub_create(f->l, "acme", &x, &s, &created), SL_ETOOBIG);
    assert_int_equal(sl_evsub_create(f->l, "other", &x, &s, &created), 0);
    sl_ev_sub *all;
    size_t n;
    assert_int_equal(sl_evsub_list(f->l, "acme", &all, &n), 0);
    assert_int_equal(n, SL_EV_SUBS_MAX);
    free(all);

    put_typed(f, "kept", "t");
    sl_stored_event e;
    assert_int_equal(sl_evlog_get(f->l, "acme", "kept", &e), 0);
    sl_stored_event_free(&e);
    assert_int_equal(sl_evlog_set_retention(f->l, "acme", 60), 0);
    sl_clock_advance_ms(1);
    assert_int_equal(sl_evlog_forget(f->l, "acme"), 0);
    assert_int_equal(sl_evlog_get(f->l, "acme", "kept", &e), SL_ENOTFOUND);
    assert_int_equal(sl_evsub_list(f->l, "acme", &all, &n), 0);
    assert_int_equal(n, 0);
    free(all);
    assert_int_equal(sl_evsub_list(f->l, "other", &all, &n), 0);
    assert_int_equal(n, 1);
    free(all);
    int secs;
    assert_int_equal(sl_evlog_retention(f->l, "acme", &secs), 0);
    assert_int_equal(secs, SL_EV_RETENTION_DEFAULT);
    /* The id is free: stored anew, not matched with the forgotten one. */
    sl_event ev;
    memset(&ev, 0, sizeof ev);
    snprintf(ev.id, sizeof ev.id, "kept");
    snprintf(ev.type, sizeof ev.type, "other");
    sl_ev_receipt rc;
    assert_int_equal(sl_evlog_put(f->l, "acme", &ev, &rc), 0);
    assert_int_equal(rc.outcome, SL_EV_CREATED);
    sl_clock_advance_ms(1);
    sl_ev_page p;
    first_page(f, 10, &p);
    assert_int_equal(p.n, 1);
    assert_string_equal(p.events[0].ev.type, "other");
    sl_ev_page_free(&p);
}

static int setup_atomic(void **state) {
    g_atomic = 1;
    int rc = setup(state);
    g_atomic = 0;
    return rc;
}

static int count_writes;
static sl_fault_action count_and_pass(void *ctx, const sl_write *w, size_t n) {
    (void)w;
    (void)n;
    count_writes++;
    return ctx ? *(sl_fault_action *)ctx : SL_FAULT_NONE;
}

/* The embedded store's ingest: a batch of events in one commit, each
 * confirmed with its entries; ids found stored answer without a write; a
 * failed commit leaves nothing, and a commit whose outcome is unknown is
 * made again, storing each event once. */
static void test_atomic_batch(void **state) {
    fx *f = *state;
    enum { N = 50 };
    sl_event evs[N];
    sl_ev_receipt rc[N];
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof id, "b%02d", i);
        evs[i] = order_event(id);
    }
    sl_ev_receipt first;
    assert_int_equal(sl_evlog_put(f->l, "acme", &evs[3], &first), 0);
    snprintf(evs[4].id, sizeof evs[4].id, "x");
    assert_int_equal(sl_evlog_put(f->l, "acme", &evs[4], &first), 0);
    evs[4].data = "{\"other\":1}";
    sl_clock_advance_ms(1);

    /* Fails: nothing of the batch is stored. */
    sl_fault_action fail = SL_FAULT_FAIL;
    count_writes = 0;
    sl_store_sqlite_set_fault(f->st, count_and_pass, &fail);
    assert_int_equal(sl_evlog_put_batch(f->l, "acme", evs, N, rc), SL_EUNAVAILABLE);
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    assert_int_equal(count_writes, 1); /* one commit for the batch */
    sl_stored_event s;
    assert_int_equal(sl_evlog_get(f->l, "acme", "b00", &s), SL_ENOTFOUND);

    /* Applied, the outcome unknown: made again, each event once. */
    sl_fault_action unknown = SL_FAULT_UNKNOWN_APPLIED;
    count_writes = 0;
    sl_store_sqlite_set_fault(f->st, count_and_pass, &unknown);
    int ret = sl_evlog_put_batch(f->l, "acme", evs, N, rc);
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    assert_int_equal(ret, SL_EUNKNOWN); /* the retry met the same fault */
    assert_int_equal(count_writes, 2);
    count_writes = 0;
    sl_store_sqlite_set_fault(f->st, count_and_pass, NULL);
    assert_int_equal(sl_evlog_put_batch(f->l, "acme", evs, N, rc), 0);
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    for (int i = 0; i < N; i++) {
        assert_string_equal(rc[i].id, evs[i].id);
        /* b03 was stored first, x conflicts; the rest were stored by the
         * unknown commit and match now. */
        assert_int_equal(rc[i].outcome, i == 4 ? SL_EV_CONFLICT : SL_EV_MATCHED);
    }
    sl_clock_advance_ms(1);
    sl_ev_page p;
    first_page(f, 100, &p);
    assert_int_equal(p.n, N);
    sl_ev_page_free(&p);
    for (int i = 0; i < N; i++) {
        assert_int_equal(sl_evlog_get(f->l, "acme", evs[i].id, &s), 0);
        sl_stored_event_free(&s);
    }
    /* A new batch: one commit for all of it. */
    for (int i = 0; i < N; i++)
        snprintf(evs[i].id, sizeof evs[i].id, "n%02d", i);
    evs[4].data = evs[5].data;
    count_writes = 0;
    sl_store_sqlite_set_fault(f->st, count_and_pass, NULL);
    assert_int_equal(sl_evlog_put_batch(f->l, "acme", evs, N, rc), 0);
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    assert_int_equal(count_writes, 1);
    for (int i = 0; i < N; i++) {
        assert_int_equal(rc[i].outcome, SL_EV_CREATED);
        if (i) assert_true(rc[i].recorded_us > rc[i - 1].recorded_us);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_and_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotent_by_id, setup, teardown),
        cmocka_unit_test_setup_teardown(test_made_ids_and_positions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_horizon_waits_for_ingest_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cut_ingest_is_invisible_and_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late_ingest_is_stamped_again, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_entries_and_directory, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retention, setup, teardown),
        cmocka_unit_test_setup_teardown(test_field_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secret_shared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queries_match_brute_force, setup_small_buckets, teardown),
        cmocka_unit_test_setup_teardown(test_sub_delivers_in_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sub_waits_for_its_queue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sub_one_owner_then_the_other, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sub_definitions_and_forget, setup, teardown),
        /* The same on the log as main.c opens it on the embedded store
         * (named apart: results are counted by name). */
        cmocka_unit_test_setup_teardown(test_atomic_batch, setup_atomic, teardown),
        {"test_put_and_get (atomic)", test_put_and_get, setup_atomic, teardown, NULL},
        {"test_idempotent_by_id (atomic)", test_idempotent_by_id, setup_atomic, teardown, NULL},
        {"test_made_ids_and_positions (atomic)", test_made_ids_and_positions, setup_atomic, teardown, NULL},
        {"test_retention (atomic)", test_retention, setup_atomic, teardown, NULL},
        {"test_field_rules (atomic)", test_field_rules, setup_atomic, teardown, NULL},
        {"test_sub_delivers_in_order (atomic)", test_sub_delivers_in_order, setup_atomic, teardown, NULL},
        {"test_sub_definitions_and_forget (atomic)", test_sub_definitions_and_forget, setup_atomic, teardown,
         NULL},
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
