/* test_events.c: the event log's pure parts (src/events/): the times of
 * the API, the syntax of ids and tags, buckets, months and shards, the
 * merge of index partitions (against a brute-force merge of random runs)
 * and continuation tokens (round trips, tampering, other secrets). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "events/events.h"
#include "sluice.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int64_t parsed(const char *s) {
    int64_t us = -1;
    assert_int_equal(sl_ev_time_parse(s, &us), 0);
    return us;
}

/* --- Times ---------------------------------------------------------------- */

static void test_time_parse(void **state) {
    (void)state;
    assert_int_equal(parsed("2026-12-04T09:00:00.123456Z"), 1796374800123456LL);
    /* The API's example: an offset, one fractional digit. */
    assert_int_equal(parsed("2026-12-04T10:00:00.5+01:00"), 1796374800500000LL);
    assert_int_equal(parsed("2026-12-04t09:00:00.123456z"), 1796374800123456LL);
    assert_int_equal(parsed("2026-12-04T09:00:00Z"), 1796374800000000LL);
    assert_int_equal(parsed("2026-12-04T04:30:00-04:30"), 1796374800000000LL);
    assert_int_equal(parsed("2024-02-29T23:59:59.999999Z"), 1709251199999999LL);
    assert_int_equal(parsed("1970-01-01T00:00:00Z"), 0);
    assert_int_equal(parsed("9999-12-31T23:59:59.999999Z"), SL_EV_TIME_LAST);
    /* Integer milliseconds. */
    assert_int_equal(parsed("1796374800500"), 1796374800500000LL);
    assert_int_equal(parsed("0"), 0);
    assert_int_equal(parsed("253402300799999"), SL_EV_TIME_LAST - 999);

    static const char *bad[] = {
        "",
        "1969-12-31T23:59:59Z",      /* before 1970 */
        "1970-01-01T00:30:00+01:00", /* before the epoch in UTC */
        "2026-12-04T09:00:60Z",      /* no leap second */
        "2026-02-29T09:00:00Z",      /* not a leap year */
        "2026-13-01T09:00:00Z",
        "2026-12-04T24:00:00Z",
        "2026-12-04T09:00:00.1234567Z", /* seven fractional digits */
        "2026-12-04T09:00:00.Z",
        "2026-12-04T09:00:00",  /* no offset */
        "2026-12-04 09:00:00Z", /* a space for the T */
        "2026-12-04T09:00:00+0100",
        "2026-12-04T09:00:00+24:00",
        "2026-12-04T09:00:00Z ",
        "+2026-12-04T09:00:00Z",
        "253402300800000",  /* past 9999 */
        "1234567890123456", /* 16 digits */
        "-5",
        "12.5",
        "2026-1-04T09:00:00Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t us = 42;
        if (sl_ev_time_parse(bad[i], &us) != SL_EINVAL) fail_msg("accepted \"%s\"", bad[i]);
        assert_int_equal(us, 42);
    }
}

/* Written times parse back to themselves and sort as strings, as the API
 * promises. */
static void test_time_format(void **state) {
    (void)state;
    char a[SL_EV_TIME_LEN + 1], b[SL_EV_TIME_LEN + 1];
    assert_int_equal(sl_ev_time_format(1796374800123456LL, a), SL_EV_TIME_LEN);
    assert_string_equal(a, "2026-12-04T09:00:00.123456Z");
    assert_int_equal(sl_ev_time_format(0, a), SL_EV_TIME_LEN);
    assert_string_equal(a, "1970-01-01T00:00:00.000000Z");
    assert_int_equal(sl_ev_time_format(SL_EV_TIME_LAST, a), SL_EV_TIME_LEN);
    assert_string_equal(a, "9999-12-31T23:59:59.999999Z");
    assert_int_equal(sl_ev_time_format(-1, a), 0);
    assert_int_equal(sl_ev_time_format(SL_EV_TIME_LAST + 1, a), 0);
    for (int i = 0; i < 20000; i++) {
        int64_t x = (int64_t)(next_rand() % (uint64_t)(SL_EV_TIME_LAST + 1));
        int64_t y = i % 2 ? x + (int64_t)(next_rand() % 2000000) - 1000000
                          : (int64_t)(next_rand() % 4000000000000000ull);
        if (y < 0 || y > SL_EV_TIME_LAST) y = x;
        assert_int_equal(sl_ev_time_format(x, a), SL_EV_TIME_LEN);
        assert_int_equal(sl_ev_time_format(y, b), SL_EV_TIME_LEN);
        assert_int_equal(parsed(a), x);
        int c = strcmp(a, b);
        assert_true(x < y ? c < 0 : x > y ? c > 0 : c == 0);
    }
}

