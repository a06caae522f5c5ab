/* test_powerloss.c: the embedded store after a power cut (issue 17).
 *
 * A killed process cannot show a missing or misordered fsync, because the
 * kernel's page cache survives it; a power cut does not. This test runs the
 * engine on the embedded store over an SQLite VFS shim that keeps, for each
 * file, the image that the last fsync made durable, and the writes made
 * since. At a chosen fsync (the cut point) it "cuts the power": it saves
 * what a disk could hold at that moment, in one of two modes:
 *
 *   synced  only what was fsynced before the cut;
 *   torn    that, plus an arbitrary subset of the writes made since (each
 *           dropped, kept, or kept up to a 512-byte sector boundary, as a
 *           disk may reorder and tear them), drawn from a seed.
 *
 * The workload (seeded: puts, batch puts, bursts of concurrent puts that
 * share a group commit, receives, acks) goes on after the cut, as the
 * clients would, but only answers given before it count. The saved image is
 * then checked: SQLite's integrity_check passes, the store and the engine
 * open on it, and draining the queue (after every lease ran out) returns
 * every message whose put was answered before the cut, except those whose
 * ack was attempted; none whose ack was answered before the cut; no message
 * twice; and every body as it was put. Then no pop receipt that a receive
 * answered before the cut acks anything, plain or sticky (SQS's, which
 * names a delivery count): a lease is answered before it is on disk
 * (sl_store_apply_cb_early), and one lost in the cut must not have given a
 * receipt that matches the drain's lease of the same message.
 *
 * A first run counts the fsyncs of the workload; then every one of them is
 * a cut point, in both modes. SLUICE_POWERLOSS_SEEDS=N runs N workload seeds
 * (default 1, for CI; more outside it). Each run's data lives under
 * /dev/shm when it exists (the fsyncs' real cost does not matter here). */
#include <pthread.h>
#include <semaphore.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <setjmp.h>
#include <cmocka.h>

#include "queue/queue.h"
#include "sluice.h"
#include "store/store.h"

/* Paths here are short temporary names; a truncated one would fail loudly. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

/* --- The power-loss VFS ---------------------------------------------------- */

/* A write (len > 0) or a truncation (len < 0, to off) made since the file's
 * last fsync. */
typedef struct pw_rec {
    struct pw_rec *next;
    int64_t off;
    int len;
    uint8_t data[];
} pw_rec;

/* One tracked file (the database, its WAL or a rollback journal). */
typedef struct pnode {
    struct pnode *next;
    char path[512];
    uint8_t *img; /* what the last fsync made durable */
    size_t len;
    int durable; /* fsynced at least once, and not deleted since */
    pw_rec *pending, **tail;
} pnode;

static struct {
    sqlite3_vfs vfs;
    sqlite3_vfs *real;
    pthread_mutex_t mu;
    pnode *nodes;
    int syncs;  /* fsyncs so far in this run */
    int db_syncs; /* of them, of the database file: checkpoints */
    int cut_at; /* the fsync at which the power goes; 0: never */
    int cut;    /* it went */
    int torn;   /* the mode: 0 synced, 1 torn */
    uint64_t rng;
    char image_dir[600];
} P = {.mu = PTHREAD_MUTEX_INITIALIZER};

typedef struct {
    sqlite3_file base;
    pnode *n; /* NULL: not tracked (-shm, temporary files) */
    sqlite3_file *real;
} pfile;

