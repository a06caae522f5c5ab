/* census.c: what the other Sluice nodes on a shared store (Cassandra) did
 * to each queue, so that every node's figures (ledger.c) count it without
 * reading the queue's messages.
 *
 * Each node, one incarnation of the process (a random key per engine
 * open), keeps for each queue it serves the messages its own operations
 * put into it (adds) and took out (removes), its operations in flight that
 * change the size (pending), the times its count went wrong (sus: an
 * outcome it cannot know, a purge, a retention end), and its in-flight and
 * delayed messages with the time the last of them becomes visible. Once a
 * second it writes the tallies that changed to its row of
 * tallies(qkey, node), and then its beat: tallies("#nodes", node).beat + 1.
 * A node's figures of a queue are its ledger, which a recount set from the
 * store at some moment (the cut), plus, for every other node, what that
 * node's adds - removes grew by since the cut, and the other nodes' in-flight
 * and delayed messages.
 *
 * A cut is consistent when no node changed the queue while it was read.
 * The recount waits until every live node beat twice since a first look at
 * the beats, so that its tallies hold all it finished before; reads them
 * (T1); reads the messages; waits again for two beats of every node; reads
 * them again (T2). The same tallies in T1 and T2, with nothing pending,
 * mean that nobody changed the queue meanwhile. Otherwise the recount is
 * tried again (and kept anyway after LG_FORCE_MS, as on one node).
 *
 * What the tallies cannot tell, a recount settles: another node's sus
 * grew; a node went silent (no beat for CS_SILENT_MS: killed, or paused,
 * and its last operations may not be written); a node that was silent at
 * the cut beats again (what it writes now may repeat what the cut read); a
 * node closed (cleanly: it wrote its last tallies and said so in its beat
 * row), whose invisible messages this node then counts itself. A recount
 * adopts the invisible messages that no live node counts, and drops what
 * this node knew of that the store shows visible or gone (reconcile in
 * ledger.c). A node's rows outlive it by CS_TTL_S and its beat by
 * CS_BEAT_TTL_S; the rows of a queue go with the queue. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "queue_int.h"

#define CS_FLUSH_MS 1000                   /* tallies and beat written this often */
#define CS_SILENT_MS 5000                  /* a node without a beat this long is silent */
#define CS_WAIT_MAX_MS 10000               /* a recount waits for beats this long at most */
#define CS_REWRITE_MS (24LL * 3600 * 1000) /* an unchanged tally is written again this often */
#define CS_TTL_S (7 * 24 * 3600)
#define CS_BEAT_TTL_S (24 * 3600)
#define CS_NODES "#nodes" /* no qkey looks like this (account names are [A-Za-z0-9-]) */
#define CS_MAX_PEERS 1024

const sl_table sl_t_tallies = {"tallies",
                               1,
                               1,
                               11,
                               {{"qkey", SL_TEXT},
                                {"node", SL_TEXT},
                                {"adds", SL_INT},
                                {"removes", SL_INT},
                                {"pending", SL_INT},
                                {"sus", SL_INT},
                                {"inflight", SL_INT},
                                {"delayed", SL_INT},
                                {"max_vis", SL_INT},
                                {"beat", SL_INT},
                                {"closed", SL_INT}},
                               0};

/* One node's tally of a queue, as a recount compares them. */
typedef struct {
    char node[CS_KEY_MAX];
    int64_t net, sus, pending;
    int64_t inflight, delayed, max_vis;
} cs_tally;

/* A beat as first seen by a recount's wait. */
typedef struct {
    char node[CS_KEY_MAX];
    int64_t beat;
} cs_beat;

struct cs_recount {
    int phase;      /* 1: waiting to read T1 and scan; 2: waiting to read T2 */
    int64_t since;  /* when the phase began */
    cs_beat *beats; /* the beats the phase waits past */
    size_t nbeats;
    cs_tally *t1;
    size_t nt1;
    lg_count count; /* the scan's */
    int64_t net_at; /* this node's adds - removes when it ended */
    int consistent; /* this node did not change the queue while it was read */
};

