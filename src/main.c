/* main.c: subcommands, configuration, signals and wiring.
 *
 *   sluice dev    [--data DIR] [--port N] [--host ADDR] ...
 *   sluice serve  [--config FILE] [--data DIR] [--port N] [--host ADDR] ...
 *   sluice queue|put|get|ack ...   (client commands, client/client.c)
 *   sluice schema [--create-keyspace] [--replication MAP] ...
 *   sluice version | help
 *
 * Configuration comes from flags, then SLUICE_* environment variables, then
 * a config file of "key = value" lines, in that order of precedence. A key
 * may be written data_dir, data-dir or SLUICE_DATA_DIR alike. The Cassandra
 * settings use the operators' names (CONTACT_POINTS, KEYSPACE, ...); when
 * contact points are set, the store is Cassandra instead of SQLite.
 *
 * Shutdown on SIGINT or SIGTERM runs in dependency order: the HTTP server
 * stops accepting and drains in-flight handlers (so commits they started
 * finish), then the engine stops its threads, then the store closes. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "sluice.h"
#include "account/account.h"
#include "api/api.h"
#include "api/req.h"
#include "client/client.h"
#include "cql/client.h"
#include "events/events.h"
#include "http/server.h"
#include "queue/queue.h"
#include "store/store.h"
#include "util/graphite.h"

#define EXIT_USAGE 2
/* HTTP event-loop threads by default: on the embedded store one per core
 * this process may run on (bench/results/threads.md: on 2 cores, 2 event
 * loops serve W1 at the rate of 8 with 3-12% less CPU and W2 up to 13%
 * faster, and 1 is slower), 4 on Cassandra; and store threads: requests
 * that wait on the store (on Cassandra, every one that reads or writes it)
 * are in flight on these at once, at most. */
#define DEFAULT_THREADS_CQL 4
#define DEFAULT_STORE_THREADS_EMBEDDED 4
/* On Cassandra the store pool's threads only carry handlers between waits
 * (their fibers park while the node answers): twice the cores, and 4 at
 * least. More only add switching: on two cores 8 threads beat 64
 * (bench/results/fibers.md), and 4 beat 8 (bench/results/w4-carriers.md). */
#define DEFAULT_STORE_THREADS_CQL_MIN 4

typedef struct {
    char data_dir[PATH_MAX];
    char host[256];
    int port;
    int threads, store_threads;
    long long max_message_bytes;
    long long max_json_bytes;
    int log_level;
    char log_format[8];
    char log_app[128];
    int max_pending_writes;
    int max_waiters;
    char admin_host[256];
    int admin_port;
    char admin_token[1025];
    int auth_skew_s;
    int event_settle_ms;
    int event_bucket_s, event_shards;
    /* Cassandra: used when contact_points is set. */
    char contact_points[1024];
    char keyspace[64];
    char username[256], password[256];
    uint16_t consistency, serial_consistency;
    int cassandra_port;
    int use_ssl, ssl_verify_host;
    char ssl_ca_file[PATH_MAX];
    char data_center[128];
    char cluster_name[256];
    int request_timeout_ms;
    /* HTTP */
    int http_request_timeout_s, http_idle_timeout_s;
    char tls_cert[PATH_MAX], tls_key[PATH_MAX];
    /* Graphite */
    int use_graphite;
    char graphite_url[300];
    char graphite_prefix[128];
    int graphite_interval_s;
} config;

static void print_options(FILE *f);

/* The cores this process may run on: its affinity mask (taskset, a
 * container's cpuset), else the cores online; 512 at most, so that twice
 * as many store threads stay within their option's bound. */
static int cores_usable(void) {
    cpu_set_t set;
    long n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 0;
    if (n <= 0) n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 512 ? 512 : (int)n;
}

static void usage(FILE *f) {
    fprintf(f, "usage:\n"
               "  sluice dev   [--data DIR] [--port N] [--host ADDR] [options]\n"
               "      A local server on the embedded store, in DIR or a new temporary\n"
               "      directory, with an account 'dev'. Binds 127.0.0.1:8080 by default.\n"
               "  sluice serve [--config FILE] [--data DIR] [--port N] [--host ADDR] [options]\n"
               "      The server on the embedded store in DIR. Binds 0.0.0.0:8080 by default.\n"
               "  sluice schema [--create-keyspace] [--replication MAP] [options]   (alias: bootstrap)\n"
               "      Creates or migrates the Cassandra schema in KEYSPACE (needs CONTACT_POINTS);\n"
               "      --create-keyspace also creates the keyspace, by default with\n"
               "      {'class':'SimpleStrategy','replication_factor':1}.\n"
               "  sluice queue create|list|stats|delete [NAME]   client commands, see\n"
               "  sluice put QUEUE MESSAGE | get QUEUE | ack QUEUE RECEIPT   `sluice help client`\n"
               "  sluice version\n"
               "  sluice help [client | config]\n"
               "\n"
               "options: a flag, the same in the environment, or a key in the file of\n"
               "\"key = value\" lines that --config FILE names; flags override the\n"
               "environment, which overrides the file.\n");
    print_options(f);
}

/* --- Configuration ------------------------------------------------------ */

/* data-dir, DATA_DIR, SLUICE_DATA_DIR -> data_dir. */
static void normalize_key(const char *in, char *out, size_t cap) {
    size_t o = 0;
    if (strncasecmp(in, "sluice_", 7) == 0) in += 7;
    for (; *in && o + 1 < cap; in++)
        out[o++] = *in == '-' ? '_' : (char)tolower((unsigned char)*in);
    out[o] = '\0';
}

static int parse_bool(const char *v, int *out) {
    if (strcasecmp(v, "1") == 0 || strcasecmp(v, "true") == 0 || strcasecmp(v, "yes") == 0 ||
        strcasecmp(v, "on") == 0)
        *out = 1;
    else if (strcasecmp(v, "0") == 0 || strcasecmp(v, "false") == 0 || strcasecmp(v, "no") == 0 ||
             strcasecmp(v, "off") == 0 || !*v)
        *out = 0;
    else
        return -1;
    return 0;
}

/* Copies a string setting; -1 when it does not fit. */
static int set_str(char *dst, size_t cap, const char *v) {
    if (strlen(v) >= cap) return -1;
    snprintf(dst, cap, "%s", v);
    return 0;
}

static int parse_num(const char *v, long long lo, long long hi, long long *out) {
    char *end;
    if (!*v || !isdigit((unsigned char)*v)) return -1;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || *end || n < lo || n > hi) return -1;
    *out = n;
    return 0;
}

/* Every setting, once: its file key (also what the environment variable and
 * the flag normalize to), an alias, its flag, its environment variable, its
 * type and range, its initial value, and the help that `sluice help`, `sluice
 * help config` (the README's tables) and the errors show. */
