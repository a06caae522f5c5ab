#!/usr/bin/env bash
# bench/scaling.sh: how Sluice on its embedded store scales with cores, and
# the model that predicts it (issue 18). Runs W1 on one `sluice dev`: 64+64
# and 256+256 on one queue, then 16 queues at once (16 producers and 16
# consumers each, one loadgen per queue), and Redis (AOF, fsync always) at
# 64+64 and 256+256 beside it. For each Sluice run it reads the server's CPU
# by thread (the threads are named: sl-writer, sl-http, sl-pool, ...) and the
# store's commits from GET /metrics, and fits the model: the embedded
# store's single writer is the serial part (its CPU per lifecycle bounds the
# rate whatever the cores), everything else runs in parallel (its CPU per
# lifecycle, with the load generator's, divides the cores).
#
#   bench/scaling.sh             measure here; writes bench/results/scaling-latest.md and .raw
#   bench/scaling.sh --pack DIR  copy this script, the binaries and their shared libraries into
#                                DIR, for a machine without build tools: there, run DIR/scaling.sh
#                                (it finds them beside itself; OUT says where the results go)
#
# Environment: SLUICE, LOADGEN, PEERBENCH, REDIS (the binaries; defaults: the
# packed ones, else build/sluice, bench/build/*, redis-server on the PATH),
# DUR (measured seconds, 10), WARM (2), OUT (the results' directory).
# `bench/run.sh --scaling` builds what is missing and runs this.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -x "$HERE/bin/sluice" ]; then # a packed copy
    export LD_LIBRARY_PATH=$HERE/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    SLUICE=${SLUICE:-$HERE/bin/sluice} LOADGEN=${LOADGEN:-$HERE/bin/loadgen}
    PEERBENCH=${PEERBENCH:-$HERE/bin/peerbench} REDIS=${REDIS:-$HERE/bin/redis-server}
    OUT=${OUT:-$HERE/results}
else
    ROOT=$(cd "$HERE/.." && pwd)
    SLUICE=${SLUICE:-$ROOT/build/sluice} LOADGEN=${LOADGEN:-$ROOT/bench/build/loadgen}
    PEERBENCH=${PEERBENCH:-$ROOT/bench/build/peerbench} REDIS=${REDIS:-$(command -v redis-server || true)}
    OUT=${OUT:-$ROOT/bench/results}
fi
DUR=${DUR:-10} WARM=${WARM:-2}

if [ "${1:-}" = --pack ]; then
    [ -n "${2:-}" ] || { echo "usage: bench/scaling.sh --pack DIR" >&2; exit 2; }
    d=$2
    mkdir -p "$d/bin" "$d/lib"
    cp "$0" "$d/scaling.sh"
    for b in "$SLUICE" "$LOADGEN" "$PEERBENCH" "$REDIS"; do
        [ -x "$b" ] || { echo "missing: $b" >&2; exit 1; }
        cp "$b" "$d/bin/"
        # every shared library but the C library's own (the target has those)
        ldd "$b" | awk '/=> \// {print $3}' | grep -Ev '/(libc|libm|libpthread|libdl|librt|ld-linux[^/]*)\.so' |
            xargs -r cp -L -t "$d/lib/"
    done
    echo "packed into $d: run $d/scaling.sh (needs bash, curl and python3 there)"
    exit 0
