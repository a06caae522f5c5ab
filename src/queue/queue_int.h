/* queue_int.h: what the engine's files share. Not part of the interface.
 *
 * Storage layout (version 1). Every table is partitioned so that no
 * partition grows without bound; qkey is "account/name/version", so a queue
 * that is deleted and created again starts on fresh partitions.
 *
 *   accounts    (name)                 created
 *   queues      (account) name         version status opts created nonce
 *                                      secret (16 random bytes per incarnation:
 *                                      the key of its pop receipts' MAC)
 *   queue_index (shard) qkey           account name status bsize [work list]
 *   monoton     (qkey)                 next nonce             [id blocks]
 *   pointers    (qkey) name            value nonce            [reader, repair, purge, lease]
 *   messages    ((qkey, bucket)) id    mid body attrs tag put_ms exp_ms put_vis
 *                                      | visible_ms version dcount state
 *                                      nonce dest
 *               the row id = -1 of a bucket is its seal marker: state
 *               SEALED or FINALIZED, put_ms = when it was sealed.
 *               A put writes the columns left of the bar, with a plain
 *               write; only compare-and-sets write those right of it
 *               (msg_norm reads a row that has none of them yet: READY,
 *               or WAITING until put_vis when the put was delayed). On
 *               Cassandra a plain write whose first attempt landed late
 *               (after a retry succeeded and the message was leased and
 *               acked) so rewrites only what it wrote before, with the
 *               same values, and can never undo a lease or an ack
 *               (store.h, "Timestamps").
 *   leases      ((qkey, minute)) due id   version     [when a waiting
 *               message becomes visible: leases, delays, returns]
 *   counters    (qkey) name            value nonce
 *   repair_lease(qkey)                 owner nonce    [TTL: repair ownership]
 *   tallies     (qkey) node            adds removes pending sus inflight
 *                                      delayed max_vis beat closed
 *               [TTL; shared stores only: each node's own counts of a
 *               queue, and in the partition "#nodes" each node's beat
 *               (census.c)]
 *
 * A message's id is claimed from monoton in blocks of one bucket
 * (bucket_size ids, bucket-aligned), so a put is one plain write in steady
 * state and each bucket is written by one node. Message state transitions
 * are compare-and-sets on (version, state); every CAS writes a fresh random
 * nonce so that an outcome-unknown CAS is resolved by reading the row back at
 * SERIAL consistency. */
#ifndef SL_QUEUE_INT_H
#define SL_QUEUE_INT_H

#include <jansson.h>
#include <pthread.h>

#include "../util/fiber.h"
#include "queue.h"

/* Message states. */
enum {
    MS_READY = 0,    /* visible, never leased since written: found by the bucket scan */
    MS_WAITING = 1,  /* invisible until visible_ms: leased, delayed or returned;
                        tracked by an entry in leases */
    MS_ACKED = 2,
    MS_MOVING = 3,   /* being copied to dest; repair or the mover completes it */
    MS_MOVED = 4,    /* copied elsewhere (republished or redriven) */
    MS_DEAD = 5,     /* copied to the dead-letter queue */
    MS_SEALED = 10,  /* marker row: bucket sealed */
    MS_FINAL = 11    /* marker row: bucket finalized */
};

enum { Q_ACTIVE = 0, Q_DELETED = 1 };

/* Column indexes of the tables, matching the sl_table definitions. */
enum { ACC_NAME, ACC_CREATED };
enum { QU_ACCOUNT, QU_NAME, QU_VERSION, QU_STATUS, QU_OPTS, QU_CREATED, QU_NONCE, QU_SECRET };
enum { QI_SHARD, QI_QKEY, QI_ACCOUNT, QI_NAME, QI_STATUS, QI_BSIZE };
enum { MO_QKEY, MO_NEXT, MO_NONCE };
enum { PT_QKEY, PT_NAME, PT_VALUE, PT_NONCE };
enum {
    M_QKEY,
    M_BUCKET,
    M_ID,
    M_MID,
    M_BODY,
    M_ATTRS,
    M_TAG,
    M_PUT,
    M_EXP,
    M_VISIBLE,
    M_VERSION,
    M_DCOUNT,
    M_STATE,
    M_NONCE,
    M_DEST,
    M_PUTVIS,
    M_FIRST
};
enum { L_QKEY, L_MINUTE, L_DUE, L_ID, L_VERSION };
enum { C_QKEY, C_NAME, C_VALUE, C_NONCE };
enum { R_QKEY, R_OWNER, R_NONCE };
enum {
    T_QKEY,
    T_NODE,
    T_ADDS,
    T_REMOVES,
    T_PENDING,
    T_SUS,
    T_INFLIGHT,
    T_DELAYED,
    T_MAXVIS,
    T_BEAT,
    T_CLOSED
};

