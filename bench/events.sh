#!/usr/bin/env bash
# bench/events.sh: the event log's benchmarks (issue 14), on the embedded store and on one Cassandra node.
#
#   W5  ingest: events of 4 types, 2 tags and 200 bytes of data (3 index kinds: 4 index entries each),
#       single (POST /events) and batched (100 per POST /events/batch), at 16 and 64 clients; on
#       Cassandra beside the raw single-row INSERT rate of the same CQL client (tests/live/store_bench.c)
#       at the same concurrency in the same run: an event is 5 rows and a confirmation, so INSERT/5 is
#       about its ceiling.
#   W6  query: p50/p99 of a 100-event page by type, by tag and by both, in each order, on a log of
#       N_EVENTS (1,000,000) events ingested batched first, at 1 client (latency) and 16 (pages/s).
#   SUB a subscription into one queue while events are ingested at 5,000/s (--rate, batches of 20): its lag behind the
#       read horizon, sampled each second, and the events it delivered.
#
#   bench/events.sh [--quick] [--no-cassandra] [--no-embedded] [--no-w5] [--no-w6] [--no-sub] [--append]
#                   [--events N]
#
# --append adds to events.raw instead of starting it afresh (the report takes the last result of each
# measurement), to measure one part again.
#
# Writes bench/results/events.raw (JSON lines) and bench/results/events.md. Builds what it needs from the
# work tree (sluice, bench/build/loadgen, build/tests/store_bench); Cassandra through scripts/cassandra.sh
# (heap CASSANDRA_HEAP, 1g by default), stopped by its PID, from the exit trap too.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
ARGS="$*"
QUICK=0 CASS=1 EMB=1 W5=1 W6=1 SUB=1 APPEND=0 N_EVENTS=1000000
while [ $# -gt 0 ]; do
    case $1 in
    --quick) QUICK=1 ;;
    --no-cassandra) CASS=0 ;;
    --no-embedded) EMB=0 ;;
    --no-w5) W5=0 ;;
    --no-w6) W6=0 ;;
    --no-sub) SUB=0 ;;
    --append) APPEND=1 ;;
    --events) N_EVENTS=$2; shift ;;
    *) echo "usage: bench/events.sh [--quick] [--no-cassandra] [--no-embedded] [--no-w5] [--no-w6] [--no-sub]" \
           "[--append] [--events N]" >&2
       exit 2 ;;
    esac
    shift
done
DUR=20 WARM=3 SUBDUR=30 W6DUR=10
((QUICK)) && { DUR=3; WARM=1; SUBDUR=5; W6DUR=2; [ "$N_EVENTS" = 1000000 ] && N_EVENTS=20000; }
CASS_HEAP=${CASSANDRA_HEAP:-1g}
RAW=bench/results/events.raw
MD=bench/results/events.md
TMP=$(mktemp -d /tmp/sluice-evbench.XXXXXX)
PIDS=()
CASS_RUN=
log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    [ -n "$CASS_RUN" ] && scripts/cassandra.sh stop --run-dir "$CASS_RUN" >/dev/null 2>&1 || true
    rm -rf "$TMP"
}
trap cleanup EXIT

make -s build/sluice
make -s -C bench build/loadgen
((CASS)) && make -s store-bench >/dev/null
((APPEND)) || : >"$RAW"
echo "{\"run\":{\"date\":\"$(date -u +%FT%TZ)\",\"commit\":\"$(git rev-parse --short HEAD)$(git diff --quiet || echo +)\",\"args\":\"$ARGS\"}}" >>"$RAW"
((APPEND)) || echo "{\"meta\":{\"date\":\"$(date -u +%FT%TZ)\",\"commit\":\"$(git rev-parse --short HEAD)$(git diff --quiet || echo +)\",\"nproc\":$(nproc),\"quick\":$QUICK,\"events\":$N_EVENTS}}" >>"$RAW"

