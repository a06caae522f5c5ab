/* peerbench.c: the same workloads as loadgen, against the queues a user
 * might pick instead of Sluice, each through its C client:
 *
 *   redis      hiredis, synchronous; LPUSH, BLMOVE into QUEUE:proc (then
 *              LMOVE for the rest of a batch), LREM QUEUE:proc to ack.
 *              Durable with appendfsync always (run.sh starts it so).
 *   beanstalk  its text protocol over a blocking socket (no client library
 *              needed); put, reserve-with-timeout, delete; batches are
 *              pipelined. Durable with -b DIR -f0.
 *   rabbit     librabbitmq (rabbitmq-c): durable classic queue, persistent
 *              messages (delivery_mode 2), publisher confirms (a put returns
 *              when the broker confirmed it), basic.consume with manual acks
 *              and prefetch = the receive batch (1 or 10), ack multiple.
 *   nats       nats.c (libnats): a JetStream file stream with work-queue
 *              retention, synchronous js_Publish (waits for the PubAck),
 *              a shared durable pull consumer, Fetch, AckSync. NOT durable per
 *              message: nats-server 2.9 does not fsync each write.
 *
 * One thread per client with a blocking connection: these client libraries
 * are blocking, and at the rates durable queues reach here (thousands of
 * operations per second) a context switch per operation is noise; it costs
 * the peers, not Sluice, so it does not flatter Sluice.
 *
 * Receives block for up to 1 s when the queue is empty (BLMOVE, reserve with
 * a timeout, Fetch with a timeout, a pushed delivery): each peer's fastest
 * way to consume. A receive's latency then includes any wait for a message.
 *
 * Bounded: stops at --duration after --warmup, or once --put-count messages
 * were put or --drain were acked, never later than --max-seconds.
 * Output: one JSON object on stdout, the same shape as loadgen's. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <amqp.h>
#include <amqp_tcp_socket.h>
#include <hiredis/hiredis.h>
#include <nats/nats.h>

#include "hist.h"

enum { OP_PUT, OP_RECV, OP_ACK, OP_N };
static const char *op_name[OP_N] = {"put", "receive", "ack"};
enum { PEER_REDIS, PEER_BEANSTALK, PEER_RABBIT, PEER_NATS };
static const char *peer_name[] = {"redis", "beanstalk", "rabbit", "nats"};

#ifndef MSG_LEN /* bytes a message; -DMSG_LEN=1024 builds one for larger messages */
#define MSG_LEN 100
#endif
#define MAXB 100

static struct {
    const char *host, *queue, *label;
    int port, peer, producers, consumers, batch, recv_max, setup;
    double duration, warmup, max_seconds;
    long put_count, drain;
} opt = {.host = "127.0.0.1", .queue = "bench", .label = "", .batch = 1, .recv_max = 1, .duration = 10,
         .max_seconds = 600};

static uint64_t t_start, t_measure, t_deadline, t_hard;
static atomic_long puts_claimed, put_total, put_window, acked_total, acked_window;
static atomic_ulong last_ack_ns;
static atomic_int failed;

typedef struct client client;
typedef struct {
    int (*open)(client *c);
    int (*put)(client *c, int n);                /* 0 ok */
    int (*recv)(client *c, int max, int *got);   /* 0 ok; *got may be 0 */
    int (*ack)(client *c);                       /* acks what recv got; 0 ok */
    void (*close)(client *c);
} peer_ops;

struct client {
    pthread_t th;
    int id, role; /* 0 producer, 1 consumer */
    long seq;
    hist h[OP_N];
    long empties;
    int got;
    char msgs[MAXB][MSG_LEN + 1];
    /* redis */
    redisContext *rc;
    char held[MAXB][MSG_LEN + 1];
    /* beanstalk */
    int fd;
    char rb[65536];
    size_t rlen, roff;
    long long jobs[MAXB];
    /* rabbit */
    amqp_connection_state_t amqp;
    uint64_t next_tag, last_delivery;
    /* nats */
    natsConnection *nc;
    jsCtx *js;
    natsSubscription *sub;
    natsMsgList list;
};

