#!/usr/bin/env bash
# bench/ab.sh: before/after on one workload, alternating two builds in one
# sitting (the machine's speed moves between sittings, so separate runs do not
# compare). Each run starts `sluice dev` on a fresh data directory, creates
# one queue, runs bench/build/loadgen against it and prints one line: the
# rates, the server's CPU (cores, and µs per lifecycle; the embedded store's
# writer thread's alone too) and the latencies.
#
#   bench/ab.sh ROUNDS P C A B [loadgen flags...]
#
# A and B are sluice binaries, each optionally followed by ":VAR=value" for
# its environment (e.g. build/sluice:SLUICE_THREADS=32; with SLUICE_TLS_CERT
# and SLUICE_TLS_KEY the server speaks HTTPS, and so does loadgen). P and C are the
# producers and consumers; the flags go to loadgen (W2: --batch 10
# --recv-max 10; W3: FILL=100000 and P=0, C=16, --recv-max 10 --drain
# 100000). DUR (seconds, 6) and WARM (2) set the run length. PROTO=sqs
# drives the same queue through the SQS protocol (SigV4, access key "dev",
# the primary key as secret; SQS's W1 is --recv-max 10 --ack-each). To build an
# older revision: git worktree add /tmp/old REV && make -C /tmp/old.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 5 ] || { sed -n 2,15p "$0" >&2; exit 2; }
rounds=$1 p=$2 c=$3 a=$4 b=$5
shift 5
[ -x bench/build/loadgen ] || make -s -C bench build/loadgen >/dev/null
writer_ticks() { # PID -> CPU ticks of its thread sl-writer (0 without one: the Cassandra store)
    local t n=0
    for t in /proc/"$1"/task/*; do
        [ "$(cat "$t/comm" 2>/dev/null)" = sl-writer ] && n=$(awk '{print $14 + $15}' "$t/stat")
    done
    echo "$n"
}
one() { # BIN[:ENV] [loadgen flags] -> prints the run's line
    local spec=$1 envs="" dir pid port key
    shift
    local bin=${spec%%:*}
    [[ $spec == *:* ]] && envs=${spec#*:}
    dir=$(mktemp -d)
    env SLUICE_ADMIN_TOKEN=abtoken0123456789abcdef $envs "$bin" dev --port 0 --admin-port 0 --data-dir "$dir" \
        >"$dir/log" 2>&1 &
    pid=$!
    for ((i = 0; i < 100; i++)); do grep -q "primary key" "$dir/log" && break; sleep 0.1; done
    local url tls=()
    url=$(grep -o "https\?://127.0.0.1:[0-9]*" "$dir/log" | head -1)
    port=${url##*:}
    [[ $url == https:* ]] && tls=(--tls) # a server given SLUICE_TLS_CERT/KEY: loadgen speaks TLS too
    key=$(grep "primary key" "$dir/log" | awk '{print $NF}')
    curl -skf -o /dev/null -H "Authorization: Key $key" -X POST "$url/api/v1/accounts/dev/queues" \
        -d '{"queueName":"q"}'
    if [ -n "${FILL:-}" ]; then # W3: queue FILL messages first, unmeasured
        bench/build/loadgen --port "$port" --account dev --queue q --header "Authorization: Key $key" \
            --producers 4 --consumers 0 --batch 100 --put-count "$FILL" --duration 120 "${tls[@]}" >/dev/null 2>&1
    fi
    local t0 c0 c1 auth=(--account dev --queue q --header "Authorization: Key $key")
    [ "${PROTO:-}" = sqs ] && auth=(--proto sqs --access-key dev --secret "$key" --queue-url "$url/dev/q")
    t0=$(date +%s.%N)
    c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    w0=$(writer_ticks "$pid")
    bench/build/loadgen --port "$port" "${auth[@]}" \
        --producers "$p" --consumers "$c" --duration "${DUR:-6}" --warmup "${WARM:-2}" "${tls[@]}" "$@" 2>/dev/null |
        tail -1 >"$dir/result.json"
    c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    w1=$(writer_ticks "$pid")
    # Server CPU (user + system, all threads) over the whole loadgen run,
    # warm-up included, per lifecycle at the measured rate.
    python3 - "$dir/result.json" "$t0" "$(date +%s.%N)" "$c0" "$c1" "$(getconf CLK_TCK)" "$w0" "$w1" <<'EOF2'
import json, sys
d = json.load(open(sys.argv[1]))
secs = float(sys.argv[3]) - float(sys.argv[2])
cores = (float(sys.argv[5]) - float(sys.argv[4])) / float(sys.argv[6]) / secs
rate = d["lifecycles_per_s"]
ops = " ".join("%s %.0f/s p50/p99 %.2f/%.2f ms" % (k, v["per_s"], v["p50_ms"], v["p99_ms"])
               for k, v in d["ops"].items() if v["n"])
# The embedded store's writer thread (the serial part of bench/scaling.sh's model).
wcores = (float(sys.argv[8]) - float(sys.argv[7])) / float(sys.argv[6]) / secs
writer = "  writer %.1f us/lifecycle" % (wcores * 1e6 / rate) if rate and wcores > 0 else ""
print("lifecycles/s %.0f  puts/s %.0f  server cores %.2f (%.0f us/lifecycle)%s  %s"
      % (rate, d["put_msgs_per_s"], cores, cores * 1e6 / rate if rate else 0, writer, ops))
EOF2
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}
for ((r = 1; r <= rounds; r++)); do
    for x in "$a" "$b"; do
        printf '%-40s ' "$x"
        one "$x" "$@"
    done
done
