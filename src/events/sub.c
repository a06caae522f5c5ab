/* sub.c: subscriptions (API.md "Subscriptions", DESIGN.md "The event log").
 *
 * Tables (store.h types):
 *
 *   event_subscription ((account), name) queue, types, tags, start_kind,
 *                      start_us, created_us, cursor_us, cursor_id,
 *                      delivered, state, version
 *   event_sub_dir      ((part), account, name) created_us
 *   event_sub_lease    ((skey)) owner, nonce
 *
 * A subscription's row is written by compare-and-sets only: create
 * (insert-if-not-exists, or over a deleted row), every advance of the
 * cursor and every change of state (on its version), and delete, which
 * marks the row deleted instead of removing it, so that a re-create of the
 * name is again a compare-and-set and never races a tombstone's timestamp
 * (store.h, "Timestamps"). types and tags are the filter's values joined
 * by spaces, canonical (sorted, no repeats).
 *
 * event_sub_dir lists every subscription ever made, in DIR_PARTS
 * partitions by a hash of the account, so that each node's worker finds
 * them without a list of accounts. Its rows are plain upserts of fixed
 * values and never deleted (a deleted subscription's row says so).
 *
 * The worker: one thread per node. For each subscription whose row is
 * live, it holds the lease row skey = "<account>/<name>" (insert-if-not-
 * exists with a TTL, renewed by a compare-and-set on owner; a stopping
 * node sets owner to "" so another takes over at once). Holding it, it
 * reads the subscription's filter from its cursor to the log's read
 * horizon in pages of SL_EV_SUB_PAGE, reads the row again (a deleted or
 * changed subscription puts nothing), puts the page into the queue, then
 * advances the cursor with a compare-and-set on version. A
 * crash or a lost lease between the put and the advance puts that page
 * again: the same events, never others, never fewer. Where nothing
 * matches, the cursor moves on in memory and is written every PERSIST_MS. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events_int.h"

enum {
    SB_ACCOUNT,
    SB_NAME,
    SB_QUEUE,
    SB_TYPES,
    SB_TAGS,
    SB_START_KIND,
    SB_START,
    SB_CREATED,
    SB_CURSOR_US,
    SB_CURSOR_ID,
    SB_DELIVERED,
    SB_STATE,
    SB_VERSION,
    SB_NCOLS
};
const sl_table sl_t_event_subscription = {"event_subscription",
                                          1,
                                          1,
                                          SB_NCOLS,
                                          {{"account", SL_TEXT},
                                           {"name", SL_TEXT},
                                           {"queue", SL_TEXT},
                                           {"types", SL_TEXT},
                                           {"tags", SL_TEXT},
                                           {"start_kind", SL_INT},
                                           {"start_us", SL_INT},
                                           {"created_us", SL_INT},
                                           {"cursor_us", SL_INT},
                                           {"cursor_id", SL_TEXT},
                                           {"delivered", SL_INT},
                                           {"state", SL_INT},
                                           {"version", SL_INT}},
                                          0};
enum { SD_PART, SD_ACCOUNT, SD_NAME, SD_CREATED };
const sl_table sl_t_event_sub_dir = {
    "event_sub_dir",
    1,
    2,
    4,
    {{"part", SL_INT}, {"account", SL_TEXT}, {"name", SL_TEXT}, {"created_us", SL_INT}},
    0};
enum { SL_KEY, SL_OWNER, SL_NONCE };
const sl_table sl_t_event_sub_lease = {
    "event_sub_lease", 1, 0, 3, {{"skey", SL_TEXT}, {"owner", SL_TEXT}, {"nonce", SL_INT}}, 0};

#define DIR_PARTS 8
#define LEASE_TTL_S 15
#define RENEW_MS 5000       /* the owner renews its lease this often */
#define LEASE_CHECK_MS 3000 /* a node that does not own it looks this often */
#define ROW_FRESH_MS 2000   /* an idle owner reads the row (deleted? its queue back?) */
#define DIR_MS 2000         /* the directory is read this often */
#define RETRY_MS 2000       /* after a failure, or while the queue is missing */
#define GONE_MS 5000        /* a deleted subscription is looked at again (re-created?) */
#define PERSIST_MS 5000     /* an idle cursor is written at most this often */
#define PAGES_PER_ROUND 20  /* then the next subscription's turn */
#define TRIES 5             /* compare-and-sets lost to another writer, then 503 */

