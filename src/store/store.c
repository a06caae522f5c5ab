/* store.c: the backend-independent parts of the table contract: values,
 * results and their memory, and the seeded random fault source.
 *
 * An sl_result owns two things: rows, a malloc'd array grown by doubling
 * (its capacity is implied by n, so the struct needs no capacity field), and
 * arena, a chain of malloc'd chunks holding the text and blob bytes that the
 * rows point into. Chunks never move once allocated, so row values stay
 * valid while the rows array is reallocated. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../util/metrics.h"
#include "store_int.h"

sl_val sl_vtext(const char *s) {
    return sl_vbytes(s, strlen(s));
}

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t data[];
} chunk;

#define CHUNK_MIN 4096

void sl_result_init(sl_result *r) {
    memset(r, 0, sizeof *r);
}

void sl_result_free(sl_result *r) {
    chunk *c = r->arena;
    while (c) {
        chunk *next = c->next;
        free(c);
        c = next;
    }
    free(r->rows);
    sl_result_init(r);
}

void *sl_result_alloc(sl_result *r, size_t n) {
    size_t need = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
    chunk *c = r->arena;
    if (need < n) return NULL; /* overflow */
    if (!c || c->cap - c->used < need) {
        size_t cap = need > CHUNK_MIN ? need : CHUNK_MIN;
        if (cap > SIZE_MAX - sizeof(chunk)) return NULL;
        chunk *nc = sl_malloc(sizeof(chunk) + cap);
        if (!nc) return NULL;
        nc->used = 0;
        nc->cap = cap;
        /* A big allocation goes behind the current chunk so that the
         * current one's free space is not abandoned. */
        if (c && cap == need && c->cap - c->used >= CHUNK_MIN / 4) {
            nc->next = c->next;
            c->next = nc;
            nc->used = need;
            return nc->data;
        }
        nc->next = c;
        r->arena = c = nc;
    }
    void *p = (char *)c->data + c->used;
    c->used += need;
    return p;
}

sl_row *sl_result_add_row(sl_result *r) {
    /* Capacity is the smallest power of two >= n (and >= 8), so a new
     * array is needed exactly when n is 0 or a power of two >= 8. */
    size_t n = r->n;
    if (n == 0 || (n >= 8 && (n & (n - 1)) == 0)) {
        size_t cap = n == 0 ? 8 : n * 2;
        if (cap > SIZE_MAX / sizeof(sl_row)) return NULL;
        sl_row *rows = sl_realloc(r->rows, cap * sizeof(sl_row));
        if (!rows) return NULL;
        r->rows = rows;
    }
    sl_row *row = &r->rows[r->n++];
    memset(row, 0, sizeof *row);
    return row;
}

long sl_val_str(const sl_val *v, char *buf, size_t cap) {
    if (!v->set || v->null) return SL_ENOTFOUND;
    if (cap == 0 || v->n >= cap) return SL_ETOOBIG;
    if (v->n) memcpy(buf, v->p, v->n);
    buf[v->n] = '\0';
    return (long)v->n;
}

/* --- Statements by table and kind ------------------------------------------
 *
 * Each table is one static definition, so a table is known by its address:
 * a slot is claimed for it the first time it is counted (open addressing,
 * claimed with a compare-and-swap, never released), and each count is a
 * relaxed atomic add. A table that finds no slot is not counted. */
#define COUNT_SLOTS 128

static struct {
    const sl_table *_Atomic t;
    uint64_t n[SL_STAT_N];
} counts[COUNT_SLOTS];

void sl_store_count(const sl_table *t, int kind) {
    if (!t) return;
    size_t i = (size_t)(((uintptr_t)t >> 4) * 0x9E3779B97F4A7C15ull >> 57);
    for (int k = 0; k < COUNT_SLOTS; k++, i = (i + 1) % COUNT_SLOTS) {
        const sl_table *cur = atomic_load_explicit(&counts[i].t, memory_order_acquire);
        if (!cur && (atomic_compare_exchange_strong(&counts[i].t, &cur, t) || cur == t)) cur = t;
        if (cur == t) {
            __atomic_fetch_add(&counts[i].n[kind], 1, __ATOMIC_RELAXED);
            return;
        }
    }
}

void sl_store_count_writes(const sl_write *w, size_t n) {
    for (size_t k = 0; w && k < n; k++)
        sl_store_count(w[k].t, w[k].kind == SL_W_INSERT_IF_NOT_EXISTS || w[k].kind == SL_W_UPDATE_IF
                                   ? SL_STAT_CAS
                                   : SL_STAT_WRITE);
}

