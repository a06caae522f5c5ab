"""HTTPS: with `--tls-cert FILE --tls-key FILE` (or SLUICE_TLS_CERT and
SLUICE_TLS_KEY) the server speaks TLS on the queue port and on the admin
port, and its "listening on" lines say https://.

What a user would notice: curl and Python clients that trust the
certificate (a self-signed one for 127.0.0.1, made here with the openssl
command) get the whole API, admin API included; a client that speaks plain
HTTP to the TLS port gets no answer it could mistake for a real one, and no
hang; a certificate path that does not exist stops the server at once with
a message naming the file."""

import os
import shutil
import socket
import ssl
import subprocess
import urllib.parse

import pytest

from sluice_client import BINARY, SluiceServer, read_to_close

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="the openssl command is not installed")


def make_cert(d):
    """A self-signed certificate for 127.0.0.1 (IP SAN) and its key, in d."""
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return cert, key


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    return make_cert(str(tmp_path_factory.mktemp("tls")))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory, tls_files):
    cert, key = tls_files
    srv = SluiceServer(tmp_path_factory.mktemp("data"), name="https", args=["--tls-cert", cert, "--tls-key", key],
                       verify=cert)
    try:
        srv.start()
        yield srv
    finally:
        srv.close()


def _addr(url):
    u = urllib.parse.urlsplit(url)
    return u.hostname, u.port


def test_listening_lines_say_https(tls_server):
    """Both APIs announce https:// URLs."""
    assert tls_server.scheme == "https", f"queue API: {tls_server.base_url}\n{tls_server.log_tail(20)}"
    assert tls_server.admin_scheme == "https", f"admin API: {tls_server.admin_url}\n{tls_server.log_tail(20)}"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_with_the_certificate_gets_health(tls_server, tls_files):
    """`curl --cacert cert.pem https://127.0.0.1:PORT/health` answers 200."""
    cert, _ = tls_files
    host, port = _addr(tls_server.base_url)
    r = subprocess.run(["curl", "-sS", "--max-time", "10", "--cacert", cert, "-o", "/dev/null", "-w", "%{http_code}",
                        f"https://127.0.0.1:{port}/health"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=20)
    assert r.returncode == 0 and r.stdout == b"200", f"curl: rc {r.returncode}, {r.stdout!r} {r.stderr!r}"


def test_put_receive_ack_over_https(tls_server):
    """A whole message's life over HTTPS, the certificate checked."""
    c = tls_server.client()
    try:
        assert c.base_url.startswith("https://")
        q = c.new_queue("tls")
        c.put_ok(q, "over TLS")
        msgs = c.receive_list(q, 1, 30)
        assert [m["message"] for m in msgs] == ["over TLS"]
        r = c.ack(q, msgs[0]["popReceipt"])
        assert r.status_code == 204, f"ack over TLS: {r.status_code} {r.text[:200]}"
        c.await_stats(q, size=0)
    finally:
        c.close()


def test_keep_alive_over_one_tls_connection(tls_server, tls_files):
    """Python's ssl module with the certificate as CA: two requests on one
    TLS connection."""
    cert, _ = tls_files
    host, port = _addr(tls_server.base_url)
    ctx = ssl.create_default_context(cafile=cert)
    with socket.create_connection((host, port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=host) as s:
            f = s.makefile("rb")
            for i in range(2):
                s.sendall(f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
                status = f.readline()
                assert status.startswith(b"HTTP/1.1 200"), f"request {i + 1} over one TLS connection: {status!r}"
                length = None
                while True:
                    h = f.readline()
                    assert h, f"connection closed in the headers of answer {i + 1}"
                    if h == b"\r\n":
                        break
                    k, _, v = h.decode("latin-1").partition(":")
                    if k.strip().lower() == "content-length":
                        length = int(v)
                assert length is not None, f"answer {i + 1} has no Content-Length"
                f.read(length)


def test_admin_api_over_https(tls_server):
    """The admin port speaks TLS too, with the admin token."""
    a = tls_server.admin()
    try:
        assert a.base_url.startswith("https://")
        r = a.list_accounts()
        assert r.status_code == 200, f"admin over TLS: {r.status_code} {r.text[:200]}"
        assert "dev" in r.text
        r = tls_server.admin(token="wrong-token-0123456789").list_accounts()
        assert r.status_code == 401, f"admin over TLS with a wrong token: {r.status_code} {r.text[:200]}"
    finally:
        a.close()


@pytest.mark.parametrize("which", ["queue", "admin"])
def test_plain_http_to_the_tls_port_gets_no_answer_that_looks_real(tls_server, which):
    """Plain HTTP to a TLS port: an error or a close within 5 s, never a
    200, never a hang."""
    port = tls_server.port if which == "queue" else tls_server.admin_port
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        data, closed = read_to_close(s)
        assert closed, f"plain HTTP to the TLS {which} port: no close within 5 s; read {data[:200]!r}"
    assert not data.startswith(b"HTTP/1.1 200") and not data.startswith(b"HTTP/1.0 200"), \
        f"plain HTTP to the TLS {which} port got a 200: {data[:200]!r}"
    # The server is none the worse for it.
    c = tls_server.client()
    try:
        assert c.health().status_code == 200, "GET /health over TLS after plain HTTP"
    finally:
        c.close()


def test_tls_from_the_environment(tmp_path, tls_files):
    """SLUICE_TLS_CERT and SLUICE_TLS_KEY do what the flags do."""
    cert, key = tls_files
    srv = SluiceServer(tmp_path / "data", name="https-env", env={"SLUICE_TLS_CERT": cert, "SLUICE_TLS_KEY": key},
                       verify=cert)
    try:
        srv.start()
        assert srv.scheme == "https" and srv.admin_scheme == "https", \
            f"listening on {srv.base_url} and {srv.admin_url}\n{srv.log_tail(20)}"
        c = srv.client()
        assert c.health().status_code == 200
        c.close()
    finally:
        srv.close()


@pytest.mark.parametrize("how", ["flags", "environment"])
def test_missing_certificate_stops_the_server_and_names_the_file(tmp_path, tls_files, how):
    """A certificate path that does not exist: the process exits non-zero
    within 10 s and says which file."""
    _, key = tls_files
    missing = str(tmp_path / "no-such-cert.pem")
    args = [BINARY, "dev", "--port", "0", "--admin-port", "0", "--data", str(tmp_path / "data")]
    env = SluiceServer(tmp_path / "data")._backend_env()
    if how == "flags":
        args += ["--tls-cert", missing, "--tls-key", key]
    else:
        env.update({"SLUICE_TLS_CERT": missing, "SLUICE_TLS_KEY": key})
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        out, _ = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate()
        raise AssertionError(f"the server did not exit within 10 s with a missing certificate; output:\n"
                             f"{out.decode('utf-8', 'replace')[-2000:]}")
    text = out.decode("utf-8", "replace")
    assert p.returncode != 0, f"exit status 0 with a missing certificate; output:\n{text[-2000:]}"
    assert missing in text, f"the output does not name {missing}:\n{text[-2000:]}"