static uint64_t rnd(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void pending_clear(pnode *n) {
    while (n->pending) {
        pw_rec *w = n->pending;
        n->pending = w->next;
        free(w);
    }
    n->tail = &n->pending;
}

static pnode *node_get(const char *path) {
    for (pnode *n = P.nodes; n; n = n->next)
        if (strcmp(n->path, path) == 0) return n;
    pnode *n = calloc(1, sizeof *n);
    snprintf(n->path, sizeof n->path, "%s", path);
    n->tail = &n->pending;
    n->next = P.nodes;
    P.nodes = n;
    return n;
}

static void nodes_free(void) {
    while (P.nodes) {
        pnode *n = P.nodes;
        P.nodes = n->next;
        pending_clear(n);
        free(n->img);
        free(n);
    }
}

/* Applies one pending write (or part of it) to an image. */
static void image_apply(uint8_t **img, size_t *len, const pw_rec *w, int part) {
    if (w->len < 0) {
        if ((size_t)w->off < *len) *len = (size_t)w->off;
        return;
    }
    size_t end = (size_t)w->off + (size_t)part;
    if (end > *len) {
        *img = realloc(*img, end);
        memset(*img + *len, 0, end - *len);
        *len = end;
    }
    memcpy(*img + w->off, w->data, (size_t)part);
}

/* Saves what a disk could hold now into P.image_dir. Called with P.mu. */
static void take_image(void) {
    for (pnode *n = P.nodes; n; n = n->next) {
        size_t len = n->durable ? n->len : 0;
        uint8_t *img = malloc(len ? len : 1);
        if (len) memcpy(img, n->img, len);
        int exists = n->durable;
        if (P.torn && n->pending && (exists || rnd(&P.rng) % 2)) {
            exists = 1;
            for (pw_rec *w = n->pending; w; w = w->next) {
                unsigned pick = (unsigned)(rnd(&P.rng) % 3);
                if (pick == 0) continue; /* never reached the platter */
                int part = w->len;
                if (pick == 2 && w->len > 512) part = (int)(512 * (1 + rnd(&P.rng) % ((uint64_t)w->len / 512)));
                if (part > w->len) part = w->len;
                image_apply(&img, &len, w, part);
            }
        }
        if (exists) {
            const char *base = strrchr(n->path, '/');
            char out[1100];
            snprintf(out, sizeof out, "%s/%s", P.image_dir, base ? base + 1 : n->path);
            FILE *f = fopen(out, "wb");
            if (f) {
                if (len) fwrite(img, 1, len, f);
                fclose(f);
            }
        }
        free(img);
    }
}

static int p_close(sqlite3_file *f) {
    pfile *p = (pfile *)f;
    return p->real->pMethods->xClose(p->real);
}

static int p_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off) {
    pfile *p = (pfile *)f;
    return p->real->pMethods->xRead(p->real, buf, n, off);
}

static void record(pnode *n, int64_t off, int len, const void *data) {
    pthread_mutex_lock(&P.mu);
    if (!P.cut) {
        pw_rec *w = malloc(sizeof *w + (len > 0 ? (size_t)len : 0));
        w->next = NULL;
        w->off = off;
        w->len = len;
        if (len > 0) memcpy(w->data, data, (size_t)len);
        *n->tail = w;
        n->tail = &w->next;
    }
    pthread_mutex_unlock(&P.mu);
}

static int p_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off) {
    pfile *p = (pfile *)f;
    int rc = p->real->pMethods->xWrite(p->real, buf, n, off);
    if (rc == SQLITE_OK && p->n) record(p->n, off, n, buf);
    return rc;
}

static int p_truncate(sqlite3_file *f, sqlite3_int64 size) {
    pfile *p = (pfile *)f;
    int rc = p->real->pMethods->xTruncate(p->real, size);
    if (rc == SQLITE_OK && p->n) record(p->n, size, -1, NULL);
    return rc;
}