static void test_syntax(void **state) {
    (void)state;
    char s[200];
    assert_true(sl_ev_id_valid("order-1042-created"));
    assert_true(sl_ev_id_valid("order.created:v2_x"));
    assert_false(sl_ev_id_valid(""));
    assert_false(sl_ev_id_valid("a b"));
    assert_false(sl_ev_id_valid("k=v"));
    assert_false(sl_ev_id_valid("caf\xc3\xa9"));
    assert_true(sl_ev_tag_valid("k=v"));
    assert_true(sl_ev_tag_valid("customer-77"));
    assert_false(sl_ev_tag_valid("a/b"));
    memset(s, 'x', sizeof s);
    s[SL_EV_ID_MAX] = '\0';
    assert_true(sl_ev_id_valid(s));
    s[SL_EV_ID_MAX] = 'x';
    s[SL_EV_ID_MAX + 1] = '\0';
    assert_false(sl_ev_id_valid(s));
    s[SL_EV_TAG_MAX] = '\0';
    assert_true(sl_ev_tag_valid(s));
    s[SL_EV_TAG_MAX] = 'x';
    s[SL_EV_TAG_MAX + 1] = '\0';
    assert_false(sl_ev_tag_valid(s));
}

/* --- Buckets, months, shards ----------------------------------------------- */

static void test_buckets_and_months(void **state) {
    (void)state;
    const int64_t w = SL_EV_WIDTH_DEFAULT_US;
    int64_t t = parsed("2026-12-31T23:59:59.999999Z");
    assert_int_equal(sl_ev_bucket(t, w), parsed("2026-12-31T23:59:00Z"));
    assert_int_equal(sl_ev_bucket(parsed("2026-12-31T23:59:00Z"), w), parsed("2026-12-31T23:59:00Z"));
    assert_int_equal(sl_ev_month(t), 202612);
    assert_int_equal(sl_ev_month(t + 1), 202701);
    assert_int_equal(sl_ev_month(0), 197001);
    assert_int_equal(sl_ev_month_next(202612), 202701);
    assert_int_equal(sl_ev_month_next(202611), 202612);
    assert_int_equal(sl_ev_month_start(202701), parsed("2027-01-01T00:00:00Z"));
    /* Every month from 1970 to 9999: its start is in it, the microsecond
     * before the next one's start too, and months follow each other. */
    int n = 0;
    for (int m = 197001; m <= 999912; m = sl_ev_month_next(m), n++) {
        int64_t s = sl_ev_month_start(m);
        assert_int_equal(sl_ev_month(s), m);
        if (m < 999912) {
            int64_t e = sl_ev_month_start(sl_ev_month_next(m));
            assert_true(e > s);
            assert_int_equal(sl_ev_month(e - 1), m);
        }
    }
    assert_int_equal(n, (9999 - 1970 + 1) * 12);
    /* A bucket lies in one month whatever its width, when the width divides
     * a day, as the settings require. */
    for (int i = 0; i < 10000; i++) {
        int64_t x = (int64_t)(next_rand() % (uint64_t)SL_EV_TIME_LAST);
        int64_t widths[] = {1000000, w, 3600000000LL, 86400000000LL};
        int64_t wi = widths[i % 4], b = sl_ev_bucket(x, wi);
        assert_true(b <= x && x < b + wi);
        assert_int_equal(sl_ev_month(b), sl_ev_month(b + wi - 1));
    }
}