extern const sl_table sl_t_queues, sl_t_queue_index, sl_t_monoton, sl_t_pointers, sl_t_messages, sl_t_leases,
    sl_t_counters, sl_t_repair_lease, sl_t_tallies;

#define QKEY_MAX (2 * SL_NAME_MAX + 24)
#define READ_WINDOW 8          /* non-empty buckets the reader looks ahead of its pointer */
/* How long a finalized bucket is kept after it was sealed before the repair
 * worker deletes it (repair.c, gc_run): a move that a crash cut, completed
 * later, looks at its slot there (move.c, late_slot). Two minutes cover a
 * restart, the finalize timeout and another node taking over the repair
 * lease; a move completed later still loses nothing (it may duplicate).
 * The price: a queue keeps two minutes of finalized rows on disk. */
#define GC_DELAY_MS (2 * 60 * 1000)
/* Poller passes (200 ms each: a minute) a dead qstate is kept, unheld:
 * longer than any call that looked it up takes (store requests time out in
 * seconds). Counted in passes, not time, so that a process stopped and
 * resumed does not free one under a call that was stopped with it. */
#define QSTATE_REAP_PASSES 300
#define READ_SCAN_MAX 64       /* buckets it reads at most to find them */
#define SEAL_BATCH 16          /* buckets a refill notes for sealing at most */
#define LEASE_SWEEP_MS 5000    /* how often the durable lease cursor is saved */
#define LEASE_SCAN_MINUTES 120 /* lease partitions one scan walks at most */
#define MAX_CANDIDATES 256
#define SEEN_RING 64
#define MAX_CLAIMED 1024
#define FRESH_MAX 1024            /* READY rows a queue's pool holds at most */
#define FRESH_BYTES (4 << 20)     /* and their size at most */
#define FRESH_TARGET 256          /* a refill reads on until it found this many */
#define FRESH_IDLE_MS 50          /* see fresh_dirty */
#define CAS_SLOTS 8               /* combiners per queue, by partition (eng_cas_submit) */
#define CAS_ROUND_MAX 8           /* batches (partitions) in one round of a combiner */
#define CLAIM_MAX_BUCKETS 16      /* an id block spans this many buckets at most */
#define CLAIM_UNUSED (INT64_MIN / 4) /* claim_ms of a bucket whose ids were given up unused */
#define CLAIM_FAST_MS 250         /* a block used up faster than this: the next one is twice as long */
#define LEASE_DEFER_MS 1000       /* a lease entry is written this long after the lease */
#define LEASE_DEFER_MIN_MS 2000   /* if the lease lasts at least this long */
#define LEASE_DEFER_MAX 65536     /* entries a queue defers at most */
#define LEASE_ENTRY_KEEP_MS (24LL * 3600 * 1000) /* an entry outlives its due time by this at most */

/* A due redelivery found by the lease scan, not yet taken. */
typedef struct {
    int64_t id, version;
} cand;

