"""The HTTP front end as a hostile or clumsy client meets it: raw bytes on
raw sockets, no HTTP library in between.

What a user would notice, case by case:
- more idle connections than the server can hold do not wedge it: the extra
  ones get a 503 (JSON, `Connection: close`) or wait in the kernel until
  others go, and /health answers after each burst;
- a request whose framing two parsers could read two ways (Content-Length
  with Transfer-Encoding, two lengths, a length that is not a number, a
  folded or colon-less header line, no Host) is refused with 400 and the
  connection closed, so nothing can be smuggled in behind it;
- a transfer coding the server does not implement gets 400
  UnsupportedTransferCoding at once, not a hang (RFC 9112 would allow 501;
  here bad input never gets a 5xx), and so does an HTTP version other than
  1.0 and 1.1 (400 HttpVersionNotSupported, where RFC 9110 has 505);
- bodies over the limit get 413 (not a reset), with or without
  `Expect: 100-continue`;
- every error the HTTP layer itself produces (bad version, huge headers,
  long URIs, bad chunks, bare CRs, bad methods) is the API's JSON error
  object, never an HTML page and never a 500;
- clients that connect and leave, or send half a request, are not errors
  in the server's log;
- a client that trickles its request gets 408 after the request timeout, and
  a connection that never sends anything is closed silently;
- keep-alive, pipelining, `Connection: close`, HTTP/1.0 and bodies that
  arrive one byte at a time keep working.

After each hostile case the server still answers GET /health on a new
connection, and a message put before the case is received after it, alone:
nothing was lost and nothing smuggled was stored (see `guarded_queue`).

The error bodies are API.md's: {"error": {"code", "message", "requestId"}},
Content-Type application/json, with an X-Request-Id header."""

import contextlib
import json
import os
import re
import resource
import select
import signal
import socket
import struct
import threading
import time
import urllib.parse
import uuid

import pytest
import requests

from sluice_client import SluiceServer, await_until, read_to_close, sleep_until, unique_name

# --- a raw HTTP/1.1 connection ------------------------------------------------

_STATUS_LINE = re.compile(rb"(?:^|\r\n)HTTP/\d\.\d \d\d\d[ \r]")


class Resp:
    """One parsed HTTP response."""

    def __init__(self, version, status, reason, headers, body, head):
        self.version = version
        self.status = status
        self.reason = reason
        self.header_list = headers  # [(name, value)] as received
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body
        self.head = head

    def header(self, name):
        return self.headers.get(name.lower())

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.status} {self.reason!r} {self.header_list!r} body={self.body[:300]!r}>"


class Conn:
    """A raw TCP connection to the server: send bytes, read whole
    responses, tell whether the server closed the connection. Everything
    read is kept in `received`."""

    def __init__(self, addr, timeout=5.0):
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.received = b""
        self.eof = False
        self.reset = False  # the close came as a reset (after what was read)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data, tolerate_close=False):
        """Sends data; with tolerate_close, a server that has already closed
        (EPIPE, ECONNRESET) is not an error. Returns False then."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            if not tolerate_close:
                raise
            return False

    def _fill(self):
        """Reads once more; returns False at the end of the connection."""
        if self.eof:
            return False
        try:
            d = self.sock.recv(65536)
        except ConnectionResetError:
            self.reset = True
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        self.received += d
        return True

    def _need(self, n):
        while len(self.buf) < n:
            if not self._fill():
                raise AssertionError(f"connection closed in the middle of a response; read {self.received[:600]!r}")

    def _line(self):
        while b"\r\n" not in self.buf:
            if not self._fill():
                raise AssertionError(f"connection closed in the middle of a response; read {self.received[:600]!r}")
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def read_response(self, head_request=False):
        """Reads one response: status line, headers, and the body by its
        Content-Length, by chunks, or up to the close. Returns None if the
        connection ended before any byte of it. socket.timeout propagates."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                if not self.buf:
                    return None
                raise AssertionError(
                    f"connection closed in the middle of a response head; read {self.received[:600]!r}")
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        m = re.match(rb"(HTTP/\d\.\d) (\d\d\d)(?: (.*))?$", lines[0])
        assert m, f"not an HTTP status line: {lines[0][:200]!r} (read {self.received[:600]!r})"
        headers = []
        for h in lines[1:]:
            k, sep, v = h.decode("latin-1").partition(":")
            assert sep, f"response header line without a colon: {h!r}"
            headers.append((k.strip(), v.strip()))
        status = int(m.group(2))
        hd = {k.lower(): v for k, v in headers}
        if head_request or status < 200 or status in (204, 304):
            body = b""
        elif "chunked" in hd.get("transfer-encoding", "").lower():
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():  # trailers up to the empty line
                        pass
                    break
                self._need(size + 2)
                body += self.buf[:size]
                self.buf = self.buf[size + 2:]
        elif "content-length" in hd:
            n = int(hd["content-length"])
            self._need(n)
            body, self.buf = self.buf[:n], self.buf[n:]
        else:
            while self._fill():
                pass
            body, self.buf = self.buf, b""
        return Resp(m.group(1).decode(), status, (m.group(3) or b"").decode("latin-1"), headers, body, head)

    def read_until_close(self, what="the server to close the connection"):
        """Reads until the server ends the connection; returns the bytes not
        yet consumed. Fails if the connection is still open at the socket's
        timeout."""
        try:
            while self._fill():
                pass
        except socket.timeout:
            raise AssertionError(f"timed out waiting for {what}; read {self.received[:600]!r}")
        return self.buf

    def status_lines(self):
        """How many HTTP status lines were read on this connection."""
        return len(_STATUS_LINE.findall(self.received))


