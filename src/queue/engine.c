/* engine.c: the engine's life: its tables, accounts, the poller and the
 * background threads, open and close. Its nouns live in files of their own:
 * cas.c, qstate.c, watch.c; messages in message.c, receipt.c, ids.c,
 * lease.c, reader.c, fresh.c, move.c, op.c; queues in queue.c; the repair
 * worker in repair.c. */
#include <stdio.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>

#include "queue_int.h"

const sl_table sl_t_queues = {"queues",
                              1,
                              1,
                              8,
                              {{"account", SL_TEXT},
                               {"name", SL_TEXT},
                               {"version", SL_INT},
                               {"status", SL_INT},
                               {"opts", SL_TEXT},
                               {"created", SL_INT},
                               {"nonce", SL_INT},
                               {"secret", SL_BLOB}},
                              0};
const sl_table sl_t_queue_index = {"queue_index",
                                   1,
                                   1,
                                   6,
                                   {{"shard", SL_INT},
                                    {"qkey", SL_TEXT},
                                    {"account", SL_TEXT},
                                    {"name", SL_TEXT},
                                    {"status", SL_INT},
                                    {"bsize", SL_INT}},
                                   0};
const sl_table sl_t_monoton = {"monoton", 1, 0, 3, {{"qkey", SL_TEXT}, {"next", SL_INT}, {"nonce", SL_INT}},
                               0};
const sl_table sl_t_pointers = {
    "pointers", 1, 1, 4, {{"qkey", SL_TEXT}, {"name", SL_TEXT}, {"value", SL_INT}, {"nonce", SL_INT}}, 0};
const sl_table sl_t_messages = {"messages",
                                2,
                                1,
                                17,
                                {{"qkey", SL_TEXT},
                                 {"bucket", SL_INT},
                                 {"id", SL_INT},
                                 {"mid", SL_TEXT},
                                 {"body", SL_BLOB},
                                 {"attrs", SL_TEXT},
                                 {"tag", SL_TEXT},
                                 {"put_ms", SL_INT},
                                 {"exp_ms", SL_INT},
                                 {"visible_ms", SL_INT},
                                 {"version", SL_INT},
                                 {"dcount", SL_INT},
                                 {"state", SL_INT},
                                 {"nonce", SL_INT},
                                 {"dest", SL_TEXT},
                                 {"put_vis", SL_INT},
                                 {"first_ms", SL_INT}},
                                SL_TABLE_EXPIRY_BY_PARTITION};
const sl_table sl_t_leases = {
    "leases",
    2,
    2,
    5,
    {{"qkey", SL_TEXT}, {"minute", SL_INT}, {"due", SL_INT}, {"id", SL_INT}, {"version", SL_INT}},
    0};
const sl_table sl_t_counters = {
    "counters", 1, 1, 4, {{"qkey", SL_TEXT}, {"name", SL_TEXT}, {"value", SL_INT}, {"nonce", SL_INT}}, 0};
const sl_table sl_t_repair_lease = {
    "repair_lease", 1, 0, 3, {{"qkey", SL_TEXT}, {"owner", SL_TEXT}, {"nonce", SL_INT}}, 0};

static const sl_table *const all_tables[] = {
    &sl_t_queues,     &sl_t_queue_index, &sl_t_monoton,      &sl_t_pointers,    &sl_t_messages,
    &sl_t_leases,     &sl_t_counters,    &sl_t_repair_lease, &sl_t_fifo_groups, &sl_t_fifo_log,
    &sl_t_fifo_dedup, &sl_t_fifo_busy,   &sl_t_tallies};

const sl_table *const *sl_engine_tables(size_t *n) {
    *n = sizeof all_tables / sizeof all_tables[0];
    return all_tables;
}

/* Writes the deferred lease entries of every queue whose time came, or all
 * of them (at close). Only this thread (the poller, or close once the
 * poller stopped) frees qstates, and new ones are added at the head, so the
 * list is walked from a head read under the lock. */
static void flush_lease_entries(sl_engine *e, int all) {
    pthread_mutex_lock(&e->mu);
    qstate *head = e->queues;
    pthread_mutex_unlock(&e->mu);
    for (qstate *q = head; q; q = q->next) msg_lease_flush(e, q, all ? INT64_MAX : sl_now_ms(), all);
}

/* The poller wakes watchers for what this node cannot see happen: a put on
 * another node, and leases that ran out. It checks only queues that have
 * watchers, every 200 ms, with a few bounded reads (msg_has_visible), and
 * wakes the waiters only when there is something to receive. */
