/* json.c: JSON text the APIs write: UTF-8 checks, bodies as JSON strings,
 * and a writer that builds an answer's text as it goes (sl_jw). Apart from
 * the rest of the API helpers (req.c) so that a unit test links it alone. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../sluice.h"
#include "json.h"

/* Length of the valid UTF-8 sequence at s, or 0: no overlong forms, no
 * surrogates, nothing above U+10FFFF. */
static size_t utf8_char(const unsigned char *s, size_t n) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned min, cp;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2, min = 0x80, cp = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3, min = 0x800, cp = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4, min = 0x10000, cp = c & 0x07;
    else
        return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

int sl_api_utf8_valid(const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_char(s + i, n - i);
        if (!k) return 0;
        i += k;
    }
    return 1;
}

/* --- Writing JSON as it goes ----------------------------------------------- */

static void jw_add(sl_jw *w, const void *s, size_t n) {
    if (w->oom || n == 0) return;
    if (w->cap - w->n < n) {
        size_t cap = w->cap ? w->cap : 1024;
        while (cap - w->n < n)
            cap *= 2;
        char *p = realloc(w->p, cap);
        if (!p) {
            w->oom = 1;
            return;
        }
        w->p = p;
        w->cap = cap;
    }
    memcpy(w->p + w->n, s, n);
    w->n += n;
}

/* Before a value or a key: the comma that separates it from the last. */
static void jw_sep(sl_jw *w) {
    if (w->keyed) {
        w->keyed = 0;
        return;
    }
    if (w->more >> w->depth & 1) jw_add(w, ",", 1);
    w->more |= 1u << w->depth;
}

void sl_jw_open(sl_jw *w, char c) {
    jw_sep(w);
    jw_add(w, &c, 1);
    if (w->depth < 31)
        w->depth++;
    else
        w->oom = 1;
    w->more &= ~(1u << w->depth);
}

void sl_jw_close(sl_jw *w, char c) {
    jw_add(w, &c, 1);
    if (w->depth > 0) w->depth--;
}

void sl_jw_key(sl_jw *w, const char *key) {
    jw_sep(w);
    jw_add(w, "\"", 1);
    jw_add(w, key, strlen(key));
    jw_add(w, "\":", 2);
    w->keyed = 1;
}

void sl_jw_str(sl_jw *w, const void *p, size_t n) {
    static const char hex[] = "0123456789ABCDEF"; /* as jansson writes them */
    const unsigned char *s = p ? p : (const void *)"";
    jw_sep(w);
    jw_add(w, "\"", 1);
    size_t i = 0, from = 0; /* s[from, i) needs no escape */
    while (i < n) {
        unsigned c = s[i];
        size_t k = c >= 0x20 && c != '"' && c != '\\' ? (c < 0x80 ? 1 : utf8_char(s + i, n - i)) : 0;
        if (k) {
            i += k;
            continue;
        }
        jw_add(w, s + from, i - from);
        if (c >= 0x80) {
            jw_add(w, "\xEF\xBF\xBD", 3); /* U+FFFD for a byte of no valid sequence */
        } else {
            char e[6] = {'\\', (char)c, 0, 0, 0, 0};
            size_t en = 2;
            switch (c) {
            case '"':
            case '\\':
                break;
            case '\b':
                e[1] = 'b';
                break;
            case '\f':
                e[1] = 'f';
                break;
            case '\n':
                e[1] = 'n';
                break;
            case '\r':
                e[1] = 'r';
                break;
            case '\t':
                e[1] = 't';
                break;
            default:
                e[1] = 'u', e[2] = '0', e[3] = '0', e[4] = hex[c >> 4], e[5] = hex[c & 15], en = 6;
            }
            jw_add(w, e, en);
        }
        from = ++i;
    }
    jw_add(w, s + from, n - from);
    jw_add(w, "\"", 1);
}

void sl_jw_cstr(sl_jw *w, const char *s) {
    sl_jw_str(w, s, strlen(s));
}

void sl_jw_kstr(sl_jw *w, const char *key, const char *s) {
    sl_jw_key(w, key);
    sl_jw_cstr(w, s);
}

void sl_jw_kjson(sl_jw *w, const char *key, const json_t *j) {
    sl_jw_key(w, key);
    sl_jw_json(w, j);
}

void sl_jw_int(sl_jw *w, int64_t v) {
    char tmp[20];
    int n = sl_fmt_i64(tmp, v);
    jw_sep(w);
    jw_add(w, tmp, (size_t)n);
}

