/* queue.h: the queue engine's whole interface.
 *
 * The engine implements the queue algorithm (buckets, pointers, reader,
 * repair worker, leases, dead-lettering, deletion) on top of the table
 * contract in store/store.h and knows nothing of HTTP or of the backend.
 * All functions are thread-safe. Strings are borrowed; results that carry
 * memory are freed by the matching sl_*_free function. */
#ifndef SL_QUEUE_H
#define SL_QUEUE_H

#include <stdint.h>
#include <stddef.h>
#include "../account/account.h"
#include "../limits.h"
#include "../sluice.h"
#include "../store/store.h"
#include "../util/metrics.h"

typedef struct sl_engine sl_engine;

typedef struct {
    char node_id[40];        /* this node's name; random when empty */
    int lease_grace_ms;      /* how long missing ids wait before a bucket is sealed; default 2000 */
    int background;          /* run the repair and deletion threads (1 in the server, 0 in tests) */
    int max_watches;         /* long polls waiting at once; past it sl_watch_add says SL_EBUSY; 0: no cap */
    int combine_cas;         /* combine concurrent CAS into batches: 0 as the store prefers, 1 always, -1 never */
    /* The accounts (account/, below the engine): the engine asks it whether
     * an account exists, and creates its tables with its own. Required;
     * borrowed, must outlive the engine. */
    sl_acct *accounts;
} sl_engine_config;

/* Opens the engine over an open store (the caller keeps ownership of it and
 * closes it after sl_engine_close). Creates the tables it needs. */
int sl_engine_open(sl_store *st, const sl_engine_config *cfg, sl_engine **out);
/* Stops the background threads and frees the engine. */
void sl_engine_close(sl_engine *e);
/* The engine's table definitions (static data), for `sluice schema`. */
const sl_table *const *sl_engine_tables(size_t *n);

/* --- Queues ------------------------------------------------------------ */

typedef struct {
    char name[SL_NAME_MAX + 1];
    int bucket_size;                 /* 1..1000, default 20 */
    int max_delivery_count;          /* 1..1000, default 5 */
    char dlq[SL_NAME_MAX + 1];       /* empty: no DLQ */
    int repair_poll_s;               /* 1..3600, default 5 */
    int finalize_timeout_s;          /* 1..3600, default 15 */
    int delete_buckets;              /* default 1 */
    int64_t retention_s;             /* 60..1209600 (14 days), default 1209600 */
    int strict_fifo;                 /* default 0 */
    /* Defaults of the calls that do not say (SQS's queue attributes):
     * VisibilityTimeout, DelaySeconds, ReceiveMessageWaitTimeSeconds. */
    int visibility_s; /* 0..43200, default 30 */
    int delay_s;      /* 0..900, default 0 */
    int wait_s;       /* 0..20, default 0 */
    int max_bytes;    /* MaximumMessageSize: 1024..1048576; 0: the server's limit */
    /* FIFO queues (fifo.c): fifo is set at creation only; the others may
     * change (SQS's ContentBasedDeduplication, DeduplicationScope
     * messageGroup, FifoThroughputLimit perMessageGroupId). */
    int fifo;
    int fifo_content_dedup;
    int fifo_dedup_group;
    int fifo_throughput_group;
} sl_queue_opts;

/* Fills opts with the defaults of API.md (name left empty). */
void sl_queue_opts_default(sl_queue_opts *o);
/* Checks every field's range and the name; returns 0 or SL_EINVAL with a
 * message for the client in err (cap bytes). */
int sl_queue_opts_check(const sl_queue_opts *o, char *err, size_t cap);

typedef struct {
    sl_queue_opts opts;
    int64_t version;     /* bumps each time the name is created again after a delete */
    int64_t created_ms;
} sl_queue_info;

/* Creates a queue. Returns 0 when created, SL_EEXISTS when a queue of that
 * name already exists (whatever its options), SL_ENOTFOUND for an unknown
 * account, SL_EINVAL for bad options or a DLQ that does not exist (err says
 * which). */
int sl_queue_create(sl_engine *e, const char *account, const sl_queue_opts *o, char *err, size_t cap);
/* The same, with tags: tags_json is a JSON object of at most
 * SL_QUEUE_TAGS_MAX string values (the caller checks their names), or NULL. */
int sl_queue_create_tagged(sl_engine *e, const char *account, const sl_queue_opts *o, const char *tags_json,
                           char *err, size_t cap);
