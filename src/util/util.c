/* util.c: the clock, randomness, base64url, logging and name checks. */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "../sluice.h"

const char *sl_strerror(int rc) {
    switch (rc) {
    case SL_OK: return "OK";
#define SL_ERRNO_NAME(name, value, text) case SL_##name: return #name;
    SL_ERRNO_MAP(SL_ERRNO_NAME)
#undef SL_ERRNO_NAME
    }
    return "E?";
}

const char *sl_errmsg(int rc) {
    switch (rc) {
    case SL_OK: return "success";
#define SL_ERRNO_TEXT(name, value, text) case SL_##name: return text;
    SL_ERRNO_MAP(SL_ERRNO_TEXT)
#undef SL_ERRNO_TEXT
    }
    return "an unknown error";
}

/* The manual clock is read far more often than it is set, but it is only
 * used by tests, so one mutex is simpler than atomics and fast enough. */
static pthread_mutex_t clock_mu = PTHREAD_MUTEX_INITIALIZER;
static int clock_is_manual;
static int64_t clock_manual_ms;

int64_t sl_now_ms(void) {
    if (__atomic_load_n(&clock_is_manual, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&clock_mu);
        int64_t ms = clock_manual_ms;
        pthread_mutex_unlock(&clock_mu);
        return ms;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t (*mono_fn)(void);

int64_t sl_mono_ms(void) {
    int64_t (*fn)(void) = __atomic_load_n(&mono_fn, __ATOMIC_ACQUIRE);
    if (fn) return fn();
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void sl_mono_hook(int64_t (*fn)(void)) {
    __atomic_store_n(&mono_fn, fn, __ATOMIC_RELEASE);
}

static int (*alloc_fail)(size_t);

static int alloc_fails(size_t n) {
    int (*fn)(size_t) = __atomic_load_n(&alloc_fail, __ATOMIC_ACQUIRE);
    return fn && fn(n);
}

void *sl_malloc(size_t n) {
    return alloc_fails(n) ? NULL : malloc(n);
}

void *sl_calloc(size_t n, size_t size) {
    return alloc_fails(n * size) ? NULL : calloc(n, size);
}

void *sl_realloc(void *p, size_t n) {
    return alloc_fails(n) ? NULL : realloc(p, n);
}

void sl_alloc_hook(int (*fail)(size_t)) {
    __atomic_store_n(&alloc_fail, fail, __ATOMIC_RELEASE);
}

void sl_clock_manual(int on) {
    pthread_mutex_lock(&clock_mu);
    if (on && !clock_is_manual) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        clock_manual_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    }
    __atomic_store_n(&clock_is_manual, on, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&clock_mu);
}

void sl_clock_set_ms(int64_t ms) {
    pthread_mutex_lock(&clock_mu);
    clock_manual_ms = ms;
    pthread_mutex_unlock(&clock_mu);
}

void sl_clock_advance_ms(int64_t ms) {
    pthread_mutex_lock(&clock_mu);
    clock_manual_ms += ms;
    pthread_mutex_unlock(&clock_mu);
}

int sl_random_bytes(void *buf, size_t n) {
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR) continue;
            return SL_EIO;
        }
        p += got;
        n -= (size_t)got;
    }
    return SL_OK;
}

/* A per-thread xorshift64* generator, seeded from the CSPRNG on first use.
 * Only for spreading contention (random choice within a bucket). */
uint64_t sl_random_u64(void) {
    static __thread uint64_t s;
    if (s == 0) {
        if (sl_random_bytes(&s, sizeof s) != 0 || s == 0) s = 0x9E3779B97F4A7C15ull ^ (uint64_t)(uintptr_t)&s;
    }
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 0x2545F4914F6CDD1Dull;
}

static const char b64url_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

size_t sl_b64url_encode(const void *in, size_t n, char *out) {
    const unsigned char *s = in;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        out[o++] = b64url_chars[v >> 18 & 63];
        out[o++] = b64url_chars[v >> 12 & 63];
        out[o++] = b64url_chars[v >> 6 & 63];
        out[o++] = b64url_chars[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)s[i] << 16;
        out[o++] = b64url_chars[v >> 18 & 63];
        out[o++] = b64url_chars[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8;
        out[o++] = b64url_chars[v >> 18 & 63];
        out[o++] = b64url_chars[v >> 12 & 63];
        out[o++] = b64url_chars[v >> 6 & 63];
    }
    out[o] = '\0';
    return o;
}

static int b64url_val(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '-') return 62;
    if (c == '_') return 63;
    return -1;
}

long sl_b64url_decode(const char *in, size_t n, void *out, size_t cap) {
    unsigned char *d = out;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    if (n % 4 == 1) return SL_EINVAL;
    for (size_t i = 0; i < n; i++) {
        int v = b64url_val((unsigned char)in[i]);
        if (v < 0) return SL_EINVAL;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o >= cap) return SL_EINVAL;
            d[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    /* Leftover bits must be zero, so each byte string has one encoding. */
    if (acc != 0) return SL_EINVAL;
    return (long)o;
}

int sl_log_level = SL_INFO;

void sl_log(int level, const char *fmt, ...) {
    if (level > sl_log_level) return;
    static const char *words[] = {"error", "info", "debug"};
    char ts[32];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    fprintf(stderr, "%s.%03ldZ %s %s\n", ts, now.tv_nsec / 1000000, words[level < 0 ? 0 : level > 2 ? 2 : level],
            line);
}

int sl_name_valid(const char *s) {
    size_t n = 0;
    if (!s) return 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= SL_NAME_MAX) return 0;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-'))
            return 0;
    }
    return n > 0;
}
