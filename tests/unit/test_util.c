/* test_util.c: the metrics helpers (src/util/metrics.c): the text buffer
 * that GET /metrics is written into, and the histograms' exposition; the
 * fibers that the store pool runs handlers on (src/util/fiber.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include "sluice.h"
#include "util/fiber.h"
#include "util/graphite.h"
#include "util/metrics.h"

static void test_text_grows_past_its_first_block(void **state) {
    (void)state;
    sl_text t = {0};
    char line[200];
    memset(line, 'x', sizeof line - 1);
    line[sizeof line - 1] = '\0';
    for (int i = 0; i < 100; i++)
        sl_text_printf(&t, "%d %s\n", i, line);
    assert_false(t.oom);
    assert_int_equal(t.n, strlen(t.p));
    assert_true(t.n > 4096 * 4);
    assert_memory_equal(t.p, "0 xxx", 5);
    assert_non_null(strstr(t.p, "\n99 xxx"));
    free(t.p);
}

static int fail_all(size_t bytes) {
    (void)bytes;
    return 1;
}

static void test_text_out_of_memory_keeps_what_it_had(void **state) {
    (void)state;
    sl_text t = {0};
    sl_text_printf(&t, "kept\n");
    sl_alloc_hook(fail_all);
    char big[5000];
    memset(big, 'y', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    sl_text_printf(&t, "%s", big);
    sl_alloc_hook(NULL);
    assert_true(t.oom);
    assert_string_equal(t.p, "kept\n");
    sl_text_printf(&t, "more"); /* stays as it was once out of memory */
    assert_string_equal(t.p, "kept\n");
    free(t.p);
}

static void test_histogram_exposition(void **state) {
    (void)state;
    sl_hist h = {0};
    sl_text t = {0};
    sl_hist_print(&t, "lat", "route=\"/x\"", &h);
    assert_int_equal(t.n, 0); /* nothing seen, nothing written */
    sl_hist_observe(&h, 400);        /* <= 0.5 ms */
    sl_hist_observe(&h, 500);        /* on the bound: the same bucket */
    sl_hist_observe(&h, 7000);       /* <= 10 ms */
    sl_hist_observe(&h, 60000000);   /* over 30 s: +Inf only */
    sl_hist_observe(&h, -5);         /* a clock step back counts as 0 */
    sl_hist_print(&t, "lat", "route=\"/x\"", &h);
    assert_non_null(strstr(t.p, "lat_bucket{route=\"/x\",le=\"0.0005\"} 3\n"));
    assert_non_null(strstr(t.p, "lat_bucket{route=\"/x\",le=\"0.005\"} 3\n"));
    assert_non_null(strstr(t.p, "lat_bucket{route=\"/x\",le=\"0.01\"} 4\n"));
    assert_non_null(strstr(t.p, "lat_bucket{route=\"/x\",le=\"30\"} 4\n"));
    assert_non_null(strstr(t.p, "lat_bucket{route=\"/x\",le=\"+Inf\"} 5\n"));
    assert_non_null(strstr(t.p, "lat_sum{route=\"/x\"} 60.007900\n"));
    assert_non_null(strstr(t.p, "lat_count{route=\"/x\"} 5\n"));
    free(t.p);
    memset(&t, 0, sizeof t);
    sl_hist_print(&t, "bare", "", &h); /* no labels: no braces on sum and count */
    assert_non_null(strstr(t.p, "bare_bucket{le=\"+Inf\"} 5\n"));
    assert_non_null(strstr(t.p, "bare_count 5\n"));
    free(t.p);
}

static void test_graphite_lines(void **state) {
    (void)state;
    const char *prom = "# HELP x y\n# TYPE x counter\n"
                       "sluice_queue_puts_total{account=\"dev\",queue=\"orders.eu\"} 7\n"
                       "sluice_http_request_duration_seconds_bucket{server=\"queue\",method=\"POST\","
                       "route=\"/api/v1/{q}\",le=\"+Inf\"} 3\n"
                       "sluice_store_commit_duration_seconds_sum 0.250000\n"
                       "weird{a=\"x\\\"y\"} 1\n"
                       "nan_gauge NaN\n"
                       "\n";
    sl_text t = {0};
    sl_graphite_lines(prom, strlen(prom), "sl", 1700000000, &t);
    assert_false(t.oom);
    assert_string_equal(t.p, "sl.sluice_queue_puts_total.dev.orders_eu 7 1700000000\n"
                             "sl.sluice_http_request_duration_seconds_bucket.queue.POST._api_v1__q_._Inf 3 1700000000\n"
                             "sl.sluice_store_commit_duration_seconds_sum 0.250000 1700000000\n"
                             "sl.weird.x__y 1 1700000000\n");
    free(t.p);
}