enum { O_STR, O_INT, O_LLONG, O_BOOL, O_LOG, O_CL, O_SERIAL_CL };
typedef struct {
    const char *key, *alias; /* alias: another key accepted (may be NULL) */
    const char *flag, *flag2, *env;
    int type;
    size_t off, size;
    long long lo, hi;  /* O_INT, O_LLONG: the range; O_STR: the least length */
    const char *init;  /* set before the file, the environment and the flags; NULL: none */
    const char *shown; /* the default as documented (NULL: init) */
    const char *help;
    int cassandra; /* 1: listed with Cassandra's settings */
} option;

#define OPT(key, flag, env, type, field, lo, hi, init, shown, help)                                        \
    {key, NULL, flag, NULL, env, type, offsetof(config, field), sizeof(((config *)0)->field), lo, hi, init, shown, help, 0}
#define CQL(key, flag, env, type, field, lo, hi, init, shown, help)                                        \
    {key, NULL, flag, NULL, env, type, offsetof(config, field), sizeof(((config *)0)->field), lo, hi, init, shown, help, 1}

static const option options[] = {
    {"data_dir", "data", "--data", "--data-dir", "SLUICE_DATA_DIR", O_STR, offsetof(config, data_dir),
     sizeof(((config *)0)->data_dir), 1, 0, NULL, "`dev`: a new temporary directory; `serve`: required",
     "the embedded store's directory", 0},
    OPT("port", "--port", "SLUICE_PORT", O_INT, port, 0, 65535, "8080", NULL,
        "the queue API's port (0 picks a free one)"),
    OPT("host", "--host", "SLUICE_HOST", O_STR, host, 1, 0, NULL, "`dev`: 127.0.0.1; `serve`: 0.0.0.0",
        "the address to listen on"),
    OPT("threads", "--threads", "SLUICE_THREADS", O_INT, threads, 1, 1024, NULL,
        "one per core embedded, 4 on Cassandra", "HTTP event-loop threads"),
    OPT("store_threads", "--store-threads", "SLUICE_STORE_THREADS", O_INT, store_threads, 1, 1024, NULL,
        "4 embedded; on Cassandra twice the cores, 4 at least",
        "threads that carry the handlers that wait on the store (each on a fiber: one waiting on Cassandra "
        "parks and holds none)"),
    OPT("max_message_bytes", "--max-message-bytes", "SLUICE_MAX_MESSAGE_BYTES", O_LLONG, max_message_bytes, 1,
        1 << 20, "1048576", NULL, "the largest message (1 MiB at most, as in SQS)"),
    OPT("max_json_bytes", "--max-json-bytes", "SLUICE_MAX_JSON_BYTES", O_LLONG, max_json_bytes, 1024,
        256 << 20, "1048576", NULL, "the largest JSON request body"),
    OPT("log_level", "--log-level", "SLUICE_LOG_LEVEL", O_LOG, log_level, 0, 2, "info", NULL,
        "error, info or debug (or 0-2); debug adds a line per request"),
    OPT("log_format", "--log-format", "SLUICE_LOG_FORMAT", O_STR, log_format, 1, 0, "text", NULL,
        "`text`, or `json`: one object per line (time, level, app, message; requestId, method, route, "
        "account, queue while a request runs; status and latencyMs on request lines)"),
    OPT("logstash_custom_app_name", NULL, "LOGSTASH_CUSTOM_APP_NAME", O_STR, log_app, 1, 0, "sluice", NULL,
        "the `app` field of JSON log lines"),
    OPT("admin_port", "--admin-port", "SLUICE_ADMIN_PORT", O_INT, admin_port, 0, 65535, "8081", NULL,
        "the admin API's port (0 picks a free one)"),
    OPT("admin_host", "--admin-host", "SLUICE_ADMIN_HOST", O_STR, admin_host, 1, 0, "127.0.0.1", NULL,
        "the admin API's address"),
    OPT("admin_token", "--admin-token", "SLUICE_ADMIN_TOKEN", O_STR, admin_token, 16, 0, NULL,
        "`dev`: made up and printed; `serve`: required",
        "the admin API's bearer token, 16 to 1024 characters (prefer the environment or the file: "
        "flags show in `ps`)"),
    OPT("auth_skew_seconds", "--auth-skew-seconds", "SLUICE_AUTH_SKEW_SECONDS", O_INT, auth_skew_s, 1, 3600,
        "60", NULL, "how far a signed request's time may be from the server's"),
    OPT("event_settle_ms", "--event-settle-ms", "SLUICE_EVENT_SETTLE_MS", O_INT, event_settle_ms, 0, 60000,
        "2000", NULL,
        "Cassandra: how far behind now the event log's reads stop (clock skew between nodes, ingests in "
        "flight)"),
    OPT("event_bucket_seconds", "--event-bucket-seconds", "SLUICE_EVENT_BUCKET_SECONDS", O_INT,
        event_bucket_s, 1, 86400, "60", NULL,
        "the event log's time buckets (a divisor of 86400); the first node of a deployment sets it, later "
        "ones use the stored one"),
    OPT("event_shards", "--event-shards", "SLUICE_EVENT_SHARDS", O_INT, event_shards, 1, 64, "4", NULL,
        "partitions per bucket of each event index key; set like the bucket width"),
    OPT("max_pending_writes", "--max-pending-writes", "SLUICE_MAX_PENDING_WRITES", O_INT, max_pending_writes,
        1, 1 << 24, "10000", NULL, "embedded store: writes waiting for a commit; beyond, 429"),
    OPT("max_waiters", "--max-waiters", "SLUICE_MAX_WAITERS", O_INT, max_waiters, 1, 1 << 24, "10000", NULL,
        "long polls waiting at once; beyond, 429"),
    OPT("tls_cert", "--tls-cert", "SLUICE_TLS_CERT", O_STR, tls_cert, 1, 0, NULL, "none: plain HTTP",
        "a PEM certificate chain: both ports serve HTTPS"),
    OPT("tls_key", "--tls-key", "SLUICE_TLS_KEY", O_STR, tls_key, 1, 0, NULL, "none",
        "the PEM private key of `tls_cert` (give both or neither)"),
    OPT("http_request_timeout", "--http-request-timeout", "SLUICE_HTTP_REQUEST_TIMEOUT", O_INT,
        http_request_timeout_s, 1, 3600, "30", NULL,
        "seconds for a request to arrive whole from its first byte, else 408"),
    OPT("http_idle_timeout", "--http-idle-timeout", "SLUICE_HTTP_IDLE_TIMEOUT", O_INT, http_idle_timeout_s, 1,
        86400, "60", NULL, "seconds after which a connection with no request in progress closes"),
    OPT("use_metrics_graphite", NULL, "USE_METRICS_GRAPHITE", O_BOOL, use_graphite, 0, 0, NULL, "off",
        "push the metrics of GET /metrics to a carbon plaintext receiver"),
    OPT("graphite_url", NULL, "GRAPHITE_URL", O_STR, graphite_url, 0, 0, NULL, "none",
        "the receiver's `host:port` (port 2003 when left out)"),
    OPT("graphite_prefix", NULL, "GRAPHITE_PREFIX", O_STR, graphite_prefix, 1, 0, "sluice", NULL,
        "the first component of every series' path"),
    OPT("graphite_interval", "--graphite-interval", "GRAPHITE_INTERVAL", O_INT, graphite_interval_s, 1, 3600,
        "10", NULL, "seconds between pushes"),
    CQL("contact_points", "--contact-points", "CONTACT_POINTS", O_STR, contact_points, 0, 0, NULL,
        "none: the embedded store", "`host[:port],...`; the other nodes are discovered"),
    CQL("cassandra_port", "--cassandra-port", "CASSANDRA_PORT", O_INT, cassandra_port, 1, 65535, NULL, "9042",
        "the native protocol port"),
    CQL("keyspace", "--keyspace", "KEYSPACE", O_STR, keyspace, 1, 0, "sluice", NULL, "the keyspace"),
    CQL("username", NULL, "USERNAME", O_STR, username, 0, 0, NULL, "none",
        "PasswordAuthenticator (SASL PLAIN)"),
    CQL("password", NULL, "PASSWORD", O_STR, password, 0, 0, NULL, "none", "its password"),
    {"consistency_level", "consistency", "--consistency-level", NULL, "CONSISTENCY_LEVEL", O_CL,
     offsetof(config, consistency), sizeof(((config *)0)->consistency), 0, 0, NULL, "LOCAL_QUORUM",
     "reads and writes", 1},
    {"serial_consistency_level", "serial_consistency", "--serial-consistency-level", NULL,
     "SERIAL_CONSISTENCY_LEVEL", O_SERIAL_CL, offsetof(config, serial_consistency),
     sizeof(((config *)0)->serial_consistency), 0, 0, NULL, "LOCAL_SERIAL",
     "compare-and-set (leases, acks, ids)", 1},
    CQL("data_center", "--data-center", "DATA_CENTER", O_STR, data_center, 0, 0, NULL,
        "the contact points' DC", "the local DC for DC-aware routing"),
    CQL("use_ssl", NULL, "USE_SSL", O_BOOL, use_ssl, 0, 0, NULL, "off", "TLS to the nodes"),
    CQL("ssl_ca_file", NULL, "SSL_CA_FILE", O_STR, ssl_ca_file, 0, 0, NULL,
        "none: the nodes' certificates are not verified", "the CA that signed the nodes' certificates"),
    CQL("ssl_verify_host", NULL, "SSL_VERIFY_HOST", O_BOOL, ssl_verify_host, 0, 0, NULL, "off",
        "check each node's certificate against its name or IP"),
    CQL("cluster_name", NULL, "CLUSTER_NAME", O_STR, cluster_name, 0, 0, NULL, "none",
        "checked against the cluster's, informational"),
    CQL("request_timeout_ms", "--request-timeout-ms", "SLUICE_REQUEST_TIMEOUT_MS", O_INT, request_timeout_ms,
        100, 600000, NULL, "5000",
        "a CQL request's timeout; the API answers 503 with `Retry-After` when the store does not"),
};
#define NOPTIONS (sizeof options / sizeof options[0])

