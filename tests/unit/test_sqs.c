/* test_sqs.c: the SQS front end's pure parts (src/api/sqs_codec.c): the
 * digests of bodies and attributes against values computed independently
 * (Python's hashlib over AWS's documented layout), the attribute rules,
 * the characters a message may hold, base64, queue URLs and names. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "api/json.h"
#include "api/sqs.h"

static json_t *parse(const char *text) {
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    assert_non_null(j);
    return j;
}

static void test_md5(void **state) {
    (void)state;
    char out[33];
    sl_sqs_md5_hex("hello", 5, out);
    assert_string_equal(out, "5d41402abc4b2a76b9719d911017c592");
    sl_sqs_md5_hex("", 0, out);
    assert_string_equal(out, "d41d8cd98f00b204e9800998ecf8427e");
    /* String, Number and Binary (0x00 0x01 as base64) in one map; names
     * are taken in byte order whatever the map's order. */
    json_t *a = parse("{\"n\":{\"DataType\":\"Number\",\"StringValue\":\"12\"},"
                      "\"b\":{\"DataType\":\"Binary\",\"BinaryValue\":\"AAE=\"},"
                      "\"a\":{\"DataType\":\"String\",\"StringValue\":\"x\"}}");
    assert_int_equal(sl_sqs_md5_attrs(a, out), 0);
    assert_string_equal(out, "f67a13c367c670df78d99c7dfb30afb7");
    json_decref(a);
    /* A custom type keeps its suffix in the digest. */
    a = parse("{\"k\":{\"DataType\":\"String.custom\",\"StringValue\":\"x\"}}");
    assert_int_equal(sl_sqs_md5_attrs(a, out), 0);
    assert_string_equal(out, "80fd2ea5cda5de52eda95eef7dd16763");
    json_decref(a);
    a = parse("{\"k\":{\"DataType\":\"Binary\",\"BinaryValue\":\"not base64!\"}}");
    assert_int_equal(sl_sqs_md5_attrs(a, out), SL_EINVAL);
    json_decref(a);
}

static int check(const char *text, int system) {
    json_t *a = parse(text);
    char err[256] = "";
    size_t bytes = 0;
    int rc = sl_sqs_attrs_check(a, system, &bytes, err, sizeof err);
    if (rc) assert_true(err[0] != '\0');
    json_decref(a);
    return rc;
}

