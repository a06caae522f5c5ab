"""Errors, operations endpoints and bad input (API.md "Errors")."""

import json
import re

import pytest

from sluice_client import assert_error, assert_status, describe, unique_name


def test_health(client):
    r = client.health()
    assert r.status_code == 200, describe(r)


@pytest.mark.parametrize("path", [
    "/nope",
    "/api",
    "/api/v1",
    "/api/v2/accounts/dev/queues",
    "/api/v1/accounts",
    "/api/v1/accounts/dev",
    "/api/v1/accounts/dev/queues/q/bogus",
    "/api/v1/accounts/dev/queues/q/messages/bogus",
    "/api/v1/accounts/dev/queues/q/messages/next/extra",
])
def test_unknown_route_is_404_json(client, path):
    assert_error(client.request("GET", path), 404)


@pytest.mark.parametrize("method,path", [
    ("PATCH", "/api/v1/accounts/dev/queues"),
    ("PUT", "/api/v1/accounts/dev/queues"),
    ("DELETE", "/api/v1/accounts/dev/queues"),
    ("POST", "/api/v1/accounts/dev/queues/{q}"),
    ("PATCH", "/api/v1/accounts/dev/queues/{q}/messages"),
    ("POST", "/api/v1/accounts/dev/queues/{q}/messages/next"),
    ("DELETE", "/api/v1/accounts/dev/queues/{q}/statistics"),
    ("GET", "/api/v1/accounts/dev/queues/{q}/messages/receive"),
    ("DELETE", "/health"),
])
def test_wrong_method_is_405_or_404_json(client, method, path):
    q = client.new_queue("method")
    r = client.request(method, path.replace("{q}", q), data=b"{}", headers={"Content-Type": "application/json"})
    assert_error(r, 405, 404)
    # The queue was not touched by the rejected request.
    assert_status(client.get_queue(q), 200)


def test_request_ids_differ(client):
    a = assert_error(client.get_queue(unique_name("x")), 404)
    b = assert_error(client.get_queue(unique_name("x")), 404)
    assert a["requestId"] != b["requestId"]


# --- OpenAPI -----------------------------------------------------------------

CORE_ROUTES = [
    ("get", "/api/v1/accounts/{}/queues"),
    ("post", "/api/v1/accounts/{}/queues"),
    ("get", "/api/v1/accounts/{}/queues/{}"),
    ("delete", "/api/v1/accounts/{}/queues/{}"),
    ("get", "/api/v1/accounts/{}/queues/{}/statistics"),
    ("post", "/api/v1/accounts/{}/queues/{}/messages"),
    ("put", "/api/v1/accounts/{}/queues/{}/messages"),
    ("delete", "/api/v1/accounts/{}/queues/{}/messages"),
    ("get", "/api/v1/accounts/{}/queues/{}/messages/next"),
]
EXTENSION_ROUTES = [
    ("post", "/api/v1/accounts/{}/queues/{}/messages/batch"),
    ("post", "/api/v1/accounts/{}/queues/{}/messages/receive"),
    ("post", "/api/v1/accounts/{}/queues/{}/messages/ack"),
    ("get", "/api/v1/accounts/{}/queues/{}/messages/peek"),
    ("post", "/api/v1/accounts/{}/queues/{}/purge"),
    ("post", "/api/v1/accounts/{}/queues/{}/redrive"),
]


def _openapi_routes(client):
    r = assert_status(client.request("GET", "/openapi.json"), 200)
    try:
        doc = json.loads(r.content)
    except ValueError:
        raise AssertionError(f"/openapi.json is not valid JSON: {r.text[:300]!r}")
    assert isinstance(doc, dict), "openapi document is not an object"
    assert isinstance(doc.get("openapi"), str) and doc["openapi"].startswith("3."), doc.get("openapi")
    assert isinstance(doc.get("paths"), dict) and doc["paths"], "no paths"
    routes = set()
    for path, item in doc["paths"].items():
        norm = re.sub(r"\{[^}]*\}", "{}", path).rstrip("/") or "/"
        for method in item:
            routes.add((method.lower(), norm))
    return routes


def test_openapi_lists_every_queue_route(client):
    routes = _openapi_routes(client)
    missing = [r for r in CORE_ROUTES if r not in routes]
    assert not missing, f"/openapi.json lacks {missing}"


def test_openapi_lists_every_extension_route(client):
    routes = _openapi_routes(client)
    missing = [r for r in EXTENSION_ROUTES if r not in routes]
    assert not missing, f"/openapi.json lacks {missing}"


# --- bad input never gets a 5xx ---------------------------------------------