def addr_of(server):
    u = urllib.parse.urlsplit(server.base_url)
    return (u.hostname, u.port)


def host_of(server):
    return urllib.parse.urlsplit(server.base_url).netloc


def auth_line(client):
    return "".join(f"{k}: {v}\r\n" for k, v in client._auth_headers("", "", None, None).items())


def request_bytes(server, client, method, target, headers=(), body=b"", version="HTTP/1.1", host=True, auth=True):
    """A request as raw bytes. headers are lines without CRLF; Host and the
    client's Authorization come first unless switched off. No
    Content-Length is added: each test says how its body is framed."""
    head = f"{method} {target} {version}\r\n"
    if host:
        head += f"Host: {host_of(server)}\r\n"
    if auth:
        head += auth_line(client)
    head += "".join(h + "\r\n" for h in headers)
    head += "\r\n"
    b = body.encode() if isinstance(body, str) else body
    return head.encode("latin-1") + b


def chunked(data, size=65536):
    out = []
    for i in range(0, len(data), size):
        part = data[i:i + size]
        out.append(b"%x\r\n" % len(part) + part + b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def assert_json_error(resp, status, code=None, what=""):
    """Asserts API.md's error shape on a raw response; returns the error."""
    label = f"{what}: " if what else ""
    assert resp is not None, f"{label}the server closed the connection without an answer"
    statuses = status if isinstance(status, tuple) else (status,)
    assert resp.status in statuses, f"{label}expected {statuses}, got {resp!r}"
    ctype = resp.header("Content-Type") or ""
    assert ctype.startswith("application/json"), f"{label}error body is not JSON (Content-Type {ctype!r}): {resp!r}"
    assert b"<html" not in resp.body.lower(), f"{label}an HTML error page: {resp!r}"
    assert resp.header("X-Request-Id"), f"{label}no X-Request-Id header: {resp!r}"
    try:
        body = resp.json()
    except ValueError:
        raise AssertionError(f"{label}error body does not parse as JSON: {resp!r}")
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), f"{label}no error object: {resp!r}"
    err = body["error"]
    for k in ("code", "message", "requestId"):
        assert isinstance(err.get(k), str) and err[k], f"{label}error.{k} missing or empty: {resp!r}"
    if code is not None:
        assert err["code"] == code, f"{label}expected error code {code!r}, got {err['code']!r}: {resp!r}"
    return err


def assert_refused_and_closed(conn, status, code, what):
    """Reads what the server sends until it closes the connection: exactly
    one response, the JSON error `status`/`code`, then the close."""
    conn.read_until_close(f"the server to close the connection after refusing {what}")
    resp = conn.read_response()
    err = assert_json_error(resp, status, code, what)
    n = conn.status_lines()
    assert n == 1, (f"{what}: {n} status lines before the close (a second request was answered); "
                    f"read {conn.received[:800]!r}")
    assert not conn.buf, f"{what}: bytes after the error response: {conn.buf[:300]!r}"
    return err


def health_on_new_connection(server, timeout=2.0):
    try:
        r = requests.get(server.base_url + "/health", headers={"Connection": "close"}, timeout=timeout,
                         verify=server.verify if server.verify is not None else True)
        return r.status_code == 200
    except requests.RequestException:
        return False


def assert_healthy(server, timeout=10.0, what="the hostile request"):
    await_until(lambda: health_on_new_connection(server), timeout=timeout,
                desc=f"GET /health 200 on a new connection after {what}")


@contextlib.contextmanager
def guarded_queue(server, client, what, prefix="front"):
    """A fresh queue holding one message. After the block: /health answers
    on a new connection, the queue's size is still 1, and receiving gives
    that message and nothing else (then it is acked): nothing was lost and
    nothing the block sent was stored."""
    q = client.new_queue(prefix)
    before = f"before {what} {uuid.uuid4().hex[:8]}"
    client.put_ok(q, before)
    client.await_stats(q, size=1)
    yield q
    assert_healthy(server, what=what)
    size = client.stats_json(q)["size"]
    msgs = client.receive_list(q, 32, 30)
    bodies = [m["message"] for m in msgs]
    assert bodies == [before], f"after {what}: expected only {before!r} in the queue, received {bodies!r}"
    assert size == 1, f"after {what}: queue size {size}, expected 1 (something was stored)"
    r = client.ack(q, msgs[0]["popReceipt"])
    assert r.status_code == 204, f"after {what}: ack of the message put before: {r.status_code} {r.text[:200]}"


