/* test_store.c: the store contract suite, and the embedded backend's own
 * tests.
 *
 * The contract tests are plain functions of an sl_store (contract_cases[])
 * with the tables of test_tables[] ensured, so another backend runs the same
 * bodies by providing its own open and close (see backend_sqlite). Bodies
 * marked needs_manual_clock drive the clock by hand and only make sense on a
 * backend that reads sl_now_ms() for expiry. Each test runs in a fresh
 * temporary directory that is removed afterwards. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* nftw, mkdtemp; the sanitizer build drops the Makefile's -D */
#endif
#include <ftw.h>
#include <pthread.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "cql/client.h"
#include "store/store.h"

/* --- Tables -------------------------------------------------------------- */

static const sl_table T_KV = {
    "kv", 1, 0, 5, {{"k", SL_TEXT}, {"i", SL_INT}, {"s", SL_TEXT}, {"b", SL_BLOB}, {"j", SL_INT}}, 0};
enum { KV_K, KV_I, KV_S, KV_B, KV_J };

/* Two partition key columns and two clustering columns. Its expiry is kept
 * by partition on the embedded store (as the queues' messages' is), so the
 * contract's TTL cases cover that too. */
static const sl_table T_CK = {
    "ck",
    2,
    2,
    5,
    {{"p", SL_TEXT}, {"q", SL_INT}, {"c1", SL_INT}, {"c2", SL_TEXT}, {"v", SL_TEXT}},
    SL_TABLE_EXPIRY_BY_PARTITION};
enum { CK_P, CK_Q, CK_C1, CK_C2, CK_V };

/* Names that only work when quoted. */
static const sl_table T_ODD = {
    "order", 1, 1, 3, {{"from", SL_TEXT}, {"group \"x\"", SL_INT}, {"select", SL_BLOB}}, 0};

static const sl_table *const test_tables[] = {&T_KV, &T_CK, &T_ODD};
#define NTABLES (sizeof test_tables / sizeof test_tables[0])

/* --- Helpers ------------------------------------------------------------- */

static sl_write wr(const sl_table *t, sl_wkind kind) {
    sl_write w;
    memset(&w, 0, sizeof w);
    w.t = t;
    w.kind = kind;
    return w;
}

static sl_write kv_w(sl_wkind kind, const char *k) {
    sl_write w = wr(&T_KV, kind);
    w.row.v[KV_K] = sl_vtext(k);
    return w;
}

static int kv_put(sl_store *s, const char *k, int64_t i, const char *str, int ttl) {
    sl_write w = kv_w(SL_W_UPSERT, k);
    w.row.v[KV_I] = sl_vint(i);
    if (str) w.row.v[KV_S] = sl_vtext(str);
    w.ttl = ttl;
    return sl_store_apply(s, &w, 1, NULL);
}

static int kv_get(sl_store *s, const char *k, int cons, sl_result *r) {
    sl_val key[1] = {sl_vtext(k)};
    return sl_store_get(s, &T_KV, key, cons, r);
}

/* The row's i, or -999 when the row is missing, -998 when i is unset. */
static int64_t kv_i(sl_store *s, const char *k) {
    sl_result r;
    sl_result_init(&r);
    int rc = kv_get(s, k, SL_READ_DEFAULT, &r);
    int64_t v = rc == SL_ENOTFOUND ? -999 : rc ? -997 : r.rows[0].v[KV_I].set ? r.rows[0].v[KV_I].i : -998;
    sl_result_free(&r);
    return v;
}

static void assert_text(const sl_val *v, const char *want) {
    char buf[256];
    assert_true(v->set);
    assert_int_equal(sl_val_str(v, buf, sizeof buf), strlen(want));
    assert_string_equal(buf, want);
}

static sl_write ck_w(sl_wkind kind, const char *p, int64_t q, int64_t c1, const char *c2) {
    sl_write w = wr(&T_CK, kind);
    w.row.v[CK_P] = sl_vtext(p);
    w.row.v[CK_Q] = sl_vint(q);
    w.row.v[CK_C1] = sl_vint(c1);
    if (c2) w.row.v[CK_C2] = sl_vtext(c2);
    return w;
}

static int ck_put(sl_store *s, const char *p, int64_t q, int64_t c1, const char *c2, const char *v, int ttl) {
    sl_write w = ck_w(SL_W_UPSERT, p, q, c1, c2);
    w.row.v[CK_V] = sl_vtext(v);
    w.ttl = ttl;
    return sl_store_apply(s, &w, 1, NULL);
}

static sl_slice ck_q(const char *p, int64_t q) {
    sl_slice x;
    memset(&x, 0, sizeof x);
    x.t = &T_CK;
    x.pk[0] = sl_vtext(p);
    x.pk[1] = sl_vint(q);
    return x;
}

/* Renders a slice of T_CK as "c1c2 c1c2 ..." (e.g. "1a 1b 2a"), with a
 * trailing "+" when more rows may follow. */
static const char *render(sl_store *s, const sl_slice *q, char *buf, size_t cap) {
    sl_result r;
    sl_result_init(&r);
    assert_int_equal(sl_store_slice(s, q, &r), 0);
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < r.n; i++) {
        char c2[64];
        assert_true(r.rows[i].v[CK_C1].set);
        assert_true(sl_val_str(&r.rows[i].v[CK_C2], c2, sizeof c2) >= 0);
        n +=
            (size_t)snprintf(buf + n, cap - n, "%s%lld%s", i ? " " : "", (long long)r.rows[i].v[CK_C1].i, c2);
    }
    if (r.more) snprintf(buf + n, cap - n, "+");
    sl_result_free(&r);
    return buf;
}

#define assert_slice(s, q, want)                                                                             \
    do {                                                                                                     \
        char buf_[1024];                                                                                     \
        assert_string_equal(render((s), (q), buf_, sizeof buf_), (want));                                    \
    } while (0)

/* --- Contract tests ------------------------------------------------------ */

static void t_get_missing(sl_store *s) {
    sl_result r;
    sl_result_init(&r);
    assert_int_equal(kv_get(s, "nope", SL_READ_DEFAULT, &r), SL_ENOTFOUND);
    assert_int_equal(r.n, 0);
    sl_slice q = ck_q("nope", 0);
    assert_int_equal(sl_store_slice(s, &q, &r), 0);
    assert_int_equal(r.n, 0);
    assert_int_equal(r.more, 0);
    sl_result_free(&r);
}

static void t_all_types(sl_store *s) {
    static const char blob[] = {0, 'a', 0, 'b', 0};
    sl_write w = kv_w(SL_W_UPSERT, "x");
    w.row.v[KV_I] = sl_vint(INT64_MIN);
    w.row.v[KV_S] = sl_vtext("");
    w.row.v[KV_B] = sl_vbytes(blob, sizeof blob);
    w.row.v[KV_J] = sl_vint(INT64_MAX);
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), 0);
    sl_write w2 = kv_w(SL_W_UPSERT, "y");
    w2.row.v[KV_I] = sl_vint(0);
    w2.row.v[KV_S] = sl_vtext("héllo wörld");
    w2.row.v[KV_B] = sl_vbytes("", 0);
    assert_int_equal(sl_store_apply(s, &w2, 1, NULL), 0);

    sl_result r;
    sl_result_init(&r);
    assert_int_equal(kv_get(s, "x", SL_READ_DEFAULT, &r), 0);
    assert_int_equal(r.n, 1);
    const sl_row *row = &r.rows[0];
    assert_text(&row->v[KV_K], "x");
    assert_true(row->v[KV_I].set && !row->v[KV_I].null);
    assert_true(row->v[KV_I].i == INT64_MIN);
    assert_true(row->v[KV_J].i == INT64_MAX);
    assert_true(row->v[KV_S].set);
    assert_int_equal(row->v[KV_S].n, 0);
    assert_true(row->v[KV_B].set);
    assert_int_equal(row->v[KV_B].n, sizeof blob);
    assert_memory_equal(row->v[KV_B].p, blob, sizeof blob);
    char small[4];
    assert_int_equal(sl_val_str(&row->v[KV_B], small, sizeof small), SL_ETOOBIG);

    assert_int_equal(kv_get(s, "y", SL_READ_DEFAULT, &r), 0); /* reuse without free */
    assert_text(&r.rows[0].v[KV_S], "héllo wörld");
    assert_true(r.rows[0].v[KV_B].set);
    assert_int_equal(r.rows[0].v[KV_B].n, 0);
    assert_int_equal(r.rows[0].v[KV_I].i, 0);
    assert_false(r.rows[0].v[KV_J].set);
    assert_int_equal(sl_val_str(&r.rows[0].v[KV_J], small, sizeof small), SL_ENOTFOUND);
    sl_result_free(&r);
}

static void t_partial_upsert(sl_store *s) {
    assert_int_equal(kv_put(s, "a", 1, "one", 0), 0);
    sl_write w = kv_w(SL_W_UPSERT, "a");
    w.row.v[KV_J] = sl_vint(2);
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), 0);
    sl_result r;
    sl_result_init(&r);
    assert_int_equal(kv_get(s, "a", SL_READ_DEFAULT, &r), 0);
    assert_int_equal(r.rows[0].v[KV_I].i, 1);
    assert_text(&r.rows[0].v[KV_S], "one");
    assert_int_equal(r.rows[0].v[KV_J].i, 2);
    assert_false(r.rows[0].v[KV_B].set);
    sl_result_free(&r);
}

static void t_null_write(sl_store *s) {
    assert_int_equal(kv_put(s, "a", 1, "one", 0), 0);
    sl_write w = kv_w(SL_W_UPSERT, "a");
    w.row.v[KV_S] = sl_vnull();
    w.row.v[KV_I] = sl_vnull();
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), 0);
    sl_result r;
    sl_result_init(&r);
    assert_int_equal(kv_get(s, "a", SL_READ_DEFAULT, &r), 0);
    assert_false(r.rows[0].v[KV_S].set);
    assert_false(r.rows[0].v[KV_I].set);
    sl_result_free(&r);
}

static void t_delete_row(sl_store *s) {
    assert_int_equal(kv_put(s, "a", 1, NULL, 0), 0);
    assert_int_equal(kv_put(s, "b", 2, NULL, 0), 0);
    sl_write w = kv_w(SL_W_DELETE_ROW, "a");
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), 0);
    assert_int_equal(kv_i(s, "a"), -999);
    assert_int_equal(kv_i(s, "b"), 2);
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), 0); /* deleting nothing is fine */

    for (int c = 1; c <= 3; c++)
        assert_int_equal(ck_put(s, "p", 1, c, "x", "v", 0), 0);
    sl_write d = ck_w(SL_W_DELETE_ROW, "p", 1, 2, "x");
    assert_int_equal(sl_store_apply(s, &d, 1, NULL), 0);
    sl_slice q = ck_q("p", 1);
    assert_slice(s, &q, "1x 3x");
}

static void t_delete_partition(sl_store *s) {
    for (int c = 1; c <= 3; c++)
        assert_int_equal(ck_put(s, "a", 1, c, "x", "v", 0), 0);
    for (int c = 1; c <= 2; c++)
        assert_int_equal(ck_put(s, "a", 2, c, "x", "v", 0), 0);
    assert_int_equal(ck_put(s, "b", 1, 7, "x", "v", 0), 0);
    sl_write d = wr(&T_CK, SL_W_DELETE_PARTITION);
    d.row.v[CK_P] = sl_vtext("a");
    d.row.v[CK_Q] = sl_vint(1);
    assert_int_equal(sl_store_apply(s, &d, 1, NULL), 0);
    sl_slice q = ck_q("a", 1);
    assert_slice(s, &q, "");
    q = ck_q("a", 2);
    assert_slice(s, &q, "1x 2x");
    q = ck_q("b", 1);
    assert_slice(s, &q, "7x");
}

static void t_slice_order(sl_store *s) {
    static const int c1s[] = {3, 1, 2, -5};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ck_put(s, "p", 1, c1s[i], "b", "v", 0), 0);
        assert_int_equal(ck_put(s, "p", 1, c1s[i], "a", "v", 0), 0);
    }
    assert_int_equal(ck_put(s, "p", 2, 0, "z", "other partition", 0), 0);
    sl_slice q = ck_q("p", 1);
    assert_slice(s, &q, "-5a -5b 1a 1b 2a 2b 3a 3b");
    q.desc = 1;
    assert_slice(s, &q, "3b 3a 2b 2a 1b 1a -5b -5a");
}

