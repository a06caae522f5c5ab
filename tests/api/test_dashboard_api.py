"""What the dashboard stands on, on the admin port (API.md "Operations
endpoints"): its files under /ui/, built into the binary, and the queue
port's queue and event-log routes served under /admin with the admin token
instead of an account's key. The dashboard itself, in a real browser, is
test_dashboard.py."""

import os
import subprocess
import sys

import requests

from sluice_client import assert_error, assert_status, await_until, unique_name

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


def admin_req(server, method, path, token=None, **kw):
    h = kw.pop("headers", {})
    if token is not False:
        h["Authorization"] = "Bearer " + (token or server.admin_token)
    return requests.request(method, server.admin_url + path, headers=h, timeout=10, verify=False, **kw)


def test_the_dashboard_files_are_served_without_a_token(server):
    r = requests.get(server.admin_url + "/ui", allow_redirects=False, timeout=10, verify=False)
    assert r.status_code == 301 and r.headers["Location"] == "/ui/"
    r = assert_status(requests.get(server.admin_url + "/ui/", timeout=10, verify=False), 200)
    assert r.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in r.headers["Content-Security-Policy"]  # no CDN, no inline script from data
    page = r.text
    assert "app.js" in page and "style.css" in page
    with open(os.path.join(REPO, "web", "index.html"), encoding="utf-8") as f:
        assert page == f.read(), "the binary serves another index.html than web/'s"
    for name, ctype in (("app.js", "text/javascript"), ("style.css", "text/css")):
        r = assert_status(requests.get(server.admin_url + "/ui/" + name, timeout=10, verify=False), 200)
        assert r.headers["Content-Type"].startswith(ctype)
        with open(os.path.join(REPO, "web", name), encoding="utf-8") as f:
            assert r.text == f.read()
    assert assert_error(requests.get(server.admin_url + "/ui/secret.txt", timeout=10, verify=False),
                        404)["code"] == "NotFound"
    # Not on the queue port.
    assert requests.get(server.base_url + "/ui/", timeout=10, verify=False).status_code == 404


def test_queue_routes_under_admin_need_the_admin_token(server, client):
    path = "/admin/api/v1/accounts/dev/queues"
    assert_error(admin_req(server, "GET", path, token=False), 401)
    assert_error(admin_req(server, "GET", path, token="not-the-token-0123456789"), 401)
    # An account key is no admin token, in any scheme.
    assert_error(admin_req(server, "GET", path, headers={"Authorization": "Key " + server.key}, token=False), 401)
    assert_error(admin_req(server, "GET", path, token=server.key), 401)
    # The queue port does not take the admin token either.
    r = requests.get(server.base_url + "/api/v1/accounts/dev/queues",
                     headers={"Authorization": "Bearer " + server.admin_token}, timeout=10, verify=False)
    assert r.status_code == 401


def test_every_queue_operation_with_the_admin_token(server, client):
    q, dlq = unique_name("ui"), unique_name("uidlq")
    base = "/admin/api/v1/accounts/dev/queues"
    assert_status(admin_req(server, "POST", base, json={"queueName": dlq}), 201)
    assert_status(admin_req(server, "POST", base, json={"queueName": q, "dlqName": dlq, "maxDeliveryCount": 1}), 201)
    assert q in [x["queueName"] for x in assert_status(admin_req(server, "GET", base), 200).json()]
    # A message put with the account's key is seen by the operator, and back.
    client.put_ok(q, "from a client")
    assert_status(admin_req(server, "POST", f"{base}/{q}/messages", data=b"from the operator"), 201)
    peek = assert_status(admin_req(server, "GET", f"{base}/{q}/messages/peek", params={"count": 10}), 200).json()
    assert sorted(m["message"] for m in peek["messages"]) == ["from a client", "from the operator"]
    st = assert_status(admin_req(server, "GET", f"{base}/{q}/statistics"), 200).json()
    assert st["visible"] == 2
    # Dead-lettered by a client, redriven by the operator.
    assert len(client.receive_list(q, max_messages=10, invisibility=1)) == 2
    await_until(lambda: client.receive_list(q) == [] and client.stats_json(dlq)["visible"] == 2, timeout=20,
                desc="both messages in the DLQ")
    r = assert_status(admin_req(server, "POST", f"{base}/{dlq}/redrive", json={"to": q}), 200)
    assert client.stats_json(q)["visible"] == 2, r.text
    assert_status(admin_req(server, "POST", f"{base}/{q}/purge"), 204)
    client.await_stats(q, size=0)
    assert assert_status(admin_req(server, "DELETE", f"{base}/{q}"), 200).json()["deleted"] is True
    assert_error(client.get_queue(q), 404)
    # An account that does not exist is 404 for the operator (who may know).
    assert assert_error(admin_req(server, "GET", "/admin/api/v1/accounts/nobody-here/queues"),
                        404)["code"] == "AccountNotFound"


def test_the_event_log_with_the_admin_token(server, client):
    t = unique_name("uiev")
    r = assert_status(client.put_event({"type": t, "tags": ["dash"], "data": {"n": 1}}), 201)
    client.await_readable(r.json()["recordedAt"])

    def found():
        r = assert_status(admin_req(server, "GET", "/admin/api/v1/accounts/dev/events",
                                    params={"type": t, "tag": "dash"}), 200)
        return [e for e in r.json()["events"] if e["type"] == t]
    ev = await_until(found, timeout=30, desc="the event through the admin port")
    assert ev[0]["tags"] == ["dash"]


def test_the_admin_document_lists_the_dashboard_routes(server):
    doc = assert_status(requests.get(server.admin_url + "/openapi.json", timeout=10, verify=False), 200).json()
    for p in ("/ui", "/ui/{file}", "/admin/api/v1/accounts/{account}/queues",
              "/admin/api/v1/accounts/{account}/queues/{q}/redrive", "/admin/api/v1/accounts/{account}/events"):
        assert p in doc["paths"], p
    assert doc["paths"]["/admin/api/v1/accounts/{account}/queues"]["get"]["security"] == [{"bearerAuth": []}]
    # The copy of the queue port's routes is current with src/api/openapi.json.
    rc = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "openapi_admin.py"), "--check"]).returncode
    assert rc == 0, "src/api/openapi-admin.json is stale: run scripts/openapi_admin.py"