/* An fsync: the cut point, or the file's durable image catches up. */
static int p_sync(sqlite3_file *f, int flags) {
    pfile *p = (pfile *)f;
    pthread_mutex_lock(&P.mu);
    if (p->n && strstr(p->n->path, ".db") && !strstr(p->n->path, "-wal")) P.db_syncs++;
    if (++P.syncs == P.cut_at) {
        take_image();
        P.cut = 1;
    }
    int cut = P.cut;
    pthread_mutex_unlock(&P.mu);
    int rc = p->real->pMethods->xSync(p->real, flags);
    if (rc != SQLITE_OK || !p->n || cut) return rc;
    sqlite3_int64 size = 0;
    if (p->real->pMethods->xFileSize(p->real, &size) != SQLITE_OK) return rc;
    uint8_t *img = malloc(size ? (size_t)size : 1);
    if (size && p->real->pMethods->xRead(p->real, img, (int)size, 0) != SQLITE_OK) {
        free(img);
        return rc;
    }
    pthread_mutex_lock(&P.mu);
    if (!P.cut) {
        free(p->n->img);
        p->n->img = img;
        p->n->len = (size_t)size;
        p->n->durable = 1;
        pending_clear(p->n);
        img = NULL;
    }
    pthread_mutex_unlock(&P.mu);
    free(img);
    return rc;
}

static int p_size(sqlite3_file *f, sqlite3_int64 *size) {
    pfile *p = (pfile *)f;
    return p->real->pMethods->xFileSize(p->real, size);
}
static int p_lock(sqlite3_file *f, int l) {
    pfile *p = (pfile *)f;
    return p->real->pMethods->xLock(p->real, l);
}
static int p_unlock(sqlite3_file *f, int l) {
    pfile *p = (pfile *)f;
    return p->real->pMethods->xUnlock(p->real, l);
}
static int p_reserved(sqlite3_file *f, int *out) {
    pfile *p = (pfile *)f;
    return p->real->pMethods->xCheckReservedLock(p->real, out);
}
static int p_fcntl(sqlite3_file *f, int op, void *arg) {
    pfile *p = (pfile *)f;
    return p->real->pMethods->xFileControl(p->real, op, arg);
}
static int p_sector(sqlite3_file *f) {
    pfile *p = (pfile *)f;
    return p->real->pMethods->xSectorSize(p->real);
}
static int p_devchar(sqlite3_file *f) {
    pfile *p = (pfile *)f;
    return p->real->pMethods->xDeviceCharacteristics(p->real);
}
static int p_shm_map(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp) {
    pfile *p = (pfile *)f;
    return p->real->pMethods->xShmMap(p->real, pg, pgsz, extend, pp);
}
static int p_shm_lock(sqlite3_file *f, int off, int n, int flags) {
    pfile *p = (pfile *)f;
    return p->real->pMethods->xShmLock(p->real, off, n, flags);
}
static void p_shm_barrier(sqlite3_file *f) {
    pfile *p = (pfile *)f;
    p->real->pMethods->xShmBarrier(p->real);
}
static int p_shm_unmap(sqlite3_file *f, int del) {
    pfile *p = (pfile *)f;
    return p->real->pMethods->xShmUnmap(p->real, del);
}
/* No memory-mapped reads: every page goes through p_read. */
static int p_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp) {
    (void)f, (void)off, (void)n;
    *pp = NULL;
    return SQLITE_OK;
}
static int p_unfetch(sqlite3_file *f, sqlite3_int64 off, void *pg) {
    (void)f, (void)off, (void)pg;
    return SQLITE_OK;
}

static const sqlite3_io_methods p_io = {3,        p_close,   p_read,        p_write,     p_truncate, p_sync,
                                        p_size,   p_lock,    p_unlock,      p_reserved,  p_fcntl,    p_sector,
                                        p_devchar, p_shm_map, p_shm_lock, p_shm_barrier, p_shm_unmap, p_fetch,
                                        p_unfetch};

