/* movetask.c: message move tasks, the asynchronous form of redrive (SQS's
 * StartMessageMoveTask, ListMessageMoveTasks, CancelMessageMoveTask).
 *
 * A task moves the messages of a dead-letter queue back to a queue, at a
 * rate of at most rate messages a second, in a thread of the node that
 * started it. Its record lives in the source queue's row, beside the
 * options ("moveTasks", newest first, the last SL_MOVE_TASKS_KEPT), so that
 * every node lists it and the row's compare-and-set orders a start against
 * a start and a cancel against the task's own progress:
 *
 *   {"id", "status": RUNNING | CANCELLING | COMPLETED | CANCELLED | FAILED,
 *    "destination", "rate", "moved", "toMove", "startedMs", "beatMs",
 *    "failureReason"}
 *
 * The mover writes its count about once a second (beatMs). A cancel marks
 * the task CANCELLING; the mover sees it at its next write and stops. A
 * task whose node stopped without saying so (a crash) stops beating: one
 * RUNNING or CANCELLING for longer than MOVE_STALE_MS shows as FAILED, and
 * a new task may start on that queue. A node that shuts down marks its
 * tasks FAILED itself. Messages moved are moved once (the engine's move is
 * a compare-and-set); a task that failed may be started again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "queue_int.h"

#define MOVE_BEAT_MS 1000
#define MOVE_STALE_MS 30000

static const char *str_of(json_t *o, const char *key) {
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static const char *task_status(json_t *t, int64_t now) {
    const char *s = json_string_value(json_object_get(t, "status"));
    if (!s) return "FAILED";
    int live = strcmp(s, "RUNNING") == 0 || strcmp(s, "CANCELLING") == 0;
    if (live && now - json_integer_value(json_object_get(t, "beatMs")) > MOVE_STALE_MS) return "FAILED";
    return s;
}

static int task_live(json_t *t, int64_t now) {
    const char *s = task_status(t, now);
    return strcmp(s, "RUNNING") == 0 || strcmp(s, "CANCELLING") == 0;
}

/* The task of id in the row's options, or NULL. */
static json_t *task_of(json_t *opts, const char *id) {
    json_t *tasks = json_object_get(opts, "moveTasks"), *t;
    size_t i;
    json_array_foreach(tasks, i, t) {
        const char *tid = json_string_value(json_object_get(t, "id"));
        if (tid && strcmp(tid, id) == 0) return t;
    }
    return NULL;
}

/* --- Starting ------------------------------------------------------------- */

struct start_edit {
    json_t *task;
};

/* Adds the task, unless one is live on this queue. */
static int edit_start(json_t *opts, void *arg, char *err, size_t cap) {
    struct start_edit *s = arg;
    json_t *tasks = json_object_get(opts, "moveTasks"), *t;
    int64_t now = sl_now_ms();
    size_t i;
    if (!json_is_array(tasks)) {
        if (json_object_set_new(opts, "moveTasks", json_array()) != 0) return SL_ENOMEM;
        tasks = json_object_get(opts, "moveTasks");
    }
    json_array_foreach(tasks, i, t) {
        if (task_live(t, now)) {
            snprintf(err, cap, "a message move task is already running on this queue");
            return SL_EEXISTS;
        }
    }
    /* Stale ones are recorded as what they show. */
    json_array_foreach(tasks, i, t) {
        if (strcmp(task_status(t, now), str_of(t, "status")) != 0) {
            json_object_set_new(t, "status", json_string("FAILED"));
            json_object_set_new(t, "failureReason", json_string("the node that ran the task stopped"));
        }
    }
    if (json_array_insert(tasks, 0, s->task) != 0) return SL_ENOMEM;
    while (json_array_size(tasks) > SL_MOVE_TASKS_KEPT)
        json_array_remove(tasks, json_array_size(tasks) - 1);
    return 0;
}

struct mover {
    sl_engine *e;
    char account[SL_NAME_MAX + 1], src[SL_NAME_MAX + 1], dst[SL_NAME_MAX + 1];
    char id[32];
    int rate;
    int64_t t0, last_beat;
    int cancelled;
};

/* The mover's write: its count, and the final status when given. Learns
 * whether a cancel came. */
struct beat_edit {
    struct mover *m;
    int64_t moved;
    const char *final, *reason;
};

static int edit_beat(json_t *opts, void *arg, char *err, size_t cap) {
    (void)err, (void)cap;
    struct beat_edit *b = arg;
    json_t *t = task_of(opts, b->m->id);
    if (!t) return SL_ENOTFOUND; /* pushed out of the record: nothing to say */
    const char *st = json_string_value(json_object_get(t, "status"));
    if (st && strcmp(st, "CANCELLING") == 0) b->m->cancelled = 1;
    json_object_set_new(t, "moved", json_integer(b->moved));
    json_object_set_new(t, "beatMs", json_integer(sl_now_ms()));
    if (b->final) {
        json_object_set_new(t, "status", json_string(b->m->cancelled ? "CANCELLED" : b->final));
        if (b->reason && !b->m->cancelled) json_object_set_new(t, "failureReason", json_string(b->reason));
    }
    return 0;
}

