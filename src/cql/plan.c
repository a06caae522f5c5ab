/* plan.c: routing: the replicas of a token and the order in which a
 * request tries the nodes. */

#include "cluster_int.h"

/* --- Planning ------------------------------------------------------------ */

/* The index of the first ring entry whose token is >= t (wrapping). */
static int ring_find(const sl_cql_client *c, int64_t token) {
    int lo = 0, hi = c->nring;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (c->ring[mid].token < token)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo == c->nring ? 0 : lo;
}

/* The replicas of a token in keyspace ks, in ring order from its owner.
 * Called with mu held. */
int cql_replicas(const sl_cql_client *c, const char *ks, int64_t token, int *out, int max) {
    if (c->nring == 0) return 0;
    int start = ring_find(c, token), n = 0;
    const ks_repl *r = NULL;
    for (int i = 0; ks && ks[0] && i < c->nrepl && !r; i++)
        if (strcmp(c->repl[i].ks, ks) == 0) r = &c->repl[i];
    int want = r && r->simple ? r->rf : 0, need = 0, have[MAX_RDC] = {0};
    for (int d = 0; r && d < r->ndc; d++)
        need += r->dcs[d].rf;
    if (!r || (!want && !need)) { /* unknown replication: the owner alone */
        out[0] = c->ring[start].node;
        return 1;
    }
    for (int k = 0; k < c->nring && n < max; k++) {
        int ni = c->ring[(start + k) % c->nring].node, dup = 0;
        for (int j = 0; j < n; j++)
            dup |= out[j] == ni;
        if (dup) continue;
        if (want) {
            out[n++] = ni;
            if (n == want) break;
            continue;
        }
        for (int d = 0; d < r->ndc; d++)
            if (strcmp(c->nodes[ni].dc, r->dcs[d].dc) == 0 && have[d] < r->dcs[d].rf) {
                have[d]++;
                out[n++] = ni;
                need--;
                break;
            }
        if (need == 0) break;
    }
    return n;
}

static int usable(const node *n, const char *local_dc, int local) {
    return n->up && !n->removed && (strcmp(n->dc, local_dc) == 0) == local;
}

/* Fills plan[] with node indexes to try, best first: the token's replicas
 * in the local DC (from a rotating start), the other local nodes
 * round-robin, then, only when no local node is up, the remote ones. Called
 * with mu held. */
int cql_make_plan(sl_cql_client *c, int has_token, int64_t token, const char *ks, int *plan) {
    int np = 0;
    uint64_t rot = c->rr++; /* one rotation per plan spreads the load */
    if (has_token) {
        int reps[MAX_PLAN], nr = cql_replicas(c, ks, token, reps, MAX_PLAN), local[MAX_PLAN], nl = 0;
        for (int i = 0; i < nr; i++)
            if (usable(&c->nodes[reps[i]], c->local_dc, 1)) local[nl++] = reps[i];
        for (int i = 0; i < nl; i++)
            plan[np++] = local[(rot + (uint64_t)i) % (uint64_t)nl];
    }
    for (int pass = 0; pass < 2 && np < MAX_PLAN; pass++) {
        if (pass == 1 && np > 0) break; /* remote DCs only when no local node is up */
        for (int k = 0; k < c->nnodes && np < MAX_PLAN; k++) {
            int i = (int)((rot + (uint64_t)k) % (uint64_t)c->nnodes);
            if (!usable(&c->nodes[i], c->local_dc, pass == 0)) continue;
            int dup = 0;
            for (int j = 0; j < np; j++)
                dup |= plan[j] == i;
            if (!dup) plan[np++] = i;
        }
    }
    /* A node whose last request timed out goes last, replica or not: a
     * frozen or overloaded node keeps its connections open, so nothing
     * else tells the pools to avoid it, and every request sent to it would
     * wait out the timeout. It keeps its place in the order otherwise, and
     * a request that succeeds on it clears the mark. */
    int64_t now = sl_mono_ms();
    int fast[MAX_PLAN], slow[MAX_PLAN], nf = 0, ns = 0;
    for (int j = 0; j < np; j++) {
        if (c->nodes[plan[j]].suspect_until > now)
            slow[ns++] = plan[j];
        else
            fast[nf++] = plan[j];
    }
    if (ns > 0 && nf > 0) {
        memcpy(plan, fast, (size_t)nf * sizeof *plan);
        memcpy(plan + nf, slow, (size_t)ns * sizeof *plan);
    }
    return np;
}

