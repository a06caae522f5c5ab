/* sluice.h: error codes, the clock, logging and small shared helpers.
 *
 * Every module includes this header. Functions return 0 on success and a
 * negative SL_E* code on failure; no module defines codes of its own. */
#ifndef SLUICE_H
#define SLUICE_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#define SL_VERSION "0.1.0"

/* Error codes, one table: the name, the value and what it means. Each API
 * maps them to its statuses in a table of its own (api/req.c for the
 * native and admin APIs). SL_EUNKNOWN is special: the operation may or may
 * not have taken effect (Cassandra's WriteTimeout on a CAS, a crash of the
 * embedded writer between apply and answer). Callers must find out before
 * acting on either assumption. Functions return 0 or one of these; none
 * uses -1 for anything else. */
#define SL_ERRNO_MAP(X)                                                                                    \
    X(ENOMEM, -1, "out of memory")                                                                         \
    X(EINVAL, -2, "bad input")                                                                             \
    X(ENOTFOUND, -3, "no such account, queue or row")                                                      \
    X(EEXISTS, -4, "it already exists")                                                                    \
    X(ECONFLICT, -5, "a stale pop receipt, or a compare-and-set lost to another writer")                   \
    X(ENOTAPPLIED, -6, "a compare-and-set whose condition was false")                                      \
    X(EUNKNOWN, -7, "the outcome is unknown: it may or may not have been applied")                         \
    X(EUNAVAILABLE, -8, "the store did not do it")                                                         \
    X(ETIMEOUT, -9, "the store did not answer in time")                                                    \
    X(ETOOBIG, -10, "over a size limit")                                                                   \
    X(EIO, -11, "a disk or network error")                                                                 \
    X(EINTERNAL, -12, "a bug or an impossible state")                                                      \
    X(EFORBIDDEN, -13, "authenticated but not allowed")                                                    \
    X(EAUTH, -14, "no or bad credentials")                                                                 \
    X(EBUSY, -15, "saturated: load is shed")                                                               \
    X(EPARTIAL, -16, "a parser needs more bytes")                                                          \
    X(EPROTO, -17, "the peer speaks a protocol version we do not")                                         \
    X(ENOSPC, -18, "the store's disk is full; nothing was written")

enum {
    SL_OK = 0,
#define SL_ERRNO_ENUM(name, value, text) SL_##name = value,
    SL_ERRNO_MAP(SL_ERRNO_ENUM)
#undef SL_ERRNO_ENUM
};

/* A short stable name ("ENOTFOUND") for logs and tests, and what it means. */
const char *sl_strerror(int rc);
const char *sl_errmsg(int rc);

/* The clock. All time in Sluice comes from sl_now_ms(), so tests can drive
 * it by hand: sl_clock_manual(1) freezes it at the value given to
 * sl_clock_set_ms() and only sl_clock_advance_ms() moves it. Thread-safe. */
int64_t sl_now_ms(void);
/* The same clock in microseconds (the manual clock's milliseconds times 1000). */
int64_t sl_now_us(void);
void sl_clock_manual(int on);
void sl_clock_set_ms(int64_t ms);
void sl_clock_advance_ms(int64_t ms);

/* Names the calling thread (15 characters at most) as top -H, ps -L, perf
 * and gdb show it: "sl-http" for the event loops, "sl-writer" for the
 * embedded store's writer, and so on (README, "Threads and locks"). */
void sl_thread_name(const char *name);

/* The monotonic clock in milliseconds, for timeouts and intervals (never
 * for what is stored). One function, so that a test can replace it:
 * sl_mono_hook(fn) makes sl_mono_ms() return fn(); NULL restores
 * CLOCK_MONOTONIC. */
int64_t sl_mono_ms(void);
void sl_mono_hook(int64_t (*fn)(void));

/* Waits on cv (with mu held, as pthread_cond_wait) for at most ms
 * milliseconds of the real clock (a condition variable's default). */
void sl_cond_wait_ms(pthread_cond_t *cv, pthread_mutex_t *mu, int ms);

/* A count of answers to wait for, given by other threads (the blocking
 * forms of asynchronous calls): sl_latch_init(l, n); each answer calls
 * sl_latch_done(l), after writing what it hands over; sl_latch_wait(l)
 * returns once all n came, and destroys the latch (sl_latch_done touches
 * nothing of it after letting go of its mutex). */
typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int left;
    struct sl_fiber *fiber; /* the waiter, when it runs on a fiber (util/fiber.h): it parks */
} sl_latch;
void sl_latch_init(sl_latch *l, int n);
void sl_latch_done(sl_latch *l);
void sl_latch_wait(sl_latch *l);