/* Changes the options that may change in a queue's life (SQS's
 * SetQueueAttributes): dlq, max_delivery_count, retention_s, visibility_s,
 * delay_s, wait_s and max_bytes, taken from o (o->name names the queue; its
 * other fields are ignored). Every node sees the change within a second.
 * 0, SL_ENOTFOUND, SL_EINVAL (bad options or a DLQ that does not exist:
 * err says which), or a store error. */
int sl_queue_update(sl_engine *e, const char *account, const sl_queue_opts *o, char *err, size_t cap);
/* Tags (SQS's TagQueue and UntagQueue): sets the tags of set_json (a JSON
 * object of strings; a new value replaces the old), then removes the keys
 * of remove, in one compare-and-set that no concurrent change of the queue
 * row is lost to. A queue keeps at most SL_QUEUE_TAGS_MAX tags: more is
 * SL_EINVAL (err says so), and nothing changes. 0, SL_ENOTFOUND or a store
 * error. */
int sl_queue_tag(sl_engine *e, const char *account, const char *name, const char *set_json,
                 const char *const *remove, size_t nremove, char *err, size_t cap);
/* The queue's tags as a JSON object (sorted keys), malloc'ed into *json. */
int sl_queue_tags(sl_engine *e, const char *account, const char *name, char **json);
int sl_queue_get(sl_engine *e, const char *account, const char *name, sl_queue_info *out);
/* Lists an account's active queues, sorted by name. *out is malloc'ed; the
 * caller frees it with free(). */
int sl_queue_list(sl_engine *e, const char *account, sl_queue_info **out, size_t *n);
/* Marks the queue deleted at once (it disappears from every route) and
 * removes its data in the background. */
int sl_queue_delete(sl_engine *e, const char *account, const char *name);

typedef struct {
    int64_t size, visible, in_flight, delayed, dead_lettered;
    int64_t oldest_age_s; /* 0 when empty */
} sl_queue_statistics;
int sl_queue_stats(sl_engine *e, const char *account, const char *name, sl_queue_statistics *out);
/* Removes every message enqueued before the call. */
int sl_queue_purge(sl_engine *e, const char *account, const char *name);
/* When the queue was last purged (its clock's milliseconds), 0 if never:
 * SQS allows one PurgeQueue a minute. */
int sl_queue_purged_at(sl_engine *e, const char *account, const char *name, int64_t *ms);
/* Moves every message of the queue dlq to the queue to, resetting delivery
 * counts; *moved counts them. */
int sl_queue_redrive(sl_engine *e, const char *account, const char *dlq, const char *to, int64_t *moved);

/* Message move tasks (SQS's StartMessageMoveTask and its kin): the
 * asynchronous redrive of a dead-letter queue, run by a thread of this node
 * at up to rate messages a second (movetask.c). */
#define SL_MOVE_HANDLE_MAX 200
#define SL_MOVE_RATE_MAX 500
#define SL_MOVE_TASKS_KEPT 10
/* Starts moving the ready messages of src, which must be the dead-letter
 * queue of some queue, to dst (NULL or "": the one queue that dead-letters
 * into src). handle gets the task's handle. 0; SL_EINVAL (err says why);
 * SL_EEXISTS when a task runs on src already; SL_ENOTFOUND; a store error. */
int sl_move_task_start(sl_engine *e, const char *account, const char *src, const char *dst, int rate,
                       char handle[SL_MOVE_HANDLE_MAX], char *err, size_t cap);
/* src's last SL_MOVE_TASKS_KEPT tasks, newest first, as a malloc'ed JSON
 * array of {"taskHandle", "status", "destination", "rate", "moved",
 * "toMove", "startedMs", "failureReason"?}; status is RUNNING, CANCELLING,
 * COMPLETED, CANCELLED or FAILED. */
int sl_move_tasks(sl_engine *e, const char *account, const char *src, char **json);
/* Cancels a running task of the account; *moved: its count so far. 0, or
 * SL_ENOTFOUND when no running task has that handle. */
int sl_move_task_cancel(sl_engine *e, const char *account, const char *handle, int64_t *moved);

/* --- FIFO queues (fifo.c) ------------------------------------------------ */

#define SL_FIFO_GROUP_MAX 128 /* a message group id or deduplication id */

typedef struct {
    const void *body;
    size_t len;
    const char *attrs_json; /* a JSON object, or NULL */
    const char *group;      /* 1..SL_FIFO_GROUP_MAX bytes */
    const char *dedup;      /* the deduplication id, 1..SL_FIFO_GROUP_MAX */
} sl_fifo_msg;