static void make_msg(client *c, char *m) {
    int n = snprintf(m, MSG_LEN + 1, "m-%d-%ld-", c->id, c->seq++);
    memset(m + n, 'x', (size_t)(MSG_LEN - n));
    m[MSG_LEN] = '\0';
}

/* --- Redis ---------------------------------------------------------------- */

static char proc_key[256];

static int r_open(client *c) {
    struct timeval tv = {5, 0};
    c->rc = redisConnectWithTimeout(opt.host, opt.port, tv);
    if (!c->rc || c->rc->err) return -1;
    return 0;
}

static int r_put(client *c, int n) {
    const char *argv[MAXB + 2];
    size_t lens[MAXB + 2];
    argv[0] = "LPUSH", lens[0] = 5;
    argv[1] = opt.queue, lens[1] = strlen(opt.queue);
    for (int i = 0; i < n; i++) {
        make_msg(c, c->msgs[i]);
        argv[2 + i] = c->msgs[i];
        lens[2 + i] = MSG_LEN;
    }
    redisReply *r = redisCommandArgv(c->rc, n + 2, argv, lens);
    int ok = r && r->type == REDIS_REPLY_INTEGER;
    if (r) freeReplyObject(r);
    return ok ? 0 : -1;
}

static int r_recv(client *c, int max, int *got) {
    *got = 0;
    redisReply *r = redisCommand(c->rc, "BLMOVE %s %s RIGHT LEFT 1", opt.queue, proc_key);
    if (!r) return -1;
    if (r->type == REDIS_REPLY_NIL) {
        freeReplyObject(r);
        return 0;
    }
    if (r->type != REDIS_REPLY_STRING || r->len > MSG_LEN) {
        freeReplyObject(r);
        return -1;
    }
    memcpy(c->held[0], r->str, r->len);
    c->held[0][r->len] = 0;
    freeReplyObject(r);
    *got = 1;
    if (max == 1) return 0;
    for (int i = 1; i < max; i++) redisAppendCommand(c->rc, "LMOVE %s %s RIGHT LEFT", opt.queue, proc_key);
    for (int i = 1; i < max; i++) {
        void *vr;
        if (redisGetReply(c->rc, &vr) != REDIS_OK) return -1;
        r = vr;
        if (r->type == REDIS_REPLY_STRING && r->len <= MSG_LEN) {
            memcpy(c->held[*got], r->str, r->len);
            c->held[*got][r->len] = 0;
            (*got)++;
        }
        freeReplyObject(r);
    }
    return 0;
}

static int r_ack(client *c) {
    for (int i = 0; i < c->got; i++) redisAppendCommand(c->rc, "LREM %s 1 %s", proc_key, c->held[i]);
    int ok = 1;
    for (int i = 0; i < c->got; i++) {
        void *vr;
        if (redisGetReply(c->rc, &vr) != REDIS_OK) return -1;
        redisReply *r = vr;
        if (r->type != REDIS_REPLY_INTEGER || r->integer != 1) ok = 0;
        freeReplyObject(r);
    }
    return ok ? 0 : -1;
}

static void r_close(client *c) {
    if (c->rc) redisFree(c->rc);
}

/* --- beanstalkd -------------------------------------------------------------- */