/* Allocation in the engine and the embedded store goes through these, so
 * that a test can fail any allocation: sl_alloc_hook(fail) makes each call
 * return NULL when fail(bytes) returns nonzero; NULL removes the hook.
 * Memory from them is released with free(). */
void *sl_malloc(size_t n);
void *sl_calloc(size_t n, size_t size);
void *sl_realloc(void *p, size_t n);
void sl_alloc_hook(int (*fail)(size_t bytes));

/* Cryptographically secure random bytes (getrandom). Returns 0 or SL_EIO. */
int sl_random_bytes(void *buf, size_t n);
/* A fast non-cryptographic random 64-bit value for spreading contention. */
uint64_t sl_random_u64(void);
/* Writes 2 * bytes lowercase hex digits of sl_random_u64() and a NUL. */
void sl_random_hex(char *out, int bytes);

/* v in decimal at out, with no NUL; returns the length (at most 20). For
 * the hot paths where snprintf's format parsing cost more than the digits. */
int sl_fmt_i64(char *out, int64_t v);
/* "YYYY-MM-DDTHH:MM:SSZ" (UTC) of ms since the epoch, NUL-terminated; the
 * time is clamped to the years 0 to 9999. From the year 1000 on, what
 * gmtime_r and strftime's "%Y-%m-%dT%H:%M:%SZ" write, without the time zone
 * lock and the format's parse; earlier years get four digits, as ISO 8601
 * asks. */
void sl_iso_time(int64_t ms, char out[21]);

/* The digest (with md, an OpenSSL EVP_MD) of a then b, into out (*len
 * bytes). On a context this thread keeps for md's next digest: OpenSSL 3
 * sets one up (allocations, the provider's state) for every EVP_Digest(),
 * which cost more than hashing a request's few blocks. 0, or -1 when
 * OpenSSL fails. */
struct evp_md_st;
int sl_digest(const struct evp_md_st *md, const void *a, size_t an, const void *b, size_t bn,
              unsigned char *out, unsigned *len);

/* base64url without padding. sl_b64url_encode writes at most
 * SL_B64URL_LEN(n)+1 bytes including the terminating NUL and returns the
 * length written. sl_b64url_decode returns the decoded length, or SL_EINVAL
 * for invalid input or an output buffer that is too small. */
#define SL_B64URL_LEN(n) ((((n) + 2) / 3) * 4)
size_t sl_b64url_encode(const void *in, size_t n, char *out);
long sl_b64url_decode(const char *in, size_t n, void *out, size_t cap);

/* Proleptic Gregorian calendar dates in UTC: days since 1970-01-01 of a
 * date and back, and the days of a month (1..12). No libc time zone state
 * is involved. */
int64_t sl_days_from_civil(int y, int m, int d);
void sl_civil_from_days(int64_t days, int *y, int *m, int *d);
int sl_month_days(int y, int m);
/* An RFC 3339 date-time, "YYYY-MM-DDTHH:MM:SS" with an optional fraction of
 * 1 to 9 digits, then "Z" or an offset "+HH:MM" or "-HH:MM" (lower also
 * takes 't' and 'z', which RFC 3339 allows). No leap second, nothing
 * missing, nothing after it; s need not be NUL-terminated. Returns 0 with
 * the microseconds since the epoch (a finer fraction is truncated) and,
 * when frac_digits is not NULL, how many fractional digits it had; or
 * SL_EINVAL. */
int sl_time_parse(const char *s, size_t n, int lower, int64_t *us, int *frac_digits);

/* Logging to stderr, one line per call, with a level word and a timestamp.
 * sl_log_level: 0 errors only, 1 info (default), 2 debug. In JSON (see
 * sl_log_json) each line is one object: time, level, app, message, and the
 * request's fields while a request's handler runs on the thread. */
extern int sl_log_level;
void sl_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* JSON lines from now on (call before any thread logs); app is the "app"
 * field (LOGSTASH_CUSTOM_APP_NAME), copied. */
void sl_log_json(const char *app);
/* The request a thread works on, for its log lines (NULL: none). Fields
 * may be NULL; the strings must outlive the setting. */
typedef struct {
    const char *request_id, *method, *route, *account, *queue;
} sl_log_ctx;
void sl_log_ctx_set(const sl_log_ctx *c);
const sl_log_ctx *sl_log_ctx_get(void);
/* A request's line at the end of its life (debug level): c's fields, the
 * status and the latency. */
void sl_log_request(const sl_log_ctx *c, const char *path, int status, int64_t latency_us);
#define SL_ERR 0
#define SL_INFO 1
#define SL_DEBUG 2

/* Names of accounts, queues and keys: [A-Za-z0-9_.-]{1,80}. */
#define SL_NAME_MAX 80
int sl_name_valid(const char *s);

#endif
