/* fsync_rate.c: the disk's durable-append ceiling. Appends 100 bytes and
 * calls fdatasync, in a loop, for SECONDS (5) in DIR, then prints one JSON
 * object: appends/s and the p50/p99 latency of one append + fdatasync.
 *
 *   fsync_rate DIR [SECONDS]   (DIR on the same filesystem as the data dirs) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hist.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: fsync_rate DIR [SECONDS]\n");
        return 2;
    }
    double secs = argc > 2 ? atof(argv[2]) : 5;
    char path[4096];
    snprintf(path, sizeof path, "%s/fsync_rate.%d", argv[1], (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(path);
        return 1;
    }
    char buf[100];
    memset(buf, 'x', sizeof buf);
    static hist h;
    uint64_t t0 = now_ns(), end = t0 + (uint64_t)(secs * 1e9), t = t0;
    while (t < end) {
        if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf || fdatasync(fd) != 0) {
            perror("write/fdatasync");
            return 1;
        }
        uint64_t t1 = now_ns();
        hist_add(&h, t1 - t);
        t = t1;
    }
    close(fd);
    unlink(path);
    double el = (double)(t - t0) / 1e9;
    printf("{\"appends\":%llu,\"seconds\":%.3f,\"per_s\":%.1f,\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n",
           (unsigned long long)h.n, el, (double)h.n / el, (double)hist_quantile(&h, 0.5) / 1e6,
           (double)hist_quantile(&h, 0.99) / 1e6);
    return 0;
}