static int p_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags) {
    (void)vfs;
    pfile *p = (pfile *)f;
    p->real = (sqlite3_file *)(p + 1);
    p->n = NULL;
    int rc = P.real->xOpen(P.real, name, p->real, flags, out_flags);
    if (rc != SQLITE_OK) {
        p->base.pMethods = NULL;
        return rc;
    }
    p->base.pMethods = &p_io;
    if (name && (flags & (SQLITE_OPEN_MAIN_DB | SQLITE_OPEN_WAL | SQLITE_OPEN_MAIN_JOURNAL))) {
        pthread_mutex_lock(&P.mu);
        p->n = node_get(name);
        pthread_mutex_unlock(&P.mu);
    }
    return SQLITE_OK;
}

/* A deleted file is gone at once, durably (SQLite deletes with a directory
 * sync where that matters). */
static int p_delete(sqlite3_vfs *vfs, const char *name, int dirsync) {
    (void)vfs;
    pthread_mutex_lock(&P.mu);
    if (!P.cut)
        for (pnode *n = P.nodes; n; n = n->next)
            if (strcmp(n->path, name) == 0) {
                n->durable = 0;
                n->len = 0;
                pending_clear(n);
            }
    pthread_mutex_unlock(&P.mu);
    return P.real->xDelete(P.real, name, dirsync);
}

/* Every connection checkpoints after 16 pages of WAL instead of 1000, so
 * that a short workload crosses checkpoints (and WAL restarts) too. */
static int small_checkpoints(sqlite3 *db, const char **err, const struct sqlite3_api_routines *api) {
    (void)err, (void)api;
    sqlite3_wal_autocheckpoint(db, 16);
    return SQLITE_OK;
}

static void vfs_install(void) {
    static int done;
    if (done) return;
    done = 1;
    P.real = sqlite3_vfs_find(NULL);
    P.vfs = *P.real;
    P.vfs.zName = "powerloss";
    P.vfs.szOsFile = (int)sizeof(pfile) + P.real->szOsFile;
    P.vfs.xOpen = p_open;
    P.vfs.xDelete = p_delete;
    sqlite3_auto_extension((void (*)(void))small_checkpoints);
}

/* The shim is the default VFS while a workload runs, the real one while the
 * image is checked. */
static void vfs_use(int shim) {
    sqlite3_vfs_register(shim ? &P.vfs : P.real, 1);
}

/* --- The workload and what its clients were told ------------------------- */

#define MAXMSG 4096

typedef struct {
    char id[SL_MSGID_LEN + 1];
    char body[1600];
    int put_told;      /* the put was answered before the cut */
    int ack_tried;     /* an ack was sent (answered at any time, or not) */
    int ack_told;      /* an ack was answered 0 before the cut */
} told;

typedef struct {
    char dir[600];
    sl_store *st;
    sl_acct *a;
    sl_engine *e;
    told *m;
    size_t n;
    char (*rc)[SL_RECEIPT_MAX]; /* receipts in hand */
    size_t *rc_msg;             /* the message of each */
    size_t nrc;
    char (*told)[SL_RECEIPT_MAX]; /* every receipt a receive answered before the cut */
    size_t *told_msg, ntold;
    uint64_t rng;
} run;

static int cut_now(void) {
    pthread_mutex_lock(&P.mu);
    int c = P.cut;
    pthread_mutex_unlock(&P.mu);
    return c;
}

static size_t find(run *r, const char *id) {
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->m[i].id, id) == 0) return i;
    return (size_t)-1;
}

static int open_engine(run *r, const char *dir) {
    if (sl_store_sqlite_open(dir, &r->st) != 0) return -1;
    sl_engine_config cfg = {0};
    snprintf(cfg.node_id, sizeof cfg.node_id, "powerloss");
    cfg.lease_grace_ms = 2000;
    if (sl_acct_open(r->st, &r->a) != 0 || (cfg.accounts = r->a, sl_engine_open(r->st, &cfg, &r->e)) != 0) {
        sl_acct_close(r->a);
        sl_store_close(r->st);
        r->a = NULL;
        r->st = NULL;
        return -1;
    }
    return 0;
}