static void test_attrs_check(void **state) {
    (void)state;
    assert_int_equal(check("{}", 0), 0);
    assert_int_equal(check("{\"a.b-c_1\":{\"DataType\":\"String\",\"StringValue\":\"v\"}}", 0), 0);
    assert_int_equal(check("{\"n\":{\"DataType\":\"Number.int\",\"StringValue\":\"-1.5E+10\"}}", 0), 0);
    assert_int_equal(check("{\"b\":{\"DataType\":\"Binary\",\"BinaryValue\":\"AAE=\"}}", 0), 0);
    static const char *const bad[] = {
        "[]",
        "{\"\":{\"DataType\":\"String\",\"StringValue\":\"v\"}}",
        "{\".a\":{\"DataType\":\"String\",\"StringValue\":\"v\"}}",
        "{\"a.\":{\"DataType\":\"String\",\"StringValue\":\"v\"}}",
        "{\"a..b\":{\"DataType\":\"String\",\"StringValue\":\"v\"}}",
        "{\"aws.x\":{\"DataType\":\"String\",\"StringValue\":\"v\"}}",
        "{\"Amazon.x\":{\"DataType\":\"String\",\"StringValue\":\"v\"}}",
        "{\"a b\":{\"DataType\":\"String\",\"StringValue\":\"v\"}}",
        "{\"a\":\"v\"}",
        "{\"a\":{\"DataType\":\"Date\",\"StringValue\":\"v\"}}",
        "{\"a\":{\"DataType\":\"String.\",\"StringValue\":\"v\"}}",
        "{\"a\":{\"DataType\":\"String\",\"StringValue\":\"\"}}",
        "{\"a\":{\"DataType\":\"String\"}}",
        "{\"a\":{\"DataType\":\"String\",\"StringValue\":\"v\",\"BinaryValue\":\"AAE=\"}}",
        "{\"a\":{\"DataType\":\"String\",\"StringValue\":\"v\",\"Other\":1}}",
        "{\"a\":{\"DataType\":\"String\",\"StringValue\":\"\\u0001\"}}",
        "{\"a\":{\"DataType\":\"Number\",\"StringValue\":\"1e\"}}",
        "{\"a\":{\"DataType\":\"Number\",\"StringValue\":\"1.2.3\"}}",
        "{\"a\":{\"DataType\":\"Number\",\"StringValue\":\"123456789012345678901234567890123456789\"}}",
        "{\"a\":{\"DataType\":\"Binary\",\"BinaryValue\":\"AAE\"}}",
        "{\"a\":{\"DataType\":\"Binary\",\"StringValue\":\"AAE=\"}}",
        "{\"k0\":{\"DataType\":\"String\",\"StringValue\":\"v\"},\"k1\":{\"DataType\":\"String\","
        "\"StringValue\":\"v\"},"
        "\"k2\":{\"DataType\":\"String\",\"StringValue\":\"v\"},\"k3\":{\"DataType\":\"String\","
        "\"StringValue\":\"v\"},"
        "\"k4\":{\"DataType\":\"String\",\"StringValue\":\"v\"},\"k5\":{\"DataType\":\"String\","
        "\"StringValue\":\"v\"},"
        "\"k6\":{\"DataType\":\"String\",\"StringValue\":\"v\"},\"k7\":{\"DataType\":\"String\","
        "\"StringValue\":\"v\"},"
        "\"k8\":{\"DataType\":\"String\",\"StringValue\":\"v\"},\"k9\":{\"DataType\":\"String\","
        "\"StringValue\":\"v\"},"
        "\"k10\":{\"DataType\":\"String\",\"StringValue\":\"v\"}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (check(bad[i], 0) != SL_EINVAL) fail_msg("accepted: %s", bad[i]);
    }
    /* 38 significant digits are allowed; leading zeros do not count. */
    assert_int_equal(
        check(
            "{\"a\":{\"DataType\":\"Number\",\"StringValue\":\"00012345678901234567890123456789012345678\"}}",
            0),
        0);
    /* System attributes: AWSTraceHeader alone, a String. */
    assert_int_equal(check("{\"AWSTraceHeader\":{\"DataType\":\"String\",\"StringValue\":\"Root=1\"}}", 1),
                     0);
    assert_int_equal(check("{\"Other\":{\"DataType\":\"String\",\"StringValue\":\"x\"}}", 1), SL_EINVAL);
    assert_int_equal(check("{\"AWSTraceHeader\":{\"DataType\":\"Number\",\"StringValue\":\"1\"}}", 1),
                     SL_EINVAL);
    /* Sizes as AWS counts them: name, type and value bytes. */
    json_t *a = parse("{\"ab\":{\"DataType\":\"Binary\",\"BinaryValue\":\"AAEC\"}}");
    size_t bytes = 100;
    char err[64];
    assert_int_equal(sl_sqs_attrs_check(a, 0, &bytes, err, sizeof err), 0);
    assert_int_equal(bytes, 100 + 2 + 6 + 3);
    json_decref(a);
}

static void test_text(void **state) {
    (void)state;
    assert_true(sl_sqs_text_ok("plain \t\r\n", 9));
    assert_true(sl_sqs_text_ok("\xc3\xa9\xe2\x98\x82\xf0\x9f\x98\x80", 9)); /* é ☂ 😀 */
    assert_true(sl_sqs_text_ok("\xee\x80\x80", 3));                         /* U+E000 */
    assert_false(sl_sqs_text_ok("\x01", 1));
    assert_false(sl_sqs_text_ok("a\0b", 3));
    assert_false(sl_sqs_text_ok("\xed\xa0\x80", 3));     /* a surrogate */
    assert_false(sl_sqs_text_ok("\xef\xbf\xbe", 3));     /* U+FFFE */
    assert_false(sl_sqs_text_ok("\xc0\xaf", 2));         /* overlong */
    assert_false(sl_sqs_text_ok("\xe0\x80\xaf", 3));     /* overlong */
    assert_false(sl_sqs_text_ok("\xf4\x90\x80\x80", 4)); /* past U+10FFFF */
    assert_false(sl_sqs_text_ok("\xe2\x98", 2));         /* cut short */
}

