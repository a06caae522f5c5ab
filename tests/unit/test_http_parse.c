/* test_http_parse.c: the HTTP/1.1 request parser (src/http/parse.c), on
 * the requests that frame one way for a proxy and another for a lenient
 * server, and on every split of the input, since bytes arrive in any
 * slices. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "http/parse.h"
#include "sluice.h"

static long parse(const char *s, sl_hp_request *r) {
    const char *why;
    return sl_hp_parse_head(s, strlen(s), r, &why);
}

static long status_of(const char *s) {
    sl_hp_request r;
    return parse(s, &r);
}

static void test_simple_get(void **state) {
    (void)state;
    const char *s = "GET /api/v1/x?a=1 HTTP/1.1\r\nHost: h\r\nX-Thing:  two words \r\n\r\nNEXT";
    sl_hp_request r;
    long n = parse(s, &r);
    assert_int_equal(n, (long)(strstr(s, "NEXT") - s));
    assert_int_equal(r.method_len, 3);
    assert_memory_equal(r.method, "GET", 3);
    assert_int_equal(r.target_len, strlen("/api/v1/x?a=1"));
    assert_int_equal(r.minor, 1);
    assert_int_equal(r.nfields, 2);
    const sl_hp_field *f = sl_hp_field_get(&r, "x-thing");
    assert_non_null(f);
    assert_int_equal(f->value_len, strlen("two words"));
    assert_memory_equal(f->value, "two words", f->value_len);
    assert_int_equal(r.content_length, -1);
    assert_false(r.chunked);
    assert_true(r.keep_alive);
}

/* Every proper prefix is partial; the whole is complete. */
static void test_every_prefix_is_partial(void **state) {
    (void)state;
    const char *s = "POST /q HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n";
    size_t len = strlen(s);
    sl_hp_request r;
    const char *why;
    for (size_t k = 0; k < len; k++)
        assert_int_equal(sl_hp_parse_head(s, k, &r, &why), SL_EPARTIAL);
    assert_int_equal(sl_hp_parse_head(s, len, &r, &why), (long)len);
    assert_int_equal(r.content_length, 5);
}

static void test_smuggling_shapes_refused(void **state) {
    (void)state;
    assert_int_equal(
        status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
        -400);
    assert_int_equal(
        status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), -400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n"), -400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n"), -400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n"), -400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n"), -400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n"), -400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nX: a\r\n folded\r\n\r\n"), -400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nno colon here\r\n\r\n"), -400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n"), -400);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nX: a\x01\r\n\r\n"), -400);
    assert_int_equal(status_of("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), -400);
    /* The same length twice, in one field or two, is one length. */
    sl_hp_request r;
    assert_true(parse("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\n", &r) >
                0);
    assert_int_equal(r.content_length, 5);
}

static void test_transfer_codings(void **state) {
    (void)state;
    sl_hp_request r;
    assert_true(parse("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n", &r) > 0);
    assert_true(r.chunked);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n"), -501);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n"), -501);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
                     -501);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
                     -501);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
                               "Transfer-Encoding: chunked\r\n\r\n"),
                     -501);
    assert_int_equal(status_of("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n"), -400);
}