static void beat(struct mover *m, int64_t moved, const char *final, const char *reason) {
    struct beat_edit b = {m, moved, final, reason};
    char err[64];
    int rc = eng_opts_edit(m->e, m->account, m->src, edit_beat, &b, err, sizeof err);
    if (rc && rc != SL_ENOTFOUND)
        sl_log(SL_ERR, "move task %s of %s/%s: could not record its progress: %s", m->id, m->account, m->src,
               sl_strerror(rc));
    m->last_beat = sl_now_ms();
}

static int stopping(sl_engine *e) {
    return __atomic_load_n(&e->stopping, __ATOMIC_ACQUIRE);
}

/* After each message: keeps to the rate, records progress, stops on a
 * cancel or a shutdown. */
static int mover_step(void *arg, int64_t moved) {
    struct mover *m = arg;
    for (;;) {
        if (stopping(m->e)) return 1;
        int64_t due = m->t0 + moved * 1000 / m->rate, now = sl_now_ms();
        if (now - m->last_beat >= MOVE_BEAT_MS) {
            beat(m, moved, NULL, NULL);
            if (m->cancelled) return 1;
        }
        if (now >= due) return 0;
        int64_t nap = due - now < 100 ? due - now : 100;
        usleep((useconds_t)nap * 1000);
    }
}

static void *mover_main(void *arg) {
    sl_thread_name("sl-mover");
    struct mover *m = arg;
    sl_engine *e = m->e;
    int64_t moved = 0;
    qstate *src, *dst;
    int rc = eng_queue(e, m->account, m->src, &src);
    if (rc == 0) rc = eng_queue(e, m->account, m->dst, &dst);
    if (rc == 0) rc = eng_redrive(e, src, dst, mover_step, m, &moved);
    if (rc == 1 && !m->cancelled)
        beat(m, moved, "FAILED", "the server stopped");
    else if (rc == 1 || rc == 0)
        beat(m, moved, "COMPLETED", NULL);
    else
        beat(m, moved, "FAILED",
             rc == SL_ENOTFOUND ? "the source or destination queue was deleted" : sl_errmsg(rc));
    sl_log(SL_INFO, "move task %s of %s/%s to %s: %lld moved, %s", m->id, m->account, m->src, m->dst,
           (long long)moved,
           m->cancelled ? "cancelled"
           : rc == 0    ? "done"
                        : sl_strerror(rc));
    pthread_mutex_lock(&e->mu);
    e->movers--;
    pthread_cond_broadcast(&e->wake);
    pthread_mutex_unlock(&e->mu);
    free(m);
    return NULL;
}

/* How many queues dead-letter into dlq, and the first of them. */
static int dlq_sources(sl_engine *e, const char *account, const char *dlq, char first[SL_NAME_MAX + 1],
                       size_t *count) {
    sl_queue_info *qs;
    size_t n;
    *count = 0;
    int rc = sl_queue_list(e, account, &qs, &n);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++)
        if (strcmp(qs[i].opts.dlq, dlq) == 0 && (*count)++ == 0)
            snprintf(first, SL_NAME_MAX + 1, "%s", qs[i].opts.name);
    free(qs);
    return 0;
}