fi
for b in "$SLUICE" "$LOADGEN"; do [ -x "$b" ] || { echo "missing: $b" >&2; exit 1; }; done
mkdir -p "$OUT"
TMP=$(mktemp -d /tmp/sluice-scaling.XXXXXX)
RAW=$OUT/scaling-latest.raw
: >"$RAW"
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# The server's CPU by thread name, in clock ticks: "name ticks" lines.
threads_cpu() { # PID
    local t
    for t in /proc/"$1"/task/*; do
        printf '%s %s\n' "$(cat "$t/comm" 2>/dev/null || echo gone)" \
            "$(awk '{print $14 + $15}' "$t/stat" 2>/dev/null || echo 0)"
    done | awk '{s[$1] += $2} END {for (n in s) print n, s[n]}'
}
# The whole machine's busy ticks (all but idle and iowait), for the generator's share.
machine_cpu() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
store_metrics() { # -> "commits requests commit_seconds"
    curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$AP/metrics" | awk '
        $1 == "sluice_store_commits_total" {c = $2}
        $1 == "sluice_store_committed_requests_total" {r = $2}
        $1 == "sluice_store_commit_duration_seconds_sum" {s = $2}
        END {print c + 0, r + 0, s + 0}'
}
snapshot() { # FILE: thread ticks, machine ticks, store metrics, time
    { threads_cpu "$SPID"; echo "@machine $(machine_cpu)"; echo "@store $(store_metrics)"; echo "@time $(date +%s.%N)"; } >"$1"
}

TOKEN=scalingtoken0123456789
log "sluice: $SLUICE"
# the embedded store, whatever this shell's environment says about Cassandra
env -u CONTACT_POINTS SLUICE_ADMIN_TOKEN=$TOKEN "$SLUICE" dev --port 0 --admin-port 0 --data "$TMP/data" >"$TMP/sluice.log" 2>&1 &
SPID=$!
PIDS+=("$SPID")
SP= AP=
for ((i = 0; i < 100; i++)); do
    SP=$(sed -n 's/^listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$TMP/sluice.log" | head -1)
    AP=$(sed -n 's/^admin API listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$TMP/sluice.log" | head -1)
    [ -n "$SP" ] && [ -n "$AP" ] && break
    sleep 0.1
done
[ -n "$SP" ] && [ -n "$AP" ] || { cat "$TMP/sluice.log" >&2; echo "Sluice did not start" >&2; exit 1; }
KEY=$(sed -n 's/^ *primary key: *\([A-Za-z0-9_-]*\).*/\1/p' "$TMP/sluice.log" | head -1)
mkq() { curl -sf -o /dev/null -H "Authorization: Key $KEY" -X POST "http://127.0.0.1:$SP/api/v1/accounts/dev/queues" \
    -d "{\"queueName\":\"$1\"}"; }
LG() { timeout $((DUR + WARM + 60)) "$LOADGEN" --port "$SP" --account dev --header "Authorization: Key $KEY" \
    --duration "$DUR" --warmup "$WARM" --max-seconds $((DUR + WARM + 30)) "$@" 2>/dev/null | tail -1; }

# One Sluice run: NAME QUEUES P C (P and C per queue; one loadgen per queue).
sluice_run() {
    local name=$1 nq=$2 p=$3 c=$4 i lgs=()
    for ((i = 0; i < nq; i++)); do mkq "$name-$i"; done
    log "sluice W1 $name: $nq queue(s) x $p+$c"
    for ((i = 0; i < nq; i++)); do
        LG --queue "$name-$i" --producers "$p" --consumers "$c" --threads $((nq > 1 ? 1 : 2)) \
            --label "$name-$i" >"$TMP/$name-$i.json" &
        lgs+=($!)
    done
    # the CPU window: the middle 80% of the measured time, whatever DUR is
    sleep "$(awk "BEGIN {print $WARM + $DUR / 10}")"
    snapshot "$TMP/$name.a"
    sleep "$(awk "BEGIN {print $DUR * 0.8}")"
    snapshot "$TMP/$name.b"
    for i in "${lgs[@]}"; do wait "$i" || true; done
    python3 - "$TMP" "$name" "$nq" "$p" "$c" "$(getconf CLK_TCK)" >>"$RAW" <<'EOF'
import json, sys
tmp, name, nq, p, c, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), float(sys.argv[6])
def snap(f):
    th, m = {}, {}
    for l in open(f):
        k, *v = l.split()
        if k.startswith("@"): m[k[1:]] = [float(x) for x in v]
        else: th[k] = float(v[0])
    return th, m
(ta, ma), (tb, mb) = snap(f"{tmp}/{name}.a"), snap(f"{tmp}/{name}.b")
secs = mb["time"][0] - ma["time"][0]
cores = {k: (tb[k] - ta.get(k, 0)) / hz / secs for k in tb}
res = [json.loads(open(f"{tmp}/{name}-{i}.json").read() or "{}") for i in range(nq)]
lc = sum(r.get("lifecycles_per_s", 0) for r in res)
errors = sum(o.get("errors", 0) for r in res for o in r.get("ops", {}).values())
p99 = max((r["ops"]["receive"]["p99_ms"] for r in res if "ops" in r and "receive" in r["ops"]), default=0)
commits, reqs, csecs = (b - a for a, b in zip(ma["store"], mb["store"]))
print(json.dumps({"system": "sluice", "run": name, "queues": nq, "producers": p, "consumers": c,
                  "lifecycles_per_s": lc, "errors": errors, "receive_p99_ms": p99, "window_s": secs,
                  "server_cores": sum(cores.values()), "cores_by_thread": cores,
                  "machine_cores": (mb["machine"][0] - ma["machine"][0]) / hz / secs,
                  "commits_per_s": commits / secs, "requests_per_commit": reqs / commits if commits else 0,
                  "writer_busy": csecs / secs}))
EOF
}