static void test_graphite_addresses(void **state) {
    (void)state;
    sl_graphite *g;
    const char *bad[] = {"", ":2003", "host:", "host:20x3", "[::1", "[::1]x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(sl_graphite_start(bad[i], "p", 1, NULL, NULL, &g), SL_EINVAL);
}

/* --- Fibers --------------------------------------------------------------- */

/* Tasks that wait on latches the test opens, as a handler waits on a CQL
 * answer that a connection's thread delivers. */
#define FT_MAX 300
struct ft {
    sl_fiber_task task;
    sl_latch l;
    int ready; /* the latch is set up (atomic) */
    int id, before, after, log_kept;
    pthread_t t0, t1; /* the threads it started and ended on */
    sl_log_ctx log;
    int *ended; /* atomic */
};

static void ft_run(sl_fiber_task *t) {
    struct ft *f = (struct ft *)((char *)t - offsetof(struct ft, task));
    char pad[2048]; /* a frame with something on the stack that must survive */
    memset(pad, f->id & 0xff, sizeof pad);
    f->log.request_id = "r";
    sl_log_ctx_set(&f->log);
    f->t0 = pthread_self();
    f->before = f->id * 7;
    sl_latch_init(&f->l, 1);
    __atomic_store_n(&f->ready, 1, __ATOMIC_RELEASE);
    sl_latch_wait(&f->l);
    int same = 1;
    for (size_t i = 0; i < sizeof pad; i++)
        same &= pad[i] == (char)(f->id & 0xff);
    f->after = same ? f->before + 1 : -1;
    f->log_kept = sl_log_ctx_get() == &f->log;
    f->t1 = pthread_self();
    __atomic_add_fetch(f->ended, 1, __ATOMIC_ACQ_REL);
}

/* Waits (at most 10 s) until fs shows these figures. */
static int figures_reach(sl_fibers *fs, int running, int parked, int queued) {
    for (int i = 0; i < 10000; i++) {
        int r, p, q;
        sl_fibers_figures(fs, &r, &p, &q);
        if (r == running && p == parked && q == queued) return 1;
        usleep(1000);
    }
    return 0;
}

static int count_reaches(int *n, int want) {
    for (int i = 0; i < 10000 && __atomic_load_n(n, __ATOMIC_ACQUIRE) != want; i++)
        usleep(1000);
    return __atomic_load_n(n, __ATOMIC_ACQUIRE) == want;
}

static void test_fibers_park_without_holding_threads(void **state) {
    (void)state;
    static struct ft f[FT_MAX];
    int ended = 0;
    sl_fibers *fs;
    assert_int_equal(sl_fibers_start(2, FT_MAX, 256 * 1024, &fs), 0);
    for (int i = 0; i < FT_MAX; i++) {
        memset(&f[i], 0, sizeof f[i]);
        f[i].id = i;
        f[i].ended = &ended;
        f[i].task.fn = ft_run;
        assert_int_equal(sl_fibers_submit(fs, &f[i].task, 0), 0);
    }
    /* Two threads, and every one of the 300 tasks waits at once. */
    assert_true(figures_reach(fs, 0, FT_MAX, 0));
    assert_int_equal(__atomic_load_n(&ended, __ATOMIC_ACQUIRE), 0);
    /* Opened in reverse: each resumes with its stack and log context. */
    for (int i = FT_MAX - 1; i >= 0; i--) {
        assert_true(__atomic_load_n(&f[i].ready, __ATOMIC_ACQUIRE));
        sl_latch_done(&f[i].l);
    }
    assert_true(count_reaches(&ended, FT_MAX));
    assert_true(figures_reach(fs, 0, 0, 0));
    pthread_t threads[2];
    int nthreads = 0;
    for (int i = 0; i < FT_MAX; i++) {
        assert_int_equal(f[i].after, f[i].id * 7 + 1);
        assert_true(f[i].log_kept);
        pthread_t seen[2] = {f[i].t0, f[i].t1};
        for (int k = 0; k < 2; k++) {
            int known = 0;
            for (int j = 0; j < nthreads; j++)
                known |= pthread_equal(threads[j], seen[k]);
            if (!known) {
                assert_true(nthreads < 2); /* only the two carriers ran them */
                threads[nthreads++] = seen[k];
            }
        }
    }
    sl_fibers_free(fs);
}

static void test_fibers_queue_past_their_limit(void **state) {
    (void)state;
    static struct ft f[10];
    int ended = 0;
    sl_fibers *fs;
    assert_int_equal(sl_fibers_start(2, 4, 64 * 1024, &fs), 0);
    for (int i = 0; i < 10; i++) {
        memset(&f[i], 0, sizeof f[i]);
        f[i].id = i;
        f[i].ended = &ended;
        f[i].task.fn = ft_run;
        assert_int_equal(sl_fibers_submit(fs, &f[i].task, 0), 0);
    }
    assert_true(figures_reach(fs, 0, 4, 6));
    /* In order: each latch opened lets the next queued task start. */
    for (int i = 0; i < 10; i++) {
        for (int k = 0; k < 10000 && !__atomic_load_n(&f[i].ready, __ATOMIC_ACQUIRE); k++)
            usleep(1000);
        assert_true(__atomic_load_n(&f[i].ready, __ATOMIC_ACQUIRE));
        sl_latch_done(&f[i].l);
    }
    assert_true(count_reaches(&ended, 10));
    sl_fibers_free(fs);
    for (int i = 0; i < 10; i++)
        assert_int_equal(f[i].after, f[i].id * 7 + 1);
}

/* Churn: 64 fibers on 2 threads each wait 200 times on a latch that a
 * plain thread opens as soon as it sees it, so wake-ups race with parks;
 * none may be lost (the test would hang) or run a fiber twice (its count
 * would be off). */
#define CH_FIBERS 64
#define CH_ROUNDS 200
struct ch {
    sl_fiber_task task;
    sl_latch *slot; /* atomic: the latch it waits on now */
    int rounds, *ended;
};
static void ch_run(sl_fiber_task *t) {
    struct ch *c = (struct ch *)t;
    for (int i = 0; i < CH_ROUNDS; i++) {
        sl_latch l;
        sl_latch_init(&l, 1);
        __atomic_store_n(&c->slot, &l, __ATOMIC_RELEASE);
        sl_latch_wait(&l);
        c->rounds++;
    }
    __atomic_add_fetch(c->ended, 1, __ATOMIC_ACQ_REL);
}
struct ch_opener {
    struct ch *c;
    int *ended;
};
static void *ch_open(void *arg) {
    struct ch_opener *o = arg;
    while (__atomic_load_n(o->ended, __ATOMIC_ACQUIRE) < CH_FIBERS)
        for (int i = 0; i < CH_FIBERS; i++) {
            sl_latch *l = __atomic_exchange_n(&o->c[i].slot, NULL, __ATOMIC_ACQ_REL);
            if (l) sl_latch_done(l);
        }
    return NULL;
}

static void test_fibers_lose_no_wakeup_under_churn(void **state) {
    (void)state;
    static struct ch c[CH_FIBERS];
    int ended = 0;
    sl_fibers *fs;
    assert_int_equal(sl_fibers_start(2, CH_FIBERS, 64 * 1024, &fs), 0);
    struct ch_opener o = {c, &ended};
    pthread_t opener;
    assert_int_equal(pthread_create(&opener, NULL, ch_open, &o), 0);
    for (int i = 0; i < CH_FIBERS; i++) {
        c[i] = (struct ch){.task.fn = ch_run, .ended = &ended};
        assert_int_equal(sl_fibers_submit(fs, &c[i].task, i % 2), 0);
    }
    assert_true(count_reaches(&ended, CH_FIBERS));
    pthread_join(opener, NULL);
    sl_fibers_free(fs);
    for (int i = 0; i < CH_FIBERS; i++)
        assert_int_equal(c[i].rounds, CH_ROUNDS);
}

/* Tasks queued first (requests resumed) start before the others. */
static int order[3], norder;
struct ot {
    sl_fiber_task task;
    int id;
};
static void ot_run(sl_fiber_task *t) {
    order[__atomic_fetch_add(&norder, 1, __ATOMIC_ACQ_REL)] = ((struct ot *)t)->id;
}

static void test_fibers_start_resumed_work_first(void **state) {
    (void)state;
    static struct ft blocker;
    int ended = 0;
    sl_fibers *fs;
    assert_int_equal(sl_fibers_start(1, 1, 64 * 1024, &fs), 0);
    memset(&blocker, 0, sizeof blocker);
    blocker.ended = &ended;
    blocker.task.fn = ft_run;
    assert_int_equal(sl_fibers_submit(fs, &blocker.task, 0), 0);
    assert_true(figures_reach(fs, 0, 1, 0)); /* the one fiber there may be waits */
    struct ot t[3] = {
        {.task.fn = ot_run, .id = 1}, {.task.fn = ot_run, .id = 2}, {.task.fn = ot_run, .id = 3}};
    assert_int_equal(sl_fibers_submit(fs, &t[0].task, 0), 0);
    assert_int_equal(sl_fibers_submit(fs, &t[1].task, 1), 0);
    assert_int_equal(sl_fibers_submit(fs, &t[2].task, 1), 0);
    assert_true(figures_reach(fs, 0, 1, 3));
    sl_latch_done(&blocker.l);
    assert_true(count_reaches(&norder, 3));
    assert_int_equal(order[0], 2);
    assert_int_equal(order[1], 3);
    assert_int_equal(order[2], 1);
    sl_fibers_free(fs);
}

/* Fibers waiting on a condition, woken by a broadcast from a plain thread;
 * one more waiter is a plain thread. */
struct fc {
    pthread_mutex_t mu;
    sl_fcond cv;
    int go, waiting, woke;
};
struct fct {
    sl_fiber_task task;
    struct fc *c;
};

static void fc_wait(struct fc *c) {
    pthread_mutex_lock(&c->mu);
    c->waiting++;
    while (!c->go)
        sl_fcond_wait(&c->cv, &c->mu);
    c->woke++;
    pthread_mutex_unlock(&c->mu);
}

static void fc_run(sl_fiber_task *t) {
    fc_wait(((struct fct *)t)->c);
}

static void *fc_thread(void *arg) {
    fc_wait(arg);
    return NULL;
}

static int fc_count(struct fc *c, int *field, int want) {
    for (int i = 0; i < 10000; i++) {
        pthread_mutex_lock(&c->mu);
        int n = *field;
        pthread_mutex_unlock(&c->mu);
        if (n == want) return 1;
        usleep(1000);
    }
    return 0;
}

static void test_fiber_condition_wakes_fibers_and_threads(void **state) {
    (void)state;
    struct fc c = {.mu = PTHREAD_MUTEX_INITIALIZER};
    sl_fcond_init(&c.cv);
    struct fct t[20];
    sl_fibers *fs;
    assert_int_equal(sl_fibers_start(1, 64, 64 * 1024, &fs), 0);
    for (int i = 0; i < 20; i++) {
        t[i] = (struct fct){.task.fn = fc_run, .c = &c};
        assert_int_equal(sl_fibers_submit(fs, &t[i].task, 0), 0);
    }
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fc_thread, &c), 0);
    assert_true(fc_count(&c, &c.waiting, 21));
    assert_true(figures_reach(fs, 0, 20, 0)); /* one thread, 20 waiting */
    pthread_mutex_lock(&c.mu);
    c.go = 1;
    sl_fcond_broadcast(&c.cv);
    pthread_mutex_unlock(&c.mu);
    assert_true(fc_count(&c, &c.woke, 21));
    pthread_join(th, NULL);
    sl_fibers_free(fs);
    sl_fcond_destroy(&c.cv);
}

