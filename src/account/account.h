/* account.h: accounts and their keys, stored through the table contract, and
 * the per-node caches of their existence and keys that every request reads.
 * It stands on store.h alone, below the engine, which asks it whether an
 * account exists (sl_engine_config.accounts).
 *
 * Tables (static data here, created with the engine's tables by
 * sl_engine_open, so both backends get them):
 *
 *   accounts      (name)    created
 *   account_keys  (account) name    key created
 *   account_index (shard)   account created
 *
 * account_keys holds each key as the 86-character base64url string the
 * admin API hands out (the HMAC schemes need the key itself, so it cannot be
 * stored hashed). account_index exists only so that the admin API can list
 * accounts: the contract reads one partition at a time, so every account has
 * a row in the one partition shard = 0. Whether an account exists is its row
 * in accounts (sl_acct_exists): positive answers are cached for 2 s.
 *
 * Cache: the keys of an account are read from the store at most once per
 * SL_ACCT_CACHE_MS on each node, so revoking a key or deleting an account
 * takes effect on every node within that time (API.md allows 5 s) and at
 * once on the node that made the change. An account without keys, or that
 * does not exist, is cached too (as empty), so unauthenticated requests for
 * made-up accounts cannot reach the store more than once per lifetime. */
#ifndef SL_ACCOUNT_H
#define SL_ACCOUNT_H

#include <stddef.h>
#include <stdint.h>

#include "../auth/auth.h"
#include "../store/store.h"

#define SL_ACCT_MAX_KEYS 32    /* keys per account, primary and secondary included */
#define SL_ACCT_CACHE_MS 2000  /* lifetime of a cached key set */
#define SL_ACCT_LIST_MAX 10000 /* accounts the admin listing returns at most */

extern const sl_table *const sl_acct_tables[];
extern const size_t sl_acct_ntables;

typedef struct sl_acct sl_acct;

/* Opens the module over a store (borrowed); its tables are made by
 * sl_engine_open, before any other call. */
int sl_acct_open(sl_store *st, sl_acct **out);

/* 0 when the account exists, SL_ENOTFOUND, or a store error. */
int sl_acct_exists(sl_acct *a, const char *account);
void sl_acct_close(sl_acct *a);

/* Creates an account with freshly generated keys "primary" and "secondary"
 * (written to keys[0] and keys[1]). 0, SL_EEXISTS, SL_EINVAL for a bad name,
 * or a store error (then nothing is left behind, as far as the store let us
 * clean up). */
int sl_acct_create(sl_acct *a, const char *account, struct sl_auth_key keys[2]);

/* For `sluice dev`: creates the account if it does not exist, adds primary
 * and secondary if they are missing, keeps any key it has, and writes the
 * primary key to *primary. */
int sl_acct_ensure(sl_acct *a, const char *account, struct sl_auth_key *primary);

/* Deleting an account, in two steps around the deletion of its queues,
 * which is the caller's (the admin API's): sl_acct_delete_begin revokes its
 * keys (requests stop authenticating at once on this node) and says
 * whether the account row still exists (*exists; its queues are deleted
 * while it does); sl_acct_delete_finish then deletes the row (and forgets
 * it in this node's cache) and the index entry. Each returns 0, SL_ENOTFOUND
 * (begin: neither a row nor an index entry) or a store error; calling them
 * again after a failure finishes the job. */
int sl_acct_delete_begin(sl_acct *a, const char *account, int *exists);
int sl_acct_delete_finish(sl_acct *a, const char *account, int exists);

/* Names and creation times of the accounts, sorted by name, at most
 * SL_ACCT_LIST_MAX. *names is malloc'ed as n entries of SL_NAME_MAX+1 bytes
 * and *created_ms as n integers; the caller frees both. */
int sl_acct_list(sl_acct *a, char (**names)[SL_NAME_MAX + 1], int64_t **created_ms, size_t *n);

/* The account's keys read from the store (not the cache), sorted by name,
 * with their creation times (created_ms may be NULL). 0 or SL_ENOTFOUND when
 * the account does not exist. */
int sl_acct_keys_read(sl_acct *a, const char *account, struct sl_auth_key *keys, int64_t *created_ms,
                      size_t cap, size_t *n);

/* Adds a key with a fresh secret (written to *key). 0, SL_ENOTFOUND (no such
 * account), SL_EEXISTS (the name is taken: delete it first to rotate),
 * SL_ETOOBIG (SL_ACCT_MAX_KEYS reached), SL_EINVAL, or a store error. */
int sl_acct_key_create(sl_acct *a, const char *account, const char *name, struct sl_auth_key *key);
/* Revokes a key. 0, SL_ENOTFOUND (no such account or key) or a store error. */
int sl_acct_key_delete(sl_acct *a, const char *account, const char *name);

/* The keys that authenticate requests for account, from the cache: copies
 * up to SL_ACCT_MAX_KEYS into keys (caller-owned) and sets *n, 0 when the
 * account has none or does not exist. 0 or a store error. */
int sl_acct_keys(sl_acct *a, const char *account, struct sl_auth_key *keys, size_t *n);

#endif
