/* graphite.c: see graphite.h. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../sluice.h"
#include "graphite.h"

#define IO_TIMEOUT_MS 2000 /* connect, and each wait to send */

static void path_part(sl_text *out, const char *s, size_t n) {
    char buf[256];
    size_t k = 0;
    for (size_t i = 0; i < n && k < sizeof buf - 1; i++) {
        char c = s[i];
        buf[k++] = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                           c == '-'
                       ? c
                       : '_';
    }
    if (k == 0) buf[k++] = '_';
    buf[k] = '\0';
    sl_text_printf(out, ".%s", buf);
}

void sl_graphite_lines(const char *prom, size_t n, const char *prefix, int64_t ts_s, sl_text *out) {
    const char *p = prom, *end = prom + n;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        const char *line = p;
        p = eol + 1;
        if (line == eol || *line == '#') continue;
        const char *sp = eol;
        while (sp > line && sp[-1] != ' ')
            sp--;
        if (sp == line) continue;
        char num[64];
        size_t vn = (size_t)(eol - sp);
        if (vn == 0 || vn >= sizeof num) continue;
        memcpy(num, sp, vn);
        num[vn] = '\0';
        char *stop;
        double v = strtod(num, &stop);
        if (*stop || !isfinite(v)) continue;
        const char *name_end = memchr(line, '{', (size_t)(sp - line));
        if (!name_end) name_end = sp - 1;
        size_t tlen = out->n;
        sl_text_printf(out, "%s", prefix);
        path_part(out, line, (size_t)(name_end - line));
        if (*name_end == '{') {
            /* label="value",label="value"} : the values, in order. */
            const char *q = name_end + 1;
            while (q < sp) {
                const char *open = memchr(q, '"', (size_t)(sp - q));
                if (!open) break;
                const char *close = open + 1;
                while (close < sp && *close != '"')
                    close += *close == '\\' ? 2 : 1;
                if (close >= sp) break;
                path_part(out, open + 1, (size_t)(close - open - 1));
                q = close + 1;
            }
        }
        sl_text_printf(out, " %s %lld\n", num, (long long)ts_s);
        if (out->oom) {
            out->n = tlen;
            return;
        }
    }
}

struct sl_graphite {
    char host[256], port[16], prefix[128];
    int interval_s;
    void (*collect)(void *ctx, sl_text *t);
    void *ctx;
    pthread_t t;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
    int failing; /* the last push failed: logged once until one succeeds */
};

/* Connects with a timeout; the descriptor is left non-blocking. */
static int dial(const sl_graphite *g, char *err, size_t cap) {
    struct addrinfo hints = {0}, *ai = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int gai = getaddrinfo(g->host, g->port, &hints, &ai);
    if (gai != 0 || !ai) {
        snprintf(err, cap, "%s", gai_strerror(gai));
        return -1;
    }
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, cap, "%s", strerror(errno));
        freeaddrinfo(ai);
        return -1;
    }
    int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
    freeaddrinfo(ai);
    if (rc != 0 && errno != EINPROGRESS) {
        snprintf(err, cap, "%s", strerror(errno));
        close(fd);
        return -1;
    }
    struct pollfd pf = {fd, POLLOUT, 0};
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    if (rc != 0 && (poll(&pf, 1, IO_TIMEOUT_MS) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 ||
                    soerr != 0)) {
        snprintf(err, cap, "%s", soerr ? strerror(soerr) : "connect timed out");
        close(fd);
        return -1;
    }
    return fd;
}

static int push(sl_graphite *g, const sl_text *lines, char *err, size_t cap) {
    int fd = dial(g, err, cap);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < lines->n) {
        ssize_t k = send(fd, lines->p + off, lines->n - off, MSG_NOSIGNAL);
        if (k > 0) {
            off += (size_t)k;
            continue;
        }
        struct pollfd pf = {fd, POLLOUT, 0};
        if (k < 0 && (errno == EAGAIN || errno == EINTR) && poll(&pf, 1, IO_TIMEOUT_MS) == 1) continue;
        snprintf(err, cap, "%s", k < 0 && errno != EAGAIN ? strerror(errno) : "send timed out");
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

static void *graphite_main(void *arg) {
    sl_thread_name("sl-graphite");
    sl_graphite *g = arg;
    pthread_mutex_lock(&g->mu);
    while (!g->stop) {
        int64_t due = sl_mono_ms() + (int64_t)g->interval_s * 1000, now;
        while (!g->stop && (now = sl_mono_ms()) < due)
            sl_cond_wait_ms(&g->cv, &g->mu, (int)(due - now));
        if (g->stop) break;
        pthread_mutex_unlock(&g->mu);
        sl_text prom = {0}, lines = {0};
        g->collect(g->ctx, &prom);
        if (!prom.oom && prom.p) sl_graphite_lines(prom.p, prom.n, g->prefix, (int64_t)time(NULL), &lines);
        char err[128] = "out of memory";
        int rc = prom.oom || lines.oom ? -1 : lines.n ? push(g, &lines, err, sizeof err) : 0;
        if (rc && !g->failing) sl_log(SL_INFO, "graphite: cannot push to %s:%s: %s", g->host, g->port, err);
        if (!rc && g->failing) sl_log(SL_INFO, "graphite: pushing to %s:%s again", g->host, g->port);
        g->failing = rc != 0;
        free(prom.p);
        free(lines.p);
        pthread_mutex_lock(&g->mu);
    }
    pthread_mutex_unlock(&g->mu);
    return NULL;
}

int sl_graphite_start(const char *url, const char *prefix, int interval_s, void (*collect)(void *ctx, sl_text *t),
                      void *ctx, sl_graphite **out) {
    *out = NULL;
    if (!url || !*url || interval_s < 1 || !prefix || strlen(prefix) >= 128) return SL_EINVAL;
    sl_graphite *g = calloc(1, sizeof *g);
    if (!g) return SL_ENOMEM;
    /* host:port, [v6]:port, or a host alone. */
    const char *h = url, *colon = strrchr(url, ':');
    size_t hn = colon ? (size_t)(colon - url) : strlen(url);
    if (*h == '[') {
        const char *rb = strchr(h, ']');
        if (!rb) goto bad;
        h++;
        hn = (size_t)(rb - h);
        colon = rb[1] == ':' ? rb + 1 : NULL;
        if (!colon && rb[1]) goto bad;
    }
    if (hn == 0 || hn >= sizeof g->host) goto bad;
    memcpy(g->host, h, hn);
    const char *port = colon ? colon + 1 : "2003";
    if (!*port || strlen(port) >= sizeof g->port || strspn(port, "0123456789") != strlen(port)) goto bad;
    snprintf(g->port, sizeof g->port, "%s", port);
    snprintf(g->prefix, sizeof g->prefix, "%s", prefix);
    g->interval_s = interval_s;
    g->collect = collect;
    g->ctx = ctx;
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    if (pthread_create(&g->t, NULL, graphite_main, g) != 0) {
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cv);
        free(g);
        return SL_EIO;
    }
    *out = g;
    return 0;
bad:
    free(g);
    return SL_EINVAL;
}

void sl_graphite_stop(sl_graphite *g) {
    if (!g) return;
    pthread_mutex_lock(&g->mu);
    g->stop = 1;
    pthread_cond_signal(&g->cv);
    pthread_mutex_unlock(&g->mu);
    pthread_join(g->t, NULL);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
    free(g);
}
