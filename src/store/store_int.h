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

#endif
