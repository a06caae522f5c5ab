"""A Jepsen-style history of queue operations, the workloads that write one,
and a checker that reads one.

History
-------
Every client operation is recorded with the time it was invoked and the time
it completed (time.monotonic(), one clock for every thread), its kind
("put", "receive", "ack"), the queue, the worker that issued it, its outcome
and its data:

- put: the body sent (each body unique, see make_body) and, on 201, the
  returned messageId;
- receive: the messages it got (messageId, body, deliveryCount, popReceipt);
  an empty answer (204 of GET /messages/next, or 200 with no messages of
  POST /messages/receive) is an *empty*;
- ack: the messageId and popReceipt it acked.

The outcome is the HTTP status, or "timeout" / "error" (the request timed out,
the connection broke) for an outcome the client cannot know; an operation
still in flight has None. A History is safe to write from many threads.

Outcomes, as the checker reads them (API.md):

- a put is *acknowledged* when it got 201: the message exists. A put that
  timed out, broke or got a 5xx is *indeterminate*: the message may or may
  not exist. No other put is known to exist either (a 429 refused it). None
  of them is counted as lost, and their bodies being delivered is fine.
- a receive is determinate when it got 200 or 204. One that timed out, broke
  or got a 5xx may have leased a message nobody saw (it stays invisible for
  the lease).
- an ack succeeded on 204; 409 is a stale receipt (the message may come
  back); a timeout, broken connection or 5xx may or may not have acked.

Checks (check())
----------------
a) lost: a put answered 201 whose messageId was never delivered by any
   receive of the history (run drain() first, so the history ends with the
   queue drained).
b) delivered_after_ack: a receive invoked after the completion of a
   successful (204) ack of a message it delivered. Operations that overlap in
   time may be ordered either way, so only a receive that *began* after the
   ack *ended* counts.
c) duplicate_id: one messageId returned (201) for two different put bodies.
d) false_empty: an empty receive while some message had been visible for
   more than visible_bound_s and certainly stayed visible through the whole
   receive. The visibility of a message is known only while it is fresh: it
   is visible from vf, the completion of its put (201), until vu, the
   invocation of the first determinate receive that delivered it (inf if
   none did). An empty receive [ri, rc] misses message m when
   vf + visible_bound_s < ri and vu >= rc (the receive that took m began
   after the empty one ended).
   Indeterminate receives (timeout, error, 5xx, still in flight) may have
   taken messages nobody saw, at any time after they were invoked (a request
   the client gave up on may still run on the server). So an empty receive
   is false only when it misses more messages than the indeterminate
   receives invoked before rc could have taken (1 each for GET next,
   maxMessages for POST receive): with none, one missed message is enough.
   Visibility after a lease runs out is not modelled: the workloads lease
   for 60 s, long enough that no lease expires while they run, and leaving
   it out only makes the check weaker, never wrong. Messages of
   indeterminate puts are never known to be visible.
   The staleness of an empty receive is ri - vf of the oldest message it
   certainly missed (the K+1-th oldest missed when K could have been taken
   unseen); longest_false_empty_s is the longest staleness of a false empty
   and max_empty_staleness_s that of any empty, false or within the bound.
e) unknown: a delivered body that no put of the history sent, whatever
   that put's outcome. altered: a delivery whose messageId a 201 put
   returned for another body.
f) unexpected: a status the API does not allow for the operation (a 500, a
   4xx other than an ack's 409); 429 and 503 are allowed (load shedding,
   store unavailable) and counted.
g) lease_lost: an ack answered 409 (stale receipt) although its receipt
   came from a receive invoked less than lease_s before the ack, and no
   earlier ack with that receipt may have applied (a 204, or an ack with no
   known outcome that a retry followed): within its lease a receipt is the
   one valid receipt of its message (guarantee 4), so its ack must apply. A
   lease undone under the client (a put landing after the lease, stamped
   later) shows here first.
Idle exactness of the statistics is checked by await_idle_stats(), against
the server, after the drain.

Figures: per phase (History.phase()) the throughput of each operation, the
lifecycles (successful acks) per second, the empties, and the longest stretch
with no successful put or ack (for fault runs) within the phase; overall,
the longest such stretch of any phase (of the whole history when it has no
phases). An operation belongs to the phase in which it completed.

Workloads
---------
closed_loop() and producers_consumers() run threads, each with one
persistent keep-alive connection (Recorder: http.client, not requests, so
that 64 workers on a small machine really keep 64 requests in flight), for
a duration and record into a History;
drain() receives and acks until every acknowledged put is delivered and
acked. A timeout or broken connection is recorded as indeterminate and the
worker carries on: it is not a failure of the workload. An ack that is
refused with 429 or has an unknown outcome is retried with the same receipt
(twice at most), as a careful client does; every try is in the history.
"""

import bisect
import contextlib
import dataclasses
import http.client
import json
import os
import select
import sys
import threading
import time
import traceback
import urllib.parse

import requests

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "api"))

from sluice_client import SluiceClient  # noqa: E402

BODY_BYTES = 100
TIMEOUT = "timeout"
ERROR = "error"