static void *poller_main(void *arg) {
    sl_thread_name("sl-poller");
    sl_engine *e = arg;
    pthread_mutex_lock(&e->mu);
    while (!e->stopping) {
        sl_cond_wait_ms(&e->wake, &e->mu, 200);
        if (e->stopping) break;
        /* Collect the distinct queues with watchers (a few; bounded), each
         * held while it is looked at: its watch may be fired meanwhile. */
        qstate *qs[64];
        int nq = 0;
        for (sl_watch *w = e->watches; w && nq < 64; w = w->next) {
            int seen = 0;
            for (int i = 0; i < nq; i++) seen |= qs[i] == w->q;
            if (!seen) qs[nq++] = w->q;
        }
        for (int i = 0; i < nq; i++)
            qs[i]->users++;
        pthread_mutex_unlock(&e->mu);
        for (int i = 0; i < nq; i++) {
            qstate *q = qs[i];
            int wake = q->dead || msg_has_visible(e, q);
            if (wake) eng_notify(e, q);
            eng_queue_release(e, q);
        }
        eng_fire(e, NULL, 1, sl_now_ms());
        flush_lease_entries(e, 0);
        eng_queue_reap(e, 0);
        pthread_mutex_lock(&e->mu);
    }
    pthread_mutex_unlock(&e->mu);
    return NULL;
}

/* --- Background work ----------------------------------------------------- */

/* One pass of background work: the repair worker of every active queue
 * whose poll interval has passed, and the deletion of deleted queues. */
int sl_engine_tick(sl_engine *e) {
    sl_slice s = {0};
    s.t = &sl_t_queue_index;
    s.pk[0] = sl_vint(0);
    s.limit = 1000;
    int64_t now = sl_now_ms();
    cs_tick(e, now); /* before the recounts: they look at the other nodes' beats */
    char last[QKEY_MAX] = "";
    for (;;) {
        sl_result r;
        sl_result_init(&r);
        int rc = sl_store_slice(e->st, &s, &r);
        if (rc) {
            sl_result_free(&r);
            return rc;
        }
        for (size_t i = 0; i < r.n && !e->stopping; i++) {
            sl_row *row = &r.rows[i];
            char qkey[QKEY_MAX], account[SL_NAME_MAX + 1], name[SL_NAME_MAX + 1];
            sl_val_str(&row->v[QI_QKEY], qkey, sizeof qkey);
            sl_val_str(&row->v[QI_ACCOUNT], account, sizeof account);
            sl_val_str(&row->v[QI_NAME], name, sizeof name);
            snprintf(last, sizeof last, "%s", qkey);
            if (row->v[QI_STATUS].i == Q_DELETED) {
                repair_delete_queue(e, qkey, row->v[QI_BSIZE].i);
                continue;
            }
            qstate *q;
            if (eng_queue(e, account, name, &q) != 0 || strcmp(q->qkey, qkey) != 0) continue;
            if (q->repair_next_ms <= now) {
                q->repair_next_ms = now + (int64_t)q->opts.repair_poll_s * 1000;
                rc = repair_queue(e, q);
                if (rc && rc != SL_ENOTFOUND) sl_log(SL_INFO, "repair of %s: %s", qkey, sl_strerror(rc));
            }
            lg_maintain(e, q, now); /* after the repair, which may move messages */
        }
        int more = r.more;
        sl_result_free(&r);
        if (!more || !last[0]) break;
        s.from[0] = sl_vtext(last);
        s.nfrom = 1;
        s.from_excl = 1;
    }
    return 0;
}

static void *bg_main(void *arg) {
    sl_thread_name("sl-background");
    sl_engine *e = arg;
    while (!__atomic_load_n(&e->stopping, __ATOMIC_ACQUIRE)) {
        sl_engine_tick(e);
        for (int i = 0; i < 5 && !__atomic_load_n(&e->stopping, __ATOMIC_ACQUIRE); i++) usleep(100 * 1000);
    }
    return NULL;
}