/* --- Rows ---------------------------------------------------------------- */

static void join(char *out, size_t cap, const char *v, int n, size_t size) {
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(out + o, cap - o, "%s%s", i ? " " : "", v + (size_t)i * size);
}

/* Splits a space-joined list into n values of size bytes; 0 or SL_EINTERNAL. */
static int split(const sl_val *val, char *v, int *n, size_t size, int (*valid)(const char *)) {
    char buf[SL_EV_FILTER_MAX * (SL_EV_ID_MAX + 1) + 1];
    *n = 0;
    if (!val->set || val->null || val->n == 0) return 0;
    if (sl_val_str(val, buf, sizeof buf) < 0) return SL_EINTERNAL;
    for (char *save = NULL, *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
        if (*n == SL_EV_FILTER_MAX || strlen(t) >= size || !valid(t)) return SL_EINTERNAL;
        memcpy(v + (size_t)(*n)++ * size, t, strlen(t) + 1);
    }
    return 0;
}

static int sub_from_row(const sl_row *row, sl_ev_sub *s) {
    memset(s, 0, sizeof *s);
    if (sl_val_str(&row->v[SB_NAME], s->name, sizeof s->name) < 0 ||
        sl_val_str(&row->v[SB_QUEUE], s->queue, sizeof s->queue) < 0 ||
        split(&row->v[SB_TYPES], s->filter.types[0], &s->filter.ntypes, sizeof s->filter.types[0],
              sl_ev_id_valid) ||
        split(&row->v[SB_TAGS], s->filter.tags[0], &s->filter.ntags, sizeof s->filter.tags[0],
              sl_ev_tag_valid))
        return SL_EINTERNAL;
    s->start = (sl_sub_start)row->v[SB_START_KIND].i;
    s->start_us = row->v[SB_START].i;
    s->created_us = row->v[SB_CREATED].i;
    s->position.us = row->v[SB_CURSOR_US].i;
    if (row->v[SB_CURSOR_ID].set && !row->v[SB_CURSOR_ID].null &&
        sl_val_str(&row->v[SB_CURSOR_ID], s->position.id, sizeof s->position.id) < 0)
        return SL_EINTERNAL;
    s->delivered = row->v[SB_DELIVERED].i;
    s->state = (sl_sub_state)row->v[SB_STATE].i;
    s->version = row->v[SB_VERSION].i;
    return 0;
}

/* Reads the row: 0 (deleted ones too), SL_ENOTFOUND, or a store error. */
static int read_sub(sl_store *st, const char *account, const char *name, int cons, sl_ev_sub *out) {
    sl_result r;
    sl_result_init(&r);
    sl_val key[2] = {sl_vtext(account), sl_vtext(name)};
    int rc = sl_store_get(st, &sl_t_event_subscription, key, cons, &r);
    if (rc == 0) rc = sub_from_row(&r.rows[0], out);
    sl_result_free(&r);
    return rc;
}

/* The values a write of s sets, into w's row (strings borrowed from s and
 * from the buffers). */
typedef struct {
    char types[SL_EV_FILTER_MAX * (SL_EV_ID_MAX + 1) + 1];
    char tags[SL_EV_FILTER_MAX * (SL_EV_TAG_MAX + 1) + 1];
} joined;

