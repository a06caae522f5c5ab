"""The admin API (API.md "Admin API"): the bearer token, accounts, keys,
signed-URL generation, limits, and account deletion."""

import os
import subprocess

import pytest
import requests

from sluice_client import BINARY, SluiceServer, assert_error, assert_status, unique_name


@pytest.fixture(scope="module")
def admin(server):
    a = server.admin()
    yield a
    a.close()


ROUTES = [
    ("POST", "/admin/api/v1/accounts", {"accountName": "x-noauth"}),
    ("GET", "/admin/api/v1/accounts", None),
    ("GET", "/admin/api/v1/accounts/dev", None),
    ("DELETE", "/admin/api/v1/accounts/dev", None),
    ("POST", "/admin/api/v1/accounts/dev/keys", {"keyName": "k"}),
    ("DELETE", "/admin/api/v1/accounts/dev/keys/primary", None),
    ("POST", "/admin/api/v1/accounts/dev/signedUrls", {"levels": "r"}),
    ("POST", "/admin/api/v1/permissions", {"accountName": "dev", "keyName": "primary", "levels": ["r"]}),
]


@pytest.mark.parametrize("method,path,body", ROUTES)
@pytest.mark.parametrize("auth", [None, "Bearer wrong-token-0123456789", "Bearer ", "Basic YWRtaW46YWRtaW4=",
                                  "bearer-without-space"])
def test_without_or_with_wrong_token_is_401(server, client, method, path, body, auth):
    h = {} if auth is None else {"Authorization": auth}
    r = requests.request(method, server.admin_url + path, json=body, headers=h, timeout=10)
    err = assert_error(r, 401)
    assert err["code"] == "AuthenticationFailed"
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
    # Nothing happened: dev and its primary key still work.
    assert_status(client.list_queues(), 200)


def test_token_with_a_suffix_or_prefix_is_401(server):
    for t in (server.admin_token + "x", server.admin_token[:-1], "x" + server.admin_token):
        assert_error(server.admin(t).list_accounts(), 401)


def test_queue_api_key_is_not_an_admin_token(server):
    assert_error(server.admin(server.key).list_accounts(), 401)


def test_admin_openapi_document(server):
    r = assert_status(requests.get(server.admin_url + "/openapi.json", timeout=10), 200)
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    paths = set(doc["paths"])
    for p in ("/admin/api/v1/accounts", "/admin/api/v1/accounts/{accountName}",
              "/admin/api/v1/accounts/{accountName}/keys", "/admin/api/v1/accounts/{accountName}/keys/{keyName}",
              "/admin/api/v1/accounts/{accountName}/signedUrls"):
        assert p in paths, p
    assert "bearerAuth" in doc["components"]["securitySchemes"]


def test_account_lifecycle(admin, server):
    name = unique_name("life")
    r = assert_status(admin.create_account(name), 201)
    body = r.json()
    assert body["accountName"] == name
    keys = body["keys"]
    assert set(keys) == {"primary", "secondary"}
    assert all(len(k) == 86 for k in keys.values()) and keys["primary"] != keys["secondary"]
    assert_error(admin.create_account(name), 409)
    listed = [a["accountName"] for a in assert_status(admin.list_accounts(), 200).json()]
    assert name in listed and "dev" in listed
    got = assert_status(admin.get_account(name), 200).json()
    assert got["accountName"] == name and got["keys"] == keys
    c = server.client(name, key=keys["primary"])
    assert_status(c.list_queues(), 200)
    assert_status(admin.delete_account(name), 200)
    assert_error(admin.get_account(name), 404)
    assert_error(admin.delete_account(name), 404)
    assert name not in [a["accountName"] for a in admin.list_accounts().json()]
    # Gone at once on this node: its keys no longer authenticate.
    assert_error(c.list_queues(), 401)


def test_account_deletion_removes_its_queues(admin, server):
    name, key = admin.new_account("del")
    c = server.client(name, key=key)
    queues = [c.new_queue("dq") for _ in range(3)]
    for q in queues:
        c.put_ok(q, "doomed")
    r = assert_status(admin.delete_account(name), 200).json()
    assert r["deleted"] is True and r["queuesDeleted"] == 3
    assert_error(c.get_queue(queues[0]), 401)
    # A new account of the same name starts empty: the old queues are gone.
    r = assert_status(admin.create_account(name), 201)
    c2 = server.client(name, key=r.json()["keys"]["primary"])
    assert assert_status(c2.list_queues(), 200).json() == []
    for q in queues:
        assert_error(c2.get_queue(q), 404)
    # The old key does not work for the new account.
    assert_error(c.list_queues(), 401)


