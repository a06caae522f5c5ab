"""Unit tests of the history checker (history.check) on small synthetic
histories: no server. Each violation kind has a history that has it (the
checker must report it) and near misses that do not (it must not). Then the
recording client (history.Recorder) against a stub HTTP server in a thread:
what it sends, what it records, keep-alive, reconnects, timeouts."""

import http.server
import json
import os
import random
import select
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from history import ERROR, TIMEOUT, Delivery, History, Recorder, check, closed_loop, make_body  # noqa: E402

Q = "q"


def put(h, body, mid, t0, t1, status=201, q=Q):
    return h.record("put", q, t0, t1, status, body=make_body(body, 0), message_id=mid if status == 201 else None)


def recv(h, t0, t1, *msgs, status=None, q=Q):
    """A receive that got msgs: (messageId, body-prefix) pairs; none is an
    empty (204)."""
    ds = [Delivery(mid, make_body(b, 0), 1, f"rcpt-{mid}") for mid, b in msgs]
    return h.record("receive", q, t0, t1, status or (200 if ds else 204), messages=ds)


def ack(h, mid, t0, t1, status=204, q=Q):
    return h.record("ack", q, t0, t1, status, message_id=mid, receipt=f"rcpt-{mid}")


def lifecycle(h, body, mid, t):
    """A clean put -> receive -> ack of one message from time t."""
    put(h, body, mid, t, t + 0.1)
    recv(h, t + 0.2, t + 0.3, (mid, body))
    ack(h, mid, t + 0.4, t + 0.5)


def test_clean_history_has_no_violation():
    h = History()
    for i in range(5):
        lifecycle(h, f"b{i}", f"m{i}", i)
    recv(h, 10, 10.1)  # an empty once everything is acked: fine
    r = check(h, visible_bound_s=1.0)
    assert r.counts() == {k: 0 for k in r.counts()}, r.summary()
    assert r.ok
    assert (r.puts_ok, r.deliveries, r.acks_ok, r.empties, r.redeliveries) == (5, 5, 5, 1, 0)


def test_lost_message_is_reported():
    h = History()
    lifecycle(h, "a", "m1", 0)
    put(h, "b", "m2", 1, 1.1)  # 201, never delivered
    r = check(h)
    assert len(r.lost) == 1 and r.lost[0]["messageId"] == "m2", r.summary()
    assert not r.ok


def test_indeterminate_put_is_never_lost_and_may_be_delivered():
    h = History()
    put(h, "t", None, 0, 30, status=TIMEOUT)
    put(h, "e", None, 0, 0.1, status=ERROR)
    put(h, "s", None, 0, 0.1, status=503)
    put(h, "d", None, 1, 1.1, status=TIMEOUT)
    recv(h, 40, 40.1, ("m-d", "d"))  # the timed-out put did happen: fine
    ack(h, "m-d", 40.2, 40.3)
    r = check(h)
    assert r.counts() == {k: 0 for k in r.counts()}, r.summary()
    assert r.puts_indeterminate == 4


def test_delivered_after_ack_is_reported():
    h = History()
    put(h, "a", "m1", 0, 0.1)
    recv(h, 0.2, 0.3, ("m1", "a"))
    ack(h, "m1", 0.5, 1.0)
    recv(h, 2.0, 2.1, ("m1", "a"))  # invoked after the ack completed
    r = check(h)
    assert len(r.delivered_after_ack) == 1, r.summary()
    assert r.delivered_after_ack[0]["messageId"] == "m1"


def test_receive_concurrent_with_ack_is_not_delivered_after_ack():
    """A receive that began before the ack ended may be ordered before it."""
    h = History()
    put(h, "a", "m1", 0, 0.1)
    recv(h, 0.2, 0.3, ("m1", "a"))
    ack(h, "m1", 0.5, 1.0)
    recv(h, 0.9, 1.5, ("m1", "a"))
    assert check(h).delivered_after_ack == []
    # A failed or stale ack does not make a later delivery a violation.
    h2 = History()
    put(h2, "a", "m1", 0, 0.1)
    recv(h2, 0.2, 0.3, ("m1", "a"))
    ack(h2, "m1", 0.5, 1.0, status=409)
    ack(h2, "m1", 0.5, 1.0, status=TIMEOUT)
    recv(h2, 2.0, 2.1, ("m1", "a"))
    r = check(h2)
    assert r.delivered_after_ack == [] and r.redeliveries == 1, r.summary()