static const option *option_find(const char *rawkey) {
    char key[64];
    normalize_key(rawkey, key, sizeof key);
    for (size_t i = 0; i < NOPTIONS; i++)
        if (strcmp(key, options[i].key) == 0 || (options[i].alias && strcmp(key, options[i].alias) == 0))
            return &options[i];
    return NULL;
}

/* Applies one setting. Returns 0, or -1 after printing what is wrong. */
static int set_key(config *c, const char *rawkey, const char *v, const char *from) {
    const option *o = option_find(rawkey);
    if (!o) {
        fprintf(stderr, "sluice: %s: unknown setting '%s'\n", from, rawkey);
        return -1;
    }
    char *field = (char *)c + o->off;
    long long n;
    int b;
    switch (o->type) {
    case O_STR:
        if (strlen(v) < (size_t)o->lo || set_str(field, o->size, v)) {
            if (o->lo > 1)
                fprintf(stderr, "sluice: %s: %s must be %lld to %zu characters\n", from, o->key, o->lo, o->size - 1);
            else
                fprintf(stderr, "sluice: %s: bad value '%s' for %s\n", from, v, rawkey);
            return -1;
        }
        return 0;
    case O_INT:
    case O_LLONG:
        if (parse_num(v, o->lo, o->hi, &n)) break;
        if (o->type == O_INT)
            *(int *)field = (int)n;
        else
            *(long long *)field = n;
        return 0;
    case O_BOOL:
        if (parse_bool(v, &b)) break;
        *(int *)field = b;
        return 0;
    case O_LOG:
        if (strcasecmp(v, "error") == 0)
            n = SL_ERR;
        else if (strcasecmp(v, "info") == 0)
            n = SL_INFO;
        else if (strcasecmp(v, "debug") == 0)
            n = SL_DEBUG;
        else if (parse_num(v, 0, 2, &n) != 0)
            break;
        *(int *)field = (int)n;
        return 0;
    case O_CL:
    case O_SERIAL_CL: {
        uint16_t cl = sl_cql_consistency_parse(v);
        int serial = cl == SL_CQL_SERIAL || cl == SL_CQL_LOCAL_SERIAL;
        if (!cl || serial != (o->type == O_SERIAL_CL)) break;
        *(uint16_t *)field = cl;
        return 0;
    }
    }
    fprintf(stderr, "sluice: %s: bad value '%s' for %s\n", from, v, rawkey);
    return -1;
}

/* The settings for `sluice help`: flag (or environment alone), variable,
 * file key, and what it is. */
static void print_options(FILE *f) {
    for (int cql = 0; cql <= 1; cql++) {
        fprintf(f, cql ? "\nCassandra (the store is Cassandra when contact points are set):\n" : "\n");
        for (size_t i = 0; i < NOPTIONS; i++) {
            const option *o = &options[i];
            if (o->cassandra != cql) continue;
            const char *dflt = o->shown ? o->shown : o->init;
            fprintf(f, "  %-28s %-28s %s\n      %s%s%s%s\n", o->flag ? o->flag : "", o->env, o->key, o->help,
                    dflt ? " (default: " : "", dflt ? dflt : "", dflt ? ")" : "");
        }
    }
    fprintf(f, "  %-28s a file of \"key = value\" lines\n", "--config FILE");
}

/* `sluice help config`: the README's tables of settings, as Markdown. */
static void print_options_markdown(FILE *f) {
    for (int cql = 0; cql <= 1; cql++) {
        fprintf(f, "| flag | environment | file key | default | meaning |\n|---|---|---|---|---|\n");
        for (size_t i = 0; i < NOPTIONS; i++) {
            const option *o = &options[i];
            if (o->cassandra != cql) continue;
            const char *dflt = o->shown ? o->shown : o->init;
            char flag[64] = "";
            if (o->flag) snprintf(flag, sizeof flag, "`%s`", o->flag);
            fprintf(f, "| %s | `%s` | `%s` | %s | %s |\n", flag, o->env, o->key, dflt ? dflt : "", o->help);
        }
        if (!cql) fprintf(f, "\n");
    }
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
    return s;
}

/* "key = value" lines; blank lines and lines starting with '#' are skipped.
 * A value may be quoted with double quotes. */