static void sub_to_row(const char *account, const sl_ev_sub *s, joined *j, sl_write *w) {
    join(j->types, sizeof j->types, s->filter.types[0], s->filter.ntypes, sizeof s->filter.types[0]);
    join(j->tags, sizeof j->tags, s->filter.tags[0], s->filter.ntags, sizeof s->filter.tags[0]);
    sl_row *r = &w->row;
    r->v[SB_ACCOUNT] = sl_vtext(account);
    r->v[SB_NAME] = sl_vtext(s->name);
    r->v[SB_QUEUE] = sl_vtext(s->queue);
    r->v[SB_TYPES] = sl_vtext(j->types);
    r->v[SB_TAGS] = sl_vtext(j->tags);
    r->v[SB_START_KIND] = sl_vint(s->start);
    r->v[SB_START] = sl_vint(s->start_us);
    r->v[SB_CREATED] = sl_vint(s->created_us);
    r->v[SB_CURSOR_US] = sl_vint(s->position.us);
    r->v[SB_CURSOR_ID] = sl_vtext(s->position.id);
    r->v[SB_DELIVERED] = sl_vint(s->delivered);
    r->v[SB_STATE] = sl_vint(s->state);
    r->v[SB_VERSION] = sl_vint(s->version);
}

/* Writes s over the row at version s->version - 1 (or, for version 0,
 * where there is none): 0, SL_ENOTAPPLIED, or a store error. An unknown
 * outcome is settled by a serial read: the row holds s (its version and
 * created time) or it does not. */
static int cas_sub(sl_store *st, const char *account, const sl_ev_sub *s) {
    joined j;
    sl_write w = {.t = &sl_t_event_subscription};
    sub_to_row(account, s, &j, &w);
    if (s->version == 0) {
        w.kind = SL_W_INSERT_IF_NOT_EXISTS;
    } else {
        w.kind = SL_W_UPDATE_IF;
        w.cond[0] = (sl_cond){SB_VERSION, sl_vint(s->version - 1)};
        w.ncond = 1;
    }
    int rc = sl_store_apply(st, &w, 1, NULL);
    if (rc != SL_EUNKNOWN) return rc;
    sl_ev_sub now;
    rc = read_sub(st, account, s->name, SL_READ_SERIAL, &now);
    if (rc == SL_ENOTFOUND) return SL_ENOTAPPLIED;
    if (rc) return rc;
    return now.version == s->version && now.created_us == s->created_us ? 0 : SL_ENOTAPPLIED;
}

static unsigned dir_part(const char *account) {
    unsigned h = 2166136261u;
    for (const unsigned char *c = (const unsigned char *)account; *c; c++)
        h = (h ^ *c) * 16777619u;
    return h % DIR_PARTS;
}

/* --- The API's operations ------------------------------------------------ */

/* Whether two definitions are the same: queue, filter values as sets,
 * startFrom as given. */
static int same_def(const sl_ev_sub *a, const sl_ev_sub *b) {
    sl_ev_query fa = a->filter, fb = b->filter;
    fa.account[0] = fb.account[0] = '\0';
    fa.desc = fb.desc = 0;
    fa.start_us = fb.start_us = fa.end_us = fb.end_us = 0;
    return strcmp(a->queue, b->queue) == 0 && sl_ev_query_same(&fa, &fb) && a->start == b->start &&
           (a->start != SL_SUB_TIME || a->start_us == b->start_us);
}

static int list_store(sl_store *st, const char *account, sl_ev_sub **out, size_t *n);

static int count_live(sl_store *st, const char *account, int *n) {
    sl_ev_sub *all;
    size_t k;
    int rc = list_store(st, account, &all, &k);
    if (rc) return rc;
    free(all);
    *n = (int)k;
    return 0;
}