def test_duplicate_id_is_reported():
    h = History()
    put(h, "a", "m1", 0, 0.1)
    put(h, "b", "m1", 0, 0.1)  # the same id for another body
    recv(h, 0.2, 0.3, ("m1", "a"))
    r = check(h)
    assert len(r.duplicate_id) == 1, r.summary()
    assert sorted(r.duplicate_id[0]["bodies"]) == ["pa-0", "pb-0"]


def test_false_empty_is_reported_with_its_length():
    h = History()
    put(h, "a", "m1", 0, 1.0)  # visible from 1.0
    recv(h, 11.0, 11.1)  # empty, 10 s later, nobody had taken m1
    recv(h, 20.0, 20.1, ("m1", "a"))
    ack(h, "m1", 20.2, 20.3)
    r = check(h, visible_bound_s=5.0)
    assert len(r.false_empty) == 1, r.summary()
    assert abs(r.longest_false_empty_s - 10.0) < 1e-9
    assert r.false_empty[0]["messageId"] == "m1"
    assert not r.ok


def test_false_empty_of_a_message_never_delivered():
    """A stranded message makes every later empty false (and lost)."""
    h = History()
    put(h, "a", "m1", 0, 1.0)
    for t in (2, 8, 9, 30):
        recv(h, t, t + 0.1)
    r = check(h, visible_bound_s=5.0)
    assert len(r.false_empty) == 3 and len(r.lost) == 1, r.summary()
    assert abs(r.longest_false_empty_s - 29.0) < 1e-9
    assert abs(r.max_empty_staleness_s - 29.0) < 1e-9


def test_empties_that_are_not_false():
    h = History()
    # Within the bound: staleness counted, not a violation.
    put(h, "a", "m1", 0, 1.0)
    recv(h, 4.0, 4.1)
    recv(h, 5.0, 5.1, ("m1", "a"))
    ack(h, "m1", 5.2, 5.3)
    # The put still in flight: not known visible.
    put(h, "b", "m2", 10, 30)
    recv(h, 20, 20.1)
    recv(h, 31, 31.1, ("m2", "b"))
    ack(h, "m2", 31.2, 31.3)
    # Taken by a receive that began before the empty one ended.
    put(h, "c", "m3", 40, 40.1)
    recv(h, 50.0, 50.5)
    recv(h, 50.4, 50.6, ("m3", "c"))
    ack(h, "m3", 50.7, 50.8)
    # An indeterminate receive may have leased it without our knowing.
    put(h, "d", "m4", 60, 60.1)
    recv(h, 61, 91, status=TIMEOUT)
    recv(h, 70, 70.1)
    recv(h, 92, 92.1, ("m4", "d"))
    ack(h, "m4", 92.2, 92.3)
    # An indeterminate put is never known visible.
    put(h, "e", None, 100, 100.1, status=TIMEOUT)
    recv(h, 120, 120.1)
    r = check(h, visible_bound_s=5.0)
    assert r.false_empty == [] and r.ok, r.summary()
    assert abs(r.max_empty_staleness_s - 3.0) < 1e-9, r.summary()


