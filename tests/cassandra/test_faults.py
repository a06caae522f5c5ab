"""Cassandra faults (issue 3, item 6).

With Cassandra gone, every API route answers 503 with Retry-After within
the request timeout (no hang, no 500, no crash) and /health answers 503;
when Cassandra comes back, the same Sluice process recovers without a
restart, and no message that got a 201 before the outage is lost.

Two outages, each on a fresh server:
- "stopped": the node is shut down (scripts/cassandra.sh stop); Sluice's
  connections are closed and reconnects are refused. It comes back with
  `start` on the same data dir and port.
- "frozen": the JVM gets SIGSTOP: connections stay open and the kernel still
  accepts new ones, but nothing answers, which is what a hung or
  partitioned node looks like. SIGCONT brings it back.

These tests run on a Cassandra node of their own (another port, a run dir
under the test's temp dir), so the node the other suites share is never
disturbed and the order of the suites does not matter.

Requests that may change data during the outage (ack, update, purge,
delete, redrive) go to a separate queue: a request that got a 503 may still
apply when a frozen node wakes up (API.md only promises it is safe to
retry), and that must not be mistaken for a lost message.
"""

import json
import os
import select
import socket
import threading
import time

import pytest
import requests

from cassnode import CassandraNode
from sluice_client import SluiceServer, assert_error, assert_status, await_until, describe, new_keyspace

pytestmark = pytest.mark.backend("cassandra", reason="faults of the Cassandra backend")

# The servers here run with a request timeout of REQUEST_TIMEOUT_S
# (SLUICE_REQUEST_TIMEOUT_MS); an answer may take that plus MARGIN_S for
# what the client stack and scheduling add, and no more.
REQUEST_TIMEOUT_S = float(os.environ.get("SLUICE_TEST_REQUEST_TIMEOUT", "3"))
MARGIN_S = 5.0
CLIENT_TIMEOUT_S = 30.0
LONG_POLL_S = 3  # waitSeconds of the long poll among the routes: it may add that
RECOVERY_DEADLINE_S = 90.0
N_DURABLE = 30


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    n = CassandraNode(tmp_path_factory.mktemp("cassandra-faults"))
    try:
        n.start()
    except AssertionError:
        pytest.fail(f"the fault tests' own Cassandra node did not start:\n{n.output[-3000:]}")
    yield n
    n.stop()


def _routes(durable, victim, dlq, receipt):
    """(name, fn(client)) for every route of API.md's queue API and /health."""
    return [
        ("GET /health", lambda c: c.request("GET", "/health")),
        ("GET queues", lambda c: c.list_queues()),
        ("POST queues (create)", lambda c: c.create_queue(durable + "-new")),
        ("GET queue", lambda c: c.get_queue(durable)),
        ("GET statistics", lambda c: c.stats(durable)),
        ("POST messages (put)", lambda c: c.put(durable, "during-outage")),
        ("GET messages/next", lambda c: c.get_next(durable, 2)),
        ("GET messages/peek", lambda c: c.peek(durable, 5)),
        ("POST messages/batch", lambda c: c.put_batch(durable, ["during-outage-1", "during-outage-2"])),
        ("POST messages/receive", lambda c: c.receive(durable, 5, 2, 0)),
        ("POST messages/receive (long poll)", lambda c: c.receive(durable, 5, 2, LONG_POLL_S)),
        ("PUT messages (update)", lambda c: c.update(victim, receipt, new_invisibility=5)),
        ("DELETE messages (ack)", lambda c: c.ack(victim, receipt)),
        ("POST messages/ack", lambda c: c.ack_batch(victim, [receipt])),
        ("POST purge", lambda c: c.purge(victim)),
        ("POST redrive", lambda c: c.redrive(dlq, victim)),
        ("DELETE queue", lambda c: c.delete_queue(victim)),
        ("GET queues (other account)", lambda c: c.list_queues(account="nobody")),
    ]


