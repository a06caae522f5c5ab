/* test_cql_ring.c: the cluster layer's routing policy (cql_replicas from the
 * ring and the keyspace's replication, DC awareness), on a synthetic
 * five-node, two-DC cluster, through the layer's internal header
 * (cluster_int.h); a single live node cannot show any of this. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include "cql/cluster_int.h"

enum { A, B, C, D, E };

/* Nodes A, B, C in dc1 and D, E in dc2; ring A:0 D:50 B:100 E:150 C:200. */
static sl_cql_client *synthetic(void) {
    sl_cql_client *c = calloc(1, sizeof *c);
    assert_non_null(c);
    pthread_mutex_init(&c->mu, NULL);
    static const char *dcs[] = {"dc1", "dc1", "dc1", "dc2", "dc2"};
    static const int64_t toks[] = {0, 100, 200, 50, 150};
    for (int i = 0; i < 5; i++) {
        char host[32];
        snprintf(host, sizeof host, "10.0.0.%d", i + 1);
        assert_int_equal(cql_add_node(c, host, 9042, dcs[i]), i);
        c->nodes[i].up = 1;
    }
    c->ring = calloc(5, sizeof *c->ring);
    for (int i = 0; i < 5; i++)
        c->ring[i] = (ring_ent){toks[i], i};
    c->nring = 5;
    qsort(c->ring, 5, sizeof *c->ring, cql_ring_cmp);
    snprintf(c->local_dc, sizeof c->local_dc, "dc1");
    c->repl = calloc(2, sizeof *c->repl);
    c->nrepl = 2;
    c->repl[0] = (ks_repl){.ks = "simple2", .simple = 1, .rf = 2};
    c->repl[1] = (ks_repl){.ks = "nts", .ndc = 2};
    snprintf(c->repl[1].dcs[0].dc, 64, "dc1");
    c->repl[1].dcs[0].rf = 2;
    snprintf(c->repl[1].dcs[1].dc, 64, "dc2");
    c->repl[1].dcs[1].rf = 1;
    return c;
}

