#!/usr/bin/env bash
# bench/paxos_rounds.sh PORT: Paxos rounds per message on Cassandra (issue 18, W4), from GET /metrics:
# W1 (64+64, single puts, receives of up to 10, each message acked) and W2 (batches of 10) against a
# `sluice dev` on the Cassandra node at 127.0.0.1:PORT (scripts/cassandra.sh start --port PORT), 10 s each.
# sluice_engine_cas_rounds_total counts the conditional requests the engine sent (a combined batch once);
# sluice_store_statements_total, every statement by table and kind: the mix a message costs.
set -euo pipefail
cd "$(dirname "$0")/.."
CPORT=${1:?usage: bench/paxos_rounds.sh CASSANDRA_PORT}
[ -x bench/build/loadgen ] || make -s -C bench build/loadgen >/dev/null
dir=$(mktemp -d)
T=w4token0123456789abcdef
SLUICE_ADMIN_TOKEN=$T build/sluice dev --port 0 --admin-port 0 --data-dir "$dir" --contact-points 127.0.0.1 \
  --cassandra-port "$CPORT" --keyspace "w4r_$RANDOM" >"$dir/log" 2>&1 &
pid=$!
for i in $(seq 300); do grep -q "primary key" "$dir/log" && break; sleep 0.2; done
url=$(grep -o "http://127.0.0.1:[0-9]*" "$dir/log" | head -1); port=${url##*:}
admin=$(grep -o "admin API listening on http://127.0.0.1:[0-9]*" "$dir/log" | grep -o "[0-9]*$")
key=$(grep "primary key" "$dir/log" | awk '{print $NF}')
m() { curl -s -H "Authorization: Bearer $T" 127.0.0.1:$admin/metrics | awk -v k="$1" '$1==k {print $2}'; }
# Every table's statements by kind (sluice_store_statements_total), as "table/kind=n,...".
st() { curl -s -H "Authorization: Bearer $T" 127.0.0.1:$admin/metrics |
  sed -n 's/^sluice_store_statements_total{table="\([a-z_]*\)",kind="\([a-z]*\)"} \([0-9]*\)$/\1\/\2=\3/p' | paste -sd, -; }
for w in "w1 --recv-max 10 --ack-each" "w2 --batch 10 --recv-max 10"; do
  set -- $w; name=$1; shift
  curl -sf -o /dev/null -H "Authorization: Key $key" -X POST "$url/api/v1/accounts/dev/queues" -d "{\"queueName\":\"$name\"}"
  r0=$(m sluice_engine_cas_rounds_total); a0=$(m 'sluice_engine_cas_total{outcome="applied"}'); st0=$(st)
  res=$(bench/build/loadgen --port "$port" --account dev --queue "$name" --header "Authorization: Key $key" \
    --producers 64 --consumers 64 --duration 10 --warmup 2 "$@" 2>/dev/null | tail -1)
  sleep 1
  r1=$(m sluice_engine_cas_rounds_total); a1=$(m 'sluice_engine_cas_total{outcome="applied"}'); st1=$(st)
  acks=$(curl -s -H "Authorization: Bearer $T" 127.0.0.1:$admin/metrics | awk -v q="$name" '$1 ~ "^sluice_queue_acks_total" && $1 ~ "queue=\""q"\"" {print $2}')
  puts=$(curl -s -H "Authorization: Bearer $T" 127.0.0.1:$admin/metrics | awk -v q="$name" '$1 ~ "^sluice_queue_puts_total" && $1 ~ "queue=\""q"\"" {print $2}')
  python3 - "$name" "$res" "$r0" "$r1" "$a0" "$a1" "$acks" "$puts" "$st0" "$st1" <<'P'
import json, sys
name, res = sys.argv[1], json.loads(sys.argv[2])
r0, r1, a0, a1, acks, puts = map(float, sys.argv[3:9])
def parse(s):
    return {k: int(v) for k, v in (x.split("=") for x in s.split(",") if x)}
st0, st1 = parse(sys.argv[9]), parse(sys.argv[10])
rounds, cas = r1 - r0, a1 - a0
print(f"{name}: {res['lifecycles_per_s']:.0f} lifecycles/s (msgs), {acks:.0f} acked, {puts:.0f} put; "
      f"CAS applied {cas:.0f} in {rounds:.0f} conditional requests (Paxos rounds): "
      f"{rounds/acks:.3f} rounds per message acked, {cas/acks:.2f} CAS per message, "
      f"{cas/rounds:.2f} CAS per round")
d = {k: st1[k] - st0.get(k, 0) for k in st1 if st1[k] - st0.get(k, 0) > 0}
print(f"  statements per message acked (sluice_store_statements_total, table/kind): " +
      ", ".join(f"{k} {v/acks:.3f}" for k, v in sorted(d.items(), key=lambda x: -x[1])))
P
done
kill $pid; wait $pid 2>/dev/null || true; rm -rf "$dir"
