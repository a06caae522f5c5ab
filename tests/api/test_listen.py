"""Listening and accepting: the server accepts connections on a thread of its
own and hands them to the HTTP workers in turn (src/http/server.c). What a
client can see of that: a burst of connections, many more than workers, is
served in full; a port that is taken is a clear error at start-up; an IPv6
address works like an IPv4 one."""

import collections
import os
import socket
import subprocess

import pytest

from sluice_client import BACKEND, BINARY, SluiceServer, assert_status

BURST = 96  # connections opened at once, against 2 workers


@pytest.fixture
def few_workers(tmp_path):
    srv = SluiceServer(tmp_path / "data", name="few-workers", env={"SLUICE_THREADS": "2"})
    srv.start()
    yield srv
    srv.close()


def http(sock, method, path, key, body=b""):
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Key {key}\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)


def read_response(f):
    """Reads one HTTP/1.1 response from a socket file; returns (status, body)."""
    status = int(f.readline().split()[1])
    length = 0
    while True:
        line = f.readline().strip()
        if not line:
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, f.read(length)


def test_a_burst_of_connections_beyond_the_workers_is_served(few_workers):
    """96 connections opened before any of them sends a byte, on a server with
    2 HTTP workers: every one is accepted, and on every one a put and then a
    receive succeed, on the same (kept-alive) connection."""
    srv = few_workers
    c = srv.client()
    q = c.new_queue("burst")
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=30) for _ in range(BURST)]
    try:
        files = [s.makefile("rb") for s in socks]
        path = f"/api/v1/accounts/dev/queues/{q}/messages"
        for i, s in enumerate(socks):
            http(s, "POST", path, srv.key, f"m{i}".encode())
        for i, f in enumerate(files):
            status, body = read_response(f)
            assert status == 201, f"connection {i}: put answered {status}: {body[:200]!r}"
        for s in socks:
            http(s, "GET", path + "/next?invisibilityTimeSeconds=60", srv.key)
        got = set()
        for i, f in enumerate(files):
            status, body = read_response(f)
            assert status == 200, f"connection {i}: receive answered {status}: {body[:200]!r}"
            got.add(body)
        assert len(got) == BURST, "two connections received the same message"
    finally:
        for s in socks:
            s.close()
    c.close()


def test_store_routes_beyond_the_store_threads_are_all_served(tmp_path):
    """With one store thread, 64 connections that each ask for a queue's
    statistics and definition at once (routes that read the store, so they
    queue for that thread) are all answered, in order on each connection,
    and puts and receives keep working beside them."""
    srv = SluiceServer(tmp_path / "data", name="one-store-thread",
                       env={"SLUICE_THREADS": "2", "SLUICE_STORE_THREADS": "1"})
    srv.start()
    socks = []
    try:
        c = srv.client()
        q = c.new_queue("pool")
        assert_status(c.put(q, "before"), 201)
        base = f"/api/v1/accounts/dev/queues/{q}"
        socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=30) for _ in range(64)]
        files = [s.makefile("rb") for s in socks]
        for s in socks:
            http(s, "GET", base + "/statistics", srv.key)
            http(s, "GET", base, srv.key)
        assert_status(c.put(q, "beside"), 201)
        for i, f in enumerate(files):
            for what in ("statistics", "definition"):
                status, body = read_response(f)
                assert status == 200, f"connection {i}: {what} answered {status}: {body[:200]!r}"
                assert (b'"queueName"' in body) == (what == "definition"), (what, body[:200])
        r = assert_status(c.receive(q, 10, 30, 0), 200)
        assert sorted(m["message"] for m in r.json()["messages"]) == ["before", "beside"]
        c.close()
    finally:
        for s in socks:
            s.close()
        srv.close()


