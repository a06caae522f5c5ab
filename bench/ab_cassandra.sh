#!/usr/bin/env bash
# bench/ab_cassandra.sh: before/after on Cassandra (W4: W1 on the Cassandra
# store), two builds alternating in one sitting on one throwaway node
# (scripts/cassandra.sh, stopped by its PID when the script ends). Each run
# starts `sluice dev` on a keyspace of its own, creates one queue, runs
# bench/build/loadgen against it and prints one line: the rate, the server's
# CPU and, from GET /metrics after the run, the conditional requests (Paxos
# rounds) per acked message.
#
#   bench/ab_cassandra.sh ROUNDS P C A B [loadgen flags...]
#
# A and B are sluice binaries, each optionally followed by ":VAR=value ..."
# for its environment (SLUICE_STORE_THREADS=8, say). DUR (seconds, 10),
# WARM (3), CWARM (seconds of raw writes that warm the node first, 30) and
# CASS_HEAP (1g) set the run. The last line is the node's raw rates at P+C
# threads (tests/live/store_bench.c).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 5 ] || { sed -n 2,14p "$0" >&2; exit 2; }
rounds=$1 p=$2 c=$3 a=$4 b=$5
shift 5
[ -x bench/build/loadgen ] || make -s -C bench build/loadgen >/dev/null
run=$(mktemp -d)
trap 'scripts/cassandra.sh stop --run-dir "$run/cass" >/dev/null 2>&1 || true; rm -rf "$run"' EXIT
port=$(scripts/cassandra.sh free-port --run-dir "$run/cass")
scripts/cassandra.sh start --port "$port" --run-dir "$run/cass" --heap "${CASS_HEAP:-1g}" >"$run/cass.log" 2>&1 ||
    { tail -20 "$run/cass.log" >&2; exit 1; }
echo "Cassandra on 127.0.0.1:$port"
make -s build/tests/store_bench >/dev/null 2>&1 || true
# Cassandra's JIT warms up over its first minute of load: raw writes first,
# not recorded, so that the rounds compare the builds and not the warm-up.
if [ -x build/tests/store_bench ] && [ "${CWARM:-30}" -gt 0 ]; then
    build/tests/store_bench "$port" 32 "${CWARM:-30}" --op upsert,cas --body 100 --keyspace ab_warm >/dev/null 2>&1 || true
fi
n=0
one() { # BIN[:ENV] [loadgen flags] -> prints the run's line
    local spec=$1 envs="" dir pid url key port0 c0 c1 t0
    shift
    local bin=${spec%%:*}
    [[ $spec == *:* ]] && envs=${spec#*:}
    n=$((n + 1))
    dir=$run/s$n
    mkdir -p "$dir"
    env SLUICE_ADMIN_TOKEN=abtoken0123456789abcdef $envs "$bin" dev --port 0 --admin-port 0 --data-dir "$dir" \
        --contact-points 127.0.0.1 --cassandra-port "$port" --keyspace "ab_$n" >"$dir/log" 2>&1 &
    pid=$!
    for ((i = 0; i < 900; i++)); do grep -q "^listening on" "$dir/log" && break; sleep 0.1; done
    url=$(sed -n 's/^listening on \(http:\/\/[^ ]*\).*/\1/p' "$dir/log" | head -1)
    admin=$(sed -n 's/^admin API listening on \(http:\/\/[^ ]*\).*/\1/p' "$dir/log" | head -1)
    port0=${url##*:}
    key=$(grep "primary key" "$dir/log" | awk '{print $NF}')
    curl -sf -o /dev/null -H "Authorization: Key $key" -X POST "$url/api/v1/accounts/dev/queues" -d '{"queueName":"q"}'
    t0=$(date +%s.%N)
    c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    bench/build/loadgen --port "$port0" --account dev --queue q --header "Authorization: Key $key" \
        --producers "$p" --consumers "$c" --duration "${DUR:-10}" --warmup "${WARM:-3}" "$@" 2>/dev/null |
        tail -1 >"$dir/result.json"
    c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    curl -sf -H "Authorization: Bearer abtoken0123456789abcdef" "$admin/metrics" >"$dir/metrics" || true
    python3 - "$dir/result.json" "$t0" "$(date +%s.%N)" "$c0" "$c1" "$(getconf CLK_TCK)" "$dir/metrics" <<'EOF2'
import json, re, sys
d = json.load(open(sys.argv[1]))
secs = float(sys.argv[3]) - float(sys.argv[2])
cores = (float(sys.argv[5]) - float(sys.argv[4])) / float(sys.argv[6]) / secs
rate = d["lifecycles_per_s"]
m = open(sys.argv[7]).read()
rounds = sum(float(x) for x in re.findall(r"^sluice_engine_cas_rounds_total (\S+)", m, re.M))
acks = sum(float(x) for x in re.findall(r'^sluice_queue_acks_total\{[^}]*\} (\S+)', m, re.M))
ops = " ".join("%s %.0f/s p50/p99 %.1f/%.1f ms" % (k, v["per_s"], v["p50_ms"], v["p99_ms"])
               for k, v in d["ops"].items() if v["n"])
errs = sum(v.get("errors", 0) for v in d["ops"].values())
print("lifecycles/s %.0f  server cores %.2f  Paxos rounds/ack %.2f  errors %d  %s"
      % (rate, cores, rounds / acks if acks else 0, errs, ops))
EOF2
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}
for ((r = 1; r <= rounds; r++)); do
    for x in "$a" "$b"; do
        printf '%-44s ' "$x"
        one "$x" "$@"
    done
done
# The node's raw rates at the same concurrency (P+C threads, one request in
# flight each), through the CQL client: the yardstick of W4.
if [ -x build/tests/store_bench ]; then
    printf '%-44s ' "raw CQL, $((p + c)) threads"
    build/tests/store_bench "$port" $((p + c)) "${DUR:-10}" --warmup "${WARM:-3}" --op upsert,cas --body 100 \
        --keyspace ab_raw --json 2>/dev/null | python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
print("  ".join("%s %.0f/s p50/p99 %.1f/%.1f ms" % (k, v["per_s"], v["p50_ms"], v["p99_ms"])
                for k, v in d["ops"].items()))'
fi