void cs_recount_free(struct cs_recount *rc) {
    if (!rc) return;
    free(rc->beats);
    free(rc->t1);
    lg_count_free(&rc->count);
    free(rc);
}

/* --- Beats ------------------------------------------------------------------ */

static struct cs_node *node_find(sl_engine *e, const char *key) {
    for (size_t i = 0; i < e->cs.nnodes; i++)
        if (strcmp(e->cs.nodes[i].node, key) == 0) return &e->cs.nodes[i];
    return NULL;
}

/* Killed or paused: no beat seen for CS_SILENT_MS, or none at all. */
static int silent(sl_engine *e, const char *key, int64_t now) {
    if (strcmp(key, e->cs.self) == 0) return 0;
    struct cs_node *n = node_find(e, key);
    return !n || (!n->closed && now - n->changed_ms > CS_SILENT_MS);
}

/* Reads every node's beat. */
static int read_beats(sl_engine *e, int64_t now) {
    sl_slice s = {0};
    s.t = &sl_t_tallies;
    s.pk[0] = sl_vtext(CS_NODES);
    s.limit = CS_MAX_PEERS;
    sl_result r;
    sl_result_init(&r);
    int rc = sl_store_slice(e->st, &s, &r);
    if (rc == 0) {
        /* A node whose beat row expired is gone (silent() says so). */
        size_t k = 0;
        for (size_t i = 0; i < e->cs.nnodes; i++) {
            int found = 0;
            for (size_t j = 0; j < r.n && !found; j++) {
                char key[CS_KEY_MAX];
                found = sl_val_str(&r.rows[j].v[T_NODE], key, sizeof key) >= 0 &&
                        strcmp(key, e->cs.nodes[i].node) == 0;
            }
            if (found) e->cs.nodes[k++] = e->cs.nodes[i];
        }
        e->cs.nnodes = k;
    }
    for (size_t i = 0; rc == 0 && i < r.n; i++) {
        char key[CS_KEY_MAX];
        if (sl_val_str(&r.rows[i].v[T_NODE], key, sizeof key) < 0 || strcmp(key, e->cs.self) == 0) continue;
        int64_t beat = r.rows[i].v[T_BEAT].i;
        struct cs_node *n = node_find(e, key);
        if (!n) {
            struct cs_node *m = realloc(e->cs.nodes, (e->cs.nnodes + 1) * sizeof *m);
            if (!m) {
                rc = SL_ENOMEM;
                break;
            }
            e->cs.nodes = m;
            n = &m[e->cs.nnodes++];
            memset(n, 0, sizeof *n);
            snprintf(n->node, sizeof n->node, "%s", key);
            n->changed_ms = now; /* alive until it is seen not to beat */
            n->beat = beat;
        }
        if (n->beat != beat) n->changed_ms = now;
        n->beat = beat;
        n->closed = r.rows[i].v[T_CLOSED].i != 0;
    }
    sl_result_free(&r);
    return rc;
}

/* The beats of the nodes alive now, read afresh: every node whose engine
 * opened before this call is there. */
static int snap_beats(sl_engine *e, int64_t now, cs_beat **out, size_t *n) {
    *out = NULL;
    *n = 0;
    int rc = read_beats(e, now);
    if (rc) return rc;
    cs_beat *b = calloc(e->cs.nnodes ? e->cs.nnodes : 1, sizeof *b);
    if (!b) return SL_ENOMEM;
    for (size_t i = 0; i < e->cs.nnodes; i++) {
        const struct cs_node *x = &e->cs.nodes[i];
        if (x->closed || silent(e, x->node, now)) continue;
        snprintf(b[*n].node, sizeof b[*n].node, "%s", x->node);
        b[(*n)++].beat = x->beat;
    }
    *out = b;
    return 0;
}

/* Every node of b beat twice since, or fell silent or closed: its tallies
 * now hold whatever it finished before b was read (the write of beat k+1
 * had not ended when k was read, and k+2's tallies were taken after it). */