/* ledger.c: a queue's depth, kept by this node's operations. */
typedef struct {
    int64_t id, vis_ms, put_ms; /* put_ms 0: unknown */
    int delayed;                /* invisible since its put, never leased */
} lg_entry;
typedef struct {
    lg_entry *e; /* open addressing by id, INT64_MIN: empty */
    size_t cap, n;
} lg_table;
#define CS_KEY_MAX 20
/* census.c: another node's tally of a queue, as last read. */
typedef struct {
    char node[CS_KEY_MAX];
    int64_t net, sus;                   /* adds - removes, suspicions */
    int64_t inflight, delayed, max_vis; /* its invisible messages, visible again by max_vis */
    int64_t net_cut, sus_cut;           /* net and sus at the last recount (the cut) */
    int silent_cut;                     /* the node was silent at the cut */
    int live, live_cut; /* beating, not closed (now, at the cut): its invisible messages count */
} cs_peer;
struct cs_recount; /* census.c: a recount in progress on a shared store */
struct ledger {
    pthread_mutex_t mu; /* guards what follows */
    int64_t size;       /* live messages */
    lg_table inv;       /* messages this node made invisible, by id */
    int64_t oldest_put; /* 0: not known (lg_figures looks further) */
    int64_t min_exp;    /* the earliest retention end put in since the last recount */
    int recount;        /* a recount is due */
    int counted;        /* a recount succeeded */
    int pending;        /* operations in flight that change the size */
    uint64_t seq;       /* changes so far: a recount that saw one is not kept */
    uint64_t seq_seen;  /* seq at the last background pass */
    int64_t counted_ms, swept_ms;
    /* Shared stores (census.c). This node's own operations, cumulative:
     * messages in, messages out, and times it lost count (lg_suspect, a
     * retention end). */
    int64_t adds, removes, sus;
    uint64_t gone;                /* lg_gone calls: a look for the oldest that saw one is not kept */
    int64_t seek_ms, seek_from;   /* the last look for the oldest message, and where to go on */
    uint64_t peers_gen, seek_gen; /* changes seen in the others' tallies (census.c), and at that look */
    /* While a recount is under way on a shared store: the messages this
     * node leased, delayed or took out since its scan began, whose state
     * the scan may not show (lg_install_locked leaves them as they are). */
    lg_table touched;
    int tracking, touched_full;
    int64_t min_exp_new;    /* min_exp of the puts since the recount's scan began */
    int64_t pub[7], pub_ms; /* the tally last written, and when */
    cs_peer *peers;         /* the other nodes' tallies of the queue */
    size_t npeers;
    struct cs_recount *rc; /* the background thread's only */
};
typedef struct {
    int64_t visible, in_flight, delayed, oldest_age_s;
    int counted; /* 0 until the first recount: the figures mean nothing yet */
} lg_fig;

/* The node-local state of one incarnation (qkey) of a queue. Created on
 * first use. An incarnation that was deleted is marked dead and no longer
 * found by name; the poller frees it once nothing holds it (users: the
 * operations and watches that keep a pointer to it past the call that made
 * them) and it has stayed dead for QSTATE_REAP_PASSES of the poller,
 * longer than any call that looked it up can take. Queues created and
 * deleted all day would otherwise pile up. */
