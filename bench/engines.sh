#!/usr/bin/env bash
# bench/engines.sh: the embedded store's writer work a message on SQLite (as
# store_sqlite.c lays it out), LMDB and RocksDB, to weigh an engine switch
# (issue 18). Runs bench/build/engine_cost (see its head) for each engine and
# shape, engines alternated in each round, each run on a fresh directory
# under DIR (default: a temporary one, on the disk the data dirs use), and
# prints one line a run, then a Markdown table of the medians.
#
#   bench/engines.sh [ROUNDS]        (3; N=100000 lifecycles a run)
#
# Shapes: W1 (16 lifecycles a commit, a request a message, as under W1 64+64)
# and W2 (48 a commit, 10 messages a request, as under W2 16+16).
# ENGINES overrides the list (default: sqlite sqlite-kv sqlite-split lmdb
# rocksdb rocksdb-range); ENGINE_NOSYNC=1 runs them with commits not synced,
# to tell each engine's own work from the disk's. Then, for several writers
# (one per shard of queues, each its own file and thread), it runs WRITERS
# (default "1 2 4") copies of sqlite and of lmdb at once, each on a directory
# of its own, and prints the sum of their rates.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
n=${N:-100000}
engines=(${ENGINES:-sqlite sqlite-kv sqlite-split lmdb rocksdb rocksdb-range})
if [ ! -e /usr/include/lmdb.h ] || [ ! -e /usr/include/rocksdb/c.h ]; then
    echo "engines.sh: installing liblmdb-dev and librocksdb-dev" >&2
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq liblmdb-dev librocksdb-dev >/dev/null
fi
make -s -C bench build/engine_cost build/fsync_rate >/dev/null
base=${DIR:-$(mktemp -d)}
out=$(mktemp)
echo "fsync ceiling: $(bench/build/fsync_rate "$base" 3)"
shapes=("W1 16 1" "W2 48 10")
for ((r = 1; r <= rounds; r++)); do
    for shape in "${shapes[@]}"; do
        read -r label per_commit per_req <<<"$shape"
        for e in "${engines[@]}"; do
            d=$(mktemp -d -p "$base")
            line=$(bench/build/engine_cost "$e" "$d" "$n" "$per_commit" "$per_req")
            rm -rf "$d"
            echo "$label $line" | tee -a "$out"
        done
    done
done
python3 - "$out" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    label, js = line.split(" ", 1)
    d = json.loads(js)
    runs.setdefault((label, d["engine"]), []).append(d)
print()
print("| shape | engine | lifecycles/s | CPU µs a lifecycle | bytes written a lifecycle | commits/s |")
print("|---|---|---|---|---|---|")
for (label, eng), ds in runs.items():
    med = lambda k: statistics.median(x[k] for x in ds)
    print(f"| {label} | {eng} | {med('lifecycles_per_s'):,.0f} | {med('cpu_us_per_lifecycle'):.1f} | "
          f"{med('bytes_written_per_lifecycle'):,.0f} | {med('commits_per_s'):,.0f} |")
PY
rm -f "$out"
echo
echo "| shape | engine | writers at once | lifecycles/s, summed | each |"
echo "|---|---|---|---|---|"
for shape in "${shapes[@]}"; do
    read -r label per_commit per_req <<<"$shape"
    for e in sqlite lmdb; do
        for k in ${WRITERS:-1 2 4}; do
            runs=$(mktemp -d -p "$base")
            for ((i = 1; i <= k; i++)); do
                bench/build/engine_cost "$e" "$(mktemp -d -p "$runs")" "$n" "$per_commit" "$per_req" >"$runs/out.$i" &
            done
            wait
            cat "$runs"/out.* | python3 -c '
import json, sys
rates = [json.loads(line)["lifecycles_per_s"] for line in sys.stdin]
each = " / ".join(f"{r:,.0f}" for r in rates)
print(f"| {sys.argv[1]} | {sys.argv[2]} | {len(rates)} | {sum(rates):,.0f} | {each} |")
' "$label" "$e"
            rm -rf "$runs"
        done
    done
done
[ -n "${DIR:-}" ] || rm -rf "$base"
