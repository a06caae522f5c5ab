/* fuzz_ev_token.c: libFuzzer target for the event log's continuation tokens
 * (src/events/page.c) and the times of its queries (src/events/event.c).
 *
 * Input: a token's body, the bytes before its MAC (page.c describes them).
 * The target signs it with a fixed secret, so the fuzzer reaches the field
 * decoder behind the MAC, and requires that a token read back is written
 * again byte for byte: a token has one spelling. The input is also read as
 * a token string with no MAC made for it (refused unless it forged one) and
 * as a time, which must format and parse back to the same microsecond.
 *
 *     make fuzz && build/fuzz/fuzz_ev_token fuzz/corpus/ev_token */
#include <openssl/hmac.h>
#include <stdlib.h>
#include <string.h>

#include "events/events.h"

static const unsigned char secret[SL_EV_SECRET_LEN] = "fuzz-secret-fuzz-secret-fuzz-sec";

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size) {
    unsigned char raw[3072];
    char tok[SL_B64URL_LEN(sizeof raw) + 3], again[SL_EV_TOKEN_MAX + 1], s[SL_EV_TOKEN_MAX + 1];
    sl_ev_query q;
    if (size + 16 > sizeof raw) return 0;
    memcpy(raw, data, size);
    unsigned char mac[32];
    unsigned int len = sizeof mac;
    HMAC(EVP_sha256(), secret, sizeof secret, raw, size, mac, &len);
    memcpy(raw + size, mac, 16);
    memcpy(tok, "v1", 2);
    size_t n = 2 + sl_b64url_encode(raw, size + 16, tok + 2);
    if (n <= SL_EV_TOKEN_MAX && sl_ev_token_read(tok, n, secret, &q) == 0) {
        long m = sl_ev_token_make(&q, secret, again);
        if (m != (long)n || memcmp(tok, again, n) != 0) abort();
    }

    size_t k = size < SL_EV_TOKEN_MAX ? size : SL_EV_TOKEN_MAX;
    memcpy(s, data, k);
    s[k] = '\0';
    if (sl_ev_token_read(s, strlen(s), secret, &q) == 0) {
        long m = sl_ev_token_make(&q, secret, again);
        if (m != (long)strlen(s) || memcmp(s, again, (size_t)m) != 0) abort();
    }
    int64_t us;
    if (sl_ev_time_parse(s, &us) == 0) {
        char t[SL_EV_TIME_LEN + 1];
        int64_t back;
        if (sl_ev_time_format(us, t) != SL_EV_TIME_LEN || sl_ev_time_parse(t, &back) != 0 || back != us)
            abort();
    }
    return 0;
}
