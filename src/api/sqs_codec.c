/* sqs_codec.c: the pure pieces of the SQS front end; see sqs.h. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "sqs.h"

void sl_sqs_md5_hex(const void *p, size_t n, char out[33]) {
    static const char digit[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!EVP_Digest(p, n, md, &len, EVP_md5(), NULL)) len = 0;
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