static void test_shards(void **state) {
    (void)state;
    int count[SL_EV_SHARDS_DEFAULT] = {0};
    char id[32];
    for (int i = 0; i < 10000; i++) {
        snprintf(id, sizeof id, "event-%d", i);
        int s = sl_ev_shard(id, SL_EV_SHARDS_DEFAULT);
        assert_true(s >= 0 && s < SL_EV_SHARDS_DEFAULT);
        assert_int_equal(sl_ev_shard(id, SL_EV_SHARDS_DEFAULT), s);
        count[s]++;
    }
    for (int s = 0; s < SL_EV_SHARDS_DEFAULT; s++)
        assert_true(count[s] > 2000 && count[s] < 3000);
    assert_int_equal(sl_ev_shard("anything", 1), 0);
    /* FNV-1a: the written layout depends on it only for balance, but a
     * change would still move every new event's shard. */
    assert_int_equal(sl_ev_shard("a", 1000003), (int)(3826002220u % 1000003u));
}

/* --- The merge ------------------------------------------------------------- */

#define RUNS 8
#define RUN_MAX 40

static int cmp_asc(const void *a, const void *b) {
    return sl_ev_pos_cmp(a, b);
}

static int cmp_desc(const void *a, const void *b) {
    return sl_ev_pos_cmp(b, a);
}

/* Random runs over a small space of positions (so that runs share some),
 * each sorted and without repeats, some truncated; the merge must give the
 * union in order, each position once from the first run holding it, up to
 * the first truncated run's end and the limit. */
static void test_merge_matches_brute_force(void **state) {
    (void)state;
    static sl_ev_pos pos[RUNS][RUN_MAX], all[RUNS * RUN_MAX];
    sl_ev_run runs[RUNS];
    sl_ev_hit hits[RUNS * RUN_MAX];
    for (int round = 0; round < 3000; round++) {
        int desc = round % 2, nruns = 1 + (int)(next_rand() % RUNS), nall = 0;
        int (*cmp)(const void *, const void *) = desc ? cmp_desc : cmp_asc;
        for (int r = 0; r < nruns; r++) {
            size_t n = next_rand() % RUN_MAX;
            for (size_t i = 0; i < n; i++) {
                pos[r][i].us = (int64_t)(next_rand() % 30);
                snprintf(pos[r][i].id, sizeof pos[r][i].id, "e%d", (int)(next_rand() % 3));
            }
            qsort(pos[r], n, sizeof pos[r][0], cmp);
            size_t k = 0;
            for (size_t i = 0; i < n; i++)
                if (k == 0 || sl_ev_pos_cmp(&pos[r][k - 1], &pos[r][i]) != 0) pos[r][k++] = pos[r][i];
            runs[r] = (sl_ev_run){pos[r], k, k > 0 && next_rand() % 3 == 0};
            memcpy(all + nall, pos[r], k * sizeof pos[r][0]);
            nall += (int)k;
        }
        qsort(all, (size_t)nall, sizeof all[0], cmp);
        int nu = 0;
        for (int i = 0; i < nall; i++)
            if (nu == 0 || sl_ev_pos_cmp(&all[nu - 1], &all[i]) != 0) all[nu++] = all[i];
        const sl_ev_pos *frontier = NULL;
        for (int r = 0; r < nruns; r++)
            if (runs[r].more) {
                const sl_ev_pos *e = &pos[r][runs[r].n - 1];
                if (!frontier || cmp(e, frontier) < 0) frontier = e;
            }
        int upto = 0;
        while (upto < nu && (!frontier || cmp(&all[upto], frontier) <= 0))
            upto++;
        size_t limit = 1 + next_rand() % (size_t)(RUNS * RUN_MAX);
        int cut = -1;
        size_t got = sl_ev_merge(runs, (size_t)nruns, desc, limit, hits, &cut);
        size_t want = (size_t)upto < limit ? (size_t)upto : limit;
        assert_int_equal(got, want);
        assert_int_equal(cut, upto < nu && (size_t)upto < limit);
        for (size_t i = 0; i < got; i++) {
            const sl_ev_pos *p = &pos[hits[i].r][hits[i].i];
            assert_true(hits[i].i < runs[hits[i].r].n);
            assert_int_equal(sl_ev_pos_cmp(p, &all[i]), 0);
            for (uint32_t r = 0; r < hits[i].r; r++) /* no earlier run holds it */
                for (size_t j = 0; j < runs[r].n; j++)
                    assert_int_not_equal(sl_ev_pos_cmp(&pos[r][j], p), 0);
        }
    }
}