static void t_slice_bounds(sl_store *s) {
    for (int c = 1; c <= 5; c++)
        assert_int_equal(ck_put(s, "p", 1, c, "x", "v", 0), 0);
    sl_slice q = ck_q("p", 1);
    q.nfrom = q.nto = 1;
    q.from[0] = sl_vint(2);
    q.to[0] = sl_vint(4);
    assert_slice(s, &q, "2x 3x 4x");
    q.desc = 1;
    assert_slice(s, &q, "4x 3x 2x");
    q.from_excl = q.to_excl = 1;
    assert_slice(s, &q, "3x");
    q.desc = 0;
    assert_slice(s, &q, "3x");
    q.to_excl = 0;
    assert_slice(s, &q, "3x 4x");
    q.nto = 0;
    assert_slice(s, &q, "3x 4x 5x");
    q.nfrom = 0;
    q.nto = 1;
    q.to_excl = 1;
    assert_slice(s, &q, "1x 2x 3x");
    q.from[0] = sl_vint(4);
    q.to[0] = sl_vint(2);
    q.nfrom = 1;
    assert_slice(s, &q, ""); /* empty range */
}

static void t_slice_prefix(sl_store *s) {
    static const char *c2s[] = {"a", "b", "c"};
    for (int c = 1; c <= 3; c++)
        for (int j = 0; j < 3; j++)
            assert_int_equal(ck_put(s, "p", 1, c, c2s[j], "v", 0), 0);
    sl_slice q = ck_q("p", 1);
    q.nfrom = 2;
    q.from[0] = sl_vint(2);
    q.from[1] = sl_vtext("b");
    assert_slice(s, &q, "2b 2c 3a 3b 3c");
    q.from_excl = 1;
    assert_slice(s, &q, "2c 3a 3b 3c");
    q.nfrom = 1; /* the prefix (2): excludes every row whose c1 is 2 */
    assert_slice(s, &q, "3a 3b 3c");
    q.from_excl = 0;
    assert_slice(s, &q, "2a 2b 2c 3a 3b 3c");
    q.nfrom = 0;
    q.nto = 1;
    q.to[0] = sl_vint(2);
    assert_slice(s, &q, "1a 1b 1c 2a 2b 2c");
    q.to_excl = 1;
    assert_slice(s, &q, "1a 1b 1c");
    q.nfrom = 2;
    q.from[0] = sl_vint(1);
    q.from[1] = sl_vtext("b");
    q.from_excl = 1;
    q.nto = 2;
    q.to[0] = sl_vint(3);
    q.to[1] = sl_vtext("a");
    q.to_excl = 0;
    assert_slice(s, &q, "1c 2a 2b 2c 3a");
    q.desc = 1;
    assert_slice(s, &q, "3a 2c 2b 2a 1c");
    q.nfrom = 0;
    q.nto = 2;
    q.to[0] = sl_vint(2);
    q.to[1] = sl_vtext("b");
    q.to_excl = 1;
    assert_slice(s, &q, "2a 1c 1b 1a");
}

static void t_slice_paging(sl_store *s) {
    for (int c = 0; c < 25; c++)
        assert_int_equal(ck_put(s, "p", 1, c, "x", "v", 0), 0);
    for (int desc = 0; desc < 2; desc++) {
        sl_slice q = ck_q("p", 1);
        q.limit = 10;
        q.desc = desc;
        int seen = 0, pages = 0, next = desc ? 24 : 0;
        for (;;) {
            sl_result r;
            sl_result_init(&r);
            assert_int_equal(sl_store_slice(s, &q, &r), 0);
            pages++;
            assert_int_equal(r.n, pages < 3 ? 10 : 5);
            assert_int_equal(r.more, pages < 3);
            for (size_t i = 0; i < r.n; i++) {
                assert_int_equal(r.rows[i].v[CK_C1].i, next);
                next += desc ? -1 : 1;
            }
            seen += (int)r.n;
            if (!r.more) {
                sl_result_free(&r);
                break;
            }
            /* The next page starts after the last row's clustering key. The
             * key values point into r, so copy the int and keep r until the
             * query ran. */
            const sl_row *last = &r.rows[r.n - 1];
            sl_val *b = desc ? q.to : q.from;
            b[0] = sl_vint(last->v[CK_C1].i);
            b[1] = sl_vtext("x");
            if (desc)
                q.nto = 2, q.to_excl = 1;
            else
                q.nfrom = 2, q.from_excl = 1;
            sl_result_free(&r);
        }
        assert_int_equal(seen, 25);
        assert_int_equal(pages, 3);
    }
    /* A limit equal to the row count is not "more". */
    sl_slice q = ck_q("p", 1);
    q.limit = 25;
    sl_result r;
    sl_result_init(&r);
    assert_int_equal(sl_store_slice(s, &q, &r), 0);
    assert_int_equal(r.n, 25);
    assert_int_equal(r.more, 0);
    q.limit = 24;
    assert_int_equal(sl_store_slice(s, &q, &r), 0);
    assert_int_equal(r.n, 24);
    assert_int_equal(r.more, 1);
    sl_result_free(&r);
}

static void t_ttl_get(sl_store *s) {
    sl_clock_manual(1);
    assert_int_equal(kv_put(s, "t", 1, "stale", 10), 0);
    assert_int_equal(kv_put(s, "forever", 2, NULL, 0), 0);
    sl_clock_advance_ms(9999);
    assert_int_equal(kv_i(s, "t"), 1);
    sl_clock_advance_ms(1);
    assert_int_equal(kv_i(s, "t"), -999);
    sl_clock_advance_ms(1000LL * 86400 * 365);
    assert_int_equal(kv_i(s, "forever"), 2);

    /* An upsert onto the expired row must not resurrect its old columns. */
    sl_write w = kv_w(SL_W_UPSERT, "t");
    w.row.v[KV_J] = sl_vint(5);
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), 0);
    sl_result r;
    sl_result_init(&r);
    assert_int_equal(kv_get(s, "t", SL_READ_DEFAULT, &r), 0);
    assert_int_equal(r.rows[0].v[KV_J].i, 5);
    assert_false(r.rows[0].v[KV_I].set);
    assert_false(r.rows[0].v[KV_S].set);
    sl_result_free(&r);

    /* A later write with a TTL renews the row's expiry. */
    assert_int_equal(kv_put(s, "r", 1, NULL, 5), 0);
    sl_clock_advance_ms(4000);
    assert_int_equal(kv_put(s, "r", 2, NULL, 5), 0);
    sl_clock_advance_ms(4000);
    assert_int_equal(kv_i(s, "r"), 2);
    sl_clock_advance_ms(1000);
    assert_int_equal(kv_i(s, "r"), -999);
}

static void t_ttl_slice(sl_store *s) {
    sl_clock_manual(1);
    for (int c = 1; c <= 4; c++)
        assert_int_equal(ck_put(s, "p", 1, c, "x", "v", c % 2 ? 3 : 0), 0);
    sl_slice q = ck_q("p", 1);
    assert_slice(s, &q, "1x 2x 3x 4x");
    sl_clock_advance_ms(3000);
    assert_slice(s, &q, "2x 4x");
    q.limit = 1;
    assert_slice(s, &q, "2x+");
    q.limit = 2;
    assert_slice(s, &q, "2x 4x");
}

static void t_ttl_cas(sl_store *s) {
    sl_clock_manual(1);
    sl_write w = kv_w(SL_W_INSERT_IF_NOT_EXISTS, "lease");
    w.row.v[KV_S] = sl_vtext("node1");
    w.ttl = 5;
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), 0);
    w.row.v[KV_S] = sl_vtext("node2");
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), SL_ENOTAPPLIED);
    sl_clock_advance_ms(5000);

    /* Renewing the expired lease is not applied, and shows no row. */
    sl_write u = kv_w(SL_W_UPDATE_IF, "lease");
    u.row.v[KV_I] = sl_vint(1);
    u.cond[0] = (sl_cond){KV_S, sl_vtext("node1")};
    u.ncond = 1;
    sl_result cur;
    sl_result_init(&cur);
    assert_int_equal(sl_store_apply(s, &u, 1, &cur), SL_ENOTAPPLIED);
    assert_int_equal(cur.n, 0);

    /* Taking it over is. */
    assert_int_equal(sl_store_apply(s, &w, 1, &cur), 0);
    assert_int_equal(kv_get(s, "lease", SL_READ_SERIAL, &cur), 0);
    assert_text(&cur.rows[0].v[KV_S], "node2");
    assert_false(cur.rows[0].v[KV_I].set);
    sl_result_free(&cur);

    /* A conditional update renews the expiry it asks for (taken over at
     * 5 s with a TTL of 5: due at 10 s; renewed at 8 s for 5: due at 13 s). */
    sl_clock_advance_ms(3000);
    u.cond[0] = (sl_cond){KV_S, sl_vtext("node2")};
    u.ttl = 5;
    assert_int_equal(sl_store_apply(s, &u, 1, NULL), 0);
    sl_clock_advance_ms(4999);
    assert_int_equal(kv_i(s, "lease"), 1);
    /* Asked again a moment later (at 12.999 s for 1 s: 13.999 s), the row
     * may keep the expiry it has, at most a second before the one asked
     * (as Cassandra, which counts expiry in whole seconds), never after. */
    u.row.v[KV_I] = sl_vint(2);
    u.ttl = 1;
    assert_int_equal(sl_store_apply(s, &u, 1, NULL), 0);
    assert_int_equal(kv_i(s, "lease"), 2);
    sl_clock_advance_ms(1000);
    assert_int_equal(kv_i(s, "lease"), -999);

    /* An update without a TTL leaves a row that had one for good. */
    assert_int_equal(kv_put(s, "p", 1, "node1", 5), 0);
    sl_write keep = kv_w(SL_W_UPDATE_IF, "p");
    keep.row.v[KV_I] = sl_vint(3);
    keep.cond[0] = (sl_cond){KV_S, sl_vtext("node1")};
    keep.ncond = 1;
    assert_int_equal(sl_store_apply(s, &keep, 1, NULL), 0);
    sl_clock_advance_ms(1000LL * 86400);
    assert_int_equal(kv_i(s, "p"), 3);
    /* And one with a TTL shorter than the row's shortens its life. */
    keep.ttl = 2;
    assert_int_equal(sl_store_apply(s, &keep, 1, NULL), 0);
    sl_clock_advance_ms(2000);
    assert_int_equal(kv_i(s, "p"), -999);
    /* Even by less than a second: a row never outlives what was asked. */
    assert_int_equal(kv_put(s, "q", 1, "node1", 5), 0);
    sl_clock_advance_ms(500);
    keep.row.v[KV_K] = sl_vtext("q");
    keep.ttl = 4;
    assert_int_equal(sl_store_apply(s, &keep, 1, NULL), 0);
    sl_clock_advance_ms(3999);
    assert_int_equal(kv_i(s, "q"), 3);
    sl_clock_advance_ms(1);
    assert_int_equal(kv_i(s, "q"), -999);

    /* One that sets no column, only a TTL, renews the expiry all the same. */
    assert_int_equal(kv_put(s, "t0", 1, "x", 5), 0);
    sl_write only = kv_w(SL_W_UPDATE_IF, "t0");
    only.cond[0] = (sl_cond){KV_S, sl_vtext("x")};
    only.ncond = 1;
    only.ttl = 60;
    assert_int_equal(sl_store_apply(s, &only, 1, NULL), 0);
    sl_clock_advance_ms(30000);
    assert_int_equal(kv_i(s, "t0"), 1);
}

static void t_insert_if_not_exists(sl_store *s) {
    sl_write w = kv_w(SL_W_INSERT_IF_NOT_EXISTS, "a");
    w.row.v[KV_I] = sl_vint(1);
    w.row.v[KV_S] = sl_vtext("first");
    sl_result cur;
    sl_result_init(&cur);
    assert_int_equal(sl_store_apply(s, &w, 1, &cur), 0);
    assert_int_equal(cur.n, 0);
    w.row.v[KV_I] = sl_vint(2);
    w.row.v[KV_S] = sl_vtext("second");
    assert_int_equal(sl_store_apply(s, &w, 1, &cur), SL_ENOTAPPLIED);
    assert_int_equal(cur.n, 1);
    assert_text(&cur.rows[0].v[KV_K], "a");
    assert_int_equal(cur.rows[0].v[KV_I].i, 1);
    assert_text(&cur.rows[0].v[KV_S], "first");
    sl_result_free(&cur);
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), SL_ENOTAPPLIED); /* current may be NULL */
    assert_int_equal(kv_i(s, "a"), 1);
}

