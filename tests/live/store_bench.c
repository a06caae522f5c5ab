/* store_bench.c: throughput of the Cassandra store (store_cql.c) as the
 * engine sees it: N threads doing single-row upserts, then N threads doing
 * compare-and-set updates (each on its own row, so without contention), then
 * point reads. Not part of `make test`: it needs a node.
 *
 *   make store-bench && build/tests/store_bench PORT [threads] [seconds] */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cql/client.h"
#include "store/store.h"

static const sl_table T = {
    "bench", 1, 0, 4, {{"k", SL_TEXT}, {"v", SL_INT}, {"body", SL_BLOB}, {"nonce", SL_INT}}};

enum { UPSERT, CAS, GET };

typedef struct {
    sl_store *s;
    int id, op;
    double until;
    long done, errors;
} worker;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *run(void *arg) {
    worker *w = arg;
    static const char body[256] = {1};
    char key[32];
    sl_result r;
    sl_result_init(&r);
    for (long i = 0; now_s() < w->until; i++) {
        sl_write x;
        memset(&x, 0, sizeof x);
        x.t = &T;
        int rc;
        if (w->op == UPSERT) {
            snprintf(key, sizeof key, "u%d-%ld", w->id, i);
            x.kind = SL_W_UPSERT;
            x.row.v[0] = sl_vtext(key);
            x.row.v[1] = sl_vint(i);
            x.row.v[2] = sl_vbytes(body, sizeof body);
            x.ttl = 3600;
            rc = sl_store_apply(w->s, &x, 1, NULL);
        } else if (w->op == CAS) {
            snprintf(key, sizeof key, "c%d", w->id);
            x.kind = SL_W_UPDATE_IF;
            x.row.v[0] = sl_vtext(key);
            x.row.v[1] = sl_vint(i + 1);
            x.cond[0] = (sl_cond){1, sl_vint(i)};
            x.ncond = 1;
            rc = sl_store_apply(w->s, &x, 1, NULL);
        } else {
            snprintf(key, sizeof key, "u%d-%ld", w->id, i % 100);
            sl_val k[1] = {sl_vtext(key)};
            rc = sl_store_get(w->s, &T, k, SL_READ_DEFAULT, &r);
            if (rc == SL_ENOTFOUND) rc = 0;
        }
        if (rc) {
            w->errors++;
            if (w->op == CAS) break; /* the chain is broken */
        } else {
            w->done++;
        }
    }
    sl_result_free(&r);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [threads] [seconds]\n", argv[0]);
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 16;
    double secs = argc > 3 ? atof(argv[3]) : 5;
    if (threads < 1 || threads > 256) return 2;
    sl_cql_config cfg = {.contact_points = "127.0.0.1", .port = atoi(argv[1]), .keyspace = "sluice_bench"};
    sl_store *s;
    int rc = sl_store_cql_open(&cfg, &s);
    if (rc) {
        fprintf(stderr, "open: %s\n", sl_strerror(rc));
        return 1;
    }
    const sl_table *tt[] = {&T};
    if ((rc = sl_store_cql_schema(s, tt, 1, 1, NULL))) {
        fprintf(stderr, "schema: %s\n", sl_strerror(rc));
        return 1;
    }
    for (int i = 0; i < threads; i++) { /* the CAS rows start at v = 0 */
        char key[32];
        snprintf(key, sizeof key, "c%d", i);
        sl_write x;
        memset(&x, 0, sizeof x);
        x.t = &T;
        x.kind = SL_W_UPSERT;
        x.row.v[0] = sl_vtext(key);
        x.row.v[1] = sl_vint(0);
        sl_store_apply(s, &x, 1, NULL);
    }
    static const char *names[] = {"single-row upserts (256-byte blob, TTL)",
                                  "CAS updates (UPDATE IF, own row)", "point reads"};
    worker *w = calloc((size_t)threads, sizeof *w);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    for (int op = UPSERT; op <= GET; op++) {
        double t0 = now_s();
        for (int i = 0; i < threads; i++) {
            w[i] = (worker){s, i, op, t0 + secs, 0, 0};
            pthread_create(&th[i], NULL, run, &w[i]);
        }
        long done = 0, errors = 0;
        for (int i = 0; i < threads; i++) {
            pthread_join(th[i], NULL);
            done += w[i].done;
            errors += w[i].errors;
        }
        double dt = now_s() - t0;
        printf("%d threads, %s: %ld in %.1f s = %.0f/s (%ld errors)\n", threads, names[op], done, dt,
               done / dt, errors);
    }
    free(w);
    free(th);
    sl_store_close(s);
    return 0;
}
