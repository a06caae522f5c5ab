/* json.h: JSON text the APIs write (json.c). */
#ifndef SL_API_JSON_H
#define SL_API_JSON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

/* Whether p[0, n) is UTF-8: no overlong forms, no surrogates, nothing
 * above U+10FFFF. */
int sl_api_utf8_valid(const void *p, size_t n);
/* A JSON text written as it goes, for the answers that carry many
 * messages: building them as a jansson tree first cost an allocation for
 * every value and most of the time of a batch's answer. Keys are plain
 * ASCII names (written as given); string values are escaped as jansson
 * escapes them; a byte of no valid UTF-8 sequence becomes U+FFFD (data
 * that did not come through this API).
 * After an allocation fails every write is dropped and sl_jw_take answers
 * NULL. Nesting is at most 31 deep. */
typedef struct {
    char *p;
    size_t n, cap;
    int oom;
    int depth;
    int keyed;     /* a key was written: its value needs no comma */
    uint32_t more; /* bit d: level d holds a value already */
} sl_jw;
void sl_jw_open(sl_jw *w, char c);  /* '{' or '[' */
void sl_jw_close(sl_jw *w, char c); /* '}' or ']' */
void sl_jw_key(sl_jw *w, const char *key);
void sl_jw_str(sl_jw *w, const void *s, size_t n);
void sl_jw_cstr(sl_jw *w, const char *s);
void sl_jw_int(sl_jw *w, int64_t v);
/* A key and its string value. */
void sl_jw_kstr(sl_jw *w, const char *key, const char *s);
/* A value given as a jansson tree (the answers' rarer parts). */
void sl_jw_json(sl_jw *w, const json_t *j);
/* A key and its value as a jansson tree. */
void sl_jw_kjson(sl_jw *w, const char *key, const json_t *j);
/* The text (the caller frees it) and its length; NULL when out of memory. */
char *sl_jw_take(sl_jw *w, size_t *len);
/* json_loadb's answer, faster for the plain JSON of requests: a parser
 * of its own reads them, and hands anything it does not read exactly as
 * jansson would (reals, \u0000, errors) to json_loadb. */
json_t *sl_json_parse(const void *p, size_t n, size_t flags, json_error_t *err);
/* That parser alone: NULL where it gives up (tests compare it with jansson). */
json_t *sl_json_fast(const void *p, size_t n, size_t flags);

#endif