start_sluice() { # DATADIR [flags] -> SP, SPID, KEY
    local d=$1
    shift
    mkdir -p "$d"
    build/sluice dev --port 0 --admin-port 0 --data "$d" "$@" >"$d.log" 2>&1 &
    SPID=$!
    PIDS+=("$SPID")
    SP=
    for ((i = 0; i < 600; i++)); do
        SP=$(sed -n 's/^listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$d.log" | head -1)
        [ -n "$SP" ] && break
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$SP" ] || { cat "$d.log" >&2; echo "Sluice did not start" >&2; return 1; }
    KEY=$(sed -n 's/^ *primary key: *\([A-Za-z0-9_-]*\).*/\1/p' "$d.log" | head -1)
}
stop_sluice() { kill "$SPID"; wait "$SPID" 2>/dev/null || true; }
LG() { timeout 900 bench/build/loadgen --max-seconds 860 --header "Authorization: Key $KEY" --port "$SP" "$@"; }
record() { # SYSTEM WORKLOAD LEVEL JSON
    echo "{\"system\":\"$1\",\"workload\":\"$2\",\"level\":\"$3\",\"result\":$4}" >>"$RAW"
}
api() { curl -sf -H "Authorization: Key $KEY" "$@"; }
E() { echo "http://127.0.0.1:$SP/api/v1/accounts/dev$1"; }

run_store() { # SYSTEM
    local sys=$1 n b j path label
    for n in 16 64; do
        ((W5)) || break
        for b in 1 100; do
            log "$sys W5 ingest, $n clients, $b per request"
            j=$(LG --proto events --producers "$n" --batch "$b" --duration "$DUR" --warmup "$WARM" --label "w5-$n-$b")
            record "$sys" w5 "$n-$b" "$j"
            python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("   ", round(d["put_msgs_per_s"]), "events/s")' "$j" >&2
        done
    done
    ((W6)) && w6 "$sys"
    ((SUB)) && sub "$sys"
    return 0
}

w6() { # SYSTEM
    local sys=$1 j path label n
    log "$sys W6: ingesting $N_EVENTS events (16 clients, batches of 100)"
    j=$(LG --proto events --producers 16 --batch 100 --put-count "$N_EVENTS" --duration 100000 --label w6-load)
    record "$sys" w6-load "$N_EVENTS" "$j"
    api -o /dev/null "$(E /events)?limit=1"
    # Pages from either end of the log, by a type (1 event in 4), a tag (1 in 8), a type and a tag
    # (1 in 8: every g5 event is a t1; 1 in 16 for r5, read from the tag index and filtered by type).
    # One client (the latency of a page) and 16 (pages/s, and the latency under load).
    for q in "type=t1" "tag=g3" "type=t1&tag=g5" "type=t1&tag=r5"; do
        for o in asc desc; do
            for n in 1 16; do
                path="/api/v1/accounts/dev/events?$q&order=$o&limit=100&start=0"
                label="w6 ${q//&/ } $o $n"
                log "$sys $label"
                j=$(LG --proto hello --path "$path" --conns "$n" --threads 1 --duration "$W6DUR" --warmup 1 --label "$label")
                record "$sys" w6 "$q $o $n" "$j"
            done
        done
    done
}

sub() { # SYSTEM: a subscription into one queue under 5,000 events/s
    local sys=$1
    api -o /dev/null -X POST "$(E /queues)" -d '{"queueName":"subq"}'
    api -o /dev/null -X POST "$(E /subscriptions)" -d '{"subscriptionName":"bench","queueName":"subq"}'
    log "$sys SUB: 5,000 events/s for ${SUBDUR}s through one subscription"
    LG --proto events --producers 16 --batch 20 --rate 5000 --duration "$SUBDUR" --label sub-load >"$TMP/sub-load.json" &
    local lg=$!
    python3 - "$(E /subscriptions/bench)" "$KEY" "$SUBDUR" >"$TMP/sub.json" <<'EOF'
import json, sys, time, urllib.request
from datetime import datetime, timezone
url, key, dur = sys.argv[1], sys.argv[2], float(sys.argv[3])
def get():
    r = urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": "Key " + key}), timeout=10)
    return json.loads(r.read())
def t(s):
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()
samples, t0, d0 = [], time.time(), get()["delivered"]
while time.time() - t0 < dur + 2:
    time.sleep(1)
    s = get()
    samples.append({"t": round(time.time() - t0, 1), "lag_s": round(time.time() - t(s["position"]), 2),
                    "delivered": s["delivered"] - d0})
# after the load: how long until the cursor is within 3 s of now again
end = time.time()
while time.time() - end < 120 and time.time() - t(get()["position"]) > 3:
    time.sleep(0.5)
caught = round(time.time() - end, 1)
print(json.dumps({"samples": samples, "catch_up_s": caught, "delivered": get()["delivered"] - d0}))
EOF
    wait "$lg" || true
    record "$sys" sub 5000 "$(python3 -c 'import json,sys; a=json.load(open(sys.argv[1])); a["load"]=json.load(open(sys.argv[2])); print(json.dumps(a))' "$TMP/sub.json" "$TMP/sub-load.json")"
}

# --- The embedded store ---
if ((EMB)); then
    start_sluice "$TMP/embedded"
    log "embedded store: sluice pid $SPID port $SP"
    run_store embedded
    stop_sluice
fi

# --- One Cassandra node ---
if ((CASS)); then
    CASS_RUN=$TMP/cassandra
    port=$(scripts/cassandra.sh free-port --run-dir "$CASS_RUN")
    log "starting Cassandra on 127.0.0.1:$port (heap $CASS_HEAP)"
    scripts/cassandra.sh start --port "$port" --run-dir "$CASS_RUN" --heap "$CASS_HEAP" >"$TMP/cassandra-start.txt" 2>&1 ||
        { tail -20 "$TMP/cassandra-start.txt" >&2; exit 1; }
    # The JVM compiles its hot paths for a minute or two: warm it up first (not recorded), then the raw
    # rates, then Sluice on the same warm node.
    log "warming Cassandra up: 16 threads of INSERTs for $((4 * DUR)) s (not recorded)"
    timeout 600 build/tests/store_bench "$port" 16 $((4 * DUR)) --op upsert --body 100 --keyspace sluice_raw \
        --json >/dev/null 2>&1 || true
    for n in 16 64; do
        log "raw CQL: $n threads of single-row INSERTs (100-byte body)"
        j=$(timeout 300 build/tests/store_bench "$port" "$n" "$DUR" --warmup "$WARM" --op upsert --body 100 \
            --keyspace sluice_raw --json 2>"$TMP/raw.err" || true)
        record cql raw-insert "$n" "${j:-null}"
    done
    start_sluice "$TMP/cass" --contact-points 127.0.0.1 --cassandra-port "$port" --keyspace sluice_ev
    log "Cassandra: sluice pid $SPID port $SP"
    run_store cassandra
    stop_sluice
fi

python3 - "$RAW" "$MD" <<'EOF'
import json, sys
raw, md = sys.argv[1], sys.argv[2]
meta, rows, runs = {}, [], []
for line in open(raw):
    d = json.loads(line)
    if "meta" in d:
        meta = d["meta"]
    elif "run" in d:
        runs.append(d["run"])
    else:
        rows.append(d)
def find(sys_, wl, lvl):
    found = None  # the last one: a run with --append measured it again
    for r in rows:
        if r["system"] == sys_ and r["workload"] == wl and r["level"] == lvl:
            found = r["result"]
    return found
out = [f"# Event log benchmarks (W5, W6, a subscription)", "",
       f"bench/events.sh on {meta.get('date')}, commit {meta.get('commit')}, {meta.get('nproc')} cores"
       + (" (**--quick**: not for comparison)" if meta.get("quick") else "") + "."]
out += [f"Measured again later with `bench/events.sh {r['args']}` at {r['date']} (commit {r['commit']}): "
        "where it measured something, its figures replace the first run's." for r in runs[1:]]
out += ["",
       "## W5: ingest (events/s; 4 types, 2 tags, 200 bytes of data each)", "",
       "| store | clients | per request | events/s | request p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|"]
for s in ("embedded", "cassandra"):
    for lvl in ("16-1", "16-100", "64-1", "64-100"):
        r = find(s, "w5", lvl)
        if not r:
            continue
        op = r["ops"].get("put", {})
        c, b = lvl.split("-")
        out.append(f"| {s} | {c} | {b} | {r['put_msgs_per_s']:,.0f} | {op.get('p50_ms', 0):.2f} | {op.get('p99_ms', 0):.2f} | {op.get('errors', 0)} |")
for n in ("16", "64"):
    r = find("cql", "raw-insert", n)
    if r:
        ins = r["ops"]["insert"] if "ops" in r else r.get("insert", {})
        rate = ins.get("per_s", 0)
        w = [find("cassandra", "w5", f"{n}-{b}") for b in ("1", "100")]
        best = max((x["put_msgs_per_s"] for x in w if x), default=0)
        out.append("")
        out.append(f"Raw single-row INSERTs of the same CQL client, {n} threads: {rate:,.0f}/s, so INSERT/5 = "
                   f"{rate / 5:,.0f}/s; Sluice's best at {n} clients: {best:,.0f} events/s = "
                   f"{best / (rate / 5) if rate else 0:.2f} x INSERT/5.")
out += ["", f"## W6: a 100-event page on a log of {meta.get('events'):,} events", "",
        "| store | query | order | 1 client: p50 ms | p99 ms | 16 clients: pages/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|---|---|---|"]
for s in ("embedded", "cassandra"):
    load = find(s, "w6-load", str(meta.get("events")))
    for q in ("type=t1", "tag=g3", "type=t1&tag=g5", "type=t1&tag=r5"):
        for o in ("asc", "desc"):
            r1, r16 = find(s, "w6", f"{q} {o} 1"), find(s, "w6", f"{q} {o} 16")
            if not r1 or not r16:
                continue
            a, b = r1["ops"].get("hello", {}), r16["ops"].get("hello", {})
            out.append(f"| {s} | {q} | {o} | {a.get('p50_ms', 0):.2f} | {a.get('p99_ms', 0):.2f} | "
                       f"{b.get('per_s', 0):,.0f} | {b.get('p50_ms', 0):.2f} | {b.get('p99_ms', 0):.2f} | "
                       f"{a.get('errors', 0) + b.get('errors', 0)} |")
    if load:
        out.append(f"| {s} | (loading {load['messages_put']:,} events, 16 clients x 100) | | | | "
                   f"{load['put_msgs_per_s']:,.0f} events/s | | | |")
out += ["", "## A subscription under 5,000 events/s into one queue", "",
        "| store | events ingested/s | delivered/s | lag p50 s | lag max s | caught up after the load (s) |",
        "|---|---|---|---|---|---|"]
for s in ("embedded", "cassandra"):
    r = find(s, "sub", "5000")
    if not r:
        continue
    lags = sorted(x["lag_s"] for x in r["samples"][2:]) or [0]
    secs = r["samples"][-1]["t"] if r["samples"] else 1
    out.append(f"| {s} | {r['load']['put_msgs_per_s']:,.0f} | {r['samples'][-1]['delivered'] / secs if r['samples'] else 0:,.0f} | "
               f"{lags[len(lags) // 2]:.2f} | {lags[-1]:.2f} | {r['catch_up_s']} |")
out.append("")
open(md, "w").write("\n".join(out))
print("\n".join(out))
EOF