int sl_evsub_create(sl_evlog *l, const char *account, const sl_ev_sub *def, sl_ev_sub *out, int *created) {
    sl_store *st = ev_store(l);
    *created = 0;
    if (!sl_name_valid(account) || !sl_name_valid(def->name) || !sl_name_valid(def->queue) ||
        def->start < SL_SUB_NOW || def->start > SL_SUB_TIME ||
        (def->start == SL_SUB_TIME && (def->start_us < 0 || def->start_us > SL_EV_TIME_LAST)))
        return SL_EINVAL;
    sl_ev_sub want = *def;
    sl_ev_query_canon(&want.filter);
    for (int tries = 0; tries < TRIES; tries++) {
        sl_ev_sub cur;
        int rc = read_sub(st, account, def->name, SL_READ_SERIAL, &cur);
        if (rc && rc != SL_ENOTFOUND) return rc;
        int exists = rc == 0;
        if (exists && cur.state != SL_SUB_DELETED) {
            if (!same_def(&cur, &want)) return SL_EEXISTS;
            *out = cur;
            return 0;
        }
        int live;
        if ((rc = count_live(st, account, &live))) return rc;
        if (live >= SL_EV_SUBS_MAX) return SL_ETOOBIG;
        int64_t now = sl_now_us();
        want.created_us = now;
        if (want.start == SL_SUB_NOW) want.start_us = now;
        if (want.start == SL_SUB_EARLIEST) {
            /* Nothing older than the longest retention is kept. */
            want.start_us = now - (int64_t)SL_EV_RETENTION_MAX * 1000000;
            if (want.start_us < 0) want.start_us = 0;
        }
        want.state = SL_SUB_ACTIVE;
        want.position.us = want.start_us;
        want.position.id[0] = '\0';
        want.delivered = 0;
        want.version = exists ? cur.version + 1 : 0;
        /* The directory row first, so that the worker can find it. */
        sl_write d = {.t = &sl_t_event_sub_dir, .kind = SL_W_UPSERT};
        d.row.v[SD_PART] = sl_vint(dir_part(account));
        d.row.v[SD_ACCOUNT] = sl_vtext(account);
        d.row.v[SD_NAME] = sl_vtext(def->name);
        d.row.v[SD_CREATED] = sl_vint(0);
        rc = sl_store_apply(st, &d, 1, NULL);
        if (rc == SL_EUNKNOWN) rc = sl_store_apply(st, &d, 1, NULL);
        if (rc) return rc;
        rc = cas_sub(st, account, &want);
        if (rc == 0) {
            *out = want;
            *created = 1;
            return 0;
        }
        if (rc != SL_ENOTAPPLIED) return rc;
        /* Another create or delete got there first: look again. */
    }
    return SL_EUNAVAILABLE;
}

int sl_evsub_get(sl_evlog *l, const char *account, const char *name, sl_ev_sub *out) {
    if (!sl_name_valid(account) || !sl_name_valid(name)) return SL_ENOTFOUND;
    int rc = read_sub(ev_store(l), account, name, SL_READ_DEFAULT, out);
    return rc == 0 && out->state == SL_SUB_DELETED ? SL_ENOTFOUND : rc;
}

static int list_store(sl_store *st, const char *account, sl_ev_sub **out, size_t *n) {
    *out = NULL;
    *n = 0;
    sl_ev_sub *v = NULL;
    size_t cap = 0;
    sl_result r;
    sl_result_init(&r);
    sl_slice q = {.t = &sl_t_event_subscription, .limit = 256};
    q.pk[0] = sl_vtext(account);
    char last[SL_NAME_MAX + 1] = "";
    int rc;
    for (;;) {
        if (last[0]) {
            q.from[0] = sl_vtext(last);
            q.nfrom = 1;
            q.from_excl = 1;
        }
        if ((rc = sl_store_slice(st, &q, &r))) break;
        for (size_t i = 0; i < r.n && rc == 0; i++) {
            sl_ev_sub s;
            if ((rc = sub_from_row(&r.rows[i], &s))) break;
            snprintf(last, sizeof last, "%s", s.name);
            if (s.state == SL_SUB_DELETED) continue;
            if (*n == cap) {
                sl_ev_sub *g = realloc(v, (cap = cap ? 2 * cap : 16) * sizeof *v);
                if (!g) {
                    rc = SL_ENOMEM;
                    break;
                }
                v = g;
            }
            v[(*n)++] = s;
        }
        if (rc || !r.more) break;
    }
    sl_result_free(&r);
    if (rc) {
        free(v);
        *n = 0;
        return rc;
    }
    *out = v;
    return 0;
}

int sl_evsub_list(sl_evlog *l, const char *account, sl_ev_sub **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (!sl_name_valid(account)) return 0;
    return list_store(ev_store(l), account, out, n);
}