typedef struct qstate {
    struct qstate *next;
    char account[SL_NAME_MAX + 1], name[SL_NAME_MAX + 1];
    char qkey[QKEY_MAX];
    int64_t version, created_ms;
    /* The options. Those SQS's SetQueueAttributes changes (sl_queue_update:
     * dlq, max_delivery_count, retention_s and the calls' defaults) change
     * under mu, and are read under mu (eng_queue_opts); the others never
     * change in an incarnation. */
    sl_queue_opts opts;
    uint64_t opts_hash;       /* under mu: of the options' text as last read */
    unsigned char secret[16]; /* pop receipts are MACed with it */
    void *mac_pads;           /* msg_receipt_init: its HMAC pads, absorbed */
    int64_t checked_ms;   /* when the queue row was last confirmed */
    int dead;
    int users;            /* under e->mu: see above */
    int64_t dead_passes;  /* under e->mu: poller passes since it died */

    pthread_mutex_t mu;   /* guards everything below */
    int64_t id_next, id_end, block_ms; /* the id block this node writes to */
    int claiming;             /* a thread is claiming a new block */
    int64_t claim_k;          /* buckets in the next block claimed */
    sl_fcond claimed;         /* broadcast when that claim ends */
    struct sl_op *idwait, *idwait_tail; /* puts waiting for ids, in order (the claimer serves them) */
    int claim_queued;                   /* under e->mu: on the engine's claimer list */
    struct qstate *claim_next;          /* under e->mu: on that list */
    int64_t reader;       /* cached reader pointer (bucket), -1 unknown */
    int64_t head;         /* monoton next as last seen: ids below it are claimed */
    int64_t gap_bucket[READ_SCAN_MAX], gap_since[READ_SCAN_MAX], gap_present[READ_SCAN_MAX];
    int64_t claim_bucket[READ_SCAN_MAX], claim_ms[READ_SCAN_MAX]; /* blocks this node claimed, and when */
    int64_t purge_ms, purge_checked_ms;
    int64_t lcur_due, lcur_id;  /* lease scan cursor: entries up to here were seen */
    int64_t lsweep_ms;          /* when the cursor was last wound back */
    int lscanning;
    int lscan_dirty;            /* the last scan by a receive failed */
    int64_t *dues;              /* min-heap: due times of entries this node wrote */
    size_t ndues, dues_cap;
    int dues_overflow;
    int64_t lscan_mono_ms, lscan_now_ms; /* when that scan began, by both clocks */
    int sealing;          /* a thread of this node is sealing a bucket */
    cand cands[MAX_CANDIDATES];
    int ncands;
    int64_t seen[SEEN_RING][2]; /* lease entries already taken, see seen_recently */
    int64_t leasing[MAX_CLAIMED]; /* ids this node's threads are leasing right now */
    int nleasing;
    /* Lease entries not written yet, in write_at order (see
     * msg_lease_entry): most leases end with an ack well before they could
     * run out, and then their entry is never written. */
    struct pend_entry {
        int64_t id, version, due, exp_ms, write_at;
    } *pend;
    size_t pend_head, pend_n, pend_cap;
    /* The fresh pool: READY rows that the last scan of the reader window
     * found (in bucket order, shuffled within a bucket unless strictFifo)
     * or that puts on this node wrote, handed out to receivers so that a
     * receive reads nothing in steady state. Rows are deep copies, owned by
     * the pool until popped. */
    sl_row **fresh;
    int nfresh, fresh_pos;      /* rows fresh[fresh_pos..nfresh) are left */
    size_t fresh_bytes;         /* their size */
    int fresh_scanning;         /* a thread is refilling it */
    int fresh_found;            /* rows the last refill added */
    int64_t fresh_next;         /* see fresh_fill */
    /* When the pool is dry, a refill is skipped if the last one found
     * nothing, nothing this node did since can have added a READY row the
     * pool lacks (puts feed the pool themselves), and it was less than
     * FRESH_IDLE_MS ago by both clocks (what other nodes put shows within
     * that, and a gap's grace or a bucket's sealing waits no longer). */
    int fresh_dirty;
    /* Set by the repair pass (msg_seal_behind) when READY rows older than
     * twice the gap grace sit at the reader's front of a queue that
     * receives: if this node's puts keep the pool fed, it never runs dry and
     * no refill would ever find them. The next receive empties the pool and
     * refills it from the front. */
    int fresh_stale;
    int64_t take_mono_ms;       /* when a receive last took from the pool */
    uint64_t fresh_moves;       /* e->moves as of the last refill */
    int64_t fresh_mono_ms;      /* when the last refill ended (monotonic) */
    int64_t fresh_now_ms;       /* and by sl_now_ms() (gap grace, retention) */
    sl_fcond fresh_cv;          /* broadcast when that refill ends */
    uint64_t fresh_gen;         /* refills so far */

    int seen_pos;
    int64_t repair_next_ms;
    /* GET /metrics: what this node did with the queue (atomic adds). */
    struct {
        uint64_t puts, deliveries, redeliveries, acks, dead_letters, receives, empty_receives;
    } m;
    struct ledger lg;                    /* the depth (ledger.c) */
    struct cas_slot {                    /* combiners of compare-and-sets (eng_cas_submit) */
        struct eng_casg *head, *tail;    /* waiting for the next round */
        int busy;                        /* a round is with the store */
        int inflight;                    /* its batches not answered yet */
    } cas[CAS_SLOTS];
} qstate;

struct sl_watch {
    struct sl_watch *next;
    qstate *q;
    int64_t deadline_ms;
    void (*fn)(void *);
    void *arg;
    int fired;
};

struct sl_engine {
    sl_store *st;
    int64_t epoch; /* the store's (sl_store_epoch), for msg_version_next */
    sl_engine_config cfg;
    pthread_mutex_t mu; /* guards the lists below */
    qstate *queues;
    sl_watch *watches;
    int nwatches;
    pthread_cond_t wake;
    struct acct_cache {
        char name[SL_NAME_MAX + 1];
        int64_t until_ms;
    } acct[64];
    int stopping;
    uint64_t moves; /* messages copied into a queue by a move (atomic) */
    pthread_t bg, poller, claimer;
    pthread_cond_t claim_cv;                /* under mu: the claimer has work, or the engine stops */
    struct qstate *claim_head, *claim_tail; /* queues whose puts wait for ids */
    int bg_started;
    int movers; /* message move tasks running on this node (movetask.c), under mu */
    uint64_t cas_unknown; /* compare-and-sets whose outcome was unknown, resolved by a read (atomic) */
    /* Compare-and-sets by outcome (applied, not applied, error), and the
     * conditional requests sent for them (a combined batch counts once: one
     * Paxos round on Cassandra). Atomic. */
    uint64_t cas_outcome[3], cas_rounds;
    /* census.c, on a shared store: this incarnation's key, its beats, and
     * the other nodes' beats as last read. The background thread's only. */
    struct {
        char self[CS_KEY_MAX];
        int64_t beat, flush_ms;
        struct cs_node {
            char node[CS_KEY_MAX];
            int64_t beat, changed_ms; /* when this node last saw beat change */
            int closed;
        } * nodes;
        size_t nnodes;
    } cs;
};