def put_path(client, q):
    return client.qpath(q, "/messages")


# --- 1. connection limit -------------------------------------------------------

NOFILE = 256  # the server then holds min(256 - 64, 10000) = 192 connections
OVER_LIMIT = 300


def _lower_nofile():
    """Runs in the server's process before exec. The server raises its soft
    limit to the hard one at start, so both are lowered (as `ulimit -n`
    does)."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))


def _over_limit_answer(s, timeout):
    """What an idle connection that the server has written to or closed
    got: None when it is fine (a 503 JSON with Connection: close, then the
    close), else a description of what is wrong."""
    s.setblocking(True)
    s.settimeout(timeout)
    data, closed = read_to_close(s)
    if not closed:
        return f"got {data[:200]!r} and was not closed"
    if not data:
        return "closed without an answer"
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.1 (\d\d\d)", head)
    if not m or m.group(1) != b"503":
        return f"answered {data[:200]!r}"
    hdrs = [(k.strip(), v.strip()) for k, _, v in
            (ln.decode("latin-1").partition(":") for ln in head.split(b"\r\n")[1:])]
    if dict((k.lower(), v) for k, v in hdrs).get("connection", "").lower() != "close":
        return f"a 503 without Connection: close: {data[:200]!r}"
    try:
        assert_json_error(Resp("HTTP/1.1", 503, "", hdrs, body, head), 503, "ServiceUnavailable")
    except AssertionError as e:
        return str(e)
    return None


def test_more_connections_than_the_limit_do_not_wedge_the_server(server_factory):
    """With a file limit of 256 (192 connections), five bursts of 300 idle
    connections, each held for a second and then closed. A connection over
    the limit gets a 503 JSON answer with `Connection: close` and is
    closed, or is simply not served until others go; after each burst
    /health answers, a message put before is there after, and SIGTERM stops
    the server promptly and cleanly. Every problem seen is reported."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < OVER_LIMIT + 200:
        want = min(hard, 4096)
        if want < OVER_LIMIT + 200:
            pytest.skip(f"this test process may open only {hard} files")
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    srv = server_factory("connlimit", preexec_fn=_lower_nofile)
    c = srv.client()
    q = c.new_queue("connlimit")
    before = "put before the connection bursts"
    c.put_ok(q, before)
    c.close()
    addr = addr_of(srv)
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    problems = []
    healthy = True
    for rnd in range(1, 6):
        socks = []
        bad = {}
        try:
            for _ in range(OVER_LIMIT):
                s = socket.socket(family, socket.SOCK_STREAM)
                socks.append(s)
                s.setblocking(False)
                s.connect_ex(addr)  # EINPROGRESS: a connection not yet accepted is fine
            sleep_until(time.monotonic() + 1.0)  # hold them
            deadline = time.monotonic() + 10
            for s in socks:
                if select.select([s], [], [], 0)[0]:
                    why = _over_limit_answer(s, max(0.1, deadline - time.monotonic()))
                    if why:
                        bad[why] = bad.get(why, 0) + 1
        finally:
            for s in socks:
                s.close()
        problems += [f"round {rnd}: {n} connection(s) over the limit {why}" for why, n in bad.items()]
        if not srv.alive():
            problems.append(f"the server died in round {rnd}")
            healthy = False
            break
        try:
            assert_healthy(srv, what=f"round {rnd} of {OVER_LIMIT} idle connections")
        except AssertionError as e:
            problems.append(str(e))
            healthy = False
            break
    if healthy:
        c = srv.client()
        msgs = c.receive_list(q, 32, 30)
        if [m["message"] for m in msgs] != [before]:
            problems.append(f"after the bursts the queue holds {[m['message'] for m in msgs]!r}, not [{before!r}]")
        else:
            assert c.ack(q, msgs[0]["popReceipt"]).status_code == 204
        c.close()
    srv.proc.send_signal(signal.SIGTERM)
    try:
        await_until(lambda: srv.proc.poll() is not None, timeout=10, desc="the server to exit after SIGTERM")
        if srv.proc.returncode != 0:
            problems.append(f"exit status {srv.proc.returncode} after SIGTERM")
    except AssertionError as e:
        problems.append(str(e))
    assert not problems, "\n".join(problems)


# --- 2. request smuggling and ambiguous framing ----------------------------------


@pytest.mark.parametrize("order", ["length first", "chunked first"])
def test_content_length_with_chunked_is_refused_and_smuggles_nothing(server, client, order):
    """A POST with both Content-Length and `Transfer-Encoding: chunked`
    whose body hides a second, authenticated put: 400, the connection is
    closed, and the hidden put is not stored."""
    with guarded_queue(server, client, "a CL+TE smuggling attempt") as q:
        inner = request_bytes(server, client, "POST", put_path(client, q),
                              ["Content-Type: text/plain", "Content-Length: 8"], b"smuggled")
        body = b"0\r\n\r\n" + inner
        framing = [f"Content-Length: {len(body)}", "Transfer-Encoding: chunked"]
        if order == "chunked first":
            framing.reverse()
        with Conn(addr_of(server)) as conn:
            conn.send(request_bytes(server, client, "POST", put_path(client, q),
                                    ["Content-Type: text/plain"] + framing, body), tolerate_close=True)
            assert_refused_and_closed(conn, 400, "BadRequest", "Content-Length with Transfer-Encoding: chunked")