def test_indeterminate_receives_excuse_as_many_messages_as_they_could_take():
    """A receive that timed out may still run on the server, even after it
    was given up on, and take what it may (1 for GET next, maxMessages for
    POST receive): an empty is false only if it misses more than that."""
    def run(visible, blind_max):
        h = History()
        h.record("receive", Q, 0, 30, TIMEOUT, max_messages=blind_max)  # before the puts, even
        for i in range(visible):
            put(h, f"b{i}", f"m{i}", 1, 1.1)
        recv(h, 10, 10.1)
        for i in range(visible):
            recv(h, 40, 40.1, (f"m{i}", f"b{i}"))
            ack(h, f"m{i}", 40.2, 40.3)
        return check(h, visible_bound_s=5.0)

    assert run(1, 1).false_empty == []
    r = run(2, 1)  # one of two may have gone unseen; the other was missed
    assert len(r.false_empty) == 1 and r.false_empty[0]["excused"] == 1, r.summary()
    assert abs(r.longest_false_empty_s - 8.9) < 1e-9
    assert run(10, 10).false_empty == []
    assert len(run(11, 10).false_empty) == 1


def test_indeterminate_receive_after_the_empty_excuses_nothing():
    h = History()
    put(h, "a", "m1", 0, 1.0)
    recv(h, 10, 10.1)
    recv(h, 10.2, 40, status=TIMEOUT)  # invoked after the empty one ended
    recv(h, 50, 50.1, ("m1", "a"))
    ack(h, "m1", 50.2, 50.3)
    assert len(check(h, visible_bound_s=5.0).false_empty) == 1


def test_unknown_and_altered_messages_are_reported():
    h = History()
    lifecycle(h, "a", "m1", 0)
    recv(h, 1, 1.1, ("m9", "never-put"))
    put(h, "b", "m2", 2, 2.1)
    put(h, "c", None, 2, 2.1, status=TIMEOUT)
    recv(h, 3, 3.1, ("m2", "c"))  # m2 was "b"; "c" was put, but not as m2
    ack(h, "m2", 3.2, 3.3)
    r = check(h)
    assert len(r.unknown) == 1 and r.unknown[0]["messageId"] == "m9", r.summary()
    assert len(r.altered) == 1 and r.altered[0]["messageId"] == "m2", r.summary()


def test_unexpected_statuses_are_reported():
    h = History()
    lifecycle(h, "a", "m1", 0)
    put(h, "b", None, 1, 1.1, status=500)
    recv(h, 2, 2.1, status=404)
    ack(h, "m1", 3, 3.1, status=409)  # stale: allowed
    put(h, "c", None, 4, 4.1, status=429)  # load shedding: allowed
    r = check(h)
    assert sorted((u["kind"], u["status"]) for u in r.unexpected) == [("put", 500), ("receive", 404)], r.summary()
    assert r.acks_stale == 1


def test_queues_are_checked_apart():
    """The same messageId in two queues is two messages."""
    h = History()
    lifecycle(h, "a", "m1", 0)
    put(h, "b", "m1", 1, 1.1, q="other")
    r = check(h)
    assert r.duplicate_id == [] and [x["queue"] for x in r.lost] == ["other"], r.summary()
    assert check(h, queue=Q).ok


def test_phase_figures_and_longest_stall():
    h = History()
    h.add_phase("one", 0.0, 10.0)
    for t in (0.5, 1.0, 1.5):
        lifecycle(h, f"b{t}", f"m{t}", t)
    # Nothing succeeds from 2.0 (the last ack) until 8.0.
    recv(h, 3, 3.1)
    put(h, "x", None, 4, 7, status=TIMEOUT)
    lifecycle(h, "late", "m-late", 7.9)
    r = check(h)
    (p,) = r.phases
    assert (p.puts_ok, p.acks_ok, p.empties, p.indeterminate, p.deliveries) == (4, 4, 1, 1, 4), p.summary()
    assert abs(p.longest_stall_s - 6.0) < 1e-9, p.summary()
    assert abs(p.lifecycles_per_s - 0.4) < 1e-9
    assert abs(r.longest_stall_s - 6.0) < 1e-9


def test_unsettled_index_follows_the_history():
    h = History()
    put(h, "a", "m1", 0, 0.1)
    put(h, "b", "m2", 0, 0.1)
    put(h, "c", None, 0, 0.1, status=TIMEOUT)
    assert h.unsettled() == {(Q, "m1"), (Q, "m2")}
    recv(h, 1, 1.1, ("m1", "a"), ("m2", "b"))
    ack(h, "m1", 2, 2.1)
    ack(h, "m2", 2, 2.1, status=409)
    assert h.unsettled() == {(Q, "m2")}
    ack(h, "m2", 3, 3.1, status=TIMEOUT)  # may have acked: settled
    assert h.unsettled() == set()


