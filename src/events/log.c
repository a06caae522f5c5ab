/* log.c: the event log on the store: its tables, the positions this node
 * stamps and the read horizon, ingest (idempotent by id), reading one
 * event, and each account's retention.
 *
 * Tables (store.h types; DESIGN.md "The event log" has them in CQL):
 *
 *   event          ((account, id)) recorded_us, expires_us, type, source,
 *                  subject, time, datacontenttype, tags, metadata, data,
 *                  confirmed
 *   event_index    ((ikey, bucket, shard), recorded_us, id) type, tags
 *   event_bucket   ((ikey, month), bucket) width_us, shards
 *   event_settings ((account)) retention_s, floor_us
 *   event_meta     ((name)) secret, width_us, shards: one row, "log"
 *
 * and the subscriptions' tables (sub.c).
 *
 * ikey names one index key of one account: "<account>/a/" for the 'all'
 * index, "<account>/t/<type>" and "<account>/g/<tag>" (no name, type or
 * tag contains '/'). tags are stored joined by spaces, in the order given
 * (no tag contains a space). Every row of an event carries the account's
 * retention as its TTL; a directory row the retention plus the bucket's
 * width, so it outlives the last entry of its bucket.
 *
 * Ingest writes the event row unconfirmed with its index entries and any
 * directory row this node has not written yet, then confirms the row. A
 * reader skips an entry whose row is missing, unconfirmed or at another
 * position, so an ingest cut anywhere leaves nothing visible, and its
 * retry (same id) stores the event at a new position. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events_int.h"

enum {
    EV_ACCOUNT,
    EV_ID,
    EV_RECORDED,
    EV_EXPIRES,
    EV_TYPE,
    EV_SOURCE,
    EV_SUBJECT,
    EV_TIME,
    EV_DCT,
    EV_TAGS,
    EV_META,
    EV_DATA,
    EV_CONFIRMED,
    EV_NCOLS
};
const sl_table sl_t_event = {"event",
                             2,
                             0,
                             EV_NCOLS,
                             {{"account", SL_TEXT},
                              {"id", SL_TEXT},
                              {"recorded_us", SL_INT},
                              {"expires_us", SL_INT},
                              {"type", SL_TEXT},
                              {"source", SL_TEXT},
                              {"subject", SL_TEXT},
                              {"time", SL_TEXT},
                              {"datacontenttype", SL_TEXT},
                              {"tags", SL_TEXT},
                              {"metadata", SL_TEXT},
                              {"data", SL_TEXT},
                              {"confirmed", SL_INT}},
                             0};
const sl_table sl_t_event_index = {"event_index",
                                   3,
                                   2,
                                   7,
                                   {{"ikey", SL_TEXT},
                                    {"bucket", SL_INT},
                                    {"shard", SL_INT},
                                    {"recorded_us", SL_INT},
                                    {"id", SL_TEXT},
                                    {"type", SL_TEXT},
                                    {"tags", SL_TEXT}},
                                   0};
const sl_table sl_t_event_bucket = {
    "event_bucket",
    2,
    1,
    5,
    {{"ikey", SL_TEXT}, {"month", SL_INT}, {"bucket", SL_INT}, {"width_us", SL_INT}, {"shards", SL_INT}},
    0};
const sl_table sl_t_event_settings = {
    "event_settings", 1, 0, 3, {{"account", SL_TEXT}, {"retention_s", SL_INT}, {"floor_us", SL_INT}}, 0};
const sl_table sl_t_event_meta = {
    "event_meta",
    1,
    0,
    4,
    {{"name", SL_TEXT}, {"secret", SL_BLOB}, {"width_us", SL_INT}, {"shards", SL_INT}},
    0};

static const sl_table *const tables[] = {&sl_t_event,          &sl_t_event_index,    &sl_t_event_bucket,
                                         &sl_t_event_settings, &sl_t_event_meta,     &sl_t_event_subscription,
                                         &sl_t_event_sub_dir,  &sl_t_event_sub_lease};

/* Rows that all expire by TTL: time-window compaction drops whole SSTables
 * of expired days instead of compacting tombstones (DESIGN.md "Retention"). */
const char *sl_evlog_table_options(const sl_table *t) {
    if (t == &sl_t_event || t == &sl_t_event_index || t == &sl_t_event_bucket)
        return "compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'DAYS', "
               "'compaction_window_size': '1'}";
    return NULL;
}

const sl_table *const *sl_evlog_tables(size_t *n) {
    *n = sizeof tables / sizeof tables[0];
    return tables;
}