AMBIGUOUS = {
    "two different Content-Length": (["Content-Length: 5", "Content-Length: 6"], b"hello!", True),
    "Content-Length list": (["Content-Length: 5, 6"], b"hello!", True),
    "negative Content-Length": (["Content-Length: -1"], b"hello", True),
    "Content-Length not a number": (["Content-Length: abc"], b"hello", True),
    "space before the colon": (["Transfer-Encoding : chunked"], b"5\r\nhello\r\n0\r\n\r\n", True),
    "header line without a colon": (["Content-Length: 5", "X-No-Colon-Here"], b"hello", True),
    "obs-fold continuation line": (["X-Folded: a", "  continued", "Content-Length: 5"], b"hello", True),
    "HTTP/1.1 without Host": (["Content-Length: 5"], b"hello", False),
}


@pytest.mark.parametrize("case", list(AMBIGUOUS))
def test_ambiguous_framing_is_refused_and_the_connection_closed(server, client, case):
    """Framing that two parsers could read two ways is refused with 400 and
    the connection closed after exactly one response; nothing is stored."""
    headers, body, host = AMBIGUOUS[case]
    with guarded_queue(server, client, case) as q:
        with Conn(addr_of(server)) as conn:
            conn.send(request_bytes(server, client, "POST", put_path(client, q),
                                    ["Content-Type: text/plain"] + headers, body, host=host), tolerate_close=True)
            assert_refused_and_closed(conn, 400, "BadRequest", case)


# --- 3. transfer codings the server does not implement -------------------------


@pytest.mark.parametrize("coding", ["xchunked", "identity", "gzip, chunked", "chunked, gzip"])
def test_unknown_transfer_coding_is_400_and_closed(server, client, coding):
    """A Transfer-Encoding other than plain `chunked` gets a 400
    UnsupportedTransferCoding promptly (a hang is a failure), then the
    connection closes; nothing is stored."""
    with guarded_queue(server, client, f"Transfer-Encoding: {coding}") as q:
        with Conn(addr_of(server), timeout=5) as conn:
            conn.send(request_bytes(server, client, "POST", put_path(client, q),
                                    ["Content-Type: text/plain", f"Transfer-Encoding: {coding}"],
                                    b"5\r\nhello\r\n0\r\n\r\n"), tolerate_close=True)
            assert_refused_and_closed(conn, 400, "UnsupportedTransferCoding", f"Transfer-Encoding: {coding}")


# --- 4. bodies over the limit -----------------------------------------------------


def _send_in_thread(conn, data, piece=256 * 1024):
    """Sends data from a thread; the server may close (EPIPE, ECONNRESET)
    once it has answered, which ends the sending quietly."""

    def run():
        for i in range(0, len(data), piece):
            try:
                conn.sock.sendall(data[i:i + piece])
            except OSError:
                return

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _expect_413_while_sending(server, conn, data, what):
    t = _send_in_thread(conn, data)
    try:
        conn.settimeout(30)
        try:
            resp = conn.read_response()
        except socket.timeout:
            raise AssertionError(f"{what}: no answer within 30 s")
        if resp is None and conn.reset:
            raise AssertionError(f"{what}: the connection was reset instead of answered with 413")
        assert_json_error(resp, 413, "RequestBodyTooLarge", what)
    finally:
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        t.join(10)


@pytest.mark.parametrize("mb", [5, 20])
def test_large_body_with_content_length_gets_413(server, client, mb):
    """A put of 5 or 20 MB with Content-Length and no Expect gets a JSON
    413 that the client can read, not a reset; nothing is stored."""
    what = f"a {mb} MB put with Content-Length"
    with guarded_queue(server, client, what) as q:
        body = b"x" * (mb * 1000 * 1000)
        with Conn(addr_of(server)) as conn:
            data = request_bytes(server, client, "POST", put_path(client, q),
                                 ["Content-Type: text/plain", f"Content-Length: {len(body)}"], body)
            _expect_413_while_sending(server, conn, data, what)


def test_large_chunked_body_gets_413(server, client):
    """A chunked put of 5 MB gets a JSON 413, not a reset; nothing is stored."""
    what = "a 5 MB chunked put"
    with guarded_queue(server, client, what) as q:
        with Conn(addr_of(server)) as conn:
            data = request_bytes(server, client, "POST", put_path(client, q),
                                 ["Content-Type: text/plain", "Transfer-Encoding: chunked"],
                                 chunked(b"c" * (5 * 1000 * 1000)))
            _expect_413_while_sending(server, conn, data, what)


