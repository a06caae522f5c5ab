"""Authentication and authorization of the queue API (API.md "Auth"): each
scheme positive and negative, signed URLs, revocation, and isolation
between accounts. SigV4 requests are signed by real AWS signers: botocore's
SigV4Auth and `curl --aws-sigv4`, never by code written here."""

import base64
import datetime
import hashlib
import hmac
import http.client
import os
import secrets
import shutil
import subprocess
import time
import urllib.parse
from unittest import mock

import pytest
import requests

from sluice_client import assert_error, assert_status, await_until, describe, unique_name

botocore = pytest.importorskip("botocore")
import botocore.auth  # noqa: E402
import botocore.awsrequest  # noqa: E402
import botocore.credentials  # noqa: E402


def b64url(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def utcnow():
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


def random_key():
    return b64url(secrets.token_bytes(64))


# --- fixtures ------------------------------------------------------------------


@pytest.fixture(scope="module")
def admin(server):
    a = server.admin()
    yield a
    a.close()


@pytest.fixture(scope="module")
def other(server, admin):
    """A second account with its own key and client."""
    name, key = admin.new_account("other")
    c = server.client(name, key=key)
    yield c
    c.close()


@pytest.fixture
def q(client):
    return client.new_queue("auth")


def raw(client, method, path, headers=None, body=None):
    """A request sent exactly as given (http.client does not normalize the
    path), for the dot-segment tests."""
    u = urllib.parse.urlsplit(client.base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def anon(client):
    """The same server and account without credentials."""
    c = client.clone()
    c.key = None
    return c


# --- no credentials, Key ---------------------------------------------------------


def test_no_credentials_is_401_with_www_authenticate(client, q):
    c = anon(client)
    for r in (c.list_queues(), c.get_queue(q), c.put(q, "x"), c.get_next(q), c.create_queue(unique_name("n"))):
        err = assert_error(r, 401)
        assert err["code"] == "AuthenticationFailed"
        assert "AWS4-HMAC-SHA256" in r.headers.get("WWW-Authenticate", ""), describe(r)
    assert_status(client.stats(q), 200)
    assert client.stats_json(q)["size"] == 0, "an unauthenticated put went through"


def test_refused_post_keeps_the_connection_alive(client, q):
    """PEERS.md's trap: the 401 is answered after the body was read, so the
    connection survives it."""
    u = urllib.parse.urlsplit(client.base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
    try:
        conn.request("POST", client.qpath(q, "/messages"), body=b"x" * 50000, headers={"Content-Type": "text/plain"})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 401
        assert not resp.will_close, "a refused POST closed the connection"
        sock = conn.sock
        conn.request("GET", client.qpath(q), headers=client._auth_headers("GET", "", None, None))
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200 and conn.sock is sock
    finally:
        conn.close()


def test_operations_endpoints_need_no_credentials(client):
    c = anon(client)
    assert_status(c.health(), 200)
    assert_status(c.request("GET", "/openapi.json"), 200)


@pytest.mark.parametrize("header", [
    "Key",
    "Key ",
    "Key abc",
    "Key " + "A" * 86 + " extra",
    "key-but-not-a-scheme",
    "Basic ZGV2OmRldg==",
    "Bearer " + "A" * 86,
])
def test_malformed_authorization_is_401(client, q, header):
    r = requests.get(client.base_url + client.qpath(q), headers={"Authorization": header}, timeout=10)
    assert_error(r, 401)


def test_wrong_key_is_401(client, q):
    c = client.clone(key=random_key())
    assert_error(c.get_queue(q), 401)
    assert_error(c.put(q, "x"), 401)


def test_secondary_and_named_keys_work(server, admin, client, q):
    keys = assert_status(admin.get_account("dev"), 200).json()["keys"]
    assert set(keys) >= {"primary", "secondary"}
    assert keys["primary"] == server.key
    assert_status(client.clone(key=keys["secondary"]).get_queue(q), 200)
    name = unique_name("k")
    k = assert_status(admin.create_key("dev", name), 201).json()
    assert k["keyName"] == name and len(k["key"]) == 86
    assert_status(client.clone(key=k["key"]).get_queue(q), 200)


def test_revoked_key_is_rejected_within_5_seconds(admin, client, q):
    name = unique_name("rev")
    key = assert_status(admin.create_key("dev", name), 201).json()["key"]
    c = client.clone(key=key)
    assert_status(c.get_queue(q), 200)
    assert_status(admin.delete_key("dev", name), 204)
    t0 = time.monotonic()
    await_until(lambda: c.get_queue(q).status_code == 401, timeout=5.0, desc="the revoked key to be refused")
    assert time.monotonic() - t0 <= 5.0
    assert_error(c.put(q, "after revocation"), 401)
    assert client.stats_json(q)["size"] == 0


def test_other_accounts_key_is_401(client, other, q):
    # other's key on dev's queues, and dev's key on other's queues.
    assert_error(client.clone(key=other.key).get_queue(q), 401)
    assert_error(client.clone(key=other.key).list_queues(), 401)
    oq = other.new_queue("mine")
    assert_error(other.clone(key=client.key).get_queue(oq), 401)


# --- isolation between accounts ----------------------------------------------------


def test_account_cannot_list_read_or_write_another_accounts_queues(client, other, q):
    client.put_ok(q, "dev's secret")
    oq = other.new_queue("iso")
    # other, with its own key, addressing dev's account: 401 on every route.
    intruder = SluiceClientFor(other, "dev")
    assert_error(intruder.list_queues(), 401, 403)
    assert_error(intruder.get_queue(q), 401, 403)
    assert_error(intruder.get_next(q), 401, 403)
    assert_error(intruder.put(q, "x"), 401, 403)
    assert_error(intruder.delete_queue(q), 401, 403)
    assert_error(intruder.purge(q), 401, 403)
    # Each listing shows only its own account's queues.
    mine = {d["queueName"] for d in assert_status(other.list_queues(), 200).json()}
    theirs = {d["queueName"] for d in assert_status(client.list_queues(), 200).json()}
    assert oq in mine and q not in mine
    assert q in theirs and oq not in theirs
    # dev's queue is untouched.
    assert client.stats_json(q)["size"] == 1
    client.drain(q)


def SluiceClientFor(c, account):
    """c's key, but requests addressed to account."""
    x = c.clone()
    x.account = account
    return x


def test_authenticated_caller_of_missing_queue_gets_404(client):
    assert_error(client.get_queue(unique_name("missing")), 404)
    assert_error(client.put(unique_name("missing"), "x"), 404)


@pytest.mark.parametrize("name", [".", ".."])
def test_dot_queue_names_are_400(client, name):
    assert_error(client.create_queue(name), 400)
    h = client._auth_headers("GET", "", None, None)
    status, _ = raw(client, "GET", f"{client.qbase()}/{name}/statistics", headers=h)
    assert status == 400, status


# --- Signed -----------------------------------------------------------------------


def signed_headers(account, key, method, path, t=None, header="X-Sluice-Request-Time"):
    t = t or iso(utcnow())
    msg = f"{account}\n{method}\n{path}\n{t}".encode()
    sig = b64url(hmac.new(b64url_decode(key), msg, hashlib.sha256).digest())
    return {"Authorization": f"Signed {sig}", header: t}


def signed_request(client, method, path, sign_method=None, sign_path=None, key=None, **kw):
    h = signed_headers(client.account, key or client.key, sign_method or method, sign_path or path,
                       kw.pop("t", None), kw.pop("header", "X-Sluice-Request-Time"))
    h.update(kw.pop("headers", {}))
    return requests.request(method, client.base_url + path, headers=h, timeout=10, **kw)


def test_signed_positive(client, q):
    assert_status(signed_request(client, "GET", client.qpath(q)), 200)
    assert_status(signed_request(client, "POST", client.qpath(q, "/messages"), data=b"signed"), 201)
    assert_status(signed_request(client, "GET", client.qpath(q, "/statistics"), header="x-cassieq-request-time"), 200)
    client.drain(q)


def test_signed_tampered_path_or_method_is_401(client, q):
    q2 = client.new_queue("auth2")
    assert_error(signed_request(client, "GET", client.qpath(q2), sign_path=client.qpath(q)), 401)
    assert_error(signed_request(client, "DELETE", client.qpath(q), sign_method="GET"), 401)
    assert_status(client.get_queue(q), 200)


@pytest.mark.parametrize("offset", [-120, 120, -3600])
def test_signed_time_outside_skew_is_401(client, q, offset):
    t = iso(utcnow() + datetime.timedelta(seconds=offset))
    assert_error(signed_request(client, "GET", client.qpath(q), t=t), 401)


def test_signed_with_wrong_or_other_accounts_key_is_401(client, other, q):
    assert_error(signed_request(client, "GET", client.qpath(q), key=random_key()), 401)
    assert_error(signed_request(client, "GET", client.qpath(q), key=other.key), 401)


def test_signed_malformed_time_is_401(client, q):
    for t in ("yesterday", "2026-11-21 10:00:00", ""):
        h = signed_headers(client.account, client.key, "GET", client.qpath(q), t=t or None)
        if not t:
            del h["X-Sluice-Request-Time"]
        else:
            h["X-Sluice-Request-Time"] = t
        assert_error(requests.get(client.base_url + client.qpath(q), headers=h, timeout=10), 401)


# --- SigV4 with botocore ------------------------------------------------------------


def sigv4(client, method, path, params=None, body=b"", key=None, akid=None, when=None, sign=None):
    """Signs with botocore's SigV4Auth and sends with requests. sign, when
    given, changes (method, path, params, body) before signing only, so the
    request sent differs from the one signed."""
    key = key or client.key
    akid = akid or client.account
    sm, sp, sq, sb = sign or (method, path, params, body)
    url = client.base_url + sp + ("?" + urllib.parse.urlencode(sq) if sq else "")
    req = botocore.awsrequest.AWSRequest(method=sm, url=url, data=sb,
                                         headers={"Content-Type": "application/json"})
    signer = botocore.auth.SigV4Auth(botocore.credentials.Credentials(akid, key), "sqs", "us-east-1")
    if when is not None:
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            signer.add_auth(req)
    else:
        signer.add_auth(req)
    headers = {k: v for k, v in req.headers.items()}
    send_url = client.base_url + path + ("?" + urllib.parse.urlencode(params) if params else "")
    return requests.request(method, send_url, data=body, headers=headers, timeout=30)


def test_sigv4_botocore_positive(client, q):
    assert_status(sigv4(client, "GET", client.qbase()), 200)
    assert_status(sigv4(client, "GET", client.qpath(q)), 200)
    assert_status(sigv4(client, "POST", client.qpath(q, "/messages"), body=b"hello sigv4"), 201)
    m = assert_status(sigv4(client, "GET", client.qpath(q, "/messages/next"),
                            params={"invisibilityTimeSeconds": "30"}), 200).json()
    assert m["message"] == "hello sigv4"
    assert_status(sigv4(client, "DELETE", client.qpath(q, "/messages"), params={"popReceipt": m["popReceipt"]}), 204)
    body = b'{"maxMessages": 1, "waitSeconds": 0}'
    assert_status(sigv4(client, "POST", client.qpath(q, "/messages/receive"), body=body), 200)


def test_sigv4_access_key_with_key_name(admin, client, q):
    assert_status(sigv4(client, "GET", client.qpath(q), akid="dev:primary"), 200)
    keys = admin.get_account("dev").json()["keys"]
    assert_status(sigv4(client, "GET", client.qpath(q), akid="dev:secondary", key=keys["secondary"]), 200)
    # The key named in the access key id must be the one that signed.
    assert_error(sigv4(client, "GET", client.qpath(q), akid="dev:secondary", key=client.key), 401)
    assert_error(sigv4(client, "GET", client.qpath(q), akid="dev:nosuchkey"), 401)


def test_sigv4_tampered_body_query_path_method_is_401(client, q):
    p = client.qpath(q, "/messages")
    # body
    assert_error(sigv4(client, "POST", p, body=b"evil", sign=("POST", p, None, b"good")), 401)
    # query
    nxt = client.qpath(q, "/messages/next")
    assert_error(sigv4(client, "GET", nxt, params={"invisibilityTimeSeconds": "600"},
                       sign=("GET", nxt, {"invisibilityTimeSeconds": "5"}, b"")), 401)
    # path
    q2 = client.new_queue("auth2")
    assert_error(sigv4(client, "GET", client.qpath(q2), sign=("GET", client.qpath(q), None, b"")), 401)
    # method
    assert_error(sigv4(client, "DELETE", client.qpath(q), sign=("GET", client.qpath(q), None, b"")), 401)
    assert_status(client.get_queue(q), 200)
    assert client.stats_json(q)["size"] == 0


@pytest.mark.parametrize("offset", [-300, 300])
def test_sigv4_time_outside_skew_is_401(client, q, offset):
    when = utcnow() + datetime.timedelta(seconds=offset)
    assert_error(sigv4(client, "GET", client.qpath(q), when=when), 401)
    # Within the skew it is fine.
    assert_status(sigv4(client, "GET", client.qpath(q), when=utcnow() - datetime.timedelta(seconds=20)), 200)


def test_sigv4_wrong_or_other_accounts_key_is_401(client, other, q):
    assert_error(sigv4(client, "GET", client.qpath(q), key=random_key()), 401)
    # other's own credentials, addressed at dev's queue.
    assert_error(sigv4(client, "GET", client.qpath(q), key=other.key, akid=other.account), 401, 403)
    # dev as access key id with other's key.
    assert_error(sigv4(client, "GET", client.qpath(q), key=other.key), 401)


# --- SigV4 with curl ---------------------------------------------------------------


curl_required = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def curl(client, *args, key=None, user=None):
    user = user or f"{client.account}:{key or client.key}"
    out = subprocess.run(
        ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--aws-sigv4", "aws:amz:us-east-1:sqs", "--user", user, *args],
        capture_output=True, timeout=30, text=True)
    body, _, status = out.stdout.rpartition("\n")
    return int(status), body


@curl_required
def test_sigv4_curl_positive(client, q):
    base = client.base_url
    status, body = curl(client, "-X", "POST", base + client.qpath(q, "/messages"), "-d", "from curl")
    assert status == 201, body
    status, body = curl(client, base + client.qpath(q, "/messages/peek") + "?count=5")
    assert status == 200 and "from curl" in body, body
    status, body = curl(client, "-X", "POST", base + client.qpath(q, "/messages/receive"),
                        "-H", "Content-Type: application/json", "-d", '{"maxMessages": 5}')
    assert status == 200 and "from curl" in body, body


@curl_required
def test_sigv4_curl_wrong_key_is_401(client, other, q):
    status, body = curl(client, client.base_url + client.qpath(q), key=random_key())
    assert status == 401, body
    status, body = curl(client, client.base_url + client.qpath(q), user=f"{other.account}:{other.key}")
    assert status in (401, 403), body


# --- signed URLs -------------------------------------------------------------------


def url_with(client, path, qs, extra=""):
    return client.base_url + path + "?" + (extra + "&" if extra else "") + qs


def make_url(admin, account="dev", **body):
    r = assert_status(admin.signed_url(account, **body), 200)
    return r.json()["queryString"]


def test_signed_url_grants_listed_levels_on_its_queue(admin, client, q):
    qs = make_url(admin, levels="gp", queueName=q)
    assert_status(requests.get(url_with(client, client.qpath(q), qs), timeout=10), 200)
    assert_status(requests.get(url_with(client, client.qpath(q, "/statistics"), qs), timeout=10), 200)
    assert_status(requests.post(url_with(client, client.qpath(q, "/messages"), qs), data=b"via url", timeout=10), 201)
    # Other levels: 403.
    assert_error(requests.get(url_with(client, client.qpath(q, "/messages/next"), qs), timeout=10), 403)
    assert_error(requests.delete(url_with(client, client.qpath(q), qs), timeout=10), 403)
    # Another queue, or an account-wide route: 403.
    q2 = client.new_queue("other-q")
    assert_error(requests.get(url_with(client, client.qpath(q2), qs), timeout=10), 403)
    assert_error(requests.get(url_with(client, client.qbase(), qs), timeout=10), 403)
    assert_status(client.get_queue(q), 200)
    assert client.stats_json(q)["size"] == 1
    client.drain(q)


def test_signed_url_without_queue_covers_every_queue(admin, client, q):
    qs = make_url(admin, levels="rg")
    assert_status(requests.get(url_with(client, client.qbase(), qs), timeout=10), 200)
    client.put_ok(q, "read me")
    m = assert_status(requests.get(url_with(client, client.qpath(q, "/messages/next"), qs,
                                            "invisibilityTimeSeconds=1"), timeout=10), 200).json()
    assert m["message"] == "read me"
    assert_error(requests.post(url_with(client, client.qpath(q, "/messages"), qs), data=b"x", timeout=10), 403)


def test_signed_url_create_level_creates_only_its_queue(admin, client):
    name = unique_name("urlmade")
    qs = make_url(admin, levels="c", queueName=name)
    r = requests.post(url_with(client, client.qbase(), qs), json={"queueName": name}, timeout=10)
    assert_status(r, 201)
    r = requests.post(url_with(client, client.qbase(), qs), json={"queueName": unique_name("nope")}, timeout=10)
    assert_error(r, 403)


def test_signed_url_time_window(admin, client, q):
    now = utcnow()
    future = make_url(admin, levels="g", queueName=q, startTime=iso(now + datetime.timedelta(hours=1)))
    assert_error(requests.get(url_with(client, client.qpath(q), future), timeout=10), 401)
    past = make_url(admin, levels="g", queueName=q, startTime=iso(now - datetime.timedelta(hours=2)),
                    endTime=iso(now - datetime.timedelta(hours=1)))
    assert_error(requests.get(url_with(client, client.qpath(q), past), timeout=10), 401)
    current = make_url(admin, levels="g", queueName=q, startTime=iso(now - datetime.timedelta(minutes=5)),
                       endTime=iso(now + datetime.timedelta(minutes=5)))
    assert_status(requests.get(url_with(client, client.qpath(q), current), timeout=10), 200)


def test_signed_url_with_times_works_as_cassieq_clients_send_it(admin, client, q):
    """CassieQ's Java client splits a signed URL's query string and encodes
    each value again (as java.net.URLEncoder does: ':' becomes %3A, '+'
    %2B). The URL the admin API makes writes its times' colons as they are,
    so they survive that; a URL written with %3A, as older Sluice did, comes
    through encoded twice (%253A) and works too."""
    now = utcnow()
    qs = make_url(admin, levels="g", queueName=q, startTime=iso(now - datetime.timedelta(minutes=5)),
                  endTime=iso(now + datetime.timedelta(minutes=5)))

    def as_cassieq_client(query):  # each raw value encoded again, not decoded first
        return "&".join(k + "=" + urllib.parse.quote(v, safe="") for k, _, v in
                        (p.partition("=") for p in query.split("&")))

    assert_status(requests.get(url_with(client, client.qpath(q), as_cassieq_client(qs)), timeout=10), 200)
    older = qs.replace(":", "%3A")  # as older Sluice wrote it
    assert "%253A" in as_cassieq_client(older)
    assert_status(requests.get(url_with(client, client.qpath(q), as_cassieq_client(older)), timeout=10), 200)


def test_signed_url_times_with_offsets(admin, client, q):
    """Times with an offset (+01:00), as CassieQ's tools and Java's
    OffsetDateTime write them, are accepted by the admin API; the URL it
    makes works."""
    now = datetime.datetime.now(datetime.timezone(datetime.timedelta(hours=1)))
    qs = make_url(admin, levels="g", queueName=q,
                  startTime=(now - datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S+01:00"),
                  endTime=(now + datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S+01:00"))
    assert_status(requests.get(url_with(client, client.qpath(q), qs), timeout=10), 200)


def test_signed_url_tampered_is_401(admin, client, q):
    qs = make_url(admin, levels="g", queueName=q)
    params = dict(urllib.parse.parse_qsl(qs))
    for change in ({"auth": "gp"}, {"q": unique_name("x")}, {"sig": b64url(secrets.token_bytes(32))}):
        p = dict(params, **change)
        target = client.qpath(p["q"]) if "q" in change else client.qpath(q)
        r = requests.get(client.base_url + target + "?" + urllib.parse.urlencode(p), timeout=10)
        assert_error(r, 401)


def test_signed_url_of_revoked_key_is_401(admin, client, q):
    name = unique_name("urlkey")
    assert_status(admin.create_key("dev", name), 201)
    qs = make_url(admin, levels="g", queueName=q, keyName=name)
    assert_status(requests.get(url_with(client, client.qpath(q), qs), timeout=10), 200)
    assert_status(admin.delete_key("dev", name), 204)
    await_until(lambda: requests.get(url_with(client, client.qpath(q), qs), timeout=10).status_code == 401,
                timeout=5.0, desc="the revoked key's signed URL to be refused")


def test_signed_url_of_other_account_is_401(admin, client, other, q):
    qs = make_url(admin, other.account, levels="g", queueName=q)
    assert_error(requests.get(url_with(client, client.qpath(q), qs), timeout=10), 401)


# --- the dev banner ------------------------------------------------------------------


@curl_required
def test_dev_banner_curl_commands_work_as_printed(server):
    lines = server.stdout_lines
    start = lines.index("Try it (bash):")
    cmds = []
    for l in lines[start + 1:]:
        if not l.strip():
            break
        cmds.append(l.strip())
    assert any("--aws-sigv4" in c for c in cmds) and any("Authorization: Key" in c for c in cmds), cmds
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", "\n".join(cmds)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert '"queueName":"orders"' in text, text
    assert '"messageId"' in text, text
    assert '"status":204' in text, text
    assert '"size":0' in text, text
    assert '"accountName":"dev"' in text, text
    assert "error" not in text, text


def _banner_block(lines, title):
    """The lines after title up to the next empty one, as printed."""
    start = next(i for i, l in enumerate(lines) if l.startswith(title))
    block = []
    for l in lines[start + 1:]:
        if not l.strip():
            break
        block.append(l.strip())
    return block


def test_dev_banner_client_commands_work_as_printed(server):
    """The banner's client commands run as printed, from any directory and
    with PATH as it is (a fresh checkout has no `sluice` on PATH: the banner
    names the binary so that `sluice: command not found` cannot happen)."""
    c = server.client()
    assert c.create_queue("orders").status_code in (200, 201), "the queue the commands use"
    c.close()
    lines = server.stdout_lines
    key_line = next(l for l in _banner_block(lines, "Try it (bash):") if l.startswith("KEY="))
    cmds = _banner_block(lines, "The client commands")
    assert len(cmds) == 2 and cmds[0].startswith("export SLUICE_URL="), cmds
    script = "\n".join([key_line] + cmds)
    out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60,
                         cwd="/")
    assert out.returncode == 0, out.stderr
    assert "orders" in out.stdout and "hi" in out.stdout, out.stdout


def test_openapi_documents_the_security_schemes(client):
    doc = assert_status(client.request("GET", "/openapi.json"), 200).json()
    schemes = doc["components"]["securitySchemes"]
    assert {"key", "signed", "sigv4", "signedUrl"} <= set(schemes)
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if not isinstance(op, dict) or "responses" not in op:
                continue
            if path.startswith("/api/"):
                assert op.get("security"), f"{method} {path} has no security"
                assert "401" in op["responses"] and "403" in op["responses"], f"{method} {path}"
                assert op.get("x-sluice-level"), f"{method} {path} has no level"
            else:
                assert op.get("security") == [], f"{method} {path} should need no credentials"