/* --- Between the engine's files (each group: where it is defined) ------- */

static inline int64_t ttl_left_s(int64_t exp_ms, int64_t now) {
    int64_t s = (exp_ms - now + 999) / 1000;
    return s < 1 ? 1 : s;
}

#define SETTLE_MS 1000 /* lease entries due this recently may still be landing */

/* A put's rows as built by msg_put_rows, with what msg_put_after needs. */
typedef struct {
    int64_t id, block_ms;
    char tag[SL_TAG_MAX];
} put_pending;

enum { SEAL_DONE = 1, SEAL_NOW };
#define SEAL_GAPS (INT64_C(1) << 62) /* in msg_seal_run's b[]: the bucket was short of rows */

/* cas.c: counts a conditional request sent to the store (any number of
 * writes: one Paxos round on Cassandra). */
void eng_cas_sent(sl_engine *e);

/* queue.c */
/* An edit of a live queue's options, given as the JSON object of its row
 * (the options, its "tags", its "moveTasks"), changed in place. 0, or an
 * error to return (SL_EINVAL with err set). */
typedef int (*opts_edit_fn)(json_t *opts, void *arg, char *err, size_t cap);
/* Applies edit to the options of the queue's live incarnation and writes
 * them back on condition that nobody wrote the row meanwhile (its nonce),
 * so that two edits at once (SetQueueAttributes and TagQueue) never lose
 * one another. This node sees the change at once; the others when they
 * read the row again, within a second (eng_queue). */
int eng_opts_edit(sl_engine *e, const char *account, const char *name, opts_edit_fn edit, void *arg,
                  char *err, size_t cap);
/* The options object of the live queue row (with its "tags" and
 * "moveTasks"): 0 with *out (an object; the caller decrefs it),
 * SL_ENOTFOUND, or a store error. */
int eng_queue_row_json(sl_engine *e, const char *account, const char *name, json_t **out);
/* Moves the ready messages of src to dst (redrive), calling step (when not
 * NULL) after each move with the count so far: a nonzero answer stops it,
 * and it returns 1. 0 when it went through, or an error. */
int eng_redrive(sl_engine *e, qstate *src, qstate *dst, int (*step)(void *arg, int64_t moved), void *arg,
                int64_t *moved);

/* ledger.c */
void lg_init(qstate *q);
void lg_destroy(qstate *q);
/* Around an operation that changes the queue's size (a put, an ack, a
 * move): a recount that overlaps one is not kept. */
void lg_op_begin(qstate *q);
void lg_op_end(qstate *q);
void lg_put(qstate *q, int64_t id, int64_t put_ms, int64_t vis_ms, int64_t exp_ms);
void lg_leased(qstate *q, int64_t id, int64_t put_ms, int64_t vis_ms);
/* Acked or moved out; put_ms 0 when not known. */
void lg_gone(qstate *q, int64_t id, int64_t put_ms);
/* Something happened that the hooks cannot count: recount. */
void lg_suspect(qstate *q);
/* The queue was purged: nothing is left, until a recount says otherwise. */
void lg_purged(qstate *q);
/* Calls fn for every live message of q (READY, MOVING or WAITING, not
 * purged), from the repair pointer to the head; fn's nonzero answer stops
 * the walk and is returned. */
int lg_scan(sl_engine *e, qstate *q, int64_t now, int (*fn)(void *, const sl_row *, int64_t), void *arg);
void lg_maintain(sl_engine *e, qstate *q, int64_t now);
void lg_figures(qstate *q, int64_t now, lg_fig *out);
/* This node's own messages invisible now, leased and delayed, when the
 * last becomes visible, and the oldest put it knows of among its entries
 * (under l->mu). */
void lg_own_invisible(const struct ledger *l, int64_t now, int64_t *inflight, int64_t *delayed,
                      int64_t *max_vis, int64_t *oldest_put);