/* sl_digest keeps a context per algorithm on each thread: digests of two
 * algorithms in turn, and of parts split anywhere, give the known answers,
 * on this thread and on another (whose contexts are freed when it exits,
 * which the sanitizers' leak check sees). */
static void *digests_thread(void *arg) {
    (void)arg;
    static const char *sha_abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    static const char *md5_abc = "900150983cd24fb0d6963f7d28e17f72";
    EVP_MD *sha = EVP_MD_fetch(NULL, "SHA256", NULL), *md5 = EVP_MD_fetch(NULL, "MD5", NULL);
    for (int round = 0; round < 3; round++) {
        for (size_t split = 0; split <= 3; split++) {
            unsigned char out[EVP_MAX_MD_SIZE];
            char hex[2 * EVP_MAX_MD_SIZE + 1];
            unsigned len = 0;
            const EVP_MD *md = split % 2 ? md5 : sha;
            assert_int_equal(sl_digest(md, "abc", split, "abc" + split, 3 - split, out, &len), 0);
            for (unsigned i = 0; i < len; i++)
                sprintf(hex + 2 * i, "%02x", out[i]);
            assert_string_equal(hex, md == sha ? sha_abc : md5_abc);
        }
    }
    EVP_MD_free(sha);
    EVP_MD_free(md5);
    return NULL;
}