static void close_engine(run *r) {
    if (r->e) sl_engine_close(r->e);
    sl_acct_close(r->a);
    if (r->st) sl_store_close(r->st);
    r->e = NULL;
    r->a = NULL;
    r->st = NULL;
}

/* A body of up to 64 bytes, or one in four of 700 to 1,500: the store keeps
 * those out of the message's row (store_sqlite.c, "Large values"). */
static void body_for(run *r, size_t i) {
    char *b = r->m[i].body;
    int pad = (int)(rnd(&r->rng) % 60);
    int n = snprintf(b, sizeof r->m[i].body, "m%zu-%.*s", i, pad,
                     "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyzabcdefghijklmnop");
    if (rnd(&r->rng) % 4) return;
    int len = 700 + (int)(rnd(&r->rng) % 801);
    for (; n < len; n++)
        b[n] = (char)('A' + (i + (size_t)n) % 26);
    b[n] = '\0';
}

/* Puts k messages in one request (a batch when k > 1). */
static void do_put(run *r, size_t k) {
    if (r->n + k > MAXMSG) return;
    sl_put p[8] = {0};
    char ids[8][SL_MSGID_LEN + 1];
    for (size_t j = 0; j < k; j++) {
        body_for(r, r->n + j);
        p[j] = (sl_put){.body = r->m[r->n + j].body, .len = strlen(r->m[r->n + j].body)};
    }
    int rc = sl_msg_put(r->e, "acct", "q", p, k, ids);
    int before = rc == 0 && !cut_now();
    for (size_t j = 0; j < k; j++) {
        told *t = &r->m[r->n + j];
        if (rc == 0) snprintf(t->id, sizeof t->id, "%s", ids[j]);
        t->put_told = before;
    }
    if (rc == 0) r->n += k;
}

static void wake_sem(void *arg) {
    sem_post(arg);
}

/* Four puts started together: they share the writer's group commits. */
static void do_burst(run *r) {
    enum { B = 4 };
    if (r->n + B > MAXMSG) return;
    sl_op *op[B];
    sem_t sem[B];
    sl_put p[B];
    int started[B];
    for (int j = 0; j < B; j++) {
        body_for(r, r->n + (size_t)j);
        p[j] = (sl_put){.body = r->m[r->n + (size_t)j].body, .len = strlen(r->m[r->n + (size_t)j].body)};
        sem_init(&sem[j], 0, 0);
        started[j] = sl_msg_put_start(r->e, "acct", "q", &p[j], 1, wake_sem, &sem[j], &op[j]) == 0;
    }
    size_t base = r->n;
    for (int j = 0; j < B; j++) {
        if (!started[j]) continue;
        sem_wait(&sem[j]);
        char id[1][SL_MSGID_LEN + 1];
        int rc = sl_msg_put_finish(op[j], id);
        if (rc == 0) {
            told *t = &r->m[base + (size_t)j];
            snprintf(t->id, sizeof t->id, "%s", id[0]);
            t->put_told = !cut_now();
        }
    }
    /* Keep only the messages that got ids, in order. */
    size_t w = base;
    for (size_t j = base; j < base + B; j++)
        if (r->m[j].id[0]) r->m[w++] = r->m[j];
    for (size_t j = w; j < base + B; j++)
        memset(&r->m[j], 0, sizeof r->m[j]);
    r->n = w;
    for (int j = 0; j < B; j++)
        sem_destroy(&sem[j]);
}

/* A receive's answer is told when the engine calls done (the server would
 * send it then), which for a lease can be before its commit's fsync. */
static void told_now(void *arg) {
    *(int *)arg = !cut_now();
}

/* Half the receives hold their messages by sticky receipts, as SQS does
 * (a delivery count, not a version). */
