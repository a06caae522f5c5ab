#!/usr/bin/env python3
"""The soak (issue 17): an hour of mixed load on one server, SIGKILLed and
restarted on the same data every ten minutes, sampled each minute.

    python3 bench/soak.py                       # 3600 s, a crash every 600 s
    python3 bench/soak.py --duration 300 --crash-every 100   # a quick look

The load, all at once, on keep-alive connections:

- checked: 4 producers and 4 consumers (GET next and POST receive of 10)
  on queue "soak", every operation recorded in a history (tests/history)
  and checked at the end, after a drain, for lost messages, deliveries after
  an ack, duplicate ids, false empties, unknown bodies and statuses the API
  does not allow;
- batches: put 10, receive up to 10 with a 1 s long poll, ack them in one
  batch ack, on "soak-batch";
- updates: take a message of "soak-upd", update its body and lease twice,
  then ack it with the last receipt;
- abandons: "soak-dead" has maxDeliveryCount 2 and the DLQ "soak-dlq"; its
  messages are received with a 1 s lease and never acked, so each goes to
  the DLQ after two deliveries; the DLQ is drained and acked;
- long polls: a receive with waitSeconds 20 on "soak-idle", where a put
  arrives every 3 s;
- churn: a queue created, given 5 messages, drained and deleted, in a loop.

Every answer of the side load is checked too: a 5xx or a status its route
does not allow is counted as unexpected (a connection refused or broken
while the server is down after a kill is not).

Each minute: the server's RSS and open descriptors (/proc), the size of
the data directory (database and WAL), and the p50/p99 latency of each
operation of the checked load completed in that minute; on the embedded
store also the bytes the database's pages in use take (its pages less its
free list: SQLite reuses freed pages but does not shrink the file, so the
file's size is the high-water mark of what the rows needed), split by
SQLite's dbstat into the buckets (the messages table and its index) and
the lease index, and the WAL's size. The figures go to OUT/soak.csv, the
plot to OUT/soak.png, the summary to OUT/soak.md.

RSS and descriptors are compared within each run of the server (between
kills): flat means the last sample of a run is within 25 % (RSS) or 16
descriptors of the run's first sample taken after a minute of load. The
database is judged by its reclaim, not by its size during the load: what
the buckets need at a time follows the throughput (an acked message keeps
its bucket until the bucket is finalized and two minutes older, see
GC_DELAY_MS), and the file keeps its high-water mark. After the drain, with
nothing left to deliver, the buckets must fall to at most 10 % of their
peak (or 2 MiB) within six minutes, as the repair worker finalizes and
deletes them. The lease index is reported beside: its entries expire a day
after they fall due, not with their bucket. The largest sizes of the first
and second half are reported too.
"""

import argparse
import csv
import json
import os
import socket
import sqlite3
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests", "api"))
sys.path.insert(0, os.path.join(ROOT, "tests", "history"))

import requests  # noqa: E402

import history as hist  # noqa: E402
from sluice_client import SluiceServer  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def dir_bytes(path):
    total = 0
    for dp, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(dp, f))
            except OSError:
                pass
    return total


def db_use(data_dir):
    """What the embedded store's database in data_dir holds: {"rows": bytes
    its pages in use take (page count less the free list), "buckets": the
    messages table and its index, "leases": the lease index, "wal": the
    WAL file's size}, from SQLite's dbstat table; None where there is no
    database (Cassandra)."""
    path = os.path.join(data_dir, "sluice.db")
    if not os.path.exists(path):
        return None
    try:
        wal = os.path.getsize(path + "-wal")
    except OSError:
        wal = 0
    try:
        con = sqlite3.connect(path, timeout=10)
        try:
            size, count, free = (con.execute(f"PRAGMA {p}").fetchone()[0]
                                 for p in ("page_size", "page_count", "freelist_count"))
            per = dict(con.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name").fetchall())
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return {"rows": (count - free) * size, "buckets": per.get("messages", 0) + per.get("messages__exp", 0),
            "leases": per.get("leases", 0) + per.get("leases__exp", 0), "wal": wal}


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p / 100.0 * len(xs)))]