def _call_all(srv, routes):
    """Calls every route at once, each on a connection of its own; returns
    {name: (response or exception, seconds)}."""
    out = {}

    def one(name, fn):
        c = srv.client()
        # Past the limit, wait a bounded while more so the failure can say
        # how long the answer took.
        c.timeout = CLIENT_TIMEOUT_S
        t = time.monotonic()
        try:
            r = fn(c)
        except requests.RequestException as e:
            r = e
        out[name] = (r, time.monotonic() - t)
        c.close()

    threads = [threading.Thread(target=one, args=rt, daemon=True) for rt in routes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(CLIENT_TIMEOUT_S + 10)
    for name, _ in routes:
        out.setdefault(name, (TimeoutError("the client thread never finished"), float("inf")))
    return out


def _check_outage_answers(results, durations):
    """The answers during an outage. Two answers besides 503 are right too,
    since they tell the client the truth and it can retry: GET of a queue's
    definition answered from the node's cache (200 and the definition), and
    POST .../ack answering 200 with a per-receipt status of 503 for each
    receipt (documented in src/api/native.c and openapi.json)."""
    problems = []
    for name, (r, dt) in sorted(results.items()):
        durations.append((dt, name, "no answer" if isinstance(r, Exception) else r.status_code))
        if isinstance(r, Exception):
            problems.append(f"{name}: no answer after {dt:.1f} s ({type(r).__name__}: {r})")
            continue
        limit = REQUEST_TIMEOUT_S + MARGIN_S + (LONG_POLL_S if "long poll" in name else 0)
        if dt > limit:
            problems.append(f"{name}: answered {r.status_code} only after {dt:.1f} s (limit {limit:.0f} s)")
        if name == "GET queue" and r.status_code == 200 and r.json().get("queueName"):
            continue
        if name == "POST messages/ack" and r.status_code == 200:
            st = [x.get("status") for x in r.json().get("results", [])]
            if st and all(x == 503 for x in st):
                continue
        if r.status_code != 503:
            problems.append(f"{name}: {describe(r)} after {dt:.1f} s, expected 503")
            continue
        try:
            assert_error(r, 503)
        except AssertionError as e:
            problems.append(f"{name}: {e}")
        ra = r.headers.get("Retry-After", "")
        if not ra.strip().isdigit():
            problems.append(f"{name}: 503 without a Retry-After of whole seconds (got {ra!r})")
    return problems


@pytest.mark.parametrize("outage", ["stopped", "frozen"])
def test_outage_answers_503_and_recovers_without_loss(node, tmp_path, outage, record_property):
    srv = SluiceServer(tmp_path / "data", name=f"faults-{outage}", keyspace=new_keyspace("sluice_f"),
                       cassandra_port=node.port,
                       env={"SLUICE_REQUEST_TIMEOUT_MS": str(int(REQUEST_TIMEOUT_S * 1000))})
    c = None
    try:
        srv.start()
        c = srv.client()
        c.timeout = REQUEST_TIMEOUT_S + MARGIN_S
        durable = c.new_queue("durable")
        victim = c.new_queue("victim")
        dlq = c.new_queue("victim-dlq")
        # N messages that got 201 before the outage; they must all come.
        owed = {}
        for i in range(N_DURABLE):
            owed[c.put_ok(durable, f"owed-{i}")] = f"owed-{i}"
        r = assert_status(c.put_batch(durable, [f"owed-b{i}" for i in range(10)]), 201)
        for i, mid in enumerate(r.json()["messageIds"]):
            owed[mid] = f"owed-b{i}"
        c.put_ok(victim, "victim")
        msgs = c.receive_list(victim, 1, 60)
        assert msgs, "the victim queue delivered nothing"
        receipt = msgs[0]["popReceipt"]
        pid = srv.proc.pid

        t_out = time.monotonic()
        if outage == "stopped":
            node.stop()
        else:
            node.freeze()
        try:
            routes = _routes(durable, victim, dlq, receipt)
            results = _call_all(srv, routes)
            # And once more: the first wave may have met connections that
            # were still open; the second meets the reconnect path.
            results2 = _call_all(srv, routes)
            assert srv.alive() and srv.proc.pid == pid, "Sluice died during the Cassandra outage:\n" + srv.log_tail()
            durations = []
            problems = _check_outage_answers(results, durations) + [
                p + " (second wave)" for p in _check_outage_answers(results2, durations)]
            slowest = max(durations)
            other = srv.client()
            for path in ("/openapi.json",):
                r = other.request("GET", path, timeout=REQUEST_TIMEOUT_S + MARGIN_S)
                if r.status_code != 200:
                    problems.append(f"{path} needs no store but answered {describe(r)}")
            other.close()
        finally:
            t_back = time.monotonic()
            if outage == "stopped":
                node.start()
            else:
                node.thaw()
        note = (f"{outage}: slowest answer during the outage {slowest[0]:.1f} s ({slowest[1]}); "
                f"outage lasted {t_back - t_out:.1f} s; all: "
                + ", ".join(f"{n} {st} in {d:.1f} s" for d, n, st in sorted(durations, reverse=True)[:8])
                + "; not 503: " + (", ".join(sorted({f"{n} {st}" for _, n, st in durations if st != 503}))
                                   or "none"))
        record_property(f"outage_{outage}", note)
        print(note)
        assert not problems, f"during the outage ({outage}):\n" + "\n".join(problems)

        # Recovery without a restart: the same process takes a put.
        def put_ok():
            try:
                r = c.put(durable, "after-outage")
            except requests.RequestException:
                return None
            if r.status_code not in (201, 503):
                raise AssertionError(f"while Cassandra came back: {describe(r)}")
            return r if r.status_code == 201 else None

        t0 = time.monotonic()
        r = await_until(put_ok, timeout=RECOVERY_DEADLINE_S, interval=0.5,
                        desc="a put to succeed after Cassandra came back")
        recovered = time.monotonic() - t0
        print(f"{outage}: recovered {recovered:.1f} s after Cassandra answered again")
        record_property(f"recovery_{outage}", f"{recovered:.1f} s")
        assert srv.proc.pid == pid and srv.alive(), "Sluice was restarted or died"
        assert_status(c.health(), 200)
        after = r.json()["messageId"]

        # Nothing acknowledged before the outage is lost.
        got = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (set(owed) | {after}) <= set(got):
            for m in c.receive_list(durable, 32, 30, 1):
                got[m["messageId"]] = m
                assert_status(c.ack(durable, m["popReceipt"]), 204, 409)
        missing = set(owed) - set(got)
        assert not missing, (f"{len(missing)} of {len(owed)} messages that got 201 before the outage were "
                             f"never delivered after it: {sorted(owed[m] for m in missing)[:10]}")
        for mid, body in owed.items():
            assert got[mid]["message"] == body
        assert after in got, "the put that got 201 after the outage was not delivered"
    finally:
        if c:
            c.close()
        srv.close()


def _read_response(sock):
    """One HTTP/1.1 response from sock, its body framed by Content-Length
    (none: no body): (status, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {buf!r}")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(v) for k, _, v in (ln.partition(":") for ln in lines[1:]) if k.strip().lower()
                   == "content-length"), 0)  # a 204 has none
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the body")
        body += chunk
    return int(lines[0].split()[1]), body[:length]


def _await_delivered(srv, c, q, ids):
    """Every one of ids is received from q, and the server is still up."""
    got = set()
    await_until(lambda: got.update(m["messageId"] for m in c.receive_list(q, 32, 60, 1)) or set(ids) <= got,
                timeout=60, interval=0, desc=f"the {len(ids)} puts that got 201 to be delivered")
    assert srv.alive(), srv.log_tail()


def test_frozen_store_holds_only_the_requests_that_need_it(node, tmp_path):
    """Requests that wait on a frozen node hold store threads, never the
    event loop (issue 12): while 64 puts hang on it, /openapi.json, a 404
    and a malformed request on fresh connections are answered, before any
    of the puts is; after the thaw every put is answered and the ones that
    got 201 are delivered."""
    srv = SluiceServer(tmp_path / "data", name="faults-loop", keyspace=new_keyspace("sluice_f"),
                       cassandra_port=node.port, env={"SLUICE_REQUEST_TIMEOUT_MS": "20000"})
    socks = []
    try:
        srv.start()
        c = srv.client()
        q = c.new_queue("loop")
        host, port = srv.base_url.split("//")[1].rsplit(":", 1)
        node.freeze()
        try:
            for i in range(64):
                s = socket.create_connection((host, int(port)), timeout=60)
                body = f"frozen-{i}".encode()
                path = c.qpath(q, "/messages")
                auth = "".join(f"{k}: {v}\r\n" for k, v in c._auth_headers("POST", path, None, body).items())
                s.sendall(f"POST {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: text/plain\r\n"
                          f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                socks.append(s)
            answered = []
            for i in range(16):
                for req, want in ((b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n", 200),
                                  (b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n", 404),
                                  (b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                                   400)):
                    with socket.create_connection((host, int(port)), timeout=60) as s:
                        s.sendall(req)
                        status, resp = _read_response(s)
                    assert status == want, f"{req[:20]!r}: {status} {resp[:200]!r}"
                    if want != 200:
                        assert json.loads(resp)["error"]["code"], resp
                    answered.append(status)
            # None of the puts has been answered yet: the answers above did
            # not wait for a thread that a put held.
            ready = select.select(socks, [], [], 0)[0]
            assert not ready, f"{len(ready)} of the 64 puts were answered while the node was still frozen"
        finally:
            node.thaw()
        ids = []
        for s in socks:
            status, resp = _read_response(s)
            assert status in (201, 503), f"a put during the freeze: {status} {resp[:300]!r}"
            if status == 201:
                ids.append(json.loads(resp)["messageId"])
        _await_delivered(srv, c, q, ids)
    finally:
        node.thaw()
        for s in socks:
            s.close()
        srv.close()


def _gauge(srv, name):
    """The sum of a gauge's samples on the admin port's /metrics."""
    r = requests.get(srv.admin_url + "/metrics", headers={"Authorization": "Bearer " + srv.admin_token},
                     timeout=10, verify=False)
    assert r.status_code == 200, r.text
    return sum(float(line.rsplit(" ", 1)[1]) for line in r.text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


def _send_raw(srv, c, method, path, body=b"", ctype="text/plain"):
    """Sends one signed request on a connection of its own, without waiting
    for the answer; returns the socket."""
    host, port = srv.base_url.split("//")[1].rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=60)
    auth = "".join(f"{k}: {v}\r\n" for k, v in c._auth_headers(method, path, None, body).items())
    s.sendall(f"{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: {ctype}\r\n"
              f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    return s


def _small_pool_server(node, tmp_path, name):
    """A server on node with a store pool of 2 threads, whose requests to
    the node time out after 20 s."""
    return SluiceServer(tmp_path / "data", name=name, keyspace=new_keyspace("sluice_f"), cassandra_port=node.port,
                        env={"SLUICE_REQUEST_TIMEOUT_MS": "20000", "SLUICE_STORE_THREADS": "2"})


def test_commits_in_flight_hold_no_thread(node, tmp_path):
    """A put or an ack waiting on Cassandra holds no thread (issue 12): with
    a store pool of 2 threads and the node frozen, 48 puts and 16 acks are
    all parked at once (the request, or its handler's fiber) while their
    requests to the node are in flight (the puts' rows, or the claim of the
    block of ids they wait for; the acks' batch), and no thread of the pool
    is busy; after the thaw every one of them is answered, and every put
    that got 201 is delivered."""
    srv = _small_pool_server(node, tmp_path, "faults-parked")
    socks = []
    try:
        srv.start()
        c = srv.client()
        q = c.new_queue("parked")
        for i in range(16):
            assert_status(c.put(q, f"before-{i}"), 201)
        receipts = []
        await_until(lambda: receipts.extend(m["popReceipt"] for m in c.receive_list(q, 16, 600)) or
                    len(receipts) >= 16, timeout=60, interval=0, desc="16 messages leased before the freeze")
        def send(method, path, body=b""):
            socks.append((method, _send_raw(srv, c, method, path, body)))

        node.freeze()
        try:
            for i in range(48):
                send("POST", c.qpath(q, "/messages"), f"frozen-{i}".encode())
            for rc in receipts[:16]:
                send("DELETE", c.qpath(q, "/messages") + "?popReceipt=" + requests.utils.quote(rc, safe=""))
            seen = {}

            def all_parked():
                now = dict(parked=_gauge(srv, "sluice_http_requests_parked"),
                           waiting=_gauge(srv, "sluice_http_store_pool_waiting"),
                           busy=_gauge(srv, "sluice_http_store_pool_busy"),
                           cql=_gauge(srv, "sluice_cql_requests_in_flight"))
                seen.setdefault("history", []).append(now)
                # Parked, or (a write settled on its own after a combined
                # batch failed) waiting on a fiber: either holds no thread.
                return now["parked"] + now["waiting"] >= 64 and now["busy"] == 0 and now["cql"] >= 1

            try:
                await_until(all_parked, timeout=30, desc="64 requests parked with the pool idle")
            except AssertionError as e:
                h = seen.get("history", [])
                raise AssertionError(f"{e}; seen first {h[:3]}, last {h[-3:]}") from None
            ready = select.select([s for _, s in socks], [], [], 0)[0]
            assert not ready, f"{len(ready)} requests were answered while the node was still frozen"
        finally:
            node.thaw()
        ids = []
        for method, s in socks:
            status, resp = _read_response(s)
            if method == "POST":
                assert status in (201, 503), f"a put during the freeze: {status} {resp[:300]!r}"
                if status == 201:
                    ids.append(json.loads(resp)["messageId"])
            else:
                assert status in (204, 503), f"an ack during the freeze: {status} {resp[:300]!r}"
        _await_delivered(srv, c, q, ids)
    finally:
        node.thaw()
        for _, s in socks:
            s.close()
        srv.close()


def test_reads_in_flight_hold_no_thread(node, tmp_path):
    """A handler waiting on a read holds no thread either (issue 12): with a
    store pool of 2 threads and the node frozen, 16 visibility updates
    (each reads its message at SERIAL first), 16 peeks, 16 queue listings
    and 16 receives from a queue the restarted server has not loaded yet
    (they read the queue and its buckets) are all waiting at once, their
    fibers parked and no thread of the pool busy; none is answered while
    the node is frozen, and after the thaw every one is answered with what
    its route answers (or a 503), and the server goes on serving."""
    srv = _small_pool_server(node, tmp_path, "faults-reads")
    socks = []
    try:
        srv.start()
        c = srv.client()
        q = c.new_queue("reads")
        cold = c.new_queue("cold")
        for i in range(16):
            assert_status(c.put(q, f"before-{i}"), 201)
            assert_status(c.put(cold, f"cold-{i}"), 201)
        # Restarted, the server knows nothing of cold: a receive must read
        # the queue and its buckets.
        srv.stop()
        srv.start()
        c = srv.client()
        receipts = []
        await_until(lambda: receipts.extend(m["popReceipt"] for m in c.receive_list(q, 16, 600)) or
                    len(receipts) >= 16, timeout=60, interval=0, desc="16 messages leased before the freeze")
        node.freeze()
        try:
            for rc in receipts[:16]:
                path = c.qpath(q, "/messages") + "?popReceipt=" + requests.utils.quote(rc, safe="")
                socks.append(("update", _send_raw(srv, c, "PUT", path, b'{"newInvisibilitySeconds": 900}',
                                                  "application/json")))
            for _ in range(16):
                socks.append(("peek", _send_raw(srv, c, "GET", c.qpath(q, "/messages/peek"))))
                socks.append(("list", _send_raw(srv, c, "GET", c.qbase())))
                socks.append(("receive", _send_raw(srv, c, "POST", c.qpath(cold, "/messages/receive"),
                                                   b'{"maxMessages": 1}', "application/json")))
            seen = {}

            def all_waiting():
                now = dict(waiting=_gauge(srv, "sluice_http_store_pool_waiting"),
                           busy=_gauge(srv, "sluice_http_store_pool_busy"),
                           parked=_gauge(srv, "sluice_http_requests_parked"),
                           queued=_gauge(srv, "sluice_http_store_pool_queued"),
                           cql=_gauge(srv, "sluice_cql_requests_in_flight"))
                seen.setdefault("history", []).append(now)
                return now["waiting"] >= 64 and now["busy"] == 0 and now["cql"] >= 1

            try:
                await_until(all_waiting, timeout=30, desc="64 handlers waiting on reads with the pool idle")
            except AssertionError as e:
                early = [(k, _read_response(s)) for k, s in socks if select.select([s], [], [], 0)[0]]
                h = seen.get("history", [])
                raise AssertionError(f"{e}; seen first {h[:3]}, last {h[-3:]}; answered early: {early[:4]}") from None
            ready = select.select([s for _, s in socks], [], [], 0)[0]
            assert not ready, f"{len(ready)} requests were answered while the node was still frozen"
        finally:
            node.thaw()
        want = {"update": (200, 503), "peek": (200, 503), "list": (200, 503), "receive": (200, 503)}
        for kind, s in socks:
            status, resp = _read_response(s)
            assert status in want[kind], f"a {kind} during the freeze: {status} {resp[:300]!r}"
            assert json.loads(resp) is not None
        await_until(lambda: c.list_queues().status_code == 200 and c.peek(q).status_code == 200, timeout=60,
                    desc="the server serves reads again after the thaw")
    finally:
        node.thaw()
        for _, s in socks:
            s.close()
        srv.close()