static int load_file(config *c, const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "sluice: cannot read config file %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[4096], from[PATH_MAX + 32];
    int lineno = 0, rc = 0;
    while (rc == 0 && fgets(line, sizeof line, f)) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        snprintf(from, sizeof from, "%s:%d", path, lineno);
        char *eq = strchr(s, '=');
        if (!eq) {
            fprintf(stderr, "sluice: %s: expected key = value\n", from);
            rc = -1;
            break;
        }
        *eq = '\0';
        char *k = trim(s), *v = trim(eq + 1);
        size_t vn = strlen(v);
        if (vn >= 2 && v[0] == '"' && v[vn - 1] == '"') {
            v[vn - 1] = '\0';
            v++;
        }
        rc = set_key(c, k, v, from);
    }
    fclose(f);
    return rc;
}


/* The flags of both server subcommands, as (key, value) pairs; --config is
 * returned apart since it must be read first. */
typedef struct {
    const char *key[64], *val[64];
    int n;
    const char *config_file;
} flags;

static int parse_flags(int argc, char **argv, flags *fl) {
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *val = NULL;
        size_t alen = strcspn(a, "=");
        if (a[alen] == '=') val = a + alen + 1;
        const option *o = NULL;
        int config_flag = alen == 8 && strncmp(a, "--config", 8) == 0;
        for (size_t k = 0; k < NOPTIONS && !o; k++) {
            const char *f1 = options[k].flag, *f2 = options[k].flag2;
            if ((f1 && strlen(f1) == alen && strncmp(a, f1, alen) == 0) ||
                (f2 && strlen(f2) == alen && strncmp(a, f2, alen) == 0))
                o = &options[k];
        }
        if (!o && !config_flag) {
            if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
                usage(stdout);
                exit(0);
            }
            fprintf(stderr, "sluice: unknown option '%s'\n", a);
            return -1;
        }
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "sluice: %s needs a value\n", a);
                return -1;
            }
            val = argv[++i];
        }
        if (config_flag) {
            fl->config_file = val;
        } else if (fl->n < 64) {
            fl->key[fl->n] = o->key;
            fl->val[fl->n++] = val;
        }
    }
    return 0;
}

/* Builds the configuration: defaults, then the file, then the environment,
 * then the flags. */
static int load_config(config *c, int argc, char **argv, int dev) {
    memset(c, 0, sizeof *c);
    snprintf(c->host, sizeof c->host, "%s", dev ? "127.0.0.1" : "0.0.0.0");
    for (size_t i = 0; i < NOPTIONS; i++)
        if (options[i].init && set_key(c, options[i].key, options[i].init, "default")) return -1;
    flags fl = {0};
    if (parse_flags(argc, argv, &fl)) return -1;
    if (fl.config_file && load_file(c, fl.config_file)) return -1;
    for (size_t i = 0; i < NOPTIONS; i++) {
        const char *v = getenv(options[i].env);
        if (v && *v && set_key(c, options[i].key, v, options[i].env)) return -1;
    }
    for (int i = 0; i < fl.n; i++)
        if (set_key(c, fl.key[i], fl.val[i], "command line")) return -1;
    if (!c->tls_cert[0] != !c->tls_key[0]) {
        fprintf(stderr, "sluice: tls_cert and tls_key go together: give both (or neither, for plain HTTP)\n");
        return -1;
    }
    if (strcmp(c->log_format, "text") != 0 && strcmp(c->log_format, "json") != 0) {
        fprintf(stderr, "sluice: log_format is text or json, not '%s'\n", c->log_format);
        return -1;
    }
    if (c->use_graphite && !c->graphite_url[0]) {
        fprintf(stderr, "sluice: USE_METRICS_GRAPHITE needs GRAPHITE_URL (the carbon receiver's host:port)\n");
        return -1;
    }
    return 0;
}

/* --- Running ------------------------------------------------------------ */

static void cql_config_of(const config *c, sl_cql_config *q) {
    memset(q, 0, sizeof *q);
    q->contact_points = c->contact_points;
    q->port = c->cassandra_port;
    q->keyspace = c->keyspace;
    q->username = c->username[0] ? c->username : NULL;
    q->password = c->password[0] ? c->password : NULL;
    q->consistency = c->consistency;
    q->serial_consistency = c->serial_consistency;
    q->use_ssl = c->use_ssl;
    q->ssl_ca_file = c->ssl_ca_file[0] ? c->ssl_ca_file : NULL;
    q->ssl_verify_host = c->ssl_verify_host;
    q->data_center = c->data_center[0] ? c->data_center : NULL;
    q->cluster_name = c->cluster_name[0] ? c->cluster_name : NULL;
    q->request_timeout_ms = c->request_timeout_ms;
}

static const char *cl_name(uint16_t cl, const char *dflt) {
    static const char *names[] = {"ANY",          "ONE",         "TWO",    "THREE",        "QUORUM",   "ALL",
                                  "LOCAL_QUORUM", "EACH_QUORUM", "SERIAL", "LOCAL_SERIAL", "LOCAL_ONE"};
    return cl == 0 ? dflt : cl == 0xFFFF ? "ANY" : cl < sizeof names / sizeof names[0] ? names[cl] : "?";
}

/* Opens the store the configuration names; for Cassandra, dev creates the
 * keyspace (SimpleStrategy, RF 1) and the tables first. */
/* Every table of the schema: the engine's, the account module's and the
 * event log's. One list, so that `sluice schema` creates exactly what the
 * server needs. */
static const sl_table *const *schema_tables(size_t *n, const char *const **options) {
    static const sl_table *all[64];
    static const char *with[64]; /* Cassandra's table options, by table */
    static size_t count;
    if (!count) {
        size_t ne;
        const sl_table *const *e = sl_engine_tables(&ne);
        for (size_t i = 0; i < ne && count < 64; i++) all[count++] = e[i];
        for (size_t i = 0; i < sl_acct_ntables && count < 64; i++) all[count++] = sl_acct_tables[i];
        const sl_table *const *ev = sl_evlog_tables(&ne);
        for (size_t i = 0; i < ne && count < 64; i++) {
            with[count] = sl_evlog_table_options(ev[i]);
            all[count++] = ev[i];
        }
    }
    *n = count;
    if (options) *options = with;
    return all;
}

static int open_store(const config *c, int dev, sl_store **st, char *desc, size_t cap) {
    if (!c->contact_points[0]) {
        snprintf(desc, cap, "embedded SQLite in %s", c->data_dir);
        int rc = sl_store_sqlite_open(c->data_dir, st);
        if (rc) fprintf(stderr, "sluice: cannot open the store in %s: %s\n", c->data_dir, sl_strerror(rc));
        return rc;
    }
    snprintf(desc, cap, "Cassandra at %s (port %d), keyspace %s, consistency %s, serial %s%s",
             c->contact_points, c->cassandra_port ? c->cassandra_port : 9042, c->keyspace,
             cl_name(c->consistency, "LOCAL_QUORUM"), cl_name(c->serial_consistency, "LOCAL_SERIAL"),
             c->use_ssl ? ", TLS" : "");
    sl_cql_config q;
    cql_config_of(c, &q);
    int rc = sl_store_cql_open(&q, st);
    if (rc) {
        fprintf(stderr, "sluice: cannot connect to Cassandra at %s: %s\n", c->contact_points,
                sl_strerror(rc));
        return rc;
    }
    if (dev) {
        size_t n;
        const char *const *with;
        const sl_table *const *t = schema_tables(&n, &with);
        rc =
            sl_store_cql_schema_with(*st, t, with, n, 1, "{'class':'SimpleStrategy','replication_factor':1}");
        if (rc)
            fprintf(stderr, "sluice: cannot create the schema in keyspace %s: %s\n", c->keyspace,
                    sl_strerror(rc));
    }
    return rc;
}