#define RETENTION_CACHE 64
#define RETENTION_FRESH_MS 5000
#define DIR_CACHE 4096
#define RESTAMP_MAX 5 /* attempts of an ingest whose writes are late, then 503 */

/* An ingest in flight, in the list of them (oldest stamp first). */
typedef struct stamp {
    int64_t us;
    struct stamp *prev, *next;
} stamp;

struct sl_evlog {
    sl_store *st;
    int64_t settle_us, width_us;
    int shards;
    int atomic; /* sl_evlog_config.atomic */
    unsigned char secret[SL_EV_SECRET_LEN];
    pthread_mutex_t mu; /* guards everything below */
    int64_t last_us;
    stamp *oldest, *newest;
    struct {
        char account[SL_NAME_MAX + 1];
        int seconds;
        int64_t floor_us;
        int64_t read_ms;
    } retention[RETENTION_CACHE]; /* by a hash of the account */
    uint64_t dirs[DIR_CACHE];     /* hashes of the directory rows written */
    /* GET /metrics (atomic adds) */
    uint64_t m_outcomes[3]; /* ingests by outcome: created, matched, conflict */
    uint64_t m_queries;
    sl_hist m_ingest, m_query; /* a put or batch's time; a query page's */
};

void ev_note_query(sl_evlog *l, int64_t t0_us) {
    sl_count(&l->m_queries, 1);
    sl_hist_observe(&l->m_query, sl_latency_us() - t0_us);
}

/* Counts the outcomes of out[0..n) after an ingest that began at t0_us. */
static void note_ingest(sl_evlog *l, const sl_ev_receipt *out, size_t n, int64_t t0_us) {
    for (size_t i = 0; i < n; i++)
        if (out[i].outcome >= SL_EV_CREATED && out[i].outcome <= SL_EV_CONFLICT)
            sl_count(&l->m_outcomes[out[i].outcome - SL_EV_CREATED], 1);
    sl_hist_observe(&l->m_ingest, sl_latency_us() - t0_us);
}

void sl_evlog_metrics(sl_evlog *l, sl_text *t) {
    static const char *const outcome[] = {"created", "matched", "conflict"};
    sl_metric_head(
        t, "sluice_events_ingested_total", "counter",
        "Events put, by outcome (matched and conflict: an event with that id was there; nothing stored).");
    for (int i = 0; i < 3; i++)
        sl_text_printf(t, "sluice_events_ingested_total{outcome=\"%s\"} %llu\n", outcome[i],
                       (unsigned long long)sl_counted(&l->m_outcomes[i]));
    sl_metric_head(t, "sluice_events_ingest_duration_seconds", "histogram",
                   "The time of an event put or batch.");
    sl_hist_print(t, "sluice_events_ingest_duration_seconds", "", &l->m_ingest);
    sl_metric_head(t, "sluice_events_queries_total", "counter", "Pages of event queries answered.");
    sl_text_printf(t, "sluice_events_queries_total %llu\n", (unsigned long long)sl_counted(&l->m_queries));
    sl_metric_head(t, "sluice_events_query_duration_seconds", "histogram",
                   "The time of one page of a query.");
    sl_hist_print(t, "sluice_events_query_duration_seconds", "", &l->m_query);
}

static uint64_t fnv64(uint64_t h, const void *p, size_t n) {
    for (const unsigned char *c = p; n--; c++)
        h = (h ^ *c) * 1099511628211ull;
    return h;
}

void ev_ikey(char out[IKEY_MAX], const char *account, char kind, const char *key) {
    snprintf(out, IKEY_MAX, "%s/%c/%s", account, kind, key);
}

/* --- Life ---------------------------------------------------------------- */

/* The deployment's log settings, made once: the first node's insert wins
 * and every node reads them. The token secret, so that every node verifies
 * every node's tokens; the bucket width and shard count, so that buckets
 * are the same on every node and never overlap (a reader walks one bucket
 * at a time). A node configured otherwise says so and uses the stored
 * ones. */
