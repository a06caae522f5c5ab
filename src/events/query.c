/* query.c: one page of a query (API.md "Queries").
 *
 * A query reads one index: by tag when tags are given (usually the most
 * selective), else by type when types are, else the 'all' index; each of
 * its values is one index key. It walks its range bucket by bucket in the
 * query's order. Buckets have one width in a deployment, so the buckets of
 * every key line up: the next bucket is the nearest one that some key's
 * bucket directory lists, and the page reads that bucket's shards of every
 * key that has it, from the position reached, merging them in position
 * order (sl_ev_merge: an event with two wanted tags sits in two keys'
 * partitions and counts once). An entry must also match the other filter
 * (its type, when reading by tag). Then the page's events are read; an
 * entry whose event is missing, unconfirmed or at another position (an
 * ingest cut and stored again) is skipped.
 *
 * A page stops at limit events, after examining SCAN_FACTOR x limit
 * entries, or after PAGE_BUCKETS buckets, and names the position reached:
 * a sparse filter over a long range costs bounded work per page and never
 * loses its place. */
#include <stdlib.h>
#include <string.h>

#include "events_int.h"

#define PAGE_BUCKETS 64
#define SCAN_FACTOR 10
#define READ_MAX 1000 /* entries read from all partitions for one merge */

typedef struct {
    sl_evlog *l;
    const sl_ev_query *q;
    int nkeys;
    char ikeys[SL_EV_FILTER_MAX][IKEY_MAX];
    int by_tag_and_type; /* reading by tag, and types filter the entries too */
} qctx;

/* The nearest bucket of key k with entries, from bucket `from` towards
 * bucket `bound` (both included) in the query's order: 0 with its start,
 * width and shards, SL_ENOTFOUND, or a store error. The directory is
 * partitioned by month; a bucket lies in one month. */
static int next_bucket(qctx *c, int k, int64_t from, int64_t bound, int64_t *b, int64_t *width, int *shards) {
    int desc = c->q->desc;
    if (desc ? from < bound : from > bound) return SL_ENOTFOUND;
    int last = sl_ev_month(bound);
    for (int m = sl_ev_month(from);;
         m = desc ? (m % 100 == 1 ? (m / 100 - 1) * 100 + 12 : m - 1) : sl_ev_month_next(m)) {
        sl_result r;
        sl_result_init(&r);
        sl_slice s = {0};
        s.t = &sl_t_event_bucket;
        s.pk[0] = sl_vtext(c->ikeys[k]);
        s.pk[1] = sl_vint(m);
        s.from[0] = sl_vint(desc ? bound : from);
        s.to[0] = sl_vint(desc ? from : bound);
        s.nfrom = s.nto = 1;
        s.limit = 1;
        s.desc = desc;
        int rc = sl_store_slice(ev_store(c->l), &s, &r);
        if (rc == 0 && r.n == 1) {
            const sl_row *row = &r.rows[0];
            *b = row->v[BK_BUCKET].i;
            *width = row->v[BK_WIDTH].i;
            *shards = (int)row->v[BK_SHARDS].i;
            if (*width <= 0 || *shards < 1 || *shards > SL_EV_SHARDS_MAX) rc = SL_EINTERNAL;
        } else if (rc == 0) {
            rc = SL_ENOTFOUND;
        }
        sl_result_free(&r);
        if (rc != SL_ENOTFOUND || m == last) return rc;
    }
}

/* One partition's entries, read for a merge. */
typedef struct {
    sl_ev_pos *pos;
    char (*type)[SL_EV_ID_MAX + 1];
} run_data;

static int type_wanted(const sl_ev_query *q, const char *type) {
    for (int i = 0; i < q->ntypes; i++)
        if (strcmp(q->types[i], type) == 0) return 1;
    return 0;
}

/* Reads partition (key k, bucket b, shard) after the cursor, within
 * [lo, hi) of time, at most n entries, into run and rd. */