/* Long polls hold a descriptor each; use all the process may have. */
static void raise_fd_limit(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* The URL a client on this machine uses: a wildcard bind is reached via
 * loopback, and IPv6 literals need brackets. */
static void client_url(const char *scheme, const char *host, int port, char *out, size_t cap) {
    if (strcmp(host, "0.0.0.0") == 0)
        host = "127.0.0.1";
    else if (strcmp(host, "::") == 0)
        host = "::1";
    if (strchr(host, ':'))
        snprintf(out, cap, "%s://[%s]:%d", scheme, host, port);
    else
        snprintf(out, cap, "%s://%s:%d", scheme, host, port);
}

/* How to run this binary from a shell: "sluice" when that is what PATH
 * finds, else its absolute path (a fresh checkout runs build/sluice, and
 * "sluice: command not found" is a poor first step). */
static void self_command(char *out, size_t cap) {
    char self[PATH_MAX], found[PATH_MAX];
    snprintf(out, cap, "sluice");
    if (!realpath("/proc/self/exe", self)) return;
    const char *path = getenv("PATH");
    for (const char *p = path ? path : ""; *p;) {
        size_t n = strcspn(p, ":");
        char cand[PATH_MAX];
        if (n > 0 && n < sizeof cand - 8) {
            snprintf(cand, sizeof cand, "%.*s/sluice", (int)n, p);
            if (access(cand, X_OK) == 0) {
                if (realpath(cand, found) && strcmp(found, self) == 0) return;
                break; /* another sluice comes first on PATH */
            }
        }
        p += n + (p[n] == ':');
    }
    snprintf(out, cap, "%s", self);
}

static void dev_banner(const config *c, int port, int admin_port, int temp_dir, const char *key,
                       const char *store_desc) {
    char url[300], admin[300], curl[PATH_MAX + 32], self[PATH_MAX];
    const char *scheme = c->tls_cert[0] ? "https" : "http";
    client_url(scheme, c->host, port, url, sizeof url);
    client_url(scheme, c->admin_host, admin_port, admin, sizeof admin);
    /* Over HTTPS, curl trusts the server's certificate as its own CA, which
     * is right for the self-signed certificate of a dev setup. */
    if (c->tls_cert[0])
        snprintf(curl, sizeof curl, "curl -s --cacert '%s'", c->tls_cert);
    else
        snprintf(curl, sizeof curl, "curl -s");
    self_command(self, sizeof self);
    printf("Sluice %s dev server\n"
           "  URL:         %s\n"
           "  admin API:   %s/admin/api/v1 (Authorization: Bearer <admin token>)\n"
           "  dashboard:   %s/ui/ (log in with the admin token)\n"
           "  store:       %s%s\n"
           "  account:     dev\n"
           "  primary key: %s\n"
           "  admin token: %s\n"
           "  API docs:    %s/openapi.json, %s/openapi.json\n"
           "\n"
           "Try it (bash):\n"
           "  KEY='%s'\n"
           "  ADMIN='%s'\n"
           "  B=%s/api/v1/accounts/dev/queues\n"
           "  %s -H \"Authorization: Key $KEY\" -X POST $B -d '{\"queueName\":\"orders\"}'; echo\n"
           "  %s --aws-sigv4 aws:amz:us-east-1:sqs --user \"dev:$KEY\" -X POST $B/orders/messages"
           " -d 'hello, sluice'; echo\n"
           "  R=$(%s -H \"Authorization: Key $KEY\" -X POST $B/orders/messages/receive"
           " -d '{\"waitSeconds\":5}' | tee /dev/stderr | sed -E 's/.*\"popReceipt\":\"([^\"]*)\".*/\\1/'); "
           "echo\n"
           "  %s -H \"Authorization: Key $KEY\" -X POST $B/orders/messages/ack"
           " -d \"{\\\"popReceipts\\\":[\\\"$R\\\"]}\"; echo\n"
           "  %s --aws-sigv4 aws:amz:us-east-1:sqs --user \"dev:$KEY\" $B/orders/statistics; echo\n"
           "  %s -H \"Authorization: Bearer $ADMIN\" %s/admin/api/v1/accounts; echo\n"
           "\n",
           SL_VERSION, url, admin, admin, store_desc,
           temp_dir ? " (a new temporary directory; delete it when done)" : "", key, c->admin_token, url,
           admin, key, c->admin_token, url, curl, curl, curl, curl, curl, curl, admin);
    if (c->tls_cert[0])
        printf("The client commands (%s help client) speak plain HTTP only: put a server without\n"
               "--tls-cert, or a TLS-terminating proxy, in front of them.\n\n", self);
    else
        printf("The client commands (%s help client):\n"
               "  export SLUICE_URL=%s SLUICE_ACCOUNT=dev SLUICE_KEY=\"$KEY\"\n"
               "  %s queue list; %s put orders hi; %s get orders\n"
               "\n",
               self, url, self, self, self);
}

/* SLUICE_TEST_FAULTS="seed=N,fail=PPM,unknown_applied=PPM,unknown_dropped=PPM"
 * injects store faults into a running server, for the black-box tests of
 * what clients see when the store misbehaves (503s, never 500s, nothing
 * lost). Not for production; the server says so loudly when it is set. */
static int test_faults(sl_store *st, sl_fault_random_cfg *f) {
    const char *spec = getenv("SLUICE_TEST_FAULTS");
    if (!spec || !*spec) return 0;
    memset(f, 0, sizeof *f);
    f->seed = 1;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        long long n;
        if (!eq || parse_num(eq + 1, 0, 1000000, &n)) {
            fprintf(stderr, "sluice: SLUICE_TEST_FAULTS: bad entry '%s'\n", tok);
            return -1;
        }
        *eq = 0;
        if (strcmp(tok, "seed") == 0) f->seed = (uint64_t)n;
        else if (strcmp(tok, "fail") == 0) f->fail_ppm = (uint32_t)n;
        else if (strcmp(tok, "unknown_applied") == 0) f->unknown_applied_ppm = (uint32_t)n;
        else if (strcmp(tok, "unknown_dropped") == 0) f->unknown_dropped_ppm = (uint32_t)n;
        else {
            fprintf(stderr, "sluice: SLUICE_TEST_FAULTS: unknown fault '%s'\n", tok);
            return -1;
        }
    }
    sl_log(SL_ERR, "SLUICE_TEST_FAULTS is set: injecting store faults (%s); never do this in production", spec);
    sl_store_sqlite_set_fault(st, sl_fault_random, f);
    return 0;
}