int sl_evsub_delete(sl_evlog *l, const char *account, const char *name) {
    if (!sl_name_valid(account) || !sl_name_valid(name)) return SL_ENOTFOUND;
    sl_store *st = ev_store(l);
    for (int tries = 0; tries < TRIES; tries++) {
        sl_ev_sub s;
        int rc = read_sub(st, account, name, SL_READ_SERIAL, &s);
        if (rc) return rc;
        if (s.state == SL_SUB_DELETED) return SL_ENOTFOUND;
        s.state = SL_SUB_DELETED;
        s.version++;
        rc = cas_sub(st, account, &s);
        if (rc != SL_ENOTAPPLIED) return rc;
    }
    return SL_EUNAVAILABLE;
}

/* --- The worker ---------------------------------------------------------- */

/* One subscription as this node's worker knows it. */
typedef struct {
    char account[SL_NAME_MAX + 1], name[SL_NAME_MAX + 1];
    char skey[2 * SL_NAME_MAX + 2];
    int owned;
    int have; /* sub is the row as read or written last (while owned) */
    sl_ev_sub sub;
    sl_ev_pos cur;    /* how far it has read: at or past sub.position */
    int64_t next_ms;  /* not worked before then */
    int64_t renew_ms; /* the lease is renewed then */
    int64_t fresh_ms; /* the row is read again then */
    int64_t persist_ms;
    /* GET /metrics, under the worker's mu: how far it has read while owned,
     * and the events it put into the queue since this node started. */
    int shown;
    int64_t seen_us;
    uint64_t delivered;
} entry;

struct sl_evsubs {
    sl_evlog *l;
    sl_store *st;
    sl_evsubs_config cfg;
    char node[64];
    entry *e;
    size_t n, cap;
    int64_t dir_ms;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stopping;
};

static int stopping(sl_evsubs *w) {
    pthread_mutex_lock(&w->mu);
    int s = w->stopping;
    pthread_mutex_unlock(&w->mu);
    return s;
}

static int64_t nonce(void) {
    int64_t v = 0;
    if (sl_random_bytes(&v, sizeof v)) v = sl_now_us();
    return v;
}

/* Takes or renews e's lease: 1 when this node holds it. A lease row whose
 * owner is "" was given back. */
static int own(sl_evsubs *w, entry *e, int64_t now) {
    if (e->owned && now < e->renew_ms) return 1;
    sl_write lw = {.t = &sl_t_event_sub_lease, .ttl = LEASE_TTL_S};
    lw.row.v[SL_KEY] = sl_vtext(e->skey);
    lw.row.v[SL_OWNER] = sl_vtext(w->node);
    lw.row.v[SL_NONCE] = sl_vint(nonce());
    sl_result cur;
    sl_result_init(&cur);
    int rc;
    if (e->owned) {
        lw.kind = SL_W_UPDATE_IF;
        lw.cond[0] = (sl_cond){SL_OWNER, sl_vtext(w->node)};
        lw.ncond = 1;
        rc = sl_store_apply(w->st, &lw, 1, NULL);
    } else {
        /* Only where nobody holds it: a read first, so that a node that
         * does not own it costs a read, not a compare-and-set. */
        sl_val key[1] = {lw.row.v[SL_KEY]};
        rc = sl_store_get(w->st, &sl_t_event_sub_lease, key, SL_READ_DEFAULT, &cur);
        char owner[64] = "";
        if (rc == 0) sl_val_str(&cur.rows[0].v[SL_OWNER], owner, sizeof owner);
        if (rc == 0 && owner[0] && strcmp(owner, w->node) != 0) {
            rc = SL_ENOTAPPLIED;
        } else if (rc == SL_ENOTFOUND) {
            lw.kind = SL_W_INSERT_IF_NOT_EXISTS;
            rc = sl_store_apply(w->st, &lw, 1, NULL);
        } else if (rc == 0) {
            lw.kind = SL_W_UPDATE_IF;
            lw.cond[0] = (sl_cond){SL_OWNER, sl_vtext(owner)};
            lw.ncond = 1;
            rc = sl_store_apply(w->st, &lw, 1, NULL);
        }
    }
    sl_result_free(&cur);
    int had = e->owned;
    /* An unknown outcome: not held until a renewal says so. */
    e->owned = rc == 0;
    if (e->owned) {
        e->renew_ms = now + RENEW_MS;
        if (!had) {
            e->have = 0; /* read the row at SERIAL: the last owner may have moved it */
            sl_log(SL_DEBUG, "subscription %s: this node works it", e->skey);
        }
    } else {
        if (had) sl_log(SL_INFO, "subscription %s: lease lost to another node", e->skey);
        e->next_ms = now + LEASE_CHECK_MS;
    }
    return e->owned;
}