void sl_jw_json(sl_jw *w, const json_t *j) {
    char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
    jw_sep(w);
    if (!text)
        w->oom = 1;
    else
        jw_add(w, text, strlen(text));
    free(text);
}

char *sl_jw_take(sl_jw *w, size_t *len) {
    char *p = w->oom ? NULL : w->p;
    if (!p) free(w->p);
    *len = p ? w->n : 0;
    memset(w, 0, sizeof *w);
    return p;
}

/* --- Reading JSON fast ------------------------------------------------------- */

/* A parser of the plain JSON that requests carry, into jansson's tree:
 * jansson's own reads a byte at a time through a callback and cost more
 * than anything else in a batch request. It is strict on purpose and
 * gives up (NULL) on anything it does not read exactly as jansson would:
 * a number with a fraction or an exponent, a \u0000, a duplicate key where
 * those are refused, deep nesting, any error; sl_json_parse then asks
 * jansson, whose answer (and error text) stands. */
typedef struct {
    const unsigned char *p, *end;
    size_t flags;
    int depth;
} jr;

#define JR_DEPTH 64

static json_t *jr_value(jr *r);

static void jr_ws(jr *r) {
    while (r->p < r->end && (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
        r->p++;
}

static int jr_hex4(const unsigned char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned c = s[i], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            d = (c | 0x20) - 'a' + 10;
        else
            return -1;
        v = v << 4 | d;
    }
    *out = v;
    return 0;
}

/* The string at r->p (past its opening quote) into a NUL-terminated copy:
 * *out (malloc'd) and *len. -1 to give up. */
static int jr_string(jr *r, char **out, size_t *len) {
    const unsigned char *s = r->p, *q = s;
    while (q < r->end && *q != '"' && *q != '\\' && *q >= 0x20) {
        if (*q < 0x80) {
            q++;
            continue;
        }
        size_t k = utf8_char(q, (size_t)(r->end - q));
        if (!k) return -1;
        q += k;
    }
    if (q >= r->end || *q < 0x20) return -1;
    size_t cap = (size_t)(q - s) + 16, n = (size_t)(q - s);
    char *b = malloc(cap + 1);
    if (!b) return -1;
    memcpy(b, s, n);
    while (q < r->end && *q != '"') { /* the rest, with its escapes */
        if (cap - n < 4) {
            char *nb = realloc(b, (cap *= 2) + 1);
            if (!nb) goto fail;
            b = nb;
        }
        if (*q == '\\') {
            if (r->end - q < 2) goto fail;
            unsigned c = q[1], cp;
            q += 2;
            switch (c) {
            case '"':
            case '\\':
            case '/':
                b[n++] = (char)c;
                continue;
            case 'b':
                b[n++] = '\b';
                continue;
            case 'f':
                b[n++] = '\f';
                continue;
            case 'n':
                b[n++] = '\n';
                continue;
            case 'r':
                b[n++] = '\r';
                continue;
            case 't':
                b[n++] = '\t';
                continue;
            case 'u':
                break;
            default:
                goto fail;
            }
            if (r->end - q < 4 || jr_hex4(q, &cp)) goto fail;
            q += 4;
            if (cp >= 0xDC00 && cp <= 0xDFFF) goto fail;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (r->end - q < 6 || q[0] != '\\' || q[1] != 'u' || jr_hex4(q + 2, &lo) || lo < 0xDC00 ||
                    lo > 0xDFFF)
                    goto fail;
                q += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp == 0) goto fail; /* jansson decides, by JSON_ALLOW_NUL */
            if (cp < 0x80) {
                b[n++] = (char)cp;
            } else if (cp < 0x800) {
                b[n++] = (char)(0xC0 | cp >> 6);
                b[n++] = (char)(0x80 | (cp & 0x3F));
            } else if (cp < 0x10000) {
                b[n++] = (char)(0xE0 | cp >> 12);
                b[n++] = (char)(0x80 | (cp >> 6 & 0x3F));
                b[n++] = (char)(0x80 | (cp & 0x3F));
            } else {
                b[n++] = (char)(0xF0 | cp >> 18);
                b[n++] = (char)(0x80 | (cp >> 12 & 0x3F));
                b[n++] = (char)(0x80 | (cp >> 6 & 0x3F));
                b[n++] = (char)(0x80 | (cp & 0x3F));
            }
            continue;
        }
        if (*q < 0x20) goto fail;
        size_t k = *q < 0x80 ? 1 : utf8_char(q, (size_t)(r->end - q));
        if (!k) goto fail; /* k <= 4: room was made above */
        memcpy(b + n, q, k);
        n += k;
        q += k;
    }
    if (q >= r->end) goto fail; /* no closing quote */
    b[n] = '\0';
    r->p = q + 1;
    *out = b;
    *len = n;
    return 0;
fail:
    free(b);
    return -1;
}

