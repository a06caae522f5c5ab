#!/usr/bin/env bash
# bench/expiry.sh: what a mass expiry costs the clients of other queues on the
# embedded store. N messages are put (batches of 100) into a queue whose
# retention is 60 s, the shortest allowed; meanwhile W1 16+16 with puts held
# to RATE/s runs on another queue in WINDOW-second windows, across the moment
# the N messages expire and the store purges their rows. Per window: put,
# receive and ack p99 and max (ms), the SQLite writer thread's CPU (cores),
# and the message rows left in the file (the working queue's acked rows stay
# until their buckets are deleted, 2 minutes after they are sealed).
#
#   bench/expiry.sh [N] [SLUICE]     (200000, build/sluice; about 2 minutes)
#   RATE=4000 WINDOW=5 WINDOWS=22 bench/expiry.sh 1000000
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200000}
SLUICE=${2:-build/sluice}
RATE=${RATE:-4000} WINDOW=${WINDOW:-5} WINDOWS=${WINDOWS:-22}
make -s -C bench build/loadgen
[ -x "$SLUICE" ] || make -s build/sluice
dir=$(mktemp -d /tmp/sluice-expiry.XXXXXX)
"$SLUICE" dev --port 0 --admin-port 0 --data-dir "$dir" >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for ((i = 0; i < 100; i++)); do grep -q "primary key" "$dir/log" && break; sleep 0.1; done
port=$(sed -n 's/^listening on http:\/\/[^:]*:\([0-9]*\).*/\1/p' "$dir/log" | head -1)
key=$(sed -n 's/^ *primary key: *\([A-Za-z0-9_-]*\).*/\1/p' "$dir/log" | head -1)
H="Authorization: Key $key"
mkq() { curl -sf -o /dev/null -H "$H" -X POST "http://127.0.0.1:$port/api/v1/accounts/dev/queues" -d "$1"; }
mkq '{"queueName":"expiring","retentionSeconds":60}'
mkq '{"queueName":"work"}'
wt=
for t in /proc/$pid/task/*; do [ "$(cat "$t/comm")" = sl-writer ] && wt=${t##*/}; done
[ -n "$wt" ] || { echo "no sl-writer thread" >&2; exit 1; }
wcpu() { awk '{print $14 + $15}' "/proc/$pid/task/$wt/stat"; }
rows() { python3 -c 'import sqlite3, sys; print(sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True).execute("select count(*) from messages").fetchone()[0])' "$dir/sluice.db"; }
t0=$(date +%s.%N)
bench/build/loadgen --port "$port" --account dev --queue expiring --header "$H" --producers 4 --consumers 0 \
    --batch 100 --put-count "$N" --duration 300 >/dev/null
echo "$N messages put in $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s, retention 60 s: they expire about 60 s after t=0"
echo "W1 16+16 on another queue, puts held to $RATE/s, windows of $WINDOW s (t: the window's end)"
for ((w = 0; w < WINDOWS; w++)); do
    c0=$(wcpu)
    j=$(bench/build/loadgen --port "$port" --account dev --queue work --header "$H" --producers 16 --consumers 16 \
        --rate "$RATE" --backoff-us 1000 --duration "$WINDOW")
    c1=$(wcpu)
    python3 - "$j" "$(python3 -c "print(round($(date +%s.%N) - $t0))")" "$(((c1 - c0)))" "$WINDOW" "$(rows)" <<'PY'
import json, sys
r = json.loads(sys.argv[1]); o = r["ops"]
f = lambda k: f"{k} {o[k]['p99_ms']:5.2f} / {o[k]['max_ms']:5.2f}"
print(f"t={sys.argv[2]:>4} s  lifecycles/s {r['lifecycles_per_s']:5.0f} | p99 / max ms: {f('put')} | {f('receive')} | "
      f"{f('ack')} | writer {int(sys.argv[3]) / 100 / float(sys.argv[4]):.2f} cores | rows {sys.argv[5]}")
PY
done