typedef struct {
    char id[SL_MSGID_LEN + 1];
    int64_t seq;   /* its sequence number in its group */
    int duplicate; /* a message of the same deduplication id was sent within
                      five minutes: id and seq are that one's */
} sl_fifo_sent;

/* Sends a message to a FIFO queue: durable when it returns 0; delivered
 * after every earlier message of its group is done. SL_EINVAL for a queue
 * that is not FIFO or a bad group or deduplication id. */
int sl_fifo_put(sl_engine *e, const char *account, const char *queue, const sl_fifo_msg *m,
                sl_fifo_sent *out);
/* After a successful ack of receipt on a FIFO queue (SQS's delete):
 * releases the next message of its group now (otherwise the sweeper does,
 * within a repair poll). A no-op on other queues. */
int sl_fifo_acked(sl_engine *e, const char *account, const char *queue, const char *receipt);

/* --- Messages ---------------------------------------------------------- */

typedef struct {
    char key[SL_ATTR_KEY_MAX + 1];
    char *val; /* NUL-terminated */
} sl_attr;

typedef struct {
    const void *body;
    size_t len;
    int delay_s;           /* initial invisibility, 0..SL_INVIS_MAX */
    const char *attrs_json;/* a JSON object of string values, or NULL */
} sl_put;

/* Puts n (1..SL_BATCH_MAX) messages. ids receives n message ids, each
 * SL_MSGID_LEN+1 bytes. Returns 0 only when every message is durable. */
int sl_msg_put(sl_engine *e, const char *account, const char *queue, const sl_put *msgs, size_t n,
               char (*ids)[SL_MSGID_LEN + 1]);

typedef struct {
    char id[SL_MSGID_LEN + 1];
    char receipt[SL_RECEIPT_MAX]; /* empty for peek */
    char tag[SL_TAG_MAX];
    void *body;                   /* malloc'ed, NUL-terminated after len bytes */
    size_t len;
    int64_t delivery_count;
    int64_t enqueued_ms;
    int64_t first_receive_ms;     /* its first delivery's time, 0 before one */
    char *attrs_json;             /* malloc'ed JSON object text, never NULL */
    /* A delivery's numeric id, expiry and delivery count as stored (its
     * epoch in the high bits), for sl_msg_receipt_sticky: set by a receive. */
    int64_t lease_id, lease_exp_ms, lease_dcount;
    int lease_set;
} sl_message;

void sl_messages_free(sl_message *m, size_t n); /* frees the array too */

/* Leases up to max (1..SL_RECEIVE_MAX) visible messages for invis_s
 * seconds. *out is malloc'ed (free with sl_messages_free); *n may be 0. */
int sl_msg_receive(sl_engine *e, const char *account, const char *queue, int max, int invis_s,
                   sl_message **out, size_t *n);
/* Like receive, without leasing: no receipt, delivery counts unchanged. */
int sl_msg_peek(sl_engine *e, const char *account, const char *queue, int max, sl_message **out,
                size_t *n);
/* Acks: 0, SL_ECONFLICT for a stale receipt (or a message already acked),
 * SL_EINVAL for a receipt that is not one of ours. */
int sl_msg_ack(sl_engine *e, const char *account, const char *queue, const char *receipt);
/* Acks n (1..SL_BATCH_MAX) receipts at once: rcs[i] gets what sl_msg_ack
 * would return for receipts[i]. Returns 0, or an error that stopped all of
 * them (no such queue). */
int sl_msg_ack_many(sl_engine *e, const char *account, const char *queue, const char *const *receipts, size_t n,
                    int *rcs);
/* Puts, acks and receives for callers that must not block while the store
 * commits (an HTTP worker parks its request meanwhile). A start call checks
 * its input, does what must be read first (a receive's refills, which read)
 * and hands its writes to the store; an error means nothing is pending. On
 * 0, *op is pending and done(arg) runs exactly once, maybe before the start
 * returns, maybe on a store thread (so it must only wake the caller), after
 * which sl_op_ready() is true and the finish call answers without waiting
 * for the store. Every op is finished exactly once, by its finish call or by
 * sl_op_discard(), which frees it; called early they wait. sl_msg_put,
 * sl_msg_ack_many and sl_msg_receive are a start call and its finish call at
 * once, and return what those return. The bytes of msgs and receipts must
 * stay valid until the finish. On a store that
 * does not defer writes (Cassandra, whose combiner batches
 * compare-and-sets), the start calls do all the work and call done before
 * they return. A receive's done may run once the store applied its leases,
 * before they are durable (sl_store_apply_cb_early): a lease lost in a crash
 * leaves receipts, plain or sticky, that match no later delivery
 * (msg_version_next). */