int sl_engine_open(sl_store *st, const sl_engine_config *cfg, sl_engine **out) {
    /* The whole schema in one call: the engine's tables and the account
     * module's, which it stands on. */
    enum { NOWN = sizeof all_tables / sizeof all_tables[0], NMAX = NOWN + 16 };
    const sl_table *tables[NMAX];
    size_t n = NOWN;
    if (!cfg || !cfg->accounts || sl_acct_ntables > NMAX - NOWN) return SL_EINVAL;
    memcpy(tables, all_tables, sizeof all_tables);
    for (size_t i = 0; i < sl_acct_ntables; i++) tables[n++] = sl_acct_tables[i];
    int rc = sl_store_ensure(st, tables, n);
    if (rc) return rc;
    sl_engine *e = sl_calloc(1, sizeof *e);
    if (!e) return SL_ENOMEM;
    e->st = st;
    e->epoch = sl_store_epoch(st);
    e->cfg = *cfg;
    if (e->cfg.lease_grace_ms <= 0) e->cfg.lease_grace_ms = 2000;
    if (!e->cfg.node_id[0]) {
        unsigned char b[8];
        sl_random_bytes(b, sizeof b);
        for (int i = 0; i < 8; i++) snprintf(e->cfg.node_id + 2 * i, 3, "%02x", b[i]);
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->wake, NULL);
    pthread_cond_init(&e->claim_cv, NULL);
    cs_open(e);
    if (pthread_create(&e->poller, NULL, poller_main, e) != 0) {
        free(e);
        return SL_ENOMEM;
    }
    if (pthread_create(&e->claimer, NULL, msg_claimer_main, e) != 0) {
        pthread_mutex_lock(&e->mu);
        e->stopping = 1;
        pthread_cond_broadcast(&e->wake);
        pthread_mutex_unlock(&e->mu);
        pthread_join(e->poller, NULL);
        free(e);
        return SL_ENOMEM;
    }
    if (e->cfg.background) {
        if (pthread_create(&e->bg, NULL, bg_main, e) == 0) e->bg_started = 1;
    }
    *out = e;
    return 0;
}

qstate **eng_hold_queues(sl_engine *e, size_t *n, int *oom) {
    *n = 0;
    pthread_mutex_lock(&e->mu);
    size_t cap = 0;
    for (qstate *q = e->queues; q; q = q->next)
        cap += !q->dead;
    qstate **qs = cap ? malloc(cap * sizeof *qs) : NULL;
    if (cap && !qs && oom) *oom = 1;
    for (qstate *q = e->queues; q && qs && *n < cap; q = q->next)
        if (!q->dead) {
            q->users++;
            qs[(*n)++] = q;
        }
    pthread_mutex_unlock(&e->mu);
    return qs;
}

void eng_release_queues(sl_engine *e, qstate **qs, size_t n) {
    pthread_mutex_lock(&e->mu);
    for (size_t i = 0; i < n; i++)
        qs[i]->users--;
    pthread_mutex_unlock(&e->mu);
    free(qs);
}

int sl_engine_ping(sl_engine *e) {
    return sl_store_ping(e->st);
}

void sl_queue_note_receive(sl_engine *e, const char *account, const char *queue, size_t n) {
    pthread_mutex_lock(&e->mu);
    for (qstate *q = e->queues; q; q = q->next) {
        if (q->dead || strcmp(q->account, account) != 0 || strcmp(q->name, queue) != 0) continue;
        sl_count(&q->m.receives, 1);
        if (n == 0) sl_count(&q->m.empty_receives, 1);
        break;
    }
    pthread_mutex_unlock(&e->mu);
}