static void t_update_if(sl_store *s) {
    assert_int_equal(kv_put(s, "a", 1, "x", 0), 0);
    sl_result cur;
    sl_result_init(&cur);

    sl_write u = kv_w(SL_W_UPDATE_IF, "a");
    u.row.v[KV_S] = sl_vtext("y");
    u.cond[0] = (sl_cond){KV_I, sl_vint(2)};
    u.ncond = 1;
    assert_int_equal(sl_store_apply(s, &u, 1, &cur), SL_ENOTAPPLIED);
    assert_int_equal(cur.n, 1);
    assert_int_equal(cur.rows[0].v[KV_I].i, 1);
    /* Columns outside the conditions are not promised (Cassandra returns
     * the condition columns only); the embedded store returns them all. */
    if (strcmp(s->type->name, "sqlite") == 0) assert_text(&cur.rows[0].v[KV_S], "x");

    u.cond[0].v = sl_vint(1);
    u.cond[1] = (sl_cond){KV_S, sl_vtext("x")};
    u.ncond = 2;
    assert_int_equal(sl_store_apply(s, &u, 1, &cur), 0);
    assert_int_equal(cur.n, 0);
    assert_int_equal(kv_get(s, "a", SL_READ_DEFAULT, &cur), 0);
    assert_text(&cur.rows[0].v[KV_S], "y");
    assert_int_equal(cur.rows[0].v[KV_I].i, 1);

    /* "j IS NULL" holds while j is unset, and not once it is set. */
    sl_write n = kv_w(SL_W_UPDATE_IF, "a");
    n.row.v[KV_J] = sl_vint(7);
    n.cond[0] = (sl_cond){KV_J, sl_vnull()};
    n.ncond = 1;
    assert_int_equal(sl_store_apply(s, &n, 1, &cur), 0);
    assert_int_equal(sl_store_apply(s, &n, 1, &cur), SL_ENOTAPPLIED);
    assert_int_equal(cur.rows[0].v[KV_J].i, 7);
    /* "j = 7" with j unset does not hold either. */
    n.cond[0] = (sl_cond){KV_B, sl_vbytes("z", 1)};
    assert_int_equal(sl_store_apply(s, &n, 1, &cur), SL_ENOTAPPLIED);

    /* An update of a row that does not exist is not applied. */
    sl_write m = kv_w(SL_W_UPDATE_IF, "missing");
    m.row.v[KV_I] = sl_vint(1);
    m.cond[0] = (sl_cond){KV_I, sl_vnull()};
    m.ncond = 1;
    assert_int_equal(sl_store_apply(s, &m, 1, &cur), SL_ENOTAPPLIED);
    assert_int_equal(cur.n, 0);
    assert_int_equal(kv_i(s, "missing"), -999);
    sl_result_free(&cur);
}

static void t_cas_batch(sl_store *s) {
    assert_int_equal(ck_put(s, "p", 1, 1, "a", "x", 0), 0);
    assert_int_equal(ck_put(s, "p", 1, 2, "a", "y", 0), 0);
    sl_write b[3];
    b[0] = ck_w(SL_W_UPDATE_IF, "p", 1, 1, "a");
    b[0].row.v[CK_V] = sl_vtext("x2");
    b[0].cond[0] = (sl_cond){CK_V, sl_vtext("x")};
    b[0].ncond = 1;
    b[1] = ck_w(SL_W_UPDATE_IF, "p", 1, 2, "a");
    b[1].row.v[CK_V] = sl_vtext("y2");
    b[1].cond[0] = (sl_cond){CK_V, sl_vtext("WRONG")};
    b[1].ncond = 1;
    b[2] = ck_w(SL_W_UPSERT, "p", 1, 3, "a");
    b[2].row.v[CK_V] = sl_vtext("z");

    sl_result cur;
    sl_result_init(&cur);
    assert_int_equal(sl_store_apply(s, b, 3, &cur), SL_ENOTAPPLIED);
    assert_int_equal(cur.n, 2);
    assert_int_equal(cur.rows[0].v[CK_C1].i, 1);
    assert_text(&cur.rows[0].v[CK_V], "x");
    assert_int_equal(cur.rows[1].v[CK_C1].i, 2);
    assert_text(&cur.rows[1].v[CK_V], "y");
    sl_result_free(&cur);
    sl_slice q = ck_q("p", 1);
    assert_slice(s, &q, "1a 2a"); /* nothing of the batch applied */
    sl_val key[4] = {sl_vtext("p"), sl_vint(1), sl_vint(1), sl_vtext("a")};
    assert_int_equal(sl_store_get(s, &T_CK, key, SL_READ_DEFAULT, &cur), 0);
    assert_text(&cur.rows[0].v[CK_V], "x");

    b[1].cond[0].v = sl_vtext("y");
    assert_int_equal(sl_store_apply(s, b, 3, &cur), 0);
    assert_slice(s, &q, "1a 2a 3a");
    assert_int_equal(sl_store_get(s, &T_CK, key, SL_READ_DEFAULT, &cur), 0);
    assert_text(&cur.rows[0].v[CK_V], "x2");

    /* An insert-if-not-exists of an existing row fails the whole batch. */
    sl_write c[2];
    c[0] = ck_w(SL_W_INSERT_IF_NOT_EXISTS, "p", 1, 4, "a");
    c[0].row.v[CK_V] = sl_vtext("new");
    c[1] = ck_w(SL_W_INSERT_IF_NOT_EXISTS, "p", 1, 3, "a");
    assert_int_equal(sl_store_apply(s, c, 2, &cur), SL_ENOTAPPLIED);
    assert_int_equal(cur.n, 1);
    assert_int_equal(cur.rows[0].v[CK_C1].i, 3);
    assert_slice(s, &q, "1a 2a 3a");

    /* A conditional batch must stay in one partition. */
    c[1] = ck_w(SL_W_UPSERT, "p", 2, 1, "a");
    assert_int_equal(sl_store_apply(s, c, 2, &cur), SL_EINVAL);
    assert_slice(s, &q, "1a 2a 3a");
    sl_result_free(&cur);
}

static void t_batch_unconditional(sl_store *s) {
    assert_int_equal(kv_put(s, "gone", 1, NULL, 0), 0);
    sl_write b[4];
    b[0] = kv_w(SL_W_UPSERT, "a");
    b[0].row.v[KV_I] = sl_vint(10);
    b[1] = kv_w(SL_W_UPSERT, "b");
    b[1].row.v[KV_I] = sl_vint(20);
    b[2] = kv_w(SL_W_DELETE_ROW, "gone");
    b[3] = ck_w(SL_W_UPSERT, "p", 9, 1, "a");
    assert_int_equal(sl_store_apply(s, b, 4, NULL), 0);
    assert_int_equal(kv_i(s, "a"), 10);
    assert_int_equal(kv_i(s, "b"), 20);
    assert_int_equal(kv_i(s, "gone"), -999);
    sl_slice q = ck_q("p", 9);
    assert_slice(s, &q, "1a");
}

/* A batch over several partitions whose values add up to far more than
 * Cassandra takes in one logged batch (batch_size_fail_threshold, 50 KiB by
 * default) is still applied, every row of it (a batch put of large messages
 * spanning buckets). */
static void t_batch_large(sl_store *s) {
    enum { ROWS = 12, SZ = 24 * 1024 };
    static unsigned char blob[SZ];
    for (size_t i = 0; i < SZ; i++) blob[i] = (unsigned char)(i * 13);
    sl_write b[ROWS];
    char keys[ROWS][24];
    for (int i = 0; i < ROWS; i++) {
        snprintf(keys[i], sizeof keys[i], "large%d", i);
        b[i] = kv_w(SL_W_UPSERT, keys[i]);
        b[i].row.v[KV_I] = sl_vint(i);
        b[i].row.v[KV_B] = sl_vbytes(blob, SZ);
    }
    assert_int_equal(sl_store_apply(s, b, ROWS, NULL), 0);
    for (int i = 0; i < ROWS; i++) {
        sl_result r;
        sl_result_init(&r);
        assert_int_equal(kv_get(s, keys[i], SL_READ_DEFAULT, &r), 0);
        assert_int_equal(r.rows[0].v[KV_I].i, i);
        assert_int_equal(r.rows[0].v[KV_B].n, SZ);
        assert_memory_equal(r.rows[0].v[KV_B].p, blob, SZ);
        sl_result_free(&r);
    }
}

static void t_serial_read(sl_store *s) {
    sl_write w = kv_w(SL_W_INSERT_IF_NOT_EXISTS, "id");
    w.row.v[KV_I] = sl_vint(100);
    w.row.v[KV_S] = sl_vtext("nonce-1");
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), 0);
    sl_result r;
    sl_result_init(&r);
    assert_int_equal(kv_get(s, "id", SL_READ_SERIAL, &r), 0);
    assert_text(&r.rows[0].v[KV_S], "nonce-1");
    sl_write u = kv_w(SL_W_UPDATE_IF, "id");
    u.row.v[KV_I] = sl_vint(200);
    u.row.v[KV_S] = sl_vtext("nonce-2");
    u.cond[0] = (sl_cond){KV_S, sl_vtext("nonce-1")};
    u.ncond = 1;
    assert_int_equal(sl_store_apply(s, &u, 1, NULL), 0);
    assert_int_equal(kv_get(s, "id", SL_READ_SERIAL, &r), 0);
    assert_int_equal(r.rows[0].v[KV_I].i, 200);
    assert_text(&r.rows[0].v[KV_S], "nonce-2");
    sl_result_free(&r);
}

static void t_invalid(sl_store *s) {
    static const char tiny[1];
    sl_write w = kv_w(SL_W_UPSERT, "big");
    /* The size is checked before the bytes are read: reading them would
     * overrun tiny and the sanitizers would say so. */
    w.row.v[KV_B] = sl_vbytes(tiny, (16u << 20) + 1);
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), SL_EINVAL);
    sl_write k = wr(&T_KV, SL_W_UPSERT); /* key not set */
    k.row.v[KV_I] = sl_vint(1);
    assert_int_equal(sl_store_apply(s, &k, 1, NULL), SL_EINVAL);
    k.row.v[KV_K] = sl_vnull(); /* null key */
    assert_int_equal(sl_store_apply(s, &k, 1, NULL), SL_EINVAL);
    sl_write c = kv_w(SL_W_UPDATE_IF, "a"); /* a condition on a key column */
    c.cond[0] = (sl_cond){KV_K, sl_vtext("a")};
    c.ncond = 1;
    assert_int_equal(sl_store_apply(s, &c, 1, NULL), SL_EINVAL);
    sl_val key[1] = {{0}};
    sl_result r;
    sl_result_init(&r);
    assert_int_equal(sl_store_get(s, &T_KV, key, SL_READ_DEFAULT, &r), SL_EINVAL);
    assert_int_equal(sl_store_ping(s), 0);
    assert_int_equal(sl_store_apply(s, &w, 0, NULL), 0); /* nothing to do */
}

/* Values up to the 16 MiB limit round-trip, and many mid-sized ones in
 * one result stay intact (they share the result's memory). */
static void t_big_values(sl_store *s) {
    size_t big = 16u << 20;
    unsigned char *blob = malloc(big);
    char *text = malloc(3001);
    assert_non_null(blob);
    assert_non_null(text);
    for (size_t i = 0; i < big; i++)
        blob[i] = (unsigned char)(i * 7 + (i >> 16));
    sl_write w = kv_w(SL_W_UPSERT, "big");
    w.row.v[KV_B] = sl_vbytes(blob, big);
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), 0);
    sl_result r;
    sl_result_init(&r);
    assert_int_equal(kv_get(s, "big", SL_READ_DEFAULT, &r), 0);
    assert_int_equal(r.rows[0].v[KV_B].n, big);
    assert_memory_equal(r.rows[0].v[KV_B].p, blob, big);

    for (int c = 0; c < 20; c++) {
        memset(text, 'a' + c, 3000);
        text[3000] = '\0';
        assert_int_equal(ck_put(s, "big", 1, c, "x", text, 0), 0);
    }
    sl_slice q = ck_q("big", 1);
    assert_int_equal(sl_store_slice(s, &q, &r), 0);
    assert_int_equal(r.n, 20);
    for (int c = 0; c < 20; c++) {
        memset(text, 'a' + c, 3000);
        assert_int_equal(r.rows[c].v[CK_V].n, 3000);
        assert_memory_equal(r.rows[c].v[CK_V].p, text, 3000);
    }
    sl_result_free(&r);
    free(blob);
    free(text);
}

static void t_quoted_names(sl_store *s) {
    sl_write w = wr(&T_ODD, SL_W_UPSERT);
    w.row.v[0] = sl_vtext("a\"b");
    w.row.v[1] = sl_vint(1);
    w.row.v[2] = sl_vbytes("xy", 2);
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), 0);
    w.row.v[1] = sl_vint(2);
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), 0);
    sl_slice q;
    memset(&q, 0, sizeof q);
    q.t = &T_ODD;
    q.pk[0] = sl_vtext("a\"b");
    q.desc = 1;
    sl_result r;
    sl_result_init(&r);
    assert_int_equal(sl_store_slice(s, &q, &r), 0);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.rows[0].v[1].i, 2);
    assert_memory_equal(r.rows[1].v[2].p, "xy", 2);
    sl_result_free(&r);
}

/* --- Real-time TTL variants (backends whose expiry follows the server's
 * clock, like Cassandra's: sl_clock_manual cannot move it). Each waits for
 * the expiry with a deadline instead of advancing a manual clock. ------- */

static double rt_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Polls until kv_i(k) == want or the deadline (seconds) passes. */
static int64_t kv_wait(sl_store *s, const char *k, int64_t want, double secs) {
    double end = rt_now() + secs;
    int64_t v;
    while ((v = kv_i(s, k)) != want && rt_now() < end)
        usleep(100 * 1000);
    return v;
}

