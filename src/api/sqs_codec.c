/* sqs_codec.c: the pure pieces of the SQS front end; see sqs.h. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <pthread.h>

#include "sqs.h"

/* MD5, fetched from OpenSSL's provider once: EVP_md5() is looked up again
 * on every use, which took as long as the hashing of a message (a send
 * and a receive hash every body). */
static EVP_MD *g_md5;
static pthread_once_t g_md5_once = PTHREAD_ONCE_INIT;

static void fetch_md5(void) {
    g_md5 = EVP_MD_fetch(NULL, "MD5", NULL);
}

void sl_sqs_md5_hex(const void *p, size_t n, char out[33]) {
    static const char digit[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    pthread_once(&g_md5_once, fetch_md5);
    if (sl_digest(g_md5 ? g_md5 : EVP_md5(), p, n, "", 0, md, &len) != 0) len = 0;
    for (unsigned i = 0; i < 16; i++) {
        out[2 * i] = i < len ? digit[md[i] >> 4] : '0';
        out[2 * i + 1] = i < len ? digit[md[i] & 15] : '0';
    }
    out[32] = '\0';
}

/* --- Text and base64 ---------------------------------------------------- */

int sl_sqs_text_ok(const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        uint32_t cp;
        size_t k;
        if (c < 0x80) {
            cp = c;
            k = 1;
        } else if (c >= 0xC2 && c <= 0xDF) {
            cp = c & 0x1F;
            k = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            cp = c & 0x0F;
            k = 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            cp = c & 0x07;
            k = 4;
        } else {
            return 0;
        }
        if (i + k > n) return 0;
        for (size_t j = 1; j < k; j++) {
            if ((s[i + j] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3F);
        }
        /* Overlong forms, surrogates and values past U+10FFFF. */
        if ((k == 3 && cp < 0x800) || (k == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
        if (cp < 0x20 ? !(cp == 0x9 || cp == 0xA || cp == 0xD)
                      : (cp >= 0xD800 && cp <= 0xDFFF) || cp == 0xFFFE || cp == 0xFFFF)
            return 0;
        i += k;
    }
    return 1;
}

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

long sl_sqs_b64_decode(const char *in, size_t n, unsigned char *out) {
    if (n % 4 != 0) return SL_EINVAL;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int j = 0; j < 4; j++) {
            if (in[i + j] == '=' && i + 4 == n && j >= 2) {
                v[j] = 0;
                pad++;
                continue;
            }
            if (pad || (v[j] = b64_value((unsigned char)in[i + j])) < 0) return SL_EINVAL;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        out[o++] = (unsigned char)(w >> 16);
        if (pad < 2) out[o++] = (unsigned char)(w >> 8);
        if (pad < 1) out[o++] = (unsigned char)w;
    }
    return (long)o;
}

/* --- Attributes --------------------------------------------------------- */

/* The base type of a DataType ("Number.float" is a Number): 'S', 'N', 'B',
 * or 0 when it is none of them. */
static char base_type(const char *t) {
    static const struct {
        const char *name;
        char code;
    } types[] = {{"String", 'S'}, {"Number", 'N'}, {"Binary", 'B'}};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(types[i].name);
        if (strncmp(t, types[i].name, n) == 0 && (t[n] == '\0' || (t[n] == '.' && t[n + 1] != '\0')))
            return types[i].code;
    }
    return 0;
}

/* A decimal as SQS takes it: a sign, digits with one optional point, an
 * optional exponent, and at most 38 significant digits. */
static int number_ok(const char *s) {
    const char *p = s;
    int digits = 0, significant = 0, leading = 1;
    if (*p == '+' || *p == '-') p++;
    for (int point = 0; *p && *p != 'e' && *p != 'E'; p++) {
        if (*p == '.') {
            if (point++) return 0;
            continue;
        }
        if (*p < '0' || *p > '9') return 0;
        digits++;
        if (*p != '0') leading = 0;
        if (!leading) significant++;
    }
    if (!digits || significant > 38) return 0;
    if (*p) {
        p++;
        if (*p == '+' || *p == '-') p++;
        if (!*p) return 0;
        for (int n = 0; *p; p++, n++)
            if (*p < '0' || *p > '9' || n >= 4) return 0;
    }
    return 1;
}

static int name_ok(const char *k, size_t kl) {
    if (kl == 0 || kl > SL_SQS_ATTR_NAME_MAX || k[0] == '.' || k[kl - 1] == '.' || strstr(k, "..")) return 0;
    if (strncasecmp(k, "AWS.", 4) == 0 || strncasecmp(k, "Amazon.", 7) == 0) return 0;
    for (size_t i = 0; i < kl; i++) {
        char c = k[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-' || c == '.'))
            return 0;
    }
    return 1;
}

int sl_sqs_attrs_check(json_t *attrs, int system, size_t *bytes, char *err, size_t cap) {
    const char *what = system ? "MessageSystemAttributes" : "MessageAttributes";
    if (!json_is_object(attrs)) {
        snprintf(err, cap, "%s must be a map", what);
        return SL_EINVAL;
    }
    if (json_object_size(attrs) > SL_SQS_ATTRS_MAX) {
        snprintf(err, cap, "Number of message attributes [%zu] exceeds the allowed maximum [%d].",
                 json_object_size(attrs), SL_SQS_ATTRS_MAX);
        return SL_EINVAL;
    }
    const char *k;
    json_t *v;
    json_object_foreach(attrs, k, v) {
        size_t kl = strlen(k);
        if (system ? strcmp(k, "AWSTraceHeader") != 0 : !name_ok(k, kl)) {
            snprintf(err, cap,
                     system ? "Message system attribute name '%.64s' is invalid."
                            : "Message attribute name '%.64s' is invalid: names are 1 to 256 of "
                              "A-Z, a-z, 0-9, '_', '-' and '.', without '..', a leading or "
                              "trailing '.', or a prefix of AWS. or Amazon.",
                     k);
            return SL_EINVAL;
        }
        json_t *dt = json_object_get(v, "DataType");
        const char *t = json_string_value(dt);
        char base = t && json_string_length(dt) <= SL_SQS_TYPE_MAX && strlen(t) == json_string_length(dt)
                        ? base_type(t)
                        : 0;
        if (!json_is_object(v) || !base || (system && base != 'S')) {
            snprintf(err, cap, "The message attribute '%.64s' has an invalid message attribute type: %s", k,
                     system ? "AWSTraceHeader is a String"
                            : "it is String, Number or Binary, with an optional "
                              "'.' suffix");
            return SL_EINVAL;
        }
        json_t *sv = json_object_get(v, "StringValue"), *bv = json_object_get(v, "BinaryValue");
        size_t extra = json_object_size(v) - 1 - (sv != NULL) - (bv != NULL);
        const char *s = json_string_value(base == 'B' ? bv : sv);
        size_t n = json_string_length(base == 'B' ? bv : sv);
        if (extra || !s || (base == 'B' ? sv != NULL : bv != NULL) || n == 0) {
            snprintf(err, cap, "The message attribute '%.64s' must contain a non-empty %s value.", k,
                     base == 'B' ? "binary (BinaryValue)" : "string (StringValue)");
            return SL_EINVAL;
        }
        if (base == 'B') {
            unsigned char *raw = malloc(n / 4 * 3 + 3);
            long len = raw ? sl_sqs_b64_decode(s, n, raw) : SL_ENOMEM;
            free(raw);
            if (len == SL_ENOMEM) {
                snprintf(err, cap, "out of memory");
                return SL_ENOMEM;
            }
            if (len <= 0) {
                snprintf(err, cap, "The message attribute '%.64s' has a BinaryValue that is not base64.", k);
                return SL_EINVAL;
            }
            n = (size_t)len;
        } else if (strlen(s) != n || !sl_sqs_text_ok(s, n) || (base == 'N' && !number_ok(s))) {
            snprintf(err, cap, "The message attribute '%.64s' has an invalid %s value.", k,
                     base == 'N' ? "Number" : "String");
            return SL_EINVAL;
        }
        *bytes += kl + strlen(t) + n;
    }
    return 0;
}

/* --- Digests ------------------------------------------------------------ */

typedef struct {
    unsigned char *p;
    size_t n, cap;
} buf;

static int put(buf *b, const void *p, size_t n) {
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        unsigned char *q = realloc(b->p, cap);
        if (!q) return SL_ENOMEM;
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    return 0;
}

static int put_len(buf *b, const void *p, size_t n) {
    unsigned char be[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16), (unsigned char)(n >> 8),
                           (unsigned char)n};
    return put(b, be, 4) ? SL_ENOMEM : put(b, p, n);
}

static int key_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

int sl_sqs_md5_attrs(json_t *attrs, char out[33]) {
    size_t n = json_object_size(attrs);
    if (!json_is_object(attrs) || n > 64) return SL_EINVAL;
    const char *keys[64];
    size_t k = 0;
    const char *key;
    json_t *v;
    json_object_foreach(attrs, key, v) keys[k++] = key;
    qsort(keys, k, sizeof keys[0], key_cmp);
    buf b = {0};
    int rc = 0;
    for (size_t i = 0; i < k && rc == 0; i++) {
        v = json_object_get(attrs, keys[i]);
        const char *t = json_string_value(json_object_get(v, "DataType"));
        char base = t ? base_type(t) : 0;
        const char *s = json_string_value(json_object_get(v, base == 'B' ? "BinaryValue" : "StringValue"));
        if (!base || !s) {
            rc = SL_EINVAL;
            break;
        }
        unsigned char transport = base == 'B' ? 2 : 1;
        if ((rc = put_len(&b, keys[i], strlen(keys[i]))) || (rc = put_len(&b, t, strlen(t))) ||
            (rc = put(&b, &transport, 1)))
            break;
        if (base != 'B') {
            rc = put_len(&b, s, strlen(s));
            continue;
        }
        size_t sn = strlen(s);
        unsigned char *raw = malloc(sn / 4 * 3 + 3);
        long len = raw ? sl_sqs_b64_decode(s, sn, raw) : SL_ENOMEM;
        rc = len < 0 ? (int)len : put_len(&b, raw, (size_t)len);
        free(raw);
    }
    if (rc == 0) sl_sqs_md5_hex(b.p ? (const void *)b.p : "", b.n, out);
    free(b.p);
    return rc;
}

/* --- Queue URLs and names ----------------------------------------------- */

int sl_sqs_queue_url(const char *url, char account[SL_NAME_MAX + 1], char queue[SL_NAME_MAX + 1]) {
    const char *p = url;
    const char *scheme = strstr(url, "://");
    if (scheme) {
        p = strchr(scheme + 3, '/');
        if (!p) return SL_EINVAL;
    }
    if (*p != '/') return SL_EINVAL;
    p++;
    const char *slash = strchr(p, '/');
    if (!slash) return SL_EINVAL;
    size_t an = (size_t)(slash - p), qn = strlen(slash + 1);
    if (an == 0 || an > SL_NAME_MAX || qn == 0 || qn > SL_NAME_MAX || strchr(slash + 1, '/'))
        return SL_EINVAL;
    memcpy(account, p, an);
    account[an] = '\0';
    memcpy(queue, slash + 1, qn);
    queue[qn] = '\0';
    /* "." and ".." are names a path cannot carry (SigV4 normalizes them). */
    for (const char *n = account; n; n = n == account ? queue : NULL)
        if (!sl_name_valid(n) || strcmp(n, ".") == 0 || strcmp(n, "..") == 0) return SL_EINVAL;
    return 0;
}

int sl_sqs_queue_name_ok(const char *name) {
    size_t n = strlen(name);
    if (n == 0 || n > SL_SQS_QUEUE_NAME_MAX) return 0;
    size_t body = n > 5 && strcmp(name + n - 5, ".fifo") == 0 ? n - 5 : n;
    for (size_t i = 0; i < body; i++) {
        char c = name[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}

/* --- The query protocol ---------------------------------------------------- */

/* How a query-protocol name with a 1-based index maps onto the JSON
 * protocol's shape: a list of strings, a map (its entries' key and value
 * fields), or a list of objects (batch entries). */
typedef struct {
    const char *query, *json;
    char kind;               /* 'l' list of strings, 'm' map, 'o' list of objects */
    const char *key, *value; /* a map's fields: "Name"/"Value" or "Key"/"Value" */
} qname;

static const qname qnames[] = {
    {"AttributeName", "AttributeNames", 'l', NULL, NULL},
    {"MessageAttributeName", "MessageAttributeNames", 'l', NULL, NULL},
    {"MessageSystemAttributeName", "MessageSystemAttributeNames", 'l', NULL, NULL},
    {"TagKey", "TagKeys", 'l', NULL, NULL},
    {"AWSAccountId", "AWSAccountIds", 'l', NULL, NULL},
    {"ActionName", "Actions", 'l', NULL, NULL},
    {"Attribute", "Attributes", 'm', "Name", "Value"},
    {"MessageAttribute", "MessageAttributes", 'm', "Name", "Value"},
    {"MessageSystemAttribute", "MessageSystemAttributes", 'm', "Name", "Value"},
    {"Tag", "Tags", 'm', "Key", "Value"},
    {"SendMessageBatchRequestEntry", "Entries", 'o', NULL, NULL},
    {"DeleteMessageBatchRequestEntry", "Entries", 'o', NULL, NULL},
    {"ChangeMessageVisibilityBatchRequestEntry", "Entries", 'o', NULL, NULL},
};

#define QUERY_INDEX_MAX 100 /* the largest index a list or map takes */

/* A parameter's or an element's name: letters and digits, 1 to 64. */
static int ident(const char *s) {
    size_t n = strlen(s);
    return n > 0 && n <= 64 &&
           strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") == n;
}

/* The element at 1-based index k of the array that stands for `name` in o
 * (made as needed, holes as null). NULL when out of memory. */
static json_t *slot(json_t *o, const char *name, long k, int object) {
    json_t *a = json_object_get(o, name);
    if (!a) {
        a = json_array();
        if (!a || json_object_set_new(o, name, a)) return NULL;
    }
    while ((long)json_array_size(a) < k)
        if (json_array_append_new(a, json_null())) return NULL;
    json_t *e = json_array_get(a, (size_t)k - 1);
    if (object && !json_is_object(e)) {
        e = json_object();
        if (!e || json_array_set_new(a, (size_t)k - 1, e)) return NULL;
    }
    return e;
}

/* Puts one parameter (name, value) into o, where it goes by the rules of
 * qnames. 0, SL_EINVAL (err says why), or SL_ENOMEM. */
static int put_param(json_t *o, const char *name, const char *value, int depth, char *err, size_t cap) {
    const char *dot = strchr(name, '.');
    if (!dot && !*value) {
        /* An empty list or map is its name with an empty value (botocore
         * sends "Entries=" for no entries). */
        for (size_t i = 0; i < sizeof qnames / sizeof qnames[0]; i++)
            if (strcmp(name, qnames[i].json) == 0 || strcmp(name, qnames[i].query) == 0) {
                if (json_object_get(o, qnames[i].json)) return 0;
                json_t *e = qnames[i].kind == 'm' ? json_object() : json_array();
                return json_object_set_new(o, qnames[i].json, e) ? SL_ENOMEM : 0;
            }
    }
    if (!dot) {
        if (!ident(name)) {
            snprintf(err, cap, "The parameter %.100s is not valid for this action.", name);
            return SL_EINVAL;
        }
        if (json_object_get(o, name)) {
            snprintf(err, cap, "The parameter %.100s is given more than once.", name);
            return SL_EINVAL;
        }
        return json_object_set_new(o, name, json_string(value)) ? SL_ENOMEM : 0;
    }
    size_t pn = (size_t)(dot - name);
    const qname *q = NULL;
    for (size_t i = 0; i < sizeof qnames / sizeof qnames[0] && !q; i++)
        if (strlen(qnames[i].query) == pn && strncmp(qnames[i].query, name, pn) == 0) q = &qnames[i];
    char *end;
    long k = strtol(dot + 1, &end, 10);
    if (!q || depth > 1 || dot[1] < '1' || dot[1] > '9' || k < 1 || k > QUERY_INDEX_MAX ||
        (*end != '\0' && *end != '.') || (q->kind == 'l') != (*end == '\0')) {
        snprintf(err, cap, "The parameter %.100s is not valid for this action.", name);
        return SL_EINVAL;
    }
    const char *list = q->kind == 'm' ? NULL : q->json;
    json_t *had = list ? json_object_get(o, list) : NULL;
    if (had && !json_is_array(had)) {
        snprintf(err, cap, "The parameter %.100s is given both as a list and as a value.", list);
        return SL_EINVAL;
    }
    if (q->kind == 'l') {
        if (slot(o, q->json, k, 0) == NULL) return SL_ENOMEM;
        json_t *a = json_object_get(o, q->json);
        if (!json_is_null(json_array_get(a, (size_t)k - 1))) {
            snprintf(err, cap, "The parameter %.100s is given more than once.", name);
            return SL_EINVAL;
        }
        return json_array_set_new(a, (size_t)k - 1, json_string(value)) ? SL_ENOMEM : 0;
    }
    /* A map's entry or a batch entry: an object at index k, whose fields
     * follow (a map entry's value may itself have fields, as
     * MessageAttribute.1.Value.DataType). */
    char listname[96];
    snprintf(listname, sizeof listname, "\x01%s", q->json); /* gathered here, folded into a map at the end */
    json_t *e = slot(o, q->kind == 'm' ? listname : q->json, k, 1);
    if (!e) return SL_ENOMEM;
    const char *rest = end + 1;
    if (q->kind == 'o') return put_param(e, rest, value, depth + 1, err, cap);
    if (strcmp(rest, q->key) == 0 || strcmp(rest, q->value) == 0)
        return put_param(e, rest, value, depth + 1, err, cap);
    size_t vn = strlen(q->value);
    if (strncmp(rest, q->value, vn) == 0 && rest[vn] == '.' && !strchr(rest + vn + 1, '.')) {
        json_t *v = json_object_get(e, q->value);
        if (!v) {
            v = json_object();
            if (!v || json_object_set_new(e, q->value, v)) return SL_ENOMEM;
        }
        if (!json_is_object(v)) {
            snprintf(err, cap, "The parameter %.100s is not valid for this action.", name);
            return SL_EINVAL;
        }
        return put_param(v, rest + vn + 1, value, depth + 1, err, cap);
    }
    snprintf(err, cap, "The parameter %.100s is not valid for this action.", name);
    return SL_EINVAL;
}

/* Folds the gathered map entries ("\x01Attributes": [{Name, Value}]) of o,
 * and of its batch entries, into maps; a hole or an entry without its key
 * or value is an error. */
static int fold_maps(json_t *o, char *err, size_t cap) {
    for (size_t i = 0; i < sizeof qnames / sizeof qnames[0]; i++) {
        const qname *q = &qnames[i];
        if (q->kind == 'o') {
            json_t *a = json_object_get(o, q->json);
            for (size_t x = 0; x < json_array_size(a); x++) {
                json_t *e = json_array_get(a, x);
                if (!json_is_object(e)) {
                    snprintf(err, cap, "%s.%zu is missing.", q->query, x + 1);
                    return SL_EINVAL;
                }
                int rc = fold_maps(e, err, cap);
                if (rc) return rc;
            }
            continue;
        }
        if (q->kind != 'l') {
            char listname[96];
            snprintf(listname, sizeof listname, "\x01%s", q->json);
            json_t *a = json_object_get(o, listname);
            if (!a) continue;
            json_t *m = json_object();
            if (!m) return SL_ENOMEM;
            for (size_t x = 0; x < json_array_size(a); x++) {
                json_t *e = json_array_get(a, x);
                const char *key = json_string_value(json_object_get(e, q->key));
                json_t *v = json_object_get(e, q->value);
                if (!key || !v || json_object_get(m, key)) {
                    snprintf(err, cap, "%s.%zu needs one %s and one %s, and a %s of its own.", q->query,
                             x + 1, q->key, q->value, q->key);
                    json_decref(m);
                    return SL_EINVAL;
                }
                if (json_object_set(m, key, v)) {
                    json_decref(m);
                    return SL_ENOMEM;
                }
            }
            if (json_object_set_new(o, q->json, m) || json_object_del(o, listname)) return SL_ENOMEM;
        } else {
            json_t *a = json_object_get(o, q->json);
            for (size_t x = 0; x < json_array_size(a); x++)
                if (json_is_null(json_array_get(a, x))) {
                    snprintf(err, cap, "%s.%zu is missing.", q->query, x + 1);
                    return SL_EINVAL;
                }
        }
    }
    return 0;
}

/* The one Action of the parameters, of letters and digits (it becomes the
 * answer's tags), into action: 1, or 0 with action empty. */
static int query_action(const char *const *names, const char *const *values, size_t n, char *action,
                        size_t cap) {
    action[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (strcmp(names[i], "Action") != 0) continue;
        size_t an = strlen(values[i]);
        if (action[0] || an >= cap || an == 0 ||
            strspn(values[i], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") != an) {
            action[0] = '\0';
            return 0;
        }
        snprintf(action, cap, "%s", values[i]);
    }
    return action[0] != '\0';
}

json_t *sl_sqs_query_decode(const char *const *names, const char *const *values, size_t n, char *action,
                            size_t action_cap, char *err, size_t cap) {
    if (!query_action(names, values, n, action, action_cap)) {
        snprintf(err, cap, "The request must contain one parameter Action, a name of letters and digits.");
        return NULL;
    }
    json_t *o = json_object();
    if (!o) {
        snprintf(err, cap, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        const char *k = names[i];
        /* The action, and the protocol's own and SigV4's presigned parameters. */
        if (strcmp(k, "Action") == 0 || strcmp(k, "Version") == 0 || strncmp(k, "X-Amz-", 6) == 0 ||
            strcmp(k, "AWSAccessKeyId") == 0 || strcmp(k, "SignatureVersion") == 0 ||
            strcmp(k, "SignatureMethod") == 0 || strcmp(k, "Signature") == 0 || strcmp(k, "Timestamp") == 0 ||
            strcmp(k, "Expires") == 0)
            continue;
        int rc = put_param(o, k, values[i], 0, err, cap);
        if (rc) {
            if (rc == SL_ENOMEM) snprintf(err, cap, "out of memory");
            json_decref(o);
            return NULL;
        }
    }
    int rc = fold_maps(o, err, cap);
    if (rc) {
        if (rc == SL_ENOMEM) snprintf(err, cap, "out of memory");
        json_decref(o);
        return NULL;
    }
    /* CreateQueue's tags are "tags" in the JSON protocol. */
    json_t *tags = json_object_get(o, "Tags");
    if (tags && strcmp(action, "CreateQueue") == 0) {
        json_object_set(o, "tags", tags);
        json_object_del(o, "Tags");
    }
    return o;
}

/* --- XML answers of the query protocol -------------------------------------- */

#define XMLNS "http://queue.amazonaws.com/doc/2012-11-05/"

static int puts_b(buf *b, const char *s) {
    return put(b, s, strlen(s));
}

/* Text with XML's five escapes, and CR as a character reference, which an
 * XML parser would otherwise turn into LF (and break the body's MD5). */
static int put_text(buf *b, const char *s, size_t n) {
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        switch (s[i]) {
        case '&':
            rc = puts_b(b, "&amp;");
            break;
        case '<':
            rc = puts_b(b, "&lt;");
            break;
        case '>':
            rc = puts_b(b, "&gt;");
            break;
        case '"':
            rc = puts_b(b, "&quot;");
            break;
        case '\'':
            rc = puts_b(b, "&apos;");
            break;
        case '\r':
            rc = puts_b(b, "&#xD;");
            break;
        default:
            rc = put(b, &s[i], 1);
        }
    }
    return rc;
}

static int put_elem(buf *b, const char *name, const char *text, size_t n) {
    int rc = puts_b(b, "<");
    if (!rc) rc = puts_b(b, name);
    if (!rc) rc = puts_b(b, ">");
    if (!rc) rc = put_text(b, text, n);
    if (!rc) rc = puts_b(b, "</");
    if (!rc) rc = puts_b(b, name);
    if (!rc) rc = puts_b(b, ">");
    return rc;
}

static int put_open(buf *b, const char *name, int close) {
    int rc = puts_b(b, close ? "</" : "<");
    if (!rc) rc = puts_b(b, name);
    return rc ? rc : puts_b(b, ">");
}

static int put_object(buf *b, json_t *o, const char *action);

/* One field of a result: scalars as elements; the maps and lists of the
 * SQS shapes by their member names. */
static int put_field(buf *b, const char *key, json_t *v, const char *action) {
    char num[32];
    int rc = 0;
    if (!ident(key)) return 0; /* no element can be named so: left out */
    if (json_is_string(v)) return put_elem(b, key, json_string_value(v), json_string_length(v));
    if (json_is_integer(v)) {
        snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
        return put_elem(b, key, num, strlen(num));
    }
    if (json_is_boolean(v))
        return put_elem(b, key, json_is_true(v) ? "true" : "false", json_is_true(v) ? 4 : 5);
    if (json_is_object(v)) {
        /* Maps: Attributes (Name/Value), MessageAttributes (Name and a
         * Value with fields), Tags (Key/Value). */
        const char *member = strcmp(key, "Attributes") == 0          ? "Attribute"
                             : strcmp(key, "MessageAttributes") == 0 ? "MessageAttribute"
                             : strcmp(key, "Tags") == 0              ? "Tag"
                                                                     : NULL;
        const char *kname = strcmp(key, "Tags") == 0 ? "Key" : "Name";
        if (!member) {
            if ((rc = put_open(b, key, 0)) == 0 && (rc = put_object(b, v, action)) == 0)
                rc = put_open(b, key, 1);
            return rc;
        }
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            if (rc == 0) rc = put_open(b, member, 0);
            if (rc == 0) rc = put_elem(b, kname, k, strlen(k));
            if (rc == 0) rc = put_field(b, "Value", x, action);
            if (rc == 0) rc = put_open(b, member, 1);
        }
        return rc;
    }
    if (json_is_array(v)) {
        char entry[96];
        const char *member = strcmp(key, "QueueUrls") == 0 || strcmp(key, "queueUrls") == 0 ? "QueueUrl"
                             : strcmp(key, "Messages") == 0                                 ? "Message"
                             : strcmp(key, "Failed") == 0  ? "BatchResultErrorEntry"
                             : strcmp(key, "Results") == 0 ? "ListMessageMoveTasksResultEntry"
                                                           : NULL;
        if (strcmp(key, "Successful") == 0) {
            snprintf(entry, sizeof entry, "%sResultEntry", action);
            member = entry;
        }
        if (!member) member = key;
        for (size_t i = 0; i < json_array_size(v) && rc == 0; i++)
            rc = put_field(b, member, json_array_get(v, i), action);
        return rc;
    }
    return 0; /* null: left out */
}

static int put_object(buf *b, json_t *o, const char *action) {
    const char *k;
    json_t *v;
    int rc = 0;
    json_object_foreach(o, k, v) {
        if (rc == 0) rc = put_field(b, k, v, action);
    }
    return rc;
}

char *sl_sqs_query_answer(const char *action, json_t *result, const char *request_id, size_t *len) {
    buf b = {0};
    int rc = puts_b(&b, "<?xml version=\"1.0\"?><");
    if (!rc) rc = puts_b(&b, action);
    if (!rc) rc = puts_b(&b, "Response xmlns=\"" XMLNS "\">");
    if (!rc && json_object_size(result) > 0) {
        char tag[96];
        snprintf(tag, sizeof tag, "%sResult", action);
        if ((rc = put_open(&b, tag, 0)) == 0 && (rc = put_object(&b, result, action)) == 0)
            rc = put_open(&b, tag, 1);
    }
    if (!rc) rc = puts_b(&b, "<ResponseMetadata>");
    if (!rc) rc = put_elem(&b, "RequestId", request_id, strlen(request_id));
    if (!rc) rc = puts_b(&b, "</ResponseMetadata></");
    if (!rc) rc = puts_b(&b, action);
    if (!rc) rc = puts_b(&b, "Response>");
    if (!rc) rc = put(&b, "", 1);
    if (rc) {
        free(b.p);
        return NULL;
    }
    *len = b.n - 1;
    return (char *)b.p;
}

char *sl_sqs_query_error(const char *type, const char *code, const char *message, const char *request_id,
                         size_t *len) {
    buf b = {0};
    int rc = puts_b(&b, "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"" XMLNS "\"><Error>");
    if (!rc) rc = put_elem(&b, "Type", type, strlen(type));
    if (!rc) rc = put_elem(&b, "Code", code, strlen(code));
    if (!rc) rc = put_elem(&b, "Message", message, strlen(message));
    if (!rc) rc = puts_b(&b, "<Detail/></Error>");
    if (!rc) rc = put_elem(&b, "RequestId", request_id, strlen(request_id));
    if (!rc) rc = puts_b(&b, "</ErrorResponse>");
    if (!rc) rc = put(&b, "", 1);
    if (rc) {
        free(b.p);
        return NULL;
    }
    *len = b.n - 1;
    return (char *)b.p;
}

static int hexval(char c) {
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* Decodes %XX and '+' of s in place. 0, or SL_EINVAL for a bad escape or
 * an escaped NUL. */
static int form_unescape(char *s) {
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p == '+') {
            *o++ = ' ';
        } else if (*p == '%') {
            int hi = hexval(p[1]), lo = hi < 0 ? -1 : hexval(p[2]);
            if (lo < 0 || (hi == 0 && lo == 0)) return SL_EINVAL;
            *o++ = (char)(hi << 4 | lo);
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return 0;
}

long sl_sqs_form_split(char *s, char **names, char **values, size_t cap) {
    size_t n = 0;
    for (char *p = s; *p;) {
        char *amp = strchr(p, '&'), *next = amp ? amp + 1 : p + strlen(p);
        if (amp) *amp = '\0';
        if (*p) {
            if (n == cap) return SL_EINVAL;
            char *eq = strchr(p, '=');
            if (eq) *eq = '\0';
            names[n] = p;
            values[n] = eq ? eq + 1 : p + strlen(p);
            if (form_unescape(names[n]) || form_unescape(values[n])) return SL_EINVAL;
            n++;
        }
        p = next;
    }
    return (long)n;
}
