/* store_bench.c: throughput of the Cassandra store (store_cql.c) as the
 * engine sees it: N threads doing single-row upserts (INSERT ... USING TTL),
 * then N threads doing compare-and-set updates (UPDATE ... IF, a lightweight
 * transaction, each thread on its own row, so without contention), then
 * point reads. Each thread has one request in flight, so N is the
 * concurrency. Not part of `make test`: it needs a node.
 *
 *   make store-bench && build/tests/store_bench PORT [threads] [seconds] [options]
 *
 *   --op LIST      which phases, in order: upsert,cas,get (default: all three)
 *   --warmup S     seconds run before each phase's measured window (default 0)
 *   --body N       bytes of the upserted blob (default 256; bench/run.sh uses 100)
 *   --keyspace K   keyspace of the bench table (default sluice_bench; created)
 *   --json         one JSON line on stdout (ops "insert", "lwt_update", "read",
 *                  each with n, per_s, p50_ms, p99_ms, errors), as bench/run.sh
 *                  records it in bench/results/latest.raw
 *
 * A CAS that fails (not applied, or an outcome the store cannot know, such as
 * a Paxos write timeout) counts as an error, and the thread reads its row at
 * SERIAL to learn the current value before it goes on, so that one timeout
 * does not end the thread's chain of updates. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../bench/hist.h" /* the latency histogram bench/loadgen uses */
#include "cql/client.h"
#include "store/store.h"

static const sl_table T = {
    "bench", 1, 0, 4, {{"k", SL_TEXT}, {"v", SL_INT}, {"body", SL_BLOB}, {"nonce", SL_INT}}, 0};

enum { UPSERT, CAS, GET, NOPS };

static const char *const op_names[NOPS] = {"single-row upserts (INSERT USING TTL)",
                                           "CAS updates (UPDATE IF, own row)", "point reads"};
static const char *const op_keys[NOPS] = {"insert", "lwt_update", "read"};
static const char *const op_args[NOPS] = {"upsert", "cas", "get"};

#define MAX_BODY 65536

typedef struct {
    sl_store *s;
    int id, op;
    size_t body_len;
    double warm_until, until;
    long done, errors;
    hist lat; /* latencies of the measured ops */
} worker;

static char body[MAX_BODY];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The row's v as a SERIAL read sees it, or -1 when the read failed. */
static int64_t cas_resync(worker *w, sl_result *r, const char *key) {
    sl_val k[1] = {sl_vtext(key)};
    if (sl_store_get(w->s, &T, k, SL_READ_SERIAL, r) || r->n != 1 || !r->rows[0].v[1].set) return -1;
    return r->rows[0].v[1].i;
}