static void t_ttl_get_rt(sl_store *s) {
    assert_int_equal(kv_put(s, "t", 1, "stale", 2), 0);
    assert_int_equal(kv_put(s, "forever", 2, NULL, 0), 0);
    assert_int_equal(kv_i(s, "t"), 1);
    assert_int_equal(kv_wait(s, "t", -999, 10), -999);
    assert_int_equal(kv_i(s, "forever"), 2);

    /* An upsert onto the expired row must not resurrect its old columns. */
    sl_write w = kv_w(SL_W_UPSERT, "t");
    w.row.v[KV_J] = sl_vint(5);
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), 0);
    sl_result r;
    sl_result_init(&r);
    assert_int_equal(kv_get(s, "t", SL_READ_DEFAULT, &r), 0);
    assert_int_equal(r.rows[0].v[KV_J].i, 5);
    assert_false(r.rows[0].v[KV_I].set);
    assert_false(r.rows[0].v[KV_S].set);
    sl_result_free(&r);

    /* A later write with a TTL renews the row's expiry. */
    double t0 = rt_now();
    assert_int_equal(kv_put(s, "r", 1, NULL, 3), 0);
    usleep(2000 * 1000);
    assert_int_equal(kv_put(s, "r", 2, NULL, 3), 0);
    usleep(1500 * 1000);
    if (rt_now() - t0 < 4.5) assert_int_equal(kv_i(s, "r"), 2); /* past the first TTL, within the second */
    assert_int_equal(kv_wait(s, "r", -999, 10), -999);
}

static void t_ttl_slice_rt(sl_store *s) {
    for (int c = 1; c <= 4; c++)
        assert_int_equal(ck_put(s, "p", 1, c, "x", "v", c % 2 ? 2 : 0), 0);
    sl_slice q = ck_q("p", 1);
    assert_slice(s, &q, "1x 2x 3x 4x");
    double end = rt_now() + 10;
    char buf[256];
    while (strcmp(render(s, &q, buf, sizeof buf), "2x 4x") != 0 && rt_now() < end)
        usleep(100 * 1000);
    assert_slice(s, &q, "2x 4x");
    q.limit = 1;
    assert_slice(s, &q, "2x+");
    q.limit = 2;
    assert_slice(s, &q, "2x 4x");
}

static void t_ttl_cas_rt(sl_store *s) {
    sl_write w = kv_w(SL_W_INSERT_IF_NOT_EXISTS, "lease");
    w.row.v[KV_S] = sl_vtext("node1");
    w.ttl = 2;
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), 0);
    w.row.v[KV_S] = sl_vtext("node2");
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), SL_ENOTAPPLIED);
    sl_result cur;
    sl_result_init(&cur);
    double end = rt_now() + 10;
    while (kv_get(s, "lease", SL_READ_SERIAL, &cur) == 0 && rt_now() < end)
        usleep(100 * 1000);

    /* Renewing the expired lease is not applied, and shows no row. */
    sl_write u = kv_w(SL_W_UPDATE_IF, "lease");
    u.row.v[KV_I] = sl_vint(1);
    u.cond[0] = (sl_cond){KV_S, sl_vtext("node1")};
    u.ncond = 1;
    assert_int_equal(sl_store_apply(s, &u, 1, &cur), SL_ENOTAPPLIED);
    assert_int_equal(cur.n, 0);

    /* Taking it over is. */
    assert_int_equal(sl_store_apply(s, &w, 1, &cur), 0);
    assert_int_equal(kv_get(s, "lease", SL_READ_SERIAL, &cur), 0);
    assert_text(&cur.rows[0].v[KV_S], "node2");
    assert_false(cur.rows[0].v[KV_I].set);
    sl_result_free(&cur);
}

typedef struct {
    const char *name;
    void (*fn)(sl_store *s);
    int needs_manual_clock;
    void (*realtime)(sl_store *s); /* the variant for backends on a real clock */
} contract_case;

static const contract_case contract_cases[] = {
    {"get_missing", t_get_missing, 0, NULL},
    {"all_types", t_all_types, 0, NULL},
    {"partial_upsert", t_partial_upsert, 0, NULL},
    {"null_write", t_null_write, 0, NULL},
    {"delete_row", t_delete_row, 0, NULL},
    {"delete_partition", t_delete_partition, 0, NULL},
    {"slice_order", t_slice_order, 0, NULL},
    {"slice_bounds", t_slice_bounds, 0, NULL},
    {"slice_prefix", t_slice_prefix, 0, NULL},
    {"slice_paging", t_slice_paging, 0, NULL},
    {"ttl_get", t_ttl_get, 1, t_ttl_get_rt},
    {"ttl_slice", t_ttl_slice, 1, t_ttl_slice_rt},
    {"ttl_cas", t_ttl_cas, 1, t_ttl_cas_rt},
    {"insert_if_not_exists", t_insert_if_not_exists, 0, NULL},
    {"update_if", t_update_if, 0, NULL},
    {"cas_batch", t_cas_batch, 0, NULL},
    {"batch_unconditional", t_batch_unconditional, 0, NULL},
    {"batch_large", t_batch_large, 0, NULL},
    {"serial_read", t_serial_read, 0, NULL},
    {"invalid", t_invalid, 0, NULL},
    {"big_values", t_big_values, 0, NULL},
    {"quoted_names", t_quoted_names, 0, NULL},
};
#define NCASES (sizeof contract_cases / sizeof contract_cases[0])

/* --- Fixtures ------------------------------------------------------------ */

/* A backend for the contract suite: open a store in dir (empty, created). */
typedef struct {
    const char *name;
    int (*open)(const char *dir, sl_store **out);
} backend;

static const backend backend_sqlite = {"sqlite", sl_store_sqlite_open};

/* The Cassandra backend: a live node on 127.0.0.1:$SLUICE_CASSANDRA_PORT
 * (scripts/test.sh starts one). The first open creates a keyspace of this
 * run's own with the test tables; later opens truncate them, so each case
 * starts empty. main() drops the keyspace at the end. */
static char cql_ks[64];
static int cql_schema_done;

static int cql_port(void) {
    const char *p = getenv("SLUICE_CASSANDRA_PORT");
    return p && *p ? atoi(p) : 0;
}

static int cql_open(const char *dir, sl_store **out) {
    (void)dir;
    if (!cql_ks[0]) snprintf(cql_ks, sizeof cql_ks, "sluice_test_%ld", (long)getpid());
    sl_cql_config cfg = {.contact_points = "127.0.0.1", .port = cql_port(), .keyspace = cql_ks};
    int rc = sl_store_cql_open(&cfg, out);
    if (rc) return rc;
    if (!cql_schema_done) {
        rc = sl_store_cql_schema(*out, test_tables, NTABLES, 1, NULL);
        cql_schema_done = rc == 0;
        return rc;
    }
    for (size_t i = 0; i < NTABLES && rc == 0; i++) {
        char q[256];
        snprintf(q, sizeof q, "TRUNCATE \"%s\".\"%s\"", cql_ks, test_tables[i]->name);
        sl_cql_opts o = {.flags = SL_CQL_IDEMPOTENT, .timeout_ms = 60000};
        rc = sl_cql_query(sl_store_cql_client(*out), q, NULL, 0, &o, NULL);
    }
    return rc;
}

static void cql_drop_keyspace(void) {
    if (!cql_schema_done) return;
    sl_cql_config cfg = {.contact_points = "127.0.0.1", .port = cql_port(), .keyspace = cql_ks};
    sl_store *s;
    if (sl_store_cql_open(&cfg, &s)) return;
    char q[128];
    snprintf(q, sizeof q, "DROP KEYSPACE IF EXISTS \"%s\"", cql_ks);
    sl_cql_opts o = {.flags = SL_CQL_IDEMPOTENT, .timeout_ms = 60000};
    sl_cql_query(sl_store_cql_client(s), q, NULL, 0, &o, NULL);
    sl_store_close(s);
}

static const backend backend_cql = {"cql", cql_open};

static int cql_exec(sl_store *s, const char *q) {
    sl_cql_opts o = {.flags = SL_CQL_IDEMPOTENT, .timeout_ms = 60000};
    return sl_cql_query(sl_store_cql_client(s), q, NULL, 0, &o, NULL);
}

/* The version `sluice schema` recorded in keyspace ks. */
static int64_t schema_version(sl_store *s, const char *ks) {
    char q[256];
    snprintf(q, sizeof q, "SELECT version FROM \"%s\".schema_version WHERE name = 'sluice'", ks);
    sl_cql_opts o = {.flags = SL_CQL_READ, .consistency = SL_CQL_SERIAL};
    sl_cql_res *res = NULL;
    int64_t v = -1;
    if (sl_cql_query(sl_store_cql_client(s), q, NULL, 0, &o, &res) == 0 && res->r.kind == SL_CQL_RESULT_ROWS &&
        res->r.nrows == 1) {
        sl_cql_rd rows = res->r.rows;
        sl_cql_bytes c;
        sl_cql_rows_next(&rows, &c);
        v = sl_cql_cell_i64(c);
    }
    sl_cql_res_free(res);
    return v;
}

/* A table's comment in system_schema, as text ("" when none or unread). */
static void table_comment(sl_store *s, const char *ks, const char *table, char *out, size_t cap) {
    char q[256];
    snprintf(q, sizeof q,
             "SELECT comment FROM system_schema.tables WHERE keyspace_name = '%s' AND table_name = '%s'", ks,
             table);
    sl_cql_opts o = {.flags = SL_CQL_READ};
    sl_cql_res *res = NULL;
    out[0] = '\0';
    if (sl_cql_query(sl_store_cql_client(s), q, NULL, 0, &o, &res) == 0 &&
        res->r.kind == SL_CQL_RESULT_ROWS && res->r.nrows == 1) {
        sl_cql_rd rows = res->r.rows;
        sl_cql_bytes c;
        sl_cql_rows_next(&rows, &c);
        if (c.len > 0) snprintf(out, cap, "%.*s", (int)c.len, (const char *)c.p);
    }
    sl_cql_res_free(res);
}

/* `sluice schema` on Cassandra: ensure() refuses a missing schema, creating
 * it twice is a no-op, a column added to a definition is migrated, a
 * schema version newer than the build's is refused, and versions 1 to 5
 * are migrated to version 6. */
static void t_cql_schema(void **state) {
    (void)state;
    if (!cql_port()) {
        print_message("skipped: SLUICE_CASSANDRA_PORT is not set (no Cassandra node to test against)\n");
        skip();
    }
    char ks[64], q[256];
    snprintf(ks, sizeof ks, "sluice_test_schema_%ld", (long)getpid());
    sl_cql_config cfg = {.contact_points = "127.0.0.1", .port = cql_port(), .keyspace = ks};
    sl_store *s;
    assert_int_equal(sl_store_cql_open(&cfg, &s), 0);
    assert_int_equal(sl_store_ensure(s, test_tables, NTABLES), SL_ENOTFOUND);
    assert_int_equal(sl_store_cql_schema(s, test_tables, NTABLES, 0, NULL), SL_ENOTFOUND); /* no keyspace */
    assert_int_equal(sl_store_cql_schema(s, test_tables, NTABLES, 1, NULL), 0);
    assert_int_equal(sl_store_cql_schema(s, test_tables, NTABLES, 1, NULL), 0);
    assert_int_equal(sl_store_ensure(s, test_tables, NTABLES), 0);
    assert_int_equal(kv_put(s, "kept", 7, "x", 0), 0);

    /* A regular column added to a definition. */
    static const sl_table kv2 = {
        "kv",
        1,
        0,
        6,
        {{"k", SL_TEXT}, {"i", SL_INT}, {"s", SL_TEXT}, {"b", SL_BLOB}, {"j", SL_INT}, {"new", SL_TEXT}},
        0};
    const sl_table *const t2[] = {&kv2};
    assert_int_equal(sl_store_ensure(s, t2, 1), SL_ENOTFOUND);
    assert_int_equal(sl_store_cql_schema(s, t2, 1, 0, NULL), 0);
    assert_int_equal(sl_store_ensure(s, t2, 1), 0);
    assert_int_equal(kv_i(s, "kept"), 7);

    /* Table options: set on an existing table too, and again after a change. */
    const char *with[] = {"comment = 'first'"};
    char comment[64];
    assert_int_equal(sl_store_cql_schema_with(s, t2, with, 1, 0, NULL), 0);
    table_comment(s, ks, "kv", comment, sizeof comment);
    assert_string_equal(comment, "first");
    with[0] = "comment = 'second'";
    assert_int_equal(sl_store_cql_schema_with(s, t2, with, 1, 0, NULL), 0);
    table_comment(s, ks, "kv", comment, sizeof comment);
    assert_string_equal(comment, "second");
    assert_int_equal(kv_i(s, "kept"), 7);

    /* A newer schema (version 7) is refused; version 1 (before the event
     * log's tables), 2 (before subscriptions), 3 (before FIFO queues), 4
     * (before the messages' first_ms) and 5 (before the census' tallies)
     * are migrated to the current one, 6. */
    snprintf(q, sizeof q, "UPDATE \"%s\".schema_version SET version = 7 WHERE name = 'sluice'", ks);
    assert_int_equal(cql_exec(s, q), 0);
    assert_int_equal(sl_store_cql_schema(s, test_tables, NTABLES, 0, NULL), SL_EINVAL);
    for (int v = 1; v <= 5; v++) {
        snprintf(q, sizeof q, "UPDATE \"%s\".schema_version SET version = %d WHERE name = 'sluice'", ks, v);
        assert_int_equal(cql_exec(s, q), 0);
        assert_int_equal(sl_store_cql_schema(s, test_tables, NTABLES, 0, NULL), 0);
        assert_int_equal(schema_version(s, ks), 6);
    }
    snprintf(q, sizeof q, "DROP KEYSPACE \"%s\"", ks);
    assert_int_equal(cql_exec(s, q), 0);
    sl_store_close(s);
}