def _bad_requests(q):
    base = "/api/v1/accounts/dev/queues"
    qp = f"{base}/{q}"
    J = {"Content-Type": "application/json"}
    T = {"Content-Type": "text/plain"}
    yield "POST", base, b"{", J
    yield "POST", base, b"", J
    yield "POST", base, b"[]", J
    yield "POST", base, b"{\"queueName\": 1e400}", J
    yield "POST", base, b"{\"queueName\": \"x\", \"bucketSize\": 1e400}", J
    yield "POST", base, b"{\"queueName\": \"x\", \"bucketSize\": 99999999999999999999999999999}", J
    yield "POST", base, b"{\"queueName\": \"x\", \"bucketSize\": -99999999999999999999999999999}", J
    yield "POST", base, b"{\"queueName\": \"x\", \"retentionSeconds\": -1}", J
    yield "POST", base, b"{\"queueName\": \"x\", \"bucketSize\": NaN}", J
    yield "POST", base, b"{\"queueName\": \"x\", \"bucketSize\": Infinity}", J
    yield "POST", base, "{\"queueName\": \"\u00fc\u00f6\u00e4\"}".encode(), J
    yield "POST", base, "{\"queueName\": \"\U0001f600\"}".encode(), J
    yield "POST", base, b"{\"queueName\": \"\\u0000\"}", J
    yield "POST", base, b"{\"queueName\": \"\\ud800\"}", J
    yield "POST", base, b"\xff\xfe\xfd", J
    yield "POST", base, b"{\"queueName\": {\"a\": [1, 2, {\"b\": null}]}}", J
    yield "POST", base, b"[" * 10000 + b"]" * 10000, J
    yield "POST", base, b"{\"queueName\": \"x\"} trailing", J
    yield "POST", base, b"queueName=x", {"Content-Type": "application/x-www-form-urlencoded"}
    yield "GET", f"{base}/%C3%BC%C3%B6", None, None
    yield "GET", f"{base}/%00", None, None
    yield "GET", f"{base}/{'a' * 81}", None, None
    yield "GET", f"{base}/{'a' * 2000}", None, None
    yield "DELETE", f"{base}/%F0%9F%98%80", None, None
    yield "GET", f"{qp}/messages/next?invisibilityTimeSeconds=1e400", None, None
    yield "GET", f"{qp}/messages/next?invisibilityTimeSeconds=-99999999999999999999999", None, None
    yield "GET", f"{qp}/messages/next?invisibilityTimeSeconds=0x10", None, None
    yield "GET", f"{qp}/messages/next?invisibilityTimeSeconds=%20", None, None
    yield "GET", f"{qp}/messages/next?invisibilityTimeSeconds=10abc", None, None
    yield "POST", f"{qp}/messages?initialInvisibilitySeconds=-1", b"x", T
    yield "POST", f"{qp}/messages?initialInvisibilitySeconds=18446744073709551617", b"x", T
    yield "PUT", f"{qp}/messages?popReceipt=x", None, J
    yield "PUT", f"{qp}/messages?popReceipt=x", b"{", J
    yield "PUT", f"{qp}/messages", b"{\"newInvisibilitySeconds\": 1}", J
    yield "DELETE", f"{qp}/messages", None, None
    yield "POST", f"{qp}/messages/batch", None, J
    yield "POST", f"{qp}/messages/batch", b"{\"messages\": null}", J
    yield "POST", f"{qp}/messages/batch", b"{\"messages\": [{\"message\": \"x\", \"delaySeconds\": 1e400}]}", J
    yield "POST", f"{qp}/messages/batch", b"{\"messages\": [{\"message\": \"x\", \"delaySeconds\": -1}]}", J
    yield "POST", f"{qp}/messages/batch", b"{\"messages\": [{\"message\": \"x\", \"attributes\": {\"k\": null}}]}", J
    yield "POST", f"{qp}/messages/receive", b"{", J
    yield "POST", f"{qp}/messages/receive", b"{\"maxMessages\": 1e400}", J
    yield "POST", f"{qp}/messages/receive", b"{\"maxMessages\": -99999999999999999999}", J
    yield "POST", f"{qp}/messages/receive", b"{\"waitSeconds\": 99999999999}", J
    yield "POST", f"{qp}/messages/receive", b"{\"invisibilitySeconds\": 1.0e10}", J
    yield "POST", f"{qp}/messages/ack", b"{\"popReceipts\": null}", J
    yield "POST", f"{qp}/messages/ack", b"{\"popReceipts\": [null]}", J
    yield "POST", f"{qp}/messages/ack", b"", J
    yield "GET", f"{qp}/messages/peek?count=99999999999999999999", None, None
    yield "GET", f"{qp}/messages/peek?count=", None, None
    yield "POST", f"{qp}/redrive", None, J
    yield "POST", f"{qp}/redrive", b"{\"to\": null}", J
    yield "POST", f"{qp}/redrive", "{\"to\": \"\u00fc\"}".encode(), J


def test_bad_input_never_gets_5xx(client):
    q = client.new_queue("badinput")
    client.put_ok(q, "keep me")
    failures = []
    for method, path, body, headers in _bad_requests(q):
        try:
            r = client.request(method, path, data=body, headers=headers)
        except Exception as e:
            failures.append(f"{method} {path[:80]} {body[:60]!r}: {e!r}")
            continue
        try:
            assert 400 <= r.status_code < 500, f"expected 4xx, got {r.status_code}"
            assert_error(r, r.status_code)
        except AssertionError as e:
            failures.append(f"{method} {path[:80]} {(body or b'')[:60]!r}: {e}")
    assert not failures, "\n".join(failures)
    assert client.health().status_code == 200
    # The queue and its message are intact.
    m = assert_status(client.get_next(q), 200).json()
    assert m["message"] == "keep me" and m["deliveryCount"] == 1
