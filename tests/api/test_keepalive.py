"""Keep-alive regression (PEERS.md trap): a POST with a body must not make
the server close the connection. A server that queues its response before
reading the upload silently disables keep-alive."""

import http.client
import json
import socket
import urllib.parse

import pytest


def _conn(client):
    u = urllib.parse.urlsplit(client.base_url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=15)


def _headers(client, extra):
    h = dict(extra)
    h.update(client._auth_headers("", "", None, None))
    return h


def _posts(client, q):
    base = client.qbase()
    return [
        ("create queue", "POST", base, json.dumps({"queueName": q}).encode(), {"Content-Type": "application/json"}),
        ("put", "POST", f"{base}/{q}/messages", b"hello keep-alive", {"Content-Type": "text/plain"}),
        ("put 100 KB", "POST", f"{base}/{q}/messages", b"k" * 100_000, {"Content-Type": "text/plain"}),
        ("batch", "POST", f"{base}/{q}/messages/batch", json.dumps({"messages": [{"message": "b"}]}).encode(),
         {"Content-Type": "application/json"}),
        ("receive", "POST", f"{base}/{q}/messages/receive", json.dumps({"maxMessages": 1}).encode(),
         {"Content-Type": "application/json"}),
        ("bad JSON (400)", "POST", base, b"{not json", {"Content-Type": "application/json"}),
    ]


@pytest.mark.parametrize("which", range(6))
def test_post_with_body_keeps_connection_alive(client, which):
    q = client.new_queue("ka")
    label, method, path, body, headers = _posts(client, q)[which]
    conn = _conn(client)
    try:
        conn.request(method, path, body=body, headers=_headers(client, headers))
        resp = conn.getresponse()
        resp.read()
        assert resp.status < 500, f"{label}: {resp.status}"
        connection = (resp.getheader("Connection") or "").lower()
        assert connection != "close", f"{label}: server answered a POST with Connection: close (keep-alive lost)"
        assert not resp.will_close, f"{label}: the response ends the connection"
        sock = conn.sock
        assert sock is not None
        conn.request("GET", "/health", headers=_headers(client, {}))
        resp2 = conn.getresponse()
        resp2.read()
        assert resp2.status == 200
        assert conn.sock is sock, f"{label}: the second request needed a new connection"
    finally:
        conn.close()


def _read_response(f):
    """Reads one HTTP/1.1 response from a socket file; returns (status,
    headers, body) or None when the server closed the connection."""
    line = f.readline()
    if not line:
        return None
    status = int(line.split()[1])
    headers = {}
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        k, _, v = h.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    if "content-length" in headers:
        body = f.read(int(headers["content-length"]))
    elif headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                f.readline()
                break
            body += f.read(size)
            f.readline()
    else:
        body = b"" if status in (204, 304) or status < 200 else f.read()
    return status, headers, body


def test_raw_socket_serves_many_posts_on_one_connection(client):
    """Counts connections directly: ten puts and a GET over one socket."""
    q = client.new_queue("karaw")
    u = urllib.parse.urlsplit(client.base_url)
    auth = "".join(f"{k}: {v}\r\n" for k, v in client._auth_headers("", "", None, None).items())
    s = socket.create_connection((u.hostname, u.port), timeout=15)
    try:
        f = s.makefile("rb")
        for i in range(10):
            body = f"raw {i}".encode()
            req = (f"POST {client.qpath(q, '/messages')} HTTP/1.1\r\nHost: {u.netloc}\r\n{auth}"
                   f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
            s.sendall(req)
            got = _read_response(f)
            assert got is not None, f"server closed the connection after POST number {i + 1}"
            assert got[0] == 201, got
            assert got[1].get("connection", "").lower() != "close", f"Connection: close after POST {i + 1}"
        s.sendall(f"GET {client.qpath(q, '/statistics')} HTTP/1.1\r\nHost: {u.netloc}\r\n{auth}\r\n".encode())
        got = _read_response(f)
        assert got is not None and got[0] == 200, got
    finally:
        s.close()
    client.await_stats(q, size=10)


def test_expect_100_continue_post(client):
    """curl sends `Expect: 100-continue` for bodies over 1 KiB: the server
    must answer 100 Continue (or the final status) and then take the body."""
    q = client.new_queue("expect")
    u = urllib.parse.urlsplit(client.base_url)
    body = b"e" * 5000
    path = client.qpath(q, "/messages")
    auth = "".join(f"{k}: {v}\r\n" for k, v in client._auth_headers("POST", path, None, body).items())
    s = socket.create_connection((u.hostname, u.port), timeout=15)
    try:
        f = s.makefile("rb")
        s.sendall((f"POST {path} HTTP/1.1\r\nHost: {u.netloc}\r\n{auth}Content-Type: text/plain\r\n"
                   f"Content-Length: {len(body)}\r\nExpect: 100-continue\r\n\r\n").encode())
        got = _read_response(f)
        assert got is not None, "server closed the connection on Expect: 100-continue"
        assert got[0] == 100, f"expected 100 Continue, got {got}"
        s.sendall(body)
        got = _read_response(f)
        assert got is not None and got[0] == 201, got
        # The connection stays usable.
        s.sendall(f"GET /health HTTP/1.1\r\nHost: {u.netloc}\r\n\r\n".encode())
        got = _read_response(f)
        assert got is not None and got[0] == 200, got
    finally:
        s.close()
    m = client.get_next(q).json()
    assert m["message"] == body.decode()


def test_chunked_upload_is_accepted(client):
    q = client.new_queue("chunked")

    def gen():
        yield b"part one, "
        yield b"part two"

    path = client.qpath(q, "/messages")
    headers = {"Content-Type": "text/plain"}
    headers.update(client._auth_headers("POST", path, None, None))
    r = client.s.post(client.base_url + path, data=gen(), headers=headers, timeout=15)
    assert r.status_code in (201, 411), f"chunked put: {r.status_code} {r.text[:200]}"
    if r.status_code == 201:
        m = client.get_next(q).json()
        assert m["message"] == "part one, part two"
