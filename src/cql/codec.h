/* codec.h: the CQL native protocol (v3, v4) as pure functions over buffers.
 *
 * Nothing here does I/O or calls malloc. Decoders read from a buffer the
 * caller owns and hand back views into it (sl_cql_str, sl_cql_bytes point
 * into the input; keep the input alive while you use them). The few
 * decoders that need variable-sized output (column specs, type trees, pk
 * indexes) take it from a caller-provided arena. Encoders append to a
 * caller-provided writer that counts what it would have needed when the
 * buffer is too small, like snprintf.
 *
 * Results: decoders return >= 0 on success, SL_EPARTIAL when the input is a
 * valid prefix that needs more bytes (frame level only), SL_EINVAL when it is
 * malformed, SL_EPROTO for a protocol version or opcode this client does not
 * speak (v1, v2, v5 frames), SL_ETOOBIG for a frame over the protocol's
 * 256 MB limit and SL_ENOMEM when the arena is exhausted. They never read
 * outside [buf, buf+len).
 *
 * Wire format (spec: apache/cassandra doc/native_protocol_v4.spec): a frame
 * is a 9-byte header (version|direction, flags, stream int16, opcode, length
 * int32), then `length` body bytes. With flag 0x01 the body is LZ4-compressed
 * (4-byte big-endian inflated length + one raw LZ4 block). Inside the
 * (inflated) body come, in order and only when flagged: a 16-byte tracing id
 * (0x02, responses only), a [string list] of warnings (0x08, v4 responses), a
 * [bytes map] custom payload (0x04, v4), then the message itself. */
#ifndef SL_CQL_CODEC_H
#define SL_CQL_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "../sluice.h"

#define SL_CQL_HEADER_LEN 9
#define SL_CQL_MAX_BODY (256u * 1024 * 1024)
#define SL_CQL_MAX_TYPE_DEPTH 32

enum {
    SL_CQL_FLAG_COMPRESSION = 0x01,
    SL_CQL_FLAG_TRACING = 0x02,
    SL_CQL_FLAG_PAYLOAD = 0x04,
    SL_CQL_FLAG_WARNING = 0x08
};

enum {
    SL_CQL_OP_ERROR = 0x00,
    SL_CQL_OP_STARTUP = 0x01,
    SL_CQL_OP_READY = 0x02,
    SL_CQL_OP_AUTHENTICATE = 0x03,
    SL_CQL_OP_OPTIONS = 0x05,
    SL_CQL_OP_SUPPORTED = 0x06,
    SL_CQL_OP_QUERY = 0x07,
    SL_CQL_OP_RESULT = 0x08,
    SL_CQL_OP_PREPARE = 0x09,
    SL_CQL_OP_EXECUTE = 0x0A,
    SL_CQL_OP_REGISTER = 0x0B,
    SL_CQL_OP_EVENT = 0x0C,
    SL_CQL_OP_BATCH = 0x0D,
    SL_CQL_OP_AUTH_CHALLENGE = 0x0E,
    SL_CQL_OP_AUTH_RESPONSE = 0x0F,
    SL_CQL_OP_AUTH_SUCCESS = 0x10
};

enum {
    SL_CQL_ANY = 0x0000,
    SL_CQL_ONE = 0x0001,
    SL_CQL_TWO = 0x0002,
    SL_CQL_THREE = 0x0003,
    SL_CQL_QUORUM = 0x0004,
    SL_CQL_ALL = 0x0005,
    SL_CQL_LOCAL_QUORUM = 0x0006,
    SL_CQL_EACH_QUORUM = 0x0007,
    SL_CQL_SERIAL = 0x0008,
    SL_CQL_LOCAL_SERIAL = 0x0009,
    SL_CQL_LOCAL_ONE = 0x000A
};

/* Query flags (QUERY, EXECUTE) and batch flags, v3/v4 (one byte). */
enum {
    SL_CQL_QF_VALUES = 0x01,
    SL_CQL_QF_SKIP_METADATA = 0x02,
    SL_CQL_QF_PAGE_SIZE = 0x04,
    SL_CQL_QF_PAGING_STATE = 0x08,
    SL_CQL_QF_SERIAL = 0x10,
    SL_CQL_QF_TIMESTAMP = 0x20,
    SL_CQL_QF_NAMES = 0x40
};