@pytest.mark.parametrize("body", [{}, {"accountName": ""}, {"accountName": "."}, {"accountName": ".."},
                                  {"accountName": "a/b"}, {"accountName": "x" * 81}, {"accountName": 5},
                                  {"accountName": None}, {"accountName": "\u00fc"},
                                  # Reserved (API.md): they would stand for routes in SQS queue URLs.
                                  {"accountName": "api"}, {"accountName": "metrics"}, {"accountName": "ui"}])
def test_bad_account_names_are_400(admin, body):
    assert_error(admin.request("POST", admin.BASE, json=body), 400)


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b"null", b'{"accountName": "a", "accountName": "b"}'])
def test_bad_json_is_400(admin, data):
    assert_error(admin.request("POST", admin.BASE, data=data, headers={"Content-Type": "application/json"}), 400)


def test_body_over_limit_is_413(admin):
    r = admin.request("POST", admin.BASE, data=b'{"accountName": "' + b"a" * 20000 + b'"}',
                      headers={"Content-Type": "application/json"})
    assert_error(r, 413)


def test_unknown_routes_are_json_404(admin):
    assert_error(admin.request("GET", "/admin/api/v1/nothing"), 404)
    assert_error(admin.request("GET", "/api/v1/accounts/dev/queues"), 404)


def test_keys(admin, server):
    name, key = admin.new_account("keys")
    assert_error(admin.create_key(name, "primary"), 409)
    r = assert_status(admin.create_key(name, "ci"), 201).json()
    assert r["keyName"] == "ci" and len(r["key"]) == 86
    assert_error(admin.create_key(name, "ci"), 409)
    assert set(admin.get_account(name).json()["keys"]) == {"primary", "secondary", "ci"}
    assert_status(server.client(name, key=r["key"]).list_queues(), 200)
    assert_status(admin.delete_key(name, "ci"), 204)
    assert_error(admin.delete_key(name, "ci"), 404)
    assert_error(admin.delete_key(name, "never"), 404)
    assert_error(admin.create_key(unique_name("nobody"), "k"), 404)
    assert_error(admin.delete_key(unique_name("nobody"), "k"), 404)
    for bad in ("", ".", "..", "a b", "x" * 81):
        assert_error(admin.create_key(name, bad), 400)
    assert_error(admin.request("POST", f"{admin.BASE}/{name}/keys", json={}), 400)
    # Rotation: delete primary and create it again; the old primary stops working.
    assert_status(admin.delete_key(name, "primary"), 204)
    new = assert_status(admin.create_key(name, "primary"), 201).json()["key"]
    assert new != key
    assert_error(server.client(name, key=key).list_queues(), 401)
    assert_status(server.client(name, key=new).list_queues(), 200)


def test_key_limit(admin):
    name, _ = admin.new_account("many")
    made = 2
    while True:
        r = admin.create_key(name, f"k{made}")
        if r.status_code != 201:
            break
        made += 1
        assert made <= 64, "no limit on the number of keys"
    assert_error(r, 400)
    assert made == 32


@pytest.mark.parametrize("body,status", [
    ({}, 400),
    ({"levels": ""}, 400),
    ({"levels": "rx"}, 400),
    ({"levels": "rr"}, 400),
    ({"levels": 7}, 400),
    ({"levels": "r", "queueName": ".."}, 400),
    ({"levels": "r", "queueName": "a/b"}, 400),
    ({"levels": "r", "startTime": "tomorrow"}, 400),
    ({"levels": "r", "endTime": "2026-11-21T10:00:00+1:00"}, 400),  # offsets are +HH:MM
    ({"levels": "r", "startTime": "2026-11-21T10:00:00Z", "endTime": "2026-11-21T10:00:00Z"}, 400),
    ({"levels": "r", "startTime": "2026-11-21T11:00:00Z", "endTime": "2026-11-21T10:00:00Z"}, 400),
    ({"levels": "r", "keyName": "nosuchkey"}, 404),
    ({"levels": "r", "keyName": "bad name"}, 400),
])
def test_signed_url_input_checks(admin, body, status):
    assert_error(admin.signed_url("dev", **body), status)


def test_signed_url_for_missing_account_is_404(admin):
    assert_error(admin.signed_url(unique_name("nobody"), levels="r"), 404)


def test_signed_url_query_string(admin):
    r = assert_status(admin.signed_url("dev", levels="pr", queueName="orders", startTime="2026-11-21T10:00:00Z",
                                       endTime="2036-11-21T10:00:00Z"), 200).json()
    qs = r["queryString"]
    assert qs.startswith("auth=") and "&sig=" in qs and "q=orders" in qs and "st=" in qs and "et=" in qs, qs


def _serve(tmp_path, env_extra, *flags):
    env = {k: v for k, v in os.environ.items() if k != "SLUICE_ADMIN_TOKEN"}
    env.update(env_extra)
    return subprocess.run([BINARY, "serve", "--data", str(tmp_path), "--port", "0", "--admin-port", "0", *flags],
                          capture_output=True, text=True, env=env, timeout=30)