static void give_back(sl_evsubs *w, entry *e) {
    if (!e->owned) return;
    sl_write lw = {.t = &sl_t_event_sub_lease, .kind = SL_W_UPDATE_IF, .ttl = LEASE_TTL_S};
    lw.row.v[SL_KEY] = sl_vtext(e->skey);
    lw.row.v[SL_OWNER] = sl_vtext("");
    lw.row.v[SL_NONCE] = sl_vint(nonce());
    lw.cond[0] = (sl_cond){SL_OWNER, sl_vtext(w->node)};
    lw.ncond = 1;
    sl_store_apply(w->st, &lw, 1, NULL);
    e->owned = 0;
}

/* Reads e's row: 1 when it is live, 0 when it is deleted or gone (the
 * lease is given back), or a store error. A changed row (another owner
 * advanced it, or the name was deleted and made again) is taken as it is,
 * with the cursor it holds. */
static int refresh(sl_evsubs *w, entry *e, int cons, int64_t now) {
    sl_ev_sub s;
    int rc = read_sub(w->st, e->account, e->name, cons, &s);
    if (rc && rc != SL_ENOTFOUND) return rc;
    if (rc == SL_ENOTFOUND || s.state == SL_SUB_DELETED) {
        give_back(w, e);
        e->have = 0;
        e->next_ms = now + GONE_MS;
        return 0;
    }
    if (!e->have || s.version != e->sub.version || s.created_us != e->sub.created_us) e->cur = s.position;
    e->sub = s;
    e->have = 1;
    e->fresh_ms = now + ROW_FRESH_MS;
    return 1;
}

/* Writes e->sub with the cursor at pos, n more delivered and state: 0, or
 * a lost compare-and-set (the row is read again before the next put). */
static int advance(sl_evsubs *w, entry *e, const sl_ev_pos *pos, size_t n, sl_sub_state state, int64_t now) {
    sl_ev_sub s = e->sub;
    s.position = *pos;
    s.delivered += (int64_t)n;
    s.state = state;
    s.version++;
    int rc = cas_sub(w->st, e->account, &s);
    if (rc == 0) {
        e->sub = s;
        e->persist_ms = now + PERSIST_MS;
        return 0;
    }
    if (rc == SL_ENOTAPPLIED)
        sl_log(SL_INFO, "subscription %s: changed by another writer; reading it again", e->skey);
    e->have = 0;
    return rc;
}

/* Sets the state when it changed. */
static void set_state(sl_evsubs *w, entry *e, sl_sub_state state, int64_t now) {
    if (e->sub.state == state) return;
    sl_log(SL_INFO, "subscription %s: %s", e->skey,
           state == SL_SUB_QUEUE_MISSING ? "its queue does not exist; waiting for it"
                                         : "its queue exists again");
    advance(w, e, &e->sub.position, 0, state, now);
}

/* One turn of an owned subscription: pages from the cursor to the horizon,
 * at most PAGES_PER_ROUND. */
