/* index.c: the index partitions (time buckets, shards and the months of the
 * bucket directory) and the merge of their slices in position order.
 *
 * An index partition is (account, kind, key, bucket, shard): one key's
 * entries of one time bucket, spread over the bucket's shards. The bucket
 * directory lists an index key's buckets by month, so that a scan of a long
 * range reads the buckets that hold entries and skips empty time. */
#include <string.h>

#include "events.h"

int64_t sl_ev_bucket(int64_t us, int64_t width_us) {
    return us - us % width_us;
}

int sl_ev_month(int64_t us) {
    int y, m, d;
    sl_civil_from_days(us / 86400000000LL, &y, &m, &d);
    return y * 100 + m;
}

int sl_ev_month_next(int m) {
    return m % 100 == 12 ? (m / 100 + 1) * 100 + 1 : m + 1;
}

int64_t sl_ev_month_start(int m) {
    return sl_days_from_civil(m / 100, m % 100, 1) * 86400000000LL;
}

int sl_ev_shard(const char *id, int shards) {
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)id; *p; p++)
        h = (h ^ *p) * 16777619u;
    return (int)(h % (uint32_t)shards);
}

/* The merge keeps a head per run and takes the first head in the query's
 * order each step: a query reads at most a few dozen partitions (10 keys of
 * 4 shards by default), where a scan of the heads costs less than a heap's
 * upkeep. */
size_t sl_ev_merge(const sl_ev_run *runs, size_t nruns, int desc, size_t limit, sl_ev_hit *out, int *cut) {
    size_t head[SL_EV_MERGE_MAX];
    const sl_ev_pos *frontier = NULL; /* the first run end that more entries may follow */
    int sign = desc ? -1 : 1;
    size_t got = 0;
    *cut = 0;
    if (nruns > sizeof head / sizeof head[0]) nruns = sizeof head / sizeof head[0];
    for (size_t r = 0; r < nruns; r++) {
        head[r] = 0;
        if (!runs[r].more) continue;
        if (runs[r].n == 0) { /* nothing is known of this run: nothing can be merged */
            *cut = 1;
            return 0;
        }
        const sl_ev_pos *end = &runs[r].p[runs[r].n - 1];
        if (!frontier || sign * sl_ev_pos_cmp(end, frontier) < 0) frontier = end;
    }
    while (got < limit) {
        size_t best = nruns;
        for (size_t r = 0; r < nruns; r++)
            if (head[r] < runs[r].n &&
                (best == nruns || sign * sl_ev_pos_cmp(&runs[r].p[head[r]], &runs[best].p[head[best]]) < 0))
                best = r;
        if (best == nruns) break;
        const sl_ev_pos *p = &runs[best].p[head[best]];
        if (frontier && sign * sl_ev_pos_cmp(p, frontier) > 0) {
            *cut = 1;
            break;
        }
        out[got++] = (sl_ev_hit){(uint32_t)best, (uint32_t)head[best]};
        /* The same position in other runs (and a run that repeats it) is the
         * same event: skip it everywhere. */
        for (size_t r = 0; r < nruns; r++)
            while (head[r] < runs[r].n && sl_ev_pos_cmp(&runs[r].p[head[r]], p) == 0)
                head[r]++;
    }
    return got;
}