static int beats_passed(sl_engine *e, const cs_beat *b, size_t n, int64_t now) {
    for (size_t i = 0; i < n; i++) {
        const struct cs_node *x = node_find(e, b[i].node);
        if (x && !x->closed && !silent(e, x->node, now) && x->beat < b[i].beat + 2) return 0;
    }
    return 1;
}

/* --- Tallies ---------------------------------------------------------------- */

static void tally_key(sl_write *w, const char *qkey, const char *node) {
    memset(w, 0, sizeof *w);
    w->t = &sl_t_tallies;
    w->kind = SL_W_UPSERT;
    w->row.v[T_QKEY] = sl_vtext(qkey);
    w->row.v[T_NODE] = sl_vtext(node);
}

static int write_beat(sl_engine *e, int closed) {
    sl_write w;
    tally_key(&w, CS_NODES, e->cs.self);
    w.row.v[T_BEAT] = sl_vint(++e->cs.beat);
    w.row.v[T_CLOSED] = sl_vint(closed);
    w.ttl = CS_BEAT_TTL_S;
    return sl_store_apply(e->st, &w, 1, NULL);
}

/* Writes q's tally if it changed (or is due again); 0 or a store error. */
static int flush_queue(sl_engine *e, qstate *q, int64_t now) {
    struct ledger *l = &q->lg;
    int64_t v[7] = {0}, known; /* adds, removes, pending, sus, inflight, delayed, max_vis: T_ADDS.. */
    pthread_mutex_lock(&l->mu);
    v[0] = l->adds;
    v[1] = l->removes;
    v[2] = l->pending;
    v[3] = l->sus;
    lg_own_invisible(l, now, &v[4], &v[5], &v[6], &known);
    int same = memcmp(v, l->pub, sizeof v) == 0 && now - l->pub_ms < CS_REWRITE_MS;
    int never = l->pub_ms == 0 && !v[0] && !v[1] && !v[2] && !v[3] && !v[4] && !v[5];
    pthread_mutex_unlock(&l->mu);
    if (same || never) return 0;
    sl_write w;
    tally_key(&w, q->qkey, e->cs.self);
    for (int k = 0; k < 7; k++)
        w.row.v[T_ADDS + k] = sl_vint(v[k]);
    w.ttl = CS_TTL_S;
    int rc = sl_store_apply(e->st, &w, 1, NULL);
    if (rc == 0) {
        pthread_mutex_lock(&l->mu);
        memcpy(l->pub, v, sizeof v);
        l->pub_ms = now;
        pthread_mutex_unlock(&l->mu);
    }
    return rc;
}

/* The other nodes' tallies of q, read afresh: *out (free it) holds *n. */
static int read_tallies(sl_engine *e, qstate *q, cs_tally **out, size_t *n) {
    *out = NULL;
    *n = 0;
    sl_slice s = {0};
    s.t = &sl_t_tallies;
    s.pk[0] = sl_vtext(q->qkey);
    s.limit = CS_MAX_PEERS;
    sl_result r;
    sl_result_init(&r);
    int rc = sl_store_slice(e->st, &s, &r);
    cs_tally *t = rc == 0 ? calloc(r.n ? r.n : 1, sizeof *t) : NULL;
    if (rc == 0 && !t) rc = SL_ENOMEM;
    for (size_t i = 0; rc == 0 && i < r.n; i++) {
        const sl_row *x = &r.rows[i];
        if (sl_val_str(&x->v[T_NODE], t[*n].node, sizeof t[*n].node) < 0 ||
            strcmp(t[*n].node, e->cs.self) == 0)
            continue;
        t[*n].net = x->v[T_ADDS].i - x->v[T_REMOVES].i;
        t[*n].sus = x->v[T_SUS].i;
        t[*n].pending = x->v[T_PENDING].i;
        t[*n].inflight = x->v[T_INFLIGHT].i;
        t[*n].delayed = x->v[T_DELAYED].i;
        t[(*n)++].max_vis = x->v[T_MAXVIS].i;
    }
    sl_result_free(&r);
    *out = t;
    return rc;
}

static const cs_tally *tally_find(const cs_tally *t, size_t n, const char *node) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].node, node) == 0) return &t[i];
    return NULL;
}