static void work(sl_evsubs *w, entry *e, int64_t now) {
    if (!e->have || now >= e->fresh_ms) {
        int rc = refresh(w, e, e->have ? SL_READ_DEFAULT : SL_READ_SERIAL, now);
        if (rc <= 0) {
            if (rc < 0) e->next_ms = now + RETRY_MS;
            return;
        }
        if (e->sub.state == SL_SUB_QUEUE_MISSING || now >= e->persist_ms) {
            int x = w->cfg.sink.exists(w->cfg.sink.ctx, e->account, e->sub.queue);
            if (x >= 0) set_state(w, e, x ? SL_SUB_ACTIVE : SL_SUB_QUEUE_MISSING, now);
            if (!e->have) return;
        }
    }
    if (e->sub.state == SL_SUB_QUEUE_MISSING) {
        e->next_ms = now + RETRY_MS;
        return;
    }
    for (int pages = 0; pages < PAGES_PER_ROUND && !stopping(w); pages++) {
        int64_t horizon = sl_evlog_horizon(w->l);
        if (horizon <= e->cur.us || horizon <= e->sub.start_us) break;
        sl_ev_query q = e->sub.filter;
        snprintf(q.account, sizeof q.account, "%s", e->account);
        q.desc = 0;
        q.start_us = e->sub.start_us;
        q.end_us = horizon;
        q.has_last = 1;
        q.last = e->cur;
        sl_ev_page p;
        int rc = sl_evlog_query(w->l, &q, SL_EV_SUB_PAGE, &p);
        if (rc) {
            sl_log(SL_ERR, "subscription %s: reading the log: %s", e->skey, sl_strerror(rc));
            e->next_ms = now + RETRY_MS;
            return;
        }
        sl_ev_pos to = p.done ? (sl_ev_pos){.us = horizon} : p.next.last;
        if (p.n > 0) {
            /* Deleted or changed since it was read: nothing is put. */
            rc = refresh(w, e, SL_READ_DEFAULT, now);
            if (rc <= 0 || sl_ev_pos_cmp(&e->cur, &q.last) != 0) {
                sl_ev_page_free(&p);
                if (rc < 0) e->next_ms = now + RETRY_MS;
                return;
            }
            rc = w->cfg.sink.put(w->cfg.sink.ctx, e->account, e->sub.queue, e->name, p.events, p.n);
            size_t n = p.n;
            sl_ev_page_free(&p);
            if (rc == SL_ENOTFOUND) {
                set_state(w, e, SL_SUB_QUEUE_MISSING, now);
                e->next_ms = now + RETRY_MS;
                return;
            }
            if (rc) {
                sl_log(SL_ERR, "subscription %s: putting %zu events in queue %s: %s", e->skey, n,
                       e->sub.queue, sl_strerror(rc));
                e->next_ms = now + RETRY_MS;
                return;
            }
            if (advance(w, e, &to, n, SL_SUB_ACTIVE, now)) {
                e->next_ms = now + RETRY_MS;
                return;
            }
            e->cur = to;
            pthread_mutex_lock(&w->mu);
            e->delivered += n;
            pthread_mutex_unlock(&w->mu);
        } else {
            sl_ev_page_free(&p);
            e->cur = to;
        }
        if (p.done) break;
    }
    /* Nothing more matched: write how far it has looked now and then. */
    if (now >= e->persist_ms && sl_ev_pos_cmp(&e->cur, &e->sub.position) > 0)
        advance(w, e, &e->cur, 0, e->sub.state, now);
}

/* Adds the directory's subscriptions this node does not know yet. */
static void read_dir(sl_evsubs *w) {
    sl_result r;
    sl_result_init(&r);
    for (int part = 0; part < DIR_PARTS; part++) {
        sl_slice q = {.t = &sl_t_event_sub_dir, .limit = 0};
        q.pk[0] = sl_vint(part);
        if (sl_store_slice(w->st, &q, &r)) continue;
        for (size_t i = 0; i < r.n; i++) {
            char account[SL_NAME_MAX + 1], name[SL_NAME_MAX + 1];
            if (sl_val_str(&r.rows[i].v[SD_ACCOUNT], account, sizeof account) < 0 ||
                sl_val_str(&r.rows[i].v[SD_NAME], name, sizeof name) < 0)
                continue;
            size_t k = 0;
            while (k < w->n && (strcmp(w->e[k].account, account) || strcmp(w->e[k].name, name)))
                k++;
            if (k < w->n) continue;
            /* Under mu: GET /metrics reads the array (only this thread writes it). */
            pthread_mutex_lock(&w->mu);
            if (w->n == w->cap) {
                size_t cap = w->cap ? 2 * w->cap : 16;
                entry *g = realloc(w->e, cap * sizeof *g);
                if (!g) {
                    pthread_mutex_unlock(&w->mu);
                    break;
                }
                w->e = g;
                w->cap = cap;
            }
            entry *e = &w->e[w->n++];
            memset(e, 0, sizeof *e);
            snprintf(e->account, sizeof e->account, "%s", account);
            snprintf(e->name, sizeof e->name, "%s", name);
            snprintf(e->skey, sizeof e->skey, "%s/%s", account, name);
            pthread_mutex_unlock(&w->mu);
        }
    }
    sl_result_free(&r);
}