/* The subscriptions' sink: the event log delivers into queues through it,
 * so that events/ and queue/ stay siblings. A page of events becomes
 * batch puts of SL_BATCH_MAX, all started before any is waited for (on the
 * embedded store they commit together), durable when it returns 0. */
static void sub_put_done(void *arg) {
    (void)arg;
}

static int sub_put(void *ctx, const char *account, const char *queue, const char *sub,
                   const sl_stored_event *evs, size_t n) {
    sl_op *ops[(SL_EV_SUB_PAGE + SL_BATCH_MAX - 1) / SL_BATCH_MAX];
    sl_put *p = calloc(n, sizeof *p);
    char **body = calloc(n, sizeof *body), **attrs = calloc(n, sizeof *attrs);
    char(*ids)[SL_MSGID_LEN + 1] = malloc(SL_BATCH_MAX * sizeof *ids);
    size_t made = 0, nops = 0;
    int rc = n <= SL_EV_SUB_PAGE && p && body && attrs && ids ? 0 : SL_ENOMEM;
    for (; rc == 0 && made < n; made++) {
        size_t len;
        if ((rc = sl_api_event_message(&evs[made], sub, &body[made], &len, &attrs[made])) != 0) break;
        p[made] = (sl_put){.body = body[made], .len = len, .attrs_json = attrs[made]};
    }
    for (size_t i = 0; rc == 0 && i < n; i += SL_BATCH_MAX) {
        size_t k = n - i < SL_BATCH_MAX ? n - i : SL_BATCH_MAX;
        if ((rc = sl_msg_put_start(ctx, account, queue, p + i, k, sub_put_done, NULL, &ops[nops])) == 0)
            nops++;
    }
    for (size_t i = 0; i < nops; i++) { /* every started put is finished */
        int r = sl_msg_put_finish(ops[i], ids);
        if (rc == 0) rc = r;
    }
    for (size_t i = 0; i < made; i++) {
        free(body[i]);
        free(attrs[i]);
    }
    free(p);
    free(body);
    free(attrs);
    free(ids);
    return rc;
}

static int sub_queue_exists(void *ctx, const char *account, const char *queue) {
    sl_queue_info qi;
    int rc = sl_queue_get(ctx, account, queue, &qi);
    return rc == 0 ? 1 : rc == SL_ENOTFOUND ? 0 : rc;
}

/* GET /metrics on the admin port: every layer's figures, a family at a
 * time (Prometheus wants a family's samples together), then the process's. */
static time_t started_s; /* set by run() */

typedef struct {
    sl_http_server *queue, *admin; /* atomic: set once each has started */
    sl_engine *engine;
    sl_store *store;
    sl_evlog *evlog;
    sl_evsubs *evsubs;
} metrics_src;

static void process_metrics(sl_text *t) {
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = 0;
        fclose(f);
    }
    int fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        for (struct dirent *de; (de = readdir(d)) != NULL;)
            fds += de->d_name[0] != '.';
        closedir(d);
        fds--; /* the directory's own descriptor */
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec +
                 ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) / 1e6;
    sl_metric_head(t, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    sl_text_printf(t, "process_resident_memory_bytes %ld\n", rss * sysconf(_SC_PAGESIZE));
    sl_metric_head(t, "process_open_fds", "gauge", "Open file descriptors.");
    sl_text_printf(t, "process_open_fds %d\n", fds);
    sl_metric_head(t, "process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds.");
    sl_text_printf(t, "process_cpu_seconds_total %.3f\n", cpu);
    sl_metric_head(t, "process_start_time_seconds", "gauge",
                   "Start time of the process since the epoch, in seconds.");
    sl_text_printf(t, "process_start_time_seconds %lld\n", (long long)started_s);
}

static void write_metrics(void *ctx, sl_text *t) {
    metrics_src *m = ctx;
    sl_http_server *srv[2] = {__atomic_load_n(&m->queue, __ATOMIC_ACQUIRE),
                              __atomic_load_n(&m->admin, __ATOMIC_ACQUIRE)};
    static const char *const name[2] = {"queue", "admin"};
    for (int part = 0; part < SL_HTTP_M_N; part++) {
        sl_http_metrics_head(t, part);
        for (int i = 0; i < 2; i++)
            if (srv[i]) sl_http_metrics(srv[i], name[i], part, t);
    }
    sl_engine_metrics(m->engine, t);
    sl_evlog_metrics(m->evlog, t);
    sl_evsubs_metrics(m->evsubs, t);
    sl_store_metrics(m->store, t);
    process_metrics(t);
}