# The statuses API.md allows for each operation; anything else is reported
# as unexpected. 429 (load shedding) and 503 (store unavailable) are allowed
# everywhere; 409 is a stale receipt.
ALLOWED = {
    "put": {201, 429, 503},
    "receive": {200, 204, 429, 503},
    "ack": {204, 409, 429, 503},
}


# --- the history ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One message a receive got."""

    message_id: str
    body: str
    delivery_count: int
    pop_receipt: str


@dataclasses.dataclass
class Op:
    """One client operation. complete and status are None while in flight."""

    seq: int
    kind: str  # "put", "receive", "ack"
    queue: str
    worker: str
    invoke: float
    complete: float = None
    status: object = None  # int (HTTP status), TIMEOUT, ERROR or None
    body: str = None  # put: the body sent
    message_id: str = None  # put: the id returned; ack: the message acked
    receipt: str = None  # ack: the pop receipt
    messages: tuple = ()  # receive: the Deliveries
    max_messages: int = 1  # receive: the most messages it may take

    @property
    def done(self):
        return self.complete is not None

    @property
    def indeterminate(self):
        """The outcome is unknown: no answer, a 5xx, or still in flight."""
        s = self.status
        return s is None or s in (TIMEOUT, ERROR) or (isinstance(s, int) and s >= 500)

    @property
    def empty(self):
        """A receive that determinately got nothing."""
        return self.kind == "receive" and self.status in (200, 204) and not self.messages


@dataclasses.dataclass
class Phase:
    name: str
    start: float
    end: float = None


class History:
    """Thread-safe record of operations and phases.

    Besides the list of operations it keeps the indexes that drain() polls
    (which acknowledged puts are not yet settled), so that waiting for the
    drain does not rescan the whole history."""

    def __init__(self):
        self._lock = threading.Lock()
        self._ops = []
        self._phases = []
        self._runs = 0
        # Indexes over completed operations, by (queue, messageId).
        self._put_ok = set()  # puts answered 201
        self._delivered = set()
        self._settled = set()  # acked (204), or an ack whose outcome is unknown

    # -- writing --

    def new_run(self):
        """A number unique in this history, to make worker names (and so
        bodies) unique across the workloads that share it."""
        with self._lock:
            self._runs += 1
            return self._runs

    def invoke(self, kind, queue, worker, at=None, **data):
        """Records the start of an operation; returns its Op. data: body,
        message_id, receipt, max_messages (the fields of Op)."""
        t = time.monotonic() if at is None else at
        with self._lock:
            op = Op(len(self._ops), kind, queue, worker, t, **data)
            self._ops.append(op)
        return op

    def complete(self, op, status, at=None, message_id=None, messages=None):
        """Records the outcome of op: status is the HTTP status, TIMEOUT or
        ERROR; message_id the id a put got; messages the Deliveries of a
        receive."""
        t = time.monotonic() if at is None else at
        with self._lock:
            op.status = status
            if message_id is not None:
                op.message_id = message_id
            if messages:
                op.messages = tuple(messages)
            op.complete = t  # last: a reader that sees complete sees the rest
            if op.kind == "put" and status == 201 and op.message_id:
                self._put_ok.add((op.queue, op.message_id))
            elif op.kind == "receive":
                for m in op.messages:
                    self._delivered.add((op.queue, m.message_id))
            elif op.kind == "ack" and (status == 204 or op.indeterminate):
                self._settled.add((op.queue, op.message_id))
        return op

    def record(self, kind, queue, invoke, complete, status, worker="w", **data):
        """Adds a finished operation with given times (synthetic histories).
        data: body, message_id, receipt, max_messages, messages (Deliveries,
        or tuples (messageId, body[, deliveryCount[, popReceipt]]))."""
        msgs = [m if isinstance(m, Delivery) else _delivery(*m) for m in data.pop("messages", ())]
        mid = data.pop("message_id", None)
        op = self.invoke(kind, queue, worker, at=invoke, message_id=mid if kind != "put" else None, **data)
        return self.complete(op, status, at=complete, message_id=mid, messages=msgs)

    @contextlib.contextmanager
    def phase(self, name):
        """Marks the operations completed while the block runs as phase
        name (for the per-phase figures of check())."""
        p = Phase(name, time.monotonic())
        with self._lock:
            self._phases.append(p)
        try:
            yield p
        finally:
            p.end = time.monotonic()

    def add_phase(self, name, start, end):
        """A phase with given times (synthetic histories)."""
        with self._lock:
            self._phases.append(Phase(name, start, end))

    # -- reading --

    def ops(self):
        with self._lock:
            return list(self._ops)

    def phases(self):
        with self._lock:
            return list(self._phases)

    def unsettled(self, queue=None):
        """(queue, messageId) of puts answered 201 that are not yet delivered
        and acked (an ack with an unknown outcome counts as acked)."""
        with self._lock:
            out = {k for k in self._put_ok if k not in self._delivered or k not in self._settled}
        return out if queue is None else {k for k in out if k[0] == queue}

    def __len__(self):
        with self._lock:
            return len(self._ops)

    def dump(self, path):
        """Writes the history to path as JSON lines, the phases first
        ({"phase": name, "start", "end"}), then the operations in invoke
        order (the fields of Op), to study a failed check offline."""
        with open(path, "w") as f:
            for p in self.phases():
                f.write(json.dumps({"phase": p.name, "start": p.start, "end": p.end}) + "\n")
            for o in sorted(self.ops(), key=lambda o: o.invoke):
                d = dataclasses.asdict(o)
                d["messages"] = [dataclasses.asdict(m) for m in o.messages]
                f.write(json.dumps(d) + "\n")
        return path