def test_serve_refuses_to_start_without_an_admin_token(tmp_path):
    p = _serve(tmp_path, {})
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert "admin token" in p.stderr and "SLUICE_ADMIN_TOKEN" in p.stderr, p.stderr
    p = _serve(tmp_path, {"SLUICE_ADMIN_TOKEN": "short"})
    assert p.returncode == 2 and "16 to 1024" in p.stderr, (p.returncode, p.stderr)


def test_dev_keeps_the_dev_keys_across_restarts(tmp_path):
    srv = SluiceServer(tmp_path / "data", name="restart")
    try:
        srv.start()
        key = srv.key
        q = srv.client().new_queue("kept")
        srv.stop()
        srv.start()
        assert srv.key == key, "sluice dev made new keys for an existing dev account"
        assert_status(srv.client().get_queue(q), 200)
    finally:
        srv.close()


# --- CassieQ's admin routes ------------------------------------------------------


def test_create_account_with_a_bare_json_string_as_cassieq_does(admin):
    """CassieQ's admin API takes the account's name as a bare JSON string;
    its tooling gets the same 201 and keys as with {"accountName"}."""
    name = unique_name("cq")
    r = assert_status(admin.request("POST", admin.BASE, json=name), 201).json()
    assert r["accountName"] == name and set(r["keys"]) == {"primary", "secondary"}, r
    assert_error(admin.request("POST", admin.BASE, json=name), 409)
    assert_error(admin.request("POST", admin.BASE, json="not a/name"), 400)
    assert_error(admin.request("POST", admin.BASE, json=7), 400)


def _cassieq_query(query):
    """What CassieQ's Java client sends: the query string split at '&' and
    '=', each value encoded again (OkHttp leaves ':' and encodes '%' and '+')."""
    return "&".join(k + "=" + v.replace("%", "%25").replace("+", "%2B") for k, _, v in
                    (p.partition("=") for p in query.split("&")))


def test_permissions_route_makes_signed_urls_as_cassieq_does(admin, server):
    """POST /admin/api/v1/permissions with the body CassieQ's AdminClient
    sends (nulls included, level names, a time with milliseconds) answers
    201 {"queryParam"}; the query string works through CassieQ's client."""
    name, _ = admin.new_account("cqperm")
    body = {"accountName": name, "keyName": "primary", "levels": ["CreateQueue", "GetQueueInformation"],
            "startTime": None, "endTime": "2036-04-30T16:46:52.000Z", "queueName": None}
    r = assert_status(admin.request("POST", "/admin/api/v1/permissions", json=body), 201).json()
    qp = r["queryParam"]
    assert qp.startswith("auth=gc&et=2036-04-30T16:46:52Z&sig="), qp
    base = f"{server.base_url}/api/v1/accounts/{name}/queues"
    q = unique_name("viaperm")
    assert_status(requests.post(f"{base}?{_cassieq_query(qp)}", json={"queueName": q}, timeout=10), 201)
    assert_status(requests.get(f"{base}/{q}?{_cassieq_query(qp)}", timeout=10), 200)
    assert_error(requests.delete(f"{base}/{q}?{_cassieq_query(qp)}", timeout=10), 403)
    # Letters, one queue, times in epoch milliseconds (Jackson's default for Joda times).
    body = {"accountName": name, "keyName": "secondary", "levels": ["g"], "queueName": q,
            "startTime": 0, "endTime": 4102444800000}
    qp = assert_status(admin.request("POST", "/admin/api/v1/permissions", json=body), 201).json()["queryParam"]
    assert qp.startswith(f"auth=g&q={q}&st=1970-01-01T00:00:00Z&et=2100-01-01T00:00:00Z&sig="), qp
    assert_status(requests.get(f"{base}/{q}?{_cassieq_query(qp)}", timeout=10), 200)


@pytest.mark.parametrize("change,status", [
    ({"levels": []}, 400),
    ({"levels": ["Everything"]}, 400),
    ({"levels": None}, 400),
    ({"accountName": None}, 400),
    ({"accountName": "nobody-at-all"}, 404),
    ({"keyName": "nokey"}, 404),
    ({"queueName": "a/b"}, 400),
    ({"startTime": "yesterday"}, 400),
    ({"startTime": "2036-01-01T00:00:00Z", "endTime": "2035-01-01T00:00:00Z"}, 400),
])
def test_permissions_route_input_checks(admin, change, status):
    body = dict({"accountName": "dev", "keyName": "primary", "levels": ["ReadMessage"]}, **change)
    if change.get("accountName") == "nobody-at-all":
        body["accountName"] = unique_name("nobody")
    assert_error(admin.request("POST", "/admin/api/v1/permissions", json=body), status)