static void test_merge_edges(void **state) {
    (void)state;
    sl_ev_pos a[2] = {{10, "a"}, {20, "a"}};
    sl_ev_hit hits[4];
    int cut = -1;
    /* A truncated run that returned nothing: nothing is known. */
    sl_ev_run r1[2] = {{a, 2, 0}, {NULL, 0, 1}};
    assert_int_equal(sl_ev_merge(r1, 2, 0, 4, hits, &cut), 0);
    assert_int_equal(cut, 1);
    /* Nothing at all. */
    assert_int_equal(sl_ev_merge(r1, 0, 0, 4, hits, &cut), 0);
    assert_int_equal(cut, 0);
    /* The same id at two times is two positions; the limit stops without a
     * cut. */
    sl_ev_pos b[1] = {{15, "a"}};
    sl_ev_run r2[2] = {{a, 2, 0}, {b, 1, 0}};
    assert_int_equal(sl_ev_merge(r2, 2, 0, 4, hits, &cut), 3);
    assert_int_equal(cut, 0);
    assert_int_equal(hits[1].r, 1);
    assert_int_equal(sl_ev_merge(r2, 2, 0, 2, hits, &cut), 2);
    assert_int_equal(cut, 0);
}

/* --- Continuation tokens --------------------------------------------------- */

static const unsigned char secret[SL_EV_SECRET_LEN] = "0123456789abcdef0123456789abcdef";

static sl_ev_query sample_query(void) {
    sl_ev_query q;
    memset(&q, 0, sizeof q);
    strcpy(q.account, "acme");
    q.ntypes = 3;
    strcpy(q.types[0], "order.paid");
    strcpy(q.types[1], "order.created");
    strcpy(q.types[2], "order.paid");
    q.ntags = 1;
    strcpy(q.tags[0], "region=eu");
    q.desc = 1;
    q.start_us = 1796374800000000LL;
    q.end_us = 1796374860000000LL;
    q.has_last = 1;
    q.last.us = 1796374830000000LL;
    strcpy(q.last.id, "order-1042-created");
    sl_ev_query_canon(&q);
    return q;
}

static void test_token_round_trip(void **state) {
    (void)state;
    sl_ev_query q = sample_query(), back;
    char tok[SL_EV_TOKEN_MAX + 1];
    assert_int_equal(q.ntypes, 2);
    assert_string_equal(q.types[0], "order.created");
    long n = sl_ev_token_make(&q, secret, tok);
    assert_true(n > 2 && n <= SL_EV_TOKEN_MAX);
    assert_int_equal(strlen(tok), (size_t)n);
    assert_memory_equal(tok, "v1", 2);
    assert_int_equal(sl_ev_token_read(tok, (size_t)n, secret, &back), 0);
    assert_true(sl_ev_query_same(&q, &back));
    assert_int_equal(back.has_last, 1);
    assert_int_equal(back.last.us, q.last.us);
    assert_string_equal(back.last.id, q.last.id);
    /* Without a position reached (the first page's token). */
    q.has_last = 0;
    n = sl_ev_token_make(&q, secret, tok);
    assert_int_equal(sl_ev_token_read(tok, (size_t)n, secret, &back), 0);
    assert_int_equal(back.has_last, 0);
    /* The same query reached further compares the same; another does not. */
    sl_ev_query other = sample_query();
    other.last.us++;
    assert_true(sl_ev_query_same(&q, &other));
    other.desc = 0;
    assert_false(sl_ev_query_same(&q, &other));
    other = sample_query();
    strcpy(other.tags[0], "region=us");
    assert_false(sl_ev_query_same(&q, &other));
    other = sample_query();
    other.end_us--;
    assert_false(sl_ev_query_same(&q, &other));
}