/* The answers written as they go (sl_jw) read back as the trees jansson
 * would have written: the same values, escapes and U+FFFD included. */
static void test_json_writer(void **state) {
    (void)state;
    static const struct {
        const char *s;
        size_t n;
        const char *want; /* as read back, where bytes of no UTF-8 sequence became U+FFFD */
    } bodies[] = {
        {"plain", 5, NULL},
        {"", 0, NULL},
        {"q\"b\\s/\b\f\n\r\t\x01\x1f\x7f", 14, NULL},
        {"a\0b", 3, NULL},
        {"\xc3\xa9\xe2\x98\x82\xf0\x9f\x98\x80", 9, NULL},
        {"bad \xff\xc3 cut \xe2\x98", 13, "bad \xef\xbf\xbd\xef\xbf\xbd cut \xef\xbf\xbd\xef\xbf\xbd"},
        {"\xed\xa0\x80 surrogate", 13, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd surrogate"}};
    size_t nb = sizeof bodies / sizeof bodies[0];
    sl_jw w = {0};
    sl_jw_open(&w, '{');
    sl_jw_key(&w, "Messages");
    sl_jw_open(&w, '[');
    json_t *want = json_array();
    for (size_t i = 0; i < nb; i++) {
        sl_jw_open(&w, '{');
        sl_jw_key(&w, "Id");
        sl_jw_cstr(&w, "m1");
        sl_jw_key(&w, "Body");
        sl_jw_str(&w, bodies[i].s, bodies[i].n);
        json_t *a = json_pack("{s:[i,s]}", "x", (int)i, "y");
        sl_jw_key(&w, "Attributes");
        sl_jw_json(&w, a);
        sl_jw_close(&w, '}');
        json_t *body = bodies[i].want ? json_string(bodies[i].want) : json_stringn(bodies[i].s, bodies[i].n);
        json_array_append_new(want, json_pack("{s:s,s:o,s:o}", "Id", "m1", "Body", body, "Attributes", a));
    }
    sl_jw_close(&w, ']');
    sl_jw_key(&w, "Ints");
    sl_jw_open(&w, '[');
    sl_jw_int(&w, 0);
    sl_jw_int(&w, -1);
    sl_jw_int(&w, INT64_MAX);
    sl_jw_close(&w, ']');
    sl_jw_key(&w, "Empty");
    sl_jw_open(&w, '[');
    sl_jw_close(&w, ']');
    sl_jw_close(&w, '}');
    size_t len;
    char *text = sl_jw_take(&w, &len);
    assert_non_null(text);
    json_error_t err;
    json_t *got = json_loadb(text, len, JSON_ALLOW_NUL, &err);
    if (!got) fail_msg("not JSON (%s): %.*s", err.text, (int)len, text);
    json_t *exp =
        json_pack("{s:o,s:[i,i,I],s:[]}", "Messages", want, "Ints", 0, -1, (json_int_t)INT64_MAX, "Empty");
    assert_true(json_equal(got, exp));
    /* Escaped as jansson escapes: the same bytes for the body with escapes. */
    json_t *one = json_stringn(bodies[2].s, bodies[2].n);
    char *jt = json_dumps(one, JSON_ENCODE_ANY);
    sl_jw_str(&w, bodies[2].s, bodies[2].n);
    free(text);
    text = sl_jw_take(&w, &len);
    assert_non_null(text);
    assert_int_equal(len, strlen(jt));
    assert_memory_equal(text, jt, len);
    free(jt);
    free(text);
    json_decref(one);
    json_decref(got);
    json_decref(exp);
}

/* The fast reader of request bodies: whatever it reads, jansson reads to
 * the same tree with the same flags; what it gives up on, jansson decides.
 * Hand-picked texts first, then random ones built from JSON's pieces. */
static uint64_t jr_rand(uint64_t *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 17;
}

/* Appends a random JSON value (mostly valid) to buf. */
static void jr_gen(uint64_t *seed, char *buf, size_t cap, size_t *n, int depth) {
    static const char *const scalars[] = {"1",
                                          "-2",
                                          "0",
                                          "-0",
                                          "123456789012",
                                          "true",
                                          "false",
                                          "null",
                                          "\"\"",
                                          "\"k\"",
                                          "\"v\\n\\t\\\"\\\\\\/\"",
                                          "\"\\u00e9\\u20ac\"",
                                          "\"\\ud83d\\ude00\"",
                                          "\"\xc3\xa9\xe2\x98\x82\"",
                                          "\"a b\x7f\"",
                                          "9223372036854775807",
                                          "2.5",
                                          "\"\\u0000\""};
    static const char *const ws[] = {"", "", "", " ", "\n", "\t ", "\r\n"};
    uint64_t x = jr_rand(seed);
    const char *w = ws[x % 7];
    if (*n + strlen(w) < cap) memcpy(buf + *n, w, strlen(w)), *n += strlen(w);
    int kind = depth > 4 ? 2 : (int)(x >> 8) % 3;
    if (kind == 2) {
        const char *sc = scalars[(x >> 16) % (sizeof scalars / sizeof scalars[0])];
        if (*n + strlen(sc) < cap) memcpy(buf + *n, sc, strlen(sc)), *n += strlen(sc);
        return;
    }
    int items = (int)((x >> 24) % 4);
    if (*n + 1 < cap) buf[(*n)++] = kind ? '[' : '{';
    for (int i = 0; i < items; i++) {
        if (i && *n + 1 < cap) buf[(*n)++] = ',';
        if (!kind) {
            char key[8];
            int kl = snprintf(key, sizeof key, "\"%c\":", 'a' + (int)(jr_rand(seed) % 3));
            if (*n + (size_t)kl < cap) memcpy(buf + *n, key, (size_t)kl), *n += (size_t)kl;
        }
        jr_gen(seed, buf, cap, n, depth + 1);
    }
    if (*n + 1 < cap) buf[(*n)++] = kind ? ']' : '}';
}

static void json_fast_check(const char *t, size_t n, size_t flags, int must_read) {
    json_error_t err;
    json_t *fast = sl_json_fast(t, n, flags), *slow = json_loadb(t, n, flags, &err);
    if (fast && !slow) fail_msg("read what jansson refuses (%s): %.*s", err.text, (int)n, t);
    if (fast && !json_equal(fast, slow)) fail_msg("read differently: %.*s", (int)n, t);
    if (must_read && !fast) fail_msg("gave up on: %.*s", (int)n, t);
    json_t *both = sl_json_parse(t, n, flags, &err);
    if (!both != !slow || (both && !json_equal(both, slow)))
        fail_msg("sl_json_parse differs: %.*s", (int)n, t);
    if (both && err.text[0]) fail_msg("an error text after a success: %s", err.text);
    json_decref(fast);
    json_decref(slow);
    json_decref(both);
}

static void test_json_reader(void **state) {
    (void)state;
    static const char *const plain[] = {
        "{}",
        "[]",
        " { \"a\" : 1 } ",
        "{\"QueueUrl\":\"http://h/a/q\",\"Entries\":[{\"Id\":\"0\",\"MessageBody\":\"x\"}]}",
        "[1,-1,0,-0,9223372036854775807,-9223372036854775808,true,false,null]",
        "{\"s\":\"q\\\"b\\\\s\\/\\b\\f\\n\\r\\t\\u0041\\u00e9\\u20AC\\ud83d\\ude00\"}",
        "{\"\xc3\xa9\":\"\xe2\x98\x82\xf0\x9f\x98\x80\x7f\"}",
        "{\"a\":{\"b\":[[],{}]},\"a\":2}",
        "\t\r\n[\"\"]\n"};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
        json_fast_check(plain[i], strlen(plain[i]), 0, 1);
    static const char *const odd[] = {
        "",
        " ",
        "{",
        "}",
        "[1,]",
        "{,}",
        "{\"a\"}",
        "{\"a\":}",
        "{\"a\":1,}",
        "{a:1}",
        "[01]",
        "[1.5]",
        "[1e3]",
        "[-]",
        "[+1]",
        "[9223372036854775808]",
        "[-9223372036854775809]",
        "[\"\\u0000\"]",
        "[\"\\ud800\"]",
        "[\"\\udc00\"]",
        "[\"\\ud800\\u0041\"]",
        "[\"\\x\"]",
        "[\"\\u12\"]",
        "[\"a",
        "[\"a\\n",
        "[\"\x01\"]",
        "[\"\xff\"]",
        "[\"\xc0\xaf\"]",
        "[\"\xed\xa0\x80\"]",
        "[\"\xe2\x98\"]",
        "[truex]",
        "[nul]",
        "1",
        "\"s\"",
        "{} x",
        "[]]",
        "{\"a\":1}{",
        "{\"a\":1,\"a\":2}",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
        "[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]"};
    for (size_t i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        json_fast_check(odd[i], strlen(odd[i]), 0, 0);
        json_fast_check(odd[i], strlen(odd[i]), JSON_REJECT_DUPLICATES, 0);
        json_fast_check(odd[i], strlen(odd[i]), JSON_DECODE_ANY | JSON_ALLOW_NUL, 0);
    }
    /* Random values, most of them whole, some cut or with a byte changed. */
    uint64_t seed = 42;
    char buf[512];
    int read = 0;
    for (int it = 0; it < 100000; it++) {
        size_t n = 0;
        jr_gen(&seed, buf, sizeof buf - 8, &n, 0);
        uint64_t x = jr_rand(&seed);
        if (n && x % 8 == 0) buf[(x >> 8) % n] = (char)(x >> 32);
        if (n && x % 8 == 1) n = (size_t)((x >> 8) % n);
        json_error_t err;
        json_t *f = sl_json_fast(buf, n, 0);
        read += f != NULL;
        json_decref(f);
        json_fast_check(buf, n, (x & 16) ? JSON_REJECT_DUPLICATES : 0, 0);
        (void)err;
    }
    assert_true(read > 30000); /* most of them went the fast way: that is what was tested */
}

static void test_base64(void **state) {
    (void)state;
    unsigned char out[16];
    assert_int_equal(sl_sqs_b64_decode("", 0, out), 0);
    assert_int_equal(sl_sqs_b64_decode("AAE=", 4, out), 2);
    assert_memory_equal(out, "\x00\x01", 2);
    assert_int_equal(sl_sqs_b64_decode("+/8=", 4, out), 2);
    assert_memory_equal(out, "\xfb\xff", 2);
    assert_int_equal(sl_sqs_b64_decode("aGk=", 4, out), 2);
    assert_int_equal(sl_sqs_b64_decode("aA==", 4, out), 1);
    assert_int_equal(sl_sqs_b64_decode("aGVsbG8h", 8, out), 6);
    static const char *const bad[] = {"A", "AA=", "A===", "=AAA", "AA=A", "aA==aA==", "-_8=", "aGk"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (sl_sqs_b64_decode(bad[i], strlen(bad[i]), out) >= 0) fail_msg("decoded: %s", bad[i]);
}

static void test_queue_urls_and_names(void **state) {
    (void)state;
    char a[SL_NAME_MAX + 1], q[SL_NAME_MAX + 1];
    assert_int_equal(sl_sqs_queue_url("http://127.0.0.1:8080/dev/orders", a, q), 0);
    assert_string_equal(a, "dev");
    assert_string_equal(q, "orders");
    assert_int_equal(sl_sqs_queue_url("https://sqs.eu-west-3.amazonaws.com/acct-1/q.x", a, q), 0);
    assert_string_equal(a, "acct-1");
    assert_string_equal(q, "q.x");
    assert_int_equal(sl_sqs_queue_url("/dev/orders", a, q), 0);
    static const char *const bad[] = {"",
                                      "orders",
                                      "http://host",
                                      "http://host/",
                                      "http://host/dev",
                                      "http://host/dev/",
                                      "http://host//q",
                                      "http://host/dev/q/x",
                                      "http://host/de v/q",
                                      "http://host/dev/..",
                                      "dev/orders"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        if (sl_sqs_queue_url(bad[i], a, q) == 0) fail_msg("parsed: %s", bad[i]);
    assert_true(sl_sqs_queue_name_ok("orders-1_x"));
    assert_true(sl_sqs_queue_name_ok("jobs.fifo"));
    char long_name[82];
    memset(long_name, 'a', 81);
    long_name[81] = '\0';
    assert_false(sl_sqs_queue_name_ok(long_name));
    long_name[80] = '\0';
    assert_true(sl_sqs_queue_name_ok(long_name));
    assert_false(sl_sqs_queue_name_ok(""));
    assert_false(sl_sqs_queue_name_ok("dot.ted"));
    assert_false(sl_sqs_queue_name_ok(".fifo"));
    assert_false(sl_sqs_queue_name_ok("sp ace"));
}

static json_t *decode(const char *const *kv, size_t n, char *action, char *err) {
    const char *names[64], *values[64];
    for (size_t i = 0; i < n; i++) {
        names[i] = kv[2 * i];
        values[i] = kv[2 * i + 1];
    }
    return sl_sqs_query_decode(names, values, n, action, 64, err, 256);
}

static void same_json(json_t *got, const char *want) {
    json_t *w = parse(want);
    char *g = json_dumps(got, JSON_SORT_KEYS | JSON_COMPACT),
         *x = json_dumps(w, JSON_SORT_KEYS | JSON_COMPACT);
    if (!json_equal(got, w)) fail_msg("got %s, want %s", g, x);
    free(g);
    free(x);
    json_decref(w);
}

static void test_query_decode(void **state) {
    (void)state;
    char action[64], err[256];
    static const char *const send[] = {"Action",
                                       "SendMessage",
                                       "Version",
                                       "2012-11-05",
                                       "QueueUrl",
                                       "http://h/dev/q",
                                       "MessageBody",
                                       "hi",
                                       "MessageAttribute.2.Name",
                                       "n",
                                       "MessageAttribute.2.Value.DataType",
                                       "Number",
                                       "MessageAttribute.2.Value.StringValue",
                                       "1",
                                       "MessageAttribute.1.Name",
                                       "b",
                                       "MessageAttribute.1.Value.DataType",
                                       "Binary",
                                       "MessageAttribute.1.Value.BinaryValue",
                                       "AAE=",
                                       "DelaySeconds",
                                       "5"};
    json_t *j = decode(send, sizeof send / sizeof send[0] / 2, action, err);
    assert_non_null(j);
    assert_string_equal(action, "SendMessage");
    same_json(j, "{\"QueueUrl\":\"http://h/dev/q\",\"MessageBody\":\"hi\",\"DelaySeconds\":\"5\","
                 "\"MessageAttributes\":{\"n\":{\"DataType\":\"Number\",\"StringValue\":\"1\"},"
                 "\"b\":{\"DataType\":\"Binary\",\"BinaryValue\":\"AAE=\"}}}");
    json_decref(j);
    static const char *const batch[] = {"Action",
                                        "SendMessageBatch",
                                        "QueueUrl",
                                        "u",
                                        "SendMessageBatchRequestEntry.1.Id",
                                        "a",
                                        "SendMessageBatchRequestEntry.1.MessageBody",
                                        "one",
                                        "SendMessageBatchRequestEntry.2.Id",
                                        "b",
                                        "SendMessageBatchRequestEntry.2.MessageBody",
                                        "two",
                                        "SendMessageBatchRequestEntry.2.MessageAttribute.1.Name",
                                        "k",
                                        "SendMessageBatchRequestEntry.2.MessageAttribute.1.Value.DataType",
                                        "String",
                                        "SendMessageBatchRequestEntry.2.MessageAttribute.1.Value.StringValue",
                                        "v"};
    j = decode(batch, sizeof batch / sizeof batch[0] / 2, action, err);
    assert_non_null(j);
    same_json(j, "{\"QueueUrl\":\"u\",\"Entries\":[{\"Id\":\"a\",\"MessageBody\":\"one\"},"
                 "{\"Id\":\"b\",\"MessageBody\":\"two\",\"MessageAttributes\":{\"k\":{\"DataType\":"
                 "\"String\",\"StringValue\":\"v\"}}}]}");
    json_decref(j);
    static const char *const create[] = {"Action",
                                         "CreateQueue",
                                         "QueueName",
                                         "q",
                                         "Attribute.1.Name",
                                         "VisibilityTimeout",
                                         "Attribute.1.Value",
                                         "40",
                                         "Tag.1.Key",
                                         "team",
                                         "Tag.1.Value",
                                         "a",
                                         "AttributeName.1",
                                         "All"};
    j = decode(create, sizeof create / sizeof create[0] / 2, action, err);
    assert_non_null(j);
    same_json(j, "{\"QueueName\":\"q\",\"Attributes\":{\"VisibilityTimeout\":\"40\"},"
                 "\"tags\":{\"team\":\"a\"},\"AttributeNames\":[\"All\"]}");
    json_decref(j);
    /* Refused: twice, a hole, an index out of range or not a number, an
     * unknown dotted name, a map entry without its name, no Action. */
    static const char *const bad[][6] = {
        {"Action", "X", "QueueUrl", "a", "QueueUrl", "b"},
        {"Action", "X", "AttributeName.2", "All", "", ""},
        {"Action", "X", "AttributeName.0", "All", "", ""},
        {"Action", "X", "AttributeName.101", "All", "", ""},
        {"Action", "X", "AttributeName.1x", "All", "", ""},
        {"Action", "X", "Foo.1.Bar", "v", "", ""},
        {"Action", "X", "Attribute.1.Value", "v", "", ""},
        {"Action", "X", "AttributeName.1", "a", "AttributeName.1", "b"},
        {"QueueUrl", "a", "", "", "", ""},
        {"Action", "X", "Action", "Y", "", ""},
        {"Action", "X", "AttributeNames", "a", "AttributeName.1", "b"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        size_t n = bad[i][4][0] ? 3 : bad[i][2][0] ? 2 : 1;
        j = decode(bad[i], n, action, err);
        if (j) fail_msg("decoded case %zu", i);
        assert_true(err[0] != '\0');
    }
}

static void test_query_answer(void **state) {
    (void)state;
    size_t n;
    json_t *r = parse("{\"Messages\":[{\"MessageId\":\"m1\",\"Body\":\"a&b<c>\\r\\n'\\\"\",\"Attributes\":"
                      "{\"SenderId\":\"dev\"},\"MessageAttributes\":{\"k\":{\"DataType\":\"String\","
                      "\"StringValue\":\"v\"}}}]}");
    char *x = sl_sqs_query_answer("ReceiveMessage", r, "rid", &n);
    assert_non_null(x);
    assert_string_equal(
        x, "<?xml version=\"1.0\"?><ReceiveMessageResponse xmlns=\"http://queue.amazonaws.com/doc/"
           "2012-11-05/\"><ReceiveMessageResult><Message><MessageId>m1</MessageId><Body>a&amp;b&lt;"
           "c&gt;&#xD;\n&apos;&quot;</Body><Attribute><Name>SenderId</Name><Value>dev</Value>"
           "</Attribute><MessageAttribute><Name>k</Name><Value><DataType>String</DataType>"
           "<StringValue>v</StringValue></Value></MessageAttribute></Message></ReceiveMessageResult>"
           "<ResponseMetadata><RequestId>rid</RequestId></ResponseMetadata></ReceiveMessageResponse>");
    assert_int_equal(n, strlen(x));
    free(x);
    json_decref(r);
    r = parse(
        "{\"Successful\":[{\"Id\":\"a\"}],\"Failed\":[{\"Id\":\"b\",\"SenderFault\":true,\"Code\":\"C\","
        "\"Message\":\"M\"}]}");
    x = sl_sqs_query_answer("DeleteMessageBatch", r, "rid", &n);
    assert_non_null(
        strstr(x, "<DeleteMessageBatchResult><DeleteMessageBatchResultEntry><Id>a</Id>"
                  "</DeleteMessageBatchResultEntry><BatchResultErrorEntry><Id>b</Id><SenderFault>true"
                  "</SenderFault><Code>C</Code><Message>M</Message></BatchResultErrorEntry>"
                  "</DeleteMessageBatchResult>"));
    free(x);
    json_decref(r);
    r = json_object();
    x = sl_sqs_query_answer("DeleteMessage", r, "rid", &n);
    assert_null(strstr(x, "Result"));
    free(x);
    json_decref(r);
    x = sl_sqs_query_error("Sender", "AWS.SimpleQueueService.NonExistentQueue", "no <q>", "rid", &n);
    assert_string_equal(
        x, "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\">"
           "<Error><Type>Sender</Type><Code>AWS.SimpleQueueService.NonExistentQueue</Code><Message>"
           "no &lt;q&gt;</Message><Detail/></Error><RequestId>rid</RequestId></ErrorResponse>");
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_md5),
        cmocka_unit_test(test_attrs_check),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_json_writer),
        cmocka_unit_test(test_json_reader),
        cmocka_unit_test(test_base64),
        cmocka_unit_test(test_queue_urls_and_names),
        cmocka_unit_test(test_query_decode),
        cmocka_unit_test(test_query_answer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