typedef struct {
    char dir[64];
    sl_store *s;
    const contract_case *c;
    const backend *be;
} fx;

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static void rm_rf(const char *dir) {
    nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

static int open_store(fx *f) {
    if (f->be->open(f->dir, &f->s)) return -1;
    return sl_store_ensure(f->s, test_tables, NTABLES) ? -1 : 0;
}

static int fx_setup_be(void **state, const contract_case *c, const backend *be) {
    fx *f = calloc(1, sizeof *f);
    if (!f) return -1;
    f->c = c;
    f->be = be;
    snprintf(f->dir, sizeof f->dir, "/tmp/sluice-test-store-XXXXXX");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    if (open_store(f)) {
        sl_store_close(f->s);
        rm_rf(f->dir);
        free(f);
        return -1;
    }
    *state = f;
    return 0;
}

static int fx_teardown(void **state) {
    fx *f = *state;
    sl_store_close(f->s);
    rm_rf(f->dir);
    sl_clock_manual(0);
    free(f);
    return 0;
}

static int fx_setup(void **state, const contract_case *c) {
    return fx_setup_be(state, c, &backend_sqlite);
}

static int contract_setup(void **state) {
    return fx_setup(state, *state);
}

static void contract_run(void **state) {
    fx *f = *state;
    f->c->fn(f->s);
}

/* Without a node the Cassandra cases are skipped (counted as skipped, not
 * passed): setup leaves no store and the body calls skip(). */
static int cql_contract_setup(void **state) {
    if (!cql_port()) {
        fx *f = calloc(1, sizeof *f);
        if (!f) return -1;
        f->c = *state;
        snprintf(f->dir, sizeof f->dir, "/nonexistent");
        *state = f;
        return 0;
    }
    return fx_setup_be(state, *state, &backend_cql);
}

static void cql_contract_run(void **state) {
    fx *f = *state;
    if (!f->s) {
        print_message("skipped: SLUICE_CASSANDRA_PORT is not set (no Cassandra node to test against)\n");
        skip();
    }
    if (f->c->needs_manual_clock) {
        if (!f->c->realtime) skip();
        f->c->realtime(f->s);
        return;
    }
    f->c->fn(f->s);
}

static int sqlite_setup(void **state) {
    return fx_setup(state, NULL);
}

/* --- SQLite-specific tests ----------------------------------------------- */

/* Closes the store and opens its database file as SQLite alone. */
static sqlite3 *closed_raw(fx *f) {
    sl_store_close(f->s);
    f->s = NULL;
    char path[128];
    snprintf(path, sizeof path, "%s/sluice.db", f->dir);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    return db;
}

static void t_durable_reopen(void **state) {
    fx *f = *state;
    assert_int_equal(kv_put(f->s, "kept", 42, "durable", 0), 0);
    assert_int_equal(ck_put(f->s, "p", 1, 1, "a", "v", 0), 0);
    sl_store_close(f->s);
    f->s = NULL;
    assert_int_equal(open_store(f), 0);
    sl_result r;
    sl_result_init(&r);
    assert_int_equal(kv_get(f->s, "kept", SL_READ_DEFAULT, &r), 0);
    assert_int_equal(r.rows[0].v[KV_I].i, 42);
    assert_text(&r.rows[0].v[KV_S], "durable");
    sl_result_free(&r);
    sl_slice q = ck_q("p", 1);
    assert_slice(f->s, &q, "1a");

    /* The layout version is stamped, and a newer one is refused. */
    char path[128];
    sqlite3 *db = closed_raw(f);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 2);
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version=99", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    sl_store *s2 = NULL;
    assert_int_equal(sl_store_sqlite_open(f->dir, &s2), SL_EINVAL);
    assert_null(s2);

    /* Missing parent directories are created. */
    snprintf(path, sizeof path, "%s/nested/deeper", f->dir);
    assert_int_equal(sl_store_sqlite_open(path, &s2), 0);
    assert_int_equal(sl_store_ping(s2), 0);
    sl_store_close(s2);
    snprintf(path, sizeof path, "%s/nested/deeper/sluice.db", f->dir);
    assert_int_equal(access(path, F_OK), 0);
}

/* The first column of the first row of sql, run on the embedded store's
 * file behind the store's back (-1 when there is no row). */
static int64_t raw_int(const fx *f, const char *sql) {
    char path[128];
    snprintf(path, sizeof path, "%s/sluice.db", f->dir);
    sqlite3 *db;
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

/* Enough groups for the writer to purge (more than PURGE_EVERY). */
static void some_groups(sl_store *s) {
    for (int i = 0; i < 40; i++) {
        char k[16];
        snprintf(k, sizeof k, "new%d", i);
        assert_int_equal(kv_put(s, k, i, NULL, 0), 0);
    }
}

/* Expired rows are deleted by the writer, a bounded number at a time. */
static void t_purge(void **state) {
    fx *f = *state;
    sl_clock_manual(1);
    for (int i = 0; i < 40; i++) {
        char k[16];
        snprintf(k, sizeof k, "old%d", i);
        assert_int_equal(kv_put(f->s, k, i, NULL, 1), 0);
    }
    sl_clock_advance_ms(1000);
    some_groups(f->s);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM kv"), 40);
}

/* A blob longer than a few hundred bytes is kept out of its row (rewriting
 * a row would rewrite it each time), where nothing but the store sees it:
 * it reads back exactly, through a get, a slice and a reopen; conditions
 * compare it; and no write, delete, failed condition or purge leaves a
 * value that no row refers to. */
static void big_fill(char *b, size_t n, char seed) {
    for (size_t i = 0; i < n; i++)
        b[i] = (char)(seed + (char)(i * 7 % 251));
}

static void assert_blob(const sl_val *v, const char *p, size_t n) {
    assert_true(v->set && !v->null);
    assert_int_equal(v->n, n);
    assert_memory_equal(v->p, p, n);
}

static void assert_kv_b(sl_store *s, const char *k, const char *p, size_t n) {
    sl_result r;
    sl_result_init(&r);
    assert_int_equal(kv_get(s, k, SL_READ_DEFAULT, &r), 0);
    assert_blob(&r.rows[0].v[KV_B], p, n);
    sl_result_free(&r);
}

static int kv_put_b(sl_store *s, const char *k, int64_t i, const void *b, size_t n, int ttl) {
    sl_write w = kv_w(SL_W_UPSERT, k);
    w.row.v[KV_I] = sl_vint(i);
    w.row.v[KV_B] = b ? sl_vbytes(b, n) : sl_vnull();
    w.ttl = ttl;
    return sl_store_apply(s, &w, 1, NULL);
}

static void t_large_values(void **state) {
    fx *f = *state;
    static char big1[5000], big2[70000], mid[640];
    big_fill(big1, sizeof big1, 'a');
    big_fill(big2, sizeof big2, 'b');
    big_fill(mid, sizeof mid, 'c');
#define VALUES() raw_int(f, "SELECT count(*) FROM kv__v")
    assert_int_equal(kv_put_b(f->s, "x", 1, big1, sizeof big1, 0), 0);
    assert_kv_b(f->s, "x", big1, sizeof big1);
    assert_int_equal(VALUES(), 1);
    assert_int_equal(raw_int(f, "SELECT typeof(b)='integer' FROM kv WHERE k='x'"), 1);

    /* Writes of other columns keep it, and it stays one value. */
    sl_write w = kv_w(SL_W_UPDATE_IF, "x");
    w.row.v[KV_I] = sl_vint(2);
    w.cond[0] = (sl_cond){KV_I, sl_vint(1)};
    w.ncond = 1;
    assert_int_equal(sl_store_apply(f->s, &w, 1, NULL), 0);
    sl_write up = kv_w(SL_W_UPSERT, "x");
    up.row.v[KV_S] = sl_vtext("other");
    assert_int_equal(sl_store_apply(f->s, &up, 1, NULL), 0);
    assert_kv_b(f->s, "x", big1, sizeof big1);
    assert_int_equal(VALUES(), 1);

    /* A condition on it compares the value, whatever its length. */
    w = kv_w(SL_W_UPDATE_IF, "x");
    w.row.v[KV_I] = sl_vint(3);
    w.cond[0] = (sl_cond){KV_B, sl_vbytes(big1, sizeof big1)};
    w.ncond = 1;
    assert_int_equal(sl_store_apply(f->s, &w, 1, NULL), 0);
    w.cond[0] = (sl_cond){KV_B, sl_vbytes(big1, sizeof big1 - 1)};
    assert_int_equal(sl_store_apply(f->s, &w, 1, NULL), SL_ENOTAPPLIED);
    w.cond[0] = (sl_cond){KV_B, sl_vnull()};
    assert_int_equal(sl_store_apply(f->s, &w, 1, NULL), SL_ENOTAPPLIED);
    assert_int_equal(kv_i(f->s, "x"), 3);

    /* A write of a new value whose condition fails keeps nothing of it,
     * alone or undone with its batch. */
    w = kv_w(SL_W_UPDATE_IF, "x");
    w.row.v[KV_B] = sl_vbytes(big2, sizeof big2);
    w.cond[0] = (sl_cond){KV_I, sl_vint(999)};
    w.ncond = 1;
    sl_result cur;
    sl_result_init(&cur);
    assert_int_equal(sl_store_apply(f->s, &w, 1, &cur), SL_ENOTAPPLIED);
    assert_int_equal(cur.n, 1);
    assert_blob(&cur.rows[0].v[KV_B], big1, sizeof big1); /* the current row, value read back */
    sl_result_free(&cur);
    sl_write pair[2] = {kv_w(SL_W_UPDATE_IF, "x"), kv_w(SL_W_UPDATE_IF, "x")};
    pair[0].row.v[KV_B] = sl_vbytes(big2, sizeof big2);
    pair[0].cond[0] = (sl_cond){KV_I, sl_vint(3)};
    pair[0].ncond = 1;
    pair[1].row.v[KV_J] = sl_vint(1);
    pair[1].cond[0] = (sl_cond){KV_I, sl_vint(999)};
    pair[1].ncond = 1;
    assert_int_equal(sl_store_apply(f->s, pair, 2, NULL), SL_ENOTAPPLIED);
    sl_write nx = kv_w(SL_W_INSERT_IF_NOT_EXISTS, "x");
    nx.row.v[KV_B] = sl_vbytes(big2, sizeof big2);
    assert_int_equal(sl_store_apply(f->s, &nx, 1, NULL), SL_ENOTAPPLIED);
    assert_kv_b(f->s, "x", big1, sizeof big1);
    assert_int_equal(VALUES(), 1);

    /* Rewritten: large by large, by one short enough for the row, by null. */
    assert_int_equal(kv_put_b(f->s, "x", 4, big2, sizeof big2, 0), 0);
    assert_kv_b(f->s, "x", big2, sizeof big2);
    assert_int_equal(VALUES(), 1);
    assert_int_equal(kv_put_b(f->s, "x", 5, mid, sizeof mid, 0), 0);
    assert_kv_b(f->s, "x", mid, sizeof mid);
    assert_int_equal(VALUES(), 0);
    assert_int_equal(kv_put_b(f->s, "x", 6, big1, sizeof big1, 0), 0);
    assert_int_equal(kv_put_b(f->s, "x", 7, NULL, 0, 0), 0);
    assert_int_equal(VALUES(), 0);

    /* Deleted with its row. */
    assert_int_equal(kv_put_b(f->s, "x", 8, big1, sizeof big1, 0), 0);
    assert_int_equal(kv_put_b(f->s, "y", 8, big2, sizeof big2, 0), 0);
    assert_int_equal(VALUES(), 2);
    sl_write del = kv_w(SL_W_DELETE_ROW, "y");
    assert_int_equal(sl_store_apply(f->s, &del, 1, NULL), 0);
    assert_int_equal(VALUES(), 1);

    /* A slice reads each row's own value (quoted names: the triggers'
     * SQL quotes them too); a partition deleted takes its values along. */
    for (int c = 1; c <= 3; c++) {
        sl_write o = wr(&T_ODD, SL_W_UPSERT);
        o.row.v[0] = sl_vtext("p");
        o.row.v[1] = sl_vint(c);
        o.row.v[2] = sl_vbytes(c == 2 ? big2 : big1, c == 2 ? sizeof big2 : (size_t)(1000 * c));
        assert_int_equal(sl_store_apply(f->s, &o, 1, NULL), 0);
    }
    sl_slice q;
    memset(&q, 0, sizeof q);
    q.t = &T_ODD;
    q.pk[0] = sl_vtext("p");
    sl_result r;
    sl_result_init(&r);
    assert_int_equal(sl_store_slice(f->s, &q, &r), 0);
    assert_int_equal(r.n, 3);
    assert_blob(&r.rows[0].v[2], big1, 1000);
    assert_blob(&r.rows[1].v[2], big2, sizeof big2);
    assert_blob(&r.rows[2].v[2], big1, 3000);
    sl_result_free(&r);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM \"order__v\""), 3);
    /* A batch that inserts too reads its conditions before it writes:
     * those compare the value where it is kept as well. */
    sl_write b2[2] = {wr(&T_ODD, SL_W_INSERT_IF_NOT_EXISTS), wr(&T_ODD, SL_W_UPDATE_IF)};
    for (int i = 0; i < 2; i++) {
        b2[i].row.v[0] = sl_vtext("p");
        b2[i].row.v[1] = sl_vint(i ? 1 : 9);
        b2[i].row.v[2] = sl_vbytes(big2, 700);
    }
    b2[1].cond[0] = (sl_cond){2, sl_vbytes(big1, 999)};
    b2[1].ncond = 1;
    assert_int_equal(sl_store_apply(f->s, b2, 2, NULL), SL_ENOTAPPLIED);
    b2[1].cond[0] = (sl_cond){2, sl_vbytes(big1, 1000)};
    assert_int_equal(sl_store_apply(f->s, b2, 2, NULL), 0);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM \"order__v\""), 4); /* big1's 1000 bytes gone */
    sl_write dp = wr(&T_ODD, SL_W_DELETE_PARTITION);
    dp.row.v[0] = sl_vtext("p");
    assert_int_equal(sl_store_apply(f->s, &dp, 1, NULL), 0);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM \"order__v\""), 0);

    /* A reopen reads it back; expired and purged, it is gone. */
    sl_store_close(f->s);
    f->s = NULL;
    assert_int_equal(open_store(f), 0);
    assert_kv_b(f->s, "x", big1, sizeof big1);
    sl_clock_manual(1);
    assert_int_equal(kv_put_b(f->s, "x", 9, big2, sizeof big2, 1), 0);
    assert_int_equal(VALUES(), 1);
    sl_clock_advance_ms(2000);
    some_groups(f->s);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM kv WHERE k='x'"), 0);
    assert_int_equal(VALUES(), 0);