def _brute_false_empties(h, bound):
    """The definition of the module docstring, literally, for comparison."""
    ops = h.ops()
    puts = {(o.queue, o.message_id): o for o in ops if o.kind == "put" and o.status == 201}
    out = []
    for e in ops:
        if not e.empty:
            continue
        missed = []
        for k, p in puts.items():
            takers = [o.invoke for o in ops if o.kind == "receive" and o.queue == e.queue
                      and any(d.message_id == k[1] for d in o.messages)]
            vu = min(takers, default=float("inf"))
            if k[0] == e.queue and p.complete < e.invoke and vu >= e.complete and vu > p.complete:
                missed.append(p.complete)
        unseen = sum(o.max_messages for o in ops if o.kind == "receive" and o.queue == e.queue
                     and o.indeterminate and o.invoke < e.complete)
        if len(missed) > unseen:
            stale = e.invoke - sorted(missed)[unseen]
            if stale > bound:
                out.append((e.invoke, round(stale, 9)))
    return sorted(out)


def test_sweep_matches_the_definition_on_random_histories():
    rnd = random.Random(1234)
    for trial in range(300):
        h = History()
        n = rnd.randint(1, 12)
        for i in range(n):
            t = rnd.uniform(0, 20)
            status = rnd.choice([201, 201, 201, TIMEOUT])
            put(h, f"b{i}", f"m{i}", t, t + rnd.uniform(0, 2), status=status)
            if rnd.random() < 0.7:
                r0 = rnd.uniform(0, 30)
                recv(h, r0, r0 + rnd.uniform(0, 1), (f"m{i}", f"b{i}"))
        for _ in range(rnd.randint(0, 10)):
            r0 = rnd.uniform(0, 40)
            status = rnd.choice([204, 204, 204, 204, 204, TIMEOUT, 503])
            if status == 204:
                recv(h, r0, r0 + rnd.uniform(0, 2))
            else:
                h.record("receive", Q, r0, r0 + rnd.uniform(0, 2), status, max_messages=rnd.choice([1, 1, 2]))
        r = check(h, visible_bound_s=3.0)
        got = sorted((v["at"], round(v["visible_s"], 3)) for v in r.false_empty)
        want = [(at, round(s, 3)) for at, s in _brute_false_empties(h, 3.0)]
        assert got == want, f"trial {trial}: {got} != {want}"


def test_stale_receipt_within_its_lease_is_reported():
    """A receipt just handed out answers 409: the lease was undone under
    the client (guarantee 4: it is the one valid receipt until the lease
    ends)."""
    h = History()
    put(h, "a", "m1", 0, 0.1)
    recv(h, 0.2, 0.3, ("m1", "a"))
    ack(h, "m1", 0.4, 0.5, status=409)
    r = check(h, lease_s=30)
    assert len(r.lease_lost) == 1, r.summary()
    assert r.lease_lost[0]["messageId"] == "m1"


def test_stale_receipt_that_may_be_stale_is_not_reported():
    """409 after the lease ran out, or on a retry of an ack whose outcome
    was unknown (the first try may have applied), is what the API says."""
    h = History()
    put(h, "a", "m1", 0, 0.1)
    recv(h, 0.2, 0.3, ("m1", "a"))
    ack(h, "m1", 31, 31.1, status=409)  # past the 30 s lease
    put(h, "b", "m2", 0, 0.1)
    recv(h, 0.2, 0.3, ("m2", "b"))
    ack(h, "m2", 0.4, 5.4, status=TIMEOUT)
    ack(h, "m2", 5.5, 5.6, status=409)  # the retry: the first may have acked
    ack(h, "m2", 5.7, 5.8, status=204)
    r = check(h, lease_s=30)
    assert r.lease_lost == [], r.summary()