static int load_meta(sl_evlog *l) {
    sl_result r;
    sl_result_init(&r);
    sl_val key[1] = {sl_vtext("log")};
    int rc = sl_store_get(l->st, &sl_t_event_meta, key, SL_READ_SERIAL, &r);
    if (rc == SL_ENOTFOUND) {
        unsigned char fresh[SL_EV_SECRET_LEN];
        if ((rc = sl_random_bytes(fresh, sizeof fresh)) != 0) goto done;
        sl_write w = {.t = &sl_t_event_meta, .kind = SL_W_INSERT_IF_NOT_EXISTS};
        w.row.v[0] = key[0];
        w.row.v[1] = sl_vbytes(fresh, sizeof fresh);
        w.row.v[2] = sl_vint(l->width_us);
        w.row.v[3] = sl_vint(l->shards);
        rc = sl_store_apply(l->st, &w, 1, NULL);
        /* Lost to another node, or unknown: whichever landed is the one. */
        if (rc == 0 || rc == SL_ENOTAPPLIED || rc == SL_EUNKNOWN)
            rc = sl_store_get(l->st, &sl_t_event_meta, key, SL_READ_SERIAL, &r);
    }
    if (rc) goto done;
    const sl_row *row = &r.rows[0];
    int64_t width = row->v[2].i, shards = row->v[3].i;
    if (!row->v[1].set || row->v[1].null || row->v[1].n != SL_EV_SECRET_LEN || width <= 0 ||
        86400000000LL % width != 0 || shards < 1 || shards > SL_EV_SHARDS_MAX) {
        sl_log(SL_ERR, "the event log's settings in the store are unreadable");
        rc = SL_EINTERNAL;
        goto done;
    }
    memcpy(l->secret, row->v[1].p, SL_EV_SECRET_LEN);
    if (width != l->width_us || shards != l->shards)
        sl_log(SL_INFO, "event log: buckets of %lld s in %lld shards, as the store says (not %lld s in %d)",
               (long long)(width / 1000000), (long long)shards, (long long)(l->width_us / 1000000),
               l->shards);
    l->width_us = width;
    l->shards = (int)shards;
done:
    sl_result_free(&r);
    return rc;
}

int sl_evlog_open(sl_store *st, const sl_evlog_config *cfg, sl_evlog **out) {
    *out = NULL;
    sl_evlog *l = sl_calloc(1, sizeof *l);
    if (!l) return SL_ENOMEM;
    l->st = st;
    l->settle_us = (int64_t)cfg->settle_ms * 1000;
    l->atomic = cfg->atomic;
    l->width_us = cfg->width_us ? cfg->width_us : SL_EV_WIDTH_DEFAULT_US;
    l->shards = cfg->shards ? cfg->shards : SL_EV_SHARDS_DEFAULT;
    if (l->width_us < 1000000 || 86400000000LL % l->width_us != 0 || l->shards < 1 ||
        l->shards > SL_EV_SHARDS_MAX) {
        free(l);
        return SL_EINVAL;
    }
    pthread_mutex_init(&l->mu, NULL);
    size_t n;
    const sl_table *const *t = sl_evlog_tables(&n);
    int rc = sl_store_ensure(st, t, n);
    if (rc == 0) rc = load_meta(l);
    if (rc) {
        sl_evlog_close(l);
        return rc;
    }
    *out = l;
    return 0;
}

void sl_evlog_close(sl_evlog *l) {
    if (!l) return;
    pthread_mutex_destroy(&l->mu);
    free(l);
}

const unsigned char *sl_evlog_secret(const sl_evlog *l) {
    return l->secret;
}

sl_store *ev_store(const sl_evlog *l) {
    return l->st;
}

int64_t ev_width(const sl_evlog *l) {
    return l->width_us;
}

/* --- Positions ----------------------------------------------------------- */

/* Stamps are unique on this node and increase: a clock that stands still
 * or steps back moves them on by a microsecond. None is before floor (the
 * account's last deletion, stamped by a node whose clock may be ahead). */
static int64_t stamp_take(sl_evlog *l, stamp *s, int64_t floor) {
    pthread_mutex_lock(&l->mu);
    int64_t now = sl_now_us();
    if (l->last_us < floor) l->last_us = floor;
    s->us = now > l->last_us ? now : l->last_us + 1;
    l->last_us = s->us;
    s->next = NULL;
    s->prev = l->newest;
    if (l->newest)
        l->newest->next = s;
    else
        l->oldest = s;
    l->newest = s;
    pthread_mutex_unlock(&l->mu);
    return s->us;
}

static void stamp_done(sl_evlog *l, stamp *s) {
    pthread_mutex_lock(&l->mu);
    if (s->prev)
        s->prev->next = s->next;
    else
        l->oldest = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        l->newest = s->prev;
    pthread_mutex_unlock(&l->mu);
}

