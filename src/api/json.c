/* json.c: JSON text the APIs write: UTF-8 checks, bodies as JSON strings,
 * and a writer that builds an answer's text as it goes (sl_jw). Apart from
 * the rest of the API helpers (req.c) so that a unit test links it alone. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

void sl_jw_int(sl_jw *w, int64_t v) {
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%lld", (long long)v);
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

/* A JSON string of bytes that should be UTF-8; invalid sequences (data that
 * did not come through this API) become U+FFFD rather than a failure. */
json_t *sl_api_json_text(const void *p, size_t n) {
    if (sl_api_utf8_valid(p, n)) return json_stringn_nocheck(p, n);
    const unsigned char *s = p;
    char *buf = malloc(n * 3 + 1);
    if (!buf) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_char(s + i, n - i);
        if (k) {
            memcpy(buf + o, s + i, k);
            o += k;
            i += k;
        } else {
            memcpy(buf + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    json_t *j = json_stringn_nocheck(buf, o);
    free(buf);
    return j;
}