def test_expect_100_continue_over_the_limit_gets_413_without_100(server, client):
    """A client that announces a 5 MB body and waits for `100 Continue` is
    refused at once with 413 and never told to continue."""
    what = "Expect: 100-continue with a 5 MB Content-Length"
    with guarded_queue(server, client, what) as q:
        with Conn(addr_of(server), timeout=5) as conn:
            conn.send(request_bytes(server, client, "POST", put_path(client, q),
                                    ["Content-Type: text/plain", "Content-Length: 5000000",
                                     "Expect: 100-continue"]))
            resp = conn.read_response()
            assert resp is not None, f"{what}: closed without an answer"
            assert resp.status != 100, f"{what}: the server said 100 Continue to a body over the limit"
            assert_json_error(resp, 413, "RequestBodyTooLarge", what)
            assert b"100 Continue" not in conn.received, f"{what}: 100 Continue sent: {conn.received[:300]!r}"


def test_expect_100_continue_small_body_gets_100_then_the_answer(server, client):
    """With `Expect: 100-continue` and a small body the server says
    `HTTP/1.1 100 Continue`, takes the body and answers 201."""
    q = client.new_queue("expect")
    body = b"continue, please"
    with Conn(addr_of(server), timeout=5) as conn:
        conn.send(request_bytes(server, client, "POST", put_path(client, q),
                                ["Content-Type: text/plain", f"Content-Length: {len(body)}",
                                 "Expect: 100-continue"]))
        first = conn.read_response()
        assert first is not None, "closed without 100 Continue"
        assert conn.received.startswith(b"HTTP/1.1 100 Continue\r\n"), \
            f"expected 100 Continue, read {conn.received[:300]!r}"
        conn.send(body)
        resp = conn.read_response()
        assert resp is not None and resp.status == 201, f"after 100 Continue: {resp!r}"
    msgs = client.receive_list(q, 32, 30)
    assert [m["message"] for m in msgs] == [body.decode()]
    assert client.ack(q, msgs[0]["popReceipt"]).status_code == 204


# --- 5. errors of the HTTP layer are JSON -------------------------------------------


def _one_answer(server, client, data, status, code=None, what=""):
    with Conn(addr_of(server), timeout=5) as conn:
        conn.send(data, tolerate_close=True)
        try:
            resp = conn.read_response()
        except socket.timeout:
            raise AssertionError(f"{what}: no answer within 5 s; read {conn.received[:300]!r}")
        return assert_json_error(resp, status, code, what)


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/3.0"])
def test_unsupported_http_version_is_400_json(server, client, version):
    """`GET /health HTTP/2.0` (a version we do not speak) gets a JSON 400
    HttpVersionNotSupported, not an HTML page."""
    with guarded_queue(server, client, version):
        _one_answer(server, client, request_bytes(server, client, "GET", "/health", version=version),
                    400, "HttpVersionNotSupported", f"a {version} request line")


@pytest.mark.parametrize("version", ["HTTP/x", "FOO/1.1", "HTTP/1.1x"])
def test_malformed_http_version_is_400_json(server, client, version):
    """A request line whose version is not `HTTP/d.d` gets a JSON 400."""
    with guarded_queue(server, client, version):
        _one_answer(server, client, request_bytes(server, client, "GET", "/health", version=version),
                    400, None, f"request line version {version!r}")


@pytest.mark.parametrize("case", ["one 20 KiB header", "150 header fields"])
def test_header_section_too_large_is_431_json(server, client, case):
    """A header section over 16 KiB, or over 100 fields, gets a JSON 431."""
    if case == "one 20 KiB header":
        headers = ["X-Big: " + "b" * (20 * 1024)]
    else:
        headers = [f"X-Field-{i}: v" for i in range(150)]
    with guarded_queue(server, client, case):
        _one_answer(server, client, request_bytes(server, client, "GET", "/health", headers),
                    431, "RequestHeaderFieldsTooLarge", case)


def test_request_target_over_8_kib_is_414_json(server, client):
    """A request target of 9,000 characters gets a JSON 414."""
    target = "/health?pad=" + "u" * 9000
    with guarded_queue(server, client, "a 9 KB request target"):
        _one_answer(server, client, request_bytes(server, client, "GET", target), 414, "UriTooLong",
                    "a 9 KB request target")


@pytest.mark.parametrize("case,body", [("chunk size zz", b"zz\r\nhello\r\n0\r\n\r\n"),
                                       ("no CRLF after chunk data", b"5\r\nhelloXX0\r\n\r\n")])
def test_malformed_chunks_are_400_json(server, client, case, body):
    """A chunked body with a chunk size that is not hex, or chunk data not
    followed by CRLF, gets a JSON 400 and stores nothing."""
    with guarded_queue(server, client, case) as q:
        _one_answer(server, client,
                    request_bytes(server, client, "POST", put_path(client, q),
                                  ["Content-Type: text/plain", "Transfer-Encoding: chunked"], body),
                    400, None, case)


def test_bare_cr_in_a_header_value_is_400_json(server, client):
    """A header value with a CR not followed by LF gets a JSON 400."""
    with guarded_queue(server, client, "a bare CR") as q:
        _one_answer(server, client,
                    request_bytes(server, client, "POST", put_path(client, q),
                                  ["Content-Type: text/plain", "X-Bare: a\rb", "Content-Length: 5"], b"hello"),
                    400, None, "a bare CR in a header value")