# Redis W1 P+C through peerbench (one thread per client).
redis_run() { # P C
    [ -x "$PEERBENCH" ] && [ -n "$REDIS" ] && [ -x "$REDIS" ] || { log "redis: no peerbench or redis-server, skipped"; return 0; }
    local d=$TMP/redis-$1 port
    mkdir -p "$d"
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$REDIS" --bind 127.0.0.1 --port "$port" --dir "$d" --appendonly yes --appendfsync always --save '' \
        --daemonize no --logfile "$d/log" &
    local rp=$!
    PIDS+=("$rp")
    for ((i = 0; i < 100; i++)); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
    log "redis W1 $1+$2"
    local j
    j=$(timeout $((DUR + WARM + 60)) "$PEERBENCH" --peer redis --port "$port" --queue "w1-$1" --producers "$1" \
        --consumers "$2" --duration "$DUR" --warmup "$WARM" --max-seconds $((DUR + WARM + 30)) 2>/dev/null | tail -1 || true)
    kill "$rp" 2>/dev/null || true
    wait "$rp" 2>/dev/null || true
    [ -n "$j" ] && python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(json.dumps({"system":"redis","run":f"{sys.argv[2]}+{sys.argv[3]}","lifecycles_per_s":r.get("lifecycles_per_s",0)}))' \
        "$j" "$1" "$2" >>"$RAW"
}

sluice_run q64 1 64 64
sluice_run q256 1 256 256
sluice_run m16 16 16 16
kill "$SPID"
wait "$SPID" 2>/dev/null || true
redis_run 64 64
redis_run 256 256

python3 - "$RAW" "$OUT/scaling-latest.md" "$(nproc)" "$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)" <<'EOF'
import json, sys, datetime
raw, out, ncpu, cpu = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
runs = [json.loads(l) for l in open(raw)]
sl = {r["run"]: r for r in runs if r["system"] == "sluice"}
rd = {r["run"]: r["lifecycles_per_s"] for r in runs if r["system"] == "redis"}
f = lambda x, d=0: f"{x:,.{d}f}"
w = []
w.append(f"# Scaling of the embedded store (bench/scaling.sh), {datetime.datetime.utcnow():%Y-%m-%d %H:%M} UTC")
w.append(f"\nMachine: {ncpu} cores ({cpu}). W1: put one, receive one, ack it; one `sluice dev`.\n")
w.append("| run | lifecycles/s | server cores | sl-writer | sl-http | sl-pool | other | writer µs/lifecycle | rest µs/lifecycle | generator µs/lifecycle | commits/s | requests/commit | writer busy | receive p99 |")
w.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
model = {}
for name, r in sl.items():
    x = r["lifecycles_per_s"] or 1e-9
    c = r["cores_by_thread"]
    wr, ht, po = c.get("sl-writer", 0), c.get("sl-http", 0), c.get("sl-pool", 0)
    other = r["server_cores"] - wr - ht - po
    wus, rus = max(wr, 1e-9) / x * 1e6, (r["server_cores"] - wr) / x * 1e6
    gus = max(0.0, r["machine_cores"] - r["server_cores"]) / x * 1e6
    model[name] = (wus, rus, gus)
    label = f"{r['queues']} x {r['producers']}+{r['consumers']}"
    w.append(f"| {label} | {f(x)} | {r['server_cores']:.2f} | {wr:.2f} | {ht:.2f} | {po:.2f} | {other:.2f} | {wus:.1f} | {rus:.1f} | {gus:.1f} | {f(r['commits_per_s'])} | {r['requests_per_commit']:.1f} | {r['writer_busy']:.0%} | {r['receive_p99_ms']:.2f} ms |")
if rd:
    w.append("\nRedis (AOF, appendfsync always), same run: " + ", ".join(f"W1 {k} {f(v)} lifecycles/s" for k, v in rd.items()) + ".")
# The model, per run: the writer's CPU per lifecycle bounds the rate whatever
# the cores (its fsyncs are shared by groups that grow with the load, so only
# its CPU counts at the limit); the other threads' and the generator's divide
# the cores.
if sl:
    w.append("\n## The model\n")
    w.append("One writer thread commits for every queue. Its CPU per lifecycle bounds W1 at 1 / that, on any number "
             "of cores: its fsyncs are shared by groups that grow with the load, so only its CPU counts at the limit. "
             "The other threads scale with the cores, which they share with the load generator: N cores allow "
             "N / (their µs + the generator's µs) lifecycles/s. The prediction is the lower bound of the two, and the "
             "cores Sluice then uses are that rate times its CPU per lifecycle.\n")
    w.append("| run | serial bound | predicted W1 on 2 / 4 / 8 / 16 / 32 cores | cores Sluice uses on 16 | writer-bound from |")
    w.append("|---|---|---|---|---|")
    for name, r in sl.items():
        wus, rus, gus = model[name]
        xs = 1e6 / wus
        pred = [min(n * 1e6 / (rus + gus), xs) for n in (2, 4, 8, 16, 32)]
        label = f"{r['queues']} x {r['producers']}+{r['consumers']}"
        w.append(f"| {label} | {f(xs)} | {' / '.join(f(x) for x in pred)} | {pred[3] * (wus + rus) / 1e6:.1f} | "
                 f"{(rus + gus) / wus:.1f} cores |")
    w.append("\nPast the core count in the last column, more cores add nothing: the next step is more writers (one per "
             "shard of queues, each adding its serial bound for the queues it serves), or less writer CPU per lifecycle.")
open(out, "w").write("\n".join(w) + "\n")
print("\n".join(w))
EOF