static void *run(void *arg) {
    worker *w = arg;
    char key[32];
    sl_result r;
    sl_result_init(&r);
    int64_t cur = 0; /* CAS: the value the thread's row holds */
    for (long i = 0;; i++) {
        double t = now_s();
        if (t >= w->until) break;
        sl_write x;
        memset(&x, 0, sizeof x);
        x.t = &T;
        int rc;
        if (w->op == UPSERT) {
            snprintf(key, sizeof key, "u%d-%ld", w->id, i);
            x.kind = SL_W_UPSERT;
            x.row.v[0] = sl_vtext(key);
            x.row.v[1] = sl_vint(i);
            x.row.v[2] = sl_vbytes(body, w->body_len);
            x.ttl = 3600;
            rc = sl_store_apply(w->s, &x, 1, NULL);
        } else if (w->op == CAS) {
            snprintf(key, sizeof key, "c%d", w->id);
            x.kind = SL_W_UPDATE_IF;
            x.row.v[0] = sl_vtext(key);
            x.row.v[1] = sl_vint(cur + 1);
            x.cond[0] = (sl_cond){1, sl_vint(cur)};
            x.ncond = 1;
            rc = sl_store_apply(w->s, &x, 1, NULL);
            if (rc == 0) cur++;
        } else {
            snprintf(key, sizeof key, "u%d-%ld", w->id, i % 100);
            sl_val k[1] = {sl_vtext(key)};
            rc = sl_store_get(w->s, &T, k, SL_READ_DEFAULT, &r);
            if (rc == SL_ENOTFOUND) rc = 0;
        }
        double t1 = now_s();
        if (t1 < w->warm_until || t1 > w->until) {
            /* outside the measured window: not counted */
        } else if (rc) {
            w->errors++;
        } else {
            w->done++;
            hist_add(&w->lat, (uint64_t)((t1 - t) * 1e9));
        }
        if (rc && w->op == CAS) { /* learn the row's value again */
            int64_t v;
            while ((v = cas_resync(w, &r, key)) < 0 && now_s() < w->until) {
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
            if (v >= 0) cur = v;
        }
    }
    sl_result_free(&r);
    return NULL;
}

static int parse_ops(const char *s, int *ops, int *nops) {
    *nops = 0;
    while (*s) {
        size_t len = strcspn(s, ",");
        int found = -1;
        for (int o = 0; o < NOPS; o++)
            if (strlen(op_args[o]) == len && strncmp(s, op_args[o], len) == 0) found = o;
        if (found < 0 || *nops == NOPS) return -1;
        ops[(*nops)++] = found;
        s += len;
        if (*s == ',') s++;
    }
    return *nops ? 0 : -1;
}

static int usage(const char *argv0) {
    fprintf(stderr,
            "usage: %s PORT [threads] [seconds] [--op upsert,cas,get] [--warmup S] [--body N]"
            " [--keyspace K] [--json]\n",
            argv0);
    return 2;
}

int main(int argc, char **argv) {
    const char *pos[3] = {NULL, NULL, NULL};
    int npos = 0, json = 0, ops[NOPS] = {UPSERT, CAS, GET}, nops = NOPS;
    double warm = 0;
    long body_len = 256;
    const char *keyspace = "sluice_bench";
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        int has_val = a + 1 < argc;
        if (strcmp(arg, "--json") == 0) {
            json = 1;
        } else if (strcmp(arg, "--op") == 0 && has_val) {
            if (parse_ops(argv[++a], ops, &nops)) return usage(argv[0]);
        } else if (strcmp(arg, "--warmup") == 0 && has_val) {
            warm = atof(argv[++a]);
        } else if (strcmp(arg, "--body") == 0 && has_val) {
            body_len = atol(argv[++a]);
        } else if (strcmp(arg, "--keyspace") == 0 && has_val) {
            keyspace = argv[++a];
        } else if (arg[0] != '-' && npos < 3) {
            pos[npos++] = arg;
        } else {
            return usage(argv[0]);
        }
    }
    if (npos < 1) return usage(argv[0]);
    int threads = pos[1] ? atoi(pos[1]) : 16;
    double secs = pos[2] ? atof(pos[2]) : 5;
    if (threads < 1 || threads > 256 || secs <= 0 || warm < 0 || body_len < 0 || body_len > MAX_BODY)
        return usage(argv[0]);
    memset(body, 'x', sizeof body);
    sl_cql_config cfg = {.contact_points = "127.0.0.1", .port = atoi(pos[0]), .keyspace = keyspace};
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
    worker *w = calloc((size_t)threads, sizeof *w);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    if (!w || !th) return 1;
    if (json)
        printf(
            "{\"proto\":\"cql\",\"threads\":%d,\"seconds\":%.3f,\"warmup\":%.3f,\"body_bytes\":%ld,\"ops\":{",
            threads, secs, warm, body_len);
    for (int k = 0; k < nops; k++) {
        int op = ops[k];
        double t0 = now_s();
        for (int i = 0; i < threads; i++) {
            w[i] = (worker){.s = s, .id = i, .op = op, .body_len = (size_t)body_len, .warm_until = t0 + warm,
                            .until = t0 + warm + secs};
            pthread_create(&th[i], NULL, run, &w[i]);
        }
        long done = 0, errors = 0;
        static hist all;
        memset(&all, 0, sizeof all);
        for (int i = 0; i < threads; i++) {
            pthread_join(th[i], NULL);
            done += w[i].done;
            errors += w[i].errors;
            hist_merge(&all, &w[i].lat);
        }
        /* Only ops that ended inside the window [t0 + warm, t0 + warm + secs] count. */
        double dt = secs;
        double p50 = hist_quantile(&all, 0.50) / 1e6, p99 = hist_quantile(&all, 0.99) / 1e6;
        if (json) {
            printf("%s\"%s\":{\"n\":%ld,\"per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"errors\":%ld,"
                   "\"seconds\":%.3f}",
                   k ? "," : "", op_keys[op], done, done / dt, p50, p99, errors, dt);
        } else {
            printf("%d threads, %s: %ld in %.1f s = %.0f/s, p50 %.2f ms, p99 %.2f ms (%ld errors)\n", threads,
                   op_names[op], done, dt, done / dt, p50, p99, errors);
        }
        fflush(stdout);
    }
    if (json) printf("}}\n");
    free(w);
    free(th);
    sl_store_close(s);
    return 0;
}