#undef VALUES
}

/* A statement that fails after its large values were stored (a trigger of
 * the test's, standing for an I/O error or a full disk, refuses it) keeps
 * none of them: a write of one statement has no savepoint, so the store
 * deletes them itself; a batch's savepoint undoes them. The group goes on,
 * and the other writes in it commit. */
static void t_large_values_failed(void **state) {
    fx *f = *state;
    static char big1[3000], big2[5000];
    big_fill(big1, sizeof big1, 'f');
    big_fill(big2, sizeof big2, 'g');
    assert_int_equal(kv_put_b(f->s, "x", 1, big1, sizeof big1, 0), 0);
    sqlite3 *db = closed_raw(f);
    assert_int_equal(sqlite3_exec(db,
                                  "CREATE TRIGGER refuse_i BEFORE INSERT ON kv WHEN NEW.k = 'boom'"
                                  " BEGIN SELECT RAISE(ABORT, 'refused'); END;"
                                  "CREATE TRIGGER refuse_u BEFORE UPDATE ON kv WHEN NEW.i = 666"
                                  " BEGIN SELECT RAISE(ABORT, 'refused'); END",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    assert_int_equal(open_store(f), 0);
#define VALUES() raw_int(f, "SELECT count(*) FROM kv__v")
    assert_int_equal(VALUES(), 1);

    /* An upsert refused. */
    assert_int_not_equal(kv_put_b(f->s, "boom", 1, big2, sizeof big2, 0), 0);
    assert_int_equal(VALUES(), 1);
    /* A conditional update refused: its condition holds, its statement fails. */
    sl_write w = kv_w(SL_W_UPDATE_IF, "x");
    w.row.v[KV_I] = sl_vint(666);
    w.row.v[KV_B] = sl_vbytes(big2, sizeof big2);
    w.cond[0] = (sl_cond){KV_I, sl_vint(1)};
    w.ncond = 1;
    assert_int_not_equal(sl_store_apply(f->s, &w, 1, NULL), 0);
    assert_int_equal(VALUES(), 1);
    /* A batch whose second write is refused. */
    sl_write pair[2] = {kv_w(SL_W_UPSERT, "y"), kv_w(SL_W_UPSERT, "boom")};
    for (int i = 0; i < 2; i++) {
        pair[i].row.v[KV_I] = sl_vint(1);
        pair[i].row.v[KV_B] = sl_vbytes(big2, sizeof big2);
    }
    assert_int_not_equal(sl_store_apply(f->s, pair, 2, NULL), 0);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM kv WHERE k = 'y'"), 0);
    assert_int_equal(VALUES(), 1);

    /* The row as it was, and the store still writes. */
    assert_kv_b(f->s, "x", big1, sizeof big1);
    assert_int_equal(kv_i(f->s, "x"), 1);
    assert_int_equal(kv_put_b(f->s, "z", 1, big2, sizeof big2, 0), 0);
    assert_kv_b(f->s, "z", big2, sizeof big2);
    assert_int_equal(VALUES(), 2);
#undef VALUES
}

/* A database of layout 1 (large values in their rows, no "T__v", no
 * triggers) opens as layout 2: its rows read as they are, and a large value
 * written to one of them, or to a new row, goes out of the row and its
 * trigger takes the old row's value along when that row is rewritten. */
static void t_large_values_upgrade(void **state) {
    fx *f = *state;
    static char big1[3000], big2[4000];
    big_fill(big1, sizeof big1, 'd');
    big_fill(big2, sizeof big2, 'e');
    sqlite3 *db = closed_raw(f);
    assert_int_equal(sqlite3_exec(db,
                                  "DROP TRIGGER kv__v_u_b; DROP TRIGGER kv__v_d_b; DROP TABLE kv__v;"
                                  "PRAGMA user_version=1",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO kv(k, i, b) VALUES('old', 1, ?)", -1, &st, NULL),
                     SQLITE_OK);
    sqlite3_bind_blob(st, 1, big1, sizeof big1, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    sqlite3_close(db);

    assert_int_equal(open_store(f), 0);
    assert_int_equal(raw_int(f, "PRAGMA user_version"), 2);
    assert_kv_b(f->s, "old", big1, sizeof big1);
    sl_write w = kv_w(SL_W_UPDATE_IF, "old");
    w.row.v[KV_I] = sl_vint(2);
    w.cond[0] = (sl_cond){KV_B, sl_vbytes(big1, sizeof big1)};
    w.ncond = 1;
    assert_int_equal(sl_store_apply(f->s, &w, 1, NULL), 0);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM kv__v"), 0);
    assert_int_equal(kv_put_b(f->s, "old", 3, big2, sizeof big2, 0), 0);
    assert_int_equal(kv_put_b(f->s, "new", 1, big1, sizeof big1, 0), 0);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM kv__v"), 2);
    assert_kv_b(f->s, "old", big2, sizeof big2);
    assert_kv_b(f->s, "new", big1, sizeof big1);
    assert_int_equal(kv_put_b(f->s, "old", 4, NULL, 0, 0), 0);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM kv__v"), 1);
}

/* A table whose expiry is kept by partition has no index of its rows'
 * expiry and one record a partition, the earliest expiry of its rows;
 * deleting the partition deletes its record, and the writer purges the
 * expired rows of the partitions whose record has passed. */
static void t_purge_by_partition(void **state) {
    fx *f = *state;
    sl_clock_manual(1);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM sqlite_master WHERE name='ck__exp'"), 0);
    int64_t t0 = sl_now_ms();
    for (int c = 1; c <= 30; c++) /* bucket 1: all expire */
        assert_int_equal(ck_put(f->s, "b", 1, c, "x", "v", 10), 0);
    for (int c = 1; c <= 5; c++) /* bucket 2: one row outlives the rest */
        assert_int_equal(ck_put(f->s, "b", 2, c, "x", "v", c == 5 ? 100 : 10), 0);
    for (int c = 1; c <= 5; c++) /* bucket 3: deleted by its owner */
        assert_int_equal(ck_put(f->s, "b", 3, c, "x", "v", 10), 0);
    assert_int_equal(ck_put(f->s, "b", 4, 1, "x", "v", 0), 0); /* bucket 4: never expires */
    assert_int_equal(raw_int(f, "SELECT count(*) FROM ck__parts"), 3);
    assert_int_equal(raw_int(f, "SELECT exp FROM ck__parts WHERE q=2"), t0 + 10000);

    /* A later write records nothing; an earlier expiry lowers the record. */
    sl_clock_advance_ms(1000);
    assert_int_equal(ck_put(f->s, "b", 1, 31, "x", "v", 10), 0);
    assert_int_equal(raw_int(f, "SELECT exp FROM ck__parts WHERE q=1"), t0 + 10000);
    assert_int_equal(ck_put(f->s, "b", 1, 32, "x", "v", 2), 0);
    assert_int_equal(raw_int(f, "SELECT exp FROM ck__parts WHERE q=1"), t0 + 3000);

    sl_write del = ck_w(SL_W_DELETE_PARTITION, "b", 3, 0, NULL);
    assert_int_equal(sl_store_apply(f->s, &del, 1, NULL), 0);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM ck__parts WHERE q=3"), 0);

    /* Before anything expires, a purge deletes nothing. */
    some_groups(f->s);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM ck"), 32 + 5 + 1);

    sl_clock_advance_ms(11000);
    some_groups(f->s);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM ck WHERE q=1"), 0);
    assert_int_equal(raw_int(f, "SELECT c1 FROM ck WHERE q=2"), 5); /* the only one left */
    assert_int_equal(raw_int(f, "SELECT count(*) FROM ck WHERE q=2"), 1);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM ck WHERE q=4"), 1);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM ck__parts"), 1);
    assert_int_equal(raw_int(f, "SELECT exp FROM ck__parts WHERE q=2"), t0 + 100000);

    /* The writer forgot the partitions it purged: a new row is recorded. */
    assert_int_equal(ck_put(f->s, "b", 1, 1, "x", "v", 10), 0);
    assert_int_equal(raw_int(f, "SELECT exp FROM ck__parts WHERE q=1"), sl_now_ms() + 10000);
    sl_clock_advance_ms(100000);
    some_groups(f->s);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM ck WHERE q<>4"), 0);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM ck__parts"), 0);
}

/* A conditional batch that is not applied undoes the record its first
 * write lowered, and the writer does not trust what it noted then. */
static void t_purge_by_partition_rollback(void **state) {
    fx *f = *state;
    sl_clock_manual(1);
    int64_t t0 = sl_now_ms();
    assert_int_equal(ck_put(f->s, "r", 1, 1, "x", "v", 10), 0);
    assert_int_equal(ck_put(f->s, "r", 1, 2, "x", "v", 10), 0);
    sl_write w[2] = {ck_w(SL_W_UPDATE_IF, "r", 1, 1, "x"), ck_w(SL_W_UPDATE_IF, "r", 1, 2, "x")};
    for (int i = 0; i < 2; i++) {
        w[i].row.v[CK_V] = sl_vtext("w");
        w[i].ncond = 1;
    }
    w[0].ttl = 2; /* holds, and would lower the record to t0 + 2 s */
    w[0].cond[0] = (sl_cond){CK_V, sl_vtext("v")};
    w[1].ttl = 10;
    w[1].cond[0] = (sl_cond){CK_V, sl_vtext("no")}; /* fails */
    assert_int_equal(sl_store_apply(f->s, w, 2, NULL), SL_ENOTAPPLIED);
    assert_int_equal(raw_int(f, "SELECT exp FROM ck__parts WHERE q=1"), t0 + 10000);
    assert_int_equal(ck_put(f->s, "r", 1, 3, "x", "v", 3), 0);
    assert_int_equal(raw_int(f, "SELECT exp FROM ck__parts WHERE q=1"), t0 + 3000);
}

/* A database whose table indexed its rows' expiry (the builds before)
 * takes its partitions' expiry from the rows, and drops the index. */