static void do_receive(run *r) {
    sl_message *ms = NULL;
    size_t n = 0;
    sl_op *op;
    int before = 0, sticky = (int)(rnd(&r->rng) % 2);
    if (sl_msg_receive_start(r->e, "acct", "q", 1 + (int)(rnd(&r->rng) % 4), 30, told_now, &before, &op) !=
            0 ||
        sl_msg_receive_finish(op, &ms, &n) != 0)
        return;
    for (size_t i = 0; i < n && r->nrc < MAXMSG; i++) {
        size_t k = find(r, ms[i].id);
        if (k == (size_t)-1) continue;
        if (sticky && sl_msg_receipt_sticky(r->e, "acct", "q", &ms[i], ms[i].receipt) != 0) continue;
        snprintf(r->rc[r->nrc], SL_RECEIPT_MAX, "%s", ms[i].receipt);
        r->rc_msg[r->nrc++] = k;
        if (before && r->ntold < MAXMSG) {
            snprintf(r->told[r->ntold], SL_RECEIPT_MAX, "%s", ms[i].receipt);
            r->told_msg[r->ntold++] = k;
        }
    }
    sl_messages_free(ms, n);
}

static void do_ack(run *r) {
    size_t k = r->nrc < 3 ? r->nrc : 3;
    if (!k) return;
    const char *rcpts[3];
    int rcs[3];
    for (size_t i = 0; i < k; i++) {
        rcpts[i] = r->rc[r->nrc - 1 - i];
        r->m[r->rc_msg[r->nrc - 1 - i]].ack_tried = 1;
    }
    int rc = sl_msg_ack_many(r->e, "acct", "q", rcpts, k, rcs);
    int before = !cut_now();
    for (size_t i = 0; i < k; i++)
        if (rc == 0 && rcs[i] == 0 && before) r->m[r->rc_msg[r->nrc - 1 - i]].ack_told = 1;
    r->nrc -= k;
}

enum { STEPS = 48 };

/* Runs the seeded workload in r->dir. Returns 0, or -1 when the engine
 * could not even be set up (which a cut during set-up may cause for later
 * requests, never for these: the power goes only in the image). */
static int workload(run *r, uint64_t seed) {
    r->rng = seed * 2654435761u + 1;
    if (open_engine(r, r->dir) != 0) return -1;
    struct sl_auth_key keys[2];
    int rc = sl_acct_create(r->a, "acct", keys);
    sl_queue_opts o;
    sl_queue_opts_default(&o);
    snprintf(o.name, sizeof o.name, "q");
    o.bucket_size = 8; /* buckets fill, seal and move on within the workload */
    char err[128];
    if (rc == 0) rc = sl_queue_create(r->e, "acct", &o, err, sizeof err);
    if (rc != 0) {
        close_engine(r);
        return -1;
    }
    for (int s = 0; s < STEPS; s++) {
        unsigned pick = (unsigned)(rnd(&r->rng) % 20);
        if (pick < 7)
            do_put(r, 1);
        else if (pick < 10)
            do_put(r, 2 + rnd(&r->rng) % 5);
        else if (pick < 13)
            do_burst(r);
        else if (pick < 17)
            do_receive(r);
        else
            do_ack(r);
    }
    close_engine(r);
    return 0;
}

/* --- Checking the image ---------------------------------------------------- */

static int bad(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int bad(char *why, size_t cap, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, cap, fmt, ap);
    va_end(ap);
    return -1;
}

