/* cql_vectors.h: loading the golden CQL vectors for the unit tests.
 *
 * The vectors live outside the repo, in $SLUICE_SHARED/cql-vectors, or by
 * default ../shared/cql-vectors relative to the repo root (tests run from
 * the repo root). Header-only and static: each test binary includes it once. */
#ifndef SL_TEST_CQL_VECTORS_H
#define SL_TEST_CQL_VECTORS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

static inline const char *vectors_dir(void) {
    static char path[4096];
    const char *shared = getenv("SLUICE_SHARED");
    snprintf(path, sizeof(path), "%s/cql-vectors", shared && *shared ? shared : "../shared");
    return path;
}

/* Reads a JSONL file into an array of objects; the caller json_decref()s it.
 * Returns NULL when the file cannot be read or a line does not parse. */
static inline json_t *load_jsonl(const char *rel) {
    char path[4600];
    snprintf(path, sizeof(path), "%s/%s", vectors_dir(), rel);
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s (set SLUICE_SHARED)\n", path);
        return NULL;
    }
    json_t *arr = json_array();
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) > 0) {
        if (n == 1 && line[0] == '\n') continue;
        json_error_t err;
        json_t *o = json_loads(line, 0, &err);
        if (!o) {
            fprintf(stderr, "%s: %s\n", path, err.text);
            json_decref(arr);
            arr = NULL;
            break;
        }
        json_array_append_new(arr, o);
    }
    free(line);
    fclose(f);
    return arr;
}

/* Hex to a fresh malloc'd buffer of exactly the decoded size (so ASan sees
 * any read past its end). The caller frees it. */
static inline uint8_t *unhex(const char *hex, size_t *len) {
    size_t n = strlen(hex) / 2;
    uint8_t *out = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    *len = n;
    return out;
}

static inline void tohex(const uint8_t *p, size_t n, char *out) {
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
    out[2 * n] = '\0';
}

static inline const char *jstr(json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

#endif