int64_t sl_evlog_horizon(sl_evlog *l) {
    pthread_mutex_lock(&l->mu);
    int64_t h = sl_now_us() - l->settle_us;
    if (l->oldest && l->oldest->us < h) h = l->oldest->us;
    pthread_mutex_unlock(&l->mu);
    return h;
}

/* --- Retention ----------------------------------------------------------- */

static size_t retention_slot(const char *account) {
    return (size_t)(fnv64(14695981039346656037ull, account, strlen(account)) % RETENTION_CACHE);
}

/* An account's settings: its retention, and its floor: the time its
 * account was last deleted, before which no event of it is seen (0: never
 * deleted). Each node reads them again after RETENTION_FRESH_MS. */
static int settings(sl_evlog *l, const char *account, int *seconds, int64_t *floor) {
    size_t k = retention_slot(account);
    int64_t now = sl_mono_ms();
    pthread_mutex_lock(&l->mu);
    int hit =
        strcmp(l->retention[k].account, account) == 0 && now - l->retention[k].read_ms < RETENTION_FRESH_MS;
    if (hit) *seconds = l->retention[k].seconds, *floor = l->retention[k].floor_us;
    pthread_mutex_unlock(&l->mu);
    if (hit) return 0;
    sl_result r;
    sl_result_init(&r);
    sl_val key[1] = {sl_vtext(account)};
    int rc = sl_store_get(l->st, &sl_t_event_settings, key, SL_READ_DEFAULT, &r);
    int s = SL_EV_RETENTION_DEFAULT;
    int64_t f = 0;
    if (rc == 0 && r.rows[0].v[1].set && !r.rows[0].v[1].null) s = (int)r.rows[0].v[1].i;
    if (rc == 0 && r.rows[0].v[2].set && !r.rows[0].v[2].null) f = r.rows[0].v[2].i;
    sl_result_free(&r);
    if (rc && rc != SL_ENOTFOUND) return rc;
    pthread_mutex_lock(&l->mu);
    snprintf(l->retention[k].account, sizeof l->retention[k].account, "%s", account);
    l->retention[k].seconds = s;
    l->retention[k].floor_us = f;
    l->retention[k].read_ms = now;
    pthread_mutex_unlock(&l->mu);
    *seconds = s;
    *floor = f;
    return 0;
}

int sl_evlog_retention(sl_evlog *l, const char *account, int *seconds) {
    int64_t floor;
    return settings(l, account, seconds, &floor);
}

static void settings_forget(sl_evlog *l, const char *account) {
    size_t k = retention_slot(account);
    pthread_mutex_lock(&l->mu);
    l->retention[k].account[0] = '\0'; /* this node reads them again at once */
    pthread_mutex_unlock(&l->mu);
}

int sl_evlog_forget(sl_evlog *l, const char *account) {
    if (!sl_name_valid(account)) return SL_EINVAL;
    sl_write w = {.t = &sl_t_event_settings, .kind = SL_W_UPSERT};
    w.row.v[0] = sl_vtext(account);
    w.row.v[1] = sl_vnull();
    w.row.v[2] = sl_vint(sl_now_us());
    int rc = sl_store_apply(l->st, &w, 1, NULL);
    if (rc == SL_EUNKNOWN) rc = sl_store_apply(l->st, &w, 1, NULL); /* a later floor is as good */
    if (rc) return rc;
    settings_forget(l, account);
    sl_ev_sub *subs;
    size_t n;
    if ((rc = sl_evsub_list(l, account, &subs, &n)) != 0) return rc;
    for (size_t i = 0; i < n && (rc == 0 || rc == SL_ENOTFOUND); i++)
        rc = sl_evsub_delete(l, account, subs[i].name);
    free(subs);
    return rc == SL_ENOTFOUND ? 0 : rc;
}

int sl_evlog_set_retention(sl_evlog *l, const char *account, int seconds) {
    if (!sl_name_valid(account) || seconds < 1 || seconds > SL_EV_RETENTION_MAX) return SL_EINVAL;
    sl_write w = {.t = &sl_t_event_settings, .kind = SL_W_UPSERT};
    w.row.v[0] = sl_vtext(account);
    w.row.v[1] = sl_vint(seconds);
    int rc = sl_store_apply(l->st, &w, 1, NULL);
    if (rc == SL_EUNKNOWN) rc = sl_store_apply(l->st, &w, 1, NULL); /* an idempotent upsert */
    if (rc == 0) settings_forget(l, account);
    return rc;
}

/* --- Ingest -------------------------------------------------------------- */

static sl_val opt_text(const char *s) {
    return s ? sl_vtext(s) : sl_vnull();
}

