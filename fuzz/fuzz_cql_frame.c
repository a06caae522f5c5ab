/* fuzz_cql_frame.c: libFuzzer target over the CQL frame decoder and every
 * response decoder. The input is a byte stream as a connection reads it:
 * frames are cut off the front one by one, LZ4 bodies are inflated, and each
 * body goes through the full response decoder and, whatever its opcode, each
 * message decoder directly, for every protocol version. Decoded views are
 * then walked (rows, type names, collections) so reads through them are
 * checked too. Seed corpus: fuzz/corpus/cql_frame (make_cql_corpus.py). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cql/codec.h"
#include "cql/token.h"

static uint8_t arena_mem[1 << 16];
static uint8_t inflated[1 << 20];

static void walk_meta(const sl_cql_meta *m) {
    char name[256];
    if (!m->cols) return;
    for (int32_t i = 0; i < m->ncols; i++)
        sl_cql_type_name(&m->cols[i].type, name, sizeof(name));
}

static void walk(const sl_cql_response *r) {
    sl_cql_seq s = r->supported, vals;
    sl_cql_str k, v;
    while (sl_cql_string_multimap_next(&s, &k, &vals))
        while (sl_cql_string_list_next(&vals, &v)) {
        }
    s = r->env.warnings;
    while (sl_cql_string_list_next(&s, &v)) {
    }
    sl_cql_bytes b;
    s = r->env.payload;
    while (sl_cql_bytes_map_next(&s, &k, &b)) {
    }
    walk_meta(&r->result.meta);
    walk_meta(&r->result.bind);
    sl_cql_rd rows = r->result.rows;
    while (sl_cql_rows_next(&rows, &b)) {
    }
}

static void decode_all(const sl_cql_header *h, const uint8_t *body, size_t len) {
    sl_cql_arena a = {arena_mem, sizeof(arena_mem), 0};
    sl_cql_response resp;
    if (sl_cql_response_decode(h, body, len, &a, &resp) == 0) walk(&resp);
    for (int version = 3; version <= 5; version++) {
        sl_cql_rd r = sl_cql_rd_make(body, len);
        sl_cql_error e;
        sl_cql_error_decode(version, &r, &e);
        r = sl_cql_rd_make(body, len);
        a.used = 0;
        sl_cql_result res;
        if (sl_cql_result_decode(version, &r, &a, &res) == 0) {
            sl_cql_response fake = {.result = res};
            walk(&fake);
        }
    }
    sl_cql_rd r = sl_cql_rd_make(body, len);
    sl_cql_event ev;
    sl_cql_event_decode(&r, &ev);
    r = sl_cql_rd_make(body, len);
    a.used = 0;
    sl_cql_type t;
    if (sl_cql_type_decode(&r, &a, &t) == 0) {
        char name[256];
        sl_cql_type_name(&t, name, sizeof(name));
    }
    sl_cql_header any = *h;
    for (uint8_t flags = 0; flags < 16; flags++) {
        sl_cql_envelope env;
        any.flags = flags;
        any.response = 1;
        sl_cql_envelope_decode(&any, body, len, &env);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    (void)sl_cql_token(data, size);
    while (size > 0) {
        sl_cql_header h;
        const uint8_t *body;
        long n = sl_cql_frame_cut(data, size, &h, &body);
        if (n < 0) break;
        if (h.flags & SL_CQL_FLAG_COMPRESSION) {
            long m = sl_cql_lz4_decompress(body, h.length, inflated, sizeof(inflated));
            if (m >= 0) decode_all(&h, inflated, (size_t)m);
        } else {
            decode_all(&h, body, h.length);
        }
        data += n;
        size -= (size_t)n;
    }
    return 0;
}