static void test_digest_contexts(void **state) {
    (void)state;
    digests_thread(NULL);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, digests_thread, NULL), 0);
    pthread_join(t, NULL);
}

/* sl_fmt_i64 writes what printf's "%lld" writes, the extremes included. */
static void test_decimal_as_printf_writes_it(void **state) {
    (void)state;
    int64_t vs[] = {0,
                    1,
                    -1,
                    9,
                    10,
                    -10,
                    99,
                    100,
                    123456789,
                    -987654321,
                    INT32_MAX,
                    INT32_MIN,
                    1000000000000LL,
                    INT64_MAX,
                    INT64_MIN,
                    INT64_MAX - 1,
                    INT64_MIN + 1};
    uint64_t x = 88172645463325252ULL;
    for (size_t i = 0; i < sizeof vs / sizeof vs[0] + 10000; i++) {
        int64_t v;
        if (i < sizeof vs / sizeof vs[0]) {
            v = vs[i];
        } else { /* values of every length */
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            v = (int64_t)(x >> (x % 64));
            if (x & 1) v = -v;
        }
        char want[32], got[32];
        int n = snprintf(want, sizeof want, "%lld", (long long)v);
        memset(got, 'x', sizeof got);
        assert_int_equal(sl_fmt_i64(got, v), n);
        assert_memory_equal(got, want, (size_t)n);
        assert_int_equal(got[n], 'x'); /* no NUL, nothing past the digits */
    }
}