/* Returns 0, or -1 with why filled. */
static int check_image(run *r, char *why, size_t cap) {
    char path[700];
    snprintf(path, sizeof path, "%s/sluice.db", P.image_dir);
    struct stat sb;
    if (stat(path, &sb) != 0) {
        /* No database survived: nothing may have been promised. */
        for (size_t i = 0; i < r->n; i++)
            if (r->m[i].put_told) return bad(why, cap, "no database on disk, but put %zu was answered", i);
        return 0;
    }
    sqlite3 *db;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return bad(why, cap, "the image does not open");
    }
    sqlite3_stmt *st;
    int ok = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
             sqlite3_step(st) == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
    char msg[200] = "";
    if (!ok) snprintf(msg, sizeof msg, "%s", st ? (const char *)sqlite3_column_text(st, 0) : sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (!ok) return bad(why, cap, "integrity_check: %s", msg);

    run v = {0};
    if (open_engine(&v, P.image_dir) != 0) return bad(why, cap, "the store or the engine does not open the image");
    /* Every lease runs out; the repair worker's passes republish what they
     * must; then the queue is drained. */
    sl_clock_advance_ms(3600 * 1000);
    int rc = 0;
    unsigned char *seen = calloc(r->n ? r->n : 1, 1);
    for (int empty = 0, round = 0; empty < 3 && round < 1000 && rc == 0; round++) {
        sl_message *ms = NULL;
        size_t n = 0;
        int e = sl_msg_receive(v.e, "acct", "q", 32, SL_INVIS_MAX, &ms, &n);
        if (e == SL_ENOTFOUND) {
            for (size_t i = 0; i < r->n && rc == 0; i++)
                if (r->m[i].put_told) rc = bad(why, cap, "the queue is gone, but put %zu was answered", i);
            break;
        }
        if (e != 0) {
            rc = bad(why, cap, "receive on the image: %s", sl_strerror(e));
            break;
        }
        for (size_t j = 0; j < n && rc == 0; j++) {
            size_t k = find(r, ms[j].id);
            if (k == (size_t)-1) continue; /* a put answered after the cut, or never */
            if (seen[k]) rc = bad(why, cap, "message %zu delivered twice", k);
            seen[k] = 1;
            if (ms[j].len != strlen(r->m[k].body) || memcmp(ms[j].body, r->m[k].body, ms[j].len) != 0)
                rc = bad(why, cap, "message %zu came back with another body", k);
            if (r->m[k].ack_told) rc = bad(why, cap, "message %zu came back after its ack was answered", k);
        }
        sl_messages_free(ms, n);
        if (n == 0) {
            empty++;
            sl_clock_advance_ms(3600 * 1000);
            sl_engine_tick(v.e);
        } else {
            empty = 0;
        }
    }
    for (size_t i = 0; i < r->n && rc == 0; i++)
        if (r->m[i].put_told && !r->m[i].ack_tried && !seen[i])
            rc = bad(why, cap, "message %zu was answered 201 before the cut and is lost", i);
    /* Guarantee 4: every message was leased again by the drain, or acked,
     * so no receipt given before the cut may ack anything now. A lease
     * answered before it was on disk and lost in the cut gave a version
     * that a lease after the restart must not give again. */
    for (size_t i = 0; i < r->ntold && rc == 0; i++) {
        const char *rcpt = r->told[i];
        int arc = 0;
        int e = sl_msg_ack_many(v.e, "acct", "q", &rcpt, 1, &arc);
        if (e == 0 && arc == 0)
            rc = bad(why, cap,
                     "a receipt of message %zu given before the cut acked it after the drain leased it",
                     r->told_msg[i]);
        else if (e == 0 && arc != SL_ECONFLICT)
            rc = bad(why, cap, "an ack with a receipt given before the cut: %s, not a conflict",
                     sl_strerror(arc));
    }
    free(seen);
    close_engine(&v);
    return rc;
}

/* --- The runs -------------------------------------------------------------- */

static const char *base_dir(void) {
    struct stat sb;
    return stat("/dev/shm", &sb) == 0 && S_ISDIR(sb.st_mode) ? "/dev/shm" : "/tmp";
}

static void rm_rf(const char *dir) {
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) print_error("cannot remove %s\n", dir);
}

/* One workload with the power cut at fsync cut_at (0: never). Returns the
 * fsyncs it made, or -1 after a failed check (printed). */