/* A recount's reading of the store (lg_count_scan), and its installation
 * as the ledger's figures (lg_install_locked, the caller holding l->mu). On
 * a shared store this node's own changes since net_at (its adds - removes
 * when the scan ended) are added, and its table of invisible messages is
 * reconciled with what the scan found: the live nodes publish theirs
 * (others_inflight and others_delayed at the cut), and the rest (leased or
 * put by a node that died or closed) this node adopts. consistent: nothing
 * changed the queue while it was read; otherwise a recount stays due. */
typedef struct {
    int64_t size, oldest, min_exp;
    lg_table inv;
    int full;
    int64_t sus_at; /* the ledger's sus when the scan began: a suspicion since keeps a recount due */
} lg_count;
int lg_count_scan(sl_engine *e, qstate *q, int64_t now, lg_count *a);
void lg_count_free(lg_count *a);
/* A recount that lg_count_scan began ends without lg_install_locked. */
void lg_count_abandon(qstate *q);
void lg_install_locked(sl_engine *e, struct ledger *l, lg_count *a, int64_t now, int64_t net_at,
                       int consistent, int64_t others_inflight, int64_t others_delayed);

/* census.c (shared stores; see there) */
void cs_open(sl_engine *e);
void cs_tick(sl_engine *e, int64_t now);
void cs_close(sl_engine *e);
/* The recount of q on a shared store, one step per background pass; due
 * says the ledger wants one (quiet: q did not change since the last pass;
 * force: take the count even if it is not consistent). */
void cs_recount_step(sl_engine *e, qstate *q, int64_t now, int due, int quiet, int force);
void cs_recount_free(struct cs_recount *rc);

/* fifo.c */
extern const sl_table sl_t_fifo_groups, sl_t_fifo_log, sl_t_fifo_dedup, sl_t_fifo_busy;
/* Advances every busy group of a FIFO queue whose head is done: run by the
 * queue's repair owner. */
int fifo_sweep(sl_engine *e, qstate *q);

/* cas.c */
int eng_cas(sl_engine *e, sl_write *w, int nonce_col);
int eng_cas_settle(sl_engine *e, sl_write *w, int nonce_col, int rc, size_t n);
int eng_same_key(const sl_write *a, const sl_write *b, int ncols);
/* A group of compare-and-sets of one partition, each row once, sent in one
 * batch (maybe with other groups: the combiner): done(arg) runs once with
 * rc, the answer of the batch that carried it, and bn, that batch's size,
 * from which the owner settles each write (eng_cas_settle). done runs on
 * whichever thread the store answers on, or before eng_cas_submit returns;
 * it must not block. w stays borrowed until then. */
typedef struct eng_casg {
    sl_write *w;
    size_t n;
    int rc;
    size_t bn;
    void (*done)(void *arg);
    void *arg;
    int early;             /* may be answered before durable (sl_store_apply_cb_early): a lease */
    struct eng_casg *next; /* the combiner's */
} eng_casg;
void eng_cas_submit(sl_engine *e, qstate *q, eng_casg *g);
/* Arranges n compare-and-sets for sending: the writes of one partition
 * together, each row once, in groups [gstart[g], gstart[g] + gn[g]) for
 * g < *nsent; a row written again comes after them, one per group, to be
 * written after the others have settled (so the first one wins). swap (may
 * be NULL) moves the caller's arrays that run parallel to w along with it.
 * Returns the number of groups. */
size_t eng_cas_arrange(sl_write *w, size_t n, void (*swap)(void *ctx, size_t a, size_t b), void *ctx,
                       size_t *gstart, size_t *gn, size_t *nsent);
/* n <= SL_BATCH_MAX compare-and-sets, each settled on its own: rcs[i] gets
 * what eng_cas() would return for w[i]. */
void eng_cas_many(sl_engine *e, qstate *q, sl_write *w, size_t n, int nonce_col, int *rcs);
int64_t eng_nonce(void);
/* The version a message row gets in place of v on a lease, an update or a
 * move: v + 1, in the store's epoch (sl_store_epoch) when it has one (its
 * high 32 bits). An ack's stays v + 1: no compare-and-set applies to an
 * acked row. A lease answered before it was durable and lost
 * in a crash gave a version of an earlier epoch, which is never written
 * again, so its receipt never matches a later delivery (guarantee 4). */