static void round_robin(sl_evsubs *w) {
    int64_t now = sl_mono_ms();
    if (now >= w->dir_ms) {
        read_dir(w);
        w->dir_ms = now + DIR_MS;
    }
    for (size_t i = 0; i < w->n && !stopping(w); i++) {
        entry *e = &w->e[i];
        now = sl_mono_ms();
        if (now < e->next_ms) continue;
        if (!e->owned) {
            /* A deleted one holds no lease: look at its row first. */
            sl_ev_sub s;
            int rc = read_sub(w->st, e->account, e->name, SL_READ_DEFAULT, &s);
            if (rc || s.state == SL_SUB_DELETED) {
                e->next_ms = now + (rc && rc != SL_ENOTFOUND ? RETRY_MS : GONE_MS);
                continue;
            }
        }
        if (own(w, e, now)) work(w, e, now);
        pthread_mutex_lock(&w->mu);
        e->shown = e->owned && e->have;
        e->seen_us = e->cur.us;
        pthread_mutex_unlock(&w->mu);
    }
}

void sl_evsubs_metrics(sl_evsubs *w, sl_text *t) {
    int64_t horizon = sl_evlog_horizon(w->l);
    sl_metric_head(t, "sluice_subscription_lag_seconds", "gauge",
                   "How far behind the event log's read horizon a subscription this node works on has read.");
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i < w->n; i++)
        if (w->e[i].shown)
            sl_text_printf(t, "sluice_subscription_lag_seconds{account=\"%s\",subscription=\"%s\"} %.3f\n",
                           w->e[i].account, w->e[i].name,
                           horizon > w->e[i].seen_us ? (double)(horizon - w->e[i].seen_us) / 1e6 : 0.0);
    sl_metric_head(t, "sluice_subscription_events_delivered_total", "counter",
                   "Events this node put into a subscription's queue.");
    for (size_t i = 0; i < w->n; i++)
        if (w->e[i].delivered || w->e[i].shown)
            sl_text_printf(
                t, "sluice_subscription_events_delivered_total{account=\"%s\",subscription=\"%s\"} %llu\n",
                w->e[i].account, w->e[i].name, (unsigned long long)w->e[i].delivered);
    pthread_mutex_unlock(&w->mu);
}

static void *run(void *arg) {
    sl_thread_name("sl-subscribe");
    sl_evsubs *w = arg;
    pthread_mutex_lock(&w->mu);
    while (!w->stopping) {
        pthread_mutex_unlock(&w->mu);
        round_robin(w);
        pthread_mutex_lock(&w->mu);
        if (w->stopping) break;
        sl_cond_wait_ms(&w->cv, &w->mu, w->cfg.poll_ms);
    }
    pthread_mutex_unlock(&w->mu);
    for (size_t i = 0; i < w->n; i++)
        give_back(w, &w->e[i]);
    return NULL;
}

int sl_evsubs_start(sl_evlog *l, const sl_evsubs_config *cfg, sl_evsubs **out) {
    *out = NULL;
    if (!cfg->sink.put || !cfg->sink.exists || !cfg->node_id || !cfg->node_id[0]) return SL_EINVAL;
    sl_evsubs *w = sl_calloc(1, sizeof *w);
    if (!w) return SL_ENOMEM;
    w->l = l;
    w->st = ev_store(l);
    w->cfg = *cfg;
    if (w->cfg.poll_ms <= 0) w->cfg.poll_ms = 250;
    snprintf(w->node, sizeof w->node, "%s", cfg->node_id);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, run, w)) {
        pthread_cond_destroy(&w->cv);
        pthread_mutex_destroy(&w->mu);
        free(w);
        return SL_ENOMEM;
    }
    *out = w;
    return 0;
}

void sl_evsubs_stop(sl_evsubs *w) {
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w->e);
    free(w);
}
