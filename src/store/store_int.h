/* store_int.h: what the backends share. Not part of the contract.
 *
 * Both backends check their input the same way before anything is
 * allocated or sent (the limits are Cassandra's, so that what the embedded
 * store accepts Cassandra accepts too), and build their statement text with
 * the same small string builder. */
#ifndef SL_STORE_INT_H
#define SL_STORE_INT_H

#include "store.h"

#define SL_STORE_MAX_VALUE (16u << 20)     /* bytes in one text or blob value */
#define SL_STORE_MAX_BATCH 4096            /* writes in one apply() */
#define SL_STORE_MAX_TTL (20 * 365 * 86400) /* seconds: Cassandra's limit */

int sl_store_check_table(const sl_table *t);
int sl_store_check_val(const sl_val *v);
/* The first n values are a key: set, not null, within the limits. */
int sl_store_check_key(const sl_val *v, int n);
/* Two set values of type ty are equal. */
int sl_store_val_eq(sl_type ty, const sl_val *a, const sl_val *b);
/* Checks n writes: tables, kinds, keys, values, conditions, TTLs. *cas says
 * whether any is conditional, *one_partition whether all share a partition
 * of one table; a conditional batch across partitions is SL_EINVAL. */
int sl_store_check_writes(const sl_write *w, size_t n, int *cas, int *one_partition);

/* A growing NUL-terminated string; oom is set (and stays set) when an
 * allocation failed. The caller frees p. */
typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

void sb_addn(sbuf *b, const char *s, size_t n);
void sb_add(sbuf *b, const char *s);

/* What a statement does, whatever values are bound to it: its text follows
 * from this, and both backends cache their prepared statements by it.
 * Fill one with sl_stmt_shape_init, then the fields its op uses. */
enum {
    SL_STMT_GET = 1,   /* one row by its whole key */
    SL_STMT_SLICE,     /* rows of a partition between bounds */
    SL_STMT_UPSERT,    /* cols set */
    SL_STMT_INSERT_NX, /* cols set, if the row does not exist */
    SL_STMT_UPDATE_IF, /* cols set, if the conditions hold */
    SL_STMT_DEL_ROW,
    SL_STMT_DEL_PART,
    SL_STMT_PURGE,           /* the embedded store's expired rows */
    SL_STMT_UPDATE_KEEP_EXP, /* the embedded store's SL_STMT_UPDATE_IF that keeps a row's expiry */
    /* The embedded store's expiry by partition (SL_TABLE_EXPIRY_BY_PARTITION) */
    SL_STMT_PEXP_NOTE, /* a partition's expiry lowered to ? (or noted) */
    SL_STMT_PEXP_DUE,  /* partitions whose expiry has passed */
    SL_STMT_PEXP_DROP, /* a partition's expired rows */
    SL_STMT_PEXP_MIN,  /* the earliest expiry of a partition's rows */
    SL_STMT_PEXP_SET,  /* a partition's expiry set to ? */
    SL_STMT_PEXP_DEL,  /* a partition's expiry forgotten */
    /* The embedded store's large values, kept out of their rows */
    SL_STMT_BIG_PUT, /* a value stored: its rowid is the reference */
    SL_STMT_BIG_GET, /* a value by its reference */
    SL_STMT_BIG_DEL  /* a value no row refers to */
};
typedef struct {
    const sl_table *t; /* static data (store.h): compared by address */
    uint8_t op;
    /* SL_STMT_SLICE: clustering columns bound below and above, whether each
     * bound is exclusive, descending order, a LIMIT */
    uint8_t nfrom, nto, from_excl, to_excl, desc, limit;
    uint8_t ncond; /* SL_STMT_UPDATE_IF */
    uint32_t cols; /* writes: the regular columns set, bit i for column i */
    struct {
        uint8_t col, is_null; /* IF col = ? or IF col = null */
    } cond[SL_MAX_CONDS];
} sl_stmt_shape;

/* Zeroes every byte (shapes are compared and hashed as bytes). */
void sl_stmt_shape_init(sl_stmt_shape *k, const sl_table *t, int op);
/* The shape of a slice (checked already). */
void sl_stmt_shape_slice(sl_stmt_shape *k, const sl_slice *q);

/* A hash table of prepared statements by shape; the statements belong to
 * the caller (freed through sl_stmt_cache_free's fin). Not locked. */
typedef struct {
    struct sl_stmt_ent *tab;
    size_t cap, n;
} sl_stmt_cache;
/* The statement cached for k, or NULL. */
void *sl_stmt_cache_get(const sl_stmt_cache *c, const sl_stmt_shape *k);
/* Caches st for k (not there yet). 0 or SL_ENOMEM. */
int sl_stmt_cache_put(sl_stmt_cache *c, const sl_stmt_shape *k, void *st);
void sl_stmt_cache_free(sl_stmt_cache *c, void (*fin)(void *st));

#endif
