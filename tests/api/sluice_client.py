"""Black-box test helpers for Sluice: start the real binary, talk HTTP to it.

SluiceServer starts `build/sluice dev --port 0 --admin-port 0 --data DIR`
with a known admin token (SLUICE_ADMIN_TOKEN), waits for the "listening on
http://HOST:PORT" lines of both APIs, reads the dev account's primary key from
the banner and stops the process by its PID. SluiceClient wraps the HTTP API
of API.md; every method returns the raw `requests.Response`, so tests assert
on what a user of the API would see. AdminClient wraps the admin API.

Hooks:
- the backend: SLUICE_TEST_BACKEND=sqlite (default) or cassandra, which
  starts the server with CONTACT_POINTS, CASSANDRA_PORT and KEYSPACE in its
  environment (see SluiceServer._backend_env). The node's port comes from
  SLUICE_CASSANDRA_PORT (scripts/test.sh starts one node for the run and
  sets it), else CASSANDRA_PORT, else 9042. Every SluiceServer gets a fresh
  keyspace of its own unless it is given one (several nodes on one
  keyspace) or SLUICE_TEST_KEYSPACE names one; a server restarted on the
  same object keeps its keyspace, as it keeps its data directory;
- auth: every request's headers pass through SluiceClient._auth_headers, the
  one place where the `Authorization: Key ...` header of the client's
  account is added (tests of the other schemes build their own headers);
- TLS: the scheme of each API comes from its "listening on" line (http or
  https); `verify=` (a CA file) is what the clients then check the server's
  certificate against (tests/api/test_https.py);
- process: `args=` adds command-line flags, `env=` environment variables,
  `preexec_fn=` runs in the child before exec (e.g. to lower RLIMIT_NOFILE).
"""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import requests

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.environ.get("SLUICE_BIN", os.path.join(REPO, "build", "sluice"))
BACKEND = os.environ.get("SLUICE_TEST_BACKEND", "sqlite")
CASSANDRA_HOST = os.environ.get("SLUICE_TEST_CONTACT_POINTS", "127.0.0.1")
CASSANDRA_PORT = int(os.environ.get("SLUICE_CASSANDRA_PORT") or os.environ.get("SLUICE_TEST_CASSANDRA_PORT")
                     or os.environ.get("CASSANDRA_PORT") or 9042)
# How long a server may take from exec to GET /health 200. On Cassandra
# `sluice dev` creates its keyspace and tables first, which takes seconds.
START_TIMEOUT = 20.0 if BACKEND == "sqlite" else 120.0

# Queue options that make the repair worker fast, so tests need not wait.
FAST_QUEUE_OPTS = {"repairWorkerPollSeconds": 1, "repairWorkerBucketFinalizeTimeSeconds": 1}

DEFAULT_QUEUE_OPTS = {
    "bucketSize": 20,
    "maxDeliveryCount": 5,
    "dlqName": None,
    "repairWorkerPollSeconds": 5,
    "repairWorkerBucketFinalizeTimeSeconds": 15,
    "deleteBucketsAfterFinalize": True,
    "retentionSeconds": 1209600,
    "strictFifo": False,
    "visibilityTimeoutSeconds": 30,
    "delaySeconds": 0,
    "receiveWaitSeconds": 0,
    "maximumMessageBytes": None,
}

MSG_LIMIT = 1024 * 1024
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

# Servers currently running, so that a failing test's report can show their
# log (see tests/conftest.py).
LIVE_SERVERS = []
# Servers closed during the current test (tests/conftest.py clears it as
# each test begins): a test that closes its servers in a finally clause
# still gets their log in its report when it fails.
CLOSED_SERVERS = []

_LISTEN_RE = re.compile(r"listening on (https?)://([^\s:/]+|\[[^\]]+\]):(\d+)")
_KEY_RE = re.compile(r"^\s*primary key:\s*([A-Za-z0-9_-]{86})\s*$")


def read_to_close(sock):
    """Reads a raw socket until the peer closes (or resets) it: (data, True),
    or (data, False) when the socket's timeout passes first."""
    data = b""
    try:
        while True:
            d = sock.recv(65536)
            if not d:
                return data, True
            data += d
    except ConnectionResetError:
        return data, True
    except socket.timeout:
        return data, False