# --- 6. clients that leave are not errors ------------------------------------------


def test_dropped_connections_are_not_logged_as_errors(server_factory):
    """20 connections closed without a byte and 5 closed halfway through a
    request line: the server keeps serving, and no `error` line shows up in
    its log."""
    srv = server_factory("logquiet")
    addr = addr_of(srv)
    mark = len(srv.lines)
    for _ in range(20):
        socket.create_connection(addr, timeout=5).close()
    for _ in range(5):
        s = socket.create_connection(addr, timeout=5)
        s.sendall(b"GET /hea")
        s.close()
    # One more half request, whose close by the server we wait for, so that
    # the server has seen an end of input mid-request before we look.
    with Conn(addr, timeout=5) as conn:
        conn.send(b"GET /heal")
        conn.sock.shutdown(socket.SHUT_WR)
        try:
            conn.read_until_close()
        except AssertionError:
            pass
    assert_healthy(srv, what="dropped connections")
    with srv._lock:
        errors = [ln for ln in srv.lines[mark:] if "Z error " in ln]
    assert not errors, "clients that closed early were logged as errors:\n" + "\n".join(errors[:10])


# --- 7. slow senders and idle connections -------------------------------------------


# The whole request (head and body) must arrive within this many seconds of
# its first byte; a connection with no request in progress closes after the
# idle timeout (--http-request-timeout, --http-idle-timeout).
SLOW_ENV = {"SLUICE_HTTP_REQUEST_TIMEOUT": "2", "SLUICE_HTTP_IDLE_TIMEOUT": "2"}


@pytest.fixture(scope="module")
def slow_server(tmp_path_factory):
    """A server with a 2 s request timeout and a 2 s idle timeout."""
    srv = SluiceServer(tmp_path_factory.mktemp("slow"), name="slow", env=SLOW_ENV)
    try:
        srv.start()
        yield srv
    finally:
        srv.close()


def _trickle(conn, data, every=0.3):
    """Sends data one byte every `every` seconds from a thread, until it is
    all sent or the server closes."""
    stop = threading.Event()

    def run():
        for i in range(len(data)):
            if stop.is_set():
                return
            try:
                conn.sock.send(data[i:i + 1])
            except OSError:
                return
            stop.wait(every)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return stop, t


def test_slow_request_head_gets_408_and_close(slow_server):
    """A request head sent one byte every 0.3 s (it would take ~25 s) gets a
    JSON 408 and the close well before it is complete."""
    srv = slow_server
    head = (f"GET /health HTTP/1.1\r\nHost: {host_of(srv)}\r\nX-Slow: " + "s" * 40 + "\r\n\r\n").encode()
    with Conn(addr_of(srv), timeout=10) as conn:
        stop, t = _trickle(conn, head)
        try:
            conn.read_until_close("a 408 and the close of a request trickled one byte at a time")
        finally:
            stop.set()
            t.join(5)
        resp = conn.read_response()
        assert_json_error(resp, 408, "RequestTimeout", "a trickled request head")
        assert conn.status_lines() == 1, f"more than one response: {conn.received[:600]!r}"


def test_slow_request_body_gets_408_and_stores_nothing(slow_server):
    """A put whose head arrives at once but whose body trickles in one byte
    every 0.3 s gets a JSON 408 and the close; nothing is stored."""
    srv = slow_server
    c = srv.client()
    try:
        with guarded_queue(srv, c, "a trickled body") as q:
            body = b"t" * 60
            with Conn(addr_of(srv), timeout=10) as conn:
                conn.send(request_bytes(srv, c, "POST", put_path(c, q),
                                        ["Content-Type: text/plain", f"Content-Length: {len(body)}"]))
                stop, t = _trickle(conn, body)
                try:
                    conn.read_until_close("a 408 and the close of a body trickled one byte at a time")
                finally:
                    stop.set()
                    t.join(5)
                assert_json_error(conn.read_response(), 408, "RequestTimeout", "a trickled request body")
    finally:
        c.close()


def test_idle_connection_is_closed_silently(slow_server):
    """A connection that never starts a request is closed after the idle
    timeout (2 s here) without a byte written to it."""
    with Conn(addr_of(slow_server), timeout=10) as conn:
        conn.read_until_close("the idle connection to be closed")
        assert conn.received == b"", f"the server wrote to an idle connection: {conn.received[:300]!r}"


# --- 8. keep-alive and pipelining -----------------------------------------------------