static void test_versions_and_request_line(void **state) {
    (void)state;
    sl_hp_request r;
    assert_true(parse("GET / HTTP/1.0\r\n\r\n", &r) > 0);
    assert_int_equal(r.minor, 0);
    assert_false(r.keep_alive);
    assert_true(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &r) > 0);
    assert_true(r.keep_alive);
    assert_true(parse("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n", &r) > 0);
    assert_false(r.keep_alive);
    assert_true(parse("GET / HTTP/1.9\r\nHost: h\r\n\r\n", &r) > 0);
    assert_int_equal(r.minor, 1);
    assert_int_equal(status_of("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), -505);
    assert_int_equal(status_of("GET / HTTP/3.0\r\n\r\n"), -505);
    assert_int_equal(status_of("GET / HTTP/x\r\n\r\n"), -400);
    assert_int_equal(status_of("GET / FOO/1.1\r\n\r\n"), -400);
    assert_int_equal(status_of("GET / HTTP/1.1x\r\n\r\n"), -400);
    assert_int_equal(status_of("GET /  HTTP/1.1\r\n\r\n"), -400);
    assert_int_equal(status_of("GE(T / HTTP/1.1\r\nHost: h\r\n\r\n"), -400);
    assert_int_equal(status_of("GET / HTTP/1.1\r\n\r\n"), -400); /* no Host */
    assert_int_equal(status_of("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), -400);
    /* Empty lines before the request line are skipped; bare LF ends lines. */
    const char *s = "\r\n\nGET / HTTP/1.1\nHost: h\n\n";
    assert_int_equal(parse(s, &r), (long)strlen(s));
    assert_int_equal(r.nfields, 1);
}

static void test_limits(void **state) {
    (void)state;
    size_t big = SL_HP_TARGET_MAX + 100;
    char *s = malloc(big + 64);
    memcpy(s, "GET /", 5);
    memset(s + 5, 'a', big);
    strcpy(s + 5 + big, " HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_int_equal(status_of(s), -414);
    /* Still arriving, but already too long to be a request line. */
    const char *why;
    sl_hp_request r;
    assert_int_equal(sl_hp_parse_head(s, 5 + big, &r, &why), -414);
    free(s);

    char *h = malloc(SL_HP_HEAD_MAX + 200);
    int n = sprintf(h, "GET / HTTP/1.1\r\nHost: h\r\nX: ");
    memset(h + n, 'v', SL_HP_HEAD_MAX);
    strcpy(h + n + SL_HP_HEAD_MAX, "\r\n\r\n");
    assert_int_equal(status_of(h), -431);
    assert_int_equal(sl_hp_parse_head(h, (size_t)n + SL_HP_HEAD_MAX, &r, &why), -431); /* partial */
    free(h);

    char many[8192];
    n = sprintf(many, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; i < SL_HP_FIELDS_MAX; i++)
        n += sprintf(many + n, "X%d: v\r\n", i);
    strcpy(many + n, "\r\n");
    assert_int_equal(status_of(many), -431);
}

static void test_expect_continue(void **state) {
    (void)state;
    sl_hp_request r;
    assert_true(parse("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n", &r) >
                0);
    assert_true(r.expect_continue);
}

/* Decodes body in slices of every size, checking the payload and where
 * the body ends. */
static void decode_all(const char *body, size_t len, const char *want, size_t used_want) {
    for (size_t slice = 1; slice <= len; slice++) {
        sl_hp_chunked c;
        memset(&c, 0, sizeof c);
        char out[4096];
        size_t got = 0, off = 0;
        int rc = 0;
        const char *why;
        while (off < len && rc == 0) {
            size_t n = len - off < slice ? len - off : slice, used, k;
            rc = sl_hp_decode_chunked(&c, body + off, n, &used, out + got, &k, &why);
            assert_true(rc >= 0);
            got += k;
            off += used;
        }
        assert_int_equal(rc, 1);
        assert_int_equal(off, used_want);
        assert_int_equal(got, strlen(want));
        assert_memory_equal(out, want, got);
    }
}

static void test_chunked_decoding(void **state) {
    (void)state;
    const char *b = "5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\nGET /next";
    decode_all(b, strlen(b), "hello, world", (size_t)(strstr(b, "GET") - b));
    const char *e = "A\r\n0123456789\r\n0\r\n\r\n";
    decode_all(e, strlen(e), "0123456789", strlen(e));
}

static int decode_status(const char *body) {
    sl_hp_chunked c;
    memset(&c, 0, sizeof c);
    char out[4096];
    size_t used, k;
    const char *why;
    return sl_hp_decode_chunked(&c, body, strlen(body), &used, out, &k, &why);
}

static void test_chunked_malformed(void **state) {
    (void)state;
    assert_int_equal(decode_status("zz\r\nhello\r\n0\r\n\r\n"), -400);
    assert_int_equal(decode_status("5\r\nhelloXX0\r\n\r\n"), -400); /* no CRLF after the data */
    assert_int_equal(decode_status("5\nhello\r\n0\r\n\r\n"), -400); /* bare LF */
    assert_int_equal(decode_status("1000000000000000\r\n"), -400);  /* 16 hex digits */
    assert_int_equal(decode_status("\r\n"), -400);                  /* no size */
    assert_int_equal(decode_status("0\r\nX: y\n\r\n"), -400);       /* bare LF in a trailer */
    assert_int_equal(decode_status("5\r\nhel"), 0);                 /* partial */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_every_prefix_is_partial),
        cmocka_unit_test(test_smuggling_shapes_refused),
        cmocka_unit_test(test_transfer_codings),
        cmocka_unit_test(test_versions_and_request_line),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_chunked_decoding),
        cmocka_unit_test(test_chunked_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