def test_a_bad_thread_count_is_a_clear_error(tmp_path):
    """--store-threads 0 is refused at start-up, naming the setting."""
    p = subprocess.run([BINARY, "dev", "--port", "0", "--admin-port", "0", "--store-threads", "0",
                        "--data", str(tmp_path / "d")], stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode == 2, out
    assert "store_threads" in out or "--store-threads" in out, out


def test_a_port_in_use_is_a_clear_error(tmp_path):
    """Starting on a port another process listens on exits at once with a
    non-zero status and names the address, instead of running deaf."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    srv = SluiceServer(tmp_path / "data", name="port-taken")
    env = srv._backend_env()
    env["SLUICE_ADMIN_TOKEN"] = srv.admin_token
    try:
        p = subprocess.run(
            [BINARY, "dev", "--host", "127.0.0.1", "--port", str(port), "--admin-port", "0", "--data", str(tmp_path / "d")],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=120,
        )
    finally:
        taken.close()
    out = (p.stdout + p.stderr).decode("utf-8", "replace")
    assert p.returncode != 0, f"sluice kept running on a taken port:\n{out}"
    assert f"cannot listen on 127.0.0.1:{port}" in out, out
    assert "Address already in use" in out, out


def ipv6_loopback():
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="this machine has no IPv6 loopback")
def test_ipv6_address(tmp_path):
    """With host ::1 the server listens there and serves a put and a receive."""
    srv = SluiceServer(tmp_path / "data", name="ipv6", env={"SLUICE_HOST": "::1"})
    srv.start()
    try:
        assert srv.host == "[::1]", srv.log_tail()
        c = srv.client()
        q = c.new_queue("six")
        assert_status(c.put(q, "over six"), 201)
        r = assert_status(c.receive(q, 1, 30, 0), 200)
        assert [m["message"] for m in r.json()["messages"]] == ["over six"]
        c.close()
    finally:
        srv.close()


# Every thread name the server gives (README, "Threads and locks").
KNOWN = {"sluice", "sl-http", "sl-pool", "sl-accept", "sl-poller", "sl-background", "sl-claimer", "sl-subscribe",
         "sl-writer", "sl-cql-io", "sl-cql-maint", "sl-graphite", "sl-mover"}


def test_threads_are_named_for_top_and_perf(tmp_path):
    """`top -H`, `ps -L`, perf and gdb tell Sluice's threads apart by name
    (README, "Threads and locks"): an operator sees which part is busy."""
    srv = SluiceServer(tmp_path / "data", name="thread-names", env={"SLUICE_THREADS": "3", "SLUICE_STORE_THREADS": "2"})
    srv.start()
    try:
        task = f"/proc/{srv.proc.pid}/task"
        names = collections.Counter(open(f"{task}/{t}/comm").read().strip() for t in os.listdir(task))
    finally:
        srv.close()
    assert names["sluice"] == 1, names  # the main thread, which waits for signals
    assert names["sl-http"] == 3 + 1, names  # the queue API's event loops and the admin port's one
    assert names["sl-pool"] == 2 + 4, names  # the store pools' carriers (the admin port has 4)
    assert names["sl-accept"] == 2, names
    for one in ("sl-poller", "sl-background", "sl-claimer", "sl-subscribe"):
        assert names[one] == 1, (one, names)
    if BACKEND == "sqlite":
        assert names["sl-writer"] == 1, names
    else:
        assert names["sl-writer"] == 0 and names["sl-cql-io"] >= 1 and names["sl-cql-maint"] == 1, names
    assert not [n for n in names if n not in KNOWN], names


def test_event_loops_follow_the_cores_it_may_use(tmp_path):
    """Without --threads the embedded store runs one event loop per core the
    process may run on (its affinity: taskset, a container's cpuset), and
    Cassandra's setup 4 (README, Configuration): on a 2-core machine 8 loops
    spend more CPU than 2 on the same work (bench/results/threads.md)."""
    cores = sorted(os.sched_getaffinity(0))
    for allowed in ({cores[0]}, set(cores)):
        srv = SluiceServer(tmp_path / f"data{len(allowed)}", name=f"loops-{len(allowed)}",
                           preexec_fn=lambda a=allowed: os.sched_setaffinity(0, a))
        srv.start()
        try:
            c = srv.client()
            assert_status(c.put(c.new_queue(f"cores{len(allowed)}"), "x"), 201)
            c.close()
            task = f"/proc/{srv.proc.pid}/task"
            loops = sum(open(f"{task}/{t}/comm").read().strip() == "sl-http" for t in os.listdir(task))
        finally:
            srv.close()
        want = 4 if BACKEND != "sqlite" else min(len(allowed), 512)
        assert loops == want + 1, (allowed, loops)  # and the admin port's one
