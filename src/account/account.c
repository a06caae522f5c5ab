/* account.c: accounts, their keys, and the per-node key cache (see
 * account.h for the tables and the cache's guarantees).
 *
 * Schema version 1. The key column holds the key as handed out (86
 * characters of base64url); changing that, or the tables, needs a
 * migration in `sluice schema`. */
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"

enum { A_NAME, A_CREATED };
enum { K_ACCOUNT, K_NAME, K_KEY, K_CREATED };
enum { I_SHARD, I_ACCOUNT, I_CREATED };

static const sl_table t_accounts = {"accounts", 1, 0, 2, {{"name", SL_TEXT}, {"created", SL_INT}}, 0};

static const sl_table t_keys = {
    "account_keys",
    1,
    1,
    4,
    {{"account", SL_TEXT}, {"name", SL_TEXT}, {"key", SL_TEXT}, {"created", SL_INT}},
    0};
static const sl_table t_index = {
    "account_index", 1, 1, 3, {{"shard", SL_INT}, {"account", SL_TEXT}, {"created", SL_INT}}, 0};

const sl_table *const sl_acct_tables[] = {&t_accounts, &t_keys, &t_index};
const size_t sl_acct_ntables = sizeof sl_acct_tables / sizeof sl_acct_tables[0];

#define CACHE_SLOTS 64

/* One cached key set. gen counts invalidations, so a reader that loaded
 * keys from the store before a revocation does not put them back after it. */
typedef struct {
    char account[SL_NAME_MAX + 1];
    int64_t until_ms;
    uint64_t gen;
    size_t n;
    struct sl_auth_key keys[SL_ACCT_MAX_KEYS];
} slot;

/* Whether an account exists, known on this node until until_ms. */
typedef struct {
    char name[SL_NAME_MAX + 1];
    int64_t until_ms;
} known;

struct sl_acct {
    sl_store *st;
    pthread_mutex_t mu;
    slot *cache;              /* CACHE_SLOTS entries */
    known exists[CACHE_SLOTS]; /* under mu */
};

int sl_acct_open(sl_store *st, sl_acct **out) {
    *out = NULL;
    sl_acct *a = calloc(1, sizeof *a);
    if (!a) return SL_ENOMEM;
    a->cache = calloc(CACHE_SLOTS, sizeof *a->cache);
    if (!a->cache) {
        free(a);
        return SL_ENOMEM;
    }
    a->st = st;
    pthread_mutex_init(&a->mu, NULL);
    *out = a;
    return 0;
}