def test_pipelined_requests_are_answered_in_order(server, client):
    """GET /health, a put and GET /health sent in one write get three
    answers in order, and the connection stays open for a fourth."""
    q = client.new_queue("pipe")
    body = b"pipelined put"
    data = (request_bytes(server, client, "GET", "/health")
            + request_bytes(server, client, "POST", put_path(client, q),
                            ["Content-Type: text/plain", f"Content-Length: {len(body)}"], body)
            + request_bytes(server, client, "GET", "/health"))
    with Conn(addr_of(server), timeout=10) as conn:
        conn.send(data)
        got = [conn.read_response() for _ in range(3)]
        assert None not in got, f"the connection closed before three answers: {got!r}"
        assert [r.status for r in got] == [200, 201, 200], f"pipelined answers out of order or wrong: {got!r}"
        assert "messageId" in got[1].json(), got[1]
        for r in got:
            assert (r.header("Connection") or "").lower() != "close", f"Connection: close on a pipelined answer: {r!r}"
        conn.send(request_bytes(server, client, "GET", "/health"))
        r = conn.read_response()
        assert r is not None and r.status == 200, f"a fourth request on the pipelined connection: {r!r}"
    msgs = client.receive_list(q, 32, 30)
    assert [m["message"] for m in msgs] == [body.decode()]
    assert client.ack(q, msgs[0]["popReceipt"]).status_code == 204


def test_a_request_sent_while_the_one_before_waits_is_answered_after_it(server, client):
    """A long poll waits on an empty queue; the same connection then sends
    GET /health in a write of its own. Once a put wakes the poll, both are
    answered, in order. The server reads a socket again only when it has
    said it has more (it is edge-triggered, and a read that emptied it is
    not repeated), so this fails if the bytes that came while the poll
    waited are forgotten: the /health would never be answered."""
    q = client.new_queue("behind")
    host, port = addr_of(server)
    with Conn((host, port), timeout=10) as conn:
        mine = conn.sock.getsockname()[1]
        conn.send(_poll_bytes(server, client, q, 5))
        await_until(lambda: _unread_bytes(port, mine) == 0, timeout=10, desc="the server to read the long poll")
        conn.send(request_bytes(server, client, "GET", "/health"))
        r = client.put(q, "wakes the poll")
        assert r.status_code == 201, r.text
        got = [conn.read_response() for _ in range(2)]
        assert None not in got, f"the connection closed before two answers: {got!r}"
        assert [r.status for r in got] == [200, 200], f"answers: {got!r}"
        assert [m["message"] for m in got[0].json()["messages"]] == ["wakes the poll"], got[0]
        assert got[1].json().get("status") == "ok", got[1]


def _unread_bytes(server_port, client_port):
    """The receive queue of the server's end of a loopback connection, from
    /proc/net/tcp: how many bytes the server has not read yet (None when
    there is no such connection)."""
    want_local, want_remote = f":{server_port:04X}", f":{client_port:04X}"
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[1].endswith(want_local) and fields[2].endswith(want_remote):
                return int(fields[4].split(":")[1], 16)
    return None


def _open_sockets(srv):
    """How many sockets the server process holds (a reset connection's
    socket stays open until the server closes it)."""
    d = f"/proc/{srv.proc.pid}/fd"
    n = 0
    for f in os.listdir(d):
        try:
            n += os.readlink(f"{d}/{f}").startswith("socket:")
        except OSError:  # closed meanwhile
            pass
    return n


def _leave_after_read(srv, data, how="reset"):
    """Sends data on a new connection, waits until the server has read all
    of it, then leaves: a reset (SO_LINGER 0) or a plain close (a FIN)."""
    host, port = addr_of(srv)
    conn = Conn((host, port), timeout=10)
    conn.send(data)
    mine = conn.sock.getsockname()[1]
    await_until(lambda: _unread_bytes(port, mine) == 0, timeout=10, desc="the server to read the request")
    if how == "reset":
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def _poll_bytes(srv, c, q, wait):
    body = json.dumps({"waitSeconds": wait}).encode()
    return request_bytes(srv, c, "POST", c.qpath(q, "/messages/receive"),
                         ["Content-Type: application/json", f"Content-Length: {len(body)}"], body)


def test_pipelined_long_poll_behind_a_reset_is_not_freed_while_parked(server_factory):
    """Sixteen connections each pipeline GET /health and a 3 s long poll on
    an empty queue and are reset at once. Where the server reads both
    requests before it sees the reset, the long poll starts and parks, and
    then the answer to /health cannot be written. The server must not free
    the parked request (it did: a use after free that the HTTP fuzzer
    found; CI runs this file under ASan). It closes every reset connection,
    long polls on fresh connections are still woken by puts and get every
    message, and SIGTERM ends it with exit code 0."""
    srv = server_factory("pipereset")
    c = srv.client()
    q = c.new_queue("pipereset")
    socks = _open_sockets(srv)
    for _ in range(16):
        conn = Conn(addr_of(srv), timeout=10)
        conn.send(request_bytes(srv, c, "GET", "/health") + _poll_bytes(srv, c, q, 3))
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
    await_until(lambda: _open_sockets(srv) <= socks, timeout=20, desc="the server to close the reset connections")

    got, errors = [], []

    def waiter():
        wc = srv.client()
        try:
            r = wc.receive(q, wait=20, timeout=30)
            if r.status_code != 200:
                errors.append(f"{r.status_code} {r.text[:200]}")
            else:
                got.extend(r.json()["messages"])
        finally:
            wc.close()

    threads = [threading.Thread(target=waiter) for _ in range(8)]
    for t in threads:
        t.start()
    bodies = {f"after the resets {i}" for i in range(8)}
    for b in sorted(bodies):
        c.put_ok(q, b)
    for t in threads:
        t.join(40)
    assert not errors, f"long polls after the resets failed: {errors}"
    assert {m["message"] for m in got} == bodies, f"long polls after the resets got {got!r}"
    for m in got:
        assert c.ack(q, m["popReceipt"]).status_code == 204
    c.close()
    rc = srv.stop()
    with srv._lock:
        sanitizer = [ln for ln in srv.lines if "Sanitizer" in ln]
    assert rc == 0 and not sanitizer, f"exit code {rc} after the resets:\n" + "\n".join(sanitizer[:20])