enum { SL_CQL_BATCH_LOGGED = 0, SL_CQL_BATCH_UNLOGGED = 1, SL_CQL_BATCH_COUNTER = 2 };

/* Error codes carried by ERROR frames. */
enum {
    SL_CQL_ERR_SERVER = 0x0000,
    SL_CQL_ERR_PROTOCOL = 0x000A,
    SL_CQL_ERR_BAD_CREDENTIALS = 0x0100,
    SL_CQL_ERR_UNAVAILABLE = 0x1000,
    SL_CQL_ERR_OVERLOADED = 0x1001,
    SL_CQL_ERR_IS_BOOTSTRAPPING = 0x1002,
    SL_CQL_ERR_TRUNCATE = 0x1003,
    SL_CQL_ERR_WRITE_TIMEOUT = 0x1100,
    SL_CQL_ERR_READ_TIMEOUT = 0x1200,
    SL_CQL_ERR_READ_FAILURE = 0x1300,
    SL_CQL_ERR_FUNCTION_FAILURE = 0x1400,
    SL_CQL_ERR_WRITE_FAILURE = 0x1500,
    SL_CQL_ERR_CDC_WRITE_FAILURE = 0x1600, /* v5 */
    SL_CQL_ERR_CAS_WRITE_UNKNOWN = 0x1700, /* v5 */
    SL_CQL_ERR_SYNTAX = 0x2000,
    SL_CQL_ERR_UNAUTHORIZED = 0x2100,
    SL_CQL_ERR_INVALID = 0x2200,
    SL_CQL_ERR_CONFIG = 0x2300,
    SL_CQL_ERR_ALREADY_EXISTS = 0x2400,
    SL_CQL_ERR_UNPREPARED = 0x2500
};

enum {
    SL_CQL_RESULT_VOID = 1,
    SL_CQL_RESULT_ROWS = 2,
    SL_CQL_RESULT_SET_KEYSPACE = 3,
    SL_CQL_RESULT_PREPARED = 4,
    SL_CQL_RESULT_SCHEMA_CHANGE = 5
};

/* Rows metadata flags. */
enum { SL_CQL_MD_GLOBAL_TABLES_SPEC = 0x01, SL_CQL_MD_HAS_MORE_PAGES = 0x02, SL_CQL_MD_NO_METADATA = 0x04 };

/* Data type option ids. */
enum {
    SL_CQL_T_CUSTOM = 0x0000,
    SL_CQL_T_ASCII = 0x0001,
    SL_CQL_T_BIGINT = 0x0002,
    SL_CQL_T_BLOB = 0x0003,
    SL_CQL_T_BOOLEAN = 0x0004,
    SL_CQL_T_COUNTER = 0x0005,
    SL_CQL_T_DECIMAL = 0x0006,
    SL_CQL_T_DOUBLE = 0x0007,
    SL_CQL_T_FLOAT = 0x0008,
    SL_CQL_T_INT = 0x0009,
    SL_CQL_T_TIMESTAMP = 0x000B,
    SL_CQL_T_UUID = 0x000C,
    SL_CQL_T_VARCHAR = 0x000D,
    SL_CQL_T_VARINT = 0x000E,
    SL_CQL_T_TIMEUUID = 0x000F,
    SL_CQL_T_INET = 0x0010,
    SL_CQL_T_DATE = 0x0011,
    SL_CQL_T_TIME = 0x0012,
    SL_CQL_T_SMALLINT = 0x0013,
    SL_CQL_T_TINYINT = 0x0014,
    SL_CQL_T_DURATION = 0x0015,
    SL_CQL_T_LIST = 0x0020,
    SL_CQL_T_MAP = 0x0021,
    SL_CQL_T_SET = 0x0022,
    SL_CQL_T_UDT = 0x0030,
    SL_CQL_T_TUPLE = 0x0031
};

/* A [string] or [long string]: a view, not NUL-terminated. */
typedef struct sl_cql_str {
    const char *p;
    size_t len;
} sl_cql_str;

/* A [bytes], [value] or [short bytes]. len -1 is null, -2 is "unset" (v4
 * [value] only); p is NULL then. */
typedef struct sl_cql_bytes {
    const uint8_t *p;
    int32_t len;
} sl_cql_bytes;

