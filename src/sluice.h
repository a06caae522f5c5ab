/* sluice.h: error codes, the clock, logging and small shared helpers.
 *
 * Every module includes this header. Functions return 0 on success and a
 * negative SL_E* code on failure; no module defines codes of its own. */
#ifndef SLUICE_H
#define SLUICE_H

#include <stddef.h>
#include <stdint.h>

#define SL_VERSION "0.1.0"

/* Error codes. SL_EUNKNOWN is special: the operation may or may not have
 * taken effect (Cassandra's WriteTimeout on a CAS, a crash of the embedded
 * writer between apply and answer). Callers must find out before acting on
 * either assumption. */
enum {
    SL_OK = 0,
    SL_ENOMEM = -1,       /* out of memory */
    SL_EINVAL = -2,       /* bad input: a caller's fault, maps to 400 */
    SL_ENOTFOUND = -3,    /* no such account, queue, row: maps to 404 */
    SL_EEXISTS = -4,      /* already exists */
    SL_ECONFLICT = -5,    /* stale pop receipt, CAS lost: maps to 409 */
    SL_ENOTAPPLIED = -6,  /* a compare-and-set whose condition was false */
    SL_EUNKNOWN = -7,     /* outcome unknown: may or may not have applied */
    SL_EUNAVAILABLE = -8, /* the store did not do it: maps to 503 */
    SL_ETIMEOUT = -9,     /* the store did not answer in time: maps to 503 */
    SL_ETOOBIG = -10,     /* over a size limit: maps to 413 */
    SL_EIO = -11,         /* disk or network error: maps to 503 */
    SL_EINTERNAL = -12,   /* a bug or an impossible state: maps to 500 */
    SL_EFORBIDDEN = -13,  /* authenticated but not allowed: maps to 403 */
    SL_EAUTH = -14,       /* no or bad credentials: maps to 401 */
    SL_EBUSY = -15,       /* saturated, shed load: maps to 429 */
    SL_EPARTIAL = -16,    /* a parser needs more bytes (picohttpparser's -2) */
    SL_EPROTO = -17       /* the peer speaks a protocol version we do not */
};

/* A short stable name ("ENOTFOUND") for logs and tests. */
const char *sl_strerror(int rc);

/* The clock. All time in Sluice comes from sl_now_ms(), so tests can drive
 * it by hand: sl_clock_manual(1) freezes it at the value given to
 * sl_clock_set_ms() and only sl_clock_advance_ms() moves it. Thread-safe. */
int64_t sl_now_ms(void);
void sl_clock_manual(int on);
void sl_clock_set_ms(int64_t ms);
void sl_clock_advance_ms(int64_t ms);

/* Cryptographically secure random bytes (getrandom). Returns 0 or SL_EIO. */
int sl_random_bytes(void *buf, size_t n);
/* A fast non-cryptographic random 64-bit value for spreading contention. */
uint64_t sl_random_u64(void);

/* base64url without padding. sl_b64url_encode writes at most
 * SL_B64URL_LEN(n)+1 bytes including the terminating NUL and returns the
 * length written. sl_b64url_decode returns the decoded length or -1 for
 * invalid input or an output buffer that is too small. */
#define SL_B64URL_LEN(n) ((((n) + 2) / 3) * 4)
size_t sl_b64url_encode(const void *in, size_t n, char *out);
long sl_b64url_decode(const char *in, size_t n, void *out, size_t cap);

/* Logging to stderr, one line per call, with a level word and a timestamp.
 * sl_log_level: 0 errors only, 1 info (default), 2 debug. */
extern int sl_log_level;
void sl_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define SL_ERR 0
#define SL_INFO 1
#define SL_DEBUG 2

/* Names of accounts, queues and keys: [A-Za-z0-9_.-]{1,80}. */
#define SL_NAME_MAX 80
int sl_name_valid(const char *s);

#endif
