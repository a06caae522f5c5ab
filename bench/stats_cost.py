#!/usr/bin/env python3
"""bench/stats_cost.py: what GET /{q}/statistics costs on a deep queue.

    bench/stats_cost.py [--cassandra-port P] [--depths 1000,10000,100000] [--requests 50] BIN...

For each depth, and for each sluice binary in turn (alternating, in one
sitting), starts `sluice dev` on a fresh data directory (or, with
--cassandra-port, a fresh keyspace on that node), fills one queue with that
many messages through bench/build/loadgen (batches of 100, unmeasured),
waits until the node's figures show them all, and then sends the
statistics requests one after the other on one connection. Prints, per
run, the median and the slowest request, and the reads of the messages
table (gets and slices, from sluice_store_statements_total) per request.
The servers bind 127.0.0.1 and are stopped by PID.
"""

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import requests

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADMIN = "statscost0123456789abcdef"


def reads(admin):
    t = requests.get(admin + "/metrics", headers={"Authorization": "Bearer " + ADMIN}, timeout=30).text
    return sum(int(v) for v in re.findall(r'sluice_store_statements_total\{table="messages",kind="(?:get|slice)"\} (\d+)', t))


def run(binary, depth, nreq, cport):
    d = tempfile.mkdtemp(prefix="statscost")
    args = [binary, "dev", "--port", "0", "--admin-port", "0", "--data-dir", d]
    if cport:
        args += ["--contact-points", "127.0.0.1", "--cassandra-port", str(cport),
                 "--keyspace", "statscost_" + uuid.uuid4().hex[:10]]
    log = open(os.path.join(d, "log"), "w+")
    p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, SLUICE_ADMIN_TOKEN=ADMIN))
    try:
        text = ""
        for _ in range(600):
            log.seek(0)
            text = log.read()
            if "primary key" in text and "admin API listening" in text:
                break
            time.sleep(0.1)
        url = re.findall(r"listening on (http://127\.0\.0\.1:\d+)", text)[-1]
        admin = re.findall(r"admin API listening on (http://127\.0\.0\.1:\d+)", text)[0]
        key = re.findall(r"primary key\S* (\S+)", text)[0]
        s = requests.Session()
        s.headers["Authorization"] = "Key " + key
        base = url + "/api/v1/accounts/dev/queues"
        assert s.post(base, json={"queueName": "q"}).status_code == 201
        subprocess.run([os.path.join(ROOT, "bench/build/loadgen"), "--port", url.rsplit(":", 1)[1], "--account", "dev",
                        "--queue", "q", "--header", "Authorization: Key " + key, "--producers", "4", "--consumers", "0",
                        "--batch", "100", "--put-count", str(depth), "--duration", "600"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        # Until the node has counted the queue (its depth shows in GET
        # /metrics with every message): from then on the statistics come
        # from memory, where the build has that.
        want = f'sluice_queue_messages{{account="dev",queue="q",state="visible"}} {depth}'
        deadline = time.monotonic() + 300
        while want not in requests.get(admin + "/metrics", headers={"Authorization": "Bearer " + ADMIN}).text:
            assert time.monotonic() < deadline, "the node's figures never showed every message"
            time.sleep(0.5)
        r0 = reads(admin)
        times = []
        for _ in range(nreq):
            t = time.perf_counter()
            st = s.get(base + "/q/statistics")
            times.append(time.perf_counter() - t)
            assert st.status_code == 200 and st.json()["size"] == depth, st.text
        per = (reads(admin) - r0) / nreq
        return statistics.median(times) * 1000, max(times) * 1000, per
    finally:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        shutil.rmtree(d, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cassandra-port", type=int, default=0)
    ap.add_argument("--depths", default="1000,10000,100000")
    ap.add_argument("--requests", type=int, default=50)
    ap.add_argument("binaries", nargs="+")
    a = ap.parse_args()
    if not os.access(os.path.join(ROOT, "bench/build/loadgen"), os.X_OK):
        subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "bench"), "build/loadgen"], check=True)
    store = f"Cassandra on port {a.cassandra_port}" if a.cassandra_port else "the embedded store"
    print(f"# GET /{{q}}/statistics, {a.requests} requests in a row, {store}")
    print("| binary | messages | median ms | slowest ms | messages-table reads a request |")
    print("|---|---|---|---|---|")
    for depth in [int(x) for x in a.depths.split(",")]:
        for b in a.binaries:
            med, worst, per = run(b, depth, a.requests, a.cassandra_port)
            print(f"| {b} | {depth:,} | {med:.2f} | {worst:.2f} | {per:.1f} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