#define SL_CQL_NULL ((sl_cql_bytes){NULL, -1})
#define SL_CQL_UNSET ((sl_cql_bytes){NULL, -2})

/* An [inet] (or an [inetaddr] with port 0). */
typedef struct sl_cql_inet {
    uint8_t family_len; /* 4 or 16 */
    uint8_t addr[16];
    int32_t port;
} sl_cql_inet;

/* A bounded reader. Every sl_cql_rd_* returns 0 and advances, or returns
 * SL_EINVAL and leaves the reader where it was. */
typedef struct sl_cql_rd {
    const uint8_t *p, *end;
} sl_cql_rd;

/* A view of an encoded collection ([string list], [string map], [string
 * multimap], [bytes map]) that the decoder has already validated: `n`
 * entries, `rd` positioned on the first one. Iterate with the *_next
 * functions on a copy. */
typedef struct sl_cql_seq {
    sl_cql_rd rd;
    uint32_t n;
} sl_cql_seq;

/* An appending writer over a caller-owned buffer. Writes past `cap` are
 * dropped but counted in `len`, so after encoding `len > cap` means the
 * buffer was too small and `len` is the size needed. A value the wire format
 * cannot carry (a [string] over 65535 bytes, a negative length other than
 * null/unset) sets `err` to SL_EINVAL instead: retrying cannot help. Check
 * once at the end with sl_cql_wr_status(). */
typedef struct sl_cql_wr {
    uint8_t *buf;
    size_t len, cap;
    int err;
} sl_cql_wr;

/* A bump allocator over a caller-owned block, for decoded metadata. */
typedef struct sl_cql_arena {
    uint8_t *base;
    size_t cap, used;
} sl_cql_arena;

typedef struct sl_cql_header {
    uint8_t version;  /* 3 or 4, direction bit removed */
    uint8_t response; /* 1 when the direction bit (0x80) is set */
    uint8_t flags;
    uint8_t opcode;
    int16_t stream;
    uint32_t length;
} sl_cql_header;

/* ---- primitives ---------------------------------------------------------- */

static inline sl_cql_rd sl_cql_rd_make(const void *p, size_t len) {
    return (sl_cql_rd){(const uint8_t *)p, (const uint8_t *)p + len};
}
static inline size_t sl_cql_rd_left(const sl_cql_rd *r) {
    return (size_t)(r->end - r->p);
}

int sl_cql_rd_byte(sl_cql_rd *r, uint8_t *v);
int sl_cql_rd_short(sl_cql_rd *r, uint16_t *v);
int sl_cql_rd_int(sl_cql_rd *r, int32_t *v);
int sl_cql_rd_long(sl_cql_rd *r, int64_t *v);
int sl_cql_rd_raw(sl_cql_rd *r, size_t n, const uint8_t **p);
int sl_cql_rd_string(sl_cql_rd *r, sl_cql_str *s);
int sl_cql_rd_long_string(sl_cql_rd *r, sl_cql_str *s);
int sl_cql_rd_uuid(sl_cql_rd *r, uint8_t uuid[16]);
int sl_cql_rd_bytes(sl_cql_rd *r, sl_cql_bytes *b);       /* -1 null; other negatives invalid */
int sl_cql_rd_value(sl_cql_rd *r, sl_cql_bytes *b);       /* -1 null, -2 unset */
int sl_cql_rd_short_bytes(sl_cql_rd *r, sl_cql_bytes *b); /* never null */
int sl_cql_rd_inet(sl_cql_rd *r, sl_cql_inet *in);
int sl_cql_rd_inetaddr(sl_cql_rd *r, sl_cql_inet *in);
int sl_cql_rd_consistency(sl_cql_rd *r, uint16_t *cl);
/* These validate the whole collection and return a view of it. */
int sl_cql_rd_string_list(sl_cql_rd *r, sl_cql_seq *s);
int sl_cql_rd_string_map(sl_cql_rd *r, sl_cql_seq *s);
int sl_cql_rd_string_multimap(sl_cql_rd *r, sl_cql_seq *s);
int sl_cql_rd_bytes_map(sl_cql_rd *r, sl_cql_seq *s);

/* Iteration over a validated view: each returns 1 with the next entry, 0 at
 * the end. For a multimap, `vals` is a [string list] view. */