static size_t join_tags(const sl_event *ev, char *out) {
    size_t o = 0;
    out[0] = '\0';
    for (int i = 0; i < ev->ntags; i++)
        o += (size_t)sprintf(out + o, "%s%s", i ? " " : "", ev->tags[i]);
    return o;
}

/* Whether a stored row holds the content of ev: the fields API.md's
 * idempotent ingest compares. */
static int same_text(const sl_val *v, const char *s) {
    if (!v->set || v->null) return s == NULL;
    return s && strlen(s) == v->n && memcmp(s, v->p, v->n) == 0;
}

static int same_content(const sl_row *row, const sl_event *ev, const char *tags) {
    return same_text(&row->v[EV_TYPE], ev->type) && same_text(&row->v[EV_SOURCE], ev->source) &&
           same_text(&row->v[EV_SUBJECT], ev->subject) && same_text(&row->v[EV_TIME], ev->time) &&
           same_text(&row->v[EV_DCT], ev->datacontenttype) && same_text(&row->v[EV_TAGS], tags) &&
           same_text(&row->v[EV_META], ev->metadata) && same_text(&row->v[EV_DATA], ev->data);
}

/* Whether this node wrote the directory row (ikey, bucket) with this
 * retention already; marks it written when mark is set. */
static int dir_known(sl_evlog *l, const char *ikey, int64_t bucket, int retention, int mark) {
    uint64_t h = fnv64(14695981039346656037ull, ikey, strlen(ikey) + 1);
    h = fnv64(h, &bucket, sizeof bucket);
    h = fnv64(h, &retention, sizeof retention);
    h |= 1; /* 0 marks an empty slot */
    size_t k = (size_t)(h % DIR_CACHE);
    pthread_mutex_lock(&l->mu);
    int known = l->dirs[k] == h;
    if (mark) l->dirs[k] = h;
    pthread_mutex_unlock(&l->mu);
    return known;
}

/* The index keys of one event and the bucket its position falls in. */
#define NKEYS (2 + SL_EV_FILTER_MAX)
#define EV_WRITES_MAX (1 + 2 * NKEYS) /* the row, an entry and a directory row per key */
typedef struct {
    char ikeys[NKEYS][IKEY_MAX];
    size_t nkeys;
    int64_t bucket;
    int ndirs;
} ev_keys;

/* Appends to w the writes of one event at position (us, id): its row
 * (confirmed or not), its index entries, and the directory rows this node
 * has not written yet. Returns how many (at most EV_WRITES_MAX); the
 * values borrow from the arguments and from k. */
static size_t event_writes(sl_evlog *l, const char *account, const char *id, const sl_event *ev,
                           const char *tags, int retention, int64_t us, int confirmed, ev_keys *k,
                           sl_write *w) {
    sl_val acc = sl_vtext(account), idv = sl_vtext(id);
    int shard = sl_ev_shard(id, l->shards);
    size_t nw = 0;
    k->bucket = sl_ev_bucket(us, l->width_us);
    k->nkeys = 0;
    k->ndirs = 0;
    memset(w, 0, EV_WRITES_MAX * sizeof *w);
    sl_write *row = &w[nw++];
    row->t = &sl_t_event;
    row->kind = SL_W_UPSERT;
    row->ttl = retention;
    row->row.v[EV_ACCOUNT] = acc;
    row->row.v[EV_ID] = idv;
    row->row.v[EV_RECORDED] = sl_vint(us);
    row->row.v[EV_EXPIRES] = sl_vint(us + (int64_t)retention * 1000000);
    row->row.v[EV_TYPE] = sl_vtext(ev->type);
    row->row.v[EV_SOURCE] = opt_text(ev->source);
    row->row.v[EV_SUBJECT] = opt_text(ev->subject);
    row->row.v[EV_TIME] = opt_text(ev->time);
    row->row.v[EV_DCT] = opt_text(ev->datacontenttype);
    row->row.v[EV_TAGS] = opt_text(ev->ntags ? tags : NULL);
    row->row.v[EV_META] = opt_text(ev->metadata);
    row->row.v[EV_DATA] = opt_text(ev->data);
    row->row.v[EV_CONFIRMED] = sl_vint(confirmed);
    ev_ikey(k->ikeys[k->nkeys++], account, 'a', "");
    ev_ikey(k->ikeys[k->nkeys++], account, 't', ev->type);
    for (int i = 0; i < ev->ntags; i++)
        ev_ikey(k->ikeys[k->nkeys++], account, 'g', ev->tags[i]);
    for (size_t j = 0; j < k->nkeys; j++) {
        sl_write *e = &w[nw++];
        e->t = &sl_t_event_index;
        e->kind = SL_W_UPSERT;
        e->ttl = retention;
        e->row.v[IX_IKEY] = sl_vtext(k->ikeys[j]);
        e->row.v[IX_BUCKET] = sl_vint(k->bucket);
        e->row.v[IX_SHARD] = sl_vint(shard);
        e->row.v[IX_RECORDED] = sl_vint(us);
        e->row.v[IX_ID] = idv;
        e->row.v[IX_TYPE] = sl_vtext(ev->type);
        e->row.v[IX_TAGS] = opt_text(ev->ntags ? tags : NULL);
        if (dir_known(l, k->ikeys[j], k->bucket, retention, 0)) continue;
        sl_write *d = &w[nw++];
        d->t = &sl_t_event_bucket;
        d->kind = SL_W_UPSERT;
        d->ttl = retention + (int)(l->width_us / 1000000) + 1;
        d->row.v[BK_IKEY] = sl_vtext(k->ikeys[j]);
        d->row.v[BK_MONTH] = sl_vint(sl_ev_month(k->bucket));
        d->row.v[BK_BUCKET] = sl_vint(k->bucket);
        d->row.v[BK_WIDTH] = sl_vint(l->width_us);
        d->row.v[BK_SHARDS] = sl_vint(l->shards);
        k->ndirs++;
    }
    return nw;
}