/* Nobody changed the queue between the two readings, nor was in the midst
 * of it at either. */
static int same_tallies(const cs_tally *a, size_t na, const cs_tally *b, size_t nb) {
    static const cs_tally none = {"", 0, 0, 0, 0, 0, 0};
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < (pass ? nb : na); i++) {
            const cs_tally *x = pass ? &b[i] : &a[i];
            const cs_tally *y = tally_find(pass ? a : b, pass ? na : nb, x->node);
            if (!y) y = &none;
            if (x->net != y->net || x->sus != y->sus || x->pending || y->pending) return 0;
        }
    return 1;
}

static cs_peer *peer_get(struct ledger *l, const char *node) {
    for (size_t i = 0; i < l->npeers; i++)
        if (strcmp(l->peers[i].node, node) == 0) return &l->peers[i];
    if (l->npeers >= CS_MAX_PEERS) return NULL;
    cs_peer *p = realloc(l->peers, (l->npeers + 1) * sizeof *p);
    if (!p) return NULL;
    l->peers = p;
    p = &p[l->npeers++];
    memset(p, 0, sizeof *p); /* a node new since the cut: all it did is new */
    snprintf(p->node, sizeof p->node, "%s", node);
    return p;
}

static int live(sl_engine *e, const char *key, int64_t now) {
    struct cs_node *n = node_find(e, key);
    return n && !n->closed && !silent(e, key, now);
}

/* Takes the tallies t into q's peers (under q->lg.mu). */
static void peers_take(sl_engine *e, struct ledger *l, const cs_tally *t, size_t n, int64_t now) {
    for (size_t i = 0; i < n; i++) {
        cs_peer *p = peer_get(l, t[i].node);
        if (!p) break;
        if (p->net != t[i].net) l->peers_gen++;
        p->net = t[i].net;
        p->sus = t[i].sus;
        p->inflight = t[i].inflight;
        p->delayed = t[i].delayed;
        p->max_vis = t[i].max_vis;
    }
    for (size_t i = 0; i < l->npeers; i++)
        l->peers[i].live = live(e, l->peers[i].node, now);
}

/* Reads the other nodes' tallies of q into its ledger. */
static void refresh_queue(sl_engine *e, qstate *q, int64_t now) {
    cs_tally *t;
    size_t n;
    if (read_tallies(e, q, &t, &n) == 0) {
        pthread_mutex_lock(&q->lg.mu);
        peers_take(e, &q->lg, t, n, now);
        pthread_mutex_unlock(&q->lg.mu);
    }
    free(t);
}

/* --- The node's life ---------------------------------------------------------- */

void cs_open(sl_engine *e) {
    unsigned char b[8];
    sl_random_bytes(b, sizeof b);
    for (int i = 0; i < 8; i++)
        snprintf(e->cs.self + 2 * i, 3, "%02x", b[i]);
    /* Before the node serves anything: a recount elsewhere that reads the
     * beats after this waits for this node's tallies too. */
    if (e->st->type->shared && write_beat(e, 0) != 0)
        sl_log(SL_ERR, "census: the first beat was not written; other nodes see this one from its next");
}

/* Every CS_FLUSH_MS: this node's tallies, then its beat (after them: a
 * beat seen means the tallies before it are there), then the others'. */
static void flush_all(sl_engine *e, int64_t now, int closed, int refresh) {
    size_t n;
    qstate **qs = eng_hold_queues(e, &n, NULL);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = flush_queue(e, qs[i], now);
    if (rc == 0) rc = write_beat(e, closed);
    if (rc) sl_log(SL_INFO, "census: tallies not written: %s", sl_strerror(rc));
    if (refresh && read_beats(e, now) == 0)
        for (size_t i = 0; i < n && !__atomic_load_n(&e->stopping, __ATOMIC_ACQUIRE); i++)
            refresh_queue(e, qs[i], now);
    eng_release_queues(e, qs, n);
}

void cs_tick(sl_engine *e, int64_t now) {
    if (!e->st->type->shared || now - e->cs.flush_ms < CS_FLUSH_MS) return;
    e->cs.flush_ms = now;
    flush_all(e, now, 0, 1);
}