static int tcp_connect(void) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    inet_pton(AF_INET, opt.host, &a.sin_addr);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int writeall(int fd, const char *b, size_t n) {
    while (n) {
        ssize_t k = write(fd, b, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

/* Reads one line (without CRLF) into out. */
static int b_line(client *c, char *out, size_t cap) {
    for (;;) {
        char *e = memmem(c->rb + c->roff, c->rlen - c->roff, "\r\n", 2);
        if (e) {
            size_t n = (size_t)(e - (c->rb + c->roff));
            if (n >= cap) return -1;
            memcpy(out, c->rb + c->roff, n);
            out[n] = 0;
            c->roff += n + 2;
            return 0;
        }
        if (c->roff > 0) {
            memmove(c->rb, c->rb + c->roff, c->rlen - c->roff);
            c->rlen -= c->roff;
            c->roff = 0;
        }
        if (c->rlen == sizeof c->rb) return -1;
        ssize_t k = read(c->fd, c->rb + c->rlen, sizeof c->rb - c->rlen);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        c->rlen += (size_t)k;
    }
}

static int b_cmd(client *c, const char *cmd, const char *expect) {
    char line[256];
    if (writeall(c->fd, cmd, strlen(cmd)) || b_line(c, line, sizeof line)) return -1;
    return strncmp(line, expect, strlen(expect)) == 0 ? 0 : -1;
}

static int b_open(client *c) {
    c->fd = tcp_connect();
    if (c->fd < 0) return -1;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "use %s\r\n", opt.queue);
    if (b_cmd(c, cmd, "USING")) return -1;
    snprintf(cmd, sizeof cmd, "watch %s\r\n", opt.queue);
    if (b_cmd(c, cmd, "WATCHING")) return -1;
    return b_cmd(c, "ignore default\r\n", "WATCHING");
}

static int b_put(client *c, int n) {
    static __thread char buf[MAXB * (MSG_LEN + 32)];
    size_t o = 0;
    for (int i = 0; i < n; i++) {
        char m[MSG_LEN + 1];
        make_msg(c, m);
        o += (size_t)sprintf(buf + o, "put 0 0 60 %d\r\n%s\r\n", MSG_LEN, m);
    }
    if (writeall(c->fd, buf, o)) return -1;
    char line[256];
    for (int i = 0; i < n; i++) {
        if (b_line(c, line, sizeof line) || strncmp(line, "INSERTED", 8) != 0) return -1;
    }
    return 0;
}

static int b_recv(client *c, int max, int *got) {
    *got = 0;
    char cmds[MAXB * 32];
    size_t o = (size_t)sprintf(cmds, "reserve-with-timeout 1\r\n");
    if (writeall(c->fd, cmds, o)) return -1;
    char line[256], data[MSG_LEN + 64];
    for (int i = 0; i < max; i++) {
        if (b_line(c, line, sizeof line)) return -1;
        long long id;
        int bytes;
        if (sscanf(line, "RESERVED %lld %d", &id, &bytes) == 2) {
            if (b_line(c, data, sizeof data)) return -1;
            c->jobs[(*got)++] = id;
        } else if (strncmp(line, "TIMED_OUT", 9) != 0 && strncmp(line, "DEADLINE_SOON", 13) != 0) {
            return -1;
        }
        if (i == 0) {
            if (*got == 0) return 0;
            /* the rest of a batch: whatever is ready now */
            o = 0;
            for (int k = 1; k < max; k++) o += (size_t)sprintf(cmds + o, "reserve-with-timeout 0\r\n");
            if (o && writeall(c->fd, cmds, o)) return -1;
        }
    }
    return 0;
}

static int b_ack(client *c) {
    char cmds[MAXB * 40];
    size_t o = 0;
    for (int i = 0; i < c->got; i++) o += (size_t)sprintf(cmds + o, "delete %lld\r\n", c->jobs[i]);
    if (writeall(c->fd, cmds, o)) return -1;
    char line[256];
    int ok = 1;
    for (int i = 0; i < c->got; i++) {
        if (b_line(c, line, sizeof line)) return -1;
        if (strncmp(line, "DELETED", 7) != 0) ok = 0;
    }
    return ok ? 0 : -1;
}

static void b_close(client *c) {
    if (c->fd >= 0) close(c->fd);
}

/* --- RabbitMQ --------------------------------------------------------------- */

static int amqp_ok(amqp_rpc_reply_t r) {
    return r.reply_type == AMQP_RESPONSE_NORMAL;
}

static int q_open(client *c) {
    c->amqp = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c->amqp);
    if (!s || amqp_socket_open(s, opt.host, opt.port) != AMQP_STATUS_OK) return -1;
    if (!amqp_ok(amqp_login(c->amqp, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest"))) return -1;
    amqp_channel_open(c->amqp, 1);
    if (!amqp_ok(amqp_get_rpc_reply(c->amqp))) return -1;
    amqp_queue_declare(c->amqp, 1, amqp_cstring_bytes(opt.queue), 0, 1, 0, 0, amqp_empty_table);
    if (!amqp_ok(amqp_get_rpc_reply(c->amqp))) return -1;
    if (c->role == 0) {
        amqp_confirm_select(c->amqp, 1);
        if (!amqp_ok(amqp_get_rpc_reply(c->amqp))) return -1;
        c->next_tag = 1;
    } else {
        amqp_basic_qos(c->amqp, 1, 0, (uint16_t)opt.recv_max, 0);
        if (!amqp_ok(amqp_get_rpc_reply(c->amqp))) return -1;
        amqp_basic_consume(c->amqp, 1, amqp_cstring_bytes(opt.queue), amqp_empty_bytes, 0, 0, 0, amqp_empty_table);
        if (!amqp_ok(amqp_get_rpc_reply(c->amqp))) return -1;
    }
    return 0;
}

static int q_put(client *c, int n) {
    amqp_basic_properties_t p;
    p._flags = AMQP_BASIC_DELIVERY_MODE_FLAG;
    p.delivery_mode = 2;
    for (int i = 0; i < n; i++) {
        char m[MSG_LEN + 1];
        make_msg(c, m);
        amqp_bytes_t body = {MSG_LEN, m};
        if (amqp_basic_publish(c->amqp, 1, amqp_empty_bytes, amqp_cstring_bytes(opt.queue), 0, 0, &p, body) !=
            AMQP_STATUS_OK)
            return -1;
    }
    uint64_t last = c->next_tag + (uint64_t)n - 1;
    c->next_tag += (uint64_t)n;
    uint64_t confirmed = last - (uint64_t)n;
    while (confirmed < last) {
        amqp_frame_t f;
        struct timeval tv = {30, 0};
        if (amqp_simple_wait_frame_noblock(c->amqp, &f, &tv) != AMQP_STATUS_OK) return -1;
        if (f.frame_type != AMQP_FRAME_METHOD) continue;
        if (f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            amqp_basic_ack_t *a = f.payload.method.decoded;
            if (a->multiple) confirmed = a->delivery_tag;
            else if (a->delivery_tag > confirmed) confirmed = a->delivery_tag; /* in order on one channel */
        } else if (f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            return -1;
        }
    }
    return 0;
}

static int q_recv(client *c, int max, int *got) {
    *got = 0;
    for (int i = 0; i < max; i++) {
        amqp_envelope_t env;
        struct timeval tv = {i == 0 ? 1 : 0, 0};
        amqp_maybe_release_buffers(c->amqp);
        amqp_rpc_reply_t r = amqp_consume_message(c->amqp, &env, &tv, 0);
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION && r.library_error == AMQP_STATUS_TIMEOUT) break;
        if (!amqp_ok(r)) return -1;
        c->last_delivery = env.delivery_tag;
        amqp_destroy_envelope(&env);
        (*got)++;
    }
    return 0;
}

static int q_ack(client *c) {
    return amqp_basic_ack(c->amqp, 1, c->last_delivery, 1) == 0 ? 0 : -1;
}

static void q_close(client *c) {
    if (!c->amqp) return;
    amqp_channel_close(c->amqp, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c->amqp, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c->amqp);
}

/* --- NATS JetStream ---------------------------------------------------------- */

static int n_open(client *c) {
    char url[128];
    snprintf(url, sizeof url, "nats://%s:%d", opt.host, opt.port);
    natsOptions *no = NULL;
    /* SendAsap: flush each publish, ack and pull request at once instead of
     * through the client's flusher thread (its fastest setting for a
     * request-reply loop like this one) */
    if (natsOptions_Create(&no) != NATS_OK || natsOptions_SetURL(no, url) != NATS_OK ||
        natsOptions_SetSendAsap(no, true) != NATS_OK)
        return -1;
    natsStatus cs = natsConnection_Connect(&c->nc, no);
    natsOptions_Destroy(no);
    if (cs != NATS_OK) return -1;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = 30000;
    if (natsConnection_JetStream(&c->js, c->nc, &jo) != NATS_OK) return -1;
    if (c->role == 1) {
        jsErrCode jerr = 0;
        jsSubOptions so;
        jsSubOptions_Init(&so);
        so.Stream = opt.queue;
        if (js_PullSubscribe(&c->sub, c->js, opt.queue, "workers", NULL, &so, &jerr) != NATS_OK) return -1;
    }
    return 0;
}

static int n_setup(void) {
    natsConnection *nc;
    jsCtx *js;
    char url[128];
    snprintf(url, sizeof url, "nats://%s:%d", opt.host, opt.port);
    if (natsConnection_ConnectTo(&nc, url) != NATS_OK) return -1;
    if (natsConnection_JetStream(&js, nc, NULL) != NATS_OK) return -1;
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = opt.queue;
    const char *subj[1] = {opt.queue};
    sc.Subjects = subj;
    sc.SubjectsLen = 1;
    sc.Storage = js_FileStorage;
    sc.Retention = js_WorkQueuePolicy;
    jsErrCode jerr = 0;
    jsStreamInfo *si = NULL;
    natsStatus s = js_AddStream(&si, js, &sc, NULL, &jerr);
    if (s != NATS_OK && jerr != JSStreamNameExistErr) {
        fprintf(stderr, "peerbench: nats AddStream: %s (%d)\n", natsStatus_GetText(s), jerr);
        return -1;
    }
    if (si) jsStreamInfo_Destroy(si);
    jsConsumerConfig cc;
    jsConsumerConfig_Init(&cc);
    cc.Durable = "workers";
    cc.AckPolicy = js_AckExplicit;
    cc.AckWait = (int64_t)30 * 1000000000;
    cc.MaxAckPending = 100000;
    cc.MaxWaiting = 4096;
    jsConsumerInfo *ci = NULL;
    s = js_AddConsumer(&ci, js, opt.queue, &cc, NULL, &jerr);
    if (s != NATS_OK && jerr != JSConsumerNameExistErr) {
        fprintf(stderr, "peerbench: nats AddConsumer: %s (%d)\n", natsStatus_GetText(s), jerr);
        return -1;
    }
    if (ci) jsConsumerInfo_Destroy(ci);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return 0;
}

static int n_put(client *c, int n) {
    jsErrCode jerr = 0;
    if (n == 1) {
        char m[MSG_LEN + 1];
        make_msg(c, m);
        jsPubAck *pa = NULL;
        natsStatus s = js_Publish(&pa, c->js, opt.queue, m, MSG_LEN, NULL, &jerr);
        if (pa) jsPubAck_Destroy(pa);
        return s == NATS_OK ? 0 : -1;
    }
    for (int i = 0; i < n; i++) {
        char m[MSG_LEN + 1];
        make_msg(c, m);
        if (js_PublishAsync(c->js, opt.queue, m, MSG_LEN, NULL) != NATS_OK) return -1;
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 30000;
    return js_PublishAsyncComplete(c->js, &po) == NATS_OK ? 0 : -1;
}

static int n_recv(client *c, int max, int *got) {
    *got = 0;
    jsErrCode jerr = 0;
    natsStatus s = natsSubscription_Fetch(&c->list, c->sub, max, 1000, &jerr);
    if (s == NATS_TIMEOUT) return 0;
    if (s != NATS_OK) return -1;
    *got = c->list.Count;
    return 0;
}

static int n_ack(client *c) {
    int ok = 1;
    for (int i = 0; i < c->list.Count; i++) {
        natsStatus s;
        if (i == c->list.Count - 1) {
            jsErrCode jerr = 0;
            s = natsMsg_AckSync(c->list.Msgs[i], NULL, &jerr); /* in order: confirms the earlier acks too */
        } else {
            s = natsMsg_Ack(c->list.Msgs[i], NULL);
        }
        if (s != NATS_OK) ok = 0;
    }
    natsMsgList_Destroy(&c->list);
    return ok ? 0 : -1;
}

static void n_close(client *c) {
    if (c->sub) natsSubscription_Destroy(c->sub);
    if (c->js) jsCtx_Destroy(c->js);
    if (c->nc) natsConnection_Destroy(c->nc);
}

static const peer_ops peers[] = {
    {r_open, r_put, r_recv, r_ack, r_close},
    {b_open, b_put, b_recv, b_ack, b_close},
    {q_open, q_put, q_recv, q_ack, q_close},
    {n_open, n_put, n_recv, n_ack, n_close},
};

/* --- Clients ------------------------------------------------------------------- */

static int claim_puts(int want) {
    if (opt.put_count <= 0) return want;
    long before = atomic_fetch_add(&puts_claimed, want);
    if (before >= opt.put_count) return 0;
    long left = opt.put_count - before;
    return left < want ? (int)left : want;
}

static int finished(uint64_t now) {
    if (atomic_load(&failed)) return 1;
    if (now >= t_deadline || now >= t_hard) return 1;
    if (opt.drain > 0 && atomic_load(&acked_total) >= opt.drain) return 1;
    return 0;
}

static void record(client *c, int op, uint64_t t0, uint64_t t1, int ok) {
    if (t0 >= t_measure && t1 <= t_deadline) {
        if (ok) hist_add(&c->h[op], t1 - t0);
        else c->h[op].errors++;
    } else if (!ok) {
        c->h[op].errors++;
    }
}

static void *client_main(void *arg) {
    client *c = arg;
    const peer_ops *p = &peers[opt.peer];
    if (p->open(c)) {
        fprintf(stderr, "peerbench: client %d cannot connect to %s\n", c->id, peer_name[opt.peer]);
        atomic_store(&failed, 1);
        return NULL;
    }
    int errs = 0;
    while (!finished(now_ns()) && errs < 100) {
        if (c->role == 0) {
            int n = claim_puts(opt.batch);
            if (n == 0) break;
            uint64_t t0 = now_ns();
            int rc = p->put(c, n);
            uint64_t t1 = now_ns();
            record(c, OP_PUT, t0, t1, rc == 0);
            if (rc) {
                errs++;
                continue;
            }
            atomic_fetch_add(&put_total, n);
            if (t0 >= t_measure && t1 <= t_deadline) atomic_fetch_add(&put_window, n);
        } else {
            uint64_t t0 = now_ns();
            int rc = p->recv(c, opt.recv_max, &c->got);
            uint64_t t1 = now_ns();
            /* a drain's empty receives are its tail, waiting out the timeout */
            if (rc || c->got > 0 || opt.drain <= 0) record(c, OP_RECV, t0, t1, rc == 0);
            if (rc) {
                errs++;
                continue;
            }
            if (c->got == 0) {
                if (t0 >= t_measure && t1 <= t_deadline) c->empties++;
                continue;
            }
            t0 = now_ns();
            rc = p->ack(c);
            t1 = now_ns();
            record(c, OP_ACK, t0, t1, rc == 0);
            if (rc) {
                errs++;
                continue;
            }
            atomic_fetch_add(&acked_total, c->got);
            if (t0 >= t_measure && t1 <= t_deadline) atomic_fetch_add(&acked_window, c->got);
            atomic_store(&last_ack_ns, t1);
        }
    }
    if (errs >= 100) fprintf(stderr, "peerbench: client %d gave up after 100 errors\n", c->id);
    p->close(c);
    return NULL;
}

int main(int argc, char **argv) {
    static struct option lo[] = {{"peer", 1, 0, 'P'},      {"host", 1, 0, 'h'},        {"port", 1, 0, 'p'},
                                 {"producers", 1, 0, 'r'}, {"consumers", 1, 0, 'c'},   {"duration", 1, 0, 'd'},
                                 {"warmup", 1, 0, 'W'},    {"batch", 1, 0, 'b'},       {"recv-max", 1, 0, 'm'},
                                 {"put-count", 1, 0, 'N'}, {"drain", 1, 0, 'D'},       {"queue", 1, 0, 'q'},
                                 {"label", 1, 0, 'l'},     {"max-seconds", 1, 0, 'M'}, {"setup", 0, 0, 'S'},
                                 {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'P':
            for (opt.peer = 0; opt.peer < 4 && strcmp(peer_name[opt.peer], optarg); opt.peer++) {}
            if (opt.peer == 4) return 2;
            break;
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case 'r': opt.producers = atoi(optarg); break;
        case 'c': opt.consumers = atoi(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'W': opt.warmup = atof(optarg); break;
        case 'b': opt.batch = atoi(optarg); break;
        case 'm': opt.recv_max = atoi(optarg); break;
        case 'N': opt.put_count = atol(optarg); break;
        case 'D': opt.drain = atol(optarg); break;
        case 'q': opt.queue = optarg; break;
        case 'l': opt.label = optarg; break;
        case 'M': opt.max_seconds = atof(optarg); break;
        case 'S': opt.setup = 1; break;
        default: return 2;
        }
    }
    if (opt.port <= 0 || opt.batch < 1 || opt.batch > MAXB || opt.recv_max < 1 || opt.recv_max > MAXB) {
        fprintf(stderr, "usage: peerbench --peer redis|beanstalk|rabbit|nats --port P [--producers P --consumers C]\n"
                        "  [--duration S --warmup S --batch B --recv-max N --put-count N --drain N --queue Q]\n");
        return 2;
    }
    snprintf(proc_key, sizeof proc_key, "%s:proc", opt.queue);
    if (opt.peer == PEER_NATS && n_setup()) return 1;
    int n = opt.producers + opt.consumers;
    if (n < 1) return 0;
    client *cs = calloc((size_t)n, sizeof *cs);
    t_start = now_ns();
    t_measure = t_start + (uint64_t)(opt.warmup * 1e9);
    t_deadline = t_measure + (uint64_t)(opt.duration * 1e9);
    t_hard = t_start + (uint64_t)(opt.max_seconds * 1e9);
    if (t_deadline > t_hard) t_deadline = t_hard;
    for (int i = 0; i < n; i++) {
        cs[i].id = i;
        cs[i].fd = -1;
        cs[i].role = i < opt.producers ? 0 : 1;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstacksize(&at, 1 << 20);
        if (pthread_create(&cs[i].th, &at, client_main, &cs[i])) return 1;
    }
    for (int i = 0; i < n; i++) pthread_join(cs[i].th, NULL);
    uint64_t t_end = now_ns();
    hist *tot = calloc(OP_N, sizeof(hist));
    long empties = 0;
    for (int i = 0; i < n; i++) {
        for (int o = 0; o < OP_N; o++) hist_merge(&tot[o], &cs[i].h[o]);
        empties += cs[i].empties;
    }
    double secs;
    if (opt.drain > 0 || opt.put_count > 0) {
        uint64_t end = opt.drain > 0 ? atomic_load(&last_ack_ns) : t_end;
        if (end < t_measure) end = t_end;
        secs = (double)(end - t_measure) / 1e9;
    } else {
        uint64_t end = t_end < t_deadline ? t_end : t_deadline;
        secs = (double)(end - t_measure) / 1e9;
    }
    long acked = opt.drain > 0 ? atomic_load(&acked_total) : atomic_load(&acked_window);
    long puts = opt.put_count > 0 ? atomic_load(&put_total) : atomic_load(&put_window);
    printf("{\"label\":\"%s\",\"proto\":\"%s\",\"producers\":%d,\"consumers\":%d,\"batch\":%d,\"recv_max\":%d,"
           "\"seconds\":%.3f,\"messages_put\":%ld,\"messages_acked\":%ld,\"put_msgs_per_s\":%.1f,"
           "\"lifecycles_per_s\":%.1f,\"empty_receives\":%ld,\"failed\":%d,\"ops\":{",
           opt.label, peer_name[opt.peer], opt.producers, opt.consumers, opt.batch, opt.recv_max, secs, puts, acked,
           secs > 0 ? (double)puts / secs : 0, secs > 0 ? (double)acked / secs : 0, empties, atomic_load(&failed));
    int first = 1;
    for (int o = 0; o < OP_N; o++) {
        const hist *h = &tot[o];
        if (h->n == 0 && h->errors == 0) continue;
        printf("%s\"%s\":{\"n\":%llu,\"per_s\":%.1f,\"errors\":%llu,\"mean_ms\":%.3f,\"p50_ms\":%.3f,"
               "\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"p999_ms\":%.3f,\"max_ms\":%.3f}",
               first ? "" : ",", op_name[o], (unsigned long long)h->n, secs > 0 ? (double)h->n / secs : 0,
               (unsigned long long)h->errors, h->n ? (double)h->sum_ns / (double)h->n / 1e6 : 0,
               (double)hist_quantile(h, 0.5) / 1e6, (double)hist_quantile(h, 0.9) / 1e6,
               (double)hist_quantile(h, 0.99) / 1e6, (double)hist_quantile(h, 0.999) / 1e6,
               (double)h->max_ns / 1e6);
        first = 0;
    }
    printf("}}\n");
    return atomic_load(&failed) ? 1 : 0;
}
