#!/usr/bin/env python3
"""Turns one run of bench/run.sh into bench/results/: latest.md (the table)
and a PNG chart per workload (w1.png, w2.png, w3.png, w4.png, ceilings.png).

    report.py RAW META OUTDIR

RAW: JSON lines {"system", "workload", "level", "result"} written by run.sh;
META: tab-separated key/value lines (machine, versions, times)."""
import json
import math
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SYSTEMS = ["sluice", "redis", "rabbit", "beanstalk", "nats", "azurite"]
NAMES = {
    "sluice": "Sluice (embedded SQLite)",
    "sluice-longpoll": "Sluice, long-poll receive",
    "redis": "Redis 7 (AOF always)",
    "rabbit": "RabbitMQ",
    "beanstalk": "beanstalkd (-f0)",
    "nats": "NATS JetStream",
    "azurite": "Azurite Queue",
    "sluice-cassandra": "Sluice (Cassandra store)",
    "cassandra": "Apache Cassandra (one node)",
}
W4_TARGET = 0.25  # W4: lifecycles/s >= 0.25 x the raw INSERT/s at the same concurrency
DURABLE = {
    "sluice": "yes: fsync (group commit) before the answer",
    "redis": "yes: appendfsync always (AOF fsync before replies)",
    "rabbit": "yes: durable queue, persistent messages, publisher confirms",
    "beanstalk": "yes: binlog, -f0 (fsync every write)",
    "nats": "**no**: nats-server 2.9 does not fsync per message",
    "azurite": "**no**: metadata in LokiJS, saved every 5 s",
}
CLIENTS = {
    "sluice": "bench/loadgen (C, epoll, keep-alive HTTP/1.1)",
    "redis": "bench/peerbench, hiredis (C); LPUSH, BLMOVE/LMOVE into a processing list, LREM",
    "rabbit": "bench/peerbench, librabbitmq (C); confirms, basic.consume, manual ack, prefetch = batch",
    "beanstalk": "bench/peerbench, own C client over the text protocol; put, reserve-with-timeout, delete",
    "nats": "bench/peerbench, libnats (C); js_Publish (waits for PubAck), pull Fetch, AckSync",
    "azurite": "bench/loadgen (C), the Azure Queue REST API with an account SAS",
}


def load(raw_path, meta_path):
    rows = [json.loads(l) for l in open(raw_path) if l.strip()]
    meta = {}
    for l in open(meta_path):
        if "\t" in l:
            k, v = l.rstrip("\n").split("\t", 1)
            meta[k] = v
    return rows, meta


def find(rows, system, workload, level=None):
    out = [r for r in rows if r["system"] == system and r["workload"] == workload
           and (level is None or str(r.get("level")) == str(level))]
    return out


def one(rows, system, workload, level=None):
    f = find(rows, system, workload, level)
    return f[-1]["result"] if f else None


def op(r, name, key):
    if not r:
        return None
    o = r.get("ops", {}).get(name)
    return o.get(key) if o else None


def fmt(v, digits=0):
    if v is None:
        return "n/a"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def errs(r):
    return sum(v.get("errors", 0) for v in r.get("ops", {}).values())


def lat(r, name):
    p50, p99 = op(r, name, "p50_ms"), op(r, name, "p99_ms")
    if p50 is None:
        return "n/a"
    return f"{p50:.2f} / {p99:.2f}"