void sl_acct_close(sl_acct *a) {
    if (!a) return;
    OPENSSL_cleanse(a->cache, CACHE_SLOTS * sizeof *a->cache);
    free(a->cache);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

static slot *slot_of(sl_acct *a, const char *account) {
    unsigned h = 5381;
    for (const char *p = account; *p; p++)
        h = h * 33 + (unsigned char)*p;
    return &a->cache[h % CACHE_SLOTS];
}

/* Accounts are read on every request, so a positive answer is cached for
 * two seconds; API.md allows revocation to take up to five. */
int sl_acct_exists(sl_acct *a, const char *account) {
    if (!sl_name_valid(account)) return SL_ENOTFOUND;
    int64_t now = sl_now_ms();
    known *k = &a->exists[slot_of(a, account) - a->cache];
    pthread_mutex_lock(&a->mu);
    int hit = k->until_ms > now && strcmp(k->name, account) == 0;
    pthread_mutex_unlock(&a->mu);
    if (hit) return 0;
    sl_val key[1] = {sl_vtext(account)};
    sl_result r;
    sl_result_init(&r);
    int rc = sl_store_get(a->st, &t_accounts, key, SL_READ_DEFAULT, &r);
    sl_result_free(&r);
    if (rc == 0) {
        pthread_mutex_lock(&a->mu);
        snprintf(k->name, sizeof k->name, "%s", account);
        k->until_ms = now + 2000;
        pthread_mutex_unlock(&a->mu);
    }
    return rc;
}

/* The account's row: 0 or SL_EEXISTS, or a store error. */
static int row_create(sl_acct *a, const char *account) {
    sl_write w = {0};
    w.t = &t_accounts;
    w.kind = SL_W_INSERT_IF_NOT_EXISTS;
    w.row.v[A_NAME] = sl_vtext(account);
    w.row.v[A_CREATED] = sl_vint(sl_now_ms());
    int rc = sl_store_apply(a->st, &w, 1, NULL);
    if (rc == SL_EUNKNOWN) {
        /* Creating an account is idempotent for the caller: if it exists
         * now, either this call or an earlier one made it. */
        rc = sl_acct_exists(a, account);
        return rc == SL_ENOTFOUND ? SL_EUNAVAILABLE : rc;
    }
    return rc == SL_ENOTAPPLIED ? SL_EEXISTS : rc;
}

/* Deletes the row and forgets it in this node's cache even when the outcome
 * is unknown: a stale "exists" is the one answer this node must not give
 * after a delete. 0 (also when there was none) or a store error. */
static int row_delete(sl_acct *a, const char *account) {
    sl_write w = {0};
    w.t = &t_accounts;
    w.kind = SL_W_DELETE_ROW;
    w.row.v[A_NAME] = sl_vtext(account);
    int rc = sl_store_apply(a->st, &w, 1, NULL);
    known *k = &a->exists[slot_of(a, account) - a->cache];
    pthread_mutex_lock(&a->mu);
    if (strcmp(k->name, account) == 0) k->until_ms = 0;
    pthread_mutex_unlock(&a->mu);
    return rc;
}

/* Forgets the account's keys on this node. */
static void invalidate(sl_acct *a, const char *account) {
    slot *s = slot_of(a, account);
    pthread_mutex_lock(&a->mu);
    s->gen++;
    s->until_ms = 0;
    pthread_mutex_unlock(&a->mu);
}

/* Reads the keys of account from the store, sorted by name. */
static int read_keys(sl_acct *a, const char *account, int consistency, struct sl_auth_key *keys,
                     int64_t *created, size_t cap, size_t *n) {
    sl_slice q = {0};
    q.t = &t_keys;
    q.pk[0] = sl_vtext(account);
    q.limit = SL_ACCT_MAX_KEYS;
    q.consistency = consistency;
    sl_result r;
    sl_result_init(&r);
    int rc = sl_store_slice(a->st, &q, &r);
    *n = 0;
    for (size_t i = 0; rc == 0 && i < r.n && *n < cap; i++) {
        char name[SL_NAME_MAX + 1], secret[SL_AUTH_KEY_CHARS + 1];
        if (sl_val_str(&r.rows[i].v[K_NAME], name, sizeof name) < 0 ||
            sl_val_str(&r.rows[i].v[K_KEY], secret, sizeof secret) != SL_AUTH_KEY_CHARS ||
            sl_auth_key_init(&keys[*n], name, secret) != 0) {
            sl_log(SL_ERR, "account: a key of '%s' in the store is malformed; ignored", account);
            continue;
        }
        if (created) created[*n] = r.rows[i].v[K_CREATED].set ? r.rows[i].v[K_CREATED].i : 0;
        OPENSSL_cleanse(secret, sizeof secret);
        (*n)++;
    }
    sl_result_free(&r);
    return rc;
}

int sl_acct_keys(sl_acct *a, const char *account, struct sl_auth_key *keys, size_t *n) {
    *n = 0;
    if (!sl_name_valid(account)) return 0;
    slot *s = slot_of(a, account);
    int64_t now = sl_now_ms();
    pthread_mutex_lock(&a->mu);
    if (s->until_ms > now && strcmp(s->account, account) == 0) {
        *n = s->n;
        memcpy(keys, s->keys, s->n * sizeof *keys);
        pthread_mutex_unlock(&a->mu);
        return 0;
    }
    uint64_t gen = s->gen;
    pthread_mutex_unlock(&a->mu);

    int rc = read_keys(a, account, SL_READ_DEFAULT, keys, NULL, SL_ACCT_MAX_KEYS, n);
    if (rc) return rc;
    pthread_mutex_lock(&a->mu);
    if (s->gen == gen) {
        snprintf(s->account, sizeof s->account, "%s", account);
        s->n = *n;
        memcpy(s->keys, keys, *n * sizeof *keys);
        s->until_ms = now + SL_ACCT_CACHE_MS;
    }
    pthread_mutex_unlock(&a->mu);
    return 0;
}

int sl_acct_keys_read(sl_acct *a, const char *account, struct sl_auth_key *keys, int64_t *created_ms,
                      size_t cap, size_t *n) {
    *n = 0;
    int rc = sl_acct_exists(a, account);
    if (rc) return rc;
    return read_keys(a, account, SL_READ_DEFAULT, keys, created_ms, cap, n);
}

static void key_row(sl_write *w, sl_wkind kind, const char *account, const char *name) {
    memset(w, 0, sizeof *w);
    w->t = &t_keys;
    w->kind = kind;
    w->row.v[K_ACCOUNT] = sl_vtext(account);
    w->row.v[K_NAME] = sl_vtext(name);
}

static int new_key(struct sl_auth_key *k, const char *name) {
    char secret[SL_AUTH_KEY_CHARS + 1];
    int rc = sl_auth_key_generate(secret);
    if (rc == 0) rc = sl_auth_key_init(k, name, secret);
    OPENSSL_cleanse(secret, sizeof secret);
    return rc;
}

/* Inserts a key row unless the name is taken, resolving an unknown outcome
 * by reading the row back: 0, SL_EEXISTS or a store error. */
static int insert_key(sl_acct *a, const char *account, const struct sl_auth_key *k) {
    sl_write w;
    key_row(&w, SL_W_INSERT_IF_NOT_EXISTS, account, k->name);
    w.row.v[K_KEY] = sl_vtext(k->secret);
    w.row.v[K_CREATED] = sl_vint(sl_now_ms());
    int rc = sl_store_apply(a->st, &w, 1, NULL);
    if (rc == SL_ENOTAPPLIED) return SL_EEXISTS;
    if (rc != SL_EUNKNOWN) return rc;
    sl_result r;
    sl_result_init(&r);
    rc = sl_store_get(a->st, &t_keys, w.row.v, SL_READ_SERIAL, &r);
    if (rc == 0) {
        char got[SL_AUTH_KEY_CHARS + 1];
        long n = sl_val_str(&r.rows[0].v[K_KEY], got, sizeof got);
        rc = n == SL_AUTH_KEY_CHARS && strcmp(got, k->secret) == 0 ? 0 : SL_EEXISTS;
    } else if (rc == SL_ENOTFOUND) {
        rc = SL_EUNAVAILABLE; /* it did not apply: the caller may retry */
    }
    sl_result_free(&r);
    return rc;
}

static int index_put(sl_acct *a, const char *account) {
    sl_write w = {0};
    w.t = &t_index;
    w.kind = SL_W_UPSERT;
    w.row.v[I_SHARD] = sl_vint(0);
    w.row.v[I_ACCOUNT] = sl_vtext(account);
    w.row.v[I_CREATED] = sl_vint(sl_now_ms());
    return sl_store_apply(a->st, &w, 1, NULL);
}

static int index_delete(sl_acct *a, const char *account) {
    sl_write w = {0};
    w.t = &t_index;
    w.kind = SL_W_DELETE_ROW;
    w.row.v[I_SHARD] = sl_vint(0);
    w.row.v[I_ACCOUNT] = sl_vtext(account);
    return sl_store_apply(a->st, &w, 1, NULL);
}

static int keys_delete_all(sl_acct *a, const char *account) {
    sl_write w;
    key_row(&w, SL_W_DELETE_PARTITION, account, "");
    w.row.v[K_NAME].set = 0;
    int rc = sl_store_apply(a->st, &w, 1, NULL);
    invalidate(a, account);
    return rc;
}

static int valid_name(const char *s) {
    /* "." and ".." are valid names by the pattern but ambiguous in paths,
     * which SigV4 normalizes: refuse them everywhere. */
    return sl_name_valid(s) && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

int sl_acct_create(sl_acct *a, const char *account, struct sl_auth_key keys[2]) {
    if (!valid_name(account)) return SL_EINVAL;
    int rc = new_key(&keys[0], "primary");
    if (rc == 0) rc = new_key(&keys[1], "secondary");
    if (rc) return rc;
    rc = row_create(a, account);
    if (rc) return rc;
    sl_write w[2];
    for (int i = 0; i < 2; i++) {
        key_row(&w[i], SL_W_UPSERT, account, keys[i].name);
        w[i].row.v[K_KEY] = sl_vtext(keys[i].secret);
        w[i].row.v[K_CREATED] = sl_vint(sl_now_ms());
    }
    rc = sl_store_apply(a->st, w, 2, NULL);
    if (rc == 0) rc = index_put(a, account);
    if (rc) {
        /* Undo, so that retrying the create can succeed. */
        keys_delete_all(a, account);
        row_delete(a, account);
        index_delete(a, account);
        return rc;
    }
    invalidate(a, account);
    return 0;
}

int sl_acct_ensure(sl_acct *a, const char *account, struct sl_auth_key *primary) {
    if (!valid_name(account)) return SL_EINVAL;
    /* Read first: on a restart everything exists, and starting must not
     * need the store to accept writes. */
    struct sl_auth_key have[SL_ACCT_MAX_KEYS];
    size_t nhave = 0;
    int found = 0;
    if (sl_acct_exists(a, account) == 0 &&
        read_keys(a, account, SL_READ_SERIAL, have, NULL, SL_ACCT_MAX_KEYS, &nhave) == 0) {
        int secondary = 0;
        for (size_t i = 0; i < nhave; i++) {
            if (strcmp(have[i].name, "primary") == 0) {
                *primary = have[i];
                found = 1;
            }
            secondary |= strcmp(have[i].name, "secondary") == 0;
        }
        found &= secondary;
    }
    OPENSSL_cleanse(have, sizeof have);
    if (found) return 0;
    int rc = row_create(a, account);
    if (rc && rc != SL_EEXISTS) return rc;
    static const char *const names[] = {"primary", "secondary"};
    for (int i = 0; i < 2; i++) {
        struct sl_auth_key k;
        if ((rc = new_key(&k, names[i])) != 0) return rc;
        rc = insert_key(a, account, &k);
        OPENSSL_cleanse(&k, sizeof k);
        if (rc && rc != SL_EEXISTS) return rc;
    }
    if ((rc = index_put(a, account)) != 0) return rc;
    invalidate(a, account);
    struct sl_auth_key keys[SL_ACCT_MAX_KEYS];
    size_t n;
    rc = read_keys(a, account, SL_READ_SERIAL, keys, NULL, SL_ACCT_MAX_KEYS, &n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (strcmp(keys[i].name, "primary") == 0) *primary = keys[i];
    OPENSSL_cleanse(keys, sizeof keys);
    return rc;
}

int sl_acct_delete_begin(sl_acct *a, const char *account, int *exists) {
    *exists = 0;
    if (!sl_name_valid(account)) return SL_ENOTFOUND;
    int rc = sl_acct_exists(a, account);
    if (rc && rc != SL_ENOTFOUND) return rc;
    *exists = rc == 0;
    sl_val key[2] = {sl_vint(0), sl_vtext(account)};
    sl_result r;
    sl_result_init(&r);
    int indexed = sl_store_get(a->st, &t_index, key, SL_READ_DEFAULT, &r);
    sl_result_free(&r);
    if (indexed && indexed != SL_ENOTFOUND) return indexed;
    if (!*exists && indexed == SL_ENOTFOUND) return SL_ENOTFOUND;
    return keys_delete_all(a, account);
}

int sl_acct_delete_finish(sl_acct *a, const char *account, int exists) {
    int rc = exists ? row_delete(a, account) : 0;
    return rc ? rc : index_delete(a, account);
}

int sl_acct_list(sl_acct *a, char (**names)[SL_NAME_MAX + 1], int64_t **created_ms, size_t *n) {
    *names = NULL;
    *created_ms = NULL;
    *n = 0;
    char(*nv)[SL_NAME_MAX + 1] = NULL;
    int64_t *cv = NULL;
    size_t cap = 0, cnt = 0;
    char last[SL_NAME_MAX + 1] = "";
    int rc = 0;
    for (;;) {
        sl_slice q = {0};
        q.t = &t_index;
        q.pk[0] = sl_vint(0);
        q.limit = 500;
        if (last[0]) {
            q.from[0] = sl_vtext(last);
            q.nfrom = 1;
            q.from_excl = 1;
        }
        sl_result r;
        sl_result_init(&r);
        rc = sl_store_slice(a->st, &q, &r);
        for (size_t i = 0; rc == 0 && i < r.n && cnt < SL_ACCT_LIST_MAX; i++) {
            if (cnt == cap) {
                size_t nc = cap ? cap * 2 : 64;
                void *p1 = realloc(nv, nc * sizeof *nv), *p2;
                if (p1) nv = p1;
                p2 = p1 ? realloc(cv, nc * sizeof *cv) : NULL;
                if (p2) cv = p2;
                if (!p1 || !p2) {
                    rc = SL_ENOMEM;
                    break;
                }
                cap = nc;
            }
            if (sl_val_str(&r.rows[i].v[I_ACCOUNT], nv[cnt], sizeof nv[cnt]) < 0) continue;
            cv[cnt] = r.rows[i].v[I_CREATED].set ? r.rows[i].v[I_CREATED].i : 0;
            snprintf(last, sizeof last, "%s", nv[cnt]);
            cnt++;
        }
        int more = r.more;
        sl_result_free(&r);
        if (rc || !more || cnt >= SL_ACCT_LIST_MAX) break;
    }
    if (rc) {
        free(nv);
        free(cv);
        return rc;
    }
    *names = nv;
    *created_ms = cv;
    *n = cnt;
    return 0;
}

int sl_acct_key_create(sl_acct *a, const char *account, const char *name, struct sl_auth_key *key) {
    if (!valid_name(name)) return SL_EINVAL;
    struct sl_auth_key keys[SL_ACCT_MAX_KEYS];
    size_t n;
    int rc = sl_acct_keys_read(a, account, keys, NULL, SL_ACCT_MAX_KEYS, &n);
    OPENSSL_cleanse(keys, sizeof keys);
    if (rc) return rc;
    if (n >= SL_ACCT_MAX_KEYS) return SL_ETOOBIG;
    if ((rc = new_key(key, name)) != 0) return rc;
    rc = insert_key(a, account, key);
    invalidate(a, account);
    return rc;
}

int sl_acct_key_delete(sl_acct *a, const char *account, const char *name) {
    if (!sl_name_valid(name)) return SL_ENOTFOUND;
    int rc = sl_acct_exists(a, account);
    if (rc) return rc;
    sl_write w;
    key_row(&w, SL_W_DELETE_ROW, account, name);
    sl_result r;
    sl_result_init(&r);
    rc = sl_store_get(a->st, &t_keys, w.row.v, SL_READ_DEFAULT, &r);
    sl_result_free(&r);
    if (rc) return rc;
    rc = sl_store_apply(a->st, &w, 1, NULL);
    invalidate(a, account);
    return rc;
}
