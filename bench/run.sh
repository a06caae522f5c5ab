#!/usr/bin/env bash
# bench/run.sh: Sluice against its peers and the machine's ceilings, in one
# run, on this machine. Installs what is missing (Debian packages, azurite
# from npm into ~/.cache/sluice/azurite, matplotlib from PyPI), builds the
# tools and Sluice under bench/build/, starts every server on 127.0.0.1 with
# its data in a temporary directory, runs the workloads, stops each server by
# its PID, and writes bench/results/: latest.md (the table), w1.png, w2.png,
# w3.png, w4.png, ceilings.png, profile-top.txt (perf, Sluice under W1 64+64),
# and latest.raw (every measurement as JSON lines, not committed).
#
#   bench/run.sh            the full run (about 18 minutes; results worth committing)
#   bench/run.sh --quick    a smoke run of about two minutes (short runs, small W3)
#   options: --no-peers  --no-profile  --no-install  --no-wait  --worktree
#            --no-cassandra (no W4)  --only-w4 (W4 alone, for working on it)
#            --scaling (only the scaling part: bench/scaling.sh, W1 on 1 and 16 queues beside
#            Redis, per-thread CPU and the model; writes bench/results/scaling-latest.md)
#   (Sluice is built from the committed HEAD unless --worktree says the work tree)
#
# W4 runs last, so that Cassandra's JVM disturbs no other measurement: a
# throwaway node (scripts/cassandra.sh, in the temporary directory, stopped by
# its PID even when the run fails), Sluice on it, and the raw rates of the
# same CQL client (tests/live/store_bench.c through the store layer).
#
# All load goes to 127.0.0.1, every run is bounded in time and count.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
B=$ROOT/bench/build
RES=$ROOT/bench/results
QUICK=0 PEERS=1 PROFILE=1 INSTALL=1 WAITQ=1 WORKTREE=0 CASS=1 ONLYW4=0 SCALING=0
for a in "$@"; do
    case $a in
    --quick) QUICK=1 WAITQ=0 ;;
    --no-wait) WAITQ=0 ;;
    --worktree) WORKTREE=1 ;;
    --no-peers) PEERS=0 ;;
    --no-profile) PROFILE=0 ;;
    --no-install) INSTALL=0 ;;
    --no-cassandra) CASS=0 ;;
    --only-w4) ONLYW4=1 PEERS=0 PROFILE=0 WAITQ=0 ;;
    --scaling) SCALING=1 CASS=0 ;;
    *) echo "usage: bench/run.sh [--quick] [--no-peers] [--no-profile] [--no-install] [--no-wait] [--worktree]" \
        "[--no-cassandra] [--only-w4] [--scaling]" >&2; exit 2 ;;
    esac
done
((ONLYW4 && !CASS)) && { echo "--only-w4 and --no-cassandra exclude each other" >&2; exit 2; }
if ((QUICK)); then
    DUR=1.5 WARM=0.5 W3N=3000 AZW3N=200 CEIL=2 ROUNDS=1 FSYNC_S=1 PROF_S=3 LEVELS="1 64" MAXS=8 CWARM_S=3
else
    DUR=10 WARM=2 W3N=100000 AZW3N=2000 CEIL=10 ROUNDS=3 FSYNC_S=5 PROF_S=15 LEVELS="1 16 64" MAXS=120 CWARM_S=15