/* Once its writes are durable: this node has written these directory rows. */
static void dirs_written(sl_evlog *l, const ev_keys *k, int retention) {
    for (size_t j = 0; k->ndirs && j < k->nkeys; j++)
        dir_known(l, k->ikeys[j], k->bucket, retention, 1);
}

/* Plain upserts of fixed values: landing twice or late changes nothing,
 * so an unknown outcome is retried. */
static int apply_idempotent(sl_evlog *l, const sl_write *w, size_t n) {
    int rc = sl_store_apply(l->st, w, n, NULL);
    if (rc == SL_EUNKNOWN) rc = sl_store_apply(l->st, w, n, NULL);
    return rc;
}

/* Writes the event row, not confirmed, at position (us, id), with its
 * index entries and the directory rows this node has not written yet. */
static int write_unconfirmed(sl_evlog *l, const char *account, const char *id, const sl_event *ev,
                             const char *tags, int retention, int64_t us) {
    sl_write w[EV_WRITES_MAX];
    ev_keys k;
    size_t nw = event_writes(l, account, id, ev, tags, retention, us, 0, &k, w);
    int rc = apply_idempotent(l, w, nw);
    if (rc == 0) dirs_written(l, &k, retention);
    return rc;
}

/* Sets the row's confirmed column: from then on readers see the event. */
static int confirm(sl_evlog *l, const sl_val key[2], int retention) {
    sl_write c = {.t = &sl_t_event, .kind = SL_W_UPSERT, .ttl = retention};
    c.row.v[EV_ACCOUNT] = key[0];
    c.row.v[EV_ID] = key[1];
    c.row.v[EV_CONFIRMED] = sl_vint(1);
    int rc = sl_store_apply(l->st, &c, 1, NULL);
    if (rc == SL_EUNKNOWN) rc = sl_store_apply(l->st, &c, 1, NULL);
    return rc;
}

/* The part of an ingest before its writes: checks ev, makes its id when
 * it has none, and looks an id up. Returns 1 when the event is to be
 * written (out->id set), 0 when out is the answer already (the id exists
 * and matches or conflicts), or an error. */