/* The largest query fits in a token. */
static void test_token_largest(void **state) {
    (void)state;
    sl_ev_query q, back;
    char tok[SL_EV_TOKEN_MAX + 1];
    memset(&q, 0, sizeof q);
    memset(q.account, 'a', SL_NAME_MAX);
    q.ntypes = q.ntags = SL_EV_FILTER_MAX;
    for (int i = 0; i < SL_EV_FILTER_MAX; i++) {
        memset(q.types[i], 'a' + i, SL_EV_ID_MAX);
        memset(q.tags[i], 'a' + i, SL_EV_TAG_MAX);
    }
    q.end_us = SL_EV_TIME_LAST + 1;
    q.has_last = 1;
    q.last.us = SL_EV_TIME_LAST;
    memset(q.last.id, 'z', SL_EV_ID_MAX);
    long n = sl_ev_token_make(&q, secret, tok);
    assert_true(n > 0 && n <= SL_EV_TOKEN_MAX);
    assert_int_equal(sl_ev_token_read(tok, (size_t)n, secret, &back), 0);
    assert_true(sl_ev_query_same(&q, &back));
}

/* Every changed character, every truncation, another secret and queries no
 * token may hold are refused. */
static void test_token_refused(void **state) {
    (void)state;
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    sl_ev_query q = sample_query(), back;
    char tok[SL_EV_TOKEN_MAX + 1], t2[SL_EV_TOKEN_MAX + 1];
    long n = sl_ev_token_make(&q, secret, tok);
    for (long i = 0; i < n; i++) {
        memcpy(t2, tok, (size_t)n + 1);
        t2[i] = i < 2 ? 'x' : b64[(strchr(b64, tok[i]) - b64 + 1 + (long)(next_rand() % 63)) % 64];
        assert_int_equal(sl_ev_token_read(t2, (size_t)n, secret, &back), SL_EINVAL);
    }
    for (long k = 0; k < n; k++)
        assert_int_equal(sl_ev_token_read(tok, (size_t)k, secret, &back), SL_EINVAL);
    unsigned char other[SL_EV_SECRET_LEN];
    memcpy(other, secret, sizeof other);
    other[31] ^= 1;
    assert_int_equal(sl_ev_token_read(tok, (size_t)n, other, &back), SL_EINVAL);
    assert_int_equal(sl_ev_token_read("v1", 2, secret, &back), SL_EINVAL);

    sl_ev_query bad = q;
    bad.last.us = bad.end_us; /* the position reached lies outside the range */
    assert_int_equal(sl_ev_token_make(&bad, secret, tok), SL_EINVAL);
    bad = q;
    bad.start_us = bad.end_us + 1;
    assert_int_equal(sl_ev_token_make(&bad, secret, tok), SL_EINVAL);
    bad = q;
    strcpy(bad.types[0], bad.types[1]); /* not canonical */
    assert_int_equal(sl_ev_token_make(&bad, secret, tok), SL_EINVAL);
    bad = q;
    strcpy(bad.tags[0], "no spaces");
    assert_int_equal(sl_ev_token_make(&bad, secret, tok), SL_EINVAL);
    bad = q;
    bad.account[0] = '\0';
    assert_int_equal(sl_ev_token_make(&bad, secret, tok), SL_EINVAL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time_parse),    cmocka_unit_test(test_time_format),
        cmocka_unit_test(test_syntax),        cmocka_unit_test(test_buckets_and_months),
        cmocka_unit_test(test_shards),        cmocka_unit_test(test_merge_matches_brute_force),
        cmocka_unit_test(test_merge_edges),   cmocka_unit_test(test_token_round_trip),
        cmocka_unit_test(test_token_largest), cmocka_unit_test(test_token_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
