#!/usr/bin/env bash
# bench/hello_ab.sh: the HTTP layer's ceiling, before/after in one sitting.
# Alternates hello-world servers (bench/build/mhd_hello: libmicrohttpd with
# the flags Sluice used; bench/build/sl_hello: Sluice's own server), each
# answering every request with a small JSON body, under bench/build/loadgen
# --proto hello (64 keep-alive connections, 2 threads). Prints one line per
# run: requests/s, p50/p99, and the server's CPU in cores.
#
#   bench/hello_ab.sh ROUNDS [SERVER...]     (default: mhd_hello sl_hello)
#
# DUR (seconds, 6) sets the run length; THREADS (8) the servers' pools.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
shift || true
servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(bench/build/mhd_hello bench/build/sl_hello)
make -s -C bench build/loadgen build/mhd_hello build/sl_hello >/dev/null
for ((r = 1; r <= rounds; r++)); do
    for srv in "${servers[@]}"; do
        dir=$(mktemp -d)
        "$srv" "$dir/port" "${THREADS:-8}" &
        pid=$!
        for ((i = 0; i < 100; i++)); do [ -s "$dir/port" ] && break; sleep 0.05; done
        c0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        t0=$(date +%s.%N)
        bench/build/loadgen --proto hello --port "$(cat "$dir/port")" --path / --conns 64 --threads 2 \
            --duration "${DUR:-6}" 2>/dev/null | tail -1 >"$dir/result.json"
        c1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
        kill "$pid"
        wait "$pid" 2>/dev/null || true
        python3 - "$srv" "$dir/result.json" "$t0" "$(date +%s.%N)" "$c0" "$c1" "$(getconf CLK_TCK)" <<'EOF2'
import json, sys
d = json.load(open(sys.argv[2]))["ops"]["hello"]
cores = (float(sys.argv[6]) - float(sys.argv[5])) / float(sys.argv[7]) / (float(sys.argv[4]) - float(sys.argv[3]))
print("%-28s requests/s %.0f  p50/p99 %.2f/%.2f ms  errors %d  server cores %.2f"
      % (sys.argv[1], d["per_s"], d["p50_ms"], d["p99_ms"], d["errors"], cores))
EOF2
        rm -rf "$dir"
    done
done