# --- the recording client, against a stub HTTP server ----------------------


class _Stub:
    """A tiny HTTP/1.1 server in a thread that answers as Sluice would,
    per queue name: "ok" answers; "close" answers with Connection: close;
    "idle" answers, then closes the connection (as an idle timeout would);
    "slow" answers after 1 s; "drop" closes the connection unanswered.
    seen: (connection number, method, path, Authorization, body) per
    request."""

    def __init__(self):
        stub = self
        self.seen = []
        self.conns = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self):
                super().setup()
                stub.conns += 1
                self.conn_no = stub.conns

            def log_message(self, *a):
                pass

            def _answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                path = urllib.parse.urlsplit(self.path)
                stub.seen.append((self.conn_no, self.command, self.path, self.headers.get("Authorization"), body))
                q = path.path.split("/")[6]
                if q == "drop":
                    self.close_connection = True
                    return
                if q == "slow":
                    time.sleep(1.0)
                if path.path.endswith("/messages") and self.command == "POST":
                    status, out = 201, {"messageId": "m-" + body.decode()[:3]}
                elif path.path.endswith("/next"):
                    status, out = 200, {"messageId": "m1", "message": "hi", "deliveryCount": 2, "popReceipt": "r+/="}
                elif path.path.endswith("/receive"):
                    req = json.loads(body)
                    status, out = 200, {"messages": [{"messageId": f"m{i}", "message": f"b{i}", "deliveryCount": 1,
                                                      "popReceipt": f"r{i}"} for i in range(req["maxMessages"])]}
                else:
                    status, out = 204, None
                data = json.dumps(out).encode() if out is not None else b""
                self.send_response(status)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if q == "close":
                    self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(data)
                if q == "idle":
                    self.close_connection = True

            do_GET = do_POST = do_DELETE = _answer

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request, client_address):
                pass  # a client that gave up (timeout) before the answer

        self.srv = Server(("127.0.0.1", 0), Handler)
        self.srv.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, args=(0.02,), daemon=True).start()

    def close(self):
        self.srv.shutdown()
        self.srv.server_close()


def _recorder(stub, queue, timeout_s=5.0):
    h = History()
    return h, Recorder(stub.base_url, "k" * 86, queue, h, "w1", timeout_s=timeout_s)