int sl_cql_string_list_next(sl_cql_seq *s, sl_cql_str *v);
int sl_cql_string_map_next(sl_cql_seq *s, sl_cql_str *k, sl_cql_str *v);
int sl_cql_string_multimap_next(sl_cql_seq *s, sl_cql_str *k, sl_cql_seq *vals);
int sl_cql_bytes_map_next(sl_cql_seq *s, sl_cql_str *k, sl_cql_bytes *v);

static inline sl_cql_wr sl_cql_wr_make(void *buf, size_t cap) {
    return (sl_cql_wr){(uint8_t *)buf, 0, cap, 0};
}
/* 0, SL_ETOOBIG (grow the buffer to w->len and encode again) or SL_EINVAL. */
static inline int sl_cql_wr_status(const sl_cql_wr *w) {
    return w->err ? w->err : w->len > w->cap ? SL_ETOOBIG : 0;
}
static inline int sl_cql_wr_ok(const sl_cql_wr *w) {
    return sl_cql_wr_status(w) == 0;
}

void sl_cql_wr_byte(sl_cql_wr *w, uint8_t v);
void sl_cql_wr_short(sl_cql_wr *w, uint16_t v);
void sl_cql_wr_int(sl_cql_wr *w, int32_t v);
void sl_cql_wr_long(sl_cql_wr *w, int64_t v);
void sl_cql_wr_raw(sl_cql_wr *w, const void *p, size_t n);
void sl_cql_wr_string(sl_cql_wr *w, const char *s, size_t n);
void sl_cql_wr_long_string(sl_cql_wr *w, const char *s, size_t n);
void sl_cql_wr_uuid(sl_cql_wr *w, const uint8_t uuid[16]);
void sl_cql_wr_bytes(sl_cql_wr *w, sl_cql_bytes b); /* [bytes]/[value]: len -1, -2 kept */
void sl_cql_wr_short_bytes(sl_cql_wr *w, const void *p, uint16_t n);
void sl_cql_wr_inet(sl_cql_wr *w, const sl_cql_inet *in);
/* [string list] from `n` NUL-terminated strings; [string map] from 2*n
 * strings key, value, key, value...; [bytes map] from n keys and n values. */
void sl_cql_wr_string_list(sl_cql_wr *w, const char *const *v, size_t n);
void sl_cql_wr_string_map(sl_cql_wr *w, const char *const *kv, size_t n);
void sl_cql_wr_bytes_map(sl_cql_wr *w, const char *const *keys, const sl_cql_bytes *vals, size_t n);

void *sl_cql_arena_alloc(sl_cql_arena *a, size_t size);

/* ---- frames ------------------------------------------------------------- */

/* Decodes the 9-byte header at buf. Returns SL_CQL_HEADER_LEN, SL_EPARTIAL
 * (fewer than 9 bytes), SL_EPROTO (version 1, 2 or 5: h->version says which,
 * the other fields are filled only for 5, whose legacy header has the same
 * layout), SL_ETOOBIG (length over SL_CQL_MAX_BODY) or SL_EINVAL. */
int sl_cql_header_decode(const uint8_t *buf, size_t len, sl_cql_header *h);
void sl_cql_header_encode(uint8_t out[SL_CQL_HEADER_LEN], const sl_cql_header *h);

/* Cuts one frame off the front of a byte stream: on success returns the
 * frame's total size (9 + body) with *body pointing at its body. Returns
 * SL_EPARTIAL until the whole frame is in the buffer. */
long sl_cql_frame_cut(const uint8_t *buf, size_t len, sl_cql_header *h, const uint8_t **body);

/* Starts a request frame in w (header with a zero length) and returns the
 * offset of the header; sl_cql_frame_end patches in the body length. */
size_t sl_cql_frame_begin(sl_cql_wr *w, uint8_t version, uint8_t flags, int16_t stream, uint8_t opcode);
void sl_cql_frame_end(sl_cql_wr *w, size_t start);

/* LZ4 bodies in CQL's format: 4-byte big-endian inflated length, then one
 * raw LZ4 block. sl_cql_lz4_compress returns the compressed size or
 * SL_ETOOBIG when `cap` is too small (SL_CQL_LZ4_BOUND(n) always suffices).
 * sl_cql_lz4_decompress returns the inflated size, SL_ETOOBIG when it would
 * exceed cap, or SL_EINVAL for a corrupt block or a length mismatch. */
