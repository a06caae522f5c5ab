/* conn.h: one CQL connection to one node (internal to src/cql/).
 *
 * A connection owns a socket (optionally TLS), the handshake (OPTIONS,
 * STARTUP with lz4 when offered and wanted, SASL PLAIN), and an I/O thread
 * that writes queued request frames and hands each response frame to its
 * request's callback by stream id. Many requests are in flight at once, and
 * none holds a thread while it is (sl_cql_conn_send); sl_cql_conn_request
 * is the blocking form. */
#ifndef SL_CQL_CONN_H
#define SL_CQL_CONN_H

#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

#include "codec.h"

typedef struct sl_cql_conn sl_cql_conn;

typedef void (*sl_cql_event_fn)(void *ctx, const sl_cql_event *ev);

typedef struct {
    const char *host; /* a numeric address or a name */
    int port;
    const char *username, *password; /* for PasswordAuthenticator; may be NULL */
    int compression;                 /* use lz4 when the server offers it */
    int max_version;                 /* 4 (falls back to 3) or 3 */
    SSL_CTX *ssl;                    /* NULL: plain TCP; borrowed, outlives the connection */
    const char *ssl_verify_name;     /* when set, the certificate must match it (name or IP) */
    int connect_timeout_ms;
    /* When set, the connection REGISTERs for topology and status changes
     * and calls on_event from its I/O thread (which must not block on this
     * connection). */
    sl_cql_event_fn on_event;
    void *event_ctx;
} sl_cql_conn_opts;

/* A response frame: body is decompressed and malloc'ed; the caller frees it. */
typedef struct {
    sl_cql_header h;
    uint8_t *body;
    size_t len;
} sl_cql_frame;

/* Connects and performs the handshake. Returns 0, SL_EUNAVAILABLE (cannot
 * connect, or the connection failed during the handshake), SL_EAUTH (bad
 * credentials, or the server wants authentication and none was given),
 * SL_EPROTO (no protocol version in common) or SL_ENOMEM. */
int sl_cql_conn_open(const sl_cql_conn_opts *o, sl_cql_conn **out);

/* What sl_cql_conn_send() calls once its request completes: rc 0 with the
 * response (whose body the callback then owns and frees), SL_ETIMEOUT when
 * no answer came within the timeout (its stream id stays reserved until the
 * late answer arrives or the connection closes), or SL_EIO when the
 * connection failed with the request pending (sent says whether every byte
 * of it had been written). It runs on the connection's I/O thread (or on
 * the thread that kills a connection whose thread never started), without
 * the connection's lock: it may send again, but must not block or close a
 * connection. */
typedef void (*sl_cql_conn_cb)(void *arg, int rc, sl_cql_frame *resp, int sent);

/* Queues one request (opcode, uncompressed body; the body is copied) and
 * returns at once: 0, and cb runs later exactly once; or, with cb never
 * called, SL_EUNAVAILABLE when the connection is dead (nothing was sent),
 * SL_EBUSY when every stream id is in use, SL_ETOOBIG or SL_ENOMEM. */
int sl_cql_conn_send(sl_cql_conn *c, uint8_t opcode, const uint8_t *body, size_t len, int timeout_ms,
                     sl_cql_conn_cb cb, void *arg);

/* Sends one request (opcode, uncompressed body) and waits up to timeout_ms
 * for its response. Returns 0 with *resp filled; SL_ETIMEOUT when no answer
 * came in time (its stream id stays reserved until the late answer arrives or
 * the connection closes); SL_EIO when the connection failed with the request
 * pending (*sent says whether every byte of it had been written);
 * SL_EUNAVAILABLE when the connection was already dead (nothing was sent);
 * SL_EBUSY when every stream id is in use. */
int sl_cql_conn_request(sl_cql_conn *c, uint8_t opcode, const uint8_t *body, size_t len, int timeout_ms,
                        sl_cql_frame *resp, int *sent);

int sl_cql_conn_version(const sl_cql_conn *c);
int sl_cql_conn_compressed(const sl_cql_conn *c);
int sl_cql_conn_alive(sl_cql_conn *c);
/* Alive and not suspect: no request timed out on it with nothing read since. */
int sl_cql_conn_healthy(sl_cql_conn *c);
/* Requests sent and not yet answered, timed-out ones included, a heartbeat
 * not. */
int sl_cql_conn_inflight(sl_cql_conn *c);

/* Marks the connection failed: pending requests complete with SL_EIO. */
void sl_cql_conn_kill(sl_cql_conn *c);
/* Kills the connection, joins its thread and frees it. No other thread may
 * be using it (the pool reference-counts connections for that). */
void sl_cql_conn_close(sl_cql_conn *c);

#endif