/* sl_iso_time writes what gmtime_r and strftime write, from the year 1000
 * to 9999, the leap days and the epoch's neighbours included, and clamps
 * what lies outside the years 0 to 9999. */
static void test_iso_time_as_strftime_writes_it(void **state) {
    (void)state;
    int64_t ms[] = {0,
                    999,
                    1000,
                    -1,
                    -1000,
                    -1001,
                    951782400000LL /* 2000-02-29 */,
                    4107542400000LL /* 2100-03-01 */,
                    1796601599999LL,
                    -30610224000000LL /* 1000-01-01 */,
                    253402300799999LL /* 9999-12-31T23:59:59.999 */};
    uint64_t x = 0x9E3779B97F4A7C15ULL;
    for (size_t i = 0; i < sizeof ms / sizeof ms[0] + 20000; i++) {
        int64_t t;
        if (i < sizeof ms / sizeof ms[0]) {
            t = ms[i];
        } else { /* any millisecond from 1000-01-01 to 9999-12-31 */
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            t = -30610224000000LL + (int64_t)(x % (253402300800000ULL + 30610224000000ULL));
        }
        time_t sec = (time_t)(t / 1000 - (t % 1000 < 0));
        struct tm tm;
        char want[32], got[32];
        assert_non_null(gmtime_r(&sec, &tm));
        strftime(want, sizeof want, "%Y-%m-%dT%H:%M:%SZ", &tm);
        sl_iso_time(t, got);
        assert_string_equal(got, want);
    }
    char got[32];
    sl_iso_time(253402300800000LL, got);
    assert_string_equal(got, "9999-12-31T23:59:59Z");
    sl_iso_time(INT64_MAX, got);
    assert_string_equal(got, "9999-12-31T23:59:59Z");
    sl_iso_time(-62167219200000LL, got);
    assert_string_equal(got, "0000-01-01T00:00:00Z");
    sl_iso_time(-59011459200000LL, got); /* 0100-01-01: four digits, where strftime writes 100 */
    assert_string_equal(got, "0100-01-01T00:00:00Z");
    sl_iso_time(INT64_MIN, got);
    assert_string_equal(got, "0000-01-01T00:00:00Z");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decimal_as_printf_writes_it),
        cmocka_unit_test(test_iso_time_as_strftime_writes_it),
        cmocka_unit_test(test_text_grows_past_its_first_block),
        cmocka_unit_test(test_text_out_of_memory_keeps_what_it_had),
        cmocka_unit_test(test_histogram_exposition),
        cmocka_unit_test(test_graphite_lines),
        cmocka_unit_test(test_graphite_addresses),
        cmocka_unit_test(test_digest_contexts),
        cmocka_unit_test(test_fibers_park_without_holding_threads),
        cmocka_unit_test(test_fibers_queue_past_their_limit),
        cmocka_unit_test(test_fibers_start_resumed_work_first),
        cmocka_unit_test(test_fibers_lose_no_wakeup_under_churn),
        cmocka_unit_test(test_fiber_condition_wakes_fibers_and_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