#define SL_CQL_LZ4_BOUND(n) (4 + (n) + (n) / 255 + 16)
long sl_cql_lz4_compress(const uint8_t *in, size_t n, uint8_t *out, size_t cap);
long sl_cql_lz4_decompress(const uint8_t *in, size_t n, uint8_t *out, size_t cap);
/* The inflated size a compressed body announces, or SL_EINVAL. */
long sl_cql_lz4_inflated_len(const uint8_t *in, size_t n);

/* What precedes the message in a (decompressed) body. */
typedef struct sl_cql_envelope {
    int has_tracing;
    uint8_t tracing_id[16];
    int has_warnings;
    sl_cql_seq warnings; /* [string list] */
    int has_payload;
    sl_cql_seq payload; /* [bytes map] */
    sl_cql_rd msg;      /* the message body proper */
} sl_cql_envelope;

int sl_cql_envelope_decode(const sl_cql_header *h, const uint8_t *body, size_t len, sl_cql_envelope *e);

/* ---- requests ----------------------------------------------------------- */

/* Parameters shared by QUERY and EXECUTE. Flags are derived from what is
 * set: values when `values` is non-NULL (names when `names` is too),
 * page_size when >= 0, paging_state when its p is non-NULL, serial when
 * serial_consistency is non-zero, timestamp when has_timestamp. */
typedef struct sl_cql_qparams {
    uint16_t consistency;
    int skip_metadata;
    const sl_cql_bytes *values;
    const sl_cql_str *names; /* optional: bind by name */
    uint16_t nvalues;
    int32_t page_size; /* -1: not sent */
    sl_cql_bytes paging_state;
    uint16_t serial_consistency; /* 0: not sent */
    int has_timestamp;
    int64_t timestamp; /* microseconds */
} sl_cql_qparams;

static inline sl_cql_qparams sl_cql_qparams_make(uint16_t cl) {
    return (sl_cql_qparams){.consistency = cl, .page_size = -1, .paging_state = {NULL, -1}};
}

typedef struct sl_cql_batch_stmt {
    uint8_t kind;     /* 0: query string, 1: prepared id */
    sl_cql_str query; /* kind 0 */
    sl_cql_bytes id;  /* kind 1 */
    const sl_cql_bytes *values;
    uint16_t nvalues;
} sl_cql_batch_stmt;

typedef struct sl_cql_batch {
    uint8_t type; /* SL_CQL_BATCH_* */
    const sl_cql_batch_stmt *stmts;
    uint16_t nstmts;
    uint16_t consistency;
    uint16_t serial_consistency; /* 0: not sent */
    int has_timestamp;
    int64_t timestamp;
} sl_cql_batch;

/* Request bodies (append to w; wrap with sl_cql_frame_begin/end). */
void sl_cql_startup_encode(sl_cql_wr *w, const char *const *kv, size_t npairs);
void sl_cql_options_encode(sl_cql_wr *w);
void sl_cql_query_encode(sl_cql_wr *w, const char *query, size_t qlen, const sl_cql_qparams *qp);
void sl_cql_prepare_encode(sl_cql_wr *w, const char *query, size_t qlen);
void sl_cql_execute_encode(sl_cql_wr *w, const uint8_t *id, uint16_t idlen, const sl_cql_qparams *qp);
void sl_cql_batch_encode(sl_cql_wr *w, const sl_cql_batch *b);
void sl_cql_register_encode(sl_cql_wr *w, const char *const *events, size_t n);
void sl_cql_auth_response_encode(sl_cql_wr *w, sl_cql_bytes token);

/* ---- responses ---------------------------------------------------------- */

typedef struct sl_cql_type {
    uint16_t id;
    uint16_t n;         /* children: list/set 1, map 2, tuple and udt fields */
    sl_cql_str custom;  /* custom: class name; udt: keyspace */
    sl_cql_str name;    /* udt: type name */
    sl_cql_str *fields; /* udt: field names, n of them */
    struct sl_cql_type *sub;
} sl_cql_type;

typedef struct sl_cql_col {
    sl_cql_str keyspace, table, name;
    sl_cql_type type;
} sl_cql_col;