def main():
    raw, meta_path, out = sys.argv[1:4]
    rows, meta = load(raw, meta_path)
    os.makedirs(out, exist_ok=True)
    L = []
    w = L.append
    quick = meta.get("quick") == "1"
    w("# Sluice benchmarks: latest run")
    w("")
    if quick:
        w("**A `--quick` smoke run: short runs and a small W3. Not for comparison; take a full run.**")
        w("")
    w(f"Run {meta.get('started')} to {meta.get('finished')} (UTC) by `bench/run.sh{' --quick' if quick else ''}`; "
      f"load average before {meta.get('load_before')}, after {meta.get('load_after')}. "
      "Every figure below comes from this one run on this one machine; all load on 127.0.0.1. "
      f"Quiet machine before measuring: {meta.get('quiet', '?')}.")
    w("")
    w("## Machine")
    w("")
    w("| | |")
    w("|---|---|")
    for k, label in [("nproc", "cores (nproc)"), ("cpu", "CPU"), ("mem", "memory"), ("kernel", "kernel"),
                     ("os", "OS"), ("disk", "disk of the data dirs")]:
        w(f"| {label} | {meta.get(k, '?')} |")
    w("")
    w("## Systems, versions, clients, durability")
    w("")
    w("| system | version | client | durable per message |")
    w("|---|---|---|---|")
    vers = {"sluice": meta.get("sluice_version", "?") + ", " + meta.get("mhd_version", "") + ", " +
            meta.get("sqlite_version", ""),
            "redis": meta.get("redis_version"), "rabbit": meta.get("rabbit_version"),
            "beanstalk": meta.get("beanstalk_version"), "nats": meta.get("nats_version"),
            "azurite": meta.get("azurite_version")}
    for s in SYSTEMS:
        w(f"| {NAMES[s]} | {vers.get(s)} | {CLIENTS[s]} | {DURABLE[s]} |")
    w(f"| wrk | {meta.get('wrk_version')} | `wrk -t2 -c64 --latency` | |")
    if meta.get("cassandra_version"):
        w(f"| {NAMES['cassandra']} (W4) | {meta['cassandra_version']} | Sluice's CQL client (src/cql): Sluice itself, "
          f"and tests/live/store_bench.c through the same store layer for the raw rates | acknowledged at "
          f"LOCAL_QUORUM (replication factor 1), **not** fsynced per write: commit log synced every 10 s "
          f"(Cassandra's default) |")
    w("")

    # --- ceilings
    fs = one(rows, "disk", "fsync")
    hello_lg = [r["result"] for r in find(rows, "hello", "loadgen")]
    hello_wrk = [r["result"] for r in find(rows, "hello", "wrk")]
    lg_rates = [op(r, "hello", "per_s") for r in hello_lg]
    wrk_rates = [op(r, "hello", "per_s") for r in hello_wrk]
    # Each generator is judged by its median round, so that one odd round
    # (wrk once reported 2.2 x its other rounds) sets neither the ratio nor
    # the ceiling; the hello-world rate is the better generator's median.
    lg_med = statistics.median(lg_rates) if lg_rates else None
    wrk_med = statistics.median(wrk_rates) if wrk_rates else None
    hello_best = max(v for v in (lg_med, wrk_med) if v) if (lg_med or wrk_med) else None
    w("## Ceilings of this machine")
    w("")
    w("| ceiling | rate | p50 / p99 ms |")
    w("|---|---|---|")
    if fs:
        w(f"| disk: append 100 B + fdatasync, one thread, {fs['seconds']:.0f} s | {fmt(fs['per_s'])}/s | "
          f"{fs['p50_ms']:.3f} / {fs['p99_ms']:.3f} |")
    for i, (a, b) in enumerate(zip(hello_lg, hello_wrk)):
        w(f"| HTTP hello-world (Sluice's HTTP server, 8 workers), round {i + 1}: **bench/loadgen** | "
          f"{fmt(op(a, 'hello', 'per_s'))} req/s | {lat(a, 'hello')} |")
        w(f"| HTTP hello-world, round {i + 1}: **wrk** | {fmt(op(b, 'hello', 'per_s'))} req/s | {lat(b, 'hello')} |")
    hl, hw = one(rows, "sluice-health", "loadgen"), one(rows, "sluice-health", "wrk")
    if hl and hw:
        w(f"| Sluice `GET /health` (pings the store): **bench/loadgen** | {fmt(op(hl, 'hello', 'per_s'))} req/s | "
          f"{lat(hl, 'hello')} |")
        w(f"| Sluice `GET /health`: **wrk** | {fmt(op(hw, 'hello', 'per_s'))} req/s | {lat(hw, 'hello')} |")
    w("")
    if lg_rates and wrk_rates:
        ratio = lg_med / wrk_med
        w(f"loadgen / wrk on the hello-world endpoint, requests/s, median round against median round "
          f"({len(lg_rates)} alternating rounds each: {fmt(lg_med)} / {fmt(wrk_med)}): **{ratio:.2f}** "
          f"(both 64 connections, 2 threads, keep-alive, no pipelining; loadgen also records every latency "
          f"in a histogram).")

        def cpu_per_k(rs):
            v = [r["gen_cpu_ms"] / (op(r, "hello", "n") / 1000.0) for r in rs
                 if r.get("gen_cpu_ms") and op(r, "hello", "n")]
            return sum(v) / len(v) if v else None
        cl, cw = cpu_per_k(hello_lg), cpu_per_k(hello_wrk)
        if cl and cw:
            w(f"CPU time each generator spent (user + system, perf stat task-clock) per 1,000 requests: "
              f"loadgen **{cl:.1f} ms**, wrk **{cw:.1f} ms** (loadgen/wrk {cl / cw:.2f}; lower is cheaper). "
              f"Both share the 2 cores with the server, so the cheaper generator leaves the server more CPU.")
        w("")

    # --- W1
    w("## W1 lifecycle: put, receive (1), ack, 100-byte messages")
    w("")
    w("P producers and C consumers, each a closed loop on its own connection. lifecycles/s = messages acked per "
      "second in the measured window; puts/s can exceed it (the backlog grows). Latencies in ms, p50 / p99. "
      "Sluice consumers receive with `waitSeconds: 0` (as a client polling); the peers' receives block up to "
      "1 s (BLMOVE, reserve-with-timeout, Fetch, a pushed delivery), so their receive latency includes any wait.")
    w("")
    w("| system | P+C | lifecycles/s | puts/s | put | receive | ack | empty receives | errors |")
    w("|---|---|---|---|---|---|---|---|---|")
    w1_rates = {}
    repeated = False
    for s in SYSTEMS + ["sluice-longpoll"]:
        by_level = {}
        for r in find(rows, s, "w1"):
            by_level.setdefault(str(r["level"]), []).append(r["result"])
        for lvl, results in by_level.items():
            # A level run several times is reported by its median run (by lifecycles/s), with the range.
            results.sort(key=lambda x: x["lifecycles_per_s"])
            res = results[len(results) // 2]
            w1_rates.setdefault(s, {})[lvl] = res["lifecycles_per_s"]
            spread = ""
            if len(results) > 1:
                repeated = True
                spread = (f" (median of {len(results)}: {fmt(results[0]['lifecycles_per_s'])} to "
                          f"{fmt(results[-1]['lifecycles_per_s'])})")
            w(f"| {NAMES[s]} | {lvl}+{lvl} | **{fmt(res['lifecycles_per_s'])}**{spread} | {fmt(res['put_msgs_per_s'])} | "
              f"{lat(res, 'put')} | {lat(res, 'receive')} | {lat(res, 'ack')} | {fmt(res.get('empty_receives'))} | "
              f"{fmt(errs(res))} |")
    half = one(rows, "sluice", "w1-half")
    if half:
        w(f"| Sluice at half the peak (puts paced at {fmt(half['rate_target'], 1)}/s; an empty receive polls again after 1 ms) | 64+64 | "
          f"{fmt(half['lifecycles_per_s'])} | {fmt(half['put_msgs_per_s'])} | {lat(half, 'put')} | "
          f"{lat(half, 'receive')} | {lat(half, 'ack')} | {fmt(half.get('empty_receives'))} | {fmt(errs(half))} |")
    w("")
    if repeated:
        w("64+64 runs three times per system (a fresh queue each time) and the table shows the median run: "
          "in a closed loop, how the server's capacity splits between producers (one request per message) "
          "and consumers (two) varies from run to run, and lifecycles/s with it.")
        w("")
    w("Azurite's consumers poll like Sluice's (no wait, no backoff); its single node.js thread then spends "
      "itself on empty receives, which starves the producers at 16+16 and 64+64. "
      "RabbitMQ's ack is basic.ack, which the broker does not answer: its latency is the time to send it. "
      "errors: requests answered with anything but success (for Sluice, mostly 429 from its load shedding), "
      "not counted in the rates or latencies.")
    w("")

    # --- W1, 1 KiB messages
    w1k = {}
    for s in SYSTEMS:
        results = sorted((r["result"] for r in find(rows, s, "w1-1k")), key=lambda x: x["lifecycles_per_s"])
        if results:
            w1k[s] = results
    if w1k:
        w("## W1 with 1 KiB messages, 64+64")
        w("")
        w("The same lifecycle with message bodies of 1,024 bytes (Sluice: `loadgen --size 1024`; the peers: "
          "`peerbench` built with `-DMSG_LEN=1024`), each system run as often as its 100-byte 64+64, the median "
          "run shown. Azurite is left out.")
        w("")
        w("| system | lifecycles/s | puts/s | put | receive | ack | errors | / Redis |")
        w("|---|---|---|---|---|---|---|---|")
        red = w1k.get("redis")
        red_rate = red[len(red) // 2]["lifecycles_per_s"] if red else None
        for s, results in w1k.items():
            res = results[len(results) // 2]
            spread = ""
            if len(results) > 1:
                spread = (f" (median of {len(results)}: {fmt(results[0]['lifecycles_per_s'])} to "
                          f"{fmt(results[-1]['lifecycles_per_s'])})")
            ratio = f"{res['lifecycles_per_s'] / red_rate:.2f} x" if red_rate else ""
            w(f"| {NAMES[s]} | **{fmt(res['lifecycles_per_s'])}**{spread} | {fmt(res['put_msgs_per_s'])} | "
              f"{lat(res, 'put')} | {lat(res, 'receive')} | {lat(res, 'ack')} | {fmt(errs(res))} | {ratio} |")
        w("")

    # --- W2
    w("## W2 batched lifecycle: put 10, receive 10, ack 10 per request")
    w("")
    w("| system | P+C | messages/s (acked) | puts msgs/s | put (10) | receive (10) | ack (10) | errors |")
    w("|---|---|---|---|---|---|---|---|")
    w2_rates = {}
    for s in SYSTEMS:
        res = one(rows, s, "w2")
        if not res:
            if s == "azurite":
                w(f"| {NAMES[s]} | | not supported: the Azure Queue API has no batch put or batch delete | | | | | |")
            continue
        w2_rates[s] = res["lifecycles_per_s"]
        w(f"| {NAMES[s]} | {res['producers']}+{res['consumers']} | **{fmt(res['lifecycles_per_s'])}** | "
          f"{fmt(res['put_msgs_per_s'])} | {lat(res, 'put')} | {lat(res, 'receive')} | {lat(res, 'ack')} | "
          f"{fmt(errs(res))} |")
    w("")
    w("Batches: Sluice uses its batch put, receive maxMessages 10 and batch ack routes; Redis one LPUSH of 10 and "
      "pipelined LMOVE/LREM; beanstalkd pipelined commands; RabbitMQ 10 publishes then their confirms, prefetch 10, "
      "ack multiple; NATS 10 async publishes then their acks, Fetch 10.")
    w("")

    # --- W3
    w("## W3 drain: a full queue, consumers only (receive 10 + ack 10)")
    w("")
    w("| system | messages | consumers | drain messages/s | drain time s | receive | ack | fill msgs/s |")
    w("|---|---|---|---|---|---|---|---|")
    w3_rates = {}
    for s in SYSTEMS:
        res = one(rows, s, "w3")
        fill = one(rows, s, "w3-fill")
        if not res:
            continue
        w3_rates[s] = res["lifecycles_per_s"]
        done = res["messages_acked"]
        lvl = find(rows, s, "w3")[-1]["level"]
        note = "" if str(done) == str(lvl) or done >= int(lvl) else f" (only {fmt(done)} acked before the time limit)"
        w(f"| {NAMES[s]} | {fmt(int(lvl))}{note} | {res['consumers']} | **{fmt(res['lifecycles_per_s'])}** | "
          f"{res['seconds']:.1f} | {lat(res, 'receive')} | {lat(res, 'ack')} | "
          f"{fmt(fill['put_msgs_per_s']) if fill else 'n/a'} |")
    w("")
    w("Azurite's W3 is small on purpose: its receive scans the whole queue, so 100,000 queued messages would "
      "take hours.")
    w("")

    # --- RSS
    w("## Server memory during W1 (1+1, 16+16, 64+64)")
    w("")
    w("| system | peak VmRSS sampled every 0.2 s | VmHWM after W1 |")
    w("|---|---|---|")
    rss = {}
    for s in SYSTEMS:
        r = one(rows, s, "rss")
        if r:
            rss[s] = r
            w(f"| {NAMES[s]} | {r['vmrss_peak_kib'] / 1024:.1f} MiB | {r['vmhwm_kib'] / 1024:.1f} MiB |")
    for s in ["sluice-cassandra", "cassandra"]:
        r = one(rows, s, "rss")
        if r:
            rss[s] = r
            w(f"| {NAMES[s]}, during W4 (its W1 and raw CQL runs) | {r['vmrss_peak_kib'] / 1024:.1f} MiB | "
              f"{r['vmhwm_kib'] / 1024:.1f} MiB |")
    w("")
    w("RabbitMQ: the beam.smp process only (not epmd). Azurite: the node process. Cassandra: the JVM "
      f"(heap {meta.get('cassandra_heap', '?')}, so its RSS says more about the heap setting than about the load).")
    w("")

    # --- ratios and targets
    s64 = w1_rates.get("sluice", {}).get("64")
    s_best = max(w1_rates.get("sluice", {}).values() or [0])
    durable_peers = ["redis", "rabbit", "beanstalk"]
    best_peer, best_peer_rate = None, 0
    for p in durable_peers:
        v = w1_rates.get(p, {}).get("64")
        if v and v > best_peer_rate:
            best_peer, best_peer_rate = p, v
    w("## Sluice against the ceilings")
    w("")
    if s64 is not None and hello_best:
        w(f"- W1 64+64: {fmt(s64)} lifecycles/s = {3 * s64:,.0f} HTTP requests/s = **{3 * s64 / hello_best:.3f}** "
          f"of the hello-world rate ({fmt(hello_best)} req/s, the better median of loadgen and wrk). The target, half of "
          f"(hello-world / 3), is a ratio of 0.5.")
    if s64 is not None and fs:
        w(f"- W1 64+64: {fmt(s64)} lifecycles/s = **{s64 / fs['per_s']:.3f}** of the disk's single-thread "
          f"fdatasync rate ({fmt(fs['per_s'])}/s); a lifecycle is 3 durable operations (put, lease, ack), "
          f"{3 * s64 / fs['per_s']:.3f} x that rate (group commit lets it exceed 1).")
    if w2_rates.get("sluice") and fs:
        w(f"- W2: {fmt(w2_rates['sluice'])} messages/s = {w2_rates['sluice'] / fs['per_s']:.3f} x the fdatasync rate.")
    w("")
    w("## Targets (goals, not pass/fail)")
    w("")
    w("| target | figure | met? |")
    w("|---|---|---|")
    if s64 is not None:
        w(f"| W1 64+64 >= best durable peer at 64+64 ({NAMES.get(best_peer, '?')}: {fmt(best_peer_rate)}) | "
          f"{fmt(s64)} | {'yes' if s64 >= best_peer_rate else 'no'} |")
        if hello_best:
            goal = hello_best / 3 / 2
            w(f"| W1 64+64 >= half of (hello-world / 3) = {fmt(goal)} | {fmt(s64)} | {'yes' if s64 >= goal else 'no'} |")
    if w2_rates.get("sluice") and s_best:
        w(f"| W2 >= 5 x W1 in messages/s (best W1: {fmt(s_best)}) | {fmt(w2_rates['sluice'])} = "
          f"{w2_rates['sluice'] / s_best:.1f} x | {'yes' if w2_rates['sluice'] >= 5 * s_best else 'no'} |")
    if w2_rates.get("sluice") and w2_rates.get("redis"):
        w(f"| W2 >= Redis's batched W2 ({fmt(w2_rates['redis'])}) | {fmt(w2_rates['sluice'])} = "
          f"{w2_rates['sluice'] / w2_rates['redis']:.2f} x | {'yes' if w2_rates['sluice'] >= w2_rates['redis'] else 'no'} |")
    if half:
        p99 = op(half, "receive", "p99_ms")
        w(f"| p99 of receive at half the peak load < 2 ms | {fmt(p99, 2)} ms | "
          f"{'yes' if p99 is not None and p99 < 2 else 'no'} |")
    if "sluice" in rss:
        m = max(rss["sluice"]["vmrss_peak_kib"], rss["sluice"]["vmhwm_kib"]) / 1024
        w(f"| Sluice RSS under W1 < 64 MiB | {m:.1f} MiB (VmHWM) | {'yes' if m < 64 else 'no'} |")
    w4 = w4_levels(rows)
    for lvl, sc, raw in w4:
        ins = op(raw, "insert", "per_s")
        if sc and ins:
            ratio = sc["lifecycles_per_s"] / ins
            w(f"| W4 {lvl}+{lvl}: lifecycles/s >= {W4_TARGET} x raw CQL INSERT/s at {2 * int(lvl)} in flight "
              f"({fmt(ins)}/s) | {fmt(sc['lifecycles_per_s'])} = {ratio:.3f} x | "
              f"{'yes' if ratio >= W4_TARGET else 'no'} |")
    if not any(sc and op(raw, "insert", "per_s") for _, sc, raw in w4):
        w(f"| W4 lifecycles/s >= {W4_TARGET} x raw CQL INSERT/s | not measured in this run (see W4) | n/a |")
    w("")
    w4_section(w, rows, meta, w4)
    w("## Charts")
    w("")
    for c in ["w1", "w2", "w3", "w4", "ceilings"]:
        if c != "w4" or any(sc for _, sc, _ in w4):
            w(f"![{c}]({c}.png)")
    w("")
    w("The profile of Sluice under W1 64+64 is in [profile.md](profile.md) (analysis) and "
      "[profile-top.txt](profile-top.txt) (perf output of this run).")
    open(os.path.join(out, "latest.md"), "w").write("\n".join(L) + "\n")

    charts(rows, w1_rates, w2_rates, w3_rates, lg_rates, wrk_rates, fs, out, quick)
    if any(sc for _, sc, _ in w4):
        w4_chart(os.path.join(out, "w4.png"), w4, quick)


def w4_levels(rows):
    """[(level, Sluice-on-Cassandra W1 result or None, raw CQL result or None)], by level."""
    lv = {str(r["level"]) for r in find(rows, "sluice-cassandra", "w1") + find(rows, "cql", "w4-raw")}
    return [(lvl, one(rows, "sluice-cassandra", "w1", lvl), one(rows, "cql", "w4-raw", lvl))
            for lvl in sorted(lv, key=int)]


def w4_section(w, rows, meta, w4):
    w("## W4 Sluice on Cassandra: W1 beside the raw rates of its CQL client")
    w("")
    if not w4:
        w("**Not measured in this run** (`--no-cassandra`, or the Cassandra node did not start: see the run's "
          "output). No figure here is estimated.")
        w("")
        return
    w("W1 (put, receive 1, ack; 100-byte messages; consumers with `waitSeconds: 0`) against `sluice dev` on a "
      "one-node Apache Cassandra on the same machine (version and settings under Systems), keyspace with "
      "replication factor 1, reads and writes at LOCAL_QUORUM, compare-and-set at LOCAL_SERIAL (Sluice's "
      "defaults). Beside each level, the raw rates of the same CQL client (src/cql, 2 connections to the node, "
      "through the store layer: tests/live/store_bench.c) at the same concurrency: P+P loadgen connections keep "
      "2P requests in flight, so the raw rates run 2P threads with one request in flight each. INSERT is a "
      "single-row `INSERT ... USING TTL` of a 100-byte blob; LWT UPDATE is `UPDATE ... IF` (Paxos), each thread "
      "on its own row (no contention). The node runs first the raw warm-up (not recorded), then per level Sluice's "
      "W1, then the raw INSERTs, then the raw LWT UPDATEs.")
    w("")
    w("| P+C | lifecycles/s | puts/s | put | receive | ack | empty receives | errors | cores used: Sluice / "
      "Cassandra |")
    w("|---|---|---|---|---|---|---|---|---|")
    for lvl, sc, _ in w4:
        if not sc:
            w(f"| {lvl}+{lvl} | no result | | | | | | | |")
            continue
        cores = sc.get("server_cores")
        cores = f"{cores['sluice']:.2f} / {cores['cassandra']:.2f}" if cores else "n/a"
        e = one(rows, "sluice-cassandra", "w1-errors", lvl)
        codes = ""
        if e and e.get("answers"):
            codes = " (first: " + ", ".join(e["answers"]) + ")"
        w(f"| {lvl}+{lvl} | **{fmt(sc['lifecycles_per_s'])}** | {fmt(sc['put_msgs_per_s'])} | {lat(sc, 'put')} | "
          f"{lat(sc, 'receive')} | {lat(sc, 'ack')} | {fmt(sc.get('empty_receives'))} | {fmt(errs(sc))}{codes} | "
          f"{cores} |")
    w("")
    w("| raw CQL in flight | INSERT/s | INSERT p50 / p99 ms | LWT UPDATE/s | LWT p50 / p99 ms | errors "
      "(INSERT / LWT) | Sluice lifecycles / INSERT | lifecycles / LWT UPDATE |")
    w("|---|---|---|---|---|---|---|---|")
    for lvl, sc, raw in w4:
        if not raw:
            w(f"| {2 * int(lvl)} (for {lvl}+{lvl}) | not measured | | | | | | |")
            continue
        ins, lwt = op(raw, "insert", "per_s"), op(raw, "lwt_update", "per_s")
        lc = sc["lifecycles_per_s"] if sc else None
        r_ins = f"**{lc / ins:.3f}**" if lc is not None and ins else "n/a"
        r_lwt = f"{lc / lwt:.3f}" if lc is not None and lwt else "n/a"
        w(f"| {raw.get('threads', 2 * int(lvl))} (for {lvl}+{lvl}) | **{fmt(ins)}** | {lat(raw, 'insert')} | "
          f"**{fmt(lwt)}** | {lat(raw, 'lwt_update')} | {fmt(op(raw, 'insert', 'errors'))} / "
          f"{fmt(op(raw, 'lwt_update', 'errors'))} | {r_ins} | {r_lwt} |")
    w("")
    w(f"Target: lifecycles/s >= {W4_TARGET} x the raw INSERT/s at the same concurrency (see Targets). A lifecycle "
      "needs several CQL round trips (the put writes the message, the receive takes a lease by compare-and-set, "
      "the ack is another compare-and-set), so the LWT UPDATE rate is the nearer bound. Sluice runs the "
      "handlers that wait on the node on fibers (twice the cores, 4 at least, carry them), and a fiber that "
      "waits holds no thread, so all 128 requests of 64+64 can be in the store at once, as in the raw rates. "
      "Everything shares the "
      "machine's cores: the JVM, Sluice and loadgen in W1, the JVM and store_bench in the raw runs. "
      "cores used: CPU time (user + system) of each process over the loadgen run, warm-up included, per "
      "second (the machine has " + str(meta.get("nproc", "?")) + "). "
      "errors: non-2xx answers for Sluice (the statuses of the first few in brackets); for the raw rates, "
      "failed requests (a failed LWT is followed by a SERIAL read of its row before the thread goes on).")
    lg = one(rows, "sluice-cassandra", "log")
    if lg:
        lines = lg.get("lines", {})
        if lines:
            w("")
            w("Sluice's log during W4 (after its start): " +
              ", ".join(f"{v:,} {k} lines" for k, v in sorted(lines.items())) + ". Commonest: " +
              "; ".join(f"{t['count']:,} x {t['level']} `{t['message']}`" for t in lg.get("top", [])[:3]) + ".")
        else:
            w("")
            w("Sluice logged nothing after its start during W4.")
    w("")


def w4_chart(path, w4, quick):
    """Per level: Sluice's lifecycles/s beside the raw INSERT/s and LWT UPDATE/s (log scale: they differ by
    orders of magnitude), with the target (0.25 x INSERT/s) marked."""
    fig, ax = plt.subplots(figsize=(9, 4.8))
    width = 0.26
    series = [("Sluice on Cassandra: lifecycles/s", lambda sc, raw: sc and sc["lifecycles_per_s"], "tab:orange"),
              ("raw CQL INSERT/s", lambda sc, raw: op(raw, "insert", "per_s"), "tab:blue"),
              ("raw CQL LWT UPDATE/s", lambda sc, raw: op(raw, "lwt_update", "per_s"), "tab:cyan")]
    for i, (label, get, color) in enumerate(series):
        xs, vals = [], []
        for x, (lvl, sc, raw) in enumerate(w4):
            v = get(sc, raw)
            if v:
                xs.append(x + (i - 1) * width)
                vals.append(v)
        bars = ax.bar(xs, vals, width, label=label, color=color)
        for b, v in zip(bars, vals):
            ax.annotate(f"{v:,.0f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                        fontsize=7)
    first = True
    for x, (lvl, sc, raw) in enumerate(w4):
        ins = op(raw, "insert", "per_s")
        if ins:
            ax.hlines(W4_TARGET * ins, x - 1.5 * width, x - 0.5 * width, colors="black", linestyles="dashed",
                      label=f"target: {W4_TARGET} x INSERT/s" if first else None)
            first = False
    ax.set_yscale("log")
    low = min([v for _, sc, raw in w4 for v in (sc and sc["lifecycles_per_s"], op(raw, "lwt_update", "per_s"))
               if v] or [1])
    ax.set_ylim(bottom=10 ** math.floor(math.log10(max(low, 1))))  # bars of a log scale need a floor below them
    ax.set_xticks(range(len(w4)))
    ax.set_xticklabels([f"{lvl}+{lvl} (raw: {2 * int(lvl)} in flight)" for lvl, _, _ in w4], fontsize=8)
    ax.set_ylabel("per second (log scale)")
    ax.set_title("W4: Sluice W1 on one Cassandra node vs the raw rates of its CQL client" +
                 (" (quick run)" if quick else ""))
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, "Same node, same client (src/cql), same concurrency; Cassandra syncs its commit log "
             "every 10 s (not per write).", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def bar_chart(path, title, labels, values, ylabel, quick, colors=None, note=None):
    fig, ax = plt.subplots(figsize=(9, 4.8))
    bars = ax.bar(range(len(labels)), values, color=colors)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title + (" (quick run)" if quick else ""))
    for b, v in zip(bars, values):
        ax.annotate(f"{v:,.0f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom",
                    fontsize=7)
    if note:
        fig.text(0.01, 0.01, note, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def charts(rows, w1, w2, w3, lg_rates, wrk_rates, fs, out, quick):
    # W1: grouped bars, one group per system, one bar per level
    systems = [s for s in SYSTEMS + ["sluice-longpoll"] if s in w1]
    levels = ["1", "16", "64"]
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.26
    for i, lvl in enumerate(levels):
        vals = [w1[s].get(lvl, 0) for s in systems]
        bars = ax.bar([x + (i - 1) * width for x in range(len(systems))], vals, width, label=f"{lvl}+{lvl}")
        for b, v in zip(bars, vals):
            if v:
                ax.annotate(f"{v:,.0f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                            va="bottom", fontsize=6, rotation=90)
    ax.set_xticks(range(len(systems)))
    ax.set_xticklabels([NAMES[s] for s in systems], rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("lifecycles/s (put + receive + ack)")
    ax.set_title("W1 lifecycle, 100-byte messages, producers+consumers" + (" (quick run)" if quick else ""))
    ax.legend()
    fig.text(0.01, 0.01, "NATS and Azurite do not fsync each message; the others do.", fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "w1.png"), dpi=110)
    plt.close(fig)
    def col(s):
        return "tab:orange" if s.startswith("sluice") else ("tab:gray" if s in ("nats", "azurite") else "tab:blue")
    s2 = [s for s in SYSTEMS if s in w2]
    bar_chart(os.path.join(out, "w2.png"), "W2 batched lifecycle (batches of 10), 16+16", [NAMES[s] for s in s2],
              [w2[s] for s in s2], "messages/s", quick, colors=[col(x) for x in s2],
              note="Orange: Sluice. Gray: no fsync per message (NATS). Azurite: no batch API.")
    s3 = [s for s in SYSTEMS if s in w3]
    bar_chart(os.path.join(out, "w3.png"), "W3 drain (receive 10 + ack 10), 16 consumers", [NAMES[s] for s in s3],
              [w3[s] for s in s3], "messages/s", quick, colors=[col(x) for x in s3],
              note="Orange: Sluice. Gray: no fsync per message. Azurite drains a smaller queue (its receive scans it).")
    labels, vals = [], []
    for i, v in enumerate(lg_rates):
        labels.append(f"hello: loadgen #{i + 1}")
        vals.append(v)
    for i, v in enumerate(wrk_rates):
        labels.append(f"hello: wrk #{i + 1}")
        vals.append(v)
    if fs:
        labels.append("disk fdatasync/s")
        vals.append(fs["per_s"])
    if "sluice" in w1:
        for lvl in levels:
            if lvl in w1["sluice"]:
                labels.append(f"Sluice W1 {lvl}+{lvl} req/s")
                vals.append(3 * w1["sluice"][lvl])
    bar_chart(os.path.join(out, "ceilings.png"), "Ceilings of this machine and Sluice's W1 request rate", labels,
              vals, "per second", quick)


if __name__ == "__main__":
    main()
