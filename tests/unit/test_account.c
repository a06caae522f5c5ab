/* Account tests: accounts and keys through the table contract on the
 * embedded store, the per-node key cache's lifetime with the clock driven by
 * hand (two sl_acct instances over one store stand for two nodes), account
 * deletion, limits, and cleanup after a failed write. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "account/account.h"
#include "queue/queue.h"

typedef struct {
    char dir[64];
    sl_store *st;
    sl_engine *e;
    sl_acct *a, *b; /* two "nodes" */
} fx;

static int setup(void **state) {
    fx *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/sluice-account-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    sl_clock_manual(1);
    sl_clock_set_ms(1800000000000LL);
    sl_log_level = getenv("SLUICE_TEST_LOG") ? SL_DEBUG : SL_ERR;
    assert_int_equal(sl_store_sqlite_open(f->dir, &f->st), 0);
    assert_int_equal(sl_acct_open(f->st, &f->a), 0);
    assert_int_equal(sl_acct_open(f->st, &f->b), 0);
    sl_engine_config cfg = {0};
    cfg.accounts = f->a;
    assert_int_equal(sl_engine_open(f->st, &cfg, &f->e), 0);
    *state = f;
    return 0;
}

static int teardown(void **state) {
    fx *f = *state;
    sl_engine_close(f->e);
    sl_acct_close(f->a);
    sl_acct_close(f->b);
    sl_store_close(f->st);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    if (system(cmd) != 0) return -1;
    sl_clock_manual(0);
    free(f);
    return 0;
}

static int has_key(sl_acct *a, const char *account, const char *name, const char *secret) {
    struct sl_auth_key keys[SL_ACCT_MAX_KEYS];
    size_t n;
    assert_int_equal(sl_acct_keys(a, account, keys, &n), 0);
    for (size_t i = 0; i < n; i++)
        if (strcmp(keys[i].name, name) == 0 && (!secret || strcmp(keys[i].secret, secret) == 0)) return 1;
    return 0;
}