typedef struct sl_cql_meta {
    int32_t flags;
    int32_t ncols;
    sl_cql_bytes paging_state; /* len -1 when absent */
    uint32_t npk;              /* prepared bind metadata, v4 */
    uint16_t *pk;
    sl_cql_col *cols; /* NULL with no_metadata */
} sl_cql_meta;

typedef struct sl_cql_result {
    int32_t kind;
    /* Rows */
    sl_cql_meta meta;
    int32_t nrows;
    sl_cql_rd rows; /* nrows*ncols [bytes] cells, validated */
    /* Set_keyspace */
    sl_cql_str keyspace;
    /* Prepared: id, bind metadata (in `bind`), result metadata (in `meta`) */
    sl_cql_bytes id;
    sl_cql_meta bind;
    /* Schema_change (also EVENT SCHEMA_CHANGE) */
    sl_cql_str change, target, sc_keyspace, sc_name;
    sl_cql_seq sc_args; /* FUNCTION, AGGREGATE */
} sl_cql_result;

typedef struct sl_cql_error {
    int32_t code;
    sl_cql_str message;
    uint16_t consistency;
    int32_t required, alive;    /* Unavailable */
    int32_t received, blockfor; /* timeouts, failures, CAS unknown */
    uint8_t data_present;       /* ReadTimeout, ReadFailure */
    sl_cql_str write_type;      /* WriteTimeout, WriteFailure */
    uint16_t contentions;       /* v5 WriteTimeout of CAS */
    int32_t numfailures;        /* v4 failures; v5: entries of reasons */
    sl_cql_rd reasons;          /* v5 reasonmap: numfailures x [inetaddr][short] */
    sl_cql_str keyspace, table; /* AlreadyExists; FunctionFailure keyspace */
    sl_cql_str function;        /* FunctionFailure */
    sl_cql_seq arg_types;       /* FunctionFailure */
    sl_cql_bytes unprepared_id; /* Unprepared */
} sl_cql_error;

typedef struct sl_cql_event {
    sl_cql_str type;      /* TOPOLOGY_CHANGE, STATUS_CHANGE, SCHEMA_CHANGE */
    sl_cql_str change;    /* NEW_NODE, UP, CREATED, ... */
    sl_cql_inet addr;     /* topology, status */
    sl_cql_result schema; /* change, target, sc_keyspace, sc_name, sc_args */
} sl_cql_event;

typedef struct sl_cql_response {
    sl_cql_header h;
    sl_cql_envelope env;
    sl_cql_error error;       /* ERROR */
    sl_cql_result result;     /* RESULT */
    sl_cql_seq supported;     /* SUPPORTED multimap */
    sl_cql_str authenticator; /* AUTHENTICATE */
    sl_cql_bytes token;       /* AUTH_CHALLENGE, AUTH_SUCCESS */
    sl_cql_event event;       /* EVENT */
} sl_cql_response;

int sl_cql_error_decode(int version, sl_cql_rd *r, sl_cql_error *e);
int sl_cql_result_decode(int version, sl_cql_rd *r, sl_cql_arena *a, sl_cql_result *res);
int sl_cql_event_decode(sl_cql_rd *r, sl_cql_event *ev);
int sl_cql_type_decode(sl_cql_rd *r, sl_cql_arena *a, sl_cql_type *t);

/* Decodes a response frame whose body is already decompressed. Checks that
 * the message consumes the body exactly. Returns 0 or a negative code. */
int sl_cql_response_decode(const sl_cql_header *h, const uint8_t *body, size_t len, sl_cql_arena *a,
                           sl_cql_response *resp);

/* Row cells: call nrows*ncols times on a copy of result.rows. Returns 1 with
 * a cell (len -1 for null), 0 at the end. */
int sl_cql_rows_next(sl_cql_rd *rows, sl_cql_bytes *cell);

/* Formats a type as Cassandra's CQL names ("map<varchar, bigint>") into buf
 * (NUL-terminated, truncated to cap). Returns the length it needed. */
size_t sl_cql_type_name(const sl_cql_type *t, char *buf, size_t cap);

/* Names for logs and tests: "RESULT", "Unavailable"... */
const char *sl_cql_opcode_name(int opcode);

#endif