static void t_purge_by_partition_migrates(void **state) {
    fx *f = *state;
    static const sl_table old_ck = {
        "ck", 2, 2, 5, {{"p", SL_TEXT}, {"q", SL_INT}, {"c1", SL_INT}, {"c2", SL_TEXT}, {"v", SL_TEXT}}, 0};
    static const sl_table *const old_tables[] = {&T_KV, &old_ck};
    sl_clock_manual(1);
    int64_t t0 = sl_now_ms();
    sl_store_close(f->s);
    rm_rf(f->dir);
    assert_int_equal(mkdir(f->dir, 0700), 0);
    assert_int_equal(sl_store_sqlite_open(f->dir, &f->s), 0);
    assert_int_equal(sl_store_ensure(f->s, old_tables, 2), 0);
    for (int c = 1; c <= 3; c++) {
        sl_write w = wr(&old_ck, SL_W_UPSERT);
        w.row.v[CK_P] = sl_vtext("m");
        w.row.v[CK_Q] = sl_vint(c); /* partitions 1, 2, 3 */
        w.row.v[CK_C1] = sl_vint(1);
        w.row.v[CK_C2] = sl_vtext("x");
        w.row.v[CK_V] = sl_vtext("v");
        w.ttl = c * 10;
        assert_int_equal(sl_store_apply(f->s, &w, 1, NULL), 0);
    }
    sl_store_close(f->s);
    f->s = NULL;
    assert_int_equal(raw_int(f, "SELECT count(*) FROM sqlite_master WHERE name='ck__exp'"), 1);

    assert_int_equal(open_store(f), 0);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM sqlite_master WHERE name='ck__exp'"), 0);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM ck__parts"), 3);
    assert_int_equal(raw_int(f, "SELECT exp FROM ck__parts WHERE q=2"), t0 + 20000);
    sl_clock_advance_ms(25000);
    some_groups(f->s);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM ck"), 1);
    assert_int_equal(raw_int(f, "SELECT count(*) FROM ck__parts"), 1);
}

typedef struct {
    sl_store *s;
    int incs, applied, conflicts, errors;
} cas_worker;

static void *cas_worker_main(void *arg) {
    cas_worker *w = arg;
    sl_result r;
    sl_result_init(&r);
    while (w->applied < w->incs && !w->errors) {
        if (kv_get(w->s, "counter", SL_READ_DEFAULT, &r) != 0 || !r.rows[0].v[KV_I].set) {
            w->errors++;
            break;
        }
        int64_t old = r.rows[0].v[KV_I].i;
        sl_write u = kv_w(SL_W_UPDATE_IF, "counter");
        u.row.v[KV_I] = sl_vint(old + 1);
        u.cond[0] = (sl_cond){KV_I, sl_vint(old)};
        u.ncond = 1;
        int rc = sl_store_apply(w->s, &u, 1, &r);
        if (rc == 0)
            w->applied++;
        else if (rc == SL_ENOTAPPLIED && r.n == 1 && r.rows[0].v[KV_I].i != old)
            w->conflicts++;
        else
            w->errors++;
    }
    sl_result_free(&r);
    return NULL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void t_group_commit(void **state) {
    enum { THREADS = 16, INCS = 200 };
    fx *f = *state;
    assert_int_equal(kv_put(f->s, "counter", 0, NULL, 0), 0);
    pthread_t th[THREADS];
    cas_worker w[THREADS];
    double t0 = now_s();
    for (int i = 0; i < THREADS; i++) {
        w[i] = (cas_worker){f->s, INCS, 0, 0, 0};
        assert_int_equal(pthread_create(&th[i], NULL, cas_worker_main, &w[i]), 0);
    }
    int applied = 0, conflicts = 0, errors = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        applied += w[i].applied;
        conflicts += w[i].conflicts;
        errors += w[i].errors;
    }
    double dt = now_s() - t0;
    print_message("group commit: %d CAS applied, %d not applied, in %.2fs: %.0f CAS/s\n", applied, conflicts,
                  dt, (applied + conflicts) / dt);
    assert_int_equal(errors, 0);
    assert_int_equal(applied, THREADS * INCS);
    assert_int_equal(kv_i(f->s, "counter"), THREADS * INCS);
}

static sl_fault_action fixed_fault(void *ctx, const sl_write *w, size_t n) {
    (void)w, (void)n;
    return *(sl_fault_action *)ctx;
}

static void t_fault_actions(void **state) {
    fx *f = *state;
    sl_store *s = f->s;
    sl_fault_action act = SL_FAULT_NONE;
    sl_store_sqlite_set_fault(s, fixed_fault, &act);

    act = SL_FAULT_FAIL;
    assert_int_equal(kv_put(s, "fail", 1, NULL, 0), SL_EUNAVAILABLE);
    act = SL_FAULT_UNKNOWN_APPLIED;
    assert_int_equal(kv_put(s, "ua", 2, NULL, 0), SL_EUNKNOWN);
    act = SL_FAULT_UNKNOWN_DROPPED;
    assert_int_equal(kv_put(s, "ud", 3, NULL, 0), SL_EUNKNOWN);
    act = SL_FAULT_NONE;
    assert_int_equal(kv_i(s, "fail"), -999);
    assert_int_equal(kv_i(s, "ua"), 2);
    assert_int_equal(kv_i(s, "ud"), -999);

    /* An unknown-but-applied CAS that was not applied returns no rows. */
    sl_write ins = kv_w(SL_W_INSERT_IF_NOT_EXISTS, "ua");
    sl_result cur;
    sl_result_init(&cur);
    act = SL_FAULT_UNKNOWN_APPLIED;
    assert_int_equal(sl_store_apply(s, &ins, 1, &cur), SL_EUNKNOWN);
    assert_int_equal(cur.n, 0);

    /* A delayed write copies its values: the caller's buffers are reused
     * before the release. */
    char key[8] = "delay", text[8] = "orig";
    sl_write w = kv_w(SL_W_UPSERT, key);
    w.row.v[KV_I] = sl_vint(1);
    w.row.v[KV_S] = sl_vtext(text);
    act = SL_FAULT_DELAY;
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), SL_EUNKNOWN);
    w.row.v[KV_I] = sl_vint(2); /* a second delayed write to the same row */
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), SL_EUNKNOWN);
    memcpy(key, "XXXXX", 6);
    memcpy(text, "gone", 5);
    act = SL_FAULT_NONE;
    assert_int_equal(kv_i(s, "delay"), -999);
    assert_int_equal(sl_store_sqlite_release_delayed(s), 2);
    assert_int_equal(kv_i(s, "delay"), 2); /* applied in order */
    assert_int_equal(kv_get(s, "delay", SL_READ_DEFAULT, &cur), 0);
    assert_text(&cur.rows[0].v[KV_S], "orig");
    assert_int_equal(kv_i(s, "XXXXX"), -999);
    assert_int_equal(sl_store_sqlite_release_delayed(s), 0); /* nothing left */

    /* A delayed CAS is evaluated when released, not when parked. */
    sl_write c = kv_w(SL_W_INSERT_IF_NOT_EXISTS, "race");
    c.row.v[KV_I] = sl_vint(1);
    act = SL_FAULT_DELAY;
    assert_int_equal(sl_store_apply(s, &c, 1, NULL), SL_EUNKNOWN);
    sl_write u = kv_w(SL_W_UPDATE_IF, "delay");
    u.row.v[KV_I] = sl_vint(100);
    u.cond[0] = (sl_cond){KV_I, sl_vint(2)};
    u.ncond = 1;
    assert_int_equal(sl_store_apply(s, &u, 1, NULL), SL_EUNKNOWN);
    act = SL_FAULT_NONE;
    assert_int_equal(kv_put(s, "race", 5, NULL, 0), 0);
    assert_int_equal(kv_put(s, "delay", 3, NULL, 0), 0);
    assert_int_equal(sl_store_sqlite_release_delayed(s), 2);
    assert_int_equal(kv_i(s, "race"), 5);
    assert_int_equal(kv_i(s, "delay"), 3);

    /* Writes still parked at close are dropped (and freed). */
    act = SL_FAULT_DELAY;
    assert_int_equal(kv_put(s, "never", 1, "x", 0), SL_EUNKNOWN);
    sl_store_sqlite_set_fault(s, NULL, NULL);
    sl_store_close(f->s);
    f->s = NULL;
    assert_int_equal(open_store(f), 0);
    assert_int_equal(kv_i(f->s, "never"), -999);
    assert_int_equal(kv_i(f->s, "ua"), 2);
    sl_result_free(&cur);
}

static void draw(sl_fault_random_cfg *cfg, const sl_write *w, size_t n, int count, sl_fault_action *out) {
    for (int i = 0; i < count; i++)
        out[i] = sl_fault_random(cfg, w, n);
}

static void t_fault_random(void **state) {
    fx *f = *state;
    enum { N = 2000 };
    sl_write up = kv_w(SL_W_UPSERT, "a");
    sl_write cas = kv_w(SL_W_INSERT_IF_NOT_EXISTS, "a");
    sl_write other = ck_w(SL_W_UPSERT, "p", 1, 1, "a");
    sl_fault_random_cfg a = {.seed = 42,
                             .fail_ppm = 100000,
                             .unknown_applied_ppm = 100000,
                             .unknown_dropped_ppm = 100000,
                             .delay_ppm = 100000};
    sl_fault_random_cfg b = a, c = a;
    c.seed = 43;
    static sl_fault_action da[N], db[N], dc[N];
    draw(&a, &up, 1, N, da);
    draw(&b, &up, 1, N, db);
    draw(&c, &up, 1, N, dc);
    assert_memory_equal(da, db, sizeof da);
    assert_memory_not_equal(da, dc, sizeof da);
    int count[5] = {0};
    for (int i = 0; i < N; i++)
        count[da[i]]++;
    for (int k = 1; k < 5; k++)
        assert_in_range(count[k], N / 10 - N / 25, N / 10 + N / 25);
    assert_int_equal(a.injected, N - count[SL_FAULT_NONE]);

    /* Filters: excluded writes get nothing and draw nothing. */
    sl_fault_random_cfg t = {.seed = 7, .fail_ppm = 1000000, .only_table = "kv"};
    assert_int_equal(sl_fault_random(&t, &other, 1), SL_FAULT_NONE);
    assert_int_equal(t.state, 0);
    assert_int_equal(sl_fault_random(&t, &up, 1), SL_FAULT_FAIL);
    sl_write mixed[2] = {other, up}; /* a batch touching kv matches */
    assert_int_equal(sl_fault_random(&t, mixed, 2), SL_FAULT_FAIL);
    sl_fault_random_cfg k = {.seed = 7, .delay_ppm = 1000000, .only_cas = 1};
    assert_int_equal(sl_fault_random(&k, &up, 1), SL_FAULT_NONE);
    assert_int_equal(sl_fault_random(&k, &cas, 1), SL_FAULT_DELAY);
    assert_int_equal(k.injected, 1);

    /* Through the store. */
    sl_fault_random_cfg st = {.seed = 1, .fail_ppm = 1000000, .only_table = "ck"};
    sl_store_sqlite_set_fault(f->s, sl_fault_random, &st);
    assert_int_equal(kv_put(f->s, "a", 1, NULL, 0), 0);
    assert_int_equal(ck_put(f->s, "p", 1, 1, "a", "v", 0), SL_EUNAVAILABLE);
    assert_int_equal(st.injected, 1);
    sl_store_sqlite_set_fault(f->s, NULL, NULL);
    assert_int_equal(ck_put(f->s, "p", 1, 1, "a", "v", 0), 0);
}

/* Late writes land as Cassandra lands them (store.h, "Timestamps"): a plain
 * write stamped when it was issued changes only the cells nobody wrote or
 * deleted since; a duplicate (applied now, and again at release) is the
 * same; stamped on landing, it overwrites everything. */
