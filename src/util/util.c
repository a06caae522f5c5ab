/* util.c: the clock, randomness, base64url, logging and name checks. */
#include <errno.h>
#include <openssl/evp.h>
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

void sl_thread_name(const char *name) {
    pthread_setname_np(pthread_self(), name);
}

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

void sl_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(cv, mu, &ts);
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

int64_t sl_now_us(void) {
    if (__atomic_load_n(&clock_is_manual, __ATOMIC_ACQUIRE)) return sl_now_ms() * 1000;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
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

/* This thread's digest contexts, one per algorithm, freed when it exits. */
enum { MD_SLOTS = 4 };
struct md_slots {
    const EVP_MD *md[MD_SLOTS];
    EVP_MD_CTX *ctx[MD_SLOTS];
};
static pthread_key_t md_key;
static pthread_once_t md_once = PTHREAD_ONCE_INIT;
static __thread struct md_slots *md_mine;

static void md_slots_free(void *p) {
    struct md_slots *m = p;
    for (int i = 0; i < MD_SLOTS; i++)
        EVP_MD_CTX_free(m->ctx[i]);
    free(m);
}

static void md_key_make(void) {
    if (pthread_key_create(&md_key, md_slots_free) != 0) abort();
}

static EVP_MD_CTX *md_ctx(const EVP_MD *md) {
    struct md_slots *m = md_mine;
    if (!m) {
        pthread_once(&md_once, md_key_make);
        if (!(m = calloc(1, sizeof *m))) return NULL;
        if (pthread_setspecific(md_key, m) != 0) {
            free(m);
            return NULL;
        }
        md_mine = m;
    }
    int i = 0;
    while (i < MD_SLOTS && m->md[i] && m->md[i] != md)
        i++;
    if (i == MD_SLOTS) i = 0; /* more algorithms than slots: take turns */
    if (!m->ctx[i] && !(m->ctx[i] = EVP_MD_CTX_new())) return NULL;
    m->md[i] = md;
    return m->ctx[i];
}

int sl_digest(const struct evp_md_st *md, const void *a, size_t an, const void *b, size_t bn,
              unsigned char *out, unsigned *len) {
    EVP_MD_CTX *c = md_ctx(md);
    return c && EVP_DigestInit_ex2(c, md, NULL) && EVP_DigestUpdate(c, a, an) && EVP_DigestUpdate(c, b, bn) &&
                   EVP_DigestFinal_ex(c, out, len)
               ? 0
               : -1;
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

void sl_random_hex(char *out, int bytes) {
    static const char digit[] = "0123456789abcdef";
    for (int i = 0; i < bytes; i += 8) {
        uint64_t r = sl_random_u64();
        for (int j = 0; j < 8 && i + j < bytes; j++, r >>= 8) {
            out[2 * (i + j)] = digit[(r >> 4) & 15];
            out[2 * (i + j) + 1] = digit[r & 15];
        }
    }
    out[2 * bytes] = '\0';
}

int sl_fmt_i64(char *out, int64_t v) {
    char tmp[20];
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v; /* INT64_MIN too */
    int k = sizeof tmp, n = 0;
    do
        tmp[--k] = (char)('0' + u % 10);
    while ((u /= 10) != 0);
    if (v < 0) out[n++] = '-';
    memcpy(out + n, tmp + k, sizeof tmp - (size_t)k);
    return n + (int)sizeof tmp - k;
}

void sl_iso_time(int64_t ms, char out[21]) {
    const int64_t lo = -62167219200LL, hi = 253402300799LL; /* 0000-01-01T00:00:00Z, 9999-12-31T23:59:59Z */
    int64_t t = ms / 1000 - (ms % 1000 < 0);
    t = t < lo ? lo : t > hi ? hi : t;
    int64_t days = t / 86400 - (t % 86400 < 0), sec = t - days * 86400;
    int y, m, d;
    sl_civil_from_days(days, &y, &m, &d);
    int v[6] = {y, m, d, (int)(sec / 3600), (int)(sec / 60 % 60), (int)(sec % 60)};
    char *p = out;
    for (int i = 0; i < 6; i++) {
        if (i == 0) {
            for (int k = 1000; k; k /= 10)
                *p++ = (char)('0' + v[0] / k % 10);
        } else {
            *p++ = "--T::"[i - 1];
            *p++ = (char)('0' + v[i] / 10);
            *p++ = (char)('0' + v[i] % 10);
        }
    }
    *p++ = 'Z';
    *p = '\0';
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

/* --- Calendar dates ----------------------------------------------------- */

static int leap(int y) {
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int sl_month_days(int y, int m) {
    static const int d[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : d[m - 1];
}

/* Howard Hinnant's days_from_civil and civil_from_days, so no libc time
 * zone state is involved. */
int64_t sl_days_from_civil(int y, int m, int d) {
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

void sl_civil_from_days(int64_t z, int *y, int *m, int *d) {
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int)(yoe + era * 400 + (*m <= 2));
}

static int digits(const char *s, int n, int *v) {
    *v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        *v = *v * 10 + (s[i] - '0');
    }
    return 0;
}

int sl_time_parse(const char *s, size_t n, int lower, int64_t *us, int *frac_digits) {
    int y, mo, d, h, mi, sec, frac = 0, nfrac = 0;
    if (n < 20 || digits(s, 4, &y) || s[4] != '-' || digits(s + 5, 2, &mo) || s[7] != '-' ||
        digits(s + 8, 2, &d) || (s[10] != 'T' && !(lower && s[10] == 't')) || digits(s + 11, 2, &h) ||
        s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':' || digits(s + 17, 2, &sec))
        return SL_EINVAL;
    size_t i = 19;
    if (s[i] == '.') {
        for (int scale = 100000; ++i < n && s[i] >= '0' && s[i] <= '9'; scale /= 10, nfrac++)
            frac += (s[i] - '0') * scale;
        if (nfrac == 0 || nfrac > 9) return SL_EINVAL;
    }
    int offset_min = 0;
    if (i + 6 == n && (s[i] == '+' || s[i] == '-')) {
        int oh, om;
        if (digits(s + i + 1, 2, &oh) || s[i + 3] != ':' || digits(s + i + 4, 2, &om) || oh > 23 || om > 59)
            return SL_EINVAL;
        offset_min = (s[i] == '-' ? -1 : 1) * (oh * 60 + om);
    } else if (i + 1 != n || (s[i] != 'Z' && !(lower && s[i] == 'z'))) {
        return SL_EINVAL;
    }
    if (mo < 1 || mo > 12 || d < 1 || d > sl_month_days(y, mo) || h > 23 || mi > 59 || sec > 59)
        return SL_EINVAL;
    *us = (((sl_days_from_civil(y, mo, d) * 24 + h) * 60 + mi - offset_min) * 60 + sec) * 1000000 + frac;
    if (frac_digits) *frac_digits = nfrac;
    return 0;
}

int sl_log_level = SL_INFO;

static int log_json_on;
static char log_app[128] = "sluice";
static __thread const sl_log_ctx *log_ctx;

void sl_log_json(const char *app) {
    log_json_on = 1;
    if (app && *app) snprintf(log_app, sizeof log_app, "%s", app);
}

void sl_log_ctx_set(const sl_log_ctx *c) {
    log_ctx = c;
}

const sl_log_ctx *sl_log_ctx_get(void) {
    return log_ctx;
}

static const char *const level_words[] = {"error", "info", "debug"};

/* Appends s as a JSON string (quotes included) at *o in out (cap bytes),
 * cut short rather than overflowing. */
static void json_str(char *out, size_t cap, size_t *o, const char *s) {
    static const char hex[] = "0123456789abcdef";
    if (*o + 2 >= cap) return;
    out[(*o)++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p && *o + 8 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            out[(*o)++] = '\\';
            out[(*o)++] = (char)*p;
        } else if (*p < 0x20) {
            memcpy(out + *o, "\\u00", 4);
            *o += 4;
            out[(*o)++] = hex[*p >> 4];
            out[(*o)++] = hex[*p & 15];
        } else {
            out[(*o)++] = (char)*p;
        }
    }
    out[(*o)++] = '"';
}

static void json_field(char *out, size_t cap, size_t *o, const char *name, const char *v) {
    if (!v || *o + strlen(name) + 8 >= cap) return;
    *o += (size_t)snprintf(out + *o, cap - *o, ",\"%s\":", name);
    json_str(out, cap, o, v);
}

/* Writes one line: text, or a JSON object with the context's fields and,
 * for a request's line, its status and latency (status 0: none). */
static void log_line(int level, const char *msg, const sl_log_ctx *c, const char *path, int status,
                     int64_t latency_us) {
    char ts[32];
    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    const char *word = level_words[level < 0 ? 0 : level > 2 ? 2 : level];
    if (!log_json_on) {
        fprintf(stderr, "%s.%03ldZ %s %s\n", ts, now.tv_nsec / 1000000, word, msg);
        return;
    }
    char out[2048];
    size_t o = (size_t)snprintf(out, sizeof out, "{\"time\":\"%s.%03ldZ\",\"level\":\"%s\"", ts,
                                now.tv_nsec / 1000000, word);
    json_field(out, sizeof out, &o, "app", log_app);
    json_field(out, sizeof out, &o, "message", msg);
    if (c) {
        json_field(out, sizeof out, &o, "requestId", c->request_id);
        json_field(out, sizeof out, &o, "method", c->method);
        json_field(out, sizeof out, &o, "route", c->route);
        json_field(out, sizeof out, &o, "account", c->account);
        json_field(out, sizeof out, &o, "queue", c->queue);
    }
    json_field(out, sizeof out, &o, "path", path);
    if (status && o + 64 < sizeof out)
        o += (size_t)snprintf(out + o, sizeof out - o, ",\"status\":%d,\"latencyMs\":%.3f", status,
                              (double)latency_us / 1000.0);
    if (o + 2 >= sizeof out) o = sizeof out - 2;
    out[o++] = '}';
    out[o++] = '\n';
    fwrite(out, 1, o, stderr);
}

void sl_log(int level, const char *fmt, ...) {
    if (level > sl_log_level) return;
    char line[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    log_line(level, line, log_ctx, NULL, 0, 0);
}

void sl_log_request(const sl_log_ctx *c, const char *path, int status, int64_t latency_us) {
    if (SL_DEBUG > sl_log_level) return;
    if (log_json_on) {
        log_line(SL_DEBUG, "request", c, path, status, latency_us);
        return;
    }
    char line[1024];
    snprintf(line, sizeof line, "http %s %s %d %.1fms [%s]", c->method ? c->method : "-", path, status,
             (double)latency_us / 1000.0, c->request_id ? c->request_id : "-");
    log_line(SL_DEBUG, line, NULL, NULL, 0, 0);
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