static inline int64_t msg_version_next(const sl_engine *e, int64_t v) {
    return e->epoch > 0 ? e->epoch << 32 | ((v + 1) & 0xffffffff) : v + 1;
}
/* A delivery count as M_DCOUNT holds it: the count in the low 32 bits, and
 * the epoch of the lease that set it in the high ones, as a version (a
 * lease writes msg_version_next of it; a move copies it or writes 0). A
 * sticky receipt (SQS's) names the whole value, so a lease answered before
 * it was durable and lost in a crash never names the count of a later
 * delivery either, whose epoch differs. Every reader of the count masks it
 * with msg_dcount. */
static inline int64_t msg_dcount(int64_t stored) {
    return stored & 0xffffffff;
}
int eng_write(sl_engine *e, const sl_write *w, size_t n);
int eng_pointer_get(sl_engine *e, const char *qkey, const char *name, int64_t *out);
int eng_pointer_advance(sl_engine *e, const char *qkey, const char *name, int64_t from, int64_t to);
int eng_pointer_max(sl_engine *e, const char *qkey, const char *name, int64_t value);
int eng_counter_add(sl_engine *e, const char *qkey, const char *name, int64_t delta);

/* qstate.c */
int eng_queue(sl_engine *e, const char *account, const char *name, qstate **out);
void eng_queue_hold(sl_engine *e, qstate *q);
void eng_queue_release(sl_engine *e, qstate *q);
void eng_queue_reap(sl_engine *e, int all);
/* The live qstates, each held (users) until eng_release_queues: e->mu is
 * not held meanwhile. NULL with *n == 0 when there are none, or when out
 * of memory (then *oom, if given, is set). */
qstate **eng_hold_queues(sl_engine *e, size_t *n, int *oom);
void eng_release_queues(sl_engine *e, qstate **qs, size_t n);
void eng_queue_forget(sl_engine *e, qstate *q);
/* A copy of q's options, taken under q->mu. */
void eng_queue_opts(qstate *q, sl_queue_opts *out);
/* q's retention in seconds, read under q->mu. */
int64_t eng_queue_retention(qstate *q);

/* watch.c */
void eng_notify(sl_engine *e, qstate *q);
void eng_notify_n(sl_engine *e, qstate *q, size_t n);
void eng_fire(sl_engine *e, qstate *q, int expired_only, int64_t now);

/* message.c */
void msg_norm(sl_row *m);
int msg_has_visible(sl_engine *e, qstate *q);
int msg_put_rows(sl_engine *e, qstate *q, const sl_put *msgs, size_t n, char (*ids)[SL_MSGID_LEN + 1],
                 put_pending *p, int ids_given, sl_write *w, sl_write *entries, size_t *nentries,
                 int *any_visible);
/* Writes the lease entries msg_put_rows built for delayed messages. */
int msg_put_entries(sl_engine *e, sl_write *entries, size_t n);
int msg_put_check(sl_engine *e, const char *account, const char *queue, const sl_put *msgs, size_t n,
                  qstate **q);
int msg_put_after(sl_engine *e, qstate *q, const sl_write *w, const put_pending *p, size_t n, int any_visible,
                  int rc);
int msg_open_queue(sl_engine *e, const char *account, const char *queue, qstate **q);
void msg_key(sl_write *w, const char *qkey, int64_t bucket, int64_t id);
int msg_get_msg(sl_engine *e, const char *qkey, int64_t bucket, int64_t id, int cons, sl_result *r);
int msg_bucket_passed(sl_engine *e, const char *qkey, int64_t b);
sl_cond msg_cond_of(const sl_row *m, int col);
void msg_ack_writes(qstate *q, const char *const *receipts, size_t n, int *rcs, sl_write *w, size_t *idx,
                    size_t *k);
void msg_ack_after(qstate *q, const sl_write *w, size_t k, const size_t *idx, const int *krc, int *rcs);

/* receipt.c */
void msg_receipt_init(qstate *q);
void msg_receipt_free(qstate *q);
int msg_receipt_parse(const qstate *q, const char *s, int64_t *id, int64_t *version, int64_t *exp_ms,
                      int *sticky);
void msg_receipt_make(const qstate *q, char out[SL_RECEIPT_MAX], int64_t id, int64_t version, int64_t exp_ms);
void msg_receipt_make_sticky(const qstate *q, char out[SL_RECEIPT_MAX], int64_t id, int64_t dcount,
                             int64_t exp_ms);