static int run(const config *c, int dev, int temp_dir) {
    started_s = time(NULL);
    static sl_fault_random_cfg faults;
    sl_log_level = c->log_level;
    if (strcmp(c->log_format, "json") == 0) sl_log_json(c->log_app);
    raise_fd_limit();

    /* Signals are taken synchronously by this thread with sigwait; block them
     * before any thread starts so that every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    sl_store *st = NULL;
    sl_engine *e = NULL;
    sl_api *api = NULL;
    sl_evlog *evlog = NULL;
    sl_evsubs *evsubs = NULL;
    sl_api_events *evapi = NULL;
    sl_api_sqs *sqsapi = NULL;
    sl_http_route *routes = NULL;
    sl_acct *acct = NULL;
    sl_admin *admin = NULL;
    sl_http_server *srv = NULL, *admin_srv = NULL;
    sl_graphite *graphite = NULL;
    struct sl_auth_key dev_key = {0};
    char store_desc[PATH_MAX + 1500];
    int rc = open_store(c, dev, &st, store_desc, sizeof store_desc);
    if (rc) goto out;
    sl_log(SL_INFO, "store: %s", store_desc);
    if (!c->contact_points[0]) {
        /* Load shedding and fault injection are embedded-store hooks. */
        sl_store_sqlite_set_max_pending(st, c->max_pending_writes);
        if ((rc = test_faults(st, &faults)) != 0) goto out;
    }
    if ((rc = sl_acct_open(st, &acct)) != 0) goto out;
    sl_engine_config ec;
    memset(&ec, 0, sizeof ec);
    ec.background = 1;
    ec.max_watches = c->max_waiters;
    ec.accounts = acct;
    /* One name for this node in every lease row (queues' repair workers,
     * subscriptions). */
    unsigned char nid[8];
    if ((rc = sl_random_bytes(nid, sizeof nid)) != 0) goto out;
    for (size_t i = 0; i < sizeof nid; i++)
        snprintf(ec.node_id + 2 * i, 3, "%02x", nid[i]);
    rc = sl_engine_open(st, &ec, &e);
    if (rc) {
        fprintf(stderr, "sluice: cannot open the queue engine: %s%s\n", sl_strerror(rc),
                rc == SL_ENOTFOUND && c->contact_points[0] ? " (the schema is missing: run `sluice schema`)"
                                                           : "");
        goto out;
    }
    /* The event log's read horizon on Cassandra: now less the settle time,
     * which covers clock skew between Sluice nodes and ingests in flight.
     * The embedded store commits an event and its index entries at once. */
    sl_evlog_config evc = {.settle_ms = c->contact_points[0] ? c->event_settle_ms : 0,
                           .width_us = (int64_t)c->event_bucket_s * 1000000,
                           .shards = c->event_shards,
                           .atomic = !c->contact_points[0]};
    rc = sl_evlog_open(st, &evc, &evlog);
    if (rc == SL_EINVAL) {
        fprintf(stderr, "sluice: --event-bucket-seconds must divide a day (86400), not %d\n",
                c->event_bucket_s);
        goto out;
    }
    if (rc) {
        fprintf(stderr, "sluice: cannot open the event log: %s%s\n", sl_strerror(rc),
                rc == SL_ENOTFOUND && c->contact_points[0] ? " (its tables are missing: run `sluice schema`)"
                                                           : "");
        goto out;
    }
    sl_evsubs_config sbc = {.node_id = ec.node_id, .sink = {sub_put, sub_queue_exists, e}};
    if ((rc = sl_evsubs_start(evlog, &sbc, &evsubs)) != 0) {
        fprintf(stderr, "sluice: cannot start the subscriptions' worker: %s\n", sl_strerror(rc));
        goto out;
    }
    if (dev) {
        /* sl_acct_ensure only writes what is missing, so a restart on the
         * same data does not need the store to accept writes. */
        rc = sl_acct_ensure(acct, "dev", &dev_key);
        if (rc) {
            fprintf(stderr, "sluice: cannot create the account 'dev': %s\n", sl_strerror(rc));
            goto out;
        }
    }
    metrics_src msrc = {.engine = e, .store = st, .evlog = evlog, .evsubs = evsubs};
    sl_admin_config adc = {.engine = e,
                           .acct = acct,
                           .log = evlog,
                           .token = c->admin_token,
                           .metrics = write_metrics,
                           .metrics_ctx = &msrc};
    if ((rc = sl_api_admin_open(&adc, &admin)) != 0) {
        fprintf(stderr, "sluice: cannot set up the admin API: %s\n", sl_strerror(rc));
        goto out;
    }
    sl_api_config ac = {.engine = e,
                        .acct = acct,
                        .skew_ms = (int64_t)c->auth_skew_s * 1000,
                        .max_message_bytes = (size_t)c->max_message_bytes,
                        .max_json_bytes = (size_t)c->max_json_bytes};
    rc = sl_api_native_open(&ac, &api);
    sl_api_events_config evac = {
        .log = evlog, .acct = acct, .engine = e, .skew_ms = ac.skew_ms, .max_json_bytes = ac.max_json_bytes};
    if (rc == 0) rc = sl_api_events_open(&evac, &evapi);
    sl_api_sqs_config sqc = {.engine = e,
                             .acct = acct,
                             .skew_ms = ac.skew_ms,
                             .max_message_bytes = ac.max_message_bytes,
                             .tls = c->tls_cert[0] != 0};
    if (rc == 0) rc = sl_api_sqs_open(&sqc, &sqsapi);
    if (rc) {
        fprintf(stderr, "sluice: cannot set up the API: %s\n", sl_strerror(rc));
        goto out;
    }
    /* On the embedded store a put, receive or ack does not hold its thread
     * while its writes commit (see sl_msg_put_start), so the event loop runs
     * them and a few threads serve many connections; the other routes wait
     * for the store on the store pool. On Cassandra every route that reads
     * or writes runs on the store pool, whose fibers park while the node
     * answers (util/fiber.h): its threads only carry the handlers' own
     * work, and the requests in flight are bounded by the pool's fibers,
     * not by its threads. */
    int cql = c->contact_points[0] != 0;
    int ncpu = cores_usable();
    int threads = c->threads ? c->threads : cql ? DEFAULT_THREADS_CQL : ncpu;
    int store_threads_cql =
        ncpu > DEFAULT_STORE_THREADS_CQL_MIN / 2 ? 2 * ncpu : DEFAULT_STORE_THREADS_CQL_MIN;
    int store_threads = c->store_threads ? c->store_threads
                        : cql            ? store_threads_cql
                                         : DEFAULT_STORE_THREADS_EMBEDDED;
    sl_http_config hc = {.host = c->host,
                         .port = c->port,
                         .threads = threads,
                         .store_threads = store_threads,
                         .conn_timeout_s = c->http_idle_timeout_s,
                         .request_timeout_s = c->http_request_timeout_s,
                         .tls_cert = c->tls_cert,
                         .tls_key = c->tls_key,
                         .ctx = api,
                         .render_error = sl_api_render_error};
    /* One port serves the queue API, the event log and SQS: one table of
     * the APIs' routes, each route carrying its API as its ctx. */
    const sl_http_route *nr, *er, *sr;
    size_t nn, ne, ns;
    sl_api_native_routes(api, &nr, &nn);
    sl_api_events_routes(evapi, &er, &ne);
    sl_api_sqs_routes(sqsapi, &sr, &ns);
    if (!(routes = calloc(nn + ne + ns, sizeof *routes))) {
        rc = SL_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < nn; i++) {
        routes[i] = nr[i];
        routes[i].ctx = api;
    }
    memcpy(routes + nn, er, ne * sizeof *er);
    memcpy(routes + nn + ne, sr, ns * sizeof *sr);
    /* The dashboard calls the native and event-log routes on the admin
     * port, behind the admin token. */
    if ((rc = sl_api_admin_delegate(admin, routes, nn + ne)) != 0) {
        fprintf(stderr, "sluice: cannot set up the admin API: %s\n", sl_strerror(rc));
        goto out;
    }
    /* Both ports: the same TLS and timeouts; the admin API needs few
     * threads and connections. */
    sl_http_config ahc = {.host = c->admin_host,
                          .port = c->admin_port,
                          .threads = 1,
                          .store_threads = 4,
                          .max_conns = 256,
                          .conn_timeout_s = c->http_idle_timeout_s,
                          .request_timeout_s = c->http_request_timeout_s,
                          .tls_cert = c->tls_cert,
                          .tls_key = c->tls_key,
                          .ctx = admin,
                          .render_error = sl_api_render_error};
    sl_api_admin_routes(admin, &ahc.routes, &ahc.nroutes);
    rc = sl_http_start(&ahc, &admin_srv);
    if (rc == 0) __atomic_store_n(&msrc.admin, admin_srv, __ATOMIC_RELEASE);
    if (rc) {
        fprintf(stderr, "sluice: cannot start the admin API on %s:%d%s\n", c->admin_host, c->admin_port,
                rc == SL_EINVAL && c->tls_cert[0] ? " (see the TLS error above)" : "");
        goto out;
    }
    hc.routes = routes;
    hc.nroutes = nn + ne + ns;
    rc = sl_http_start(&hc, &srv);
    if (rc) {
        fprintf(stderr, "sluice: cannot start the HTTP server on %s:%d\n", c->host, c->port);
        goto out;
    }
    __atomic_store_n(&msrc.queue, srv, __ATOMIC_RELEASE);
    if (c->use_graphite) {
        rc = sl_graphite_start(c->graphite_url, c->graphite_prefix, c->graphite_interval_s, write_metrics, &msrc,
                               &graphite);
        if (rc) {
            fprintf(stderr, "sluice: GRAPHITE_URL '%s' is not host:port\n", c->graphite_url);
            goto out;
        }
        sl_log(SL_INFO, "graphite: pushing the metrics to %s every %d s as %s.*", c->graphite_url,
               c->graphite_interval_s, c->graphite_prefix);
    }
    int port = sl_http_port(srv), admin_port = sl_http_port(admin_srv);
    if (dev) dev_banner(c, port, admin_port, temp_dir, dev_key.secret, store_desc);
    OPENSSL_cleanse(&dev_key, sizeof dev_key);
    const char *scheme = c->tls_cert[0] ? "https" : "http";
    if (strchr(c->admin_host, ':'))
        printf("admin API listening on %s://[%s]:%d\n", scheme, c->admin_host, admin_port);
    else
        printf("admin API listening on %s://%s:%d\n", scheme, c->admin_host, admin_port);
    if (strchr(c->host, ':'))
        printf("listening on %s://[%s]:%d\n", scheme, c->host, port);
    else
        printf("listening on %s://%s:%d\n", scheme, c->host, port);
    fflush(stdout);
    sl_log(SL_INFO, "sluice %s listening on %s:%d%s, store: %s", SL_VERSION, c->host, port,
           c->tls_cert[0] ? " (HTTPS)" : "", store_desc);

    int sig = 0;
    while (sigwait(&sigs, &sig) != 0) {
    }
    sl_log(SL_INFO, "%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
out:
    /* The readers of the servers' metrics first: the Graphite pusher, then
     * the admin port (GET /metrics). */
    sl_graphite_stop(graphite);
    sl_http_stop(admin_srv);
    sl_http_stop(srv);
    sl_evsubs_stop(evsubs);
    if (e) sl_engine_close(e);
    if (api) sl_api_native_close(api);
    sl_api_events_close(evapi);
    if (sqsapi) sl_api_sqs_close(sqsapi);
    free(routes);
    sl_evlog_close(evlog);
    sl_api_admin_close(admin);
    sl_acct_close(acct);
    sl_store_close(st);
    if (rc == 0) sl_log(SL_INFO, "stopped");
    return rc == 0 ? 0 : 1;
}