typedef struct sl_op sl_op;
int sl_msg_put_start(sl_engine *e, const char *account, const char *queue, const sl_put *msgs, size_t n,
                     void (*done)(void *), void *arg, sl_op **op);
int sl_msg_put_finish(sl_op *op, char (*ids)[SL_MSGID_LEN + 1]);
int sl_msg_ack_start(sl_engine *e, const char *account, const char *queue, const char *const *receipts, size_t n,
                     void (*done)(void *), void *arg, sl_op **op);
void sl_msg_ack_finish(sl_op *op, int *rcs);
int sl_msg_receive_start(sl_engine *e, const char *account, const char *queue, int max, int invis_s,
                         void (*done)(void *), void *arg, sl_op **op);
int sl_msg_receive_finish(sl_op *op, sl_message **out, size_t *n);
int sl_op_ready(const sl_op *op);
void sl_op_discard(sl_op *op);
/* Whether the start calls may still wait on the store: on a store reached
 * over the network (Cassandra) their reads do (a receive refilling its
 * rows, a queue loaded), so a caller that must not block runs them on a
 * thread that may, and lets that thread go while the writes are with the
 * store (it parks). On the embedded store they read SQLite's page cache
 * and never wait for the writer. */
int sl_engine_blocks(sl_engine *e);

/* GET /metrics: what this node did with each queue it served since it
 * started (puts, deliveries and redeliveries, acks, dead letters, receive
 * calls and empty ones) and the engine's unknown compare-and-set outcomes,
 * in the Prometheus text format. Reads no store. */
void sl_engine_metrics(sl_engine *e, sl_text *t);
/* Counts one receive call that answered n messages (the APIs call it once
 * per call, however long it polled); a queue this node holds no state for
 * is not counted. */
void sl_queue_note_receive(sl_engine *e, const char *account, const char *queue, size_t n);

/* Whether the store answers (for /health): 0 or a store error. */
int sl_engine_ping(sl_engine *e);
/* The sticky receipt of a delivery m (SQS's receipt handle): acks and
 * updates take it as they take m->receipt, and it stays valid through
 * updates until the message is delivered again. m must come from a
 * receive (which records the delivery count as stored). 0, SL_ENOTFOUND
 * (the queue is gone), SL_EINVAL (m was not received). */
int sl_msg_receipt_sticky(sl_engine *e, const char *account, const char *queue, const sl_message *m,
                          char out[SL_RECEIPT_MAX]);
/* Extends, shortens or ends (invis_s == 0) a lease, optionally replacing
 * the body (body != NULL). Writes the new receipt and the message tag. */
int sl_msg_update(sl_engine *e, const char *account, const char *queue, const char *receipt,
                  const void *body, size_t len, int invis_s, char new_receipt[SL_RECEIPT_MAX],
                  char tag[SL_TAG_MAX]);

/* --- Waiting for messages (long polling) ------------------------------- */

/* A watch calls fn(arg) once, from some engine or store thread, when a
 * message may have become visible on the queue (a put on this node, a lease
 * that ran out, or a put seen on another node by polling), or when it times
 * out at deadline_ms. fn must not call back into the engine; it should only
 * wake the waiter, which then calls sl_msg_receive. sl_watch_cancel
 * guarantees fn is not running and will not run once it returns, unless it
 * already ran (then it returns 1). Every watch is freed by sl_watch_cancel,
 * whether it fired or not. sl_watch_add returns SL_EBUSY when
 * max_watches watches are waiting already. */
typedef struct sl_watch sl_watch;
int sl_watch_add(sl_engine *e, const char *account, const char *queue, int64_t deadline_ms,
                 void (*fn)(void *arg), void *arg, sl_watch **out);
int sl_watch_cancel(sl_engine *e, sl_watch *w);

/* --- Background work, callable by hand in tests ------------------------ */

/* Runs one pass of the repair worker over every queue this node owns the
 * repair lease of, and of queue deletion. Returns 0 or a store error. */
int sl_engine_tick(sl_engine *e);

#endif