static void test_create_gives_two_distinct_keys(void **state) {
    fx *f = *state;
    struct sl_auth_key k[2];
    assert_int_equal(sl_acct_create(f->a, "acme", k), 0);
    assert_string_equal(k[0].name, "primary");
    assert_string_equal(k[1].name, "secondary");
    assert_int_equal(strlen(k[0].secret), SL_AUTH_KEY_CHARS);
    assert_string_not_equal(k[0].secret, k[1].secret);
    assert_true(has_key(f->a, "acme", "primary", k[0].secret));
    assert_true(has_key(f->b, "acme", "secondary", k[1].secret));
    assert_int_equal(sl_acct_exists(f->a, "acme"), 0);
    assert_int_equal(sl_acct_create(f->a, "acme", k), SL_EEXISTS);
    assert_int_equal(sl_acct_create(f->a, "..", k), SL_EINVAL);
    assert_int_equal(sl_acct_create(f->a, "a/b", k), SL_EINVAL);

    char(*names)[SL_NAME_MAX + 1];
    int64_t *created;
    size_t n;
    assert_int_equal(sl_acct_list(f->a, &names, &created, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(names[0], "acme");
    assert_int_equal(created[0], 1800000000000LL);
    free(names);
    free(created);
}

/* A key revoked on node a stops working on node b once b's cached copy is
 * SL_ACCT_CACHE_MS old, and at once on a. */
static void test_revocation_reaches_other_nodes_within_cache_lifetime(void **state) {
    fx *f = *state;
    struct sl_auth_key k[2], named;
    assert_int_equal(sl_acct_create(f->a, "acme", k), 0);
    assert_int_equal(sl_acct_key_create(f->a, "acme", "ci", &named), 0);
    assert_true(has_key(f->b, "acme", "ci", named.secret)); /* b caches it */
    assert_int_equal(sl_acct_key_delete(f->a, "acme", "ci"), 0);
    assert_false(has_key(f->a, "acme", "ci", NULL));
    sl_clock_advance_ms(SL_ACCT_CACHE_MS - 1);
    assert_true(has_key(f->b, "acme", "ci", NULL)); /* still cached on b */
    sl_clock_advance_ms(1);
    assert_false(has_key(f->b, "acme", "ci", NULL));
    assert_true(SL_ACCT_CACHE_MS <= 5000); /* API.md's bound */
    assert_int_equal(sl_acct_key_delete(f->a, "acme", "ci"), SL_ENOTFOUND);
    assert_int_equal(sl_acct_key_delete(f->a, "nobody", "ci"), SL_ENOTFOUND);
}

static void test_key_names_and_limit(void **state) {
    fx *f = *state;
    struct sl_auth_key k[2], x;
    assert_int_equal(sl_acct_create(f->a, "acme", k), 0);
    assert_int_equal(sl_acct_key_create(f->a, "acme", "primary", &x), SL_EEXISTS);
    assert_int_equal(sl_acct_key_create(f->a, "acme", ".", &x), SL_EINVAL);
    assert_int_equal(sl_acct_key_create(f->a, "nobody", "k", &x), SL_ENOTFOUND);
    for (int i = 2; i < SL_ACCT_MAX_KEYS; i++) {
        char name[16];
        snprintf(name, sizeof name, "k%d", i);
        assert_int_equal(sl_acct_key_create(f->a, "acme", name, &x), 0);
    }
    assert_int_equal(sl_acct_key_create(f->a, "acme", "one-too-many", &x), SL_ETOOBIG);
    struct sl_auth_key keys[SL_ACCT_MAX_KEYS];
    size_t n;
    assert_int_equal(sl_acct_keys(f->b, "acme", keys, &n), 0);
    assert_int_equal(n, SL_ACCT_MAX_KEYS);
}

static void test_ensure_keeps_existing_keys(void **state) {
    fx *f = *state;
    struct sl_auth_key p1, p2;
    assert_int_equal(sl_acct_ensure(f->a, "dev", &p1), 0);
    assert_int_equal(sl_acct_ensure(f->b, "dev", &p2), 0);
    assert_string_equal(p1.secret, p2.secret);
    /* A lost secondary is made again, the primary kept. */
    assert_int_equal(sl_acct_key_delete(f->a, "dev", "secondary"), 0);
    assert_int_equal(sl_acct_ensure(f->a, "dev", &p2), 0);
    assert_string_equal(p1.secret, p2.secret);
    assert_true(has_key(f->a, "dev", "secondary", NULL));
}

/* What the admin API's DELETE does, step by step: the keys go first, the
 * queues are deleted while the account still exists, then the account. */
static void test_delete_account_deletes_queues_and_keys(void **state) {
    fx *f = *state;
    struct sl_auth_key k[2];
    assert_int_equal(sl_acct_create(f->a, "acme", k), 0);
    assert_true(has_key(f->b, "acme", "primary", NULL));
    for (int i = 0; i < 3; i++) {
        sl_queue_opts o;
        sl_queue_opts_default(&o);
        snprintf(o.name, sizeof o.name, "q%d", i);
        char err[128];
        assert_int_equal(sl_queue_create(f->e, "acme", &o, err, sizeof err), 0);
    }
    int exists;
    assert_int_equal(sl_acct_delete_begin(f->a, "acme", &exists), 0);
    assert_int_equal(exists, 1);
    assert_false(has_key(f->a, "acme", "primary", NULL)); /* at once on this node */
    for (int i = 0; i < 3; i++) {
        char q[16];
        snprintf(q, sizeof q, "q%d", i);
        assert_int_equal(sl_queue_delete(f->e, "acme", q), 0);
    }
    assert_int_equal(sl_acct_delete_finish(f->a, "acme", exists), 0);
    assert_int_equal(sl_acct_exists(f->a, "acme"), SL_ENOTFOUND);
    assert_int_equal(sl_queue_list(f->e, "acme", &(sl_queue_info *){NULL}, &(size_t){0}), SL_ENOTFOUND);
    sl_clock_advance_ms(SL_ACCT_CACHE_MS);
    assert_false(has_key(f->b, "acme", "primary", NULL));
    assert_int_equal(sl_acct_exists(f->b, "acme"), SL_ENOTFOUND);
    assert_int_equal(sl_acct_delete_begin(f->a, "acme", &exists), SL_ENOTFOUND);
    /* Made again, it has no queues. */
    assert_int_equal(sl_acct_create(f->a, "acme", k), 0);
    sl_queue_info *qs;
    size_t n;
    assert_int_equal(sl_queue_list(f->e, "acme", &qs, &n), 0);
    assert_int_equal(n, 0);
    free(qs);
    char(*names)[SL_NAME_MAX + 1];
    int64_t *created;
    assert_int_equal(sl_acct_list(f->a, &names, &created, &n), 0);
    assert_int_equal(n, 1);
    free(names);
    free(created);
}

static sl_fault_action fail_key_writes(void *ctx, const sl_write *w, size_t n) {
    int *left = ctx;
    (void)n;
    if (strcmp(w->t->name, "account_keys") == 0 && w->kind == SL_W_UPSERT && *left > 0) {
        (*left)--;
        return SL_FAULT_FAIL;
    }
    return SL_FAULT_NONE;
}

/* A create whose key write fails leaves nothing behind, so a retry works. */
static void test_failed_create_is_undone(void **state) {
    fx *f = *state;
    int left = 1;
    sl_store_sqlite_set_fault(f->st, fail_key_writes, &left);
    struct sl_auth_key k[2];
    assert_int_equal(sl_acct_create(f->a, "acme", k), SL_EUNAVAILABLE);
    assert_int_equal(sl_acct_exists(f->a, "acme"), SL_ENOTFOUND);
    assert_int_equal(sl_acct_create(f->a, "acme", k), 0);
    sl_store_sqlite_set_fault(f->st, NULL, NULL);
    assert_true(has_key(f->b, "acme", "primary", k[0].secret));
}

/* Unknown accounts read as "no keys", and that answer is cached too. */
static void test_unknown_account_has_no_keys(void **state) {
    fx *f = *state;
    struct sl_auth_key keys[SL_ACCT_MAX_KEYS];
    size_t n = 99;
    assert_int_equal(sl_acct_keys(f->a, "nobody", keys, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(sl_acct_keys(f->a, "bad/name", keys, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(sl_acct_keys_read(f->a, "nobody", keys, NULL, SL_ACCT_MAX_KEYS, &n), SL_ENOTFOUND);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_gives_two_distinct_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_revocation_reaches_other_nodes_within_cache_lifetime, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_key_names_and_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ensure_keeps_existing_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete_account_deletes_queues_and_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_create_is_undone, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_account_has_no_keys, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
