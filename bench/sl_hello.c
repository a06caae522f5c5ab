/* sl_hello.c: the HTTP stack's ceiling, Sluice's own server (src/http) with
 * the pool of 8 workers Sluice has on the embedded store, answering every
 * request with a small JSON body and nothing else: what Sluice would do if
 * its handlers took no time. mhd_hello.c is the same for libmicrohttpd,
 * the server before it; the two run side by side in bench/http_ab.sh.
 *
 *   sl_hello PORTFILE [THREADS]   binds 127.0.0.1 on a free port, writes
 *                                 the port to PORTFILE, runs until SIGTERM. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include "http/server.h"

static const char body[] = "{\"status\":\"ok\"}";

static int hello(sl_http_req *r, void *ctx) {
    (void)ctx;
    return sl_http_respond(r, 200, "application/json", body, sizeof body - 1);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: sl_hello PORTFILE [THREADS]\n");
        return 2;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    static const sl_http_route routes[] = {{"GET", "/", hello, 0, 0, NULL},
                                           {"GET", "/health", hello, 0, 0, NULL}};
    sl_http_config cfg = {
        .host = "127.0.0.1", .threads = argc > 2 ? atoi(argv[2]) : 8, .routes = routes, .nroutes = 2};
    sl_http_server *s;
    if (sl_http_start(&cfg, &s) != 0) {
        fprintf(stderr, "sl_hello: cannot start\n");
        return 1;
    }
    FILE *f = fopen(argv[1], "w");
    if (!f) return 1;
    fprintf(f, "%d\n", sl_http_port(s));
    fclose(f);
    int sig;
    sigwait(&set, &sig);
    sl_http_stop(s);
    return 0;
}