static int read_run(qctx *c, int k, int64_t b, int shard, const sl_ev_pos *cur, int64_t lo, int64_t hi,
                    size_t n, sl_ev_run *run, run_data *rd) {
    sl_result r;
    sl_result_init(&r);
    sl_slice s = {0};
    s.t = &sl_t_event_index;
    s.pk[0] = sl_vtext(c->ikeys[k]);
    s.pk[1] = sl_vint(b);
    s.pk[2] = sl_vint(shard);
    s.limit = (int)n;
    s.desc = c->q->desc;
    /* The cursor bounds one side (exclusive, both columns); the range's
     * end within this bucket the other. */
    sl_val *near = c->q->desc ? s.to : s.from, *far = c->q->desc ? s.from : s.to;
    int *nnear = c->q->desc ? &s.nto : &s.nfrom, *nfar = c->q->desc ? &s.nfrom : &s.nto;
    if (cur) {
        near[0] = sl_vint(cur->us);
        near[1] = sl_vtext(cur->id);
        *nnear = 2;
        if (c->q->desc)
            s.to_excl = 1;
        else
            s.from_excl = 1;
    } else {
        near[0] = sl_vint(c->q->desc ? hi : lo);
        *nnear = 1;
        if (c->q->desc) s.to_excl = 1;
    }
    far[0] = sl_vint(c->q->desc ? lo : hi);
    *nfar = 1;
    if (!c->q->desc) s.to_excl = 1;
    int rc = sl_store_slice(ev_store(c->l), &s, &r);
    if (rc == 0) {
        run->n = 0;
        run->more = r.more;
        for (size_t i = 0; i < r.n && i < n; i++) {
            const sl_row *row = &r.rows[i];
            rd->pos[i].us = row->v[IX_RECORDED].i;
            if (sl_val_str(&row->v[IX_ID], rd->pos[i].id, sizeof rd->pos[i].id) < 0 ||
                sl_val_str(&row->v[IX_TYPE], rd->type[i], sizeof rd->type[i]) < 0) {
                rc = SL_EINTERNAL;
                break;
            }
            run->n++;
        }
        run->p = rd->pos;
    }
    sl_result_free(&r);
    return rc;
}

static int query_page(sl_evlog *l, const sl_ev_query *q, int limit, sl_ev_page *out);

int sl_evlog_query(sl_evlog *l, const sl_ev_query *q, int limit, sl_ev_page *out) {
    int64_t t0 = sl_latency_us();
    int rc = query_page(l, q, limit, out);
    if (rc == 0) ev_note_query(l, t0);
    return rc;
}