static int one_run(uint64_t seed, int cut_at, int torn) {
    run r = {0};
    r.m = calloc(MAXMSG, sizeof *r.m);
    r.rc = calloc(MAXMSG, sizeof *r.rc);
    r.rc_msg = calloc(MAXMSG, sizeof *r.rc_msg);
    r.told = calloc(MAXMSG, sizeof *r.told);
    r.told_msg = calloc(MAXMSG, sizeof *r.told_msg);
    snprintf(r.dir, sizeof r.dir, "%s/sluice-powerloss-XXXXXX", base_dir());
    assert_non_null(mkdtemp(r.dir));
    snprintf(P.image_dir, sizeof P.image_dir, "%s/image", r.dir);
    char live[620];
    snprintf(live, sizeof live, "%s/live", r.dir);
    assert_int_equal(mkdir(live, 0700), 0);
    assert_int_equal(mkdir(P.image_dir, 0700), 0);
    char dir[600];
    snprintf(dir, sizeof dir, "%s", r.dir);
    snprintf(r.dir, sizeof r.dir, "%s", live);

    pthread_mutex_lock(&P.mu);
    nodes_free();
    P.syncs = P.db_syncs = 0;
    P.cut_at = cut_at;
    P.cut = 0;
    P.torn = torn;
    P.rng = seed * 7919 + (uint64_t)cut_at * 104729 + 1;
    pthread_mutex_unlock(&P.mu);
    sl_clock_set_ms(1800000000000LL);
    vfs_use(1);
    int wrc = workload(&r, seed);
    vfs_use(0);
    int syncs = P.syncs, cut = P.cut;
    int result = syncs;
    if (wrc != 0) {
        print_error("seed %llu: the workload could not be set up\n", (unsigned long long)seed);
        result = -1;
    } else if (cut) {
        char why[300];
        if (check_image(&r, why, sizeof why) != 0) {
            size_t told_puts = 0, told_acks = 0;
            for (size_t i = 0; i < r.n; i++)
                told_puts += r.m[i].put_told, told_acks += r.m[i].ack_told;
            print_error("seed %llu, power cut at fsync %d of %d (%s): %s (%zu puts and %zu acks answered "
                        "before the cut; image kept in %s)\n",
                        (unsigned long long)seed, cut_at, syncs, torn ? "torn" : "synced", why, told_puts,
                        told_acks, P.image_dir);
            result = -1;
        }
    }
    if (result >= 0) rm_rf(dir);
    free(r.m);
    free(r.rc);
    free(r.rc_msg);
    free(r.told);
    free(r.told_msg);
    return result;
}

static void t_power_cut_at_every_fsync(void **state) {
    (void)state;
    vfs_install();
    const char *e = getenv("SLUICE_POWERLOSS_SEEDS");
    int seeds = e && atoi(e) > 0 ? atoi(e) : 1;
    int failed = 0, cuts = 0;
    for (int s = 1; s <= seeds; s++) {
        int total = one_run((uint64_t)s, 0, 0);
        assert_true(total > 0);
        /* The workload crosses checkpoints, whose fsyncs are cut points too. */
        int checkpoints = P.db_syncs;
        assert_true(checkpoints > 1);
        for (int torn = 0; torn <= 1; torn++)
            for (int at = 1; at <= total; at++) {
                /* Group commits make the count vary a little between runs: a
                 * cut point past this run's last fsync is not reached. */
                int rc = one_run((uint64_t)s, at, torn);
                if (rc < 0) failed++;
                else if (rc >= at) cuts++;
            }
        print_message("seed %d: %d fsyncs in the workload, %d of them of the database file\n", s, total,
                      checkpoints);
    }
    print_message("%d power cuts checked, %d failed\n", cuts, failed);
    assert_int_equal(failed, 0);
    assert_true(cuts > 0);
}

int main(void) {
    sl_clock_manual(1);
    sl_log_level = getenv("SLUICE_TEST_LOG") ? SL_DEBUG : SL_ERR;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_power_cut_at_every_fsync),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