void sl_store_count_metrics(sl_text *t) {
    static const char *const kind[SL_STAT_N] = {"get", "slice", "write", "cas"};
    sl_metric_head(
        t, "sluice_store_statements_total", "counter",
        "Statements sent to the store, by table and kind: get (one row by its key), slice (rows of one "
        "partition), write (an upsert or a delete), cas (a conditional write; each row of a conditional "
        "batch counts, sluice_engine_cas_rounds_total counts the batches).");
    for (size_t i = 0; i < COUNT_SLOTS; i++) {
        const sl_table *tb = atomic_load_explicit(&counts[i].t, memory_order_acquire);
        for (int k = 0; tb && k < SL_STAT_N; k++) {
            uint64_t v = __atomic_load_n(&counts[i].n[k], __ATOMIC_RELAXED);
            if (v)
                sl_text_printf(t, "sluice_store_statements_total{table=\"%s\",kind=\"%s\"} %llu\n", tb->name,
                               kind[k], (unsigned long long)v);
        }
    }
}

int sl_write_is_cas(const sl_write *w, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (w[i].kind == SL_W_INSERT_IF_NOT_EXISTS || w[i].kind == SL_W_UPDATE_IF) return 1;
    return 0;
}

/* xorshift64* (Vigna): small, fast, and good enough to spread faults. The
 * state must never be 0, so a zero seed is replaced by a fixed constant. */
static uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/* Writes that the filters exclude draw nothing from the generator, so the
 * decisions for the writes that matter do not depend on unrelated traffic. */
sl_fault_action sl_fault_random(void *ctx, const sl_write *w, size_t n) {
    sl_fault_random_cfg *c = ctx;
    if (!c || n == 0) return SL_FAULT_NONE;
    if (c->only_table) {
        size_t i = 0;
        while (i < n && !(w[i].t && w[i].t->name && strcmp(w[i].t->name, c->only_table) == 0))
            i++;
        if (i == n) return SL_FAULT_NONE;
    }
    if (c->only_cas && !sl_write_is_cas(w, n)) return SL_FAULT_NONE;
    if (c->state == 0) c->state = c->seed ? c->seed : 0x9E3779B97F4A7C15ULL;
    uint64_t r = xorshift(&c->state) % 1000000;
    uint64_t edge = 0;
    sl_fault_action act = SL_FAULT_NONE;
    if (r < (edge += c->fail_ppm))
        act = SL_FAULT_FAIL;
    else if (r < (edge += c->unknown_applied_ppm))
        act = SL_FAULT_UNKNOWN_APPLIED;
    else if (r < (edge += c->unknown_dropped_ppm))
        act = SL_FAULT_UNKNOWN_DROPPED;
    else if (r < (edge += c->delay_ppm))
        act = SL_FAULT_DELAY;
    else if (r < (edge += c->duplicate_ppm))
        act = SL_FAULT_DUPLICATE;
    if (act != SL_FAULT_NONE) c->injected++;
    return act;
}

/* --- What the backends share (store_int.h) --------------------------------- */

int sl_store_check_table(const sl_table *t) {
    if (!t || !t->name || t->npk < 1 || t->npk > SL_MAX_PK || t->nck < 0 || t->nck > SL_MAX_CK ||
        t->ncol > SL_MAX_COLS || t->npk + t->nck > t->ncol)
        return SL_EINVAL;
    for (int i = 0; i < t->ncol; i++)
        if (!t->cols[i].name || t->cols[i].type < SL_INT || t->cols[i].type > SL_BLOB) return SL_EINVAL;
    return 0;
}

int sl_store_check_val(const sl_val *v) {
    if (!v->set || v->null) return 0;
    if (v->n > SL_STORE_MAX_VALUE || (v->n && !v->p)) return SL_EINVAL;
    return 0;
}

int sl_store_check_key(const sl_val *v, int n) {
    for (int i = 0; i < n; i++)
        if (!v[i].set || v[i].null || sl_store_check_val(&v[i])) return SL_EINVAL;
    return 0;
}

int sl_store_val_eq(sl_type ty, const sl_val *a, const sl_val *b) {
    if (ty == SL_INT) return a->i == b->i;
    return a->n == b->n && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0);
}