/* ids.c */
int msg_claim(sl_engine *e, qstate *q, int64_t *id);
int msg_scan_bucket(sl_engine *e, qstate *q, int64_t bucket, sl_result *out);
int msg_purged(qstate *q, const sl_row *r);
void msg_refresh_purge(sl_engine *e, qstate *q, int force);
int msg_head(sl_engine *e, qstate *q, int64_t *head);
int msg_claim_block(sl_engine *e, qstate *q, int64_t *id, int64_t *block_ms);
/* Ids for a put that must not wait: hands out ids to p[*have..n) from the
 * node's block as far as it has them (none while other puts wait for
 * theirs) and returns whether the put has all n. One that has not waits
 * with msg_ids_wait: the claimer thread claims blocks, fills in the rest,
 * and calls msg_ids_ready(op, rc) (op.c), rc 0 or the claim's error. */
int msg_ids_try(sl_engine *e, qstate *q, put_pending *p, size_t n, size_t *have);
void msg_ids_wait(sl_engine *e, qstate *q, sl_op *op);
void *msg_claimer_main(void *arg);
/* op.c, for the claimer: the op's place on its queue's list of puts
 * waiting for ids (sets the next one, returns the old), what it needs, and
 * what follows once it has them. */
sl_op *op_idwait_link(sl_op *op, sl_op *next);
put_pending *op_idwait_need(sl_op *op, size_t *n, size_t **have);
void msg_ids_ready(sl_op *op, int rc);

/* lease.c */
int msg_lease_entry(sl_engine *e, qstate *q, int64_t id, int64_t version, int64_t due, int64_t exp_ms,
                    int async);
int msg_lease_flush(sl_engine *e, qstate *q, int64_t upto, int sync);
void msg_lease_entry_write(qstate *q, int64_t id, int64_t version, int64_t due, int64_t exp_ms, int64_t now,
                           sl_write *w);
int msg_recent(int64_t mono_then, int64_t now_then);
int msg_lease_entry_defer(qstate *q, int64_t id, int64_t version, int64_t due, int64_t exp_ms, int64_t now);
void msg_lease_entry_cancel(qstate *q, int64_t id, int64_t version);
void msg_lease_dues_pop(qstate *q, int64_t now);
void msg_lease_dues_note(qstate *q, const sl_write *w, size_t n);

/* reader.c */
int msg_lease_scan(sl_engine *e, qstate *q, int64_t now);
int msg_take_due(sl_engine *e, qstate *q, int max, int invis_s, sl_message *out, size_t *got);
int msg_seal_take(qstate *q);
int msg_seal_state(sl_engine *e, qstate *q, int64_t b, const sl_result *r, int ready, int64_t now);
int msg_seal_run(sl_engine *e, qstate *q, const int64_t *bs, int n);
int msg_seal_behind(sl_engine *e, qstate *q);
int msg_lease_writes(sl_engine *e, qstate *q, sl_row **rows, size_t k, int invis_s, sl_row **todo,
                     sl_write *w, int64_t *visible);
int msg_lease_batch(sl_engine *e, qstate *q, sl_row **rows, size_t k, int invis_s, sl_message *out,
                    size_t *got);
int msg_lease_after(sl_engine *e, qstate *q, sl_row **todo, size_t n, const int *rcs, int64_t visible,
                    sl_message *out, size_t *got);
int64_t msg_gap_clock(qstate *q, int64_t b, int64_t present, int64_t now);
int msg_fill_message(sl_message *out, const sl_row *m);

/* fresh.c */
void msg_fresh_drop(qstate *q);
int msg_take_fresh(sl_engine *e, qstate *q, int max, int invis_s, sl_message *out, size_t *got);
void msg_leasing_end(qstate *q, sl_row **v, size_t n);
int msg_fresh_take(sl_engine *e, qstate *q, size_t want, int have, int *refills, sl_row **v, size_t *k);
void msg_fresh_feed(qstate *q, const sl_write *w, size_t n);

/* move.c */
int msg_move(sl_engine *e, qstate *src, const sl_row *row, qstate *dst, int reset, int dead);
int msg_complete_move(sl_engine *e, qstate *src, const sl_row *row);

/* repair.c */
int repair_queue(sl_engine *e, qstate *q);
int repair_delete_queue(sl_engine *e, const char *qkey, int64_t bucket_size);

#endif