static json_t *jr_number(jr *r) {
    const unsigned char *s = r->p;
    int neg = s < r->end && *s == '-';
    if (neg) s++;
    if (s >= r->end || *s < '0' || *s > '9' || (*s == '0' && s + 1 < r->end && s[1] >= '0' && s[1] <= '9'))
        return NULL;
    uint64_t v = 0;
    for (; s < r->end && *s >= '0' && *s <= '9'; s++) {
        if (v > (UINT64_MAX - 9) / 10) return NULL;
        v = v * 10 + (uint64_t)(*s - '0');
    }
    if (s < r->end && (*s == '.' || *s == 'e' || *s == 'E')) return NULL; /* reals: jansson's */
    if (v > (uint64_t)INT64_MAX + (uint64_t)neg) return NULL;
    r->p = s;
    return json_integer(neg ? (json_int_t)(0 - v) : (json_int_t)v);
}

static json_t *jr_value(jr *r) {
    jr_ws(r);
    if (r->p >= r->end) return NULL;
    unsigned c = *r->p;
    if (c == '{' || c == '[') {
        if (++r->depth > JR_DEPTH) return NULL;
        r->p++;
        json_t *v = c == '{' ? json_object() : json_array();
        jr_ws(r);
        if (v && r->p < r->end && *r->p == (c == '{' ? '}' : ']')) {
            r->p++;
            r->depth--;
            return v;
        }
        while (v) {
            json_t *item;
            if (c == '{') {
                char *key;
                size_t klen;
                jr_ws(r);
                if (r->p >= r->end || *r->p != '"') break;
                r->p++;
                if (jr_string(r, &key, &klen)) break;
                jr_ws(r);
                int ok = r->p < r->end && *r->p == ':' &&
                         !((r->flags & JSON_REJECT_DUPLICATES) && json_object_get(v, key));
                r->p++;
                item = ok ? jr_value(r) : NULL;
                ok = item && json_object_set_new_nocheck(v, key, item) == 0;
                free(key);
                if (!ok) break;
            } else {
                if (!(item = jr_value(r)) || json_array_append_new(v, item)) break;
            }
            jr_ws(r);
            if (r->p >= r->end) break;
            if (*r->p == ',') {
                r->p++;
                continue;
            }
            if (*r->p != (c == '{' ? '}' : ']')) break;
            r->p++;
            r->depth--;
            return v;
        }
        json_decref(v);
        return NULL;
    }
    if (c == '"') {
        char *s;
        size_t n;
        r->p++;
        if (jr_string(r, &s, &n)) return NULL;
        json_t *v = json_stringn_nocheck(s, n);
        free(s);
        return v;
    }
    static const struct {
        const char *word;
        size_t n;
    } words[] = {{"true", 4}, {"false", 5}, {"null", 4}};
    for (int i = 0; i < 3; i++)
        if ((size_t)(r->end - r->p) >= words[i].n && memcmp(r->p, words[i].word, words[i].n) == 0) {
            r->p += words[i].n;
            return i == 0 ? json_true() : i == 1 ? json_false() : json_null();
        }
    return jr_number(r);
}

json_t *sl_json_fast(const void *p, size_t n, size_t flags) {
    jr r = {p, (const unsigned char *)p + n, flags, 0};
    json_t *v = jr_value(&r);
    jr_ws(&r);
    if (v && (r.p != r.end || (!(flags & JSON_DECODE_ANY) && !json_is_object(v) && !json_is_array(v)))) {
        json_decref(v);
        v = NULL;
    }
    return v;
}

json_t *sl_json_parse(const void *p, size_t n, size_t flags, json_error_t *err) {
    json_t *v = sl_json_fast(p, n, flags);
    if (!v) return json_loadb(p, n, flags, err);
    if (err) { /* as jansson leaves it after a success */
        memset(err, 0, sizeof *err);
        err->line = err->column = err->position = -1;
        snprintf(err->source, sizeof err->source, "<buffer>");
    }
    return v;
}