def _await(fn, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not fn() and time.monotonic() < deadline:
        time.sleep(0.01)
    return fn()


def test_recorder_records_each_operation_on_one_keepalive_connection():
    stub = _Stub()
    h, rec = _recorder(stub, "ok")
    try:
        assert rec.put("abc" + "." * 97) == 201
        status, got = rec.get_next(60)
        assert status == 200 and got == [Delivery("m1", "hi", 2, "r+/=")]
        assert rec.ack(got[0]) == 204
        status, got = rec.receive(3, 60, 0)
        assert status == 200 and [d.message_id for d in got] == ["m0", "m1", "m2"]
        assert rec.connects == 1 and {s[0] for s in stub.seen} == {1}, stub.seen
    finally:
        rec.close()
        stub.close()
    put_op, next_op, ack_op, recv_op = h.ops()
    assert (put_op.status, put_op.message_id, put_op.body) == (201, "m-abc", "abc" + "." * 97)
    assert next_op.messages == (Delivery("m1", "hi", 2, "r+/="),)
    assert (ack_op.status, ack_op.message_id, ack_op.receipt) == (204, "m1", "r+/=")
    assert (recv_op.max_messages, len(recv_op.messages)) == (3, 3)
    assert all(o.done and o.complete >= o.invoke for o in h.ops())
    base = "/api/v1/accounts/dev/queues/ok/messages"
    assert [(m, p) for _, m, p, _, _ in stub.seen] == [
        ("POST", base), ("GET", base + "/next?invisibilityTimeSeconds=60"),
        ("DELETE", base + "?popReceipt=r%2B%2F%3D"), ("POST", base + "/receive")]
    assert all(a == "Key " + "k" * 86 for _, _, _, a, _ in stub.seen)
    assert json.loads(stub.seen[3][4]) == {"maxMessages": 3, "invisibilitySeconds": 60, "waitSeconds": 0}


def test_recorder_reconnects_when_the_server_closes_the_connection():
    """Connection: close, or a connection closed while idle: the next
    request goes on a new connection, and nothing is indeterminate."""
    stub = _Stub()
    try:
        for q in ("close", "idle"):
            h, rec = _recorder(stub, q)
            try:
                for i in range(3):
                    assert rec.put(f"{q}{i}") == 201
                    # the server's close reaches the client socket before it
                    # sends again (a race a real idle timeout makes unlikely)
                    _await(lambda: not rec._conn.sock or select.select([rec._conn.sock], [], [], 0)[0])
                assert rec.connects == 3, q
                assert [o.status for o in h.ops()] == [201, 201, 201]
            finally:
                rec.close()
    finally:
        stub.close()


def test_recorder_records_timeouts_and_broken_connections_as_indeterminate():
    stub = _Stub()
    try:
        h, rec = _recorder(stub, "slow", timeout_s=0.2)
        try:
            assert rec.put("s1") == TIMEOUT
            status, got = rec.get_next(60)
            assert (status, got) == (TIMEOUT, [])
        finally:
            rec.close()
        assert [o.status for o in h.ops()] == [TIMEOUT, TIMEOUT] and all(o.indeterminate for o in h.ops())
        assert rec.connects == 2  # a timed-out connection is not reused
        h, rec = _recorder(stub, "drop")
        try:
            assert rec.put("d1") == ERROR
            assert rec.ack(Delivery("m1", "x", 1, "r1")) == ERROR
            assert rec.receive(2, 60, 0) == (ERROR, [])
        finally:
            rec.close()
        assert [o.status for o in h.ops()] == [ERROR] * 3 and h.ops()[2].max_messages == 2
        assert rec.connects == 3
        h, rec = _recorder(stub, "ok")
        rec.close()
        stub.close()
        assert rec.put("gone") == ERROR  # connection refused
        assert h.ops()[0].status == ERROR
    finally:
        stub.close()


def test_false_empty_names_when_its_message_was_put_and_taken():
    h = History()
    put(h, "a", "m1", 0, 1)
    recv(h, 10, 10.1)
    recv(h, 12, 12.1, ("m1", "a"))
    put(h, "b", "m2", 0, 1)
    recv(h, 20, 20.1)
    (v, w) = check(h, visible_bound_s=5.0).false_empty
    assert (v["messageId"], v["put_at"], v["taken_at"]) == ("m1", 1, 12), v
    assert (w["messageId"], w["put_at"], w["taken_at"]) == ("m2", 1, None), w
    assert "false empties name 2 distinct messages" in check(h).summary()


def test_dump_writes_phases_and_operations(tmp_path):
    h = History()
    h.add_phase("one", 0.0, 2.0)
    lifecycle(h, "a", "m1", 0)
    lines = [json.loads(x) for x in open(h.dump(tmp_path / "h.jsonl"))]
    assert lines[0] == {"phase": "one", "start": 0.0, "end": 2.0}
    assert [x["kind"] for x in lines[1:]] == ["put", "receive", "ack"]
    assert lines[2]["messages"][0]["message_id"] == "m1" and lines[3]["receipt"] == "rcpt-m1"


def test_every_worker_of_a_workload_runs_for_the_whole_phase():
    """64 workers, each on its own connection, all within the phase: the
    clock starts once every thread runs."""
    stub = _Stub()
    try:
        h = History()
        r = closed_loop(stub.base_url, "k" * 86, "ok", 64, 0.5, h, phase="C64")
    finally:
        stub.close()
    assert r.ok and r.threads == 64 and r.connects == 64, r
    (p,) = h.phases()
    assert p.end - p.start >= 0.5 and abs(r.duration_s - (p.end - p.start)) < 0.05
    ops = h.ops()
    assert len({o.worker for o in ops}) == 64
    assert all(p.start <= o.invoke and o.complete <= p.end for o in ops)