static int ingest_prepare(sl_evlog *l, const char *account, const sl_event *ev, const char *tags,
                          int64_t floor, sl_ev_receipt *out) {
    memset(out, 0, sizeof *out);
    if (!sl_name_valid(account) || sl_event_check(ev)) return SL_EINVAL;
    if (ev->data && strlen(ev->data) > SL_EV_DATA_MAX) return SL_ETOOBIG;
    if (ev->id[0]) {
        snprintf(out->id, sizeof out->id, "%s", ev->id);
    } else {
        unsigned char raw[16];
        int rc = sl_random_bytes(raw, sizeof raw);
        if (rc) return rc;
        sl_b64url_encode(raw, sizeof raw, out->id);
        return 1;
    }
    /* An id stored already: the same content is a match, other content a
     * conflict. A row not confirmed is an ingest that was cut or is under
     * way: this one stores the event again, at a new position. A row from
     * before the account was deleted is no longer there. */
    sl_result r;
    sl_result_init(&r);
    sl_val key[2] = {sl_vtext(account), sl_vtext(out->id)};
    int rc = sl_store_get(l->st, &sl_t_event, key, SL_READ_DEFAULT, &r);
    if (rc == 0 && r.rows[0].v[EV_CONFIRMED].set && r.rows[0].v[EV_CONFIRMED].i == 1 &&
        r.rows[0].v[EV_RECORDED].i >= floor) {
        out->outcome = same_content(&r.rows[0], ev, ev->ntags ? tags : NULL) ? SL_EV_MATCHED : SL_EV_CONFLICT;
        out->recorded_us = r.rows[0].v[EV_RECORDED].i;
        out->expires_us = r.rows[0].v[EV_EXPIRES].i;
        rc = 0;
    } else {
        rc = rc == 0 || rc == SL_ENOTFOUND ? 1 : rc;
    }
    sl_result_free(&r);
    return rc;
}

/* The embedded store's ingest of n events: every row confirmed, with its
 * index entries, in one commit, so nothing is ever unconfirmed after it. */
static int put_atomic(sl_evlog *l, const char *account, const sl_event *evs, size_t n, sl_ev_receipt *out) {
    int retention;
    int64_t floor;
    int rc = settings(l, account, &retention, &floor);
    if (rc) return rc;
    typedef char tagbuf[SL_EV_FILTER_MAX * (SL_EV_TAG_MAX + 1) + 1];
    tagbuf *tags = sl_malloc(n * sizeof *tags);
    ev_keys *keys = sl_malloc(n * sizeof *keys);
    stamp *st = sl_malloc(n * sizeof *st);
    sl_write *w = sl_malloc(n * EV_WRITES_MAX * sizeof *w);
    char *todo = sl_calloc(n, 1);
    rc = tags && keys && st && w && todo ? 0 : SL_ENOMEM;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        join_tags(&evs[i], tags[i]);
        int r = ingest_prepare(l, account, &evs[i], tags[i], floor, &out[i]);
        if (r < 0) rc = r;
        todo[i] = r == 1;
    }
    size_t nw = 0, stamped = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!todo[i]) continue;
        out[i].recorded_us = stamp_take(l, &st[i], floor);
        stamped = i + 1;
        nw += event_writes(l, account, out[i].id, &evs[i], evs[i].ntags ? tags[i] : NULL, retention,
                           out[i].recorded_us, 1, &keys[i], w + nw);
    }
    if (rc == 0 && nw) rc = apply_idempotent(l, w, nw);
    for (size_t i = 0; i < stamped; i++) {
        if (!todo[i]) continue;
        stamp_done(l, &st[i]);
        if (rc) continue;
        dirs_written(l, &keys[i], retention);
        out[i].outcome = SL_EV_CREATED;
        out[i].expires_us = out[i].recorded_us + (int64_t)retention * 1000000;
    }
    free(tags);
    free(keys);
    free(st);
    free(w);
    free(todo);
    return rc;
}

static int put_one(sl_evlog *l, const char *account, const sl_event *ev, sl_ev_receipt *out);

int sl_evlog_put_batch(sl_evlog *l, const char *account, const sl_event *evs, size_t n, sl_ev_receipt *out) {
    int64_t t0 = sl_latency_us();
    if (l->atomic) {
        int rc = put_atomic(l, account, evs, n, out);
        if (rc == 0) note_ingest(l, out, n, t0);
        return rc;
    }
    for (size_t i = 0; i < n; i++) {
        int rc = put_one(l, account, &evs[i], &out[i]);
        if (rc) {
            note_ingest(l, out, i, t0);
            return rc;
        }
    }
    note_ingest(l, out, n, t0);
    return 0;
}

int sl_evlog_put(sl_evlog *l, const char *account, const sl_event *ev, sl_ev_receipt *out) {
    return sl_evlog_put_batch(l, account, ev, 1, out);
}