@pytest.mark.parametrize("how", ["reset", "close"])
def test_long_poll_of_a_client_that_left_takes_no_message(server, client, how):
    """A client starts a 20 s long poll and leaves: its connection is reset,
    or closed as a client that gives up on a request closes it. The server
    ends that poll at once and closes the connection, and a message put
    afterwards goes to the next receive, not to the poll of a client that
    is gone (where it would stay invisible for 30 s)."""
    q = client.new_queue("gonepoll")
    socks = _open_sockets(server)
    _leave_after_read(server, _poll_bytes(server, client, q, 20), how)
    await_until(lambda: _open_sockets(server) <= socks, timeout=10,
                desc=f"the server to end the long poll of the {how} connection and close it")
    client.put_ok(q, "after the client left")
    msgs = client.receive_list(q, 1, 30)
    assert [m["message"] for m in msgs] == ["after the client left"], f"the next receive got {msgs!r}"
    assert client.ack(q, msgs[0]["popReceipt"]).status_code == 204

def test_post_with_body_keeps_the_connection_alive(server, client):
    """A put with a body is answered without `Connection: close`, and a
    second request on the same socket works."""
    q = client.new_queue("alive")
    body = b"keep me alive"
    with Conn(addr_of(server), timeout=10) as conn:
        conn.send(request_bytes(server, client, "POST", put_path(client, q),
                                ["Content-Type: text/plain", f"Content-Length: {len(body)}"], body))
        r = conn.read_response()
        assert r is not None and r.status == 201, r
        assert (r.header("Connection") or "").lower() != "close", f"a put closed the connection: {r!r}"
        conn.send(request_bytes(server, client, "GET", client.qpath(q, "/statistics")))
        r = conn.read_response()
        assert r is not None and r.status == 200, f"second request on the same connection: {r!r}"
    client.drain(q)


def test_connection_close_from_the_client_is_honoured(server, client):
    """`Connection: close` from the client: one answer, then the close."""
    with Conn(addr_of(server), timeout=5) as conn:
        conn.send(request_bytes(server, client, "GET", "/health", ["Connection: close"]))
        r = conn.read_response()
        assert r is not None and r.status == 200, r
        rest = conn.read_until_close("the close after a request with Connection: close")
        assert rest == b"", f"bytes after the answer: {rest[:200]!r}"


def test_http_1_0_without_keep_alive_is_answered_then_closed(server, client):
    """An HTTP/1.0 request without keep-alive: one answer, then the close."""
    with Conn(addr_of(server), timeout=5) as conn:
        conn.send(request_bytes(server, client, "GET", "/health", version="HTTP/1.0"))
        r = conn.read_response()
        assert r is not None and r.status == 200, r
        rest = conn.read_until_close("the close after an HTTP/1.0 request")
        assert rest == b"", f"bytes after the answer: {rest[:200]!r}"


def test_body_sent_one_byte_at_a_time_works(server, client):
    """A queue created with a JSON body that arrives one byte per write."""
    name = unique_name("bytewise")
    body = json.dumps({"queueName": name}).encode()
    with Conn(addr_of(server), timeout=10) as conn:
        conn.send(request_bytes(server, client, "POST", client.qbase(),
                                ["Content-Type: application/json", f"Content-Length: {len(body)}"]))
        for i in range(len(body)):
            conn.send(body[i:i + 1])
            time.sleep(0.002)  # shapes the input into separate segments
        r = conn.read_response()
        assert r is not None and r.status == 201, f"byte-by-byte create: {r!r}"
    r = client.get_queue(name)
    assert r.status_code == 200, f"the queue made byte by byte: {r.status_code} {r.text[:200]}"


# --- 9. methods ---------------------------------------------------------------------


def test_method_with_invalid_characters_is_400_json(server, client):
    """`GE(T /health` is not a method token: JSON 400."""
    with guarded_queue(server, client, "GE(T"):
        _one_answer(server, client, request_bytes(server, client, "GE(T", "/health"), 400, None,
                    "method GE(T")


def test_unrouted_method_is_405_or_404_json(server, client):
    """`BREW /health` is a valid token that no route takes: JSON 405 or 404."""
    with guarded_queue(server, client, "BREW"):
        _one_answer(server, client, request_bytes(server, client, "BREW", "/health"), (405, 404), None,
                    "method BREW")
