/* fuzz_auth.c: libFuzzer target for the parsers of src/auth.
 *
 * Input: a request as text. Line 1 the method, line 2 the raw path, line 3
 * the raw query, then "Name: value" header lines up to an empty line, then
 * the body. The request is verified against account "dev" (keys of bytes
 * 0..63 and 64..127, those of tests/unit/auth_vectors) at the time of its
 * X-Amz-Date, so seeds from real signers reach the signature code. The
 * whole input is also fed to the time and levels parsers, and the
 * Authorization header and the query's X-Amz-Credential to the SigV4
 * account parser (which must name an account only when verification could).
 *
 *     make fuzz && build/fuzz/fuzz_auth fuzz/corpus/auth */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/auth.h"
#include "auth/auth_int.h"

#define MAX_HEADERS 24

static struct sl_auth_key keys[2];
static struct sl_auth_keyring ring = {"dev", keys, 2};

static void init_keys(void) {
    unsigned char raw[SL_AUTH_KEY_BYTES];
    char s[SL_AUTH_KEY_CHARS + 1];
    for (int k = 0; k < 2; k++) {
        for (int i = 0; i < SL_AUTH_KEY_BYTES; i++)
            raw[i] = (unsigned char)(64 * k + i);
        sl_b64url_encode(raw, sizeof raw, s);
        sl_auth_key_init(&keys[k], k ? "secondary" : "primary", s);
    }
}

/* Cuts the next line out of *p (NUL-terminating it in place). */
static char *line(char **p, char *end) {
    char *s = *p;
    if (s >= end) return NULL;
    char *nl = memchr(s, '\n', (size_t)(end - s));
    if (!nl) nl = end;
    *nl = '\0';
    *p = nl + 1;
    return s;
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    static int ready;
    if (!ready) {
        init_keys();
        ready = 1;
    }
    char *buf = malloc(size + 1);
    if (!buf) return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';

    int64_t ms;
    unsigned levels;
    sl_auth_time_parse(buf, size, &ms);
    sl_auth_levels_parse(buf, size, &levels);

    char *p = buf, *end = buf + size;
    char *method = line(&p, end), *path = line(&p, end), *query = line(&p, end);
    struct sl_auth_header h[MAX_HEADERS];
    size_t nh = 0;
    int64_t now = 1795255200000LL;
    char *l;
    while (nh < MAX_HEADERS && (l = line(&p, end)) && *l) {
        char *colon = strchr(l, ':');
        if (!colon) continue;
        *colon = '\0';
        h[nh].name = l;
        h[nh].value = colon + 1 + strspn(colon + 1, " ");
        if (strcmp(l, "X-Amz-Date") == 0 && strlen(h[nh].value) == 16) {
            char iso[21];
            const char *v = h[nh].value;
            memcpy(iso, v, 4), iso[4] = '-', memcpy(iso + 5, v + 4, 2), iso[7] = '-';
            memcpy(iso + 8, v + 6, 2), iso[10] = 'T', memcpy(iso + 11, v + 9, 2), iso[13] = ':';
            memcpy(iso + 14, v + 11, 2), iso[16] = ':', memcpy(iso + 17, v + 13, 2), iso[19] = 'Z';
            sl_auth_time_parse(iso, 20, &now);
        }
        nh++;
    }
    if (method && path && query) {
        struct sl_auth_request rq = {
            .method = method,
            .path = path,
            .path_len = strlen(path),
            .query = query,
            .query_len = strlen(query),
            .headers = h,
            .n_headers = nh,
            .body = p < end ? p : "",
            .body_len = p < end ? (size_t)(end - p) : 0,
            .now_ms = now,
        };
        struct sl_auth_cred c;
        int verified = sl_auth_verify(&rq, &ring, 0, &c) == 0;
        if (verified) sl_auth_check(&c, 'r', "orders");

        char account[SL_NAME_MAX + 1], cred[256];
        const char *authz = NULL;
        for (size_t i = 0; i < nh; i++)
            if (strcasecmp(h[i].name, "Authorization") == 0) authz = h[i].value;
        int named = authz ? sl_auth_sigv4_account(authz, NULL, account)
                    : sl__query_param(query, strlen(query), "X-Amz-Credential", cred, sizeof cred) > 0
                        ? sl_auth_sigv4_account(NULL, cred, account)
                        : -1;
        /* A request that verified by SigV4 names its account. */
        if (verified && c.scheme == SL_AUTH_SIGV4 && (named != 0 || strcmp(account, "dev") != 0)) abort();
    }
    free(buf);
    return 0;
}
