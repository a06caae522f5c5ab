/* fuzz_sqs.c: libFuzzer target for the SQS front end's pure parts
 * (src/api/sqs_codec.c).
 *
 * The input is read as a JSON map of message attributes, checked both as
 * MessageAttributes and as MessageSystemAttributes; a map that passes must
 * have a digest (SendMessage answers it), and its counted size must cover
 * its names. The same bytes are also read as a message body (the character
 * rules), as base64 (a decoded length that fits its bound), and as a queue
 * URL: one that parses must name an account and a queue that parse back
 * from "/account/queue" to the same names. Last, as a query-protocol form
 * body: what decodes is answered in XML (an action's result is any JSON
 * object), which must be well-formed enough to hold no raw '<' or '&' of
 * the input's text. And as a request body: what the fast JSON reader
 * (src/api/json.c) reads, jansson must read to the same tree.
 *
 *     make fuzz && build/fuzz/fuzz_sqs fuzz/corpus/sqs */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/json.h"
#include "api/sqs.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    json_t *j = json_loadb((const char *)data, size, 0, NULL);
    for (size_t flags = 0; flags <= JSON_REJECT_DUPLICATES; flags += JSON_REJECT_DUPLICATES) {
        json_t *fast = sl_json_fast(data, size, flags),
               *slow = flags ? json_loadb((const char *)data, size, flags, NULL) : json_incref(j);
        if (fast && !json_equal(fast, slow)) abort();
        json_decref(fast);
        json_decref(slow);
    }
    if (json_is_object(j)) {
        for (int system = 0; system < 2; system++) {
            char err[256], md5[33];
            size_t bytes = 0;
            if (sl_sqs_attrs_check(j, system, &bytes, err, sizeof err) != 0) continue;
            if (json_object_size(j) > 0 && sl_sqs_md5_attrs(j, md5) != 0) abort();
            const char *k;
            json_t *v;
            size_t names = 0;
            json_object_foreach(j, k, v) names += strlen(k);
            if (bytes < names) abort();
        }
    }
    json_decref(j);

    (void)sl_sqs_text_ok(data, size);
    if (size <= 65536) {
        unsigned char *out = malloc(size / 4 * 3 + 3);
        if (out) {
            long n = sl_sqs_b64_decode((const char *)data, size, out);
            if (n > (long)(size / 4 * 3)) abort();
            free(out);
        }
    }
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    char a[SL_NAME_MAX + 1], q[SL_NAME_MAX + 1], a2[SL_NAME_MAX + 1], q2[SL_NAME_MAX + 1];
    if (sl_sqs_queue_url(s, a, q) == 0) {
        char path[2 * SL_NAME_MAX + 4];
        snprintf(path, sizeof path, "/%s/%s", a, q);
        if (sl_sqs_queue_url(path, a2, q2) != 0 || strcmp(a, a2) != 0 || strcmp(q, q2) != 0) abort();
    }
    (void)sl_sqs_queue_name_ok(s);
    char *names[64], *values[64];
    long n = sl_sqs_form_split(s, names, values, 64);
    if (n >= 0) {
        char action[48], err[256];
        json_t *in = sl_sqs_query_decode((const char *const *)names, (const char *const *)values, (size_t)n,
                                         action, sizeof action, err, sizeof err);
        if (in) {
            size_t len;
            char *x = sl_sqs_query_answer(action, in, "rid", &len);
            if (!x || strlen(x) != len) abort();
            /* Every '<' opens a tag and every '&' an entity: text is escaped. */
            for (char *p = strchr(x, '&'); p; p = strchr(p + 1, '&'))
                if (strncmp(p, "&amp;", 5) && strncmp(p, "&lt;", 4) && strncmp(p, "&gt;", 4) &&
                    strncmp(p, "&quot;", 6) && strncmp(p, "&apos;", 6) && strncmp(p, "&#xD;", 5))
                    abort();
            free(x);
            json_decref(in);
        }
    }
    free(s);
    return 0;
}