static void t_late_stamps(void **state) {
    fx *f = *state;
    sl_store *s = f->s;
    sl_fault_action act = SL_FAULT_NONE;
    sl_store_sqlite_set_fault(s, fixed_fault, &act);
    sl_result r;
    sl_result_init(&r);

    /* Parked, then one of its columns written: that one keeps the new value. */
    sl_write w = kv_w(SL_W_UPSERT, "a");
    w.row.v[KV_I] = sl_vint(1);
    w.row.v[KV_S] = sl_vtext("late");
    act = SL_FAULT_DELAY;
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), SL_EUNKNOWN);
    act = SL_FAULT_NONE;
    assert_int_equal(kv_put(s, "a", 2, NULL, 0), 0); /* i only */
    assert_int_equal(sl_store_sqlite_release_delayed(s), 1);
    assert_int_equal(kv_get(s, "a", SL_READ_DEFAULT, &r), 0);
    assert_int_equal(r.rows[0].v[KV_I].i, 2); /* newer: kept */
    assert_text(&r.rows[0].v[KV_S], "late");  /* nobody wrote it since */

    /* A duplicate that lands after a delete of its row brings nothing back. */
    w = kv_w(SL_W_UPSERT, "b");
    w.row.v[KV_I] = sl_vint(1);
    act = SL_FAULT_DUPLICATE;
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), 0);
    act = SL_FAULT_NONE;
    assert_int_equal(kv_i(s, "b"), 1);
    sl_write d = kv_w(SL_W_DELETE_ROW, "b");
    assert_int_equal(sl_store_apply(s, &d, 1, NULL), 0);
    assert_int_equal(sl_store_sqlite_release_delayed(s), 1);
    assert_int_equal(kv_i(s, "b"), -999);

    /* A late row delete removes only what was there before it. */
    assert_int_equal(kv_put(s, "c", 1, "old", 0), 0);
    act = SL_FAULT_DELAY;
    assert_int_equal(sl_store_apply(s, &d, 1, NULL), SL_EUNKNOWN); /* "b": nothing there */
    d = kv_w(SL_W_DELETE_ROW, "c");
    assert_int_equal(sl_store_apply(s, &d, 1, NULL), SL_EUNKNOWN);
    act = SL_FAULT_NONE;
    assert_int_equal(kv_put(s, "c", 3, NULL, 0), 0);
    assert_int_equal(sl_store_sqlite_release_delayed(s), 2);
    assert_int_equal(kv_get(s, "c", SL_READ_DEFAULT, &r), 0);
    assert_int_equal(r.rows[0].v[KV_I].i, 3);  /* written after the delete was issued */
    assert_false(r.rows[0].v[KV_S].set);        /* deleted */

    /* Stamped on landing, a late write overwrites what was written since. */
    sl_store_sqlite_set_late_stamps(s, 1);
    w = kv_w(SL_W_UPSERT, "e");
    w.row.v[KV_I] = sl_vint(1);
    act = SL_FAULT_DUPLICATE;
    assert_int_equal(sl_store_apply(s, &w, 1, NULL), 0);
    act = SL_FAULT_NONE;
    assert_int_equal(kv_put(s, "e", 2, NULL, 0), 0);
    assert_int_equal(sl_store_sqlite_release_delayed(s), 1);
    assert_int_equal(kv_i(s, "e"), 1);
    sl_result_free(&r);
    sl_store_sqlite_set_late_stamps(s, 0);
    sl_store_sqlite_set_fault(s, NULL, NULL);
}

/* A request that fails inside the writer fails alone. */
static void t_request_isolated(void **state) {
    fx *f = *state;
    static const sl_table missing = {"never_ensured", 1, 0, 2, {{"k", SL_TEXT}, {"v", SL_INT}}, 0};
    sl_write w = wr(&missing, SL_W_UPSERT);
    w.row.v[0] = sl_vtext("a");
    assert_int_equal(sl_store_apply(f->s, &w, 1, NULL), SL_EINVAL);
    sl_write b[2] = {kv_w(SL_W_UPSERT, "half"), w}; /* all or nothing */
    b[0].row.v[KV_I] = sl_vint(1);
    assert_int_equal(sl_store_apply(f->s, b, 2, NULL), SL_EINVAL);
    assert_int_equal(kv_i(f->s, "half"), -999);
    assert_int_equal(kv_put(f->s, "fine", 1, NULL, 0), 0);
    assert_int_equal(kv_i(f->s, "fine"), 1);
    assert_int_equal(sl_store_ping(f->s), 0);
}

/* apply_async: the caller does not wait, the values it passed may be gone
 * at once (they are copied), the write lands with a later group, and flush
 * waits for it; a write that fails says so only in the log. */
static void t_apply_async(void **state) {
    fx *f = *state;
    char key[16], text[16];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "k%d", i);
        snprintf(text, sizeof text, "v%d", i);
        sl_write w = kv_w(SL_W_UPSERT, key);
        w.row.v[KV_I] = sl_vint(i);
        w.row.v[KV_S] = sl_vtext(text);
        assert_int_equal(sl_store_apply_async(f->s, &w, 1), 0);
        memset(key, 'x', sizeof key - 1); /* the store copied them */
        memset(text, 'y', sizeof text - 1);
    }
    assert_int_equal(sl_store_sqlite_flush(f->s), 0);
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(kv_i(f->s, key), i);
    }
    static const sl_table missing = {"never_ensured", 1, 0, 2, {{"k", SL_TEXT}, {"v", SL_INT}}, 0};
    sl_write bad = wr(&missing, SL_W_UPSERT);
    bad.row.v[0] = sl_vtext("a");
    /* Fails in the writer; only the log hears of it, and nothing else in
     * its group is harmed. */
    sl_write good = kv_w(SL_W_UPSERT, "after");
    good.row.v[KV_I] = sl_vint(7);
    assert_int_equal(sl_store_apply_async(f->s, &bad, 1), 0);
    assert_int_equal(sl_store_apply_async(f->s, &good, 1), 0);
    assert_int_equal(sl_store_sqlite_flush(f->s), 0);
    assert_int_equal(kv_i(f->s, "after"), 7);
}

/* apply_cb(): each request is answered exactly once, after its commit, with
 * what apply() would say (a compare-and-set that does not hold is not
 * applied); a close answers every request still queued, each committed. */
typedef struct {
    pthread_mutex_t mu;
    int calls[64], rc[64];
} cb_log;
typedef struct {
    cb_log *log;
    int i;
} cb_arg;

static void cb_done(void *arg, int rc) {
    cb_arg *a = arg;
    pthread_mutex_lock(&a->log->mu);
    a->log->calls[a->i]++;
    a->log->rc[a->i] = rc;
    pthread_mutex_unlock(&a->log->mu);
}

static void t_apply_cb(void **state) {
    fx *f = *state;
    cb_log log = {.mu = PTHREAD_MUTEX_INITIALIZER};
    cb_arg args[64];
    char keys[64][16];
    sl_write w[64];
    assert_int_equal(kv_put(f->s, "held", 1, NULL, 0), 0);
    for (int i = 0; i < 64; i++) {
        args[i] = (cb_arg){&log, i};
        snprintf(keys[i], sizeof keys[i], "c%d", i);
        if (i % 8 == 7) {
            /* Compare-and-sets on "held": only the one that expects 1 holds. */
            w[i] = kv_w(SL_W_UPDATE_IF, "held");
            w[i].row.v[KV_I] = sl_vint(100 + i);
            w[i].cond[0] = (sl_cond){KV_I, sl_vint(i == 7 ? 1 : 2)};
            w[i].ncond = 1;
        } else {
            w[i] = kv_w(SL_W_UPSERT, keys[i]);
            w[i].row.v[KV_I] = sl_vint(i);
        }
        sl_store_apply_cb(f->s, &w[i], 1, cb_done, &args[i]);
    }
    /* Closing answers every request still queued, committed. */
    sl_store_close(f->s);
    f->s = NULL;
    for (int i = 0; i < 64; i++) {
        assert_int_equal(log.calls[i], 1);
        assert_int_equal(log.rc[i], i % 8 != 7 || i == 7 ? 0 : SL_ENOTAPPLIED);
    }
    assert_int_equal(open_store(f), 0);
    for (int i = 0; i < 64; i++)
        if (i % 8 != 7) assert_int_equal(kv_i(f->s, keys[i]), i);
    assert_int_equal(kv_i(f->s, "held"), 107);
    /* A write the store refuses at once is answered at once. */
    sl_write bad = wr(&T_KV, SL_W_UPSERT); /* no key */
    args[0] = (cb_arg){&log, 0};
    sl_store_apply_cb(f->s, &bad, 1, cb_done, &args[0]);
    assert_int_equal(log.calls[0], 2);
    assert_int_equal(log.rc[0], SL_EINVAL);
}

/* apply_cb_early(): a compare-and-set is answered once applied, and a
 * SERIAL read made right after its answer sees it (the store waits for its
 * commit), as an update of a message right after its receive must; each
 * open of the store is a larger epoch. */
typedef struct {
    sem_t answered;
    int rc;
} early_arg;

static void early_done(void *arg, int rc) {
    early_arg *a = arg;
    a->rc = rc;
    sem_post(&a->answered);
}

static void t_apply_cb_early(void **state) {
    fx *f = *state;
    int64_t epoch = sl_store_epoch(f->s);
    assert_true(epoch >= 1);
    assert_int_equal(kv_put(f->s, "x", 0, NULL, 0), 0);
    early_arg a;
    sem_init(&a.answered, 0, 0);
    int64_t cur = 0;
    for (int i = 0; i < 200; i++) {
        /* Odd rounds expect a value x does not have: not applied. */
        int stale = i % 2;
        sl_write w = kv_w(SL_W_UPDATE_IF, "x");
        w.row.v[KV_I] = sl_vint(stale ? -1 : cur + 1);
        w.cond[0] = (sl_cond){KV_I, sl_vint(stale ? cur + 1000 : cur)};
        w.ncond = 1;
        sl_store_apply_cb_early(f->s, &w, 1, early_done, &a);
        while (sem_wait(&a.answered) != 0) {
        }
        assert_int_equal(a.rc, stale ? SL_ENOTAPPLIED : 0);
        cur += !stale;
        sl_result r;
        sl_result_init(&r);
        assert_int_equal(kv_get(f->s, "x", SL_READ_SERIAL, &r), 0);
        assert_int_equal(r.rows[0].v[KV_I].i, cur);
        sl_result_free(&r);
    }
    sem_destroy(&a.answered);
    sl_store_close(f->s);
    f->s = NULL;
    assert_int_equal(open_store(f), 0);
    assert_int_equal(kv_i(f->s, "x"), 100);
    assert_int_equal(sl_store_epoch(f->s), epoch + 1);
}

/* A commit that fails after a write was answered early undoes it; the
 * store writes it again first thing, with nothing else queued, and a
 * SERIAL read made meanwhile waits for that and sees it. */
static void t_apply_cb_early_redo(void **state) {
    fx *f = *state;
    assert_int_equal(kv_put(f->s, "x", 0, NULL, 0), 0);
    sl_store_sqlite_fail_commits(f->s, 3);
    early_arg a;
    sem_init(&a.answered, 0, 0);
    sl_write w = kv_w(SL_W_UPDATE_IF, "x");
    w.row.v[KV_I] = sl_vint(1);
    w.cond[0] = (sl_cond){KV_I, sl_vint(0)};
    w.ncond = 1;
    sl_store_apply_cb_early(f->s, &w, 1, early_done, &a);
    while (sem_wait(&a.answered) != 0) {
    }
    assert_int_equal(a.rc, 0);
    sem_destroy(&a.answered);
    /* Its group and the next two fail (the redo's, or a put's); then the
     * redo commits. */
    sl_result r;
    sl_result_init(&r);
    assert_int_equal(kv_get(f->s, "x", SL_READ_SERIAL, &r), 0);
    assert_int_equal(r.rows[0].v[KV_I].i, 1);
    sl_result_free(&r);
    /* The row stays as answered: a compare-and-set that expects 0 fails. */
    w.row.v[KV_I] = sl_vint(2);
    assert_int_equal(sl_store_apply(f->s, &w, 1, NULL), SL_ENOTAPPLIED);
    sl_store_close(f->s);
    f->s = NULL;
    assert_int_equal(open_store(f), 0);
    assert_int_equal(kv_i(f->s, "x"), 1);
}

int main(void) {
    struct CMUnitTest contract[NCASES];
    for (size_t i = 0; i < NCASES; i++)
        contract[i] = (struct CMUnitTest){contract_cases[i].name, contract_run, contract_setup, fx_teardown,
                                          (void *)&contract_cases[i]};
    const struct CMUnitTest sqlite_only[] = {
        cmocka_unit_test_setup_teardown(t_durable_reopen, sqlite_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(t_apply_cb, sqlite_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(t_apply_cb_early, sqlite_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(t_apply_cb_early_redo, sqlite_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(t_purge, sqlite_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(t_large_values, sqlite_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(t_large_values_upgrade, sqlite_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(t_large_values_failed, sqlite_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(t_purge_by_partition, sqlite_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(t_purge_by_partition_rollback, sqlite_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(t_purge_by_partition_migrates, sqlite_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(t_group_commit, sqlite_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(t_fault_actions, sqlite_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(t_late_stamps, sqlite_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(t_fault_random, sqlite_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(t_request_isolated, sqlite_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(t_apply_async, sqlite_setup, fx_teardown),
    };
    struct CMUnitTest cql[NCASES];
    for (size_t i = 0; i < NCASES; i++)
        cql[i] = (struct CMUnitTest){contract_cases[i].name, cql_contract_run, cql_contract_setup,
                                     fx_teardown, (void *)&contract_cases[i]};
    int failed = _cmocka_run_group_tests("store contract (sqlite)", contract, NCASES, NULL, NULL);
    failed += cmocka_run_group_tests_name("store sqlite", sqlite_only, NULL, NULL);
    failed += _cmocka_run_group_tests("store contract (cql)", cql, NCASES, NULL, NULL);
    const struct CMUnitTest cql_only[] = {cmocka_unit_test(t_cql_schema)};
    failed += cmocka_run_group_tests_name("store cql", cql_only, NULL, NULL);
    cql_drop_keyspace();
    return failed ? 1 : 0;
}