def await_until(fn, timeout=10.0, interval=0.05, desc="condition"):
    """Calls fn until it returns a truthy value and returns that value.
    Raises AssertionError naming desc and fn's last result at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {desc}; last value: {last!r}")
        time.sleep(interval)


def queue_depth(srv, q, account="dev"):
    """The queue's depth as GET /metrics on srv's admin port has it:
    {"visible", "inFlight", "delayed", "oldestMessageAgeSeconds"}, or None
    while the node has not counted the queue yet."""
    r = requests.get(srv.admin_url + "/metrics", headers={"Authorization": "Bearer " + srv.admin_token},
                     timeout=10, verify=False)
    assert r.status_code == 200, describe(r)
    names = {"visible": "visible", "in_flight": "inFlight", "delayed": "delayed"}
    out = {}
    want = f'account="{account}",queue="{q}"'
    for line in r.text.splitlines():
        if line.startswith("sluice_queue_messages{" + want + ",state="):
            state = line.split('state="', 1)[1].split('"', 1)[0]
            out[names[state]] = int(line.rsplit(" ", 1)[1])
        elif line.startswith("sluice_queue_oldest_message_age_seconds{" + want + "}"):
            out["oldestMessageAgeSeconds"] = int(line.rsplit(" ", 1)[1])
    return out if len(out) == 4 else None


def store_reads(srv, table="messages"):
    """The reads (gets and slices) of table's rows that srv sent to its store
    so far, from sluice_store_statements_total in GET /metrics."""
    r = requests.get(srv.admin_url + "/metrics", headers={"Authorization": "Bearer " + srv.admin_token},
                     timeout=10, verify=False)
    assert r.status_code == 200, describe(r)
    n = 0
    for kind in ("get", "slice"):
        line = f'sluice_store_statements_total{{table="{table}",kind="{kind}"}} '
        n += sum(int(x[len(line):]) for x in r.text.splitlines() if x.startswith(line))
    return n


def await_depth(srv, c, q, timeout=20.0, account="dev", **expected):
    """Waits until the depth in GET /metrics equals the queue's statistics
    and, for each field given, expected.
    Returns the depth."""
    last = {}

    def check():
        d = queue_depth(srv, q, account)
        st = c.stats_json(q)
        d2 = queue_depth(srv, q, account)
        last["d"], last["s"] = d, st
        if d is None or d != d2:  # moving under the read: look again
            return False
        same = all(d[k] == st[k] for k in ("visible", "inFlight", "delayed"))
        age = abs(d["oldestMessageAgeSeconds"] - st["oldestMessageAgeSeconds"]) <= 1
        return same and age and all(d.get(k) == v for k, v in expected.items()) and d

    try:
        return await_until(check, timeout=timeout, interval=0.2, desc=f"the depth of {q}")
    except AssertionError:
        raise AssertionError(f"the depth of {q} in GET /metrics did not come to equal its statistics"
                             f"{' and ' + str(expected) if expected else ''} within {timeout} s; "
                             f"last: metrics {last.get('d')}, statistics {last.get('s')}")


def sleep_until(t):
    """Waits until time.monotonic() >= t. Used only where the condition *is*
    the passing of time (a lease of N seconds has run out), never to hope
    that the server has caught up."""
    while True:
        d = t - time.monotonic()
        if d <= 0:
            return
        time.sleep(min(d, 0.2))


def new_keyspace(prefix="sluice_t"):
    """A fresh Cassandra keyspace name (letters, digits, _; at most 48)."""
    return f"{prefix}_{uuid.uuid4().hex[:16]}"[:48]


def unique_name(prefix="q"):
    """A queue name valid per API.md ([A-Za-z0-9_.-]{1,80}) and unique."""
    prefix = re.sub(r"[^A-Za-z0-9_.-]", "-", prefix)[:60]
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def describe(resp):
    """A short text for assertion messages."""
    try:
        body = resp.text
    except Exception:  # pragma: no cover
        body = "<unreadable>"
    return f"{resp.request.method} {resp.request.path_url} -> {resp.status_code} {body[:400]!r}"


def assert_status(resp, *statuses):
    assert resp.status_code in statuses, f"expected {statuses}, got {describe(resp)}"
    return resp


def assert_error(resp, *statuses):
    """Asserts an error response of API.md: one of statuses, a JSON body
    {"error": {"code": str, "message": str, "requestId": str}}. Returns the
    error object."""
    assert resp.status_code in statuses, f"expected {statuses}, got {describe(resp)}"
    ctype = resp.headers.get("Content-Type", "")
    assert ctype.startswith("application/json"), f"error body is not JSON (Content-Type {ctype!r}): {describe(resp)}"
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"error body does not parse as JSON: {describe(resp)}")
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"no error object: {describe(resp)}"
    err = body["error"]
    for k in ("code", "message", "requestId"):
        assert isinstance(err.get(k), str) and err[k], f"error.{k} missing or empty: {describe(resp)}"
    return err


class SluiceServer:
    """One server process over one data directory. start() may be called
    again after stop() or kill() to restart it on the same data."""

    def __init__(self, data_dir, name="sluice", keyspace=None, cassandra_port=None, env=None, args=None,
                 preexec_fn=None, verify=None):
        self.data_dir = str(data_dir)
        self.name = name
        self.cassandra_port = cassandra_port or CASSANDRA_PORT
        self.extra_env = dict(env or {})
        self.extra_args = [str(a) for a in (args or [])]
        self.preexec_fn = preexec_fn
        self.verify = verify  # CA file for https (None: requests' default)
        self.proc = None
        self.port = None
        self.host = None
        self.scheme = "http"
        self.admin_port = None
        self.admin_scheme = "http"
        self.key = None  # the dev account's primary key, from the banner
        self.admin_token = "test-admin-" + uuid.uuid4().hex
        self.lines = []  # every output line of every run, prefixed by run number
        # Standard output alone (the banner): the two streams are read by two
        # threads, so in self.lines a log line may fall between its lines.
        self.stdout_lines = []
        self.runs = 0
        self._lock = threading.Lock()
        self._readers = []
        # The store identity must survive restarts, so it is fixed here.
        self.keyspace = keyspace or os.environ.get("SLUICE_TEST_KEYSPACE") or new_keyspace()
        # A keyspace made for this server alone is dropped when it closes:
        # hundreds of keyspaces of 30-odd tables each would load the test
        # node's heap until its pauses fail requests.
        self.owns_keyspace = not keyspace and not os.environ.get("SLUICE_TEST_KEYSPACE")

    # --- backend hook -----------------------------------------------------

    def _backend_env(self):
        env = dict(os.environ)
        if BACKEND == "sqlite":
            # No Cassandra settings means the embedded store (DESIGN.md).
            for k in ("CONTACT_POINTS", "KEYSPACE", "CASSANDRA_PORT"):
                env.pop(k, None)
        elif BACKEND == "cassandra":
            env["CONTACT_POINTS"] = CASSANDRA_HOST
            env["KEYSPACE"] = self.keyspace
            env["CASSANDRA_PORT"] = str(self.cassandra_port)
            # CLUSTER_NAME, DATA_CENTER, USERNAME, PASSWORD, USE_SSL,
            # CONSISTENCY_LEVEL pass through from the environment unchanged.
        else:
            raise RuntimeError(f"unknown SLUICE_TEST_BACKEND {BACKEND!r}")
        env.update(self.extra_env)
        return env

    # --- process control --------------------------------------------------

    def _read(self, stream, run, is_stdout):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self._lock:
                self.lines.append(f"[{self.name} run {run}] {line}")
                if is_stdout:
                    self.stdout_lines.append(line)
                m = _LISTEN_RE.search(line)
                if m and "admin" in line.lower():
                    if self.admin_port is None:
                        self.admin_scheme = m.group(1)
                        self.admin_port = int(m.group(3))
                elif m and self.port is None:
                    self.scheme = m.group(1)
                    self.host = m.group(2)
                    self.port = int(m.group(3))
                m = _KEY_RE.match(line)
                if m and self.key is None:
                    self.key = m.group(1)
        stream.close()

    def start(self, timeout=None):
        timeout = timeout or START_TIMEOUT
        assert self.proc is None, "already running"
        if not os.path.exists(BINARY):
            raise RuntimeError(f"{BINARY} does not exist; run `make build/sluice`")
        os.makedirs(self.data_dir, exist_ok=True)
        self.runs += 1
        self.port = None
        self.admin_port = None
        self.key = None
        args = [BINARY, "dev", "--port", "0", "--admin-port", "0", "--data", self.data_dir] + self.extra_args
        env = self._backend_env()
        env["SLUICE_ADMIN_TOKEN"] = self.admin_token
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            preexec_fn=self.preexec_fn,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(s, self.runs, s is self.proc.stdout), daemon=True)
            for s in (self.proc.stdout, self.proc.stderr)
        ]
        for t in self._readers:
            t.start()
        if self not in LIVE_SERVERS:
            LIVE_SERVERS.append(self)
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                ready = self.port is not None and self.admin_port is not None and self.key is not None
            if ready:
                break
            if self.proc.poll() is not None:
                for t in self._readers:
                    t.join(2)
                rc = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"sluice exited with {rc} before listening:\n" + self.log_tail())
            if time.monotonic() >= deadline:
                self.kill()
                raise RuntimeError(f"sluice printed no 'listening on' line within {timeout} s:\n" + self.log_tail())
            time.sleep(0.02)
        # The line says the socket is bound; /health says the store answers.
        c = self.client()
        await_until(lambda: self._healthy(c), timeout=max(1.0, deadline - time.monotonic()), desc="GET /health 200")
        c.close()
        return self

    def _healthy(self, c):
        try:
            return c.health().status_code == 200
        except requests.RequestException:
            return False

    @property
    def base_url(self):
        host = self.host or "127.0.0.1"
        if host in ("0.0.0.0", "::", "[::]", "*"):
            host = "127.0.0.1"
        return f"{self.scheme}://{host}:{self.port}"

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def _reap(self, timeout):
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def stop(self, timeout=10.0):
        """SIGTERM, wait, SIGKILL if it does not exit. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            if not self._reap(timeout):
                self.proc.send_signal(signal.SIGKILL)
                self._reap(timeout)
        return self._finish()

    def kill(self):
        """SIGKILL: the crash tests' power cut."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self._reap(30)
        return self._finish()

    def _finish(self):
        rc = self.proc.returncode
        for t in self._readers:
            t.join(5)
        self.proc = None
        return rc

    def close(self):
        self.stop()
        if self in LIVE_SERVERS:
            LIVE_SERVERS.remove(self)
            CLOSED_SERVERS.append(self)
        if BACKEND == "cassandra" and self.owns_keyspace and self.runs:
            self.owns_keyspace = False
            try:
                sys.path.insert(0, os.path.join(REPO, "tests", "cassandra"))
                import cql_mini

                cql_mini.query(self.cassandra_port, f'DROP KEYSPACE IF EXISTS "{self.keyspace}"', timeout=60.0)
            except Exception as e:  # noqa: BLE001 - a leftover keyspace only costs the node memory
                print(f"note: could not drop keyspace {self.keyspace}: {e}", file=sys.stderr)

    def log_tail(self, n=60):
        with self._lock:
            return "\n".join(self.lines[-n:])

    @property
    def admin_url(self):
        return f"{self.admin_scheme}://127.0.0.1:{self.admin_port}"

    def client(self, account="dev", key=None):
        """A client of account; the dev account's uses the banner's key
        unless key is given. Other accounts need a key (see AdminClient)."""
        if key is None and account == "dev":
            key = self.key
        return SluiceClient(self.base_url, account=account, key=key, verify=self.verify)

    def admin(self, token=None):
        return AdminClient(self.admin_url, self.admin_token if token is None else token, verify=self.verify)


class SluiceClient:
    """The HTTP API of API.md. Methods return requests.Response. One client
    holds one keep-alive Session; give each thread its own with clone()."""

    def __init__(self, base_url, account="dev", timeout=30.0, key=None, verify=None):
        self.base_url = base_url
        self.account = account
        self.timeout = timeout
        self.key = key
        self.verify = verify
        self.s = requests.Session()

    def clone(self, account=None, key=None):
        """A new session; for another account, with key (or none)."""
        same = account is None or account == self.account
        return SluiceClient(self.base_url, account or self.account, self.timeout, key if key or not same else self.key,
                            verify=self.verify)

    def close(self):
        self.s.close()

    # --- auth hook --------------------------------------------------------

    def _auth_headers(self, method, path, params, body):
        """Headers that authenticate one request: `Authorization: Key <key>`
        of the client's account (none without a key). Added here and nowhere
        else. SLUICE_TEST_AUTHORIZATION, when set, is sent instead."""
        h = os.environ.get("SLUICE_TEST_AUTHORIZATION")
        if h:
            return {"Authorization": h}
        return {"Authorization": f"Key {self.key}"} if self.key else {}

    # --- plumbing ---------------------------------------------------------

    def request(self, method, path, params=None, json=None, data=None, headers=None, timeout=None):
        """path is absolute ("/health") and may contain a query string."""
        h = dict(headers or {})
        body = data
        if json is not None:
            import json as _json

            body = _json.dumps(json).encode()
            h.setdefault("Content-Type", "application/json")
        h.update(self._auth_headers(method, path, params, body))
        # verify per request: a Session's verify loses to REQUESTS_CA_BUNDLE.
        tls = {} if self.verify is None else {"verify": self.verify}
        return self.s.request(
            method, self.base_url + path, params=params, data=body, headers=h, timeout=timeout or self.timeout, **tls
        )

    def qbase(self, account=None):
        return f"/api/v1/accounts/{account or self.account}/queues"

    def qpath(self, q, suffix=""):
        return f"{self.qbase()}/{q}{suffix}"

    # --- operations -------------------------------------------------------

    def health(self):
        return self.request("GET", "/health", timeout=5)

    # --- queues -----------------------------------------------------------

    def create_queue(self, name, error_if_exists=None, **opts):
        body = {"queueName": name}
        body.update(opts)
        params = None if error_if_exists is None else {"errorIfExists": "true" if error_if_exists else "false"}
        return self.request("POST", self.qbase(), params=params, json=body)

    def new_queue(self, prefix="q", **opts):
        """Creates a queue with fast repair settings; asserts 201; returns
        its name."""
        name = unique_name(prefix)
        o = dict(FAST_QUEUE_OPTS)
        o.update(opts)
        r = self.create_queue(name, **o)
        assert r.status_code == 201, f"creating queue {name}: {describe(r)}"
        return name

    def list_queues(self, account=None):
        return self.request("GET", self.qbase(account))

    def get_queue(self, q):
        return self.request("GET", self.qpath(q))

    def delete_queue(self, q):
        return self.request("DELETE", self.qpath(q))

    def stats(self, q):
        return self.request("GET", self.qpath(q, "/statistics"))

    def stats_json(self, q):
        r = self.stats(q)
        assert r.status_code == 200, describe(r)
        return r.json()

    # --- messages (CassieQ routes) ---------------------------------------

    def put(self, q, body, initial_invisibility=None):
        params = None if initial_invisibility is None else {"initialInvisibilitySeconds": initial_invisibility}
        data = body.encode() if isinstance(body, str) else body
        return self.request(
            "POST", self.qpath(q, "/messages"), params=params, data=data,
            headers={"Content-Type": "text/plain; charset=utf-8"},
        )

    def put_ok(self, q, body, initial_invisibility=None):
        r = self.put(q, body, initial_invisibility)
        assert r.status_code == 201, describe(r)
        return r.json()["messageId"]

    def get_next(self, q, invisibility=None):
        params = None if invisibility is None else {"invisibilityTimeSeconds": invisibility}
        return self.request("GET", self.qpath(q, "/messages/next"), params=params)

    def update(self, q, receipt, new_invisibility=None, message=None, body=None):
        if body is None:
            body = {}
            if new_invisibility is not None:
                body["newInvisibilitySeconds"] = new_invisibility
            if message is not None:
                body["message"] = message
        return self.request("PUT", self.qpath(q, "/messages"), params={"popReceipt": receipt}, json=body)

    def ack(self, q, receipt):
        return self.request("DELETE", self.qpath(q, "/messages"), params={"popReceipt": receipt})

    # --- extensions -------------------------------------------------------

    def put_batch(self, q, messages):
        """messages: list of str or of dicts {"message", "delaySeconds", "attributes"}."""
        entries = [m if isinstance(m, dict) else {"message": m} for m in messages]
        return self.request("POST", self.qpath(q, "/messages/batch"), json={"messages": entries})

    def receive(self, q, max_messages=None, invisibility=None, wait=None, timeout=None):
        body = {}
        if max_messages is not None:
            body["maxMessages"] = max_messages
        if invisibility is not None:
            body["invisibilitySeconds"] = invisibility
        if wait is not None:
            body["waitSeconds"] = wait
        return self.request("POST", self.qpath(q, "/messages/receive"), json=body, timeout=timeout)

    def receive_list(self, q, max_messages=None, invisibility=None, wait=None):
        r = self.receive(q, max_messages, invisibility, wait)
        assert r.status_code == 200, describe(r)
        msgs = r.json()["messages"]
        assert isinstance(msgs, list), describe(r)
        return msgs

    def ack_batch(self, q, receipts):
        return self.request("POST", self.qpath(q, "/messages/ack"), json={"popReceipts": list(receipts)})

    def peek(self, q, count=None):
        params = None if count is None else {"count": count}
        return self.request("GET", self.qpath(q, "/messages/peek"), params=params)

    def purge(self, q):
        return self.request("POST", self.qpath(q, "/purge"))

    def redrive(self, dlq, to):
        return self.request("POST", self.qpath(dlq, "/redrive"), json={"to": to})

    # --- convenience for tests ------------------------------------------

    def await_stats(self, q, timeout=15.0, **expected):
        """Waits until the queue's statistics match expected (a subset of
        the QueueStatistics fields); returns the statistics."""
        last = {}

        def check():
            last["s"] = self.stats_json(q)
            return all(last["s"].get(k) == v for k, v in expected.items())

        try:
            await_until(check, timeout=timeout, interval=0.2, desc=f"statistics of {q} to converge to {expected}")
        except AssertionError:
            raise AssertionError(f"statistics of {q} did not converge to {expected} within {timeout} s; last: {last.get('s')}")
        return last["s"]

    def drain(self, q, invisibility=5, timeout=30.0):
        """Receives and acks until nothing is visible; returns the messages."""
        got = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msgs = self.receive_list(q, 32, invisibility)
            if not msgs:
                return got
            for m in msgs:
                assert_status(self.ack(q, m["popReceipt"]), 204)
            got.extend(msgs)
        raise AssertionError(f"queue {q} did not drain within {timeout} s")

    # --- the event log ------------------------------------------------------

    def ebase(self, account=None):
        return f"/api/v1/accounts/{account or self.account}"

    def put_event(self, event, account=None):
        return self.request("POST", self.ebase(account) + "/events", json=event)

    def put_events(self, events, account=None):
        return self.request("POST", self.ebase(account) + "/events/batch", json={"events": events})

    def get_event(self, event_id, account=None):
        return self.request("GET", f"{self.ebase(account)}/events/{event_id}")

    def query_events(self, params=None, account=None):
        """params: a dict or a list of (name, value) pairs (for repeated
        type= and tag=)."""
        return self.request("GET", self.ebase(account) + "/events", params=params)

    def query_all(self, params=None, limit=None):
        """Pages one query to its end through its continuation tokens:
        (events, pages, the range's end)."""
        params = list(params.items() if isinstance(params, dict) else params or [])
        if limit:
            params.append(("limit", str(limit)))
        events, pages, token, end = [], [], None, None
        while True:
            r = assert_status(self.query_events(params + ([("continuation", token)] if token else [])), 200)
            page = r.json()
            pages.append(page)
            events.extend(page["events"])
            assert end is None or page["end"] == end, f"the range's end moved: {end} then {page['end']}"
            end = page["end"]
            token = page["continuation"]
            if token is None:
                return events, pages, end
            assert len(pages) < 10000, "the query does not end"

    def await_readable(self, recorded_at):
        """Waits until queries reach past the time recorded_at (an event's
        recordedAt): at once on the embedded store, within the settle time
        (--event-settle-ms) on Cassandra."""
        def past():
            page = assert_status(self.query_events({"start": recorded_at, "limit": "1"}), 200).json()
            return page["end"] > recorded_at  # both UTC with six fractional digits: they sort as strings
        await_until(past, timeout=30, desc=f"the event log's read horizon to pass {recorded_at}")

    def create_sub(self, name, queue, filter=None, start=None, account=None, **extra):
        body = {"subscriptionName": name, "queueName": queue, **extra}
        if filter is not None:
            body["filter"] = filter
        if start is not None:
            body["startFrom"] = start
        return self.request("POST", self.ebase(account) + "/subscriptions", json=body)

    def get_sub(self, name, account=None):
        return self.request("GET", f"{self.ebase(account)}/subscriptions/{name}")

    def list_subs(self, account=None):
        return self.request("GET", self.ebase(account) + "/subscriptions")

    def delete_sub(self, name, account=None):
        return self.request("DELETE", f"{self.ebase(account)}/subscriptions/{name}")

    def await_sub(self, name, desc, pred, timeout=30):
        """Waits until pred(the Subscription) holds; returns it."""
        last = {}

        def check():
            last["s"] = assert_status(self.get_sub(name), 200).json()
            return pred(last["s"])

        try:
            await_until(check, timeout=timeout, interval=0.1, desc=desc)
        except AssertionError:
            raise AssertionError(f"subscription {name}: {desc} not within {timeout} s; last: {last.get('s')}")
        return last["s"]

    def collect_events(self, q, ids, timeout=30, invisibility=30):
        """Receives and acks from q until every event id in ids has come
        (as a subscription puts them: the StoredEvent as the body, ce-id
        among the attributes); returns the messages in the order received,
        duplicates included."""
        want, got, msgs = set(ids), set(), []

        def more():
            for m in self.receive_list(q, 32, invisibility):
                msgs.append(m)
                got.add(m["attributes"].get("ce-id"))
                assert_status(self.ack(q, m["popReceipt"]), 204)
            return want <= got

        await_until(more, timeout=timeout, interval=0.05,
                    desc=f"{len(want - got)} of {len(want)} events to arrive in queue {q}")
        return msgs

    def eventlog(self, retention=None, account=None):
        if retention is None:
            return self.request("GET", self.ebase(account) + "/eventlog")
        return self.request("PUT", self.ebase(account) + "/eventlog", json={"retentionSeconds": retention})


class AdminClient:
    """The admin API of API.md (Bearer token). Methods return
    requests.Response."""

    BASE = "/admin/api/v1/accounts"

    def __init__(self, base_url, token, timeout=30.0, verify=None):
        self.base_url = base_url
        self.token = token
        self.timeout = timeout
        self.verify = verify
        self.s = requests.Session()

    def close(self):
        self.s.close()

    def request(self, method, path, json=None, headers=None, data=None):
        h = {} if self.token is None else {"Authorization": f"Bearer {self.token}"}
        h.update(headers or {})
        tls = {} if self.verify is None else {"verify": self.verify}
        return self.s.request(method, self.base_url + path, json=json, data=data, headers=h, timeout=self.timeout,
                              **tls)

    def create_account(self, name):
        return self.request("POST", self.BASE, json={"accountName": name})

    def new_account(self, prefix="acct"):
        """Creates an account; asserts 201; returns (name, primary key)."""
        name = unique_name(prefix)
        r = self.create_account(name)
        assert r.status_code == 201, describe(r)
        return name, r.json()["keys"]["primary"]

    def list_accounts(self):
        return self.request("GET", self.BASE)

    def get_account(self, name):
        return self.request("GET", f"{self.BASE}/{name}")

    def delete_account(self, name):
        return self.request("DELETE", f"{self.BASE}/{name}")

    def create_key(self, account, key_name):
        return self.request("POST", f"{self.BASE}/{account}/keys", json={"keyName": key_name})

    def delete_key(self, account, key_name):
        return self.request("DELETE", f"{self.BASE}/{account}/keys/{key_name}")

    def signed_url(self, account, **body):
        return self.request("POST", f"{self.BASE}/{account}/signedUrls", json=body)