void cs_close(sl_engine *e) {
    if (e->st->type->shared) flush_all(e, sl_now_ms(), 1, 0);
    free(e->cs.nodes);
    e->cs.nodes = NULL;
    e->cs.nnodes = 0;
}

/* --- Recounts ----------------------------------------------------------------- */

/* What the tallies cannot follow since the cut: a node's count went wrong,
 * or a node fell silent or came back. */
static int census_due(sl_engine *e, qstate *q, int64_t now) {
    int due = 0;
    pthread_mutex_lock(&q->lg.mu);
    for (size_t i = 0; i < q->lg.npeers && !due; i++) {
        const cs_peer *p = &q->lg.peers[i];
        due =
            p->sus != p->sus_cut || silent(e, p->node, now) != p->silent_cut ||
            (p->live_cut && !live(e, p->node, now)); /* closed: its invisible messages are this node's now */
    }
    pthread_mutex_unlock(&q->lg.mu);
    return due;
}

static void drop(qstate *q) {
    cs_recount_free(q->lg.rc);
    q->lg.rc = NULL;
    lg_count_abandon(q);
}

void cs_recount_step(sl_engine *e, qstate *q, int64_t now, int due, int quiet, int force) {
    struct cs_recount *rc = q->lg.rc;
    if (!rc) {
        if (!(due || census_due(e, q, now)) || !(quiet || force)) return;
        if (!(rc = calloc(1, sizeof *rc))) return;
        if (snap_beats(e, now, &rc->beats, &rc->nbeats) != 0) {
            cs_recount_free(rc);
            return;
        }
        rc->phase = 1;
        rc->since = now;
        q->lg.rc = rc;
        return;
    }
    if (!beats_passed(e, rc->beats, rc->nbeats, now) && now - rc->since < CS_WAIT_MAX_MS) return;
    cs_tally *t;
    size_t nt;
    if (read_tallies(e, q, &t, &nt) != 0) {
        free(t);
        drop(q);
        return;
    }
    if (rc->phase == 1) {
        struct ledger *l = &q->lg;
        pthread_mutex_lock(&l->mu);
        uint64_t seq = l->seq;
        int idle = l->pending == 0;
        pthread_mutex_unlock(&l->mu);
        rc->t1 = t;
        rc->nt1 = nt;
        if (lg_count_scan(e, q, now, &rc->count) != 0) {
            drop(q);
            return;
        }
        pthread_mutex_lock(&l->mu);
        rc->consistent = idle && l->pending == 0 && l->seq == seq;
        rc->net_at = l->adds - l->removes;
        pthread_mutex_unlock(&l->mu);
        free(rc->beats);
        if ((!rc->consistent && !force) || snap_beats(e, now, &rc->beats, &rc->nbeats) != 0) {
            rc->beats = NULL;
            drop(q);
            return;
        }
        rc->phase = 2;
        rc->since = now;
        return;
    }
    int consistent = rc->consistent && same_tallies(rc->t1, rc->nt1, t, nt);
    if (consistent || force) {
        /* The cut: T2 is what the count holds of every other node, and the
         * live ones' invisible messages are theirs to count. */
        int64_t inflight = 0, delayed = 0;
        for (size_t i = 0; i < nt; i++)
            if (live(e, t[i].node, now) && t[i].max_vis > now) {
                inflight += t[i].inflight;
                delayed += t[i].delayed;
            }
        pthread_mutex_lock(&q->lg.mu);
        lg_install_locked(e, &q->lg, &rc->count, now, rc->net_at, consistent, inflight, delayed);
        peers_take(e, &q->lg, t, nt, now);
        for (size_t i = 0; i < q->lg.npeers; i++) {
            cs_peer *p = &q->lg.peers[i];
            p->net_cut = p->net;
            p->sus_cut = p->sus;
            p->silent_cut = silent(e, p->node, now);
            p->live_cut = p->live;
        }
        pthread_mutex_unlock(&q->lg.mu);
    }
    free(t);
    drop(q);
}