void sl_engine_metrics(sl_engine *e, sl_text *t) {
    static const struct {
        const char *name, *help;
        size_t off;
    } fam[] = {
        {"sluice_queue_puts_total", "Messages put (a FIFO queue's duplicates not counted).",
         offsetof(qstate, m.puts)},
        {"sluice_queue_deliveries_total", "Messages handed to receivers (leased).",
         offsetof(qstate, m.deliveries)},
        {"sluice_queue_redeliveries_total", "Deliveries of a message received before (its lease ran out).",
         offsetof(qstate, m.redeliveries)},
        {"sluice_queue_acks_total", "Messages acked (deleted) with a current receipt.",
         offsetof(qstate, m.acks)},
        {"sluice_queue_dead_letters_total",
         "Messages moved to the dead-letter queue by this queue's receives.",
         offsetof(qstate, m.dead_letters)},
        {"sluice_queue_receives_total", "Receive calls answered (a long poll counts once).",
         offsetof(qstate, m.receives)},
        {"sluice_queue_empty_receives_total", "Receive calls answered with no message.",
         offsetof(qstate, m.empty_receives)},
    };
    pthread_mutex_lock(&e->mu);
    for (size_t f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        sl_metric_head(t, fam[f].name, "counter", fam[f].help);
        for (qstate *q = e->queues; q; q = q->next)
            if (!q->dead)
                sl_text_printf(
                    t, "%s{account=\"%s\",queue=\"%s\"} %llu\n", fam[f].name, q->account, q->name,
                    (unsigned long long)sl_counted((const uint64_t *)((const char *)q + fam[f].off)));
    }
    /* The depth, from memory (ledger.c), of the queues recounted since
     * they were loaded. Reading a queue's figures walks its table of
     * invisible messages, which can be large: the queues are held and e->mu
     * let go meanwhile, so that no request waits on it for a scrape. */
    pthread_mutex_unlock(&e->mu);
    size_t nq;
    int oom = 0;
    qstate **qs = eng_hold_queues(e, &nq, &oom);
    if (oom) t->oom = 1;
    lg_fig *fig = nq ? calloc(nq, sizeof *fig) : NULL;
    int64_t now = sl_now_ms();
    for (size_t i = 0; i < nq && fig; i++)
        lg_figures(qs[i], now, &fig[i]);
    static const char *const states[] = {"visible", "in_flight", "delayed"};
    sl_metric_head(t, "sluice_queue_messages", "gauge",
                   "Messages in the queue by state (visible, in_flight, delayed), kept by this node's "
                   "operations and recounted from the store when something escaped them.");
    for (size_t i = 0; i < nq && fig; i++) {
        if (!fig[i].counted) continue;
        int64_t v[3] = {fig[i].visible, fig[i].in_flight, fig[i].delayed};
        for (int k = 0; k < 3; k++)
            sl_text_printf(t, "sluice_queue_messages{account=\"%s\",queue=\"%s\",state=\"%s\"} %lld\n",
                           qs[i]->account, qs[i]->name, states[k], (long long)v[k]);
    }
    sl_metric_head(t, "sluice_queue_oldest_message_age_seconds", "gauge",
                   "Age of the oldest message in the queue, 0 when it is empty.");
    for (size_t i = 0; i < nq && fig; i++)
        if (fig[i].counted)
            sl_text_printf(t, "sluice_queue_oldest_message_age_seconds{account=\"%s\",queue=\"%s\"} %lld\n",
                           qs[i]->account, qs[i]->name, (long long)fig[i].oldest_age_s);
    if (nq && !fig) t->oom = 1;
    free(fig);
    eng_release_queues(e, qs, nq);
    sl_metric_head(
        t, "sluice_engine_cas_total", "counter",
        "Compare-and-sets (leases, acks, moves, pointers) by outcome: applied, not_applied (the row "
        "changed first: another receiver, a stale receipt), error (the store failed).");
    static const char *const outcomes[] = {"applied", "not_applied", "error"};
    for (int k = 0; k < 3; k++)
        sl_text_printf(t, "sluice_engine_cas_total{outcome=\"%s\"} %llu\n", outcomes[k],
                       (unsigned long long)sl_counted(&e->cas_outcome[k]));
    sl_metric_head(t, "sluice_engine_cas_rounds_total", "counter",
                   "Conditional requests sent to the store for them: a combined batch counts once (one Paxos "
                   "round on Cassandra).");
    sl_text_printf(t, "sluice_engine_cas_rounds_total %llu\n",
                   (unsigned long long)sl_counted(&e->cas_rounds));
    sl_metric_head(t, "sluice_engine_cas_unknown_total", "counter",
                   "Compare-and-sets whose outcome was unknown (a timeout), resolved by reading the row.");
    sl_text_printf(t, "sluice_engine_cas_unknown_total %llu\n",
                   (unsigned long long)sl_counted(&e->cas_unknown));
}

void sl_engine_close(sl_engine *e) {
    if (!e) return;
    pthread_mutex_lock(&e->mu);
    __atomic_store_n(&e->stopping, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&e->wake);
    pthread_cond_signal(&e->claim_cv);
    pthread_mutex_unlock(&e->mu);
    pthread_join(e->poller, NULL);
    if (e->bg_started) pthread_join(e->bg, NULL);
    pthread_join(e->claimer, NULL); /* after the puts waiting for ids are served */
    /* Move tasks see stopping at their next message and record that. */
    pthread_mutex_lock(&e->mu);
    while (e->movers > 0)
        pthread_cond_wait(&e->wake, &e->mu);
    pthread_mutex_unlock(&e->mu);
    /* Wake whoever still waits, so no watch outlives the engine. */
    eng_fire(e, NULL, 0, 0);
    flush_lease_entries(e, 1);
    cs_close(e); /* the last tallies, marked closed: no node recounts for this one */
    eng_queue_reap(e, 1);
    pthread_cond_destroy(&e->wake);
    pthread_cond_destroy(&e->claim_cv);
    pthread_mutex_destroy(&e->mu);
    free(e);
}