static int put_one(sl_evlog *l, const char *account, const sl_event *ev, sl_ev_receipt *out) {
    char tags[SL_EV_FILTER_MAX * (SL_EV_TAG_MAX + 1) + 1];
    join_tags(ev, tags);
    int retention;
    int64_t floor;
    int rc = settings(l, account, &retention, &floor);
    if (rc) return rc;
    if ((rc = ingest_prepare(l, account, ev, tags, floor, out)) <= 0) return rc;
    sl_val key[2] = {sl_vtext(account), sl_vtext(out->id)};

    /* On Cassandra a reader on another node passes a position settle
     * after it was stamped, so the event must be confirmed by then. One
     * whose writes took over half of that is stored again at a new
     * position (DESIGN.md "Late writes"); readers skip its entries at the
     * old one, whose row names the new position. */
    int64_t us = 0;
    for (int attempt = 1;; attempt++) {
        stamp s;
        us = stamp_take(l, &s, floor);
        rc = write_unconfirmed(l, account, out->id, ev, ev->ntags ? tags : NULL, retention, us);
        int late = rc == 0 && l->settle_us > 0 && sl_now_us() - us > l->settle_us / 2;
        if (late && attempt < RESTAMP_MAX) {
            stamp_done(l, &s);
            sl_log(SL_INFO, "event %s/%s stored again at a new position: its writes took %lld ms", account,
                   out->id, (long long)((sl_now_us() - us) / 1000));
            continue;
        }
        if (late) rc = SL_ETIMEOUT;
        if (rc == 0) rc = confirm(l, key, retention);
        stamp_done(l, &s);
        break;
    }
    if (rc) return rc;
    out->outcome = SL_EV_CREATED;
    out->recorded_us = us;
    out->expires_us = us + (int64_t)retention * 1000000;
    return 0;
}

/* --- Reading one event --------------------------------------------------- */

void sl_stored_event_free(sl_stored_event *s) {
    sl_result_free(&s->r);
}

/* A text value of a row as a NUL-terminated string owned by r, or NULL
 * when it is not set (or, setting *rc, when there is no memory). */
static const char *owned_text(sl_result *r, const sl_val *v, int *rc) {
    if (!v->set || v->null) return NULL;
    char *s = sl_result_alloc(r, v->n + 1);
    if (!s) {
        *rc = SL_ENOMEM;
        return NULL;
    }
    memcpy(s, v->p, v->n);
    s[v->n] = '\0';
    return s;
}

int sl_evlog_get(sl_evlog *l, const char *account, const char *id, sl_stored_event *out) {
    memset(out, 0, sizeof *out);
    sl_result_init(&out->r);
    if (!sl_name_valid(account) || !sl_ev_id_valid(id)) return SL_ENOTFOUND;
    int retention;
    int64_t floor;
    int rc = settings(l, account, &retention, &floor);
    if (rc) return rc;
    sl_val key[2] = {sl_vtext(account), sl_vtext(id)};
    if ((rc = sl_store_get(l->st, &sl_t_event, key, SL_READ_DEFAULT, &out->r)) != 0) return rc;
    const sl_row *row = &out->r.rows[0];
    if (!row->v[EV_CONFIRMED].set || row->v[EV_CONFIRMED].i != 1 || !row->v[EV_TYPE].set ||
        row->v[EV_RECORDED].i < floor) {
        sl_result_free(&out->r);
        return SL_ENOTFOUND;
    }
    sl_event *ev = &out->ev;
    snprintf(ev->id, sizeof ev->id, "%s", id);
    if (sl_val_str(&row->v[EV_TYPE], ev->type, sizeof ev->type) < 0) rc = SL_EINTERNAL;
    char tags[SL_EV_FILTER_MAX * (SL_EV_TAG_MAX + 1) + 1];
    long n =
        row->v[EV_TAGS].set && !row->v[EV_TAGS].null ? sl_val_str(&row->v[EV_TAGS], tags, sizeof tags) : 0;
    if (n < 0) rc = SL_EINTERNAL;
    tags[n > 0 ? n : 0] = '\0';
    for (char *save, *t = strtok_r(tags, " ", &save); t && ev->ntags < SL_EV_FILTER_MAX;
         t = strtok_r(NULL, " ", &save))
        snprintf(ev->tags[ev->ntags++], sizeof ev->tags[0], "%s", t);
    ev->source = owned_text(&out->r, &row->v[EV_SOURCE], &rc);
    ev->subject = owned_text(&out->r, &row->v[EV_SUBJECT], &rc);
    ev->time = owned_text(&out->r, &row->v[EV_TIME], &rc);
    ev->datacontenttype = owned_text(&out->r, &row->v[EV_DCT], &rc);
    ev->metadata = owned_text(&out->r, &row->v[EV_META], &rc);
    ev->data = owned_text(&out->r, &row->v[EV_DATA], &rc);
    out->recorded_us = row->v[EV_RECORDED].i;
    out->expires_us = row->v[EV_EXPIRES].i;
    if (rc) sl_result_free(&out->r);
    return rc;
}