def _delivery(message_id, body, delivery_count=1, pop_receipt=""):
    return Delivery(message_id, body, delivery_count, pop_receipt)


def make_body(worker, seq, size=BODY_BYTES):
    """A unique body "p<worker>-<seq>" padded with dots to size bytes."""
    b = f"p{worker}-{seq}"
    assert len(b) <= size, b
    return b.ljust(size, ".")


# --- recording client ------------------------------------------------------


class _Conn(http.client.HTTPConnection):
    """An HTTPConnection that counts the TCP connections it opens."""

    opened = 0

    def connect(self):
        super().connect()  # sets TCP_NODELAY too
        self.opened += 1


class Recorder:
    """One worker's connection: one persistent keep-alive HTTP/1.1
    connection (http.client, the `Authorization: Key` header of
    sluice_client's auth hook) whose put, receive and ack are recorded in a
    History. A timeout or broken connection is recorded, and returned, as
    TIMEOUT or ERROR: never raised; the connection is then closed and the
    next request opens a new one. timeout_s bounds each wait for the
    server (connect, each read), as requests' timeout does; a long poll
    gets its waitSeconds on top.

    Not requests: on a 2-core machine requests cost 2-3 ms of client CPU
    per operation recorded, which capped 64 workers at about 150
    lifecycles/s in all (SQLite), so the server never saw 64 requests at
    once. With http.client it is about 0.5 ms (0.7-0.8 ms with 64 threads
    taking turns on the GIL): some 1,000-1,200 requests/s from one process.

    A connection the server closed (Connection: close, or idle) is noticed
    before it is reused and reopened; a request is never retried once sent.
    `connects` counts the TCP connections opened (1 while keep-alive holds:
    see PEERS.md on the libmicrohttpd trap that silently turns it off)."""

    def __init__(self, base_url, key, queue, history, worker, account="dev", timeout_s=30.0):
        # The client only for its paths and its auth hook; it sends nothing.
        self.c = SluiceClient(base_url, account=account, timeout=timeout_s, key=key)
        u = urllib.parse.urlsplit(base_url)
        assert u.scheme == "http", base_url
        self._conn = _Conn(u.hostname, u.port, timeout=timeout_s)
        self._timeout = timeout_s
        self._path = self.c.qpath(queue, "/messages")
        self.q = queue
        self.h = history
        self.worker = worker

    @property
    def connects(self):
        """TCP connections this recorder opened."""
        return self._conn.opened

    def close(self):
        self._conn.close()
        self.c.close()

    def _send(self, op, method, path, params=None, body=None, ctype=None, timeout_s=None):
        """Sends one request on the worker's connection; returns (status,
        body bytes), or None after completing op as TIMEOUT or ERROR."""
        conn = self._conn
        t = timeout_s or self._timeout
        if conn.sock is not None:
            # The server may have closed the connection while it was idle:
            # anything readable now is EOF (or junk), so open a new one
            # rather than send a request into a dead socket.
            poll = select.poll()
            poll.register(conn.sock, select.POLLIN | select.POLLPRI)
            if poll.poll(0):
                conn.close()
        if conn.timeout != t:
            conn.timeout = t
            if conn.sock is not None:
                conn.sock.settimeout(t)
        url = path + ("?" + urllib.parse.urlencode(params) if params else "")
        headers = self.c._auth_headers(method, path, params, body)
        if ctype:
            headers["Content-Type"] = ctype
        try:
            conn.request(method, url, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except TimeoutError:
            conn.close()
            self.h.complete(op, TIMEOUT)
            return None
        except (OSError, http.client.HTTPException):
            conn.close()
            self.h.complete(op, ERROR)
            return None
        # On `Connection: close` http.client has already let the socket go;
        # the next request opens a new connection.
        return resp.status, data

    def put(self, body):
        """Returns the status (or TIMEOUT/ERROR)."""
        op = self.h.invoke("put", self.q, self.worker, body=body)
        r = self._send(op, "POST", self._path, body=body.encode(), ctype="text/plain; charset=utf-8")
        if r is None:
            return op.status
        status, data = r
        mid = _json(data).get("messageId") if status == 201 else None
        self.h.complete(op, status, message_id=mid)
        return status

    def get_next(self, invisibility_s):
        """GET /messages/next. Returns (status, [Delivery])."""
        op = self.h.invoke("receive", self.q, self.worker)
        params = None if invisibility_s is None else {"invisibilityTimeSeconds": invisibility_s}
        r = self._send(op, "GET", self._path + "/next", params=params)
        if r is None:
            return op.status, []
        status, data = r
        msgs = [_from_json(_json(data))] if status == 200 else []
        self.h.complete(op, status, messages=msgs)
        return status, msgs

    def receive(self, max_messages, invisibility_s, wait_s=0):
        """POST /messages/receive. Returns (status, [Delivery])."""
        op = self.h.invoke("receive", self.q, self.worker, max_messages=max_messages)
        req = {}
        for k, v in (("maxMessages", max_messages), ("invisibilitySeconds", invisibility_s), ("waitSeconds", wait_s)):
            if v is not None:
                req[k] = v
        r = self._send(op, "POST", self._path + "/receive", body=json.dumps(req).encode(),
                       ctype="application/json", timeout_s=self._timeout + (wait_s or 0))
        if r is None:
            return op.status, []
        status, data = r
        msgs = [_from_json(m) for m in _json(data).get("messages", [])] if status == 200 else []
        self.h.complete(op, status, messages=msgs)
        return status, msgs

    def ack(self, d):
        """DELETE /messages?popReceipt= of Delivery d. Returns the status."""
        op = self.h.invoke("ack", self.q, self.worker, message_id=d.message_id, receipt=d.pop_receipt)
        r = self._send(op, "DELETE", self._path, params={"popReceipt": d.pop_receipt})
        if r is None:
            return op.status
        self.h.complete(op, r[0])
        return r[0]


def _json(r):
    """The JSON object of a response body (bytes, or a requests.Response);
    {} when it is not one."""
    try:
        v = json.loads(r) if isinstance(r, (bytes, str)) else r.json()
    except ValueError:
        return {}
    return v if isinstance(v, dict) else {}


def _from_json(m):
    return Delivery(str(m.get("messageId")), m.get("message"), m.get("deliveryCount"), m.get("popReceipt"))


def _backoff(status):
    """A short pause after load shedding or an unavailable store, so the
    workload does not hammer a server that asked it to slow down."""
    if status in (429, 503):
        time.sleep(0.1)


def _ack(rec, d, tries=3):
    """Acks Delivery d as a careful client does: an ack refused with 429 or
    whose outcome is unknown (timeout, broken connection, 5xx) is retried
    with the same receipt (API.md: a 5xx may be retried), up to tries times
    in all, each try recorded. Returns the last status."""
    for _ in range(tries):
        status = rec.ack(d)
        if status in (204, 409) or not (status in (TIMEOUT, ERROR, 429) or status >= 500):
            return status
        _backoff(status)
    return status


# --- workloads --------------------------------------------------------------


@dataclasses.dataclass
class WorkloadResult:
    threads: int
    duration_s: float
    stuck: int  # threads still running after the join deadline
    crashes: list  # tracebacks of workers that raised
    connects: int = 0  # TCP connections the workers opened (threads while keep-alive holds)

    @property
    def ok(self):
        return not self.stuck and not self.crashes


class _Counter:
    """A sum that many threads add to."""

    def __init__(self):
        self.n = 0
        self._lock = threading.Lock()

    def add(self, k):
        with self._lock:
            self.n += k


def _run_threads(targets, duration_s, timeout_s, history, phase):
    """Runs each callable fn(deadline) in a thread of its own. The clock
    starts once every thread runs, and all get the same deadline: starting
    many threads on a busy machine takes a while, and a worker started late
    would lose part of its run (or all of it). The phase (if any) spans from
    then until the threads are joined, at the deadline plus one request
    timeout plus a margin at most. Returns (stuck, crashes, seconds from
    the start of the clock to the end of the joins)."""
    crashes = []
    lock = threading.Lock()
    go = threading.Event()
    clock = {}

    def wrap(fn):
        def run():
            go.wait()
            try:
                fn(clock["deadline"])
            except Exception:  # reported, never silently dropped
                with lock:
                    crashes.append(traceback.format_exc())
        return run

    ts = [threading.Thread(target=wrap(fn), daemon=True) for fn in targets]
    for t in ts:
        t.start()
    with (history.phase(phase) if phase else contextlib.nullcontext()):
        t0 = time.monotonic()
        clock["deadline"] = t0 + duration_s
        go.set()
        join_by = clock["deadline"] + timeout_s + 10
        for t in ts:
            t.join(max(0.0, join_by - time.monotonic()))
    return sum(t.is_alive() for t in ts), crashes, time.monotonic() - t0


def closed_loop(base_url, key, queue, conns, duration_s, history, account="dev", invisibility_s=60,
                timeout_s=30.0, phase=None):
    """conns threads, each with its own keep-alive connection, repeat for
    duration_s: put a unique 100-byte body (again, with a new body, until a
    put gets 201) -> GET /messages/next until it answers a message (retrying
    at once on 204: each is an empty in the history) -> ack it (DELETE with
    its popReceipt; see _ack). The message received is whichever the server
    hands out, not necessarily the worker's own. A worker stops at the
    deadline wherever it is; drain() takes what is left. invisibility_s is
    the lease of every receive. phase: record the run as a phase of that
    name. Returns a WorkloadResult."""
    run = history.new_run()
    connects = _Counter()

    def worker(i, deadline):
        name = f"r{run}c{i}"
        rec = Recorder(base_url, key, queue, history, name, account, timeout_s)
        seq = 0
        try:
            while time.monotonic() < deadline:
                # Put until a put is acknowledged: a worker whose put failed
                # would otherwise wait for a message that may not exist (with
                # every worker waiting, the loop would stall). Each try has
                # a body of its own, since a failed put may still exist.
                seq += 1
                status = rec.put(make_body(name, seq))
                _backoff(status)
                if status != 201:
                    continue
                got = []
                while not got and time.monotonic() < deadline:
                    status, got = rec.get_next(invisibility_s)
                    _backoff(status)
                for d in got:
                    _ack(rec, d)
        finally:
            connects.add(rec.connects)
            rec.close()

    stuck, crashes, took = _run_threads([lambda d, i=i: worker(i, d) for i in range(conns)], duration_s, timeout_s,
                                        history, phase)
    return WorkloadResult(conns, took, stuck, crashes, connects.n)


def producers_consumers(base_url, key, queue, producers, consumers, duration_s, history, max_unacked=500,
                        account="dev", invisibility_s=60, timeout_s=30.0, receive_batch=10, phase=None):
    """producers threads put unique 100-byte bodies in a loop, pausing so
    that at most max_unacked puts are not yet acked; consumers threads receive
    (even-numbered ones GET /messages/next, odd ones POST /messages/receive
    with maxMessages=receive_batch, no long poll) and ack each message they
    got. Every thread has its own keep-alive connection; all stop at the
    deadline. phase: record the run as a phase of that name. Returns a
    WorkloadResult."""
    run = history.new_run()
    cond = threading.Condition()
    connects = _Counter()
    # Puts not yet acked: counted up before a put is sent (so that many
    # producers cannot overshoot the bound together), down when the put is
    # refused or its message is acked. A put with an unknown outcome stays
    # counted unless its message turns up and is acked.
    unacked = [0]

    def producer(i, deadline):
        name = f"r{run}p{i}"
        rec = Recorder(base_url, key, queue, history, name, account, timeout_s)
        seq = 0
        try:
            while True:
                with cond:
                    cond.wait_for(lambda: unacked[0] < max_unacked or time.monotonic() >= deadline,
                                  timeout=max(0.0, deadline - time.monotonic()))
                    if time.monotonic() >= deadline:
                        return
                    unacked[0] += 1
                seq += 1
                status = rec.put(make_body(name, seq))
                if status != 201 and not (status in (TIMEOUT, ERROR) or status >= 500):
                    with cond:
                        unacked[0] -= 1  # determinately not stored
                _backoff(status)
        finally:
            connects.add(rec.connects)
            rec.close()

    def consumer(i, deadline):
        rec = Recorder(base_url, key, queue, history, f"r{run}k{i}", account, timeout_s)
        try:
            while time.monotonic() < deadline:
                if i % 2 == 0:
                    status, got = rec.get_next(invisibility_s)
                else:
                    status, got = rec.receive(receive_batch, invisibility_s, 0)
                _backoff(status)
                for d in got:
                    if _ack(rec, d) == 204:
                        with cond:
                            unacked[0] -= 1
                            cond.notify_all()
        finally:
            connects.add(rec.connects)
            rec.close()

    targets = [lambda d, i=i: producer(i, d) for i in range(producers)]
    targets += [lambda d, i=i: consumer(i, d) for i in range(consumers)]
    stuck, crashes, took = _run_threads(targets, duration_s, timeout_s, history, phase)
    return WorkloadResult(producers + consumers, took, stuck, crashes, connects.n)


@dataclasses.dataclass
class DrainResult:
    done: bool  # every acknowledged put delivered and acked, then an empty answer
    unsettled: set  # (queue, messageId) still not delivered and acked
    receives: int
    acked: int
    waited_s: float


def drain(base_url, key, queue, history, deadline_s=60.0, account="dev", invisibility_s=30, timeout_s=30.0,
          batch=32, wait_s=1, phase="drain"):
    """Receives (POST /messages/receive, long polls of wait_s) and acks, on
    one connection, recording into history, until every put of queue answered
    201 has been delivered and acked (an ack with an unknown outcome counts)
    and then a receive answers empty (so messages of indeterminate puts are
    taken too), or until deadline_s passes. Waiting for a message that is
    leased or late is a long poll, not a sleep. Returns a DrainResult."""
    t0 = time.monotonic()
    deadline = t0 + deadline_s
    rec = Recorder(base_url, key, queue, history, f"r{history.new_run()}drain", account, timeout_s)
    receives = acked = 0
    done = False
    try:
        with (history.phase(phase) if phase else contextlib.nullcontext()):
            while time.monotonic() < deadline:
                settled = not history.unsettled(queue)
                status, got = rec.receive(batch, invisibility_s, wait_s)
                receives += 1
                if status in (200, 204) and not got and settled:
                    done = True
                    break
                _backoff(status)
                for d in got:
                    if _ack(rec, d) == 204:
                        acked += 1
    finally:
        rec.close()
    return DrainResult(done, history.unsettled(queue), receives, acked, time.monotonic() - t0)


@dataclasses.dataclass
class StatsResult:
    ok: bool
    stats: dict  # the last statistics read (or {"error": ...})
    waited_s: float


def await_idle_stats(base_url, key, queue, timeout_s=30.0, account="dev", expect=None, interval_s=0.2):
    """Polls GET /{queue}/statistics until every field of expect (default:
    size, visible, inFlight and delayed all 0: an idle, drained queue) has
    its value, or timeout_s passes. API.md: counts may lag but must converge
    to exact values when the queue is idle. Returns a StatsResult."""
    expect = dict(expect or {"size": 0, "visible": 0, "inFlight": 0, "delayed": 0})
    c = SluiceClient(base_url, account=account, key=key)
    c.s.trust_env = False
    t0 = time.monotonic()
    last = {}
    try:
        while True:
            try:
                r = c.stats(queue)
                last = _json(r) if r.status_code == 200 else {"error": f"status {r.status_code}: {r.text[:200]}"}
            except requests.RequestException as e:
                last = {"error": repr(e)}
            if all(last.get(k) == v for k, v in expect.items()):
                return StatsResult(True, last, time.monotonic() - t0)
            if time.monotonic() - t0 >= timeout_s:
                return StatsResult(False, last, time.monotonic() - t0)
            time.sleep(interval_s)
    finally:
        c.close()


# --- the checker --------------------------------------------------------------


@dataclasses.dataclass
class PhaseStats:
    name: str
    start: float
    end: float
    puts_ok: int = 0
    receives: int = 0  # determinate receives (messages or empty)
    deliveries: int = 0  # messages delivered
    empties: int = 0
    acks_ok: int = 0  # successful acks: completed lifecycles
    indeterminate: int = 0  # operations with an unknown outcome
    refused: int = 0  # other determinate statuses (409, 429, other 4xx)
    longest_stall_s: float = 0.0  # longest stretch with no successful put or ack

    @property
    def duration_s(self):
        return max(self.end - self.start, 1e-9)

    @property
    def ops(self):
        return self.puts_ok + self.receives + self.acks_ok + self.indeterminate + self.refused

    @property
    def ops_per_s(self):
        return self.ops / self.duration_s

    @property
    def lifecycles_per_s(self):
        return self.acks_ok / self.duration_s

    def summary(self):
        return (f"{self.name}: {self.duration_s:.1f} s, {self.lifecycles_per_s:.0f} lifecycles/s, "
                f"{self.ops_per_s:.0f} ops/s, puts {self.puts_ok}, deliveries {self.deliveries}, "
                f"acks {self.acks_ok}, empties {self.empties}, indeterminate {self.indeterminate}, "
                f"refused {self.refused}, longest stall {self.longest_stall_s:.2f} s, "
                f"from {self.start:.2f} to {self.end:.2f}")


VIOLATIONS = ("lost", "delivered_after_ack", "duplicate_id", "false_empty", "unknown", "altered", "unexpected",
              "lease_lost")


@dataclasses.dataclass
class CheckResult:
    visible_bound_s: float
    # counts
    puts: int = 0
    puts_ok: int = 0
    puts_indeterminate: int = 0
    receives: int = 0
    deliveries: int = 0
    redeliveries: int = 0  # deliveries of a message after its first
    empties: int = 0
    acks_ok: int = 0
    acks_stale: int = 0
    indeterminate: int = 0
    # violations: lists of dicts that say what and when
    lost: list = dataclasses.field(default_factory=list)
    delivered_after_ack: list = dataclasses.field(default_factory=list)
    duplicate_id: list = dataclasses.field(default_factory=list)
    false_empty: list = dataclasses.field(default_factory=list)
    unknown: list = dataclasses.field(default_factory=list)
    altered: list = dataclasses.field(default_factory=list)
    unexpected: list = dataclasses.field(default_factory=list)
    lease_lost: list = dataclasses.field(default_factory=list)
    longest_false_empty_s: float = 0.0
    max_empty_staleness_s: float = 0.0
    longest_stall_s: float = 0.0
    phases: list = dataclasses.field(default_factory=list)

    def counts(self):
        """Violation kind -> number."""
        return {k: len(getattr(self, k)) for k in VIOLATIONS}

    @property
    def ok(self):
        return not any(self.counts().values())

    def summary(self, examples=3):
        lines = [
            f"puts {self.puts} (201: {self.puts_ok}, indeterminate: {self.puts_indeterminate}), "
            f"receives {self.receives} (empties {self.empties}), deliveries {self.deliveries} "
            f"(redeliveries {self.redeliveries}), acks 204: {self.acks_ok}, 409: {self.acks_stale}, "
            f"indeterminate ops {self.indeterminate}",
            f"longest false empty {self.longest_false_empty_s:.2f} s (bound {self.visible_bound_s} s), "
            f"longest empty staleness {self.max_empty_staleness_s:.2f} s, longest stall {self.longest_stall_s:.2f} s",
            "violations: " + ", ".join(f"{k} {n}" for k, n in self.counts().items()),
        ]
        if self.false_empty:
            missed = {}
            for v in self.false_empty:
                missed.setdefault((v["queue"], v["messageId"]), v)
            lines.append(f"false empties name {len(missed)} distinct messages (the oldest they missed): "
                         + ", ".join(f"{k[1]} (put {v['put_at']:.2f}, taken "
                                     + ("never" if v["taken_at"] is None else f"{v['taken_at']:.2f}") + ")"
                                     for k, v in list(missed.items())[:5]))
        for k in VIOLATIONS:
            for v in getattr(self, k)[:examples]:
                lines.append(f"  {k}: {v}")
        lines += ["  " + p.summary() for p in self.phases]
        return "\n".join(lines)


def check(history, visible_bound_s=5.0, queue=None, lease_s=30.0):
    """Checks a history (a History or a list of Ops) as the module docstring
    says; queue: only the operations of that queue; lease_s: at most the
    shortest invisibility the workload leased for (g). Returns a
    CheckResult."""
    ops = history.ops() if isinstance(history, History) else list(history)
    phases = history.phases() if isinstance(history, History) else []
    if queue is not None:
        ops = [o for o in ops if o.queue == queue]
    res = CheckResult(visible_bound_s)

    put_bodies = set()  # every body any put sent
    by_id = {}  # (queue, id) -> the first 201 put that returned it
    first_delivery = {}  # (queue, id) -> invoke of the first receive that delivered it
    first_ack = {}  # (queue, id) -> complete of the first 204 ack
    deliveries = []  # (receive op, Delivery)
    for o in ops:
        if o.done and o.status not in ALLOWED[o.kind] and o.status not in (TIMEOUT, ERROR):
            res.unexpected.append({"kind": o.kind, "status": o.status, "worker": o.worker, "at": o.invoke})
        if o.indeterminate:
            res.indeterminate += 1
        if o.kind == "put":
            res.puts += 1
            put_bodies.add(o.body)
            if o.status == 201:
                res.puts_ok += 1
                k = (o.queue, o.message_id)
                if k in by_id and by_id[k].body != o.body:
                    res.duplicate_id.append({"queue": o.queue, "messageId": o.message_id,
                                             "bodies": [by_id[k].body.rstrip("."), o.body.rstrip(".")]})
                by_id.setdefault(k, o)
            elif o.indeterminate:
                res.puts_indeterminate += 1
        elif o.kind == "receive":
            if o.status in (200, 204):
                res.receives += 1
                res.empties += not o.messages
            for d in o.messages:
                k = (o.queue, d.message_id)
                res.deliveries += 1
                if k in first_delivery:
                    res.redeliveries += 1
                    first_delivery[k] = min(first_delivery[k], o.invoke)
                else:
                    first_delivery[k] = o.invoke
                deliveries.append((o, d))
        elif o.kind == "ack":
            if o.status == 204:
                res.acks_ok += 1
                k = (o.queue, o.message_id)
                first_ack[k] = min(first_ack.get(k, o.complete), o.complete)
            elif o.status == 409:
                res.acks_stale += 1

    # a) lost, c) duplicate_id (above)
    for k, o in by_id.items():
        if k not in first_delivery:
            res.lost.append({"queue": k[0], "messageId": k[1], "body": o.body.rstrip("."), "put_at": o.complete})
    # b) delivered_after_ack, e) unknown / altered
    for o, d in deliveries:
        k = (o.queue, d.message_id)
        if k in first_ack and o.invoke > first_ack[k]:
            res.delivered_after_ack.append({"queue": o.queue, "messageId": d.message_id, "acked_at": first_ack[k],
                                            "received_at": o.invoke, "deliveryCount": d.delivery_count})
        if d.body not in put_bodies:
            res.unknown.append({"queue": o.queue, "messageId": d.message_id, "body": (d.body or "")[:120],
                                "received_at": o.invoke})
        elif k in by_id and by_id[k].body != d.body:
            res.altered.append({"queue": o.queue, "messageId": d.message_id, "put": by_id[k].body.rstrip("."),
                                "delivered": (d.body or "").rstrip(".")[:120]})
    # d) false_empty
    _false_empties(ops, by_id, first_delivery, res)
    # g) lease_lost: the receipt of a delivery answered 409 within its lease
    delivered_at = {}  # pop receipt -> invoke of the receive that gave it
    for o, d in deliveries:
        if o.status == 200 and d.pop_receipt:
            delivered_at[d.pop_receipt] = o.invoke
    unsure = set()  # receipts an ack may have used already
    for o in sorted((o for o in ops if o.kind == "ack"), key=lambda o: o.invoke):
        if o.status == 409 and o.receipt not in unsure and o.receipt in delivered_at:
            if o.invoke < delivered_at[o.receipt] + lease_s:
                res.lease_lost.append({"queue": o.queue, "messageId": o.message_id, "received_at":
                                       delivered_at[o.receipt], "acked_at": o.invoke})
        if o.indeterminate or o.status == 204:
            unsure.add(o.receipt)
    # figures
    res.phases = [_phase_stats(ops, p.name, p.start, p.end if p.end is not None else time.monotonic())
                  for p in phases]
    done = [o for o in ops if o.done]
    if res.phases:
        res.longest_stall_s = max(p.longest_stall_s for p in res.phases)
    elif done:
        res.longest_stall_s = _longest_stall(done, min(o.invoke for o in done), max(o.complete for o in done))
    return res


def _false_empties(ops, by_id, first_delivery, res):
    """Finds the false empties (module docstring, d).

    Per queue: each message of a 201 put is visible from vf (its put's
    completion) until vu (the invocation of the first determinate receive
    that delivered it, or inf). The indeterminate receives, sorted by
    invocation, with the running sum of how many messages each may have
    taken (its capacity), say how many visible messages an empty receive
    [ri, rc] may have missed for a good reason: K, the capacity of those
    invoked before rc. Its staleness is ri minus the (K+1)-th least vf among
    the messages with vu >= rc and vf < ri: the adversary's K receives took
    the K oldest, so that one was certainly visible. A sweep: empties by rc
    descending, messages admitted by vu descending into a list sorted by
    vf."""
    bound = res.visible_bound_s
    vis, blind, empties = {}, {}, {}
    for k, p in by_id.items():
        vis.setdefault(k[0], []).append((first_delivery.get(k, float("inf")), p.complete, k[1]))
    for o in ops:
        if o.kind == "receive" and o.indeterminate:
            blind.setdefault(o.queue, []).append((o.invoke, max(1, o.max_messages or 1)))
        elif o.empty:
            empties.setdefault(o.queue, []).append(o)
    for q, es in empties.items():
        b = sorted(blind.get(q, []))
        b_at = [t for t, _ in b]
        b_cap = [0]  # b_cap[i]: capacity of the first i indeterminate receives
        for _, n in b:
            b_cap.append(b_cap[-1] + n)
        ms = sorted(vis.get(q, []), reverse=True)  # by vu, descending
        es.sort(key=lambda o: o.complete, reverse=True)
        # The admitted messages (vu >= rc) as a Fenwick tree of counts over
        # their rank in (vf, messageId, vu) order, so that the k-th least
        # is found in O(log n): inserting into a sorted list made the sweep
        # quadratic, and an hour's soak (1.8 million puts) never finished.
        n = len(ms)
        order = sorted(range(n), key=lambda i: (ms[i][1], ms[i][2], ms[i][0]))
        rank = [0] * n
        for r, i in enumerate(order):
            rank[i] = r + 1
        tree = [0] * (n + 1)
        admitted = 0
        j = 0
        for e in es:
            while j < n and ms[j][0] >= e.complete:
                i = rank[j]
                while i <= n:
                    tree[i] += 1
                    i += i & -i
                admitted += 1
                j += 1
            k = b_cap[bisect.bisect_left(b_at, e.complete)]
            if k >= admitted:
                continue
            pos, left, step = 0, k + 1, 1 << n.bit_length()
            while step:  # the last rank whose prefix count is below k + 1
                if pos + step <= n and tree[pos + step] < left:
                    pos += step
                    left -= tree[pos]
                step >>= 1
            vu, vf, mid = ms[order[pos]]
            if vf < e.invoke:
                stale = e.invoke - vf
                res.max_empty_staleness_s = max(res.max_empty_staleness_s, stale)
                if stale > bound:
                    res.longest_false_empty_s = max(res.longest_false_empty_s, stale)
                    res.false_empty.append({"queue": q, "worker": e.worker, "at": e.invoke,
                                            "visible_s": round(stale, 3), "messageId": mid,
                                            "excused": k, "put_at": vf,
                                            "taken_at": None if vu == float("inf") else vu})
    res.false_empty.sort(key=lambda v: v["at"])


def _longest_stall(ops, start, end):
    """The longest stretch of [start, end] in which no put got 201 and no
    ack got 204."""
    ts = sorted(o.complete for o in ops
                if start <= o.complete <= end and ((o.kind == "put" and o.status == 201)
                                                   or (o.kind == "ack" and o.status == 204)))
    edges = [start] + ts + [end]
    return max(b - a for a, b in zip(edges, edges[1:]))


def _phase_stats(ops, name, start, end):
    """The figures of the operations that completed in [start, end]."""
    s = PhaseStats(name, start, end)
    mine = [o for o in ops if o.done and start <= o.complete <= end]
    for o in mine:
        if o.indeterminate:
            s.indeterminate += 1
        elif o.kind == "put":
            if o.status == 201:
                s.puts_ok += 1
            else:
                s.refused += 1
        elif o.kind == "receive":
            if o.status in (200, 204):
                s.receives += 1
                s.deliveries += len(o.messages)
                s.empties += not o.messages
            else:
                s.refused += 1
        elif o.kind == "ack":
            if o.status == 204:
                s.acks_ok += 1
            else:
                s.refused += 1
    s.longest_stall_s = _longest_stall(mine, start, end)
    return s