/* What a request to node i found out about it: a timeout marks it suspect
 * for a while, longer after each one in a row (up to SUSPECT_MAX_MS); an
 * answer clears that. Timeouts of requests that were all in flight when
 * the node stopped answering are one event, not one each: only a timeout
 * after the window ran out (the node was tried again and still did not
 * answer) lengthens it. Otherwise a node frozen under load would be
 * shunned for the longest window at once, long after it answers again. */
#define SUSPECT_MS 2000
#define SUSPECT_MAX_MS 30000
void cql_node_outcome(sl_cql_client *c, int i, int timed_out) {
    /* Every answer comes here: while no node is suspect (nearly always),
     * it costs one atomic read, not the client's lock. */
    if (!timed_out && __atomic_load_n(&c->nsuspect, __ATOMIC_ACQUIRE) == 0) return;
    pthread_mutex_lock(&c->mu); /* the node array may move: read it under the lock */
    node *n = &c->nodes[i];
    int64_t now = sl_mono_ms();
    if (timed_out && (n->timeouts == 0 || now >= n->suspect_until)) {
        int64_t ms = (int64_t)SUSPECT_MS << (n->timeouts < 4 ? n->timeouts : 4);
        if (ms > SUSPECT_MAX_MS) ms = SUSPECT_MAX_MS;
        if (n->timeouts++ == 0) {
            __atomic_add_fetch(&c->nsuspect, 1, __ATOMIC_RELEASE);
            sl_log(SL_INFO, "cql: node %s timed out; trying the others first", n->host);
        }
        n->suspect_until = now + ms;
    } else if (!timed_out && n->timeouts) {
        sl_log(SL_INFO, "cql: node %s answers again", n->host);
        __atomic_sub_fetch(&c->nsuspect, 1, __ATOMIC_RELEASE);
        n->timeouts = 0;
        n->suspect_until = 0;
    }
    pthread_mutex_unlock(&c->mu);
}

int sl_cql_routing_token(sl_cql_stmt *st, const sl_cql_bytes *vals, size_t n, int64_t *token) {
    if (!st || st->npk <= 0) return 0;
    sl_cql_bytes parts[MAX_BIND];
    for (int i = 0; i < st->npk; i++) {
        if (st->pk[i] >= n || vals[st->pk[i]].len < 0) return 0;
        parts[i] = vals[st->pk[i]];
    }
    if (st->npk == 1) {
        *token = sl_cql_token(parts[0].p, (size_t)parts[0].len);
        return 1;
    }
    uint8_t buf[1024];
    long need = sl_cql_token_composite(parts, (size_t)st->npk, buf, sizeof buf);
    if (need < 0) return 0;
    if ((size_t)need <= sizeof buf) {
        *token = sl_cql_token(buf, (size_t)need);
        return 1;
    }
    uint8_t *big = malloc((size_t)need);
    if (!big) return 0;
    sl_cql_token_composite(parts, (size_t)st->npk, big, (size_t)need);
    *token = sl_cql_token(big, (size_t)need);
    free(big);
    return 1;
}

int sl_cql_token_owner(sl_cql_client *c, int64_t token, char *buf, size_t cap) {
    pthread_mutex_lock(&c->mu);
    int rc = SL_ENOTFOUND;
    if (c->nring > 0) {
        snprintf(buf, cap, "%s", c->nodes[c->ring[ring_find(c, token)].node].host);
        rc = 0;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}
