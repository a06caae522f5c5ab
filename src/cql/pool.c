/* pool.c: each node's pool of connections, and the maintenance thread that
 * replaces dead ones and keeps the control connection. */

#include "cluster_int.h"

/* --- Pools --------------------------------------------------------------- */

/* The last reference to a retired connection goes: the maintenance thread
 * closes it, since the caller may be that connection's own I/O thread (a
 * request's callback), which cannot join itself. */
void cql_pconn_release(sl_cql_client *c, pconn *p) {
    pthread_mutex_lock(&c->mu);
    if (--p->refs == 0 && p->retired) {
        p->next = c->graveyard;
        c->graveyard = p;
        pthread_cond_signal(&c->maint_cv);
    }
    pthread_mutex_unlock(&c->mu);
}

void cql_close_graveyard(sl_cql_client *c) {
    pthread_mutex_lock(&c->mu);
    pconn *p = c->graveyard;
    c->graveyard = NULL;
    pthread_mutex_unlock(&c->mu);
    while (p) {
        pconn *next = p->next;
        sl_cql_conn_close(p->c);
        free(p);
        p = next;
    }
}

/* The live connection of a node with the fewest requests in flight, with a
 * reference taken. Called with mu held. */
pconn *cql_pick_conn_locked(sl_cql_client *c, node *n) {
    pconn *best = NULL;
    int bestn = 0;
    for (int k = 0; k < c->cfg.pool_size; k++) {
        pconn *p = n->pool[k];
        if (!p || p->retired || !sl_cql_conn_healthy(p->c)) continue;
        int inf = sl_cql_conn_inflight(p->c);
        if (!best || inf < bestn) best = p, bestn = inf;
    }
    if (best) best->refs++;
    return best;
}

/* One pass of the maintenance thread over the pools. */
void cql_maintain_pools(sl_cql_client *c) {
    int64_t now = sl_mono_ms();
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->nnodes; i++) {
        node *n = &c->nodes[i];
        int live = 0;
        for (int k = 0; k < MAX_POOL; k++) {
            pconn *p = n->pool[k];
            if (!p) continue;
            if (!n->removed && k < c->cfg.pool_size && sl_cql_conn_alive(p->c)) {
                live++;
                continue;
            }
            n->pool[k] = NULL;
            p->retired = 1;
            if (p->refs == 0) {
                sl_cql_conn *cl = p->c;
                free(p);
                pthread_mutex_unlock(&c->mu);
                sl_cql_conn_close(cl);
                pthread_mutex_lock(&c->mu);
                n = &c->nodes[i]; /* the array may have moved */
            }
        }
        if (n->removed || live >= c->cfg.pool_size || now < n->next_try_ms || c->stopping) {
            n->up = live > 0;
            continue;
        }
        char host[64];
        snprintf(host, sizeof host, "%s", n->host);
        int port = n->port;
        pthread_mutex_unlock(&c->mu);
        sl_cql_conn *cn = NULL;
        int rc = cql_open_conn(c, host, port, 0, &cn);
        pthread_mutex_lock(&c->mu);
        n = &c->nodes[i];
        if (rc == 0) {
            sl_count(&n->st->connects, 1);
            pconn *p = calloc(1, sizeof *p);
            int placed = 0;
            for (int k = 0; p && k < c->cfg.pool_size && !placed; k++)
                if (!n->pool[k]) n->pool[k] = p, placed = 1;
            if (placed) {
                p->c = cn;
                if (!c->version) c->version = sl_cql_conn_version(cn);
                if (n->said_down) sl_log(SL_INFO, "cql: node %s is up again", n->host);
                n->said_down = 0;
                n->up = 1;
                n->backoff_ms = 0;
                n->next_try_ms = 0;
                i--; /* fill the rest of this node's pool */
            } else {
                free(p);
                pthread_mutex_unlock(&c->mu);
                sl_cql_conn_close(cn);
                pthread_mutex_lock(&c->mu);
            }
        } else {
            int min = c->cfg.reconnect_min_ms, max = c->cfg.reconnect_max_ms;
            n->backoff_ms = n->backoff_ms ? n->backoff_ms * 2 : min;
            if (n->backoff_ms > max) n->backoff_ms = max;
            n->next_try_ms = sl_mono_ms() + n->backoff_ms;
            if (live == 0) {
                if (!n->said_down)
                    sl_log(SL_ERR, "cql: node %s:%d is down (%s); retrying in %d ms", host, port,
                           sl_strerror(rc), n->backoff_ms);
                n->said_down = 1;
                n->up = 0;
            }
        }
    }
    pthread_mutex_unlock(&c->mu);
}

/* Reopens the control connection on any node that is up, and refreshes
 * the topology when it was reopened or an event asked for it. */
static void maintain_control(sl_cql_client *c) {
    pthread_mutex_lock(&c->ctl_mu);
    int reopened = 0;
    if (c->control && !sl_cql_conn_alive(c->control)) {
        sl_cql_conn_close(c->control);
        c->control = NULL;
    }
    if (!c->control) {
        pthread_mutex_lock(&c->mu);
        int n = c->nnodes;
        pthread_mutex_unlock(&c->mu);
        for (int i = 0; i < n && !c->control; i++) {
            char host[64];
            int port, up;
            pthread_mutex_lock(&c->mu);
            snprintf(host, sizeof host, "%s", c->nodes[i].host);
            port = c->nodes[i].port;
            up = c->nodes[i].up && !c->nodes[i].removed;
            pthread_mutex_unlock(&c->mu);
            if (up && cql_open_conn(c, host, port, 1, &c->control) == 0) reopened = 1;
        }
    }
    pthread_mutex_lock(&c->mu);
    int refresh = c->refresh_needed || reopened;
    c->refresh_needed = 0;
    char host[64];
    snprintf(host, sizeof host, "%s", c->control_node < c->nnodes ? c->nodes[c->control_node].host : "");
    pthread_mutex_unlock(&c->mu);
    if (refresh && c->control && cql_refresh_topology(c, host) != 0) {
        pthread_mutex_lock(&c->mu);
        c->refresh_needed = 1;
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_unlock(&c->ctl_mu);
}

void *cql_maint_main(void *arg) {
    sl_thread_name("sl-cql-maint");
    sl_cql_client *c = arg;
    for (;;) {
        pthread_mutex_lock(&c->mu);
        if (c->stopping) {
            pthread_mutex_unlock(&c->mu);
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        pthread_cond_timedwait(&c->maint_cv, &c->mu, &ts);
        int stop = c->stopping;
        pthread_mutex_unlock(&c->mu);
        if (stop) break;
        cql_close_graveyard(c);
        cql_maintain_pools(c);
        maintain_control(c);
    }
    return NULL;
}