static int query_page(sl_evlog *l, const sl_ev_query *q, int limit, sl_ev_page *out) {
    memset(out, 0, sizeof *out);
    if (limit < 1 || limit > SL_EV_LIMIT_MAX || q->start_us < 0 || q->start_us > q->end_us ||
        !sl_name_valid(q->account))
        return SL_EINVAL;
    qctx c = {.l = l, .q = q};
    if (q->ntags > 0) {
        for (int i = 0; i < q->ntags; i++)
            ev_ikey(c.ikeys[c.nkeys++], q->account, 'g', q->tags[i]);
        c.by_tag_and_type = q->ntypes > 0;
    } else if (q->ntypes > 0) {
        for (int i = 0; i < q->ntypes; i++)
            ev_ikey(c.ikeys[c.nkeys++], q->account, 't', q->types[i]);
    } else {
        ev_ikey(c.ikeys[c.nkeys++], q->account, 'a', "");
    }
    sl_ev_pos *cand = sl_calloc((size_t)limit, sizeof *cand);
    sl_ev_run *runs = sl_calloc(SL_EV_MERGE_MAX, sizeof *runs);
    run_data *rd = sl_calloc(SL_EV_MERGE_MAX, sizeof *rd);
    sl_ev_pos *pos = sl_malloc((READ_MAX + SL_EV_MERGE_MAX) * sizeof *pos);
    char(*types)[SL_EV_ID_MAX + 1] = sl_malloc((READ_MAX + SL_EV_MERGE_MAX) * sizeof *types);
    sl_ev_hit *hits = sl_malloc((READ_MAX + SL_EV_MERGE_MAX) * sizeof *hits);
    int rc = cand && runs && rd && pos && types && hits ? 0 : SL_ENOMEM;

    /* Nothing older than the longest retention is kept: the directory
     * is not searched before it. */
    int64_t lo = q->start_us, hi = q->end_us, floor = sl_now_us() - (int64_t)SL_EV_RETENTION_MAX * 1000000;
    if (floor < 0) floor = 0;
    int have = q->has_last, desc = q->desc, done = 0;
    sl_ev_pos cur = q->last;
    size_t ncand = 0, scanned = 0, budget = (size_t)limit * SCAN_FACTOR;
    int buckets = 0;
    while (rc == 0) {
        /* The time the next entry can have, at the most (descending) or
         * the least (ascending). */
        int64_t t = desc ? (have ? (cur.id[0] ? cur.us : cur.us - 1) : hi - 1) : (have ? cur.us : lo);
        if (desc ? t < lo : t >= hi) {
            done = 1;
            break;
        }
        /* The buckets from the one holding t to the last the range reaches
         * (never before the retention's floor): the same for every key,
         * since buckets line up. */
        int64_t far_t = desc ? (lo > floor ? lo : floor) : hi - 1, w = ev_width(l);
        int64_t from = sl_ev_bucket(t, w), bound = sl_ev_bucket(far_t, w);
        if (!desc && from < sl_ev_bucket(floor, w)) from = sl_ev_bucket(floor, w);
        int64_t b = 0, width0 = 0, bk[SL_EV_FILTER_MAX];
        int shards[SL_EV_FILTER_MAX], found = 0;
        for (int k = 0; k < c.nkeys && rc == 0; k++) {
            int64_t wk;
            int r = next_bucket(&c, k, from, bound, &bk[k], &wk, &shards[k]);
            if (r == SL_ENOTFOUND) {
                bk[k] = -1;
                continue;
            }
            if (r) {
                rc = r;
                break;
            }
            if (!found || (desc ? bk[k] > b : bk[k] < b)) b = bk[k], width0 = wk;
            found = 1;
        }
        if (rc) break;
        if (!found) {
            done = 1;
            break;
        }
        /* This bucket's partitions, from the cursor. */
        size_t nruns = 0, per = 0;
        for (int k = 0; k < c.nkeys; k++)
            if (bk[k] == b) nruns += (size_t)shards[k];
        per = (READ_MAX < budget - scanned ? READ_MAX : budget - scanned) / nruns + 1;
        if (per < 2) per = 2;
        int64_t seg_lo = b > lo ? b : lo, seg_hi = b + width0 < hi ? b + width0 : hi;
        size_t used = 0;
        nruns = 0;
        for (int k = 0; k < c.nkeys && rc == 0; k++) {
            if (bk[k] != b) continue;
            for (int sh = 0; sh < shards[k] && rc == 0; sh++) {
                rd[nruns].pos = pos + used;
                rd[nruns].type = types + used;
                int inside = have && (desc ? cur.us <= seg_hi : cur.us >= seg_lo);
                rc = read_run(&c, k, b, sh, inside ? &cur : NULL, seg_lo, seg_hi, per, &runs[nruns],
                              &rd[nruns]);
                used += runs[nruns].n;
                nruns++;
            }
        }
        if (rc) break;
        int cut = 0, stop = 0;
        size_t nh = sl_ev_merge(runs, nruns, desc, budget - scanned, hits, &cut);
        for (size_t i = 0; i < nh && !stop; i++) {
            const sl_ev_pos *p = &runs[hits[i].r].p[hits[i].i];
            scanned++;
            cur = *p;
            have = 1;
            if (!c.by_tag_and_type || type_wanted(q, rd[hits[i].r].type[hits[i].i])) cand[ncand++] = *p;
            stop = ncand == (size_t)limit || scanned >= budget;
        }
        if (stop) break;
        if (cut && nh == 0) { /* cannot be: a slice cut at its limit returned entries */
            rc = SL_EINTERNAL;
            break;
        }
        if (!cut) {
            /* The bucket is read to its end within the range. */
            buckets++;
            cur.us = desc ? b : b + width0;
            cur.id[0] = '\0';
            have = 1;
            if (desc ? b <= lo : b + width0 >= hi) {
                done = 1;
                break;
            }
            if (buckets >= PAGE_BUCKETS) break;
        }
    }

    if (rc == 0 && ncand > 0 && !(out->events = sl_calloc(ncand, sizeof *out->events))) rc = SL_ENOMEM;
    for (size_t i = 0; rc == 0 && i < ncand; i++) {
        sl_stored_event *e = &out->events[out->n];
        int r = sl_evlog_get(l, q->account, cand[i].id, e);
        if (r == 0 && e->recorded_us == cand[i].us) {
            out->n++;
            continue;
        }
        if (r == 0)
            sl_stored_event_free(e); /* stored again at another position: read there */
        else if (r != SL_ENOTFOUND)
            rc = r;
    }
    free(cand);
    free(runs);
    free(rd);
    free(pos);
    free(types);
    free(hits);
    if (rc) {
        sl_ev_page_free(out);
        return rc;
    }
    out->done = done;
    if (!done) {
        out->next = *q;
        out->next.has_last = 1;
        out->next.last = cur;
    }
    return 0;
}

void sl_ev_page_free(sl_ev_page *p) {
    for (size_t i = 0; i < p->n; i++)
        sl_stored_event_free(&p->events[i]);
    free(p->events);
    p->events = NULL;
    p->n = 0;
}