fi
# CWARM_S: seconds of raw CQL writes (16 threads, each op kind) that warm Cassandra's JIT before W4 measures
CASS_HEAP=${CASSANDRA_HEAP:-1g}
W2PC=16       # producers and consumers in W2
W1REPS=$((QUICK ? 1 : 3)) # W1 64+64 runs this often per system; the report shows the median
W3C=16        # consumers in W3
# MAXS: no single load run lasts longer (a W3 drain that stalls ends there)
AZDIR=${AZURITE_DIR:-$HOME/.cache/sluice/azurite}

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# --- Install -----------------------------------------------------------------
install_deps() {
    local need=()
    if ((SCALING)); then # bench/scaling.sh needs Redis and peerbench (which links every peer's client)
        command -v redis-server >/dev/null || need+=(redis-server)
        [ -e /usr/include/hiredis/hiredis.h ] || need+=(libhiredis-dev)
        [ -e /usr/include/amqp.h ] || need+=(librabbitmq-dev)
        [ -e /usr/include/nats/nats.h ] || need+=(libnats-dev)
        if ((${#need[@]})); then
            log "installing ${need[*]}"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
        fi
        return 0
    fi
    command -v wrk >/dev/null || need+=(wrk)
    command -v redis-server >/dev/null || need+=(redis-server)
    command -v rabbitmq-server >/dev/null || need+=(rabbitmq-server)
    command -v beanstalkd >/dev/null || need+=(beanstalkd)
    command -v nats-server >/dev/null || need+=(nats-server)
    command -v perf >/dev/null || need+=(linux-perf)
    if ((CASS)); then # scripts/cassandra.sh: the JDK runs the node, mvn fetches its jars
        command -v java >/dev/null || need+=(openjdk-17-jre-headless)
        command -v mvn >/dev/null || need+=(maven)
    fi
    [ -e /usr/include/hiredis/hiredis.h ] || need+=(libhiredis-dev)
    [ -e /usr/include/amqp.h ] || need+=(librabbitmq-dev)
    [ -e /usr/include/nats/nats.h ] || need+=(libnats-dev)
    [ -e /usr/include/microhttpd.h ] || need+=(libmicrohttpd-dev)
    if ((${#need[@]})); then
        log "installing ${need[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    if [ ! -x "$AZDIR/node_modules/.bin/azurite-queue" ]; then
        log "installing azurite into $AZDIR"
        mkdir -p "$AZDIR"
        (cd "$AZDIR" && npm i --silent azurite >/dev/null)
    fi
    python3 -c 'import matplotlib' 2>/dev/null || { log "installing matplotlib"; pip install -q matplotlib >/dev/null; }
}
((INSTALL)) && install_deps

# --- Build ---------------------------------------------------------------------
mkdir -p "$B" "$RES"
if ((SCALING)); then make -s -C bench build/loadgen build/peerbench; else make -s -C bench tools; fi
# Sluice itself: by default the committed HEAD (git archive into bench/build/head,
# built there), so that a run measures an identified commit and never a file
# someone is half-way through editing; --worktree builds the work tree instead
# (into bench/build/sluice-obj, falling back to HEAD if it does not build).
# bench/build/src-at-run keeps the src/ that was built: perf's file:line refer to it.
build_head() {
    local h=$B/head
    rm -rf "$h" && mkdir -p "$h"
    git archive --format=tar HEAD | tar -x -C "$h"
    make -s -C "$h" B="$h/build" "$h/build/sluice" >"$B/sluice-build.log" 2>&1 || return 1
    SLUICE=$h/build/sluice
    SLUICE_TREE=$h SLUICE_OBJ=$h/build
    SRC_STAMP="git $(git rev-parse --short HEAD) (committed HEAD)"
    rm -rf "$B/src-at-run" && cp -r "$h/src" "$B/src-at-run"
}
SLUICE=
if ((WORKTREE)); then
    SRC_STAMP="work tree at git $(git rev-parse --short HEAD), $(git diff --quiet HEAD -- src && echo 'no uncommitted changes in src/' || echo "uncommitted changes in src/ (diff sha1 $(git diff HEAD -- src | sha1sum | cut -c1-12))")"
    rm -rf "$B/src-at-run" && cp -r src "$B/src-at-run"
    if make -s B=bench/build/sluice-obj bench/build/sluice-obj/sluice >"$B/sluice-build.log" 2>&1; then
        SLUICE=$B/sluice-obj/sluice
        SLUICE_TREE=$ROOT SLUICE_OBJ=bench/build/sluice-obj
    else
        log "the work tree does not build (bench/build/sluice-build.log); measuring HEAD"
    fi
fi
if [ -z "$SLUICE" ] && ! build_head; then
    log "HEAD does not build either (bench/build/sluice-build.log); using build/sluice as it is"
    SLUICE=$ROOT/build/sluice
    SRC_STAMP="build/sluice as found (source unknown)"
    SLUICE_TREE=$ROOT SLUICE_OBJ=bench/build/store-bench-obj
fi
[ -x "$SLUICE" ] || { echo "no Sluice binary" >&2; exit 1; }
# --scaling: the scaling part alone (bench/scaling.sh), with what was built above. To run it
# where many cores are but no build tools: bench/scaling.sh --pack DIR, carry DIR, run DIR/scaling.sh.
if ((SCALING)); then
    log "scaling: bench/scaling.sh with $SLUICE"
    SLUICE=$SLUICE LOADGEN=$B/loadgen PEERBENCH=$B/peerbench REDIS=$(command -v redis-server) OUT=$RES \
        DUR=$DUR WARM=$WARM exec bench/scaling.sh
fi
# W4's raw CQL rates: tests/live/store_bench.c of the work tree (a bench tool, like
# loadgen), built against the CQL client and store of the tree Sluice was built from.
STORE_BENCH=
if ((CASS)); then
    [ "$SLUICE_TREE" != "$ROOT" ] && cp tests/live/store_bench.c "$SLUICE_TREE/tests/live/store_bench.c"
    if make -s -C "$SLUICE_TREE" B="$SLUICE_OBJ" "$SLUICE_OBJ/tests/store_bench" >"$B/store-bench-build.log" 2>&1; then
        STORE_BENCH=$(cd "$SLUICE_TREE" && realpath "$SLUICE_OBJ/tests/store_bench")
    else
        log "tests/live/store_bench.c does not build (bench/build/store-bench-build.log): W4 without the raw CQL rates"
    fi
fi

# --- Servers -----------------------------------------------------------------------
TMP=$(mktemp -d /tmp/sluice-bench.XXXXXX)
chmod 755 "$TMP"
RAW=$RES/latest.raw
META=$TMP/meta.env
: >"$RAW"
: >"$META"
SERVER_PIDS=()
declare -A SAMPLERS=() # RSS sampler PID by its output file
CASS_RUN=              # set while W4's Cassandra node may run: cleanup stops it

stop_pid() { # PID: TERM, wait up to 15 s, then KILL
    local p=$1 i
    kill "$p" 2>/dev/null || return 0
    for ((i = 0; i < 150; i++)); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
}
cleanup() {
    local p
    for p in "${SAMPLERS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${SERVER_PIDS[@]}"; do stop_pid "$p"; done
    # Cassandra by the PID in its run dir (cassandra.sh stop: TERM, up to 60 s, then KILL)
    [ -n "$CASS_RUN" ] && { scripts/cassandra.sh stop --run-dir "$CASS_RUN" >/dev/null 2>&1 || true; }
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { # PORT SECONDS
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
meta() { printf '%s\t%s\n' "$1" "$2" >>"$META"; }

# RSS of a server, sampled every 0.2 s while W1 runs: the peak VmRSS seen, and VmHWM.
rss_start() { # PID OUTFILE
    local pid=$1 out=$2
    (
        max=0
        for ((i = 0; i < 36000; i++)); do
            r=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status" 2>/dev/null) || break
            [ -n "$r" ] && ((r > max)) && max=$r && echo "$max" >"$out.tmp" && mv "$out.tmp" "$out"
            sleep 0.2
        done
    ) &
    SAMPLERS[$out]=$!
}
rss_stop() { # SYSTEM PID OUTFILE
    local sp=${SAMPLERS[$3]:-}
    unset 'SAMPLERS[$3]'
    [ -n "$sp" ] && { kill "$sp" 2>/dev/null || true; wait "$sp" 2>/dev/null || true; }
    local hwm peak
    hwm=$(awk '/^VmHWM/{print $2}' "/proc/$2/status" 2>/dev/null || true)
    peak=$(cat "$3" 2>/dev/null || true)
    echo "{\"system\":\"$1\",\"workload\":\"rss\",\"result\":{\"vmrss_peak_kib\":${peak:-0},\"vmhwm_kib\":${hwm:-0}}}" >>"$RAW"
}

record() { # SYSTEM WORKLOAD LEVEL JSON
    [ -n "$4" ] || { log "  $1 $2 $3: no result"; return 0; }
    echo "{\"system\":\"$1\",\"workload\":\"$2\",\"level\":\"$3\",\"result\":$4}" >>"$RAW"
    python3 - "$4" <<'EOF' >&2 || true
import json, sys
r = json.loads(sys.argv[1])
ops = r.get("ops", {})
s = " ".join(f"{k}:p50={v['p50_ms']:.2f}/p99={v['p99_ms']:.2f}ms" for k, v in ops.items())
if "lifecycles_per_s" in r:
    print(f"           acked/s={r['lifecycles_per_s']:.0f} put/s={r.get('put_msgs_per_s', 0):.0f} {s}")
else:
    print("           " + " ".join(f"{k}={v['per_s']:.0f}/s" for k, v in ops.items()) + " " + s)
EOF
}

LG() { timeout $((MAXS + 30)) "$B/loadgen" --max-seconds "$MAXS" "$@" || true; }
PB() { timeout $((MAXS + 30)) "$B/peerbench" --max-seconds "$MAXS" "$@" || true; }
PB1K() { timeout $((MAXS + 30)) "$B/peerbench-1k" --max-seconds "$MAXS" "$@" || true; } # 1 KiB messages

# --- A quiet machine: a full run waits (up to 10 minutes) for a 1-minute load average below 0.7
QUIET="not checked (--quick or --no-wait)"
if ((WAITQ)); then
    for ((i = 0; i <= 30; i++)); do
        l1=$(cut -d' ' -f1 /proc/loadavg)
        if python3 -c "import sys; sys.exit(0 if $l1 < 0.7 else 1)"; then QUIET="yes: 1-minute load $l1 at the start"; break; fi
        QUIET="**no**: 1-minute load still $l1 after waiting 10 minutes"
        ((i < 30)) && { log "waiting for a quiet machine: 1-minute load $l1 (>= 0.7)"; sleep 20; }
    done
fi
meta quiet "$QUIET"

# --- Machine -------------------------------------------------------------------------------
meta nproc "$(nproc)"
meta cpu "$(awk -F': ' '/model name/{print $2; exit}' /proc/cpuinfo)"
meta mem "$(free -h | awk '/^Mem:/{print $2}')"
meta kernel "$(uname -r)"
meta os "$(. /etc/os-release && echo "$PRETTY_NAME")"
dev=$(df --output=source "$TMP" | tail -1)
meta disk "$dev ($(df --output=fstype "$TMP" | tail -1), $(df -h --output=size "$TMP" | tail -1 | tr -d ' '); rotational=$(cat /sys/block/"$(basename "$dev")"/queue/rotational 2>/dev/null || echo '?'))"
meta load_before "$(cut -d' ' -f1-3 /proc/loadavg)"
meta started "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
meta quick "$QUICK"
meta sluice_version "$("$SLUICE" version 2>/dev/null | head -1) ($SRC_STAMP)"
meta mhd_version "HTTP: Sluice's own server"
meta sqlite_version "SQLite $(dpkg-query -W -f='${Version}' libsqlite3-0 2>/dev/null || echo '?')"
meta wrk_version "$(dpkg-query -W -f='wrk ${Version}' wrk 2>/dev/null)"
meta redis_version "$(redis-server --version | awk '{print $3}' | sed 's/v=//') (hiredis $(dpkg-query -W -f='${Version}' 'libhiredis0.14' 2>/dev/null || dpkg-query -W -f='${Version}' libhiredis-dev))"
meta rabbit_version "$(dpkg-query -W -f='${Version}' rabbitmq-server) (Erlang $(dpkg-query -W -f='${Version}' erlang-base 2>/dev/null || echo '?'), librabbitmq $(dpkg-query -W -f='${Version}' librabbitmq-dev))"
meta beanstalk_version "$(beanstalkd -v | awk '{print $2}') (own C client over its text protocol)"
meta nats_version "$(nats-server --version | awk '{print $2}') (libnats $(dpkg-query -W -f='${Version}' libnats-dev))"
meta azurite_version "$(cd "$AZDIR" && node -p 'require("azurite/package.json").version') (node $(node --version); loadgen over its REST API)"

# --- Ceilings ---------------------------------------------------------------------------------
if ((!ONLYW4)); then
log "ceiling: append 100 B + fdatasync for ${FSYNC_S}s in $TMP"
echo "{\"system\":\"disk\",\"workload\":\"fsync\",\"level\":\"1\",\"result\":$("$B/fsync_rate" "$TMP" "$FSYNC_S")}" >>"$RAW"

log "ceiling: the HTTP server hello-world (bench/sl_hello.c: src/http with 8 workers), loadgen vs wrk, 64 connections, 2 threads"
"$B/sl_hello" "$TMP/hello.port" &
HELLO_PID=$!
SERVER_PIDS+=("$HELLO_PID")
for ((i = 0; i < 50; i++)); do [ -s "$TMP/hello.port" ] && break; sleep 0.1; done
HP=$(cat "$TMP/hello.port")
wrk_json() { # URL -> JSON like loadgen's hello op
    local out
    out=$(cpu_of "$TMP/wrk.cpu" wrk -t2 -c64 -d"${CEIL}s" --latency "$1")
    python3 - "$out" <<'EOF'
import json, re, sys
t = sys.argv[1]
def ms(v):
    n, u = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"us": 1e-3, "ms": 1, "s": 1e3, "m": 6e4}[u]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1))
p50 = ms(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1))
p99 = ms(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
n = int(re.search(r"(\d+) requests in", t).group(1))
print(json.dumps({"proto": "wrk", "conns": 64, "threads": 2, "ops": {"hello": {"n": n, "per_s": rps, "p50_ms": p50, "p99_ms": p99}}}))
EOF
}
# CPU time (user + system, ms) a generator used: perf stat's task-clock, written to FILE
cpu_of() { # FILE CMD...
    local f=$1
    shift
    if perf stat -x, -e task-clock -o "$f.raw" true >/dev/null 2>&1; then
        perf stat -x, -e task-clock -o "$f.raw" "$@"
        awk -F, '/task-clock/{print $1}' "$f.raw" >"$f"
    else
        "$@"
        echo 0 >"$f"
    fi
}
with_cpu() { # JSON CPUFILE -> JSON with "gen_cpu_ms"
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["gen_cpu_ms"]=float(open(sys.argv[2]).read() or 0); print(json.dumps(d))' "$1" "$2" 2>/dev/null || echo "$1"
}
for ((round = 1; round <= ROUNDS; round++)); do
    j=$(cpu_of "$TMP/lg.cpu" "$B/loadgen" --proto hello --port "$HP" --path / --conns 64 --threads 2 --duration "$CEIL" --max-seconds 60 || true)
    record hello loadgen "$round" "$(with_cpu "$j" "$TMP/lg.cpu")"
    j=$(wrk_json "http://127.0.0.1:$HP/")
    record hello wrk "$round" "$(with_cpu "$j" "$TMP/wrk.cpu")"
done
stop_pid "$HELLO_PID"
fi

# --- Sluice ---------------------------------------------------------------------------------------
start_sluice() { # DATADIR [more sluice dev flags] -> sets SP, SPID
    local d=$1
    shift
    mkdir -p "$d"
    "$SLUICE" dev --port 0 --admin-port 0 --data "$d" "$@" >"$d.log" 2>&1 &
    SPID=$!
    SERVER_PIDS+=("$SPID")
    SP=
    # up to 60 s: on Cassandra `sluice dev` first creates its keyspace and tables
    for ((i = 0; i < 600; i++)); do
        SP=$(sed -n 's/^listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$d.log" | head -1)
        [ -n "$SP" ] && break
        kill -0 "$SPID" 2>/dev/null || break
        sleep 0.1
    done
    [ -n "$SP" ] || { cat "$d.log" >&2; echo "Sluice did not start" >&2; return 1; }
    # the account key that `sluice dev` prints, sent as "Authorization: Key ..." (the cheapest scheme)
    SKEY=$(sed -n 's/^ *primary key: *\([A-Za-z0-9_-]*\).*/\1/p' "$d.log" | head -1)
    AUTH=()
    [ -n "$SKEY" ] && AUTH=(--header "Authorization: Key $SKEY")
}
mkq() { curl -sf -o /dev/null ${SKEY:+-H "Authorization: Key $SKEY"} -X POST "http://127.0.0.1:$SP/api/v1/accounts/dev/queues" -d "{\"queueName\":\"$1\"}"; }

log "sluice: $SLUICE"
if ((!ONLYW4)); then
start_sluice "$TMP/sluice" || exit 1
for q in w1-1 w1-16 w1-64 w1-64-2 w1-64-3 w1-64-lp w1-1k-1 w1-1k-2 w1-1k-3 w1-half w2 w3; do mkq "$q"; done
log "sluice: GET /health, loadgen vs wrk"
record sluice-health loadgen 1 "$(LG --proto hello --port "$SP" --path /health --conns 64 --threads 2 --duration "$CEIL")"
record sluice-health wrk 1 "$(wrk_json "http://127.0.0.1:$SP/health")"
rss_start "$SPID" "$TMP/rss.sluice"
for n in $LEVELS; do
    for ((rep = 1; rep <= (n == 64 ? W1REPS : 1); rep++)); do
        qn=w1-$n && ((rep > 1)) && qn=w1-$n-$rep
        log "sluice W1 $n+$n ($qn)"
        record sluice w1 "$n" "$(LG "${AUTH[@]}" --port "$SP" --queue "$qn" --producers "$n" --consumers "$n" --duration "$DUR" --warmup "$WARM" --label "$qn")"
    done
done
log "sluice W1 64+64, long-poll receive (waitSeconds 1)"
record sluice-longpoll w1 64 "$(LG "${AUTH[@]}" --port "$SP" --queue w1-64-lp --producers 64 --consumers 64 --wait 1 --duration "$DUR" --warmup "$WARM" --label w1-64-lp)"
rss_stop sluice "$SPID" "$TMP/rss.sluice"
# W1 64+64 with 1 KiB messages (workload w1-1k: apart from W1, so that neither the peak below nor RSS counts it)
for ((rep = 1; rep <= W1REPS; rep++)); do
    log "sluice W1 64+64, 1 KiB messages (w1-1k-$rep)"
    record sluice w1-1k 64 "$(LG "${AUTH[@]}" --port "$SP" --queue "w1-1k-$rep" --producers 64 --consumers 64 --size 1024 --duration "$DUR" --warmup "$WARM" --label "w1-1k-$rep")"
done
# p99 of receive at half the peak load: producers paced at half the best W1 rate
PEAK=$(python3 - "$RAW" <<'EOF'
import json, sys
best = 0
for l in open(sys.argv[1]):
    d = json.loads(l)
    if d["system"] == "sluice" and d["workload"] == "w1":
        best = max(best, d["result"]["lifecycles_per_s"])
print(f"{best:.1f}")
EOF
)
HALF=$(python3 -c "print(max(1.0, $PEAK / 2))")
log "sluice W1 64+64 at half the peak ($HALF puts/s)"
# (a consumer that finds the queue empty polls again after 1 ms, so that the load is the paced puts, not polling)
record sluice w1-half 64 "$(LG "${AUTH[@]}" --port "$SP" --queue w1-half --producers 64 --consumers 64 --rate "$HALF" --backoff-us 1000 --duration "$DUR" --warmup "$WARM" --label w1-half)"
log "sluice W2 $W2PC+$W2PC, batches of 10"
record sluice w2 "$W2PC" "$(LG "${AUTH[@]}" --port "$SP" --queue w2 --producers "$W2PC" --consumers "$W2PC" --batch 10 --recv-max 10 --duration "$DUR" --warmup "$WARM" --label w2)"
log "sluice W3: fill $W3N (batch put of 100), then drain with $W3C consumers"
record sluice w3-fill "$W3N" "$(LG "${AUTH[@]}" --port "$SP" --queue w3 --producers 4 --consumers 0 --batch 100 --put-count "$W3N" --duration "$MAXS" --label w3-fill)"
record sluice w3 "$W3N" "$(LG "${AUTH[@]}" --port "$SP" --queue w3 --producers 0 --consumers "$W3C" --recv-max 10 --drain "$W3N" --duration "$MAXS" --label w3)"
stop_pid "$SPID"
fi

# --- Peers -------------------------------------------------------------------------------------------
peer_runs() { # SYSTEM PORT PID
    local sys=$1 port=$2 pid=$3 n
    rss_start "$pid" "$TMP/rss.$sys"
    for n in $LEVELS; do
        for ((rep = 1; rep <= (n == 64 ? W1REPS : 1); rep++)); do
            log "$sys W1 $n+$n (run $rep)"
            record "$sys" w1 "$n" "$(PB --peer "$sys" --port "$port" --queue "w1p$n-$rep" --producers "$n" --consumers "$n" --duration "$DUR" --warmup "$WARM")"
        done
    done
    rss_stop "$sys" "$pid" "$TMP/rss.$sys"
    for ((rep = 1; rep <= W1REPS; rep++)); do
        log "$sys W1 64+64, 1 KiB messages (run $rep)"
        record "$sys" w1-1k 64 "$(PB1K --peer "$sys" --port "$port" --queue "w1k-$rep" --producers 64 --consumers 64 --duration "$DUR" --warmup "$WARM")"
    done
    log "$sys W2 $W2PC+$W2PC"
    record "$sys" w2 "$W2PC" "$(PB --peer "$sys" --port "$port" --queue w2 --producers "$W2PC" --consumers "$W2PC" --batch 10 --recv-max 10 --duration "$DUR" --warmup "$WARM")"
    log "$sys W3: fill $W3N, drain with $W3C consumers"
    record "$sys" w3-fill "$W3N" "$(PB --peer "$sys" --port "$port" --queue w3 --producers 4 --consumers 0 --batch 100 --put-count "$W3N" --duration "$MAXS")"
    record "$sys" w3 "$W3N" "$(PB --peer "$sys" --port "$port" --queue w3 --producers 0 --consumers "$W3C" --recv-max 10 --drain "$W3N" --duration "$MAXS")"
}

if ((PEERS)); then
    # Redis 7, AOF with appendfsync always (RDB snapshots off)
    d=$TMP/redis && mkdir -p "$d" && port=$(free_port)
    redis-server --bind 127.0.0.1 --port "$port" --dir "$d" --appendonly yes --appendfsync always --save '' \
        --daemonize no --logfile "$d/log" &
    pid=$!
    SERVER_PIDS+=("$pid")
    wait_port "$port" 10 && peer_runs redis "$port" "$pid" || log "redis did not start"
    stop_pid "$pid"

    # beanstalkd, binlog with fsync after every write (-f0)
    d=$TMP/beanstalk && mkdir -p "$d" && port=$(free_port)
    beanstalkd -l 127.0.0.1 -p "$port" -b "$d" -f0 &
    pid=$!
    SERVER_PIDS+=("$pid")
    wait_port "$port" 10 && peer_runs beanstalk "$port" "$pid" || log "beanstalkd did not start"
    stop_pid "$pid"

    # RabbitMQ as the rabbitmq user, its own epmd on its own port
    d=$TMP/rabbit && mkdir -p "$d" && chown rabbitmq: "$d"
    port=$(free_port) dport=$(free_port) eport=$(free_port)
    su rabbitmq -s /bin/sh -c "cd '$d' && HOME='$d' RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 ERL_EPMD_ADDRESS=127.0.0.1 \
        ERL_EPMD_PORT=$eport RABBITMQ_NODE_PORT=$port RABBITMQ_DIST_PORT=$dport RABBITMQ_NODENAME=bench@localhost \
        RABBITMQ_MNESIA_BASE='$d/mnesia' RABBITMQ_LOG_BASE='$d/log' RABBITMQ_PID_FILE='$d/pid' \
        RABBITMQ_ENABLED_PLUGINS_FILE='$d/enabled_plugins' RABBITMQ_CONFIG_FILE='$d/none' \
        exec rabbitmq-server" >"$d/out.log" 2>&1 &
    SUPID=$!
    SERVER_PIDS+=("$SUPID")
    if wait_port "$port" 60; then
        sleep 2
        pid=$(cat "$d/pid")
        SERVER_PIDS+=("$pid")
        peer_runs rabbit "$port" "$pid"
        stop_pid "$pid"
    else
        log "rabbitmq did not start"
    fi
    # the epmd it started: found by the port we gave it, stopped by PID
    epid=$(ss -Htlnp "sport = :$eport" 2>/dev/null | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)
    [ -n "$epid" ] && stop_pid "$epid"
    stop_pid "$SUPID"

    # NATS JetStream (file storage; does not fsync each message)
    d=$TMP/nats && mkdir -p "$d" && port=$(free_port)
    nats-server -a 127.0.0.1 -p "$port" -js -sd "$d" >"$d/log" 2>&1 &
    pid=$!
    SERVER_PIDS+=("$pid")
    wait_port "$port" 10 && peer_runs nats "$port" "$pid" || log "nats did not start"
    stop_pid "$pid"

    # Azurite Queue (HTTP API; W2 has no equivalent; W3 kept small: its receive scans the queue)
    d=$TMP/azurite && mkdir -p "$d" && port=$(free_port)
    "$AZDIR/node_modules/.bin/azurite-queue" --queueHost 127.0.0.1 --queuePort "$port" -l "$d" \
        --skipApiVersionCheck --disableTelemetry -s >"$d/log" 2>&1 &
    pid=$!
    SERVER_PIDS+=("$pid")
    if wait_port "$port" 30; then
        SAS=$(python3 bench/azure_sas.py "$port" w1p1 w1p16 w1p64 w3q)
        AZ=(--proto azure --port "$port" --account devstoreaccount1 --sas "$SAS")
        rss_start "$pid" "$TMP/rss.azurite"
        for n in $LEVELS; do
            log "azurite W1 $n+$n"
            record azurite w1 "$n" "$(LG "${AZ[@]}" --queue "w1p$n" --producers "$n" --consumers "$n" --duration "$DUR" --warmup "$WARM")"
        done
        rss_stop azurite "$pid" "$TMP/rss.azurite"
        log "azurite W3: fill $AZW3N, drain with $W3C consumers"
        record azurite w3-fill "$AZW3N" "$(LG "${AZ[@]}" --queue w3q --producers 16 --consumers 0 --put-count "$AZW3N" --duration "$MAXS")"
        record azurite w3 "$AZW3N" "$(LG "${AZ[@]}" --queue w3q --producers 0 --consumers "$W3C" --recv-max 10 --drain "$AZW3N" --duration "$MAXS")"
    else
        log "azurite did not start"
    fi
    stop_pid "$pid"
fi

# --- Profile: Sluice under W1 64+64 ---------------------------------------------------------------------
if ((PROFILE)) && perf stat -e instructions true >/dev/null 2>&1; then
    log "profile: perf record on Sluice under W1 64+64 for ${PROF_S}s"
    start_sluice "$TMP/sluice-prof" || exit 1
    mkq prof
    LG "${AUTH[@]}" --port "$SP" --queue prof --producers 64 --consumers 64 --duration $((PROF_S + 3)) --label prof >"$TMP/prof.json" &
    LGPID=$!
    sleep 1
    # how many fsyncs the store issues meanwhile: commits per second, hence requests per group commit
    perf stat -x, -e syscalls:sys_enter_fdatasync,syscalls:sys_enter_fsync -p "$SPID" -o "$TMP/fsyncs.csv" \
        -- sleep "$PROF_S" >/dev/null 2>&1 &
    STATPID=$!
    perf stat --per-thread -e task-clock -p "$SPID" -o "$TMP/threads.txt" -- sleep "$PROF_S" >/dev/null 2>&1 &
    THRPID=$!
    perf record -q -F 299 --call-graph dwarf,32768 -p "$SPID" -o "$B/perf.data" -- sleep "$PROF_S" >/dev/null 2>&1 || true
    wait "$STATPID" || true
    wait "$THRPID" || true
    wait "$LGPID" || true
    FSYNCS=$(awk -F, '/sys_enter_f/{s += $1} END {print s + 0}' "$TMP/fsyncs.csv" 2>/dev/null || echo 0)
    record sluice-profiled w1 64 "$(cat "$TMP/prof.json")"
    stop_pid "$SPID"
    set +o pipefail # head closes the pipes early
    {
        echo "# perf: Sluice ($SLUICE) under W1 64+64, ${PROF_S}s, 299 Hz, dwarf call graphs (32 KiB stacks)"
        echo "# run: $(date -u +%Y-%m-%dT%H:%M:%SZ)  result: $(cat "$TMP/prof.json")"
        echo "# source lines refer to the tree Sluice was built from: $SRC_STAMP (copy: bench/build/src-at-run)"
        python3 - "$TMP/prof.json" "$FSYNCS" "$PROF_S" <<'PYEOF' || true
import json, sys
r = json.load(open(sys.argv[1]))
f, secs = float(sys.argv[2]), float(sys.argv[3])
reqs = sum(v["per_s"] for v in r["ops"].values())
lc = r["lifecycles_per_s"]
print(f"# fsync + fdatasync calls by Sluice while profiled: {f / secs:,.0f}/s; requests {reqs:,.0f}/s, lifecycles {lc:,.0f}/s:"
      f" {reqs / max(f / secs, 1e-9):.2f} requests per fsync, {(f / secs) / max(lc, 1e-9):.2f} fsyncs per lifecycle")
PYEOF
        echo
        echo "## CPU by thread (perf stat --per-thread, task-clock; 1.00 = one core busy all the time)"
        awk -v secs="$PROF_S" '/task-clock/ && $2 ~ /^[0-9.]+$/ {n = $1; sub(/-[0-9]+$/, "", n); ms[n] += $2; k[n]++; if ($2 > top[n]) top[n] = $2}
            END {for (n in ms) printf "%-14s threads %3d  cores used %.2f  busiest thread %.2f\n", n, k[n], ms[n] / 1000 / secs, top[n] / 1000 / secs}' \
            "$TMP/threads.txt" 2>/dev/null | sort -k5 -rn || true
        echo
        echo "## Sluice's own functions and source lines (bench/perf_lines.py)"
        perf script -i "$B/perf.data" -F tid,ip,sym,dso 2>/dev/null | python3 bench/perf_lines.py "$SLUICE" 45
        echo
        echo "## self time by shared object"
        perf report -i "$B/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15
        echo
        echo "## self time by symbol (top 40)"
        perf report -i "$B/perf.data" --no-children --sort dso,symbol --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40
        echo
        echo "## inclusive time by symbol (top 60, Sluice and libraries)"
        perf report -i "$B/perf.data" --children --sort symbol --stdio -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -60
        echo
        echo "## callers of the top symbols (caller graph, 2% threshold)"
        perf report -i "$B/perf.data" --no-children --sort symbol --stdio -g caller,2,callee --percent-limit 3 2>/dev/null | grep -v '^$' | head -250
    } >"$RES/profile-top.txt"
    set -o pipefail
else
    log "profile skipped"
fi

# --- W4: W1 on Sluice's Cassandra store, beside the raw rates of its CQL client ---------------------------
# Last, so that the JVM disturbs nothing else. One throwaway node in $TMP (scripts/cassandra.sh: 5.0.x
# from Maven Central, heap $CASS_HEAP, commit log synced every 10 s, Cassandra's default), Sluice on it
# (`sluice dev` with --contact-points), and at each W1 level P+P the raw rates at the same concurrency:
# 2P threads of tests/live/store_bench.c, one request in flight each (as the 2P loadgen connections),
# single-row INSERTs then LWT UPDATEs, through the same CQL client and store layer that Sluice uses.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; } # PID: user + system, in clock ticks
w4() {
    local port cpid n j s0 c0 s1 c1
    CASS_RUN=$TMP/cassandra
    port=$(scripts/cassandra.sh free-port --run-dir "$CASS_RUN") || { log "W4: no free port pair for Cassandra"; return 1; }
    log "W4: starting Cassandra on 127.0.0.1:$port (heap $CASS_HEAP; the first run fetches its jars with mvn)"
    if ! scripts/cassandra.sh start --port "$port" --run-dir "$CASS_RUN" --heap "$CASS_HEAP" >"$TMP/cassandra-start.txt" 2>&1; then
        tail -20 "$TMP/cassandra-start.txt" >&2
        log "W4: Cassandra did not start"
        return 1
    fi
    cpid=$(cat "$CASS_RUN/cassandra.pid")
    log "W4: $(grep -o 'CQL up.*' "$TMP/cassandra-start.txt" | head -1) (pid $cpid)"
    meta cassandra_version "Apache Cassandra $(grep -m1 -o 'Cassandra version: [^ ]*' "$CASS_RUN/logs/system.log" | sed 's/.*: //')\
 (cassandra-all from Maven Central via scripts/cassandra.sh; $(java -version 2>&1 | head -1 | tr -d '"'); heap $CASS_HEAP;\
 commitlog_sync periodic, 10 s)"
    meta cassandra_heap "$CASS_HEAP"
    if [ -n "$STORE_BENCH" ]; then
        log "W4: warming Cassandra up: raw INSERTs then LWT UPDATEs, 16 threads, ${CWARM_S}s each (not recorded)"
        timeout $((2 * CWARM_S + 60)) "$STORE_BENCH" "$port" 16 "$CWARM_S" --op upsert,cas --body 100 \
            --keyspace sluice_raw --json >"$TMP/w4-warmup.json" 2>&1 || log "W4: warm-up failed: $(head -c 300 "$TMP/w4-warmup.json")"
    fi
    start_sluice "$TMP/sluice-cass" --contact-points 127.0.0.1 --cassandra-port "$port" --keyspace sluice_w4 || return 1
    log "W4: sluice on Cassandra at 127.0.0.1:$SP"
    for n in $LEVELS; do mkq "w4-$n"; done
    rss_start "$SPID" "$TMP/rss.sluice-cassandra"
    rss_start "$cpid" "$TMP/rss.cassandra"
    for n in $LEVELS; do
        log "sluice on Cassandra W1 $n+$n"
        s0=$(cpu_ticks "$SPID") c0=$(cpu_ticks "$cpid")
        j=$(LG "${AUTH[@]}" --port "$SP" --queue "w4-$n" --producers "$n" --consumers "$n" --duration "$DUR" \
            --warmup "$WARM" --label "w4-$n" 2>"$TMP/w4-lg-$n.err")
        s1=$(cpu_ticks "$SPID") c1=$(cpu_ticks "$cpid")
        # the CPU time Sluice and the JVM used over the whole loadgen run (warm-up included), as cores busy
        j=$(python3 -c 'import json, sys
d = json.loads(sys.argv[1]); a = [float(x) for x in sys.argv[2:6]]
secs = d["seconds"] + a[3]
d["server_cores"] = {"sluice": a[0] / a[2] / secs, "cassandra": a[1] / a[2] / secs}
print(json.dumps(d))' "$j" $((s1 - s0)) $((c1 - c0)) "$(getconf CLK_TCK)" "$WARM" 2>/dev/null || echo "$j")
        record sluice-cassandra w1 "$n" "$j"
        # loadgen prints its first few non-2xx answers: keep their statuses
        if [ -s "$TMP/w4-lg-$n.err" ]; then
            head -5 "$TMP/w4-lg-$n.err" | cut -c1-200 >&2
            python3 -c '
import json, re, sys
print(json.dumps({"system": "sluice-cassandra", "workload": "w1-errors", "level": sys.argv[2],
                  "result": {"answers": re.findall(r"answered (\d+)", open(sys.argv[1]).read())}}))' \
                "$TMP/w4-lg-$n.err" "$n" >>"$RAW" || true
        fi
        if [ -n "$STORE_BENCH" ]; then
            log "raw CQL, $((2 * n)) threads (one request in flight each): INSERT, then LWT UPDATE"
            j=$(timeout $((2 * MAXS + 60)) "$STORE_BENCH" "$port" $((2 * n)) "$DUR" --warmup "$WARM" --op upsert,cas \
                --body 100 --keyspace sluice_raw --json 2>"$TMP/w4-raw-$n.err" || true)
            [ -s "$TMP/w4-raw-$n.err" ] && head -5 "$TMP/w4-raw-$n.err" >&2
            python3 -c 'import json, sys; json.loads(sys.argv[1])' "$j" 2>/dev/null || j= # a cut-short run
            record cql w4-raw "$n" "$j"
        fi
    done
    rss_stop sluice-cassandra "$SPID" "$TMP/rss.sluice-cassandra"
    rss_stop cassandra "$cpid" "$TMP/rss.cassandra"
    # what Sluice logged after its start (store errors behind 503s, say): lines by level, the commonest
    python3 -c '
import collections, json, re, sys
c, started = collections.Counter(), False
for l in open(sys.argv[1], errors="replace"):
    m = re.match(r"\S+Z (\w+) (.*)", l)
    if m and started and " listening on " not in l:
        c[(m.group(1), re.sub(r"\d+", "N", m.group(2))[:160])] += 1
    started = started or " listening on " in l
lv = collections.Counter()
for (level, _), v in c.items():
    lv[level] += v
top = [{"level": k[0], "message": k[1], "count": v} for k, v in c.most_common(5)]
print(json.dumps({"system": "sluice-cassandra", "workload": "log", "result": {"lines": dict(lv), "top": top}}))' \
        "$TMP/sluice-cass.log" >>"$RAW" || true
    stop_pid "$SPID"
    scripts/cassandra.sh stop --run-dir "$CASS_RUN" >/dev/null 2>&1 || true
    CASS_RUN=
}
if ((CASS)); then
    w4 || log "W4 incomplete (see above)"
else
    log "W4 skipped (--no-cassandra)"
fi

meta finished "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
meta load_after "$(cut -d' ' -f1-3 /proc/loadavg)"
python3 bench/report.py "$RAW" "$META" "$RES"
log "wrote $RES/latest.md"
