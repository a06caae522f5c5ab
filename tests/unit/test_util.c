/* test_util.c: the metrics helpers (src/util/metrics.c): the text buffer
 * that GET /metrics is written into, and the histograms' exposition. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "sluice.h"
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

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_grows_past_its_first_block),
        cmocka_unit_test(test_text_out_of_memory_keeps_what_it_had),
        cmocka_unit_test(test_histogram_exposition),
        cmocka_unit_test(test_graphite_lines),
        cmocka_unit_test(test_graphite_addresses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