int sl_move_task_start(sl_engine *e, const char *account, const char *src, const char *dst, int rate,
                       char handle[SL_MOVE_HANDLE_MAX], char *err, size_t cap) {
    int rc = sl_acct_exists(e->cfg.accounts, account);
    if (rc) return rc;
    if (rate < 1 || rate > SL_MOVE_RATE_MAX) {
        snprintf(err, cap, "the rate must be between 1 and %d messages a second", SL_MOVE_RATE_MAX);
        return SL_EINVAL;
    }
    qstate *sq, *dq;
    if ((rc = eng_queue(e, account, src, &sq)) != 0) return rc;
    char first[SL_NAME_MAX + 1] = "";
    size_t sources;
    if ((rc = dlq_sources(e, account, src, first, &sources)) != 0) return rc;
    if (sources == 0) {
        snprintf(err, cap, "the source queue is not the dead-letter queue of any queue");
        return SL_EINVAL;
    }
    if (!dst || !dst[0]) {
        if (sources > 1) {
            snprintf(err, cap,
                     "the source queue is the dead-letter queue of %zu queues: name the destination",
                     sources);
            return SL_EINVAL;
        }
        dst = first;
    }
    if (strcmp(dst, src) == 0) {
        snprintf(err, cap, "the destination must be another queue than the source");
        return SL_EINVAL;
    }
    if ((rc = eng_queue(e, account, dst, &dq)) == SL_ENOTFOUND) {
        snprintf(err, cap, "the destination queue '%s' does not exist", dst);
        return SL_EINVAL;
    }
    if (rc) return rc;
    sl_queue_statistics stats;
    int64_t to_move = sl_queue_stats(e, account, src, &stats) == 0 ? stats.visible : 0;

    struct mover *m = calloc(1, sizeof *m);
    if (!m) return SL_ENOMEM;
    m->e = e;
    m->rate = rate;
    snprintf(m->account, sizeof m->account, "%s", account);
    snprintf(m->src, sizeof m->src, "%s", src);
    snprintf(m->dst, sizeof m->dst, "%s", dst);
    unsigned char rnd[8];
    if ((rc = sl_random_bytes(rnd, sizeof rnd)) != 0) {
        free(m);
        return rc;
    }
    for (int i = 0; i < 8; i++)
        snprintf(m->id + 2 * i, 3, "%02x", rnd[i]);
    m->t0 = m->last_beat = sl_now_ms();
    struct start_edit s = {json_pack("{s:s,s:s,s:s,s:i,s:I,s:I,s:I,s:I}", "id", m->id, "status", "RUNNING",
                                     "destination", m->dst, "rate", rate, "moved", (json_int_t)0, "toMove",
                                     (json_int_t)to_move, "startedMs", (json_int_t)m->t0, "beatMs",
                                     (json_int_t)m->t0)};
    if (!s.task) {
        free(m);
        return SL_ENOMEM;
    }
    rc = eng_opts_edit(e, account, src, edit_start, &s, err, cap);
    json_decref(s.task);
    if (rc) {
        free(m);
        return rc;
    }
    snprintf(handle, SL_MOVE_HANDLE_MAX, "%s:%s:%s", account, src, m->id);
    pthread_mutex_lock(&e->mu);
    e->movers++;
    pthread_mutex_unlock(&e->mu);
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&th, &at, mover_main, m) != 0) {
        pthread_attr_destroy(&at);
        beat(m, 0, "FAILED", "the server could not start a thread");
        pthread_mutex_lock(&e->mu);
        e->movers--;
        pthread_mutex_unlock(&e->mu);
        free(m);
        return SL_ENOMEM;
    }
    pthread_attr_destroy(&at);
    return 0;
}

/* --- Listing and cancelling ---------------------------------------------- */

int sl_move_tasks(sl_engine *e, const char *account, const char *src, char **json) {
    json_t *j, *out = NULL, *t;
    *json = NULL;
    int rc = eng_queue_row_json(e, account, src, &j);
    if (rc) return rc;
    int64_t now = sl_now_ms();
    size_t i;
    if (!(out = json_array())) rc = SL_ENOMEM;
    json_array_foreach(json_object_get(j, "moveTasks"), i, t) {
        json_t *c = json_copy(t);
        const char *shown = task_status(t, now);
        if (c && strcmp(shown, str_of(t, "status")) != 0) {
            json_object_set_new(c, "status", json_string(shown));
            json_object_set_new(c, "failureReason", json_string("the node that ran the task stopped"));
        }
        char handle[SL_MOVE_HANDLE_MAX];
        snprintf(handle, sizeof handle, "%s:%s:%s", account, src, str_of(t, "id"));
        if (c) json_object_set_new(c, "taskHandle", json_string(handle));
        json_array_append_new(out, c);
    }
    if (rc == 0 && !(*json = json_dumps(out, JSON_COMPACT))) rc = SL_ENOMEM;
    json_decref(out);
    json_decref(j);
    return rc;
}

struct cancel_edit {
    const char *id;
    int64_t moved;
};

static int edit_cancel(json_t *opts, void *arg, char *err, size_t cap) {
    struct cancel_edit *c = arg;
    json_t *t = task_of(opts, c->id);
    if (!t || strcmp(task_status(t, sl_now_ms()), "RUNNING") != 0) {
        snprintf(err, cap, "no running message move task has this handle");
        return SL_ENOTFOUND;
    }
    c->moved = json_integer_value(json_object_get(t, "moved"));
    return json_object_set_new(t, "status", json_string("CANCELLING")) ? SL_ENOMEM : 0;
}

int sl_move_task_cancel(sl_engine *e, const char *account, const char *handle, int64_t *moved) {
    char acct[SL_NAME_MAX + 1], src[SL_NAME_MAX + 1], id[32], err[64];
    *moved = 0;
    if (strlen(handle) >= SL_MOVE_HANDLE_MAX ||
        sscanf(handle, "%80[A-Za-z0-9_.-]:%80[A-Za-z0-9_.-]:%31[0-9a-f]", acct, src, id) != 3 ||
        strcmp(acct, account) != 0)
        return SL_ENOTFOUND;
    int rc = sl_acct_exists(e->cfg.accounts, account);
    if (rc) return rc;
    struct cancel_edit c = {id, 0};
    rc = eng_opts_edit(e, account, src, edit_cancel, &c, err, sizeof err);
    *moved = c.moved;
    return rc;
}