static int cmd_server(int argc, char **argv, int dev) {
    config c;
    if (load_config(&c, argc, argv, dev)) return EXIT_USAGE;
    if (!c.admin_token[0]) {
        if (!dev) {
            fprintf(stderr, "sluice: serve needs an admin token (16 to 1024 characters) for the admin API:\n"
                            "  set SLUICE_ADMIN_TOKEN, admin_token in the config file, or --admin-token.\n"
                            "  For example: SLUICE_ADMIN_TOKEN=$(openssl rand -base64 32)\n");
            return EXIT_USAGE;
        }
        unsigned char raw[32];
        if (sl_random_bytes(raw, sizeof raw) != 0) {
            fprintf(stderr, "sluice: cannot read random bytes for the admin token\n");
            return 1;
        }
        sl_b64url_encode(raw, sizeof raw, c.admin_token);
        OPENSSL_cleanse(raw, sizeof raw);
    }
    int temp_dir = 0;
    if (!c.data_dir[0] && !c.contact_points[0]) {
        if (!dev) {
            fprintf(stderr, "sluice: serve needs a data directory (--data DIR, SLUICE_DATA_DIR or data_dir) "
                            "or Cassandra contact points (CONTACT_POINTS)\n");
            return EXIT_USAGE;
        }
        const char *tmp = getenv("TMPDIR");
        snprintf(c.data_dir, sizeof c.data_dir, "%s/sluice-dev-XXXXXX", tmp && *tmp ? tmp : "/tmp");
        if (!mkdtemp(c.data_dir)) {
            fprintf(stderr, "sluice: cannot create a temporary directory: %s\n", strerror(errno));
            return 1;
        }
        temp_dir = 1;
    }
    return run(&c, dev, temp_dir);
}

/* sluice schema: creates or migrates the Cassandra schema. Its own flags
 * are taken out before the common ones are parsed. */
static int cmd_schema(int argc, char **argv) {
    int create_ks = 0;
    const char *replication = NULL;
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    int nrest = 0;
    if (!rest) return 1;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--create-keyspace") == 0) {
            create_ks = 1;
        } else if (strncmp(argv[i], "--replication=", 14) == 0) {
            replication = argv[i] + 14;
        } else if (strcmp(argv[i], "--replication") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "sluice: --replication needs a value\n");
                free(rest);
                return EXIT_USAGE;
            }
            replication = argv[++i];
        } else {
            rest[nrest++] = argv[i];
        }
    }
    config c;
    int rc = load_config(&c, nrest, rest, 0);
    free(rest);
    if (rc) return EXIT_USAGE;
    sl_log_level = c.log_level;
    if (strcmp(c.log_format, "json") == 0) sl_log_json(c.log_app);
    if (!c.contact_points[0]) {
        fprintf(stderr, "sluice: schema needs Cassandra contact points: CONTACT_POINTS, --contact-points or "
                        "contact_points in the config file\n");
        return EXIT_USAGE;
    }
    sl_cql_config q;
    cql_config_of(&c, &q);
    sl_store *st = NULL;
    if ((rc = sl_store_cql_open(&q, &st))) {
        fprintf(stderr, "sluice: cannot connect to Cassandra at %s: %s\n", c.contact_points, sl_strerror(rc));
        return 1;
    }
    size_t n;
    const char *const *with;
    const sl_table *const *t = schema_tables(&n, &with);
    rc = sl_store_cql_schema_with(st, t, with, n, create_ks, replication);
    sl_store_close(st);
    if (rc) {
        fprintf(stderr, "sluice: schema in keyspace %s: %s%s\n", c.keyspace, sl_strerror(rc),
                rc == SL_ENOTFOUND ? " (no such keyspace: --create-keyspace creates it)" : "");
        return 1;
    }
    printf("schema version %d is in place in keyspace %s (%zu tables)\n", SL_STORE_CQL_SCHEMA_VERSION,
           c.keyspace, n);
    return 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "dev") == 0) return cmd_server(argc - 2, argv + 2, 1);
    if (strcmp(cmd, "serve") == 0) return cmd_server(argc - 2, argv + 2, 0);
    if (sl_client_is_command(cmd)) return sl_client_main(argc - 1, argv + 1);
    if (strcmp(cmd, "schema") == 0 || strcmp(cmd, "bootstrap") == 0) return cmd_schema(argc - 2, argv + 2);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("sluice %s\n", SL_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        if (argc > 2 && strcmp(argv[2], "client") == 0)
            sl_client_usage(stdout);
        else if (argc > 2 && strcmp(argv[2], "config") == 0)
            print_options_markdown(stdout);
        else
            usage(stdout);
        return 0;
    }
    fprintf(stderr, "sluice: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return EXIT_USAGE;
}