class Side:
    """The unrecorded side load's counters."""

    def __init__(self):
        self.lock = threading.Lock()
        self.ops = {}
        self.unexpected = []

    def count(self, kind, status, allowed):
        with self.lock:
            self.ops[kind] = self.ops.get(kind, 0) + 1
            if status >= 500 and status != 503 or status not in allowed and status < 500:
                if len(self.unexpected) < 50:
                    self.unexpected.append((kind, status))
                self.ops["unexpected"] = self.ops.get("unexpected", 0) + 1


def side_loops(srv_box, side, stop):
    """Returns the side load's thread functions; each makes its own client
    and carries on through the server's restarts."""

    def guard(kind, fn):
        def run():
            c = None
            while not stop.is_set():
                try:
                    if c is None:
                        c = srv_box["srv"].client()
                    fn(c)
                except (requests.ConnectionError, requests.Timeout):
                    if c is not None:
                        c.close()
                    c = None
                    stop.wait(0.5)  # the server is down (a kill): try again
                except Exception as e:  # noqa: BLE001 - reported
                    with side.lock:
                        side.unexpected.append((kind, repr(e)[:200]))
                        side.ops["unexpected"] = side.ops.get("unexpected", 0) + 1
                    stop.wait(0.5)
            if c is not None:
                c.close()
        return run

    def batches(c):
        r = c.put_batch("soak-batch", [{"message": f"b{i}"} for i in range(10)])
        side.count("batch-put", r.status_code, {201, 429})
        r = c.receive("soak-batch", 10, 30, 1)
        side.count("batch-receive", r.status_code, {200, 204, 429})
        if r.status_code == 200 and r.json()["messages"]:
            a = c.ack_batch("soak-batch", [m["popReceipt"] for m in r.json()["messages"]])
            side.count("batch-ack", a.status_code, {200, 429})

    def updates(c):
        side.count("upd-put", c.put("soak-upd", "u").status_code, {201, 429})
        r = c.get_next("soak-upd", 30)
        side.count("upd-next", r.status_code, {200, 204, 429})
        if r.status_code != 200:
            return
        receipt = r.json()["popReceipt"]
        for i in range(2):
            u = c.update("soak-upd", receipt, new_invisibility=30, message=f"u{i}")
            side.count("update", u.status_code, {200, 409, 429})
            if u.status_code != 200:
                return
            receipt = u.json()["popReceipt"]
        side.count("upd-ack", c.ack("soak-upd", receipt).status_code, {204, 409, 429})

    def abandons(c):
        side.count("dead-put", c.put("soak-dead", "d").status_code, {201, 429})
        r = c.receive("soak-dead", 10, 1, 0)  # never acked: leases run out
        side.count("dead-receive", r.status_code, {200, 204, 429})
        r = c.receive("soak-dlq", 10, 30, 0)
        side.count("dlq-receive", r.status_code, {200, 204, 429})
        if r.status_code == 200:
            for m in r.json()["messages"]:
                side.count("dlq-ack", c.ack("soak-dlq", m["popReceipt"]).status_code, {204, 409, 429})
        stop.wait(0.2)

    def long_polls(c):
        r = c.receive("soak-idle", 1, 30, 20, timeout=40)
        side.count("long-poll", r.status_code, {200, 204, 429})
        if r.status_code == 200:
            for m in r.json()["messages"]:
                side.count("idle-ack", c.ack("soak-idle", m["popReceipt"]).status_code, {204, 409, 429})

    def idle_puts(c):
        side.count("idle-put", c.put("soak-idle", "i").status_code, {201, 429})
        stop.wait(3)

    n = [0]

    def churn(c):
        n[0] += 1
        name = f"churn-{n[0] % 4}"
        r = c.create_queue(name)
        side.count("churn-create", r.status_code, {200, 201, 409, 429})
        for _ in range(5):
            side.count("churn-put", c.put(name, "c").status_code, {201, 404, 429})
        r = c.receive(name, 10, 30, 0)
        side.count("churn-receive", r.status_code, {200, 204, 404, 429})
        r = c.delete_queue(name)
        side.count("churn-delete", r.status_code, {200, 204, 404, 429})
        stop.wait(0.5)

    return [guard(k, f) for k, f in (("batch", batches), ("update", updates), ("abandon", abandons),
                                     ("long-poll", long_polls), ("idle-put", idle_puts), ("churn", churn))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=int, default=3600)
    ap.add_argument("--crash-every", type=int, default=600)
    ap.add_argument("--sample", type=int, default=60)
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--data", default=None, help="data directory (default: a new temporary one)")
    args = ap.parse_args()

    data = args.data or tempfile.mkdtemp(prefix="sluice-soak-")
    port, admin = free_port(), free_port()
    srv = SluiceServer(os.path.join(data, "data"), name="soak",
                       args=["--port", port, "--admin-port", admin])
    srv.start()
    box = {"srv": srv}
    c = srv.client()
    c.create_queue("soak")
    c.create_queue("soak-batch")
    c.create_queue("soak-upd")
    c.create_queue("soak-dlq")
    c.create_queue("soak-dead", maxDeliveryCount=2, dlqName="soak-dlq")
    c.create_queue("soak-idle")
    c.close()
    base, key = srv.base_url, srv.key

    h = hist.History()
    side = Side()
    stop = threading.Event()
    t0 = time.monotonic()
    samples, kills = [], []

    def checked():
        box["checked"] = hist.producers_consumers(base, key, "soak", 4, 4, args.duration, h, max_unacked=500,
                                                  invisibility_s=60, timeout_s=30.0, phase="soak")

    threads = [threading.Thread(target=checked, daemon=True)]
    threads += [threading.Thread(target=f, daemon=True) for f in side_loops(box, side, stop)]
    for t in threads:
        t.start()

    next_sample = t0 + args.sample
    next_kill = t0 + args.crash_every
    end = t0 + args.duration
    last_ops = 0
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_kill and next_kill < end - 1:
            srv.kill()
            kills.append(now - t0)
            print(f"[{now - t0:6.0f} s] SIGKILL, restart", flush=True)
            srv.start()
            assert srv.base_url == base, f"the server came back on {srv.base_url}, not {base}"
            next_kill += args.crash_every
        if now >= next_sample:
            ops = h.ops()
            window = [o for o in ops[last_ops:] if o.done]
            last_ops = len(ops)
            lat = {}
            for kind in ("put", "receive", "ack"):
                xs = [(o.complete - o.invoke) * 1000 for o in window
                      if o.kind == kind and isinstance(o.status, int) and o.status < 300]
                lat[kind] = (pct(xs, 50), pct(xs, 99), len(xs))
            pid = srv.proc.pid if srv.proc else None
            use = db_use(srv.data_dir) or {}
            row = {"t_s": round(now - t0), "run": srv.runs, "rss_kib": rss_kib(pid), "fds": fds(pid),
                   "data_bytes": dir_bytes(srv.data_dir), "rows_bytes": use.get("rows"),
                   "bucket_bytes": use.get("buckets"), "lease_bytes": use.get("leases"), "wal_bytes": use.get("wal")}
            for kind, (p50, p99, n) in lat.items():
                row[f"{kind}_n"] = n
                row[f"{kind}_p50_ms"] = round(p50, 2) if p50 is not None else ""
                row[f"{kind}_p99_ms"] = round(p99, 2) if p99 is not None else ""
            samples.append(row)
            print(f"[{now - t0:6.0f} s] rss {row['rss_kib']} KiB, fds {row['fds']}, data {row['data_bytes']} B "
                  f"(rows {row['rows_bytes']} B: buckets {row['bucket_bytes']} B, lease index {row['lease_bytes']} B; "
                  f"WAL {row['wal_bytes']} B), "
                  f"p99 put/recv/ack {row['put_p99_ms']}/{row['receive_p99_ms']}/{row['ack_p99_ms']} ms, "
                  f"{row['put_n']} puts, {row['ack_n']} acks", flush=True)
            next_sample += args.sample
        time.sleep(0.2)

    stop.set()
    for t in threads:
        t.join(60)
    # The hour's samples are kept before the checks, which take minutes.
    write_samples(args.out, samples, kills)
    print("load over; draining", flush=True)
    dr = hist.drain(base, key, "soak", h, deadline_s=180)
    res = hist.check(h, visible_bound_s=5.0, queue="soak", lease_s=60.0)
    # What the drain leaves is received and acked too, then the statistics
    # must read exactly zero. Left after the drain, and fine: messages of
    # puts whose answer a kill cut, and messages whose ack a kill cut (the
    # drain counts those as settled; their lease runs out and they come
    # back). Anything else would be a message the drain should have waited
    # for, or one acked (204) and delivered again.
    c = srv.client()
    t_end = time.monotonic() + 120
    ops = h.ops()
    indeterminate = {o.body for o in ops if o.kind == "put" and o.indeterminate}
    acked = {o.message_id for o in ops if o.kind == "ack" and o.status == 204}
    ack_unknown = {o.message_id for o in ops if o.kind == "ack" and o.indeterminate} - acked
    leftover = {"of_indeterminate_puts": 0, "of_indeterminate_acks": 0, "other": 0, "other_examples": []}
    while time.monotonic() < t_end:
        msgs = c.receive_list("soak", 32, 30, 1)
        for m in msgs:
            if m["message"] in indeterminate:
                leftover["of_indeterminate_puts"] += 1
            elif m["messageId"] in ack_unknown:
                leftover["of_indeterminate_acks"] += 1
            else:
                leftover["other"] += 1
                if len(leftover["other_examples"]) < 5:
                    leftover["other_examples"].append((m["messageId"], m["message"][:24], m.get("deliveryCount")))
            c.ack("soak", m["popReceipt"])
        if not msgs and c.stats_json("soak")["size"] == 0:
            break
    c.close()
    print("after the drain:", leftover, flush=True)
    # The side queues too: everything in them must be receivable (a message
    # the reader never finds would keep its queue's size above zero). The
    # abandoned ones reach the DLQ after their second delivery.
    c = srv.client()
    side_left = {}
    for q in ("soak-batch", "soak-upd", "soak-dead", "soak-dlq", "soak-idle"):
        t_q = time.monotonic() + 90
        while True:
            msgs = c.receive_list(q, 32, 1 if q == "soak-dead" else 30, 1)
            for m in msgs:
                if q != "soak-dead":
                    c.ack(q, m["popReceipt"])
            if not msgs and c.stats_json(q)["size"] == 0:
                break
            if time.monotonic() >= t_q:
                side_left[q] = c.stats_json(q)
                break
    c.close()
    print("side queues left:", side_left or "none", flush=True)
    idle = hist.await_idle_stats(base, key, "soak", timeout_s=30)
    reclaim = await_reclaim(srv.data_dir, samples)
    final = {"rss_kib": rss_kib(srv.proc.pid), "fds": fds(srv.proc.pid), "data_bytes": dir_bytes(srv.data_dir)}
    srv.stop()

    with open(os.path.join(args.out, "soak-server.log"), "w") as f:
        f.write("\n".join(srv.lines) + "\n")
    verdict = judge(samples, args.sample)
    summary = {
        "duration_s": args.duration, "kills": len(kills), "checked_ops": len(h.ops()),
        "drain_done": dr.done, "unsettled": len(dr.unsettled),
        "lost": len(res.lost), "delivered_after_ack": len(res.delivered_after_ack),
        "duplicate_id": len(res.duplicate_id), "false_empty": len(res.false_empty),
        "unknown": len(res.unknown), "unexpected": len(res.unexpected),
        "longest_false_empty_s": res.longest_false_empty_s,
        "idle_stats_exact": idle.ok, "idle_stats": idle.stats, "after_drain": leftover,
        "side_queues_left": side_left,
        "side_ops": side.ops, "side_unexpected": side.unexpected[:20], "final": final, "reclaim": reclaim,
        **verdict,
    }
    print(json.dumps(summary, indent=1, default=str))
    with open(os.path.join(args.out, "soak.json"), "w") as f:
        json.dump(summary, f, indent=1, default=str)
    ok = (dr.done and not res.lost and not res.delivered_after_ack and not res.duplicate_id
          and not res.false_empty and not res.unknown and not res.unexpected and idle.ok
          and not leftover["other"] and not side_left
          and not side.ops.get("unexpected") and verdict["rss_flat"] and verdict["fds_flat"]
          and reclaim["ok"])
    write_md(os.path.join(args.out, "soak.md"), args, summary, samples, kills, res, ok)
    print("soak", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


def write_md(path, args, summary, samples, kills, res, ok):
    """soak.md: the verdict, the checker's figures and every sample."""
    L = [f"# Soak: {args.duration} s of mixed load, a SIGKILL every {args.crash_every} s",
         "",
         f"Written by `bench/soak.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
         f"(backend: {os.environ.get('SLUICE_TEST_BACKEND', 'sqlite')}). Plot: `soak.png`; "
         "every sample: `soak.csv`; the summary: `soak.json`.",
         "",
         f"**{'PASSED' if ok else 'FAILED'}.** RSS flat within each run: {summary['rss_flat']}; "
         f"descriptors flat: {summary['fds_flat']}; {reclaim_line(summary['reclaim'])}. Data directory "
         f"(the database file's high-water mark, and the WAL): largest in the first half "
         f"{summary['data_max_first_half']} B, in the second {summary['data_max_second_half']} B; rows in "
         f"use at most {summary['rows_max_first_half']} B in the first half, {summary['rows_max_second_half']} B "
         f"in the second; WAL at most {summary['wal_max']} B.",
         "",
         "History checker (the checked 4+4 load, after a drain): "
         f"{summary['checked_ops']} operations; lost {summary['lost']}, delivered after ack "
         f"{summary['delivered_after_ack']}, duplicate ids {summary['duplicate_id']}, false empties "
         f"{summary['false_empty']} (longest {summary['longest_false_empty_s']:.1f} s), unknown bodies "
         f"{summary['unknown']}, unexpected statuses {summary['unexpected']}; drain complete: "
         f"{summary['drain_done']}; idle statistics exact: {summary['idle_stats_exact']}; left after the drain: "
         f"{summary['after_drain']}; side queues not drained in 90 s: {summary['side_queues_left'] or 'none'}.",
         "",
         (f"Puts {res.puts} (201: {res.puts_ok}, indeterminate: {res.puts_indeterminate}), deliveries "
          f"{res.deliveries} (redeliveries {res.redeliveries}), acks 204 {res.acks_ok}; " if res else "")
         + f"kills at {', '.join(f'{k / 60:.0f} min' for k in kills) or 'none'}.",
         "",
         "Side load (answers; unexpected ones: "
         f"{summary['side_ops'].get('unexpected', 0)}): "
         + ", ".join(f"{k} {v}" for k, v in sorted(summary["side_ops"].items()) if k != "unexpected") + ".",
         "",
         "Per run of the server (between kills; the first minute of each skipped):",
         "",
         "| run | RSS first / last / max (KiB) | descriptors first / last / max |",
         "|---|---|---|"]
    for r in summary["runs"]:
        L.append(f"| {r['run']} | {r['rss_first_kib']} / {r['rss_last_kib']} / {r['rss_max_kib']} | "
                 f"{r['fds_first']} / {r['fds_last']} / {r['fds_max']} |")
    L += ["", "| minute | run | RSS (KiB) | fds | data (MiB) | rows (MiB) | buckets (MiB) | lease index (MiB) | "
          "WAL (MiB) | put p50/p99 (ms) | receive p50/p99 | ack p50/p99 | puts | acks |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for x in samples:
        L.append(f"| {x['t_s'] / 60:.0f} | {x['run']} | {x['rss_kib']} | {x['fds']} | "
                 f"{x['data_bytes'] / 2**20:.1f} | {mib(x['rows_bytes'])} | {mib(x['bucket_bytes'])} | "
                 f"{mib(x['lease_bytes'])} | {mib(x['wal_bytes'])} | "
                 f"{x['put_p50_ms']} / {x['put_p99_ms']} | "
                 f"{x['receive_p50_ms']} / {x['receive_p99_ms']} | {x['ack_p50_ms']} / {x['ack_p99_ms']} | "
                 f"{x['put_n']} | {x['ack_n']} |")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def mib(b):
    return "-" if b is None else f"{b / 2**20:.1f}"


def write_samples(out, samples, kills):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "soak.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(samples[0].keys()))
        w.writeheader()
        w.writerows(samples)
    plot(samples, kills, os.path.join(out, "soak.png"))


def await_reclaim(data_dir, samples, timeout_s=360):
    """After the drain: waits until the buckets (the messages table and its
    index) fall to 10 % of their peak (or 2 MiB), as the repair worker
    finalizes and deletes the drained buckets. The lease index is reported
    beside: its entries expire a day after they fall due (lease.c), not with
    the buckets. Returns the figures; ok is True where there is no database
    (Cassandra: its TTLs and compaction are not this script's to judge)."""
    peak = max((s["bucket_bytes"] or 0 for s in samples), default=0)
    bound = max(2 * 2**20, peak // 10)
    t0 = time.monotonic()
    use = db_use(data_dir)
    if use is None:
        return {"ok": True, "peak_bucket_bytes": None, "bound_bytes": None, "use": None, "after_s": 0}
    while use is not None and use["buckets"] > bound and time.monotonic() - t0 < timeout_s:
        time.sleep(10)
        use = db_use(data_dir)
    after = round(time.monotonic() - t0)
    print(f"{after} s after the drain: {use} (peak of the buckets {peak} B, bound {bound} B)", flush=True)
    return {"ok": use is not None and use["buckets"] <= bound, "peak_bucket_bytes": peak, "bound_bytes": bound,
            "use": use, "after_s": after}


def reclaim_line(r):
    if r["use"] is None:
        return "buckets reclaimed: not measured (no embedded database)"
    u = r["use"]
    return (f"buckets reclaimed after the drain: {r['ok']} ({u['buckets']} B {r['after_s']} s after it, peak "
            f"{r['peak_bucket_bytes']} B, bound {r['bound_bytes']} B; rows in use then {u['rows']} B, of "
            f"which the lease index {u['leases']} B; WAL {u['wal']} B)")


def judge(samples, sample_s):
    """Flatness per run of the server (see the module's docstring)."""
    runs = {}
    for s in samples:
        if s["rss_kib"] is not None:
            runs.setdefault(s["run"], []).append(s)
    rss_flat = fds_flat = True
    growth = []
    for run, ss in sorted(runs.items()):
        ss = ss[1:] if len(ss) > 2 else ss  # the first minute warms the caches up
        first, last = ss[0], ss[-1]
        g = (last["rss_kib"] - first["rss_kib"]) / max(1, first["rss_kib"])
        growth.append({"run": run, "rss_first_kib": first["rss_kib"], "rss_last_kib": last["rss_kib"],
                       "rss_max_kib": max(s["rss_kib"] for s in ss), "fds_first": first["fds"],
                       "fds_last": last["fds"], "fds_max": max(s["fds"] for s in ss)})
        if len(ss) >= 3 and g > 0.25:
            rss_flat = False
        if len(ss) >= 3 and last["fds"] - first["fds"] > 16:
            fds_flat = False
    sizes = [s["data_bytes"] for s in samples]
    half = len(sizes) // 2
    rows = [s["rows_bytes"] or 0 for s in samples]
    return {"rss_flat": rss_flat, "fds_flat": fds_flat, "runs": growth,
            "rows_max_first_half": max(rows[:half]) if half else None,
            "rows_max_second_half": max(rows[half:]) if rows else None,
            "wal_max": max((s["wal_bytes"] or 0 for s in samples), default=None),
            "data_max_first_half": max(sizes[:half]) if half else None,
            "data_max_second_half": max(sizes[half:]) if sizes else None}


def plot(samples, kills, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_s"] / 60 for s in samples]
    fig, ax = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    ax[0].plot(t, [(s["rss_kib"] or 0) / 1024 for s in samples], marker=".")
    ax[0].set_ylabel("RSS (MiB)")
    ax[1].plot(t, [s["fds"] or 0 for s in samples], marker=".")
    ax[1].set_ylabel("open descriptors")
    ax[2].plot(t, [s["data_bytes"] / 2**20 for s in samples], marker=".", label="data directory")
    if any(s["rows_bytes"] is not None for s in samples):
        ax[2].plot(t, [(s["rows_bytes"] or 0) / 2**20 for s in samples], marker=".", label="rows in use")
        ax[2].plot(t, [(s["bucket_bytes"] or 0) / 2**20 for s in samples], marker=".", label="buckets")
        ax[2].plot(t, [(s["lease_bytes"] or 0) / 2**20 for s in samples], marker=".", label="lease index")
        ax[2].plot(t, [(s["wal_bytes"] or 0) / 2**20 for s in samples], marker=".", label="WAL")
        ax[2].legend()
    ax[2].set_ylabel("MiB")
    for kind in ("put", "receive", "ack"):
        ax[3].plot(t, [s[f"{kind}_p99_ms"] or None for s in samples], marker=".", label=f"{kind} p99")
    ax[3].set_ylabel("latency (ms)")
    ax[3].set_yscale("log")
    ax[3].legend()
    ax[3].set_xlabel("minutes (dashed: SIGKILL and restart)")
    for a in ax:
        for k in kills:
            a.axvline(k / 60, color="grey", linestyle="--", linewidth=0.8)
        a.grid(alpha=0.3)
    fig.suptitle("Sluice soak: mixed load, embedded store, a SIGKILL every 10 minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    sys.exit(main())