static void destroy(sl_cql_client *c) {
    for (int i = 0; i < c->nnodes; i++)
        free(c->nodes[i].st); /* what cql_add_node allocated beside the node */
    free(c->nodes);
    free(c->ring);
    free(c->repl);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static void t_replicas(void **state) {
    (void)state;
    sl_cql_client *c = synthetic();
    int r[MAX_PLAN];
    assert_int_equal(cql_replicas(c, "simple2", 60, r, MAX_PLAN), 2); /* owner B, then E */
    assert_int_equal(r[0], B);
    assert_int_equal(r[1], E);
    assert_int_equal(cql_replicas(c, "nts", 60, r, MAX_PLAN), 3); /* B, E, then C for dc1's second */
    assert_int_equal(r[0], B);
    assert_int_equal(r[1], E);
    assert_int_equal(r[2], C);
    assert_int_equal(cql_replicas(c, "simple2", 201, r, MAX_PLAN), 2); /* wraps to A */
    assert_int_equal(r[0], A);
    assert_int_equal(r[1], D);
    assert_int_equal(cql_replicas(c, "simple2", 100, r, MAX_PLAN), 2); /* a token equal to B's is B's */
    assert_int_equal(r[0], B);
    assert_int_equal(cql_replicas(c, "unknown", 60, r, MAX_PLAN), 1); /* the owner alone */
    assert_int_equal(r[0], B);
    destroy(c);
}

static void t_plan(void **state) {
    (void)state;
    sl_cql_client *c = synthetic();
    int p[MAX_PLAN];
    /* SimpleStrategy RF 2: the local replica first, then the other local
     * nodes, and no remote node while local ones are up. */
    for (int k = 0; k < 4; k++) {
        int n = cql_make_plan(c, 1, 60, "simple2", p);
        assert_int_equal(n, 3);
        assert_int_equal(p[0], B);
        assert_true((p[1] == A && p[2] == C) || (p[1] == C && p[2] == A));
    }
    /* NTS: both local cql_replicas lead, in turn. */
    int firsts[5] = {0};
    for (int k = 0; k < 6; k++) {
        int n = cql_make_plan(c, 1, 60, "nts", p);
        assert_int_equal(n, 3);
        assert_true((p[0] == B && p[1] == C) || (p[0] == C && p[1] == B));
        assert_int_equal(p[2], A);
        firsts[p[0]]++;
    }
    assert_true(firsts[B] > 0 && firsts[C] > 0);
    /* A replica that is down is skipped. */
    c->nodes[B].up = 0;
    assert_int_equal(cql_make_plan(c, 1, 60, "simple2", p), 2);
    assert_true(p[0] != B && p[1] != B);
    /* No local node up: the remote DC, cql_replicas' order aside. */
    c->nodes[A].up = c->nodes[C].up = 0;
    int n = cql_make_plan(c, 1, 60, "nts", p);
    assert_int_equal(n, 2);
    assert_true((p[0] == D && p[1] == E) || (p[0] == E && p[1] == D));
    /* Nothing up: an empty plan (no host available). */
    c->nodes[D].up = c->nodes[E].up = 0;
    assert_int_equal(cql_make_plan(c, 1, 60, "nts", p), 0);
    /* Without a token: local round-robin. */
    c->nodes[A].up = c->nodes[B].up = c->nodes[C].up = 1;
    int seen[5] = {0};
    for (int k = 0; k < 6; k++) {
        assert_int_equal(cql_make_plan(c, 0, 0, NULL, p), 3);
        seen[p[0]]++;
    }
    assert_true(seen[A] && seen[B] && seen[C] && !seen[D] && !seen[E]);
    destroy(c);
}

static void t_parse_replication(void **state) {
    (void)state;
    /* map<text, text>: {class: ...NetworkTopologyStrategy, dc1: 3, dc2: 2} */
    uint8_t buf[256];
    sl_cql_wr w = sl_cql_wr_make(buf, sizeof buf);
    const char *kv[] = {"class", "org.apache.cassandra.locator.NetworkTopologyStrategy", "dc1", "3", "dc2",
                        "2/1"};
    sl_cql_wr_int(&w, 3);
    for (int i = 0; i < 6; i++)
        sl_cql_wr_bytes(&w, (sl_cql_bytes){(const uint8_t *)kv[i], (int32_t)strlen(kv[i])});
    ks_repl r = {0};
    cql_parse_replication((sl_cql_bytes){buf, (int32_t)w.len}, &r);
    assert_int_equal(r.simple, 0);
    assert_int_equal(r.ndc, 2);
    assert_string_equal(r.dcs[0].dc, "dc1");
    assert_int_equal(r.dcs[0].rf, 3);
    assert_int_equal(r.dcs[1].rf, 2);
    w = sl_cql_wr_make(buf, sizeof buf);
    const char *sv[] = {"class", "org.apache.cassandra.locator.SimpleStrategy", "replication_factor", "3"};
    sl_cql_wr_int(&w, 2);
    for (int i = 0; i < 4; i++)
        sl_cql_wr_bytes(&w, (sl_cql_bytes){(const uint8_t *)sv[i], (int32_t)strlen(sv[i])});
    ks_repl s2 = {0};
    cql_parse_replication((sl_cql_bytes){buf, (int32_t)w.len}, &s2);
    assert_int_equal(s2.simple, 1);
    assert_int_equal(s2.rf, 3);
    assert_int_equal(s2.ndc, 0);
    ks_repl bad = {0};
    cql_parse_replication((sl_cql_bytes){buf, 3}, &bad); /* truncated: ignored */
    assert_int_equal(bad.rf, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_replicas),
        cmocka_unit_test(t_plan),
        cmocka_unit_test(t_parse_replication),
    };
    return cmocka_run_group_tests_name("cql routing", tests, NULL, NULL);
}