int sl_store_check_writes(const sl_write *w, size_t n, int *cas, int *one_partition) {
    if (!w || n > SL_STORE_MAX_BATCH) return SL_EINVAL;
    *cas = sl_write_is_cas(w, n);
    *one_partition = 1;
    for (size_t k = 0; k < n; k++) {
        const sl_write *x = &w[k];
        const sl_table *t = x->t;
        if (sl_store_check_table(t) || x->kind < SL_W_UPSERT || x->kind > SL_W_UPDATE_IF) return SL_EINVAL;
        if (x->ttl < 0 || x->ttl > SL_STORE_MAX_TTL || x->ncond < 0 || x->ncond > SL_MAX_CONDS) return SL_EINVAL;
        if (x->ncond && x->kind != SL_W_UPDATE_IF) return SL_EINVAL;
        if (sl_store_check_key(x->row.v, x->kind == SL_W_DELETE_PARTITION ? t->npk : t->npk + t->nck))
            return SL_EINVAL;
        for (int i = 0; i < t->ncol; i++)
            if (sl_store_check_val(&x->row.v[i])) return SL_EINVAL;
        for (int i = 0; i < x->ncond; i++) {
            const sl_cond *c = &x->cond[i];
            if (c->col < t->npk + t->nck || c->col >= t->ncol || !c->v.set || sl_store_check_val(&c->v))
                return SL_EINVAL;
        }
        if (k > 0) {
            int same = t == w[0].t || strcmp(t->name, w[0].t->name) == 0;
            for (int i = 0; same && i < t->npk; i++)
                same = sl_store_val_eq(t->cols[i].type, &x->row.v[i], &w[0].row.v[i]);
            if (!same) *one_partition = 0;
        }
    }
    /* A conditional batch stays within one partition of one table. */
    if (*cas && n > 1 && !*one_partition) return SL_EINVAL;
    return 0;
}

void sb_addn(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = sl_realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void sb_add(sbuf *b, const char *s) {
    sb_addn(b, s, strlen(s));
}

/* --- The statement cache ----------------------------------------------------- */

struct sl_stmt_ent {
    sl_stmt_shape k;
    void *st; /* NULL: a free slot */
};

void sl_stmt_shape_init(sl_stmt_shape *k, const sl_table *t, int op) {
    memset(k, 0, sizeof *k);
    k->t = t;
    k->op = (uint8_t)op;
}

void sl_stmt_shape_slice(sl_stmt_shape *k, const sl_slice *q) {
    sl_stmt_shape_init(k, q->t, SL_STMT_SLICE);
    k->nfrom = (uint8_t)q->nfrom;
    k->nto = (uint8_t)q->nto;
    k->from_excl = q->nfrom && q->from_excl;
    k->to_excl = q->nto && q->to_excl;
    k->desc = q->t->nck && q->desc;
    k->limit = q->limit > 0;
}

static size_t shape_hash(const sl_stmt_shape *k) {
    const unsigned char *p = (const unsigned char *)k;
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < sizeof *k; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return (size_t)(h ^ (h >> 29));
}

void *sl_stmt_cache_get(const sl_stmt_cache *c, const sl_stmt_shape *k) {
    if (!c->cap) return NULL;
    for (size_t j = shape_hash(k) & (c->cap - 1); c->tab[j].st; j = (j + 1) & (c->cap - 1))
        if (memcmp(&c->tab[j].k, k, sizeof *k) == 0) return c->tab[j].st;
    return NULL;
}

int sl_stmt_cache_put(sl_stmt_cache *c, const sl_stmt_shape *k, void *st) {
    if ((c->n + 1) * 2 > c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        struct sl_stmt_ent *tab = sl_calloc(cap, sizeof *tab);
        if (!tab) return SL_ENOMEM;
        for (size_t i = 0; i < c->cap; i++) {
            if (!c->tab[i].st) continue;
            size_t j = shape_hash(&c->tab[i].k) & (cap - 1);
            while (tab[j].st) j = (j + 1) & (cap - 1);
            tab[j] = c->tab[i];
        }
        free(c->tab);
        c->tab = tab;
        c->cap = cap;
    }
    size_t j = shape_hash(k) & (c->cap - 1);
    while (c->tab[j].st) j = (j + 1) & (c->cap - 1);
    c->tab[j].k = *k;
    c->tab[j].st = st;
    c->n++;
    return 0;
}

void sl_stmt_cache_free(sl_stmt_cache *c, void (*fin)(void *st)) {
    for (size_t i = 0; i < c->cap; i++)
        if (c->tab[i].st && fin) fin(c->tab[i].st);
    free(c->tab);
    memset(c, 0, sizeof *c);
}
